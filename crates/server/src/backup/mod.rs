//! Online backup of a single server's data folder into one encrypted archive, and its
//! restore and verification (`redoubt server backup`, `restore`, `backup verify`; the
//! format is in `docs/backup.md`).
//!
//! Consistency: the server database is snapshotted first with SQLite's backup API (one
//! read transaction, while the server keeps writing). An attachment is recorded complete
//! only after its file was synced and renamed into place, and attachment files are never
//! changed, so every blob the snapshot records complete is on disk when the snapshot is
//! taken; the archive holds exactly those. Only history-transfer blobs are ever deleted
//! (once picked up); one deleted between the snapshot and its copy is counted as gone.
//!
//! A restore writes into a temporary folder beside the target and renames it into place
//! only once the whole archive authenticated, its totals matched and the database passed
//! SQLite's integrity check: a wrong passphrase, a changed byte or a cut archive leaves
//! nothing behind.

mod entries;
mod format;
mod walk;

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};
use redoubt_store::StoreError;
use zeroize::Zeroizing;

use entries::{EntryPath, Record};
use format::{HEADER_BYTES, Header, OpeningReader, SealingWriter};

/// Shortest passphrase a new archive accepts (characters): the archive can be attacked
/// offline, and argon2id only slows each guess.
pub const PASSPHRASE_CHARS_MIN: usize = 12;
/// The server database's path inside the archive (and the data folder).
const DATABASE: &str = "redoubt.db";
/// Attachment files' folder inside the archive (and the data folder).
const BLOBS: &str = "blobs";

/// A backup passphrase: never printed, zeroed when dropped.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is long enough for a new archive ([`PASSPHRASE_CHARS_MIN`]).
    pub fn long_enough(&self) -> bool {
        self.0.chars().count() >= PASSPHRASE_CHARS_MIN
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The first chunk does not authenticate: the passphrase is wrong, or the start of the
    /// archive was changed (the two cannot be told apart).
    #[error("wrong passphrase or damaged archive")]
    WrongPassphraseOrDamaged,
    #[error("archive damaged at byte {offset}: {reason}")]
    Damaged { offset: u64, reason: String },
    #[error("not a Redoubt backup archive")]
    NotAnArchive,
    #[error("backup archive format version {0} is not supported (this redoubt reads version 1)")]
    UnsupportedVersion(u16),
    /// The stream authenticated but does not follow the format.
    #[error("the archive's contents are malformed: {0}")]
    Malformed(String),
    #[error("the archive holds an unsafe path: {0}")]
    UnsafePath(String),
    /// The request itself cannot be done (a non-empty target, a short passphrase).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Io(String),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

fn io_error(path: &Path, error: std::io::Error) -> BackupError {
    BackupError::Io(format!("{}: {error}", path.display()))
}

/// What an archive holds (after `backup`, `restore` or `verify`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// When the database snapshot was taken.
    pub taken_at_unix_ms: u64,
    /// The redoubt version that wrote the archive.
    pub version: String,
    pub directories: u64,
    pub files: u64,
    /// Bytes of all files (before encryption).
    pub file_bytes: u64,
    /// Bytes of the server database snapshot.
    pub database_bytes: u64,
    /// Attachment files.
    pub blobs: u64,
    /// History-transfer blobs deleted (picked up) between the snapshot and their copy.
    pub blobs_gone: u64,
    /// Size of the archive file.
    pub archive_bytes: u64,
    /// argon2id costs: memory (KiB), passes, lanes.
    pub kdf_memory_kib: u32,
    pub kdf_iterations: u32,
    pub kdf_lanes: u32,
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A file or folder made on the way, removed on drop unless [`Scratch::keep`] was called:
/// a failed backup or restore leaves nothing behind.
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    fn new(path: PathBuf) -> Self {
        Self { path, keep: false }
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let _ = match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&self.path),
            Ok(_) => std::fs::remove_file(&self.path),
            Err(_) => Ok(()),
        };
    }
}

/// A fresh name beside `path`: `.NAME.WHAT-PID-RANDOM`.
fn beside(path: &Path, what: &str) -> Result<PathBuf, BackupError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| BackupError::Refused(format!("{} has no usable file name", path.display())))?;
    let mut random = [0u8; 6];
    OsRng.fill_bytes(&mut random);
    let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
    Ok(path.with_file_name(format!(".{name}.{what}-{}-{random}", std::process::id())))
}

fn create_private_dir(path: &Path) -> Result<(), BackupError> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(|e| io_error(path, e))
}

