//! Reading users and groups from an LDAP or Active Directory server (ldap3 on rustls).
//!
//! Everything read here is hostile until parsed: each search is paged (the server's own
//! size limit never truncates us silently), bounded in entries, values and time, and each
//! entry is decoded by [`parse_entry`] instead of ldap3's `SearchEntry::construct`, which
//! panics on a malformed entry. Referrals are not followed (a referral loop cannot make us
//! spin): a search answered with one fails with a message naming it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::asn1::{PL, StructureTag};
use ldap3::{LdapConnAsync, LdapConnSettings, ResultEntry, Scope, SearchOptions};
use redoubt_proto::{DirectorySettings, DisabledRule};

use super::dn::{self, normalise_dn};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// ppolicy's `pwdAccountLockedTime` for an account locked by an administrator.
pub(crate) const ADMINISTRATIVE_LOCK: &str = "000001010000Z";
/// Most bytes of entries one search may return (DNs and values).
const RESPONSE_BYTES_MAX: usize = 512 * 1024 * 1024;
/// Most follow-up reads of one group's ranged members (Active Directory hands out 1,500
/// values at a time).
const RANGE_ROUNDS_MAX: usize = 1_000;
/// Entries asked for per page.
const PAGE_SIZE: i32 = 500;
/// Most users, and most groups, one sync reads.
pub(crate) const ENTRIES_MAX: usize = 100_000;
/// Most values of one attribute kept (a group's members above all).
pub(crate) const VALUES_MAX: usize = 100_000;
/// Longest value of an attribute we read (a name, a mail address, a DN).
const VALUE_BYTES_MAX: usize = 2_048;
/// Connecting, binding, and each page.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// The whole read.
pub(crate) const SYNC_TIMEOUT: Duration = Duration::from_secs(600);

/// One user entry as read, before Redoubt's rules are applied to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LdapUser {
    pub dn: String,
    /// [`normalise_dn`] of `dn`, computed once.
    pub dn_key: String,
    /// The entry's entryUUID (OpenLDAP and most servers) or objectGUID (Active Directory,
    /// as hex): it stays when the entry is moved or renamed.
    pub id: Option<String>,
    /// The user name attribute's single UTF-8 value, or why there is none.
    pub name: Result<String, String>,
    pub display_name: Option<String>,
    pub mail: Option<String>,
    pub disabled: bool,
}

/// One group entry as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LdapGroup {
    pub dn: String,
    pub name: Result<String, String>,
    /// Member DNs, normalised with [`normalise_dn`].
    pub members: Vec<String>,
}

/// What a sync read from the directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub users: Vec<LdapUser>,
    pub groups: Vec<LdapGroup>,
}

/// Control characters escaped, so a hostile DN cannot forge lines in a report.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .take(VALUE_BYTES_MAX)
        .collect()
}

/// An entry's DN and attributes (lower-cased names), each value as raw bytes.
#[derive(Debug, Default)]
pub(crate) struct RawEntry {
    pub dn: Vec<u8>,
    pub attributes: BTreeMap<String, Vec<Vec<u8>>>,
}

fn constructed(tag: StructureTag) -> Option<Vec<StructureTag>> {
    match tag.payload {
        PL::C(inner) => Some(inner),
        PL::P(_) => None,
    }
}

fn primitive(tag: StructureTag) -> Option<Vec<u8>> {
    match tag.payload {
        PL::P(bytes) => Some(bytes),
        PL::C(_) => None,
    }
}

