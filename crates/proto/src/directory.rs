//! Directory integration on the wire: the LDAP / Active Directory settings an admin sets,
//! the plan and report of a sync, and SCIM bearer tokens.

use serde::{Deserialize, Serialize};

use crate::{DisplayName, GroupName, IssuedActivationCode, UserName, is_loopback_host};

/// Longest DN, filter or URL accepted in the settings.
pub const DIRECTORY_TEXT_BYTES_MAX: usize = 1_024;
/// Longest CA bundle accepted in the settings.
pub const DIRECTORY_CA_BYTES_MAX: usize = 64 * 1024;
/// Shortest and longest interval between scheduled syncs (0 turns them off).
pub const DIRECTORY_INTERVAL_S_MIN: u32 = 60;
pub const DIRECTORY_INTERVAL_S_MAX: u32 = 7 * 24 * 3600;
/// Longest SCIM token name.
pub const SCIM_TOKEN_NAME_BYTES_MAX: usize = 64;

/// How the directory says an account is disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DisabledRule {
    /// Nothing is disabled in the directory; removed entries still disable their users.
    None,
    /// Active Directory: bit 2 (ACCOUNTDISABLE) of `userAccountControl`, read by the server
    /// from the attribute (no server-side matching rule is needed).
    AdAccountDisabled,
    /// OpenLDAP's password policy: the operational attribute `pwdAccountLockedTime` is set.
    PasswordLocked,
    /// Entries that also match this LDAP filter are disabled.
    Filter(String),
}

/// Ready-made attribute sets for the two common directory servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectoryPreset {
    ActiveDirectory,
    OpenLdap,
}

impl DirectoryPreset {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active-directory" | "ad" => Some(Self::ActiveDirectory),
            "openldap" => Some(Self::OpenLdap),
            _ => None,
        }
    }

    /// (user filter, group filter, user name attribute, display name attribute, mail
    /// attribute, disabled rule)
    fn defaults(
        self,
    ) -> (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        DisabledRule,
    ) {
        match self {
            Self::ActiveDirectory => (
                "(&(objectClass=user)(!(objectClass=computer)))",
                "(objectClass=group)",
                "sAMAccountName",
                "displayName",
                "mail",
                DisabledRule::AdAccountDisabled,
            ),
            Self::OpenLdap => (
                "(objectClass=inetOrgPerson)",
                "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))",
                "uid",
                "cn",
                "mail",
                DisabledRule::PasswordLocked,
            ),
        }
    }
}

/// Where the organisation's directory is and how to read it (`AdminDirectorySet`). The
/// server keeps the bind password sealed and never returns it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectorySettings {
    /// `ldaps://host[:port]`, or `ldap://host[:port]` with `starttls` (or, without it, only
    /// for a directory on the server's own machine).
    pub url: String,
    pub bind_dn: String,
    pub password: String,
    pub base_dn: String,
    pub user_filter: String,
    pub group_filter: String,
    pub username_attr: String,
    pub display_name_attr: String,
    pub mail_attr: String,
    pub disabled: DisabledRule,
    pub starttls: bool,
    /// PEM certificates to trust instead of the system's roots.
    pub ca_pem: Option<String>,
    /// Seconds between scheduled syncs; 0: only when an admin asks.
    pub interval_s: u32,
    /// Mail each new user their activation code (through the organisation's mail settings).
    pub email_codes: bool,
    /// A sync that would disable more than this share of the directory's users stops.
    pub disable_max_percent: u8,
}

impl std::fmt::Debug for DirectorySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorySettings")
            .field("url", &self.url)
            .field("bind_dn", &self.bind_dn)
            .field("base_dn", &self.base_dn)
            .finish_non_exhaustive()
    }
}

