//! Property tests over random and malformed instances: no entry point panics, plans
//! respect capacity and rules, and the same input gives the same output.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use proptest::prelude::*;
use vinfra_drs::{
    admit_power_on, balance, entitlements, evacuate, first_fit_decreasing, ha, pack, place,
    Allocation, CapacityModel, Cluster, ClusterSpec, HostSpec, PackOptions, PoolSpec, RuleSpec,
    VmHostMode, VmSpec, CPU, MEM,
};

fn host_id(i: usize) -> String {
    format!("h{i}")
}
fn vm_id(i: usize) -> String {
    format!("v{i}")
}

prop_compose! {
    fn arb_host()(cpu in prop_oneof![400 => 1i64..3000, 1 => -10i64..=0], mem in prop_oneof![400 => 1i64..3000, 1 => -10i64..=0], maint in prop::bool::weighted(0.1), compat in prop::option::weighted(0.2, 0u8..2))
        -> (i64, i64, bool, Option<u8>) { (cpu, mem, maint, compat) }
}

prop_compose! {
    fn arb_vm()(cpu in prop_oneof![400 => 1i64..900, 1 => -5i64..=0], mem in prop_oneof![400 => 1i64..900, 1 => -5i64..=0], demand in prop::option::of(0i64..900),
                res in 0i64..400, limit in prop::option::weighted(0.1, prop_oneof![30 => 400i64..1000, 1 => 0i64..400]),
                host in prop::option::of(0usize..7), pool in prop::option::weighted(0.3, 0usize..4),
                on in prop::bool::weighted(0.8), image in prop::option::weighted(0.3, 0u8..3))
        -> (i64, i64, Option<i64>, i64, Option<i64>, Option<usize>, Option<usize>, bool, Option<u8>) {
        (cpu, mem, demand, res, limit, host, pool, on, image)
    }
}

#[derive(Debug, Clone)]
enum R {
    Aff(Vec<usize>),
    Anti(Vec<usize>),
    Host(Vec<usize>, Vec<usize>, u8),
}

fn arb_rule() -> impl Strategy<Value = R> {
    prop_oneof![
        prop::collection::vec(0usize..14, 2..4).prop_map(R::Aff),
        prop::collection::vec(0usize..14, 2..4).prop_map(R::Anti),
        (
            prop::collection::vec(0usize..14, 1..3),
            prop::collection::vec(0usize..7, 1..3),
            0u8..4
        )
            .prop_map(|(v, h, m)| R::Host(v, h, m)),
    ]
}