/// Decodes a SearchResultEntry (RFC 4511 §4.5.2) without panicking; `None` when it is not
/// one. At most [`VALUES_MAX`] values of an attribute are kept (`truncated` says so).
pub(crate) fn parse_entry(tag: StructureTag, truncated: &mut Vec<String>) -> Option<RawEntry> {
    if tag.id != 4 {
        return None;
    }
    let mut parts = constructed(tag)?.into_iter();
    let dn = primitive(parts.next()?)?;
    let mut entry = RawEntry {
        dn,
        attributes: BTreeMap::new(),
    };
    for attribute in constructed(parts.next()?)? {
        let mut attribute = constructed(attribute)?.into_iter();
        let name = String::from_utf8(primitive(attribute.next()?)?).ok()?;
        let values = constructed(attribute.next()?)?;
        if values.len() > VALUES_MAX {
            truncated.push(name.clone());
        }
        let values = values
            .into_iter()
            .take(VALUES_MAX)
            .map(primitive)
            .collect::<Option<Vec<_>>>()?;
        entry
            .attributes
            .entry(name.to_ascii_lowercase())
            .or_default()
            .extend(values);
    }
    Some(entry)
}

impl RawEntry {
    /// Bytes held: the DN and every value.
    fn bytes(&self) -> usize {
        self.dn.len()
            + self
                .attributes
                .iter()
                .map(|(name, values)| name.len() + values.iter().map(Vec::len).sum::<usize>())
                .sum::<usize>()
    }

    fn dn_text(&self) -> Result<String, String> {
        String::from_utf8(self.dn.clone()).map_err(|_| "its DN is not UTF-8".to_owned())
    }

    fn values(&self, attribute: &str) -> &[Vec<u8>] {
        self.attributes
            .get(&attribute.to_ascii_lowercase())
            .map_or(&[], Vec::as_slice)
    }

    /// The attribute's one value as text: an error when it is missing, repeated, not UTF-8,
    /// too long, or holds a control character (NUL above all).
    pub(crate) fn single(&self, attribute: &str) -> Result<String, String> {
        match self.values(attribute) {
            [] => Err(format!("it has no {attribute}")),
            [value] => {
                let text = std::str::from_utf8(value).map_err(|_| format!("its {attribute} is not UTF-8"))?;
                if text.len() > VALUE_BYTES_MAX {
                    return Err(format!("its {attribute} is longer than {VALUE_BYTES_MAX} bytes"));
                }
                if text.chars().any(char::is_control) {
                    return Err(format!("its {attribute} holds a control character"));
                }
                Ok(text.to_owned())
            }
            many => Err(format!("it has {} values of {attribute}, not one", many.len())),
        }
    }

    /// The attribute's first usable value, when one is wanted but not required.
    fn optional(&self, attribute: &str) -> Option<String> {
        self.values(attribute).iter().find_map(|value| {
            let text = std::str::from_utf8(value).ok()?.trim();
            (!text.is_empty() && text.len() <= VALUE_BYTES_MAX && !text.chars().any(char::is_control))
                .then(|| text.to_owned())
        })
    }
}

/// The entry's stable id: its entryUUID, or its objectGUID (16 bytes) as hex.
fn entry_id(entry: &RawEntry) -> Option<String> {
    if let Ok(uuid) = entry.single("entryUUID") {
        return Some(uuid.to_ascii_lowercase());
    }
    match entry.values("objectGUID") {
        [guid] if guid.len() == 16 => Some(guid.iter().map(|b| format!("{b:02x}")).collect()),
        _ => None,
    }
}

/// Whether the entry is disabled by a rule read from its attributes.
fn disabled_by_attributes(entry: &RawEntry, rule: &DisabledRule) -> bool {
    match rule {
        DisabledRule::AdAccountDisabled => entry
            .optional("userAccountControl")
            .and_then(|v| v.parse::<i64>().ok())
            .is_some_and(|flags| flags & 2 != 0),
        // `000001010000Z` is ppolicy's administrative lock; any other time is a lockout after
        // failed binds, which expires: anyone could trigger it with a few wrong passwords,
        // so it must not revoke a user's devices.
        DisabledRule::PasswordLocked => entry
            .values("pwdAccountLockedTime")
            .iter()
            .any(|value| value.as_slice() == ADMINISTRATIVE_LOCK.as_bytes()),
        DisabledRule::None | DisabledRule::Filter(_) => false,
    }
}

