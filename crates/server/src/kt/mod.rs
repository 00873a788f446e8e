//! Key transparency: the organisation's verifiable key directory.
//!
//! Label = user; value = the commitment to the user's active device certificates
//! ([`redoubt_proto::device_set_commitment`]). Enrolment, approval, revocation and disabling
//! mark the user changed; the publisher puts every marked user whose set really changed
//! into one akd epoch, at most every `kt_epoch_ms`, and signs the epoch's root with the
//! transparency key (`DATA/transparency.key`), whose binding to the organisation the root
//! key signs. Devices accept a device only once it is in a logged set
//! (`redoubt_client::kt`); auditors check that each epoch appends to the one before.
//!
//! Crash safety: the certificates of the next epoch are written before akd moves the tree
//! to it, and its head after; at start, a tree ahead of the newest head gets its head
//! signed then, and every user whose active set differs from their newest logged one is
//! marked again (which also logs an existing organisation after an upgrade).

mod store_db;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use akd::ecvrf::{VRFKeyStorage, VrfError};
use akd::storage::StorageManager;
use akd::verify::history::HistoryParams;
use akd::{AkdLabel, AkdValue, AzksParallelismConfig, Directory};
use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore};
use redoubt_kt::Config;
use redoubt_proto::{
    AuditorStatement, Bytes, EpochHead, ErrorCode, KT_AUDIT_BYTES_MAX, KT_AUDIT_EPOCHS_MAX, KtAuditEpoch,
    KtHead, KtHistoryAnswer, KtKeysBody, KtVersion, Signed, UserName, device_set_commitment, user_label,
};
use redoubt_store::{DeviceRecord, KtEpochRecord, KtSet, Store, StoreError};
use tokio::sync::{Notify, watch};
use zeroize::{Zeroize, Zeroizing};

use crate::data_dir::{self, DataDir};
use crate::error::ApiError;
use crate::org::Org;
use crate::{ServerError, State};

use store_db::StoreDb;

/// Users put into one epoch at most (more wait for the next).
const EPOCH_USERS_MAX: u32 = 10_000;
/// The publisher's lease in a cluster: one node publishes at a time.
const PUBLISH_LEASE: &str = "kt-publisher";
const PUBLISH_LEASE_TTL_MS: i64 = 15_000;
/// How often the whole directory is compared with the devices, in case a mark was lost.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(600);

/// The VRF's private key, as akd asks for it.
#[derive(Clone)]
struct VrfKey(Arc<Zeroizing<[u8; 32]>>);

#[async_trait::async_trait]
impl VRFKeyStorage for VrfKey {
    async fn retrieve(&self) -> Result<Vec<u8>, VrfError> {
        Ok(self.0.to_vec())
    }
}

type KtDirectory = Directory<Config, StoreDb, VrfKey>;

/// The key directory of this node.
pub(crate) struct Kt {
    directory: KtDirectory,
    signing: SigningKey,
    keys: Signed<KtKeysBody>,
    org_id: redoubt_proto::OrgId,
    store: Arc<dyn Store>,
    epoch_interval: Duration,
    /// Woken when a user is marked changed.
    wake: Notify,
    /// The newest epoch published (by this node or, told by hints, another).
    published: watch::Sender<u64>,
    /// Tests only: what a compromised server does instead of logging honestly.
    harness: Option<Arc<CompromisedDirectory>>,
    /// Whether other nodes share the store (and may have failed a publication this node
    /// never saw).
    shared: bool,
    /// Set when a publication of this node failed part-way: the next one recovers first.
    interrupted: std::sync::atomic::AtomicBool,
    /// Held exclusively while an epoch is published, shared while a proof is made from
    /// the tree. akd lets its one writer and readers share its storage (its publish
    /// takes only a read lock: it expects readers in other processes), and a proof made
    /// while an epoch is written mixes the two epochs' nodes and does not verify.
    tree: tokio::sync::RwLock<()>,
}

