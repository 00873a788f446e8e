//! The key directory's records (see `redoubt_store::KtNode`, `KtValue`, `KtSet`).

use std::collections::BTreeMap;

use redoubt_proto::UserName;
use redoubt_store::{KtEpochRecord, KtNode, KtSet, KtValue, Result, StoreError};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use crate::{PgStore, backend_error, corrupt, get, insert_error, to_db, unsigned, user_name};

/// Rows sent in one statement at most, as arrays through `unnest`: an epoch of a thousand
/// changes writes some twenty thousand tree records.
const ROWS_PER_STATEMENT_MAX: usize = 2_000;

/// A set as stored: postcard of its certificates and approvals (`Vec<Vec<u8>>` each), the
/// same bytes in both backends (`import_sqlite` copies them as they are).
fn encode_set(set: &KtSet) -> Result<Vec<u8>> {
    postcard::to_stdvec(&(&set.certificates, &set.approvals)).map_err(|e| StoreError::Backend(e.to_string()))
}

fn set_from_row(row: &PgRow) -> Result<KtSet> {
    let bytes: Vec<u8> = get(row, "device_set")?;
    let (certificates, approvals) = match postcard::take_from_bytes::<(Vec<Vec<u8>>, Vec<Vec<u8>>)>(&bytes) {
        Ok((set, [])) => set,
        _ => return Err(corrupt("key directory device set")),
    };
    Ok(KtSet {
        user: user_name(row, "user_name")?,
        epoch: unsigned(row, "epoch")?,
        certificates,
        approvals,
    })
}

/// The names, sorted and each once: transactions touching several rows of `kt_changed`
/// lock them in one order.
fn sorted_names(users: &[UserName]) -> Vec<&str> {
    let mut users: Vec<&str> = users.iter().map(UserName::as_str).collect();
    users.sort_unstable();
    users.dedup();
    users
}

/// Takes `users` (from [`sorted_names`]) off the changed users.
async fn unmark(conn: &mut PgConnection, users: &[&str]) -> Result<()> {
    sqlx::query("DELETE FROM kt_changed WHERE user_name = ANY($1)")
        .bind(users)
        .execute(conn)
        .await
        .map_err(backend_error)?;
    Ok(())
}

fn head_from_row(row: &PgRow) -> Result<(u64, Vec<u8>)> {
    Ok((unsigned(row, "epoch")?, get(row, "head")?))
}

