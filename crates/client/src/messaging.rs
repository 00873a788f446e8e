//! End-to-end encrypted messaging on MLS.
//!
//! A [`Messenger`] is an authenticated session plus this device's MLS state and its local
//! message store, both in the profile's encrypted vault (`PROFILE/vault.db`, see `vault.rs`):
//! mls-rs's group states, epochs and key packages, and under the `app` namespace
//! `conv/<group>` (conversations), `msg/<group>/<seq>` (messages), `rcpt/<group>/<seq>`
//! (receipts), `readmark/<group>` and `kp/last-resort`. Values are encrypted; those keys
//! are not. Conversations are MLS groups whose leaves are devices; the server orders each
//! group's messages and cannot read them.
//!
//! Sync: Welcomes from the inbox are joined; then each group's log is read after the
//! device's cursor and processed in order. A device skips its own entries: it applied its
//! commits when the server accepted them, and stored its own messages when it sent them.

use std::collections::{BTreeSet, HashMap};

use ed25519_dalek::VerifyingKey;
use mls_rs::client_builder::{
    BaseConfig, WithCryptoProvider, WithGroupStateStorage, WithIdentityProvider, WithKeyPackageRepo,
    WithMlsRules, WithPskStore,
};
use mls_rs::extension::built_in::ExternalSendersExt;
use mls_rs::group::{CommitEffect, ReceivedMessage};
use mls_rs::mls_rules::DefaultMlsRules;
use mls_rs::{Client, ExtensionList, Group, MlsMessage};
use mls_rs_crypto_rustcrypto::RustCryptoProvider;
use rand_core::{OsRng, RngCore};
use redoubt_mls::mail::{CONNECTOR_USER, MAILBOX_GROUP_NAME, MailCommand};
use redoubt_mls::{AppBody, LoggedCertificates, RedoubtIdentityProvider};
use redoubt_proto::{
    Bytes, DeviceId, ErrorCode, Event, GroupEntry, GroupId, GroupSubmit, Request, Response, UserName,
};
use serde::{Deserialize, Serialize};

mod history;
mod transparency;

pub use transparency::{NoticeKind, SafetyNumber, SecurityNotice};

use crate::mail::MailStore;
use crate::vault::{AppStorage, VaultGroupStateStorage, VaultKeyPackageStorage, VaultPreSharedKeyStorage};
use crate::{ClientError, Profile, Session, unix_now};

pub(crate) mod local_search;

pub(crate) type DeviceMlsConfig = WithMlsRules<
    DefaultMlsRules,
    WithIdentityProvider<
        RedoubtIdentityProvider,
        WithCryptoProvider<
            RustCryptoProvider,
            WithPskStore<
                VaultPreSharedKeyStorage,
                WithKeyPackageRepo<
                    VaultKeyPackageStorage,
                    WithGroupStateStorage<VaultGroupStateStorage, BaseConfig>,
                >,
            >,
        >,
    >,
>;

/// Publish more key packages when fewer than this many remain on the server.
const KEY_PACKAGES_LOW: u32 = 10;
/// How many to publish at a time.
const KEY_PACKAGES_BATCH: usize = 30;
/// Log entries asked for per fetch.
const FETCH_LIMIT: u32 = 200;
/// Attempts at one repeatable request before its error is returned.
const CALL_ATTEMPTS_MAX: u32 = 5;
/// Reconnection attempts (with backoff: about 2 minutes in all) during one request.
const RECONNECT_ATTEMPTS_MAX: u32 = 8;
/// Attempts at a commit or message before giving up on repeated epoch conflicts.
const CONFLICT_RETRIES_MAX: usize = 8;

fn mls_error(context: &str) -> impl Fn(mls_rs::error::MlsError) -> ClientError + '_ {
    move |e| ClientError::Mls(format!("{context}: {e}"))
}

fn storage_error(e: impl std::fmt::Display) -> ClientError {
    ClientError::Profile(format!("local storage: {e}"))
}

/// A conversation as this device knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub group_id: GroupId,
    /// The group's name, or for a direct conversation the other user's name.
    pub name: String,
    /// For a direct (1:1) conversation, the other user.
    pub peer: Option<UserName>,
    /// The last log entry processed.
    pub cursor: u64,
    /// This device was removed from the group.
    pub removed: bool,
}

/// A message in the local store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub seq: u64,
    pub sender_user: UserName,
    pub sender_device: DeviceId,
    pub sent_at_unix_s: i64,
    pub server_time_unix_s: i64,
    /// The text, or for an attachment a one-line description.
    pub text: String,
    /// Set when the message is a file; holds its key, so it never leaves this store.
    pub attachment: Option<redoubt_mls::Attachment>,
    /// Brought over by a history transfer rather than read from the group's log.
    pub history: bool,
    /// A conversation event (a setting changed), not something someone wrote.
    pub event: bool,
}

/// A message as stored before `history` and `event` existed.
#[derive(Deserialize)]
struct StoredMessageV1 {
    seq: u64,
    sender_user: UserName,
    sender_device: DeviceId,
    sent_at_unix_s: i64,
    server_time_unix_s: i64,
    text: String,
    attachment: Option<redoubt_mls::Attachment>,
}

impl StoredMessage {
    /// Decodes a stored message, also in the form written before `history` and `event`.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, ClientError> {
        postcard::from_bytes(bytes)
            .or_else(|_| {
                postcard::from_bytes::<StoredMessageV1>(bytes).map(|m| StoredMessage {
                    seq: m.seq,
                    sender_user: m.sender_user,
                    sender_device: m.sender_device,
                    sent_at_unix_s: m.sent_at_unix_s,
                    server_time_unix_s: m.server_time_unix_s,
                    text: m.text,
                    attachment: m.attachment,
                    history: false,
                    event: false,
                })
            })
            .map_err(storage_error)
    }
}

impl Conversation {
    /// The id people use to name a message: the group id's first 8 hex digits and the
    /// message's sequence number, `1a2b3c4d-7`.
    pub fn message_id(&self, seq: u64) -> String {
        format!("{}-{seq}", &self.group_id.to_string()[..8])
    }
}

impl StoredMessage {
    /// See [`Conversation::message_id`].
    pub fn id(&self, conversation: &Conversation) -> String {
        conversation.message_id(self.seq)
    }
}

/// Who has received and read one message, from their receipts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipts {
    pub delivered: BTreeSet<UserName>,
    pub read: BTreeSet<UserName>,
}

fn read_mark_key(group: &GroupId) -> String {
    format!("readmark/{group}")
}

fn receipt_key(group: &GroupId, seq: u64) -> String {
    format!("rcpt/{group}/{seq:020}")
}

fn describe(attachment: &redoubt_mls::Attachment) -> String {
    format!("[file] {} ({} bytes)", attachment.name, attachment.bytes)
}

/// What a sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub joined: usize,
    pub messages: usize,
    /// Entries that could not be processed (logged; the cursor moves past them).
    pub failures: usize,
    /// Mail pushes applied (devices) or mail commands queued (the connector).
    pub mail: usize,
}

/// A mail command from one of a user's devices, queued for the connector in its vault
/// until it has been carried out and answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMailCommand {
    pub group_id: GroupId,
    pub seq: u64,
    pub sender: UserName,
    pub command: MailCommand,
}

fn mail_command_key(group: &GroupId, seq: u64) -> String {
    format!("mailcmd/{group}/{seq:020}")
}

/// Where a device keeps the id of its mailbox group (the group the connector named so).
const MAILBOX_KEY: &str = "mailbox";

/// A member of a conversation, from the MLS roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDevice {
    pub user: UserName,
    pub device_id: DeviceId,
    pub device_name: String,
    /// SHA-256 of the device certificate.
    pub certificate_fingerprint: [u8; 32],
}

pub struct Messenger {
    /// Kept to reconnect without unlocking the profile again.
    profile: Profile,
    session: Session,
    device_id: DeviceId,
    user: UserName,
    org_key: VerifyingKey,
    identity: RedoubtIdentityProvider,
    /// Certificates proven logged in the key directory: the only ones MLS admits.
    logged: std::sync::Arc<LoggedCertificates>,
    /// The newest epoch the server announced (`KtEpoch`): histories older are refused.
    kt_event_epoch: u64,
    mls: Client<DeviceMlsConfig>,
    data: AppStorage,
    /// Log entries the server pushed in `GroupEntries` events, by group, waiting for the
    /// next sync of that group (which then needs no fetch). In memory only: a restart
    /// simply fetches them.
    pushed: HashMap<GroupId, Vec<GroupEntry>>,
    pushed_bytes: usize,
    /// Whether a sync should look for new devices of this user waiting for history: at
    /// open and reconnection, on `DeviceReady` and policy changes, and while a waiting
    /// device could not be served. Otherwise a sync asks nothing of it.
    history_due: bool,
}

/// Users whose key-directory history is fetched, one per round, before a join or a log
/// entry refused for a member not yet known to be logged is given up.
const KT_RETRIES_MAX: usize = 1024;

/// Bytes of pushed entries kept waiting for a sync; past it they are dropped and fetched.
const PUSHED_BYTES_MAX: usize = 4 * 1024 * 1024;

