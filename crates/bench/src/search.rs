//! `search`: query latency of a device's local history search (`redoubt_client::search`)
//! over `--messages` (100,000) messages, against a plain SQLite FTS5 table holding the same
//! plaintext, measured in the same run. No server: this is all on the device.
//!
//! Set-up (outside the timed window): a synthetic history in a real vault file (real
//! SQLite, every value sealed) — a vocabulary of `--vocabulary` made-up words whose use
//! follows a Zipf law (shorter words commoner, as in speech), messages of 1 to 30 words
//! spread over a year in `--conversations` conversations (their sizes Zipf too) among
//! `--senders` users, one in fifty an attachment found by its file name. Messages are stored
//! and indexed through `redoubt_client::store_messages` (the messenger's path, in
//! transactions of 1,000 here; live messages are one per transaction, timed separately).
//! The FTS5 table (`unicode61` tokenizer, no prefix index, conversation/sender/time as
//! unindexed columns) gets the same text in one transaction.
//!
//! Then a fixed set of queries (common, middling, rare and absent words, two-word ANDs,
//! prefixes of 2, 3 and 5 letters, conversation and sender filters) runs `--repeat` times,
//! round-robin, each engine in turn, newest first with `--limit` hits: ours through
//! `redoubt_client::search_messages` (index lookup, then each hit's stored message opened,
//! what `redoubt search` shows), FTS5 as `MATCH '"term"* …' ORDER BY time DESC LIMIT n`
//! reading the same columns. Both must return the same messages in the same order, or
//! the run fails.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use clap::Args;
use redoubt_client::search::SearchQuery;
use redoubt_client::{StoredMessage, Vault, search_messages, store_messages};
use redoubt_proto::{BlobId, DeviceId, GroupId, UserName};
use serde_json::json;

use crate::messaging::Percentiles;
use crate::report::{Report, Section};

/// Messages stored per transaction while building the history.
const BUILD_BATCH: usize = 1_000;
/// Messages stored one per transaction afterwards, as live messages arrive.
const LIVE_MESSAGES: usize = 200;
/// The history's span: a year, ending now.
const SPAN_S: i64 = 365 * 86_400;
/// The issue's target for p99.
const P99_TARGET_MS: f64 = 50.0;

#[derive(Debug, Args, Clone)]
pub struct SearchArgs {
    /// Messages in the device's history.
    #[arg(long, default_value_t = 100_000)]
    pub messages: usize,
    /// Distinct words they are made of.
    #[arg(long, default_value_t = 20_000)]
    pub vocabulary: usize,
    /// Conversations (sizes follow a Zipf law).
    #[arg(long, default_value_t = 12)]
    pub conversations: usize,
    /// Users who send them.
    #[arg(long, default_value_t = 30)]
    pub senders: usize,
    /// Times each query runs on each engine (after one warm-up run that checks results).
    #[arg(long, default_value_t = 40)]
    pub repeat: usize,
    /// Hits asked for (newest first).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Seed of the synthetic history.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// SplitMix64: a small deterministic generator, so every run builds the same history.
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
        (self.next() % n.max(1) as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.next() as u8)
    }
}

/// Samples ranks 0..n with probability proportional to 1/(rank+1).
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|rank| {
                total += 1.0 / (rank as f64 + 1.0);
                total
            })
            .collect();
        Self { cumulative }
    }

    fn sample(&self, random: &mut Random) -> usize {
        let target = random.unit() * self.cumulative.last().copied().unwrap_or(0.0);
        self.cumulative
            .partition_point(|c| *c < target)
            .min(self.cumulative.len().saturating_sub(1))
    }
}

/// `count` distinct pronounceable words, commonest (shortest, roughly) first.
fn vocabulary(random: &mut Random, count: usize) -> Vec<String> {
    const ONSETS: &[&str] = &[
        "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "ch",
        "cr", "dr", "fl", "gr", "pl", "pr", "sh", "st", "th", "tr",
    ];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "io", "ou"];
    const CODAS: &[&str] = &["", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck"];
    let mut words = std::collections::BTreeSet::new();
    while words.len() < count {
        let syllables = 1 + random.below(4);
        let mut word = String::new();
        for _ in 0..syllables {
            word.push_str(ONSETS[random.below(ONSETS.len())]);
            word.push_str(VOWELS[random.below(VOWELS.len())]);
        }
        word.push_str(CODAS[random.below(CODAS.len())]);
        words.insert(word);
    }
    // Shorter words commoner, as in speech; among equals, a random order.
    let mut ranked: Vec<(usize, u64, String)> =
        words.into_iter().map(|w| (w.len(), random.next(), w)).collect();
    ranked.sort_unstable();
    ranked.into_iter().map(|(_, _, w)| w).collect()
}

