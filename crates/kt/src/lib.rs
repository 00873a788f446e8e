//! Key transparency checks shared by the server, devices and auditors.
//!
//! The server keeps a verifiable key directory with akd (WhatsApp's auditable key
//! directory): label = user, value = [`redoubt_proto::device_set_commitment`] of the user's
//! device certificates. This crate fixes akd's configuration (hash, VRF and the domain
//! label, which every party must share) and does the checks:
//!
//! - [`verify_keys`]: the directory's keys, signed once by the organisation's root key;
//! - [`verify_head`]: an epoch head, signed by the transparency key;
//! - [`verify_history`]: every logged version of a user's device set, against a head;
//! - [`verify_audit_epoch`]: that an epoch only appended to the one before it.

use akd::hash::Digest;
use akd::verify::history::HistoryParams;
use akd::{AkdLabel, HistoryVerificationParams};
use ed25519_dalek::VerifyingKey;
use protobuf::Message;
use redoubt_proto::{
    EpochHead, KtAuditEpoch, KtHistoryAnswer, KtKeysBody, OrgId, Signed, device_set_commitment, user_label,
};

/// Redoubt's domain label: proofs of one organisation's directory (or of another product
/// built on akd) never verify as Redoubt's.
#[derive(Debug, Clone, Copy)]
pub struct RedoubtDomain;

impl akd::DomainLabel for RedoubtDomain {
    fn domain_label() -> &'static [u8] {
        b"redoubt/kt/v1"
    }
}

/// akd's configuration for Redoubt: BLAKE3 hashing and the ECVRF of akd's experimental
/// configuration, under Redoubt's domain label.
pub type Config = akd::ExperimentalConfiguration<RedoubtDomain>;

/// Why a key-transparency check failed. Each names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KtError {
    #[error("the key directory's keys are not signed by the organisation: {0}")]
    Keys(String),
    #[error("epoch head refused: {0}")]
    Head(String),
    #[error("proof refused: {0}")]
    Proof(String),
    #[error("epoch {epoch}: {reason}")]
    Audit { epoch: u64, reason: String },
}

/// Checks the directory's keys against the organisation's root key.
pub fn verify_keys(
    keys: &Signed<KtKeysBody>,
    org_key: &VerifyingKey,
    org_id: &OrgId,
) -> Result<KtKeysBody, KtError> {
    let body = keys.verify(org_key).map_err(|e| KtError::Keys(e.to_string()))?;
    if body.org_id != *org_id {
        return Err(KtError::Keys("they belong to another organisation".into()));
    }
    Ok(body)
}

/// Checks an epoch head's signature and organisation.
pub fn verify_head(head: &Signed<EpochHead>, keys: &KtKeysBody) -> Result<EpochHead, KtError> {
    let key = VerifyingKey::from_bytes(&keys.transparency_key.0).map_err(|e| KtError::Keys(e.to_string()))?;
    let body = head.verify(&key).map_err(|e| KtError::Head(e.to_string()))?;
    if body.org_id != keys.org_id {
        return Err(KtError::Head("it belongs to another organisation".into()));
    }
    Ok(body)
}

/// One version of a user's device set, proven logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedVersion {
    pub epoch: u64,
    pub certificates: Vec<Vec<u8>>,
    /// Signed approvals of approved devices among them (`Signed<DeviceApproval>`).
    pub approvals: Vec<Vec<u8>>,
    pub commitment: [u8; 32],
}

