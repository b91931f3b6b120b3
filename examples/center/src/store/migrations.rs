//! The schema, as versioned steps: step `i` takes a database from version `i` to `i + 1`
//! (`PRAGMA user_version`). Steps are only ever appended.

use rusqlite::Connection;

use super::{Result, StoreError};
use crate::model::{ClusterSettings, DEFAULT_CLUSTER, DEFAULT_DATACENTER};

/// The schema this binary writes.
pub const SCHEMA_VERSION: i64 = STEPS.len() as i64;

const STEPS: [&str; 5] = [
    // 1: the first inventory.
    "CREATE TABLE datacenter (name TEXT PRIMARY KEY) STRICT;
    CREATE TABLE cluster (
        name TEXT PRIMARY KEY,
        datacenter TEXT NOT NULL REFERENCES datacenter(name),
        settings TEXT NOT NULL
    ) STRICT;
    CREATE TABLE host (
        name TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        state TEXT NOT NULL,
        report TEXT,
        event_cursor INTEGER NOT NULL DEFAULT 0,
        seen_ms INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE TABLE resource_pool (
        name TEXT PRIMARY KEY,
        cluster TEXT NOT NULL REFERENCES cluster(name),
        shares INTEGER NOT NULL,
        reservation_mib INTEGER NOT NULL,
        limit_mib INTEGER
    ) STRICT;
    CREATE TABLE vm (
        name TEXT PRIMARY KEY,
        info TEXT NOT NULL,
        host TEXT,
        resource_pool TEXT REFERENCES resource_pool(name) ON DELETE SET NULL,
        seen_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE network (name TEXT PRIMARY KEY, vlan INTEGER NOT NULL) STRICT;
    CREATE TABLE rule (
        name TEXT PRIMARY KEY,
        cluster TEXT NOT NULL REFERENCES cluster(name),
        definition TEXT NOT NULL
    ) STRICT;
    CREATE TABLE user (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL
    ) STRICT;
    CREATE TABLE session (
        token_hash TEXT PRIMARY KEY,
        user TEXT NOT NULL REFERENCES user(name) ON DELETE CASCADE,
        expires_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE task (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        user TEXT NOT NULL,
        state TEXT NOT NULL,
        progress REAL NOT NULL,
        message TEXT NOT NULL,
        result TEXT,
        error TEXT,
        host TEXT,
        host_task INTEGER,
        started_ms INTEGER NOT NULL,
        ended_ms INTEGER
    ) STRICT;
    CREATE TABLE event (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ms INTEGER NOT NULL,
        severity TEXT NOT NULL,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        user TEXT,
        host TEXT,
        message TEXT NOT NULL,
        data TEXT NOT NULL
    ) STRICT;
    CREATE TABLE stat (
        entity TEXT NOT NULL,
        level INTEGER NOT NULL,
        time_ms INTEGER NOT NULL,
        cpu_percent REAL NOT NULL,
        memory_mib REAL NOT NULL,
        disk_bytes REAL NOT NULL,
        net_bytes REAL NOT NULL,
        PRIMARY KEY (entity, level, time_ms)
    ) STRICT, WITHOUT ROWID;",
    // 2: what one VM's or host's page asks for.
    "CREATE INDEX event_target ON event (target, id);
    CREATE INDEX task_target ON task (target, id);",
    // 3: resource pools as a tree with both resources (the first table's `shares`,
    // `reservation_mib` and `limit_mib` are memory's); rules keep their JSON definition.
    "ALTER TABLE resource_pool ADD COLUMN parent TEXT REFERENCES resource_pool(name);
    ALTER TABLE resource_pool ADD COLUMN cpu_shares INTEGER NOT NULL DEFAULT 1000;
    ALTER TABLE resource_pool ADD COLUMN cpu_reservation_mhz INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE resource_pool ADD COLUMN cpu_limit_mhz INTEGER;
    ALTER TABLE resource_pool ADD COLUMN cpu_expandable INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE resource_pool ADD COLUMN memory_expandable INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX vm_resource_pool ON vm (resource_pool);",
    // 4: backup jobs (their runs are center tasks; `last_result` is JSON).
    "CREATE TABLE backup_job (
        name TEXT PRIMARY KEY,
        vms TEXT NOT NULL,
        repository TEXT NOT NULL,
        schedule TEXT NOT NULL,
        keep_last INTEGER NOT NULL,
        incremental INTEGER NOT NULL,
        enabled INTEGER NOT NULL,
        last_run_ms INTEGER,
        next_run_ms INTEGER,
        last_result TEXT
    ) STRICT;",
    // 5: which disks a backup job takes (a JSON array of indexes; empty: all).
    "ALTER TABLE backup_job ADD COLUMN disks TEXT NOT NULL DEFAULT '[]';",
];

/// Brings the database to [`SCHEMA_VERSION`]: each missing step in a transaction of its
/// own (with the new version number); a database newer than this binary is refused
/// untouched.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, step) in STEPS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        if i == 0 {
            seed(&tx)?;
        }
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// The default datacentre and cluster.
fn seed(conn: &Connection) -> Result<()> {
    let settings =
        serde_json::to_string(&ClusterSettings::default()).map_err(|source| StoreError::Json {
            column: "cluster.settings",
            source,
        })?;
    conn.execute(
        "INSERT INTO datacenter (name) VALUES (?1)",
        [DEFAULT_DATACENTER],
    )?;
    conn.execute(
        "INSERT INTO cluster (name, datacenter, settings) VALUES (?1, ?2, ?3)",
        [DEFAULT_CLUSTER, DEFAULT_DATACENTER, &settings],
    )?;
    Ok(())
}
