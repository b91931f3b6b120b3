//! [`Store`] on SQLite: one connection behind a mutex (the center's load is a few
//! statements a second per host), WAL journal, foreign keys on.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row, ToSql};
use serde::de::DeserializeOwned;
use serde::Serialize;
use vinfra_host::api::{ErrorDetail, HostInfo};

use super::migrations::migrate;
use super::{Result, Store, StoreError, TaskUpdate};
use crate::model::{
    BackupJob, BackupJobResult, Cluster, ClusterSettings, Datacenter, Event, Host, HostState,
    NewEvent, Role, Severity, StatSample, Task, TaskState, User, Vm, STAT_LEVELS,
};
use crate::model::{ResourcePool, Rule};

/// Resource pools and rules (what only the center knows that DRS honours).
mod policy;

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (or makes) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        Self::setup(Connection::open(path)?)
    }

    /// A database in memory (tests).
    pub fn in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Self> {
        // WAL: readers do not wait for the writer, and a crash loses no committed write.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }
}

/// A `u64` column: SQLite integers are `i64`; times, ids and counters never reach 2^63.
#[derive(Debug, Clone, Copy)]
struct U64(u64);

impl ToSql for U64 {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        i64::try_from(self.0)
            .map(ToSqlOutput::from)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    }
}

impl FromSql for U64 {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let i = i64::column_result(value)?;
        u64::try_from(i)
            .map(U64)
            .map_err(|_| FromSqlError::OutOfRange(i))
    }
}

fn to_json<T: Serialize>(column: &'static str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|source| StoreError::Json { column, source })
}

fn from_json<T: DeserializeOwned>(column: &'static str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| StoreError::Json { column, source })
}

fn opt_json<T: DeserializeOwned>(column: &'static str, text: Option<String>) -> Result<Option<T>> {
    text.map(|t| from_json(column, &t)).transpose()
}

fn parsed<T>(column: &'static str, value: String, parse: fn(&str) -> Option<T>) -> Result<T> {
    parse(&value).ok_or(StoreError::Value { column, value })
}

/// Rows are read raw first (rusqlite's closures cannot return our errors), then decoded.
type RawHost = (String, String, String, Option<String>, U64, U64);

fn raw_host(r: &Row<'_>) -> rusqlite::Result<RawHost> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn host_of(raw: RawHost) -> Result<Host> {
    let (name, address, state, report, event_cursor, seen_ms) = raw;
    Ok(Host {
        name,
        address,
        state: parsed("host.state", state, HostState::parse)?,
        report: opt_json("host.report", report)?,
        event_cursor: event_cursor.0,
        seen_ms: seen_ms.0,
    })
}

const HOST_COLUMNS: &str = "name, address, state, report, event_cursor, seen_ms";

type RawVm = (String, String, Option<String>, Option<String>, U64);

fn raw_vm(r: &Row<'_>) -> rusqlite::Result<RawVm> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn vm_of(raw: RawVm) -> Result<Vm> {
    let (name, info, host, resource_pool, seen_ms) = raw;
    Ok(Vm {
        name,
        info: from_json("vm.info", &info)?,
        host,
        resource_pool,
        seen_ms: seen_ms.0,
    })
}

const VM_COLUMNS: &str = "name, info, host, resource_pool, seen_ms";

fn user_of(r: &Row<'_>) -> rusqlite::Result<(String, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

fn user_from(raw: (String, String, String)) -> Result<User> {
    Ok(User {
        name: raw.0,
        role: parsed("user.role", raw.1, Role::parse)?,
        password_hash: raw.2,
    })
}

const TASK_COLUMNS: &str = "id, kind, target, user, state, progress, message, result, error, \
                            host, host_task, started_ms, ended_ms";

#[allow(clippy::type_complexity, reason = "one row, read raw")]
type RawTask = (
    U64,
    String,
    String,
    String,
    String,
    f64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<U64>,
    U64,
    Option<U64>,
);

fn raw_task(r: &Row<'_>) -> rusqlite::Result<RawTask> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
    ))
}

