//! Message load: groups of simulated devices, application messages encrypted ahead of the
//! timed window, submitted with many in flight, and every member device reading every
//! message from the server.
//!
//! What "a receiver has the message" means here: the entry's ciphertext arrived, in a
//! `GroupEntries` event (the server pushes new entries to sessions keeping up) or, after a
//! gap or a `GroupAppended` notice, in the answer to a `GroupFetch` after its cursor; then it
//! acknowledges its cursor with `GroupAck`, as the device library does after a sync. Receivers do not decrypt during the timed window: with 20 receivers, MLS
//! decryption and signature checks on the load generator's two cores would measure the
//! generator, not the server. After the window, one member decrypts the whole log to prove
//! the ciphertexts were real MLS messages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use mls_rs::group::ReceivedMessage;
use mls_rs::{ExtensionList, Group, MlsMessage};
use rand_core::{OsRng, RngCore};
use redoubt_client::WsMessage as Message;
use redoubt_mls::AppBody;
use redoubt_proto::{
    Bytes, DeviceId, Event, GroupEntry, GroupId, GroupSubmit, Request, Response, ServerFrame,
};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::device::{Device, MlsConfig, Org};
use crate::target::{Meter, Usage};
use crate::wire::{self, Reader, Writer};

/// Members added per commit while building a group: each commit then stays far below the
/// server's default 64 KiB frame limit (a key package is about 500 bytes).
const ADD_BATCH: usize = 100;
/// Groups whose set-up commit carries a Welcome (stored once per added device); larger
/// groups skip it, since their passive members never join (it would cost the server
/// members × tree size of inbox rows).
pub const WELCOME_MEMBERS_MAX: usize = 256;
/// Request ids of submissions: message index + this; lower ids are fetches and acks.
const SUBMIT_ID_BASE: u64 = 1 << 40;
/// Log entries asked for per fetch (the server's default maximum).
const FETCH_LIMIT: u32 = 500;

pub fn random_id() -> Bytes<16> {
    let mut id = [0; 16];
    OsRng.fill_bytes(&mut id);
    Bytes(id)
}

/// Who is in a group and who sends to it; `members[0]` creates it.
#[derive(Debug, Clone)]
pub struct GroupPlan {
    pub members: Vec<usize>,
    pub senders: Vec<usize>,
}

/// A group on the server, with the MLS state of its sending members.
pub struct LiveGroup {
    pub id: GroupId,
    pub members: Vec<usize>,
    pub states: Vec<(usize, Group<MlsConfig>)>,
    /// The log's last entry once set up; the load's messages follow it.
    pub last_seq: u64,
    pub welcome_stored: bool,
}

impl std::fmt::Debug for LiveGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveGroup")
            .field("id", &self.id)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

/// Creates the group on the server with `creator` as its only member.
pub async fn create_group(
    org: &Org,
    creator: &Device,
    conn: &mut wire::Conn,
) -> Result<(GroupId, Group<MlsConfig>)> {
    let mut context = ExtensionList::new();
    context.set_from(mls_rs::extension::built_in::ExternalSendersExt::new(vec![
        redoubt_mls::org_external_sender(&org.org_key),
    ]))?;
    let group = creator.mls.create_group(context, ExtensionList::new(), None)?;
    let group_info = group.group_info_message(true)?.to_bytes()?;
    let Response::GroupCreated { group_id } = conn.call(Request::GroupCreate { group_info }).await? else {
        bail!("unexpected answer to GroupCreate");
    };
    Ok((group_id, group))
}

/// Submits one MLS message and returns its sequence number.
pub async fn submit(
    conn: &mut wire::Conn,
    group_id: GroupId,
    message: Vec<u8>,
    welcome: Option<Vec<u8>>,
) -> Result<u64> {
    let request = Request::GroupSubmit(GroupSubmit {
        group_id,
        client_message_id: random_id(),
        message,
        welcome,
    });
    match conn.call(request).await? {
        Response::Submitted { seq, .. } => Ok(seq),
        other => bail!("unexpected answer to GroupSubmit: {other:?}"),
    }
}

