//! The task table: long operations (power on, migrate, backup, clone) answer at once with
//! a task id; the work reports progress and its result through a [`TaskHandle`], and
//! clients poll `GET /tasks/ID`.
//!
//! Bounded: every running task is kept, and the last [`FINISHED_KEPT`] finished ones.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorDetail};
use super::types::OpKind;

/// Finished tasks remembered (older ones answer 404).
pub const FINISHED_KEPT: usize = 256;

/// Longest progress message kept (bytes); longer ones are cut.
const MESSAGE_LEN_MAX: usize = 512;

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Still working.
    Running,
    /// Done; `result` holds what it produced.
    Success,
    /// Failed; `error` says why.
    Error,
}

/// A task as `GET /tasks/ID` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskInfo {
    /// Its id.
    pub id: u64,
    /// The operation.
    pub op: OpKind,
    /// The VM it works on.
    pub vm: String,
    /// Where it is.
    pub state: TaskState,
    /// 0 to 1.
    pub progress: f64,
    /// What it is doing now (or what it did, once finished).
    pub message: String,
    /// What it produced (success only; its shape depends on the operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// Why it failed (error only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// When it started, ms since the Unix epoch.
    pub started_ms: u64,
    /// When it ended, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
}

/// The clock of task times: ms since the Unix epoch.
pub type NowMs = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock, ms since the Unix epoch (0 before 1970).
#[must_use]
pub fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

struct Entry {
    info: TaskInfo,
    /// Listed only once the host accepted the operation.
    published: bool,
}

struct Inner {
    next_id: u64,
    tasks: BTreeMap<u64, Entry>,
    finished: VecDeque<u64>,
}

/// Every task of this host.
///
/// ```
/// use vinfra_host::api::{OpKind, TaskState, TaskTable};
/// let table = TaskTable::new();
/// let task = table.create(OpKind::Start, "web1");
/// let id = task.id();
/// table.publish(id);
/// task.progress(0.5, "booting");
/// assert_eq!(table.get(id).unwrap().progress, 0.5);
/// task.succeed(serde_json::json!({"boot_ms": 80}));
/// assert_eq!(table.get(id).unwrap().state, TaskState::Success);
/// ```
pub struct TaskTable {
    inner: Mutex<Inner>,
    now_ms: NowMs,
}

impl std::fmt::Debug for TaskTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskTable").finish_non_exhaustive()
    }
}

impl TaskTable {
    /// An empty table on the system clock.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Self::with_clock(Arc::new(system_now_ms))
    }

    /// An empty table on the given clock.
    #[must_use]
    pub fn with_clock(now_ms: NowMs) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                next_id: 1,
                tasks: BTreeMap::new(),
                finished: VecDeque::new(),
            }),
            now_ms,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the table consistent (each update is one
        // assignment), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new running task, not yet listed: [`publish`](Self::publish) lists it once the
    /// host accepted the operation, [`discard`](Self::discard) forgets it if it refused.
    pub fn create(self: &Arc<Self>, op: OpKind, vm: &str) -> TaskHandle {
        let started_ms = (self.now_ms)();
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.tasks.insert(
            id,
            Entry {
                info: TaskInfo {
                    id,
                    op,
                    vm: vm.to_string(),
                    state: TaskState::Running,
                    progress: 0.0,
                    message: String::new(),
                    result: None,
                    error: None,
                    started_ms,
                    ended_ms: None,
                },
                published: false,
            },
        );
        TaskHandle {
            table: Arc::clone(self),
            id,
            finished: false,
        }
    }

    /// Lists a task created by [`create`](Self::create).
    pub fn publish(&self, id: u64) {
        if let Some(e) = self.lock().tasks.get_mut(&id) {
            e.published = true;
        }
    }

    /// Forgets a task whose operation was refused: it never appears.
    pub fn discard(&self, id: u64) {
        let mut inner = self.lock();
        inner.tasks.remove(&id);
        inner.finished.retain(|&f| f != id);
    }

    /// One listed task.
    #[must_use]
    pub fn get(&self, id: u64) -> Option<TaskInfo> {
        self.lock()
            .tasks
            .get(&id)
            .filter(|e| e.published)
            .map(|e| e.info.clone())
    }

    /// Every listed task, oldest first.
    #[must_use]
    pub fn list(&self) -> Vec<TaskInfo> {
        self.lock()
            .tasks
            .values()
            .filter(|e| e.published)
            .map(|e| e.info.clone())
            .collect()
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut TaskInfo)) {
        if let Some(e) = self.lock().tasks.get_mut(&id) {
            if e.info.state == TaskState::Running {
                f(&mut e.info);
            }
        }
    }

    fn finish(&self, id: u64, outcome: Result<serde_json::Value, ErrorDetail>) {
        let ended_ms = (self.now_ms)();
        let mut inner = self.lock();
        let Some(e) = inner.tasks.get_mut(&id) else {
            return;
        };
        if e.info.state != TaskState::Running {
            return;
        }
        e.info.ended_ms = Some(ended_ms);
        match outcome {
            Ok(result) => {
                e.info.state = TaskState::Success;
                e.info.progress = 1.0;
                e.info.result = Some(result);
            }
            Err(error) => {
                e.info.state = TaskState::Error;
                e.info.message.clone_from(&error.message);
                e.info.error = Some(error);
            }
        }
        inner.finished.push_back(id);
        while inner.finished.len() > FINISHED_KEPT {
            if let Some(old) = inner.finished.pop_front() {
                inner.tasks.remove(&old);
            }
        }
    }
}

