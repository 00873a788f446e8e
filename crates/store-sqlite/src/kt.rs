//! The key directory's records (see `redoubt_store::KtNode`, `KtValue`, `KtSet`).

use redoubt_proto::UserName;
use redoubt_store::{KtEpochRecord, KtNode, KtSet, KtValue, Result, StoreError};
use sqlx::sqlite::SqliteRow;

use crate::{SqliteStore, backend_error, corrupt, from_db, get, insert_error, to_db, user_name};

/// Keys bound in one `IN (...)` list at most, well under SQLite's limit on a statement's
/// variables (32,766): an epoch's proofs read thousands of tree records at once.
const KEYS_PER_QUERY_MAX: usize = 500;

/// Rows inserted by one statement at most (at most four variables each). Within a
/// statement SQLite applies them in order, so a key given twice ends with its last record.
const ROWS_PER_INSERT_MAX: usize = 250;

/// `head`, then `row` `count` times separated by commas, then `tail`. Only statements of
/// full chunks are kept prepared (`persistent`): a last, shorter chunk's length varies from
/// call to call and would push other statements out of the connection's cache.
fn with_rows(head: &str, row: &str, count: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + (row.len() + 2) * count + tail.len());
    sql.push_str(head);
    for i in 0..count {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
    sql.push_str(tail);
    sql
}

/// `select` followed by an `IN` list of `count` variables, then `order`.
fn with_in_list(select: &str, count: usize, order: &str) -> String {
    with_rows(&format!("{select} IN ("), "?", count, &format!("){order}"))
}

