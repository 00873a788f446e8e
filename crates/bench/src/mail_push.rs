//! `mail-push`: mail handed to a real mail server (Postfix over SMTP, delivering to Dovecot
//! over LMTP) reaches the users' devices through the mail connector, as BES pushed mail.
//!
//! Set-up (outside the timed window): Dovecot and Postfix start on loopback with one
//! mailbox per user (the test peers of `crates/cli/tests/peers`), the server runs with its
//! mail connector beside it, each user gets one device (the device library's `Messenger`,
//! with a profile on disk, as a phone keeps it), the admin sets the mail servers, and every
//! device waits until its mailbox group is set up and the connector reports the mailbox
//! connected. Then `--size` mails go round-robin to the users through plain SMTP at
//! `--rate` mails/s. A mail counts as *accepted* when Postfix answers 250 to its DATA; it
//! is *in the mailbox* when Dovecot's maildir file for it appears (the harness watches the
//! maildirs), and *on the device* when the device's mail store lists its subject after a
//! sync. Each device waits for the server's events (syncing at least every 10 s) and
//! syncs on each one, as the device library's users do.

#[path = "../../cli/tests/peers/mod.rs"]
mod peers;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use redoubt_client::{ClientError, Messenger};
use redoubt_proto::{
    ActivationCode, DeviceName, Event, GroupId, HostPort, ImportedUser, MailSecurity, MailServerSettings,
    Request, Response, UserName,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};

use self::peers::MailPeers;
use crate::MailPushArgs;
use crate::messaging::Percentiles;
use crate::report::{Report, Section};
use crate::scenarios::Common;
use crate::target::{Meter, Target};

/// The domain of every mailbox (the peers' domain); users' addresses are `user@DOMAIN`.
const DOMAIN: &str = peers::DOMAIN;
/// The envelope and header sender: someone outside the organisation.
const SENDER: &str = "bench@sender.test";
/// Longest a device waits for the server's events before syncing anyway.
const DEVICE_POLL: Duration = Duration::from_secs(10);
/// Longest the set-up may take until every mailbox is connected.
const SETUP_MAX: Duration = Duration::from_secs(180);
/// After the last mail is accepted, longest the devices may take to have them all.
const DRAIN_MAX: Duration = Duration::from_secs(120);
/// Longest the mail server may take to answer one SMTP command.
const SMTP_REPLY_MAX: Duration = Duration::from_secs(30);
/// How often the maildirs are looked at.
const MAILDIR_POLL: Duration = Duration::from_millis(5);
/// Enrolments (each writes a profile and opens a session) under way at once.
const ENROLL_CONCURRENCY: usize = 8;

/// The subject of mail `index` of a run tagged `tag`.
fn subject(tag: &str, index: usize) -> String {
    format!("{tag} #{index:06}")
}

/// The index of a mail of this run from its subject.
fn index_of(tag: &str, subject: &str) -> Option<usize> {
    subject.strip_prefix(tag)?.strip_prefix(" #")?.trim().parse().ok()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Mail `index` as SMTP's DATA carries it: CRLF lines, dot-stuffed (a line starting with
/// `.` gets another), ended by a line holding a single `.`. The body's first line starts
/// with a dot, so the stuffing is exercised on every mail.
fn data_of(tag: &str, index: usize, to: &str, body_bytes: usize) -> Vec<u8> {
    let mut lines = vec![
        format!("From: Bench sender <{SENDER}>"),
        format!("To: <{to}>"),
        format!("Subject: {}", subject(tag, index)),
        format!("Date: {}", redoubt_connector::rfc5322_date(unix_now())),
        format!(
            "Message-ID: <{}.{index}@sender.test>",
            tag.replace([' ', '#'], "-")
        ),
        "MIME-Version: 1.0".to_owned(),
        "Content-Type: text/plain; charset=utf-8".to_owned(),
        "Content-Transfer-Encoding: 7bit".to_owned(),
        String::new(),
        format!(".{index} begins with a dot, as SMTP must stuff it."),
    ];
    let filler = "The quarterly figures are attached to the minutes of the meeting; ";
    let mut written = lines.last().map_or(0, String::len);
    while written < body_bytes {
        let take = (body_bytes - written).min(72);
        let line: String = filler.chars().cycle().take(take).collect();
        written += line.len() + 2;
        lines.push(line.trim_end().to_owned());
    }
    let mut data = Vec::with_capacity(body_bytes + 512);
    for line in &lines {
        if line.starts_with('.') {
            data.push(b'.');
        }
        data.extend_from_slice(line.as_bytes());
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    data
}

/// A minimal SMTP client (RFC 5321): EHLO, then MAIL FROM / RCPT TO / DATA per mail, on
/// one connection.
struct Smtp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp").finish_non_exhaustive()
    }
}

