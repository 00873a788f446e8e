#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;
use crate::vault::{DataKey, LockedVault};

fn open_vault(dir: &Path) -> Vault {
    LockedVault::open(&dir.join("vault.db"))
        .unwrap()
        .unlock(DataKey::generate())
        .unwrap()
}

fn user(name: &str) -> UserName {
    UserName::parse(name).unwrap()
}

fn group(id: u8) -> GroupId {
    GroupId::from([id; 32])
}

/// A message as the tests write it: (group, seq, sender, time, text, attachment name).
#[derive(Debug, Clone)]
struct Message {
    group: GroupId,
    seq: u64,
    sender: UserName,
    time: i64,
    text: String,
    attachment: Option<String>,
}

fn message(group_id: u8, seq: u64, sender: &str, time: i64, text: &str) -> Message {
    Message {
        group: group(group_id),
        seq,
        sender: user(sender),
        time,
        text: text.into(),
        attachment: None,
    }
}

impl Message {
    fn indexed(&self) -> IndexedMessage<'_> {
        IndexedMessage {
            group_id: self.group,
            seq: self.seq,
            sender_user: &self.sender,
            time_unix_s: self.time,
            text: &self.text,
            attachment_name: self.attachment.as_deref(),
        }
    }
}

fn index(vault: &Vault, messages: &[Message]) -> usize {
    let indexed: Vec<IndexedMessage<'_>> = messages.iter().map(Message::indexed).collect();
    vault.transaction_with(|tx| index_messages(tx, &indexed)).unwrap()
}

fn unindex(vault: &Vault, messages: &[(GroupId, u64)]) -> usize {
    vault
        .transaction_with(|tx| unindex_messages(tx, messages))
        .unwrap()
}

fn query(text: &str) -> SearchQuery {
    SearchQuery {
        text: text.into(),
        limit: 100,
        ..SearchQuery::default()
    }
}

/// (group's first byte, seq) of each hit, in order.
fn find(vault: &Vault, query: &SearchQuery) -> Vec<(u8, u64)> {
    search(vault, query)
        .unwrap()
        .into_iter()
        .map(|hit| (hit.group_id.as_bytes()[0], hit.seq))
        .collect()
}

fn text_find(vault: &Vault, text: &str) -> Vec<(u8, u64)> {
    find(vault, &query(text))
}

/// The index's rows as stored: (key, sealed value).
fn index_rows(vault: &Vault) -> Vec<(Vec<u8>, Vec<u8>)> {
    vault
        .raw_rows()
        .into_iter()
        .filter(|(ns, _, _)| ns == NS)
        .map(|(_, key, value)| (key, value))
        .collect()
}

#[test]
fn words_and_prefixes_are_found_in_any_case() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open_vault(dir.path());
    index(
        &vault,
        &[
            message(1, 1, "alice", 100, "The Budget for Q3 is ready"),
            message(1, 2, "bob", 200, "budgetary concerns, again"),
            message(1, 3, "bob", 300, "Lunch? ÉCLAIRS at noon"),
            Message {
                attachment: Some("roadmap-2031.pdf".into()),
                ..message(2, 1, "carol", 400, "")
            },
        ],
    );
    assert_eq!(text_find(&vault, "budget"), vec![(1, 2), (1, 1)]);
    assert_eq!(text_find(&vault, "BUDGETARY"), vec![(1, 2)]);
    assert_eq!(
        text_find(&vault, "bu"),
        vec![(1, 2), (1, 1)],
        "two-character prefix"
    );
    assert_eq!(
        text_find(&vault, "éclair"),
        vec![(1, 3)],
        "non-ASCII, lower-cased"
    );
    assert_eq!(text_find(&vault, "roadmap"), vec![(2, 1)], "attachment name");
    assert_eq!(text_find(&vault, "2031"), vec![(2, 1)]);
    assert_eq!(text_find(&vault, "q3"), vec![(1, 1)]);
    assert!(text_find(&vault, "budgets").is_empty(), "longer than every word");
    assert!(text_find(&vault, "udget").is_empty(), "infixes are not prefixes");
    assert!(text_find(&vault, "").is_empty(), "no term: nothing");
    assert!(text_find(&vault, "?!").is_empty());
}

