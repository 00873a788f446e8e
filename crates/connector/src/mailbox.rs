//! One user's mailbox: an IMAP session that pushes what arrives and changes, and carries
//! out the commands the user's devices send. Each mailbox runs in its own task, so a slow
//! or broken one never holds up the others; only pushing into MLS is shared (briefly).

use std::collections::BTreeMap;
use std::time::Duration;

use async_imap::types::Flag;
use futures_util::TryStreamExt;
use redoubt_mls::mail::{
    INLINE_TEXT_BYTES_MAX, MailCommand, MailFlags, MailPush, MailRef, OutgoingMail, Service,
};
use redoubt_proto::{Bytes, MailSecurity, MailServerSettings};
use redoubt_server::MailUser;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::compose::{self, Threading};
use crate::stream::MailStream;
use crate::{Command, Shared, deterministic_id, unix_now};

type Session = async_imap::Session<MailStream>;

/// Longest a mailbox waits in IDLE before looking at every folder again.
const IDLE_MAX: Duration = Duration::from_secs(30);
/// Most new messages pushed from one folder before the next folder gets a turn.
const NEW_PER_ROUND_MAX: usize = 200;
/// Backoff after a failed connection: first and longest pause.
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Most bytes of one message the connector reads from the server (partial fetches: a bigger
/// one is read cut at this size, so what lies beyond is left out of its summary).
const MESSAGE_BYTES_MAX: u32 = 50 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum MailboxError {
    #[error("IMAP server {0}")]
    Imap(String),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Client(#[from] redoubt_client::ClientError),
}

/// A server's NO or BAD refuses one command on a healthy connection; anything else means
/// the connection is gone and the mailbox reconnects.
fn imap_error(context: &str) -> impl Fn(async_imap::error::Error) -> MailboxError + '_ {
    use async_imap::error::Error;
    move |e| match e {
        Error::No(why) | Error::Bad(why) => {
            MailboxError::Refused(format!("the mail server refused {context}: {why}"))
        }
        other => MailboxError::Imap(format!("{context}: {other}")),
    }
}

/// What the connector remembers of a folder (in its encrypted vault): enough to notice
/// what is new, changed or gone, and no content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct FolderState {
    uid_validity: u32,
    last_uid: u32,
    flags: BTreeMap<u32, MailFlags>,
}

pub(crate) struct Mailbox {
    pub shared: std::sync::Arc<Shared>,
    pub server: MailServerSettings,
    pub user: MailUser,
    pub group: redoubt_proto::GroupId,
    pub commands: mpsc::Receiver<Command>,
    /// Moves when a device joined the mailbox group: push everything again (under ids of
    /// this generation, so the server does not drop them as repeats).
    pub replays: watch::Receiver<u64>,
}

fn flags_of(fetch: &async_imap::types::Fetch) -> MailFlags {
    let mut flags = MailFlags::default();
    for flag in fetch.flags() {
        match flag {
            Flag::Seen => flags.seen = true,
            Flag::Flagged => flags.flagged = true,
            Flag::Answered => flags.answered = true,
            _ => {}
        }
    }
    flags
}

/// `1-Jan-2026`, as IMAP's SEARCH SINCE wants it.
fn imap_date(unix_s: i64) -> String {
    let (year, month, day) = crate::civil_date(unix_s);
    format!("{day}-{}-{year}", crate::MONTHS[month - 1])
}

