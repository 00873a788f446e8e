//! What a message is found by and what a query looks for: tokens, their prefixes, and the
//! keyed tags that name them in the index.

use std::collections::BTreeSet;

use redoubt_proto::{GroupId, UserName};
use sha2::{Digest, Sha256};

use super::{
    IndexedMessage, PREFIX_CHARS_MAX, PREFIX_CHARS_MIN, QUERY_TERMS_MAX, SearchQuery, TOKEN_CHARS_MAX,
    TOKENS_PER_MESSAGE_MAX,
};

/// Bytes of a tag: 96 bits, so that two of the index's (at most millions of) distinct
/// tags colliding, which would merge their postings, is out of reach (about 2^-50).
pub(super) const TAG_BYTES: usize = 12;

/// A keyed hash naming a prefix, a word, a conversation, a sender or a message.
pub(super) type Tag = [u8; TAG_BYTES];

/// Computes tags under the index's secret salt: SHA-256 over a domain label, the salt, a
/// label for the kind of input and the length-prefixed input. Without the salt (sealed
/// like every value) nobody can compute the tag of a guessed word and look for it.
pub(super) struct Tagger {
    /// The hash state after the domain label and the salt, cloned for each tag.
    base: Sha256,
}

impl Tagger {
    pub(super) fn new(salt: &[u8; 32]) -> Self {
        let mut base = Sha256::new();
        base.update(b"redoubt search index v1\0");
        base.update(salt);
        Self { base }
    }

    fn tag(&self, label: &[u8], input: &[u8]) -> Tag {
        let mut hash = self.base.clone();
        hash.update(label);
        hash.update([0]);
        hash.update((input.len() as u64).to_be_bytes());
        hash.update(input);
        let digest = hash.finalize();
        let mut tag = [0u8; TAG_BYTES];
        // A SHA-256 digest has 32 bytes, more than TAG_BYTES.
        tag.copy_from_slice(&digest[..TAG_BYTES]);
        tag
    }

    /// A token's first 2 to 12 characters (a whole token of that length included).
    pub(super) fn prefix(&self, prefix: &str) -> Tag {
        self.tag(b"prefix", prefix.as_bytes())
    }

    /// A one-character token, whole (too short to be a prefix worth indexing).
    pub(super) fn word(&self, word: &str) -> Tag {
        self.tag(b"word", word.as_bytes())
    }

    pub(super) fn group(&self, group: &GroupId) -> Tag {
        self.tag(b"group", group.as_bytes())
    }

    pub(super) fn sender(&self, user: &UserName) -> Tag {
        self.tag(b"sender", user.as_str().as_bytes())
    }

    /// One message, (conversation, sequence number): the key of its locator row.
    pub(super) fn message(&self, group: &GroupId, seq: u64) -> Tag {
        self.tag(
            b"message",
            &[group.as_bytes().as_slice(), &seq.to_be_bytes()].concat(),
        )
    }
}

/// The distinct tokens of `text` added to `out` while it holds fewer than `max`: runs of
/// Unicode alphanumeric characters, lower-cased (no other normalisation), cut at
/// [`TOKEN_CHARS_MAX`] characters. The mail index tokenises the same way.
pub(crate) fn add_tokens(text: &str, out: &mut BTreeSet<String>, max: usize) {
    let mut token = String::new();
    let mut chars = 0;
    let mut flush = |token: &mut String, chars: &mut usize| {
        if !token.is_empty() && (out.len() < max || out.contains(token.as_str())) {
            out.insert(std::mem::take(token));
        }
        token.clear();
        *chars = 0;
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            if chars < TOKEN_CHARS_MAX {
                token.extend(c.to_lowercase());
                chars += 1;
            }
        } else {
            flush(&mut token, &mut chars);
        }
    }
    flush(&mut token, &mut chars);
}

/// The first `n` characters of `token` (all of it when shorter).
fn first_chars(token: &str, n: usize) -> &str {
    match token.char_indices().nth(n) {
        Some((end, _)) => token.get(..end).unwrap_or(token),
        None => token,
    }
}

/// The distinct tokens a message is found by (sorted): from its text, then its
/// attachment's file name, at most [`TOKENS_PER_MESSAGE_MAX`].
pub(super) fn message_tokens(message: &IndexedMessage<'_>) -> Vec<String> {
    let mut tokens = BTreeSet::new();
    for text in std::iter::once(message.text).chain(message.attachment_name) {
        add_tokens(text, &mut tokens, TOKENS_PER_MESSAGE_MAX);
    }
    tokens.into_iter().collect()
}

