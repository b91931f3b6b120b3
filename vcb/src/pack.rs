//! Pack files: a header, sealed chunk blobs back to back, an encrypted blob table (the
//! trailer) and a footer; and the sealing of one chunk (README "Pack files").

use std::cell::RefCell;

use crate::codec::{DResult, DecodeError, Id, Reader, Writer};
use crate::composite::{decode_composite_d, max_body};
use crate::crypto::Encryption;
use crate::crypto::Keys;
use crate::error::{Error, Object, Result};
use crate::record::{self, FORMAT_VERSION, TRAILER};

/// Pack header length.
pub const PACK_HEADER: usize = 16;
/// Footer length: trailer length (4) and magic (4).
pub const PACK_FOOTER: usize = 8;
/// One blob-table entry's length.
pub const ENTRY_LEN: usize = 48;
/// A pack is closed once its blobs reach this size.
pub(crate) const PACK_TARGET: usize = 16 << 20;
const MAGIC: &[u8; 4] = b"VCBP";
const FOOTER_MAGIC: &[u8; 4] = b"VCBF";

/// Where one chunk's blob sits in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    /// The chunk id.
    pub id: Id,
    /// Offset of the blob in the pack.
    pub offset: u32,
    /// Bytes in the pack.
    pub stored_len: u32,
    /// Bytes of the chunk.
    pub raw_len: u32,
    /// Whether the stored plaintext is a zstd frame.
    pub zstd: bool,
    /// Whether the (decompressed) plaintext is a composite body (module `composite`)
    /// rather than the chunk itself.
    pub composite: bool,
}

impl BlobEntry {
    pub(crate) fn write(&self, w: &mut Writer) {
        w.id(&self.id);
        w.u32(self.offset);
        w.u32(self.stored_len);
        w.u32(self.raw_len);
        w.u8(u8::from(self.zstd) | (u8::from(self.composite) << 1));
        w.bytes(&[0; 3]);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> DResult<BlobEntry> {
        let id = r.id("entry id")?;
        let offset = r.u32("entry offset")?;
        let stored_len = r.u32("entry stored length")?;
        let raw_len = r.u32("entry raw length")?;
        let flags = r.u8("entry flags")?;
        if flags > 3 {
            return Err(DecodeError::Corrupt(format!("entry flags {flags:#x}")));
        }
        if r.take(3, "entry reserved")? != [0; 3] {
            return Err(DecodeError::Corrupt("entry reserved bytes not zero".into()));
        }
        Ok(BlobEntry {
            id,
            offset,
            stored_len,
            raw_len,
            zstd: flags & 1 == 1,
            composite: flags & 2 == 2,
        })
    }
}

/// Encodes a blob table body.
pub fn encode_table(entries: &[BlobEntry]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(entries.len() as u32);
    for e in entries {
        e.write(&mut w);
    }
    w.buf
}

/// Decodes a blob table body (untrusted bytes; never panics).
///
/// ```
/// use vinfra_vcb::format::{decode_table, encode_table};
/// assert_eq!(decode_table(&encode_table(&[])).unwrap(), vec![]);
/// assert!(decode_table(&[1, 0, 0, 0]).is_err());
/// ```
pub fn decode_table(body: &[u8]) -> Result<Vec<BlobEntry>> {
    decode_table_d(body).map_err(|e| e.at(Object::PackTrailer, "(table)"))
}

pub(crate) fn decode_table_d(body: &[u8]) -> DResult<Vec<BlobEntry>> {
    let mut r = Reader::new(body);
    let n = r.u32("entry count")? as usize;
    if n > r.remaining() / ENTRY_LEN {
        return Err(DecodeError::Truncated(format!("{n} entries do not fit")));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(BlobEntry::read(&mut r)?);
    }
    r.end("blob table")?;
    Ok(out)
}

/// A chunk sealed for a pack: the stored bytes and whether they are compressed.
#[derive(Debug)]
pub(crate) struct SealedChunk {
    pub(crate) id: Id,
    pub(crate) stored: Vec<u8>,
    pub(crate) raw_len: u32,
    pub(crate) zstd: bool,
    pub(crate) composite: bool,
}

thread_local! {
    /// One zstd context per thread and level: a fresh one per chunk costs more than
    /// compressing the chunk.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    /// Compressed bytes of the chunk being sealed on this thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The opened (plaintext) and decompressed bytes of the chunk verify is checking on
    /// this thread: kept, so that checking allocates nothing per chunk.
    static CHECK_SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Compresses `raw` into `out`, returning the compressed length if that saves at least
/// a byte; `None` when it does not or zstd fails. The room given is one byte less than
/// the input, so zstd gives up on incompressible data instead of writing it all out.
fn compress_into(raw: &[u8], level: i32, out: &mut Vec<u8>) -> Option<usize> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, z) = c.as_mut()?;
        let room = raw.len().checked_sub(1)?;
        if out.len() < room {
            // Kept for the next chunks: sized once per thread, not per chunk.
            out.resize(room, 0);
        }
        z.compress_to_buffer(raw, &mut out[..room]).ok()
    })
}

