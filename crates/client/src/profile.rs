//! A device's profile on disk: where its server is, how to recognise it, the device's own
//! key and certificate, and the key to its encrypted local store.
//!
//! ```text
//! PROFILE/                 0700
//!   profile.json           public: server address, certificate pin, organisation key, certificate
//!   keys.json              the data key (clear or passcode-wrapped), the sealed device key, lock settings
//!   keys.next.json         only between the steps of a passcode change (see `set_passcode`)
//!   vault.db, -wal, -shm   every secret the device keeps, sealed under the data key (vault.rs)
//! ```
//!
//! Every file is 0600 and written atomically (temporary file, fsync, rename, fsync folder).
//! `keys.json`:
//!
//! ```text
//! { "version": 1,
//!   "key_id": hex, 16 random bytes naming the data key; vault.db records the id it is sealed under
//!   "protection": "none" | "passcode",
//!   "data_key": hex                          only with "none"
//!   "kdf": { "algorithm": "argon2id", "salt": hex, "memory_kib", "iterations", "parallelism" }
//!                                            only with "passcode"
//!   "wrapped_data_key": hex                  only with "passcode": nonce ‖ XChaCha20-Poly1305 of the
//!                                            data key under the argon2id key; AAD label ‖ key_id
//!   "device_key": hex                        the Ed25519 seed, nonce ‖ XChaCha20-Poly1305 under the
//!                                            data key; AAD label ‖ key_id
//!   "failed_attempts": u32, "wipe_after_failures": u32 | null, "remote_lock": bool }
//! ```
//!
//! The device key is never written in the clear. With protection "none" the data key is,
//! so the files are only as safe as their 0600 mode (as before); with a passcode, reading
//! anything needs the passcode, and each guess costs one argon2id run. The failed-attempt
//! counter and wipe only stop guessing through Redoubt on this device: a copy of the folder
//! can be attacked offline, where only the passcode's strength and argon2id's cost help.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use ed25519_dalek::{Signer, SigningKey};
use redoubt_proto::{
    Bytes, DeviceCertificate, DeviceId, OrgId, ServerAddress, Signed, UserName, VerifiedCertificate,
};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::ClientError;
use crate::vault::{self, DataKey, LockedVault, Vault};

const PROFILE_FILE: &str = "profile.json";
const KEYS_FILE: &str = "keys.json";
/// The next `keys.json` while a passcode change is in progress.
const NEXT_KEYS_FILE: &str = "keys.next.json";
const VAULT_FILE: &str = "vault.db";
/// Where earlier versions kept the device key in the clear.
const LEGACY_KEY_FILE: &str = "device.key";
/// Every file Redoubt makes in a profile folder (temporary ones included, and the earlier
/// layout's), for [`Profile::wipe`].
const REDOUBT_FILES: &[&str] = &[
    KEYS_FILE,
    NEXT_KEYS_FILE,
    "keys.tmp",
    "keys.next.tmp",
    PROFILE_FILE,
    "profile.tmp",
    VAULT_FILE,
    "vault.db-wal",
    "vault.db-shm",
    "vault.db-journal",
    LEGACY_KEY_FILE,
    "device.tmp",
    "mls.db",
    "mls.db-wal",
    "mls.db-shm",
    "data.db",
    "data.db-wal",
    "data.db-shm",
];

const KEYS_VERSION: u32 = 1;
const AAD_DATA_KEY: &[u8] = b"redoubt/keys/v1/data-key\0";
const AAD_DEVICE_KEY: &[u8] = b"redoubt/keys/v1/device-key\0";

