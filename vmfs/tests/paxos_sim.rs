//! Deterministic simulation of Disk Paxos locks: hosts interleave single-sector reads and
//! writes of one lock record's area in a seeded order, with delays, crashes (an in-flight
//! write lands or not) and restarts, and take an exclusive lock by compare-and-write
//! (free → mine, dead host's → mine) and release it (mine → free). Checked after every
//! step: never two holders, a live holder's release always succeeds, and every instance
//! is decided once. A failing seed replays with `SIM_SEED=<n>`.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::HashMap;

use vinfra_vmfs::paxos::ballot::{Action, HostSectors, Outcome, Proposer, FAST_BALLOT};
use vinfra_vmfs::paxos::block::{
    decode_decisions, encode_decisions, Learned, Proposal, Value, SECTOR,
};

/// splitmix64: small, seeded, and the same everywhere.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

const FREE: [u8; SECTOR] = [0; SECTOR];

fn held(host: u32, gen: u32) -> Vec<u8> {
    let mut v = vec![0u8; SECTOR];
    v[0] = 1;
    v[1] = host as u8;
    v[4..8].copy_from_slice(&gen.to_le_bytes());
    v[508] = 0xC5; // like a record's crc: a non-zero tail
    v
}

fn holder_of(v: &[u8]) -> Option<(u32, u32)> {
    (v[0] == 1).then(|| (v[1] as u32, u32::from_le_bytes([v[4], v[5], v[6], v[7]])))
}

/// One sector-level step of a host.
#[derive(Debug)]
enum Io {
    Read(usize),
    Write(usize, Vec<u8>),
}

#[derive(Debug)]
enum Goal {
    Acquire,
    Release,
}

/// A compare-and-write in flight: the proposer, its goal, the I/Os left of its current
/// action, what that action's reads gathered, and whether it reads the home sector.
type InFlight = (Proposer, Goal, Vec<Io>, HashMap<usize, Vec<u8>>, bool);

struct Host {
    id: u32,
    gen: u32,
    alive: bool,
    down_until: u64,
    holding: bool,
    sleep_until: u64,
    /// A long stall mid-compare-and-write lasts until then (no crash meanwhile: what is
    /// under test is the host that wakes up).
    stalled_until: u64,
    cas: Option<InFlight>,
    expected: Vec<u8>,
    known: Option<(u64, Value)>,
    /// Its own sectors as its last compare-and-write left them (what `PaxosDevice`
    /// caches): with them a compare-and-write may skip its first area read.
    own: Option<HostSectors>,
    hold_left: u64,
}

struct Sim {
    seed: u64,
    rng: Rng,
    hosts: Vec<Host>,
    /// Sector 0: home; then 3 sectors per host (proposal, learned, decisions).
    disk: Vec<Vec<u8>>,
    decided: HashMap<u64, (u32, u64, Vec<u8>)>,
    now: u64,
    acquired: u64,
    broken: u64,
    errors: u64,
    /// Long stalls of a host in the middle of a compare-and-write.
    stalls: u64,
    /// How long one lasts at least (steps).
    stall_len: u64,
    /// Compare-and-writes that skipped their first area read (own sectors cached).
    skipped_read: u64,
    /// Compare-and-writes that started at the reserved ballot (the last owner's).
    fast: u64,
    /// … of which aborted to the normal path (another host's ballot seen).
    fast_aborted: u64,
    /// Crashes with the host's ballot-1 proposal on the disk (its restart must not reuse
    /// the reserved ballot for that instance).
    fast_crashed: u64,
    /// Every value written at the reserved ballot, per instance: at most one each.
    fast_values: HashMap<u64, (u32, u64, Vec<u8>)>,
}

fn sector_of(host: u32, which: usize) -> usize {
    1 + host as usize * 3 + which
}

