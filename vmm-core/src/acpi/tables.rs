//! The ACPI tables themselves, as byte vectors: RSDP, XSDT, FADT, MADT, DSDT.
//!
//! Layouts are from the ACPI 6.x specification (sections 5.2.5–5.2.12). Every table
//! built here is complete: length and checksum are filled in.

use super::aml::{self, Resource};
use super::{IOAPIC_ADDR, LAPIC_ADDR};
use crate::devices::acpi_power::S5_SLEEP_TYPE;

/// OEM id in every header.
pub const OEM_ID: [u8; 6] = *b"VINFRA";
/// OEM table id in every header.
pub const OEM_TABLE_ID: [u8; 8] = *b"VINFRAVM";
const OEM_REVISION: u32 = 1;
const CREATOR_ID: [u8; 4] = *b"VNFR";
const CREATOR_REVISION: u32 = 1;
/// Size of the common table header.
pub const HEADER_LEN: usize = 36;
/// Size of an ACPI 2.0+ RSDP.
pub const RSDP_LEN: usize = 36;
/// Size of the FADT we write (revision 6: up to the hypervisor vendor identity).
pub const FADT_LEN: usize = 276;

/// The byte that makes `bytes` sum to zero once stored in a zeroed checksum field.
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(sum(bytes))
}

/// Sum of `bytes` modulo 256 (0 for a valid table).
pub fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

/// A table under construction: header first, body appended, then `finish`.
struct Sdt(Vec<u8>);

impl Sdt {
    fn new(signature: &[u8; 4], revision: u8) -> Sdt {
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(signature);
        b.extend_from_slice(&[0; 4]); // length, set by finish
        b.push(revision);
        b.push(0); // checksum, set by finish
        b.extend_from_slice(&OEM_ID);
        b.extend_from_slice(&OEM_TABLE_ID);
        b.extend_from_slice(&OEM_REVISION.to_le_bytes());
        b.extend_from_slice(&CREATOR_ID);
        b.extend_from_slice(&CREATOR_REVISION.to_le_bytes());
        Sdt(b)
    }

    fn put(&mut self, bytes: &[u8]) -> &mut Sdt {
        self.0.extend_from_slice(bytes);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        self.0[4..8].copy_from_slice(&len.to_le_bytes());
        self.0[9] = checksum(&self.0);
        self.0
    }
}

/// RSDP revision 2 pointing at the XSDT (no RSDT: Linux uses the XSDT when the RSDP
/// revision is 2 or more).
pub fn rsdp(xsdt_addr: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(RSDP_LEN);
    b.extend_from_slice(b"RSD PTR ");
    b.push(0); // checksum of the first 20 bytes
    b.extend_from_slice(&OEM_ID);
    b.push(2); // revision
    b.extend_from_slice(&0u32.to_le_bytes()); // RSDT address
    b.extend_from_slice(&u32::try_from(RSDP_LEN).unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&xsdt_addr.to_le_bytes());
    b.push(0); // extended checksum
    b.extend_from_slice(&[0; 3]);
    b[8] = checksum(&b[..20]);
    b[32] = checksum(&b);
    b
}

/// XSDT listing `tables` (64-bit addresses).
pub fn xsdt(tables: &[u64]) -> Vec<u8> {
    let mut t = Sdt::new(b"XSDT", 1);
    for a in tables {
        t.put(&a.to_le_bytes());
    }
    t.finish()
}

/// FADT flag: hardware-reduced ACPI (no PM1/GPE blocks, no SCI, no FACS needed).
pub const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// FADT flag: the reset register is supported.
pub const FADT_RESET_REG_SUP: u32 = 1 << 10;
/// FADT flag: no fixed-feature power button.
pub const FADT_PWR_BUTTON: u32 = 1 << 4;
/// FADT flag: no fixed-feature sleep button.
pub const FADT_SLP_BUTTON: u32 = 1 << 5;
/// IA-PC boot flags: no VGA, no MSI, no CMOS RTC (we emulate none of them); bit 1
/// (8042 present) is clear because only the i8042 reset line exists.
pub const IAPC_BOOT_ARCH: u16 = (1 << 2) | (1 << 3) | (1 << 5);
/// The reset register: port 0x64, where the i8042 stub turns `0xfe` into a reboot.
pub const RESET_PORT: u64 = 0x64;
/// What to write to the reset register.
pub const RESET_VALUE: u8 = 0xfe;
const GAS_SYSTEM_IO: u8 = 1;
const GAS_ACCESS_BYTE: u8 = 1;

/// The power device (`devices::acpi_power`) as the tables describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerDevice {
    /// Its first port: sleep control, then sleep status, then the GED status.
    pub port: u16,
    /// The GED's interrupt (GSI, edge-triggered).
    pub gsi: u32,
}

/// Writes a generic address structure for one byte-wide I/O port at `b[at..at + 12]`.
fn gas_io_byte(b: &mut [u8], at: usize, port: u64) {
    b[at] = GAS_SYSTEM_IO;
    b[at + 1] = 8; // register bit width
    b[at + 2] = 0; // bit offset
    b[at + 3] = GAS_ACCESS_BYTE;
    b[at + 4..at + 12].copy_from_slice(&port.to_le_bytes());
}

