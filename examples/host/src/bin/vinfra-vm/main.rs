//! `vinfra-vm`: run one VM with its serial console on this terminal, and move it live to
//! another host.
//!
//! stdout carries nothing but the guest's console; logs go to stderr (`RUST_LOG=debug`
//! for more; coloured only when stderr is a terminal). `Ctrl-A x` or Ctrl-C stops the VM.
//! With `--snapshot-dir DIR`, `Ctrl-A s` saves the VM there and stops; `--restore DIR`
//! (with the same VM flags) resumes it. `--timings` prints how long the lifecycle steps
//! took on stderr (one `vinfra-vm: timings: key=value ...` line per step), for the peer
//! benchmarks. `--help` lists the exit statuses.
//!
//! Live migration: `vinfra-vm incoming --listen HOST:PORT <same VM flags>` waits for a VM
//! and runs it with its console; `vinfra-vm run --control SOCK ...` serves a control
//! socket on which `vinfra-vm migrate --control SOCK --to HOST:PORT` sends the VM there
//! (a progress bar on stderr, `--json` statistics on stdout). Both ends take
//! `--key-file FILE` (the cluster key, from `vinfra-vm keygen`) or, explicitly,
//! `--plaintext`. VM disks on a shared vmfs volume (`--volume --host-id --vmfs-disk`)
//! hand their exclusive lock over at the switchover.
//!
//! Under a host process (`vinfra-host run` runs each VM as a child `vinfra-vm run`): the
//! control socket also answers `status`, `power_off`, `reset`, and `snapshot` /
//! `consolidate` of a vmfs disk for a backup (the protocol is in
//! `vinfra_host::migration`); `--host-id auto` mounts the volume in a free slot of its
//! own; `--parent-lease-fd FD` stops the VM (exit status 75) when the host's lease bytes
//! stop coming for half a lease or the pipe closes ([`parent`]).

mod console;
mod control;
mod migrate;
mod parent;
mod vm_args;

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use vinfra_host::exit_status::{self, outcome, StopCause};
use vinfra_host::logging;
use vinfra_host::terminal::{install_stop_signals, RawMode};
use vinfra_vmm_core::{ExitReason, Vm};

use crate::console::{forward_stdin, ms_since, watch, Watch};
use crate::migrate::{incoming, migrate_command, IncomingArgs, MigrateArgs, Served};
use crate::vm_args::{Built, DiskLocks, VmArgs};

#[derive(Parser, Debug)]
#[command(
    name = "vinfra-vm",
    version,
    about = "Run a VM on KVM with its serial console on this terminal, and move it live",
    after_help = exit_status::VINFRA_VM_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a kernel and attach the console until the VM stops.
    #[command(after_help = exit_status::VINFRA_VM_HELP)]
    Run(RunArgs),
    /// Wait for a VM sent by `vinfra-vm migrate`, then run it with its console here.
    #[command(after_help = exit_status::VINFRA_VM_HELP)]
    Incoming(IncomingArgs),
    /// Send the VM of a running `vinfra-vm run --control SOCK` to another host, live.
    Migrate(MigrateArgs),
    /// Print a new random cluster key (64 hex digits) for `--key-file`.
    Keygen,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Where `Ctrl-A s` writes a snapshot (the VM is paused, saved, then stopped).
    #[arg(long, value_name = "DIR")]
    snapshot_dir: Option<PathBuf>,
    /// Resume a snapshot from DIR instead of booting (give the same VM flags as when
    /// it was taken).
    #[arg(long, value_name = "DIR")]
    restore: Option<PathBuf>,
    /// Print how long create/restore, start/resume, pause and snapshot took on stderr.
    #[arg(long)]
    timings: bool,
    /// Serve a control socket here, for `vinfra-vm migrate` and the host process
    /// (status, power_off, reset, snapshot and consolidate of a vmfs disk).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// With --control, turn the guest's dirty log on only when a migration starts rather
    /// than now. Turning it on stalls the guest for a few ms on nested KVM; by default
    /// that happens at start, not in the middle of a migration.
    #[arg(long, requires = "control")]
    late_dirty_log: bool,
    #[command(flatten)]
    parent: ParentArgs,
}

