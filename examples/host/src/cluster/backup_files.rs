//! `GET /backups`, `GET /backups/files` and `GET /backups/file` on the host: each call is handed by the
//! loop to a thread of its own, which opens the repository (with the cluster's
//! password, the only thing it takes from the loop), reads the guest filesystem
//! ([`crate::guest_files`]) and answers; a download's thread goes on writing the body
//! while the API server sends it. Reading a backup touches no VM, so the loop's only
//! cost is a thread's start: a large download never stalls heartbeats, failover or
//! other calls (though, handed over by the loop, a call waits while the loop runs a
//! backup, as every backup call does).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::backup::{list_backups, open_repository};
use super::Host;
use crate::api::{
    ApiError, BackupDir, BackupFileQuery, BackupInfo, BackupsQuery, FileDownload, Reply,
};
use crate::guest_files;

/// Most file reads running at once on a host (a listing or a download each).
pub const FILE_READERS_MAX: usize = 8;

/// Reads running now.
static READERS: AtomicUsize = AtomicUsize::new(0);

/// One reader's place among [`FILE_READERS_MAX`], given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Result<Slot, ApiError> {
        let taken = READERS.fetch_add(1, Ordering::SeqCst);
        if taken >= FILE_READERS_MAX {
            READERS.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::Unavailable(format!(
                "{FILE_READERS_MAX} backup file reads run already: try again shortly"
            )));
        }
        Ok(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        READERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `work` on a thread of its own holding a [`Slot`]. Without a slot the refusal is
/// returned; a thread that cannot start drops `work` and its reply (the caller gets 503).
fn spawn(work: impl FnOnce() + Send + 'static) -> Result<(), ApiError> {
    let slot = Slot::take()?;
    let spawned = std::thread::Builder::new()
        .name("vinfra-backup-files".into())
        .spawn(move || {
            let _slot = slot;
            work();
        });
    if let Err(e) = spawned {
        tracing::warn!("start a backup file reader: {e}");
    }
    Ok(())
}

impl Host {
    /// `GET /backups/files`, answered from a thread of its own.
    pub(super) fn backup_files(&self, query: BackupFileQuery, reply: Reply<BackupDir>) {
        let password = self.vcb_password.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Reply<BackupDir>>(1);
        let started = spawn(move || {
            let Ok(reply) = rx.recv() else { return };
            let answer = open_repository(&query.repository, &password, false)
                .and_then(|repo| guest_files::list_dir(&repo, &query));
            reply.send(answer);
        });
        match started {
            Ok(()) => {
                let _ = tx.send(reply);
            }
            Err(e) => reply.send(Err(e)),
        }
    }

    /// `GET /backups`, answered from a thread of its own (opening the repository costs an
    /// argon2id of the password: no stall of the loop's ticks for it).
    pub(super) fn backups_listed(&self, query: BackupsQuery, reply: Reply<Vec<BackupInfo>>) {
        let password = self.vcb_password.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Reply<Vec<BackupInfo>>>(1);
        let started = spawn(move || {
            let Ok(reply) = rx.recv() else { return };
            reply.send(list_backups(&password, &query));
        });
        match started {
            Ok(()) => {
                let _ = tx.send(reply);
            }
            Err(e) => reply.send(Err(e)),
        }
    }

    /// `GET /backups/file`: the thread answers once the path is found, then writes the
    /// body.
    pub(super) fn backup_file(&self, query: BackupFileQuery, reply: Reply<FileDownload>) {
        let password = self.vcb_password.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Reply<FileDownload>>(1);
        let started = spawn(move || {
            let Ok(reply) = rx.recv() else { return };
            match open_repository(&query.repository, &password, false) {
                Ok(repo) => guest_files::download(&repo, &query, |a| reply.send(a)),
                Err(e) => reply.send(Err(e)),
            }
        });
        match started {
            Ok(()) => {
                let _ = tx.send(reply);
            }
            Err(e) => reply.send(Err(e)),
        }
    }
}
