//! Repository locks: shared for backups, exclusive for forget and prune, and the
//! detection of stale locks left by killed processes (README "Failure model").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::codec::{Reader, Writer};
use crate::error::{Error, LockHolder, Object, Result};
use crate::record::{self, LOCK};
use crate::storage::Storage;

/// A lock file's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockRecord {
    pub(crate) exclusive: bool,
    pub(crate) pid: u32,
    /// The process's start time, clock ticks after boot (tells a reused pid apart).
    pub(crate) start: u64,
    pub(crate) hostname: String,
    pub(crate) boot_id: String,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Start time of a process (field 22 of `/proc/<pid>/stat`), if it exists.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after
    // the last ')'; field 3 is the first of them, so field 22 is the 20th.
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl LockRecord {
    /// This process's record.
    pub(crate) fn current(exclusive: bool) -> LockRecord {
        let pid = std::process::id();
        LockRecord {
            exclusive,
            pid,
            start: process_start(pid).unwrap_or(0),
            hostname: read_trim("/proc/sys/kernel/hostname"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(u8::from(self.exclusive));
        w.bytes(&[0; 3]);
        w.u32(self.pid);
        w.u64(self.start);
        w.str(&self.hostname);
        w.str(&self.boot_id);
        record::encode(LOCK, None, &w.buf, None)
    }

    pub(crate) fn decode(name: &str, b: &[u8]) -> Result<LockRecord> {
        let body = record::decode(LOCK, None, name, b)?;
        let e = |d: crate::codec::DecodeError| d.at(Object::Lock, name);
        let mut r = Reader::new(&body);
        let kind = r.u8("kind").map_err(e)?;
        if kind > 1 {
            return Err(Error::corrupt(Object::Lock, name, format!("kind {kind}")));
        }
        r.take(3, "reserved").map_err(e)?;
        let rec = LockRecord {
            exclusive: kind == 1,
            pid: r.u32("pid").map_err(e)?,
            start: r.u64("start time").map_err(e)?,
            hostname: r.str("hostname", 255).map_err(e)?,
            boot_id: r.str("boot id", 64).map_err(e)?,
        };
        r.end("lock").map_err(e)?;
        Ok(rec)
    }

    /// Whether the holder is known to be gone (`Err(why)`) or must be taken as live
    /// (`Ok(why)`), judged from this process (`me`).
    pub(crate) fn judge(&self, me: &LockRecord) -> std::result::Result<&'static str, &'static str> {
        if self.hostname != me.hostname || me.hostname.is_empty() {
            return Ok("another host: not judged, break_locks removes it");
        }
        if self.boot_id != me.boot_id {
            return Err("its host rebooted since");
        }
        match process_start(self.pid) {
            None => Err("its process is gone"),
            Some(s) if s != self.start => Err("its pid belongs to another process now"),
            Some(_) => Ok("its process is running"),
        }
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A held lock; removed when dropped.
#[derive(Debug)]
pub(crate) struct LockGuard {
    storage: Arc<dyn Storage>,
    name: String,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Err(e) = self.storage.remove(&self.name) {
            tracing::warn!(lock = %self.name, error = %e, "could not remove lock");
        }
    }
}

/// Takes a lock: writes ours, then looks for conflicting ones; stale ones are broken,
/// a live one makes us withdraw ours and fail.
pub(crate) fn acquire(storage: &Arc<dyn Storage>, exclusive: bool) -> Result<LockGuard> {
    let me = LockRecord::current(exclusive);
    let host: String = me
        .hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = format!(
        "locks/{host}-{}-{}-{}",
        me.pid,
        me.start,
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    storage
        .write_volatile(&name, &me.encode())
        .map_err(|e| Error::storage("write", &name, e))?;
    let guard = LockGuard {
        storage: storage.clone(),
        name: name.clone(),
    };
    let others = storage
        .list("locks")
        .map_err(|e| Error::storage("list", "locks", e))?;
    for other in others.iter().filter(|o| **o != name) {
        let bytes = match storage.read(other) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::storage("read", other, e)),
        };
        let rec = match LockRecord::decode(other, &bytes) {
            Ok(r) => r,
            Err(e) => {
                return Err(Error::UnreadableLock {
                    name: other.clone(),
                    detail: e.to_string(),
                })
            }
        };
        if !exclusive && !rec.exclusive {
            continue;
        }
        match rec.judge(&me) {
            Err(why) => {
                tracing::info!(lock = %other, pid = rec.pid, why, "breaking stale lock");
                storage
                    .remove(other)
                    .map_err(|e| Error::storage("remove", other, e))?;
            }
            Ok(verdict) => {
                return Err(Error::Locked(LockHolder {
                    name: other.clone(),
                    exclusive: rec.exclusive,
                    hostname: rec.hostname,
                    pid: rec.pid,
                    verdict,
                }))
            }
        }
    }
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalDir;

    #[test]
    fn locks_conflict_and_stale_ones_are_broken() {
        let d = tempfile::tempdir().unwrap();
        let s: Arc<dyn Storage> = Arc::new(LocalDir::create(d.path()).unwrap());
        let a = acquire(&s, false).unwrap();
        let b = acquire(&s, false).unwrap();
        let e = acquire(&s, true).unwrap_err();
        assert!(e.to_string().contains("its process is running"), "{e}");
        drop((a, b));
        let x = acquire(&s, true).unwrap();
        assert!(matches!(acquire(&s, false), Err(Error::Locked(_))));
        drop(x);
        assert!(
            s.list("locks").unwrap().is_empty(),
            "a failed taker withdraws its lock"
        );

        // A killed process's lock: its pid is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut dead = LockRecord::current(true);
        dead.pid = pid;
        s.write_atomic("locks/dead", &dead.encode()).unwrap();
        let mut reused = LockRecord::current(false);
        reused.start += 1;
        s.write_atomic("locks/reused", &reused.encode()).unwrap();
        // Our own live pid, but written before the machine rebooted.
        let mut rebooted = LockRecord::current(true);
        rebooted.boot_id = "an earlier boot".into();
        s.write_atomic("locks/rebooted", &rebooted.encode())
            .unwrap();
        drop(acquire(&s, true).unwrap());
        assert!(s.list("locks").unwrap().is_empty());

        let mut foreign = LockRecord::current(false);
        foreign.hostname = "elsewhere".into();
        s.write_atomic("locks/foreign", &foreign.encode()).unwrap();
        let e = acquire(&s, true).unwrap_err();
        assert!(e.to_string().contains("on elsewhere"), "{e}");
        s.write_atomic("locks/junk", b"junk").unwrap();
        s.remove("locks/foreign").unwrap();
        assert!(matches!(
            acquire(&s, true),
            Err(Error::UnreadableLock { .. })
        ));
    }
}
