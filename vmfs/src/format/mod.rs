//! On-disk records: encoding and bounds-checked, versioned, checksummed decoding.
//!
//! Each record's byte layout is written once, as a `#[repr(C)]` struct of little-endian
//! fields in its own module (`superblock`, `heartbeat`, `lock`, `inode`, `indirect`,
//! `cluster`, `dir`, `journal`); the encoder fills that struct and the decoder reads it, so
//! no offset is typed twice. The crate README's byte tables are checked against these
//! structs by a test. Every decoder takes untrusted bytes and returns a typed error; none
//! panics (proptests here, fuzz targets in `fuzz/`). [`seal`] gives arbitrary bytes a valid
//! header and checksum so that fuzzers and repair tools reach the field checks.

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Error, Result};

mod cluster;
mod dir;
mod heartbeat;
mod indirect;
mod inode;
mod journal;
mod lock;
mod seal;
mod superblock;

pub use cluster::ClusterBlock;
pub use dir::{decode_dir, encode_dir, entry_len, valid_name, DirEntry};
pub use heartbeat::HeartbeatSlot;
pub use indirect::{decode_indirect, encode_indirect, ptrs_per_block};
pub use inode::{Inode, Kind, NDIRECT};
pub use journal::{
    decode_journal_header, decode_journal_tail, encode_journal_header, Txn, TXN_HEADER,
};
pub use lock::{LockMode, LockRecord};
pub use seal::{seal, RecordKind};
pub use superblock::{Geometry, Superblock, SB_BACKUP_AT, SB_MAGIC};

/// Sector size: heartbeat slots, lock records, inodes and headers are one sector each.
pub const SECTOR: usize = 512;
/// Maximum hosts (heartbeat slots and journals).
pub const MAX_HOSTS: u32 = 64;
/// Format version written and accepted.
pub const VERSION: u32 = 2;
/// Inodes per inode-group lock.
pub const INODES_PER_GROUP: u32 = 64;
/// First inode lock index.
pub const LOCK_INODE_BASE: u64 = 128;
/// The volume (growth) lock index.
pub const LOCK_VOLUME: u64 = 64;
/// Maximum length of a name.
pub const NAME_MAX: usize = 255;

/// Size of a crc32 field.
const CRC_LEN: usize = size_of::<U32>();
/// Every sector record ends with the crc32 of the bytes before it.
const CRC_AT: usize = SECTOR - CRC_LEN;
/// Smallest block a block-sized record may claim (below it the header would not fit).
const MIN_BLOCK: usize = 64;

/// A record layout (or a block record's header): plain little-endian bytes, read and
/// written in place.
trait Layout: FromBytes + IntoBytes + KnownLayout + Immutable + Unaligned {
    /// Its name in errors.
    const WHAT: &'static str;
    /// Its magic (at offset 0).
    const MAGIC: &'static [u8];
    /// Offset of its crc32 field.
    const CRC_AT: usize;
}

/// A layout with a format version field.
trait Versioned: Layout {
    /// Its stored format version.
    fn version(&self) -> u32;
}

/// The version written into 16-bit version fields.
const VERSION16: u16 = VERSION as u16;

fn crc_of(b: &[u8], crc_at: usize) -> u32 {
    let mut a = [0u8; CRC_LEN];
    a.copy_from_slice(&b[crc_at..crc_at + CRC_LEN]);
    u32::from_le_bytes(a)
}

/// A sector record's bytes with its crc filled in.
fn seal_sector<T: Layout>(r: &T) -> [u8; SECTOR] {
    let mut b = [0u8; SECTOR];
    b.copy_from_slice(r.as_bytes());
    put_sector_crc(&mut b);
    b
}

fn put_sector_crc(b: &mut [u8]) {
    let c = crc32fast::hash(&b[..CRC_AT]);
    b[CRC_AT..SECTOR].copy_from_slice(&c.to_le_bytes());
}

/// Checks a sector record's length, magic and crc (not its version) and views it.
fn check_sector<T: Layout>(b: &[u8]) -> Result<&T> {
    let Ok((r, _)) = T::ref_from_prefix(b) else {
        return Err(Error::corrupt(
            T::WHAT,
            format!("{} bytes, need {SECTOR}", b.len()),
        ));
    };
    if &b[..T::MAGIC.len()] != T::MAGIC {
        return Err(Error::corrupt(T::WHAT, "bad magic"));
    }
    let want = crc_of(b, CRC_AT);
    let got = crc32fast::hash(&b[..CRC_AT]);
    if want != got {
        return Err(Error::corrupt(
            T::WHAT,
            format!("crc {got:#010x} != stored {want:#010x}"),
        ));
    }
    Ok(r)
}