impl Smtp {
    async fn connect(port: u16) -> Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connecting to SMTP on 127.0.0.1:{port}"))?;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        let mut smtp = Self {
            reader: BufReader::new(reader),
            writer,
        };
        smtp.expect(220, "the greeting").await?;
        smtp.command("EHLO bench.test", 250).await?;
        Ok(smtp)
    }

    /// One reply, however many lines (`250-…` continues, `250 …` ends it).
    async fn reply(&mut self) -> Result<(u16, String)> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(SMTP_REPLY_MAX, self.reader.read_line(&mut line))
                .await
                .map_err(|_| anyhow!("the mail server did not answer within {SMTP_REPLY_MAX:?}"))??;
            if read == 0 {
                bail!("the mail server closed the connection");
            }
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| anyhow!("malformed SMTP reply {line:?}"))?;
            text.push_str(line.trim_end());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
            text.push(' ');
        }
    }

    async fn expect(&mut self, want: u16, what: &str) -> Result<()> {
        let (code, text) = self.reply().await?;
        if code != want {
            bail!("SMTP {what}: expected {want}, got {text:?}");
        }
        Ok(())
    }

    async fn command(&mut self, line: &str, want: u16) -> Result<()> {
        self.writer.write_all(format!("{line}\r\n").as_bytes()).await?;
        self.expect(want, line).await
    }

    /// Hands one mail (`data` already dot-stuffed and terminated) to the server; returns
    /// once it answered 250 to the data, i.e. took responsibility for the mail.
    async fn send(&mut self, to: &str, data: &[u8]) -> Result<()> {
        self.command(&format!("MAIL FROM:<{SENDER}>"), 250).await?;
        self.command(&format!("RCPT TO:<{to}>"), 250).await?;
        self.command("DATA", 354).await?;
        self.writer.write_all(data).await?;
        self.expect(250, "end of data").await
    }

    async fn quit(mut self) {
        let _ = self.command("QUIT", 221).await;
    }
}

/// One mail as the sender saw it.
#[derive(Debug, Clone, Copy)]
struct Sent {
    index: usize,
    /// When Postfix answered 250 to the data.
    accepted: Instant,
    /// MAIL FROM sent → 250 to the data.
    transaction: Duration,
}

/// Sends mails `first, first + step, …` below `count` on one connection, each no earlier
/// than `start + index / rate`.
#[allow(clippy::too_many_arguments)]
async fn sender(
    port: u16,
    first: usize,
    step: usize,
    count: usize,
    rate: f64,
    start: tokio::time::Instant,
    addresses: Arc<Vec<String>>,
    tag: Arc<String>,
    body_bytes: usize,
    deadline: Instant,
) -> (Vec<Sent>, Option<String>) {
    let mut sent = Vec::new();
    let mut smtp = match Smtp::connect(port).await {
        Ok(smtp) => smtp,
        Err(error) => return (sent, Some(format!("{error:#}"))),
    };
    for index in (first..count).step_by(step) {
        if Instant::now() > deadline {
            return (sent, Some("deadline passed while sending".into()));
        }
        tokio::time::sleep_until(start + Duration::from_secs_f64(index as f64 / rate)).await;
        let to = &addresses[index % addresses.len()];
        let data = data_of(&tag, index, to, body_bytes);
        let began = Instant::now();
        if let Err(error) = smtp.send(to, &data).await {
            return (sent, Some(format!("mail {index} to {to}: {error:#}")));
        }
        let accepted = Instant::now();
        sent.push(Sent {
            index,
            accepted,
            transaction: accepted - began,
        });
    }
    smtp.quit().await;
    (sent, None)
}

/// When each mail of this run was seen in the users' maildirs (INBOX).
#[derive(Debug, Default)]
struct MaildirTimes {
    /// First seen at all: Dovecot's LMTP delivery put its file in `new/`.
    delivered: BTreeMap<usize, Instant>,
    /// First seen in `cur/`: a session with INBOX selected read-write synced the folder
    /// (here only the connector's, which idles there) and Dovecot moved the file.
    noticed: BTreeMap<usize, Instant>,
    rounds: u64,
}

