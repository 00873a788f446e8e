#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! `redoubt search` with the real binary and a real server: what a device received is
//! found in its own vault by word, prefix, conversation and sender, newest first, and
//! none of it is written anywhere in the clear.

mod support;

use serde_json::Value;
use support::{Org, all_files, contains, json_ok, run};

/// (conversation, message id, text) of each hit, in order.
fn hits(found: &Value) -> Vec<(String, String, String)> {
    found
        .as_array()
        .unwrap_or_else(|| panic!("search --json prints an array: {found}"))
        .iter()
        .map(|hit| {
            (
                hit["conversation"].as_str().unwrap().to_owned(),
                hit["message_id"].as_str().unwrap().to_owned(),
                hit["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn search_finds_what_the_device_received_and_nothing_else() {
    let root = tempfile::tempdir().unwrap();
    let mut org = Org::start(
        root.path(),
        "127.0.0.1:0",
        &[("alice", "alice-laptop"), ("bob", "bob-phone")],
    );
    let (alice, bob) = (org.profile("alice-laptop"), org.profile("bob-phone"));
    json_ok(
        &alice,
        &["group", "create", "ops", "--members", "bob", "--json"],
        &[],
    );
    let send = |to: &str, text: &str| {
        json_ok(&alice, &["send", to, text, "--json"], &[])["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let quarterly = send("bob", "The quarterly Zanzibar budget is ready");
    let lunch = send("bob", "lunch tomorrow?");
    // Times have one-second resolution: "newest first" below needs a later second.
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let review = send("ops", "Budgetary review moved to Friday");
    let file = root.path().join("roadmap-kumquat.pdf");
    std::fs::write(&file, b"%PDF- not really").unwrap();
    let attachment = json_ok(
        &alice,
        &["send", "ops", "--file", file.to_str().unwrap(), "--json"],
        &[],
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Bob's device receives them; from then on search needs nothing from the server.
    let out = run(&bob, &["read", "--json"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let search = |args: &[&str]| {
        let mut all = vec!["search"];
        all.extend_from_slice(args);
        all.push("--json");
        json_ok(&bob, &all, &[])
    };

    let found = search(&["zanzibar"]);
    assert_eq!(
        hits(&found),
        vec![(
            // Bob's device names the direct conversation after the other user.
            "alice".to_owned(),
            quarterly.clone(),
            "The quarterly Zanzibar budget is ready".to_owned()
        )]
    );
    let hit = &found[0];
    assert_eq!(hit["sender"], "alice");
    assert!(hit["sent_at_unix_s"].as_i64().unwrap() > 1_700_000_000);
    assert!(hit["attachment"].is_null());

    // A prefix, newest first, across conversations; then narrowed.
    let budg: Vec<String> = hits(&search(&["budg"])).into_iter().map(|h| h.1).collect();
    assert_eq!(budg, vec![review.clone(), quarterly.clone()]);
    let in_ops: Vec<String> = hits(&search(&["BUDG", "--conversation", "ops"]))
        .into_iter()
        .map(|h| h.1)
        .collect();
    assert_eq!(in_ops, vec![review.clone()]);
    assert_eq!(
        hits(&search(&["budget", "zanz"])).len(),
        1,
        "every word must match"
    );
    assert!(hits(&search(&["budget", "lunch"])).is_empty());
    assert_eq!(hits(&search(&["budg", "--from", "alice"])).len(), 2);
    assert!(hits(&search(&["budg", "--from", "bob"])).is_empty());
    assert_eq!(hits(&search(&["lunch", "--limit", "1"]))[0].1, lunch);
    assert_eq!(hits(&search(&["budg", "--limit", "1"])).len(), 1);

    // An attachment is found by its file name.
    let found = search(&["kumquat"]);
    assert_eq!(hits(&found).len(), 1);
    assert_eq!(found[0]["message_id"], attachment.as_str());
    assert_eq!(found[0]["attachment"]["name"], "roadmap-kumquat.pdf");

    // The sender's own device finds what it sent.
    let mine = json_ok(&alice, &["search", "friday", "--json"], &[]);
    assert_eq!(hits(&mine)[0].1, review);

    // Text output: conversation, sender, text and the id `fetch` takes.
    let out = run(&bob, &["search", "kumquat"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("ops · alice: [file] roadmap-kumquat.pdf"),
        "{text}"
    );
    assert!(text.contains(&format!("#{attachment}")), "{text}");
    let out = run(&bob, &["search", "nothingofthesort"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("No message found."));
    // An unknown conversation is an error that says so.
    let out = run(&bob, &["search", "budget", "--conversation", "nope"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no conversation called"));

    // Neither the words nor the file name are anywhere on disk in the clear: not in the
    // devices' vaults (index or messages), not in the server's data folder.
    drop(org.server.take());
    for dir in [&bob, &alice, &org.data] {
        for (path, bytes) in all_files(dir) {
            for canary in [&b"zanzibar"[..], b"Zanzibar", b"kumquat", b"quarterly"] {
                assert!(
                    !contains(&bytes, canary),
                    "{} holds {:?} in the clear",
                    path.display(),
                    String::from_utf8_lossy(canary)
                );
            }
        }
    }
}
