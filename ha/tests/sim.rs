//! Seeded simulation of whole clusters running the real [`Agent`]: a lossy, jittery
//! network with partitions, isolation, stalls, asymmetric links, forged and replayed
//! packets; a shared datastore with heartbeat slots and VM locks that only a dead owner
//! loses; host crashes and restarts; storage loss and slow storage.
//!
//! Checked at every step (README "Tests"):
//! - never two running copies of a VM (a power-on while another live host runs it fails);
//! - no restart without a real failure (a VM starts elsewhere only after its host crashed
//!   or was fenced);
//! - a host whose datastore heartbeat moves is never declared failed, and never stops its
//!   VMs;
//! - after the faults heal, every restartable VM runs on exactly one live host.
//!
//! A failing seed prints the command that replays it (`SIM_SEED=<n>`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vinfra_ha::wire::{Body, Codec, Packet};
use vinfra_ha::{
    Action, Agent, ClusterKey, Config, Event, HostConfig, IsolationAddress, IsolationResponse,
    PowerOnOutcome, Reading, RestartPriority, SlotReading, Verdict, VmRecord,
};
use vinfra_testkit::{for_each_seed, seeds};

const STEP_MS: u64 = 10;
const TICK_MS: u64 = 50;
/// vmfs's defaults: a heartbeat write every second, a lease of 8 s, fence at half a lease.
const DS_INTERVAL_MS: u64 = 1000;
const LEASE_MS: u64 = 8000;
const FAULTS_END_MS: u64 = 40_000;
const END_MS: u64 = FAULTS_END_MS + LEASE_MS + 15_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Crash,
    Fence,
}

#[derive(Debug, Clone)]
enum Fault {
    Crash {
        host: u32,
        at: u64,
        back: u64,
    },
    /// All links of the host down, isolation addresses unreachable.
    Isolate {
        host: u32,
        from: u64,
        to: u64,
    },
    /// Links between the two groups down (isolation addresses reachable by all).
    Partition {
        side: BTreeSet<u32>,
        from: u64,
        to: u64,
    },
    /// One direction of one link down.
    OneWay {
        from_host: u32,
        to_host: u32,
        from: u64,
        to: u64,
    },
    StorageLost {
        host: u32,
        from: u64,
        to: u64,
    },
    /// Heartbeat writes take this long.
    SlowStorage {
        host: u32,
        from: u64,
        to: u64,
        latency: u64,
    },
    /// Everything sent to or by the host is held until `to`.
    NetStall {
        host: u32,
        from: u64,
        to: u64,
    },
}

type InFlight = (u64, u64, u32, Vec<u8>);

struct SimHost {
    id: u32,
    agent: Option<Agent>,
    incarnation: u64,
    generation: u32,
    counter: u64,
    last_write_ok: u64,
    /// When the last long gap between two writes (≥ the failure timeout, less a read
    /// interval) ended: a verdict formed on a read taken just before judged that gap.
    long_gap_end: u64,
    next_write: u64,
    write_done_at: Option<u64>,
    next_tick: u64,
    running: BTreeSet<String>,
    shutting: BTreeMap<String, u64>,
    /// Fenced until the storage is back; then it mounts again (a new generation).
    fenced: bool,
}

#[derive(Debug, Clone, Copy)]
struct Lock {
    owner: u32,
    generation: u32,
}

struct World {
    now: u64,
    rng: ChaCha8Rng,
    key: ClusterKey,
    configs: Vec<Config>,
    hosts: Vec<SimHost>,
    vms: Vec<VmRecord>,
    locks: BTreeMap<String, Lock>,
    /// Why each VM last stopped (None: never stopped, or running).
    stopped: BTreeMap<String, Stop>,
    /// In flight: (delivery time, send order, to, bytes), earliest first.
    net: BinaryHeap<Reverse<InFlight>>,
    net_seq: u64,
    loss: f64,
    jitter: u64,
    faults: Vec<Fault>,
    captured: Vec<(u32, Vec<u8>)>,
    log: Vec<String>,
    restarts: u64,
    /// When a host was first declared failed, by anyone.
    failed_at: BTreeMap<u32, u64>,
    /// When each VM last started on a new host.
    moved_at: BTreeMap<String, u64>,
}

