//! Group commit for log appends: one task per store takes every append waiting (up to
//! [`APPEND_BATCH_MAX`]) and writes them in one transaction, so that many devices' messages
//! share one commit, the cost that bounds appends (the server runs with `fsync` and
//! `synchronous_commit` on). An append refused (an epoch conflict) leaves the others; one
//! failing with an error of its own rolls back alone (`Mode::Savepoints`). Nothing is
//! answered before the commit.
//!
//! Correct with several nodes appending to one group: each append takes its group row's
//! lock (`FOR NO KEY UPDATE`, the lock an `UPDATE` takes) before it numbers its entry or
//! checks the epoch, and holds it to the commit, so entries are numbered densely and
//! become visible in order. A batch locks its groups in id order, as every node's batches
//! do, so two batches never wait for each other in a circle; should PostgreSQL abort a
//! batch for a conflict nonetheless, the whole batch runs again
//! ([`crate::TRANSACTION_ATTEMPTS_MAX`]).
//!
//! Round trips, not the database's work, bound a batch: its application messages go to
//! the database a group at a time, each run of them (consecutive in the sorted batch, up
//! to a handshake) in one statement ([`append_run`]); a handshake is written as before,
//! in its place among its group's messages. A batch of one run is that statement alone,
//! its own transaction; otherwise the statements share a `BEGIN` … `COMMIT`. The task
//! keeps one connection of the pool for itself ([`Link`]), so that a batch does not wait
//! for the pool's check of a connection it hands out.

use std::collections::HashMap;

use redoubt_proto::{DeviceId, GroupId};
use redoubt_store::{AppendError, Appended, GroupTransition, ObserverSlot, StoreError};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::{Connection, PgConnection, Postgres};

use crate::{
    TRANSACTION_ATTEMPTS_MAX, backend_error, backend_message, backoff, corrupt, from_db, insert_error,
    is_conflict, to_db,
};

/// Appends written in one transaction at most.
const APPEND_BATCH_MAX: usize = 256;

/// One append for the group-commit task.
pub(crate) struct AppendJob {
    pub entry: OwnedLogEntry,
    pub transition: Option<GroupTransition>,
    pub reply: tokio::sync::oneshot::Sender<Result<Appended, AppendError>>,
}

/// A log entry that owns its message, to cross to the group-commit task.
pub(crate) struct OwnedLogEntry {
    pub group: GroupId,
    pub sender: DeviceId,
    pub client_message_id: [u8; 16],
    pub message: Vec<u8>,
    pub created_at_unix_s: i64,
}

/// What the group-commit task is asked to do.
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every job is an append; boxing would allocate for each"
)]
pub(crate) enum Job {
    Append(AppendJob),
    /// Finish the appends before it, then answer.
    Close(tokio::sync::oneshot::Sender<()>),
}

/// Starts the task; it ends at [`Job::Close`] or when every sender of `jobs` is gone.
pub(crate) fn start(pool: PgPool, jobs: tokio::sync::mpsc::Receiver<Job>, observer: ObserverSlot) {
    tokio::spawn(run(pool, jobs, observer));
}