/// Watches the users' maildirs (INBOX: `new/` and `cur/`) every [`MAILDIR_POLL`] until
/// `stop`, noting when each mail of this run first appears in each.
fn watch_maildirs(inboxes: Vec<PathBuf>, tag: &str, stop: &AtomicBool) -> MaildirTimes {
    // Base name (without `cur/`'s `:2,FLAGS`) → the mail's index, if it is one of ours.
    let mut known: BTreeMap<String, Option<usize>> = BTreeMap::new();
    let mut in_cur: BTreeSet<String> = BTreeSet::new();
    let mut times = MaildirTimes::default();
    while !stop.load(Ordering::Relaxed) {
        times.rounds += 1;
        for inbox in &inboxes {
            for sub in ["new", "cur"] {
                let Ok(entries) = std::fs::read_dir(inbox.join(sub)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let base = name.split(':').next().unwrap_or_default().to_owned();
                    let seen = Instant::now();
                    let index = match known.get(&base) {
                        Some(index) => *index,
                        None => {
                            // Moved from new/ to cur/ meanwhile: found there next round.
                            let Ok(bytes) = std::fs::read(entry.path()) else {
                                continue;
                            };
                            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(8192)]);
                            let index = text
                                .lines()
                                .take_while(|l| !l.trim_end().is_empty())
                                .find_map(|l| l.strip_prefix("Subject: "))
                                .and_then(|s| index_of(tag, s.trim_end()));
                            if let Some(index) = index {
                                times.delivered.entry(index).or_insert(seen);
                            }
                            known.insert(base.clone(), index);
                            index
                        }
                    };
                    if sub == "cur"
                        && in_cur.insert(base)
                        && let Some(index) = index
                    {
                        times.noticed.entry(index).or_insert(seen);
                    }
                }
            }
        }
        std::thread::sleep(MAILDIR_POLL);
    }
    times
}

/// CPU time (user + system) of the mail servers' processes, with that of their exited
/// children (`cutime`/`cstime`: Postfix's and Dovecot's masters reap their workers), in s.
fn mail_servers_cpu_s(root: &Path) -> f64 {
    let ticks = 100.0_f64;
    peers::processes_in(root)
        .into_iter()
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = text.get(text.rfind(')')? + 2..)?.split_whitespace().collect();
            // After the name: utime, stime, cutime, cstime are fields 14-17, at 11-14 here.
            let sum: u64 = (11..15)
                .map(|i| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0))
                .sum();
            Some(sum as f64 / ticks)
        })
        .sum()
}

/// A mail as one device first listed it.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    index: usize,
    at: Instant,
    /// When the server event that started the sync which found it arrived (`None`: a
    /// poll found it).
    event_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct DeviceOutcome {
    arrivals: Vec<Arrival>,
    events: u64,
    syncs: u64,
    sync_s: f64,
}

/// Whether the device has its mailbox group and the connector says the mailbox is
/// connected (and has listed its folders).
fn mailbox_ready(messenger: &Messenger) -> Result<bool> {
    if messenger.mailbox()?.is_none() {
        return Ok(false);
    }
    let mail = messenger.mail();
    let connected = mail
        .status(redoubt_mls::mail::Service::Mail)
        .map_err(ClientError::from)?
        .is_some_and(|(ok, _, _)| ok);
    Ok(connected && !mail.folders().map_err(ClientError::from)?.is_empty())
}

/// Adds the group an event names to `groups`; any other event makes it `None`.
fn note_event(event: &Event, groups: &mut Option<BTreeSet<GroupId>>) {
    match (event.appended(), groups.as_mut()) {
        (Some((group_id, _)), Some(groups)) => {
            groups.insert(group_id);
        }
        (Some(_), None) => {}
        (None, _) => *groups = None,
    }
}

