//! [`LoopBridge`]: a [`HostService`] that hands each call, with a reply channel, to a
//! single-threaded host loop ("the API never touches a VM itself"), so the loop owns all
//! state and answers in its own time.
//!
//! The loop receives [`ApiCall`]s (e.g. wrapped in its own `Inbound::Api`), does or
//! starts the work, and answers through the call's [`Reply`]. A loop that has stopped or
//! does not answer within the bridge's timeout makes the request a 503 `unavailable`.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use super::console::Console;
use super::error::{ApiError, Result};
use super::events::HostEvent;
use super::files::{BackupDir, BackupFileQuery, FileDownload};
use super::service::HostService;
use super::tasks::TaskHandle;
use super::types::{
    BackupInfo, BackupsQuery, ForgetRequest, ForgetResult, HostInfo, IncomingReady,
    IncomingRequest, VmInfo, VmOp, VmPatch, VmSpec,
};

/// Where the host loop answers one call.
#[derive(Debug)]
pub struct Reply<T>(mpsc::SyncSender<Result<T>>);

impl<T> Reply<T> {
    /// Answers the call (a caller that gave up waiting is no error of the loop's).
    pub fn send(self, answer: Result<T>) {
        let _ = self.0.send(answer);
    }
}

/// One request of the API to the host loop.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApiCall {
    /// [`HostService::host_info`].
    HostInfo(Reply<HostInfo>),
    /// [`HostService::list_vms`].
    ListVms(Reply<Vec<VmInfo>>),
    /// [`HostService::vm`].
    Vm {
        /// The VM.
        name: String,
        /// The answer.
        reply: Reply<VmInfo>,
    },
    /// [`HostService::create_vm`].
    CreateVm {
        /// The validated definition.
        spec: VmSpec,
        /// The answer.
        reply: Reply<VmInfo>,
    },
    /// [`HostService::delete_vm`].
    DeleteVm {
        /// The VM.
        name: String,
        /// The answer.
        reply: Reply<()>,
    },
    /// [`HostService::start_op`]: answer `Ok` once the work has started (it keeps
    /// `task`), or the refusal.
    StartOp {
        /// The VM.
        name: String,
        /// The validated operation.
        op: VmOp,
        /// The task the work reports through.
        task: TaskHandle,
        /// The answer.
        reply: Reply<()>,
    },
    /// [`HostService::console`].
    Console {
        /// The VM.
        name: String,
        /// The answer.
        reply: Reply<Console>,
    },
    /// [`HostService::events`].
    Events {
        /// Events numbered above this.
        after: u64,
        /// At most this many.
        limit: usize,
        /// The answer.
        reply: Reply<Vec<HostEvent>>,
    },
    /// [`HostService::prepare_incoming`].
    PrepareIncoming {
        /// The request.
        request: IncomingRequest,
        /// The answer.
        reply: Reply<IncomingReady>,
    },
    /// [`HostService::patch_vm`].
    PatchVm {
        /// The VM.
        name: String,
        /// What to change (not empty).
        patch: VmPatch,
        /// The answer.
        reply: Reply<VmInfo>,
    },
    /// [`HostService::maintenance`].
    Maintenance {
        /// Enter (`true`) or leave.
        enter: bool,
        /// The task the work reports through.
        task: TaskHandle,
        /// The answer.
        reply: Reply<()>,
    },
    /// [`HostService::backups`].
    Backups {
        /// The validated query.
        query: BackupsQuery,
        /// The answer.
        reply: Reply<Vec<BackupInfo>>,
    },
    /// [`HostService::forget_backups`].
    ForgetBackups {
        /// The validated request.
        request: ForgetRequest,
        /// The answer.
        reply: Reply<ForgetResult>,
    },
    /// [`HostService::backup_files`].
    BackupFiles {
        /// The validated query.
        query: BackupFileQuery,
        /// The answer.
        reply: Reply<BackupDir>,
    },
    /// [`HostService::backup_file`].
    BackupFile {
        /// The validated query.
        query: BackupFileQuery,
        /// The answer.
        reply: Reply<FileDownload>,
    },
}

/// The function that hands a call to the loop; `false` when the loop has gone.
type Deliver = Box<dyn Fn(ApiCall) -> bool + Send + Sync>;

/// A [`HostService`] that forwards every call to the host loop and waits for its answer.
///
/// ```
/// use std::sync::{mpsc, Arc};
/// use std::time::Duration;
/// use vinfra_host::api::*;
///
/// let (tx, rx) = mpsc::channel::<ApiCall>();
/// // The host loop (here a thread): it owns the state and answers each call.
/// let host_loop = std::thread::spawn(move || {
///     for call in rx {
///         match call {
///             ApiCall::ListVms(reply) => reply.send(Ok(Vec::new())),
///             ApiCall::Vm { name, reply } => reply.send(Err(ApiError::VmNotFound(name))),
///             _ => {}
///         }
///     }
/// });
/// let bridge = LoopBridge::new(move |call| tx.send(call).is_ok(), Duration::from_secs(5));
/// assert!(bridge.list_vms()?.is_empty());
/// assert_eq!(bridge.vm("web1").unwrap_err().code(), "vm_not_found");
/// drop(bridge); // closes the channel: the loop ends
/// host_loop.join().unwrap();
/// # Ok::<(), ApiError>(())
/// ```
pub struct LoopBridge {
    deliver: Deliver,
    timeout: Duration,
}

