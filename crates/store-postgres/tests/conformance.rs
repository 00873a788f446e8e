#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! The store conformance suite, each test on a new database of the shared test cluster.

mod support;

redoubt_store::store_conformance_tests!((support::fresh_store().await, ()));
