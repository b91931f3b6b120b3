use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::model::{Severity, TaskState, STAT_LEVELS};

fn user(name: &str) -> User {
    User {
        name: name.into(),
        role: Role::Operator,
        password_hash: "$argon2id$x".into(),
    }
}

fn event(kind: &str) -> NewEvent {
    NewEvent {
        time_ms: 5,
        severity: Severity::Info,
        kind: kind.into(),
        target: "vm-1".into(),
        user: Some("admin".into()),
        host: None,
        message: "m".into(),
        data: serde_json::json!({"k": 1}),
    }
}

#[test]
fn a_fresh_database_has_the_default_tree_and_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
    assert_eq!(store.datacenters().unwrap()[0].name, "dc-1");
    let clusters = store.clusters().unwrap();
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0].settings, ClusterSettings::default());
    let conn = rusqlite::Connection::open(dir.path().join("c.db")).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn reopening_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.add_user(&user("ann")).unwrap();
        store.add_host("esx-1", "http://127.0.0.1:1").unwrap();
        store.add_event(&event("a")).unwrap();
        let mut settings = ClusterSettings::default();
        settings.drs.threshold = 5;
        assert!(store.set_cluster_settings("cluster-1", &settings).unwrap());
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.user("ann").unwrap().unwrap(), user("ann"));
    assert_eq!(store.hosts().unwrap()[0].state, HostState::NotResponding);
    assert_eq!(store.events_after(0, 10).unwrap()[0].event, event("a"));
    assert_eq!(store.clusters().unwrap()[0].settings.drs.threshold, 5);
    assert_eq!(store.datacenters().unwrap().len(), 1, "the seed runs once");
}

#[test]
fn a_newer_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    match SqliteStore::open(&path) {
        Err(StoreError::TooNew { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("{other:?}"),
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION + 1);
}

#[test]
fn duplicates_are_refused_and_foreign_keys_hold() {
    let store = SqliteStore::in_memory().unwrap();
    store.add_user(&user("ann")).unwrap();
    assert!(matches!(
        store.add_user(&user("ann")),
        Err(StoreError::Exists(_))
    ));
    store.add_host("esx-1", "a").unwrap();
    assert!(matches!(
        store.add_host("esx-1", "b"),
        Err(StoreError::Exists(_))
    ));
    // A session of a user who does not exist.
    assert!(store.add_session("h", "nobody", 10).is_err());
    store.add_session("h", "ann", 10).unwrap();
    assert_eq!(store.session("h").unwrap(), Some(("ann".into(), 10)));
    assert_eq!(store.expire_sessions(9).unwrap(), 0);
    assert_eq!(store.expire_sessions(10).unwrap(), 1);
    assert_eq!(store.session("h").unwrap(), None);
}

#[test]
fn tasks_and_host_events_round_trip() {
    let store = SqliteStore::in_memory().unwrap();
    let task = store
        .add_task(&Task {
            id: 0,
            kind: "vm.start".into(),
            target: "vm-1".into(),
            user: "admin".into(),
            state: TaskState::Running,
            progress: 0.0,
            message: String::new(),
            result: None,
            error: None,
            host: Some("esx-1".into()),
            host_task: None,
            started_ms: 1,
            ended_ms: None,
        })
        .unwrap();
    assert!(task.id > 0);
    store
        .update_task(
            task.id,
            &TaskUpdate {
                state: TaskState::Succeeded,
                progress: 1.0,
                message: "done".into(),
                result: Some(serde_json::json!({"ok": true})),
                error: None,
                host_task: Some(7),
                ended_ms: Some(9),
            },
        )
        .unwrap();
    let got = store.task(task.id).unwrap().unwrap();
    assert_eq!(got.state, TaskState::Succeeded);
    assert_eq!(got.host_task, Some(7));
    assert_eq!(store.tasks(10).unwrap().len(), 1);

    store.add_host("esx-1", "a").unwrap();
    let recorded = store
        .host_events("esx-1", 42, &[event("x"), event("y")])
        .unwrap();
    assert_eq!(recorded.len(), 2);
    assert_eq!(store.host("esx-1").unwrap().unwrap().event_cursor, 42);
    assert_eq!(store.events_of("vm-1", 0, 10).unwrap().len(), 2);
    assert!(store.events_of("vm-2", 0, 10).unwrap().is_empty());
    assert_eq!(store.tasks_of("vm-1", 10).unwrap().len(), 1);
    assert!(store.tasks_of("vm-2", 10).unwrap().is_empty());
    store.delete_task(task.id).unwrap();
    assert!(store.task(task.id).unwrap().is_none());
    assert!(store.tasks_of("vm-1", 10).unwrap().is_empty());
    let after = store.events_after(recorded[0].id, 10).unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].event.kind, "y");
}

