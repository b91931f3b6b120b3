//! `vinfra-host`: one host of an HA cluster. `run` mounts the shared vmfs volume, runs the
//! HA agent (UDP heartbeats, isolation probes, the volume's heartbeats and VM locks) and
//! the VMs the cluster gives it, each in a `vinfra-vm` child process; `vm create` and `vm list` manage the VM definitions on the
//! volume, which any host can run.
//!
//! ```sh
//! vmfs mkfs cluster.vmfs --size-mib 256
//! vinfra-host keygen > cluster.key
//! vinfra-host vm create web-1 --volume cluster.vmfs --kernel guest.elf --memory-mib 32 \
//!     --priority high
//! vinfra-host run --config host1.json --volume cluster.vmfs --key-file cluster.key
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use vinfra_ha::datastore::{Datastore, VmfsDatastore};
use vinfra_ha::{ClusterKey, Config, HaSettings, IsolationResponse, RestartPriority};
use vinfra_host::cluster::{self, Ended, HostOptions};
use vinfra_host::{exit_status, logging};
use vinfra_vmfs::{FileDevice, MonotonicClock, MountOptions, Volume};
use vinfra_vmm_core::VmConfig;

const HELP: &str = "\
Exit status:
  0    stopped by SIGINT or SIGTERM (VMs stopped, volume unmounted)
  1    an error (bad flag or configuration, volume not mountable...)
  75   this host fenced itself (its volume heartbeat was not renewed for half a lease):
       every VM was stopped; start it again to rejoin";

#[derive(Parser, Debug)]
#[command(name = "vinfra-host", version, about = "One host of a vinfra HA cluster", after_help = HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run this host: the HA agent and the VMs the cluster gives it. Events are printed on
    /// stdout, one JSON object per line.
    Run(RunArgs),
    /// Manage the VM definitions on the volume.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Print a new random cluster key (64 hex digits) for `--key-file`.
    Keygen,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The HA configuration (JSON; see the vinfra-ha README).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The shared vmfs volume.
    #[arg(long, value_name = "FILE")]
    volume: PathBuf,
    /// The cluster key (64 hex digits).
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,
    /// Fault injection for drills and tests: the volume's I/O fails while FILE exists.
    #[arg(long, value_name = "FILE")]
    storage_fault_file: Option<PathBuf>,
    /// Where the VMs' configuration files and control sockets go (each VM runs in a
    /// `vinfra-vm` child; `$VINFRA_VM_BIN` names the binary, by default the one beside
    /// this one). Default: /tmp/vinfra-host-ID-PID, removed at the end.
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Serve the host API (HTTP + JSON, `vinfra` talks to it) on ADDR, e.g.
    /// `127.0.0.1:8700` (port 0: any free one; the `api` event says which). Clients
    /// authenticate with a token derived from the cluster key.
    #[arg(long, value_name = "ADDR")]
    api: Option<std::net::SocketAddr>,
    /// CPUID bits this host does not offer to VMs that arrive by live migration, e.g.
    /// `7.0.ebx:0x20` (repeatable; as EVC did): a VM whose guest may see them is refused
    /// before anything moves.
    #[arg(long = "hide-cpuid", value_name = "LEAF.SUB.REG:MASK")]
    hide_cpuid: Vec<vinfra_vmm_core::CpuidMask>,
    /// The address VMs arrive on by live migration: the VMotion interface, apart from
    /// the management network (HA heartbeats, API). Default: the HA address.
    #[arg(long, value_name = "IP")]
    vmotion_address: Option<std::net::IpAddr>,
    /// The host's virtual switch (a JSON SwitchConfig: port groups, uplink, VXLAN
    /// peers), applied idempotently at start; VMs' NICs plug into its port groups.
    #[arg(long, value_name = "FILE")]
    switch: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct VolumeArgs {
    /// The shared vmfs volume.
    #[arg(long, value_name = "FILE")]
    volume: PathBuf,
    /// The vmfs host slot to mount the volume as (one no running host uses).
    #[arg(long, default_value_t = 63)]
    host_id: u32,
}

