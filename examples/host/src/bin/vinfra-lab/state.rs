//! `lab.json`: what `up` started, so that `down` and `status` find it again, and the only
//! way `down` chooses what to stop (by PID, checked to still be a `vinfra-host`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::net::Net;

/// The record's file name in the lab's directory.
pub const FILE: &str = "lab.json";

/// One host process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRecord {
    /// Host id (and vmfs slot).
    pub id: u32,
    /// Its process (in its namespace, `ip netns exec` exec'd it: the same pid).
    pub pid: u32,
    /// Its address (HA heartbeats).
    pub addr: String,
    /// Its API's URL.
    pub api: String,
    /// Its network namespace.
    pub namespace: Option<String>,
}

/// A lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lab {
    /// How the hosts are connected.
    pub net: Net,
    /// The hosts started so far.
    pub hosts: Vec<HostRecord>,
    /// The shared volume.
    pub volume: PathBuf,
    /// How many hosts `up` meant to start (the namespaces to remove).
    pub planned_hosts: u32,
}

impl Lab {
    /// Writes the record (replacing the file by rename: a reader never sees half of it).
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let tmp = dir.join(format!("{FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(FILE)).map_err(|e| format!("{}: {e}", tmp.display()))
    }

    /// Reads the record.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: {e} (no lab here? `vinfra-lab --dir DIR up` makes one)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Whether `pid` is (still) a `vinfra-host` process: a PID recorded long ago may have
/// been reused by anything.
pub fn is_host(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        c.split(|&b| b == 0)
            .next()
            .is_some_and(|exe| exe.ends_with(b"vinfra-host"))
    }) && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            == Some("Z")
    })
}

/// Sends `sig` to `pid` (only ever a PID that [`is_host`] just confirmed).
pub fn signal(pid: u32, sig: i32) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a PID and a signal number touches no memory of ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, sig);
    }
}
