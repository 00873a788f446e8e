//! The key directory's records (key transparency): tree records and value states by key,
//! epochs with their heads and device sets, changed users, auditors' countersignatures.

use redoubt_proto::UserName;

use crate::{KtEpochRecord, KtNode, KtSet, KtValue, Store, StoreError};

fn node(key: &[u8], record: &[u8]) -> KtNode {
    KtNode {
        key: key.to_vec(),
        record: record.to_vec(),
    }
}

fn value(label: &[u8], epoch: u64, version: u64, record: &[u8]) -> KtValue {
    KtValue {
        label: label.to_vec(),
        epoch,
        version,
        record: record.to_vec(),
    }
}

/// An epoch's record whose proof differs from its head (a backend mixing them up fails).
fn record(epoch: u64, head: &[u8]) -> KtEpochRecord {
    KtEpochRecord {
        epoch,
        head: head.to_vec(),
        proof: [b"proof of ", head].concat(),
    }
}

fn name(name: &str) -> UserName {
    UserName::parse(name).unwrap()
}

fn set(user: &str, epoch: u64, certificates: &[&[u8]]) -> KtSet {
    KtSet {
        user: name(user),
        epoch,
        certificates: certificates.iter().map(|c| c.to_vec()).collect(),
        // An approval per set, so that both lists are read back apart.
        approvals: vec![format!("approval of {user} at {epoch}").into_bytes()],
    }
}

fn by_key(mut nodes: Vec<KtNode>) -> Vec<KtNode> {
    nodes.sort_by(|a, b| a.key.cmp(&b.key));
    nodes
}

pub async fn kt_records_are_replaced_and_read_by_key(store: &impl Store) {
    assert!(store.kt_nodes(&[vec![1]]).await.unwrap().is_empty());
    assert!(store.kt_values(&[vec![1]]).await.unwrap().is_empty());
    assert!(store.kt_nodes(&[]).await.unwrap().is_empty());
    store.kt_write(&[], &[]).await.unwrap();

    // Labels compare bytewise: [0, 255] < [1] < [1, 0].
    store
        .kt_write(
            &[node(b"a", b"a1"), node(b"b", b"b1"), node(b"c", b"c1")],
            &[
                value(&[1, 0], 2, 1, b"long 2"),
                value(&[1], 3, 2, b"short 3"),
                value(&[1], 1, 1, b"short 1"),
                value(&[0, 255], 7, 1, b"low 7"),
            ],
        )
        .await
        .unwrap();
    // Replaced by key: nodes by key, values by label and epoch.
    store
        .kt_write(&[node(b"b", b"b2")], &[value(&[1], 3, 5, b"short 3 again")])
        .await
        .unwrap();
    let read = store
        .kt_nodes(&[b"c".to_vec(), b"missing".to_vec(), b"a".to_vec(), b"b".to_vec()])
        .await
        .unwrap();
    assert_eq!(
        by_key(read),
        [node(b"a", b"a1"), node(b"b", b"b2"), node(b"c", b"c1")]
    );
    let read = store
        .kt_values(&[vec![1, 0], vec![9], vec![1], vec![0, 255]])
        .await
        .unwrap();
    assert_eq!(
        read,
        [
            value(&[0, 255], 7, 1, b"low 7"),
            value(&[1], 1, 1, b"short 1"),
            value(&[1], 3, 5, b"short 3 again"),
            value(&[1, 0], 2, 1, b"long 2"),
        ]
    );

    // All or nothing: a value the store cannot hold (an epoch beyond i64) fails the call,
    // and the nodes written with it are not there.
    let refused = store
        .kt_write(&[node(b"d", b"d1")], &[value(&[2], u64::MAX, 1, b"too far")])
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(store.kt_nodes(&[b"d".to_vec()]).await.unwrap().is_empty());

    // An epoch's worth at once: thousands of records in one call, read back by thousands
    // of keys, values still in label order across however many queries the backend uses.
    let nodes: Vec<KtNode> = (0..3_000u32)
        .map(|i| node(&[b"n".as_slice(), &i.to_be_bytes()].concat(), &i.to_le_bytes()))
        .collect();
    let values: Vec<KtValue> = (0..1_500u32)
        .rev()
        .map(|i| value(&i.to_be_bytes(), u64::from(i % 2) + 1, 1, &i.to_le_bytes()))
        .chain((0..1_500u32).map(|i| value(&i.to_be_bytes(), 10, 2, b"later")))
        .collect();
    store.kt_write(&nodes, &values).await.unwrap();
    let mut keys: Vec<Vec<u8>> = nodes.iter().map(|n| n.key.clone()).collect();
    keys.reverse();
    keys.push(b"n-missing".to_vec());
    assert_eq!(by_key(store.kt_nodes(&keys).await.unwrap()), nodes);
    let labels: Vec<Vec<u8>> = (0..1_500u32).rev().map(|i| i.to_be_bytes().to_vec()).collect();
    let mut expected = values;
    expected.sort_by(|a, b| (&a.label, a.epoch).cmp(&(&b.label, b.epoch)));
    assert_eq!(store.kt_values(&labels).await.unwrap(), expected);
}

