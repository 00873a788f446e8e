//! One user's calendar and address book on the organisation's CalDAV/CardDAV server: a
//! task per user (like [`crate::mailbox::Mailbox`]) that mirrors both collections into the
//! user's mailbox group and carries out the calendar and contacts commands the user's
//! devices send.
//!
//! The collections are `URL/<address>/calendar/` and `URL/<address>/contacts/` (created
//! when missing), reached as the organisation's service account. Every [`POLL_EVERY`] (and
//! right after a command) the task asks each collection for its CTag (or sync-token);
//! when it moved, a PROPFIND lists every member's ETag, changed members are fetched (GET),
//! and new or changed ones are pushed as [`MailPush::Event`]/[`MailPush::Contact`], gone
//! ones as [`MailPush::EventRemoved`]/[`MailPush::ContactRemoved`].
//!
//! What it keeps, in the connector's encrypted vault: per collection its URL, last CTag
//! and a push counter (`dav/<user>/calendar`), and per member its href and ETag
//! (`dav/<user>/calendar/i/<hash of href>`). No event or contact content. Each push goes
//! out under an id derived from (user, href, ETag, push counter) and its record is saved
//! with the counter in one transaction after it, so a push repeated after a crash is
//! dropped by the server as a repeat, while an event deleted and later restored unchanged
//! (same href and ETag) is still pushed again.

mod http;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use redoubt_dav::path::{encode_segment, inside, is_collection, normalize_href, same_path};
use redoubt_dav::{ical, xml};
use redoubt_mls::mail::{MailCommand, MailPush, NewContact, NewEvent, Service};
use redoubt_proto::{Bytes, DavServerSettings, GroupId};
use redoubt_server::MailUser;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::sync::{mpsc, watch};

use crate::{Command, Shared, deterministic_id, unix_now};
use http::{Client, HttpError, Response};

/// How often both collections are looked at when nothing else happens.
const POLL_EVERY: Duration = Duration::from_secs(5);
/// Backoff after a failure: first and longest pause.
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Most members fetched from one collection in one round; the rest follow next round.
const FETCH_PER_ROUND_MAX: usize = 200;
/// Most members of one collection mirrored (the first by href).
const ITEMS_MAX: usize = 10_000;
/// Longest phone number accepted from a device.
const PHONE_BYTES_MAX: usize = 64;

const PROPFIND_VERSION: &str = r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" xmlns:CS="http://calendarserver.org/ns/"><D:prop><D:resourcetype/><CS:getctag/><D:sync-token/></D:prop></D:propfind>"#;
const PROPFIND_MEMBERS: &str = r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getetag/></D:prop></D:propfind>"#;
const XML: &str = "application/xml; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Calendar,
    Contacts,
}

const KINDS: [Kind; 2] = [Kind::Calendar, Kind::Contacts];