/// Every tag a message with `tokens` from `sender` in `group` is posted under (sorted,
/// distinct): each token's prefixes of 2 to 12 characters (a one-character token whole),
/// its conversation and its sender. A function of what the record keeps, so removal
/// recomputes exactly the rows indexing wrote.
pub(super) fn message_tags(
    tagger: &Tagger,
    group: &GroupId,
    sender: &UserName,
    tokens: &[String],
) -> Vec<Tag> {
    let mut tags = BTreeSet::new();
    for token in tokens {
        let chars = token.chars().count();
        if chars < PREFIX_CHARS_MIN {
            tags.insert(tagger.word(token));
            continue;
        }
        for n in PREFIX_CHARS_MIN..=chars.min(PREFIX_CHARS_MAX) {
            tags.insert(tagger.prefix(first_chars(token, n)));
        }
    }
    tags.insert(tagger.group(group));
    tags.insert(tagger.sender(sender));
    tags.into_iter().collect()
}

/// One thing every hit must have: a posting tag, and for a term longer than
/// [`PREFIX_CHARS_MAX`] the term itself, which one of the message's tokens must
/// start with (the tag only says that a token starts with its first characters).
#[derive(Debug)]
pub(super) struct Condition {
    pub(super) tag: Tag,
    pub(super) verify: Option<String>,
}

/// The conditions of `query`: one per distinct term (at most [`QUERY_TERMS_MAX`]) and one
/// per filter. Empty when the query asks for nothing.
pub(super) fn conditions(tagger: &Tagger, query: &SearchQuery) -> Vec<Condition> {
    let mut terms = BTreeSet::new();
    add_tokens(&query.text, &mut terms, QUERY_TERMS_MAX);
    let mut conditions: Vec<Condition> = terms
        .into_iter()
        .map(|term| {
            let chars = term.chars().count();
            if chars < PREFIX_CHARS_MIN {
                Condition {
                    tag: tagger.word(&term),
                    verify: None,
                }
            } else if chars <= PREFIX_CHARS_MAX {
                Condition {
                    tag: tagger.prefix(&term),
                    verify: None,
                }
            } else {
                Condition {
                    tag: tagger.prefix(first_chars(&term, PREFIX_CHARS_MAX)),
                    verify: Some(term),
                }
            }
        })
        .collect();
    if let Some(group) = &query.group {
        conditions.push(Condition {
            tag: tagger.group(group),
            verify: None,
        });
    }
    if let Some(user) = &query.from {
        conditions.push(Condition {
            tag: tagger.sender(user),
            verify: None,
        });
    }
    conditions
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn tokens(text: &str) -> Vec<String> {
        let mut out = BTreeSet::new();
        add_tokens(text, &mut out, usize::MAX);
        out.into_iter().collect()
    }

    #[test]
    fn tokens_are_lower_cased_alphanumeric_runs_cut_at_the_maximum() {
        assert_eq!(
            tokens("Hello, WORLD! Grüße 2024-Q3 hello"),
            vec!["2024", "grüße", "hello", "q3", "world"]
        );
        let long = "x".repeat(TOKEN_CHARS_MAX + 10);
        assert_eq!(tokens(&long), vec!["x".repeat(TOKEN_CHARS_MAX)]);
        let mut bounded = BTreeSet::new();
        add_tokens("a b c d e a", &mut bounded, 3);
        assert_eq!(bounded.len(), 3);
    }

    #[test]
    fn a_message_is_tagged_by_each_prefix_and_its_filters() {
        let tagger = Tagger::new(&[1; 32]);
        let user = UserName::parse("bob").unwrap();
        let group = GroupId::from([2; 32]);
        let message = IndexedMessage {
            group_id: group,
            seq: 1,
            sender_user: &user,
            time_unix_s: 0,
            text: "I budget internationalisation",
            attachment_name: Some("plan.pdf"),
        };
        let tokens = message_tokens(&message);
        assert_eq!(tokens, vec!["budget", "i", "internationalisation", "pdf", "plan"]);
        let tags = message_tags(&tagger, &group, &user, &tokens);
        for prefix in [
            "bu",
            "bud",
            "budget",
            "in",
            "internationa",
            "pl",
            "plan",
            "pd",
            "pdf",
        ] {
            assert!(tags.contains(&tagger.prefix(prefix)), "{prefix}");
        }
        assert!(tags.contains(&tagger.word("i")));
        assert!(!tags.contains(&tagger.prefix("i")), "no one-character prefixes");
        assert!(
            !tags.contains(&tagger.prefix("internationali")),
            "no prefix longer than the maximum"
        );
        assert!(tags.contains(&tagger.group(&group)));
        assert!(tags.contains(&tagger.sender(&user)));
        // Another salt: other tags.
        let other = Tagger::new(&[9; 32]);
        assert_ne!(other.prefix("budget"), tagger.prefix("budget"));
        assert_ne!(tagger.prefix("bob"), tagger.sender(&user), "kinds are told apart");
    }

    #[test]
    fn long_query_terms_are_looked_up_by_their_prefix_and_verified() {
        let tagger = Tagger::new(&[1; 32]);
        let query = SearchQuery {
            text: "Internationalis x".into(),
            group: None,
            from: None,
            limit: 10,
        };
        let conditions = conditions(&tagger, &query);
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0].tag, tagger.prefix("internationa"));
        assert_eq!(conditions[0].verify.as_deref(), Some("internationalis"));
        assert_eq!(conditions[1].tag, tagger.word("x"));
    }
}
