#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Several `redoubt server` processes over one PostgreSQL database (a real one, started on
//! loopback for the test run): devices spread over three nodes exchange messages in groups
//! while nodes are SIGKILLed and restarted (and PostgreSQL itself once); a node paused with
//! SIGSTOP cannot get a stale commit accepted; every acknowledged message reaches every
//! member device exactly once, in order, at the same epoch; devices of a dead node go to
//! another by themselves.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use redoubt_client::{Messenger, Profile, Session};
use redoubt_proto::{ActivationCode, DeviceName, Event, UserName};
use redoubt_store_postgres::testing::TestPostgres;
use support::{Rng, ServerProcess, free_port, json_ok, wait_for, wait_until_listening};

/// One node: its data folder (a copy of the node secrets), address and process.
struct Node {
    data: PathBuf,
    address: String,
    database: String,
    process: Option<ServerProcess>,
}

impl Node {
    fn start(data: &Path, database: &str) -> Self {
        let mut node = Self {
            data: data.to_owned(),
            address: format!("127.0.0.1:{}", free_port()),
            database: database.to_owned(),
            process: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let process = ServerProcess::start_with_env(
            &self.data,
            &self.address,
            &[("REDOUBT_DATABASE", self.database.as_str())],
        );
        self.process = Some(process);
        wait_until_listening(&self.address);
    }

    fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.process.as_ref().unwrap().id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// The node secrets every node shares: the configuration, the root key, the TLS pair.
fn copy_node_secrets(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("tls")).unwrap();
    for file in [
        "redoubt.toml",
        "org-root.key",
        "transparency.key",
        "tls/cert.pem",
        "tls/key.pem",
    ] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

/// Three nodes on a fresh database of `postgres`, the first admin enrolled (on node 0).
async fn cluster(root: &Path, postgres: &TestPostgres) -> (Vec<Node>, Session) {
    let database = postgres.fresh_database().await;
    let first = Node::start(&root.join("node0"), &database);
    let code = wait_for(&first.data.join("admin-activation.txt"));
    let mut nodes = vec![first];
    for i in 1..3 {
        let data = root.join(format!("node{i}"));
        copy_node_secrets(&nodes[0].data, &data);
        nodes.push(Node::start(&data, &database));
    }
    let admin = enroll(root, "admin", &code).await;
    let admin = Session::open(&admin).await.unwrap();
    (nodes, admin)
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

/// Makes a profile prefer `address` (as a device enrolled there would).
fn point_at(root: &Path, name: &str, address: &str) -> Profile {
    let path = root.join(name).join("profile.json");
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    json["server"] = serde_json::Value::String(address.to_owned());
    json["last_used"] = serde_json::Value::String(address.to_owned());
    std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    Profile::load(&root.join(name), None).unwrap()
}

/// Users, each with one device on the node given, and their messengers.
async fn users_on(
    root: &Path,
    admin: &mut Session,
    nodes: &[Node],
    users: &[(&'static str, usize)],
) -> BTreeMap<&'static str, Messenger> {
    let mut messengers = BTreeMap::new();
    for (user, node) in users {
        let code = admin
            .admin_user_add(UserName::parse(user).unwrap(), None)
            .await
            .unwrap()
            .code;
        enroll(root, user, &code).await;
        let profile = point_at(root, user, &nodes[*node].address);
        messengers.insert(*user, Messenger::open(&profile).await.unwrap());
    }
    messengers
}

fn names(members: &[&str]) -> Vec<UserName> {
    members.iter().map(|u| UserName::parse(u).unwrap()).collect()
}

/// The texts of a conversation on one device.
fn texts(messenger: &Messenger, group: &str) -> Vec<String> {
    let conversation = messenger.conversation(group).unwrap().unwrap();
    messenger
        .messages(&conversation)
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_message_once_in_order_through_node_and_database_restarts() {
    let seed = std::env::var("REDOUBT_CLUSTER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("cluster test seed {seed} (REDOUBT_CLUSTER_SEED to repeat)");
    let mut rng = Rng(seed);
    let root = tempfile::tempdir().unwrap();
    // A PostgreSQL of its own: this test restarts it.
    let postgres = TestPostgres::start().unwrap();
    let (mut nodes, mut admin) = cluster(root.path(), &postgres).await;

    // Every node is listed, and devices learn every node's address at enrolment.
    let listed = support::eventually("three nodes up", Duration::from_secs(30), || {
        let nodes = json_ok(
            &root.path().join("admin"),
            &["admin", "cluster", "list", "--json"],
            &[],
        );
        let up = nodes
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["state"] == "up")
            .count();
        (up == 3).then_some(nodes)
    });
    for node in &nodes {
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["public_address"] == node.address.as_str()),
            "{} not in {listed}",
            node.address
        );
    }

    // Each node refreshes the list it gives devices at its next heartbeat (every 5 s).
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let mut messengers = users_on(
        root.path(),
        &mut admin,
        &nodes,
        &[("ann", 0), ("ben", 1), ("cat", 2), ("dan", 1)],
    )
    .await;
    let profile: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join("ben/profile.json")).unwrap()).unwrap();
    let known: BTreeSet<&str> = profile["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .chain(std::iter::once(&profile["server"]))
        .map(|a| a.as_str().unwrap())
        .collect();
    let all: BTreeSet<&str> = nodes.iter().map(|n| n.address.as_str()).collect();
    assert_eq!(known, all, "{profile}");

    let groups: [(&str, &[&str]); 3] = [
        ("alpha", &["ann", "ben", "cat"]),
        ("beta", &["ben", "cat", "dan"]),
        ("gamma", &["ann", "dan"]),
    ];
    for (name, members) in groups {
        let creator = messengers.get_mut(members[0]).unwrap();
        creator
            .create_conversation(name, &names(&members[1..]), false)
            .await
            .unwrap();
    }
    for messenger in messengers.values_mut() {
        messenger.sync().await.unwrap();
    }

    // Live across nodes: Ann's message (node 0) is pushed to Ben's session (node 1) and
    // Cat's (node 2) at once, without their asking.
    let (_, seq) = messengers
        .get_mut("ann")
        .unwrap()
        .send_text("alpha", "hello from node 0")
        .await
        .unwrap();
    for reader in ["ben", "cat"] {
        let messenger = messengers.get_mut(reader).unwrap();
        let event = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Event::GroupAppended { seq: got, .. } = messenger.next_event().await.unwrap()
                    && got >= seq
                {
                    return got;
                }
            }
        })
        .await;
        assert!(
            event.is_ok(),
            "{reader} was not told of the message from another node"
        );
        messenger.sync().await.unwrap();
        assert_eq!(texts(messenger, "alpha").last().unwrap(), "hello from node 0");
    }

    // Everyone sends (a commit every fifth message) while nodes are killed one at a time
    // and restarted, and PostgreSQL is restarted once.
    let per_sender = 24;
    let mut tasks = Vec::new();
    for (user, mut messenger) in std::mem::take(&mut messengers) {
        let mine: Vec<&str> = groups
            .iter()
            .filter(|(_, m)| m.contains(&user))
            .map(|(n, _)| *n)
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..per_sender {
                let group = mine[i % mine.len()];
                let text = format!("{user}-{i}");
                match messenger.send_text(group, &text).await {
                    Ok(_) => acked.push((group.to_owned(), text)),
                    Err(error) => eprintln!("{user}: send {i} not acknowledged: {error}"),
                }
                if i % 5 == 4 {
                    let conversation = messenger.conversation(group).unwrap().unwrap();
                    if let Err(error) = messenger.update_keys(&conversation).await {
                        eprintln!("{user}: commit not acknowledged: {error}");
                    }
                }
            }
            (user, messenger, acked)
        }));
    }
    let chaos = tokio::task::spawn_blocking(move || {
        let mut kills = 0;
        for round in 0..4 {
            std::thread::sleep(Duration::from_millis(rng.between(200, 900)));
            if round == 2 {
                postgres.restart();
                continue;
            }
            let victim = rng.between(0, 2) as usize;
            nodes[victim].kill();
            kills += 1;
            std::thread::sleep(Duration::from_millis(rng.between(100, 600)));
            nodes[victim].spawn();
        }
        (nodes, kills, postgres)
    });
    let mut acked: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    for task in tasks {
        let (user, messenger, sent) = task.await.unwrap();
        messengers.insert(user, messenger);
        acked.insert(user, sent);
    }
    let (nodes, kills, postgres) = chaos.await.unwrap();

    for _ in 0..2 {
        for messenger in messengers.values_mut() {
            messenger.reconnect(8, |_, _| {}).await.unwrap();
            messenger.sync().await.unwrap();
        }
    }
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(
        total >= per_sender * 4 / 2,
        "too few messages acknowledged: {total}"
    );
    support::assert_delivered_once_in_order(&messengers, &groups, &acked);
    eprintln!(
        "cluster test: {kills} node kills and a database restart; {total} acknowledged messages checked"
    );
    drop(nodes);
    drop(postgres);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_a_commit_elsewhere_gets_no_stale_commit_accepted() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, mut admin) = cluster(root.path(), TestPostgres::shared()).await;
    let mut messengers = users_on(root.path(), &mut admin, &nodes, &[("ann", 0), ("ben", 1)]).await;
    let ann = messengers.remove("ann").unwrap();
    let mut ben = messengers.remove("ben").unwrap();
    let mut ann = ann;
    ann.create_conversation("race", &names(&["ben"]), false)
        .await
        .unwrap();
    ben.sync().await.unwrap();
    let conversation = ben.conversation("race").unwrap().unwrap();
    let epoch = ben.epoch(&conversation).unwrap();

    // Node 1 (Ben's) is frozen while Ben's commit is on its way to it; meanwhile Ann
    // commits through node 0. When node 1 wakes, the commit it holds is for an old epoch.
    nodes[1].signal("-STOP");
    let paused_commit = tokio::spawn(async move {
        let result = ben.update_keys(&conversation).await;
        (ben, result)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let conversation = ann.conversation("race").unwrap().unwrap();
    ann.update_keys(&conversation).await.unwrap();
    assert_eq!(ann.epoch(&conversation).unwrap(), epoch + 1);
    nodes[1].signal("-CONT");
    let (mut ben, result) = tokio::time::timeout(Duration::from_secs(60), paused_commit)
        .await
        .unwrap()
        .unwrap();
    eprintln!("Ben's commit through the paused node: {result:?}");

    // One commit per epoch: both devices end at the same epoch, and each can read the other.
    ann.sync().await.unwrap();
    ben.sync().await.unwrap();
    ann.sync().await.unwrap();
    let epoch_ann = ann.epoch(&ann.conversation("race").unwrap().unwrap()).unwrap();
    let epoch_ben = ben.epoch(&ben.conversation("race").unwrap().unwrap()).unwrap();
    assert_eq!(epoch_ann, epoch_ben);
    ann.send_text("race", "after the pause").await.unwrap();
    ben.send_text("race", "and back").await.unwrap();
    ann.sync().await.unwrap();
    ben.sync().await.unwrap();
    assert_eq!(texts(&ann, "race"), ["after the pause", "and back"]);
    assert_eq!(texts(&ben, "race"), ["after the pause", "and back"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_of_a_killed_node_fail_over_by_themselves() {
    let root = tempfile::tempdir().unwrap();
    let (mut nodes, mut admin) = cluster(root.path(), TestPostgres::shared()).await;
    let mut messengers = users_on(root.path(), &mut admin, &nodes, &[("ann", 0), ("ben", 2)]).await;
    messengers
        .get_mut("ann")
        .unwrap()
        .create_conversation("pair", &names(&["ben"]), false)
        .await
        .unwrap();
    messengers.get_mut("ben").unwrap().sync().await.unwrap();

    // Ben's node dies; his next send goes through another node with no command from him.
    nodes[2].kill();
    let started = Instant::now();
    let ben = messengers.get_mut("ben").unwrap();
    ben.send_text("pair", "still here").await.unwrap();
    eprintln!(
        "failover: Ben's send went through another node after {:?}",
        started.elapsed()
    );
    let ann = messengers.get_mut("ann").unwrap();
    ann.sync().await.unwrap();
    assert_eq!(texts(ann, "pair"), ["still here"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_node_closes_the_devices_session_on_another() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, mut admin) = cluster(root.path(), TestPostgres::shared()).await;
    let mut messengers = users_on(root.path(), &mut admin, &nodes, &[("ann", 1)]).await;
    let mut ann = messengers.remove("ann").unwrap();
    let device = ann.session().info().device_id;
    // The admin's session is on node 0, Ann's on node 1.
    let revoked = admin
        .request(redoubt_proto::Request::AdminDeviceRevoke { device })
        .await
        .unwrap();
    assert!(
        matches!(revoked, redoubt_proto::Response::Revoked { .. }),
        "{revoked:?}"
    );
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if ann.next_event().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "Ann's session on node 1 stayed open after her revocation on node 0"
    );
    // And no node lets her back in.
    let profile = Profile::load(&root.path().join("ann"), None).unwrap();
    for node in &nodes {
        let profile = point_at(root.path(), "ann", &node.address);
        let error = Session::open(&profile).await.unwrap_err();
        assert!(error.to_string().contains("revoked"), "{}: {error}", node.address);
    }
    drop(profile);
}

#[test]
fn a_hostile_or_unreachable_database_url_is_refused_clearly_without_its_password() {
    let root = tempfile::tempdir().unwrap();
    for (url, expected) in [
        (
            "postgres://redoubt:S3cretPassw0rd@127.0.0.1:1/redoubt",
            "database",
        ),
        ("mysql://redoubt:S3cretPassw0rd@127.0.0.1/redoubt", "database"),
        (
            "postgres://redoubt:S3cretPassw0rd@127.0.0.1:1/redoubt?sslmode=bogus",
            "database",
        ),
        ("not a url at all S3cretPassw0rd", "database"),
    ] {
        let data = root.path().join(format!("d{}", free_port()));
        let output = Command::new(env!("CARGO_BIN_EXE_redoubt"))
            .env("REDOUBT_KT_EPOCH_MS", "20")
            .args(["server", "--data"])
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--no-qr"])
            .env("REDOUBT_DATABASE", url)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{url} was accepted");
        assert!(stderr.contains(expected), "{url}: {stderr}");
        assert!(
            !stderr.contains("S3cretPassw0rd"),
            "{url}: the password reached the log: {stderr}"
        );
        // Nothing was initialised against a database that is not there.
        assert!(!data.join("org-root.key").exists(), "{url}: a root key was made");
    }
}

/// `read --json`: one JSON document per message.
fn read_texts(profile: &Path) -> Vec<String> {
    let out = support::run(profile, &["read", "--json"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|m| m["text"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_moves_into_postgresql_and_its_devices_carry_on() {
    let root = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut org = support::Org::start(root.path(), &listen, &[("alice", "alice"), ("bob", "bob")]);
    let alice = org.profile("alice");
    let bob = org.profile("bob");
    json_ok(
        &alice,
        &["group", "create", "ops", "--members", "bob", "--json"],
        &[],
    );
    json_ok(&alice, &["send", "ops", "before the move", "--json"], &[]);
    let file = root.path().join("plan.bin");
    let content: Vec<u8> = (0..150_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    let sent = json_ok(
        &alice,
        &["send", "ops", "--file", file.to_str().unwrap(), "--json"],
        &[],
    );
    let attachment = sent["id"].as_str().unwrap().to_owned();
    assert!(read_texts(&bob).contains(&"before the move".to_owned()));
    org.admin(&["admin", "role", "grant", "bob", "auditor", "--json"]);
    org.server.take().unwrap().terminate();

    let database = TestPostgres::shared().fresh_database().await;
    let data = org.data.to_str().unwrap().to_owned();
    let moved = json_ok(
        &org.admin,
        &["server", "migrate", "--from-sqlite", &data, "--json"],
        &[("REDOUBT_DATABASE", database.as_str())],
    );
    assert_eq!(moved["blobs"], 1, "{moved}");
    assert!(moved["rows"]["audit_log"].as_u64().unwrap() >= 4, "{moved}");
    // Never into a database that holds an organisation.
    let again = support::json_error(
        &org.admin,
        &["server", "migrate", "--from-sqlite", &data, "--json"],
        &[("REDOUBT_DATABASE", database.as_str())],
    );
    assert!(support::message(&again).contains("empty"), "{again}");

    // The same folder is now a node on PostgreSQL, on the same address: the devices
    // reconnect to it and carry on, the attachment is served from the database.
    let _node = ServerProcess::start_with_env(&org.data, &listen, &[("REDOUBT_DATABASE", database.as_str())]);
    wait_until_listening(&listen);
    json_ok(&bob, &["send", "ops", "after the move", "--json"], &[]);
    let texts = read_texts(&alice);
    assert!(
        texts.contains(&"before the move".to_owned()) && texts.contains(&"after the move".to_owned()),
        "{texts:?}"
    );
    let saved = root.path().join("saved.bin");
    let fetched = json_ok(
        &bob,
        &["fetch", &attachment, "--out", saved.to_str().unwrap(), "--json"],
        &[],
    );
    assert_eq!(fetched["verified"], true);
    assert_eq!(std::fs::read(&saved).unwrap(), content);
    let verified = org.admin(&["admin", "audit", "verify", "--json"]);
    assert_eq!(verified["verified"], true, "{verified}");
    let nodes = org.admin(&["admin", "cluster", "list", "--json"]);
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
}
