//! The index's rows: their keys (see the layout in `search.rs`) and what their sealed
//! values hold, with encoders and checked decoders.

use redoubt_proto::{GroupId, UserName};
use serde::{Deserialize, Serialize};

use super::SearchError;
use super::terms::{TAG_BYTES, Tag};

/// Messages per segment of the index. A posting row holds one segment's slots, so it is at
/// most `SEGMENT_SLOTS / 8` bytes (a bitmap: 2 KiB) however common its word, and a
/// newest-first query reads only the newest segments it needs. Bigger segments mean fewer
/// rows (each sealed row costs 40 bytes of nonce and tag, and most postings are a slot or
/// two); smaller ones, smaller rows to rewrite. Unit tests use 1,024 so that their
/// thousands of messages span many segments.
pub const SEGMENT_SLOTS: u64 = if cfg!(test) { 1_024 } else { 16_384 };
/// Messages per row of times: a live message rewrites one such row (2 KiB), not the whole
/// segment's, and a query reads only the rows whose newest time can still make its list.
pub(super) const TIME_CHUNK_SLOTS: u64 = 256;
const TIME_CHUNKS: u64 = SEGMENT_SLOTS / TIME_CHUNK_SLOTS;
const BITMAP_WORDS: usize = (SEGMENT_SLOTS / 64) as usize;
/// Below this many slots a posting row is a list of 2-byte slots, from it on a bitmap.
const SPARSE_SLOTS_MAX: usize = (SEGMENT_SLOTS / 16) as usize;
/// The time of a slot whose message was removed.
pub(super) const REMOVED: i64 = i64::MIN;

pub(super) const KEY_SALT: &[u8] = b"salt";
pub(super) const KEY_NEXT: &[u8] = b"next";
pub(super) const KEY_VERSION: &[u8] = b"version";

/// `p ‖ tag`: every segment's posting row of one tag starts so.
pub(super) fn posting_prefix(tag: &Tag) -> Vec<u8> {
    [b"p".as_slice(), tag].concat()
}

/// `p ‖ tag ‖ segment`: the slots of the segment's messages posted under the tag.
pub(super) fn posting_key(tag: &Tag, segment: u32) -> Vec<u8> {
    [b"p".as_slice(), tag, &segment.to_be_bytes()].concat()
}

/// The segment a posting key names.
pub(super) fn posting_segment(key: &[u8]) -> Option<u32> {
    let tail: [u8; 4] = key.get(1 + TAG_BYTES..)?.try_into().ok()?;
    Some(u32::from_be_bytes(tail))
}

/// `d ‖ segment`: the segment's [`SegmentInfo`].
pub(super) fn segment_key(segment: u32) -> Vec<u8> {
    [b"d".as_slice(), &segment.to_be_bytes()].concat()
}

/// `t ‖ segment ‖ chunk`: the times of [`TIME_CHUNK_SLOTS`] slots.
pub(super) fn times_key(segment: u32, chunk: u16) -> Vec<u8> {
    [b"t".as_slice(), &segment.to_be_bytes(), &chunk.to_be_bytes()].concat()
}

/// Every times key of a segment.
pub(super) fn all_times_keys(segment: u32) -> impl Iterator<Item = Vec<u8>> {
    (0..TIME_CHUNKS).filter_map(move |chunk| Some(times_key(segment, u16::try_from(chunk).ok()?)))
}

/// `m ‖ ordinal`: the message's [`Record`].
pub(super) fn record_key(ordinal: u64) -> Vec<u8> {
    [b"m".as_slice(), &ordinal.to_be_bytes()].concat()
}

/// `r ‖ message tag`: the ordinal of (conversation, sequence number).
pub(super) fn locator_key(message: &Tag) -> Vec<u8> {
    [b"r".as_slice(), message].concat()
}

/// Where an ordinal lives: (segment, slot in the segment).
pub(super) fn place(ordinal: u64) -> Result<(u32, u16), SearchError> {
    let segment = u32::try_from(ordinal / SEGMENT_SLOTS).map_err(|_| SearchError::Full)?;
    // Below SEGMENT_SLOTS (at most 65,536), so it fits.
    let slot = u16::try_from(ordinal % SEGMENT_SLOTS).map_err(|_| SearchError::Full)?;
    Ok((segment, slot))
}

