//! What the rest of the center needs from a database: the [`Store`] trait, and its one
//! implementation today, [`SqliteStore`] (rusqlite, the bundled SQLite, WAL). A
//! distributed store can come later behind the same trait.
//!
//! Calls are synchronous and short (one statement or one transaction); async callers
//! run them inline, a few hundred microseconds on a local file.

mod migrations;
mod sqlite;

pub use migrations::SCHEMA_VERSION;
pub use sqlite::SqliteStore;

use crate::model::{
    BackupJob, BackupJobResult, Cluster, ClusterSettings, Datacenter, Event, Host, HostState,
    NewEvent, Role, StatSample, Task, User, Vm,
};
use crate::model::{ResourcePool, Rule};
use vinfra_host::api::HostInfo;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite said no.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A JSON column does not hold what it should.
    #[error("database column {column}: {source}")]
    Json {
        /// The column.
        column: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A text column holds a value this binary does not know.
    #[error("database column {column}: unknown value {value:?}")]
    Value {
        /// The column.
        column: &'static str,
        /// What it holds.
        value: String,
    },
    /// The database was made by a newer center.
    #[error("database schema version {found} is newer than this binary's {supported}: use a newer vinfra-center")]
    TooNew {
        /// The database's version.
        found: i64,
        /// This binary's.
        supported: i64,
    },
    /// A row with this key exists already.
    #[error("{0} exists already")]
    Exists(String),
    /// The lock around the connection was poisoned by a panic.
    #[error("database connection poisoned")]
    Poisoned,
}

/// The store's result.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A task's change of state.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskUpdate {
    /// Running, or how it ended.
    pub state: crate::model::TaskState,
    /// 0.0 to 1.0.
    pub progress: f64,
    /// The last progress message.
    pub message: String,
    /// What it produced.
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<vinfra_host::api::ErrorDetail>,
    /// The host task it follows, once started.
    pub host_task: Option<u64>,
    /// When it ended.
    pub ended_ms: Option<u64>,
}

/// What the center keeps (see README.md, "Inventory and store").
pub trait Store: Send + Sync {
    /// Every datacentre.
    fn datacenters(&self) -> Result<Vec<Datacenter>>;
    /// Every cluster.
    fn clusters(&self) -> Result<Vec<Cluster>>;
    /// Replaces a cluster's settings; false if there is no such cluster.
    fn set_cluster_settings(&self, cluster: &str, settings: &ClusterSettings) -> Result<bool>;

    /// Every host, by name.
    fn hosts(&self) -> Result<Vec<Host>>;
    /// One host.
    fn host(&self, name: &str) -> Result<Option<Host>>;
    /// Adds a host (not yet seen: `not_responding`); [`StoreError::Exists`] if named so.
    fn add_host(&self, name: &str, address: &str) -> Result<()>;
    /// Removes a host; false if there was none.
    fn delete_host(&self, name: &str) -> Result<bool>;
    /// Records a poll's answer: state, report, when.
    fn host_seen(&self, name: &str, state: HostState, report: &HostInfo, now_ms: u64)
        -> Result<()>;
    /// Sets a host's state only (a missed poll).
    fn set_host_state(&self, name: &str, state: HostState) -> Result<()>;
    /// Copies a host's events into the log and moves its cursor, in one transaction
    /// (a restart neither loses nor repeats them). Returns the recorded events.
    fn host_events(&self, host: &str, cursor: u64, events: &[NewEvent]) -> Result<Vec<Event>>;

    /// Every VM, by name.
    fn vms(&self) -> Result<Vec<Vm>>;
    /// One VM.
    fn vm(&self, name: &str) -> Result<Option<Vm>>;
    /// Replaces the hosts' view of the VMs with the cluster's whole list as one host
    /// reported it when asked at `asked_ms` (each VM's `seen_ms`): rows for VMs not in it
    /// are removed, center-only columns of the others kept. A row written after
    /// `asked_ms` (a create, a task's read-back) is newer than the list and left alone.
    fn sync_vms(&self, vms: &[Vm], asked_ms: u64) -> Result<()>;
    /// Adds or replaces one VM's hosts' view (after a create), unless the row is newer.
    fn put_vm(&self, vm: &Vm) -> Result<()>;
    /// Removes a VM; false if there was none.
    fn delete_vm(&self, name: &str) -> Result<bool>;

