#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! The lifecycle of a lost phone, exactly as a new admin would run it from the command
//! line: a real server process on 127.0.0.1 and the real `redoubt` binary, every result
//! read from `--json` output.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{ServerProcess, device_row, json_error, json_ok, message, run, wait_for, write};

/// The passcode Alice chooses for her phone.
const PASSCODE: &str = "correct-horse-1";

fn user_names(users: &Value) -> Vec<String> {
    let mut names: Vec<String> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// The effective setting `name` from `admin policy show --user ... --json`: (value, source).
fn effective(report: &Value, name: &str) -> (String, String) {
    let setting = report["effective"]["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["setting"] == name)
        .unwrap_or_else(|| panic!("no effective {name}: {report:#}"));
    (
        setting["value"].as_str().unwrap().to_owned(),
        setting["source"].as_str().unwrap().to_owned(),
    )
}

fn command_states(device: &Value) -> Vec<(String, String)> {
    device["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["command"].as_str().unwrap().to_owned(),
                c["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Whether the profile folder is gone or holds no files at all.
fn no_files_left(dir: &Path) -> Result<(), Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(());
    }
    let left = support::file_paths(dir);
    if left.is_empty() { Ok(()) } else { Err(left) }
}

#[test]
fn lost_phone_lifecycle_from_the_cli() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let data = root.join("redoubt-data");
    let server = ServerProcess::start(&data);
    let admin = root.join("admin-laptop");
    let phone = root.join("alice-phone");
    let bob = root.join("bob-laptop");
    let with_passcode: &[(&str, &str)] = &[("REDOUBT_PASSCODE", PASSCODE)];

    // 1. The admin enrols their laptop with the first admin code.
    let admin_code = wait_for(&data.join("admin-activation.txt"));
    let enrolled = json_ok(
        &admin,
        &["enroll", admin_code.trim(), "--name", "admin-laptop", "--json"],
        &[],
    );
    assert_eq!(enrolled["user"], "admin");
    assert_eq!(enrolled["device_name"], "admin-laptop");

    // A CSV with one bad line (an unknown role) is refused as a whole: nothing is created.
    let bad_csv = write(
        root,
        "bad-users.csv",
        "user,display_name,groups,roles\n\
         carol,Carol Carter,,\n\
         dave,Dave Davies,,superuser\n",
    );
    let refused = json_error(
        &admin,
        &["admin", "user", "import", bad_csv.to_str().unwrap(), "--json"],
        &[],
    );
    assert!(message(&refused).contains("unknown role"), "{refused}");
    assert!(message(&refused).contains("superuser"), "{refused}");
    assert!(message(&refused).contains("line 3"), "{refused}");
    assert_eq!(
        user_names(&json_ok(&admin, &["admin", "user", "list", "--json"], &[])),
        ["admin"],
        "a refused import creates nobody"
    );

    // The directory group first, then a good CSV: alice in finance, and bob.
    let created = json_ok(&admin, &["admin", "group", "create", "finance", "--json"], &[]);
    assert_eq!(created["ok"], true);
    let good_csv = write(
        root,
        "users.csv",
        "user,display_name,groups,roles\n\
         alice,Alice Liddell,finance,\n\
         bob,Bob Builder,,\n",
    );
    let imported = json_ok(
        &admin,
        &["admin", "user", "import", good_csv.to_str().unwrap(), "--json"],
        &[],
    );
    assert_eq!(imported["imported"], 2, "{imported:#}");
    let code_of = |user: &str| -> String {
        let row = imported["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["user"] == user)
            .unwrap_or_else(|| panic!("no code for {user}: {imported:#}"));
        assert!(row["expires_at"].as_str().unwrap().ends_with('Z'));
        let code = row["activation_code"].as_str().unwrap().to_owned();
        assert!(code.starts_with("RDB-"), "{code}");
        code
    };
    let (alice_code, bob_code) = (code_of("alice"), code_of("bob"));
    assert_eq!(
        user_names(&json_ok(&admin, &["admin", "user", "list", "--json"], &[])),
        ["admin", "alice", "bob"]
    );
    let groups = json_ok(&admin, &["admin", "group", "list", "--json"], &[]);
    assert_eq!(groups[0]["group"], "finance", "{groups:#}");
    assert_eq!(groups[0]["members"], serde_json::json!(["alice"]));

    // 2. Policies: the organisation default...
    let default_policy = write(root, "default.toml", "message_retention_days = 30\n");
    let set = json_ok(
        &admin,
        &[
            "admin",
            "policy",
            "set",
            "default",
            "--file",
            default_policy.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(set["scope"], "default");
    let version_after_default = set["version"].as_u64().unwrap();

    // ...an unknown setting and a bad value are refused, each naming the setting...
    let colour = write(
        root,
        "colour.toml",
        "message_retention_days = 7\ncolour = \"red\"\n",
    );
    let refused = json_error(
        &admin,
        &[
            "admin",
            "policy",
            "set",
            "default",
            "--file",
            colour.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(message(&refused).contains("colour"), "{refused}");
    let short = write(root, "short.toml", "passcode_min_length = 2\n");
    let refused = json_error(
        &admin,
        &[
            "admin",
            "policy",
            "set",
            "default",
            "--file",
            short.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(message(&refused).contains("passcode_min_length"), "{refused}");
    let report = json_ok(&admin, &["admin", "policy", "show", "--json"], &[]);
    assert_eq!(
        report["version"].as_u64().unwrap(),
        version_after_default,
        "refused files change nothing"
    );
    assert_eq!(
        report["documents"],
        serde_json::json!([{ "scope": "default", "settings": { "message_retention_days": "30" } }])
    );

    // ...and the finance group's stricter rules.
    let finance_policy = write(
        root,
        "finance.toml",
        "passcode_required = true\npasscode_min_length = 8\nwipe_after_failed_passcodes = 5\n",
    );
    let set = json_ok(
        &admin,
        &[
            "admin",
            "policy",
            "set",
            "--group",
            "finance",
            "--file",
            finance_policy.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(set["scope"], "group finance");
    assert!(set["version"].as_u64().unwrap() > version_after_default);

    let report = json_ok(
        &admin,
        &["admin", "policy", "show", "--user", "alice", "--json"],
        &[],
    );
    assert_eq!(report["effective"]["user"], "alice");
    assert_eq!(
        effective(&report, "passcode_required"),
        ("true".into(), "group finance".into())
    );
    assert_eq!(
        effective(&report, "passcode_min_length"),
        ("8".into(), "group finance".into())
    );
    assert_eq!(
        effective(&report, "wipe_after_failed_passcodes"),
        ("5".into(), "group finance".into())
    );
    assert_eq!(
        effective(&report, "message_retention_days"),
        ("30".into(), "default".into())
    );
    let policy_version = report["version"].as_u64().unwrap();

    // 3. Alice enrols her phone. Her first command, with no passcode to set and no
    // terminal to ask on, is refused because the policy requires one.
    let enrolled = json_ok(
        &phone,
        &["enroll", &alice_code, "--name", "alice-phone", "--json"],
        &[],
    );
    assert_eq!(enrolled["user"], "alice");
    assert_eq!(enrolled["device_name"], "alice-phone");
    let refused = json_error(&phone, &["whoami", "--json"], &[]);
    assert!(message(&refused).contains("passcode"), "{refused}");

    // With REDOUBT_PASSCODE the CLI sets that passcode, as the policy requires, and goes on.
    let who = json_ok(&phone, &["whoami", "--json"], with_passcode);
    assert_eq!(who["user"], "alice");
    assert_eq!(who["device_name"], "alice-phone");
    assert_eq!(who["authenticated"], true);

    // From now on the phone's data is locked under the passcode.
    let refused = json_error(&phone, &["whoami", "--json"], &[]);
    assert!(message(&refused).contains("protected by a passcode"), "{refused}");
    // A wrong one is counted against the policy's wipe limit of 5.
    let refused = json_error(
        &phone,
        &["whoami", "--json"],
        &[("REDOUBT_PASSCODE", "wrong-horse-1")],
    );
    assert!(message(&refused).contains("wrong passcode"), "{refused}");
    assert!(message(&refused).contains("4 more"), "{refused}");
    let who = json_ok(&phone, &["whoami", "--json"], with_passcode);
    assert_eq!(who["user"], "alice");

    // 4. Bob writes to Alice; she reads it. (Alice's first `read` publishes her phone's
    // key packages, so others can add it to a conversation.)
    let out = run(&phone, &["read", "--json"], with_passcode);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    json_ok(
        &bob,
        &["enroll", &bob_code, "--name", "bob-laptop", "--json"],
        &[],
    );
    let sent = json_ok(&bob, &["send", "alice", "hello", "--json"], &[]);
    assert_eq!(sent["conversation"], "alice");
    let out = run(&phone, &["read", "--json"], with_passcode);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let messages: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(messages[0]["sender"], "bob");
    assert_eq!(messages[0]["text"], "hello");

    // 5. The admin sees the phone: policy applied, seen, no remote commands.
    let devices = json_ok(&admin, &["admin", "device", "list", "--json"], &[]);
    let row = device_row(&devices, "alice-phone");
    assert_eq!(row["user"], "alice");
    assert_eq!(
        row["policy_version_acked"].as_u64().unwrap(),
        policy_version,
        "{row:#}"
    );
    assert!(row["last_seen_at"].is_string(), "{row:#}");
    assert!(row["revoked_at"].is_null(), "{row:#}");
    assert_eq!(row["commands"], serde_json::json!([]));

    // 6. The phone is lost: lock it, then wipe it, by name.
    let lock = json_ok(&admin, &["admin", "device", "lock", "alice-phone", "--json"], &[]);
    assert_eq!(
        (lock["command"].as_str(), lock["state"].as_str()),
        (Some("lock"), Some("pending"))
    );
    assert_eq!(lock["device_id"], row["device_id"]);
    let wipe = json_ok(&admin, &["admin", "device", "wipe", "alice-phone", "--json"], &[]);
    assert_eq!(
        (wipe["command"].as_str(), wipe["state"].as_str()),
        (Some("wipe"), Some("pending"))
    );
    let devices = json_ok(&admin, &["admin", "device", "list", "--json"], &[]);
    let row = device_row(&devices, "alice-phone");
    assert_eq!(
        command_states(&row),
        [
            ("lock".to_owned(), "pending".to_owned()),
            ("wipe".to_owned(), "pending".to_owned())
        ],
        "{row:#}"
    );
    assert!(row["revoked_at"].is_null(), "{row:#}");

    // The phone next connects (with its passcode, which lifts the lock): the wipe is
    // carried out and the command fails saying so; nothing of the profile is left.
    assert!(phone.join("keys.json").exists());
    let wiped = json_error(&phone, &["whoami", "--json"], with_passcode);
    assert!(message(&wiped).contains("wiped by the organisation"), "{wiped}");
    assert!(!message(&wiped).contains("wrong passcode"), "{wiped}");
    assert!(
        !message(&wiped).contains("locked"),
        "the passcode lifts the lock: {wiped}"
    );
    if let Err(left) = no_files_left(&phone) {
        panic!("files left in the wiped profile: {left:?}");
    }

    // The admin sees both commands acknowledged and the device revoked.
    let devices = json_ok(&admin, &["admin", "device", "list", "--json"], &[]);
    let row = device_row(&devices, "alice-phone");
    assert_eq!(
        command_states(&row),
        [
            ("lock".to_owned(), "acknowledged".to_owned()),
            ("wipe".to_owned(), "acknowledged".to_owned())
        ],
        "{row:#}"
    );
    for command in row["commands"].as_array().unwrap() {
        assert!(command["acknowledged_at"].is_string(), "{row:#}");
        assert_eq!(command["issued_by"], "admin");
    }
    assert!(row["revoked_at"].is_string(), "{row:#}");
    let users = json_ok(&admin, &["admin", "user", "list", "--json"], &[]);
    let alice_row = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user"] == "alice")
        .unwrap();
    assert_eq!(alice_row["devices_active"], 0, "{users:#}");

    // 7. Everything is in the audit log, and the log verifies.
    let audit = json_ok(&admin, &["admin", "audit", "list", "--json"], &[]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "user.import",
        "policy.set",
        "device.lock",
        "device.wipe",
        "device.wipe.acknowledged",
        "device.revoke",
    ] {
        assert!(actions.contains(&action), "{action} missing from {actions:?}");
    }
    let policy_sets = actions.iter().filter(|a| **a == "policy.set").count();
    assert_eq!(
        policy_sets, 2,
        "refused policy files are not audited: {actions:?}"
    );
    let verified = json_ok(&admin, &["admin", "audit", "verify", "--json"], &[]);
    assert_eq!(verified["verified"], true, "{verified:#}");
    assert_eq!(
        verified["entries"].as_u64().unwrap(),
        audit.as_array().unwrap().len() as u64
    );

    // 8. Roles: helpdesk may list devices, not change the policy.
    let refused = json_error(&bob, &["admin", "device", "list", "--json"], &[]);
    assert_eq!(refused["code"], "forbidden", "{refused}");
    json_ok(
        &admin,
        &["admin", "role", "grant", "bob", "helpdesk", "--json"],
        &[],
    );
    let devices = json_ok(&bob, &["admin", "device", "list", "--json"], &[]);
    device_row(&devices, "alice-phone");
    let refused = json_error(
        &bob,
        &[
            "admin",
            "policy",
            "set",
            "default",
            "--file",
            default_policy.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let report = json_ok(&admin, &["admin", "policy", "show", "--json"], &[]);
    assert_eq!(report["version"].as_u64().unwrap(), policy_version);

    // SIGTERM stops the server cleanly.
    server.terminate();
}
