//! One compare-and-write as Disk Paxos rounds, sans IO.
//!
//! A covered sector's history is a sequence of *instances*; instance `k` decides the
//! sector's `k`-th value by single-disk Disk Paxos (Gafni and Lamport, with the disk
//! holding one proposal sector per host). [`Proposer`] runs one compare-and-write: it
//! learns the newest decided instance, and if the value matches `expected`, proposes
//! `new` for the next instance. It never touches a device: it asks for reads of the
//! area and writes of its own sectors ([`Action`]) and is fed the results, so the
//! simulation in `tests/paxos_sim.rs` can interleave hosts sector by sector.

use super::block::{Decision, Learned, Proposal, Value};
use crate::error::{Error, Result};

/// Ballots are `round × BALLOT_STRIDE + host + 1`: unique per host, never 0.
pub const BALLOT_STRIDE: u64 = 64;
/// Ballots one compare-and-write may start before it gives up (contention).
pub const MAX_ATTEMPTS: u32 = 256;
/// The reserved first ballot of an instance: below every normal ballot (which are at
/// least `BALLOT_STRIDE + 1`), and used in instance `k + 1` only by the owner of the value
/// decided in instance `k`, once, with one value. No lower ballot exists, so it needs no
/// phase 1 (Fast Paxos's first round; a Multi-Paxos leader's next slot): see
/// [`Proposer::with_own`] and the crate README ("Why two hosts never hold an exclusive
/// lock at once").
pub const FAST_BALLOT: u64 = 1;
// Normal ballots never collide with the reserved one.
const _: () = assert!(FAST_BALLOT > 0 && FAST_BALLOT < BALLOT_STRIDE + 1);

/// What one host's sectors of an area hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSectors {
    /// Its proposal sector.
    pub proposal: Option<Proposal>,
    /// Its learned sector.
    pub learned: Option<Learned>,
    /// Its decisions sector (newest last).
    pub decisions: Vec<Decision>,
}

/// What the proposer wants done next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read every host's sectors of the area (and the home sector when `home`), then
    /// call [`Proposer::on_read`].
    Read {
        /// Whether the home sector is needed (only while no instance is decided).
        home: bool,
    },
    /// Write this host's proposal sector and flush, then call [`Proposer::on_written`].
    WriteProposal(Proposal),
    /// Write this host's learned and decisions sectors and the home sector (the decided
    /// bytes), flush, then call [`Proposer::on_written`].
    WriteLearned(Learned, Vec<Decision>),
    /// Wait about this long (another host's ballot won), then call [`Proposer::on_written`].
    Backoff {
        /// Suggested wait.
        ms: u64,
    },
    /// Finished.
    Done(Outcome),
}

/// How a compare-and-write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `new` is the sector's value now.
    Written,
    /// The value did not match; it is returned.
    Mismatch(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Learn,
    One,
    Two,
    Decided,
    /// Recording the decision of this host's learned sector, which a crash kept out of
    /// its decisions sector.
    Repair,
    Waiting,
    Done,
}

/// One compare-and-write by `host` (see the module documentation).
#[derive(Debug)]
pub struct Proposer {
    host: u32,
    expected: Vec<u8>,
    mine: Value,
    /// The newest decided (instance, value) known: from the caller's cache or learned.
    known: Option<(u64, Value)>,
    phase: Phase,
    instance: u64,
    ballot: u64,
    /// This host's proposal sector as last written.
    own: Option<Proposal>,
    /// The value chosen for the instance in phase 2.
    chosen: Option<Value>,
    attempts: u32,
    nonce_set: bool,
    /// This host's decisions sector as last read or written.
    decisions: Vec<Decision>,
    /// Whether the value this instance builds on matched `expected`.
    may_propose: bool,
    /// This host's learned sector as last read or written.
    own_learned: Option<Learned>,
    /// This host's sectors as its previous compare-and-write of the sector left them (the
    /// caller's cache, see [`Proposer::with_own`]).
    cached_own: Option<HostSectors>,
}

/// The smallest ballot of `host` above `seen`.
pub fn next_ballot(host: u32, seen: u64) -> u64 {
    let round = seen / BALLOT_STRIDE + 1;
    round * BALLOT_STRIDE + host as u64 + 1
}

/// Phase 1's rule: among proposals for `instance` with an accepted value, the one of the
/// highest ballot; `None` when none is accepted (the proposer may then use its own).
pub fn choose(instance: u64, sectors: &[HostSectors]) -> Option<&Value> {
    sectors
        .iter()
        .filter_map(|s| s.proposal.as_ref())
        .filter(|p| p.instance == instance && p.bal > 0)
        .max_by_key(|p| p.bal)
        .map(|p| &p.inp)
}

