//! A mutable assignment of VMs to hosts with the sums and rule counters that make
//! "can this VM go there?" an O(rules of the VM) question.

use std::collections::HashMap;

use serde::Serialize;

use crate::model::CapacityModel;
use crate::validate::{Cluster, CPU, MEM};

/// Why a host cannot take a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reject {
    /// The host is in maintenance mode.
    #[error("host in maintenance mode")]
    Maintenance,
    /// The host is powered off or in standby.
    #[error("host not powered on")]
    PoweredOff,
    /// The VM is already there.
    #[error("vm already on this host")]
    AlreadyThere,
    /// Different CPU compatibility group.
    #[error("cpu compatibility group differs")]
    Incompatible,
    /// A must-run-on / must-not-run-on rule excludes the host.
    #[error("vm-host rule {rule:?} excludes it")]
    VmHostRule {
        /// The rule id.
        rule: String,
    },
    /// Not enough free CPU for the VM's hard need (its reservation, or its footprint
    /// under the footprint capacity model).
    #[error("cpu: need {need} MHz, {free} MHz free")]
    Cpu {
        /// MHz needed.
        need: u64,
        /// MHz free.
        free: u64,
    },
    /// Not enough free memory for the VM's hard need (reservation + overhead, or its
    /// footprint under the footprint capacity model).
    #[error("memory: need {need} MB, {free} MB free")]
    Mem {
        /// MB needed.
        need: u64,
        /// MB free.
        free: u64,
    },
    /// An anti-affinity partner runs there.
    #[error("anti-affinity rule {rule:?}: a partner runs there")]
    AntiAffinity {
        /// The rule id.
        rule: String,
    },
    /// Affinity partners run on another host.
    #[error("affinity rule {}: partners run on {partners_on:?}", .rules.join(","))]
    Affinity {
        /// The rules behind the group.
        rules: Vec<String>,
        /// Where the partners are.
        partners_on: String,
    },
}

/// Assignment plus per-host sums.
#[derive(Debug, Clone)]
pub(crate) struct State<'a> {
    pub c: &'a Cluster,
    pub host_of: Vec<Option<usize>>,
    /// What capacity must cover (the cluster's setting; packing always uses footprints).
    model: CapacityModel,
    /// Σ hard needs of running VMs per host (see [`State::need`]).
    pub used: Vec<[u64; 2]>,
    /// Σ footprints (demand) of running VMs per host: above capacity is contention.
    pub demand: Vec<[u64; 2]>,
    /// (anti rule, host) → members there.
    anti: HashMap<(usize, usize), u32>,
    /// (image, host) → running VMs with that tag there.
    pub images: HashMap<(u32, usize), u32>,
    /// Running VMs per host: the last tie-breaker of a placement, so that VMs that weigh
    /// nothing yet (idle, no reservation) spread instead of all going to the first host.
    pub vms_on: Vec<u32>,
}

impl<'a> State<'a> {
    /// The cluster's current placement (running VMs with a host).
    pub fn current(c: &'a Cluster) -> Self {
        let mut s = Self::empty(c);
        for (v, vm) in c.vms.iter().enumerate() {
            if let (true, Some(h)) = (vm.powered_on, vm.host) {
                s.put(v, h);
            }
        }
        s
    }

    /// Nothing placed.
    pub fn empty(c: &'a Cluster) -> Self {
        Self::empty_with(c, c.settings.capacity_model)
    }

    /// Nothing placed, capacity checked under `model` rather than the cluster's setting.
    pub fn empty_with(c: &'a Cluster, model: CapacityModel) -> Self {
        Self {
            c,
            host_of: vec![None; c.vms.len()],
            model,
            used: vec![[0, 0]; c.hosts.len()],
            demand: vec![[0, 0]; c.hosts.len()],
            anti: HashMap::new(),
            images: HashMap::new(),
            vms_on: vec![0; c.hosts.len()],
        }
    }