/// How a VM run by a host process stops with the host.
#[derive(Args, Debug, Clone)]
pub struct ParentArgs {
    /// Read the parent host's lease on this inherited pipe: one byte each time the host
    /// confirmed its volume lease. Silence for half the lease, or the pipe's end (the
    /// host died), stops the VM with exit status 75.
    #[arg(long, value_name = "FD")]
    pub parent_lease_fd: Option<i32>,
    /// The lease the parent's silence is measured against, in ms (default: --lease-ms,
    /// else the mounted volume's lease, else 10000).
    #[arg(long, requires = "parent_lease_fd")]
    pub parent_lease_ms: Option<u64>,
}

/// The default lease for `--parent-lease-fd` without a volume or `--parent-lease-ms`.
const PARENT_LEASE_MS: u64 = 10_000;

impl ParentArgs {
    /// Starts the watchdog, if asked for.
    pub(crate) fn watch(
        &self,
        built: &Built,
    ) -> Result<Option<Arc<std::sync::atomic::AtomicBool>>, String> {
        let Some(fd) = self.parent_lease_fd else {
            return Ok(None);
        };
        let lease_ms = self
            .parent_lease_ms
            .or(built.host.as_ref().map(|h| h.volume().lease_ms()))
            .unwrap_or(PARENT_LEASE_MS);
        parent::watch(fd, lease_ms).map(Some)
    }
}

/// A control socket that is removed again when the process ends.
///
/// It is bound under a temporary name (`PATH.starting`) and renamed to its path only
/// once it is served, when the VM runs: a client that connected to a socket nobody
/// accepts on would wait for its whole read timeout (the host's loop asks arriving VMs
/// each tick whether they run yet, for seconds while the memory comes in), whereas a
/// missing path is an immediate answer.
struct ControlSocket {
    listener: Option<UnixListener>,
    /// Where clients find it, and the name it has until then.
    path: Option<(PathBuf, PathBuf)>,
}

impl ControlSocket {
    fn bind(path: Option<&PathBuf>) -> Result<Self, String> {
        let Some(path) = path else {
            return Ok(Self {
                listener: None,
                path: None,
            });
        };
        let mut starting = path.clone().into_os_string();
        starting.push(".starting");
        let starting = PathBuf::from(starting);
        // A socket file left by a killed process would refuse the bind, or answer no one.
        for p in [path, &starting] {
            if std::fs::symlink_metadata(p)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(p);
            }
        }
        let listener = UnixListener::bind(&starting)
            .map_err(|e| format!("control socket {}: {e}", starting.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("control socket {}: {e}", starting.display()))?;
        Ok(Self {
            listener: Some(listener),
            path: Some((path.clone(), starting)),
        })
    }

