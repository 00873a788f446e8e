#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Backup and restore as an admin runs them: a backup taken from a running server while its
//! devices keep sending, the server's folder lost, the archive restored into a new folder
//! and the server started from it on the same address; its devices carry on with the same
//! TLS pin and read everything acknowledged before the backup began. Wrong passphrases,
//! changed bytes and cut archives are refused with nothing written.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Org, ServerProcess, free_port, json_ok, read_texts, run};

const PASSPHRASE: &str = "a long backup passphrase, kept apart";

/// `redoubt server ...` (no profile needed; `--json` added), with the passphrase file.
fn server_command(root: &Path, args: &[&str]) -> std::process::Output {
    let passphrase = root.join("passphrase.txt");
    if !passphrase.exists() {
        std::fs::write(&passphrase, format!("{PASSPHRASE}\n")).unwrap();
    }
    let mut full = vec!["server"];
    full.extend_from_slice(args);
    full.extend(["--passphrase-file", passphrase.to_str().unwrap(), "--json"]);
    run(&root.join("no-profile"), &full, &[])
}

fn server_ok(root: &Path, args: &[&str]) -> Value {
    let out = server_command(root, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The JSON error of a `server` command that must fail.
fn server_error(root: &Path, args: &[&str]) -> String {
    let out = server_command(root, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} should have failed");
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("{\"error\""))
        .unwrap_or_else(|| panic!("no JSON error: {stderr}"));
    let error: Value = serde_json::from_str(line).unwrap();
    assert!(!line.contains(PASSPHRASE), "the passphrase in an error: {line}");
    error["error"]["message"].as_str().unwrap().to_owned()
}

/// Names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Restores `archive` into `ROOT/target`, which must fail with nothing written; returns
/// the error message.
fn restore_refused(root: &Path, archive: &Path) -> String {
    let before = names(root);
    let error = server_error(
        root,
        &[
            "restore",
            "--in",
            archive.to_str().unwrap(),
            "--data",
            root.join("target").to_str().unwrap(),
        ],
    );
    assert_eq!(names(root), before, "{error}: something was written");
    error
}

/// Sends from `from` to `to` until told to stop (at most 200 messages); counts them.
fn keep_sending(
    from: PathBuf,
    to: &'static str,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for i in 0..200 {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let out = run(
                &from,
                &["send", to, &format!("during the backup {i}"), "--json"],
                &[],
            );
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            sent.fetch_add(1, Ordering::SeqCst);
        }
    })
}

