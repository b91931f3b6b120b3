//! Heartbeat slots: one sector per host, renewed while the host is mounted.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{
    assert_layout, get_str, open_sector, put_str, seal_sector, Layout, Versioned, SECTOR, VERSION16,
};
use crate::error::{Error, Result};

/// A heartbeat slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatSlot {
    /// Mounted.
    pub live: bool,
    /// Host id.
    pub host: u32,
    /// Mount generation.
    pub generation: u32,
    /// Renewal counter.
    pub counter: u64,
    /// Informational renewal time (caller's clock).
    pub stamp_ms: u64,
    /// Informational pid.
    pub pid: u32,
    /// Informational name.
    pub name: String,
}

/// A heartbeat slot's bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct HeartbeatLayout {
    pub(super) magic: [u8; 4],
    pub(super) version: U16,
    /// 0 free, 1 live.
    pub(super) state: u8,
    pub(super) _pad: u8,
    pub(super) host: U32,
    pub(super) generation: U32,
    pub(super) counter: U64,
    pub(super) stamp_ms: U64,
    pub(super) pid: U32,
    pub(super) name: [u8; 32],
    pub(super) _reserved: [u8; 440],
    pub(super) crc: U32,
}
assert_layout!(HeartbeatLayout, size SECTOR);

impl Layout for HeartbeatLayout {
    const WHAT: &'static str = "heartbeat slot";
    const MAGIC: &'static [u8] = b"VHB1";
    const CRC_AT: usize = core::mem::offset_of!(Self, crc);
}

impl Versioned for HeartbeatLayout {
    fn version(&self) -> u32 {
        self.version.get().into()
    }
}

impl HeartbeatLayout {
    /// A slot of `host` with magic and version set, every other field zero.
    pub(super) fn new(host: u32) -> Self {
        let mut r = Self::new_zeroed();
        r.magic.copy_from_slice(Self::MAGIC);
        r.version.set(VERSION16);
        r.host.set(host);
        r
    }
}

impl HeartbeatSlot {
    /// Encodes into one sector.
    pub fn encode(&self) -> [u8; SECTOR] {
        let mut r = HeartbeatLayout::new(self.host);
        r.state = u8::from(self.live);
        r.generation.set(self.generation);
        r.counter.set(self.counter);
        r.stamp_ms.set(self.stamp_ms);
        r.pid.set(self.pid);
        put_str(&mut r.name, &self.name);
        seal_sector(&r)
    }

    /// Decodes; an all-zero sector is a never-used slot.
    pub fn decode(b: &[u8], host: u32) -> Result<HeartbeatSlot> {
        let Some(r) = open_sector::<HeartbeatLayout>(b)? else {
            return Ok(HeartbeatSlot {
                host,
                ..HeartbeatSlot::default()
            });
        };
        if r.state > 1 || r.host.get() != host {
            return Err(Error::corrupt(HeartbeatLayout::WHAT, "state or host id"));
        }
        Ok(HeartbeatSlot {
            live: r.state == 1,
            host,
            generation: r.generation.get(),
            counter: r.counter.get(),
            stamp_ms: r.stamp_ms.get(),
            pid: r.pid.get(),
            name: get_str(&r.name),
        })
    }
}
