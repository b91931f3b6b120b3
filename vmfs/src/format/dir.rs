//! Directory blocks: a header, then packed entries. Decoded on every lookup of an
//! uncached directory, so entries are read in place.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{
    assert_layout, check_block, new_block, put_block_crc, Kind, Layout, Versioned, NAME_MAX,
    VERSION16,
};
use crate::error::{Error, Result};

/// A directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode.
    pub ino: u32,
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub name: String,
}

/// A directory block's header; the entries follow it.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct DirHeader {
    pub(super) magic: [u8; 4],
    pub(super) version: U16,
    /// Entries in the block.
    pub(super) count: U16,
    /// Bytes the entries take after the header.
    pub(super) used: U32,
    pub(super) crc: U32,
}
assert_layout!(DirHeader, size 16);

/// Size of the header before the entries.
const HEADER: usize = size_of::<DirHeader>();

impl Layout for DirHeader {
    const WHAT: &'static str = "directory block";
    const MAGIC: &'static [u8] = b"VDR1";
    const CRC_AT: usize = core::mem::offset_of!(Self, crc);
}

impl Versioned for DirHeader {
    fn version(&self) -> u32 {
        self.version.get().into()
    }
}

impl DirHeader {
    /// A header with magic and version set, every other field zero.
    pub(super) fn new() -> Self {
        let mut r = Self::new_zeroed();
        r.magic.copy_from_slice(Self::MAGIC);
        r.version.set(VERSION16);
        r
    }
}

/// One entry's fixed part; its name (`name_len` bytes) follows.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct EntryHeader {
    pub(super) ino: U32,
    /// [`Kind::code`].
    pub(super) kind: u8,
    pub(super) name_len: u8,
}

/// Size of an entry before its name.
const ENTRY_HEADER: usize = size_of::<EntryHeader>();
// A name length is one byte.
const _: () = assert!(NAME_MAX <= u8::MAX as usize);

/// Checks a name.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= NAME_MAX
        && n != "."
        && n != ".."
        && !n.contains('/')
        && !n.contains('\0')
}

/// Bytes an entry takes.
pub fn entry_len(e: &DirEntry) -> usize {
    ENTRY_HEADER + e.name.len()
}

/// Encodes directory entries into a block; `None` if they do not fit.
pub fn encode_dir(bs: usize, entries: &[DirEntry]) -> Option<Vec<u8>> {
    let used: usize = entries.iter().map(entry_len).sum();
    if HEADER + used > bs || entries.len() > u16::MAX as usize {
        return None;
    }
    let mut h = DirHeader::new();
    h.count.set(entries.len() as u16);
    h.used.set(used as u32);
    let mut b = new_block(bs, &h);
    let mut o = HEADER;
    for e in entries {
        let eh = EntryHeader {
            ino: U32::new(e.ino),
            kind: e.kind.code(),
            name_len: e.name.len() as u8,
        };
        b[o..o + ENTRY_HEADER].copy_from_slice(eh.as_bytes());
        b[o + ENTRY_HEADER..o + entry_len(e)].copy_from_slice(e.name.as_bytes());
        o += entry_len(e);
    }
    put_block_crc::<DirHeader>(&mut b);
    Some(b)
}

/// Decodes a directory block.
pub fn decode_dir(b: &[u8], bs: usize) -> Result<Vec<DirEntry>> {
    const W: &str = DirHeader::WHAT;
    let h = check_block::<DirHeader>(b, bs)?;
    let count = h.count.get() as usize;
    let used = h.used.get() as usize;
    if HEADER + used > bs {
        return Err(Error::corrupt(W, "used bytes"));
    }
    // Entries lie in `b[HEADER..HEADER + used]`; `o` is the offset into that.
    let area = &b[HEADER..HEADER + used];
    let mut out = Vec::with_capacity(count.min(bs / (ENTRY_HEADER + 1)));
    let mut o = 0;
    for _ in 0..count {
        let Ok((e, rest)) = EntryHeader::ref_from_prefix(&area[o..]) else {
            return Err(Error::corrupt(W, "entry overruns"));
        };
        let ino = e.ino.get();
        let kind = Kind::from_code(e.kind).ok_or_else(|| Error::corrupt(W, "kind"))?;
        let n = e.name_len as usize;
        let Some(raw) = rest.get(..n) else {
            return Err(Error::corrupt(W, "name overruns"));
        };
        let name = std::str::from_utf8(raw)
            .map_err(|_| Error::corrupt(W, "name not utf-8"))?
            .to_string();
        if !valid_name(&name) || ino == 0 || kind == Kind::Free {
            return Err(Error::corrupt(W, format!("bad entry {name:?}")));
        }
        out.push(DirEntry { ino, kind, name });
        o += ENTRY_HEADER + n;
    }
    if o != used {
        return Err(Error::corrupt(W, "used bytes disagree with the entries"));
    }
    Ok(out)
}