fn task_of(raw: RawTask) -> Result<Task> {
    Ok(Task {
        id: raw.0 .0,
        kind: raw.1,
        target: raw.2,
        user: raw.3,
        state: parsed("task.state", raw.4, TaskState::parse)?,
        progress: raw.5,
        message: raw.6,
        result: opt_json("task.result", raw.7)?,
        error: opt_json::<ErrorDetail>("task.error", raw.8)?,
        host: raw.9,
        host_task: raw.10.map(|v| v.0),
        started_ms: raw.11 .0,
        ended_ms: raw.12.map(|v| v.0),
    })
}

const EVENT_COLUMNS: &str = "id, time_ms, severity, kind, target, user, host, message, data";

#[allow(clippy::type_complexity, reason = "one row, read raw")]
type RawEvent = (
    U64,
    U64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
);

fn raw_event(r: &Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

fn event_of(raw: RawEvent) -> Result<Event> {
    Ok(Event {
        id: raw.0 .0,
        event: NewEvent {
            time_ms: raw.1 .0,
            severity: parsed("event.severity", raw.2, Severity::parse)?,
            kind: raw.3,
            target: raw.4,
            user: raw.5,
            host: raw.6,
            message: raw.7,
            data: from_json("event.data", &raw.8)?,
        },
    })
}

fn insert_event(conn: &Connection, e: &NewEvent) -> Result<Event> {
    conn.execute(
        "INSERT INTO event (time_ms, severity, kind, target, user, host, message, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            U64(e.time_ms),
            e.severity.as_str(),
            e.kind,
            e.target,
            e.user,
            e.host,
            e.message,
            to_json("event.data", &e.data)?
        ],
    )?;
    let id = u64::try_from(conn.last_insert_rowid()).unwrap_or(0);
    Ok(Event {
        id,
        event: e.clone(),
    })
}

const BACKUP_JOB_COLUMNS: &str = "name, vms, repository, schedule, keep_last, incremental, \
                                  enabled, last_run_ms, next_run_ms, last_result, disks";

#[allow(clippy::type_complexity, reason = "one row, read raw")]
type RawBackupJob = (
    String,
    String,
    String,
    String,
    u32,
    bool,
    bool,
    Option<U64>,
    Option<U64>,
    Option<String>,
    String,
);

