//! The device's mail store: what the mail connector pushed into the user's mailbox group
//! ([`MailPush`]), kept in the vault with a local full-text index, so mail can be listed,
//! read and searched without the network and without the server ever seeing a word of it.
//!
//! Everything lives in the vault namespace `mail`. The vault seals values but stores keys in
//! the clear, so keys hold only random-looking tags, ids, dates and fixed names, never a
//! word, subject, address, folder name or file name:
//!
//! ```text
//! salt                              32 random bytes: the key of every tag below
//! m/<short>/<mtag>                  Record: the StoredMail, its token tags, its attachments
//! f/<ftag>/<date-desc>/<short>/<mtag>  (empty): a folder's mails, newest first by key order
//! t/<ttag>/<shard>                  sorted ids ("<short>/<mtag>") of mails holding a token
//! a/<short>/<mtag>/<index>          an attachment's file record (MailPush::Attachment)
//! o/<command id>                    a command's outcome and when it arrived
//! folders                           the folder list of the last MailPush::Folders
//! folder-counts                     folder name → mails stored in it
//! status                            the last MailPush::Status
//! e/<short>/<htag>                  a calendar event (MailPush::Event): StoredEvent
//! c/<short>/<htag>                  a contact (MailPush::Contact): StoredContact
//! ```
//!
//! * `short` is [`MailRef::short_id`] (8 hex digits, what people type); since two mails may
//!   share one, `mtag` (a keyed hash of the MailRef, 16 hex digits) tells them apart.
//! * `mtag`, `ftag` (folder name, 16 hex) and `ttag` (token, 32 hex) are SHA-256 over a
//!   domain label, the vault's random `salt` and the input: without the salt, which is sealed
//!   like every value, nobody can test a guessed word or folder name against a key.
//! * `date-desc` is the message date, inverted so that key order is newest first; `index`
//!   and `<command id>` are hex. `shard` is the first hex digit of the mail's `mtag`: a
//!   token's postings are split over up to 16 rows so that storing one mail rewrites only a
//!   sixteenth of a common word's posting list.
//! * For events and contacts, `short` is [`dav_short_id`] of the href (8 hex digits, the same
//!   on every device) and `htag` a keyed hash of the href (16 hex digits) that tells apart
//!   two hrefs sharing a short id. Events are few enough to be read whole for every listing,
//!   so no key holds their times.
//!
//! What someone holding `vault.db` (but not its data key) learns: how many mails there are
//! per (unnamed) folder and their dates, how many events and contacts, their short ids,
//! how many distinct (unnamed) tokens
//! the index holds and, from row sizes, roughly how common each is and in which of 16 random
//! buckets of mails it occurs. Not which words, nor which mail holds which word.
//!
//! One [`MailStore::apply`] is one vault transaction: the mail, its folder row, its postings
//! and the folder counts change together or not at all, and applying a push again changes
//! nothing (postings are sets). Tokens are runs of Unicode alphanumeric characters,
//! lower-cased (no other normalisation), cut at [`TOKEN_CHARS_MAX`] characters; a mail
//! contributes at most [`TOKENS_PER_MAIL_MAX`] distinct tokens, taken from subject, sender,
//! recipients, attachment names, preview and full text in that order. Search matches whole
//! tokens only (no prefixes), all terms of the query together. Events and contacts mirror
//! the organisation's calendar server: a push replaces the stored copy, a removal deletes it
//! (retention, which is about messages, leaves them alone).

use std::collections::{BTreeMap, BTreeSet};

use data_encoding::HEXLOWER;
use rand_core::{OsRng, RngCore};
use redoubt_mls::Attachment;
use redoubt_mls::mail::{CalendarEvent, ContactCard, MailPush, MailRef, MailSummary, Service};
use redoubt_proto::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::search::terms::add_tokens;
use crate::vault::{Vault, VaultError, VaultTransaction};

/// The vault namespace of the mail store.
const NS: &str = "mail";
/// Longest token indexed or searched, in characters; longer ones are cut to this.
pub const TOKEN_CHARS_MAX: usize = crate::search::TOKEN_CHARS_MAX;
/// Most distinct tokens indexed for one mail.
pub const TOKENS_PER_MAIL_MAX: usize = 2_000;
/// Most distinct terms of one query (the rest are ignored).
const QUERY_TERMS_MAX: usize = 32;
/// Most folders kept from a [`MailPush::Folders`].
const FOLDERS_MAX: usize = 4_096;
/// Longest command error or status detail kept, in bytes.
const DETAIL_BYTES_MAX: usize = 1_024;
/// Shortest id prefix [`MailStore::get`] accepts.
const ID_PREFIX_MIN: usize = 4;
/// Length of [`MailRef::short_id`].
const SHORT_ID_CHARS: usize = 8;

const KEY_SALT: &str = "salt";
const KEY_FOLDERS: &str = "folders";
const KEY_FOLDER_COUNTS: &str = "folder-counts";
const KEY_STATUS: &str = "status";
const KEY_STATUS_CALENDAR: &str = "status/calendar";

fn status_key(service: Service) -> &'static str {
    match service {
        Service::Mail => KEY_STATUS,
        Service::Calendar => KEY_STATUS_CALENDAR,
    }
}
/// Key roots of events and contacts.
const EVENT_ROOT: &str = "e";
const CONTACT_ROOT: &str = "c";
const INBOX: &str = "INBOX";

/// Why the mail store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailStoreError {
    #[error("mail store: {0}")]
    Vault(#[from] VaultError),
    /// A stored value could not be encoded or decoded. `key` holds no content.
    #[error("mail store value {key}: {source}")]
    Codec {
        key: String,
        #[source]
        source: postcard::Error,
    },
    /// A stored key or value is not what this module writes.
    #[error("mail store value {0} is malformed")]
    Malformed(String),
    /// [`MailStore::get`] (or `event`, `contact`) was given something that is not 4 to 8
    /// hex digits.
    #[error("{0:?} is not an id (4 to 8 hex digits)")]
    InvalidId(String),
    /// [`MailStore::get`] (or `event`, `contact`) was given a prefix that more than one
    /// id starts with.
    #[error("id {prefix:?} is ambiguous: it matches {}", .matches.join(", "))]
    Ambiguous { prefix: String, matches: Vec<String> },
}

impl From<MailStoreError> for crate::ClientError {
    fn from(error: MailStoreError) -> Self {
        crate::ClientError::Profile(format!("local mail store: {error}"))
    }
}

/// A mail as this device holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMail {
    /// [`MailRef::short_id`] of `summary.mail`.
    pub id: String,
    pub summary: MailSummary,
    /// The whole plain-text body, once fetched and delivered inline.
    pub full_text: Option<String>,
    /// The whole body as an encrypted blob, once fetched, when it was too long to go inline.
    pub body_blob: Option<Attachment>,
    /// When this device first stored the mail.
    pub received_at_unix_s: i64,
}

/// A calendar event as this device holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// [`dav_short_id`] of `event.href`.
    pub id: String,
    pub event: CalendarEvent,
    /// When this device first stored the event.
    pub received_at_unix_s: i64,
}

/// A contact as this device holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredContact {
    /// [`dav_short_id`] of `contact.href`.
    pub id: String,
    pub contact: ContactCard,
    /// When this device first stored the contact.
    pub received_at_unix_s: i64,
}

/// The short id of an event or contact, for people to type: the first 8 hex digits of
/// SHA-256 over its href (the same on every device).
pub fn dav_short_id(href: &str) -> String {
    let digest = Sha256::digest(href.as_bytes());
    HEXLOWER.encode(&digest[..4])
}

/// What one [`MailStore::apply`] changed; the string is the mail's short id. Events and
/// contacts report [`Applied::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A mail not stored before.
    Stored(String),
    /// A stored mail's summary, flags, body or attachments.
    Updated(String),
    /// A stored mail is gone.
    Removed(String),
    /// Nothing about a stored mail: folders, an outcome, a status, or a push about a mail
    /// this device does not hold.
    Other,
}

/// The mail store over a vault. Cheap to clone (clones share the vault).
#[derive(Clone)]
pub struct MailStore {
    vault: Vault,
}

impl std::fmt::Debug for MailStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailStore").finish_non_exhaustive()
    }
}

