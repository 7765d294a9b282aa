//! Snapshots for `edgenode backup` on the node's own machine: `POST
//! /api/v1/node/backups` copies the database as of one transaction into
//! `<data_dir>/spool/backup-<id>.redb` and says what it holds; the CLI copies that
//! file and the photos it references, then `DELETE`s it. Only the local control
//! token may ask: the file is useful only to a process that can read the data dir.

use std::sync::Mutex;
use std::time::Duration;

use http::StatusCode;

use super::{empty_response, Api, ApiError, ApiResult, Call};
use crate::store::backup::SnapshotError;

/// A snapshot left behind this long (its backup was killed) is removed by the next.
const SNAPSHOT_KEPT_MAX: Duration = Duration::from_secs(3600);
/// Prefix and extension of snapshot files in the spool dir.
const SNAPSHOT_PREFIX: &str = "backup-";
const SNAPSHOT_EXTENSION: &str = ".redb";

/// One snapshot at a time: each holds a read transaction and its size in disk space.
static SNAPSHOT_IN_PROGRESS: Mutex<()> = Mutex::new(());

fn require_control_token(call: &Call<'_>) -> Result<(), ApiError> {
    if call.local_control {
        Ok(())
    } else {
        Err(ApiError::forbidden("backups are made by `edgenode backup` on the node's own machine (control token)"))
    }
}

/// `POST /api/v1/node/backups`.
pub fn create(api: &Api, call: &mut Call<'_>) -> ApiResult {
    require_control_token(call)?;
    let _one_at_a_time = match SNAPSHOT_IN_PROGRESS.try_lock() {
        Ok(guard) => guard,
        // A snapshot that panicked left nothing to protect: the next may go.
        Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "backup_in_progress",
                "another backup is taking its snapshot; run this one again when it ends",
            ))
        }
    };
    remove_stale_snapshots(&api.spool_dir);
    // The snapshot is at most as big as the database; it must not eat the reserve
    // that clients' writes stop at.
    let database_bytes = std::fs::metadata(api.data_dir.join("edgenode.redb")).map_or(0, |metadata| metadata.len());
    api.store.ensure_space(database_bytes)?;
    let random: [u8; 4] = crate::os::random_bytes();
    let id = format!("{}-{}", crate::os::now_ms(), crate::store::hex(&random));
    let file_name = format!("{SNAPSHOT_PREFIX}{id}{SNAPSHOT_EXTENSION}");
    let path = api.spool_dir.join(&file_name);
    let started = std::time::Instant::now();
    let summary = api.store.snapshot_to(&path).map_err(|error| {
        let _ = std::fs::remove_file(&path);
        match error {
            SnapshotError::Store(error) => ApiError::from(error),
            error @ SnapshotError::UnlistedTable(_) => {
                tracing::error!(%error, "backup refused");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "backup_incomplete", error.to_string())
            }
        }
    })?;
    tracing::info!(
        id,
        database_bytes = summary.database_bytes,
        rows = summary.rows,
        media_items = summary.media_items,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "backup snapshot taken"
    );
    super::shapes::answer(
        StatusCode::CREATED,
        &super::shapes::BackupTaken {
            path: format!("{}/{file_name}", super::SPOOL_DIR),
            id,
            node_id: summary.node_id.to_string(),
            database_bytes: summary.database_bytes,
            rows: summary.rows,
            records: summary.records.saturating_sub(summary.tombstones),
            tombstones: summary.tombstones,
            digest: format!("{:016x}", summary.digest),
            media_items: summary.media_items,
            media_bytes: summary.media_bytes,
            version: env!("CARGO_PKG_VERSION"),
        },
    )
}

/// `DELETE /api/v1/node/backups/{id}`: the CLI has its copy.
pub fn release(api: &Api, call: &mut Call<'_>) -> ApiResult {
    require_control_token(call)?;
    let id = call.param(0);
    let well_formed =
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|byte| byte.is_ascii_hexdigit() || byte == b'-');
    if !well_formed {
        return Err(ApiError::not_found("backup snapshot"));
    }
    match std::fs::remove_file(api.spool_dir.join(format!("{SNAPSHOT_PREFIX}{id}{SNAPSHOT_EXTENSION}"))) {
        Ok(()) => empty_response(StatusCode::NO_CONTENT),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(ApiError::not_found("backup snapshot")),
        Err(error) => Err(ApiError::from(crate::store::StoreError::Io(error))),
    }
}

/// Removes snapshots older than `SNAPSHOT_KEPT_MAX` (their backup died before it
/// released them); the node's start clears the spool dir as well.
fn remove_stale_snapshots(spool_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(spool_dir) else { return };
    let now = crate::os::now_system_time();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(SNAPSHOT_PREFIX) && name.ends_with(SNAPSHOT_EXTENSION)) {
            continue;
        }
        let age =
            entry.metadata().and_then(|metadata| metadata.modified()).ok().and_then(|at| now.duration_since(at).ok());
        if age.is_some_and(|age| age > SNAPSHOT_KEPT_MAX) {
            tracing::info!(file = %name, "removing a backup snapshot no backup released");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
