//! ACPI tables for Linux guests: how a kernel finds its CPUs (MADT), its console and its
//! virtio-mmio disks (DSDT) without a command-line device list.
//!
//! Linux kernels whose `virtio_mmio` driver is a module without
//! `VIRTIO_MMIO_CMDLINE_DEVICES` (Debian's cloud kernel) find virtio-mmio devices only
//! through ACPI (`LNRO0005`, as QEMU microvm and Firecracker describe them), and without
//! a MADT they see one CPU. The machine is described as hardware-reduced ACPI (no PM
//! timer, no SCI, no FACS), like Firecracker and Cloud Hypervisor do for microVMs; its
//! power button is a Generic Event Device and it powers off through the FADT's sleep
//! control register and `\_S5` (`devices::acpi_power`), as Cloud Hypervisor does.
//!
//! Layout (guest-physical, inside the `0xE0000`–`0xFFFFF` BIOS area that the memory map
//! already reports reserved, so the guest never reuses it):
//!
//! | address | table |
//! |---|---|
//! | `0xE0000` | RSDP (revision 2) → XSDT; found by the standard 16-byte scan of `0xE0000`–`0xFFFFF`, and given directly in `boot_params.acpi_rsdp_addr` / `hvm_start_info.rsdp_paddr` |
//! | `0xE0030`… | DSDT, FADT, MADT, XSDT, each 16-byte aligned, in that order |
//!
//! ```
//! use vinfra_vmm_core::acpi::{self, AcpiConfig, VirtioMmioDevice};
//!
//! let mem = vinfra_vmm_core::memory::create(16 << 20).unwrap();
//! let cfg = AcpiConfig::new(2).virtio_mmio(VirtioMmioDevice { base: 0xd000_0000, len: 0x1000, gsi: 5 });
//! let rsdp = acpi::write(&mem, &cfg).unwrap();
//! assert_eq!(acpi::find_rsdp(&mem), Some(rsdp));
//! ```

pub mod aml;
pub mod tables;

use vm_memory::{Bytes, GuestAddress};

pub use tables::{PowerDevice, Uart, VirtioMmioDevice};

use crate::devices::acpi_power::{ACPI_POWER_PORT, GED_GSI};
use crate::devices::serial::{COM1_BASE, COM1_GSI, COM1_LEN};
use crate::error::{MemoryError, Result};
use crate::memory::GuestMemoryMmap;

/// Start of the ACPI area; the RSDP sits here.
pub const ACPI_START: u64 = 0xE_0000;
/// End (exclusive) of the ACPI area: the end of the BIOS scan region.
pub const ACPI_END: u64 = 0x10_0000;
/// Where the RSDP is written.
pub const RSDP_ADDR: u64 = ACPI_START;
/// The IOAPIC's MMIO base (KVM's in-kernel IOAPIC).
pub const IOAPIC_ADDR: u64 = 0xFEC0_0000;
/// The Local APICs' MMIO base.
pub const LAPIC_ADDR: u64 = 0xFEE0_0000;
/// Where the BIOS data area keeps the EBDA segment.
const EBDA_SEGMENT_PTR: u64 = 0x40E;
const TABLE_ALIGN: u64 = 16;

/// What the tables describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs (APIC ids 0..vcpus).
    pub vcpus: u8,
    /// The serial port, if any.
    pub uart: Option<Uart>,
    /// virtio-mmio devices, in order (`_UID` = index).
    pub virtio_mmio: Vec<VirtioMmioDevice>,
    /// The sleep registers and the power button (GED), if any.
    pub power: Option<PowerDevice>,
}

impl AcpiConfig {
    /// `vcpus` CPUs, COM1 as this VMM wires it, no virtio devices yet.
    pub fn new(vcpus: u8) -> AcpiConfig {
        AcpiConfig {
            vcpus,
            uart: Some(Uart {
                port: COM1_BASE,
                len: u8::try_from(COM1_LEN).unwrap_or(8),
                gsi: COM1_GSI,
            }),
            virtio_mmio: Vec::new(),
            power: Some(PowerDevice {
                port: ACPI_POWER_PORT,
                gsi: GED_GSI,
            }),
        }
    }

    /// Adds a virtio-mmio device.
    pub fn virtio_mmio(mut self, d: VirtioMmioDevice) -> AcpiConfig {
        self.virtio_mmio.push(d);
        self
    }
}

/// One placed table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedTable {
    /// Its signature (`RSD ` for the RSDP).
    pub signature: [u8; 4],
    /// Guest-physical address.
    pub addr: u64,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// The full set of tables with their addresses, RSDP first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTables {
    /// Every table, RSDP first.
    pub tables: Vec<PlacedTable>,
}

impl AcpiTables {
    /// The table with `signature` (`b"RSD "` for the RSDP).
    pub fn get(&self, signature: &[u8; 4]) -> Option<&PlacedTable> {
        self.tables.iter().find(|t| &t.signature == signature)
    }

    /// Address of the RSDP.
    pub fn rsdp_addr(&self) -> u64 {
        RSDP_ADDR
    }
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(TABLE_ALIGN) * TABLE_ALIGN
}

