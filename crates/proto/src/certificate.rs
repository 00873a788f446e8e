//! Device certificates: the organisation's root key vouches that a device key belongs to a
//! user of the organisation.
//!
//! Encoded as `postcard(DeviceCertificate)`: the body's own postcard bytes and an Ed25519
//! signature over `"redoubt/device-certificate/v1\0" ‖ body`. Keeping the signed bytes as
//! they arrived means verification never depends on re-encoding.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{Bytes, DeviceId, DeviceName, OrgId, PublicKeyBytes, Role, SignatureBytes, UserName};

const SIGNATURE_LABEL: &[u8] = b"redoubt/device-certificate/v1\0";
const CERTIFICATE_VERSION: u8 = 1;
/// Largest encoded certificate accepted by [`DeviceCertificate::decode`].
pub const CERTIFICATE_BYTES_MAX: usize = 2048;

/// What the organisation certifies about one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateBody {
    pub version: u8,
    /// Unique per organisation, increasing; revocation lists name serials.
    pub serial: u64,
    pub org_id: OrgId,
    pub user: UserName,
    pub device_id: DeviceId,
    pub device_name: DeviceName,
    pub device_public_key: PublicKeyBytes,
    /// Roles when the certificate was issued. The server checks current roles on every request.
    pub roles: Vec<Role>,
    pub not_before_unix_s: i64,
    pub not_after_unix_s: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    #[error("certificate is malformed: {0}")]
    Malformed(String),
    #[error("certificate version {0} is not supported")]
    Version(u8),
    #[error("certificate is not signed by this organisation's key")]
    BadSignature,
    #[error("certificate belongs to another organisation")]
    WrongOrganisation,
    #[error("certificate is not valid at this time")]
    Expired,
}

/// A decoded, not yet verified certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCertificate {
    encoded: Vec<u8>,
    body_bytes: Vec<u8>,
    signature: SignatureBytes,
    body: CertificateBody,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    body: Vec<u8>,
    signature: SignatureBytes,
}

/// A certificate whose signature and validity have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCertificate(DeviceCertificate);

impl VerifiedCertificate {
    pub fn body(&self) -> &CertificateBody {
        &self.0.body
    }

    pub fn encoded(&self) -> &[u8] {
        &self.0.encoded
    }

    /// The device's key, ready to verify signatures.
    pub fn device_key(&self) -> Result<VerifyingKey, CertificateError> {
        VerifyingKey::from_bytes(&self.0.body.device_public_key.0)
            .map_err(|_| CertificateError::Malformed("device key is not a valid Ed25519 point".into()))
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    [SIGNATURE_LABEL, body].concat()
}

impl DeviceCertificate {
    /// Signs `body` with the organisation's root key.
    pub fn issue(body: &CertificateBody, org_key: &SigningKey) -> Self {
        // Encoding a CertificateBody into a Vec cannot fail (see frame::encode).
        let body_bytes = postcard::to_stdvec(body).unwrap_or_default();
        let signature = Bytes(org_key.sign(&signed_message(&body_bytes)).to_bytes());
        let encoded = postcard::to_stdvec(&Envelope {
            body: body_bytes.clone(),
            signature,
        })
        .unwrap_or_default();
        Self {
            encoded,
            body_bytes,
            signature,
            body: body.clone(),
        }
    }

    /// Parses a certificate. Only structure is checked; call [`Self::verify`] before trusting it.
    pub fn decode(bytes: &[u8]) -> Result<Self, CertificateError> {
        if bytes.len() > CERTIFICATE_BYTES_MAX {
            return Err(CertificateError::Malformed(format!(
                "{} bytes exceeds {CERTIFICATE_BYTES_MAX}",
                bytes.len()
            )));
        }
        let envelope: Envelope =
            postcard::from_bytes(bytes).map_err(|e| CertificateError::Malformed(e.to_string()))?;
        let (body, rest) = postcard::take_from_bytes::<CertificateBody>(&envelope.body)
            .map_err(|e| CertificateError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertificateError::Malformed("trailing bytes in body".into()));
        }
        if body.version != CERTIFICATE_VERSION {
            return Err(CertificateError::Version(body.version));
        }
        let encoded = postcard::to_stdvec(&envelope).unwrap_or_default();
        if encoded != bytes {
            return Err(CertificateError::Malformed("trailing bytes".into()));
        }
        Ok(Self {
            encoded,
            body_bytes: envelope.body,
            signature: envelope.signature,
            body,
        })
    }