/// The work's end of one task: progress while it runs, then exactly one result.
///
/// A handle dropped without [`succeed`](Self::succeed) or [`fail`](Self::fail) (a task
/// thread that panicked or returned early) marks the task failed, so no task stays
/// "running" forever.
#[derive(Debug)]
pub struct TaskHandle {
    table: Arc<TaskTable>,
    id: u64,
    finished: bool,
}

impl TaskHandle {
    /// The task's id.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Reports progress (clamped to 0..=1; NaN leaves it as it was) and what it does.
    pub fn progress(&self, fraction: f64, message: impl Into<String>) {
        let mut message = message.into();
        if message.len() > MESSAGE_LEN_MAX {
            let mut cut = MESSAGE_LEN_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        self.table.update(self.id, |t| {
            if !fraction.is_nan() {
                t.progress = fraction.clamp(0.0, 1.0);
            }
            t.message = message;
        });
    }

    /// Ends the task with success and its result.
    pub fn succeed(mut self, result: serde_json::Value) {
        self.finished = true;
        self.table.finish(self.id, Ok(result));
    }

    /// Ends the task with an error.
    pub fn fail(mut self, error: &ApiError) {
        self.finished = true;
        self.table.finish(self.id, Err(error.detail()));
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        if !self.finished {
            self.table.finish(
                self.id,
                Err(ApiError::Internal("the task ended without a result".into()).detail()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Arc<TaskTable> {
        TaskTable::with_clock(Arc::new(|| 42))
    }

    #[test]
    fn unpublished_and_discarded_tasks_are_never_listed() {
        let t = table();
        let task = t.create(OpKind::Start, "a");
        let id = task.id();
        assert!(t.get(id).is_none() && t.list().is_empty());
        t.discard(id);
        drop(task);
        assert!(t.get(id).is_none() && t.list().is_empty());
    }

    #[test]
    fn progress_is_clamped_and_only_while_running() {
        let t = table();
        let task = t.create(OpKind::Migrate, "a");
        let id = task.id();
        t.publish(id);
        task.progress(7.0, "x".repeat(2000));
        let info = t.get(id).unwrap();
        assert_eq!(info.progress, 1.0);
        assert_eq!(info.message.len(), MESSAGE_LEN_MAX);
        task.progress(f64::NAN, "still");
        assert_eq!(t.get(id).unwrap().progress, 1.0);
        task.progress(-1.0, "");
        assert_eq!(t.get(id).unwrap().progress, 0.0);
        task.fail(&ApiError::UnknownHost("9".into()));
        let info = t.get(id).unwrap();
        assert_eq!(info.state, TaskState::Error);
        assert_eq!(info.error.unwrap().code, "unknown_host");
        assert_eq!(info.ended_ms, Some(42));
    }

    #[test]
    fn a_dropped_handle_fails_its_task() {
        let t = table();
        let task = t.create(OpKind::Backup, "a");
        let id = task.id();
        t.publish(id);
        std::thread::spawn(move || {
            let _task = task;
            panic!("the task thread dies");
        })
        .join()
        .unwrap_err();
        let info = t.get(id).unwrap();
        assert_eq!(info.state, TaskState::Error);
        assert_eq!(info.error.unwrap().code, "internal");
    }

    #[test]
    fn finished_tasks_are_bounded_running_ones_kept() {
        let t = table();
        let running = t.create(OpKind::Backup, "long");
        t.publish(running.id());
        let mut first_done = None;
        for i in 0..FINISHED_KEPT + 10 {
            let task = t.create(OpKind::Start, &format!("vm{i}"));
            t.publish(task.id());
            first_done.get_or_insert(task.id());
            task.succeed(serde_json::Value::Null);
        }
        let list = t.list();
        assert_eq!(list.len(), FINISHED_KEPT + 1);
        assert!(t.get(running.id()).is_some());
        assert!(t.get(first_done.unwrap()).is_none());
        let ids: Vec<u64> = list.iter().map(|i| i.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
