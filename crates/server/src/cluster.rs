//! Several server nodes over one database.
//!
//! Every node is the whole server; what they share is the store, where every decision that
//! must be made once is made under the database's guarantee (a commit is appended only for
//! the group's current epoch, sequence numbers are taken under the group row's lock, a
//! lease has one holder). What a node keeps in memory is a cache or a wake-up:
//!
//! - Each node announces itself in `cluster_nodes` every [`HEARTBEAT`] (sessions open, public
//!   address); `Hello` lists the live nodes' addresses, which devices keep for failover.
//! - What one node does that sessions on other nodes must hear of — entries appended to a
//!   group, a Welcome, a command, a policy change, a revocation — goes out as a [`Hint`] on
//!   the store's [`Bus`] *after* it is committed, batched (one message per batch). A node
//!   that hears of an append reads the entries from the store and pushes them to its own
//!   sessions; a commit made elsewhere drops its cached view and decoded state of that
//!   group. A hint lost (the bus reconnected) delays and never loses: devices read after
//!   their cursor, and after a [`BusEvent::Gap`] the node re-reads what it follows.
//!
//! With SQLite there is one node and no bus: hints go nowhere.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redoubt_proto::{ClusterNode, DeviceId, Event, GroupId, NodeState, ServerAddress};
use redoubt_store::{BUS_MESSAGE_BYTES_MAX, Bus, BusEvent, NodeRecord};
use serde::{Deserialize, Serialize};

use crate::State;
use crate::api::Authenticated;
use crate::error::ApiError;
use crate::management::{Permission, require};

/// How often a node records that it is alive.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);

/// A node silent for this long is left out of `Hello` (it may be dead).
const NODE_SILENT_S: i64 = 20;

/// Nodes not heard of for this long are deleted from the table.
const NODE_FORGOTTEN_S: i64 = 24 * 3600;

/// Hints waiting to go out at most; past it new ones are dropped (they are hints: devices
/// still find everything after their cursor).
const OUTBOX_MAX: usize = 65_536;

/// Addresses listed in `Hello` at most.
pub(crate) const NODE_ADDRESSES_MAX: usize = 32;

/// Something other nodes should act on, already committed to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Hint {
    /// Entries `first..=last` were appended to the group; `handshake` when one of them
    /// changed its epoch or members.
    Appended {
        group: GroupId,
        first: u64,
        last: u64,
        handshake: bool,
    },
    /// An event for these devices' sessions (a Welcome waiting, a command, a device ready).
    Notify {
        devices: Vec<DeviceId>,
        event: Event,
    },
    PolicyChanged {
        version: u64,
    },
    WipePending {
        device: DeviceId,
        pending: bool,
    },
    /// The device was revoked: close its sessions.
    Revoked {
        device: DeviceId,
    },
    /// Mail settings changed (the connector runs on one node).
    MailChanged,
    /// A device published key packages (the connector adds it to its mailbox group).
    DevicesChanged,
    /// The sender lost hints (its outbox overflowed, or the bus refused them): look at
    /// everything again, as after a [`BusEvent::Gap`].
    Resync,
    /// The key directory published an epoch.
    KtEpoch {
        epoch: u64,
    },
}

/// Devices named in one `Notify` hint at most, so that each fits a bus message.
const NOTIFY_DEVICES_MAX: usize = 100;

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    node: String,
    hints: Vec<Hint>,
}

/// This node, and its link to the others.
pub(crate) struct Cluster {
    pub(crate) node_id: String,
    pub(crate) started_at_unix_s: i64,
    bus: Option<Arc<dyn Bus>>,
    outbox: Option<tokio::sync::mpsc::Sender<Hint>>,
    /// Hints were lost on their way out: the other nodes are told to resync.
    lost: std::sync::atomic::AtomicBool,
    outbox_receiver: Mutex<Option<tokio::sync::mpsc::Receiver<Hint>>>,
    /// The live nodes' public addresses, for `Hello`.
    addresses: Mutex<Arc<[ServerAddress]>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("shared", &self.bus.is_some())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    pub(crate) fn new(bus: Option<Arc<dyn Bus>>, own_address: ServerAddress, now_unix_s: i64) -> Self {
        let mut id = [0u8; 6];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        let node_id = id.iter().map(|b| format!("{b:02x}")).collect();
        let (outbox, receiver) = match bus {
            Some(_) => {
                let (sender, receiver) = tokio::sync::mpsc::channel(OUTBOX_MAX);
                (Some(sender), Some(receiver))
            }
            None => (None, None),
        };
        Self {
            node_id,
            started_at_unix_s: now_unix_s,
            bus,
            outbox,
            lost: std::sync::atomic::AtomicBool::new(false),
            outbox_receiver: Mutex::new(receiver),
            addresses: Mutex::new(Arc::from(vec![own_address])),
        }
    }

