//! Reads on the calling thread, through a few SQLite connections kept open.
//!
//! Why not the sqlx pool the writes use: sqlx runs each statement on its connection's
//! worker thread and hands the statement and every row across channels, two thread
//! wake-ups per statement, which was most of a short read's cost (in a reconnect storm the
//! server spent more time waking threads than in SQLite). The reads here are lookups by key
//! and short range scans that SQLite answers from its page cache in microseconds, so they
//! run where they are asked, like any other short computation on a runtime thread. Under
//! WAL a reader never waits for the writer. The price: a read that must go to the disk
//! holds its runtime thread for that long, where sqlx held two threads.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use redoubt_proto::UserName;
use redoubt_store::{ObserverSlot, Result, StoreError};
use rusqlite::types::FromSql;
use rusqlite::{Connection, OpenFlags, Params, Row};

use crate::rusqlite_error;

/// Idle connections kept open; more are opened while more reads run at once.
const IDLE_CONNECTIONS_MAX: usize = 8;

pub(crate) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    observer: ObserverSlot,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Readers {
    /// Opens the first connection, so a database that cannot be read fails here.
    pub(crate) fn open(path: &Path, busy_timeout: Duration, observer: ObserverSlot) -> Result<Self> {
        let readers = Self {
            path: path.to_owned(),
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            observer,
        };
        let first = readers.connect()?;
        readers.idle().push(first);
        Ok(readers)
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connect(&self) -> Result<Connection> {
        // Never creates the file: the store opened (and migrated) it already.
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(rusqlite_error)?;
        conn.busy_timeout(self.busy_timeout).map_err(rusqlite_error)?;
        conn.execute_batch("PRAGMA query_only = ON;")
            .map_err(rusqlite_error)?;
        Ok(conn)
    }

    fn with<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = match self.idle().pop() {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = self.observer.time_read(|| read(&conn));
        let mut idle = self.idle();
        if idle.len() < IDLE_CONNECTIONS_MAX {
            idle.push(conn);
        }
        result
    }

    /// Every row `sql` yields, decoded.
    pub(crate) fn all<T>(
        &self,
        sql: &str,
        params: impl Params,
        decode: impl Fn(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.with(|conn| {
            let mut statement = conn.prepare_cached(sql).map_err(rusqlite_error)?;
            let mut rows = statement.query(params).map_err(rusqlite_error)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(rusqlite_error)? {
                out.push(decode(row)?);
            }
            Ok(out)
        })
    }

    /// The first row `sql` yields, decoded.
    pub(crate) fn first<T>(
        &self,
        sql: &str,
        params: impl Params,
        decode: impl Fn(&Row<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        self.with(|conn| {
            let mut statement = conn.prepare_cached(sql).map_err(rusqlite_error)?;
            let mut rows = statement.query(params).map_err(rusqlite_error)?;
            rows.next().map_err(rusqlite_error)?.map(decode).transpose()
        })
    }

    /// Closes the idle connections (the store's close: the last connection to close
    /// folds and removes the write-ahead log).
    pub(crate) fn close(&self) {
        self.idle().clear();
    }
}

/// A column's value.
pub(crate) fn column<T: FromSql>(row: &Row<'_>, name: &str) -> Result<T> {
    row.get(name).map_err(rusqlite_error)
}

/// A column holding exactly `N` bytes.
pub(crate) fn column_fixed<const N: usize>(row: &Row<'_>, name: &str) -> Result<[u8; N]> {
    column::<Vec<u8>>(row, name)?
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{name} has the wrong length")))
}

pub(crate) fn column_user(row: &Row<'_>, name: &str) -> Result<UserName> {
    UserName::parse(&column::<String>(row, name)?).map_err(|_| crate::corrupt("user name"))
}
