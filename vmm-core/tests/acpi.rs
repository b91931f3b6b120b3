//! ACPI tables as a Linux guest reads them: checksums, lengths, the RSDP → XSDT → FADT
//! → DSDT and MADT chain, the RSDP found by the BIOS-area scan and through the boot
//! protocols (PVH `hvm_start_info`, Linux `boot_params`), and ACPICA's own disassembler
//! (`iasl -d`) on the binary tables. Linux itself cannot boot on nested KVM, so the
//! tables are checked directly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::elf::start_info::hvm_start_info;
use vinfra_testkit::{isolated, kvm_or_skip, tool_or_skip};
use vinfra_vmm_core::acpi::{self, tables, AcpiConfig, AcpiTables, VirtioMmioDevice};
use vinfra_vmm_core::boot::{self, linux::BOOT_PARAMS_ADDR, pvh::START_INFO_ADDR};
use vinfra_vmm_core::{memory, BootProtocol, DiskConfig, ExitReason, Vm, VmConfig};
use vm_memory::{Bytes, GuestAddress};

fn config_with_disks(vcpus: u8, disks: u32) -> AcpiConfig {
    (0..disks).fold(AcpiConfig::new(vcpus), |c, i| {
        c.virtio_mmio(VirtioMmioDevice {
            base: 0xd000_0000 + u64::from(i) * 0x1000,
            len: 0x1000,
            gsi: 5 + i,
        })
    })
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// Reads a table the way an OS does: header first, then `length` bytes.
fn read_table(mem: &memory::GuestMemoryMmap, addr: u64) -> Vec<u8> {
    let mut hdr = [0u8; tables::HEADER_LEN];
    mem.read_slice(&mut hdr, GuestAddress(addr)).unwrap();
    let mut t = vec![0u8; u32_at(&hdr, 4) as usize];
    mem.read_slice(&mut t, GuestAddress(addr)).unwrap();
    t
}

/// Follows RSDP → XSDT → tables in guest memory; returns them by signature.
fn walk(mem: &memory::GuestMemoryMmap, rsdp_addr: u64) -> Vec<(String, u64, Vec<u8>)> {
    let mut rsdp = [0u8; tables::RSDP_LEN];
    mem.read_slice(&mut rsdp, GuestAddress(rsdp_addr)).unwrap();
    assert!(acpi::rsdp_valid(&rsdp));
    assert_eq!(rsdp[15], 2, "RSDP revision");
    let xsdt_addr = u64_at(&rsdp, 24);
    let xsdt = read_table(mem, xsdt_addr);
    assert_eq!(&xsdt[..4], b"XSDT");
    let mut out = vec![("XSDT".to_string(), xsdt_addr, xsdt.clone())];
    for e in xsdt[tables::HEADER_LEN..].chunks(8) {
        let addr = u64::from_le_bytes(e.try_into().unwrap());
        let t = read_table(mem, addr);
        if &t[..4] == b"FACP" {
            let dsdt_addr = u64_at(&t, 140);
            out.push(("DSDT".into(), dsdt_addr, read_table(mem, dsdt_addr)));
        }
        out.push((String::from_utf8_lossy(&t[..4]).into_owned(), addr, t));
    }
    out
}

#[test]
fn every_table_sums_to_zero_has_its_length_and_is_linked() {
    let mem = memory::create(32 << 20).unwrap();
    let rsdp = acpi::write(&mem, &config_with_disks(2, 3)).unwrap();
    let found = walk(&mem, rsdp);
    let sigs: Vec<_> = found.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(sigs, ["XSDT", "DSDT", "FACP", "APIC"]);
    for (sig, addr, t) in &found {
        assert_eq!(tables::sum(t), 0, "{sig} checksum");
        assert_eq!(u32_at(t, 4) as usize, t.len(), "{sig} length");
        assert!(
            (acpi::ACPI_START..acpi::ACPI_END).contains(addr),
            "{sig} at {addr:#x}"
        );
        assert_eq!(&t[10..16], b"VINFRA", "{sig} OEM id");
    }
    let fadt = &found[2].2;
    assert_ne!(u32_at(fadt, 112) & tables::FADT_HW_REDUCED_ACPI, 0);
}

#[test]
fn madt_has_one_local_apic_per_vcpu_and_the_ioapic() {
    for vcpus in [1u8, 2, 4, 64] {
        let mem = memory::create(16 << 20).unwrap();
        let rsdp = acpi::write(&mem, &AcpiConfig::new(vcpus)).unwrap();
        let madt = walk(&mem, rsdp)
            .into_iter()
            .find(|t| t.0 == "APIC")
            .unwrap()
            .2;
        assert_eq!(u64::from(u32_at(&madt, 36)), acpi::LAPIC_ADDR);
        let (mut lapic_ids, mut ioapics) = (Vec::new(), Vec::new());
        let mut at = 44;
        while at < madt.len() {
            let (ty, len) = (madt[at], madt[at + 1] as usize);
            match ty {
                0 => {
                    assert_eq!(u32_at(&madt, at + 4) & 1, 1, "enabled");
                    lapic_ids.push(madt[at + 3]);
                }
                1 => ioapics.push((u64::from(u32_at(&madt, at + 4)), u32_at(&madt, at + 8))),
                _ => {}
            }
            at += len;
        }
        assert_eq!(lapic_ids, (0..vcpus).collect::<Vec<_>>());
        assert_eq!(ioapics, [(acpi::IOAPIC_ADDR, 0)]);
    }
}

/// Builds a memory image the way `Vm::create` does (tables, then the kernel) and
/// returns the memory and the protocol chosen.
fn boot_image(kernel: &[u8]) -> (memory::GuestMemoryMmap, BootProtocol, u64) {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("kernel");
    std::fs::write(&k, kernel).unwrap();
    let mem = memory::create(64 << 20).unwrap();
    let rsdp = acpi::write(&mem, &config_with_disks(2, 1)).unwrap();
    let cmdline = |_| boot::build_cmdline("console=ttyS0", &[]);
    let (protocol, _, _) = boot::load(&mem, &k, None, &cmdline, Some(rsdp)).unwrap();
    (mem, protocol, rsdp)
}

#[test]
fn rsdp_is_found_by_the_bios_scan_and_through_both_boot_protocols() {
    let (mem, protocol, rsdp) = boot_image(&common::tiny_guest(b"x", 0));
    assert_eq!(protocol, BootProtocol::Pvh);
    assert_eq!(acpi::find_rsdp(&mem), Some(rsdp));
    let info: hvm_start_info = mem.read_obj(GuestAddress(START_INFO_ADDR)).unwrap();
    assert_eq!(info.rsdp_paddr, rsdp);
    assert_eq!(walk(&mem, info.rsdp_paddr).len(), 4);

    let (mem, protocol, rsdp) = boot_image(&common::tiny_bzimage(&common::tiny_program(b"x", 0)));
    assert_eq!(protocol, BootProtocol::Linux64);
    assert_eq!(acpi::find_rsdp(&mem), Some(rsdp));
    let params: boot_params = mem.read_obj(GuestAddress(BOOT_PARAMS_ADDR)).unwrap();
    assert_eq!({ params.acpi_rsdp_addr }, rsdp);
    assert_eq!(walk(&mem, params.acpi_rsdp_addr).len(), 4);
    // The tables lie in a range the E820 table does not offer as RAM.
    let ram_overlap = params.e820_table[..usize::from(params.e820_entries)]
        .iter()
        .filter(|e| e.r#type == 1)
        .any(|e| e.addr < acpi::ACPI_END && acpi::ACPI_START < e.addr + e.size);
    assert!(!ram_overlap, "E820 offers the ACPI area as RAM");
}

/// True when `iasl` runs; CI installs it, so there a missing one fails the test.
fn iasl() -> bool {
    tool_or_skip("iasl", &["-v"], "apt-get install acpica-tools")
}

/// Disassembles `bytes` with `iasl -d`; returns the .dsl text and iasl's output.
fn disassemble(dir: &Path, name: &str, bytes: &[u8]) -> (String, String) {
    let bin = dir.join(format!("{name}.dat"));
    std::fs::write(&bin, bytes).unwrap();
    let out = Command::new("iasl")
        .arg("-d")
        .arg(&bin)
        .current_dir(dir)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iasl -d {name}: {log}");
    let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl")))
        .unwrap_or_else(|e| panic!("no {name}.dsl ({e}): {log}"));
    (dsl, log)
}

/// Squeezes whitespace so multi-line ASL can be matched as one line.
fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn table<'a>(t: &'a AcpiTables, sig: &[u8; 4]) -> &'a [u8] {
    &t.get(sig).unwrap().bytes
}