/// argon2id cost for new passcodes: 64 MiB, 3 passes, 1 lane (RFC 9106's second
/// recommendation is 64 MiB / 3 passes / 4 lanes; one lane because one unlock should not
/// take every core of a phone). Stored per profile, so raising it later keeps old profiles
/// openable; a passcode change re-derives with the then-current values.
const KDF_MEMORY_KIB: u32 = 64 * 1024;
const KDF_ITERATIONS: u32 = 3;
const KDF_PARALLELISM: u32 = 1;
const KDF_SALT_BYTES: usize = 16;
/// What a `keys.json` may ask for, so a damaged or hostile file cannot make an unlock
/// allocate or run without bound.
const KDF_MEMORY_KIB_MAX: u32 = 4 * 1024 * 1024;
const KDF_ITERATIONS_MAX: u32 = 64;
const KDF_PARALLELISM_MAX: u32 = 16;
/// Longest passcode accepted when setting one.
const PASSCODE_BYTES_MAX: usize = 1024;

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
    /// Every server node's address as the server last listed them (a cluster); the device
    /// connects to another when `server` is unreachable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    nodes: Vec<ServerAddress>,
    /// The node that answered last, tried first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_used: Option<ServerAddress>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Protection {
    None,
    Passcode,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfFile {
    algorithm: String,
    salt: String,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

/// Hex of a secret as it passes through serde: zeroed on drop.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct SecretHex(String);

impl Drop for SecretHex {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// `keys.json` as written; [`Keys`] is the parsed form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    version: u32,
    key_id: String,
    protection: Protection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_key: Option<SecretHex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<KdfFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped_data_key: Option<String>,
    device_key: String,
    failed_attempts: u32,
    wipe_after_failures: Option<u32>,
    remote_lock: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Kdf {
    salt: Vec<u8>,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

impl Kdf {
    fn fresh() -> Self {
        use rand_core::RngCore;
        let mut salt = vec![0u8; KDF_SALT_BYTES];
        rand_core::OsRng.fill_bytes(&mut salt);
        Self {
            salt,
            memory_kib: KDF_MEMORY_KIB,
            iterations: KDF_ITERATIONS,
            parallelism: KDF_PARALLELISM,
        }
    }

    /// The key-encryption key for `passcode`.
    fn derive(&self, passcode: &str) -> Result<Zeroizing<[u8; 32]>, ClientError> {
        let failed = |e: argon2::Error| ClientError::Profile(format!("argon2id: {e}"));
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(failed)?;
        let mut key = Zeroizing::new([0u8; 32]);
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_into(passcode.as_bytes(), &self.salt, key.as_mut())
            .map_err(failed)?;
        Ok(key)
    }
}

/// How the data key is kept.
#[derive(Clone)]
enum Lock {
    None { data_key: Zeroizing<[u8; 32]> },
    Passcode { kdf: Kdf, wrapped_data_key: Vec<u8> },
}

/// The parsed `keys.json`.
#[derive(Clone)]
struct Keys {
    key_id: [u8; 16],
    lock: Lock,
    sealed_device_key: Vec<u8>,
    failed_attempts: u32,
    wipe_after_failures: Option<u32>,
    remote_lock: bool,
}

fn profile_error(path: &Path, error: impl std::fmt::Display) -> ClientError {
    ClientError::Profile(format!("{}: {error}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

fn unhex(text: &str, what: &str, path: &Path) -> Result<Vec<u8>, ClientError> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .map_err(|_| profile_error(path, format!("{what} is not hex")))
}

fn hex_array<const N: usize>(text: &str, what: &str, path: &Path) -> Result<[u8; N], ClientError> {
    let mut bytes = unhex(text, what, path)?;
    let array = bytes.as_slice().try_into();
    bytes.zeroize();
    array.map_err(|_| profile_error(path, format!("{what} is not {N} bytes")))
}

fn labelled(label: &[u8], key_id: &[u8; 16]) -> Vec<u8> {
    [label, key_id].concat()
}

impl Keys {
    fn parse(file: &KeysFile, path: &Path) -> Result<Self, ClientError> {
        if file.version != KEYS_VERSION {
            return Err(profile_error(
                path,
                format!(
                    "version {} is not one this Redoubt reads ({KEYS_VERSION})",
                    file.version
                ),
            ));
        }
        let key_id = hex_array(&file.key_id, "key_id", path)?;
        let lock = match (file.protection, &file.data_key, &file.kdf, &file.wrapped_data_key) {
            (Protection::None, Some(data_key), None, None) => Lock::None {
                data_key: Zeroizing::new(hex_array(&data_key.0, "data_key", path)?),
            },
            (Protection::Passcode, None, Some(kdf), Some(wrapped)) => {
                if kdf.algorithm != "argon2id"
                    || !(1..=KDF_MEMORY_KIB_MAX).contains(&kdf.memory_kib)
                    || !(1..=KDF_ITERATIONS_MAX).contains(&kdf.iterations)
                    || !(1..=KDF_PARALLELISM_MAX).contains(&kdf.parallelism)
                {
                    return Err(profile_error(path, "kdf is not argon2id with usable parameters"));
                }
                Lock::Passcode {
                    kdf: Kdf {
                        salt: unhex(&kdf.salt, "kdf.salt", path)?,
                        memory_kib: kdf.memory_kib,
                        iterations: kdf.iterations,
                        parallelism: kdf.parallelism,
                    },
                    wrapped_data_key: unhex(wrapped, "wrapped_data_key", path)?,
                }
            }
            _ => {
                return Err(profile_error(
                    path,
                    "protection does not match the fields present (\"none\" needs data_key; \"passcode\" needs kdf and wrapped_data_key)",
                ));
            }
        };
        Ok(Self {
            key_id,
            lock,
            sealed_device_key: unhex(&file.device_key, "device_key", path)?,
            failed_attempts: file.failed_attempts,
            wipe_after_failures: file.wipe_after_failures,
            remote_lock: file.remote_lock,
        })
    }

    fn to_file(&self) -> KeysFile {
        let (protection, data_key, kdf, wrapped_data_key) = match &self.lock {
            Lock::None { data_key } => (
                Protection::None,
                Some(SecretHex(hex(data_key.as_slice()))),
                None,
                None,
            ),
            Lock::Passcode {
                kdf,
                wrapped_data_key,
            } => (
                Protection::Passcode,
                None,
                Some(KdfFile {
                    algorithm: "argon2id".to_owned(),
                    salt: hex(&kdf.salt),
                    memory_kib: kdf.memory_kib,
                    iterations: kdf.iterations,
                    parallelism: kdf.parallelism,
                }),
                Some(hex(wrapped_data_key)),
            ),
        };
        KeysFile {
            version: KEYS_VERSION,
            key_id: hex(&self.key_id),
            protection,
            data_key,
            kdf,
            wrapped_data_key,
            device_key: hex(&self.sealed_device_key),
            failed_attempts: self.failed_attempts,
            wipe_after_failures: self.wipe_after_failures,
            remote_lock: self.remote_lock,
        }
    }

    /// Keys for `data_key` (locked by `passcode` if given) holding `device_key`, with the
    /// settings of `settings` and no failed attempts.
    fn new(
        data_key: &DataKey,
        passcode: Option<&str>,
        device_key: &SigningKey,
        settings: Option<&Keys>,
    ) -> Result<Self, ClientError> {
        let key_id = data_key.id();
        let lock = match passcode {
            None => Lock::None {
                data_key: Zeroizing::new(*data_key.secret()),
            },
            Some(passcode) => {
                let kdf = Kdf::fresh();
                let kek = kdf.derive(passcode)?;
                let wrapped_data_key =
                    vault::seal(&kek, &labelled(AAD_DATA_KEY, &key_id), data_key.secret())?;
                Lock::Passcode {
                    kdf,
                    wrapped_data_key,
                }
            }
        };
        let sealed_device_key = vault::seal(
            data_key.secret(),
            &labelled(AAD_DEVICE_KEY, &key_id),
            device_key.as_bytes(),
        )?;
        Ok(Self {
            key_id,
            lock,
            sealed_device_key,
            failed_attempts: 0,
            wipe_after_failures: settings.and_then(|s| s.wipe_after_failures),
            remote_lock: settings.is_some_and(|s| s.remote_lock),
        })
    }

    fn wipe_due(&self) -> bool {
        self.wipe_after_failures
            .is_some_and(|n| self.failed_attempts >= n)
    }

    /// The data key under `passcode`; `None` if the passcode is wrong.
    fn unwrap_data_key(
        &self,
        kdf: &Kdf,
        wrapped: &[u8],
        passcode: &str,
    ) -> Result<Option<DataKey>, ClientError> {
        let kek = kdf.derive(passcode)?;
        let Some(secret) = vault::open(&kek, &labelled(AAD_DATA_KEY, &self.key_id), wrapped) else {
            return Ok(None);
        };
        let secret: [u8; 32] = secret
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::Profile("the wrapped data key is not 32 bytes".into()))?;
        Ok(Some(DataKey::from_parts(Zeroizing::new(secret), self.key_id)))
    }

    fn open_device_key(&self, data_key: &DataKey, path: &Path) -> Result<SigningKey, ClientError> {
        let seed = vault::open(
            data_key.secret(),
            &labelled(AAD_DEVICE_KEY, &self.key_id),
            &self.sealed_device_key,
        )
        .ok_or_else(|| profile_error(path, "device_key does not open under the data key"))?;
        let mut seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| profile_error(path, "device_key is not a 32-byte key"))?;
        let key = SigningKey::from_bytes(&seed);
        seed.zeroize();
        Ok(key)
    }
}

fn read_keys(path: &Path) -> Result<Option<Keys>, ClientError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(profile_error(path, error)),
    };
    let file: KeysFile = serde_json::from_slice(&bytes).map_err(|e| profile_error(path, e))?;
    Keys::parse(&file, path).map(Some)
}

fn write_keys(dir: &Path, name: &str, keys: &Keys) -> Result<(), ClientError> {
    let json = Zeroizing::new(
        serde_json::to_vec_pretty(&keys.to_file()).map_err(|e| ClientError::Profile(e.to_string()))?,
    );
    write_private(&dir.join(name), &json)?;
    sync_dir(dir)
}

/// Refuses a folder without `keys.json` before anything is created in it.
fn ensure_keys_present(dir: &Path) -> Result<(), ClientError> {
    if dir.join(KEYS_FILE).exists() || dir.join(NEXT_KEYS_FILE).exists() {
        return Ok(());
    }
    if dir.join(LEGACY_KEY_FILE).exists() {
        return Err(ClientError::Profile(format!(
            "{} was written by an earlier Redoubt (device.key, mls.db, data.db in the clear); this version keeps its keys and data encrypted (keys.json, vault.db) and does not convert old profiles: enrol the device again in a new folder",
            dir.display()
        )));
    }
    Err(profile_error(
        &dir.join(KEYS_FILE),
        "missing: this profile cannot be opened",
    ))
}

/// The `keys.json` that belongs to the vault, finishing or abandoning a passcode change a
/// crash interrupted (see [`Profile::set_passcode`]). Needs no secret: the vault records
/// the id of the key its rows are sealed under.
fn current_keys(dir: &Path, vault: &LockedVault) -> Result<Keys, ClientError> {
    let path = dir.join(KEYS_FILE);
    let next_path = dir.join(NEXT_KEYS_FILE);
    let vault_key_id = vault.key_id()?;
    let next = read_keys(&next_path).unwrap_or_else(|error| {
        tracing::warn!(%error, "ignoring an unreadable keys.next.json");
        None
    });
    if let Some(next) = next
        && Some(next.key_id) == vault_key_id
    {
        // The vault was re-sealed under the new key: the change only lacked its last step.
        std::fs::rename(&next_path, &path).map_err(|e| profile_error(&path, e))?;
        sync_dir(dir)?;
        return Ok(next);
    }
    if next_path.exists() {
        // The change never reached the vault: its new key opens nothing.
        std::fs::remove_file(&next_path).map_err(|e| profile_error(&next_path, e))?;
        sync_dir(dir)?;
    }
    let Some(keys) = read_keys(&path)? else {
        return Err(profile_error(&path, "missing: this profile cannot be opened"));
    };
    if vault_key_id.is_some_and(|id| id != keys.key_id) {
        return Err(profile_error(
            &path,
            "does not belong to vault.db (was one of them restored from another copy?)",
        ));
    }
    Ok(keys)
}

/// A device's profile: public settings, the device key, and its unlocked vault.
///
/// Clones share the vault and the key settings, so a [`crate::Messenger`] can hold one.
#[derive(Clone)]
pub struct Profile {
    dir: PathBuf,
    pub server: ServerAddress,
    pub pin: [u8; 32],
    pub org_public_key: [u8; 32],
    pub org_name: String,
    certificate: VerifiedCertificate,
    key: SigningKey,
    vault: Vault,
    keys: Arc<Mutex<Keys>>,
    /// The server's nodes, and which one answered last.
    nodes: Arc<Mutex<Nodes>>,
}

/// Server nodes a profile remembers at most.
const NODES_KNOWN_MAX: usize = 32;

#[derive(Debug, Default)]
struct Nodes {
    known: Vec<ServerAddress>,
    /// The address of the last successful connection.
    last_used: Option<ServerAddress>,
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

pub(crate) fn ensure_absent(dir: &Path) -> Result<(), ClientError> {
    if [PROFILE_FILE, KEYS_FILE, LEGACY_KEY_FILE]
        .iter()
        .any(|name| dir.join(name).exists())
    {
        return Err(ClientError::Profile(format!(
            "{} already holds an enrolled device; use another --profile folder",
            dir.display()
        )));
    }
    Ok(())
}

fn not_enrolled(dir: &Path) -> ClientError {
    ClientError::Profile(format!(
        "no device is enrolled in {} (run `redoubt enroll CODE` first)",
        dir.display()
    ))
}

/// `profile.json`, parsed and its certificate checked against the organisation key.
struct PublicPart {
    server: ServerAddress,
    nodes: Vec<ServerAddress>,
    last_used: Option<ServerAddress>,
    pin: [u8; 32],
    org_public_key: [u8; 32],
    org_name: String,
    certificate: VerifiedCertificate,
}

fn read_public(dir: &Path) -> Result<PublicPart, ClientError> {
    let path = dir.join(PROFILE_FILE);
    if !path.exists() {
        return Err(not_enrolled(dir));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| profile_error(&path, e))?;
    let file: ProfileFile = serde_json::from_str(&text).map_err(|e| profile_error(&path, e))?;
    let pin = hex_array(&file.server_certificate_pin, "server_certificate_pin", &path)?;
    let org_public_key = hex_array(&file.org_public_key, "org_public_key", &path)?;
    let cert_bytes = unhex(&file.certificate, "certificate", &path)?;
    let certificate = DeviceCertificate::decode(&cert_bytes).map_err(|e| profile_error(&path, e))?;
    let org_key =
        ed25519_dalek::VerifyingKey::from_bytes(&org_public_key).map_err(|e| profile_error(&path, e))?;
    let org_id = certificate.unverified_body().org_id;
    let not_before = certificate.unverified_body().not_before_unix_s;
    let certificate = certificate
        .verify(&org_key, &org_id, not_before)
        .map_err(|e| profile_error(&path, e))?;
    Ok(PublicPart {
        server: file.server,
        nodes: file.nodes,
        last_used: file.last_used,
        pin,
        org_public_key,
        org_name: file.org_name,
        certificate,
    })
}

impl Profile {
    /// A new profile in `dir` for a freshly enrolled device: a random data key, no
    /// passcode, an empty vault. Nothing but the vault is written until [`Self::save`].
    pub(crate) fn create(
        dir: &Path,
        server: ServerAddress,
        pin: [u8; 32],
        org_public_key: [u8; 32],
        org_name: String,
        certificate: VerifiedCertificate,
        key: SigningKey,
    ) -> Result<Self, ClientError> {
        create_private_dir(dir)?;
        // A vault left by an enrolment that failed before keys.json was written is sealed
        // under a key nobody has; start afresh.
        for name in [VAULT_FILE, "vault.db-wal", "vault.db-shm", NEXT_KEYS_FILE] {
            remove_if_present(&dir.join(name))?;
        }
        let data_key = DataKey::generate();
        let keys = Keys::new(&data_key, None, &key, None)?;
        let vault = LockedVault::open(&dir.join(VAULT_FILE))?.unlock(data_key)?;
        Ok(Self {
            dir: dir.to_owned(),
            server,
            pin,
            org_public_key,
            org_name,
            certificate,
            key,
            vault,
            keys: Arc::new(Mutex::new(keys)),
            nodes: Arc::default(),
        })
    }

    /// Loads the profile in `dir`, re-checking its certificate against the stored
    /// organisation key (validity is the server's to judge), and unlocks its vault.
    ///
    /// With a passcode set, `passcode` must be it: `None` gives
    /// [`ClientError::PasscodeRequired`]; a wrong one is counted on disk before the answer
    /// ([`ClientError::PasscodeWrong`]), and the attempt that reaches the wipe limit wipes
    /// the folder ([`ClientError::ProfileWiped`]). The right one resets the count. Without a
    /// passcode, `passcode` is ignored.
    pub fn load(dir: &Path, passcode: Option<&str>) -> Result<Self, ClientError> {
        let public = read_public(dir)?;
        let keys_path = dir.join(KEYS_FILE);
        ensure_keys_present(dir)?;
        let locked = LockedVault::open(&dir.join(VAULT_FILE))?;
        let mut keys = current_keys(dir, &locked)?;
        if locked.key_id()?.is_none() {
            tracing::warn!(profile = %dir.display(), "vault.db was missing: starting with an empty local store");
        }
        let data_key = match &keys.lock {
            Lock::None { data_key } => DataKey::from_parts(data_key.clone(), keys.key_id),
            Lock::Passcode {
                kdf,
                wrapped_data_key,
            } => {
                let Some(passcode) = passcode else {
                    return Err(ClientError::PasscodeRequired);
                };
                let (kdf, wrapped_data_key) = (kdf.clone(), wrapped_data_key.clone());
                if keys.wipe_due() {
                    // A wrong attempt reached the limit but the wipe did not finish.
                    drop(locked);
                    Self::wipe(dir)?;
                    return Err(ClientError::ProfileWiped);
                }
                // Count the attempt before trying it, so stopping the process once the
                // answer is known (but before a failure was recorded) gains no free guess.
                keys.failed_attempts = keys.failed_attempts.saturating_add(1);
                write_keys(dir, KEYS_FILE, &keys)?;
                match keys.unwrap_data_key(&kdf, &wrapped_data_key, passcode)? {
                    Some(data_key) => {
                        keys.failed_attempts = 0;
                        write_keys(dir, KEYS_FILE, &keys)?;
                        data_key
                    }
                    None if keys.wipe_due() => {
                        drop(locked);
                        Self::wipe(dir)?;
                        tracing::warn!(profile = %dir.display(), "wrong passcode too many times: profile wiped");
                        return Err(ClientError::ProfileWiped);
                    }
                    None => {
                        return Err(ClientError::PasscodeWrong {
                            attempts_left: keys
                                .wipe_after_failures
                                .map(|n| n.saturating_sub(keys.failed_attempts)),
                        });
                    }
                }
            }
        };
        let key = keys.open_device_key(&data_key, &keys_path)?;
        if key.verifying_key().to_bytes() != public.certificate.body().device_public_key.0 {
            return Err(profile_error(
                &keys_path,
                "device key does not match the device certificate",
            ));
        }
        let vault = locked.unlock(data_key)?;
        Ok(Self {
            dir: dir.to_owned(),
            server: public.server,
            nodes: Arc::new(Mutex::new(Nodes {
                known: public.nodes,
                last_used: public.last_used,
            })),
            pin: public.pin,
            org_public_key: public.org_public_key,
            org_name: public.org_name,
            certificate: public.certificate,
            key,
            vault,
            keys: Arc::new(Mutex::new(keys)),
        })
    }

    /// Whether the profile in `dir` needs a passcode to load.
    pub fn passcode_protected(dir: &Path) -> Result<bool, ClientError> {
        if !dir.join(PROFILE_FILE).exists() {
            return Err(not_enrolled(dir));
        }
        ensure_keys_present(dir)?;
        let locked = LockedVault::open(&dir.join(VAULT_FILE))?;
        Ok(matches!(current_keys(dir, &locked)?.lock, Lock::Passcode { .. }))
    }

    /// Writes the profile: folder 0700, files 0600, each written atomically.
    pub fn save(&self) -> Result<(), ClientError> {
        create_private_dir(&self.dir)?;
        // The keys first: a profile.json without its keys would look enrolled but be useless.
        write_keys(&self.dir, KEYS_FILE, &self.keys())?;
        self.save_public()
    }

    /// Writes `profile.json` alone (atomically).
    fn save_public(&self) -> Result<(), ClientError> {
        let nodes = self.nodes();
        let file = ProfileFile {
            server: self.server.clone(),
            server_certificate_pin: redoubt_proto::Bytes(self.pin).to_hex(),
            org_name: self.org_name.clone(),
            org_public_key: redoubt_proto::Bytes(self.org_public_key).to_hex(),
            certificate: hex(self.certificate.encoded()),
            nodes: nodes.known.clone(),
            last_used: nodes.last_used.clone(),
        };
        drop(nodes);
        let json = serde_json::to_vec_pretty(&file).map_err(|e| ClientError::Profile(e.to_string()))?;
        write_private(&self.dir.join(PROFILE_FILE), &json)?;
        sync_dir(&self.dir)
    }

    fn nodes(&self) -> MutexGuard<'_, Nodes> {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The addresses to try, in order: the one that answered last, the enrolment's, then
    /// the other nodes the server listed.
    pub fn server_addresses(&self) -> Vec<ServerAddress> {
        let nodes = self.nodes();
        let mut addresses: Vec<ServerAddress> = nodes.last_used.iter().cloned().collect();
        for address in std::iter::once(&self.server).chain(&nodes.known) {
            if !addresses.contains(address) {
                addresses.push(address.clone());
            }
        }
        addresses
    }

    /// Records a successful connection to `used`, and the nodes its server listed, added to
    /// those known (a node restarting, or silent for a while, is not forgotten; at most
    /// [`NODES_KNOWN_MAX`], the newest first). Written to `profile.json` when it changed.
    pub fn record_connection(
        &self,
        used: &ServerAddress,
        listed: &[ServerAddress],
    ) -> Result<(), ClientError> {
        let changed = {
            let mut nodes = self.nodes();
            let mut known: Vec<ServerAddress> = listed
                .iter()
                .chain(std::iter::once(used))
                .chain(nodes.known.iter())
                .filter(|address| **address != self.server)
                .cloned()
                .collect();
            let mut seen = std::collections::HashSet::new();
            known.retain(|address| seen.insert(address.clone()));
            known.truncate(NODES_KNOWN_MAX);
            let changed = nodes.known != known || nodes.last_used.as_ref() != Some(used);
            nodes.known = known;
            nodes.last_used = Some(used.clone());
            changed
        };
        if changed { self.save_public() } else { Ok(()) }
    }

    fn keys(&self) -> MutexGuard<'_, Keys> {
        // The state is replaced whole, only after its file was written, so it is consistent
        // even if a thread panicked while holding the lock.
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets (`Some`), changes or removes (`None`) the passcode.
    ///
    /// Every change also replaces the data key, re-sealing every vault row and the device
    /// key, so a copy of the old `keys.json` (and the old passcode) opens nothing written
    /// since, nor anything still in the vault. The steps, and why a crash at any point
    /// leaves a profile that opens with either the old or the new secret:
    ///
    /// 1. `keys.next.json` is written (atomically, fsynced) for the new key. A crash before
    ///    or during this leaves `keys.json` and the vault on the old key; at the next load
    ///    the vault's key id differs from `keys.next.json`'s, so that file is deleted.
    /// 2. The vault re-seals every row and records the new key id, in one SQLite
    ///    transaction. Until it commits the vault is on the old key (as in 1); once it has,
    ///    the vault's key id is the new one.
    /// 3. `keys.next.json` is renamed over `keys.json` (atomic), and the folder fsynced. A
    ///    crash between 2 and 3 leaves both files; the next load sees the vault's key id
    ///    matches `keys.next.json` and completes the rename before asking for anything.
    ///
    /// The vault's key id and the files' key ids are public, so the right file is chosen
    /// before any passcode is tried and failed attempts are counted in exactly one file.
    pub fn set_passcode(&mut self, passcode: Option<&str>) -> Result<(), ClientError> {
        if let Some(passcode) = passcode
            && (passcode.is_empty() || passcode.len() > PASSCODE_BYTES_MAX)
        {
            return Err(ClientError::Profile(format!(
                "a passcode must be 1 to {PASSCODE_BYTES_MAX} bytes"
            )));
        }
        let mut keys = self.keys();
        let data_key = DataKey::generate();
        let next = Keys::new(&data_key, passcode, &self.key, Some(&keys))?;
        write_keys(&self.dir, NEXT_KEYS_FILE, &next)?;
        self.vault.rotate(data_key)?;
        *keys = next;
        let path = self.dir.join(KEYS_FILE);
        std::fs::rename(self.dir.join(NEXT_KEYS_FILE), &path).map_err(|e| profile_error(&path, e))?;
        sync_dir(&self.dir)
    }

    /// Whether a passcode is needed to load this profile.
    pub fn has_passcode(&self) -> bool {
        matches!(self.keys().lock, Lock::Passcode { .. })
    }

    /// Wipe the profile after `n` wrong passcodes in a row (`None`: never). Only meaningful
    /// with a passcode set; `Some(0)` is refused.
    pub fn set_wipe_after_failures(&self, n: Option<u32>) -> Result<(), ClientError> {
        if n == Some(0) {
            return Err(ClientError::Profile(
                "wipe_after_failures must be at least 1".into(),
            ));
        }
        self.update_keys(|keys| keys.wipe_after_failures = n)
    }

    /// The wipe limit set by [`Self::set_wipe_after_failures`].
    pub fn wipe_after_failures(&self) -> Option<u32> {
        self.keys().wipe_after_failures
    }

    /// Whether the organisation asked for this device to be locked (a persisted flag).
    pub fn remote_locked(&self) -> bool {
        self.keys().remote_lock
    }

    pub fn set_remote_locked(&self, locked: bool) -> Result<(), ClientError> {
        self.update_keys(|keys| keys.remote_lock = locked)
    }

    /// Changes a setting in `keys.json`: the file first, then memory.
    fn update_keys(&self, change: impl FnOnce(&mut Keys)) -> Result<(), ClientError> {
        let mut keys = self.keys();
        let mut updated = keys.clone();
        change(&mut updated);
        write_keys(&self.dir, KEYS_FILE, &updated)?;
        *keys = updated;
        Ok(())
    }

    /// The encrypted store, for modules that keep their own values (in their own
    /// namespace).
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Destroys the profile in `dir`: `keys.json` is overwritten with zeros and synced, so
    /// the data key (and with it the vault) is gone, then every file Redoubt made there is
    /// deleted, and the folder too if nothing else is in it. On flash storage and
    /// copy-on-write file systems the overwrite may not reach the old blocks; with a
    /// passcode set, what might remain is still the passcode-wrapped key.
    ///
    /// Attachments fetched with `redoubt fetch` live where the user put them and are not
    /// touched. Other open handles (a running messenger) keep working on deleted files
    /// until they close.
    pub fn wipe(dir: &Path) -> Result<(), ClientError> {
        for name in [KEYS_FILE, NEXT_KEYS_FILE] {
            overwrite_with_zeros(&dir.join(name))?;
        }
        for name in REDOUBT_FILES {
            remove_if_present(&dir.join(name))?;
        }
        // Temporary files a writer left behind (`write_private` names them after itself):
        // the keys' ones hold wrapped key material.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let ours = REDOUBT_FILES
                    .iter()
                    .filter_map(|file| file.split('.').next())
                    .any(|stem| name.starts_with(&format!("{stem}.")));
                if ours && name.ends_with(".tmp") {
                    if name.starts_with("keys.") {
                        overwrite_with_zeros(&entry.path())?;
                    }
                    remove_if_present(&entry.path())?;
                }
            }
        }
        if dir.exists() {
            sync_dir(dir)?;
            // Fails if the user keeps other files here: then the folder stays.
            if std::fs::remove_dir(dir).is_err() {
                tracing::info!(profile = %dir.display(), "profile folder not empty after wipe; left in place");
            }
        }
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

    /// This device's signed approval of `certificate`, a new device of its own user waiting
    /// for approval (`DeviceApprove`; the key directory logs it with the device). The
    /// certificate is checked first: the organisation's, for this user and `device`.
    pub fn approve(
        &self,
        device: DeviceId,
        certificate: &[u8],
    ) -> Result<Signed<redoubt_proto::DeviceApproval>, ClientError> {
        let org_key = ed25519_dalek::VerifyingKey::from_bytes(&self.org_public_key)
            .map_err(|_| ClientError::Protocol("the organisation key is malformed".into()))?;
        let decoded = DeviceCertificate::decode(certificate)
            .map_err(|e| ClientError::Protocol(format!("the device's certificate is malformed: {e}")))?;
        let not_before = decoded.unverified_body().not_before_unix_s;
        let verified = decoded
            .verify(&org_key, &self.org_id(), not_before)
            .map_err(|e| ClientError::Protocol(format!("the device's certificate is refused: {e}")))?;
        if verified.body().user != *self.user() || verified.body().device_id != device {
            return Err(ClientError::Protocol(format!(
                "the certificate offered for device {device} is not that device of {}",
                self.user()
            )));
        }
        Ok(Signed::sign(
            &redoubt_proto::DeviceApproval {
                org_id: self.org_id(),
                user: self.user().clone(),
                approver: self.device_id(),
                certificate_hash: Bytes(redoubt_proto::certificate_hash(certificate)),
                approved_at_unix_s: crate::unix_now(),
            },
            &self.key,
        ))
    }

    /// Signs with the device key, which never leaves this process.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// The device's Ed25519 seed, for tests only (driving another MLS implementation with
    /// the same identity, checking that the key appears nowhere it should not). Redoubt
    /// itself never calls it; the key is otherwise only used inside this process.
    #[doc(hidden)]
    pub fn device_key_seed_for_tests(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
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
    // A name of this writer's own: two writers (two processes on one profile, or two
    // clones recording a connection) must never write into one temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("{}-{n}.tmp", std::process::id()));
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

/// Makes renames and deletions in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), ClientError> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| profile_error(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), ClientError> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(profile_error(path, error)),
        _ => Ok(()),
    }
}

fn overwrite_with_zeros(path: &Path) -> Result<(), ClientError> {
    use std::io::Write;
    let mut file = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(profile_error(path, error)),
    };
    let bytes = file.metadata().map_err(|e| profile_error(path, e))?.len();
    let zeros = vec![0u8; usize::try_from(bytes).unwrap_or(0)];
    file.write_all(&zeros).map_err(|e| profile_error(path, e))?;
    file.sync_all().map_err(|e| profile_error(path, e))
}

