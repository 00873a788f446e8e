#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! The outside auditor over a long real log: a data folder made by the real server, 10,000
//! key-directory epochs published into it (each one user's device set changing), and the
//! real `redoubt kt audit` against the real server process, which together verify every
//! epoch from 0 to the newest. Then the store is tampered with as a compromised server
//! could — one tree record removed, one altered — and a fresh auditor must fail, naming an
//! epoch.
//!
//! The auditor runs as it is deployed, every `AUDIT_EVERY` epochs with its state kept (the
//! server stopped while epochs are published into its folder, then started for the audit).
//! A fresh auditor cannot catch up on 10,000 epochs yet: the server makes an old epoch's
//! append-only proof from the tree as it is now (akd's `Directory::audit`), so the proof
//! grows with every change made since, and catching up is sent gigabytes (the ignored test
//! at the end, and BENCHMARKS.md's "Key transparency").
//!
//! The store's devices follow the log (a device row per certificate, revoked when
//! replaced), as they would in a real run: the server, which compares the two at start,
//! then has nothing to correct, and every epoch is one of the changes published here.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redoubt_proto::{ActivationCode, UserName};
use redoubt_server::KeyDirectory;
use serde_json::Value;
use support::{BIN, Rng, ServerProcess, wait_for, wait_until_listening};

/// Changes published, one epoch each.
const CHANGES: u64 = 10_000;
/// The auditor runs after every this many changes. Fewer means more server restarts, more
/// means larger proofs (each is ~450 bytes per change made after its epoch, at this size).
const AUDIT_EVERY: u64 = 50;
/// Users they are spread over, the first ones far more often (see `pick_user`).
const USERS: u64 = 300;
/// A user's devices at most: past that a change replaces one device's certificate.
const DEVICES_MAX: usize = 3;
/// The changes whose new tree leaves are candidates for tampering: early ones, so that a
/// fresh auditor, which verifies every epoch before, reaches them within its connection's
/// `auth_timeout_ms` (an unauthenticated session's lifetime, which the auditor does not
/// survive yet).
const WATCHED: std::ops::RangeInclusive<u64> = 101..=120;
/// One auditor run has this long.
const AUDIT_DEADLINE: Duration = Duration::from_secs(600);
/// akd's tree records are keyed by type (2: tree node), label length (u32, big-endian) and
/// label; a leaf's label is a full 256 bits.
const LEAF_KEY_PREFIX: [u8; 5] = [2, 0, 0, 1, 0];

/// A leaf of akd's tree and the epoch it was first written in.
#[derive(Debug, Clone)]
struct Leaf {
    epoch: u64,
    key: Vec<u8>,
}

/// A device change the store's devices follow: a new certificate, and the one it replaced.
#[derive(Debug)]
struct DeviceChange {
    user: UserName,
    certificate: Vec<u8>,
    replaced: Option<Vec<u8>>,
}

/// A data folder made by the real server, and what was published into it.
struct Folder {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    database: PathBuf,
    listen: String,
    /// The server's address and certificate pin, as activation codes carry them.
    address: String,
    pin: String,
    rng: Rng,
    devices: BTreeMap<u64, Vec<Vec<u8>>>,
    changes: u64,
    leaves: Vec<Leaf>,
    publishing: Duration,
}

impl Folder {
    /// A fresh data folder: the real server makes it (organisation, keys, database, epoch
    /// 0), then stops. In memory where there is a tmpfs: each publication is an SQLite
    /// commit, and what is tested here is the audit, not the disk's flushes.
    fn new() -> Folder {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let root = dir.path().to_owned();
        let data = root.join("redoubt-data");
        let listen = format!("127.0.0.1:{}", support::free_port());
        let server = ServerProcess::start_on(&data, &listen);
        let code = wait_for(&data.join("admin-activation.txt"));
        // Serving, its signal handler is in place: SIGTERM stops it cleanly.
        wait_until_listening(&listen);
        server.terminate();
        let code = ActivationCode::parse(code.trim()).unwrap();
        let seed = u64::from(std::process::id()) ^ 0x6b74_6175_6469_7421;
        eprintln!("seed {seed}");
        Folder {
            _dir: dir,
            database: data.join("redoubt.db"),
            data,
            root,
            listen,
            address: code.server.to_string(),
            pin: data_encoding::HEXLOWER.encode(&code.pin.0),
            rng: Rng(seed),
            devices: BTreeMap::new(),
            changes: 0,
            leaves: Vec::new(),
            publishing: Duration::ZERO,
        }
    }

