//! Guest files out of a backup's disk, as both the `vinfra-vcb` command line (`ls`,
//! `find`, `restore-file`) and the host API (`GET /backups/files`, `GET /backups/file`)
//! read them: which backup and disk, the guest filesystem opened on it (vcb's
//! [`GuestFs`]), and the API's view of its entries and errors.
//!
//! Nothing here keeps state: each call opens what it needs (the repository is opened by
//! the caller, who knows the password).

use std::io::Write;
use std::sync::Arc;

use vinfra_vcb::files::{volumes, EntryKind, FileEntry, FindQuery, GuestFs, VolumeInfo};
use vinfra_vcb::{DiskReader, Error, Repository, Snapshot};

use crate::api::{
    body_channel, ApiError, BackupDir, BackupFileEntry, BackupFileQuery, FileDownload, FileFormat,
    FileKind, FILES_LIST_MAX,
};

/// The name of an entry's kind, as the command line's `--json` and the API write it.
#[must_use]
pub fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        _ => "other",
    }
}

fn api_kind(kind: EntryKind) -> FileKind {
    match kind {
        EntryKind::File => FileKind::File,
        EntryKind::Dir => FileKind::Dir,
        EntryKind::Symlink => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

/// The guest filesystem on disk `disk` of backup `snap` (partition as
/// [`GuestFs::open`] takes it: `None` for the first volume with a filesystem).
pub fn open_guest_fs(
    repo: &Repository,
    snap: &Snapshot,
    disk: &str,
    partition: Option<u32>,
) -> vinfra_vcb::Result<GuestFs> {
    let reader = Arc::new(repo.disk_reader(&snap.id, disk)?);
    GuestFs::open(reader, partition)
}

/// The partition to read: the one asked for, else the only one holding a filesystem vcb
/// reads; several such and none asked for is the `partition` field's 422, naming them.
fn choose_partition(
    reader: &Arc<DiskReader>,
    disk: &str,
    asked: Option<u32>,
) -> Result<u32, ApiError> {
    let vols = volumes(reader.clone()).map_err(api_error)?;
    let with_fs: Vec<&VolumeInfo> = vols.iter().filter(|v| v.fs.is_some()).collect();
    let field = |why: String| ApiError::InvalidValue {
        field: "partition".into(),
        why,
    };
    match (asked, with_fs.as_slice()) {
        (Some(n), _) => vols
            .iter()
            .any(|v| v.partition == n)
            .then_some(n)
            .ok_or_else(|| {
                field(format!(
                    "{disk} has no partition {n} (it has {})",
                    vols.iter()
                        .map(|v| v.partition.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }),
        (None, [one]) => Ok(one.partition),
        (None, []) => Err(field(format!(
            "no ext4, FAT or NTFS filesystem on {disk} ({} volume(s))",
            vols.len()
        ))),
        (None, several) => Err(field(format!(
            "{disk} holds {} filesystems: choose a partition ({})",
            several.len(),
            several
                .iter()
                .map(|v| format!(
                    "{} {}",
                    v.partition,
                    v.fs.map_or("?", vinfra_vcb::files::FsKind::name)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The API's 4xx for what the request named wrongly, with the field; anything else
/// (a damaged repository, a failed read) is the host's 500.
fn api_error(e: Error) -> ApiError {
    let field = |f: &str, why: String| ApiError::InvalidValue {
        field: f.into(),
        why,
    };
    match e {
        Error::NoSnapshot(id) => field("backup", format!("no backup {id} in the repository")),
        Error::NoDisk { .. } => field("disk", e.to_string()),
        Error::NoFilesystem { .. } => field("partition", e.to_string()),
        Error::FileNotFound { .. } => field("path", e.to_string()),
        Error::Invalid(why) => field("path", why),
        e @ Error::Filesystem { .. } if e.to_string().ends_with("not a directory") => {
            field("path", e.to_string())
        }
        e => ApiError::Internal(e.to_string()),
    }
}

/// What a query names, opened: the backup, its disk's name, the filesystem.
struct Opened {
    snap: Snapshot,
    disk: String,
    partition: u32,
    fs: GuestFs,
}

fn open(repo: &Repository, q: &BackupFileQuery) -> Result<Opened, ApiError> {
    let snap = repo
        .find_snapshot(&q.backup.to_ascii_lowercase())
        .map_err(api_error)?;
    if let Some(vm) = q.vm.as_ref().filter(|vm| **vm != snap.manifest.vm) {
        return Err(ApiError::InvalidValue {
            field: "backup".into(),
            why: format!(
                "backup {} is of VM {}, not {vm}",
                q.backup, snap.manifest.vm
            ),
        });
    }
    let disks = &snap.manifest.disks;
    let disk = usize::try_from(q.disk)
        .ok()
        .and_then(|i| disks.get(i))
        .map(|d| d.name.clone())
        .ok_or_else(|| ApiError::InvalidValue {
            field: "disk".into(),
            why: format!(
                "backup {} has {} disk(s): give 0 to {}",
                q.backup,
                disks.len(),
                disks.len().saturating_sub(1)
            ),
        })?;
    let reader = Arc::new(repo.disk_reader(&snap.id, &disk).map_err(api_error)?);
    let partition = choose_partition(&reader, &disk, q.partition)?;
    let fs = GuestFs::open(reader, Some(partition)).map_err(api_error)?;
    Ok(Opened {
        snap,
        disk,
        partition,
        fs,
    })
}

/// `GET /backups/files`: the directory `q.path`, directories first, then by name; at
/// most [`FILES_LIST_MAX`] entries.
pub fn list_dir(repo: &Repository, q: &BackupFileQuery) -> Result<BackupDir, ApiError> {
    let Opened {
        snap,
        disk,
        partition,
        mut fs,
    } = open(repo, q)?;
    let dir = fs.stat(&q.path).map_err(api_error)?;
    if dir.kind != EntryKind::Dir {
        return Err(ApiError::InvalidValue {
            field: "path".into(),
            why: format!("{} is a {}, not a directory", dir.path, kind_name(dir.kind)),
        });
    }
    let mut entries: Vec<FileEntry> = match &q.find {
        None => fs.list(&dir.path).map_err(api_error)?,
        Some(glob) => {
            let query = FindQuery::new()
                .name(glob)
                .map_err(|e| ApiError::InvalidValue {
                    field: "find".into(),
                    why: e.to_string(),
                })?;
            let mut hits = fs.find(&dir.path, &query).map_err(api_error)?;
            hits.retain(|e| e.path != dir.path);
            hits
        }
    };
    // Each entry's name: its name in the directory, or for a search its path below it.
    let named = |e: &FileEntry| -> String {
        if q.find.is_none() {
            return e.name().to_string();
        }
        e.path
            .strip_prefix(&dir.path)
            .unwrap_or(&e.path)
            .trim_start_matches('/')
            .to_string()
    };
    entries.sort_by(|a, b| {
        (a.kind != EntryKind::Dir, &a.path).cmp(&(b.kind != EntryKind::Dir, &b.path))
    });
    let truncated = entries.len() > FILES_LIST_MAX;
    entries.truncate(FILES_LIST_MAX);
    let entries = entries
        .iter()
        .map(|e| BackupFileEntry {
            name: named(e),
            kind: api_kind(e.kind),
            size: e.size,
            mtime_unix_s: e.modified_s,
        })
        .collect();
    Ok(BackupDir {
        backup: snap.id.to_hex(),
        vm: snap.manifest.vm.clone(),
        disk,
        partition,
        fs: fs.kind().name().to_string(),
        path: dir.path,
        entries,
        truncated,
    })
}

/// `GET /backups/file`: finds `q.path`, hands `answer` the download (or the refusal),
/// then writes the body on this thread: the file's bytes, or a tar of the file or tree.
/// A failure once the body has started cuts it (the client sees a broken download).
pub fn download(
    repo: &Repository,
    q: &BackupFileQuery,
    answer: impl FnOnce(Result<FileDownload, ApiError>),
) {
    let mut opened = match open(repo, q) {
        Ok(o) => o,
        Err(e) => return answer(Err(e)),
    };
    let entry = match opened.fs.stat(&q.path).map_err(api_error) {
        Ok(e) => e,
        Err(e) => return answer(Err(e)),
    };
    let tar = q.format == Some(FileFormat::Tar);
    if !tar && entry.kind != EntryKind::File {
        return answer(Err(ApiError::InvalidValue {
            field: "path".into(),
            why: format!(
                "{} is a {}: only a regular file is sent as it is (format=tar sends a tree)",
                entry.path,
                kind_name(entry.kind)
            ),
        }));
    }
    let base = match entry.name() {
        "" => opened.snap.manifest.vm.clone(),
        n => n.to_string(),
    };
    let (name, length) = if tar {
        (format!("{base}.tar"), None)
    } else {
        (base, Some(entry.size))
    };
    let (mut writer, body) = body_channel();
    answer(Ok(FileDownload::new(name, tar, length, body)));
    let written = if tar {
        opened.fs.write_tar(&entry.path, &mut writer).map(|_| ())
    } else {
        opened.fs.read_file(&entry.path, &mut writer).map(|_| ())
    };
    let finished = written
        .map_err(|e| e.to_string())
        .and_then(|()| writer.flush().map_err(|e| e.to_string()));
    match finished {
        Ok(()) => {
            if let Err(e) = writer.finish() {
                tracing::debug!("download of {}: {e}", entry.path);
            }
        }
        Err(e) => writer.fail(format!(
            "{} of backup {} disk {}: {e}",
            entry.path, q.backup, opened.disk
        )),
    }
}