#[test]
fn one_character_terms_match_whole_words_only() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open_vault(dir.path());
    index(
        &vault,
        &[
            message(1, 1, "alice", 1, "a plan"),
            message(1, 2, "alice", 2, "another plan"),
        ],
    );
    assert_eq!(text_find(&vault, "a"), vec![(1, 1)]);
    assert_eq!(text_find(&vault, "an"), vec![(1, 2)]);
}

#[test]
fn terms_longer_than_the_longest_prefix_are_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open_vault(dir.path());
    index(
        &vault,
        &[
            message(1, 1, "alice", 1, "internationalization"),
            message(1, 2, "alice", 2, "internationalisation"),
            message(1, 3, "alice", 3, "international"),
        ],
    );
    assert_eq!(text_find(&vault, "internationa"), vec![(1, 3), (1, 2), (1, 1)]);
    assert_eq!(text_find(&vault, "internationali"), vec![(1, 2), (1, 1)]);
    assert_eq!(text_find(&vault, "internationaliz"), vec![(1, 1)]);
    assert_eq!(text_find(&vault, "internationalisation"), vec![(1, 2)]);
    assert!(text_find(&vault, "internationalizations").is_empty());
}

#[test]
fn every_term_and_filter_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open_vault(dir.path());
    index(
        &vault,
        &[
            message(1, 1, "alice", 10, "deploy the release tonight"),
            message(1, 2, "bob", 20, "release notes drafted"),
            message(2, 1, "bob", 30, "deploy release to staging"),
            message(2, 2, "alice", 40, "staging is down"),
        ],
    );
    assert_eq!(text_find(&vault, "release deploy"), vec![(2, 1), (1, 1)]);
    assert_eq!(text_find(&vault, "rel dep stag"), vec![(2, 1)]);
    assert!(text_find(&vault, "release down").is_empty());
    let in_group = |text: &str, g: u8| SearchQuery {
        group: Some(group(g)),
        ..query(text)
    };
    assert_eq!(find(&vault, &in_group("release", 1)), vec![(1, 2), (1, 1)]);
    assert_eq!(find(&vault, &in_group("release", 2)), vec![(2, 1)]);
    assert!(find(&vault, &in_group("release", 3)).is_empty());
    let from = |text: &str, sender: &str| SearchQuery {
        from: Some(user(sender)),
        ..query(text)
    };
    assert_eq!(find(&vault, &from("release", "bob")), vec![(2, 1), (1, 2)]);
    assert_eq!(find(&vault, &from("staging", "alice")), vec![(2, 2)]);
    assert!(find(&vault, &from("release", "carol")).is_empty());
    // Filters alone list what they select.
    let all_from_alice = SearchQuery {
        from: Some(user("alice")),
        group: Some(group(2)),
        ..query("")
    };
    assert_eq!(find(&vault, &all_from_alice), vec![(2, 2)]);
    // The hit says who sent it and when.
    let hits = search(&vault, &from("staging", "alice")).unwrap();
    assert_eq!(
        hits,
        vec![SearchHit {
            group_id: group(2),
            seq: 2,
            sender_user: user("alice"),
            time_unix_s: 40,
        }]
    );
}

#[test]
fn hits_are_newest_first_across_segments_and_limited() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open_vault(dir.path());
    // Three segments' worth. Arrival order is not time order: the first segment holds
    // the newest messages (as after importing old history), the times interleave.
    let count = 2 * SEGMENT_SLOTS + 100;
    let messages: Vec<Message> = (0..count)
        .map(|i| {
            let time = i64::try_from((count - i) * 7 % 10_007).unwrap();
            let text = if i % 3 == 0 { "common rare" } else { "common" };
            message(1, i, "alice", time, text)
        })
        .collect();
    for batch in messages.chunks(2_000) {
        index(&vault, batch);
    }
    let mut expected: Vec<(i64, u64)> = messages
        .iter()
        .filter(|m| m.text.contains("rare"))
        .map(|m| (m.time, m.seq))
        .collect();
    // Newest first; equal times: later arrival (here, higher seq) first.
    expected.sort_unstable_by(|a, b| b.cmp(a));
    for limit in [1, 10, 100, HITS_MAX] {
        let hits = search(
            &vault,
            &SearchQuery {
                limit,
                ..query("rare")
            },
        )
        .unwrap();
        let got: Vec<(i64, u64)> = hits.iter().map(|h| (h.time_unix_s, h.seq)).collect();
        assert_eq!(got, expected[..limit.min(expected.len())], "limit {limit}");
    }
    let zero = SearchQuery {
        limit: 0,
        ..query("rare")
    };
    assert!(search(&vault, &zero).unwrap().is_empty());
    let over = SearchQuery {
        limit: HITS_MAX + 5,
        ..query("common")
    };
    assert_eq!(search(&vault, &over).unwrap().len(), HITS_MAX);
}

