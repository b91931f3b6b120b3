//! Lock records: one sector per lock, changed only by atomic compare-and-write.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{
    assert_layout, open_sector, seal_sector, Layout, Versioned, MAX_HOSTS, SECTOR, VERSION16,
};
use crate::error::{Error, Result};

/// Lock modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// One holder that reads and writes (a running VM's disk).
    Exclusive,
    /// Any number of readers, no writer.
    SharedRead,
    /// Any number of writers into already-allocated blocks (clustered applications).
    MultiWriter,
}

impl LockMode {
    fn code(self) -> u8 {
        match self {
            LockMode::Exclusive => 1,
            LockMode::SharedRead => 2,
            LockMode::MultiWriter => 3,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(LockMode::Exclusive),
            2 => Some(LockMode::SharedRead),
            3 => Some(LockMode::MultiWriter),
            _ => None,
        }
    }
}

/// A lock record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRecord {
    /// Index (self-identification).
    pub index: u64,
    /// Mode while held; `None` when free.
    pub mode: Option<LockMode>,
    /// Change counter.
    pub seq: u64,
    /// Holder bitmask.
    pub holders: u64,
    /// Generation of each holder.
    pub gens: [u32; 64],
    /// Journal locks: last generation whose journal was replayed.
    pub aux: u32,
    /// Journal locks: every transaction of the holder up to it is durable in place.
    pub applied_seq: u64,
    /// (host, generation, seq): the last releaser's journal held transactions up to `seq`
    /// that were written in place but not yet flushed; the next other host to take the
    /// lock flushes and advances that journal's `applied_seq` before changing anything.
    pub dirty: Option<(u32, u32, u64)>,
}

/// A lock record's bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct LockLayout {
    pub(super) magic: [u8; 4],
    pub(super) version: U16,
    /// 0 free, then [`LockMode::code`].
    pub(super) mode: u8,
    pub(super) _pad: u8,
    pub(super) index: U64,
    pub(super) seq: U64,
    pub(super) holders: U64,
    pub(super) gens: [U32; 64],
    pub(super) aux: U32,
    pub(super) _pad2: [u8; 4],
    pub(super) applied_seq: U64,
    /// Host + 1 of the dirty mark; 0: none.
    pub(super) dirty_host: U32,
    pub(super) dirty_gen: U32,
    pub(super) dirty_seq: U64,
    pub(super) _reserved: [u8; 188],
    pub(super) crc: U32,
}
assert_layout!(LockLayout, size SECTOR);

impl Layout for LockLayout {
    const WHAT: &'static str = "lock record";
    const MAGIC: &'static [u8] = b"VLK1";
    const CRC_AT: usize = core::mem::offset_of!(Self, crc);
}

impl Versioned for LockLayout {
    fn version(&self) -> u32 {
        self.version.get().into()
    }
}

impl LockLayout {
    /// A record of lock `index` with magic and version set, every other field zero.
    pub(super) fn new(index: u64) -> Self {
        let mut r = Self::new_zeroed();
        r.magic.copy_from_slice(Self::MAGIC);
        r.version.set(VERSION16);
        r.index.set(index);
        r
    }
}

impl LockRecord {
    /// A free lock.
    pub fn free(index: u64) -> Self {
        LockRecord {
            index,
            mode: None,
            seq: 0,
            holders: 0,
            gens: [0; 64],
            aux: 0,
            applied_seq: 0,
            dirty: None,
        }
    }

    /// Holders as (host, generation).
    pub fn holder_list(&self) -> Vec<(u32, u32)> {
        (0..64u32)
            .filter(|h| self.holders & (1 << h) != 0)
            .map(|h| (h, self.gens[h as usize]))
            .collect()
    }

    /// Encodes into one sector (a free lock with seq 0 encodes as zeros).
    pub fn encode(&self) -> [u8; SECTOR] {
        if self.mode.is_none()
            && self.seq == 0
            && self.holders == 0
            && self.aux == 0
            && self.applied_seq == 0
            && self.dirty.is_none()
            && self.gens.iter().all(|&g| g == 0)
        {
            return [0u8; SECTOR];
        }
        let mut r = LockLayout::new(self.index);
        r.mode = self.mode.map_or(0, LockMode::code);
        r.seq.set(self.seq);
        r.holders.set(self.holders);
        r.gens = self.gens.map(U32::new);
        r.aux.set(self.aux);
        r.applied_seq.set(self.applied_seq);
        if let Some((h, g, seq)) = self.dirty {
            r.dirty_host.set(h + 1);
            r.dirty_gen.set(g);
            r.dirty_seq.set(seq);
        }
        seal_sector(&r)
    }

    /// Decodes; an all-zero sector is a free lock.
    pub fn decode(b: &[u8], index: u64) -> Result<LockRecord> {
        const W: &str = LockLayout::WHAT;
        let Some(r) = open_sector::<LockLayout>(b)? else {
            return Ok(LockRecord::free(index));
        };
        if r.index.get() != index {
            return Err(Error::corrupt(
                W,
                format!("index {} at slot {index}", r.index.get()),
            ));
        }
        let mode = match r.mode {
            0 => None,
            c => Some(LockMode::from_code(c).ok_or_else(|| Error::corrupt(W, "mode"))?),
        };
        let holders = r.holders.get();
        if mode.is_none() != (holders == 0)
            || (mode == Some(LockMode::Exclusive) && holders.count_ones() != 1)
        {
            return Err(Error::corrupt(W, "mode and holders disagree"));
        }
        let dirty = match r.dirty_host.get() {
            0 => None,
            h if h <= MAX_HOSTS => Some((h - 1, r.dirty_gen.get(), r.dirty_seq.get())),
            _ => return Err(Error::corrupt(W, "dirty host")),
        };
        Ok(LockRecord {
            index,
            mode,
            seq: r.seq.get(),
            holders,
            gens: r.gens.map(|g| g.get()),
            aux: r.aux.get(),
            applied_seq: r.applied_seq.get(),
            dirty,
        })
    }
}
