//! Many idle authenticated sessions (`sessions`), then all of them dropping and coming
//! back at once (`reconnect-storm`).
//!
//! Sessions are spread over `devices` enrolled devices (each session authenticates on its
//! own TLS connection with its device's key; enrolling a device per session would make the
//! set-up, not the scenario, take most of the time). One of them, the probe, shares a
//! group with a sender device, so the run checks that a message still reaches a chosen
//! session at full count, and that it is fetched when catching up after the storm.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use futures_util::SinkExt;
use redoubt_proto::{Event, GroupId, Request, Response, ServerFrame};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::device::{Device, Org, source_address};
use crate::messaging::{GroupPlan, random_id, setup_group};
use crate::target::{Meter, Usage};
use crate::wire::{self, Reader, Writer};

#[derive(Debug, Clone)]
pub struct Spec {
    pub sessions: usize,
    pub devices: usize,
    pub concurrency: usize,
    pub hold: Duration,
    /// Connections per loopback source address (each has ~28k ephemeral ports).
    pub per_address: usize,
    pub storm: bool,
    pub deadline: Instant,
    /// Attempts per session to reconnect during the storm.
    pub attempts_max: u32,
    /// A failover instead of a storm: the node to kill (its process id) and the node every
    /// session reconnects to.
    pub failover: Option<(u32, crate::wire::Connector)>,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub devices: usize,
    pub opened: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub ramp_s: f64,
    pub held: usize,
    pub source_addresses: usize,
    pub before: Usage,
    pub after_ramp: Usage,
    pub ramp_cpu_s: f64,
    pub probe_ms: Option<f64>,
    pub storm: Option<Storm>,
}

#[derive(Debug, Default)]
pub struct Storm {
    pub reconnected: usize,
    pub caught_up: usize,
    pub probe_caught_up: usize,
    pub probe_sessions: usize,
    pub failed: usize,
    pub retries: u64,
    pub all_caught_up_s: f64,
    pub p50_s: f64,
    pub p99_s: f64,
    pub server_cpu_s: f64,
    pub after: Usage,
    pub first_error: Option<String>,
}

/// The probe session's group and where arrivals are reported.
#[derive(Clone)]
struct Probe {
    group_id: GroupId,
    cursor: u64,
    arrived: mpsc::UnboundedSender<(u64, Instant)>,
}

/// Keeps a session open: reads (which also answers the server's pings) until told to stop
/// or the connection ends. The probe takes the entries its group's events carry, and
/// fetches what a notice announces.
async fn hold(mut reader: Reader, mut writer: Writer, probe: Option<Probe>, live: Arc<AtomicUsize>) {
    let mut probe = probe;
    let mut next_id = 1_000;
    while let Ok(Some(frame)) = wire::next_frame(&mut reader).await {
        let Some(p) = probe.as_mut() else { continue };
        match frame {
            ServerFrame::Event(Event::GroupEntries { group_id, entries })
                if group_id == p.group_id && entries.first().is_some_and(|e| e.seq <= p.cursor + 1) =>
            {
                let now = Instant::now();
                for entry in entries {
                    p.cursor = p.cursor.max(entry.seq);
                    let _ = p.arrived.send((entry.seq, now));
                }
            }
            ServerFrame::Event(event)
                if let Some((group_id, seq)) = event.appended()
                    && group_id == p.group_id
                    && seq > p.cursor =>
            {
                next_id += 1;
                let request = Request::GroupFetch {
                    group_id,
                    after_seq: p.cursor,
                    limit: 100,
                };
                if writer.send(wire::frame(next_id, request)).await.is_err() {
                    break;
                }
            }
            ServerFrame::Response {
                response: Response::GroupEntries { entries, .. },
                ..
            } => {
                let now = Instant::now();
                for entry in entries {
                    p.cursor = p.cursor.max(entry.seq);
                    let _ = p.arrived.send((entry.seq, now));
                }
            }
            _ => {}
        }
    }
    live.fetch_sub(1, Ordering::SeqCst);
}

/// Opens session `index` (device `index % devices`) and leaves a task holding it.
async fn open(
    org: &Org,
    device: &Device,
    source: Option<IpAddr>,
    probe: Option<Probe>,
    live: &Arc<AtomicUsize>,
) -> Result<JoinHandle<()>> {
    let (conn, _) = device.authenticate(org, source).await?;
    let (writer, reader) = conn.split();
    live.fetch_add(1, Ordering::SeqCst);
    Ok(tokio::spawn(hold(reader, writer, probe, live.clone())))
}

