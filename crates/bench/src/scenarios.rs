//! Each scenario: set up, run, and turn what was measured into a report.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::messaging::{self, GroupPlan, Load, Outcome};
use crate::report::{Report, Section, svg_plot};
use crate::target::Target;
use crate::{BigGroupArgs, FanoutArgs, MessageArgs, SessionArgs, big_group, device, sessions};

/// Enrolments under way at once during set-up.
const ENROLL_CONCURRENCY: usize = 32;

#[derive(Debug)]
pub struct Common {
    pub deadline: Instant,
    pub fd_limit: u64,
    /// Prefix of this run's user names, so runs against one server never collide.
    pub prefix: String,
}

pub fn run_prefix() -> String {
    let id = messaging::random_id();
    format!("b{}-", &id.to_hex()[..8])
}

pub(crate) fn settings(target: &Target, common: &Common, scenario: Value) -> Value {
    json!({
        "server": target.mode,
        "server_limits": target.limits.clone().unwrap_or_else(|| json!("the running server's own configuration")),
        "scenario": scenario,
        "open_files_limit": common.fd_limit,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn memory_note(target: &Target) -> Option<String> {
    if target.meter.memory_includes_load_generator() {
        Some(
            "the server runs in this process: CPU is counted on the server's own threads, but \
             RSS is the whole process (server and load generator); use --spawn-server for the \
             server's memory alone"
                .into(),
        )
    } else if !target.meter.known() {
        Some("server process unknown (pass --server-pid): no CPU or memory figures".into())
    } else {
        None
    }
}

/// The figures every message-load run reports.
fn message_figures(section: &mut Section, o: &Outcome, room_targets: bool) {
    section.add("messages", o.messages, "");
    section.add("acknowledged", o.acked, "");
    section.num(
        "messages_per_s_acked",
        o.acked as f64 / o.ack_window_s.max(1e-9),
        0,
        "msg/s",
    );
    if room_targets {
        section.target(">= 10,000 (Synapse: 21-27)");
    }
    section.add("deliveries", o.deliveries, "");
    section.add("deliveries_expected", o.deliveries_expected, "");
    section.num(
        "deliveries_per_s",
        o.deliveries as f64 / o.delivery_window_s.max(1e-9),
        0,
        "/s",
    );
    section.num("ack_latency_p50", o.ack_ms.p50, 2, "ms");
    section.num("ack_latency_p99", o.ack_ms.p99, 2, "ms");
    section.num("e2e_latency_p50", o.e2e_ms.p50, 2, "ms");
    if room_targets {
        section.target("Synapse: 1,500-1,900");
    }
    section.num("e2e_latency_p99", o.e2e_ms.p99, 2, "ms");
    if room_targets {
        section.target("<= 50 at half the max rate (Synapse: 1,900-2,600)");
    }
    section.num("e2e_latency_max", o.e2e_ms.max, 2, "ms");
    section.num("server_cpu_s", o.server_cpu_s, 2, "s");
    section.num(
        "server_cpu_s_per_1000_messages",
        o.server_cpu_s / o.messages.max(1) as f64 * 1000.0,
        3,
        "s",
    );
    if room_targets {
        section.target("<= 0.1 (Synapse: 38-47)");
    }
    section.num("server_peak_rss", mib(o.server.hwm_kib), 1, "MiB");
    if room_targets {
        section.target("Synapse: ~150");
    }
    section.num("load_generator_cpu_s", o.generator_cpu_s, 2, "s");
    section.add("sessions", o.sessions, "");
    section.num("fetches", o.fetches as f64, 0, "");
    section.num("entries_per_fetch", o.entries_per_fetch, 1, "");
    section.add("entry_events", o.entry_events, "");
    section.num("entries_per_event", o.entries_per_event, 1, "");
    section.add("group_acks", o.group_acks, "");
    section.num("ciphertext_bytes_avg", o.ciphertext_bytes_avg, 0, "B");
    section.num("pre_encryption_s", o.encrypt_s, 2, "s");
    section.add("incomplete_messages", o.incomplete_messages, "");
}

fn outcome_ok(o: &Outcome) -> bool {
    o.first_error.is_none()
        && o.acked == o.messages as u64
        && o.deliveries == o.deliveries_expected
        && o.incomplete_messages == 0
}

/// `room` (one group of all users) or `pairs` (groups of two).
pub async fn room(target: &mut Target, common: &Common, args: &MessageArgs, pairs: bool) -> Result<Report> {
    if args.users < 2 || (pairs && !args.users.is_multiple_of(2)) {
        bail!("--users must be at least 2 (and even for pairs)");
    }
    let devices = device::enroll(
        &target.org,
        &mut target.admin,
        &common.prefix,
        args.users,
        ENROLL_CONCURRENCY,
    )
    .await?;
    let plans: Vec<GroupPlan> = if pairs {
        (0..args.users / 2)
            .map(|k| GroupPlan {
                members: vec![2 * k, 2 * k + 1],
                senders: vec![2 * k, 2 * k + 1],
            })
            .collect()
    } else {
        let senders = args.senders.unwrap_or(args.users).clamp(1, args.users);
        vec![GroupPlan {
            members: (0..args.users).collect(),
            senders: (0..senders).collect(),
        }]
    };
    let mut groups = Vec::new();
    for plan in &plans {
        groups.push(messaging::setup_group(&target.org, &devices, plan).await?);
    }
    let first_seq = groups[0].last_seq;
    let load = Load {
        messages: args.size,
        in_flight: args.in_flight,
        rate: args.rate,
        body_bytes: args.body_bytes,
        deadline: common.deadline,
        concurrency: 64,
        group_ack: !args.no_group_ack,
    };
    let outcome = messaging::run(&target.org, &devices, &mut groups, &load, &target.meter).await?;
    let (decrypted, expected) =
        messaging::verify_by_decrypting(&target.org, &devices, &mut groups[0], first_seq, args.body_bytes)
            .await?;

    let mut section = Section::new("");
    section.add("users", args.users, "");
    section.add("groups", groups.len(), "");
    message_figures(&mut section, &outcome, !pairs);
    section.add("verified_decrypted", decrypted, "");
    section.add("verified_expected", expected, "");
    let mut notes = vec![
        "a receiver has a message when its ciphertext arrived, in a GroupEntries event or in a \
         GroupFetch answer (after a gap or a GroupAppended notice); receivers do not decrypt during \
         the timed window; afterwards one member decrypts the first group's whole log \
         (verified_decrypted)"
            .to_owned(),
        "the server's CPU time is measured from the first submission until every receiver has \
         every message; it includes fetches, events and GroupAck writes"
            .to_owned(),
    ];
    notes.extend(memory_note(target));
    if let Some(senders) = args.senders.filter(|n| *n < args.users) {
        notes.push(format!(
            "{senders} of the users send; the other {} only receive{}",
            args.users - senders,
            if target.org.second.is_some() {
                ", connected to a second node of the cluster (the senders' node appends, the \
                 receivers' node hears of it on the bus, reads the entries and pushes them)"
            } else {
                ""
            }
        ));
    }
    if let Some(error) = &outcome.first_error {
        notes.push(format!("error: {error}"));
    }
    let ok = outcome_ok(&outcome) && decrypted == expected && expected > 0;
    Ok(Report {
        scenario: if pairs { "pairs" } else { "room" }.into(),
        description: if pairs {
            format!(
                "{} users in {} groups of 2; {} messages of {} bytes, {} in flight{}",
                args.users,
                args.users / 2,
                args.size,
                args.body_bytes,
                args.in_flight,
                rate_text(args.rate)
            )
        } else {
            format!(
                "{} users in one group; {} messages of {} bytes, {} in flight{}",
                args.users,
                args.size,
                args.body_bytes,
                args.in_flight,
                rate_text(args.rate)
            )
        },
        settings: settings(
            target,
            common,
            json!({
                "users": args.users,
                "messages": args.size,
                "in_flight": args.in_flight,
                "rate_per_s": args.rate,
                "body_bytes": args.body_bytes,
                "group_ack": !args.no_group_ack,
                "welcome_stored": groups.iter().all(|g| g.welcome_stored),
            }),
        ),
        sections: vec![section],
        notes,
        ok,
    })
}

fn rate_text(rate: Option<f64>) -> String {
    rate.map(|r| format!(", paced at {r} msg/s"))
        .unwrap_or_else(|| ", as fast as acknowledged".into())
}

/// `sessions` and `reconnect-storm`.
pub async fn sessions(
    target: &mut Target,
    common: &Common,
    args: &SessionArgs,
    storm: bool,
) -> Result<Report> {
    let devices = args
        .devices
        .unwrap_or(args.size.min(1000))
        .clamp(1, args.size.max(1));
    let per_socket = if target.meter.memory_includes_load_generator() {
        2
    } else {
        1
    };
    // The storm closes every socket before reconnecting, so it needs no more.
    let needed = (args.size * per_socket) as u64 + 1000;
    if common.fd_limit < needed {
        bail!(
            "{} sessions need about {needed} open files here; the limit is {}",
            args.size,
            common.fd_limit
        );
    }
    if args.size > args.per_address && !target.loopback {
        bail!(
            "past {} sessions the server must be on loopback (extra source addresses)",
            args.per_address
        );
    }
    let spec = sessions::Spec {
        sessions: args.size,
        devices,
        concurrency: args.concurrency,
        hold: Duration::from_secs(args.hold_s),
        per_address: args.per_address,
        storm,
        deadline: common.deadline,
        attempts_max: 10,
        failover: match (args.kill_pid, &args.failover_to) {
            (Some(pid), Some(to)) => {
                let to = redoubt_proto::ServerAddress::parse(to)
                    .map_err(|e| anyhow::anyhow!("--failover-to {to}: {e}"))?;
                Some((
                    pid,
                    crate::wire::Connector::new(&to, target.org.connector.pin).await?,
                ))
            }
            _ => None,
        },
    };
    let o = sessions::run(
        &target.org,
        &mut target.admin,
        &target.meter,
        &spec,
        &common.prefix,
    )
    .await?;
    let mut section = Section::new("");
    section.add("sessions_requested", args.size, "");
    section.add("devices", o.devices, "");
    section.add("sessions_opened", o.opened, "");
    section.add("sessions_failed", o.failed, "");
    section.add("sessions_held", o.held, "");
    section.target(">= 250,000");
    section.num("ramp_s", o.ramp_s, 2, "s");
    section.num("handshakes_per_s", o.opened as f64 / o.ramp_s.max(1e-9), 0, "/s");
    section.num(
        "server_cpu_ms_per_handshake",
        o.ramp_cpu_s * 1000.0 / o.opened.max(1) as f64,
        3,
        "ms",
    );
    section.num("server_rss_before", mib(o.before.rss_kib), 1, "MiB");
    section.num("server_rss_held", mib(o.after_ramp.rss_kib), 1, "MiB");
    let per_session_kib = (o.after_ramp.rss_kib as f64 - o.before.rss_kib as f64) / o.held.max(1) as f64;
    section.num("rss_per_session", per_session_kib * 1.024, 2, "kB");
    section.target("<= 10 kB of server user-space memory");
    section.add("source_addresses", o.source_addresses.max(1), "");
    match o.probe_ms {
        Some(ms) => section.num("probe_delivery", ms, 2, "ms"),
        None => section.add("probe_delivery", "not delivered", ""),
    };
    section.target("<= 50 ms at full count");
    let mut notes = vec![format!(
        "{} sessions over {} devices ({} sessions per device); each session is its own TLS 1.3 \
         connection, authenticated with its device's key; without TLS session resumption",
        args.size,
        devices,
        args.size.div_ceil(devices)
    )];
    notes.extend(memory_note(target));
    if let Some(error) = &o.first_error {
        notes.push(format!("first failure: {error}"));
    }
    let mut ok = o.failed == 0 && o.held == args.size && o.probe_ms.is_some();
    if let Some(s) = &o.storm {
        section.add("storm_reconnected", s.reconnected, "");
        section.add("storm_failed", s.failed, "");
        section.add("storm_retries", s.retries, "");
        section.num("storm_all_caught_up_s", s.all_caught_up_s, 2, "s");
        section.target("<= 60 s for 100,000 sessions");
        section.num("storm_caught_up_p50_s", s.p50_s, 2, "s");
        section.num("storm_caught_up_p99_s", s.p99_s, 2, "s");
        section.num(
            "storm_reconnects_per_s",
            s.reconnected as f64 / s.all_caught_up_s.max(1e-9),
            0,
            "/s",
        );
        section.num(
            "storm_server_cpu_ms_per_session",
            s.server_cpu_s * 1000.0 / s.reconnected.max(1) as f64,
            3,
            "ms",
        );
        section.add("storm_probe_sessions_fetched_missed", s.probe_caught_up, "");
        section.add("storm_probe_sessions", s.probe_sessions, "");
        section.num("server_rss_after_storm", mib(s.after.rss_kib), 1, "MiB");
        section.num("server_peak_rss", mib(s.after.hwm_kib), 1, "MiB");
        notes.push(format!(
            "the storm: every session's connection is dropped at once, the probe device misses a \
             message, then all {} reconnect with at most {} handshakes under way (failed attempts \
             back off 100 ms doubling to 5 s, with jitter, at most {} attempts); caught up = \
             authenticated, inbox and group list read, and each group's log fetched after the cursor",
            args.size, args.concurrency, spec.attempts_max
        ));
        if let Some(to) = &args.failover_to {
            notes.push(format!(
                "a failover: the sessions' node (process {}) was SIGKILLed instead of the \
                 connections being dropped; every session reconnected to {to}, where the probe's \
                 missed message was sent; times count from the kill",
                args.kill_pid.unwrap_or_default()
            ));
        }
        if let Some(error) = &s.first_error {
            notes.push(format!("storm failure: {error}"));
        }
        ok &= s.failed == 0 && s.reconnected == args.size && s.probe_caught_up == s.probe_sessions;
    }
    Ok(Report {
        scenario: match (storm, args.kill_pid.is_some()) {
            (true, true) => "failover",
            (true, false) => "reconnect-storm",
            _ => "sessions",
        }
        .into(),
        description: format!(
            "{} idle authenticated sessions{}",
            args.size,
            match (storm, args.kill_pid.is_some()) {
                (true, true) => ", their node killed and all reconnected to another",
                (true, false) => ", dropped and reconnected at once",
                _ => "",
            }
        ),
        settings: settings(
            target,
            common,
            json!({
                "sessions": args.size,
                "devices": devices,
                "concurrency": args.concurrency,
                "hold_s": args.hold_s,
                "per_address": args.per_address,
            }),
        ),
        sections: vec![section],
        notes,
        ok,
    })
}

pub async fn big_group(target: &mut Target, common: &Common, args: &BigGroupArgs) -> Result<Report> {
    let largest = args.sizes.iter().copied().max().unwrap_or(0);
    if largest < 2 {
        bail!("--size must be at least 2");
    }
    let mut devices = device::enroll(
        &target.org,
        &mut target.admin,
        &common.prefix,
        largest + 1,
        ENROLL_CONCURRENCY,
    )
    .await?;
    let extra = devices.pop().ok_or_else(|| anyhow::anyhow!("no devices"))?;
    let frame_bytes_max = target
        .limits
        .as_ref()
        .and_then(|l| l["frame_bytes_max"].as_u64())
        .unwrap_or(64 * 1024) as usize;
    let mut sections = Vec::new();
    let mut ok = true;
    let mut notes = vec![
        "create = one commit adding every other member (as the device library does); its Welcome \
         is measured but not submitted, since the server stores one copy per added device \
         (members x the Welcome, which carries the whole tree)"
            .to_owned(),
        "join = a member processing that Welcome; add/remove/update = medians of --repeat rounds; \
         server time = submission to acknowledgement on loopback, server CPU = its CPU time \
         meanwhile; slowest = the slowest of all those commits (the server stores a group's state \
         with every 8th handshake: with --repeat >= 3 at least one of them does)"
            .to_owned(),
    ];
    if target.meter.memory_includes_load_generator() {
        notes.push(
            "in-process: mls-rs runs parallel work on rayon's global thread pool, which the server              and the simulated devices share here (its threads are named after whichever thread              started them), so server CPU figures are not exact; use --spawn-server"
                .into(),
        );
    }
    for &size in &args.sizes {
        if Instant::now() > common.deadline {
            notes.push(format!("size {size} skipped: deadline"));
            ok = false;
            continue;
        }
        let row = big_group::run_size(
            &target.org,
            &devices,
            &extra,
            size,
            args.repeat,
            &target.meter,
            frame_bytes_max,
        )
        .await?;
        let (add, remove, update) = (
            big_group::median(&row.add),
            big_group::median(&row.remove),
            big_group::median(&row.update),
        );
        let big = size >= 10_000;
        let mut s = Section::new(format!("{size} member devices"));
        s.add("members", size, "");
        s.num("key_packages_s", row.key_packages_s, 3, "s");
        s.num("create_client_s", row.create.client_s, 3, "s");
        s.num("create_commit", row.create.commit_bytes as f64 / 1024.0, 1, "KiB");
        s.num(
            "create_welcome",
            row.create.welcome_bytes as f64 / 1024.0,
            1,
            "KiB",
        );
        s.num("create_server_s", row.create.server_s, 3, "s");
        s.num("create_server_cpu_s", row.create.server_cpu_s, 3, "s");
        s.num("create_apply_s", row.create.apply_s, 3, "s");
        s.num("join_s", row.join_s, 3, "s");
        if big {
            s.target("<= 0.5 s (mls-rs here: 0.43 s)");
        }
        s.num("add_client_ms", add.client_s * 1000.0, 1, "ms");
        if big {
            s.target("<= 150 ms (mls-rs here: 111 ms)");
        }
        s.add("add_commit_bytes", add.commit_bytes, "B");
        s.num("add_welcome", add.welcome_bytes as f64 / 1024.0, 1, "KiB");
        s.num("add_server_ms", add.server_s * 1000.0, 1, "ms");
        if big {
            s.target("<= 100 ms");
        }
        s.num("add_server_cpu_ms", add.server_cpu_s * 1000.0, 0, "ms");
        s.num("add_apply_ms", add.apply_s * 1000.0, 1, "ms");
        s.num("remove_client_ms", remove.client_s * 1000.0, 1, "ms");
        s.add("remove_commit_bytes", remove.commit_bytes, "B");
        s.num("remove_server_ms", remove.server_s * 1000.0, 1, "ms");
        s.num("remove_server_cpu_ms", remove.server_cpu_s * 1000.0, 0, "ms");
        s.num("update_client_ms", update.client_s * 1000.0, 1, "ms");
        s.add("update_commit_bytes", update.commit_bytes, "B");
        s.num("update_server_ms", update.server_s * 1000.0, 1, "ms");
        if big {
            s.target("<= 100 ms");
        }
        s.num("update_server_cpu_ms", update.server_cpu_s * 1000.0, 0, "ms");
        // The medians hide the commits that also store the group's state (every 8th).
        let slowest = row
            .add
            .iter()
            .chain(&row.remove)
            .chain(&row.update)
            .map(|op| op.server_s)
            .fold(0.0, f64::max);
        s.num("slowest_server_ms", slowest * 1000.0, 1, "ms");
        if big {
            s.target("<= 100 ms (any add, remove or update)");
        }
        ok &= row.add.len() == args.repeat && row.update.len() == args.repeat;
        sections.push(s);
    }
    Ok(Report {
        scenario: "big-group".into(),
        description: format!("MLS operations at {:?} member devices", args.sizes),
        settings: settings(
            target,
            common,
            json!({"sizes": args.sizes, "repeat": args.repeat}),
        ),
        sections,
        notes,
        ok,
    })
}

pub async fn fanout(target: &mut Target, common: &Common, args: &FanoutArgs) -> Result<Report> {
    let largest = args.sizes.iter().copied().max().unwrap_or(0);
    if largest < 2 {
        bail!("--size must be at least 2");
    }
    let devices = device::enroll(
        &target.org,
        &mut target.admin,
        &common.prefix,
        largest,
        ENROLL_CONCURRENCY,
    )
    .await?;
    let mut sections = Vec::new();
    let mut ok = true;
    let mut notes = vec![format!(
        "one sender (the group's creator) sends {} messages at {} msg/s to each group; every other \
         member device has a session and fetches every message; groups above {} members are \
         built without storing Welcomes (their members never join; they receive ciphertext)",
        args.messages,
        args.rate,
        messaging::WELCOME_MEMBERS_MAX
    )];
    let mut per_message = Vec::new();
    let mut per_delivery = Vec::new();
    for &size in &args.sizes {
        if Instant::now() > common.deadline {
            notes.push(format!("size {size} skipped: deadline"));
            ok = false;
            continue;
        }
        let plan = GroupPlan {
            members: (0..size).collect(),
            senders: vec![0],
        };
        let mut groups = vec![messaging::setup_group(&target.org, &devices, &plan).await?];
        let load = Load {
            messages: args.messages,
            in_flight: args.in_flight,
            rate: Some(args.rate),
            body_bytes: args.body_bytes,
            deadline: common.deadline,
            concurrency: 64,
            group_ack: true,
        };
        let o = messaging::run(&target.org, &devices, &mut groups, &load, &target.meter).await?;
        let cpu_ms_per_message = o.server_cpu_s * 1000.0 / o.messages.max(1) as f64;
        let cpu_us_per_delivery = o.server_cpu_s * 1e6 / o.deliveries.max(1) as f64;
        per_message.push((size as f64, cpu_ms_per_message));
        per_delivery.push((size as f64, cpu_us_per_delivery));
        let mut s = Section::new(format!("group of {size}"));
        s.add("group_size", size, "");
        s.add("messages", o.messages, "");
        s.num(
            "messages_per_s",
            o.acked as f64 / o.ack_window_s.max(1e-9),
            1,
            "msg/s",
        );
        s.add("deliveries", o.deliveries, "");
        s.add("deliveries_expected", o.deliveries_expected, "");
        s.num(
            "deliveries_per_s",
            o.deliveries as f64 / o.delivery_window_s.max(1e-9),
            0,
            "/s",
        );
        s.num("e2e_latency_p50", o.e2e_ms.p50, 2, "ms");
        s.num("e2e_latency_p99", o.e2e_ms.p99, 2, "ms");
        s.num("e2e_latency_max", o.e2e_ms.max, 2, "ms");
        s.num("server_cpu_s", o.server_cpu_s, 2, "s");
        s.num("server_cpu_ms_per_message", cpu_ms_per_message, 3, "ms");
        s.num("server_cpu_us_per_delivery", cpu_us_per_delivery, 1, "us");
        s.num("server_peak_rss", mib(o.server.hwm_kib), 1, "MiB");
        s.num("load_generator_cpu_s", o.generator_cpu_s, 2, "s");
        s.num("entries_per_fetch", o.entries_per_fetch, 1, "");
        if let Some(error) = &o.first_error {
            notes.push(format!("size {size}: {error}"));
        }
        ok &= outcome_ok(&o);
        sections.push(s);
    }
    notes.extend(memory_note(target));
    if let Some(path) = &args.svg {
        let svg = svg_plot(
            "Server CPU per message and per delivery vs group size",
            "group size (member devices)",
            &[
                ("CPU ms / message", "#c0392b", per_message),
                ("CPU us / delivery", "#2471a3", per_delivery),
            ],
        );
        std::fs::write(path, svg)?;
        notes.push(format!("plot written to {}", path.display()));
    }
    Ok(Report {
        scenario: "fanout-scaling".into(),
        description: format!("one sender, {} msg/s, to groups of {:?}", args.rate, args.sizes),
        settings: settings(
            target,
            common,
            json!({
                "sizes": args.sizes,
                "messages": args.messages,
                "rate_per_s": args.rate,
                "in_flight": args.in_flight,
                "body_bytes": args.body_bytes,
            }),
        ),
        sections,
        notes,
        ok,
    })
}