    /// Whether other nodes may write to the same store (so cached state can be stale).
    pub(crate) fn is_shared(&self) -> bool {
        self.bus.is_some()
    }

    /// The live nodes' addresses (this one included).
    pub(crate) fn addresses(&self) -> Arc<[ServerAddress]> {
        self.addresses.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Tells the other nodes (nothing without a bus).
    pub(crate) fn tell(&self, hint: Hint) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        let hints = match hint {
            Hint::Notify { devices, event } if devices.len() > NOTIFY_DEVICES_MAX => devices
                .chunks(NOTIFY_DEVICES_MAX)
                .map(|chunk| Hint::Notify {
                    devices: chunk.to_vec(),
                    event: event.clone(),
                })
                .collect(),
            hint => vec![hint],
        };
        for hint in hints {
            if outbox.try_send(hint).is_err() {
                self.lose("cluster hints are not going out fast enough; the other nodes will resync");
            }
        }
    }

    /// Records that hints were lost (warning once until the others are told to resync).
    fn lose(&self, why: &str) {
        if !self.lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tracing::warn!("{why}");
        }
    }
}

/// Acts on `hint` here and tells the other nodes: what a node does when it makes a change
/// that sessions anywhere must hear of.
pub(crate) fn announce(state: &State, hint: Hint) {
    apply(state, &hint);
    state.cluster.tell(hint);
}

/// What a hint means for this node's sessions and caches. Appends are not handled here:
/// local ones are published as they are made, remote ones read from the store.
fn apply(state: &State, hint: &Hint) {
    match hint {
        Hint::Appended { .. } => {}
        Hint::Notify { devices, event } => state.subscribers.notify(devices, event),
        Hint::PolicyChanged { version } => {
            state
                .policy_version
                .fetch_max(*version, std::sync::atomic::Ordering::SeqCst);
            state
                .subscribers
                .notify_all(&Event::PolicyChanged { version: *version });
            // Mail settings (how many days, how much text first) come from the policy.
            state.mail.notify();
        }
        Hint::WipePending { device, pending } => state.wipe_pending(*device, *pending),
        Hint::Revoked { device } => {
            state.wipe_pending(*device, false);
            state.subscribers.disconnect(device, "device revoked");
        }
        Hint::MailChanged => state.mail.notify(),
        Hint::DevicesChanged => state.mail.devices_changed(),
        // Handled by the listener (it reads the store).
        Hint::Resync => {}
        Hint::KtEpoch { epoch } => {
            state.kt.note_published(*epoch);
            state.subscribers.notify_all(&Event::KtEpoch { epoch: *epoch });
        }
    }
}

/// `AdminClusterList`: every node recorded, with its state as of now.
pub(crate) async fn list(state: &State, who: &Authenticated) -> Result<Vec<ClusterNode>, ApiError> {
    require(state, who, Permission::ViewCluster).await?;
    let now = state.now();
    Ok(state
        .store
        .nodes(now - NODE_FORGOTTEN_S)
        .await?
        .into_iter()
        .map(|node| ClusterNode {
            state: if node.stopped {
                NodeState::Stopped
            } else if node.heartbeat_at_unix_s >= now - NODE_SILENT_S {
                NodeState::Up
            } else {
                NodeState::Silent
            },
            id: node.id,
            public_address: node.public_address,
            sessions: node.sessions,
            started_at_unix_s: node.started_at_unix_s,
            heartbeat_at_unix_s: node.heartbeat_at_unix_s,
        })
        .collect())
}

/// Runs the node's cluster duties until `stop`: heartbeats always; with a bus, sending
/// hints out and acting on other nodes'.
pub(crate) async fn run(state: Arc<State>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let outgoing = state
        .cluster
        .outbox_receiver
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let sending = outgoing.map(|receiver| tokio::spawn(send_hints(state.clone(), receiver)));
    let listening = state
        .cluster
        .bus
        .clone()
        .map(|bus| tokio::spawn(listen(state.clone(), bus)));
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick() => heartbeat(&state, false).await,
            _ = stop.changed() => break,
        }
    }
    heartbeat(&state, true).await;
    for task in [sending, listening].into_iter().flatten() {
        task.abort();
    }
}