/// Opens `count` sessions with at most `concurrency` handshakes at once. Returns the
/// holders (in session order; `None` where opening failed), failures and the first error.
#[allow(clippy::too_many_arguments)]
async fn open_all(
    org: &Org,
    devices: &Arc<Vec<Device>>,
    spec: &Spec,
    address_offset: usize,
    probe: &Probe,
    live: &Arc<AtomicUsize>,
    catch_up: bool,
    retries: &Arc<AtomicU64>,
) -> Vec<Result<(JoinHandle<()>, Instant, bool)>> {
    let org = Arc::new(org.clone());
    let d = spec.devices;
    let spec = Arc::new(spec.clone());
    crate::bounded((0..spec.sessions).collect(), spec.concurrency, {
        let devices = devices.clone();
        let probe = probe.clone();
        let live = live.clone();
        let retries = retries.clone();
        move |_, i: usize| {
            let (org, devices, spec, probe, live, retries) = (
                org.clone(),
                devices.clone(),
                spec.clone(),
                probe.clone(),
                live.clone(),
                retries.clone(),
            );
            async move {
                let device = &devices[i % d];
                let source = source_address(&org, i, spec.per_address, address_offset);
                let is_probe_device = i.is_multiple_of(d);
                let probe_cursor = (probe.group_id, probe.cursor);
                let probe = (i == 0).then(|| probe.clone());
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let result = if catch_up {
                        let cursor = is_probe_device.then_some(probe_cursor);
                        reopen_and_catch_up(&org, device, source, cursor, &live).await
                    } else {
                        open(&org, device, source, probe.clone(), &live)
                            .await
                            .map(|h| (h, false))
                    };
                    match result {
                        Ok((handle, saw)) => return Ok((handle, Instant::now(), saw)),
                        Err(error) if attempt >= spec.attempts_max || Instant::now() > spec.deadline => {
                            return Err(error);
                        }
                        Err(_) => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            // Back off with jitter, as a phone would: 100 ms doubling, ≤ 5 s.
                            let base = 100u64 << attempt.min(6);
                            let jitter = u64::from(random_id().0[0]) * base / 256;
                            tokio::time::sleep(Duration::from_millis((base + jitter).min(5_000))).await;
                        }
                    }
                }
            }
        }
    })
    .await
}

/// After the storm: authenticate, then catch up as the device library's sync does (the
/// inbox, the group list, then each group's log after the cursor). Returns the holder and
/// whether the probe's missed message was among what was fetched.
async fn reopen_and_catch_up(
    org: &Org,
    device: &Device,
    source: Option<IpAddr>,
    probe_cursor: Option<(GroupId, u64)>,
    live: &Arc<AtomicUsize>,
) -> Result<(JoinHandle<()>, bool)> {
    let (mut conn, _) = device.authenticate(org, source).await?;
    let Response::Inbox(_) = conn.call(Request::InboxFetch).await? else {
        bail!("unexpected answer to InboxFetch");
    };
    let Response::Groups(groups) = conn.call(Request::GroupList).await? else {
        bail!("unexpected answer to GroupList");
    };
    let mut saw_missed = false;
    for group in groups {
        // Only the probe device is in a group; its cursor is the probe message.
        let cursor = match probe_cursor {
            Some((id, cursor)) if id == group.group_id => cursor,
            _ => group.joined_seq,
        };
        if group.last_seq > cursor {
            let request = Request::GroupFetch {
                group_id: group.group_id,
                after_seq: cursor,
                limit: 500,
            };
            let Response::GroupEntries { entries, .. } = conn.call(request).await? else {
                bail!("unexpected answer to GroupFetch");
            };
            saw_missed |= entries.iter().any(|e| e.seq == group.last_seq);
        }
    }
    let (writer, reader) = conn.split();
    live.fetch_add(1, Ordering::SeqCst);
    Ok((tokio::spawn(hold(reader, writer, None, live.clone())), saw_missed))
}