/// One message of the synthetic history, with what both engines index of it.
struct Message {
    group: usize,
    stored: StoredMessage,
    /// The text indexed: the message, or an attachment's file name.
    body: String,
}

struct History {
    words: Vec<String>,
    groups: Vec<GroupId>,
    group_names: Vec<String>,
    members: Vec<Vec<UserName>>,
    messages: Vec<Message>,
}

fn history(args: &SearchArgs) -> Result<History> {
    let mut random = Random(args.seed);
    let words = vocabulary(&mut random, args.vocabulary);
    let senders: Vec<UserName> = (0..args.senders.max(2))
        .map(|i| UserName::parse(&format!("user{i:03}")).map_err(|e| anyhow!("{e}")))
        .collect::<Result<_>>()?;
    let conversations = args.conversations.max(1);
    let groups: Vec<GroupId> = (0..conversations)
        .map(|_| GroupId::from(random.bytes::<32>()))
        .collect();
    let group_names = (0..conversations).map(|i| format!("conversation-{i}")).collect();
    let members: Vec<Vec<UserName>> = (0..conversations)
        .map(|_| {
            let size = 2 + random.below(7);
            (0..size)
                .map(|_| senders[random.below(senders.len())].clone())
                .collect()
        })
        .collect();
    let word_zipf = Zipf::new(words.len());
    let group_zipf = Zipf::new(conversations);
    let mut seqs = vec![0u64; conversations];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let step = (SPAN_S / args.messages.max(1) as i64).max(1);
    let mut time = now - SPAN_S;
    let mut messages = Vec::with_capacity(args.messages + LIVE_MESSAGES);
    for _ in 0..args.messages + LIVE_MESSAGES {
        // Strictly increasing, irregular times: every order is unique.
        time += 1 + random.below(2 * step as usize) as i64;
        let group = group_zipf.sample(&mut random);
        seqs[group] += 1;
        let sender = members[group][random.below(members[group].len())].clone();
        let (text, body, attachment) = if random.below(50) == 0 {
            let name = format!(
                "{}-{}.pdf",
                words[word_zipf.sample(&mut random)],
                words[word_zipf.sample(&mut random)]
            );
            let bytes = 1_000 + random.below(5_000_000) as u64;
            let attachment = redoubt_mls::Attachment {
                name: name.clone(),
                bytes,
                sha256: random.bytes(),
                key: random.bytes(),
                blob_id: BlobId::from(random.bytes::<16>()),
                chunk_count: 1,
                sent_at_unix_s: time,
            };
            (format!("[file] {name} ({bytes} bytes)"), name, Some(attachment))
        } else {
            // 1 to 30 words, most messages short.
            let length = 1 + (random.unit().powi(2) * 30.0) as usize;
            let text: Vec<&str> = (0..length)
                .map(|_| words[word_zipf.sample(&mut random)].as_str())
                .collect();
            let text = text.join(" ");
            (text.clone(), text, None)
        };
        messages.push(Message {
            group,
            stored: StoredMessage {
                seq: seqs[group],
                sender_user: sender,
                sender_device: DeviceId::from(random.bytes::<16>()),
                sent_at_unix_s: time,
                server_time_unix_s: time,
                text,
                attachment,
                history: false,
                event: false,
            },
            body,
        });
    }
    Ok(History {
        words,
        groups,
        group_names,
        members,
        messages,
    })
}

/// A query of the fixed set, for both engines.
struct Query {
    label: &'static str,
    terms: Vec<String>,
    group: Option<usize>,
    from: Option<UserName>,
}

fn queries(history: &History) -> Vec<Query> {
    let word = |rank: usize| history.words[rank.min(history.words.len() - 1)].clone();
    // The first `chars` characters of the first word from `rank` on that is longer.
    let prefix = |rank: usize, chars: usize| {
        let long = history.words[rank.min(history.words.len() - 1)..]
            .iter()
            .find(|w| w.chars().count() > chars)
            .unwrap_or(&history.words[0]);
        long.chars().take(chars).collect::<String>()
    };
    // The smallest conversation (last by Zipf rank), and someone who writes in the largest.
    let small = history.groups.len() - 1;
    let sender = history.members[0][0].clone();
    let query = |label, terms: Vec<String>, group, from| Query {
        label,
        terms,
        group,
        from,
    };
    vec![
        query("common word", vec![word(0)], None, None),
        query("middling word", vec![word(100)], None, None),
        query("rare word", vec![word(5_000)], None, None),
        query("absent word", vec!["qqxqq".into()], None, None),
        query("two common words", vec![word(3), word(60)], None, None),
        query("rare AND common", vec![word(2_000), word(1)], None, None),
        query("prefix of 2", vec![prefix(5, 2)], None, None),
        query("prefix of 3", vec![prefix(40, 3)], None, None),
        query("prefix of 5", vec![prefix(700, 5)], None, None),
        query(
            "common word, small conversation",
            vec![word(0)],
            Some(small),
            None,
        ),
        query(
            "middling word, one sender",
            vec![word(100)],
            None,
            Some(sender.clone()),
        ),
        query(
            "prefix, conversation and sender",
            vec![prefix(10, 3)],
            Some(0),
            Some(sender),
        ),
    ]
}

