//! The backup control socket of a VM's host: how a backup proxy in another process (on
//! this host or, over a shared volume, any other) asks the VM's side to freeze a disk and,
//! after reading it, to consolidate it — VCB's snapshot/consolidate handshake.
//!
//! A Unix socket; one request per connection, one JSON line each way:
//!
//! ```text
//! proxy                                   VM's host (vmfs-vm --backup-control PATH)
//!   {"op":"snapshot","since":7}  ───────▶  vinfra_vcb::vmfs::prepare(disk, since):
//!                                          new change id, redo log, changed ranges
//!   {"ok":true,"info":{SnapshotInfo}} ◀──
//!   (opens the frozen layers shared read-only on its own mount, backs them up)
//!   {"op":"consolidate"}         ───────▶  VirtualDisk::consolidate
//!   {"ok":true}                  ◀───────
//! ```
//!
//! `vinfra-vm --control` offers the same handshake per disk as its `snapshot` and
//! `consolidate` requests (`migration`'s control socket), through [`answer`].
//!
//! Errors answer `{"ok":false,"error":"..."}`. The VM keeps running throughout: its
//! writes go to the new redo log while the proxy reads the frozen layers; the disk's lock
//! is held only for the moments of `prepare` and `consolidate`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Weak;

use serde::{Deserialize, Serialize};
use vinfra_vcb::vmfs::SnapshotInfo;

use crate::vmfs_disk::VmfsDiskBackend;

/// Longest request line read (a request is tens of bytes).
const MAX_LINE: u64 = 4096;

/// A request to the VM's host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum Request {
    /// Freeze the disk; list what changed after `since` (the previous backup's change id).
    Snapshot {
        /// The previous backup's change id of this disk, if any.
        since: Option<u64>,
    },
    /// Fold the redo log written since the snapshot back into the disk.
    Consolidate,
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Reply {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The frozen disk, for a snapshot.
    #[serde(default)]
    pub info: Option<SnapshotInfo>,
    /// What went wrong.
    #[serde(default)]
    pub error: Option<String>,
}

/// Carries out `req` on `disk` (with the disk alone for the moment it takes): what this
/// socket and `vinfra-vm`'s control socket (`snapshot`, `consolidate`) both answer.
pub fn answer(disk: &VmfsDiskBackend, req: Request) -> Reply {
    let r = match req {
        Request::Snapshot { since } => disk
            .with_disk(|d| vinfra_vcb::vmfs::prepare(d, since))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map(Some),
        Request::Consolidate => disk
            .with_disk(|d| d.consolidate())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map(|()| None),
    };
    match r {
        Ok(info) => Reply {
            ok: true,
            info,
            error: None,
        },
        Err(e) => Reply {
            ok: false,
            info: None,
            error: Some(e),
        },
    }
}

fn handle(disk: &VmfsDiskBackend, stream: UnixStream) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_LINE)).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) => answer(disk, req),
        Err(e) => Reply {
            ok: false,
            info: None,
            error: Some(format!("bad request: {e}")),
        },
    };
    let mut out = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    out.push(b'\n');
    (&stream).write_all(&out)
}

/// Listens on `path` (replacing a stale socket file) and answers requests on a thread
/// for as long as the process runs. The disk is held weakly: the VMM closes it (and
/// flushes it) when the VM ends, whatever the socket is doing.
pub fn serve(path: &Path, disk: Weak<VmfsDiskBackend>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("backup-control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        let Some(disk) = disk.upgrade() else { break };
                        if let Err(e) = handle(&disk, s) {
                            tracing::warn!(error = %e, "backup control request failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "backup control accept failed"),
                }
            }
        })?;
    Ok(())
}

/// Sends `req` to the VM's host listening on `path` and returns its answer; a refused
/// request is an `Err` with the host's words.
pub fn request(path: &Path, req: &Request) -> Result<Reply, String> {
    let mut s =
        UnixStream::connect(path).map_err(|e| format!("connect {}: {e}", path.display()))?;
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| e.to_string())?;
    let mut back = String::new();
    BufReader::new(s.take(16 << 20))
        .read_line(&mut back)
        .map_err(|e| e.to_string())?;
    let reply: Reply = serde_json::from_str(&back).map_err(|e| format!("bad reply: {e}"))?;
    match reply.ok {
        true => Ok(reply),
        false => Err(reply.error.unwrap_or_default()),
    }
}
