//! The block map of an inode: 12 direct pointers, then single, double and triple
//! indirect blocks (sparse: a 0 pointer is a hole).
//!
//! Built on the format and a device only: a change of the map goes through a `MapStore`
//! (the loaded indirect blocks and where new blocks come from), so it is tested here on an
//! in-memory device without a mounted volume.

use std::collections::HashMap;

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::format::{decode_indirect, encode_indirect, ptrs_per_block, Inode, NDIRECT, SECTOR};

/// Indices from the top indirect block down (1 to 3 of them), without a heap allocation
/// on the I/O path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Idx {
    a: [usize; 3],
    n: usize,
}

impl std::ops::Deref for Idx {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        &self.a[..self.n]
    }
}

/// Where file block `f` hangs: a direct slot, or an indirect root and the index path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    Direct(usize),
    /// (root 0..3, indices from the top block down)
    Indirect(usize, Idx),
}

/// Maps file block `f` to its place, for block size `bs`.
pub(crate) fn place(f: u64, bs: usize) -> Result<Place> {
    if f < NDIRECT as u64 {
        return Ok(Place::Direct(f as usize));
    }
    let p = ptrs_per_block(bs) as u64;
    let mut r = f - NDIRECT as u64;
    let mut span = p;
    for root in 0..3 {
        if r < span {
            let mut idx = Idx {
                a: [0; 3],
                n: root + 1,
            };
            let mut s = span;
            for k in 0..=root {
                s /= p;
                idx.a[k] = (r / s) as usize;
                r %= s;
            }
            return Ok(Place::Indirect(root, idx));
        }
        r -= span;
        span = span.saturating_mul(p);
    }
    Err(Error::TooLarge(f.saturating_mul(bs as u64)))
}

/// Largest file size in bytes for block size `bs`.
pub fn max_file_size(bs: usize) -> u64 {
    let p = ptrs_per_block(bs) as u64;
    (NDIRECT as u64 + p + p * p + p * p * p).saturating_mul(bs as u64)
}

/// Reads indirect block `blk` of inode `ino` at `level`: its image and its checked
/// pointers (both the change set and the read cache load blocks this way).
fn read_indirect(
    dev: &dyn BlockDevice,
    bs: usize,
    blk: u32,
    ino: u32,
    level: u8,
) -> Result<(Vec<u8>, Vec<u32>)> {
    let mut b = vec![0u8; bs];
    dev.read_at(&mut b, blk as u64 * bs as u64)?;
    let ptrs = decode_indirect(&b, bs, ino, level)
        .map_err(|e| e.at(format_args!("indirect block {blk} of inode {ino}")))?;
    Ok((b, ptrs))
}

/// The bytes of a loaded block image that changed since it was loaded (or last
/// committed), so that the room a commit needs in the journal is known without diffing
/// whole blocks: with 1 MiB blocks a changed pointer or bitmap bit costs a sector, not a
/// block.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Changed(Option<(usize, usize)>);

impl Changed {
    /// Bytes `at..at + len` changed.
    pub fn touch(&mut self, at: usize, len: usize) {
        let end = at + len.max(1) - 1;
        self.0 = Some(match self.0 {
            None => (at, end),
            Some((lo, hi)) => (lo.min(at), hi.max(end)),
        });
    }

    /// Whether anything changed.
    pub fn is_dirty(&self) -> bool {
        self.0.is_some()
    }

    /// Forgets the changes (committed).
    pub fn clear(&mut self) {
        self.0 = None;
    }

    /// At most the bytes `diff_records` turns the change into: the sectors it spans plus
    /// the header sector (magic, count, crc), each as a record with a 12-byte header.
    pub fn journal_bytes(&self) -> usize {
        match self.0 {
            None => 0,
            Some((lo, hi)) => (2 + hi / SECTOR - lo / SECTOR) * (SECTOR + 12),
        }
    }
}