impl World {
    fn host(&self, id: u32) -> &SimHost {
        self.hosts.iter().find(|h| h.id == id).unwrap()
    }

    fn host_mut(&mut self, id: u32) -> &mut SimHost {
        self.hosts.iter_mut().find(|h| h.id == id).unwrap()
    }

    fn alive(&self, id: u32) -> bool {
        self.host(id).agent.is_some()
    }

    fn storage_lost(&self, id: u32) -> bool {
        self.faults.iter().any(|f| {
            matches!(f, Fault::StorageLost { host, from, to } if *host == id && (*from..*to).contains(&self.now))
        })
    }

    fn write_latency(&self, id: u32) -> u64 {
        self.faults
            .iter()
            .filter_map(|f| match f {
                Fault::SlowStorage {
                    host,
                    from,
                    to,
                    latency,
                } if *host == id && (*from..*to).contains(&self.now) => Some(*latency),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    fn isolated(&self, id: u32) -> bool {
        self.faults.iter().any(|f| {
            matches!(f, Fault::Isolate { host, from, to } if *host == id && (*from..*to).contains(&self.now))
        })
    }

    fn link_up(&self, a: u32, b: u32) -> bool {
        let t = self.now;
        !self.faults.iter().any(|f| match f {
            Fault::Isolate { host, from, to } => {
                (*from..*to).contains(&t) && (*host == a || *host == b)
            }
            Fault::Partition { side, from, to } => {
                (*from..*to).contains(&t) && side.contains(&a) != side.contains(&b)
            }
            Fault::OneWay {
                from_host,
                to_host,
                from,
                to,
            } => (*from..*to).contains(&t) && *from_host == a && *to_host == b,
            _ => false,
        })
    }

    /// When a packet sent now from a to b is delivered (None: lost).
    fn delivery(&mut self, a: u32, b: u32) -> Option<u64> {
        if !self.link_up(a, b) || self.rng.random_bool(self.loss) {
            return None;
        }
        let mut at = self.now + 1 + self.rng.random_range(0..=self.jitter);
        for f in &self.faults {
            if let Fault::NetStall { host, from, to } = f {
                if (*host == a || *host == b) && (*from..*to).contains(&self.now) {
                    at = at.max(*to);
                }
            }
        }
        Some(at)
    }

    fn lease_valid(&self, id: u32) -> bool {
        let h = self.host(id);
        !h.fenced && self.now.saturating_sub(h.last_write_ok) < LEASE_MS / 2
    }

    fn reading(&self) -> Reading {
        Reading {
            slots: self
                .hosts
                .iter()
                .map(|h| SlotReading {
                    host: h.id,
                    generation: h.generation,
                    counter: h.counter,
                    live: true,
                })
                .collect(),
            vms: self
                .vms
                .iter()
                .map(|v| VmRecord {
                    owner: self.locks.get(&v.name).map(|l| l.owner),
                    ..v.clone()
                })
                .collect(),
            maintenance: Vec::new(),
        }
    }

    /// vmfs's rule: a lock is the taker's if it is free, its own, held under an older
    /// mount of its owner, or its owner's heartbeat has been still for a whole lease.
    fn may_take(&self, vm: &str, by: u32) -> Result<(), u32> {
        let Some(l) = self.locks.get(vm) else {
            return Ok(());
        };
        let o = self.host(l.owner);
        if l.owner == by || o.generation != l.generation {
            return Ok(());
        }
        if self.now.saturating_sub(o.last_write_ok) >= LEASE_MS {
            return Ok(());
        }
        Err(l.owner)
    }

    fn fail(&self, seed: u64, what: String) -> ! {
        let tail: Vec<&String> = self.log.iter().rev().take(40).collect();
        panic!(
            "seed {seed} at {} ms: {what}\nfaults: {:?}\nloss {} jitter {}\nlast log lines (newest first):\n{}",
            self.now,
            self.faults,
            self.loss,
            self.jitter,
            tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        );
    }
}

fn hosts_config(n: u32) -> Vec<HostConfig> {
    (1..=n)
        .map(|id| HostConfig {
            id,
            addr: format!("127.0.0.{id}:8804"),
            cpu_mhz: 10_000,
            mem_mb: 32_768,
        })
        .collect()
}

fn build(seed: u64) -> World {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: u32 = rng.random_range(3..=6);
    let hosts = hosts_config(n);
    let configs: Vec<Config> = (1..=n)
        .map(|id| {
            let mut c = Config::new(id, hosts.clone());
            c.isolation_addresses = vec![
                IsolationAddress::UdpEcho("127.0.0.254:7".into()),
                IsolationAddress::TcpConnect("127.0.0.253:22".into()),
            ];
            c.vm_monitoring.missed_ms = 5000;
            c
        })
        .collect();
    let vm_count = rng.random_range(4..=(4 * n as usize).min(16));
    let vms: Vec<VmRecord> = (0..vm_count)
        .map(|i| VmRecord {
            name: format!("vm-{i}"),
            owner: None,
            desired_on: true,
            priority: match rng.random_range(0..8) {
                0 => RestartPriority::Disabled,
                1 | 2 => RestartPriority::High,
                3 => RestartPriority::Low,
                _ => RestartPriority::Medium,
            },
            isolation_response: match rng.random_range(0..3) {
                0 => IsolationResponse::PowerOff,
                1 => IsolationResponse::ShutDown,
                _ => IsolationResponse::LeaveOn,
            },
            cpu_mhz: rng.random_range(200..=1000),
            mem_mb: rng.random_range(256..=2048),
        })
        .collect();
    let key = ClusterKey::from_bytes([0x5a; 32]);
    let sim_hosts: Vec<SimHost> = (1..=n)
        .map(|id| SimHost {
            id,
            agent: Some(Agent::new(configs[id as usize - 1].clone(), &key, 1, 0).unwrap()),
            incarnation: 1,
            generation: 1,
            counter: 1,
            last_write_ok: 0,
            long_gap_end: 0,
            next_write: rng.random_range(0..DS_INTERVAL_MS),
            write_done_at: None,
            next_tick: rng.random_range(0..TICK_MS),
            running: BTreeSet::new(),
            shutting: BTreeMap::new(),
            fenced: false,
        })
        .collect();
    let loss = [0.0, 0.02, 0.1, 0.2][rng.random_range(0..4)];
    let jitter = [0, 20, 100, 500][rng.random_range(0..4)];
    let mut faults = Vec::new();
    for _ in 0..rng.random_range(1..=4) {
        let host = rng.random_range(1..=n);
        let from = rng.random_range(2_000..30_000);
        let to = (from + rng.random_range(500..20_000)).min(FAULTS_END_MS);
        faults.push(match rng.random_range(0..8) {
            0 | 1 => Fault::Crash {
                host,
                at: from,
                back: if rng.random_bool(0.5) {
                    to
                } else {
                    FAULTS_END_MS
                },
            },
            2 => Fault::Isolate { host, from, to },
            3 => {
                let side: BTreeSet<u32> = (1..=n).filter(|_| rng.random_bool(0.5)).collect();
                Fault::Partition { side, from, to }
            }
            4 => Fault::StorageLost { host, from, to },
            5 => Fault::SlowStorage {
                host,
                from,
                to,
                latency: rng.random_range(100..=1000),
            },
            6 => Fault::NetStall {
                host,
                from,
                to: from + rng.random_range(200..=2000),
            },
            _ => Fault::OneWay {
                from_host: host,
                to_host: rng.random_range(1..=n),
                from,
                to,
            },
        });
    }
    // A cut from both network and storage, the case that must stop VMs, now and then.
    if rng.random_bool(0.2) {
        let host = rng.random_range(1..=n);
        let from = rng.random_range(2_000..25_000);
        let to = from + rng.random_range(5_000..15_000);
        faults.push(Fault::Isolate { host, from, to });
        faults.push(Fault::StorageLost { host, from, to });
    }
    let mut w = World {
        now: 0,
        rng,
        key,
        configs,
        hosts: sim_hosts,
        vms,
        locks: BTreeMap::new(),
        stopped: BTreeMap::new(),
        net: BinaryHeap::new(),
        net_seq: 0,
        loss,
        jitter,
        faults,
        captured: Vec::new(),
        log: Vec::new(),
        restarts: 0,
        failed_at: BTreeMap::new(),
        moved_at: BTreeMap::new(),
    };
    // The VMs start spread over the hosts, locks taken.
    let names: Vec<String> = w.vms.iter().map(|v| v.name.clone()).collect();
    for (i, name) in names.iter().enumerate() {
        let h = u32::try_from(i).unwrap() % n + 1;
        w.locks.insert(
            name.clone(),
            Lock {
                owner: h,
                generation: 1,
            },
        );
        w.host_mut(h).running.insert(name.clone());
        w.host_mut(h).agent.as_mut().unwrap().handle(
            0,
            Event::PowerOnResult {
                vm: name.clone(),
                outcome: PowerOnOutcome::Started,
            },
        );
    }
    w
}

fn feed(w: &mut World, seed: u64, id: u32, event: Event) {
    let now = w.now;
    let Some(agent) = w.host_mut(id).agent.as_mut() else {
        return;
    };
    let actions = agent.handle(now, event);
    for a in actions {
        act(w, seed, id, a);
    }
}

fn act(w: &mut World, seed: u64, id: u32, a: Action) {
    let now = w.now;
    match a {
        Action::Send { to, bytes } => {
            if w.rng.random_bool(0.01) {
                w.captured.push((to, bytes.clone()));
            }
            if let Some(at) = w.delivery(id, to) {
                w.net_seq += 1;
                let s = w.net_seq;
                w.net.push(Reverse((at, s, to, bytes)));
            }
        }
        Action::ReadDatastore => {
            let ev = if w.storage_lost(id) || w.host(id).fenced {
                Event::DatastoreUnreadable
            } else {
                Event::Datastore(w.reading())
            };
            feed(w, seed, id, ev);
        }
        Action::Probe { address } => {
            let reachable = !w.isolated(id);
            feed(w, seed, id, Event::Probe { address, reachable });
        }
        Action::PowerOn { vm } => {
            let outcome = if w.storage_lost(id) || w.host(id).fenced {
                PowerOnOutcome::Failed("no storage".into())
            } else {
                match w.may_take(&vm, id) {
                    Ok(()) => {
                        if let Some(other) = w
                            .hosts
                            .iter()
                            .find(|h| h.id != id && h.agent.is_some() && h.running.contains(&vm))
                        {
                            let other = other.id;
                            w.fail(
                                seed,
                                format!(
                                    "{vm} powered on by host {id} while it runs on host {other}"
                                ),
                            );
                        }
                        let previous = w.locks.get(&vm).map(|l| l.owner);
                        if previous.is_some_and(|p| p != id) && !w.stopped.contains_key(&vm) {
                            w.fail(seed, format!("{vm} restarted on host {id} without a failure of host {previous:?}"));
                        }
                        if previous != Some(id) {
                            w.restarts += 1;
                            w.moved_at.insert(vm.clone(), now);
                        }
                        let generation = w.host(id).generation;
                        w.locks.insert(
                            vm.clone(),
                            Lock {
                                owner: id,
                                generation,
                            },
                        );
                        w.stopped.remove(&vm);
                        w.host_mut(id).running.insert(vm.clone());
                        w.log
                            .push(format!("{now} h{id} starts {vm} (lock was h{previous:?})"));
                        PowerOnOutcome::Started
                    }
                    Err(owner) => PowerOnOutcome::LockHeld { owner },
                }
            };
            feed(w, seed, id, Event::PowerOnResult { vm, outcome });
        }
        Action::PowerOff { vm, why } | Action::ShutDown { vm, why } if w.lease_valid(id) => {
            w.fail(
                seed,
                format!("host {id} stops {vm} with its lease valid: {why}"),
            );
        }
        Action::PowerOff { vm, .. } => {
            w.log.push(format!("{now} h{id} powers off {vm}"));
            w.host_mut(id).running.remove(&vm);
            w.host_mut(id).shutting.remove(&vm);
            w.stopped.insert(vm, Stop::Fence);
        }
        Action::ShutDown { vm, .. } => {
            let at = now + w.rng.random_range(0..1500);
            w.host_mut(id).shutting.insert(vm, at);
        }
        Action::Reset { vm, why } => w.fail(seed, format!("host {id} resets {vm}: {why}")),
        Action::Verdict { host, verdict } => {
            w.log
                .push(format!("{now} h{id} says h{host} is {verdict:?}"));
            if verdict == Verdict::Failed && host != id {
                w.failed_at.entry(host).or_insert(now);
                let timeout = w.configs[0].failure_timeout_ms;
                let x = w.host(host);
                // The slot is read every heartbeat interval: what the agent saw as still
                // for `timeout` was still for at least that less one read interval.
                let slack = 2 * w.configs[0].heartbeat_interval_ms;
                let still = now.saturating_sub(x.last_write_ok);
                let gap_just_ended = now.saturating_sub(x.long_gap_end) <= 2 * slack;
                if x.agent.is_some() && still + slack < timeout && !gap_just_ended {
                    w.fail(seed, format!("host {id} declared host {host} failed, whose datastore heartbeat moved {still} ms ago"));
                }
            }
        }
        Action::Unplaced { vm, reason } => w
            .log
            .push(format!("{now} h{id} cannot place {vm}: {reason}")),
    }
}

/// A heartbeat write landed at `now`.
fn wrote(h: &mut SimHost, now: u64) {
    // The sim's failure timeout is the default, 2500 ms; a read interval is 250 ms.
    if now - h.last_write_ok + 500 >= 2500 {
        h.long_gap_end = now;
    }
    h.last_write_ok = now;
}

fn crash(w: &mut World, id: u32) {
    let now = w.now;
    let h = w.host_mut(id);
    h.agent = None;
    let gone: Vec<String> = std::mem::take(&mut h.running).into_iter().collect();
    h.shutting.clear();
    h.write_done_at = None;
    for vm in gone {
        w.stopped.insert(vm, Stop::Crash);
    }
    w.log.push(format!("{now} h{id} crashes"));
}

fn boot(w: &mut World, id: u32) {
    let now = w.now;
    let config = w.configs[id as usize - 1].clone();
    let key = w.key.clone();
    let h = w.host_mut(id);
    h.incarnation += 1;
    h.generation += 1;
    h.counter += 1;
    wrote(h, now);
    h.next_write = now + DS_INTERVAL_MS;
    h.fenced = false;
    h.agent = Some(Agent::new(config, &key, h.incarnation, now).unwrap());
    w.log.push(format!("{now} h{id} boots"));
}

fn step(w: &mut World, seed: u64) {
    let now = w.now;
    // Long runs keep only the recent history.
    if w.log.len() > 4000 {
        w.log.drain(..2000);
    }
    if w.captured.len() > 2000 {
        w.captured.drain(..1000);
    }
    // Crashes and restarts.
    let events: Vec<(u32, bool)> = w
        .faults
        .iter()
        .filter_map(|f| match f {
            Fault::Crash { host, at, .. } if *at == now => Some((*host, false)),
            Fault::Crash { host, back, .. } if *back == now => Some((*host, true)),
            _ => None,
        })
        .collect();
    for (id, up) in events {
        match (up, w.alive(id)) {
            (false, true) => crash(w, id),
            (true, false) => boot(w, id),
            _ => {}
        }
    }
    if now == FAULTS_END_MS {
        let down: Vec<u32> = w
            .hosts
            .iter()
            .filter(|h| h.agent.is_none())
            .map(|h| h.id)
            .collect();
        for id in down {
            boot(w, id);
        }
    }
    // Packets due.
    while w.net.peek().is_some_and(|Reverse((at, ..))| *at <= now) {
        let Reverse((_, _, to, bytes)) = w.net.pop().unwrap();
        feed(w, seed, to, Event::Packet { bytes });
    }
    // Forgeries and replays.
    if w.rng.random_bool(0.02) {
        let n = u32::try_from(w.hosts.len()).unwrap();
        let to = w.rng.random_range(1..=n);
        let forged = Codec::new(&ClusterKey::from_bytes([1; 32])).seal(&Packet {
            sender: w.rng.random_range(1..=n),
            incarnation: u64::MAX,
            seq: u64::MAX,
            body: Body::Assign {
                round: 0,
                vm: "vm-0".into(),
            },
        });
        feed(w, seed, to, Event::Packet { bytes: forged });
        if !w.captured.is_empty() {
            let i = w.rng.random_range(0..w.captured.len());
            let (to, bytes) = w.captured[i].clone();
            feed(w, seed, to, Event::Packet { bytes });
        }
    }
    let ids: Vec<u32> = w.hosts.iter().map(|h| h.id).collect();
    for id in ids {
        if !w.alive(id) {
            continue;
        }
        // Datastore heartbeat writes.
        let lost = w.storage_lost(id);
        let latency = w.write_latency(id);
        let h = w.host_mut(id);
        if let Some(done) = h.write_done_at {
            if now >= done {
                h.write_done_at = None;
                if !lost && !h.fenced {
                    h.counter += 1;
                    wrote(h, now);
                }
            }
        } else if now >= h.next_write {
            h.next_write = now + DS_INTERVAL_MS;
            h.write_done_at = Some(now + latency);
        }
        // vmfs fences at half a lease without a renewal, until the storage is back.
        if !h.fenced && now.saturating_sub(h.last_write_ok) >= LEASE_MS / 2 {
            h.fenced = true;
        } else if h.fenced && !lost && h.running.is_empty() {
            // The adapter mounts again only once every VM it ran under the old mount has
            // stopped: the new generation frees the old locks.
            h.generation += 1;
            h.fenced = false;
            h.counter += 1;
            wrote(h, now);
            w.log.push(format!("{now} h{id} mounts again"));
        }
        // Shut-downs completing.
        let h = w.host_mut(id);
        let done: Vec<String> = h
            .shutting
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(v, _)| v.clone())
            .collect();
        for vm in done {
            let h = w.host_mut(id);
            h.shutting.remove(&vm);
            if h.running.remove(&vm) {
                w.stopped.insert(vm.clone(), Stop::Fence);
                feed(w, seed, id, Event::VmStopped { vm });
            }
        }
        // Agent ticks, with the lease and the guests' heartbeats.
        if now >= w.host(id).next_tick {
            w.host_mut(id).next_tick = now + TICK_MS;
            let valid = w.lease_valid(id);
            feed(w, seed, id, Event::OwnLease { valid });
            if now % 1000 < TICK_MS {
                let vms: Vec<String> = w.host(id).running.iter().cloned().collect();
                for vm in vms {
                    feed(w, seed, id, Event::GuestHeartbeat { vm });
                }
            }
            feed(w, seed, id, Event::Tick);
        }
    }
}

fn run(seed: u64) {
    let mut w = build(seed);
    while w.now <= END_MS {
        step(&mut w, seed);
        w.now += STEP_MS;
    }
    // Every restartable VM runs on exactly one live host.
    for v in &w.vms {
        let on: Vec<u32> = w
            .hosts
            .iter()
            .filter(|h| h.agent.is_some() && h.running.contains(&v.name))
            .map(|h| h.id)
            .collect();
        if v.priority != RestartPriority::Disabled && on.len() != 1 {
            let verdicts: Vec<String> = w
                .hosts
                .iter()
                .map(|h| {
                    let a = h.agent.as_ref().unwrap();
                    format!(
                        "h{}: planner {:?}, starting {:?}",
                        h.id,
                        a.planner(),
                        a.starting()
                    )
                })
                .collect();
            w.fail(
                seed,
                format!(
                    "{} ({:?}) runs on {on:?} at the end; lock {:?}; {verdicts:?}",
                    v.name,
                    v.priority,
                    w.locks.get(&v.name)
                ),
            );
        }
    }
}

/// Seeds that once failed, kept whatever the default range becomes.
const FOUND_BUGS: [u64; 3] = [75, 586, 2295];

/// One host killed in a cluster with 10 % packet loss and 100 ms jitter, no other fault:
/// the verdict comes within the failure timeout (+ a heartbeat interval), and every
/// restartable VM of that host runs elsewhere within a lease (+ 2 s) of its last
/// heartbeat write.
#[test]
fn a_killed_host_is_declared_failed_in_3_s_and_its_vms_run_elsewhere_after_the_lease() {
    for_each_seed(seeds(0..50), |seed| {
        let mut w = build(seed);
        w.loss = 0.1;
        w.jitter = 100;
        let kill_at = 10_000;
        w.faults = vec![Fault::Crash {
            host: 2,
            at: kill_at,
            back: END_MS + 1,
        }];
        let victims: Vec<(String, RestartPriority)> = w
            .vms
            .iter()
            .filter(|v| w.locks[&v.name].owner == 2)
            .map(|v| (v.name.clone(), v.priority))
            .collect();
        let mut last_write = 0;
        while w.now <= kill_at + LEASE_MS + 5_000 {
            if w.now == kill_at {
                last_write = w.host(2).last_write_ok;
            }
            step(&mut w, seed);
            w.now += STEP_MS;
        }
        let verdict = w.failed_at.get(&2).copied();
        assert!(
            verdict.is_some_and(|t| t - kill_at <= 3000),
            "seed {seed}: verdict {verdict:?}, killed at {kill_at}"
        );
        for (vm, priority) in victims {
            let moved = w.moved_at.get(&vm).copied();
            if priority == RestartPriority::Disabled {
                assert_eq!(moved, None, "seed {seed}: {vm} has restarts disabled");
                continue;
            }
            assert!(
                moved.is_some_and(|t| t - last_write <= LEASE_MS + 2000),
                "seed {seed}: {vm} restarted at {moved:?}, the host last wrote at {last_write}"
            );
        }
    });
}

#[test]
fn clusters_under_faults_never_run_a_vm_twice_and_restart_what_failed() {
    for_each_seed(seeds((0..2000).chain(FOUND_BUGS)), run);
}

#[test]
#[ignore = "long: thousands more seeds (SIM_SEEDS=n)"]
fn many_more_seeds() {
    let n: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    for_each_seed(seeds(2000..2000 + n), run);
}

/// False positives: `hours` of simulated time of a cluster of `hosts` live hosts at 10 %
/// packet loss and 0-500 ms delay, where every host's network traffic stalls for 2 s (all
/// its packets held back, both ways) about every 5 minutes and its datastore heartbeat
/// writes take 0-500 ms. Nobody crashes, so any `failed` verdict is a false positive (and
/// the step checks of `act` still apply). Returns the simulated host-hours.
fn false_positives(seed: u64, hosts: u32, hours: u64) -> f64 {
    let mut w = build(seed);
    // Rebuild with the wanted cluster size, keeping the seed's VMs small in number.
    while u32::try_from(w.hosts.len()).unwrap() > hosts {
        let id = u32::try_from(w.hosts.len()).unwrap();
        w.hosts.pop();
        w.locks.retain(|_, l| l.owner != id);
    }
    let n = u32::try_from(w.hosts.len()).unwrap();
    let names: Vec<String> = w.locks.keys().cloned().collect();
    w.vms.retain(|v| names.contains(&v.name));
    let configs: Vec<Config> = (1..=n)
        .map(|id| {
            let mut c = Config::new(id, hosts_config(n));
            c.isolation_addresses = w.configs[0].isolation_addresses.clone();
            c.vm_monitoring.missed_ms = 5000;
            c
        })
        .collect();
    w.configs = configs;
    for h in &mut w.hosts {
        let key = w.key.clone();
        let mut agent = Agent::new(w.configs[h.id as usize - 1].clone(), &key, 1, 0).unwrap();
        for vm in &h.running {
            agent.handle(
                0,
                Event::PowerOnResult {
                    vm: vm.clone(),
                    outcome: PowerOnOutcome::Started,
                },
            );
        }
        h.agent = Some(agent);
    }
    w.loss = 0.1;
    w.jitter = 500;
    w.faults.clear();
    let end = hours * 3_600_000;
    let minute = 60_000;
    w.now = 0;
    while w.now < end {
        if w.now % minute == 0 {
            let now = w.now;
            w.faults.retain(|f| !matches!(f, Fault::NetStall { to, .. } | Fault::SlowStorage { to, .. } if *to <= now));
            for host in 1..=n {
                if w.rng.random_bool(0.2) {
                    let from = now + w.rng.random_range(0..minute);
                    w.faults.push(Fault::NetStall {
                        host,
                        from,
                        to: from + 2000,
                    });
                }
            }
            for host in 1..=n {
                let latency = w.rng.random_range(0..=500);
                w.faults.push(Fault::SlowStorage {
                    host,
                    from: now,
                    to: now + minute,
                    latency,
                });
            }
        }
        step(&mut w, seed);
        w.now += STEP_MS;
    }
    assert!(
        w.failed_at.is_empty(),
        "seed {seed}: live hosts declared failed: {:?}",
        w.failed_at
    );
    f64::from(n) * hours as f64
}

#[test]
fn no_live_host_is_declared_failed_at_10_percent_loss_500_ms_jitter_and_2_s_stalls() {
    for_each_seed(seeds(0..2), |seed| {
        false_positives(seed, 6, 1);
    });
}

/// The benchmark's run (`benches/peers/ha-failover.sh` calls it): 10,000 host-hours,
/// printed with the simulated host-hours per wall-clock second.
#[test]
#[ignore = "long: 10,000 simulated host-hours (FP_HOST_HOURS=n)"]
fn false_positive_host_hours() {
    let target: f64 = std::env::var("FP_HOST_HOURS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000.0);
    let hosts = 6;
    let per_seed_hours = 25;
    let t = std::time::Instant::now();
    // Seeds share out over the cores; each worker takes the next seed until the target
    // is met.
    let next = std::sync::atomic::AtomicU64::new(0);
    let hours = std::sync::Mutex::new(0.0f64);
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if *hours.lock().unwrap() >= target {
                    return;
                }
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let h = false_positives(seed, hosts, per_seed_hours);
                *hours.lock().unwrap() += h;
            });
        }
    });
    let done = *hours.lock().unwrap();
    let seed = next.load(std::sync::atomic::Ordering::Relaxed);
    let secs = t.elapsed().as_secs_f64();
    println!("false_positive_failed_verdicts: 0 in {done:.0} simulated host-hours (clusters of 3 to {hosts} hosts, {seed} seeds)");
    println!("simulated_host_hours_per_s: {:.1}", done / secs);
}