/// One device: waits for events (syncing at least every [`DEVICE_POLL`]), syncs, says when
/// its mailbox is ready, and notes when each of this run's mails first lists in its INBOX.
/// Ends when it has `expected` mails (never, for `expected` = 0) or on `stop`.
async fn device_loop(
    id: usize,
    mut messenger: Messenger,
    expected: usize,
    sync_one: bool,
    tag: Arc<String>,
    ready: mpsc::UnboundedSender<usize>,
    mut stop: watch::Receiver<bool>,
) -> Result<DeviceOutcome> {
    let mut outcome = DeviceOutcome::default();
    let mut is_ready = false;
    let mut found = BTreeSet::new();
    let mut last_cursor = None;
    loop {
        if *stop.borrow() || (is_ready && expected > 0 && found.len() >= expected) {
            break;
        }
        let waited = tokio::select! {
            waited = tokio::time::timeout(DEVICE_POLL, messenger.next_event()) => waited,
            _ = stop.changed() => break,
        };
        // With `sync_one`: the groups the events named (`None`: something else happened).
        let mut groups = Some(BTreeSet::new());
        let event_at = match waited {
            Ok(Ok(event)) => {
                let at = Instant::now();
                note_event(&event, &mut groups);
                outcome.events += 1;
                // One sync reads everything the queued events announce.
                while let Ok(Ok(event)) = tokio::time::timeout(Duration::ZERO, messenger.next_event()).await {
                    note_event(&event, &mut groups);
                    outcome.events += 1;
                }
                Some(at)
            }
            Ok(Err(error)) => return Err(error).context("device session"),
            Err(_) => {
                groups = None;
                None
            }
        };
        let began = Instant::now();
        match groups.filter(|_| sync_one && is_ready) {
            Some(groups) => {
                for group in &groups {
                    messenger.sync_one(group).await.context("device sync")?;
                }
            }
            None => {
                messenger.sync().await.context("device sync")?;
            }
        }
        let synced = Instant::now();
        outcome.syncs += 1;
        outcome.sync_s += (synced - began).as_secs_f64();
        if !is_ready && mailbox_ready(&messenger)? {
            is_ready = true;
            let _ = ready.send(id);
        }
        // `SyncReport::mail` would say whether pushes were applied, but `Messenger::sync`
        // leaves it at 0 (it adds up only `messages` and `failures` of each group): the
        // mailbox group's cursor says whether anything new was read.
        let cursor = messenger.mailbox()?.map(|c| c.cursor);
        if cursor != last_cursor && expected > 0 {
            last_cursor = cursor;
            for mail in messenger.mail().list(Some("INBOX")).map_err(ClientError::from)? {
                if let Some(index) = index_of(&tag, &mail.summary.subject)
                    && found.insert(index)
                {
                    outcome.arrivals.push(Arrival {
                        index,
                        at: synced,
                        event_at,
                    });
                }
            }
        }
    }
    Ok(outcome)
}

/// Enrols a device with `code` into `dir` and opens it (which publishes its key packages,
/// so the connector can add it to the mailbox group).
async fn open_device(dir: PathBuf, code: String) -> Result<Messenger> {
    let code = ActivationCode::parse(&code)?;
    let profile = redoubt_client::enroll(&dir, &code, DeviceName::parse("bench-mail")?).await?;
    Ok(Messenger::open(&profile).await?)
}

fn panic_text(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panicked".into()),
        Err(error) => error.to_string(),
    }
}

pub async fn run(target: &mut Target, common: &Common, args: &MailPushArgs) -> Result<Report> {
    if target.mode == "remote" {
        bail!(
            "mail-push starts its own mail servers and sets the organisation's mail settings: \
             it runs only against a server this harness starts"
        );
    }
    if args.users == 0 || args.size == 0 || args.connections == 0 || args.rate.is_nan() || args.rate <= 0.0 {
        bail!("--users, --size, --connections and --rate must be positive");
    }
    let users: Vec<UserName> = (0..args.users)
        .map(|i| UserName::parse(&format!("{}{i}", common.prefix)))
        .collect::<Result<_, _>>()?;
    // The admin is a user too, so it gets a mailbox: a user whose mailbox cannot be set up
    // (no device with key packages) would have the connector retry on every round.
    let admin = target.admin.info().user.clone();
    let mut accounts: Vec<(String, String)> = users
        .iter()
        .chain(std::iter::once(&admin))
        .enumerate()
        .map(|(i, u)| (format!("{u}@{DOMAIN}"), format!("bench-pw-{i}")))
        .collect();
    accounts.sort();
    accounts.dedup_by(|a, b| a.0 == b.0);
    let peers = tokio::task::spawn_blocking(move || {
        let refs: Vec<(&str, &str)> = accounts.iter().map(|(a, p)| (a.as_str(), p.as_str())).collect();
        MailPeers::start(&refs)
    })
    .await
    .map_err(|e| anyhow!("starting Dovecot and Postfix: {}", panic_text(e)))?;
    let result = run_with_peers(target, common, args, &users, &admin, &peers).await;
    let stopped = tokio::task::spawn_blocking(move || drop(peers)).await;
    let report = result?;
    stopped.map_err(|e| anyhow!("stopping the mail servers: {}", panic_text(e)))?;
    Ok(report)
}

