//! A fault-injecting in-memory device for tests.
//!
//! It keeps what was *written* apart from what is *durable* (after redb's crash tests):
//! writes since the last flush are pending, and [`FaultyDevice::crash_image`] builds a
//! post-crash image in which a seeded subset of them survived, some torn at a sector
//! boundary. Compare-and-write is durable when it succeeds (see the README).
//!
//! Test support: built for this crate's tests and with the `test-utils` feature.

use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::device::{BlockDevice, Cas};
use crate::error::{ConfigError, Error, Result};

/// Faults to inject; change them at any time with [`FaultyDevice::set_faults`].
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Writes and compare-and-writes touching these byte ranges fail with an I/O error.
    pub fail_writes: Vec<Range<u64>>,
    /// Every read fails.
    pub fail_reads: bool,
    /// The device "crashes" when this many writes (counting compare-and-writes) have been
    /// issued: that write and everything after it fails with an [`Error::Io`] whose source
    /// is [`Crashed`] (see [`is_crash`]).
    pub crash_at_write: Option<u64>,
    /// The device "crashes" at this many flushes issued: that flush makes nothing durable
    /// and fails, like everything after it (the window between a write and the flush
    /// that should make it durable, which a crash at a write never lands in).
    pub crash_at_flush: Option<u64>,
    /// A delay before every I/O.
    pub delay: Option<Duration>,
}

/// Counters of device operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Reads.
    pub reads: u64,
    /// Writes.
    pub writes: u64,
    /// Compare-and-writes.
    pub cas: u64,
    /// Flushes.
    pub flushes: u64,
}

#[derive(Debug)]
struct State {
    written: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<(u64, Vec<u8>)>,
    crashed: bool,
    writes_issued: u64,
    flushes_issued: u64,
    stats: IoStats,
    faults: Faults,
}

/// The fault-injecting device.
#[derive(Debug)]
pub struct FaultyDevice {
    st: Mutex<State>,
}

/// The source of every error of a [`FaultyDevice`] after its injected crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("device crashed (injected)")]
pub struct Crashed;

/// Whether `e` is a [`FaultyDevice`]'s injected crash.
pub fn is_crash(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => source
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<Crashed>().is_some()),
        _ => false,
    }
}

fn crashed(op: &'static str, offset: u64) -> Error {
    Error::Io {
        op,
        offset,
        source: std::io::Error::other(Crashed),
    }
}

fn injected(op: &'static str, offset: u64) -> Error {
    Error::Io {
        op,
        offset,
        source: std::io::Error::other("injected fault"),
    }
}

impl FaultyDevice {
    /// A zeroed device of `len` bytes.
    pub fn new(len: usize) -> Self {
        Self::from_bytes(vec![0; len])
    }

    /// A device whose durable and written contents are `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        FaultyDevice {
            st: Mutex::new(State {
                written: bytes.clone(),
                durable: bytes,
                pending: Vec::new(),
                crashed: false,
                writes_issued: 0,
                flushes_issued: 0,
                stats: IoStats::default(),
                faults: Faults::default(),
            }),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.st.lock().map_err(|_| injected("lock", 0))
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, f: Faults) {
        if let Ok(mut s) = self.st.lock() {
            s.faults = f;
        }
    }

    /// Operation counters so far.
    pub fn stats(&self) -> IoStats {
        self.st.lock().map(|s| s.stats).unwrap_or_default()
    }

    /// Whether the injected crash happened.
    pub fn crashed(&self) -> bool {
        self.st.lock().map(|s| s.crashed).unwrap_or(true)
    }

    /// Writes issued so far (compare-and-writes included).
    pub fn writes_issued(&self) -> u64 {
        self.st.lock().map(|s| s.writes_issued).unwrap_or(0)
    }

    /// Flushes issued so far.
    pub fn flushes_issued(&self) -> u64 {
        self.st.lock().map(|s| s.flushes_issued).unwrap_or(0)
    }

    /// The image after a crash now: durable bytes plus a seeded subset of the unflushed
    /// writes, in order, some torn at a 512-byte boundary.
    pub fn crash_image(&self, seed: u64) -> Vec<u8> {
        let Ok(s) = self.st.lock() else {
            return Vec::new();
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut img = s.durable.clone();
        for (off, data) in &s.pending {
            let keep: u32 = rng.random_range(0..4);
            let n = match keep {
                0 => 0,
                1 => {
                    let sectors = data.len().div_ceil(512);
                    (rng.random_range(0..sectors.max(1)) * 512).min(data.len())
                }
                _ => data.len(),
            };
            let o = *off as usize;
            if o + n <= img.len() {
                img[o..o + n].copy_from_slice(&data[..n]);
            }
        }
        img
    }

    /// The contents as written (what a reader sees now).
    pub fn written_image(&self) -> Vec<u8> {
        self.st
            .lock()
            .map(|s| s.written.clone())
            .unwrap_or_default()
    }

    fn before_write(s: &mut State, offset: u64, len: usize, op: &'static str) -> Result<()> {
        if s.crashed {
            return Err(crashed(op, offset));
        }
        if let Some(d) = s.faults.delay {
            std::thread::sleep(d);
        }
        s.writes_issued += 1;
        if let Some(n) = s.faults.crash_at_write {
            if s.writes_issued >= n {
                s.crashed = true;
                return Err(crashed(op, offset));
            }
        }
        let end = offset + len as u64;
        if s.faults
            .fail_writes
            .iter()
            .any(|r| offset < r.end && r.start < end)
        {
            return Err(injected(op, offset));
        }
        if end > s.written.len() as u64 {
            return Err(Error::OutOfBounds {
                offset,
                len: len as u64,
                dev_len: s.written.len() as u64,
            });
        }
        Ok(())
    }
}

