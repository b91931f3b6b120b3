//! The Disk Paxos on-disk records: a host's proposal sector, its learned sector, and
//! the area header. Layouts are documented byte by byte in the crate README
//! ("Locks without compare-and-write"); the offsets below are the only copy of them.

use crate::error::{Error, Result};

/// Sector size (a record is one sector; sector writes are assumed atomic).
pub const SECTOR: usize = 512;
/// Bytes of a host's share of one covered sector's area: proposal, learned and
/// decisions sector.
pub const HOST_BYTES: u64 = 3 * SECTOR as u64;
/// Decisions a host's decisions sector remembers.
pub const DECISIONS_MAX: usize = (CRC_AT - D_LIST_AT) / D_ENTRY;
/// Largest value image after its longest run of zeros is cut out.
pub const VALUE_MAX: usize = SECTOR - VALUE_AT - 4;

const PROPOSAL_MAGIC: &[u8; 8] = b"VMFSPXP1";
const LEARNED_MAGIC: &[u8; 8] = b"VMFSPXL1";
const HEADER_MAGIC: &[u8; 8] = b"VMFSPXH1";
const DECISIONS_MAGIC: &[u8; 8] = b"VMFSPXD1";
const VERSION: u16 = 1;

// Shared prefix of proposal and learned sectors.
const MAGIC_AT: usize = 0; // [u8; 8]
const VERSION_AT: usize = 8; // u16
const HOST_AT: usize = 10; // u16: the host that wrote the sector
const INSTANCE_AT: usize = 16; // u64
const MBAL_AT: usize = 24; // u64 (proposal only)
const BAL_AT: usize = 32; // u64 (proposal only)
const OWNER_AT: usize = 40; // u32: host + 1 whose proposal the value is; 0 none
const NONCE_AT: usize = 48; // u64: which compare-and-write of the owner
const ZRUN_AT: usize = 56; // u16: where the value's cut-out run of zeros starts
const ZLEN_AT: usize = 58; // u16: its length
const VLEN_AT: usize = 60; // u16: length of the whole value image
const VALUE_AT: usize = 64; // value bytes without the zero run
const CRC_AT: usize = SECTOR - 4; // u32: crc32 of bytes 0..508

// Decisions sector: after the prefix (magic, version, host), a count and the list.
const D_COUNT_AT: usize = 16; // u16
const D_LIST_AT: usize = 24; // DECISIONS_MAX × (instance u64, owner u32, nonce u64)
const D_ENTRY: usize = 20;

// Header sector (the last sector of the inner device).
const H_HOSTS_AT: usize = 16; // u32
const H_COVER_AT: usize = 24; // u64: covered bytes [0, cover)
const H_AREA_AT: usize = 32; // u64: offset of the first area
const H_EXPOSED_AT: usize = 40; // u64: length of the device the volume sees

/// A value proposed or decided for one instance, with whose proposal it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// Host + 1 that proposed it (0: the value of instance 0, the sector's home bytes).
    pub owner: u32,
    /// Which compare-and-write of that host.
    pub nonce: u64,
    /// The sector image.
    pub bytes: Vec<u8>,
}

/// A host's proposal sector (Gafni–Lamport's `dblock`: mbal, bal, inp) for one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The instance (the covered sector's n-th change) it is about.
    pub instance: u64,
    /// Highest ballot this host has started for the instance.
    pub mbal: u64,
    /// Ballot in which `inp` was accepted; 0 when nothing is accepted.
    pub bal: u64,
    /// The accepted (or, with `bal` 0, the intended) value.
    pub inp: Value,
}

/// A host's learned sector: the newest instance it knows decided, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    /// The decided instance.
    pub instance: u64,
    /// Its value.
    pub value: Value,
}

/// Who proposed the value an instance decided: what a proposer whose value may have been
/// chosen looks for after the sector moved on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The instance.
    pub instance: u64,
    /// Host + 1 whose value it decided.
    pub owner: u32,
    /// Which compare-and-write of that host.
    pub nonce: u64,
}

/// Encodes a host's newest decisions (at most [`DECISIONS_MAX`], newest last).
pub fn encode_decisions(host: u32, list: &[Decision]) -> [u8; SECTOR] {
    let mut b = [0u8; SECTOR];
    b[MAGIC_AT..MAGIC_AT + 8].copy_from_slice(DECISIONS_MAGIC);
    put_u16(&mut b, VERSION_AT, VERSION);
    put_u16(&mut b, HOST_AT, host as u16);
    let list = &list[list.len().saturating_sub(DECISIONS_MAX)..];
    put_u16(&mut b, D_COUNT_AT, list.len() as u16);
    for (i, d) in list.iter().enumerate() {
        let at = D_LIST_AT + i * D_ENTRY;
        put_u64(&mut b, at, d.instance);
        put_u32(&mut b, at + 8, d.owner);
        put_u64(&mut b, at + 12, d.nonce);
    }
    seal(&mut b);
    b
}

