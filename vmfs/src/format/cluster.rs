//! Resource clusters: a header and the allocation bitmap of the cluster's data blocks.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{assert_layout, check_block, new_block, put_block_crc, Layout, Versioned, VERSION16};
use crate::error::{Error, Result};

/// A resource cluster header and bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterBlock {
    /// Cluster index.
    pub index: u32,
    /// Allocation bitmap, `bpc` bits.
    pub bits: Vec<u8>,
    /// Data blocks in the cluster.
    pub bpc: u32,
}

/// A resource cluster block's header; the bitmap follows it.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct ClusterHeader {
    pub(super) magic: [u8; 4],
    pub(super) version: U16,
    pub(super) _pad: [u8; 2],
    pub(super) index: U32,
    pub(super) free: U32,
    pub(super) crc: U32,
    pub(super) bpc: U32,
    pub(super) _reserved: [u8; 8],
}
assert_layout!(ClusterHeader, size 32);

/// Size of the header before the bitmap.
pub(super) const HEADER: usize = size_of::<ClusterHeader>();

impl Layout for ClusterHeader {
    const WHAT: &'static str = "resource cluster";
    const MAGIC: &'static [u8] = b"VCL1";
    const CRC_AT: usize = core::mem::offset_of!(Self, crc);
}

impl Versioned for ClusterHeader {
    fn version(&self) -> u32 {
        self.version.get().into()
    }
}

impl ClusterHeader {
    /// The header of cluster `index` of `bpc` blocks (free count and crc zero).
    pub(super) fn new(index: u32, bpc: u32) -> Self {
        let mut r = Self::new_zeroed();
        r.magic.copy_from_slice(Self::MAGIC);
        r.version.set(VERSION16);
        r.index.set(index);
        r.bpc.set(bpc);
        r
    }
}