/// Builds the tables and places them from [`ACPI_START`].
pub fn build(cfg: &AcpiConfig) -> Result<AcpiTables> {
    let mut next = align_up(RSDP_ADDR + tables::RSDP_LEN as u64);
    let mut place = |bytes: &[u8]| {
        let at = next;
        next = align_up(at + bytes.len() as u64);
        at
    };
    let dsdt = tables::dsdt(cfg.uart, &cfg.virtio_mmio, cfg.power);
    let dsdt_at = place(&dsdt);
    let fadt = tables::fadt(dsdt_at, cfg.power);
    let fadt_at = place(&fadt);
    let madt = tables::madt(cfg.vcpus);
    let madt_at = place(&madt);
    let xsdt = tables::xsdt(&[fadt_at, madt_at]);
    let xsdt_at = place(&xsdt);
    if next > ACPI_END {
        return Err(MemoryError::AcpiTooLarge {
            bytes: next - ACPI_START,
            start: ACPI_START,
            end: ACPI_END,
        }
        .into());
    }
    let t = |signature: &[u8; 4], addr, bytes| PlacedTable {
        signature: *signature,
        addr,
        bytes,
    };
    Ok(AcpiTables {
        tables: vec![
            t(b"RSD ", RSDP_ADDR, tables::rsdp(xsdt_at)),
            t(b"DSDT", dsdt_at, dsdt),
            t(b"FACP", fadt_at, fadt),
            t(b"APIC", madt_at, madt),
            t(b"XSDT", xsdt_at, xsdt),
        ],
    })
}

/// Builds the tables and writes them into guest memory; returns the RSDP address.
pub fn write(mem: &GuestMemoryMmap, cfg: &AcpiConfig) -> Result<u64> {
    let built = build(cfg)?;
    for t in &built.tables {
        mem.write_slice(&t.bytes, GuestAddress(t.addr))
            .map_err(|source| MemoryError::AcpiWrite {
                addr: t.addr,
                source,
            })?;
    }
    Ok(built.rsdp_addr())
}

/// Finds the RSDP the way a guest OS without a boot-protocol pointer does: the first
/// KiB of the EBDA (segment at `0x40E`), then `0xE0000`–`0xFFFFF`, on 16-byte
/// boundaries, accepting a signature whose checksums (20 bytes, and the whole structure
/// for revision 2+) are valid.
pub fn find_rsdp(mem: &GuestMemoryMmap) -> Option<u64> {
    let ebda = mem
        .read_obj::<u16>(GuestAddress(EBDA_SEGMENT_PTR))
        .ok()
        .map(|seg| u64::from(seg) << 4)
        .filter(|&a| a > 0x400);
    let mut ranges = Vec::new();
    if let Some(a) = ebda {
        ranges.push((a, a + 1024));
    }
    ranges.push((ACPI_START, ACPI_END));
    for (start, end) in ranges {
        let mut buf = vec![0u8; usize::try_from(end - start).ok()?];
        if mem.read_slice(&mut buf, GuestAddress(start)).is_err() {
            continue;
        }
        for off in (0..=buf.len().saturating_sub(tables::RSDP_LEN)).step_by(16) {
            if rsdp_valid(&buf[off..]) {
                return Some(start + off as u64);
            }
        }
    }
    None
}

/// Whether `b` starts with a valid RSDP.
pub fn rsdp_valid(b: &[u8]) -> bool {
    if b.len() < 20 || &b[..8] != b"RSD PTR " || tables::sum(&b[..20]) != 0 {
        return false;
    }
    if b[15] < 2 {
        return true;
    }
    let len = b
        .get(20..24)
        .and_then(|l| l.try_into().ok())
        .map(u32::from_le_bytes)
        .and_then(|l| usize::try_from(l).ok());
    match len {
        Some(l) if l >= tables::RSDP_LEN && l <= b.len() => tables::sum(&b[..l]) == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_fit_for_the_largest_machine() {
        let mut cfg = AcpiConfig::new(255);
        for i in 0..crate::wiring::VIRTIO_DEVICES_MAX as u64 {
            cfg = cfg.virtio_mmio(VirtioMmioDevice {
                base: 0xd000_0000 + i * 0x1000,
                len: 0x1000,
                gsi: 5 + u32::try_from(i).unwrap(),
            });
        }
        let t = build(&cfg).unwrap();
        let last = t.tables.iter().map(|t| t.addr + t.bytes.len() as u64).max();
        assert!(last.unwrap() <= ACPI_END);
    }

    #[test]
    fn tables_do_not_overlap_and_are_aligned() {
        let t = build(&AcpiConfig::new(2)).unwrap();
        let mut spans: Vec<_> = t
            .tables
            .iter()
            .map(|t| (t.addr, t.addr + t.bytes.len() as u64))
            .collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "{w:?}");
        }
        assert!(spans.iter().all(|s| s.0 % 16 == 0 && s.0 >= ACPI_START));
    }

    #[test]
    fn scan_finds_the_rsdp_and_rejects_a_bad_checksum() {
        let mem = crate::memory::create(4 << 20).unwrap();
        assert_eq!(find_rsdp(&mem), None);
        let at = write(&mem, &AcpiConfig::new(1)).unwrap();
        assert_eq!(find_rsdp(&mem), Some(at));
        // Corrupt the extended checksum's coverage: the scan must refuse it.
        mem.write_obj(0x55u8, GuestAddress(at + 30)).unwrap();
        assert_eq!(find_rsdp(&mem), None);
    }

    #[test]
    fn scan_looks_in_the_ebda_first() {
        let mem = crate::memory::create(4 << 20).unwrap();
        let rsdp = tables::rsdp(0x1234_5678);
        mem.write_slice(&rsdp, GuestAddress(0x9_fc00)).unwrap();
        mem.write_obj(0x9fc0u16, GuestAddress(EBDA_SEGMENT_PTR))
            .unwrap();
        assert_eq!(find_rsdp(&mem), Some(0x9_fc00));
    }
}