impl DirectorySettings {
    /// The preset's filters, attributes and disabled rule for a directory at `url`: manual
    /// syncs only, no codes by mail, the default disable guard. Callers change what else
    /// they need.
    pub fn from_preset(
        preset: DirectoryPreset,
        url: String,
        bind_dn: String,
        password: String,
        base_dn: String,
    ) -> Self {
        let (user_filter, group_filter, username, display, mail, disabled) = preset.defaults();
        Self {
            url,
            bind_dn,
            password,
            base_dn,
            user_filter: user_filter.into(),
            group_filter: group_filter.into(),
            username_attr: username.into(),
            display_name_attr: display.into(),
            mail_attr: mail.into(),
            disabled,
            starttls: false,
            ca_pem: None,
            interval_s: 0,
            email_codes: false,
            disable_max_percent: DIRECTORY_DISABLE_MAX_PERCENT,
        }
    }
}

/// The default share of directory users one sync may disable.
pub const DIRECTORY_DISABLE_MAX_PERCENT: u8 = 10;

fn attribute_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Whether parentheses balance and the text is one parenthesised filter. The server's LDAP
/// library parses the filter fully; this catches typing mistakes early.
fn filter_shape_ok(filter: &str) -> bool {
    let mut depth = 0usize;
    for (index, c) in filter.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = match depth.checked_sub(1) {
                    Some(d) => d,
                    None => return false,
                };
                if depth == 0 && index + 1 != filter.len() {
                    return false;
                }
            }
            '\0' => return false,
            _ => {}
        }
    }
    depth == 0 && filter.starts_with('(')
}

/// The host part of an `ldap://` or `ldaps://` URL, and whether it is TLS from the start.
pub fn directory_url_host(url: &str) -> Option<(&str, bool)> {
    let (rest, tls) = if let Some(rest) = url.strip_prefix("ldaps://") {
        (rest, true)
    } else {
        (url.strip_prefix("ldap://")?, false)
    };
    let authority = rest.split('/').next().unwrap_or_default();
    // No user info (`host@elsewhere` would dial elsewhere), query, fragment or blanks.
    if authority.contains(['@', '?', '#']) || authority.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(host, _)| host)
    };
    (!host.is_empty()).then_some((host, tls))
}

impl DirectorySettings {
    /// Checks what can be checked without dialling: shapes, sizes, and that the bind
    /// password never crosses a network in the clear.
    pub fn validate(&self) -> Result<(), String> {
        let Some((host, tls)) = directory_url_host(&self.url) else {
            return Err("the URL must be ldaps://host[:port] or ldap://host[:port]".into());
        };
        if tls && self.starttls {
            return Err("StartTLS is for ldap:// URLs; ldaps:// is TLS already".into());
        }
        if !tls && !self.starttls && !is_loopback_host(host) {
            return Err(format!(
                "ldap://{host} without --starttls would send the bind password in the clear; \
                 use ldaps://, --starttls, or a directory on this machine"
            ));
        }
        for (what, text) in [
            ("URL", &self.url),
            ("bind DN", &self.bind_dn),
            ("base DN", &self.base_dn),
            ("user filter", &self.user_filter),
            ("group filter", &self.group_filter),
        ] {
            if text.is_empty() || text.len() > DIRECTORY_TEXT_BYTES_MAX || text.chars().any(char::is_control)
            {
                return Err(format!(
                    "the {what} must be 1 to {DIRECTORY_TEXT_BYTES_MAX} bytes without control characters"
                ));
            }
        }
        for (what, filter) in [
            ("user filter", &self.user_filter),
            ("group filter", &self.group_filter),
        ] {
            if !filter_shape_ok(filter) {
                return Err(format!(
                    "the {what} is not one parenthesised LDAP filter: {filter}"
                ));
            }
        }
        if let DisabledRule::Filter(filter) = &self.disabled
            && (filter.len() > DIRECTORY_TEXT_BYTES_MAX || !filter_shape_ok(filter))
        {
            return Err(format!(
                "the disabled filter is not one parenthesised LDAP filter: {filter}"
            ));
        }
        for (what, name) in [
            ("user name attribute", &self.username_attr),
            ("display name attribute", &self.display_name_attr),
            ("mail attribute", &self.mail_attr),
        ] {
            if !attribute_name_ok(name) {
                return Err(format!("the {what} is not an LDAP attribute name: {name:?}"));
            }
        }
        if self.password.is_empty() || self.password.len() > 1_024 || self.password.contains('\0') {
            return Err("the bind password must be 1 to 1024 bytes without NUL".into());
        }
        if let Some(pem) = &self.ca_pem
            && (pem.len() > DIRECTORY_CA_BYTES_MAX || !pem.contains("-----BEGIN CERTIFICATE-----"))
        {
            return Err(format!(
                "the CA file must hold PEM certificates, at most {DIRECTORY_CA_BYTES_MAX} bytes"
            ));
        }
        if self.interval_s != 0
            && !(DIRECTORY_INTERVAL_S_MIN..=DIRECTORY_INTERVAL_S_MAX).contains(&self.interval_s)
        {
            return Err(format!(
                "the interval must be 0 (manual only) or {DIRECTORY_INTERVAL_S_MIN} s to 7 days"
            ));
        }
        if self.disable_max_percent > 100 {
            return Err("the disable limit is a percentage, 0 to 100".into());
        }
        Ok(())
    }
}

