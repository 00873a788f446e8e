#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Upgrades: a data folder and device profiles written by an earlier release
//! (`tests/fixtures/upgrade-*`, made by `tests/fixtures/make-upgrade-fixture.sh` with that
//! release's binary) open with this binary. The server migrates its database; the old
//! devices open their vaults, authenticate, read their old messages, fetch the old
//! attachment byte for byte and message each other; the admin still administers.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.is_dir()
                && path
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with("upgrade-"))
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no upgrade fixtures in {}", dir.display());
    found
}

fn ok(profile: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    json_ok(profile, &args, &[])
}

/// The texts of `messages` in `conversation`, in order.
fn texts(messages: &[Value], conversation: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["conversation"] == conversation)
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The old release's devices pinned the address they enrolled with, so the new server must
/// listen there (as an upgraded server in place does).
fn start_server_on_fixture_address(data: &Path, listen: &str) -> ServerProcess {
    if let Err(error) = std::net::TcpListener::bind(listen) {
        panic!(
            "the upgrade fixture's server address {listen} is busy ({error}): its devices \
             pinned it at enrolment, so the test needs it free (another run of this test?)"
        );
    }
    let server = ServerProcess::start_on(data, listen);
    wait_until_listening(listen);
    server
}

#[test]
fn every_earlier_release_upgrades_in_place() {
    for fixture in fixtures() {
        upgrade(&fixture);
    }
}

/// The script that makes a release's fixture still works with this binary, and makes what
/// the test above checks: the next release can add its own.
#[test]
fn the_fixture_script_makes_a_fixture_this_test_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("upgrade-this");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-upgrade-fixture.sh");
    let listen = format!("127.0.0.1:{}", free_port());
    let made = output_within(
        Command::new("bash")
            .arg(&script)
            .args(["--binary", BIN, "--out"])
            .arg(&out)
            .args(["--listen", &listen]),
        Duration::from_secs(300),
        "make-upgrade-fixture.sh",
    );
    assert!(
        made.status.success(),
        "make-upgrade-fixture.sh failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let bytes: u64 = file_paths(&out)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(bytes < 2_000_000, "the fixture takes {bytes} bytes");
    upgrade(&out);
}

fn upgrade(fixture: &Path) {
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(fixture, tmp.path());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("fixture.json")).unwrap()).unwrap();
    let old = Fixture {
        root: tmp.path().to_owned(),
        made_by: manifest["made_by"].as_str().unwrap().to_owned(),
        group: manifest["group"]["name"].as_str().unwrap().to_owned(),
        manifest,
    };
    let server =
        start_server_on_fixture_address(&old.root.join("server"), old.manifest["listen"].as_str().unwrap());
    old.devices_authenticate();
    old.admin_sees_the_organisation();
    old.devices_hold_the_old_messages();
    old.new_messages_reach_the_old_devices();
    old.a_new_user_joins_an_old_group();
    // The upgraded server stops cleanly (terminate checks the exit status).
    server.terminate();
    eprintln!("{}: upgraded in {:?}", old.made_by, started.elapsed());
}

/// A copy of a fixture, and what its `fixture.json` says it holds.
struct Fixture {
    root: PathBuf,
    manifest: Value,
    made_by: String,
    group: String,
}