fn decompress(b: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(z) => z.decompress(b, capacity),
            None => unreachable!("set above"),
        }
    })
}

/// Compresses (when that saves space) and seals one chunk.
pub(crate) fn seal_chunk(keys: &Keys, id: Id, raw: &[u8], zstd_level: i32) -> SealedChunk {
    seal_body(keys, id, raw, raw.len() as u32, false, zstd_level)
}

/// Compresses (when that saves space) and seals a composite chunk's body.
pub(crate) fn seal_composite(
    keys: &Keys,
    id: Id,
    body: &[u8],
    raw_len: u32,
    zstd_level: i32,
) -> SealedChunk {
    seal_body(keys, id, body, raw_len, true, zstd_level)
}

fn seal_body(
    keys: &Keys,
    id: Id,
    body: &[u8],
    raw_len: u32,
    composite: bool,
    zstd_level: i32,
) -> SealedChunk {
    // The compressed bytes go to a buffer each thread keeps, and are sealed from there
    // straight into the one allocation the chunk keeps.
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let n = compress_into(body, zstd_level, &mut s);
        let plain: &[u8] = match n {
            Some(n) => &s[..n],
            None => body,
        };
        SealedChunk {
            id,
            stored: keys.seal(&id.0, plain),
            raw_len,
            zstd: n.is_some(),
            composite,
        }
    })
}

/// Decompresses a frame into `out` (cleared), at most `capacity` bytes.
fn decompress_into(b: &[u8], capacity: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        out.clear();
        out.reserve(capacity);
        match d.as_mut() {
            // Writes into the spare capacity: a frame larger than `capacity` fails.
            Some(z) => z.decompress_to_buffer(b, out).map(|_| ()),
            None => unreachable!("set above"),
        }
    })
}

/// Checks one stored blob as [`open_chunk`] does — authenticated, decompressed, the
/// right length, hashing to its id — without keeping the chunk: the buffers are the
/// thread's own, reused from chunk to chunk (verify).
pub(crate) fn check_chunk(keys: &Keys, e: &BlobEntry, stored: &[u8], pack: &Id) -> Result<()> {
    let name = || format!("{} in pack {} at offset {}", e.id, pack, e.offset);
    CHECK_SCRATCH.with(|s| {
        let (plain, raw) = &mut *s.borrow_mut();
        let plain: &[u8] = if keys.encrypted() {
            if !keys.open_into(&e.id.0, stored, plain) {
                return Err(Error::corrupt(
                    Object::Chunk,
                    &name(),
                    "authentication failed",
                ));
            }
            plain
        } else {
            stored
        };
        let cap = body_capacity(e);
        let raw: &[u8] = if e.zstd {
            decompress_into(plain, cap, raw)
                .map_err(|x| Error::corrupt(Object::Chunk, &name(), format!("zstd: {x}")))?;
            raw
        } else {
            plain
        };
        if e.composite {
            // Its hash needs its dependencies: verify assembles it apart.
            return decode_composite_d(raw, e.raw_len)
                .map(|_| ())
                .map_err(|x| x.at(Object::Chunk, &name()));
        }
        if raw.len() != e.raw_len as usize {
            return Err(Error::corrupt(
                Object::Chunk,
                &name(),
                format!("{} bytes, want {}", raw.len(), e.raw_len),
            ));
        }
        if keys.id(raw) != e.id {
            return Err(Error::corrupt(Object::Chunk, &name(), "hash mismatch"));
        }
        Ok(())
    })
}