/// Disassembles `dsdt`, compiles the result back (without optimizations, which would
/// drop the redundant root prefix of `\_SB_`) and checks the AML is the same: our
/// encoder and ACPICA agree byte for byte (the headers differ in compiler id and
/// checksum only).
fn assert_recompiles_identically(dir: &Path, dsdt: &[u8]) {
    disassemble(dir, "round", dsdt);
    let out = Command::new("iasl")
        .args(["-oa", "-p", "recompiled", "round.dsl"])
        .current_dir(dir)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "iasl round.dsl: {log}");
    assert!(log.contains("0 Errors, 0 Warnings"), "{log}");
    let aml = std::fs::read(dir.join("recompiled.aml")).unwrap();
    assert_eq!(
        &aml[tables::HEADER_LEN..],
        &dsdt[tables::HEADER_LEN..],
        "{log}"
    );
}

/// No devices, one, and the most the VMM wires (19): each DSDT survives the round trip.
#[test]
fn iasl_round_trips_the_dsdt_for_every_device_count_bound() {
    if !iasl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for n in [0, 1, 19] {
        let mut cfg = config_with_disks(1, n);
        if n == 0 {
            cfg.uart = None;
        }
        let t = acpi::build(&cfg).unwrap();
        assert_recompiles_identically(dir.path(), table(&t, b"DSDT"));
    }
}

