//! Inodes: one sector per file or directory, with its block pointers.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{
    assert_layout, open_sector, seal_sector, valid_name, Layout, Versioned, NAME_MAX, SECTOR,
    VERSION16,
};
use crate::error::{Error, Result};

/// Inode kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Unused.
    Free,
    /// Regular file.
    File,
    /// Directory.
    Dir,
}

impl Kind {
    pub(super) fn code(self) -> u8 {
        match self {
            Kind::Free => 0,
            Kind::File => 1,
            Kind::Dir => 2,
        }
    }
    /// From the on-disk code.
    pub fn from_code(c: u8) -> Option<Kind> {
        match c {
            0 => Some(Kind::Free),
            1 => Some(Kind::File),
            2 => Some(Kind::Dir),
            _ => None,
        }
    }
}

/// Direct pointers in an inode.
pub const NDIRECT: usize = 12;

/// An inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// Kind.
    pub kind: Kind,
    /// Number.
    pub ino: u32,
    /// Reuse generation.
    pub generation: u32,
    /// Size in bytes.
    pub size: u64,
    /// Allocated blocks (data + indirect).
    pub blocks: u64,
    /// Parent directory.
    pub parent: u32,
    /// Flags (bit 0: virtual disk descriptor).
    pub flags: u32,
    /// Change counter.
    pub change: u64,
    /// Direct block pointers.
    pub direct: [u32; NDIRECT],
    /// Single, double, triple indirect.
    pub indirect: [u32; 3],
    /// Back reference: the name this inode has in its `parent` directory, empty when
    /// unknown (the root; inodes written before back references). A hint for
    /// `fsck --repair`, which puts an inode whose directory entry was lost back under this
    /// name; the directory entry stays authoritative.
    pub name: String,
}

/// An inode's bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct InodeLayout {
    pub(super) magic: [u8; 4],
    pub(super) version: U16,
    /// [`Kind::code`].
    pub(super) kind: u8,
    pub(super) _pad: u8,
    pub(super) ino: U32,
    pub(super) generation: U32,
    pub(super) size: U64,
    pub(super) blocks: U64,
    pub(super) parent: U32,
    pub(super) flags: U32,
    pub(super) change: U64,
    pub(super) direct: [U32; NDIRECT],
    /// Single, double, triple indirect.
    pub(super) indirect: [U32; 3],
    /// Length of the back-reference name; 0: none.
    pub(super) name_len: u8,
    /// The back-reference name, UTF-8, zero padded.
    pub(super) name: [u8; NAME_MAX],
    pub(super) _reserved: [u8; 144],
    pub(super) crc: U32,
}
assert_layout!(InodeLayout, size SECTOR);

impl Layout for InodeLayout {
    const WHAT: &'static str = "inode";
    const MAGIC: &'static [u8] = b"VIN1";
    const CRC_AT: usize = core::mem::offset_of!(Self, crc);
}

impl Versioned for InodeLayout {
    fn version(&self) -> u32 {
        self.version.get().into()
    }
}

impl InodeLayout {
    /// Inode `ino` with magic and version set, every other field zero.
    pub(super) fn new(ino: u32) -> Self {
        let mut r = Self::new_zeroed();
        r.magic.copy_from_slice(Self::MAGIC);
        r.version.set(VERSION16);
        r.ino.set(ino);
        r
    }
}

impl Inode {
    /// A free inode record.
    pub fn free(ino: u32) -> Self {
        Inode {
            kind: Kind::Free,
            ino,
            generation: 0,
            size: 0,
            blocks: 0,
            parent: 0,
            flags: 0,
            change: 0,
            direct: [0; NDIRECT],
            indirect: [0; 3],
            name: String::new(),
        }
    }

    /// Encodes into one sector.
    pub fn encode(&self) -> [u8; SECTOR] {
        let mut r = InodeLayout::new(self.ino);
        r.kind = self.kind.code();
        r.generation.set(self.generation);
        r.size.set(self.size);
        r.blocks.set(self.blocks);
        r.parent.set(self.parent);
        r.flags.set(self.flags);
        r.change.set(self.change);
        r.direct = self.direct.map(U32::new);
        r.indirect = self.indirect.map(U32::new);
        // A name that is not a valid one (a caller's bug) is left out rather than cut.
        if valid_name(&self.name) {
            r.name_len = self.name.len() as u8;
            r.name[..self.name.len()].copy_from_slice(self.name.as_bytes());
        }
        seal_sector(&r)
    }

    /// Decodes; an all-zero sector is a never-used inode.
    pub fn decode(b: &[u8], ino: u32) -> Result<Inode> {
        const W: &str = InodeLayout::WHAT;
        let Some(r) = open_sector::<InodeLayout>(b)? else {
            return Ok(Inode::free(ino));
        };
        let kind = Kind::from_code(r.kind).ok_or_else(|| Error::corrupt(W, "kind"))?;
        if r.ino.get() != ino {
            return Err(Error::corrupt(
                W,
                format!("number {} at slot {ino}", r.ino.get()),
            ));
        }
        let n = r.name_len as usize;
        let name = match r.name.get(..n).map(std::str::from_utf8) {
            Some(Ok(x)) if n == 0 || valid_name(x) => x.to_string(),
            _ => return Err(Error::corrupt(W, "back-reference name")),
        };
        Ok(Inode {
            kind,
            ino,
            generation: r.generation.get(),
            size: r.size.get(),
            blocks: r.blocks.get(),
            parent: r.parent.get(),
            flags: r.flags.get(),
            change: r.change.get(),
            direct: r.direct.map(|p| p.get()),
            indirect: r.indirect.map(|p| p.get()),
            name,
        })
    }
}