fn seconds_percentile(mut values: Vec<f64>, q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

pub async fn run(
    org: &Org,
    admin: &mut redoubt_client::Session,
    meter: &Meter,
    spec: &Spec,
    prefix: &str,
) -> Result<Outcome> {
    if spec.devices == 0 || spec.sessions == 0 {
        bail!("need at least one device and one session");
    }
    // Devices 0..devices hold the sessions; the last one only sends to the probe.
    let devices = crate::device::enroll(org, admin, prefix, spec.devices + 1, 32).await?;
    let sender = spec.devices;
    let mut group = setup_group(
        org,
        &devices,
        &GroupPlan {
            members: vec![sender, 0],
            senders: vec![sender],
        },
    )
    .await?;
    let mut encrypted = Vec::new();
    for _ in 0..2 {
        let (_, state) = group
            .states
            .first_mut()
            .ok_or_else(|| anyhow!("the sender has no group state"))?;
        let body = redoubt_mls::AppBody::Text {
            text: "probe".into(),
            sent_at_unix_s: 0,
        }
        .encode();
        encrypted.push(state.encrypt_application_message(&body, Vec::new())?.to_bytes()?);
    }
    // In a failover the sender is on the node that survives.
    let sender_connector = spec.failover.as_ref().map_or(&org.connector, |(_, to)| to);
    let (mut sender_conn, _) = devices[sender]
        .authenticate_at(org, sender_connector, None)
        .await?;
    let devices = Arc::new(devices);
    let live = Arc::new(AtomicUsize::new(0));
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let probe = Probe {
        group_id: group.id,
        cursor: group.last_seq,
        arrived: arrived_tx,
    };
    let retries = Arc::new(AtomicU64::new(0));

    // Ramp.
    meter.reset_peak();
    let before = meter.read();
    let start = Instant::now();
    let opened = open_all(org, &devices, spec, 0, &probe, &live, false, &retries).await;
    let ramp_s = start.elapsed().as_secs_f64();
    let mut holders = Vec::with_capacity(opened.len());
    let mut failed = 0;
    let mut first_error = None;
    for result in opened {
        match result {
            Ok((handle, _, _)) => holders.push(handle),
            Err(error) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    let after_ramp_cpu = meter.read().cpu_s;
    let hold_until = Instant::now() + spec.hold;
    while Instant::now() < hold_until && Instant::now() < spec.deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after_ramp = meter.read();
    let held = live.load(Ordering::SeqCst);

    // A message to the probe at full count.
    let sent = Instant::now();
    let seq = crate::messaging::submit(&mut sender_conn, group.id, encrypted[0].clone(), None).await?;
    let mut probe_ms = None;
    let wait = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some((got, at)) = arrived.recv().await {
            if got == seq {
                return Some(at);
            }
        }
        None
    })
    .await;
    if let Ok(Some(at)) = wait {
        probe_ms = Some(at.duration_since(sent).as_secs_f64() * 1000.0);
    }
    group.last_seq = seq;
    let ramp_addresses = spec.sessions.div_ceil(spec.per_address.max(1));

    let mut outcome = Outcome {
        devices: spec.devices,
        opened: holders.len(),
        failed,
        first_error,
        ramp_s,
        held,
        source_addresses: ramp_addresses,
        before,
        after_ramp,
        ramp_cpu_s: after_ramp_cpu - before.cpu_s,
        probe_ms,
        storm: None,
    };

    if spec.storm {
        // Everyone drops at once (as when a network comes back, or their node dies), and
        // the probe misses a message meanwhile.
        let mut start = Instant::now();
        let mut reconnect_org = org.clone();
        if let Some((pid, to)) = &spec.failover {
            let killed = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()?;
            if !killed.success() {
                bail!("could not kill process {pid}");
            }
            start = Instant::now();
            reconnect_org.connector = to.clone();
        } else {
            for holder in &holders {
                holder.abort();
            }
        }
        for holder in holders.drain(..) {
            let _ = holder.await;
        }
        let missed = crate::messaging::submit(&mut sender_conn, group.id, encrypted[1].clone(), None).await?;
        let probe = Probe {
            cursor: seq,
            ..probe.clone()
        };
        let cpu_before = meter.read().cpu_s;
        if spec.failover.is_none() {
            start = Instant::now();
        }
        let reopened = open_all(
            &reconnect_org,
            &devices,
            spec,
            ramp_addresses,
            &probe,
            &live,
            true,
            &retries,
        )
        .await;
        let mut storm = Storm {
            probe_sessions: spec.sessions.div_ceil(spec.devices),
            ..Storm::default()
        };
        let mut done_s = Vec::new();
        for result in reopened {
            match result {
                Ok((handle, at, saw)) => {
                    holders.push(handle);
                    storm.reconnected += 1;
                    storm.caught_up += 1;
                    storm.probe_caught_up += usize::from(saw);
                    done_s.push(at.duration_since(start).as_secs_f64());
                }
                Err(error) => {
                    storm.failed += 1;
                    storm.first_error.get_or_insert_with(|| format!("{error:#}"));
                }
            }
        }
        storm.all_caught_up_s = done_s.iter().copied().fold(0.0, f64::max);
        storm.p50_s = seconds_percentile(done_s.clone(), 0.5);
        storm.p99_s = seconds_percentile(done_s, 0.99);
        let after = meter.read();
        storm.server_cpu_s = after.cpu_s - cpu_before;
        storm.after = after;
        storm.retries = retries.load(Ordering::Relaxed);
        let _ = missed;
        outcome.source_addresses = ramp_addresses * 2;
        outcome.storm = Some(storm);
    }

    for holder in &holders {
        holder.abort();
    }
    for holder in holders {
        let _ = holder.await;
    }
    sender_conn.close().await;
    Ok(outcome)
}