/// What the roll-ups should hold, computed from every sample ever added.
fn model(samples: &[(u64, f64)], now_ms: u64) -> Vec<BTreeMap<u64, f64>> {
    let mut levels: Vec<BTreeMap<u64, f64>> = vec![samples.iter().copied().collect()];
    for pair in STAT_LEVELS.windows(2) {
        let (from, to) = (pair[0], pair[1]);
        let closed = now_ms - now_ms % to.period_ms;
        let mut groups: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        for (&t, &v) in &levels[usize::from(from.level)] {
            if t < closed {
                groups.entry(t - t % to.period_ms).or_default().push(v);
            }
        }
        levels.push(
            groups
                .into_iter()
                .map(|(t, vs)| (t, vs.iter().sum::<f64>() / vs.len() as f64))
                .collect(),
        );
    }
    for (level, rows) in STAT_LEVELS.iter().zip(levels.iter_mut()) {
        rows.retain(|&t, _| t >= now_ms.saturating_sub(level.retention_ms));
    }
    levels
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Samples arrive in time order (20 s apart, with gaps of up to a day) and roll-ups
    /// run now and then; what the store holds at the end is what the model computes from
    /// all the samples (a roll-up rolls every closed period before it deletes anything,
    /// so how seldom it runs does not matter).
    #[test]
    fn roll_ups_match_the_model(
        steps in proptest::collection::vec((0u64..6, 0.0f64..400.0, any::<bool>()), 1..300),
    ) {
        let store = SqliteStore::in_memory().unwrap();
        let mut now_ms = 1_000_000_000_000u64;
        let mut all = Vec::new();
        for (gap, cpu, roll) in steps {
            // Mostly 20 s apart, sometimes minutes or hours later.
            let advance = match gap { 0..=2 => 20_000, 3 => 5 * 60_000, 4 => 40 * 60_000, _ => 3_600_000 };
            now_ms += advance;
            let t = now_ms - now_ms % 20_000;
            store.add_samples(&[StatSample {
                entity: "vm/a".into(), level: 0, time_ms: t, cpu_percent: cpu,
                memory_mib: 1.0, disk_bytes: 2.0, net_bytes: 3.0,
            }]).unwrap();
            all.push((t, cpu));
            if roll {
                store.roll_up(now_ms).unwrap();
            }
        }
        store.roll_up(now_ms).unwrap();
        let expected = model(&all, now_ms);
        for level in STAT_LEVELS {
            let got = store.samples("vm/a", level.level, 0).unwrap();
            let want = &expected[usize::from(level.level)];
            prop_assert_eq!(got.len(), want.len(), "level {}", level.level);
            for (g, (&t, &v)) in got.iter().zip(want) {
                prop_assert_eq!(g.time_ms, t);
                prop_assert!((g.cpu_percent - v).abs() < 1e-6, "level {} at {}: {} vs {}", level.level, t, g.cpu_percent, v);
                prop_assert!((g.memory_mib - 1.0).abs() < 1e-9);
            }
        }
    }
}

fn vm(name: &str, seen_ms: u64, host: Option<&str>) -> Vm {
    Vm {
        name: name.into(),
        info: vinfra_host::api::VmInfo::new(
            vinfra_host::api::VmSpec::new(name, "/k", 16),
            vinfra_host::api::PowerState::ShutOff,
        ),
        host: host.map(str::to_string),
        resource_pool: None,
        seen_ms,
    }
}

