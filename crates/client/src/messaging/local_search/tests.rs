#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use redoubt_proto::{DeviceId, UserName};

use super::*;
use crate::messaging::delete_messages_before;
use crate::search::HITS_MAX;

/// A small deterministic generator (SplitMix64), so a failure reproduces.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    /// Roughly Zipf: index `i` about as likely as 1/(i+1).
    fn zipf(&mut self, n: usize) -> usize {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let x = ((n as f64 + 1.0).ln() * unit).exp() - 1.0;
        (x as usize).min(n - 1)
    }
}

/// `count` distinct words of 6 to 9 letters, none a prefix of another (so a word finds
/// exactly the messages holding it), each with a letter after `f` (so no run of hex
/// digits in a vault key can contain one).
fn vocabulary(random: &mut Random, count: usize) -> Vec<String> {
    let mut words: BTreeSet<String> = BTreeSet::new();
    while words.len() < count {
        let len = 6 + random.below(4);
        let word: String = (0..len)
            .map(|_| char::from(b'a' + u8::try_from(random.below(26)).unwrap()))
            .collect();
        let clashes = words
            .iter()
            .any(|w| w.starts_with(&word) || word.starts_with(w.as_str()));
        if word.bytes().any(|b| b > b'f') && !clashes {
            words.insert(word);
        }
    }
    let mut words: Vec<String> = words.into_iter().collect();
    // Shuffle so that frequency (by position) is unrelated to spelling.
    for i in (1..words.len()).rev() {
        words.swap(i, random.below(i + 1));
    }
    words
}

fn stored(seq: u64, sender: &UserName, time: i64, text: String) -> StoredMessage {
    StoredMessage {
        seq,
        sender_user: sender.clone(),
        sender_device: DeviceId::from([1; 16]),
        sent_at_unix_s: time,
        server_time_unix_s: time,
        text,
        attachment: None,
        history: false,
        event: false,
    }
}

/// Asserts two hit lists are equal, saying where they differ (not printing thousands).
fn assert_same(got: &[(GroupId, u64)], want: &[(GroupId, u64)], what: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: got {} hits, want {}; first difference at {at}: got {:?}, want {:?}",
            got.len(),
            want.len(),
            got.get(at),
            want.get(at)
        );
    }
}

fn ids(found: &[(GroupId, StoredMessage)]) -> Vec<(GroupId, u64)> {
    found.iter().map(|(g, m)| (*g, m.seq)).collect()
}

/// Runs of 6 or more ASCII lower-case letters in `bytes` that hold one of `words`.
fn words_in_clear(bytes: &[u8], words: &HashSet<&str>) -> Vec<String> {
    let mut found = Vec::new();
    for run in bytes
        .split(|b| !b.is_ascii_lowercase())
        .filter(|run| run.len() >= 6)
    {
        let run = String::from_utf8_lossy(run);
        for start in 0..run.len() {
            for end in start + 6..=run.len().min(start + 9) {
                if words.contains(&run[start..end]) {
                    found.push(run[start..end].to_owned());
                }
            }
        }
    }
    found
}

fn vault_bytes(dir: &Path) -> Vec<u8> {
    ["vault.db", "vault.db-wal"]
        .iter()
        .flat_map(|file| std::fs::read(dir.join(file)).unwrap_or_default())
        .collect()
}