/// What is stored under `m/…`.
#[derive(Serialize, Deserialize)]
struct Record {
    mail: StoredMail,
    /// The token tags this mail is posted under, sorted.
    tokens: Vec<String>,
    /// The indexes of the attachments stored for it, sorted.
    attachments: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
struct OutcomeRecord {
    error: Option<String>,
    received_at_unix_s: i64,
}

#[derive(Serialize, Deserialize)]
struct StatusRecord {
    ok: bool,
    detail: String,
    at_unix_s: i64,
}

type Salt = Zeroizing<[u8; 32]>;
/// (key, value) rows of the namespace, keys as text.
type Rows = Vec<(String, Zeroizing<Vec<u8>>)>;

/// A keyed hash: SHA-256 over a label, the salt and length-prefixed parts, first `bytes` in hex.
fn tag(salt: &Salt, label: &str, parts: &[&[u8]], bytes: usize) -> String {
    let mut hash = Sha256::new();
    hash.update(b"redoubt mail store v1\0");
    hash.update(label.as_bytes());
    hash.update([0]);
    hash.update(salt.as_slice());
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    HEXLOWER.encode(digest.get(..bytes).unwrap_or(&digest))
}

fn folder_tag(salt: &Salt, folder: &str) -> String {
    tag(salt, "folder", &[folder.as_bytes()], 8)
}

fn token_tag(salt: &Salt, token: &str) -> String {
    tag(salt, "token", &[token.as_bytes()], 16)
}

/// Where one mail lives: its short id and keyed tag.
struct Slot {
    short: String,
    mtag: String,
}

impl Slot {
    fn of(salt: &Salt, mail: &MailRef) -> Self {
        let mtag = tag(
            salt,
            "mail",
            &[
                mail.folder.as_bytes(),
                &mail.uid_validity.to_be_bytes(),
                &mail.uid.to_be_bytes(),
            ],
            8,
        );
        Self {
            short: mail.short_id(),
            mtag,
        }
    }

    /// `<short>/<mtag>`: what postings and folder rows name a mail by.
    fn id(&self) -> String {
        format!("{}/{}", self.short, self.mtag)
    }

    fn shard(&self) -> &str {
        self.mtag.get(..1).unwrap_or("0")
    }
}

fn record_key(id: &str) -> String {
    format!("m/{id}")
}

/// Where an event (`root` [`EVENT_ROOT`]) or a contact ([`CONTACT_ROOT`]) lives.
fn dav_key(salt: &Salt, root: &str, href: &str) -> String {
    format!(
        "{root}/{}/{}",
        dav_short_id(href),
        tag(salt, root, &[href.as_bytes()], 8)
    )
}

fn attachment_key(id: &str, index: u32) -> String {
    format!("a/{id}/{index:08x}")
}

fn outcome_key(command_id: &Bytes<16>) -> String {
    format!("o/{}", command_id.to_hex())
}

/// Dates in key order newest first: i64 mapped order-preservingly onto u64, then inverted.
fn date_desc(date_unix_s: i64) -> String {
    format!("{:016x}", !(date_unix_s.cast_unsigned() ^ (1 << 63)))
}

fn date_from_desc(hex: &str) -> Option<i64> {
    if hex.len() != 16 {
        return None;
    }
    let desc = u64::from_str_radix(hex, 16).ok()?;
    Some((!desc ^ (1 << 63)).cast_signed())
}

fn folder_row_key(salt: &Salt, summary: &MailSummary, id: &str) -> String {
    format!(
        "f/{}/{}/{id}",
        folder_tag(salt, &summary.mail.folder),
        date_desc(summary.date_unix_s)
    )
}

/// The mail id at the end of a folder row key, with the row's date.
fn parse_folder_row(key: &str) -> Option<(i64, &str)> {
    let mut parts = key.strip_prefix("f/")?.splitn(3, '/');
    let _folder = parts.next()?;
    let date = date_from_desc(parts.next()?)?;
    Some((date, parts.next()?))
}

/// The words a mail is found by.
fn mail_tokens(mail: &StoredMail) -> BTreeSet<String> {
    let summary = &mail.summary;
    let mut tokens = BTreeSet::new();
    let texts = std::iter::once(summary.subject.as_str())
        .chain(std::iter::once(summary.from.as_str()))
        .chain(summary.to.iter().map(String::as_str))
        .chain(summary.cc.iter().map(String::as_str))
        .chain(summary.attachments.iter().map(|a| a.name.as_str()))
        .chain(std::iter::once(summary.preview.as_str()))
        .chain(mail.full_text.as_deref());
    for text in texts {
        add_tokens(text, &mut tokens, TOKENS_PER_MAIL_MAX);
        if tokens.len() >= TOKENS_PER_MAIL_MAX {
            // Later text may still repeat known tokens, but can add nothing new.
            break;
        }
    }
    tokens
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn truncated(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

fn encode<T: Serialize>(key: &str, value: &T) -> Result<Zeroizing<Vec<u8>>, MailStoreError> {
    postcard::to_stdvec(value)
        .map(Zeroizing::new)
        .map_err(|source| MailStoreError::Codec {
            key: key.to_owned(),
            source,
        })
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, MailStoreError> {
    postcard::from_bytes(bytes).map_err(|source| MailStoreError::Codec {
        key: key.to_owned(),
        source,
    })
}

fn salt_from(bytes: &[u8]) -> Result<Salt, MailStoreError> {
    let salt: [u8; 32] = bytes
        .try_into()
        .map_err(|_| MailStoreError::Malformed(KEY_SALT.into()))?;
    Ok(Zeroizing::new(salt))
}

/// Typed reads and writes inside one vault transaction.
struct Tx<'a, 'b>(&'a VaultTransaction<'b>);

impl Tx<'_, '_> {
    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, MailStoreError> {
        self.0.get(NS, key)?.map(|bytes| decode(key, &bytes)).transpose()
    }

    fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), MailStoreError> {
        Ok(self.0.put(NS, key, &encode(key, value)?)?)
    }

    fn delete(&self, key: &str) -> Result<bool, MailStoreError> {
        Ok(self.0.delete(NS, key)?)
    }

    /// The salt, made on first use.
    fn salt(&self) -> Result<Salt, MailStoreError> {
        if let Some(bytes) = self.0.get(NS, KEY_SALT)? {
            return salt_from(&bytes);
        }
        let mut salt = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(salt.as_mut());
        self.0.put(NS, KEY_SALT, salt.as_slice())?;
        Ok(salt)
    }

    fn post(&self, ttag: &str, slot: &Slot) -> Result<(), MailStoreError> {
        let key = format!("t/{ttag}/{}", slot.shard());
        let mut ids: Vec<String> = self.get(&key)?.unwrap_or_default();
        let id = slot.id();
        if let Err(at) = ids.binary_search(&id) {
            ids.insert(at, id);
            self.put(&key, &ids)?;
        }
        Ok(())
    }

    fn unpost(&self, ttag: &str, slot: &Slot) -> Result<(), MailStoreError> {
        let key = format!("t/{ttag}/{}", slot.shard());
        let Some(mut ids) = self.get::<Vec<String>>(&key)? else {
            return Ok(());
        };
        if let Ok(at) = ids.binary_search(&slot.id()) {
            ids.remove(at);
            if ids.is_empty() {
                self.delete(&key)?;
            } else {
                self.put(&key, &ids)?;
            }
        }
        Ok(())
    }

    /// Brings the mail's postings in line with its current text; only the difference is
    /// written, so re-indexing unchanged text writes nothing.
    fn reindex(&self, salt: &Salt, slot: &Slot, record: &mut Record) -> Result<(), MailStoreError> {
        let new: BTreeSet<String> = mail_tokens(&record.mail)
            .iter()
            .map(|token| token_tag(salt, token))
            .collect();
        let old: BTreeSet<String> = record.tokens.iter().cloned().collect();
        for ttag in old.difference(&new) {
            self.unpost(ttag, slot)?;
        }
        for ttag in new.difference(&old) {
            self.post(ttag, slot)?;
        }
        record.tokens = new.into_iter().collect();
        Ok(())
    }

    fn count_folder(&self, folder: &str, added: bool) -> Result<(), MailStoreError> {
        let mut counts: BTreeMap<String, u64> = self.get(KEY_FOLDER_COUNTS)?.unwrap_or_default();
        if added {
            *counts.entry(folder.to_owned()).or_default() += 1;
        } else if let Some(count) = counts.get_mut(folder) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(folder);
            }
        }
        self.put(KEY_FOLDER_COUNTS, &counts)
    }

    /// Deletes a stored mail with its folder row, postings and attachments.
    fn remove(&self, salt: &Salt, slot: &Slot, record: &Record) -> Result<(), MailStoreError> {
        let id = slot.id();
        for ttag in &record.tokens {
            self.unpost(ttag, slot)?;
        }
        for index in &record.attachments {
            self.delete(&attachment_key(&id, *index))?;
        }
        self.delete(&folder_row_key(salt, &record.mail.summary, &id))?;
        self.count_folder(&record.mail.summary.mail.folder, false)?;
        self.delete(&record_key(&id))?;
        Ok(())
    }

    fn apply(&self, push: &MailPush, received_at_unix_s: i64) -> Result<Applied, MailStoreError> {
        match push {
            MailPush::Message(summary) => {
                let salt = self.salt()?;
                let slot = Slot::of(&salt, &summary.mail);
                let id = slot.id();
                let key = record_key(&id);
                let (mut record, applied) = match self.get::<Record>(&key)? {
                    Some(mut record) => {
                        let old_row = folder_row_key(&salt, &record.mail.summary, &id);
                        if old_row != folder_row_key(&salt, summary, &id) {
                            self.delete(&old_row)?;
                        }
                        record.mail.summary = summary.clone();
                        (record, Applied::Updated(slot.short.clone()))
                    }
                    None => {
                        self.count_folder(&summary.mail.folder, true)?;
                        let record = Record {
                            mail: StoredMail {
                                id: slot.short.clone(),
                                summary: summary.clone(),
                                full_text: None,
                                body_blob: None,
                                received_at_unix_s,
                            },
                            tokens: Vec::new(),
                            attachments: Vec::new(),
                        };
                        (record, Applied::Stored(slot.short.clone()))
                    }
                };
                self.put(&folder_row_key(&salt, summary, &id), &())?;
                self.reindex(&salt, &slot, &mut record)?;
                self.put(&key, &record)?;
                Ok(applied)
            }
            MailPush::Flags { mail, flags } => self.update(mail, |_, _, record| {
                record.mail.summary.flags = *flags;
                Ok(())
            }),
            MailPush::Removed { mail } => {
                let salt = self.salt()?;
                let slot = Slot::of(&salt, mail);
                let Some(record) = self.get::<Record>(&record_key(&slot.id()))? else {
                    return Ok(Applied::Other);
                };
                self.remove(&salt, &slot, &record)?;
                Ok(Applied::Removed(slot.short))
            }
            MailPush::Folders(folders) => {
                let mut seen = BTreeSet::new();
                let folders: Vec<&String> = folders
                    .iter()
                    .filter(|folder| seen.insert(folder.as_str()))
                    .take(FOLDERS_MAX)
                    .collect();
                self.put(KEY_FOLDERS, &folders)?;
                Ok(Applied::Other)
            }
            MailPush::Body { mail, text, blob } => self.update(mail, |salt, slot, record| {
                if let Some(text) = text {
                    record.mail.full_text = Some(text.clone());
                }
                if let Some(blob) = blob {
                    record.mail.body_blob = Some(blob.clone());
                }
                self.reindex(salt, slot, record)
            }),
            MailPush::Attachment { mail, index, file } => {
                let salt = self.salt()?;
                let slot = Slot::of(&salt, mail);
                let key = record_key(&slot.id());
                let Some(mut record) = self.get::<Record>(&key)? else {
                    return Ok(Applied::Other);
                };
                // Only the attachments the summary lists: bounds what one mail can hold.
                if usize::try_from(*index).map_or(true, |i| i >= record.mail.summary.attachments.len()) {
                    return Ok(Applied::Other);
                }
                self.put(&attachment_key(&slot.id(), *index), file)?;
                if let Err(at) = record.attachments.binary_search(index) {
                    record.attachments.insert(at, *index);
                    self.put(&key, &record)?;
                }
                Ok(Applied::Updated(slot.short))
            }
            MailPush::Outcome { command_id, error } => {
                let record = OutcomeRecord {
                    error: error.as_deref().map(|e| truncated(e, DETAIL_BYTES_MAX)),
                    received_at_unix_s,
                };
                self.put(&outcome_key(command_id), &record)?;
                Ok(Applied::Other)
            }
            MailPush::Status {
                service,
                ok,
                detail,
                at_unix_s,
            } => {
                let record = StatusRecord {
                    ok: *ok,
                    detail: truncated(detail, DETAIL_BYTES_MAX),
                    at_unix_s: *at_unix_s,
                };
                self.put(status_key(*service), &record)?;
                Ok(Applied::Other)
            }
            MailPush::Event(event) => {
                let key = dav_key(&self.salt()?, EVENT_ROOT, &event.href);
                let stored = match self.get::<StoredEvent>(&key)? {
                    Some(old) if old.event == *event => return Ok(Applied::Other),
                    Some(old) => StoredEvent {
                        event: event.clone(),
                        ..old
                    },
                    None => StoredEvent {
                        id: dav_short_id(&event.href),
                        event: event.clone(),
                        received_at_unix_s,
                    },
                };
                self.put(&key, &stored)?;
                Ok(Applied::Other)
            }
            MailPush::Contact(contact) => {
                let key = dav_key(&self.salt()?, CONTACT_ROOT, &contact.href);
                let stored = match self.get::<StoredContact>(&key)? {
                    Some(old) if old.contact == *contact => return Ok(Applied::Other),
                    Some(old) => StoredContact {
                        contact: contact.clone(),
                        ..old
                    },
                    None => StoredContact {
                        id: dav_short_id(&contact.href),
                        contact: contact.clone(),
                        received_at_unix_s,
                    },
                };
                self.put(&key, &stored)?;
                Ok(Applied::Other)
            }
            MailPush::EventRemoved { href } => {
                self.delete(&dav_key(&self.salt()?, EVENT_ROOT, href))?;
                Ok(Applied::Other)
            }
            MailPush::ContactRemoved { href } => {
                self.delete(&dav_key(&self.salt()?, CONTACT_ROOT, href))?;
                Ok(Applied::Other)
            }
        }
    }

    /// Changes a stored mail with `change` and writes it back; a mail not stored is ignored.
    fn update(
        &self,
        mail: &MailRef,
        change: impl FnOnce(&Salt, &Slot, &mut Record) -> Result<(), MailStoreError>,
    ) -> Result<Applied, MailStoreError> {
        let salt = self.salt()?;
        let slot = Slot::of(&salt, mail);
        let key = record_key(&slot.id());
        let Some(mut record) = self.get::<Record>(&key)? else {
            return Ok(Applied::Other);
        };
        change(&salt, &slot, &mut record)?;
        self.put(&key, &record)?;
        Ok(Applied::Updated(slot.short))
    }
}

impl MailStore {
    pub fn new(vault: Vault) -> Self {
        Self { vault }
    }

