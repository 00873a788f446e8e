//! Encrypted attachment blobs: opaque ciphertext uploaded in order chunk by chunk over a
//! session and fetchable chunk by chunk by the group's members.
//!
//! Where the bytes live ([`BlobBytes`]): with SQLite, in files under `DATA/blobs`: an upload
//! lives in `ID.part` until its last chunk arrives and it is finished; then it is synced and
//! renamed to `ID`, and only then recorded complete. With PostgreSQL, in the database, chunk
//! by chunk (each committed before it is acknowledged), so every node of a cluster serves
//! every blob. Either way a blob is served only once recorded complete, and an upload whose
//! session ends first is deleted, as are leftovers of a crash: nothing half-written is ever
//! served.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use rand_core::{OsRng, RngCore};
use redoubt_proto::{BLOB_CHUNK_BYTES, BlobId, ErrorCode, GroupId, Request};
use redoubt_store::BlobRecord;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::State;
use crate::api::Authenticated;
use crate::delivery::require_member;
use crate::error::ApiError;

/// Uploads one session may have open at once.
const UPLOADS_PER_SESSION_MAX: usize = 4;
/// Blobs a session remembers having fetched, whose further chunks skip the request rate.
const FETCHES_REMEMBERED_MAX: usize = 8;
/// In a cluster a node cannot tell another node's upload in progress from one a crash left:
/// unfinished uploads are deleted (at start and every minute) only once this old.
const ABANDONED_UPLOAD_S: i64 = 24 * 3600;

/// Where blob bytes are kept.
#[derive(Debug)]
pub(crate) enum BlobBytes {
    /// Files in this folder (one server).
    Files(PathBuf),
    /// Chunks in the store (shared by the nodes of a cluster).
    Database,
}

/// Where an upload's bytes go until it is finished.
#[derive(Debug)]
enum Sink {
    File(tokio::fs::File),
    Database,
}

fn io_failure(error: std::io::Error) -> ApiError {
    use std::io::ErrorKind;
    tracing::error!(%error, "blob storage failed");
    match error.kind() {
        // The disk, not the server, is at fault: the device may retry later.
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::ReadOnlyFilesystem => ApiError::new(
            ErrorCode::StorageUnavailable,
            "the server cannot store attachments right now; nothing was changed; retry later",
        ),
        _ => ApiError::new(
            ErrorCode::Internal,
            "internal server error; the upload was not stored",
        ),
    }
}

impl BlobBytes {
    fn part(dir: &std::path::Path, id: &BlobId) -> PathBuf {
        dir.join(format!("{id}.part"))
    }

    fn complete(dir: &std::path::Path, id: &BlobId) -> PathBuf {
        dir.join(id.to_string())
    }

    async fn open(&self, id: &BlobId) -> Result<Sink, ApiError> {
        match self {
            Self::Files(dir) => {
                let mut options = tokio::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                options.mode(0o600);
                let file = options.open(Self::part(dir, id)).await.map_err(io_failure)?;
                Ok(Sink::File(file))
            }
            Self::Database => Ok(Sink::Database),
        }
    }

    /// Makes an upload's bytes durable and fetchable by name (not yet recorded complete).
    async fn seal(&self, id: &BlobId, sink: Sink) -> Result<(), ApiError> {
        let (Self::Files(dir), Sink::File(mut file)) = (self, sink) else {
            // Each chunk was committed as it came.
            return Ok(());
        };
        file.flush().await.map_err(io_failure)?;
        file.sync_all().await.map_err(io_failure)?;
        drop(file);
        tokio::fs::rename(Self::part(dir, id), Self::complete(dir, id))
            .await
            .map_err(io_failure)?;
        if let Ok(dir) = tokio::fs::File::open(dir).await {
            dir.sync_all().await.map_err(io_failure)?;
        }
        Ok(())
    }

