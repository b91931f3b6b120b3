//! Shared helpers of the KVM tests: skip checks, guest paths, a console capture, a
//! tiny built-in guest, and running each VM test in a child process.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use vinfra_vmm_core::{SerialOutput, SharedWriter, VmConfig};

/// True when /dev/kvm can be opened; prints `SKIP: <why>` otherwise.
pub fn kvm_or_skip() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            println!("SKIP: /dev/kvm is not usable: {e}");
            false
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path of a test guest, or `None` (after printing SKIP) when the kit is not built.
pub fn guest(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("VINFRA_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/guest-kit/guests"));
    let p = dir.join(format!("{name}.elf"));
    if p.exists() {
        Some(p)
    } else {
        println!(
            "SKIP: {} is missing: run scripts/guest-kit.sh --guests-only",
            p.display()
        );
        None
    }
}

/// A console sink that tests can wait on.
#[derive(Clone, Default)]
pub struct Console(Arc<(Mutex<Vec<u8>>, Condvar)>);

struct ConsoleWriter(Console);

impl Write for ConsoleWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let (m, cv) = &*(self.0).0;
        m.lock().unwrap().extend_from_slice(b);
        cv.notify_all();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Console {
    pub fn output(&self) -> SerialOutput {
        SerialOutput::Writer(SharedWriter::new(ConsoleWriter(self.clone())))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&(self.0).0.lock().unwrap()).into_owned()
    }

    /// Waits until the output contains `pat` (after byte `from`); returns the end offset
    /// of the match, or panics with the output so far.
    pub fn wait_for_from(&self, from: usize, pat: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.0;
        let mut g = m.lock().unwrap();
        loop {
            if g.len() > from {
                let s = String::from_utf8_lossy(&g[from..]);
                if let Some(i) = s.find(pat) {
                    return from + i + pat.len();
                }
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "timed out waiting for {pat:?}; console:\n{}",
                    String::from_utf8_lossy(&g)
                );
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    pub fn wait_for(&self, pat: &str, timeout: Duration) -> usize {
        self.wait_for_from(0, pat, timeout)
    }

    pub fn len(&self) -> usize {
        (self.0).0.lock().unwrap().len()
    }
}

/// A config for `kernel` with a console capture.
pub fn config(kernel: PathBuf, console: &Console) -> VmConfig {
    VmConfig::new(kernel)
        .memory_mib(64)
        .serial_output(console.output())
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

/// Runs `body` in a child process (this test binary, filtered to `name`), so a VMM
/// crash or hang cannot take the test binary down or leak KVM objects into it.
/// Returns the child's output.
pub fn isolated(name: &str, timeout: Duration, body: impl FnOnce()) -> String {
    isolated_env(name, timeout, &[], body)
}

/// [`isolated`] with extra environment variables for the child.
pub fn isolated_env(
    name: &str,
    timeout: Duration,
    env: &[(&str, &str)],
    body: impl FnOnce(),
) -> String {
    const CHILD_ENV: &str = "VINFRA_TEST_CHILD";
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        body();
        return String::new();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (o, e) = (t1.join().unwrap(), t2.join().unwrap());
    print!("{o}");
    eprint!("{e}");
    match status {
        None => panic!("{name}: child timed out after {timeout:?}"),
        Some(st) => assert!(
            st.success() && o.contains("1 passed"),
            "{name}: child failed ({st})"
        ),
    }
    o
}
