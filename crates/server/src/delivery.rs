//! The delivery service: key package pools, groups' ordered logs, Welcome inboxes and push.
//!
//! The server follows each group's public state with an mls-rs external client: every
//! handshake message (a PublicMessage) is validated against it before it is appended, and a
//! commit is accepted only for the group's current epoch. Application messages are
//! PrivateMessages the server cannot read; it checks only their group and epoch.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use mls_rs::external_client::builder::{
    ExternalBaseConfig, WithCryptoProvider, WithIdentityProvider, WithMlsRules,
};
use mls_rs::external_client::{ExternalClient, ExternalGroup, ExternalReceivedMessage, ExternalSnapshot};
use mls_rs::group::{ContentType, Sender};
use mls_rs::mls_rules::DefaultMlsRules;
use mls_rs::{MlsMessage, MlsMessageDescription};
use mls_rs_crypto_rustcrypto::RustCryptoProvider;
use redoubt_mls::RedoubtIdentityProvider;
use redoubt_proto::{
    ClaimedKeyPackage, DeviceId, ErrorCode, Event, GroupEntry, GroupId, GroupSubmit, GroupSummary, InboxItem,
    UserDevice, UserName,
};
use redoubt_store::{AppendError, GroupRecord, GroupTransition, NewLogEntry, StoreError};

use crate::State;
use crate::api::Authenticated;
use crate::error::ApiError;

pub(crate) type ServerMlsConfig = WithMlsRules<
    DefaultMlsRules,
    WithIdentityProvider<RedoubtIdentityProvider, WithCryptoProvider<RustCryptoProvider, ExternalBaseConfig>>,
>;

/// Application messages may be at most this many epochs behind the group: members keep
/// that many past epochs' keys, so a message sent just before a commit still decrypts.
const APPLICATION_EPOCH_LAG_MAX: u64 = 2;

pub(crate) fn external_client(
    identity: RedoubtIdentityProvider,
    org: &crate::Org,
) -> ExternalClient<ServerMlsConfig> {
    ExternalClient::builder()
        .crypto_provider(RustCryptoProvider::default())
        .identity_provider(identity)
        .mls_rules(redoubt_mls::rules())
        .signer(
            org.mls_signer(),
            redoubt_mls::org_external_sender(&org.public_key()),
        )
        .build()
}

fn invalid(message: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InvalidMlsMessage, message.to_string())
}

fn parse_message(bytes: &[u8]) -> Result<MlsMessage, ApiError> {
    MlsMessage::from_bytes(bytes).map_err(|e| invalid(format!("not an MLS message: {e}")))
}

fn group_id_of(bytes: &[u8]) -> Result<GroupId, ApiError> {
    <[u8; 32]>::try_from(bytes)
        .map(GroupId::from)
        .map_err(|_| invalid("group ids are 32 bytes"))
}

/// What a session's queue carries: events for the device, or an order to close.
#[derive(Debug)]
pub(crate) enum Push {
    Event(Event),
    Close(&'static str),
}

/// One session's pending pushes. Notices of new log entries are coalesced per group —
/// only the newest sequence number matters, since the device reads the log after its own
/// cursor — so a busy group can never overflow a session. Other pushes (a Welcome, a
/// policy change, a command, a close) queue up to the session's limit; past it the session
/// is closed as too slow.
#[derive(Debug)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    ready: tokio::sync::Notify,
}

#[derive(Debug)]
struct QueueState {
    newest: HashMap<GroupId, u64>,
    /// Groups with a pending notice, oldest first.
    groups: std::collections::VecDeque<GroupId>,
    others: std::collections::VecDeque<Push>,
    others_max: usize,
    overflowed: bool,
}

impl Queue {
    fn new(others_max: usize) -> Self {
        Self {
            state: Mutex::new(QueueState {
                newest: HashMap::new(),
                groups: std::collections::VecDeque::new(),
                others: std::collections::VecDeque::new(),
                others_max,
                overflowed: false,
            }),
            ready: tokio::sync::Notify::new(),
        }
    }

