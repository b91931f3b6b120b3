//! Live migration from the command line: the control socket a running VM serves
//! (`run --control`), the `migrate` client with its progress bar, and `incoming`, which
//! waits for a VM, receives it and runs it with its console.

use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vinfra_host::migration::{
    request, security, send_event, ControlEvent, ControlRequest, MigrateSettings, VmfsHandover,
};
use vinfra_host::vmfs_disk::VmfsDiskBackend;
use vinfra_vmm_core::Vm;
use vinfra_vmotion::vmm_core::{ArrivingVm, LocalVm};
use vinfra_vmotion::wire::{CpuidLeaf, MemoryRegion};
use vinfra_vmotion::{
    migrate, receive, DiskHandover, Error, IncomingVm, ReceiveOptions, ReceiveStats, VmError,
};

use crate::vm_args::{Built, DiskLocks, VmArgs};

/// What a running VM needs to serve a `migrate` request.
pub struct Served {
    pub disks: Vec<Arc<VmfsDiskBackend>>,
}

fn handovers(disks: &[Arc<VmfsDiskBackend>]) -> Vec<Arc<dyn DiskHandover>> {
    disks
        .iter()
        .map(|d| Arc::new(VmfsHandover(d.clone())) as Arc<dyn DiskHandover>)
        .collect()
}

/// The nice value of the threads that send and receive the VM's memory: below the
/// vCPUs', so that on a busy host the guest keeps its share of the CPU during the copy (on
/// 2 cores, the sender, the destination's receiver and the vCPU compete; at nice 0 the
/// vCPU loses whole timeslices).
const MIGRATION_NICE: i32 = 10;

/// This thread's nice value raised for a while, set back on drop (where allowed: without
/// CAP_SYS_NICE the kernel refuses to lower it again, and the thread stays nicer).
struct ThreadNice {
    before: Option<i32>,
}

impl ThreadNice {
    fn lower(nice: i32) -> Self {
        // SAFETY: gettid and get/setpriority on this thread's own id touch no memory.
        #[allow(unsafe_code)]
        let before = unsafe {
            let tid = libc::gettid() as libc::id_t;
            *libc::__errno_location() = 0;
            let was = libc::getpriority(libc::PRIO_PROCESS, tid);
            (libc::setpriority(libc::PRIO_PROCESS, tid, nice) == 0).then_some(was)
        };
        Self { before }
    }
}

impl Drop for ThreadNice {
    fn drop(&mut self) {
        if let Some(was) = self.before {
            // SAFETY: as in `lower`.
            #[allow(unsafe_code)]
            let ok = unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, was) == 0
            };
            if !ok {
                tracing::debug!("the migration thread keeps nice {MIGRATION_NICE}");
            }
        }
    }
}

/// How long a refused connection to the destination is tried again: a destination host
/// answers its API as soon as it has started `vinfra-vm incoming`, which binds its port a
/// few ms later (more on a loaded host).
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);