    /// Runs `f` in one vault transaction, keeping its error as it was.
    fn transaction<T>(
        &self,
        f: impl FnOnce(&Tx<'_, '_>) -> Result<T, MailStoreError>,
    ) -> Result<T, MailStoreError> {
        let mut failure = None;
        let result = self.vault.transaction(|tx| {
            f(&Tx(tx)).map_err(|error| {
                failure = Some(error);
                VaultError::Codec("mail store transaction abandoned".into())
            })
        });
        match result {
            Ok(value) => Ok(value),
            Err(error) => Err(failure.unwrap_or(MailStoreError::Vault(error))),
        }
    }

    fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, MailStoreError> {
        self.vault
            .get(NS, key)?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }

    /// The salt, or `None` if nothing was ever stored.
    fn salt(&self) -> Result<Option<Salt>, MailStoreError> {
        self.vault
            .get(NS, KEY_SALT)?
            .map(|bytes| salt_from(&bytes))
            .transpose()
    }

    /// (key, value) rows under `prefix`, keys as text.
    fn rows(&self, prefix: &str) -> Result<Rows, MailStoreError> {
        self.vault
            .get_by_prefix(NS, prefix)?
            .into_iter()
            .map(|(key, value)| {
                String::from_utf8(key)
                    .map(|key| (key, value))
                    .map_err(|e| MailStoreError::Malformed(HEXLOWER.encode(e.as_bytes())))
            })
            .collect()
    }

    /// The mails named by `ids` ("<short>/<mtag>") that are still stored.
    fn load(&self, ids: impl IntoIterator<Item = String>) -> Result<Vec<StoredMail>, MailStoreError> {
        let mut mails = Vec::new();
        for id in ids {
            if let Some(record) = self.read::<Record>(&record_key(&id))? {
                mails.push(record.mail);
            }
        }
        Ok(mails)
    }

    /// Applies one push from the mail connector, in one vault transaction. Applying the
    /// same push again leaves the same state.
    pub fn apply(&self, push: &MailPush, received_at_unix_s: i64) -> Result<Applied, MailStoreError> {
        self.transaction(|tx| tx.apply(push, received_at_unix_s))
    }

