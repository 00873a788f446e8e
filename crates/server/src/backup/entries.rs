//! The entry stream inside the sealed chunks: an info record, directories and files (path,
//! mode, length, bytes), and an end record with the totals. Every length is bounded and
//! every path checked before anything is done with it: the stream authenticated, but a
//! passphrase holder may still have made it by hand.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use super::BackupError;

const TAG_INFO: u8 = b'I';
const TAG_DIRECTORY: u8 = b'D';
const TAG_FILE: u8 = b'F';
const TAG_END: u8 = b'E';

/// Longest path (bytes) and deepest nesting an entry may have.
const PATH_BYTES_MAX: usize = 1024;
const PATH_DEPTH_MAX: usize = 16;
/// Longest version string in the info record.
const VERSION_BYTES_MAX: usize = 64;

/// A file or directory in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EntryPath(String);

impl EntryPath {
    /// `relative` (to the data folder) as an archive path: '/'-separated, UTF-8, no `.`,
    /// `..`, root or empty components.
    pub(super) fn from_relative(relative: &Path) -> Result<Self, BackupError> {
        let mut parts = Vec::new();
        for component in relative.components() {
            match component {
                Component::Normal(part) => parts.push(
                    part.to_str()
                        .ok_or_else(|| BackupError::Io(format!("{} is not UTF-8", relative.display())))?,
                ),
                _ => {
                    return Err(BackupError::Io(format!(
                        "{} is not a plain relative path",
                        relative.display()
                    )));
                }
            }
        }
        Self::parse(&parts.join("/"))
    }

    pub(super) fn parse(text: &str) -> Result<Self, BackupError> {
        let bad = |why: &str| BackupError::UnsafePath(format!("{text:?}: {why}"));
        if text.is_empty() || text.len() > PATH_BYTES_MAX {
            return Err(bad("empty or too long"));
        }
        let parts: Vec<&str> = text.split('/').collect();
        if parts.len() > PATH_DEPTH_MAX {
            return Err(bad("nested too deep"));
        }
        for part in parts {
            if part.is_empty() || part == "." || part == ".." {
                return Err(bad("an empty, '.' or '..' component"));
            }
            if part.chars().any(|c| c == '\\' || c == '\0' || c.is_control()) {
                return Err(bad("a backslash or control character"));
            }
        }
        Ok(Self(text.to_owned()))
    }

    pub(super) fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the entry goes under `root` (always inside it: the path was checked).
    pub(super) fn under(&self, root: &Path) -> PathBuf {
        self.0
            .split('/')
            .fold(root.to_owned(), |path, part| path.join(part))
    }
}

/// One record of the stream. A file's bytes follow its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Record {
    Info {
        taken_at_unix_ms: u64,
        version: String,
    },
    Directory {
        path: EntryPath,
        mode: u32,
    },
    File {
        path: EntryPath,
        mode: u32,
        length: u64,
    },
    End {
        directories: u64,
        files: u64,
        file_bytes: u64,
    },
}

fn put_path(out: &mut Vec<u8>, path: &EntryPath) {
    // Bounded by PATH_BYTES_MAX, so it fits in a u16.
    out.extend_from_slice(&(path.0.len() as u16).to_be_bytes());
    out.extend_from_slice(path.0.as_bytes());
}

impl Record {
    pub(super) fn write(&self, to: &mut impl Write) -> std::io::Result<()> {
        let mut out = Vec::new();
        match self {
            Self::Info {
                taken_at_unix_ms,
                version,
            } => {
                out.push(TAG_INFO);
                out.extend_from_slice(&taken_at_unix_ms.to_be_bytes());
                let version = &version.as_bytes()[..version.len().min(VERSION_BYTES_MAX)];
                out.push(version.len() as u8);
                out.extend_from_slice(version);
            }
            Self::Directory { path, mode } => {
                out.push(TAG_DIRECTORY);
                put_path(&mut out, path);
                out.extend_from_slice(&mode.to_be_bytes());
            }
            Self::File { path, mode, length } => {
                out.push(TAG_FILE);
                put_path(&mut out, path);
                out.extend_from_slice(&mode.to_be_bytes());
                out.extend_from_slice(&length.to_be_bytes());
            }
            Self::End {
                directories,
                files,
                file_bytes,
            } => {
                out.push(TAG_END);
                out.extend_from_slice(&directories.to_be_bytes());
                out.extend_from_slice(&files.to_be_bytes());
                out.extend_from_slice(&file_bytes.to_be_bytes());
            }
        }
        to.write_all(&out)
    }

