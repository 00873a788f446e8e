//! Local search over this device's chat history: a keyed-hash inverted index of its stored
//! messages (their words and attachment names), kept in the vault beside them, so history
//! can be searched offline and nothing of it is ever sent anywhere.
//!
//! Everything lives in the vault namespace `search`. The vault seals values but stores
//! keys in the clear, so keys hold only fixed names, random-looking tags and counters,
//! never a word, prefix, file name, user or conversation:
//!
//! ```text
//! salt                    32 random bytes: the key of every tag below
//! next                    the ordinal the next indexed message gets
//! version                 INDEX_VERSION, once every message stored before the index existed is in it
//! m ‖ ordinal             Record: conversation, seq, sender, time, its distinct tokens
//! r ‖ mtag                the ordinal of (conversation, seq), for replacing and removing
//! p ‖ tag ‖ segment       the slots of the segment's messages posted under tag (≤ 2,049 bytes)
//! t ‖ segment ‖ chunk     the times of 256 slots (8 bytes each)
//! d ‖ segment             SegmentInfo: the newest time in it and in each chunk, how many messages it holds
//! ```
//!
//! * Each indexed message gets the next *ordinal* (arrival order); ordinals are grouped in
//!   *segments* of [`SEGMENT_SLOTS`] (16,384): segment = ordinal / 16,384, slot = the rest;
//!   a segment's times are kept in chunks of 256 slots.
//!   Ordinals, segments and chunks are big-endian, so key order is arrival order.
//! * `tag` (12 bytes) is SHA-256 over a domain label, the `salt`, the kind of thing
//!   (prefix, word, group, sender, message) and the thing, cut to 12 bytes; `mtag` is the
//!   tag of (conversation, seq). Without the salt, which is sealed like every value, nobody
//!   can compute the tag of a guessed word and look for its rows.
//!
//! **Words and prefixes.** Tokens are runs of Unicode alphanumeric characters, lower-cased,
//! cut at [`TOKEN_CHARS_MAX`] characters, at most [`TOKENS_PER_MESSAGE_MAX`] distinct ones
//! per message (from its text, then its attachment's file name). A token is posted under
//! each of its prefixes of [`PREFIX_CHARS_MIN`] (2) to [`PREFIX_CHARS_MAX`] (12)
//! characters, the token itself included when it is that short; a one-character token is
//! posted whole. So a query term of 2 to 12 characters is one posting lookup that finds
//! every token equal to it or starting with it; a one-character term finds only that
//! one-character word (a one-letter prefix would match a twentieth of all words); a longer
//! term is looked up by its first 12 characters and confirmed against the tokens the
//! message's record keeps (its tags are computed from them again to remove it). Each
//! message is also posted under the tags of its conversation and its sender, so filters
//! are postings like words.
//!
//! **Queries** ([`search`]): every term and filter must match (AND). The segments where all
//! of them have postings are found from keys alone (an index scan, nothing decrypted);
//! they are read newest first by their `d` row's newest time, each one's posting rows
//! intersected as bitmaps, the hits' times read from `t` (skipping chunks whose newest
//! message is older than the `limit`th hit so far), and the best `limit` kept; the scan
//! stops at the first segment whose newest message is older than the `limit`th hit.
//! Since arrival follows time, a query usually reads one segment and a chunk or two of its
//! times whatever the size of the history, and a posting row is at most 2,049 bytes
//! however common its word.
//! Results are newest first by a message's time (the earlier of the sender's and the
//! server's, as retention counts it), ties by arrival.
//!
//! **What someone holding `vault.db` without its data key learns**: how many messages are
//! indexed (also told by the messenger's `msg/` keys) and roughly in how many segments;
//! how many distinct tags there are (roughly the vocabulary size with its prefixes, plus
//! the number of conversations and senders); for each tag, in which segments (blocks of
//! 16,384 messages in arrival order) it occurs and, from the row's size, how many of the
//! segment's messages carry it (exactly below 1,024); and each message record's
//! size, roughly how much it says. Not which word, prefix, sender or conversation
//! a tag stands for, which message carries it, or any time. Frequencies and the nesting of
//! a word's prefix rows invite statistical guesses (the commonest tags are probably common
//! two-letter prefixes) that the holder can never confirm without the salt.
//!
//! **Invariants.** A message and its index entries are written in one vault transaction
//! (the messenger's `store_message` and retention go through [`index_messages`] and
//! [`unindex_messages`] with the transaction that stores or deletes the message), so the
//! index never names a message that is not stored nor misses one that is, once the
//! one-time backfill of messages stored before it ([`needs_backfill`]) is done. Indexing a
//! message again replaces its entry (same content: nothing is written); removal takes it
//! out of exactly the rows its record's tokens, conversation and sender give. Every row is bounded: postings by the segment
//! size, times by the chunk size, records by [`TOKENS_PER_MESSAGE_MAX`].

