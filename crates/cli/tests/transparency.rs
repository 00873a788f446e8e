#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Key transparency end to end: a real server process and the real `redoubt` binary on
//! 127.0.0.1. New devices are logged before others accept them; a device notices devices
//! added to its account; safety numbers agree on both sides and move with device sets; an
//! outside auditor verifies every epoch from the public endpoint and fails, naming the
//! epoch, when the store is tampered with.

mod support;

use std::path::Path;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use redoubt_proto::{ActivationCode, Bytes, EpochHead, Signed};
use serde_json::Value;
use support::{Org, eventually, json_ok, run};

fn notices(profile: &Path) -> Vec<Value> {
    json_ok(profile, &["security", "--json"], &[])["notices"]
        .as_array()
        .unwrap()
        .clone()
}

fn safety_number(profile: &Path, peer: &str) -> String {
    let answer = json_ok(profile, &["verify", peer, "--json"], &[]);
    answer["safety_number"].as_str().unwrap().to_owned()
}

/// The server's address and certificate pin, read from the first admin's activation code.
fn server_and_pin(org: &Org) -> (String, String) {
    let code = std::fs::read_to_string(org.data.join("admin-activation.txt")).unwrap_or_default();
    let code = if code.trim().is_empty() {
        // Used up: any code carries the same server and pin.
        org.admin(&["admin", "user", "add", "pin-reader", "--json", "--no-qr"])["code"]
            .as_str()
            .unwrap()
            .to_owned()
    } else {
        code
    };
    let code = ActivationCode::parse(code.trim()).unwrap();
    (
        code.server.to_string(),
        data_encoding::HEXLOWER.encode(&code.pin.0),
    )
}

fn audit(org: &Org, state: &Path) -> std::process::Output {
    let (server, pin) = server_and_pin(org);
    run(
        &org.root.join("unused-profile"),
        &[
            "kt",
            "audit",
            "--server",
            &server,
            "--pin",
            &pin,
            "--state",
            state.to_str().unwrap(),
            "--json",
        ],
        &[],
    )
}