pub(super) fn ordinal(segment: u32, slot: u16) -> u64 {
    u64::from(segment) * SEGMENT_SLOTS + u64::from(slot)
}

/// (chunk, offset in the chunk) of a slot.
pub(super) fn chunk_of(slot: u16) -> (u16, usize) {
    let chunk_slots = TIME_CHUNK_SLOTS as u16;
    (slot / chunk_slots, usize::from(slot % chunk_slots))
}

fn malformed(key: &[u8]) -> SearchError {
    SearchError::Malformed {
        key: data_encoding::HEXLOWER.encode(key),
    }
}

/// The set of a segment's slots posted under one tag.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Slots([u64; BITMAP_WORDS]);

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter_descending()).finish()
    }
}

impl Slots {
    pub(super) fn empty() -> Self {
        Self([0; BITMAP_WORDS])
    }

    fn word_and_bit(slot: u16) -> (usize, u64) {
        (usize::from(slot / 64), 1 << (slot % 64))
    }

    pub(super) fn insert(&mut self, slot: u16) {
        let (word, bit) = Self::word_and_bit(slot);
        if let Some(w) = self.0.get_mut(word) {
            *w |= bit;
        }
    }

    pub(super) fn remove(&mut self, slot: u16) {
        let (word, bit) = Self::word_and_bit(slot);
        if let Some(w) = self.0.get_mut(word) {
            *w &= !bit;
        }
    }

    pub(super) fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// Keeps only the slots `other` holds too.
    pub(super) fn retain_common(&mut self, other: &Slots) {
        for (w, o) in self.0.iter_mut().zip(other.0.iter()) {
            *w &= o;
        }
    }

    /// The slots, highest first: arrival order reversed, which is roughly newest first.
    pub(super) fn iter_descending(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().enumerate().rev().flat_map(|(index, word)| {
            let mut bits = *word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let top = 63 - bits.leading_zeros();
                bits &= !(1u64 << top);
                // index < BITMAP_WORDS and top < 64: the slot is below SEGMENT_SLOTS.
                u16::try_from(index * 64 + top as usize).ok()
            })
        })
    }

    /// A list of 2-byte slots (`0` first) while that is shorter, else a bitmap (`1`).
    pub(super) fn encode(&self) -> Vec<u8> {
        let len = self.len();
        if len < SPARSE_SLOTS_MAX {
            let mut out = Vec::with_capacity(1 + 2 * len);
            out.push(0);
            let mut slots: Vec<u16> = self.iter_descending().collect();
            slots.reverse();
            for slot in slots {
                out.extend_from_slice(&slot.to_le_bytes());
            }
            out
        } else {
            let mut out = Vec::with_capacity(1 + 8 * BITMAP_WORDS);
            out.push(1);
            for word in &self.0 {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out
        }
    }

    pub(super) fn decode(key: &[u8], bytes: &[u8]) -> Result<Self, SearchError> {
        let mut slots = Self::empty();
        match bytes.split_first() {
            Some((0, list)) if list.len().is_multiple_of(2) => {
                for pair in list.chunks_exact(2) {
                    let slot = u16::from_le_bytes([pair[0], pair[1]]);
                    if u64::from(slot) >= SEGMENT_SLOTS {
                        return Err(malformed(key));
                    }
                    slots.insert(slot);
                }
            }
            Some((1, bitmap)) if bitmap.len() == 8 * BITMAP_WORDS => {
                for (word, bytes) in slots.0.iter_mut().zip(bitmap.chunks_exact(8)) {
                    let bytes: [u8; 8] = bytes.try_into().map_err(|_| malformed(key))?;
                    *word = u64::from_le_bytes(bytes);
                }
            }
            _ => return Err(malformed(key)),
        }
        Ok(slots)
    }
}

/// Times of a chunk's slots, 8 bytes each (little-endian), [`REMOVED`] for a removed
/// message or a slot not (yet) used.
pub(super) fn decode_times(key: &[u8], bytes: &[u8]) -> Result<Vec<i64>, SearchError> {
    if !bytes.len().is_multiple_of(8) || bytes.len() as u64 > 8 * TIME_CHUNK_SLOTS {
        return Err(malformed(key));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        .collect())
}

pub(super) fn encode_times(times: &[i64]) -> Vec<u8> {
    times.iter().flat_map(|t| t.to_le_bytes()).collect()
}