async fn run(pool: PgPool, mut jobs: tokio::sync::mpsc::Receiver<Job>, observer: ObserverSlot) {
    let mut link = Link {
        pool,
        conn: None,
        used_at: None,
    };
    let mut closing = None;
    while closing.is_none() {
        let Some(mut next) = jobs.recv().await else {
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
        // Groups locked in id order; a stable sort keeps each group's appends in the
        // order they came.
        batch.sort_by(|a, b| a.entry.group.as_bytes().cmp(b.entry.group.as_bytes()));
        let started = std::time::Instant::now();
        let results = append_batch(&mut link, &batch).await;
        observer.append_batch(batch.len(), started.elapsed());
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
    // Back to the pool before the store closes it.
    drop(link);
    if let Some(reply) = closing {
        let _ = reply.send(());
    }
}

/// The task's own connection, taken from the pool when first needed and after one was
/// lost.
///
/// A connection left unused for a while is checked before its next batch, as the pool
/// checks one it hands out: one the server closed meanwhile is replaced rather than
/// failing the batch (whose answer, lost, could not tell whether it was written). While
/// appends keep coming — even with short waits between them — batches follow each other on
/// a connection used moments ago, without that extra round trip.
struct Link {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
    /// When the connection last carried a batch.
    used_at: Option<std::time::Instant>,
}

/// How long a connection may sit unused before it is checked again.
const IDLE_CHECK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl Link {
    async fn connection(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        let idle = self.used_at.is_none_or(|at| at.elapsed() > IDLE_CHECK_AFTER);
        if let Some(conn) = &mut self.conn
            && idle
            && conn.ping().await.is_err()
        {
            self.forget();
        }
        self.used_at = Some(std::time::Instant::now());
        let conn = match &mut self.conn {
            Some(conn) => conn,
            empty => {
                let mut conn = self.pool.acquire().await?;
                // The append statements take arrays and CTEs: planned afresh at each run (what
                // PostgreSQL keeps doing when a custom plan looks no dearer than the generic
                // one), one cost 2.9 ms, most of a batch; planned once, 0.6 ms. The setting
                // stays with the connection, which goes back to the pool only when the
                // store closes.
                sqlx::query("SET plan_cache_mode = force_generic_plan")
                    .execute(&mut *conn)
                    .await?;
                empty.insert(conn)
            }
        };
        Ok(&mut **conn)
    }

    /// After a batch failed with `error`: a connection that may be broken (anything but
    /// an error PostgreSQL reported) is closed, and the next batch takes another.
    fn failed(&mut self, error: &sqlx::Error) {
        if !matches!(error, sqlx::Error::Database(_)) {
            self.forget();
        }
    }

    fn forget(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}

/// How a batch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Without savepoints: what every batch tries first.
    Plain,
    /// A savepoint around each append, so that one failing rolls back alone.
    Savepoints,
}

/// Why a batch's transaction did not commit. Nothing of it was written.
enum BatchFailed {
    /// An append failed with an error of its own, which aborts a PostgreSQL transaction:
    /// the batch runs again, each append under a savepoint.
    NeedsSavepoints,
    /// The transaction failed (connection lost, deadlock).
    Database(sqlx::Error),
}

/// Appends the batch in one transaction, run again while PostgreSQL aborts it for a
/// conflict. When the transaction fails, every append gets its error: none was written.
///
/// Savepoints only when an append fails: each savepoint that writes takes a
/// subtransaction id, and past 64 in one transaction PostgreSQL's per-session cache of
/// them overflows, which makes every other session's snapshots slower. An append refused
/// before it writes (a repeat, an epoch conflict, no such group) needs none.
async fn append_batch(link: &mut Link, batch: &[AppendJob]) -> Vec<Result<Appended, AppendError>> {
    let mut mode = Mode::Plain;
    let mut attempt = 1;
    loop {
        let outcome = append_batch_once(link, batch, mode).await;
        if let Err(BatchFailed::Database(error)) = &outcome {
            link.failed(error);
        }
        match outcome {
            Ok(results) => return results,
            Err(BatchFailed::NeedsSavepoints) => mode = Mode::Savepoints,
            Err(BatchFailed::Database(error))
                if attempt < TRANSACTION_ATTEMPTS_MAX && is_conflict(&error) =>
            {
                backoff(attempt).await;
                attempt += 1;
            }
            Err(BatchFailed::Database(error)) => {
                let message = backend_message(&error);
                tracing::warn!(error = %message, appends = batch.len(), "a batch of appends failed; none was written");
                return batch
                    .iter()
                    .map(|_| Err(AppendError::Store(StoreError::Backend(message.clone()))))
                    .collect();
            }
        }
    }
}

async fn append_batch_once(
    link: &mut Link,
    batch: &[AppendJob],
    mode: Mode,
) -> Result<Vec<Result<Appended, AppendError>>, BatchFailed> {
    let conn = link.connection().await.map_err(BatchFailed::Database)?;
    if mode == Mode::Plain && run_len(batch) == batch.len() {
        // One statement, its own transaction: no BEGIN and COMMIT to wait for.
        return plain(append_run(conn, batch).await);
    }
    let mut tx = conn.begin().await.map_err(BatchFailed::Database)?;
    let mut results = Vec::with_capacity(batch.len());
    let mut rest = batch;
    while !rest.is_empty() {
        match mode {
            Mode::Plain => {
                let len = run_len(rest);
                if len == 0 {
                    // A handshake.
                    results.push(plain(append_or_refuse(&mut tx, &rest[0]).await)?);
                    rest = &rest[1..];
                } else {
                    results.extend(plain(append_run(&mut tx, &rest[..len]).await)?);
                    rest = &rest[len..];
                }
            }
            Mode::Savepoints => {
                results.push(
                    append_under_savepoint(&mut tx, &rest[0])
                        .await
                        .map_err(BatchFailed::Database)?,
                );
                rest = &rest[1..];
            }
        }
    }
    tx.commit().await.map_err(BatchFailed::Database)?;
    Ok(results)
}

/// Without savepoints, an append's own error fails the batch: it runs again with them.
fn plain<T>(outcome: Result<T, Failed>) -> Result<T, BatchFailed> {
    match outcome {
        Ok(value) => Ok(value),
        Err(Failed::Statement(_)) => Err(BatchFailed::NeedsSavepoints),
        Err(Failed::Batch(error)) => Err(BatchFailed::Database(error)),
    }
}

/// How many appends at the start of `jobs` form a run: application messages (no
/// transition) to the group of the first. 0 when the first is a handshake.
fn run_len(jobs: &[AppendJob]) -> usize {
    let Some(first) = jobs.first() else {
        return 0;
    };
    jobs.iter()
        .take_while(|job| job.transition.is_none() && job.entry.group == first.entry.group)
        .count()
}

/// A statement of an append failed.
enum Failed {
    /// An error of this append's own (a constraint, a bad value): the transaction is
    /// aborted until rolled back to a savepoint taken before the append.
    Statement(AppendError),
    /// The transaction cannot go on (connection lost, deadlock): the batch fails, or runs
    /// again.
    Batch(sqlx::Error),
}

/// A database error inside one append: a conflict or a lost connection is the batch's;
/// an error PostgreSQL reported for this statement alone is this append's.
fn failed(error: sqlx::Error, what: &'static str, parent: &'static str) -> Failed {
    match &error {
        sqlx::Error::Database(_) if !is_conflict(&error) => {
            Failed::Statement(AppendError::Store(insert_error(error, what, parent)))
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => {
            Failed::Statement(AppendError::Store(backend_error(error)))
        }
        _ => Failed::Batch(error),
    }
}

/// A statement whose failure is a log entry's.
fn log_error(error: sqlx::Error) -> Failed {
    failed(error, "log entry", "group")
}

async fn statement(conn: &mut PgConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(conn).await.map(drop)
}

/// One append under its own savepoint: when it fails, it alone is rolled back. `Err` only
/// when the batch's transaction failed.
async fn append_under_savepoint(
    conn: &mut PgConnection,
    job: &AppendJob,
) -> Result<Result<Appended, AppendError>, sqlx::Error> {
    statement(conn, "SAVEPOINT one_append").await?;
    let result = match append_or_refuse(conn, job).await {
        Ok(result) => result,
        Err(Failed::Statement(error)) => {
            statement(conn, "ROLLBACK TO SAVEPOINT one_append").await?;
            Err(error)
        }
        Err(Failed::Batch(error)) => return Err(error),
    };
    statement(conn, "RELEASE SAVEPOINT one_append").await?;
    Ok(result)
}

/// One append: `Ok(Ok)` written (or found written before), `Ok(Err)` refused before
/// anything was written, `Err` when a statement failed.
async fn append_or_refuse(
    conn: &mut PgConnection,
    job: &AppendJob,
) -> Result<Result<Appended, AppendError>, Failed> {
    let Some(transition) = &job.transition else {
        return Ok(match append_message(conn, &job.entry).await? {
            Some(seq) => Ok(Appended {
                seq,
                duplicate: false,
            }),
            // Nothing written: a repeat of an earlier append, or no such group.
            None => match earlier_append(conn, &job.entry).await? {
                Some(seq) => Ok(Appended { seq, duplicate: true }),
                None => Err(AppendError::UnknownGroup),
            },
        });
    };
    append_handshake(conn, &job.entry, transition).await
}

/// A run of application messages to one group (see [`run_len`]), written by one statement:
/// the group row is locked once (held to the commit), the messages not appended before
/// are numbered from its `last_seq` + 1 in the order given, and `last_seq` moves once.
/// Each gets its own answer; a repeat (of an earlier append, or of one before it in the
/// run) the earlier one's sequence number, all of them `UnknownGroup` when there is no
/// such group.
///
/// The statement reads the log as of its start; should another node commit the same
/// sender and client message id after that, before this statement had the lock, the
/// insert fails (a unique violation, the run's own error) and the batch runs again an
/// append at a time ([`Mode::Savepoints`]), where the repeat is found.
async fn append_run(
    conn: &mut PgConnection,
    run: &[AppendJob],
) -> Result<Vec<Result<Appended, AppendError>>, Failed> {
    let Some(first) = run.first() else {
        return Ok(Vec::new());
    };
    // A repeat within the run is not sent: one statement could not see its own entry.
    // `sent[slot[i]]` is the first append of the run with `run[i]`'s ids.
    let mut sent: Vec<usize> = Vec::with_capacity(run.len());
    let mut slot: Vec<usize> = Vec::with_capacity(run.len());
    let mut seen: HashMap<(&[u8; 16], &[u8; 16]), usize> = HashMap::with_capacity(run.len());
    for (i, job) in run.iter().enumerate() {
        let key = (job.entry.sender.as_bytes(), &job.entry.client_message_id);
        let at = *seen.entry(key).or_insert_with(|| {
            sent.push(i);
            sent.len() - 1
        });
        slot.push(at);
    }
    let senders: Vec<[u8; 16]> = sent.iter().map(|&i| *run[i].entry.sender.as_bytes()).collect();
    let ids: Vec<[u8; 16]> = sent.iter().map(|&i| run[i].entry.client_message_id).collect();
    let messages: Vec<&[u8]> = sent.iter().map(|&i| run[i].entry.message.as_slice()).collect();
    let created: Vec<i64> = sent.iter().map(|&i| run[i].entry.created_at_unix_s).collect();
    // The lock is taken first and returns the row as it is after any wait; the UPDATE
    // then finds the row as locked. `n` numbers the messages sent from 1.
    let rows: Vec<(i64, i64, bool)> = sqlx::query_as(
        "WITH head AS (
             SELECT last_seq FROM groups WHERE id = $1 FOR NO KEY UPDATE),
         input AS (
             SELECT * FROM unnest($2::bytea[], $3::bytea[], $4::bytea[], $5::bigint[])
                 WITH ORDINALITY AS i (sender, client_message_id, message, created_at, n)),
         earlier AS (
             SELECT input.n, group_log.seq FROM input JOIN group_log
                 ON group_log.group_id = $1 AND group_log.sender = input.sender
                     AND group_log.client_message_id = input.client_message_id),
         fresh AS (
             SELECT input.n, input.sender, input.client_message_id, input.message, input.created_at,
                     head.last_seq + row_number() OVER (ORDER BY input.n) AS seq
                 FROM input CROSS JOIN head
                 WHERE NOT EXISTS (SELECT 1 FROM earlier WHERE earlier.n = input.n)),
         entries AS (
             INSERT INTO group_log (group_id, seq, sender, client_message_id, message, created_at, handshake)
             SELECT $1, seq, sender, client_message_id, message, created_at, FALSE FROM fresh ORDER BY seq),
         moved AS (
             UPDATE groups SET last_seq = top.seq
             FROM (SELECT max(seq) AS seq FROM fresh) AS top
             WHERE groups.id = $1 AND top.seq IS NOT NULL)
         SELECT n, seq, FALSE FROM fresh
         UNION ALL
         SELECT n, seq, TRUE FROM earlier",
    )
    .bind(first.entry.group.as_bytes())
    .bind(&senders)
    .bind(&ids)
    .bind(&messages)
    .bind(&created)
    .fetch_all(&mut *conn)
    .await
    .map_err(log_error)?;
    let mut answers: Vec<Option<Appended>> = vec![None; sent.len()];
    for (n, seq, duplicate) in rows {
        let answer = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| answers.get_mut(i))
            .ok_or_else(|| Failed::Statement(AppendError::Store(corrupt("appended entry number"))))?;
        *answer = Some(Appended {
            seq: sequence(seq)?,
            duplicate,
        });
    }
    Ok(slot
        .iter()
        .enumerate()
        .map(|(i, &at)| match answers[at] {
            // The group exists: every message sent was written or found.
            Some(appended) => Ok(Appended {
                seq: appended.seq,
                duplicate: appended.duplicate || sent[at] != i,
            }),
            None => Err(AppendError::UnknownGroup),
        })
        .collect())
}

/// An application message, numbered and written in one statement under the group row's
/// lock (held to the commit). The group's `last_seq` moves only when the entry is written;
/// `None` when it is not (see [`earlier_append`]).
async fn append_message(conn: &mut PgConnection, entry: &OwnedLogEntry) -> Result<Option<u64>, Failed> {
    // The lock is taken first and returns the row as it is after any wait; the UPDATE
    // then finds the row as locked.
    let seq: Option<i64> = sqlx::query_scalar(
        "WITH head AS (
             SELECT last_seq + 1 AS seq FROM groups WHERE id = $1 FOR NO KEY UPDATE),
         entry AS (
             INSERT INTO group_log (group_id, seq, sender, client_message_id, message, created_at, handshake)
             SELECT $1, head.seq, $2, $3, $4, $5, FALSE FROM head
             ON CONFLICT (group_id, sender, client_message_id) DO NOTHING
             RETURNING seq),
         moved AS (
             UPDATE groups SET last_seq = entry.seq FROM entry WHERE groups.id = $1)
         SELECT seq FROM entry",
    )
    .bind(entry.group.as_bytes())
    .bind(entry.sender.as_bytes())
    .bind(entry.client_message_id)
    .bind(entry.message.as_slice())
    .bind(entry.created_at_unix_s)
    .fetch_optional(&mut *conn)
    .await
    .map_err(log_error)?;
    seq.map(sequence).transpose()
}