impl Sim {
    fn new(seed: u64, n: u32) -> Sim {
        let hosts = (0..n)
            .map(|id| Host {
                id,
                gen: 1,
                alive: true,
                down_until: 0,
                holding: false,
                sleep_until: 0,
                stalled_until: 0,
                cas: None,
                expected: FREE.to_vec(),
                known: None,
                own: None,
                hold_left: 0,
            })
            .collect();
        Sim {
            seed,
            rng: Rng(seed),
            hosts,
            disk: vec![FREE.to_vec(); 1 + 3 * n as usize],
            decided: HashMap::new(),
            now: 0,
            acquired: 0,
            broken: 0,
            errors: 0,
            stalls: 0,
            stall_len: std::env::var("SIM_STALL").map_or(1000, |s| s.parse().unwrap()),
            skipped_read: 0,
            fast: 0,
            fast_aborted: 0,
            fast_crashed: 0,
            fast_values: HashMap::new(),
        }
    }

    fn holders(&self) -> Vec<u32> {
        // A host releasing has stopped using the lock: its release may be decided (by
        // another host completing it) before its own compare-and-write returns.
        self.hosts
            .iter()
            .filter(|h| h.alive && h.holding && !matches!(h.cas, Some((_, Goal::Release, ..))))
            .map(|h| h.id)
            .collect()
    }

    /// The I/Os of one proposer action, in a random order where the device may reorder.
    fn expand(&mut self, host: u32, a: &Action) -> Vec<Io> {
        let n = self.hosts.len() as u32;
        let mut ios = match a {
            Action::Read { home } => {
                let mut v: Vec<Io> = (0..n)
                    .flat_map(|h| (0..3).map(move |w| Io::Read(sector_of(h, w))))
                    .collect();
                if *home {
                    v.push(Io::Read(0));
                }
                v
            }
            Action::WriteProposal(p) => vec![Io::Write(
                sector_of(host, 0),
                p.encode(host).unwrap().to_vec(),
            )],
            Action::WriteLearned(l, d) => vec![
                Io::Write(sector_of(host, 1), l.encode(host).unwrap().to_vec()),
                Io::Write(sector_of(host, 2), encode_decisions(host, d).to_vec()),
                Io::Write(0, l.value.bytes.clone()),
            ],
            _ => Vec::new(),
        };
        // A multi-sector read or write (before its flush) completes sector by sector in
        // any order.
        for i in (1..ios.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            ios.swap(i, j);
        }
        ios
    }

    fn sectors(&self, got: &HashMap<usize, Vec<u8>>) -> Vec<HostSectors> {
        (0..self.hosts.len() as u32)
            .map(|h| HostSectors {
                proposal: Proposal::decode(&got[&sector_of(h, 0)]).unwrap(),
                learned: Learned::decode(&got[&sector_of(h, 1)]).unwrap(),
                decisions: decode_decisions(&got[&sector_of(h, 2)]).unwrap(),
            })
            .collect()
    }

    /// Writes a sector, checking the reserved ballot's rule: in instance `k + 1` only the
    /// owner of instance `k`'s decided value uses it, and with one value only.
    fn write(&mut self, s: usize, b: Vec<u8>) {
        let proposal_sector = s > 0 && (s - 1) % 3 == 0;
        if proposal_sector {
            if let Some(p) = Proposal::decode(&b).unwrap() {
                if p.bal == FAST_BALLOT {
                    let owner = self.decided.get(&(p.instance - 1)).map(|d| d.0);
                    let writer = ((s - 1) / 3) as u32 + 1;
                    if p.mbal == FAST_BALLOT {
                        assert_eq!(
                            owner,
                            Some(writer),
                            "seed {}: ballot 1 of instance {} by a host that does not own the last value",
                            self.seed,
                            p.instance
                        );
                    }
                    let v = (p.inp.owner, p.inp.nonce, p.inp.bytes.clone());
                    let prev = self
                        .fast_values
                        .entry(p.instance)
                        .or_insert_with(|| v.clone());
                    assert_eq!(
                        *prev, v,
                        "seed {}: ballot 1 of instance {} used with two values",
                        self.seed, p.instance
                    );
                }
            }
        }
        self.disk[s] = b;
    }

