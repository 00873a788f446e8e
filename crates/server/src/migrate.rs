//! `redoubt server migrate --from-sqlite DIR`: a single server's organisation moved into
//! PostgreSQL, to run as a cluster's first node.

use std::path::Path;

use redoubt_store::Store;
use redoubt_store_postgres::{ImportReport, PgStore};
use redoubt_store_sqlite::SqliteStore;

use crate::{DataDir, ServerError};

/// Copies the organisation in the data folder `from` (its SQLite database and attachment
/// files) into the empty PostgreSQL database at `database`, all or nothing. The folder's
/// node secrets (root key, TLS certificate, configuration) stay where they are: started with
/// `--database`, the folder is the cluster's first node. The SQLite file is left as it was.
pub async fn migrate_to_postgres(from: &Path, database: &str) -> Result<ImportReport, ServerError> {
    let data = DataDir::new(from);
    let sqlite = data.database();
    if !sqlite.exists() {
        return Err(ServerError::DataDir(format!(
            "{} holds no Redoubt database ({} is missing)",
            from.display(),
            sqlite.display()
        )));
    }
    if !data.org_key().exists() {
        return Err(ServerError::DataDir(format!(
            "{} is missing: copy the organisation's root key back first",
            data.org_key().display()
        )));
    }
    // Opening brings the file to the current schema, so both sides match; a server still
    // running on it would make a moving copy.
    let source = SqliteStore::open(&sqlite).await?;
    source.close().await;
    let target = PgStore::connect(database).await?;
    if !target.is_empty().await? {
        target.close().await;
        return Err(ServerError::Refused(redoubt_proto::ErrorBody::new(
            redoubt_proto::ErrorCode::AlreadyExists,
            "that PostgreSQL database already holds an organisation; migrate only into an empty database",
        )));
    }
    let blobs = data.blobs();
    let mut read_blob = |id: &redoubt_proto::BlobId| std::fs::read(blobs.join(id.to_string()));
    let report = target.import_sqlite(&sqlite, &mut read_blob).await;
    target.close().await;
    Ok(report?)
}