    pub fn free(&self, h: usize) -> [u64; 2] {
        let cap = self.c.hosts[h].capacity;
        [
            cap[CPU].saturating_sub(self.used[h][CPU]),
            cap[MEM].saturating_sub(self.used[h][MEM]),
        ]
    }

    /// What `v` takes of its host's capacity: reservations + overhead, or the footprint
    /// under [`CapacityModel::Footprint`].
    pub fn need(&self, v: usize) -> [u64; 2] {
        match self.model {
            CapacityModel::Reservations => self.c.vms[v].reserved(),
            CapacityModel::Footprint => self.c.vms[v].footprint(),
        }
    }

    /// Summed capacity need of `vms` (what they take of a host's capacity).
    pub fn need_of(&self, vms: &[usize]) -> [u64; 2] {
        let mut need = [0u64; 2];
        for &v in vms {
            let f = self.need(v);
            need[CPU] += f[CPU];
            need[MEM] += f[MEM];
        }
        need
    }

    /// Place `v` on `h` (no checks).
    pub fn put(&mut self, v: usize, h: usize) {
        if self.host_of[v].is_some() {
            self.take(v);
        }
        let n = self.need(v);
        self.used[h][CPU] += n[CPU];
        self.used[h][MEM] += n[MEM];
        let vm = &self.c.vms[v];
        let f = vm.footprint();
        self.demand[h][CPU] += f[CPU];
        self.demand[h][MEM] += f[MEM];
        for &r in &vm.anti {
            *self.anti.entry((r, h)).or_insert(0) += 1;
        }
        if let Some(i) = vm.image {
            *self.images.entry((i, h)).or_insert(0) += 1;
        }
        self.host_of[v] = Some(h);
        self.vms_on[h] += 1;
    }

    /// Remove `v` from its host.
    pub fn take(&mut self, v: usize) {
        let Some(h) = self.host_of[v].take() else {
            return;
        };
        self.vms_on[h] -= 1;
        let n = self.need(v);
        self.used[h][CPU] -= n[CPU];
        self.used[h][MEM] -= n[MEM];
        let vm = &self.c.vms[v];
        let f = vm.footprint();
        self.demand[h][CPU] -= f[CPU];
        self.demand[h][MEM] -= f[MEM];
        for &r in &vm.anti {
            if let Some(n) = self.anti.get_mut(&(r, h)) {
                *n -= 1;
            }
        }
        if let Some(i) = vm.image {
            if let Some(n) = self.images.get_mut(&(i, h)) {
                *n -= 1;
            }
        }
    }

    /// Host-level reasons, independent of capacity and partners.
    pub fn static_reject(&self, v: usize, h: usize) -> Option<Reject> {
        let host = &self.c.hosts[h];
        if host.maintenance {
            return Some(Reject::Maintenance);
        }
        if !host.usable() {
            return Some(Reject::PoweredOff);
        }
        let vm = &self.c.vms[v];
        if !vm.allows(h) {
            for &r in &vm.host_rules {
                let rule = &self.c.host_rules[r];
                if rule.forbids(h) {
                    return Some(Reject::VmHostRule {
                        rule: rule.id.clone(),
                    });
                }
            }
            // The affinity group's union of rules may exclude it through a partner.
            for &p in &self.c.groups[vm.group].vms {
                for &r in &self.c.vms[p].host_rules {
                    let rule = &self.c.host_rules[r];
                    if rule.forbids(h) {
                        return Some(Reject::VmHostRule {
                            rule: rule.id.clone(),
                        });
                    }
                }
            }
            return Some(Reject::Incompatible);
        }
        None
    }

    /// Can running VM `v` go to `h` given everything else where it is now?
    /// Affinity partners that move with it are listed in `moving`.
    pub fn check(&self, v: usize, h: usize, moving: &[usize]) -> Result<(), Reject> {
        if self.host_of[v] == Some(h) {
            return Err(Reject::AlreadyThere);
        }
        if let Some(r) = self.static_reject(v, h) {
            return Err(r);
        }
        let need = self.need(v);
        let free = self.free(h);
        if need[CPU] > free[CPU] {
            return Err(Reject::Cpu {
                need: need[CPU],
                free: free[CPU],
            });
        }
        if need[MEM] > free[MEM] {
            return Err(Reject::Mem {
                need: need[MEM],
                free: free[MEM],
            });
        }
        match self.partner_reject(v, h, moving) {
            Some(r) => Err(r),
            None => Ok(()),
        }
    }

