//! `kt`: the key directory (`redoubt_server::KeyDirectory`: akd over Redoubt's store, the
//! SQLite file here) against akd's own in-memory directory (`AsyncInMemoryDatabase`, no
//! cache) doing the same work in the same run, so every figure has a reference: what akd
//! itself costs, and so what Redoubt's storage, certificates and signed heads add. No
//! server runs: the directory is opened on a fresh data folder, as the server opens it.
//!
//! The work, the same on both sides (labels and values alike; only the VRF keys differ):
//! - `--users` users with one device each (a synthetic certificate of
//!   `--certificate-bytes`), published `--initial-batch` users an epoch (the server's
//!   publisher puts at most 10,000 users in one epoch);
//! - `--epochs` epochs of 100 changes, then as many of 1,000 (a change: a user gets a second
//!   device), each timed on both sides, one side right after the other; an epoch's work
//!   includes making its append-only proof (the server stores it with the head);
//! - the history proof a device asks for (`KtHistory`) of a user with one version and of one
//!   with two: bytes, time to make, time to verify with `redoubt_kt::verify_history` (akd's
//!   proof wrapped in the same answer, against a head over akd's root); and akd's plain
//!   lookup proof for reference;
//! - the append-only proof an auditor checks (`KtAudit`) of the first 100-change and the
//!   first 1,000-change epoch: bytes, time to serve, time to verify
//!   (`redoubt_kt::verify_audit_epoch` against `akd::auditor::audit_verify`), right after
//!   the epoch was published and again at the end. Redoubt serves the proof it stored at
//!   publication; akd's side makes it, from the tree as it is now, so an old epoch's proof
//!   grows with the changes made since (what the server sent before it stored them);
//! - the SQLite file at the end (akd's in-memory directory has none: its record counts are
//!   compared instead).
//!
//! Targets: each Redoubt figure within 2× of akd's, and a 100-change epoch (median)
//! published within 1 % of `kt_epoch_ms`. A miss is reported, not an error; the run fails
//! only when a proof does not verify or the two directories disagree.

mod sides;

use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use redoubt_proto::{KtVersion, UserName, device_set_commitment};
use serde_json::json;

use crate::messaging::Percentiles;
use crate::report::{Report, Section};
use sides::{
    Ours, Pair, ProofCost, Reference, StoreSize, akd_audit, akd_history, akd_lookup, certificate, open_ours,
    open_reference, our_audit, our_history, publish,
};

/// The target for every figure: at most this many times akd's own.
const RATIO_MAX: f64 = 2.0;
/// The target for a 100-change epoch, as a share of `kt_epoch_ms`.
const EPOCH_SHARE_MAX: f64 = 0.01;
const SMALL_EPOCH: usize = 100;
const LARGE_EPOCH: usize = 1_000;

#[derive(Debug, Args, Clone)]
pub struct KtArgs {
    /// Users (one device each), published first.
    #[arg(long, default_value_t = 100_000)]
    pub users: usize,
    /// Epochs of 100 changes, and as many of 1,000 (a change: a user gets a second device).
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Users per epoch while the first devices are published.
    #[arg(long, default_value_t = 10_000)]
    pub initial_batch: usize,
    /// Bytes of each synthetic device certificate.
    #[arg(long, default_value_t = 200)]
    pub certificate_bytes: usize,
    /// Times each proof is made and verified (medians are reported).
    #[arg(long, default_value_t = 20)]
    pub repeat: usize,
    /// The server's `kt_epoch_ms`, of which a 100-change epoch may take 1 %.
    #[arg(long, default_value_t = redoubt_server::Config::default().server.kt_epoch_ms)]
    pub epoch_ms: u64,
    /// Diagnostic: give akd's reference the key directory's node cache (as
    /// crates/server/src/kt/mod.rs sets it: 1 h, 256 MiB) instead of none, to tell akd's
    /// cache layer from Redoubt's storage.
    #[arg(long)]
    pub reference_cache: bool,
}

/// The figures' sections, and the verdict of every target.
#[derive(Debug, Default)]
struct Figures {
    sections: Vec<Section>,
    verdicts: Vec<(String, bool)>,
}

impl Figures {
    fn section(&mut self, label: &str) -> &mut Section {
        let index = self.sections.len();
        self.sections.push(Section::new(label));
        &mut self.sections[index]
    }

