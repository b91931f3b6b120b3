//! The backup routes: the backups in a repository, their retention, and single guest
//! files read out of a backup's disk.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;

use super::{call, AppState, Body};
use crate::api::error::{ApiError, Result};
use crate::api::files::{BackupDir, BackupFileQuery, FileDownload};
use crate::api::types::{BackupInfo, BackupsQuery, ForgetRequest, ForgetResult};

/// `GET /backups?repository=PATH[&vm=NAME]`: the backups in a repository (oldest first),
/// to choose one to restore.
#[utoipa::path(get, path = "/api/v1/backups", tag = "backups", params(BackupsQuery),
    responses((status = 200, body = Vec<BackupInfo>), (status = 400, body = crate::api::ErrorBody),
        (status = 422, description = "no repository there", body = crate::api::ErrorBody)))]
pub(super) async fn backups(
    State(st): State<AppState>,
    query: std::result::Result<Query<BackupsQuery>, QueryRejection>,
) -> Result<Json<Vec<BackupInfo>>> {
    let Query(q) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    q.validate()?;
    call(&st, move |s| s.backups(q)).await.map(Json)
}

/// `POST /backups/forget`: keeps a VM's newest `keep_last` backups, forgets the older
/// ones and prunes their data (vcb's forget and prune, under the repository's lock).
#[utoipa::path(post, path = "/api/v1/backups/forget", tag = "backups",
    request_body = ForgetRequest,
    responses((status = 200, body = ForgetResult), (status = 400, body = crate::api::ErrorBody),
        (status = 422, description = "impossible", body = crate::api::ErrorBody)))]
pub(super) async fn forget_backups(
    State(st): State<AppState>,
    Body(request): Body<ForgetRequest>,
) -> Result<Json<ForgetResult>> {
    request.validate()?;
    call(&st, move |s| s.forget_backups(request))
        .await
        .map(Json)
}

/// A file query read and checked.
fn file_query(
    q: std::result::Result<Query<BackupFileQuery>, QueryRejection>,
) -> Result<BackupFileQuery> {
    let Query(q) = q.map_err(|e| ApiError::Malformed(e.body_text()))?;
    q.validate()?;
    Ok(q)
}

/// `GET /backups/files?repository=&backup=&disk=&path=[&find=GLOB]`: a directory of the
/// guest filesystem on a disk of a backup, read from the repository; with `find`, the
/// entries anywhere under `path` whose names match the glob.
#[utoipa::path(get, path = "/api/v1/backups/files", tag = "backups", params(BackupFileQuery),
    responses((status = 200, body = BackupDir), (status = 400, body = crate::api::ErrorBody),
        (status = 422, description = "no such repository, backup, disk, partition or path; \
            no filesystem recognised; not a directory (the field is named)",
            body = crate::api::ErrorBody)))]
pub(super) async fn backup_files(
    State(st): State<AppState>,
    q: std::result::Result<Query<BackupFileQuery>, QueryRejection>,
) -> Result<Json<BackupDir>> {
    let q = file_query(q)?;
    if q.format.is_some() {
        return Err(ApiError::InvalidValue {
            field: "format".into(),
            why: "only GET /backups/file takes a format".into(),
        });
    }
    call(&st, move |s| s.backup_files(q)).await.map(Json)
}

/// `GET /backups/file?repository=&backup=&disk=&path=[&format=tar]`: a guest file's
/// bytes (`Content-Disposition: attachment`), or with `format=tar` a file or a whole
/// directory as a tar stream; streamed as it is read from the repository.
#[utoipa::path(get, path = "/api/v1/backups/file", tag = "backups", params(BackupFileQuery),
    responses((status = 200, description = "the file, or a tar stream",
            content_type = "application/octet-stream"),
        (status = 400, body = crate::api::ErrorBody),
        (status = 422, description = "no such repository, backup, disk, partition or path; \
            a directory without format=tar (the field is named)", body = crate::api::ErrorBody)))]
pub(super) async fn backup_file(
    State(st): State<AppState>,
    q: std::result::Result<Query<BackupFileQuery>, QueryRejection>,
) -> Result<FileDownload> {
    let q = file_query(q)?;
    if q.find.is_some() {
        return Err(ApiError::InvalidValue {
            field: "find".into(),
            why: "only GET /backups/files takes a find pattern".into(),
        });
    }
    call(&st, move |s| s.backup_file(q)).await
}