#[test]
fn indexing_again_changes_nothing_and_a_change_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open_vault(dir.path());
    let first = message(1, 7, "alice", 50, "quarterly figures attached");
    index(&vault, std::slice::from_ref(&first));
    let before = index_rows(&vault);
    assert_eq!(index(&vault, std::slice::from_ref(&first)), 0);
    assert_eq!(index_rows(&vault), before, "not one byte rewritten");

    let changed = message(1, 7, "alice", 50, "monthly figures attached");
    assert_eq!(index(&vault, std::slice::from_ref(&changed)), 1);
    assert!(text_find(&vault, "quarterly").is_empty());
    assert_eq!(text_find(&vault, "monthly"), vec![(1, 7)]);
    assert_eq!(text_find(&vault, "figures"), vec![(1, 7)], "found once");
    // Twice in one batch, the last one wins.
    let last = message(1, 7, "alice", 50, "weekly figures");
    index(&vault, &[first.clone(), last]);
    assert!(text_find(&vault, "quarterly").is_empty());
    assert_eq!(text_find(&vault, "weekly figures"), vec![(1, 7)]);
}

#[test]
fn unindexing_removes_exactly_and_leaves_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open_vault(dir.path());
    // Nothing indexed yet: removing is a no-op that creates nothing.
    assert_eq!(unindex(&vault, &[(group(1), 1)]), 0);
    assert!(index_rows(&vault).is_empty());
    let messages: Vec<Message> = (1..=5)
        .map(|seq| {
            message(
                1,
                seq,
                "bob",
                i64::try_from(seq).unwrap(),
                &format!("status report {seq}"),
            )
        })
        .collect();
    index(&vault, &messages);
    vault
        .transaction_with(|tx| unindex_message(tx, &group(1), 2))
        .unwrap();
    assert_eq!(text_find(&vault, "status"), vec![(1, 5), (1, 4), (1, 3), (1, 1)]);
    assert!(text_find(&vault, "2").is_empty());
    assert_eq!(
        unindex(&vault, &[(group(1), 2), (group(9), 1)]),
        0,
        "already gone"
    );
    assert_eq!(
        unindex(
            &vault,
            &[(group(1), 1), (group(1), 3), (group(1), 4), (group(1), 5)]
        ),
        4
    );
    assert!(text_find(&vault, "status").is_empty());
    let keys: Vec<Vec<u8>> = index_rows(&vault).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        vec![rows::KEY_NEXT.to_vec(), rows::KEY_SALT.to_vec()],
        "no posting, time, segment, record or locator row left"
    );
}

/// A small deterministic generator (SplitMix64), so failures reproduce.
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
}

/// What a query must find, computed the slow way from the messages' text.
fn naive(messages: &[Message], terms: &[&str], query: &SearchQuery) -> Vec<(u8, u64)> {
    let mut found: Vec<&Message> = messages
        .iter()
        .filter(|m| query.group.is_none_or(|g| g == m.group))
        .filter(|m| query.from.as_ref().is_none_or(|u| *u == m.sender))
        .filter(|m| {
            let mut tokens = BTreeSet::new();
            terms::add_tokens(&m.text, &mut tokens, usize::MAX);
            terms.iter().all(|term| {
                if term.chars().count() < PREFIX_CHARS_MIN {
                    tokens.contains(*term)
                } else {
                    tokens.iter().any(|t| t.starts_with(term))
                }
            })
        })
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse((m.time, m.seq, m.group)));
    found
        .into_iter()
        .take(query.limit)
        .map(|m| (m.group.as_bytes()[0], m.seq))
        .collect()
}

