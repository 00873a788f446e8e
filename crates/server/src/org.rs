//! The organisation's root of trust: its Ed25519 key, and the certifier that signs device
//! certificates with it.

use ed25519_dalek::{SigningKey, VerifyingKey};
use redoubt_proto::{
    CertificateBody, DeviceCertificate, DeviceId, DeviceName, OrgId, PublicKeyBytes, Role, UserName,
};

/// How far back a new certificate's validity starts, to tolerate devices whose clocks run
/// a little behind the server's.
const CLOCK_SKEW_ALLOWANCE_S: i64 = 300;

/// The organisation: identity and root key. The key is zeroed on drop (ed25519-dalek's
/// `zeroize` feature) and never printed.
pub struct Org {
    pub id: OrgId,
    pub name: String,
    key: SigningKey,
}

impl std::fmt::Debug for Org {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Org")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("public_key", &redoubt_proto::Bytes(self.public_key().to_bytes()))
            .finish_non_exhaustive()
    }
}

/// What a new device certificate says.
#[derive(Debug)]
pub(crate) struct DeviceGrant<'a> {
    pub serial: u64,
    pub user: &'a UserName,
    pub device_id: DeviceId,
    pub device_name: &'a DeviceName,
    pub device_public_key: PublicKeyBytes,
    pub roles: Vec<Role>,
    pub now_unix_s: i64,
    pub validity_days: u32,
}

impl Org {
    pub(crate) fn new(id: OrgId, name: String, key: SigningKey) -> Self {
        Self { id, name, key }
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The organisation's MLS external-sender key: it signs proposals to remove devices.
    pub(crate) fn mls_signer(&self) -> mls_rs::crypto::SignatureSecretKey {
        redoubt_mls::mls_secret_key(&self.key)
    }

    /// A key for sealing secrets the server must keep (such as the mail service account's
    /// password) in its database: derived from the root key, which lives in its own file,
    /// so a copy of the database alone yields only ciphertext.
    pub(crate) fn secret_sealing_key(&self) -> zeroize::Zeroizing<[u8; 32]> {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(b"redoubt/server-secret-sealing/v1\0");
        hash.update(self.key.as_bytes());
        zeroize::Zeroizing::new(hash.finalize().into())
    }

    /// The passcode that locks the mail connector's device profile (its keys and vault,
    /// under `DATA/connector/`): derived from the root key, so the data folder without
    /// the root key does not open the connector's MLS state.
    pub(crate) fn connector_passcode(&self) -> zeroize::Zeroizing<String> {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(b"redoubt/connector-passcode/v1\0");
        hash.update(self.key.as_bytes());
        let digest: [u8; 32] = hash.finalize().into();
        zeroize::Zeroizing::new(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Signs a document devices verify with the organisation key.
    pub(crate) fn sign<T: redoubt_proto::Signable>(&self, value: &T) -> redoubt_proto::Signed<T> {
        redoubt_proto::Signed::sign(value, &self.key)
    }

    pub(crate) fn certify(&self, grant: DeviceGrant<'_>) -> DeviceCertificate {
        let body = CertificateBody {
            version: 1,
            serial: grant.serial,
            org_id: self.id,
            user: grant.user.clone(),
            device_id: grant.device_id,
            device_name: grant.device_name.clone(),
            device_public_key: grant.device_public_key,
            roles: grant.roles,
            not_before_unix_s: grant.now_unix_s - CLOCK_SKEW_ALLOWANCE_S,
            not_after_unix_s: grant.now_unix_s + i64::from(grant.validity_days) * 86_400,
        };
        DeviceCertificate::issue(&body, &self.key)
    }
}
