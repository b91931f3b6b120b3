//! `fsck --repair`'s rebuild of a volume whose inodes, indirect blocks, directories or
//! bitmaps are damaged (issue 11, part 4).
//!
//! It runs offline, after fsck has replayed the journals of unmounted hosts, and only when
//! no host shows mounted (fsck refuses otherwise). It rebuilds from what is intact and
//! never destroys what still reads:
//!
//! * an inode that fails its checks cannot be rebuilt (its block list is gone): it is
//!   cleared, and its blocks become free; the root directory is rebuilt empty;
//! * a block pointer outside the data region or to a block another inode already owns, or
//!   to an indirect block that fails its checks, is cut (that range becomes a hole);
//! * a directory block that fails its checks is rewritten empty in place (its entries are
//!   lost, the files they named are not); an entry naming a free, damaged or already
//!   linked inode is dropped; a parent or back-reference name that disagrees with the
//!   entry that reaches the inode is corrected from it;
//! * an inode in use that nothing reaches goes back under its back reference (`parent`,
//!   `name`) when that directory is reachable and the name free, otherwise into
//!   `/lost+found` (as `name` or `#ino`, with `~ino` added on a clash);
//! * the resource-cluster bitmaps are rewritten from the blocks the surviving inodes own.
//!
//! The writes go in place, without the journal: a crash in the middle leaves a volume that
//! a second `--repair` finishes (each step only depends on what is on the volume).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use crate::device::BlockDevice;
use crate::error::Result;
use crate::format::{
    decode_dir, decode_indirect, encode_dir, encode_indirect, entry_len, ptrs_per_block,
    valid_name, ClusterBlock, DirEntry, Geometry, Inode, Kind, NDIRECT, SECTOR,
};

/// Name of the directory that quarantines inodes nothing reaches.
pub const LOST_FOUND: &str = "lost+found";

/// What the rebuild did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Rebuilt or corrected structures.
    pub rebuilt: Vec<String>,
    /// Inodes put into `/lost+found`, and what could not be kept.
    pub quarantined: Vec<String>,
}

/// A directory's blocks in memory: (physical block, entries, changed).
type DirBlocks = Vec<(u32, Vec<DirEntry>, bool)>;

struct Rebuild<'a> {
    dev: &'a dyn BlockDevice,
    g: Geometry,
    bs: usize,
    inodes: BTreeMap<u32, Inode>,
    dirty: BTreeSet<u32>,
    owner: HashMap<u32, u32>,
    dirs: HashMap<u32, DirBlocks>,
    alloc_cursor: u64,
    out: Outcome,
}

fn read(dev: &dyn BlockDevice, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    dev.read_at(&mut b, off)?;
    Ok(b)
}