    /// Queues a push; false when the queue overflowed (the session will close).
    fn push(&self, push: Push) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match push {
            Push::Event(Event::GroupAppended { group_id, seq }) => {
                if !state.newest.contains_key(&group_id) {
                    state.groups.push_back(group_id);
                }
                let newest = state.newest.entry(group_id).or_insert(seq);
                *newest = (*newest).max(seq);
            }
            other if state.others.len() < state.others_max => state.others.push_back(other),
            _ => state.overflowed = true,
        }
        let ok = !state.overflowed;
        drop(state);
        self.ready.notify_one();
        ok
    }

    /// The next push, waiting for one; `None` once the queue overflowed.
    pub(crate) async fn next(&self) -> Option<Push> {
        loop {
            {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.overflowed {
                    return None;
                }
                if let Some(push) = state.others.pop_front() {
                    return Some(push);
                }
                if let Some(group_id) = state.groups.pop_front() {
                    let seq = state.newest.remove(&group_id).unwrap_or_default();
                    return Some(Push::Event(Event::GroupAppended { group_id, seq }));
                }
            }
            // A push between the check and here leaves a permit: no wake-up is lost.
            self.ready.notified().await;
        }
    }
}

/// One session's queue, with the id it was registered under.
type Subscription = (u64, Arc<Queue>);

/// Sessions waiting for events, by device.
#[derive(Debug, Default)]
pub(crate) struct Subscribers {
    by_device: Mutex<HashMap<DeviceId, Vec<Subscription>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Subscribers {
    pub(crate) fn subscribe(&self, device: DeviceId, capacity: usize) -> (u64, Arc<Queue>) {
        let queue = Arc::new(Queue::new(capacity));
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut map = self.by_device.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(device).or_default().push((id, queue.clone()));
        (id, queue)
    }

    pub(crate) fn unsubscribe(&self, device: &DeviceId, id: u64) {
        let mut map = self.by_device.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = map.get_mut(device) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                map.remove(device);
            }
        }
    }

    pub(crate) fn notify(&self, devices: &[DeviceId], event: &Event) {
        let mut map = self.by_device.lock().unwrap_or_else(|p| p.into_inner());
        for device in devices {
            if let Some(list) = map.get_mut(device) {
                list.retain(|(_, queue)| queue.push(Push::Event(event.clone())));
            }
        }
    }

    /// Tells every connected device.
    pub(crate) fn notify_all(&self, event: &Event) {
        let mut map = self.by_device.lock().unwrap_or_else(|p| p.into_inner());
        for list in map.values_mut() {
            list.retain(|(_, queue)| queue.push(Push::Event(event.clone())));
        }
    }

    /// Ends every session of `device` (revocation).
    pub(crate) fn disconnect(&self, device: &DeviceId, reason: &'static str) {
        let mut map = self.by_device.lock().unwrap_or_else(|p| p.into_inner());
        for (_, queue) in map.remove(device).unwrap_or_default() {
            let mut state = queue.state.lock().unwrap_or_else(|p| p.into_inner());
            // The close goes first, whatever else is waiting.
            state.others.push_front(Push::Close(reason));
            drop(state);
            queue.ready.notify_one();
        }
    }
}

fn map_store(error: StoreError) -> ApiError {
    match error {
        StoreError::Limit(message) => ApiError::new(ErrorCode::LimitReached, message),
        other => other.into(),
    }
}

pub(crate) async fn publish_key_packages(
    state: &State,
    who: &Authenticated,
    key_packages: Vec<Vec<u8>>,
    last_resort: Option<Vec<u8>>,
) -> Result<u32, ApiError> {
    let max = state.config.limits.key_packages_per_device_max;
    if key_packages.len() > max as usize {
        return Err(ApiError::new(
            ErrorCode::LimitReached,
            format!("at most {max} key packages per device"),
        ));
    }
    for package in key_packages.iter().chain(last_resort.iter()) {
        let message = parse_message(package)?;
        let key_package = state
            .external
            .validate_key_package(message, None)
            .map_err(|e| invalid(format!("key package refused: {e}")))?;
        if key_package.cipher_suite() != redoubt_mls::CIPHER_SUITE {
            return Err(invalid("key package uses another ciphersuite"));
        }
        let device = state
            .identity
            .device_id(key_package.signing_identity())
            .map_err(invalid)?;
        if device != who.device_id {
            return Err(invalid("key package belongs to another device"));
        }
    }
    let available = state
        .store
        .publish_key_packages(&who.device_id, &key_packages, last_resort.as_deref(), max)
        .await
        .map_err(map_store)?;
    if !key_packages.is_empty() {
        // A device that can now be added to groups: the mail connector adds it to its
        // user's mailbox group.
        state.mail.devices_changed();
    }
    Ok(available)
}

