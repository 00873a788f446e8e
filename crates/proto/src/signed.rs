//! Documents the organisation's root key signs for devices to check: policies, remote
//! commands and audit checkpoints.
//!
//! Each kind has its own domain-separation label, so a signature over one kind can never
//! be presented as another (or as a device certificate).

use std::marker::PhantomData;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Bytes, SignatureBytes};

/// Largest signed document accepted, in bytes.
pub const SIGNED_DOCUMENT_BYTES_MAX: usize = 8 * 1024;

/// A kind of document the organisation signs.
pub trait Signable: Serialize + DeserializeOwned {
    /// Domain-separation label, ending in NUL, prefixed to the body before signing.
    const LABEL: &'static [u8];
}

/// Why a signed document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignedError {
    #[error("signed document is malformed: {0}")]
    Malformed(String),
    #[error("signature does not verify with the organisation's key")]
    BadSignature,
}

/// A postcard-encoded body and the organisation's Ed25519 signature over label ‖ body.
#[derive(Serialize, Deserialize)]
pub struct Signed<T> {
    pub body: Vec<u8>,
    pub signature: SignatureBytes,
    #[serde(skip)]
    kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Self {
            body: self.body.clone(),
            signature: self.signature,
            kind: PhantomData,
        }
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body && self.signature == other.signature
    }
}

impl<T> Eq for Signed<T> {}

impl<T> std::fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl<T: Signable> Signed<T> {
    /// Signs `value` with the organisation's root key.
    pub fn sign(value: &T, key: &SigningKey) -> Self {
        // Encoding plain structs into a Vec cannot fail (see frame::encode).
        let body = postcard::to_stdvec(value).unwrap_or_default();
        let signature = Bytes(key.sign(&[T::LABEL, &body].concat()).to_bytes());
        Self {
            body,
            signature,
            kind: PhantomData,
        }
    }

    /// Checks the signature, then decodes the body (exactly, no trailing bytes).
    pub fn verify(&self, key: &VerifyingKey) -> Result<T, SignedError> {
        if self.body.len() > SIGNED_DOCUMENT_BYTES_MAX {
            return Err(SignedError::Malformed(format!(
                "{} bytes exceeds {SIGNED_DOCUMENT_BYTES_MAX}",
                self.body.len()
            )));
        }
        key.verify_strict(
            &[T::LABEL, &self.body].concat(),
            &Signature::from_bytes(&self.signature.0),
        )
        .map_err(|_| SignedError::BadSignature)?;
        let (value, rest) =
            postcard::take_from_bytes::<T>(&self.body).map_err(|e| SignedError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(SignedError::Malformed("trailing bytes in body".into()));
        }
        Ok(value)
    }

    /// The encoded document, for storing.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Parses a stored document; only structure is checked, call [`Self::verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SignedError> {
        if bytes.len() > SIGNED_DOCUMENT_BYTES_MAX + 128 {
            return Err(SignedError::Malformed("too large".into()));
        }
        let (value, rest) =
            postcard::take_from_bytes::<Self>(bytes).map_err(|e| SignedError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(SignedError::Malformed("trailing bytes".into()));
        }
        Ok(value)
    }
}
