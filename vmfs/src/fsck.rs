//! Volume checker: every on-disk invariant, with safe repairs.
//!
//! Run it on a quiesced volume (no host writing). It checks checksums and versions of every
//! record, that no block is owned twice, that no block is leaked, that the directory tree
//! is sound (every inode in use reachable exactly once, parents and kinds agree), that lock
//! records name hosts whose heartbeat slot is live in that generation, and that no journal
//! holds an unreplayed transaction. `repair` frees leaked blocks and stale locks,
//! replays journals of hosts that are not mounted and restores a damaged superblock from
//! its backup copy; damage that remains after that is rebuilt by [`crate::rebuild`], only
//! when no host is mounted.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::device::{BlockDevice, Cas};
use crate::error::{Error, Result};
use crate::format::{
    decode_dir, decode_indirect, decode_journal_header, ptrs_per_block, ClusterBlock, Geometry,
    HeartbeatSlot, Inode, Kind, LockRecord, MAX_HOSTS, NDIRECT, SB_BACKUP_AT, SECTOR,
};

/// What fsck found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Violated invariants.
    pub errors: Vec<String>,
    /// Things worth knowing that are not damage (live hosts, held locks).
    pub notes: Vec<String>,
    /// Files.
    pub files: u64,
    /// Directories (root included).
    pub dirs: u64,
    /// Blocks owned by inodes.
    pub used_blocks: u64,
    /// Blocks allocated in the bitmaps but owned by nobody.
    pub leaked: Vec<u32>,
    /// Locks naming a host that is not mounted in that generation.
    pub stale_locks: Vec<u64>,
    /// Hosts whose journal holds an unreplayed transaction.
    pub unreplayed: Vec<u32>,
    /// Repairs done.
    pub repaired: Vec<String>,
    /// What repair could not rebuild: cleared inodes (their data is lost) and inodes put
    /// into `/lost+found` because nothing reached them.
    pub quarantined: Vec<String>,
}

impl Report {
    /// Whether no invariant is violated.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

fn read(dev: &dyn BlockDevice, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    dev.read_at(&mut b, off)?;
    Ok(b)
}

struct Walk<'a> {
    dev: &'a dyn BlockDevice,
    g: Geometry,
    owner: HashMap<u32, u32>,
    r: Report,
}

impl Walk<'_> {
    fn own(&mut self, b: u32, ino: u32) {
        if self.g.block_cluster(b).is_none() {
            self.r
                .errors
                .push(format!("inode {ino}: block {b} is not a data block"));
            return;
        }
        if let Some(o) = self.owner.insert(b, ino) {
            self.r
                .errors
                .push(format!("block {b} owned twice: inodes {o} and {ino}"));
        }
    }

    /// Data blocks (file block, block) and the count of blocks of `ino`.
    fn blocks(&mut self, ino: &Inode) -> Result<(Vec<(u64, u32)>, u64)> {
        let bs = self.g.block_size as usize;
        let p = ptrs_per_block(bs) as u64;
        let mut data = Vec::new();
        let mut count = 0u64;
        for (i, &b) in ino.direct.iter().enumerate() {
            if b != 0 {
                self.own(b, ino.ino);
                data.push((i as u64, b));
                count += 1;
            }
        }
        let mut base = NDIRECT as u64;
        let mut span = p;
        for root in 0..3 {
            let top = ino.indirect[root];
            if top != 0 {
                let mut stack = vec![(top, (root + 1) as u8, base)];
                let mut guard = 0u64;
                while let Some((blk, level, b0)) = stack.pop() {
                    guard += 1;
                    if guard > 1 << 22 {
                        self.r
                            .errors
                            .push(format!("inode {}: block map too large", ino.ino));
                        break;
                    }
                    self.own(blk, ino.ino);
                    count += 1;
                    if self.g.block_cluster(blk).is_none() {
                        continue;
                    }
                    let raw = read(self.dev, blk as u64 * bs as u64, bs)?;
                    let ptrs = match decode_indirect(&raw, bs, ino.ino, level) {
                        Ok(x) => x,
                        Err(e) => {
                            self.r.errors.push(format!("inode {}: {e}", ino.ino));
                            continue;
                        }
                    };
                    let cs = p.pow(level as u32 - 1);
                    for (i, &c) in ptrs.iter().enumerate() {
                        if c == 0 {
                            continue;
                        }
                        let fb = b0 + i as u64 * cs;
                        if level == 1 {
                            self.own(c, ino.ino);
                            data.push((fb, c));
                            count += 1;
                        } else {
                            stack.push((c, level - 1, fb));
                        }
                    }
                }
            }
            base += span;
            span = span.saturating_mul(p);
        }
        Ok((data, count))
    }
}