pub(crate) async fn claim_key_packages(
    state: &State,
    mut users: Vec<UserName>,
    except: Vec<DeviceId>,
) -> Result<Vec<ClaimedKeyPackage>, ApiError> {
    // The mail connector joins only the mailbox groups it makes itself: nobody can pull it
    // into another group (a member syncing a mailbox group asks for it and gets nothing).
    users.retain(|user| user.as_str() != redoubt_mls::mail::CONNECTOR_USER);
    if users.len() > 1000 {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "at most 1000 users per claim",
        ));
    }
    for user in &users {
        if state.store.user(user).await?.is_none() {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("user {user} does not exist"),
            ));
        }
    }
    let claimed = state.store.claim_key_packages(&users, &except).await?;
    Ok(claimed
        .into_iter()
        .map(|c| ClaimedKeyPackage {
            user: c.user,
            device_id: c.device,
            key_package: c.key_package,
        })
        .collect())
}

pub(crate) async fn user_devices(state: &State, users: Vec<UserName>) -> Result<Vec<UserDevice>, ApiError> {
    if users.len() > 1000 {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "at most 1000 users per request",
        ));
    }
    let mut devices = Vec::new();
    for user in users {
        for device in state.store.list_devices(Some(&user)).await? {
            if device.revoked_at_unix_s.is_none() {
                devices.push(UserDevice {
                    user: user.clone(),
                    device_id: device.id,
                });
            }
        }
    }
    Ok(devices)
}

fn member_devices(
    state: &State,
    group: &ExternalGroup<ServerMlsConfig>,
) -> Result<BTreeSet<DeviceId>, ApiError> {
    group
        .roster()
        .members()
        .iter()
        .map(|m| {
            state
                .identity
                .member_device_id(&m.signing_identity)
                .map_err(invalid)
        })
        .collect()
}

fn snapshot(group: &ExternalGroup<ServerMlsConfig>) -> Result<Vec<u8>, ApiError> {
    group.snapshot().to_bytes().map_err(|e| {
        tracing::error!(error = %e, "cannot serialise group state");
        ApiError::new(ErrorCode::Internal, "internal server error; nothing was changed")
    })
}

pub(crate) async fn create_group(
    state: &State,
    who: &Authenticated,
    group_info: Vec<u8>,
) -> Result<GroupId, ApiError> {
    let message = parse_message(&group_info)?;
    if !matches!(message.description(), MlsMessageDescription::GroupInfo) {
        return Err(invalid("GroupCreate takes a GroupInfo"));
    }
    let group = state
        .external
        .observe_group(message, None, None)
        .map_err(|e| invalid(format!("group info refused: {e}")))?;
    let group_id = group_id_of(&group.group_context().group_id)?;
    let members = member_devices(state, &group)?;
    if members.len() != 1 || !members.contains(&who.device_id) {
        return Err(invalid(
            "a new group must have the creating device as its only member",
        ));
    }
    let senders: Option<mls_rs::extension::built_in::ExternalSendersExt> =
        group.group_context().extensions.get_as().ok().flatten();
    let org_sender = redoubt_mls::org_external_sender(&state.org.public_key());
    if !senders.is_some_and(|s| s.allowed_senders.contains(&org_sender)) {
        return Err(invalid(
            "the group must name the organisation as its external sender",
        ));
    }
    let record = GroupRecord {
        id: group_id,
        epoch: group.group_context().epoch,
        state: snapshot(&group)?,
        last_seq: 0,
        created_at_unix_s: state.now(),
    };
    state.store.create_group(&record, &who.device_id).await?;
    tracing::info!(group_id = %group_id, device_id = %who.device_id, "group created");
    Ok(group_id)
}

/// Refuses devices that are not current members of the group.
pub(crate) async fn require_member(
    state: &State,
    group: &GroupId,
    who: &Authenticated,
) -> Result<(), ApiError> {
    match state.store.membership(group, &who.device_id).await? {
        Some(membership) if membership.is_current() => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::NotAMember,
            "this device is not a member of that group",
        )),
    }
}

