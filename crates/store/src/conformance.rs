#![allow(clippy::unwrap_used, clippy::expect_used)] // a test suite: a failed step must fail loudly

//! The conformance suite every [`Store`] backend runs.
//!
//! A backend's tests invoke [`store_conformance_tests!`] with an async expression that
//! makes a fresh, empty store; each check becomes its own test.

use redoubt_proto::{ActivationCodeId, Bytes, DeviceId, DeviceName, DisplayName, OrgId, Role, UserName};

use redoubt_proto::GroupId;

use redoubt_proto::{CommandKind, GroupName, PolicyScope, PolicySettings};

mod kt;

pub use kt::{
    kt_auditor_signatures_keep_the_newest, kt_epochs_are_written_once_and_take_changed_users,
    kt_records_are_replaced_and_read_by_key,
};

use crate::{
    ActivationCodeRecord, ActivationCodeState, AppendError, AuditEvent, BeginError, BlobRecord, Change,
    Claim, DeviceRecord, GroupHead, GroupRecord, GroupTransition, HistoryRecord, LogRecord, Membership,
    NewLogEntry, OrgRecord, RedeemError, Store, StoreError, TransferGroupRecord, UserRecord,
};

/// Expands to one `#[tokio::test]` per conformance check. `$make` is an async expression
/// returning a fresh store (it may capture a temporary directory through a guard it
/// returns alongside: `(store, guard)`).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@tests $make;
            org_is_written_once,
            users_round_trip,
            duplicate_user_is_refused_and_nothing_is_written,
            activation_code_for_unknown_user_is_refused,
            redeem_creates_device_once,
            approval_is_kept_with_the_device_once,
            redeem_refuses_expired_used_and_voided_codes,
            failed_attempts_void_the_code,
            concurrent_redemptions_have_one_winner,
            serials_are_unique_and_increasing,
            devices_list_and_touch,
            duplicate_device_key_is_refused_atomically,
            key_packages_are_claimed_once_then_last_resort,
            key_package_pool_is_bounded,
            log_is_ordered_and_submission_is_idempotent,
            stale_commit_conflicts_and_writes_nothing,
            commits_move_membership_and_fill_inboxes,
            blobs_are_created_completed_and_deleted,
            attachment_bytes_are_summed_per_device_and_window,
            logs_are_pruned_once_acknowledged_or_expired,
            handshakes_after_the_stored_state_are_kept_for_replay,
            concurrent_appends_are_dense_ordered_and_one_commit_wins,
            management_changes_are_all_or_nothing,
            policies_and_groups_round_trip,
            commands_are_issued_then_acknowledged,
            audit_log_is_a_verifiable_chain,
            settings_are_replaced_deleted_and_listed_by_prefix,
            history_transfers_are_claimed_sent_and_received,
            blob_chunks_are_replaced_read_and_deleted_with_their_blob,
            nodes_heartbeat_and_are_forgotten,
            leases_have_one_holder_and_growing_tokens,
            disabled_users_get_no_codes_and_groups_are_deleted,
            kt_records_are_replaced_and_read_by_key,
            kt_epochs_are_written_once_and_take_changed_users,
            kt_auditor_signatures_keep_the_newest,
        );
    };
    (@tests $make:expr; $($name:ident,)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $make;
                $crate::conformance::$name(&store).await;
            }
        )*
    };
}

/// Record builders, shared with backends' own tests.
pub fn user(name: &str) -> UserRecord {
    UserRecord {
        name: UserName::parse(name).unwrap(),
        display_name: Some(DisplayName::parse(&format!("{name} Example")).unwrap()),
        roles: vec![],
        created_at_unix_s: 1_000,
        disabled_at_unix_s: None,
    }
}

pub fn code(id: u8, user: &str, expires: i64) -> ActivationCodeRecord {
    ActivationCodeRecord::new(
        ActivationCodeId::from([id; 8]),
        UserName::parse(user).unwrap(),
        [id; 32],
        1_000,
        expires,
    )
}

pub fn device(id: u8, user: &str, serial: u64) -> DeviceRecord {
    DeviceRecord {
        id: DeviceId::from([id; 16]),
        user: UserName::parse(user).unwrap(),
        name: DeviceName::parse(&format!("device {id}")).unwrap(),
        public_key: Bytes([id; 32]),
        certificate: vec![id; 100],
        certificate_serial: serial,
        certificate_not_after_unix_s: 9_000,
        created_at_unix_s: 1_000 + i64::from(id),
        last_seen_at_unix_s: None,
        revoked_at_unix_s: None,
        approved_at_unix_s: Some(1_000),
        policy_version_acked: 0,
        approval: None,
    }
}

fn audit() -> AuditEvent {
    audit_event("test.event", "subject")
}

fn audit_event(action: &'static str, subject: &str) -> AuditEvent {
    AuditEvent {
        at_unix_s: 1_000,
        actor_user: Some(UserName::parse("admin").unwrap()),
        actor_device: None,
        action,
        subject: subject.to_owned(),
        details: String::new(),
    }
}

