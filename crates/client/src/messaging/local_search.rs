//! The messenger's stored messages and the search index ([`crate::search`]) together: a
//! message is stored and indexed in one vault transaction, deleted and unindexed in one,
//! and messages stored before the index existed are indexed once, in bounded batches.

use redoubt_proto::GroupId;

use super::{Receipts, StoredMessage, message_key, parse_group_id, receipt_key, storage_error};
use crate::ClientError;
use crate::search::{self, IndexedMessage, SearchQuery};
use crate::vault::{AppStorage, AppTransaction, Vault};

/// Messages indexed per transaction by the backfill: bounds its memory and how long it
/// holds the vault's write lock at a time.
const BACKFILL_BATCH_MESSAGES: usize = 512;
/// Messages read per page when the backfill lists what is stored.
const BACKFILL_PAGE_ROWS: usize = 1_024;
/// Messages unindexed per batch of row changes when retention deletes many at once.
const UNINDEX_BATCH_MESSAGES: usize = 2_048;

/// How the index sees a stored message. An attachment is found by its file name, not by
/// the "[file] NAME (N bytes)" line shown for it; its time is the one retention counts
/// (the earlier of the sender's claim and the server's), so a sender's clock set in the
/// future cannot pin a message at the top of every search.
fn indexed<'a>(group: &GroupId, message: &'a StoredMessage) -> IndexedMessage<'a> {
    IndexedMessage {
        group_id: *group,
        seq: message.seq,
        sender_user: &message.sender_user,
        time_unix_s: message.sent_at_unix_s.min(message.server_time_unix_s),
        text: if message.attachment.is_some() {
            ""
        } else {
            &message.text
        },
        attachment_name: message.attachment.as_ref().map(|a| a.name.as_str()),
    }
}

/// Stores `messages` and indexes them, inside `tx`.
fn store_in(tx: &AppTransaction<'_, '_>, messages: &[(GroupId, &StoredMessage)]) -> Result<(), ClientError> {
    for (group, message) in messages {
        let bytes = postcard::to_stdvec(message).map_err(storage_error)?;
        tx.insert(&message_key(group, message.seq), &bytes)?;
    }
    let indexed: Vec<IndexedMessage<'_>> = messages.iter().map(|(g, m)| indexed(g, m)).collect();
    search::index_messages(tx.others(), &indexed)?;
    Ok(())
}

/// Keeps one message and indexes it, in one transaction.
pub(super) fn store(data: &AppStorage, group: &GroupId, message: &StoredMessage) -> Result<(), ClientError> {
    let bytes = postcard::to_stdvec(message).map_err(storage_error)?;
    data.transaction(|tx| {
        tx.insert(&message_key(group, message.seq), &bytes)?;
        Ok::<_, ClientError>(search::index_message(tx.others(), &indexed(group, message))?)
    })
}

/// Keeps `messages` of one conversation and indexes them, in one transaction.
pub(super) fn store_all(
    data: &AppStorage,
    group: &GroupId,
    messages: &[StoredMessage],
) -> Result<(), ClientError> {
    if messages.is_empty() {
        return Ok(());
    }
    let refs: Vec<(GroupId, &StoredMessage)> = messages.iter().map(|m| (*group, m)).collect();
    data.transaction(|tx| store_in(tx, &refs))
}

/// Stores those of `messages` (each with its receipts) this device does not hold yet and
/// indexes them, in one transaction: a message already here (read live, or stored by an
/// earlier attempt) stays as it is, with its receipts. Returns how many were new.
pub(super) fn store_missing(
    data: &AppStorage,
    group: &GroupId,
    messages: &[(StoredMessage, Receipts)],
) -> Result<usize, ClientError> {
    data.transaction(|tx| {
        let mut new = Vec::new();
        for (message, receipts) in messages {
            let key = message_key(group, message.seq);
            if tx.get(&key)?.is_some() {
                continue;
            }
            tx.insert(&key, &postcard::to_stdvec(message).map_err(storage_error)?)?;
            let receipts = postcard::to_stdvec(receipts).map_err(storage_error)?;
            tx.insert(&receipt_key(group, message.seq), &receipts)?;
            new.push(indexed(group, message));
        }
        search::index_messages(tx.others(), &new)?;
        Ok::<_, ClientError>(new.len())
    })
}

