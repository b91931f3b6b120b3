//! The per-host agent: a state machine fed with events and a clock, returning actions.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;
use crate::error::ConfigError;
use crate::inventory::{IsolationResponse, Reading, RestartPriority, VmRecord};
use crate::monitor::GuestWatch;
use crate::peer::{Peer, Verdict};
use crate::plan;
use crate::wire::{Body, ClusterKey, Codec, Packet};

/// What happened, as the adapter tells the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Time passed (call at least every heartbeat interval; more often is fine).
    Tick,
    /// A datagram arrived on the agent's socket.
    Packet {
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// The datastore was read ([`Action::ReadDatastore`]).
    Datastore(Reading),
    /// The datastore could not be read.
    DatastoreUnreadable,
    /// Whether this host's own datastore lease holds (vmfs's `Lease`: renewed within half
    /// a lease). Report it on every change, or on every tick.
    OwnLease {
        /// It holds.
        valid: bool,
    },
    /// The outcome of probing isolation address `address` (index in the configuration).
    Probe {
        /// Index into `isolation_addresses`.
        address: usize,
        /// It answered.
        reachable: bool,
    },
    /// The outcome of an [`Action::PowerOn`].
    PowerOnResult {
        /// The VM.
        vm: String,
        /// What happened.
        outcome: PowerOnOutcome,
    },
    /// A VM of this host stopped by itself (guest powered off, crashed) or as asked.
    VmStopped {
        /// The VM.
        vm: String,
    },
    /// The guest of a VM of this host showed it is alive.
    GuestHeartbeat {
        /// The VM.
        vm: String,
    },
}

/// How a power-on ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerOnOutcome {
    /// The lock was taken and the VM runs here.
    Started,
    /// Another host holds the VM's lock (alive, or its lease has not run out yet).
    LockHeld {
        /// The holder.
        owner: u32,
    },
    /// Anything else (no storage, the VMM failed).
    Failed(String),
}

/// What the adapter must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send one datagram to a peer's address.
    Send {
        /// Peer host id.
        to: u32,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// Read the datastore and answer with [`Event::Datastore`].
    ReadDatastore,
    /// Probe isolation address `address` and answer with [`Event::Probe`].
    Probe {
        /// Index into `isolation_addresses`.
        address: usize,
    },
    /// Take the VM's exclusive lock, then start it; answer with [`Event::PowerOnResult`].
    PowerOn {
        /// The VM.
        vm: String,
    },
    /// Power the VM off now.
    PowerOff {
        /// The VM.
        vm: String,
        /// Why.
        why: String,
    },
    /// Ask the guest to shut down.
    ShutDown {
        /// The VM.
        vm: String,
        /// Why.
        why: String,
    },
    /// Reset the VM (VM monitoring).
    Reset {
        /// The VM.
        vm: String,
        /// Why.
        why: String,
    },
    /// A host's verdict changed (`host` is this host for its own state).
    Verdict {
        /// The host.
        host: u32,
        /// The new verdict.
        verdict: Verdict,
    },
    /// The planner could not place a VM this round (reported once per change).
    Unplaced {
        /// The VM.
        vm: String,
        /// Why.
        reason: String,
    },
}

/// A VM running on this host.
#[derive(Debug, Clone)]
struct Running {
    watch: GuestWatch,
    /// Being shut down because the lease lapsed: power off at this time.
    power_off_at: Option<u64>,
}

/// Counters for tests and status pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets refused by the codec (forged, damaged, foreign).
    pub refused: u64,
    /// Authentic packets that were not newer than the last accepted (replays, stale).
    pub stale: u64,
    /// Packets accepted.
    pub accepted: u64,
}