async fn heartbeat(state: &State, stopped: bool) {
    if state.cluster.is_shared() && !stopped {
        refresh_shared_state(state).await;
        if state.cluster.lost.load(std::sync::atomic::Ordering::SeqCst) {
            // Nothing else is going out to carry the resync.
            state.cluster.tell(Hint::Resync);
        }
    }
    let now = state.now();
    let node = NodeRecord {
        id: state.cluster.node_id.clone(),
        public_address: state.public_address.to_string(),
        sessions: state.subscribers.sessions() as u64,
        started_at_unix_s: state.cluster.started_at_unix_s,
        heartbeat_at_unix_s: now,
        stopped,
    };
    if let Err(error) = state.store.node_heartbeat(&node).await {
        tracing::warn!(%error, "recording this node's heartbeat failed");
        return;
    }
    match state.store.nodes(now - NODE_FORGOTTEN_S).await {
        Ok(nodes) => {
            let mut addresses: Vec<ServerAddress> = nodes
                .iter()
                .filter(|n| !n.stopped && n.heartbeat_at_unix_s >= now - NODE_SILENT_S)
                .filter_map(|n| ServerAddress::parse(&n.public_address).ok())
                .collect();
            if !stopped && !addresses.contains(&state.public_address) {
                addresses.push(state.public_address.clone());
            }
            addresses.sort_by_key(|a| a.to_string());
            addresses.dedup();
            addresses.truncate(NODE_ADDRESSES_MAX);
            *state.cluster.addresses.lock().unwrap_or_else(|p| p.into_inner()) = addresses.into();
        }
        Err(error) => tracing::warn!(%error, "reading the cluster's nodes failed"),
    }
}

/// Sends hints in batches: whatever queued up while the previous message was on its way
/// goes in the next (appends to one group merged), so under load one `NOTIFY` carries many.
async fn send_hints(state: Arc<State>, mut receiver: tokio::sync::mpsc::Receiver<Hint>) {
    let Some(bus) = state.cluster.bus.clone() else {
        return;
    };
    let mut batch = Vec::new();
    while receiver.recv_many(&mut batch, 4_096).await > 0 {
        let mut hints = merge(std::mem::take(&mut batch));
        // One resync a message at most: the heartbeat's own (sent to carry the flag when
        // nothing else goes out) already counts.
        if state
            .cluster
            .lost
            .swap(false, std::sync::atomic::Ordering::SeqCst)
            && !hints.iter().any(|hint| matches!(hint, Hint::Resync))
        {
            hints.push(Hint::Resync);
        }
        for message in encode(&state.cluster.node_id, hints) {
            if let Err(error) = bus.publish(&message).await {
                // Devices on other nodes find the entries at their next read; the other
                // nodes are told to look again once the bus works.
                state
                    .cluster
                    .lose(&format!("telling the other nodes failed: {error}"));
            }
        }
    }
}

/// Merges the appends to each group into one hint, keeping everything else in order.
fn merge(hints: Vec<Hint>) -> Vec<Hint> {
    let mut merged: Vec<Hint> = Vec::with_capacity(hints.len());
    let mut appended_at: std::collections::HashMap<GroupId, usize> = std::collections::HashMap::new();
    for hint in hints {
        if let Hint::Appended {
            group,
            first,
            last,
            handshake,
        } = &hint
        {
            if let Some(&at) = appended_at.get(group) {
                if let Hint::Appended {
                    first: f,
                    last: l,
                    handshake: h,
                    ..
                } = &mut merged[at]
                {
                    *f = (*f).min(*first);
                    *l = (*l).max(*last);
                    *h |= *handshake;
                }
                continue;
            }
            appended_at.insert(*group, merged.len());
        }
        merged.push(hint);
    }
    merged
}

/// Splits hints into messages of at most [`BUS_MESSAGE_BYTES_MAX`] bytes.
fn encode(node: &str, hints: Vec<Hint>) -> Vec<Vec<u8>> {
    // An envelope is the node's name, the number of hints (a varint) and the hints.
    let overhead = node.len() + 16;
    let mut messages = Vec::new();
    let mut envelope = Envelope {
        node: node.to_owned(),
        hints: Vec::new(),
    };
    let mut size = overhead;
    for hint in hints {
        let Ok(bytes) = postcard::to_stdvec(&hint) else {
            continue;
        };
        if overhead + bytes.len() > BUS_MESSAGE_BYTES_MAX {
            // One hint too large for the bus (a huge device list): its devices find out
            // at their next read.
            tracing::warn!("a cluster hint is too large to send; dropped");
            continue;
        }
        if size + bytes.len() > BUS_MESSAGE_BYTES_MAX {
            messages.extend(postcard::to_stdvec(&envelope).ok());
            envelope.hints.clear();
            size = overhead;
        }
        size += bytes.len();
        envelope.hints.push(hint);
    }
    if !envelope.hints.is_empty() {
        messages.extend(postcard::to_stdvec(&envelope).ok());
    }
    messages
}

