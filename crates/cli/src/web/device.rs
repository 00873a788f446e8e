//! The device behind the page: one [`Messenger`] (this device's keys, MLS state and vault),
//! shared by the HTTP handlers and a task that follows the server's events.
//!
//! The event task holds the messenger while it waits for the server's next event; a
//! handler that needs the messenger asks for it with [`Device::lock`], which wakes the
//! event task so it lets go. Tokio's mutex is fair, so the handler gets it next and the
//! event task waits its turn. After each event the task syncs and tells the pages, over
//! Server-Sent Events, what changed; pages refetch only that.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use redoubt_client::{ClientError, Messenger, Profile};
use redoubt_proto::{Bytes, GroupId};
use serde_json::json;
use tokio::sync::{Mutex, MutexGuard, Notify, broadcast};
use tokio::time::Instant;

use super::ApiError;

/// Events kept for a page that reads slowly; one further behind gets a full refresh.
const EVENTS_BUFFERED: usize = 1_024;

/// How often a remotely locked page looks whether the administrator unlocked it (the
/// unlock command is carried out while events are read, without an event of its own).
const REMOTE_UNLOCK_CHECK: Duration = Duration::from_secs(2);

/// Mail attachments uploaded by the page and not yet sent, at most.
const UPLOADS_KEPT_MAX: usize = 64;

/// How the page's device stands.
pub(crate) struct Core {
    dir: PathBuf,
    messenger: Option<Messenger>,
    /// Nothing but the lock screen is served; the passcode lifts it.
    pub locked: bool,
    /// The lock came from the organisation: without a passcode on the profile, only the
    /// administrator's unlock command lifts it.
    remote_lock: bool,
    pub last_activity: Instant,
    /// Mail and calendar commands sent and not yet answered by the connector.
    pending: HashSet<Bytes<16>>,
    /// Attachments uploaded for a mail being written, by upload id.
    pub uploads: HashMap<String, redoubt_mls::Attachment>,
    events: broadcast::Sender<Arc<str>>,
}

pub(crate) struct Device {
    core: Mutex<Core>,
    /// Wakes the event task so it lets go of the core.
    interrupt: Notify,
    events: broadcast::Sender<Arc<str>>,
    /// Set once the device is wiped or revoked: the web process stops.
    pub gone: Notify,
}

impl Device {
    /// The device of the profile in `dir`: opened now when `profile` is given (no passcode,
    /// or one supplied), otherwise locked until the page gives the passcode.
    pub(crate) fn new(dir: PathBuf, messenger: Option<Messenger>) -> Arc<Self> {
        let (events, _) = broadcast::channel(EVENTS_BUFFERED);
        let locked = messenger.is_none();
        Arc::new(Self {
            core: Mutex::new(Core {
                dir,
                messenger,
                locked,
                remote_lock: false,
                last_activity: Instant::now(),
                pending: HashSet::new(),
                uploads: HashMap::new(),
                events: events.clone(),
            }),
            interrupt: Notify::new(),
            events,
            gone: Notify::new(),
        })
    }

    /// The core, taken from the event task (which resumes after the caller lets go).
    pub(crate) async fn lock(&self) -> MutexGuard<'_, Core> {
        self.interrupt.notify_one();
        self.core.lock().await
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.events.subscribe()
    }

    /// Follows the server's events until the device is wiped or revoked.
    pub(crate) async fn follow(self: Arc<Self>) {
        loop {
            let mut core = self.core.lock().await;
            let idle_seconds = core
                .messenger
                .as_mut()
                .map_or(0, |m| m.session().policy().inactivity_lock_seconds);
            let lock_at = core.last_activity + Duration::from_secs(u64::from(idle_seconds));
            let idle_lock = idle_seconds > 0 && !core.locked;
            let remote_lock = core.remote_lock;
            let step = match core.messenger.as_mut() {
                Some(messenger) => tokio::select! {
                    event = messenger.next_event() => Step::Event(event),
                    () = self.interrupt.notified() => Step::Yield,
                    () = tokio::time::sleep_until(lock_at), if idle_lock => Step::Idle,
                    () = tokio::time::sleep(REMOTE_UNLOCK_CHECK), if remote_lock => Step::Yield,
                },
                None => {
                    drop(core);
                    self.interrupt.notified().await;
                    continue;
                }
            };
            core.lift_cleared_remote_lock();
            match step {
                Step::Yield => {
                    drop(core);
                    tokio::task::yield_now().await;
                }
                Step::Idle => {
                    core.locked = true;
                    core.notify(json!({ "type": "locked", "why": "inactivity" }));
                }
                Step::Event(result) => {
                    if let Err(error) = core.after_event(result).await {
                        tracing::warn!("the device stops: {error}");
                        core.notify(json!({ "type": "wiped", "why": error.to_string() }));
                        core.messenger = None;
                        self.gone.notify_one();
                        return;
                    }
                }
            }
        }
    }
}

enum Step {
    Event(Result<redoubt_proto::Event, ClientError>),
    Yield,
    Idle,
}

impl Core {
    /// The messenger; an error while the page is locked or the profile not yet unlocked.
    pub(crate) fn messenger(&mut self) -> Result<&mut Messenger, ApiError> {
        if self.locked {
            return Err(ApiError::locked());
        }
        self.messenger.as_mut().ok_or_else(ApiError::locked)
    }

    /// The messenger even while the page is locked (for what the lock screen needs).
    pub(crate) fn messenger_unlocked(&mut self) -> Option<&mut Messenger> {
        self.messenger.as_mut()
    }

