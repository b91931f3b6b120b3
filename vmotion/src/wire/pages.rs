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
        let view = PagesView::parse_from(r)?;
        let mut pages = vec![None; usize::from(view.count)];
        for (pfn, page) in view.iter() {
            // `iter` yields pfns inside the span it checked.
            let slot = &mut pages[usize::try_from(pfn - view.first_pfn).unwrap_or(usize::MAX)];
            *slot = Some(match page {
                PageRef::Zero => Page::Zero,
                PageRef::Data(bytes) => {
                    let mut data = Box::new([0u8; PAGE_SIZE]);
                    data.copy_from_slice(bytes);
                    Page::Data(data)
                }
            });
        }
        Ok(Self {
            round: view.round,
            first_pfn: view.first_pfn,
            pages,
        })
    }
}

/// A page of a [`PagesView`], borrowed from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageRef<'a> {
    /// All zeros.
    Zero,
    /// The page's 4096 bytes.
    Data(&'a [u8]),
}

/// A checked `Pages` payload that borrows its page data: the receive path writes each page
/// from the frame buffer straight into guest memory, with no copy in between.
#[derive(Debug, Clone, Copy)]
pub struct PagesView<'a> {
    /// The pre-copy round.
    pub round: u32,
    /// The first page frame of the span.
    pub first_pfn: u64,
    count: u16,
    present: &'a [u8],
    zero: &'a [u8],
    data: &'a [u8],
}

impl<'a> PagesView<'a> {
    /// Checks a whole `Pages` payload exactly as [`Message::decode_payload`] does.
    ///
    /// [`Message::decode_payload`]: super::Message::decode_payload
    pub fn parse(payload: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(payload, "pages payload");
        let view = Self::parse_from(&mut r)?;
        r.finish()?;
        Ok(view)
    }

    fn parse_from(r: &mut Reader<'a>) -> Result<Self> {
        let head: PagesHead = r.read()?;
        let first_pfn = head.first_pfn.get();
        let count = span(first_pfn, usize::from(head.count.get()))?;
        let bitmap_bytes = bitmap_bytes(count);
        let present = r.take(bitmap_bytes)?;
        let zero = r.take(bitmap_bytes)?;
        let mut data_pages = 0usize;
        for byte in 0..bitmap_bytes {
            let (p, z) = (present[byte], zero[byte]);
            let used = if (byte + 1) * 8 <= usize::from(count) {
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
        Ok(Self {
            round: head.round.get(),
            first_pfn,
            count,
            present,
            zero,
            data: r.rest(),
        })
    }

    /// Page frames the batch spans (present or not).
    #[must_use]
    pub fn span(&self) -> u16 {
        self.count
    }

    /// The pages the batch carries, as `(pfn, page)` in ascending pfn order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, PageRef<'a>)> + '_ {
        let mut data = self.data.chunks_exact(PAGE_SIZE);
        (0..usize::from(self.count)).filter_map(move |i| {
            let bit = 1u8 << (i % 8);
            if self.present[i / 8] & bit == 0 {
                return None;
            }
            let pfn = self.first_pfn + i as u64;
            if self.zero[i / 8] & bit != 0 {
                Some((pfn, PageRef::Zero))
            } else {
                // `parse` checked one 4 KiB chunk per present non-zero page.
                data.next().map(|d| (pfn, PageRef::Data(d)))
            }
        })
    }
}

/// What [`encode_pages_with`] put in a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCount {
    /// Pages sent as a zero bit.
    pub zero: u32,
    /// Pages sent with their 4096 bytes.
    pub data: u32,
}

/// Appends a `Pages` payload for the span `first_pfn..first_pfn + count` to `out`, asking
/// `fill(i, page)` for each frame `i` of the span: it returns whether the frame is in the
/// batch and, if so, has written its contents into `page`. All-zero pages are sent as a
/// bit. The data goes from `fill` straight into `out`, the frame buffer (no copy per page).
pub fn encode_pages_with<E: From<Error>>(
    round: u32,
    first_pfn: u64,
    count: usize,
    out: &mut Vec<u8>,
    mut fill: impl FnMut(usize, &mut [u8]) -> Result<bool, E>,
) -> Result<BatchCount, E> {
    let count = span(first_pfn, count)?;
    put(
        out,
        &PagesHead {
            round: round.into(),
            first_pfn: first_pfn.into(),
            count: count.into(),
        },
    );
    let bitmaps = out.len();
    let bitmap_bytes = bitmap_bytes(count);
    out.resize(bitmaps + 2 * bitmap_bytes, 0);
    let mut counted = BatchCount::default();
    for i in 0..usize::from(count) {
        let at = out.len();
        out.resize(at + PAGE_SIZE, 0);
        if !fill(i, &mut out[at..])? {
            out.truncate(at);
            continue;
        }
        let bit = 1u8 << (i % 8);
        out[bitmaps + i / 8] |= bit;
        if is_zero(&out[at..]) {
            out[bitmaps + bitmap_bytes + i / 8] |= bit;
            out.truncate(at);
            counted.zero += 1;
        } else {
            counted.data += 1;
        }
    }
    Ok(counted)
}

/// Whether a page is all zeros (word-wise, which the compiler vectorises).
#[must_use]
pub fn is_zero(page: &[u8]) -> bool {
    page.chunks(64)
        .all(|chunk| chunk.iter().fold(0u8, |acc, b| acc | b) == 0)
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
