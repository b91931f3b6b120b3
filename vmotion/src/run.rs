//! The drivers: [`migrate`] and [`receive`] run the state machines over a real stream, a
//! real clock and a VM. They hold no protocol logic; the machines decide everything.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::destination::{Destination, DestinationRequest, DestinationVm, ReceiveStats};
use crate::error::{Error, Result};
use crate::layout::{Layout, PageSet};
use crate::options::{MigrationOptions, MigrationStats, Progress, ReceiveOptions};
use crate::seal::fresh_nonce;
use crate::source::{Source, SourceRequest, SourceVm, VmReply};
use crate::vm::{IncomingVm, MigratableVm};

/// A byte stream the drivers can use: TCP in practice, Unix sockets in tests.
pub trait Connection: Read + Write + Send {
    /// A second handle that reads the same stream (the source reads on its own thread).
    fn try_clone_reader(&self) -> io::Result<Box<dyn Read + Send>>;
    /// Bounds blocking reads (`None`: wait for ever).
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Bounds blocking writes, so a stalled peer cannot hold the VM past the time limit.
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Closes both directions (wakes the reader thread).
    fn shutdown(&self);
}

macro_rules! connection {
    ($t:ty) => {
        impl Connection for $t {
            fn try_clone_reader(&self) -> io::Result<Box<dyn Read + Send>> {
                Ok(Box::new(self.try_clone()?))
            }
            fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
                <$t>::set_read_timeout(self, timeout)
            }
            fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
                <$t>::set_write_timeout(self, timeout)
            }
            fn shutdown(&self) {
                let _ = <$t>::shutdown(self, std::net::Shutdown::Both);
            }
        }
    };
}
connection!(TcpStream);
connection!(UnixStream);

/// How long one blocking write may take before the stream counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read at a time.
const READ_CHUNK: usize = 256 << 10;
/// How often the progress callback runs at least.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

fn ms_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

enum Inbound {
    Data(Vec<u8>),
    Closed,
    Failed(io::Error),
}

/// Reads the stream on a thread of its own until it closes or fails.
fn spawn_reader(mut reader: Box<dyn Read + Send>) -> io::Result<mpsc::Receiver<Inbound>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("vmotion-rx".into())
        .spawn(move || {
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                let msg = match reader.read(&mut buf) {
                    Ok(0) => Inbound::Closed,
                    Ok(n) => Inbound::Data(buf[..n].to_vec()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Inbound::Failed(e),
                };
                let last = !matches!(msg, Inbound::Data(_));
                if tx.send(msg).is_err() || last {
                    return;
                }
            }
        })?;
    Ok(rx)
}

fn feed(source: &mut Source, msg: Inbound) {
    match msg {
        Inbound::Data(bytes) => source.receive(&bytes),
        Inbound::Closed => source.transport_failed(Error::Closed { phase: "" }),
        Inbound::Failed(e) => source.transport_failed(Error::io("receive", &e)),
    }
}

fn run_source_request<V: MigratableVm>(
    vm: &mut V,
    layout: &Layout,
    request: SourceRequest,
) -> VmReply {
    let done = |r: std::result::Result<(), crate::vm::VmError>| match r {
        Ok(()) => VmReply::Done,
        Err(e) => VmReply::Failed(e),
    };
    match request {
        SourceRequest::EnableDirtyLog => done(vm.enable_dirty_log()),
        SourceRequest::FetchDirty => {
            let mut set = PageSet::empty(layout);
            match vm.fetch_and_clear_dirty(&mut set) {
                Ok(()) => VmReply::Dirty(set),
                Err(e) => VmReply::Failed(e),
            }
        }
        SourceRequest::DisableDirtyLog => done(vm.disable_dirty_log()),
        SourceRequest::Throttle(percent) => done(vm.throttle(percent)),
        SourceRequest::Pause => done(vm.pause()),
        SourceRequest::Resume => done(vm.resume()),
        SourceRequest::CaptureState => match vm.capture_state() {
            Ok(blob) => VmReply::State(blob),
            Err(e) => VmReply::Failed(e),
        },
        SourceRequest::ReleaseDisks => done(vm.release_disks()),
        SourceRequest::ReacquireDisks => done(vm.reacquire_disks()),
        SourceRequest::Discard => done(vm.discard()),
    }
}

