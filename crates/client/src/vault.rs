//! The device's encrypted store: one SQLite file, `PROFILE/vault.db`, holding mls-rs's state
//! (group snapshots, epochs, key packages with their HPKE private keys, PSKs) and the
//! application's data (conversations, message text, attachment keys, receipts).
//!
//! ```text
//! meta  (name TEXT PRIMARY KEY, value BLOB)      "key_id": which data key seals the rows
//! entry (ns TEXT, key BLOB, value BLOB, PRIMARY KEY (ns, key))
//!       value = nonce (24 random bytes) ‖ XChaCha20-Poly1305 ciphertext ‖ tag (16)
//!       associated data = ns ‖ 0x00 ‖ key
//! ```
//!
//! Every value is sealed under the profile's 32-byte *data key* (see `profile.rs` for where
//! that key lives) with a fresh random nonce per write. Namespaces and keys stay in the
//! clear so SQLite can look rows up and order them: someone holding the file sees which
//! groups exist (group ids), their epoch numbers, key package ids, and how many messages
//! and receipts each conversation holds (`msg/<group>/<seq>`), plus value sizes. They see no
//! value: no MLS secret, message text, conversation name, attachment key or receipt. Because
//! the namespace and key are authenticated with the value, a value moved to another key or
//! namespace fails to open instead of being read as something else. What encryption cannot
//! prevent: someone who can write the folder may delete rows or put back an older copy of
//! the whole file.
//!
//! Namespaces used here: `mls/group` (key: group id), `mls/epoch` (group id ‖ epoch id as
//! 8 bytes big-endian), `mls/key-package` (key package id), `mls/psk` (PSK id) and `app`
//! (the messenger's UTF-8 keys). Other modules pick their own namespace; `app` and `mls/…`
//! are refused through the public API so nothing else can corrupt them.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use mls_rs_core::group::{EpochRecord, GroupState, GroupStateStorage};
use mls_rs_core::key_package::{KeyPackageData, KeyPackageStorage};
use mls_rs_core::mls_rs_codec::{MlsDecode, MlsEncode};
use mls_rs_core::psk::{ExternalPskId, PreSharedKey, PreSharedKeyStorage};
use rand_core::{OsRng, RngCore};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use zeroize::Zeroizing;

/// Bumped when the layout of `vault.db` changes; a newer file is refused, not misread.
const SCHEMA_VERSION: i64 = 1;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
/// Epochs kept per group (the current one and two before it), as mls-rs-provider-sqlite
/// does: enough to decrypt messages that were sent just before a commit.
const EPOCH_RETENTION: u64 = 3;
/// Rows re-encrypted per statement batch when the data key changes (bounds memory).
const ROTATE_BATCH_ROWS: i64 = 256;
/// Longest namespace accepted.
const NAMESPACE_BYTES_MAX: usize = 64;

const NS_GROUP: &str = "mls/group";
const NS_EPOCH: &str = "mls/epoch";
const NS_KEY_PACKAGE: &str = "mls/key-package";
const NS_PSK: &str = "mls/psk";
const NS_APP: &str = "app";

/// Why the vault could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// SQLite failed (disk full, file locked, I/O error…).
    #[error("vault database: {0}")]
    Database(#[from] rusqlite::Error),
    /// Creating or setting up the file failed.
    #[error("vault file {path}: {reason}")]
    File { path: String, reason: String },
    /// A stored value does not authenticate: it was altered, moved from another key, or
    /// sealed under another data key. It is never returned.
    #[error("vault value {ns}/{key} does not authenticate (altered, moved or from another key)")]
    Corrupt { ns: String, key: String },
    /// `vault.db` is sealed under another data key than the one offered.
    #[error("vault.db is sealed under another key than keys.json holds")]
    KeyMismatch,
    /// `vault.db` was written by a newer version of Redoubt.
    #[error("vault.db has schema version {0}; this version of Redoubt reads only version {SCHEMA_VERSION}")]
    Schema(i64),
    /// The caller used a namespace that is empty, too long, contains NUL, or is reserved.
    #[error("vault namespace {0:?} is invalid or reserved")]
    Namespace(String),
    /// A value could not be encoded or decoded (MLS codec).
    #[error("vault value encoding: {0}")]
    Codec(String),
    /// Encryption itself failed (only for absurdly large values).
    #[error("vault encryption failed")]
    Seal,
    /// Another thread panicked while holding the vault.
    #[error("vault unusable: a thread panicked while using it")]
    Poisoned,
}

impl mls_rs_core::error::IntoAnyError for VaultError {
    fn into_dyn_error(self) -> Result<Box<dyn std::error::Error + Send + Sync>, Self> {
        Ok(Box::new(self))
    }
}

impl From<VaultError> for crate::ClientError {
    fn from(error: VaultError) -> Self {
        crate::ClientError::Profile(format!("local storage: {error}"))
    }
}

/// The 32-byte key every vault value is sealed under, with the public id that tells which
/// `keys.json` belongs to which `vault.db`. Zeroed on drop.
pub(crate) struct DataKey {
    secret: Zeroizing<[u8; 32]>,
    id: [u8; 16],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    /// A fresh random key with a fresh random id.
    pub(crate) fn generate() -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(secret.as_mut());
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        Self { secret, id }
    }

    pub(crate) fn from_parts(secret: Zeroizing<[u8; 32]>, id: [u8; 16]) -> Self {
        Self { secret, id }
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    pub(crate) fn id(&self) -> [u8; 16] {
        self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        cipher(&self.secret)
    }
}

fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key))
}

/// Seals `plaintext` under `key`: a random 24-byte nonce ‖ ciphertext ‖ tag.
pub(crate) fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
    seal_with(&cipher(key), aad, plaintext)
}

/// Opens what [`seal`] made; `None` if it does not authenticate.
pub(crate) fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    open_with(&cipher(key), aad, sealed)
}

