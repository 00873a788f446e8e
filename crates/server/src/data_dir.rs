//! The data folder: everything a server needs to restart where it left off.
//!
//! ```text
//! DATA/redoubt.toml           configuration (documented; written once, then the admin's)
//! DATA/org-root.key           the organisation's Ed25519 root key (0600)
//! DATA/transparency.key       the key directory's signing and VRF keys (0600)
//! DATA/tls/cert.pem, key.pem  the self-signed TLS certificate and key (key 0600)
//! DATA/redoubt.db             the SQLite database (0600), with -wal and -shm beside it
//! DATA/admin-activation.txt   the first admin's activation code (0600)
//! DATA/blobs/                 encrypted attachments (ciphertext only), one file each
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ServerError;

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("redoubt.toml")
    }

    pub fn org_key(&self) -> PathBuf {
        self.root.join("org-root.key")
    }

    /// The key directory's transparency (signing) key and VRF key.
    pub fn transparency_key(&self) -> PathBuf {
        self.root.join("transparency.key")
    }

    pub fn tls_certificate(&self) -> PathBuf {
        self.root.join("tls").join("cert.pem")
    }

    pub fn tls_private_key(&self) -> PathBuf {
        self.root.join("tls").join("key.pem")
    }

    pub fn database(&self) -> PathBuf {
        self.root.join("redoubt.db")
    }

    /// Encrypted attachment blobs, one file each.
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn admin_activation(&self) -> PathBuf {
        self.root.join("admin-activation.txt")
    }

    /// Creates the folder (and `tls/`) with mode 0700 if missing.
    pub(crate) fn create(&self) -> Result<(), ServerError> {
        for dir in [self.root.clone(), self.root.join("tls"), self.blobs()] {
            create_private_dir(&dir)?;
        }
        Ok(())
    }
}

fn io_error(path: &Path, error: std::io::Error) -> ServerError {
    ServerError::Io(format!("{}: {error}", path.display()))
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_error(dir, e))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), ServerError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))
}

/// Writes `bytes` to `path` with mode 0600, atomically: a reader sees the old file or the
/// whole new one, and a crash leaves no half-written secret.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ServerError> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(|e| io_error(&tmp, e))?;
    file.write_all(bytes).map_err(|e| io_error(&tmp, e))?;
    file.sync_all().map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
    if let Some(parent) = path.parent() {
        // Make the rename durable.
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(parent, e))?;
    }
    Ok(())
}

/// Reads a file, mapping errors to messages naming the path.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|e| io_error(path, e))
}