/// The search test: 20,000 messages on one device; every word of a random sample
/// is found in exactly its messages; prefixes and AND work; retention's deletions leave
/// the index; the vault file holds no indexed word in clear.
#[test]
fn twenty_thousand_messages_are_found_by_word_and_prefix_until_retention_deletes_them() {
    const MESSAGES: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let profile = crate::profile::test_profile(dir.path());
    let vault = profile.vault().clone();
    let mut random = Random(2_024);
    let words = vocabulary(&mut random, 3_000);
    let groups: Vec<GroupId> = (1..=5u8).map(|i| GroupId::from([i; 32])).collect();
    let senders: Vec<UserName> = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
        .iter()
        .map(|n| UserName::parse(n).unwrap())
        .collect();

    // (conversation, message, its distinct words), in arrival order. Times mostly follow
    // arrival, some arrive late (as after a reconnect); all distinct, so order is unique.
    let mut all: Vec<(GroupId, StoredMessage, BTreeSet<String>)> = Vec::new();
    let mut next_seq: BTreeMap<GroupId, u64> = BTreeMap::new();
    for i in 0..MESSAGES {
        let group = groups[random.zipf(groups.len())];
        let seq = next_seq.entry(group).or_insert(0);
        *seq += 1;
        let len = 3 + random.below(10);
        let text: Vec<&str> = (0..len)
            .map(|_| words[random.zipf(words.len())].as_str())
            .collect();
        // Late by a time no other message has (not a multiple of 10).
        let late = if random.below(20) == 0 { 3_005 } else { 0 };
        let time = 1_700_000_000 + i64::try_from(i * 10).unwrap() - late;
        let sender = &senders[random.below(senders.len())];
        let message = stored(*seq, sender, time, text.join(" "));
        all.push((group, message, text.into_iter().map(str::to_owned).collect()));
    }
    // Large batches keep the set-up short in debug builds (where sealing is slow).
    for batch in all.chunks(5_000) {
        let batch: Vec<(GroupId, StoredMessage)> = batch.iter().map(|(g, m, _)| (*g, m.clone())).collect();
        store_messages(&vault, &batch).unwrap();
    }

    // What a query must return, the slow way: newest first, at most HITS_MAX.
    let expected = |live: &[&(GroupId, StoredMessage, BTreeSet<String>)],
                    matches: &dyn Fn(&BTreeSet<String>) -> bool| {
        let mut hits: Vec<(i64, GroupId, u64)> = live
            .iter()
            .filter(|(_, _, w)| matches(w))
            .map(|(g, m, _)| (m.sent_at_unix_s, *g, m.seq))
            .collect();
        hits.sort_unstable_by(|a, b| b.cmp(a));
        hits.truncate(HITS_MAX);
        hits.into_iter().map(|(_, g, s)| (g, s)).collect::<Vec<_>>()
    };
    let run = |text: &str| {
        let query = SearchQuery {
            text: text.to_owned(),
            limit: HITS_MAX,
            ..SearchQuery::default()
        };
        ids(&search_messages(&vault, &query).unwrap())
    };
    let live: Vec<&(GroupId, StoredMessage, BTreeSet<String>)> = all.iter().collect();

    // Words: a random sample of the vocabulary (most are rare) and the ten commonest.
    let mut sample: Vec<&String> = (0..150).map(|_| &words[random.below(words.len())]).collect();
    sample.extend(&words[..10]);
    let mut found_any = 0;
    for word in &sample {
        let want = expected(&live, &|w| w.contains(word.as_str()));
        found_any += usize::from(!want.is_empty());
        assert_same(&run(&word.to_uppercase()), &want, &format!("word {word}"));
    }
    assert!(found_any > 100, "the sample exercises real hits ({found_any})");
    // Prefixes of 2 to 5 characters.
    for _ in 0..40 {
        let word = &words[random.zipf(words.len())];
        let prefix = &word[..2 + random.below(4)];
        let want = expected(&live, &|w| w.iter().any(|t| t.starts_with(prefix)));
        assert!(!want.is_empty());
        assert_same(&run(prefix), &want, &format!("prefix {prefix}"));
    }
    // Two words of one message, and a word with a filter.
    for _ in 0..20 {
        let (group, message, ws) = &all[random.below(all.len())];
        let ws: Vec<&String> = ws.iter().collect();
        let (a, b) = (ws[0], ws[ws.len() - 1]);
        let want = expected(&live, &|w| w.contains(a) && w.contains(b));
        assert!(want.contains(&(*group, message.seq)));
        assert_same(&run(&format!("{a} {b}")), &want, &format!("{a} AND {b}"));
        let query = SearchQuery {
            text: a.clone(),
            group: Some(*group),
            from: Some(message.sender_user.clone()),
            limit: HITS_MAX,
        };
        let selected: Vec<&(GroupId, StoredMessage, BTreeSet<String>)> = live
            .iter()
            .copied()
            .filter(|(g, m, _)| g == group && m.sender_user == message.sender_user)
            .collect();
        let filtered = expected(&selected, &|w| w.contains(a));
        assert_same(
            &ids(&search_messages(&vault, &query).unwrap()),
            &filtered,
            &format!("{a} filtered"),
        );
    }

    // Retention deletes the oldest fifth (by time): they are found no more, the rest are.
    let cutoff = 1_700_000_000 + i64::try_from(MESSAGES * 2).unwrap();
    let data = vault.app_storage();
    let deleted = all.iter().filter(|(_, m, _)| m.sent_at_unix_s < cutoff).count();
    assert_eq!(delete_messages_before(&data, cutoff).unwrap(), deleted as u64);
    let live: Vec<&(GroupId, StoredMessage, BTreeSet<String>)> = all
        .iter()
        .filter(|(_, m, _)| m.sent_at_unix_s >= cutoff)
        .collect();
    let gone: HashSet<(GroupId, u64)> = all
        .iter()
        .filter(|(_, m, _)| m.sent_at_unix_s < cutoff)
        .map(|(g, m, _)| (*g, m.seq))
        .collect();
    for (group, message, ws) in all.iter().filter(|(_, m, _)| m.sent_at_unix_s < cutoff).take(12) {
        for word in ws {
            let found = run(word);
            assert!(
                !found.contains(&(*group, message.seq)),
                "deleted message found by {word}"
            );
            assert!(found.iter().all(|id| !gone.contains(id)));
            assert_same(
                &found,
                &expected(&live, &|w| w.contains(word.as_str())),
                &format!("{word} after retention"),
            );
        }
    }

    // Nothing in clear: not the index's words, not the messages'.
    drop((data, vault, profile));
    let vocabulary: HashSet<&str> = words.iter().map(String::as_str).collect();
    let leaked = words_in_clear(&vault_bytes(dir.path()), &vocabulary);
    assert!(leaked.is_empty(), "in clear in vault.db: {leaked:?}");
    // The scan itself works: the same words in clear are found.
    let canary = format!("xx {} yy", words[0]);
    assert_eq!(
        words_in_clear(canary.as_bytes(), &vocabulary),
        vec![words[0].clone()]
    );
}