/// Builds a group: created by `members[0]`, the others added in commits of [`ADD_BATCH`];
/// senders join from the Welcome and follow later commits.
pub async fn setup_group(org: &Org, devices: &[Device], plan: &GroupPlan) -> Result<LiveGroup> {
    let creator = plan.members[0];
    let (mut conn, _) = devices[creator].authenticate(org, None).await?;
    let (group_id, mut group) = create_group(org, &devices[creator], &mut conn).await?;
    let welcome_stored = plan.members.len() <= WELCOME_MEMBERS_MAX;
    let mut joined: Vec<(usize, Group<MlsConfig>)> = Vec::new();
    let mut last_seq = 0;
    for batch in plan.members[1..].chunks(ADD_BATCH) {
        let mut builder = group.commit_builder();
        for &member in batch {
            builder = builder.add_member(devices[member].key_package()?)?;
        }
        let output = builder.build()?;
        let commit = output.commit_message.to_bytes()?;
        let welcome = output.welcome_messages.first().cloned();
        let stored = match (&welcome, welcome_stored) {
            (Some(w), true) => Some(w.to_bytes()?),
            _ => None,
        };
        last_seq = submit(&mut conn, group_id, commit.clone(), stored).await?;
        group.apply_pending_commit()?;
        for (_, state) in joined.iter_mut() {
            state.process_incoming_message(MlsMessage::from_bytes(&commit)?)?;
        }
        for &member in batch {
            if plan.senders.contains(&member) {
                let welcome = welcome
                    .as_ref()
                    .ok_or_else(|| anyhow!("a commit adding members made no Welcome"))?;
                let (state, _) = devices[member].mls.join_group(None, welcome, None)?;
                joined.push((member, state));
            }
        }
    }
    conn.close().await;
    let mut states = Vec::new();
    if plan.senders.contains(&creator) {
        states.push((creator, group));
    }
    states.extend(joined);
    Ok(LiveGroup {
        id: group_id,
        members: plan.members.clone(),
        states,
        last_seq,
        welcome_stored,
    })
}

/// The load: how many messages, how many unanswered at once, and at what pace.
#[derive(Debug, Clone)]
pub struct Load {
    pub messages: usize,
    pub in_flight: usize,
    /// Messages per second, or as fast as acknowledgements allow.
    pub rate: Option<f64>,
    pub body_bytes: usize,
    pub deadline: Instant,
    /// Session set-up at once.
    pub concurrency: usize,
    /// Receivers acknowledge their cursor after each fetch (`GroupAck`), as devices do.
    pub group_ack: bool,
}

/// What one run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    pub messages: usize,
    pub acked: u64,
    pub deliveries_expected: u64,
    pub deliveries: u64,
    pub sessions: usize,
    pub ack_window_s: f64,
    pub delivery_window_s: f64,
    pub ack_ms: Percentiles,
    pub e2e_ms: Percentiles,
    pub ciphertext_bytes_avg: f64,
    pub server: Usage,
    pub server_cpu_s: f64,
    pub generator_cpu_s: f64,
    pub fetches: u64,
    pub entries_per_fetch: f64,
    pub entry_events: u64,
    pub entries_per_event: f64,
    pub group_acks: u64,
    pub incomplete_messages: usize,
    pub first_error: Option<String>,
    pub encrypt_s: f64,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[rank - 1]
        };
        Self {
            p50: at(0.50),
            p99: at(0.99),
            max: values[values.len() - 1],
        }
    }
}

/// State shared by the driver and every session's reader.
struct Shared {
    permits: Semaphore,
    acked: AtomicU64,
    delivered: AtomicU64,
    fetches: AtomicU64,
    fetched_entries: AtomicU64,
    entry_events: AtomicU64,
    pushed_entries: AtomicU64,
    group_acks: AtomicU64,
    failed: AtomicBool,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, error: String) {
        self.failed.store(true, Ordering::SeqCst);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(error);
        }
    }
}

/// A group as one receiving session follows it.
struct Track {
    group: usize,
    id: GroupId,
    cursor: u64,
    known: u64,
    fetching: bool,
    acking: bool,
    acked_to: u64,
}

impl Track {
    /// Takes the entries after the cursor: from a fetch, all of them (the log as it is);
    /// pushed with an event, only those that follow the cursor without a gap. Records the
    /// arrival of others' messages; returns how many.
    fn take(&mut self, entries: &[GroupEntry], from_log: bool, me: DeviceId, arrivals: &mut Arrivals) -> u64 {
        let now = Instant::now();
        let mut delivered = 0;
        for entry in entries {
            if entry.seq == self.cursor + 1 || (from_log && entry.seq > self.cursor) {
                if entry.sender != me {
                    arrivals.push((self.group as u32, entry.seq, now));
                    delivered += 1;
                }
                self.cursor = entry.seq;
            }
            self.known = self.known.max(entry.seq);
        }
        delivered
    }
}

