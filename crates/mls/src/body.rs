//! What travels inside an MLS application message: Redoubt's own small envelope, so the
//! server sees only padded ciphertext whatever the content.

use serde::{Deserialize, Serialize};

/// Largest plaintext body accepted from a peer.
pub const BODY_BYTES_MAX: usize = 48 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AppBody {
    /// A text message.
    Text { text: String, sent_at_unix_s: i64 },
    /// The conversation's name and kind, sent by whoever adds members, so new members
    /// (who cannot read earlier messages) learn it. Encrypted like any message.
    Meta { name: String, direct: bool },
    /// A file, encrypted under its own key and stored as a blob on the server. The key
    /// travels only here, inside the MLS ciphertext.
    Attachment(Attachment),
    /// The sending user's devices received (or the user has read) these messages, named
    /// by their sequence numbers in the group's log.
    Receipt { kind: ReceiptKind, seqs: Vec<u64> },
    /// From the mail connector, in a user's mailbox group only (see `mail.rs`).
    Mail(crate::mail::MailPush),
    /// From a device to the mail connector, in the user's mailbox group only.
    MailCommand(crate::mail::MailCommand),
    /// History for the one other member of a group made for this transfer alone: its parts
    /// are blobs of that group, each encrypted under its own key, which travels only here.
    History(crate::history::HistoryOffer),
    /// The conversation's settings: `changed` from the member who changed them; repeated
    /// unchanged after every commit that adds someone, so new members learn them.
    Settings {
        settings: crate::history::ConversationSettings,
        changed: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReceiptKind {
    Delivered,
    Read,
}

/// What a member needs to fetch, decrypt and check an attachment.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub name: String,
    /// Plaintext size.
    pub bytes: u64,
    /// SHA-256 of the plaintext.
    pub sha256: [u8; 32],
    /// ChaCha20-Poly1305 key, fresh for this file.
    pub key: [u8; 32],
    pub blob_id: redoubt_proto::BlobId,
    pub chunk_count: u32,
    pub sent_at_unix_s: i64,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("name", &self.name)
            .field("bytes", &self.bytes)
            .field("blob_id", &self.blob_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("message body refused: {0}")]
pub struct BodyError(String);

impl AppBody {
    pub fn encode(&self) -> Vec<u8> {
        // Encoding these types into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, BodyError> {
        if bytes.len() > BODY_BYTES_MAX {
            return Err(BodyError(format!(
                "{} bytes exceeds {BODY_BYTES_MAX}",
                bytes.len()
            )));
        }
        postcard::from_bytes(bytes).map_err(|e| BodyError(e.to_string()))
    }
}