/// The most bytes a blob's plaintext decompresses to.
fn body_capacity(e: &BlobEntry) -> usize {
    if e.composite {
        max_body(e.raw_len as usize)
    } else {
        e.raw_len as usize
    }
}

/// Opens one stored blob: authenticated and decompressed, the chunk itself or a
/// composite body.
pub(crate) fn open_blob(keys: &Keys, e: &BlobEntry, stored: &[u8], pack: &Id) -> Result<Vec<u8>> {
    let name = || format!("{} in pack {} at offset {}", e.id, pack, e.offset);
    let plain = keys
        .open(&e.id.0, stored)
        .ok_or_else(|| Error::corrupt(Object::Chunk, &name(), "authentication failed"))?;
    if e.zstd {
        decompress(&plain, body_capacity(e))
            .map_err(|x| Error::corrupt(Object::Chunk, &name(), format!("zstd: {x}")))
    } else {
        Ok(plain)
    }
}

/// Opens one stored whole chunk and checks it against its id.
pub(crate) fn open_chunk(keys: &Keys, e: &BlobEntry, stored: &[u8], pack: &Id) -> Result<Vec<u8>> {
    let name = || format!("{} in pack {} at offset {}", e.id, pack, e.offset);
    debug_assert!(!e.composite, "a composite chunk is assembled, not opened");
    let raw = open_blob(keys, e, stored, pack)?;
    if raw.len() != e.raw_len as usize {
        return Err(Error::corrupt(
            Object::Chunk,
            &name(),
            format!("{} bytes, want {}", raw.len(), e.raw_len),
        ));
    }
    if keys.id(&raw) != e.id {
        return Err(Error::corrupt(Object::Chunk, &name(), "hash mismatch"));
    }
    Ok(raw)
}

/// A pack being filled in memory.
#[derive(Debug)]
pub(crate) struct PackWriter {
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
}

impl PackWriter {
    pub(crate) fn new(encrypted: bool) -> PackWriter {
        PackWriter::with_buffer(encrypted, Vec::with_capacity(PACK_TARGET + (1 << 20)))
    }

    /// A pack filled in `buf` (cleared): a written pack's buffer, reused so that every
    /// pack does not fault in fresh memory.
    pub(crate) fn with_buffer(encrypted: bool, mut buf: Vec<u8>) -> PackWriter {
        buf.clear();
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf.extend_from_slice(&u16::from(encrypted).to_le_bytes());
        buf.extend_from_slice(&[0; 8]);
        PackWriter {
            buf,
            entries: Vec::new(),
        }
    }

    pub(crate) fn add(&mut self, c: &SealedChunk) {
        self.entries.push(BlobEntry {
            id: c.id,
            offset: self.buf.len() as u32,
            stored_len: c.stored.len() as u32,
            raw_len: c.raw_len,
            zstd: c.zstd,
            composite: c.composite,
        });
        self.buf.extend_from_slice(&c.stored);
    }

    pub(crate) fn add_raw(&mut self, mut e: BlobEntry, stored: &[u8]) {
        e.offset = self.buf.len() as u32;
        self.entries.push(e);
        self.buf.extend_from_slice(stored);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.buf.len() >= PACK_TARGET
    }