#[test]
fn iasl_disassembles_the_dsdt_with_the_devices() {
    if !iasl() {
        return;
    }
    let t = acpi::build(&config_with_disks(2, 2)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (dsl, log) = disassemble(dir.path(), "dsdt", table(&t, b"DSDT"));
    println!("{dsl}");
    assert!(!log.contains("Error"), "iasl: {log}");
    assert_recompiles_identically(dir.path(), table(&t, b"DSDT"));
    let flat = squeeze(&dsl);
    assert!(flat.contains("Scope (\\_SB)"), "{dsl}");
    for (i, base, gsi) in [
        (0, "0xD0000000", "0x00000005"),
        (1, "0xD0001000", "0x00000006"),
    ] {
        let dev = format!(
            "Device (VR0{i}) {{ Name (_HID, \"LNRO0005\") // _HID: Hardware ID Name (_UID, {})",
            if i == 0 { "Zero" } else { "One" }
        );
        assert!(flat.contains(&dev), "want {dev:?} in\n{dsl}");
        let mem = format!(
            "Memory32Fixed (ReadWrite, {base}, // Address Base 0x00001000, // Address Length )"
        );
        assert!(flat.contains(&mem), "want {mem:?} in\n{dsl}");
        let irq =
            format!("Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) {{ {gsi}, }}");
        assert!(flat.contains(&irq), "want {irq:?} in\n{dsl}");
    }
    assert!(
        flat.contains("Device (COM1) { Name (_HID, EisaId (\"PNP0501\")"),
        "{dsl}"
    );
    assert!(flat.contains("IO (Decode16, 0x03F8, // Range Minimum 0x03F8, // Range Maximum 0x01, // Alignment 0x08, // Length )"), "{dsl}");
    assert!(flat.contains("Exclusive, ,, ) { 0x00000004, }"), "{dsl}");
    // The power button: a GED on GSI 3 whose _EVT notifies PWRB, and \_S5 for power-off.
    for want in [
        "Name (\\_S5, Package (0x01) // _S5_: S5 System State { 0x05 })",
        "Device (GED) { Name (_HID, \"ACPI0013\" /* Generic Event Device */)",
        "Exclusive, ,, ) { 0x00000003, }",
        "Method (_EVT, 1, NotSerialized) // _EVT: Event { Notify (\\_SB.PWRB, 0x80)",
        "Device (PWRB) { Name (_HID, EisaId (\"PNP0C0C\")",
    ] {
        assert!(flat.contains(want), "want {want:?} in\n{dsl}");
    }
}

#[test]
fn iasl_decodes_the_madt_fadt_and_xsdt() {
    if !iasl() {
        return;
    }
    let t = acpi::build(&config_with_disks(3, 1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (madt, log) = disassemble(dir.path(), "apic", table(&t, b"APIC"));
    println!("{madt}");
    assert!(
        !log.contains("Error") && !madt.contains("Invalid"),
        "{log}\n{madt}"
    );
    assert_eq!(
        madt.matches("Subtable Type : 00 [Processor Local APIC]")
            .count(),
        3,
        "{madt}"
    );
    assert!(madt.contains("Subtable Type : 01 [I/O APIC]"), "{madt}");
    assert!(madt.contains("Address : FEC00000"), "{madt}");
    assert!(
        madt.contains("Subtable Type : 04 [Local APIC NMI]"),
        "{madt}"
    );

    let (fadt, log) = disassemble(dir.path(), "facp", table(&t, b"FACP"));
    println!("{fadt}");
    assert!(
        !log.contains("Error") && !fadt.contains("Invalid"),
        "{log}\n{fadt}"
    );
    let flat = squeeze(&fadt);
    assert!(flat.contains("Hardware Reduced (V5) : 1"), "{fadt}");
    let dsdt_addr = format!("{:016X}", t.get(b"DSDT").unwrap().addr);
    // The 64-bit X_DSDT field, at offset 140.
    let x_dsdt = format!("[08Ch 0140 8] DSDT Address : {dsdt_addr}");
    assert!(flat.contains(&x_dsdt), "{fadt}");
    assert!(flat.contains("Reset Register Supported (V2) : 1"), "{fadt}");
    // The sleep control and status registers, byte ports 0x3c0 and 0x3c1 (power-off).
    for (off, port) in [("0244", "03C0"), ("0256", "03C1")] {
        let at = flat.find(&format!("{off} 12]")).expect("sleep register");
        let gas = &flat[at..at + 400];
        assert!(gas.contains("Space ID : 01 [SystemIO]"), "{fadt}");
        assert!(
            gas.contains(&format!("Address : 000000000000{port}")),
            "{fadt}"
        );
    }

    let (xsdt, log) = disassemble(dir.path(), "xsdt", table(&t, b"XSDT"));
    println!("{xsdt}");
    assert!(!log.contains("Error"), "{log}");
    for sig in [b"FACP", b"APIC"] {
        let addr = format!("{:016X}", t.get(sig).unwrap().addr);
        assert!(xsdt.contains(&addr), "{addr} in {xsdt}");
    }
}

/// The command line carries `virtio_mmio.device=` for PVH kernels only: Linux booted
/// by the 64-bit protocol finds the disks in the DSDT. Needs /dev/kvm for `Vm::create`
/// (the VM is never started).
#[test]
fn virtio_mmio_cmdline_entries_only_for_pvh_and_tables_written() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    for (image, protocol, has_entry) in [
        (common::tiny_guest(b"x", 0), BootProtocol::Pvh, true),
        (
            common::tiny_bzimage(&common::tiny_program(b"x", 0)),
            BootProtocol::Linux64,
            false,
        ),
    ] {
        let k = dir.path().join("kernel");
        std::fs::write(&k, image).unwrap();
        let cfg = VmConfig::new(&k)
            .memory_mib(16)
            .vcpus(2)
            .cmdline("console=ttyS0")
            .disk(DiskConfig::new(&img));
        let vm = Vm::create(cfg).unwrap();
        assert_eq!(vm.boot_protocol(), Some(protocol));
        let mut raw = vec![0u8; 4096];
        vm.memory()
            .read_slice(&mut raw, GuestAddress(boot::CMDLINE_ADDR))
            .unwrap();
        let cmdline =
            String::from_utf8_lossy(&raw[..raw.iter().position(|&b| b == 0).unwrap()]).into_owned();
        assert!(cmdline.starts_with("console=ttyS0"), "{cmdline}");
        assert_eq!(
            cmdline.contains("virtio_mmio.device=4K@0xd0000000:5"),
            has_entry,
            "{protocol:?}: {cmdline}"
        );
        let rsdp = acpi::find_rsdp(vm.memory()).expect("rsdp");
        let found = walk(vm.memory(), rsdp);
        let dsdt = &found.iter().find(|t| t.0 == "DSDT").unwrap().2;
        assert!(dsdt.windows(8).any(|w| w == b"LNRO0005"));
        assert!(
            !dsdt.windows(4).any(|w| w == b"VR01"),
            "one disk, one device"
        );
    }
}

/// 64-bit probe for the Linux entry: exits 0x40 if `boot_params.acpi_rsdp_addr`
/// (`rsi + 0x70`) points at "RSD PTR " whose XSDT address holds "XSDT", else 0x41.
fn linux_rsdp_probe() -> Vec<u8> {
    let mut p = vec![0x48, 0x8b, 0x46, 0x70]; // mov rax, [rsi + 0x70]
    p.extend_from_slice(&[0x48, 0xbb]); // movabs rbx, "RSD PTR "
    p.extend_from_slice(b"RSD PTR ");
    p.extend_from_slice(&[0x48, 0x39, 0x18]); // cmp [rax], rbx
    p.extend_from_slice(&[0x75, 0x10]); // jne fail
    p.extend_from_slice(&[0x48, 0x8b, 0x40, 0x18]); // mov rax, [rax + 24]: XSDT address
    p.extend_from_slice(&[0x81, 0x38]); // cmp dword [rax], "XSDT"
    p.extend_from_slice(b"XSDT");
    p.extend_from_slice(&[0x75, 0x04]); // jne fail
    p.extend_from_slice(&probe_exit());
    p
}

/// 32-bit probe for the PVH entry: the same checks through `hvm_start_info.rsdp_paddr`
/// (`ebx + 32`).
fn pvh_rsdp_probe() -> Vec<u8> {
    let mut p = vec![0x8b, 0x43, 0x20]; // mov eax, [ebx + 32]
    p.extend_from_slice(&[0x81, 0x38]); // cmp dword [eax], "RSD "
    p.extend_from_slice(b"RSD ");
    p.extend_from_slice(&[0x75, 0x18]); // jne fail
    p.extend_from_slice(&[0x81, 0x78, 0x04]); // cmp dword [eax + 4], "PTR "
    p.extend_from_slice(b"PTR ");
    p.extend_from_slice(&[0x75, 0x0f]); // jne fail
    p.extend_from_slice(&[0x8b, 0x40, 0x18]); // mov eax, [eax + 24]: XSDT address
    p.extend_from_slice(&[0x81, 0x38]); // cmp dword [eax], "XSDT"
    p.extend_from_slice(b"XSDT");
    p.extend_from_slice(&[0x75, 0x04]); // jne fail
    p.extend_from_slice(&probe_exit());
    p
}

/// al = 0x40; skip; fail: al = 0x41; then out 0xf4, al and halt.
fn probe_exit() -> [u8; 14] {
    [
        0xb0, 0x40, 0xeb, 0x02, 0xb0, 0x41, 0x66, 0xba, 0xf4, 0x00, 0xee, 0xf4, 0xeb, 0xfd,
    ]
}

fn run_probe(image: Vec<u8>, protocol: BootProtocol) {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("kernel");
    std::fs::write(&k, image).unwrap();
    let mut vm = Vm::create(
        VmConfig::new(&k)
            .memory_mib(16)
            .serial_output(vinfra_vmm_core::SerialOutput::None),
    )
    .unwrap();
    assert_eq!(vm.boot_protocol(), Some(protocol));
    vm.start().unwrap();
    assert_eq!(
        vm.wait_timeout(std::time::Duration::from_secs(20)),
        Some(ExitReason::Poweroff { code: 0x40 }),
        "{protocol:?}: the guest did not find the RSDP and XSDT"
    );
}

/// Guests on KVM follow the boot-protocol pointer to the RSDP and on to the XSDT.
#[test]
fn guests_find_the_rsdp_through_their_boot_protocol() {
    if !kvm_or_skip() {
        return;
    }
    isolated(
        "guests_find_the_rsdp_through_their_boot_protocol",
        std::time::Duration::from_secs(60),
        || {
            run_probe(common::tiny_elf(&pvh_rsdp_probe(), true), BootProtocol::Pvh);
            run_probe(
                common::tiny_bzimage(&linux_rsdp_probe()),
                BootProtocol::Linux64,
            );
            run_probe(
                common::tiny_elf(&linux_rsdp_probe(), false),
                BootProtocol::Linux64,
            );
        },
    );
}
