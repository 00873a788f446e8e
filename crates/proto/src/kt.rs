//! Key transparency: what the server's verifiable key directory commits to, and what
//! devices and auditors check.
//!
//! The directory (akd, on the server) maps each user to a commitment to their current set of
//! device certificates. Its root hash at each epoch is signed by the organisation's
//! transparency key, whose binding to the organisation is signed once by the root key. A
//! device accepts another device only once its certificate is in a logged set; it watches
//! its own user's history for devices it was not told of; auditors check that each epoch
//! only appends to the one before.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::{Bytes, DeviceId, OrgId, PublicKeyBytes, Signable, Signed, UserName};

/// Most epochs one `KtAudit` answer carries.
pub const KT_AUDIT_EPOCHS_MAX: u32 = 256;
/// Most bytes of proofs one `KtAudit` answer carries (it stops before exceeding this).
pub const KT_AUDIT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most auditor keys a policy may name.
pub const KT_AUDITOR_KEYS_MAX: usize = 4;

/// Auditors whose countersignature devices require (a policy setting): up to
/// [`KT_AUDITOR_KEYS_MAX`] Ed25519 keys, written as hex strings. Fixed-size so that, like
/// every setting, it is `Copy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuditorKeys {
    keys: [[u8; 32]; KT_AUDITOR_KEYS_MAX],
    count: u8,
}

impl AuditorKeys {
    /// Parses hex keys (64 digits each), at most [`KT_AUDITOR_KEYS_MAX`].
    pub fn parse(hex: &[String]) -> Result<Self, String> {
        if hex.len() > KT_AUDITOR_KEYS_MAX {
            return Err(format!("at most {KT_AUDITOR_KEYS_MAX} auditor keys"));
        }
        let mut keys = Self::default();
        for text in hex {
            let key: [u8; 32] = data_encoding::HEXLOWER_PERMISSIVE
                .decode(text.as_bytes())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("{text:?} is not an Ed25519 key in 64 hex digits"))?;
            if !keys.keys().contains(&key) {
                keys.keys[usize::from(keys.count)] = key;
                keys.count += 1;
            }
        }
        Ok(keys)
    }

    pub fn keys(&self) -> &[[u8; 32]] {
        &self.keys[..usize::from(self.count)]
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn hex(&self) -> Vec<String> {
        self.keys()
            .iter()
            .map(|k| data_encoding::HEXLOWER.encode(k))
            .collect()
    }
}

impl std::fmt::Display for AuditorKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&self.hex().join(","))
        }
    }
}

impl Serialize for AuditorKeys {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.hex().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for AuditorKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = Vec::<String>::deserialize(deserializer)?;
        Self::parse(&hex).map_err(serde::de::Error::custom)
    }
}

/// The SHA-256 of a device certificate (its encoded bytes): how the log names a device.
pub fn certificate_hash(certificate: &[u8]) -> [u8; 32] {
    Sha256::digest(certificate).into()
}

/// The value logged for a user: SHA-256 over a domain label, the sorted, distinct hashes of
/// their device certificates, then those of the approvals of approved devices (signed
/// [`DeviceApproval`]s, encoded). The server sends both beside each proof; a device
/// recomputes this and compares it with the proven value.
pub fn device_set_commitment(certificates: &[Vec<u8>], approvals: &[Vec<u8>]) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(b"redoubt/kt-device-set/v2\0");
    for list in [certificates, approvals] {
        let mut hashes: Vec<[u8; 32]> = list.iter().map(|c| certificate_hash(c)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        digest.update((hashes.len() as u64).to_be_bytes());
        for hash in &hashes {
            digest.update(hash);
        }
    }
    digest.finalize().into()
}

/// A device's approval of a new device of its user (policy `new_device_approval`), signed
/// by the approving device's own key. The server logs it beside the approved certificate,
/// so every device of the user can check which of their devices let the new one in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceApproval {
    pub org_id: OrgId,
    pub user: UserName,
    /// The approving device.
    pub approver: DeviceId,
    /// [`certificate_hash`] of the approved device's certificate.
    pub certificate_hash: Bytes<32>,
    pub approved_at_unix_s: i64,
}

