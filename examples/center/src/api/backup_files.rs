//! Single-file restore from the console: a backup's guest filesystem browsed and its
//! files (or folders, as tar) downloaded, through a connected host, which reads them
//! straight out of the repository (the host API's `GET /backups/files` and
//! `GET /backups/file`; the repository is on the storage every host sees).
//!
//! Who may: any role lists directories (names, sizes and times, as the inventory shows
//! the rest); downloading a file's contents needs the operator role, as the console does
//! — a backup holds the guest's secrets (keys, password hashes) — and is recorded as an
//! event. The download is streamed from the host to the client as it is read: the
//! center never holds a whole file.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use vinfra_host::api::client::ClientError;
use vinfra_host::api::{body_channel, BackupDir, BackupFileQuery, FileFormat};

use super::vm::{pick_host, running_host};
use super::{blocking, ApiError, ApiResult, AppState, QueryArgs};
use crate::auth::Principal;
use crate::model::Role;

/// The query of `GET /api/vinfra/backup/files` and `GET /api/vinfra/backup/file`.
#[derive(Debug, Clone, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FilesQuery {
    /// The repository (an absolute path on the hosts).
    pub repository: String,
    /// The backup's id (hex; a unique prefix of 8 or more digits).
    pub backup: String,
    /// The disk: its index in the backup's disks (default 0).
    pub disk: Option<u32>,
    /// The partition (0: a disk without a partition table); left out, the only one with
    /// a filesystem.
    pub partition: Option<u32>,
    /// The guest path (default `/`).
    pub path: Option<String>,
    /// The VM the backup is of: its host reads it when it answers (else any host), and
    /// a backup of another VM is refused.
    pub vm: Option<String>,
    /// `file` only: `tar` for a folder.
    pub format: Option<FileFormat>,
    /// `files` only: a glob on names (without case; with a `/`, on the whole guest
    /// path): the matches anywhere under `path`, named by their path below it.
    pub find: Option<String>,
}

impl FilesQuery {
    /// The host's query, checked here first (422 naming the field, nothing sent).
    fn to_host(&self) -> ApiResult<BackupFileQuery> {
        let q = BackupFileQuery {
            repository: self.repository.clone(),
            backup: self.backup.clone(),
            disk: self.disk.unwrap_or(0),
            partition: self.partition,
            path: self.path.clone().unwrap_or_else(|| "/".into()),
            vm: self.vm.clone(),
            format: self.format,
            find: self.find.clone(),
        };
        q.validate().map_err(host_field)?;
        Ok(q)
    }
}

/// A host-side validation's refusal, with the same field name here.
fn host_field(e: vinfra_host::api::ApiError) -> ApiError {
    match e {
        vinfra_host::api::ApiError::InvalidValue { field, why } => {
            ApiError::field(&field, format!("{field}: {why}"))
        }
        e => ApiError::from(e),
    }
}

/// A host's answer: its status and words; the field it names is the query's here too.
fn host_error(e: ClientError) -> ApiError {
    let mut e = ApiError::from(e);
    if let Some(f) = e.info.field.take() {
        e.info.field = Some(f.trim_start_matches("spec.").to_string());
    }
    e
}

/// The query's pairs for the host.
fn pairs(q: &BackupFileQuery) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("repository", q.repository.clone()),
        ("backup", q.backup.clone()),
        ("disk", q.disk.to_string()),
        ("path", q.path.clone()),
    ];
    if let Some(p) = q.partition {
        v.push(("partition", p.to_string()));
    }
    if let Some(vm) = &q.vm {
        v.push(("vm", vm.clone()));
    }
    if q.format == Some(FileFormat::Tar) {
        v.push(("format", "tar".into()));
    }
    if let Some(f) = &q.find {
        v.push(("find", f.clone()));
    }
    v
}

/// The host that reads: the VM's when it answers, else any connected one.
fn reader_host(
    state: &AppState,
    vm: Option<&str>,
) -> ApiResult<std::sync::Arc<vinfra_host::api::client::Client>> {
    if let Some(vm) = vm {
        if let Some(known) = state.store.vm(vm)? {
            if let Ok((_, client)) = running_host(state, &known) {
                return Ok(client);
            }
        }
    }
    pick_host(state, None, "host").map(|(_, c)| c)
}

