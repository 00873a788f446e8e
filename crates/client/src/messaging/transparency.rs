//! Key transparency on the device: what it accepts, what it watches, what it tells its user.
//!
//! - **Logged before usable.** The MLS identity provider admits a member only if its
//!   certificate's hash is in [`LoggedCertificates`]: certificates this device saw in a
//!   verified history of their user. When a group operation is refused for a certificate
//!   not yet seen, the device fetches the user's history (`KtHistory`), verifies it against
//!   a signed epoch head and tries once more; a certificate still not logged stays refused,
//!   with a notice.
//! - **Self-monitoring.** At open and at every `KtEpoch` event the device reads its own
//!   user's history: a certificate it was not told of (any device enrolled after this one)
//!   becomes a notice. A device approved by another of the user's devices carries that
//!   device's signed approval in the log: the notice names the approver; one this device
//!   approved itself is no news. A device with an approval that does not verify, or
//!   without one where the policy requires approval, is an `unapproved_device` notice.
//! - **Forks.** Each verified head's root is kept by epoch. Two validly signed roots for one
//!   epoch (from the server, or from a member's message witness) prove the server showed
//!   different directories: a notice.
//!
//! Vault keys (namespace `app`): `kt/keys` (the directory's keys, pinned at first sight),
//! `kt/head` (newest verified head), `kt/root/<epoch>`, `kt/logged/<hash>`, `kt/own/<hash>`,
//! `kt/notice/<time>-<n>`, `kt/verified/<user>`.

use redoubt_kt::LoggedVersion;
use redoubt_proto::{
    AuditorStatement, DeviceApproval, DeviceCertificate, DeviceId, EpochHead, ErrorBody, ErrorCode,
    KtKeysBody, KtWitness, Request, Response, Signed, UserName, certificate_hash, safety_number,
};
use serde::{Deserialize, Serialize};

use super::{Messenger, storage_error};
use crate::ClientError;

const KEYS_KEY: &str = "kt/keys";
const HEAD_KEY: &str = "kt/head";
const NOTICE_PREFIX: &str = "kt/notice/";
/// Notices kept at most (the oldest stay: they are the first signs).
const NOTICES_MAX: usize = 1000;
/// Roots of this many epochs at most are kept for fork checks (older ones are dropped).
const ROOTS_KEPT: u64 = 10_000;

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

fn root_key(epoch: u64) -> String {
    format!("kt/root/{epoch:020}")
}

fn logged_key(hash: &[u8; 32]) -> String {
    format!("kt/logged/{}", hex(hash))
}

fn own_key(hash: &[u8; 32]) -> String {
    format!("kt/own/{}", hex(hash))
}

fn verified_key(user: &UserName) -> String {
    format!("kt/verified/{user}")
}

fn kt_refused(message: String) -> ClientError {
    ClientError::Server(ErrorBody::new(ErrorCode::Forbidden, message))
}

/// What a device tells its user about the key directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoticeKind {
    /// A device of this user appeared in the log that this device was not told of.
    NewDevice,
    /// A device of this user appeared in the log without a valid approval by another of
    /// their devices, though the policy requires one (or with an approval that does not
    /// verify).
    UnapprovedDevice,
    /// The server offered a device that is not in the log; it was refused.
    UnloggedDevice,
    /// Two different roots were signed for one epoch: the server showed different
    /// directories to different devices.
    Fork,
    /// A verified contact's devices changed since the safety number was compared.
    ContactChanged,
}

impl NoticeKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NewDevice => "new_device",
            Self::UnapprovedDevice => "unapproved_device",
            Self::UnloggedDevice => "unlogged_device",
            Self::Fork => "fork",
            Self::ContactChanged => "contact_changed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityNotice {
    pub kind: NoticeKind,
    pub user: UserName,
    pub device_id: Option<DeviceId>,
    pub device_name: Option<String>,
    /// The epoch the change was logged in (or the forked epoch).
    pub epoch: u64,
    pub at_unix_s: i64,
    pub detail: String,
}

