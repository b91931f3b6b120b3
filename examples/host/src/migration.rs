//! Live migration as the VM binary does it: vmfs disks whose locks move with the VM
//! ([`VmfsHandover`]), the cluster key from a file, and the control socket of a running
//! `vinfra-vm run|incoming --control SOCK`, through which `vinfra-vm migrate` sends the VM
//! away and the host process asks for its status, powers it off, resets it and freezes
//! its vmfs disks for a backup.
//!
//! # The control socket
//!
//! A Unix socket; several connections at once; per connection one request line (JSON,
//! a [`ControlRequest`]), then [`ControlEvent`] lines until a final one:
//!
//! | request | final answer |
//! |---|---|
//! | `{"migrate":{…}}` | `{"progress":…}`… then `{"migrated":…}` or `{"failed":…}` |
//! | `"status"` | `{"status":{"state":"running","vcpus":1,"memory_mib":32,"dirty_log":true,"io":{…}}}` ([`VmIo`]) |
//! | `"power_off"` | `{"done":null}`, then the process exits 0 (a hard stop) |
//! | `"reset"` | `{"done":null}`: the guest booted again in the same process |
//! | `"power_button"` | `{"done":null}`: the ACPI power button pressed (a guest that supports it shuts down, powers off and the process exits 0) |
//! | `{"snapshot":{"disk":0,"since":7}}` | `{"snapshot":SnapshotInfo}` ([`crate::backup_control`]'s handshake on the VM's vmfs disk number `disk`) |
//! | `{"consolidate":{"disk":0}}` | `{"done":null}` |
//!
//! Errors answer `{"failed":{"error":"…","in_doubt":false}}`. `status`, `power_off` and
//! `reset` are answered within one turn of the VM's watch loop (10 ms), `snapshot` and
//! `consolidate` on the connection's own thread; a `migrate` holds the watch loop until
//! it ends, and requests that need the loop wait for it meanwhile.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vinfra_vmotion::{
    ClusterKey, DiskHandover, MigrationOptions, MigrationStats, Progress, Security, VmError, VmOp,
};

use crate::vmfs_disk::{VmfsDiskBackend, VmfsDiskError};

/// How long taking a disk lock back keeps trying while another live host holds it: the
/// destination releases the disks as soon as it learns of an abort, but may not have yet.
pub const REACQUIRE_PATIENCE: Duration = Duration::from_secs(5);

/// A vmfs disk as a lock that moves with its VM.
#[derive(Debug, Clone)]
pub struct VmfsHandover(pub Arc<VmfsDiskBackend>);

fn refused(e: &VmfsDiskError) -> bool {
    matches!(
        e,
        VmfsDiskError::Open {
            source: vinfra_vmfs::Error::Locked { .. },
            ..
        }
    )
}

impl DiskHandover for VmfsHandover {
    fn release(&self) -> Result<(), VmError> {
        self.0
            .release()
            .map_err(|e| VmError::failed(VmOp::ReleaseDisks, e))
    }

    fn acquire(&self) -> Result<(), VmError> {
        let deadline = Instant::now() + REACQUIRE_PATIENCE;
        loop {
            match self.0.acquire() {
                Ok(()) => return Ok(()),
                Err(e) if refused(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) if refused(&e) => return Err(VmError::lock_refused(VmOp::AcquireDisks, e)),
                Err(e) => return Err(VmError::failed(VmOp::AcquireDisks, e)),
            }
        }
    }
}

/// How the stream is protected, as the command line says it: a key file (64 hex digits,
/// as `vinfra-vm keygen` writes) or plaintext, chosen explicitly.
pub fn security(key_file: Option<&Path>, plaintext: bool) -> Result<Security, String> {
    match (key_file, plaintext) {
        (Some(_), true) => Err("--key-file and --plaintext exclude each other".into()),
        (None, false) => Err(
            "a migration needs --key-file FILE (the cluster key; `vinfra-vm keygen` makes one) \
             or, explicitly, --plaintext"
                .into(),
        ),
        (None, true) => Ok(Security::Plaintext),
        (Some(path), false) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("read the key file {}: {e}", path.display()))?;
            ClusterKey::from_hex(&text)
                .map(Security::Aead)
                .map_err(|e| format!("the key file {}: {e}", path.display()))
        }
    }
}