/// Checks the volume on `dev`; with `repair`, fixes what is safe to fix, and, when damage
/// remains and no host is mounted, rebuilds the rest (see [`crate::rebuild`]'s rules:
/// inodes nothing reaches go back by their back reference or to `/lost+found`, damaged
/// directory blocks and inodes are dropped, the bitmaps rebuilt from the inodes). A
/// rebuild needed while a host shows mounted is refused with [`Error::InUse`].
///
/// ```
/// use std::sync::Arc;
/// use vinfra_vmfs::{fsck, BlockDevice, ManualClock, MemDevice, MkfsOptions, MountOptions};
/// use vinfra_vmfs::{ReadOnlyVolume, Volume};
///
/// let lun = Arc::new(MemDevice::new(32 << 20));
/// Volume::mkfs(lun.as_ref(), &MkfsOptions::default())?;
/// let v = Volume::mount(lun.clone(), 1, &MountOptions::default(), Arc::new(ManualClock::new(0)))?;
/// v.mkdir("/vm1")?;
/// v.create("/vm1/disk")?.write_at(b"data", 0)?;
/// let dir = v.stat("/vm1")?.ino;
/// v.unmount()?;
/// // Damage /vm1's inode: its entries are gone, /vm1/disk is unreachable.
/// let g = Volume::superblock(lun.as_ref())?.geo;
/// lun.write_at(&[0xff; 8], g.inode_at(dir) + 100)?;
/// assert!(!fsck::check(lun.as_ref(), false)?.is_clean());
///
/// let r = fsck::check(lun.as_ref(), true)?;
/// assert!(r.is_clean(), "{:?}", r.errors);
/// assert!(r.quarantined.iter().any(|q| q.contains("lost+found/disk")), "{:?}", r.quarantined);
/// let ro = ReadOnlyVolume::mount(lun)?;
/// let f = ro.open("/lost+found/disk")?;
/// let mut b = [0u8; 4];
/// f.read_at(&mut b, 0)?;
/// assert_eq!(&b, b"data");
/// # Ok::<(), vinfra_vmfs::Error>(())
/// ```
pub fn check(dev: &dyn BlockDevice, repair: bool) -> Result<Report> {
    let first = check_once(dev, repair)?;
    if !repair || first.is_clean() {
        return Ok(first);
    }
    let mounted = mounted_hosts(dev)?;
    if !mounted.is_empty() {
        return Err(Error::InUse { hosts: mounted });
    }
    let (sb, _) = crate::volume::Volume::superblock_or_backup(dev)?;
    let g = sb.geo;
    let mut repaired = first.repaired;
    // Records of the lock and heartbeat regions that fail their checks are free ones now
    // (no host is mounted, so none is held), a damaged journal header is rewritten
    // from the ring and the lock record's floor.
    for i in 0..g.n_locks() {
        let raw = read(dev, g.lock_at(i), SECTOR)?;
        if LockRecord::decode(&raw, i).is_err() {
            dev.write_at(&[0u8; SECTOR], g.lock_at(i))?;
            repaired.push(format!("lock record {i} failed its checks: cleared"));
        }
    }
    for h in 0..MAX_HOSTS {
        let raw = read(dev, g.hb_at(h), SECTOR)?;
        if HeartbeatSlot::decode(&raw, h).is_err() {
            dev.write_at(&[0u8; SECTOR], g.hb_at(h))?;
            repaired.push(format!("heartbeat slot {h} failed its checks: cleared"));
        }
        if decode_journal_header(&read(dev, g.journal_at(h), SECTOR)?, h).is_err() {
            let p = crate::journal::scan(dev, &g, h)?;
            dev.write_at(
                &crate::format::encode_journal_header(h, p.floor, p.head),
                g.journal_at(h),
            )?;
            repaired.push(format!("journal header of host {h} rewritten"));
        }
    }
    dev.flush()?;
    let out = crate::rebuild::rebuild(dev, g)?;
    repaired.extend(out.rebuilt);
    let mut r = check_once(dev, true)?;
    repaired.append(&mut r.repaired);
    r.repaired = repaired;
    r.quarantined = out.quarantined;
    Ok(r)
}