    /// Reads the next record; `None` at a clean end of the plaintext.
    pub(super) fn read(from: &mut impl Read) -> Result<Option<Self>, BackupError> {
        let mut tag = [0u8; 1];
        match read_exact(from, &mut tag) {
            Ok(()) => {}
            Err(Short::Eof) => return Ok(None),
            Err(Short::Error(error)) => return Err(error),
        }
        let record = match tag[0] {
            TAG_INFO => {
                let taken_at_unix_ms = u64::from_be_bytes(array(from)?);
                let [len] = array::<1>(from)?;
                let mut version = vec![0; usize::from(len)];
                body(from, &mut version)?;
                Self::Info {
                    taken_at_unix_ms,
                    version: String::from_utf8_lossy(&version).into_owned(),
                }
            }
            TAG_DIRECTORY => Self::Directory {
                path: read_path(from)?,
                mode: u32::from_be_bytes(array(from)?),
            },
            TAG_FILE => Self::File {
                path: read_path(from)?,
                mode: u32::from_be_bytes(array(from)?),
                length: u64::from_be_bytes(array(from)?),
            },
            TAG_END => Self::End {
                directories: u64::from_be_bytes(array(from)?),
                files: u64::from_be_bytes(array(from)?),
                file_bytes: u64::from_be_bytes(array(from)?),
            },
            other => {
                return Err(BackupError::Malformed(format!(
                    "unknown record type {other:#04x}"
                )));
            }
        };
        Ok(Some(record))
    }
}

enum Short {
    Eof,
    Error(BackupError),
}

fn read_exact(from: &mut impl Read, out: &mut [u8]) -> Result<(), Short> {
    match from.read_exact(out) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Err(Short::Eof),
        Err(error) => Err(Short::Error(super::format::unwrap_io(
            error,
            "reading the archive",
        ))),
    }
}

/// Reads bytes that must be there: an end inside a record is a malformed stream.
fn body(from: &mut impl Read, out: &mut [u8]) -> Result<(), BackupError> {
    read_exact(from, out).map_err(|short| match short {
        Short::Eof => BackupError::Malformed("the entry stream ends inside a record".into()),
        Short::Error(error) => error,
    })
}

fn array<const N: usize>(from: &mut impl Read) -> Result<[u8; N], BackupError> {
    let mut out = [0u8; N];
    body(from, &mut out)?;
    Ok(out)
}

fn read_path(from: &mut impl Read) -> Result<EntryPath, BackupError> {
    let len = usize::from(u16::from_be_bytes(array(from)?));
    if len > PATH_BYTES_MAX {
        return Err(BackupError::UnsafePath(format!("a path of {len} bytes")));
    }
    let mut bytes = vec![0; len];
    body(from, &mut bytes)?;
    let text =
        String::from_utf8(bytes).map_err(|_| BackupError::UnsafePath("a path that is not UTF-8".into()))?;
    EntryPath::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let records = [
            Record::Info {
                taken_at_unix_ms: 1_700_000_000_000,
                version: "0.1.0".into(),
            },
            Record::Directory {
                path: EntryPath::parse("tls").unwrap(),
                mode: 0o700,
            },
            Record::File {
                path: EntryPath::parse("tls/key.pem").unwrap(),
                mode: 0o600,
                length: 42,
            },
            Record::End {
                directories: 1,
                files: 1,
                file_bytes: 42,
            },
        ];
        let mut bytes = Vec::new();
        for record in &records {
            record.write(&mut bytes).unwrap();
        }
        let mut reader = bytes.as_slice();
        for record in &records {
            assert_eq!(Record::read(&mut reader).unwrap().as_ref(), Some(record));
        }
        assert_eq!(Record::read(&mut reader).unwrap(), None);
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for path in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "a\\..\\b",
            "a\0b",
            "a/\n",
        ] {
            assert!(EntryPath::parse(path).is_err(), "{path:?} accepted");
        }
        assert!(EntryPath::parse("a/".repeat(20).trim_end_matches('/')).is_err());
        assert!(EntryPath::parse(&"x".repeat(2000)).is_err());
        for path in [
            "redoubt.db",
            "blobs/0123abcd",
            "connector/vault.db",
            "tls/key.pem",
        ] {
            let parsed = EntryPath::parse(path).unwrap();
            assert!(parsed.under(Path::new("/r")).starts_with("/r"));
        }
    }

    #[test]
    fn a_record_cut_short_is_malformed() {
        let mut bytes = Vec::new();
        Record::File {
            path: EntryPath::parse("a").unwrap(),
            mode: 0o600,
            length: 1,
        }
        .write(&mut bytes)
        .unwrap();
        bytes.pop();
        assert!(matches!(
            Record::read(&mut bytes.as_slice()),
            Err(BackupError::Malformed(_))
        ));
    }
}
