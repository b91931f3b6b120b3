//! Locks without compare-and-write: Disk Paxos over plain sector reads and writes.
//!
//! [`PaxosDevice`] wraps a device that has no atomic compare-and-write (an NBD export,
//! many iSCSI targets, a shared virtual disk) and gives it one, for the sectors where
//! vmfs keeps its heartbeat slots and lock records: every compare-and-write of such a
//! sector is decided by single-disk Disk Paxos (Gafni and Lamport; the algorithm of
//! sanlock's paxos leases) among the hosts of the volume, using only reads, writes and
//! flushes of sectors. The lock layer above is unchanged: it sees a device whose
//! `compare_and_write` is atomic and durable, which is all it relies on. The heartbeat
//! slots, renewed by that compare-and-write and judged by observe-and-wait, are the delta
//! leases. The on-disk layout and the argument for why two hosts never both win are in
//! the crate README ("Locks without compare-and-write").
//!
//! Choosing it: [`crate::Volume::mkfs_without_ats`] formats the Disk Paxos area at the
//! end of the device, then the volume in front of it; [`open_for_host`] finds that area
//! (or its absence) and gives each host the device to mount.
//!
//! ```
//! use std::sync::Arc;
//! use vinfra_vmfs::{paxos, BlockDevice, Cas, MemDevice, MonotonicClock};
//!
//! let inner: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(1 << 20));
//! paxos::PaxosDevice::format(inner.as_ref(), 2, 4096)?; // 2 hosts, first 8 sectors
//! let clock = Arc::new(MonotonicClock::new());
//! let a = paxos::PaxosDevice::open(inner.clone(), 0, clock.clone())?;
//! let b = paxos::PaxosDevice::open(inner, 1, clock)?;
//! // Values are sector images that are mostly zeros, as vmfs's records are.
//! let (free, mut mine, mut theirs) = (vec![0u8; 512], vec![0u8; 512], vec![0u8; 512]);
//! mine[..4].copy_from_slice(b"mine");
//! theirs[..6].copy_from_slice(b"theirs");
//! assert_eq!(a.compare_and_write(512, &free, &mine)?, Cas::Written);
//! assert_eq!(b.compare_and_write(512, &free, &theirs)?, Cas::Mismatch(mine));
//! # Ok::<(), vinfra_vmfs::Error>(())
//! ```

pub mod ballot;
pub mod block;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clock::Clock;
use crate::device::{BlockDevice, Cas};
use crate::error::{Error, Result};
use ballot::{Action, HostSectors, Outcome, Proposer};
use block::{decode_decisions, encode_decisions};
use block::{Header, Learned, Proposal, Value, HOST_BYTES, SECTOR};

/// Why a Disk Paxos device refused (the source of an [`Error::Io`]; see [`paxos_error`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PaxosError {
    /// A compare-and-write outside the covered sectors, or not one whole sector.
    #[error(
        "compare_and_write of {len} bytes at {offset} outside the Disk Paxos sectors [0, {cover})"
    )]
    NotCovered {
        /// Byte offset asked for.
        offset: u64,
        /// Length asked for.
        len: usize,
        /// End of the covered bytes.
        cover: u64,
    },
    /// A host id that has no sectors in the areas.
    #[error("host {host} is not among the {hosts} Disk Paxos hosts")]
    Host {
        /// The id.
        host: u32,
        /// Hosts the areas were formatted for.
        hosts: u32,
    },
    /// The device has no Disk Paxos header.
    #[error("no Disk Paxos area on this device")]
    NotFormatted,
    /// The device is too small for the areas asked for.
    #[error("device of {len} bytes too small for {need} bytes of Disk Paxos area")]
    TooSmall {
        /// Device length.
        len: u64,
        /// Bytes the areas and header need.
        need: u64,
    },
    /// The areas sit at the end of the device: it cannot be resized.
    #[error("a Disk Paxos device cannot be resized")]
    Resize,
    /// A value image that does not fit a proposal sector.
    #[error("a {0}-byte value does not fit a Disk Paxos sector")]
    ValueTooLarge(usize),
}

fn paxos_io(op: &'static str, offset: u64, e: PaxosError) -> Error {
    Error::Io {
        op,
        offset,
        source: std::io::Error::other(e),
    }
}