/// Checks a `KtHistory` answer against `head` (already verified): akd's history proof, and
/// that the certificates given for each version are exactly what its logged value commits
/// to. Returns the versions, oldest first.
pub fn verify_history(
    keys: &KtKeysBody,
    head: &EpochHead,
    answer: &KtHistoryAnswer,
) -> Result<Vec<LoggedVersion>, KtError> {
    if answer.versions.is_empty() {
        // A user never logged has no devices anyone may accept: nothing to prove.
        return Ok(Vec::new());
    }
    let proto = akd::proto::specs::types::HistoryProof::parse_from_bytes(&answer.proof)
        .map_err(|e| KtError::Proof(format!("history proof does not parse: {e}")))?;
    let proof =
        akd::HistoryProof::try_from(&proto).map_err(|e| KtError::Proof(format!("history proof: {e:?}")))?;
    let results = akd::verify::key_history_verify::<Config>(
        &keys.vrf_public_key.0,
        head.root_hash.0,
        head.epoch,
        AkdLabel(user_label(&answer.user)),
        proof,
        HistoryVerificationParams::Default {
            history_params: HistoryParams::Complete,
        },
    )
    .map_err(|e| KtError::Proof(format!("history of {}: {e}", answer.user)))?;
    if results.len() != answer.versions.len() {
        return Err(KtError::Proof(format!(
            "history of {}: {} logged versions proven, {} given",
            answer.user,
            results.len(),
            answer.versions.len()
        )));
    }
    let mut versions = Vec::with_capacity(results.len());
    for result in results {
        let Some(given) = answer.versions.iter().find(|v| v.epoch == result.epoch) else {
            return Err(KtError::Proof(format!(
                "history of {}: no certificates given for the version of epoch {}",
                answer.user, result.epoch
            )));
        };
        let commitment = device_set_commitment(&given.certificates, &given.approvals);
        if result.value.0 != commitment {
            return Err(KtError::Proof(format!(
                "history of {}: the certificates given for epoch {} are not the ones logged",
                answer.user, result.epoch
            )));
        }
        versions.push(LoggedVersion {
            epoch: result.epoch,
            certificates: given.certificates.clone(),
            approvals: given.approvals.clone(),
            commitment,
        });
    }
    versions.sort_by_key(|v| v.epoch);
    Ok(versions)
}

/// Checks one epoch for an auditor: its head is signed, it follows `previous` (the epoch
/// before, verified) and its append-only proof takes `previous`'s root to its own.
/// Returns the verified head.
pub async fn verify_audit_epoch(
    keys: &KtKeysBody,
    previous: &EpochHead,
    epoch: &KtAuditEpoch,
) -> Result<EpochHead, KtError> {
    let head = verify_head(&epoch.head, keys).map_err(|e| KtError::Audit {
        epoch: previous.epoch + 1,
        reason: e.to_string(),
    })?;
    let audit_error = |reason: String| KtError::Audit {
        epoch: head.epoch,
        reason,
    };
    if head.epoch != previous.epoch + 1 {
        // Named by the epoch that should have come: the one removed or replaced.
        return Err(KtError::Audit {
            epoch: previous.epoch + 1,
            reason: format!(
                "missing: the server served epoch {} after epoch {}",
                head.epoch, previous.epoch
            ),
        });
    }
    let proto = akd::proto::specs::types::SingleAppendOnlyProof::parse_from_bytes(&epoch.proof)
        .map_err(|e| audit_error(format!("append-only proof does not parse: {e}")))?;
    let single = akd::SingleAppendOnlyProof::try_from(&proto)
        .map_err(|e| audit_error(format!("append-only proof: {e:?}")))?;
    let hashes: Vec<Digest> = vec![previous.root_hash.0, head.root_hash.0];
    let proof = akd::AppendOnlyProof {
        proofs: vec![single],
        epochs: vec![previous.epoch],
    };
    akd::auditor::audit_verify::<Config>(hashes, proof)
        .await
        .map_err(|e| {
            audit_error(format!(
                "not an append-only successor of epoch {}: {e}",
                previous.epoch
            ))
        })?;
    Ok(head)
}

/// Encodes akd's history proof for the wire.
pub fn encode_history_proof(proof: &akd::HistoryProof) -> Vec<u8> {
    akd::proto::specs::types::HistoryProof::from(proof)
        .write_to_bytes()
        .unwrap_or_default()
}

/// Encodes one epoch's append-only proof for the wire.
pub fn encode_append_only_proof(proof: &akd::SingleAppendOnlyProof) -> Vec<u8> {
    akd::proto::specs::types::SingleAppendOnlyProof::from(proof)
        .write_to_bytes()
        .unwrap_or_default()
}
