//! `redoubt mail …` (a user's mail, on any enrolled device) and `redoubt admin mail …`
//! (the organisation's mail servers).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use redoubt_client::{Messenger, Session, StoredMail};
use redoubt_mls::mail::{MailCommand as Command, OutgoingMail, Service};
use redoubt_proto::{
    DavServerSettings, HostPort, MailCredential, MailSecurity, MailServerSettings, MailSettingsView, Request,
    Response, UserName,
};
use serde_json::json;

use crate::output::{Output, print_json, time};

/// How long a command waits for the connector's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Subcommand)]
pub(crate) enum AdminMailCommand {
    /// Set the organisation's IMAP and SMTP servers and the service account that may open
    /// every mailbox (a Dovecot master user, Exchange impersonation).
    Set {
        /// IMAP server, host:port.
        #[arg(long)]
        imap: String,
        /// SMTP submission server, host:port.
        #[arg(long)]
        smtp: String,
        /// tls, starttls, or none (none only for servers on this machine).
        #[arg(long, default_value = "tls")]
        security: String,
        #[arg(long)]
        master_user: String,
        /// A file holding the service account's password (first line).
        #[arg(long, value_name = "FILE")]
        master_password_file: PathBuf,
        /// Users' default addresses are user@DOMAIN.
        #[arg(long)]
        domain: String,
    },
    /// Map a user to a mail address (an empty address: back to user@domain).
    Map { user: String, address: String },
    /// The mail settings (never the password) and every mailbox's status.
    Show,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminDavCommand {
    /// Set the organisation's CalDAV/CardDAV server and a service account that may read
    /// and write every user's calendar and address book (URL/<address>/calendar/ and
    /// URL/<address>/contacts/).
    Set {
        /// The server's base URL (http:// only for this machine).
        #[arg(long)]
        url: String,
        #[arg(long)]
        user: String,
        /// A file holding the service account's password (first line).
        #[arg(long, value_name = "FILE")]
        password_file: PathBuf,
    },
}

pub(crate) async fn admin_dav(session: &mut Session, command: AdminDavCommand, out: &Output) -> Result<()> {
    let AdminDavCommand::Set {
        url,
        user,
        password_file,
    } = command;
    let settings = DavServerSettings {
        url,
        user,
        password: first_line(&password_file)?,
    };
    settings.validate().map_err(anyhow::Error::msg)?;
    match session.request(Request::AdminDavSet(settings)).await? {
        Response::Done => out.note("done"),
        _ => bail!("unexpected answer from the server"),
    }
    Ok(())
}

/// The first line of a password file.
pub(crate) fn first_line(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[derive(Debug, Subcommand)]
pub(crate) enum MailCommand {
    /// Messages in a folder, newest first.
    List {
        #[arg(long, default_value = "INBOX")]
        folder: String,
    },
    /// One message in full (the rest of its text is fetched if only the start was pushed).
    Read { id: String },
    /// The mailbox's folders.
    Folders,
    /// Search this device's own copy of the mail (every word must match).
    Search {
        #[arg(required = true)]
        query: Vec<String>,
    },
    /// Send a message.
    Send {
        #[arg(long, required = true)]
        to: Vec<String>,
        #[arg(long)]
        cc: Vec<String>,
        #[arg(long, default_value = "")]
        subject: String,
        #[command(flatten)]
        body: Body,
        /// Attach a file (repeat for more).
        #[arg(long, value_name = "PATH")]
        attach: Vec<PathBuf>,
    },
    /// Reply to the sender of a message (threaded).
    Reply {
        id: String,
        #[command(flatten)]
        body: Body,
    },
    /// Forward a message, with its attachments.
    Forward {
        id: String,
        #[arg(long, required = true)]
        to: Vec<String>,
        #[command(flatten)]
        body: Body,
    },
    /// Mark a message read, unread, flagged or unflagged.
    Flag {
        id: String,
        #[arg(long, group = "flag")]
        read: bool,
        #[arg(long, group = "flag")]
        unread: bool,
        #[arg(long, group = "flag")]
        flagged: bool,
        #[arg(long, group = "flag")]
        unflagged: bool,
    },
    /// Move a message to another folder.
    Move { id: String, folder: String },
    /// Delete a message from the mail server.
    Delete { id: String },
    /// Download one of a message's attachments.
    Fetch {
        id: String,
        /// Which attachment (0 is the first; `mail read` lists them).
        #[arg(long)]
        attachment: u32,
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
    },
    /// The connector's latest word on this mailbox.
    Status,
    /// Use your own mail login instead of the organisation's service account (for mail
    /// servers without a master user); the server keeps it sealed.
    Link {
        /// Your login on the mail server.
        #[arg(long)]
        login: String,
        /// A file holding your mail password (first line).
        #[arg(long, value_name = "FILE")]
        password_file: PathBuf,
    },
    /// Forget your own mail login: back to the service account.
    Unlink,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Body {
    /// The text.
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Read the text from a file.
    #[arg(long, value_name = "FILE")]
    body_file: Option<PathBuf>,
}

impl Body {
    fn text(&self) -> Result<String> {
        match (&self.body, &self.body_file) {
            (Some(text), _) => Ok(text.clone()),
            (None, Some(file)) => {
                std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
            }
            (None, None) => Ok(String::new()),
        }
    }
}

pub(crate) async fn admin(session: &mut Session, command: AdminMailCommand, out: &Output) -> Result<()> {
    let request = match command {
        AdminMailCommand::Set {
            imap,
            smtp,
            security,
            master_user,
            master_password_file,
            domain,
        } => {
            let settings = MailServerSettings {
                imap: HostPort::parse(&imap).map_err(anyhow::Error::msg)?,
                smtp: HostPort::parse(&smtp).map_err(anyhow::Error::msg)?,
                security: MailSecurity::parse(&security)
                    .with_context(|| format!("--security {security:?}: use tls, starttls or none"))?,
                master_user,
                master_password: first_line(&master_password_file)?,
                domain,
            };
            settings.validate().map_err(anyhow::Error::msg)?;
            Request::AdminMailSet(settings)
        }
        AdminMailCommand::Map { user, address } => Request::AdminMailMap {
            user: UserName::parse(&user).with_context(|| format!("{user:?} is not a user name"))?,
            address,
        },
        AdminMailCommand::Show => Request::AdminMailShow,
    };
    match session.request(request).await? {
        Response::Done => out.note("done"),
        Response::MailSettings(view) => show_settings(&view, out),
        _ => bail!("unexpected answer from the server"),
    }
    Ok(())
}

fn show_settings(view: &MailSettingsView, out: &Output) {
    if out.is_json() {
        print_json(&serde_json::to_value(view).unwrap_or_default());
        return;
    }
    match (&view.imap, &view.smtp, &view.security) {
        (Some(imap), Some(smtp), Some(security)) => {
            println!(
                "imap {imap}  smtp {smtp}  security {}  service account {}  domain {}",
                security.as_str(),
                view.master_user.as_deref().unwrap_or(""),
                view.domain.as_deref().unwrap_or("")
            );
        }
        _ => println!("no mail server is set (redoubt admin mail set …)"),
    }
    for user in &view.users {
        let status = match &user.status {
            Some(s) if s.ok => format!("ok: {} ({})", s.detail, time(s.at_unix_s)),
            Some(s) => format!("ERROR: {} ({})", s.detail, time(s.at_unix_s)),
            None => "not tried yet".to_owned(),
        };
        let mapped = if user.mapped { " (mapped)" } else { "" };
        println!("{:<16} {}{mapped}  {status}", user.user.as_str(), user.address);
    }
}

fn find(messenger: &Messenger, id: &str) -> Result<StoredMail> {
    messenger
        .mail()
        .get(id)?
        .with_context(|| format!("no message {id:?} on this device (see `redoubt mail list`)"))
}

/// Whether this user has a mailbox and how the connector last fared with mail and calendar.
pub(crate) fn status_json(messenger: &Messenger) -> Result<serde_json::Value> {
    let mail = messenger.mail().status(Service::Mail)?;
    let calendar = messenger.mail().status(Service::Calendar)?;
    let calendar = calendar
        .as_ref()
        .map(|(ok, detail, at)| json!({ "ok": ok, "detail": detail, "at_unix_s": at }));
    Ok(json!({
        "mailbox": messenger.mailbox()?.is_some(),
        "ok": mail.as_ref().map(|s| s.0),
        "detail": mail.as_ref().map(|s| s.1.clone()),
        "at_unix_s": mail.as_ref().map(|s| s.2),
        "calendar": calendar,
    }))
}

/// A reply to `original` (to its sender, the original quoted below `text`).
pub(crate) fn reply(original: &StoredMail, text: &str) -> OutgoingMail {
    let s = &original.summary;
    let subject = if s.subject.to_lowercase().starts_with("re:") {
        s.subject.clone()
    } else {
        format!("Re: {}", s.subject)
    };
    let quoted: String = original
        .full_text
        .as_deref()
        .unwrap_or(&s.preview)
        .lines()
        .map(|l| format!("> {l}\n"))
        .collect();
    OutgoingMail {
        to: vec![s.from.clone()],
        cc: Vec::new(),
        subject,
        text: format!(
            "{text}\n\nOn {}, {} wrote:\n{quoted}",
            time(s.date_unix_s),
            s.from
        ),
        attachments: Vec::new(),
        reply_to: Some(s.mail.clone()),
        forward_of: None,
    }
}

/// `original` forwarded to `to`, below `text`.
pub(crate) fn forward(original: &StoredMail, to: Vec<String>, text: &str) -> OutgoingMail {
    let s = &original.summary;
    OutgoingMail {
        to,
        cc: Vec::new(),
        subject: format!("Fwd: {}", s.subject),
        text: format!(
            "{text}\n\n---------- Forwarded message ----------\nFrom: {}\nDate: {}\nSubject: {}\nTo: {}\n\n{}",
            s.from,
            time(s.date_unix_s),
            s.subject,
            s.to.join(", "),
            original.full_text.as_deref().unwrap_or(&s.preview)
        ),
        attachments: Vec::new(),
        reply_to: None,
        forward_of: Some(s.mail.clone()),
    }
}

pub(crate) fn mail_json(mail: &StoredMail) -> serde_json::Value {
    let s = &mail.summary;
    json!({
        "id": mail.id,
        "folder": s.mail.folder,
        "from": s.from,
        "to": s.to,
        "cc": s.cc,
        "subject": s.subject,
        "date_unix_s": s.date_unix_s,
        "message_id": s.message_id,
        "in_reply_to": s.in_reply_to,
        "seen": s.flags.seen,
        "flagged": s.flags.flagged,
        "answered": s.flags.answered,
        "text": mail.full_text.clone().unwrap_or_else(|| s.preview.clone()),
        "text_complete": mail.full_text.is_some() || s.preview.len() as u64 >= s.text_bytes,
        "attachments": s.attachments.iter().enumerate().map(|(i, a)| json!({
            "index": i, "name": a.name, "content_type": a.content_type, "bytes": a.bytes,
        })).collect::<Vec<_>>(),
    })
}

fn print_list(mails: &[StoredMail], out: &Output) {
    if out.is_json() {
        print_json(&serde_json::Value::Array(mails.iter().map(mail_json).collect()));
        return;
    }
    if mails.is_empty() {
        println!("no messages");
    }
    for mail in mails {
        let s = &mail.summary;
        let marks = format!(
            "{}{}{}",
            if s.flags.seen { ' ' } else { '*' },
            if s.flags.flagged { '!' } else { ' ' },
            if s.attachments.is_empty() { ' ' } else { '@' }
        );
        println!(
            "{} {marks} {}  {:<28} {}",
            mail.id,
            time(s.date_unix_s),
            s.from,
            s.subject
        );
    }
}

/// Sends a command and waits for the connector's answer.
async fn command(
    messenger: &mut Messenger,
    build: impl FnOnce(redoubt_proto::Bytes<16>) -> Command,
) -> Result<()> {
    let id = messenger.send_mail_command(build).await?;
    messenger.mail_outcome(id, ANSWER_WAIT).await?;
    Ok(())
}

pub(crate) async fn run(messenger: &mut Messenger, command_line: MailCommand, out: &Output) -> Result<()> {
    messenger.sync().await?;
    match command_line {
        MailCommand::List { folder } => print_list(&messenger.mail().list(Some(&folder))?, out),
        MailCommand::Folders => {
            let folders = messenger.mail().folders()?;
            if out.is_json() {
                print_json(&json!(folders));
            } else {
                for folder in folders {
                    println!("{folder}");
                }
            }
        }
        MailCommand::Search { query } => print_list(&messenger.mail().search(&query.join(" "))?, out),
        MailCommand::Read { id } => {
            let mut mail = find(messenger, &id)?;
            let s = &mail.summary;
            if mail.full_text.is_none() && (s.preview.len() as u64) < s.text_bytes {
                let target = s.mail.clone();
                command(messenger, |id| Command::FetchBody { id, mail: target }).await?;
                mail = find(messenger, &id)?;
                if mail.full_text.is_none()
                    && let Some(blob) = mail.body_blob.clone()
                {
                    let mut bytes = Vec::new();
                    messenger.download(&blob, &mut bytes, |_, _| {}).await?;
                    mail.full_text = Some(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
            if !mail.summary.flags.seen {
                let target = mail.summary.mail.clone();
                command(messenger, |id| Command::SetFlags {
                    id,
                    mail: target,
                    seen: Some(true),
                    flagged: None,
                })
                .await?;
            }
            print_mail(&mail, out);
        }
        MailCommand::Send {
            to,
            cc,
            subject,
            body,
            attach,
        } => {
            let attachments = upload(messenger, &attach).await?;
            let mail = OutgoingMail {
                to,
                cc,
                subject,
                text: body.text()?,
                attachments,
                reply_to: None,
                forward_of: None,
            };
            send(messenger, mail, out).await?;
        }
        MailCommand::Reply { id, body } => {
            let original = find(messenger, &id)?;
            send(messenger, reply(&original, &body.text()?), out).await?;
        }
        MailCommand::Forward { id, to, body } => {
            let original = find(messenger, &id)?;
            send(messenger, forward(&original, to, &body.text()?), out).await?;
        }
        MailCommand::Flag {
            id,
            read,
            unread,
            flagged,
            unflagged,
        } => {
            let target = find(messenger, &id)?.summary.mail;
            let seen = (read || unread).then_some(read);
            let flag = (flagged || unflagged).then_some(flagged);
            if seen.is_none() && flag.is_none() {
                bail!("say --read, --unread, --flagged or --unflagged");
            }
            command(messenger, |id| Command::SetFlags {
                id,
                mail: target,
                seen,
                flagged: flag,
            })
            .await?;
            out.note("done");
        }
        MailCommand::Move { id, folder } => {
            let target = find(messenger, &id)?.summary.mail;
            command(messenger, |id| Command::Move {
                id,
                mail: target,
                folder,
            })
            .await?;
            out.note("moved");
        }
        MailCommand::Delete { id } => {
            let target = find(messenger, &id)?.summary.mail;
            command(messenger, |id| Command::Delete { id, mail: target }).await?;
            out.note("deleted");
        }
        MailCommand::Fetch {
            id,
            attachment,
            out: path,
        } => {
            let mail = find(messenger, &id)?;
            let target = mail.summary.mail.clone();
            if mail.summary.attachments.len() <= attachment as usize {
                bail!(
                    "message {id} has {} attachment(s)",
                    mail.summary.attachments.len()
                );
            }
            if messenger.mail().attachment(&target, attachment)?.is_none() {
                let wanted = target.clone();
                command(messenger, |id| Command::FetchAttachment {
                    id,
                    mail: wanted,
                    index: attachment,
                })
                .await?;
            }
            let file = messenger
                .mail()
                .attachment(&target, attachment)?
                .context("the connector answered but the attachment did not arrive")?;
            messenger.fetch_attachment(&file, &path, |_, _| {}).await?;
            out.fetched(&file.name, file.bytes, &path);
        }
        MailCommand::Link { login, password_file } => {
            let credential = MailCredential {
                login,
                password: first_line(&password_file)?,
            };
            credential.validate().map_err(anyhow::Error::msg)?;
            link(messenger, Some(credential)).await?;
            out.note("linked: the connector now logs in as you");
        }
        MailCommand::Unlink => {
            link(messenger, None).await?;
            out.note("unlinked: the connector uses the organisation's service account");
        }
        MailCommand::Status => {
            let mailbox = messenger.mailbox()?.is_some();
            let mail = messenger.mail().status(Service::Mail)?;
            let calendar = messenger.mail().status(Service::Calendar)?;
            if out.is_json() {
                print_json(&status_json(messenger)?);
            } else if !mailbox {
                println!("no mailbox yet: the organisation's mail connector has not set one up for you");
            } else {
                for (what, status) in [("mail", mail), ("calendar and contacts", calendar)] {
                    match status {
                        Some((ok, detail, at)) => {
                            println!(
                                "{what}: {} {detail} ({})",
                                if ok { "ok," } else { "ERROR:" },
                                time(at)
                            )
                        }
                        None => println!("{what}: no status yet"),
                    }
                }
            }
        }
    }
    Ok(())
}

async fn link(messenger: &mut Messenger, credential: Option<MailCredential>) -> Result<()> {
    match messenger
        .session()
        .request(Request::MailLink { credential })
        .await?
    {
        Response::Done => Ok(()),
        _ => bail!("unexpected answer from the server"),
    }
}

async fn upload(messenger: &mut Messenger, paths: &[PathBuf]) -> Result<Vec<redoubt_mls::Attachment>> {
    let mut uploaded = Vec::new();
    if paths.is_empty() {
        return Ok(uploaded);
    }
    let mailbox = messenger
        .mailbox()?
        .context("no mailbox yet: the organisation's mail connector has not set one up for you")?;
    for path in paths {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        let bytes = file.metadata().await?.len();
        let name = file_name(path);
        uploaded.push(
            messenger
                .upload(&mailbox.group_id, name, file, bytes, |_, _| {})
                .await?,
        );
    }
    Ok(uploaded)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| "file".to_owned(), |n| n.to_string_lossy().into_owned())
}

async fn send(messenger: &mut Messenger, mail: OutgoingMail, out: &Output) -> Result<()> {
    let mail = Box::new(mail);
    command(messenger, |id| Command::Send { id, mail }).await?;
    out.note("sent");
    Ok(())
}

fn print_mail(mail: &StoredMail, out: &Output) {
    if out.is_json() {
        print_json(&mail_json(mail));
        return;
    }
    let s = &mail.summary;
    println!("From:    {}", s.from);
    println!("To:      {}", s.to.join(", "));
    if !s.cc.is_empty() {
        println!("Cc:      {}", s.cc.join(", "));
    }
    println!("Date:    {}", time(s.date_unix_s));
    println!("Subject: {}", s.subject);
    for (i, a) in s.attachments.iter().enumerate() {
        println!(
            "Attachment {i}: {} ({}, {} bytes)",
            a.name, a.content_type, a.bytes
        );
    }
    println!();
    println!("{}", mail.full_text.as_deref().unwrap_or(&s.preview));
}