/// A safety number and what it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    /// 60 digits in 12 groups of 5.
    pub number: String,
    pub peer: UserName,
    /// The peer's logged devices (their certificates' device ids and names).
    pub peer_devices: Vec<(DeviceId, String)>,
    /// The number marked verified earlier, if any.
    pub marked: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredHead {
    epoch: u64,
    root: [u8; 32],
    /// The signed head itself, which this device shows other members as its witness.
    signed: Vec<u8>,
}

impl Messenger {
    /// Fills the logged-certificate set from the vault at open; this device's own
    /// certificate is always admitted (it is what the device is).
    pub(super) fn load_logged(&self) -> Result<(), ClientError> {
        self.logged.insert(certificate_hash(self.profile.certificate()));
        for (key, _) in self.data.get_by_prefix("kt/logged/").map_err(storage_error)? {
            let hash = data_encoding::HEXLOWER
                .decode(key.trim_start_matches("kt/logged/").as_bytes())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok());
            if let Some(hash) = hash {
                self.logged.insert(hash);
            }
        }
        Ok(())
    }

    fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), ClientError> {
        let bytes = postcard::to_stdvec(value).map_err(|e| ClientError::Profile(e.to_string()))?;
        self.data.insert(key, &bytes).map_err(storage_error)
    }

    fn read<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ClientError> {
        self.data
            .get(key)
            .map_err(storage_error)?
            .map(|bytes| postcard::from_bytes(&bytes).map_err(|e| ClientError::Profile(e.to_string())))
            .transpose()
    }

    fn add_notice(&self, notice: &SecurityNotice) -> Result<(), ClientError> {
        // Once per (kind, user, device, epoch), and a bounded number in all: a flood of
        // the same alarm helps nobody.
        let existing = self.security_notices()?;
        if existing.len() >= NOTICES_MAX
            || existing.iter().any(|n| {
                n.kind == notice.kind
                    && n.user == notice.user
                    && n.device_id == notice.device_id
                    && n.epoch == notice.epoch
            })
        {
            return Ok(());
        }
        tracing::info!(kind = notice.kind.as_str(), user = %notice.user, epoch = notice.epoch, detail = %notice.detail,
            "key transparency notice");
        let mut id = [0u8; 4];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        let key = format!("{NOTICE_PREFIX}{:020}-{}", crate::unix_now_ms(), hex(&id));
        self.put(&key, notice)
    }

    /// Every notice, oldest first.
    pub fn security_notices(&self) -> Result<Vec<SecurityNotice>, ClientError> {
        self.data
            .get_by_prefix(NOTICE_PREFIX)
            .map_err(storage_error)?
            .iter()
            .map(|(_, bytes)| postcard::from_bytes(bytes).map_err(|e| ClientError::Profile(e.to_string())))
            .collect()
    }

    /// The directory's keys: verified with the organisation's key and pinned at first
    /// sight; a change is refused (and noticed).
    async fn kt_keys(&mut self) -> Result<KtKeysBody, ClientError> {
        if let Some(keys) = self.read::<KtKeysBody>(KEYS_KEY)? {
            return Ok(keys);
        }
        let head = match self.session.request(Request::KtHead { epoch: None }).await? {
            Response::KtHead(head) => head,
            _ => return Err(ClientError::Protocol("unexpected response to KtHead".into())),
        };
        let keys = redoubt_kt::verify_keys(&head.keys, &self.org_key, &self.profile.org_id())
            .map_err(|e| kt_refused(e.to_string()))?;
        self.put(KEYS_KEY, &keys)?;
        Ok(keys)
    }

    /// Checks a head and records its root: a different root already recorded for its
    /// epoch is a fork.
    async fn accept_head(&mut self, signed: &Signed<EpochHead>) -> Result<EpochHead, ClientError> {
        let keys = self.kt_keys().await?;
        let head = redoubt_kt::verify_head(signed, &keys).map_err(|e| kt_refused(e.to_string()))?;
        self.record_root(&head, signed, "the server")?;
        Ok(head)
    }

    fn record_root(
        &self,
        head: &EpochHead,
        signed: &Signed<EpochHead>,
        from: &str,
    ) -> Result<(), ClientError> {
        let key = root_key(head.epoch);
        match self.read::<[u8; 32]>(&key)? {
            Some(root) if root != head.root_hash.0 => {
                self.add_notice(&SecurityNotice {
                    kind: NoticeKind::Fork,
                    user: self.user.clone(),
                    device_id: None,
                    device_name: None,
                    epoch: head.epoch,
                    at_unix_s: crate::unix_now(),
                    detail: format!(
                        "{from} presented a root for epoch {} other than the one this device verified: \
                         the server is showing different key directories to different devices",
                        head.epoch
                    ),
                })?;
                return Err(kt_refused(format!("key directory fork at epoch {}", head.epoch)));
            }
            Some(_) => {}
            None => {
                self.put(&key, &head.root_hash.0)?;
                if head.epoch >= ROOTS_KEPT {
                    let _ = self.data.delete(&root_key(head.epoch - ROOTS_KEPT));
                }
            }
        }
        let newest = self.read::<StoredHead>(HEAD_KEY)?;
        if newest.is_none_or(|n| n.epoch < head.epoch) {
            self.put(
                HEAD_KEY,
                &StoredHead {
                    epoch: head.epoch,
                    root: head.root_hash.0,
                    signed: signed.to_bytes(),
                },
            )?;
        }
        Ok(())
    }

    /// Every logged version of `user`'s device set, verified; their certificates join the
    /// set of logged ones.
    pub async fn kt_history(&mut self, user: &UserName) -> Result<Vec<LoggedVersion>, ClientError> {
        let answer = match self
            .call_repeatable(Request::KtHistory { user: user.clone() })
            .await?
        {
            Response::KtHistory(answer) => answer,
            _ => return Err(ClientError::Protocol("unexpected response to KtHistory".into())),
        };
        if answer.user != *user {
            return Err(ClientError::Protocol(
                "KtHistory answered for another user".into(),
            ));
        }
        // A server answering from an older epoch than this device has seen could hide a
        // device logged since: refused.
        let seen = self.read::<StoredHead>(HEAD_KEY)?.map_or(0, |h| h.epoch);
        let head = self.accept_head(&answer.head).await?;
        if head.epoch < seen.max(self.kt_event_epoch) {
            return Err(kt_refused(format!(
                "the server answered from epoch {} of the key directory, older than epoch {} this device has seen",
                head.epoch,
                seen.max(self.kt_event_epoch)
            )));
        }
        let keys = self.kt_keys().await?;
        let versions =
            redoubt_kt::verify_history(&keys, &head, &answer).map_err(|e| kt_refused(e.to_string()))?;
        // Each logged certificate must be the organisation's, for this very user: a
        // certificate of alice's logged under mallory's name is no proof for alice.
        for certificate in versions.iter().flat_map(|v| &v.certificates) {
            let decoded = DeviceCertificate::decode(certificate)
                .map_err(|e| kt_refused(format!("a certificate logged for {user} is malformed: {e}")))?;
            let not_before = decoded.unverified_body().not_before_unix_s;
            let verified = decoded
                .verify(&self.org_key, &self.profile.org_id(), not_before)
                .map_err(|e| kt_refused(format!("a certificate logged for {user} is refused: {e}")))?;
            if verified.body().user != *user {
                return Err(kt_refused(format!(
                    "the key directory logs a certificate of {} under {user}",
                    verified.body().user
                )));
            }
        }
        for version in &versions {
            for certificate in &version.certificates {
                let hash = certificate_hash(certificate);
                if !self.logged.contains(&hash) {
                    self.data
                        .insert(&logged_key(&hash), user.as_str().as_bytes())
                        .map_err(storage_error)?;
                    self.logged.insert(hash);
                }
            }
        }
        Ok(versions)
    }

    /// Fetches the histories of users whose certificates were refused as not logged (see
    /// [`redoubt_mls::LoggedCertificates::take_misses`]), each at most once per operation
    /// (`learned`). True when one was fetched: the refused operation is worth another try.
    /// A certificate refused again after its user's history was fetched is not logged: a
    /// notice.
    pub(super) async fn learn_missed(
        &mut self,
        learned: &mut std::collections::BTreeSet<UserName>,
    ) -> Result<bool, ClientError> {
        let mut fetched = false;
        for miss in self.logged.take_misses() {
            if learned.insert(miss.user.clone()) {
                if let Err(error) = self.kt_history(&miss.user).await {
                    tracing::warn!(%error, user = %miss.user, "key transparency: a member's history was refused");
                }
                fetched = true;
            } else {
                self.unlogged_notice(&miss.user, miss.device, &miss.device_name, "a group operation")?;
            }
        }
        Ok(fetched)
    }

    /// After a join that collected unknown members: fetches their users' histories and
    /// checks each of them. `Err(why)` names a member still not logged (noticed).
    pub(super) async fn check_members_logged(&mut self) -> Result<Result<(), String>, ClientError> {
        let misses = self.logged.take_misses();
        let users: std::collections::BTreeSet<UserName> = misses.iter().map(|m| m.user.clone()).collect();
        for user in &users {
            if let Err(error) = self.kt_history(user).await {
                tracing::warn!(%error, %user, "key transparency: a member's history was refused");
            }
        }
        for miss in &misses {
            if !self.logged.contains(&miss.hash) {
                self.unlogged_notice(&miss.user, miss.device, &miss.device_name, "a Welcome")?;
                return Ok(Err(format!(
                    "device {} of {} is not in the key directory",
                    miss.device, miss.user
                )));
            }
        }
        Ok(Ok(()))
    }

    fn unlogged_notice(
        &self,
        user: &UserName,
        device: DeviceId,
        name: &str,
        via: &str,
    ) -> Result<(), ClientError> {
        self.add_notice(&SecurityNotice {
            kind: NoticeKind::UnloggedDevice,
            user: user.clone(),
            device_id: Some(device),
            device_name: Some(name.to_owned()),
            epoch: self.read::<StoredHead>(HEAD_KEY)?.map_or(0, |h| h.epoch),
            at_unix_s: crate::unix_now(),
            detail: format!(
                "{via} named device {name} ({device}) of {user}, which is not in the key directory; it was refused"
            ),
        })
    }

    /// Whether a device may be added now: its certificate is in its user's newest logged
    /// set (not merely logged once: a revoked device stays out). `current` caches each
    /// user's newest set for one operation.
    pub(super) async fn is_current(
        &mut self,
        certificate: &[u8],
        current: &mut std::collections::HashMap<UserName, Vec<[u8; 32]>>,
    ) -> Result<bool, ClientError> {
        let hash = certificate_hash(certificate);
        let body = DeviceCertificate::decode(certificate)
            .map_err(|e| ClientError::Protocol(format!("certificate: {e}")))?;
        let device = body.unverified_body();
        let user = device.user.clone();
        if !current.contains_key(&user) {
            let newest = match self.kt_history(&user).await {
                Ok(versions) => versions
                    .last()
                    .map(|v| v.certificates.iter().map(|c| certificate_hash(c)).collect())
                    .unwrap_or_default(),
                Err(error) => {
                    tracing::warn!(%error, %user, "key transparency: a user's history was refused");
                    Vec::new()
                }
            };
            current.insert(user.clone(), newest);
        }
        if current.get(&user).is_some_and(|set| set.contains(&hash)) {
            return Ok(true);
        }
        self.unlogged_notice(&user, device.device_id, device.device_name.as_str(), "the server")?;
        Ok(false)
    }

    /// Reads this user's history and raises a notice for every device certificate this
    /// device was not told of. At the first check, the devices logged up to this device's
    /// own enrolment are the ones it knew of. Returns the new notices.
    pub async fn monitor_own(&mut self) -> Result<Vec<SecurityNotice>, ClientError> {
        let user = self.user.clone();
        let versions = self.kt_history(&user).await?;
        let own = certificate_hash(self.profile.certificate());
        let first_check = self.data.get(&own_key(&own)).map_err(storage_error)?.is_none();
        let mut notices = Vec::new();
        let mut told_before = None;
        if first_check {
            // The devices logged before this one's epoch are the ones it was enrolled
            // beside; until this device is logged itself there is nothing to compare with.
            let Some(own_epoch) = versions
                .iter()
                .find(|v| v.certificates.iter().any(|c| certificate_hash(c) == own))
                .map(|v| v.epoch)
            else {
                return Ok(notices);
            };
            told_before = Some(own_epoch);
            self.data.insert(&own_key(&own), b"self").map_err(storage_error)?;
        }
        for version in &versions {
            for certificate in &version.certificates {
                let hash = certificate_hash(certificate);
                if self.data.get(&own_key(&hash)).map_err(storage_error)?.is_some() {
                    continue;
                }
                self.data
                    .insert(&own_key(&hash), b"seen")
                    .map_err(storage_error)?;
                if told_before.is_some_and(|epoch| version.epoch < epoch) {
                    continue;
                }
                let Ok(decoded) = DeviceCertificate::decode(certificate) else {
                    continue;
                };
                let body = decoded.unverified_body();
                let approval = approval_of(&versions, version, &hash);
                let (kind, approved) = match &approval {
                    Approval::By { device, .. } if *device == self.profile.device_id() => continue,
                    Approval::By { name, device } => (
                        NoticeKind::NewDevice,
                        format!(", approved on your device \"{name}\" ({device})"),
                    ),
                    Approval::Invalid(why) => (
                        NoticeKind::UnapprovedDevice,
                        format!(", with an approval that does not verify ({why})"),
                    ),
                    Approval::None if self.session.policy().new_device_approval => (
                        NoticeKind::UnapprovedDevice,
                        ", without approval by one of your devices, which your policy requires".into(),
                    ),
                    Approval::None => (NoticeKind::NewDevice, String::new()),
                };
                let notice = SecurityNotice {
                    kind,
                    user: user.clone(),
                    device_id: Some(body.device_id),
                    device_name: Some(body.device_name.to_string()),
                    epoch: version.epoch,
                    at_unix_s: crate::unix_now(),
                    detail: format!(
                        "a new device \"{}\" ({}) was added to your account (logged in epoch {}){approved}; \
                         if it is not yours, tell your IT team",
                        body.device_name, body.device_id, version.epoch
                    ),
                };
                self.add_notice(&notice)?;
                notices.push(notice);
            }
        }
        self.check_verified_contacts().await?;
        Ok(notices)
    }

    /// Devices of this user seen only in the log (not this device, not approved by it):
    /// their ids, for `device list` to mark.
    pub fn devices_seen_only_in_log(&self) -> Result<Vec<DeviceId>, ClientError> {
        let mut ids = Vec::new();
        for notice in self.security_notices()? {
            if matches!(notice.kind, NoticeKind::NewDevice | NoticeKind::UnapprovedDevice)
                && let Some(id) = notice.device_id
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// When the policy names auditors: refuses unless one of them countersigned, within the
    /// policy's lag, a root this device holds (or the server's signed head shows) for that
    /// epoch. Called before adding devices to a conversation.
    pub(super) async fn require_fresh_audit(&mut self) -> Result<(), ClientError> {
        let policy = self.session.policy().clone();
        if policy.kt_auditor_keys.is_empty() {
            return Ok(());
        }
        let head = match self.call_repeatable(Request::KtHead { epoch: None }).await? {
            Response::KtHead(head) => head,
            _ => return Err(ClientError::Protocol("unexpected response to KtHead".into())),
        };
        let now = crate::unix_now();
        let mut newest: Option<i64> = None;
        for document in &head.auditors {
            let Ok(claimed) = postcard::from_bytes::<AuditorStatement>(&document.body) else {
                continue;
            };
            if !policy.kt_auditor_keys.keys().contains(&claimed.auditor_key.0) {
                continue;
            }
            let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&claimed.auditor_key.0) else {
                continue;
            };
            let Ok(statement) = document.verify(&key) else {
                continue;
            };
            if statement.org_id != self.profile.org_id() {
                continue;
            }
            // The countersigned root must be the one this device holds for that epoch.
            let root = match self.read::<[u8; 32]>(&root_key(statement.epoch))? {
                Some(root) => root,
                None => match self
                    .call_repeatable(Request::KtHead {
                        epoch: Some(statement.epoch),
                    })
                    .await?
                {
                    Response::KtHead(answer) => match answer.head {
                        Some(head) => self.accept_head(&head).await?.root_hash.0,
                        None => continue,
                    },
                    _ => continue,
                },
            };
            if root == statement.root_hash.0 {
                newest = newest.max(Some(statement.signed_at_unix_s));
            }
        }
        let limit = i64::from(policy.kt_auditor_max_lag_s);
        match newest {
            Some(signed_at) if now - signed_at <= limit => Ok(()),
            Some(signed_at) => Err(kt_refused(format!(
                "the newest countersignature of the organisation's key-directory auditors is {} s old \
                 (the policy allows {limit} s): no device is added to a conversation until an auditor \
                 checks the directory again",
                now - signed_at
            ))),
            None => Err(kt_refused(
                "none of the auditors the organisation's policy requires has countersigned the key \
                 directory: no device is added to a conversation until one does"
                    .into(),
            )),
        }
    }

    /// The newest head this device verified, as the witness it puts in its messages.
    pub(super) fn witness(&self) -> Result<Option<KtWitness>, ClientError> {
        Ok(self
            .read::<StoredHead>(HEAD_KEY)?
            .and_then(|h| Signed::from_bytes(&h.signed).ok())
            .map(|head| KtWitness { head }))
    }

    /// Checks a member's witness: a head the transparency key signed. When this device
    /// holds (or the server shows it) another root for that epoch, the server signed two
    /// roots for one epoch: a fork, noticed. A witness that is not validly signed proves
    /// nothing and is ignored.
    pub(super) async fn check_witness(
        &mut self,
        sender: &UserName,
        witness: &KtWitness,
    ) -> Result<(), ClientError> {
        let keys = self.kt_keys().await?;
        let Ok(theirs) = redoubt_kt::verify_head(&witness.head, &keys) else {
            return Ok(());
        };
        let known = match self.read::<[u8; 32]>(&root_key(theirs.epoch))? {
            Some(root) => root,
            None => {
                let head = match self
                    .call_repeatable(Request::KtHead {
                        epoch: Some(theirs.epoch),
                    })
                    .await
                {
                    Ok(Response::KtHead(head)) => head.head,
                    _ => None,
                };
                let Some(head) = head else {
                    // The server does not show this device an epoch a member was shown.
                    self.fork_notice(
                        sender,
                        theirs.epoch,
                        format!(
                            "{sender}'s device was shown epoch {} of the key directory, which the server \
                             does not show this device",
                            theirs.epoch
                        ),
                    )?;
                    return Ok(());
                };
                // A different root here is recorded as a fork by `record_root`.
                match self.accept_head(&head).await {
                    Ok(head) => head.root_hash.0,
                    Err(_) => return Ok(()),
                }
            }
        };
        if known != theirs.root_hash.0 {
            self.fork_notice(
                sender,
                theirs.epoch,
                format!(
                    "{sender}'s device holds another signed root for epoch {} of the key directory than \
                     this device: the server is showing different directories to different devices",
                    theirs.epoch
                ),
            )?;
        }
        Ok(())
    }

    fn fork_notice(&self, sender: &UserName, epoch: u64, detail: String) -> Result<(), ClientError> {
        self.add_notice(&SecurityNotice {
            kind: NoticeKind::Fork,
            user: sender.clone(),
            device_id: None,
            device_name: None,
            epoch,
            at_unix_s: crate::unix_now(),
            detail,
        })
    }

    /// The safety number of this user and `peer`, from both users' newest logged device
    /// sets and the epochs they were logged in; `mark` records it (with the commitment it
    /// was computed from) as verified.
    pub async fn safety_number(&mut self, peer: &UserName, mark: bool) -> Result<SafetyNumber, ClientError> {
        let own_user = self.user.clone();
        let own = self.kt_history(&own_user).await?;
        let theirs = self.kt_history(peer).await?;
        let (Some(own), Some(theirs)) = (own.last(), theirs.last()) else {
            return Err(ClientError::Server(ErrorBody::new(
                ErrorCode::NotFound,
                format!("{peer} has no devices in the key directory"),
            )));
        };
        let number = safety_number(
            (&own_user, &own.commitment, own.epoch),
            (peer, &theirs.commitment, theirs.epoch),
        );
        let peer_devices = theirs
            .certificates
            .iter()
            .filter_map(|c| DeviceCertificate::decode(c).ok())
            .map(|c| {
                (
                    c.unverified_body().device_id,
                    c.unverified_body().device_name.to_string(),
                )
            })
            .collect();
        if mark {
            self.put(&verified_key(peer), &(number.clone(), theirs.commitment))?;
        }
        let marked = self
            .read::<(String, [u8; 32])>(&verified_key(peer))?
            .map(|(n, _)| n);
        Ok(SafetyNumber {
            number,
            peer: peer.clone(),
            peer_devices,
            marked,
        })
    }

    /// A notice for each verified contact whose logged devices changed since.
    async fn check_verified_contacts(&mut self) -> Result<(), ClientError> {
        let rows = self.data.get_by_prefix("kt/verified/").map_err(storage_error)?;
        for (key, bytes) in rows {
            let Ok((_, commitment)) = postcard::from_bytes::<(String, [u8; 32])>(&bytes) else {
                continue;
            };
            let Ok(peer) = UserName::parse(key.trim_start_matches("kt/verified/")) else {
                continue;
            };
            let versions = self.kt_history(&peer).await?;
            let Some(newest) = versions.last() else { continue };
            if newest.commitment != commitment {
                self.add_notice(&SecurityNotice {
                    kind: NoticeKind::ContactChanged,
                    user: peer.clone(),
                    device_id: None,
                    device_name: None,
                    epoch: newest.epoch,
                    at_unix_s: crate::unix_now(),
                    detail: format!(
                        "{peer}'s devices changed since you verified the safety number; compare it again \
                         (`redoubt verify {peer}`)"
                    ),
                })?;
                // Noticed once: the new set is what later changes are compared with.
                let number = self
                    .read::<(String, [u8; 32])>(&key)?
                    .map_or_else(String::new, |(n, _)| n);
                self.put(&key, &(number, newest.commitment))?;
            }
        }
        Ok(())
    }
}

