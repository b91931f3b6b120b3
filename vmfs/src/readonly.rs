//! Read-only access to a volume whose metadata may be damaged, for copying off what is
//! intact (issue 11, part 4).
//!
//! A [`ReadOnlyVolume`] writes nothing to the device: it claims no heartbeat slot, takes no
//! lock, and replays the journals of every host **in memory** (an overlay of the
//! transactions' images over the device's bytes), so it sees the last committed state even
//! of a host that crashed. The superblock comes from its backup copy when the primary fails
//! its checks. Every structure is checked where it is met, and what fails its checks is
//! reported, never fatal to the rest: a damaged directory block leaves the entries of the
//! intact ones listed (and the damage in [`Listing::damaged`]); a read of a file whose
//! indirect or data pointer is damaged is [`Error::Corrupt`] naming the inode and block,
//! while the rest of the file reads.
//!
//! It takes no locks, so it is for a volume that no live host is changing (a crashed
//! cluster, a copy of a LUN): [`ReadOnlyVolume::notes`] says which hosts' slots still show
//! them mounted.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::format::{
    decode_dir, decode_indirect, valid_name, DirEntry, Geometry, HeartbeatSlot, Inode, Kind,
    Superblock, MAX_HOSTS, SECTOR,
};
use crate::namespace::Stat;

/// Journal images replayed in memory, laid over the device's bytes.
#[derive(Debug, Default)]
struct Overlay {
    /// (offset, image) in replay order: a later image wins where two overlap.
    recs: Vec<(u64, Vec<u8>)>,
    /// Start offset → indices into `recs`.
    by_start: BTreeMap<u64, Vec<usize>>,
    /// The longest image, to bound the search for images that start before a read.
    max_len: u64,
}

impl Overlay {
    fn add(&mut self, off: u64, img: Vec<u8>) {
        self.max_len = self.max_len.max(img.len() as u64);
        self.by_start.entry(off).or_default().push(self.recs.len());
        self.recs.push((off, img));
    }

    /// Patches `buf` (the device's bytes at `off`) with every overlapping image, in order.
    fn patch(&self, buf: &mut [u8], off: u64) {
        let end = off + buf.len() as u64;
        let mut hits: Vec<usize> = self
            .by_start
            .range(off.saturating_sub(self.max_len)..end)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        hits.sort_unstable();
        for i in hits {
            let (s, img) = &self.recs[i];
            let e = s + img.len() as u64;
            let (lo, hi) = ((*s).max(off), e.min(end));
            if lo < hi {
                buf[(lo - off) as usize..(hi - off) as usize]
                    .copy_from_slice(&img[(lo - s) as usize..(hi - s) as usize]);
            }
        }
    }
}

/// A volume opened read-only for salvage: see the module documentation.
///
/// ```
/// use std::sync::Arc;
/// use vinfra_vmfs::{BlockDevice, ManualClock, MemDevice, MkfsOptions, MountOptions};
/// use vinfra_vmfs::{ReadOnlyVolume, Volume};
///
/// let lun = Arc::new(MemDevice::new(32 << 20));
/// Volume::mkfs(lun.as_ref(), &MkfsOptions::default())?;
/// let v = Volume::mount(lun.clone(), 1, &MountOptions::default(), Arc::new(ManualClock::new(0)))?;
/// v.create("/vm1.vmdk")?.write_at(b"precious", 0)?;
/// v.unmount()?;
/// lun.write_at(&[0xff; 16], 0)?; // the superblock is damaged: mount refuses it
///
/// let ro = ReadOnlyVolume::mount(lun)?;
/// assert!(ro.notes()[0].contains("backup"));
/// let f = ro.open("/vm1.vmdk")?;
/// let mut buf = vec![0u8; f.len() as usize];
/// f.read_at(&mut buf, 0)?;
/// assert_eq!(buf, b"precious");
/// # Ok::<(), vinfra_vmfs::Error>(())
/// ```
#[derive(Debug)]
pub struct ReadOnlyVolume {
    dev: Arc<dyn BlockDevice>,
    sb: Superblock,
    overlay: Overlay,
    notes: Vec<String>,
}

