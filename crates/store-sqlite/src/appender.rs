//! Group commit for log appends, on a thread of its own with its own SQLite connection.
//!
//! Appends waiting together are written in one transaction: with `synchronous = FULL` the
//! sync dominates, so many devices' messages share one. Each append runs under its own
//! savepoint, so one failing (an epoch conflict) leaves the others; nothing is
//! acknowledged before the transaction is durable.
//!
//! Why a plain thread and rusqlite rather than the sqlx pool the rest of the store uses:
//! sqlx runs each statement on its connection's worker thread and hands the statement and
//! every row across a channel, two thread wake-ups per statement. An append is six
//! statements, so through sqlx the single writer spent most of its time waking threads
//! (BENCHMARKS.md, "What bounds each figure"). Here a whole batch is one hand-off in and
//! one answer out per append; the statements run back to back on this thread.

use std::path::Path;
use std::time::Duration;

use redoubt_proto::{DeviceId, GroupId};
use redoubt_store::{AppendError, Appended, GroupTransition, ObserverSlot, StoreError};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use crate::rusqlite_error;

/// Appends written in one transaction at most.
const APPEND_BATCH_MAX: usize = 256;
/// Bytes appended after which the checkpointer folds the write-ahead log into the database.
const CHECKPOINT_AFTER_BYTES: usize = 4 * 1024 * 1024;

/// One append for the appender thread.
pub(crate) struct AppendJob {
    pub entry: OwnedLogEntry,
    pub transition: Option<GroupTransition>,
    pub reply: tokio::sync::oneshot::Sender<Result<Appended, AppendError>>,
}

/// A log entry that owns its message, to cross to the appender thread.
pub(crate) struct OwnedLogEntry {
    pub group: GroupId,
    pub sender: DeviceId,
    pub client_message_id: [u8; 16],
    pub message: Vec<u8>,
    pub created_at_unix_s: i64,
}

/// What the appender thread is asked to do.
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every job is an append; boxing would allocate for each"
)]
pub(crate) enum Job {
    Append(AppendJob),
    /// Finish the appends before it, close the connections, then answer.
    Close(tokio::sync::oneshot::Sender<()>),
}

/// Opens the appender's connection and starts its thread; the thread ends at
/// [`Job::Close`] or when every sender of `jobs` is gone.
pub(crate) fn start(
    path: &Path,
    busy_timeout: Duration,
    jobs: tokio::sync::mpsc::Receiver<Job>,
    observer: ObserverSlot,
) -> Result<(), StoreError> {
    let conn = Connection::open(path).map_err(rusqlite_error)?;
    conn.busy_timeout(busy_timeout).map_err(rusqlite_error)?;
    // The same settings as the pool's connections (journal_mode is the file's own, WAL),
    // except that this connection never checkpoints the log itself: SQLite would do it
    // inside the commit that crosses 1,000 pages, making that batch wait for copying the
    // log into the database and syncing it. The checkpointer thread does it beside.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;")
        .map_err(rusqlite_error)?;
    let checkpointer = Checkpointer::start(path, busy_timeout)?;
    std::thread::Builder::new()
        .name("redoubt-db-append".into())
        .spawn(move || run(conn, jobs, checkpointer, observer))
        .map_err(|e| StoreError::Backend(format!("cannot start the appender thread: {e}")))?;
    Ok(())
}