/// What the index knows of a segment as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SegmentInfo {
    /// The newest time of any message ever indexed in it (removals do not lower it, so it
    /// stays an upper bound): a query reads segments by this, newest first.
    pub(super) newest_unix_s: i64,
    /// The same per chunk of [`TIME_CHUNK_SLOTS`]: a query skips the chunks (and their
    /// times rows) that cannot hold a hit newer than the ones it has.
    pub(super) chunk_newest_unix_s: Vec<i64>,
    /// Messages in it now; at 0 its rows go.
    pub(super) live: u32,
}

/// What the index keeps of one message (`m ‖ ordinal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) group_id: GroupId,
    pub(super) seq: u64,
    pub(super) sender: UserName,
    pub(super) time_unix_s: i64,
    /// Its distinct tokens (sorted), which its tags are computed from, so that removal
    /// takes it out of exactly the rows indexing wrote; they also confirm query terms
    /// longer than the longest indexed prefix. (The tokens rather than the tags: a sixth of
    /// the bytes.)
    pub(super) tokens: Vec<String>,
}

pub(super) fn encode<T: Serialize>(key: &[u8], value: &T) -> Result<Vec<u8>, SearchError> {
    postcard::to_stdvec(value).map_err(|_| malformed(key))
}

pub(super) fn decode<'a, T: Deserialize<'a>>(key: &[u8], bytes: &'a [u8]) -> Result<T, SearchError> {
    postcard::from_bytes(bytes).map_err(|_| malformed(key))
}

/// An 8-byte big-endian number (the next ordinal, a locator's ordinal, the version).
pub(super) fn decode_u64(key: &[u8], bytes: &[u8]) -> Result<u64, SearchError> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| malformed(key))?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn slots_round_trip_sparse_and_dense() {
        let max = usize::try_from(SEGMENT_SLOTS).unwrap();
        let sparse = SPARSE_SLOTS_MAX;
        for count in [0usize, 1, 2, sparse - 1, sparse, sparse + 1, max] {
            let mut slots = Slots::empty();
            for i in 0..count {
                slots.insert(u16::try_from(i * max / count.max(1)).unwrap());
            }
            assert_eq!(slots.len(), count);
            let encoded = slots.encode();
            assert!(encoded.len() <= 1 + max / 8, "{count}: {} bytes", encoded.len());
            assert_eq!(Slots::decode(b"k", &encoded).unwrap(), slots, "{count}");
        }
        let last = u16::try_from(max - 1).unwrap();
        let mut slots = Slots::empty();
        for slot in [last, 0, 64, 63, 1000] {
            slots.insert(slot);
        }
        slots.remove(1000);
        assert_eq!(slots.iter_descending().collect::<Vec<_>>(), vec![last, 64, 63, 0]);
        let mut other = Slots::empty();
        other.insert(64);
        other.insert(5);
        slots.retain_common(&other);
        assert_eq!(slots.iter_descending().collect::<Vec<_>>(), vec![64]);
    }

    #[test]
    fn malformed_rows_are_errors() {
        for bad in [&[][..], &[0, 1], &[2, 0, 0], &[1, 0], &[0, 0xff, 0xff]] {
            assert!(Slots::decode(b"k", bad).is_err(), "{bad:?}");
        }
        assert!(decode_times(b"k", &[0; 7]).is_err());
        assert!(decode_times(b"k", &vec![0; 8 * 257]).is_err());
        assert_eq!(
            decode_times(b"k", &encode_times(&[5, REMOVED])).unwrap(),
            vec![5, REMOVED]
        );
        assert!(decode_u64(b"k", &[1, 2]).is_err());
    }

    #[test]
    fn places_and_keys_order_as_designed() {
        assert_eq!(place(0).unwrap(), (0, 0));
        assert_eq!(place(SEGMENT_SLOTS + 1).unwrap(), (1, 1));
        assert_eq!(ordinal(1, 1), SEGMENT_SLOTS + 1);
        assert_eq!(chunk_of(257), (1, 1));
        let tag = [7u8; TAG_BYTES];
        assert!(posting_key(&tag, 1) < posting_key(&tag, 2));
        assert!(posting_key(&tag, 2).starts_with(&posting_prefix(&tag)));
        assert_eq!(posting_segment(&posting_key(&tag, 513)), Some(513));
        assert_eq!(all_times_keys(3).count(), 4);
    }
}