fn raw_backup_job(r: &Row<'_>) -> rusqlite::Result<RawBackupJob> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

fn backup_job_of(raw: RawBackupJob) -> Result<BackupJob> {
    Ok(BackupJob {
        name: raw.0,
        vms: from_json("backup_job.vms", &raw.1)?,
        repository: raw.2,
        schedule: raw.3,
        keep_last: raw.4,
        incremental: raw.5,
        enabled: raw.6,
        last_run_ms: raw.7.map(|v| v.0),
        next_run_ms: raw.8.map(|v| v.0),
        last_result: opt_json::<BackupJobResult>("backup_job.last_result", raw.9)?,
        disks: from_json("backup_job.disks", &raw.10)?,
    })
}

fn collect<R, T>(
    rows: impl Iterator<Item = rusqlite::Result<R>>,
    decode: impl Fn(R) -> Result<T>,
) -> Result<Vec<T>> {
    rows.map(|r| decode(r?)).collect()
}

impl Store for SqliteStore {
    fn datacenters(&self) -> Result<Vec<Datacenter>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT name FROM datacenter ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        collect(rows, |name| Ok(Datacenter { name }))
    }

    fn clusters(&self) -> Result<Vec<Cluster>> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT name, datacenter, settings FROM cluster ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        collect(rows, |(name, datacenter, settings)| {
            Ok(Cluster {
                name,
                datacenter,
                settings: from_json::<ClusterSettings>("cluster.settings", &settings)?,
            })
        })
    }

    fn set_cluster_settings(&self, cluster: &str, settings: &ClusterSettings) -> Result<bool> {
        let text = to_json("cluster.settings", settings)?;
        let n = self.conn()?.execute(
            "UPDATE cluster SET settings = ?2 WHERE name = ?1",
            params![cluster, text],
        )?;
        Ok(n == 1)
    }

    fn hosts(&self) -> Result<Vec<Host>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!("SELECT {HOST_COLUMNS} FROM host ORDER BY name"))?;
        let rows = stmt.query_map([], raw_host)?;
        collect(rows, host_of)
    }

    fn host(&self, name: &str) -> Result<Option<Host>> {
        let raw = self
            .conn()?
            .query_row(
                &format!("SELECT {HOST_COLUMNS} FROM host WHERE name = ?1"),
                [name],
                raw_host,
            )
            .optional()?;
        raw.map(host_of).transpose()
    }

    fn add_host(&self, name: &str, address: &str) -> Result<()> {
        let n = self.conn()?.execute(
            "INSERT INTO host (name, address, state) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![name, address, HostState::NotResponding.as_str()],
        )?;
        if n == 0 {
            return Err(StoreError::Exists(format!("host {name}")));
        }
        Ok(())
    }

    fn delete_host(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn()?
            .execute("DELETE FROM host WHERE name = ?1", [name])?
            == 1)
    }

    fn host_seen(
        &self,
        name: &str,
        state: HostState,
        report: &HostInfo,
        now_ms: u64,
    ) -> Result<()> {
        self.conn()?.execute(
            "UPDATE host SET state = ?2, report = ?3, seen_ms = ?4 WHERE name = ?1",
            params![
                name,
                state.as_str(),
                to_json("host.report", report)?,
                U64(now_ms)
            ],
        )?;
        Ok(())
    }

    fn set_host_state(&self, name: &str, state: HostState) -> Result<()> {
        self.conn()?.execute(
            "UPDATE host SET state = ?2 WHERE name = ?1",
            params![name, state.as_str()],
        )?;
        Ok(())
    }

    fn host_events(&self, host: &str, cursor: u64, events: &[NewEvent]) -> Result<Vec<Event>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let recorded = events
            .iter()
            .map(|e| insert_event(&tx, e))
            .collect::<Result<Vec<_>>>()?;
        tx.execute(
            "UPDATE host SET event_cursor = ?2 WHERE name = ?1",
            params![host, U64(cursor)],
        )?;
        tx.commit()?;
        Ok(recorded)
    }

    fn vms(&self) -> Result<Vec<Vm>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!("SELECT {VM_COLUMNS} FROM vm ORDER BY name"))?;
        let rows = stmt.query_map([], raw_vm)?;
        collect(rows, vm_of)
    }

    fn vm(&self, name: &str) -> Result<Option<Vm>> {
        let raw = self
            .conn()?
            .query_row(
                &format!("SELECT {VM_COLUMNS} FROM vm WHERE name = ?1"),
                [name],
                raw_vm,
            )
            .optional()?;
        raw.map(vm_of).transpose()
    }

    fn sync_vms(&self, vms: &[Vm], asked_ms: u64) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.execute_batch("CREATE TEMP TABLE IF NOT EXISTS reported (name TEXT PRIMARY KEY); DELETE FROM reported;")?;
        for vm in vms {
            upsert_vm(&tx, vm)?;
            tx.execute(
                "INSERT OR IGNORE INTO reported (name) VALUES (?1)",
                [&vm.name],
            )?;
        }
        tx.execute(
            "DELETE FROM vm WHERE name NOT IN (SELECT name FROM reported) AND seen_ms < ?1",
            [U64(asked_ms)],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn put_vm(&self, vm: &Vm) -> Result<()> {
        upsert_vm(&*self.conn()?, vm)
    }

    fn delete_vm(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn()?
            .execute("DELETE FROM vm WHERE name = ?1", [name])?
            == 1)
    }

    fn resource_pools(&self) -> Result<Vec<ResourcePool>> {
        policy::resource_pools(&*self.conn()?)
    }

    fn resource_pool(&self, name: &str) -> Result<Option<ResourcePool>> {
        policy::resource_pool(&*self.conn()?, name)
    }

    fn add_resource_pool(&self, pool: &ResourcePool) -> Result<()> {
        policy::add_resource_pool(&*self.conn()?, pool)
    }

    fn update_resource_pool(&self, pool: &ResourcePool) -> Result<bool> {
        policy::update_resource_pool(&*self.conn()?, pool)
    }

    fn delete_resource_pool(&self, name: &str) -> Result<bool> {
        policy::delete_resource_pool(&mut *self.conn()?, name)
    }

    fn set_vm_pool(&self, vms: &[String], pool: Option<&str>) -> Result<bool> {
        policy::set_vm_pool(&mut *self.conn()?, vms, pool)
    }

    fn rules(&self) -> Result<Vec<Rule>> {
        policy::rules(&*self.conn()?)
    }

    fn rule(&self, name: &str) -> Result<Option<Rule>> {
        policy::rule(&*self.conn()?, name)
    }

    fn add_rule(&self, rule: &Rule) -> Result<()> {
        policy::add_rule(&*self.conn()?, rule)
    }

    fn update_rule(&self, rule: &Rule) -> Result<bool> {
        policy::update_rule(&*self.conn()?, rule)
    }

    fn delete_rule(&self, name: &str) -> Result<bool> {
        policy::delete_rule(&*self.conn()?, name)
    }

    fn add_user(&self, user: &User) -> Result<()> {
        let n = self.conn()?.execute(
            "INSERT INTO user (name, role, password_hash) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            params![user.name, user.role.as_str(), user.password_hash],
        )?;
        if n == 0 {
            return Err(StoreError::Exists(format!("user {}", user.name)));
        }
        Ok(())
    }

    fn user(&self, name: &str) -> Result<Option<User>> {
        let raw = self
            .conn()?
            .query_row(
                "SELECT name, role, password_hash FROM user WHERE name = ?1",
                [name],
                user_of,
            )
            .optional()?;
        raw.map(user_from).transpose()
    }

    fn users(&self) -> Result<Vec<User>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT name, role, password_hash FROM user ORDER BY name")?;
        let rows = stmt.query_map([], user_of)?;
        collect(rows, user_from)
    }

    fn set_role(&self, name: &str, role: Role) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE user SET role = ?2 WHERE name = ?1",
            params![name, role.as_str()],
        )? == 1)
    }

    fn add_session(&self, token_hash: &str, user: &str, expires_ms: u64) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO session (token_hash, user, expires_ms) VALUES (?1, ?2, ?3)",
            params![token_hash, user, U64(expires_ms)],
        )?;
        Ok(())
    }

    fn session(&self, token_hash: &str) -> Result<Option<(String, u64)>> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT user, expires_ms FROM session WHERE token_hash = ?1",
                [token_hash],
                |r| Ok((r.get(0)?, r.get::<_, U64>(1)?.0)),
            )
            .optional()?)
    }

    fn delete_session(&self, token_hash: &str) -> Result<()> {
        self.conn()?
            .execute("DELETE FROM session WHERE token_hash = ?1", [token_hash])?;
        Ok(())
    }

    fn expire_sessions(&self, now_ms: u64) -> Result<usize> {
        Ok(self
            .conn()?
            .execute("DELETE FROM session WHERE expires_ms <= ?1", [U64(now_ms)])?)
    }

    fn add_task(&self, task: &Task) -> Result<Task> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO task (kind, target, user, state, progress, message, result, error,
                               host, host_task, started_ms, ended_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                task.kind,
                task.target,
                task.user,
                task.state.as_str(),
                task.progress,
                task.message,
                task.result
                    .as_ref()
                    .map(|r| to_json("task.result", r))
                    .transpose()?,
                task.error
                    .as_ref()
                    .map(|e| to_json("task.error", e))
                    .transpose()?,
                task.host,
                task.host_task.map(U64),
                U64(task.started_ms),
                task.ended_ms.map(U64)
            ],
        )?;
        let mut task = task.clone();
        task.id = u64::try_from(conn.last_insert_rowid()).unwrap_or(0);
        Ok(task)
    }

    fn update_task(&self, id: u64, u: &TaskUpdate) -> Result<()> {
        self.conn()?.execute(
            "UPDATE task SET state = ?2, progress = ?3, message = ?4, result = ?5, error = ?6,
                             host_task = COALESCE(?7, host_task), ended_ms = ?8
             WHERE id = ?1",
            params![
                U64(id),
                u.state.as_str(),
                u.progress,
                u.message,
                u.result
                    .as_ref()
                    .map(|r| to_json("task.result", r))
                    .transpose()?,
                u.error
                    .as_ref()
                    .map(|e| to_json("task.error", e))
                    .transpose()?,
                u.host_task.map(U64),
                u.ended_ms.map(U64)
            ],
        )?;
        Ok(())
    }

    fn delete_task(&self, id: u64) -> Result<()> {
        self.conn()?
            .execute("DELETE FROM task WHERE id = ?1", [U64(id)])?;
        Ok(())
    }

    fn task(&self, id: u64) -> Result<Option<Task>> {
        let raw = self
            .conn()?
            .query_row(
                &format!("SELECT {TASK_COLUMNS} FROM task WHERE id = ?1"),
                [U64(id)],
                raw_task,
            )
            .optional()?;
        raw.map(task_of).transpose()
    }

    fn tasks(&self, limit: usize) -> Result<Vec<Task>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {TASK_COLUMNS} FROM task ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map([U64(limit as u64)], raw_task)?;
        collect(rows, task_of)
    }

    fn events_of(&self, target: &str, after: u64, limit: usize) -> Result<Vec<Event>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM event WHERE id > ?1 AND target = ?2 ORDER BY id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![U64(after), target, U64(limit as u64)], raw_event)?;
        collect(rows, event_of)
    }

    fn tasks_of(&self, target: &str, limit: usize) -> Result<Vec<Task>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {TASK_COLUMNS} FROM task WHERE target = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![target, U64(limit as u64)], raw_task)?;
        collect(rows, task_of)
    }

    fn add_event(&self, event: &NewEvent) -> Result<Event> {
        insert_event(&*self.conn()?, event)
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM event WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![U64(after), U64(limit as u64)], raw_event)?;
        collect(rows, event_of)
    }

    fn add_samples(&self, samples: &[StatSample]) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        for s in samples {
            tx.execute(
                "INSERT OR REPLACE INTO stat
                 (entity, level, time_ms, cpu_percent, memory_mib, disk_bytes, net_bytes)
                 VALUES (?1, 0, ?2, ?3, ?4, ?5, ?6)",
                params![
                    s.entity,
                    U64(s.time_ms),
                    s.cpu_percent,
                    s.memory_mib,
                    s.disk_bytes,
                    s.net_bytes
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn roll_up(&self, now_ms: u64) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        // Lower levels first: a closed 30-minute period's 5-minute averages are all made
        // (its 5-minute periods are closed too) before it is averaged.
        for pair in STAT_LEVELS.windows(2) {
            let (from, to) = (pair[0], pair[1]);
            let closed = now_ms - now_ms % to.period_ms;
            // A period rolled up once is not rolled again (OR IGNORE): samples of a closed
            // period that arrive late are dropped, as vCenter did.
            tx.execute(
                "INSERT OR IGNORE INTO stat
                 (entity, level, time_ms, cpu_percent, memory_mib, disk_bytes, net_bytes)
                 SELECT entity, ?2, (time_ms / ?3) * ?3 AS period,
                        AVG(cpu_percent), AVG(memory_mib), AVG(disk_bytes), AVG(net_bytes)
                 FROM stat WHERE level = ?1 AND time_ms < ?4
                 GROUP BY entity, period",
                params![from.level, to.level, U64(to.period_ms), U64(closed)],
            )?;
        }
        for level in STAT_LEVELS {
            tx.execute(
                "DELETE FROM stat WHERE level = ?1 AND time_ms < ?2",
                params![level.level, U64(now_ms.saturating_sub(level.retention_ms))],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn samples(&self, entity: &str, level: u8, since_ms: u64) -> Result<Vec<StatSample>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT entity, level, time_ms, cpu_percent, memory_mib, disk_bytes, net_bytes
             FROM stat WHERE entity = ?1 AND level = ?2 AND time_ms >= ?3 ORDER BY time_ms",
        )?;
        let rows = stmt.query_map(params![entity, level, U64(since_ms)], |r| {
            Ok(StatSample {
                entity: r.get(0)?,
                level: r.get(1)?,
                time_ms: r.get::<_, U64>(2)?.0,
                cpu_percent: r.get(3)?,
                memory_mib: r.get(4)?,
                disk_bytes: r.get(5)?,
                net_bytes: r.get(6)?,
            })
        })?;
        collect(rows, Ok)
    }

    fn backup_jobs(&self) -> Result<Vec<BackupJob>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {BACKUP_JOB_COLUMNS} FROM backup_job ORDER BY name"
        ))?;
        let rows = stmt.query_map([], raw_backup_job)?;
        collect(rows, backup_job_of)
    }

    fn backup_job(&self, name: &str) -> Result<Option<BackupJob>> {
        let raw = self
            .conn()?
            .query_row(
                &format!("SELECT {BACKUP_JOB_COLUMNS} FROM backup_job WHERE name = ?1"),
                [name],
                raw_backup_job,
            )
            .optional()?;
        raw.map(backup_job_of).transpose()
    }

    fn add_backup_job(&self, job: &BackupJob) -> Result<()> {
        let n = self.conn()?.execute(
            &format!(
                "INSERT INTO backup_job ({BACKUP_JOB_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT DO NOTHING"
            ),
            params![
                job.name,
                to_json("backup_job.vms", &job.vms)?,
                job.repository,
                job.schedule,
                job.keep_last,
                job.incremental,
                job.enabled,
                job.last_run_ms.map(U64),
                job.next_run_ms.map(U64),
                job.last_result
                    .as_ref()
                    .map(|r| to_json("backup_job.last_result", r))
                    .transpose()?,
                to_json("backup_job.disks", &job.disks)?
            ],
        )?;
        if n == 0 {
            return Err(StoreError::Exists(format!("backup job {}", job.name)));
        }
        Ok(())
    }

    fn update_backup_job(&self, job: &BackupJob) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE backup_job SET vms = ?2, repository = ?3, schedule = ?4, keep_last = ?5,
                                   incremental = ?6, enabled = ?7, next_run_ms = ?8, disks = ?9
             WHERE name = ?1",
            params![
                job.name,
                to_json("backup_job.vms", &job.vms)?,
                job.repository,
                job.schedule,
                job.keep_last,
                job.incremental,
                job.enabled,
                job.next_run_ms.map(U64),
                to_json("backup_job.disks", &job.disks)?
            ],
        )? == 1)
    }

    fn record_backup_run(
        &self,
        name: &str,
        last_run_ms: Option<u64>,
        next_run_ms: Option<u64>,
        result: &BackupJobResult,
    ) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE backup_job SET last_run_ms = ?2, next_run_ms = ?3, last_result = ?4
             WHERE name = ?1",
            params![
                name,
                last_run_ms.map(U64),
                next_run_ms.map(U64),
                to_json("backup_job.last_result", result)?
            ],
        )? == 1)
    }

    fn delete_backup_job(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn()?
            .execute("DELETE FROM backup_job WHERE name = ?1", [name])?
            == 1)
    }
}

fn upsert_vm(conn: &Connection, vm: &Vm) -> Result<()> {
    // The hosts' columns only: the resource pool is the center's. A row that would not
    // change is not written: every host reports every VM of the cluster at every poll,
    // and most of them changed nothing.
    conn.execute(
        "INSERT INTO vm (name, info, host, seen_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET info = ?2, host = ?3, seen_ms = ?4
         WHERE seen_ms <= ?4 AND (info IS NOT ?2 OR host IS NOT ?3)",
        params![
            vm.name,
            to_json("vm.info", &vm.info)?,
            vm.host,
            U64(vm.seen_ms)
        ],
    )?;
    Ok(())
}