    /// The finished pack: its id, bytes and blob table.
    pub(crate) fn finish(mut self, keys: &Keys) -> (Id, Vec<u8>, Vec<BlobEntry>) {
        let trailer = record::encode(TRAILER, Some(keys), &encode_table(&self.entries), None);
        self.buf.extend_from_slice(&trailer);
        self.buf
            .extend_from_slice(&(trailer.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(FOOTER_MAGIC);
        (keys.id(&self.buf), self.buf, self.entries)
    }
}

/// The storage name of a pack.
pub(crate) fn pack_name(id: &Id) -> String {
    let h = id.to_hex();
    format!("data/{}/{h}", &h[..2])
}

/// Decodes a whole pack's header, footer and trailer; checks every entry lies in the
/// blob area. `keys`: the repository's keys.
pub(crate) fn decode_pack(keys: &Keys, name: &str, b: &[u8]) -> Result<Vec<BlobEntry>> {
    let o = Object::Pack;
    if b.len() < PACK_HEADER + PACK_FOOTER {
        return Err(Error::truncated(o, name, format!("{} bytes", b.len())));
    }
    if &b[..4] != MAGIC {
        return Err(Error::corrupt(o, name, "bad header magic"));
    }
    let v = u16::from_le_bytes([b[4], b[5]]);
    if v != FORMAT_VERSION {
        return Err(Error::Version {
            what: o,
            name: name.to_string(),
            found: v,
            supported: FORMAT_VERSION,
        });
    }
    let enc = u16::from_le_bytes([b[6], b[7]]);
    if enc != u16::from(keys.encrypted()) {
        return Err(Error::corrupt(o, name, format!("header flags {enc:#x}")));
    }
    let end = b.len() - PACK_FOOTER;
    if &b[end + 4..] != FOOTER_MAGIC {
        return Err(Error::truncated(
            o,
            name,
            "no footer (the pack's end is missing or damaged)",
        ));
    }
    let tl = u32::from_le_bytes([b[end], b[end + 1], b[end + 2], b[end + 3]]) as usize;
    if tl > end - PACK_HEADER {
        return Err(Error::corrupt(o, name, format!("trailer length {tl}")));
    }
    let start = end - tl;
    let body = record::decode(TRAILER, Some(keys), name, &b[start..end])?;
    let entries = decode_table_d(&body).map_err(|e| e.at(Object::PackTrailer, name))?;
    for e in &entries {
        check_entry(e, start, keys.seal_overhead()).map_err(|d| Error::corrupt(o, name, d))?;
    }
    Ok(entries)
}

/// Checks an entry lies inside a pack's blob area ending at `blob_end`.
pub(crate) fn check_entry(
    e: &BlobEntry,
    blob_end: usize,
    seal_overhead: usize,
) -> std::result::Result<(), String> {
    let end = u64::from(e.offset) + u64::from(e.stored_len);
    if (e.offset as usize) < PACK_HEADER || end > blob_end as u64 {
        return Err(format!(
            "blob {} at {}+{} outside the blob area",
            e.id.short(),
            e.offset,
            e.stored_len
        ));
    }
    if (e.stored_len as usize) < seal_overhead {
        return Err(format!("blob {} shorter than its seal", e.id.short()));
    }
    Ok(())
}

/// Decodes a pack of an unencrypted repository with the all-zero master secret: for
/// fuzzing the pack decoder's header, footer and table checks.
///
/// ```
/// assert!(vinfra_vcb::format::decode_pack_unencrypted(b"VCBP").is_err());
/// ```
pub fn decode_pack_unencrypted(b: &[u8]) -> Result<Vec<BlobEntry>> {
    decode_pack(
        &Keys::derive(&[0; 16], &[0; 32], Encryption::None),
        "(input)",
        b,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_and_chunks_check_their_ids() {
        for enc in [
            Encryption::None,
            Encryption::XChaCha20Poly1305,
            Encryption::Aes256Gcm,
        ] {
            let k = Keys::derive(&[1; 16], &[2; 32], enc);
            let mut p = PackWriter::new(k.encrypted());
            let a = vec![1u8; 5000];
            let b: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
            for raw in [&a, &b] {
                p.add(&seal_chunk(&k, k.id(raw), raw, 3));
            }
            let (id, bytes, entries) = p.finish(&k);
            assert_eq!(id, k.id(&bytes));
            assert_eq!(decode_pack(&k, "p", &bytes).unwrap(), entries);
            assert!(entries[0].zstd);
            for (e, raw) in entries.iter().zip([&a, &b]) {
                let s = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
                assert_eq!(&open_chunk(&k, e, s, &id).unwrap(), raw);
                check_chunk(&k, e, s, &id).unwrap();
                // A flipped byte fails both ways, and a wrong length too.
                let mut bad = s.to_vec();
                bad[s.len() / 2] ^= 1;
                assert!(open_chunk(&k, e, &bad, &id).is_err());
                assert!(check_chunk(&k, e, &bad, &id).is_err());
                let mut short = *e;
                short.raw_len -= 1;
                assert!(check_chunk(&k, &short, s, &id).is_err());
            }
            let e = decode_pack(&k, "p", &bytes[..bytes.len() - 3]).unwrap_err();
            assert!(matches!(e, Error::Truncated { .. }), "{e}");
            // A blob from another id does not open as this one.
            let mut wrong = entries[0];
            wrong.id = entries[1].id;
            let s = &bytes[entries[0].offset as usize..][..entries[0].stored_len as usize];
            assert!(open_chunk(&k, &wrong, s, &id).is_err());
        }
    }
}
