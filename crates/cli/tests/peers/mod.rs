//! Real mail and calendar peers for integration tests: Dovecot (IMAP, LMTP, SASL auth),
//! Postfix (SMTP in, submission with SASL through Dovecot) and Radicale (CalDAV/CardDAV),
//! each started fresh in its own temporary directory on 127.0.0.1, with helpers that drive
//! them through real external clients (Python's `imaplib`, `smtplib`, `caldav`).
//!
//! Include it with `mod peers;` from a test file. Needs root (Postfix must start as root;
//! Dovecot runs as `nobody`), the packages that `.ci/install-mail-peers` installs, and
//! `python3` on `PATH` (override with `REDOUBT_PEERS_PYTHON`).
//!
//! Conventions:
//! - Login names are full addresses (`alice@corp.test`) for IMAP, SMTP submission and
//!   Radicale alike, with the same password everywhere.
//! - The master user [`MASTER_USER`] (password [`MASTER_PASSWORD`]) logs in as any user,
//!   either with `LOGIN "alice@corp.test*redoubt-master" <master password>` or with
//!   `AUTHENTICATE PLAIN` where authzid = `alice@corp.test`, authcid = `redoubt-master`.
//! - Every user has `INBOX`, `Sent`, `Drafts`, `Trash`, `Archive` (special-use flagged);
//!   the hierarchy separator is `/`.
//! - `smtp_port` accepts mail from 127.0.0.0/8 without auth for the users' domains (unknown
//!   users are refused at RCPT) and relays anything else to `sink_port` on 127.0.0.1, where
//!   nothing listens unless a test does (then it sees the outbound mail; otherwise the mail
//!   stays deferred). `submission_port` requires SASL PLAIN/LOGIN (no TLS).
//! - Radicale: `http://127.0.0.1:{dav_port}/{user}/`, htpasswd (plain). Rights (a
//!   `from_file` rights file): each user reads and writes their own collections, as with
//!   owner_only, and [`MASTER_USER`] (same password as for Dovecot) reads and writes every
//!   user's, as a calendar connector's service account does.
//!
//! Everything stops on drop (also while unwinding from a panic); a watchdog process also
//! cleans up if the test process dies without unwinding.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

// Tests and the benchmark crate may include both harnesses, each with its own copy of
// this module: the shared code is the file, not one module of the including crate.
#[allow(clippy::duplicate_mod)]
#[path = "../support/processes.rs"]
mod processes;

use processes::{Watchdog, accepts, free_ports, read_lossy, signal, spawn_logged, wait_child};

/// The Dovecot master user: logs in as any user (see the module docs for the syntax).
pub const MASTER_USER: &str = "redoubt-master";
/// The master user's password.
pub const MASTER_PASSWORD: &str = "redoubt-master-pw";
/// The mail domain every test uses; users' own domains are added to it.
pub const DOMAIN: &str = "corp.test";

/// How long the peers may take to accept connections before `start` fails with their logs.
/// `REDOUBT_PEERS_STARTUP_SECS` overrides it (slow, loaded machines).
fn startup_timeout() -> Duration {
    processes::env_secs("REDOUBT_PEERS_STARTUP_SECS", 20)
}

/// Longest one client helper (a Python process) may run, beyond any wait it was asked for.
const CLIENT_DEADLINE: Duration = Duration::from_secs(40);

/// One message as an IMAP client sees it (`UID FETCH (UID FLAGS BODY.PEEK[])`, parsed with
/// Python's `email` package; headers are decoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImapMessage {
    pub uid: u32,
    /// As the server reports them, e.g. `\Seen`; a fresh delivery shows `\Recent`.
    pub flags: Vec<String>,
    pub subject: String,
    /// With its angle brackets, as in the header.
    pub message_id: String,
    pub in_reply_to: String,
    pub references: String,
    pub from: String,
    pub to: String,
    pub cc: String,
    /// The text/plain body (or text/html when there is no plain part).
    pub body_text: String,
    pub attachment_names: Vec<String>,
    /// The whole message (lossy UTF-8).
    pub raw: String,
}

/// A mailbox as `LIST "" "*"` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImapFolder {
    pub name: String,
    /// Attributes such as `\HasNoChildren`, `\Sent`.
    pub flags: Vec<String>,
}

/// A mail to send through SMTP or submission: `Outgoing { from, to: vec![..], subject, body,
/// ..Default::default() }`.
#[derive(Debug, Clone, Default)]
pub struct Outgoing<'a> {
    pub from: &'a str,
    pub to: Vec<&'a str>,
    pub cc: Vec<&'a str>,
    /// Envelope-only recipients.
    pub bcc: Vec<&'a str>,
    pub subject: &'a str,
    pub body: &'a str,
    /// `(file name, content)`; the type is guessed from the name.
    pub attachments: Vec<(&'a str, &'a [u8])>,
    /// Generated (`<...@domain-of-from>`) when `None`.
    pub message_id: Option<&'a str>,
    pub in_reply_to: Option<&'a str>,
    pub references: Option<&'a str>,
    pub headers: Vec<(&'a str, &'a str)>,
}

/// A calendar event as Radicale serves it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DavEvent {
    pub href: String,
    pub uid: String,
    pub summary: String,
    pub dtstart: String,
    pub dtend: String,
    pub ics: String,
}

/// A contact as Radicale serves it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DavContact {
    pub href: String,
    pub uid: String,
    pub full_name: String,
    pub emails: Vec<String>,
    pub vcard: String,
}

