#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! What the PostgreSQL store adds to the conformance suite: connecting (URLs, errors,
//! migrations), several server nodes on one database, and lost connections.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use redoubt_proto::{ActivationCodeId, GroupId, OrgId};
use redoubt_store::{
    AppendError, Appended, Bus, BusEvent, Change, GroupRecord, GroupTransition, NewLogEntry, OrgRecord,
    RedeemError, Store, StoreError,
};
use redoubt_store_postgres::PgStore;
use redoubt_store_postgres::testing::TestPostgres;
use sqlx::{Connection, PgConnection};
use support::{alice_and_her_group, audit, client_id, code, dev, device, fresh_store, fresh_url, user};
use tokio::task::JoinSet;

const PASSWORD: &str = "Secret-42";

fn backend_message(error: StoreError) -> String {
    match error {
        StoreError::Backend(message) => message,
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_malformed_url_is_refused_clearly_without_its_password() {
    for url in [
        format!("postgres://redoubt:{PASSWORD}@db.example:99999/redoubt"),
        format!("postgres://redoubt:{PASSWORD}@db.example/redoubt?sslmode=sometimes"),
        format!("redis://redoubt:{PASSWORD}@db.example/redoubt"),
    ] {
        let message = backend_message(PgStore::connect(&url).await.unwrap_err());
        assert!(message.starts_with("invalid database URL: "), "{message}");
        assert!(!message.contains(PASSWORD), "{message}");
    }
}

#[tokio::test]
async fn an_unreachable_server_is_named_at_once_without_the_password() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://redoubt:{PASSWORD}@127.0.0.1:{port}/redoubt?sslmode=disable");
    let started = Instant::now();
    let message = backend_message(PgStore::connect(&url).await.unwrap_err());
    assert!(
        message.starts_with(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port}, database redoubt: "
        )),
        "{message}"
    );
    assert!(!message.contains(PASSWORD), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no retrying until a timeout"
    );
}

