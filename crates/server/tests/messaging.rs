#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! End-to-end encrypted messaging through a real server: MLS between real device clients.

mod support;

use redoubt_client::Messenger;
use redoubt_proto::*;
use support::{TestServer, contains, enroll, messengers, texts, user, walk};

#[tokio::test]
async fn group_chat_three_users_five_devices_with_offline_catch_up() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(
        &server,
        profiles.path(),
        &[
            ("alice", "alice-1"),
            ("alice", "alice-2"),
            ("bob", "bob-1"),
            ("bob", "bob-2"),
            ("carol", "carol-1"),
        ],
    )
    .await;

    let ops = d[0]
        .create_conversation("ops", &[user("bob"), user("carol")], false)
        .await
        .unwrap();
    assert_eq!(
        d[0].members(&ops).unwrap().len(),
        5,
        "every device of every member, and alice's other device"
    );
    for m in d.iter_mut().skip(1) {
        let report = m.sync().await.unwrap();
        assert_eq!((report.joined, report.failures), (1, 0));
        assert!(
            m.conversation("ops").unwrap().is_some(),
            "the group's name arrives encrypted"
        );
    }

    // bob-2 goes offline (index 3) while the others talk.
    let script = [
        (0, "alice: morning"),
        (2, "bob: hi all"),
        (4, "carol: hello"),
        (1, "alice from laptop"),
        (0, "alice: agenda"),
    ];
    for (sender, text) in script {
        for (i, m) in d.iter_mut().enumerate() {
            if i != 3 && i != sender {
                m.sync().await.unwrap();
            }
        }
        d[sender].send_text("ops", text).await.unwrap();
    }
    for (i, m) in d.iter_mut().enumerate() {
        if i != 3 {
            m.sync().await.unwrap();
        }
    }
    // bob-2 comes back and catches up from its cursor.
    let report = d[3].sync().await.unwrap();
    assert_eq!((report.messages, report.failures), (5, 0));

    // Every device has every message exactly once, in the server's order, attributed to the
    // sending user as certified by the organisation.
    let senders = ["alice", "alice", "bob", "bob", "carol"];
    let expected: Vec<(String, String)> = script
        .iter()
        .map(|(sender, text)| (senders[*sender].to_owned(), (*text).to_owned()))
        .collect();
    let reference = texts(&d[0], "ops");
    for (i, m) in d.iter().enumerate() {
        let got = texts(m, "ops");
        assert_eq!(got, reference, "device {i} differs");
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "in order, once each: {seqs:?}"
        );
        let got: Vec<(String, String)> = got.into_iter().map(|(_, user, text)| (user, text)).collect();
        assert_eq!(got, expected, "device {i}");
    }
    // Sender users are attributed from certificates: "alice from laptop" came from alice-2.
    assert!(
        reference
            .iter()
            .any(|(_, who, text)| who == "alice" && text == "alice from laptop")
    );
}