impl Signable for DeviceApproval {
    const LABEL: &'static [u8] = b"redoubt/device-approval/v1\0";
}

/// The label of a user in the directory (akd hides it behind a VRF in the tree).
pub fn user_label(user: &UserName) -> Vec<u8> {
    user.as_str().as_bytes().to_vec()
}

/// Signed once by the organisation's root key: which keys run its key directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KtKeysBody {
    pub org_id: OrgId,
    /// Signs every epoch head.
    pub transparency_key: PublicKeyBytes,
    /// The directory's VRF public key (labels in the tree are VRF outputs).
    pub vrf_public_key: Bytes<32>,
}

impl Signable for KtKeysBody {
    const LABEL: &'static [u8] = b"redoubt/kt-keys/v1\0";
}

/// One epoch of the directory, signed by the transparency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochHead {
    pub org_id: OrgId,
    pub epoch: u64,
    /// The directory's root hash at this epoch.
    pub root_hash: Bytes<32>,
    pub published_at_unix_ms: i64,
}

impl Signable for EpochHead {
    const LABEL: &'static [u8] = b"redoubt/kt-epoch/v1\0";
}

/// An auditor's countersignature: it verified every epoch up to this one, and this root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditorStatement {
    pub org_id: OrgId,
    /// The auditor's own Ed25519 key (it signs this statement).
    pub auditor_key: PublicKeyBytes,
    pub epoch: u64,
    pub root_hash: Bytes<32>,
    pub signed_at_unix_s: i64,
}

impl Signable for AuditorStatement {
    const LABEL: &'static [u8] = b"redoubt/kt-auditor/v1\0";
}

/// What `KtHead` answers: the directory's keys, its newest (or a named) epoch, and the
/// newest countersignature of each auditor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KtHead {
    pub keys: Signed<KtKeysBody>,
    /// `None` before the first epoch is published.
    pub head: Option<Signed<EpochHead>>,
    pub auditors: Vec<Signed<AuditorStatement>>,
}

/// One version of a user's logged device set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KtVersion {
    /// The epoch this version was published in.
    pub epoch: u64,
    /// The certificates it commits to ([`device_set_commitment`]).
    pub certificates: Vec<Vec<u8>>,
    /// The approvals of approved devices among them (signed [`DeviceApproval`]s, encoded).
    pub approvals: Vec<Vec<u8>>,
}

/// What `KtHistory` answers: every logged version of a user's device set, with akd's
/// history proof (protobuf) against `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KtHistoryAnswer {
    pub head: Signed<EpochHead>,
    pub user: UserName,
    /// Oldest first; empty when the user was never logged (and `proof` is empty).
    pub versions: Vec<KtVersion>,
    pub proof: Vec<u8>,
}

/// One epoch for auditors: its signed head and akd's append-only proof from the epoch
/// before it (protobuf; empty for epoch 1, which follows the empty tree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KtAuditEpoch {
    pub head: Signed<EpochHead>,
    pub proof: Vec<u8>,
}

/// What a member puts in the authenticated data of its MLS application messages: the
/// newest epoch head it verified, as the transparency key signed it. A member holding
/// another root for that epoch then holds two signed roots for one epoch: proof that the
/// server showed them different directories (a fork). A member cannot forge one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KtWitness {
    pub head: Signed<EpochHead>,
}

const WITNESS_TAG: &[u8; 4] = b"rkt2";
/// A signed head is well under this.
const WITNESS_BYTES_MAX: usize = 512;

impl KtWitness {
    pub fn encode(&self) -> Vec<u8> {
        [WITNESS_TAG.as_slice(), &self.head.to_bytes()].concat()
    }

    /// `None` unless `bytes` is a witness (older senders put nothing there).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > WITNESS_BYTES_MAX || !bytes.starts_with(WITNESS_TAG) {
            return None;
        }
        Signed::from_bytes(&bytes[WITNESS_TAG.len()..])
            .ok()
            .map(|head| Self { head })
    }
}

