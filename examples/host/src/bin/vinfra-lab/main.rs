//! `vinfra-lab`: a small vinfra cluster on this machine — N `vinfra-host` processes on one
//! shared vmfs volume, each in a network namespace of its own when run as root (loopback
//! addresses otherwise), and M VMs from the test guests that HA spreads over them.
//!
//! ```sh
//! scripts/guest-kit.sh --guests-only          # the test guests (once)
//! cargo build -p vinfra-host --bins
//! sudo target/debug/vinfra-lab up --hosts 3 --vms 6    # prints the hosts, returns
//! sudo target/debug/vinfra-lab status
//! sudo target/debug/vinfra-lab down
//! sudo target/debug/vinfra-lab up --foreground         # events on stdout; Ctrl-C = down
//! ```
//!
//! Everything lives in `--dir` (default `./vinfra-lab`): the volume, the cluster key, each
//! host's configuration, events (`hostH.events`, one JSON object per line) and log
//! (`hostH.log`), and `lab.json`, the record `down` and `status` read (PIDs, namespaces).

mod net;
mod state;

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use vinfra_ha::datastore::{Datastore, VmfsDatastore};
use vinfra_ha::{HaSettings, IsolationResponse, RestartPriority};
use vinfra_host::vswitch::{PortGroup, SwitchConfig};
use vinfra_host::{cluster, logging, terminal};
use vinfra_vmfs::{FileDevice, MkfsOptions, MonotonicClock, MountOptions, Volume};
use vinfra_vmm_core::VmConfig;

use crate::net::Net;
use crate::state::{HostRecord, Lab};

/// The HA heartbeat port of every host (each host has its own address).
const HA_PORT: u16 = 8804;
/// The host API's port on every host.
const API_PORT: u16 = 8700;
/// The vmfs slot `status` mounts the volume as (hosts use 1..=16).
const ADMIN_SLOT: u32 = 15;

#[derive(Parser, Debug)]
#[command(
    name = "vinfra-lab",
    version,
    about = "A vinfra cluster on this machine"
)]
struct Cli {
    /// The lab's directory.
    #[arg(long, global = true, default_value = "vinfra-lab")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make the volume, the hosts' configurations and the VMs, then start the hosts.
    Up(UpArgs),
    /// Stop the hosts (SIGTERM, then SIGKILL after 10 s) and remove their namespaces.
    Down,
    /// Which hosts run, and where each VM runs.
    Status,
}

#[derive(Args, Debug)]
struct UpArgs {
    /// Hosts (1 to 14).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=14))]
    hosts: u32,
    /// VMs (`vm-1` …), spread by HA.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=64))]
    vms: u32,
    /// The guest kernel of the VMs (default: the `workload` test guest of the guest kit).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Guest RAM of each VM, MiB.
    #[arg(long, default_value_t = 16)]
    memory_mib: u64,
    /// The volume's size, MiB.
    #[arg(long, default_value_t = 256)]
    volume_mib: u64,
    /// The volume's lease: how long a dead host's VMs wait before HA restarts them.
    #[arg(long, default_value_t = 4000)]
    lease_ms: u32,
    /// The lab's number (0 to 255), so that several labs can run side by side: it names
    /// the bridge (`vlabN`), the namespaces (`vlabN-hH`) and the subnet (10.77.N.0/24).
    /// Default: the first one free.
    #[arg(long)]
    id: Option<u8>,
    /// One more `vinfra-host run` argument for host H, `H:ARG` (repeatable), e.g.
    /// `3:--hide-cpuid=7.0.ebx:0x20` for a host that lacks a CPU feature.
    #[arg(long = "host-arg", value_name = "H:ARG")]
    host_args: Vec<String>,
    /// Loopback addresses even as root (no namespaces).
    #[arg(long)]
    loopback: bool,
    /// Stay attached: print the hosts' events, and bring the lab down on Ctrl-C.
    #[arg(long)]
    foreground: bool,
}

/// The `vinfra-host` binary: next to this one (cargo builds the package's binaries into
/// one folder), or `VINFRA_HOST_BIN`.
fn host_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("VINFRA_HOST_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().map_err(|e| format!("where am I: {e}"))?;
    let p = me.with_file_name("vinfra-host");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: build it (cargo build -p vinfra-host --bins) or set VINFRA_HOST_BIN",
            p.display()
        ))
    }
}

