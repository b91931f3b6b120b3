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
    /// Its VMotion address (VMs arrive there); empty in labs made before it had one.
    #[serde(default)]
    pub vmotion: String,
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

/// A VM process of this lab's hosts: its pid and start time (clock ticks since boot),
/// so that a pid reused since is not taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmProcess {
    /// Its pid.
    pub pid: u32,
    start: u64,
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command come state (field 3) ... starttime (field 22).
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// The `vinfra-vm` processes of the hosts of the lab in `dir`: their control socket is
/// in a host's run directory there (`DIR/hostH.run/NAME.sock`), which also finds those
/// of a host that died before `down`.
pub fn vm_processes(dir: &std::path::Path) -> Vec<VmProcess> {
    let prefix = dir.join("host");
    let prefix = prefix.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let mut args = c.split(|&b| b == 0);
                args.next().is_some_and(|exe| exe.ends_with(b"vinfra-vm"))
                    && args.any(|a| a.starts_with(prefix) && a.windows(5).any(|w| w == b".run/"))
            })
        })
        .filter_map(|pid| {
            Some(VmProcess {
                pid,
                start: start_time(pid)?,
            })
        })
        .collect()
}

impl VmProcess {
    /// Whether it still runs (not gone, not a zombie, not another process on its pid).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// Sends `sig` to `pid` (only ever a PID that [`is_host`] or [`VmProcess::alive`] just
/// confirmed).
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