    async fn read(&self, state: &State, id: &BlobId, index: u32, length: u64) -> Result<Vec<u8>, ApiError> {
        let bytes = match self {
            Self::Files(dir) => {
                let offset = u64::from(index) * BLOB_CHUNK_BYTES as u64;
                let mut file = tokio::fs::File::open(Self::complete(dir, id))
                    .await
                    .map_err(io_failure)?;
                file.seek(std::io::SeekFrom::Start(offset))
                    .await
                    .map_err(io_failure)?;
                // length ≤ BLOB_CHUNK_BYTES, so the cast cannot truncate.
                let mut bytes = vec![0; length as usize];
                file.read_exact(&mut bytes).await.map_err(io_failure)?;
                bytes
            }
            Self::Database => state.store.blob_chunk(id, index).await?.unwrap_or_default(),
        };
        if bytes.len() as u64 != length {
            tracing::error!(blob_id = %id, index, "a stored blob chunk has the wrong length");
            return Err(ApiError::new(ErrorCode::Internal, "internal server error"));
        }
        Ok(bytes)
    }

    /// Deletes the blob's files (its chunks in the database go with its record).
    async fn remove(&self, id: &BlobId) -> Result<(), ApiError> {
        let Self::Files(dir) = self else {
            return Ok(());
        };
        for path in [Self::part(dir, id), Self::complete(dir, id)] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_failure(error)),
            }
        }
        Ok(())
    }
}

/// An upload in progress on one session.
#[derive(Debug)]
struct Upload {
    bytes_total: u64,
    chunk_count: u32,
    next_index: u32,
    received: u64,
    sink: Sink,
    /// Part of a history transfer, not an attachment.
    history: bool,
}

/// A session's transfers: its open uploads, and the blobs it fetched lately.
#[derive(Debug, Default)]
pub(crate) struct Transfers {
    open: HashMap<BlobId, Upload>,
    /// Blobs this session fetched a chunk of (so it was a member), newest last.
    fetched: VecDeque<BlobId>,
}

impl Transfers {
    /// Whether `request` continues a transfer this session already has under way: a chunk
    /// of one of its open uploads, or of a blob it has fetched from. Those skip the
    /// request rate limit; everything else, including chunk requests for unknown blobs,
    /// counts against it.
    pub(crate) fn is_under_way(&self, request: &Request) -> bool {
        match request {
            Request::BlobUploadChunk { blob_id, .. } => self.open.contains_key(blob_id),
            Request::BlobFetch { blob_id, .. } => self.fetched.contains(blob_id),
            _ => false,
        }
    }

    fn remember_fetch(&mut self, id: BlobId) {
        if self.fetched.contains(&id) {
            return;
        }
        if self.fetched.len() == FETCHES_REMEMBERED_MAX {
            self.fetched.pop_front();
        }
        self.fetched.push_back(id);
    }
}

fn expected_chunks(bytes_total: u64) -> u64 {
    bytes_total.div_ceil(BLOB_CHUNK_BYTES as u64)
}

pub(crate) async fn start(
    state: &State,
    who: &Authenticated,
    uploads: &mut Transfers,
    group: GroupId,
    bytes_total: u64,
    chunk_count: u32,
) -> Result<BlobId, ApiError> {
    require_member(state, &group, who).await?;
    if let Some(transfer) = state.store.transfer_group(&group).await? {
        // History is not an attachment: the attachment policy does not apply, the server's
        // history limit does.
        if transfer.source != who.device_id {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "only the sending device uploads to a history transfer",
            ));
        }
        let max = state.config.limits.history_blob_bytes_max;
        if bytes_total > max {
            return Err(ApiError::new(
                ErrorCode::LimitReached,
                format!("history blobs may be at most {max} bytes (encrypted); this one is {bytes_total}"),
            ));
        }
        return open_upload(state, who, uploads, group, bytes_total, chunk_count, true).await;
    }
    let (policy, _) = crate::management::effective_policy(state, &who.user).await?;
    if !policy.attachments_allowed {
        return Err(ApiError::new(
            ErrorCode::PolicyViolation,
            "the organisation's policy does not allow attachments",
        ));
    }
    // Each chunk adds a 16-byte tag to the plaintext.
    let plaintext = bytes_total.saturating_sub(16 * u64::from(chunk_count));
    if plaintext > policy.attachment_bytes_max {
        return Err(ApiError::new(
            ErrorCode::PolicyViolation,
            format!(
                "the organisation's policy allows attachments of at most {} bytes; this one is {plaintext}",
                policy.attachment_bytes_max
            ),
        ));
    }
    let max = state.config.limits.attachment_bytes_max;
    if bytes_total > max {
        return Err(ApiError::new(
            ErrorCode::LimitReached,
            format!("attachments may be at most {max} bytes (encrypted); this one is {bytes_total}"),
        ));
    }
    within_daily_quota(state, who, bytes_total).await?;
    open_upload(state, who, uploads, group, bytes_total, chunk_count, false).await
}

