//! Resource pools and rules in the store.

use super::*;
use crate::model::{PoolAllocation, RuleDefinition, RuleKind};

fn pool(name: &str, parent: Option<&str>) -> ResourcePool {
    ResourcePool {
        name: name.into(),
        cluster: "cluster-1".into(),
        parent: parent.map(str::to_string),
        cpu_allocation: PoolAllocation {
            reservation: 500,
            limit: Some(2000),
            shares: 2000,
            expandable_reservation: false,
        },
        memory_allocation: PoolAllocation::default(),
    }
}

fn vm(name: &str) -> Vm {
    Vm {
        name: name.into(),
        info: vinfra_host::api::VmInfo::new(
            vinfra_host::api::VmSpec::new(name, "/k", 16),
            vinfra_host::api::PowerState::ShutOff,
        ),
        host: None,
        resource_pool: None,
        seen_ms: 1,
    }
}

#[test]
fn pools_round_trip_and_deleting_one_moves_its_children_to_its_parent() {
    let store = SqliteStore::in_memory().unwrap();
    store.add_resource_pool(&pool("prod", None)).unwrap();
    store.add_resource_pool(&pool("web", Some("prod"))).unwrap();
    assert!(matches!(
        store.add_resource_pool(&pool("web", None)),
        Err(StoreError::Exists(_))
    ));
    // A parent that does not exist, a cluster that does not exist.
    assert!(store.add_resource_pool(&pool("x", Some("none"))).is_err());
    let mut other = pool("y", None);
    other.cluster = "nowhere".into();
    assert!(store.add_resource_pool(&other).is_err());
    assert_eq!(
        store.resource_pool("web").unwrap().unwrap(),
        pool("web", Some("prod"))
    );

    let mut changed = pool("web", None);
    changed.memory_allocation.reservation = 64;
    changed.memory_allocation.limit = Some(128);
    assert!(store.update_resource_pool(&changed).unwrap());
    assert_eq!(store.resource_pool("web").unwrap().unwrap(), changed);
    assert!(!store.update_resource_pool(&pool("none", None)).unwrap());
    store
        .update_resource_pool(&pool("web", Some("prod")))
        .unwrap();
    store.add_resource_pool(&pool("db", Some("web"))).unwrap();

    store.put_vm(&vm("a")).unwrap();
    store.put_vm(&vm("b")).unwrap();
    assert!(store
        .set_vm_pool(&["a".into(), "b".into()], Some("web"))
        .unwrap());
    // All or none: an unknown VM changes nothing.
    assert!(!store.set_vm_pool(&["a".into(), "zz".into()], None).unwrap());
    assert_eq!(
        store.vm("a").unwrap().unwrap().resource_pool.as_deref(),
        Some("web")
    );
    // A host's report keeps the center's column.
    store.sync_vms(&[vm("a"), vm("b")], 5).unwrap();
    assert_eq!(
        store.vm("b").unwrap().unwrap().resource_pool.as_deref(),
        Some("web")
    );

    assert!(store.delete_resource_pool("web").unwrap());
    assert!(!store.delete_resource_pool("web").unwrap());
    assert_eq!(
        store.vm("a").unwrap().unwrap().resource_pool.as_deref(),
        Some("prod")
    );
    assert_eq!(
        store
            .resource_pool("db")
            .unwrap()
            .unwrap()
            .parent
            .as_deref(),
        Some("prod")
    );
    let names: Vec<String> = store
        .resource_pools()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["db", "prod"]);
    assert!(store.delete_resource_pool("prod").unwrap());
    assert_eq!(store.vm("b").unwrap().unwrap().resource_pool, None);
    assert_eq!(store.resource_pool("db").unwrap().unwrap().parent, None);
}

#[test]
fn rules_round_trip() {
    let store = SqliteStore::in_memory().unwrap();
    let rule = Rule {
        name: "apart".into(),
        cluster: "cluster-1".into(),
        definition: RuleDefinition {
            kind: RuleKind::AntiAffinity,
            enabled: true,
            vms: vec!["a".into(), "b".into()],
            hosts: Vec::new(),
            mode: None,
        },
    };
    store.add_rule(&rule).unwrap();
    assert!(matches!(store.add_rule(&rule), Err(StoreError::Exists(_))));
    assert_eq!(store.rule("apart").unwrap().unwrap(), rule);
    let mut off = rule.clone();
    off.definition.enabled = false;
    assert!(store.update_rule(&off).unwrap());
    assert_eq!(store.rules().unwrap(), [off]);
    assert!(store.delete_rule("apart").unwrap());
    assert!(!store.delete_rule("apart").unwrap());
    assert!(store.rule("apart").unwrap().is_none());
}
