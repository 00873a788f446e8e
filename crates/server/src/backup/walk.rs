//! What goes into an archive from a data folder, and what comes out of one.
//!
//! Taken: every folder and regular file under the data folder, except the server database
//! (snapshotted first, by the caller), SQLite's `-wal`/`-shm`/`-journal` files, `*.tmp`
//! files (an atomic write in progress), and under `blobs/` everything but the complete
//! attachments the snapshot records. Other SQLite databases (the mail connector's device
//! profile in `connector/`) are snapshotted the same online way. Symbolic links are
//! followed (an operator may keep `blobs/` on another disk); the archive holds only plain
//! files and folders.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use redoubt_proto::BlobId;

use super::entries::{EntryPath, Record};
use super::format::unwrap_io;
use super::{BLOBS, BackupError, DATABASE, Summary, io_error};

/// Deepest folder nesting followed in a data folder (symbolic links could loop).
const FOLDER_DEPTH_MAX: usize = 12;
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Bytes moved per read and write when copying files in and out (std's copy moves 8 KiB).
const COPY_BUFFER_BYTES: usize = 1 << 20;

/// Copies `from` to its end into `to`, a large buffer at a time; returns the bytes copied.
fn copy(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<u64> {
    let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
    let mut copied = 0;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buffer[..n])?;
        copied += n as u64;
    }
}

/// Refuses a folder that is no single server's data folder, and an archive written inside
/// the folder it backs up.
pub(super) fn check_source(data: &Path, out: &Path) -> Result<(), BackupError> {
    for required in [DATABASE, "org-root.key"] {
        if !data.join(required).is_file() {
            return Err(BackupError::Refused(format!(
                "{} is not a Redoubt data folder ({required} is missing)",
                data.display()
            )));
        }
    }
    let data = data.canonicalize().map_err(|e| io_error(data, e))?;
    let out_dir = super::parent_of(out);
    let out_dir = out_dir.canonicalize().map_err(|e| io_error(&out_dir, e))?;
    if out_dir.starts_with(&data) {
        return Err(BackupError::Refused(
            "write the backup outside the data folder it backs up".into(),
        ));
    }
    Ok(())
}

fn mode_of(meta: &std::fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o7777
    }
    #[cfg(not(unix))]
    {
        if meta.is_dir() { 0o700 } else { 0o600 }
    }
}

/// Writes records and files into the sealed stream, counting them.
pub(super) struct EntryWriter<'a, W: Write> {
    out: W,
    staging: &'a Path,
    archive: &'a Path,
    summary: Summary,
}

impl<'a, W: Write> EntryWriter<'a, W> {
    pub(super) fn new(out: W, staging: &'a Path, archive: &'a Path) -> Self {
        Self {
            out,
            staging,
            archive,
            summary: Summary::default(),
        }
    }

    pub(super) fn record(&mut self, record: &Record) -> Result<(), BackupError> {
        record.write(&mut self.out).map_err(|e| io_error(self.archive, e))
    }

    fn directory(&mut self, path: &EntryPath, mode: u32) -> Result<(), BackupError> {
        self.record(&Record::Directory {
            path: path.clone(),
            mode,
        })?;
        self.summary.directories += 1;
        Ok(())
    }

    /// Copies the file at `source` whole (it must not change meanwhile).
    pub(super) fn file(&mut self, path: &EntryPath, source: &Path, mode: u32) -> Result<(), BackupError> {
        let file = File::open(source).map_err(|e| io_error(source, e))?;
        self.open_file(path, source, file, mode)
    }

    fn open_file(
        &mut self,
        path: &EntryPath,
        source: &Path,
        file: File,
        mode: u32,
    ) -> Result<(), BackupError> {
        let length = file.metadata().map_err(|e| io_error(source, e))?.len();
        self.record(&Record::File {
            path: path.clone(),
            mode,
            length,
        })?;
        let copied = copy(&mut file.take(length), &mut self.out).map_err(|e| io_error(source, e))?;
        if copied != length {
            return Err(BackupError::Io(format!(
                "{} shrank while it was being copied",
                source.display()
            )));
        }
        self.summary.files += 1;
        self.summary.file_bytes += length;
        if path.as_str().starts_with("blobs/") {
            self.summary.blobs += 1;
        }
        Ok(())
    }