impl Fixture {
    fn device(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Every old device opens its vault and authenticates as itself.
    fn devices_authenticate(&self) {
        let made_by = &self.made_by;
        for (device, user) in self.manifest["devices"].as_object().unwrap() {
            let who = ok(&self.device(device), &["whoami"]);
            assert_eq!(who["user"], *user, "{made_by}: {device}");
            assert_eq!(who["authenticated"], true, "{made_by}: {device}");
        }
    }

    /// The admin still sees the users, devices and policies as they were, and the audit log
    /// still verifies.
    fn admin_sees_the_organisation(&self) {
        let made_by = &self.made_by;
        let admin = self.device("admin");
        let devices = self.manifest["devices"].as_object().unwrap();
        let users: BTreeSet<String> = ok(&admin, &["admin", "user", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user"].as_str().unwrap().to_owned())
            .collect();
        let expected: BTreeSet<String> = devices.values().map(|u| u.as_str().unwrap().to_owned()).collect();
        assert_eq!(users, expected, "{made_by}");
        let listed = ok(&admin, &["admin", "device", "list"]);
        assert_eq!(
            listed.as_array().unwrap().len(),
            devices.len(),
            "{made_by}: {listed:#}"
        );
        let audit = ok(&admin, &["admin", "audit", "verify"]);
        assert_eq!(audit["verified"], true, "{made_by}: {audit}");
        let policy = ok(&admin, &["admin", "policy", "show", "--user", "alice"]);
        let retention = policy["effective"]["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["setting"] == "message_retention_days")
            .unwrap();
        assert_eq!(retention["value"], "36500", "{made_by}: {retention}");
        assert_eq!(retention["source"], "group finance", "{made_by}: {retention}");
    }

    /// The old messages are on every member device, and the old attachment decrypts to the
    /// very bytes sent.
    fn devices_hold_the_old_messages(&self) {
        let made_by = &self.made_by;
        let direct = strings(&self.manifest["direct"]);
        let group_texts = strings(&self.manifest["group"]["messages"]);
        let attachment = &self.manifest["attachment"];
        let sent = std::fs::read(self.root.join(attachment["file"].as_str().unwrap())).unwrap();
        for device in ["alice", "alice-2", "bob"] {
            let messages = read_messages(&self.device(device));
            let peer = if device == "bob" { "alice" } else { "bob" };
            assert_eq!(texts(&messages, peer), direct, "{made_by}: {device}");
            let in_group = texts(&messages, &self.group);
            for text in &group_texts {
                assert!(
                    in_group.contains(text),
                    "{made_by}: {device} lacks {text:?}: {in_group:?}"
                );
            }
            let file = messages
                .iter()
                .find(|m| m["id"] == attachment["id"])
                .unwrap_or_else(|| panic!("{made_by}: {device} lacks the attachment"));
            assert_eq!(file["attachment"]["name"], attachment["name"]);
            let out = self.root.join(format!("{device}-fetched"));
            let id = attachment["id"].as_str().unwrap();
            let fetched = ok(
                &self.device(device),
                &["fetch", id, "--out", out.to_str().unwrap()],
            );
            assert_eq!(fetched["verified"], true);
            assert_eq!(std::fs::read(&out).unwrap(), sent, "{made_by}: {device}");
        }
    }

    /// New messages in the old conversations reach the other members' devices.
    fn new_messages_reach_the_old_devices(&self) {
        let (made_by, group) = (&self.made_by, self.group.as_str());
        ok(
            &self.device("alice"),
            &["send", group, "after the upgrade: group"],
        );
        ok(
            &self.device("bob"),
            &["send", "alice", "after the upgrade: direct"],
        );
        let bob = texts(&read_messages(&self.device("bob")), group);
        assert_eq!(bob.last().unwrap(), "after the upgrade: group", "{made_by}");
        for device in ["alice", "alice-2"] {
            let messages = read_messages(&self.device(device));
            let direct = texts(&messages, "bob");
            assert_eq!(
                direct.last().unwrap(),
                "after the upgrade: direct",
                "{made_by}: {device}"
            );
            let in_group = texts(&messages, group);
            assert_eq!(
                in_group.last().unwrap(),
                "after the upgrade: group",
                "{made_by}: {device}"
            );
        }
    }

    /// A user enrolled after the upgrade is added to an old group (fresh key packages, a
    /// commit on the migrated group state) and reads what follows, as do the old members.
    fn a_new_user_joins_an_old_group(&self) {
        let (made_by, group) = (&self.made_by, self.group.as_str());
        let issued = ok(
            &self.device("admin"),
            &["admin", "user", "add", "carol", "--no-qr"],
        );
        let carol = self.device("carol");
        let code = issued["code"].as_str().unwrap();
        ok(&carol, &["enroll", code, "--name", "carol-phone"]);
        ok(&self.device("alice"), &["group", "add", group, "carol"]);
        let welcome = "after the upgrade: welcome carol";
        ok(&self.device("alice"), &["send", group, welcome]);
        for device in ["carol", "bob"] {
            let seen = texts(&read_messages(&self.device(device)), group);
            assert_eq!(
                seen.last().map(String::as_str),
                Some(welcome),
                "{made_by}: {device}"
            );
        }
    }
}
