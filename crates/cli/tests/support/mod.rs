#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // test support: a failed step must fail loudly
//! Driving the real `redoubt` binary from tests: commands with a deadline, their `--json`
//! output, and a server process on 127.0.0.1.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_redoubt");

/// Longest any single CLI command may take before the test gives up on it.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(90);

/// Runs `redoubt --profile PROFILE ARGS...` with stdin closed (not a terminal), a clean
/// environment for the `REDOUBT_*` variables, and `env` added; bounded by a deadline.
pub fn run(profile: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("--profile")
        .arg(profile)
        .args(args)
        .env_remove("REDOUBT_PASSCODE")
        .env_remove("REDOUBT_NEW_PASSCODE")
        .env_remove("REDOUBT_PROFILE")
        .env_remove("RUST_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    output_within(&mut command, COMMAND_DEADLINE, &format!("redoubt {args:?}"))
}

/// Runs `command` with stdin closed and its output collected, for at most `limit` (past it,
/// kills it and fails naming `what`).
pub fn output_within(command: &mut Command, limit: Duration, what: &str) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).unwrap();
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stderr.read_to_end(&mut buf).unwrap();
        buf
    });
    let status = wait_within(&mut child, limit, what);
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Runs a command that must succeed and print one JSON document.
pub fn json_ok(profile: &Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    let out = run(profile, args, env);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Runs a `--json` command that must fail, and returns its `{"error": {...}}` object from
/// stderr (other lines, such as log warnings or notes, may precede it).
pub fn json_error(profile: &Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    let out = run(profile, args, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{args:?} should have failed; stdout: {}; stderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("{\"error\""))
        .unwrap_or_else(|| panic!("{args:?}: no JSON error on stderr: {stderr}"));
    let error: Value = serde_json::from_str(line).unwrap();
    assert!(error["error"]["code"].is_string(), "{error}");
    assert!(error["error"]["message"].is_string(), "{error}");
    error["error"].clone()
}

pub fn message(error: &Value) -> &str {
    error["message"].as_str().unwrap()
}

pub struct ServerProcess {
    child: Child,
    log: PathBuf,
}

impl ServerProcess {
    pub fn start(data: &Path) -> Self {
        Self::start_on(data, "127.0.0.1:0")
    }

    /// Starts `redoubt server` on `listen`; its log goes to `DATA.log` beside the data
    /// folder (a file, not a pipe: a chatty server must never block on a full pipe).
    pub fn start_on(data: &Path, listen: &str) -> Self {
        Self::start_with_env(data, listen, &[])
    }

    /// [`Self::start_on`] with `env` added to the server's environment.
    pub fn start_with_env(data: &Path, listen: &str, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(BIN);
        command
            .env("REDOUBT_KT_EPOCH_MS", "20")
            .args(["server", "--data"])
            .arg(data)
            .args(["--listen", listen, "--no-qr"])
            // REDOUBT_TEST_SERVER_LOG=filter turns the server's log up (into DATA.log).
            .env(
                "RUST_LOG",
                std::env::var("REDOUBT_TEST_SERVER_LOG").unwrap_or_default(),
            )
            .envs(env.iter().copied());
        Self::spawn(&mut command, &data.with_extension("log"))
    }

    /// Starts a server from `command` (another binary, or under another user), its stderr
    /// going to `log`.
    pub fn spawn(command: &mut Command, log: &Path) -> Self {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        Self {
            child,
            log: log.to_owned(),
        }
    }

    /// The process id (for signals such as SIGSTOP).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for the process to end by itself (a test crash point).
    pub fn wait_for_exit(mut self, deadline: Duration) {
        let end = Instant::now() + deadline;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < end, "the server is still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the process gets no chance to finish anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns the server's log.
    pub fn terminate(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.log();
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

/// Waits (bounded) until something accepts connections on `address`: a restarted
/// server is serving.
pub fn wait_until_listening(address: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {address}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (bounded) for a file the server writes, complete with its final newline.
pub fn wait_for(path: &Path) -> String {
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

pub fn write(root: &Path, name: &str, text: &str) -> PathBuf {
    let path = root.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The paths of every file under `dir`.
pub fn file_paths(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Every file under `dir`, read whole (those that vanish meanwhile are skipped).
pub fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    file_paths(dir)
        .into_iter()
        .filter_map(|path| std::fs::read(&path).ok().map(|bytes| (path, bytes)))
        .collect()
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Polls `check` until it returns `Some`, for at most `deadline`.
pub fn eventually<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// An organisation for a test: a server process, its admin's device, and users' devices,
/// each profile a folder under `root`.
pub struct Org {
    pub root: PathBuf,
    pub data: PathBuf,
    pub admin: PathBuf,
    pub server: Option<ServerProcess>,
}

impl Org {
    /// Starts a server on `listen`, enrols the admin and one device per `(user, device)`
    /// (a user's first device creates the user).
    pub fn start(root: &Path, listen: &str, devices: &[(&str, &str)]) -> Org {
        Self::start_with_env(root, listen, devices, &[])
    }

    /// [`Self::start`] with `env` added to the server's environment.
    pub fn start_with_env(root: &Path, listen: &str, devices: &[(&str, &str)], env: &[(&str, &str)]) -> Org {
        let data = root.join("redoubt-data");
        let server = ServerProcess::start_with_env(&data, listen, env);
        let admin = root.join("admin");
        let code = wait_for(&data.join("admin-activation.txt"));
        json_ok(&admin, &["enroll", code.trim(), "--json"], &[]);
        let org = Org {
            root: root.to_owned(),
            data,
            admin,
            server: Some(server),
        };
        let mut users = std::collections::BTreeSet::new();
        for (user, device) in devices {
            let verb = if users.insert(*user) { "user" } else { "device" };
            let issued = org.admin(&["admin", verb, "add", user, "--json", "--no-qr"]);
            let profile = org.profile(device);
            let code = issued["code"].as_str().unwrap();
            // Enrolling publishes the device's key packages: others can add it at once.
            json_ok(&profile, &["enroll", code, "--name", device, "--json"], &[]);
        }
        org
    }

    /// Enrols another device of an existing `user`; returns its profile folder.
    pub fn enroll_device(&self, user: &str, device: &str) -> PathBuf {
        let issued = self.admin(&["admin", "device", "add", user, "--json", "--no-qr"]);
        let profile = self.profile(device);
        let code = issued["code"].as_str().unwrap();
        json_ok(&profile, &["enroll", code, "--name", device, "--json"], &[]);
        profile
    }

    pub fn profile(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Runs an admin command that must succeed and print JSON.
    pub fn admin(&self, args: &[&str]) -> Value {
        json_ok(&self.admin, args, &[])
    }

    /// `admin mail set` to IMAP and SMTP on loopback (no TLS), with the service account.
    pub fn set_mail(&self, imap_port: u16, smtp_port: u16, master_user: &str, password: &str) -> Value {
        let password_file = write(&self.root, "master-password", &format!("{password}\n"));
        let imap = format!("127.0.0.1:{imap_port}");
        let smtp = format!("127.0.0.1:{smtp_port}");
        self.admin(&[
            "admin",
            "mail",
            "set",
            "--imap",
            &imap,
            "--smtp",
            &smtp,
            "--security",
            "none",
            "--master-user",
            master_user,
            "--master-password-file",
            password_file.to_str().unwrap(),
            "--domain",
            "corp.test",
            "--json",
        ])
    }
}

/// xorshift64*: the crash tests' random choices (what to kill, when), reproducible from the
/// seed each test prints.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// What the crash tests check after their devices caught up: every message the server
/// acknowledged (`acked`: sender → (group, text) in order) is on every member device of its
/// group exactly once and in its sender's order, every member is at the same epoch, and all
/// members hold the same history in the same order.
pub fn assert_delivered_once_in_order(
    messengers: &std::collections::BTreeMap<&str, redoubt_client::Messenger>,
    groups: &[(&str, &[&str])],
    acked: &std::collections::BTreeMap<&str, Vec<(String, String)>>,
) {
    use std::collections::BTreeSet;
    for (group, members) in groups {
        let mut epochs = BTreeSet::new();
        let mut histories = Vec::new();
        for member in members.iter() {
            let messenger = &messengers[member];
            let conversation = messenger.conversation(group).unwrap().unwrap();
            epochs.insert(messenger.epoch(&conversation).unwrap());
            let texts: Vec<String> = messenger
                .messages(&conversation)
                .unwrap()
                .into_iter()
                .map(|m| m.text)
                .collect();
            let unique: BTreeSet<&String> = texts.iter().collect();
            assert_eq!(
                unique.len(),
                texts.len(),
                "{member} has a duplicate in {group}: {texts:?}"
            );
            for (sender, sent) in acked {
                let expected: Vec<&String> =
                    sent.iter().filter(|(g, _)| g == group).map(|(_, t)| t).collect();
                let got: Vec<&String> = texts.iter().filter(|t| expected.contains(t)).collect();
                assert_eq!(
                    got, expected,
                    "{member} in {group}: {sender}'s messages missing or out of order"
                );
            }
            histories.push((member, texts));
        }
        assert_eq!(
            epochs.len(),
            1,
            "members of {group} are at different epochs: {epochs:?}"
        );
        let (first, reference) = &histories[0];
        for (member, texts) in &histories[1..] {
            assert_eq!(texts, reference, "{member} and {first} disagree on {group}");
        }
    }
}

/// The row of `admin device list --json` for the device called `name`.
pub fn device_row(devices: &Value, name: &str) -> Value {
    let rows: Vec<&Value> = devices
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["name"] == name)
        .collect();
    assert_eq!(rows.len(), 1, "one device called {name}: {devices:#}");
    rows[0].clone()
}

/// Waits for `child` at most `limit`; past it, kills it and fails naming `what`.
pub fn wait_within(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Copies the folder `from` into `to` (created), recursively: a fixture into a test's
/// temporary folder, where the server and devices may change it.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Runs `read --json` (fetching new messages first), which prints one JSON document per
/// message; returns them.
pub fn read_messages(profile: &Path) -> Vec<Value> {
    read_messages_in(profile, None)
}

/// [`read_messages`] of one conversation (all with `None`).
pub fn read_messages_in(profile: &Path, conversation: Option<&str>) -> Vec<Value> {
    let mut args = vec!["read"];
    args.extend(conversation);
    args.push("--json");
    let out = run(profile, &args, &[]);
    assert!(
        out.status.success(),
        "read failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The texts a device reads in `conversation` (all conversations with `None`), in order.
pub fn read_texts(profile: &Path, conversation: Option<&str>) -> Vec<String> {
    read_messages_in(profile, conversation)
        .iter()
        .filter_map(|m| m["text"].as_str().map(str::to_owned))
        .collect()
}