/// The [`PaxosError`] inside an error, if it is one.
pub fn paxos_error(e: &Error) -> Option<&PaxosError> {
    match e {
        Error::Io { source, .. } => source
            .get_ref()
            .and_then(|s| s.downcast_ref::<PaxosError>()),
        _ => None,
    }
}

/// I/Os of one compare-and-write (what the bench reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CasStats {
    /// Reads (one per area read, one per home read).
    pub reads: u64,
    /// Writes.
    pub writes: u64,
    /// Flushes.
    pub flushes: u64,
}

/// A device whose compare-and-write of covered sectors runs Disk Paxos (module docs).
#[derive(Debug)]
pub struct PaxosDevice {
    inner: Arc<dyn BlockDevice>,
    host: u32,
    header: Header,
    clock: Arc<dyn Clock>,
    /// Newest decided instance and value known per covered sector.
    known: Mutex<HashMap<u64, (u64, Value)>>,
    /// This host's own sectors of each covered sector's area, as its last
    /// compare-and-write there left them (taken out while one runs, put back only when it
    /// ends without an error, so that an interrupted one leaves no stale entry).
    own: Mutex<HashMap<u64, HostSectors>>,
    /// One compare-and-write of this host per covered sector at a time (it has one
    /// proposal sector per area), striped so that a heartbeat renewal never waits for a
    /// contended lock record of the same host unless they share a stripe.
    turns: Vec<Mutex<()>>,
    /// I/Os of every compare-and-write so far.
    total: Mutex<CasStats>,
}

/// Stripes of the per-sector turn locks.
const TURN_STRIPES: usize = 64;

/// Where the header lives: the last sector of the inner device.
fn header_at(len: u64) -> Option<u64> {
    len.checked_sub(SECTOR as u64)
}

impl PaxosDevice {
    /// Bytes of area `hosts` hosts need to cover `[0, cover)`.
    pub fn area_len(hosts: u32, cover: u64) -> u64 {
        cover.div_ceil(SECTOR as u64) * hosts as u64 * HOST_BYTES
    }

    /// Writes empty areas for `hosts` hosts covering `[0, cover)` (rounded up to a sector)
    /// and the header at the end of `inner`; what comes before the areas is the device the
    /// volume sees. Erases any earlier Disk Paxos history.
    pub fn format(inner: &dyn BlockDevice, hosts: u32, cover: u64) -> Result<Header> {
        let max = crate::format::MAX_HOSTS;
        if hosts == 0 || hosts > max {
            return Err(paxos_io(
                "format",
                0,
                PaxosError::Host {
                    host: hosts,
                    hosts: max,
                },
            ));
        }
        let cover = cover.div_ceil(SECTOR as u64) * SECTOR as u64;
        let len = inner.len()?;
        let need = Self::area_len(hosts, cover) + 4096;
        let area = len
            .checked_sub(need)
            .map(|a| a / 4096 * 4096)
            .filter(|&a| a >= cover);
        let Some(area) = area else {
            return Err(paxos_io(
                "format",
                0,
                PaxosError::TooSmall {
                    len,
                    need: need + cover,
                },
            ));
        };
        let h = Header {
            hosts,
            cover,
            area,
            exposed: area,
        };
        let zero = vec![0u8; 1 << 20];
        let end = area + Self::area_len(hosts, cover);
        let mut o = area;
        while o < end {
            let n = ((end - o) as usize).min(zero.len());
            inner.write_at(&zero[..n], o)?;
            o += n as u64;
        }
        inner.flush()?;
        let at = header_at(len).unwrap_or(0);
        inner.write_at(&h.encode(), at)?;
        inner.flush()?;
        Ok(h)
    }

    /// Reads the header, if the device has one.
    pub fn header(inner: &dyn BlockDevice) -> Result<Option<Header>> {
        let len = inner.len()?;
        let Some(at) = header_at(len) else {
            return Ok(None);
        };
        let mut b = [0u8; SECTOR];
        inner.read_at(&mut b, at)?;
        if !block::looks_like_header(&b) {
            return Ok(None);
        }
        let h = Header::decode(&b).map_err(|e| e.at(format!("byte {at}")))?;
        if let Some(h) = h {
            let end = h.area + Self::area_len(h.hosts, h.cover);
            if end > at {
                return Err(Error::corrupt(
                    "paxos header",
                    format!("areas end at {end}, past {at}"),
                ));
            }
        }
        Ok(h)
    }