/// One indirect block loaded for a change of the map.
#[derive(Debug)]
struct Ind {
    ino: u32,
    level: u8,
    ptrs: Vec<u32>,
    dirty: bool,
    /// Which pointers changed (bytes of the encoded block).
    changed: Changed,
    /// The image on disk (None: a new block, written whole).
    orig: Option<Vec<u8>>,
}

/// The indirect blocks one metadata operation has loaded, with their images on disk, so
/// that a commit journals only what changed.
#[derive(Debug, Default)]
pub(crate) struct IndBlocks {
    map: HashMap<u32, Ind>,
}

impl IndBlocks {
    /// Loads indirect block `blk` (of inode `ino`, at `level`) unless it is loaded.
    pub fn load(
        &mut self,
        dev: &dyn BlockDevice,
        bs: usize,
        blk: u32,
        ino: u32,
        level: u8,
    ) -> Result<()> {
        if self.map.contains_key(&blk) {
            return Ok(());
        }
        let (b, ptrs) = read_indirect(dev, bs, blk, ino, level)?;
        self.map.insert(
            blk,
            Ind {
                ino,
                level,
                ptrs,
                dirty: false,
                changed: Changed::default(),
                orig: Some(b),
            },
        );
        Ok(())
    }

    /// Pointer `i` of loaded block `blk` (0 when it is not loaded).
    fn ptr(&self, blk: u32, i: usize) -> u32 {
        self.map
            .get(&blk)
            .and_then(|e| e.ptrs.get(i).copied())
            .unwrap_or(0)
    }

    /// Sets pointer `i` of loaded block `blk`; returns whether the block is now all holes.
    fn set_ptr(&mut self, blk: u32, i: usize, p: u32) -> bool {
        match self.map.get_mut(&blk) {
            Some(e) => {
                e.ptrs[i] = p;
                e.dirty = true;
                e.changed.touch(16 + 4 * i, 4);
                e.ptrs.iter().all(|&x| x == 0)
            }
            None => false,
        }
    }

    /// Sets pointers `i..i + ps.len()` of loaded block `blk` (those past its end are
    /// not set).
    fn set_ptrs(&mut self, blk: u32, i: usize, ps: &[u32]) {
        if let Some(e) = self.map.get_mut(&blk) {
            let end = (i + ps.len()).min(e.ptrs.len());
            if i < end {
                e.ptrs[i..end].copy_from_slice(&ps[..end - i]);
                e.dirty = true;
                e.changed.touch(16 + 4 * i, 4 * (end - i));
            }
        }
    }

    /// Every pointer of loaded block `blk`, if it is loaded.
    pub fn ptrs(&self, blk: u32) -> Option<&[u32]> {
        self.map.get(&blk).map(|e| e.ptrs.as_slice())
    }

    /// Forgets block `blk` (it was freed).
    pub fn remove(&mut self, blk: u32) {
        self.map.remove(&blk);
    }

    /// Forgets every block that is not dirty (re-read under a lock just taken).
    pub fn retain_dirty(&mut self) {
        self.map.retain(|_, i| i.dirty);
    }

    /// Hands every dirty block to `out` as (device offset, new image, image on disk) and
    /// marks it clean: the new image becomes the one on disk.
    pub fn take_dirty(&mut self, bs: usize, mut out: impl FnMut(u64, &[u8], Option<&[u8]>)) {
        for (b, i) in self.map.iter_mut() {
            if i.dirty {
                let img = encode_indirect(bs, i.ino, i.level, &i.ptrs);
                out(*b as u64 * bs as u64, &img, i.orig.as_deref());
                i.orig = Some(img);
                i.dirty = false;
                i.changed.clear();
            }
        }
    }