/// The settings as `AdminDirectoryShow` returns them: everything but the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectorySettingsView {
    pub url: String,
    pub bind_dn: String,
    pub base_dn: String,
    pub user_filter: String,
    pub group_filter: String,
    pub username_attr: String,
    pub display_name_attr: String,
    pub mail_attr: String,
    pub disabled: DisabledRule,
    pub starttls: bool,
    pub custom_ca: bool,
    pub interval_s: u32,
    pub email_codes: bool,
    pub disable_max_percent: u8,
}

/// A user a sync creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedUser {
    pub user: UserName,
    pub display_name: Option<DisplayName>,
    pub mail: Option<String>,
    /// The entry's DN.
    pub source: String,
}

/// A user a sync changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedUpdate {
    pub user: UserName,
    pub display_name: Option<DisplayName>,
    pub mail: Option<String>,
}

/// A user a sync disables, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedDisable {
    pub user: UserName,
    pub reason: String,
    /// Their devices that are still active (all are revoked).
    pub devices: u32,
}

/// A directory group membership a sync adds or removes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlannedMembership {
    pub group: GroupName,
    pub user: UserName,
    pub add: bool,
}

/// An entry a sync leaves alone, and why (a name Redoubt cannot use, a collision with a
/// user made by hand, a value too long...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedEntry {
    /// The entry's DN (or what could be read of it), with control characters escaped.
    pub entry: String,
    pub reason: String,
}

/// What a sync does (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPlan {
    pub create: Vec<PlannedUser>,
    pub update: Vec<PlannedUpdate>,
    pub disable: Vec<PlannedDisable>,
    /// Users the directory enabled again: enabled, each with a new activation code.
    pub enable: Vec<UserName>,
    pub create_groups: Vec<GroupName>,
    /// Users made by hand that the sync links to the directory entry of the same name
    /// (`adopt`); from then on the directory owns them.
    pub adopt_users: Vec<UserName>,
    /// Groups made by hand that the sync links likewise.
    pub adopt_groups: Vec<GroupName>,
    pub memberships: Vec<PlannedMembership>,
    pub skipped: Vec<SkippedEntry>,
    /// Entries the search returned.
    pub users_seen: u32,
    pub groups_seen: u32,
}

impl SyncPlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.update.is_empty()
            && self.disable.is_empty()
            && self.enable.is_empty()
            && self.create_groups.is_empty()
            && self.adopt_users.is_empty()
            && self.adopt_groups.is_empty()
            && self.memberships.is_empty()
    }
}