/// One host's HA agent (README "Verdicts", "Roles and restarts").
///
/// ```
/// use vinfra_ha::{Action, Agent, ClusterKey, Config, Event, HostConfig};
///
/// let hosts: Vec<HostConfig> = (1..=2).map(|id| HostConfig {
///     id, addr: format!("127.0.0.{id}:8804"), cpu_mhz: 4000, mem_mb: 4096 }).collect();
/// let key = ClusterKey::from_bytes([9; 32]);
/// let mut a = Agent::new(Config::new(1, hosts.clone()), &key, 1, 0).unwrap();
/// let mut b = Agent::new(Config::new(2, hosts), &key, 1, 0).unwrap();
/// // a's heartbeat reaches b.
/// for action in a.handle(250, Event::Tick) {
///     if let Action::Send { to: 2, bytes } = action {
///         b.handle(251, Event::Packet { bytes });
///     }
/// }
/// assert_eq!(b.counters().accepted, 1);
/// ```
#[derive(Debug)]
pub struct Agent {
    config: Config,
    codec: Codec,
    incarnation: u64,
    seq: u64,
    peers: BTreeMap<u32, Peer>,
    lease_valid: bool,
    /// When the datastore was last read successfully.
    datastore_ok_ms: Option<u64>,
    read_asked_ms: Option<u64>,
    vms: Vec<VmRecord>,
    running: BTreeMap<String, Running>,
    /// Power-ons asked of the adapter and not answered yet, with when.
    starting: BTreeMap<String, u64>,
    /// Power-ons that failed, with when they may be asked again (one planning interval
    /// later: a failure that comes back at once must not turn into a busy loop).
    retry_at: BTreeMap<String, u64>,
    /// Last outcome of each isolation probe, with when it was asked.
    probes: Vec<Option<(u64, bool)>>,
    probe_asked_ms: Vec<Option<u64>>,
    own: Verdict,
    next_heartbeat_ms: u64,
    next_plan_ms: u64,
    unplaced: BTreeMap<String, String>,
    /// VMs whose lock nobody held, with the first reading that said so and how many
    /// readings in a row did: a lock in the middle of a hand-over (a live migration
    /// releases it on the source a few ms before the destination takes it) looks free
    /// to one reading, never to two that are an interval apart.
    unowned: BTreeMap<String, (u64, u32)>,
    /// Hosts in maintenance mode, as last read: never restart or placement targets.
    maintenance: BTreeSet<u32>,
    counters: Counters,
}

impl Agent {
    /// An agent for `config.host`. `incarnation` must be larger than that of any earlier
    /// run of this host (e.g. the wall-clock time in ms at start), so peers can tell its
    /// packets from replays of the old ones.
    pub fn new(
        config: Config,
        key: &ClusterKey,
        incarnation: u64,
        now_ms: u64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let peers = config
            .hosts
            .iter()
            .filter(|h| h.id != config.host)
            .map(|h| (h.id, Peer::new(h.id, now_ms)))
            .collect();
        let n = config.isolation_addresses.len();
        Ok(Self {
            codec: Codec::new(key),
            incarnation,
            seq: 0,
            peers,
            lease_valid: true,
            datastore_ok_ms: None,
            read_asked_ms: None,
            vms: Vec::new(),
            running: BTreeMap::new(),
            starting: BTreeMap::new(),
            retry_at: BTreeMap::new(),
            probes: vec![None; n],
            probe_asked_ms: vec![None; n],
            own: Verdict::Alive,
            next_heartbeat_ms: now_ms,
            next_plan_ms: now_ms,
            unplaced: BTreeMap::new(),
            unowned: BTreeMap::new(),
            maintenance: BTreeSet::new(),
            counters: Counters::default(),
            config,
        })
    }

    /// This host's id.
    pub fn host(&self) -> u32 {
        self.config.host
    }

    /// Packet counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The current verdict on `host` (this host: its own state).
    pub fn verdict(&self, host: u32) -> Option<Verdict> {
        if host == self.config.host {
            return Some(self.own);
        }
        self.peers.get(&host).map(|p| p.verdict)
    }

    /// When this agent last accepted a network heartbeat of peer `host` (ms of the
    /// agent's clock; its start until the first one arrives); None for itself and for
    /// hosts it does not know.
    pub fn heard_ms(&self, host: u32) -> Option<u64> {
        self.peers.get(&host).map(|p| p.heard_ms)
    }

    /// The VMs this agent runs (as far as it knows).
    pub fn running(&self) -> impl Iterator<Item = &str> {
        self.running.keys().map(String::as_str)
    }

    /// The host that plans restarts, in this agent's view (None: none can).
    pub fn planner(&self) -> Option<u32> {
        let me = (self.lease_valid && self.own != Verdict::Isolated).then_some(self.config.host);
        let others = self
            .peers
            .values()
            .filter(|p| p.verdict == Verdict::Alive && p.lease_valid && !p.isolated)
            .map(|p| p.id);
        me.into_iter().chain(others).min()
    }