pub async fn org_is_written_once(store: &impl Store) {
    assert_eq!(store.org().await.unwrap(), None);
    let org = OrgRecord {
        org_id: OrgId::from([1; 16]),
        created_at_unix_s: 5,
    };
    store.init_org(&org).await.unwrap();
    assert_eq!(store.org().await.unwrap(), Some(org.clone()));
    let other = OrgRecord {
        org_id: OrgId::from([2; 16]),
        created_at_unix_s: 6,
    };
    assert!(matches!(
        store.init_org(&other).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(store.org().await.unwrap(), Some(org));
}

pub async fn users_round_trip(store: &impl Store) {
    let mut admin = user("admin");
    admin.roles = vec![Role::Admin];
    admin.display_name = None;
    store.create_user(&admin, &code(1, "admin", 2_000)).await.unwrap();
    store
        .create_user(&user("alice"), &code(2, "alice", 2_000))
        .await
        .unwrap();
    assert_eq!(store.user(&admin.name).await.unwrap(), Some(admin.clone()));
    assert_eq!(
        store.user(&UserName::parse("nobody").unwrap()).await.unwrap(),
        None
    );
    let names: Vec<_> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, vec![admin.name.clone(), UserName::parse("alice").unwrap()]);
    assert_eq!(
        store
            .activation_code(&ActivationCodeId::from([2; 8]))
            .await
            .unwrap(),
        Some(code(2, "alice", 2_000))
    );
}

pub async fn duplicate_user_is_refused_and_nothing_is_written(store: &impl Store) {
    store
        .create_user(&user("alice"), &code(1, "alice", 2_000))
        .await
        .unwrap();
    let again = store.create_user(&user("alice"), &code(2, "alice", 2_000)).await;
    assert!(matches!(again, Err(StoreError::AlreadyExists(_))), "{again:?}");
    // The second call's code must not have been written.
    assert_eq!(
        store
            .activation_code(&ActivationCodeId::from([2; 8]))
            .await
            .unwrap(),
        None
    );
    // A code id collision also rolls back the user.
    let clash = store.create_user(&user("bob"), &code(1, "bob", 2_000)).await;
    assert!(matches!(clash, Err(StoreError::AlreadyExists(_))), "{clash:?}");
    assert_eq!(store.user(&UserName::parse("bob").unwrap()).await.unwrap(), None);
}

pub async fn activation_code_for_unknown_user_is_refused(store: &impl Store) {
    let result = store.create_activation_code(&code(1, "ghost", 2_000)).await;
    assert!(matches!(result, Err(StoreError::NotFound(_))), "{result:?}");
    store
        .create_user(&user("alice"), &code(2, "alice", 2_000))
        .await
        .unwrap();
    store
        .create_activation_code(&code(3, "alice", 2_000))
        .await
        .unwrap();
    assert!(
        store
            .activation_code(&ActivationCodeId::from([3; 8]))
            .await
            .unwrap()
            .is_some()
    );
}

pub async fn redeem_creates_device_once(store: &impl Store) {
    store
        .create_user(&user("alice"), &code(1, "alice", 2_000))
        .await
        .unwrap();
    let id = ActivationCodeId::from([1; 8]);
    let dev = device(7, "alice", 1);
    store
        .redeem_activation_code(&id, 1_500, &dev, &audit())
        .await
        .unwrap();
    assert_eq!(store.device(&dev.id).await.unwrap(), Some(dev.clone()));
    let record = store.activation_code(&id).await.unwrap().unwrap();
    assert_eq!(record.state, ActivationCodeState::Used);
    assert_eq!(record.device_id, Some(dev.id));
    let again = store
        .redeem_activation_code(&id, 1_500, &device(8, "alice", 2), &audit())
        .await;
    assert!(matches!(again, Err(RedeemError::Used)), "{again:?}");
    assert_eq!(store.device(&DeviceId::from([8; 16])).await.unwrap(), None);
}

/// A device waiting for approval keeps the first approval it is given, with its time.
pub async fn approval_is_kept_with_the_device_once(store: &impl Store) {
    store
        .create_user(&user("alice"), &code(1, "alice", 2_000))
        .await
        .unwrap();
    let dev = DeviceRecord {
        approved_at_unix_s: None,
        ..device(7, "alice", 1)
    };
    store
        .redeem_activation_code(&ActivationCodeId::from([1; 8]), 1_500, &dev, &audit())
        .await
        .unwrap();
    let approve = |at_unix_s: i64, approval: &[u8]| Change::ApproveDevice {
        device: dev.id,
        at_unix_s,
        approval: approval.to_vec(),
    };
    store
        .apply(&[approve(1_600, b"first approval")], &[audit()])
        .await
        .unwrap();
    store
        .apply(&[approve(1_700, b"second approval")], &[audit()])
        .await
        .unwrap();
    let stored = store.device(&dev.id).await.unwrap().unwrap();
    assert_eq!(stored.approved_at_unix_s, Some(1_600));
    assert_eq!(stored.approval.as_deref(), Some(b"first approval".as_slice()));
    let unknown = store
        .apply(
            &[Change::ApproveDevice {
                device: DeviceId::from([9; 16]),
                at_unix_s: 1_600,
                approval: Vec::new(),
            }],
            &[audit()],
        )
        .await;
    assert!(matches!(unknown, Err(StoreError::NotFound(_))), "{unknown:?}");
}

pub async fn redeem_refuses_expired_used_and_voided_codes(store: &impl Store) {
    store
        .create_user(&user("alice"), &code(1, "alice", 2_000))
        .await
        .unwrap();
    let expired = store
        .redeem_activation_code(
            &ActivationCodeId::from([1; 8]),
            2_001,
            &device(7, "alice", 1),
            &audit(),
        )
        .await;
    assert!(matches!(expired, Err(RedeemError::Expired)), "{expired:?}");
    assert_eq!(store.device(&DeviceId::from([7; 16])).await.unwrap(), None);
    let unknown = store
        .redeem_activation_code(
            &ActivationCodeId::from([9; 8]),
            1_500,
            &device(7, "alice", 1),
            &audit(),
        )
        .await;
    assert!(matches!(unknown, Err(RedeemError::Unknown)), "{unknown:?}");

    store
        .create_activation_code(&code(2, "alice", 2_000))
        .await
        .unwrap();
    let id = ActivationCodeId::from([2; 8]);
    for _ in 0..5 {
        store.record_failed_activation(&id, 5, &audit()).await.unwrap();
    }
    let voided = store
        .redeem_activation_code(&id, 1_500, &device(7, "alice", 1), &audit())
        .await;
    assert!(matches!(voided, Err(RedeemError::Voided)), "{voided:?}");
}

pub async fn failed_attempts_void_the_code(store: &impl Store) {
    store
        .create_user(&user("alice"), &code(1, "alice", 2_000))
        .await
        .unwrap();
    let id = ActivationCodeId::from([1; 8]);
    for attempt in 1..=4 {
        let record = store.record_failed_activation(&id, 5, &audit()).await.unwrap();
        assert_eq!(record.failed_attempts, attempt);
        assert_eq!(record.state, ActivationCodeState::Active);
    }
    let record = store.record_failed_activation(&id, 5, &audit()).await.unwrap();
    assert_eq!(
        (record.failed_attempts, record.state),
        (5, ActivationCodeState::Voided)
    );
    // Further failures change nothing.
    let record = store.record_failed_activation(&id, 5, &audit()).await.unwrap();
    assert_eq!(
        (record.failed_attempts, record.state),
        (5, ActivationCodeState::Voided)
    );
    let missing = store
        .record_failed_activation(&ActivationCodeId::from([9; 8]), 5, &audit())
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");
}

pub async fn concurrent_redemptions_have_one_winner(store: &impl Store) {
    store
        .create_user(&user("alice"), &code(1, "alice", 2_000))
        .await
        .unwrap();
    let id = ActivationCodeId::from([1; 8]);
    let attempts: Vec<_> = (0..8u8)
        .map(|i| {
            let dev = device(10 + i, "alice", u64::from(i) + 1);
            async move { store.redeem_activation_code(&id, 1_500, &dev, &audit()).await }
        })
        .collect();
    let results = futures_join_all(attempts).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(RedeemError::Used)))
    );
    assert_eq!(store.list_devices(None).await.unwrap().len(), 1);
}

/// Polls all futures to completion concurrently, without depending on a futures crate.
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::pin::Pin;
    use std::task::Poll;
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

pub async fn serials_are_unique_and_increasing(store: &impl Store) {
    let mut last = 0;
    for _ in 0..20 {
        let serial = store.next_certificate_serial().await.unwrap();
        assert!(serial > last, "{serial} after {last}");
        last = serial;
    }
}

pub async fn devices_list_and_touch(store: &impl Store) {
    store
        .create_user(&user("alice"), &code(1, "alice", 2_000))
        .await
        .unwrap();
    store
        .create_activation_code(&code(2, "alice", 2_000))
        .await
        .unwrap();
    store
        .create_user(&user("bob"), &code(3, "bob", 2_000))
        .await
        .unwrap();
    store
        .redeem_activation_code(
            &ActivationCodeId::from([1; 8]),
            1_100,
            &device(1, "alice", 1),
            &audit(),
        )
        .await
        .unwrap();
    store
        .redeem_activation_code(
            &ActivationCodeId::from([2; 8]),
            1_100,
            &device(2, "alice", 2),
            &audit(),
        )
        .await
        .unwrap();
    store
        .redeem_activation_code(
            &ActivationCodeId::from([3; 8]),
            1_100,
            &device(3, "bob", 3),
            &audit(),
        )
        .await
        .unwrap();
    let alice = UserName::parse("alice").unwrap();
    let ids: Vec<_> = store
        .list_devices(Some(&alice))
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, vec![DeviceId::from([1; 16]), DeviceId::from([2; 16])]);
    assert_eq!(store.list_devices(None).await.unwrap().len(), 3);
    let seen = |id: u8| async move {
        store
            .device(&DeviceId::from([id; 16]))
            .await
            .unwrap()
            .unwrap()
            .last_seen_at_unix_s
    };
    store
        .record_last_seen(&[(DeviceId::from([3; 16]), 4_242), (DeviceId::from([1; 16]), 4_000)])
        .await
        .unwrap();
    assert_eq!(
        (seen(3).await, seen(1).await, seen(2).await),
        (Some(4_242), Some(4_000), None)
    );
    // An older time changes nothing; an unknown device is skipped, the rest is written.
    store
        .record_last_seen(&[
            (DeviceId::from([3; 16]), 4_000),
            (DeviceId::from([9; 16]), 5_000),
            (DeviceId::from([2; 16]), 4_100),
        ])
        .await
        .unwrap();
    assert_eq!((seen(3).await, seen(2).await), (Some(4_242), Some(4_100)));
    assert!(store.device(&DeviceId::from([9; 16])).await.unwrap().is_none());
}

