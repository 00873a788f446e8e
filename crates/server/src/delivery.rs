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
use crate::cluster::{Hint, announce};
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

/// One session's pending pushes. New log entries are held per group and go out together
/// in one `GroupEntries` event when the session next writes, so under load one frame carries
/// many entries; the bytes held for a session are bounded (`session_inline_bytes_max`),
/// past which a group's entries are dropped for a `GroupAppended` notice of its newest
/// sequence number (the device then reads the log after its cursor). Neither can overflow a
/// session. Other pushes (a Welcome, a policy change, a command, a close) queue up to the
/// session's limit; past it the session is closed as too slow.
#[derive(Debug)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    ready: tokio::sync::Notify,
}

#[derive(Debug)]
struct QueueState {
    groups: HashMap<GroupId, PendingGroup>,
    /// Groups with something pending, oldest first.
    order: std::collections::VecDeque<GroupId>,
    /// Bytes of entries held, over all groups, and the most allowed.
    inline_bytes: usize,
    inline_bytes_max: usize,
    others: std::collections::VecDeque<Push>,
    others_max: usize,
    overflowed: bool,
}

/// What is pending for one group: the newest sequence number announced, and the entries
/// held to carry in the event (none once they would not fit: a notice only).
#[derive(Debug, Default)]
struct PendingGroup {
    newest: u64,
    entries: Vec<Arc<GroupEntry>>,
    bytes: usize,
    notice_only: bool,
}

/// What an entry counts against `session_inline_bytes_max`: its message and its framing.
fn held_bytes(entry: &GroupEntry) -> usize {
    entry.message.len() + 64
}

impl Queue {
    fn new(others_max: usize, inline_bytes_max: usize) -> Self {
        Self {
            state: Mutex::new(QueueState {
                groups: HashMap::new(),
                order: std::collections::VecDeque::new(),
                inline_bytes: 0,
                inline_bytes_max,
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
                let pending = state.pending(group_id);
                pending.newest = pending.newest.max(seq);
            }
            other if state.others.len() < state.others_max => state.others.push_back(other),
            _ => state.overflowed = true,
        }
        let ok = !state.overflowed;
        drop(state);
        self.ready.notify_one();
        ok
    }

    /// Queues a new log entry of `group_id`.
    fn push_entry(&self, group_id: GroupId, entry: &Arc<GroupEntry>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let room = state.inline_bytes_max.saturating_sub(state.inline_bytes);
        let pending = state.pending(group_id);
        pending.newest = pending.newest.max(entry.seq);
        let mut freed = 0;
        let mut added = 0;
        if !pending.notice_only {
            if held_bytes(entry) <= room {
                added = held_bytes(entry);
                pending.bytes += added;
                pending.entries.push(entry.clone());
            } else {
                freed = pending.bytes;
                pending.bytes = 0;
                pending.entries = Vec::new();
                pending.notice_only = true;
            }
        }
        state.inline_bytes = state.inline_bytes + added - freed;
        drop(state);
        self.ready.notify_one();
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
                if let Some(group_id) = state.order.pop_front() {
                    let pending = state.groups.remove(&group_id).unwrap_or_default();
                    state.inline_bytes -= pending.bytes;
                    drop(state);
                    return Some(Push::Event(pending.into_event(group_id)));
                }
            }
            // A push between the check and here leaves a permit: no wake-up is lost.
            self.ready.notified().await;
        }
    }
}

impl QueueState {
    fn pending(&mut self, group_id: GroupId) -> &mut PendingGroup {
        if !self.groups.contains_key(&group_id) {
            self.order.push_back(group_id);
        }
        self.groups.entry(group_id).or_default()
    }
}

