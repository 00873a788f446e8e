//! A data folder with a real database backed up, restored and verified; damaged and hostile
//! archives refused with nothing written.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use redoubt_store::Store;
use redoubt_store_sqlite::SqliteStore;
use sqlx::ConnectOptions;

use super::*;

const PASSPHRASE: &str = "correct horse battery staple";

fn passphrase() -> Passphrase {
    Passphrase::new(PASSPHRASE.to_owned())
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    set_mode(path, mode);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

const BLOB_KEPT: &str = "00000000000000000000000000000001";
const BLOB_UNRECORDED: &str = "00000000000000000000000000000002";

/// A data folder: a real server database recording one complete blob, keys, TLS files, a
/// connector profile with its own SQLite file, and files a backup must leave out.
async fn data_folder(root: &Path) -> PathBuf {
    let data = root.join("data");
    std::fs::create_dir(&data).unwrap();
    set_mode(&data, 0o700);
    let store = SqliteStore::open(&data.join("redoubt.db")).await.unwrap();
    store.close().await;
    let mut db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data.join("redoubt.db"))
        .foreign_keys(false)
        .connect()
        .await
        .unwrap();
    let id = u128::from_str_radix(BLOB_KEPT, 16)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    sqlx::query("INSERT INTO blobs VALUES (?, x'00', x'00', 5, 1, 1, 0)")
        .bind(id)
        .execute(&mut db)
        .await
        .unwrap();
    drop(db);
    write_mode(&data.join("org-root.key"), &[1; 32], 0o600);
    write_mode(&data.join("transparency.key"), &[2; 64], 0o600);
    write_mode(&data.join("redoubt.toml"), b"[server]\n", 0o644);
    write_mode(&data.join("admin-activation.txt"), b"RDB-code\n", 0o600);
    write_mode(&data.join("tls/cert.pem"), b"cert", 0o644);
    write_mode(&data.join("tls/key.pem"), b"key", 0o600);
    set_mode(&data.join("tls"), 0o700);
    write_mode(&data.join("blobs").join(BLOB_KEPT), b"blob!", 0o600);
    write_mode(&data.join("blobs").join(BLOB_UNRECORDED), b"orphan", 0o600);
    write_mode(
        &data.join("blobs/00000000000000000000000000000003.part"),
        b"half",
        0o600,
    );
    write_mode(&data.join("connector/profile.json"), b"{}", 0o600);
    write_mode(&data.join("connector/keys.tmp"), b"in progress", 0o600);
    let mut vault = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data.join("connector/vault.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .connect()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (x TEXT)")
        .execute(&mut vault)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES ('connector state')")
        .execute(&mut vault)
        .await
        .unwrap();
    for dir in ["blobs", "connector"] {
        set_mode(&data.join(dir), 0o700);
    }
    // Left open: the vault is in use (its WAL beside it) while the backup runs.
    std::mem::forget(vault);
    data
}

/// Every file under `dir` (relative path → bytes), SQLite files by their rows' presence.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// What sits beside `target` in its parent folder, apart from `allowed`.
fn siblings(parent: &Path, allowed: &[&str]) -> Vec<String> {
    std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !allowed.contains(&n.as_str()))
        .collect()
}

#[tokio::test]
async fn a_restored_folder_holds_the_folder_as_backed_up_with_its_modes() {
    let root = tempfile::tempdir().unwrap();
    let data = data_folder(root.path()).await;
    let archive = root.path().join("backup.rdb");
    let made = backup(&data, &archive, &passphrase()).unwrap();
    assert_eq!(made.blobs, 1);
    assert!(made.database_bytes > 0);
    assert_eq!(mode(&archive), 0o600);

    let checked = verify(&archive, &passphrase()).unwrap();
    assert_eq!(
        (
            checked.files,
            checked.file_bytes,
            checked.database_bytes,
            checked.blobs
        ),
        (made.files, made.file_bytes, made.database_bytes, made.blobs)
    );
    assert_eq!(checked.taken_at_unix_ms, made.taken_at_unix_ms);

    let restored = root.path().join("restored");
    restore(&archive, &restored, &passphrase()).unwrap();
    let before = files(&data);
    let after = files(&restored);
    for same in [
        "org-root.key",
        "transparency.key",
        "redoubt.toml",
        "admin-activation.txt",
        "tls/cert.pem",
        "tls/key.pem",
        "connector/profile.json",
    ] {
        assert_eq!(after.get(same), before.get(same), "{same}");
    }
    assert_eq!(after[&format!("blobs/{BLOB_KEPT}")], b"blob!");
    let names: Vec<&str> = after.keys().map(String::as_str).collect();
    for left_out in [
        format!("blobs/{BLOB_UNRECORDED}").as_str(),
        "blobs/00000000000000000000000000000003.part",
        "connector/keys.tmp",
        "redoubt.db-wal",
        "connector/vault.db-wal",
    ] {
        assert!(!names.contains(&left_out), "{left_out} restored: {names:?}");
    }
    assert!(names.contains(&"redoubt.db") && names.contains(&"connector/vault.db"));
    // The connector's database, in use during the backup, came back with its rows.
    let mut vault = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(restored.join("connector/vault.db"))
        .connect()
        .await
        .unwrap();
    let row: (String,) = sqlx::query_as("SELECT x FROM t")
        .fetch_one(&mut vault)
        .await
        .unwrap();
    assert_eq!(row.0, "connector state");
    // And the server opens its restored database.
    SqliteStore::open(&restored.join("redoubt.db"))
        .await
        .unwrap()
        .close()
        .await;
    for (path, expected) in [
        ("org-root.key", 0o600),
        ("redoubt.toml", 0o644),
        ("tls", 0o700),
        ("tls/key.pem", 0o600),
        ("blobs", 0o700),
        ("connector", 0o700),
    ] {
        assert_eq!(mode(&restored.join(path)), expected, "{path}");
    }
    assert_eq!(mode(&restored), 0o700);
    assert_eq!(
        siblings(root.path(), &["data", "backup.rdb", "restored"]),
        Vec::<String>::new()
    );
}

