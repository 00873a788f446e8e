#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Crash safety of the server: the real `redoubt server` process is killed with SIGKILL at
//! random moments while devices send messages into several groups (commits mixed in), and
//! restarted each time. Afterwards every message the server acknowledged has reached every
//! member device exactly once and in order, every member of a group is at the same epoch,
//! and the database passes SQLite's integrity check.
//!
//! `REDOUBT_CRASH_KILLS` and `REDOUBT_CRASH_MESSAGES` (per sender) make longer runs; the
//! seed is printed so a failing run can be repeated with `REDOUBT_CRASH_SEED`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redoubt_client::{Messenger, Profile, Session};
use redoubt_proto::{ActivationCode, DeviceName, UserName};

mod support;

use support::Rng;

const BIN: &str = env!("CARGO_BIN_EXE_redoubt");

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server {
    data: PathBuf,
    listen: String,
    child: Option<Child>,
}

impl Server {
    fn start(data: &Path, port: u16) -> Self {
        let mut server = Self {
            data: data.to_owned(),
            listen: format!("127.0.0.1:{port}"),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new(BIN)
            .env("REDOUBT_KT_EPOCH_MS", "20")
            .args(["server", "--data"])
            .arg(&self.data)
            .args(["--listen", &self.listen, "--no-qr"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Ready when it accepts connections (the port is bound after the store is open).
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&self.listen).is_err() {
            assert!(Instant::now() < deadline, "the server did not come back");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL: no shutdown code runs
            child.wait().unwrap();
        }
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "the server did not stop");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn enroll(root: &Path, name: &str, code: &str) -> Profile {
    redoubt_client::enroll(
        &root.join(name),
        &ActivationCode::parse(code.trim()).unwrap(),
        DeviceName::parse(name).unwrap(),
    )
    .await
    .unwrap()
}

/// What one device saw acknowledged: (group name, text) in the order of acknowledgement.
type Acked = Vec<(String, String)>;

/// Sends `count` messages round-robin into `groups`, with a key-update commit every
/// fifth message. Only what the server acknowledged is recorded; a send that fails is
/// not (it may or may not have been stored, but it must never be duplicated).
async fn sender(
    mut messenger: Messenger,
    me: &'static str,
    groups: Vec<String>,
    count: u64,
    commits: Arc<AtomicU64>,
) -> (&'static str, Messenger, Acked) {
    let mut acked = Vec::new();
    for i in 0..count {
        let group = &groups[(i as usize) % groups.len()];
        let text = format!("{me}-{i}");
        match messenger.send_text(group, &text).await {
            Ok(_) => acked.push((group.clone(), text)),
            Err(error) => eprintln!("{me}: send {i} not acknowledged: {error}"),
        }
        if i % 5 == 4 {
            let conversation = messenger.conversation(group).unwrap().unwrap();
            match messenger.update_keys(&conversation).await {
                Ok(_) => {
                    commits.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => eprintln!("{me}: commit not acknowledged: {error}"),
            }
        }
    }
    (me, messenger, acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_exactly_once_in_order() {
    let kills_wanted = env_number("REDOUBT_CRASH_KILLS", 5);
    let per_sender = env_number("REDOUBT_CRASH_MESSAGES", 30);
    let seed = env_number(
        "REDOUBT_CRASH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    eprintln!("crash test seed {seed} (REDOUBT_CRASH_SEED to repeat)");
    let mut rng = Rng(seed);

    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let port = free_port();
    let mut server = Server::start(&data, port);
    // The port is bound before the data folder is ready: wait for the admin's code.
    let deadline = Instant::now() + Duration::from_secs(60);
    let admin_code = loop {
        if let Ok(text) = std::fs::read_to_string(data.join("admin-activation.txt"))
            && text.ends_with('\n')
        {
            break text;
        }
        assert!(Instant::now() < deadline, "no admin activation code");
        std::thread::sleep(Duration::from_millis(20));
    };
    let admin = enroll(root.path(), "admin", &admin_code).await;
    let mut admin = Session::open(&admin).await.unwrap();

    // Four users, one device each; three overlapping groups.
    let users = ["ann", "ben", "cat", "dan"];
    let mut messengers = BTreeMap::new();
    for user in users {
        let code = admin
            .admin_user_add(UserName::parse(user).unwrap(), None)
            .await
            .unwrap()
            .code;
        let profile = enroll(root.path(), user, &code).await;
        messengers.insert(user, Messenger::open(&profile).await.unwrap());
    }
    let groups: [(&str, &[&str]); 3] = [
        ("alpha", &["ann", "ben", "cat"]),
        ("beta", &["ben", "cat", "dan"]),
        ("gamma", &["ann", "dan"]),
    ];
    for (name, members) in groups {
        let creator = messengers.get_mut(members[0]).unwrap();
        let others: Vec<UserName> = members[1..].iter().map(|u| UserName::parse(u).unwrap()).collect();
        creator.create_conversation(name, &others, false).await.unwrap();
    }
    for messenger in messengers.values_mut() {
        messenger.sync().await.unwrap();
    }
    admin.close().await;

    // Send from every device while the server is killed and restarted.
    let commits = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (user, messenger) in std::mem::take(&mut messengers) {
        let mine: Vec<String> = groups
            .iter()
            .filter(|(_, m)| m.contains(&user))
            .map(|(n, _)| n.to_string())
            .collect();
        tasks.push(tokio::spawn(sender(
            messenger,
            user,
            mine,
            per_sender,
            commits.clone(),
        )));
    }
    let sending = Arc::new(AtomicBool::new(true));
    let killer = {
        let sending = sending.clone();
        tokio::task::spawn_blocking(move || {
            let mut kills = 0;
            while kills < kills_wanted && sending.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(rng.between(150, 900)));
                server.kill();
                kills += 1;
                std::thread::sleep(Duration::from_millis(rng.between(0, 300)));
                server.spawn();
            }
            (server, kills)
        })
    };
    let mut acked: BTreeMap<String, Acked> = BTreeMap::new();
    for task in tasks {
        let (user, messenger, sent) = task.await.unwrap();
        messengers.insert(user, messenger);
        acked.insert(user.to_owned(), sent);
    }
    sending.store(false, Ordering::Relaxed);
    let (mut server, kills) = killer.await.unwrap();

    // Everyone catches up (twice: the first sync may commit pending proposals).
    for _ in 0..2 {
        for messenger in messengers.values_mut() {
            messenger.reconnect(8, |_, _| {}).await.unwrap();
            messenger.sync().await.unwrap();
        }
    }

    let total: usize = acked.values().map(Vec::len).sum();
    let acked: BTreeMap<&str, Acked> = acked.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    support::assert_delivered_once_in_order(&messengers, &groups, &acked);
    server.terminate();
    let store = redoubt_store_sqlite::SqliteStore::open(&data.join("redoubt.db"))
        .await
        .unwrap();
    store.integrity_check().await.unwrap();
    eprintln!(
        "crash test: {kills} SIGKILLs survived, {total} acknowledged messages and {} commits checked on every member device",
        commits.load(Ordering::Relaxed)
    );
    assert!(kills >= 1);
}
