//! Center tasks: persisted records of long operations. A task that drives a host's task
//! follows it to its end on a thread of its own and records the result; a center that
//! restarts picks the running ones up again.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vinfra_host::api::client::Client;
use vinfra_host::api::{ErrorDetail, TaskInfo, TaskState as HostTaskState, VmInfo};

use crate::clock::Clock;
use crate::events::Events;
use crate::hosts::{names_by_id, vm_record, HostPool};
use crate::model::{NewEvent, Severity, Task, TaskState};
use crate::store::{Result, Store, TaskUpdate};

/// How often a followed host task is asked about.
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// The longest a task is followed (a backup of a large disk is the longest).
const FOLLOW_LIMIT: Duration = Duration::from_secs(3600);
/// How long a host may not answer about its task before the task is failed.
const HOST_SILENCE_MAX: Duration = Duration::from_secs(60);

/// The center's tasks.
#[derive(Clone)]
pub struct Tasks {
    store: Arc<dyn Store>,
    events: Events,
    clock: Clock,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks").finish_non_exhaustive()
    }
}

/// What a new task is.
#[derive(Debug, Clone)]
pub struct TaskStart<'a> {
    /// `vm.start`, `vm.relocate`…
    pub kind: &'a str,
    /// The VM or host.
    pub target: &'a str,
    /// Who asked.
    pub user: &'a str,
    /// The host whose task it follows.
    pub host: &'a str,
}

