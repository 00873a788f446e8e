//! Redoubt's mail connector: the BES part of Redoubt.
//!
//! It runs beside the server (the `redoubt server` process starts it) and is a device of
//! its own: the service user [`redoubt_mls::mail::CONNECTOR_USER`], enrolled with a code
//! the server issues, talking to the server over the real protocol like any device. For
//! each user with a mail address it keeps a *mailbox group* (an MLS group of the user's
//! devices and itself) and an IMAP session to the user's mailbox, logged in as the
//! organisation's service account. New, changed and removed messages are pushed into the
//! group as MLS application messages; devices answer with commands (send, reply, flag,
//! move, delete, fetch a body or an attachment) that it carries out on IMAP and SMTP.
//!
//! When the organisation has a CalDAV/CardDAV server, a second task per user ([`dav`])
//! mirrors the user's calendar and address book into the same group and carries out the
//! calendar and contacts commands.
//!
//! What it keeps (its profile folder, `DATA/connector/`, in the encrypted vault): its MLS
//! state, per-folder sync state (UIDVALIDITY, last UID, flags) and per-collection sync
//! state (hrefs and ETags). No mail, event or contact content.
//! Exactly once: a new message is pushed under a client message id derived from (user,
//! folder, UIDVALIDITY, UID), so after a crash the push is repeated under the same id and
//! the server returns the first copy; the folder state is saved after each push.

mod compose;
mod dav;
mod mailbox;
mod smtp;
mod stream;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use redoubt_client::{ClientError, Messenger, Profile, QueuedMailCommand, Session, Vault};
use redoubt_mls::AppBody;
use redoubt_mls::mail::{MAILBOX_GROUP_NAME, MailPush};
use redoubt_proto::{ActivationCode, Bytes, DeviceName, Event, GroupId, UserName};
use redoubt_server::{ConnectorConfig, ServerHandle};
use sha2::Digest;
use tokio::sync::{Mutex, mpsc, watch};

/// The connector's own namespace in its vault.
const STATE_NS: &str = "connector";
/// How often every mailbox group is fully synced (new devices added, removals committed).
const FULL_SYNC_EVERY: Duration = Duration::from_secs(60);
/// Commands waiting for one mailbox's task.
const COMMANDS_QUEUED_MAX: usize = 64;

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The UTC calendar date (year, month 1–12, day 1–31) of a Unix time (Howard Hinnant's
/// days-to-civil algorithm).
fn civil_date(unix_s: i64) -> (i64, usize, i64) {
    let z = unix_s.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month as usize, day)
}