    pub(crate) fn notify(&self, event: serde_json::Value) {
        // No page listening is not an error.
        let _ = self.events.send(Arc::from(event.to_string()));
    }

    /// Tries `passcode`: opens the profile if it was not yet, or lifts the lock.
    pub(crate) async fn unlock(&mut self, passcode: &str) -> Result<(), ApiError> {
        match &self.messenger {
            Some(messenger) => {
                let profile = messenger.profile();
                if profile.has_passcode() {
                    Profile::load(&self.dir, Some(passcode))?;
                    // As when a session opens with the passcode (client `comply`).
                    profile.set_remote_locked(false)?;
                } else if self.remote_lock && profile.remote_locked() {
                    return Err(ApiError::new(
                        axum::http::StatusCode::LOCKED,
                        "locked",
                        "the organisation locked this device and it has no passcode: only an administrator can unlock it",
                    ));
                }
            }
            None => {
                let profile = Profile::load(&self.dir, Some(passcode))?;
                let mut messenger = Messenger::open(&profile).await?;
                messenger.sync().await?;
                self.messenger = Some(messenger);
            }
        }
        self.locked = false;
        self.remote_lock = false;
        self.last_activity = Instant::now();
        self.notify(json!({ "type": "unlocked" }));
        Ok(())
    }

    /// The administrator's unlock command (carried out by the messenger as it reads
    /// events) lifts a remote lock on a device without a passcode.
    fn lift_cleared_remote_lock(&mut self) {
        if self.remote_lock
            && let Some(messenger) = &self.messenger
            && !messenger.profile().has_passcode()
            && !messenger.profile().remote_locked()
        {
            self.locked = false;
            self.remote_lock = false;
            self.notify(json!({ "type": "unlocked" }));
        }
    }

    /// Remembers a mail command whose answer the pages wait for.
    pub(crate) fn expect_outcome(&mut self, command: Bytes<16>) {
        self.pending.insert(command);
    }

    /// Handles one event from the server: syncs and tells the pages what changed. An
    /// error is returned only when the device can go on no longer (wiped, revoked).
    async fn after_event(
        &mut self,
        event: Result<redoubt_proto::Event, ClientError>,
    ) -> Result<(), ClientError> {
        match event {
            Err(error) if error.is_transient() => {
                self.notify(json!({ "type": "status", "connected": false, "text": format!("Connection lost ({error}); reconnecting…") }));
                if let Some(messenger) = self.messenger.as_mut() {
                    messenger.reconnect(u32::MAX, |_, _| {}).await?;
                }
                self.notify(json!({ "type": "status", "connected": true, "text": "Reconnected." }));
            }
            Err(ClientError::DeviceLocked) => {
                self.locked = true;
                self.remote_lock = true;
                self.notify(json!({ "type": "locked", "why": "remote" }));
                return Ok(());
            }
            Err(error) => return Err(error),
            // New entries in one group: that group's log is all there is to read.
            Ok(redoubt_proto::Event::GroupAppended { group_id, .. }) => {
                return self.sync_and_tell(Some(group_id)).await;
            }
            Ok(_) => {}
        }
        self.sync_and_tell(None).await
    }

    /// Syncs `group` (or, with none, everything: invitations, every group, new devices,
    /// history), then tells the pages which conversations moved and whether mail did.
    async fn sync_and_tell(&mut self, group: Option<GroupId>) -> Result<(), ClientError> {
        let Some(messenger) = self.messenger.as_mut() else {
            return Ok(());
        };
        let before = cursors(messenger)?;
        let report = match group {
            Some(group_id) => messenger.sync_one(&group_id).await?,
            None => messenger.sync().await?,
        };
        let after = cursors(messenger)?;
        let moved: Vec<String> = after
            .iter()
            .filter(|(id, cursor)| before.get(*id) != Some(cursor))
            .map(|(id, _)| id.to_string())
            .collect();
        let mut answered = Vec::new();
        for command in &self.pending {
            if let Some(outcome) = messenger
                .mail()
                .outcome(command)
                .map_err(|e| ClientError::Mail(e.to_string()))?
            {
                answered.push((*command, outcome));
            }
        }
        if !moved.is_empty() || report.mail > 0 {
            // Mail, calendar and contacts all arrive as mailbox pushes.
            let mailbox = report.mail > 0;
            self.notify(
                json!({ "type": "sync", "conversations": moved, "mail": mailbox, "calendar": mailbox }),
            );
        }
        for (command, error) in answered {
            self.pending.remove(&command);
            self.notify(json!({ "type": "outcome", "command": command.to_hex(), "error": error }));
        }
        Ok(())
    }

    /// Keeps an uploaded attachment for a mail; the oldest goes when too many wait.
    pub(crate) fn keep_upload(&mut self, id: String, attachment: redoubt_mls::Attachment) {
        if self.uploads.len() >= UPLOADS_KEPT_MAX
            && let Some(oldest) = self.uploads.keys().next().cloned()
        {
            self.uploads.remove(&oldest);
        }
        self.uploads.insert(id, attachment);
    }
}

/// Every conversation's cursor (the last log entry it has read), mailbox included.
fn cursors(messenger: &Messenger) -> Result<HashMap<GroupId, u64>, ClientError> {
    let mut all: HashMap<GroupId, u64> = messenger
        .conversations()?
        .into_iter()
        .map(|c| (c.group_id, c.cursor))
        .collect();
    if let Some(mailbox) = messenger.mailbox()? {
        all.insert(mailbox.group_id, mailbox.cursor);
    }
    Ok(all)
}
