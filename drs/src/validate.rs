//! Validation of a [`ClusterSpec`] into an indexed [`Cluster`].

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::model::{
    Allocation, CapacityModel, ClusterSpec, HostPower, HostSpec, PoolSpec, RestartPriority,
    RuleSpec, Settings, VmHostMode, VmSpec,
};

/// Index of the CPU resource in `[u64; 2]` pairs.
pub const CPU: usize = 0;
/// Index of the memory resource in `[u64; 2]` pairs.
pub const MEM: usize = 1;

/// A validated allocation (reservation ≤ limit, non-negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alloc {
    /// Reservation.
    pub reservation: u64,
    /// Limit, `u64::MAX` when unlimited.
    pub limit: u64,
    /// Share value.
    pub shares: u64,
    /// Expandable reservation (pools).
    pub expandable: bool,
}

/// A validated host.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// Id.
    pub id: String,
    /// Capacity `[cpu MHz, mem MB]`.
    pub capacity: [u64; 2],
    /// Compatibility group index.
    pub compat: Option<u32>,
    /// In maintenance mode.
    pub maintenance: bool,
    /// Power state.
    pub power: HostPower,
}

impl Host {
    /// Whether the host may take VMs.
    pub fn usable(&self) -> bool {
        self.power == HostPower::On && !self.maintenance
    }
}

/// A validated VM.
#[derive(Debug, Clone, PartialEq)]
pub struct Vm {
    /// Id.
    pub id: String,
    /// Configured size `[cpu, mem]`.
    pub size: [u64; 2],
    /// Demand, capped by the limit.
    pub demand: [u64; 2],
    /// Allocations `[cpu, mem]`.
    pub alloc: [Alloc; 2],
    /// Pool index.
    pub pool: Option<usize>,
    /// Current host index.
    pub host: Option<usize>,
    /// Running.
    pub powered_on: bool,
    /// HA restart priority.
    pub restart_priority: RestartPriority,
    /// Image tag index.
    pub image: Option<u32>,
    /// Affinity group index (every VM is in exactly one group, often alone).
    pub group: usize,
    /// Anti-affinity rules it is in.
    pub anti: Vec<usize>,
    /// VM-host rules it is in.
    pub host_rules: Vec<usize>,
    /// Hosts allowed by hard rules and compatibility (`None` = all).
    pub allowed: Option<Vec<bool>>,
}

/// Fixed part of a running VM's memory overhead on its host, MB (see [`Vm::overhead_mem_mb`]).
pub const OVERHEAD_MEM_BASE_MB: u64 = 20;
/// Memory overhead per GiB of configured guest memory, MB (see [`Vm::overhead_mem_mb`]).
pub const OVERHEAD_MEM_MB_PER_GIB: u64 = 8;

impl Vm {
    /// Memory the host spends on running this VM beyond its guest memory (the monitor,
    /// page tables, frame buffer), which admission control reserves with the VM:
    /// `OVERHEAD_MEM_BASE_MB + OVERHEAD_MEM_MB_PER_GIB × configured GiB`, rounded up. A
    /// model of vSphere's published overhead table for a one-vCPU VM (about 20 MB at
    /// 256 MB, 26 MB at 1 GiB, 49 MB at 4 GiB, 140 MB at 16 GiB; ours: 22, 28, 52, 148):
    /// the VM model has no vCPU count, and erring high keeps admission safe. CPU has no
    /// overhead reservation.
    pub fn overhead_mem_mb(&self) -> u64 {
        OVERHEAD_MEM_BASE_MB + (self.size[MEM] * OVERHEAD_MEM_MB_PER_GIB).div_ceil(1024)
    }

    /// What admission control reserves on the VM's host: `[cpu reservation, memory
    /// reservation + overhead]` (the hard need under [`CapacityModel::Reservations`]).
    pub fn reserved(&self) -> [u64; 2] {
        [
            self.alloc[CPU].reservation,
            self.alloc[MEM].reservation + self.overhead_mem_mb(),
        ]
    }

