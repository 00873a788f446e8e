//! Adding messages to the index and taking them out, inside the caller's transaction.
//!
//! Changes to the rows many messages share (postings, times, segment summaries) are
//! gathered first and then each such row is read and written once, so indexing a batch of
//! messages costs one read-modify-write per distinct row, not per message and word.

use std::collections::{BTreeMap, BTreeSet};

use rand_core::{OsRng, RngCore};
use redoubt_proto::GroupId;
use zeroize::Zeroizing;

use super::rows::{self, KEY_NEXT, KEY_SALT, KEY_VERSION, REMOVED, Record, SegmentInfo, Slots, place};
use super::terms::{Tag, Tagger, message_tags, message_tokens};
use super::{INDEX_VERSION, IndexedMessage, NS, SearchError};
use crate::vault::VaultTransaction;

pub(super) type Salt = Zeroizing<[u8; 32]>;

pub(super) fn salt_from(bytes: &[u8]) -> Result<Salt, SearchError> {
    let salt: [u8; 32] = bytes
        .try_into()
        .map_err(|_| SearchError::Malformed { key: "salt".into() })?;
    Ok(Zeroizing::new(salt))
}

/// The salt, if anything was ever indexed.
fn existing_salt(tx: &VaultTransaction<'_>) -> Result<Option<Salt>, SearchError> {
    tx.get(NS, KEY_SALT)?.map(|bytes| salt_from(&bytes)).transpose()
}

/// The salt, made (32 random bytes) on first use.
fn salt_or_create(tx: &VaultTransaction<'_>) -> Result<Salt, SearchError> {
    if let Some(salt) = existing_salt(tx)? {
        return Ok(salt);
    }
    let mut salt = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(salt.as_mut());
    tx.put(NS, KEY_SALT, salt.as_slice())?;
    Ok(salt)
}

fn get_record(tx: &VaultTransaction<'_>, ordinal: u64) -> Result<Option<Record>, SearchError> {
    let key = rows::record_key(ordinal);
    tx.get(NS, &key)?
        .map(|bytes| rows::decode(&key, &bytes))
        .transpose()
}

/// The tags `record` was posted under.
fn tags_of(tagger: &Tagger, record: &Record) -> Vec<Tag> {
    message_tags(tagger, &record.group_id, &record.sender, &record.tokens)
}

fn get_ordinal(tx: &VaultTransaction<'_>, locator: &[u8]) -> Result<Option<u64>, SearchError> {
    tx.get(NS, locator)?
        .map(|bytes| rows::decode_u64(locator, &bytes))
        .transpose()
}