    /// Hands every dirty block that is new (allocated by this change, so unreachable on
    /// the volume until its commit) to `out` as (device offset, image) and marks it clean.
    /// The caller writes them home before the commit, like new data blocks, so that the
    /// journal does not carry whole blocks of mostly zeros.
    pub fn take_new(
        &mut self,
        bs: usize,
        mut out: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        for (b, i) in self.map.iter_mut() {
            if i.dirty && i.orig.is_none() {
                let img = encode_indirect(bs, i.ino, i.level, &i.ptrs);
                out(*b as u64 * bs as u64, &img)?;
                i.orig = Some(img);
                i.dirty = false;
                i.changed.clear();
            }
        }
        Ok(())
    }

    /// At most the journal bytes the dirty blocks take; `new_home` when new blocks go
    /// home before the commit ([`IndBlocks::take_new`]) and take none.
    pub fn journal_bytes(&self, bs: usize, new_home: bool) -> usize {
        self.map
            .values()
            .filter(|i| i.dirty)
            .map(|i| match (&i.orig, new_home) {
                (None, true) => 0,
                (None, false) => bs + 12,
                (Some(_), _) => i.changed.journal_bytes(),
            })
            .sum()
    }
}

/// What a change of a block map needs: the loaded indirect blocks, the device they come
/// from, and an allocator of whole blocks.
pub(crate) trait MapStore {
    /// The block size.
    fn bs(&self) -> usize;
    /// The loaded indirect blocks and the device to load more from.
    fn blocks(&mut self) -> (&mut IndBlocks, &dyn BlockDevice);
    /// Allocates one block (for an indirect block).
    fn alloc_block(&mut self) -> Result<u32>;
    /// Frees block `b` (a data block or an indirect block left empty).
    fn free_block(&mut self, b: u32) -> Result<()>;
}

fn load(s: &mut (impl MapStore + ?Sized), blk: u32, ino: u32, level: u8) -> Result<()> {
    let bs = s.bs();
    let (ind, dev) = s.blocks();
    ind.load(dev, bs, blk, ino, level)
}

/// A new, empty indirect block for inode `ino` at `level`.
fn new_ind(s: &mut (impl MapStore + ?Sized), ino: u32, level: u8) -> Result<u32> {
    let b = s.alloc_block()?;
    let bs = s.bs();
    s.blocks().0.map.insert(
        b,
        Ind {
            ino,
            level,
            ptrs: vec![0; ptrs_per_block(bs)],
            dirty: true,
            changed: Changed::default(),
            orig: None,
        },
    );
    Ok(b)
}

/// Physical block of file block `f` (0 = hole), through the loaded indirect blocks.
pub(crate) fn lookup(s: &mut (impl MapStore + ?Sized), ino: &Inode, f: u64) -> Result<u32> {
    match place(f, s.bs())? {
        Place::Direct(i) => Ok(ino.direct[i]),
        Place::Indirect(root, idx) => {
            let mut blk = ino.indirect[root];
            let mut level = (root + 1) as u8;
            for &i in idx.iter() {
                if blk == 0 {
                    return Ok(0);
                }
                load(s, blk, ino.ino, level)?;
                blk = s.blocks().0.ptr(blk, i);
                level = level.saturating_sub(1);
            }
            Ok(blk)
        }
    }
}

/// Points file block `f` of `ino` at `p` (allocating indirect blocks as needed).
pub(crate) fn map_set(
    s: &mut (impl MapStore + ?Sized),
    ino: &mut Inode,
    f: u64,
    p: u32,
) -> Result<()> {
    map_set_run(s, ino, f, &[p])
}

