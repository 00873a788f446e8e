#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! A new device is a full member from its first minute, with the real `redoubt` binary:
//! reachable as soon as it is enrolled, added to its user's conversations by any member,
//! and given the user's history even when the sending device, the server and the new
//! device itself crash in the middle of the transfer.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use redoubt_client::{Messenger, Profile};
use redoubt_proto::UserName;
use serde_json::Value;
use support::*;

fn ok(profile: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    json_ok(profile, &args, &[])
}

/// Messages by conversation: (id, sender, text).
fn by_conversation(messages: &[Value]) -> BTreeMap<String, Vec<(String, String, String)>> {
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for m in messages {
        out.entry(m["conversation"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                m["id"].as_str().unwrap().to_owned(),
                m["sender"].as_str().unwrap().to_owned(),
                m["text"].as_str().unwrap().to_owned(),
            ));
    }
    out
}

#[test]
fn enrolled_devices_are_reachable_at_once_and_join_conversations_without_running_anything() {
    let root = tempfile::tempdir().unwrap();
    let org = Org::start(
        root.path(),
        "127.0.0.1:0",
        &[("alice", "laptop"), ("bob", "phone")],
    );
    let (laptop, phone) = (org.profile("laptop"), org.profile("phone"));
    // Bob enrolled a moment ago and has run nothing since: a direct message and a group
    // invitation reach him.
    ok(&laptop, &["send", "bob", "hello right after you enrolled"]);
    ok(&laptop, &["group", "create", "ops", "--members", "bob"]);
    let seen = by_conversation(&read_messages(&phone));
    assert_eq!(seen["alice"][0].2, "hello right after you enrolled");
    let groups = ok(&phone, &["group", "list"]);
    assert!(
        groups
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["conversation"] == "ops"),
        "{groups}"
    );

    // Alice enrols a tablet while her laptop is off; Bob's next sync adds it everywhere.
    let tablet = org.enroll_device("alice", "tablet");
    read_messages(&phone);
    for group in ["ops", "alice"] {
        let members = ok(&phone, &["group", "members", group]);
        let names: Vec<&str> = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["device_name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"tablet"), "{group}: {names:?}");
    }
    ok(&phone, &["send", "ops", "for every device of alice"]);
    let on_tablet = by_conversation(&read_messages(&tablet));
    assert!(
        on_tablet["ops"]
            .iter()
            .any(|m| m.2 == "for every device of alice"),
        "{on_tablet:?}"
    );
}

#[test]
fn history_reaches_a_new_device_exactly_once_through_crashes_of_sender_server_and_receiver() {
    let root = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut org = Org::start(root.path(), &listen, &[("alice", "laptop"), ("bob", "phone")]);
    let (laptop, phone) = (org.profile("laptop"), org.profile("phone"));
    // History to transfer: 300 messages in two conversations, and a file.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut alice = Messenger::open(&Profile::load(&laptop, None).unwrap())
            .await
            .unwrap();
        let mut bob = Messenger::open(&Profile::load(&phone, None).unwrap())
            .await
            .unwrap();
        alice
            .create_conversation("ops", &[UserName::parse("bob").unwrap()], false)
            .await
            .unwrap();
        bob.sync().await.unwrap();
        for i in 0..150 {
            alice
                .send_text(if i % 2 == 0 { "ops" } else { "bob" }, &format!("from alice {i}"))
                .await
                .unwrap();
            bob.send_text(if i % 2 == 0 { "ops" } else { "alice" }, &format!("from bob {i}"))
                .await
                .unwrap();
        }
        alice.sync().await.unwrap();
        bob.sync().await.unwrap();
    });
    let file = write(root.path(), "plan.txt", "the plan, in full\n");
    ok(&laptop, &["send", "ops", "--file", file.to_str().unwrap()]);
    let expected = by_conversation(&read_messages(&laptop));
    assert_eq!(expected.values().map(Vec::len).sum::<usize>(), 301);

    let tablet = org.enroll_device("alice", "tablet");
    // 1. The laptop's process dies after uploading the history, before sending its key.
    let crashed = run(
        &laptop,
        &["read"],
        &[("REDOUBT_TEST_CRASH_AT", "history.before-offer")],
    );
    assert!(
        !crashed.status.success(),
        "the laptop was to crash: {}",
        String::from_utf8_lossy(&crashed.stderr)
    );
    // 2. The server dies as the laptop's next attempt stores a history blob; it restarts.
    org.server.take().unwrap().kill();
    let doomed = ServerProcess::start_with_env(
        &org.data,
        &listen,
        &[("REDOUBT_TEST_CRASH_AT", "server.history-blob-stored")],
    );
    wait_until_listening(&listen);
    let attempt = {
        let laptop = laptop.clone();
        std::thread::spawn(move || run(&laptop, &["read"], &[]))
    };
    doomed.wait_for_exit(Duration::from_secs(60));
    org.server = Some(ServerProcess::start_on(&org.data, &listen));
    wait_until_listening(&listen);
    let _ = attempt.join().unwrap();
    // 3. The laptop finishes the job; the tablet dies after storing the history, before
    //    telling the server; then it runs again.
    read_messages(&laptop);
    let crashed = run(
        &tablet,
        &["read"],
        &[("REDOUBT_TEST_CRASH_AT", "history.after-part")],
    );
    assert!(!crashed.status.success(), "the tablet was to crash");
    let messages = read_messages(&tablet);

    let got = by_conversation(&messages);
    assert_eq!(
        got, expected,
        "every message exactly once, in order, with its sender"
    );
    assert!(
        messages.iter().all(|m| m["history"] == true),
        "all marked as history"
    );
    let fetched = root.path().join("fetched-plan.txt");
    let plan = expected["ops"].iter().find(|m| m.2.contains("plan.txt")).unwrap();
    ok(&tablet, &["fetch", &plan.0, "--out", fetched.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&fetched).unwrap(), "the plan, in full\n");

    let devices = ok(&laptop, &["device", "list"]);
    let row = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "tablet")
        .unwrap();
    assert_eq!(row["history"]["state"], "received", "{row}");
    assert_eq!(row["history"]["messages"], 301, "{row}");
    // The transfers' blobs are gone; the file's stays.
    let blobs = std::fs::read_dir(org.data.join("blobs")).unwrap().count();
    assert_eq!(blobs, 1);
    // Nothing of the history is readable on the server.
    for (path, bytes) in all_files(&org.data) {
        assert!(!contains(&bytes, b"from alice 149"), "{}", path.display());
        assert!(!contains(&bytes, b"plan.txt"), "{}", path.display());
    }
}