impl Rebuild<'_> {
    /// Claims block `b` for `ino`; false when it is not a data block or already owned.
    fn claim(&mut self, b: u32, ino: u32) -> bool {
        if self.g.block_cluster(b).is_none() || self.owner.contains_key(&b) {
            return false;
        }
        self.owner.insert(b, ino);
        true
    }

    /// Walks `ino`'s map, cutting bad pointers; returns its data blocks by file block.
    fn walk(&mut self, ino: &mut Inode) -> Result<Vec<(u64, u32)>> {
        let p = ptrs_per_block(self.bs) as u64;
        let mut data = Vec::new();
        let mut count = 0u64;
        let mut cut = Vec::new();
        for i in 0..NDIRECT {
            let b = ino.direct[i];
            if b == 0 {
                continue;
            }
            if self.claim(b, ino.ino) {
                data.push((i as u64, b));
                count += 1;
            } else {
                cut.push(format!("block {b} (file block {i})"));
                ino.direct[i] = 0;
            }
        }
        let mut base = NDIRECT as u64;
        let mut span = p;
        for root in 0..3 {
            let top = ino.indirect[root];
            if top != 0 {
                let keep = self.walk_indirect(
                    ino.ino,
                    top,
                    (root + 1) as u8,
                    base,
                    &mut data,
                    &mut count,
                    &mut cut,
                )?;
                if !keep {
                    ino.indirect[root] = 0;
                }
            }
            base += span;
            span = span.saturating_mul(p);
        }
        if !cut.is_empty() {
            self.out.rebuilt.push(format!(
                "inode {}: cut damaged or doubly owned pointers, now holes: {}",
                ino.ino,
                cut.join(", ")
            ));
        }
        if count != ino.blocks || !cut.is_empty() {
            ino.blocks = count;
            self.dirty.insert(ino.ino);
        }
        Ok(data)
    }

    /// Walks one indirect block; false when its pointer must be cut.
    #[allow(
        clippy::too_many_arguments,
        reason = "one recursive walk's running state"
    )]
    fn walk_indirect(
        &mut self,
        ino: u32,
        blk: u32,
        level: u8,
        b0: u64,
        data: &mut Vec<(u64, u32)>,
        count: &mut u64,
        cut: &mut Vec<String>,
    ) -> Result<bool> {
        if !self.claim(blk, ino) {
            cut.push(format!("indirect block {blk}"));
            return Ok(false);
        }
        let raw = read(self.dev, blk as u64 * self.bs as u64, self.bs)?;
        let Ok(mut ptrs) = decode_indirect(&raw, self.bs, ino, level) else {
            self.owner.remove(&blk);
            cut.push(format!("indirect block {blk} (fails its checks)"));
            return Ok(false);
        };
        *count += 1;
        let span = (ptrs_per_block(self.bs) as u64).pow(level as u32 - 1);
        let mut changed = false;
        for (i, slot) in ptrs.iter_mut().enumerate() {
            let c = *slot;
            if c == 0 {
                continue;
            }
            let fb = b0 + i as u64 * span;
            let keep = if level == 1 {
                let ok = self.claim(c, ino);
                if ok {
                    data.push((fb, c));
                    *count += 1;
                } else {
                    cut.push(format!("block {c} (file block {fb})"));
                }
                ok
            } else {
                self.walk_indirect(ino, c, level - 1, fb, data, count, cut)?
            };
            if !keep {
                *slot = 0;
                changed = true;
            }
        }
        if changed {
            self.dev.write_at(
                &encode_indirect(self.bs, ino, level, &ptrs),
                blk as u64 * self.bs as u64,
            )?;
        }
        Ok(true)
    }

    /// A free data block, claimed for `ino`.
    fn alloc(&mut self, ino: u32) -> Option<u32> {
        let first = self.g.cluster_first_block(0);
        let n = self.g.data_blocks();
        while self.alloc_cursor < n {
            let b = (first + self.alloc_cursor) as u32;
            self.alloc_cursor += 1;
            if self.claim(b, ino) {
                return Some(b);
            }
        }
        None
    }

    /// Adds `e` to directory `d`, growing it by a direct block when no block has room.
    fn insert(&mut self, d: u32, e: DirEntry) -> bool {
        let room = self.bs - 16;
        let blocks = self.dirs.entry(d).or_default();
        for (_, es, changed) in blocks.iter_mut() {
            if es.iter().map(entry_len).sum::<usize>() + entry_len(&e) <= room
                && es.len() < u16::MAX as usize
            {
                es.push(e);
                *changed = true;
                return true;
            }
        }
        let Some(mut di) = self.inodes.get(&d).cloned() else {
            return false;
        };
        let fb = di.size / self.bs as u64;
        if fb >= NDIRECT as u64 || di.direct[fb as usize] != 0 {
            return false;
        }
        let Some(b) = self.alloc(d) else {
            return false;
        };
        di.direct[fb as usize] = b;
        di.size += self.bs as u64;
        di.blocks += 1;
        self.inodes.insert(d, di);
        self.dirty.insert(d);
        self.dirs.entry(d).or_default().push((b, vec![e], true));
        true
    }

    fn has(&self, d: u32, name: &str) -> bool {
        self.dirs.get(&d).is_some_and(|bs| {
            bs.iter()
                .any(|(_, es, _)| es.iter().any(|e| e.name == name))
        })
    }
}

