//! The README's JSON example stays valid.
#![allow(clippy::unwrap_used)]

use vinfra_drs::{balance, evacuate, place, Cluster};

#[test]
fn the_readme_json_example_is_a_valid_cluster() {
    let readme = include_str!("../README.md");
    let start = readme.find("```json\n").unwrap() + "```json\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let c = Cluster::from_json(&readme[start..end]).unwrap();
    assert_eq!(c.hosts.len(), 2);
    let plan = balance(&c);
    assert!(plan.imbalance_after <= plan.imbalance_before);
    let p = place(&c, &["web-2"]).unwrap();
    assert!(p.unplaced.is_empty());
    // Two hosts and two domain controllers kept apart: esx-2 cannot be emptied, and the
    // plan says why.
    let e = evacuate(&c, "esx-2").unwrap();
    assert!(!e.complete());
    assert_eq!(e.blocked[0].vm, "dc-2");
    assert!(e.blocked[0].rejected[0]
        .why
        .to_string()
        .contains("dcs-apart"));
}

/// The README's migration-threshold table is what `target_for_threshold` computes.
#[test]
fn the_readme_threshold_table_matches_the_published_formula() {
    let readme = include_str!("../README.md");
    let header = "| threshold | applies priorities | target | N = 4 |";
    let start = readme.find(header).unwrap();
    let hosts: Vec<usize> = readme[start..]
        .lines()
        .next()
        .unwrap()
        .split('|')
        .filter_map(|c| c.trim().strip_prefix("N = "))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(hosts, [4, 8, 16, 32, 64, 96]);
    let rows: Vec<&str> = readme[start..].lines().skip(2).take(5).collect();
    for (t, row) in (1u8..=5).zip(rows) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(cells[1].starts_with(&t.to_string()), "{row}");
        for (n, cell) in hosts.iter().zip(&cells[4..10]) {
            let want = vinfra_drs::target_for_threshold(t, *n);
            if *cell == "∞" {
                assert!(want.is_infinite(), "threshold {t}, {n} hosts");
            } else {
                let got: f64 = cell.parse().unwrap();
                assert!(
                    (got - want).abs() < 5e-5,
                    "threshold {t}, {n} hosts: {got} vs {want}"
                );
            }
        }
    }
    // Priorities as published: 6 − ceil(I / 0.1 × sqrt(N)), clamped to 2..=5.
    for (imbalance, n, p) in [
        (0.025, 16, 5),
        (0.026, 16, 4),
        (0.05, 16, 4),
        (0.051, 16, 3),
        (0.075, 16, 3),
        (0.076, 16, 2),
        (0.5, 96, 2),
        (0.0, 96, 5),
        (0.09, 1, 5),
        (0.11, 1, 4),
    ] {
        assert_eq!(
            vinfra_drs::priority_for_imbalance(imbalance, n),
            p,
            "{imbalance} over {n}"
        );
    }
    // A threshold's target is where its priorities stop applying.
    for t in 2u8..=4 {
        for n in [2, 7, 32, 96] {
            let target = vinfra_drs::target_for_threshold(t, n);
            assert!(vinfra_drs::priority_for_imbalance(target * 1.001, n) <= t);
            assert!(vinfra_drs::priority_for_imbalance(target * 0.999, n) > t);
        }
    }
}