/// FADT revision 6.5, hardware-reduced, pointing at the DSDT by its 64-bit field; with
/// `power`, its sleep control and status registers (how a hardware-reduced OS enters
/// `\_S5`).
pub fn fadt(dsdt_addr: u64, power: Option<PowerDevice>) -> Vec<u8> {
    let mut b = vec![0u8; FADT_LEN - HEADER_LEN];
    let at = |off: usize| off - HEADER_LEN;
    // FIRMWARE_CTRL, DSDT (32-bit), SCI_INT, SMI_CMD, PM blocks: all 0 (hardware-reduced).
    b[at(109)..at(111)].copy_from_slice(&IAPC_BOOT_ARCH.to_le_bytes());
    let flags = FADT_HW_REDUCED_ACPI | FADT_RESET_REG_SUP | FADT_PWR_BUTTON | FADT_SLP_BUTTON;
    b[at(112)..at(116)].copy_from_slice(&flags.to_le_bytes());
    // RESET_REG: generic address structure, then RESET_VALUE.
    gas_io_byte(&mut b, at(116), RESET_PORT);
    b[at(128)] = RESET_VALUE;
    if let Some(p) = power {
        gas_io_byte(&mut b, at(244), u64::from(p.port)); // SLEEP_CONTROL_REG
        gas_io_byte(&mut b, at(256), u64::from(p.port) + 1); // SLEEP_STATUS_REG
    }
    b[at(131)] = 5; // FADT minor version (6.5)
    b[at(140)..at(148)].copy_from_slice(&dsdt_addr.to_le_bytes()); // X_DSDT
    b[at(268)..at(276)].copy_from_slice(b"VINFRAVM"); // hypervisor vendor identity
    let mut t = Sdt::new(b"FACP", 6);
    t.put(&b);
    t.finish()
}

/// MADT flag: the machine also has dual 8259 PICs (KVM's in-kernel PIC).
pub const MADT_PCAT_COMPAT: u32 = 1;
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_LOCAL_APIC_NMI: u8 = 4;
const LAPIC_ENABLED: u32 = 1;
/// The IOAPIC's id in the MADT (KVM's in-kernel IOAPIC resets to id 0).
pub const IOAPIC_ID: u8 = 0;

/// MADT: one enabled Local APIC per vCPU (processor UID = APIC id = index), the IOAPIC
/// with GSI base 0, and LINT1 as NMI on every processor.
///
/// No interrupt source overrides: the VMM keeps KVM's default GSI routing, where ISA
/// IRQ *n* is IOAPIC pin *n* (the PIT included: QEMU needs IRQ0→GSI2 only because it
/// reprograms GSI 0 to pin 2).
pub fn madt(vcpus: u8) -> Vec<u8> {
    let mut t = Sdt::new(b"APIC", 5);
    t.put(&u32::try_from(LAPIC_ADDR).unwrap_or(0).to_le_bytes())
        .put(&MADT_PCAT_COMPAT.to_le_bytes());
    for i in 0..vcpus {
        t.put(&[MADT_LOCAL_APIC, 8, i, i])
            .put(&LAPIC_ENABLED.to_le_bytes());
    }
    t.put(&[MADT_IO_APIC, 12, IOAPIC_ID, 0])
        .put(&u32::try_from(IOAPIC_ADDR).unwrap_or(0).to_le_bytes())
        .put(&0u32.to_le_bytes());
    // Processor UID 0xff = all processors; flags 0 = conforming; LINT1.
    t.put(&[MADT_LOCAL_APIC_NMI, 6, 0xff, 0, 0, 1]);
    t.finish()
}

/// A virtio-mmio device to describe in the DSDT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioDevice {
    /// Guest-physical base of its 4 KiB register window.
    pub base: u64,
    /// Length of the register window.
    pub len: u64,
    /// Its interrupt (GSI on the IOAPIC, edge-triggered: an irqfd without resample).
    pub gsi: u32,
}

/// A 16550 UART to describe in the DSDT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uart {
    /// First I/O port.
    pub port: u16,
    /// Number of ports.
    pub len: u8,
    /// Its interrupt (GSI).
    pub gsi: u32,
}

