//! The organisation's mail settings and the server's side of the mail connector.
//!
//! An admin sets the IMAP/SMTP servers and a service account (`AdminMailSet`) and maps
//! users to addresses (`AdminMailMap`). The settings are organisation settings in the
//! store; the service account's password is sealed (XChaCha20-Poly1305) under a key
//! derived from the root key, which is not in the database. The connector itself
//! (crate `redoubt-connector`) runs beside the server and asks [`crate::ServerHandle`]
//! for [`ConnectorConfig`]; it enrols as the service user
//! [`redoubt_mls::mail::CONNECTOR_USER`] like any device, with a code the server issues.

use std::collections::BTreeMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use redoubt_mls::mail::CONNECTOR_USER;
use redoubt_proto::{
    DavServerSettings, ErrorCode, HostPort, MailCredential, MailSecurity, MailServerSettings,
    MailSettingsView, MailStatus, MailUserView, Policy, UserName,
};
use redoubt_store::{Change, UserRecord};
use serde::{Deserialize, Serialize};

use crate::State;
use crate::api::Authenticated;
use crate::cluster::{Hint, announce};
use crate::error::ApiError;
use crate::management::{Permission, audit, require};

const SERVER_KEY: &str = "mail/server";
const ADDRESS_PREFIX: &str = "mail/address/";
const SEAL_LABEL: &[u8] = b"redoubt/mail-master-password/v1";
const DAV_KEY: &str = "dav/server";
const CREDENTIAL_PREFIX: &str = "mail/credential/";
const DAV_SEAL_LABEL: &[u8] = b"redoubt/dav-password/v1";

/// The settings as stored: the password sealed.
#[derive(Serialize, Deserialize)]
struct StoredServer {
    imap: HostPort,
    smtp: HostPort,
    security: MailSecurity,
    master_user: String,
    domain: String,
    password: Sealed,
}

#[derive(Serialize, Deserialize)]
struct StoredDav {
    url: String,
    user: String,
    password: Sealed,
}

/// What the connector needs to serve every mailbox.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    pub server: MailServerSettings,
    /// The calendar and contacts server, when set.
    pub dav: Option<DavServerSettings>,
    pub users: Vec<MailUser>,
}

/// One user whose mail the connector pushes.
#[derive(Debug, Clone, PartialEq)]
pub struct MailUser {
    pub user: UserName,
    pub address: String,
    pub policy: Policy,
    /// The user's own login (`redoubt mail link`), used instead of the service account.
    pub credential: Option<MailCredential>,
}

/// In-memory state shared with the connector: a counter that moves whenever anything the
/// connector reads changes, and the connector's latest status per mailbox.
#[derive(Debug)]
pub(crate) struct MailState {
    pub changed: tokio::sync::watch::Sender<u64>,
    /// Moves when a device published key packages (so it can be added to groups).
    pub devices: tokio::sync::watch::Sender<u64>,
    pub status: std::sync::Mutex<BTreeMap<UserName, MailStatus>>,
}

impl Default for MailState {
    fn default() -> Self {
        Self {
            changed: tokio::sync::watch::channel(0).0,
            devices: tokio::sync::watch::channel(0).0,
            status: std::sync::Mutex::new(BTreeMap::new()),
        }
    }
}

impl MailState {
    /// Settings changed: the connector starts over, and what it said of the old settings
    /// no longer holds.
    pub(crate) fn notify(&self) {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn devices_changed(&self) {
        self.devices.send_modify(|n| *n += 1);
    }

    pub(crate) fn set_status(&self, user: UserName, status: MailStatus) {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user, status);
    }

    /// Mailboxes whose latest word from the connector was good, and those failing.
    pub(crate) fn mailbox_counts(&self) -> (usize, usize) {
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let ok = status.values().filter(|s| s.ok).count();
        (ok, status.len() - ok)
    }

    fn status_of(&self, user: &UserName) -> Option<MailStatus> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .cloned()
    }
}

/// A secret sealed under the server's sealing key, bound to what it is for.
#[derive(Serialize, Deserialize)]
pub(crate) struct Sealed {
    nonce: [u8; 24],
    ciphertext: Vec<u8>,
}

pub(crate) fn seal(state: &State, label: &[u8], secret: &str) -> Result<Sealed, ApiError> {
    let mut nonce = [0u8; 24];
    OsRng.fill_bytes(&mut nonce);
    let ciphertext = cipher(state)
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: secret.as_bytes(),
                aad: label,
            },
        )
        .map_err(|_| internal("sealing failed"))?;
    Ok(Sealed { nonce, ciphertext })
}

