//! The per-host redo journal: a header sector (the checkpoint) and a ring of transactions.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{
    assert_layout, check_version, open_sector, seal_sector, Layout, Versioned, SECTOR, VERSION16,
};
use crate::error::{Error, Result};

/// A journal header's bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct JournalHeaderLayout {
    pub(super) magic: [u8; 4],
    pub(super) version: U16,
    pub(super) _pad: [u8; 2],
    pub(super) host: U32,
    pub(super) _pad2: [u8; 4],
    /// Every transaction up to it is durable in place.
    pub(super) applied_seq: U64,
    /// Ring offset where the transaction after `applied_seq` starts.
    pub(super) tail: U64,
    pub(super) _reserved: [u8; 476],
    pub(super) crc: U32,
}
assert_layout!(JournalHeaderLayout, size SECTOR);

impl Layout for JournalHeaderLayout {
    const WHAT: &'static str = "journal header";
    const MAGIC: &'static [u8] = b"VJH1";
    const CRC_AT: usize = core::mem::offset_of!(Self, crc);
}

impl Versioned for JournalHeaderLayout {
    fn version(&self) -> u32 {
        self.version.get().into()
    }
}

impl JournalHeaderLayout {
    /// The header of `host`'s journal with magic and version set, every other field zero.
    pub(super) fn new(host: u32) -> Self {
        let mut r = Self::new_zeroed();
        r.magic.copy_from_slice(Self::MAGIC);
        r.version.set(VERSION16);
        r.host.set(host);
        r
    }
}

/// Encodes a journal header: every transaction up to `applied_seq` is durable in place
/// (checkpointed), and the next one starts at ring offset `tail`.
pub fn encode_journal_header(host: u32, applied_seq: u64, tail: u64) -> [u8; SECTOR] {
    let mut r = JournalHeaderLayout::new(host);
    r.applied_seq.set(applied_seq);
    r.tail.set(tail);
    seal_sector(&r)
}

/// Decodes a journal header into `applied_seq`; all zeros is an empty journal.
pub fn decode_journal_header(b: &[u8], host: u32) -> Result<u64> {
    decode_journal_tail(b, host).map(|(seq, _)| seq)
}

/// Decodes a journal header into (`applied_seq`, tail ring offset).
pub fn decode_journal_tail(b: &[u8], host: u32) -> Result<(u64, u64)> {
    let Some(r) = open_sector::<JournalHeaderLayout>(b)? else {
        return Ok((0, 0));
    };
    if r.host.get() != host {
        return Err(Error::corrupt(JournalHeaderLayout::WHAT, "host"));
    }
    Ok((r.applied_seq.get(), r.tail.get()))
}

/// A redo transaction: whole-record images and where they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// Writing host.
    pub host: u32,
    /// Sequence number (applied_seq + 1 when written).
    pub seq: u64,
    /// (offset, bytes) images.
    pub records: Vec<(u64, Vec<u8>)>,
}

/// A transaction header's bytes; the payload (the records) follows.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct TxnHeader {
    pub(super) magic: [u8; 4],
    pub(super) version: U16,
    pub(super) _pad: [u8; 2],
    pub(super) host: U32,
    /// Records in the payload.
    pub(super) count: U32,
    pub(super) seq: U64,
    /// Payload bytes after the header.
    pub(super) payload_len: U32,
    /// crc32 of the header before this field and of the payload.
    pub(super) crc: U32,
}
assert_layout!(TxnHeader, size 32);

impl Layout for TxnHeader {
    const WHAT: &'static str = "journal transaction";
    const MAGIC: &'static [u8] = b"VJT1";
    const CRC_AT: usize = core::mem::offset_of!(Self, crc);
}

impl Versioned for TxnHeader {
    fn version(&self) -> u32 {
        self.version.get().into()
    }
}

impl TxnHeader {
    /// A header of `host` with magic and version set, every other field zero.
    pub(super) fn new(host: u32) -> Self {
        let mut r = Self::new_zeroed();
        r.magic.copy_from_slice(Self::MAGIC);
        r.version.set(VERSION16);
        r.host.set(host);
        r
    }
}