/// Raises host `h`'s journal floor past every transaction in its ring (header and journal
/// lock record), so that no later replay applies the ones that lie past a damaged one out
/// of order over newer changes (another host settling a dirty mark would otherwise raise
/// the floor to just before them).
fn abandon_after_gap(
    dev: &dyn BlockDevice,
    g: &Geometry,
    h: u32,
    p: &crate::journal::Pending,
) -> Result<()> {
    dev.flush()?;
    let at = g.lock_at(h as u64);
    let raw = read(dev, at, SECTOR)?;
    if let Ok(mut rec) = LockRecord::decode(&raw, h as u64) {
        if rec.applied_seq < p.max_seq {
            rec.applied_seq = p.max_seq;
            rec.seq += 1;
            // A mismatch means a host took the lock meanwhile: fsck runs offline, so this
            // is an error of the caller's, and the header below still holds the floor.
            let _ = dev.compare_and_write(at, &raw, &rec.encode())?;
        }
    }
    dev.write_at(
        &crate::format::encode_journal_header(h, p.max_seq, p.head),
        g.journal_at(h),
    )?;
    dev.flush()
}

/// Hosts whose heartbeat slot shows them mounted.
fn mounted_hosts(dev: &dyn BlockDevice) -> Result<Vec<u32>> {
    let (sb, _) = crate::volume::Volume::superblock_or_backup(dev)?;
    let mut out = Vec::new();
    for h in 0..MAX_HOSTS {
        if let Ok(s) = HeartbeatSlot::decode(&read(dev, sb.geo.hb_at(h), SECTOR)?, h) {
            if s.live {
                out.push(h);
            }
        }
    }
    Ok(out)
}

