#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! The outside auditor over a long real log: a data folder made by the real server, 10,000
//! key-directory epochs published into it (each one user's device set changing), and the
//! real `redoubt kt audit` against the real server process. A fresh auditor verifies every
//! epoch from 0 to the newest in one run (each epoch's append-only proof was made when it
//! was published, so catching up is linear); the same auditor then goes on from its state.
//! Then the store is tampered with as a compromised server could — an epoch's proof
//! altered, an epoch removed — and a fresh auditor must fail, naming the epoch. (Two
//! roots for one epoch: `transparency.rs`.)
//!
//! The store's devices follow the log (a device row per certificate, revoked when
//! replaced), as they would in a real run: the server, which compares the two at start,
//! then has nothing to correct, and every epoch is one of the changes published here.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redoubt_proto::{ActivationCode, UserName};
use redoubt_server::{DeviceSet, KeyDirectory};
use serde_json::Value;
use support::{BIN, Rng, ServerProcess, wait_for, wait_until_listening};

/// Changes published, one epoch each.
const CHANGES: u64 = 10_000;
/// Changes published after the first audit, which the same auditor then goes on to.
const MORE: u64 = 50;
/// Users they are spread over, the first ones far more often (see `pick_user`).
const USERS: u64 = 300;
/// A user's devices at most: past that a change replaces one device's certificate.
const DEVICES_MAX: usize = 3;
/// One auditor run has this long.
const AUDIT_DEADLINE: Duration = Duration::from_secs(600);

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
            publishing: Duration::ZERO,
        }
    }

    /// Publishes `count` more changes with the server stopped, one epoch each: a user's
    /// device set gets a new synthetic certificate (added, or past `DEVICES_MAX` replacing
    /// one), and the store's devices follow.
    async fn publish(&mut self, count: u64) {
        let started = Instant::now();
        let directory = KeyDirectory::open(&self.data).await.unwrap();
        let mut connection = connect(&self.database).await;
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
            let logged = DeviceSet {
                certificates: set.clone(),
                approvals: Vec::new(),
            };
            let epoch = directory.publish(&[(user.clone(), logged)]).await.unwrap();
            assert_eq!(epoch, self.changes, "one epoch per change, none other");
            devices.push(DeviceChange {
                user,
                certificate,
                replaced,
            });
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
        self.audit_from(state, None)
    }

    /// `audit`, starting a fresh auditor at epoch `from` (`--from`).
    fn audit_from(&self, state: &str, from: impl Into<Option<u64>>) -> (bool, Value, String) {
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
            .args(from.into().map(|from| format!("--from={from}")))
            .arg("--json")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let status = support::wait_within(&mut child, AUDIT_DEADLINE, "the auditor");
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

/// Runs `change` on the store's database with the heads table's guards dropped first, as
/// a compromised server would.
async fn tamper(database: &Path, change: &'static str, epoch: u64) {
    let mut connection = connect(database).await;
    for guard in [
        "DROP TRIGGER IF EXISTS kt_heads_no_update",
        "DROP TRIGGER IF EXISTS kt_heads_no_delete",
    ] {
        sqlx::query(guard).execute(&mut connection).await.unwrap();
    }
    let changed = sqlx::query(change)
        .bind(i64::try_from(epoch).unwrap())
        .execute(&mut connection)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 1, "{change}");
}

#[test]
fn auditor_verifies_ten_thousand_epochs_and_names_a_tampered_one() {
    let began = Instant::now();
    let runtime = runtime();
    let mut folder = Folder::new();
    runtime.block_on(folder.publish(CHANGES));

    // A fresh auditor catches up on every epoch in one run.
    let server = folder.serve();
    let started = Instant::now();
    let (ok, report, stderr) = folder.audit("auditor");
    let caught_up = started.elapsed();
    assert!(ok, "{stderr}");
    assert_eq!(report["verified_from"], 0, "{report:#}");
    assert_eq!(report["verified_to"].as_u64(), Some(CHANGES), "{report:#}");
    assert_eq!(report["epochs_verified"].as_u64(), Some(CHANGES), "{report:#}");
    server.terminate();
    eprintln!(
        "published {CHANGES} changes in {:.1} s; a fresh auditor verified them in {:.1} s",
        folder.publishing.as_secs_f64(),
        caught_up.as_secs_f64()
    );

    // The same auditor goes on from its state, over the epochs published since.
    runtime.block_on(folder.publish(MORE));
    let server = folder.serve();
    let (ok, report, stderr) = folder.audit("auditor");
    assert!(ok, "{stderr}");
    assert_eq!(report["verified_from"].as_u64(), Some(CHANGES), "{report:#}");
    assert_eq!(report["verified_to"].as_u64(), Some(CHANGES + MORE), "{report:#}");
    server.terminate();
    // The server found the log and its devices in agreement: it published nothing itself.
    assert_eq!(runtime.block_on(newest_epoch(&folder.database)), CHANGES + MORE);

    // (a) An entry altered: one byte in the middle of an epoch's stored proof. A fresh
    // auditor verifies every epoch before it and stops at exactly that one.
    let altered = folder.rng.between(2, CHANGES);
    runtime.block_on(tamper(
        &folder.database,
        // (`||` makes text; the column is a strict BLOB.)
        "UPDATE kt_heads SET proof = CAST(substr(proof, 1, length(proof) / 2) \
         || (CASE WHEN substr(proof, length(proof) / 2 + 1, 1) = x'00' THEN x'01' ELSE x'00' END) \
         || substr(proof, length(proof) / 2 + 2) AS BLOB) WHERE epoch = ?",
        altered,
    ));
    let server = folder.serve();
    let (ok, report, stderr) = folder.audit("auditor-altered");
    assert!(!ok, "an auditor passed an altered proof: {report:#}");
    assert_eq!(named_epoch(&stderr), altered, "{stderr}");
    server.terminate();

    // (b) An entry removed: a fresh auditor is served the epoch after the gap where it
    // expected the removed one, and names the one missing. (From just before (a)'s epoch, with `--from`: the
    // epochs before it were verified above.)
    let removed = CHANGES + folder.rng.between(1, MORE - 1);
    runtime.block_on(tamper(
        &folder.database,
        "DELETE FROM kt_heads WHERE epoch = ?",
        removed,
    ));
    let server = folder.serve();
    let (ok, report, stderr) = folder.audit_from("auditor-removed", CHANGES);
    assert!(!ok, "an auditor passed a removed epoch: {report:#}");
    assert_eq!(named_epoch(&stderr), removed, "{stderr}");
    assert!(stderr.contains("missing"), "{stderr}");
    server.terminate();
    eprintln!("the whole test took {:.1} s", began.elapsed().as_secs_f64());
}