#[test]
fn devices_are_logged_noticed_verified_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let org = Org::start(
        dir.path(),
        &listen,
        &[
            ("alice", "alice-laptop"),
            ("bob", "bob-phone"),
            ("carol", "carol-phone"),
            ("dave", "dave-phone"),
        ],
    );
    let (alice, bob) = (org.profile("alice-laptop"), org.profile("bob-phone"));

    // Messaging works with every member proven logged.
    json_ok(
        &alice,
        &["send", "bob", "hello through the key directory", "--json"],
        &[],
    );
    let read = run(&bob, &["read", "alice", "--json"], &[]);
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    assert!(String::from_utf8_lossy(&read.stdout).contains("hello through the key directory"));

    // Nothing unexpected yet on either side.
    assert_eq!(notices(&alice), Vec::<Value>::new());
    assert_eq!(notices(&bob), Vec::<Value>::new());

    // Safety numbers: 60 digits in 12 groups, the same on both sides.
    let number = safety_number(&alice, "bob");
    assert_eq!(number.split(' ').count(), 12, "{number}");
    assert!(
        number
            .split(' ')
            .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
    );
    assert_eq!(number, safety_number(&bob, "alice"));
    let marked = json_ok(&alice, &["verify", "bob", "--mark", "--json"], &[]);
    assert_eq!(marked["verified"], true, "{marked}");

    // An admin adds a device to alice's account: her laptop learns of it.
    let alice_phone = org.enroll_device("alice", "alice-phone");
    let seen = notices(&alice);
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0]["kind"], "new_device");
    assert_eq!(seen[0]["device_name"], "alice-phone");
    assert!(seen[0]["epoch"].as_u64().unwrap() >= 1);
    // The new device itself knows of every device logged before it: no notice.
    assert_eq!(notices(&alice_phone), Vec::<Value>::new());

    // Both sides' numbers change with alice's devices, and still agree.
    let after = safety_number(&alice, "bob");
    assert_ne!(after, number);
    assert_eq!(after, safety_number(&bob, "alice"));

    // Bob's new device: alice, who verified bob, is told his devices changed.
    org.enroll_device("bob", "bob-tablet");
    let changed = eventually("a contact_changed notice", Duration::from_secs(20), || {
        notices(&alice)
            .into_iter()
            .find(|n| n["kind"] == "contact_changed" && n["user"] == "bob")
    });
    assert!(changed["detail"].as_str().unwrap().contains("verify bob"));
    let verified = json_ok(&alice, &["verify", "bob", "--json"], &[]);
    assert_eq!(verified["changed_since_verified"], true, "{verified}");

    // The auditor checks every epoch from the public endpoint, then only new ones.
    let state = dir.path().join("auditor");
    let first = audit(&org, &state);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report: Value = serde_json::from_slice(&first.stdout).unwrap();
    let epochs = report["verified_to"].as_u64().unwrap();
    // Seven device changes (the admin's, four users', two more devices), in epochs of
    // one or more each.
    assert!(epochs >= 3, "{report:#}");
    assert_eq!(report["verified_from"], 0);
    let again = audit(&org, &state);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["verified_from"].as_u64(), Some(epochs), "{again:#}");

    // A policy requiring this auditor: devices are added to conversations only while its
    // countersignature is fresh.
    let auditor = report["auditor_key"].as_str().unwrap();
    let policy = support::write(
        dir.path(),
        "audited.toml",
        &format!("kt_auditor_keys = [\"{auditor}\"]\nkt_auditor_max_lag_s = 3\n"),
    );
    org.admin(&[
        "admin",
        "policy",
        "set",
        "default",
        "--file",
        policy.to_str().unwrap(),
        "--json",
    ]);
    let signed: Value = serde_json::from_slice(&audit(&org, &state).stdout).unwrap();
    assert_eq!(signed["countersignature_published"], true, "{signed:#}");
    json_ok(&alice, &["send", "carol", "audited a moment ago", "--json"], &[]);
    std::thread::sleep(Duration::from_secs(4));
    let stale = support::json_error(&alice, &["send", "dave", "audited too long ago", "--json"], &[]);
    assert!(support::message(&stale).contains("countersignature"), "{stale:#}");
    let signed: Value = serde_json::from_slice(&audit(&org, &state).stdout).unwrap();
    assert_eq!(signed["countersignature_published"], true, "{signed:#}");
    json_ok(&alice, &["send", "dave", "audited again", "--json"], &[]);
    org.admin(&[
        "admin",
        "policy",
        "set",
        "default",
        "--file",
        support::write(dir.path(), "empty.toml", "").to_str().unwrap(),
        "--json",
    ]);
    let epochs = serde_json::from_slice::<Value>(&audit(&org, &state).stdout).unwrap()["verified_to"]
        .as_u64()
        .unwrap();

    // Tampering: epoch 2's head is replaced by one over another root (signed with the
    // data folder's transparency key, as a compromised server could). A fresh auditor
    // fails naming epoch 2; the auditor that verified it before sees two roots.
    let key = std::fs::read(org.data.join("transparency.key")).unwrap();
    let signing = SigningKey::from_bytes(&key[..32].try_into().unwrap());
    forge_head(&org.data.join("redoubt.db"), 2, &signing);
    let fresh = audit(&org, &dir.path().join("fresh-auditor"));
    assert!(!fresh.status.success());
    let stderr = String::from_utf8_lossy(&fresh.stderr);
    assert!(stderr.contains("epoch 2"), "{stderr}");
    // Another root for the epoch the first auditor verified last: it sees two roots.
    forge_head(
        &org.data.join("redoubt.db"),
        i64::try_from(epochs).unwrap(),
        &signing,
    );
    let old = audit(&org, &state);
    assert!(!old.status.success());
    let stderr = String::from_utf8_lossy(&old.stderr);
    assert!(
        stderr.contains(&format!("epoch {epochs}")) && stderr.contains("two roots"),
        "{stderr}"
    );
}

/// Replaces epoch `epoch`'s head in the SQLite database by one over another root, signed
/// with the transparency key: what a compromised server could serve.
fn forge_head(database: &Path, epoch: i64, signing: &SigningKey) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::ConnectOptions;
        let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(database)
            .connect()
            .await
            .unwrap();
        let stored: Vec<u8> = sqlx::query_scalar("SELECT head FROM kt_heads WHERE epoch = ?")
            .bind(epoch)
            .fetch_one(&mut connection)
            .await
            .unwrap();
        let signed = Signed::<EpochHead>::from_bytes(&stored).unwrap();
        let mut head: EpochHead = postcard::from_bytes(&signed.body).unwrap();
        head.root_hash = Bytes([0x5a; 32]);
        let forged = Signed::sign(&head, signing);
        // The heads table refuses updates; a compromised server drops that guard first.
        sqlx::query("DROP TRIGGER IF EXISTS kt_heads_no_update")
            .execute(&mut connection)
            .await
            .unwrap();
        let updated = sqlx::query("UPDATE kt_heads SET head = ? WHERE epoch = ?")
            .bind(forged.to_bytes())
            .bind(epoch)
            .execute(&mut connection)
            .await
            .unwrap();
        assert_eq!(updated.rows_affected(), 1);
    });
}