impl PgStore {
    pub(crate) async fn kt_write_impl(&self, nodes: &[KtNode], values: &[KtValue]) -> Result<()> {
        // Each key once, with its last record (one statement may not update a row twice),
        // in key order (two writers at once lock rows in the same order).
        let nodes: BTreeMap<&[u8], &[u8]> = nodes
            .iter()
            .map(|n| (n.key.as_slice(), n.record.as_slice()))
            .collect();
        let (keys, records): (Vec<&[u8]>, Vec<&[u8]>) = nodes.into_iter().unzip();
        let mut states = BTreeMap::new();
        for v in values {
            states.insert(
                (v.label.as_slice(), to_db(v.epoch, "key directory epoch")?),
                (to_db(v.version, "key directory version")?, v.record.as_slice()),
            );
        }
        let mut labels = Vec::with_capacity(states.len());
        let mut epochs = Vec::with_capacity(states.len());
        let mut versions = Vec::with_capacity(states.len());
        let mut states_records = Vec::with_capacity(states.len());
        for ((label, epoch), (version, record)) in states {
            labels.push(label);
            epochs.push(epoch);
            versions.push(version);
            states_records.push(record);
        }
        transaction!(self, StoreError, |tx| {
            for (keys, records) in keys
                .chunks(ROWS_PER_STATEMENT_MAX)
                .zip(records.chunks(ROWS_PER_STATEMENT_MAX))
            {
                sqlx::query(
                    "INSERT INTO kt_nodes (key, record) SELECT * FROM unnest($1::bytea[], $2::bytea[])
                     ON CONFLICT (key) DO UPDATE SET record = excluded.record",
                )
                .bind(keys)
                .bind(records)
                .execute(&mut *tx)
                .await
                .map_err(backend_error)?;
            }
            for start in (0..labels.len()).step_by(ROWS_PER_STATEMENT_MAX) {
                let end = labels.len().min(start + ROWS_PER_STATEMENT_MAX);
                sqlx::query(
                    "INSERT INTO kt_values (label, epoch, version, record)
                     SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::bytea[])
                     ON CONFLICT (label, epoch) DO UPDATE SET version = excluded.version,
                         record = excluded.record",
                )
                .bind(&labels[start..end])
                .bind(&epochs[start..end])
                .bind(&versions[start..end])
                .bind(&states_records[start..end])
                .execute(&mut *tx)
                .await
                .map_err(backend_error)?;
            }
        })
    }

    pub(crate) async fn kt_nodes_impl(&self, keys: &[Vec<u8>]) -> Result<Vec<KtNode>> {
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let rows: Vec<(Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT key, record FROM kt_nodes WHERE key = ANY($1)")
                .bind(keys)
                .fetch_all(&self.pool)
                .await
                .map_err(backend_error)?;
        Ok(rows
            .into_iter()
            .map(|(key, record)| KtNode { key, record })
            .collect())
    }

    pub(crate) async fn kt_values_impl(&self, labels: &[Vec<u8>]) -> Result<Vec<KtValue>> {
        let labels: Vec<&[u8]> = labels.iter().map(Vec::as_slice).collect();
        sqlx::query(
            "SELECT label, epoch, version, record FROM kt_values WHERE label = ANY($1)
             ORDER BY label, epoch",
        )
        .bind(labels)
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?
        .iter()
        .map(|row| {
            Ok(KtValue {
                label: get(row, "label")?,
                epoch: unsigned(row, "epoch")?,
                version: unsigned(row, "version")?,
                record: get(row, "record")?,
            })
        })
        .collect()
    }

    pub(crate) async fn kt_put_sets_impl(&self, sets: &[KtSet]) -> Result<()> {
        // Each (user, epoch) once, its last set, in key order (as in `kt_write_impl`).
        let mut rows = BTreeMap::new();
        for set in sets {
            rows.insert(
                (set.user.as_str(), to_db(set.epoch, "key directory epoch")?),
                encode_set(set)?,
            );
        }
        let mut users = Vec::with_capacity(rows.len());
        let mut epochs = Vec::with_capacity(rows.len());
        let mut certificates = Vec::with_capacity(rows.len());
        for ((user, epoch), encoded) in rows {
            users.push(user);
            epochs.push(epoch);
            certificates.push(encoded);
        }
        transaction!(self, StoreError, |tx| {
            for start in (0..users.len()).step_by(ROWS_PER_STATEMENT_MAX) {
                let end = users.len().min(start + ROWS_PER_STATEMENT_MAX);
                sqlx::query(
                    "INSERT INTO kt_sets (user_name, epoch, device_set)
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])
                     ON CONFLICT (user_name, epoch) DO UPDATE SET device_set = excluded.device_set",
                )
                .bind(&users[start..end])
                .bind(&epochs[start..end])
                .bind(&certificates[start..end])
                .execute(&mut *tx)
                .await
                .map_err(backend_error)?;
            }
        })
    }

    pub(crate) async fn kt_sets_impl(&self, user: &UserName) -> Result<Vec<KtSet>> {
        sqlx::query("SELECT user_name, epoch, device_set FROM kt_sets WHERE user_name = $1 ORDER BY epoch")
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
            "SELECT DISTINCT ON (user_name) user_name, epoch, device_set FROM kt_sets
             ORDER BY user_name, epoch DESC",
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
        let done = sorted_names(done);
        transaction!(self, StoreError, |tx| {
            // A plain insert: a head is never replaced (and the table's triggers refuse it).
            // Of two nodes finishing the same epoch, the second waits for the first and
            // then finds its head.
            sqlx::query("INSERT INTO kt_heads (epoch, head, proof) VALUES ($1, $2, $3)")
                .bind(epoch)
                .bind(&record.head)
                .bind(&record.proof)
                .execute(&mut *tx)
                .await
                .map_err(|e| insert_error(e, "epoch", "epoch"))?;
            unmark(&mut tx, &done).await?;
        })
    }

    pub(crate) async fn kt_heads_impl(&self, after: u64, limit: u32) -> Result<Vec<KtEpochRecord>> {
        // An `after` beyond i64 has no epochs after it.
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        sqlx::query("SELECT epoch, head, proof FROM kt_heads WHERE epoch > $1 ORDER BY epoch LIMIT $2")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?
            .iter()
            .map(|row| {
                Ok(KtEpochRecord {
                    epoch: unsigned(row, "epoch")?,
                    head: get(row, "head")?,
                    proof: get(row, "proof")?,
                })
            })
            .collect()
    }

    pub(crate) async fn kt_latest_head_impl(&self) -> Result<Option<(u64, Vec<u8>)>> {
        sqlx::query("SELECT epoch, head FROM kt_heads ORDER BY epoch DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?
            .as_ref()
            .map(head_from_row)
            .transpose()
    }

    pub(crate) async fn kt_mark_changed_impl(&self, users: &[UserName]) -> Result<()> {
        let users = sorted_names(users);
        transaction!(self, StoreError, |tx| {
            sqlx::query(
                "INSERT INTO kt_changed (user_name) SELECT * FROM unnest($1::text[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(&users)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        })
    }

    pub(crate) async fn kt_changed_impl(&self, limit: u32) -> Result<Vec<UserName>> {
        sqlx::query("SELECT user_name FROM kt_changed ORDER BY user_name LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?
            .iter()
            .map(|row| user_name(row, "user_name"))
            .collect()
    }

    pub(crate) async fn kt_unmark_impl(&self, users: &[UserName]) -> Result<()> {
        let users = sorted_names(users);
        transaction!(self, StoreError, |tx| {
            unmark(&mut tx, &users).await?;
        })
    }

    pub(crate) async fn kt_put_auditor_signature_impl(
        &self,
        auditor_key: &[u8; 32],
        epoch: u64,
        document: &[u8],
    ) -> Result<()> {
        // One statement: of two at once, the second waits for the first's row and then
        // compares with its epoch.
        sqlx::query(
            "INSERT INTO kt_auditors AS a (auditor_key, epoch, document) VALUES ($1, $2, $3)
             ON CONFLICT (auditor_key) DO UPDATE SET epoch = excluded.epoch, document = excluded.document
             WHERE excluded.epoch >= a.epoch",
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
