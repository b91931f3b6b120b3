//! Runs of backup jobs: the scheduler that starts the due ones, and one run (asked
//! through the API or by the scheduler). A run backs up each VM of its job through the
//! VM's backup action (a `vm.backup` center task per VM), waits for the tasks, then
//! applies the job's retention through a host (`POST /api/v1/backups/forget`: vcb's
//! forget and prune) and records how it went on the job and in the event log.
//!
//! Runs never overlap: a job whose run is in progress is not started again (the
//! scheduler skips that slot). The next slot is written before a run starts, so a
//! center that restarts in the middle of a run does not run the same slot twice; the
//! interrupted run is marked failed at the next start (its tasks are followed to their
//! end on their own, [`crate::tasks`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vinfra_host::api::{BackupRequest, ForgetRequest, ForgetResult};

use super::vm::start_backup;
use super::{blocking, ApiError, ApiResult, AppState};
use crate::auth::Principal;
use crate::model::{BackupJob, BackupJobResult, Role, Severity, Task, TaskState};
use crate::schedule::Schedule;

/// How often the scheduler looks for due jobs.
pub const SCHEDULER_TICK: Duration = Duration::from_secs(1);
/// The user the scheduler acts as in the event log and on its tasks.
pub const SCHEDULER_USER: &str = "scheduler";
/// How often a run asks the store whether its tasks have ended.
const TASK_POLL: Duration = Duration::from_millis(250);
/// The longest a run waits for its tasks (the tasks' own follow limit, plus a margin).
const RUN_LIMIT: Duration = Duration::from_secs(2 * 3600);

/// The jobs whose run is in progress, in this process.
#[derive(Debug, Clone, Default)]
pub struct BackupRuns(Arc<Mutex<BTreeSet<String>>>);

/// A job's claim on running; released when dropped.
#[derive(Debug)]
struct Claim {
    runs: BackupRuns,
    job: String,
}

impl BackupRuns {
    /// Whether `job` is running.
    pub fn running(&self, job: &str) -> bool {
        self.0.lock().is_ok_and(|r| r.contains(job))
    }