    fn crash(&mut self, i: usize) {
        let own = Proposal::decode(&self.disk[sector_of(i as u32, 0)]).unwrap();
        if own.is_some_and(|p| p.mbal == FAST_BALLOT) {
            self.fast_crashed += 1;
        }
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!(
                "t={} host {} crashes (holding {})",
                self.now, i, self.hosts[i].holding
            );
        }
        let h = &mut self.hosts[i];
        h.alive = false;
        h.holding = false;
        h.cas = None;
        h.known = None;
        h.own = None;
        h.down_until = self.now + 50 + self.rng.below(400);
    }

    fn begin(&mut self, i: usize) {
        let (id, gen, holding) = (self.hosts[i].id, self.hosts[i].gen, self.hosts[i].holding);
        let (goal, expected, new) = if holding {
            (Goal::Release, held(id, gen), FREE.to_vec())
        } else {
            let exp = self.hosts[i].expected.clone();
            // Take it when free, or break it when its holder is dead or an earlier
            // incarnation (vmfs: after the lease and the journal replay).
            let breakable = match holder_of(&exp) {
                None => true,
                Some((x, g)) => {
                    let hx = &self.hosts[x as usize];
                    !hx.alive || hx.gen != g
                }
            };
            if !breakable {
                // Re-read the record, as the lock layer does before trying again.
                self.hosts[i].expected = self.disk[0].clone();
                self.hosts[i].sleep_until = self.now + self.rng.below(30);
                return;
            }
            (Goal::Acquire, exp, held(id, gen))
        };
        let own = self.hosts[i].own.take();
        let mut p = Proposer::new(id, &expected, &new, self.hosts[i].known.clone()).with_own(own);
        let a = p.start();
        if let Action::WriteProposal(w) = &a {
            self.skipped_read += 1;
            self.fast += u64::from(w.mbal == FAST_BALLOT);
        }
        let ios = self.expand(id, &a);
        let home = matches!(a, Action::Read { home: true });
        self.hosts[i].cas = Some((p, goal, ios, HashMap::new(), home));
    }

    fn finish(&mut self, i: usize, goal: Goal, out: Result<Outcome, vinfra_vmfs::Error>) {
        let seed = self.seed;
        let id = self.hosts[i].id;
        if std::env::var("SIM_TRACE").is_ok() {
            let r = match &out {
                Ok(Outcome::Written) => "written".to_string(),
                Ok(Outcome::Mismatch(c)) => format!("mismatch {:?}", holder_of(c)),
                Err(e) => format!("{e}"),
            };
            eprintln!(
                "t={} host {id} gen {} {goal:?} from {:?}: {r}",
                self.now,
                self.hosts[i].gen,
                holder_of(&self.hosts[i].expected)
            );
        }
        match (goal, out) {
            (Goal::Acquire, Ok(Outcome::Written)) => {
                let others = self.holders();
                if !others.is_empty() {
                    let all: HashMap<usize, Vec<u8>> = (0..self.disk.len())
                        .map(|s| (s, self.disk[s].clone()))
                        .collect();
                    for (h, x) in self.sectors(&all).iter().enumerate() {
                        let p = x.proposal.as_ref().map(|p| {
                            (
                                p.instance,
                                p.mbal,
                                p.bal,
                                p.inp.owner,
                                p.inp.nonce,
                                holder_of(&p.inp.bytes),
                            )
                        });
                        let l = x.learned.as_ref().map(|l| {
                            (
                                l.instance,
                                l.value.owner,
                                l.value.nonce,
                                holder_of(&l.value.bytes),
                            )
                        });
                        eprintln!(
                            "host {h}: proposal {p:?} learned {l:?} decisions {:?}",
                            x.decisions.iter().rev().take(4).collect::<Vec<_>>()
                        );
                    }
                    let mut d: Vec<_> = self
                        .decided
                        .iter()
                        .map(|(k, v)| (*k, v.0, v.1, holder_of(&v.2)))
                        .collect();
                    d.sort();
                    eprintln!("decided {:?}", &d[d.len().saturating_sub(6)..]);
                    for h in &self.hosts {
                        eprintln!(
                            "host {} alive {} holding {} hold_left {} cas {:?}",
                            h.id,
                            h.alive,
                            h.holding,
                            h.hold_left,
                            h.cas.as_ref().map(|c| (&c.1, c.2.len()))
                        );
                    }
                }
                assert!(
                    others.is_empty(),
                    "seed {seed}: host {id} acquired while {others:?} hold"
                );
                if holder_of(&self.hosts[i].expected).is_some() {
                    self.broken += 1;
                }
                let h = &mut self.hosts[i];
                h.holding = true;
                h.hold_left = 1 + self.rng.below(200);
                self.acquired += 1;
            }
            (Goal::Acquire, Ok(Outcome::Mismatch(cur))) => {
                let h = &mut self.hosts[i];
                h.expected = cur;
                h.sleep_until = self.now + self.rng.below(20);
            }
            (Goal::Release, Ok(Outcome::Written)) => {
                let h = &mut self.hosts[i];
                h.holding = false;
                h.expected = FREE.to_vec();
                h.sleep_until = self.now + self.rng.below(100);
            }
            (Goal::Release, Ok(Outcome::Mismatch(cur))) => {
                panic!(
                    "seed {seed}: live holder {id} robbed: record now {:?}",
                    holder_of(&cur)
                )
            }
            (_, Err(e)) => {
                // The host fences itself, as vmfs does on a device error. "Outcome
                // unknown" must never happen with this few hosts: every decider keeps
                // each owner's newest decided value.
                assert!(
                    !e.to_string().contains("unknown"),
                    "seed {seed}: host {id}: {e}"
                );
                self.errors += 1;
                self.crash(i);
            }
        }
    }

    fn step(&mut self) {
        self.now += 1;
        let i = self.rng.below(self.hosts.len() as u64) as usize;
        if !self.hosts[i].alive {
            if self.now >= self.hosts[i].down_until {
                let h = &mut self.hosts[i];
                h.alive = true;
                h.gen += 1;
                h.expected = FREE.to_vec();
            }
            return;
        }
        if self.now < self.hosts[i].stalled_until {
            return;
        }
        if self.rng.chance(2) {
            // Crash; an in-flight write may have landed or not.
            if let Some((_, _, ios, _, _)) = &mut self.hosts[i].cas {
                if let Some(Io::Write(s, b)) = ios.last() {
                    if self.rng.chance(500) {
                        let (s, b) = (*s, b.clone());
                        self.write(s, b);
                    }
                }
            }
            self.crash(i);
            return;
        }
        if self.now < self.hosts[i].sleep_until {
            return;
        }
        if self.hosts[i].cas.is_none() {
            if self.hosts[i].holding {
                self.hosts[i].hold_left -= 1;
                if self.hosts[i].hold_left > 0 {
                    return;
                }
            }
            self.begin(i);
            return;
        }
        let Some((mut p, goal, mut ios, mut got, home)) = self.hosts[i].cas.take() else {
            return;
        };
        if let Some(io) = ios.pop() {
            match io {
                Io::Read(s) => {
                    got.insert(s, self.disk[s].clone());
                }
                Io::Write(s, b) => {
                    self.write(s, b);
                    if self.rng.chance(5) {
                        // A long stall (descheduled, a slow disk) with a write just
                        // landed, maybe an accepted value: the others go on for many
                        // instances meanwhile, and the stalled host must still learn
                        // whether its value was decided.
                        self.hosts[i].stalled_until =
                            self.now + self.stall_len + self.rng.below(self.stall_len);
                        self.stalls += 1;
                    }
                }
            }
            if !ios.is_empty() {
                self.hosts[i].cas = Some((p, goal, ios, got, home));
                return;
            }
        }
        // The action is complete (its flush included): feed the proposer.
        let id = self.hosts[i].id;
        let next = if got.is_empty() {
            p.on_written()
        } else {
            let sectors = self.sectors(&got);
            let home_bytes = home.then(|| got[&0].clone());
            p.on_read(&sectors, home_bytes.as_deref())
        };
        let next = match next {
            Ok(a) => a,
            Err(e) => return self.finish(i, goal, Err(e)),
        };
        if let Action::WriteLearned(l, _) = &next {
            let d = (l.value.owner, l.value.nonce, l.value.bytes.clone());
            let prev = self.decided.entry(l.instance).or_insert_with(|| d.clone());
            assert_eq!(
                *prev, d,
                "seed {}: instance {} decided twice",
                self.seed, l.instance
            );
        }
        match next {
            Action::Done(out) => {
                self.hosts[i].known = p.known().cloned();
                self.hosts[i].own = p.own_sectors();
                self.finish(i, goal, Ok(out));
            }
            Action::Backoff { ms } => {
                let own = Proposal::decode(&self.disk[sector_of(id, 0)]).unwrap();
                if own.is_some_and(|p| p.mbal == FAST_BALLOT) {
                    self.fast_aborted += 1;
                }
                self.hosts[i].sleep_until = self.now + ms * 3;
                let _ = p.on_written();
                self.hosts[i].cas = Some((p, goal, Vec::new(), HashMap::new(), false));
                // The next step re-reads: Backoff's on_written asked for a read.
                let ios = self.expand(id, &Action::Read { home: false });
                if let Some((_, _, v, _, _)) = &mut self.hosts[i].cas {
                    *v = ios;
                }
            }
            a => {
                let home = matches!(a, Action::Read { home: true });
                let ios = self.expand(id, &a);
                self.hosts[i].cas = Some((p, goal, ios, HashMap::new(), home));
            }
        }
        let holders = self.holders();
        assert!(
            holders.len() <= 1,
            "seed {}: holders {holders:?}",
            self.seed
        );
    }
}