/// One side of a safety number: 30 digits from a user's name, the commitment to their
/// logged device set and the epoch it was logged in.
fn safety_half(user: &UserName, commitment: &[u8; 32], epoch: u64) -> String {
    // Iterated like Signal's numeric fingerprints, so that finding another device set with
    // the same 30 digits costs 2^100 × 5200 hashes rather than 2^100.
    let mut hash: [u8; 64] = Sha512::new()
        .chain_update(b"redoubt/safety-number/v1\0")
        .chain_update(user.as_str().as_bytes())
        .chain_update([0])
        .chain_update(commitment)
        .chain_update(epoch.to_be_bytes())
        .finalize()
        .into();
    for _ in 0..5200 {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(commitment)
            .finalize()
            .into();
    }
    let mut digits = String::with_capacity(30);
    for chunk in hash.chunks(5).take(6) {
        let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        digits.push_str(&format!("{:05}", value % 100_000));
    }
    digits
}

/// The safety number two users compare: 60 digits in 12 groups of 5, the same whichever of
/// the two computes it. Each side is `(user, commitment to their logged device set, the
/// epoch that set was logged in)`.
pub fn safety_number(a: (&UserName, &[u8; 32], u64), b: (&UserName, &[u8; 32], u64)) -> String {
    let (first, second) = if a.0.as_str() <= b.0.as_str() {
        (a, b)
    } else {
        (b, a)
    };
    let digits = safety_half(first.0, first.1, first.2) + &safety_half(second.0, second.1, second.2);
    digits
        .as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserName {
        UserName::parse(name).unwrap_or_else(|_| panic!("bad name {name}"))
    }

    #[test]
    fn commitment_ignores_order_and_repeats() {
        let a = vec![b"one".to_vec(), b"two".to_vec()];
        let b = vec![b"two".to_vec(), b"one".to_vec(), b"one".to_vec()];
        assert_eq!(device_set_commitment(&a, &[]), device_set_commitment(&b, &[]));
        assert_ne!(
            device_set_commitment(&a, &[]),
            device_set_commitment(&a[..1], &[])
        );
        assert_ne!(
            device_set_commitment(&[], &[]),
            device_set_commitment(&a[..1], &[])
        );
        // Approvals count, apart from certificates: the same bytes as an approval instead
        // of a certificate are another set.
        let approval = vec![b"approval".to_vec()];
        assert_ne!(
            device_set_commitment(&a, &[]),
            device_set_commitment(&a, &approval)
        );
        assert_ne!(
            device_set_commitment(&[a.clone(), approval.clone()].concat(), &[]),
            device_set_commitment(&a, &approval)
        );
    }

    #[test]
    fn safety_number_is_symmetric_and_moves_with_either_side() {
        let (alice, bob) = (user("alice"), user("bob"));
        let (ca, cb) = ([1u8; 32], [2u8; 32]);
        let number = safety_number((&alice, &ca, 3), (&bob, &cb, 5));
        assert_eq!(number, safety_number((&bob, &cb, 5), (&alice, &ca, 3)));
        assert_eq!(number.len(), 60 + 11);
        assert_eq!(number.split(' ').count(), 12);
        assert!(
            number
                .split(' ')
                .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
        );
        assert_ne!(number, safety_number((&alice, &[9u8; 32], 3), (&bob, &cb, 5)));
        assert_ne!(number, safety_number((&alice, &ca, 3), (&bob, &cb, 6)));
    }

    #[test]
    fn witness_round_trips_and_refuses_other_bytes() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let head = EpochHead {
            org_id: crate::OrgId::from([1; 16]),
            epoch: 42,
            root_hash: Bytes([7; 32]),
            published_at_unix_ms: 1,
        };
        let witness = KtWitness {
            head: Signed::sign(&head, &key),
        };
        assert_eq!(KtWitness::decode(&witness.encode()), Some(witness.clone()));
        assert_eq!(KtWitness::decode(&[]), None);
        assert_eq!(KtWitness::decode(&witness.encode()[1..]), None);
        assert_eq!(
            KtWitness::decode(&[b"rkt2".as_slice(), &[0xff; 600]].concat()),
            None
        );
    }
}