    /// The body as claimed, before verification: for display and for choosing which key to
    /// verify with, never for decisions.
    pub fn unverified_body(&self) -> &CertificateBody {
        &self.body
    }

    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// SHA-256 of the encoded certificate, the fingerprint people compare.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(&self.encoded).into()
    }

    /// Checks the organisation's signature, the organisation id and the validity period.
    pub fn verify(
        self,
        org_key: &VerifyingKey,
        org_id: &OrgId,
        now_unix_s: i64,
    ) -> Result<VerifiedCertificate, CertificateError> {
        let signature = Signature::from_bytes(&self.signature.0);
        org_key
            .verify_strict(&signed_message(&self.body_bytes), &signature)
            .map_err(|_| CertificateError::BadSignature)?;
        if self.body.org_id != *org_id {
            return Err(CertificateError::WrongOrganisation);
        }
        if now_unix_s < self.body.not_before_unix_s || now_unix_s > self.body.not_after_unix_s {
            return Err(CertificateError::Expired);
        }
        Ok(VerifiedCertificate(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(org: OrgId) -> CertificateBody {
        CertificateBody {
            version: CERTIFICATE_VERSION,
            serial: 7,
            org_id: org,
            user: UserName::parse("alice").unwrap(),
            device_id: DeviceId::from([3; 16]),
            device_name: DeviceName::parse("phone").unwrap(),
            device_public_key: Bytes(SigningKey::from_bytes(&[5; 32]).verifying_key().to_bytes()),
            roles: vec![],
            not_before_unix_s: 100,
            not_after_unix_s: 200,
        }
    }

    #[test]
    fn issue_decode_verify() {
        let org_key = SigningKey::from_bytes(&[1; 32]);
        let org = OrgId::from([9; 16]);
        let cert = DeviceCertificate::issue(&body(org), &org_key);
        let decoded = DeviceCertificate::decode(cert.encoded()).unwrap();
        assert_eq!(decoded, cert);
        let verified = decoded
            .clone()
            .verify(&org_key.verifying_key(), &org, 150)
            .unwrap();
        assert_eq!(verified.body().serial, 7);

        let other_key = SigningKey::from_bytes(&[2; 32]).verifying_key();
        assert_eq!(
            decoded.clone().verify(&other_key, &org, 150),
            Err(CertificateError::BadSignature)
        );
        let other_org = OrgId::from([8; 16]);
        assert_eq!(
            decoded.clone().verify(&org_key.verifying_key(), &other_org, 150),
            Err(CertificateError::WrongOrganisation)
        );
        assert_eq!(
            decoded.clone().verify(&org_key.verifying_key(), &org, 201),
            Err(CertificateError::Expired)
        );
        assert_eq!(
            decoded.verify(&org_key.verifying_key(), &org, 99),
            Err(CertificateError::Expired)
        );
    }

    #[test]
    fn tampered_body_fails() {
        let org_key = SigningKey::from_bytes(&[1; 32]);
        let org = OrgId::from([9; 16]);
        let cert = DeviceCertificate::issue(&body(org), &org_key);
        let mut bytes = cert.encoded().to_vec();
        // Flip a bit inside the user name, leaving the structure intact.
        let at = bytes.windows(5).position(|w| w == b"alice").unwrap();
        bytes[at] = b'b';
        let tampered = DeviceCertificate::decode(&bytes).unwrap();
        assert_eq!(
            tampered.verify(&org_key.verifying_key(), &org, 150),
            Err(CertificateError::BadSignature)
        );
    }

    #[test]
    fn trailing_bytes_refused() {
        let org_key = SigningKey::from_bytes(&[1; 32]);
        let cert = DeviceCertificate::issue(&body(OrgId::from([9; 16])), &org_key);
        let mut bytes = cert.encoded().to_vec();
        bytes.push(0);
        assert!(matches!(
            DeviceCertificate::decode(&bytes),
            Err(CertificateError::Malformed(_))
        ));
    }
}