#[tokio::test]
async fn direct_conversation_is_created_on_first_send() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &[("alice", "a"), ("bob", "b")]).await;
    d[0].send_text("bob", "hello bob").await.unwrap();
    d[1].sync().await.unwrap();
    assert_eq!(
        texts(&d[1], "alice")
            .iter()
            .map(|t| t.2.clone())
            .collect::<Vec<_>>(),
        vec!["hello bob"]
    );
    d[1].send_text("alice", "hello alice").await.unwrap();
    d[0].sync().await.unwrap();
    let conversation = d[0].conversation("bob").unwrap().unwrap();
    assert_eq!(conversation.peer, Some(user("bob")));
    assert_eq!(texts(&d[0], "bob").len(), 2);
    // The same conversation is reused for the next message.
    d[0].send_text("bob", "again").await.unwrap();
    assert_eq!(d[0].conversations().unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_commits_one_wins_the_other_retries_and_all_agree() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(
        &server,
        profiles.path(),
        &[("alice", "a"), ("bob", "b"), ("carol", "c")],
    )
    .await;
    d[0].create_conversation("race", &[user("bob"), user("carol")], false)
        .await
        .unwrap();
    for m in d.iter_mut() {
        m.sync().await.unwrap();
    }
    let rounds = 6;
    for round in 0..rounds {
        let (first, rest) = d.split_at_mut(1);
        let a = first[0].conversation("race").unwrap().unwrap();
        let b = rest[0].conversation("race").unwrap().unwrap();
        let (ra, rb) = tokio::join!(first[0].update_keys(&a), rest[0].update_keys(&b));
        let (sa, sb) = (ra.unwrap(), rb.unwrap());
        assert_ne!(sa, sb, "round {round}: both commits were appended, in some order");
        let text = format!("after round {round}");
        d[2].sync().await.unwrap();
        d[2].send_text("race", &text).await.unwrap();
    }
    for m in d.iter_mut() {
        m.sync().await.unwrap();
    }
    let epochs: Vec<u64> = d
        .iter()
        .map(|m| m.epoch(&m.conversation("race").unwrap().unwrap()).unwrap())
        .collect();
    assert!(
        epochs.iter().all(|e| *e == epochs[0]),
        "epochs differ: {epochs:?}"
    );
    assert!(
        epochs[0] > 2 * rounds as u64,
        "every update landed: epoch {}",
        epochs[0]
    );
    for (i, m) in d.iter().enumerate() {
        let got = texts(m, "race");
        assert_eq!(got.len(), rounds, "device {i} is missing messages: {got:?}");
    }
}

#[tokio::test]
async fn non_members_cannot_read_and_removed_devices_cannot_decrypt_later_messages() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(
        &server,
        profiles.path(),
        &[("alice", "a"), ("bob", "b"), ("mallory", "m")],
    )
    .await;
    let group = d[0]
        .create_conversation("secret", &[user("bob")], false)
        .await
        .unwrap();
    d[1].sync().await.unwrap();
    d[0].send_text("secret", "before removal").await.unwrap();

    // Mallory's device is not a member: the server refuses to show it the log or take its messages.
    let fetch = Request::GroupFetch {
        group_id: group.group_id,
        after_seq: 0,
        limit: 10,
    };
    let error = d[2].session().connection().call(fetch).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NotAMember), "{error}");

    // Bob is removed; he processes his removal and cannot read what follows.
    d[0].remove_user(&group, &user("bob")).await.unwrap();
    d[0].send_text("secret", "after removal").await.unwrap();
    d[1].sync().await.unwrap();
    let bobs = d[1].conversations().unwrap();
    assert!(bobs[0].removed, "bob's device knows it was removed");
    let bob_texts: Vec<String> = d[1]
        .messages(&bobs[0])
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(bob_texts, vec!["before removal"]);
    // And the server no longer lets his device read the entries after its removal.
    let fetch = Request::GroupFetch {
        group_id: group.group_id,
        after_seq: 0,
        limit: 100,
    };
    match d[1].session().connection().call(fetch).await.unwrap() {
        Response::GroupEntries { entries, .. } => {
            let removal = entries.last().unwrap().seq;
            assert!(entries.iter().all(|e| e.seq <= removal));
            let all = d[0]
                .session()
                .connection()
                .call(Request::GroupFetch {
                    group_id: group.group_id,
                    after_seq: 0,
                    limit: 100,
                })
                .await
                .unwrap();
            let Response::GroupEntries { entries: all, .. } = all else {
                panic!()
            };
            assert!(
                all.len() > entries.len(),
                "later entries are withheld from the removed device"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn nothing_readable_at_rest_on_the_server() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &[("alice", "a"), ("bob", "b")]).await;
    let canary = "CANARY-7f3a9-the-eagle-lands-at-dawn";
    d[0].send_text("bob", canary).await.unwrap();
    d[1].sync().await.unwrap();
    assert_eq!(
        texts(&d[1], "alice")[0].2,
        canary,
        "the message itself was delivered"
    );
    // A file with a canary in it, too: the blob on the server must be ciphertext.
    let file_canary = b"CANARY-FILE-91c2-plans-for-the-merger";
    let mut content = vec![b'.'; 40_000];
    content[20_000..20_000 + file_canary.len()].copy_from_slice(file_canary);
    let source = profiles.path().join("merger.txt");
    std::fs::write(&source, &content).unwrap();
    d[0].send_file("bob", &source, |_, _| {}).await.unwrap();
    d[1].sync().await.unwrap();
    let (dir, _) = server.stop().await;

    let mut keys = Vec::new();
    for device in ["a", "b", "admin-laptop"] {
        let profile = redoubt_client::Profile::load(&profiles.path().join(device), None).unwrap();
        keys.push(profile.device_key_seed_for_tests().to_vec());
    }
    let mut scanned = 0;
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        scanned += bytes.len();
        assert!(
            !contains(&bytes, file_canary),
            "file canary found in {}",
            entry.display()
        );
        assert!(
            !contains(&bytes, canary.as_bytes()),
            "canary found in {}",
            entry.display()
        );
        for key in &keys {
            assert!(
                !contains(&bytes, key),
                "a device private key found in {}",
                entry.display()
            );
        }
    }
    assert!(scanned > 10_000, "scanned only {scanned} bytes");
}