/// Sends the running `vm` over `conn` to a host running [`receive`].
///
/// Returns when the destination has the VM (`Ok`: this side discarded it) or the
/// migration failed (`Err`: the VM runs here, untouched, except for
/// [`Error::InDoubt`], see the README). `progress` is called at each new stage and round,
/// and at least every 100 ms.
///
/// ```no_run
/// use std::net::TcpStream;
/// use vinfra_vmotion::{migrate, ClusterKey, MigratableVm, MigrationOptions, Security};
///
/// fn send(vm: &mut impl MigratableVm, key: ClusterKey) -> vinfra_vmotion::Result<()> {
///     let stream = TcpStream::connect("127.0.0.1:7000").map_err(|e| vinfra_vmotion::Error::io("connect", &e))?;
///     let stats = migrate(vm, stream, &MigrationOptions::new(Security::Aead(key)), |p| {
///         eprintln!("round {}: {} pages left", p.round, p.pages_left)
///     })?;
///     println!("downtime {:.1} ms, {} bytes", stats.downtime_ms, stats.bytes_sent);
///     Ok(())
/// }
/// ```
pub fn migrate<V: MigratableVm, C: Connection>(
    vm: &mut V,
    mut conn: C,
    opts: &MigrationOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<MigrationStats> {
    let t0 = Instant::now();
    let info = SourceVm {
        layout: vm.memory_layout(),
        cpuid: vm.guest_cpuid()?,
        disks: vm.disk_locks(),
    };
    let layout = Layout::new(info.layout.clone())?;
    let mut source = Source::new(opts.clone(), info, fresh_nonce()?, ms_since(t0))?;
    conn.set_write_timeout(Some(WRITE_TIMEOUT))
        .map_err(|e| Error::io("set write timeout", &e))?;
    let inbound = spawn_reader(
        conn.try_clone_reader()
            .map_err(|e| Error::io("clone the stream", &e))?,
    )
    .map_err(|e| Error::io("spawn the reader thread", &e))?;
    let mut out = Vec::with_capacity(4 << 20);
    let mut last_progress = Instant::now();
    let mut last_seen = None;
    let outcome = loop {
        source.clock(ms_since(t0));
        while let Ok(msg) = inbound.try_recv() {
            feed(&mut source, msg);
        }
        while let Some(request) = source.poll_request() {
            let started = ms_since(t0);
            let reply = run_source_request(vm, &layout, request);
            let now = ms_since(t0);
            tracing::debug!(
                ?request,
                at_ms = started,
                took_ms = now - started,
                "source vm request"
            );
            source.clock(now);
            source.reply(reply);
        }
        out.clear();
        source.poll_transmit(vm.memory(), &mut out);
        if !out.is_empty() {
            match conn.write_all(&out).and_then(|()| conn.flush()) {
                Ok(()) => source.flushed(),
                Err(e) => source.transport_failed(Error::io("send", &e)),
            }
        }
        let p = source.progress();
        if last_seen != Some((p.stage, p.round)) || last_progress.elapsed() >= PROGRESS_EVERY {
            progress(&p);
            last_seen = Some((p.stage, p.round));
            last_progress = Instant::now();
        }
        if let Some(outcome) = source.take_outcome() {
            break outcome;
        }
        if out.is_empty() && !source.busy() {
            // Nothing to do: wait for the peer or the next deadline.
            let wait = source
                .next_deadline()
                .map_or(PROGRESS_EVERY.as_secs_f64() * 1000.0, |d| d - ms_since(t0))
                .clamp(0.0, PROGRESS_EVERY.as_secs_f64() * 1000.0);
            match inbound.recv_timeout(Duration::from_secs_f64(wait / 1000.0)) {
                Ok(msg) => feed(&mut source, msg),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    source.transport_failed(Error::Closed { phase: "" });
                }
            }
        }
    };
    conn.shutdown();
    progress(&source.progress());
    outcome
}

/// Receives a VM sent by [`migrate`] on `conn` into `vm` (configured like the source's:
/// same memory layout), and resumes it once the source commits.
///
/// `Ok`: the VM runs here. `Err`: it does not (it was discarded; or, for
/// [`Error::InDoubt`], the outcome is unknown and it was not resumed).
pub fn receive<V: IncomingVm, C: Connection>(
    vm: &mut V,
    mut conn: C,
    opts: &ReceiveOptions,
) -> Result<ReceiveStats> {
    let t0 = Instant::now();
    let info = DestinationVm {
        layout: vm.memory_layout(),
        supported_cpuid: vm.supported_cpuid()?,
    };
    let mut dest = Destination::new(opts.clone(), info, fresh_nonce()?, ms_since(t0))?;
    conn.set_write_timeout(Some(WRITE_TIMEOUT))
        .map_err(|e| Error::io("set write timeout", &e))?;
    conn.set_read_timeout(Some(PROGRESS_EVERY))
        .map_err(|e| Error::io("set read timeout", &e))?;
    let mut out = Vec::new();
    let mut closed = false;
    let outcome = loop {
        dest.clock(ms_since(t0));
        while let Some(request) = dest.poll_request() {
            let started = ms_since(t0);
            tracing::debug!(request = ?std::mem::discriminant(&request), at_ms = started, "destination vm request");
            let result = match request {
                DestinationRequest::Restore(state) => vm.restore(&state),
                DestinationRequest::AcquireDisks => vm.acquire_disks(),
                DestinationRequest::Resume => vm.resume(),
                DestinationRequest::Discard => vm.discard(),
            };
            let now = ms_since(t0);
            tracing::debug!(
                took_ms = now - started,
                ok = result.is_ok(),
                "destination vm request done"
            );
            dest.clock(now);
            dest.reply(result);
        }
        out.clear();
        dest.poll_transmit(&mut out);
        if !out.is_empty() && !closed {
            if let Err(e) = conn.write_all(&out).and_then(|()| conn.flush()) {
                closed = true;
                dest.transport_failed(Error::io("send", &e));
            }
        }
        if let Some(outcome) = dest.take_outcome() {
            break outcome;
        }
        if closed {
            continue;
        }
        // Straight into the machine's buffer: pages are copied once more, into guest memory.
        match conn.read(dest.receive_buffer(READ_CHUNK)) {
            Ok(0) => {
                closed = true;
                dest.transport_failed(Error::Closed { phase: "" });
            }
            Ok(n) => {
                dest.clock(ms_since(t0));
                dest.received(n, vm.memory());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                closed = true;
                dest.transport_failed(Error::io("receive", &e));
            }
        }
    };
    conn.shutdown();
    outcome
}