pub async fn duplicate_device_key_is_refused_atomically(store: &impl Store) {
    store
        .create_user(&user("alice"), &code(1, "alice", 2_000))
        .await
        .unwrap();
    store
        .create_activation_code(&code(2, "alice", 2_000))
        .await
        .unwrap();
    store
        .redeem_activation_code(
            &ActivationCodeId::from([1; 8]),
            1_100,
            &device(1, "alice", 1),
            &audit(),
        )
        .await
        .unwrap();
    // Same public key as device 1, different id: refused, and code 2 stays active.
    let mut copy = device(2, "alice", 2);
    copy.public_key = device(1, "alice", 1).public_key;
    let result = store
        .redeem_activation_code(&ActivationCodeId::from([2; 8]), 1_100, &copy, &audit())
        .await;
    assert!(
        matches!(result, Err(RedeemError::Store(StoreError::AlreadyExists(_)))),
        "{result:?}"
    );
    let code2 = store
        .activation_code(&ActivationCodeId::from([2; 8]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code2.state, ActivationCodeState::Active);
}

/// Users alice (devices 1, 2) and bob (device 3).
async fn two_users_three_devices(store: &impl Store) {
    store
        .create_user(&user("alice"), &code(1, "alice", 2_000))
        .await
        .unwrap();
    store
        .create_activation_code(&code(2, "alice", 2_000))
        .await
        .unwrap();
    store
        .create_user(&user("bob"), &code(3, "bob", 2_000))
        .await
        .unwrap();
    for (c, d, u) in [(1u8, 1u8, "alice"), (2, 2, "alice"), (3, 3, "bob")] {
        store
            .redeem_activation_code(
                &ActivationCodeId::from([c; 8]),
                1_100,
                &device(d, u, u64::from(d)),
                &audit(),
            )
            .await
            .unwrap();
    }
}

pub fn dev(id: u8) -> DeviceId {
    DeviceId::from([id; 16])
}

pub async fn key_packages_are_claimed_once_then_last_resort(store: &impl Store) {
    two_users_three_devices(store).await;
    let pool = store
        .publish_key_packages(&dev(1), &[vec![1, 1], vec![1, 2]], Some(&[1, 9]), 10)
        .await
        .unwrap();
    assert_eq!(pool, 2);
    store
        .publish_key_packages(&dev(2), &[], Some(&[2, 9]), 10)
        .await
        .unwrap();
    // Bob's only device has published nothing: it is skipped.
    let alice = UserName::parse("alice").unwrap();
    let bob = UserName::parse("bob").unwrap();
    let claimed = store
        .claim_key_packages(&[alice.clone(), bob], &[])
        .await
        .unwrap();
    let got: Vec<_> = claimed
        .iter()
        .map(|c| (c.device, c.key_package.clone()))
        .collect();
    assert_eq!(got, vec![(dev(1), vec![1, 1]), (dev(2), vec![2, 9])]);
    let again: Vec<_> = store
        .claim_key_packages(std::slice::from_ref(&alice), &[])
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.key_package)
        .collect();
    assert_eq!(again, vec![vec![1, 2], vec![2, 9]]);
    // One-time packages exhausted: the last resort is handed out, and kept.
    for _ in 0..2 {
        let last: Vec<_> = store
            .claim_key_packages(std::slice::from_ref(&alice), &[])
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.key_package)
            .collect();
        assert_eq!(last, vec![vec![1, 9], vec![2, 9]]);
    }
    // Devices already in a group are skipped.
    let except: Vec<_> = store
        .claim_key_packages(std::slice::from_ref(&alice), &[dev(1)])
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.device)
        .collect();
    assert_eq!(except, vec![dev(2)]);
}

pub async fn key_package_pool_is_bounded(store: &impl Store) {
    two_users_three_devices(store).await;
    store
        .publish_key_packages(&dev(1), &[vec![1], vec![2]], None, 3)
        .await
        .unwrap();
    let over = store
        .publish_key_packages(&dev(1), &[vec![3], vec![4]], None, 3)
        .await;
    assert!(matches!(over, Err(StoreError::Limit(_))), "{over:?}");
    // Nothing of the refused batch was added.
    assert_eq!(
        store
            .publish_key_packages(&dev(1), &[vec![5]], None, 3)
            .await
            .unwrap(),
        3
    );
}

fn group(id: u8) -> GroupRecord {
    GroupRecord {
        id: GroupId::from([id; 32]),
        epoch: 0,
        state: vec![0, id],
        state_seq: 0,
        last_seq: 0,
        created_at_unix_s: 1_200,
    }
}

fn entry(group_id: u8, sender: u8, client_id: u8, message: &[u8]) -> NewLogEntry<'_> {
    NewLogEntry {
        group: GroupId::from([group_id; 32]),
        sender: dev(sender),
        client_message_id: [client_id; 16],
        message,
        created_at_unix_s: 1_300,
    }
}