    /// What the VM's demand takes on its host: `max(reservation, min(demand, limit))` per
    /// resource. The soft load that balancing evens out and contention is measured by;
    /// the hard need only under [`CapacityModel::Footprint`].
    pub fn footprint(&self) -> [u64; 2] {
        [
            self.demand[CPU].max(self.alloc[CPU].reservation),
            self.demand[MEM].max(self.alloc[MEM].reservation),
        ]
    }

    /// Whether hard rules and compatibility allow host `h`.
    pub fn allows(&self, h: usize) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|a| a.get(h).copied().unwrap_or(false))
    }
}

/// A validated resource pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// Id.
    pub id: String,
    /// Parent pool index (`None` = root).
    pub parent: Option<usize>,
    /// Allocations `[cpu, mem]`.
    pub alloc: [Alloc; 2],
}

/// An anti-affinity rule.
#[derive(Debug, Clone, PartialEq)]
pub struct AntiRule {
    /// Id.
    pub id: String,
    /// Member VMs.
    pub vms: Vec<usize>,
}

/// A group of VMs tied by affinity rules (union of overlapping rules).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Member VMs (one for a VM with no affinity rule).
    pub vms: Vec<usize>,
    /// Ids of the affinity rules behind it.
    pub rules: Vec<String>,
}

/// A VM-host rule.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRule {
    /// Id.
    pub id: String,
    /// Mode.
    pub mode: VmHostMode,
    /// Host membership mask.
    pub hosts: Vec<bool>,
}

impl HostRule {
    /// Whether a must-run-on / must-not-run-on rule excludes host `h`.
    pub(crate) fn forbids(&self, h: usize) -> bool {
        match self.mode {
            VmHostMode::MustRunOn => !self.hosts[h],
            VmHostMode::MustNotRunOn => self.hosts[h],
            _ => false,
        }
    }

    /// Whether a should-run-on / should-not-run-on rule would rather not use host `h`.
    pub(crate) fn discourages(&self, h: usize) -> bool {
        match self.mode {
            VmHostMode::ShouldRunOn => !self.hosts[h],
            VmHostMode::ShouldNotRunOn => self.hosts[h],
            _ => false,
        }
    }
}

/// A validated cluster: ids resolved to indices, rules compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Hosts.
    pub hosts: Vec<Host>,
    /// VMs.
    pub vms: Vec<Vm>,
    /// Pools.
    pub pools: Vec<Pool>,
    /// Anti-affinity rules.
    pub anti_rules: Vec<AntiRule>,
    /// Affinity groups.
    pub groups: Vec<Group>,
    /// VM-host rules.
    pub host_rules: Vec<HostRule>,
    /// Settings.
    pub settings: Settings,
    host_index: HashMap<String, usize>,
    vm_index: HashMap<String, usize>,
}

/// Largest size, capacity, demand or reservation accepted (2^40 MHz or MB): sums over
/// millions of VMs then stay far from `u64` overflow.
pub const MAX_VALUE: i64 = 1 << 40;

fn positive(context: &str, field: &'static str, value: i64) -> Result<u64> {
    in_range(context, field, value, 1, "> 0")
}

fn non_negative(context: &str, field: &'static str, value: i64) -> Result<u64> {
    in_range(context, field, value, 0, ">= 0")
}

/// `value` as `u64` when it lies in `min..=MAX_VALUE`; `expected` describes `min`.
fn in_range(
    context: &str,
    field: &'static str,
    value: i64,
    min: i64,
    expected: &'static str,
) -> Result<u64> {
    let expected = if value > MAX_VALUE {
        "<= 2^40"
    } else if value < min {
        expected
    } else {
        return Ok(value.unsigned_abs());
    };
    Err(Error::BadValue {
        context: context.to_owned(),
        field,
        expected,
        value,
    })
}