    fn verdict(&mut self, what: String, pass: bool) -> &'static str {
        self.verdicts.push((what, pass));
        if pass { "PASS" } else { "MISS" }
    }

    /// Ours, akd's, and the ratio with its verdict against the 2× target, in the last
    /// section.
    fn compare(&mut self, key: &str, pair: Pair, digits: i32, unit: &'static str) {
        let ratio = pair.ours / pair.akd.max(f64::MIN_POSITIVE);
        let label = self.sections.last().map(|s| s.label.clone()).unwrap_or_default();
        let verdict = self.verdict(format!("{label}: {key}"), ratio <= RATIO_MAX);
        // Whole numbers (bytes) print as such.
        let value = |v: f64| {
            let scale = 10f64.powi(digits);
            if digits == 0 {
                json!(v.round() as u64)
            } else {
                json!((v * scale).round() / scale)
            }
        };
        if let Some(section) = self.sections.last_mut() {
            section
                .add(key, value(pair.ours), unit)
                .add(&format!("{key}_akd"), value(pair.akd), unit)
                .num(&format!("{key}_ratio"), ratio, 2, "×")
                .target(&format!("≤ {RATIO_MAX}× akd: {verdict}"));
        }
    }

    fn proof(&mut self, ours: ProofCost, akd: ProofCost) {
        let pair = |a: f64, b: f64| Pair { ours: a, akd: b };
        self.compare("bytes", pair(ours.bytes as f64, akd.bytes as f64), 0, "B");
        self.compare("make", pair(ours.make_ms, akd.make_ms), 3, "ms");
        self.compare("verify", pair(ours.verify_ms, akd.verify_ms), 3, "ms");
    }

    /// Median and max publish time of a run of epochs.
    fn epochs(&mut self, times: &[Pair]) {
        let ours = Percentiles::of(times.iter().map(|p| p.ours).collect());
        let akd = Percentiles::of(times.iter().map(|p| p.akd).collect());
        self.compare(
            "publish_p50",
            Pair {
                ours: ours.p50,
                akd: akd.p50,
            },
            2,
            "ms",
        );
        self.compare(
            "publish_max",
            Pair {
                ours: ours.max,
                akd: akd.max,
            },
            2,
            "ms",
        );
    }
}

/// A run of epochs of the same number of changes.
struct Run {
    size: usize,
    times: Vec<Pair>,
    /// Its first epoch, whose append-only proof is measured.
    first_epoch: u64,
    /// That proof made right after the epoch was published (ours, akd's): what an
    /// auditor keeping up is sent.
    fresh_audit: (ProofCost, ProofCost),
}

/// Everything published, with what the proofs are measured on.
struct Published {
    users: Vec<UserName>,
    /// Every user's logged versions, oldest first: the akd side's history answers.
    logged: Vec<Vec<KtVersion>>,
    initial: Vec<Pair>,
    initial_s: f64,
    runs: Vec<Run>,
}

/// Publishes the users' first devices, then the runs of changes, on both sides.
async fn publish_all(
    args: &KtArgs,
    ours: &Ours,
    reference: &mut Reference,
    repeat: usize,
) -> Result<Published> {
    let users: Vec<UserName> = (0..args.users)
        .map(|i| UserName::parse(&format!("kt-user-{i:06}")).map_err(|e| anyhow!("{e}")))
        .collect::<Result<_>>()?;
    let mut logged: Vec<Vec<KtVersion>> = vec![Vec::new(); users.len()];
    let started = Instant::now();
    let mut initial = Vec::new();
    let batch = args.initial_batch.max(1);
    for (chunk, some) in users.chunks(batch).enumerate() {
        let sets: Vec<(UserName, Vec<Vec<u8>>)> = some
            .iter()
            .map(|u| (u.clone(), vec![certificate(args.certificate_bytes)]))
            .collect();
        let (epoch, time) = publish(ours, reference, &sets).await?;
        for (i, (_, certificates)) in sets.into_iter().enumerate() {
            logged[chunk * batch + i].push(KtVersion {
                epoch,
                certificates,
                approvals: Vec::new(),
            });
        }
        initial.push(time);
    }
    let initial_s = started.elapsed().as_secs_f64();

    // Users 0, 1, … get their second device in turn: 100 an epoch, then 1,000.
    let mut next_user = 0;
    let mut runs = Vec::new();
    for size in [SMALL_EPOCH, LARGE_EPOCH] {
        let mut run = Run {
            size,
            times: Vec::with_capacity(args.epochs),
            first_epoch: 0,
            fresh_audit: Default::default(),
        };
        for _ in 0..args.epochs {
            let changed = next_user..next_user + size;
            next_user += size;
            let sets: Vec<(UserName, Vec<Vec<u8>>)> = changed
                .clone()
                .map(|i| {
                    let mut certificates = logged[i]
                        .last()
                        .map(|v| v.certificates.clone())
                        .unwrap_or_default();
                    certificates.push(certificate(args.certificate_bytes));
                    (users[i].clone(), certificates)
                })
                .collect();
            let (epoch, time) = publish(ours, reference, &sets).await?;
            for (i, (_, certificates)) in changed.zip(sets) {
                logged[i].push(KtVersion {
                    epoch,
                    certificates,
                    approvals: Vec::new(),
                });
            }
            run.times.push(time);
            if run.first_epoch == 0 {
                run.first_epoch = epoch;
                run.fresh_audit = (
                    our_audit(ours, epoch, repeat).await?,
                    akd_audit(reference, epoch, repeat).await?,
                );
            }
        }
        runs.push(run);
    }
    Ok(Published {
        users,
        logged,
        initial,
        initial_s,
        runs,
    })
}