/// The highest `mbal` any host started for `instance`.
pub fn max_mbal(instance: u64, sectors: &[HostSectors]) -> u64 {
    sectors
        .iter()
        .filter_map(|s| s.proposal.as_ref())
        .filter(|p| p.instance == instance)
        .map(|p| p.mbal)
        .max()
        .unwrap_or(0)
}

/// The newest decided instance any host has learned.
pub fn newest_learned(sectors: &[HostSectors]) -> Option<&Learned> {
    sectors
        .iter()
        .filter_map(|s| s.learned.as_ref())
        .max_by_key(|l| l.instance)
}

/// The owner of the marker entry of a decisions list: no host's (owners are host + 1).
/// Its `instance` is the newest instance whose entry the list dropped for room.
const DROPPED: u32 = 0;

/// Adds `d` to `host`'s decisions list (newest last). A list keeps one entry per owner,
/// that owner's newest decided value: a proposer only ever looks for the value of its
/// current compare-and-write, which is its host's newest, so older ones can go, and the
/// window no longer slides by every decision of a busy sector (a host that decided its
/// own values 24 times used to push out the entry another host's outcome hung on). When
/// more owners than fit have entries, the oldest entry of another host goes, and a
/// marker at the front records the newest instance dropped, so that a proposer can tell
/// "not decided" from "no longer known". The host's own newest entry is never dropped:
/// it carries the highest nonce the host used.
pub fn record_decision(host: u32, list: &mut Vec<Decision>, d: Decision) {
    list.retain(|e| e.owner == DROPPED || e.owner != d.owner);
    list.push(d);
    while list.len() > super::block::DECISIONS_MAX {
        let marked = list.first().is_some_and(|e| e.owner == DROPPED);
        let Some(oldest) = list
            .iter()
            .position(|e| e.owner != DROPPED && e.owner != host + 1 && *e != d)
        else {
            break;
        };
        let gone = list.remove(oldest);
        if marked {
            list[0].instance = list[0].instance.max(gone.instance);
        } else {
            list.insert(
                0,
                Decision {
                    instance: gone.instance,
                    owner: DROPPED,
                    nonce: 0,
                },
            );
        }
    }
}

/// Whether a decisions list may have lost the entry of `instance`: its marker says an
/// entry at or after it was dropped, or it is a full list without a marker (written
/// before lists kept one entry per owner: those dropped the oldest whatever it was).
pub fn may_have_dropped(list: &[Decision], instance: u64) -> bool {
    match list.first() {
        Some(m) if m.owner == DROPPED => m.instance >= instance,
        _ => list.len() >= super::block::DECISIONS_MAX,
    }
}

impl Proposer {
    /// A compare-and-write of `expected` → `new` by `host`; `known` is the newest decided
    /// instance this host remembers (a hint: the area is read anyway).
    pub fn new(host: u32, expected: &[u8], new: &[u8], known: Option<(u64, Value)>) -> Self {
        Proposer {
            host,
            expected: expected.to_vec(),
            mine: Value {
                owner: host + 1,
                nonce: 0,
                bytes: new.to_vec(),
            },
            known,
            phase: Phase::Learn,
            instance: 0,
            ballot: 0,
            own: None,
            chosen: None,
            attempts: 0,
            nonce_set: false,
            decisions: Vec::new(),
            may_propose: false,
            own_learned: None,
            cached_own: None,
        }
    }

    /// This host's own sectors of the area as its previous compare-and-write of the same
    /// sector left them ([`Proposer::own_sectors`] at its end; `None` after an error or a
    /// restart: only this host writes them, so they are what the area holds). With them,
    /// and a cached decided value equal to `expected`, [`Proposer::start`] skips the first
    /// area read and goes straight to phase 1 of the next instance: the phase-1 read that
    /// follows sees whatever the cache missed (a later instance learned, a value accepted
    /// for this one, a higher ballot) and falls back to the full path.
    ///
    /// When the cached decided value is moreover this host's own (its `owner`), this host
    /// alone may use [`FAST_BALLOT`] in the next instance, and [`Proposer::start`] goes
    /// straight to phase 2 with it: one proposal write and one area read instead of two
    /// of each. The cache is only what this host's last compare-and-write left, and it
    /// requires this host's proposal to be for no later instance, so the reserved ballot
    /// is used at most once per instance: after that write (or a restart, or an error) the
    /// proposal sector shows the instance and the normal path runs.
    pub fn with_own(mut self, own: Option<HostSectors>) -> Self {
        self.cached_own = own;
        self
    }

    /// This host's sectors of the area once this compare-and-write is done (every write it
    /// asked for completed): what the caller passes to the next one's
    /// [`Proposer::with_own`].
    pub fn own_sectors(&self) -> Option<HostSectors> {
        (self.phase == Phase::Done && self.nonce_set).then(|| HostSectors {
            proposal: self.own.clone(),
            learned: self.own_learned.clone(),
            decisions: self.decisions.clone(),
        })
    }

