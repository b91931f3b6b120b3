//! The seam between the API server and the host: the host implements [`HostService`];
//! the server calls it from its blocking-thread pool (never from an async task), so an
//! implementation may block briefly, e.g. on a reply channel to the host loop.

use super::console::Console;
use super::error::ApiError;
use super::error::Result;
use super::events::HostEvent;
use super::files::{BackupDir, BackupFileQuery, FileDownload};
use super::tasks::TaskHandle;
use super::types::{
    BackupInfo, BackupsQuery, ForgetRequest, ForgetResult, HostInfo, IncomingReady,
    IncomingRequest, VmInfo, VmOp, VmPatch, VmSpec,
};

/// What a host does for its API.
///
/// Every input is validated before it gets here: VM names satisfy
/// [`validate_name`](super::validate_name), a [`VmSpec`] and a [`VmOp`] passed their
/// `validate`. Each refusal is an [`ApiError`](super::ApiError) variant (unknown VM 404,
/// wrong state 409, impossible 422, …) and must leave everything as it was.
pub trait HostService: Send + Sync + 'static {
    /// `GET /host`.
    fn host_info(&self) -> Result<HostInfo>;

    /// `GET /vms`: every VM defined on the volume.
    fn list_vms(&self) -> Result<Vec<VmInfo>>;

    /// `GET /vms/NAME`.
    fn vm(&self, name: &str) -> Result<VmInfo>;

    /// `POST /vms`: defines a VM (shut off) on the volume and creates its disks.
    fn create_vm(&self, spec: VmSpec) -> Result<VmInfo>;

    /// `DELETE /vms/NAME`: only when it is off.
    fn delete_vm(&self, name: &str) -> Result<()>;

    /// `POST /vms/NAME/<op>`: checks now whether the operation can start (and returns the
    /// refusal if not), then does the work in the background, reporting progress and the
    /// result through `task`. Returning `Ok` means the work has started and owns `task`;
    /// on `Err` the task is forgotten as if never made.
    fn start_op(&self, name: &str, op: VmOp, task: TaskHandle) -> Result<()>;

    /// `GET /vms/NAME/console`: a new viewer of a running VM's serial console (make one
    /// with [`console_pair`](super::console_pair) and keep the other end).
    fn console(&self, name: &str) -> Result<Console>;

    /// `GET /events?after=SEQ`: events numbered above `after`, oldest first, at most
    /// `limit` (an [`EventLog`](super::EventLog) answers exactly this).
    fn events(&self, after: u64, limit: usize) -> Result<Vec<HostEvent>>;

    /// `POST /incoming` (host to host): gets ready to receive a migrating VM and says
    /// where to send it.
    fn prepare_incoming(&self, request: IncomingRequest) -> Result<IncomingReady>;

    /// `PATCH /vms/NAME`: rewrites the VM's settings (its HA restart priority and
    /// isolation response) on the volume, running or not; the HA agents read them at
    /// their next failover. The patch is not empty. A host that keeps no such settings
    /// refuses (the default).
    fn patch_vm(&self, name: &str, patch: VmPatch) -> Result<VmInfo> {
        let _ = (name, patch);
        Err(ApiError::Unsupported(
            "this host cannot change a VM's settings".into(),
        ))
    }

    /// `POST /host/maintenance`: as [`HostService::start_op`], for the host itself:
    /// entering moves its VMs off (a task), leaving takes effect at once. A host that
    /// has no maintenance mode refuses (the default).
    fn maintenance(&self, enter: bool, task: TaskHandle) -> Result<()> {
        let _ = (enter, task);
        Err(ApiError::Unsupported(
            "this host has no maintenance mode".into(),
        ))
    }

    /// `GET /backups?repository=PATH[&vm=NAME]`: the backups in a repository, oldest
    /// first. A host without backups refuses (the default).
    fn backups(&self, query: BackupsQuery) -> Result<Vec<BackupInfo>> {
        let _ = query;
        Err(ApiError::Unsupported("this host keeps no backups".into()))
    }

    /// `POST /backups/forget`: keeps a VM's newest backups, forgets the others and
    /// prunes the repository. A host without backups refuses (the default).
    fn forget_backups(&self, request: ForgetRequest) -> Result<ForgetResult> {
        let _ = request;
        Err(ApiError::Unsupported("this host keeps no backups".into()))
    }

    /// `GET /backups/files`: a directory of the guest filesystem on a disk of a backup
    /// (the query is validated). A host without backups refuses (the default).
    fn backup_files(&self, query: BackupFileQuery) -> Result<BackupDir> {
        let _ = query;
        Err(ApiError::Unsupported("this host keeps no backups".into()))
    }

    /// `GET /backups/file`: a guest file (or with `format=tar` a tree) out of a backup,
    /// once the path is found: the body is written by the host's own thread while the
    /// server sends it. A host without backups refuses (the default).
    fn backup_file(&self, query: BackupFileQuery) -> Result<FileDownload> {
        let _ = query;
        Err(ApiError::Unsupported("this host keeps no backups".into()))
    }
}