enum Pending {
    Fetch(usize),
    Ack(usize),
}

/// What a session's reader recorded: (group, seq, when it arrived) for others' messages,
/// and (message index, seq, when acknowledged) for its own.
type Arrivals = Vec<(u32, u64, Instant)>;
type Acks = Vec<(usize, u64, Instant)>;

#[allow(clippy::too_many_arguments)]
async fn receive(
    me: DeviceId,
    mut reader: Reader,
    outbox: mpsc::UnboundedSender<Message>,
    mut tracks: Vec<Track>,
    mut next_id: u64,
    group_ack: bool,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> (Arrivals, Acks) {
    let mut arrivals = Vec::new();
    let mut acks = Vec::new();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut send = |request: Request, what: Pending, pending: &mut HashMap<u64, Pending>| {
        let id = next_id;
        next_id += 1;
        pending.insert(id, what);
        if outbox.send(wire::frame(id, request)).is_err() {
            shared.fail("a session's writer stopped".into());
        }
    };
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => break,
            frame = wire::next_frame(&mut reader) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                shared.fail(format!("device {me}: the server closed the session"));
                break;
            }
            Err(error) => {
                shared.fail(format!("device {me}: {error:#}"));
                break;
            }
        };
        let mut touched = None;
        match frame {
            ServerFrame::Event(Event::GroupEntries { group_id, entries }) => {
                if let Some(t) = tracks.iter().position(|t| t.id == group_id) {
                    // After a gap, the fetch below reads from the cursor.
                    let delivered = tracks[t].take(&entries, false, me, &mut arrivals);
                    shared.entry_events.fetch_add(1, Ordering::Relaxed);
                    shared
                        .pushed_entries
                        .fetch_add(entries.len() as u64, Ordering::Relaxed);
                    shared.delivered.fetch_add(delivered, Ordering::SeqCst);
                    touched = Some(t);
                }
            }
            ServerFrame::Event(Event::GroupAppended { group_id, seq }) => {
                if let Some(t) = tracks.iter().position(|t| t.id == group_id) {
                    tracks[t].known = tracks[t].known.max(seq);
                    touched = Some(t);
                }
            }
            ServerFrame::Response { request_id, response } if request_id >= SUBMIT_ID_BASE => {
                shared.permits.add_permits(1);
                match response {
                    Response::Submitted { seq, .. } => {
                        acks.push(((request_id - SUBMIT_ID_BASE) as usize, seq, Instant::now()));
                        shared.acked.fetch_add(1, Ordering::SeqCst);
                    }
                    other => shared.fail(format!("unexpected answer to a submission: {other:?}")),
                }
            }
            ServerFrame::Response { request_id, response } => match (pending.remove(&request_id), response) {
                (Some(Pending::Fetch(t)), Response::GroupEntries { entries, last_seq }) => {
                    let delivered = tracks[t].take(&entries, true, me, &mut arrivals);
                    let track = &mut tracks[t];
                    track.known = track.known.max(last_seq);
                    track.fetching = false;
                    shared.fetches.fetch_add(1, Ordering::Relaxed);
                    shared
                        .fetched_entries
                        .fetch_add(entries.len() as u64, Ordering::Relaxed);
                    shared.delivered.fetch_add(delivered, Ordering::SeqCst);
                    touched = Some(t);
                }
                (Some(Pending::Ack(t)), Response::Done) => {
                    tracks[t].acking = false;
                    shared.group_acks.fetch_add(1, Ordering::Relaxed);
                    touched = Some(t);
                }
                (Some(_), other) => shared.fail(format!("unexpected answer: {other:?}")),
                (None, _) => {}
            },
            ServerFrame::Error { request_id, error } => {
                if request_id >= SUBMIT_ID_BASE {
                    shared.permits.add_permits(1);
                }
                shared.fail(format!(
                    "device {me}: server error {:?}: {}",
                    error.code, error.message
                ));
            }
            _ => {}
        }
        if let Some(t) = touched {
            let track = &mut tracks[t];
            if !track.fetching && track.known > track.cursor {
                track.fetching = true;
                let request = Request::GroupFetch {
                    group_id: track.id,
                    after_seq: track.cursor,
                    limit: FETCH_LIMIT,
                };
                send(request, Pending::Fetch(t), &mut pending);
            }
            let track = &mut tracks[t];
            if group_ack && !track.acking && track.cursor > track.acked_to {
                track.acking = true;
                track.acked_to = track.cursor;
                let request = Request::GroupAck {
                    group_id: track.id,
                    seq: track.cursor,
                };
                send(request, Pending::Ack(t), &mut pending);
            }
        }
    }
    (arrivals, acks)
}