fn sync_dir(path: &Path) -> Result<(), BackupError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(path, e))
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Writes a backup of the data folder `data` (which a server may be using) to the new file
/// `out`, encrypted under `passphrase`.
pub fn backup(data: &Path, out: &Path, passphrase: &Passphrase) -> Result<Summary, BackupError> {
    if !passphrase.long_enough() {
        return Err(BackupError::Refused(format!(
            "the passphrase must have at least {PASSPHRASE_CHARS_MIN} characters"
        )));
    }
    walk::check_source(data, out)?;
    if out.exists() {
        return Err(BackupError::Refused(format!(
            "{} already exists; name a new file",
            out.display()
        )));
    }
    let staging = Scratch::new(beside(out, "snapshots")?);
    create_private_dir(&staging.path)?;
    let partial = Scratch::new(beside(out, "partial")?);

    // The database first: it decides which attachments belong to the backup.
    let taken_at_unix_ms = now_unix_ms();
    let database = staging.path.join(DATABASE);
    let database_bytes = redoubt_store_sqlite::snapshot::snapshot(&data.join(DATABASE), &database)?;
    // A database already damaged is found now, not at restore time.
    redoubt_store_sqlite::snapshot::integrity_check(&database)?;
    let blob_ids = redoubt_store_sqlite::snapshot::complete_blob_ids(&database)?;

    let header = Header::fresh();
    let key = header.derive_key(passphrase)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(&partial.path)
        .map_err(|e| io_error(&partial.path, e))?;
    let sealing = SealingWriter::new(BufWriter::with_capacity(1 << 20, file), &header, &key)
        .map_err(|e| io_error(&partial.path, e))?;
    let mut writer = walk::EntryWriter::new(sealing, &staging.path, &partial.path);
    writer.record(&Record::Info {
        taken_at_unix_ms,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })?;
    writer.file(&EntryPath::parse(DATABASE)?, &database, 0o600)?;
    std::fs::remove_file(&database).map_err(|e| io_error(&database, e))?;
    walk::write_folder(&mut writer, data, &blob_ids)?;
    let (mut summary, sealing) = writer.finish()?;
    let (buffered, archive_bytes) = sealing.finish().map_err(|e| io_error(&partial.path, e))?;
    let file = buffered
        .into_inner()
        .map_err(|e| io_error(&partial.path, e.into_error()))?;
    file.sync_all().map_err(|e| io_error(&partial.path, e))?;
    drop(file);
    // The archive appears under its name only whole.
    std::fs::rename(&partial.path, out).map_err(|e| io_error(out, e))?;
    partial.keep();
    sync_dir(&parent_of(out))?;

    summary.taken_at_unix_ms = taken_at_unix_ms;
    summary.version = env!("CARGO_PKG_VERSION").to_owned();
    summary.database_bytes = database_bytes;
    summary.archive_bytes = archive_bytes;
    summary.kdf_memory_kib = header.memory_kib;
    summary.kdf_iterations = header.iterations;
    summary.kdf_lanes = header.lanes;
    Ok(summary)
}

/// Opens `archive`: reads its header and derives its key.
fn open_archive(
    archive: &Path,
    passphrase: &Passphrase,
) -> Result<(OpeningReader<BufReader<File>>, Header, u64), BackupError> {
    let file = File::open(archive).map_err(|e| io_error(archive, e))?;
    let archive_bytes = file.metadata().map_err(|e| io_error(archive, e))?.len();
    let mut file = BufReader::with_capacity(1 << 20, file);
    let mut bytes = [0u8; HEADER_BYTES];
    file.read_exact(&mut bytes).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => BackupError::NotAnArchive,
        _ => io_error(archive, e),
    })?;
    let header = Header::decode(&bytes)?;
    let key = header.derive_key(passphrase)?;
    Ok((OpeningReader::new(file, &header, &key), header, archive_bytes))
}

/// Restores `archive` into `data`, a new or empty folder, all or nothing.
pub fn restore(archive: &Path, data: &Path, passphrase: &Passphrase) -> Result<Summary, BackupError> {
    let existing_empty = match std::fs::read_dir(data).map(|mut entries| entries.next().is_none()) {
        Ok(true) => true,
        Ok(false) => {
            return Err(BackupError::Refused(format!(
                "{} is not empty; restore into a new or empty folder",
                data.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_error(data, e)),
    };
    let (mut reader, header, archive_bytes) = open_archive(archive, passphrase)?;
    let staging = Scratch::new(beside(data, "restore")?);
    create_private_dir(&staging.path)?;
    let mut summary = walk::unpack(&mut reader, &staging.path, true)?;
    redoubt_store_sqlite::snapshot::integrity_check(&staging.path.join(DATABASE))?;
    // The lost server may have numbered messages, policies and commands after the snapshot,
    // and devices have seen those numbers: the restored server starts past them.
    redoubt_store_sqlite::snapshot::skip_numbers_handed_out_after(&staging.path.join(DATABASE))?;
    sync_dir(&staging.path)?;
    if existing_empty {
        std::fs::remove_dir(data).map_err(|e| io_error(data, e))?;
    }
    std::fs::rename(&staging.path, data).map_err(|e| io_error(data, e))?;
    staging.keep();
    sync_dir(&parent_of(data))?;
    summary.archive_bytes = archive_bytes;
    summary.kdf_memory_kib = header.memory_kib;
    summary.kdf_iterations = header.iterations;
    summary.kdf_lanes = header.lanes;
    Ok(summary)
}

/// Decrypts and checks all of `archive` without restoring it; only the database snapshot
/// is written (to a temporary folder) for SQLite's integrity check.
pub fn verify(archive: &Path, passphrase: &Passphrase) -> Result<Summary, BackupError> {
    let (mut reader, header, archive_bytes) = open_archive(archive, passphrase)?;
    let scratch = Scratch::new(beside(&std::env::temp_dir().join("redoubt-verify"), "db")?);
    create_private_dir(&scratch.path)?;
    let mut summary = walk::unpack(&mut reader, &scratch.path, false)?;
    redoubt_store_sqlite::snapshot::integrity_check(&scratch.path.join(DATABASE))?;
    summary.archive_bytes = archive_bytes;
    summary.kdf_memory_kib = header.memory_kib;
    summary.kdf_iterations = header.iterations;
    summary.kdf_lanes = header.lanes;
    Ok(summary)
}

#[cfg(test)]
mod tests;