/// A directory's entries as far as they could be read.
#[derive(Debug, Default)]
pub struct Listing {
    /// Entries of the intact directory blocks.
    pub entries: Vec<DirEntry>,
    /// Why the other blocks could not be read (each [`Error::Corrupt`] names the block).
    pub damaged: Vec<Error>,
}

impl ReadOnlyVolume {
    /// Mounts `dev` read-only (nothing is written to it). Fails only when neither superblock copy can be read; every
    /// other damage is reported where it is met.
    pub fn mount(dev: Arc<dyn BlockDevice>) -> Result<ReadOnlyVolume> {
        let (sb, backup) = crate::volume::Volume::superblock_or_backup(dev.as_ref())?;
        let mut notes = Vec::new();
        if backup {
            notes.push("primary superblock damaged: using the backup copy".to_string());
        }
        let g = sb.geo;
        let mut overlay = Overlay::default();
        let dev_len = dev.len()?;
        for h in 0..MAX_HOSTS {
            let mut s = vec![0u8; SECTOR];
            dev.read_at(&mut s, g.hb_at(h))?;
            match HeartbeatSlot::decode(&s, h) {
                Ok(s) if s.live => notes.push(format!(
                    "host {h} shows mounted (generation {}): what it changes now may read torn",
                    s.generation
                )),
                Ok(_) => {}
                Err(e) => notes.push(format!("heartbeat slot {h}: {e}")),
            }
            let p = match crate::journal::scan(dev.as_ref(), &g, h) {
                Ok(p) => p,
                Err(e) => {
                    notes.push(format!("journal of host {h} not replayed: {e}"));
                    continue;
                }
            };
            let beyond = p.txns.iter().flat_map(|(_, t)| &t.records).any(|(o, d)| {
                o.checked_add(d.len() as u64)
                    .is_none_or(|end| end > dev_len)
            });
            if beyond {
                notes.push(format!(
                    "journal of host {h} not replayed: a record lies beyond the device"
                ));
                continue;
            }
            let run_end = p.txns.last().map_or(p.floor, |(_, t)| t.seq);
            if p.max_seq > run_end {
                notes.push(format!(
                    "journal of host {h}: transaction {} damaged, those to {} not replayed",
                    run_end + 1,
                    p.max_seq
                ));
            }
            if let (Some((_, a)), Some((_, b))) = (p.txns.first(), p.txns.last()) {
                notes.push(format!(
                    "journal of host {h}: transactions {} to {} replayed in memory",
                    a.seq, b.seq
                ));
            }
            for (_, t) in p.txns {
                for (o, d) in t.records {
                    overlay.add(o, d);
                }
            }
        }
        Ok(ReadOnlyVolume {
            dev,
            sb,
            overlay,
            notes,
        })
    }

