//! `vinfra-vm`: run one VM with its serial console on this terminal.
//!
//! stdout carries nothing but the guest's console; logs go to stderr
//! (`RUST_LOG=debug` for more; coloured only when stderr is a terminal). `Ctrl-A x` or
//! Ctrl-C stops the VM. With `--snapshot-dir DIR`, `Ctrl-A s` saves the VM there and
//! stops; `--restore DIR` (with the same VM flags) resumes it. `--timings` prints how
//! long the lifecycle steps took on stderr (one `vinfra-vm: timings: key=value ...` line
//! per step), for the peer benchmarks. `--help` lists the exit statuses.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use vinfra_host::exit_status::{self, outcome, StopCause};
use vinfra_host::logging;
use vinfra_host::terminal::{install_stop_signals, stop_requested, RawMode};
use vinfra_vmm_core::{
    DiskConfig, ExitReason, SerialInput, SerialInputSource, SerialOutput, Vm, VmConfig,
};

const CTRL_A: u8 = 0x01;

#[derive(Parser, Debug)]
#[command(
    name = "vinfra-vm",
    version,
    about = "Run a VM on KVM with its serial console on this terminal",
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
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Kernel: an ELF with a PVH note, an ELF vmlinux, or a bzImage.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initial ramdisk (Linux boot protocol).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long)]
    cmdline: Option<String>,
    /// Guest memory in MiB.
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Number of vCPUs.
    #[arg(long)]
    vcpus: Option<u32>,
    /// A virtio-blk disk: PATH or PATH,ro (repeatable).
    #[arg(long = "disk", value_name = "PATH[,ro]")]
    disks: Vec<String>,
    /// A JSON VmConfig; the flags above override its fields.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Mark guest memory mergeable (KSM).
    #[arg(long)]
    page_sharing: bool,
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
}

/// Milliseconds since `t`, for the `--timings` lines.
fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// What the console keys ask for.
enum Key {
    Stop,
    Snapshot,
}

fn parse_disk(spec: &str) -> Result<DiskConfig, String> {
    let (path, ro) = match spec.rsplit_once(',') {
        Some((p, "ro")) => (p, true),
        Some((p, "rw")) => (p, false),
        Some((_, other)) => return Err(format!("disk option {other:?} is not ro or rw")),
        None => (spec, false),
    };
    let mut d = DiskConfig::new(path);
    d.read_only = ro;
    Ok(d)
}

fn build_config(a: RunArgs) -> Result<VmConfig, String> {
    let mut cfg = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()))?;
            serde_json::from_str::<VmConfig>(&text)
                .map_err(|e| format!("parse {}: {e}", p.display()))?
        }
        None => {
            let k = a.kernel.clone().ok_or("--kernel or --config is required")?;
            VmConfig::new(k)
        }
    };
    if let Some(k) = a.kernel {
        cfg.kernel = k;
    }
    if let Some(i) = a.initrd {
        cfg.initrd = Some(i);
    }
    if let Some(c) = a.cmdline {
        cfg.cmdline = c;
    }
    if let Some(m) = a.memory_mib {
        cfg.memory_mib = m;
    }
    if let Some(v) = a.vcpus {
        cfg.vcpus = v;
    }
    for d in &a.disks {
        cfg.disks.push(parse_disk(d)?);
    }
    cfg.page_sharing |= a.page_sharing;
    cfg.serial_output = SerialOutput::Stdio;
    // This program forwards stdin itself (it watches for Ctrl-A).
    cfg.serial_input = SerialInputSource::None;
    Ok(cfg)
}

/// Forwards stdin to the guest; `Ctrl-A x` asks to stop, `Ctrl-A s` for a snapshot,
/// `Ctrl-A Ctrl-A` sends one Ctrl-A.
fn forward_stdin(input: SerialInput, keys: std::sync::mpsc::Sender<Key>) {
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

fn run(mut args: RunArgs, t_main: Instant) -> Result<(ExitReason, StopCause), String> {
    let snapshot_dir = args.snapshot_dir.take();
    let restore = args.restore.take();
    let timings = args.timings;
    let cfg = build_config(args)?;
    let t_build = Instant::now();
    let mut vm = match &restore {
        Some(dir) => Vm::restore(cfg, dir).map_err(|e| e.to_string())?,
        None => Vm::create(cfg).map_err(|e| e.to_string())?,
    };
    let build_ms = ms_since(t_build);
    install_stop_signals().map_err(|e| format!("install signal handlers: {e}"))?;
    let raw = RawMode::enable(0).map_err(|e| format!("terminal raw mode: {e}"))?;
    if raw.is_some() {
        eprintln!("vinfra-vm: console attached; Ctrl-A x or Ctrl-C stops the VM\r");
    }
    let (keys_tx, keys_rx) = std::sync::mpsc::channel();
    let input = vm.serial_input_handle();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || forward_stdin(input, keys_tx))
        .map_err(|e| format!("spawn stdin thread: {e}"))?;
    let t_run = Instant::now();
    if restore.is_some() {
        vm.resume().map_err(|e| e.to_string())?;
    } else {
        vm.start().map_err(|e| e.to_string())?;
    }
    if timings {
        let (built, ran) = if restore.is_some() {
            ("restore_ms", "resume_ms")
        } else {
            ("create_ms", "start_ms")
        };
        // main_to_running_ms: from the first line of main to vCPUs running, i.e. what
        // the process adds before the guest runs, without the exec and dynamic loading.
        eprintln!(
            "vinfra-vm: timings: {built}={build_ms:.2} {ran}={:.2} main_to_running_ms={:.2}\r",
            ms_since(t_run),
            ms_since(t_main)
        );
    }
    let reason = loop {
        if let Some(r) = vm.wait_timeout(Duration::from_millis(50)) {
            break (r, StopCause::Console);
        }
        if stop_requested() {
            break (vm.stop().map_err(|e| e.to_string())?, StopCause::Signal);
        }
        match keys_rx.try_recv() {
            Ok(Key::Stop) => break (vm.stop().map_err(|e| e.to_string())?, StopCause::Console),
            Ok(Key::Snapshot) => match &snapshot_dir {
                Some(dir) => {
                    let t_pause = Instant::now();
                    vm.pause().map_err(|e| e.to_string())?;
                    let pause_ms = ms_since(t_pause);
                    let t_save = Instant::now();
                    let stats = vm.snapshot(dir).map_err(|e| e.to_string())?;
                    let save_ms = ms_since(t_save);
                    if timings {
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
                    break (vm.stop().map_err(|e| e.to_string())?, StopCause::Console);
                }
                None => eprintln!("\r\nvinfra-vm: no --snapshot-dir given; Ctrl-A s ignored\r"),
            },
            Err(_) => {}
        }
    };
    drop(raw);
    Ok(reason)
}

fn main() -> ExitCode {
    let t_main = Instant::now();
    logging::init("warn");
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run(a, t_main),
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
}