/// The guest kit's `workload` guest, looked for from the current folder and from this
/// binary's target folder.
fn default_kernel() -> Result<PathBuf, String> {
    let rel = Path::new("guest-kit/guests/workload.elf");
    let mut tried = Vec::new();
    let mut candidates = vec![Path::new("target").join(rel)];
    if let Ok(me) = std::env::current_exe() {
        // target/debug/vinfra-lab → target/guest-kit/…
        if let Some(target) = me.parent().and_then(Path::parent) {
            candidates.push(target.join(rel));
        }
    }
    for c in candidates {
        if c.exists() {
            return std::fs::canonicalize(&c).map_err(|e| format!("{}: {e}", c.display()));
        }
        tried.push(c.display().to_string());
    }
    Err(format!(
        "no test guest at {} (run scripts/guest-kit.sh --guests-only, or give --kernel)",
        tried.join(" or ")
    ))
}

/// The VM port group every host's switch has: VMs on it talk across hosts.
pub const VM_PORT_GROUP: &str = "vm-net";
/// Its VLAN ID (and VXLAN network identifier).
const VM_VLAN: u16 = 100;

/// As root, host `h`'s switch (`hostH.switch.json`): the port group `vm-net` on a VXLAN
/// over its veth to the backbone, flooding to the other hosts; none on loopback.
fn write_switch(dir: &Path, net: &Net, h: u32, hosts: u32) -> Result<Option<PathBuf>, String> {
    if net.namespace(h).is_none() {
        return Ok(None);
    }
    let ip = |h: u32| -> Result<std::net::Ipv4Addr, String> {
        net.host_ip(h)
            .parse()
            .map_err(|e| format!("{}: {e}", net.host_ip(h)))
    };
    let peers = (1..=hosts)
        .filter(|&p| p != h)
        .map(ip)
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = SwitchConfig::local(vec![PortGroup::new(VM_PORT_GROUP, VM_VLAN)]);
    config.uplink = Some("eth0".into());
    config.local_ip = Some(ip(h)?);
    config.peers = peers;
    let text = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
    let file = dir.join(format!("host{h}.switch.json"));
    std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(Some(file))
}

fn mount(volume: &Path, slot: u32, name: &str) -> Result<Volume, String> {
    let dev = Arc::new(
        FileDevice::open(volume, false).map_err(|e| format!("{}: {e}", volume.display()))?,
    );
    let mut mo = MountOptions::default();
    mo.pid = std::process::id();
    mo.name = name.into();
    Volume::mount(dev, slot, &mo, Arc::new(MonotonicClock::new()))
        .map_err(|e| format!("mount {} as host {slot}: {e}", volume.display()))
}

/// The volume with `vms` VMs defined on it.
fn make_volume(path: &Path, a: &UpArgs, kernel: &Path) -> Result<(), String> {
    let dev = FileDevice::create(path, a.volume_mib << 20)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut mk = MkfsOptions::default();
    mk.label = "vinfra-lab".into();
    mk.lease_ms = a.lease_ms;
    mk.interval_ms = (a.lease_ms / 8).max(100);
    Volume::mkfs(&dev, &mk).map_err(|e| format!("mkfs {}: {e}", path.display()))?;
    drop(dev);
    let volume = mount(path, ADMIN_SLOT, "vinfra-lab up")?;
    let defined = (1..=a.vms).try_for_each(|i| {
        let name = format!("vm-{i}");
        let mut config = VmConfig::new(kernel.to_path_buf());
        config.memory_mib = a.memory_mib;
        config.cmdline = "workload.mib=1".into();
        let settings = HaSettings {
            desired_on: true,
            priority: RestartPriority::Medium,
            isolation_response: IsolationResponse::LeaveOn,
            cpu_mhz: 500,
            mem_mb: i64::try_from(a.memory_mib).unwrap_or(i64::MAX),
        };
        VmfsDatastore::write_settings(&volume, &name, &settings)
            .map_err(|e| format!("{name}: {e}"))?;
        cluster::vms::write_definition(&volume, &name, &config).map_err(|e| format!("{name}: {e}"))
    });
    let unmounted = volume.unmount().map_err(|e| e.to_string());
    defined.and(unmounted)
}