/// Rebuilds the namespace and bitmaps of the volume on `dev` (geometry `g`); see the
/// module documentation. The caller has checked that no host is mounted.
pub(crate) fn rebuild(dev: &dyn BlockDevice, g: Geometry) -> Result<Outcome> {
    let bs = g.block_size as usize;
    let mut r = Rebuild {
        dev,
        g,
        bs,
        inodes: BTreeMap::new(),
        dirty: BTreeSet::new(),
        owner: HashMap::new(),
        dirs: HashMap::new(),
        alloc_cursor: 0,
        out: Outcome::default(),
    };
    // Inodes: the intact ones kept, the damaged ones cleared.
    let mut first = 0u32;
    while first < g.max_inodes {
        let n = 256u32.min(g.max_inodes - first);
        let raw = read(dev, g.inode_at(first), n as usize * SECTOR)?;
        for k in 0..n {
            let ino = first + k;
            if ino == 0 {
                continue;
            }
            let s = &raw[k as usize * SECTOR..(k as usize + 1) * SECTOR];
            match Inode::decode(s, ino) {
                Ok(i) if i.kind != Kind::Free => {
                    r.inodes.insert(ino, i);
                }
                Ok(_) => {}
                Err(e) => {
                    dev.write_at(&Inode::free(ino).encode(), g.inode_at(ino))?;
                    r.out
                        .quarantined
                        .push(format!("inode {ino} cleared ({e}): its data is lost"));
                }
            }
        }
        first += n;
    }
    if r.inodes.get(&1).map(|i| i.kind) != Some(Kind::Dir) {
        let mut root = Inode::free(1);
        root.kind = Kind::Dir;
        root.parent = 1;
        root.generation = 1;
        r.inodes.insert(1, root);
        r.dirty.insert(1);
        r.out
            .rebuilt
            .push("root directory rebuilt empty; its children return by back reference".into());
    }
    // Block maps, then the directories' blocks.
    let inos: Vec<u32> = r.inodes.keys().copied().collect();
    let mut dir_data = Vec::new();
    for ino in inos {
        let Some(mut i) = r.inodes.get(&ino).cloned() else {
            continue;
        };
        let data = r.walk(&mut i)?;
        if i.kind == Kind::Dir {
            dir_data.push((ino, data, i.size));
        }
        r.inodes.insert(ino, i);
    }
    for (d, mut data, size) in dir_data {
        data.sort_unstable();
        let mut blocks = Vec::new();
        // Bounded by the volume: a size that says more blocks than it has is damage.
        let nblocks = size.div_ceil(bs as u64).min(g.data_blocks());
        let mut next = 0u64;
        for (fb, b) in data.into_iter().chain(std::iter::once((nblocks, 0))) {
            // A cut pointer left a hole: a direct one gets a fresh empty block.
            while next < fb.min(nblocks) {
                let hole = next;
                next += 1;
                let fresh = if hole < NDIRECT as u64 {
                    r.alloc(d)
                } else {
                    None
                };
                let Some(nb) = fresh else {
                    r.out
                        .quarantined
                        .push(format!("directory {d}: hole at block {hole} left"));
                    continue;
                };
                if let Some(di) = r.inodes.get_mut(&d) {
                    di.direct[hole as usize] = nb;
                    di.blocks += 1;
                }
                r.dirty.insert(d);
                r.out
                    .rebuilt
                    .push(format!("directory {d}: hole at block {hole} filled empty"));
                blocks.push((nb, Vec::new(), true));
            }
            if fb >= nblocks {
                continue;
            }
            next = fb + 1;
            let raw = read(dev, b as u64 * bs as u64, bs)?;
            match decode_dir(&raw, bs) {
                Ok(es) => blocks.push((b, es, false)),
                Err(e) => {
                    r.out.rebuilt.push(format!(
                        "directory {d}: block {b} rewritten empty ({e}); its entries are lost"
                    ));
                    blocks.push((b, Vec::new(), true));
                }
            }
        }
        r.dirs.insert(d, blocks);
    }
    // The tree from the root: entries checked, parents and back references corrected.
    let mut seen: HashSet<u32> = HashSet::from([1]);
    let mut queue = VecDeque::from([1u32]);
    let walk_from = |r: &mut Rebuild<'_>, seen: &mut HashSet<u32>, queue: &mut VecDeque<u32>| {
        while let Some(d) = queue.pop_front() {
            let Some(mut blocks) = r.dirs.remove(&d) else {
                continue;
            };
            let mut names = HashSet::new();
            for (_, es, changed) in blocks.iter_mut() {
                let before = es.len();
                es.retain(|e| {
                    let Some(i) = r.inodes.get(&e.ino) else {
                        r.out.rebuilt.push(format!(
                            "directory {d}: dropped entry {:?} (inode {} is free or was damaged)",
                            e.name, e.ino
                        ));
                        return false;
                    };
                    if e.ino == 1 || i.kind != e.kind || seen.contains(&e.ino) || !names.insert(e.name.clone()) {
                        r.out.rebuilt.push(format!(
                            "directory {d}: dropped entry {:?} (inode {} linked twice or of another kind)",
                            e.name, e.ino
                        ));
                        return false;
                    }
                    seen.insert(e.ino);
                    true
                });
                *changed |= es.len() != before;
                for e in es.iter() {
                    if let Some(i) = r.inodes.get_mut(&e.ino) {
                        if i.parent != d || i.name != e.name {
                            i.parent = d;
                            i.name = e.name.clone();
                            r.dirty.insert(e.ino);
                        }
                        if i.kind == Kind::Dir {
                            queue.push_back(e.ino);
                        }
                    }
                }
            }
            r.dirs.insert(d, blocks);
        }
    };
    walk_from(&mut r, &mut seen, &mut queue);
    // What nothing reaches: back where its back reference says, else /lost+found.
    let mut lost_found: Option<u32> = None;
    for _ in 0..r.inodes.len() + 1 {
        let orphans: Vec<u32> = r
            .inodes
            .keys()
            .copied()
            .filter(|i| !seen.contains(i))
            .collect();
        if orphans.is_empty() {
            break;
        }
        let mut progress = false;
        for &o in &orphans {
            if seen.contains(&o) {
                continue; // reached through a directory put back before it
            }
            let Some(i) = r.inodes.get(&o).cloned() else {
                continue;
            };
            let home = seen.contains(&i.parent)
                && r.inodes.get(&i.parent).is_some_and(|p| p.kind == Kind::Dir)
                && valid_name(&i.name)
                && !r.has(i.parent, &i.name);
            if home
                && r.insert(
                    i.parent,
                    DirEntry {
                        ino: o,
                        kind: i.kind,
                        name: i.name.clone(),
                    },
                )
            {
                r.out.rebuilt.push(format!(
                    "inode {o} put back as {:?} in directory {} (back reference)",
                    i.name, i.parent
                ));
                seen.insert(o);
                queue.push_back(o);
                progress = true;
                // Walk it now: its own entries are checked before an orphan that names
                // it as parent is put back into it (and would then look linked twice).
                walk_from(&mut r, &mut seen, &mut queue);
            }
        }
        walk_from(&mut r, &mut seen, &mut queue);
        if progress {
            continue;
        }
        // No back reference helps: the orphans whose parent is not itself an orphan
        // directory go to /lost+found (the others follow with them).
        let orphan_set: HashSet<u32> = orphans
            .iter()
            .copied()
            .filter(|o| !seen.contains(o))
            .collect();
        let tops: Vec<u32> = orphan_set
            .iter()
            .copied()
            .filter(|o| {
                r.inodes.get(o).is_none_or(|i| {
                    !orphan_set.contains(&i.parent)
                        || r.inodes.get(&i.parent).is_none_or(|p| p.kind != Kind::Dir)
                        || i.parent == *o
                })
            })
            .collect();
        // A cycle of orphan directories has no top: break it at its lowest inode.
        let tops = if tops.is_empty() {
            orphan_set.iter().copied().min().into_iter().collect()
        } else {
            tops
        };
        if tops.is_empty() {
            break;
        }
        let lf = match lost_found {
            Some(x) => x,
            None => match make_lost_found(&mut r, &mut seen)? {
                Some(x) => {
                    lost_found = Some(x);
                    x
                }
                None => {
                    r.out.quarantined.push(
                        "no room for /lost+found: unreachable inodes left as they are".into(),
                    );
                    break;
                }
            },
        };
        let mut tops = tops;
        tops.sort_unstable();
        for o in tops {
            if seen.contains(&o) {
                continue;
            }
            let Some(mut i) = r.inodes.get(&o).cloned() else {
                continue;
            };
            let base = if valid_name(&i.name) {
                i.name.clone()
            } else {
                format!("#{o}")
            };
            let name = if r.has(lf, &base) || base.len() + 12 > 255 {
                let mut cut = base.len().min(200);
                while !base.is_char_boundary(cut) {
                    cut -= 1;
                }
                format!("{}~{o}", &base[..cut])
            } else {
                base
            };
            if !r.insert(
                lf,
                DirEntry {
                    ino: o,
                    kind: i.kind,
                    name: name.clone(),
                },
            ) {
                r.out
                    .quarantined
                    .push(format!("inode {o}: /lost+found is full, left unreachable"));
                seen.insert(o);
                continue;
            }
            i.parent = lf;
            i.name = name.clone();
            r.inodes.insert(o, i.clone());
            r.dirty.insert(o);
            r.out.quarantined.push(format!(
                "inode {o} ({}) moved to /{LOST_FOUND}/{name}",
                if i.kind == Kind::Dir {
                    "directory"
                } else {
                    "file"
                }
            ));
            seen.insert(o);
            queue.push_back(o);
            walk_from(&mut r, &mut seen, &mut queue);
        }
    }
    // Inodes left unreachable (a full /lost+found) keep their blocks; write everything.
    for (d, blocks) in &r.dirs {
        for (b, es, changed) in blocks {
            if *changed {
                let Some(raw) = encode_dir(bs, es) else {
                    r.out
                        .quarantined
                        .push(format!("directory {d}: block {b} overflows, not rewritten"));
                    continue;
                };
                dev.write_at(&raw, *b as u64 * bs as u64)?;
            }
        }
    }
    for ino in &r.dirty {
        if let Some(i) = r.inodes.get(ino) {
            dev.write_at(&i.encode(), g.inode_at(*ino))?;
        }
    }
    // Bitmaps from the owners.
    for c in 0..g.n_clusters {
        let raw = read(dev, g.cluster_at(c), bs)?;
        let first = g.cluster_first_block(c);
        let mut want = ClusterBlock::empty(c, g.bpc);
        for i in 0..g.bpc {
            if r.owner.contains_key(&((first + i as u64) as u32)) {
                want.set(i, true);
            }
        }
        let same = ClusterBlock::decode(&raw, bs, c, g.bpc).is_ok_and(|cl| cl.bits == want.bits);
        if !same {
            dev.write_at(&want.encode(bs), g.cluster_at(c))?;
            r.out
                .rebuilt
                .push(format!("cluster {c}: bitmap rebuilt from the inodes"));
        }
    }
    dev.flush()?;
    Ok(r.out)
}