pub async fn log_is_ordered_and_submission_is_idempotent(store: &impl Store) {
    two_users_three_devices(store).await;
    store.create_group(&group(1), &dev(1)).await.unwrap();
    let first = store.append(&entry(1, 1, 1, b"one"), None).await.unwrap();
    let second = store.append(&entry(1, 1, 2, b"two"), None).await.unwrap();
    assert_eq!((first.seq, first.duplicate, second.seq), (1, false, 2));
    let retry = store.append(&entry(1, 1, 1, b"one"), None).await.unwrap();
    assert_eq!((retry.seq, retry.duplicate), (1, true));
    let gid = GroupId::from([1; 32]);
    assert_eq!(
        store.find_submission(&gid, &dev(1), &[2; 16]).await.unwrap(),
        Some(2)
    );
    assert_eq!(
        store.find_submission(&gid, &dev(2), &[2; 16]).await.unwrap(),
        None
    );
    let entries = store.log_entries(&GroupId::from([1; 32]), 0, 10).await.unwrap();
    let messages: Vec<_> = entries.iter().map(|e| (e.seq, e.message.clone())).collect();
    assert_eq!(messages, vec![(1, b"one".to_vec()), (2, b"two".to_vec())]);
    assert_eq!(
        store
            .log_entries(&GroupId::from([1; 32]), 1, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .log_entries(&GroupId::from([1; 32]), 0, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .group(&GroupId::from([1; 32]))
            .await
            .unwrap()
            .unwrap()
            .last_seq,
        2
    );
    let unknown = store.append(&entry(9, 1, 1, b"x"), None).await;
    assert!(matches!(unknown, Err(AppendError::UnknownGroup)), "{unknown:?}");
}

pub async fn stale_commit_conflicts_and_writes_nothing(store: &impl Store) {
    two_users_three_devices(store).await;
    store.create_group(&group(1), &dev(1)).await.unwrap();
    let commit = GroupTransition {
        expected_epoch: 0,
        epoch: 1,
        state: Some(vec![1]),
        added: vec![dev(3)],
        removed: vec![],
        welcome: Some(vec![7]),
    };
    store
        .append(&entry(1, 1, 1, b"commit-a"), Some(&commit))
        .await
        .unwrap();
    // A second commit for epoch 0 loses.
    let loser = store.append(&entry(1, 3, 1, b"commit-b"), Some(&commit)).await;
    assert!(
        matches!(
            loser,
            Err(AppendError::EpochConflict {
                expected: 0,
                current: 1
            })
        ),
        "{loser:?}"
    );
    let stored = store.group(&GroupId::from([1; 32])).await.unwrap().unwrap();
    assert_eq!(
        (stored.epoch, stored.last_seq, stored.state, stored.state_seq),
        (1, 1, vec![1], 1)
    );
    assert_eq!(
        store.group_head(&GroupId::from([1; 32])).await.unwrap(),
        Some(GroupHead {
            epoch: 1,
            last_seq: 1
        })
    );
    assert_eq!(store.group_head(&GroupId::from([9; 32])).await.unwrap(), None);
    assert_eq!(
        store.inbox(&dev(3)).await.unwrap().len(),
        1,
        "the loser's welcome was not delivered"
    );
}

pub async fn commits_move_membership_and_fill_inboxes(store: &impl Store) {
    two_users_three_devices(store).await;
    let gid = GroupId::from([1; 32]);
    store.create_group(&group(1), &dev(1)).await.unwrap();
    assert_eq!(
        store.membership(&gid, &dev(1)).await.unwrap(),
        Some(Membership {
            joined_seq: 0,
            removed_seq: None
        })
    );
    assert_eq!(store.membership(&gid, &dev(3)).await.unwrap(), None);
    let add = GroupTransition {
        expected_epoch: 0,
        epoch: 1,
        state: Some(vec![1]),
        added: vec![dev(2), dev(3)],
        removed: vec![],
        welcome: Some(vec![9, 9]),
    };
    let added = store.append(&entry(1, 1, 1, b"add"), Some(&add)).await.unwrap();
    let inbox = store.inbox(&dev(3)).await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        (inbox[0].group, inbox[0].welcome.clone(), inbox[0].joined_seq),
        (gid, vec![9, 9], added.seq)
    );
    let members = store.group_members(&gid).await.unwrap();
    assert_eq!(members, vec![dev(1), dev(2), dev(3)]);
    store.append(&entry(1, 1, 2, b"hello"), None).await.unwrap();

    let remove = GroupTransition {
        expected_epoch: 1,
        epoch: 2,
        state: Some(vec![2]),
        added: vec![],
        removed: vec![dev(3)],
        welcome: None,
    };
    let removed = store
        .append(&entry(1, 1, 3, b"remove"), Some(&remove))
        .await
        .unwrap();
    let membership = store.membership(&gid, &dev(3)).await.unwrap().unwrap();
    assert_eq!(
        membership,
        Membership {
            joined_seq: added.seq,
            removed_seq: Some(removed.seq)
        }
    );
    assert!(!membership.may_read(added.seq) && membership.may_read(added.seq + 1));
    assert!(membership.may_read(removed.seq) && !membership.may_read(removed.seq + 1));
    assert_eq!(store.group_members(&gid).await.unwrap(), vec![dev(1), dev(2)]);
    assert!(store.device_groups(&dev(3)).await.unwrap().is_empty());
    let head = store.group_head(&gid).await.unwrap().unwrap();
    assert_eq!(
        store.device_groups(&dev(2)).await.unwrap(),
        vec![(gid, head, store.membership(&gid, &dev(2)).await.unwrap().unwrap())]
    );

    // Inbox acks remove only the device's own items.
    store.inbox_ack(&dev(2), &[inbox[0].id]).await.unwrap();
    assert_eq!(store.inbox(&dev(3)).await.unwrap().len(), 1);
    store.inbox_ack(&dev(3), &[inbox[0].id]).await.unwrap();
    assert!(store.inbox(&dev(3)).await.unwrap().is_empty());
}

pub async fn blobs_are_created_completed_and_deleted(store: &impl Store) {
    two_users_three_devices(store).await;
    store.create_group(&group(1), &dev(1)).await.unwrap();
    let blob = BlobRecord {
        id: redoubt_proto::BlobId::from([5; 16]),
        group: GroupId::from([1; 32]),
        uploader: dev(1),
        bytes_total: 70_000,
        chunk_count: 3,
        complete: false,
        created_at_unix_s: 1_400,
    };
    store.create_blob(&blob).await.unwrap();
    assert_eq!(store.blob(&blob.id).await.unwrap(), Some(blob.clone()));
    assert_eq!(store.incomplete_blobs().await.unwrap(), vec![blob.id]);
    store.complete_blob(&blob.id).await.unwrap();
    assert!(store.blob(&blob.id).await.unwrap().unwrap().complete);
    assert!(store.incomplete_blobs().await.unwrap().is_empty());
    store.delete_blob(&blob.id).await.unwrap();
    assert_eq!(store.blob(&blob.id).await.unwrap(), None);
    let missing = store.complete_blob(&blob.id).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");
}

pub async fn attachment_bytes_are_summed_per_device_and_window(store: &impl Store) {
    two_users_three_devices(store).await;
    store.create_group(&group(1), &dev(1)).await.unwrap();
    store.create_group(&group(2), &dev(1)).await.unwrap();
    let blob = |id: u8, group: u8, uploader: u8, bytes_total: u64, at: i64| BlobRecord {
        id: redoubt_proto::BlobId::from([id; 16]),
        group: GroupId::from([group; 32]),
        uploader: dev(uploader),
        bytes_total,
        chunk_count: 1,
        complete: false,
        created_at_unix_s: at,
    };
    store.create_blob(&blob(1, 1, 1, 100, 1_000)).await.unwrap();
    store.create_blob(&blob(2, 1, 1, 200, 2_000)).await.unwrap();
    store
        .complete_blob(&redoubt_proto::BlobId::from([2; 16]))
        .await
        .unwrap();
    store.create_blob(&blob(3, 1, 3, 400, 2_000)).await.unwrap();
    // Group 2 carries a history transfer from device 1 to Alice's waiting device 2: its
    // blobs are history, not attachments.
    let transfer = TransferGroupRecord {
        group: GroupId::from([2; 32]),
        target: dev(2),
        source: dev(1),
        created_at_unix_s: 1_300,
    };
    let claim = Claim {
        at_unix_s: 1_300,
        lapsed_before_unix_s: 1_000,
    };
    store.begin_history(&transfer, Some(claim)).await.unwrap();
    store.create_blob(&blob(4, 2, 1, 800, 2_000)).await.unwrap();

    assert_eq!(
        store.attachment_bytes_since(&dev(1), 0).await.unwrap(),
        300,
        "complete and incomplete both count"
    );
    assert_eq!(store.attachment_bytes_since(&dev(1), 1_001).await.unwrap(), 200);
    assert_eq!(
        store.attachment_bytes_since(&dev(1), 2_000).await.unwrap(),
        200,
        "the window includes its start"
    );
    assert_eq!(store.attachment_bytes_since(&dev(1), 2_001).await.unwrap(), 0);
    assert_eq!(
        store.attachment_bytes_since(&dev(3), 0).await.unwrap(),
        400,
        "per device"
    );
    assert_eq!(store.attachment_bytes_since(&dev(2), 0).await.unwrap(), 0);
    store
        .delete_blob(&redoubt_proto::BlobId::from([2; 16]))
        .await
        .unwrap();
    assert_eq!(
        store.attachment_bytes_since(&dev(1), 0).await.unwrap(),
        100,
        "a deleted blob is no longer held"
    );
}

pub async fn logs_are_pruned_once_acknowledged_or_expired(store: &impl Store) {
    two_users_three_devices(store).await;
    let gid = GroupId::from([1; 32]);
    store.create_group(&group(1), &dev(1)).await.unwrap();
    let add = GroupTransition {
        expected_epoch: 0,
        epoch: 1,
        state: Some(vec![1]),
        added: vec![dev(3)],
        removed: vec![],
        welcome: None,
    };
    store.append(&entry(1, 1, 1, b"add"), Some(&add)).await.unwrap(); // seq 1
    for i in 2..=4u8 {
        store.append(&entry(1, 1, i, b"msg"), None).await.unwrap(); // seq 2..4
    }
    // The creator has acknowledged nothing yet: nothing goes.
    assert_eq!(store.prune_logs(0).await.unwrap(), 0);
    store.ack(&gid, &dev(1), 4).await.unwrap();
    store.ack(&gid, &dev(3), 2).await.unwrap();
    store.ack(&gid, &dev(3), 1).await.unwrap(); // acks never move back
    assert_eq!(
        store.prune_logs(0).await.unwrap(),
        2,
        "seqs 1 and 2: every member is past them"
    );
    let left: Vec<u64> = store
        .log_entries(&gid, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(left, vec![3, 4]);
    // The retention limit removes entries whatever the acknowledgements.
    assert_eq!(store.prune_logs(i64::MAX).await.unwrap(), 2);
    assert!(store.log_entries(&gid, 0, 10).await.unwrap().is_empty());
    // Sequence numbers continue after pruning.
    assert_eq!(store.append(&entry(1, 1, 9, b"next"), None).await.unwrap().seq, 5);
}

pub async fn handshakes_after_the_stored_state_are_kept_for_replay(store: &impl Store) {
    two_users_three_devices(store).await;
    let gid = GroupId::from([1; 32]);
    store.create_group(&group(1), &dev(1)).await.unwrap();
    let commit = |epoch: u64, state: Option<Vec<u8>>| GroupTransition {
        expected_epoch: epoch - 1,
        epoch,
        state,
        added: vec![],
        removed: vec![],
        welcome: None,
    };
    store
        .append(&entry(1, 1, 1, b"c1"), Some(&commit(1, Some(vec![1]))))
        .await
        .unwrap(); // seq 1
    store.append(&entry(1, 1, 2, b"m"), None).await.unwrap(); // seq 2
    store
        .append(&entry(1, 1, 3, b"c2"), Some(&commit(2, None)))
        .await
        .unwrap(); // seq 3
    store.append(&entry(1, 1, 4, b"m"), None).await.unwrap(); // seq 4
    store
        .append(&entry(1, 1, 5, b"c3"), Some(&commit(3, None)))
        .await
        .unwrap(); // seq 5
    let stored = store.group(&gid).await.unwrap().unwrap();
    assert_eq!(
        (stored.epoch, stored.state, stored.state_seq, stored.last_seq),
        (3, vec![1], 1, 5),
        "a transition without state keeps the stored one"
    );
    let seqs = |records: Vec<LogRecord>| {
        records
            .into_iter()
            .map(|r| (r.seq, r.message))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seqs(store.handshakes_after(&gid, stored.state_seq).await.unwrap()),
        vec![(3, b"c2".to_vec()), (5, b"c3".to_vec())]
    );
    assert!(store.handshakes_after(&gid, 5).await.unwrap().is_empty());
    // Neither acknowledgements nor the retention limit prune what the replay needs.
    store.ack(&gid, &dev(1), 5).await.unwrap();
    assert_eq!(store.prune_logs(i64::MAX).await.unwrap(), 3, "seqs 1, 2 and 4");
    assert_eq!(seqs(store.log_entries(&gid, 0, 10).await.unwrap()).len(), 2);
    // A new state releases them.
    store
        .append(&entry(1, 1, 6, b"c4"), Some(&commit(4, Some(vec![4]))))
        .await
        .unwrap(); // seq 6
    assert_eq!(store.group(&gid).await.unwrap().unwrap().state_seq, 6);
    store.ack(&gid, &dev(1), 6).await.unwrap();
    assert_eq!(store.prune_logs(i64::MAX).await.unwrap(), 3);
    assert!(store.handshakes_after(&gid, 0).await.unwrap().is_empty());
}

pub async fn concurrent_appends_are_dense_ordered_and_one_commit_wins(store: &impl Store) {
    two_users_three_devices(store).await;
    store.create_group(&group(1), &dev(1)).await.unwrap();
    store.create_group(&group(2), &dev(1)).await.unwrap();
    let commit = GroupTransition {
        expected_epoch: 0,
        epoch: 1,
        state: Some(vec![1]),
        added: vec![],
        removed: vec![],
        welcome: None,
    };
    let messages: Vec<Vec<u8>> = (0..60u8).map(|i| vec![i]).collect();
    let appends: Vec<_> = messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let group_id = if i % 2 == 0 { 1 } else { 2 };
            // Every tenth append is a commit for epoch 0 of group 1: only one may win.
            let transition = (i % 10 == 0).then(|| commit.clone());
            let entry = entry(group_id, 1, i as u8, message);
            async move { (group_id, store.append(&entry, transition.as_ref()).await) }
        })
        .collect();
    let results = futures_join_all(appends).await;
    let won = results.iter().filter(|(g, r)| *g == 1 && r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|(_, r)| matches!(r, Err(AppendError::EpochConflict { .. })))
        .count();
    assert_eq!(conflicts, 5, "six commits raced for epoch 0, one won");
    assert_eq!(won, 30 - conflicts);
    for (group_id, expected) in [(1u8, 25u64), (2, 30)] {
        let seqs: Vec<u64> = store
            .log_entries(&GroupId::from([group_id; 32]), 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            seqs,
            (1..=expected).collect::<Vec<_>>(),
            "group {group_id}: dense and ordered"
        );
    }
    assert_eq!(
        store.group(&GroupId::from([1; 32])).await.unwrap().unwrap().epoch,
        1
    );
}

