//! A host as a member of the cluster: it mounts the shared vmfs volume, runs the HA
//! agent ([`vinfra_ha::Agent`]) on real UDP sockets, timers and the volume, and runs the
//! VMs the agent powers on ([`vms`]), each in a child process of its own
//! ([`crate::vm_process`]). `vinfra-host run` is this module's `run`.
//!
//! The loop is single-threaded: the agent, the volume reads and the VM operations happen
//! here (children are spawned from this thread, which lives as long as the host: their
//! `PR_SET_PDEATHSIG` is tied to it); threads only receive datagrams, run probes and
//! carry console lines, each handing an [`Inbound`] to the loop through one channel.
//! Each tick the loop feeds every child its lease byte while the volume lease is valid,
//! and reaps the children that ended (`vm_exited`, then `Event::VmStopped` for the agent). Everything that happens is reported
//! as one JSON object per line on stdout ([`report`]), which the tests and the benchmark
//! read.

mod api_calls;
pub mod backup;
mod backup_files;
mod consoles;
pub mod devices;
mod migrate;
mod nics;
pub mod probe;
pub mod report;
mod restore_disk;
mod shutdown;
pub mod storage_fault;
mod vm_ops;
mod vm_settings;
pub mod vms;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vinfra_ha::datastore::{Datastore, VmfsDatastore};
use vinfra_ha::{Action, Agent, ClusterKey, Config, Event, PowerOnOutcome, Verdict};
use vinfra_vmfs::{BlockDevice, FileDevice, MonotonicClock, MountOptions, Volume};

use self::report::Report;
use self::vms::Vms;

/// How often the agent is ticked.
const TICK: Duration = Duration::from_millis(50);
/// How long a stopping host waits for its cancelled backups' threads (see
/// `Host::end_backups`): a repository's key derivation, a read under way. Well under the
/// 10 s that `vinfra-lab down` gives a host before its SIGKILL.
const BACKUPS_AT_STOP: Duration = Duration::from_secs(6);

/// What the helper threads hand to the loop.
#[derive(Debug)]
pub enum Inbound {
    /// A datagram from a peer.
    Packet(Vec<u8>),
    /// A probe's outcome.
    Probe {
        /// Index of the isolation address.
        address: usize,
        /// It answered.
        reachable: bool,
    },
    /// A line of a VM's console.
    Console {
        /// The VM.
        vm: String,
        /// The line, without its end.
        line: String,
    },
    /// A request of the host API.
    Api(crate::api::ApiCall),
    /// A migration's sending thread is done.
    Migrated {
        /// The VM.
        vm: String,
        /// How it went.
        outcome: migrate::Outcome,
        /// The migration's task, which the loop ends.
        task: crate::api::TaskHandle,
    },
    /// A backup's repository thread is done (cluster/backup.rs).
    BackupStored {
        /// The VM.
        vm: String,
        /// The backup it stored, or why not.
        stored: Result<vinfra_vcb::Snapshot, crate::api::ApiError>,
    },
}

/// The host API's server settings.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Where it listens (port 0: any; the `api` event says which).
    pub listen: SocketAddr,
    /// The token clients present (derived from the cluster key).
    pub token: crate::api::ApiToken,
}