/// Restores `archive` into `ROOT/target`, expecting failure; checks nothing was written.
fn refused(root: &Path, archive: &Path, passphrase: &Passphrase) -> BackupError {
    let before = siblings(root, &[]);
    let error = restore(archive, &root.join("target"), passphrase).unwrap_err();
    assert!(!root.join("target").exists(), "{error}: the target was created");
    assert_eq!(
        siblings(root, &[]).len(),
        before.len(),
        "{error}: something was left beside it"
    );
    error
}

#[tokio::test]
async fn a_wrong_passphrase_a_changed_byte_or_a_cut_archive_restores_nothing() {
    let root = tempfile::tempdir().unwrap();
    let data = data_folder(root.path()).await;
    let archive = root.path().join("backup.rdb");
    backup(&data, &archive, &passphrase()).unwrap();
    let good = std::fs::read(&archive).unwrap();

    let wrong = Passphrase::new("not the passphrase at all".into());
    let error = refused(root.path(), &archive, &wrong);
    assert_eq!(error.to_string(), "wrong passphrase or damaged archive");
    assert!(!error.to_string().contains(PASSPHRASE));

    let bad = root.path().join("bad.rdb");
    // In the header, the first chunk, a middle chunk and the last one.
    for at in [20, 100, good.len() / 2, good.len() - 5] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&bad, &bytes).unwrap();
        let error = refused(root.path(), &bad, &passphrase());
        assert!(
            matches!(
                error,
                BackupError::WrongPassphraseOrDamaged | BackupError::Damaged { .. }
            ),
            "flipped byte {at}: {error}"
        );
        assert!(verify(&bad, &passphrase()).is_err());
    }
    for cut in [10, good.len() / 2, good.len() - 1] {
        std::fs::write(&bad, &good[..cut]).unwrap();
        let error = refused(root.path(), &bad, &passphrase());
        assert!(!matches!(error, BackupError::Io(_)), "cut at {cut}: {error}");
        assert!(verify(&bad, &passphrase()).is_err());
    }
    // A non-empty target is refused before anything is read.
    let occupied = root.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("x"), b"x").unwrap();
    assert!(matches!(
        restore(&archive, &occupied, &passphrase()),
        Err(BackupError::Refused(_))
    ));
    // An empty one is fine.
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    restore(&archive, &empty, &passphrase()).unwrap();
    assert!(empty.join("redoubt.db").exists());
}

/// An archive made by a passphrase holder by hand: authenticated, but hostile.
fn hand_made(path: &Path, records: &[u8]) {
    let header = format::Header::fresh();
    let key = header.derive_key(&passphrase()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = format::SealingWriter::new(file, &header, &key).unwrap();
    writer.write_all(records).unwrap();
    writer.finish().unwrap();
}

fn raw_file(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![b'F'];
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&0o600u32.to_be_bytes());
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

#[tokio::test]
async fn paths_leaving_the_folder_are_refused_with_nothing_written() {
    let root = tempfile::tempdir().unwrap();
    let mut info = Vec::new();
    entries::Record::Info {
        taken_at_unix_ms: 0,
        version: "x".into(),
    }
    .write(&mut info)
    .unwrap();
    for evil in ["../evil", "/tmp/evil", "blobs/../../evil", "a//b"] {
        let archive = root.path().join("evil.rdb");
        hand_made(&archive, &[info.clone(), raw_file(evil, b"owned")].concat());
        let error = refused(root.path(), &archive, &passphrase());
        assert!(matches!(error, BackupError::UnsafePath(_)), "{evil}: {error}");
        assert!(!root.path().join("evil").exists());
        std::fs::remove_file(&archive).unwrap();
    }
    // Well-formed entries but no end record: the stream is incomplete.
    let archive = root.path().join("endless.rdb");
    hand_made(&archive, &[info.clone(), raw_file("redoubt.db", b"x")].concat());
    assert!(matches!(
        refused(root.path(), &archive, &passphrase()),
        BackupError::Malformed(_)
    ));
    // The same entry twice.
    let archive = root.path().join("twice.rdb");
    hand_made(
        &archive,
        &[info, raw_file("a", b"1"), raw_file("a", b"2")].concat(),
    );
    assert!(matches!(
        refused(root.path(), &archive, &passphrase()),
        BackupError::Malformed(_)
    ));
}

#[tokio::test]
async fn a_short_passphrase_an_existing_archive_or_a_folder_without_a_database_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let data = data_folder(root.path()).await;
    let archive = root.path().join("backup.rdb");
    let short = Passphrase::new("short".into());
    assert!(matches!(
        backup(&data, &archive, &short),
        Err(BackupError::Refused(_))
    ));
    std::fs::write(&archive, b"keep me").unwrap();
    assert!(matches!(
        backup(&data, &archive, &passphrase()),
        Err(BackupError::Refused(_))
    ));
    assert_eq!(std::fs::read(&archive).unwrap(), b"keep me");
    assert!(matches!(
        backup(root.path(), &root.path().join("other.rdb"), &passphrase()),
        Err(BackupError::Refused(_))
    ));
    assert!(matches!(
        backup(&data, &data.join("inside.rdb"), &passphrase()),
        Err(BackupError::Refused(_))
    ));
}