/// Points file blocks `f..f + ps.len()` of `ino` at `ps` (allocating indirect blocks as
/// needed): the path down to each leaf is walked once for all of its pointers, not once
/// per block (an allocating 1 MiB write at 4 KiB blocks sets 256).
pub(crate) fn map_set_run(
    s: &mut (impl MapStore + ?Sized),
    ino: &mut Inode,
    f: u64,
    ps: &[u32],
) -> Result<()> {
    let per_leaf = ptrs_per_block(s.bs());
    let mut k = 0;
    while let Some(&p) = ps.get(k) {
        let fk = f + k as u64;
        match place(fk, s.bs())? {
            Place::Direct(i) => {
                ino.direct[i] = p;
                k += 1;
            }
            Place::Indirect(root, idx) => {
                let mut level = (root + 1) as u8;
                if ino.indirect[root] == 0 {
                    ino.indirect[root] = new_ind(s, ino.ino, level)?;
                    ino.blocks += 1;
                }
                let mut blk = ino.indirect[root];
                for (j, &i) in idx.iter().enumerate() {
                    load(s, blk, ino.ino, level)?;
                    if j + 1 == idx.len() {
                        // The leaf: every pointer of the run that lies in it.
                        let n = (per_leaf - i).min(ps.len() - k);
                        s.blocks().0.set_ptrs(blk, i, &ps[k..k + n]);
                        k += n;
                        break;
                    }
                    let cur = s.blocks().0.ptr(blk, i);
                    blk = if cur == 0 {
                        let nb = new_ind(s, ino.ino, level - 1)?;
                        ino.blocks += 1;
                        s.blocks().0.set_ptr(blk, i, nb);
                        nb
                    } else {
                        cur
                    };
                    level -= 1;
                }
            }
        }
    }
    Ok(())
}

/// Unmaps file block `f` and frees it and any indirect block left empty.
pub(crate) fn map_clear(s: &mut (impl MapStore + ?Sized), ino: &mut Inode, f: u64) -> Result<()> {
    match place(f, s.bs())? {
        Place::Direct(i) => {
            if ino.direct[i] != 0 {
                free(s, ino.direct[i])?;
                ino.direct[i] = 0;
                ino.blocks = ino.blocks.saturating_sub(1);
            }
        }
        Place::Indirect(root, idx) => {
            let mut path = Vec::new(); // (block, index)
            let mut blk = ino.indirect[root];
            let mut level = (root + 1) as u8;
            for &i in idx.iter() {
                if blk == 0 {
                    return Ok(());
                }
                load(s, blk, ino.ino, level)?;
                path.push((blk, i));
                blk = s.blocks().0.ptr(blk, i);
                level = level.saturating_sub(1);
            }
            if blk == 0 {
                return Ok(());
            }
            free(s, blk)?;
            ino.blocks = ino.blocks.saturating_sub(1);
            // Clear upwards while blocks become empty.
            for (pb, i) in path.into_iter().rev() {
                if !s.blocks().0.set_ptr(pb, i, 0) {
                    return Ok(());
                }
                free(s, pb)?;
                ino.blocks = ino.blocks.saturating_sub(1);
            }
            ino.indirect[root] = 0;
        }
    }
    Ok(())
}

fn free(s: &mut (impl MapStore + ?Sized), b: u32) -> Result<()> {
    s.free_block(b)?;
    s.blocks().0.remove(b);
    Ok(())
}

/// Every mapped data block (file block, physical block) with file block >= `from`.
pub(crate) fn mapped_from(
    s: &mut (impl MapStore + ?Sized),
    ino: &Inode,
    from: u64,
) -> Result<Vec<(u64, u32)>> {
    let mut out = Vec::new();
    for i in 0..NDIRECT {
        if i as u64 >= from && ino.direct[i] != 0 {
            out.push((i as u64, ino.direct[i]));
        }
    }
    let p = ptrs_per_block(s.bs()) as u64;
    let mut base = NDIRECT as u64;
    let mut span = p;
    for root in 0..3 {
        if ino.indirect[root] != 0 && base + span > from {
            walk(
                s,
                ino.ino,
                ino.indirect[root],
                (root + 1) as u8,
                base,
                from,
                &mut out,
            )?;
        }
        base += span;
        span = span.saturating_mul(p);
    }
    Ok(out)
}