impl std::fmt::Debug for LoopBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopBridge")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl LoopBridge {
    /// A bridge that hands calls to `deliver` and waits up to `timeout` for each answer.
    pub fn new(
        deliver: impl Fn(ApiCall) -> bool + Send + Sync + 'static,
        timeout: Duration,
    ) -> Self {
        Self {
            deliver: Box::new(deliver),
            timeout,
        }
    }

    fn ask<T>(&self, call: impl FnOnce(Reply<T>) -> ApiCall) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        if !(self.deliver)(call(Reply(tx))) {
            return Err(ApiError::Unavailable("the host loop has stopped".into()));
        }
        match rx.recv_timeout(self.timeout) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => Err(ApiError::Unavailable(format!(
                "the host loop did not answer within {} ms",
                self.timeout.as_millis()
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(ApiError::Unavailable(
                "the host loop dropped the request unanswered".into(),
            )),
        }
    }
}

impl HostService for LoopBridge {
    fn host_info(&self) -> Result<HostInfo> {
        self.ask(ApiCall::HostInfo)
    }

    fn list_vms(&self) -> Result<Vec<VmInfo>> {
        self.ask(ApiCall::ListVms)
    }

    fn vm(&self, name: &str) -> Result<VmInfo> {
        self.ask(|reply| ApiCall::Vm {
            name: name.to_string(),
            reply,
        })
    }

    fn create_vm(&self, spec: VmSpec) -> Result<VmInfo> {
        self.ask(|reply| ApiCall::CreateVm { spec, reply })
    }

    fn delete_vm(&self, name: &str) -> Result<()> {
        self.ask(|reply| ApiCall::DeleteVm {
            name: name.to_string(),
            reply,
        })
    }

    fn start_op(&self, name: &str, op: VmOp, task: TaskHandle) -> Result<()> {
        self.ask(|reply| ApiCall::StartOp {
            name: name.to_string(),
            op,
            task,
            reply,
        })
    }

    fn console(&self, name: &str) -> Result<Console> {
        self.ask(|reply| ApiCall::Console {
            name: name.to_string(),
            reply,
        })
    }

    fn events(&self, after: u64, limit: usize) -> Result<Vec<HostEvent>> {
        self.ask(|reply| ApiCall::Events {
            after,
            limit,
            reply,
        })
    }

    fn prepare_incoming(&self, request: IncomingRequest) -> Result<IncomingReady> {
        self.ask(|reply| ApiCall::PrepareIncoming { request, reply })
    }

    fn patch_vm(&self, name: &str, patch: VmPatch) -> Result<VmInfo> {
        self.ask(|reply| ApiCall::PatchVm {
            name: name.to_string(),
            patch,
            reply,
        })
    }

    fn maintenance(&self, enter: bool, task: TaskHandle) -> Result<()> {
        self.ask(|reply| ApiCall::Maintenance { enter, task, reply })
    }

    fn backups(&self, query: BackupsQuery) -> Result<Vec<BackupInfo>> {
        self.ask(|reply| ApiCall::Backups { query, reply })
    }

    fn forget_backups(&self, request: ForgetRequest) -> Result<ForgetResult> {
        self.ask(|reply| ApiCall::ForgetBackups { request, reply })
    }

    fn backup_files(&self, query: BackupFileQuery) -> Result<BackupDir> {
        self.ask(|reply| ApiCall::BackupFiles { query, reply })
    }

    fn backup_file(&self, query: BackupFileQuery) -> Result<FileDownload> {
        self.ask(|reply| ApiCall::BackupFile { query, reply })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_or_silent_loop_is_unavailable() {
        let gone = LoopBridge::new(|_| false, Duration::from_secs(5));
        assert_eq!(gone.list_vms().unwrap_err().status(), 503);

        let (tx, rx) = mpsc::channel::<ApiCall>();
        let silent = LoopBridge::new(move |c| tx.send(c).is_ok(), Duration::from_millis(50));
        let err = silent.host_info().unwrap_err();
        assert!(
            matches!(err, ApiError::Unavailable(ref m) if m.contains("50 ms")),
            "{err}"
        );
        // A loop that drops the call without answering.
        let dropper = std::thread::spawn(move || rx.recv().map(drop));
        let err = silent.list_vms().unwrap_err();
        assert_eq!(err.code(), "unavailable");
        dropper.join().unwrap().unwrap();
    }
}
