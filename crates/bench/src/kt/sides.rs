//! The two directories `kt` measures, doing the same work: Redoubt's key directory on a
//! fresh data folder, and akd's own in memory. Each publishes, makes and verifies proofs
//! the way its users do; the times are medians of `repeat` runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use akd::ecvrf::{VRFKeyStorage, VrfError};
use akd::storage::memory::AsyncInMemoryDatabase;
use akd::storage::types::ValueState;
use akd::storage::{StorageManager, StorageUtil};
use akd::verify::history::HistoryParams;
use akd::{AkdLabel, AkdValue, AzksParallelismConfig, Directory};
use anyhow::{Context, Result, anyhow, bail};
use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore};
use redoubt_kt::Config;
use redoubt_proto::{
    Bytes, EpochHead, KtHistoryAnswer, KtKeysBody, KtVersion, Signed, UserName, device_set_commitment,
    user_label,
};
use redoubt_server::{DeviceSet, KeyDirectory, OpenOptions, Server};

use crate::messaging::Percentiles;

/// akd's VRF key, kept as Redoubt's server keeps it.
#[derive(Clone)]
struct VrfKey(Arc<[u8; 32]>);

#[async_trait::async_trait]
impl VRFKeyStorage for VrfKey {
    async fn retrieve(&self) -> Result<Vec<u8>, VrfError> {
        Ok(self.0.to_vec())
    }
}

/// The reference: akd's own directory in memory.
pub(super) struct Reference {
    directory: Directory<Config, AsyncInMemoryDatabase, VrfKey>,
    db: AsyncInMemoryDatabase,
    keys: KtKeysBody,
    /// Signs the heads made for akd's roots (`verify_history` takes a signed answer).
    signing: SigningKey,
    /// The root hash of each epoch, by epoch.
    roots: Vec<[u8; 32]>,
}

/// Redoubt's key directory on a fresh data folder.
pub(super) struct Ours {
    directory: KeyDirectory,
    keys: KtKeysBody,
    database: std::path::PathBuf,
    _data: tempfile::TempDir,
}

/// One figure of both sides: times in ms, sizes in bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pair {
    pub(super) ours: f64,
    pub(super) akd: f64,
}

/// What a proof costs: its bytes, and the medians of making and verifying it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ProofCost {
    pub(super) bytes: usize,
    pub(super) make_ms: f64,
    pub(super) verify_ms: f64,
}

fn ms(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1_000.0
}

fn median(values: Vec<f64>) -> f64 {
    Percentiles::of(values).p50
}

pub(super) fn certificate(bytes: usize) -> Vec<u8> {
    let mut certificate = vec![0u8; bytes];
    OsRng.fill_bytes(&mut certificate);
    certificate
}

pub(super) async fn open_ours() -> Result<Ours> {
    let data = tempfile::tempdir()?;
    // The server makes the organisation, its keys and the database; served for no time,
    // it shuts down cleanly and closes the store.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = Server::open(data.path(), listener.local_addr()?, &OpenOptions::default()).await?;
    let (org_key, org_id) = (server.org().public_key(), server.org().id);
    server.run(listener, async {}).await?;
    let directory = KeyDirectory::open(data.path()).await?;
    let keys = redoubt_kt::verify_keys(&directory.keys(), &org_key, &org_id)?;
    Ok(Ours {
        directory,
        keys,
        database: redoubt_server::DataDir::new(data.path()).database(),
        _data: data,
    })
}

pub(super) async fn open_reference(ours: &Ours, cache: bool) -> Result<Reference> {
    let mut vrf = [0u8; 32];
    OsRng.fill_bytes(&mut vrf);
    let db = AsyncInMemoryDatabase::new();
    let manager = if cache {
        StorageManager::new(
            db.clone(),
            Some(Duration::from_secs(3600)),
            Some(256 * 1024 * 1024),
            None,
        )
    } else {
        StorageManager::new_no_cache(db.clone())
    };
    let directory = Directory::new(manager, VrfKey(Arc::new(vrf)), AzksParallelismConfig::disabled()).await?;
    let signing = SigningKey::generate(&mut OsRng);
    let keys = KtKeysBody {
        org_id: ours.keys.org_id,
        transparency_key: Bytes(signing.verifying_key().to_bytes()),
        vrf_public_key: Bytes(directory.get_public_key().await?.to_bytes()),
    };
    let root = directory.get_epoch_hash().await?;
    Ok(Reference {
        directory,
        db,
        keys,
        signing,
        roots: vec![root.1],
    })
}