    /// Gives the socket, now served, its path.
    fn publish(&self) -> Result<(), String> {
        match &self.path {
            Some((path, starting)) => std::fs::rename(starting, path)
                .map_err(|e| format!("control socket {}: {e}", path.display())),
            None => Ok(()),
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if let Some((path, starting)) = &self.path {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(starting);
        }
    }
}

/// Attaches the console to a running (or just resumed) VM until it ends.
#[allow(clippy::too_many_arguments, reason = "one call site per subcommand")]
fn attach(
    mut vm: Vm,
    built: &Built,
    control: &mut ControlSocket,
    snapshot_dir: Option<PathBuf>,
    timings: bool,
    early_dirty_log: bool,
    parent_fenced: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> Result<(ExitReason, StopCause), String> {
    install_stop_signals().map_err(|e| format!("install signal handlers: {e}"))?;
    let raw = RawMode::enable(0).map_err(|e| format!("terminal raw mode: {e}"))?;
    if raw.is_some() {
        eprintln!("vinfra-vm: console attached; Ctrl-A x or Ctrl-C stops the VM\r");
    }
    if early_dirty_log && control.listener.is_some() && !vm.dirty_log_enabled() {
        // A VM that may be migrated logs its writes from the start: turning the log on
        // stalls the guest for a few ms on this nested KVM, better now than during a
        // migration (see vinfra_vmotion::LocalVm::new).
        vm.enable_dirty_log()
            .map_err(|e| format!("enable the dirty log: {e}"))?;
    }
    let (keys_tx, keys_rx) = std::sync::mpsc::channel();
    let input = Arc::new(Mutex::new(vm.serial_input_handle()));
    let stdin_input = input.clone();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || forward_stdin(stdin_input, keys_tx))
        .map_err(|e| format!("spawn stdin thread: {e}"))?;
    let status = control::SharedStatus::default();
    let requests = match control.listener.take() {
        Some(l) => Some(control::serve(
            l,
            built.vmfs_disks.iter().map(Arc::downgrade).collect(),
            status.clone(),
        )?),
        None => None,
    };
    control.publish()?;
    let mut w = Watch {
        keys: keys_rx,
        snapshot_dir,
        timings,
        host: built.host.as_ref(),
        control: requests,
        served: Served {
            disks: built.vmfs_disks.clone(),
        },
        parent_fenced,
        config: built.config.clone(),
        input,
        status,
    };
    let ended = watch(&mut vm, &mut w);
    drop(vm);
    drop(raw);
    ended
}

fn run(mut args: RunArgs, t_main: Instant) -> Result<(ExitReason, StopCause), String> {
    let snapshot_dir = args.snapshot_dir.take();
    let restore = args.restore.take();
    let timings = args.timings;
    let mut control = ControlSocket::bind(args.control.as_ref())?;
    let built = args.vm.build(DiskLocks::Take)?;
    let parent_fenced = args.parent.watch(&built)?;
    let t_build = Instant::now();
    let mut vm = match &restore {
        Some(dir) => Vm::restore(built.config.clone(), dir).map_err(|e| e.to_string())?,
        None => Vm::create(built.config.clone()).map_err(|e| e.to_string())?,
    };
    let build_ms = ms_since(t_build);
    let t_run = Instant::now();
    if restore.is_some() {
        vm.resume().map_err(|e| e.to_string())?;
    } else {
        vm.start().map_err(|e| e.to_string())?;
    }
    if timings {
        let (built_key, ran) = if restore.is_some() {
            ("restore_ms", "resume_ms")
        } else {
            ("create_ms", "start_ms")
        };
        // main_to_running_ms: from the first line of main to vCPUs running, i.e. what
        // the process adds before the guest runs, without the exec and dynamic loading.
        eprintln!(
            "vinfra-vm: timings: {built_key}={build_ms:.2} {ran}={:.2} main_to_running_ms={:.2}\r",
            ms_since(t_run),
            ms_since(t_main)
        );
    }
    let ended = attach(
        vm,
        &built,
        &mut control,
        snapshot_dir,
        timings,
        !args.late_dirty_log,
        parent_fenced,
    );
    close(built);
    ended
}

fn run_incoming(args: &IncomingArgs) -> Result<(ExitReason, StopCause), String> {
    let mut control = ControlSocket::bind(args.control.as_ref())?;
    let arrived = incoming(args)?;
    let _ = arrived.stats;
    let ended = attach(
        arrived.vm,
        &arrived.built,
        &mut control,
        None,
        false,
        true,
        arrived.parent_fenced,
    );
    close(arrived.built);
    ended
}

/// Flushes and unlocks the vmfs disks and unmounts the volume.
fn close(built: Built) {
    for disk in built.vmfs_disks {
        if let Some(d) = std::sync::Arc::into_inner(disk) {
            if let Err(e) = d.close() {
                eprintln!("vinfra-vm: closing a vmfs disk: {e}");
            }
        }
    }
    if let Some(host) = built.host {
        if let Err(e) = host.unmount() {
            eprintln!("vinfra-vm: unmounting the volume: {e}");
        }
    }
}

fn main() -> ExitCode {
    let t_main = Instant::now();
    logging::init("warn");
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run(a, t_main),
        Command::Incoming(a) => run_incoming(&a),
        Command::Migrate(a) => {
            return match migrate_command(&a) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vinfra-vm: {e}");
                    ExitCode::from(exit_status::ERROR)
                }
            }
        }
        Command::Keygen => {
            return match vinfra_vmotion::ClusterKey::generate() {
                Ok(key) => {
                    println!("{}", key.to_hex());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vinfra-vm: {e}");
                    ExitCode::from(exit_status::ERROR)
                }
            }
        }
    };
    let (code, message) = outcome(result);
    if let Some(m) = message {
        eprintln!("vinfra-vm: {m}");
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_help_lists_the_exit_statuses() {
        let err = Cli::try_parse_from(["vinfra-vm", "run", "--help"]).unwrap_err();
        assert!(err.to_string().contains("143  SIGTERM or SIGINT"), "{err}");
    }

    #[test]
    fn migrate_needs_a_key_or_plaintext() {
        let cli = Cli::try_parse_from(["vinfra-vm", "migrate", "--control", "/x", "--to", "h:1"])
            .unwrap();
        let Command::Migrate(a) = cli.command else {
            panic!()
        };
        let e = migrate_command(&a).unwrap_err();
        assert!(e.contains("--key-file"), "{e}");
    }
}