/// `GET /api/vinfra/backup/files?repository=&backup=&disk=&path=[&partition=&vm=&find=]`:
/// a directory of the guest filesystem on a disk of a backup (folders first), read by a
/// host from the repository; with `find`, the matches of a glob anywhere under `path`.
/// Any role.
#[utoipa::path(get, path = "/api/vinfra/backup/files", tag = "backup", params(FilesQuery),
    responses((status = 200, body = BackupDir), (status = 400, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody),
        (status = 422, description = "no such backup, disk, partition or path; no filesystem (the field is named)",
            body = super::ErrorBody)))]
pub async fn files(
    State(state): State<AppState>,
    _who: Principal,
    QueryArgs(q): QueryArgs<FilesQuery>,
) -> ApiResult<Json<BackupDir>> {
    let q = q.to_host()?;
    if q.format.is_some() {
        return Err(ApiError::field(
            "format",
            "format: only /api/vinfra/backup/file takes a format",
        ));
    }
    let client = reader_host(&state, q.vm.as_deref())?;
    let dir = blocking(move || {
        let p = pairs(&q);
        let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        client.get_query::<BackupDir>("/backups/files", &refs)
    })
    .await?
    .map_err(host_error)?;
    Ok(Json(dir))
}

/// `GET /api/vinfra/backup/file?repository=&backup=&disk=&path=[&format=tar]`
/// (operator): a guest file out of a backup as an attachment, or a folder as a tar
/// stream, streamed from the host as it reads it; recorded as an event.
#[utoipa::path(get, path = "/api/vinfra/backup/file", tag = "backup", params(FilesQuery),
    responses((status = 200, description = "the file's bytes, or a tar stream",
            content_type = "application/octet-stream"),
        (status = 400, body = super::ErrorBody), (status = 403, body = super::ErrorBody),
        (status = 422, description = "no such backup, disk, partition or path; a folder without format=tar",
            body = super::ErrorBody)))]
pub async fn file(
    State(state): State<AppState>,
    who: Principal,
    QueryArgs(q): QueryArgs<FilesQuery>,
) -> ApiResult<Response> {
    who.require(Role::Operator)?;
    let q = q.to_host()?;
    if q.find.is_some() {
        return Err(ApiError::field(
            "find",
            "find: only /api/vinfra/backup/files searches",
        ));
    }
    let client = reader_host(&state, q.vm.as_deref())?;
    let asked = q.clone();
    let download = blocking(move || {
        let p = pairs(&q);
        let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        client.get_stream("/backups/file", &refs)
    })
    .await?
    .map_err(host_error)?;
    let what = if asked.format == Some(FileFormat::Tar) {
        "as tar"
    } else {
        "file"
    };
    state.events.action(
        state.now_ms(),
        &who.name,
        "backup.file_downloaded",
        asked.vm.as_deref().unwrap_or(""),
        format!(
            "{} downloaded {} ({what}) from backup {} disk {} in {}",
            who.name,
            asked.path,
            &asked.backup[..asked.backup.len().min(12)],
            asked.disk,
            asked.repository
        ),
        serde_json::to_value(&asked).unwrap_or_default(),
    )?;
    let (mut writer, body) = body_channel();
    let mut from_host = download.body;
    // The copy blocks on both ends: the host's socket and the client's queue.
    tokio::task::spawn_blocking(move || match std::io::copy(&mut from_host, &mut writer) {
        Ok(_) => {
            let _ = writer.finish();
        }
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => writer.fail(format!("reading from the host: {e}")),
    });
    let mut r = body.into_body().into_response();
    let h = r.headers_mut();
    let mut set = |name, value: Option<String>| {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(name, v);
        }
    };
    set(header::CONTENT_TYPE, download.content_type);
    set(header::CONTENT_DISPOSITION, download.disposition);
    set(
        header::CONTENT_LENGTH,
        download.length.map(|n| n.to_string()),
    );
    set(header::CACHE_CONTROL, Some("no-store".into()));
    Ok(r)
}