/// Keeps `messages` in `vault` and indexes them, in one transaction, as the messenger
/// does with each message it receives or sends: for tools and benchmarks that fill a
/// vault without a server. Keep a call to a few thousand messages.
pub fn store_messages(vault: &Vault, messages: &[(GroupId, StoredMessage)]) -> Result<(), ClientError> {
    let refs: Vec<(GroupId, &StoredMessage)> = messages.iter().map(|(g, m)| (*g, m)).collect();
    vault.app_storage().transaction(|tx| store_in(tx, &refs))
}

/// The stored messages matching `query`, newest first, with their conversation's id:
/// what [`super::Messenger::search`] shows. Hits whose message is gone are skipped.
pub fn search_messages(
    vault: &Vault,
    query: &SearchQuery,
) -> Result<Vec<(GroupId, StoredMessage)>, ClientError> {
    let data = vault.app_storage();
    let mut found = Vec::new();
    for hit in search::search(vault, query)? {
        if let Some(bytes) = data.get(&message_key(&hit.group_id, hit.seq))? {
            let message = StoredMessage::decode(&bytes)?;
            found.push((hit.group_id, message));
        }
    }
    Ok(found)
}

/// (conversation, seq) of a `msg/<group>/<seq>` key.
fn parse_message_key(key: &str) -> Option<(GroupId, u64)> {
    let (group, seq) = key.strip_prefix("msg/")?.split_once('/')?;
    Some((parse_group_id(group)?, seq.parse().ok()?))
}

/// Deletes `keys` and takes the messages among them (`msg/…`) out of the index, in one
/// transaction.
pub(super) fn delete_with_index(data: &AppStorage, keys: &[String]) -> Result<(), ClientError> {
    let messages: Vec<(GroupId, u64)> = keys.iter().filter_map(|k| parse_message_key(k)).collect();
    data.transaction(|tx| {
        for key in keys {
            tx.delete(key)?;
        }
        for batch in messages.chunks(UNINDEX_BATCH_MESSAGES) {
            search::unindex_messages(tx.others(), batch)?;
        }
        Ok::<_, ClientError>(())
    })
}

/// Indexes the messages stored before this device had an index, oldest first (so that
/// the index's segments follow time, as they do for live messages), in transactions of
/// [`BACKFILL_BATCH_MESSAGES`]; then records that it is done, so it runs once. Messages
/// already indexed are skipped, so an interrupted backfill resumes where it stopped.
/// Returns how many messages it indexed.
pub(super) fn backfill(data: &AppStorage) -> Result<usize, ClientError> {
    let vault = data.vault();
    if !search::needs_backfill(vault)? {
        return Ok(0);
    }
    // (time, conversation, seq) of every stored message: about 50 bytes each, once.
    let mut stored: Vec<(i64, GroupId, u64)> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = data.page_by_prefix("msg/", after.as_deref(), false, BACKFILL_PAGE_ROWS)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (key, value) in &page {
            let Some((group, seq)) = parse_message_key(key) else {
                continue;
            };
            let message = StoredMessage::decode(value)?;
            stored.push((indexed(&group, &message).time_unix_s, group, seq));
        }
    }
    stored.sort_unstable();
    let mut indexed_count = 0;
    for batch in stored.chunks(BACKFILL_BATCH_MESSAGES) {
        indexed_count += data.transaction(|tx| {
            let mut messages = Vec::with_capacity(batch.len());
            for (_, group, seq) in batch {
                // Read again inside the transaction: it may have gone since.
                if let Some(bytes) = tx.get(&message_key(group, *seq))? {
                    let message = StoredMessage::decode(&bytes)?;
                    messages.push((*group, message));
                }
            }
            let indexed: Vec<IndexedMessage<'_>> = messages.iter().map(|(g, m)| indexed(g, m)).collect();
            Ok::<_, ClientError>(search::index_messages(tx.others(), &indexed)?)
        })?;
    }
    data.transaction(|tx| Ok::<_, ClientError>(search::mark_backfilled(tx.others())?))?;
    if indexed_count > 0 {
        tracing::info!(messages = indexed_count, "indexed the stored messages for search");
    }
    Ok(indexed_count)
}

#[cfg(test)]
mod tests;