#[derive(Subcommand, Debug)]
enum VmCommand {
    /// Define a VM on the volume (its HA settings and its vmm-core configuration).
    Create(CreateArgs),
    /// List the VMs on the volume with the host that runs each.
    List(VolumeArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Priority {
    Disabled,
    Low,
    Medium,
    High,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Response {
    LeaveOn,
    PowerOff,
    ShutDown,
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// The VM's name (its directory /vms/NAME on the volume).
    name: String,
    #[command(flatten)]
    volume: VolumeArgs,
    /// The guest kernel (a path every host can read).
    #[arg(long)]
    kernel: PathBuf,
    /// Kernel command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Guest RAM.
    #[arg(long, default_value_t = 32)]
    memory_mib: u64,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// HA restart priority.
    #[arg(long, value_enum, default_value = "medium")]
    priority: Priority,
    /// What a host cut from the storage does with it.
    #[arg(long, value_enum, default_value = "leave-on")]
    isolation_response: Response,
    /// CPU size for placement (MHz).
    #[arg(long, default_value_t = 500)]
    cpu_mhz: i64,
    /// Defined but not to be run.
    #[arg(long)]
    off: bool,
}

fn mount_admin(v: &VolumeArgs) -> Result<Volume, String> {
    let dev = Arc::new(
        FileDevice::open(&v.volume, false).map_err(|e| format!("{}: {e}", v.volume.display()))?,
    );
    let mut mo = MountOptions::default();
    mo.pid = std::process::id();
    mo.name = "vinfra-host vm".into();
    Volume::mount(dev, v.host_id, &mo, Arc::new(MonotonicClock::new()))
        .map_err(|e| format!("mount {} as host {}: {e}", v.volume.display(), v.host_id))
}

fn create(a: &CreateArgs) -> Result<(), String> {
    if a.name.is_empty() || a.name.len() > 255 || a.name.contains('/') {
        return Err(format!(
            "{:?}: a VM name is 1 to 255 bytes without '/'",
            a.name
        ));
    }
    let volume = mount_admin(&a.volume)?;
    let mut config = VmConfig::new(a.kernel.clone());
    config.cmdline = a.cmdline.clone();
    config.memory_mib = a.memory_mib;
    config.vcpus = a.vcpus;
    let settings = HaSettings {
        desired_on: !a.off,
        priority: match a.priority {
            Priority::Disabled => RestartPriority::Disabled,
            Priority::Low => RestartPriority::Low,
            Priority::Medium => RestartPriority::Medium,
            Priority::High => RestartPriority::High,
        },
        isolation_response: match a.isolation_response {
            Response::LeaveOn => IsolationResponse::LeaveOn,
            Response::PowerOff => IsolationResponse::PowerOff,
            Response::ShutDown => IsolationResponse::ShutDown,
        },
        cpu_mhz: a.cpu_mhz,
        mem_mb: i64::try_from(a.memory_mib).unwrap_or(i64::MAX),
    };
    let result = VmfsDatastore::write_settings(&volume, &a.name, &settings)
        .map_err(|e| e.to_string())
        .and_then(|()| cluster::vms::write_definition(&volume, &a.name, &config));
    let unmounted = volume.unmount().map_err(|e| e.to_string());
    result.and(unmounted)
}

fn list(v: &VolumeArgs) -> Result<(), String> {
    let volume = mount_admin(v)?;
    let reading = VmfsDatastore::new(volume.clone()).read();
    let unmounted = volume.unmount().map_err(|e| e.to_string());
    let reading = reading.map_err(|e| e.to_string())?;
    println!(
        "{:<24} {:<6} {:<8} {:<10} owner",
        "vm", "on", "priority", "response"
    );
    for vm in reading.vms {
        println!(
            "{:<24} {:<6} {:<8} {:<10} {}",
            vm.name,
            vm.desired_on,
            serde_json::to_value(vm.priority)
                .map_or(String::new(), |v| v.as_str().unwrap_or("").to_string()),
            serde_json::to_value(vm.isolation_response)
                .map_or(String::new(), |v| v.as_str().unwrap_or("").to_string()),
            vm.owner.map_or("-".to_string(), |h| format!("host {h}")),
        );
    }
    unmounted
}

fn run(a: &RunArgs) -> Result<Ended, String> {
    let text =
        std::fs::read_to_string(&a.config).map_err(|e| format!("{}: {e}", a.config.display()))?;
    let config = Config::from_json(&text).map_err(|e| format!("{}: {e}", a.config.display()))?;
    let key_text = std::fs::read_to_string(&a.key_file)
        .map_err(|e| format!("{}: {e}", a.key_file.display()))?;
    let key =
        ClusterKey::from_hex(&key_text).map_err(|e| format!("{}: {e}", a.key_file.display()))?;
    cluster::run(HostOptions {
        config,
        key,
        volume: a.volume.clone(),
        storage_fault_file: a.storage_fault_file.clone(),
        run_dir: a.run_dir.clone(),
        api: match a.api {
            Some(listen) => Some(cluster::ApiOptions {
                listen,
                token: vinfra_host::api::ApiToken::from_key_file(&a.key_file)
                    .map_err(|e| format!("{}: {e}", a.key_file.display()))?,
            }),
            None => None,
        },
        key_file: Some(a.key_file.clone()),
        cpuid_missing: a.hide_cpuid.clone(),
        vmotion_address: a.vmotion_address,
        switch: a.switch.clone(),
        vcb_password: cluster::backup::password_from_key_file(&a.key_file)?,
    })
}

fn keygen() -> Result<(), String> {
    let key: [u8; 32] = rand::random();
    println!(
        "{}",
        key.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    Ok(())
}

fn main() -> ExitCode {
    logging::init("warn");
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(a) => match run(a) {
            Ok(Ended::Stopped) => Ok(()),
            Ok(Ended::Fenced) => {
                eprintln!("vinfra-host: fenced (volume heartbeat lost): every VM was stopped");
                return ExitCode::from(exit_status::FENCED);
            }
            Err(e) => Err(e),
        },
        Command::Vm(VmCommand::Create(a)) => create(a),
        Command::Vm(VmCommand::List(v)) => list(v),
        Command::Keygen => keygen(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vinfra-host: {e}");
            ExitCode::from(exit_status::ERROR)
        }
    }
}
