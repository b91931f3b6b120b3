//! A VM in a child process of its own: `vinfra-host run` starts each VM as a
//! `vinfra-vm run` child ([`VmProcess::spawn`]) and drives it through its control socket
//! (the protocol is in [`crate::migration`]). A VM that crashes or is killed takes
//! neither the host nor its other VMs down; the host sees its exit status
//! ([`VmProcess::try_wait`]).
//!
//! # The child stops with its host
//!
//! * **Host death**: the child is spawned with `PR_SET_PDEATHSIG(SIGKILL)`. The kernel
//!   sends the signal when the *thread* that forked the child ends, so spawn from a
//!   thread that lives as long as the host (the host loop's).
//! * **Host lease**: the child reads its host's lease on a pipe (`--parent-lease-fd`).
//!   The host calls [`VmProcess::feed_lease`] each time its own volume lease was
//!   confirmed valid (every tick); a child that hears nothing for half the lease, or
//!   finds the pipe closed, stops its VM and exits 75 (`exit_status::FENCED`). A frozen
//!   host (SIGSTOP, a stuck kernel) so loses its VMs before a peer can break its locks.
//!   Dropping a `VmProcess` closes the pipe and kills the child.
//!
//! # Statistics
//!
//! [`VmProcess::stats`] reads `/proc/PID`: the CPU time of the whole process (vCPU
//! threads and the VMM's) and its resident memory. Nothing is asked of the child.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use vinfra_vcb::vmfs::SnapshotInfo;
use vinfra_vmm_core::VmConfig;
use vinfra_vmotion::{MigrationStats, Progress};

use crate::migration::{request_within, ControlEvent, ControlRequest, MigrateSettings, VmStatus};

/// The environment variable that names the `vinfra-vm` binary (tests, installs that keep
/// it elsewhere); by default it is the one beside the current executable.
pub const VM_BIN_ENV: &str = "VINFRA_VM_BIN";

/// How long a quick control request (`status`, `power_off`, `reset`) may take: short,
/// since the host loop that asks must go on feeding its other VMs' leases.
pub const QUICK: Duration = Duration::from_secs(1);
/// How long a disk request (`snapshot`, `consolidate`) may take.
pub const DISK: Duration = Duration::from_secs(60);
/// The longest console line passed on; the rest of a longer line is dropped.
const MAX_LINE: usize = 4096;
/// The kernel's USER_HZ, the unit of `/proc/PID/stat`'s times: 100 on every Linux ABI
/// this runs on (x86-64, arm64), whatever the kernel's own HZ.
const USER_HZ: u64 = 100;

/// Errors of a VM process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmProcessError {
    /// The `vinfra-vm` binary was not found.
    #[error("the vinfra-vm binary: {0}")]
    Binary(String),
    /// Writing the VM's configuration into the run directory failed.
    #[error("write {path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What happened.
        #[source]
        source: std::io::Error,
    },
    /// The child could not be started.
    #[error("start {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// What happened.
        #[source]
        source: std::io::Error,
    },
    /// The control socket could not be used (not there yet, the child is gone, a bad
    /// answer).
    #[error("VM {vm}: {request}: {message}")]
    Control {
        /// The VM.
        vm: String,
        /// The request.
        request: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The VM refused or failed the request.
    #[error("VM {vm}: {request} failed{}: {error}", if *in_doubt { " (in doubt)" } else { "" })]
    Failed {
        /// The VM.
        vm: String,
        /// The request.
        request: &'static str,
        /// The VM's words.
        error: String,
        /// After a migration: the VM is paused and must not run here again.
        in_doubt: bool,
    },
    /// Waiting for, signalling or reading `/proc` of the child failed.
    #[error("VM {vm} (pid {pid}): {what}: {source}")]
    Process {
        /// The VM.
        vm: String,
        /// The child's pid.
        pid: u32,
        /// What was done.
        what: &'static str,
        /// What happened.
        #[source]
        source: std::io::Error,
    },
}

/// Result of this module.
pub type Result<T, E = VmProcessError> = std::result::Result<T, E>;