pub(crate) fn open(state: &State, label: &[u8], sealed: &Sealed) -> Result<String, ApiError> {
    let bytes = cipher(state)
        .decrypt(
            &XNonce::from(sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: label,
            },
        )
        .map_err(|_| internal("a sealed password does not open (was the root key replaced?)"))?;
    String::from_utf8(bytes).map_err(|_| internal("password is not UTF-8"))
}

fn cipher(state: &State) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*state.org.secret_sealing_key()))
}

fn internal(what: &str) -> ApiError {
    ApiError::new(ErrorCode::Internal, format!("mail settings: {what}"))
}

pub(crate) async fn set(
    state: &State,
    who: &Authenticated,
    settings: MailServerSettings,
) -> Result<(), ApiError> {
    require(state, who, Permission::ManageMail).await?;
    settings
        .validate()
        .map_err(|why| ApiError::new(ErrorCode::InvalidArgument, why))?;
    let password = seal(state, SEAL_LABEL, &settings.master_password)?;
    let stored = StoredServer {
        imap: settings.imap.clone(),
        smtp: settings.smtp.clone(),
        security: settings.security,
        master_user: settings.master_user.clone(),
        domain: settings.domain.clone(),
        password,
    };
    let value = postcard::to_stdvec(&stored).map_err(|_| internal("encoding failed"))?;
    let details = format!(
        "imap={} smtp={} security={} master_user={} domain={}",
        settings.imap,
        settings.smtp,
        settings.security.as_str(),
        settings.master_user,
        settings.domain
    );
    state
        .store
        .apply(
            &[Change::SetSetting {
                key: SERVER_KEY.to_owned(),
                value: Some(value),
            }],
            &[audit(state, Some(who), "mail.set", "mail server", details)],
        )
        .await?;
    announce(state, Hint::MailChanged);
    tracing::info!(admin = %who.user, imap = %settings.imap, smtp = %settings.smtp, "mail settings set");
    Ok(())
}

pub(crate) async fn map(
    state: &State,
    who: &Authenticated,
    user: UserName,
    address: String,
) -> Result<(), ApiError> {
    require(state, who, Permission::ManageMail).await?;
    if state.store.user(&user).await?.is_none() {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("user {user} not found"),
        ));
    }
    let value = if address.is_empty() {
        None
    } else {
        redoubt_proto::check_address(&address)
            .map_err(|why| ApiError::new(ErrorCode::InvalidArgument, why))?;
        Some(address.as_bytes().to_vec())
    };
    let details = if address.is_empty() {
        "user@domain".to_owned()
    } else {
        address
    };
    state
        .store
        .apply(
            &[Change::SetSetting {
                key: format!("{ADDRESS_PREFIX}{user}"),
                value,
            }],
            &[audit(
                state,
                Some(who),
                "mail.map",
                format!("user {user}"),
                details,
            )],
        )
        .await?;
    announce(state, Hint::MailChanged);
    Ok(())
}

/// An SMTP submission transport to the organisation's server with `login`: TLS, STARTTLS
/// or (only for a server on this machine, which the settings enforce) none; PLAIN or
/// LOGIN; 30 s per exchange. The one way Redoubt submits mail (the connector, codes).
pub fn smtp_transport(
    server: &MailServerSettings,
    login: String,
    password: String,
) -> Result<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>, String> {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::{AsyncSmtpTransport, Tokio1Executor};
    let smtp = &server.smtp;
    let builder = match server.security {
        MailSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host),
        MailSecurity::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host),
        MailSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            &smtp.host,
        )),
    }
    .map_err(|e| format!("SMTP server {smtp}: {e}"))?;
    Ok(builder
        .port(smtp.port)
        .credentials(Credentials::new(login, password))
        .authentication(vec![Mechanism::Plain, Mechanism::Login])
        .timeout(Some(std::time::Duration::from_secs(30)))
        .build())
}

/// The mailboxes mapped to users, for a directory to map more without taking one that
/// belongs to someone else.
#[derive(Debug)]
pub(crate) struct Mailboxes {
    /// Address (lower-cased) to its user.
    owners: BTreeMap<String, UserName>,
    /// The organisation's mail domain, once a mail server is set.
    domain: Option<String>,
}

impl Mailboxes {
    pub(crate) async fn load(state: &State) -> Result<Self, ApiError> {
        let owners = mapped_addresses(state)
            .await?
            .into_iter()
            .map(|(user, address)| (address.to_lowercase(), user))
            .collect();
        let domain = stored_server(state).await?.map(|s| s.domain.to_lowercase());
        Ok(Self { owners, domain })
    }