/// Publishes one epoch setting each user's devices to the certificates given, on both
/// sides. Returns the epoch and the time each side took.
pub(super) async fn publish(
    ours: &Ours,
    reference: &mut Reference,
    sets: &[(UserName, Vec<Vec<u8>>)],
) -> Result<(u64, Pair)> {
    let updates: Vec<(AkdLabel, AkdValue)> = sets
        .iter()
        .map(|(user, certificates)| {
            (
                AkdLabel(user_label(user)),
                AkdValue(device_set_commitment(certificates, &[]).to_vec()),
            )
        })
        .collect();
    let sets: Vec<(UserName, DeviceSet)> = sets
        .iter()
        .map(|(user, certificates)| {
            let set = DeviceSet {
                certificates: certificates.clone(),
                approvals: Vec::new(),
            };
            (user.clone(), set)
        })
        .collect();
    let started = Instant::now();
    let epoch = ours.directory.publish(&sets).await?;
    let ours_ms = ms(started.elapsed());
    // Both sides do an epoch's whole work: the server makes and stores the epoch's
    // append-only proof as it publishes (what auditors are served), so akd's side makes it.
    let started = Instant::now();
    let hash = reference.directory.publish(updates).await?;
    if let Some(before) = hash.0.checked_sub(1) {
        reference.directory.audit(before, hash.0).await?;
    }
    let akd_ms = ms(started.elapsed());
    if hash.0 != epoch {
        bail!("Redoubt published epoch {epoch}, akd epoch {}", hash.0);
    }
    reference.roots.push(hash.1);
    Ok((
        epoch,
        Pair {
            ours: ours_ms,
            akd: akd_ms,
        },
    ))
}

/// `KtHistory` of `user` from our directory, verified as a device does.
pub(super) async fn our_history(
    ours: &Ours,
    user: &UserName,
    expected: usize,
    repeat: usize,
) -> Result<ProofCost> {
    let mut make = Vec::with_capacity(repeat);
    let mut answer = None;
    for _ in 0..repeat {
        let started = Instant::now();
        answer = Some(ours.directory.history(user).await?);
        make.push(ms(started.elapsed()));
    }
    let answer = answer.context("no history made")?;
    let head = redoubt_kt::verify_head(&answer.head, &ours.keys)?;
    let verify = time_history(&ours.keys, &head, &answer, expected, repeat)?;
    Ok(ProofCost {
        bytes: answer.proof.len(),
        make_ms: median(make),
        verify_ms: verify,
    })
}

/// akd's history proof of `user`, wrapped in the answer our server sends and verified the
/// same way, against a head over akd's root.
pub(super) async fn akd_history(
    reference: &Reference,
    user: &UserName,
    versions: &[KtVersion],
    repeat: usize,
) -> Result<ProofCost> {
    let label = AkdLabel(user_label(user));
    let mut make = Vec::with_capacity(repeat);
    let mut made = None;
    for _ in 0..repeat {
        let started = Instant::now();
        made = Some(
            reference
                .directory
                .key_history(&label, HistoryParams::Complete)
                .await?,
        );
        make.push(ms(started.elapsed()));
    }
    let (proof, hash) = made.context("no history made")?;
    let head = EpochHead {
        org_id: reference.keys.org_id,
        epoch: hash.0,
        root_hash: Bytes(hash.1),
        published_at_unix_ms: 0,
    };
    let answer = KtHistoryAnswer {
        head: Signed::sign(&head, &reference.signing),
        user: user.clone(),
        versions: versions.to_vec(),
        proof: redoubt_kt::encode_history_proof(&proof),
    };
    let verify = time_history(&reference.keys, &head, &answer, versions.len(), repeat)?;
    Ok(ProofCost {
        bytes: answer.proof.len(),
        make_ms: median(make),
        verify_ms: verify,
    })
}

/// The median time `verify_history` takes on `answer`, which must prove `expected` versions.
pub(super) fn time_history(
    keys: &KtKeysBody,
    head: &EpochHead,
    answer: &KtHistoryAnswer,
    expected: usize,
    repeat: usize,
) -> Result<f64> {
    let mut verify = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let started = Instant::now();
        let versions = redoubt_kt::verify_history(keys, head, answer)?;
        verify.push(ms(started.elapsed()));
        if versions.len() != expected {
            bail!(
                "{}: {} versions proven, {expected} published",
                answer.user,
                versions.len()
            );
        }
    }
    Ok(median(verify))
}