#[test]
fn a_backup_taken_under_traffic_restores_a_server_its_devices_carry_on_with() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut org = Org::start(
        root,
        &listen,
        &[("alice", "alice"), ("bob", "bob"), ("carol", "carol")],
    );
    let (alice, bob, carol) = (org.profile("alice"), org.profile("bob"), org.profile("carol"));

    // Acknowledged before the backup: two messages and a file in a group, a direct chat.
    json_ok(
        &alice,
        &["group", "create", "ops", "--members", "bob,carol", "--json"],
        &[],
    );
    json_ok(
        &alice,
        &["send", "ops", "before the backup, from alice", "--json"],
        &[],
    );
    json_ok(
        &bob,
        &["send", "ops", "before the backup, from bob", "--json"],
        &[],
    );
    let report = root.join("report.bin");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&report, &content).unwrap();
    let sent = json_ok(
        &alice,
        &["send", "ops", "--file", report.to_str().unwrap(), "--json"],
        &[],
    );
    let attachment = sent["id"].as_str().unwrap().to_owned();
    json_ok(
        &alice,
        &["send", "bob", "direct, before the backup", "--json"],
        &[],
    );
    assert!(read_texts(&bob, Some("ops")).contains(&"before the backup, from alice".to_owned()));

    // Traffic goes on (alice to bob directly) while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicU64::new(0));
    let traffic = keep_sending(alice.clone(), "bob", stop.clone(), during.clone());
    support::eventually("traffic under way", Duration::from_secs(60), || {
        (during.load(Ordering::SeqCst) > 0).then_some(())
    });
    let archive = root.join("backup.rdb");
    let started = Instant::now();
    let made = server_ok(
        root,
        &[
            "backup",
            "--data",
            org.data.to_str().unwrap(),
            "--out",
            archive.to_str().unwrap(),
        ],
    );
    let backup_took = started.elapsed();
    let sent_before_end = during.load(Ordering::SeqCst);
    // Let at least one more message follow the backup, then stop.
    support::eventually("traffic after the backup", Duration::from_secs(60), || {
        (during.load(Ordering::SeqCst) > sent_before_end).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    traffic.join().unwrap();
    eprintln!(
        "backup took {backup_took:?}; {} messages sent meanwhile",
        during.load(Ordering::SeqCst)
    );
    assert!(made["blobs"].as_u64().unwrap() >= 1, "{made}");
    assert!(made["database_bytes"].as_u64().unwrap() > 0, "{made}");
    assert_eq!(made["kdf"]["algorithm"], "argon2id");
    assert_eq!(made["kdf"]["memory_kib"], 65536);

    let verified = server_ok(root, &["backup", "verify", archive.to_str().unwrap()]);
    for field in [
        "files",
        "file_bytes",
        "database_bytes",
        "blobs",
        "taken_at_unix_ms",
    ] {
        assert_eq!(verified[field], made[field], "{field}: {verified} vs {made}");
    }

    // The group moves on after the backup: alice sends, bob reads. The restored server will
    // not know this message, and bob's place in the group's log will be past its end: the
    // restored server must number new messages past it, or bob would skip them.
    let lost = "after the backup, lost with the server";
    json_ok(&alice, &["send", "ops", lost, "--json"], &[]);
    assert!(read_texts(&bob, Some("ops")).contains(&lost.to_owned()));

    // The server and its folder are lost.
    org.server.take().unwrap().terminate();
    std::fs::remove_dir_all(&org.data).unwrap();

    // A wrong passphrase, a changed byte, a cut archive: refused, nothing written.
    let good = std::fs::read(&archive).unwrap();
    let wrong = root.join("wrong-passphrase.txt");
    std::fs::write(&wrong, "not the right passphrase\n").unwrap();
    let before = names(root);
    let out = run(
        &root.join("no-profile"),
        &[
            "server",
            "restore",
            "--in",
            archive.to_str().unwrap(),
            "--data",
            root.join("target").to_str().unwrap(),
            "--passphrase-file",
            wrong.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase or damaged archive"));
    assert_eq!(names(root), before, "a wrong passphrase wrote something");

    let damaged = root.join("damaged.rdb");
    let mut bytes = good.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&damaged, &bytes).unwrap();
    let error = restore_refused(root, &damaged);
    assert!(error.contains("archive damaged at byte"), "{error}");
    let error = server_error(root, &["backup", "verify", damaged.to_str().unwrap()]);
    assert!(error.contains("archive damaged at byte"), "{error}");

    let cut = root.join("cut.rdb");
    std::fs::write(&cut, &good[..good.len() - 100]).unwrap();
    let error = restore_refused(root, &cut);
    assert!(error.contains("archive damaged"), "{error}");
    let error = server_error(root, &["backup", "verify", cut.to_str().unwrap()]);
    assert!(error.contains("archive damaged"), "{error}");

    // The good archive, into a new folder; the server starts from it on the same address.
    let restored = root.join("restored-data");
    let done = server_ok(
        root,
        &[
            "restore",
            "--in",
            archive.to_str().unwrap(),
            "--data",
            restored.to_str().unwrap(),
        ],
    );
    assert_eq!(done["files"], made["files"]);
    // A second restore into the now non-empty folder is refused.
    let error = server_error(
        root,
        &[
            "restore",
            "--in",
            archive.to_str().unwrap(),
            "--data",
            restored.to_str().unwrap(),
        ],
    );
    assert!(error.contains("not empty"), "{error}");
    let server = ServerProcess::start_on(&restored, &listen);
    support::wait_until_listening(&listen);

    // Carol, who read nothing before, reads everything acknowledged before the backup and
    // fetches the file; every device authenticates with its pinned certificate.
    for device in [&alice, &bob, &carol] {
        json_ok(device, &["whoami", "--json"], &[]);
    }
    let texts = read_texts(&carol, Some("ops"));
    for expected in ["before the backup, from alice", "before the backup, from bob"] {
        assert!(
            texts.contains(&expected.to_owned()),
            "{expected:?} missing: {texts:?}"
        );
    }
    for (who, device) in [("carol", &carol), ("bob", &bob)] {
        let saved = root.join(format!("report-{who}.bin"));
        let fetched = json_ok(
            device,
            &["fetch", &attachment, "--out", saved.to_str().unwrap(), "--json"],
            &[],
        );
        assert_eq!(fetched["verified"], true);
        assert_eq!(
            std::fs::read(&saved).unwrap(),
            content,
            "{who}'s copy of the file"
        );
    }

    // And they keep sending.
    json_ok(
        &alice,
        &["send", "ops", "after the restore, from alice", "--json"],
        &[],
    );
    json_ok(
        &bob,
        &["send", "ops", "after the restore, from bob", "--json"],
        &[],
    );
    json_ok(
        &alice,
        &["send", "bob", "after the restore, directly", "--json"],
        &[],
    );
    assert!(read_texts(&bob, Some("alice")).contains(&"after the restore, directly".to_owned()));
    for device in [&alice, &bob, &carol] {
        let texts = read_texts(device, Some("ops"));
        for expected in ["after the restore, from alice", "after the restore, from bob"] {
            assert!(
                texts.contains(&expected.to_owned()),
                "{expected:?} missing on {}: {texts:?}",
                device.display()
            );
        }
    }
    let log = server.terminate();
    assert!(!log.contains(PASSPHRASE));
}

#[test]
fn a_data_folder_on_postgresql_is_refused_with_a_pointer_to_pg_dump() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let data = root.join("node");
    std::fs::create_dir(&data).unwrap();
    let error = server_error(
        root,
        &[
            "backup",
            "--data",
            data.to_str().unwrap(),
            "--out",
            root.join("x.rdb").to_str().unwrap(),
            "--database",
            "postgres://redoubt@localhost/redoubt",
        ],
    );
    assert!(error.contains("pg_dump"), "{error}");
    assert!(!root.join("x.rdb").exists());
    // An ordinary folder without a database is no data folder.
    let error = server_error(
        root,
        &[
            "backup",
            "--data",
            data.to_str().unwrap(),
            "--out",
            root.join("x.rdb").to_str().unwrap(),
        ],
    );
    assert!(error.contains("not a Redoubt data folder"), "{error}");
}