impl Kind {
    fn segment(self) -> &'static str {
        match self {
            Self::Calendar => "calendar",
            Self::Contacts => "contacts",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Calendar => "calendar",
            Self::Contacts => "address book",
        }
    }

    fn item(self) -> &'static str {
        match self {
            Self::Calendar => "event",
            Self::Contacts => "contact",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Calendar => ".ics",
            Self::Contacts => ".vcf",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Calendar => "text/calendar; charset=utf-8",
            Self::Contacts => "text/vcard; charset=utf-8",
        }
    }

    /// The `resourcetype` the collection must have.
    fn resource_type(self) -> (&'static str, &'static str) {
        match self {
            Self::Calendar => (xml::CALDAV, "calendar"),
            Self::Contacts => (xml::CARDDAV, "addressbook"),
        }
    }

    fn parse(self, href: &str, text: &str) -> Option<MailPush> {
        match self {
            Self::Calendar => ical::parse_event(href, text).map(MailPush::Event),
            Self::Contacts => ical::parse_contact(href, text).map(MailPush::Contact),
        }
    }

    fn removed(self, href: &str) -> MailPush {
        let href = href.to_owned();
        match self {
            Self::Calendar => MailPush::EventRemoved { href },
            Self::Contacts => MailPush::ContactRemoved { href },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum DavError {
    /// The server could not be reached or did not speak HTTP: the task backs off.
    #[error("calendar server {0}")]
    Http(String),
    /// The server (or the connector) refused one thing.
    #[error("{0}")]
    Refused(String),
    #[error("connector state: {0}")]
    State(String),
    #[error(transparent)]
    Client(#[from] redoubt_client::ClientError),
}

impl From<HttpError> for DavError {
    fn from(error: HttpError) -> Self {
        match error {
            HttpError::Connection(why) => Self::Http(why),
            HttpError::Request(why) => Self::Refused(why),
        }
    }
}

/// What the connector remembers of one collection.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CollectionState {
    /// The collection's URL: state from another server or path is replaced.
    url: String,
    /// The CTag (or sync-token) when every member was last mirrored.
    version: Option<String>,
    /// How many pushes were made for this collection: part of each push's id.
    pushes: u64,
}

/// What the connector remembers of one member.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ItemState {
    href: String,
    etag: String,
    /// Whether the devices hold it (a member that is not an event, say, is not pushed).
    pushed: bool,
}

pub(crate) struct Dav {
    shared: Arc<Shared>,
    settings: DavServerSettings,
    user: MailUser,
    group: GroupId,
    commands: mpsc::Receiver<Command>,
    /// Moves when a device joined the mailbox group: push everything again.
    replays: watch::Receiver<u64>,
    /// The URL's path, ending in `/`.
    base: String,
}

impl Dav {
    pub(crate) fn new(
        shared: Arc<Shared>,
        settings: DavServerSettings,
        user: MailUser,
        group: GroupId,
        commands: mpsc::Receiver<Command>,
        replays: watch::Receiver<u64>,
    ) -> Self {
        Self {
            shared,
            settings,
            user,
            group,
            commands,
            replays,
            base: String::new(),
        }
    }

    /// Runs until the connector stops (the command channel closes).
    pub(crate) async fn run(mut self) {
        let client = match Client::new(&self.settings) {
            Ok((client, base)) => {
                self.base = base;
                client
            }
            Err(why) => {
                // Validated when set; should the stored URL still be unusable, commands
                // are answered rather than left hanging.
                tracing::error!(user = %self.user.user, %why, "calendar server URL unusable");
                let why = format!("the calendar server's URL is unusable: {why}");
                let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
                while self
                    .shared
                    .refuse_until(&self.user.user, &self.group, &mut self.commands, far, &why)
                    .await
                {}
                return;
            }
        };
        let mut backoff = BACKOFF_MIN;
        let mut failing: Option<Option<String>> = None;
        loop {
            let error = match self.serve(&client, &mut backoff, &mut failing).await {
                Ok(()) => return,
                Err(error) => error,
            };
            tracing::warn!(user = %self.user.user, %error, "calendar and contacts unavailable; will retry");
            self.report(&mut failing, Some(error.to_string())).await;
            let why = format!("the calendar server is unavailable: {error}");
            let deadline = tokio::time::Instant::now() + backoff;
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

    async fn serve(
        &mut self,
        client: &Client,
        backoff: &mut Duration,
        failing: &mut Option<Option<String>>,
    ) -> Result<(), DavError> {
        for kind in KINDS {
            self.ensure(client, kind).await?;
        }
        for kind in KINDS {
            self.sync(client, kind).await?;
        }
        *backoff = BACKOFF_MIN;
        self.report(failing, None).await;
        loop {
            match tokio::time::timeout(POLL_EVERY, self.commands.recv()).await {
                Ok(None) => return Ok(()),
                Ok(Some(command)) => self.carry_out(client, command).await?,
                Err(_) => {}
            }
            if self.replays.has_changed().unwrap_or(false) {
                self.replays.borrow_and_update();
                for kind in KINDS {
                    self.forget_pushed(kind)?;
                }
            }
            for kind in KINDS {
                self.sync(client, kind).await?;
            }
        }
    }

    /// Tells the devices (and nothing else: the status is theirs to show) whether calendar
    /// and contacts work, each time that changes. `last` is what was said last: `None`
    /// before anything was, `Some(None)` for working.
    async fn report(&self, last: &mut Option<Option<String>>, error: Option<String>) {
        if last.as_ref() == Some(&error) {
            return;
        }
        let (ok, detail) = match &error {
            Some(error) => (false, format!("calendar and contacts: {error}")),
            None => (true, "calendar and contacts: connected".to_owned()),
        };
        *last = Some(error);
        let push = MailPush::Status {
            service: Service::Calendar,
            ok,
            detail,
            at_unix_s: unix_now(),
        };
        if let Err(error) = self.shared.push(&self.group, &push, None).await {
            tracing::warn!(user = %self.user.user, %error, "could not push the calendar status");
        }
    }

    // ----- where things are -----

    fn home(&self) -> String {
        format!("{}{}/", self.base, encode_segment(&self.user.address))
    }

    fn collection(&self, kind: Kind) -> String {
        format!("{}{}/", self.home(), kind.segment())
    }

    fn state_key(&self, kind: Kind) -> String {
        format!("dav/{}/{}", self.user.user, kind.segment())
    }

    fn item_key(&self, kind: Kind, href: &str) -> String {
        let digest = sha2::Sha256::digest(href.as_bytes());
        format!("{}/i/{}", self.state_key(kind), hex(&digest[..16]))
    }

    // ----- state -----

    fn load(&self, kind: Kind) -> Result<(CollectionState, BTreeMap<String, ItemState>), DavError> {
        let state = |e: redoubt_client::VaultError| DavError::State(e.to_string());
        let meta = self
            .shared
            .state
            .get(crate::STATE_NS, self.state_key(kind))
            .map_err(state)?
            .and_then(|bytes| postcard::from_bytes(&bytes).ok())
            .unwrap_or_default();
        let prefix = format!("{}/i/", self.state_key(kind));
        let mut items = BTreeMap::new();
        for (_, bytes) in self
            .shared
            .state
            .get_by_prefix(crate::STATE_NS, prefix)
            .map_err(state)?
        {
            if let Ok(item) = postcard::from_bytes::<ItemState>(&bytes) {
                items.insert(item.href.clone(), item);
            }
        }
        Ok((meta, items))
    }

    /// Forgets the collection's version and members (keeping the push count, so ids stay
    /// unique): the next sync pushes every member again, for a device that just joined.
    fn forget_pushed(&self, kind: Kind) -> Result<(), DavError> {
        let (mut meta, items) = self.load(kind)?;
        meta.version = None;
        let keys: Vec<String> = items.keys().map(|href| self.item_key(kind, href)).collect();
        let meta_bytes = postcard::to_stdvec(&meta).map_err(|e| DavError::State(e.to_string()))?;
        self.shared
            .state
            .transaction(|tx| {
                tx.put(crate::STATE_NS, self.state_key(kind), &meta_bytes)?;
                for key in &keys {
                    tx.delete(crate::STATE_NS, key)?;
                }
                Ok(())
            })
            .map_err(|e| DavError::State(e.to_string()))
    }

    /// Saves the collection's record and, with `Some(href)`, that member's record (or its
    /// removal), in one transaction.
    fn save(
        &self,
        kind: Kind,
        meta: &CollectionState,
        item: Option<(&str, Option<&ItemState>)>,
    ) -> Result<(), DavError> {
        let encode_error = |e: postcard::Error| DavError::State(e.to_string());
        let meta_bytes = postcard::to_stdvec(meta).map_err(encode_error)?;
        let item = match item {
            Some((href, Some(state))) => Some((
                self.item_key(kind, href),
                Some(postcard::to_stdvec(state).map_err(encode_error)?),
            )),
            Some((href, None)) => Some((self.item_key(kind, href), None)),
            None => None,
        };
        self.shared
            .state
            .transaction(|tx| {
                tx.put(crate::STATE_NS, self.state_key(kind), &meta_bytes)?;
                match &item {
                    Some((key, Some(bytes))) => tx.put(crate::STATE_NS, key, bytes)?,
                    Some((key, None)) => {
                        tx.delete(crate::STATE_NS, key)?;
                    }
                    None => {}
                }
                Ok(())
            })
            .map_err(|e| DavError::State(e.to_string()))
    }

    /// Pushes under an id no other push of this collection has, and counts it.
    async fn push(
        &self,
        kind: Kind,
        meta: &mut CollectionState,
        href: &str,
        etag: &str,
        push: &MailPush,
    ) -> Result<(), DavError> {
        let label = match push {
            MailPush::EventRemoved { .. } | MailPush::ContactRemoved { .. } => "removed",
            _ => "changed",
        };
        let n = meta.pushes;
        let id = deterministic_id(
            &self.user.user,
            &[kind.item(), label, href, etag],
            (n >> 32) as u32,
            n as u32,
        );
        self.shared.push(&self.group, push, Some(id)).await?;
        meta.pushes += 1;
        Ok(())
    }

    // ----- the server -----

    fn refused(&self, what: &str, response: &Response) -> DavError {
        DavError::Refused(match response.status {
            401 => "the calendar server refused the service account (wrong user or password)".into(),
            403 => format!(
                "the calendar server does not let the service account {what} (check its rights on {})",
                self.home()
            ),
            status => format!("the calendar server answered {status} to {what}"),
        })
    }

    async fn propfind(
        &self,
        client: &Client,
        path: &str,
        depth: &str,
        body: &str,
    ) -> Result<Response, DavError> {
        Ok(client
            .send(
                "PROPFIND",
                path,
                &[("Depth", depth), ("Content-Type", XML)],
                body.as_bytes(),
            )
            .await?)
    }

    fn members(&self, response: &Response) -> Result<Vec<xml::Member>, DavError> {
        let text = std::str::from_utf8(&response.body)
            .map_err(|_| DavError::Http("sent a PROPFIND answer that is not UTF-8".into()))?;
        xml::multistatus(text).map_err(|e| DavError::Http(format!("sent a bad PROPFIND answer: {e}")))
    }

    /// Makes sure the collection exists and is of the right kind, creating it (and the
    /// user's home collection) when missing.
    async fn ensure(&self, client: &Client, kind: Kind) -> Result<(), DavError> {
        let path = self.collection(kind);
        let response = self.propfind(client, &path, "0", PROPFIND_VERSION).await?;
        match response.status {
            207 => {
                let (ns, name) = kind.resource_type();
                let is_kind = self
                    .members(&response)?
                    .iter()
                    .any(|m| is_collection(&m.href, &path) && m.has_type(ns, name));
                if is_kind {
                    Ok(())
                } else {
                    Err(DavError::Refused(format!(
                        "{path} on the calendar server exists but is not a {}",
                        kind.what()
                    )))
                }
            }
            404 => self.create(client, kind).await,
            _ => Err(self.refused(&format!("read the {} {path}", kind.what()), &response)),
        }
    }

    async fn create(&self, client: &Client, kind: Kind) -> Result<(), DavError> {
        let path = self.collection(kind);
        let mut response = self.make(client, kind, &path).await?;
        if response.status == 409 {
            // The user's home collection is missing: make it first.
            let home = self.home();
            let made = client.send("MKCOL", &home, &[], b"").await?;
            if !matches!(made.status, 200 | 201 | 405) {
                return Err(self.refused(&format!("create {home}"), &made));
            }
            response = self.make(client, kind, &path).await?;
        }
        match response.status {
            // 405: made meanwhile by someone else.
            200 | 201 | 405 => {
                tracing::info!(user = %self.user.user, %path, "{} created", kind.what());
                Ok(())
            }
            _ => Err(self.refused(&format!("create the {} {path}", kind.what()), &response)),
        }
    }

    async fn make(&self, client: &Client, kind: Kind, path: &str) -> Result<Response, DavError> {
        let (method, body) = match kind {
            Kind::Calendar => (
                "MKCALENDAR",
                r#"<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop><D:displayname>Calendar</D:displayname></D:prop></D:set></C:mkcalendar>"#,
            ),
            Kind::Contacts => (
                "MKCOL",
                r#"<?xml version="1.0" encoding="utf-8"?><D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype><D:displayname>Contacts</D:displayname></D:prop></D:set></D:mkcol>"#,
            ),
        };
        Ok(client
            .send(method, path, &[("Content-Type", XML)], body.as_bytes())
            .await?)
    }

    /// The collection's CTag or sync-token (`None` if it has neither); creates the
    /// collection if it went missing.
    async fn version(&self, client: &Client, kind: Kind, path: &str) -> Result<Option<String>, DavError> {
        let response = self.propfind(client, path, "0", PROPFIND_VERSION).await?;
        match response.status {
            207 => Ok(self
                .members(&response)?
                .into_iter()
                .find(|m| is_collection(&m.href, path))
                .and_then(|m| m.ctag.or(m.sync_token))),
            404 => {
                self.create(client, kind).await?;
                Ok(None)
            }
            _ => Err(self.refused(&format!("read the {} {path}", kind.what()), &response)),
        }
    }

    /// Every member of the collection with its ETag (the first [`ITEMS_MAX`] by href).
    async fn list(
        &self,
        client: &Client,
        kind: Kind,
        path: &str,
    ) -> Result<BTreeMap<String, String>, DavError> {
        let response = self.propfind(client, path, "1", PROPFIND_MEMBERS).await?;
        if response.status != 207 {
            return Err(self.refused(&format!("list the {} {path}", kind.what()), &response));
        }
        let mut listing = BTreeMap::new();
        for member in self.members(&response)? {
            let Some(href) = normalize_href(&member.href) else {
                tracing::debug!(user = %self.user.user, "member with an unusable href skipped");
                continue;
            };
            if same_path(&href, path) || member.has_type(xml::DAV, "collection") || !inside(&href, path) {
                continue;
            }
            let Some(etag) = member.etag else {
                // CalDAV and CardDAV require ETags; without one, changes cannot be seen.
                tracing::debug!(user = %self.user.user, "member without an ETag skipped");
                continue;
            };
            listing.insert(href, etag);
        }
        if listing.len() > ITEMS_MAX {
            tracing::warn!(
                user = %self.user.user,
                members = listing.len(),
                "{} too large: only the first {ITEMS_MAX} members are mirrored",
                kind.what()
            );
            while listing.len() > ITEMS_MAX {
                listing.pop_last();
            }
        }
        Ok(listing)
    }

    /// A member's ETag and content; `None` if it is gone.
    async fn get(&self, client: &Client, href: &str) -> Result<Option<(Option<String>, String)>, DavError> {
        let response = client.send("GET", href, &[], b"").await?;
        match response.status {
            200 => Ok(Some((
                response.header("etag").map(str::to_owned),
                String::from_utf8_lossy(&response.body).into_owned(),
            ))),
            404 | 410 => Ok(None),
            _ => Err(self.refused("GET a member", &response)),
        }
    }

    /// Brings the devices' copy of the collection in line with the server's.
    async fn sync(&self, client: &Client, kind: Kind) -> Result<(), DavError> {
        let path = self.collection(kind);
        let url = format!("{}{path}", client.origin());
        let (mut meta, mut items) = self.load(kind)?;
        if meta.url != url {
            // Another server or path: what the devices hold from the old one goes.
            for (href, item) in std::mem::take(&mut items) {
                if item.pushed {
                    self.push(kind, &mut meta, &href, &item.etag, &kind.removed(&href))
                        .await?;
                }
                self.save(kind, &meta, Some((&href, None)))?;
            }
            meta = CollectionState {
                url,
                version: None,
                pushes: meta.pushes,
            };
            self.save(kind, &meta, None)?;
        }
        let version = self.version(client, kind, &path).await?;
        if version.is_some() && version == meta.version {
            return Ok(());
        }
        let listing = self.list(client, kind, &path).await?;
        for (href, item) in &items {
            if listing.contains_key(href) {
                continue;
            }
            if item.pushed {
                self.push(kind, &mut meta, href, &item.etag, &kind.removed(href))
                    .await?;
            }
            self.save(kind, &meta, Some((href, None)))?;
        }
        let mut complete = true;
        let mut fetched = 0;
        for (href, listed_etag) in &listing {
            let known = items.get(href);
            if known.is_some_and(|item| &item.etag == listed_etag) {
                continue;
            }
            if fetched == FETCH_PER_ROUND_MAX {
                complete = false;
                break;
            }
            fetched += 1;
            let Some((etag, text)) = self.get(client, href).await? else {
                // Deleted since the listing: the next round sees it gone.
                complete = false;
                continue;
            };
            let etag = etag.unwrap_or_else(|| listed_etag.clone());
            let was_pushed = known.is_some_and(|item| item.pushed);
            let pushed = match kind.parse(href, &text) {
                Some(push) => {
                    self.push(kind, &mut meta, href, &etag, &push).await?;
                    true
                }
                None => {
                    if was_pushed {
                        self.push(kind, &mut meta, href, &etag, &kind.removed(href))
                            .await?;
                    }
                    false
                }
            };
            let item = ItemState {
                href: href.clone(),
                etag,
                pushed,
            };
            self.save(kind, &meta, Some((href, Some(&item))))?;
            items.insert(href.clone(), item);
        }
        if complete && meta.version != version {
            meta.version = version;
            self.save(kind, &meta, None)?;
        }
        Ok(())
    }

    // ----- commands -----

    async fn carry_out(&self, client: &Client, command: Command) -> Result<(), DavError> {
        let queued = &command.queued;
        let answer = |error: Option<String>| self.shared.answer(&self.user.user, &self.group, queued, error);
        if queued.sender != self.user.user {
            answer(Some("not your mailbox".into())).await;
            return Ok(());
        }
        let (kind, result) = match &queued.command {
            MailCommand::AddEvent { id, event } => (
                Kind::Calendar,
                match check_event(event) {
                    Ok(()) => {
                        let uid = uid_for(id);
                        let body = ical::event_ics(&uid, event, &self.user.address, unix_now());
                        self.add(client, Kind::Calendar, &uid, &body).await
                    }
                    Err(error) => Err(error),
                },
            ),
            MailCommand::AddContact { id, contact } => (
                Kind::Contacts,
                match check_contact(contact) {
                    Ok(()) => {
                        let uid = uid_for(id);
                        let body = ical::contact_vcard(&uid, contact);
                        self.add(client, Kind::Contacts, &uid, &body).await
                    }
                    Err(error) => Err(error),
                },
            ),
            MailCommand::DeleteEvent { href, .. } => {
                (Kind::Calendar, self.delete(client, Kind::Calendar, href).await)
            }
            MailCommand::DeleteContact { href, .. } => {
                (Kind::Contacts, self.delete(client, Kind::Contacts, href).await)
            }
            _ => {
                answer(Some("not a calendar or contacts command".into())).await;
                return Ok(());
            }
        };
        match result {
            Ok(()) => {
                // The change reaches the devices before its outcome does.
                let synced = self.sync(client, kind).await;
                answer(None).await;
                synced
            }
            Err(DavError::Http(error)) => {
                answer(Some(format!("the calendar server failed: {error}"))).await;
                Err(DavError::Http(error))
            }
            Err(error) => {
                answer(Some(error.to_string())).await;
                Ok(())
            }
        }
    }

    /// PUTs a new member named after its UID. The UID comes from the command's id, so a
    /// command carried out again after a crash finds its member there (412) and is done.
    async fn add(&self, client: &Client, kind: Kind, uid: &str, body: &str) -> Result<(), DavError> {
        let href = format!(
            "{}{}{}",
            self.collection(kind),
            encode_segment(uid),
            kind.extension()
        );
        let headers = [("Content-Type", kind.content_type()), ("If-None-Match", "*")];
        let mut response = client.send("PUT", &href, &headers, body.as_bytes()).await?;
        if matches!(response.status, 404 | 409) {
            self.ensure(client, kind).await?;
            response = client.send("PUT", &href, &headers, body.as_bytes()).await?;
        }
        match response.status {
            200 | 201 | 204 | 412 => Ok(()),
            _ => Err(self.refused(&format!("store a new {}", kind.item()), &response)),
        }
    }

    /// Deletes a member the devices were told of; only hrefs of this user's collection
    /// are ever deleted. One already gone counts as deleted.
    async fn delete(&self, client: &Client, kind: Kind, href: &str) -> Result<(), DavError> {
        let (_, items) = self.load(kind)?;
        if !items.contains_key(href) {
            if inside(href, &self.collection(kind)) {
                return Ok(());
            }
            return Err(DavError::Refused(format!(
                "no such {} in your {}",
                kind.item(),
                kind.what()
            )));
        }
        let response = client.send("DELETE", href, &[], b"").await?;
        match response.status {
            200 | 202 | 204 | 404 | 410 => Ok(()),
            _ => Err(self.refused(&format!("delete the {}", kind.item()), &response)),
        }
    }
}

/// The UID (and file name) of a member a command adds.
fn uid_for(command_id: &Bytes<16>) -> String {
    format!("{}@redoubt", command_id.to_hex())
}

fn check_event(event: &NewEvent) -> Result<(), DavError> {
    let refuse = |why: String| Err(DavError::Refused(why));
    // Years 1 to 9999: what iCalendar can say.
    let range = -62_135_596_800..=253_402_300_799;
    if event.title.trim().is_empty() {
        return refuse("an event needs a title".into());
    }
    if event.title.len() > ical::TEXT_BYTES_MAX || event.location.len() > ical::TEXT_BYTES_MAX {
        return refuse(format!(
            "title and location may be {} bytes each",
            ical::TEXT_BYTES_MAX
        ));
    }
    if !range.contains(&event.start_unix_s) || !range.contains(&event.end_unix_s) {
        return refuse("the event's times are out of range".into());
    }
    if event.end_unix_s < event.start_unix_s {
        return refuse("the event ends before it starts".into());
    }
    if event.attendees.len() > ical::ATTENDEES_MAX {
        return refuse(format!("at most {} attendees", ical::ATTENDEES_MAX));
    }
    for attendee in &event.attendees {
        redoubt_proto::check_address(attendee).map_err(DavError::Refused)?;
    }
    Ok(())
}

fn check_contact(contact: &NewContact) -> Result<(), DavError> {
    let refuse = |why: String| Err(DavError::Refused(why));
    if contact.name.trim().is_empty() {
        return refuse("a contact needs a name".into());
    }
    if contact.name.len() > ical::TEXT_BYTES_MAX {
        return refuse(format!("a name may be {} bytes", ical::TEXT_BYTES_MAX));
    }
    if contact.emails.len() > ical::VALUES_MAX || contact.phones.len() > ical::VALUES_MAX {
        return refuse(format!(
            "at most {} addresses and {} phone numbers",
            ical::VALUES_MAX,
            ical::VALUES_MAX
        ));
    }
    for email in &contact.emails {
        redoubt_proto::check_address(email).map_err(DavError::Refused)?;
    }
    for phone in &contact.phones {
        let ok = !phone.trim().is_empty()
            && phone.len() <= PHONE_BYTES_MAX
            && phone.chars().any(|c| c.is_ascii_digit())
            && !phone.chars().any(char::is_control);
        if !ok {
            return refuse(format!("{phone:?} is not a phone number"));
        }
    }
    Ok(())
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn commands_from_devices_are_checked() {
        let event = NewEvent {
            title: "Standup".into(),
            start_unix_s: 1_893_578_400,
            end_unix_s: 1_893_579_300,
            location: String::new(),
            attendees: vec!["bob@corp.test".into()],
        };
        assert!(check_event(&event).is_ok());
        for bad in [
            NewEvent {
                title: " ".into(),
                ..event.clone()
            },
            NewEvent {
                end_unix_s: event.start_unix_s - 1,
                ..event.clone()
            },
            NewEvent {
                start_unix_s: i64::MIN,
                ..event.clone()
            },
            NewEvent {
                attendees: vec!["not an address".into()],
                ..event.clone()
            },
            NewEvent {
                attendees: vec!["a@b.test".into(); ical::ATTENDEES_MAX + 1],
                ..event.clone()
            },
            NewEvent {
                location: "x".repeat(ical::TEXT_BYTES_MAX + 1),
                ..event.clone()
            },
        ] {
            assert!(check_event(&bad).is_err(), "{bad:?}");
        }
        let contact = NewContact {
            name: "Bob Builder".into(),
            emails: vec!["bob@corp.test".into()],
            phones: vec!["+1 (555) 0100".into()],
        };
        assert!(check_contact(&contact).is_ok());
        for bad in [
            NewContact {
                name: String::new(),
                ..contact.clone()
            },
            NewContact {
                emails: vec!["bob".into()],
                ..contact.clone()
            },
            NewContact {
                phones: vec!["call me".into()],
                ..contact.clone()
            },
            NewContact {
                phones: vec!["123\n456".into()],
                ..contact.clone()
            },
        ] {
            assert!(check_contact(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            uid_for(&Bytes([0xab; 16])),
            format!("{}@redoubt", "ab".repeat(16))
        );
    }
}