/// **For tests of devices against a compromised server**: makes the key directory do what
/// a seized or compelled server could — leave some users' device changes unlogged, and
/// show one user's devices a different root (a fork). Set through
/// `OpenOptions::compromised_directory`, never by configuration: it exists so tests can
/// prove devices notice, since the server itself is not trusted.
#[derive(Debug, Default)]
pub struct CompromisedDirectory {
    withheld: std::sync::Mutex<std::collections::BTreeSet<UserName>>,
    forked_for: std::sync::Mutex<Option<UserName>>,
}

impl CompromisedDirectory {
    /// Stops (true) or resumes (false) logging `user`'s device changes.
    pub fn withhold(&self, user: &UserName, withhold: bool) {
        let mut set = self
            .withheld
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if withhold {
            set.insert(user.clone());
        } else {
            set.remove(user);
        }
    }

    /// Shows `user`'s sessions another root for every epoch (or nobody, with `None`).
    pub fn fork_for(&self, user: Option<UserName>) {
        *self
            .forked_for
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = user;
    }

    fn withheld(&self) -> std::collections::BTreeSet<UserName> {
        self.withheld
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn forks(&self, user: &UserName) -> bool {
        self.forked_for
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            == Some(user)
    }
}

impl std::fmt::Debug for Kt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kt")
            .field("epoch", &*self.published.borrow())
            .finish_non_exhaustive()
    }
}

fn kt_error(context: &str, error: impl std::fmt::Display) -> ServerError {
    ServerError::DataDir(format!("key directory: {context}: {error}"))
}

fn api_internal(context: &str, error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "key directory: {context}");
    ApiError::new(
        ErrorCode::Internal,
        format!("the key directory failed ({context})"),
    )
}

/// The transparency key and the VRF key, 64 bytes in `DATA/transparency.key` (0600).
fn load_or_create_keys(data: &DataDir) -> Result<(SigningKey, Zeroizing<[u8; 32]>), ServerError> {
    let path = data.transparency_key();
    let mut bytes = if path.exists() {
        data_dir::read(&path)?
    } else {
        let mut fresh = vec![0u8; 64];
        OsRng.fill_bytes(&mut fresh);
        data_dir::write_private(&path, &fresh)?;
        tracing::info!(path = %path.display(), "created the key directory's transparency key");
        fresh
    };
    if bytes.len() != 64 {
        bytes.zeroize();
        return Err(ServerError::DataDir(format!(
            "{} is not a 64-byte transparency key",
            path.display()
        )));
    }
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&bytes[..32]);
    let signing = SigningKey::from_bytes(&seed);
    seed.zeroize();
    let mut vrf = Zeroizing::new([0u8; 32]);
    vrf.copy_from_slice(&bytes[32..]);
    bytes.zeroize();
    Ok((signing, vrf))
}

/// The certificates a user's logged value commits to: their approved, unrevoked devices.
/// A user's device set as logged: the certificates of their active devices, and the signed
/// approvals of those another device of theirs approved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSet {
    pub certificates: Vec<Vec<u8>>,
    pub approvals: Vec<Vec<u8>>,
}

impl DeviceSet {
    /// The set of `devices` that are active (approved, not revoked).
    fn active<'a>(devices: impl Iterator<Item = &'a DeviceRecord>) -> Self {
        let mut set = Self::default();
        for device in devices.filter(|d| d.revoked_at_unix_s.is_none() && d.approved_at_unix_s.is_some()) {
            set.certificates.push(device.certificate.clone());
            set.approvals.extend(device.approval.clone());
        }
        set
    }

    fn of_logged(set: &KtSet) -> Self {
        Self {
            certificates: set.certificates.clone(),
            approvals: set.approvals.clone(),
        }
    }

    pub fn commitment(&self) -> [u8; 32] {
        device_set_commitment(&self.certificates, &self.approvals)
    }
}

