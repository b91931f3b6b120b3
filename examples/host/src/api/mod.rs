//! The host API: HTTP/1.1 + JSON under `/api/v1`, for the management server and for
//! scripts (`vinfra`). The design is in examples/README.md ("Host API").
//!
//! The server runs axum on tokio threads of its own and never touches a VM: the host
//! implements [`HostService`] — or hands each call with a reply channel to its loop
//! through a [`LoopBridge`] — and long operations run as tasks that report through a [`TaskHandle`].
//! Every request but `GET /api/v1/openapi.json` carries `Authorization: Bearer TOKEN`,
//! TOKEN being [`ApiToken`] of the cluster key; errors are
//! `{"error":{"code":"…","message":"…"}}` with the statuses of [`ApiError::status`].
//!
//! ```
//! use std::sync::Arc;
//! use vinfra_host::api::*;
//!
//! /// A host with no VMs at all.
//! struct Empty;
//! impl HostService for Empty {
//!     fn host_info(&self) -> Result<HostInfo> {
//!         Ok(HostInfo::new(1, "esx1", HostCapacity { cpus: 2, memory_mib: 4096 }))
//!     }
//!     fn list_vms(&self) -> Result<Vec<VmInfo>> { Ok(Vec::new()) }
//!     fn vm(&self, name: &str) -> Result<VmInfo> { Err(ApiError::VmNotFound(name.into())) }
//!     fn create_vm(&self, _: VmSpec) -> Result<VmInfo> { Err(ApiError::Unsupported("read-only".into())) }
//!     fn delete_vm(&self, name: &str) -> Result<()> { Err(ApiError::VmNotFound(name.into())) }
//!     fn start_op(&self, name: &str, _: VmOp, _: TaskHandle) -> Result<()> {
//!         Err(ApiError::VmNotFound(name.into()))
//!     }
//!     fn console(&self, name: &str) -> Result<Console> { Err(ApiError::VmNotFound(name.into())) }
//!     fn events(&self, _: u64, _: usize) -> Result<Vec<HostEvent>> { Ok(Vec::new()) }
//!     fn prepare_incoming(&self, r: IncomingRequest) -> Result<IncomingReady> {
//!         Err(ApiError::VmNotFound(r.vm))
//!     }
//! }
//!
//! let token = ApiToken::from_key_hex(&"42".repeat(32))?;
//! let server = serve("127.0.0.1:0".parse()?, token.clone(), Arc::new(Empty))?;
//! let url = format!("http://{}/api/v1/host", server.local_addr());
//! let answer: HostInfo = ureq::get(&url)
//!     .header("Authorization", &format!("Bearer {}", token.as_str()))
//!     .call()?
//!     .body_mut()
//!     .read_json()?;
//! assert_eq!(answer.name, "esx1");
//! server.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod auth;
mod bridge;
pub mod client;
mod console;
mod error;
mod events;
mod files;
mod openapi;
mod power;
mod server;
mod service;
mod stream;
mod tasks;
mod types;

pub use auth::{ApiToken, KeyError};
pub use bridge::{ApiCall, LoopBridge, Reply};
pub use console::{console_pair, Console, ConsoleClosed, GuestConsole};
pub use error::{ApiError, ErrorBody, ErrorDetail, Result};
pub use events::{EventLog, HostEvent};
pub use files::{
    BackupDir, BackupFileEntry, BackupFileQuery, FileDownload, FileFormat, FileKind,
    FILES_LIST_MAX, GUEST_PATH_MAX,
};
pub use server::ApiDoc;
pub use server::{
    serve, ServeError, ServerHandle, BODY_LIMIT, CONSOLE_QUEUE, EVENTS_LIMIT_MAX, PREFIX,
};
pub use service::HostService;
pub use stream::{
    body_channel, content_disposition, BodyStream, BodyWriter, BODY_CHUNK, BODY_QUEUE,
};
pub use tasks::{system_now_ms, NowMs, TaskHandle, TaskInfo, TaskState, TaskTable, FINISHED_KEPT};
pub use types::*;
