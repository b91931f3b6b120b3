//! Single files out of image backups, the types of their routes (the handlers are in
//! `server.rs`, beside the others): `GET /backups/files` lists a directory of the guest
//! filesystem on a disk of a backup, `GET /backups/file` downloads a file (or a
//! directory as a tar stream), read straight from the repository's chunks (vcb's
//! `files` module) without restoring the disk.
//!
//! The download is streamed ([`super::stream`]): the host's [`FileDownload`] carries the
//! receiving end of a body its own thread writes, so no file is ever held whole.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::Result;
use super::stream::{content_disposition, BodyStream};
use super::types::{check_name, check_repository, field};

/// Most entries one listing answers (the rest: `truncated`).
pub const FILES_LIST_MAX: usize = 5000;
/// Longest guest path accepted.
pub const GUEST_PATH_MAX: usize = 4096;
/// The longest `find` glob.
pub const FIND_PATTERN_MAX: usize = 256;

/// What `GET /backups/file` sends for a directory (a file is always sent as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// A regular file's bytes (the default; a directory is refused).
    Raw,
    /// A tar stream of the file or the whole tree below the directory.
    Tar,
}

/// The query of `GET /backups/files` and `GET /backups/file`: a path in the guest
/// filesystem on one disk of one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BackupFileQuery {
    /// The backup repository (a path on the host).
    pub repository: String,
    /// The backup's id (hex, as `GET /backups` lists it; a unique prefix of 8 or more
    /// digits will do).
    pub backup: String,
    /// The disk: its index in the backup's `disks` (default 0).
    #[serde(default)]
    pub disk: u32,
    /// The partition (Linux numbering; 0 for a disk without a partition table). Left
    /// out: the first volume holding a filesystem that vcb reads (ext4, FAT, NTFS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// The guest path, absolute, `/`-separated (default `/`).
    #[serde(default = "root")]
    pub path: String,
    /// The backup must be this VM's (the management server passes the VM it shows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// `GET /backups/file` only: `tar` for a directory (or a file as a tar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<FileFormat>,
    /// `GET /backups/files` only: a glob on names (`*.conf`, `host?`, `[a-c]*`; without
    /// case; one with a `/` is matched against the whole guest path, `/etc/*.d/*`). The
    /// entries are then the matches anywhere under `path`, each named by its path
    /// relative to `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find: Option<String>,
}

fn root() -> String {
    "/".into()
}

impl BackupFileQuery {
    /// Checks the arguments (422 `invalid_value` naming the field otherwise).
    pub fn validate(&self) -> Result<()> {
        check_repository(&self.repository)?;
        let b = &self.backup;
        if b.len() < 8 || b.len() > 64 || !b.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(field(
                "backup",
                "a backup id: 8 to 64 hex digits (as GET /backups lists it)",
            ));
        }
        if self.path.len() > GUEST_PATH_MAX || self.path.contains('\0') {
            return Err(field(
                "path",
                format!("a guest path of at most {GUEST_PATH_MAX} bytes, without NUL"),
            ));
        }
        if !self.path.is_empty() && !self.path.starts_with('/') {
            return Err(field("path", "an absolute guest path (starting with /)"));
        }
        if self.path.split(['/', '\\']).any(|c| c == "..") {
            return Err(field("path", "`..` is not allowed in a guest path"));
        }
        if let Some(f) = &self.find {
            if f.is_empty() || f.len() > FIND_PATTERN_MAX || f.contains('\0') {
                return Err(field(
                    "find",
                    format!("a glob of 1 to {FIND_PATTERN_MAX} bytes, without NUL"),
                ));
            }
        }
        self.vm.as_deref().map_or(Ok(()), |n| check_name("vm", n))
    }
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device, fifo or socket.
    Other,
}

/// One entry of a guest directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupFileEntry {
    /// Its name in the directory.
    pub name: String,
    /// What it is.
    pub kind: FileKind,
    /// Length in bytes (0 for a directory).
    pub size: u64,
    /// Last modification, seconds since the epoch.
    pub mtime_unix_s: i64,
}

/// The answer of `GET /backups/files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupDir {
    /// The backup's full id.
    pub backup: String,
    /// The VM it is of.
    pub vm: String,
    /// The disk's name in the backup (`disk0`).
    pub disk: String,
    /// The partition read (0: the whole disk).
    pub partition: u32,
    /// The filesystem there: `ext4`, `fat` or `ntfs`.
    pub fs: String,
    /// The directory, normalised.
    pub path: String,
    /// Its entries: directories first, then by name.
    pub entries: Vec<BackupFileEntry>,
    /// More entries than [`FILES_LIST_MAX`]: the list is cut.
    pub truncated: bool,
}

/// What a host answers to `GET /backups/file`: the headers' facts and the body its own
/// thread writes.
#[derive(Debug)]
#[non_exhaustive]
pub struct FileDownload {
    /// The name the client saves it as (`hosts`, `etc.tar`).
    pub name: String,
    /// A tar stream (else the file's bytes).
    pub tar: bool,
    /// The length, when known before the first byte (a file's size).
    pub length: Option<u64>,
    /// The body.
    pub body: BodyStream,
}

impl FileDownload {
    /// A download of `name`, written into `body`'s other end.
    #[must_use]
    pub fn new(name: String, tar: bool, length: Option<u64>, body: BodyStream) -> Self {
        Self {
            name,
            tar,
            length,
            body,
        }
    }
}

impl IntoResponse for FileDownload {
    fn into_response(self) -> Response {
        let kind = if self.tar {
            "application/x-tar"
        } else {
            "application/octet-stream"
        };
        let mut r = self.body.into_body().into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        if let Ok(v) = HeaderValue::from_str(&content_disposition(&self.name)) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        if let Some(n) = self.length {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiError;

    fn q(path: &str) -> BackupFileQuery {
        BackupFileQuery {
            repository: "/b".into(),
            backup: "0123456789abcdef".into(),
            disk: 0,
            partition: None,
            path: path.into(),
            vm: None,
            format: None,
            find: None,
        }
    }

    #[test]
    fn queries_name_the_bad_field() {
        assert!(q("/etc/hosts").validate().is_ok());
        assert!(q("").validate().is_ok());
        let field_of = |q: BackupFileQuery| match q.validate() {
            Err(ApiError::InvalidValue { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field_of(q("/etc/../root")), "path");
        assert_eq!(field_of(q("etc")), "path");
        let mut bad = q("/");
        bad.backup = "xyz".into();
        assert_eq!(field_of(bad), "backup");
        let mut bad = q("/");
        bad.repository = "rel".into();
        assert_eq!(field_of(bad), "repository");
        let mut bad = q("/");
        bad.vm = Some("../x".into());
        assert_eq!(field_of(bad), "vm");
        for glob in [
            String::new(),
            "a\0b".into(),
            "*".repeat(FIND_PATTERN_MAX + 1),
        ] {
            let mut bad = q("/");
            bad.find = Some(glob);
            assert_eq!(field_of(bad), "find");
        }
        let mut ok = q("/");
        ok.find = Some("*.conf".into());
        assert!(ok.validate().is_ok());
    }
}