fn up(dir: &Path, a: &UpArgs) -> Result<(), String> {
    if dir.join(state::FILE).exists() {
        return Err(format!(
            "{} holds a lab already: `vinfra-lab --dir {} down` first",
            dir.display(),
            dir.display()
        ));
    }
    let host_bin = host_binary()?;
    if let Some(bad) = a.host_args.iter().find(|x| {
        x.split_once(':')
            .and_then(|(h, _)| h.parse::<u32>().ok())
            .is_none_or(|h| h == 0 || h > a.hosts)
    }) {
        return Err(format!(
            "--host-arg {bad}: not H:ARG with H a host (1..={})",
            a.hosts
        ));
    }
    let kernel = match &a.kernel {
        Some(k) => std::fs::canonicalize(k).map_err(|e| format!("{}: {e}", k.display()))?,
        None => default_kernel()?,
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let loopback = a.loopback || !net::is_root();
    let net = match a.id {
        Some(id) => {
            let net = if loopback {
                Net::Loopback { id }
            } else {
                Net::Namespaces { id }
            };
            net.build(a.hosts)?;
            net
        }
        None => Net::build_free(loopback, 0, a.hosts)?,
    };
    let volume = dir.join("cluster.vmfs");
    if let Err(e) = make_volume(&volume, a, &kernel) {
        net.remove(a.hosts);
        return Err(e);
    }
    let key: [u8; 32] = rand::random();
    let key_file = dir.join("cluster.key");
    std::fs::write(
        &key_file,
        key.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n",
    )
    .map_err(|e| format!("{}: {e}", key_file.display()))?;
    // The record first, so that `down` cleans up after a start that failed half-way.
    let mut lab = Lab {
        net: net.clone(),
        hosts: Vec::new(),
        volume: volume.clone(),
        planned_hosts: a.hosts,
    };
    lab.save(&dir)?;
    let hosts: Vec<serde_json::Value> = (1..=a.hosts)
        .map(|h| {
            serde_json::json!({"id": h, "addr": format!("{}:{HA_PORT}", net.host_ip(h)),
                               "cpu_mhz": 4000, "mem_mb": 4096})
        })
        .collect();
    for h in 1..=a.hosts {
        let config = serde_json::json!({
            "host": h,
            "hosts": hosts,
            "isolation_addresses": [{"tcp_connect": format!("{}:9", net.gateway())}],
        });
        let config_file = dir.join(format!("host{h}.json"));
        std::fs::write(&config_file, config.to_string())
            .map_err(|e| format!("{}: {e}", config_file.display()))?;
        let file = |name: String| {
            std::fs::File::create(dir.join(&name)).map_err(|e| format!("{name}: {e}"))
        };
        let switch = write_switch(&dir, &net, h, a.hosts)?;
        let child = {
            let mut c = net.command(h, &host_bin);
            c.arg("run")
                .arg("--config")
                .arg(&config_file)
                .arg("--volume")
                .arg(&volume)
                .arg("--key-file")
                .arg(&key_file)
                .arg("--api")
                .arg(format!("{}:{API_PORT}", net.host_ip(h)))
                .arg("--vmotion-address")
                .arg(net.vmotion_ip(h))
                .arg("--run-dir")
                .arg(dir.join(format!("host{h}.run")))
                .args(a.host_args.iter().filter_map(|x| {
                    let (host, arg) = x.split_once(':')?;
                    (host.parse() == Ok(h)).then_some(arg)
                }))
                .args(
                    switch
                        .iter()
                        .flat_map(|f| [std::ffi::OsStr::new("--switch"), f.as_os_str()]),
                )
                .stdin(Stdio::null())
                .stdout(file(format!("host{h}.events"))?)
                .stderr(file(format!("host{h}.log"))?);
            // A process group of its own: Ctrl-C in the terminal that ran `up` is not
            // theirs (`down` stops them).
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
            c.spawn()
                .map_err(|e| format!("start {}: {e}", host_bin.display()))?
        };
        lab.hosts.push(HostRecord {
            id: h,
            pid: child.id(),
            addr: net.host_ip(h),
            api: format!("http://{}:{API_PORT}", net.host_ip(h)),
            vmotion: net.vmotion_ip(h),
            namespace: net.namespace(h),
        });
        lab.save(&dir)?;
        // Not waited for here: `down` reaps nothing (the hosts outlive this process),
        // and a zombie of a host that exits early goes to init when we exit.
        drop(child);
    }
    println!(
        "vinfra-lab: {} hosts on {} ({}), {} VMs; files in {}",
        a.hosts,
        match &net {
            Net::Namespaces { .. } => format!("bridge {}", net.bridge()),
            Net::Loopback { .. } => "loopback".to_string(),
        },
        net.gateway(),
        a.vms,
        dir.display()
    );
    println!("{:<6} {:<8} {:<26} namespace", "host", "pid", "API");
    for h in &lab.hosts {
        println!(
            "{:<6} {:<8} {:<26} {}",
            h.id,
            h.pid,
            h.api,
            h.namespace.as_deref().unwrap_or("-")
        );
    }
    if let Some(first) = lab.hosts.first() {
        println!(
            "try: vinfra --host {} --key-file {} vm list",
            first.api,
            key_file.display()
        );
    }
    if a.foreground {
        follow(&dir, &lab)?;
        return down(&dir);
    }
    Ok(())
}

/// Prints the hosts' events as they come (`[hH] {…}`) until SIGINT/SIGTERM.
fn follow(dir: &Path, lab: &Lab) -> Result<(), String> {
    terminal::install_stop_signals().map_err(|e| format!("signal handlers: {e}"))?;
    eprintln!("vinfra-lab: following the hosts' events; Ctrl-C brings the lab down");
    let mut offsets = vec![0usize; lab.hosts.len()];
    let mut partial = vec![String::new(); lab.hosts.len()];
    while !terminal::stop_requested() {
        for (i, h) in lab.hosts.iter().enumerate() {
            let Ok(text) = std::fs::read(dir.join(format!("host{}.events", h.id))) else {
                continue;
            };
            if text.len() <= offsets[i] {
                continue;
            }
            partial[i].push_str(&String::from_utf8_lossy(&text[offsets[i]..]));
            offsets[i] = text.len();
            while let Some(end) = partial[i].find('\n') {
                let line: String = partial[i].drain(..=end).collect();
                println!("[h{}] {}", h.id, line.trim_end());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn down(dir: &Path) -> Result<(), String> {
    let lab = Lab::load(dir)?;
    let alive: Vec<&HostRecord> = lab.hosts.iter().filter(|h| state::is_host(h.pid)).collect();
    // The VM processes too: a host that stops takes its VMs with it (PR_SET_PDEATHSIG)
    // only a moment after it is gone, and their TAPs stay in the namespaces until then.
    let vms = state::vm_processes(dir);
    for h in &alive {
        state::signal(h.pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive.iter().any(|h| state::is_host(h.pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for h in alive.iter().filter(|h| state::is_host(h.pid)) {
        eprintln!(
            "vinfra-lab: host {} (pid {}) ignored SIGTERM: killed",
            h.id, h.pid
        );
        state::signal(h.pid, libc::SIGKILL);
    }
    wait_for_vms(&vms);
    lab.net.remove(lab.planned_hosts);
    std::fs::remove_file(dir.join(state::FILE))
        .map_err(|e| format!("{}: {e}", dir.join(state::FILE).display()))?;
    println!(
        "vinfra-lab: {} hosts stopped; the volume and logs stay in {}",
        alive.len(),
        dir.display()
    );
    Ok(())
}

/// Waits (5 s at most) for the lab's VM processes to end once their hosts are gone;
/// kills those that have not (they are the lab's, checked by pid and start time).
fn wait_for_vms(vms: &[state::VmProcess]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while vms.iter().any(state::VmProcess::alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<_> = vms.iter().filter(|v| v.alive()).collect();
    for v in &left {
        eprintln!("vinfra-lab: VM process {} outlived its host: killed", v.pid);
        state::signal(v.pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while left.iter().any(|v| v.alive()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(dir: &Path) -> Result<(), String> {
    let lab = Lab::load(dir)?;
    println!("{:<6} {:<8} {:<26} state", "host", "pid", "API");
    for h in &lab.hosts {
        let state = if state::is_host(h.pid) {
            "running"
        } else {
            "stopped"
        };
        println!("{:<6} {:<8} {:<26} {state}", h.id, h.pid, h.api);
    }
    let volume = mount(&lab.volume, ADMIN_SLOT, "vinfra-lab status")?;
    let reading = VmfsDatastore::new(volume.clone()).read();
    let unmounted = volume.unmount().map_err(|e| e.to_string());
    let reading = reading.map_err(|e| e.to_string())?;
    println!();
    println!("{:<16} {:<6} runs on", "vm", "on");
    for vm in reading.vms {
        println!(
            "{:<16} {:<6} {}",
            vm.name,
            vm.desired_on,
            vm.owner.map_or("-".to_string(), |h| format!("host {h}"))
        );
    }
    unmounted
}

fn main() -> ExitCode {
    logging::init("warn");
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Up(a) => up(&cli.dir, a),
        Command::Down => down(&cli.dir),
        Command::Status => status(&cli.dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vinfra-lab: {e}");
            ExitCode::FAILURE
        }
    }
}