/// The migration settings a `migrate` request carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateSettings {
    /// Where the destination listens (`host:port`).
    pub to: String,
    /// The cluster key file; `None` with `plaintext`.
    pub key_file: Option<PathBuf>,
    /// No encryption, chosen explicitly.
    pub plaintext: bool,
    /// The downtime target (ms).
    pub downtime_ms: u64,
    /// A bandwidth cap (bytes per second).
    pub bandwidth_bytes_per_s: Option<u64>,
    /// Abort after this long (ms); the VM keeps running here.
    pub time_limit_ms: u64,
    /// Throttle a guest that dirties faster than the link.
    pub auto_converge: bool,
}

impl MigrateSettings {
    /// The options for the vmotion crate (reads the key file).
    pub fn options(&self) -> Result<MigrationOptions, String> {
        let mut opts = MigrationOptions::new(security(self.key_file.as_deref(), self.plaintext)?);
        opts.downtime_ms_max = self.downtime_ms;
        opts.bandwidth_bytes_per_s = self.bandwidth_bytes_per_s;
        opts.time_limit_ms = self.time_limit_ms;
        opts.auto_converge = self.auto_converge;
        Ok(opts)
    }
}

/// A request on the control socket (the module's table).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ControlRequest {
    /// Send the VM to another host (`vinfra-vm migrate`).
    Migrate(MigrateSettings),
    /// The VM's power state and size.
    Status,
    /// Stop the VM hard; the process exits 0.
    PowerOff,
    /// Boot the guest again in place.
    Reset,
    /// Press the ACPI power button (graceful shutdown, if the guest supports it).
    PowerButton,
    /// Freeze vmfs disk number `disk` for a backup ([`crate::backup_control`]).
    Snapshot {
        /// Index into the VM's `--vmfs-disk` list.
        disk: usize,
        /// The previous backup's change id of this disk, if any.
        #[serde(default)]
        since: Option<u64>,
    },
    /// Fold the redo log written since the snapshot back into vmfs disk number `disk`.
    Consolidate {
        /// Index into the VM's `--vmfs-disk` list.
        disk: usize,
    },
}

/// A VM's power state as the control socket reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunState {
    /// vCPUs run guest code.
    Running,
    /// Every vCPU is parked (a migration's switchover, a snapshot).
    Paused,
    /// Stopped.
    ShutOff,
    /// Stopped by a crash.
    Crashed,
}

impl From<vinfra_vmm_core::PowerState> for RunState {
    fn from(s: vinfra_vmm_core::PowerState) -> Self {
        use vinfra_vmm_core::PowerState as P;
        match s {
            P::Running => RunState::Running,
            P::Paused => RunState::Paused,
            P::Crashed => RunState::Crashed,
            _ => RunState::ShutOff,
        }
    }
}

/// The answer to `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VmStatus {
    /// The power state.
    pub state: RunState,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory.
    pub memory_mib: u64,
    /// Whether KVM logs the guest's writes (a migration can start without stalling it).
    pub dirty_log: bool,
    /// Disk and console I/O since this process started the VM.
    #[serde(default)]
    pub io: VmIo,
}

impl VmStatus {
    /// A VM's status, without I/O counts.
    pub fn new(state: RunState, vcpus: u32, memory_mib: u64, dirty_log: bool) -> Self {
        Self {
            state,
            vcpus,
            memory_mib,
            dirty_log,
            io: VmIo::default(),
        }
    }

    /// With these I/O counts.
    #[must_use]
    pub fn with_io(mut self, io: VmIo) -> Self {
        self.io = io;
        self
    }
}

