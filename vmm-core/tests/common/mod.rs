//! Helpers of vmm-core's KVM tests: a VM config with a console capture and tiny built-in
//! guests. The prerequisite checks, guest paths, console capture and child processes
//! they share with other crates' tests are in vinfra-testkit.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use vinfra_testkit::Console;
use vinfra_vmm_core::{SerialOutput, SharedWriter, VmConfig};

/// A serial output that writes into `console`.
pub fn serial(console: &Console) -> SerialOutput {
    SerialOutput::Writer(SharedWriter::new(console.writer()))
}

/// A config for `kernel` with a console capture.
pub fn config(kernel: PathBuf, console: &Console) -> VmConfig {
    VmConfig::new(kernel)
        .memory_mib(64)
        .serial_output(serial(console))
}

/// A minimal PVH ELF: 32-bit code at 1 MiB that prints `text` on COM1 and writes
/// `code` to the exit port.
pub fn tiny_guest(text: &[u8], code: u8) -> Vec<u8> {
    tiny_elf(&tiny_program(text, code), true)
}

/// 32-bit (or 64-bit: the encoding is the same) code that prints `text` and exits with `code`.
pub fn tiny_program(text: &[u8], code: u8) -> Vec<u8> {
    let mut prog = Vec::new();
    prog.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    for &b in text {
        prog.extend_from_slice(&[0xb0, b, 0xee]); // mov al, b; out dx, al
    }
    prog.extend_from_slice(&[0x66, 0xba, 0xf4, 0x00]); // mov dx, 0xf4
    prog.extend_from_slice(&[0xb0, code, 0xee]); // mov al, code; out dx, al
    prog.extend_from_slice(&[0xf4, 0xeb, 0xfd]); // hlt; jmp back to hlt
    prog
}

/// 64-bit code for the Linux boot protocol: prints `L`, then exits with 0x40 if `rsi`
/// points at a zero page whose setup header has the `HdrS` magic, else 0x41.
pub fn linux_probe_program() -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03, 0xb0, b'L', 0xee]); // out 'L' to COM1
    p.extend_from_slice(&[0x8b, 0x86, 0x02, 0x02, 0x00, 0x00]); // mov eax, [rsi + 0x202]
    p.extend_from_slice(&[0x3d, 0x48, 0x64, 0x72, 0x53]); // cmp eax, "HdrS"
    p.extend_from_slice(&[0x66, 0xba, 0xf4, 0x00]); // mov dx, 0xf4
    p.extend_from_slice(&[0xb0, 0x41, 0x75, 0x02, 0xb0, 0x40, 0xee]); // al = ne ? 0x41 : 0x40; out
    p.extend_from_slice(&[0xf4, 0xeb, 0xfd]);
    p
}

/// A minimal bzImage: one setup sector, the protected-mode part at 1 MiB with `prog64`
/// at its 64-bit entry (offset 0x200).
pub fn tiny_bzimage(prog64: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 1024 + 0x200];
    f[0x1f1] = 1; // setup_sects
    f[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    f[0x202..0x206].copy_from_slice(b"HdrS");
    f[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    f[0x211] = 1; // loadflags: LOADED_HIGH
    f[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
    f.extend_from_slice(prog64);
    f
}

/// A minimal ELF at 1 MiB running `prog`, with a PVH note or with an unrelated note.
pub fn tiny_elf(prog: &[u8], pvh: bool) -> Vec<u8> {
    const LOAD: u64 = 0x10_0000;
    let note_off = 64 + 2 * 56;
    let code_off = note_off + 20;
    let total = code_off + prog.len();
    let entry = LOAD + code_off as u64;
    let mut f = Vec::new();
    // ELF header.
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&entry.to_le_bytes());
    f.extend_from_slice(&64u64.to_le_bytes()); // phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // flags
    f.extend_from_slice(&64u16.to_le_bytes()); // ehsize
    f.extend_from_slice(&56u16.to_le_bytes()); // phentsize
    f.extend_from_slice(&2u16.to_le_bytes()); // phnum
    f.extend_from_slice(&[0; 6]); // shentsize, shnum, shstrndx
    let phdr = |f: &mut Vec<u8>, ty: u32, off: u64, addr: u64, size: u64| {
        f.extend_from_slice(&ty.to_le_bytes());
        f.extend_from_slice(&7u32.to_le_bytes());
        f.extend_from_slice(&off.to_le_bytes());
        f.extend_from_slice(&addr.to_le_bytes());
        f.extend_from_slice(&addr.to_le_bytes());
        f.extend_from_slice(&size.to_le_bytes());
        f.extend_from_slice(&size.to_le_bytes());
        f.extend_from_slice(&4u64.to_le_bytes());
    };
    phdr(&mut f, 1, 0, LOAD, total as u64); // PT_LOAD, the whole file at 1 MiB
    phdr(&mut f, 4, note_off as u64, 0, 20); // PT_NOTE
                                             // XEN_ELFNOTE_PHYS32_ENTRY.
    f.extend_from_slice(&4u32.to_le_bytes());
    f.extend_from_slice(&4u32.to_le_bytes());
    f.extend_from_slice(&(if pvh { 18u32 } else { 1u32 }).to_le_bytes());
    f.extend_from_slice(b"Xen\0");
    f.extend_from_slice(&u32::try_from(entry).unwrap().to_le_bytes());
    assert_eq!(f.len(), code_off);
    f.extend_from_slice(prog);
    f
}

/// The `dirtied_pages=<n>` of heartbeat `HB <hb>` (the workload guest prints it with
/// `vinfra.debug=1`), if that line is on the console.
pub fn dirtied_pages(console: &str, hb: u64) -> Option<u64> {
    let prefix = format!("HB {hb} dirtied_pages=");
    console
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|n| n.trim().parse().ok())
}
