#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! The store conformance suite, each test on a new database of the shared test cluster.

use redoubt_store_postgres::PgStore;
use redoubt_store_postgres::testing::TestPostgres;

async fn fresh() -> (PgStore, ()) {
    let url = TestPostgres::shared().fresh_database().await;
    (PgStore::connect(&url).await.unwrap(), ())
}

redoubt_store::store_conformance_tests!(fresh().await);