    /// The change mapping `user` to `address`, when it is a usable address in the
    /// organisation's domain that no other user has; `None` (logged) otherwise.
    pub(crate) fn map(&mut self, user: &UserName, address: Option<&str>) -> Option<Change> {
        let address = address?;
        redoubt_proto::check_address(address).ok()?;
        let lower = address.to_lowercase();
        if let Some(domain) = &self.domain
            && !lower.ends_with(&format!("@{domain}"))
        {
            tracing::warn!(%user, "a directory mail address outside the organisation's mail domain was not mapped");
            return None;
        }
        match self.owners.get(&lower) {
            Some(owner) if owner != user => {
                tracing::warn!(%user, %owner, "a directory mail address mapped to another user was not mapped again");
                None
            }
            _ => {
                self.owners.insert(lower, user.clone());
                Some(Change::SetSetting {
                    key: format!("{ADDRESS_PREFIX}{user}"),
                    value: Some(address.as_bytes().to_vec()),
                })
            }
        }
    }
}

/// The label a user's own credential is sealed under: bound to the user, so a sealed
/// credential moved to another user's key does not open.
fn credential_label(user: &UserName) -> Vec<u8> {
    let mut label = b"redoubt/mail-user-credential/v1\0".to_vec();
    label.extend_from_slice(user.as_str().as_bytes());
    label
}

#[derive(Serialize, Deserialize)]
struct StoredCredential {
    login: String,
    password: Sealed,
}

pub(crate) async fn link(
    state: &State,
    who: &Authenticated,
    credential: Option<MailCredential>,
) -> Result<(), ApiError> {
    let key = format!("{CREDENTIAL_PREFIX}{}", who.user);
    let (value, details) = match &credential {
        Some(credential) => {
            credential
                .validate()
                .map_err(|why| ApiError::new(ErrorCode::InvalidArgument, why))?;
            let stored = StoredCredential {
                login: credential.login.clone(),
                password: seal(state, &credential_label(&who.user), &credential.password)?,
            };
            let value = postcard::to_stdvec(&stored).map_err(|_| internal("encoding failed"))?;
            (Some(value), format!("login={}", credential.login))
        }
        None => (None, "removed".to_owned()),
    };
    state
        .store
        .apply(
            &[Change::SetSetting { key, value }],
            &[audit(
                state,
                Some(who),
                "mail.link",
                format!("user {}", who.user),
                details,
            )],
        )
        .await?;
    announce(state, Hint::MailChanged);
    Ok(())
}

async fn credential(state: &State, user: &UserName) -> Result<Option<MailCredential>, ApiError> {
    let key = format!("{CREDENTIAL_PREFIX}{user}");
    let Some((_, bytes)) = state
        .store
        .settings(&key)
        .await?
        .into_iter()
        .find(|(k, _)| *k == key)
    else {
        return Ok(None);
    };
    let stored: StoredCredential =
        postcard::from_bytes(&bytes).map_err(|_| internal("a stored mail login is unreadable"))?;
    Ok(Some(MailCredential {
        password: open(state, &credential_label(user), &stored.password)?,
        login: stored.login,
    }))
}

pub(crate) async fn show(state: &State, who: &Authenticated) -> Result<MailSettingsView, ApiError> {
    require(state, who, Permission::ManageMail).await?;
    let server = stored_server(state).await?;
    let linked = state.store.settings(CREDENTIAL_PREFIX).await?;
    let users = mail_users(state, server.as_ref().map(|s| s.domain.as_str()))
        .await?
        .into_iter()
        .map(|(user, address, mapped)| MailUserView {
            status: state.mail.status_of(&user),
            own_login: linked
                .iter()
                .any(|(key, _)| key.strip_prefix(CREDENTIAL_PREFIX) == Some(user.as_str())),
            user,
            address,
            mapped,
        })
        .collect();
    let dav = stored_dav(state).await?;
    Ok(MailSettingsView {
        dav_url: dav.as_ref().map(|d| d.url.clone()),
        dav_user: dav.map(|d| d.user),
        imap: server.as_ref().map(|s| s.imap.clone()),
        smtp: server.as_ref().map(|s| s.smtp.clone()),
        security: server.as_ref().map(|s| s.security),
        master_user: server.as_ref().map(|s| s.master_user.clone()),
        domain: server.map(|s| s.domain),
        users,
    })
}

pub(crate) async fn dav_set(
    state: &State,
    who: &Authenticated,
    settings: DavServerSettings,
) -> Result<(), ApiError> {
    require(state, who, Permission::ManageMail).await?;
    settings
        .validate()
        .map_err(|why| ApiError::new(ErrorCode::InvalidArgument, why))?;
    let stored = StoredDav {
        url: settings.url.clone(),
        user: settings.user.clone(),
        password: seal(state, DAV_SEAL_LABEL, &settings.password)?,
    };
    let value = postcard::to_stdvec(&stored).map_err(|_| internal("encoding failed"))?;
    let details = format!("url={} user={}", settings.url, settings.user);
    state
        .store
        .apply(
            &[Change::SetSetting {
                key: DAV_KEY.to_owned(),
                value: Some(value),
            }],
            &[audit(
                state,
                Some(who),
                "dav.set",
                "calendar and contacts server",
                details,
            )],
        )
        .await?;
    announce(state, Hint::MailChanged);
    Ok(())
}