async fn run_with_peers(
    target: &mut Target,
    common: &Common,
    args: &MailPushArgs,
    users: &[UserName],
    admin: &UserName,
    peers: &MailPeers,
) -> Result<Report> {
    let setup_began = Instant::now();
    let setup_deadline = common.deadline.min(setup_began + SETUP_MAX);
    let tag = Arc::new(format!(
        "redoubt-bench mail-push {}",
        common.prefix.trim_end_matches('-')
    ));
    let addresses: Arc<Vec<String>> = Arc::new(users.iter().map(|u| format!("{u}@{DOMAIN}")).collect());

    // Users and their devices; one more device for the admin.
    let imported = users
        .iter()
        .map(|u| ImportedUser {
            user: u.clone(),
            display_name: None,
            groups: Vec::new(),
            roles: Vec::new(),
        })
        .collect();
    let Response::Imported(issued) = target
        .admin
        .request(Request::AdminUserImport { users: imported })
        .await
        .context("importing users")?
    else {
        bail!("unexpected answer to AdminUserImport");
    };
    let mut codes: Vec<String> = issued.into_iter().map(|i| i.code).collect();
    codes.push(target.admin.admin_device_add(admin.clone()).await?.code);
    let profiles = tempfile::tempdir()?;
    let dirs: Vec<(PathBuf, String)> = codes
        .into_iter()
        .enumerate()
        .map(|(i, code)| (profiles.path().join(format!("device-{i}")), code))
        .collect();
    let messengers = crate::bounded(dirs, ENROLL_CONCURRENCY, |_, (dir, code)| open_device(dir, code))
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()
        .context("enrolling the devices")?;

    // Each device runs its loop from now on: it must see its mailbox set up.
    let mut per_user = vec![0usize; users.len()];
    for index in 0..args.size {
        per_user[index % users.len()] += 1;
    }
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut devices = Vec::new();
    for (id, messenger) in messengers.into_iter().enumerate() {
        let expected = per_user.get(id).copied().unwrap_or(0);
        devices.push(tokio::spawn(device_loop(
            id,
            messenger,
            expected,
            args.sync_one,
            tag.clone(),
            ready_tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(ready_tx);

    let settings = MailServerSettings {
        imap: HostPort {
            host: "127.0.0.1".into(),
            port: peers.imap_port,
        },
        smtp: HostPort {
            host: "127.0.0.1".into(),
            port: peers.submission_port,
        },
        security: MailSecurity::None,
        master_user: peers.master_user.clone(),
        master_password: peers.master_password.clone(),
        domain: DOMAIN.into(),
    };
    match target.admin.request(Request::AdminMailSet(settings)).await? {
        Response::Done => {}
        other => bail!("unexpected answer to AdminMailSet: {other:?}"),
    }
    let mail_set = Instant::now();
    let mut ready = BTreeSet::new();
    while ready.len() < devices.len() {
        match tokio::time::timeout_at(setup_deadline.into(), ready_rx.recv()).await {
            Ok(Some(id)) => {
                ready.insert(id);
            }
            Ok(None) | Err(_) => {
                let _ = stop_tx.send(true);
                let mut why = Vec::new();
                for device in devices {
                    if let Ok(Err(error)) = device.await {
                        why.push(format!("{error:#}"));
                    }
                }
                bail!(
                    "{} of {} mailboxes ready after {:.0} s{}\n{}",
                    ready.len(),
                    users.len() + 1,
                    mail_set.elapsed().as_secs_f64(),
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", why.join("; "))
                    },
                    peers.diagnostics()
                );
            }
        }
    }
    let mailboxes_ready_s = mail_set.elapsed().as_secs_f64();
    // The connector pushes the folders, syncs each and then idles on INBOX.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The timed window.
    let peers_root = std::fs::canonicalize(peers.dir.path())?;
    let inboxes: Vec<PathBuf> = addresses
        .iter()
        .map(|a| peers_root.join("dovecot/mail").join(a))
        .collect();
    let watching = Arc::new(AtomicBool::new(false));
    let watcher = {
        let tag = tag.clone();
        let stop = watching.clone();
        tokio::task::spawn_blocking(move || watch_maildirs(inboxes, &tag, &stop))
    };
    let meter: &Meter = &target.meter;
    meter.reset_peak();
    let server_before = meter.read();
    let generator_before = crate::process_cpu_s();
    let mail_servers_before = mail_servers_cpu_s(&peers_root);
    let window_began = Instant::now();
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let connections = args.connections.min(args.size);
    let senders: Vec<_> = (0..connections)
        .map(|k| {
            tokio::spawn(sender(
                peers.smtp_port,
                k,
                connections,
                args.size,
                args.rate,
                start,
                addresses.clone(),
                tag.clone(),
                args.body_bytes,
                common.deadline,
            ))
        })
        .collect();
    let mut sent: Vec<Sent> = Vec::with_capacity(args.size);
    let mut send_errors = Vec::new();
    for task in senders {
        let (mails, error) = task.await.map_err(|e| anyhow!("sender failed: {e}"))?;
        sent.extend(mails);
        send_errors.extend(error);
    }
    let sending_done = Instant::now();

    // Every device ends once it has its mails; the admin's runs until stopped.
    let drain_deadline = common.deadline.min(sending_done + DRAIN_MAX);
    let admin_device = devices.pop().ok_or_else(|| anyhow!("no admin device"))?;
    let mut outcomes = Vec::new();
    let mut device_errors = Vec::new();
    let mut finished = Vec::new();
    let mut timed_out = false;
    for device in &mut devices {
        match tokio::time::timeout_at(drain_deadline.into(), device).await {
            Ok(result) => finished.push(result),
            Err(_) => {
                timed_out = true;
                break;
            }
        }
    }
    let window_ended = Instant::now();
    let server_after = meter.read();
    let mut generator_cpu_s = crate::process_cpu_s() - generator_before;
    if matches!(meter, Meter::Threads) {
        generator_cpu_s -= server_after.cpu_s - server_before.cpu_s;
    }
    let mail_servers_cpu = mail_servers_cpu_s(&peers_root) - mail_servers_before;
    let _ = stop_tx.send(true);
    watching.store(true, Ordering::Relaxed);
    let maildirs = watcher.await?;
    let in_mailbox = &maildirs.delivered;
    // Stopped, every device returns what it saw.
    let mut results = finished;
    for device in devices.into_iter().skip(results.len()) {
        results.push(device.await);
    }
    for result in results {
        match result {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(error)) => device_errors.push(format!("{error:#}")),
            Err(error) => device_errors.push(format!("device task: {error}")),
        }
    }
    if let Err(error) = admin_device.await? {
        device_errors.push(format!("admin device: {error:#}"));
    }

    // Figures.
    let accepted: BTreeMap<usize, Sent> = sent.iter().map(|s| (s.index, *s)).collect();
    let mut arrivals: BTreeMap<usize, Arrival> = BTreeMap::new();
    let (mut events, mut syncs, mut sync_s) = (0, 0, 0.0);
    for outcome in &outcomes {
        events += outcome.events;
        syncs += outcome.syncs;
        sync_s += outcome.sync_s;
        for arrival in &outcome.arrivals {
            arrivals.insert(arrival.index, *arrival);
        }
    }
    let received = arrivals.keys().filter(|i| accepted.contains_key(i)).count();
    let by_poll = arrivals.values().filter(|a| a.event_at.is_none()).count();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut total = Vec::new();
    let mut mail_server = Vec::new();
    let mut redoubt = Vec::new();
    let mut imap_notice = Vec::new();
    let mut connector = Vec::new();
    let mut device = Vec::new();
    for (index, sent) in &accepted {
        let Some(arrival) = arrivals.get(index) else {
            continue;
        };
        total.push(ms(arrival.at.saturating_duration_since(sent.accepted)));
        let Some(delivered) = in_mailbox.get(index) else {
            continue;
        };
        mail_server.push(ms(delivered.saturating_duration_since(sent.accepted)));
        redoubt.push(ms(arrival.at.saturating_duration_since(*delivered)));
        if let (Some(noticed), Some(event_at)) = (maildirs.noticed.get(index), arrival.event_at) {
            imap_notice.push(ms(noticed.saturating_duration_since(*delivered)));
            connector.push(ms(event_at.saturating_duration_since(*noticed)));
            device.push(ms(arrival.at.saturating_duration_since(event_at)));
        }
    }
    if let Some(path) = &args.trace {
        // Per mail, ms since the window began (empty: never).
        let at = |t: Option<&Instant>| {
            t.map(|t| format!("{:.1}", ms(t.saturating_duration_since(window_began))))
                .unwrap_or_default()
        };
        let mut csv = String::from("mail,user,accepted,in_mailbox,in_cur,device_event,listed\n");
        for (index, sent) in &accepted {
            let arrival = arrivals.get(index);
            csv.push_str(&format!(
                "{index},{},{},{},{},{},{}\n",
                index % users.len(),
                at(Some(&sent.accepted)),
                at(in_mailbox.get(index)),
                at(maildirs.noticed.get(index)),
                at(arrival.and_then(|a| a.event_at.as_ref())),
                at(arrival.map(|a| &a.at)),
            ));
        }
        std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?;
    }
    let in_mailbox_count = in_mailbox.keys().filter(|i| accepted.contains_key(i)).count();
    let total = Percentiles::of(total);
    let mail_server = Percentiles::of(mail_server);
    let redoubt = Percentiles::of(redoubt);
    let imap_notice = Percentiles::of(imap_notice);
    let connector = Percentiles::of(connector);
    let device = Percentiles::of(device);
    let transaction = Percentiles::of(sent.iter().map(|s| ms(s.transaction)).collect());
    let first_accept = sent.iter().map(|s| s.accepted).min();
    let last_arrival = arrivals.values().map(|a| a.at).max();
    let push_window_s = match (first_accept, last_arrival) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let send_window_s = match (first_accept, sent.iter().map(|s| s.accepted).max()) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let server_cpu_s = server_after.cpu_s - server_before.cpu_s;

    let mut s = Section::new("");
    s.add("users", users.len(), "");
    s.add("mails", args.size, "");
    s.add("mails_accepted", sent.len(), "");
    s.add("mails_in_mailbox", in_mailbox_count, "");
    s.add("mails_pushed", received, "");
    s.num(
        "accepted_per_s",
        (sent.len().saturating_sub(1)) as f64 / send_window_s.max(1e-9),
        1,
        "mail/s",
    );
    s.num(
        "pushed_per_s",
        received as f64 / push_window_s.max(1e-9),
        1,
        "mail/s",
    );
    s.num("push_latency_p50", total.p50, 1, "ms");
    s.num("push_latency_p99", total.p99, 1, "ms");
    s.num("push_latency_max", total.max, 1, "ms");
    s.num("mail_server_latency_p50", mail_server.p50, 1, "ms");
    s.num("mail_server_latency_p99", mail_server.p99, 1, "ms");
    s.num("redoubt_latency_p50", redoubt.p50, 1, "ms");
    s.num("redoubt_latency_p99", redoubt.p99, 1, "ms");
    s.num("redoubt_latency_max", redoubt.max, 1, "ms");
    s.num("imap_notice_p50", imap_notice.p50, 1, "ms");
    s.num("imap_notice_p99", imap_notice.p99, 1, "ms");
    s.num("connector_to_event_p50", connector.p50, 1, "ms");
    s.num("connector_to_event_p99", connector.p99, 1, "ms");
    s.num("device_event_to_listed_p50", device.p50, 1, "ms");
    s.num("device_event_to_listed_p99", device.p99, 1, "ms");
    s.num("smtp_transaction_p50", transaction.p50, 2, "ms");
    s.num("smtp_transaction_p99", transaction.p99, 2, "ms");
    s.num("server_cpu_s", server_cpu_s, 2, "s");
    s.num(
        "server_cpu_s_per_1000_mails",
        server_cpu_s / received.max(1) as f64 * 1000.0,
        2,
        "s",
    );
    s.num("server_peak_rss", server_after.hwm_kib as f64 / 1024.0, 1, "MiB");
    s.num("mail_servers_cpu_s", mail_servers_cpu, 2, "s");
    s.num("load_generator_cpu_s", generator_cpu_s, 2, "s");
    s.add("device_events", events, "");
    s.add("device_syncs", syncs, "");
    s.num("device_sync_avg", sync_s * 1000.0 / syncs.max(1) as f64, 1, "ms");
    s.add("found_by_poll", by_poll, "");
    s.num("mailboxes_ready_s", mailboxes_ready_s, 2, "s");
    s.num("setup_s", (window_began - setup_began).as_secs_f64(), 2, "s");
    s.num("window_s", (window_ended - window_began).as_secs_f64(), 2, "s");

    let mut notes = vec![
        "push latency = Postfix's 250 to the mail's DATA → the device's mail store lists it \
         (after the sync that fetched it); split at the moment Dovecot's LMTP delivery put \
         the mail's file in the maildir (watched every 5 ms): mail server = accepted → in \
         the mailbox (Postfix queue, LMTP), Redoubt = in the mailbox → on the device (IDLE \
         notice, the connector's fetch and MLS push, the server, the device's event and sync)"
            .to_owned(),
        format!(
            "{} users, one device each, plus a mail device for the admin (a mailbox too: the \
             connector serves every user); mails round-robin over the users on {} SMTP \
             connections; devices sync on each server event and at least every {} s \
             (found_by_poll: mails a periodic sync found before their event was read)",
            users.len(),
            connections,
            DEVICE_POLL.as_secs()
        ),
        "server CPU includes the mail connector (it runs on the server's runtime, as in \
         `redoubt server`); mail_servers_cpu_s is Dovecot's and Postfix's processes with \
         their exited workers"
            .to_owned(),
    ];
    if meter.memory_includes_load_generator() {
        notes.push(
            "the server runs in this process: RSS is the whole process (server, connector, \
             devices); use --spawn-server for the server's and connector's memory alone"
                .into(),
        );
    }
    notes.push(format!(
        "Redoubt's part split further (mails a device found after an event): imap_notice = in \
         new/ → moved to cur/ (Dovecot does so when a session with INBOX selected read-write \
         syncs it: the connector's, woken in IDLE); connector_to_event = that → the device's \
         server event (the connector's IMAP round trips and MLS push, the server's append and \
         notice); device_event_to_listed = the event → listed (the device's sync); the \
         maildirs were looked at {} times",
        maildirs.rounds
    ));
    // Dovecot notices new mail in IDLE through inotify, one instance per IMAP process, all
    // under one uid here (as with virtual users); past the kernel's per-uid limit it falls
    // back to looking every 30 s (mailbox_idle_check_interval).
    let inotify_max = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    if let Some(max) = inotify_max.filter(|max| users.len() + 1 > max.saturating_sub(8)) {
        notes.push(format!(
            "{} mailboxes idle in Dovecot against fs.inotify.max_user_instances = {max} for its \
             uid: past the limit Dovecot logs \"Inotify instance limit … exceeded, disabling\" \
             and notices new mail only every 30 s in those mailboxes (raise the sysctl)",
            users.len() + 1
        ));
    }
    if timed_out {
        notes.push(format!(
            "the devices did not have every mail {} s after the last was accepted (or the \
             --timeout-s deadline passed)",
            DRAIN_MAX.as_secs()
        ));
    }
    for error in send_errors.iter().chain(&device_errors) {
        notes.push(format!("error: {error}"));
    }
    if in_mailbox.len() < args.size {
        eprintln!(
            "mail-push: {} of {} mails reached the mailboxes; the mail servers' logs:\n{}",
            in_mailbox.len(),
            args.size,
            peers.diagnostics()
        );
    }
    let ok = !timed_out
        && send_errors.is_empty()
        && device_errors.is_empty()
        && sent.len() == args.size
        && received == args.size
        && in_mailbox_count == args.size;
    Ok(Report {
        scenario: "mail-push".into(),
        description: format!(
            "{} mails of {} bytes by SMTP at {} mail/s to {} users; pushed by the connector to \
             their devices",
            args.size,
            args.body_bytes,
            args.rate,
            users.len()
        ),
        settings: json!({
            "server": target.mode,
            "server_limits": target.limits.clone().unwrap_or_else(|| json!("the running server's own configuration")),
            "scenario": {
                "users": users.len(),
                "mails": args.size,
                "rate_per_s": args.rate,
                "smtp_connections": connections,
                "body_bytes": args.body_bytes,
                "device_sync": if args.sync_one { "sync_one per event" } else { "sync per event" },
                "mail_servers": "Dovecot (IMAP, LMTP) + Postfix (SMTP) on loopback, security none",
            },
            "open_files_limit": common.fd_limit,
        }),
        sections: vec![s],
        notes,
        ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        let tag = "redoubt-bench mail-push b1234";
        assert_eq!(index_of(tag, &subject(tag, 42)), Some(42));
        assert_eq!(index_of(tag, "something else"), None);
    }

    #[test]
    fn data_is_dot_stuffed_and_terminated() {
        let data = data_of("t", 7, "a@corp.test", 500);
        let text = String::from_utf8(data).unwrap_or_default();
        assert!(text.contains("\r\n\r\n..7 begins with a dot"), "{text}");
        assert!(text.ends_with("\r\n.\r\n"));
        assert_eq!(text.matches("\r\n.\r\n").count(), 1);
        assert!(text.len() > 500);
    }

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(
            redoubt_connector::rfc5322_date(0),
            "Thu, 1 Jan 1970 00:00:00 +0000"
        );
        assert_eq!(
            redoubt_connector::rfc5322_date(1_795_341_600),
            "Sun, 22 Nov 2026 10:00:00 +0000"
        );
    }
}