prop_compose! {
    fn arb_spec()(hosts in prop::collection::vec(arb_host(), 1..6),
                  vms in prop::collection::vec(arb_vm(), 1..12),
                  pools in prop::collection::vec((prop::option::of(0usize..4), 0i64..500, any::<bool>()), 0..4),
                  rules in prop::collection::vec(arb_rule(), 0..5),
                  threshold in prop_oneof![50 => 1u8..=5, 1 => 0u8..9],
                  footprint_model in any::<bool>(),
                  ghost in prop::bool::weighted(0.05)) -> ClusterSpec {
        let spec_vms_len = vms.len();
        let spec_hosts_len = hosts.len();
        let hosts = hosts.iter().enumerate().map(|(i, &(c, m, maint, compat))| {
            let mut h = HostSpec::new(host_id(i), c, m);
            h.maintenance = maint;
            h.compat_group = compat.map(|g| format!("g{g}"));
            h
        }).collect();
        let vms: Vec<VmSpec> = vms.iter().enumerate().map(|(i, v)| {
            let mut s = VmSpec::new(vm_id(i), v.0, v.1);
            s.cpu_demand_mhz = v.2;
            s.mem.reservation = v.3;
            s.mem.limit = v.4;
            s.host = v.5.map(|h| host_id(h % (spec_hosts_len + usize::from(ghost))));
            s.pool = v.6.filter(|&p| p < pools.len() || ghost).map(|p| format!("p{p}"));
            s.powered_on = v.7;
            s.image = v.8.map(|t| format!("img{t}"));
            s
        }).collect();
        let n_pools = pools.len();
        let pools: Vec<PoolSpec> = pools.iter().enumerate().map(|(i, &(parent, res, exp))| {
            let mut p = PoolSpec::new(format!("p{i}"), None);
            // Parents point down the list (a tree) unless this instance is meant to be bad.
            p.parent = parent.filter(|&q| q < i || (ghost && q < n_pools)).map(|q| format!("p{q}"));
            p.cpu = Allocation::reserved(res);
            p.cpu.expandable = exp;
            p
        }).collect();
        let nv = spec_vms_len.max(1) + usize::from(ghost);
        let nh = spec_hosts_len + usize::from(ghost);
        let vm_id = |x: usize| vm_id(x % nv);
        let host_id = |x: usize| host_id(x % nh);
        let rules = rules.iter().enumerate().map(|(i, r)| match r {
            R::Aff(v) => RuleSpec::VmAffinity { id: format!("r{i}"), vms: v.iter().map(|&x| vm_id(x)).collect() },
            R::Anti(v) => RuleSpec::VmAntiAffinity { id: format!("r{i}"), vms: v.iter().map(|&x| vm_id(x)).collect() },
            R::Host(v, h, m) => RuleSpec::VmHost {
                id: format!("r{i}"),
                vms: v.iter().map(|&x| vm_id(x)).collect(),
                hosts: h.iter().map(|&x| host_id(x)).collect(),
                mode: [VmHostMode::MustRunOn, VmHostMode::ShouldRunOn, VmHostMode::MustNotRunOn, VmHostMode::ShouldNotRunOn][usize::from(*m)],
            },
        }).collect();
        let mut spec = ClusterSpec::new(hosts, vms);
        spec.pools = pools;
        spec.rules = rules;
        spec.settings.migration_threshold = threshold;
        if footprint_model {
            spec.settings.capacity_model = CapacityModel::Footprint;
        }
        spec
    }
}

/// Capacity (footprints: packing's rule), anti-affinity, affinity and hard VM-host rules
/// hold for an assignment.
fn check_assignment(c: &Cluster, assignment: &[(String, String)]) -> Result<(), String> {
    check_assignment_with(c, assignment, footprint)
}

/// What a VM takes of a host under packing's rule.
fn footprint(c: &Cluster, v: usize) -> [u64; 2] {
    c.vms[v].footprint()
}

/// What a VM takes of a host under the cluster's capacity model.
fn capacity_need(c: &Cluster, v: usize) -> [u64; 2] {
    c.capacity_need(v)
}

/// As [`check_assignment`], with capacity counted by `need`.
fn check_assignment_with(
    c: &Cluster,
    assignment: &[(String, String)],
    need: fn(&Cluster, usize) -> [u64; 2],
) -> Result<(), String> {
    let mut used: HashMap<usize, [u64; 2]> = HashMap::new();
    let mut host_of: HashMap<usize, usize> = HashMap::new();
    for (vm, h) in assignment {
        let v = c.vm_index(vm).unwrap();
        let h = c.host_index(h).unwrap();
        if !c.hosts[h].usable() {
            return Err(format!("{vm} on unusable host"));
        }
        if !c.vms[v].allows(h) {
            return Err(format!("{vm} on a host its rules forbid"));
        }
        let f = need(c, v);
        let u = used.entry(h).or_default();
        u[CPU] += f[CPU];
        u[MEM] += f[MEM];
        host_of.insert(v, h);
    }
    for (h, u) in &used {
        let cap = c.hosts[*h].capacity;
        if u[CPU] > cap[CPU] || u[MEM] > cap[MEM] {
            return Err(format!("host {h} over capacity"));
        }
    }
    for r in &c.anti_rules {
        let mut hs: Vec<usize> = r
            .vms
            .iter()
            .filter_map(|v| host_of.get(v).copied())
            .collect();
        let n = hs.len();
        hs.sort_unstable();
        hs.dedup();
        if hs.len() != n {
            return Err(format!("anti-affinity {} broken", r.id));
        }
    }
    for g in &c.groups {
        let hs: Vec<usize> = g
            .vms
            .iter()
            .filter_map(|v| host_of.get(v).copied())
            .collect();
        if hs.windows(2).any(|w| w[0] != w[1]) {
            return Err(format!("affinity {:?} broken", g.rules));
        }
    }
    Ok(())
}