    /// Every resource pool, by name.
    fn resource_pools(&self) -> Result<Vec<ResourcePool>>;
    /// One resource pool.
    fn resource_pool(&self, name: &str) -> Result<Option<ResourcePool>>;
    /// Adds a pool; [`StoreError::Exists`] if one is named so.
    fn add_resource_pool(&self, pool: &ResourcePool) -> Result<()>;
    /// Replaces a pool's parent and allocations (found by name); false if there is none.
    fn update_resource_pool(&self, pool: &ResourcePool) -> Result<bool>;
    /// Removes a pool; its VMs and child pools move to its parent in the same
    /// transaction (as vSphere does). False if there was none.
    fn delete_resource_pool(&self, name: &str) -> Result<bool>;
    /// Puts these VMs into `pool` (none: the cluster's root), all or none; false (and
    /// nothing changed) if one of them is not in the inventory.
    fn set_vm_pool(&self, vms: &[String], pool: Option<&str>) -> Result<bool>;

    /// Every DRS rule, by name.
    fn rules(&self) -> Result<Vec<Rule>>;
    /// One rule.
    fn rule(&self, name: &str) -> Result<Option<Rule>>;
    /// Adds a rule; [`StoreError::Exists`] if one is named so.
    fn add_rule(&self, rule: &Rule) -> Result<()>;
    /// Replaces a rule's definition (found by name); false if there is none.
    fn update_rule(&self, rule: &Rule) -> Result<bool>;
    /// Removes a rule; false if there was none.
    fn delete_rule(&self, name: &str) -> Result<bool>;

    /// Adds a user; [`StoreError::Exists`] if named so.
    fn add_user(&self, user: &User) -> Result<()>;
    /// One user.
    fn user(&self, name: &str) -> Result<Option<User>>;
    /// Every user, by name.
    fn users(&self) -> Result<Vec<User>>;
    /// Changes a user's role; false if there is no such user.
    fn set_role(&self, name: &str, role: Role) -> Result<bool>;

    /// Records a session (the SHA-256 of its token, hex).
    fn add_session(&self, token_hash: &str, user: &str, expires_ms: u64) -> Result<()>;
    /// A session's user and expiry.
    fn session(&self, token_hash: &str) -> Result<Option<(String, u64)>>;
    /// Ends a session.
    fn delete_session(&self, token_hash: &str) -> Result<()>;
    /// Removes the sessions expired at `now_ms`; how many.
    fn expire_sessions(&self, now_ms: u64) -> Result<usize>;

    /// Records a new task (its `id` is ignored); returns it with its id.
    fn add_task(&self, task: &Task) -> Result<Task>;
    /// Updates a running task.
    fn update_task(&self, id: u64, update: &TaskUpdate) -> Result<()>;
    /// Removes a task (one recorded ahead of a request its host refused).
    fn delete_task(&self, id: u64) -> Result<()>;
    /// One task.
    fn task(&self, id: u64) -> Result<Option<Task>>;
    /// The latest `limit` tasks, newest first.
    fn tasks(&self, limit: usize) -> Result<Vec<Task>>;
    /// The latest `limit` tasks acting on `target`, newest first.
    fn tasks_of(&self, target: &str, limit: usize) -> Result<Vec<Task>>;

    /// Appends an event; returns it with its id.
    fn add_event(&self, event: &NewEvent) -> Result<Event>;
    /// Up to `limit` events after id `after`, oldest first.
    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>>;
    /// As [`Store::events_after`], only the events about `target` (a VM, host or user).
    fn events_of(&self, target: &str, after: u64, limit: usize) -> Result<Vec<Event>>;

    /// Adds level-0 samples (a sample already there for the same entity and period is
    /// replaced).
    fn add_samples(&self, samples: &[StatSample]) -> Result<()>;
    /// Rolls up every period closed at `now_ms` into the next level and deletes what is
    /// past its level's retention, in one transaction.
    fn roll_up(&self, now_ms: u64) -> Result<()>;
    /// An entity's samples of `level` from `since_ms` on, oldest first.
    fn samples(&self, entity: &str, level: u8, since_ms: u64) -> Result<Vec<StatSample>>;

    /// Every backup job, by name.
    fn backup_jobs(&self) -> Result<Vec<BackupJob>>;
    /// One backup job.
    fn backup_job(&self, name: &str) -> Result<Option<BackupJob>>;
    /// Adds a backup job; [`StoreError::Exists`] if named so.
    fn add_backup_job(&self, job: &BackupJob) -> Result<()>;
    /// Replaces a job's definition (VMs, repository, schedule, retention, incremental,
    /// enabled) and its next run, leaving its last run alone; false if there is none.
    fn update_backup_job(&self, job: &BackupJob) -> Result<bool>;
    /// Records a run of a job: when it started, the next slot and how it went (the
    /// scheduler writes the next slot before it starts a run, so that a restart does
    /// not run the same slot twice); false if there is no such job.
    fn record_backup_run(
        &self,
        name: &str,
        last_run_ms: Option<u64>,
        next_run_ms: Option<u64>,
        result: &BackupJobResult,
    ) -> Result<bool>;
    /// Removes a backup job (its backups stay in the repository); false if there was none.
    fn delete_backup_job(&self, name: &str) -> Result<bool>;
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_pools;