/// The thread that checkpoints the write-ahead log when told to. A PASSIVE checkpoint
/// copies what it can without blocking the appender; the log is durable either way.
struct Checkpointer {
    wake: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    fn start(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(rusqlite_error)?;
        conn.busy_timeout(busy_timeout).map_err(rusqlite_error)?;
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("redoubt-db-ckpt".into())
            .spawn(move || {
                for () in woken {
                    let result: rusqlite::Result<(i64, i64, i64)> =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                        });
                    if let Err(error) = result {
                        tracing::warn!(%error, "write-ahead log checkpoint failed; the next one retries");
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpointer thread: {e}")))?;
        Ok(Self { wake, thread })
    }

    /// Asks for a checkpoint; one already asked for is enough.
    fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    /// Ends the thread and waits until its connection is closed.
    fn stop(self) {
        drop(self.wake);
        let _ = self.thread.join();
    }
}

fn run(
    mut conn: Connection,
    mut jobs: tokio::sync::mpsc::Receiver<Job>,
    checkpointer: Checkpointer,
    observer: ObserverSlot,
) {
    let mut since_checkpoint = 0;
    let mut closing = None;
    while closing.is_none() {
        let Some(mut next) = jobs.blocking_recv() else {
            break;
        };
        let mut batch = Vec::new();
        loop {
            match next {
                Job::Append(job) => batch.push(job),
                Job::Close(reply) => {
                    closing = Some(reply);
                    break;
                }
            }
            if batch.len() >= APPEND_BATCH_MAX {
                break;
            }
            match jobs.try_recv() {
                Ok(job) => next = job,
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let results = match observer.time_append_batch(batch.len(), || append_batch(&mut conn, &batch)) {
            Ok(results) => results,
            Err(error) => {
                // The transaction did not commit: nothing of the batch was written.
                let error = error.to_string();
                batch
                    .iter()
                    .map(|_| Err(AppendError::Store(StoreError::Backend(error.clone()))))
                    .collect()
            }
        };
        for (job, result) in batch.iter().zip(&results) {
            if result.is_ok() {
                since_checkpoint += job.entry.message.len()
                    + job.transition.as_ref().map_or(0, |t| {
                        t.state.as_ref().map_or(0, Vec::len)
                            + t.welcome.as_ref().map_or(0, |w| w.len() * t.added.len())
                    });
            }
        }
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
        if since_checkpoint >= CHECKPOINT_AFTER_BYTES {
            checkpointer.wake();
            since_checkpoint = 0;
        }
    }
    // Closed in order, so that when the store's `close` returns no connection of ours is
    // left (the last one to close removes the write-ahead log).
    drop(conn);
    checkpointer.stop();
    if let Some(reply) = closing {
        let _ = reply.send(());
    }
}

/// Appends the batch in one transaction; `Err` when the transaction itself failed.
fn append_batch(
    conn: &mut Connection,
    batch: &[AppendJob],
) -> rusqlite::Result<Vec<Result<Appended, AppendError>>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    // Cached statements: `execute_batch` would parse each savepoint statement anew, and this
    // thread does it for every message.
    let statement = |sql: &str| tx.prepare_cached(sql).and_then(|mut s| s.execute([]));
    for job in batch {
        statement("SAVEPOINT append")?;
        let result = append_in(&tx, &job.entry, job.transition.as_ref());
        if !matches!(result, Ok(Appended { duplicate: false, .. })) {
            statement("ROLLBACK TO append")?;
        }
        statement("RELEASE append")?;
        results.push(result);
    }
    tx.commit()?;
    Ok(results)
}

/// One append inside the batch's transaction.
fn append_in(
    conn: &Connection,
    entry: &OwnedLogEntry,
    transition: Option<&GroupTransition>,
) -> Result<Appended, AppendError> {
    let group_id = entry.group.as_bytes().as_slice();
    let existing: Option<i64> = conn
        .prepare_cached(
            "SELECT seq FROM group_log WHERE group_id = ? AND sender = ? AND client_message_id = ?",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    group_id,
                    entry.sender.as_bytes().as_slice(),
                    entry.client_message_id.as_slice()
                ],
                |row| row.get(0),
            )
            .optional()
        })
        .map_err(store)?;
    if let Some(seq) = existing {
        return Ok(Appended {
            seq: from_db(seq)?,
            duplicate: true,
        });
    }
    let (epoch, last_seq): (i64, i64) = conn
        .prepare_cached("SELECT epoch, last_seq FROM groups WHERE id = ?")
        .and_then(|mut s| {
            s.query_row([group_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(store)?
        .ok_or(AppendError::UnknownGroup)?;
    let epoch = from_db(epoch)?;
    let seq = from_db(last_seq)? + 1;
    if let Some(transition) = transition
        && transition.expected_epoch != epoch
    {
        return Err(AppendError::EpochConflict {
            expected: transition.expected_epoch,
            current: epoch,
        });
    }
    let seq_db = to_db(seq)?;
    conn.prepare_cached(
        "INSERT INTO group_log (group_id, seq, sender, client_message_id, message, created_at, handshake)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut s| {
        s.execute(params![
            group_id,
            seq_db,
            entry.sender.as_bytes().as_slice(),
            entry.client_message_id.as_slice(),
            entry.message,
            entry.created_at_unix_s,
            transition.is_some()
        ])
    })
    .map_err(store)?;
    match transition {
        None => {
            conn.prepare_cached("UPDATE groups SET last_seq = ? WHERE id = ?")
                .and_then(|mut s| s.execute(params![seq_db, group_id]))
                .map_err(store)?;
        }
        Some(transition) => {
            let epoch_db = to_db(transition.epoch)?;
            match &transition.state {
                Some(state) => conn
                    .prepare_cached("UPDATE groups SET last_seq = ?1, epoch = ?2, state = ?3, state_seq = ?1 WHERE id = ?4")
                    .and_then(|mut s| s.execute(params![seq_db, epoch_db, state, group_id])),
                None => conn
                    .prepare_cached("UPDATE groups SET last_seq = ?, epoch = ? WHERE id = ?")
                    .and_then(|mut s| s.execute(params![seq_db, epoch_db, group_id])),
            }
            .map_err(store)?;
            for device in &transition.added {
                conn.prepare_cached(
                    "INSERT INTO group_members (group_id, device_id, joined_seq) VALUES (?, ?, ?)
                     ON CONFLICT (group_id, device_id)
                     DO UPDATE SET joined_seq = excluded.joined_seq, removed_seq = NULL",
                )
                .and_then(|mut s| s.execute(params![group_id, device.as_bytes().as_slice(), seq_db]))
                .map_err(|e| AppendError::Store(insert_error(e, "group member", "device")))?;
                if let Some(welcome) = &transition.welcome {
                    conn.prepare_cached(
                        "INSERT INTO inbox (device_id, group_id, welcome, joined_seq) VALUES (?, ?, ?, ?)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![device.as_bytes().as_slice(), group_id, welcome, seq_db])
                    })
                    .map_err(store)?;
                }
            }
            for device in &transition.removed {
                conn.prepare_cached(
                    "UPDATE group_members SET removed_seq = ? WHERE group_id = ? AND device_id = ?",
                )
                .and_then(|mut s| s.execute(params![seq_db, group_id, device.as_bytes().as_slice()]))
                .map_err(store)?;
            }
        }
    }
    Ok(Appended {
        seq,
        duplicate: false,
    })
}

fn store(error: rusqlite::Error) -> AppendError {
    AppendError::Store(rusqlite_error(error))
}

/// Unique violations become `AlreadyExists(what)`, foreign-key violations `NotFound(parent)`.
fn insert_error(error: rusqlite::Error, what: &'static str, parent: &'static str) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, _) = &error
        && failure.code == ErrorCode::ConstraintViolation
    {
        match failure.extended_code {
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                return StoreError::AlreadyExists(what);
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => return StoreError::NotFound(parent),
            _ => {}
        }
    }
    rusqlite_error(error)
}

fn from_db(value: i64) -> Result<u64, AppendError> {
    u64::try_from(value).map_err(|_| AppendError::Store(crate::corrupt("sequence number")))
}

fn to_db(value: u64) -> Result<i64, AppendError> {
    i64::try_from(value)
        .map_err(|_| AppendError::Store(StoreError::Backend("sequence number exceeds i64".into())))
}