mod rows;
pub(crate) mod terms;
mod write;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use redoubt_proto::{GroupId, UserName};

use crate::vault::{Vault, VaultError, VaultSnapshot, VaultTransaction};
pub use rows::SEGMENT_SLOTS;
use rows::{REMOVED, Record, SegmentInfo, Slots};
use terms::{Condition, Tagger};

/// The vault namespace of the index.
const NS: &str = "search";
/// The layout of the rows above; stored under `version` once the backfill is done.
const INDEX_VERSION: u64 = 1;
/// Longest token indexed or searched, in characters; longer ones are cut to this.
pub const TOKEN_CHARS_MAX: usize = 64;
/// Most distinct tokens indexed for one message.
pub const TOKENS_PER_MESSAGE_MAX: usize = 1_000;
/// Shortest prefix a query term is matched as; shorter terms match whole words only.
pub const PREFIX_CHARS_MIN: usize = 2;
/// Longest prefix indexed, in characters; longer terms are confirmed against the record.
pub const PREFIX_CHARS_MAX: usize = 12;
/// Most distinct terms of one query (the rest are ignored).
const QUERY_TERMS_MAX: usize = 16;
/// Most hits one query returns.
pub const HITS_MAX: usize = 1_000;

/// Why the index could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// The vault failed (storage, or a value that does not authenticate).
    #[error("search index: {0}")]
    Vault(#[from] VaultError),
    /// A row is not what this module writes (hex key; it holds no content).
    #[error("search index row {key} is malformed")]
    Malformed { key: String },
    /// More messages were indexed than ordinals can number (2^44): never in practice.
    #[error("search index is full")]
    Full,
}

impl From<SearchError> for crate::ClientError {
    fn from(error: SearchError) -> Self {
        crate::ClientError::Profile(format!("local search: {error}"))
    }
}

/// A stored message as the index sees it.
#[derive(Debug, Clone)]
pub struct IndexedMessage<'a> {
    pub group_id: GroupId,
    pub seq: u64,
    pub sender_user: &'a UserName,
    /// What results are ordered by, newest first.
    pub time_unix_s: i64,
    /// The words it is found by (for an attachment, its file name alone is usually enough).
    pub text: &'a str,
    pub attachment_name: Option<&'a str>,
}

/// What to look for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// Words; each must match a word of the message that equals it or starts with it.
    pub text: String,
    /// Only this conversation.
    pub group: Option<GroupId>,
    /// Only messages from this user.
    pub from: Option<UserName>,
    /// Most hits wanted (at most [`HITS_MAX`]).
    pub limit: usize,
}

/// A message that matches, as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    pub group_id: GroupId,
    pub seq: u64,
    pub sender_user: UserName,
    pub time_unix_s: i64,
}

/// Indexes `messages` in the caller's transaction (the one that stores them), replacing
/// what was indexed for the same (conversation, seq) before; how many were (re)indexed.
/// Keep a batch to a few thousand messages: its row changes are gathered in memory.
pub(crate) fn index_messages(
    tx: &VaultTransaction<'_>,
    messages: &[IndexedMessage<'_>],
) -> Result<usize, SearchError> {
    write::index(tx, messages)
}

/// [`index_messages`] for one message.
pub(crate) fn index_message(
    tx: &VaultTransaction<'_>,
    message: &IndexedMessage<'_>,
) -> Result<(), SearchError> {
    write::index(tx, std::slice::from_ref(message)).map(|_| ())
}

/// Takes `messages` (conversation, seq) out of the index in the caller's transaction (the
/// one that deletes them); unknown ones are skipped. How many were indexed.
pub(crate) fn unindex_messages(
    tx: &VaultTransaction<'_>,
    messages: &[(GroupId, u64)],
) -> Result<usize, SearchError> {
    write::unindex(tx, messages)
}

/// [`unindex_messages`] for one message.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn unindex_message(
    tx: &VaultTransaction<'_>,
    group: &GroupId,
    seq: u64,
) -> Result<(), SearchError> {
    write::unindex(tx, &[(*group, seq)]).map(|_| ())
}