fn group_name(name: &str) -> GroupName {
    GroupName::parse(name).unwrap()
}

async fn with_users(store: &impl Store, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        store
            .create_user(&user(name), &code(u8::try_from(i).unwrap() + 1, name, 2_000))
            .await
            .unwrap();
    }
}

pub async fn management_changes_are_all_or_nothing(store: &impl Store) {
    with_users(store, &["alice"]).await;
    let before = store.audit_head().await.unwrap();
    let error = store
        .apply(
            &[
                Change::CreateGroup {
                    group: group_name("finance"),
                    at_unix_s: 1_000,
                },
                Change::BumpPolicyVersion,
                Change::SetGroupMember {
                    group: group_name("finance"),
                    user: UserName::parse("nobody").unwrap(),
                    member: true,
                },
            ],
            &[audit_event("group.create", "finance")],
        )
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound("user")), "{error:?}");
    assert!(store.directory_groups().await.unwrap().is_empty());
    assert_eq!(store.policy_version().await.unwrap(), 0);
    assert_eq!(store.audit_head().await.unwrap(), before, "nothing audited");

    let applied = store
        .apply(
            &[
                Change::CreateGroup {
                    group: group_name("finance"),
                    at_unix_s: 1_000,
                },
                Change::SetGroupMember {
                    group: group_name("finance"),
                    user: UserName::parse("alice").unwrap(),
                    member: true,
                },
                Change::SetRole {
                    user: UserName::parse("alice").unwrap(),
                    role: Role::Helpdesk,
                    granted: true,
                },
                Change::BumpPolicyVersion,
            ],
            &[
                audit_event("group.create", "finance"),
                audit_event("group.add", "alice"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(applied.policy_version, Some(1));
    assert_eq!(applied.audit_seq, before.0 + 2);
    assert_eq!(
        store
            .user(&UserName::parse("alice").unwrap())
            .await
            .unwrap()
            .unwrap()
            .roles,
        vec![Role::Helpdesk]
    );
    let duplicate = store
        .apply(
            &[Change::CreateGroup {
                group: group_name("finance"),
                at_unix_s: 1_000,
            }],
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(duplicate, StoreError::AlreadyExists("group")),
        "{duplicate:?}"
    );
}

pub async fn settings_are_replaced_deleted_and_listed_by_prefix(store: &impl Store) {
    let set = |key: &str, value: Option<&[u8]>| Change::SetSetting {
        key: key.to_owned(),
        value: value.map(<[u8]>::to_vec),
    };
    store
        .apply(
            &[
                set("mail/server", Some(b"one")),
                set("mail/address/alice", Some(b"alice@corp.test")),
                set("mail/address/bob", Some(b"bob@corp.test")),
                set("mailbox", Some(b"not under mail/")),
            ],
            &[],
        )
        .await
        .unwrap();
    store
        .apply(
            &[set("mail/server", Some(b"two")), set("mail/address/bob", None)],
            &[],
        )
        .await
        .unwrap();
    let listed = store.settings("mail/").await.unwrap();
    assert_eq!(
        listed,
        vec![
            ("mail/address/alice".to_owned(), b"alice@corp.test".to_vec()),
            ("mail/server".to_owned(), b"two".to_vec()),
        ]
    );
    assert_eq!(store.settings("mail/server").await.unwrap().len(), 1);
    // A failing change in the same batch leaves settings untouched.
    let failed = store
        .apply(
            &[
                set("mail/server", Some(b"three")),
                Change::RevokeDevice {
                    device: DeviceId::from([9; 16]),
                    at_unix_s: 1,
                },
            ],
            &[],
        )
        .await;
    assert!(failed.is_err());
    assert_eq!(store.settings("mail/server").await.unwrap()[0].1, b"two".to_vec());
}

pub async fn policies_and_groups_round_trip(store: &impl Store) {
    with_users(store, &["alice", "bob"]).await;
    let alice = UserName::parse("alice").unwrap();
    let strict = PolicySettings {
        passcode_required: Some(true),
        passcode_min_length: Some(8),
        ..Default::default()
    };
    let missing = store
        .apply(
            &[Change::SetPolicy {
                scope: PolicyScope::Group(group_name("ghosts")),
                settings: strict.clone(),
                at_unix_s: 1_000,
            }],
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound("group")), "{missing:?}");
    store
        .apply(
            &[
                Change::CreateGroup {
                    group: group_name("finance"),
                    at_unix_s: 1_000,
                },
                Change::SetGroupMember {
                    group: group_name("finance"),
                    user: alice.clone(),
                    member: true,
                },
                Change::SetPolicy {
                    scope: PolicyScope::Default,
                    settings: strict.clone(),
                    at_unix_s: 1_000,
                },
                Change::SetPolicy {
                    scope: PolicyScope::User(alice.clone()),
                    settings: strict.clone(),
                    at_unix_s: 1_000,
                },
            ],
            &[],
        )
        .await
        .unwrap();
    let policies = store.policies().await.unwrap();
    assert_eq!(policies.len(), 2);
    assert!(policies.contains(&(PolicyScope::Default, strict.clone())));
    assert!(policies.contains(&(PolicyScope::User(alice.clone()), strict.clone())));
    assert_eq!(
        store.user_groups(&alice).await.unwrap(),
        vec![group_name("finance")]
    );
    let groups = store.directory_groups().await.unwrap();
    assert_eq!(groups[0].members, vec![alice.clone()]);

    // Empty settings delete the document; removing a member is idempotent.
    store
        .apply(
            &[
                Change::SetPolicy {
                    scope: PolicyScope::User(alice.clone()),
                    settings: PolicySettings::default(),
                    at_unix_s: 1_001,
                },
                Change::SetGroupMember {
                    group: group_name("finance"),
                    user: alice.clone(),
                    member: false,
                },
                Change::SetGroupMember {
                    group: group_name("finance"),
                    user: alice.clone(),
                    member: false,
                },
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        store.policies().await.unwrap(),
        vec![(PolicyScope::Default, strict)]
    );
    assert!(store.user_groups(&alice).await.unwrap().is_empty());
}

pub async fn commands_are_issued_then_acknowledged(store: &impl Store) {
    with_users(store, &["alice"]).await;
    store
        .redeem_activation_code(
            &ActivationCodeId::from([1; 8]),
            1_100,
            &device(1, "alice", 1),
            &audit(),
        )
        .await
        .unwrap();
    let phone = DeviceId::from([1; 16]);
    let admin = UserName::parse("admin").unwrap();
    let applied = store
        .apply(
            &[
                Change::IssueCommand {
                    device: phone,
                    kind: CommandKind::Lock,
                    issued_by: admin.clone(),
                    at_unix_s: 1_200,
                },
                Change::IssueCommand {
                    device: phone,
                    kind: CommandKind::Wipe,
                    issued_by: admin.clone(),
                    at_unix_s: 1_201,
                },
            ],
            &[audit()],
        )
        .await
        .unwrap();
    assert_eq!(applied.command_ids.len(), 2);
    assert!(applied.command_ids[0] < applied.command_ids[1]);
    let pending = store.commands(Some(&phone), true).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[1].kind, CommandKind::Wipe);
    assert_eq!(pending[1].acknowledged_at_unix_s, None);

    store
        .apply(
            &[Change::AcknowledgeCommand {
                device: phone,
                command_id: applied.command_ids[1],
                at_unix_s: 1_300,
            }],
            &[],
        )
        .await
        .unwrap();
    let pending = store.commands(Some(&phone), true).await.unwrap();
    assert_eq!(
        pending.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![applied.command_ids[0]]
    );
    let all = store.commands(None, false).await.unwrap();
    assert_eq!(all[1].acknowledged_at_unix_s, Some(1_300));

    let other_device = store
        .apply(
            &[Change::AcknowledgeCommand {
                device: DeviceId::from([2; 16]),
                command_id: applied.command_ids[0],
                at_unix_s: 1_300,
            }],
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(other_device, StoreError::NotFound("command")),
        "{other_device:?}"
    );

    store.acknowledge_policy(&phone, 4).await.unwrap();
    store.acknowledge_policy(&phone, 2).await.unwrap();
    store
        .apply(
            &[Change::RevokeDevice {
                device: phone,
                at_unix_s: 1_400,
            }],
            &[],
        )
        .await
        .unwrap();
    let device = store.device(&phone).await.unwrap().unwrap();
    assert_eq!(device.policy_version_acked, 4, "acknowledgements never move back");
    assert_eq!(device.revoked_at_unix_s, Some(1_400));
}

pub async fn audit_log_is_a_verifiable_chain(store: &impl Store) {
    with_users(store, &["alice"]).await;
    store
        .record_failed_activation(
            &ActivationCodeId::from([1; 8]),
            5,
            &audit_event("activation.failed", "alice"),
        )
        .await
        .unwrap();
    for i in 0..3 {
        store
            .apply(&[], &[audit_event("policy.set", &format!("change {i}"))])
            .await
            .unwrap();
    }
    let entries = store.audit_entries(0, 100).await.unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0].action, "activation.failed");
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let org = OrgId::from([4; 16]);
    let (head, hash) = store.audit_head().await.unwrap();
    assert_eq!((head, hash), (4, entries[3].hash.0));
    let checkpoint = redoubt_proto::Signed::sign(
        &redoubt_proto::CheckpointBody {
            org_id: org,
            seq: 3,
            hash: entries[2].hash,
            at_unix_s: 1_000,
        },
        &key,
    );
    store
        .add_audit_checkpoint(3, &checkpoint.to_bytes())
        .await
        .unwrap();
    store
        .add_audit_checkpoint(3, &checkpoint.to_bytes())
        .await
        .unwrap();
    let stored = store.audit_checkpoints(0, 4).await.unwrap();
    assert_eq!(stored.len(), 1);
    let checkpoints = vec![redoubt_proto::Signed::from_bytes(&stored[0]).unwrap()];
    let verified =
        redoubt_proto::verify_audit_log(&entries, &checkpoints, &key.verifying_key(), &org).unwrap();
    assert_eq!(verified.signed_through, 3);
    assert_eq!(store.audit_entries(2, 1).await.unwrap()[0].seq, 3);
    assert!(store.audit_checkpoints(3, 4).await.unwrap().is_empty());
}