/// The sequence number an earlier append with this entry's sender and client message id
/// got, if any.
async fn earlier_append(conn: &mut PgConnection, entry: &OwnedLogEntry) -> Result<Option<u64>, Failed> {
    let seq: Option<i64> = sqlx::query_scalar(
        "SELECT seq FROM group_log WHERE group_id = $1 AND sender = $2 AND client_message_id = $3",
    )
    .bind(entry.group.as_bytes())
    .bind(entry.sender.as_bytes())
    .bind(entry.client_message_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(log_error)?;
    seq.map(sequence).transpose()
}

/// A handshake: the group row is locked first, then the repeat and the epoch are checked
/// under the lock, and the entry, the group's new head and membership are written.
async fn append_handshake(
    conn: &mut PgConnection,
    entry: &OwnedLogEntry,
    transition: &GroupTransition,
) -> Result<Result<Appended, AppendError>, Failed> {
    let group_id = entry.group.as_bytes();
    // NO KEY: the lock an UPDATE of the row takes; rows referring to the group (blobs)
    // may still be inserted meanwhile.
    let head: Option<(i64, i64)> =
        sqlx::query_as("SELECT epoch, last_seq FROM groups WHERE id = $1 FOR NO KEY UPDATE")
            .bind(group_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(log_error)?;
    let Some((epoch, last_seq)) = head else {
        return Ok(Err(AppendError::UnknownGroup));
    };
    if let Some(seq) = earlier_append(conn, entry).await? {
        return Ok(Ok(Appended { seq, duplicate: true }));
    }
    let epoch = sequence(epoch)?;
    if transition.expected_epoch != epoch {
        return Ok(Err(AppendError::EpochConflict {
            expected: transition.expected_epoch,
            current: epoch,
        }));
    }
    let seq = sequence(last_seq)? + 1;
    let seq_db = db(seq)?;
    sqlx::query(
        "INSERT INTO group_log (group_id, seq, sender, client_message_id, message, created_at, handshake)
         VALUES ($1, $2, $3, $4, $5, $6, TRUE)",
    )
    .bind(group_id)
    .bind(seq_db)
    .bind(entry.sender.as_bytes())
    .bind(entry.client_message_id)
    .bind(entry.message.as_slice())
    .bind(entry.created_at_unix_s)
    .execute(&mut *conn)
    .await
    .map_err(log_error)?;
    // Without a new state the stored one stays, as of its entry; this one is replayed.
    sqlx::query(
        "UPDATE groups SET last_seq = $2, epoch = $3,
             state = coalesce($4, state),
             state_seq = CASE WHEN $4 IS NULL THEN state_seq ELSE $2 END
         WHERE id = $1",
    )
    .bind(group_id)
    .bind(seq_db)
    .bind(db(transition.epoch)?)
    .bind(transition.state.as_deref())
    .execute(&mut *conn)
    .await
    .map_err(log_error)?;
    write_membership(conn, &entry.group, seq_db, transition).await?;
    Ok(Ok(Appended {
        seq,
        duplicate: false,
    }))
}

/// Adds and removes members as of entry `seq`, and delivers the Welcome to those added.
async fn write_membership(
    conn: &mut PgConnection,
    group: &GroupId,
    seq: i64,
    transition: &GroupTransition,
) -> Result<(), Failed> {
    let mut added: Vec<[u8; 16]> = Vec::with_capacity(transition.added.len());
    for device in &transition.added {
        // Once each: one statement may not upsert a row twice.
        if !added.contains(device.as_bytes()) {
            added.push(*device.as_bytes());
        }
    }
    if !added.is_empty() {
        sqlx::query(
            "INSERT INTO group_members (group_id, device_id, joined_seq)
             SELECT $1, d.id, $3 FROM unnest($2::bytea[]) AS d (id)
             ON CONFLICT (group_id, device_id)
             DO UPDATE SET joined_seq = excluded.joined_seq, removed_seq = NULL",
        )
        .bind(group.as_bytes())
        .bind(&added)
        .bind(seq)
        .execute(&mut *conn)
        .await
        .map_err(|e| failed(e, "group member", "device"))?;
        if let Some(welcome) = &transition.welcome {
            sqlx::query(
                "INSERT INTO inbox (device_id, group_id, welcome, joined_seq)
                 SELECT d.id, $2, $3, $4 FROM unnest($1::bytea[]) WITH ORDINALITY AS d (id, n) ORDER BY d.n",
            )
            .bind(&added)
            .bind(group.as_bytes())
            .bind(welcome.as_slice())
            .bind(seq)
            .execute(&mut *conn)
            .await
            .map_err(|e| failed(e, "inbox item", "device"))?;
        }
    }
    if !transition.removed.is_empty() {
        let removed: Vec<[u8; 16]> = transition.removed.iter().map(|d| *d.as_bytes()).collect();
        sqlx::query("UPDATE group_members SET removed_seq = $1 WHERE group_id = $2 AND device_id = ANY($3)")
            .bind(seq)
            .bind(group.as_bytes())
            .bind(&removed)
            .execute(&mut *conn)
            .await
            .map_err(log_error)?;
    }
    Ok(())
}

fn sequence(value: i64) -> Result<u64, Failed> {
    from_db(value, "sequence number").map_err(|e| Failed::Statement(AppendError::Store(e)))
}

fn db(value: u64) -> Result<i64, Failed> {
    to_db(value, "sequence number").map_err(|e| Failed::Statement(AppendError::Store(e)))
}