    /// What opening found: the superblock copy used, journals replayed in memory, hosts
    /// that show mounted, damaged heartbeat slots.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The superblock in use.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    fn geo(&self) -> Geometry {
        self.sb.geo
    }

    fn read(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.dev.read_at(&mut b, off)?;
        self.overlay.patch(&mut b, off);
        Ok(b)
    }

    /// Inode `ino`, checked.
    pub fn inode(&self, ino: u32) -> Result<Inode> {
        if ino == 0 || ino >= self.geo().max_inodes {
            return Err(Error::corrupt(
                "inode",
                format!("number {ino} out of range"),
            ));
        }
        let raw = self.read(self.geo().inode_at(ino), SECTOR)?;
        Inode::decode(&raw, ino).map_err(|e| e.at(format_args!("inode {ino}")))
    }

    /// The entries of directory inode `d`, block by block.
    fn entries(&self, d: &Inode) -> Result<Listing> {
        let bs = self.geo().block_size as u64;
        let mut out = Listing::default();
        let map = Mapper::default();
        // Bounded by the volume: a size that says more blocks than it has is damage.
        for fb in 0..d.size.div_ceil(bs).min(self.geo().data_blocks()) {
            let b = match map.lookup(self, d, fb) {
                Ok(0) => continue,
                Ok(b) => b,
                Err(e) => {
                    out.damaged.push(e);
                    continue;
                }
            };
            let raw = self.read(b as u64 * bs, bs as usize)?;
            match decode_dir(&raw, bs as usize) {
                Ok(es) => out.entries.extend(es),
                Err(e) => out
                    .damaged
                    .push(e.at(format_args!("block {b} of directory {}", d.ino))),
            }
        }
        Ok(out)
    }

    /// Resolves `path` to its inode. A name not found in a directory some of whose blocks
    /// are damaged is the damage (it may have been there), not [`Error::NotFound`].
    pub fn resolve(&self, path: &str) -> Result<Inode> {
        let mut cur = self.inode(1)?;
        for name in path.split('/').filter(|s| !s.is_empty()) {
            if !valid_name(name) {
                return Err(Error::InvalidName(path.to_string()));
            }
            if cur.kind != Kind::Dir {
                return Err(Error::NotADirectory(path.to_string()));
            }
            let mut l = self.entries(&cur)?;
            match l.entries.iter().find(|e| e.name == name) {
                Some(e) => {
                    let next = self.inode(e.ino)?;
                    if next.kind == Kind::Free {
                        return Err(Error::corrupt(
                            "directory entry",
                            format!("{name:?} names free inode {}", e.ino),
                        ));
                    }
                    cur = next;
                }
                None if !l.damaged.is_empty() => return Err(l.damaged.swap_remove(0)),
                None => return Err(Error::NotFound(path.to_string())),
            }
        }
        Ok(cur)
    }

    /// Lists directory `path`: the entries of its intact blocks and the damage.
    pub fn list(&self, path: &str) -> Result<Listing> {
        let d = self.resolve(path)?;
        if d.kind != Kind::Dir {
            return Err(Error::NotADirectory(path.to_string()));
        }
        self.entries(&d)
    }

    /// Stats `path`.
    pub fn stat(&self, path: &str) -> Result<Stat> {
        Ok(Stat::from(&self.resolve(path)?))
    }

    /// Opens file `path` for reading.
    pub fn open(&self, path: &str) -> Result<ReadOnlyFile<'_>> {
        let ino = self.resolve(path)?;
        if ino.kind != Kind::File {
            return Err(Error::IsADirectory(path.to_string()));
        }
        Ok(ReadOnlyFile {
            vol: self,
            ino,
            map: Mapper::default(),
        })
    }

    /// Every inode in use, or that fails its checks (free ones are left out), in inode
    /// order: what can be copied off when no path reaches it (see [`Self::back_path`]).
    pub fn inodes(&self) -> Result<Vec<(u32, Result<Inode>)>> {
        let g = self.geo();
        let mut out = Vec::new();
        let mut first = 0u32;
        while first < g.max_inodes {
            let n = 256u32.min(g.max_inodes - first);
            let raw = self.read(g.inode_at(first), n as usize * SECTOR)?;
            for k in 0..n {
                let ino = first + k;
                let s = &raw[k as usize * SECTOR..(k as usize + 1) * SECTOR];
                match Inode::decode(s, ino) {
                    _ if ino == 0 => {}
                    Ok(i) if i.kind == Kind::Free => {}
                    r => out.push((ino, r.map_err(|e| e.at(format_args!("inode {ino}"))))),
                }
            }
            first += n;
        }
        Ok(out)
    }

    /// The path the back references of `ino` spell (each inode's `parent` and `name` up to
    /// the root). Where the chain breaks — an inode that fails its checks, is free or has
    /// no name — the path starts with that inode's number: `#7/disk` is "disk" in
    /// directory inode 7, which cannot be read. A hint, not a lookup: the directory
    /// entries may disagree.
    pub fn back_path(&self, ino: u32) -> String {
        let mut parts = Vec::new();
        let mut at = ino;
        // Bounded: a chain longer than the inode table is a loop.
        for _ in 0..self.geo().max_inodes {
            if at == 1 {
                parts.push(String::new());
                break;
            }
            match self.inode(at) {
                Ok(i) if i.kind != Kind::Free && !i.name.is_empty() => {
                    parts.push(i.name);
                    at = i.parent;
                }
                _ => {
                    parts.push(format!("#{at}"));
                    break;
                }
            }
        }
        parts.reverse();
        match parts.as_slice() {
            [root] if root.is_empty() => "/".to_string(),
            _ => parts.join("/"),
        }
    }

    /// Opens inode `ino` as a file (for one found by fsck but not reachable by a path).
    pub fn open_inode(&self, ino: u32) -> Result<ReadOnlyFile<'_>> {
        let i = self.inode(ino)?;
        if i.kind != Kind::File {
            return Err(Error::IsADirectory(format!("inode {ino}")));
        }
        Ok(ReadOnlyFile {
            vol: self,
            ino: i,
            map: Mapper::default(),
        })
    }
}