/// A VM's disk and console I/O as its process counts it (all its virtio-blk disks
/// together; the console is COM1), since the process started the VM: a VM that arrived
/// by live migration counts from its arrival.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VmIo {
    /// Read requests completed.
    pub disk_reads: u64,
    /// Write requests completed.
    pub disk_writes: u64,
    /// Flushes completed.
    pub disk_flushes: u64,
    /// Bytes read from the disks.
    pub disk_read_bytes: u64,
    /// Bytes written to the disks.
    pub disk_written_bytes: u64,
    /// Console bytes sent to the guest.
    pub console_in_bytes: u64,
    /// Console bytes the guest wrote.
    pub console_out_bytes: u64,
}

impl VmIo {
    /// The counts of `vm`'s devices.
    pub fn of(vm: &vinfra_vmm_core::Vm) -> Self {
        let mut io = VmIo::default();
        for d in vm.disk_stats() {
            io.disk_reads += d.reads;
            io.disk_writes += d.writes;
            io.disk_flushes += d.flushes;
            io.disk_read_bytes += d.bytes_read;
            io.disk_written_bytes += d.bytes_written;
        }
        let c = vm.console_stats();
        io.console_in_bytes = c.in_bytes;
        io.console_out_bytes = c.out_bytes;
        io
    }
}

/// What the running VM answers on the control socket, one per line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ControlEvent {
    /// Where the migration is.
    Progress(Progress),
    /// The destination runs the VM; this process is about to exit.
    Migrated(MigrationStats),
    /// The migration failed; the VM runs here still (unless `in_doubt`).
    Failed {
        /// What happened.
        error: String,
        /// The VM is paused here and must not be resumed (README of vmotion).
        in_doubt: bool,
    },
    /// The answer to `status`.
    Status(VmStatus),
    /// A frozen disk, the answer to `snapshot`.
    Snapshot(vinfra_vcb::vmfs::SnapshotInfo),
    /// `power_off`, `reset`, `power_button` or `consolidate` done (`{"done":null}`).
    Done(()),
}

impl ControlEvent {
    /// A failure that leaves the VM as it was.
    pub fn failed(error: impl Into<String>) -> Self {
        ControlEvent::Failed {
            error: error.into(),
            in_doubt: false,
        }
    }

    /// Whether more events follow this one.
    pub fn is_final(&self) -> bool {
        !matches!(self, ControlEvent::Progress(_))
    }
}

/// Longest request line read (a request is a few hundred bytes).
const MAX_REQUEST: u64 = 64 << 10;

/// Writes one event line; a client that went away is not an error for the VM.
pub fn send_event(stream: &mut UnixStream, event: &ControlEvent) {
    if let Ok(mut line) = serde_json::to_vec(event) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}

/// Reads one request line from a control client.
pub fn read_request(stream: &UnixStream) -> Result<ControlRequest, String> {
    let mut line = String::new();
    BufReader::new(Read::take(stream, MAX_REQUEST))
        .read_line(&mut line)
        .map_err(|e| format!("read the control request: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("bad control request: {e}"))
}

/// Sends `request` to the VM process at `socket` and hands each event to `on_event` until
/// the final one (anything but `Progress`), which it returns.
pub fn request(
    socket: &Path,
    request: &ControlRequest,
    on_event: impl FnMut(&ControlEvent),
) -> Result<ControlEvent, String> {
    request_within(socket, request, None, on_event)
}

/// [`request`], giving up when no line arrives for `timeout` (`None`: wait for ever, as a
/// migration's client does).
pub fn request_within(
    socket: &Path,
    request: &ControlRequest,
    timeout: Option<Duration>,
    mut on_event: impl FnMut(&ControlEvent),
) -> Result<ControlEvent, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "connect to the VM's control socket {}: {e}",
            socket.display()
        )
    })?;
    stream
        .set_read_timeout(timeout)
        .map_err(|e| format!("control socket: {e}"))?;
    let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| format!("send the request: {e}"))?;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(|e| format!("read from the VM: {e}"))?;
        let event: ControlEvent =
            serde_json::from_str(&line).map_err(|e| format!("bad answer from the VM: {e}"))?;
        on_event(&event);
        if event.is_final() {
            return Ok(event);
        }
    }
    Err("the VM process closed the control socket without an answer".into())
}