/// A profile as enrolment leaves it (no passcode), with a certificate from a throwaway
/// organisation key: for tests that need real files but no server.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_profile(dir: &Path) -> Profile {
    use rand_core::OsRng;
    use redoubt_proto::{Bytes, CertificateBody, DeviceName};
    let org = SigningKey::generate(&mut OsRng);
    let device = SigningKey::generate(&mut OsRng);
    let now = crate::unix_now();
    let body = CertificateBody {
        version: 1,
        serial: 1,
        org_id: OrgId::from([3; 16]),
        user: UserName::parse("alice").unwrap(),
        device_id: DeviceId::from([4; 16]),
        device_name: DeviceName::parse("phone").unwrap(),
        device_public_key: Bytes(device.verifying_key().to_bytes()),
        roles: Vec::new(),
        not_before_unix_s: now - 60,
        not_after_unix_s: now + 86_400,
    };
    let certificate = DeviceCertificate::issue(&body, &org)
        .verify(&org.verifying_key(), &body.org_id, now)
        .unwrap();
    let profile = Profile::create(
        dir,
        ServerAddress::parse("localhost:4433").unwrap(),
        [7; 32],
        org.verifying_key().to_bytes(),
        "Test Org".into(),
        certificate,
        device,
    )
    .unwrap();
    profile.save().unwrap();
    profile
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use mls_rs::ExtensionList;
    use mls_rs_core::group::GroupStateStorage;
    use mls_rs_core::key_package::KeyPackageStorage;

    use super::*;

    fn keys_on_disk(dir: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(KEYS_FILE)).unwrap()).unwrap()
    }

    /// The data key `keys.json` holds, unwrapped with `passcode` when it has one.
    fn data_key_of(keys_json: &Path, passcode: Option<&str>) -> [u8; 32] {
        let keys = read_keys(keys_json).unwrap().unwrap();
        match &keys.lock {
            Lock::None { data_key } => **data_key,
            Lock::Passcode {
                kdf,
                wrapped_data_key,
            } => *keys
                .unwrap_data_key(kdf, wrapped_data_key, passcode.unwrap())
                .unwrap()
                .unwrap()
                .secret(),
        }
    }

    fn files_in(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_new_profile_loads_without_a_passcode_and_ignores_one_given() {
        let dir = tempfile::tempdir().unwrap();
        let profile = test_profile(dir.path());
        profile.vault().put("policy", "k", b"v").unwrap();
        let seed = profile.device_key_seed_for_tests();
        drop(profile);
        assert!(!Profile::passcode_protected(dir.path()).unwrap());
        for passcode in [None, Some("anything")] {
            let loaded = Profile::load(dir.path(), passcode).unwrap();
            assert_eq!(*loaded.device_key_seed_for_tests(), *seed);
            assert_eq!(
                loaded.vault().get("policy", "k").unwrap().unwrap().as_slice(),
                b"v"
            );
        }
        let keys = keys_on_disk(dir.path());
        assert_eq!(keys["version"], 1);
        assert_eq!(keys["protection"], "none");
        assert!(keys.get("kdf").is_none() && keys.get("wrapped_data_key").is_none());
        assert!(!dir.path().join(LEGACY_KEY_FILE).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(dir.path()), 0o700);
            for file in files_in(dir.path()) {
                assert_eq!(mode(&file), 0o600, "{}", file.display());
            }
        }
    }

    #[test]
    fn a_passcode_is_required_once_set_and_the_right_one_opens_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut profile = test_profile(dir.path());
        profile.vault().put("policy", "k", b"v").unwrap();
        profile.set_passcode(Some("correct horse")).unwrap();
        assert!(profile.has_passcode());
        // The open profile keeps working after its key changed.
        profile.vault().put("policy", "k2", b"v2").unwrap();
        drop(profile);

        assert!(Profile::passcode_protected(dir.path()).unwrap());
        assert!(matches!(
            Profile::load(dir.path(), None),
            Err(ClientError::PasscodeRequired)
        ));
        assert_eq!(
            keys_on_disk(dir.path())["failed_attempts"],
            0,
            "asking is no attempt"
        );
        let keys = keys_on_disk(dir.path());
        assert_eq!(keys["protection"], "passcode");
        assert!(keys.get("data_key").is_none());
        assert_eq!(keys["kdf"]["algorithm"], "argon2id");
        assert_eq!(keys["kdf"]["memory_kib"], 65_536);
        assert_eq!(keys["kdf"]["iterations"], 3);
        assert_eq!(keys["kdf"]["parallelism"], 1);

        let profile = Profile::load(dir.path(), Some("correct horse")).unwrap();
        assert_eq!(
            profile.vault().get("policy", "k").unwrap().unwrap().as_slice(),
            b"v"
        );
        assert_eq!(
            profile.vault().get("policy", "k2").unwrap().unwrap().as_slice(),
            b"v2"
        );

        // Removing the passcode: no passcode needed any more.
        let mut profile = profile;
        profile.set_passcode(None).unwrap();
        drop(profile);
        let profile = Profile::load(dir.path(), None).unwrap();
        assert_eq!(
            profile.vault().get("policy", "k").unwrap().unwrap().as_slice(),
            b"v"
        );
        assert!(!Profile::passcode_protected(dir.path()).unwrap());
    }

    #[test]
    fn a_wrong_passcode_is_counted_on_disk_and_the_right_one_resets_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut profile = test_profile(dir.path());
        profile.set_passcode(Some("1234")).unwrap();
        profile.set_wipe_after_failures(Some(5)).unwrap();
        drop(profile);
        for left in [4, 3] {
            match Profile::load(dir.path(), Some("4321")) {
                Err(ClientError::PasscodeWrong { attempts_left }) => assert_eq!(attempts_left, Some(left)),
                other => panic!("{other:?}"),
            }
            assert_eq!(keys_on_disk(dir.path())["failed_attempts"], 5 - left);
        }
        Profile::load(dir.path(), Some("1234")).unwrap();
        assert_eq!(keys_on_disk(dir.path())["failed_attempts"], 0);
        assert!(matches!(
            Profile::load(dir.path(), Some("0000")),
            Err(ClientError::PasscodeWrong {
                attempts_left: Some(4)
            })
        ));
    }

    #[test]
    fn without_a_wipe_limit_wrong_passcodes_only_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut profile = test_profile(dir.path());
        profile.set_passcode(Some("1234")).unwrap();
        drop(profile);
        assert!(matches!(
            Profile::load(dir.path(), Some("no")),
            Err(ClientError::PasscodeWrong { attempts_left: None })
        ));
        assert_eq!(keys_on_disk(dir.path())["failed_attempts"], 1);
        assert!(Profile::load(dir.path(), Some("1234")).is_ok());
    }

    #[test]
    fn the_wrong_passcode_n_times_wipes_the_profile() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("profile");
        let mut profile = test_profile(&dir);
        profile.set_passcode(Some("1234")).unwrap();
        profile.set_wipe_after_failures(Some(3)).unwrap();
        profile.vault().put("policy", "k", b"v").unwrap();
        drop(profile);
        assert!(matches!(
            Profile::load(&dir, Some("1")),
            Err(ClientError::PasscodeWrong {
                attempts_left: Some(2)
            })
        ));
        assert!(matches!(
            Profile::load(&dir, Some("2")),
            Err(ClientError::PasscodeWrong {
                attempts_left: Some(1)
            })
        ));
        assert!(matches!(
            Profile::load(&dir, Some("3")),
            Err(ClientError::ProfileWiped)
        ));
        assert!(!dir.exists(), "the folder is gone");
        // Even the right passcode finds nothing now.
        let error = Profile::load(&dir, Some("1234")).unwrap_err();
        assert!(error.to_string().contains("no device is enrolled"), "{error}");
        assert!(!dir.exists(), "loading created nothing");
    }

    #[test]
    fn a_wipe_interrupted_after_the_last_attempt_was_counted_completes_at_the_next_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut profile = test_profile(dir.path());
        profile.set_passcode(Some("1234")).unwrap();
        profile.set_wipe_after_failures(Some(2)).unwrap();
        drop(profile);
        let mut keys = read_keys(&dir.path().join(KEYS_FILE)).unwrap().unwrap();
        keys.failed_attempts = 2;
        write_keys(dir.path(), KEYS_FILE, &keys).unwrap();
        assert!(matches!(
            Profile::load(dir.path(), Some("1234")),
            Err(ClientError::ProfileWiped)
        ));
        assert!(!dir.path().join(KEYS_FILE).exists());
    }

    #[test]
    fn wipe_removes_every_redoubt_file_and_keeps_the_users_own() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("profile");
        let profile = test_profile(&dir);
        profile.vault().put("policy", "k", b"v").unwrap();
        let own = dir.join("notes.txt");
        std::fs::write(&own, b"mine").unwrap();
        // Temporary files a crashed writer left behind go too; a user's own `.tmp` stays.
        std::fs::write(dir.join("keys.4242-7.tmp"), b"wrapped keys").unwrap();
        std::fs::write(dir.join("profile.4242-8.tmp"), b"{}").unwrap();
        let own_tmp = dir.join("draft.tmp");
        std::fs::write(&own_tmp, b"mine too").unwrap();
        // The wipe happens while the vault is still open, as a remote wipe would.
        Profile::wipe(&dir).unwrap();
        let mut left = files_in(&dir);
        left.sort();
        assert_eq!(left, vec![own_tmp.clone(), own.clone()]);
        drop(profile);
        std::fs::remove_file(&own).unwrap();
        std::fs::remove_file(&own_tmp).unwrap();
        Profile::wipe(&dir).unwrap();
        assert!(!dir.exists());
        assert!(Profile::wipe(&dir).is_ok(), "wiping nothing is fine");
    }

    #[test]
    fn settings_persist_and_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let mut profile = test_profile(dir.path());
        assert!(!profile.remote_locked());
        profile.set_remote_locked(true).unwrap();
        profile.set_wipe_after_failures(Some(10)).unwrap();
        assert!(profile.set_wipe_after_failures(Some(0)).is_err());
        assert!(profile.set_passcode(Some("")).is_err());
        profile.set_passcode(Some("pw")).unwrap();
        drop(profile);
        let profile = Profile::load(dir.path(), Some("pw")).unwrap();
        assert!(profile.remote_locked());
        assert_eq!(
            profile.wipe_after_failures(),
            Some(10),
            "kept across a passcode change"
        );
        profile.set_remote_locked(false).unwrap();
        profile.set_wipe_after_failures(None).unwrap();
        drop(profile);
        let keys = keys_on_disk(dir.path());
        assert_eq!(keys["remote_lock"], false);
        assert_eq!(keys["wipe_after_failures"], serde_json::Value::Null);
    }

    #[test]
    fn after_a_passcode_change_the_old_keys_json_decrypts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let aside = tempfile::tempdir().unwrap();
        let mut profile = test_profile(dir.path());
        profile
            .vault()
            .app_storage()
            .insert("msg/1", b"secret message")
            .unwrap();
        std::fs::copy(dir.path().join(KEYS_FILE), aside.path().join("none.json")).unwrap();
        profile.set_passcode(Some("first")).unwrap();
        std::fs::copy(dir.path().join(KEYS_FILE), aside.path().join("first.json")).unwrap();
        profile.set_passcode(Some("second")).unwrap();
        let rows = profile.vault().raw_rows();
        assert!(!rows.is_empty());
        drop(profile);

        let old_keys = [
            data_key_of(&aside.path().join("none.json"), None),
            data_key_of(&aside.path().join("first.json"), Some("first")),
        ];
        for old in &old_keys {
            for (ns, key, sealed) in &rows {
                let aad = [ns.as_bytes(), &[0], key].concat();
                assert!(
                    vault::open(old, &aad, sealed).is_none(),
                    "{ns}/{key:?} opened under an old key"
                );
            }
        }
        let current = data_key_of(&dir.path().join(KEYS_FILE), Some("second"));
        assert!(old_keys.iter().all(|old| *old != current));

        // Put back as keys.json, an old copy does not open the profile either.
        std::fs::copy(aside.path().join("first.json"), dir.path().join(KEYS_FILE)).unwrap();
        let error = Profile::load(dir.path(), Some("first")).unwrap_err();
        assert!(
            error.to_string().contains("does not belong to vault.db"),
            "{error}"
        );
    }

    /// Runs `set_passcode`'s steps by hand, stopping after `steps` of them, as a crash would.
    fn interrupted_passcode_change(dir: &Path, steps: usize) {
        let profile = Profile::load(dir, Some("old")).unwrap();
        let data_key = DataKey::generate();
        let next = Keys::new(&data_key, Some("new"), &profile.key, Some(&profile.keys())).unwrap();
        if steps >= 1 {
            write_keys(dir, NEXT_KEYS_FILE, &next).unwrap();
        }
        if steps >= 2 {
            profile.vault().rotate(data_key).unwrap();
        }
    }

    #[test]
    fn a_passcode_change_interrupted_at_any_step_opens_with_the_old_or_the_new_passcode() {
        for (steps, works, fails) in [(0, "old", "new"), (1, "old", "new"), (2, "new", "old")] {
            let dir = tempfile::tempdir().unwrap();
            let mut profile = test_profile(dir.path());
            profile.set_passcode(Some("old")).unwrap();
            profile.vault().put("policy", "k", b"v").unwrap();
            drop(profile);
            interrupted_passcode_change(dir.path(), steps);

            assert!(Profile::passcode_protected(dir.path()).unwrap());
            assert!(
                !dir.path().join(NEXT_KEYS_FILE).exists(),
                "step {steps}: resolved"
            );
            assert!(
                matches!(
                    Profile::load(dir.path(), Some(fails)),
                    Err(ClientError::PasscodeWrong { .. })
                ),
                "step {steps}"
            );
            let profile = Profile::load(dir.path(), Some(works)).unwrap();
            assert_eq!(
                profile.vault().get("policy", "k").unwrap().unwrap().as_slice(),
                b"v"
            );
        }
    }

    #[test]
    fn no_secret_is_in_any_file_of_a_passcode_protected_profile() {
        let dir = tempfile::tempdir().unwrap();
        let mut profile = test_profile(dir.path());
        let key_before = data_key_of(&dir.path().join(KEYS_FILE), None);
        profile.set_passcode(Some("a passcode")).unwrap();
        let data_key = data_key_of(&dir.path().join(KEYS_FILE), Some("a passcode"));
        let seed = profile.device_key_seed_for_tests();

        // Real mls-rs state: a group with epochs and key packages with HPKE private keys.
        let org_key = ed25519_dalek::VerifyingKey::from_bytes(&profile.org_public_key).unwrap();
        let identity = redoubt_mls::RedoubtIdentityProvider::new(org_key, profile.org_id());
        let client = crate::messaging::mls_client(&profile, identity);
        let mut group = client
            .create_group(ExtensionList::new(), ExtensionList::new(), None)
            .unwrap();
        group.write_to_storage().unwrap();
        for _ in 0..3 {
            let _ = group.commit(Vec::new()).unwrap();
            group.apply_pending_commit().unwrap();
            group.write_to_storage().unwrap();
        }
        for _ in 0..5 {
            client
                .generate_key_package_message(ExtensionList::new(), ExtensionList::new(), None)
                .unwrap();
        }
        let canary = format!("CANARY-{}", data_encoding::HEXLOWER.encode(&rand_bytes()));
        let app = profile.vault().app_storage();
        app.insert("msg/canary", canary.as_bytes()).unwrap();

        // What must not leak: plaintext, the device key, both data keys, the group state
        // and every key package's HPKE private keys.
        let group_id = group.group_id().to_vec();
        let storage = profile.vault().group_state_storage();
        let max_epoch = storage.max_epoch_id(&group_id).unwrap();
        assert!(max_epoch >= Some(2), "{max_epoch:?}");
        let packages = profile.vault().key_package_storage();
        let mut secrets: Vec<(String, Vec<u8>)> = vec![
            ("canary".into(), canary.clone().into_bytes()),
            ("device key seed".into(), seed.to_vec()),
            ("data key".into(), data_key.to_vec()),
            ("previous data key".into(), key_before.to_vec()),
        ];
        let mut package_count = 0;
        for (ns, id, _) in profile.vault().raw_rows() {
            if ns == "mls/key-package" {
                let package = packages.get(&id).unwrap().unwrap();
                secrets.push(("HPKE init key".into(), package.init_key.as_ref().to_vec()));
                secrets.push(("HPKE leaf key".into(), package.leaf_node_key.as_ref().to_vec()));
                package_count += 1;
            }
        }
        assert_eq!(package_count, 5);
        let state = storage.state(&group_id).unwrap().unwrap();
        // A 64-byte slice from the middle of the snapshot (past the public group id).
        secrets.push((
            "group state".into(),
            state[state.len() / 2..state.len() / 2 + 64].to_vec(),
        ));

        let scan = |when: &str| {
            let mut scanned = 0;
            for file in files_in(dir.path()) {
                let bytes = std::fs::read(&file).unwrap();
                scanned += bytes.len();
                for (what, secret) in &secrets {
                    assert!(
                        !contains(&bytes, secret),
                        "{when}: {what} found in {}",
                        file.display()
                    );
                }
            }
            scanned
        };
        // While open, the newest writes sit in the WAL.
        let wal = std::fs::metadata(dir.path().join("vault.db-wal")).unwrap().len();
        assert!(wal > 10_000, "the WAL holds the recent writes ({wal} bytes)");
        assert!(scan("open") > 50_000);
        drop((group, client, storage, packages, app, profile));
        scan("closed");
        assert_eq!(
            Profile::load(dir.path(), Some("a passcode"))
                .unwrap()
                .vault()
                .app_storage()
                .get("msg/canary")
                .unwrap()
                .unwrap()
                .as_slice(),
            canary.as_bytes()
        );
    }

    fn rand_bytes() -> [u8; 16] {
        use rand_core::RngCore;
        let mut bytes = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut bytes);
        bytes
    }

    #[test]
    fn a_tampered_keys_json_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let profile = test_profile(dir.path());
        drop(profile);
        let path = dir.path().join(KEYS_FILE);
        let mut keys = keys_on_disk(dir.path());
        let sealed = keys["device_key"].as_str().unwrap().to_owned();
        let flipped = if sealed.ends_with('0') { "1" } else { "0" };
        keys["device_key"] = format!("{}{flipped}", &sealed[..sealed.len() - 1]).into();
        std::fs::write(&path, serde_json::to_vec(&keys).unwrap()).unwrap();
        let error = Profile::load(dir.path(), None).unwrap_err();
        assert!(error.to_string().contains("device_key does not open"), "{error}");
    }

    #[test]
    fn a_profile_of_the_earlier_layout_is_explained_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let profile = test_profile(dir.path());
        drop(profile);
        std::fs::remove_file(dir.path().join(KEYS_FILE)).unwrap();
        std::fs::remove_file(dir.path().join(VAULT_FILE)).unwrap();
        std::fs::write(dir.path().join(LEGACY_KEY_FILE), [1u8; 32]).unwrap();
        let error = Profile::load(dir.path(), None).unwrap_err();
        assert!(error.to_string().contains("earlier Redoubt"), "{error}");
        assert!(!dir.path().join(VAULT_FILE).exists(), "nothing created");
    }
}