/// The FTS5 reference: the same plaintext in a virtual table, queried the plain way.
struct Fts {
    connection: rusqlite::Connection,
}

impl Fts {
    fn build(path: &Path, history: &History) -> Result<Self> {
        let mut connection = rusqlite::Connection::open(path)?;
        connection.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE VIRTUAL TABLE messages USING fts5(
                 body, conversation UNINDEXED, sender UNINDEXED, sent_at UNINDEXED, tokenize = 'unicode61'
             );",
        )?;
        let tx = connection.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO messages (rowid, body, conversation, sender, sent_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (rowid, message) in history.messages.iter().enumerate() {
                insert.execute(rusqlite::params![
                    rowid as i64,
                    message.body,
                    history.group_names[message.group],
                    message.stored.sender_user.as_str(),
                    message.stored.sent_at_unix_s,
                ])?;
            }
        }
        tx.commit()?;
        Ok(Self { connection })
    }

    /// Row ids (message indexes) of the hits, newest first, reading what a result shows.
    fn search(&self, history: &History, query: &Query, limit: usize) -> Result<Vec<usize>> {
        let matching: Vec<String> = query.terms.iter().map(|t| format!("\"{t}\"*")).collect();
        let mut sql =
            "SELECT rowid, body, conversation, sender, sent_at FROM messages WHERE messages MATCH ?1"
                .to_owned();
        let mut values: Vec<rusqlite::types::Value> = vec![matching.join(" AND ").into()];
        if let Some(group) = query.group {
            sql.push_str(" AND conversation = ?2");
            values.push(history.group_names[group].clone().into());
        }
        if let Some(from) = &query.from {
            sql.push_str(&format!(" AND sender = ?{}", values.len() + 1));
            values.push(from.as_str().to_owned().into());
        }
        sql.push_str(&format!(" ORDER BY sent_at DESC LIMIT ?{}", values.len() + 1));
        values.push((limit as i64).into());
        let mut statement = self.connection.prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
            let _: (String, String, String, i64) = (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
            row.get::<_, i64>(0)
        })?;
        Ok(rows
            .map(|row| row.map(|id| id as usize))
            .collect::<Result<_, _>>()?)
    }
}

/// Our engine's hits as message indexes, newest first.
fn ours(
    vault: &Vault,
    history: &History,
    index: &std::collections::HashMap<(GroupId, u64), usize>,
    query: &Query,
    limit: usize,
) -> Result<Vec<usize>> {
    let search = SearchQuery {
        text: query.terms.join(" "),
        group: query.group.map(|g| history.groups[g]),
        from: query.from.clone(),
        limit,
    };
    search_messages(vault, &search)?
        .into_iter()
        .map(|(group, message)| {
            index
                .get(&(group, message.seq))
                .copied()
                .ok_or_else(|| anyhow!("a hit that is no message of the history"))
        })
        .collect()
}

fn folder_bytes(dir: &Path, prefix: &str) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