/// Refuses an attachment that would take the device past `attachment_bytes_per_day_max`
/// over the last 24 hours. Two uploads started at once on two sessions may both pass: the
/// quota bounds a day's uploads, not a single byte.
async fn within_daily_quota(state: &State, who: &Authenticated, bytes_total: u64) -> Result<(), ApiError> {
    const DAY_S: i64 = 86_400;
    let max = state.config.limits.attachment_bytes_per_day_max;
    let used = state
        .store
        .attachment_bytes_since(&who.device_id, state.now() - DAY_S)
        .await?;
    if used.saturating_add(bytes_total) > max {
        state.metrics.refused_by("attachment_bytes_per_day_max");
        return Err(ApiError::new(
            ErrorCode::LimitReached,
            format!(
                "this device uploaded {used} bytes of attachments in the last 24 hours; another \
                 {bytes_total} would pass the daily limit of {max} bytes (encrypted); try again later"
            ),
        ));
    }
    Ok(())
}

async fn open_upload(
    state: &State,
    who: &Authenticated,
    uploads: &mut Transfers,
    group: GroupId,
    bytes_total: u64,
    chunk_count: u32,
    history: bool,
) -> Result<BlobId, ApiError> {
    if bytes_total == 0 || u64::from(chunk_count) != expected_chunks(bytes_total) {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!(
                "{bytes_total} bytes make {} chunks of {BLOB_CHUNK_BYTES}",
                expected_chunks(bytes_total)
            ),
        ));
    }
    if uploads.open.len() >= UPLOADS_PER_SESSION_MAX {
        return Err(ApiError::new(
            ErrorCode::LimitReached,
            "too many uploads open on this session",
        ));
    }
    let mut bytes = [0; 16];
    OsRng.fill_bytes(&mut bytes);
    let id = BlobId::from(bytes);
    let sink = state.blobs.open(&id).await?;
    let record = BlobRecord {
        id,
        group,
        uploader: who.device_id,
        bytes_total,
        chunk_count,
        complete: false,
        created_at_unix_s: state.now(),
    };
    if let Err(error) = state.store.create_blob(&record).await {
        // Unrecorded, the file would be found by neither the session's end nor the
        // clean-up at start.
        let _ = state.blobs.remove(&id).await;
        return Err(error.into());
    }
    uploads.open.insert(
        id,
        Upload {
            bytes_total,
            chunk_count,
            next_index: 0,
            received: 0,
            sink,
            history,
        },
    );
    Ok(id)
}

pub(crate) async fn chunk(
    state: &State,
    uploads: &mut Transfers,
    id: BlobId,
    index: u32,
    bytes: Vec<u8>,
) -> Result<(), ApiError> {
    let upload = uploads
        .open
        .get_mut(&id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such upload open on this session"))?;
    if index != upload.next_index {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("expected chunk {}, got {index}", upload.next_index),
        ));
    }
    let remaining = upload.bytes_total - upload.received;
    let expected = remaining.min(BLOB_CHUNK_BYTES as u64);
    if bytes.len() as u64 != expected || index >= upload.chunk_count {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("chunk {index} must be {expected} bytes, not {}", bytes.len()),
        ));
    }
    match &mut upload.sink {
        Sink::File(file) => file.write_all(&bytes).await.map_err(io_failure)?,
        Sink::Database => state.store.put_blob_chunk(&id, index, &bytes).await?,
    }
    upload.next_index += 1;
    upload.received += bytes.len() as u64;
    state.metrics.blob_bytes("upload", bytes.len());
    Ok(())
}

