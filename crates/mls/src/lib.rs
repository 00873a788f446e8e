//! MLS (RFC 9420) as Redoubt uses it, shared by the server and every device.
//!
//! - Ciphersuite 0x0001 (X25519, AES-128-GCM, SHA-256, Ed25519) on the RustCrypto provider.
//! - A member's MLS credential is its Redoubt device certificate (custom credential type
//!   [`CREDENTIAL_TYPE`]); the identity provider accepts a leaf only if the certificate is
//!   signed by the organisation's root key and certifies the leaf's signature key.
//! - The organisation is the group's one external sender (its root key, so only the
//!   organisation's server can propose removing a revoked device).
//! - Handshake messages travel as PublicMessage so the delivery service can validate them;
//!   application messages are PrivateMessage, padded (Padmé).

mod body;
mod identity;

pub mod history;
pub mod mail;

pub use body::{AppBody, Attachment, BodyError, ReceiptKind};
pub use identity::{
    IdentityError, LoggedCertificates, Miss, RedoubtIdentityProvider, device_signing_identity,
    org_external_sender,
};

use mls_rs::CipherSuite;
use mls_rs::client_builder::PaddingMode;
use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules, EncryptionOptions};

/// The one ciphersuite Redoubt speaks: MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519.
pub const CIPHER_SUITE: CipherSuite = CipherSuite::CURVE25519_AES128;

/// Private-use credential type (RFC 9420 §17.1 reserves 0xF000–0xFFFF): a Redoubt device
/// certificate, or the organisation's external-sender marker.
pub const CREDENTIAL_TYPE: u16 = 0xF0D1;

/// The group rules every party applies: plaintext handshakes, padded application messages,
/// the ratchet tree in Welcome and GroupInfo so joiners and the server need no side channel.
///
/// A commit carries a path (a fresh key for the committer: post-compromise security)
/// whenever RFC 9420 §12.4 requires one — any update, any remove, an empty commit (a
/// device's key update) — but not for adds alone: the path of an add-only commit buys
/// nothing the next update does not, and it costs an HPKE encryption to every copath node's resolution, which in a group whose
/// parents are blank (one created by a single commit) is half the members — 0.4–0.6 s of
/// the adder's time at 10,000 devices against ~0.1 s without.
pub fn rules() -> DefaultMlsRules {
    DefaultMlsRules::new()
        .with_encryption_options(EncryptionOptions::new(false, PaddingMode::Padme))
        .with_commit_options(
            CommitOptions::new()
                .with_path_required(false)
                .with_ratchet_tree_extension(true),
        )
}

/// mls-rs keys from an Ed25519 key: the RustCrypto provider wants seed ‖ public (64 bytes).
pub fn mls_secret_key(key: &ed25519_dalek::SigningKey) -> mls_rs::crypto::SignatureSecretKey {
    mls_rs::crypto::SignatureSecretKey::new(key.to_keypair_bytes().to_vec())
}