impl Mailbox {
    /// Runs until the connector stops (the command channel closes).
    pub(crate) async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut last_status: Option<(bool, String)> = None;
        loop {
            let result = match self.connect().await {
                Ok(session) => {
                    self.status(&mut last_status, true, "connected".into()).await;
                    backoff = BACKOFF_MIN;
                    self.serve(session).await
                }
                Err(error) => Err(error),
            };
            match result {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(user = %self.user.user, %error, "mailbox unavailable; will retry");
                    self.status(&mut last_status, false, error.to_string()).await;
                    // Commands that arrive meanwhile are answered, not left hanging.
                    let deadline = tokio::time::Instant::now() + backoff;
                    let why = format!("the mail server is unavailable: {error}");
                    if !self
                        .shared
                        .refuse_until(&self.user.user, &self.group, &mut self.commands, deadline, &why)
                        .await
                    {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn status(&self, last: &mut Option<(bool, String)>, ok: bool, detail: String) {
        self.shared
            .handle
            .report_mail_status(&self.user.user, ok, &detail);
        if last.as_ref() == Some(&(ok, detail.clone())) {
            return;
        }
        *last = Some((ok, detail.clone()));
        let push = MailPush::Status {
            service: Service::Mail,
            ok,
            detail,
            at_unix_s: unix_now(),
        };
        if let Err(error) = self.shared.push(&self.group, &push, None).await {
            tracing::warn!(user = %self.user.user, %error, "could not push mailbox status");
        }
    }

    /// Logs in to the user's mailbox as the service account (SASL PLAIN with the user as
    /// the authorisation identity: a Dovecot master user, Exchange impersonation).
    async fn connect(&self) -> Result<Session, MailboxError> {
        let server = &self.server.imap;
        let io = |e: std::io::Error| MailboxError::Imap(format!("{server}: {e}"));
        let tcp = MailStream::connect(server).await.map_err(io)?;
        let stream = match self.server.security {
            MailSecurity::Tls => MailStream::tls(server, tcp).await.map_err(io)?,
            MailSecurity::None => MailStream::Plain(tcp),
            MailSecurity::StartTls => {
                let mut client = async_imap::Client::new(tcp);
                client.read_response().await.map_err(io)?;
                client
                    .run_command_and_check_ok("STARTTLS", None)
                    .await
                    .map_err(imap_error("STARTTLS"))?;
                MailStream::tls(server, client.into_inner()).await.map_err(io)?
            }
        };
        let mut client = async_imap::Client::new(stream);
        if self.server.security != MailSecurity::StartTls {
            client.read_response().await.map_err(io)?;
        }
        // The user's own login when they linked one, else the service account acting
        // for them.
        let (authenticator, whose) = match &self.user.credential {
            Some(credential) => (
                PlainAs {
                    authzid: String::new(),
                    user: credential.login.clone(),
                    password: credential.password.clone(),
                },
                format!("{}'s own login (redoubt mail link)", self.user.user),
            ),
            None => (
                PlainAs {
                    authzid: self.user.address.clone(),
                    user: self.server.master_user.clone(),
                    password: self.server.master_password.clone(),
                },
                "the service account".to_owned(),
            ),
        };
        let session = tokio::time::timeout(
            Duration::from_secs(30),
            client.authenticate("PLAIN", authenticator),
        )
        .await
        .map_err(|_| MailboxError::Imap(format!("{server}: login timed out")))?
        .map_err(|(e, _)| {
            MailboxError::Refused(format!(
                "the mail server refused {whose} for {}: {e} \
                     (wrong password, or no such mailbox)",
                self.user.address
            ))
        })?;
        Ok(session)
    }

    async fn serve(&mut self, mut session: Session) -> Result<(), MailboxError> {
        let mut folders_pushed: Vec<String> = Vec::new();
        let mut replay = false;
        loop {
            let folders = self.folders(&mut session).await?;
            if replay || self.replays.has_changed().unwrap_or(false) {
                self.replays.borrow_and_update();
                self.forget_pushed(&folders)?;
                folders_pushed.clear();
                replay = false;
            }
            if folders != folders_pushed {
                self.shared
                    .push(&self.group, &MailPush::Folders(folders.clone()), None)
                    .await?;
                folders_pushed = folders.clone();
            }
            for folder in folders.iter().filter(|f| f.as_str() != "INBOX") {
                self.sync_folder(&mut session, folder).await?;
            }
            // INBOX last, so it is the folder selected while idling.
            self.sync_folder(&mut session, "INBOX").await?;
            while let Ok(command) = self.commands.try_recv() {
                self.carry_out(&mut session, command).await?;
            }
            let (next, pending) = self.idle(session).await?;
            session = next;
            match pending {
                Idle::Stop => return Ok(()),
                Idle::Command(command) => self.carry_out(&mut session, command).await?,
                Idle::Changed => {}
                Idle::Replay => replay = true,
            }
        }
    }

    async fn folders(&self, session: &mut Session) -> Result<Vec<String>, MailboxError> {
        let names: Vec<_> = session
            .list(Some(""), Some("*"))
            .await
            .map_err(imap_error("LIST"))?
            .try_collect()
            .await
            .map_err(imap_error("LIST"))?;
        let mut folders: Vec<String> = names
            .iter()
            .filter(|n| {
                !n.attributes()
                    .contains(&async_imap::types::NameAttribute::NoSelect)
            })
            .map(|n| n.name().to_owned())
            .collect();
        folders.sort();
        Ok(folders)
    }

    /// Forgets which messages were pushed (keeping each folder's UIDVALIDITY), so the next
    /// round pushes every message in the sync window again.
    fn forget_pushed(&self, folders: &[String]) -> Result<(), MailboxError> {
        for folder in folders {
            let state = self.load_state(folder)?;
            self.save_state(
                folder,
                &FolderState {
                    uid_validity: state.uid_validity,
                    ..FolderState::default()
                },
            )?;
        }
        Ok(())
    }

    fn state_key(&self, folder: &str) -> String {
        format!("folder/{}/{folder}", self.user.user)
    }

    fn load_state(&self, folder: &str) -> Result<FolderState, MailboxError> {
        Ok(self
            .shared
            .state
            .get(crate::STATE_NS, self.state_key(folder))
            .map_err(|e| MailboxError::Refused(e.to_string()))?
            .and_then(|bytes| postcard::from_bytes(&bytes).ok())
            .unwrap_or_default())
    }

    fn save_state(&self, folder: &str, state: &FolderState) -> Result<(), MailboxError> {
        let bytes = postcard::to_stdvec(state).map_err(|e| MailboxError::Refused(e.to_string()))?;
        self.shared
            .state
            .put(crate::STATE_NS, self.state_key(folder), &bytes)
            .map_err(|e| MailboxError::Refused(e.to_string()))
    }

    /// Pushes what is new in `folder` (each message, then its record: after a crash the
    /// same message is pushed under the same id, which the server drops as a repeat), then
    /// what changed and what is gone.
    async fn sync_folder(&self, session: &mut Session, folder: &str) -> Result<(), MailboxError> {
        let selected = session.select(folder).await.map_err(imap_error("SELECT"))?;
        let uid_validity = selected.uid_validity.unwrap_or(0);
        let mut state = self.load_state(folder)?;
        if state.uid_validity != uid_validity {
            for uid in std::mem::take(&mut state.flags).into_keys() {
                let mail = MailRef {
                    folder: folder.to_owned(),
                    uid_validity: state.uid_validity,
                    uid,
                };
                self.shared
                    .push(&self.group, &MailPush::Removed { mail }, None)
                    .await?;
            }
            state = FolderState {
                uid_validity,
                ..FolderState::default()
            };
            self.save_state(folder, &state)?;
        }
        if selected.exists == 0 && state.flags.is_empty() {
            return Ok(());
        }
        let query = if state.last_uid == 0 {
            let days = i64::from(self.user.policy.mail_sync_days);
            format!("SINCE {}", imap_date(unix_now() - days * 86_400))
        } else {
            format!("UID {}:*", state.last_uid + 1)
        };
        let mut new: Vec<u32> = session
            .uid_search(&query)
            .await
            .map_err(imap_error("SEARCH"))?
            .into_iter()
            .filter(|uid| *uid > state.last_uid)
            .collect();
        new.sort_unstable();
        new.truncate(NEW_PER_ROUND_MAX);
        // Push latency is measured for mail that arrived while we watched, not for a first
        // sync's backlog.
        let noticed = (state.last_uid != 0).then(std::time::Instant::now);
        for uid in new {
            let mail = MailRef {
                folder: folder.to_owned(),
                uid_validity,
                uid,
            };
            let flags = self.push_message(session, &mail).await?;
            if let Some(noticed) = noticed {
                self.shared.handle.observe_mail_push(noticed.elapsed());
            }
            state.flags.insert(uid, flags);
            state.last_uid = uid;
            self.save_state(folder, &state)?;
        }
        self.sync_changes(session, folder, &mut state).await
    }

    async fn push_message(&self, session: &mut Session, mail: &MailRef) -> Result<MailFlags, MailboxError> {
        let fetched: Vec<_> = session
            .uid_fetch(
                mail.uid.to_string(),
                format!("(UID FLAGS BODY.PEEK[]<0.{MESSAGE_BYTES_MAX}>)"),
            )
            .await
            .map_err(imap_error("FETCH"))?
            .try_collect()
            .await
            .map_err(imap_error("FETCH"))?;
        let Some(fetch) = fetched.iter().find(|f| f.uid == Some(mail.uid)) else {
            return Ok(MailFlags::default());
        };
        let flags = flags_of(fetch);
        // A partial fetch: the server sends no more than this, whatever it announces.
        let raw = fetch.body().unwrap_or_default();
        let raw = &raw[..raw.len().min(MESSAGE_BYTES_MAX as usize)];
        let Some(parsed) = compose::parse(raw) else {
            tracing::warn!(user = %self.user.user, uid = mail.uid, "unparseable message skipped");
            return Ok(flags);
        };
        let summary = parsed.summary(mail.clone(), flags, self.user.policy.mail_preview_bytes as usize);
        let generation = self.replays.borrow().to_string();
        let id = deterministic_id(
            &self.user.user,
            &["message", &mail.folder, &generation],
            mail.uid_validity,
            mail.uid,
        );
        self.shared
            .push(&self.group, &MailPush::Message(summary), Some(id))
            .await?;
        Ok(flags)
    }

    /// Compares the flags of the messages we know with the server's, pushing changes and
    /// removals.
    async fn sync_changes(
        &self,
        session: &mut Session,
        folder: &str,
        state: &mut FolderState,
    ) -> Result<(), MailboxError> {
        let (Some(first), Some(last)) = (
            state.flags.keys().next().copied(),
            state.flags.keys().last().copied(),
        ) else {
            return Ok(());
        };
        let fetched: Vec<_> = session
            .uid_fetch(format!("{first}:{last}"), "(UID FLAGS)")
            .await
            .map_err(imap_error("FETCH"))?
            .try_collect()
            .await
            .map_err(imap_error("FETCH"))?;
        let current: BTreeMap<u32, MailFlags> = fetched
            .iter()
            .filter_map(|f| f.uid.map(|uid| (uid, flags_of(f))))
            .collect();
        let mut changed = false;
        let known: Vec<(u32, MailFlags)> = state.flags.iter().map(|(u, f)| (*u, *f)).collect();
        for (uid, flags) in known {
            let mail = MailRef {
                folder: folder.to_owned(),
                uid_validity: state.uid_validity,
                uid,
            };
            match current.get(&uid) {
                None => {
                    self.shared
                        .push(&self.group, &MailPush::Removed { mail }, None)
                        .await?;
                    state.flags.remove(&uid);
                    changed = true;
                }
                Some(now) if *now != flags => {
                    self.shared
                        .push(&self.group, &MailPush::Flags { mail, flags: *now }, None)
                        .await?;
                    state.flags.insert(uid, *now);
                    changed = true;
                }
                Some(_) => {}
            }
        }
        if changed {
            self.save_state(folder, state)?;
        }
        Ok(())
    }

    /// Waits in IDLE on the selected folder (INBOX) until the server reports something, a
    /// command arrives, or [`IDLE_MAX`] passes.
    async fn idle(&mut self, session: Session) -> Result<(Session, Idle), MailboxError> {
        let mut handle = session.idle();
        handle.init().await.map_err(imap_error("IDLE"))?;
        let outcome = {
            let (wait, interrupt) = handle.wait_with_timeout(IDLE_MAX);
            tokio::pin!(wait);
            tokio::select! {
                result = &mut wait => {
                    result.map_err(imap_error("IDLE"))?;
                    Idle::Changed
                }
                command = self.commands.recv() => {
                    drop(interrupt);
                    let _ = tokio::time::timeout(Duration::from_secs(10), &mut wait).await;
                    command.map_or(Idle::Stop, Idle::Command)
                }
                () = tokio::time::sleep(IDLE_MAX + Duration::from_secs(5)) => Idle::Changed,
                _ = self.replays.changed() => {
                    drop(interrupt);
                    let _ = tokio::time::timeout(Duration::from_secs(10), &mut wait).await;
                    Idle::Replay
                }
            }
        };
        let session = handle.done().await.map_err(imap_error("DONE"))?;
        Ok((session, outcome))
    }

    async fn answer(&self, command: &Command, error: Option<String>) {
        self.shared
            .answer(&self.user.user, &self.group, &command.queued, error)
            .await;
    }

    async fn carry_out(&self, session: &mut Session, command: Command) -> Result<(), MailboxError> {
        if command.queued.sender != self.user.user {
            self.answer(&command, Some("not your mailbox".into())).await;
            return Ok(());
        }
        let result = match &command.queued.command {
            MailCommand::Send { id, mail } => self.send(session, *id, mail).await,
            MailCommand::SetFlags {
                mail, seen, flagged, ..
            } => self.set_flags(session, mail, *seen, *flagged).await,
            MailCommand::Move { mail, folder, .. } => self.move_to(session, mail, folder).await,
            MailCommand::Delete { mail, .. } => self.delete(session, mail).await,
            MailCommand::FetchBody { mail, .. } => self.fetch_body(session, mail).await,
            MailCommand::FetchAttachment { mail, index, .. } => {
                self.fetch_attachment(session, mail, *index).await
            }
            // Routed to the calendar and contacts task, never here.
            MailCommand::AddEvent { .. }
            | MailCommand::DeleteEvent { .. }
            | MailCommand::AddContact { .. }
            | MailCommand::DeleteContact { .. } => Err(MailboxError::Refused(
                "calendar and contacts are not handled by the mail task".into(),
            )),
        };
        match result {
            Ok(()) => self.answer(&command, None).await,
            // The IMAP connection broke: answered after reconnecting.
            Err(MailboxError::Imap(error)) => {
                self.answer(&command, Some(format!("the mail server failed: {error}")))
                    .await;
                return Err(MailboxError::Imap(error));
            }
            Err(error) => self.answer(&command, Some(error.to_string())).await,
        }
        Ok(())
    }

    async fn select_for(&self, session: &mut Session, mail: &MailRef) -> Result<(), MailboxError> {
        let selected = session
            .select(&mail.folder)
            .await
            .map_err(|_| MailboxError::Refused(format!("no folder {:?}", mail.folder)))?;
        if selected.uid_validity.unwrap_or(0) != mail.uid_validity {
            return Err(MailboxError::Refused(
                "that message is gone (the folder was rebuilt on the server)".into(),
            ));
        }
        Ok(())
    }

    async fn fetch_raw(&self, session: &mut Session, mail: &MailRef) -> Result<Vec<u8>, MailboxError> {
        self.select_for(session, mail).await?;
        let fetched: Vec<_> = session
            .uid_fetch(
                mail.uid.to_string(),
                format!("(UID BODY.PEEK[]<0.{MESSAGE_BYTES_MAX}>)"),
            )
            .await
            .map_err(imap_error("FETCH"))?
            .try_collect()
            .await
            .map_err(imap_error("FETCH"))?;
        fetched
            .iter()
            .find(|f| f.uid == Some(mail.uid))
            .and_then(|f| f.body())
            .map(<[u8]>::to_vec)
            .ok_or_else(|| MailboxError::Refused("that message is no longer on the server".into()))
    }

    async fn send(
        &self,
        session: &mut Session,
        id: Bytes<16>,
        mail: &OutgoingMail,
    ) -> Result<(), MailboxError> {
        let mut threading = Threading::default();
        if let Some(original) = &mail.reply_to {
            let raw = self.fetch_raw(session, original).await?;
            if let Some(parsed) = compose::parse(&raw) {
                threading.references = parsed.references();
                if let Some(message_id) = parsed.message_id() {
                    threading.references.push(message_id.clone());
                    threading.in_reply_to = Some(message_id);
                }
            }
        }
        let policy = &self.user.policy;
        let mut files = Vec::new();
        if let Some(original) = &mail.forward_of {
            let raw = self.fetch_raw(session, original).await?;
            if let Some(parsed) = compose::parse(&raw) {
                files.extend(parsed.attachments());
            }
        }
        for attachment in &mail.attachments {
            if !policy.attachments_allowed || attachment.bytes > policy.attachment_bytes_max {
                return Err(MailboxError::Refused(
                    "the organisation's policy does not allow this attachment".into(),
                ));
            }
            let mut bytes = Vec::new();
            self.shared.download(attachment, &mut bytes).await?;
            files.push((attachment.name.clone(), "application/octet-stream".into(), bytes));
        }
        let message_id = format!("{}@{}", id.to_hex(), self.server.domain);
        let message = compose::compose(
            &self.user.address,
            mail,
            &threading,
            &format!("<{message_id}>"),
            files,
        )
        .map_err(|e| MailboxError::Refused(e.0))?;
        let formatted = message.formatted();
        // A command carried out again after a crash has the same id: the record written
        // when SMTP accepted it (kept until the command is finished, `Shared::finish`)
        // keeps it from being sent twice. Only then is Sent searched, by the Message-ID the
        // id makes, for the copy; a first attempt costs no search.
        let sent = self.sent_folder(session).await?;
        let record = crate::sent_record(&id);
        let vault = |e: redoubt_client::VaultError| MailboxError::Refused(e.to_string());
        let submitted = self
            .shared
            .state
            .get(crate::STATE_NS, &record)
            .map_err(vault)?
            .is_some();
        let kept = submitted && self.holds_message_id(session, &sent, &message_id).await?;
        if submitted {
            tracing::info!(user = %self.user.user, "a send carried out again was not sent twice");
        } else {
            crate::smtp::submit(&self.server, &self.user, message)
                .await
                .map_err(MailboxError::Refused)?;
            self.shared
                .state
                .put(crate::STATE_NS, &record, b"")
                .map_err(vault)?;
        }
        // The copy in Sent, as a mail client would keep it.
        if !kept {
            session
                .append(&sent, Some("(\\Seen)"), None, &formatted)
                .await
                .map_err(imap_error("APPEND"))?;
        }
        if let Some(original) = &mail.reply_to {
            self.store_flag(session, original, "+FLAGS.SILENT (\\Answered)")
                .await?;
        }
        Ok(())
    }

    /// Whether `folder` holds a message with this Message-ID (`<id@domain>`).
    async fn holds_message_id(
        &self,
        session: &mut Session,
        folder: &str,
        message_id: &str,
    ) -> Result<bool, MailboxError> {
        // Quoted in the SEARCH: nothing that would end or escape the quoted string.
        if message_id
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Ok(false);
        }
        session.select(folder).await.map_err(imap_error("SELECT"))?;
        let found = session
            .uid_search(format!("HEADER Message-ID \"<{message_id}>\""))
            .await
            .map_err(imap_error("SEARCH"))?;
        Ok(!found.is_empty())
    }

    async fn sent_folder(&self, session: &mut Session) -> Result<String, MailboxError> {
        let folders = self.folders(session).await?;
        if let Some(sent) = folders.iter().find(|f| f.eq_ignore_ascii_case("sent")) {
            return Ok(sent.clone());
        }
        session.create("Sent").await.map_err(imap_error("CREATE"))?;
        Ok("Sent".into())
    }

    async fn store_flag(
        &self,
        session: &mut Session,
        mail: &MailRef,
        query: &str,
    ) -> Result<(), MailboxError> {
        self.select_for(session, mail).await?;
        let _: Vec<_> = session
            .uid_store(mail.uid.to_string(), query)
            .await
            .map_err(imap_error("STORE"))?
            .try_collect()
            .await
            .map_err(imap_error("STORE"))?;
        Ok(())
    }

    async fn set_flags(
        &self,
        session: &mut Session,
        mail: &MailRef,
        seen: Option<bool>,
        flagged: Option<bool>,
    ) -> Result<(), MailboxError> {
        for (value, flag) in [(seen, "\\Seen"), (flagged, "\\Flagged")] {
            if let Some(value) = value {
                let sign = if value { '+' } else { '-' };
                self.store_flag(session, mail, &format!("{sign}FLAGS.SILENT ({flag})"))
                    .await?;
            }
        }
        let mut state = self.load_state(&mail.folder)?;
        self.sync_changes(session, &mail.folder, &mut state).await
    }

    async fn move_to(&self, session: &mut Session, mail: &MailRef, folder: &str) -> Result<(), MailboxError> {
        if !self.folders(session).await?.iter().any(|f| f == folder) {
            return Err(MailboxError::Refused(format!("no folder {folder:?}")));
        }
        self.select_for(session, mail).await?;
        session
            .uid_mv(mail.uid.to_string(), folder)
            .await
            .map_err(imap_error("MOVE"))?;
        let mut state = self.load_state(&mail.folder)?;
        self.sync_changes(session, &mail.folder, &mut state).await?;
        self.sync_folder(session, folder).await
    }

    async fn delete(&self, session: &mut Session, mail: &MailRef) -> Result<(), MailboxError> {
        self.store_flag(session, mail, "+FLAGS.SILENT (\\Deleted)")
            .await?;
        let _: Vec<_> = session
            .uid_expunge(mail.uid.to_string())
            .await
            .map_err(imap_error("EXPUNGE"))?
            .try_collect()
            .await
            .map_err(imap_error("EXPUNGE"))?;
        let mut state = self.load_state(&mail.folder)?;
        self.sync_changes(session, &mail.folder, &mut state).await
    }

    async fn fetch_body(&self, session: &mut Session, mail: &MailRef) -> Result<(), MailboxError> {
        let raw = self.fetch_raw(session, mail).await?;
        let text = compose::parse(&raw).map(|p| p.text()).unwrap_or_default();
        let push = if text.len() <= INLINE_TEXT_BYTES_MAX {
            MailPush::Body {
                mail: mail.clone(),
                text: Some(text),
                blob: None,
            }
        } else {
            let blob = self
                .shared
                .upload(&self.group, "body.txt".into(), text.into_bytes())
                .await?;
            MailPush::Body {
                mail: mail.clone(),
                text: None,
                blob: Some(blob),
            }
        };
        self.shared.push(&self.group, &push, None).await?;
        Ok(())
    }

    async fn fetch_attachment(
        &self,
        session: &mut Session,
        mail: &MailRef,
        index: u32,
    ) -> Result<(), MailboxError> {
        let raw = self.fetch_raw(session, mail).await?;
        let (name, _, bytes) = compose::parse(&raw)
            .and_then(|p| p.attachment(index))
            .ok_or_else(|| MailboxError::Refused(format!("that message has no attachment {index}")))?;
        let policy = &self.user.policy;
        if !policy.attachments_allowed || bytes.len() as u64 > policy.attachment_bytes_max {
            return Err(MailboxError::Refused(
                "the organisation's policy does not allow this attachment on devices".into(),
            ));
        }
        let file = self.shared.upload(&self.group, name, bytes).await?;
        let push = MailPush::Attachment {
            mail: mail.clone(),
            index,
            file,
        };
        self.shared.push(&self.group, &push, None).await?;
        Ok(())
    }
}

enum Idle {
    Changed,
    /// A device joined: push everything again.
    Replay,
    Command(Command),
    Stop,
}

/// SASL PLAIN (RFC 4616) with an authorisation identity: log in as the service account,
/// act as the user.
struct PlainAs {
    authzid: String,
    user: String,
    password: String,
}

impl async_imap::Authenticator for PlainAs {
    type Response = Vec<u8>;
    fn process(&mut self, _challenge: &[u8]) -> Vec<u8> {
        format!("{}\0{}\0{}", self.authzid, self.user, self.password).into_bytes()
    }
}

impl std::fmt::Debug for PlainAs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainAs")
            .field("authzid", &self.authzid)
            .finish_non_exhaustive()
    }
}