/// How the child gets its VM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Start {
    /// Boot it (`vinfra-vm run`).
    Boot,
    /// Wait for it to arrive by live migration (`vinfra-vm incoming --listen`); the
    /// control socket answers once it runs here.
    Incoming {
        /// Where to listen, `host:port` (a port the caller chose: the address is what it
        /// hands the source).
        listen: String,
        /// The cluster key file; `None`: plaintext, chosen explicitly.
        key_file: Option<PathBuf>,
    },
}

/// What to start.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VmSpec {
    /// Boot, or receive by live migration.
    pub start: Start,
    /// The VM's name (files in the run directory are named after it).
    pub name: String,
    /// Its vmm-core configuration, written to `RUN/NAME.json` for `--config`.
    pub config: VmConfig,
    /// The host's run directory (config files and control sockets).
    pub run_dir: PathBuf,
    /// The shared volume, when the VM has vmfs disks (the child mounts it in a slot of its
    /// own, `--host-id auto`).
    pub volume: Option<PathBuf>,
    /// The VM's disks on the volume (`--vmfs-disk`), in the order `snapshot`'s `disk`
    /// counts them.
    pub vmfs_disks: Vec<String>,
    /// The host's volume lease: the child stops after half of it without a
    /// [`VmProcess::feed_lease`].
    pub lease_ms: u64,
    /// More `vinfra-vm run` flags (NICs, `--switch`, `--page-sharing`...).
    pub extra_args: Vec<OsString>,
    /// The child's stderr: appended to this file, or the host's own when `None`.
    pub stderr_log: Option<PathBuf>,
    /// The binary; `None`: `$VINFRA_VM_BIN`, else `vinfra-vm` beside this executable.
    pub binary: Option<PathBuf>,
}

impl VmSpec {
    /// A VM without vmfs disks, with the defaults above.
    pub fn new(name: &str, config: VmConfig, run_dir: &Path, lease_ms: u64) -> Self {
        Self {
            start: Start::Boot,
            name: name.to_string(),
            config,
            run_dir: run_dir.to_path_buf(),
            volume: None,
            vmfs_disks: Vec::new(),
            lease_ms,
            extra_args: Vec::new(),
            stderr_log: None,
            binary: None,
        }
    }

    /// The VM's control socket.
    pub fn control_path(&self) -> PathBuf {
        self.run_dir.join(format!("{}.sock", self.name))
    }

    /// The VM's configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.run_dir.join(format!("{}.json", self.name))
    }
}

/// How a child ended: its exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Exit {
    /// The exit status (`exit_status` lists them).
    pub code: Option<i32>,
    /// The signal that ended it (9 for a kill -9).
    pub signal: Option<i32>,
}

impl From<ExitStatus> for Exit {
    fn from(s: ExitStatus) -> Self {
        Exit {
            code: s.code(),
            signal: s.signal(),
        }
    }
}

/// What `/proc/PID` says about a VM process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ProcessStats {
    /// CPU time used, user and system, all threads (ns; USER_HZ resolution, 10 ms).
    pub cpu_ns: u64,
    /// Resident memory (bytes).
    pub rss_bytes: u64,
}

/// The `vinfra-vm` binary to start.
pub fn vm_binary(spec: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = spec {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(VM_BIN_ENV) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| VmProcessError::Binary(e.to_string()))?;
    let path = exe.with_file_name("vinfra-vm");
    match path.exists() {
        true => Ok(path),
        false => Err(VmProcessError::Binary(format!(
            "{} does not exist (set {VM_BIN_ENV})",
            path.display()
        ))),
    }
}

/// A running `vinfra-vm` child.
#[derive(Debug)]
pub struct VmProcess {
    name: String,
    child: Child,
    control: PathBuf,
    lease: Option<File>,
    stdin: Option<ChildStdin>,
    exit: Option<Exit>,
    /// Whether the control socket has answered once (the VM then runs).
    answered: bool,
}