fn seal_with(cipher: &XChaCha20Poly1305, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
    let mut nonce = [0u8; NONCE_BYTES];
    OsRng.fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad })
        .map_err(|_| VaultError::Seal)?;
    Ok([nonce.as_slice(), &ciphertext].concat())
}

fn open_with(cipher: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_BYTES + TAG_BYTES {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
    let nonce: [u8; NONCE_BYTES] = nonce.try_into().ok()?;
    cipher
        .decrypt(&XNonce::from(nonce), Payload { msg: ciphertext, aad })
        .ok()
        .map(Zeroizing::new)
}

fn aad(ns: &str, key: &[u8]) -> Vec<u8> {
    [ns.as_bytes(), &[0], key].concat()
}

/// A key for error messages: text when it is text, else hex.
fn printable(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if text.chars().all(|c| !c.is_control()) => text.to_owned(),
        _ => data_encoding::HEXLOWER.encode(key),
    }
}

fn check_namespace(ns: &str) -> Result<(), VaultError> {
    if ns.is_empty() || ns.len() > NAMESPACE_BYTES_MAX || ns.contains('\0') {
        return Err(VaultError::Namespace(ns.to_owned()));
    }
    Ok(())
}

/// Namespaces other modules may use: not the messenger's or mls-rs's.
fn check_public_namespace(ns: &str) -> Result<(), VaultError> {
    check_namespace(ns)?;
    if ns == NS_APP || ns.starts_with("mls/") {
        return Err(VaultError::Namespace(ns.to_owned()));
    }
    Ok(())
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> VaultError {
    VaultError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Creates `path` empty with mode 0600 if it does not exist, and makes it 0600 if it does,
/// so SQLite (whose -wal and -shm files copy the database's mode) never creates it readable.
pub(crate) fn create_private_file(path: &Path) -> Result<(), VaultError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|e| file_error(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| file_error(path, e))?;
    }
    Ok(())
}

fn read_key_id(connection: &Connection) -> Result<Option<[u8; 16]>, VaultError> {
    let id: Option<Vec<u8>> = connection
        .query_row("SELECT value FROM meta WHERE name = 'key_id'", [], |row| {
            row.get(0)
        })
        .optional()?;
    match id {
        None => Ok(None),
        Some(id) => id.try_into().map(Some).map_err(|_| VaultError::KeyMismatch),
    }
}

/// `vault.db` opened but not yet unlocked: only its public metadata can be read.
pub(crate) struct LockedVault {
    connection: Connection,
}

impl std::fmt::Debug for LockedVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedVault").finish_non_exhaustive()
    }
}

impl LockedVault {
    /// Opens (creating, 0600) `path` and brings its schema up to date.
    pub(crate) fn open(path: &Path) -> Result<Self, VaultError> {
        create_private_file(path)?;
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String =
            connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(file_error(path, format!("cannot use WAL mode (got {mode})")));
        }
        connection.pragma_update(None, "synchronous", "FULL")?;
        // Freed pages (old ciphertext, e.g. under a rotated-away key) are zeroed, not left behind.
        connection.pragma_update(None, "secure_delete", "ON")?;
        connection.pragma_update(None, "temp_store", "MEMORY")?;
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(VaultError::Schema(version));
        }
        if version < SCHEMA_VERSION {
            connection.execute_batch(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID;
                 CREATE TABLE IF NOT EXISTS entry (
                     ns TEXT NOT NULL,
                     key BLOB NOT NULL,
                     value BLOB NOT NULL,
                     PRIMARY KEY (ns, key)
                 ) WITHOUT ROWID;
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        }
        Ok(Self { connection })
    }

    /// The id of the data key the rows are sealed under; `None` for a vault never unlocked.
    pub(crate) fn key_id(&self) -> Result<Option<[u8; 16]>, VaultError> {
        read_key_id(&self.connection)
    }

    /// Unlocks with `key`, which must be the one the vault is sealed under. A vault that was
    /// never unlocked (and so is empty) adopts the key.
    pub(crate) fn unlock(mut self, key: DataKey) -> Result<Vault, VaultError> {
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        match read_key_id(&tx)? {
            Some(id) if id == key.id => {}
            Some(_) => return Err(VaultError::KeyMismatch),
            None => {
                let rows: i64 = tx.query_row("SELECT count(*) FROM entry", [], |row| row.get(0))?;
                if rows > 0 {
                    return Err(VaultError::KeyMismatch);
                }
                tx.execute(
                    "INSERT INTO meta (name, value) VALUES ('key_id', ?1)",
                    params![key.id.as_slice()],
                )?;
            }
        }
        tx.commit()?;
        Ok(Vault {
            inner: Arc::new(Mutex::new(Inner {
                connection: self.connection,
                key_id: key.id,
                cipher: key.cipher(),
            })),
        })
    }
}

struct Inner {
    connection: Connection,
    /// The id of the data key `cipher` holds.
    key_id: [u8; 16],
    cipher: XChaCha20Poly1305,
}

/// The encrypted store. Cheap to clone (clones share one connection) and usable from any
/// thread; each call takes the connection's lock for its duration.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").finish_non_exhaustive()
    }
}

fn get_sealed(
    connection: &Connection,
    cipher: &XChaCha20Poly1305,
    ns: &str,
    key: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
    let sealed: Option<Vec<u8>> = connection
        .prepare_cached("SELECT value FROM entry WHERE ns = ?1 AND key = ?2")?
        .query_row(params![ns, key], |row| row.get(0))
        .optional()?;
    sealed
        .map(|sealed| {
            open_with(cipher, &aad(ns, key), &sealed).ok_or_else(|| VaultError::Corrupt {
                ns: ns.to_owned(),
                key: printable(key),
            })
        })
        .transpose()
}

/// The smallest key greater than every key starting with `prefix`, if there is one.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// (key, value) pairs, ordered by key.
pub type VaultRows = Vec<(Vec<u8>, Zeroizing<Vec<u8>>)>;
type TextRows = Vec<(String, Zeroizing<Vec<u8>>)>;

