//! The attached console: stdin forwarded to the guest (with the `Ctrl-A` keys), the loop
//! that watches the VM, the keys, signals, a fenced volume and the control socket.

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use vinfra_host::exit_status::StopCause;
use vinfra_host::terminal::stop_requested;
use vinfra_host::vmfs_disk::MountedHost;
use vinfra_vmm_core::{ExitReason, SerialInput, Vm};

use crate::migrate::{serve_control, Served};

const CTRL_A: u8 = 0x01;

/// What the console keys ask for.
pub enum Key {
    Stop,
    Snapshot,
}

/// Forwards stdin to the guest; `Ctrl-A x` asks to stop, `Ctrl-A s` for a snapshot,
/// `Ctrl-A Ctrl-A` sends one Ctrl-A.
pub fn forward_stdin(input: SerialInput, keys: Sender<Key>) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 256];
    let mut after_ctrl_a = false;
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n);
        for &b in &buf[..n] {
            if after_ctrl_a {
                after_ctrl_a = false;
                match b {
                    b'x' | b'X' => {
                        let _ = keys.send(Key::Stop);
                        return;
                    }
                    b's' | b'S' => {
                        let _ = keys.send(Key::Snapshot);
                    }
                    CTRL_A => out.push(CTRL_A),
                    other => out.extend_from_slice(&[CTRL_A, other]),
                }
            } else if b == CTRL_A {
                after_ctrl_a = true;
            } else {
                out.push(b);
            }
        }
        input.send(&out);
    }
}

/// Milliseconds since `t`, for the `--timings` lines.
pub fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// What the loop watches besides the VM.
pub struct Watch<'a> {
    pub keys: Receiver<Key>,
    pub snapshot_dir: Option<PathBuf>,
    pub timings: bool,
    pub host: Option<&'a MountedHost>,
    pub control: Option<UnixListener>,
    pub served: Served,
}

/// Runs until the VM stops, a key or signal stops it, its host fences itself, or it
/// moves away.
pub fn watch(vm: &mut Vm, w: &mut Watch<'_>) -> Result<(ExitReason, StopCause), String> {
    loop {
        // 10 ms: how soon a `migrate` request on the control socket is noticed.
        if let Some(r) = vm.wait_timeout(Duration::from_millis(10)) {
            return Ok((r, StopCause::Console));
        }
        if stop_requested() {
            return Ok((vm.stop().map_err(|e| e.to_string())?, StopCause::Signal));
        }
        if w.host.is_some_and(MountedHost::fenced) {
            vm.stop().map_err(|e| e.to_string())?;
            return Err("this host fenced itself (vmfs heartbeat lost); the VM was stopped".into());
        }
        if let Some(listener) = &w.control {
            if let Ok((stream, _)) = listener.accept() {
                match serve_control(vm, stream, &w.served) {
                    Ok(true) => return Ok((ExitReason::Stopped, StopCause::Migrated)),
                    Ok(false) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        match w.keys.try_recv() {
            Ok(Key::Stop) => {
                return Ok((vm.stop().map_err(|e| e.to_string())?, StopCause::Console))
            }
            Ok(Key::Snapshot) => match &w.snapshot_dir {
                Some(dir) => {
                    let t_pause = Instant::now();
                    vm.pause().map_err(|e| e.to_string())?;
                    let pause_ms = ms_since(t_pause);
                    let t_save = Instant::now();
                    let stats = vm.snapshot(dir).map_err(|e| e.to_string())?;
                    let save_ms = ms_since(t_save);
                    if w.timings {
                        eprintln!(
                            "\r\nvinfra-vm: timings: pause_ms={pause_ms:.2} snapshot_ms={save_ms:.2} \
                             state_bytes={} memory_written_bytes={} memory_apparent_bytes={} \
                             memory_allocated_bytes={}\r",
                            stats.state_bytes,
                            stats.memory.data_bytes_written,
                            stats.memory.file_apparent_bytes,
                            stats.memory.file_allocated_bytes
                        );
                    }
                    eprintln!(
                        "\r\nvinfra-vm: snapshot written to {}; resume it with --restore\r",
                        dir.display()
                    );
                    return Ok((vm.stop().map_err(|e| e.to_string())?, StopCause::Console));
                }
                None => eprintln!("\r\nvinfra-vm: no --snapshot-dir given; Ctrl-A s ignored\r"),
            },
            Err(_) => {}
        }
    }
}
