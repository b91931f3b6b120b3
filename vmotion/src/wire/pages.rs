//! The `Pages` batch: up to 512 consecutive page frames, with bitmaps for which are present
//! and which are all zeros, then the data of the present non-zero pages.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::reader::{put, Reader};
use crate::error::{Error, Result};

/// Bytes in a guest page.
pub const PAGE_SIZE: usize = 4096;

/// Most page frames one batch spans.
pub const MAX_PAGES_PER_BATCH: u16 = 512;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct PagesHead {
    round: U32,
    first_pfn: U64,
    count: U16,
}
const _: () = assert!(size_of::<PagesHead>() == 14);

/// A page carried by a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// All zeros: one bit on the wire, no data.
    Zero,
    /// The page's contents.
    Data(Box<[u8; PAGE_SIZE]>),
}

/// A batch of consecutive page frames `first_pfn..first_pfn + pages.len()`; `None` marks a
/// frame in the span that this batch does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pages {
    /// The pre-copy round.
    pub round: u32,
    /// The first page frame of the span.
    pub first_pfn: u64,
    /// One entry per frame of the span, 1..=[`MAX_PAGES_PER_BATCH`] of them.
    pub pages: Vec<Option<Page>>,
}

impl Pages {
    pub(super) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let count = span(self.first_pfn, self.pages.len())?;
        put(
            out,
            &PagesHead {
                round: self.round.into(),
                first_pfn: self.first_pfn.into(),
                count: count.into(),
            },
        );
        let bitmap_bytes = bitmap_bytes(count);
        let mut present = vec![0u8; bitmap_bytes];
        let mut zero = vec![0u8; bitmap_bytes];
        for (i, page) in self.pages.iter().enumerate() {
            let bit = 1u8 << (i % 8);
            match page {
                None => {}
                Some(Page::Zero) => {
                    present[i / 8] |= bit;
                    zero[i / 8] |= bit;
                }
                Some(Page::Data(_)) => present[i / 8] |= bit,
            }
        }
        out.extend_from_slice(&present);
        out.extend_from_slice(&zero);
        for page in &self.pages {
            if let Some(Page::Data(data)) = page {
                out.extend_from_slice(&data[..]);
            }
        }
        Ok(())
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let head: PagesHead = r.read()?;
        let first_pfn = head.first_pfn.get();
        let count = span(first_pfn, usize::from(head.count.get()))?;
        let bitmap_bytes = bitmap_bytes(count);
        let present = r.take(bitmap_bytes)?;
        let zero = r.take(bitmap_bytes)?;
        let count = usize::from(count);
        let mut data_pages = 0usize;
        for byte in 0..bitmap_bytes {
            let (p, z) = (present[byte], zero[byte]);
            let used = if (byte + 1) * 8 <= count {
                0xff
            } else {
                (1u8 << (count % 8)) - 1
            };
            if (p | z) & !used != 0 {
                return Err(Error::PagesBatch("bitmap bits set past the page count"));
            }
            if z & !p != 0 {
                return Err(Error::PagesBatch("a zero page that is not present"));
            }
            data_pages += (p & !z).count_ones() as usize;
        }
        // At most 512 pages of 4 KiB: no overflow.
        if r.remaining() != data_pages * PAGE_SIZE {
            return Err(Error::PagesBatch(
                "page data does not match the present and zero bitmaps",
            ));
        }
        let mut pages = Vec::with_capacity(count);
        for i in 0..count {
            let bit = 1u8 << (i % 8);
            let page = if present[i / 8] & bit == 0 {
                None
            } else if zero[i / 8] & bit != 0 {
                Some(Page::Zero)
            } else {
                let mut data = Box::new([0u8; PAGE_SIZE]);
                data.copy_from_slice(r.take(PAGE_SIZE)?);
                Some(Page::Data(data))
            };
            pages.push(page);
        }
        Ok(Self {
            round: head.round.get(),
            first_pfn,
            pages,
        })
    }
}

/// Checks a batch's page count (1..=512, and the span must not run past the last pfn).
fn span(first_pfn: u64, count: usize) -> Result<u16> {
    let count = u16::try_from(count)
        .ok()
        .filter(|c| (1..=MAX_PAGES_PER_BATCH).contains(c))
        .ok_or(Error::InvalidValue {
            what: "pages batch count",
            value: count as u64,
        })?;
    if first_pfn.checked_add(u64::from(count)).is_none() {
        return Err(Error::PagesBatch("the span runs past the last page frame"));
    }
    Ok(count)
}

fn bitmap_bytes(count: u16) -> usize {
    usize::from(count).div_ceil(8)
}