/// Running Dovecot, Postfix and Radicale, all on 127.0.0.1; stopped on drop.
#[derive(Debug)]
pub struct MailPeers {
    /// Holds every config, queue, mailbox and log; removed on drop.
    pub dir: tempfile::TempDir,
    pub imap_port: u16,
    /// Dovecot LMTP (Postfix delivers here).
    pub lmtp_port: u16,
    /// Dovecot's SASL auth service (Postfix submission authenticates through it).
    pub auth_port: u16,
    /// Plain SMTP in, no auth, from 127.0.0.0/8.
    pub smtp_port: u16,
    /// SMTP submission, SASL PLAIN/LOGIN required, no TLS.
    pub submission_port: u16,
    /// Radicale (CalDAV/CardDAV, HTTP).
    pub dav_port: u16,
    /// Where mail for other domains goes (nothing listens unless a test does).
    pub sink_port: u16,
    pub master_user: String,
    pub master_password: String,
    /// `(address, password)` as given to `start`.
    pub users: Vec<(String, String)>,
    /// Canonical path of `dir` (what the processes see as their working directory).
    root: PathBuf,
    postfix_started: bool,
    radicale: Option<Child>,
    watchdog: Option<Watchdog>,
}

impl MailPeers {
    /// Writes the configs, starts all three servers and waits until every port accepts
    /// connections; panics with the servers' logs if that takes longer than ~20 s.
    pub fn start(users: &[(&str, &str)]) -> MailPeers {
        assert!(is_root(), "MailPeers needs root: Postfix must be started as root");
        for tool in ["dovecot", "postfix", "runuser"] {
            assert!(
                on_path(tool),
                "`{tool}` is not installed: run .ci/install-mail-peers (see shared/MAIL-PEERS.md)"
            );
        }
        for (address, password) in users {
            assert!(
                address.contains('@') && !address.contains([':', ' ', '/', '*']),
                "user {address:?} must be a plain address like alice@corp.test"
            );
            assert!(
                !password.contains([':', '\n']),
                "password of {address} has ':' or a newline"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("redoubt-peers-")
            .tempdir()
            .expect("create the peers' temp dir");
        let root = fs::canonicalize(dir.path()).expect("canonicalize the peers' temp dir");
        set_mode(&root, 0o755);
        let ports = free_ports(7);
        let mut peers = MailPeers {
            dir,
            imap_port: ports[0],
            lmtp_port: ports[1],
            auth_port: ports[2],
            smtp_port: ports[3],
            submission_port: ports[4],
            dav_port: ports[5],
            sink_port: ports[6],
            master_user: MASTER_USER.to_owned(),
            master_password: MASTER_PASSWORD.to_owned(),
            users: users
                .iter()
                .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
                .collect(),
            root,
            postfix_started: false,
            radicale: None,
            watchdog: None,
        };
        // From here on a panic drops `peers`, which stops whatever did start. Should this
        // process die without running `Drop`, the watchdog stops Postfix, kills every process
        // working inside the directory and removes it.
        let stop_postfix = r#"postfix -c "$d/postfix" stop >/dev/null 2>&1"#;
        peers.watchdog = Some(Watchdog::spawn(
            "redoubt-peers-watchdog",
            &peers.root,
            stop_postfix,
        ));
        peers.write_dovecot();
        peers.write_postfix();
        peers.write_radicale();
        peers.launch();
        peers
    }

    /// The `LOGIN` name with which the master user logs in as `user`.
    pub fn master_login_name(&self, user: &str) -> String {
        format!("{user}*{}", self.master_user)
    }

    /// The domains Postfix and Dovecot accept mail for.
    pub fn domains(&self) -> BTreeSet<String> {
        let mut domains: BTreeSet<String> = self
            .users
            .iter()
            .filter_map(|(u, _)| u.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()))
            .collect();
        domains.insert(DOMAIN.to_owned());
        domains
    }

    /// Radicale's base URL, e.g. `http://127.0.0.1:PORT/`.
    pub fn dav_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.dav_port)
    }

    // ----- mail clients -----

    /// Sends a plain-text mail (with an optional attachment) into `smtp_port`, as another
    /// mail server would; returns its Message-ID (with angle brackets).
    pub fn send_mail(
        &self,
        from: &str,
        to: &str,
        subject: &str,
        body: &str,
        attachment: Option<(&str, &[u8])>,
    ) -> String {
        self.send_message(&Outgoing {
            from,
            to: vec![to],
            subject,
            body,
            attachments: attachment.into_iter().collect(),
            ..Outgoing::default()
        })
    }

    /// Sends `mail` into `smtp_port` (no auth); returns its Message-ID.
    pub fn send_message(&self, mail: &Outgoing<'_>) -> String {
        self.try_send(None, self.smtp_port, mail)
            .unwrap_or_else(|e| panic!("sending {:?} failed: {e}\n{}", mail.subject, self.diagnostics()))
    }

    /// Submits a plain-text mail through `submission_port`, authenticated as `login`.
    pub fn submit_mail(
        &self,
        login: &str,
        password: &str,
        from: &str,
        to: &str,
        subject: &str,
        body: &str,
    ) -> String {
        self.submit_message(
            login,
            password,
            &Outgoing {
                from,
                to: vec![to],
                subject,
                body,
                ..Default::default()
            },
        )
    }

    /// Submits `mail` through `submission_port` with SASL (smtplib picks PLAIN); returns its
    /// Message-ID.
    pub fn submit_message(&self, login: &str, password: &str, mail: &Outgoing<'_>) -> String {
        self.try_submit_message(login, password, mail)
            .unwrap_or_else(|e| {
                panic!(
                    "submitting {:?} failed: {e}\n{}",
                    mail.subject,
                    self.diagnostics()
                )
            })
    }

    /// Like [`Self::submit_message`], but a refusal (bad password, rejected recipient) is an
    /// `Err` with the client's error.
    pub fn try_submit_message(
        &self,
        login: &str,
        password: &str,
        mail: &Outgoing<'_>,
    ) -> Result<String, String> {
        self.try_send(Some((login, password)), self.submission_port, mail)
    }

    fn try_send(&self, auth: Option<(&str, &str)>, port: u16, mail: &Outgoing<'_>) -> Result<String, String> {
        let attachments: Vec<Value> = mail
            .attachments
            .iter()
            .map(|(name, content)| json!({"name": name, "content": content}))
            .collect();
        let (login, password) = auth.unwrap_or(("", ""));
        let out = run_client(
            &json!({
                "action": "send", "port": port, "login": login, "password": password,
                "mail": {
                    "from": mail.from, "to": mail.to, "cc": mail.cc, "bcc": mail.bcc,
                    "subject": mail.subject, "body": mail.body, "attachments": attachments,
                    "message_id": mail.message_id, "in_reply_to": mail.in_reply_to,
                    "references": mail.references, "headers": mail.headers,
                },
            }),
            CLIENT_DEADLINE,
        )?;
        Ok(str_field(&out, "message_id"))
    }

    /// Every message in `folder`, in UID order (read-only: `\Seen` is left alone).
    pub fn imap_messages(&self, user: &str, password: &str, folder: &str) -> Vec<ImapMessage> {
        self.imap_call(
            "messages",
            user,
            password,
            None,
            json!({ "folder": folder }),
            CLIENT_DEADLINE,
        )
        .as_array()
        .map(|a| a.iter().map(imap_message).collect())
        .unwrap_or_default()
    }

    /// [`Self::imap_messages`] as the master user, via `AUTHENTICATE PLAIN` with authzid `user`.
    pub fn imap_messages_as_master(&self, user: &str, folder: &str) -> Vec<ImapMessage> {
        self.imap_call(
            "messages",
            &self.master_user,
            &self.master_password,
            Some(user),
            json!({ "folder": folder }),
            CLIENT_DEADLINE,
        )
        .as_array()
        .map(|a| a.iter().map(imap_message).collect())
        .unwrap_or_default()
    }

    /// Polls `folder` (one IMAP session) until a message whose subject contains
    /// `subject_contains` is there; `None` after `timeout`.
    pub fn wait_for_mail(
        &self,
        user: &str,
        password: &str,
        folder: &str,
        subject_contains: &str,
        timeout: Duration,
    ) -> Option<ImapMessage> {
        let found = self.imap_call(
            "wait",
            user,
            password,
            None,
            json!({ "folder": folder, "subject": subject_contains, "timeout": timeout.as_secs_f64() }),
            timeout + CLIENT_DEADLINE,
        );
        (!found.is_null()).then(|| imap_message(&found))
    }

    /// The user's mailboxes (`LIST "" "*"`).
    pub fn imap_folders(&self, user: &str, password: &str) -> Vec<ImapFolder> {
        self.imap_call("folders", user, password, None, json!({}), CLIENT_DEADLINE)
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| ImapFolder {
                        name: str_field(f, "name"),
                        flags: str_list(f, "flags"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `UID STORE <matching> <op> (<flags>)` on every message in `folder` whose subject
    /// contains `subject_contains`, e.g. `op = "+FLAGS"`, `flags = "\\Seen"`; returns how many.
    pub fn imap_set_flags(
        &self,
        user: &str,
        password: &str,
        folder: &str,
        subject_contains: &str,
        op: &str,
        flags: &str,
    ) -> usize {
        let args = json!({ "folder": folder, "subject": subject_contains, "op": op, "flags": flags });
        count(&self.imap_call("store", user, password, None, args, CLIENT_DEADLINE))
    }

    /// `UID MOVE` the matching messages from `folder` to `dest`; returns how many.
    pub fn imap_move(
        &self,
        user: &str,
        password: &str,
        folder: &str,
        subject_contains: &str,
        dest: &str,
    ) -> usize {
        let args = json!({ "folder": folder, "subject": subject_contains, "dest": dest });
        count(&self.imap_call("move", user, password, None, args, CLIENT_DEADLINE))
    }

    /// Flags the matching messages `\Deleted` and `UID EXPUNGE`s them; returns how many.
    pub fn imap_delete(&self, user: &str, password: &str, folder: &str, subject_contains: &str) -> usize {
        let args = json!({ "folder": folder, "subject": subject_contains });
        count(&self.imap_call("delete", user, password, None, args, CLIENT_DEADLINE))
    }

    /// `APPEND`s a raw RFC 5322 message with `flags` (e.g. `"\\Seen"`, or `""`).
    pub fn imap_append(&self, user: &str, password: &str, folder: &str, flags: &str, raw: &[u8]) {
        let args = json!({ "folder": folder, "flags": flags, "raw": raw });
        self.imap_call("append", user, password, None, args, CLIENT_DEADLINE);
    }

    /// `CREATE`s a mailbox.
    pub fn imap_create_folder(&self, user: &str, password: &str, folder: &str) {
        self.imap_call(
            "create",
            user,
            password,
            None,
            json!({ "folder": folder }),
            CLIENT_DEADLINE,
        );
    }

    /// Whether `LOGIN user password` succeeds.
    pub fn imap_login_ok(&self, user: &str, password: &str) -> bool {
        self.imap_call("login", user, password, None, json!({}), CLIENT_DEADLINE) == Value::Bool(true)
    }

    fn imap_call(
        &self,
        action: &str,
        user: &str,
        password: &str,
        authzid: Option<&str>,
        mut args: Value,
        deadline: Duration,
    ) -> Value {
        args["action"] = json!(action);
        args["port"] = json!(self.imap_port);
        args["user"] = json!(user);
        args["password"] = json!(password);
        args["authzid"] = json!(authzid);
        run_client(&args, deadline).unwrap_or_else(|e| {
            panic!(
                "IMAP {action} as {user} (authzid {authzid:?}) failed: {e}\n{}",
                self.diagnostics()
            )
        })
    }

    // ----- calendar and contacts clients -----

    /// Saves an event (python `caldav`) in the user's calendar `calendar` (created when
    /// missing); `dtstart`/`dtend` in iCalendar form, e.g. `20300102T100000Z`. Returns its URL.
    #[allow(clippy::too_many_arguments)]
    pub fn dav_put_event(
        &self,
        user: &str,
        password: &str,
        calendar: &str,
        uid: &str,
        summary: &str,
        dtstart: &str,
        dtend: &str,
    ) -> String {
        let args = json!({ "calendar": calendar, "uid": uid, "summary": summary, "dtstart": dtstart, "dtend": dtend });
        self.dav_call("cal_put", user, password, args)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The events in the user's calendar `calendar` (empty when it does not exist).
    pub fn dav_list_events(&self, user: &str, password: &str, calendar: &str) -> Vec<DavEvent> {
        self.dav_call("cal_list", user, password, json!({ "calendar": calendar }))
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| DavEvent {
                        href: str_field(e, "href"),
                        uid: str_field(e, "uid"),
                        summary: str_field(e, "summary"),
                        dtstart: str_field(e, "dtstart"),
                        dtend: str_field(e, "dtend"),
                        ics: str_field(e, "ics"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// PUTs a vCard 3.0 into the user's address book `addressbook` (created with an extended
    /// MKCOL when missing), by raw WebDAV. Returns its path.
    #[allow(clippy::too_many_arguments)]
    pub fn dav_put_contact(
        &self,
        user: &str,
        password: &str,
        addressbook: &str,
        uid: &str,
        full_name: &str,
        email: &str,
    ) -> String {
        let args = json!({ "addressbook": addressbook, "uid": uid, "full_name": full_name, "email": email });
        self.dav_call("card_put", user, password, args)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The contacts in the user's address book `addressbook` (PROPFIND, then GET each).
    pub fn dav_list_contacts(&self, user: &str, password: &str, addressbook: &str) -> Vec<DavContact> {
        self.dav_call("card_list", user, password, json!({ "addressbook": addressbook }))
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| DavContact {
                        href: str_field(c, "href"),
                        uid: str_field(c, "uid"),
                        full_name: str_field(c, "full_name"),
                        emails: str_list(c, "emails"),
                        vcard: str_field(c, "vcard"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn dav_call(&self, action: &str, user: &str, password: &str, mut args: Value) -> Value {
        args["action"] = json!(action);
        args["port"] = json!(self.dav_port);
        args["user"] = json!(user);
        args["password"] = json!(password);
        run_client(&args, CLIENT_DEADLINE)
            .unwrap_or_else(|e| panic!("DAV {action} as {user} failed: {e}\n{}", self.diagnostics()))
    }

    // ----- diagnostics -----

    /// Postfix's log.
    pub fn maillog(&self) -> String {
        read_lossy(&self.root.join("maillog"))
    }

    /// Dovecot's log.
    pub fn dovecot_log(&self) -> String {
        read_lossy(&self.root.join("dovecot/dovecot.log"))
    }

    /// Radicale's output.
    pub fn radicale_log(&self) -> String {
        read_lossy(&self.root.join("radicale/radicale.log"))
    }

    /// The tails of every log, for a failure message.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for (name, path) in [
            ("dovecot start", "dovecot-start.log"),
            ("dovecot", "dovecot/dovecot.log"),
            ("postfix start", "postfix-start.log"),
            ("postfix maillog", "maillog"),
            ("radicale", "radicale/radicale.log"),
        ] {
            let tail = processes::log_tail(&self.root.join(path), 60);
            out.push_str(&format!("----- {name} ({}) -----\n{tail}\n", path));
        }
        out
    }

    // ----- start and stop -----

    fn write_dovecot(&self) {
        let (nobody, nogroup, uid, gid) = nobody();
        let d = self.root.join("dovecot");
        for sub in ["", "run", "state", "mail"] {
            let p = d.join(sub);
            fs::create_dir_all(&p).expect("create a dovecot dir");
            std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown a dovecot dir to nobody");
        }
        let users: String = self
            .users
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
            .collect();
        write_file(&d.join("users"), &users, 0o644);
        write_file(
            &d.join("masters"),
            &format!("{}:{{PLAIN}}{}\n", self.master_user, self.master_password),
            0o644,
        );
        let conf = DOVECOT_CONF
            .replace("@DIR@", &d.display().to_string())
            .replace("@NOBODY@", &nobody)
            .replace("@NOGROUP@", &nogroup)
            .replace("@IMAP_PORT@", &self.imap_port.to_string())
            .replace("@LMTP_PORT@", &self.lmtp_port.to_string())
            .replace("@AUTH_PORT@", &self.auth_port.to_string());
        write_file(&d.join("dovecot.conf"), &conf, 0o644);
    }

    fn write_postfix(&self) {
        let conf_dir = self.root.join("postfix");
        fs::create_dir_all(&conf_dir).expect("create the postfix config dir");
        // The queue lives outside the config dir: postfix-script warns about every
        // non-root file under the config dir.
        fs::create_dir_all(self.root.join("postfix-queue")).expect("create the postfix queue dir");
        let domains: Vec<String> = self.domains().into_iter().collect();
        let mailboxes: String = self.users.iter().map(|(u, _)| format!("{u} OK\n")).collect();
        write_file(&conf_dir.join("vmailbox"), &mailboxes, 0o644);
        let main = POSTFIX_MAIN_CF
            .replace("@DIR@", &self.root.display().to_string())
            .replace("@DOMAINS@", &domains.join(", "))
            .replace("@LMTP_PORT@", &self.lmtp_port.to_string())
            .replace("@SINK_PORT@", &self.sink_port.to_string());
        write_file(&conf_dir.join("main.cf"), &main, 0o644);
        let master = POSTFIX_MASTER_CF
            .replace("@SMTP_PORT@", &self.smtp_port.to_string())
            .replace("@SUBMISSION_PORT@", &self.submission_port.to_string())
            .replace("@AUTH_PORT@", &self.auth_port.to_string());
        write_file(&conf_dir.join("master.cf"), &master, 0o644);
    }

    fn write_radicale(&self) {
        let d = self.root.join("radicale");
        fs::create_dir_all(d.join("collections")).expect("create the radicale dirs");
        let mut users: String = self.users.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
        users.push_str(&format!("{}:{}\n", self.master_user, self.master_password));
        write_file(&d.join("users"), &users, 0o600);
        assert!(
            self.master_user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "the master user's name goes into a regex as it is"
        );
        let rights = RADICALE_RIGHTS.replace("@MASTER@", &self.master_user);
        write_file(&d.join("rights"), &rights, 0o644);
        let conf = RADICALE_CONF
            .replace("@DIR@", &d.display().to_string())
            .replace("@DAV_PORT@", &self.dav_port.to_string());
        write_file(&d.join("config"), &conf, 0o644);
    }

    fn launch(&mut self) {
        let deadline = Instant::now() + startup_timeout();
        let (nobody, ..) = nobody();
        // Postfix's first start creates its queue and takes a couple of seconds: run it
        // beside the others.
        let mut postfix = Command::new("postfix");
        postfix.arg("-c").arg(self.root.join("postfix")).arg("start");
        let postfix = spawn_logged(postfix, &self.root.join("postfix-start.log"), &self.root);
        self.postfix_started = true;

        let mut dovecot = Command::new("runuser");
        dovecot
            .args(["-u", &nobody, "--", "dovecot", "-c"])
            .arg(self.root.join("dovecot/dovecot.conf"));
        let dovecot = spawn_logged(dovecot, &self.root.join("dovecot-start.log"), &self.root);

        let mut radicale = Command::new(python());
        radicale
            .args(["-m", "radicale", "--config"])
            .arg(self.root.join("radicale/config"))
            .current_dir(self.root.join("radicale"));
        self.radicale = Some(spawn_logged(
            radicale,
            &self.root.join("radicale/radicale.log"),
            &self.root.join("radicale"),
        ));

        for (name, child) in [("dovecot", dovecot), ("postfix start", postfix)] {
            match wait_child(child, deadline) {
                Some(status) if status.success() => {}
                Some(status) => panic!("{name} exited with {status}\n{}", self.diagnostics()),
                None => panic!("{name} did not finish starting in time\n{}", self.diagnostics()),
            }
        }
        let ports = [
            ("IMAP", self.imap_port),
            ("LMTP", self.lmtp_port),
            ("dovecot auth", self.auth_port),
            ("SMTP", self.smtp_port),
            ("submission", self.submission_port),
            ("Radicale", self.dav_port),
        ];
        for (name, port) in ports {
            while !accepts(port) {
                if let Some(Ok(Some(status))) = self.radicale.as_mut().map(Child::try_wait) {
                    panic!("Radicale exited with {status}\n{}", self.diagnostics());
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} is not accepting connections on 127.0.0.1:{port} after {:?}\n{}",
                    startup_timeout(),
                    self.diagnostics()
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn shutdown(&mut self) {
        self.watchdog = None;
        // Dovecot takes about a second to wind down: signal it first. Nothing here may panic
        // (this runs in `Drop`, possibly while unwinding).
        let pid = fs::read_to_string(self.root.join("dovecot/run/master.pid"));
        if let Some(pid) = pid.ok().and_then(|p| p.trim().parse().ok()) {
            signal("TERM", &[pid]);
        }
        if self.postfix_started {
            let stop = Command::new("postfix")
                .arg("-c")
                .arg(self.root.join("postfix"))
                .arg("stop")
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            if let Ok(child) = stop {
                let _ = wait_child(child, Instant::now() + Duration::from_secs(10));
            }
        }
        if let Some(mut r) = self.radicale.take() {
            let _ = r.kill();
            let _ = r.wait();
        }
        // Whatever still works in our directory is ours (see `processes_in`): 3 s to go after
        // the stops above, then SIGTERM, then after 2 s more SIGKILL.
        let began = Instant::now();
        let mut termed = false;
        loop {
            let left = processes_in(&self.root);
            if left.is_empty() {
                return;
            }
            let waited = began.elapsed();
            if waited >= Duration::from_secs(5) {
                signal("KILL", &left);
                thread::sleep(Duration::from_millis(200));
                return;
            }
            if waited >= Duration::from_secs(3) && !termed {
                signal("TERM", &left);
                termed = true;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for MailPeers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The processes (other than this one) whose working directory is inside `dir`: every
/// server `MailPeers` starts works inside its directory.
pub fn processes_in(dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cwd = fs::read_link(e.path().join("cwd")).ok()?;
            (pid != me && cwd.starts_with(dir)).then_some(pid)
        })
        .collect()
}

/// Runs the bundled Python client with `request` (a JSON object with an `action`) on stdin,
/// killed after `deadline`; its `ok` value, or its error and traceback.
pub fn run_client(request: &Value, deadline: Duration) -> Result<Value, String> {
    let out = run_python(CLIENTS_PY, request.to_string().as_bytes(), deadline)?;
    let reply: Value =
        serde_json::from_str(&out).map_err(|e| format!("client printed non-JSON ({e}): {out}"))?;
    match reply.get("error") {
        Some(err) => Err(err.as_str().unwrap_or_default().to_owned()),
        None => Ok(reply.get("ok").cloned().unwrap_or(Value::Null)),
    }
}

/// Runs `python3 -c script` with `input` on stdin; its stdout, or an error with its stderr.
/// Killed after `deadline`.
pub fn run_python(script: &str, input: &[u8], deadline: Duration) -> Result<String, String> {
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(script).env("PYTHONIOENCODING", "utf-8");
    let done = processes::run_piped(&mut cmd, input, deadline)
        .map_err(|e| format!("cannot run {}: {e}", python()))?;
    match done.status {
        Some(s) if s.success() => Ok(String::from_utf8_lossy(&done.stdout).into_owned()),
        Some(s) => Err(format!("python exited with {s}: {}", done.stderr)),
        None => Err(format!(
            "python did not finish within {deadline:?}: {}",
            done.stderr
        )),
    }
}

/// The Python interpreter: `REDOUBT_PEERS_PYTHON`, else `python3` resolved once to its real
/// executable (a pyenv shim costs ~0.2 s per run).
fn python() -> String {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Ok(p) = std::env::var("REDOUBT_PEERS_PYTHON") {
                return p;
            }
            Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "python3".to_owned())
        })
        .clone()
}

/// `nobody`'s user and group names and ids.
fn nobody() -> (String, String, u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let (uid, gid) = passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"nobody") && f.len() > 3).then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
        .and_then(|(u, g)| Some((u?, g?)))
        .unwrap_or((65534, 65534));
    let group = fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2].parse() == Ok(gid)).then(|| f[0].to_owned())
        })
        .unwrap_or_else(|| "nogroup".to_owned());
    ("nobody".to_owned(), group, uid, gid)
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

fn on_path(tool: &str) -> bool {
    processes::find_tool(tool).is_some()
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

fn write_file(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, mode);
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn str_list(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn count(v: &Value) -> usize {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or_default()
}

fn imap_message(v: &Value) -> ImapMessage {
    ImapMessage {
        uid: v
            .get("uid")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or_default(),
        flags: str_list(v, "flags"),
        subject: str_field(v, "subject"),
        message_id: str_field(v, "message_id"),
        in_reply_to: str_field(v, "in_reply_to"),
        references: str_field(v, "references"),
        from: str_field(v, "from"),
        to: str_field(v, "to"),
        cc: str_field(v, "cc"),
        body_text: str_field(v, "body_text"),
        attachment_names: str_list(v, "attachment_names"),
        raw: str_field(v, "raw"),
    }
}

const DOVECOT_CONF: &str = r#"# Written by crates/cli/tests/peers/mod.rs
protocols = imap lmtp
listen = 127.0.0.1
base_dir = @DIR@/run
state_dir = @DIR@/state
log_path = @DIR@/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_master_user_separator = *
auth_failure_delay = 0
auth_verbose = yes
default_internal_user = @NOBODY@
default_internal_group = @NOGROUP@
default_login_user = @NOBODY@
mail_location = maildir:@DIR@/mail/%u
mail_max_userip_connections = 100
namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    auto = create
    special_use = \Sent
  }
  mailbox Drafts {
    auto = create
    special_use = \Drafts
  }
  mailbox Trash {
    auto = create
    special_use = \Trash
  }
  mailbox Archive {
    auto = create
    special_use = \Archive
  }
}
passdb {
  driver = passwd-file
  master = yes
  result_success = continue
  args = scheme=PLAIN username_format=%u @DIR@/masters
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u @DIR@/users
}
userdb {
  driver = static
  args = uid=@NOBODY@ gid=@NOGROUP@ home=@DIR@/mail/%u
}
service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = @IMAP_PORT@
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = @LMTP_PORT@
  }
}
service anvil {
  chroot =
  # No growing delay after failed logins (the auth penalty): tests try wrong passwords.
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service auth {
  inet_listener sasl {
    address = 127.0.0.1
    port = @AUTH_PORT@
  }
}
"#;

const POSTFIX_MAIN_CF: &str = r#"# Written by crates/cli/tests/peers/mod.rs
compatibility_level = 3.6
queue_directory = @DIR@/postfix-queue
data_directory = @DIR@/postfix-data
maillog_file = @DIR@/maillog
maillog_file_prefixes = @DIR@
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mail.corp.test
mydomain = corp.test
myorigin = corp.test
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
relayhost =
virtual_mailbox_domains = @DOMAINS@
virtual_mailbox_maps = texthash:@DIR@/postfix/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:@LMTP_PORT@
default_transport = smtp:[127.0.0.1]:@SINK_PORT@
smtp_dns_support_level = disabled
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_tls_security_level = none
biff = no
"#;

const POSTFIX_MASTER_CF: &str = r#"# Written by crates/cli/tests/peers/mod.rs
127.0.0.1:@SMTP_PORT@ inet n - n - - smtpd
127.0.0.1:@SUBMISSION_PORT@ inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=none
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=inet:127.0.0.1:@AUTH_PORT@
  -o smtpd_sasl_security_options=noanonymous
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"#;

const RADICALE_CONF: &str = r#"# Written by crates/cli/tests/peers/mod.rs
[server]
hosts = 127.0.0.1:@DAV_PORT@

[auth]
type = htpasswd
htpasswd_filename = @DIR@/users
htpasswd_encryption = plain
delay = 0

[rights]
type = from_file
file = @DIR@/rights

[storage]
filesystem_folder = @DIR@/collections

[logging]
level = info
"#;

/// First match wins: the master user anywhere; then owner_only's rules.
const RADICALE_RIGHTS: &str = r#"# Written by crates/cli/tests/peers/mod.rs
[master]
user: @MASTER@
collection: .*
permissions: RrWw

[root]
user: .+
collection:
permissions: R

[principal]
user: .+
collection: {user}
permissions: RW

[collections]
user: .+
collection: {user}/[^/]+
permissions: rw
"#;

/// The client side: Python's imaplib, smtplib and caldav (and raw WebDAV for contacts).
/// Reads one JSON request on stdin, prints `{"ok": ...}` or `{"error": ...}`.
const CLIENTS_PY: &str = r#"
import base64, email, email.policy, email.utils, http.client, imaplib, json, mimetypes
import re, smtplib, sys, time, traceback, urllib.parse
import xml.etree.ElementTree as ET
from email.message import EmailMessage

HOST = '127.0.0.1'


def q(s):
    return '"' + s.replace('\\', '\\\\').replace('"', '\\"') + '"'


def check(res, what):
    typ, data = res
    if typ != 'OK':
        raise Exception('%s failed: %s %r' % (what, typ, data))
    return data


def imap(r):
    m = imaplib.IMAP4(HOST, r['port'], timeout=20)
    if r.get('authzid'):
        creds = '%s\0%s\0%s' % (r['authzid'], r['user'], r['password'])
        check(m.authenticate('PLAIN', lambda _: creds.encode()), 'AUTHENTICATE PLAIN')
    else:
        check(m.login(q(r['user']), r['password']), 'LOGIN')
    return m


def close(m):
    try:
        m.logout()
    except Exception:
        pass


def select(m, folder, readonly):
    check(m.select(q(folder), readonly=readonly), 'SELECT ' + folder)


def fetch(m, uidset, items):
    """[meta, literal] per FETCH response; literal is None when there is none."""
    out = []
    for d in check(m.uid('FETCH', uidset, items), 'UID FETCH'):
        if d is None:
            continue
        if isinstance(d, tuple):
            out.append([d[0], d[1]])
        elif out and (d.startswith(b')') or d.startswith(b' ')):
            out[-1][0] = out[-1][0] + d
        else:
            out.append([d, None])
    return out


def uid_of(meta):
    return int(re.search(rb'UID (\d+)', meta).group(1))


def flags_of(meta):
    f = re.search(rb'FLAGS \(([^)]*)\)', meta)
    return f.group(1).decode().split() if f else []


def header(msg, name):
    try:
        v = msg.get(name)
        return '' if v is None else str(v)
    except Exception:
        return ''


def summarize(meta, raw):
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    try:
        part = msg.get_body(preferencelist=('plain', 'html'))
        text = part.get_content() if part is not None else ''
    except Exception:
        text = ''
    try:
        names = [p.get_filename() or '' for p in msg.iter_attachments()]
    except Exception:
        names = []
    return {
        'uid': uid_of(meta), 'flags': flags_of(meta),
        'subject': header(msg, 'Subject'), 'message_id': header(msg, 'Message-ID'),
        'in_reply_to': header(msg, 'In-Reply-To'), 'references': header(msg, 'References'),
        'from': header(msg, 'From'), 'to': header(msg, 'To'), 'cc': header(msg, 'Cc'),
        'body_text': text, 'attachment_names': names,
        'raw': raw.decode('utf-8', 'replace'),
    }


def messages(m, folder):
    select(m, folder, True)
    return [summarize(meta, lit) for meta, lit in fetch(m, '1:*', '(UID FLAGS BODY.PEEK[])')
            if lit is not None]


def matching(m, folder, sub):
    select(m, folder, False)
    uids = []
    for meta, lit in fetch(m, '1:*', '(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])'):
        if lit is None:
            continue
        subject = header(email.message_from_bytes(lit, policy=email.policy.default), 'Subject')
        if sub in subject:
            uids.append(str(uid_of(meta)))
    return uids


def act_messages(r):
    m = imap(r)
    try:
        return messages(m, r['folder'])
    finally:
        close(m)


def act_wait(r):
    deadline = time.monotonic() + r['timeout']
    m = imap(r)
    try:
        while True:
            for msg in messages(m, r['folder']):
                if r['subject'] in msg['subject']:
                    return msg
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)
    finally:
        close(m)


def act_folders(r):
    m = imap(r)
    try:
        out = []
        for line in check(m.list('""', '"*"'), 'LIST'):
            if not isinstance(line, bytes):
                continue
            g = re.match(rb'\((.*?)\) (?:NIL|"(?:[^"\\]|\\.)*") (.+)$', line)
            if not g:
                continue
            name = g.group(2).decode()
            if name.startswith('"'):
                name = re.sub(r'\\(.)', r'\1', name[1:-1])
            out.append({'name': name, 'flags': g.group(1).decode().split()})
        return out
    finally:
        close(m)


def act_store(r):
    m = imap(r)
    try:
        uids = matching(m, r['folder'], r['subject'])
        if uids:
            check(m.uid('STORE', ','.join(uids), r['op'], '(' + r['flags'] + ')'), 'UID STORE')
        return len(uids)
    finally:
        close(m)


def act_move(r):
    m = imap(r)
    try:
        uids = matching(m, r['folder'], r['subject'])
        if uids:
            check(m.uid('MOVE', ','.join(uids), q(r['dest'])), 'UID MOVE')
        return len(uids)
    finally:
        close(m)


def act_delete(r):
    m = imap(r)
    try:
        uids = matching(m, r['folder'], r['subject'])
        if uids:
            check(m.uid('STORE', ','.join(uids), '+FLAGS.SILENT', '(\\Deleted)'), 'UID STORE')
            check(m.uid('EXPUNGE', ','.join(uids)), 'UID EXPUNGE')
        return len(uids)
    finally:
        close(m)


def act_append(r):
    m = imap(r)
    try:
        flags = '(' + r['flags'] + ')' if r['flags'] else None
        check(m.append(q(r['folder']), flags, None, bytes(r['raw'])), 'APPEND')
        return True
    finally:
        close(m)


def act_create(r):
    m = imap(r)
    try:
        check(m.create(q(r['folder'])), 'CREATE')
        return True
    finally:
        close(m)


def act_login(r):
    try:
        m = imap(r)
    except Exception:
        return False
    close(m)
    return True


def addr(a):
    return email.utils.parseaddr(a)[1] or a


def act_send(r):
    spec = r['mail']
    msg = EmailMessage()
    msg['From'] = spec['from']
    if spec['to']:
        msg['To'] = ', '.join(spec['to'])
    if spec['cc']:
        msg['Cc'] = ', '.join(spec['cc'])
    msg['Subject'] = spec['subject']
    msg['Date'] = email.utils.formatdate(localtime=True)
    domain = addr(spec['from']).rpartition('@')[2] or 'corp.test'
    mid = spec.get('message_id') or email.utils.make_msgid(domain=domain)
    msg['Message-ID'] = mid
    if spec.get('in_reply_to'):
        msg['In-Reply-To'] = spec['in_reply_to']
    if spec.get('references'):
        msg['References'] = spec['references']
    for k, v in spec['headers']:
        msg[k] = v
    msg.set_content(spec['body'])
    for a in spec['attachments']:
        ctype = a.get('content_type') or mimetypes.guess_type(a['name'])[0] or 'application/octet-stream'
        maintype, _, subtype = ctype.partition('/')
        msg.add_attachment(bytes(a['content']), maintype=maintype, subtype=subtype, filename=a['name'])
    rcpts = [addr(x) for x in spec['to'] + spec['cc'] + spec['bcc']]
    s = smtplib.SMTP(HOST, r['port'], local_hostname='client.test', timeout=20)
    try:
        if r.get('login'):
            s.login(r['login'], r['password'])
        refused = s.send_message(msg, from_addr=addr(spec['from']), to_addrs=rcpts)
    finally:
        try:
            s.quit()
        except Exception:
            pass
    if refused:
        raise Exception('recipients refused: %r' % (refused,))
    return {'message_id': mid}


# ---- CalDAV (python caldav client) and CardDAV (raw WebDAV) ----

def unfold(text):
    return re.sub(r'\r?\n[ \t]', '', text).splitlines()


def props(text, begin):
    """First component BEGIN:<begin>: {NAME: [values]} (parameters dropped)."""
    out, inside = {}, False
    for line in unfold(text):
        if line.upper() == 'BEGIN:' + begin:
            inside = True
        elif line.upper() == 'END:' + begin:
            break
        elif inside and ':' in line:
            k, _, v = line.partition(':')
            out.setdefault(k.split(';')[0].upper(), []).append(v)
    return out


def ical_escape(s):
    return s.replace('\\', '\\\\').replace(';', '\\;').replace(',', '\\,').replace('\n', '\\n')


def calendar(r, create):
    import caldav
    c = caldav.DAVClient('http://%s:%d/' % (HOST, r['port']), username=r['user'],
                         password=r['password'], timeout=20)
    p = c.principal()
    for cal in p.calendars():
        if str(cal.url).rstrip('/').rsplit('/', 1)[-1] == r['calendar']:
            return cal
    if not create:
        return None
    return p.make_calendar(name=r['calendar'], cal_id=r['calendar'])


def act_cal_put(r):
    cal = calendar(r, True)
    ics = '\r\n'.join([
        'BEGIN:VCALENDAR', 'VERSION:2.0', 'PRODID:-//Redoubt tests//peers//EN', 'BEGIN:VEVENT',
        'UID:' + r['uid'], 'DTSTAMP:' + time.strftime('%Y%m%dT%H%M%SZ', time.gmtime()),
        'DTSTART:' + r['dtstart'], 'DTEND:' + r['dtend'], 'SUMMARY:' + ical_escape(r['summary']),
        'END:VEVENT', 'END:VCALENDAR', ''])
    return str(cal.save_event(ics).url)


def act_cal_list(r):
    cal = calendar(r, False)
    if cal is None:
        return []
    out = []
    for e in cal.events():
        ev = props(e.data, 'VEVENT')
        one = lambda k: ev.get(k, [''])[0]
        out.append({'href': str(e.url), 'uid': one('UID'), 'summary': one('SUMMARY'),
                    'dtstart': one('DTSTART'), 'dtend': one('DTEND'), 'ics': e.data})
    return out


def dav(r, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(HOST, r['port'], timeout=20)
    token = base64.b64encode(('%s:%s' % (r['user'], r['password'])).encode()).decode()
    h = {'Authorization': 'Basic ' + token}
    h.update(headers or {})
    conn.request(method, path, body=body.encode() if isinstance(body, str) else body, headers=h)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def book_path(r):
    return '/%s/%s/' % (urllib.parse.quote(r['user'], safe=''), urllib.parse.quote(r['addressbook'], safe=''))


PROPFIND = ('<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
            '<D:resourcetype/><D:getetag/></D:prop></D:propfind>')


def hrefs(r, path):
    status, data = dav(r, 'PROPFIND', path, PROPFIND,
                       {'Depth': '1', 'Content-Type': 'application/xml; charset=utf-8'})
    if status == 404:
        return None
    if status != 207:
        raise Exception('PROPFIND %s: %d %r' % (path, status, data[:500]))
    return [h.text for h in ET.fromstring(data).iter('{DAV:}href')]


def act_card_put(r):
    user_path = '/%s/' % urllib.parse.quote(r['user'], safe='')
    hrefs(r, user_path)  # Radicale creates the principal collection on its owner's first request.
    path = book_path(r)
    if hrefs(r, path) is None:
        body = ('<?xml version="1.0" encoding="utf-8"?><D:mkcol xmlns:D="DAV:" '
                'xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype>'
                '<D:collection/><CR:addressbook/></D:resourcetype><D:displayname>%s</D:displayname>'
                '</D:prop></D:set></D:mkcol>') % r['addressbook']
        status, data = dav(r, 'MKCOL', path, body, {'Content-Type': 'application/xml; charset=utf-8'})
        if status not in (200, 201):
            raise Exception('MKCOL %s: %d %r' % (path, status, data[:500]))
    vcard = '\r\n'.join([
        'BEGIN:VCARD', 'VERSION:3.0', 'UID:' + r['uid'], 'FN:' + r['full_name'],
        'N:' + r['full_name'] + ';;;;', 'EMAIL;TYPE=INTERNET:' + r['email'], 'END:VCARD', ''])
    href = path + urllib.parse.quote(r['uid'], safe='') + '.vcf'
    status, data = dav(r, 'PUT', href, vcard, {'Content-Type': 'text/vcard; charset=utf-8'})
    if status not in (200, 201, 204):
        raise Exception('PUT %s: %d %r' % (href, status, data[:500]))
    return href


def act_card_list(r):
    path = book_path(r)
    found = hrefs(r, path)
    out = []
    for href in found or []:
        if href.endswith('/'):
            continue
        status, data = dav(r, 'GET', href)
        if status != 200:
            raise Exception('GET %s: %d' % (href, status))
        text = data.decode('utf-8', 'replace')
        card = props(text, 'VCARD')
        out.append({'href': href, 'uid': card.get('UID', [''])[0], 'full_name': card.get('FN', [''])[0],
                    'emails': card.get('EMAIL', []), 'vcard': text})
    return out


ACTIONS = {
    'messages': act_messages, 'wait': act_wait, 'folders': act_folders, 'store': act_store,
    'move': act_move, 'delete': act_delete, 'append': act_append, 'create': act_create,
    'login': act_login, 'send': act_send, 'cal_put': act_cal_put, 'cal_list': act_cal_list,
    'card_put': act_card_put, 'card_list': act_card_list,
}

try:
    req = json.load(sys.stdin)
    result = {'ok': ACTIONS[req['action']](req)}
except Exception as e:
    result = {'error': '%s: %s\n%s' % (type(e).__name__, e, traceback.format_exc())}
json.dump(result, sys.stdout)
"#;
