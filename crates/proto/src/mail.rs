//! The organisation's mail server settings, as an admin sets them and the server shows them.

use serde::{Deserialize, Serialize};

use crate::UserName;

/// Longest host:port, address or account name accepted.
const TEXT_BYTES_MAX: usize = 253;

/// How the connector reaches the mail servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailSecurity {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Tls,
    /// Plain connection upgraded with STARTTLS before anything else is said.
    StartTls,
    /// No TLS: accepted only for loopback hosts.
    None,
}

impl MailSecurity {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "tls" => Some(Self::Tls),
            "starttls" => Some(Self::StartTls),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "tls",
            Self::StartTls => "starttls",
            Self::None => "none",
        }
    }
}

/// A `host:port` the connector dials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} is not host:port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{text:?}: bad port"))?;
        let valid = !host.is_empty()
            && host.len() <= TEXT_BYTES_MAX
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        if !valid {
            return Err(format!("{text:?}: bad host name"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// Whether the host is this machine (where an unencrypted connection is acceptable).
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }
}

/// Whether `host` names this machine: `localhost` or a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The organisation's IMAP and SMTP servers and the service account that may open every
/// mailbox (a Dovecot master user, Exchange impersonation), as BES had.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailServerSettings {
    pub imap: HostPort,
    pub smtp: HostPort,
    pub security: MailSecurity,
    pub master_user: String,
    pub master_password: String,
    /// A user's address when none is mapped: `user@domain`.
    pub domain: String,
}

impl std::fmt::Debug for MailServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailServerSettings")
            .field("imap", &self.imap)
            .field("smtp", &self.smtp)
            .field("security", &self.security)
            .field("master_user", &self.master_user)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl MailServerSettings {
    /// Checks what can be checked without dialling: sizes, shapes, and that an
    /// unencrypted connection goes nowhere but this machine.
    pub fn validate(&self) -> Result<(), String> {
        if self.security == MailSecurity::None && !(self.imap.is_loopback() && self.smtp.is_loopback()) {
            return Err("--security none is accepted only for loopback hosts (use tls or starttls)".into());
        }
        if self.master_user.is_empty() || self.master_user.len() > TEXT_BYTES_MAX {
            return Err("the master user must be 1 to 253 bytes".into());
        }
        if self.master_password.is_empty() || self.master_password.len() > 1024 {
            return Err("the master password must be 1 to 1024 bytes".into());
        }
        if self.master_user.chars().any(char::is_control) || self.master_password.contains(['\0', '\r', '\n'])
        {
            return Err("the master user and password must not contain control characters".into());
        }
        check_domain(&self.domain)
    }
}

fn check_domain(domain: &str) -> Result<(), String> {
    let valid = !domain.is_empty()
        && domain.len() <= TEXT_BYTES_MAX
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!("{domain:?} is not a mail domain"))
    }
}

/// Checks an address's shape (`local@domain`, no spaces or angle brackets); the mail
/// server is the judge of whether the mailbox exists.
pub fn check_address(address: &str) -> Result<(), String> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(format!("{address:?} is not an email address"));
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"' | '(' | ')' | ',' | ';' | '@'));
    if !local_ok {
        return Err(format!("{address:?} is not an email address"));
    }
    check_domain(domain)
}

/// The organisation's CalDAV/CardDAV server (Radicale, Nextcloud, Exchange…) and a service
/// account that may read and write every user's calendar and address book. A user's
/// calendar is `URL/<address>/calendar/` and address book `URL/<address>/contacts/`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DavServerSettings {
    /// `http://` only for loopback hosts; otherwise `https://`.
    pub url: String,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for DavServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DavServerSettings")
            .field("url", &self.url)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl DavServerSettings {
    /// The URL's scheme, host and port, and its path (ending in `/`).
    pub fn parse_url(&self) -> Result<(bool, HostPort, String), String> {
        let (tls, rest) = if let Some(rest) = self.url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = self.url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{:?} is not an http:// or https:// URL", self.url));
        };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        let host = HostPort::parse(&authority)?;
        let mut path = format!("/{path}");
        if !path.ends_with('/') {
            path.push('/');
        }
        if path.chars().any(|c| c.is_control() || c == ' ') {
            return Err("the URL's path has spaces or control characters".into());
        }
        Ok((tls, host, path))
    }

    pub fn validate(&self) -> Result<(), String> {
        let (tls, host, _) = self.parse_url()?;
        if !tls && !host.is_loopback() {
            return Err("http:// is accepted only for loopback hosts (use https://)".into());
        }
        if self.user.is_empty() || self.user.len() > TEXT_BYTES_MAX || self.user.contains(':') {
            return Err("the service user must be 1 to 253 bytes, without ':'".into());
        }
        if self.password.is_empty()
            || self.password.len() > 1024
            || self.password.contains(['\0', '\r', '\n'])
        {
            return Err("the password must be 1 to 1024 bytes on one line".into());
        }
        Ok(())
    }
}

/// What `AdminMailShow` reports about one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailUserView {
    pub user: UserName,
    pub address: String,
    /// Set by `admin mail map`, rather than `user@domain`.
    pub mapped: bool,
    /// The user linked their own mail login (`redoubt mail link`).
    pub own_login: bool,
    /// The connector's latest word on this mailbox, if it has tried.
    pub status: Option<MailStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailStatus {
    pub ok: bool,
    pub detail: String,
    pub at_unix_s: i64,
}

/// The mail settings without the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailSettingsView {
    pub imap: Option<HostPort>,
    pub smtp: Option<HostPort>,
    pub security: Option<MailSecurity>,
    pub master_user: Option<String>,
    pub domain: Option<String>,
    /// The CalDAV/CardDAV server and its service account, when set.
    pub dav_url: Option<String>,
    pub dav_user: Option<String>,
    pub users: Vec<MailUserView>,
}