fn run(seed: u64, steps: u64) -> Sim {
    let n = 2 + (seed % 4) as u32;
    let mut sim = Sim::new(seed, n);
    for _ in 0..steps {
        sim.step();
    }
    sim
}

fn seeds() -> Vec<u64> {
    match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => (0..300).collect(),
    }
}

#[test]
fn no_two_hosts_ever_hold_the_lock_and_a_live_owner_is_never_robbed() {
    let (mut acquired, mut broken, mut errors, mut skipped) = (0, 0, 0, 0);
    let (mut fast, mut fast_aborted, mut fast_crashed, mut stalls) = (0, 0, 0, 0);
    let steps = std::env::var("SIM_STEPS").map_or(6_000, |s| s.parse().unwrap());
    let seeds = seeds();
    for &seed in &seeds {
        let sim = run(seed, steps);
        acquired += sim.acquired;
        broken += sim.broken;
        errors += sim.errors;
        skipped += sim.skipped_read;
        fast += sim.fast;
        fast_aborted += sim.fast_aborted;
        fast_crashed += sim.fast_crashed;
        stalls += sim.stalls;
    }
    eprintln!(
        "acquired {acquired}, broken {broken}, errors {errors}, long stalls {stalls}, \
         compare-and-writes without their first read {skipped}, at ballot 1 {fast} \
         ({fast_aborted} aborted, {fast_crashed} crashes after its write)"
    );
    let n = seeds.len() as u64;
    assert!(
        acquired > 3 * n,
        "the lock changed hands {acquired} times in {n} runs"
    );
    assert!(
        n == 1 || broken > n / 30,
        "dead holders' locks broken {broken} times"
    );
    assert!(
        n == 1 || skipped > n,
        "the cached path ran {skipped} times: it is not under test"
    );
    // The reserved ballot under contention and crashes, not only alone.
    assert!(
        n == 1 || (fast > n && fast_aborted > 0 && fast_crashed > 0),
        "ballot 1: {fast} started, {fast_aborted} aborted, {fast_crashed} crashed: not under test"
    );
}