    /// Publishes `count` more changes with the server stopped, one epoch each: a user's
    /// device set gets a new synthetic certificate (added, or past `DEVICES_MAX` replacing
    /// one), and the store's devices follow. Notes the leaves first written by the
    /// `WATCHED` changes.
    async fn publish(&mut self, count: u64) {
        let started = Instant::now();
        let directory = KeyDirectory::open(&self.data).await.unwrap();
        let mut connection = connect(&self.database).await;
        // The leaves there are before a watched change (read only then: it reads them all).
        let watching = self.changes < *WATCHED.end() && self.changes + count >= *WATCHED.start();
        let mut known = if watching {
            leaf_keys(&mut connection).await
        } else {
            BTreeSet::new()
        };
        let mut devices = Vec::new();
        for _ in 0..count {
            self.changes += 1;
            let index = pick_user(&mut self.rng);
            let certificate = certificate(&mut self.rng);
            let set = self.devices.entry(index).or_default();
            let replaced = if set.len() < DEVICES_MAX {
                set.push(certificate.clone());
                None
            } else {
                let at = (self.rng.next() % DEVICES_MAX as u64) as usize;
                Some(std::mem::replace(&mut set[at], certificate.clone()))
            };
            let user = UserName::parse(&format!("audited-{index:03}")).unwrap();
            let epoch = directory.publish(&[(user.clone(), set.clone())]).await.unwrap();
            assert_eq!(epoch, self.changes, "one epoch per change, none other");
            devices.push(DeviceChange {
                user,
                certificate,
                replaced,
            });
            if WATCHED.contains(&self.changes) {
                for key in leaf_keys(&mut connection).await {
                    if known.insert(key.clone()) {
                        self.leaves.push(Leaf { epoch, key });
                    }
                }
            }
        }
        directory.close().await;
        self.follow(&mut connection, &devices).await;
        self.publishing += started.elapsed();
    }

    /// Writes the devices of `changes` into the store, in one transaction: a device row
    /// each, approved; a replaced one revoked.
    async fn follow(&mut self, connection: &mut sqlx::SqliteConnection, changes: &[DeviceChange]) {
        use sqlx::Connection;
        let mut tx = connection.begin().await.unwrap();
        for DeviceChange {
            user,
            certificate,
            replaced,
        } in changes
        {
            sqlx::query("INSERT OR IGNORE INTO users (name, created_at) VALUES (?, 0)")
                .bind(user.as_str())
                .execute(&mut *tx)
                .await
                .unwrap();
            let id: Vec<u8> = (0..2).flat_map(|_| self.rng.next().to_le_bytes()).collect();
            let key: Vec<u8> = (0..4).flat_map(|_| self.rng.next().to_le_bytes()).collect();
            sqlx::query(
                "INSERT INTO devices (id, user_name, name, public_key, certificate, \
                 certificate_serial, certificate_not_after, created_at, approved_at) \
                 VALUES (?, ?, 'synthetic', ?, ?, (SELECT coalesce(max(certificate_serial), 0) + 1 FROM devices), \
                 4102444800, 0, 0)",
            )
            .bind(id)
            .bind(user.as_str())
            .bind(key)
            .bind(certificate)
            .execute(&mut *tx)
            .await
            .unwrap();
            if let Some(replaced) = replaced {
                let revoked = sqlx::query("UPDATE devices SET revoked_at = 1 WHERE certificate = ?")
                    .bind(replaced)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                assert_eq!(revoked.rows_affected(), 1);
            }
        }
        tx.commit().await.unwrap();
    }

    /// The server on this folder, serving.
    fn serve(&self) -> ServerProcess {
        let server = ServerProcess::start_on(&self.data, &self.listen);
        wait_until_listening(&self.listen);
        server
    }