/// Whether messages stored before the index existed may still be missing from it.
pub(crate) fn needs_backfill(vault: &Vault) -> Result<bool, SearchError> {
    let version = vault.snapshot(|s| s.get(NS, rows::KEY_VERSION))?;
    match version {
        Some(bytes) => Ok(rows::decode_u64(rows::KEY_VERSION, &bytes)? != INDEX_VERSION),
        None => Ok(true),
    }
}

/// Records that every message stored before the index existed is in it.
pub(crate) fn mark_backfilled(tx: &VaultTransaction<'_>) -> Result<(), SearchError> {
    write::mark_complete(tx)
}

/// The messages matching `query`, newest first (ties: later arrival first), at most
/// `query.limit`. A query with no term and no filter finds nothing.
pub fn search(vault: &Vault, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
    let limit = query.limit.min(HITS_MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    vault.snapshot(|snapshot| {
        let Some(salt) = snapshot.get(NS, rows::KEY_SALT)? else {
            return Ok(Vec::new());
        };
        let tagger = Tagger::new(&*write::salt_from(&salt)?);
        let conditions = terms::conditions(&tagger, query);
        if conditions.is_empty() {
            return Ok(Vec::new());
        }
        Query {
            snapshot,
            conditions,
            best: Best::new(limit),
        }
        .run()
    })
}

/// The best `limit` (time, ordinal) pairs seen so far.
struct Best {
    limit: usize,
    /// A min-heap: the worst kept hit on top.
    heap: BinaryHeap<Reverse<(i64, u64)>>,
}

impl Best {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            heap: BinaryHeap::with_capacity(limit + 1),
        }
    }

    /// Whether a hit at (`time`, `ordinal`) would be kept.
    fn would_keep(&self, time: i64, ordinal: u64) -> bool {
        self.heap.len() < self.limit
            || self
                .heap
                .peek()
                .is_some_and(|Reverse(worst)| (time, ordinal) > *worst)
    }

    /// Whether a segment whose newest message is at `newest` may hold a hit to keep.
    fn may_improve(&self, newest: i64) -> bool {
        self.heap.len() < self.limit || self.heap.peek().is_some_and(|Reverse((time, _))| newest >= *time)
    }

    fn offer(&mut self, time: i64, ordinal: u64) {
        if self.would_keep(time, ordinal) {
            self.heap.push(Reverse((time, ordinal)));
            if self.heap.len() > self.limit {
                self.heap.pop();
            }
        }
    }

    /// Newest first.
    fn into_ordinals(self) -> Vec<u64> {
        let mut kept: Vec<(i64, u64)> = self.heap.into_iter().map(|Reverse(hit)| hit).collect();
        kept.sort_unstable_by(|a, b| b.cmp(a));
        kept.into_iter().map(|(_, ordinal)| ordinal).collect()
    }
}

struct Query<'s, 'c> {
    snapshot: &'s VaultSnapshot<'c>,
    conditions: Vec<Condition>,
    best: Best,
}

impl Query<'_, '_> {
    fn run(mut self) -> Result<Vec<SearchHit>, SearchError> {
        for (segment, info) in self.segments_newest_first()? {
            if !self.best.may_improve(info.newest_unix_s) {
                break;
            }
            self.collect(segment, &info)?;
        }
        let mut hits = Vec::new();
        for ordinal in std::mem::replace(&mut self.best, Best::new(0)).into_ordinals() {
            if let Some(record) = self.record(ordinal)? {
                hits.push(SearchHit {
                    group_id: record.group_id,
                    seq: record.seq,
                    sender_user: record.sender,
                    time_unix_s: record.time_unix_s,
                });
            }
        }
        Ok(hits)
    }