impl BlockDevice for FaultyDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut s = self.lock()?;
        if s.crashed {
            return Err(crashed("read", offset));
        }
        if let Some(d) = s.faults.delay {
            std::thread::sleep(d);
        }
        s.stats.reads += 1;
        if s.faults.fail_reads {
            return Err(injected("read", offset));
        }
        let end = offset.saturating_add(buf.len() as u64);
        if end > s.written.len() as u64 {
            return Err(Error::OutOfBounds {
                offset,
                len: buf.len() as u64,
                dev_len: s.written.len() as u64,
            });
        }
        let o = offset as usize;
        buf.copy_from_slice(&s.written[o..o + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let mut s = self.lock()?;
        s.stats.writes += 1;
        Self::before_write(&mut s, offset, buf.len(), "write")?;
        let o = offset as usize;
        s.written[o..o + buf.len()].copy_from_slice(buf);
        s.pending.push((offset, buf.to_vec()));
        Ok(())
    }

    fn fixed_fds(&self) -> Option<Vec<std::os::fd::BorrowedFd<'_>>> {
        Some(Vec::new())
    }
    fn flush(&self) -> Result<()> {
        let mut s = self.lock()?;
        if s.crashed {
            return Err(crashed("flush", 0));
        }
        s.flushes_issued += 1;
        if s.faults
            .crash_at_flush
            .is_some_and(|n| s.flushes_issued >= n)
        {
            s.crashed = true;
            return Err(crashed("flush", 0));
        }
        s.stats.flushes += 1;
        let pending = std::mem::take(&mut s.pending);
        for (off, data) in pending {
            let o = off as usize;
            s.durable[o..o + data.len()].copy_from_slice(&data);
        }
        Ok(())
    }

    fn len(&self) -> Result<u64> {
        Ok(self.lock()?.written.len() as u64)
    }

    fn set_len(&self, len: u64) -> Result<()> {
        let mut s = self.lock()?;
        let len = usize::try_from(len).map_err(|_| Error::from(ConfigError::Length))?;
        s.written.resize(len, 0);
        s.durable.resize(len, 0);
        Ok(())
    }

    fn compare_and_write(&self, offset: u64, expected: &[u8], new: &[u8]) -> Result<Cas> {
        let mut s = self.lock()?;
        s.stats.cas += 1;
        if expected.len() != new.len() {
            return Err(ConfigError::CasLengths {
                expected: expected.len(),
                new: new.len(),
            }
            .into());
        }
        Self::before_write(&mut s, offset, new.len(), "compare_and_write")?;
        let o = offset as usize;
        if &s.written[o..o + new.len()] != expected {
            return Ok(Cas::Mismatch(s.written[o..o + new.len()].to_vec()));
        }
        s.written[o..o + new.len()].copy_from_slice(new);
        s.durable[o..o + new.len()].copy_from_slice(new);
        // A later crash image must not resurrect an older pending write under it.
        let range = offset..offset + new.len() as u64;
        for (po, pd) in s.pending.iter_mut() {
            let pr = *po..*po + pd.len() as u64;
            let lo = pr.start.max(range.start);
            let hi = pr.end.min(range.end);
            if lo < hi {
                let a = (lo - pr.start) as usize;
                let b = (lo - range.start) as usize;
                let n = (hi - lo) as usize;
                pd[a..a + n].copy_from_slice(&new[b..b + n]);
            }
        }
        Ok(Cas::Written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unflushed_writes_may_vanish_flushed_ones_stay() {
        let d = FaultyDevice::new(4096);
        d.write_at(&[1; 512], 0).unwrap();
        d.flush().unwrap();
        d.write_at(&[2; 1024], 512).unwrap();
        let mut kept = 0;
        for seed in 0..32 {
            let img = d.crash_image(seed);
            assert_eq!(&img[..512], &[1; 512]);
            if img[512] == 2 {
                kept += 1;
            }
        }
        assert!(kept > 0 && kept < 32, "seeded subsets differ: {kept}");
    }

    #[test]
    fn crash_at_nth_write_and_fail_ranges() {
        let d = FaultyDevice::new(4096);
        d.set_faults(Faults {
            crash_at_write: Some(3),
            fail_writes: std::iter::once(1024..1536).collect(),
            ..Faults::default()
        });
        d.write_at(&[1], 0).unwrap();
        assert!(matches!(d.write_at(&[1], 1100), Err(Error::Io { .. })));
        assert!(d.write_at(&[1], 0).is_err_and(|e| is_crash(&e)));
        assert!(d.crashed());
        assert!(d.read_at(&mut [0], 0).is_err_and(|e| is_crash(&e)));
        let other = d.write_at(&[1], 1100).map(|_| ()).unwrap_err();
        assert!(is_crash(&other), "{other}");
        assert!(!is_crash(&injected("write", 0)));
    }
}