/// Why a read failed: connecting, TLS, binding, searching. The bind password never
/// appears in it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct LdapFailure(pub String);

/// A failure with the directory's own words made printable (no control characters reach
/// a terminal or a log line).
fn failure(what: &str, error: impl std::fmt::Display) -> LdapFailure {
    LdapFailure(printable(&format!("{what}: {error}")))
}

fn tls_config(settings: &DirectorySettings) -> Result<rustls::ClientConfig, LdapFailure> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = &settings.ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| failure("the CA file", e))?;
            roots.add(cert).map_err(|e| failure("the CA file", e))?;
        }
    } else {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // A system root rustls cannot use is skipped, as every TLS client does.
            let _ = roots.add(cert);
        }
    }
    if roots.is_empty() {
        return Err(LdapFailure(
            "no CA certificate to verify the directory with (give --ca-file)".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failure("TLS", e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Connects, binds and reads every user and group under the base DN.
///
/// ldap3 panics on some malformed replies: the read runs in its own task, so a hostile
/// directory fails this sync instead of the task that called it.
pub(crate) async fn read_directory(settings: &DirectorySettings) -> Result<Snapshot, LdapFailure> {
    let settings = settings.clone();
    let reading =
        tokio::spawn(
            async move { tokio::time::timeout(SYNC_TIMEOUT, read_directory_unbounded(&settings)).await },
        );
    match reading.await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(LdapFailure(format!(
            "reading the directory took longer than {} s",
            SYNC_TIMEOUT.as_secs()
        ))),
        Err(_) => Err(LdapFailure(
            "the directory sent a reply the LDAP library could not handle".into(),
        )),
    }
}

async fn read_directory_unbounded(settings: &DirectorySettings) -> Result<Snapshot, LdapFailure> {
    let mut connection = LdapConnSettings::new()
        .set_conn_timeout(OPERATION_TIMEOUT)
        .set_starttls(settings.starttls);
    let uses_tls = settings.starttls || settings.url.starts_with("ldaps://");
    if uses_tls {
        connection = connection.set_config(Arc::new(tls_config(settings)?));
    }
    let (driver, mut ldap) = LdapConnAsync::with_settings(connection, &settings.url)
        .await
        .map_err(|e| failure(&format!("connecting to {}", settings.url), e))?;
    let driving = tokio::spawn(async move {
        if let Err(error) = driver.drive().await {
            tracing::debug!(%error, "LDAP connection ended");
        }
    });
    let result = async {
        ldap.with_timeout(OPERATION_TIMEOUT)
            .simple_bind(&settings.bind_dn, &settings.password)
            .await
            .and_then(ldap3::LdapResult::success)
            .map_err(|e| failure(&format!("binding as {}", settings.bind_dn), e))?;
        let disabled_dns = match &settings.disabled {
            DisabledRule::Filter(filter) => {
                let combined = format!("(&{}{filter})", settings.user_filter);
                let base = settings.base_dn.as_str();
                search(
                    &mut ldap,
                    base,
                    Scope::Subtree,
                    &combined,
                    &["1.1"],
                    "disabled users",
                )
                .await?
                .into_iter()
                .filter_map(|entry| entry.dn_text().ok())
                .map(|dn| normalise_dn(&dn))
                .collect()
            }
            _ => std::collections::BTreeSet::new(),
        };
        let mut user_attributes = vec![
            settings.username_attr.as_str(),
            settings.display_name_attr.as_str(),
            settings.mail_attr.as_str(),
            "entryUUID",
            "objectGUID",
        ];
        match settings.disabled {
            DisabledRule::AdAccountDisabled => user_attributes.push("userAccountControl"),
            DisabledRule::PasswordLocked => user_attributes.push("pwdAccountLockedTime"),
            _ => {}
        }
        let users = search(
            &mut ldap,
            &settings.base_dn,
            Scope::Subtree,
            &settings.user_filter,
            &user_attributes,
            "users",
        )
        .await?
        .into_iter()
        .map(|entry| {
            let dn = entry.dn_text();
            let name = dn.clone().and_then(|_| entry.single(&settings.username_attr));
            let dn = dn.unwrap_or_else(|_| String::from_utf8_lossy(&entry.dn).into_owned());
            let dn_key = normalise_dn(&dn);
            let disabled =
                disabled_by_attributes(&entry, &settings.disabled) || disabled_dns.contains(&dn_key);
            LdapUser {
                dn_key,
                id: entry_id(&entry),
                name,
                display_name: entry.optional(&settings.display_name_attr),
                mail: entry.optional(&settings.mail_attr),
                disabled,
                dn,
            }
        })
        .collect();
        let found = search(
            &mut ldap,
            &settings.base_dn,
            Scope::Subtree,
            &settings.group_filter,
            &["cn", "member", "uniqueMember"],
            "groups",
        )
        .await?;
        let mut groups = Vec::with_capacity(found.len());
        for entry in found {
            let dn = entry.dn_text();
            let name = dn.clone().and_then(|_| entry.single("cn"));
            let dn = dn.unwrap_or_else(|_| String::from_utf8_lossy(&entry.dn).into_owned());
            // A group whose members cannot all be read is unreadable: its members are
            // left as they are rather than cut to the part that was read.
            let (name, members) = match group_members(&mut ldap, &entry, &dn).await {
                Ok(members) => (name, members),
                Err(why) => (Err(why.0), Vec::new()),
            };
            groups.push(LdapGroup { dn, name, members });
        }
        Ok(Snapshot { users, groups })
    }
    .await;
    let _ = ldap.unbind().await;
    driving.abort();
    result
}

/// Whether `attribute` (lower-cased) holds a group's member DNs.
fn is_member_attribute(attribute: &str) -> bool {
    attribute.eq_ignore_ascii_case("member") || attribute.eq_ignore_ascii_case("uniqueMember")
}

/// A group's member DNs, normalised. Active Directory returns a large group's `member` in
/// ranges (`member;range=0-1499`), each the next read of the group asks for, until the
/// range that ends with `*`.
async fn group_members(
    ldap: &mut ldap3::Ldap,
    entry: &RawEntry,
    dn: &str,
) -> Result<Vec<String>, LdapFailure> {
    let mut members = Vec::new();
    let take = |values: &[Vec<u8>], members: &mut Vec<String>| -> Result<(), LdapFailure> {
        for value in values {
            // The empty DN stands in for "no member" where the schema requires one.
            match std::str::from_utf8(value) {
                Ok(text) if !text.is_empty() && text.len() <= VALUE_BYTES_MAX => {
                    members.push(normalise_dn(text))
                }
                _ => {}
            }
        }
        if members.len() > VALUES_MAX {
            return Err(LdapFailure(format!(
                "the group has more than {VALUES_MAX} members"
            )));
        }
        Ok(())
    };
    for (attribute, values) in &entry.attributes {
        let (base, mut next) = if is_member_attribute(attribute) {
            (attribute.clone(), None)
        } else if let Some(range) = dn::ranged_attribute(attribute)
            && is_member_attribute(range.base)
        {
            (range.base.to_owned(), range.end)
        } else {
            continue;
        };
        take(values, &mut members)?;
        let mut rounds = 0;
        while let Some(end) = next.take() {
            rounds += 1;
            let wanted = dn::next_range_attribute(&base, end)
                .filter(|_| rounds <= RANGE_ROUNDS_MAX)
                .ok_or_else(|| LdapFailure("the group's member ranges do not end".into()))?;
            let more = search(
                ldap,
                dn,
                Scope::Base,
                "(objectClass=*)",
                &[wanted.as_str()],
                "group members",
            )
            .await?;
            for (attribute, values) in more.iter().flat_map(|e| &e.attributes) {
                if let Some(range) = dn::ranged_attribute(attribute)
                    && range.base.eq_ignore_ascii_case(&base)
                    && range.start == end + 1
                {
                    take(values, &mut members)?;
                    next = range.end;
                }
            }
        }
    }
    Ok(members)
}

/// One paged search, bounded in entries, bytes and time.
async fn search(
    ldap: &mut ldap3::Ldap,
    base: &str,
    scope: Scope,
    filter: &str,
    attributes: &[&str],
    what: &str,
) -> Result<Vec<RawEntry>, LdapFailure> {
    let adapters: Vec<Box<dyn Adapter<'_, &str, Vec<&str>>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(PAGE_SIZE)),
    ];
    let mut stream = ldap
        .with_timeout(OPERATION_TIMEOUT)
        .with_search_options(
            SearchOptions::new().timelimit(i32::try_from(OPERATION_TIMEOUT.as_secs()).unwrap_or(30)),
        )
        .streaming_search_with(adapters, base, scope, filter, attributes.to_vec())
        .await
        .map_err(|e| failure(&format!("searching {what} with {filter}"), e))?;
    let mut entries = Vec::new();
    let mut truncated = Vec::new();
    let mut bytes = 0usize;
    loop {
        let next: Option<ResultEntry> = tokio::time::timeout(OPERATION_TIMEOUT, stream.next())
            .await
            .map_err(|_| LdapFailure(format!("the directory stopped answering while listing {what}")))?
            .map_err(|e| failure(&format!("searching {what}"), e))?;
        let Some(next) = next else { break };
        if next.is_ref() {
            continue;
        }
        let Some(entry) = parse_entry(next.0, &mut truncated) else {
            return Err(LdapFailure(format!(
                "the directory sent a malformed entry while listing {what}"
            )));
        };
        if entries.len() == ENTRIES_MAX {
            return Err(LdapFailure(format!(
                "the directory holds more than {ENTRIES_MAX} {what} under {}; narrow the filter or the base DN",
                printable(base)
            )));
        }
        bytes += entry.bytes();
        if bytes > RESPONSE_BYTES_MAX {
            return Err(LdapFailure(format!(
                "the directory's answer listing {what} is larger than {} MiB",
                RESPONSE_BYTES_MAX / (1024 * 1024)
            )));
        }
        entries.push(entry);
    }
    let done = stream.finish().await;
    if done.rc == 10 {
        return Err(LdapFailure(format!(
            "the directory answered the search for {what} with a referral ({}); Redoubt does not follow \
             referrals: point the URL at a server that holds {}",
            printable(&done.refs.join(" ")),
            printable(base)
        )));
    }
    if done.rc != 0 {
        return Err(LdapFailure(format!(
            "searching {what} failed: result code {} {}",
            done.rc,
            printable(&done.text)
        )));
    }
    if !truncated.is_empty() {
        tracing::warn!(attributes = ?truncated, "directory attributes with more than {VALUES_MAX} values were cut");
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use ldap3::asn1::TagClass;

    use super::*;

    fn octets(bytes: &[u8]) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id: 4,
            payload: PL::P(bytes.to_vec()),
        }
    }

    fn sequence(id: u64, inner: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::C(inner),
        }
    }

    /// A SearchResultEntry (application tag 4) with `attributes`.
    fn entry(dn: &[u8], attributes: &[(&str, Vec<&[u8]>)]) -> StructureTag {
        let attributes = attributes
            .iter()
            .map(|(name, values)| {
                let values = values.iter().map(|v| octets(v)).collect();
                sequence(16, vec![octets(name.as_bytes()), sequence(17, values)])
            })
            .collect();
        StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![octets(dn), sequence(16, attributes)]),
        }
    }

    #[test]
    fn entries_are_decoded_and_malformed_ones_refused_without_panicking() {
        let mut cut = Vec::new();
        let parsed = parse_entry(
            entry(
                b"uid=a,dc=x",
                &[("uid", vec![b"a"]), ("Mail", vec![b"a@x.test", b"b@x.test"])],
            ),
            &mut cut,
        )
        .unwrap();
        assert_eq!(parsed.single("uid").unwrap(), "a");
        assert!(parsed.single("mail").unwrap_err().contains("2 values"));
        assert_eq!(parsed.optional("mail").as_deref(), Some("a@x.test"));
        // Not an entry, a primitive where a sequence belongs, a missing part.
        assert!(parse_entry(octets(b"x"), &mut cut).is_none());
        let broken = StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![octets(b"uid=a")]),
        };
        assert!(parse_entry(broken, &mut cut).is_none());
        let primitive_attributes = StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![octets(b"uid=a"), octets(b"not a sequence")]),
        };
        assert!(parse_entry(primitive_attributes, &mut cut).is_none());
        assert!(cut.is_empty());
    }

    #[test]
    fn hostile_values_are_named_not_used() {
        let mut cut = Vec::new();
        let long = vec![b'a'; VALUE_BYTES_MAX + 1];
        let parsed = parse_entry(
            entry(
                b"uid=a,dc=x",
                &[
                    ("nul", vec![b"a\0b"]),
                    ("bin", vec![&[0xff, 0xfe]]),
                    ("long", vec![&long]),
                ],
            ),
            &mut cut,
        )
        .unwrap();
        assert!(parsed.single("nul").unwrap_err().contains("control character"));
        assert!(parsed.single("bin").unwrap_err().contains("not UTF-8"));
        assert!(parsed.single("long").unwrap_err().contains("longer than"));
        assert!(parsed.single("absent").unwrap_err().contains("no absent"));
        // More values than kept: cut, and said so.
        let many: Vec<Vec<u8>> = (0..=VALUES_MAX).map(|i| i.to_string().into_bytes()).collect();
        let many: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        let parsed = parse_entry(entry(b"cn=g", &[("member", many)]), &mut cut).unwrap();
        assert_eq!(parsed.values("member").len(), VALUES_MAX);
        assert_eq!(cut, ["member"]);
    }

    #[test]
    fn ids_and_disabled_rules_read_the_attributes() {
        let mut cut = Vec::new();
        let guid: &[u8] = &[0x11; 16];
        let ad = parse_entry(
            entry(
                b"cn=a",
                &[("objectGUID", vec![guid]), ("userAccountControl", vec![b"514"])],
            ),
            &mut cut,
        )
        .unwrap();
        assert_eq!(entry_id(&ad).unwrap(), "11".repeat(16));
        assert!(disabled_by_attributes(&ad, &DisabledRule::AdAccountDisabled));
        let enabled = parse_entry(entry(b"cn=b", &[("userAccountControl", vec![b"512"])]), &mut cut).unwrap();
        assert!(!disabled_by_attributes(
            &enabled,
            &DisabledRule::AdAccountDisabled
        ));

        let openldap = |lock: &[u8]| {
            let uuid: &[u8] = b"5F0A8C2E-1111-2222-3333-444455556666";
            parse_entry(
                entry(
                    b"uid=c",
                    &[("entryUUID", vec![uuid]), ("pwdAccountLockedTime", vec![lock])],
                ),
                &mut Vec::new(),
            )
            .unwrap()
        };
        let locked = openldap(ADMINISTRATIVE_LOCK.as_bytes());
        assert_eq!(entry_id(&locked).unwrap(), "5f0a8c2e-1111-2222-3333-444455556666");
        assert!(disabled_by_attributes(&locked, &DisabledRule::PasswordLocked));
        // A lockout after failed binds expires: it does not disable.
        let locked_out = openldap(b"20261206101500Z");
        assert!(!disabled_by_attributes(
            &locked_out,
            &DisabledRule::PasswordLocked
        ));
    }
}