fn get_prefix_sealed(
    connection: &Connection,
    cipher: &XChaCha20Poly1305,
    ns: &str,
    prefix: &[u8],
) -> Result<VaultRows, VaultError> {
    let rows: Vec<(Vec<u8>, Vec<u8>)> = match prefix_end(prefix) {
        Some(end) => connection
            .prepare_cached(
                "SELECT key, value FROM entry WHERE ns = ?1 AND key >= ?2 AND key < ?3 ORDER BY key",
            )?
            .query_map(params![ns, prefix, end], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?,
        None => connection
            .prepare_cached("SELECT key, value FROM entry WHERE ns = ?1 AND key >= ?2 ORDER BY key")?
            .query_map(params![ns, prefix], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?,
    };
    open_rows(cipher, ns, rows)
}

/// Opens sealed (key, value) rows of `ns`; a value that does not open is corruption.
fn open_rows(
    cipher: &XChaCha20Poly1305,
    ns: &str,
    rows: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<VaultRows, VaultError> {
    rows.into_iter()
        .map(|(key, sealed)| match open_with(cipher, &aad(ns, &key), &sealed) {
            Some(value) => Ok((key, value)),
            None => Err(VaultError::Corrupt {
                ns: ns.to_owned(),
                key: printable(&key),
            }),
        })
        .collect()
}

/// Up to `limit` (key, value) pairs in `ns` whose key starts with `prefix` and comes after
/// `after` (from the first when `None`), ordered by key: a listing read in bounded pages.
fn get_page_sealed(
    connection: &Connection,
    cipher: &XChaCha20Poly1305,
    ns: &str,
    prefix: &[u8],
    after: Option<&[u8]>,
    newest_first: bool,
    limit: usize,
) -> Result<VaultRows, VaultError> {
    let start = after.filter(|after| *after >= prefix).unwrap_or(prefix);
    // `key > start` would skip a key equal to the prefix itself on the first page.
    let op = if after.is_some() { ">" } else { ">=" };
    let order = if newest_first { "DESC" } else { "ASC" };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<(Vec<u8>, Vec<u8>)> = match prefix_end(prefix) {
        Some(end) => connection
            .prepare_cached(&format!(
                "SELECT key, value FROM entry WHERE ns = ?1 AND key {op} ?2 AND key < ?3 ORDER BY key {order} LIMIT ?4"
            ))?
            .query_map(params![ns, start, end, limit], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?,
        None => connection
            .prepare_cached(&format!(
                "SELECT key, value FROM entry WHERE ns = ?1 AND key {op} ?2 ORDER BY key {order} LIMIT ?3"
            ))?
            .query_map(params![ns, start, limit], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?,
    };
    open_rows(cipher, ns, rows)
}

/// Writes inside one SQLite transaction, all sealed under the vault's key.
pub(crate) struct Writer<'a> {
    tx: rusqlite::Transaction<'a>,
    cipher: &'a XChaCha20Poly1305,
}

impl Writer<'_> {
    fn put(&self, ns: &str, key: &[u8], value: &[u8]) -> Result<(), VaultError> {
        let sealed = seal_with(self.cipher, &aad(ns, key), value)?;
        self.tx
            .prepare_cached(
                "INSERT INTO entry (ns, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![ns, key, sealed])?;
        Ok(())
    }

    fn get(&self, ns: &str, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        get_sealed(&self.tx, self.cipher, ns, key)
    }

    fn delete(&self, ns: &str, key: &[u8]) -> Result<bool, VaultError> {
        let deleted = self
            .tx
            .prepare_cached("DELETE FROM entry WHERE ns = ?1 AND key = ?2")?
            .execute(params![ns, key])?;
        Ok(deleted > 0)
    }
}

/// A transaction over the vault, for other modules: every change in it commits together
/// or not at all. See [`Vault::transaction`].
pub struct VaultTransaction<'a> {
    writer: Writer<'a>,
}

impl std::fmt::Debug for VaultTransaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultTransaction").finish_non_exhaustive()
    }
}

impl VaultTransaction<'_> {
    pub fn put(&self, ns: &str, key: impl AsRef<[u8]>, value: &[u8]) -> Result<(), VaultError> {
        check_public_namespace(ns)?;
        self.writer.put(ns, key.as_ref(), value)
    }

    pub fn get(&self, ns: &str, key: impl AsRef<[u8]>) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        check_public_namespace(ns)?;
        self.writer.get(ns, key.as_ref())
    }

    pub fn delete(&self, ns: &str, key: impl AsRef<[u8]>) -> Result<bool, VaultError> {
        check_public_namespace(ns)?;
        self.writer.delete(ns, key.as_ref())
    }
}

/// Reads over one snapshot of the vault. See [`Vault::snapshot`].
pub(crate) struct VaultSnapshot<'a> {
    tx: rusqlite::Transaction<'a>,
    cipher: &'a XChaCha20Poly1305,
}

impl VaultSnapshot<'_> {
    pub(crate) fn get(&self, ns: &str, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        get_sealed(&self.tx, self.cipher, ns, key)
    }

    /// The keys in `ns` starting with `prefix`, in key order. Only keys: no value is read
    /// or decrypted, so this costs an index scan.
    pub(crate) fn keys_by_prefix(&self, ns: &str, prefix: &[u8]) -> Result<Vec<Vec<u8>>, VaultError> {
        let keys = match prefix_end(prefix) {
            Some(end) => self
                .tx
                .prepare_cached(
                    "SELECT key FROM entry WHERE ns = ?1 AND key >= ?2 AND key < ?3 ORDER BY key",
                )?
                .query_map(params![ns, prefix, end], |row| row.get(0))?
                .collect::<Result<_, _>>()?,
            None => self
                .tx
                .prepare_cached("SELECT key FROM entry WHERE ns = ?1 AND key >= ?2 ORDER BY key")?
                .query_map(params![ns, prefix], |row| row.get(0))?
                .collect::<Result<_, _>>()?,
        };
        Ok(keys)
    }
}