#[tokio::test]
async fn server_refuses_plaintext_application_data_and_foreign_groups() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &[("alice", "a")]).await;
    let group = d[0].create_conversation("solo", &[], false).await.unwrap();
    let bogus = GroupSubmit {
        group_id: group.group_id,
        client_message_id: Bytes([1; 16]),
        message: vec![0, 1, 2],
        welcome: None,
    };
    let error = d[0]
        .session()
        .connection()
        .call(Request::GroupSubmit(bogus))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidMlsMessage));
    let unknown = GroupSubmit {
        group_id: GroupId::from([9; 32]),
        client_message_id: Bytes([2; 16]),
        message: vec![],
        welcome: None,
    };
    let error = d[0]
        .session()
        .connection()
        .call(Request::GroupSubmit(unknown))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NotAMember));
}

#[tokio::test]
async fn a_users_new_device_joins_their_conversations_automatically() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &[("alice", "a"), ("bob", "b")]).await;
    d[0].create_conversation("team", &[user("bob")], false)
        .await
        .unwrap();
    d[1].sync().await.unwrap();
    d[0].send_text("team", "before the new phone").await.unwrap();

    // Bob enrols a second device; nobody touches the group.
    let mut admin = redoubt_client::Session::open(
        &redoubt_client::Profile::load(&profiles.path().join("admin-laptop"), None).unwrap(),
    )
    .await
    .unwrap();
    let issued = admin.admin_device_add(user("bob")).await.unwrap();
    let phone = enroll(profiles.path(), "b-phone", &issued.code).await;
    let mut bob_phone = Messenger::open(&phone).await.unwrap();

    // Any member's ordinary sync adds it (here Bob's first device), and it sees what follows.
    d[1].sync().await.unwrap();
    let report = bob_phone.sync().await.unwrap();
    assert_eq!(report.joined, 1);
    assert!(
        bob_phone.conversation("team").unwrap().is_some(),
        "the new device learns the conversation's name"
    );
    d[0].sync().await.unwrap();
    d[0].send_text("team", "after the new phone").await.unwrap();
    bob_phone.sync().await.unwrap();
    // What came before arrives as history from Bob's first device; what follows, live.
    let got: Vec<String> = texts(&bob_phone, "team").into_iter().map(|t| t.2).collect();
    assert_eq!(got, vec!["before the new phone", "after the new phone"]);
    let conversation = bob_phone.conversation("team").unwrap().unwrap();
    let history: Vec<bool> = bob_phone
        .messages(&conversation)
        .unwrap()
        .iter()
        .map(|m| m.history)
        .collect();
    assert_eq!(history, vec![true, false]);
    let conversation = d[0].conversation("team").unwrap().unwrap();
    let bobs = d[0]
        .members(&conversation)
        .unwrap()
        .into_iter()
        .filter(|m| m.user == user("bob"))
        .count();
    assert_eq!(bobs, 2);
}