/// The same, longer and with more seeds (`cargo test -- --ignored`).
#[test]
#[ignore]
fn long_simulation() {
    for seed in 1000..4000 {
        run(seed, 40_000);
    }
}

/// One step of a proposer against an area where each action is atomic: a write lands, a
/// read sees every sector at once, a backoff ends at once. `None` when it is done.
fn act(
    p: &mut Proposer,
    host: usize,
    a: Action,
    area: &mut [HostSectors],
) -> Result<Action, Outcome> {
    match a {
        Action::Read { .. } => Ok(p.on_read(area, Some(&FREE)).unwrap()),
        Action::WriteProposal(w) => {
            area[host].proposal = Some(w);
            Ok(p.on_written().unwrap())
        }
        Action::WriteLearned(l, d) => {
            area[host].learned = Some(l);
            area[host].decisions = d;
            Ok(p.on_written().unwrap())
        }
        Action::Backoff { .. } => Ok(p.on_written().unwrap()),
        Action::Done(o) => Err(o),
    }
}

/// The last owner's ballot-1 compare-and-write races another host's normal ballots in
/// every order of their first 12 actions, with and without the owner crashing at each
/// point (its new incarnation, without a cache, then compares the same record to another
/// value): every instance decides one value, ballot 1 carries one value per instance,
/// exactly the winners answer `Written`, and the restart never writes ballot 1 again.
#[test]
fn the_reserved_ballot_racing_a_normal_ballot_in_every_order() {
    let a = held(0, 1);
    let (b, c, z) = (FREE.to_vec(), held(1, 1), held(0, 2));
    let mut fast_won = 0;
    let mut fast_lost = 0;
    for schedule in 0u32..1 << 12 {
        for crash_at in (0..=12).map(|c| (c < 12).then_some(c)) {
            // Instance 1 = `a`, decided by host 0 (owner 1); host 1 learned it too.
            let mut area = vec![HostSectors::default(); 2];
            let mut p0 = Proposer::new(0, &FREE, &a, None);
            let mut x = Some(p0.start());
            while let Some(Ok(n)) = x.take().map(|n| act(&mut p0, 0, n, &mut area)) {
                x = Some(n);
            }
            let known = p0.known().cloned();
            let mut ps = [
                Proposer::new(0, &a, &b, known.clone()).with_own(p0.own_sectors()),
                Proposer::new(1, &a, &c, known).with_own(Some(HostSectors::default())),
            ];
            let mut next: [Option<Action>; 2] = [Some(ps[0].start()), Some(ps[1].start())];
            assert!(matches!(&next[0], Some(Action::WriteProposal(w)) if w.mbal == FAST_BALLOT));
            let mut outs: [Option<Outcome>; 2] = [None, None];
            let mut decided: HashMap<u64, Vec<u8>> = HashMap::new();
            let mut restarted = false;
            for step in 0..400u32 {
                if crash_at == Some(step) && next[0].is_some() {
                    // Host 0 crashes; its new incarnation compares `a` → `z`, no cache.
                    ps[0] = Proposer::new(0, &a, &z, None);
                    next[0] = Some(ps[0].start());
                    restarted = true;
                }
                let turn = if step < 12 {
                    (schedule >> step) as usize & 1
                } else {
                    step as usize % 2
                };
                let h = if next[turn].is_some() { turn } else { 1 - turn };
                let Some(n) = next[h].take() else { break };
                if let Action::WriteLearned(l, _) = &n {
                    let prev = decided
                        .entry(l.instance)
                        .or_insert_with(|| l.value.bytes.clone());
                    assert_eq!(
                        *prev, l.value.bytes,
                        "schedule {schedule:b} crash {crash_at:?}"
                    );
                }
                if let Action::WriteProposal(w) = &n {
                    if w.bal == FAST_BALLOT {
                        assert_eq!(
                            (h, w.instance, &w.inp.bytes),
                            (0, 2, &b),
                            "schedule {schedule:b}"
                        );
                    }
                    assert!(!(restarted && h == 0 && w.mbal == FAST_BALLOT));
                }
                match act(&mut ps[h], h, n, &mut area) {
                    Ok(n) => next[h] = Some(n),
                    Err(o) => outs[h] = Some(o),
                }
            }
            let [o0, o1] = outs;
            let o1 = o1.unwrap();
            let written = |o: &Option<Outcome>| matches!(o, Some(Outcome::Written));
            // The record's history: a, then one winner, then maybe a second one built on it.
            let second = &decided[&2];
            if o1 == Outcome::Written {
                assert!(second == &c || decided.get(&3) == Some(&c));
            }
            if written(&o0) {
                assert!(!restarted || second == &z || decided.get(&3) == Some(&z));
            }
            // One winner; none when the crashed incarnation's ballot-1 value was decided
            // (both then compare `a` against it).
            let winners = usize::from(written(&o0)) + usize::from(o1 == Outcome::Written);
            let orphan = restarted && second == &b;
            assert_eq!(
                winners,
                usize::from(!orphan),
                "schedule {schedule:b} crash {crash_at:?}"
            );
            if !restarted {
                if second == &b {
                    fast_won += 1;
                } else {
                    fast_lost += 1;
                }
            }
        }
    }
    assert!(
        fast_won > 0 && fast_lost > 0,
        "won {fast_won}, lost {fast_lost}"
    );
}