    /// The folders of the last [`MailPush::Folders`] in its order, then any other folder a
    /// stored mail is in, by name.
    pub fn folders(&self) -> Result<Vec<String>, MailStoreError> {
        let mut folders: Vec<String> = self.read(KEY_FOLDERS)?.unwrap_or_default();
        let counts: BTreeMap<String, u64> = self.read(KEY_FOLDER_COUNTS)?.unwrap_or_default();
        let known: BTreeSet<String> = folders.iter().cloned().collect();
        folders.extend(counts.into_keys().filter(|folder| !known.contains(folder)));
        Ok(folders)
    }

    /// The mails of `folder` (`None`: INBOX), newest first.
    pub fn list(&self, folder: Option<&str>) -> Result<Vec<StoredMail>, MailStoreError> {
        let Some(salt) = self.salt()? else {
            return Ok(Vec::new());
        };
        let prefix = format!("f/{}/", folder_tag(&salt, folder.unwrap_or(INBOX)));
        let ids = self
            .rows(&prefix)?
            .into_iter()
            .map(|(key, _)| {
                parse_folder_row(&key)
                    .map(|(_, id)| id.to_owned())
                    .ok_or(MailStoreError::Malformed(key))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.load(ids)
    }

    /// The one value under `<root>/<prefix>…`, where `id` (4 to 8 hex digits) is the prefix
    /// of a short id.
    fn by_id<T: DeserializeOwned>(
        &self,
        root: &str,
        id: &str,
        id_of: impl Fn(&T) -> &str,
    ) -> Result<Option<T>, MailStoreError> {
        let prefix = id.trim().to_ascii_lowercase();
        if !(ID_PREFIX_MIN..=SHORT_ID_CHARS).contains(&prefix.len())
            || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(MailStoreError::InvalidId(id.to_owned()));
        }
        let mut found = self
            .rows(&format!("{root}/{prefix}"))?
            .into_iter()
            .map(|(key, value)| decode::<T>(&key, &value))
            .collect::<Result<Vec<_>, _>>()?;
        match found.len() {
            0 | 1 => Ok(found.pop()),
            _ => Err(MailStoreError::Ambiguous {
                prefix,
                matches: found.iter().map(|v| id_of(v).to_owned()).collect(),
            }),
        }
    }

    /// The mail whose short id is `id` or starts with it (at least 4 hex digits).
    pub fn get(&self, id: &str) -> Result<Option<StoredMail>, MailStoreError> {
        Ok(self
            .by_id("m", id, |record: &Record| &record.mail.id)?
            .map(|record| record.mail))
    }

    /// The events that overlap `[from, to)` (either end open when `None`; an event without
    /// duration counts from its start), by start time, then title.
    pub fn events(&self, from: Option<i64>, to: Option<i64>) -> Result<Vec<StoredEvent>, MailStoreError> {
        let mut events = Vec::new();
        for (key, value) in self.rows(&format!("{EVENT_ROOT}/"))? {
            let stored: StoredEvent = decode(&key, &value)?;
            let (start, end) = (stored.event.start_unix_s, stored.event.end_unix_s);
            let after_from = from.is_none_or(|from| end > from || start >= from);
            let before_to = to.is_none_or(|to| start < to);
            if after_from && before_to {
                events.push(stored);
            }
        }
        events.sort_by(|a, b| {
            (a.event.start_unix_s, &a.event.title, &a.id).cmp(&(b.event.start_unix_s, &b.event.title, &b.id))
        });
        Ok(events)
    }

    /// The event whose short id is `id` or starts with it (at least 4 hex digits).
    pub fn event(&self, id: &str) -> Result<Option<StoredEvent>, MailStoreError> {
        self.by_id(EVENT_ROOT, id, |stored: &StoredEvent| &stored.id)
    }

    /// Every contact, by name (ignoring case), then id.
    pub fn contacts(&self) -> Result<Vec<StoredContact>, MailStoreError> {
        let mut contacts = self
            .rows(&format!("{CONTACT_ROOT}/"))?
            .into_iter()
            .map(|(key, value)| decode::<StoredContact>(&key, &value))
            .collect::<Result<Vec<_>, _>>()?;
        contacts.sort_by_cached_key(|c| (c.contact.name.to_lowercase(), c.id.clone()));
        Ok(contacts)
    }

    /// The contact whose short id is `id` or starts with it (at least 4 hex digits).
    pub fn contact(&self, id: &str) -> Result<Option<StoredContact>, MailStoreError> {
        self.by_id(CONTACT_ROOT, id, |stored: &StoredContact| &stored.id)
    }

    /// The mails holding every term of `query` (whole words, any case) in subject, sender,
    /// recipients, attachment names, preview or fetched text; newest first. A query without
    /// any word finds nothing.
    pub fn search(&self, query: &str) -> Result<Vec<StoredMail>, MailStoreError> {
        let mut terms = BTreeSet::new();
        add_tokens(query, &mut terms, QUERY_TERMS_MAX);
        let Some(salt) = self.salt()? else {
            return Ok(Vec::new());
        };
        let mut matching: Option<BTreeSet<String>> = None;
        for term in &terms {
            let mut ids = BTreeSet::new();
            for (key, value) in self.rows(&format!("t/{}/", token_tag(&salt, term)))? {
                ids.extend(decode::<Vec<String>>(&key, &value)?);
            }
            let narrowed = match matching {
                None => ids,
                Some(so_far) => so_far.intersection(&ids).cloned().collect(),
            };
            if narrowed.is_empty() {
                return Ok(Vec::new());
            }
            matching = Some(narrowed);
        }
        let mut mails = self.load(matching.unwrap_or_default())?;
        mails.sort_by(|a, b| {
            b.summary
                .date_unix_s
                .cmp(&a.summary.date_unix_s)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(mails)
    }

    /// The outcome of the command `command_id`: `None` if none arrived yet, `Some(None)` if
    /// it was carried out, `Some(Some(why))` if not.
    pub fn outcome(&self, command_id: &Bytes<16>) -> Result<Option<Option<String>>, MailStoreError> {
        Ok(self
            .read::<OutcomeRecord>(&outcome_key(command_id))?
            .map(|outcome| outcome.error))
    }

    /// The file record of attachment `index` of `mail`, if it was fetched.
    pub fn attachment(&self, mail: &MailRef, index: u32) -> Result<Option<Attachment>, MailStoreError> {
        let Some(salt) = self.salt()? else {
            return Ok(None);
        };
        self.read(&attachment_key(&Slot::of(&salt, mail).id(), index))
    }

    /// The connector's last status of `service`: (ok, detail, when).
    pub fn status(&self, service: Service) -> Result<Option<(bool, String, i64)>, MailStoreError> {
        Ok(self
            .read::<StatusRecord>(status_key(service))?
            .map(|status| (status.ok, status.detail, status.at_unix_s)))
    }

    /// Retention: deletes every mail dated before `unix_s` with its postings, body and
    /// attachments, and command outcomes received before it, in one transaction. Returns how
    /// many mails went.
    pub fn delete_before(&self, unix_s: i64) -> Result<u64, MailStoreError> {
        let Some(salt) = self.salt()? else {
            return Ok(0);
        };
        let mut old_mails = Vec::new();
        for (key, _) in self.rows("f/")? {
            let (date, id) = parse_folder_row(&key).ok_or_else(|| MailStoreError::Malformed(key.clone()))?;
            if date < unix_s {
                old_mails.push(id.to_owned());
            }
        }
        let mut old_outcomes = Vec::new();
        for (key, value) in self.rows("o/")? {
            if decode::<OutcomeRecord>(&key, &value)?.received_at_unix_s < unix_s {
                old_outcomes.push(key);
            }
        }
        if old_mails.is_empty() && old_outcomes.is_empty() {
            return Ok(0);
        }
        self.transaction(|tx| {
            let mut deleted = 0;
            for id in &old_mails {
                // Read again inside the transaction: the mail may have changed since.
                let Some(record) = tx.get::<Record>(&record_key(id))? else {
                    continue;
                };
                if record.mail.summary.date_unix_s >= unix_s {
                    continue;
                }
                let slot = Slot::of(&salt, &record.mail.summary.mail);
                tx.remove(&salt, &slot, &record)?;
                deleted += 1;
            }
            for key in &old_outcomes {
                tx.delete(key)?;
            }
            Ok(deleted)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;
    use std::path::Path;

    use redoubt_mls::mail::{MailAttachmentInfo, MailFlags};

    use super::*;
    use crate::vault::{DataKey, LockedVault};

    fn open_vault(dir: &Path) -> Vault {
        LockedVault::open(&dir.join("vault.db"))
            .unwrap()
            .unlock(DataKey::generate())
            .unwrap()
    }

    fn store() -> (tempfile::TempDir, MailStore) {
        let dir = tempfile::tempdir().unwrap();
        let vault = open_vault(dir.path());
        (dir, MailStore::new(vault))
    }

    fn mail_ref(folder: &str, uid: u32) -> MailRef {
        MailRef {
            folder: folder.into(),
            uid_validity: 7,
            uid,
        }
    }

    fn summary(mail: MailRef, subject: &str, date: i64) -> MailSummary {
        MailSummary {
            mail,
            message_id: Some("<abc@example.com>".into()),
            in_reply_to: None,
            references: vec![],
            from: "Alice Example <alice@example.com>".into(),
            to: vec!["bob@example.org".into()],
            cc: vec!["Carol <carol@example.net>".into()],
            subject: subject.into(),
            date_unix_s: date,
            flags: MailFlags::default(),
            preview: "Hello Bob, see the numbers below.".into(),
            text_bytes: 33,
            attachments: vec![MailAttachmentInfo {
                name: "Forecast-Q3.xlsx".into(),
                content_type: "application/vnd.ms-excel".into(),
                bytes: 1234,
            }],
        }
    }

    fn file(name: &str) -> Attachment {
        Attachment {
            name: name.into(),
            bytes: 10,
            sha256: [1; 32],
            key: [2; 32],
            blob_id: redoubt_proto::BlobId(Bytes([3; 16])),
            chunk_count: 1,
            sent_at_unix_s: 5,
        }
    }

    fn ids(mails: &[StoredMail]) -> Vec<String> {
        mails.iter().map(|mail| mail.id.clone()).collect()
    }

    /// Every (key, decrypted value) of the mail namespace.
    fn dump(store: &MailStore) -> Vec<(String, Vec<u8>)> {
        store
            .rows("")
            .unwrap()
            .into_iter()
            .map(|(key, value)| (key, value.to_vec()))
            .collect()
    }

    #[test]
    fn a_message_is_listed_got_and_found() {
        let (_dir, store) = store();
        let mail = mail_ref("INBOX", 1);
        let short = mail.short_id();
        let applied = store
            .apply(
                &MailPush::Message(summary(mail.clone(), "Quarterly budget", 100)),
                1000,
            )
            .unwrap();
        assert_eq!(applied, Applied::Stored(short.clone()));

        let listed = store.list(None).unwrap();
        assert_eq!(ids(&listed), vec![short.clone()]);
        assert_eq!(listed[0].summary.subject, "Quarterly budget");
        assert_eq!(listed[0].received_at_unix_s, 1000);
        assert_eq!(store.list(Some("INBOX")).unwrap().len(), 1);
        assert!(store.list(Some("Sent")).unwrap().is_empty());

        assert_eq!(store.get(&short).unwrap().unwrap().summary.mail, mail);
        assert_eq!(store.get(&short[..4]).unwrap().unwrap().id, short);
        assert_eq!(store.get(&short.to_uppercase()).unwrap().unwrap().id, short);
        assert!(store.get("ffffffff").unwrap().is_none() || short == "ffffffff");
        for bad in ["abc", "", "xyz12345", "123456789"] {
            assert!(
                matches!(store.get(bad), Err(MailStoreError::InvalidId(_))),
                "{bad:?}"
            );
        }

        assert_eq!(ids(&store.search("budget").unwrap()), vec![short.clone()]);
        assert!(store.search("nothing-like-it").unwrap().is_empty());
        assert!(store.search("").unwrap().is_empty());
        assert!(store.search("  ,;  ").unwrap().is_empty());
        assert_eq!(store.folders().unwrap(), vec!["INBOX".to_owned()]);
    }

    #[test]
    fn an_empty_store_answers_empty() {
        let (_dir, store) = store();
        assert!(store.list(None).unwrap().is_empty());
        assert!(store.get("abcd").unwrap().is_none());
        assert!(store.search("anything").unwrap().is_empty());
        assert!(store.folders().unwrap().is_empty());
        assert_eq!(store.status(Service::Mail).unwrap(), None);
        assert_eq!(store.outcome(&Bytes([0; 16])).unwrap(), None);
        assert_eq!(store.attachment(&mail_ref("INBOX", 1), 0).unwrap(), None);
        assert_eq!(store.delete_before(i64::MAX).unwrap(), 0);
    }

    #[test]
    fn search_needs_every_term_ignores_case_and_covers_every_field() {
        let (_dir, store) = store();
        let first = mail_ref("INBOX", 1);
        let second = mail_ref("Archive", 2);
        let mut other = summary(second.clone(), "Überweisung für Привет", 200);
        other.from = "dave@corp.test".into();
        other.to = vec![];
        other.cc = vec![];
        other.preview = "budget-2024 attached".into();
        other.attachments[0].name = "Receipt_scan.PDF".into();
        store
            .apply(
                &MailPush::Message(summary(first.clone(), "Quarterly budget", 100)),
                1,
            )
            .unwrap();
        store.apply(&MailPush::Message(other), 1).unwrap();
        let (a, b) = (first.short_id(), second.short_id());

        // Newest first when several match.
        assert_eq!(ids(&store.search("budget").unwrap()), vec![b.clone(), a.clone()]);
        assert_eq!(ids(&store.search("QUARTERLY Budget").unwrap()), vec![a.clone()]);
        assert!(
            store.search("quarterly attached").unwrap().is_empty(),
            "AND, not OR"
        );
        assert_eq!(ids(&store.search("budget 2024").unwrap()), vec![b.clone()]);
        // Sender, recipients, cc, attachment names, preview.
        assert_eq!(ids(&store.search("alice@example.com").unwrap()), vec![a.clone()]);
        assert_eq!(ids(&store.search("bob").unwrap()), vec![a.clone()]);
        assert_eq!(ids(&store.search("Carol").unwrap()), vec![a.clone()]);
        assert_eq!(ids(&store.search("forecast").unwrap()), vec![a.clone()]);
        assert_eq!(ids(&store.search("receipt pdf").unwrap()), vec![b.clone()]);
        assert_eq!(ids(&store.search("numbers").unwrap()), vec![a.clone()]);
        assert_eq!(ids(&store.search("dave").unwrap()), vec![b.clone()]);
        // Unicode letters are word characters and lower-case properly.
        assert_eq!(ids(&store.search("ÜBERWEISUNG").unwrap()), vec![b.clone()]);
        assert_eq!(ids(&store.search("привет FÜR").unwrap()), vec![b.clone()]);
        // Whole words only.
        assert!(store.search("budg").unwrap().is_empty());
        assert_eq!(
            store.folders().unwrap(),
            vec!["Archive".to_owned(), "INBOX".to_owned()]
        );
        assert_eq!(ids(&store.list(Some("Archive")).unwrap()), vec![b]);
    }

    #[test]
    fn list_is_newest_first() {
        let (_dir, store) = store();
        for (uid, date) in [(1, 300), (2, -50), (3, 1_700_000_000), (4, 0)] {
            store
                .apply(&MailPush::Message(summary(mail_ref("INBOX", uid), "s", date)), 1)
                .unwrap();
        }
        let dates: Vec<i64> = store
            .list(None)
            .unwrap()
            .iter()
            .map(|m| m.summary.date_unix_s)
            .collect();
        assert_eq!(dates, vec![1_700_000_000, 300, 0, -50]);
        let dates: Vec<i64> = store
            .search("bob")
            .unwrap()
            .iter()
            .map(|m| m.summary.date_unix_s)
            .collect();
        assert_eq!(dates, vec![1_700_000_000, 300, 0, -50]);
    }

    #[test]
    fn a_redelivered_message_changes_nothing() {
        let (_dir, store) = store();
        let mail = mail_ref("INBOX", 1);
        let push = MailPush::Message(summary(mail.clone(), "Budget budget BUDGET", 100));
        store.apply(&push, 1000).unwrap();
        let before = dump(&store);
        assert_eq!(
            store.apply(&push, 2000).unwrap(),
            Applied::Updated(mail.short_id())
        );
        assert_eq!(dump(&store), before, "same rows, same values");
        assert_eq!(store.search("budget").unwrap().len(), 1);
        assert_eq!(store.list(None).unwrap().len(), 1);
        assert_eq!(
            store.get(&mail.short_id()).unwrap().unwrap().received_at_unix_s,
            1000
        );
    }

    #[test]
    fn a_changed_message_is_reindexed_and_keeps_its_body() {
        let (_dir, store) = store();
        let mail = mail_ref("INBOX", 1);
        store
            .apply(&MailPush::Message(summary(mail.clone(), "Old subject", 100)), 1)
            .unwrap();
        store
            .apply(
                &MailPush::Body {
                    mail: mail.clone(),
                    text: Some("the entire zebra text".into()),
                    blob: None,
                },
                1,
            )
            .unwrap();
        store
            .apply(&MailPush::Message(summary(mail.clone(), "New heading", 50)), 1)
            .unwrap();
        assert!(store.search("old").unwrap().is_empty());
        assert_eq!(store.search("heading").unwrap().len(), 1);
        assert_eq!(
            store.search("zebra").unwrap().len(),
            1,
            "full text kept and indexed"
        );
        let stored = store.get(&mail.short_id()).unwrap().unwrap();
        assert_eq!(stored.full_text.as_deref(), Some("the entire zebra text"));
        assert_eq!(stored.summary.date_unix_s, 50);
        // One folder row: the one under the old date went.
        assert_eq!(store.rows("f/").unwrap().len(), 1);
        assert_eq!(store.list(None).unwrap().len(), 1);
    }

    #[test]
    fn flags_change_a_known_mail_and_ignore_an_unknown_one() {
        let (_dir, store) = store();
        let mail = mail_ref("INBOX", 1);
        store
            .apply(&MailPush::Message(summary(mail.clone(), "s", 1)), 1)
            .unwrap();
        let flags = MailFlags {
            seen: true,
            flagged: true,
            answered: false,
        };
        assert_eq!(
            store
                .apply(
                    &MailPush::Flags {
                        mail: mail.clone(),
                        flags
                    },
                    2
                )
                .unwrap(),
            Applied::Updated(mail.short_id())
        );
        assert_eq!(store.get(&mail.short_id()).unwrap().unwrap().summary.flags, flags);
        let before = dump(&store);
        assert_eq!(
            store
                .apply(
                    &MailPush::Flags {
                        mail: mail_ref("INBOX", 2),
                        flags
                    },
                    2
                )
                .unwrap(),
            Applied::Other
        );
        assert_eq!(dump(&store), before);
    }

    #[test]
    fn removed_takes_everything_of_the_mail_along() {
        let (_dir, store) = store();
        let mail = mail_ref("INBOX", 1);
        let kept = mail_ref("INBOX", 2);
        store
            .apply(&MailPush::Message(summary(kept.clone(), "unrelated words", 5)), 1)
            .unwrap();
        let rows_with_only_kept: Vec<String> = dump(&store).into_iter().map(|(k, _)| k).collect();
        store
            .apply(
                &MailPush::Message(summary(mail.clone(), "Quarterly budget", 1)),
                1,
            )
            .unwrap();
        store
            .apply(
                &MailPush::Body {
                    mail: mail.clone(),
                    text: None,
                    blob: Some(file("body")),
                },
                1,
            )
            .unwrap();
        store
            .apply(
                &MailPush::Attachment {
                    mail: mail.clone(),
                    index: 0,
                    file: file("Forecast-Q3.xlsx"),
                },
                1,
            )
            .unwrap();
        assert_eq!(
            store.attachment(&mail, 0).unwrap().unwrap().name,
            "Forecast-Q3.xlsx"
        );

        assert_eq!(
            store.apply(&MailPush::Removed { mail: mail.clone() }, 2).unwrap(),
            Applied::Removed(mail.short_id())
        );
        assert!(store.get(&mail.short_id()).unwrap().is_none());
        assert_eq!(ids(&store.list(None).unwrap()), vec![kept.short_id()]);
        assert!(store.search("quarterly").unwrap().is_empty());
        assert_eq!(ids(&store.search("bob").unwrap()), vec![kept.short_id()]);
        assert_eq!(store.attachment(&mail, 0).unwrap(), None);
        let rows: Vec<String> = dump(&store).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            rows, rows_with_only_kept,
            "no posting, body or attachment left behind"
        );
        // Again: nothing to remove.
        assert_eq!(
            store.apply(&MailPush::Removed { mail: mail.clone() }, 2).unwrap(),
            Applied::Other
        );
        store.apply(&MailPush::Removed { mail: kept }, 2).unwrap();
        assert!(store.folders().unwrap().is_empty(), "no mail left in INBOX");
    }

    #[test]
    fn a_body_adds_searchable_text_and_a_blob_is_kept() {
        let (_dir, store) = store();
        let mail = mail_ref("INBOX", 1);
        let short = mail.short_id();
        store
            .apply(&MailPush::Message(summary(mail.clone(), "s", 1)), 1)
            .unwrap();
        assert!(store.search("platypus").unwrap().is_empty());
        let body = MailPush::Body {
            mail: mail.clone(),
            text: Some("Line one.\nThe PLATYPUS arrives Tuesday.".into()),
            blob: None,
        };
        assert_eq!(store.apply(&body, 2).unwrap(), Applied::Updated(short.clone()));
        assert_eq!(
            ids(&store.search("platypus tuesday").unwrap()),
            vec![short.clone()]
        );
        let before = dump(&store);
        store.apply(&body, 3).unwrap();
        assert_eq!(dump(&store), before, "idempotent");

        store
            .apply(
                &MailPush::Body {
                    mail: mail.clone(),
                    text: None,
                    blob: Some(file("body.txt")),
                },
                3,
            )
            .unwrap();
        let stored = store.get(&short).unwrap().unwrap();
        assert_eq!(stored.body_blob.unwrap().name, "body.txt");
        assert!(stored.full_text.is_some());
        // A body for a mail not stored is ignored.
        assert_eq!(
            store
                .apply(
                    &MailPush::Body {
                        mail: mail_ref("INBOX", 9),
                        text: Some("x".into()),
                        blob: None
                    },
                    3
                )
                .unwrap(),
            Applied::Other
        );
    }

    #[test]
    fn attachments_are_kept_per_index_for_listed_ones_only() {
        let (_dir, store) = store();
        let mail = mail_ref("INBOX", 1);
        let push = |index| MailPush::Attachment {
            mail: mail.clone(),
            index,
            file: file("Forecast-Q3.xlsx"),
        };
        assert_eq!(store.apply(&push(0), 1).unwrap(), Applied::Other, "mail unknown");
        store
            .apply(&MailPush::Message(summary(mail.clone(), "s", 1)), 1)
            .unwrap();
        assert_eq!(
            store.apply(&push(0), 1).unwrap(),
            Applied::Updated(mail.short_id())
        );
        assert_eq!(
            store.attachment(&mail, 0).unwrap(),
            Some(file("Forecast-Q3.xlsx"))
        );
        assert_eq!(store.apply(&push(1), 1).unwrap(), Applied::Other, "not listed");
        assert_eq!(store.apply(&push(u32::MAX), 1).unwrap(), Applied::Other);
        assert_eq!(store.attachment(&mail, 1).unwrap(), None);
        assert_eq!(store.attachment(&mail_ref("INBOX", 2), 0).unwrap(), None);
    }

    #[test]
    fn outcomes_and_status_round_trip() {
        let (_dir, store) = store();
        let ok = Bytes([1; 16]);
        let failed = Bytes([2; 16]);
        store
            .apply(
                &MailPush::Outcome {
                    command_id: ok,
                    error: None,
                },
                10,
            )
            .unwrap();
        assert_eq!(
            store
                .apply(
                    &MailPush::Outcome {
                        command_id: failed,
                        error: Some("no such folder".into()),
                    },
                    20,
                )
                .unwrap(),
            Applied::Other
        );
        assert_eq!(store.outcome(&ok).unwrap(), Some(None));
        assert_eq!(
            store.outcome(&failed).unwrap(),
            Some(Some("no such folder".into()))
        );
        assert_eq!(store.outcome(&Bytes([3; 16])).unwrap(), None);

        let long = "é".repeat(DETAIL_BYTES_MAX);
        store
            .apply(
                &MailPush::Status {
                    service: Service::Mail,
                    ok: false,
                    detail: long.clone(),
                    at_unix_s: 5,
                },
                5,
            )
            .unwrap();
        let (ok_now, detail, at) = store.status(Service::Mail).unwrap().unwrap();
        assert!(!ok_now);
        assert_eq!(at, 5);
        assert!(detail.len() <= DETAIL_BYTES_MAX && long.starts_with(&detail));
        store
            .apply(
                &MailPush::Status {
                    service: Service::Mail,
                    ok: true,
                    detail: "connected".into(),
                    at_unix_s: 6,
                },
                6,
            )
            .unwrap();
        assert_eq!(
            store.status(Service::Mail).unwrap(),
            Some((true, "connected".into(), 6))
        );
    }

    #[test]
    fn folders_come_from_the_last_list_and_from_mails() {
        let (_dir, store) = store();
        store
            .apply(
                &MailPush::Folders(vec!["INBOX".into(), "Sent".into(), "INBOX".into()]),
                1,
            )
            .unwrap();
        assert_eq!(
            store.folders().unwrap(),
            vec!["INBOX".to_owned(), "Sent".to_owned()]
        );
        store
            .apply(&MailPush::Message(summary(mail_ref("Zeta", 1), "s", 1)), 1)
            .unwrap();
        store
            .apply(&MailPush::Message(summary(mail_ref("Alpha", 1), "s", 1)), 1)
            .unwrap();
        store
            .apply(&MailPush::Message(summary(mail_ref("Sent", 1), "s", 1)), 1)
            .unwrap();
        assert_eq!(store.folders().unwrap(), vec!["INBOX", "Sent", "Alpha", "Zeta"]);
        store.apply(&MailPush::Folders(vec!["Work".into()]), 1).unwrap();
        assert_eq!(store.folders().unwrap(), vec!["Work", "Alpha", "Sent", "Zeta"]);
    }

    #[test]
    fn delete_before_drops_old_mails_and_everything_of_theirs() {
        let (_dir, store) = store();
        let old = mail_ref("INBOX", 1);
        let new = mail_ref("Archive", 2);
        store
            .apply(&MailPush::Message(summary(old.clone(), "ancient scroll", 100)), 1)
            .unwrap();
        store
            .apply(
                &MailPush::Attachment {
                    mail: old.clone(),
                    index: 0,
                    file: file("a"),
                },
                1,
            )
            .unwrap();
        store
            .apply(&MailPush::Message(summary(new.clone(), "fresh news", 200)), 1)
            .unwrap();
        store
            .apply(
                &MailPush::Outcome {
                    command_id: Bytes([1; 16]),
                    error: None,
                },
                150,
            )
            .unwrap();
        store
            .apply(
                &MailPush::Outcome {
                    command_id: Bytes([2; 16]),
                    error: None,
                },
                250,
            )
            .unwrap();

        assert_eq!(store.delete_before(100).unwrap(), 0, "strictly before");
        assert_eq!(store.delete_before(200).unwrap(), 1);
        assert!(store.get(&old.short_id()).unwrap().is_none());
        assert!(store.list(None).unwrap().is_empty());
        assert!(store.search("scroll").unwrap().is_empty());
        assert_eq!(ids(&store.search("bob").unwrap()), vec![new.short_id()]);
        assert_eq!(store.attachment(&old, 0).unwrap(), None);
        assert_eq!(store.outcome(&Bytes([1; 16])).unwrap(), None);
        assert_eq!(store.outcome(&Bytes([2; 16])).unwrap(), Some(None));
        assert_eq!(store.folders().unwrap(), vec!["Archive"]);
        assert_eq!(store.delete_before(200).unwrap(), 0);
        let keys: Vec<String> = dump(&store).into_iter().map(|(k, _)| k).collect();
        assert!(
            keys.iter()
                .filter(|k| k.starts_with("m/") || k.starts_with("a/") || k.starts_with("f/"))
                .all(|k| k.contains(&new.short_id())),
            "{keys:?}"
        );
    }

    #[test]
    fn no_content_reaches_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let vault = open_vault(dir.path());
        let store = MailStore::new(vault.clone());
        let mail = mail_ref("Lawsuit Smithers", 1);
        let mut secret = summary(mail.clone(), "Confidential merger Zanzibar", 100);
        secret.attachments[0].name = "termsheet.pdf".into();
        store.apply(&MailPush::Message(secret.clone()), 1).unwrap();
        store
            .apply(
                &MailPush::Body {
                    mail: mail.clone(),
                    text: Some("Walrus operation proceeds".into()),
                    blob: None,
                },
                1,
            )
            .unwrap();
        store
            .apply(&MailPush::Folders(vec!["Lawsuit Smithers".into()]), 1)
            .unwrap();
        assert_eq!(store.search("zanzibar walrus termsheet").unwrap().len(), 1);

        let mut words = BTreeSet::new();
        for text in [
            "Confidential merger Zanzibar termsheet Walrus operation proceeds Lawsuit Smithers",
            &secret.from,
            &secret.to.join(" "),
            &secret.cc.join(" "),
            &secret.preview,
        ] {
            add_tokens(text, &mut words, usize::MAX);
        }
        // Short words could match hex by chance ("bob" cannot, "be" could).
        let words: Vec<&String> = words.iter().filter(|w| w.len() >= 3).collect();
        let keys: Vec<String> = store.rows("").unwrap().into_iter().map(|(k, _)| k).collect();
        assert!(keys.len() > 20, "{keys:?}");
        let raw = vault.raw_rows();
        assert_eq!(raw.iter().filter(|(ns, _, _)| ns == NS).count(), keys.len());
        for (_, key, _) in &raw {
            let key = String::from_utf8_lossy(key).to_lowercase();
            for word in &words {
                assert!(!key.contains(word.as_str()), "{word:?} in key {key:?}");
            }
        }
    }

    #[test]
    fn a_failed_apply_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let vault = open_vault(dir.path());
        let store = MailStore::new(vault.clone());
        store
            .apply(
                &MailPush::Status {
                    service: Service::Mail,
                    ok: true,
                    detail: "x".into(),
                    at_unix_s: 1,
                },
                1,
            )
            .unwrap();
        let before = dump(&store);
        // Refuse the mail record itself, which is written after its postings and folder row.
        vault.execute_raw(
            "CREATE TRIGGER refuse AFTER INSERT ON entry WHEN NEW.ns = 'mail' AND substr(CAST(NEW.key AS TEXT), 1, 2) = 'm/'
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
            [],
        );
        let result = store.apply(&MailPush::Message(summary(mail_ref("INBOX", 1), "budget", 1)), 1);
        assert!(matches!(result, Err(MailStoreError::Vault(_))), "{result:?}");
        assert_eq!(dump(&store), before);
        assert!(store.search("budget").unwrap().is_empty());
        assert!(store.folders().unwrap().is_empty());
    }

    #[test]
    fn ambiguous_and_colliding_ids_are_told_apart() {
        let (_dir, store) = store();
        // Two mails whose short ids share their first four digits.
        let mut seen: HashMap<String, u32> = HashMap::new();
        let (first, second) = (1..)
            .find_map(|uid| {
                let prefix = mail_ref("INBOX", uid).short_id()[..4].to_owned();
                seen.insert(prefix, uid).map(|other| (other, uid))
            })
            .unwrap();
        let (first, second) = (mail_ref("INBOX", first), mail_ref("INBOX", second));
        store
            .apply(&MailPush::Message(summary(first.clone(), "one", 1)), 1)
            .unwrap();
        store
            .apply(&MailPush::Message(summary(second.clone(), "two", 2)), 1)
            .unwrap();
        let prefix = &first.short_id()[..4];
        match store.get(prefix) {
            Err(MailStoreError::Ambiguous { matches, .. }) => {
                assert_eq!(matches.len(), 2);
                assert!(matches.contains(&first.short_id()) && matches.contains(&second.short_id()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.get(&first.short_id()).unwrap().unwrap().summary.mail, first);
        assert_eq!(
            store.get(&second.short_id()).unwrap().unwrap().summary.mail,
            second
        );
    }

    #[test]
    fn tokens_are_bounded() {
        let mut tokens = BTreeSet::new();
        let long = "x".repeat(100);
        add_tokens(&format!("{long} Ab-CD ÄÖ 42"), &mut tokens, usize::MAX);
        assert_eq!(
            tokens.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["42", "ab", "cd", &"x".repeat(TOKEN_CHARS_MAX), "äö"]
        );

        let (_dir, store) = store();
        let mail = mail_ref("INBOX", 1);
        let mut big = summary(mail.clone(), "s", 1);
        big.preview = (0..3_000).map(|i| format!("w{i} ")).collect();
        big.subject = format!("{long} first");
        store.apply(&MailPush::Message(big), 1).unwrap();
        let postings = store.rows("t/").unwrap().len();
        assert_eq!(postings, TOKENS_PER_MAIL_MAX);
        assert_eq!(
            store.search(&long).unwrap().len(),
            1,
            "cut the same way when searched"
        );
        assert_eq!(store.search("first w0").unwrap().len(), 1);
        assert!(store.search("w2999").unwrap().is_empty(), "beyond the bound");
        store.apply(&MailPush::Removed { mail }, 1).unwrap();
        assert_eq!(store.rows("t/").unwrap().len(), 0);
    }

    fn event(href: &str, title: &str, start: i64, end: i64) -> CalendarEvent {
        CalendarEvent {
            href: href.into(),
            uid: format!("{title}-uid"),
            title: title.into(),
            start_unix_s: start,
            end_unix_s: end,
            location: "Room Osprey".into(),
            attendees: vec!["bob@corp.test".into()],
        }
    }

    fn contact(href: &str, name: &str) -> ContactCard {
        ContactCard {
            href: href.into(),
            uid: format!("{name}-uid"),
            name: name.into(),
            emails: vec![format!("{}@corp.test", name.to_lowercase().replace(' ', "."))],
            phones: vec!["+1 555 0100".into()],
        }
    }

    fn event_titles(events: &[StoredEvent]) -> Vec<&str> {
        events.iter().map(|e| e.event.title.as_str()).collect()
    }

    #[test]
    fn events_are_listed_by_time_got_by_id_changed_and_removed() {
        let (_dir, store) = store();
        let standup = event("/alice@corp.test/calendar/a.ics", "Standup", 1_000, 1_900);
        let review = event("/alice@corp.test/calendar/b.ics", "Review", 500, 800);
        let reminder = event("/alice@corp.test/calendar/c.ics", "Reminder", 2_000, 2_000);
        for e in [&standup, &review, &reminder] {
            assert_eq!(
                store.apply(&MailPush::Event(e.clone()), 10).unwrap(),
                Applied::Other
            );
        }
        assert_eq!(
            event_titles(&store.events(None, None).unwrap()),
            vec!["Review", "Standup", "Reminder"]
        );
        // Overlapping [from, to): an event is in if any of it is.
        assert_eq!(
            event_titles(&store.events(Some(800), None).unwrap()),
            vec!["Standup", "Reminder"]
        );
        assert_eq!(
            event_titles(&store.events(Some(799), Some(1_000)).unwrap()),
            vec!["Review"]
        );
        assert_eq!(
            event_titles(&store.events(Some(1_899), Some(2_001)).unwrap()),
            vec!["Standup", "Reminder"]
        );
        assert_eq!(
            event_titles(&store.events(Some(2_000), Some(2_001)).unwrap()),
            vec!["Reminder"]
        );
        assert!(store.events(Some(3_000), None).unwrap().is_empty());
        assert!(store.events(None, Some(500)).unwrap().is_empty());

        let id = dav_short_id(&standup.href);
        assert_eq!(id.len(), 8);
        let got = store.event(&id).unwrap().unwrap();
        assert_eq!(
            (got.id.as_str(), &got.event, got.received_at_unix_s),
            (id.as_str(), &standup, 10)
        );
        assert_eq!(
            store.event(&id[..4].to_uppercase()).unwrap().unwrap().event,
            standup
        );
        assert!(matches!(store.event("xyz"), Err(MailStoreError::InvalidId(_))));
        assert!(store.get(&id).unwrap().is_none(), "events are not mails");

        // A change replaces the stored copy and keeps when it first arrived.
        let moved = CalendarEvent {
            title: "Standup (moved)".into(),
            start_unix_s: 3_000,
            end_unix_s: 3_600,
            ..standup.clone()
        };
        store.apply(&MailPush::Event(moved.clone()), 20).unwrap();
        let got = store.event(&id).unwrap().unwrap();
        assert_eq!((&got.event, got.received_at_unix_s), (&moved, 10));
        assert_eq!(store.events(None, None).unwrap().len(), 3);

        store
            .apply(
                &MailPush::EventRemoved {
                    href: standup.href.clone(),
                },
                30,
            )
            .unwrap();
        assert!(store.event(&id).unwrap().is_none());
        assert_eq!(
            event_titles(&store.events(None, None).unwrap()),
            vec!["Review", "Reminder"]
        );
        // Removing again, or something never stored, changes nothing.
        let before = dump(&store);
        store
            .apply(
                &MailPush::EventRemoved {
                    href: standup.href.clone(),
                },
                30,
            )
            .unwrap();
        store
            .apply(
                &MailPush::EventRemoved {
                    href: "/nowhere".into(),
                },
                30,
            )
            .unwrap();
        assert_eq!(dump(&store), before);
    }

    #[test]
    fn contacts_are_listed_by_name_got_by_id_and_removed() {
        let (_dir, store) = store();
        let bob = contact("/alice@corp.test/contacts/b.vcf", "bob Builder");
        let carol = contact("/alice@corp.test/contacts/c.vcf", "Carol Jones");
        let anna = contact("/alice@corp.test/contacts/a.vcf", "Anna Smith");
        for c in [&bob, &carol, &anna] {
            store.apply(&MailPush::Contact(c.clone()), 5).unwrap();
        }
        let names: Vec<String> = store
            .contacts()
            .unwrap()
            .into_iter()
            .map(|c| c.contact.name)
            .collect();
        assert_eq!(names, vec!["Anna Smith", "bob Builder", "Carol Jones"]);
        let id = dav_short_id(&carol.href);
        assert_eq!(store.contact(&id).unwrap().unwrap().contact, carol);
        assert!(store.event(&id).unwrap().is_none(), "contacts are not events");

        let renamed = ContactCard {
            name: "Carol Jones-Smith".into(),
            ..carol.clone()
        };
        store.apply(&MailPush::Contact(renamed.clone()), 6).unwrap();
        let got = store.contact(&id).unwrap().unwrap();
        assert_eq!((&got.contact, got.received_at_unix_s), (&renamed, 5));
        store
            .apply(
                &MailPush::ContactRemoved {
                    href: carol.href.clone(),
                },
                7,
            )
            .unwrap();
        assert!(store.contact(&id).unwrap().is_none());
        assert_eq!(store.contacts().unwrap().len(), 2);
        // Retention is about messages: contacts and events stay.
        store
            .apply(&MailPush::Event(event("/e", "Old", 1, 2)), 1)
            .unwrap();
        store.delete_before(i64::MAX).unwrap();
        assert_eq!(store.contacts().unwrap().len(), 2);
        assert_eq!(store.events(None, None).unwrap().len(), 1);
    }

    #[test]
    fn a_repeated_event_or_contact_push_changes_nothing() {
        let (_dir, store) = store();
        let e = MailPush::Event(event("/c/a.ics", "Standup", 1, 2));
        let c = MailPush::Contact(contact("/b/a.vcf", "Bob"));
        store.apply(&e, 1).unwrap();
        store.apply(&c, 1).unwrap();
        let before = dump(&store);
        store.apply(&e, 2).unwrap();
        store.apply(&c, 2).unwrap();
        assert_eq!(dump(&store), before);
        assert_eq!(store.events(None, None).unwrap()[0].received_at_unix_s, 1);
    }

    #[test]
    fn events_and_contacts_sharing_a_short_id_are_told_apart() {
        let (_dir, store) = store();
        let mut seen: HashMap<String, u32> = HashMap::new();
        let (first, second) = (0..)
            .find_map(|n| {
                let prefix = dav_short_id(&format!("/c/{n}.ics"))[..4].to_owned();
                seen.insert(prefix, n).map(|other| (other, n))
            })
            .unwrap();
        let (first, second) = (format!("/c/{first}.ics"), format!("/c/{second}.ics"));
        store
            .apply(&MailPush::Event(event(&first, "one", 1, 2)), 1)
            .unwrap();
        store
            .apply(&MailPush::Event(event(&second, "two", 1, 2)), 1)
            .unwrap();
        match store.event(&dav_short_id(&first)[..4]) {
            Err(MailStoreError::Ambiguous { matches, .. }) => assert_eq!(matches.len(), 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            store.event(&dav_short_id(&second)).unwrap().unwrap().event.title,
            "two"
        );
    }

    #[test]
    fn no_event_or_contact_content_reaches_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let vault = open_vault(dir.path());
        let store = MailStore::new(vault.clone());
        let mut secret = event(
            "/alice@corp.test/calendar/merger-zanzibar.ics",
            "Merger Zanzibar",
            1_893_578_400,
            1_893_582_000,
        );
        secret.attendees = vec!["walrus@corp.test".into()];
        store.apply(&MailPush::Event(secret), 1).unwrap();
        store
            .apply(
                &MailPush::Contact(contact(
                    "/alice@corp.test/contacts/smithers.vcf",
                    "Waylon Smithers",
                )),
                1,
            )
            .unwrap();
        let raw = vault.raw_rows();
        assert!(raw.iter().filter(|(ns, _, _)| ns == NS).count() >= 3);
        for (_, key, value) in &raw {
            let key = String::from_utf8_lossy(key).to_lowercase();
            let value = String::from_utf8_lossy(value).to_lowercase();
            for word in [
                "alice", "corp", "merger", "zanzibar", "walrus", "osprey", "waylon", "smithers", "calendar",
                "contacts",
            ] {
                assert!(!key.contains(word), "{word:?} in key {key:?}");
                assert!(!value.contains(word), "{word:?} in a stored value");
            }
        }
    }
}