fn walk(
    s: &mut (impl MapStore + ?Sized),
    ino: u32,
    blk: u32,
    level: u8,
    base: u64,
    from: u64,
    out: &mut Vec<(u64, u32)>,
) -> Result<()> {
    load(s, blk, ino, level)?;
    let ptrs = s
        .blocks()
        .0
        .map
        .get(&blk)
        .map(|e| e.ptrs.clone())
        .unwrap_or_default();
    let p = ptrs_per_block(s.bs()) as u64;
    let child_span = p.pow(level as u32 - 1);
    for (i, &c) in ptrs.iter().enumerate() {
        let cb = base + i as u64 * child_span;
        if c == 0 || cb + child_span <= from {
            continue;
        }
        if level == 1 {
            out.push((cb, c));
        } else {
            walk(s, ino, c, level - 1, cb, from, out)?;
        }
    }
    Ok(())
}

/// Reads indirect blocks straight from the device with a small cache (lock-free readers).
#[derive(Debug, Default)]
pub(crate) struct IndCache {
    pub map: HashMap<u32, Vec<u32>>,
}

impl IndCache {
    /// Every pointer of indirect block `blk` (loaded, decoded and checked once). A block
    /// in `over` (the file's deferred changes, not yet on the volume) comes from there.
    pub fn block<'s>(
        &'s mut self,
        over: Option<&'s IndBlocks>,
        dev: &dyn BlockDevice,
        bs: usize,
        blk: u32,
        ino: u32,
        level: u8,
    ) -> Result<&'s [u32]> {
        if let Some(p) = over.and_then(|o| o.ptrs(blk)) {
            return Ok(p);
        }
        if !self.map.contains_key(&blk) {
            let (_, p) = read_indirect(dev, bs, blk, ino, level)?;
            if self.map.len() > 4096 {
                self.map.clear();
            }
            self.map.insert(blk, p);
        }
        Ok(self.map.get(&blk).map(Vec::as_slice).unwrap_or(&[]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemDevice;
    use crate::format::Kind;

    /// The block map over an in-memory device and a bump allocator: no volume, no locks.
    struct Store {
        dev: MemDevice,
        ind: IndBlocks,
        next: u32,
        freed: Vec<u32>,
    }

    impl MapStore for Store {
        fn bs(&self) -> usize {
            4096
        }
        fn blocks(&mut self) -> (&mut IndBlocks, &dyn BlockDevice) {
            (&mut self.ind, &self.dev)
        }
        fn alloc_block(&mut self) -> Result<u32> {
            self.next += 1;
            Ok(self.next - 1)
        }
        fn free_block(&mut self, b: u32) -> Result<()> {
            self.freed.push(b);
            Ok(())
        }
    }

    #[test]
    fn map_allocates_indirect_blocks_that_read_back_from_the_device() {
        let bs = 4096;
        let mut s = Store {
            dev: MemDevice::new(4 << 20),
            ind: IndBlocks::default(),
            next: 100,
            freed: Vec::new(),
        };
        let mut ino = Inode::free(5);
        ino.kind = Kind::File;
        let ppb = ptrs_per_block(bs) as u64;
        // Direct, single indirect (first and last), double indirect.
        let files = [0, 11, 12, 12 + ppb - 1, 12 + ppb, 12 + ppb + 5];
        for (k, &f) in files.iter().enumerate() {
            map_set(&mut s, &mut ino, f, 500 + k as u32).unwrap();
        }
        // The single root, the double root and one block under it.
        assert_eq!((s.next, ino.blocks), (103, 3));
        assert_eq!(ino.indirect[..2], [100, 101]);
        for (k, &f) in files.iter().enumerate() {
            assert_eq!(lookup(&mut s, &ino, f).unwrap(), 500 + k as u32);
        }
        assert_eq!(lookup(&mut s, &ino, 13).unwrap(), 0, "a hole");
        let mapped = mapped_from(&mut s, &ino, 12).unwrap();
        assert_eq!(
            mapped,
            [
                (12, 502),
                (12 + ppb - 1, 503),
                (12 + ppb, 504),
                (12 + ppb + 5, 505)
            ]
        );

        // Written as a commit would write them, the blocks read back through the
        // handles' cache from the device alone.
        let mut writes = Vec::new();
        s.ind.take_dirty(bs, |off, img, orig| {
            assert!(orig.is_none(), "new blocks are written whole");
            writes.push((off, img.to_vec()));
        });
        assert_eq!(writes.len(), 3);
        assert_eq!(s.ind.journal_bytes(bs, false), 0, "nothing dirty is left");
        for (off, img) in &writes {
            s.dev.write_at(img, *off).unwrap();
        }
        let (mut runs, mut cache) = (crate::run_cache::RunCache::default(), IndCache::default());
        for (k, &f) in files.iter().enumerate() {
            let (p, _) = runs.lookup(&mut cache, None, &s.dev, bs, &ino, f).unwrap();
            assert_eq!(p, 500 + k as u64);
        }

        // Clearing frees the data blocks, then the indirect blocks left empty.
        map_clear(&mut s, &mut ino, 12 + ppb + 5).unwrap();
        assert_eq!(ino.indirect[1], 101, "block 504 still hangs under it");
        map_clear(&mut s, &mut ino, 12 + ppb).unwrap();
        assert_eq!(s.freed, [505, 504, 102, 101]);
        assert_eq!(ino.indirect[1], 0);
        assert_eq!(lookup(&mut s, &ino, 12 + ppb).unwrap(), 0);
    }

    fn store() -> Store {
        Store {
            dev: MemDevice::new(4 << 20),
            ind: IndBlocks::default(),
            next: 100,
            freed: Vec::new(),
        }
    }

    proptest::proptest! {
        /// Setting a run of pointers at once (across the direct slots, leaf edges and the
        /// single-to-double indirect edge) leaves the same map, indirect blocks and
        /// block count as setting them one by one.
        #[test]
        fn a_run_of_pointers_maps_like_one_pointer_at_a_time(
            f in proptest::prop_oneof![0u64..20, 1000u64..1040, 2020u64..2060],
            ps in proptest::collection::vec(1u32..1 << 20, 1..3000),
        ) {
            let (mut one, mut run) = (store(), store());
            let (mut ino1, mut ino2) = (Inode::free(5), Inode::free(5));
            for (k, &p) in ps.iter().enumerate() {
                map_set(&mut one, &mut ino1, f + k as u64, p).unwrap();
            }
            map_set_run(&mut run, &mut ino2, f, &ps).unwrap();
            proptest::prop_assert_eq!(&ino1, &ino2);
            proptest::prop_assert_eq!(one.next, run.next);
            for b in f.saturating_sub(2)..f + ps.len() as u64 + 2 {
                proptest::prop_assert_eq!(lookup(&mut one, &ino1, b).unwrap(), lookup(&mut run, &ino2, b).unwrap());
            }
            let dirty = |s: &mut Store| {
                let mut out = Vec::new();
                s.ind.take_dirty(4096, |off, img, _| out.push((off, img.to_vec())));
                out.sort();
                out
            };
            proptest::prop_assert_eq!(dirty(&mut one), dirty(&mut run));
        }
    }

    #[test]
    fn places_cover_two_tib_and_more() {
        let bs = 4096;
        let ind = |f: u64| match place(f, bs).unwrap() {
            Place::Indirect(r, i) => (r, i.to_vec()),
            Place::Direct(d) => (9, vec![d]),
        };
        assert_eq!(place(0, bs).unwrap(), Place::Direct(0));
        assert_eq!(ind(12), (0, vec![0]));
        assert_eq!(ind(12 + 1020 + 5), (1, vec![0, 5]));
        assert_eq!(ind(12 + 1020 + 1020 * 1020), (2, vec![0, 0, 0]));
        let two_tib_block = (2u64 << 40) / bs as u64;
        assert!(matches!(
            place(two_tib_block, bs).unwrap(),
            Place::Indirect(2, _)
        ));
        assert!(max_file_size(bs) > 2u64 << 40);
        assert!(place(max_file_size(bs) / bs as u64, bs).is_err());
    }
}