pub(crate) async fn submit(
    state: &State,
    who: &Authenticated,
    submit: GroupSubmit,
) -> Result<(u64, bool), ApiError> {
    let GroupSubmit {
        group_id,
        client_message_id,
        message: bytes,
        welcome,
    } = submit;
    require_member(state, &group_id, who).await?;
    let record = state
        .store
        .group(&group_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such group"))?;
    let message = parse_message(&bytes)?;
    let entry = NewLogEntry {
        group: group_id,
        sender: who.device_id,
        client_message_id: client_message_id.0,
        message: &bytes,
        created_at_unix_s: state.now(),
    };

    let transition = match message.description() {
        MlsMessageDescription::PrivateProtocolMessage {
            group_id: id,
            epoch_id,
            content_type,
        } => {
            if group_id_of(id)? != group_id {
                return Err(invalid("message is for another group"));
            }
            if content_type != ContentType::Application {
                return Err(invalid("handshake messages must be sent as PublicMessage"));
            }
            if welcome.is_some() {
                return Err(invalid("a Welcome travels only with a commit"));
            }
            if epoch_id > record.epoch || epoch_id + APPLICATION_EPOCH_LAG_MAX < record.epoch {
                return Err(ApiError::new(
                    ErrorCode::EpochConflict,
                    format!(
                        "message is for epoch {epoch_id}; the group is at epoch {}",
                        record.epoch
                    ),
                ));
            }
            None
        }
        MlsMessageDescription::PublicProtocolMessage {
            group_id: id,
            epoch_id,
            content_type,
            sender,
            ..
        } => {
            if group_id_of(id)? != group_id {
                return Err(invalid("message is for another group"));
            }
            if content_type == ContentType::Application {
                return Err(invalid("application messages must be encrypted"));
            }
            if epoch_id != record.epoch {
                if let Some(seq) = state
                    .store
                    .find_submission(&group_id, &who.device_id, &client_message_id.0)
                    .await?
                {
                    return Ok((seq, true));
                }
                return Err(ApiError::new(
                    ErrorCode::EpochConflict,
                    format!(
                        "commit is for epoch {epoch_id}; the group is at epoch {}: fetch, process and retry",
                        record.epoch
                    ),
                ));
            }
            let mut group = load_external(state, &record)?;
            if let Sender::Member(index) = sender {
                let member = group
                    .roster()
                    .member_with_index(index)
                    .map_err(|_| invalid("sender is not a member"))?;
                if state
                    .identity
                    .device_id(&member.signing_identity)
                    .map_err(invalid)?
                    != who.device_id
                {
                    return Err(invalid("a device may only send handshakes from its own leaf"));
                }
            } else {
                return Err(invalid("only members submit handshake messages"));
            }
            let before = member_devices(state, &group)?;
            let received = group
                .process_incoming_message(message)
                .map_err(|e| invalid(format!("handshake refused: {e}")))?;
            let after = member_devices(state, &group)?;
            let added: Vec<DeviceId> = after.difference(&before).copied().collect();
            let removed: Vec<DeviceId> = before.difference(&after).copied().collect();
            match received {
                ExternalReceivedMessage::Commit(_) => {}
                ExternalReceivedMessage::Proposal(_) if welcome.is_none() => {}
                _ => return Err(invalid("expected a commit or a proposal")),
            }
            if welcome.is_some() && added.is_empty() {
                return Err(invalid("a Welcome travels only with a commit that adds members"));
            }
            if let Some(welcome) = &welcome {
                let welcome = parse_message(welcome)?;
                if !matches!(welcome.description(), MlsMessageDescription::Welcome { .. }) {
                    return Err(invalid("the welcome field must hold a Welcome"));
                }
            }
            Some(GroupTransition {
                expected_epoch: record.epoch,
                epoch: group.group_context().epoch,
                state: snapshot(&group)?,
                added,
                removed,
                welcome,
            })
        }
        _ => return Err(invalid("expected a group message")),
    };

    let appended = state.store.append(&entry, transition.as_ref()).await.map_err(|e| match e {
        AppendError::EpochConflict { expected, current } => ApiError::new(
            ErrorCode::EpochConflict,
            format!("commit is for epoch {expected}; the group is at epoch {current}: fetch, process and retry"),
        ),
        AppendError::UnknownGroup => ApiError::new(ErrorCode::NotFound, "no such group"),
        AppendError::Store(store) => map_store(store),
        other => {
            tracing::error!(error = %other, "append failed");
            ApiError::new(ErrorCode::Internal, "internal server error; nothing was changed")
        }
    })?;
    if !appended.duplicate {
        let members = state.store.group_members(&group_id).await?;
        // Removed devices hear of the commit that removed them too.
        let removed = transition.as_ref().map(|t| t.removed.clone()).unwrap_or_default();
        let notify: Vec<DeviceId> = members.iter().chain(removed.iter()).copied().collect();
        state.subscribers.notify(
            &notify,
            &Event::GroupAppended {
                group_id,
                seq: appended.seq,
            },
        );
        if let Some(t) = transition.as_ref().filter(|t| t.welcome.is_some()) {
            state.subscribers.notify(&t.added, &Event::InboxChanged);
        }
    }
    Ok((appended.seq, appended.duplicate))
}

fn load_external(state: &State, record: &GroupRecord) -> Result<ExternalGroup<ServerMlsConfig>, ApiError> {
    let snapshot = ExternalSnapshot::from_bytes(&record.state).map_err(|e| {
        tracing::error!(group_id = %record.id, error = %e, "stored group state unreadable");
        ApiError::new(ErrorCode::Internal, "internal server error; nothing was changed")
    })?;
    state.external.load_group(snapshot).map_err(|e| {
        tracing::error!(group_id = %record.id, error = %e, "stored group state unusable");
        ApiError::new(ErrorCode::Internal, "internal server error; nothing was changed")
    })
}

/// As the organisation (the groups' external sender), proposes removing `device` from
/// every group it belongs to. Members commit the proposals on their next sync; the commit
/// ends the device's membership. Returns how many groups got a proposal.
pub(crate) async fn propose_device_removal(state: &State, device: &DeviceId) -> Result<usize, ApiError> {
    let mut proposed = 0;
    for (record, _) in state.store.device_groups(device).await? {
        // A concurrent commit may move the epoch under us: retry on the fresh state.
        for _ in 0..8 {
            let Some(record) = state.store.group(&record.id).await? else {
                break;
            };
            let mut group = load_external(state, &record)?;
            let Some(index) = group
                .roster()
                .members()
                .iter()
                .find(|m| state.identity.device_id(&m.signing_identity).ok() == Some(*device))
                .map(|m| m.index)
            else {
                break;
            };
            let proposal = group.propose_remove(index, Vec::new()).map_err(invalid)?;
            let message = proposal.to_bytes().map_err(invalid)?;
            let mut client_message_id = [0; 16];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut client_message_id);
            let entry = NewLogEntry {
                group: record.id,
                sender: DeviceId::ORGANISATION,
                client_message_id,
                message: &message,
                created_at_unix_s: state.now(),
            };
            let transition = GroupTransition {
                expected_epoch: record.epoch,
                epoch: record.epoch,
                state: snapshot(&group)?,
                added: Vec::new(),
                removed: Vec::new(),
                welcome: None,
            };
            match state.store.append(&entry, Some(&transition)).await {
                Ok(appended) => {
                    let members = state.store.group_members(&record.id).await?;
                    state.subscribers.notify(
                        &members,
                        &Event::GroupAppended {
                            group_id: record.id,
                            seq: appended.seq,
                        },
                    );
                    tracing::info!(group_id = %record.id, device_id = %device, "proposed removing device");
                    proposed += 1;
                    break;
                }
                Err(AppendError::EpochConflict { .. }) => continue,
                Err(AppendError::Store(error)) => return Err(map_store(error)),
                Err(other) => {
                    tracing::error!(error = %other, "append failed");
                    return Err(ApiError::new(ErrorCode::Internal, "internal server error"));
                }
            }
        }
    }
    Ok(proposed)
}