impl PendingGroup {
    /// The entries in order when they reach the newest announced; otherwise a notice.
    fn into_event(mut self, group_id: GroupId) -> Event {
        // Appends finishing together may have been queued out of order.
        self.entries.sort_unstable_by_key(|e| e.seq);
        self.entries.dedup_by_key(|e| e.seq);
        match self.entries.last() {
            Some(last) if !self.notice_only && last.seq == self.newest => Event::GroupEntries {
                group_id,
                entries: self.entries.iter().map(|e| GroupEntry::clone(e)).collect(),
            },
            _ => Event::GroupAppended {
                group_id,
                seq: self.newest,
            },
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
    pub(crate) fn subscribe(
        &self,
        device: DeviceId,
        capacity: usize,
        inline_bytes_max: usize,
    ) -> (u64, Arc<Queue>) {
        let queue = Arc::new(Queue::new(capacity, inline_bytes_max));
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

    /// Hands a new log entry to the sessions of `devices`.
    pub(crate) fn publish(&self, devices: &[DeviceId], group_id: GroupId, entry: GroupEntry) {
        let entry = Arc::new(entry);
        let map = self.by_device.lock().unwrap_or_else(|p| p.into_inner());
        for device in devices {
            for (_, queue) in map.get(device).into_iter().flatten() {
                queue.push_entry(group_id, &entry);
            }
        }
    }

    /// Sessions open (authenticated), and the distinct devices they belong to.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let map = self.by_device.lock().unwrap_or_else(|p| p.into_inner());
        let sessions = map.values().map(Vec::len).sum();
        let devices = map
            .values()
            .filter(|subscriptions| !subscriptions.is_empty())
            .count();
        (sessions, devices)
    }

    /// Sessions open (authenticated).
    pub(crate) fn sessions(&self) -> usize {
        self.by_device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Whether any of `devices` has a session here.
    fn any_connected(&self, devices: &[DeviceId]) -> bool {
        let map = self.by_device.lock().unwrap_or_else(|p| p.into_inner());
        devices.iter().any(|device| map.contains_key(device))
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
        announce(state, Hint::DevicesChanged);
    }
    if last_resort.is_some() {
        // Its first publication (a device sends its last-resort package once): the user's
        // other devices online add it to their conversations and send it the history.
        let others: Vec<DeviceId> = state
            .store
            .list_devices(Some(&who.user))
            .await?
            .into_iter()
            .filter(|d| d.id != who.device_id && d.revoked_at_unix_s.is_none())
            .map(|d| d.id)
            .collect();
        announce(
            state,
            Hint::Notify {
                devices: others,
                event: Event::DeviceReady {
                    device: who.device_id,
                },
            },
        );
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
        .members_iter()
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
        state_seq: 0,
        last_seq: 0,
        created_at_unix_s: state.now(),
    };
    state.store.create_group(&record, &who.device_id).await?;
    tracing::info!(group_id = %group_id, device_id = %who.device_id, "group created");
    Ok(group_id)
}

/// What every application message needs of its group — the epoch and the current member
/// devices — kept in memory, so that a message costs no directory reads. Membership and
/// epoch change only by appends with a transition (and group creation), after which the
/// group's view is dropped; a view read from the store while any was dropped is not kept,
/// so a stale one cannot be put back.
#[derive(Debug, Default)]
pub(crate) struct GroupViews {
    views: Mutex<HashMap<GroupId, Arc<GroupView>>>,
    invalidations: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
pub(crate) struct GroupView {
    epoch: u64,
    /// Current member devices, sorted; shared with every entry published to them (a
    /// 10,000-member list is not copied per message).
    members: Arc<[DeviceId]>,
}

impl GroupView {
    fn is_member(&self, device: &DeviceId) -> bool {
        self.members.binary_search(device).is_ok()
    }
}

/// Views kept at most; past it the cache starts over (a miss costs two reads).
const GROUP_VIEWS_MAX: usize = 10_000;

impl GroupViews {
    fn invalidate(&self, group: &GroupId) {
        self.invalidations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.views.lock().unwrap_or_else(|p| p.into_inner()).remove(group);
    }

    /// Drops every view (another node's changes may have been missed).
    pub(crate) fn clear(&self) {
        self.invalidations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.views.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn cached(&self, group: &GroupId) -> Option<Arc<GroupView>> {
        self.views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(group)
            .cloned()
    }

    /// Puts the view a commit just made durable (under the group's commit lock), unless a
    /// newer one (another node's later commit, read meanwhile) is there already.
    fn replace(&self, group: GroupId, view: GroupView) {
        self.invalidations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut map = self.views.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&group).is_some_and(|cached| cached.epoch > view.epoch) {
            return;
        }
        if map.len() >= GROUP_VIEWS_MAX {
            map.clear();
        }
        map.insert(group, Arc::new(view));
    }
}

/// One lock per group taken by handshakes (commits and proposals) from before they read the
/// group's state until their append is done: only one can succeed per epoch anyway, and
/// holding it makes the cached view and decoded state current for the holder.
/// Application messages do not take it.
#[derive(Debug, Default)]
pub(crate) struct CommitLocks(Mutex<HashMap<GroupId, Arc<tokio::sync::Mutex<()>>>>);

impl CommitLocks {
    async fn lock(&self, group: GroupId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= 1024 {
                map.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            map.entry(group).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// A group's decoded public state, and how many handshakes it is ahead of the stored one.
pub(crate) struct LoadedGroup {
    group: ExternalGroup<ServerMlsConfig>,
    unsaved_handshakes: u64,
}

/// The stored state is written with every this many handshakes (and with every proposal);
/// the ones between are replayed over it when it is loaded. Writing it costs as much as
/// the group is large (4 MB, 10–20 ms to encode and as long to write at 10,000 members),
/// replaying a commit about as much as processing it did (~12 ms at 10,000), and loading
/// happens only when the group is not among the `LIVE_GROUPS_MAX` kept decoded.
const SNAPSHOT_EVERY_HANDSHAKES: u64 = 8;

/// The decoded public state of the groups with the latest commits, with its epoch, so the
/// next commit skips reading and decoding the stored snapshot (MBs at 10,000 members).
/// Taken by a commit under the group's commit lock, put back after its append.
#[derive(Default)]
pub(crate) struct LiveGroups(Mutex<Vec<(GroupId, u64, LoadedGroup)>>);

/// Decoded group states kept at most.
const LIVE_GROUPS_MAX: usize = 4;

impl std::fmt::Debug for LiveGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveGroups").finish_non_exhaustive()
    }
}

impl LiveGroups {
    fn take(&self, group: &GroupId, epoch: u64) -> Option<LoadedGroup> {
        let mut live = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let at = live.iter().position(|(id, _, _)| id == group)?;
        let (_, live_epoch, state) = live.remove(at);
        (live_epoch == epoch).then_some(state)
    }

    fn remove(&self, group: &GroupId) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(id, _, _)| id != group);
    }

    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn put(&self, group: GroupId, epoch: u64, state: LoadedGroup) {
        let mut live = self.0.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|(id, _, _)| *id != group);
        if live.len() >= LIVE_GROUPS_MAX {
            live.remove(0);
        }
        live.push((group, epoch, state));
    }
}

/// The group's view, read from the store when not cached; `None` when there is no such group.
async fn group_view(state: &State, group_id: &GroupId) -> Result<Option<Arc<GroupView>>, ApiError> {
    let views = &state.group_views;
    if let Some(view) = views
        .views
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(group_id)
    {
        return Ok(Some(view.clone()));
    }
    let invalidations = views.invalidations.load(std::sync::atomic::Ordering::SeqCst);
    let Some(head) = state.store.group_head(group_id).await? else {
        return Ok(None);
    };
    let mut members = state.store.group_members(group_id).await?;
    members.sort_unstable();
    let view = Arc::new(GroupView {
        epoch: head.epoch,
        members: members.into(),
    });
    let mut map = views.views.lock().unwrap_or_else(|p| p.into_inner());
    if views.invalidations.load(std::sync::atomic::Ordering::SeqCst) == invalidations {
        if map.len() >= GROUP_VIEWS_MAX {
            map.clear();
        }
        map.insert(*group_id, view.clone());
    }
    Ok(Some(view))
}

/// Drops what this node holds of a group (its view and decoded state).
fn forget_group(state: &State, group: &GroupId) {
    state.group_views.invalidate(group);
    state.live_groups.remove(group);
}

/// `view`, or the group's view read again when the store's epoch is another: in a cluster,
/// another node may have committed since it was cached.
async fn view_as_stored(
    state: &State,
    group: &GroupId,
    who: &Authenticated,
    view: Arc<GroupView>,
) -> Result<Arc<GroupView>, ApiError> {
    let head = state.store.group_head(group).await?;
    if head.is_some_and(|head| head.epoch == view.epoch) {
        return Ok(view);
    }
    forget_group(state, group);
    member_view(state, group, who).await
}

/// Entries `first..=last` another node appended to `group`: after a commit this node's view
/// and decoded state of the group are stale, and the sessions here of its member devices
/// get the entries, read from the store, through the sequencer (so in log order with the
/// ones appended here). Devices whose membership the commit changed get a notice and fetch.
pub(crate) async fn appended_elsewhere(
    state: &State,
    group: GroupId,
    first: u64,
    last: u64,
    handshake: bool,
) {
    let before = state.group_views.cached(&group);
    if handshake {
        forget_group(state, &group);
    }
    let view = match group_view(state, &group).await {
        Ok(Some(view)) => view,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(error = %error.0, %group, "reading a group another node appended to failed");
            return;
        }
    };
    // A group the sequencer follows has sessions here; only for another does it take a
    // scan of its members (up to 10,000) to know whether anyone here is to be told.
    let followed = state.sequencer.next(&group);
    let connected = followed.is_some()
        || state.subscribers.any_connected(&view.members)
        || before
            .as_ref()
            .is_some_and(|before| state.subscribers.any_connected(&before.members));
    if !connected {
        // Nobody here to tell; this node's own appends to the group come from a session
        // of a member, so there are none to keep in order either.
        return;
    }
    // Entries before `next` went out already; those between `next` and `first` are this
    // node's own, appended and on their way (or hints lost, which the sequencer skips after
    // a while and devices fetch).
    let from = followed.map_or(first, |next| next.max(first)).max(1);
    if from > last {
        return;
    }
    let wanted = u32::try_from(last - from + 1).unwrap_or(u32::MAX);
    if wanted > state.config.limits.fetch_entries_max {
        // Too many to carry: a notice, and the devices fetch.
        state.subscribers.notify(
            &view.members,
            &Event::GroupAppended {
                group_id: group,
                seq: last,
            },
        );
        state.sequencer.advance(&state.subscribers, group, last + 1);
        return;
    }
    let (members, noticed): (Arc<[DeviceId]>, Vec<DeviceId>) = match (&before, handshake) {
        (_, false) => (view.members.clone(), Vec::new()),
        (Some(before), true) => {
            let stayed = view
                .members
                .iter()
                .filter(|d| before.is_member(d))
                .copied()
                .collect();
            let changed = view
                .members
                .iter()
                .filter(|d| !before.is_member(d))
                .chain(before.members.iter().filter(|d| !view.is_member(d)))
                .copied()
                .collect();
            (stayed, changed)
        }
        (None, true) => (Arc::from(Vec::new()), view.members.to_vec()),
    };
    let entries = match state.store.log_entries(&group, from - 1, wanted).await {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(%error, %group, "reading entries another node appended failed");
            return;
        }
    };
    for record in entries.into_iter().take_while(|e| e.seq <= last) {
        let ready = Ready {
            group_id: group,
            members: members.clone(),
            noticed: if record.seq == last {
                noticed.clone()
            } else {
                Vec::new()
            },
            entry: GroupEntry {
                seq: record.seq,
                sender: record.sender,
                message: record.message,
                server_time_unix_s: record.created_at_unix_s,
            },
        };
        state
            .sequencer
            .put(&state.subscribers, group, record.seq, Some(ready));
    }
}