pub(crate) async fn finish(state: &State, uploads: &mut Transfers, id: BlobId) -> Result<(), ApiError> {
    let upload = uploads
        .open
        .get(&id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such upload open on this session"))?;
    if upload.next_index != upload.chunk_count {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("{} of {} chunks received", upload.next_index, upload.chunk_count),
        ));
    }
    let Some(upload) = uploads.open.remove(&id) else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "no such upload open on this session",
        ));
    };
    let history = upload.history;
    if let Err(error) = state.blobs.seal(&id, upload.sink).await {
        let _ = state.blobs.remove(&id).await;
        let _ = state.store.delete_blob(&id).await;
        return Err(error);
    }
    if let Err(error) = state.store.complete_blob(&id).await {
        // The record stays incomplete (never served; deleted at the next start); the file
        // goes now rather than sit unrecorded until then.
        let _ = state.blobs.remove(&id).await;
        if let Err(error) = state.store.delete_blob(&id).await {
            tracing::warn!(blob_id = %id, %error, "could not delete a blob whose completion failed");
        }
        return Err(error.into());
    }
    if history {
        crate::crash_point("server.history-blob-stored");
    }
    Ok(())
}

pub(crate) async fn fetch(
    state: &State,
    who: &Authenticated,
    transfers: &mut Transfers,
    id: BlobId,
    index: u32,
) -> Result<(Vec<u8>, u32, u64), ApiError> {
    let blob = state
        .store
        .blob(&id)
        .await?
        .filter(|b| b.complete)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such attachment"))?;
    require_member(state, &blob.group, who).await?;
    if index >= blob.chunk_count {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("the blob has {} chunks", blob.chunk_count),
        ));
    }
    let offset = u64::from(index) * BLOB_CHUNK_BYTES as u64;
    let length = (blob.bytes_total - offset).min(BLOB_CHUNK_BYTES as u64);
    let bytes = state.blobs.read(state, &id, index, length).await?;
    transfers.remember_fetch(id);
    state.metrics.blob_bytes("download", bytes.len());
    Ok((bytes, blob.chunk_count, blob.bytes_total))
}

/// Deletes a session's unfinished uploads (file and record).
pub(crate) async fn abandon(state: &State, uploads: &mut Transfers) {
    for (id, upload) in uploads.open.drain() {
        drop(upload);
        let _ = state.blobs.remove(&id).await;
        if let Err(error) = state.store.delete_blob(&id).await {
            tracing::warn!(blob_id = %id, %error, "could not delete an abandoned upload");
        }
        tracing::info!(blob_id = %id, "abandoned upload deleted");
    }
}

/// Deletes every blob of a group (files and records): a history transfer's, once its
/// target has them or another transfer replaced it.
pub(crate) async fn delete_group_blobs(state: &State, group: &GroupId) -> Result<(), ApiError> {
    for id in state.store.group_blobs(group).await? {
        state.blobs.remove(&id).await?;
        state.store.delete_blob(&id).await?;
    }
    Ok(())
}

/// At start-up: deletes uploads a crash left unfinished.
pub(crate) async fn clean_up(state: &State) -> Result<(), crate::ServerError> {
    for id in state.store.incomplete_blobs().await? {
        if state.cluster.is_shared() {
            let started = state.store.blob(&id).await?.map_or(0, |b| b.created_at_unix_s);
            if started > state.now() - ABANDONED_UPLOAD_S {
                continue;
            }
        }
        let _ = state.blobs.remove(&id).await;
        state.store.delete_blob(&id).await?;
        tracing::info!(blob_id = %id, "deleted an upload left unfinished");
    }
    Ok(())
}