#[tokio::test]
async fn the_organisation_as_external_sender_removes_a_device() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(
        &server,
        profiles.path(),
        &[("alice", "a"), ("bob", "b"), ("carol", "c")],
    )
    .await;
    let group = d[0]
        .create_conversation("board", &[user("bob"), user("carol")], false)
        .await
        .unwrap();
    for m in d.iter_mut() {
        m.sync().await.unwrap();
    }
    let carol_device = d[0]
        .members(&group)
        .unwrap()
        .into_iter()
        .find(|m| m.user == user("carol"))
        .unwrap()
        .device_id;

    // The server proposes the removal (signed with the organisation's key); it cannot commit.
    assert_eq!(
        server.handle.propose_device_removal(carol_device).await.unwrap(),
        1
    );
    // Alice's ordinary sync commits the proposal.
    d[0].sync().await.unwrap();
    let members: Vec<UserName> = d[0]
        .members(&group)
        .unwrap()
        .into_iter()
        .map(|m| m.user)
        .collect();
    assert_eq!(members, vec![user("alice"), user("bob")]);
    d[0].send_text("board", "carol is gone").await.unwrap();
    d[1].sync().await.unwrap();
    d[2].sync().await.unwrap();
    assert!(d[2].conversations().unwrap()[0].removed);
    assert!(texts(&d[1], "board").iter().any(|t| t.2 == "carol is gone"));
    assert!(
        d[2].messages(&d[2].conversations().unwrap()[0])
            .unwrap()
            .is_empty()
    );
    let epochs: Vec<u64> = d[..2]
        .iter()
        .map(|m| m.epoch(&m.conversation("board").unwrap().unwrap()).unwrap())
        .collect();
    assert_eq!(epochs[0], epochs[1]);
    // Nothing left to propose for a device in no group.
    assert_eq!(
        server.handle.propose_device_removal(carol_device).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn attachments_round_trip_and_tampering_is_detected() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(
        &server,
        profiles.path(),
        &[("alice", "a"), ("bob", "b"), ("eve", "e")],
    )
    .await;
    d[0].create_conversation("files", &[user("bob")], false)
        .await
        .unwrap();
    d[1].sync().await.unwrap();

    // Three and a bit chunks of a recognisable pattern, with a canary inside.
    let canary = b"CANARY-FILE-3b1f-do-not-store-in-clear";
    let mut content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    content[50_000..50_000 + canary.len()].copy_from_slice(canary);
    let source = profiles.path().join("report.bin");
    std::fs::write(&source, &content).unwrap();
    let mut progress = Vec::new();
    d[0].send_file("files", &source, |done, total| progress.push((done, total)))
        .await
        .unwrap();
    assert_eq!(progress.last(), Some(&(100_000, 100_000)));
    assert_eq!(progress.len(), 4, "one report per chunk");

    d[1].sync().await.unwrap();
    let conversation = d[1].conversation("files").unwrap().unwrap();
    let message = d[1]
        .messages(&conversation)
        .unwrap()
        .into_iter()
        .find(|m| m.attachment.is_some())
        .unwrap();
    assert_eq!(message.text, "[file] report.bin (100000 bytes)");
    let id = message.id(&conversation);
    let (_, found) = d[1].find_message(&id).unwrap().unwrap();
    let attachment = found.attachment.unwrap();
    let out = profiles.path().join("received.bin");
    d[1].fetch_attachment(&attachment, &out, |_, _| {}).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), content);

    // The server holds ciphertext only.
    let blob = server.data().join("blobs").join(attachment.blob_id.to_string());
    let stored = std::fs::read(&blob).unwrap();
    assert_eq!(stored.len(), 100_000 + 4 * 16);
    assert!(!stored.windows(canary.len()).any(|w| w == canary));

    // A non-member cannot fetch the blob.
    let fetch = Request::BlobFetch {
        blob_id: attachment.blob_id,
        index: 0,
    };
    let error = d[2].session().connection().call(fetch).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NotAMember));

    // A blob altered on the server is refused, and nothing is written.
    let mut tampered = stored.clone();
    tampered[40_000] ^= 0x40;
    std::fs::write(&blob, &tampered).unwrap();
    let out2 = profiles.path().join("tampered.bin");
    let error = d[1]
        .fetch_attachment(&attachment, &out2, |_, _| {})
        .await
        .unwrap_err();
    assert!(error.to_string().contains("tampered"), "{error}");
    assert!(!out2.exists() && !out2.with_extension("part").exists());
}