/// Decoded indirect blocks of one inode, checked once.
#[derive(Debug, Default)]
struct Mapper {
    ind: Mutex<HashMap<u32, Arc<Vec<u32>>>>,
}

impl Mapper {
    fn pointer_ok(g: &Geometry, b: u32) -> bool {
        g.block_cluster(b).is_some()
    }

    /// Physical block of file block `f` (0: hole); a damaged indirect block or a pointer
    /// outside the data region is [`Error::Corrupt`] naming it and the inode.
    fn lookup(&self, vol: &ReadOnlyVolume, ino: &Inode, f: u64) -> Result<u32> {
        let g = vol.geo();
        let bs = g.block_size as usize;
        let bad = |b: u32, what: &str| {
            Error::corrupt(
                "block pointer",
                format!("{what} {b} outside the data region"),
            )
            .at(format_args!("inode {}, file block {f}", ino.ino))
        };
        let blk = match crate::bmap::place(f, bs)? {
            crate::bmap::Place::Direct(i) => ino.direct[i],
            crate::bmap::Place::Indirect(root, idx) => {
                let mut blk = ino.indirect[root];
                let mut level = (root + 1) as u8;
                for &i in idx.iter() {
                    if blk == 0 {
                        return Ok(0);
                    }
                    if !Self::pointer_ok(&g, blk) {
                        return Err(bad(blk, "indirect block"));
                    }
                    let ptrs = self.indirect(vol, ino.ino, blk, level)?;
                    blk = ptrs.get(i).copied().unwrap_or(0);
                    level = level.saturating_sub(1);
                }
                blk
            }
        };
        if blk != 0 && !Self::pointer_ok(&g, blk) {
            return Err(bad(blk, "data block"));
        }
        Ok(blk)
    }

    fn indirect(
        &self,
        vol: &ReadOnlyVolume,
        ino: u32,
        blk: u32,
        level: u8,
    ) -> Result<Arc<Vec<u32>>> {
        let mut m = self.ind.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = m.get(&blk) {
            return Ok(p.clone());
        }
        let bs = vol.geo().block_size as usize;
        let raw = vol.read(blk as u64 * bs as u64, bs)?;
        let ptrs = decode_indirect(&raw, bs, ino, level)
            .map_err(|e| e.at(format_args!("indirect block {blk} of inode {ino}")))?;
        // Bounded: a handle that walks a huge file drops what it cached.
        if m.len() >= 4096 {
            m.clear();
        }
        let p = Arc::new(ptrs);
        m.insert(blk, p.clone());
        Ok(p)
    }
}

/// A file of a [`ReadOnlyVolume`].
#[derive(Debug)]
pub struct ReadOnlyFile<'a> {
    vol: &'a ReadOnlyVolume,
    ino: Inode,
    map: Mapper,
}

impl ReadOnlyFile<'_> {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.ino.size
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.ino.size == 0
    }

    /// The file's inode.
    pub fn inode(&self) -> &Inode {
        &self.ino
    }

    /// Reads up to `buf.len()` bytes at `off` (fewer at the end of the file); holes read
    /// as zeros. A damaged part of the map is [`Error::Corrupt`] naming inode and block.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize> {
        let size = self.ino.size;
        if off >= size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(size - off) as usize;
        let bs = self.vol.geo().block_size as u64;
        let mut done = 0usize;
        while done < n {
            let pos = off + done as u64;
            let (fb, within) = (pos / bs, pos % bs);
            let k = ((bs - within) as usize).min(n - done);
            let b = self.map.lookup(self.vol, &self.ino, fb)?;
            let out = &mut buf[done..done + k];
            if b == 0 {
                out.fill(0);
            } else {
                let at = b as u64 * bs + within;
                self.vol.dev.read_at(out, at)?;
                self.vol.overlay.patch(out, at);
            }
            done += k;
        }
        Ok(n)
    }
}

