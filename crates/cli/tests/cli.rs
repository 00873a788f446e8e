#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! The README's walk-through, with the real `redoubt` binary: a server process on
//! 127.0.0.1, devices enrolling from the command line, JSON output parsed as a script would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_redoubt");

fn redoubt(profile: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--profile")
        .arg(profile)
        .args(args)
        .output()
        .unwrap()
}

fn json_ok(profile: &Path, args: &[&str]) -> Value {
    let out = redoubt(profile, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    fn start(data: &Path, listen: &str) -> Self {
        let child = Command::new(BIN)
            .env("REDOUBT_KT_EPOCH_MS", "20")
            .args(["server", "--data"])
            .arg(data)
            .args(["--listen", listen, "--no-qr"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self { child }
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    fn terminate(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut log = String::new();
                std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut log).unwrap();
                assert!(status.success(), "server exited with {status}: {log}");
                return log;
            }
            assert!(Instant::now() < deadline, "server did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A profile folder inside the test's temporary root.
fn profile(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

#[test]
fn readme_walkthrough_with_the_real_binary() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("redoubt-data");

    // 1. First run initialises the data folder and writes the admin's code (0600).
    let server = ServerProcess::start(&data, "127.0.0.1:0");
    let code_file = data.join("admin-activation.txt");
    let admin_code = wait_for(&code_file);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&code_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    for file in [
        "redoubt.toml",
        "org-root.key",
        "transparency.key",
        "redoubt.db",
        "tls/cert.pem",
        "tls/key.pem",
    ] {
        assert!(data.join(file).exists(), "{file} missing");
    }

    // 2. The admin enrols a device.
    let admin = profile(root.path(), "admin");
    let enrolled = json_ok(
        &admin,
        &["enroll", admin_code.trim(), "--name", "admin laptop", "--json"],
    );
    assert_eq!(enrolled["user"], "admin");
    assert_eq!(enrolled["device_name"], "admin laptop");
    let server_address = enrolled["server"].as_str().unwrap().to_owned();

    // 3. The admin adds Alice; the JSON carries user, code and expiry.
    let added = json_ok(
        &admin,
        &[
            "admin",
            "user",
            "add",
            "alice",
            "--display-name",
            "Alice Liddell",
            "--json",
        ],
    );
    assert_eq!(added["user"], "alice");
    assert!(added["expires_at"].as_str().unwrap().ends_with('Z'));
    let alice_code = added["code"].as_str().unwrap();

    // 4. Alice enrols, with her profile folder from REDOUBT_PROFILE, and checks who she is.
    let alice = profile(root.path(), "alice");
    let out = Command::new(BIN)
        .env("REDOUBT_PROFILE", &alice)
        .args(["enroll", alice_code])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let who = json_ok(&alice, &["whoami", "--json"]);
    assert_eq!(who["user"], "alice");
    assert_eq!(who["display_name"], "Alice Liddell");
    assert_eq!(who["authenticated"], true);
    assert_eq!(who["server"], server_address.as_str());
    assert_eq!(who["org"], "Redoubt");
    assert_eq!(
        std::fs::metadata(alice.join("keys.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // A second device for Alice; the lists show both of her devices.
    let more = json_ok(&admin, &["admin", "device", "add", "alice", "--json"]);
    assert_eq!(more["user"], "alice");
    json_ok(
        &profile(root.path(), "alice-2"),
        &["enroll", more["code"].as_str().unwrap(), "--json"],
    );
    let users = json_ok(&admin, &["admin", "user", "list", "--json"]);
    let alice_row = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user"] == "alice")
        .unwrap();
    assert_eq!(alice_row["devices_active"], 2);
    let devices = json_ok(&admin, &["admin", "device", "list", "--user", "alice", "--json"]);
    assert_eq!(devices.as_array().unwrap().len(), 2);

    // Alice is not an admin: refused, with the server's code in the JSON error.
    let refused = redoubt(&alice, &["admin", "user", "list", "--json"]);
    assert!(!refused.status.success());
    let error: Value = serde_json::from_slice(&refused.stderr).unwrap();
    assert_eq!(error["error"]["code"], "forbidden");

    // A used code is refused with a clear message.
    let reuse = redoubt(&profile(root.path(), "mallory"), &["enroll", alice_code]);
    assert!(!reuse.status.success());
    assert!(String::from_utf8_lossy(&reuse.stderr).contains("used already"));

    // SIGTERM stops the server gracefully.
    let log = server.terminate();
    assert!(log.contains("stopped"), "{log}");

    // 5. A later run reuses the folder: same code file, same keys, devices still work.
    let port = server_address.rsplit_once(':').unwrap().1;
    let server = ServerProcess::start(&data, &format!("127.0.0.1:{port}"));
    assert_eq!(
        std::fs::read_to_string(&code_file).unwrap(),
        admin_code,
        "the first admin code is made once"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let who = loop {
        let out = redoubt(&alice, &["whoami", "--json"]);
        if out.status.success() {
            break serde_json::from_slice::<Value>(&out.stdout).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(who["user"], "alice");
    server.terminate();
}

#[test]
fn every_command_has_help() {
    let commands: &[&[&str]] = &[
        &[],
        &["server"],
        &["server", "backup"],
        &["server", "backup", "verify"],
        &["server", "restore"],
        &["enroll"],
        &["whoami"],
        &["admin"],
        &["admin", "user"],
        &["admin", "user", "add"],
        &["admin", "user", "list"],
        &["admin", "device"],
        &["admin", "device", "add"],
        &["admin", "device", "list"],
        &["send"],
        &["read"],
        &["fetch"],
        &["group"],
        &["group", "create"],
        &["group", "add"],
        &["group", "remove"],
        &["group", "list"],
        &["group", "members"],
        &["group", "set"],
        &["group", "info"],
        &["search"],
    ];
    for command in commands {
        let out = Command::new(BIN).args(*command).arg("--help").output().unwrap();
        assert!(out.status.success(), "{command:?} --help failed");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{command:?}"
        );
    }
}

#[test]
fn bad_activation_code_is_refused_locally() {
    let root = tempfile::tempdir().unwrap();
    let out = redoubt(&root.path().join("p"), &["enroll", "RDB-AAAA-BBBB"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid activation code"));
    assert!(
        !root.path().join("p").exists(),
        "nothing is written for a refused code"
    );
}

#[test]
fn messaging_from_the_command_line() {
    let root = tempfile::tempdir().unwrap();
    let server = org_with_users(root.path(), &["alice", "bob", "carol"]);
    let (alice, bob, carol) = (
        profile(root.path(), "alice"),
        profile(root.path(), "bob"),
        profile(root.path(), "carol"),
    );

    let created = json_ok(
        &alice,
        &["group", "create", "ops", "--members", "bob,carol", "--json"],
    );
    assert_eq!(created["devices"], 3);
    json_ok(&bob, &["send", "ops", "hello from bob", "--json"]);
    let direct = json_ok(&alice, &["send", "bob", "just for bob", "--json"]);
    assert_eq!(direct["conversation"], "bob");

    // Carol reads the group; `read --json` prints one object per message.
    let out = redoubt(&carol, &["read", "ops", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (lines[0]["sender"].as_str(), lines[0]["text"].as_str()),
        (Some("bob"), Some("hello from bob"))
    );

    // Members with certificate fingerprints.
    let members = json_ok(&bob, &["group", "members", "ops", "--json"]);
    let members = members["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(
        members
            .iter()
            .all(|m| m["certificate_fingerprint"].as_str().unwrap().len() == 64)
    );

    // An attachment, fetched and verified by another member.
    let file = root.path().join("report.pdf");
    let content: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    let sent = json_ok(
        &alice,
        &["send", "ops", "--file", file.to_str().unwrap(), "--json"],
    );
    let id = sent["id"].as_str().unwrap().to_owned();
    let saved = root.path().join("saved.pdf");
    let fetched = json_ok(
        &carol,
        &["fetch", &id, "--out", saved.to_str().unwrap(), "--json"],
    );
    assert_eq!(fetched["verified"], true);
    assert_eq!(std::fs::read(&saved).unwrap(), content);

    // Removing Carol: she sees she was removed and nothing after.
    json_ok(&alice, &["group", "remove", "ops", "carol", "--json"]);
    json_ok(&alice, &["send", "ops", "after carol left", "--json"]);
    let list = json_ok(&carol, &["group", "list", "--json"]);
    assert_eq!(list[0]["removed"], true);
    let out = redoubt(&carol, &["read", "--json"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("after carol left"));
    // The server's log names users and devices, never what they said.
    let log = server.terminate();
    assert!(log.contains("group created"), "the log is being written: {log}");
    for secret in ["hello from bob", "just for bob", "after carol left"] {
        assert!(!log.contains(secret), "message text {secret:?} in the server log");
    }
}

/// Starts a server in `root`, enrols the admin and `users` (each with one device whose
/// profile folder is named after the user) and lets each device publish its key packages.
fn org_with_users(root: &Path, users: &[&str]) -> ServerProcess {
    let data = root.join("redoubt-data");
    let server = ServerProcess::start(&data, "127.0.0.1:0");
    let admin = profile(root, "admin");
    json_ok(
        &admin,
        &[
            "enroll",
            wait_for(&data.join("admin-activation.txt")).trim(),
            "--json",
        ],
    );
    for user in users {
        let added = json_ok(&admin, &["admin", "user", "add", user, "--json"]);
        json_ok(
            &profile(root, user),
            &["enroll", added["code"].as_str().unwrap(), "--json"],
        );
    }
    server
}

/// Runs tmux on a private socket, so tests never touch a user's own tmux server.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Self {
        Self {
            socket: format!("redoubt-test-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .env("TERM", "xterm-256color")
            .output()
            .unwrap()
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "chat"]).stdout).into_owned()
    }

    fn wait_for_screen(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} never appeared on screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn chat_ui_in_a_real_terminal() {
    let root = tempfile::tempdir().unwrap();
    let server = org_with_users(root.path(), &["alice", "bob"]);
    let (alice, bob) = (profile(root.path(), "alice"), profile(root.path(), "bob"));
    json_ok(&alice, &["group", "create", "ops", "--members", "bob", "--json"]);
    json_ok(&alice, &["send", "ops", "first message", "--json"]);

    // Bob opens the chat UI in a real (tmux) terminal.
    let tmux = Tmux::new();
    let command = format!("{BIN} --profile {} chat", bob.display());
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "chat",
        "-x",
        "110",
        "-y",
        "30",
        &command,
    ]);
    assert!(
        started.status.success(),
        "tmux: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let screen = tmux.wait_for_screen("first message");
    assert!(
        screen.contains("Conversations") && screen.contains("ops"),
        "{screen}"
    );

    // He types a reply; Alice receives it.
    tmux.run(&["send-keys", "-t", "chat", "-l", "hello from the terminal"]);
    tmux.run(&["send-keys", "-t", "chat", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = redoubt(&alice, &["read", "ops", "--json"]);
        if String::from_utf8_lossy(&out.stdout).contains("hello from the terminal") {
            break;
        }
        assert!(Instant::now() < deadline, "alice never got the reply");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Alice's next message appears on Bob's screen without him doing anything (server push).
    json_ok(&alice, &["send", "ops", "pushed in real time", "--json"]);
    let screen = tmux.wait_for_screen("pushed in real time");
    // Alice read Bob's reply, and Bob's UI shows its receipt state.
    assert!(screen.contains("hello from the terminal"), "{screen}");

    // Esc quits cleanly.
    tmux.run(&["send-keys", "-t", "chat", "Escape"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.run(&["has-session", "-t", "chat"]).status.success() {
        assert!(Instant::now() < deadline, "chat did not quit on Esc");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.terminate();
}

#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    // `redoubt server ... | head -1`: the reader goes away before the first-run banner is
    // printed; the command must end like a Unix tool, not panic.
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .env("REDOUBT_KT_EPOCH_MS", "20")
        .args(["server", "--data"])
        .arg(root.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the server kept running with its stdout closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}