fn check_version<T: Versioned>(r: &T) -> Result<()> {
    let v = r.version();
    if v != VERSION {
        return Err(Error::Version {
            what: T::WHAT,
            found: v,
        });
    }
    Ok(())
}

/// Whether every byte of `b` is zero. Whole 4 KiB pieces are OR-ed together without an
/// early exit, which the compiler vectorises: a byte-at-a-time scan of a 1 MiB cluster
/// block's tail cost 0.6 ms, once per cluster an allocating write touches.
pub(crate) fn all_zero(b: &[u8]) -> bool {
    b.chunks(4096)
        .all(|c| c.iter().fold(0u8, |acc, &x| acc | x) == 0)
}

/// Checks a sector record's length, magic, crc and version; `None` for an all-zero
/// sector (never written, which each record reads as its empty value).
fn open_sector<T: Versioned>(b: &[u8]) -> Result<Option<&T>> {
    if b.len() >= SECTOR && b[..SECTOR].iter().all(|&x| x == 0) {
        return Ok(None);
    }
    let r = check_sector::<T>(b)?;
    check_version(r)?;
    Ok(Some(r))
}

/// Block-sized records: crc32 over the block with its crc field zeroed.
fn block_crc(b: &[u8], crc_at: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..crc_at]);
    h.update(&[0; CRC_LEN]);
    h.update(&b[crc_at + CRC_LEN..]);
    h.finalize()
}

fn put_block_crc<T: Layout>(b: &mut [u8]) {
    let c = block_crc(b, T::CRC_AT);
    b[T::CRC_AT..T::CRC_AT + CRC_LEN].copy_from_slice(&c.to_le_bytes());
}

/// A block record's bytes: its header, then zeros up to `bs`.
fn new_block<T: Layout>(bs: usize, head: &T) -> Vec<u8> {
    let mut b = vec![0u8; bs];
    b[..size_of::<T>()].copy_from_slice(head.as_bytes());
    b
}

/// Checks a block record's length, magic, version and crc, and views its header.
fn check_block<T: Versioned>(b: &[u8], bs: usize) -> Result<&T> {
    if b.len() != bs || bs < MIN_BLOCK {
        return Err(Error::corrupt(
            T::WHAT,
            format!("{} bytes, need {bs}", b.len()),
        ));
    }
    let Ok((r, _)) = T::ref_from_prefix(b) else {
        return Err(Error::corrupt(T::WHAT, format!("{} bytes", b.len())));
    };
    if &b[..T::MAGIC.len()] != T::MAGIC {
        return Err(Error::corrupt(T::WHAT, "bad magic"));
    }
    check_version(r)?;
    let want = crc_of(b, T::CRC_AT);
    let got = block_crc(b, T::CRC_AT);
    if want != got {
        return Err(Error::corrupt(
            T::WHAT,
            format!("crc {got:#010x} != stored {want:#010x}"),
        ));
    }
    Ok(r)
}

/// Copies `s` into a fixed, NUL-padded field, cut at the field's size.
fn put_str(field: &mut [u8], s: &str) {
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Reads a NUL-padded field (lossy UTF-8), cut to whole characters within the field's
/// length, so that what it returns encodes back into the field unchanged: invalid bytes
/// become U+FFFD (three bytes each) and would otherwise grow the text past the field, and
/// the next encode would cut it in the middle of a character (found by the
/// vmfs_superblock fuzz target).
fn get_str(field: &[u8]) -> String {
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    let mut s = String::from_utf8_lossy(&field[..end]).into_owned();
    let mut cut = s.len().min(field.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

/// Asserts at compile time that a record layout has the size the format needs and its crc
/// where the shared checks look for it.
macro_rules! assert_layout {
    ($t:ty, size $size:expr) => {
        const _: () = assert!(size_of::<$t>() == $size);
        const _: () =
            assert!(core::mem::offset_of!($t, crc) == <$t as $crate::format::Layout>::CRC_AT);
        const _: () = assert!(core::mem::offset_of!($t, magic) == 0);
    };
}
use assert_layout;

#[cfg(test)]
mod tests;