fn not_a_member() -> ApiError {
    ApiError::new(ErrorCode::NotAMember, "this device is not a member of that group")
}

/// The group's view, for a device that is one of its current members.
async fn member_view(
    state: &State,
    group: &GroupId,
    who: &Authenticated,
) -> Result<Arc<GroupView>, ApiError> {
    let view = group_view(state, group).await?;
    if let Some(view) = view.as_ref().filter(|view| view.is_member(&who.device_id)) {
        return Ok(view.clone());
    }
    if state.cluster.is_shared() {
        // Added at another node, whose word may not have come yet: the store decides. Only
        // a commit changes members, and it moves the epoch: a view at the store's epoch is
        // current, and the refusal stands without dropping it (a device that is no member
        // must not make every refusal cost a reload of the group).
        if let Some(view) = &view
            && state
                .store
                .group_head(group)
                .await?
                .is_some_and(|head| head.epoch == view.epoch)
        {
            return Err(not_a_member());
        }
        state.group_views.invalidate(group);
        if let Some(view) = group_view(state, group)
            .await?
            .filter(|view| view.is_member(&who.device_id))
        {
            return Ok(view);
        }
    }
    Err(not_a_member())
}

/// Refuses devices that are not current members of the group.
pub(crate) async fn require_member(
    state: &State,
    group: &GroupId,
    who: &Authenticated,
) -> Result<(), ApiError> {
    member_view(state, group, who).await.map(|_| ())
}

