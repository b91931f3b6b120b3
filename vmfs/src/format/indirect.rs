//! Indirect blocks: a header, then as many block pointers as fit in the block. Decoded on
//! every block-map miss, so the pointer array is read in one pass without per-pointer
//! bounds checks.

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{assert_layout, block_crc, new_block, put_block_crc, Layout, MIN_BLOCK};
use crate::error::{Error, Result};

/// An indirect block's header; the pointers follow it.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct IndirectHeader {
    pub(super) magic: [u8; 4],
    /// Owning inode.
    pub(super) ino: U32,
    /// 1 = points at data blocks.
    pub(super) level: u8,
    pub(super) _pad: [u8; 3],
    pub(super) crc: U32,
}
assert_layout!(IndirectHeader, size 16);

/// Size of the header before the pointers.
pub(super) const HEADER: usize = size_of::<IndirectHeader>();

impl Layout for IndirectHeader {
    const WHAT: &'static str = "indirect block";
    const MAGIC: &'static [u8] = b"VIB1";
    const CRC_AT: usize = core::mem::offset_of!(Self, crc);
}

impl IndirectHeader {
    /// The header of inode `ino`'s block at `level` (crc zero).
    pub(super) fn new(ino: u32, level: u8) -> Self {
        let mut r = Self::new_zeroed();
        r.magic.copy_from_slice(Self::MAGIC);
        r.ino.set(ino);
        r.level = level;
        r
    }
}

/// Pointers per indirect block.
pub fn ptrs_per_block(bs: usize) -> usize {
    (bs - HEADER) / size_of::<U32>()
}

/// Encodes an indirect block.
pub fn encode_indirect(bs: usize, ino: u32, level: u8, ptrs: &[u32]) -> Vec<u8> {
    let mut b = new_block(bs, &IndirectHeader::new(ino, level));
    if let Ok((out, _)) = <[U32]>::mut_from_prefix_with_elems(&mut b[HEADER..], ptrs_per_block(bs))
    {
        for (o, &p) in out.iter_mut().zip(ptrs) {
            o.set(p);
        }
    }
    put_block_crc::<IndirectHeader>(&mut b);
    b
}

/// Decodes an indirect block of inode `ino` at `level` (1 = points at data).
pub fn decode_indirect(b: &[u8], bs: usize, ino: u32, level: u8) -> Result<Vec<u32>> {
    const W: &str = IndirectHeader::WHAT;
    if b.len() != bs || bs < MIN_BLOCK {
        return Err(Error::corrupt(W, format!("{} bytes", b.len())));
    }
    let Ok((h, rest)) = IndirectHeader::ref_from_prefix(b) else {
        return Err(Error::corrupt(W, format!("{} bytes", b.len())));
    };
    if h.magic != IndirectHeader::MAGIC {
        return Err(Error::corrupt(W, "bad magic"));
    }
    if h.crc.get() != block_crc(b, IndirectHeader::CRC_AT) {
        return Err(Error::corrupt(W, "crc"));
    }
    if h.ino.get() != ino || h.level != level {
        return Err(Error::corrupt(W, "owner or level"));
    }
    let Ok((ptrs, _)) = <[U32]>::ref_from_prefix_with_elems(rest, ptrs_per_block(bs)) else {
        return Err(Error::corrupt(W, format!("{} bytes", b.len())));
    };
    Ok(ptrs.iter().map(|p| p.get()).collect())
}