#[test]
fn random_queries_find_what_a_scan_of_the_text_finds() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open_vault(dir.path());
    let words = [
        "alpha",
        "alps",
        "alpine",
        "beta",
        "bet",
        "betting",
        "gamma",
        "gam",
        "delta",
        "deltas",
        "x",
        "xy",
        "transcontinental",
        "transcontinentally",
        "transport",
        "é",
        "élan",
    ];
    let senders = ["alice", "bob", "carol"];
    let mut random = Random(42);
    // Distinct times (the order is then unique) spread over arrival order.
    let messages: Vec<Message> = (0..3_000u64)
        .map(|i| {
            let text: Vec<&str> = (0..1 + random.below(5))
                .map(|_| words[random.below(words.len())])
                .collect();
            let g = u8::try_from(1 + random.below(3)).unwrap();
            message(
                g,
                i,
                senders[random.below(3)],
                i64::try_from((i * 7_919) % 3_001).unwrap(),
                &text.join(" "),
            )
        })
        .collect();
    for batch in messages.chunks(700) {
        index(&vault, batch);
    }
    let terms = [
        "al",
        "alp",
        "alpi",
        "b",
        "be",
        "bet",
        "x",
        "xy",
        "g",
        "delta",
        "transc",
        "transcontinentall",
        "transcontinentals",
        "é",
        "él",
        "zzz",
    ];
    for _ in 0..60 {
        let picked: Vec<&str> = (0..1 + random.below(2))
            .map(|_| terms[random.below(terms.len())])
            .collect();
        let mut query = SearchQuery {
            text: picked.join(" "),
            limit: 1 + random.below(40),
            ..SearchQuery::default()
        };
        if random.below(3) == 0 {
            query.group = Some(group(u8::try_from(1 + random.below(3)).unwrap()));
        }
        if random.below(3) == 0 {
            query.from = Some(user(senders[random.below(3)]));
        }
        assert_eq!(
            find(&vault, &query),
            naive(&messages, &picked, &query),
            "{query:?}"
        );
    }
}

#[test]
fn no_word_name_or_conversation_reaches_a_key_or_the_file_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open_vault(dir.path());
    let canaries = ["zanzibarwalrus", "quokkamerger", "termsheetkumquat"];
    let secret = Message {
        attachment: Some("termsheetkumquat.pdf".into()),
        ..message(1, 1, "smithers", 1, "Confidential zanzibarwalrus quokkamerger")
    };
    index(&vault, &[secret]);
    assert_eq!(text_find(&vault, "zanzib quokkamerger termsheetk"), vec![(1, 1)]);
    for (key, _) in index_rows(&vault) {
        let lower = String::from_utf8_lossy(&key).to_lowercase();
        for word in canaries.iter().chain(&["smithers", "confidential"]) {
            // Every prefix of 4 or more characters too: those are what is indexed.
            for n in 4..=word.len() {
                assert!(!lower.contains(&word[..n]), "{:?} in key {key:?}", &word[..n]);
            }
        }
        assert!(!key.windows(32).any(|w| w == [1u8; 32]), "group id in a key");
    }
    drop(vault);
    for file in ["vault.db", "vault.db-wal"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        for word in canaries {
            assert!(
                !bytes
                    .windows(word.len())
                    .any(|w| w.eq_ignore_ascii_case(word.as_bytes())),
                "{word} in {file}"
            );
        }
    }
}

#[test]
fn an_empty_index_answers_empty_and_a_corrupt_row_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open_vault(dir.path());
    assert!(text_find(&vault, "anything").is_empty());
    assert!(index_rows(&vault).is_empty(), "a query creates nothing");
    assert!(needs_backfill(&vault).unwrap());
    vault.transaction_with(mark_backfilled).unwrap();
    assert!(!needs_backfill(&vault).unwrap());

    index(&vault, &[message(1, 1, "alice", 1, "hello")]);
    let posting = index_rows(&vault)
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| k.first() == Some(&b'p'))
        .unwrap();
    // Every posting row of the message: overwrite them all with a value that decodes to nothing.
    for (key, _) in index_rows(&vault) {
        if key.first() == Some(&b'p') {
            vault.put(NS, &key, b"\x07junk").unwrap();
        }
    }
    assert!(matches!(
        search(&vault, &query("hello")),
        Err(SearchError::Malformed { .. })
    ));
    assert!(posting.len() > 4);
}