/// What the log says of how a device of the user came to be approved.
#[derive(Debug)]
enum Approval {
    /// A valid approval, signed by this device of the user (logged before).
    By { device: DeviceId, name: String },
    /// An approval that names the certificate but does not verify.
    Invalid(String),
    /// No approval (the device needed none, or the server logged it without one).
    None,
}

/// The approval logged with `certificate` (its hash) in `version`: valid when it is signed
/// by the key of a device of the same user logged in an earlier version, and names this
/// user and this certificate. The versions are verified already (org-signed certificates of
/// this user).
fn approval_of(versions: &[LoggedVersion], version: &LoggedVersion, hash: &[u8; 32]) -> Approval {
    let mut found = Approval::None;
    for encoded in &version.approvals {
        let Ok(signed) = Signed::<DeviceApproval>::from_bytes(encoded) else {
            continue;
        };
        let Ok(claimed) = postcard::from_bytes::<DeviceApproval>(&signed.body) else {
            continue;
        };
        if claimed.certificate_hash.0 != *hash {
            continue;
        }
        // The approver: a device logged before this version, by its certificate's key.
        let approver = versions
            .iter()
            .filter(|v| v.epoch < version.epoch)
            .flat_map(|v| &v.certificates)
            .filter_map(|c| DeviceCertificate::decode(c).ok())
            .find(|c| c.unverified_body().device_id == claimed.approver);
        let Some(approver) = approver else {
            found = Approval::Invalid(format!(
                "the approving device {} is not logged before it",
                claimed.approver
            ));
            continue;
        };
        let approver = approver.unverified_body();
        let verified = ed25519_dalek::VerifyingKey::from_bytes(&approver.device_public_key.0)
            .ok()
            .and_then(|key| signed.verify(&key).ok());
        match verified {
            Some(body) if body.user == approver.user && body.org_id == approver.org_id => {
                return Approval::By {
                    device: approver.device_id,
                    name: approver.device_name.to_string(),
                };
            }
            _ => {
                found = Approval::Invalid(format!("not signed by the approving device {}", claimed.approver));
            }
        }
    }
    found
}
