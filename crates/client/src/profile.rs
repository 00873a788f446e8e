//! A device's profile on disk: where its server is, how to recognise it, and the device's
//! own key and certificate.
//!
//! ```text
//! PROFILE/profile.json   server address, certificate pin, organisation key, certificate (0600)
//! PROFILE/device.key     the device's Ed25519 private key, 32 bytes (0600)
//! ```

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use redoubt_proto::{DeviceCertificate, DeviceId, OrgId, ServerAddress, UserName, VerifiedCertificate};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::ClientError;

const PROFILE_FILE: &str = "profile.json";
const KEY_FILE: &str = "device.key";

/// The public part of a profile, as stored in `profile.json`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    server: ServerAddress,
    /// SHA-256 of the server's TLS certificate, hex.
    server_certificate_pin: String,
    org_name: String,
    /// The organisation's root public key, hex.
    org_public_key: String,
    /// The device certificate, hex.
    certificate: String,
}

pub struct Profile {
    dir: PathBuf,
    pub server: ServerAddress,
    pub pin: [u8; 32],
    pub org_public_key: [u8; 32],
    pub org_name: String,
    certificate: VerifiedCertificate,
    key: SigningKey,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("dir", &self.dir)
            .field("server", &self.server)
            .field("user", &self.user())
            .field("device_id", &self.device_id())
            .finish_non_exhaustive()
    }
}

fn profile_error(path: &Path, error: impl std::fmt::Display) -> ClientError {
    ClientError::Profile(format!("{}: {error}", path.display()))
}

pub(crate) fn ensure_absent(dir: &Path) -> Result<(), ClientError> {
    if dir.join(PROFILE_FILE).exists() || dir.join(KEY_FILE).exists() {
        return Err(ClientError::Profile(format!(
            "{} already holds an enrolled device; use another --profile folder",
            dir.display()
        )));
    }
    Ok(())
}

fn hex_array(text: &str, what: &str, path: &Path) -> Result<[u8; 32], ClientError> {
    redoubt_proto::Bytes::<32>::from_hex(text)
        .map(|b| b.0)
        .ok_or_else(|| profile_error(path, format!("{what} is not 64 hex digits")))
}

impl Profile {
    pub(crate) fn new(
        dir: &Path,
        server: ServerAddress,
        pin: [u8; 32],
        org_public_key: [u8; 32],
        org_name: String,
        certificate: VerifiedCertificate,
        key: SigningKey,
    ) -> Self {
        Self {
            dir: dir.to_owned(),
            server,
            pin,
            org_public_key,
            org_name,
            certificate,
            key,
        }
    }

    /// Loads the profile in `dir`, re-checking its certificate against the stored
    /// organisation key (validity is the server's to judge).
    pub fn load(dir: &Path) -> Result<Self, ClientError> {
        let path = dir.join(PROFILE_FILE);
        if !path.exists() {
            return Err(ClientError::Profile(format!(
                "no device is enrolled in {} (run `redoubt enroll CODE` first)",
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| profile_error(&path, e))?;
        let file: ProfileFile = serde_json::from_str(&text).map_err(|e| profile_error(&path, e))?;
        let pin = hex_array(&file.server_certificate_pin, "server_certificate_pin", &path)?;
        let org_public_key = hex_array(&file.org_public_key, "org_public_key", &path)?;
        let cert_bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(file.certificate.as_bytes())
            .map_err(|_| profile_error(&path, "certificate is not hex"))?;
        let certificate = DeviceCertificate::decode(&cert_bytes).map_err(|e| profile_error(&path, e))?;
        let org_key =
            ed25519_dalek::VerifyingKey::from_bytes(&org_public_key).map_err(|e| profile_error(&path, e))?;
        let org_id = certificate.unverified_body().org_id;
        let not_before = certificate.unverified_body().not_before_unix_s;
        let certificate = certificate
            .verify(&org_key, &org_id, not_before)
            .map_err(|e| profile_error(&path, e))?;

        let key_path = dir.join(KEY_FILE);
        let mut bytes = std::fs::read(&key_path).map_err(|e| profile_error(&key_path, e))?;
        let seed: Result<[u8; 32], _> = bytes.as_slice().try_into();
        bytes.zeroize();
        let mut seed = seed.map_err(|_| profile_error(&key_path, "not a 32-byte key"))?;
        let key = SigningKey::from_bytes(&seed);
        seed.zeroize();
        if key.verifying_key().to_bytes() != certificate.body().device_public_key.0 {
            return Err(profile_error(
                &key_path,
                "key does not match the device certificate",
            ));
        }
        Ok(Self {
            dir: dir.to_owned(),
            server: file.server,
            pin,
            org_public_key,
            org_name: file.org_name,
            certificate,
            key,
        })
    }

    /// Writes the profile: folder 0700, files 0600, each written atomically.
    pub fn save(&self) -> Result<(), ClientError> {
        create_private_dir(&self.dir)?;
        let file = ProfileFile {
            server: self.server.clone(),
            server_certificate_pin: redoubt_proto::Bytes(self.pin).to_hex(),
            org_name: self.org_name.clone(),
            org_public_key: redoubt_proto::Bytes(self.org_public_key).to_hex(),
            certificate: data_encoding::HEXLOWER.encode(self.certificate.encoded()),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| ClientError::Profile(e.to_string()))?;
        // The key first: a profile.json without its key would look enrolled but be useless.
        write_private(&self.dir.join(KEY_FILE), self.key.as_bytes())?;
        write_private(&self.dir.join(PROFILE_FILE), &json)?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn user(&self) -> &UserName {
        &self.certificate.body().user
    }

    pub fn device_id(&self) -> DeviceId {
        self.certificate.body().device_id
    }

    pub fn org_id(&self) -> OrgId {
        self.certificate.body().org_id
    }

    pub fn certificate(&self) -> &[u8] {
        self.certificate.encoded()
    }

    pub fn certificate_body(&self) -> &redoubt_proto::CertificateBody {
        self.certificate.body()
    }

    /// The device key in the form mls-rs signs with; it stays in this process.
    pub(crate) fn mls_secret_key(&self) -> mls_rs::crypto::SignatureSecretKey {
        redoubt_mls::mls_secret_key(&self.key)
    }

    /// Signs with the device key, which never leaves this process.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), ClientError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| profile_error(dir, e))?;
    } else {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| profile_error(dir, e))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), ClientError> {
    std::fs::create_dir_all(dir).map_err(|e| profile_error(dir, e))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(|e| profile_error(&tmp, e))?;
    file.write_all(bytes).map_err(|e| profile_error(&tmp, e))?;
    file.sync_all().map_err(|e| profile_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| profile_error(path, e))
}
