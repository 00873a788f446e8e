#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Crash safety of the client: the real `redoubt` binary is killed (aborted, the way a
//! kill at that instant would stop it) right after the server accepted a message and
//! right after it accepted a commit — before the device recorded either. Run again, the
//! device recovers: the message is delivered and kept exactly once, the commit is applied
//! (no fork), and every member decrypts what follows at the same epoch.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_redoubt");

fn run(profile: &Path, args: &[&str], crash_at: Option<&str>) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("--profile")
        .arg(profile)
        .args(args)
        .env_remove("REDOUBT_TEST_CRASH_AT")
        .env_remove("REDOUBT_PASSCODE")
        .stdin(Stdio::null());
    if let Some(point) = crash_at {
        command.env("REDOUBT_TEST_CRASH_AT", point);
    }
    command.output().unwrap()
}

fn ok(profile: &Path, args: &[&str]) -> Value {
    let out = run(profile, &[args, &["--json"]].concat(), None);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Runs a command that must die at `point`.
fn crashes(profile: &Path, args: &[&str], point: &str) {
    let out = run(profile, args, Some(point));
    assert!(!out.status.success(), "{args:?} did not crash at {point}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(6),
        "{args:?} should abort at {point}: {out:?}"
    );
}

struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Texts of one conversation as a device sees it, in order (`read --json` prints one
/// JSON object per message).
fn texts(profile: &Path, conversation: &str) -> Vec<String> {
    let out = run(profile, &["read", conversation, "--json"], None);
    assert!(
        out.status.success(),
        "read failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn group_row(profile: &Path, name: &str) -> Value {
    let groups = ok(profile, &["group", "list"]);
    groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["conversation"] == name)
        .unwrap_or_else(|| panic!("no {name} in {groups}"))
        .clone()
}

#[test]
fn a_client_killed_after_submitting_recovers_without_duplicates_or_forks() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let _server = ServerProcess(
        Command::new(BIN)
            .env("REDOUBT_KT_EPOCH_MS", "20")
            .args(["server", "--data"])
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--no-qr"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let admin_code = wait_for(&data.join("admin-activation.txt"));
    let profile = |name: &str| -> PathBuf { root.path().join(name) };
    let admin = profile("admin");
    ok(&admin, &["enroll", admin_code.trim(), "--name", "admin"]);
    for user in ["alice", "bob", "carol"] {
        let issued = ok(&admin, &["admin", "user", "add", user, "--no-qr"]);
        let code = issued["code"].as_str().unwrap().to_owned();
        ok(&profile(user), &["enroll", &code, "--name", user]);
        ok(&profile(user), &["read"]); // publishes key packages
    }
    let (alice, bob, carol) = (profile("alice"), profile("bob"), profile("carol"));

    // A send killed after the server accepted it, before the device kept it.
    ok(&alice, &["send", "bob", "one"]);
    crashes(&alice, &["send", "bob", "two"], "send.after-submit");
    ok(&alice, &["send", "bob", "three"]);
    assert_eq!(
        texts(&bob, "alice"),
        ["one", "two", "three"],
        "bob: each exactly once, in order"
    );
    assert_eq!(
        texts(&alice, "bob"),
        ["one", "two", "three"],
        "alice keeps her own message once"
    );

    // A commit killed after the server accepted it, before the device applied it.
    ok(&alice, &["group", "create", "ops", "--members", "bob"]);
    ok(&bob, &["read"]);
    crashes(&alice, &["group", "add", "ops", "carol"], "commit.after-submit");
    ok(&alice, &["send", "ops", "after the crash"]);
    ok(&bob, &["send", "ops", "bob too"]);
    for device in [&alice, &bob, &carol] {
        let row = group_row(device, "ops");
        assert_eq!(
            row["users"],
            serde_json::json!(["alice", "bob", "carol"]),
            "{row}"
        );
    }
    let epochs: Vec<Value> = [&alice, &bob, &carol]
        .iter()
        .map(|d| group_row(d, "ops")["epoch"].clone())
        .collect();
    assert!(
        epochs.iter().all(|e| *e == epochs[0] && e.is_u64()),
        "one epoch for all: {epochs:?}"
    );
    assert!(texts(&bob, "ops").contains(&"after the crash".to_owned()));
    assert!(
        texts(&carol, "ops").contains(&"after the crash".to_owned()),
        "carol decrypts what follows the commit"
    );
    assert!(
        texts(&alice, "ops").contains(&"bob too".to_owned()),
        "alice is at the same epoch as bob"
    );

    // And a send killed in a group: kept once by the sender, once by everyone else.
    crashes(&carol, &["send", "ops", "carol after crash"], "send.after-submit");
    ok(&carol, &["read"]);
    for device in [&alice, &bob, &carol] {
        let seen = texts(device, "ops");
        assert_eq!(
            seen.iter().filter(|t| *t == "carol after crash").count(),
            1,
            "{seen:?}"
        );
    }
}