/// One layer of a disk: its extent and, for a delta, its grain map.
type DiskLayer<'a> = (ReadOnlyFile<'a>, Option<Vec<u8>>);

/// A virtual disk ([`crate::disk`]) of a [`ReadOnlyVolume`]: its snapshot chain read
/// through, as a VM would see it, or as of an earlier layer (a snapshot's point in time).
#[derive(Debug)]
pub struct ReadOnlyDisk<'a> {
    capacity: u64,
    chain: Vec<String>,
    /// Base extent first; each delta with its grain map; a layer that could not be
    /// opened keeps its error's words, so that the layers below it still read.
    layers: Vec<std::result::Result<DiskLayer<'a>, String>>,
}

/// Reads all of `f`, refusing one longer than `max` bytes (a damaged size).
fn read_small(f: &ReadOnlyFile<'_>, max: u64, what: &'static str) -> Result<Vec<u8>> {
    if f.len() > max {
        return Err(Error::corrupt(what, format!("{} bytes", f.len())));
    }
    let mut b = vec![0u8; f.len() as usize];
    let n = f.read_at(&mut b, 0)?;
    b.truncate(n);
    Ok(b)
}

impl ReadOnlyVolume {
    /// Opens the virtual disk whose descriptor is `path` (`d.vmdk`): the descriptor, every
    /// layer of its chain and their grain maps, each checked. A damaged descriptor is the
    /// error; a damaged layer is the error of a read that reaches it, while the layers
    /// below it (earlier snapshots) still read with [`ReadOnlyDisk::read_at_layer`].
    pub fn open_disk(&self, path: &str) -> Result<ReadOnlyDisk<'_>> {
        use crate::disk::{decode_descriptor, decode_map, GRAIN};
        let desc = decode_descriptor(&read_small(&self.open(path)?, 1 << 21, "disk descriptor")?)?;
        let grains = desc.capacity.div_ceil(GRAIN);
        let mut layers = Vec::new();
        for (i, name) in desc.chain.iter().enumerate() {
            let layer = self.open(name).and_then(|file| {
                if i == 0 {
                    return Ok((file, None));
                }
                let mf = self.open(&format!("{name}.map"))?;
                let raw = read_small(&mf, 64 + grains.div_ceil(8), "grain map")?;
                Ok((file, Some(decode_map(&raw, grains)?)))
            });
            layers.push(layer.map_err(|e| e.to_string()));
        }
        Ok(ReadOnlyDisk {
            capacity: desc.capacity,
            chain: desc.chain,
            layers,
        })
    }
}

impl ReadOnlyDisk<'_> {
    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The extents, base first, top (the running state) last.
    pub fn chain(&self) -> &[String] {
        &self.chain
    }

    /// Reads at `off` as the disk is now (every layer).
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.read_at_layer(buf, off, self.layers.len())
    }

    /// Reads at `off` through the first `layers` layers only: `1` is the base extent
    /// alone, the state when the first snapshot was taken.
    pub fn read_at_layer(&self, buf: &mut [u8], off: u64, layers: usize) -> Result<()> {
        use crate::disk::GRAIN;
        let end = off.saturating_add(buf.len() as u64);
        if end > self.capacity {
            return Err(Error::TooLarge(end));
        }
        let below = layers.min(self.layers.len());
        let mut pos = 0;
        while pos < buf.len() {
            let o = off + pos as u64;
            let n = ((GRAIN - o % GRAIN) as usize).min(buf.len() - pos);
            let g = o / GRAIN;
            let piece = &mut buf[pos..pos + n];
            let mut layer = None;
            for (i, l) in self.layers[..below].iter().enumerate().rev() {
                let (f, map) = l.as_ref().map_err(|e| {
                    Error::corrupt("disk layer", format!("{} (layer {i}): {e}", self.chain[i]))
                })?;
                let has = map.as_ref().is_none_or(|bits| {
                    bits.get(g as usize / 8)
                        .is_some_and(|b| b & (1 << (g % 8)) != 0)
                });
                if has {
                    layer = Some(f);
                    break;
                }
            }
            match layer {
                Some(f) => {
                    let k = f.read_at(piece, o)?;
                    piece[k..].fill(0);
                }
                None => piece.fill(0),
            }
            pos += n;
        }
        Ok(())
    }
}