fn publish_figures(figures: &mut Figures, args: &KtArgs, published: &Published) {
    let total = |times: &[Pair]| Pair {
        ours: times.iter().map(|p| p.ours).sum::<f64>() / 1_000.0,
        akd: times.iter().map(|p| p.akd).sum::<f64>() / 1_000.0,
    };
    figures.section(&format!(
        "first devices: {} users in {} epochs of ≤ {}",
        args.users,
        published.initial.len(),
        args.initial_batch
    ));
    figures.compare("publish_total", total(&published.initial), 2, "s");
    figures.epochs(&published.initial);
    for run in &published.runs {
        figures.section(&format!("{} epochs of {} changes", run.times.len(), run.size));
        figures.epochs(&run.times);
        if run.size == SMALL_EPOCH {
            let budget_ms = args.epoch_ms as f64 * EPOCH_SHARE_MAX;
            let p50 = Percentiles::of(run.times.iter().map(|p| p.ours).collect()).p50;
            let verdict = figures.verdict(
                format!("100-change epoch ≤ 1 % of kt_epoch_ms ({budget_ms} ms)"),
                p50 <= budget_ms,
            );
            if let Some(section) = figures.sections.last_mut() {
                section
                    .num(
                        "publish_p50_share_of_epoch",
                        p50 / args.epoch_ms as f64 * 100.0,
                        2,
                        "%",
                    )
                    .target(&format!("≤ 1 % of kt_epoch_ms = {budget_ms} ms: {verdict}"));
            }
        }
    }
}

/// History proofs of a user with one version and of one with two; audit proofs of each
/// run's first epoch, as made when it was published and as made now, after the others.
async fn proof_figures(
    figures: &mut Figures,
    ours: &Ours,
    reference: &Reference,
    published: &Published,
    repeat: usize,
) -> Result<()> {
    // The last user never changed: one version. User 0 changed first: two.
    for index in [published.users.len() - 1, 0] {
        let (user, versions) = (&published.users[index], &published.logged[index]);
        let ours_cost = our_history(ours, user, versions.len(), repeat).await?;
        let akd_cost = akd_history(reference, user, versions, repeat).await?;
        figures.section(&format!("history proof ({user}, {} version(s))", versions.len()));
        figures.proof(ours_cost, akd_cost);
        let newest = versions
            .last()
            .map(|v| device_set_commitment(&v.certificates, &v.approvals))
            .unwrap_or_default();
        let lookup = akd_lookup(reference, user, newest, repeat).await?;
        if let Some(section) = figures.sections.last_mut() {
            section
                .add("akd_lookup_bytes", lookup.bytes as u64, "B")
                .num("akd_lookup_make", lookup.make_ms, 3, "ms")
                .num("akd_lookup_verify", lookup.verify_ms, 3, "ms");
        }
    }
    let newest = reference.epoch();
    for run in &published.runs {
        let epoch = run.first_epoch;
        // Redoubt serves the proof it stored at publication; akd's side makes it.
        figures.section(&format!(
            "audit proof of epoch {epoch} ({} changes), served when it was the newest",
            run.size
        ));
        figures.proof(run.fresh_audit.0, run.fresh_audit.1);
        let ours_cost = our_audit(ours, epoch, repeat).await?;
        let akd_cost = akd_audit(reference, epoch, repeat).await?;
        figures.section(&format!(
            "audit proof of epoch {epoch} ({} changes), served at epoch {newest}",
            run.size
        ));
        figures.proof(ours_cost, akd_cost);
    }
    Ok(())
}