#[test]
fn a_vm_list_older_than_a_row_does_not_undo_it() {
    let store = SqliteStore::in_memory().unwrap();
    store.sync_vms(&[vm("a", 10, None)], 10).unwrap();
    // Created at 20 through the API; a host's list asked for at 15 does not know it.
    store.put_vm(&vm("b", 20, None)).unwrap();
    store.sync_vms(&[vm("a", 15, Some("esx-1"))], 15).unwrap();
    let names: Vec<String> = store.vms().unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["a", "b"]);
    // Read back at 30 on esx-2; a list asked for at 25 says esx-1: the newer row stays.
    store.put_vm(&vm("a", 30, Some("esx-2"))).unwrap();
    store
        .sync_vms(&[vm("a", 25, Some("esx-1")), vm("b", 25, None)], 25)
        .unwrap();
    assert_eq!(
        store.vm("a").unwrap().unwrap().host.as_deref(),
        Some("esx-2")
    );
    // A later list wins, and removes what it does not name.
    store.sync_vms(&[vm("a", 40, Some("esx-1"))], 40).unwrap();
    assert_eq!(
        store.vm("a").unwrap().unwrap().host.as_deref(),
        Some("esx-1")
    );
    assert!(store.vm("b").unwrap().is_none());
}

#[test]
fn an_older_database_is_migrated_keeping_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.add_user(&user("ann")).unwrap();
    }
    // Back to version 1: the second step's indexes, the third step's columns and the
    // fourth's table undone (the pool table is empty; foreign keys are off on this
    // connection).
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP INDEX event_target; DROP INDEX task_target; DROP INDEX vm_resource_pool;
         DROP TABLE backup_job;
         DROP TABLE resource_pool;
         CREATE TABLE resource_pool (
            name TEXT PRIMARY KEY,
            cluster TEXT NOT NULL REFERENCES cluster(name),
            shares INTEGER NOT NULL,
            reservation_mib INTEGER NOT NULL,
            limit_mib INTEGER
         ) STRICT;
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.user("ann").unwrap().is_some());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let indexes: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name IN ('event_target', 'task_target')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 2);
}

fn backup_job(name: &str) -> crate::model::BackupJob {
    crate::model::BackupJob {
        name: name.into(),
        vms: vec!["web-1".into(), "db-1".into()],
        repository: "/backups/main".into(),
        schedule: "every 6h".into(),
        keep_last: 3,
        incremental: true,
        disks: vec![0],
        enabled: true,
        last_run_ms: None,
        next_run_ms: Some(21_600_000),
        last_result: None,
    }
}

#[test]
fn backup_jobs_round_trip_and_keep_their_runs_apart_from_their_definition() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.backup_jobs().unwrap().is_empty());
    store.add_backup_job(&backup_job("nightly")).unwrap();
    store.add_backup_job(&backup_job("hourly")).unwrap();
    assert!(matches!(
        store.add_backup_job(&backup_job("nightly")),
        Err(StoreError::Exists(_))
    ));
    let names: Vec<_> = store
        .backup_jobs()
        .unwrap()
        .into_iter()
        .map(|j| j.name)
        .collect();
    assert_eq!(names, ["hourly", "nightly"]);
    assert_eq!(
        store.backup_job("nightly").unwrap().unwrap(),
        backup_job("nightly")
    );
    assert!(store.backup_job("none").unwrap().is_none());

    // A run: the next slot first, then the outcome.
    let running = crate::model::BackupJobResult {
        state: TaskState::Running,
        message: "started".into(),
        tasks: vec![7, 8],
        ended_ms: None,
    };
    assert!(store
        .record_backup_run("nightly", Some(100), Some(43_200_000), &running)
        .unwrap());
    assert!(!store
        .record_backup_run("none", Some(100), None, &running)
        .unwrap());
    // A definition change keeps the run.
    let mut changed = backup_job("nightly");
    changed.vms = vec!["web-1".into()];
    changed.keep_last = 5;
    changed.enabled = false;
    changed.disks = vec![1, 2];
    changed.next_run_ms = None;
    assert!(store.update_backup_job(&changed).unwrap());
    assert!(!store.update_backup_job(&backup_job("none")).unwrap());
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    let job = store.backup_job("nightly").unwrap().unwrap();
    assert_eq!(job.vms, ["web-1"]);
    assert_eq!((job.keep_last, job.enabled), (5, false));
    assert_eq!(job.disks, [1, 2]);
    assert_eq!(job.last_run_ms, Some(100));
    assert_eq!(job.next_run_ms, None);
    assert_eq!(job.last_result, Some(running));
    assert!(store.delete_backup_job("nightly").unwrap());
    assert!(!store.delete_backup_job("nightly").unwrap());
    assert_eq!(store.backup_jobs().unwrap().len(), 1);
}
