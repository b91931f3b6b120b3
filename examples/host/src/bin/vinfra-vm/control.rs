//! The control socket, served on threads so that no client blocks the VM's watch loop:
//! an accept thread, and one short thread per connection that reads the request line
//! (a client that sends nothing is dropped after [`READ_TIMEOUT`]). `status` (from the
//! copy the watch loop refreshes each turn), `snapshot` and `consolidate` (on the vmfs
//! disk alone) are answered there; what needs the `Vm` itself (`power_off`, `reset`,
//! `migrate`) is handed to the watch loop, which takes one request per turn (10 ms).
//! The protocol is in `vinfra_host::migration`.

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use vinfra_host::backup_control::{self, Request};
use vinfra_host::migration::{read_request, send_event, ControlEvent, ControlRequest, VmStatus};
use vinfra_host::vmfs_disk::VmfsDiskBackend;

/// How long a connection may take to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections being read at once; more are refused (a bound on threads).
const MAX_CONNECTIONS: usize = 32;

/// The VM's status as the watch loop last saw it.
pub type SharedStatus = Arc<Mutex<Option<VmStatus>>>;

/// A request for the watch loop, with the connection to answer on.
pub struct Pending {
    pub request: ControlRequest,
    pub stream: UnixStream,
}

/// Serves `listener` until the process ends; the returned channel carries the requests
/// the watch loop must answer. The disks are held weakly: closing them at the VM's end
/// must not wait for a client.
pub fn serve(
    listener: UnixListener,
    disks: Vec<Weak<VmfsDiskBackend>>,
    status: SharedStatus,
) -> Result<Receiver<Pending>, String> {
    listener
        .set_nonblocking(false)
        .map_err(|e| format!("control socket: {e}"))?;
    let (tx, rx) = channel();
    let disks = Arc::new(disks);
    let open = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let mut stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept");
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::AcqRel);
                    send_event(&mut stream, &ControlEvent::failed("too many connections"));
                    continue;
                }
                let (tx, disks, open) = (tx.clone(), disks.clone(), open.clone());
                let status = status.clone();
                let spawned = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        connection(stream, &disks, &status, &tx);
                        open.fetch_sub(1, Ordering::AcqRel);
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "control connection thread");
                }
            }
        })
        .map_err(|e| format!("spawn the control thread: {e}"))?;
    Ok(rx)
}

fn connection(
    mut stream: UnixStream,
    disks: &[Weak<VmfsDiskBackend>],
    status: &SharedStatus,
    tx: &Sender<Pending>,
) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let request = match read_request(&stream) {
        Ok(r) => r,
        Err(e) => return send_event(&mut stream, &ControlEvent::failed(e)),
    };
    let _ = stream.set_read_timeout(None);
    let known = *status.lock().unwrap_or_else(PoisonError::into_inner);
    match request {
        ControlRequest::Status if known.is_some() => {
            if let Some(s) = known {
                send_event(&mut stream, &ControlEvent::Status(s));
            }
        }
        ControlRequest::Snapshot { disk, since } => {
            let answer = on_disk(disks, disk, Request::Snapshot { since }).and_then(|r| {
                r.info
                    .map(ControlEvent::Snapshot)
                    .ok_or_else(|| "the snapshot returned no description".to_string())
            });
            send_event(&mut stream, &answer.unwrap_or_else(ControlEvent::failed));
        }
        ControlRequest::Consolidate { disk } => {
            let answer = on_disk(disks, disk, Request::Consolidate).map(|_| ControlEvent::Done(()));
            send_event(&mut stream, &answer.unwrap_or_else(ControlEvent::failed));
        }
        request => {
            if let Err(back) = tx.send(Pending { request, stream }) {
                let mut stream = back.0.stream;
                send_event(&mut stream, &ControlEvent::failed("the VM is ending"));
            }
        }
    }
}

/// The backup handshake of `vinfra_host::backup_control` on vmfs disk number `disk`.
fn on_disk(
    disks: &[Weak<VmfsDiskBackend>],
    disk: usize,
    req: Request,
) -> Result<backup_control::Reply, String> {
    let backend = disks
        .get(disk)
        .ok_or_else(|| format!("no vmfs disk {disk} (the VM has {})", disks.len()))?
        .upgrade()
        .ok_or("the VM's disks are closed")?;
    let reply = backup_control::answer(&backend, req);
    match reply.ok {
        true => Ok(reply),
        false => Err(reply.error.unwrap_or_default()),
    }
}