/// `Sun, 22 Nov 2026 10:00:00 +0000`, as RFC 5322's Date header wants it.
pub fn rfc5322_date(unix_s: i64) -> String {
    // 1970-01-01 was a Thursday.
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let (year, month, day) = civil_date(unix_s);
    let secs = unix_s.rem_euclid(86_400);
    format!(
        "{}, {day} {} {year} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[unix_s.div_euclid(86_400).rem_euclid(7) as usize],
        MONTHS[month - 1],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A client message id that is the same every time the same thing is pushed.
pub(crate) fn deterministic_id(user: &UserName, parts: &[&str], a: u32, b: u32) -> Bytes<16> {
    let mut hash = sha2::Sha256::new();
    hash.update(b"redoubt/connector-push/v1\0");
    hash.update(user.as_str().as_bytes());
    for part in parts {
        hash.update([0]);
        hash.update(part.as_bytes());
    }
    hash.update(a.to_be_bytes());
    hash.update(b.to_be_bytes());
    let digest = hash.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    Bytes(id)
}

/// Where one mailbox group's commands go: mail to its mailbox task, calendar and contacts
/// to its DAV task (when the organisation has a calendar server).
struct Route {
    user: UserName,
    mail: mpsc::Sender<Command>,
    dav: Option<mpsc::Sender<Command>>,
    /// Moves when a device joins the mailbox group: the tasks push everything again, so
    /// the new device starts with the mailbox, not only what arrives after it.
    replays: watch::Sender<u64>,
}

/// What woke the connector's main loop.
enum Wake {
    Event(Result<Event, ClientError>),
    /// A device can now be added to groups.
    DevicesChanged,
    /// Nothing for a while: a full sync anyway.
    Quiet,
}

/// A queued command, handed to its mailbox's task.
#[derive(Debug)]
pub(crate) struct Command {
    pub queued: QueuedMailCommand,
}

/// What every mailbox task shares: the one MLS session (held briefly per push), the
/// server, and the vault for sync state.
pub(crate) struct Shared {
    messenger: Mutex<Messenger>,
    /// A connection of its own for attachments and long bodies, so a large file never
    /// holds up other mailboxes' pushes (opened on first use, reopened after an error).
    transfers: Mutex<Option<Session>>,
    profile: Profile,
    pub handle: ServerHandle,
    pub state: Vault,
    /// Commands handed to a task and not yet answered (they stay queued in the vault).
    in_flight: std::sync::Mutex<BTreeSet<(GroupId, u64)>>,
    /// Log positions of this connector's own pushes not yet behind its cursor, per group.
    pushed: std::sync::Mutex<BTreeMap<GroupId, BTreeSet<u64>>>,
}

impl Shared {
    /// Pushes into a mailbox group; `id` makes a repeat a no-op at the server.
    pub(crate) async fn push(
        &self,
        group: &GroupId,
        push: &MailPush,
        id: Option<Bytes<16>>,
    ) -> Result<u64, ClientError> {
        let id = id.unwrap_or_else(random_id);
        let body = AppBody::Mail(push.clone());
        let seq = self
            .messenger
            .lock()
            .await
            .send_body_with_id(group, &body, id)
            .await?;
        self.pushed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(*group)
            .or_default()
            .insert(seq);
        Ok(seq)
    }

    /// Whether every entry of `group` after `cursor` up to `seq` is one of our own pushes
    /// (forgetting those at or before the cursor).
    fn only_own(&self, group: &GroupId, cursor: u64, seq: u64) -> bool {
        let mut pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
        let own = pushed.entry(*group).or_default();
        *own = own.split_off(&(cursor + 1));
        if seq <= cursor {
            return true;
        }
        own.range(cursor + 1..=seq).count() as u64 == seq - cursor
    }

    pub(crate) async fn upload(
        &self,
        group: &GroupId,
        name: String,
        bytes: Vec<u8>,
    ) -> Result<redoubt_mls::Attachment, ClientError> {
        let length = bytes.len() as u64;
        let mut transfers = self.transfers_session().await?;
        let session = transfers
            .as_mut()
            .ok_or_else(|| ClientError::Protocol("no session".into()))?;
        let result =
            redoubt_client::attachment::upload(session, group, name, bytes.as_slice(), length, |_, _| {})
                .await;
        if result.is_err() {
            *transfers = None;
        }
        result
    }

    pub(crate) async fn download(
        &self,
        attachment: &redoubt_mls::Attachment,
        out: &mut Vec<u8>,
    ) -> Result<(), ClientError> {
        let mut transfers = self.transfers_session().await?;
        let session = transfers
            .as_mut()
            .ok_or_else(|| ClientError::Protocol("no session".into()))?;
        let result = redoubt_client::attachment::download(session, attachment, out, |_, _| {}).await;
        if result.is_err() {
            *transfers = None;
        }
        result
    }

    /// The transfer connection, opened if there is none.
    async fn transfers_session(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Session>>, ClientError> {
        let mut transfers = self.transfers.lock().await;
        if transfers.is_none() {
            *transfers = Some(Session::open(&self.profile).await?);
        }
        Ok(transfers)
    }

    /// Answers a command with its outcome, then forgets it; if the answer cannot be pushed
    /// the command stays queued and is carried out again later.
    pub(crate) async fn answer(
        &self,
        user: &UserName,
        group: &GroupId,
        command: &QueuedMailCommand,
        error: Option<String>,
    ) {
        let push = MailPush::Outcome {
            command_id: command.command.id(),
            error,
        };
        let id = deterministic_id(user, &["outcome"], 0, command.seq as u32);
        if let Err(error) = self.push(group, &push, Some(id)).await {
            tracing::warn!(%user, %error, "could not answer a mail command; it stays queued");
            return;
        }
        self.finish(command).await;
    }

    /// Until `deadline`, answers every command that arrives with `why` (for a task that
    /// cannot carry them out now). `false` once the channel closed (the connector stops).
    pub(crate) async fn refuse_until(
        &self,
        user: &UserName,
        group: &GroupId,
        commands: &mut mpsc::Receiver<Command>,
        deadline: tokio::time::Instant,
        why: &str,
    ) -> bool {
        loop {
            match tokio::time::timeout_at(deadline, commands.recv()).await {
                Err(_) => return true,
                Ok(None) => return false,
                Ok(Some(command)) => {
                    self.answer(user, group, &command.queued, Some(why.to_owned()))
                        .await;
                }
            }
        }
    }

    pub(crate) async fn finish(&self, command: &QueuedMailCommand) {
        if let Err(error) = self.messenger.lock().await.finish_mail_command(command) {
            tracing::warn!(%error, "could not forget a finished mail command");
        }
        // A finished send is never carried out again: its record has served.
        if let Err(error) = self.state.delete(STATE_NS, sent_record(&command.command.id())) {
            tracing::warn!(%error, "could not forget a finished send's record");
        }
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(command.group_id, command.seq));
    }
}

/// The vault key recording that SMTP accepted the send command `id`.
fn sent_record(id: &Bytes<16>) -> String {
    format!("sent/{}", id.to_hex())
}

fn random_id() -> Bytes<16> {
    use rand_core::RngCore;
    let mut id = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut id);
    Bytes(id)
}

/// Runs the connector until `stop` turns true: idle while no mail server is set, and
/// restarted whenever the settings change.
pub async fn run(handle: ServerHandle, dir: PathBuf, mut stop: watch::Receiver<bool>) {
    let mut changes = handle.mail_changes();
    loop {
        changes.borrow_and_update();
        let config = match handle.mail_config().await {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(%error, "mail settings unreadable; the connector waits for new ones");
                None
            }
        };
        // On a task of its own, so that a panic (a bug) restarts the connector rather than
        // ending it; the set aborts the task when settings change or the server stops.
        let mut serving = tokio::task::JoinSet::new();
        if let Some(config) = config {
            let (handle, dir) = (handle.clone(), dir.clone());
            serving.spawn(async move { serve(&handle, &dir, config).await });
        }
        let finished = async {
            match serving.join_next().await {
                Some(Err(error)) if error.is_panic() => {
                    tracing::error!(%error, "the mail connector failed; restarting it");
                }
                Some(_) => {}
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = finished => {
                // Could not start (the server not yet listening, say) or failed: try again soon.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            _ = changes.changed() => tracing::info!("mail settings changed; connector restarting"),
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Opens the connector's device profile (enrolling it on first use) and its session. The
/// profile is locked with a passcode derived from the root key, so a copy of the data
/// folder without the root key does not open the connector's MLS state.
async fn open_messenger(
    handle: &ServerHandle,
    dir: &std::path::Path,
) -> Result<(Profile, Messenger), ClientError> {
    let passcode = handle.connector_passcode();
    if !dir.join("profile.json").exists() && !dir.join("keys.json").exists() {
        let issued = handle
            .connector_activation_code()
            .await
            .map_err(|e| ClientError::Profile(e.to_string()))?;
        let code = ActivationCode::parse(&issued.code).map_err(|e| ClientError::Profile(e.to_string()))?;
        let name = DeviceName::parse("mail connector").map_err(|e| ClientError::Profile(e.to_string()))?;
        redoubt_client::enroll(dir, &code, name).await?;
        tracing::info!(dir = %dir.display(), "mail connector enrolled");
    }
    let mut profile = Profile::load(dir, Some(passcode.as_str()))?;
    if !profile.has_passcode() {
        profile.set_passcode(Some(passcode.as_str()))?;
    }
    let messenger = Messenger::open(&profile).await?;
    Ok((profile, messenger))
}

/// Serves every mailbox of `config`; returns only if it cannot start.
async fn serve(handle: &ServerHandle, dir: &std::path::Path, config: ConnectorConfig) {
    let (profile, messenger) = match open_messenger(handle, dir).await {
        Ok(opened) => opened,
        Err(error) => {
            tracing::warn!(%error, "the mail connector could not open its session");
            return;
        }
    };
    // Events arrive on a session of their own, so waiting for them never holds the one
    // the mailbox tasks push through.
    let mut events = match Session::open(&profile).await {
        Ok(session) => session,
        Err(error) => {
            tracing::warn!(%error, "the mail connector could not open its event session");
            return;
        }
    };
    let shared = Arc::new(Shared {
        messenger: Mutex::new(messenger),
        transfers: Mutex::new(None),
        state: profile.vault().clone(),
        profile,
        handle: handle.clone(),
        in_flight: std::sync::Mutex::new(BTreeSet::new()),
        pushed: std::sync::Mutex::new(BTreeMap::new()),
    });
    let mut routes: BTreeMap<GroupId, Route> = BTreeMap::new();
    let mut waiting: Vec<redoubt_server::MailUser> = config.users.clone();
    let mut tasks = tokio::task::JoinSet::new();
    let mut last_full_sync = tokio::time::Instant::now() - FULL_SYNC_EVERY;
    let mut devices = handle.device_changes();
    let mut retry_waiting = true;
    loop {
        // Mailbox groups for users that have none yet (they need a device first): tried
        // at the start and after each full sync (when a device may have appeared).
        let mut still_waiting = Vec::new();
        let candidates = if retry_waiting {
            std::mem::take(&mut waiting)
        } else {
            Vec::new()
        };
        retry_waiting = false;
        for user in candidates {
            match mailbox_group(&shared, &user.user).await {
                Ok(Some(group)) => {
                    let (mail, receiver) = mpsc::channel(COMMANDS_QUEUED_MAX);
                    let (replays, replayed) = watch::channel(replay_generation(&shared, &user.user));
                    let dav = config.dav.clone().map(|settings| {
                        let (sender, receiver) = mpsc::channel(COMMANDS_QUEUED_MAX);
                        let task = dav::Dav::new(
                            shared.clone(),
                            settings,
                            user.clone(),
                            group,
                            receiver,
                            replayed.clone(),
                        );
                        tasks.spawn(task.run());
                        sender
                    });
                    routes.insert(
                        group,
                        Route {
                            user: user.user.clone(),
                            mail,
                            dav,
                            replays,
                        },
                    );
                    let mailbox = mailbox::Mailbox {
                        shared: shared.clone(),
                        server: config.server.clone(),
                        user,
                        group,
                        commands: receiver,
                        replays: replayed,
                    };
                    tasks.spawn(mailbox.run());
                }
                Ok(None) => {
                    handle.report_mail_status(&user.user, false, "waiting for the user's first device");
                    still_waiting.push(user);
                }
                Err(error) => {
                    tracing::warn!(user = %user.user, %error, "could not set up the mailbox group");
                    handle.report_mail_status(&user.user, false, &format!("mailbox group: {error}"));
                    still_waiting.push(user);
                }
            }
        }
        waiting.extend(still_waiting);

        // Read the groups: new devices join, removals are committed, commands queue up.
        // An event naming a group reads that group; anything else, or a quiet interval,
        // reads everything (which also adds users' new devices).
        let wake = tokio::select! {
            event = events.next_event() => Wake::Event(event),
            _ = devices.changed() => Wake::DevicesChanged,
            () = tokio::time::sleep_until(last_full_sync + FULL_SYNC_EVERY) => Wake::Quiet,
        };
        let commands = {
            let mut messenger = shared.messenger.lock().await;
            // Our own pushes come back as events too: when every entry after what we read
            // is our own, there is nothing to read.
            let appended = match &wake {
                Wake::Event(Ok(event)) => event.appended(),
                _ => None,
            };
            if let Some((group_id, seq)) = appended
                && let Ok(Some(conversation)) = messenger.conversation_by_id(&group_id)
                && shared.only_own(&group_id, conversation.cursor, seq)
            {
                continue;
            }
            let (result, full) = match wake {
                Wake::Event(Ok(_)) if let Some((group_id, _)) = appended => match routes.get(&group_id) {
                    Some(route) => {
                        let synced = messenger.sync_one(&group_id).await.map(|_| ());
                        if synced.is_ok() {
                            notice_new_devices(&shared, &messenger, std::iter::once((&group_id, route)));
                        }
                        (synced, false)
                    }
                    // Not a mailbox group of ours: nothing to do.
                    None => (Ok(()), false),
                },
                Wake::Event(Ok(event @ (Event::PolicyChanged { .. } | Event::Command(_)))) => {
                    if let Err(error) = events.handle_event(event).await {
                        tracing::error!(%error, "the mail connector's device was told to stop");
                        return;
                    }
                    (Ok(()), true)
                }
                Wake::Event(Err(error)) => {
                    tracing::warn!(%error, "connector event session lost; reopening");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match Session::open(&shared.profile).await {
                        Ok(session) => events = session,
                        Err(error) => tracing::warn!(%error, "could not reopen the event session"),
                    }
                    (Ok(()), true)
                }
                Wake::Event(Ok(_)) | Wake::DevicesChanged | Wake::Quiet => (Ok(()), true),
            };
            // Everything: Welcomes, every group's log, users' new devices (added here),
            // key packages. Only on news that may concern any group, or once a minute.
            let result = if full && result.is_ok() {
                last_full_sync = tokio::time::Instant::now();
                retry_waiting = true;
                let synced = messenger.sync().await.map(|_| ());
                if synced.is_ok() {
                    notice_new_devices(&shared, &messenger, routes.iter());
                }
                synced
            } else {
                result
            };
            if let Err(error) = result {
                tracing::warn!(%error, "connector sync failed");
                if matches!(error, ClientError::Connect { .. }) {
                    let _ = messenger.reconnect(8, |_, _| {}).await;
                }
            }
            messenger.mail_commands().unwrap_or_default()
        };
        for queued in commands {
            let key = (queued.group_id, queued.seq);
            let fresh = shared
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key);
            if !fresh {
                continue;
            }
            let Some(route) = routes.get(&queued.group_id) else {
                // Not a mailbox this connector serves: drop it.
                let _ = shared.messenger.lock().await.finish_mail_command(&queued);
                shared
                    .in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                continue;
            };
            let task = if queued.command.is_dav() {
                route.dav.as_ref()
            } else {
                Some(&route.mail)
            };
            let Some(task) = task else {
                let why = "no calendar server is set (redoubt admin dav set …)".to_owned();
                shared
                    .answer(&route.user, &queued.group_id, &queued, Some(why))
                    .await;
                continue;
            };
            if task
                .try_send(Command {
                    queued: queued.clone(),
                })
                .is_err()
            {
                // The task is busy: leave it queued for the next round.
                shared
                    .in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            }
        }
        while let Some(result) = tasks.try_join_next() {
            if let Err(error) = result {
                // A bug: start over (`run` restarts the connector) rather than leave a
                // mailbox unserved.
                tracing::error!(%error, "a mailbox task failed; restarting the connector");
                return;
            }
        }
        tokio::task::yield_now().await;
    }
}

/// The user's mailbox group: the one saved, or a new one with all the user's devices.
/// `None` while the user has no device that can be added.
async fn mailbox_group(shared: &Shared, user: &UserName) -> Result<Option<GroupId>, ClientError> {
    let key = format!("mailbox/{user}");
    if let Some(bytes) = shared
        .state
        .get(STATE_NS, &key)
        .map_err(|e| ClientError::Profile(e.to_string()))?
    {
        let id = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| ClientError::Profile("bad mailbox record".into()))?;
        return Ok(Some(GroupId::from(id)));
    }
    let created = shared
        .messenger
        .lock()
        .await
        .create_conversation(MAILBOX_GROUP_NAME, std::slice::from_ref(user), false)
        .await;
    match created {
        Ok(conversation) => {
            shared
                .state
                .put(STATE_NS, &key, conversation.group_id.as_bytes())
                .map_err(|e| ClientError::Profile(e.to_string()))?;
            tracing::info!(%user, group_id = %conversation.group_id, "mailbox group created");
            Ok(Some(conversation.group_id))
        }
        Err(error) if error.code() == Some(redoubt_proto::ErrorCode::NotFound) => Ok(None),
        Err(error) => Err(error),
    }
}

fn generation_key(user: &UserName) -> String {
    format!("generation/{user}")
}

/// How many times `user`'s mailbox has been pushed again for a new device.
fn replay_generation(shared: &Shared, user: &UserName) -> u64 {
    shared
        .state
        .get(STATE_NS, generation_key(user))
        .ok()
        .flatten()
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Compares each mailbox group's devices with those seen before; when a device joined,
/// counts a new generation and tells the user's tasks to push everything again.
fn notice_new_devices<'a>(
    shared: &Shared,
    messenger: &Messenger,
    routes: impl Iterator<Item = (&'a GroupId, &'a Route)>,
) {
    for (group_id, route) in routes {
        let Ok(Some(conversation)) = messenger.conversation_by_id(group_id) else {
            continue;
        };
        let Ok(members) = messenger.members(&conversation) else {
            continue;
        };
        let devices: BTreeSet<[u8; 16]> = members.iter().map(|m| *m.device_id.as_bytes()).collect();
        let key = format!("devices/{}", route.user);
        let known: Option<BTreeSet<[u8; 16]>> = shared
            .state
            .get(STATE_NS, &key)
            .ok()
            .flatten()
            .and_then(|bytes| postcard::from_bytes(&bytes).ok());
        if known.as_ref() == Some(&devices) {
            continue;
        }
        let joined = known.as_ref().is_some_and(|known| !devices.is_subset(known));
        let Ok(bytes) = postcard::to_stdvec(&devices) else {
            continue;
        };
        let generation = replay_generation(shared, &route.user) + u64::from(joined);
        let saved = shared.state.transaction(|tx| {
            tx.put(STATE_NS, &key, &bytes)?;
            tx.put(STATE_NS, generation_key(&route.user), &generation.to_be_bytes())
        });
        if saved.is_ok() && joined {
            tracing::info!(user = %route.user, generation, "a device joined the mailbox; pushing it again");
            route.replays.send_replace(generation);
        }
    }
}