impl std::fmt::Debug for Messenger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messenger")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// A commit submitted but not yet known to be applied, kept until the outcome is known.
#[derive(Serialize, Deserialize)]
struct PendingCommit {
    client_message_id: Bytes<16>,
    message: Vec<u8>,
    welcome: Option<Vec<u8>>,
}

fn outbox_key(group: &GroupId, id: &Bytes<16>) -> String {
    format!("outbox/{group}/{}", id.to_hex())
}

fn parse_group_id(text: &str) -> Option<GroupId> {
    Bytes::<32>::from_hex(text).map(|b| GroupId::from(b.0))
}

fn conversation_key(group: &GroupId) -> String {
    format!("conv/{group}")
}

fn message_key(group: &GroupId, seq: u64) -> String {
    format!("msg/{group}/{seq:020}")
}

impl Messenger {
    /// Opens the device's MLS state and an authenticated session, and makes sure the server
    /// holds enough of this device's key packages for others to add it to groups.
    pub async fn open(profile: &Profile) -> Result<Self, ClientError> {
        let org_key = VerifyingKey::from_bytes(&profile.org_public_key)
            .map_err(|e| ClientError::Profile(e.to_string()))?;
        let logged = std::sync::Arc::new(LoggedCertificates::default());
        let identity =
            RedoubtIdentityProvider::new(org_key, profile.org_id()).requiring_logged(logged.clone());
        let mls = mls_client(profile, identity.clone());
        let data = profile.vault().app_storage();
        let session = Session::open(profile).await?;
        let mut messenger = Self {
            profile: profile.clone(),
            device_id: profile.device_id(),
            user: profile.user().clone(),
            org_key,
            identity,
            logged,
            kt_event_epoch: 0,
            mls,
            data,
            pushed: HashMap::new(),
            pushed_bytes: 0,
            history_due: true,
            session,
        };
        messenger.load_logged()?;
        // Before anything else: a device added to this account while this one was away is
        // noticed now.
        if let Err(error) = messenger.monitor_own().await {
            tracing::warn!(%error, "key transparency: checking this account's devices failed");
        }
        messenger.recover().await?;
        messenger.top_up_key_packages().await?;
        messenger.apply_retention()?;
        local_search::backfill(&messenger.data)?;
        Ok(messenger)
    }

    /// The profile this messenger was opened with.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Closes the session cleanly.
    pub async fn close(self) {
        self.session.close().await;
    }

    fn key_package(&self, last_resort: bool) -> Result<Vec<u8>, ClientError> {
        let mut extensions = ExtensionList::new();
        if last_resort {
            extensions
                .set_from(mls_rs::extension::recommended::LastResortKeyPackageExt)
                .map_err(|e| ClientError::Mls(e.to_string()))?;
        }
        self.mls
            .generate_key_package_message(extensions, ExtensionList::new(), None)
            .map_err(mls_error("key package"))?
            .to_bytes()
            .map_err(mls_error("key package"))
    }