/// Puts each group's new entries out to sessions in log order. Appends committed together
/// finish on several threads at once; without this their sessions would hear of them out
/// of order and each device would fetch the "gap". An entry waits only for earlier entries
/// that are committed and on their way: every sequence number appended is published or,
/// when its request fails after the append, given up ([`Publication`] on drop), so nothing
/// waits for ever. After a restart (or when the table is trimmed) a group starts from the
/// first entry published, and an earlier one arriving late goes out at once.
#[derive(Debug, Default)]
pub(crate) struct Sequencer(Mutex<HashMap<GroupId, GroupOrder>>);

#[derive(Debug)]
struct GroupOrder {
    next: u64,
    waiting: std::collections::BTreeMap<u64, Option<Ready>>,
    /// Since when an entry has been waiting for `next`.
    waiting_since: Option<std::time::Instant>,
}

/// How long entries wait for an earlier one before they go out without it. Every appended
/// entry is published or given up within its request, so this only matters if a request
/// vanished between its append and its publication; the devices then fetch the gap.
const SEQUENCE_GAP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// An entry ready to go out: to the member devices, and as a notice to `noticed` (devices
/// the entry's commit removed, which may read it but get no more entries, and devices whose
/// membership a commit on another node changed: they fetch, and the store says what they
/// may read).
#[derive(Debug)]
struct Ready {
    group_id: GroupId,
    members: Arc<[DeviceId]>,
    noticed: Vec<DeviceId>,
    entry: GroupEntry,
}

/// Groups the sequencer follows at most; past it, those with nothing waiting are dropped.
const SEQUENCED_GROUPS_MAX: usize = 100_000;

impl Sequencer {
    fn put(&self, subscribers: &Subscribers, group_id: GroupId, seq: u64, ready: Option<Ready>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SEQUENCED_GROUPS_MAX {
            map.retain(|_, order| !order.waiting.is_empty());
        }
        let order = map.entry(group_id).or_insert_with(|| GroupOrder {
            next: seq,
            waiting: std::collections::BTreeMap::new(),
            waiting_since: None,
        });
        if seq < order.next {
            if let Some(ready) = ready {
                ready.send(subscribers);
            }
            return;
        }
        order.waiting.insert(seq, ready);
        order.release(subscribers, std::time::Instant::now());
    }

    /// The next sequence number to go out for the group, when the sequencer follows it.
    fn next(&self, group: &GroupId) -> Option<u64> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(group)
            .map(|order| order.next)
    }

    /// Moves the group's next sequence number to at least `next` (entries before it were
    /// announced another way), sending what waited.
    fn advance(&self, subscribers: &Subscribers, group: GroupId, next: u64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(order) = map.get_mut(&group) {
            while let Some((&seq, _)) = order.waiting.first_key_value() {
                if seq >= next {
                    break;
                }
                if let Some(Some(ready)) = order.waiting.remove(&seq) {
                    ready.send(subscribers);
                }
            }
            order.next = order.next.max(next);
            order.release(subscribers, std::time::Instant::now());
        }
    }

    /// The groups followed.
    pub(crate) fn groups(&self) -> Vec<GroupId> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Sends what has waited too long for an entry that never came (called every second).
    pub(crate) fn sweep(&self, subscribers: &Subscribers) {
        let now = std::time::Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for order in map.values_mut().filter(|o| !o.waiting.is_empty()) {
            order.release(subscribers, now);
        }
    }
}