/// How `run` is set up.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The agent's configuration (`config.host` is this host's id and vmfs slot).
    pub config: Config,
    /// The cluster key.
    pub key: ClusterKey,
    /// The shared volume file.
    pub volume: PathBuf,
    /// Fault injection: the volume's I/O fails while this file exists.
    pub storage_fault_file: Option<PathBuf>,
    /// Where the VMs' configuration files and control sockets go; `None`:
    /// `/tmp/vinfra-host-H-PID` (removed at the end).
    pub run_dir: Option<PathBuf>,
    /// The host API, if it is to be served.
    pub api: Option<ApiOptions>,
    /// The cluster key's file, which VM processes read to encrypt live migrations
    /// (`None`: they migrate in plaintext).
    pub key_file: Option<PathBuf>,
    /// CPUID bits this host does not offer to VMs that arrive by live migration (as
    /// EVC): a VM whose guest may see them is refused.
    pub cpuid_missing: Vec<vinfra_vmm_core::CpuidMask>,
    /// The address VMs arrive on by live migration (the VMotion interface, apart from
    /// the management network as VI3's VMkernel port was); `None`: this host's HA
    /// address.
    pub vmotion_address: Option<std::net::IpAddr>,
    /// The host's virtual switch (a JSON `SwitchConfig`), applied at start; VMs' NICs
    /// plug into its port groups.
    pub switch: Option<PathBuf>,
    /// The password of the vcb repositories the API's `backup` and `restore` use
    /// ([`backup::repository_password`] of the cluster key).
    pub vcb_password: Vec<u8>,
}

/// Why `run` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop (SIGINT/SIGTERM): VMs stopped, volume unmounted.
    Stopped,
    /// The volume's lease lapsed: every VM was stopped; the host must be started again
    /// (a new mount) to take part.
    Fenced,
}

