//! Online snapshots of a live SQLite file, for `redoubt server backup`: SQLite's backup API
//! copies the database page by page inside one read transaction, so the copy is the state
//! of one commit while the server keeps writing (WAL readers do not block writers). A file
//! copy would not be: it could catch the main file and the WAL at different moments.
//!
//! These functions are blocking; callers run them off the async runtime.

use std::path::Path;
use std::time::Duration;

use redoubt_proto::BlobId;
use redoubt_store::{Result, StoreError};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::rusqlite_error;

/// How long the snapshot waits for a lock (a checkpoint, a schema change) per attempt.
const SNAPSHOT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts before giving up on a database that stays locked.
const SNAPSHOT_ATTEMPTS_MAX: u32 = 20;

/// Copies the database at `source` (which may be in use) into a new file `target`, as of one
/// moment; returns the snapshot's size in bytes. `target` must not exist.
pub fn snapshot(source: &Path, target: &Path) -> Result<u64> {
    if target.exists() {
        return Err(StoreError::Backend(format!(
            "{} already exists",
            target.display()
        )));
    }
    let from = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(rusqlite_error)?;
    from.busy_timeout(SNAPSHOT_BUSY_TIMEOUT).map_err(rusqlite_error)?;
    let mut to = Connection::open(target).map_err(rusqlite_error)?;
    {
        let backup = Backup::new(&from, &mut to).map_err(rusqlite_error)?;
        let mut attempt = 0;
        // -1: every page in one step, so the whole copy is made under one read
        // transaction (a step-by-step copy restarts whenever another connection writes).
        loop {
            match backup.step(-1).map_err(rusqlite_error)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    attempt += 1;
                    if attempt >= SNAPSHOT_ATTEMPTS_MAX {
                        return Err(StoreError::Backend(format!(
                            "{} stayed locked; no snapshot taken",
                            source.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => {
                    return Err(StoreError::Backend("unexpected SQLite backup step result".into()));
                }
            }
        }
    }
    // A snapshot of a WAL database is itself in WAL mode: fold everything into the one
    // file, which is all the archive holds.
    to.pragma_update(None, "journal_mode", "DELETE")
        .map_err(rusqlite_error)?;
    to.close().map_err(|(_, e)| rusqlite_error(e))?;
    std::fs::metadata(target)
        .map(|m| m.len())
        .map_err(|e| StoreError::Backend(format!("{}: {e}", target.display())))
}

/// `PRAGMA integrity_check` on a database file no one else uses: `Ok(())` when SQLite finds
/// it sound, else its first complaints.
pub fn integrity_check(path: &Path) -> Result<()> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(rusqlite_error)?;
    let mut statement = conn
        .prepare("PRAGMA integrity_check(20)")
        .map_err(rusqlite_error)?;
    let problems: Vec<String> = statement
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(rusqlite_error)?
        .collect::<std::result::Result<_, _>>()
        .map_err(rusqlite_error)?;
    if problems == ["ok"] {
        return Ok(());
    }
    Err(StoreError::Backend(format!(
        "{} fails SQLite's integrity check: {}",
        path.display(),
        problems.join("; ")
    )))
}

/// The attachments a server database (a snapshot no one else uses) records as complete:
/// the blob files a copy of the data folder needs beside it.
pub fn complete_blob_ids(path: &Path) -> Result<Vec<BlobId>> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(rusqlite_error)?;
    let mut statement = conn
        .prepare("SELECT id FROM blobs WHERE complete = 1 ORDER BY id")
        .map_err(rusqlite_error)?;
    let ids: Vec<Vec<u8>> = statement
        .query_map([], |row| row.get(0))
        .map_err(rusqlite_error)?
        .collect::<std::result::Result<_, _>>()
        .map_err(rusqlite_error)?;
    ids.into_iter()
        .map(|id| {
            <[u8; 16]>::try_from(id)
                .map(BlobId::from)
                .map_err(|_| StoreError::Corrupt("a blob id is not 16 bytes".into()))
        })
        .collect()
}

/// Numbers a restored database skips ([`skip_numbers_handed_out_after`]): more than a
/// server hands out between a backup and the loss of its machine (a room at 10,000
/// messages a second takes a day to use them).
pub const RESTORE_NUMBERS_SKIPPED: i64 = 1_000_000_000;

/// Moves a restored database's counters past anything the lost server may have handed out
/// after its snapshot, so that no number devices saw is given again with another meaning:
/// a group's next log position (a device whose cursor is past the snapshot would skip new
/// messages numbered into the old places), the policy version (devices never apply one they
/// think they have, so every device fetches the restored policy once), remote command ids
/// (a device carries out only ids above the last it did: a new wipe must not look like one
/// it already ran), inbox and key package ids and certificate serials. One transaction.
pub fn skip_numbers_handed_out_after(path: &Path) -> Result<()> {
    let mut conn = Connection::open(path).map_err(rusqlite_error)?;
    let tx = conn.transaction().map_err(rusqlite_error)?;
    let skip = RESTORE_NUMBERS_SKIPPED;
    tx.execute("UPDATE groups SET last_seq = last_seq + ?1", [skip])
        .map_err(rusqlite_error)?;
    tx.execute("UPDATE counters SET value = value + ?1", [skip])
        .map_err(rusqlite_error)?;
    for table in ["device_commands", "inbox", "key_packages"] {
        // A table that never had a row has no entry yet; its ids would start at 1.
        tx.execute(
            "INSERT INTO sqlite_sequence (name, seq) SELECT ?1, 0
             WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?1)",
            [table],
        )
        .map_err(rusqlite_error)?;
        tx.execute(
            "UPDATE sqlite_sequence SET seq = seq + ?1 WHERE name = ?2",
            rusqlite::params![skip, table],
        )
        .map_err(rusqlite_error)?;
    }
    tx.commit().map_err(rusqlite_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_restored_database_hands_out_no_number_twice() {
        use redoubt_store::Store;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("redoubt.db");
        let store = crate::SqliteStore::open(&path).await.unwrap();
        store.close().await;
        let before = |conn: &Connection, sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        let conn = Connection::open(&path).unwrap();
        let policy = before(&conn, "SELECT value FROM counters WHERE name = 'policy_version'");
        drop(conn);
        skip_numbers_handed_out_after(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        assert_eq!(
            before(&conn, "SELECT value FROM counters WHERE name = 'policy_version'"),
            policy + RESTORE_NUMBERS_SKIPPED
        );
        // Ids continue after the skip, even for a table that never had a row.
        conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        conn.execute(
            "INSERT INTO device_commands (device_id, kind, issued_by, issued_at) VALUES (x'00', 'wipe', 'admin', 0)",
            [],
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), RESTORE_NUMBERS_SKIPPED + 1);
        integrity_check(&path).unwrap();
    }

    #[test]
    fn a_snapshot_of_a_database_in_use_holds_its_committed_rows_and_passes_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("live.db");
        let live = Connection::open(&source).unwrap();
        live.pragma_update(None, "journal_mode", "WAL").unwrap();
        live.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2);")
            .unwrap();
        // An open write transaction is not in the snapshot; the committed rows are.
        live.execute_batch("BEGIN; INSERT INTO t VALUES (3);").unwrap();
        let target = dir.path().join("copy.db");
        let bytes = snapshot(&source, &target).unwrap();
        live.execute_batch("COMMIT").unwrap();
        assert!(bytes > 0);
        integrity_check(&target).unwrap();
        let copy = Connection::open(&target).unwrap();
        let count: i64 = copy
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 2);
        assert!(!dir.path().join("copy.db-wal").exists());
        assert!(
            snapshot(&source, &target).is_err(),
            "an existing target is refused"
        );
    }

    #[test]
    fn a_damaged_file_fails_the_integrity_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x TEXT); CREATE INDEX t_x ON t (x);")
            .unwrap();
        for i in 0..2000 {
            conn.execute("INSERT INTO t VALUES (?)", [format!("row {i} of some length")])
                .unwrap();
        }
        drop(conn);
        let mut bytes = std::fs::read(&path).unwrap();
        let page = 4096;
        for byte in &mut bytes[3 * page + 100..3 * page + 400] {
            *byte ^= 0x5a;
        }
        std::fs::write(&path, bytes).unwrap();
        assert!(integrity_check(&path).is_err());
    }
}