pub(crate) async fn fetch(
    state: &State,
    who: &Authenticated,
    group_id: GroupId,
    after_seq: u64,
    limit: u32,
) -> Result<(Vec<GroupEntry>, u64), ApiError> {
    let membership = state
        .store
        .membership(&group_id, &who.device_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotAMember, "this device is not a member of that group"))?;
    let record = state
        .store
        .group(&group_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such group"))?;
    let limit = limit.clamp(1, state.config.limits.fetch_entries_max);
    let after = after_seq.max(membership.joined_seq);
    let entries = state.store.log_entries(&group_id, after, limit).await?;
    let entries: Vec<GroupEntry> = entries
        .into_iter()
        .take_while(|e| membership.may_read(e.seq))
        .map(|e| GroupEntry {
            seq: e.seq,
            sender: e.sender,
            message: e.message,
            server_time_unix_s: e.created_at_unix_s,
        })
        .collect();
    let last_seq = membership.removed_seq.unwrap_or(record.last_seq);
    Ok((entries, last_seq))
}

pub(crate) async fn ack(
    state: &State,
    who: &Authenticated,
    group_id: GroupId,
    seq: u64,
) -> Result<(), ApiError> {
    if state.store.membership(&group_id, &who.device_id).await?.is_none() {
        return Err(ApiError::new(
            ErrorCode::NotAMember,
            "this device is not a member of that group",
        ));
    }
    state.pending_acks.record(group_id, who.device_id, seq);
    Ok(())
}