    /// Seals the end record with the totals; returns them and the stream.
    pub(super) fn finish(mut self) -> Result<(Summary, W), BackupError> {
        let end = Record::End {
            directories: self.summary.directories,
            files: self.summary.files,
            file_bytes: self.summary.file_bytes,
        };
        self.record(&end)?;
        Ok((self.summary, self.out))
    }
}

fn is_sqlite(path: &Path) -> bool {
    let mut magic = [0u8; 16];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == SQLITE_MAGIC)
}

/// Whether a file is left out: SQLite's side files and temporary files.
fn skipped(name: &str) -> bool {
    name.ends_with(".tmp")
        || ["-wal", "-shm", "-journal"]
            .iter()
            .any(|side| name.ends_with(side))
}

/// Writes the folder `data` (all but its database) and the blobs in `blob_ids`.
pub(super) fn write_folder<W: Write>(
    writer: &mut EntryWriter<'_, W>,
    data: &Path,
    blob_ids: &[BlobId],
) -> Result<(), BackupError> {
    let mut stack: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    while let Some((relative, depth)) = stack.pop() {
        let dir = data.join(&relative);
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&dir)
            .map_err(|e| io_error(&dir, e))?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| io_error(&dir, e))?;
        names.sort();
        for name in names {
            let child = relative.join(&name);
            let source = data.join(&child);
            let text = name.to_string_lossy();
            if child == Path::new(DATABASE) || skipped(&text) {
                continue;
            }
            // Follows symbolic links; one that leads nowhere is left out.
            let Ok(meta) = std::fs::metadata(&source) else {
                tracing::warn!(path = %source.display(), "left out of the backup: cannot be read");
                continue;
            };
            let path = EntryPath::from_relative(&child)?;
            if meta.is_dir() {
                if depth + 1 > FOLDER_DEPTH_MAX {
                    return Err(BackupError::Refused(format!(
                        "{} is nested too deep (a symbolic link loop?)",
                        source.display()
                    )));
                }
                writer.directory(&path, mode_of(&meta))?;
                if child == Path::new(BLOBS) {
                    write_blobs(writer, &source, blob_ids)?;
                } else {
                    stack.push((child, depth + 1));
                }
            } else if meta.is_file() {
                write_file(writer, &path, &source, mode_of(&meta))?;
            }
        }
    }
    Ok(())
}

/// A plain file, or a database in use (the connector's), snapshotted online.
fn write_file<W: Write>(
    writer: &mut EntryWriter<'_, W>,
    path: &EntryPath,
    source: &Path,
    mode: u32,
) -> Result<(), BackupError> {
    if !is_sqlite(source) {
        return writer.file(path, source, mode);
    }
    let copy = writer.staging.join("database.db");
    redoubt_store_sqlite::snapshot::snapshot(source, &copy)?;
    let written = writer.file(path, &copy, mode);
    std::fs::remove_file(&copy).map_err(|e| io_error(&copy, e))?;
    written
}

/// The attachment files the snapshot records complete.
fn write_blobs<W: Write>(
    writer: &mut EntryWriter<'_, W>,
    dir: &Path,
    blob_ids: &[BlobId],
) -> Result<(), BackupError> {
    for id in blob_ids {
        let name = id.to_string();
        let source = dir.join(&name);
        let file = match File::open(&source) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                // Only a history transfer's blobs are ever deleted: picked up meanwhile.
                tracing::warn!(blob_id = %id, "a blob was deleted after the snapshot; left out");
                writer.summary.blobs_gone += 1;
                continue;
            }
            Err(error) => return Err(io_error(&source, error)),
        };
        let meta = file.metadata().map_err(|e| io_error(&source, e))?;
        let path = EntryPath::parse(&format!("{BLOBS}/{name}"))?;
        writer.open_file(&path, &source, file, mode_of(&meta))?;
    }
    Ok(())
}

/// Modes as restored: never writable by group or others, nor set-id.
fn restored_mode(mode: u32) -> u32 {
    mode & 0o755
}

