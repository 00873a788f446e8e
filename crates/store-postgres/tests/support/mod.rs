//! Set-up shared by this crate's tests: stores on new databases of the shared test
//! cluster, and a small directory to act on.
#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a part; a failed step must fail loudly

use redoubt_proto::{ActivationCodeId, GroupId, UserName};
use redoubt_store::{ActivationCodeRecord, AuditEvent, GroupRecord, Store};
use redoubt_store_postgres::PgStore;
use redoubt_store_postgres::testing::TestPostgres;

/// The URL of a new, empty database on the shared cluster.
pub async fn fresh_url() -> String {
    TestPostgres::shared().fresh_database().await
}

/// A store on a new, empty database.
pub async fn fresh_store() -> PgStore {
    PgStore::connect(&fresh_url().await).await.unwrap()
}

pub use redoubt_store::conformance::{dev, device, user};

pub fn group_id(id: u8) -> GroupId {
    GroupId::from([id; 32])
}

/// An activation code for `user`, expiring at 2,000.
pub fn code(id: u8, user: &str) -> ActivationCodeRecord {
    redoubt_store::conformance::code(id, user, 2_000)
}

pub fn audit(subject: &str) -> AuditEvent {
    AuditEvent {
        at_unix_s: 1_000,
        actor_user: Some(UserName::parse("admin").unwrap()),
        actor_device: None,
        action: "test.event",
        subject: subject.to_owned(),
        details: String::new(),
    }
}

/// User alice with device 1, and group 1 created by it.
pub async fn alice_and_her_group(store: &impl Store) -> GroupId {
    store
        .create_user(&user("alice"), &code(1, "alice"))
        .await
        .unwrap();
    store
        .redeem_activation_code(
            &ActivationCodeId::from([1; 8]),
            1_100,
            &device(1, "alice", 1),
            &audit("alice"),
        )
        .await
        .unwrap();
    let group = GroupRecord {
        id: group_id(1),
        epoch: 0,
        state: vec![0],
        state_seq: 0,
        last_seq: 0,
        created_at_unix_s: 1_200,
    };
    store.create_group(&group, &dev(1)).await.unwrap();
    group.id
}

/// A client message id unique to `(node, i)`.
pub fn client_id(node: u8, i: u32) -> [u8; 16] {
    let mut id = [0; 16];
    id[0] = node;
    id[1..5].copy_from_slice(&i.to_be_bytes());
    id
}