impl Tasks {
    /// Tasks over `store`.
    pub fn new(store: Arc<dyn Store>, events: Events, clock: Clock) -> Self {
        Self {
            store,
            events,
            clock,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Records a task, asks its host to start the operation (`ask` answers the host
    /// task's id), then follows the host task; the VM `refresh` (if any) is read back
    /// from the host when it ends. The outer error is the store's, the inner the host's
    /// refusal, after which the task is removed again (the refusal is the request's
    /// answer).
    ///
    /// The task is recorded before the host is asked (write-ahead): a center that dies
    /// while the host is being asked, or before it recorded the answer, finds the task
    /// on its next start without a host task and looks for it among the host's
    /// ([`Tasks::resume`]), so an operation started (a migration of a DRS pass, say) is
    /// never lost from the record, and none is asked for twice.
    pub fn start<E>(
        &self,
        start: &TaskStart<'_>,
        client: Arc<Client>,
        refresh: Option<String>,
        ask: impl FnOnce(&Client) -> std::result::Result<u64, E>,
    ) -> Result<std::result::Result<Task, E>> {
        let mut task = self.store.add_task(&Task {
            id: 0,
            kind: start.kind.to_string(),
            target: start.target.to_string(),
            user: start.user.to_string(),
            state: TaskState::Running,
            progress: 0.0,
            message: format!("asking {}", start.host),
            result: None,
            error: None,
            host: Some(start.host.to_string()),
            host_task: None,
            started_ms: (self.clock)(),
            ended_ms: None,
        })?;
        let host_task = match ask(&client) {
            Ok(id) => id,
            Err(e) => {
                self.store.delete_task(task.id)?;
                return Ok(Err(e));
            }
        };
        self.store.update_task(
            task.id,
            &TaskUpdate {
                state: TaskState::Running,
                progress: 0.0,
                message: String::new(),
                result: None,
                error: None,
                host_task: Some(host_task),
                ended_ms: None,
            },
        )?;
        task.message = String::new();
        task.host_task = Some(host_task);
        self.spawn_follower(task.clone(), client, host_task, refresh);
        Ok(Ok(task))
    }

    fn spawn_follower(
        &self,
        task: Task,
        client: Arc<Client>,
        host_task: u64,
        refresh: Option<String>,
    ) {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("task {}", task.id))
            .spawn(move || me.follow(&task, &client, host_task, refresh.as_deref()));
        if let Err(e) = spawned {
            tracing::error!("task follower thread: {e}");
        }
    }

    fn follow(&self, task: &Task, client: &Client, host_task: u64, refresh: Option<&str>) {
        let began = Instant::now();
        let mut last_answer = Instant::now();
        let mut last: Option<(f64, String)> = None;
        let outcome = loop {
            if self.stop.load(Ordering::Relaxed) {
                // The center stops: the task stays running, the next start follows it.
                return;
            }
            if began.elapsed() > FOLLOW_LIMIT {
                break Err(detail("timeout", "the host task did not end in time"));
            }
            match client.get::<TaskInfo>(&format!("/tasks/{host_task}")) {
                Ok(info) => {
                    last_answer = Instant::now();
                    match info.state {
                        HostTaskState::Running => {
                            let now = (info.progress, info.message.clone());
                            if last.as_ref() != Some(&now) {
                                self.update(task.id, TaskState::Running, &info, None);
                                last = Some(now);
                            }
                        }
                        HostTaskState::Success => break Ok(info),
                        _ => {
                            let why = info
                                .error
                                .clone()
                                .unwrap_or_else(|| detail("failed", "the host task failed"));
                            self.update(task.id, TaskState::Failed, &info, Some(why.clone()));
                            break Err(why);
                        }
                    }
                }
                Err(e) => {
                    if last_answer.elapsed() > HOST_SILENCE_MAX {
                        break Err(detail("host_not_responding", &e.to_string()));
                    }
                }
            }
            std::thread::sleep(FOLLOW_POLL);
        };
        let now_ms = (self.clock)();
        let (state, error, result) = match outcome {
            Ok(info) => (TaskState::Succeeded, None, info.result),
            Err(e) => (TaskState::Failed, Some(e), None),
        };
        let update = TaskUpdate {
            state,
            progress: if state == TaskState::Succeeded {
                1.0
            } else {
                last.map_or(0.0, |l| l.0)
            },
            message: match &error {
                Some(e) => e.message.clone(),
                None => "done".into(),
            },
            result,
            error: error.clone(),
            host_task: None,
            ended_ms: Some(now_ms),
        };
        // The VM first: whoever sees the task end sees its outcome in the inventory (a
        // DRS pass right after a migration must not find the VM on its old host).
        if let Some(vm) = refresh {
            self.refresh_vm(client, vm, now_ms);
        }
        if let Err(e) = self.store.update_task(task.id, &update) {
            tracing::error!(task = task.id, "recording the end of the task: {e}");
        }
        let (severity, message) = match &error {
            None => (
                Severity::Info,
                format!("task {} {} {} succeeded", task.id, task.kind, task.target),
            ),
            Some(e) => (
                Severity::Error,
                format!(
                    "task {} {} {} failed: {}",
                    task.id, task.kind, task.target, e.message
                ),
            ),
        };
        let recorded = self.events.record(&NewEvent {
            time_ms: now_ms,
            severity,
            kind: format!("task.{}", state.as_str()),
            target: task.target.clone(),
            user: Some(task.user.clone()),
            host: task.host.clone(),
            message,
            data: serde_json::json!({ "task": task.id, "kind": task.kind }),
        });
        if let Err(e) = recorded {
            tracing::error!(task = task.id, "recording the task's event: {e}");
        }
    }

    fn update(&self, id: u64, state: TaskState, info: &TaskInfo, error: Option<ErrorDetail>) {
        let update = TaskUpdate {
            state,
            progress: info.progress,
            message: info.message.clone(),
            result: None,
            error,
            host_task: None,
            ended_ms: None,
        };
        if let Err(e) = self.store.update_task(id, &update) {
            tracing::warn!(task = id, "recording progress: {e}");
        }
    }

    /// Reads a VM back from a host into the inventory (its host changed, it started…),
    /// so that the inventory shows the outcome when the task does.
    fn refresh_vm(&self, client: &Client, vm: &str, now_ms: u64) {
        let result = client
            .get::<VmInfo>(&format!("/vms/{vm}"))
            .map_err(|e| e.to_string())
            .and_then(|info| {
                let names = names_by_id(self.store.as_ref()).map_err(|e| e.to_string())?;
                self.store
                    .put_vm(&vm_record(info, &names, now_ms))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            tracing::debug!(vm, "refresh after task: {e}");
        }
    }

    /// At start: follows again every task left running by the last run whose host is in
    /// the pool; one recorded before its host answered is looked for among the host's
    /// tasks; the others fail.
    pub fn resume(&self, hosts: &HostPool) -> Result<()> {
        let tasks = self.store.tasks(1000)?;
        // Host tasks that a center task follows already: never claimed twice.
        let mut claimed: HashSet<(String, u64)> = tasks
            .iter()
            .filter_map(|t| Some((t.host.clone()?, t.host_task?)))
            .collect();
        for task in tasks {
            if task.state != TaskState::Running {
                continue;
            }
            let client = task.host.as_deref().and_then(|h| hosts.client(h));
            let refresh = task.kind.starts_with("vm.").then(|| task.target.clone());
            let why = match (client, task.host_task) {
                (Some(client), Some(host_task)) => {
                    self.spawn_follower(task, client, host_task, refresh);
                    continue;
                }
                (Some(client), None) => match find_host_task(&client, &task, &claimed) {
                    Ok(Some(host_task)) => {
                        let host = task.host.clone().unwrap_or_default();
                        claimed.insert((host, host_task));
                        self.store.update_task(
                            task.id,
                            &TaskUpdate {
                                state: TaskState::Running,
                                progress: task.progress,
                                message: String::new(),
                                result: None,
                                error: None,
                                host_task: Some(host_task),
                                ended_ms: None,
                            },
                        )?;
                        self.spawn_follower(task, client, host_task, refresh);
                        continue;
                    }
                    Ok(None) => detail(
                        "not_started",
                        "the center stopped before the host accepted it; the host never \
                         started it",
                    ),
                    Err(e) => detail(
                        "abandoned",
                        &format!("the center restarted and cannot ask the host about it: {e}"),
                    ),
                },
                _ => detail("abandoned", "the center restarted and cannot follow it"),
            };
            self.store.update_task(
                task.id,
                &TaskUpdate {
                    state: TaskState::Failed,
                    progress: task.progress,
                    message: why.message.clone(),
                    result: None,
                    error: Some(why),
                    host_task: None,
                    ended_ms: Some((self.clock)()),
                },
            )?;
        }
        Ok(())
    }

    /// Stops following (the center stops); running tasks stay running in the store.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The host's operation a center task of `kind` asked for (`vm.relocate` is a
/// migration, `host.enter_maintenance` the host's maintenance task).
fn host_op(kind: &str) -> Option<&str> {
    match kind {
        "vm.relocate" => Some("migrate"),
        "host.enter_maintenance" | "host.exit_maintenance" => Some("maintenance"),
        k => k.strip_prefix("vm."),
    }
}

/// The host task that `task` (recorded before its host answered) started: the same
/// operation on the same target, started since (with a second's slack), and followed by
/// no other center task; the earliest such.
fn find_host_task(
    client: &Client,
    task: &Task,
    claimed: &HashSet<(String, u64)>,
) -> std::result::Result<Option<u64>, String> {
    let host = task.host.clone().unwrap_or_default();
    let op = host_op(&task.kind);
    let listed: Vec<TaskInfo> = client.get("/tasks").map_err(|e| e.to_string())?;
    Ok(listed
        .into_iter()
        .filter(|h| {
            Some(h.op.as_str()) == op
                && (h.vm == task.target || task.kind.starts_with("host."))
                && h.started_ms + 1000 >= task.started_ms
                && !claimed.contains(&(host.clone(), h.id))
        })
        .min_by_key(|h| h.started_ms)
        .map(|h| h.id))
}

fn detail(code: &str, message: &str) -> ErrorDetail {
    ErrorDetail {
        code: code.to_string(),
        message: message.to_string(),
    }
}