#[test]
fn messages_stored_before_the_index_are_indexed_once() {
    let dir = tempfile::tempdir().unwrap();
    let profile = crate::profile::test_profile(dir.path());
    let vault = profile.vault().clone();
    let data = vault.app_storage();
    let alice = UserName::parse("alice").unwrap();
    let group = GroupId::from([7; 32]);
    // An older version stored these without an index, newest first in key order.
    let count = BACKFILL_BATCH_MESSAGES as u64 * 2 + 10;
    for seq in 1..=count {
        let message = stored(
            seq,
            &alice,
            10_000 - i64::try_from(seq).unwrap(),
            format!("backlog item{seq}"),
        );
        data.insert(&message_key(&group, seq), &postcard::to_stdvec(&message).unwrap())
            .unwrap();
    }
    // One was indexed already (stored by this version before the backfill ran).
    store(
        &data,
        &group,
        &stored(count + 1, &alice, 1, "backlog fresh".into()),
    )
    .unwrap();
    let query = |text: &str| SearchQuery {
        text: text.into(),
        limit: 5,
        ..SearchQuery::default()
    };
    assert_eq!(search_messages(&vault, &query("backlog")).unwrap().len(), 1);

    assert_eq!(backfill(&data).unwrap(), usize::try_from(count).unwrap());
    let found = search_messages(&vault, &query("backlog")).unwrap();
    let seqs: Vec<u64> = found.iter().map(|(_, m)| m.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5], "newest first");
    assert_eq!(
        ids(&search_messages(&vault, &query("item1000")).unwrap()),
        vec![(group, 1_000)]
    );
    // Once: a message stored raw now is not picked up by another backfill.
    data.insert(
        &message_key(&group, 9_999),
        &postcard::to_stdvec(&stored(9_999, &alice, 5, "straggler".into())).unwrap(),
    )
    .unwrap();
    assert_eq!(backfill(&data).unwrap(), 0);
    assert!(search_messages(&vault, &query("straggler")).unwrap().is_empty());
}

#[test]
fn an_attachment_is_found_by_its_file_name_not_its_description() {
    let dir = tempfile::tempdir().unwrap();
    let profile = crate::profile::test_profile(dir.path());
    let vault = profile.vault().clone();
    let alice = UserName::parse("alice").unwrap();
    let group = GroupId::from([3; 32]);
    let mut file = stored(1, &alice, 100, "[file] Roadmap-2031.pdf (2048 bytes)".into());
    file.attachment = Some(redoubt_mls::Attachment {
        blob_id: redoubt_proto::BlobId::from([5; 16]),
        name: "Roadmap-2031.pdf".into(),
        bytes: 2048,
        sha256: [6; 32],
        key: [7; 32],
        chunk_count: 1,
        sent_at_unix_s: 100,
    });
    store_messages(
        &vault,
        &[
            (group, file),
            (group, stored(2, &alice, 200, "the file is big".into())),
        ],
    )
    .unwrap();
    let find = |text: &str| {
        let query = SearchQuery {
            text: text.into(),
            limit: 10,
            ..SearchQuery::default()
        };
        ids(&search_messages(&vault, &query).unwrap())
    };
    assert_eq!(find("roadmap 2031"), vec![(group, 1)]);
    assert_eq!(find("pdf"), vec![(group, 1)]);
    assert_eq!(find("file"), vec![(group, 2)], "not the description's words");
    assert!(find("bytes").is_empty());
    // Retention takes a message out of the index with its receipts.
    let data = vault.app_storage();
    assert_eq!(delete_messages_before(&data, 150).unwrap(), 1);
    assert!(find("roadmap").is_empty());
    assert_eq!(find("file"), vec![(group, 2)]);
}