    /// The first action.
    pub fn start(&mut self) -> Action {
        self.phase = Phase::Learn;
        if let (Some(own), Some((k, v))) = (self.cached_own.take(), self.known.clone()) {
            // Only from a decided value that matches (a stale cache must never answer a
            // mismatch) and with no proposal of ours for a later instance to carry over.
            let settled = own.proposal.as_ref().is_none_or(|p| p.instance <= k);
            if v.bytes == self.expected && settled {
                self.take_own(&own);
                self.may_propose = true;
                if v.owner == self.host + 1 {
                    return self.fast_phase_two(k + 1);
                }
                return self.phase_one(k + 1, &[]);
            }
        }
        Action::Read { home: false }
    }

    /// Takes this host's own sectors (read, or cached) as the base of its writes, and a
    /// nonce above any it ever used, so that a value of an earlier compare-and-write (or
    /// incarnation) is never taken for this one's.
    fn take_own(&mut self, own: &HostSectors) {
        let used = [
            own.proposal.as_ref().map(|p| p.inp.clone()),
            own.learned.as_ref().map(|l| l.value.clone()),
        ];
        let from_decisions = own
            .decisions
            .iter()
            .filter(|d| d.owner == self.host + 1)
            .map(|d| d.nonce);
        let top = used
            .iter()
            .flatten()
            .filter(|v| v.owner == self.host + 1)
            .map(|v| v.nonce)
            .chain(from_decisions)
            .max()
            .unwrap_or(0);
        self.mine.nonce = top + 1;
        self.nonce_set = true;
        self.own = own.proposal.clone();
        self.own_learned = own.learned.clone();
        self.decisions = own.decisions.clone();
    }

    /// The write that records this host's learned decision in its decisions sector when
    /// they disagree: the learned and decisions sectors are written together, and a crash
    /// can land the first without the second. The learned sector is rewritten as it is,
    /// so that the decision is durable in the decisions sector before this host's learned
    /// sector can move on (see [`Proposer::decided_mine`]).
    fn unrecorded_learned(&mut self) -> Option<Action> {
        let l = self.own_learned.clone()?;
        let recorded = self
            .decisions
            .iter()
            .any(|d| d.owner == l.value.owner && d.instance >= l.instance);
        if recorded {
            return None;
        }
        record_decision(
            self.host,
            &mut self.decisions,
            Decision {
                instance: l.instance,
                owner: l.value.owner,
                nonce: l.value.nonce,
            },
        );
        Some(Action::WriteLearned(l, self.decisions.clone()))
    }

    /// The newest decided instance and value this proposer knows (for the caller's cache).
    pub fn known(&self) -> Option<&(u64, Value)> {
        self.known.as_ref()
    }

    fn learn(&mut self, sectors: &[HostSectors]) {
        if let Some(l) = newest_learned(sectors) {
            if self.known.as_ref().is_none_or(|(k, _)| l.instance > *k) {
                self.known = Some((l.instance, l.value.clone()));
            }
        }
    }

    fn fail(&mut self, what: impl Into<String>) -> Error {
        self.phase = Phase::Done;
        Error::corrupt("paxos area", what)
    }

    /// Feeds the area just read (`sectors[h]` for each host `h`; `home`: the home
    /// sector's bytes when asked for).
    pub fn on_read(&mut self, sectors: &[HostSectors], home: Option<&[u8]>) -> Result<Action> {
        let own = sectors.get(self.host as usize).cloned().unwrap_or_default();
        if !self.nonce_set {
            self.take_own(&own);
            if let Some(fix) = self.unrecorded_learned() {
                self.phase = Phase::Repair;
                return Ok(fix);
            }
        }
        let before = self.known.as_ref().map(|(k, _)| *k);
        self.learn(sectors);
        match self.phase {
            Phase::Learn => self.after_learn(sectors, home),
            Phase::One | Phase::Two => {
                // Someone finished this instance (or a later one) meanwhile: start over
                // from what is decided, which may be this proposer's own value.
                let moved = self.known.as_ref().map(|(k, _)| *k) != before
                    && self
                        .known
                        .as_ref()
                        .is_some_and(|(k, _)| *k >= self.instance);
                if moved {
                    self.phase = Phase::Learn;
                    return self.after_learn(sectors, None);
                }
                let later = sectors
                    .iter()
                    .filter_map(|s| s.proposal.as_ref())
                    .any(|p| p.instance > self.instance);
                if later {
                    // Its learned sector was read before it was written: read again.
                    return Ok(self.abort());
                }
                if max_mbal(self.instance, sectors) > self.ballot {
                    return Ok(self.abort());
                }
                if self.phase == Phase::One {
                    let v = match choose(self.instance, sectors) {
                        Some(v) => v.clone(),
                        None if self.may_propose => self.mine.clone(),
                        // The accepted value seen at Learn is gone, so the instance moved
                        // on under us: never propose `new` from a value that mismatched.
                        None => return Ok(self.abort()),
                    };
                    let p = Proposal {
                        instance: self.instance,
                        mbal: self.ballot,
                        bal: self.ballot,
                        inp: v.clone(),
                    };
                    self.chosen = Some(v);
                    self.own = Some(p.clone());
                    self.phase = Phase::Two;
                    Ok(Action::WriteProposal(p))
                } else {
                    let Some(v) = self.chosen.clone() else {
                        return Err(self.fail("phase 2 without a value"));
                    };
                    self.phase = Phase::Decided;
                    self.known = Some((self.instance, v.clone()));
                    record_decision(
                        self.host,
                        &mut self.decisions,
                        Decision {
                            instance: self.instance,
                            owner: v.owner,
                            nonce: v.nonce,
                        },
                    );
                    let l = Learned {
                        instance: self.instance,
                        value: v,
                    };
                    self.own_learned = Some(l.clone());
                    Ok(Action::WriteLearned(l, self.decisions.clone()))
                }
            }
            _ => Err(self.fail("read answered out of turn")),
        }
    }