/// The SQLite file after everything (the directory closed), and its records against
/// akd's. Returns whether both hold the same records.
async fn store_figures(
    figures: &mut Figures,
    ours: Ours,
    reference: &Reference,
    users: usize,
) -> Result<bool> {
    let StoreSize { file_bytes, tables } = ours.close().await?;
    let (akd_nodes, akd_values) = reference.records().await?;
    let rows = |name: &str| tables.iter().find(|t| t.0 == name).map_or(0, |t| t.1);
    // The same tree: akd's records and ours, one for one.
    let same_records = rows("kt_nodes") == akd_nodes && rows("kt_values") == akd_values;
    let store = figures.section("store at the end");
    store
        .num("database_file_and_wal", file_bytes as f64 / 1_048_576.0, 1, "MiB")
        .num(
            "database_bytes_per_user",
            file_bytes as f64 / users as f64,
            0,
            "B",
        );
    for (table, rows, bytes) in &tables {
        store.add(&format!("{table}_rows"), *rows, "").num(
            &format!("{table}_content"),
            *bytes as f64 / 1_048_576.0,
            1,
            "MiB",
        );
    }
    store
        .add("akd_tree_records", akd_nodes, "")
        .add("akd_value_states", akd_values, "")
        .add("same_records_as_akd", same_records, "");
    Ok(same_records)
}

pub async fn run(args: &KtArgs) -> Result<Report> {
    if args.epochs == 0 || args.users <= (SMALL_EPOCH + LARGE_EPOCH) * args.epochs {
        bail!(
            "--users must exceed 1,100 × --epochs (each change is another user, and one user never changes)"
        );
    }
    let repeat = args.repeat.max(1);
    let ours = open_ours().await?;
    let mut reference = open_reference(&ours, args.reference_cache).await?;
    let published = publish_all(args, &ours, &mut reference, repeat).await?;
    let mut figures = Figures::default();
    publish_figures(&mut figures, args, &published);
    proof_figures(&mut figures, &ours, &reference, &published, repeat).await?;
    let same_records = store_figures(&mut figures, ours, &reference, args.users).await?;

    let missed: Vec<&String> = figures.verdicts.iter().filter(|v| !v.1).map(|v| &v.0).collect();
    let mut summary = Section::new("summary");
    summary
        .add("users", args.users as u64, "")
        .add("epochs_published", reference.epoch(), "")
        .num("setup_publish", published.initial_s, 1, "s")
        .add(
            "targets_passed",
            (figures.verdicts.len() - missed.len()) as u64,
            "",
        )
        .add("targets_missed", missed.len() as u64, "");
    figures.sections.insert(0, summary);
    let mut notes = vec![format!(
        "ours: redoubt_server::KeyDirectory on the data folder's SQLite file (akd with the \
         server's node cache, certificates stored, heads signed); akd: Directory over \
         AsyncInMemoryDatabase, {}, parallelism disabled; same labels and values, same \
         process, one after the other",
        if args.reference_cache {
            "StorageManager::new with the server's cache settings (--reference-cache)"
        } else {
            "StorageManager::new_no_cache"
        }
    )];
    notes.extend(missed.iter().map(|m| format!("MISS: {m}")));
    if !same_records {
        notes.push("the key directory's tables and akd's records differ in number".to_owned());
    }
    Ok(Report {
        scenario: "kt".into(),
        description: format!(
            "key directory of {} users vs akd's in-memory directory, same work",
            args.users
        ),
        settings: json!({
            "users": args.users,
            "epochs": args.epochs,
            "initial_batch": args.initial_batch,
            "certificate_bytes": args.certificate_bytes,
            "repeat": repeat,
            "kt_epoch_ms": args.epoch_ms,
            "reference_cache": args.reference_cache,
        }),
        sections: figures.sections,
        notes,
        ok: same_records,
    })
}

/// Runs the scenario and prints its report as `redoubt-bench` prints every scenario's.
pub fn main(args: &KtArgs, as_json: bool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(run(args))?;
    report.emit(
        &crate::target::machine(),
        as_json,
        "the key directory's records differ from akd's",
    )
}
