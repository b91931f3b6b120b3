//! `vmfs-vm`: run one VM whose virtio-blk disk is a virtual disk on a shared vmfs
//! volume, as one host of the cluster.
//!
//! Mounts the volume (an image file standing in for a SAN LUN) as `--host-id`, keeps
//! its heartbeat going, opens (or with `--create-mib` first creates) the disk with an
//! exclusive lock and boots the kernel with that disk. A second `vmfs-vm` on the same
//! disk, from any host, is refused while this one runs. stdout carries the guest's
//! serial console; logs go to stderr (`RUST_LOG=info` for more).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use vinfra_host::exit_status::{self, StopCause};
use vinfra_host::logging;
use vinfra_host::terminal::{install_stop_signals, stop_requested};
use vinfra_host::vmfs_disk::{MountedHost, VmfsDiskBackend};
use vinfra_vmfs::MountOptions;
use vinfra_vmm_core::{DiskConfig, SerialInputSource, SerialOutput, Vm, VmConfig};

#[derive(Parser, Debug)]
#[command(
    name = "vmfs-vm",
    version,
    about = "Run a VM on a virtual disk of a shared vmfs volume",
    after_help = exit_status::VMFS_VM_HELP
)]
struct Cli {
    /// The vmfs volume (image file), formatted with `vmfs mkfs`.
    #[arg(long)]
    volume: PathBuf,
    /// This host's id on the volume (heartbeat slot, lock owner), 0..64.
    #[arg(long)]
    host_id: u32,
    /// The disk's descriptor path on the volume, e.g. `/vm1/vm1.vmdk`.
    #[arg(long)]
    disk: String,
    /// Create the disk with this capacity in MiB when it does not exist yet.
    #[arg(long)]
    create_mib: Option<u64>,
    /// Kernel: an ELF with a PVH note (the test guests), an ELF vmlinux or a bzImage.
    #[arg(long)]
    kernel: PathBuf,
    /// Kernel command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 64)]
    memory_mib: u64,
    /// Override the volume's heartbeat lease in ms (tests use short ones).
    #[arg(long)]
    lease_ms: Option<u32>,
    /// Feed stdin to the guest's serial port (a test drives the workload guest's
    /// commands through it); off by default, so a supervisor's stdin is left alone.
    #[arg(long)]
    console_input: bool,
    /// Listen on this Unix socket for a backup proxy's snapshot and consolidate
    /// requests (see `vinfra_host::backup_control`).
    #[arg(long)]
    backup_control: Option<PathBuf>,
}

fn main() -> ExitCode {
    logging::init("warn");
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vmfs-vm: {e}");
            ExitCode::from(exit_status::ERROR)
        }
    }
}

fn run(cli: &Cli) -> Result<u8, Box<dyn std::error::Error>> {
    let mut opts = MountOptions::default();
    opts.lease_ms = cli.lease_ms;
    opts.pid = std::process::id();
    opts.name = "vmfs-vm".into();
    let host = MountedHost::mount(&cli.volume, cli.host_id, &opts)?;
    let disk_path = if cli.disk.starts_with('/') {
        cli.disk.clone()
    } else {
        format!("/{}", cli.disk)
    };
    let backend = match cli.create_mib {
        Some(mib) if host.volume().stat(&disk_path).is_err() => {
            VmfsDiskBackend::create(host.volume(), &disk_path, mib << 20)?
        }
        _ => VmfsDiskBackend::open(host.volume(), &disk_path)?,
    };
    let backend = Arc::new(backend);
    if let Some(sock) = &cli.backup_control {
        vinfra_host::backup_control::serve(sock, Arc::downgrade(&backend))?;
    }
    install_stop_signals()?;

    let config = VmConfig::new(&cli.kernel)
        .memory_mib(cli.memory_mib)
        .cmdline(cli.cmdline.clone())
        .disk(DiskConfig::backend(&disk_path, backend.clone()))
        .serial_output(SerialOutput::Stdio)
        .serial_input(if cli.console_input {
            SerialInputSource::Stdio
        } else {
            SerialInputSource::None
        });
    let mut vm = Vm::create(config)?;
    vm.start()?;
    // Bounded by the guest, a signal or fencing; each turn waits at most 100 ms.
    let ended = loop {
        if let Some(reason) = vm.wait_timeout(Duration::from_millis(100)) {
            break (reason, StopCause::Console);
        }
        if host.fenced() {
            eprintln!(
                "vmfs-vm: host {} fenced itself; stopping the VM",
                cli.host_id
            );
            vm.stop()?;
            return Ok(exit_status::FENCED);
        }
        if stop_requested() {
            break (vm.stop()?, StopCause::Signal);
        }
    };
    let (status, message) = exit_status::outcome(Ok(ended));
    if let Some(m) = message {
        eprintln!("vmfs-vm: {m}");
    }
    drop(vm);
    if let Some(b) = Arc::into_inner(backend) {
        b.close()?;
    }
    host.unmount()?;
    Ok(status)
}