pub async fn kt_epochs_are_written_once_and_take_changed_users(store: &impl Store) {
    assert_eq!(store.kt_latest_head().await.unwrap(), None);
    assert!(store.kt_heads(0, 10).await.unwrap().is_empty());
    assert!(store.kt_changed(10).await.unwrap().is_empty());
    assert!(store.kt_latest_sets().await.unwrap().is_empty());

    // Marking is idempotent; names sort bytewise ("a-z" before "alice").
    store
        .kt_mark_changed(&[name("carol"), name("alice"), name("a-z")])
        .await
        .unwrap();
    store
        .kt_mark_changed(&[name("alice"), name("bob"), name("alice")])
        .await
        .unwrap();
    let all = [name("a-z"), name("alice"), name("bob"), name("carol")];
    assert_eq!(store.kt_changed(10).await.unwrap(), all);
    assert_eq!(store.kt_changed(2).await.unwrap(), all[..2]);

    // Epoch 1's sets; alice's is replaced before the epoch is finished (a publication that
    // crashed is published again with what is current).
    store
        .kt_put_sets(&[
            set("alice", 1, &[b"alice 1"]),
            set("bob", 1, &[b"", &[9; 2_000]]),
            set("carol", 1, &[]),
        ])
        .await
        .unwrap();
    store
        .kt_put_sets(&[set("alice", 1, &[b"alice 1", b"alice 2"])])
        .await
        .unwrap();
    store
        .kt_finish_epoch(&record(1, b"head 1"), &[name("alice"), name("bob"), name("a-z")])
        .await
        .unwrap();
    assert_eq!(store.kt_changed(10).await.unwrap(), [name("carol")]);

    // A head is written once: finishing epoch 1 again fails and takes no one off.
    let again = store
        .kt_finish_epoch(&record(1, b"other head"), &[name("carol")])
        .await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists("epoch"))),
        "{again:?}"
    );
    assert_eq!(store.kt_changed(10).await.unwrap(), [name("carol")]);
    assert_eq!(
        store.kt_latest_head().await.unwrap(),
        Some((1, b"head 1".to_vec()))
    );

    store.kt_mark_changed(&[name("alice")]).await.unwrap();
    store
        .kt_put_sets(&[set("alice", 2, &[b"alice 2"])])
        .await
        .unwrap();
    store
        .kt_finish_epoch(&record(2, b"head 2"), &[name("alice")])
        .await
        .unwrap();
    // Taking off a user who was not marked is no error.
    store
        .kt_finish_epoch(&record(3, b"head 3"), &[name("dave")])
        .await
        .unwrap();
    assert_eq!(store.kt_changed(10).await.unwrap(), [name("carol")]);
    // Users whose set turned out unchanged are taken off without an epoch.
    store
        .kt_mark_changed(&[name("erin"), name("frank")])
        .await
        .unwrap();
    store
        .kt_unmark(&[name("frank"), name("erin"), name("nobody")])
        .await
        .unwrap();
    assert_eq!(store.kt_changed(10).await.unwrap(), [name("carol")]);

    let epoch = |epoch: u64| record(epoch, format!("head {epoch}").as_bytes());
    assert_eq!(
        store.kt_heads(0, 10).await.unwrap(),
        [epoch(1), epoch(2), epoch(3)]
    );
    assert_eq!(store.kt_heads(1, 1).await.unwrap(), [epoch(2)]);
    assert!(store.kt_heads(3, 10).await.unwrap().is_empty());
    assert_eq!(
        store.kt_latest_head().await.unwrap(),
        Some((3, b"head 3".to_vec()))
    );

    assert_eq!(
        store.kt_sets(&name("alice")).await.unwrap(),
        [
            set("alice", 1, &[b"alice 1", b"alice 2"]),
            set("alice", 2, &[b"alice 2"])
        ]
    );
    assert!(store.kt_sets(&name("dave")).await.unwrap().is_empty());
    assert_eq!(
        store.kt_latest_sets().await.unwrap(),
        [
            set("alice", 2, &[b"alice 2"]),
            set("bob", 1, &[b"", &[9; 2_000]]),
            set("carol", 1, &[]),
        ]
    );
}

pub async fn kt_auditor_signatures_keep_the_newest(store: &impl Store) {
    assert!(store.kt_auditor_signatures().await.unwrap().is_empty());
    store
        .kt_put_auditor_signature(&[2; 32], 5, b"second at 5")
        .await
        .unwrap();
    store
        .kt_put_auditor_signature(&[1; 32], 3, b"first at 3")
        .await
        .unwrap();
    let listed = |documents: &[&[u8]]| documents.iter().map(|d| d.to_vec()).collect::<Vec<_>>();
    assert_eq!(
        store.kt_auditor_signatures().await.unwrap(),
        listed(&[b"first at 3", b"second at 5"])
    );
    // An older epoch does not replace it; the same one does (a fresher countersignature of
    // a quiet directory), and a newer one.
    store
        .kt_put_auditor_signature(&[2; 32], 4, b"second at 4")
        .await
        .unwrap();
    assert_eq!(
        store.kt_auditor_signatures().await.unwrap(),
        listed(&[b"first at 3", b"second at 5"])
    );
    store
        .kt_put_auditor_signature(&[2; 32], 5, b"second at 5 again")
        .await
        .unwrap();
    assert_eq!(
        store.kt_auditor_signatures().await.unwrap(),
        listed(&[b"first at 3", b"second at 5 again"])
    );
    store
        .kt_put_auditor_signature(&[2; 32], 6, b"second at 6")
        .await
        .unwrap();
    assert_eq!(
        store.kt_auditor_signatures().await.unwrap(),
        listed(&[b"first at 3", b"second at 6"])
    );
}
