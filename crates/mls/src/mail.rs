//! Mail between the organisation's mail connector and a user's devices.
//!
//! Each user has one *mailbox group*: an MLS group of the user's devices and the connector
//! (a service device whose certificate names [`CONNECTOR_USER`]). The connector reads the
//! user's mailbox on the organisation's IMAP server and pushes [`MailPush`] messages into
//! the group; devices answer with [`MailCommand`]s (send, flag, move, delete, fetch). Both
//! travel as MLS application messages, so the delivery service sees ciphertext only, and
//! a device believes mail only from a member whose org-signed certificate names the
//! connector.

use redoubt_proto::Bytes;
use serde::{Deserialize, Serialize};

use crate::Attachment;

/// The user name of the mail connector's service account. The server refuses to create a
/// person with this name, so only the connector's org-signed certificate can carry it.
pub const CONNECTOR_USER: &str = "mail-connector";

/// The name devices and the connector give a user's mailbox group.
pub const MAILBOX_GROUP_NAME: &str = "mailbox";

/// Longest text the connector puts in one message (a body longer than this travels as an
/// encrypted blob); keeps every [`crate::AppBody`] under its size limit.
pub const INLINE_TEXT_BYTES_MAX: usize = 32 * 1024;

/// One message on the mail server: folder, UIDVALIDITY and UID name it for as long as the
/// folder's UIDVALIDITY holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MailRef {
    pub folder: String,
    pub uid_validity: u32,
    pub uid: u32,
}

impl MailRef {
    /// A short, stable id for people to type: the first 8 hex digits of SHA-256 over the
    /// three parts.
    pub fn short_id(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(self.folder.as_bytes());
        hash.update([0]);
        hash.update(self.uid_validity.to_be_bytes());
        hash.update(self.uid.to_be_bytes());
        let digest = hash.finalize();
        digest[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailFlags {
    pub seen: bool,
    pub flagged: bool,
    pub answered: bool,
}

/// An attachment as listed in a message's summary; its content is fetched on demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailAttachmentInfo {
    pub name: String,
    pub content_type: String,
    pub bytes: u64,
}

/// What a device is first told of a message: headers, flags, the first bytes of its text
/// (as BES pushed the first 2 KB) and its attachments' names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailSummary {
    pub mail: MailRef,
    pub message_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub date_unix_s: i64,
    pub flags: MailFlags,
    /// The start of the plain-text body (at most the policy's preview size).
    pub preview: String,
    /// The whole plain-text body's size; `preview` holds all of it when equal.
    pub text_bytes: u64,
    pub attachments: Vec<MailAttachmentInfo>,
}

/// Connector → devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailPush {
    /// A message arrived (or was first seen) in a folder.
    Message(MailSummary),
    /// A message's flags changed on the server.
    Flags { mail: MailRef, flags: MailFlags },
    /// A message left a folder (deleted, or moved: the move's target arrives as `Message`).
    Removed { mail: MailRef },
    /// The folders of the mailbox.
    Folders(Vec<String>),
    /// A whole body, asked for with [`MailCommand::FetchBody`]: inline when short,
    /// otherwise as an encrypted blob.
    Body {
        mail: MailRef,
        text: Option<String>,
        blob: Option<Attachment>,
    },
    /// An attachment's content, asked for with [`MailCommand::FetchAttachment`].
    Attachment {
        mail: MailRef,
        index: u32,
        file: Attachment,
    },
    /// The outcome of a command: `None` when it was carried out, else why not.
    Outcome {
        command_id: Bytes<16>,
        error: Option<String>,
    },
    /// The connector's state for this mailbox, for the user to see ("connected", or why
    /// not: wrong credentials, server unreachable, no such mailbox).
    Status {
        service: Service,
        ok: bool,
        detail: String,
        at_unix_s: i64,
    },
    /// A calendar event as the organisation's CalDAV server has it (new or changed).
    Event(CalendarEvent),
    /// An event was deleted on the server.
    EventRemoved { href: String },
    /// A contact as the organisation's CardDAV server has it (new or changed).
    Contact(ContactCard),
    /// A contact was deleted on the server.
    ContactRemoved { href: String },
}

/// One calendar event (VEVENT), with what a device shows; `href` names it on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarEvent {
    pub href: String,
    pub uid: String,
    pub title: String,
    /// Start and end, seconds since the Unix epoch (UTC).
    pub start_unix_s: i64,
    pub end_unix_s: i64,
    pub location: String,
    /// Attendees' addresses.
    pub attendees: Vec<String>,
}

/// One contact (vCard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactCard {
    pub href: String,
    pub uid: String,
    pub name: String,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
}

/// A new event composed on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    pub title: String,
    pub start_unix_s: i64,
    pub end_unix_s: i64,
    pub location: String,
    pub attendees: Vec<String>,
}

/// A new contact composed on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewContact {
    pub name: String,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
}

/// Which of the connector's links a [`MailPush::Status`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Service {
    /// IMAP and SMTP.
    Mail,
    /// CalDAV and CardDAV.
    Calendar,
}

/// A message to send, composed on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingMail {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub text: String,
    /// Files uploaded by the device as encrypted blobs (keys travel only in here).
    pub attachments: Vec<Attachment>,
    /// For a reply: the message answered (marked \Answered; threading headers from it).
    pub reply_to: Option<MailRef>,
    /// For a forward: the message whose attachments go along.
    pub forward_of: Option<MailRef>,
}

/// Device → connector. Every command carries an id; the connector answers each with
/// [`MailPush::Outcome`] under the same id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailCommand {
    Send {
        id: Bytes<16>,
        mail: Box<OutgoingMail>,
    },
    SetFlags {
        id: Bytes<16>,
        mail: MailRef,
        seen: Option<bool>,
        flagged: Option<bool>,
    },
    Move {
        id: Bytes<16>,
        mail: MailRef,
        folder: String,
    },
    Delete {
        id: Bytes<16>,
        mail: MailRef,
    },
    FetchBody {
        id: Bytes<16>,
        mail: MailRef,
    },
    FetchAttachment {
        id: Bytes<16>,
        mail: MailRef,
        index: u32,
    },
    AddEvent {
        id: Bytes<16>,
        event: NewEvent,
    },
    DeleteEvent {
        id: Bytes<16>,
        href: String,
    },
    AddContact {
        id: Bytes<16>,
        contact: NewContact,
    },
    DeleteContact {
        id: Bytes<16>,
        href: String,
    },
}

impl MailCommand {
    /// Whether the command is for the calendar and contacts servers rather than mail.
    pub fn is_dav(&self) -> bool {
        matches!(
            self,
            Self::AddEvent { .. }
                | Self::DeleteEvent { .. }
                | Self::AddContact { .. }
                | Self::DeleteContact { .. }
        )
    }

    pub fn id(&self) -> Bytes<16> {
        match self {
            Self::Send { id, .. }
            | Self::SetFlags { id, .. }
            | Self::Move { id, .. }
            | Self::Delete { id, .. }
            | Self::FetchBody { id, .. }
            | Self::FetchAttachment { id, .. }
            | Self::AddEvent { id, .. }
            | Self::DeleteEvent { id, .. }
            | Self::AddContact { id, .. }
            | Self::DeleteContact { id, .. } => *id,
        }
    }
}
