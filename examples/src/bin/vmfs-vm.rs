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
use vinfra_examples::vmfs_disk::{MountedHost, VmfsDiskBackend};
use vinfra_vmfs::MountOptions;
use vinfra_vmm_core::console::{install_stop_signals, stop_requested};
use vinfra_vmm_core::{DiskConfig, ExitReason, SerialOutput, Vm, VmConfig};

/// Exit status when the guest crashed (EX_SOFTWARE), as vinfra-vm.
const EXIT_CRASHED: u8 = 70;
/// Exit status when this host fenced itself and the VM was stopped.
const EXIT_FENCED: u8 = 75;
/// Exit status when SIGINT or SIGTERM stopped the VM, as vinfra-vm.
const EXIT_SIGNALLED: u8 = 143;

const EXIT_STATUSES: &str = "\
Exit status:
  V    the guest powered off, writing V (0-255) to the exit device (port 0xf4)
  0    the guest asked for a reboot (the VM is stopped, not rebooted)
  1    an error: bad flag, volume not mountable, disk locked by another live host...
  70   the VM crashed (KVM internal error, triple fault, failed entry)
  75   this host fenced itself (heartbeat not renewed for half a lease): VM stopped
  143  SIGTERM or SIGINT stopped the VM";

#[derive(Parser, Debug)]
#[command(
    name = "vmfs-vm",
    version,
    about = "Run a VM on a virtual disk of a shared vmfs volume",
    after_help = EXIT_STATUSES
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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vmfs-vm: {e}");
            ExitCode::from(1)
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
    install_stop_signals()?;

    let config = VmConfig::new(&cli.kernel)
        .memory_mib(cli.memory_mib)
        .cmdline(cli.cmdline.clone())
        .disk(DiskConfig::backend(&disk_path, backend.clone()))
        .serial_output(SerialOutput::Stdio);
    let mut vm = Vm::create(config)?;
    vm.start()?;
    // Bounded by the guest, a signal or fencing; each turn waits at most 100 ms.
    let status = loop {
        if let Some(reason) = vm.wait_timeout(Duration::from_millis(100)) {
            break match reason {
                ExitReason::Poweroff { code } => code,
                ExitReason::Crashed { reason } => {
                    eprintln!("vmfs-vm: the VM crashed: {reason}");
                    EXIT_CRASHED
                }
                _ => 0,
            };
        }
        if host.fenced() {
            eprintln!(
                "vmfs-vm: host {} fenced itself; stopping the VM",
                cli.host_id
            );
            vm.stop()?;
            return Ok(EXIT_FENCED);
        }
        if stop_requested() {
            vm.stop()?;
            break EXIT_SIGNALLED;
        }
    };
    drop(vm);
    if let Some(b) = Arc::into_inner(backend) {
        b.close()?;
    }
    host.unmount()?;
    Ok(status)
}