impl Kt {
    pub(crate) async fn open(
        data: &DataDir,
        store: Arc<dyn Store>,
        org: &Org,
        epoch_ms: u64,
        shared: bool,
        harness: Option<Arc<CompromisedDirectory>>,
    ) -> Result<Self, ServerError> {
        let (signing, vrf) = load_or_create_keys(data)?;
        let vrf = VrfKey(Arc::new(vrf));
        let vrf_public = vrf
            .get_vrf_public_key()
            .await
            .map_err(|e| kt_error("VRF key", format!("{e:?}")))?;
        let keys = org.sign(&KtKeysBody {
            org_id: org.id,
            transparency_key: Bytes(signing.verifying_key().to_bytes()),
            vrf_public_key: Bytes(vrf_public.to_bytes()),
        });
        // A node sharing the database reads what others publish: it must not keep tree
        // nodes in a cache the publisher's writes would leave stale.
        let db = StoreDb(store.clone());
        let manager = if shared {
            StorageManager::new_no_cache(db)
        } else {
            StorageManager::new(db, Some(Duration::from_secs(3600)), Some(256 * 1024 * 1024), None)
        };
        let directory = Directory::new(manager, vrf, AzksParallelismConfig::disabled())
            .await
            .map_err(|e| kt_error("opening", e))?;
        let kt = Self {
            directory,
            signing,
            keys,
            org_id: org.id,
            store,
            epoch_interval: Duration::from_millis(epoch_ms.max(1)),
            wake: Notify::new(),
            published: watch::Sender::new(0),
            harness,
            shared,
            interrupted: std::sync::atomic::AtomicBool::new(false),
            tree: tokio::sync::RwLock::new(()),
        };
        kt.recover(!shared).await?;
        Ok(kt)
    }

    /// Signs the head the tree is at when it has none (the first start, or a crash between
    /// akd's commit and the head), after checking this node's key signed the newest head.
    async fn recover(&self, publisher: bool) -> Result<(), ServerError> {
        let current = self
            .directory
            .get_epoch_hash()
            .await
            .map_err(|e| kt_error("reading the epoch", e))?;
        // Sets written for an epoch the tree never reached (its publication failed); only
        // the publisher may say so (another node would see the sets of a publication under
        // way).
        if publisher {
            self.store.kt_drop_sets_after(current.0).await?;
        }
        let latest = self.store.kt_latest_head().await?;
        if let Some((_, head)) = &latest {
            let head = Signed::<EpochHead>::from_bytes(head).map_err(|e| kt_error("newest head", e))?;
            head.verify(&self.signing.verifying_key()).map_err(|_| {
                ServerError::DataDir(
                    "transparency.key is not the key that signed the key directory's newest epoch: \
                     copy transparency.key from the node that created it (it is one of the node secrets)"
                        .into(),
                )
            })?;
        }
        let latest_epoch = latest.map(|(epoch, _)| epoch);
        if latest_epoch.is_none_or(|e| e < current.0) {
            if latest_epoch.is_some_and(|e| e + 1 < current.0) {
                return Err(kt_error(
                    "recovering",
                    format!(
                        "the tree is at epoch {} but the newest head is older by more than one",
                        current.0
                    ),
                ));
            }
            let record = self.epoch_record(current.0, current.1).await?;
            match self.store.kt_finish_epoch(&record, &[]).await {
                Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
                Err(other) => return Err(other.into()),
            }
        }
        self.published.send_replace(current.0);
        Ok(())
    }

    /// The record of the epoch the tree has just reached: its signed head, and the
    /// append-only proof from the epoch before (made now, while it is one epoch's changes
    /// and not every change since).
    async fn epoch_record(&self, epoch: u64, root: [u8; 32]) -> Result<KtEpochRecord, ServerError> {
        let head = Signed::sign(
            &EpochHead {
                org_id: self.org_id,
                epoch,
                root_hash: Bytes(root),
                published_at_unix_ms: crate::unix_now_ms(),
            },
            &self.signing,
        );
        let proof = match epoch.checked_sub(1) {
            None => Vec::new(),
            Some(before) => {
                let proof = self
                    .directory
                    .audit(before, epoch)
                    .await
                    .map_err(|e| kt_error("making the append-only proof", e))?;
                let single = proof
                    .proofs
                    .first()
                    .ok_or_else(|| kt_error("making the append-only proof", "akd made none"))?;
                redoubt_kt::encode_append_only_proof(single)
            }
        };
        Ok(KtEpochRecord {
            epoch,
            head: head.to_bytes(),
            proof,
        })
    }