    /// The device host `host` uses on a formatted `inner`.
    pub fn open(inner: Arc<dyn BlockDevice>, host: u32, clock: Arc<dyn Clock>) -> Result<Self> {
        let Some(header) = Self::header(inner.as_ref())? else {
            return Err(paxos_io("open", 0, PaxosError::NotFormatted));
        };
        if host >= header.hosts {
            return Err(paxos_io(
                "open",
                0,
                PaxosError::Host {
                    host,
                    hosts: header.hosts,
                },
            ));
        }
        Ok(PaxosDevice {
            inner,
            host,
            header,
            clock,
            known: Mutex::new(HashMap::new()),
            own: Mutex::new(HashMap::new()),
            turns: (0..TURN_STRIPES).map(|_| Mutex::new(())).collect(),
            total: Mutex::new(CasStats::default()),
        })
    }

    /// Its header.
    pub fn layout(&self) -> Header {
        self.header
    }

    /// I/Os of every compare-and-write so far, summed.
    pub fn stats(&self) -> CasStats {
        self.total.lock().map(|s| *s).unwrap_or_default()
    }

    fn area_of(&self, sector: u64) -> u64 {
        self.header.area + sector * self.header.hosts as u64 * HOST_BYTES
    }

    fn read_area(&self, at: u64, stats: &mut CasStats) -> Result<Vec<HostSectors>> {
        let n = self.header.hosts as usize;
        let mut buf = vec![0u8; n * HOST_BYTES as usize];
        self.inner.read_at(&mut buf, at)?;
        stats.reads += 1;
        let mut out = Vec::with_capacity(n);
        for (h, chunk) in buf.chunks_exact(HOST_BYTES as usize).enumerate() {
            let place = |e: Error| e.at(format!("host {h} at byte {}", at + h as u64 * HOST_BYTES));
            out.push(HostSectors {
                proposal: Proposal::decode(&chunk[..SECTOR]).map_err(place)?,
                learned: Learned::decode(&chunk[SECTOR..2 * SECTOR]).map_err(place)?,
                decisions: decode_decisions(&chunk[2 * SECTOR..]).map_err(place)?,
            });
        }
        Ok(out)
    }

    fn lock_poisoned() -> Error {
        Error::Io {
            op: "compare_and_write",
            offset: 0,
            source: std::io::Error::other("poisoned Disk Paxos lock"),
        }
    }

    /// A decider that died between its decision and its home write left the home sector
    /// behind the decided value: a mismatch rewrites it, so that after any
    /// compare-and-write of a sector its plain reads show the decided value.
    fn repair_home(&self, offset: u64, cur: &[u8], st: &mut CasStats) -> Result<()> {
        let mut home = vec![0u8; cur.len()];
        self.inner.read_at(&mut home, offset)?;
        st.reads += 1;
        if home != cur {
            self.inner.write_at(cur, offset)?;
            self.inner.flush()?;
            st.writes += 1;
            st.flushes += 1;
        }
        Ok(())
    }

