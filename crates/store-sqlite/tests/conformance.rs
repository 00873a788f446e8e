#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! The store conformance suite, on a real SQLite file in a temporary directory.

use redoubt_store_sqlite::SqliteStore;

async fn fresh() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("redoubt.db")).await.unwrap();
    (store, dir)
}

redoubt_store::store_conformance_tests!(fresh().await);

#[tokio::test]
async fn reopening_keeps_data_and_integrity() {
    use redoubt_proto::OrgId;
    use redoubt_store::{OrgRecord, Store};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("redoubt.db");
    let org = OrgRecord {
        org_id: OrgId::from([4; 16]),
        created_at_unix_s: 9,
    };
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.init_org(&org).await.unwrap();
        store.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.org().await.unwrap(), Some(org));
    store.integrity_check().await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