pub async fn history_transfers_are_claimed_sent_and_received(store: &impl Store) {
    use redoubt_proto::HistoryState;
    // Alice's second device joined while she had one: it waits; her first and Bob's
    // only device wait for nothing.
    two_users_three_devices(store).await;
    let alice = UserName::parse("alice").unwrap();
    let waiting = HistoryRecord {
        device: dev(2),
        user: alice.clone(),
        state: HistoryState::Waiting,
        source: None,
        group: None,
        claimed_at_unix_s: None,
        sent_at_unix_s: None,
        received_at_unix_s: None,
        messages: 0,
    };
    assert_eq!(
        store.history_records(Some(&alice)).await.unwrap(),
        vec![waiting.clone()]
    );
    assert!(
        store
            .history_records(Some(&UserName::parse("bob").unwrap()))
            .await
            .unwrap()
            .is_empty()
    );

    // A third device of Alice's, which waits too and may take a lapsed job over.
    store
        .create_activation_code(&code(4, "alice", 2_000))
        .await
        .unwrap();
    store
        .redeem_activation_code(
            &ActivationCodeId::from([4; 8]),
            1_100,
            &device(4, "alice", 4),
            &audit(),
        )
        .await
        .unwrap();
    let waiting_devices: Vec<DeviceId> = store
        .history_records(Some(&alice))
        .await
        .unwrap()
        .iter()
        .map(|r| r.device)
        .collect();
    assert_eq!(waiting_devices, vec![dev(2), dev(4)]);

    for id in [1, 2, 3, 4] {
        store.create_group(&group(id), &dev(1)).await.unwrap();
    }
    let transfer = |group: u8, source: u8, target: u8| TransferGroupRecord {
        group: GroupId::from([group; 32]),
        target: dev(target),
        source: dev(source),
        created_at_unix_s: 1_300,
    };
    let claim = |at: i64| {
        Some(Claim {
            at_unix_s: at,
            lapsed_before_unix_s: at - 300,
        })
    };
    // Bob's device waits for no history of its own.
    let refused = store.begin_history(&transfer(1, 1, 3), claim(1_300)).await;
    assert!(matches!(refused, Err(BeginError::NotWaiting)), "{refused:?}");
    assert_eq!(store.transfer_group(&GroupId::from([1; 32])).await.unwrap(), None);

    assert_eq!(
        store
            .begin_history(&transfer(1, 1, 2), claim(1_300))
            .await
            .unwrap(),
        None
    );
    let record = &store.history_records(Some(&alice)).await.unwrap()[0];
    assert_eq!(record.state, HistoryState::Sending);
    assert_eq!(
        (record.source, record.group),
        (Some(dev(1)), Some(GroupId::from([1; 32])))
    );
    assert_eq!(
        store.transfer_group(&GroupId::from([1; 32])).await.unwrap(),
        Some(transfer(1, 1, 2))
    );
    // Another device may not take a fresh claim over, but may take a lapsed one; the
    // group it replaces is returned so its blobs can go.
    let busy = store.begin_history(&transfer(2, 4, 2), claim(1_400)).await;
    assert!(matches!(busy, Err(BeginError::Busy)), "{busy:?}");
    assert_eq!(
        store
            .begin_history(&transfer(2, 4, 2), claim(1_700))
            .await
            .unwrap(),
        Some(GroupId::from([1; 32]))
    );
    // The first source restarts: a claim that is no longer its own is busy for it.
    let busy = store.begin_history(&transfer(3, 1, 2), claim(1_701)).await;
    assert!(matches!(busy, Err(BeginError::Busy)), "{busy:?}");
    let stale = store.history_sent(&dev(2), &dev(1), 5, 1_702).await;
    assert!(matches!(stale, Err(StoreError::NotFound(_))), "{stale:?}");

    store.history_sent(&dev(2), &dev(4), 42, 1_710).await.unwrap();
    let record = &store.history_records(Some(&alice)).await.unwrap()[0];
    assert_eq!(
        (record.state, record.messages, record.sent_at_unix_s),
        (HistoryState::Sent, 42, Some(1_710))
    );
    let late = store.begin_history(&transfer(3, 1, 2), claim(1_720)).await;
    assert!(matches!(late, Err(BeginError::NotWaiting)), "{late:?}");

    // A transfer to someone else (a conversation sharing its history) registers its group
    // without a claim.
    store.begin_history(&transfer(4, 1, 3), None).await.unwrap();
    assert_eq!(
        store.history_records(Some(&alice)).await.unwrap()[0].state,
        HistoryState::Sent
    );

    // Only the transfer's target may confirm it; Bob's confirmation of his transfer leaves
    // Alice's record alone.
    let wrong = store
        .history_received(&GroupId::from([2; 32]), &dev(1), 1_800)
        .await;
    assert!(matches!(wrong, Err(StoreError::NotFound(_))), "{wrong:?}");
    store
        .history_received(&GroupId::from([4; 32]), &dev(3), 1_800)
        .await
        .unwrap();
    assert_eq!(
        store.history_records(Some(&alice)).await.unwrap()[0].state,
        HistoryState::Sent
    );
    store
        .history_received(&GroupId::from([2; 32]), &dev(2), 1_800)
        .await
        .unwrap();
    let record = &store.history_records(Some(&alice)).await.unwrap()[0];
    assert_eq!(
        (record.state, record.received_at_unix_s),
        (HistoryState::Received, Some(1_800))
    );

    let blob = BlobRecord {
        id: redoubt_proto::BlobId::from([9; 16]),
        group: GroupId::from([2; 32]),
        uploader: dev(3),
        bytes_total: 10,
        chunk_count: 1,
        complete: true,
        created_at_unix_s: 1_400,
    };
    store.create_blob(&blob).await.unwrap();
    assert_eq!(
        store.group_blobs(&GroupId::from([2; 32])).await.unwrap(),
        vec![blob.id]
    );
    assert!(
        store
            .group_blobs(&GroupId::from([1; 32]))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn blob_chunks_are_replaced_read_and_deleted_with_their_blob(store: &impl Store) {
    two_users_three_devices(store).await;
    store.create_group(&group(1), &dev(1)).await.unwrap();
    let id = redoubt_proto::BlobId::from([6; 16]);
    let missing = store.put_blob_chunk(&id, 0, b"x").await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");
    let blob = BlobRecord {
        id,
        group: GroupId::from([1; 32]),
        uploader: dev(1),
        bytes_total: 70_000,
        chunk_count: 2,
        complete: false,
        created_at_unix_s: 1_400,
    };
    store.create_blob(&blob).await.unwrap();
    let big = vec![0xA5; 65_536];
    store.put_blob_chunk(&id, 0, b"first try").await.unwrap();
    store.put_blob_chunk(&id, 0, &big).await.unwrap();
    store.put_blob_chunk(&id, 1, b"tail").await.unwrap();
    assert_eq!(store.blob_chunk(&id, 0).await.unwrap(), Some(big));
    assert_eq!(
        store.blob_chunk(&id, 1).await.unwrap().as_deref(),
        Some(&b"tail"[..])
    );
    assert_eq!(store.blob_chunk(&id, 2).await.unwrap(), None);
    store.delete_blob(&id).await.unwrap();
    assert_eq!(store.blob_chunk(&id, 0).await.unwrap(), None);
    // A new blob under the same id starts empty.
    store.create_blob(&blob).await.unwrap();
    assert_eq!(store.blob_chunk(&id, 1).await.unwrap(), None);
}

pub async fn nodes_heartbeat_and_are_forgotten(store: &impl Store) {
    use crate::NodeRecord;
    let node = |id: &str, at: i64| NodeRecord {
        id: id.to_owned(),
        public_address: format!("{id}.corp.test:8443"),
        sessions: 3,
        started_at_unix_s: 100,
        heartbeat_at_unix_s: at,
        stopped: false,
    };
    assert!(store.nodes(0).await.unwrap().is_empty());
    store.node_heartbeat(&node("b", 200)).await.unwrap();
    store.node_heartbeat(&node("a", 150)).await.unwrap();
    let mut newer = node("b", 260);
    newer.sessions = 19_000;
    newer.stopped = true;
    store.node_heartbeat(&newer).await.unwrap();
    assert_eq!(store.nodes(0).await.unwrap(), vec![node("a", 150), newer.clone()]);
    // A node silent since before the limit is dropped from the table.
    assert_eq!(store.nodes(200).await.unwrap(), vec![newer]);
    assert_eq!(store.nodes(0).await.unwrap().len(), 1);
}

pub async fn leases_have_one_holder_and_growing_tokens(store: &impl Store) {
    let first = store
        .acquire_lease("mail", "node-a", 1_000, 500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.expires_at_ms, 1_500);
    // Held: another node is refused, the holder renews under the same token.
    assert_eq!(
        store.acquire_lease("mail", "node-b", 1_200, 500).await.unwrap(),
        None
    );
    let renewed = store
        .acquire_lease("mail", "node-a", 1_300, 500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((renewed.token, renewed.expires_at_ms), (first.token, 1_800));
    assert!(store.lease_is_current("mail", first.token).await.unwrap());
    // Lapsed: another node takes it with a greater token, and the old one is stale.
    let taken = store
        .acquire_lease("mail", "node-b", 1_800, 500)
        .await
        .unwrap()
        .unwrap();
    assert!(taken.token > first.token);
    assert!(!store.lease_is_current("mail", first.token).await.unwrap());
    assert!(store.lease_is_current("mail", taken.token).await.unwrap());
    // The former holder coming back is a new holder too.
    assert_eq!(
        store.acquire_lease("mail", "node-a", 2_000, 500).await.unwrap(),
        None
    );
    let back = store
        .acquire_lease("mail", "node-a", 2_300, 500)
        .await
        .unwrap()
        .unwrap();
    assert!(back.token > taken.token);
    // Leases are independent, and a lease never taken has no current token.
    assert!(
        store
            .acquire_lease("other", "node-b", 2_300, 500)
            .await
            .unwrap()
            .is_some()
    );
    assert!(!store.lease_is_current("unknown", 1).await.unwrap());
    // Of many asking at once, exactly one wins.
    let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    let attempts = names
        .iter()
        .map(|name| async move { store.acquire_lease("race", name, 5_000, 500).await.unwrap() })
        .collect();
    let results = futures_join_all(attempts).await;
    assert_eq!(results.iter().filter(|r| r.is_some()).count(), 1);
}

pub async fn disabled_users_get_no_codes_and_groups_are_deleted(store: &impl Store) {
    let alice = UserName::parse("alice").unwrap();
    store
        .create_user(&user("alice"), &code(1, "alice", 9_000))
        .await
        .unwrap();
    let disable = Change::SetUserDisabled {
        user: alice.clone(),
        at_unix_s: Some(1_500),
    };
    store.apply(&[disable], &[audit()]).await.unwrap();
    assert_eq!(
        store.user(&alice).await.unwrap().unwrap().disabled_at_unix_s,
        Some(1_500)
    );
    // Its active code is voided, and no code can be added, neither directly nor by apply.
    let voided = store
        .redeem_activation_code(
            &ActivationCodeId::from([1; 8]),
            1_600,
            &device(7, "alice", 1),
            &audit(),
        )
        .await;
    assert!(matches!(voided, Err(RedeemError::Voided)), "{voided:?}");
    let refused = store.create_activation_code(&code(2, "alice", 9_000)).await;
    assert!(
        matches!(refused, Err(StoreError::Disabled("user"))),
        "{refused:?}"
    );
    let (head_before, _) = store.audit_head().await.unwrap();
    let refused = store
        .apply(
            &[Change::CreateActivationCode(code(3, "alice", 9_000))],
            &[audit()],
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Disabled("user"))),
        "{refused:?}"
    );
    assert_eq!(
        store.audit_head().await.unwrap().0,
        head_before,
        "nothing audited"
    );
    let missing = Change::SetUserDisabled {
        user: UserName::parse("nobody").unwrap(),
        at_unix_s: Some(1),
    };
    assert!(matches!(
        store.apply(&[missing], &[audit()]).await,
        Err(StoreError::NotFound("user"))
    ));

    // Enabled again: a new code is accepted and redeemed; the display name changes.
    let enable = Change::SetUserDisabled {
        user: alice.clone(),
        at_unix_s: None,
    };
    let rename = Change::SetDisplayName {
        user: alice.clone(),
        display_name: Some(DisplayName::parse("Alice Liddell").unwrap()),
    };
    store.apply(&[enable, rename], &[audit()]).await.unwrap();
    let record = store.user(&alice).await.unwrap().unwrap();
    assert_eq!(record.disabled_at_unix_s, None);
    assert_eq!(record.display_name.unwrap().as_str(), "Alice Liddell");
    store
        .create_activation_code(&code(4, "alice", 9_000))
        .await
        .unwrap();
    store
        .redeem_activation_code(
            &ActivationCodeId::from([4; 8]),
            1_700,
            &device(8, "alice", 2),
            &audit(),
        )
        .await
        .unwrap();

    // Disabling revokes, in the same transaction, every device of the user; disabling
    // again keeps the first time and revokes only what is left.
    let disable = |at| Change::SetUserDisabled {
        user: alice.clone(),
        at_unix_s: Some(at),
    };
    let applied = store.apply(&[disable(1_800)], &[audit()]).await.unwrap();
    assert_eq!(applied.revoked_devices, [DeviceId::from([8; 16])]);
    let revoked = store.device(&DeviceId::from([8; 16])).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at_unix_s, Some(1_800));
    let applied = store.apply(&[disable(1_900)], &[audit()]).await.unwrap();
    assert!(applied.revoked_devices.is_empty());
    assert_eq!(
        store.user(&alice).await.unwrap().unwrap().disabled_at_unix_s,
        Some(1_800)
    );
    let enable = Change::SetUserDisabled {
        user: alice.clone(),
        at_unix_s: None,
    };
    store.apply(&[enable], &[audit()]).await.unwrap();

    // A deleted group takes its members and its policy with it.
    let group = GroupName::parse("finance").unwrap();
    let settings = PolicySettings {
        passcode_required: Some(true),
        ..PolicySettings::default()
    };
    store
        .apply(
            &[
                Change::CreateGroup {
                    group: group.clone(),
                    at_unix_s: 1_000,
                },
                Change::SetGroupMember {
                    group: group.clone(),
                    user: alice.clone(),
                    member: true,
                },
                Change::SetPolicy {
                    scope: PolicyScope::Group(group.clone()),
                    settings,
                    at_unix_s: 1_000,
                },
            ],
            &[audit()],
        )
        .await
        .unwrap();
    store
        .apply(&[Change::DeleteGroup { group: group.clone() }], &[audit()])
        .await
        .unwrap();
    assert!(store.directory_groups().await.unwrap().is_empty());
    assert!(store.user_groups(&alice).await.unwrap().is_empty());
    assert!(store.policies().await.unwrap().is_empty());
    assert!(matches!(
        store.apply(&[Change::DeleteGroup { group }], &[audit()]).await,
        Err(StoreError::NotFound("group"))
    ));
}