    /// Whether this call's value was the one decided in its instance, now that the
    /// sector has moved past it: `None` when the area no longer tells.
    ///
    /// Once a learned sector shows an instance after ours, our instance's decision is
    /// durable in the decisions sector of a host that decided it (written with its
    /// learned sector and flushed before it proposes again), or a learned sector still
    /// shows our instance (its decider crashed before the decisions sector landed; it
    /// records the decision at its next start, before it writes anything else: see
    /// [`Proposer::on_read`]). Decisions lists keep each owner's newest decided value, and
    /// once our instance is decided no value of our host is decided until we act again
    /// (only our proposal for this instance could be adopted), so an entry for our
    /// instance stays, and its absence from every list means our value was not decided,
    /// unless a list dropped entries for room at or after our instance.
    fn decided_mine(&self, sectors: &[HostSectors]) -> Option<bool> {
        let mine = |owner: u32, nonce: u64| owner == self.mine.owner && nonce == self.mine.nonce;
        let at_ours = sectors
            .iter()
            .filter_map(|s| s.learned.as_ref())
            .find(|l| l.instance == self.instance);
        if let Some(l) = at_ours {
            return Some(mine(l.value.owner, l.value.nonce));
        }
        // Matched by instance too: a host's nonces can repeat across its compare-and-
        // writes (its own sectors need not show the highest it used), never within one
        // instance.
        let listed = sectors
            .iter()
            .flat_map(|s| s.decisions.iter())
            .find(|d| d.owner != DROPPED && d.instance == self.instance);
        if let Some(d) = listed {
            return Some(mine(d.owner, d.nonce));
        }
        let lost = sectors
            .iter()
            .any(|s| may_have_dropped(&s.decisions, self.instance));
        (!lost).then_some(false)
    }

    fn proposed_accepted(&self) -> bool {
        self.own.as_ref().is_some_and(|p| {
            p.instance == self.instance && p.bal > 0 && p.inp.nonce == self.mine.nonce
        })
    }

    fn abort(&mut self) -> Action {
        self.attempts += 1;
        self.phase = Phase::Waiting;
        // Spread retries by host and attempt so that two proposers stop colliding.
        let ms = 1
            + (self.host as u64 * 7 + self.attempts as u64 * 13)
                % (4 * self.attempts as u64).min(64);
        Action::Backoff { ms }
    }

    fn after_learn(&mut self, sectors: &[HostSectors], home: Option<&[u8]>) -> Result<Action> {
        let (base, current) = match &self.known {
            Some((k, v)) => (*k, v.bytes.clone()),
            None => match home {
                Some(h) => (0, h.to_vec()),
                None => {
                    self.phase = Phase::Learn;
                    return Ok(Action::Read { home: true });
                }
            },
        };
        // Did an earlier ballot of this very compare-and-write get decided?
        if self.instance > 0 && self.instance <= base {
            if let Some((k, v)) = &self.known {
                if *k == self.instance && v.owner == self.mine.owner && v.nonce == self.mine.nonce {
                    self.phase = Phase::Done;
                    return Ok(Action::Done(Outcome::Written));
                }
            }
            match self.decided_mine(sectors) {
                Some(true) => {
                    self.phase = Phase::Done;
                    return Ok(Action::Done(Outcome::Written));
                }
                None if base > self.instance && self.proposed_accepted() => {
                    // Our value may have been decided in an instance no host remembers.
                    return Err(self.fail(format!(
                        "outcome of instance {} unknown (decided up to {base})",
                        self.instance
                    )));
                }
                // Our instance was decided with another host's value: compare again.
                _ => self.instance = 0,
            }
        }
        let k = base + 1;
        let pending = sectors
            .iter()
            .filter_map(|s| s.proposal.as_ref())
            .any(|p| p.instance > k);
        if pending {
            // A host proposes instance k + 1 only after its learned sector (or another
            // host's) holds k: this read saw the proposal but not that learned sector.
            return Ok(self.abort());
        }
        let accepted = choose(k, sectors).is_some();
        self.may_propose = current == self.expected;
        if !accepted && !self.may_propose {
            self.phase = Phase::Done;
            return Ok(Action::Done(Outcome::Mismatch(current)));
        }
        if self.attempts >= MAX_ATTEMPTS {
            self.phase = Phase::Done;
            return Err(Error::corrupt(
                "paxos area",
                format!("no decision after {MAX_ATTEMPTS} ballots (contention)"),
            ));
        }
        Ok(self.phase_one(k, sectors))
    }

