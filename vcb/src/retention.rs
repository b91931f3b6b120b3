//! Retention: which backups of each VM to keep (last N, and the newest of each of the
//! last N days, weeks and months), the rest to forget. Pure: times come from the
//! manifests, in UTC.

use std::collections::{BTreeMap, HashSet};

use crate::codec::Id;
use crate::error::{Error, Result};
use crate::repo::{Repository, Snapshot};
use crate::schedule::civil;

/// A retention policy, applied to each VM's backups separately.
///
/// ```
/// use vinfra_vcb::Retention;
/// let p = Retention::default().last(2).daily(7).weekly(4).monthly(12);
/// assert_eq!(p.daily, 7);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// The newest N backups.
    pub last: u32,
    /// The newest backup of each of the newest N days that have one.
    pub daily: u32,
    /// The same per week (Monday to Sunday).
    pub weekly: u32,
    /// The same per calendar month.
    pub monthly: u32,
}

impl Retention {
    /// Keep the newest `n`.
    pub fn last(mut self, n: u32) -> Self {
        self.last = n;
        self
    }
    /// Keep one a day for `n` days.
    pub fn daily(mut self, n: u32) -> Self {
        self.daily = n;
        self
    }
    /// Keep one a week for `n` weeks.
    pub fn weekly(mut self, n: u32) -> Self {
        self.weekly = n;
        self
    }
    /// Keep one a month for `n` months.
    pub fn monthly(mut self, n: u32) -> Self {
        self.monthly = n;
        self
    }

    fn is_empty(&self) -> bool {
        *self == Retention::default()
    }
}

/// What a policy keeps and forgets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionPlan {
    /// Backups kept.
    pub keep: Vec<Id>,
    /// Backups to forget.
    pub forget: Vec<Id>,
}

/// A calendar bucket of a time.
type Bucket = fn(u64) -> i64;

fn day(t: u64) -> i64 {
    (t / 86_400) as i64
}

/// Weeks start on Monday; 1970-01-01 was a Thursday.
fn week(t: u64) -> i64 {
    (day(t) + 3).div_euclid(7)
}

/// Months since year 0 (the civil calendar, UTC).
fn month(t: u64) -> i64 {
    let (y, m, _) = civil(day(t));
    y * 12 + i64::from(m) - 1
}

/// Applies `policy` to `snapshots` (any VMs, any order).
pub fn plan(snapshots: &[Snapshot], policy: &Retention) -> RetentionPlan {
    let mut by_vm: BTreeMap<&str, Vec<&Snapshot>> = BTreeMap::new();
    for s in snapshots {
        by_vm.entry(&s.manifest.vm).or_default().push(s);
    }
    let mut out = RetentionPlan::default();
    for list in by_vm.values_mut() {
        // Newest first.
        list.sort_by_key(|s| std::cmp::Reverse((s.manifest.time_unix_s, s.id)));
        let mut keep: HashSet<Id> = list
            .iter()
            .take(policy.last as usize)
            .map(|s| s.id)
            .collect();
        let buckets: [(u32, Bucket); 3] = [
            (policy.daily, day),
            (policy.weekly, week),
            (policy.monthly, month),
        ];
        for (n, bucket) in buckets {
            let mut seen = HashSet::new();
            for s in list.iter() {
                if seen.len() >= n as usize {
                    break;
                }
                if seen.insert(bucket(s.manifest.time_unix_s)) {
                    keep.insert(s.id);
                }
            }
        }
        for s in list.iter() {
            if keep.contains(&s.id) {
                out.keep.push(s.id);
            } else {
                out.forget.push(s.id);
            }
        }
    }
    out
}

impl Repository {
    /// Forgets every backup `policy` does not keep (per VM), under the exclusive lock;
    /// their data goes at the next prune. An empty policy is refused (it would forget
    /// everything). Fails, forgetting nothing, while a manifest is damaged.
    pub fn forget_by_policy(&self, policy: &Retention) -> Result<RetentionPlan> {
        if policy.is_empty() {
            return Err(Error::Invalid(
                "an empty retention policy would forget every backup".into(),
            ));
        }
        let _lock = self.lock(true)?;
        let scan = self.scan_snapshots()?;
        if let Some((_, e)) = scan.damaged.into_iter().next() {
            return Err(e);
        }
        let p = plan(&scan.good, policy);
        for id in &p.forget {
            self.remove(&format!("snapshots/{}", id.to_hex()))?;
        }
        tracing::info!(
            kept = p.keep.len(),
            forgotten = p.forget.len(),
            "retention applied"
        );
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    fn snap(vm: &str, t: u64, n: u8) -> Snapshot {
        Snapshot {
            id: Id([n; 32]),
            manifest: Manifest {
                time_unix_s: t,
                vm: vm.into(),
                host: String::new(),
                parent: None,
                config: Vec::new(),
                disks: Vec::new(),
            },
        }
    }

    #[test]
    fn calendar_buckets() {
        assert_eq!(week(0), week(3 * 86_400)); // Thu 1970-01-01 .. Sun 01-04
        assert_ne!(week(3 * 86_400), week(4 * 86_400)); // Monday starts a week
        assert_eq!(month(0), 1970 * 12);
        assert_eq!(month(31 * 86_400 - 1), 1970 * 12);
        assert_eq!(month(31 * 86_400), 1970 * 12 + 1);
        // 2024-02-29 23:59:59 and 2024-03-01 00:00:00 UTC.
        assert_eq!(month(1_709_251_199), 2024 * 12 + 1);
        assert_eq!(month(1_709_251_200), 2024 * 12 + 2);
    }

    #[test]
    fn keeps_the_newest_of_each_bucket_per_vm() {
        let h = 3_600;
        let d = 86_400;
        // vm a: four backups on day 10 (hourly), one on days 11, 12, 40, 80.
        let mut s: Vec<Snapshot> = (0..4).map(|i| snap("a", 10 * d + i * h, i as u8)).collect();
        s.push(snap("a", 11 * d, 10));
        s.push(snap("a", 12 * d, 11));
        s.push(snap("a", 40 * d, 12));
        s.push(snap("a", 80 * d, 13));
        s.push(snap("b", 10 * d, 20));
        let p = plan(&s, &Retention::default().last(1).daily(3));
        let mut keep = p.keep.clone();
        keep.sort();
        // last: 13; days: 80 (13), 40 (12), 12 (11); vm b: its only one.
        assert_eq!(
            keep,
            vec![Id([11; 32]), Id([12; 32]), Id([13; 32]), Id([20; 32])]
        );
        assert_eq!(p.forget.len(), 5);
        let p = plan(&s, &Retention::default().daily(10));
        assert!(p.keep.contains(&Id([3; 32])), "the newest of day 10");
        assert!(!p.keep.contains(&Id([2; 32])));
        let p = plan(&s, &Retention::default().monthly(2));
        // Months: day 80 (March), day 40 (February).
        assert_eq!(p.keep.len(), 3);
    }
}