    /// The segments where every condition has postings (from keys alone), with the newest
    /// time in each, newest first.
    fn segments_newest_first(&self) -> Result<Vec<(u32, SegmentInfo)>, SearchError> {
        let mut common: Option<BTreeSet<u32>> = None;
        for condition in &self.conditions {
            let keys = self
                .snapshot
                .keys_by_prefix(NS, &rows::posting_prefix(&condition.tag))?;
            let segments: BTreeSet<u32> = keys.iter().filter_map(|key| rows::posting_segment(key)).collect();
            let narrowed: BTreeSet<u32> = match common {
                None => segments,
                Some(so_far) => so_far.intersection(&segments).copied().collect(),
            };
            if narrowed.is_empty() {
                return Ok(Vec::new());
            }
            common = Some(narrowed);
        }
        let mut ordered = Vec::new();
        for segment in common.unwrap_or_default() {
            let key = rows::segment_key(segment);
            if let Some(bytes) = self.snapshot.get(NS, &key)? {
                let info: SegmentInfo = rows::decode(&key, &bytes)?;
                ordered.push((segment, info));
            }
        }
        ordered.sort_unstable_by(|(a, a_info), (b, b_info)| {
            (b_info.newest_unix_s, b).cmp(&(a_info.newest_unix_s, a))
        });
        Ok(ordered)
    }

    /// Offers every hit of one segment to `best`, skipping the chunks of slots whose newest
    /// message is older than every hit kept.
    fn collect(&mut self, segment: u32, info: &SegmentInfo) -> Result<(), SearchError> {
        let mut matching: Option<Slots> = None;
        for condition in &self.conditions {
            let key = rows::posting_key(&condition.tag, segment);
            let Some(bytes) = self.snapshot.get(NS, &key)? else {
                return Ok(());
            };
            let slots = Slots::decode(&key, &bytes)?;
            let narrowed = match matching {
                None => slots,
                Some(mut so_far) => {
                    so_far.retain_common(&slots);
                    so_far
                }
            };
            if narrowed.is_empty() {
                return Ok(());
            }
            matching = Some(narrowed);
        }
        let Some(matching) = matching else {
            return Ok(());
        };
        let long_terms: Vec<String> = self.conditions.iter().filter_map(|c| c.verify.clone()).collect();
        let mut chunks: HashMap<u16, Vec<i64>> = HashMap::new();
        for slot in matching.iter_descending() {
            let (chunk, offset) = rows::chunk_of(slot);
            let bound = info.chunk_newest_unix_s.get(usize::from(chunk)).copied();
            if !self.best.may_improve(bound.unwrap_or(i64::MAX)) {
                continue;
            }
            let times = match chunks.entry(chunk) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    let key = rows::times_key(segment, chunk);
                    let times = match self.snapshot.get(NS, &key)? {
                        Some(bytes) => rows::decode_times(&key, &bytes)?,
                        None => Vec::new(),
                    };
                    entry.insert(times)
                }
            };
            let time = times.get(offset).copied().unwrap_or(REMOVED);
            let ordinal = rows::ordinal(segment, slot);
            if time == REMOVED || !self.best.would_keep(time, ordinal) {
                continue;
            }
            if !long_terms.is_empty() && !self.confirms(ordinal, &long_terms)? {
                continue;
            }
            self.best.offer(time, ordinal);
        }
        Ok(())
    }

    /// Whether every one of `terms` starts one of the message's tokens.
    fn confirms(&self, ordinal: u64, terms: &[String]) -> Result<bool, SearchError> {
        Ok(self.record(ordinal)?.is_some_and(|record| {
            terms
                .iter()
                .all(|term| record.tokens.iter().any(|token| token.starts_with(term.as_str())))
        }))
    }

    fn record(&self, ordinal: u64) -> Result<Option<Record>, SearchError> {
        let key = rows::record_key(ordinal);
        self.snapshot
            .get(NS, &key)?
            .map(|bytes| rows::decode(&key, &bytes))
            .transpose()
    }
}

#[cfg(test)]
mod tests;