    /// Phase 2 of instance `k` at the reserved [`FAST_BALLOT`], without phase 1: only the
    /// owner of instance `k - 1`'s value gets here, from its cache. Its read is checked
    /// as any phase-2 read (a higher `mbal`, a later proposal or a learned `>= k` aborts
    /// to the normal path, which keeps this accepted value visible and adopts the highest
    /// accepted one).
    fn fast_phase_two(&mut self, k: u64) -> Action {
        self.instance = k;
        self.ballot = FAST_BALLOT;
        let p = Proposal {
            instance: k,
            mbal: FAST_BALLOT,
            bal: FAST_BALLOT,
            inp: self.mine.clone(),
        };
        self.chosen = Some(self.mine.clone());
        self.own = Some(p.clone());
        self.phase = Phase::Two;
        Action::WriteProposal(p)
    }

    /// Phase 1 of instance `k`: a ballot above every one seen for it.
    fn phase_one(&mut self, k: u64, sectors: &[HostSectors]) -> Action {
        self.instance = k;
        let seen = max_mbal(k, sectors).max(self.own.as_ref().map_or(0, |p| {
            if p.instance == k {
                p.mbal
            } else {
                0
            }
        }));
        self.ballot = next_ballot(self.host, seen);
        // Phase 1 raises mbal only: an accepted (bal, inp) of this host stays.
        let p = match &self.own {
            Some(o) if o.instance == k && o.bal > 0 => Proposal {
                mbal: self.ballot,
                ..o.clone()
            },
            _ => Proposal {
                instance: k,
                mbal: self.ballot,
                bal: 0,
                inp: self.mine.clone(),
            },
        };
        self.own = Some(p.clone());
        self.phase = Phase::One;
        Action::WriteProposal(p)
    }