impl Vault {
    fn lock(&self) -> Result<MutexGuard<'_, Inner>, VaultError> {
        self.inner.lock().map_err(|_| VaultError::Poisoned)
    }

    /// Runs `f` in one immediate (write-locked) transaction and commits if it returns `Ok`.
    /// Refuses to write if another process changed the data key since this one unlocked,
    /// so no row is ever sealed under a key `keys.json` no longer holds.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Writer<'_>) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let mut guard = self.lock()?;
        let Inner {
            connection,
            key_id,
            cipher,
        } = &mut *guard;
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if read_key_id(&tx)? != Some(*key_id) {
            return Err(VaultError::KeyMismatch);
        }
        let writer = Writer { tx, cipher };
        let result = f(&writer)?;
        writer.tx.commit()?;
        Ok(result)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection, &XChaCha20Poly1305) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let guard = self.lock()?;
        f(&guard.connection, &guard.cipher)
    }

    /// Stores `value` under (`ns`, `key`), replacing what was there.
    pub fn put(&self, ns: &str, key: impl AsRef<[u8]>, value: &[u8]) -> Result<(), VaultError> {
        check_public_namespace(ns)?;
        self.write(|w| w.put(ns, key.as_ref(), value))
    }

    /// The value under (`ns`, `key`); an error (never altered bytes) if it does not authenticate.
    pub fn get(&self, ns: &str, key: impl AsRef<[u8]>) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        check_public_namespace(ns)?;
        self.read(|c, cipher| get_sealed(c, cipher, ns, key.as_ref()))
    }

    /// Deletes (`ns`, `key`); whether it existed.
    pub fn delete(&self, ns: &str, key: impl AsRef<[u8]>) -> Result<bool, VaultError> {
        check_public_namespace(ns)?;
        self.write(|w| w.delete(ns, key.as_ref()))
    }

    /// Every (key, value) in `ns` whose key starts with `prefix`, ordered by key (bytewise).
    pub fn get_by_prefix(&self, ns: &str, prefix: impl AsRef<[u8]>) -> Result<VaultRows, VaultError> {
        check_public_namespace(ns)?;
        self.read(|c, cipher| get_prefix_sealed(c, cipher, ns, prefix.as_ref()))
    }

    /// Runs `f` in one transaction: all its puts and deletes are kept, or none.
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&VaultTransaction<'_>) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        self.transaction_with(f)
    }

    /// [`Self::transaction`] with the caller's own error type, which passes through as it was.
    pub(crate) fn transaction_with<T, E: From<VaultError>>(
        &self,
        f: impl FnOnce(&VaultTransaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut guard = self.lock()?;
        let Inner {
            connection,
            key_id,
            cipher,
        } = &mut *guard;
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(VaultError::from)?;
        if read_key_id(&tx)? != Some(*key_id) {
            return Err(VaultError::KeyMismatch.into());
        }
        let transaction = VaultTransaction {
            writer: Writer { tx, cipher },
        };
        let result = f(&transaction)?;
        transaction.writer.tx.commit().map_err(VaultError::from)?;
        Ok(result)
    }

    /// Runs `f` over one read snapshot: every read in it sees the vault as of one moment,
    /// even if another process (a second `redoubt` command) writes meanwhile.
    pub(crate) fn snapshot<T, E: From<VaultError>>(
        &self,
        f: impl FnOnce(&VaultSnapshot<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut guard = self.lock()?;
        let Inner {
            connection, cipher, ..
        } = &mut *guard;
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(VaultError::from)?;
        let snapshot = VaultSnapshot { tx, cipher };
        let result = f(&snapshot);
        // Nothing was written: ending the read transaction either way keeps nothing.
        snapshot.tx.rollback().map_err(VaultError::from)?;
        result
    }

    /// A new vault file at `path` sealed under a fresh random data key that is kept nowhere
    /// but in the returned handle: for benchmarks and tools that need a real vault (real
    /// SQLite file, real sealing) without an enrolled profile. Once the handle is dropped
    /// nothing can open the file again. Refuses a file that already holds a vault.
    pub fn create_throwaway(path: &Path) -> Result<Vault, VaultError> {
        LockedVault::open(path)?.unlock(DataKey::generate())
    }

    /// Re-seals every row under `new_key` in one transaction, records the new key id with
    /// them, and only then starts using the new key. If anything fails, nothing changed.
    pub(crate) fn rotate(&self, new_key: DataKey) -> Result<(), VaultError> {
        let mut guard = self.lock()?;
        let new_cipher = new_key.cipher();
        let Inner {
            connection,
            key_id,
            cipher,
        } = &mut *guard;
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if read_key_id(&tx)? != Some(*key_id) {
            return Err(VaultError::KeyMismatch);
        }
        let mut after: Option<(String, Vec<u8>)> = None;
        loop {
            let batch: Vec<(String, Vec<u8>, Vec<u8>)> = match &after {
                None => tx
                    .prepare_cached("SELECT ns, key, value FROM entry ORDER BY ns, key LIMIT ?1")?
                    .query_map(params![ROTATE_BATCH_ROWS], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?,
                Some((ns, key)) => tx
                    .prepare_cached("SELECT ns, key, value FROM entry WHERE (ns, key) > (?1, ?2) ORDER BY ns, key LIMIT ?3")?
                    .query_map(params![ns, key, ROTATE_BATCH_ROWS], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?,
            };
            let Some((last_ns, last_key, _)) = batch.last() else {
                break;
            };
            after = Some((last_ns.clone(), last_key.clone()));
            let mut update = tx.prepare_cached("UPDATE entry SET value = ?3 WHERE ns = ?1 AND key = ?2")?;
            for (ns, key, sealed) in &batch {
                let aad = aad(ns, key);
                let value = open_with(cipher, &aad, sealed).ok_or_else(|| VaultError::Corrupt {
                    ns: ns.clone(),
                    key: printable(key),
                })?;
                update.execute(params![ns, key, seal_with(&new_cipher, &aad, &value)?])?;
            }
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'key_id'",
            params![new_key.id.as_slice()],
        )?;
        tx.commit()?;
        *cipher = new_cipher;
        *key_id = new_key.id;
        // Old ciphertext may still sit in the WAL; copy the new pages into the database and
        // empty the log. Best effort: the old key is useless without an old keys.json anyway.
        if let Err(error) = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::warn!(%error, "could not checkpoint vault.db after changing its key");
        }
        Ok(())
    }

    /// Group state storage for mls-rs over this vault.
    pub(crate) fn group_state_storage(&self) -> VaultGroupStateStorage {
        VaultGroupStateStorage(self.clone())
    }

    pub(crate) fn key_package_storage(&self) -> VaultKeyPackageStorage {
        VaultKeyPackageStorage(self.clone())
    }

    pub(crate) fn pre_shared_key_storage(&self) -> VaultPreSharedKeyStorage {
        VaultPreSharedKeyStorage(self.clone())
    }

    pub(crate) fn app_storage(&self) -> AppStorage {
        AppStorage(self.clone())
    }

    #[cfg(test)]
    pub(crate) fn raw_rows(&self) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        let guard = self.lock().unwrap();
        let mut statement = guard
            .connection
            .prepare("SELECT ns, key, value FROM entry ORDER BY ns, key")
            .unwrap();
        statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[cfg(test)]
    pub(crate) fn execute_raw(&self, sql: &str, values: impl rusqlite::Params) -> usize {
        self.lock().unwrap().connection.execute(sql, values).unwrap()
    }
}

fn epoch_key(group_id: &[u8], epoch_id: u64) -> Vec<u8> {
    [group_id, &epoch_id.to_be_bytes()].concat()
}

/// mls-rs group snapshots and epochs; at most [`EPOCH_RETENTION`] epochs per group.
#[derive(Clone, Debug)]
pub(crate) struct VaultGroupStateStorage(Vault);

impl VaultGroupStateStorage {
    /// The newest epoch stored for `group_id`. Epoch keys are the group id and 8 bytes, so
    /// with the length fixed, the bytewise range below holds exactly this group's epochs.
    fn max_epoch(&self, group_id: &[u8]) -> Result<Option<u64>, VaultError> {
        let low = epoch_key(group_id, 0);
        let high = epoch_key(group_id, u64::MAX);
        let key: Option<Vec<u8>> = self.0.read(|connection, _| {
            Ok(connection
                .prepare_cached(
                    "SELECT key FROM entry WHERE ns = ?1 AND length(key) = ?2 AND key >= ?3 AND key <= ?4
                     ORDER BY key DESC LIMIT 1",
                )?
                .query_row(params![NS_EPOCH, low.len(), low, high], |row| row.get(0))
                .optional()?)
        })?;
        Ok(key.and_then(|key| {
            let tail: [u8; 8] = key.get(group_id.len()..)?.try_into().ok()?;
            Some(u64::from_be_bytes(tail))
        }))
    }
}

impl GroupStateStorage for VaultGroupStateStorage {
    type Error = VaultError;

    fn state(&self, group_id: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, Self::Error> {
        self.0.read(|c, cipher| get_sealed(c, cipher, NS_GROUP, group_id))
    }

    fn epoch(&self, group_id: &[u8], epoch_id: u64) -> Result<Option<Zeroizing<Vec<u8>>>, Self::Error> {
        self.0
            .read(|c, cipher| get_sealed(c, cipher, NS_EPOCH, &epoch_key(group_id, epoch_id)))
    }

    /// The snapshot, new epochs, changed epochs and pruning of old epochs: one transaction.
    fn write(
        &mut self,
        state: GroupState,
        epoch_inserts: Vec<EpochRecord>,
        epoch_updates: Vec<EpochRecord>,
    ) -> Result<(), Self::Error> {
        let group_id = state.id.as_slice();
        self.0.write(|w| {
            w.put(NS_GROUP, group_id, &state.data)?;
            for epoch in epoch_inserts.iter().chain(&epoch_updates) {
                w.put(NS_EPOCH, &epoch_key(group_id, epoch.id), &epoch.data)?;
            }
            let newest = epoch_inserts.iter().map(|e| e.id).max();
            if let Some(delete_up_to) = newest.and_then(|n| n.checked_sub(EPOCH_RETENTION)) {
                let low = epoch_key(group_id, 0);
                w.tx.prepare_cached(
                    "DELETE FROM entry WHERE ns = ?1 AND length(key) = ?2 AND key >= ?3 AND key <= ?4",
                )?
                .execute(params![
                    NS_EPOCH,
                    low.len(),
                    low,
                    epoch_key(group_id, delete_up_to)
                ])?;
            }
            Ok(())
        })
    }

    fn max_epoch_id(&self, group_id: &[u8]) -> Result<Option<u64>, Self::Error> {
        self.max_epoch(group_id)
    }
}

/// mls-rs key packages (with their HPKE private keys).
#[derive(Clone, Debug)]
pub(crate) struct VaultKeyPackageStorage(Vault);

impl KeyPackageStorage for VaultKeyPackageStorage {
    type Error = VaultError;

    fn delete(&mut self, id: &[u8]) -> Result<(), Self::Error> {
        self.0.write(|w| w.delete(NS_KEY_PACKAGE, id)).map(|_| ())
    }

    fn insert(&mut self, id: Vec<u8>, pkg: KeyPackageData) -> Result<(), Self::Error> {
        let bytes = Zeroizing::new(
            pkg.mls_encode_to_vec()
                .map_err(|e| VaultError::Codec(e.to_string()))?,
        );
        self.0.write(|w| w.put(NS_KEY_PACKAGE, &id, &bytes))
    }

    fn get(&self, id: &[u8]) -> Result<Option<KeyPackageData>, Self::Error> {
        self.0
            .read(|c, cipher| get_sealed(c, cipher, NS_KEY_PACKAGE, id))?
            .map(|bytes| {
                KeyPackageData::mls_decode(&mut bytes.as_slice())
                    .map_err(|e| VaultError::Codec(e.to_string()))
            })
            .transpose()
    }
}

/// External pre-shared keys for mls-rs (Redoubt does not use any yet).
#[derive(Clone, Debug)]
pub(crate) struct VaultPreSharedKeyStorage(Vault);

impl VaultPreSharedKeyStorage {
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn insert(&self, id: &ExternalPskId, psk: &PreSharedKey) -> Result<(), VaultError> {
        self.0.write(|w| w.put(NS_PSK, id, psk))
    }
}

impl PreSharedKeyStorage for VaultPreSharedKeyStorage {
    type Error = VaultError;

    fn get(&self, id: &ExternalPskId) -> Result<Option<PreSharedKey>, Self::Error> {
        Ok(self
            .0
            .read(|c, cipher| get_sealed(c, cipher, NS_PSK, id))?
            .map(PreSharedKey::from))
    }
}

/// The messenger's key-value data (`conv/…`, `msg/…`, `rcpt/…`, …), namespace `app`.
#[derive(Clone, Debug)]
pub(crate) struct AppStorage(Vault);

impl AppStorage {
    pub(crate) fn get(&self, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        self.0
            .read(|c, cipher| get_sealed(c, cipher, NS_APP, key.as_bytes()))
    }

    pub(crate) fn insert(&self, key: &str, value: &[u8]) -> Result<(), VaultError> {
        self.0.write(|w| w.put(NS_APP, key.as_bytes(), value))
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn delete(&self, key: &str) -> Result<bool, VaultError> {
        self.0.write(|w| w.delete(NS_APP, key.as_bytes()))
    }

    /// Every (key, value) whose key starts with `prefix`, ordered by key.
    pub(crate) fn get_by_prefix(&self, prefix: &str) -> Result<TextRows, VaultError> {
        self.0
            .read(|c, cipher| get_prefix_sealed(c, cipher, NS_APP, prefix.as_bytes()))?
            .into_iter()
            .map(|(key, value)| {
                String::from_utf8(key)
                    .map(|key| (key, value))
                    .map_err(|e| VaultError::Codec(e.to_string()))
            })
            .collect()
    }

    /// Deletes `keys` in one transaction; how many existed.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn delete_all(&self, keys: &[String]) -> Result<u64, VaultError> {
        self.0.write(|w| {
            let mut deleted = 0;
            for key in keys {
                deleted += u64::from(w.delete(NS_APP, key.as_bytes())?);
            }
            Ok(deleted)
        })
    }
}

impl AppStorage {
    /// The vault these rows live in.
    pub(crate) fn vault(&self) -> &Vault {
        &self.0
    }

    /// Up to `limit` rows whose key starts with `prefix` and comes after `after`, ordered by
    /// key (`newest_first`: the last ones first): a long listing read in bounded pages.
    pub(crate) fn page_by_prefix(
        &self,
        prefix: &str,
        after: Option<&str>,
        newest_first: bool,
        limit: usize,
    ) -> Result<TextRows, VaultError> {
        self.0
            .read(|c, cipher| {
                get_page_sealed(
                    c,
                    cipher,
                    NS_APP,
                    prefix.as_bytes(),
                    after.map(str::as_bytes),
                    newest_first,
                    limit,
                )
            })?
            .into_iter()
            .map(|(key, value)| {
                String::from_utf8(key)
                    .map(|key| (key, value))
                    .map_err(|e| VaultError::Codec(e.to_string()))
            })
            .collect()
    }

    /// Runs `f` in one vault transaction over `app` rows and other namespaces, so that a
    /// message and what indexes it (namespace `search`) change together or not at all.
    pub(crate) fn transaction<T, E: From<VaultError>>(
        &self,
        f: impl FnOnce(&AppTransaction<'_, '_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.0.transaction_with(|tx| f(&AppTransaction { tx }))
    }
}

/// See [`AppStorage::transaction`].
pub(crate) struct AppTransaction<'a, 'b> {
    tx: &'a VaultTransaction<'b>,
}

impl AppTransaction<'_, '_> {
    pub(crate) fn get(&self, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        self.tx.writer.get(NS_APP, key.as_bytes())
    }

    pub(crate) fn insert(&self, key: &str, value: &[u8]) -> Result<(), VaultError> {
        self.tx.writer.put(NS_APP, key.as_bytes(), value)
    }

    pub(crate) fn delete(&self, key: &str) -> Result<bool, VaultError> {
        self.tx.writer.delete(NS_APP, key.as_bytes())
    }

    /// The other namespaces, in the same transaction.
    pub(crate) fn others(&self) -> &VaultTransaction<'_> {
        self.tx
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn open_vault(dir: &Path) -> (Vault, [u8; 32]) {
        let key = DataKey::generate();
        let secret = *key.secret();
        let vault = LockedVault::open(&dir.join("vault.db"))
            .unwrap()
            .unlock(key)
            .unwrap();
        (vault, secret)
    }

    fn epoch(id: u64, data: &[u8]) -> EpochRecord {
        EpochRecord::new(id, Zeroizing::new(data.to_vec()))
    }

    fn state(id: &[u8], data: &[u8]) -> GroupState {
        GroupState {
            id: id.to_vec(),
            data: Zeroizing::new(data.to_vec()),
        }
    }

    #[test]
    fn group_state_round_trips_and_keeps_three_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, _) = open_vault(dir.path());
        let mut storage = vault.group_state_storage();
        let group = b"group-1".as_slice();
        // A group whose id extends the first one's must not be mixed up with it.
        let other = b"group-1\x00\x00".as_slice();
        assert_eq!(storage.state(group).unwrap(), None);
        assert_eq!(storage.max_epoch_id(group).unwrap(), None);

        storage
            .write(state(group, b"snapshot 0"), vec![epoch(0, b"e0")], vec![])
            .unwrap();
        storage
            .write(state(other, b"other"), vec![epoch(7, b"o7")], vec![])
            .unwrap();
        assert_eq!(storage.state(group).unwrap().unwrap().as_slice(), b"snapshot 0");
        assert_eq!(storage.max_epoch_id(group).unwrap(), Some(0));
        assert_eq!(storage.max_epoch_id(other).unwrap(), Some(7));

        for id in 1..=4u64 {
            let data = format!("e{id}");
            storage
                .write(
                    state(group, format!("snapshot {id}").as_bytes()),
                    vec![epoch(id, data.as_bytes())],
                    vec![epoch(id - 1, b"updated")],
                )
                .unwrap();
        }
        assert_eq!(storage.state(group).unwrap().unwrap().as_slice(), b"snapshot 4");
        assert_eq!(storage.max_epoch_id(group).unwrap(), Some(4));
        assert_eq!(storage.epoch(group, 4).unwrap().unwrap().as_slice(), b"e4");
        assert_eq!(storage.epoch(group, 3).unwrap().unwrap().as_slice(), b"updated");
        assert!(storage.epoch(group, 2).unwrap().is_some());
        assert_eq!(
            storage.epoch(group, 1).unwrap(),
            None,
            "older than 3 epochs: pruned"
        );
        assert_eq!(storage.epoch(group, 0).unwrap(), None);
        assert_eq!(
            storage.epoch(other, 7).unwrap().unwrap().as_slice(),
            b"o7",
            "other group untouched"
        );
        assert_eq!(storage.max_epoch_id(b"group-").unwrap(), None);
    }

    #[test]
    fn one_group_state_write_is_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, _) = open_vault(dir.path());
        let mut storage = vault.group_state_storage();
        storage
            .write(state(b"g", b"s1"), vec![epoch(1, b"e1")], vec![])
            .unwrap();
        // Make the next write fail part-way: a trigger refuses epoch 2's insert, which comes
        // after the snapshot was written in the same transaction.
        vault.execute_raw(
            "CREATE TRIGGER refuse AFTER INSERT ON entry WHEN length(NEW.key) = 9 AND substr(NEW.key, 9, 1) = x'02'
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
            [],
        );
        assert!(
            storage
                .write(state(b"g", b"s2"), vec![epoch(2, b"e2")], vec![])
                .is_err()
        );
        assert_eq!(
            storage.state(b"g").unwrap().unwrap().as_slice(),
            b"s1",
            "snapshot rolled back"
        );
        assert_eq!(storage.max_epoch_id(b"g").unwrap(), Some(1));
    }

    #[test]
    fn key_packages_and_psks_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, _) = open_vault(dir.path());
        let mut packages = vault.key_package_storage();
        let data = KeyPackageData::new(
            b"key package".to_vec(),
            vec![1u8; 32].into(),
            vec![2u8; 32].into(),
            1_900_000_000,
        );
        assert_eq!(packages.get(b"kp1").unwrap(), None);
        packages.insert(b"kp1".to_vec(), data.clone()).unwrap();
        assert_eq!(packages.get(b"kp1").unwrap(), Some(data));
        packages.delete(b"kp1").unwrap();
        assert_eq!(packages.get(b"kp1").unwrap(), None);

        let psks = vault.pre_shared_key_storage();
        let id = ExternalPskId::new(b"psk-id".to_vec());
        assert!(!psks.contains(&id).unwrap());
        psks.insert(&id, &PreSharedKey::new(vec![9; 32])).unwrap();
        assert_eq!(psks.get(&id).unwrap().unwrap().raw_value(), &[9; 32]);
    }

    #[test]
    fn app_storage_round_trips_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, _) = open_vault(dir.path());
        let app = vault.app_storage();
        app.insert("msg/b/00000000000000000002", b"two").unwrap();
        app.insert("msg/b/00000000000000000001", b"one").unwrap();
        app.insert("msg/a/00000000000000000001", b"other group").unwrap();
        app.insert("msg/c", b"after").unwrap();
        app.insert("msg/b/00000000000000000001", b"one again").unwrap();
        let listed: Vec<(String, Vec<u8>)> = app
            .get_by_prefix("msg/b/")
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        assert_eq!(
            listed,
            vec![
                ("msg/b/00000000000000000001".to_owned(), b"one again".to_vec()),
                ("msg/b/00000000000000000002".to_owned(), b"two".to_vec()),
            ]
        );
        // Pages after a key, in either order, stay within the prefix.
        app.insert("msg/b/00000000000000000003", b"three").unwrap();
        let page = |after: Option<&str>, newest_first: bool, limit: usize| -> Vec<String> {
            app.page_by_prefix("msg/b/", after, newest_first, limit)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        let key = |seq: u64| format!("msg/b/{seq:020}");
        assert_eq!(page(Some(&key(1)), false, 10), vec![key(2), key(3)]);
        assert_eq!(page(Some(&key(0)), true, 2), vec![key(3), key(2)]);
        assert_eq!(page(None, false, 1), vec![key(1)]);
        assert_eq!(page(Some(&key(3)), true, 10), Vec::<String>::new());
        assert!(app.delete("msg/b/00000000000000000003").unwrap());
        assert_eq!(app.get("msg/c").unwrap().unwrap().as_slice(), b"after");
        assert!(app.delete("msg/c").unwrap());
        assert!(!app.delete("msg/c").unwrap());
        assert_eq!(app.get("msg/c").unwrap(), None);
        assert_eq!(
            app.delete_all(&["msg/b/00000000000000000001".into(), "nothing".into()])
                .unwrap(),
            1
        );
        assert_eq!(app.get_by_prefix("msg/").unwrap().len(), 2);
    }

    #[test]
    fn public_api_round_trips_and_refuses_reserved_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, _) = open_vault(dir.path());
        vault.put("policy", "retention", b"30d").unwrap();
        assert_eq!(
            vault.get("policy", "retention").unwrap().unwrap().as_slice(),
            b"30d"
        );
        vault
            .transaction(|tx| {
                tx.put("policy", "a", b"1")?;
                tx.put("policy", "b", b"2")?;
                tx.delete("policy", "retention")
            })
            .unwrap();
        let keys: Vec<Vec<u8>> = vault
            .get_by_prefix("policy", "")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
        // A failing transaction keeps nothing.
        let failed = vault.transaction(|tx| {
            tx.put("policy", "c", b"3")?;
            tx.put("app", "conv/x", b"not allowed")
        });
        assert!(matches!(failed, Err(VaultError::Namespace(_))));
        assert_eq!(vault.get("policy", "c").unwrap(), None);
        for ns in ["app", "mls/group", "", "a\0b"] {
            assert!(
                matches!(vault.put(ns, "k", b"v"), Err(VaultError::Namespace(_))),
                "{ns:?}"
            );
        }
    }

    #[test]
    fn tampered_or_moved_values_are_errors_not_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, _) = open_vault(dir.path());
        let app = vault.app_storage();
        app.insert("conv/1", b"first").unwrap();
        app.insert("conv/2", b"second").unwrap();
        vault.put("policy", "conv/1", b"policy value").unwrap();

        // Every byte of a sealed value (nonce, ciphertext, tag) is covered.
        let sealed = vault
            .raw_rows()
            .into_iter()
            .find(|(ns, key, _)| ns == "app" && key == b"conv/1")
            .unwrap()
            .2;
        for index in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[index] ^= 0x01;
            vault.execute_raw(
                "UPDATE entry SET value = ?1 WHERE ns = 'app' AND key = CAST('conv/1' AS BLOB)",
                params![altered],
            );
            assert!(
                matches!(app.get("conv/1"), Err(VaultError::Corrupt { .. })),
                "byte {index}"
            );
        }
        // Truncated.
        vault.execute_raw(
            "UPDATE entry SET value = x'0102' WHERE ns = 'app' AND key = CAST('conv/1' AS BLOB)",
            [],
        );
        assert!(matches!(app.get("conv/1"), Err(VaultError::Corrupt { .. })));

        // conv/2's genuine value copied under conv/1: refused, not read as conv/1.
        vault.execute_raw(
            "UPDATE entry SET value = (SELECT value FROM entry WHERE ns = 'app' AND key = CAST('conv/2' AS BLOB))
             WHERE ns = 'app' AND key = CAST('conv/1' AS BLOB)",
            [],
        );
        assert!(matches!(app.get("conv/1"), Err(VaultError::Corrupt { .. })));
        assert!(app.get_by_prefix("conv/").is_err(), "listing fails too");
        // A value moved to another namespace under the same key: refused.
        vault.execute_raw(
            "UPDATE entry SET ns = 'other' WHERE ns = 'policy' AND key = CAST('conv/1' AS BLOB)",
            [],
        );
        assert!(matches!(
            vault.get("other", "conv/1"),
            Err(VaultError::Corrupt { .. })
        ));
        assert_eq!(app.get("conv/2").unwrap().unwrap().as_slice(), b"second");
    }

    #[test]
    fn rotation_reseals_every_row_and_the_old_key_opens_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, old_secret) = open_vault(dir.path());
        let app = vault.app_storage();
        for i in 0..600 {
            app.insert(&format!("msg/{i:05}"), format!("message {i}").as_bytes())
                .unwrap();
        }
        vault
            .group_state_storage()
            .write(state(b"g", b"snap"), vec![epoch(1, b"e1")], vec![])
            .unwrap();
        let new_key = DataKey::generate();
        let new_secret = *new_key.secret();
        let new_id = new_key.id();
        vault.rotate(new_key).unwrap();
        assert_eq!(app.get("msg/00599").unwrap().unwrap().as_slice(), b"message 599");
        assert_eq!(
            vault
                .group_state_storage()
                .state(b"g")
                .unwrap()
                .unwrap()
                .as_slice(),
            b"snap"
        );
        let rows = vault.raw_rows();
        assert_eq!(rows.len(), 602);
        for (ns, key, sealed) in &rows {
            assert!(open(&old_secret, &aad(ns, key), sealed).is_none());
            assert!(open(&new_secret, &aad(ns, key), sealed).is_some());
        }
        drop((app, vault));
        // Reopened: the file says which key it needs; the old one is refused.
        let path = dir.path().join("vault.db");
        assert_eq!(LockedVault::open(&path).unwrap().key_id().unwrap(), Some(new_id));
        let old = DataKey::from_parts(Zeroizing::new(old_secret), [0; 16]);
        assert!(matches!(
            LockedVault::open(&path).unwrap().unlock(old),
            Err(VaultError::KeyMismatch)
        ));
        let vault = LockedVault::open(&path)
            .unwrap()
            .unlock(DataKey::from_parts(Zeroizing::new(new_secret), new_id))
            .unwrap();
        assert_eq!(
            vault.app_storage().get("msg/00000").unwrap().unwrap().as_slice(),
            b"message 0"
        );
    }

    #[test]
    fn a_second_handle_with_a_stale_key_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        let key = DataKey::generate();
        let copy = DataKey::from_parts(Zeroizing::new(*key.secret()), key.id());
        let first = LockedVault::open(&path).unwrap().unlock(key).unwrap();
        let second = LockedVault::open(&path).unwrap().unlock(copy).unwrap();
        first.rotate(DataKey::generate()).unwrap();
        assert!(matches!(
            second.put("policy", "k", b"v"),
            Err(VaultError::KeyMismatch)
        ));
        first.put("policy", "k", b"v").unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (vault, _) = open_vault(dir.path());
        vault.put("policy", "k", b"v").unwrap();
        for file in ["vault.db", "vault.db-wal", "vault.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
}
