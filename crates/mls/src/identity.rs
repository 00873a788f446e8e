//! Who may be in a Redoubt group: devices certified by the organisation, and the
//! organisation itself as external sender.

use ed25519_dalek::VerifyingKey;
use mls_rs::identity::{Credential, CredentialType, CustomCredential, SigningIdentity};
use mls_rs::time::MlsTime;
use mls_rs::{ExtensionList, IdentityProvider};
use mls_rs_core::identity::MemberValidationContext;
use redoubt_proto::{DeviceCertificate, DeviceId, OrgId, UserName, VerifiedCertificate};

use crate::CREDENTIAL_TYPE;

/// The credential data of the organisation's external sender. Its signature key must be the
/// organisation's root key.
const ORG_SENDER_MARKER: &[u8] = b"redoubt/org-external-sender/v1";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("not a Redoubt credential")]
    CredentialType,
    #[error("device certificate refused: {0}")]
    Certificate(#[from] redoubt_proto::CertificateError),
    #[error("the leaf's signature key is not the certified device key")]
    KeyMismatch,
    #[error("external sender is not this organisation")]
    ExternalSender,
    /// Key transparency: the certificate is validly signed but not (yet known to be) in its
    /// user's logged device set.
    #[error("device {device} of {user} is not in the key directory (not logged)")]
    NotLogged { user: UserName, device: DeviceId },
}

/// The device certificates a device has seen proven logged in the key directory
/// (key transparency), by SHA-256, and the users of certificates asked about and not
/// found, so the device can fetch their history and try again.
#[derive(Debug, Default)]
pub struct LoggedCertificates {
    known: std::sync::RwLock<std::collections::HashSet<[u8; 32]>>,
    misses: std::sync::Mutex<Vec<Miss>>,
    /// While set, unknown certificates are recorded but not refused: a device joining a
    /// group learns every member's history in one pass, then checks them all itself.
    collecting: std::sync::atomic::AtomicBool,
}

/// Misses recorded at most between two calls of `take_misses` (a group's roster).
const MISSES_MAX: usize = 100_000;

/// A certificate refused as not (known to be) logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    /// SHA-256 of the certificate.
    pub hash: [u8; 32],
    pub user: UserName,
    pub device: DeviceId,
    pub device_name: String,
}

impl LoggedCertificates {
    pub fn insert(&self, hash: [u8; 32]) {
        self.known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(hash);
    }

    pub fn contains(&self, hash: &[u8; 32]) -> bool {
        self.known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(hash)
    }