/// Decodes untrusted bytes; an empty list for a never-written (zero) sector.
pub fn decode_decisions(b: &[u8]) -> Result<Vec<Decision>> {
    const WHAT: &str = "paxos decisions";
    let Some(b) = open(b, DECISIONS_MAGIC, WHAT)? else {
        return Ok(Vec::new());
    };
    let n = u16_at(b, D_COUNT_AT) as usize;
    if n > DECISIONS_MAX {
        return Err(Error::corrupt(WHAT, format!("{n} entries")));
    }
    Ok((0..n)
        .map(|i| {
            let at = D_LIST_AT + i * D_ENTRY;
            Decision {
                instance: u64_at(b, at),
                owner: u32_at(b, at + 8),
                nonce: u64_at(b, at + 12),
            }
        })
        .collect())
}

/// The area header: where the areas are and how many hosts take part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Hosts that take part (ids `0..hosts`).
    pub hosts: u32,
    /// Bytes `[0, cover)` whose sectors change only by Disk Paxos.
    pub cover: u64,
    /// Offset of the area of covered sector 0.
    pub area: u64,
    /// Length of the device the volume sees.
    pub exposed: u64,
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut a = [0; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The longest run of zero bytes in `v` as (start, length).
fn longest_zero_run(v: &[u8]) -> (usize, usize) {
    let (mut best, mut start) = ((0, 0), None);
    for (i, &x) in v.iter().enumerate() {
        match (x, start) {
            (0, None) => start = Some(i),
            (0, Some(_)) => {}
            (_, Some(s)) => {
                if i - s > best.1 {
                    best = (s, i - s);
                }
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        if v.len() - s > best.1 {
            best = (s, v.len() - s);
        }
    }
    best
}

/// Whether a value image fits a proposal sector (records keep most of their sector zero).
pub fn value_fits(v: &[u8]) -> bool {
    v.len() <= SECTOR && v.len() - longest_zero_run(v).1 <= VALUE_MAX
}

fn seal(b: &mut [u8; SECTOR]) {
    let c = crc32fast::hash(&b[..CRC_AT]);
    put_u32(b, CRC_AT, c);
}

fn open<'a>(b: &'a [u8], magic: &[u8; 8], what: &'static str) -> Result<Option<&'a [u8]>> {
    if b.len() != SECTOR {
        return Err(Error::corrupt(
            what,
            format!("{} bytes, need {SECTOR}", b.len()),
        ));
    }
    if b.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    if &b[MAGIC_AT..MAGIC_AT + 8] != magic {
        return Err(Error::corrupt(what, "bad magic"));
    }
    let (want, got) = (u32_at(b, CRC_AT), crc32fast::hash(&b[..CRC_AT]));
    if want != got {
        return Err(Error::corrupt(
            what,
            format!("crc {got:#010x} != stored {want:#010x}"),
        ));
    }
    let v = u16_at(b, VERSION_AT);
    if v != VERSION {
        return Err(Error::Version {
            what,
            found: v as u32,
        });
    }
    Ok(Some(b))
}

fn encode_common(magic: &[u8; 8], host: u32, instance: u64, v: &Value) -> Result<[u8; SECTOR]> {
    if !value_fits(&v.bytes) {
        return Err(Error::corrupt(
            "paxos value",
            format!("{} bytes do not fit a proposal sector", v.bytes.len()),
        ));
    }
    let mut b = [0u8; SECTOR];
    b[MAGIC_AT..MAGIC_AT + 8].copy_from_slice(magic);
    put_u16(&mut b, VERSION_AT, VERSION);
    put_u16(&mut b, HOST_AT, host as u16);
    put_u64(&mut b, INSTANCE_AT, instance);
    put_u32(&mut b, OWNER_AT, v.owner);
    put_u64(&mut b, NONCE_AT, v.nonce);
    let (zs, zl) = longest_zero_run(&v.bytes);
    put_u16(&mut b, ZRUN_AT, zs as u16);
    put_u16(&mut b, ZLEN_AT, zl as u16);
    put_u16(&mut b, VLEN_AT, v.bytes.len() as u16);
    let kept = v.bytes[..zs].iter().chain(&v.bytes[zs + zl..]);
    for (d, s) in b[VALUE_AT..].iter_mut().zip(kept) {
        *d = *s;
    }
    Ok(b)
}

fn decode_value(b: &[u8], what: &'static str) -> Result<Value> {
    let (zs, zl, len) = (
        u16_at(b, ZRUN_AT) as usize,
        u16_at(b, ZLEN_AT) as usize,
        u16_at(b, VLEN_AT) as usize,
    );
    if len > SECTOR || zs > len || zl > len - zs || len - zl > VALUE_MAX {
        return Err(Error::corrupt(
            what,
            format!("value run {zs}+{zl} of {len} bytes"),
        ));
    }
    let kept = &b[VALUE_AT..VALUE_AT + (len - zl)];
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(&kept[..zs]);
    bytes.resize(zs + zl, 0);
    bytes.extend_from_slice(&kept[zs..]);
    Ok(Value {
        owner: u32_at(b, OWNER_AT),
        nonce: u64_at(b, NONCE_AT),
        bytes,
    })
}

impl Proposal {
    /// The sector image, written by `host`.
    pub fn encode(&self, host: u32) -> Result<[u8; SECTOR]> {
        let mut b = encode_common(PROPOSAL_MAGIC, host, self.instance, &self.inp)?;
        put_u64(&mut b, MBAL_AT, self.mbal);
        put_u64(&mut b, BAL_AT, self.bal);
        seal(&mut b);
        Ok(b)
    }
    /// Decodes untrusted bytes; `None` for a never-written (zero) sector.
    pub fn decode(b: &[u8]) -> Result<Option<Proposal>> {
        const WHAT: &str = "paxos proposal";
        let Some(b) = open(b, PROPOSAL_MAGIC, WHAT)? else {
            return Ok(None);
        };
        Ok(Some(Proposal {
            instance: u64_at(b, INSTANCE_AT),
            mbal: u64_at(b, MBAL_AT),
            bal: u64_at(b, BAL_AT),
            inp: decode_value(b, WHAT)?,
        }))
    }
}

impl Learned {
    /// The sector image, written by `host`.
    pub fn encode(&self, host: u32) -> Result<[u8; SECTOR]> {
        let mut b = encode_common(LEARNED_MAGIC, host, self.instance, &self.value)?;
        seal(&mut b);
        Ok(b)
    }
    /// Decodes untrusted bytes; `None` for a never-written (zero) sector.
    pub fn decode(b: &[u8]) -> Result<Option<Learned>> {
        const WHAT: &str = "paxos learned";
        let Some(b) = open(b, LEARNED_MAGIC, WHAT)? else {
            return Ok(None);
        };
        Ok(Some(Learned {
            instance: u64_at(b, INSTANCE_AT),
            value: decode_value(b, WHAT)?,
        }))
    }
}

/// Whether `b` starts like a header (a device without one holds anything there).
pub fn looks_like_header(b: &[u8]) -> bool {
    b.len() >= 8 && &b[..8] == HEADER_MAGIC
}

impl Header {
    /// The sector image.
    pub fn encode(&self) -> [u8; SECTOR] {
        let mut b = [0u8; SECTOR];
        b[MAGIC_AT..MAGIC_AT + 8].copy_from_slice(HEADER_MAGIC);
        put_u16(&mut b, VERSION_AT, VERSION);
        put_u32(&mut b, H_HOSTS_AT, self.hosts);
        put_u64(&mut b, H_COVER_AT, self.cover);
        put_u64(&mut b, H_AREA_AT, self.area);
        put_u64(&mut b, H_EXPOSED_AT, self.exposed);
        seal(&mut b);
        b
    }
    /// Decodes untrusted bytes; `None` when there is no header (a zero sector).
    pub fn decode(b: &[u8]) -> Result<Option<Header>> {
        const WHAT: &str = "paxos header";
        let Some(b) = open(b, HEADER_MAGIC, WHAT)? else {
            return Ok(None);
        };
        let h = Header {
            hosts: u32_at(b, H_HOSTS_AT),
            cover: u64_at(b, H_COVER_AT),
            area: u64_at(b, H_AREA_AT),
            exposed: u64_at(b, H_EXPOSED_AT),
        };
        let area_len = (h.cover / SECTOR as u64)
            .checked_mul(h.hosts as u64)
            .and_then(|n| n.checked_mul(HOST_BYTES));
        let ok = (1..=crate::format::MAX_HOSTS).contains(&h.hosts)
            && h.cover % SECTOR as u64 == 0
            && h.cover <= h.exposed
            && h.exposed <= h.area
            && area_len.and_then(|n| h.area.checked_add(n)).is_some();
        if !ok {
            return Err(Error::corrupt(WHAT, format!("geometry {h:?}")));
        }
        Ok(Some(h))
    }
}

/// Which Disk Paxos sector [`sealed`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectorKind {
    /// A proposal sector.
    Proposal,
    /// A learned sector.
    Learned,
    /// A decisions sector.
    Decisions,
    /// The area header.
    Header,
}

/// `data` cut or zero-padded to a sector with `kind`'s magic, version and a valid crc, so
/// that fuzzers and tests reach the field checks behind them.
pub fn sealed(kind: SectorKind, data: &[u8]) -> [u8; SECTOR] {
    let mut b = [0u8; SECTOR];
    for (d, s) in b.iter_mut().zip(data) {
        *d = *s;
    }
    let magic = match kind {
        SectorKind::Proposal => PROPOSAL_MAGIC,
        SectorKind::Learned => LEARNED_MAGIC,
        SectorKind::Decisions => DECISIONS_MAGIC,
        SectorKind::Header => HEADER_MAGIC,
    };
    b[MAGIC_AT..MAGIC_AT + 8].copy_from_slice(magic);
    put_u16(&mut b, VERSION_AT, VERSION);
    seal(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(seed: u8) -> Vec<u8> {
        let mut v = vec![0u8; SECTOR];
        v[..8].copy_from_slice(b"VMFSLOCK");
        v[40] = seed;
        v[508..].copy_from_slice(&[1, 2, 3, seed]);
        v
    }

    #[test]
    fn a_lock_record_image_round_trips() {
        let p = Proposal {
            instance: 7,
            mbal: 65,
            bal: 65,
            inp: Value {
                owner: 3,
                nonce: 9,
                bytes: record(5),
            },
        };
        assert_eq!(Proposal::decode(&p.encode(2).unwrap()).unwrap(), Some(p));
        assert_eq!(Proposal::decode(&[0; SECTOR]).unwrap(), None);
    }

    #[test]
    fn decisions_keep_the_newest() {
        let list: Vec<_> = (0..40u64)
            .map(|i| Decision {
                instance: i,
                owner: 2,
                nonce: i * 3,
            })
            .collect();
        let got = decode_decisions(&encode_decisions(1, &list)).unwrap();
        assert_eq!(got, list[40 - DECISIONS_MAX..]);
        assert!(decode_decisions(&[0; SECTOR]).unwrap().is_empty());
    }

    #[test]
    fn a_value_without_a_long_zero_run_is_refused() {
        let v = Value {
            owner: 1,
            nonce: 1,
            bytes: vec![0xAB; SECTOR],
        };
        assert!(!value_fits(&v.bytes));
        let l = Learned {
            instance: 1,
            value: v,
        };
        assert!(matches!(l.encode(0), Err(Error::Corrupt { .. })));
    }

    proptest! {
        #[test]
        fn values_round_trip(bytes in proptest::collection::vec(any::<u8>(), 1..=SECTOR),
                             zero_from in 0usize..SECTOR, zeros in 0usize..SECTOR) {
            let mut bytes = bytes;
            let end = (zero_from + zeros).min(bytes.len());
            let start = zero_from.min(end);
            bytes[start..end].fill(0);
            let l = Learned { instance: 3, value: Value { owner: 2, nonce: 4, bytes } };
            match l.encode(1) {
                Ok(b) => prop_assert_eq!(Learned::decode(&b).unwrap(), Some(l)),
                Err(_) => prop_assert!(!value_fits(&l.value.bytes)),
            }
        }

        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Proposal::decode(&b);
            let _ = Learned::decode(&b);
            let _ = Header::decode(&b);
            let _ = decode_decisions(&b);
        }

        #[test]
        fn sealed_garbage_never_panics(b in proptest::collection::vec(any::<u8>(), SECTOR)) {
            let _ = Proposal::decode(&sealed(SectorKind::Proposal, &b));
            let _ = Learned::decode(&sealed(SectorKind::Learned, &b));
            let _ = decode_decisions(&sealed(SectorKind::Decisions, &b));
            let _ = Header::decode(&sealed(SectorKind::Header, &b));
        }
    }
}