    fn run(&self, offset: u64, expected: &[u8], new: &[u8]) -> Result<Cas> {
        let sector = offset / SECTOR as u64;
        let area = self.area_of(sector);
        let mine = area + self.host as u64 * HOST_BYTES;
        let stripe = (sector % TURN_STRIPES as u64) as usize;
        let _turn = self.turns[stripe]
            .lock()
            .map_err(|_| Self::lock_poisoned())?;
        let hint = self
            .known
            .lock()
            .map_err(|_| Self::lock_poisoned())?
            .get(&sector)
            .cloned();
        let own = self
            .own
            .lock()
            .map_err(|_| Self::lock_poisoned())?
            .remove(&sector);
        let mut p = Proposer::new(self.host, expected, new, hint).with_own(own);
        let mut st = CasStats::default();
        let mut action = p.start();
        // Bounded: the proposer gives up after MAX_ATTEMPTS ballots; each takes < 8 steps.
        for _ in 0..ballot::MAX_ATTEMPTS as usize * 8 + 16 {
            action = match action {
                Action::Read { home } => {
                    let sectors = self.read_area(area, &mut st)?;
                    let home_bytes = if home {
                        let mut b = vec![0u8; expected.len()];
                        self.inner.read_at(&mut b, offset)?;
                        st.reads += 1;
                        Some(b)
                    } else {
                        None
                    };
                    p.on_read(&sectors, home_bytes.as_deref())?
                }
                Action::WriteProposal(prop) => {
                    self.inner.write_at(&prop.encode(self.host)?, mine)?;
                    self.inner.flush()?;
                    st.writes += 1;
                    st.flushes += 1;
                    p.on_written()?
                }
                Action::WriteLearned(l, decisions) => {
                    // Learned and decisions sectors in one write: each is a sector of its
                    // own, so a torn write leaves each old or new, both valid.
                    let mut both = Vec::with_capacity(2 * SECTOR);
                    both.extend_from_slice(&l.encode(self.host)?);
                    both.extend_from_slice(&encode_decisions(self.host, &decisions));
                    self.inner.write_at(&both, mine + SECTOR as u64)?;
                    self.inner.write_at(&l.value.bytes, offset)?;
                    self.inner.flush()?;
                    st.writes += 2;
                    st.flushes += 1;
                    p.on_written()?
                }
                Action::Backoff { ms } => {
                    self.clock.sleep_ms(ms);
                    p.on_written()?
                }
                Action::Done(outcome) => {
                    if let Some(k) = p.known().cloned() {
                        if let Ok(mut m) = self.known.lock() {
                            m.insert(sector, k);
                        }
                    }
                    if let Some(o) = p.own_sectors() {
                        if let Ok(mut m) = self.own.lock() {
                            m.insert(sector, o);
                        }
                    }
                    if let (Outcome::Mismatch(cur), Some((k, _))) = (&outcome, p.known()) {
                        if *k > 0 {
                            self.repair_home(offset, cur, &mut st)?;
                        }
                    }
                    if let Ok(mut total) = self.total.lock() {
                        total.reads += st.reads;
                        total.writes += st.writes;
                        total.flushes += st.flushes;
                    }
                    return Ok(match outcome {
                        Outcome::Written => Cas::Written,
                        Outcome::Mismatch(cur) => Cas::Mismatch(cur),
                    });
                }
            };
        }
        Err(Error::corrupt(
            "paxos area",
            format!("no decision (sector {sector})"),
        ))
    }
}

fn bounds(offset: u64, len: usize, dev_len: u64) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(e) if e <= dev_len => Ok(()),
        _ => Err(Error::OutOfBounds {
            offset,
            len: len as u64,
            dev_len,
        }),
    }
}

impl BlockDevice for PaxosDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        bounds(offset, buf.len(), self.header.exposed)?;
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        bounds(offset, buf.len(), self.header.exposed)?;
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    /// The inner device's own zeroing (NBD `WRITE_ZEROES`, a file's `fallocate`), not
    /// the default's writes of zeros.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(e) if e <= self.header.exposed => self.inner.write_zeroes(offset, len),
            _ => Err(Error::OutOfBounds {
                offset,
                len,
                dev_len: self.header.exposed,
            }),
        }
    }
    fn fixed_fds(&self) -> Option<Vec<std::os::fd::BorrowedFd<'_>>> {
        self.inner.fixed_fds()
    }
    fn len(&self) -> Result<u64> {
        Ok(self.header.exposed)
    }
    fn set_len(&self, _len: u64) -> Result<()> {
        Err(paxos_io("set_len", 0, PaxosError::Resize))
    }
    fn compare_and_write(&self, offset: u64, expected: &[u8], new: &[u8]) -> Result<Cas> {
        let cover = self.header.cover;
        let whole = offset % SECTOR as u64 == 0 && new.len() == SECTOR && expected.len() == SECTOR;
        if !whole || offset + SECTOR as u64 > cover {
            let e = PaxosError::NotCovered {
                offset,
                len: new.len(),
                cover,
            };
            return Err(paxos_io("compare_and_write", offset, e));
        }
        if !block::value_fits(new) {
            return Err(paxos_io(
                "compare_and_write",
                offset,
                PaxosError::ValueTooLarge(new.len()),
            ));
        }
        self.run(offset, expected, new)
    }
}

/// The device `host` mounts: a [`PaxosDevice`] when `inner` carries a Disk Paxos area,
/// else `inner` itself (its own compare-and-write is used).
pub fn open_for_host(
    inner: Arc<dyn BlockDevice>,
    host: u32,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn BlockDevice>> {
    if PaxosDevice::header(inner.as_ref())?.is_some() {
        Ok(Arc::new(PaxosDevice::open(inner, host, clock)?))
    } else {
        Ok(inner)
    }
}