/// akd's plain lookup proof (the newest version only), for reference.
pub(super) async fn akd_lookup(
    reference: &Reference,
    user: &UserName,
    value: [u8; 32],
    repeat: usize,
) -> Result<ProofCost> {
    let label = AkdLabel(user_label(user));
    let mut make = Vec::with_capacity(repeat);
    let mut made = None;
    for _ in 0..repeat {
        let started = Instant::now();
        made = Some(reference.directory.lookup(label.clone()).await?);
        make.push(ms(started.elapsed()));
    }
    let (proof, hash) = made.context("no lookup made")?;
    let bytes = protobuf::Message::write_to_bytes(&akd::proto::specs::types::LookupProof::from(&proof))?;
    let mut verify = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let proof = proof.clone();
        let started = Instant::now();
        let result = akd::verify::lookup::lookup_verify::<Config>(
            &reference.keys.vrf_public_key.0,
            hash.1,
            hash.0,
            label.clone(),
            proof,
        )
        .map_err(|e| anyhow!("akd lookup of {user}: {e:?}"))?;
        verify.push(ms(started.elapsed()));
        if result.value.0 != value {
            bail!("akd lookup of {user}: not the value published");
        }
    }
    Ok(ProofCost {
        bytes: bytes.len(),
        make_ms: median(make),
        verify_ms: median(verify),
    })
}

/// `KtAudit` of `epoch` from our directory, verified as the auditor does.
pub(super) async fn our_audit(ours: &Ours, epoch: u64, repeat: usize) -> Result<ProofCost> {
    // The head of the epoch before, as the auditor holds it: verified.
    let before = ours.directory.audit(epoch - 2, 1).await?;
    let previous = redoubt_kt::verify_head(&before.first().context("no epoch before")?.head, &ours.keys)?;
    let mut make = Vec::with_capacity(repeat);
    let mut answer = Vec::new();
    for _ in 0..repeat {
        let started = Instant::now();
        answer = ours.directory.audit(epoch - 1, 1).await?;
        make.push(ms(started.elapsed()));
    }
    let single = answer.first().context("no audit proof")?;
    let mut verify = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let started = Instant::now();
        let head = redoubt_kt::verify_audit_epoch(&ours.keys, &previous, single).await?;
        verify.push(ms(started.elapsed()));
        if head.epoch != epoch {
            bail!("audit of epoch {epoch} verified epoch {}", head.epoch);
        }
    }
    Ok(ProofCost {
        bytes: single.proof.len(),
        make_ms: median(make),
        verify_ms: median(verify),
    })
}

/// akd's append-only proof of `epoch`, verified with akd's auditor.
pub(super) async fn akd_audit(reference: &Reference, epoch: u64, repeat: usize) -> Result<ProofCost> {
    let mut make = Vec::with_capacity(repeat);
    let mut made = None;
    for _ in 0..repeat {
        let started = Instant::now();
        made = Some(reference.directory.audit(epoch - 1, epoch).await?);
        make.push(ms(started.elapsed()));
    }
    let proof = made.context("no audit proof")?;
    let bytes = redoubt_kt::encode_append_only_proof(proof.proofs.first().context("empty audit proof")?);
    let index = usize::try_from(epoch)?;
    let hashes = vec![reference.roots[index - 1], reference.roots[index]];
    let mut verify = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let (hashes, proof) = (hashes.clone(), proof.clone());
        let started = Instant::now();
        akd::auditor::audit_verify::<Config>(hashes, proof).await?;
        verify.push(ms(started.elapsed()));
    }
    Ok(ProofCost {
        bytes: bytes.len(),
        make_ms: median(make),
        verify_ms: median(verify),
    })
}

/// The SQLite file after everything: its bytes (with the write-ahead log) and each
/// key-directory table's rows and content bytes.
#[derive(Debug)]
pub(super) struct StoreSize {
    pub(super) file_bytes: u64,
    pub(super) tables: Vec<(&'static str, u64, u64)>,
}

impl Ours {
    /// Closes the directory and measures its file.
    pub(super) async fn close(self) -> Result<StoreSize> {
        self.directory.close().await;
        let wal = self.database.with_extension("db-wal");
        let file_bytes = [self.database.as_path(), wal.as_path()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        let connection = rusqlite::Connection::open(&self.database)?;
        let mut tables = Vec::new();
        for (table, bytes) in [
            ("kt_nodes", "length(key) + length(record)"),
            ("kt_values", "length(label) + length(record)"),
            ("kt_sets", "length(user_name) + length(device_set)"),
        ] {
            let (rows, total): (i64, i64) = connection.query_row(
                &format!("SELECT count(*), coalesce(sum({bytes}), 0) FROM {table}"),
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            tables.push((table, u64::try_from(rows)?, u64::try_from(total)?));
        }
        Ok(StoreSize { file_bytes, tables })
    }
}

impl Reference {
    /// The newest epoch published.
    pub(super) fn epoch(&self) -> u64 {
        self.roots.len() as u64 - 1
    }

    /// akd's records: tree records (the aZKS with them) and value states.
    pub(super) async fn records(&self) -> Result<(u64, u64)> {
        let values = self.db.batch_get_type_direct::<ValueState>().await?;
        Ok((self.db.size_of_db() as u64, values.len() as u64))
    }
}