pub fn run(args: &SearchArgs) -> Result<Report> {
    let dir = tempfile::tempdir()?;
    let history = history(args)?;
    let index: std::collections::HashMap<(GroupId, u64), usize> = history
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| ((history.groups[m.group], m.stored.seq), i))
        .collect();
    let (bulk, live) = history.messages.split_at(args.messages);

    let vault = Vault::create_throwaway(&dir.path().join("vault.db"))?;
    let started = Instant::now();
    for batch in bulk.chunks(BUILD_BATCH) {
        let batch: Vec<(GroupId, StoredMessage)> = batch
            .iter()
            .map(|m| (history.groups[m.group], m.stored.clone()))
            .collect();
        store_messages(&vault, &batch)?;
    }
    let build_s = started.elapsed().as_secs_f64();
    let mut live_ms = Vec::with_capacity(live.len());
    for message in live {
        let one = [(history.groups[message.group], message.stored.clone())];
        let started = Instant::now();
        store_messages(&vault, &one)?;
        live_ms.push(ms(started.elapsed()));
    }
    let live_ms = Percentiles::of(live_ms);

    let started = Instant::now();
    let fts = Fts::build(&dir.path().join("fts.db"), &history)?;
    let fts_build_s = started.elapsed().as_secs_f64();

    let queries = queries(&history);
    // Warm-up round: both engines must agree, hit for hit.
    let mut mismatches = Vec::new();
    let mut hit_counts = Vec::new();
    for query in &queries {
        let (a, b) = (
            ours(&vault, &history, &index, query, args.limit)?,
            fts.search(&history, query, args.limit)?,
        );
        if a != b {
            mismatches.push(format!("{}: ours {a:?}, FTS5 {b:?}", query.label));
        }
        hit_counts.push(a.len());
    }
    let mut ours_ms = vec![Vec::with_capacity(args.repeat); queries.len()];
    let mut fts_ms = vec![Vec::with_capacity(args.repeat); queries.len()];
    for _ in 0..args.repeat {
        for (i, query) in queries.iter().enumerate() {
            let started = Instant::now();
            std::hint::black_box(ours(&vault, &history, &index, query, args.limit)?);
            ours_ms[i].push(ms(started.elapsed()));
            let started = Instant::now();
            std::hint::black_box(fts.search(&history, query, args.limit)?);
            fts_ms[i].push(ms(started.elapsed()));
        }
    }
    drop(vault);
    let vault_bytes = folder_bytes(dir.path(), "vault.db");
    drop(fts);
    let fts_bytes = folder_bytes(dir.path(), "fts.db");

    let all_ours = Percentiles::of(ours_ms.iter().flatten().copied().collect());
    let all_fts = Percentiles::of(fts_ms.iter().flatten().copied().collect());
    let mut summary = Section::new("");
    summary
        .add("messages", args.messages as u64, "")
        .add("queries_timed", (queries.len() * args.repeat) as u64, "")
        .num("latency_p50", all_ours.p50, 3, "ms")
        .num("latency_p99", all_ours.p99, 3, "ms")
        .target(&format!("≤ {P99_TARGET_MS} ms"))
        .num("latency_max", all_ours.max, 3, "ms")
        .num("fts5_p50", all_fts.p50, 3, "ms")
        .num("fts5_p99", all_fts.p99, 3, "ms")
        .num("ratio_p50_vs_fts5", all_ours.p50 / all_fts.p50.max(1e-9), 2, "×")
        .num("ratio_p99_vs_fts5", all_ours.p99 / all_fts.p99.max(1e-9), 2, "×")
        .num("index_build", build_s, 1, "s")
        .num("live_store_p50", live_ms.p50, 3, "ms")
        .num("live_store_p99", live_ms.p99, 3, "ms")
        .num("vault_size", vault_bytes as f64 / 1_048_576.0, 1, "MiB")
        .num("fts5_build", fts_build_s, 1, "s")
        .num("fts5_size", fts_bytes as f64 / 1_048_576.0, 1, "MiB");
    let mut sections = vec![summary];
    for (i, query) in queries.iter().enumerate() {
        let (a, b) = (
            Percentiles::of(ours_ms[i].clone()),
            Percentiles::of(fts_ms[i].clone()),
        );
        let mut section = Section::new(format!("{} ({})", query.label, query.terms.join(" ")));
        section
            .add("hits", hit_counts[i] as u64, "")
            .num("p50", a.p50, 3, "ms")
            .num("p99", a.p99, 3, "ms")
            .num("fts5_p50", b.p50, 3, "ms")
            .num("fts5_p99", b.p99, 3, "ms");
        sections.push(section);
    }
    let mut notes = vec![format!(
        "ours: redoubt_client::search_messages (index + opening each hit's sealed message); \
         FTS5: bundled SQLite {}, unicode61, no prefix index; both warm, same process",
        rusqlite::version()
    )];
    notes.extend(mismatches.iter().cloned());
    Ok(Report {
        scenario: "search".into(),
        description: format!(
            "newest-first local search over {} messages vs plain SQLite FTS5",
            args.messages
        ),
        settings: json!({
            "messages": args.messages,
            "vocabulary": args.vocabulary,
            "conversations": args.conversations,
            "senders": args.senders,
            "repeat": args.repeat,
            "limit": args.limit,
            "seed": args.seed,
        }),
        sections,
        notes,
        ok: mismatches.is_empty(),
    })
}

/// Runs the scenario and prints its report as `redoubt-bench` prints every scenario's.
pub fn main(args: &SearchArgs, as_json: bool) -> Result<()> {
    let report = run(args)?;
    report.emit(&crate::target::machine(), as_json, "our hits differ from FTS5's")
}
