//! The block map of an inode: 12 direct pointers, then single, double and triple
//! indirect blocks (sparse: a 0 pointer is a hole).

use crate::error::{Error, Result};
use crate::format::{ptrs_per_block, Inode, NDIRECT};

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

/// Reads indirect blocks (through a cache).
pub(crate) trait IndRead {
    /// Pointer `i` of indirect block `blk` of inode `ino` at `level`.
    fn ptr(&mut self, blk: u32, ino: u32, level: u8, i: usize) -> Result<u32>;
}

/// Physical block of file block `f` (0 = hole).
pub(crate) fn lookup(r: &mut dyn IndRead, ino: &Inode, f: u64, bs: usize) -> Result<u32> {
    match place(f, bs)? {
        Place::Direct(i) => Ok(ino.direct[i]),
        Place::Indirect(root, idx) => {
            let mut blk = ino.indirect[root];
            let mut level = (root + 1) as u8;
            for &i in idx.iter() {
                if blk == 0 {
                    return Ok(0);
                }
                blk = r.ptr(blk, ino.ino, level, i)?;
                level = level.saturating_sub(1);
            }
            Ok(blk)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
