//! Per-host normalized load and the imbalance metric, updated in O(1) per move.

use crate::validate::{Cluster, CPU, MEM};

/// VMware's scale of the imbalance (KB 1007485): a recommendation's priority is
/// `6 − ceil(imbalance / IMBALANCE_STEP × sqrt(hosts))`.
pub const IMBALANCE_STEP: f64 = 0.1;

/// Priority (2..=5) of a balancing recommendation made while the cluster's imbalance is
/// `imbalance` over `hosts` hosts, as VMware publishes it (KB 1007485):
/// `6 − ceil(imbalance / 0.1 × sqrt(hosts))`, clamped to 2..=5. The more hosts, the
/// smaller the imbalance that earns a given priority: a standard deviation over many
/// hosts is a stronger sign of skew than over a few.
///
/// ```
/// use vinfra_drs::priority_for_imbalance;
/// assert_eq!(priority_for_imbalance(0.05, 4), 5); // 0.05 / 0.1 × 2 = 1.0 → 6 − 1
/// assert_eq!(priority_for_imbalance(0.05, 16), 4); // × 4 = 2.0 → 6 − 2
/// assert_eq!(priority_for_imbalance(0.9, 16), 2); // clamped
/// ```
pub fn priority_for_imbalance(imbalance: f64, hosts: usize) -> u8 {
    let scaled = imbalance / IMBALANCE_STEP * (hosts.max(1) as f64).sqrt();
    // ceil of a finite, non-negative value; clamped to 1..=4 before the cast.
    let steps = scaled.ceil().clamp(1.0, 4.0);
    #[allow(clippy::cast_possible_truncation)] // steps is an integer in 1..=4
    let steps = steps as u8;
    6 - steps
}

/// The imbalance a migration threshold balances down to, over `hosts` hosts: threshold
/// `t` applies recommendations of priority ≤ `t`, and [`priority_for_imbalance`] gives
/// priority ≤ `t` exactly while the imbalance is above `(5 − t) × 0.1 / sqrt(hosts)`.
/// Threshold 1 applies only mandatory moves (infinite target); threshold 5 applies
/// every improving move (target 0).
///
/// ```
/// use vinfra_drs::target_for_threshold;
/// assert!((target_for_threshold(3, 4) - 0.10).abs() < 1e-12); // 0.2 / sqrt(4)
/// assert!((target_for_threshold(3, 64) - 0.025).abs() < 1e-12); // 0.2 / sqrt(64)
/// assert_eq!(target_for_threshold(5, 64), 0.0);
/// assert!(target_for_threshold(1, 64).is_infinite());
/// ```
pub fn target_for_threshold(threshold: u8, hosts: usize) -> f64 {
    match threshold {
        0 | 1 => f64::INFINITY,
        t => f64::from(5u8.saturating_sub(t)) * IMBALANCE_STEP / (hosts.max(1) as f64).sqrt(),
    }
}

/// Σ weights per host over capacity, with the running sums of n and n².
#[derive(Debug, Clone)]
pub(crate) struct Loads {
    usable: Vec<bool>,
    inv_cap: Vec<[f64; 2]>,
    pub load: Vec<[f64; 2]>,
    count: f64,
    s1: [f64; 2],
    s2: [f64; 2],
}

impl Loads {
    /// Loads from a per-VM weight on the given assignment.
    pub fn new(c: &Cluster, host_of: &[Option<usize>], weight: impl Fn(usize) -> [u64; 2]) -> Self {
        let usable: Vec<bool> = c.hosts.iter().map(|h| h.usable()).collect();
        let inv_cap = c
            .hosts
            .iter()
            .map(|h| [1.0 / h.capacity[CPU] as f64, 1.0 / h.capacity[MEM] as f64])
            .collect();
        let mut load = vec![[0.0; 2]; c.hosts.len()];
        for (v, h) in host_of.iter().enumerate() {
            if let Some(h) = *h {
                let w = weight(v);
                load[h][CPU] += w[CPU] as f64;
                load[h][MEM] += w[MEM] as f64;
            }
        }
        let count = usable.iter().filter(|&&u| u).count() as f64;
        let mut l = Self {
            usable,
            inv_cap,
            load,
            count,
            s1: [0.0; 2],
            s2: [0.0; 2],
        };
        l.resum();
        l
    }