/// See [`super::index_messages`].
pub(super) fn index(
    tx: &VaultTransaction<'_>,
    messages: &[IndexedMessage<'_>],
) -> Result<usize, SearchError> {
    if messages.is_empty() {
        return Ok(0);
    }
    let salt = salt_or_create(tx)?;
    let tagger = Tagger::new(&salt);
    let first = match tx.get(NS, KEY_NEXT)? {
        Some(bytes) => rows::decode_u64(KEY_NEXT, &bytes)?,
        None => 0,
    };
    let mut next = first;
    let mut changes = Changes::default();
    let mut indexed = 0;
    for message in messages {
        let record = Record {
            group_id: message.group_id,
            seq: message.seq,
            sender: message.sender_user.clone(),
            time_unix_s: message.time_unix_s,
            tokens: message_tokens(message),
        };
        let locator = rows::locator_key(&tagger.message(&message.group_id, message.seq));
        if let Some(old) = get_ordinal(tx, &locator)? {
            match get_record(tx, old)? {
                // Indexed as it is: nothing to write.
                Some(known) if known == record => continue,
                Some(known) => {
                    changes.remove(old, &tags_of(&tagger, &known), known.time_unix_s)?;
                    tx.delete(NS, rows::record_key(old))?;
                }
                None => {}
            }
        }
        let ordinal = next;
        next = next.checked_add(1).ok_or(SearchError::Full)?;
        changes.add(ordinal, &tags_of(&tagger, &record), record.time_unix_s)?;
        let key = rows::record_key(ordinal);
        tx.put(NS, &key, &rows::encode(&key, &record)?)?;
        tx.put(NS, &locator, &ordinal.to_be_bytes())?;
        indexed += 1;
    }
    if next != first {
        tx.put(NS, KEY_NEXT, &next.to_be_bytes())?;
    }
    changes.apply(tx)?;
    Ok(indexed)
}

/// See [`super::unindex_messages`].
pub(super) fn unindex(tx: &VaultTransaction<'_>, messages: &[(GroupId, u64)]) -> Result<usize, SearchError> {
    // No salt: nothing was ever indexed.
    let Some(salt) = existing_salt(tx)? else {
        return Ok(0);
    };
    let tagger = Tagger::new(&salt);
    let mut changes = Changes::default();
    let mut removed = 0;
    for (group, seq) in messages {
        let locator = rows::locator_key(&tagger.message(group, *seq));
        let Some(ordinal) = get_ordinal(tx, &locator)? else {
            continue;
        };
        if let Some(record) = get_record(tx, ordinal)? {
            changes.remove(ordinal, &tags_of(&tagger, &record), record.time_unix_s)?;
            tx.delete(NS, rows::record_key(ordinal))?;
            removed += 1;
        }
        tx.delete(NS, &locator)?;
    }
    changes.apply(tx)?;
    Ok(removed)
}

pub(super) fn mark_complete(tx: &VaultTransaction<'_>) -> Result<(), SearchError> {
    Ok(tx.put(NS, KEY_VERSION, &INDEX_VERSION.to_be_bytes())?)
}

#[derive(Debug, Default)]
struct SegmentChange {
    added: u32,
    removed: u32,
    newest_unix_s: Option<i64>,
    /// Chunk → the newest time added to it.
    chunk_newest_unix_s: BTreeMap<u16, i64>,
}

/// Row changes gathered over a batch. Per slot the last change wins: a message indexed and
/// replaced in one batch ends removed from its first slot.
#[derive(Debug, Default)]
struct Changes {
    /// (tag, segment) → slot → whether it is posted afterwards.
    postings: BTreeMap<(Tag, u32), BTreeMap<u16, bool>>,
    /// (segment, chunk) → offset in the chunk → time ([`REMOVED`] for a removal).
    times: BTreeMap<(u32, u16), BTreeMap<usize, i64>>,
    segments: BTreeMap<u32, SegmentChange>,
}

impl Changes {
    fn add(&mut self, ordinal: u64, tags: &[Tag], time_unix_s: i64) -> Result<(), SearchError> {
        self.set(ordinal, tags, time_unix_s, true)
    }

    fn remove(&mut self, ordinal: u64, tags: &[Tag], time_unix_s: i64) -> Result<(), SearchError> {
        self.set(ordinal, tags, time_unix_s, false)
    }

    fn set(&mut self, ordinal: u64, tags: &[Tag], time_unix_s: i64, posted: bool) -> Result<(), SearchError> {
        let (segment, slot) = place(ordinal)?;
        for tag in tags {
            self.postings
                .entry((*tag, segment))
                .or_default()
                .insert(slot, posted);
        }
        let (chunk, offset) = rows::chunk_of(slot);
        let time = if posted { time_unix_s } else { REMOVED };
        self.times
            .entry((segment, chunk))
            .or_default()
            .insert(offset, time);
        let change = self.segments.entry(segment).or_default();
        if posted {
            change.added += 1;
            change.newest_unix_s = change.newest_unix_s.max(Some(time_unix_s));
            let newest = change.chunk_newest_unix_s.entry(chunk).or_insert(time_unix_s);
            *newest = (*newest).max(time_unix_s);
        } else {
            change.removed += 1;
        }
        Ok(())
    }

    /// Reads and writes each changed row once.
    fn apply(self, tx: &VaultTransaction<'_>) -> Result<(), SearchError> {
        for ((tag, segment), changed) in self.postings {
            let key = rows::posting_key(&tag, segment);
            let mut slots = match tx.get(NS, &key)? {
                Some(bytes) => Slots::decode(&key, &bytes)?,
                None => Slots::empty(),
            };
            for (slot, posted) in changed {
                if posted {
                    slots.insert(slot);
                } else {
                    slots.remove(slot);
                }
            }
            if slots.is_empty() {
                tx.delete(NS, &key)?;
            } else {
                tx.put(NS, &key, &slots.encode())?;
            }
        }
        let mut emptied = BTreeSet::new();
        for (segment, change) in self.segments {
            let key = rows::segment_key(segment);
            let mut info = match tx.get(NS, &key)? {
                Some(bytes) => rows::decode::<SegmentInfo>(&key, &bytes)?,
                None => SegmentInfo {
                    newest_unix_s: i64::MIN,
                    chunk_newest_unix_s: Vec::new(),
                    live: 0,
                },
            };
            for (chunk, newest) in &change.chunk_newest_unix_s {
                let chunk = usize::from(*chunk);
                if info.chunk_newest_unix_s.len() <= chunk {
                    info.chunk_newest_unix_s.resize(chunk + 1, i64::MIN);
                }
                if let Some(known) = info.chunk_newest_unix_s.get_mut(chunk) {
                    *known = (*known).max(*newest);
                }
            }
            info.live = info
                .live
                .saturating_add(change.added)
                .saturating_sub(change.removed);
            info.newest_unix_s = info.newest_unix_s.max(change.newest_unix_s.unwrap_or(i64::MIN));
            if info.live == 0 {
                tx.delete(NS, &key)?;
                emptied.insert(segment);
            } else {
                tx.put(NS, &key, &rows::encode(&key, &info)?)?;
            }
        }
        for ((segment, chunk), changed) in self.times {
            if emptied.contains(&segment) {
                continue;
            }
            let key = rows::times_key(segment, chunk);
            let mut times = match tx.get(NS, &key)? {
                Some(bytes) => rows::decode_times(&key, &bytes)?,
                None => Vec::new(),
            };
            for (offset, time) in changed {
                if times.len() <= offset {
                    times.resize(offset + 1, REMOVED);
                }
                if let Some(slot) = times.get_mut(offset) {
                    *slot = time;
                }
            }
            tx.put(NS, &key, &rows::encode_times(&times))?;
        }
        for segment in emptied {
            for key in rows::all_times_keys(segment) {
                tx.delete(NS, &key)?;
            }
        }
        Ok(())
    }
}