/// Runs this host until it is asked to stop or fences itself.
pub fn run(opts: HostOptions) -> Result<Ended, String> {
    let start = Instant::now();
    let host = opts.config.host;
    let report = Report::new(host, start);
    let me = opts
        .config
        .hosts
        .iter()
        .find(|h| h.id == host)
        .ok_or("this host is not in the configuration")?;
    let bind: SocketAddr = me.addr.parse().map_err(|e| format!("{}: {e}", me.addr))?;
    let socket = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    let peers: Vec<(u32, SocketAddr)> = opts
        .config
        .hosts
        .iter()
        .filter_map(|h| Some((h.id, h.addr.parse().ok()?)))
        .collect();
    let (run_dir, own_run_dir) = match &opts.run_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("vinfra-host-{host}-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
    let port_groups = nics::apply_switch(opts.switch.as_deref())?;
    let volume = mount(&opts)?;
    let heartbeat = volume.spawn_heartbeat();
    report.event(
        "mounted",
        serde_json::json!({"generation": volume.generation(), "lease_ms": volume.lease_ms()}),
    );
    let (tx, rx) = mpsc::channel();
    spawn_receiver(&socket, tx.clone())?;
    // The incarnation only has to grow from one run of this host to the next.
    let incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let agent =
        Agent::new(opts.config.clone(), &opts.key, incarnation, 0).map_err(|e| e.to_string())?;
    // The API answers through the loop: a request waits at most this long for it.
    let server = match &opts.api {
        Some(a) => {
            let tx = tx.clone();
            let bridge = crate::api::LoopBridge::new(
                move |call| tx.send(Inbound::Api(call)).is_ok(),
                Duration::from_secs(10),
            );
            let server = crate::api::serve(a.listen, a.token.clone(), Arc::new(bridge))
                .map_err(|e| format!("host API on {}: {e}", a.listen))?;
            report.event(
                "api",
                serde_json::json!({"address": server.local_addr().to_string()}),
            );
            Some(server)
        }
        None => None,
    };
    let in_maintenance = VmfsDatastore::maintenance(&volume)
        .map_err(|e| e.to_string())?
        .contains(&host);
    let mut host = Host {
        agent,
        datastore: VmfsDatastore::new(volume.clone()),
        vms: Vms::new(
            volume.clone(),
            tx.clone(),
            run_dir.clone(),
            devices::ChildEnv {
                volume: opts.volume.clone(),
                switch: opts.switch.clone(),
            },
        ),
        port_groups,
        vcb_password: opts.vcb_password.clone(),
        volume,
        socket,
        peers,
        probes: opts.config.isolation_addresses.clone(),
        probe_timeout: Duration::from_millis(opts.config.probe_interval_ms * 4 / 5),
        tx,
        inbox: rx,
        held: std::collections::VecDeque::new(),
        report,
        start,
        refused: std::collections::BTreeMap::new(),
        consoles: consoles::Consoles::new(),
        api: opts.api.clone(),
        key_file: opts.key_file.clone(),
        maintenance: in_maintenance,
        cpuid_missing: opts.cpuid_missing.clone(),
        vmotion_address: opts.vmotion_address,
        meter: crate::host_stats::CpuMeter::new(),
        cpu_seen: std::collections::BTreeMap::new(),
        shutdowns: shutdown::Shutdowns::new(),
        backups: std::collections::BTreeMap::new(),
        ha_shutdowns: std::collections::BTreeSet::new(),
    };
    crate::terminal::install_stop_signals().map_err(|e| format!("signal handlers: {e}"))?;
    let ended = host.run();
    if let Some(server) = server {
        server.stop();
    }
    // A fenced host's lease is gone: its disks are not its own to fold back.
    if ended == Ended::Stopped {
        host.end_backups(BACKUPS_AT_STOP);
    }
    host.vms.stop_all();
    drop(heartbeat);
    if ended == Ended::Stopped {
        if let Err(e) = host.volume.clone().unmount() {
            host.report.event(
                "unmount_failed",
                serde_json::json!({"error": e.to_string()}),
            );
        }
    }
    if own_run_dir {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    host.report
        .event("ended", serde_json::json!({"why": format!("{ended:?}")}));
    Ok(ended)
}

fn mount(opts: &HostOptions) -> Result<Volume, String> {
    let path = &opts.volume;
    let file: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::open(path, false).map_err(|e| format!("{}: {e}", path.display()))?);
    let dev: Arc<dyn BlockDevice> = match &opts.storage_fault_file {
        Some(marker) => storage_fault::CuttableDevice::new(file, marker.clone()),
        None => file,
    };
    let mut mo = MountOptions::default();
    mo.pid = std::process::id();
    mo.name = "vinfra-host".into();
    Volume::mount(dev, opts.config.host, &mo, Arc::new(MonotonicClock::new()))
        .map_err(|e| format!("mount {} as host {}: {e}", path.display(), opts.config.host))
}

fn spawn_receiver(socket: &UdpSocket, tx: Sender<Inbound>) -> Result<(), String> {
    let socket = socket.try_clone().map_err(|e| format!("socket: {e}"))?;
    std::thread::Builder::new()
        .name("ha-recv".into())
        .spawn(move || {
            let mut buf = [0u8; 2048];
            loop {
                match socket.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        if tx.send(Inbound::Packet(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                    // ICMP errors of earlier sends come back here on Linux; go on.
                    Err(e) => tracing::debug!("recv: {e}"),
                }
            }
        })
        .map(drop)
        .map_err(|e| format!("spawn receiver: {e}"))
}

struct Host {
    agent: Agent,
    datastore: VmfsDatastore,
    vms: Vms,
    volume: Volume,
    socket: UdpSocket,
    peers: Vec<(u32, SocketAddr)>,
    probes: Vec<vinfra_ha::IsolationAddress>,
    probe_timeout: Duration,
    tx: Sender<Inbound>,
    /// What reaches the loop (the receiving end of `tx`).
    inbox: Receiver<Inbound>,
    /// What arrived while the loop waited for work off the loop and waits its turn (see
    /// `Host::off_loop`), handled before anything newer.
    held: std::collections::VecDeque<Inbound>,
    report: Report,
    start: Instant,
    /// The last refusal reported per VM: the planner asks again every round, and the
    /// same refusal (a dead owner's lease running out) is reported once.
    refused: std::collections::BTreeMap<String, String>,
    /// The API's console viewers, per VM.
    consoles: consoles::Consoles,
    /// The API's settings (peers' APIs share its port).
    api: Option<ApiOptions>,
    /// The cluster key's file, for live migrations.
    key_file: Option<PathBuf>,
    /// In maintenance mode (`/maintenance/<id>` on the volume).
    maintenance: bool,
    /// CPUID bits this host lacks (see [`HostOptions::cpuid_missing`]).
    cpuid_missing: Vec<vinfra_vmm_core::CpuidMask>,
    /// Where VMs arrive (see [`HostOptions::vmotion_address`]).
    vmotion_address: Option<std::net::IpAddr>,
    /// The host's CPU share between API readings.
    meter: crate::host_stats::CpuMeter,
    /// Per VM, its CPU time at the last API reading (ms of the host clock, ns).
    cpu_seen: std::collections::BTreeMap<String, (u64, u64)>,
    /// The port groups of this host's switch (none without `--switch`).
    port_groups: Vec<String>,
    /// The vcb repositories' password.
    vcb_password: Vec<u8>,
    /// Graceful shutdowns waiting for their guests.
    shutdowns: shutdown::Shutdowns,
    /// Backups whose repository work runs on a thread of its own, per VM.
    backups: std::collections::BTreeMap<String, backup::Pending>,
    /// VMs whose power button the HA agent pressed (isolation response "shut down"):
    /// their guest's power-off is HA's, for the other hosts to restart, not the user's.
    ha_shutdowns: std::collections::BTreeSet<String>,
}

impl Host {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `work` (a question to a peer's API, a repository's key derivation: up to
    /// seconds) on a thread of its own and waits for it. Meanwhile the loop feeds its
    /// VMs' leases (they stop after half a lease without word) and answers peers'
    /// `POST /incoming`: two hosts that send each other a VM at the same moment each wait
    /// for the other's answer, which would otherwise come only after this wait (10 s,
    /// then both fail). Anything else that arrives is held and handled, in order, when
    /// the loop is back.
    fn off_loop<T: Send>(&mut self, work: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            let worker = s.spawn(work);
            while !worker.is_finished() {
                self.vms.keep_alive();
                match self.inbox.recv_timeout(Duration::from_millis(10)) {
                    Ok(Inbound::Api(crate::api::ApiCall::PrepareIncoming { request, reply })) => {
                        reply.send(self.prepare_incoming(&request));
                    }
                    Ok(other) => self.held.push_back(other),
                    Err(_) => {}
                }
            }
            match worker.join() {
                Ok(t) => t,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    fn run(&mut self) -> Ended {
        let mut next_tick = Instant::now();
        loop {
            if crate::terminal::stop_requested() {
                return Ended::Stopped;
            }
            if let Some(inbound) = self.held.pop_front() {
                self.inbound(inbound);
                continue;
            }
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(wait) {
                Ok(inbound) => self.inbound(inbound),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ended::Stopped,
            }
            if Instant::now() < next_tick {
                continue;
            }
            next_tick += TICK;
            for (vm, exit) in self.vms.reap() {
                self.report.event(
                    "vm_exited",
                    serde_json::json!({"vm": vm, "code": exit.code, "signal": exit.signal}),
                );
                // A guest that powered itself off (status 0) is off, as the user had
                // powered it off: HA must not start it again. A crash, a kill or a
                // fence (any other end) is for HA to restart, and so is a guest that
                // shut down because HA pressed its power button (isolation response).
                let by_ha = self.ha_shutdowns.remove(&vm);
                if exit.code == Some(0) && !by_ha {
                    if let Err(e) = self.set_desired(&vm, false) {
                        tracing::warn!(vm, "record the guest's power-off: {e}");
                    }
                    self.refresh();
                }
                self.shutdown_ended(&vm, &exit);
                self.feed(Event::VmStopped { vm });
            }
            self.shutdown_overdue();
            let valid = self.volume.check_lease().is_ok();
            if valid {
                self.vms.feed_leases();
            }
            self.console_in();
            self.arrivals();
            self.feed(Event::OwnLease { valid });
            self.feed(Event::Tick);
            if !valid && self.vms.is_empty() {
                return Ended::Fenced;
            }
        }
    }

    fn inbound(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Packet(bytes) => self.feed(Event::Packet { bytes }),
            Inbound::Probe { address, reachable } => {
                self.feed(Event::Probe { address, reachable });
            }
            Inbound::Api(call) => self.api(call),
            Inbound::Migrated { vm, outcome, task } => {
                self.migration_ended(&vm, &outcome, task);
            }
            Inbound::BackupStored { vm, stored } => self.backup_stored(&vm, stored),
            Inbound::Console { vm, line } => {
                self.console_out(&vm, &line);
                let beat = line.starts_with("HB ");
                self.report
                    .event("console", serde_json::json!({"vm": vm, "line": line}));
                if beat {
                    self.feed(Event::GuestHeartbeat { vm });
                }
            }
        }
    }

    fn feed(&mut self, event: Event) {
        let now = self.now_ms();
        let actions = self.agent.handle(now, event);
        for a in actions {
            self.act(a);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Send { to, bytes } => {
                if let Some((_, addr)) = self.peers.iter().find(|(id, _)| *id == to) {
                    // A link that is down answers with an error: the peer's silence is
                    // what the agent judges, not ours.
                    if let Err(e) = self.socket.send_to(&bytes, addr) {
                        tracing::debug!(to, "send: {e}");
                    }
                }
            }
            Action::ReadDatastore => {
                let event = match self.datastore.read() {
                    Ok(r) => Event::Datastore(r),
                    Err(e) => {
                        tracing::debug!("{e}");
                        Event::DatastoreUnreadable
                    }
                };
                self.feed(event);
            }
            Action::Probe { address } => {
                if let Some(a) = self.probes.get(address) {
                    probe::spawn(a.clone(), address, self.probe_timeout, self.tx.clone());
                }
            }
            Action::PowerOn { vm } => {
                self.ha_shutdowns.remove(&vm);
                let t = Instant::now();
                let outcome = self.vms.power_on(&vm);
                if outcome == PowerOnOutcome::Started {
                    self.refused.remove(&vm);
                    self.report.event(
                        "vm_started",
                        serde_json::json!({"vm": vm, "pid": self.vms.pid(&vm),
                                           "spawn_ms": t.elapsed().as_secs_f64() * 1000.0}),
                    );
                } else {
                    let why = format!("{outcome:?}");
                    if self.refused.get(&vm) != Some(&why) {
                        self.report.event(
                            "power_on_refused",
                            serde_json::json!({"vm": vm, "outcome": why}),
                        );
                        self.refused.insert(vm.clone(), why);
                    }
                }
                self.feed(Event::PowerOnResult { vm, outcome });
            }
            Action::PowerOff { vm, why } => {
                self.ha_shutdowns.remove(&vm);
                let exit = self.vms.power_off(&vm);
                self.report.event(
                    "vm_powered_off",
                    serde_json::json!({"vm": vm, "why": why, "exit": exit}),
                );
            }
            Action::ShutDown { vm, why } => {
                // The guest's ACPI power button; a guest that ignores it is powered off
                // by the agent when the grace period ends.
                let error = self.vms.press_power_button(&vm).err();
                if error.is_none() {
                    self.ha_shutdowns.insert(vm.clone());
                }
                self.report.event(
                    "vm_shutdown_asked",
                    serde_json::json!({"vm": vm, "why": why, "error": error}),
                );
            }
            Action::Reset { vm, why } => {
                let result = self.vms.reset(&vm);
                self.report.event(
                    "vm_reset",
                    serde_json::json!({"vm": vm, "why": why, "error": result.err()}),
                );
            }
            Action::Verdict { host, verdict } => {
                self.report.event(
                    "verdict",
                    serde_json::json!({"about": host, "verdict": verdict}),
                );
                if verdict == Verdict::Fenced {
                    tracing::error!("datastore lease lapsed: stopping every VM");
                }
            }
            Action::Unplaced { vm, reason } => {
                self.report
                    .event("unplaced", serde_json::json!({"vm": vm, "reason": reason}));
            }
        }
    }
}