    /// Feeds one event at `now_ms` (a monotonic clock of this host) and returns what to do.
    pub fn handle(&mut self, now_ms: u64, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Tick => {}
            Event::Packet { bytes } => self.on_packet(now_ms, &bytes, &mut out),
            Event::Datastore(r) => {
                self.datastore_ok_ms = Some(now_ms);
                self.read_asked_ms = None;
                for s in &r.slots {
                    if let Some(p) = self.peers.get_mut(&s.host) {
                        p.observe_slot(s, now_ms);
                    }
                }
                self.vms = r.vms;
                self.maintenance = r.maintenance.into_iter().collect();
                self.note_unowned(now_ms);
            }
            Event::DatastoreUnreadable => self.read_asked_ms = None,
            Event::OwnLease { valid } => self.lease_valid = valid,
            Event::Probe { address, reachable } => {
                if let Some(slot) = self.probes.get_mut(address) {
                    let asked = self.probe_asked_ms[address].take().unwrap_or(now_ms);
                    *slot = Some((asked, reachable));
                }
            }
            Event::PowerOnResult { vm, outcome } => {
                self.starting.remove(&vm);
                if outcome != PowerOnOutcome::Started {
                    self.retry_at
                        .insert(vm.clone(), now_ms + self.config.plan_interval_ms);
                } else {
                    self.retry_at.remove(&vm);
                    self.running.insert(
                        vm,
                        Running {
                            watch: GuestWatch::new(now_ms),
                            power_off_at: None,
                        },
                    );
                }
            }
            Event::VmStopped { vm } => {
                self.running.remove(&vm);
            }
            Event::GuestHeartbeat { vm } => {
                if let Some(r) = self.running.get_mut(&vm) {
                    r.watch.heartbeat(now_ms);
                }
            }
        }
        self.step(now_ms, &mut out);
        out
    }

    fn on_packet(&mut self, now_ms: u64, bytes: &[u8], out: &mut Vec<Action>) {
        let Ok(p) = self.codec.open(bytes) else {
            self.counters.refused += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&p.sender) else {
            // Our own id, or a host not in the cluster: authentic but not for us.
            self.counters.refused += 1;
            return;
        };
        if !peer.fresh(p.incarnation, p.seq) {
            self.counters.stale += 1;
            return;
        }
        peer.accepted = Some((p.incarnation, p.seq));
        self.counters.accepted += 1;
        match p.body {
            Body::Heartbeat {
                lease_valid,
                isolated,
                hears: _,
            } => {
                peer.heard_ms = now_ms;
                peer.lease_valid = lease_valid;
                peer.isolated = isolated;
            }
            Body::Assign { vm, .. } => self.power_on(now_ms, &vm, out),
        }
    }

    /// Asks the adapter to power `vm` on here, unless it runs or is starting already.
    fn power_on(&mut self, now_ms: u64, vm: &str, out: &mut Vec<Action>) {
        if !self.lease_valid
            || self.running.contains_key(vm)
            || self.starting.contains_key(vm)
            || self.retry_at.get(vm).is_some_and(|&t| now_ms < t)
        {
            return;
        }
        if !self.vms.iter().any(|v| v.name == vm && v.desired_on) {
            // Not (or no longer) meant to run, as far as our last read says.
            return;
        }
        self.starting.insert(vm.to_string(), now_ms);
        out.push(Action::PowerOn { vm: vm.to_string() });
    }

    fn note_unowned(&mut self, now_ms: u64) {
        let unowned: Vec<&str> = self
            .vms
            .iter()
            .filter(|v| v.owner.is_none())
            .map(|v| v.name.as_str())
            .collect();
        self.unowned.retain(|n, _| unowned.contains(&n.as_str()));
        for n in unowned {
            self.unowned
                .entry(n.to_string())
                .and_modify(|(_, seen)| *seen = seen.saturating_add(1))
                .or_insert((now_ms, 1));
        }
    }

    /// Whether a VM nobody holds has been seen so long enough to be placed (see
    /// `unowned`).
    fn surely_unowned(&self, vm: &str, now_ms: u64) -> bool {
        self.unowned.get(vm).is_some_and(|&(since, seen)| {
            seen >= 2 && now_ms.saturating_sub(since) >= self.config.heartbeat_interval_ms
        })
    }

    fn datastore_fresh(&self, now_ms: u64) -> bool {
        // Two missed reads are still fresh: a slot unchanged across them is a peer that
        // did not write.
        self.datastore_ok_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < 3 * self.config.heartbeat_interval_ms)
    }

    fn step(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let c = &self.config;
        let timeout = c.failure_timeout_ms;
        // Heartbeats.
        if now_ms >= self.next_heartbeat_ms {
            self.next_heartbeat_ms = now_ms + c.heartbeat_interval_ms;
            self.send_heartbeats(now_ms, out);
            if self
                .read_asked_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= timeout)
            {
                self.read_asked_ms = Some(now_ms);
                out.push(Action::ReadDatastore);
            }
        }
        // Verdicts on the peers.
        let fresh = self.datastore_fresh(now_ms);
        for p in self.peers.values_mut() {
            let v = p.judge(now_ms, timeout, fresh);
            if v != p.verdict {
                p.verdict = v;
                out.push(Action::Verdict {
                    host: p.id,
                    verdict: v,
                });
            }
        }
        self.probe_isolation(now_ms, out);
        let own = if !self.lease_valid {
            Verdict::Fenced
        } else if self.isolated(now_ms) {
            Verdict::Isolated
        } else {
            Verdict::Alive
        };
        if own != self.own {
            self.own = own;
            out.push(Action::Verdict {
                host: self.config.host,
                verdict: own,
            });
        }
        self.guard_vms(now_ms, out);
        if self.lease_valid {
            self.restart_own(now_ms, out);
            if now_ms >= self.next_plan_ms {
                self.next_plan_ms = now_ms + self.config.plan_interval_ms;
                if self.planner() == Some(self.config.host) {
                    self.plan(now_ms, out);
                }
            }
        }
        // A power-on the adapter never answered is forgotten, so it can be asked again.
        let stale = 10 * self.config.failure_timeout_ms;
        self.starting
            .retain(|_, t| now_ms.saturating_sub(*t) < stale);
        self.retry_at.retain(|_, t| *t > now_ms);
    }

    fn send_heartbeats(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let timeout = self.config.failure_timeout_ms;
        let hears = self
            .peers
            .values()
            .filter(|p| p.heard_within(now_ms, timeout))
            .fold(0u64, |acc, p| acc | 1 << p.id);
        let body = Body::Heartbeat {
            lease_valid: self.lease_valid,
            isolated: self.own == Verdict::Isolated,
            hears,
        };
        let ids: Vec<u32> = self.peers.keys().copied().collect();
        for to in ids {
            let bytes = self.seal(body.clone());
            out.push(Action::Send { to, bytes });
        }
    }

    fn seal(&mut self, body: Body) -> Vec<u8> {
        self.seq += 1;
        self.codec.seal(&Packet {
            sender: self.config.host,
            incarnation: self.incarnation,
            seq: self.seq,
            body,
        })
    }

    fn hears_a_peer(&self, now_ms: u64) -> bool {
        let timeout = self.config.failure_timeout_ms;
        self.peers.is_empty() || self.peers.values().any(|p| p.heard_within(now_ms, timeout))
    }

    /// While no peer is heard, the isolation addresses are probed.
    fn probe_isolation(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let quiet = !self.peers.is_empty()
            && !self
                .peers
                .values()
                .any(|p| p.heard_within(now_ms, self.config.failure_timeout_ms / 2));
        if !quiet {
            return;
        }
        let every = self.config.probe_interval_ms;
        for (i, asked) in self.probe_asked_ms.iter_mut().enumerate() {
            let last = asked.or(self.probes[i].map(|(t, _)| t));
            if last.is_none_or(|t| now_ms.saturating_sub(t) >= every) {
                *asked = Some(now_ms);
                out.push(Action::Probe { address: i });
            }
        }
    }

    /// Isolated: no peer heard for the timeout, and every isolation address failed a probe
    /// asked within the last two probe intervals.
    fn isolated(&self, now_ms: u64) -> bool {
        if self.hears_a_peer(now_ms) {
            return false;
        }
        let recent = 2 * self.config.probe_interval_ms + self.config.heartbeat_interval_ms;
        self.probes.iter().all(|p| {
            p.is_some_and(|(t, reachable)| !reachable && now_ms.saturating_sub(t) < recent)
        })
    }

    /// The lease lapsed: every VM stops (README "Isolation response"); a shut-down that
    /// began then ends in a power-off at its deadline even if the lease came back, since
    /// the adapter mounts again only after every VM stopped. Otherwise VM monitoring.
    fn guard_vms(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let fenced = !self.lease_valid;
        let grace = self.config.shutdown_grace_ms;
        let mut off = Vec::new();
        for (name, r) in &mut self.running {
            if fenced && r.power_off_at.is_none() {
                let response = self
                    .vms
                    .iter()
                    .find(|v| &v.name == name)
                    .map_or(IsolationResponse::PowerOff, |v| v.isolation_response);
                if response == IsolationResponse::ShutDown {
                    r.power_off_at = Some(now_ms + grace);
                    out.push(Action::ShutDown {
                        vm: name.clone(),
                        why: "datastore lease lapsed".into(),
                    });
                    continue;
                }
                r.power_off_at = Some(now_ms);
            }
            if r.power_off_at.is_some_and(|t| now_ms >= t) {
                off.push(name.clone());
            }
        }
        for vm in off {
            self.running.remove(&vm);
            out.push(Action::PowerOff {
                vm,
                why: "datastore lease lapsed: another host will restart it".into(),
            });
        }
        if fenced {
            return;
        }
        let m = self.config.vm_monitoring;
        for (name, r) in &mut self.running {
            if r.power_off_at.is_none() && r.watch.due(now_ms, &m) {
                out.push(Action::Reset {
                    vm: name.clone(),
                    why: format!("no guest heartbeat for {} ms", m.missed_ms),
                });
            }
        }
    }

    /// VMs whose lock this host holds, that should run, but do not run here (after a
    /// fence that passed before anyone took them, or after this host restarted).
    fn restart_own(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        if !self.datastore_fresh(now_ms) {
            return;
        }
        let me = self.config.host;
        let own: Vec<String> = self
            .vms
            .iter()
            .filter(|v| v.owner == Some(me) && v.desired_on)
            .filter(|v| !self.running.contains_key(&v.name))
            .map(|v| v.name.clone())
            .collect();
        for vm in own {
            self.power_on(now_ms, &vm, out);
        }
    }

    /// The planner's round: restart the VMs of failed hosts and the unowned ones.
    fn plan(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        if !self.datastore_fresh(now_ms) {
            return;
        }
        let me = self.config.host;
        let verdict = |h: u32| {
            if h == me {
                Verdict::Alive
            } else {
                self.peers.get(&h).map_or(Verdict::Unknown, |p| p.verdict)
            }
        };
        let victims: Vec<&str> = self
            .vms
            .iter()
            .filter(|v| v.desired_on && v.priority != RestartPriority::Disabled)
            .filter(|v| match v.owner {
                None => self.surely_unowned(&v.name, now_ms),
                Some(h) => verdict(h) == Verdict::Failed,
            })
            .map(|v| v.name.as_str())
            .collect();
        if victims.is_empty() {
            self.unplaced.clear();
            return;
        }
        let targets: Vec<u32> = std::iter::once(me)
            .chain(
                self.peers
                    .values()
                    .filter(|p| p.verdict == Verdict::Alive && p.lease_valid && !p.isolated)
                    .map(|p| p.id),
            )
            .filter(|h| !self.maintenance.contains(h))
            .collect();
        // Restarts are never refused by admission control (as in VMware HA); a power-on of
        // a VM that no host holds is, when it would eat the failover reserve.
        let mut refused = Vec::new();
        let mut admitted: Vec<&str> = Vec::new();
        // The inventory as admission sees it: those admitted this round count as running.
        let mut with: Vec<VmRecord> = self.vms.clone();
        for &name in &victims {
            let fresh = self.vms.iter().any(|v| v.name == name && v.owner.is_none());
            if fresh {
                if let Err(reason) = plan::admit(
                    &self.config.hosts,
                    &targets,
                    &with,
                    name,
                    self.config.admission,
                ) {
                    refused.push(plan::Unplaced {
                        vm: name.to_string(),
                        reason,
                    });
                    continue;
                }
            }
            admitted.push(name);
            if let Some(w) = with.iter_mut().find(|w| w.name == name) {
                w.owner = Some(me);
            }
        }
        let round = match plan::restart(&self.config.hosts, &targets, &self.vms, &admitted) {
            Ok(r) => r,
            Err(e) => {
                out.push(Action::Unplaced {
                    vm: victims.join(","),
                    reason: format!("the restart plan failed: {e}"),
                });
                return;
            }
        };
        let mut unplaced = BTreeMap::new();
        for u in round.unplaced.into_iter().chain(refused) {
            if self.unplaced.get(&u.vm) != Some(&u.reason) {
                out.push(Action::Unplaced {
                    vm: u.vm.clone(),
                    reason: u.reason.clone(),
                });
            }
            unplaced.insert(u.vm, u.reason);
        }
        self.unplaced = unplaced;
        let planned = self.seq;
        for a in round.assignments {
            if a.host == me {
                self.power_on(now_ms, &a.vm, out);
            } else {
                let bytes = self.seal(Body::Assign {
                    round: planned,
                    vm: a.vm,
                });
                out.push(Action::Send { to: a.host, bytes });
            }
        }
    }

    /// The VMs the datastore lists, as last read.
    pub fn inventory(&self) -> &[VmRecord] {
        &self.vms
    }

    /// VMs asked to power on here and not answered yet.
    pub fn starting(&self) -> BTreeSet<&str> {
        self.starting.keys().map(String::as_str).collect()
    }
}