impl GroupOrder {
    /// Sends the waiting entries that follow `next`, skipping a gap older than
    /// [`SEQUENCE_GAP_WAIT`].
    fn release(&mut self, subscribers: &Subscribers, now: std::time::Instant) {
        loop {
            while let Some(ready) = self.waiting.remove(&self.next) {
                if let Some(ready) = ready {
                    ready.send(subscribers);
                }
                self.next += 1;
            }
            let Some(&first) = self.waiting.keys().next() else {
                self.waiting_since = None;
                return;
            };
            let since = *self.waiting_since.get_or_insert(now);
            if now.duration_since(since) < SEQUENCE_GAP_WAIT {
                return;
            }
            tracing::warn!(
                from = self.next,
                to = first - 1,
                "log entries never published; sending the ones after them"
            );
            self.next = first;
            self.waiting_since = None;
        }
    }
}

impl Ready {
    fn send(self, subscribers: &Subscribers) {
        if !self.noticed.is_empty() {
            subscribers.notify(
                &self.noticed,
                &Event::GroupAppended {
                    group_id: self.group_id,
                    seq: self.entry.seq,
                },
            );
        }
        subscribers.publish(&self.members, self.group_id, self.entry);
    }
}

/// A sequence number just appended, to publish; dropped unpublished, it is given up so
/// the entries after it do not wait for it.
struct Publication<'a> {
    state: &'a State,
    group_id: GroupId,
    seq: u64,
    done: bool,
}

impl<'a> Publication<'a> {
    /// For an entry just appended (and committed); other nodes hear of it too.
    fn new(state: &'a State, group_id: GroupId, seq: u64, handshake: bool) -> Self {
        state.cluster.tell(Hint::Appended {
            group: group_id,
            first: seq,
            last: seq,
            handshake,
        });
        Self {
            state,
            group_id,
            seq,
            done: false,
        }
    }

    fn publish(mut self, members: Arc<[DeviceId]>, noticed: Vec<DeviceId>, entry: GroupEntry) {
        self.done = true;
        let ready = Ready {
            group_id: self.group_id,
            members,
            noticed,
            entry,
        };
        self.state
            .sequencer
            .put(&self.state.subscribers, self.group_id, self.seq, Some(ready));
    }
}