    /// Records unknown certificates without refusing them until [`Self::stop_collecting`];
    /// the caller must check the misses before keeping what it admitted.
    pub fn start_collecting(&self) {
        self.collecting.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn stop_collecting(&self) {
        self.collecting.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// The certificates refused (or, while collecting, admitted unknown) since the last call.
    pub fn take_misses(&self) -> Vec<Miss> {
        std::mem::take(
            &mut *self
                .misses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Records a miss; false when the list is full (the certificate is then refused even
    /// while collecting: what is admitted must be checked).
    fn miss(&self, miss: Miss) -> bool {
        let mut misses = self
            .misses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if misses.contains(&miss) {
            return true;
        }
        if misses.len() >= MISSES_MAX {
            return false;
        }
        misses.push(miss);
        true
    }
}

impl mls_rs::error::IntoAnyError for IdentityError {
    fn into_dyn_error(self) -> Result<Box<dyn std::error::Error + Send + Sync>, Self> {
        Ok(Box::new(self))
    }
}

/// Validates credentials against one organisation's root key.
#[derive(Debug, Clone)]
pub struct RedoubtIdentityProvider {
    org_key: VerifyingKey,
    org_id: OrgId,
    /// On devices: only certificates proven logged are admitted to a group. The server,
    /// which only follows groups' public state, has none.
    logged: Option<std::sync::Arc<LoggedCertificates>>,
}

impl RedoubtIdentityProvider {
    pub fn new(org_key: VerifyingKey, org_id: OrgId) -> Self {
        Self {
            org_key,
            org_id,
            logged: None,
        }
    }

    /// Admits to groups only members whose certificates are in `logged`.
    pub fn requiring_logged(mut self, logged: std::sync::Arc<LoggedCertificates>) -> Self {
        self.logged = Some(logged);
        self
    }

    /// The verified device certificate behind a member's signing identity.
    ///
    /// Validity periods are not checked here: a group's history must stay processable after a
    /// certificate expires; the server refuses expired certificates at authentication and
    /// removes revoked devices from groups.
    pub fn device_certificate(
        &self,
        identity: &SigningIdentity,
    ) -> Result<VerifiedCertificate, IdentityError> {
        let certificate = decode_certificate(identity)?;
        let not_before = certificate.unverified_body().not_before_unix_s;
        let verified = certificate.verify(&self.org_key, &self.org_id, not_before)?;
        if identity.signature_key.as_bytes() != verified.body().device_public_key.as_slice() {
            return Err(IdentityError::KeyMismatch);
        }
        Ok(verified)
    }

    /// The device a member's leaf belongs to.
    pub fn device_id(&self, identity: &SigningIdentity) -> Result<DeviceId, IdentityError> {
        Ok(self.device_certificate(identity)?.body().device_id)
    }

    /// The device id of a leaf already in a group's roster, without checking the
    /// certificate's signature again: every leaf passed [`IdentityProvider::validate_member`]
    /// when it joined, and the roster is state this process validated. Costs a decode, not
    /// an Ed25519 verification (which dominated commits to 10,000-member groups).
    pub fn member_device_id(&self, identity: &SigningIdentity) -> Result<DeviceId, IdentityError> {
        Ok(self.member_certificate(identity)?.unverified_body().device_id)
    }

    /// The certificate of a leaf already in a group's roster, decoded but not verified
    /// again (see [`Self::member_device_id`]).
    pub fn member_certificate(&self, identity: &SigningIdentity) -> Result<DeviceCertificate, IdentityError> {
        decode_certificate(identity)
    }
}

/// The device certificate a credential carries, decoded (not verified).
fn decode_certificate(identity: &SigningIdentity) -> Result<DeviceCertificate, IdentityError> {
    let Credential::Custom(custom) = &identity.credential else {
        return Err(IdentityError::CredentialType);
    };
    if custom.credential_type != CredentialType::new(CREDENTIAL_TYPE) {
        return Err(IdentityError::CredentialType);
    }
    Ok(DeviceCertificate::decode(&custom.data)?)
}

impl IdentityProvider for RedoubtIdentityProvider {
    type Error = IdentityError;

    fn validate_member(
        &self,
        signing_identity: &SigningIdentity,
        _timestamp: Option<MlsTime>,
        _context: MemberValidationContext<'_>,
    ) -> Result<(), Self::Error> {
        let certificate = self.device_certificate(signing_identity)?;
        if let Some(logged) = &self.logged
            && let Credential::Custom(custom) = &signing_identity.credential
            && let hash = redoubt_proto::certificate_hash(&custom.data)
            && !logged.contains(&hash)
        {
            let body = certificate.body();
            let recorded = logged.miss(Miss {
                hash,
                user: body.user.clone(),
                device: body.device_id,
                device_name: body.device_name.to_string(),
            });
            if recorded && logged.collecting.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(());
            }
            return Err(IdentityError::NotLogged {
                user: body.user.clone(),
                device: body.device_id,
            });
        }
        Ok(())
    }

    fn validate_external_sender(
        &self,
        signing_identity: &SigningIdentity,
        _timestamp: Option<MlsTime>,
        _extensions: Option<&ExtensionList>,
    ) -> Result<(), Self::Error> {
        let is_org = signing_identity.credential.as_custom().is_some_and(|c| {
            c.credential_type == CredentialType::new(CREDENTIAL_TYPE) && c.data == ORG_SENDER_MARKER
        }) && signing_identity.signature_key.as_bytes() == self.org_key.as_bytes();
        if is_org {
            Ok(())
        } else {
            Err(IdentityError::ExternalSender)
        }
    }

    fn identity(
        &self,
        signing_identity: &SigningIdentity,
        _extensions: &ExtensionList,
    ) -> Result<Vec<u8>, Self::Error> {
        // Unique per leaf: one leaf per device. mls-rs asks this of every leaf whenever it
        // checks a roster for duplicates (each commit, each join), so it decodes the
        // certificate without verifying its signature: 10,000 Ed25519 verifications a
        // commit otherwise. Whether a leaf may be in the group at all is
        // `validate_member`'s question, which mls-rs asks of every leaf it admits.
        let id = self.member_device_id(signing_identity)?;
        Ok(id.as_bytes().to_vec())
    }

    fn valid_successor(
        &self,
        predecessor: &SigningIdentity,
        successor: &SigningIdentity,
        _extensions: &ExtensionList,
    ) -> Result<bool, Self::Error> {
        // The predecessor is a member already validated; the successor is verified.
        Ok(self.member_device_id(predecessor)? == self.device_id(successor)?)
    }

    fn supported_types(&self) -> Vec<CredentialType> {
        vec![CredentialType::new(CREDENTIAL_TYPE)]
    }
}

/// A device's MLS signing identity: its certificate as credential, its key as signature key.
pub fn device_signing_identity(certificate: &[u8], device_public_key: &[u8; 32]) -> SigningIdentity {
    let credential = Credential::Custom(CustomCredential::new(
        CredentialType::new(CREDENTIAL_TYPE),
        certificate.to_vec(),
    ));
    SigningIdentity::new(credential, device_public_key.to_vec().into())
}

/// The organisation as external sender: the marker credential and the root public key.
pub fn org_external_sender(org_key: &VerifyingKey) -> SigningIdentity {
    let credential = Credential::Custom(CustomCredential::new(
        CredentialType::new(CREDENTIAL_TYPE),
        ORG_SENDER_MARKER.to_vec(),
    ));
    SigningIdentity::new(credential, org_key.as_bytes().to_vec().into())
}
