//! Device management on the wire: remote commands and the audit log.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Bytes, DeviceId, OrgId, Signable, Signed, UserName};

/// What an admin can make a device do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommandKind {
    /// Lock the device's local data until the passcode is entered (or, without a passcode,
    /// until an admin sends `Unlock`).
    Lock,
    /// Lift a remote lock.
    Unlock,
    /// Erase the device's whole local profile, keys included.
    Wipe,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Lock => "lock",
            CommandKind::Unlock => "unlock",
            CommandKind::Wipe => "wipe",
        }
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A remote command as the organisation signs it. The device acts only on a command that
/// verifies, names it, and is newer than the last one it handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandBody {
    pub org_id: OrgId,
    pub device_id: DeviceId,
    /// Grows with every command the server issues.
    pub command_id: u64,
    pub kind: CommandKind,
    pub issued_at_unix_s: i64,
}

impl Signable for CommandBody {
    const LABEL: &'static [u8] = b"redoubt/device-command/v1\0";
}

/// One entry of the append-only audit log. `hash` chains it to the entry before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_unix_s: i64,
    /// The user whose request caused it; `None` for the server itself.
    pub actor_user: Option<UserName>,
    pub actor_device: Option<DeviceId>,
    /// What happened, e.g. `policy.set`, `device.wipe.acknowledged`.
    pub action: String,
    /// What it happened to, e.g. `user alice`, `device 0a1b…`.
    pub subject: String,
    /// More detail for people; never message content or secrets.
    pub details: String,
    pub prev_hash: Bytes<32>,
    pub hash: Bytes<32>,
}

/// The hash before the first entry.
pub const AUDIT_GENESIS: Bytes<32> = Bytes([0; 32]);

#[derive(Serialize)]
struct HashedFields<'a> {
    seq: u64,
    at_unix_s: i64,
    actor_user: &'a Option<UserName>,
    actor_device: &'a Option<DeviceId>,
    action: &'a str,
    subject: &'a str,
    details: &'a str,
    prev_hash: &'a Bytes<32>,
}

impl AuditEntry {
    /// SHA-256 over a label and every field but `hash`, in a fixed encoding.
    pub fn compute_hash(&self) -> Bytes<32> {
        let fields = HashedFields {
            seq: self.seq,
            at_unix_s: self.at_unix_s,
            actor_user: &self.actor_user,
            actor_device: &self.actor_device,
            action: &self.action,
            subject: &self.subject,
            details: &self.details,
            prev_hash: &self.prev_hash,
        };
        let encoded = postcard::to_stdvec(&fields).unwrap_or_default();
        let mut hasher = Sha256::new();
        hasher.update(b"redoubt/audit-entry/v1\0");
        hasher.update(&encoded);
        Bytes(hasher.finalize().into())
    }
}

/// The organisation's signature over the chain's head at `seq`: rewriting any entry up to
/// it would need the organisation's root key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBody {
    pub org_id: OrgId,
    pub seq: u64,
    pub hash: Bytes<32>,
    pub at_unix_s: i64,
}

impl Signable for CheckpointBody {
    const LABEL: &'static [u8] = b"redoubt/audit-checkpoint/v1\0";
}

/// The first place a log fails to check, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {seq} does not check: {why}")]
pub struct AuditBreak {
    pub seq: u64,
    pub why: String,
}

/// What [`verify_audit_log`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerified {
    pub entries: u64,
    /// The highest entry covered by a valid organisation-signed checkpoint.
    pub signed_through: u64,
}