impl ClusterBlock {
    /// An empty cluster.
    pub fn empty(index: u32, bpc: u32) -> Self {
        ClusterBlock {
            index,
            bits: vec![0; (bpc as usize).div_ceil(8)],
            bpc,
        }
    }
    /// Whether block `i` is allocated.
    pub fn is_set(&self, i: u32) -> bool {
        self.bits
            .get(i as usize / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }
    /// Marks block `i`.
    pub fn set(&mut self, i: u32, on: bool) {
        if let Some(b) = self.bits.get_mut(i as usize / 8) {
            if on {
                *b |= 1 << (i % 8);
            } else {
                *b &= !(1 << (i % 8));
            }
        }
    }
    /// Free blocks.
    pub fn free_count(&self) -> u32 {
        let whole = self.bpc as usize / 8;
        let mut set: u32 = self.bits.iter().take(whole).map(|b| b.count_ones()).sum();
        if let (Some(b), rest @ 1..) = (self.bits.get(whole), self.bpc % 8) {
            set += (b & ((1u8 << rest) - 1)).count_ones();
        }
        self.bpc - set
    }
    /// The first free block at or after `from`, skipping full bytes of the bitmap a byte
    /// at a time: an allocator that starts its scan at a cluster's beginning passes the
    /// blocks it gave out before (32,512 per cluster with 4 KiB blocks) on every call.
    /// Whole words of eight full bytes are skipped at once: an allocating write at 4 KiB
    /// blocks asks again for every 1 MiB it writes.
    pub fn next_free(&self, from: u32) -> Option<u32> {
        let mut i = from;
        while i < self.bpc {
            let at = i as usize / 8;
            if i % 64 == 0 {
                let word = self
                    .bits
                    .get(at..at + 8)
                    .and_then(|w| <[u8; 8]>::try_from(w).ok());
                if word == Some([0xFF; 8]) {
                    i += 64;
                    continue;
                }
            }
            let byte = *self.bits.get(at)?;
            if i % 8 == 0 && byte == 0xFF {
                i += 8;
                continue;
            }
            if byte & (1 << (i % 8)) == 0 {
                return Some(i);
            }
            i += 1;
        }
        None
    }
    /// The last free block below `before`, scanning down and skipping full bytes and
    /// words as [`ClusterBlock::next_free`] does (indirect blocks come from the top of a
    /// cluster, so that they do not split the runs of data allocated from the bottom).
    pub fn prev_free(&self, before: u32) -> Option<u32> {
        // Every block below `i` is a candidate.
        let mut i = before.min(self.bpc);
        while i > 0 {
            if i % 64 == 0 {
                let at = (i - 64) as usize / 8;
                let word = self
                    .bits
                    .get(at..at + 8)
                    .and_then(|w| <[u8; 8]>::try_from(w).ok());
                if word == Some([0xFF; 8]) {
                    i -= 64;
                    continue;
                }
            }
            let j = i - 1;
            let byte = *self.bits.get(j as usize / 8)?;
            if i % 8 == 0 && byte == 0xFF {
                i -= 8;
                continue;
            }
            if byte & (1 << (j % 8)) == 0 {
                return Some(j);
            }
            i = j;
        }
        None
    }
    /// Bytes at the start of an encoded block of `bs` bytes that can be non-zero (header
    /// and bitmap), in whole sectors: [`ClusterBlock::encode`] zeros the rest.
    pub fn used_len(&self, bs: usize) -> usize {
        (HEADER + self.bits.len())
            .next_multiple_of(super::SECTOR)
            .min(bs)
    }
    /// Encodes into a block.
    pub fn encode(&self, bs: usize) -> Vec<u8> {
        let mut h = ClusterHeader::new(self.index, self.bpc);
        h.free.set(self.free_count());
        let mut b = new_block(bs, &h);
        b[HEADER..HEADER + self.bits.len()].copy_from_slice(&self.bits);
        put_block_crc::<ClusterHeader>(&mut b);
        b
    }
    /// Decodes.
    pub fn decode(b: &[u8], bs: usize, index: u32, bpc: u32) -> Result<ClusterBlock> {
        const W: &str = ClusterHeader::WHAT;
        let h = check_block::<ClusterHeader>(b, bs)?;
        if h.index.get() != index || h.bpc.get() != bpc {
            return Err(Error::corrupt(W, "index or size"));
        }
        let n = (bpc as usize).div_ceil(8);
        if HEADER + n > bs {
            return Err(Error::corrupt(W, "bitmap too large"));
        }
        let c = ClusterBlock {
            index,
            bits: b[HEADER..HEADER + n].to_vec(),
            bpc,
        };
        if c.free_count() != h.free.get() {
            return Err(Error::corrupt(W, "free count"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// `next_free`, `prev_free` and `free_count` agree with a bit-by-bit scan, whatever the bitmap
        /// (junk past `bpc` included) and wherever the scan starts.
        #[test]
        fn bitmap_scans_agree_with_a_bit_by_bit_model(
            // Runs of equal bytes, so that whole words of full bytes occur.
            bits in proptest::collection::vec(
                (prop_oneof![Just(0xFFu8), Just(0u8), any::<u8>()], 1usize..24),
                1..12,
            ).prop_map(|runs| runs.into_iter().flat_map(|(b, n)| std::iter::repeat_n(b, n)).collect::<Vec<u8>>()),
            cut in 0u32..8,
            from in 0u32..2400,
        ) {
            let bpc = (bits.len() as u32 * 8).saturating_sub(cut).max(1);
            let c = ClusterBlock { index: 0, bits, bpc };
            let model_next = (from..bpc).find(|&i| !c.is_set(i));
            prop_assert_eq!(c.next_free(from), model_next);
            let model_prev = (0..from.min(bpc)).rev().find(|&i| !c.is_set(i));
            prop_assert_eq!(c.prev_free(from), model_prev);
            let model_free = (0..bpc).filter(|&i| !c.is_set(i)).count() as u32;
            prop_assert_eq!(c.free_count(), model_free);
        }
    }
}
