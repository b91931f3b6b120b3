//! Quality checks on the generated benchmark families (small sizes, fast).
#![allow(clippy::unwrap_used)]

use vinfra_drs::{balance, first_fit_decreasing, generate, pack, Cluster, PackOptions};

#[test]
fn packing_finds_the_known_optimum_on_small_triplet_instances() {
    let mut optimal = 0;
    for seed in 0..20 {
        let inst = generate::triplets(seed, 60, 10);
        let c = Cluster::new(inst.spec).unwrap();
        let p = pack(&c, &PackOptions::default());
        assert!(p.unplaced.is_empty(), "seed {seed}");
        let opt = inst.optimum_hosts.unwrap();
        assert!(p.hosts_used >= opt);
        optimal += usize::from(p.hosts_used == opt);
    }
    assert_eq!(optimal, 20);
}

#[test]
fn packing_beats_ffd_on_triplets() {
    let inst = generate::triplets(1, 249, 40);
    let c = Cluster::new(inst.spec).unwrap();
    let ours = pack(&c, &PackOptions::default());
    let ffd = first_fit_decreasing(&c);
    eprintln!(
        "ours {} ffd {} opt {:?}",
        ours.hosts_used, ffd.hosts_used, inst.optimum_hosts
    );
    assert_eq!(Some(ours.hosts_used), inst.optimum_hosts);
    assert!(ffd.hosts_used > ours.hosts_used);
}

#[test]
fn rule_heavy_instances_are_packed_where_ffd_fails() {
    for seed in 0..5 {
        let inst = generate::rule_heavy(seed, 120);
        let c = Cluster::new(inst.spec).unwrap();
        let ours = pack(&c, &PackOptions::default());
        let ffd = first_fit_decreasing(&c);
        assert!(ours.unplaced.is_empty(), "seed {seed}: {:?}", ours.unplaced);
        assert!(
            !ffd.unplaced.is_empty(),
            "seed {seed}: ffd placed everything"
        );
        check_rules(&c, &ours.assignment);
    }
}

fn check_rules(c: &Cluster, assignment: &[(String, String)]) {
    let host_of = |vm: &str| {
        assignment
            .iter()
            .find(|(v, _)| v == vm)
            .map(|(_, h)| h.clone())
            .unwrap()
    };
    for r in &c.anti_rules {
        let mut hs: Vec<String> = r.vms.iter().map(|&v| host_of(&c.vms[v].id)).collect();
        hs.sort();
        hs.dedup();
        assert_eq!(hs.len(), r.vms.len(), "anti-affinity {} broken", r.id);
    }
    for g in &c.groups {
        let hs: Vec<String> = g.vms.iter().map(|&v| host_of(&c.vms[v].id)).collect();
        assert!(
            hs.windows(2).all(|w| w[0] == w[1]),
            "affinity {:?} broken",
            g.rules
        );
    }
    for (vm, h) in assignment {
        let v = c.vm_index(vm).unwrap();
        assert!(
            c.vms[v].allows(c.host_index(h).unwrap()),
            "{vm} on forbidden {h}"
        );
    }
}

#[test]
fn balancing_undoes_a_perturbation_with_no_more_moves_than_it_made() {
    for seed in 0..3 {
        let inst = generate::perturbed(seed, 16, 800, 60);
        let mut spec = inst.spec;
        spec.settings.migration_threshold = 4;
        let c = Cluster::new(spec).unwrap();
        let p = balance(&c);
        let made = inst.perturbation_moves.unwrap();
        assert!(
            p.imbalance_after <= p.target,
            "seed {seed}: {} > {}",
            p.imbalance_after,
            p.target
        );
        assert!(
            p.recommendations.len() <= made,
            "seed {seed}: {} moves > {made}",
            p.recommendations.len()
        );
    }
}

/// Within 2 % of the optimum, rounded up to whole hosts.
fn within_2_percent(hosts: usize, optimum: usize) -> bool {
    hosts * 100 <= optimum * 102 + 99
}