/// Finds or makes `/lost+found`; `None` when there is no free inode or room in the root.
fn make_lost_found(r: &mut Rebuild<'_>, seen: &mut HashSet<u32>) -> Result<Option<u32>> {
    if let Some(e) = r.dirs.get(&1).and_then(|bs| {
        bs.iter()
            .flat_map(|(_, es, _)| es.iter())
            .find(|e| e.name == LOST_FOUND)
            .cloned()
    }) {
        return Ok((e.kind == Kind::Dir).then_some(e.ino));
    }
    let Some(ino) = (2..r.g.max_inodes).find(|i| !r.inodes.contains_key(i)) else {
        return Ok(None);
    };
    let old = read(r.dev, r.g.inode_at(ino), SECTOR)?;
    let mut i = Inode::free(ino);
    i.kind = Kind::Dir;
    i.parent = 1;
    i.name = LOST_FOUND.to_string();
    i.generation = Inode::decode(&old, ino).map_or(1, |o| o.generation.wrapping_add(1));
    r.inodes.insert(ino, i);
    r.dirty.insert(ino);
    r.dirs.insert(ino, Vec::new());
    if !r.insert(
        1,
        DirEntry {
            ino,
            kind: Kind::Dir,
            name: LOST_FOUND.to_string(),
        },
    ) {
        r.inodes.remove(&ino);
        r.dirty.remove(&ino);
        return Ok(None);
    }
    seen.insert(ino);
    r.out
        .rebuilt
        .push(format!("made /{LOST_FOUND} (inode {ino})"));
    Ok(Some(ino))
}
