//! The attached console: stdin forwarded to the guest (with the `Ctrl-A` keys), the loop
//! that watches the VM, the keys, signals, a fenced volume, the parent's lease and the
//! control socket's requests.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use vinfra_host::exit_status::StopCause;
use vinfra_host::migration::{send_event, ControlEvent, ControlRequest, VmIo, VmStatus};
use vinfra_host::terminal::stop_requested;
use vinfra_host::vmfs_disk::MountedHost;
use vinfra_vmm_core::{ExitReason, SerialInput, Vm, VmConfig};

use crate::control::{Pending, SharedStatus};
use crate::migrate::{serve_migrate, Served};

/// The guest's serial input, swapped for the new VM's on a reset.
pub type SharedInput = Arc<Mutex<SerialInput>>;

const CTRL_A: u8 = 0x01;

/// What the console keys ask for.
pub enum Key {
    Stop,
    Snapshot,
}

/// Forwards stdin to the guest; `Ctrl-A x` asks to stop, `Ctrl-A s` for a snapshot,
/// `Ctrl-A Ctrl-A` sends one Ctrl-A.
pub fn forward_stdin(input: SharedInput, keys: Sender<Key>) {
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
        input
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(&out);
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
    /// Requests from the control socket that need the VM.
    pub control: Option<Receiver<Pending>>,
    pub served: Served,
    /// Raised when the parent host's lease lapsed (`--parent-lease-fd`).
    pub parent_fenced: Option<Arc<AtomicBool>>,
    /// What a reset boots again.
    pub config: VmConfig,
    pub input: SharedInput,
    /// Refreshed each turn for the control threads' `status` answers.
    pub status: SharedStatus,
}

fn status_of(vm: &Vm, c: &VmConfig) -> VmStatus {
    VmStatus::new(
        vm.power_state().into(),
        c.vcpus,
        c.memory_mib,
        vm.dirty_log_enabled(),
    )
    .with_io(VmIo::of(vm))
}

/// What a control request did to the VM.
enum Handled {
    Running,
    Ended(ExitReason, StopCause),
}

/// Boots the guest again in this process: a fresh VM from the same configuration (the
/// vmfs disks' backends and their locks are shared), with the dirty log as before.
fn reset(vm: &mut Vm, w: &Watch<'_>) -> Result<(), String> {
    let dirty_log = vm.dirty_log_enabled();
    vm.stop().map_err(|e| format!("stop: {e}"))?;
    let mut fresh = Vm::create(w.config.clone()).map_err(|e| format!("create: {e}"))?;
    fresh.start().map_err(|e| format!("start: {e}"))?;
    if dirty_log {
        fresh
            .enable_dirty_log()
            .map_err(|e| format!("enable the dirty log: {e}"))?;
    }
    *w.input.lock().unwrap_or_else(PoisonError::into_inner) = fresh.serial_input_handle();
    *vm = fresh;
    Ok(())
}

fn handle(vm: &mut Vm, w: &Watch<'_>, p: Pending) -> Result<Handled, String> {
    let mut stream: UnixStream = p.stream;
    match p.request {
        ControlRequest::Status => {
            send_event(&mut stream, &ControlEvent::Status(status_of(vm, &w.config)));
            Ok(Handled::Running)
        }
        ControlRequest::PowerOff => {
            let reason = vm.stop().map_err(|e| e.to_string())?;
            eprintln!("\r\nvinfra-vm: powered off through the control socket\r");
            send_event(&mut stream, &ControlEvent::Done(()));
            Ok(Handled::Ended(reason, StopCause::Console))
        }
        ControlRequest::PowerButton => {
            match vm.press_power_button() {
                Ok(()) => send_event(&mut stream, &ControlEvent::Done(())),
                Err(e) => send_event(
                    &mut stream,
                    &ControlEvent::failed(format!("power button: {e}")),
                ),
            }
            Ok(Handled::Running)
        }
        ControlRequest::Reset => match reset(vm, w) {
            Ok(()) => {
                send_event(&mut stream, &ControlEvent::Done(()));
                Ok(Handled::Running)
            }
            Err(e) => {
                send_event(&mut stream, &ControlEvent::failed(format!("reset: {e}")));
                Err(format!("reset: {e}"))
            }
        },
        ControlRequest::Migrate(settings) => {
            match serve_migrate(vm, stream, settings, &w.served)? {
                true => Ok(Handled::Ended(ExitReason::Stopped, StopCause::Migrated)),
                false => Ok(Handled::Running),
            }
        }
        // The connection threads answer the rest.
        _ => {
            send_event(
                &mut stream,
                &ControlEvent::failed("not a request for the VM loop"),
            );
            Ok(Handled::Running)
        }
    }
}

/// Runs until the VM stops, a key or signal stops it, its host fences itself, or it
/// moves away.
pub fn watch(vm: &mut Vm, w: &mut Watch<'_>) -> Result<(ExitReason, StopCause), String> {
    loop {
        // 10 ms: how soon a control request or the parent's lapse is noticed.
        if let Some(r) = vm.wait_timeout(Duration::from_millis(10)) {
            return Ok((r, StopCause::Console));
        }
        if stop_requested() {
            return Ok((vm.stop().map_err(|e| e.to_string())?, StopCause::Signal));
        }
        if w.host.is_some_and(MountedHost::fenced) {
            eprintln!("\r\nvinfra-vm: this host fenced itself (vmfs heartbeat lost)\r");
            return Ok((vm.stop().map_err(|e| e.to_string())?, StopCause::Fenced));
        }
        if w.parent_fenced
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Acquire))
        {
            return Ok((vm.stop().map_err(|e| e.to_string())?, StopCause::Fenced));
        }
        *w.status.lock().unwrap_or_else(PoisonError::into_inner) = Some(status_of(vm, &w.config));
        let pending = w.control.as_ref().and_then(|rx| rx.try_recv().ok());
        if let Some(p) = pending {
            if let Handled::Ended(reason, cause) = handle(vm, w, p)? {
                return Ok((reason, cause));
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