    fn claim(&self, job: &str) -> Option<Claim> {
        let mut runs = self.0.lock().ok()?;
        runs.insert(job.to_string()).then(|| Claim {
            runs: self.clone(),
            job: job.to_string(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut runs) = self.runs.0.lock() {
            runs.remove(&self.job);
        }
    }
}

/// What starting a run did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RunStarted {
    /// The job.
    pub job: String,
    /// The `vm.backup` tasks started, one per VM.
    pub tasks: Vec<u64>,
    /// The VMs whose backup could not start, and why.
    pub refused: Vec<String>,
}

/// The jobs due at `now_ms`: enabled, with a next slot not after it.
pub fn due(jobs: &[BackupJob], now_ms: u64) -> Vec<&BackupJob> {
    jobs.iter()
        .filter(|j| j.enabled && j.next_run_ms.is_some_and(|n| n <= now_ms))
        .collect()
}

/// The job's next slot after `now_ms` (none while it is disabled or its schedule does
/// not parse, which the API never stores).
pub fn next_slot(job: &BackupJob, now_ms: u64) -> Option<u64> {
    let schedule: Schedule = job.schedule.parse().ok()?;
    job.enabled.then(|| schedule.next_after(now_ms))
}

/// Starts a run of `job` as `user`: the backups start now, the wait for them and the
/// retention go on in the background. `next_run_ms` is the job's next slot, recorded
/// before anything starts. 409 while a run of the job is in progress.
pub(super) async fn start_run(
    state: &AppState,
    job: &BackupJob,
    user: &str,
    next_run_ms: Option<u64>,
) -> ApiResult<RunStarted> {
    let claim = state
        .backup_runs
        .claim(&job.name)
        .ok_or_else(|| ApiError::conflict(format!("backup job {} is running", job.name)))?;
    let started_ms = state.now_ms();
    let mut result = BackupJobResult {
        state: TaskState::Running,
        message: format!("backing up {} VM(s)", job.vms.len()),
        tasks: Vec::new(),
        ended_ms: None,
    };
    if !state
        .store
        .record_backup_run(&job.name, Some(started_ms), next_run_ms, &result)?
    {
        return Err(ApiError::not_found(format!("no backup job {}", job.name)));
    }
    state.events.action(
        started_ms,
        user,
        "backup.job_started",
        &job.name,
        format!(
            "{user} started backup job {} ({} VM(s) to {})",
            job.name,
            job.vms.len(),
            job.repository
        ),
        serde_json::json!({ "vms": job.vms, "repository": job.repository }),
    )?;
    let who = Principal {
        name: user.to_string(),
        role: Role::Operator,
    };
    let request = BackupRequest {
        repository: job.repository.clone(),
        incremental: job.incremental,
        disks: (!job.disks.is_empty()).then(|| job.disks.clone()),
    };
    let mut refused = Vec::new();
    for vm in &job.vms {
        match start_backup(state, &who, vm, &request).await {
            Ok(task) => result.tasks.push(task),
            Err(e) => refused.push(format!("{vm}: {}", e.info.message)),
        }
    }
    state
        .store
        .record_backup_run(&job.name, Some(started_ms), next_run_ms, &result)?;
    let started = RunStarted {
        job: job.name.clone(),
        tasks: result.tasks.clone(),
        refused: refused.clone(),
    };
    let (state, job) = (state.clone(), job.clone());
    tokio::spawn(async move {
        finish_run(
            &state,
            &job,
            who.name,
            started_ms,
            next_run_ms,
            result,
            refused,
        )
        .await;
        drop(claim);
    });
    Ok(started)
}

/// Waits for the run's tasks, applies the retention to the VMs backed up, and records
/// the outcome.
async fn finish_run(
    state: &AppState,
    job: &BackupJob,
    user: String,
    started_ms: u64,
    next_run_ms: Option<u64>,
    mut result: BackupJobResult,
    mut problems: Vec<String>,
) {
    let mut backed_up = 0;
    let mut forgotten = 0;
    for &id in &result.tasks {
        let Some(task) = wait_task(state, id).await else {
            problems.push(format!("task {id} did not end in time"));
            continue;
        };
        if task.state != TaskState::Succeeded {
            let why = task.error.map_or(task.message, |e| e.message);
            problems.push(format!("{}: {why}", task.target));
            continue;
        }
        backed_up += 1;
        if job.keep_last == 0 {
            continue;
        }
        match forget(state, job, &task).await {
            Ok(r) => forgotten += r.forgotten.len(),
            Err(e) => problems.push(format!(
                "{}: retention failed: {}",
                task.target, e.info.message
            )),
        }
    }
    let ended_ms = state.now_ms();
    result.state = if problems.is_empty() {
        TaskState::Succeeded
    } else {
        TaskState::Failed
    };
    result.message = format!(
        "{backed_up} of {} VM(s) backed up, {forgotten} old backup(s) forgotten",
        job.vms.len()
    );
    if !problems.is_empty() {
        result.message = format!("{}; {}", result.message, problems.join("; "));
    }
    result.ended_ms = Some(ended_ms);
    // The job may have been deleted meanwhile: nothing to record on it then.
    if let Err(e) = state
        .store
        .record_backup_run(&job.name, Some(started_ms), next_run_ms, &result)
    {
        tracing::error!(job = %job.name, "recording the run: {e}");
    }
    let event = crate::model::NewEvent {
        time_ms: ended_ms,
        severity: if problems.is_empty() {
            Severity::Info
        } else {
            Severity::Error
        },
        kind: format!("backup.job_{}", result.state.as_str()),
        target: job.name.clone(),
        user: Some(user),
        host: None,
        message: format!("backup job {}: {}", job.name, result.message),
        data: serde_json::json!({ "tasks": result.tasks, "forgotten": forgotten }),
    };
    if let Err(e) = state.events.record(&event) {
        tracing::error!(job = %job.name, "recording the run's event: {e}");
    }
}

/// Task `id` once it has ended (none past [`RUN_LIMIT`]).
async fn wait_task(state: &AppState, id: u64) -> Option<Task> {
    let began = tokio::time::Instant::now();
    while began.elapsed() < RUN_LIMIT {
        match state.store.task(id) {
            Ok(Some(t)) if t.state != TaskState::Running => return Some(t),
            Ok(_) => {}
            Err(e) => tracing::warn!(task = id, "reading a backup task: {e}"),
        }
        tokio::time::sleep(TASK_POLL).await;
    }
    None
}

/// Keeps the newest `keep_last` backups of the task's VM, through the host that made
/// the backup (any connected one when it has gone).
async fn forget(state: &AppState, job: &BackupJob, task: &Task) -> ApiResult<ForgetResult> {
    let client = task
        .host
        .as_deref()
        .and_then(|h| state.hosts.client(h))
        .map_or_else(
            || super::vm::pick_host(state, None, "host").map(|h| h.1),
            Ok,
        )?;
    let request = ForgetRequest {
        repository: job.repository.clone(),
        vm: task.target.clone(),
        keep_last: job.keep_last,
    };
    Ok(blocking(move || client.post("/backups/forget", &request)).await??)
}

/// Marks the runs a stopped center left in progress as failed.
fn mark_interrupted(state: &AppState) -> ApiResult<()> {
    for job in state.store.backup_jobs()? {
        let Some(mut result) = job.last_result.clone() else {
            continue;
        };
        if result.state != TaskState::Running {
            continue;
        }
        result.state = TaskState::Failed;
        result.message = format!(
            "{}; the center stopped during the run (its tasks were followed to their end, \
             the retention was not applied)",
            result.message
        );
        result.ended_ms = Some(state.now_ms());
        state
            .store
            .record_backup_run(&job.name, job.last_run_ms, job.next_run_ms, &result)?;
    }
    Ok(())
}

/// Starts the due jobs every [`SCHEDULER_TICK`] until the runtime ends.
pub async fn scheduler(state: AppState) {
    if let Err(e) = mark_interrupted(&state) {
        tracing::warn!("backup scheduler: {}", e.info.message);
    }
    let mut tick = tokio::time::interval(SCHEDULER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = run_due(&state).await {
            tracing::warn!("backup scheduler: {}", e.info.message);
        }
    }
}

/// One look: each due job starts, or skips its slot while its last run goes on.
async fn run_due(state: &AppState) -> ApiResult<()> {
    let now_ms = state.now_ms();
    let jobs = state.store.backup_jobs()?;
    for job in due(&jobs, now_ms) {
        let next = next_slot(job, now_ms);
        if state.backup_runs.running(&job.name) {
            let mut skipped = job.clone();
            skipped.next_run_ms = next;
            state.store.update_backup_job(&skipped)?;
            state.events.record(&crate::model::NewEvent {
                time_ms: now_ms,
                severity: Severity::Warning,
                kind: "backup.job_skipped".into(),
                target: job.name.clone(),
                user: Some(SCHEDULER_USER.into()),
                host: None,
                message: format!(
                    "backup job {} skipped a run: its last run is still in progress",
                    job.name
                ),
                data: serde_json::Value::Null,
            })?;
            continue;
        }
        if let Err(e) = start_run(state, job, SCHEDULER_USER, next).await {
            tracing::warn!(job = %job.name, "backup job: {}", e.info.message);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, enabled: bool, next: Option<u64>) -> BackupJob {
        BackupJob {
            name: name.into(),
            vms: vec!["a".into()],
            repository: "/r".into(),
            schedule: "every 10s".into(),
            keep_last: 2,
            incremental: false,
            disks: Vec::new(),
            enabled,
            last_run_ms: None,
            next_run_ms: next,
            last_result: None,
        }
    }

    #[test]
    fn only_enabled_jobs_whose_slot_has_come_are_due() {
        let jobs = [
            job("due", true, Some(1000)),
            job("exactly", true, Some(2000)),
            job("later", true, Some(2001)),
            job("off", false, Some(1000)),
            job("never", true, None),
        ];
        let names: Vec<_> = due(&jobs, 2000).iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["due", "exactly"]);
    }

    #[test]
    fn the_next_slot_follows_the_schedule_and_is_none_when_disabled() {
        assert_eq!(next_slot(&job("j", true, None), 25_000), Some(30_000));
        assert_eq!(next_slot(&job("j", true, None), 30_000), Some(40_000));
        assert_eq!(next_slot(&job("j", false, None), 25_000), None);
        let mut bad = job("j", true, None);
        bad.schedule = "sometimes".into();
        assert_eq!(next_slot(&bad, 0), None);
    }

    #[test]
    fn a_job_is_claimed_once_until_its_run_ends() {
        let runs = BackupRuns::default();
        let claim = runs.claim("nightly").unwrap();
        assert!(runs.running("nightly"));
        assert!(runs.claim("nightly").is_none());
        assert!(runs.claim("other").is_some(), "other jobs run meanwhile");
        drop(claim);
        assert!(!runs.running("nightly"));
        assert!(runs.claim("nightly").is_some());
    }
}