#[tokio::test]
async fn interrupted_uploads_leave_nothing_behind_and_limits_hold() {
    let server = TestServer::start_with_config("[limits]\nattachment_bytes_max = 100000\n").await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &[("alice", "a")]).await;
    let group = d[0].create_conversation("solo", &[], false).await.unwrap();
    let too_big = Request::BlobUploadStart {
        group_id: group.group_id,
        bytes_total: 200_000,
        chunk_count: 7,
    };
    let error = d[0].session().connection().call(too_big).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::LimitReached));

    // Start an upload, send one chunk, and drop the connection.
    let bytes_total = 2 * BLOB_CHUNK_BYTES as u64;
    let start = Request::BlobUploadStart {
        group_id: group.group_id,
        bytes_total,
        chunk_count: 2,
    };
    let Response::BlobUploadStarted { blob_id } = d[0].session().connection().call(start).await.unwrap()
    else {
        panic!()
    };
    let wrong = Request::BlobUploadChunk {
        blob_id,
        index: 1,
        bytes: vec![0; BLOB_CHUNK_BYTES],
    };
    assert_eq!(
        d[0].session().connection().call(wrong).await.unwrap_err().code(),
        Some(ErrorCode::InvalidArgument)
    );
    let chunk = Request::BlobUploadChunk {
        blob_id,
        index: 0,
        bytes: vec![0; BLOB_CHUNK_BYTES],
    };
    d[0].session().connection().call(chunk).await.unwrap();
    let early = Request::BlobUploadFinish { blob_id };
    assert_eq!(
        d[0].session().connection().call(early).await.unwrap_err().code(),
        Some(ErrorCode::InvalidArgument)
    );
    let blobs = server.data().join("blobs");
    assert_eq!(
        std::fs::read_dir(&blobs).unwrap().count(),
        1,
        "the partial upload exists while the session lives"
    );
    drop(d);
    // The session's end deletes the partial upload.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_dir(&blobs).unwrap().count() > 0 {
        assert!(std::time::Instant::now() < deadline, "partial upload not deleted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn delivery_and_read_receipts_are_end_to_end_encrypted_messages() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(
        &server,
        profiles.path(),
        &[("alice", "a"), ("bob", "b"), ("carol", "c")],
    )
    .await;
    d[0].create_conversation("news", &[user("bob"), user("carol")], false)
        .await
        .unwrap();
    for m in d.iter_mut() {
        m.sync().await.unwrap();
    }
    let (conversation, seq) = d[0].send_text("news", "did you get this?").await.unwrap();
    assert_eq!(
        d[0].receipts(&conversation, seq).unwrap(),
        redoubt_client::Receipts::default()
    );

    d[1].sync().await.unwrap(); // bob's device receives it and says so
    d[0].sync().await.unwrap();
    let receipts = d[0].receipts(&conversation, seq).unwrap();
    assert_eq!(
        receipts.delivered.iter().cloned().collect::<Vec<_>>(),
        vec![user("bob")]
    );
    assert!(receipts.read.is_empty());

    let bobs = d[1].conversation("news").unwrap().unwrap();
    d[1].mark_read(&bobs, seq).await.unwrap();
    d[2].sync().await.unwrap();
    d[0].sync().await.unwrap();
    let receipts = d[0].receipts(&conversation, seq).unwrap();
    assert_eq!(
        receipts.delivered.iter().cloned().collect::<Vec<_>>(),
        vec![user("bob"), user("carol")]
    );
    assert_eq!(
        receipts.read.iter().cloned().collect::<Vec<_>>(),
        vec![user("bob")]
    );
    // Receipts are not messages: nobody's conversation shows them.
    assert_eq!(texts(&d[2], "news").len(), 1);
}