    /// `redoubt kt audit --json` with the state folder `state` (under the folder's root),
    /// bounded by `AUDIT_DEADLINE` (its output goes to files: the support's deadline is for
    /// quick commands). Whether it succeeded, its report, its stderr.
    fn audit(&self, state: &str) -> (bool, Value, String) {
        let out = self.root.join("audit.out");
        let err = self.root.join("audit.err");
        let mut child = Command::new(BIN)
            .arg("--profile")
            .arg(self.root.join("unused-profile"))
            .args([
                "kt",
                "audit",
                "--server",
                &self.address,
                "--pin",
                &self.pin,
                "--state",
            ])
            .arg(self.root.join(state))
            .arg("--json")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + AUDIT_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the auditor did not finish within {AUDIT_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let report = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap_or(Value::Null);
        (status.success(), report, std::fs::read_to_string(&err).unwrap())
    }
}

/// Mostly the first users: the smallest of three uniform draws, so user 0 changes about
/// 100 times and the last users a few times (or never).
fn pick_user(rng: &mut Rng) -> u64 {
    (0..3).map(|_| rng.between(0, USERS - 1)).min().unwrap()
}

fn certificate(rng: &mut Rng) -> Vec<u8> {
    (0..8).flat_map(|_| rng.next().to_le_bytes()).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(database: &Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(database)
        .connect()
        .await
        .unwrap()
}

async fn leaf_keys(connection: &mut sqlx::SqliteConnection) -> BTreeSet<Vec<u8>> {
    sqlx::query_scalar::<_, Vec<u8>>("SELECT key FROM kt_nodes WHERE substr(key, 1, 5) = ?")
        .bind(LEAF_KEY_PREFIX.as_slice())
        .fetch_all(connection)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn node_record(connection: &mut sqlx::SqliteConnection, key: &[u8]) -> Option<Vec<u8>> {
    sqlx::query_scalar("SELECT record FROM kt_nodes WHERE key = ?")
        .bind(key)
        .fetch_optional(connection)
        .await
        .unwrap()
}

/// The newest epoch head the store holds.
async fn newest_epoch(database: &Path) -> u64 {
    let mut connection = connect(database).await;
    let epoch: i64 = sqlx::query_scalar("SELECT max(epoch) FROM kt_heads")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    u64::try_from(epoch).unwrap()
}

/// The epoch an auditor's failure names ("epoch N").
fn named_epoch(stderr: &str) -> u64 {
    let at = stderr
        .find("epoch ")
        .unwrap_or_else(|| panic!("no epoch named: {stderr}"));
    let digits: String = stderr[at + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no epoch named: {stderr}"))
}

/// Where the hash digits of a leaf's record are, when it holds no previous version. akd's
/// records are postcard of its serde types, with labels and hashes as 64 hex digits: a
/// leaf's latest node ends with `None` for both children and its hash (a length, 64, then
/// the digits), and the record with `None` for the previous version.
fn leaf_hash(record: &[u8]) -> Option<std::ops::Range<usize>> {
    let end = record.len();
    let leaf = end > 68
        && record[end - 1] == 0
        && record[end - 66] == 64
        && record[end - 68..end - 66] == [0, 0]
        && record[end - 65..end - 1].iter().all(u8::is_ascii_hexdigit);
    leaf.then(|| end - 65..end - 1)
}

#[test]
fn auditor_verifies_ten_thousand_epochs_and_names_a_tampered_one() {
    let began = Instant::now();
    let runtime = runtime();
    let mut folder = Folder::new();

    // Publish, serve, audit, stop; again until 10,000 changes are published. Each run
    // continues from the auditor's state: together they verify every epoch once, in order.
    let mut verified_to = 0;
    let mut auditing = Duration::ZERO;
    while folder.changes < CHANGES {
        runtime.block_on(folder.publish(AUDIT_EVERY.min(CHANGES - folder.changes)));
        let server = folder.serve();
        let started = Instant::now();
        let (ok, report, stderr) = folder.audit("auditor");
        auditing += started.elapsed();
        if folder.changes.is_multiple_of(1000) {
            eprintln!(
                "epoch {}: {AUDIT_EVERY} epochs verified in {:.2} s",
                folder.changes,
                started.elapsed().as_secs_f64()
            );
        }
        assert!(ok, "{stderr}");
        assert_eq!(report["verified_from"].as_u64(), Some(verified_to), "{report:#}");
        assert_eq!(report["verified_to"].as_u64(), Some(folder.changes), "{report:#}");
        verified_to = folder.changes;
        server.terminate();
    }
    // The server found the log and its devices in agreement: it published nothing itself.
    assert_eq!(runtime.block_on(newest_epoch(&folder.database)), CHANGES);
    eprintln!(
        "published {CHANGES} changes in {:.1} s; the auditor verified epochs 0 to {verified_to} \
         in {:.1} s ({} runs)",
        folder.publishing.as_secs_f64(),
        auditing.as_secs_f64(),
        CHANGES / AUDIT_EVERY
    );

    // A leaf first written by one of the watched changes, as stored now.
    let (leaf, record, hash) = runtime.block_on(async {
        let mut connection = connect(&folder.database).await;
        for leaf in &folder.leaves {
            let record = node_record(&mut connection, &leaf.key).await.unwrap();
            if let Some(hash) = leaf_hash(&record) {
                return (leaf.clone(), record, hash);
            }
        }
        panic!(
            "no leaf of changes {WATCHED:?} is stored as expected: {:?}",
            folder.leaves
        );
    });

    // (a) Removed: the leaf's record is deleted. The server still starts (it reads the
    // aZKS and the root at start, not the leaves), but cannot make the append-only proof
    // of an epoch whose proof walks to that leaf: its own epoch at the latest, or an
    // earlier one whose walk loads it beside a node it descends into. A fresh auditor
    // stops at the first, naming it.
    runtime.block_on(async {
        let mut connection = connect(&folder.database).await;
        let deleted = sqlx::query("DELETE FROM kt_nodes WHERE key = ?")
            .bind(&leaf.key)
            .execute(&mut connection)
            .await
            .unwrap();
        assert_eq!(deleted.rows_affected(), 1);
    });
    let server = folder.serve();
    let (ok, report, stderr) = folder.audit("auditor-removed");
    assert!(!ok, "an auditor passed a store missing a record: {report:#}");
    let epoch = named_epoch(&stderr);
    assert!((1..=leaf.epoch).contains(&epoch), "{stderr}");
    assert!(stderr.contains("gave no proof"), "{stderr}");
    eprintln!(
        "a leaf of epoch {} removed: the auditor failed at epoch {epoch}",
        leaf.epoch
    );
    server.terminate();

    // (b) Altered: the leaf is put back with one hex digit of its hash changed, so the
    // record still decodes. Epochs before the leaf's own never use its hash; its own
    // epoch's proof inserts it with the wrong value, so that epoch is no longer an
    // append-only successor of the one before: a fresh auditor fails at exactly that epoch.
    let mut altered = record.clone();
    let digit = &mut altered[hash.start + 20];
    *digit = if *digit == b'0' { b'1' } else { b'0' };
    runtime.block_on(async {
        let mut connection = connect(&folder.database).await;
        sqlx::query("INSERT INTO kt_nodes (key, record) VALUES (?, ?)")
            .bind(&leaf.key)
            .bind(&altered)
            .execute(&mut connection)
            .await
            .unwrap();
    });
    let server = folder.serve();
    let (ok, report, stderr) = folder.audit("auditor-altered");
    assert!(!ok, "an auditor passed an altered record: {report:#}");
    assert_eq!(named_epoch(&stderr), leaf.epoch, "{stderr}");
    assert!(stderr.contains("not an append-only successor"), "{stderr}");
    server.terminate();
    eprintln!("the whole test took {:.1} s", began.elapsed().as_secs_f64());
}

/// What the test above would be if a fresh auditor could catch up: one run over all 10,000
/// epochs. Today the server makes each old epoch's proof from the current tree, ~100 bytes
/// per change since (epoch 5,000 of 10,000: 501 KB, against 1.3 KB when it was the newest),
/// so this run is sent gigabytes; and the auditor's one unauthenticated connection is
/// closed after `auth_timeout_ms` (10 s), which it does not survive. Run it with
/// `--run-ignored only` once proofs are kept from publication.
#[test]
#[ignore = "a fresh auditor cannot catch up on 10,000 epochs yet (see the comment)"]
fn fresh_auditor_catches_up_on_ten_thousand_epochs() {
    let runtime = runtime();
    let mut folder = Folder::new();
    runtime.block_on(folder.publish(CHANGES));
    let server = folder.serve();
    let started = Instant::now();
    let (ok, report, stderr) = folder.audit("auditor");
    eprintln!(
        "published {CHANGES} changes in {:.1} s; the auditor verified {} epochs in {:.1} s",
        folder.publishing.as_secs_f64(),
        report["epochs_verified"],
        started.elapsed().as_secs_f64()
    );
    assert!(ok, "{stderr}");
    assert_eq!(report["verified_from"], 0, "{report:#}");
    assert_eq!(report["verified_to"].as_u64(), Some(CHANGES), "{report:#}");
    server.terminate();
}