    async fn publish(
        &mut self,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<u32, ClientError> {
        // Publishing nothing only asks how many remain: safe to repeat. Publishing packages
        // is not (a repeat would add them twice), so it is sent once.
        let query = key_packages.is_empty() && last_resort.is_none();
        let request = Request::KeyPackagesPublish {
            key_packages,
            last_resort,
        };
        let response = if query {
            self.call_repeatable(request).await?
        } else {
            self.session.request(request).await?
        };
        match response {
            Response::KeyPackagesPublished { available } => Ok(available),
            _ => Err(ClientError::Protocol(
                "unexpected response to KeyPackagesPublish".into(),
            )),
        }
    }

    /// Publishes key packages when the server's pool for this device runs low, and a
    /// last-resort package once.
    pub async fn top_up_key_packages(&mut self) -> Result<(), ClientError> {
        let available = self.publish(Vec::new(), None).await?;
        let has_last_resort = self.data.get("kp/last-resort").map_err(storage_error)?.is_some();
        if available >= KEY_PACKAGES_LOW && has_last_resort {
            return Ok(());
        }
        let batch = (0..KEY_PACKAGES_BATCH)
            .map(|_| self.key_package(false))
            .collect::<Result<Vec<_>, _>>()?;
        let last_resort = if has_last_resort {
            None
        } else {
            Some(self.key_package(true)?)
        };
        self.publish(batch, last_resort).await?;
        self.data.insert("kp/last-resort", &[1]).map_err(storage_error)?;
        Ok(())
    }

    fn load_conversation(&self, group: &GroupId) -> Result<Option<Conversation>, ClientError> {
        self.data
            .get(&conversation_key(group))
            .map_err(storage_error)?
            .map(|bytes| postcard::from_bytes(&bytes).map_err(storage_error))
            .transpose()
    }

    fn save_conversation(&self, conversation: &Conversation) -> Result<(), ClientError> {
        let bytes = postcard::to_stdvec(conversation).map_err(storage_error)?;
        self.data
            .insert(&conversation_key(&conversation.group_id), &bytes)
            .map_err(storage_error)?;
        Ok(())
    }

    /// All conversations this device knows, by name (not the groups history travels in).
    pub fn conversations(&self) -> Result<Vec<Conversation>, ClientError> {
        let transfers = self.transfer_groups()?;
        let mut all = self.stored_conversations()?;
        all.retain(|c| !transfers.contains(&c.group_id));
        Ok(all)
    }

    /// Every group this device keeps state for: conversations and transfer groups.
    fn stored_conversations(&self) -> Result<Vec<Conversation>, ClientError> {
        let mut all = self
            .data
            .get_by_prefix("conv/")
            .map_err(storage_error)?
            .iter()
            .map(|(_, value)| postcard::from_bytes::<Conversation>(value).map_err(storage_error))
            .collect::<Result<Vec<_>, _>>()?;
        all.sort_by(|a, b| a.name.cmp(&b.name).then(a.group_id.cmp(&b.group_id)));
        Ok(all)
    }

    /// The conversation called `name` (a group's name, or the other user of a direct one).
    pub fn conversation(&self, name: &str) -> Result<Option<Conversation>, ClientError> {
        Ok(self
            .conversations()?
            .into_iter()
            .find(|c| c.name == name && !c.removed))
    }

    /// Messages of a conversation after `after_seq`, in log order (at most `limit`), or with
    /// `newest_first` the newest `limit` of them, newest first. Reads only those rows.
    pub fn messages_after(
        &self,
        conversation: &Conversation,
        after_seq: u64,
        newest_first: bool,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, ClientError> {
        let group = &conversation.group_id;
        self.data
            .page_by_prefix(
                &format!("msg/{group}/"),
                Some(&message_key(group, after_seq)),
                newest_first,
                limit as usize,
            )
            .map_err(storage_error)?
            .iter()
            .map(|(_, value)| StoredMessage::decode(value))
            .collect()
    }

    /// One message of a conversation.
    pub fn message(
        &self,
        conversation: &Conversation,
        seq: u64,
    ) -> Result<Option<StoredMessage>, ClientError> {
        self.data
            .get(&message_key(&conversation.group_id, seq))
            .map_err(storage_error)?
            .map(|value| StoredMessage::decode(&value))
            .transpose()
    }

    /// Messages of a conversation, in log order.
    pub fn messages(&self, conversation: &Conversation) -> Result<Vec<StoredMessage>, ClientError> {
        self.data
            .get_by_prefix(&format!("msg/{}/", conversation.group_id))
            .map_err(storage_error)?
            .iter()
            .map(|(_, value)| StoredMessage::decode(value))
            .collect()
    }

    /// Keeps a message and indexes it for search, in one vault transaction.
    fn store_message(&self, group: &GroupId, message: &StoredMessage) -> Result<(), ClientError> {
        local_search::store(&self.data, group, message)
    }

    fn load_group(&self, group: &GroupId) -> Result<Group<DeviceMlsConfig>, ClientError> {
        self.mls
            .load_group(group.as_bytes())
            .map_err(mls_error("loading group state"))
    }

    /// The devices in a conversation, from this device's view of the MLS roster.
    pub fn members(&self, conversation: &Conversation) -> Result<Vec<MemberDevice>, ClientError> {
        let group = self.load_group(&conversation.group_id)?;
        let mut members = Vec::new();
        for member in group.roster().members() {
            let certificate = self
                .identity
                .device_certificate(&member.signing_identity)
                .map_err(|e| ClientError::Mls(e.to_string()))?;
            let body = certificate.body();
            let fingerprint = redoubt_proto::DeviceCertificate::decode(certificate.encoded())
                .map(|c| c.fingerprint())
                .unwrap_or_default();
            members.push(MemberDevice {
                user: body.user.clone(),
                device_id: body.device_id,
                device_name: body.device_name.to_string(),
                certificate_fingerprint: fingerprint,
            });
        }
        members.sort_by(|a, b| a.user.cmp(&b.user).then(a.device_id.cmp(&b.device_id)));
        Ok(members)
    }

    /// Sends a request that is safe to repeat (reads, acknowledgements, and submissions,
    /// which carry a client message id). If the connection breaks — the answer may be lost
    /// even though the server acted — it reconnects and sends the very same request again;
    /// busy or rate-limited answers are retried after a pause. Attempts are bounded.
    async fn call_repeatable(&mut self, request: Request) -> Result<Response, ClientError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.session.request(request.clone()).await {
                Err(error) if error.is_transient() && attempt < CALL_ATTEMPTS_MAX => {
                    tracing::info!(%error, attempt, "request not confirmed; repeating it");
                    if matches!(error, ClientError::Connect { .. }) {
                        self.reconnect(RECONNECT_ATTEMPTS_MAX, |_, _| {}).await?;
                    } else {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                }
                result => return result,
            }
        }
    }

    /// Submits to a group's log; a repeat after a lost answer returns the first sequence
    /// number (the server deduplicates by client message id), so a retry never duplicates.
    async fn submit(&mut self, submit: GroupSubmit) -> Result<u64, ClientError> {
        match self.call_repeatable(Request::GroupSubmit(submit)).await? {
            Response::Submitted { seq, .. } => Ok(seq),
            _ => Err(ClientError::Protocol("unexpected response to GroupSubmit".into())),
        }
    }

    /// Claims one key package for every active device of `users` not in `except`.
    async fn claim(
        &mut self,
        users: Vec<UserName>,
        except: Vec<DeviceId>,
    ) -> Result<Vec<(UserName, MlsMessage)>, ClientError> {
        let request = Request::KeyPackagesClaim {
            users,
            except_devices: except,
        };
        let claimed = match self.session.request_paced(request).await? {
            Response::KeyPackages(claimed) => claimed,
            _ => {
                return Err(ClientError::Protocol(
                    "unexpected response to KeyPackagesClaim".into(),
                ));
            }
        };
        claimed
            .into_iter()
            .map(|c| {
                let package =
                    MlsMessage::from_bytes(&c.key_package).map_err(mls_error("claimed key package"))?;
                Ok((c.user, package))
            })
            .collect()
    }

    /// Commits adding the devices behind `packages`, skipping any already in the group (a
    /// racing member may have added them first), then re-sends the conversation's name.
    async fn add_packages(
        &mut self,
        group_id: &GroupId,
        packages: Vec<MlsMessage>,
    ) -> Result<(), ClientError> {
        self.require_fresh_audit().await?;
        // Logged before usable: a device not in its user's logged set is not added.
        let mut accepted = Vec::with_capacity(packages.len());
        let mut current = HashMap::new();
        for package in packages {
            let certificate = package.as_key_package().and_then(|kp| {
                kp.signing_identity()
                    .credential
                    .as_custom()
                    .map(|c| c.data.clone())
            });
            match certificate {
                Some(certificate) if self.is_current(&certificate, &mut current).await? => {
                    accepted.push(package)
                }
                _ => tracing::warn!(%group_id, "refused a device that is not in the key directory"),
            }
        }
        let packages = accepted;
        if packages.is_empty() {
            return Ok(());
        }
        let identity = self.identity.clone();
        self.commit_with(group_id, move |group| {
            let present: BTreeSet<DeviceId> = group
                .roster()
                .members_iter()
                .filter_map(|m| identity.member_device_id(&m.signing_identity).ok())
                .collect();
            let mut builder = group.commit_builder();
            for package in &packages {
                let device = package
                    .as_key_package()
                    .and_then(|kp| identity.device_id(kp.signing_identity()).ok());
                if device.is_some_and(|d| !present.contains(&d)) {
                    builder = builder.add_member(package.clone())?;
                }
            }
            builder.build()
        })
        .await?;
        self.send_meta(group_id).await
    }

    /// Tells the members what this conversation is: new members cannot read earlier
    /// messages, so this follows every commit that adds someone.
    async fn send_meta(&mut self, group_id: &GroupId) -> Result<(), ClientError> {
        if let Some(conversation) = self.load_conversation(group_id)? {
            let meta = AppBody::Meta {
                name: conversation.name.clone(),
                direct: conversation.peer.is_some(),
            };
            self.send_body(group_id, &meta).await?;
            self.send_settings(group_id).await?;
        }
        Ok(())
    }

    /// Creates a conversation with `members` (users): all of their devices and this user's
    /// other devices are added. `direct` makes it a 1:1 conversation named after the peer.
    pub async fn create_conversation(
        &mut self,
        name: &str,
        members: &[UserName],
        direct: bool,
    ) -> Result<Conversation, ClientError> {
        let mut users: BTreeSet<UserName> = members.iter().cloned().collect();
        users.insert(self.user.clone());
        let claimed = self
            .claim(users.into_iter().collect(), vec![self.device_id])
            .await?;
        for member in members {
            if *member != self.user && !claimed.iter().any(|(user, _)| user == member) {
                return Err(ClientError::Server(redoubt_proto::ErrorBody::new(
                    ErrorCode::NotFound,
                    format!(
                        "{member} has no device that can be added (none has published its keys; a device does when it enrolls)"
                    ),
                )));
            }
        }

        let group_id = self.create_group_alone().await?;
        let conversation = Conversation {
            group_id,
            name: name.to_owned(),
            peer: if direct { members.first().cloned() } else { None },
            cursor: 0,
            removed: false,
        };
        self.save_conversation(&conversation)?;
        if claimed.is_empty() {
            let meta = AppBody::Meta {
                name: name.to_owned(),
                direct,
            };
            self.send_body(&group_id, &meta).await?;
        } else {
            self.add_packages(&group_id, claimed.into_iter().map(|(_, p)| p).collect())
                .await?;
        }
        self.load_conversation(&group_id)?
            .ok_or_else(|| ClientError::Profile("conversation vanished".into()))
    }

    /// Makes a new MLS group with this device alone (the organisation as its external
    /// sender, so it can remove revoked devices) and registers it with the server.
    async fn create_group_alone(&mut self) -> Result<GroupId, ClientError> {
        let mut context = ExtensionList::new();
        context
            .set_from(ExternalSendersExt::new(vec![redoubt_mls::org_external_sender(
                &self.org_key,
            )]))
            .map_err(|e| ClientError::Mls(e.to_string()))?;
        let mut group = self
            .mls
            .create_group(context, ExtensionList::new(), None)
            .map_err(mls_error("creating group"))?;
        let group_info = group
            .group_info_message(true)
            .and_then(|info| info.to_bytes())
            .map_err(mls_error("group info"))?;
        let group_id = match self.session.request(Request::GroupCreate { group_info }).await? {
            Response::GroupCreated { group_id } => group_id,
            _ => return Err(ClientError::Protocol("unexpected response to GroupCreate".into())),
        };
        group.write_to_storage().map_err(mls_error("saving group"))?;
        Ok(group_id)
    }

    /// Creates a group conversation that shares `share_history_days` of history with members
    /// added later (see [`Self::set_share_history`]); refused before anything is made when
    /// the organisation's policy caps sharing lower.
    pub async fn create_group_sharing_history(
        &mut self,
        name: &str,
        members: &[UserName],
        share_history_days: u32,
    ) -> Result<Conversation, ClientError> {
        self.check_share_history(share_history_days)?;
        let conversation = self.create_conversation(name, members, false).await?;
        if share_history_days > 0 {
            self.set_share_history(&conversation, share_history_days).await?;
        }
        Ok(conversation)
    }

    /// Adds devices that joined their users after the conversation began: every active
    /// device of every member user belongs in the group. Any member may do it; if two race,
    /// one commit wins and the other finds nothing left to add.
    async fn add_new_devices(&mut self, group_id: &GroupId) -> Result<(), ClientError> {
        let group = self.load_group(group_id)?;
        let mut present = BTreeSet::new();
        let mut users = BTreeSet::new();
        for member in group.roster().members_iter() {
            if let Ok(certificate) = self.identity.member_certificate(&member.signing_identity) {
                present.insert(certificate.unverified_body().device_id);
                users.insert(certificate.unverified_body().user.clone());
            }
        }
        drop(group);
        let users: Vec<UserName> = users.into_iter().collect();
        let devices = match self
            .call_repeatable(Request::UserDevices { users: users.clone() })
            .await?
        {
            Response::UserDevices(devices) => devices,
            _ => return Err(ClientError::Protocol("unexpected response to UserDevices".into())),
        };
        if devices.iter().all(|d| present.contains(&d.device_id)) {
            return Ok(());
        }
        let claimed = self.claim(users, present.into_iter().collect()).await?;
        if !claimed.is_empty() {
            self.add_packages(group_id, claimed.into_iter().map(|(_, p)| p).collect())
                .await?;
        }
        Ok(())
    }

    /// Builds a commit with `build`, submits it, and applies it once the server accepted it.
    /// On an epoch conflict the commit is dropped, the log processed, and the commit rebuilt.
    async fn commit_with<F>(&mut self, group_id: &GroupId, build: F) -> Result<u64, ClientError>
    where
        F: Fn(&mut Group<DeviceMlsConfig>) -> Result<mls_rs::group::CommitOutput, mls_rs::error::MlsError>,
    {
        for _ in 0..CONFLICT_RETRIES_MAX {
            let mut group = self.load_group(group_id)?;
            let output = build(&mut group).map_err(mls_error("building commit"))?;
            let message = output.commit_message.to_bytes().map_err(mls_error("commit"))?;
            let welcome = output
                .welcome_messages
                .first()
                .map(|w| w.to_bytes())
                .transpose()
                .map_err(mls_error("welcome"))?;
            let submit = GroupSubmit {
                group_id: *group_id,
                client_message_id: random_id(),
                message,
                welcome,
            };
            // The pending commit and the exact submission are saved before they leave:
            // after a crash, `recover` learns from the server whether it was taken.
            let pending_key = format!("pending/{group_id}");
            let pending = PendingCommit {
                client_message_id: submit.client_message_id,
                message: submit.message.clone(),
                welcome: submit.welcome.clone(),
            };
            let encoded = postcard::to_stdvec(&pending).map_err(|e| ClientError::Profile(e.to_string()))?;
            self.data.insert(&pending_key, &encoded).map_err(storage_error)?;
            group.write_to_storage().map_err(mls_error("saving group"))?;
            let result = self.submit(submit).await;
            crate::crash_point("commit.after-submit");
            match result {
                Ok(seq) => {
                    group
                        .apply_pending_commit()
                        .map_err(mls_error("applying commit"))?;
                    group.write_to_storage().map_err(mls_error("saving group"))?;
                    self.data.delete(&pending_key).map_err(storage_error)?;
                    // Our own commit needs no processing when we read the log.
                    self.advance_cursor_past_own(group_id, seq)?;
                    return Ok(seq);
                }
                Err(error) if error.code() == Some(ErrorCode::EpochConflict) => {
                    group.clear_pending_commit();
                    group.write_to_storage().map_err(mls_error("saving group"))?;
                    self.data.delete(&pending_key).map_err(storage_error)?;
                    drop(group);
                    self.sync_group(group_id).await?;
                }
                // Unknown outcome (the connection failed for good): the pending commit
                // stays saved for `recover`.
                Err(error) => return Err(error),
            }
        }
        Err(ClientError::Protocol(
            "gave up after repeated epoch conflicts".into(),
        ))
    }

    async fn send_body(&mut self, group_id: &GroupId, body: &AppBody) -> Result<u64, ClientError> {
        self.send_body_with_id(group_id, body, random_id()).await
    }

    /// Encrypts and submits `body` under `client_message_id`: a repeat with the same id
    /// (after a crash, or a connector pushing the same mail again) returns the first submission's sequence number, never a duplicate.
    pub async fn send_body_with_id(
        &mut self,
        group_id: &GroupId,
        body: &AppBody,
        client_message_id: Bytes<16>,
    ) -> Result<u64, ClientError> {
        for _ in 0..CONFLICT_RETRIES_MAX {
            let mut group = self.load_group(group_id)?;
            let witness = self.witness()?.map(|w| w.encode()).unwrap_or_default();
            let message = group
                .encrypt_application_message(&body.encode(), witness)
                .map_err(mls_error("encrypting"))?
                .to_bytes()
                .map_err(mls_error("encrypting"))?;
            group.write_to_storage().map_err(mls_error("saving group"))?;
            let submit = GroupSubmit {
                group_id: *group_id,
                client_message_id,
                message,
                welcome: None,
            };
            match self.submit(submit).await {
                Ok(seq) => return Ok(seq),
                Err(error) if error.code() == Some(ErrorCode::EpochConflict) => {
                    self.sync_group(group_id).await?;
                }
                Err(error) => return Err(error),
            }
        }
        Err(ClientError::Protocol(
            "gave up after repeated epoch conflicts".into(),
        ))
    }

    /// Sends a text message to a conversation (by name), or to a user: a direct
    /// conversation is created on first use.
    pub async fn send_text(&mut self, target: &str, text: &str) -> Result<(Conversation, u64), ClientError> {
        let conversation = self.prepare_send(target).await?;
        let sent_at = unix_now();
        let body = AppBody::Text {
            text: text.to_owned(),
            sent_at_unix_s: sent_at,
        };
        let seq = self.send_recorded(&conversation.group_id, body).await?;
        Ok((conversation, seq))
    }

    /// The conversation called `target`, or a new direct conversation with the user `target`.
    /// The conversation called `target`, or a new direct one with the user of that name.
    pub async fn resolve_or_create(&mut self, target: &str) -> Result<Conversation, ClientError> {
        if let Some(conversation) = self.conversation(target)? {
            return Ok(conversation);
        }
        let peer = UserName::parse(target).map_err(|_| {
            ClientError::Server(redoubt_proto::ErrorBody::new(
                ErrorCode::NotFound,
                format!("no conversation called {target:?}"),
            ))
        })?;
        self.create_conversation(peer.as_str(), std::slice::from_ref(&peer), true)
            .await
    }

    /// Encrypts a file under a fresh key, uploads the ciphertext, and sends the key and
    /// hash to the conversation. `progress(done, total)` reports uploaded bytes.
    pub async fn send_file(
        &mut self,
        target: &str,
        path: &std::path::Path,
        progress: impl FnMut(u64, u64),
    ) -> Result<(Conversation, u64), ClientError> {
        self.check_attachment_policy(None)?;
        let attachment_error =
            |e: std::io::Error| ClientError::Attachment(format!("{}: {e}", path.display()));
        let file = tokio::fs::File::open(path).await.map_err(attachment_error)?;
        let bytes = file.metadata().await.map_err(attachment_error)?.len();
        let name = path
            .file_name()
            .map_or_else(|| "file".to_owned(), |n| n.to_string_lossy().into_owned());
        self.send_stream(target, name, file, bytes, progress).await
    }

    /// Like [`Self::send_file`], for `bytes` bytes read from `reader`, sent as `name`.
    pub async fn send_stream(
        &mut self,
        target: &str,
        name: String,
        reader: impl tokio::io::AsyncRead + Unpin,
        bytes: u64,
        progress: impl FnMut(u64, u64),
    ) -> Result<(Conversation, u64), ClientError> {
        self.check_attachment_policy(Some(bytes))?;
        let conversation = self.prepare_send(target).await?;
        let attachment = self
            .upload(&conversation.group_id, name, reader, bytes, progress)
            .await?;
        let seq = self
            .send_recorded(&conversation.group_id, AppBody::Attachment(attachment))
            .await?;
        Ok((conversation, seq))
    }

    /// Encrypts `bytes` bytes read from `reader` under a fresh key and uploads them as a
    /// blob of the group (see [`crate::attachment::upload`]).
    pub async fn upload(
        &mut self,
        group_id: &GroupId,
        name: String,
        reader: impl tokio::io::AsyncRead + Unpin,
        bytes: u64,
        progress: impl FnMut(u64, u64),
    ) -> Result<redoubt_mls::Attachment, ClientError> {
        crate::attachment::upload(&mut self.session, group_id, name, reader, bytes, progress).await
    }

    /// Finds a message by the id [`StoredMessage::id`] prints.
    pub fn find_message(&self, id: &str) -> Result<Option<(Conversation, StoredMessage)>, ClientError> {
        let Some((prefix, seq)) = id.rsplit_once('-') else {
            return Ok(None);
        };
        let Ok(seq) = seq.parse::<u64>() else {
            return Ok(None);
        };
        for conversation in self.conversations()? {
            if conversation.group_id.to_string().starts_with(prefix)
                && prefix.len() >= 8
                && let Some(message) = self.message(&conversation, seq)?
            {
                return Ok(Some((conversation, message)));
            }
        }
        Ok(None)
    }

    /// Downloads, decrypts and checks an attachment, writing it to `out` only if every
    /// chunk authenticates and the SHA-256 matches. `progress(done, total)` reports bytes.
    pub async fn fetch_attachment(
        &mut self,
        attachment: &redoubt_mls::Attachment,
        out: &std::path::Path,
        progress: impl FnMut(u64, u64),
    ) -> Result<(), ClientError> {
        let partial = out.with_extension("part");
        let io_error = |e: std::io::Error| ClientError::Attachment(format!("{}: {e}", out.display()));
        let mut file = tokio::fs::File::create(&partial).await.map_err(io_error)?;
        let mut result = self.download(attachment, &mut file, progress).await;
        if result.is_ok() {
            result = file.sync_all().await.map_err(io_error);
        }
        match result {
            Ok(()) => tokio::fs::rename(&partial, out).await.map_err(io_error),
            Err(error) => {
                let _ = tokio::fs::remove_file(&partial).await;
                Err(error)
            }
        }
    }

    /// Downloads, decrypts and checks an attachment into `out` (see
    /// [`crate::attachment::download`]).
    pub async fn download(
        &mut self,
        attachment: &redoubt_mls::Attachment,
        out: impl tokio::io::AsyncWrite + Unpin,
        progress: impl FnMut(u64, u64),
    ) -> Result<(), ClientError> {
        crate::attachment::download(&mut self.session, attachment, out, progress).await
    }

    /// Joins the groups whose Welcomes wait in the inbox; returns their ids.
    async fn join_from_inbox(&mut self, report: &mut SyncReport) -> Result<Vec<GroupId>, ClientError> {
        let mut joined_groups = Vec::new();
        let items = match self.call_repeatable(Request::InboxFetch).await? {
            Response::Inbox(items) => items,
            _ => return Err(ClientError::Protocol("unexpected response to InboxFetch".into())),
        };
        let mut handled = Vec::new();
        for item in items {
            handled.push(item.id);
            if self
                .load_conversation(&item.group_id)?
                .is_some_and(|c| !c.removed)
            {
                continue;
            }
            // Every member must be logged. mls-rs stops at the first member refused, so the
            // join admits unknown members while collecting them; their users' histories are
            // then fetched in one pass and every one checked before the group is kept.
            self.logged.take_misses();
            self.logged.start_collecting();
            let welcome = MlsMessage::from_bytes(&item.welcome)
                .and_then(|welcome| self.mls.join_group(None, &welcome, None));
            self.logged.stop_collecting();
            let joined = match welcome {
                Ok((mut group, _)) => match self.check_members_logged().await? {
                    Ok(()) => group.write_to_storage().map_err(|e| e.to_string()),
                    Err(refused) => Err(refused),
                },
                Err(error) => Err(error.to_string()),
            };
            match joined {
                Ok(_) => {
                    joined_groups.push(item.group_id);
                    if item.transfer {
                        self.mark_transfer_group(&item.group_id)?;
                    } else {
                        report.joined += 1;
                    }
                    self.save_conversation(&Conversation {
                        group_id: item.group_id,
                        name: history::placeholder_name(&item.group_id),
                        peer: None,
                        cursor: item.joined_seq,
                        removed: false,
                    })?;
                }
                Err(error) => {
                    report.failures += 1;
                    tracing::warn!(group_id = %item.group_id, %error, "could not join group from Welcome");
                }
            }
        }
        if !handled.is_empty() {
            self.call_repeatable(Request::InboxAck { ids: handled }).await?;
        }
        Ok(joined_groups)
    }

    /// Brings a send up to date cheaply: joins new groups (reading them, so their names are
    /// known), then processes only the target conversation's log.
    async fn prepare_send(&mut self, target: &str) -> Result<Conversation, ClientError> {
        let mut report = SyncReport::default();
        for group in self.join_from_inbox(&mut report).await? {
            self.sync_group(&group).await?;
        }
        let conversation = self.resolve_or_create(target).await?;
        self.sync_group(&conversation.group_id).await?;
        Ok(conversation)
    }

    /// Sends a message through the outbox: it is recorded (with its client message id)
    /// before it is encrypted and submitted, and kept locally once the server accepted it.
    /// After a crash anywhere in between, [`Self::recover`] sends it again under the same
    /// id, so it is delivered once and kept once.
    async fn send_recorded(&mut self, group_id: &GroupId, body: AppBody) -> Result<u64, ClientError> {
        let id = random_id();
        let key = outbox_key(group_id, &id);
        self.data.insert(&key, &body.encode()).map_err(storage_error)?;
        let seq = self.send_body_with_id(group_id, &body, id).await?;
        crate::crash_point("send.after-submit");
        self.store_sent(group_id, seq, body)?;
        self.data.delete(&key).map_err(storage_error)?;
        Ok(seq)
    }

    /// Keeps a message this device sent, as accepted at `seq`.
    fn store_sent(&self, group_id: &GroupId, seq: u64, body: AppBody) -> Result<(), ClientError> {
        match body {
            AppBody::Text { text, sent_at_unix_s } => {
                self.store_own_message(group_id, seq, sent_at_unix_s, text, None)
            }
            AppBody::Attachment(attachment) => {
                let text = describe(&attachment);
                self.store_own_message(group_id, seq, attachment.sent_at_unix_s, text, Some(attachment))
            }
            _ => Ok(()),
        }
    }

    /// Finishes what a crash interrupted: commits submitted but not applied (applied if the
    /// server has them, dropped if not) and messages in the outbox (submitted again under
    /// their own client message ids). Runs before anything reads a log.
    pub async fn recover(&mut self) -> Result<(), ClientError> {
        for (key, value) in self.data.get_by_prefix("pending/").map_err(storage_error)? {
            let Some(group_id) = key.strip_prefix("pending/").and_then(parse_group_id) else {
                continue;
            };
            let pending: PendingCommit =
                postcard::from_bytes(&value).map_err(|e| ClientError::Profile(e.to_string()))?;
            let mut group = self.load_group(&group_id)?;
            let submit = GroupSubmit {
                group_id,
                client_message_id: pending.client_message_id,
                message: pending.message,
                welcome: pending.welcome,
            };
            match self.submit(submit).await {
                Ok(seq) if group.has_pending_commit() => {
                    group
                        .apply_pending_commit()
                        .map_err(mls_error("applying commit"))?;
                    group.write_to_storage().map_err(mls_error("saving group"))?;
                    drop(group);
                    self.advance_cursor_past_own(&group_id, seq)?;
                    self.data.delete(&key).map_err(storage_error)?;
                    // What followed the commit did not happen either: members it added
                    // still need the conversation's name.
                    self.send_meta(&group_id).await?;
                    tracing::info!(group_id = %group_id, seq, "applied a commit interrupted by a crash");
                    continue;
                }
                Ok(_) => {}
                Err(error) if error.code() == Some(ErrorCode::EpochConflict) => {
                    group.clear_pending_commit();
                    group.write_to_storage().map_err(mls_error("saving group"))?;
                    tracing::info!(group_id = %group_id, "dropped a commit the server never took");
                }
                Err(error) => return Err(error),
            }
            self.data.delete(&key).map_err(storage_error)?;
        }
        for (key, value) in self.data.get_by_prefix("outbox/").map_err(storage_error)? {
            let mut parts = key.trim_start_matches("outbox/").split('/');
            let (Some(group_id), Some(id)) = (parts.next().and_then(parse_group_id), parts.next()) else {
                continue;
            };
            let Some(id) = Bytes::<16>::from_hex(id) else {
                continue;
            };
            let body = AppBody::decode(&value).map_err(|e| ClientError::Profile(e.to_string()))?;
            let seq = self.send_body_with_id(&group_id, &body, id).await?;
            self.store_sent(&group_id, seq, body)?;
            self.data.delete(&key).map_err(storage_error)?;
            tracing::info!(group_id = %group_id, seq, "sent a message interrupted by a crash");
        }
        // History received before a crash and not yet stored.
        self.import_history().await
    }

    /// Whether `message` is the commit this device saved before submitting it.
    fn is_pending_commit(&self, group_id: &GroupId, message: &[u8]) -> Result<bool, ClientError> {
        let Some(value) = self
            .data
            .get(&format!("pending/{group_id}"))
            .map_err(storage_error)?
        else {
            return Ok(false);
        };
        let pending: PendingCommit =
            postcard::from_bytes(&value).map_err(|e| ClientError::Profile(e.to_string()))?;
        Ok(pending.message == message)
    }

    /// Moves the cursor over this device's own entry at `seq` when it is the next one.
    fn advance_cursor_past_own(&self, group_id: &GroupId, seq: u64) -> Result<(), ClientError> {
        if let Some(mut conversation) = self.load_conversation(group_id)?
            && conversation.cursor + 1 == seq
        {
            conversation.cursor = seq;
            self.save_conversation(&conversation)?;
        }
        Ok(())
    }

    /// Keeps this device's own message in its local store.
    fn store_own_message(
        &self,
        group: &GroupId,
        seq: u64,
        sent_at_unix_s: i64,
        text: String,
        attachment: Option<redoubt_mls::Attachment>,
    ) -> Result<(), ClientError> {
        let message = StoredMessage {
            seq,
            sender_user: self.user.clone(),
            sender_device: self.device_id,
            sent_at_unix_s,
            server_time_unix_s: sent_at_unix_s,
            text,
            attachment,
            history: false,
            event: false,
        };
        self.store_message(group, &message)
    }

    /// Joins groups from the inbox, then processes every group's new log entries.
    pub async fn sync(&mut self) -> Result<SyncReport, ClientError> {
        let mut report = SyncReport::default();
        self.join_from_inbox(&mut report).await?;
        for conversation in self.stored_conversations()? {
            if !conversation.removed {
                let group_report = self.sync_group(&conversation.group_id).await?;
                report.messages += group_report.messages;
                report.failures += group_report.failures;
                report.mail += group_report.mail;
                if !self
                    .load_conversation(&conversation.group_id)?
                    .is_some_and(|c| c.removed)
                    && !self.is_transfer_group(&conversation.group_id)?
                {
                    self.add_new_devices(&conversation.group_id).await?;
                }
            }
        }
        self.import_history().await?;
        // After the new devices were added above: their history.
        if let Err(error) = self.send_history_to_new_devices().await {
            tracing::warn!(%error, "history for new devices not sent this time");
        }
        self.top_up_key_packages().await?;
        self.apply_retention()?;
        Ok(report)
    }

    /// A conversation by its group id (its `cursor` is the last log entry processed).
    pub fn conversation_by_id(&self, group_id: &GroupId) -> Result<Option<Conversation>, ClientError> {
        self.load_conversation(group_id)
    }

    /// Processes one conversation's log after the cursor (cheaper than [`Self::sync`] when
    /// an event names the group).
    pub async fn sync_one(&mut self, group_id: &GroupId) -> Result<SyncReport, ClientError> {
        self.sync_group(group_id).await
    }

    /// Processes one group's log after the cursor.
    async fn sync_group(&mut self, group_id: &GroupId) -> Result<SyncReport, ClientError> {
        let mut report = SyncReport::default();
        let Some(mut conversation) = self.load_conversation(group_id)? else {
            return Ok(report);
        };
        let start_cursor = conversation.cursor;
        let mut offers = 0;
        let mut pushed = self.take_pushed(group_id, conversation.cursor);
        loop {
            let (entries, last_seq) = match pushed.take() {
                // The newest entries, pushed with an event and following our cursor.
                Some(entries) => {
                    let last_seq = entries.last().map_or(conversation.cursor, |e| e.seq);
                    (entries, last_seq)
                }
                None => {
                    let request = Request::GroupFetch {
                        group_id: *group_id,
                        after_seq: conversation.cursor,
                        limit: FETCH_LIMIT,
                    };
                    match self.call_repeatable(request).await? {
                        Response::GroupEntries { entries, last_seq } => (entries, last_seq),
                        _ => return Err(ClientError::Protocol("unexpected response to GroupFetch".into())),
                    }
                }
            };
            if entries.is_empty() {
                break;
            }
            if entries[0].seq > conversation.cursor + 1 {
                // The server deleted entries this device never read (it was away longer
                // than the retention limit): those messages are gone.
                report.failures += 1;
                tracing::warn!(group_id = %group_id, from = conversation.cursor + 1, to = entries[0].seq - 1,
                    "log entries expired before this device read them");
            }
            let mut group = self.load_group(group_id)?;
            let mut commit_needed = false;
            // Only entries from others change the group state (our own were applied when
            // accepted): a batch of nothing but our own needs no write.
            let mut changed = false;
            let mut delivered = Vec::new();
            // The batch's messages, stored (and indexed) together in one vault transaction
            // before the group state and the cursor move past them.
            let mut received = Vec::new();
            for entry in entries {
                conversation.cursor = entry.seq;
                if entry.sender == self.device_id {
                    // Our own commit whose answer never reached us: apply it now.
                    if group.has_pending_commit() && self.is_pending_commit(group_id, &entry.message)? {
                        changed = true;
                        group
                            .apply_pending_commit()
                            .map_err(mls_error("applying commit"))?;
                        self.data
                            .delete(&format!("pending/{group_id}"))
                            .map_err(storage_error)?;
                    }
                    continue;
                }
                changed = true;
                let mut processed = MlsMessage::from_bytes(&entry.message)
                    .and_then(|message| group.process_incoming_message(message));
                let mut learned = BTreeSet::new();
                for _ in 0..KT_RETRIES_MAX {
                    if processed.is_ok() || !self.learn_missed(&mut learned).await? {
                        break;
                    }
                    processed = MlsMessage::from_bytes(&entry.message)
                        .and_then(|message| group.process_incoming_message(message));
                }
                match processed {
                    Ok(ReceivedMessage::ApplicationMessage(app)) => {
                        let sender = group
                            .member_at_index(app.sender_index)
                            .and_then(|m| self.identity.device_certificate(&m.signing_identity).ok());
                        let Some(sender) = sender else {
                            report.failures += 1;
                            continue;
                        };
                        if let Some(witness) = redoubt_proto::KtWitness::decode(&app.authenticated_data)
                            && let Err(error) = self.check_witness(&sender.body().user, &witness).await
                        {
                            tracing::warn!(%error, "key transparency: checking a member's witness failed");
                        }
                        match AppBody::decode(app.data()) {
                            Ok(body @ (AppBody::Text { .. } | AppBody::Attachment(_))) => {
                                report.messages += 1;
                                if sender.body().user != self.user {
                                    delivered.push(entry.seq);
                                }
                                let (text, sent_at_unix_s, attachment) = match body {
                                    AppBody::Attachment(a) => (describe(&a), a.sent_at_unix_s, Some(a)),
                                    AppBody::Text { text, sent_at_unix_s } => (text, sent_at_unix_s, None),
                                    _ => continue,
                                };
                                received.push(StoredMessage {
                                    seq: entry.seq,
                                    sender_user: sender.body().user.clone(),
                                    sender_device: sender.body().device_id,
                                    sent_at_unix_s,
                                    server_time_unix_s: entry.server_time_unix_s,
                                    text,
                                    attachment,
                                    history: false,
                                    event: false,
                                });
                            }
                            Ok(AppBody::Receipt { kind, seqs }) => {
                                self.record_receipt(group_id, &sender.body().user, kind, &seqs)?;
                            }
                            Ok(AppBody::Mail(push)) => {
                                // Mail is believed only from the organisation's connector.
                                if sender.body().user.as_str() == CONNECTOR_USER
                                    && self.user != sender.body().user
                                {
                                    self.mail()
                                        .apply(&push, entry.server_time_unix_s)
                                        .map_err(storage_error)?;
                                    self.data
                                        .insert(MAILBOX_KEY, group_id.as_bytes())
                                        .map_err(storage_error)?;
                                    report.mail += 1;
                                } else {
                                    report.failures += 1;
                                }
                            }
                            Ok(AppBody::MailCommand(command)) => {
                                // Only the connector acts on commands; it checks the sender
                                // owns the mailbox when it carries them out.
                                if self.user.as_str() == CONNECTOR_USER {
                                    let queued = QueuedMailCommand {
                                        group_id: *group_id,
                                        seq: entry.seq,
                                        sender: sender.body().user.clone(),
                                        command,
                                    };
                                    let bytes = postcard::to_stdvec(&queued).map_err(storage_error)?;
                                    self.data
                                        .insert(&mail_command_key(group_id, entry.seq), &bytes)
                                        .map_err(storage_error)?;
                                    report.mail += 1;
                                }
                            }
                            Ok(AppBody::History(offer)) => {
                                // A user's own history, or a conversation's shared one; which
                                // conversations it may fill is checked when it is stored.
                                if self.receive_offer(group_id, &sender, offer)? {
                                    offers += 1;
                                } else {
                                    report.failures += 1;
                                }
                            }
                            Ok(AppBody::Settings { settings, changed }) => {
                                self.apply_settings(
                                    group_id,
                                    entry.seq,
                                    &sender,
                                    entry.server_time_unix_s,
                                    settings,
                                    changed,
                                )?;
                            }
                            Ok(AppBody::Meta { name, direct }) => {
                                if sender.body().user.as_str() == CONNECTOR_USER && name == MAILBOX_GROUP_NAME
                                {
                                    self.data
                                        .insert(MAILBOX_KEY, group_id.as_bytes())
                                        .map_err(storage_error)?;
                                }
                                if direct {
                                    // The other user: the sender, unless it is another of
                                    // this user's devices, which names the peer.
                                    let peer = if sender.body().user == self.user {
                                        UserName::parse(&name).ok()
                                    } else {
                                        Some(sender.body().user.clone())
                                    };
                                    if let Some(peer) = peer {
                                        conversation.name = peer.to_string();
                                        conversation.peer = Some(peer);
                                    }
                                } else {
                                    conversation.name = name;
                                }
                            }
                            Ok(_) | Err(_) => report.failures += 1,
                        }
                    }
                    Ok(ReceivedMessage::Commit(commit)) => {
                        // A commit settles the epoch's proposals: included or dropped.
                        commit_needed = false;
                        if matches!(commit.effect, CommitEffect::Removed { .. }) {
                            conversation.removed = true;
                        }
                    }
                    Ok(ReceivedMessage::Proposal(_)) => commit_needed = true,
                    Ok(_) => {}
                    Err(error) => {
                        report.failures += 1;
                        tracing::warn!(group_id = %group_id, seq = entry.seq, %error, "could not process log entry");
                    }
                }
                if conversation.removed {
                    break;
                }
            }
            local_search::store_all(&self.data, group_id, &received)?;
            if changed {
                group.write_to_storage().map_err(mls_error("saving group"))?;
            }
            drop(group);
            self.save_conversation(&conversation)?;
            if !delivered.is_empty() && !conversation.removed {
                let body = AppBody::Receipt {
                    kind: redoubt_mls::ReceiptKind::Delivered,
                    seqs: delivered,
                };
                Box::pin(self.send_body(group_id, &body)).await?;
            }
            if commit_needed && !conversation.removed {
                // A proposal (such as the organisation removing a revoked device) waits for
                // a member to commit it; any member may.
                let _ = Box::pin(self.commit_with(group_id, |group| group.commit(Vec::new()))).await?;
                conversation = self.load_conversation(group_id)?.unwrap_or(conversation);
            }
            if conversation.removed || conversation.cursor >= last_seq {
                break;
            }
        }
        // Let the server delete what every member has read.
        let cursor = self
            .load_conversation(group_id)?
            .map_or(start_cursor, |c| c.cursor);
        if cursor > start_cursor {
            self.call_repeatable(Request::GroupAck {
                group_id: *group_id,
                seq: cursor,
            })
            .await?;
        }
        if offers > 0 {
            Box::pin(self.import_history()).await?;
        }
        Ok(report)
    }

    /// Adds every device of `users` to the conversation.
    pub async fn add_users(
        &mut self,
        conversation: &Conversation,
        users: &[UserName],
    ) -> Result<(), ClientError> {
        self.sync_group(&conversation.group_id).await?;
        let present: Vec<DeviceId> = self
            .members(conversation)?
            .into_iter()
            .map(|m| m.device_id)
            .collect();
        let claimed = self.claim(users.to_vec(), present).await?;
        if claimed.is_empty() {
            return Err(ClientError::Server(redoubt_proto::ErrorBody::new(
                ErrorCode::NotFound,
                "no device of those users can be added (already members, or none has connected yet)",
            )));
        }
        let added: Vec<(UserName, DeviceId)> = claimed
            .iter()
            .filter_map(|(user, package)| {
                let device = package
                    .as_key_package()
                    .and_then(|kp| self.identity.device_id(kp.signing_identity()).ok())?;
                Some((user.clone(), device))
            })
            .collect();
        self.add_packages(
            &conversation.group_id,
            claimed.into_iter().map(|(_, p)| p).collect(),
        )
        .await?;
        self.share_history_with(conversation, &added).await
    }

    /// Removes every device of `user` from the conversation.
    pub async fn remove_user(
        &mut self,
        conversation: &Conversation,
        user: &UserName,
    ) -> Result<u64, ClientError> {
        self.sync_group(&conversation.group_id).await?;
        let identity = self.identity.clone();
        let user = user.clone();
        self.commit_with(&conversation.group_id, move |group| {
            let leaves: Vec<u32> = group
                .roster()
                .members_iter()
                .filter(|m| {
                    identity
                        .member_certificate(&m.signing_identity)
                        .is_ok_and(|c| c.unverified_body().user == user)
                })
                .map(|m| m.index)
                .collect();
            let mut builder = group.commit_builder();
            for leaf in leaves {
                builder = builder.remove_member(leaf)?;
            }
            builder.build()
        })
        .await
    }

    /// Commits a fresh key for this device (post-compromise security: whatever leaked of
    /// earlier epochs' secrets says nothing of the next).
    pub async fn update_keys(&mut self, conversation: &Conversation) -> Result<u64, ClientError> {
        self.commit_with(&conversation.group_id, |group| group.commit(Vec::new()))
            .await
    }

    /// The MLS epoch this device is at in a conversation.
    pub fn epoch(&self, conversation: &Conversation) -> Result<u64, ClientError> {
        Ok(self.load_group(&conversation.group_id)?.current_epoch())
    }

    /// Deletes the stored messages (with their receipts and any attachment keys they hold)
    /// sent before `unix_s`, for the message-retention policy; returns how many.
    ///
    /// A message's time is the earlier of the sender's claim and the server's: a sender's
    /// clock set in the future must not keep a message past the retention limit.
    pub fn delete_messages_before(&mut self, unix_s: i64) -> Result<u64, ClientError> {
        delete_messages_before(&self.data, unix_s)
    }

    /// Receipts recorded for a message.
    pub fn receipts(&self, conversation: &Conversation, seq: u64) -> Result<Receipts, ClientError> {
        Ok(self
            .data
            .get(&receipt_key(&conversation.group_id, seq))
            .map_err(storage_error)?
            .map(|bytes| postcard::from_bytes(&bytes).map_err(storage_error))
            .transpose()?
            .unwrap_or_default())
    }

    /// The receipts of a conversation's messages after `after_seq`, by sequence number (one
    /// range read instead of a lookup per message).
    pub fn receipts_after(
        &self,
        conversation: &Conversation,
        after_seq: u64,
    ) -> Result<HashMap<u64, Receipts>, ClientError> {
        let group = &conversation.group_id;
        self.data
            .page_by_prefix(
                &format!("rcpt/{group}/"),
                Some(&receipt_key(group, after_seq)),
                false,
                usize::MAX,
            )
            .map_err(storage_error)?
            .iter()
            .map(|(key, value)| {
                let seq = key
                    .rsplit('/')
                    .next()
                    .and_then(|seq| seq.parse::<u64>().ok())
                    .ok_or_else(|| storage_error(format!("receipt key {key}")))?;
                Ok((seq, postcard::from_bytes(value).map_err(storage_error)?))
            })
            .collect()
    }

    fn record_receipt(
        &self,
        group: &GroupId,
        user: &UserName,
        kind: redoubt_mls::ReceiptKind,
        seqs: &[u64],
    ) -> Result<(), ClientError> {
        for seq in seqs.iter().take(1000) {
            let key = receipt_key(group, *seq);
            let mut receipts: Receipts = self
                .data
                .get(&key)
                .map_err(storage_error)?
                .map(|bytes| postcard::from_bytes(&bytes).map_err(storage_error))
                .transpose()?
                .unwrap_or_default();
            // Read implies delivered.
            receipts.delivered.insert(user.clone());
            if kind == redoubt_mls::ReceiptKind::Read {
                receipts.read.insert(user.clone());
            }
            let bytes = postcard::to_stdvec(&receipts).map_err(storage_error)?;
            self.data.insert(&key, &bytes).map_err(storage_error)?;
        }
        Ok(())
    }

    /// The last message this user read in `conversation` (0: none).
    fn read_mark(&self, conversation: &Conversation) -> Result<u64, ClientError> {
        Ok(self
            .data
            .get(&read_mark_key(&conversation.group_id))
            .map_err(storage_error)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// Other users' messages after this user's read mark in `conversation`.
    pub fn unread(&self, conversation: &Conversation) -> Result<usize, ClientError> {
        let marked = self.read_mark(conversation)?;
        Ok(self
            .messages_after(conversation, marked, false, u32::MAX)?
            .iter()
            .filter(|m| !m.event && m.sender_user != self.user)
            .count())
    }

    /// Sends read receipts for other users' messages up to `seq` not yet marked read.
    pub async fn mark_read(
        &mut self,
        conversation: &Conversation,
        up_to_seq: u64,
    ) -> Result<(), ClientError> {
        let mark_key = read_mark_key(&conversation.group_id);
        let marked = self.read_mark(conversation)?;
        if up_to_seq <= marked || conversation.removed {
            return Ok(());
        }
        let seqs: Vec<u64> = self
            .messages_after(conversation, marked, false, u32::MAX)?
            .into_iter()
            .filter(|m| m.seq <= up_to_seq && m.sender_user != self.user)
            .map(|m| m.seq)
            .collect();
        if !seqs.is_empty() {
            let body = AppBody::Receipt {
                kind: redoubt_mls::ReceiptKind::Read,
                seqs,
            };
            self.send_body(&conversation.group_id, &body).await?;
        }
        self.data
            .insert(&mark_key, &up_to_seq.to_be_bytes())
            .map_err(storage_error)?;
        Ok(())
    }

    /// Re-establishes the session after the connection broke, retrying with exponential
    /// backoff (0.5 s doubling to 30 s) while the failure is transient. Errors that
    /// retrying cannot fix (a certificate mismatch, a revoked device) are returned at once.
    /// `attempts_max` bounds the tries; `on_retry` hears about each wait.
    pub async fn reconnect(
        &mut self,
        attempts_max: u32,
        mut on_retry: impl FnMut(u32, std::time::Duration),
    ) -> Result<(), ClientError> {
        let mut delay = std::time::Duration::from_millis(500);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Session::open(&self.profile).await {
                Ok(session) => {
                    self.session = session;
                    self.history_due = true;
                    return Ok(());
                }
                Err(error) if attempt < attempts_max && error.is_transient() => {
                    on_retry(attempt, delay);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(30));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// This device's mail: what the connector pushed, kept in the vault.
    pub fn mail(&self) -> MailStore {
        MailStore::new(self.profile.vault().clone())
    }

    /// The user's mailbox group, once the connector has set it up and said so.
    pub fn mailbox(&self) -> Result<Option<Conversation>, ClientError> {
        let Some(bytes) = self.data.get(MAILBOX_KEY).map_err(storage_error)? else {
            return Ok(None);
        };
        let id = <[u8; 32]>::try_from(bytes.as_slice()).map_err(storage_error)?;
        self.load_conversation(&GroupId::from(id))
    }

    /// Sends a mail command to the connector; returns its id (see [`Self::mail_outcome`]).
    pub async fn send_mail_command(
        &mut self,
        command: impl FnOnce(Bytes<16>) -> MailCommand,
    ) -> Result<Bytes<16>, ClientError> {
        let mailbox = match self.mailbox()? {
            Some(mailbox) => mailbox,
            None => {
                self.sync().await?;
                self.mailbox()?.ok_or_else(|| {
                    ClientError::Mail(
                        "no mailbox yet: the organisation's mail connector has not set one up for this user"
                            .into(),
                    )
                })?
            }
        };
        let id = random_id();
        self.send_body_with_id(&mailbox.group_id, &AppBody::MailCommand(command(id)), random_id())
            .await?;
        Ok(id)
    }

    /// Waits (reading the mailbox as the connector answers) until the command `id` has an
    /// outcome, for at most `timeout`.
    pub async fn mail_outcome(
        &mut self,
        id: Bytes<16>,
        timeout: std::time::Duration,
    ) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(mailbox) = self.mailbox()? {
                self.sync_group(&mailbox.group_id).await?;
            }
            match self.mail().outcome(&id).map_err(storage_error)? {
                Some(None) => return Ok(()),
                Some(Some(error)) => return Err(ClientError::Mail(error)),
                None => {}
            }
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            if wait.is_zero() {
                return Err(ClientError::Mail(
                    "the mail connector has not answered yet; the command stays queued and is carried out when it can"
                        .into(),
                ));
            }
            let _ =
                tokio::time::timeout(wait.min(std::time::Duration::from_secs(1)), self.next_event()).await;
        }
    }

    /// The mail commands devices sent that the connector has not finished, oldest first.
    pub fn mail_commands(&self) -> Result<Vec<QueuedMailCommand>, ClientError> {
        self.data
            .get_by_prefix("mailcmd/")
            .map_err(storage_error)?
            .into_iter()
            .map(|(_, value)| postcard::from_bytes(&value).map_err(storage_error))
            .collect()
    }

    /// Forgets a mail command the connector has carried out and answered.
    pub fn finish_mail_command(&self, command: &QueuedMailCommand) -> Result<(), ClientError> {
        self.data
            .delete(&mail_command_key(&command.group_id, command.seq))
            .map_err(storage_error)?;
        Ok(())
    }

    /// Waits for the server's next messaging event (new entries, a new Welcome). Policy
    /// changes and remote commands are handled here; a wipe or lock ends in an error.
    /// Entries pushed with the event are kept for the next sync of their group.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            match self.session.next_event().await? {
                event @ (Event::PolicyChanged { .. } | Event::Command(_)) => {
                    self.history_due = true;
                    self.session.handle_event(event).await?;
                    self.apply_retention()?;
                }
                event @ Event::DeviceReady { .. } => {
                    self.history_due = true;
                    return Ok(event);
                }
                event @ Event::KtEpoch { epoch } => {
                    self.kt_event_epoch = self.kt_event_epoch.max(epoch);
                    if let Err(error) = self.monitor_own().await {
                        tracing::warn!(%error, "key transparency: checking this account's devices failed");
                    }
                    return Ok(event);
                }
                Event::GroupEntries { group_id, entries } => {
                    let seq = entries.last().map_or(0, |e| e.seq);
                    self.keep_pushed(group_id, entries);
                    return Ok(Event::GroupAppended { group_id, seq });
                }
                event => return Ok(event),
            }
        }
    }

