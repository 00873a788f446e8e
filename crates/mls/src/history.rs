//! Conversation history as one device sends it to another (a user's new device, or a
//! member added to a conversation that shares its history): parts of at most
//! [`HISTORY_PART_BYTES_MAX`], each uploaded as a blob encrypted under a fresh key
//! (`Attachment`), named with their keys in a [`HistoryOffer`] inside an MLS message of a
//! group holding just the two devices. The server relays ciphertext and never a key.

use redoubt_proto::{DeviceId, GroupId, UserName};
use serde::{Deserialize, Serialize};

use crate::Attachment;

/// Largest part, in plaintext bytes: the sender cuts the history at this size; the
/// receiver refuses larger ones before decoding.
pub const HISTORY_PART_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Most parts in one offer (with 4 MiB parts, 1 GiB of history).
pub const HISTORY_PARTS_MAX: usize = 256;

/// The parts of one transfer, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryOffer {
    pub parts: Vec<Attachment>,
    /// Messages in all parts, as the sender counted them.
    pub messages: u32,
}

/// What a group's members agreed to, sent as `AppBody::Settings`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSettings {
    /// Days of history a member's device sends to members added later; 0 = off.
    pub share_history_days: u32,
}

/// One part of a transfer: some conversations, each with some of its messages (a long
/// conversation may continue in the next part).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPart {
    pub conversations: Vec<HistoryConversation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryConversation {
    pub group_id: GroupId,
    pub name: String,
    /// For a direct conversation, the other user (as the sender sees it).
    pub peer: Option<UserName>,
    pub settings: ConversationSettings,
    pub messages: Vec<HistoryMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryMessage {
    /// The message's place in the group's log: the same on every device, so storing it
    /// twice stores it once.
    pub seq: u64,
    pub sender_user: UserName,
    pub sender_device: DeviceId,
    pub sent_at_unix_s: i64,
    pub server_time_unix_s: i64,
    pub text: String,
    pub attachment: Option<Attachment>,
    /// A conversation event (settings changed) rather than something someone wrote.
    pub event: bool,
    pub delivered: Vec<UserName>,
    pub read: Vec<UserName>,
}

#[derive(Debug, thiserror::Error)]
#[error("history part refused: {0}")]
pub struct HistoryError(String);

impl HistoryPart {
    pub fn encode(&self) -> Vec<u8> {
        // Encoding these types into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a part a peer sent, refusing one over [`HISTORY_PART_BYTES_MAX`].
    pub fn decode(bytes: &[u8]) -> Result<Self, HistoryError> {
        if bytes.len() as u64 > HISTORY_PART_BYTES_MAX {
            return Err(HistoryError(format!(
                "{} bytes exceeds {HISTORY_PART_BYTES_MAX}",
                bytes.len()
            )));
        }
        postcard::from_bytes(bytes).map_err(|e| HistoryError(e.to_string()))
    }
}