/// The hard rules (other than capacity) an assignment breaks, each with the VMs involved.
fn rules_broken(c: &Cluster, assignment: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    let host_of: HashMap<usize, usize> = assignment
        .iter()
        .map(|(v, h)| (c.vm_index(v).unwrap(), c.host_index(h).unwrap()))
        .collect();
    let mut out = Vec::new();
    for (&v, &h) in &host_of {
        if !c.hosts[h].usable() || !c.vms[v].allows(h) {
            out.push((
                format!("{} placement", c.vms[v].id),
                vec![c.vms[v].id.clone()],
            ));
        }
    }
    for r in &c.anti_rules {
        let mut hs: Vec<usize> = r
            .vms
            .iter()
            .filter_map(|v| host_of.get(v).copied())
            .collect();
        let n = hs.len();
        hs.sort_unstable();
        hs.dedup();
        if hs.len() != n {
            out.push((
                format!("anti-affinity {}", r.id),
                r.vms.iter().map(|&v| c.vms[v].id.clone()).collect(),
            ));
        }
    }
    for g in &c.groups {
        let mut hs: Vec<usize> = g
            .vms
            .iter()
            .filter_map(|v| host_of.get(v).copied())
            .collect();
        hs.sort_unstable();
        hs.dedup();
        if hs.len() > 1 {
            out.push((
                format!("affinity {:?}", g.rules),
                g.vms.iter().map(|&v| c.vms[v].id.clone()).collect(),
            ));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_entry_point_survives_random_instances(spec in arb_spec()) {
        let Ok(c) = Cluster::new(spec.clone()) else { return Ok(()) };
        let e = entitlements(&c);
        for r in [CPU, MEM] {
            let total: u64 = e.vms.iter().map(|x| x[r]).sum::<u64>();
            // Reservations can exceed capacity only if admission was bypassed.
            let reserved: u64 = c.vms.iter().filter(|v| v.powered_on).map(|v| v.alloc[r].reservation).sum();
            prop_assert!(total <= e.capacity[r].max(reserved));
        }
        for v in &c.vms {
            let _ = admit_power_on(&c, &v.id);
        }
        let unplaced: Vec<&str> = c.vms.iter().filter(|v| v.host.is_none()).map(|v| v.id.as_str()).collect();
        let p = place(&c, &unplaced).unwrap();
        prop_assert_eq!(p.placements.len(), unplaced.len());
        // From a placement that keeps every rule, the prerequisite migrations and the
        // placements keep them too.
        let mut now: Vec<(String, String)> = c.vms.iter()
            .filter(|v| v.powered_on && v.host.is_some() && !unplaced.contains(&v.id.as_str()))
            .filter_map(|v| v.host.map(|h| (v.id.clone(), c.hosts[h].id.clone())))
            .collect();
        if check_assignment_with(&c, &now, capacity_need).is_ok() {
            for pl in &p.placements {
                prop_assert!(pl.prerequisites.len() <= vinfra_drs::MAX_PREREQUISITES);
                for m in &pl.prerequisites {
                    let e = now.iter_mut().find(|(v, _)| *v == m.vm).unwrap();
                    prop_assert_eq!(&e.1, &m.from);
                    e.1.clone_from(&m.to);
                }
                if let Some(h) = &pl.host {
                    now.push((pl.vm.clone(), h.clone()));
                }
            }
            check_assignment_with(&c, &now, capacity_need).map_err(TestCaseError::fail)?;
        }
        let b1 = balance(&c);
        let b2 = balance(&c);
        prop_assert_eq!(&b1, &b2);
        prop_assert!(b1.recommendations.len() <= c.settings.max_moves_per_pass as usize);
        // From a placement that keeps every rule, the recommendations keep them too.
        let mut now: Vec<(String, String)> = c.vms.iter()
            .filter(|v| v.powered_on)
            .filter_map(|v| v.host.map(|h| (v.id.clone(), c.hosts[h].id.clone())))
            .collect();
        let abiding = check_assignment_with(&c, &now, capacity_need).is_ok();
        for r in &b1.recommendations {
            let e = now.iter_mut().find(|(v, _)| *v == r.vm).unwrap();
            prop_assert_eq!(&e.1, &r.from);
            e.1.clone_from(&r.to);
        }
        if abiding {
            check_assignment_with(&c, &now, capacity_need).map_err(TestCaseError::fail)?;
            // Relieving contention may cost balance; balancing itself never does.
            if b1.contention_before.is_empty() {
                prop_assert!(b1.imbalance_after <= b1.imbalance_before + 1e-9);
            }
            // Contention is relieved first and never created.
            prop_assert!(b1.contention_after.iter().all(|a| b1.contention_before.iter().any(|b| b.host == a.host)));
        }
        // Every hard rule the pass leaves broken is reported, whatever the start.
        for (what, vms) in rules_broken(&c, &now) {
            prop_assert!(
                vms.iter().any(|v| b1.unresolved.iter().any(|u| &u.vm == v)),
                "{} left broken and not reported: {:?}", what, b1
            );
        }
        for h in &c.hosts {
            let plan = evacuate(&c, &h.id).unwrap();
            for m in &plan.moves {
                prop_assert_ne!(&m.to, &h.id);
            }
        }
        let _ = ha::slot_admission(&c, 1);
        let _ = ha::percentage_admission(&c, 25, 25).unwrap();
        let r = ha::restart_plan(&c, &[c.hosts[0].id.as_str()]).unwrap();
        for x in &r.restarts {
            prop_assert_ne!(&x.host, &c.hosts[0].id);
        }
        let p1 = pack(&c, &PackOptions::with_budget(200_000));
        let p2 = pack(&c, &PackOptions::with_budget(200_000));
        prop_assert_eq!(&p1, &p2);
        check_assignment(&c, &p1.assignment).map_err(TestCaseError::fail)?;
        let running = c.vms.iter().filter(|v| v.powered_on).count();
        prop_assert_eq!(p1.assignment.len() + p1.unplaced.len(), running);
        let f = first_fit_decreasing(&c);
        check_assignment(&c, &f.assignment).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn packing_of_generated_triplets_is_feasible_and_bounded(seed in 0u64..1000, bins in 1usize..15) {
        let inst = vinfra_drs::generate::triplets(seed, bins * 3, 3);
        let c = Cluster::new(inst.spec).unwrap();
        let p = pack(&c, &PackOptions::default());
        prop_assert!(p.unplaced.is_empty());
        prop_assert!(p.hosts_used >= p.lower_bound);
        check_assignment(&c, &p.assignment).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn malformed_json_is_an_error_not_a_panic(s in ".{0,200}") {
        let _ = Cluster::from_json(&s);
    }

    #[test]
    fn mutated_json_is_an_error_not_a_panic(spec in arb_spec(), cut in 0usize..2000, byte in any::<u8>()) {
        let mut json = serde_json::to_vec(&spec).unwrap();
        if !json.is_empty() {
            let i = cut % json.len();
            json[i] = byte;
        }
        if let Ok(s) = std::str::from_utf8(&json) {
            let _ = Cluster::from_json(s);
        }
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let ok = || {
        ClusterSpec::new(
            vec![HostSpec::new("h", 100, 100)],
            vec![VmSpec::new("v", 10, 10)],
        )
    };
    let mut s = ok();
    s.hosts[0].cpu_mhz = 0;
    assert!(Cluster::new(s).unwrap_err().to_string().contains("cpu_mhz"));
    let mut s = ok();
    s.vms[0].mem = Allocation::reserved(50);
    s.vms[0].mem.limit = Some(10);
    assert!(Cluster::new(s)
        .unwrap_err()
        .to_string()
        .contains("above limit"));
    let mut s = ok();
    s.rules.push(RuleSpec::VmAntiAffinity {
        id: "r".into(),
        vms: vec!["v".into(), "ghost".into()],
    });
    assert!(Cluster::new(s).unwrap_err().to_string().contains("ghost"));
    let mut s = ok();
    s.pools = vec![PoolSpec::new("a", Some("b")), PoolSpec::new("b", Some("a"))];
    assert!(Cluster::new(s).unwrap_err().to_string().contains("cycle"));
    let mut s = ok();
    s.vms.push(VmSpec::new("w", 10, 10));
    s.rules.push(RuleSpec::VmAffinity {
        id: "tog".into(),
        vms: vec!["v".into(), "w".into()],
    });
    s.rules.push(RuleSpec::VmAntiAffinity {
        id: "apart".into(),
        vms: vec!["v".into(), "w".into()],
    });
    assert!(Cluster::new(s)
        .unwrap_err()
        .to_string()
        .contains("contradictory"));
    let mut s = ok();
    s.hosts.push(HostSpec::new("h2", 100, 100));
    s.rules.push(RuleSpec::VmHost {
        id: "a".into(),
        vms: vec!["v".into()],
        hosts: vec!["h".into()],
        mode: VmHostMode::MustRunOn,
    });
    s.rules.push(RuleSpec::VmHost {
        id: "b".into(),
        vms: vec!["v".into()],
        hosts: vec!["h2".into()],
        mode: VmHostMode::MustRunOn,
    });
    assert!(Cluster::new(s)
        .unwrap_err()
        .to_string()
        .contains("no allowed host"));
    let mut s = ok();
    s.settings.migration_threshold = 9;
    assert!(Cluster::new(s).is_err());
    assert!(Cluster::from_json(r#"{"hosts": [], "bogus": 1}"#).is_err());
    // Huge values are refused before any sum can overflow; a huge limit means no limit.
    let mut s = ok();
    s.hosts[0].mem_mb = i64::MAX;
    assert!(Cluster::new(s).unwrap_err().to_string().contains("2^40"));
    let mut s = ok();
    s.vms[0].cpu.reservation = i64::MAX;
    assert!(Cluster::new(s).is_err());
    let mut s = ok();
    s.vms[0].cpu.limit = Some(i64::MAX);
    let c = Cluster::new(s).unwrap();
    assert_eq!(c.vms[0].alloc[CPU].limit, u64::MAX);
}

#[test]
fn infeasible_packing_names_what_could_not_be_placed() {
    let spec = ClusterSpec::new(
        vec![HostSpec::new("h", 100, 100)],
        vec![VmSpec::new("a", 80, 10), VmSpec::new("b", 80, 10)],
    );
    let c = Cluster::new(spec).unwrap();
    let p = pack(&c, &PackOptions::default());
    assert_eq!(p.unplaced.len(), 1);
    assert_eq!(p.assignment.len(), 1);
}

#[test]
fn the_random_instances_are_mostly_valid() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = arb_spec();
    let mut errors: HashMap<String, usize> = HashMap::new();
    let mut valid = 0;
    for _ in 0..400 {
        match Cluster::new(strategy.new_tree(&mut runner).unwrap().current()) {
            Ok(_) => valid += 1,
            Err(e) => {
                *errors
                    .entry(
                        format!("{e}")
                            .split(':')
                            .next_back()
                            .unwrap_or("")
                            .chars()
                            .take(30)
                            .collect(),
                    )
                    .or_default() += 1
            }
        }
    }
    eprintln!("{errors:?}");
    eprintln!("valid random instances: {valid}/400");
    assert!(
        valid >= 160,
        "only {valid}/400 valid: the property test would exercise too little"
    );
}

/// Is there any assignment of the running VMs to usable hosts that keeps every rule?
fn brute_force_feasible(c: &Cluster) -> bool {
    let running: Vec<usize> = (0..c.vms.len()).filter(|&v| c.vms[v].powered_on).collect();
    let hosts: Vec<usize> = c.usable_hosts().collect();
    some_assignment_keeps_the_rules(c, &[], &running, &hosts, footprint)
}

/// Is there an assignment of `movers` to `hosts` that keeps every rule together with
/// the VMs that `stay` where they are?
fn some_assignment_keeps_the_rules(
    c: &Cluster,
    stay: &[(String, String)],
    movers: &[usize],
    hosts: &[usize],
    need: fn(&Cluster, usize) -> [u64; 2],
) -> bool {
    if hosts.is_empty() {
        return movers.is_empty() && check_assignment_with(c, stay, need).is_ok();
    }
    let total = hosts.len().pow(u32::try_from(movers.len()).unwrap());
    (0..total).any(|mut code| {
        let mut assignment = stay.to_vec();
        for &v in movers {
            let h = hosts[code % hosts.len()];
            code /= hosts.len();
            assignment.push((c.vms[v].id.clone(), c.hosts[h].id.clone()));
        }
        check_assignment_with(c, &assignment, need).is_ok()
    })
}

/// `(vm id, host id)` pairs.
type Assignment = Vec<(String, String)>;

/// At most 6 VMs on at most 3 hosts, none in maintenance, whose current placement keeps
/// the rules: the cluster, host `which` (modulo the host count) and that placement.
fn small_cluster_keeping_the_rules(
    spec: ClusterSpec,
    which: usize,
) -> Option<(Cluster, usize, Assignment)> {
    let mut spec = spec;
    spec.vms.truncate(6);
    spec.hosts.truncate(3);
    for h in &mut spec.hosts {
        h.maintenance = false;
    }
    let c = Cluster::new(spec).ok()?;
    let host = which % c.hosts.len();
    let now: Vec<(String, String)> = c
        .vms
        .iter()
        .filter(|v| v.powered_on)
        .filter_map(|v| v.host.map(|h| (v.id.clone(), c.hosts[h].id.clone())))
        .collect();
    check_assignment_with(&c, &now, capacity_need).ok()?;
    Some((c, host, now))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn pack_finds_a_feasible_placement_whenever_one_exists(spec in arb_spec()) {
        let mut spec = spec;
        spec.vms.truncate(6);
        spec.hosts.truncate(3);
        for v in &mut spec.vms {
            v.host = None;
        }
        let Ok(c) = Cluster::new(spec) else { return Ok(()) };
        let p = pack(&c, &PackOptions::default());
        if brute_force_feasible(&c) {
            prop_assert!(p.unplaced.is_empty(), "feasible but unplaced {:?}", p.unplaced);
        } else {
            prop_assert!(!p.unplaced.is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn evacuation_succeeds_whenever_possible_and_keeps_the_rules(spec in arb_spec(), which in 0usize..3) {
        let Some((c, t, now)) = small_cluster_keeping_the_rules(spec, which) else { return Ok(()) };
        let target = c.hosts[t].id.clone();
        let leaving: Vec<usize> = (0..c.vms.len()).filter(|&v| c.vms[v].powered_on && c.vms[v].host == Some(t)).collect();
        let others: Vec<usize> = c.usable_hosts().filter(|&h| h != t).collect();
        let stay: Vec<(String, String)> = now.iter().filter(|(_, h)| *h != target).cloned().collect();
        let possible = some_assignment_keeps_the_rules(&c, &stay, &leaving, &others, capacity_need);
        let plan = evacuate(&c, &target).unwrap();
        if std::env::var_os("DRS_COUNT").is_some() {
            eprintln!("EVAC leaving={} possible={possible}", leaving.len());
        }
        let blocked_running = plan.blocked.iter().any(|b| leaving.iter().any(|&v| c.vms[v].id == b.vm));
        prop_assert_eq!(!blocked_running, possible, "plan {:?}", plan);
        if possible {
            let mut a = stay.clone();
            for m in plan.moves.iter().filter(|m| m.powered_on) {
                a.push((m.vm.clone(), m.to.clone()));
            }
            check_assignment_with(&c, &a, capacity_need).map_err(TestCaseError::fail)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn ha_restarts_everyone_whenever_possible_and_keeps_the_rules(spec in arb_spec(), which in 0usize..3) {
        let Some((c, f, now)) = small_cluster_keeping_the_rules(spec, which) else { return Ok(()) };
        let failed = c.hosts[f].id.clone();
        let victims: Vec<usize> = (0..c.vms.len())
            .filter(|&v| c.vms[v].powered_on && c.vms[v].host == Some(f))
            .filter(|&v| c.vms[v].restart_priority != vinfra_drs::RestartPriority::Disabled)
            .collect();
        let others: Vec<usize> = c.usable_hosts().filter(|&h| h != f).collect();
        let stay: Vec<(String, String)> = now.iter().filter(|(_, h)| *h != failed).cloned().collect();
        let possible = victims.is_empty() || some_assignment_keeps_the_rules(&c, &stay, &victims, &others, capacity_need);
        let plan = ha::restart_plan(&c, &[failed.as_str()]).unwrap();
        prop_assert_eq!(plan.restarts.len() == victims.len(), possible, "plan {:?}", plan);
        let mut a = stay.clone();
        for r in &plan.restarts {
            a.push((r.vm.clone(), r.host.clone()));
        }
        check_assignment_with(&c, &a, capacity_need).map_err(TestCaseError::fail)?;
    }
}

/// Imbalance as the README defines it, computed from scratch: the population standard
/// deviation of Σ entitlement / capacity over usable hosts, both resources folded.
fn imbalance_of(c: &Cluster, ent: &[[u64; 2]], host_of: &[Option<usize>]) -> f64 {
    let mut load = vec![[0.0f64; 2]; c.hosts.len()];
    for (v, h) in host_of.iter().enumerate() {
        if let Some(h) = *h {
            for r in [CPU, MEM] {
                load[h][r] += ent[v][r] as f64 / c.hosts[h].capacity[r] as f64;
            }
        }
    }
    let usable: Vec<usize> = c.usable_hosts().collect();
    let n = usable.len() as f64;
    let mut var = 0.0;
    for r in [CPU, MEM] {
        let mean = usable.iter().map(|&h| load[h][r]).sum::<f64>() / n;
        var += usable
            .iter()
            .map(|&h| (load[h][r] - mean).powi(2))
            .sum::<f64>()
            / n;
    }
    (var / 2.0).sqrt()
}

/// Whether running VM `v` may move alone to `d` under every hard rule and capacity.
fn single_move_allowed(c: &Cluster, host_of: &[Option<usize>], v: usize, d: usize) -> bool {
    let vm = &c.vms[v];
    if host_of[v] == Some(d)
        || !c.hosts[d].usable()
        || !vm.allows(d)
        || c.groups[vm.group].vms.len() > 1
    {
        return false;
    }
    if vm.anti.iter().any(|&r| {
        c.anti_rules[r]
            .vms
            .iter()
            .any(|&p| p != v && host_of[p] == Some(d))
    }) {
        return false;
    }
    // The hard need must fit, and balancing never creates contention (demand above
    // capacity): both sums stay within the destination's capacity.
    [footprint, capacity_need].iter().all(|need| {
        let mut used = [0u64; 2];
        for (p, h) in host_of.iter().enumerate() {
            if *h == Some(d) {
                let f = need(c, p);
                used[CPU] += f[CPU];
                used[MEM] += f[MEM];
            }
        }
        let f = need(c, v);
        [CPU, MEM]
            .iter()
            .all(|&r| used[r] + f[r] <= c.hosts[d].capacity[r])
    })
}

prop_compose! {
    /// Small clusters with compatibility groups, anti-affinity and must-run-on rules.
    fn arb_balance_case()(hosts in prop::collection::vec((1000i64..20_000, 1000i64..20_000, prop::option::weighted(0.6, 0u8..3)), 2..14),
                          vms in prop::collection::vec((50i64..3000, 50i64..3000, 0usize..14), 1..40),
                          anti in prop::collection::vec(prop::collection::vec(0usize..40, 2..4), 0..3),
                          must in prop::collection::vec((0usize..40, prop::collection::vec(0usize..14, 1..4)), 0..3),
                          threshold in 2u8..=5,
                          footprint_model in any::<bool>(),
                          reservations in prop::collection::vec(0i64..1500, 40)) -> ClusterSpec {
        let nh = hosts.len();
        let nv = vms.len();
        let hosts = hosts.iter().enumerate().map(|(i, &(cpu, mem, g))| {
            let mut h = HostSpec::new(host_id(i), cpu, mem);
            h.compat_group = g.map(|g| format!("g{g}"));
            h
        }).collect();
        let vms = vms.iter().enumerate().map(|(i, &(cpu, mem, h))| VmSpec::new(vm_id(i), cpu, mem).on(host_id(h % nh))).collect();
        let mut spec = ClusterSpec::new(hosts, vms);
        for (i, a) in anti.iter().enumerate() {
            spec.rules.push(RuleSpec::VmAntiAffinity { id: format!("a{i}"), vms: a.iter().map(|&v| vm_id(v % nv)).collect() });
        }
        for (i, (v, hs)) in must.iter().enumerate() {
            spec.rules.push(RuleSpec::VmHost {
                id: format!("m{i}"),
                vms: vec![vm_id(v % nv)],
                hosts: hs.iter().map(|&h| host_id(h % nh)).collect(),
                mode: VmHostMode::MustRunOn,
            });
        }
        spec.settings.migration_threshold = threshold;
        if footprint_model {
            spec.settings.capacity_model = CapacityModel::Footprint;
        }
        for (vm, res) in spec.vms.iter_mut().zip(reservations) {
            vm.mem.reservation = res.min(vm.mem_mb);
            vm.cpu.reservation = res.min(vm.cpu_mhz);
        }
        spec
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Balancing stops with "no improving move" only when an exhaustive search over every
    /// single compatible, rule-abiding move finds none that lowers the imbalance.
    #[test]
    fn balancing_stops_only_when_no_single_move_improves(spec in arb_balance_case()) {
        let Ok(c) = Cluster::new(spec) else { return Ok(()) };
        let plan = balance(&c);
        let mut host_of: Vec<Option<usize>> = c.vms.iter().map(|v| v.host).collect();
        for r in &plan.recommendations {
            host_of[c.vm_index(&r.vm).unwrap()] = Some(c.host_index(&r.to).unwrap());
        }
        if plan.stop != vinfra_drs::StopReason::NoImprovingMove {
            return Ok(());
        }
        let ent = entitlements(&c).vms;
        let now = imbalance_of(&c, &ent, &host_of);
        prop_assert!((now - plan.imbalance_after).abs() < 1e-9);
        for v in 0..c.vms.len() {
            let Some(s) = host_of[v] else { continue };
            if !c.hosts[s].usable() {
                continue;
            }
            for d in 0..c.hosts.len() {
                if !single_move_allowed(&c, &host_of, v, d) {
                    continue;
                }
                host_of[v] = Some(d);
                let after = imbalance_of(&c, &ent, &host_of);
                host_of[v] = Some(s);
                prop_assert!(
                    after >= now - 1e-9,
                    "stopped at {now} but moving {} {} -> {} gives {after}",
                    c.vms[v].id, c.hosts[s].id, c.hosts[d].id
                );
            }
        }
    }
}