/// Acknowledgements not yet written. Only pruning reads them, so they are coalesced in
/// memory per (group, device) and written together every second, before each prune and at
/// shutdown, instead of one durable write per request. A crash loses at most the last
/// second's: those entries are pruned later (at the device's next acknowledgement, which
/// covers everything before it, or at the retention limit), never early.
#[derive(Debug, Default)]
pub(crate) struct PendingAcks(Mutex<HashMap<(GroupId, DeviceId), u64>>);

impl PendingAcks {
    fn record(&self, group: GroupId, device: DeviceId, seq: u64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let newest = map.entry((group, device)).or_insert(seq);
        *newest = (*newest).max(seq);
    }

    fn take(&self) -> Vec<((GroupId, DeviceId), u64)> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.drain().collect()
    }
}

/// Writes the pending acknowledgements; those not written are kept for the next try.
pub(crate) async fn flush_acks(state: &State) -> Result<(), redoubt_store::StoreError> {
    let mut pending = state.pending_acks.take().into_iter();
    while let Some(((group, device), seq)) = pending.next() {
        if let Err(error) = state.store.ack(&group, &device, seq).await {
            state.pending_acks.record(group, device, seq);
            for ((group, device), seq) in pending {
                state.pending_acks.record(group, device, seq);
            }
            return Err(error);
        }
    }
    Ok(())
}

/// Deletes log entries every member device has acknowledged, and any older than the
/// retention limit.
pub(crate) async fn prune(state: &State) -> Result<u64, redoubt_store::StoreError> {
    flush_acks(state).await?;
    let retention_s = i64::from(state.config.limits.log_retention_days) * 86_400;
    let deleted = state.store.prune_logs(state.now() - retention_s).await?;
    if deleted > 0 {
        tracing::info!(entries = deleted, "pruned group logs");
    }
    Ok(deleted)
}

pub(crate) async fn group_list(state: &State, who: &Authenticated) -> Result<Vec<GroupSummary>, ApiError> {
    Ok(state
        .store
        .device_groups(&who.device_id)
        .await?
        .into_iter()
        .map(|(g, m)| GroupSummary {
            group_id: g.id,
            epoch: g.epoch,
            last_seq: g.last_seq,
            joined_seq: m.joined_seq,
        })
        .collect())
}

pub(crate) async fn inbox(state: &State, who: &Authenticated) -> Result<Vec<InboxItem>, ApiError> {
    Ok(state
        .store
        .inbox(&who.device_id)
        .await?
        .into_iter()
        .map(|i| InboxItem {
            id: i.id,
            group_id: i.group,
            welcome: i.welcome,
            joined_seq: i.joined_seq,
        })
        .collect())
}

pub(crate) async fn inbox_ack(state: &State, who: &Authenticated, ids: Vec<u64>) -> Result<(), ApiError> {
    Ok(state.store.inbox_ack(&who.device_id, &ids).await?)
}