/// Waits for a just-started VM's control socket from any thread
/// ([`VmProcess::until_answering`]): the child publishes it once its VM runs, which
/// takes from a few ms to a second or more (it mounts the volume and builds the VM),
/// while the host's start has already succeeded.
#[derive(Debug, Clone)]
pub struct ControlWait {
    name: String,
    pid: u32,
    control: PathBuf,
}

impl ControlWait {
    /// Polls the socket until it answers `status`, for at most `limit`; fails at once
    /// when the process has ended (it is not reaped here: its owner still sees how).
    pub fn wait(&self, limit: Duration) -> Result<VmStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let answer =
                request_within(&self.control, &ControlRequest::Status, Some(QUICK), |_| {});
            let message = match answer {
                Ok(ControlEvent::Status(s)) => return Ok(s),
                Ok(other) => format!("unexpected answer {other:?}"),
                Err(m) => m,
            };
            let why = if has_exited(self.pid) {
                format!("the VM process ended before its control socket answered: {message}")
            } else if Instant::now() >= deadline {
                format!("its control socket did not answer within {limit:?}: {message}")
            } else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            return Err(VmProcessError::Control {
                vm: self.name.clone(),
                request: "status",
                message: why,
            });
        }
    }
}

/// Whether child `pid` of this process has ended, without reaping it.
#[allow(unsafe_code, reason = "waitid(2) with WNOWAIT has no wrapper in std")]
fn has_exited(pid: u32) -> bool {
    // SAFETY: siginfo_t is plain data that waitid fills in; zeroed it reads "none
    // ended" (si_pid 0), which WNOHANG leaves when the child still runs.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes only into `info`, which lives for the call; WNOWAIT leaves
    // the child for its `Child` to reap.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // An error (ECHILD: reaped already, not ours) counts as ended too.
    // SAFETY: si_pid is valid for a siginfo_t filled by waitid (or zeroed).
    r != 0 || unsafe { info.si_pid() } != 0
}

/// A pipe for the lease, both ends closed on exec (`tie_to_parent` lets the child's end
/// through): `(read end, write end)`.
#[allow(
    unsafe_code,
    reason = "pipe2(2) has no safe wrapper in std at this MSRV"
)]
fn lease_pipe() -> std::io::Result<(OwnedFd, File)> {
    let mut fds: [libc::c_int; 2] = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the two-int array it is given, which
    // lives for the call.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just created both descriptors; nothing else owns or closes them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((read, File::from(write)))
}

/// Makes the write end of the lease pipe non-blocking: a child that stopped reading must
/// never stall the host loop that feeds it.
#[allow(unsafe_code, reason = "fcntl(2) has no safe wrapper in std")]
fn set_nonblocking(fd: i32) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns (the pipe's write end, alive for
    // the call) reads and sets its status flags; no memory is involved.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    match ok {
        true => Ok(()),
        false => Err(std::io::Error::last_os_error()),
    }
}

/// Ties the child to this host: SIGKILL when the spawning thread dies, and the lease
/// pipe's read end kept open across exec.
#[allow(unsafe_code, reason = "pre_exec and prctl/fcntl have no safe wrapper")]
fn tie_to_parent(cmd: &mut Command, lease_fd: i32) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe functions may be called: prctl, getppid and fcntl are (no
    // allocation, no lock; the error path builds an io::Error from an errno without
    // allocating). It touches only the child's own descriptors and process attributes.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: the signal would never come.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            let flags = libc::fcntl(lease_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(lease_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn pump_console(out: impl Read, mut on_line: impl FnMut(String)) {
    let mut reader = BufReader::new(out);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader
            .by_ref()
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') && buf.len() >= MAX_LINE {
            // Skip the rest of an overlong line.
            let mut rest = Vec::new();
            if reader.read_until(b'\n', &mut rest).is_err() {
                return;
            }
        }
        on_line(String::from_utf8_lossy(&buf).trim_end().to_string());
    }
}