fn alloc(context: &str, resource: &'static str, a: &Allocation) -> Result<Alloc> {
    let reservation = non_negative(context, "reservation", a.reservation)?;
    let limit = match a.limit {
        None => u64::MAX,
        Some(l) => {
            // A limit beyond any capacity is no limit.
            let l = if l > MAX_VALUE {
                u64::MAX
            } else {
                non_negative(context, "limit", l)?
            };
            if l < reservation {
                return Err(Error::ReservationAboveLimit {
                    context: context.to_owned(),
                    resource,
                    reservation: a.reservation,
                    limit: a.limit.unwrap_or_default(),
                });
            }
            l
        }
    };
    if let crate::model::Shares::Custom(0) = a.shares {
        return Err(Error::BadValue {
            context: context.to_owned(),
            field: "shares",
            expected: "> 0",
            value: 0,
        });
    }
    Ok(Alloc {
        reservation,
        limit,
        shares: a.shares.value(),
        expandable: a.expandable,
    })
}

fn index_of(
    map: &HashMap<String, usize>,
    kind: &'static str,
    id: &str,
    context: &str,
) -> Result<usize> {
    map.get(id).copied().ok_or_else(|| Error::UnknownId {
        kind,
        id: id.to_owned(),
        context: context.to_owned(),
    })
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    // Path halving keeps this iterative and bounded by the set size.
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// A small integer per distinct name, in order of first appearance.
fn intern(index: &mut HashMap<String, u32>, name: &str) -> u32 {
    let n = u32::try_from(index.len()).unwrap_or(u32::MAX);
    *index.entry(name.to_owned()).or_insert(n)
}

fn check_settings(settings: &Settings) -> Result<()> {
    if !(1..=5).contains(&settings.migration_threshold) {
        return Err(Error::BadSetting {
            field: "migration_threshold",
            reason: format!("{} not in 1..=5", settings.migration_threshold),
        });
    }
    if !settings.min_gain_per_gib.is_finite() || settings.min_gain_per_gib < 0.0 {
        return Err(Error::BadSetting {
            field: "min_gain_per_gib",
            reason: "must be a finite number >= 0".into(),
        });
    }
    Ok(())
}

fn hosts_of(
    hspecs: &[HostSpec],
    compat_index: &mut HashMap<String, u32>,
) -> Result<(Vec<Host>, HashMap<String, usize>)> {
    let mut host_index = HashMap::new();
    let mut hosts = Vec::with_capacity(hspecs.len());
    for (i, h) in hspecs.iter().enumerate() {
        let ctx = format!("host {:?}", h.id);
        if host_index.insert(h.id.clone(), i).is_some() {
            return Err(Error::DuplicateId {
                kind: "host",
                id: h.id.clone(),
            });
        }
        hosts.push(Host {
            id: h.id.clone(),
            capacity: [
                positive(&ctx, "cpu_mhz", h.cpu_mhz)?,
                positive(&ctx, "mem_mb", h.mem_mb)?,
            ],
            compat: h.compat_group.as_deref().map(|g| intern(compat_index, g)),
            maintenance: h.maintenance,
            power: h.power,
        });
    }
    Ok((hosts, host_index))
}

fn pools_of(pspecs: &[PoolSpec]) -> Result<(Vec<Pool>, HashMap<String, usize>)> {
    let mut pool_index = HashMap::new();
    for (i, p) in pspecs.iter().enumerate() {
        if pool_index.insert(p.id.clone(), i).is_some() {
            return Err(Error::DuplicateId {
                kind: "pool",
                id: p.id.clone(),
            });
        }
    }
    let mut pools = Vec::with_capacity(pspecs.len());
    for p in pspecs {
        let ctx = format!("pool {:?}", p.id);
        let parent = match &p.parent {
            None => None,
            Some(id) => Some(index_of(&pool_index, "pool", id, &ctx)?),
        };
        pools.push(Pool {
            id: p.id.clone(),
            parent,
            alloc: [alloc(&ctx, "cpu", &p.cpu)?, alloc(&ctx, "mem", &p.mem)?],
        });
    }
    // A chain longer than the number of pools must revisit a pool.
    for start in 0..pools.len() {
        let mut at = pools[start].parent;
        let mut steps = 0;
        while let Some(p) = at {
            steps += 1;
            if steps > pools.len() {
                return Err(Error::PoolCycle {
                    pool: pools[start].id.clone(),
                });
            }
            at = pools[p].parent;
        }
    }
    Ok((pools, pool_index))
}

fn vms_of(
    vspecs: &[VmSpec],
    hosts: &[Host],
    host_index: &HashMap<String, usize>,
    pool_index: &HashMap<String, usize>,
    compat_index: &mut HashMap<String, u32>,
) -> Result<(Vec<Vm>, HashMap<String, usize>)> {
    let mut image_index: HashMap<String, u32> = HashMap::new();
    let mut vm_index = HashMap::new();
    let mut vms = Vec::with_capacity(vspecs.len());
    for (i, v) in vspecs.iter().enumerate() {
        let ctx = format!("vm {:?}", v.id);
        if vm_index.insert(v.id.clone(), i).is_some() {
            return Err(Error::DuplicateId {
                kind: "vm",
                id: v.id.clone(),
            });
        }
        let size = [
            positive(&ctx, "cpu_mhz", v.cpu_mhz)?,
            positive(&ctx, "mem_mb", v.mem_mb)?,
        ];
        let a = [alloc(&ctx, "cpu", &v.cpu)?, alloc(&ctx, "mem", &v.mem)?];
        let dc = match v.cpu_demand_mhz {
            Some(d) => non_negative(&ctx, "cpu_demand_mhz", d)?,
            None => size[CPU],
        };
        let dm = match v.mem_demand_mb {
            Some(d) => non_negative(&ctx, "mem_demand_mb", d)?,
            None => size[MEM],
        };
        let host = match &v.host {
            None => None,
            Some(id) => Some(index_of(host_index, "host", id, &ctx)?),
        };
        let pool = match &v.pool {
            None => None,
            Some(id) => Some(index_of(pool_index, "pool", id, &ctx)?),
        };
        // A running VM can only VMotion within its current host's compatibility group.
        let vm_compat = v
            .compat_group
            .as_deref()
            .map(|g| intern(compat_index, g))
            .or_else(|| host.filter(|_| v.powered_on).and_then(|h| hosts[h].compat));
        let allowed = vm_compat.map(|g| hosts.iter().map(|h| h.compat == Some(g)).collect());
        let image = v.image.as_deref().map(|t| intern(&mut image_index, t));
        vms.push(Vm {
            id: v.id.clone(),
            size,
            demand: [dc.min(a[CPU].limit), dm.min(a[MEM].limit)],
            alloc: a,
            pool,
            host,
            powered_on: v.powered_on,
            restart_priority: v.restart_priority,
            image,
            group: i,
            anti: Vec::new(),
            host_rules: Vec::new(),
            allowed,
        });
    }
    Ok((vms, vm_index))
}

/// The rules resolved to indices.
struct Rules {
    anti: Vec<AntiRule>,
    host: Vec<HostRule>,
    /// Union-find parents over VMs: affinity rules join their members.
    union_find: Vec<usize>,
    /// `(first member, rule id)` of each affinity rule.
    affinity: Vec<(usize, String)>,
}

/// Resolve the rules, recording on each VM its anti-affinity and VM-host rules and
/// narrowing its allowed hosts by the hard VM-host rules.
fn compile_rules(
    rules: &[RuleSpec],
    vms: &mut [Vm],
    n_hosts: usize,
    host_index: &HashMap<String, usize>,
    vm_index: &HashMap<String, usize>,
) -> Result<Rules> {
    let mut rule_ids = HashMap::new();
    let mut uf: Vec<usize> = (0..vms.len()).collect();
    let mut group_rules: Vec<(usize, String)> = Vec::new();
    let mut anti_rules = Vec::new();
    let mut host_rules = Vec::new();
    for r in rules {
        if rule_ids.insert(r.id().to_owned(), ()).is_some() {
            return Err(Error::DuplicateId {
                kind: "rule",
                id: r.id().to_owned(),
            });
        }
        let ctx = format!("rule {:?}", r.id());
        let resolve = |ids: &[String]| -> Result<Vec<usize>> {
            let mut out: Vec<usize> = ids
                .iter()
                .map(|id| index_of(vm_index, "vm", id, &ctx))
                .collect::<Result<_>>()?;
            out.sort_unstable();
            out.dedup();
            Ok(out)
        };
        match r {
            RuleSpec::VmAffinity { id, vms: ids } | RuleSpec::VmAntiAffinity { id, vms: ids } => {
                let members = resolve(ids)?;
                if members.len() < 2 {
                    return Err(Error::BadRule {
                        rule: id.clone(),
                        reason: "needs at least two distinct vms".into(),
                    });
                }
                if matches!(r, RuleSpec::VmAffinity { .. }) {
                    let root = find(&mut uf, members[0]);
                    for &m in &members[1..] {
                        let rm = find(&mut uf, m);
                        uf[rm] = root;
                    }
                    group_rules.push((members[0], id.clone()));
                } else {
                    for &m in &members {
                        vms[m].anti.push(anti_rules.len());
                    }
                    anti_rules.push(AntiRule {
                        id: id.clone(),
                        vms: members,
                    });
                }
            }
            RuleSpec::VmHost {
                id,
                vms: ids,
                hosts: hids,
                mode,
            } => {
                let members = resolve(ids)?;
                if members.is_empty() || hids.is_empty() {
                    return Err(Error::BadRule {
                        rule: id.clone(),
                        reason: "needs at least one vm and one host".into(),
                    });
                }
                let mut mask = vec![false; n_hosts];
                for h in hids {
                    mask[index_of(host_index, "host", h, &ctx)?] = true;
                }
                for &m in &members {
                    vms[m].host_rules.push(host_rules.len());
                    let keep: Option<&Vec<bool>> = match mode {
                        VmHostMode::MustRunOn | VmHostMode::MustNotRunOn => Some(&mask),
                        _ => None,
                    };
                    if let Some(mask) = keep {
                        let want = *mode == VmHostMode::MustRunOn;
                        let allowed = vms[m].allowed.get_or_insert_with(|| vec![true; n_hosts]);
                        for (a, &inside) in allowed.iter_mut().zip(mask.iter()) {
                            *a &= inside == want;
                        }
                    }
                }
                host_rules.push(HostRule {
                    id: id.clone(),
                    mode: *mode,
                    hosts: mask,
                });
            }
        }
    }
    Ok(Rules {
        anti: anti_rules,
        host: host_rules,
        union_find: uf,
        affinity: group_rules,
    })
}

/// Affinity groups: members share one group index and one allowed-host set; a group
/// that an anti-affinity rule would split is a contradiction.
fn affinity_groups(
    vms: &mut [Vm],
    mut uf: Vec<usize>,
    group_rules: Vec<(usize, String)>,
    anti_rules: &[AntiRule],
    n_hosts: usize,
) -> Result<Vec<Group>> {
    // Affinity groups: members share one group index and one allowed-host set.
    let mut root_to_group: HashMap<usize, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for (v, vm) in vms.iter_mut().enumerate() {
        let r = find(&mut uf, v);
        let g = *root_to_group.entry(r).or_insert_with(|| {
            groups.push(Group {
                vms: Vec::new(),
                rules: Vec::new(),
            });
            groups.len() - 1
        });
        groups[g].vms.push(v);
        vm.group = g;
    }
    for (v, id) in group_rules {
        let g = vms[v].group;
        groups[g].rules.push(id);
    }
    for g in &groups {
        if g.vms.len() < 2 {
            continue;
        }
        let mut allowed: Option<Vec<bool>> = None;
        for &v in &g.vms {
            if let Some(a) = &vms[v].allowed {
                let acc = allowed.get_or_insert_with(|| vec![true; n_hosts]);
                for (x, &y) in acc.iter_mut().zip(a.iter()) {
                    *x &= y;
                }
            }
        }
        for &v in &g.vms {
            vms[v].allowed.clone_from(&allowed);
        }
        // Two members of one group in one anti-affinity rule cannot both hold.
        let mut seen: HashMap<usize, usize> = HashMap::new();
        for &v in &g.vms {
            for &r in &vms[v].anti {
                if let Some(&other) = seen.get(&r) {
                    return Err(Error::ContradictoryRules {
                        reason: format!(
                            "vms {:?} and {:?} are tied by affinity ({}) and kept apart by anti-affinity {:?}",
                            vms[other].id,
                            vms[v].id,
                            g.rules.join(", "),
                            anti_rules[r].id
                        ),
                    });
                }
                seen.insert(r, v);
            }
        }
    }
    Ok(groups)
}

fn check_some_host_allowed(vms: &[Vm], host_rules: &[HostRule]) -> Result<()> {
    for v in vms {
        if let Some(a) = &v.allowed {
            if !a.iter().any(|&x| x) {
                let rules: Vec<&str> = v
                    .host_rules
                    .iter()
                    .map(|&r| host_rules[r].id.as_str())
                    .collect();
                return Err(Error::ContradictoryRules {
                    reason: format!(
                        "vm {:?} has no allowed host left (vm-host rules [{}], compatibility group)",
                        v.id,
                        rules.join(", ")
                    ),
                });
            }
        }
    }
    Ok(())
}

impl Cluster {
    /// Validate a spec. Errors name the offending object.
    ///
    /// ```
    /// use vinfra_drs::{Cluster, ClusterSpec, HostSpec};
    ///
    /// let spec = ClusterSpec::new(vec![HostSpec::new("esx-1", 0, 1024)], Vec::new());
    /// let err = Cluster::new(spec).unwrap_err();
    /// assert_eq!(err.to_string(), "host \"esx-1\": cpu_mhz must be > 0, got 0");
    /// ```
    pub fn new(spec: ClusterSpec) -> Result<Self> {
        let ClusterSpec {
            hosts: hspecs,
            vms: vspecs,
            pools: pspecs,
            rules,
            settings,
        } = spec;
        check_settings(&settings)?;
        let mut compat_index = HashMap::new();
        let (hosts, host_index) = hosts_of(&hspecs, &mut compat_index)?;
        let (pools, pool_index) = pools_of(&pspecs)?;
        let (mut vms, vm_index) =
            vms_of(&vspecs, &hosts, &host_index, &pool_index, &mut compat_index)?;
        let rules = compile_rules(&rules, &mut vms, hosts.len(), &host_index, &vm_index)?;
        let groups = affinity_groups(
            &mut vms,
            rules.union_find,
            rules.affinity,
            &rules.anti,
            hosts.len(),
        )?;
        check_some_host_allowed(&vms, &rules.host)?;
        Ok(Self {
            hosts,
            vms,
            pools,
            anti_rules: rules.anti,
            groups,
            host_rules: rules.host,
            settings,
            host_index,
            vm_index,
        })
    }

    /// Parse and validate JSON.
    pub fn from_json(json: &str) -> Result<Self> {
        let spec: ClusterSpec = serde_json::from_str(json).map_err(|e| Error::InvalidRequest {
            reason: format!("parse cluster json: {e}"),
        })?;
        Self::new(spec)
    }

    /// Index of a host id.
    pub fn host_index(&self, id: &str) -> Result<usize> {
        index_of(&self.host_index, "host", id, "request")
    }

    /// Index of a VM id.
    pub fn vm_index(&self, id: &str) -> Result<usize> {
        index_of(&self.vm_index, "vm", id, "request")
    }

    /// What VM `v` takes of its host's capacity under the cluster's capacity model: the
    /// per-resource sum of these over a host's running VMs must stay within its capacity.
    pub fn capacity_need(&self, v: usize) -> [u64; 2] {
        match self.settings.capacity_model {
            CapacityModel::Reservations => self.vms[v].reserved(),
            CapacityModel::Footprint => self.vms[v].footprint(),
        }
    }

    /// Indices of the hosts that may take VMs.
    pub fn usable_hosts(&self) -> impl Iterator<Item = usize> + '_ {
        self.hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.usable())
            .map(|(i, _)| i)
    }
}