/// Acts on other nodes' hints until the bus closes.
async fn listen(state: Arc<State>, bus: Arc<dyn Bus>) {
    loop {
        match bus.next().await {
            Ok(BusEvent::Message(bytes)) => {
                let Ok(envelope) = postcard::from_bytes::<Envelope>(&bytes) else {
                    tracing::warn!("an unreadable cluster hint; ignored");
                    continue;
                };
                if envelope.node == state.cluster.node_id {
                    continue;
                }
                for hint in envelope.hints {
                    if hint == Hint::Resync {
                        tracing::info!(node = %envelope.node, "another node lost hints; looking at everything again");
                        tokio::spawn(catch_up(state.clone()));
                        continue;
                    }
                    if let Hint::Appended {
                        group,
                        first,
                        last,
                        handshake,
                    } = hint
                    {
                        crate::delivery::appended_elsewhere(&state, group, first, last, handshake).await;
                    } else {
                        apply(&state, &hint);
                    }
                }
            }
            Ok(BusEvent::Gap) => {
                tracing::info!("the cluster bus reconnected; looking at everything again");
                tokio::spawn(catch_up(state.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, "the cluster bus closed");
                return;
            }
        }
    }
}

/// What a node keeps of the shared state besides groups, read again from the store (at
/// every heartbeat, so a lost hint costs at most one heartbeat): the policy version and
/// the devices with a wipe waiting.
async fn refresh_shared_state(state: &State) {
    if let Ok(version) = state.store.policy_version().await
        && version > state.policy_version()
    {
        apply(state, &Hint::PolicyChanged { version });
    }
    if let Ok(commands) = state.store.commands(None, true).await {
        let waiting: std::collections::HashSet<DeviceId> = commands
            .into_iter()
            .filter(|c| c.kind == redoubt_proto::CommandKind::Wipe)
            .map(|c| c.device)
            .collect();
        *state.wipes_pending.lock().unwrap_or_else(|p| p.into_inner()) = waiting;
    }
}

/// After lost hints: drop every cached group state, push what was appended meanwhile to
/// the groups this node follows, pick up the policy version and waiting wipes, and close
/// the sessions of devices revoked meanwhile.
async fn catch_up(state: Arc<State>) {
    state.group_views.clear();
    state.live_groups.clear();
    refresh_shared_state(&state).await;
    if let Ok(devices) = state.store.list_devices(None).await {
        for device in devices.iter().filter(|d| d.revoked_at_unix_s.is_some()) {
            state.subscribers.disconnect(&device.id, "device revoked");
        }
    }
    for group in state.sequencer.groups() {
        if let Ok(Some(head)) = state.store.group_head(&group).await {
            crate::delivery::appended_elsewhere(&state, group, 1, head.last_seq, true).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appended(group: u8, first: u64, last: u64, handshake: bool) -> Hint {
        Hint::Appended {
            group: GroupId::from([group; 32]),
            first,
            last,
            handshake,
        }
    }

    #[test]
    fn appends_to_a_group_merge_and_other_hints_keep_their_order() {
        let merged = merge(vec![
            appended(1, 5, 5, false),
            Hint::MailChanged,
            appended(2, 9, 9, false),
            appended(1, 6, 8, true),
            Hint::DevicesChanged,
        ]);
        assert_eq!(
            merged,
            vec![
                appended(1, 5, 8, true),
                Hint::MailChanged,
                appended(2, 9, 9, false),
                Hint::DevicesChanged,
            ]
        );
    }

    #[test]
    fn messages_stay_under_the_bus_limit_and_lose_nothing() {
        let hints: Vec<Hint> = (0..2_000u64)
            .map(|i| appended((i % 251) as u8, i, i, false))
            .collect();
        let messages = encode("node-a", hints.clone());
        assert!(messages.len() > 1);
        let mut decoded = Vec::new();
        for message in &messages {
            assert!(message.len() <= BUS_MESSAGE_BYTES_MAX);
            let envelope: Envelope = postcard::from_bytes(message).unwrap();
            assert_eq!(envelope.node, "node-a");
            decoded.extend(envelope.hints);
        }
        assert_eq!(decoded, hints);
    }
}