/// One pass of the checker with the safe repairs.
fn check_once(dev: &dyn BlockDevice, repair: bool) -> Result<Report> {
    let (sb, from_backup) = crate::volume::Volume::superblock_or_backup(dev)?;
    let g = sb.geo;
    let mut sb_errors = Vec::new();
    let mut sb_repaired = Vec::new();
    let backup = read(dev, SB_BACKUP_AT, SECTOR)?;
    if from_backup {
        if repair {
            dev.write_at(&backup, 0)?;
            dev.flush()?;
            sb_repaired.push("primary superblock restored from its backup".to_string());
        } else {
            sb_errors.push("primary superblock damaged (the backup copy is intact)".to_string());
        }
    } else if backup != sb.encode() {
        let missing = backup.iter().all(|&x| x == 0);
        if repair {
            dev.write_at(&sb.encode(), SB_BACKUP_AT)?;
            dev.flush()?;
            sb_repaired.push("backup superblock written".to_string());
        } else if !missing {
            sb_errors.push("backup superblock damaged or stale".to_string());
        }
    }
    let mut sb_notes = Vec::new();
    if !repair && backup.iter().all(|&x| x == 0) {
        sb_notes
            .push("no backup superblock (made before backups; --repair writes one)".to_string());
    }
    let bs = g.block_size as usize;
    let mut w = Walk {
        dev,
        g,
        owner: HashMap::new(),
        r: Report {
            errors: sb_errors,
            repaired: sb_repaired,
            notes: sb_notes,
            ..Report::default()
        },
    };
    if dev.len()? < g.data_offset + g.data_blocks() * bs as u64 {
        w.r.errors
            .push("device shorter than the superblock says".into());
        return Ok(w.r);
    }
    // Heartbeats.
    let mut slots = Vec::new();
    for h in 0..MAX_HOSTS {
        match HeartbeatSlot::decode(&read(dev, g.hb_at(h), SECTOR)?, h) {
            Ok(s) => {
                if s.live {
                    w.r.notes.push(format!(
                        "host {h} mounted (generation {}, counter {})",
                        s.generation, s.counter
                    ));
                }
                slots.push(Some(s));
            }
            Err(e) => {
                w.r.errors.push(format!("heartbeat slot {h}: {e}"));
                slots.push(None);
            }
        }
    }
    let live = |h: u32, gen: u32| {
        slots
            .get(h as usize)
            .and_then(|s| s.as_ref())
            .is_some_and(|s| s.live && s.generation == gen)
    };
    // Journals.
    for h in 0..MAX_HOSTS {
        if let Err(e) = decode_journal_header(&read(dev, g.journal_at(h), SECTOR)?, h) {
            w.r.errors.push(format!("journal header of host {h}: {e}"));
        }
        let p = crate::journal::scan(dev, &g, h)?;
        // Valid transactions past the unbroken run mean one of the run was damaged:
        // they cannot be replayed in order.
        let run_end = p.txns.last().map_or(p.floor, |(_, t)| t.seq);
        let cut = p.max_seq > run_end;
        let mounted = slots
            .get(h as usize)
            .and_then(|s| s.as_ref())
            .is_some_and(|s| s.live);
        if mounted {
            // A mounted host checkpoints lazily: its committed transactions are its own.
            if let Some((_, last)) = p.txns.last() {
                w.r.notes.push(format!(
                    "journal of mounted host {h}: transactions to {} not yet checkpointed",
                    last.seq
                ));
            }
            if cut {
                w.r.notes.push(format!(
                    "journal of mounted host {h}: transactions to {} lie past a damaged one",
                    p.max_seq
                ));
            }
            continue;
        }
        if repair {
            if !p.txns.is_empty() {
                crate::journal::apply(dev, &g, h, &p)?;
                w.r.repaired
                    .push(format!("replayed the journal of host {h}"));
            }
            if cut {
                abandon_after_gap(dev, &g, h, &p)?;
                w.r.repaired.push(format!(
                    "journal of host {h}: transactions {}..={} past a damaged one abandoned \
                     (their in-place writes stay as they are)",
                    run_end + 1,
                    p.max_seq
                ));
            }
        } else {
            if let Some((_, last)) = p.txns.last() {
                w.r.unreplayed.push(h);
                w.r.errors.push(format!(
                    "journal of host {h} holds unreplayed transaction {}",
                    last.seq
                ));
            }
            if cut {
                w.r.errors.push(format!(
                    "journal of host {h}: transaction {} damaged, {} more past it cannot be replayed",
                    run_end + 1,
                    p.max_seq - run_end - 1
                ));
            }
        }
    }
    // Locks.
    for i in 0..g.n_locks() {
        let raw = read(dev, g.lock_at(i), SECTOR)?;
        match LockRecord::decode(&raw, i) {
            Ok(rec) => {
                let stale: Vec<(u32, u32)> = rec
                    .holder_list()
                    .into_iter()
                    .filter(|&(h, gen)| !live(h, gen))
                    .collect();
                if !stale.is_empty() {
                    let what = crate::locks::describe_lock(&g, i);
                    if repair {
                        let mut n = rec.clone();
                        for (h, _) in &stale {
                            n.holders &= !(1u64 << h);
                            n.gens[*h as usize] = 0;
                        }
                        if n.holders == 0 {
                            n.mode = None;
                        }
                        n.seq += 1;
                        if let Cas::Written =
                            dev.compare_and_write(g.lock_at(i), &raw, &n.encode())?
                        {
                            w.r.repaired.push(format!("freed stale lock on {what}"));
                            continue;
                        }
                    }
                    w.r.stale_locks.push(i);
                    w.r.errors
                        .push(format!("lock on {what} names hosts not mounted: {stale:?}"));
                } else if rec.mode.is_some() {
                    w.r.notes.push(format!(
                        "lock on {} held by {:?}",
                        crate::locks::describe_lock(&g, i),
                        rec.holder_list()
                    ));
                }
            }
            Err(e) => w.r.errors.push(format!("lock {i}: {e}")),
        }
    }
    // Inodes.
    let mut inodes: BTreeMap<u32, Inode> = BTreeMap::new();
    let chunk = 256u32;
    let mut first = 0;
    while first < g.max_inodes {
        let n = chunk.min(g.max_inodes - first);
        let raw = read(dev, g.inode_at(first), n as usize * SECTOR)?;
        for k in 0..n {
            let ino = first + k;
            if ino == 0 {
                continue;
            }
            let s = &raw[k as usize * SECTOR..(k as usize + 1) * SECTOR];
            match Inode::decode(s, ino) {
                Ok(i) if i.kind != Kind::Free => {
                    inodes.insert(ino, i);
                }
                Ok(_) => {}
                Err(e) => w.r.errors.push(format!("inode {ino}: {e}")),
            }
        }
        first += n;
    }
    if inodes.get(&1).map(|r| r.kind) != Some(Kind::Dir) {
        w.r.errors.push("root inode 1 is not a directory".into());
    }
    let mut dir_data: HashMap<u32, Vec<(u64, u32)>> = HashMap::new();
    for (ino, i) in &inodes {
        let (data, count) = w.blocks(i)?;
        w.r.used_blocks += count;
        if count != i.blocks {
            w.r.errors.push(format!(
                "inode {ino}: {} blocks counted, {} recorded",
                count, i.blocks
            ));
        }
        let limit = i.size.div_ceil(bs as u64);
        if let Some((f, _)) = data.iter().find(|(f, _)| *f >= limit) {
            w.r.errors.push(format!(
                "inode {ino}: block {f} mapped past the size {}",
                i.size
            ));
        }
        match i.kind {
            Kind::Dir => {
                w.r.dirs += 1;
                dir_data.insert(*ino, data);
            }
            Kind::File => w.r.files += 1,
            Kind::Free => {}
        }
    }
    // Directory tree.
    let mut seen: HashSet<u32> = HashSet::from([1]);
    let mut queue = VecDeque::from([1u32]);
    while let Some(d) = queue.pop_front() {
        let mut blocks = dir_data.remove(&d).unwrap_or_default();
        blocks.sort_unstable();
        let nblocks = inodes.get(&d).map_or(0, |i| i.size / bs as u64);
        if blocks.len() as u64 != nblocks {
            w.r.errors.push(format!(
                "directory {d}: {} blocks for size {}",
                blocks.len(),
                nblocks
            ));
        }
        for (_, b) in blocks {
            let raw = read(dev, b as u64 * bs as u64, bs)?;
            let entries = match decode_dir(&raw, bs) {
                Ok(e) => e,
                Err(e) => {
                    w.r.errors.push(format!("directory {d}: {e}"));
                    continue;
                }
            };
            for e in entries {
                match inodes.get(&e.ino) {
                    None => w.r.errors.push(format!(
                        "directory {d}: entry {:?} names free inode {}",
                        e.name, e.ino
                    )),
                    Some(i) => {
                        if i.kind != e.kind || i.parent != d {
                            w.r.errors.push(format!(
                                "directory {d}: entry {:?} disagrees with inode {} (kind {:?}, parent {})",
                                e.name, e.ino, i.kind, i.parent
                            ));
                        }
                        if !seen.insert(e.ino) {
                            w.r.errors.push(format!("inode {} linked twice", e.ino));
                        } else if i.kind == Kind::Dir {
                            queue.push_back(e.ino);
                        }
                    }
                }
            }
        }
    }
    for ino in inodes.keys() {
        if !seen.contains(ino) {
            w.r.errors
                .push(format!("inode {ino} is in use but unreachable"));
        }
    }
    // Bitmaps against owners.
    for c in 0..g.n_clusters {
        let raw = read(dev, g.cluster_at(c), bs)?;
        let mut cl = match ClusterBlock::decode(&raw, bs, c, g.bpc) {
            Ok(x) => x,
            Err(e) => {
                w.r.errors.push(format!("cluster {c}: {e}"));
                continue;
            }
        };
        let first = g.cluster_first_block(c);
        let mut fixed = false;
        for i in 0..g.bpc {
            let b = (first + i as u64) as u32;
            let owned = w.owner.contains_key(&b);
            if cl.is_set(i) && !owned {
                if repair {
                    cl.set(i, false);
                    fixed = true;
                } else {
                    w.r.leaked.push(b);
                }
            } else if !cl.is_set(i) && owned {
                w.r.errors
                    .push(format!("block {b} in use but free in cluster {c}"));
            }
        }
        if fixed {
            dev.write_at(&cl.encode(bs), g.cluster_at(c))?;
            dev.flush()?;
            w.r.repaired
                .push(format!("freed leaked blocks in cluster {c}"));
        }
    }
    if !w.r.leaked.is_empty() {
        w.r.errors
            .push(format!("{} leaked blocks", w.r.leaked.len()));
    }
    Ok(w.r)
}