/// The keys, sorted and each once: read in sorted chunks, the rows come out in key order
/// across chunks too.
fn sorted_keys(keys: &[Vec<u8>]) -> Vec<&[u8]> {
    let mut keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// A set as stored: postcard of its certificates and approvals (`Vec<Vec<u8>>` each), the
/// same bytes in both backends (`import_sqlite` copies them as they are).
fn encode_set(set: &KtSet) -> Result<Vec<u8>> {
    postcard::to_stdvec(&(&set.certificates, &set.approvals)).map_err(|e| StoreError::Backend(e.to_string()))
}

fn set_from_row(row: &SqliteRow) -> Result<KtSet> {
    let bytes: Vec<u8> = get(row, "device_set")?;
    let (certificates, approvals) = match postcard::take_from_bytes::<(Vec<Vec<u8>>, Vec<Vec<u8>>)>(&bytes) {
        Ok((set, [])) => set,
        _ => return Err(corrupt("key directory device set")),
    };
    Ok(KtSet {
        user: user_name(row, "user_name")?,
        epoch: from_db(get(row, "epoch")?, "key directory epoch")?,
        certificates,
        approvals,
    })
}

/// Takes `users` off the changed users.
async fn unmark(conn: &mut sqlx::SqliteConnection, users: &[UserName]) -> Result<()> {
    for user in users {
        sqlx::query("DELETE FROM kt_changed WHERE user_name = ?")
            .bind(user.as_str())
            .execute(&mut *conn)
            .await
            .map_err(backend_error)?;
    }
    Ok(())
}

fn head_from_row((epoch, head): (i64, Vec<u8>)) -> Result<(u64, Vec<u8>)> {
    Ok((from_db(epoch, "key directory epoch")?, head))
}

impl SqliteStore {
    pub(crate) async fn kt_write_impl(&self, nodes: &[KtNode], values: &[KtValue]) -> Result<()> {
        let epochs = values
            .iter()
            .map(|v| {
                Ok((
                    to_db(v.epoch, "key directory epoch")?,
                    to_db(v.version, "key directory version")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        // Many rows a statement: each statement costs sqlx two thread hand-offs, and the
        // transaction holds SQLite's one writer lock (log appends wait) until it commits.
        for some in nodes.chunks(ROWS_PER_INSERT_MAX) {
            let sql = with_rows(
                "INSERT INTO kt_nodes (key, record) VALUES ",
                "(?, ?)",
                some.len(),
                " ON CONFLICT (key) DO UPDATE SET record = excluded.record",
            );
            let mut query =
                sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(some.len() == ROWS_PER_INSERT_MAX);
            for node in some {
                query = query.bind(node.key.as_slice()).bind(node.record.as_slice());
            }
            query.execute(&mut *tx).await.map_err(backend_error)?;
        }
        for (some, epochs) in values
            .chunks(ROWS_PER_INSERT_MAX)
            .zip(epochs.chunks(ROWS_PER_INSERT_MAX))
        {
            let sql = with_rows(
                "INSERT INTO kt_values (label, epoch, version, record) VALUES ",
                "(?, ?, ?, ?)",
                some.len(),
                " ON CONFLICT (label, epoch) DO UPDATE SET version = excluded.version, \
                 record = excluded.record",
            );
            let mut query =
                sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(some.len() == ROWS_PER_INSERT_MAX);
            for (value, (epoch, version)) in some.iter().zip(epochs) {
                query = query
                    .bind(value.label.as_slice())
                    .bind(*epoch)
                    .bind(*version)
                    .bind(value.record.as_slice());
            }
            query.execute(&mut *tx).await.map_err(backend_error)?;
        }
        tx.commit().await.map_err(backend_error)
    }

    pub(crate) async fn kt_nodes_impl(&self, keys: &[Vec<u8>]) -> Result<Vec<KtNode>> {
        let keys = sorted_keys(keys);
        let mut nodes = Vec::with_capacity(keys.len());
        // One read transaction: every chunk sees the same tree.
        let mut tx = self.pool.begin().await.map_err(backend_error)?;
        for some in keys.chunks(KEYS_PER_QUERY_MAX) {
            let sql = with_in_list("SELECT key, record FROM kt_nodes WHERE key", some.len(), "");
            let mut query = sqlx::query_as::<_, (Vec<u8>, Vec<u8>)>(sqlx::AssertSqlSafe(sql))
                .persistent(some.len() == KEYS_PER_QUERY_MAX);
            for key in some {
                query = query.bind(*key);
            }
            let rows = query.fetch_all(&mut *tx).await.map_err(backend_error)?;
            nodes.extend(rows.into_iter().map(|(key, record)| KtNode { key, record }));
        }
        tx.commit().await.map_err(backend_error)?;
        Ok(nodes)
    }

    pub(crate) async fn kt_values_impl(&self, labels: &[Vec<u8>]) -> Result<Vec<KtValue>> {
        let labels = sorted_keys(labels);
        let mut values = Vec::new();
        let mut tx = self.pool.begin().await.map_err(backend_error)?;
        for some in labels.chunks(KEYS_PER_QUERY_MAX) {
            let sql = with_in_list(
                "SELECT label, epoch, version, record FROM kt_values WHERE label",
                some.len(),
                " ORDER BY label, epoch",
            );
            let mut query =
                sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(some.len() == KEYS_PER_QUERY_MAX);
            for label in some {
                query = query.bind(*label);
            }
            for row in query.fetch_all(&mut *tx).await.map_err(backend_error)? {
                values.push(KtValue {
                    label: get(&row, "label")?,
                    epoch: from_db(get(&row, "epoch")?, "key directory epoch")?,
                    version: from_db(get(&row, "version")?, "key directory version")?,
                    record: get(&row, "record")?,
                });
            }
        }
        tx.commit().await.map_err(backend_error)?;
        Ok(values)
    }

    pub(crate) async fn kt_put_sets_impl(&self, sets: &[KtSet]) -> Result<()> {
        let rows = sets
            .iter()
            .map(|set| {
                Ok((
                    set.user.as_str(),
                    to_db(set.epoch, "key directory epoch")?,
                    encode_set(set)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        for (user, epoch, certificates) in rows {
            sqlx::query(
                "INSERT INTO kt_sets (user_name, epoch, device_set) VALUES (?, ?, ?)
                 ON CONFLICT (user_name, epoch) DO UPDATE SET device_set = excluded.device_set",
            )
            .bind(user)
            .bind(epoch)
            .bind(certificates)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        }
        tx.commit().await.map_err(backend_error)
    }

    pub(crate) async fn kt_sets_impl(&self, user: &UserName) -> Result<Vec<KtSet>> {
        sqlx::query("SELECT user_name, epoch, device_set FROM kt_sets WHERE user_name = ? ORDER BY epoch")
            .bind(user.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?
            .iter()
            .map(set_from_row)
            .collect()
    }

    pub(crate) async fn kt_latest_sets_impl(&self) -> Result<Vec<KtSet>> {
        sqlx::query(
            "SELECT user_name, epoch, device_set FROM kt_sets AS s
             WHERE epoch = (SELECT max(epoch) FROM kt_sets WHERE user_name = s.user_name)
             ORDER BY user_name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?
        .iter()
        .map(set_from_row)
        .collect()
    }

    pub(crate) async fn kt_finish_epoch_impl(&self, record: &KtEpochRecord, done: &[UserName]) -> Result<()> {
        let epoch = to_db(record.epoch, "key directory epoch")?;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        // A plain insert: a head is never replaced (and the table's triggers refuse it).
        sqlx::query("INSERT INTO kt_heads (epoch, head, proof) VALUES (?, ?, ?)")
            .bind(epoch)
            .bind(&record.head)
            .bind(&record.proof)
            .execute(&mut *tx)
            .await
            .map_err(|e| insert_error(e, "epoch", "epoch"))?;
        unmark(&mut tx, done).await?;
        tx.commit().await.map_err(backend_error)
    }

    pub(crate) async fn kt_heads_impl(&self, after: u64, limit: u32) -> Result<Vec<KtEpochRecord>> {
        // An `after` beyond i64 has no epochs after it.
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        sqlx::query_as("SELECT epoch, head, proof FROM kt_heads WHERE epoch > ? ORDER BY epoch LIMIT ?")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?
            .into_iter()
            .map(|(epoch, head, proof): (i64, Vec<u8>, Vec<u8>)| {
                Ok(KtEpochRecord {
                    epoch: from_db(epoch, "key directory epoch")?,
                    head,
                    proof,
                })
            })
            .collect()
    }

    pub(crate) async fn kt_latest_head_impl(&self) -> Result<Option<(u64, Vec<u8>)>> {
        sqlx::query_as("SELECT epoch, head FROM kt_heads ORDER BY epoch DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?
            .map(head_from_row)
            .transpose()
    }

    pub(crate) async fn kt_mark_changed_impl(&self, users: &[UserName]) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        for user in users {
            sqlx::query("INSERT INTO kt_changed (user_name) VALUES (?) ON CONFLICT DO NOTHING")
                .bind(user.as_str())
                .execute(&mut *tx)
                .await
                .map_err(backend_error)?;
        }
        tx.commit().await.map_err(backend_error)
    }

    pub(crate) async fn kt_changed_impl(&self, limit: u32) -> Result<Vec<UserName>> {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT user_name FROM kt_changed ORDER BY user_name LIMIT ?")
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(backend_error)?;
        names
            .iter()
            .map(|name| UserName::parse(name).map_err(|_| corrupt("user name")))
            .collect()
    }

    pub(crate) async fn kt_unmark_impl(&self, users: &[UserName]) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        unmark(&mut tx, users).await?;
        tx.commit().await.map_err(backend_error)
    }

    pub(crate) async fn kt_put_auditor_signature_impl(
        &self,
        auditor_key: &[u8; 32],
        epoch: u64,
        document: &[u8],
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO kt_auditors (auditor_key, epoch, document) VALUES (?, ?, ?)
             ON CONFLICT (auditor_key) DO UPDATE SET epoch = excluded.epoch, document = excluded.document
             WHERE excluded.epoch >= kt_auditors.epoch",
        )
        .bind(auditor_key.as_slice())
        .bind(to_db(epoch, "key directory epoch")?)
        .bind(document)
        .execute(&self.pool)
        .await
        .map_err(backend_error)?;
        Ok(())
    }

    pub(crate) async fn kt_auditor_signatures_impl(&self) -> Result<Vec<Vec<u8>>> {
        sqlx::query_scalar("SELECT document FROM kt_auditors ORDER BY auditor_key")
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)
    }
}