/// Issue 12's perturbed packing: the exact-fill instances with every VM a little
/// smaller (same optimum) defeated exact completion (+3.6 % and +7.2 % hosts at 249 and
/// 501 VMs); the 5-VM exact fills too.
#[test]
fn packing_holds_up_when_no_host_is_filled_exactly() {
    for (seed, vms) in [(0, 249), (1, 249), (2, 501)] {
        for (name, inst) in [
            ("shrunk", generate::shrunk_triplets(seed, vms, 10)),
            ("scaled", generate::scaled_triplets(seed, vms, 10)),
            ("quintuplets", generate::quintuplets(seed, vms, 10)),
        ] {
            let opt = inst.optimum_hosts.unwrap();
            let c = Cluster::new(inst.spec).unwrap();
            let p = pack(&c, &PackOptions::default());
            assert!(p.unplaced.is_empty(), "{name} {vms} seed {seed}");
            assert!(
                within_2_percent(p.hosts_used, opt),
                "{name} {vms} seed {seed}: {} hosts, optimum {opt}",
                p.hosts_used
            );
            check_rules(&c, &p.assignment);
        }
    }
}

/// `pack` places every VM of `inst` on exactly its known optimum of hosts, under its rules.
fn packs_to_the_optimum(family: &str, seed: u64, inst: generate::Instance) {
    let opt = inst.optimum_hosts.unwrap();
    let vms = inst.spec.vms.len();
    let c = Cluster::new(inst.spec).unwrap();
    let p = pack(&c, &PackOptions::default());
    assert!(p.unplaced.is_empty(), "{family} {vms} vms seed {seed}");
    assert_eq!(p.hosts_used, opt, "{family} {vms} vms seed {seed}");
    check_rules(&c, &p.assignment);
}

/// 5-VM exact fills below 300 VMs, where one host too many is already more than 2 %
/// (50 for 49 at 245 VMs, 13 for 12 at 60): the optimum itself, found by completing
/// bins with four more items through the pair index.
#[test]
fn small_five_vm_fills_are_packed_optimally() {
    for seed in 0..3 {
        for vms in [60, 120, 245] {
            packs_to_the_optimum("quintuplets", seed, generate::quintuplets(seed, vms, 5));
        }
    }
}

/// Near-full fills up to 120 VMs (every VM a little smaller, or scaled by its own factor
/// in [0.97, 1]): the optimum, where one host too many is 5 % (21 for 20 at 60 VMs, what
/// the item-by-item search left before bin completion).
#[test]
fn small_near_full_fills_are_packed_optimally() {
    for seed in 0..4 {
        for vms in [60, 120] {
            packs_to_the_optimum("shrunk", seed, generate::shrunk_triplets(seed, vms, 5));
            packs_to_the_optimum("scaled", seed, generate::scaled_triplets(seed, vms, 5));
        }
    }
}

/// Whatever the sizes, never more hosts than first-fit-decreasing.
#[test]
fn packing_never_uses_more_hosts_than_ffd() {
    for seed in 0..2 {
        for vms in [60, 120] {
            for inst in [
                generate::random_2d(seed, vms, 5, 25),
                generate::random_2d(seed, vms, 10, 60),
                generate::random_2d(seed, vms, 25, 50),
                generate::heterogeneous(seed, vms, 5),
                generate::shrunk_triplets(seed, vms, 5),
            ] {
                let c = Cluster::new(inst.spec).unwrap();
                let ours = pack(&c, &PackOptions::default());
                let ffd = first_fit_decreasing(&c);
                assert!(ours.unplaced.is_empty());
                assert!(
                    ours.hosts_used <= ffd.hosts_used,
                    "seed {seed}, {vms} vms: ours {} > ffd {}",
                    ours.hosts_used,
                    ffd.hosts_used
                );
                assert!(ours.hosts_used >= ours.lower_bound);
            }
        }
    }
}

/// Issue 12's compatibility-group stall: the most loaded hosts (one group) and the least
/// loaded (the other) are never compatible; the pass still undoes the perturbation down
/// to the best reachable imbalance, with no more migrations than it made.
#[test]
fn balancing_reaches_the_witness_across_compatibility_groups() {
    for seed in 0..3 {
        let inst = generate::perturbed_groups(seed, 20, 800, 60);
        let witness = inst.witness_imbalance.unwrap();
        let made = inst.perturbation_moves.unwrap();
        let c = Cluster::new(inst.spec).unwrap();
        let p = balance(&c);
        assert!(
            p.imbalance_after <= witness + 0.002,
            "seed {seed}: {} vs witness {witness}",
            p.imbalance_after
        );
        assert!(p.recommendations.len() <= made, "seed {seed}");
        assert!(p.recommendations.iter().all(|r| r.priority > 1));
    }
}