/// DSDT (revision 2: 64-bit integers) with `\_SB.COM1` (`PNP0501`), one
/// `\_SB.VRnn` (`LNRO0005`, the id Linux's virtio_mmio driver matches) per device and,
/// with `power`, `\_S5` and the power button: `\_SB.GED_` (`ACPI0013`, whose `_EVT`
/// notifies `\_SB.PWRB`, `PNP0C0C`, with 0x80, "button pressed").
pub fn dsdt(
    uart: Option<Uart>,
    virtio: &[VirtioMmioDevice],
    power: Option<PowerDevice>,
) -> Vec<u8> {
    let mut devices = Vec::new();
    if let Some(u) = uart {
        devices.push(aml::device(
            "COM1",
            &[
                aml::name("_HID", &aml::eisa_id("PNP0501")),
                aml::name("_UID", &aml::integer(0)),
                aml::name(
                    "_CRS",
                    &aml::resource_template(&[
                        Resource::Io {
                            base: u.port,
                            len: u.len,
                        },
                        Resource::EdgeInterrupt { gsi: u.gsi },
                    ]),
                ),
            ],
        ));
    }
    for (i, d) in virtio.iter().enumerate() {
        devices.push(aml::device(
            &format!("VR{:02}", i % 100),
            &[
                aml::name("_HID", &aml::string("LNRO0005")),
                aml::name("_UID", &aml::integer(i as u64)),
                // DMA is cache-coherent (what QEMU microvm says too).
                aml::name("_CCA", &aml::integer(1)),
                aml::name(
                    "_CRS",
                    &aml::resource_template(&[
                        Resource::Memory32Fixed {
                            base: u32::try_from(d.base).unwrap_or(0),
                            len: u32::try_from(d.len).unwrap_or(0),
                        },
                        Resource::EdgeInterrupt { gsi: d.gsi },
                    ]),
                ),
            ],
        ));
    }
    let mut t = Sdt::new(b"DSDT", 2);
    if let Some(p) = power {
        // Package {SLP_TYPa}: a hardware-reduced OS writes it to the sleep control register.
        t.put(&aml::name(
            "\\_S5",
            &aml::package(&[aml::integer(u64::from(S5_SLEEP_TYPE))]),
        ));
        devices.push(aml::device(
            "GED_",
            &[
                aml::name("_HID", &aml::string("ACPI0013")),
                aml::name("_UID", &aml::integer(0)),
                aml::name(
                    "_CRS",
                    &aml::resource_template(&[Resource::EdgeInterrupt { gsi: p.gsi }]),
                ),
                // One event only, so _EVT need not read the status register.
                aml::method("_EVT", 1, &[aml::notify("\\_SB_.PWRB", 0x80)]),
            ],
        ));
        devices.push(aml::device(
            "PWRB",
            &[
                aml::name("_HID", &aml::eisa_id("PNP0C0C")),
                aml::name("_UID", &aml::integer(0)),
            ],
        ));
    }
    t.put(&aml::scope("\\_SB_", &devices));
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POWER: PowerDevice = PowerDevice {
        port: 0x3c0,
        gsi: 3,
    };

    fn len_of(t: &[u8]) -> usize {
        u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize
    }

    #[test]
    fn every_table_sums_to_zero_and_has_its_length() {
        let dev = [VirtioMmioDevice {
            base: 0xd000_0000,
            len: 0x1000,
            gsi: 5,
        }];
        let uart = Uart {
            port: 0x3f8,
            len: 8,
            gsi: 4,
        };
        for t in [
            xsdt(&[0xe0100, 0xe0200]),
            fadt(0xe0040, None),
            fadt(0xe0040, Some(POWER)),
            madt(3),
            dsdt(Some(uart), &dev, Some(POWER)),
            dsdt(None, &[], None),
        ] {
            assert_eq!(sum(&t), 0, "{:?}", &t[..4]);
            assert_eq!(len_of(&t), t.len(), "{:?}", &t[..4]);
        }
        let r = rsdp(0xe0300);
        assert_eq!(r.len(), RSDP_LEN);
        assert_eq!(sum(&r[..20]), 0);
        assert_eq!(sum(&r), 0);
        assert_eq!(u64::from_le_bytes(r[24..32].try_into().unwrap()), 0xe0300);
    }

    #[test]
    fn madt_has_one_enabled_lapic_per_vcpu() {
        for n in [1u8, 2, 7, 255] {
            let m = madt(n);
            let mut lapics = Vec::new();
            let mut ioapics = 0;
            let mut at = HEADER_LEN + 8;
            while at < m.len() {
                let (ty, len) = (m[at], usize::from(m[at + 1]));
                assert!(len >= 2 && at + len <= m.len());
                match ty {
                    0 => lapics.push((m[at + 2], m[at + 3], m[at + 4] & 1)),
                    1 => ioapics += 1,
                    _ => {}
                }
                at += len;
            }
            assert_eq!(at, m.len());
            assert_eq!(ioapics, 1);
            let want: Vec<_> = (0..n).map(|i| (i, i, 1)).collect();
            assert_eq!(lapics, want);
        }
    }

    #[test]
    fn fadt_is_hardware_reduced_and_points_at_the_dsdt() {
        let f = fadt(0xe0040, Some(POWER));
        assert_eq!(f.len(), FADT_LEN);
        assert_eq!((f[244], f[248], f[256], f[260]), (1, 0xc0, 1, 0xc1));
        let flags = u32::from_le_bytes(f[112..116].try_into().unwrap());
        assert_ne!(flags & FADT_HW_REDUCED_ACPI, 0);
        assert_eq!(u64::from_le_bytes(f[140..148].try_into().unwrap()), 0xe0040);
        assert_eq!((f[116], f[120], f[128]), (1, 0x64, 0xfe));
    }
}