    /// Feeds the completion of a write (or the end of a backoff).
    pub fn on_written(&mut self) -> Result<Action> {
        match self.phase {
            Phase::One | Phase::Two => Ok(Action::Read { home: false }),
            Phase::Waiting | Phase::Repair => {
                self.phase = Phase::Learn;
                Ok(Action::Read { home: false })
            }
            Phase::Decided => {
                let Some((k, v)) = self.known.clone() else {
                    return Err(self.fail("decided without a value"));
                };
                if v.owner == self.mine.owner && v.nonce == self.mine.nonce {
                    self.phase = Phase::Done;
                    return Ok(Action::Done(Outcome::Written));
                }
                // We completed another host's value: the sector moved on; compare again.
                debug_assert_eq!(k, self.instance);
                self.instance = 0;
                self.phase = Phase::Learn;
                Ok(Action::Read { home: false })
            }
            _ => Err(self.fail("write answered out of turn")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn prop(instance: u64, mbal: u64, bal: u64, owner: u32) -> HostSectors {
        HostSectors {
            proposal: Some(Proposal {
                instance,
                mbal,
                bal,
                inp: Value {
                    owner,
                    nonce: 1,
                    bytes: vec![owner as u8; 8],
                },
            }),
            learned: None,
            decisions: Vec::new(),
        }
    }

    proptest! {
        #[test]
        fn a_new_ballot_is_above_what_was_seen_and_its_hosts_own(host in 0u32..64, seen in 0u64..1 << 40) {
            let b = next_ballot(host, seen);
            prop_assert!(b > seen);
            prop_assert_eq!((b - 1) % BALLOT_STRIDE, host as u64);
        }

        #[test]
        fn ballots_of_two_hosts_never_collide(a in 0u32..64, b in 0u32..64, s in 0u64..1 << 30, t in 0u64..1 << 30) {
            prop_assume!(a != b);
            prop_assert_ne!(next_ballot(a, s), next_ballot(b, t));
        }

        #[test]
        fn phase_one_takes_the_highest_accepted_ballot_of_its_instance(
            props in proptest::collection::vec((0u64..3, 0u64..1000, 0u64..1000, 1u32..9), 0..8)
        ) {
            let sectors: Vec<_> = props.iter().map(|&(i, m, b, o)| prop(i, m.max(b), b, o)).collect();
            let want = props.iter().filter(|p| p.0 == 1 && p.2 > 0).map(|p| p.2).max();
            let got = choose(1, &sectors);
            match want {
                None => prop_assert!(got.is_none()),
                Some(bal) => {
                    let g = got.unwrap();
                    prop_assert!(props.iter().any(|p| p.0 == 1 && p.2 == bal && p.3 == g.owner));
                }
            }
        }
    }

    fn decision(instance: u64, owner: u32, nonce: u64) -> Decision {
        Decision {
            instance,
            owner,
            nonce,
        }
    }

    #[test]
    fn a_decisions_list_keeps_each_owners_newest_and_marks_what_it_drops() {
        use crate::paxos::block::DECISIONS_MAX;
        // Three owners taking turns for 300 instances: three entries, the newest of each,
        // nothing dropped (a list used to forget everything 24 decisions back).
        let mut list = Vec::new();
        for k in 1..=300u64 {
            record_decision(0, &mut list, decision(k, 1 + (k % 3) as u32, k));
        }
        assert_eq!(
            list,
            vec![
                decision(298, 2, 298),
                decision(299, 3, 299),
                decision(300, 1, 300)
            ]
        );
        assert!(!may_have_dropped(&list, 1));
        // More owners than fit: the oldest other hosts' entries go, the marker in front
        // holds the newest instance dropped, and the host's own newest entry (its highest
        // nonce) stays.
        let mut list = vec![decision(5, 1, 7)];
        for k in 10..60u64 {
            record_decision(0, &mut list, decision(k, 2 + k as u32, 1));
        }
        assert_eq!(list.len(), DECISIONS_MAX);
        assert_eq!(list[0].owner, DROPPED);
        assert!(list.contains(&decision(5, 1, 7)));
        let kept_from = list[2].instance;
        assert_eq!(list[0].instance, kept_from - 1);
        assert!(may_have_dropped(&list, kept_from - 1));
        assert!(!may_have_dropped(&list, kept_from));
        assert_eq!(list.last(), Some(&decision(59, 61, 1)));
        // A full list of the old kind (no marker) may have dropped anything.
        let old: Vec<_> = (0..DECISIONS_MAX as u64)
            .map(|k| decision(k + 1, 1, k))
            .collect();
        assert!(may_have_dropped(&old, 1_000));
    }

    #[test]
    fn a_learned_decision_missing_from_the_decisions_sector_is_recorded_first() {
        // A crash landed host 1's learned sector (instance 7, host 3's value) but not its
        // decisions sector: before anything else, it writes the decision down.
        let value = Value {
            owner: 3,
            nonce: 9,
            bytes: b"v7".to_vec(),
        };
        let mut sectors = vec![HostSectors::default(); 3];
        sectors[1].learned = Some(Learned {
            instance: 7,
            value: value.clone(),
        });
        sectors[1].decisions = vec![decision(6, 2, 4)];
        let mut p = Proposer::new(1, b"v7", b"new", None);
        assert_eq!(p.start(), Action::Read { home: false });
        let Action::WriteLearned(l, d) = p.on_read(&sectors, None).unwrap() else {
            panic!("the decision is not recorded first")
        };
        assert_eq!((l.instance, &l.value), (7, &value));
        assert_eq!(d, vec![decision(6, 2, 4), decision(7, 3, 9)]);
        sectors[1].decisions = d;
        assert_eq!(p.on_written().unwrap(), Action::Read { home: false });
        let Action::WriteProposal(w) = p.on_read(&sectors, None).unwrap() else {
            panic!()
        };
        assert_eq!(w.instance, 8);
    }

    /// Host 0 accepts its value for instance 5 and stalls; meanwhile host 1, with a
    /// higher ballot, decides its own value in 5 and 40 more instances, leaving
    /// `decisions` as its decisions sector. What host 0 answers when it reads again.
    fn stalled_proposer_wakes_to(decisions: Vec<Decision>) -> Result<Action> {
        let v = |owner, nonce, bytes: &[u8]| Value {
            owner,
            nonce,
            bytes: bytes.to_vec(),
        };
        let mut p = Proposer::new(0, b"v4", b"mine", None);
        let mut sectors = vec![HostSectors::default(); 2];
        sectors[1].learned = Some(Learned {
            instance: 4,
            value: v(2, 1, b"v4"),
        });
        sectors[1].decisions = vec![decision(4, 2, 1)];
        assert_eq!(p.start(), Action::Read { home: false });
        let Action::WriteProposal(w) = p.on_read(&sectors, None)? else {
            panic!("no phase 1")
        };
        sectors[0].proposal = Some(w);
        p.on_written()?;
        let Action::WriteProposal(w) = p.on_read(&sectors, None)? else {
            panic!("no phase 2")
        };
        assert_eq!((w.instance, w.bal > 0), (5, true));
        sectors[0].proposal = Some(w);
        p.on_written()?;
        sectors[1].decisions = decisions;
        sectors[1].learned = Some(Learned {
            instance: 45,
            value: v(2, 145, b"v45"),
        });
        p.on_read(&sectors, None)
    }

    #[test]
    fn a_proposer_whose_instance_moved_far_on_learns_whether_its_value_won() {
        // Host 1's entry for 5 is gone (each owner keeps its newest), nothing was dropped
        // for room: host 0's value was not decided, and it compares again.
        let mut list = vec![decision(4, 2, 1)];
        for k in 5..=45 {
            record_decision(1, &mut list, decision(k, 2, 100 + k));
        }
        assert_eq!(
            stalled_proposer_wakes_to(list.clone()).unwrap(),
            Action::Done(Outcome::Mismatch(b"v45".to_vec()))
        );
        // Had host 1 decided host 0's value in 5 and then its own 40 times, host 0's
        // entry stays (another owner's): written.
        let mut won = vec![decision(5, 1, 1)];
        for k in 6..=45 {
            record_decision(1, &mut won, decision(k, 2, 100 + k));
        }
        assert_eq!(
            stalled_proposer_wakes_to(won).unwrap(),
            Action::Done(Outcome::Written)
        );
        // Had host 1 dropped entries for room up to instance 5, nobody can tell.
        list.insert(0, decision(5, DROPPED, 0));
        let e = stalled_proposer_wakes_to(list).unwrap_err();
        assert!(e.to_string().contains("unknown"), "{e}");
    }

    #[test]
    fn a_lone_proposer_writes_in_two_rounds() {
        let mut p = Proposer::new(2, b"old", b"new", None);
        let mut sectors = vec![HostSectors::default(); 4];
        assert_eq!(p.start(), Action::Read { home: false });
        assert_eq!(
            p.on_read(&sectors, None).unwrap(),
            Action::Read { home: true }
        );
        let Action::WriteProposal(w) = p.on_read(&sectors, Some(b"old")).unwrap() else {
            panic!()
        };
        assert_eq!((w.instance, w.bal), (1, 0));
        sectors[2].proposal = Some(w);
        assert_eq!(p.on_written().unwrap(), Action::Read { home: false });
        let Action::WriteProposal(w) = p.on_read(&sectors, None).unwrap() else {
            panic!()
        };
        assert_eq!(w.bal, w.mbal);
        sectors[2].proposal = Some(w);
        p.on_written().unwrap();
        let Action::WriteLearned(l, _) = p.on_read(&sectors, None).unwrap() else {
            panic!()
        };
        assert_eq!(l.value.bytes, b"new");
        assert_eq!(p.on_written().unwrap(), Action::Done(Outcome::Written));
    }

    #[test]
    fn a_mismatch_writes_nothing() {
        let mut p = Proposer::new(0, b"old", b"new", None);
        p.start();
        let sectors = vec![HostSectors::default(); 2];
        p.on_read(&sectors, None).unwrap();
        assert_eq!(
            p.on_read(&sectors, Some(b"cur")).unwrap(),
            Action::Done(Outcome::Mismatch(b"cur".to_vec()))
        );
    }

    /// Applies `a` (a write of `host`) to `sectors`; returns the proposer's next action.
    fn apply(p: &mut Proposer, host: usize, sectors: &mut [HostSectors], a: Action) -> Action {
        match a {
            Action::WriteProposal(w) => sectors[host].proposal = Some(w),
            Action::WriteLearned(l, d) => {
                sectors[host].learned = Some(l);
                sectors[host].decisions = d;
            }
            Action::Read { .. } => return p.on_read(sectors, Some(b"old")).unwrap(),
            other => return other,
        }
        p.on_written().unwrap()
    }

    /// Runs `p` alone to its end.
    fn alone(mut p: Proposer, host: usize, sectors: &mut [HostSectors]) -> (Proposer, Outcome) {
        let mut a = p.start();
        for _ in 0..32 {
            if let Action::Done(o) = a {
                return (p, o);
            }
            a = apply(&mut p, host, sectors, a);
        }
        panic!("no end")
    }

    #[test]
    fn the_last_owner_writes_at_the_reserved_ballot_in_one_round() {
        let mut sectors = vec![HostSectors::default(); 3];
        let (p, o) = alone(Proposer::new(1, b"old", b"a", None), 1, &mut sectors);
        assert_eq!(o, Outcome::Written);
        let mut q = Proposer::new(1, b"a", b"b", p.known().cloned()).with_own(p.own_sectors());
        let Action::WriteProposal(w) = q.start() else {
            panic!()
        };
        assert_eq!((w.instance, w.mbal, w.bal), (2, FAST_BALLOT, FAST_BALLOT));
        sectors[1].proposal = Some(w);
        assert_eq!(q.on_written().unwrap(), Action::Read { home: false });
        let Action::WriteLearned(l, _) = q.on_read(&sectors, None).unwrap() else {
            panic!()
        };
        assert_eq!((l.instance, l.value.bytes.as_slice()), (2, &b"b"[..]));
        // Another host with the same cache-like knowledge never uses the reserved ballot.
        let mut r =
            Proposer::new(0, b"a", b"c", p.known().cloned()).with_own(Some(sectors[0].clone()));
        let Action::WriteProposal(w) = r.start() else {
            panic!()
        };
        assert!(w.mbal > BALLOT_STRIDE && w.bal == 0, "{w:?}");
    }

    #[test]
    fn the_reserved_ballot_aborts_on_a_higher_one_and_its_value_stays_accepted() {
        let mut sectors = vec![HostSectors::default(); 2];
        let (p, _) = alone(Proposer::new(0, b"old", b"a", None), 0, &mut sectors);
        // Host 1 started phase 1 of instance 2 first.
        sectors[1].proposal = Some(Proposal {
            instance: 2,
            mbal: next_ballot(1, 0),
            bal: 0,
            inp: Value {
                owner: 2,
                nonce: 1,
                bytes: b"c".to_vec(),
            },
        });
        let mut q = Proposer::new(0, b"a", b"b", p.known().cloned()).with_own(p.own_sectors());
        let a = q.start();
        let a = apply(&mut q, 0, &mut sectors, a);
        assert!(
            matches!(q.on_read(&sectors, None).unwrap(), Action::Backoff { .. }),
            "{a:?}"
        );
        // The normal path that follows raises mbal and keeps (bal 1, "b").
        assert_eq!(q.on_written().unwrap(), Action::Read { home: false });
        let Action::WriteProposal(w) = q.on_read(&sectors, None).unwrap() else {
            panic!()
        };
        assert!(w.mbal > next_ballot(1, 0));
        assert_eq!((w.bal, w.inp.bytes.as_slice()), (FAST_BALLOT, &b"b"[..]));
    }

    #[test]
    fn a_restart_after_the_reserved_ballot_adopts_its_value_and_never_reuses_it() {
        let mut sectors = vec![HostSectors::default(); 2];
        let (p, _) = alone(Proposer::new(0, b"old", b"a", None), 0, &mut sectors);
        let mut q = Proposer::new(0, b"a", b"b", p.known().cloned()).with_own(p.own_sectors());
        let a = q.start();
        // The ballot-1 write lands; the host crashes before reading.
        let Action::WriteProposal(w) = a else {
            panic!()
        };
        sectors[0].proposal = Some(w);
        // Its new incarnation, with no cache, tries another value from the same record.
        let mut r = Proposer::new(0, b"a", b"z", None);
        assert_eq!(r.start(), Action::Read { home: false });
        let Action::WriteProposal(w) = r.on_read(&sectors, None).unwrap() else {
            panic!()
        };
        assert!(w.mbal > BALLOT_STRIDE, "{w:?}");
        assert_eq!((w.bal, w.inp.bytes.as_slice()), (FAST_BALLOT, &b"b"[..]));
        sectors[0].proposal = Some(w);
        let mut a = r.on_written().unwrap();
        let mut proposals = Vec::new();
        for _ in 0..32 {
            if let Action::WriteProposal(w) = &a {
                proposals.push(w.clone());
            }
            if matches!(a, Action::Done(_)) {
                break;
            }
            a = apply(&mut r, 0, &mut sectors, a);
        }
        // Instance 2 decides the earlier incarnation's "b"; "z" then mismatches.
        assert_eq!(a, Action::Done(Outcome::Mismatch(b"b".to_vec())));
        assert!(proposals.iter().all(|w| w.mbal != FAST_BALLOT));
        let l = sectors[0].learned.as_ref().unwrap();
        assert_eq!((l.instance, l.value.bytes.as_slice()), (2, &b"b"[..]));
        // And its cache afterwards shows instance 2's value as another incarnation's,
        // (same owner) but its proposal sector is for instance 2: instance 3 may use the
        // reserved ballot once, never instance 2 again.
        let mut t = Proposer::new(0, b"b", b"y", r.known().cloned()).with_own(r.own_sectors());
        let Action::WriteProposal(w) = t.start() else {
            panic!()
        };
        assert_eq!((w.instance, w.mbal), (3, FAST_BALLOT));
    }
}
