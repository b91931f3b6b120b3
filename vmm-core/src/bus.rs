//! Port-I/O and MMIO buses: route a guest access to the device whose window holds it.
//!
//! Accesses that hit no device behave like an empty ISA/PCI bus: reads return all
//! ones, writes vanish. They are logged at debug level, rate-limited, because a guest
//! probing hardware (Linux does) produces many of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::devices::{MmioDevice, PioDevice};

/// A port-I/O device shared between the bus and its owner.
pub type SharedPio = Arc<Mutex<dyn PioDevice>>;
/// An MMIO device shared between the bus and its owner.
pub type SharedMmio = Arc<Mutex<dyn MmioDevice>>;

/// A window on a bus overlaps one already taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bus window {base:#x}+{len:#x} overlaps an existing device")]
pub struct Overlap {
    /// Start of the refused window.
    pub base: u64,
    /// Its length.
    pub len: u64,
}

/// A set of non-overlapping windows, each owned by one device.
struct Windows<D: ?Sized> {
    entries: Vec<(u64, u64, Arc<Mutex<D>>)>,
    unmapped: AtomicU64,
}

impl<D: ?Sized> Default for Windows<D> {
    fn default() -> Self {
        Windows {
            entries: Vec::new(),
            unmapped: AtomicU64::new(0),
        }
    }
}

impl<D: ?Sized> Windows<D> {
    /// `Debug` for a bus named `name`: its windows, not the devices behind them.
    fn fmt_windows(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w: Vec<_> = self.entries.iter().map(|(b, l, _)| (*b, *l)).collect();
        f.debug_struct(name).field("windows", &w).finish()
    }

    fn insert(&mut self, base: u64, len: u64, dev: Arc<Mutex<D>>) -> Result<(), Overlap> {
        let end = base.checked_add(len).ok_or(Overlap { base, len })?;
        if len == 0
            || self
                .entries
                .iter()
                .any(|(b, l, _)| base < b + l && *b < end)
        {
            return Err(Overlap { base, len });
        }
        self.entries.push((base, len, dev));
        self.entries.sort_by_key(|e| e.0);
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &Arc<Mutex<D>>)> {
        self.entries
            .iter()
            .find(|(b, l, _)| addr >= *b && addr + size as u64 <= b + l)
            .map(|(b, _, d)| (addr - b, d))
    }

    fn miss(&self, kind: &str, addr: u64, write: bool) {
        let n = self.unmapped.fetch_add(1, Ordering::Relaxed);
        // The first few, then one in 4096: enough to notice, never a log flood.
        if n < 16 || n % 4096 == 0 {
            tracing::debug!(
                kind,
                addr = format_args!("{addr:#x}"),
                write,
                count = n + 1,
                "guest access to no device"
            );
        }
    }
}

/// The port-I/O bus.
#[derive(Default)]
pub struct PioBus(Windows<dyn PioDevice>);

impl std::fmt::Debug for PioBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt_windows("PioBus", f)
    }
}

impl PioBus {
    /// Maps `dev` at ports `base..base+len`.
    pub fn insert(&mut self, base: u16, len: u16, dev: SharedPio) -> Result<(), Overlap> {
        self.0.insert(u64::from(base), u64::from(len), dev)
    }

    /// A guest `in`.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        match self.0.find(u64::from(port), data.len()) {
            Some((off, dev)) => {
                let off = u16::try_from(off).unwrap_or(u16::MAX);
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pio_read(off, data);
            }
            None => {
                data.fill(0xff);
                self.0.miss("pio", u64::from(port), false);
            }
        }
    }

    /// A guest `out`.
    pub fn write(&self, port: u16, data: &[u8]) {
        match self.0.find(u64::from(port), data.len()) {
            Some((off, dev)) => {
                let off = u16::try_from(off).unwrap_or(u16::MAX);
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pio_write(off, data);
            }
            None => self.0.miss("pio", u64::from(port), true),
        }
    }
}

/// The MMIO bus.
#[derive(Default)]
pub struct MmioBus(Windows<dyn MmioDevice>);

impl std::fmt::Debug for MmioBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt_windows("MmioBus", f)
    }
}

impl MmioBus {
    /// Maps `dev` at `base..base+len`.
    pub fn insert(&mut self, base: u64, len: u64, dev: SharedMmio) -> Result<(), Overlap> {
        self.0.insert(base, len, dev)
    }

    /// A guest load.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.0.find(addr, data.len()) {
            Some((off, dev)) => dev
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .mmio_read(off, data),
            None => {
                data.fill(0xff);
                self.0.miss("mmio", addr, false);
            }
        }
    }

    /// A guest store.
    pub fn write(&self, addr: u64, data: &[u8]) {
        match self.0.find(addr, data.len()) {
            Some((off, dev)) => dev
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .mmio_write(off, data),
            None => self.0.miss("mmio", addr, true),
        }
    }

    /// Number of mapped devices.
    pub fn len(&self) -> usize {
        self.0.entries.len()
    }

    /// Whether no device is mapped.
    pub fn is_empty(&self) -> bool {
        self.0.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reg(u8);
    impl PioDevice for Reg {
        fn pio_read(&mut self, offset: u16, data: &mut [u8]) {
            data.fill(self.0.wrapping_add(u8::try_from(offset).unwrap()));
        }
        fn pio_write(&mut self, _offset: u16, data: &[u8]) {
            self.0 = data[0];
        }
    }
    impl MmioDevice for Reg {
        fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0.wrapping_add(u8::try_from(offset).unwrap()));
        }
        fn mmio_write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn routes_by_window_and_fills_misses_with_ones() {
        let mut bus = PioBus::default();
        bus.insert(0x3f8, 8, Arc::new(Mutex::new(Reg(10)))).unwrap();
        assert!(bus.insert(0x3fc, 8, Arc::new(Mutex::new(Reg(0)))).is_err());
        let mut b = [0u8; 1];
        bus.read(0x3fa, &mut b);
        assert_eq!(b, [12]);
        bus.write(0x3f8, &[7]);
        bus.read(0x3f8, &mut b);
        assert_eq!(b, [7]);
        let mut w = [0u8; 4];
        bus.read(0x80, &mut w);
        assert_eq!(w, [0xff; 4]);
        // An access that straddles the end of a window goes nowhere.
        bus.read(0x3fe, &mut w);
        assert_eq!(w, [0xff; 4]);

        let mut m = MmioBus::default();
        m.insert(0xd000_0000, 0x1000, Arc::new(Mutex::new(Reg(1))))
            .unwrap();
        let mut d = [0u8; 4];
        m.read(0xd000_0004, &mut d);
        assert_eq!(d, [5; 4]);
        m.read(0xe000_0000, &mut d);
        assert_eq!(d, [0xff; 4]);
        m.write(0xe000_0000, &d);
    }
}