/// Frees the heartbeat slots of hosts that show mounted but are dead, so that a repair
/// that needs every host unmounted ([`Error::InUse`]) can run after a crash. Watches every
/// slot that shows a host mounted for a whole lease of `clock` (the volume's, plus one
/// heartbeat interval); a slot whose generation and counter did not change is freed by
/// compare-and-write from the bytes observed, so a host that renews meanwhile keeps it.
/// Returns the hosts freed. Their journals and locks are then what `check` with `repair`
/// replays and frees, as a survivor's recovery would.
///
/// ```
/// use std::sync::Arc;
/// use vinfra_vmfs::{fsck, ManualClock, MemDevice, MkfsOptions, MountOptions, Volume};
///
/// let lun = Arc::new(MemDevice::new(32 << 20));
/// let mut o = MkfsOptions::default();
/// (o.lease_ms, o.interval_ms) = (200, 50);
/// Volume::mkfs(lun.as_ref(), &o)?;
/// let clock = Arc::new(ManualClock::new(0));
/// let v = Volume::mount(lun.clone(), 3, &MountOptions::default(), clock.clone())?;
/// std::mem::forget(v); // host 3 dies mounted
/// // (The manual clock's sleep advances it: the lease passes at once.)
/// assert_eq!(fsck::release_dead_hosts(lun.as_ref(), clock.as_ref())?, vec![3]);
/// assert!(fsck::check(lun.as_ref(), true)?.is_clean());
/// # Ok::<(), vinfra_vmfs::Error>(())
/// ```
pub fn release_dead_hosts(
    dev: &dyn BlockDevice,
    clock: &dyn crate::clock::Clock,
) -> Result<Vec<u32>> {
    let (sb, _) = crate::volume::Volume::superblock_or_backup(dev)?;
    let g = sb.geo;
    let lease_ms = sb.lease_ms as u64 + sb.interval_ms as u64;
    let mut lv = crate::liveness::Liveness::new(lease_ms, MAX_HOSTS as usize);
    let mut first: Vec<Option<Vec<u8>>> = vec![None; MAX_HOSTS as usize];
    let start = clock.now_ms();
    for h in 0..MAX_HOSTS {
        let raw = read(dev, g.hb_at(h), SECTOR)?;
        if let Ok(s) = HeartbeatSlot::decode(&raw, h) {
            if s.live {
                lv.observe(h, &s, start);
                first[h as usize] = Some(raw);
            }
        }
    }
    if first.iter().all(Option::is_none) {
        return Ok(Vec::new());
    }
    // Bounded: the wait is one lease of the clock, looked at every interval.
    let step = (sb.interval_ms as u64).max(1);
    while clock.now_ms().saturating_sub(start) < lease_ms {
        clock.sleep_ms(step);
    }
    let now = clock.now_ms();
    let mut freed = Vec::new();
    for h in 0..MAX_HOSTS {
        let Some(seen) = &first[h as usize] else {
            continue;
        };
        let raw = read(dev, g.hb_at(h), SECTOR)?;
        let Ok(s) = HeartbeatSlot::decode(&raw, h) else {
            continue;
        };
        if !matches!(lv.observe(h, &s, now), crate::lease::Verdict::Dead { .. }) || &raw != seen {
            continue;
        }
        let mut free = s.clone();
        free.live = false;
        if let Cas::Written = dev.compare_and_write(g.hb_at(h), &raw, &free.encode())? {
            tracing::info!(host = h, "dead host's slot freed for repair");
            freed.push(h);
        }
    }
    Ok(freed)
}