#[tokio::test]
async fn a_missing_database_is_named_without_the_password() {
    let port = TestPostgres::shared().port();
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/no_such_database?sslmode=disable");
    let message = backend_message(PgStore::connect(&url).await.unwrap_err());
    assert!(message.contains("database no_such_database"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    assert!(!message.contains(PASSWORD), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_apply_each_migration_once() {
    let url = fresh_url().await;
    let mut starting = JoinSet::new();
    for _ in 0..4 {
        let url = url.clone();
        starting.spawn(async move { PgStore::connect(&url).await });
    }
    let nodes: Vec<PgStore> = starting
        .join_all()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let org = OrgRecord {
        org_id: OrgId::from([7; 16]),
        created_at_unix_s: 5,
    };
    nodes[0].init_org(&org).await.unwrap();
    // A node starting later finds nothing to apply and the data kept.
    let later = PgStore::connect(&url).await.unwrap();
    assert_eq!(later.org().await.unwrap(), Some(org));
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(versions, (1..=i64::try_from(files).unwrap()).collect::<Vec<_>>());
}

#[tokio::test]
async fn is_empty_until_an_organisation_or_a_user_exists() {
    let store = fresh_store().await;
    assert!(store.is_empty().await.unwrap());
    store
        .create_user(&user("alice"), &code(1, "alice"))
        .await
        .unwrap();
    assert!(!store.is_empty().await.unwrap());

    let store = fresh_store().await;
    let org = OrgRecord {
        org_id: OrgId::from([7; 16]),
        created_at_unix_s: 5,
    };
    store.init_org(&org).await.unwrap();
    assert!(!store.is_empty().await.unwrap());
}

#[tokio::test]
async fn a_closed_store_refuses_further_calls() {
    let store = fresh_store().await;
    let group = alice_and_her_group(&store).await;
    store.close().await;
    assert!(store.org().await.is_err());
    let entry = NewLogEntry {
        group,
        sender: dev(1),
        client_message_id: [1; 16],
        message: b"late",
        created_at_unix_s: 1_300,
    };
    assert!(store.append(&entry, None).await.is_err());
}

#[tokio::test]
async fn the_test_server_syncs_every_commit() {
    let mut conn = PgConnection::connect(&fresh_url().await).await.unwrap();
    for (setting, expected) in [("fsync", "on"), ("synchronous_commit", "on")] {
        let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(value, expected, "{setting}");
    }
}

#[tokio::test]
async fn the_audit_log_refuses_updates_and_deletes() {
    let url = fresh_url().await;
    let store = PgStore::connect(&url).await.unwrap();
    store.apply(&[], &[audit("one"), audit("two")]).await.unwrap();
    let before = store.audit_entries(0, 10).await.unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    for sql in [
        "UPDATE audit_log SET subject = 'forged' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 2",
        "TRUNCATE audit_log CASCADE",
    ] {
        let error = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        assert!(error.to_string().contains("append-only"), "{sql}: {error}");
    }
    assert_eq!(store.audit_entries(0, 10).await.unwrap(), before);
}

/// An append of message `i` by node `node`, a commit for epoch 0 when `commit`.
async fn append(
    store: &PgStore,
    node: u8,
    i: u32,
    commit: bool,
) -> (Vec<u8>, bool, Result<Appended, AppendError>) {
    let message = format!("node {node} message {i}").into_bytes();
    let transition = commit.then(|| GroupTransition {
        expected_epoch: 0,
        epoch: 1,
        state: Some(message.clone()),
        added: vec![],
        removed: vec![],
        welcome: None,
    });
    let entry = NewLogEntry {
        group: support::group_id(1),
        sender: dev(1),
        client_message_id: client_id(node, i),
        message: &message,
        created_at_unix_s: 1_300,
    };
    let result = store.append(&entry, transition.as_ref()).await;
    (message, commit, result)
}

/// The group's log as seq → message; asserts it is dense, numbered 1 to the group's head.
async fn dense_log(store: &PgStore) -> BTreeMap<u64, Vec<u8>> {
    let group = support::group_id(1);
    let entries = store.log_entries(&group, 0, 100_000).await.unwrap();
    let head = store.group_head(&group).await.unwrap().unwrap();
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=head.last_seq).collect::<Vec<_>>(),
        "dense, up to the head"
    );
    entries.into_iter().map(|e| (e.seq, e.message)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_appending_to_one_group_number_densely_and_one_commit_wins() {
    let url = fresh_url().await;
    let nodes = [
        PgStore::connect(&url).await.unwrap(),
        PgStore::connect(&url).await.unwrap(),
    ];
    alice_and_her_group(&nodes[0]).await;
    let mut appends = JoinSet::new();
    for (node, store) in (0u8..).zip(&nodes) {
        for i in 0..150u32 {
            let store = store.clone();
            // Every tenth append of each node is a commit for epoch 0: one of 30 may win.
            appends.spawn(async move { append(&store, node, i, i % 10 == 0).await });
        }
    }
    let results = appends.join_all().await;
    let commits_won: Vec<&Vec<u8>> = results
        .iter()
        .filter(|(_, commit, result)| *commit && result.is_ok())
        .map(|(message, _, _)| message)
        .collect();
    assert_eq!(commits_won.len(), 1, "one commit for epoch 0 wins");
    let conflicts = results
        .iter()
        .filter(|(_, _, result)| matches!(result, Err(AppendError::EpochConflict { .. })))
        .count();
    assert_eq!(conflicts, 29, "every other commit conflicts; messages never do");

    let log = dense_log(&nodes[1]).await;
    assert_eq!(log.len(), 300 - 29);
    for (message, _, result) in &results {
        if let Ok(appended) = result {
            assert!(!appended.duplicate);
            assert_eq!(
                log.get(&appended.seq),
                Some(message),
                "each seq holds its own message"
            );
        }
    }
    let group = nodes[0].group(&support::group_id(1)).await.unwrap().unwrap();
    assert_eq!((group.epoch, &group.state), (1, commits_won[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_redeem_a_code_once_and_keep_one_audit_chain() {
    let url = fresh_url().await;
    let nodes = [
        PgStore::connect(&url).await.unwrap(),
        PgStore::connect(&url).await.unwrap(),
    ];
    nodes[0]
        .create_user(&user("alice"), &code(1, "alice"))
        .await
        .unwrap();
    let mut tasks = JoinSet::new();
    for (node, store) in (0u8..).zip(&nodes) {
        for i in 0..6u8 {
            let store = store.clone();
            let id = 10 + node * 6 + i;
            tasks.spawn(async move {
                let redeemed = store
                    .redeem_activation_code(
                        &ActivationCodeId::from([1; 8]),
                        1_500,
                        &device(id, "alice", u64::from(id)),
                        &audit("redeem"),
                    )
                    .await;
                let serial = store.next_certificate_serial().await.unwrap();
                let applied = store
                    .apply(&[], &[audit(&format!("node {node} change {i}"))])
                    .await
                    .unwrap();
                (redeemed, serial, applied.audit_seq)
            });
        }
    }
    let results = tasks.join_all().await;
    let winners = results.iter().filter(|(redeemed, _, _)| redeemed.is_ok()).count();
    assert_eq!(winners, 1);
    assert!(
        results
            .iter()
            .all(|(redeemed, _, _)| matches!(redeemed, Ok(()) | Err(RedeemError::Used)))
    );
    assert_eq!(nodes[1].list_devices(None).await.unwrap().len(), 1);
    let serials: BTreeSet<u64> = results.iter().map(|(_, serial, _)| *serial).collect();
    assert_eq!(serials.len(), results.len(), "serials are never handed out twice");

    // One chain: the winning redemption and the twelve changes, numbered 1..=13, each
    // entry linked to the one before.
    let entries = nodes[0].audit_entries(0, 100).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=13).collect::<Vec<_>>()
    );
    let mut prev = redoubt_proto::AUDIT_GENESIS;
    for entry in &entries {
        assert_eq!(
            entry.prev_hash, prev,
            "entry {} follows the one before",
            entry.seq
        );
        assert_eq!(entry.hash, entry.compute_hash(), "entry {} is intact", entry.seq);
        prev = entry.hash;
    }
    assert_eq!(nodes[1].audit_head().await.unwrap(), (13, prev.0));
    let audit_seqs: BTreeSet<u64> = results.iter().map(|(_, _, seq)| *seq).collect();
    assert_eq!(audit_seqs.len(), 12, "every change got an entry of its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_failing_alone_leaves_the_rest_of_its_batch() {
    let store = fresh_store().await;
    let group = alice_and_her_group(&store).await;
    // Appends waiting together go in one batch: 40 messages, each sent twice, and a
    // commit adding a device that does not exist.
    let mut appends = JoinSet::new();
    for i in 0..80u32 {
        let store = store.clone();
        appends.spawn(async move {
            let message = format!("message {}", i / 2).into_bytes();
            let entry = NewLogEntry {
                group,
                sender: dev(1),
                client_message_id: client_id(0, i / 2),
                message: &message,
                created_at_unix_s: 1_300,
            };
            let appended = store.append(&entry, None).await.unwrap();
            (message, appended)
        });
    }
    let bad_commit = GroupTransition {
        expected_epoch: 0,
        epoch: 1,
        state: Some(vec![1]),
        added: vec![dev(99)],
        removed: vec![],
        welcome: Some(vec![9]),
    };
    let entry = NewLogEntry {
        group,
        sender: dev(1),
        client_message_id: [0xEE; 16],
        message: b"commit",
        created_at_unix_s: 1_300,
    };
    let failed = store.append(&entry, Some(&bad_commit)).await;
    assert!(
        matches!(failed, Err(AppendError::Store(StoreError::NotFound("device")))),
        "{failed:?}"
    );
    let results = appends.join_all().await;
    let log = dense_log(&store).await;
    assert_eq!(log.len(), 40, "each message once, the commit not at all");
    for (message, appended) in &results {
        assert_eq!(log.get(&appended.seq), Some(message));
    }
    assert_eq!(results.iter().filter(|(_, a)| a.duplicate).count(), 40);
    let stored = store.group(&group).await.unwrap().unwrap();
    assert_eq!((stored.epoch, stored.last_seq), (0, 40));
    assert!(store.inbox(&dev(1)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_mixing_groups_repeats_and_a_handshake_answers_each_append() {
    let url = fresh_url().await;
    let store = PgStore::connect(&url).await.unwrap();
    let (one, two, unknown) = (support::group_id(1), support::group_id(2), support::group_id(9));
    alice_and_her_group(&store).await;
    let second = GroupRecord {
        id: two,
        epoch: 0,
        state: vec![0],
        state_seq: 0,
        last_seq: 0,
        created_at_unix_s: 1_200,
    };
    store.create_group(&second, &dev(1)).await.unwrap();
    let commit = GroupTransition {
        expected_epoch: 0,
        epoch: 1,
        state: Some(b"epoch 1".to_vec()),
        added: vec![],
        removed: vec![],
        welcome: None,
    };
    let append = |group: GroupId, client: u8, message: &'static str, handshake: bool| {
        let store = store.clone();
        let commit = commit.clone();
        async move {
            let entry = NewLogEntry {
                group,
                sender: dev(1),
                client_message_id: [client; 16],
                message: message.as_bytes(),
                created_at_unix_s: 1_300,
            };
            store.append(&entry, handshake.then_some(&commit)).await
        }
    };
    // A rival holds group 1's row: the appender's first batch (one message) waits for it,
    // while the appends after it queue, in order, for the next batch.
    let mut rival = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut rival).await.unwrap();
    sqlx::query("SELECT 1 FROM groups WHERE id = $1 FOR UPDATE")
        .bind(one.as_bytes())
        .execute(&mut rival)
        .await
        .unwrap();
    let first = tokio::spawn(append(one, 1, "one", false));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let batch = [
        (one, 2, "two", false),
        (two, 2, "two in group 2", false),
        (one, 1, "one again", false),
        (one, 3, "three", false),
        (one, 2, "two again", false),
        (unknown, 5, "lost", false),
        (one, 4, "commit", true),
        (one, 3, "three again", false),
        (one, 6, "six", false),
        (two, 7, "seven in group 2", false),
        (one, 4, "commit again", true),
        (one, 4, "a message with the commit's id", false),
    ];
    let mut appends = Vec::new();
    for (group, client, message, handshake) in batch {
        appends.push(tokio::spawn(append(group, client, message, handshake)));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sqlx::raw_sql("COMMIT").execute(&mut rival).await.unwrap();
    assert_eq!(
        first.await.unwrap().unwrap(),
        Appended {
            seq: 1,
            duplicate: false
        }
    );
    let mut results = Vec::new();
    for append in appends {
        results.push(append.await.unwrap().map(|a| (a.seq, a.duplicate)));
    }
    let answers: Vec<Option<(u64, bool)>> = results.iter().map(|r| r.as_ref().ok().copied()).collect();
    assert_eq!(
        answers,
        [
            Some((2, false)),
            Some((1, false)),
            Some((1, true)),
            Some((3, false)),
            Some((2, true)),
            None,
            Some((4, false)),
            Some((3, true)),
            Some((5, false)),
            Some((2, false)),
            Some((4, true)),
            Some((4, true)),
        ]
    );
    assert!(
        matches!(results[5], Err(AppendError::UnknownGroup)),
        "{:?}",
        results[5]
    );
    let log = dense_log(&store).await;
    let log: Vec<&[u8]> = log.values().map(Vec::as_slice).collect();
    assert_eq!(log, [&b"one"[..], b"two", b"three", b"commit", b"six"]);
    let stored = store.group(&one).await.unwrap().unwrap();
    assert_eq!((stored.epoch, stored.last_seq), (1, 5));
    let log: Vec<Vec<u8>> = store
        .log_entries(&two, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(log, [&b"two in group 2"[..], b"seven in group 2"]);
    assert_eq!(store.group_head(&two).await.unwrap().unwrap().last_seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_committed_by_another_node_while_a_batch_waited_is_found() {
    let url = fresh_url().await;
    let store = PgStore::connect(&url).await.unwrap();
    let group = alice_and_her_group(&store).await;
    // Another node appends message 1 and holds the group's row until it commits.
    let mut other = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT 1 FROM groups WHERE id = $1 FOR NO KEY UPDATE")
        .bind(group.as_bytes())
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO group_log (group_id, seq, sender, client_message_id, message, created_at)
         VALUES ($1, 1, $2, $3, 'by the other node', 1300)",
    )
    .bind(group.as_bytes())
    .bind(dev(1).as_bytes())
    .bind(client_id(0, 1))
    .execute(&mut other)
    .await
    .unwrap();
    sqlx::query("UPDATE groups SET last_seq = 1 WHERE id = $1")
        .bind(group.as_bytes())
        .execute(&mut other)
        .await
        .unwrap();
    // The same message through this node: its batch reads the log before it gets the lock,
    // so it does not see the other node's entry there.
    let store_ = store.clone();
    let repeat = tokio::spawn(async move { append(&store_, 0, 1, false).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    sqlx::raw_sql("COMMIT").execute(&mut other).await.unwrap();
    let (_, _, result) = repeat.await.unwrap();
    assert_eq!(
        result.unwrap(),
        Appended {
            seq: 1,
            duplicate: true
        }
    );
    let (message, _, result) = append(&store, 0, 2, false).await;
    assert_eq!(
        result.unwrap(),
        Appended {
            seq: 2,
            duplicate: false
        }
    );
    let log = dense_log(&store).await;
    assert_eq!(log.get(&1).map(Vec::as_slice), Some(&b"by the other node"[..]));
    assert_eq!(log.get(&2), Some(&message));
}

/// Terminates this database's store sessions (not the caller's) until told to stop;
/// returns how many it ended.
async fn kill_sessions(url: String, stop: tokio::sync::watch::Receiver<bool>) -> u64 {
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let mut killed = 0;
    while !*stop.borrow() {
        // MATERIALIZED: the sessions are chosen first; in one WHERE clause PostgreSQL may
        // call pg_terminate_backend before the other conditions, on every session.
        let ended: i64 = sqlx::query_scalar(
            "WITH victims AS MATERIALIZED (
                 SELECT pid FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = 'redoubt'
                   AND pid <> pg_backend_pid())
             SELECT count(*) FROM victims WHERE pg_terminate_backend(pid)",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        killed += u64::try_from(ended).unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_lost_mid_transaction_lose_nothing_and_the_store_recovers() {
    let url = fresh_url().await;
    let store = PgStore::connect(&url).await.unwrap();
    alice_and_her_group(&store).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let killer = tokio::spawn(kill_sessions(url.clone(), stopped));
    let mut appends = JoinSet::new();
    for i in 0..400u32 {
        let store = store.clone();
        appends.spawn(async move {
            // Spread over the killer's work.
            tokio::time::sleep(Duration::from_millis(u64::from(i % 40))).await;
            (i, append(&store, 0, i, false).await)
        });
    }
    // In the order they finished.
    let (numbers, results): (Vec<u32>, Vec<_>) = appends.join_all().await.into_iter().unzip();
    stop.send(true).unwrap();
    let killed = killer.await.unwrap();
    let failed: Vec<u32> = numbers
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.2.is_err())
        .map(|(i, _)| *i)
        .collect();
    assert!(
        killed > 0 && !failed.is_empty(),
        "the test must lose connections mid-append"
    );

    // Nothing half-written: the log is dense and every answered append is in it.
    let log = dense_log(&store).await;
    for (message, _, result) in &results {
        if let Ok(appended) = result {
            assert_eq!(log.get(&appended.seq), Some(message));
        }
    }
    // The store works again, and a client retrying what failed (with the same client
    // message id) ends with each message in the log exactly once: a failed append either
    // did not happen or, its answer lost at commit, is found as a duplicate.
    for i in failed {
        let (message, _, result) = append(&store, 0, i, false).await;
        let appended = result.unwrap();
        assert_eq!(dense_log(&store).await.get(&appended.seq), Some(&message));
    }
    let log = dense_log(&store).await;
    assert_eq!(log.len(), 400);
    assert_eq!(
        log.values().collect::<BTreeSet<_>>().len(),
        400,
        "no message twice"
    );
    // Everything else works too.
    store.apply(&[], &[audit("after")]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_rides_through_a_server_restart() {
    // A cluster of this test's own: the shared one serves other tests meanwhile.
    let server = std::sync::Arc::new(
        tokio::task::spawn_blocking(TestPostgres::start)
            .await
            .unwrap()
            .unwrap(),
    );
    let store = PgStore::connect(&server.fresh_database().await).await.unwrap();
    alice_and_her_group(&store).await;
    let mut appends = JoinSet::new();
    for i in 0..60u32 {
        let store = store.clone();
        appends.spawn(async move {
            tokio::time::sleep(Duration::from_millis(u64::from(i) * 20)).await;
            append(&store, 0, i, false).await
        });
    }
    let started_at = || async {
        let mut conn = PgConnection::connect(&server.url_for("postgres")).await.unwrap();
        let at: String = sqlx::query_scalar("SELECT pg_postmaster_start_time()::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        at
    };
    let first_start = started_at().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarting = server.clone();
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .unwrap();
    assert_ne!(started_at().await, first_start, "the server restarted");
    let results = appends.join_all().await;
    // Appends made while the server was down waited for it (the pool reconnects) or
    // failed; those answered are in the log, which stays dense.
    let log = dense_log(&store).await;
    for (message, _, result) in &results {
        if let Ok(appended) = result {
            assert_eq!(log.get(&appended.seq), Some(message));
        }
    }
    let (_, _, after) = append(&store, 0, 1_000, false).await;
    assert_eq!(after.unwrap().seq, u64::try_from(log.len()).unwrap() + 1);
}

/// The bus's next event, or a panic after a few seconds.
async fn next_event(bus: &impl Bus) -> BusEvent {
    tokio::time::timeout(Duration::from_secs(10), bus.next())
        .await
        .expect("an event within 10 s")
        .unwrap()
}

#[tokio::test]
async fn the_bus_wakes_every_node_and_reports_a_lost_connection() {
    let url = fresh_url().await;
    let nodes = [
        PgStore::connect(&url).await.unwrap(),
        PgStore::connect(&url).await.unwrap(),
    ];
    let buses = [nodes[0].bus().await.unwrap(), nodes[1].bus().await.unwrap()];
    let largest = vec![0xFF; redoubt_store::BUS_MESSAGE_BYTES_MAX];
    buses[0].publish(b"appended: group 1").await.unwrap();
    buses[1].publish(&largest).await.unwrap();
    for bus in &buses {
        // Every node hears every message, its own included, in order.
        assert_eq!(
            next_event(bus).await,
            BusEvent::Message(b"appended: group 1".to_vec())
        );
        assert_eq!(next_event(bus).await, BusEvent::Message(largest.clone()));
    }
    let oversized = buses[0]
        .publish(&[0; redoubt_store::BUS_MESSAGE_BYTES_MAX + 1])
        .await;
    assert!(matches!(oversized, Err(StoreError::Limit(_))), "{oversized:?}");

    // The listening sessions end: each bus says it may have missed messages, then hears
    // the next ones.
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let ended: i64 = sqlx::query_scalar(
        "WITH victims AS MATERIALIZED (
             SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'redoubt-bus')
         SELECT count(*) FROM victims WHERE pg_terminate_backend(pid)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(ended, 2);
    for bus in &buses {
        assert_eq!(next_event(bus).await, BusEvent::Gap);
    }
    buses[1].publish(b"after").await.unwrap();
    for bus in &buses {
        assert_eq!(next_event(bus).await, BusEvent::Message(b"after".to_vec()));
    }

    // A closed bus says so, to a caller waiting and to one coming later.
    let [first, second] = buses;
    let second = std::sync::Arc::new(second);
    let waiting = tokio::spawn({
        let second = second.clone();
        async move { second.next().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(10), second.close())
        .await
        .expect("closed within 10 s");
    first.close().await;
    assert!(waiting.await.unwrap().is_err());
    assert!(first.next().await.is_err());
}

/// A store whose sessions detect deadlocks after 300 ms, and another session, `rival`, that
/// detects them only after a minute: in a deadlock between the two, the store's
/// transaction is always the one PostgreSQL aborts.
async fn store_losing_deadlocks() -> (PgStore, PgConnection) {
    let url = fresh_url().await;
    let mut rival = PgConnection::connect(&url).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut rival)
        .await
        .unwrap();
    // A name of digits and underscores (TestPostgres::fresh_database).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} SET deadlock_timeout = '300ms'"
    )))
    .execute(&mut rival)
    .await
    .unwrap();
    sqlx::raw_sql("SET deadlock_timeout = '60s'")
        .execute(&mut rival)
        .await
        .unwrap();
    (PgStore::connect(&url).await.unwrap(), rival)
}

/// Makes `store_work` (which locks `first`'s row, then `second`'s) deadlock with the rival,
/// which holds `second` and then asks for `first`. Returns once both are done.
async fn deadlock<T: Send + 'static>(
    rival: &mut PgConnection,
    lock: &'static str,
    first: Vec<u8>,
    second: Vec<u8>,
    store_work: impl Future<Output = T> + Send + 'static,
) -> T {
    sqlx::raw_sql("BEGIN").execute(&mut *rival).await.unwrap();
    sqlx::query(lock)
        .bind(&second)
        .execute(&mut *rival)
        .await
        .unwrap();
    let work = tokio::spawn(store_work);
    // The store's transaction takes `first`, then waits for `second`...
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ... and the rival waits for `first`: a circle. PostgreSQL aborts the store's
    // transaction, the rival gets `first`.
    sqlx::query(lock).bind(&first).execute(&mut *rival).await.unwrap();
    sqlx::raw_sql("COMMIT").execute(&mut *rival).await.unwrap();
    work.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_aborted_by_a_deadlock_runs_again() {
    let (store, mut rival) = store_losing_deadlocks().await;
    alice_and_her_group(&store).await;
    store.create_activation_code(&code(2, "alice")).await.unwrap();
    store
        .redeem_activation_code(
            &ActivationCodeId::from([2; 8]),
            1_100,
            &device(2, "alice", 2),
            &audit("second device"),
        )
        .await
        .unwrap();
    let approvals = [dev(1), dev(2)].map(|device| Change::ApproveDevice {
        device,
        at_unix_s: 1_500,
        approval: b"approval".to_vec(),
    });
    let applying = {
        let store = store.clone();
        async move { store.apply(&approvals, &[audit("approvals")]).await }
    };
    let applied = deadlock(
        &mut rival,
        "SELECT 1 FROM devices WHERE id = $1 FOR UPDATE",
        dev(1).as_bytes().to_vec(),
        dev(2).as_bytes().to_vec(),
        applying,
    )
    .await;
    applied.unwrap();
    assert_eq!(
        store.audit_head().await.unwrap().0,
        3,
        "the approvals were audited once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_appends_aborted_by_a_deadlock_runs_again() {
    let (store, mut rival) = store_losing_deadlocks().await;
    alice_and_her_group(&store).await;
    let second = GroupRecord {
        id: support::group_id(2),
        epoch: 0,
        state: vec![0],
        state_seq: 0,
        last_seq: 0,
        created_at_unix_s: 1_200,
    };
    store.create_group(&second, &dev(1)).await.unwrap();
    // One batch (the appender takes what waits): group 1's append, then group 2's.
    let appending = {
        let store = store.clone();
        async move {
            let append_to = |group: GroupId, client: u8| {
                let store = store.clone();
                async move {
                    let entry = NewLogEntry {
                        group,
                        sender: dev(1),
                        client_message_id: [client; 16],
                        message: b"hello",
                        created_at_unix_s: 1_300,
                    };
                    store.append(&entry, None).await
                }
            };
            tokio::join!(
                append_to(support::group_id(1), 1),
                append_to(support::group_id(2), 2)
            )
        }
    };
    let (first, second) = deadlock(
        &mut rival,
        "SELECT 1 FROM groups WHERE id = $1 FOR UPDATE",
        support::group_id(1).as_bytes().to_vec(),
        support::group_id(2).as_bytes().to_vec(),
        appending,
    )
    .await;
    assert_eq!((first.unwrap().seq, second.unwrap().seq), (1, 1));
}