/// Connects to the destination, again while it refuses (not listening yet).
fn connect_patiently(to: &str) -> std::io::Result<TcpStream> {
    let deadline = std::time::Instant::now() + CONNECT_PATIENCE;
    loop {
        match TcpStream::connect(to) {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Serves a `migrate` request. `Ok(true)`: the VM moved away (the caller exits).
/// `Ok(false)`: it runs here still. `Err`: it is in doubt and must not run here again.
pub fn serve_migrate(
    vm: &mut Vm,
    mut stream: UnixStream,
    settings: MigrateSettings,
    served: &Served,
) -> Result<bool, String> {
    let fail = |stream: &mut UnixStream, error: String| {
        eprintln!(
            "\r\nvinfra-vm: migration to {} failed: {error}; the VM runs here\r",
            settings.to
        );
        send_event(
            stream,
            &ControlEvent::Failed {
                error,
                in_doubt: false,
            },
        );
        Ok(false)
    };
    let opts = match settings.options() {
        Ok(o) => o,
        Err(e) => return fail(&mut stream, e),
    };
    let tcp = match connect_patiently(&settings.to) {
        Ok(t) => t,
        Err(e) => return fail(&mut stream, format!("connect to {}: {e}", settings.to)),
    };
    let _ = tcp.set_nodelay(true);
    let mut local = LocalVm::new(vm).with_disks(handovers(&served.disks));
    let niced = ThreadNice::lower(MIGRATION_NICE);
    let result = migrate(&mut local, tcp, &opts, |p| {
        send_event(&mut stream, &ControlEvent::Progress(*p));
    });
    drop(niced);
    match result {
        Ok(stats) => {
            eprintln!(
                "\r\nvinfra-vm: the VM moved to {} (downtime {:.1} ms, {} rounds, {} bytes)\r",
                settings.to, stats.downtime_ms, stats.rounds, stats.bytes_sent
            );
            send_event(&mut stream, &ControlEvent::Migrated(stats));
            Ok(true)
        }
        Err(e @ Error::InDoubt(_)) => {
            send_event(
                &mut stream,
                &ControlEvent::Failed {
                    error: e.to_string(),
                    in_doubt: true,
                },
            );
            Err(format!("migration to {}: {e}", settings.to))
        }
        Err(e) => fail(&mut stream, e.to_string()),
    }
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The running VM's control socket (`vinfra-vm run --control PATH`).
    #[arg(long)]
    pub control: PathBuf,
    /// The destination, `host:port`, where `vinfra-vm incoming --listen` waits.
    #[arg(long)]
    pub to: String,
    /// The cluster key (64 hex digits; `vinfra-vm keygen` makes one).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Send the VM unencrypted and unauthenticated (say so explicitly).
    #[arg(long)]
    pub plaintext: bool,
    /// Downtime target in ms: the VM is paused for the last round once the rest fits.
    #[arg(long, default_value_t = 30)]
    pub downtime_ms: u64,
    /// Bandwidth cap in MiB/s.
    #[arg(long)]
    pub bandwidth_mib: Option<u64>,
    /// Give up after this many seconds (the VM keeps running here).
    #[arg(long, default_value_t = 120)]
    pub time_limit_s: u64,
    /// Do not throttle a guest that dirties memory faster than it can be sent.
    #[arg(long)]
    pub no_auto_converge: bool,
    /// Print the statistics as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `vinfra-vm migrate`: asks the VM to go, shows progress, prints the statistics.
pub fn migrate_command(a: &MigrateArgs) -> Result<(), String> {
    let settings = MigrateSettings {
        to: a.to.clone(),
        key_file: a
            .key_file
            .as_ref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        plaintext: a.plaintext,
        downtime_ms: a.downtime_ms,
        bandwidth_bytes_per_s: a.bandwidth_mib.map(|m| m << 20),
        time_limit_ms: a.time_limit_s.saturating_mul(1000),
        auto_converge: !a.no_auto_converge,
    };
    // Refuse a missing key here, before the VM is asked.
    settings.options()?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:32} [{bar:30}] {pos}/{len} pages, {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let last = request(&a.control, &ControlRequest::Migrate(settings), |event| {
        if let ControlEvent::Progress(p) = event {
            bar.set_length(p.pages_total);
            bar.set_position(p.pages_total.saturating_sub(p.pages_left));
            bar.set_message(format!(
                "{:?} round {} {:.0} MiB/s{}",
                p.stage,
                p.round,
                p.bandwidth_bytes_per_s / f64::from(1u32 << 20),
                if p.throttle_pct > 0 {
                    format!(" throttle {}%", p.throttle_pct)
                } else {
                    String::new()
                }
            ));
        }
    })?;
    bar.finish_and_clear();
    match last {
        ControlEvent::Migrated(stats) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string(&stats).map_err(|e| e.to_string())?
                );
            } else {
                eprintln!(
                    "vinfra-vm: migrated to {} in {} ms: downtime {:.1} ms, {} rounds, {:.1} MiB sent{}",
                    a.to,
                    stats.total_ms,
                    stats.downtime_ms,
                    stats.rounds,
                    stats.bytes_sent as f64 / f64::from(1u32 << 20),
                    if stats.encrypted { ", encrypted" } else { ", plaintext" }
                );
            }
            Ok(())
        }
        ControlEvent::Failed {
            error,
            in_doubt: false,
        } => Err(format!(
            "migration failed, the VM runs on the source: {error}"
        )),
        ControlEvent::Failed {
            error,
            in_doubt: true,
        } => Err(format!(
            "migration in doubt, the VM is paused on the source and must not run there: {error}"
        )),
        other => Err(format!("unexpected answer from the VM: {other:?}")),
    }
}

#[derive(Args, Debug)]
pub struct IncomingArgs {
    #[command(flatten)]
    pub vm: VmArgs,
    /// Where to wait for the source, `host:port` (port 0: any free port; the bound address
    /// is printed on stderr).
    #[arg(long)]
    pub listen: String,
    /// The cluster key (64 hex digits).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Accept an unencrypted, unauthenticated migration (say so explicitly).
    #[arg(long)]
    pub plaintext: bool,
    /// A control socket for migrating the VM on again once it runs here (and for the
    /// host process's requests, as `run --control`).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    #[command(flatten)]
    pub parent: crate::ParentArgs,
}

/// What `incoming` received.
pub struct Arrived {
    pub vm: Vm,
    /// The parent's lease watchdog, started before the wait: a host whose lease lapses
    /// does not receive VMs.
    pub parent_fenced: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    pub built: Built,
    pub stats: ReceiveStats,
}

/// When the NICs announce their MACs again after the one RARP each sends on resume (ms
/// after it), as QEMU's self-announce repeats it: one lost frame (a bridge port not
/// forwarding yet, a busy tunnel) must not leave the VM unreachable until the switches'
/// tables age out.
const ANNOUNCE_AGAIN_MS: [u64; 4] = [50, 150, 300, 500];

/// Repeats the NICs' announcements on a thread of their own.
fn announce_again(vm: &vinfra_vmm_core::Vm) {
    let nets = vm.nets().to_vec();
    if nets.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("announce".into())
        .spawn(move || {
            let mut slept = 0;
            for at in ANNOUNCE_AGAIN_MS {
                std::thread::sleep(std::time::Duration::from_millis(at - slept));
                slept = at;
                for n in &nets {
                    n.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .announce();
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "announce thread");
    }
}

/// The arriving VM, received at [`MIGRATION_NICE`] until its state comes: the vCPU and
/// device threads that `restore` starts inherit the nice value of the thread that starts
/// them, so it is set back first.
struct NicedArrival {
    vm: ArrivingVm,
    nice: Option<ThreadNice>,
}

impl IncomingVm for NicedArrival {
    type Memory = <ArrivingVm as IncomingVm>::Memory;

    fn memory(&self) -> &Self::Memory {
        self.vm.memory()
    }

    fn memory_layout(&self) -> Vec<MemoryRegion> {
        self.vm.memory_layout()
    }

    fn supported_cpuid(&self) -> Result<Vec<CpuidLeaf>, VmError> {
        self.vm.supported_cpuid()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), VmError> {
        self.nice = None;
        self.vm.restore(state)
    }

    fn acquire_disks(&mut self) -> Result<(), VmError> {
        self.vm.acquire_disks()
    }

    fn resume(&mut self) -> Result<(), VmError> {
        self.vm.resume()
    }

    fn discard(&mut self) -> Result<(), VmError> {
        self.nice = None;
        self.vm.discard()
    }
}

/// Waits for one migration and returns the running VM.
pub fn incoming(a: &IncomingArgs) -> Result<Arrived, String> {
    let security = security(a.key_file.as_deref(), a.plaintext)?;
    let built = a.vm.build(DiskLocks::Detached)?;
    let parent_fenced = a.parent.watch(&built)?;
    let listener =
        TcpListener::bind(&a.listen).map_err(|e| format!("listen on {}: {e}", a.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let arriving = ArrivingVm::new(built.config.clone())
        .map_err(|e| e.to_string())?
        .with_disks(handovers(&built.vmfs_disks));
    eprintln!("vinfra-vm: waiting for a migration on {addr}");
    let (stream, peer) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut arriving = NicedArrival {
        vm: arriving,
        nice: Some(ThreadNice::lower(MIGRATION_NICE)),
    };
    let received = receive(&mut arriving, stream, &ReceiveOptions::new(security));
    arriving.nice = None;
    let stats = received.map_err(|e| format!("receive the VM from {peer}: {e}"))?;
    eprintln!(
        "vinfra-vm: received the VM from {peer}: {}",
        serde_json::to_string(&stats).unwrap_or_default()
    );
    let vm = arriving.vm.into_vm().ok_or("the VM was not restored")?;
    announce_again(&vm);
    Ok(Arrived {
        vm,
        parent_fenced,
        built,
        stats,
    })
}