impl VmProcess {
    /// Writes the VM's configuration into the run directory and starts `vinfra-vm run`
    /// (or `incoming`, [`Start`]) with it; each line of the guest's console goes to
    /// `on_line` (on a thread of its own). The control socket answers once the child has
    /// bound it, a few ms later, and for `incoming` once the VM has arrived
    /// ([`VmProcess::wait_ready`]).
    pub fn spawn(spec: &VmSpec, on_line: impl FnMut(String) + Send + 'static) -> Result<Self> {
        let binary = vm_binary(spec.binary.as_deref())?;
        let config_path = spec.config_path();
        let cerr = |source| VmProcessError::Config {
            path: config_path.clone(),
            source,
        };
        std::fs::create_dir_all(&spec.run_dir).map_err(cerr)?;
        let json = serde_json::to_vec_pretty(&spec.config).map_err(|e| cerr(e.into()))?;
        std::fs::write(&config_path, json).map_err(cerr)?;
        let serr = |source| VmProcessError::Spawn {
            binary: binary.clone(),
            source,
        };
        // Both ends close on exec (std makes them so); the child's end is let through
        // by `tie_to_parent`, so siblings never hold each other's pipes.
        let (reader, writer) = lease_pipe().map_err(serr)?;
        set_nonblocking(writer.as_raw_fd()).map_err(serr)?;
        let control = spec.control_path();
        let mut cmd = Command::new(&binary);
        match &spec.start {
            Start::Boot => {
                cmd.arg("run");
            }
            Start::Incoming { listen, key_file } => {
                cmd.arg("incoming").arg("--listen").arg(listen);
                match key_file {
                    Some(k) => cmd.arg("--key-file").arg(k),
                    None => cmd.arg("--plaintext"),
                };
            }
        }
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--control")
            .arg(&control)
            .arg("--parent-lease-fd")
            .arg(reader.as_raw_fd().to_string())
            .arg("--parent-lease-ms")
            .arg(spec.lease_ms.to_string());
        if let Some(v) = &spec.volume {
            cmd.arg("--volume").arg(v).args(["--host-id", "auto"]);
            for d in &spec.vmfs_disks {
                cmd.arg("--vmfs-disk").arg(d);
            }
        }
        cmd.args(&spec.extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        match &spec.stderr_log {
            Some(p) => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(serr)?;
                cmd.stderr(log);
            }
            None => {
                cmd.stderr(Stdio::inherit());
            }
        }
        tie_to_parent(&mut cmd, reader.as_raw_fd());
        let mut child = cmd.spawn().map_err(serr)?;
        drop(reader);
        let stdout = child.stdout.take();
        let stdin = child.stdin.take();
        if let Some(out) = stdout {
            let spawned = std::thread::Builder::new()
                .name(format!("console-{}", spec.name))
                .spawn(move || pump_console(out, on_line));
            if let Err(e) = spawned {
                let _ = child.kill();
                let _ = child.wait();
                return Err(serr(e));
            }
        }
        tracing::info!(vm = spec.name, pid = child.id(), "VM process started");
        Ok(Self {
            name: spec.name.clone(),
            child,
            control: control.clone(),
            lease: Some(writer),
            stdin,
            exit: None,
            answered: false,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The VM's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The control socket's path.
    pub fn control_path(&self) -> &Path {
        &self.control
    }

    /// Tells the child that the host's lease is valid (one byte; never blocks). A child
    /// that stopped reading or is gone is not an error here: its exit is seen by
    /// [`VmProcess::try_wait`].
    pub fn feed_lease(&mut self) {
        if let Some(w) = self.lease.as_mut() {
            let _ = w.write(&[1]);
        }
    }

    /// Closes the lease pipe: the child stops its VM at once (exit 75).
    pub fn close_lease(&mut self) {
        self.lease = None;
    }

    /// Sends bytes to the guest's serial console.
    pub fn send_console(&mut self, bytes: &[u8]) -> Result<()> {
        let (vm, pid) = (self.name.clone(), self.pid());
        let stdin = self.stdin.as_mut().ok_or_else(|| VmProcessError::Process {
            vm: vm.clone(),
            pid,
            what: "console input",
            source: std::io::ErrorKind::BrokenPipe.into(),
        })?;
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .map_err(|source| VmProcessError::Process {
                vm,
                pid,
                what: "console input",
                source,
            })
    }

    fn ask(
        &self,
        what: &'static str,
        req: &ControlRequest,
        timeout: Option<Duration>,
        on_event: impl FnMut(&ControlEvent),
    ) -> Result<ControlEvent> {
        let event = request_within(&self.control, req, timeout, on_event).map_err(|message| {
            VmProcessError::Control {
                vm: self.name.clone(),
                request: what,
                message,
            }
        })?;
        match event {
            ControlEvent::Failed { error, in_doubt } => Err(VmProcessError::Failed {
                vm: self.name.clone(),
                request: what,
                error,
                in_doubt,
            }),
            e => Ok(e),
        }
    }

    fn unexpected(&self, what: &'static str, e: &ControlEvent) -> VmProcessError {
        VmProcessError::Control {
            vm: self.name.clone(),
            request: what,
            message: format!("unexpected answer {e:?}"),
        }
    }

    fn done(&self, what: &'static str, req: &ControlRequest, timeout: Duration) -> Result<()> {
        match self.ask(what, req, Some(timeout), |_| {})? {
            ControlEvent::Done(()) => Ok(()),
            e => Err(self.unexpected(what, &e)),
        }
    }

    /// The VM's power state and size.
    pub fn status(&self) -> Result<VmStatus> {
        match self.ask("status", &ControlRequest::Status, Some(QUICK), |_| {})? {
            ControlEvent::Status(s) => Ok(s),
            e => Err(self.unexpected("status", &e)),
        }
    }

    /// What waits, on another thread, for the control socket of a VM that has not
    /// answered yet; `None` once it has ([`VmProcess::answered`]).
    pub fn until_answering(&self) -> Option<ControlWait> {
        (!self.answered).then(|| self.control_wait())
    }

    fn control_wait(&self) -> ControlWait {
        ControlWait {
            name: self.name.clone(),
            pid: self.pid(),
            control: self.control.clone(),
        }
    }

    /// Records that the control socket answered (a [`ControlWait`] succeeded).
    pub fn answered(&mut self) {
        self.answered = true;
    }

    /// Waits until the control socket answers `status`, for at most `limit` (fails at
    /// once if the process ends first).
    pub fn wait_ready(&mut self, limit: Duration) -> Result<VmStatus> {
        let status = self.control_wait().wait(limit)?;
        self.answered = true;
        Ok(status)
    }

    /// Stops the VM hard; the child exits 0 right after.
    pub fn power_off(&self) -> Result<()> {
        self.done("power_off", &ControlRequest::PowerOff, QUICK)
    }

    /// Boots the guest again inside the same process.
    pub fn reset(&self) -> Result<()> {
        self.done("reset", &ControlRequest::Reset, QUICK)
    }

    /// Presses the guest's ACPI power button; the guest may then shut down and power off
    /// (the process exits 0), or ignore it.
    pub fn press_power_button(&self) -> Result<()> {
        self.done("power_button", &ControlRequest::PowerButton, QUICK)
    }

    /// Sends the VM to another host; each progress event goes to `on_progress`. On
    /// success the child exits 0.
    pub fn migrate(
        &self,
        settings: MigrateSettings,
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<MigrationStats> {
        let event = self.ask("migrate", &ControlRequest::Migrate(settings), None, |e| {
            if let ControlEvent::Progress(p) = e {
                on_progress(p);
            }
        })?;
        match event {
            ControlEvent::Migrated(stats) => Ok(stats),
            e => Err(self.unexpected("migrate", &e)),
        }
    }

    /// Freezes vmfs disk number `disk` for a backup (`since`: the previous backup's
    /// change id).
    pub fn snapshot(&self, disk: usize, since: Option<u64>) -> Result<SnapshotInfo> {
        let req = ControlRequest::Snapshot { disk, since };
        match self.ask("snapshot", &req, Some(DISK), |_| {})? {
            ControlEvent::Snapshot(info) => Ok(info),
            e => Err(self.unexpected("snapshot", &e)),
        }
    }

    /// Folds the redo log written since the snapshot back into vmfs disk number `disk`.
    pub fn consolidate(&self, disk: usize) -> Result<()> {
        self.done("consolidate", &ControlRequest::Consolidate { disk }, DISK)
    }

    fn process_error(&self, what: &'static str, source: std::io::Error) -> VmProcessError {
        VmProcessError::Process {
            vm: self.name.clone(),
            pid: self.pid(),
            what,
            source,
        }
    }

    /// How the child ended, once it has (reaps it).
    pub fn try_wait(&mut self) -> Result<Option<Exit>> {
        if self.exit.is_none() {
            let status = self
                .child
                .try_wait()
                .map_err(|e| self.process_error("wait", e))?;
            self.exit = status.map(Exit::from);
        }
        Ok(self.exit)
    }

    /// Waits for the child's end for at most `limit`.
    pub fn wait_timeout(&mut self, limit: Duration) -> Result<Option<Exit>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.try_wait()? {
                return Ok(Some(e));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL, then reaps it.
    pub fn kill(&mut self) -> Result<Exit> {
        if let Some(e) = self.try_wait()? {
            return Ok(e);
        }
        self.child
            .kill()
            .map_err(|e| self.process_error("kill", e))?;
        let status = self
            .child
            .wait()
            .map_err(|e| self.process_error("wait", e))?;
        let exit = Exit::from(status);
        self.exit = Some(exit);
        Ok(exit)
    }

    /// Powers the VM off through the control socket and waits up to `limit` for the
    /// child to exit; kills it when either fails.
    pub fn stop(&mut self, limit: Duration) -> Result<Exit> {
        if let Some(e) = self.try_wait()? {
            return Ok(e);
        }
        match self.power_off() {
            Ok(()) => {
                if let Some(e) = self.wait_timeout(limit)? {
                    return Ok(e);
                }
                tracing::warn!(vm = self.name, "powered off but did not exit; killing it");
            }
            Err(e) => tracing::info!(vm = self.name, "power_off: {e}; killing it"),
        }
        self.kill()
    }

    /// CPU time and resident memory, from `/proc/PID`.
    pub fn stats(&self) -> Result<ProcessStats> {
        let pid = self.pid();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| self.process_error("read /proc stat", e))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| self.process_error("read /proc status", e))?;
        parse_stats(&stat, &status).ok_or_else(|| {
            self.process_error(
                "parse /proc",
                std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected format"),
            )
        })
    }
}

/// CPU time from `/proc/PID/stat` (fields 14 and 15, after the parenthesised command
/// name, which may hold spaces) and `VmRSS` from `/proc/PID/status`.
fn parse_stats(stat: &str, status: &str) -> Option<ProcessStats> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some(ProcessStats {
        cpu_ns: (utime + stime).saturating_mul(1_000_000_000 / USER_HZ),
        rss_bytes: rss_kib.saturating_mul(1024),
    })
}

impl Drop for VmProcess {
    /// No orphan: the lease pipe closes (the child would stop by itself) and the child is
    /// killed and reaped.
    fn drop(&mut self) {
        self.lease = None;
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stats_parse_with_odd_command_names() {
        let stat = "4242 (vinfra vm) (x)) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    250 50 0 0 20 0 5 0 100 1000000 300 18446744073709551615";
        let status = "Name:\tvinfra-vm\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t5\n";
        let s = parse_stats(stat, status).unwrap();
        assert_eq!(s.cpu_ns, 300 * 10_000_000);
        assert_eq!(s.rss_bytes, 5120 * 1024);
        assert!(parse_stats("garbage", status).is_none());
    }

    #[test]
    fn a_missing_binary_is_named() {
        let e = vm_binary(Some(Path::new("/nope/vinfra-vm"))).unwrap();
        assert_eq!(e, Path::new("/nope/vinfra-vm"));
    }
}