/// Checks the whole log from its first entry: sequence numbers without gaps, every hash
/// and link, and every checkpoint's signature and hash. Names the first entry that fails.
pub fn verify_audit_log(
    entries: &[AuditEntry],
    checkpoints: &[Signed<CheckpointBody>],
    org_key: &ed25519_dalek::VerifyingKey,
    org_id: &OrgId,
) -> Result<AuditVerified, AuditBreak> {
    let mut heads = std::collections::BTreeMap::new();
    for checkpoint in checkpoints {
        let body = checkpoint.verify(org_key).map_err(|e| AuditBreak {
            seq: 0,
            why: format!("a checkpoint is not signed by the organisation: {e}"),
        })?;
        if body.org_id != *org_id {
            return Err(AuditBreak {
                seq: body.seq,
                why: "checkpoint is for another organisation".into(),
            });
        }
        heads.insert(body.seq, body.hash);
    }
    let mut prev = AUDIT_GENESIS;
    let mut signed_through = 0;
    for (index, entry) in entries.iter().enumerate() {
        let expected_seq = index as u64 + 1;
        let fail = |why: &str| AuditBreak {
            seq: expected_seq,
            why: why.to_owned(),
        };
        if entry.seq != expected_seq {
            return Err(fail(&format!(
                "found sequence number {} (entries missing or reordered)",
                entry.seq
            )));
        }
        if entry.prev_hash != prev {
            return Err(fail("does not link to the entry before it"));
        }
        if entry.compute_hash() != entry.hash {
            return Err(fail("its contents do not match its hash (altered)"));
        }
        if let Some(head) = heads.get(&entry.seq) {
            if *head != entry.hash {
                return Err(fail("differs from what the organisation signed at this point"));
            }
            signed_through = entry.seq;
        }
        prev = entry.hash;
    }
    let last = entries.len() as u64;
    if let Some((&seq, _)) = heads.range(last + 1..).next() {
        return Err(AuditBreak {
            seq: last + 1,
            why: format!(
                "a signed checkpoint covers entry {seq}, but the log ends at {last} (entries deleted)"
            ),
        });
    }
    Ok(AuditVerified {
        entries: last,
        signed_through,
    })
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;

    fn chain(count: u64) -> Vec<AuditEntry> {
        let mut prev = AUDIT_GENESIS;
        (1..=count)
            .map(|seq| {
                let mut entry = AuditEntry {
                    seq,
                    at_unix_s: 1000 + seq as i64,
                    actor_user: Some(UserName::parse("admin").unwrap()),
                    actor_device: None,
                    action: "policy.set".into(),
                    subject: "default".into(),
                    details: format!("change {seq}"),
                    prev_hash: prev,
                    hash: AUDIT_GENESIS,
                };
                entry.hash = entry.compute_hash();
                prev = entry.hash;
                entry
            })
            .collect()
    }

    #[test]
    fn verify_names_the_first_altered_entry() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let org = OrgId::from([1; 16]);
        let mut entries = chain(5);
        let checkpoint = Signed::sign(
            &CheckpointBody {
                org_id: org,
                seq: 4,
                hash: entries[3].hash,
                at_unix_s: 0,
            },
            &key,
        );
        let checkpoints = vec![checkpoint];
        let ok = verify_audit_log(&entries, &checkpoints, &key.verifying_key(), &org).unwrap();
        assert_eq!(
            ok,
            AuditVerified {
                entries: 5,
                signed_through: 4
            }
        );

        entries[2].details = "nothing to see".into();
        let error = verify_audit_log(&entries, &checkpoints, &key.verifying_key(), &org).unwrap_err();
        assert_eq!(error.seq, 3);

        // Rewriting the chain consistently from there on still breaks the signed head.
        let mut prev = entries[1].hash;
        for entry in &mut entries[2..] {
            entry.prev_hash = prev;
            entry.hash = entry.compute_hash();
            prev = entry.hash;
        }
        let error = verify_audit_log(&entries, &checkpoints, &key.verifying_key(), &org).unwrap_err();
        assert_eq!(error.seq, 4);

        let truncated = chain(3);
        let error = verify_audit_log(&truncated, &checkpoints, &key.verifying_key(), &org).unwrap_err();
        assert_eq!(error.seq, 4);
    }
}