/// What `AdminDirectorySync` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    pub plan: SyncPlan,
    /// False for a dry run, and when the disable guard stopped the sync.
    pub applied: bool,
    /// Why nothing was applied (the disable guard), when so.
    pub refused: Option<String>,
    /// Codes of users created or enabled (not of those mailed their code).
    pub codes: Vec<IssuedActivationCode>,
    /// Users whose code went out by mail.
    pub mailed: Vec<UserName>,
    /// Users whose code could not be mailed, and why.
    pub mail_failures: Vec<SkippedEntry>,
    pub duration_ms: u64,
}

/// The last sync, as `AdminDirectoryShow` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub at_unix_s: i64,
    pub duration_ms: u64,
    /// Why it failed or was refused; `None` when it was applied.
    pub error: Option<String>,
    pub users_seen: u32,
    pub groups_seen: u32,
    pub created: u32,
    pub updated: u32,
    pub disabled: u32,
    pub enabled: u32,
    pub memberships: u32,
    pub skipped: u32,
    /// Codes a scheduled sync issued that reached nobody (not mailed): those users need a
    /// new code (`admin device add`).
    pub codes_undelivered: u32,
    /// `manual` or `scheduled`.
    pub trigger: String,
}

/// `AdminDirectoryShow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryStatus {
    pub settings: Option<DirectorySettingsView>,
    pub last_sync: Option<SyncStatus>,
    /// Users linked to the LDAP directory, and to SCIM.
    pub ldap_users: u32,
    pub scim_users: u32,
    pub disabled_users: u32,
    /// Whether SCIM-provisioned users are mailed their activation code.
    pub scim_email_codes: bool,
}

/// A SCIM token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScimTokenInfo {
    pub name: String,
    pub created_at_unix_s: i64,
    pub created_by: UserName,
}

/// A new SCIM token: shown once, to the admin who made it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScimTokenCreated {
    pub name: String,
    pub token: String,
}

impl std::fmt::Debug for ScimTokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimTokenCreated")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Checks a SCIM token's name: 1 to 64 of `[A-Za-z0-9._-]`.
pub fn check_scim_token_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > SCIM_TOKEN_NAME_BYTES_MAX
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "a SCIM token name is 1 to {SCIM_TOKEN_NAME_BYTES_MAX} letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(url: &str, starttls: bool) -> DirectorySettings {
        let mut settings = DirectorySettings::from_preset(
            DirectoryPreset::OpenLdap,
            url.into(),
            "cn=redoubt,dc=corp,dc=test".into(),
            "secret".into(),
            "dc=corp,dc=test".into(),
        );
        settings.starttls = starttls;
        settings.interval_s = 900;
        settings
    }

    #[test]
    fn cleartext_binds_only_on_this_machine() {
        assert!(settings("ldaps://dc1.corp.test:636", false).validate().is_ok());
        assert!(settings("ldap://dc1.corp.test", true).validate().is_ok());
        assert!(settings("ldap://127.0.0.1:3890", false).validate().is_ok());
        assert!(settings("ldap://[::1]:3890", false).validate().is_ok());
        assert!(settings("ldap://dc1.corp.test", false).validate().is_err());
        assert!(settings("ldaps://dc1.corp.test", true).validate().is_err());
        assert!(settings("http://dc1.corp.test", false).validate().is_err());
        assert!(
            settings("ldap://127.0.0.1:389@dc1.corp.test", false)
                .validate()
                .is_err()
        );
        assert!(
            settings("ldap://127.0.0.1?@dc1.corp.test", false)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn filters_must_be_one_balanced_expression() {
        for bad in ["uid=x", "(uid=x", "(uid=x))", "(a)(b)", "(uid=\0)"] {
            let mut s = settings("ldaps://dc1", false);
            s.user_filter = bad.into();
            assert!(s.validate().is_err(), "{bad:?}");
        }
        let mut s = settings("ldaps://dc1", false);
        s.user_filter = "(&(objectClass=person)(|(ou=a)(ou=b)))".into();
        assert!(s.validate().is_ok());
    }
}