    fn keep_pushed(&mut self, group_id: GroupId, entries: Vec<GroupEntry>) {
        let bytes: usize = entries.iter().map(|e| e.message.len()).sum();
        if self.pushed_bytes + bytes > PUSHED_BYTES_MAX {
            // Nobody is syncing: drop what waits; the next sync fetches it.
            self.pushed.clear();
            self.pushed_bytes = 0;
        }
        self.pushed_bytes += bytes;
        self.pushed.entry(group_id).or_default().extend(entries);
    }

    /// The pushed entries of `group_id` after `cursor`, when they follow it without a gap.
    fn take_pushed(&mut self, group_id: &GroupId, cursor: u64) -> Option<Vec<GroupEntry>> {
        let mut entries = self.pushed.remove(group_id)?;
        self.pushed_bytes -= entries.iter().map(|e| e.message.len()).sum::<usize>();
        entries.sort_unstable_by_key(|e| e.seq);
        entries.dedup_by_key(|e| e.seq);
        entries.retain(|e| e.seq > cursor);
        let follows = entries.first().is_some_and(|e| e.seq == cursor + 1)
            && entries.windows(2).all(|w| w[1].seq == w[0].seq + 1);
        follows.then_some(entries)
    }

    /// Deletes messages older than the policy's retention period, if it sets one.
    fn apply_retention(&mut self) -> Result<u64, ClientError> {
        let days = self.session.policy().message_retention_days;
        if days == 0 {
            return Ok(0);
        }
        self.delete_messages_before(unix_now() - i64::from(days) * 86_400)
    }