impl Drop for Publication<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.state
                .sequencer
                .put(&self.state.subscribers, self.group_id, self.seq, None);
        }
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
    let mut view = member_view(state, &group_id, who).await?;
    let message = parse_message(&bytes)?;
    let handshake = matches!(
        message.description(),
        MlsMessageDescription::PublicProtocolMessage { .. }
    );
    let _commit_lock = if handshake {
        let lock = state.commit_locks.lock(group_id).await;
        // A commit may have finished while we waited: under the lock the view is current,
        // unless another node committed (then the store's epoch says so).
        view = member_view(state, &group_id, who).await?;
        if state.cluster.is_shared() {
            view = view_as_stored(state, &group_id, who, view).await?;
        }
        Some(lock)
    } else {
        None
    };
    // A handshake's transition, with the group's new state and member devices.
    let (transition, processed) = match message.description() {
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
            if epoch_id > view.epoch && state.cluster.is_shared() {
                // The group may have moved on at another node.
                view = view_as_stored(state, &group_id, who, view).await?;
            }
            if epoch_id > view.epoch || epoch_id + APPLICATION_EPOCH_LAG_MAX < view.epoch {
                return Err(ApiError::new(
                    ErrorCode::EpochConflict,
                    format!(
                        "message is for epoch {epoch_id}; the group is at epoch {}",
                        view.epoch
                    ),
                ));
            }
            (None, None)
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
            if epoch_id != view.epoch {
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
                        view.epoch
                    ),
                ));
            }
            let mut loaded = match state.live_groups.take(&group_id, view.epoch) {
                Some(loaded) => loaded,
                None => load_group(state, &group_id)
                    .await?
                    .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such group"))?,
            };
            // In a cluster, a proposal appended through another node leaves the epoch as it
            // was: a handshake the cached state refuses is tried once more on the stored one.
            let mut message = Some(message);
            let mut retried = false;
            let received = loop {
                let group = &mut loaded.group;
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
                let attempt = match message.take() {
                    Some(message) => message,
                    None => parse_message(&bytes)?,
                };
                match group.process_incoming_message(attempt) {
                    Ok(received) => break received,
                    Err(_) if state.cluster.is_shared() && !retried => {
                        retried = true;
                        forget_group(state, &group_id);
                        loaded = load_group(state, &group_id)
                            .await?
                            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such group"))?;
                        if loaded.group.group_context().epoch != view.epoch {
                            return Err(ApiError::new(
                                ErrorCode::EpochConflict,
                                "the group moved on at another node: fetch, process and retry",
                            ));
                        }
                    }
                    Err(e) => return Err(invalid(format!("handshake refused: {e}"))),
                }
            };
            let group = &mut loaded.group;
            let before: BTreeSet<DeviceId> = view.members.iter().copied().collect();
            let after = member_devices(state, group)?;
            let added: Vec<DeviceId> = after.difference(&before).copied().collect();
            let removed: Vec<DeviceId> = before.difference(&after).copied().collect();
            // Proposals are never replayed: the organisation's own could not be.
            let save_state = match received {
                ExternalReceivedMessage::Commit(_) => {
                    loaded.unsaved_handshakes + 1 >= SNAPSHOT_EVERY_HANDSHAKES
                }
                ExternalReceivedMessage::Proposal(_) if welcome.is_none() => true,
                _ => return Err(invalid("expected a commit or a proposal")),
            };
            if welcome.is_some() && added.is_empty() {
                return Err(invalid("a Welcome travels only with a commit that adds members"));
            }
            if let Some(welcome) = &welcome {
                let welcome = parse_message(welcome)?;
                if !matches!(welcome.description(), MlsMessageDescription::Welcome { .. }) {
                    return Err(invalid("the welcome field must hold a Welcome"));
                }
            }
            let transition = GroupTransition {
                expected_epoch: view.epoch,
                epoch: group.group_context().epoch,
                state: save_state.then(|| snapshot(group)).transpose()?,
                added,
                removed,
                welcome,
            };
            loaded.unsaved_handshakes = if save_state {
                0
            } else {
                loaded.unsaved_handshakes + 1
            };
            (Some(transition), Some((loaded, after)))
        }
        _ => return Err(invalid("expected a group message")),
    };

    // Taken after the handshake was validated (mls-rs checks added key packages' lifetimes
    // against the clock), so a replay at this time (`load_group`) checks them as of no
    // earlier than that.
    let entry_time = state.now();
    let entry = NewLogEntry {
        group: group_id,
        sender: who.device_id,
        client_message_id: client_message_id.0,
        message: &bytes,
        created_at_unix_s: entry_time,
    };
    let appended = state.store.append(&entry, transition.as_ref()).await.map_err(|e| match e {
        AppendError::EpochConflict { expected, current } => {
            // Another node committed first: what this node holds of the group is stale.
            forget_group(state, &group_id);
            ApiError::new(
            ErrorCode::EpochConflict,
            format!(
                "commit is for epoch {expected}; the group is at epoch {current}: fetch, process and retry"
            ),
        )
        }
        AppendError::UnknownGroup => ApiError::new(ErrorCode::NotFound, "no such group"),
        AppendError::Store(store) => map_store(store),
        other => {
            tracing::error!(error = %other, "append failed");
            ApiError::new(ErrorCode::Internal, "internal server error; nothing was changed")
        }
    })?;
    if !appended.duplicate {
        let publication = Publication::new(state, group_id, appended.seq, transition.is_some());
        let entry = GroupEntry {
            seq: appended.seq,
            sender: who.device_id,
            message: bytes,
            server_time_unix_s: entry_time,
        };
        match (transition, processed) {
            (Some(t), Some((loaded, after))) => {
                let members: Arc<[DeviceId]> = after.into_iter().collect();
                state.group_views.replace(
                    group_id,
                    GroupView {
                        epoch: t.epoch,
                        members: members.clone(),
                    },
                );
                state.live_groups.put(group_id, t.epoch, loaded);
                // Removed devices hear of the commit that removed them too.
                publication.publish(members, t.removed, entry);
                if t.welcome.is_some() {
                    announce(
                        state,
                        Hint::Notify {
                            devices: t.added,
                            event: Event::InboxChanged,
                        },
                    );
                }
            }
            _ => publication.publish(Arc::clone(&view.members), Vec::new(), entry),
        }
    }
    Ok((appended.seq, appended.duplicate))
}

fn mls_time(unix_s: i64) -> mls_rs::time::MlsTime {
    mls_rs::time::MlsTime::from(u64::try_from(unix_s).unwrap_or(0))
}

/// The group's public state: the stored one with the handshakes after it replayed, which
/// must bring it to the store's epoch. `None` when there is no such group. Called under
/// the group's commit lock, so no handshake is appended between the two reads.
async fn load_group(state: &State, group_id: &GroupId) -> Result<Option<LoadedGroup>, ApiError> {
    let Some(record) = state.store.group(group_id).await? else {
        return Ok(None);
    };
    let unusable = |what: &str, error: &dyn std::fmt::Display| {
        tracing::error!(%group_id, %error, "stored group state {what}");
        ApiError::new(ErrorCode::Internal, "internal server error; nothing was changed")
    };
    let snapshot = ExternalSnapshot::from_bytes(&record.state).map_err(|e| unusable("unreadable", &e))?;
    let mut group = state
        .external
        .load_group(snapshot)
        .map_err(|e| unusable("unusable", &e))?;
    let handshakes = state.store.handshakes_after(group_id, record.state_seq).await?;
    let unsaved_handshakes = handshakes.len() as u64;
    // Each as of when it was appended: validated then, it must not fail now because an
    // added key package has expired since.
    for handshake in handshakes {
        let message = MlsMessage::from_bytes(&handshake.message).map_err(|e| unusable("unreadable", &e))?;
        group
            .process_incoming_message_with_time(message, mls_time(handshake.created_at_unix_s))
            .map_err(|e| unusable("cannot replay its log", &e))?;
    }
    if group.group_context().epoch != record.epoch {
        let error = format!(
            "replayed to epoch {}, stored epoch {}",
            group.group_context().epoch,
            record.epoch
        );
        return Err(unusable("disagrees with its log", &error));
    }
    Ok(Some(LoadedGroup {
        group,
        unsaved_handshakes,
    }))
}