    /// Would every rule but capacity let `v` go to `h` (room may be made there)?
    pub fn rules_allow(&self, v: usize, h: usize, moving: &[usize]) -> bool {
        self.host_of[v] != Some(h)
            && self.static_reject(v, h).is_none()
            && self.partner_reject(v, h, moving).is_none()
    }

    /// Anti-affinity partners on `h`, or affinity partners (other than `moving`) elsewhere.
    fn partner_reject(&self, v: usize, h: usize, moving: &[usize]) -> Option<Reject> {
        let vm = &self.c.vms[v];
        for &r in &vm.anti {
            let there = self.anti.get(&(r, h)).copied().unwrap_or(0);
            if there > 0 {
                return Some(Reject::AntiAffinity {
                    rule: self.c.anti_rules[r].id.clone(),
                });
            }
        }
        let group = &self.c.groups[vm.group];
        for &p in &group.vms {
            if p == v || moving.contains(&p) {
                continue;
            }
            if let Some(ph) = self.host_of[p] {
                if ph != h {
                    return Some(Reject::Affinity {
                        rules: group.rules.clone(),
                        partners_on: self.c.hosts[ph].id.clone(),
                    });
                }
            }
        }
        None
    }

    /// Does the VM break a hard rule where it is now?
    pub fn violation(&self, v: usize) -> Option<String> {
        let h = self.host_of[v]?;
        let vm = &self.c.vms[v];
        let host = &self.c.hosts[h];
        if host.maintenance {
            return Some(format!("host {:?} is entering maintenance mode", host.id));
        }
        if !host.usable() {
            return Some(format!("host {:?} is not powered on", host.id));
        }
        if !vm.allows(h) {
            return Some(match self.static_reject(v, h) {
                Some(r) => r.to_string(),
                None => "vm-host rule".into(),
            });
        }
        for &r in &vm.anti {
            if self.anti.get(&(r, h)).copied().unwrap_or(0) > 1 {
                return Some(format!(
                    "anti-affinity rule {:?} broken",
                    self.c.anti_rules[r].id
                ));
            }
        }
        None
    }

    /// Is the host over its capacity by the hard rule (admission was bypassed)?
    pub fn overcommitted(&self, h: usize) -> bool {
        let cap = self.c.hosts[h].capacity;
        self.used[h][CPU] > cap[CPU] || self.used[h][MEM] > cap[MEM]
    }

    /// Does the running VMs' demand exceed the host's capacity (contention)?
    pub fn contended(&self, h: usize) -> bool {
        let cap = self.c.hosts[h].capacity;
        self.demand[h][CPU] > cap[CPU] || self.demand[h][MEM] > cap[MEM]
    }

    /// Would `h` still be free of contention with `vms` added (or was it, were they
    /// there already)?
    pub fn demand_fits(&self, vms: &[usize], h: usize) -> bool {
        let cap = self.c.hosts[h].capacity;
        let mut d = self.demand[h];
        for &v in vms {
            if self.host_of[v] != Some(h) {
                let f = self.c.vms[v].footprint();
                d[CPU] += f[CPU];
                d[MEM] += f[MEM];
            }
        }
        d[CPU] <= cap[CPU] && d[MEM] <= cap[MEM]
    }

    /// Soft-rule score: number of should-rules the VM breaks on `h`.
    pub fn soft_penalty(&self, v: usize, h: usize) -> u32 {
        let mut n = 0;
        for &r in &self.c.vms[v].host_rules {
            n += u32::from(self.c.host_rules[r].discourages(h));
        }
        n
    }
}
