//! `AdminStats`: this node's live figures for the web console's dashboard.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redoubt_proto::{ErrorCode, ServerStats};

use crate::State;
use crate::api::Authenticated;
use crate::error::ApiError;
use crate::management::{Permission, require};

/// The window `messages_last_minute` counts over.
const WINDOW_S: i64 = 60;

/// Messages appended through this node, per second, over the last minute.
#[derive(Debug, Default)]
pub(crate) struct MessageRate {
    seconds: Mutex<VecDeque<(i64, u64)>>,
}

impl MessageRate {
    /// Counts one message appended at `now` (unix seconds).
    pub(crate) fn add(&self, now: i64) {
        let mut seconds = self.seconds.lock().unwrap_or_else(|p| p.into_inner());
        match seconds.back_mut() {
            Some((second, count)) if *second == now => *count += 1,
            _ => seconds.push_back((now, 1)),
        }
        while seconds
            .front()
            .is_some_and(|(second, _)| *second <= now - WINDOW_S)
        {
            seconds.pop_front();
        }
    }

    /// Messages appended in the minute before `now`.
    pub(crate) fn last_minute(&self, now: i64) -> u64 {
        let seconds = self.seconds.lock().unwrap_or_else(|p| p.into_inner());
        seconds
            .iter()
            .filter(|(second, _)| *second > now - WINDOW_S)
            .map(|(_, count)| count)
            .sum()
    }
}

/// Bytes of the regular files in `dir` (not following links; one level, as blobs are kept).
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .sum()
}

/// The SQLite database with its write-ahead log.
fn database_bytes(database: &Path) -> u64 {
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    [database.to_owned(), PathBuf::from(wal)]
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|meta| meta.len())
        .sum()
}

pub(crate) async fn stats(state: &State, who: &Authenticated) -> Result<ServerStats, ApiError> {
    require(state, who, Permission::ViewStats).await?;
    let (sessions, devices_online) = state.subscribers.counts();
    let database = state.database_file.clone();
    let blobs = match &state.blobs {
        crate::blobs::BlobBytes::Files(dir) => Some(dir.clone()),
        crate::blobs::BlobBytes::Database => None,
    };
    let (database_bytes, blob_bytes) = tokio::task::spawn_blocking(move || {
        (
            database.as_deref().map(database_bytes),
            blobs.as_deref().map(folder_bytes),
        )
    })
    .await
    .map_err(|e| {
        tracing::error!("measuring storage: {e}");
        ApiError::new(ErrorCode::Internal, "internal server error")
    })?;
    Ok(ServerStats {
        sessions: u32::try_from(sessions).unwrap_or(u32::MAX),
        devices_online: u32::try_from(devices_online).unwrap_or(u32::MAX),
        messages_last_minute: state.message_rate.last_minute(state.now()),
        database_bytes,
        blob_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_the_last_minute_only() {
        let rate = MessageRate::default();
        rate.add(1_000);
        rate.add(1_000);
        rate.add(1_030);
        assert_eq!(rate.last_minute(1_030), 3);
        assert_eq!(rate.last_minute(1_059), 3);
        assert_eq!(
            rate.last_minute(1_060),
            1,
            "the two of second 1000 are a minute old"
        );
        rate.add(1_200);
        assert_eq!(rate.last_minute(1_200), 1);
        assert_eq!(rate.seconds.lock().unwrap().len(), 1, "old seconds are dropped");
    }
}