/// Writes a session's outgoing frames in order. Readers queue here instead of writing
/// themselves, so a reader never waits on a socket write (which could deadlock with a
/// server that is itself waiting to write to us). The queue is bounded by construction: at
/// most `in_flight` submissions plus one fetch and one ack per group are outstanding.
async fn write(mut writer: Writer, mut outbox: mpsc::UnboundedReceiver<Message>, shared: Arc<Shared>) {
    use futures_util::SinkExt;
    while let Some(message) = outbox.recv().await {
        if let Err(error) = writer.send(message).await {
            shared.fail(format!("writing to the server: {error}"));
            return;
        }
    }
    let _ = writer.close().await;
}

/// The text every load message carries (its size sets the ciphertext size).
fn body_text(body_bytes: usize) -> String {
    "x".repeat(body_bytes)
}

/// Runs the load over `groups` and measures it.
pub async fn run(
    org: &Org,
    devices: &[Device],
    groups: &mut [LiveGroup],
    load: &Load,
    meter: &Meter,
) -> Result<Outcome> {
    // Who sends what: messages go round-robin over every (group, sending member).
    let mut senders: Vec<(usize, usize)> = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        for s in 0..group.states.len() {
            senders.push((g, s));
        }
    }
    if senders.is_empty() {
        bail!("no group has a sending member");
    }
    // Encrypt everything before the timed window.
    let encrypt_start = Instant::now();
    let text = body_text(load.body_bytes);
    let mut frames: Vec<(usize, Message)> = Vec::with_capacity(load.messages);
    let mut message_group = Vec::with_capacity(load.messages);
    let mut per_group = vec![0u64; groups.len()];
    let mut ciphertext_bytes = 0usize;
    for i in 0..load.messages {
        let (g, s) = senders[i % senders.len()];
        let group = &mut groups[g];
        let body = AppBody::Text {
            text: text.clone(),
            sent_at_unix_s: 0,
        }
        .encode();
        let (device, state) = &mut group.states[s];
        let message = state.encrypt_application_message(&body, Vec::new())?.to_bytes()?;
        ciphertext_bytes += message.len();
        let request = Request::GroupSubmit(GroupSubmit {
            group_id: group.id,
            client_message_id: random_id(),
            message,
            welcome: None,
        });
        frames.push((*device, wire::frame(SUBMIT_ID_BASE + i as u64, request)));
        message_group.push(g);
        per_group[g] += 1;
    }
    let encrypt_s = encrypt_start.elapsed().as_secs_f64();

    // One session per member device, each with a reader and a writer task.
    let mut member_groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for (g, group) in groups.iter().enumerate() {
        for &m in &group.members {
            member_groups.entry(m).or_default().push(g);
        }
    }
    let mut deliveries_expected = 0;
    for (g, group) in groups.iter().enumerate() {
        for s in 0..group.states.len() {
            let sent = (0..load.messages)
                .filter(|i| senders[i % senders.len()] == (g, s))
                .count() as u64;
            deliveries_expected += sent * (group.members.len() as u64 - 1);
        }
    }
    let shared = Arc::new(Shared {
        permits: Semaphore::new(load.in_flight),
        acked: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        fetches: AtomicU64::new(0),
        fetched_entries: AtomicU64::new(0),
        entry_events: AtomicU64::new(0),
        pushed_entries: AtomicU64::new(0),
        group_acks: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        first_error: Mutex::new(None),
    });
    let (stop, stopped) = watch::channel(false);
    let starts: Vec<(GroupId, u64)> = groups.iter().map(|g| (g.id, g.last_seq)).collect();
    let members: Vec<(usize, Vec<usize>)> = member_groups.into_iter().collect();
    let sessions = {
        let org = Arc::new(org.clone());
        let shared = shared.clone();
        let starts = Arc::new(starts.clone());
        // Devices are borrowed, so they authenticate concurrently within this task.
        let mut opened = Vec::with_capacity(members.len());
        let mut set = Vec::new();
        // With a second node, devices that only receive are there: what a sender appends on
        // the first node reaches them across the cluster.
        let sending: std::collections::HashSet<usize> = groups
            .iter()
            .flat_map(|g| g.states.iter().map(|(device, _)| *device))
            .collect();
        for chunk in members.chunks(load.concurrency.max(1)) {
            let futures = chunk.iter().map(|(m, _)| {
                let connector = match &org.second {
                    Some(second) if !sending.contains(m) => second,
                    _ => &org.connector,
                };
                devices[*m].authenticate_at(&org, connector, None)
            });
            set.push(futures_util::future::join_all(futures).await);
        }
        for (results, chunk) in set.into_iter().zip(members.chunks(load.concurrency.max(1))) {
            for (result, (m, gs)) in results.into_iter().zip(chunk) {
                let (conn, _) = result?;
                let first_id = conn.next_request_id();
                let (writer, reader) = conn.split();
                let (tx, rx) = mpsc::unbounded_channel();
                let tracks = gs
                    .iter()
                    .map(|&g| Track {
                        group: g,
                        id: starts[g].0,
                        cursor: starts[g].1,
                        known: starts[g].1,
                        fetching: false,
                        acking: false,
                        acked_to: starts[g].1,
                    })
                    .collect();
                let writer_task = tokio::spawn(write(writer, rx, shared.clone()));
                let reader_task = tokio::spawn(receive(
                    devices[*m].device_id,
                    reader,
                    tx.clone(),
                    tracks,
                    first_id,
                    load.group_ack,
                    shared.clone(),
                    stopped.clone(),
                ));
                opened.push((*m, tx, reader_task, writer_task));
            }
        }
        opened
    };
    let outboxes: HashMap<usize, mpsc::UnboundedSender<Message>> =
        sessions.iter().map(|(m, tx, _, _)| (*m, tx.clone())).collect();

    // The timed window.
    meter.reset_peak();
    let server_before = meter.read();
    let generator_before = crate::process_cpu_s();
    let t0 = Instant::now();
    let mut sent_at: Vec<Option<Instant>> = vec![None; load.messages];
    for (i, (device, frame)) in frames.into_iter().enumerate() {
        if shared.failed.load(Ordering::SeqCst) {
            break;
        }
        if let Some(rate) = load.rate {
            tokio::time::sleep_until((t0 + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        }
        let permit = tokio::time::timeout_at(load.deadline.into(), shared.permits.acquire()).await;
        match permit {
            Ok(Ok(permit)) => permit.forget(),
            _ => {
                shared.fail("timed out waiting for acknowledgements".into());
                break;
            }
        }
        sent_at[i] = Some(Instant::now());
        let outbox = outboxes
            .get(&device)
            .ok_or_else(|| anyhow!("no session for a sender"))?;
        if outbox.send(frame).is_err() {
            shared.fail("a sender's writer stopped".into());
            break;
        }
    }
    let total = load.messages as u64;
    while !shared.failed.load(Ordering::SeqCst)
        && (shared.acked.load(Ordering::SeqCst) < total
            || shared.delivered.load(Ordering::SeqCst) < deliveries_expected)
    {
        if Instant::now() > load.deadline {
            shared.fail(format!(
                "deadline passed with {} of {} acknowledged and {} of {} delivered",
                shared.acked.load(Ordering::SeqCst),
                total,
                shared.delivered.load(Ordering::SeqCst),
                deliveries_expected
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let server = meter.read();
    let mut generator_cpu_s = crate::process_cpu_s() - generator_before;
    if matches!(meter, Meter::Threads) {
        generator_cpu_s -= server.cpu_s - server_before.cpu_s;
    }

    // Stop the sessions and gather what they saw.
    let _ = stop.send(true);
    drop(outboxes);
    let mut arrivals = Vec::new();
    let mut acks = Vec::new();
    let session_count = sessions.len();
    for (_, tx, reader, writer) in sessions {
        drop(tx);
        if let Ok((a, k)) = reader.await {
            arrivals.extend(a);
            acks.extend(k);
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    }

    // Latencies. A message is delivered when its last receiver has it.
    let mut last_arrival: HashMap<(u32, u64), (Instant, u32)> = HashMap::new();
    for (g, seq, at) in arrivals {
        let entry = last_arrival.entry((g, seq)).or_insert((at, 0));
        entry.0 = entry.0.max(at);
        entry.1 += 1;
    }
    let mut ack_ms = Vec::new();
    let mut e2e_ms = Vec::new();
    let mut last_ack = t0;
    let mut last_delivery = t0;
    let mut incomplete = 0;
    for (i, seq, at) in &acks {
        let Some(sent) = sent_at[*i] else { continue };
        ack_ms.push(at.duration_since(sent).as_secs_f64() * 1000.0);
        last_ack = last_ack.max(*at);
        let g = message_group[*i];
        let receivers = groups[g].members.len() as u32 - 1;
        match last_arrival.get(&(g as u32, *seq)) {
            Some((arrived, count)) if *count == receivers => {
                e2e_ms.push(arrived.duration_since(sent).as_secs_f64() * 1000.0);
                last_delivery = last_delivery.max(*arrived);
            }
            _ if receivers == 0 => {}
            _ => incomplete += 1,
        }
    }
    let first_error = shared
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (g, group) in groups.iter_mut().enumerate() {
        group.last_seq += per_group[g];
    }
    let fetches = shared.fetches.load(Ordering::Relaxed);
    let entry_events = shared.entry_events.load(Ordering::Relaxed);
    Ok(Outcome {
        messages: load.messages,
        acked: shared.acked.load(Ordering::SeqCst),
        deliveries_expected,
        deliveries: shared.delivered.load(Ordering::SeqCst),
        sessions: session_count,
        ack_window_s: last_ack.duration_since(t0).as_secs_f64(),
        delivery_window_s: last_delivery.duration_since(t0).as_secs_f64(),
        ack_ms: Percentiles::of(ack_ms),
        e2e_ms: Percentiles::of(e2e_ms),
        ciphertext_bytes_avg: ciphertext_bytes as f64 / load.messages.max(1) as f64,
        server_cpu_s: server.cpu_s - server_before.cpu_s,
        server,
        generator_cpu_s,
        fetches,
        entries_per_fetch: shared.fetched_entries.load(Ordering::Relaxed) as f64 / fetches.max(1) as f64,
        entry_events,
        entries_per_event: shared.pushed_entries.load(Ordering::Relaxed) as f64 / entry_events.max(1) as f64,
        group_acks: shared.group_acks.load(Ordering::Relaxed),
        incomplete_messages: incomplete,
        first_error,
        encrypt_s,
    })
}

/// After the run: one sending member reads the group's load messages back from the server
/// and decrypts them. Returns (decrypted and correct, expected).
pub async fn verify_by_decrypting(
    org: &Org,
    devices: &[Device],
    group: &mut LiveGroup,
    first_seq: u64,
    body_bytes: usize,
) -> Result<(usize, usize)> {
    let Some((member, state)) = group.states.first_mut() else {
        bail!("no member holds the group's state");
    };
    let me = devices[*member].device_id;
    let (mut conn, _) = devices[*member].authenticate(org, None).await?;
    let text = body_text(body_bytes);
    let (mut ok, mut expected) = (0, 0);
    let mut cursor = first_seq;
    // Bounded: at most one pass over the entries appended during the load.
    for _ in 0..=(group.last_seq - first_seq) / u64::from(FETCH_LIMIT) + 1 {
        if cursor >= group.last_seq {
            break;
        }
        let request = Request::GroupFetch {
            group_id: group.id,
            after_seq: cursor,
            limit: FETCH_LIMIT,
        };
        let Response::GroupEntries { entries, .. } = conn.call(request).await? else {
            bail!("unexpected answer to GroupFetch");
        };
        if entries.is_empty() {
            break;
        }
        for entry in entries {
            cursor = entry.seq;
            if entry.sender == me {
                continue;
            }
            expected += 1;
            let message = MlsMessage::from_bytes(&entry.message)?;
            if let Ok(ReceivedMessage::ApplicationMessage(description)) =
                state.process_incoming_message(message)
                && let Ok(AppBody::Text { text: got, .. }) = AppBody::decode(description.data())
                && got == text
            {
                ok += 1;
            }
        }
    }
    conn.close().await;
    Ok((ok, expected))
}