/// One record's fixed part in a transaction payload; its bytes follow.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct TxnRecordHeader {
    /// Device offset the image goes to.
    pub(super) offset: U64,
    /// Image length.
    pub(super) len: U32,
}

/// Size of a record before its bytes.
const RECORD_HEADER: usize = size_of::<TxnRecordHeader>();

/// Size of a transaction header.
pub const TXN_HEADER: usize = size_of::<TxnHeader>();

/// crc32 of a transaction: its header up to the crc field, then its payload.
pub(super) fn txn_crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[..TxnHeader::CRC_AT]);
    h.update(payload);
    h.finalize()
}

impl Txn {
    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        TXN_HEADER
            + self
                .records
                .iter()
                .map(|(_, d)| RECORD_HEADER + d.len())
                .sum::<usize>()
    }
    /// Encodes (header + payload).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.encoded_len());
        b.resize(TXN_HEADER, 0);
        for (o, d) in &self.records {
            let rh = TxnRecordHeader {
                offset: U64::new(*o),
                len: U32::new(d.len() as u32),
            };
            b.extend_from_slice(rh.as_bytes());
            b.extend_from_slice(d);
        }
        let mut h = TxnHeader::new(self.host);
        h.count.set(self.records.len() as u32);
        h.seq.set(self.seq);
        h.payload_len.set((b.len() - TXN_HEADER) as u32);
        b[..TXN_HEADER].copy_from_slice(h.as_bytes());
        let c = txn_crc(&b[..TXN_HEADER], &b[TXN_HEADER..]);
        b[TxnHeader::CRC_AT..TXN_HEADER].copy_from_slice(&c.to_le_bytes());
        b
    }
    /// Payload length announced by a header (to know how much more to read).
    pub fn payload_len(header: &[u8], max: usize) -> Result<usize> {
        Self::header(header, max).map(|(_, n)| n)
    }
    /// Views a transaction header and its payload length (at most `max`).
    fn header(b: &[u8], max: usize) -> Result<(&TxnHeader, usize)> {
        const W: &str = TxnHeader::WHAT;
        let Ok((h, _)) = TxnHeader::ref_from_prefix(b) else {
            return Err(Error::corrupt(W, "bad magic"));
        };
        if h.magic != TxnHeader::MAGIC {
            return Err(Error::corrupt(W, "bad magic"));
        }
        let n = h.payload_len.get() as usize;
        if n > max {
            return Err(Error::corrupt(W, format!("payload {n} > {max}")));
        }
        Ok((h, n))
    }
    /// Decodes a whole transaction (`b` = header + payload, at most `max` bytes).
    pub fn decode(b: &[u8], host: u32, max: usize) -> Result<Txn> {
        const W: &str = TxnHeader::WHAT;
        let (h, n) = Self::header(b, max.saturating_sub(TXN_HEADER))?;
        check_version(h)?;
        let Some(p) = b.get(TXN_HEADER..TXN_HEADER + n) else {
            return Err(Error::corrupt(W, "truncated"));
        };
        if txn_crc(b, p) != h.crc.get() {
            return Err(Error::corrupt(W, "crc"));
        }
        if h.host.get() != host {
            return Err(Error::corrupt(W, "host"));
        }
        let count = h.count.get() as usize;
        let mut o = 0;
        let mut records = Vec::with_capacity(count.min(n / RECORD_HEADER + 1));
        for _ in 0..count {
            let Ok((r, rest)) = TxnRecordHeader::ref_from_prefix(&p[o..]) else {
                return Err(Error::corrupt(W, "record header overruns"));
            };
            let len = r.len.get() as usize;
            let Some(data) = rest.get(..len) else {
                return Err(Error::corrupt(W, "record overruns"));
            };
            records.push((r.offset.get(), data.to_vec()));
            o += RECORD_HEADER + len;
        }
        if o != p.len() {
            return Err(Error::corrupt(W, "trailing bytes"));
        }
        Ok(Txn {
            host,
            seq: h.seq.get(),
            records,
        })
    }
}
