//! Emulated devices and the buses that route guest accesses to them.
//!
//! A device sees only offsets inside its own window; the bus (in the VM's run
//! loop) does the address decoding. Devices are driven from vCPU threads, so
//! they must be `Send`; the bus serialises access with a lock per device.

pub mod acpi_power;
pub mod block;
pub mod exit;
pub mod net;
pub mod serial;
pub mod virtio;

/// A device on the MMIO bus, addressed by offsets inside its window.
pub trait MmioDevice: Send {
    /// The guest reads `data.len()` bytes (1, 2, 4 or 8) at `offset`.
    fn mmio_read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset`.
    fn mmio_write(&mut self, offset: u64, data: &[u8]);
}

/// A device on the port-I/O bus, addressed by offsets inside its port range.
pub trait PioDevice: Send {
    /// The guest reads `data.len()` bytes (1, 2 or 4) at `offset`.
    fn pio_read(&mut self, offset: u16, data: &mut [u8]);
    /// The guest writes `data` at `offset`.
    fn pio_write(&mut self, offset: u16, data: &[u8]);
}