    /// Recompute the sums from scratch (keeps float drift away after many moves).
    pub fn resum(&mut self) {
        self.s1 = [0.0; 2];
        self.s2 = [0.0; 2];
        for h in 0..self.load.len() {
            if self.usable[h] {
                for r in [CPU, MEM] {
                    let n = self.norm(h, r);
                    self.s1[r] += n;
                    self.s2[r] += n * n;
                }
            }
        }
    }

    /// Normalized load of host `h` in resource `r`.
    pub fn norm(&self, h: usize, r: usize) -> f64 {
        self.load[h][r] * self.inv_cap[h][r]
    }

    /// Sum of both normalized loads (used to rank hosts).
    pub fn rank(&self, h: usize) -> f64 {
        self.norm(h, CPU) + self.norm(h, MEM)
    }

    pub fn usable(&self, h: usize) -> bool {
        self.usable[h]
    }

    fn metric(&self, s1: [f64; 2], s2: [f64; 2]) -> f64 {
        if self.count < 1.0 {
            return 0.0;
        }
        let mut v = 0.0;
        for r in [CPU, MEM] {
            let m = s1[r] / self.count;
            v += (s2[r] / self.count - m * m).max(0.0);
        }
        (v / 2.0).sqrt()
    }

    /// Current imbalance.
    pub fn imbalance(&self) -> f64 {
        self.metric(self.s1, self.s2)
    }

    /// Mean normalized load per resource.
    pub fn mean(&self, r: usize) -> f64 {
        if self.count < 1.0 {
            0.0
        } else {
            self.s1[r] / self.count
        }
    }

    fn delta(&self, s1: &mut [f64; 2], s2: &mut [f64; 2], h: usize, w: [f64; 2], sign: f64) {
        if !self.usable[h] {
            return;
        }
        for r in [CPU, MEM] {
            let old = self.norm(h, r);
            let new = old + sign * w[r] * self.inv_cap[h][r];
            s1[r] += new - old;
            s2[r] += new * new - old * old;
        }
    }

    /// Imbalance if weight `w` left `from` and arrived on `to`, in O(1).
    pub fn after(&self, w: [u64; 2], from: Option<usize>, to: Option<usize>) -> f64 {
        let w = [w[CPU] as f64, w[MEM] as f64];
        let (mut s1, mut s2) = (self.s1, self.s2);
        if let (Some(a), Some(b)) = (from, to) {
            if a == b {
                return self.metric(s1, s2);
            }
        }
        if let Some(a) = from {
            self.delta(&mut s1, &mut s2, a, w, -1.0);
        }
        if let Some(b) = to {
            self.delta(&mut s1, &mut s2, b, w, 1.0);
        }
        self.metric(s1, s2)
    }

    /// Apply a move.
    pub fn apply(&mut self, w: [u64; 2], from: Option<usize>, to: Option<usize>) {
        if from.is_some() && from == to {
            return;
        }
        let wf = [w[CPU] as f64, w[MEM] as f64];
        let (mut s1, mut s2) = (self.s1, self.s2);
        if let Some(a) = from {
            self.delta(&mut s1, &mut s2, a, wf, -1.0);
            self.load[a][CPU] -= wf[CPU];
            self.load[a][MEM] -= wf[MEM];
        }
        if let Some(b) = to {
            self.delta(&mut s1, &mut s2, b, wf, 1.0);
            self.load[b][CPU] += wf[CPU];
            self.load[b][MEM] += wf[MEM];
        }
        self.s1 = s1;
        self.s2 = s2;
    }
}