    /// Refuses attachments the organisation's policy does not allow (the server checks too).
    fn check_attachment_policy(&self, bytes: Option<u64>) -> Result<(), ClientError> {
        crate::attachment::check_policy(&self.session, bytes)
    }

    /// This device's messages (text and attachment names) holding every word of `query`
    /// (or a word starting with it), newest first, with their conversations; local only.
    /// See [`crate::search`].
    pub fn search(
        &self,
        query: &crate::search::SearchQuery,
    ) -> Result<Vec<(Conversation, StoredMessage)>, ClientError> {
        let mut conversations: HashMap<GroupId, Option<Conversation>> = HashMap::new();
        let mut found = Vec::new();
        for (group, message) in local_search::search_messages(self.data.vault(), query)? {
            let conversation = match conversations.get(&group) {
                Some(known) => known.clone(),
                None => {
                    let loaded = self.load_conversation(&group)?;
                    conversations.insert(group, loaded.clone());
                    loaded
                }
            };
            if let Some(conversation) = conversation {
                found.push((conversation, message));
            }
        }
        Ok(found)
    }
}

/// See [`Messenger::delete_messages_before`]. One transaction: a message never outlives
/// its receipts or its search index entry, or the other way round.
fn delete_messages_before(data: &AppStorage, unix_s: i64) -> Result<u64, ClientError> {
    let mut keys = Vec::new();
    let mut messages = 0;
    for (key, value) in data.get_by_prefix("msg/").map_err(storage_error)? {
        let message = StoredMessage::decode(&value)?;
        if message.sent_at_unix_s.min(message.server_time_unix_s) < unix_s {
            if let Some(rest) = key.strip_prefix("msg/") {
                keys.push(format!("rcpt/{rest}"));
            }
            keys.push(key);
            messages += 1;
        }
    }
    local_search::delete_with_index(data, &keys)?;
    Ok(messages)
}