async fn stored_dav(state: &State) -> Result<Option<StoredDav>, ApiError> {
    let Some((_, bytes)) = state.store.settings(DAV_KEY).await?.into_iter().next() else {
        return Ok(None);
    };
    postcard::from_bytes(&bytes)
        .map(Some)
        .map_err(|_| internal("stored DAV settings are unreadable"))
}

async fn stored_server(state: &State) -> Result<Option<StoredServer>, ApiError> {
    let Some((_, bytes)) = state.store.settings(SERVER_KEY).await?.into_iter().next() else {
        return Ok(None);
    };
    postcard::from_bytes(&bytes)
        .map(Some)
        .map_err(|_| internal("stored settings are unreadable"))
}

/// The addresses admins or the directory mapped, by user.
async fn mapped_addresses(state: &State) -> Result<BTreeMap<UserName, String>, ApiError> {
    let mut mapped = BTreeMap::new();
    for (key, value) in state.store.settings(ADDRESS_PREFIX).await? {
        if let (Some(user), Ok(address)) = (
            key.strip_prefix(ADDRESS_PREFIX)
                .and_then(|u| UserName::parse(u).ok()),
            String::from_utf8(value),
        ) {
            mapped.insert(user, address);
        }
    }
    Ok(mapped)
}

/// Every person (not the connector) with their address: mapped, or `user@domain`; users
/// with neither are left out.
async fn mail_users(state: &State, domain: Option<&str>) -> Result<Vec<(UserName, String, bool)>, ApiError> {
    let mut mapped = mapped_addresses(state).await?;
    let mut users = Vec::new();
    for record in state.store.list_users().await? {
        if record.name.as_str() == CONNECTOR_USER {
            continue;
        }
        match (mapped.remove(&record.name), domain) {
            (Some(address), _) => users.push((record.name, address, true)),
            (None, Some(domain)) => {
                let address = format!("{}@{domain}", record.name);
                users.push((record.name, address, false));
            }
            (None, None) => {}
        }
    }
    Ok(users)
}

/// The connector's configuration, or `None` while no mail server is set.
pub(crate) async fn connector_config(state: &State) -> Result<Option<ConnectorConfig>, ApiError> {
    let Some(stored) = stored_server(state).await? else {
        return Ok(None);
    };
    let master_password = open(state, SEAL_LABEL, &stored.password)?;
    let dav = match stored_dav(state).await? {
        Some(dav) => Some(DavServerSettings {
            password: open(state, DAV_SEAL_LABEL, &dav.password)?,
            url: dav.url,
            user: dav.user,
        }),
        None => None,
    };
    let mut users = Vec::new();
    for (user, address, _) in mail_users(state, Some(&stored.domain)).await? {
        let (policy, _) = crate::management::effective_policy(state, &user).await?;
        let credential = credential(state, &user).await?;
        users.push(MailUser {
            credential,
            user,
            address,
            policy,
        });
    }
    Ok(Some(ConnectorConfig {
        server: MailServerSettings {
            imap: stored.imap,
            smtp: stored.smtp,
            security: stored.security,
            master_user: stored.master_user,
            master_password,
            domain: stored.domain,
        },
        dav,
        users,
    }))
}

/// An activation code for the connector's service device, creating the service user on
/// first use. The connector enrols with it over the real protocol, like any device.
pub(crate) async fn connector_activation_code(
    state: &State,
) -> Result<redoubt_proto::IssuedActivationCode, ApiError> {
    let name = UserName::parse(CONNECTOR_USER).map_err(|_| internal("connector name"))?;
    let now = state.now();
    let (record, issued) = crate::api::new_activation_code(state, &name, now);
    let change = if state.store.user(&name).await?.is_some() {
        Change::CreateActivationCode(record)
    } else {
        Change::CreateUser {
            user: UserRecord {
                name: name.clone(),
                display_name: redoubt_proto::DisplayName::parse("Mail connector").ok(),
                roles: Vec::new(),
                created_at_unix_s: now,
                disabled_at_unix_s: None,
            },
            code: record,
        }
    };
    let event = audit(
        state,
        None,
        "mail.connector.code",
        format!("user {name}"),
        "connector enrolment",
    );
    state.store.apply(&[change], &[event]).await?;
    Ok(issued)
}

/// Refuses a person's name that would impersonate the connector.
pub(crate) fn refuse_reserved(user: &UserName) -> Result<(), ApiError> {
    if user.as_str() == CONNECTOR_USER {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("{CONNECTOR_USER} is reserved for the mail connector"),
        ));
    }
    Ok(())
}