    /// Marks users whose device set changed and wakes the publisher.
    pub(crate) async fn mark(&self, users: &[UserName]) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        self.store.kt_mark_changed(users).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Waits until `certificate` is in `user`'s newest logged set with its epoch's head
    /// published, for at most `limit`. False when it is not by then (it will be logged at a
    /// later epoch: the enrolment still stands).
    pub(crate) async fn wait_logged(&self, user: &UserName, certificate: &[u8], limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let mut published = self.published.subscribe();
        loop {
            if let Ok(sets) = self.store.kt_sets(user).await
                && let Some(newest) = sets.last()
                && newest.certificates.iter().any(|c| c == certificate)
                && let Ok(Some((epoch, _))) = self.store.kt_latest_head().await
                && epoch >= newest.epoch
            {
                return true;
            }
            // Another node may publish: look again at least every 100 ms.
            let wait = tokio::time::sleep(Duration::from_millis(100));
            tokio::select! {
                _ = published.changed() => {}
                () = wait => {}
                () = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }

    /// Records an epoch another node published (told by a hint).
    pub(crate) fn note_published(&self, epoch: u64) {
        self.published.send_if_modified(|current| {
            let newer = epoch > *current;
            if newer {
                *current = epoch;
            }
            newer
        });
    }

    /// Publishes one epoch with the marked users whose active set differs from their
    /// newest logged one. Returns the epoch, if one was published.
    async fn publish_once(&self) -> Result<Option<u64>, ServerError> {
        let marked = self.store.kt_changed(EPOCH_USERS_MAX).await?;
        if marked.is_empty() {
            return Ok(None);
        }
        let mut sets = Vec::new();
        let withheld = self.harness.as_ref().map(|h| h.withheld()).unwrap_or_default();
        let marked: Vec<UserName> = marked.into_iter().filter(|u| !withheld.contains(u)).collect();
        if marked.is_empty() {
            return Ok(None);
        }
        for user in &marked {
            let devices = self.store.list_devices(Some(user)).await?;
            let active = DeviceSet::active(devices.iter());
            let logged = self.store.kt_sets(user).await?;
            let changed = match logged.last() {
                Some(newest) => DeviceSet::of_logged(newest).commitment() != active.commitment(),
                None => !active.certificates.is_empty(),
            };
            if changed {
                sets.push((user.clone(), active));
            }
        }
        if sets.is_empty() {
            self.store.kt_unmark(&marked).await?;
            return Ok(None);
        }
        let epoch = self.publish_sets(&sets).await?;
        self.store.kt_unmark(&marked).await?;
        // A user whose devices changed again while this epoch was made was unmarked with
        // the others: marked again, they go into the next one.
        let mut again = Vec::new();
        for user in &marked {
            let logged = sets
                .iter()
                .find(|(u, _)| u == user)
                .map(|(_, set)| set.commitment());
            let logged = match logged {
                Some(commitment) => commitment,
                None => self.store.kt_sets(user).await?.last().map_or_else(
                    || DeviceSet::default().commitment(),
                    |s| DeviceSet::of_logged(s).commitment(),
                ),
            };
            let devices = self.store.list_devices(Some(user)).await?;
            if DeviceSet::active(devices.iter()).commitment() != logged {
                again.push(user.clone());
            }
        }
        self.mark(&again).await?;
        Ok(Some(epoch))
    }

    /// Publishes one epoch setting each user's device set to the certificates given, and
    /// signs its head. Returns the epoch.
    pub(crate) async fn publish_sets(&self, sets: &[(UserName, DeviceSet)]) -> Result<u64, ServerError> {
        use std::sync::atomic::Ordering;
        let _writing = self.tree.write().await;
        // After a failed publication: the head it did not sign, the sets of the epoch it
        // did not reach. Alone on its store, a node knows whether one failed (it recovered
        // at open); sharing it, another node's may have.
        if self.shared || self.interrupted.load(Ordering::Acquire) {
            self.recover(true).await?;
            self.interrupted.store(false, Ordering::Release);
        }
        let published = self.publish_epoch(sets).await;
        if published.is_err() {
            self.interrupted.store(true, Ordering::Release);
        }
        published
    }

    /// The publication itself; `publish_sets` recovers before the next one after it fails.
    async fn publish_epoch(&self, sets: &[(UserName, DeviceSet)]) -> Result<u64, ServerError> {
        let current = self
            .directory
            .get_epoch_hash()
            .await
            .map_err(|e| kt_error("reading the epoch", e))?;
        let epoch = current.0 + 1;
        let rows: Vec<KtSet> = sets
            .iter()
            .map(|(user, set)| KtSet {
                user: user.clone(),
                epoch,
                certificates: set.certificates.clone(),
                approvals: set.approvals.clone(),
            })
            .collect();
        self.store.kt_put_sets(&rows).await?;
        let updates = sets
            .iter()
            .map(|(user, set)| (AkdLabel(user_label(user)), AkdValue(set.commitment().to_vec())))
            .collect();
        let published = self
            .directory
            .publish(updates)
            .await
            .map_err(|e| kt_error("publishing", e))?;
        if published.0 != epoch {
            return Err(kt_error(
                "publishing",
                format!("expected epoch {epoch}, the tree is at {}", published.0),
            ));
        }
        let record = self.epoch_record(epoch, published.1).await?;
        match self.store.kt_finish_epoch(&record, &[]).await {
            // A node starting meanwhile signed this epoch's head from the same tree.
            Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
            Err(other) => return Err(other.into()),
        }
        self.published.send_replace(epoch);
        Ok(epoch)
    }

    /// Marks every user whose active set differs from their newest logged one.
    async fn reconcile(&self) -> Result<(), ServerError> {
        let mut active: BTreeMap<UserName, Vec<&DeviceRecord>> = BTreeMap::new();
        let devices = self.store.list_devices(None).await?;
        for device in &devices {
            active.entry(device.user.clone()).or_default().push(device);
        }
        let logged: BTreeMap<UserName, [u8; 32]> = self
            .store
            .kt_latest_sets()
            .await?
            .into_iter()
            .map(|s| (s.user.clone(), DeviceSet::of_logged(&s).commitment()))
            .collect();
        let empty = DeviceSet::default().commitment();
        let mut differ = Vec::new();
        for (user, devices) in &active {
            let current = DeviceSet::active(devices.iter().copied()).commitment();
            if logged.get(user).copied().unwrap_or(empty) != current {
                differ.push(user.clone());
            }
        }
        // Users with logged devices but no device rows at all (deleted users).
        for (user, commitment) in &logged {
            if !active.contains_key(user) && *commitment != empty {
                differ.push(user.clone());
            }
        }
        if !differ.is_empty() {
            tracing::info!(
                users = differ.len(),
                "key directory: logging device sets that changed unlogged"
            );
            self.mark(&differ).await?;
        }
        Ok(())
    }

    /// `KtHead`: the keys, the newest (or the named) epoch head, auditors' signatures.
    pub(crate) async fn head(
        &self,
        epoch: Option<u64>,
        asker: Option<&UserName>,
    ) -> Result<KtHead, ApiError> {
        let head = match epoch {
            Some(epoch) => self.store.kt_head(epoch).await?,
            None => self.store.kt_latest_head().await?.map(|(_, head)| head),
        };
        let head = head
            .map(|bytes| Signed::<EpochHead>::from_bytes(&bytes))
            .transpose()
            .map_err(|e| api_internal("stored head", e))?
            .map(|head| self.shown_to(head, asker));
        if epoch.is_some() && head.is_none() {
            return Err(ApiError::new(ErrorCode::NotFound, "no such epoch"));
        }
        let auditors = self
            .store
            .kt_auditor_signatures()
            .await?
            .iter()
            .filter_map(|bytes| Signed::<AuditorStatement>::from_bytes(bytes).ok())
            .collect();
        Ok(KtHead {
            keys: self.keys.clone(),
            head,
            auditors,
        })
    }

    /// The signed head of `epoch`, waiting briefly for one being written (akd moves the
    /// tree before the publisher stores the head).
    async fn signed_head(&self, epoch: u64) -> Result<Signed<EpochHead>, ApiError> {
        for _ in 0..40 {
            if let Some(bytes) = self.store.kt_head(epoch).await? {
                return Signed::from_bytes(&bytes).map_err(|e| api_internal("stored head", e));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(ApiError::new(
            ErrorCode::StorageUnavailable,
            format!("epoch {epoch} is being published; retry"),
        ))
    }

    /// The head `asker` is shown: the stored one, or under the test harness's fork,
    /// another root signed for the same epoch.
    fn shown_to(&self, head: Signed<EpochHead>, asker: Option<&UserName>) -> Signed<EpochHead> {
        let forked = asker.is_some_and(|a| self.harness.as_ref().is_some_and(|h| h.forks(a)));
        if !forked {
            return head;
        }
        match head.verify(&self.signing.verifying_key()) {
            Ok(mut body) => {
                use sha2::Digest;
                body.root_hash = Bytes(
                    sha2::Sha256::new()
                        .chain_update(b"fork")
                        .chain_update(body.root_hash.0)
                        .finalize()
                        .into(),
                );
                Signed::sign(&body, &self.signing)
            }
            Err(_) => head,
        }
    }

    /// `KtHistory`: every logged version of the user's device set, with akd's proof.
    pub(crate) async fn history(
        &self,
        user: UserName,
        asker: &UserName,
    ) -> Result<KtHistoryAnswer, ApiError> {
        let mut answer = self.history_of(user).await?;
        answer.head = self.shown_to(answer.head, Some(asker));
        Ok(answer)
    }

    async fn history_of(&self, user: UserName) -> Result<KtHistoryAnswer, ApiError> {
        // The sets, the proof and the head, all of one epoch.
        let _reading = self.tree.read().await;
        let logged = self.store.kt_sets(&user).await?;
        if logged.is_empty() {
            let (epoch, _) = self.store.kt_latest_head().await?.unwrap_or((0, Vec::new()));
            return Ok(KtHistoryAnswer {
                head: self.signed_head(epoch).await?,
                user,
                versions: Vec::new(),
                proof: Vec::new(),
            });
        }
        let (proof, epoch_hash) = self
            .directory
            .key_history(&AkdLabel(user_label(&user)), HistoryParams::Complete)
            .await
            .map_err(|e| api_internal("history proof", e))?;
        let mut versions = Vec::with_capacity(proof.update_proofs.len());
        for update in &proof.update_proofs {
            let Some(set) = logged.iter().find(|s| s.epoch == update.epoch) else {
                return Err(api_internal(
                    "history",
                    format!("no certificates stored for epoch {}", update.epoch),
                ));
            };
            versions.push(KtVersion {
                epoch: set.epoch,
                certificates: set.certificates.clone(),
                approvals: set.approvals.clone(),
            });
        }
        versions.sort_by_key(|v| v.epoch);
        Ok(KtHistoryAnswer {
            head: self.signed_head(epoch_hash.0).await?,
            user,
            versions,
            proof: redoubt_kt::encode_history_proof(&proof),
        })
    }

    /// `KtAudit`: epochs after `after` with their append-only proofs; no user names.
    pub(crate) async fn audit(&self, after: u64, limit: u32) -> Result<Vec<KtAuditEpoch>, ApiError> {
        let heads = self
            .store
            .kt_heads(after, limit.clamp(1, KT_AUDIT_EPOCHS_MAX))
            .await?;
        let mut epochs = Vec::with_capacity(heads.len());
        let mut bytes = 0;
        // Each epoch's proof was made when it was published: answering is reading.
        for record in heads {
            if record.epoch == 0 {
                continue;
            }
            bytes += record.proof.len() + record.head.len();
            if bytes > KT_AUDIT_BYTES_MAX && !epochs.is_empty() {
                break;
            }
            epochs.push(KtAuditEpoch {
                head: Signed::from_bytes(&record.head).map_err(|e| api_internal("stored head", e))?,
                proof: record.proof,
            });
        }
        Ok(epochs)
    }

    /// `KtAuditorSign`: keeps the countersignature of an auditor the policy names, when it
    /// signs the root this directory published for that epoch.
    pub(crate) async fn auditor_sign(
        &self,
        auditors: &[[u8; 32]],
        document: Signed<AuditorStatement>,
    ) -> Result<(), ApiError> {
        let refused = |message: &str| ApiError::new(ErrorCode::Forbidden, message.to_owned());
        let claimed: AuditorStatement = postcard::from_bytes(&document.body)
            .map_err(|_| ApiError::new(ErrorCode::InvalidArgument, "malformed auditor statement"))?;
        if !auditors.contains(&claimed.auditor_key.0) {
            return Err(refused(
                "this auditor key is not in the organisation's kt_auditor_keys",
            ));
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(&claimed.auditor_key.0)
            .map_err(|_| refused("malformed auditor key"))?;
        let statement = document
            .verify(&key)
            .map_err(|_| refused("the signature does not verify with the auditor's key"))?;
        if statement.org_id != self.org_id {
            return Err(refused("the statement names another organisation"));
        }
        let head = self.signed_head(statement.epoch).await?;
        let head = head
            .verify(&self.signing.verifying_key())
            .map_err(|e| api_internal("stored head", e))?;
        if head.root_hash != statement.root_hash {
            tracing::error!(
                epoch = statement.epoch,
                "an auditor signed a root this server did not publish for that epoch"
            );
            return Err(refused(
                "the signed root is not this directory's root for that epoch",
            ));
        }
        self.store
            .kt_put_auditor_signature(&claimed.auditor_key.0, statement.epoch, &document.to_bytes())
            .await?;
        Ok(())
    }
}

/// A data folder's key directory outside a running server (stop the server first): for
/// the benchmark and for tests that publish many epochs directly. It signs with the folder's
/// transparency key, like the server.
pub struct KeyDirectory {
    kt: Kt,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for KeyDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyDirectory").field("kt", &self.kt).finish()
    }
}

impl KeyDirectory {
    /// Opens the key directory of an initialised SQLite data folder.
    pub async fn open(data: &std::path::Path) -> Result<Self, ServerError> {
        let data = DataDir::new(data);
        let store: Arc<dyn Store> =
            Arc::new(redoubt_store_sqlite::SqliteStore::open(&data.database()).await?);
        let org = store
            .org()
            .await?
            .ok_or_else(|| ServerError::DataDir("the data folder holds no organisation yet".into()))?;
        let key = crate::load_or_create_org_key(&data, true)?;
        let org = Org::new(org.org_id, String::new(), key);
        let kt = Kt::open(&data, store.clone(), &org, 1, false, None).await?;
        Ok(Self { kt, store })
    }

    /// Publishes one epoch in which each user's logged device set becomes the
    /// certificates given. Returns the epoch.
    pub async fn publish(&self, sets: &[(UserName, DeviceSet)]) -> Result<u64, ServerError> {
        self.kt.publish_sets(sets).await
    }

    /// What `KtHistory` answers for `user`.
    pub async fn history(&self, user: &UserName) -> Result<KtHistoryAnswer, ServerError> {
        self.kt
            .history_of(user.clone())
            .await
            .map_err(|e| ServerError::Refused(e.0))
    }

    /// What `KtAudit` answers.
    pub async fn audit(&self, after: u64, limit: u32) -> Result<Vec<KtAuditEpoch>, ServerError> {
        self.kt
            .audit(after, limit)
            .await
            .map_err(|e| ServerError::Refused(e.0))
    }

    /// The directory's keys as devices and auditors check them.
    pub fn keys(&self) -> Signed<KtKeysBody> {
        self.kt.keys.clone()
    }

    pub async fn close(self) {
        self.store.close().await;
    }
}

/// After a change to `user`'s devices: marks them for the next epoch and, given the
/// certificate of a device that became usable, waits (bounded) until it is logged, so the
/// device is usable by others when the request that made it so returns. The change itself
/// is committed already: a failure here is logged, and the reconciliation at the next start
/// (or within ten minutes) logs the user.
pub(crate) async fn log_device(state: &State, user: &UserName, usable: Option<&[u8]>) {
    if let Err(error) = state.kt.mark(std::slice::from_ref(user)).await {
        tracing::warn!(%error, %user, "key directory: marking a changed device set failed");
        return;
    }
    let withheld = state
        .kt
        .harness
        .as_ref()
        .is_some_and(|h| h.withheld().contains(user));
    if let Some(certificate) = usable.filter(|_| !withheld) {
        let limit = state.kt.epoch_interval + Duration::from_secs(10);
        if !state.kt.wait_logged(user, certificate, limit).await {
            tracing::warn!(%user, "key directory: a new device was not logged in time; it will be");
        }
    }
}

/// `KtAuditorSign`, for the auditors `server.kt_auditor_keys` or a policy names.
pub(crate) async fn auditor_sign(state: &State, document: Signed<AuditorStatement>) -> Result<(), ApiError> {
    let mut auditors: Vec<[u8; 32]> = state
        .config
        .server
        .kt_auditor_keys
        .iter()
        .filter_map(|hex| data_encoding::HEXLOWER_PERMISSIVE.decode(hex.as_bytes()).ok())
        .filter_map(|bytes| bytes.try_into().ok())
        .collect();
    // Auditors some policy requires are taken too: devices would wait for them otherwise.
    for (_, settings) in state.store.policies().await? {
        if let Some(keys) = settings.kt_auditor_keys {
            auditors.extend_from_slice(keys.keys());
        }
    }
    state.kt.auditor_sign(&auditors, document).await
}

/// The publisher: one epoch at most every `kt_epoch_ms` while users are marked; in a
/// cluster, only on the node holding the lease.
pub(crate) async fn run(state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let kt = &state.kt;
    if let Err(error) = kt.reconcile().await {
        tracing::warn!(%error, "key directory: comparing the log with the devices failed");
    }
    let mut last_publish = tokio::time::Instant::now()
        .checked_sub(kt.epoch_interval)
        .unwrap_or_else(tokio::time::Instant::now);
    let mut last_reconcile = tokio::time::Instant::now();
    loop {
        // Marks made on other nodes arrive through the store: look at least every second.
        tokio::select! {
            () = kt.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        let next = last_publish + kt.epoch_interval;
        if next > tokio::time::Instant::now() {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                _ = stop.changed() => return,
            }
        }
        if state.cluster.is_shared() {
            let holder = state.cluster.node_id.clone();
            match state
                .store
                .acquire_lease(PUBLISH_LEASE, &holder, crate::unix_now_ms(), PUBLISH_LEASE_TTL_MS)
                .await
            {
                Ok(Some(_)) => {}
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%error, "key directory: taking the publisher lease failed");
                    continue;
                }
            }
        }
        if last_reconcile.elapsed() > RECONCILE_INTERVAL {
            last_reconcile = tokio::time::Instant::now();
            if let Err(error) = kt.reconcile().await {
                tracing::warn!(%error, "key directory: comparing the log with the devices failed");
            }
        }
        match kt.publish_once().await {
            Ok(Some(epoch)) => {
                last_publish = tokio::time::Instant::now();
                tracing::debug!(epoch, "key directory: published");
                crate::cluster::announce(&state, crate::cluster::Hint::KtEpoch { epoch });
                // More may be marked than one epoch takes.
                kt.wake.notify_one();
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "key directory: publishing an epoch failed; will retry"),
        }
    }
}