/// Reads the whole entry stream. With `restore`, recreates every folder and file under
/// `root`; otherwise writes only the database there (for its check) and reads the rest.
pub(super) fn unpack(reader: &mut impl Read, root: &Path, restore: bool) -> Result<Summary, BackupError> {
    let mut summary = Summary::default();
    match Record::read(reader)? {
        Some(Record::Info {
            taken_at_unix_ms,
            version,
        }) => {
            summary.taken_at_unix_ms = taken_at_unix_ms;
            summary.version = version;
        }
        _ => {
            return Err(BackupError::Malformed(
                "the stream does not begin with its info record".into(),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    let mut folder_modes = Vec::new();
    let mut written = Vec::new();
    let end = loop {
        let record = Record::read(reader)?
            .ok_or_else(|| BackupError::Malformed("the stream ends without its end record".into()))?;
        match record {
            Record::Info { .. } => return Err(BackupError::Malformed("a second info record".into())),
            Record::End { .. } => break record,
            Record::Directory { path, mode } => {
                if !seen.insert(path.as_str().to_owned()) {
                    return Err(BackupError::Malformed(format!("{} appears twice", path.as_str())));
                }
                summary.directories += 1;
                if restore {
                    let dir = path.under(root);
                    make_folders(root, &dir)?;
                    folder_modes.push((dir, restored_mode(mode)));
                }
            }
            Record::File { path, mode, length } => {
                if !seen.insert(path.as_str().to_owned()) {
                    return Err(BackupError::Malformed(format!("{} appears twice", path.as_str())));
                }
                let keep = restore || path.as_str() == DATABASE;
                unpack_file(reader, root, &path, restored_mode(mode), length, keep)?;
                if keep {
                    written.push(path.under(root));
                }
                summary.files += 1;
                summary.file_bytes = summary.file_bytes.saturating_add(length);
                if path.as_str() == DATABASE {
                    summary.database_bytes = length;
                } else if path.as_str().starts_with("blobs/") {
                    summary.blobs += 1;
                }
            }
        }
    };
    let totals = Record::End {
        directories: summary.directories,
        files: summary.files,
        file_bytes: summary.file_bytes,
    };
    if end != totals {
        return Err(BackupError::Malformed(format!(
            "the end record's totals ({end:?}) differ from the entries read ({totals:?})"
        )));
    }
    let mut trailing = [0u8; 1];
    match reader.read(&mut trailing) {
        Ok(0) => {}
        Ok(_) => return Err(BackupError::Malformed("data after the end record".into())),
        Err(error) => return Err(unwrap_io(error, "reading the archive")),
    }
    if !seen.contains(DATABASE) {
        return Err(BackupError::Malformed(
            "the archive holds no server database".into(),
        ));
    }
    // Synced all at the end rather than each as written, so the disk writes back while
    // later chunks are decrypted.
    for path in written {
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_error(&path, e))?;
    }
    // Deepest first, so a read-only folder does not stop its parent's change.
    folder_modes.sort_by_key(|(dir, _)| std::cmp::Reverse(dir.components().count()));
    for (dir, mode) in folder_modes {
        set_mode(&dir, mode)?;
        super::sync_dir(&dir)?;
    }
    Ok(summary)
}

/// Creates `dir` and its missing parents under `root`, private until their recorded modes
/// are applied at the end.
fn make_folders(root: &Path, dir: &Path) -> Result<(), BackupError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    debug_assert!(dir.starts_with(root));
    builder.create(dir).map_err(|e| io_error(dir, e))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), BackupError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_error(path, e))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

fn unpack_file(
    reader: &mut impl Read,
    root: &Path,
    path: &EntryPath,
    mode: u32,
    length: u64,
    keep: bool,
) -> Result<(), BackupError> {
    let mut bytes = reader.take(length);
    let copied = if keep {
        let target = path.under(root);
        if let Some(parent) = target.parent() {
            make_folders(root, parent)?;
        }
        let mut options = std::fs::OpenOptions::new();
        // create_new: never through a link, never over an earlier entry.
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&target).map_err(|e| io_error(&target, e))?;
        let mut file = std::io::BufWriter::with_capacity(COPY_BUFFER_BYTES, file);
        let copied = copy(&mut bytes, &mut file).map_err(|e| unwrap_io(e, "restoring"))?;
        file.into_inner().map_err(|e| io_error(&target, e.into_error()))?;
        set_mode(&target, mode)?;
        copied
    } else {
        copy(&mut bytes, &mut std::io::sink()).map_err(|e| unwrap_io(e, "reading the archive"))?
    };
    if copied != length {
        return Err(BackupError::Malformed(format!(
            "{} ends after {copied} of its {length} bytes",
            path.as_str()
        )));
    }
    Ok(())
}
