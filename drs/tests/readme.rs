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