#[tokio::test]
async fn messenger_reconnects_with_backoff_after_a_server_restart() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &[("alice", "a"), ("bob", "b")]).await;
    d[0].create_conversation("ops", &[user("bob")], false)
        .await
        .unwrap();
    d[1].sync().await.unwrap();

    let (dir, port) = server.stop().await;
    // The server comes back a little later on the same address.
    let restart = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        TestServer::start_in(dir, port).await
    });
    let mut waits = 0;
    d[0].reconnect(20, |_, _| waits += 1).await.unwrap();
    assert!(waits >= 1, "the first attempts failed and were retried");
    let server = restart.await.unwrap();
    d[0].send_text("ops", "back again").await.unwrap();
    d[1].reconnect(20, |_, _| {}).await.unwrap();
    d[1].sync().await.unwrap();
    let got: Vec<String> = texts(&d[1], "ops").into_iter().map(|t| t.2).collect();
    assert_eq!(got, vec!["back again"]);
    server.stop().await;
}

#[tokio::test]
async fn log_entries_are_deleted_once_every_member_device_has_read_them() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &[("alice", "a"), ("bob", "b")]).await;
    let group = d[0]
        .create_conversation("ops", &[user("bob")], false)
        .await
        .unwrap();
    d[0].send_text("ops", "one").await.unwrap();
    d[0].send_text("ops", "two").await.unwrap();
    // Bob has read nothing yet. He starts after the commit that added him, but that commit
    // stays too: it is after the group's stored state, which the server rebuilds by
    // replaying it.
    assert_eq!(server.handle.prune_logs().await.unwrap(), 0);
    d[1].sync().await.unwrap();
    d[0].sync().await.unwrap();
    let pruned = server.handle.prune_logs().await.unwrap();
    assert!(pruned >= 3, "the name and both messages go: {pruned}");
    // Messages keep flowing, and nobody lost anything.
    d[0].send_text("ops", "three").await.unwrap();
    d[1].sync().await.unwrap();
    let got: Vec<String> = texts(&d[1], "ops").into_iter().map(|t| t.2).collect();
    assert_eq!(got, vec!["one", "two", "three"]);
    let fetch = Request::GroupFetch {
        group_id: group.group_id,
        after_seq: 0,
        limit: 100,
    };
    let Response::GroupEntries { entries, .. } = d[0].session().connection().call(fetch).await.unwrap()
    else {
        panic!()
    };
    // Only entries not yet read by everyone remain, and the commit the server replays.
    assert!(entries.len() <= 4, "{} remain", entries.len());
}

#[tokio::test]
async fn device_state_files_are_private() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &[("alice", "a"), ("bob", "b")]).await;
    d[0].send_text("bob", "private").await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(profiles.path().join("a")).unwrap() {
        let path = entry.unwrap().path();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
    }
}

#[tokio::test]
async fn a_message_sent_across_a_server_restart_arrives_exactly_once() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &[("alice", "a"), ("bob", "b")]).await;
    d[0].create_conversation("ops", &[user("bob")], false)
        .await
        .unwrap();
    d[1].sync().await.unwrap();

    // The server goes away and comes back while Alice is sending: her client reconnects
    // with backoff and repeats its requests (the submission with the same client message id).
    let (dir, port) = server.stop().await;
    let restart = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        TestServer::start_in(dir, port).await
    });
    d[0].send_text("ops", "sent across a restart").await.unwrap();
    let server = restart.await.unwrap();
    d[1].reconnect(20, |_, _| {}).await.unwrap();
    d[1].sync().await.unwrap();
    let got: Vec<String> = texts(&d[1], "ops").into_iter().map(|t| t.2).collect();
    assert_eq!(got, vec!["sent across a restart"]);
    server.stop().await;
}