/// As the organisation (the groups' external sender), proposes removing `device` from
/// every group it belongs to. Members commit the proposals on their next sync; the commit
/// ends the device's membership. Returns how many groups got a proposal.
pub(crate) async fn propose_device_removal(state: &State, device: &DeviceId) -> Result<usize, ApiError> {
    let mut proposed = 0;
    for (group_id, _, _) in state.store.device_groups(device).await? {
        // The proposal changes the group's state: no commit may read it meanwhile.
        let _commit_lock = state.commit_locks.lock(group_id).await;
        state.live_groups.take(&group_id, u64::MAX);
        // A concurrent commit may move the epoch under us: retry on the fresh state.
        for _ in 0..8 {
            let Some(LoadedGroup { mut group, .. }) = load_group(state, &group_id).await? else {
                break;
            };
            let epoch = group.group_context().epoch;
            let Some(index) = group
                .roster()
                .members_iter()
                .find(|m| state.identity.member_device_id(&m.signing_identity).ok() == Some(*device))
                .map(|m| m.index)
            else {
                break;
            };
            let proposal = group.propose_remove(index, Vec::new()).map_err(invalid)?;
            let message = proposal.to_bytes().map_err(invalid)?;
            let mut client_message_id = [0; 16];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut client_message_id);
            let entry = NewLogEntry {
                group: group_id,
                sender: DeviceId::ORGANISATION,
                client_message_id,
                message: &message,
                created_at_unix_s: state.now(),
            };
            let transition = GroupTransition {
                expected_epoch: epoch,
                epoch,
                state: Some(snapshot(&group)?),
                added: Vec::new(),
                removed: Vec::new(),
                welcome: None,
            };
            let appended = state.store.append(&entry, Some(&transition)).await;
            state.group_views.invalidate(&group_id);
            match appended {
                Ok(appended) => {
                    let publication = Publication::new(state, group_id, appended.seq, true);
                    let members = state.store.group_members(&group_id).await?;
                    let entry = GroupEntry {
                        seq: appended.seq,
                        sender: DeviceId::ORGANISATION,
                        message: message.clone(),
                        server_time_unix_s: entry.created_at_unix_s,
                    };
                    publication.publish(members.into(), Vec::new(), entry);
                    tracing::info!(group_id = %group_id, device_id = %device, "proposed removing device");
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
    // The head only: the group's state can be several MB, and every catching-up device fetches.
    let head = state
        .store
        .group_head(&group_id)
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
    let last_seq = membership.removed_seq.unwrap_or(head.last_seq);
    Ok((entries, last_seq))
}

pub(crate) async fn ack(
    state: &State,
    who: &Authenticated,
    group_id: GroupId,
    seq: u64,
) -> Result<(), ApiError> {
    // Current members are in the group's view; removed ones may still acknowledge what
    // they were allowed to read.
    let current = group_view(state, &group_id)
        .await?
        .is_some_and(|view| view.is_member(&who.device_id));
    if !current && state.store.membership(&group_id, &who.device_id).await?.is_none() {
        return Err(not_a_member());
    }
    state.pending.acks.record((group_id, who.device_id), seq);
    Ok(())
}

/// Deletes log entries every member device has acknowledged, and any older than the
/// retention limit.
pub(crate) async fn prune(state: &State) -> Result<u64, redoubt_store::StoreError> {
    crate::pending::flush_acks(state).await?;
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
        .map(|(group_id, head, membership)| GroupSummary {
            group_id,
            epoch: head.epoch,
            last_seq: head.last_seq,
            joined_seq: membership.joined_seq,
        })
        .collect())
}

pub(crate) async fn inbox(state: &State, who: &Authenticated) -> Result<Vec<InboxItem>, ApiError> {
    let mut items = Vec::new();
    for i in state.store.inbox(&who.device_id).await? {
        let transfer = state.store.transfer_group(&i.group).await?.is_some();
        items.push(InboxItem {
            id: i.id,
            group_id: i.group,
            welcome: i.welcome,
            joined_seq: i.joined_seq,
            transfer,
        });
    }
    Ok(items)
}

pub(crate) async fn inbox_ack(state: &State, who: &Authenticated, ids: Vec<u64>) -> Result<(), ApiError> {
    Ok(state.store.inbox_ack(&who.device_id, &ids).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, bytes: usize) -> Arc<GroupEntry> {
        Arc::new(GroupEntry {
            seq,
            sender: DeviceId::from([7; 16]),
            message: vec![seq as u8; bytes],
            server_time_unix_s: 0,
        })
    }

    async fn next(queue: &Queue) -> Event {
        match queue.next().await {
            Some(Push::Event(event)) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn seqs(event: &Event) -> Vec<u64> {
        match event {
            Event::GroupEntries { entries, .. } => entries.iter().map(|e| e.seq).collect(),
            other => panic!("expected entries, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn entries_queued_together_go_out_in_one_event_in_order() {
        let queue = Queue::new(4, 64 * 1024);
        let (a, b) = (GroupId::from([1; 32]), GroupId::from([2; 32]));
        // Appends finishing together can be queued out of order, and twice.
        for seq in [3, 1, 2, 2] {
            queue.push_entry(a, &entry(seq, 100));
        }
        queue.push_entry(b, &entry(9, 100));
        assert_eq!(seqs(&next(&queue).await), [1, 2, 3]);
        assert_eq!(seqs(&next(&queue).await), [9]);
        let state = queue.state.lock().unwrap();
        assert_eq!(state.inline_bytes, 0, "every byte held is released when sent");
        assert!(state.groups.is_empty() && state.order.is_empty());
    }

    #[tokio::test]
    async fn past_the_byte_limit_a_group_gets_a_notice_and_others_still_get_entries() {
        let queue = Queue::new(4, 1_000);
        let (a, b) = (GroupId::from([1; 32]), GroupId::from([2; 32]));
        queue.push_entry(a, &entry(1, 400));
        queue.push_entry(a, &entry(2, 400));
        // The third does not fit: the group's entries give way to a notice of the newest.
        queue.push_entry(a, &entry(3, 400));
        queue.push_entry(a, &entry(4, 10));
        // The bytes freed are free for another group.
        queue.push_entry(b, &entry(5, 400));
        assert_eq!(next(&queue).await, Event::GroupAppended { group_id: a, seq: 4 });
        assert_eq!(seqs(&next(&queue).await), [5]);
        assert_eq!(queue.state.lock().unwrap().inline_bytes, 0);
    }

    #[tokio::test]
    async fn a_notice_beyond_the_entries_held_makes_the_device_fetch() {
        let queue = Queue::new(4, 64 * 1024);
        let a = GroupId::from([1; 32]);
        queue.push_entry(a, &entry(1, 10));
        assert!(queue.push(Push::Event(Event::GroupAppended { group_id: a, seq: 2 })));
        assert_eq!(next(&queue).await, Event::GroupAppended { group_id: a, seq: 2 });
    }

    fn ready(group_id: GroupId, device: DeviceId, seq: u64) -> Option<Ready> {
        Some(Ready {
            group_id,
            members: Arc::from([device]),
            noticed: Vec::new(),
            entry: GroupEntry::clone(&entry(seq, 10)),
        })
    }

    #[tokio::test]
    async fn entries_go_out_in_log_order_and_one_given_up_holds_nothing() {
        let subscribers = Subscribers::default();
        let sequencer = Sequencer::default();
        let device = DeviceId::from([3; 16]);
        let group = GroupId::from([1; 32]);
        let (_, queue) = subscribers.subscribe(device, 4, 64 * 1024);
        sequencer.put(&subscribers, group, 5, ready(group, device, 5));
        assert_eq!(seqs(&next(&queue).await), [5]);
        // 7 finished before 6: it waits for it.
        sequencer.put(&subscribers, group, 7, ready(group, device, 7));
        assert!(queue.state.lock().unwrap().order.is_empty(), "7 must wait for 6");
        sequencer.put(&subscribers, group, 6, ready(group, device, 6));
        assert_eq!(seqs(&next(&queue).await), [6, 7]);
        // 8's request failed after its append: 9 does not wait for it.
        sequencer.put(&subscribers, group, 9, ready(group, device, 9));
        sequencer.put(&subscribers, group, 8, None);
        assert_eq!(seqs(&next(&queue).await), [9]);
        // 10 never comes (its request vanished after its append): 11 goes out once it has
        // waited SEQUENCE_GAP_WAIT, at the next sweep.
        sequencer.put(&subscribers, group, 11, ready(group, device, 11));
        sequencer.sweep(&subscribers);
        assert!(
            queue.state.lock().unwrap().order.is_empty(),
            "11 waits for 10 a while"
        );
        {
            let mut map = sequencer.0.lock().unwrap();
            let order = map.get_mut(&group).unwrap();
            order.waiting_since = Some(std::time::Instant::now() - SEQUENCE_GAP_WAIT);
        }
        sequencer.sweep(&subscribers);
        assert_eq!(seqs(&next(&queue).await), [11]);
        // One from before the sequencer's start goes out at once.
        sequencer.put(&subscribers, group, 2, ready(group, device, 2));
        assert_eq!(seqs(&next(&queue).await), [2]);
    }

    #[tokio::test]
    async fn other_pushes_overflow_and_close_the_session() {
        let queue = Queue::new(1, 64 * 1024);
        assert!(queue.push(Push::Event(Event::InboxChanged)));
        assert!(!queue.push(Push::Event(Event::InboxChanged)));
        assert!(queue.next().await.is_none());
    }
}