/// This device's mls-rs client, keeping its state in the profile's vault.
pub(crate) fn mls_client(profile: &Profile, identity: RedoubtIdentityProvider) -> Client<DeviceMlsConfig> {
    let vault = profile.vault();
    let signing_identity = redoubt_mls::device_signing_identity(
        profile.certificate(),
        &profile.certificate_body().device_public_key.0,
    );
    Client::builder()
        .group_state_storage(vault.group_state_storage())
        .key_package_repo(vault.key_package_storage())
        .psk_store(vault.pre_shared_key_storage())
        .crypto_provider(RustCryptoProvider::default())
        .identity_provider(identity)
        .mls_rules(redoubt_mls::rules())
        .signing_identity(
            signing_identity,
            profile.mls_secret_key(),
            redoubt_mls::CIPHER_SUITE,
        )
        .build()
}

fn random_id() -> Bytes<16> {
    let mut id = [0; 16];
    OsRng.fill_bytes(&mut id);
    Bytes(id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn message(seq: u64, sent_at_unix_s: i64, server_time_unix_s: i64) -> StoredMessage {
        StoredMessage {
            seq,
            sender_user: UserName::parse("alice").unwrap(),
            sender_device: DeviceId::from([1; 16]),
            sent_at_unix_s,
            server_time_unix_s,
            text: format!("message {seq}"),
            attachment: None,
            history: false,
            event: false,
        }
    }

    #[test]
    fn delete_messages_before_takes_old_messages_and_their_receipts_only() {
        let dir = tempfile::tempdir().unwrap();
        let profile = crate::profile::test_profile(dir.path());
        let data = profile.vault().app_storage();
        let (g1, g2) = (GroupId::from([1; 32]), GroupId::from([2; 32]));
        let store = |group: &GroupId, m: StoredMessage| {
            data.insert(
                &receipt_key(group, m.seq),
                &postcard::to_stdvec(&Receipts::default()).unwrap(),
            )
            .unwrap();
            data.insert(&message_key(group, m.seq), &postcard::to_stdvec(&m).unwrap())
                .unwrap();
        };
        store(&g1, message(1, 100, 100));
        store(&g1, message(2, 200, 201));
        // The sender's clock claims the future; the server saw it early: it is old.
        store(&g2, message(1, 10_000, 150));
        store(&g2, message(2, 300, 300));
        data.insert(&conversation_key(&g1), b"kept").unwrap();

        assert_eq!(delete_messages_before(&data, 200).unwrap(), 2);
        let left: Vec<String> = data
            .get_by_prefix("")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            left,
            vec![
                conversation_key(&g1),
                message_key(&g1, 2),
                message_key(&g2, 2),
                receipt_key(&g1, 2),
                receipt_key(&g2, 2),
            ]
        );
        assert_eq!(delete_messages_before(&data, 200).unwrap(), 0);
    }
}