#[tokio::test]
async fn new_entries_reach_members_in_their_events_in_log_order() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &[("alice", "a"), ("bob", "b")]).await;
    let group = d[0]
        .create_conversation("team", &[user("bob")], false)
        .await
        .unwrap();
    d[1].sync().await.unwrap();
    let bob_device = d[1].session().info().device_id;
    let cursor = d[1].conversation_by_id(&group.group_id).unwrap().unwrap().cursor;

    // Alice sends three; Bob's session gets their ciphertexts in events, in order, with
    // nothing to fetch: exactly the entries the log holds.
    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        sent.push(d[0].send_text("team", text).await.unwrap().1);
    }
    let mut pushed: Vec<GroupEntry> = Vec::new();
    while pushed.last().is_none_or(|e| e.seq < *sent.last().unwrap()) {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), d[1].session().next_event())
            .await
            .expect("an event within 10 s")
            .unwrap();
        match event {
            // (Entries Bob's sync already read may still be in his session's buffer.)
            Event::GroupEntries { group_id, entries } if group_id == group.group_id => {
                pushed.extend(entries.into_iter().filter(|e| e.seq > cursor))
            }
            Event::GroupAppended { group_id, seq } if group_id == group.group_id => {
                panic!("a notice for entry {seq} instead of the entry, with nothing held back")
            }
            _ => {}
        }
    }
    let seqs: Vec<u64> = pushed.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, ((cursor + 1)..=*sent.last().unwrap()).collect::<Vec<_>>());
    let log = d[1]
        .session()
        .connection()
        .call(Request::GroupFetch {
            group_id: group.group_id,
            after_seq: cursor,
            limit: 100,
        })
        .await
        .unwrap();
    let Response::GroupEntries { entries: logged, .. } = log else {
        panic!("{log:?}")
    };
    assert_eq!(pushed, logged, "the events carry the log's entries");
    assert!(pushed.iter().all(|e| e.sender != bob_device));

    // The device library applies what events carry: once Bob has read the three, his
    // messenger keeps what the next events bring (his own delivery receipt, then Alice's
    // fourth), and the sync that follows decrypts them from there.
    d[1].sync().await.unwrap();
    let (_, last) = d[0].send_text("team", "four").await.unwrap();
    loop {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), d[1].next_event())
            .await
            .expect("an event within 10 s")
            .unwrap();
        if event
            .appended()
            .is_some_and(|(g, seq)| g == group.group_id && seq >= last)
        {
            break;
        }
    }
    d[1].sync_one(&group.group_id).await.unwrap();
    let bobs: Vec<String> = texts(&d[1], "team").into_iter().map(|(_, _, t)| t).collect();
    assert_eq!(bobs, ["one", "two", "three", "four"]);
}

#[tokio::test]
async fn group_state_is_rebuilt_from_the_log_after_a_restart() {
    // The server stores a group's state with every 8th handshake and replays the ones after
    // it when it loads the group: a restart between (and across) stored states must leave
    // a group every member can keep committing to and messaging in.
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &[("alice", "a"), ("bob", "b")]).await;
    d[0].create_conversation("ops", &[user("bob")], false)
        .await
        .unwrap();
    d[1].sync().await.unwrap();
    let mut server = server;
    for (round, updates) in [3, 6, 1].into_iter().enumerate() {
        for i in 0..updates {
            let who = i % 2;
            d[who].sync().await.unwrap();
            let conversation = d[who].conversation("ops").unwrap().unwrap();
            d[who].update_keys(&conversation).await.unwrap();
        }
        let (dir, port) = server.stop().await;
        server = TestServer::start_in(dir, port).await;
        for m in d.iter_mut() {
            m.reconnect(20, |_, _| {}).await.unwrap();
            m.sync().await.unwrap();
        }
        // The first commit after the restart is checked against the replayed state.
        let conversation = d[1].conversation("ops").unwrap().unwrap();
        d[1].update_keys(&conversation).await.unwrap();
        d[0].sync().await.unwrap();
        d[0].send_text("ops", &format!("after restart {round}"))
            .await
            .unwrap();
        d[1].sync().await.unwrap();
        let epochs: Vec<u64> = d
            .iter()
            .map(|m| m.epoch(&m.conversation("ops").unwrap().unwrap()).unwrap())
            .collect();
        assert_eq!(epochs[0], epochs[1], "round {round}");
    }
    let got: Vec<String> = texts(&d[1], "ops").into_iter().map(|t| t.2).collect();
    assert_eq!(got, vec!["after restart 0", "after restart 1", "after restart 2"]);
    server.stop().await;
}
