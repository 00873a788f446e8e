//! Directory integration: users and groups from LDAP / Active Directory (`ldap`, `plan`),
//! SCIM 2.0 provisioning (`scim`, `scim_backend`), activation codes by mail (`code_mail`).
//!
//! What the directory owns is recorded beside Redoubt's own rows as organisation settings:
//! `directory/user/NAME` and `directory/group/NAME` link a user or group to the LDAP entry
//! or SCIM resource it came from (users and groups without a link were made by hand and are
//! never touched), `directory/settings` holds the LDAP settings (the bind password sealed
//! like the mail passwords), `directory/status` the last sync, `scim/token/NAME` the SHA-256
//! of each SCIM bearer token. Every change a sync or SCIM makes is one `Store::apply` with
//! its audit entries: a user disabled in the same transaction as their devices' revocation
//! and their codes voided. Sessions are closed and groups asked to remove the devices
//! after the commit, as for an admin's revocation.

pub(crate) mod code_mail;
pub(crate) mod dn;
pub(crate) mod ldap;
pub(crate) mod plan;
pub(crate) mod scim_backend;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use redoubt_proto::{
    DeviceId, DirectorySettings, DirectorySettingsView, DirectoryStatus, DisplayName, ErrorCode, GroupName,
    IssuedActivationCode, ScimTokenCreated, ScimTokenInfo, SkippedEntry, SyncPlan, SyncReport, SyncStatus,
    UserName, check_scim_token_name,
};
use redoubt_store::{AuditEvent, Change, StoreError, UserRecord};
use serde::{Deserialize, Serialize};

use crate::State;
use crate::api::{Authenticated, new_activation_code};
use crate::cluster::{Hint, announce};
use crate::error::ApiError;
use crate::mail::Sealed;
use crate::management::{Permission, audit, require};
use plan::{CurrentGroup, CurrentUser};

const SETTINGS_KEY: &str = "directory/settings";
const STATUS_KEY: &str = "directory/status";
pub(crate) const USER_LINK_PREFIX: &str = "directory/user/";
pub(crate) const GROUP_LINK_PREFIX: &str = "directory/group/";
const SCIM_TOKEN_PREFIX: &str = "scim/token/";
const SCIM_SETTINGS_KEY: &str = "scim/settings";
const BIND_SEAL_LABEL: &[u8] = b"redoubt/directory-bind-password/v1";
/// The lease that lets one node of a cluster run the scheduled syncs.
const SYNC_LEASE: &str = "directory-sync";
/// How long a node holds the sync lease: longer than a read may take
/// ([`ldap::SYNC_TIMEOUT`]) plus the apply.
const SYNC_LEASE_TTL_MS: i64 = 15 * 60 * 1_000;
/// How often a node looks whether a scheduled sync is due.
const SCHEDULE_TICK: std::time::Duration = std::time::Duration::from_secs(20);

/// Where a directory user or group came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LinkSource {
    Ldap,
    Scim,
}

/// A user's link to the directory entry or SCIM resource that made them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserLink {
    pub source: LinkSource,
    /// LDAP: the entry's DN when last read.
    pub dn: Option<String>,
    /// LDAP: the entry's entryUUID or objectGUID, which stays when the entry moves.
    #[serde(default)]
    pub entry_id: Option<String>,
    /// The name as the directory or identity provider spells it (SCIM `userName`).
    pub external_name: String,
    pub mail: Option<String>,
    /// SCIM attributes kept as the provider sent them.
    #[serde(default)]
    pub scim: Option<serde_json::Value>,
    #[serde(default)]
    pub updated_at_unix_s: i64,
    /// Moves with every change (SCIM's version).
    #[serde(default)]
    pub version: u64,
}

impl UserLink {
    pub(crate) fn ldap(entry: &plan::EntryRef, external_name: String, now: i64) -> Self {
        Self {
            source: LinkSource::Ldap,
            dn: Some(entry.dn.clone()),
            entry_id: entry.id.clone(),
            external_name,
            mail: entry.mail.clone(),
            scim: None,
            updated_at_unix_s: now,
            version: 1,
        }
    }
}

/// A directory group's link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupLink {
    pub source: LinkSource,
    pub dn: Option<String>,
    #[serde(default)]
    pub scim: Option<serde_json::Value>,
    #[serde(default)]
    pub updated_at_unix_s: i64,
    #[serde(default)]
    pub version: u64,
}

impl GroupLink {
    pub(crate) fn ldap(dn: String, now: i64) -> Self {
        Self {
            source: LinkSource::Ldap,
            dn: Some(dn),
            scim: None,
            updated_at_unix_s: now,
            version: 1,
        }
    }
}

pub(crate) fn link_change<T: Serialize>(
    prefix: &str,
    name: &str,
    link: Option<&T>,
) -> Result<Change, ApiError> {
    let value = link
        .map(serde_json::to_vec)
        .transpose()
        .map_err(|_| internal("encoding a directory link failed"))?;
    Ok(Change::SetSetting {
        key: format!("{prefix}{name}"),
        value,
    })
}

/// The link of one user or group (`prefix` says which), if any.
pub(crate) async fn link<T: for<'de> Deserialize<'de>>(
    state: &State,
    prefix: &str,
    name: &str,
) -> Result<Option<T>, ApiError> {
    let key = format!("{prefix}{name}");
    // A prefix read: the exact key, and any longer name beginning with it, which are skipped.
    Ok(state
        .store
        .settings(&key)
        .await?
        .into_iter()
        .find(|(found, _)| *found == key)
        .and_then(|(_, value)| serde_json::from_slice(&value).ok()))
}

/// Every link under `prefix`, by name; unreadable ones are skipped with a warning.
pub(crate) async fn links<N: Ord, T: for<'de> Deserialize<'de>>(
    state: &State,
    prefix: &str,
    parse: impl Fn(&str) -> Option<N>,
) -> Result<BTreeMap<N, T>, ApiError> {
    let mut out = BTreeMap::new();
    for (key, value) in state.store.settings(prefix).await? {
        let name = key.strip_prefix(prefix).and_then(&parse);
        match (name, serde_json::from_slice(&value)) {
            (Some(name), Ok(link)) => {
                out.insert(name, link);
            }
            _ => tracing::warn!(key, "an unreadable directory link was skipped"),
        }
    }
    Ok(out)
}

fn internal(what: &str) -> ApiError {
    ApiError::new(ErrorCode::Internal, format!("directory: {what}"))
}

/// A Unix time as RFC 3339 UTC (`2026-12-06T21:39:05Z`): SCIM's `meta` and the code mail.
pub(crate) fn rfc3339(unix_s: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(unix_s).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The settings as stored: the bind password sealed.
#[derive(Serialize, Deserialize)]
struct StoredSettings {
    settings: DirectorySettings,
    password: Sealed,
}

/// Per-node directory state: one sync at a time on a node.
#[derive(Debug, Default)]
pub(crate) struct DirectoryState {
    sync: tokio::sync::Mutex<()>,
}

async fn stored_settings(state: &State) -> Result<Option<DirectorySettings>, ApiError> {
    let Some((_, bytes)) = state.store.settings(SETTINGS_KEY).await?.into_iter().next() else {
        return Ok(None);
    };
    let stored: StoredSettings =
        serde_json::from_slice(&bytes).map_err(|_| internal("the stored settings are unreadable"))?;
    let mut settings = stored.settings;
    settings.password = crate::mail::open(state, BIND_SEAL_LABEL, &stored.password)?;
    Ok(Some(settings))
}

/// `AdminDirectorySet`.
pub(crate) async fn set(
    state: &State,
    who: &Authenticated,
    settings: DirectorySettings,
) -> Result<(), ApiError> {
    require(state, who, Permission::ManageDirectory).await?;
    settings
        .validate()
        .map_err(|why| ApiError::new(ErrorCode::InvalidArgument, why))?;
    let password = crate::mail::seal(state, BIND_SEAL_LABEL, &settings.password)?;
    let details = format!(
        "url={} bind_dn={} base_dn={} interval_s={} email_codes={}",
        settings.url, settings.bind_dn, settings.base_dn, settings.interval_s, settings.email_codes
    );
    let mut stored = StoredSettings { settings, password };
    stored.settings.password = String::new();
    let value = serde_json::to_vec(&stored).map_err(|_| internal("encoding failed"))?;
    state
        .store
        .apply(
            &[Change::SetSetting {
                key: SETTINGS_KEY.to_owned(),
                value: Some(value),
            }],
            &[audit(state, Some(who), "directory.set", "directory", details)],
        )
        .await?;
    tracing::info!(admin = %who.user, url = %stored.settings.url, "directory settings set");
    Ok(())
}

/// `AdminDirectoryShow`.
pub(crate) async fn show(state: &State, who: &Authenticated) -> Result<DirectoryStatus, ApiError> {
    require(state, who, Permission::ManageDirectory).await?;
    let settings = stored_settings(state).await?.map(|s| DirectorySettingsView {
        url: s.url,
        bind_dn: s.bind_dn,
        base_dn: s.base_dn,
        user_filter: s.user_filter,
        group_filter: s.group_filter,
        username_attr: s.username_attr,
        display_name_attr: s.display_name_attr,
        mail_attr: s.mail_attr,
        disabled: s.disabled,
        starttls: s.starttls,
        custom_ca: s.ca_pem.is_some(),
        interval_s: s.interval_s,
        email_codes: s.email_codes,
        disable_max_percent: s.disable_max_percent,
    });
    let last_sync = last_status(state).await?;
    let links: BTreeMap<UserName, UserLink> =
        links(state, USER_LINK_PREFIX, |n| UserName::parse(n).ok()).await?;
    let count =
        |source| u32::try_from(links.values().filter(|l| l.source == source).count()).unwrap_or(u32::MAX);
    let disabled = state
        .store
        .list_users()
        .await?
        .iter()
        .filter(|u| u.disabled_at_unix_s.is_some())
        .count();
    Ok(DirectoryStatus {
        settings,
        last_sync,
        ldap_users: count(LinkSource::Ldap),
        scim_users: count(LinkSource::Scim),
        disabled_users: u32::try_from(disabled).unwrap_or(u32::MAX),
        scim_email_codes: scim_settings(state).await?.email_codes,
    })
}

async fn last_status(state: &State) -> Result<Option<SyncStatus>, ApiError> {
    Ok(state
        .store
        .settings(STATUS_KEY)
        .await?
        .into_iter()
        .next()
        .and_then(|(_, bytes)| serde_json::from_slice(&bytes).ok()))
}

/// How a sync was asked for.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SyncRequest {
    /// Only say what would change.
    pub dry_run: bool,
    /// Past the disable guard.
    pub force: bool,
    /// Link users and groups made by hand to the entries of the same name.
    pub adopt: bool,
}

/// `AdminDirectorySync`.
pub(crate) async fn sync_request(
    state: &State,
    who: &Authenticated,
    request: SyncRequest,
) -> Result<SyncReport, ApiError> {
    require(state, who, Permission::ManageDirectory).await?;
    sync(state, Some(who), request, "manual").await
}

/// Reads the directory, plans, and (unless `dry_run` or refused) applies the plan. The
/// outcome is recorded as the last sync, a failure included.
pub(crate) async fn sync(
    state: &State,
    who: Option<&Authenticated>,
    request: SyncRequest,
    trigger: &str,
) -> Result<SyncReport, ApiError> {
    let dry_run = request.dry_run;
    let Some(settings) = stored_settings(state).await? else {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "no directory is set; run `redoubt admin directory set` first",
        ));
    };
    let _one_at_a_time = state.directory.sync.lock().await;
    // One sync at a time in the cluster: a lease longer than a sync can take, checked
    // again right before the apply, and given back at the end. A single node has the
    // mutex above.
    let lease = if dry_run || !state.cluster.is_shared() {
        None
    } else {
        let holder = &state.cluster.node_id;
        match state
            .store
            .acquire_lease(SYNC_LEASE, holder, crate::unix_now_ms(), SYNC_LEASE_TTL_MS)
            .await?
        {
            Some(lease) => Some(lease.token),
            None => {
                return Err(ApiError::new(
                    ErrorCode::AlreadyExists,
                    "a directory sync is under way on another server node; try again when it is done",
                ));
            }
        }
    };
    let started = Instant::now();
    let outcome = sync_with(state, who, &settings, request, lease).await;
    if lease.is_some() {
        let release = state
            .store
            .acquire_lease(SYNC_LEASE, &state.cluster.node_id, crate::unix_now_ms(), 0)
            .await;
        if let Err(error) = release {
            tracing::warn!(%error, "giving back the directory sync lease failed; it lapses by itself");
        }
    }
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if dry_run {
        return outcome.map(|mut report| {
            report.duration_ms = duration_ms;
            report
        });
    }
    let (status, result) = match outcome {
        Ok(mut report) => {
            report.duration_ms = duration_ms;
            let mut status = status_of(state, &report.plan, report.refused.clone(), duration_ms, trigger);
            if trigger == "scheduled" {
                // Nobody sees a scheduled sync's report: codes not mailed are lost.
                status.codes_undelivered = u32::try_from(report.codes.len()).unwrap_or(u32::MAX);
            }
            (status, Ok(report))
        }
        Err(error) => (
            status_of(
                state,
                &SyncPlan::default(),
                Some(error.0.message.clone()),
                duration_ms,
                trigger,
            ),
            Err(error),
        ),
    };
    let value = serde_json::to_vec(&status).map_err(|_| internal("encoding failed"))?;
    let saved = state
        .store
        .apply(
            &[Change::SetSetting {
                key: STATUS_KEY.to_owned(),
                value: Some(value),
            }],
            &[],
        )
        .await;
    if let Err(error) = saved {
        tracing::warn!(%error, "recording the directory sync's status failed");
    }
    match &result {
        Ok(report) => tracing::info!(
            trigger,
            created = report.plan.create.len(),
            disabled = report.plan.disable.len(),
            refused = report.refused.is_some(),
            duration_ms,
            "directory sync"
        ),
        Err(error) => tracing::warn!(trigger, error = %error.0.message, "directory sync failed"),
    }
    result
}

fn status_of(
    state: &State,
    plan: &SyncPlan,
    error: Option<String>,
    duration_ms: u64,
    trigger: &str,
) -> SyncStatus {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    SyncStatus {
        at_unix_s: state.now(),
        duration_ms,
        error,
        users_seen: plan.users_seen,
        groups_seen: plan.groups_seen,
        created: count(plan.create.len()),
        updated: count(plan.update.len()),
        disabled: count(plan.disable.len()),
        enabled: count(plan.enable.len()),
        memberships: count(plan.memberships.len()),
        skipped: count(plan.skipped.len()),
        codes_undelivered: 0,
        trigger: trigger.to_owned(),
    }
}

/// The users and groups as the planner sees them.
pub(crate) async fn current(
    state: &State,
) -> Result<(BTreeMap<UserName, CurrentUser>, BTreeMap<GroupName, CurrentGroup>), ApiError> {
    let mut user_links: BTreeMap<UserName, UserLink> =
        links(state, USER_LINK_PREFIX, |n| UserName::parse(n).ok()).await?;
    let mut devices: BTreeMap<UserName, Vec<DeviceId>> = BTreeMap::new();
    for device in state.store.list_devices(None).await? {
        if device.revoked_at_unix_s.is_none() {
            devices.entry(device.user).or_default().push(device.id);
        }
    }
    let users = state
        .store
        .list_users()
        .await?
        .into_iter()
        .filter(|u| u.name.as_str() != redoubt_mls::mail::CONNECTOR_USER)
        .map(|record| {
            let name = record.name.clone();
            let current = CurrentUser {
                link: user_links.remove(&name),
                active_devices: devices.remove(&name).unwrap_or_default(),
                record,
            };
            (name, current)
        })
        .collect();
    let mut group_links: BTreeMap<GroupName, GroupLink> =
        links(state, GROUP_LINK_PREFIX, |n| GroupName::parse(n).ok()).await?;
    let groups = state
        .store
        .directory_groups()
        .await?
        .into_iter()
        .map(|g| {
            let current = CurrentGroup {
                members: g.members.into_iter().collect(),
                link: group_links.remove(&g.name),
            };
            (g.name, current)
        })
        .collect();
    Ok((users, groups))
}

async fn sync_with(
    state: &State,
    who: Option<&Authenticated>,
    settings: &DirectorySettings,
    request: SyncRequest,
    lease: Option<u64>,
) -> Result<SyncReport, ApiError> {
    let started = Instant::now();
    let snapshot = ldap::read_directory(settings).await.map_err(|e| {
        ApiError::new(
            ErrorCode::UpstreamUnavailable,
            format!("the directory could not be read: {e}"),
        )
    })?;
    let read = started.elapsed();
    let (users, groups) = current(state).await?;
    let loaded = started.elapsed();
    let rules = plan::Rules {
        disable_max_percent: settings.disable_max_percent,
        force: request.force,
        adopt: request.adopt,
    };
    let plan = plan::plan(&snapshot, &users, &groups, &rules);
    tracing::debug!(
        read_ms = read.as_millis(),
        store_ms = (loaded - read).as_millis(),
        plan_ms = (started.elapsed() - loaded).as_millis(),
        "directory sync: read, current state, plan"
    );
    let mut report = SyncReport {
        plan: plan.public.clone(),
        applied: false,
        refused: plan.refused.clone(),
        codes: Vec::new(),
        mailed: Vec::new(),
        mail_failures: Vec::new(),
        duration_ms: 0,
    };
    if request.dry_run || plan.refused.is_some() || plan.public.is_empty() {
        return Ok(report);
    }
    if let Some(token) = lease
        && !state.store.lease_is_current(SYNC_LEASE, token).await?
    {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            "another server node took over the directory sync meanwhile; nothing was applied",
        ));
    }
    let codes = apply(state, who, &plan, &users).await?;
    report.applied = true;
    // Codes go to the address of the entry each user was matched with in this sync.
    let mail: BTreeMap<&UserName, Option<&String>> = plan
        .entries
        .iter()
        .map(|(user, entry)| (user, entry.mail.as_ref()))
        .collect();
    if settings.email_codes {
        let display: BTreeMap<&UserName, Option<&DisplayName>> = plan
            .public
            .create
            .iter()
            .map(|u| (&u.user, u.display_name.as_ref()))
            .collect();
        mail_codes(state, codes, &mail, &display, &mut report).await;
    } else {
        report.codes = codes;
    }
    Ok(report)
}

/// Makes the plan's changes in one transaction, then closes the revoked devices' sessions
/// and asks their groups to remove them. Returns the codes issued.
pub(crate) async fn apply(
    state: &State,
    who: Option<&Authenticated>,
    plan: &plan::Plan,
    users: &BTreeMap<UserName, CurrentUser>,
) -> Result<Vec<IssuedActivationCode>, ApiError> {
    let now = state.now();
    let public = &plan.public;
    let mut changes = Vec::new();
    let mut events = Vec::new();
    let mut codes = Vec::new();
    let event = |action: &'static str, subject: String, details: String| AuditEvent {
        at_unix_s: now,
        actor_user: who.map(|w| w.user.clone()),
        actor_device: who.map(|w| w.device_id),
        action,
        subject,
        details,
    };
    // Mailboxes the directory names: only in the organisation's mail domain, and never
    // one already mapped to someone else (a directory entry its owner may edit must not
    // reach another person's mail).
    let mut mailboxes = crate::mail::Mailboxes::load(state).await?;
    let entry_of = |user: &UserName| {
        plan.entries.get(user).cloned().unwrap_or(plan::EntryRef {
            dn: String::new(),
            id: None,
            mail: None,
        })
    };
    for user in &public.create {
        let (code, issued) = new_activation_code(state, &user.user, now);
        changes.push(Change::CreateUser {
            user: UserRecord {
                name: user.user.clone(),
                display_name: user.display_name.clone(),
                roles: vec![],
                created_at_unix_s: now,
                disabled_at_unix_s: None,
            },
            code,
        });
        let entry = entry_of(&user.user);
        let link = UserLink::ldap(&entry, user.user.to_string(), now);
        changes.push(link_change(USER_LINK_PREFIX, user.user.as_str(), Some(&link))?);
        changes.extend(mailboxes.map(&user.user, entry.mail.as_deref()));
        events.push(event(
            "directory.user.create",
            format!("user {}", user.user),
            format!("from {}", entry.dn),
        ));
        codes.push(issued);
    }
    for user in &public.adopt_users {
        let entry = entry_of(user);
        let link = UserLink::ldap(&entry, user.to_string(), now);
        changes.push(link_change(USER_LINK_PREFIX, user.as_str(), Some(&link))?);
        changes.extend(mailboxes.map(user, entry.mail.as_deref()));
        events.push(event(
            "directory.user.adopt",
            format!("user {user}"),
            format!("made by hand; linked to {}", entry.dn),
        ));
    }
    for update in &public.update {
        changes.push(Change::SetDisplayName {
            user: update.user.clone(),
            display_name: update.display_name.clone(),
        });
        let entry = entry_of(&update.user);
        let previous = users.get(&update.user).and_then(|u| u.link.clone());
        if previous.as_ref().is_some_and(|l| l.mail != update.mail) {
            changes.extend(mailboxes.map(&update.user, update.mail.as_deref()));
        }
        let mut link = previous.unwrap_or_else(|| UserLink::ldap(&entry, update.user.to_string(), now));
        link.dn = Some(entry.dn.clone());
        link.entry_id = entry.id.clone();
        link.mail = update.mail.clone();
        link.updated_at_unix_s = now;
        link.version += 1;
        changes.push(link_change(USER_LINK_PREFIX, update.user.as_str(), Some(&link))?);
        events.push(event(
            "directory.user.update",
            format!("user {}", update.user),
            String::new(),
        ));
    }
    for disable in &public.disable {
        // Revokes, in the same transaction, every device of the user not yet revoked
        // (also one enrolled since the plan was made); a disabled user keeps their time.
        changes.push(Change::SetUserDisabled {
            user: disable.user.clone(),
            at_unix_s: Some(now),
        });
        events.push(event(
            "directory.user.disable",
            format!("user {}", disable.user),
            format!("{}; {} device(s) revoked", disable.reason, disable.devices),
        ));
    }
    for user in &public.enable {
        changes.push(Change::SetUserDisabled {
            user: user.clone(),
            at_unix_s: None,
        });
        let (code, issued) = new_activation_code(state, user, now);
        changes.push(Change::CreateActivationCode(code));
        events.push(event(
            "directory.user.enable",
            format!("user {user}"),
            "enabled in the directory".into(),
        ));
        codes.push(issued);
    }
    // Groups the directory brings: new ones created, ones made by hand adopted; both linked.
    let created = public.create_groups.iter().map(|g| (g, true));
    for (group, new) in created.chain(public.adopt_groups.iter().map(|g| (g, false))) {
        if new {
            changes.push(Change::CreateGroup {
                group: group.clone(),
                at_unix_s: now,
            });
        }
        let dn = plan.group_dns.get(group).cloned().unwrap_or_default();
        let link = GroupLink::ldap(dn.clone(), now);
        changes.push(link_change(GROUP_LINK_PREFIX, group.as_str(), Some(&link))?);
        let (action, details) = if new {
            ("directory.group.create", format!("from {dn}"))
        } else {
            ("directory.group.adopt", format!("made by hand; linked to {dn}"))
        };
        events.push(event(action, format!("group {group}"), details));
    }
    for membership in &public.memberships {
        changes.push(Change::SetGroupMember {
            group: membership.group.clone(),
            user: membership.user.clone(),
            member: membership.add,
        });
        let action = if membership.add {
            "directory.group.add"
        } else {
            "directory.group.remove"
        };
        events.push(event(
            action,
            format!("group {}", membership.group),
            format!("user {}", membership.user),
        ));
    }
    if !public.memberships.is_empty() {
        changes.push(Change::BumpPolicyVersion);
    }
    let applied = state.store.apply(&changes, &events).await.map_err(|e| match e {
        StoreError::AlreadyExists(what) => ApiError::new(
            ErrorCode::AlreadyExists,
            format!("a {what} the sync meant to create appeared meanwhile; nothing was changed; sync again"),
        ),
        other => other.into(),
    })?;
    after_revocations(state, &applied.revoked_devices).await;
    if !public.create.is_empty() || !public.update.is_empty() {
        // Mailbox addresses may have been mapped: the connector reads them again.
        announce(state, Hint::MailChanged);
    }
    if let Some(version) = applied.policy_version {
        announce(state, Hint::PolicyChanged { version });
    }
    Ok(codes)
}

/// After the commit that revoked `devices`: close their sessions, propose their removal
/// from every group they are in.
pub(crate) async fn after_revocations(state: &State, devices: &[DeviceId]) {
    let mut users = std::collections::BTreeSet::new();
    for device in devices {
        if let Ok(Some(record)) = state.store.device(device).await {
            users.insert(record.user);
        }
    }
    for user in &users {
        crate::kt::log_device(state, user, None).await;
    }
    for device in devices {
        announce(state, Hint::Revoked { device: *device });
        if let Err(error) = crate::delivery::propose_device_removal(state, device).await {
            tracing::warn!(%device, error = %error.0.message, "proposing a revoked device's removal failed");
        }
    }
}

/// Mails each code to its user; codes that could not be mailed are returned in the report.
async fn mail_codes(
    state: &State,
    codes: Vec<IssuedActivationCode>,
    mail: &BTreeMap<&UserName, Option<&String>>,
    display: &BTreeMap<&UserName, Option<&DisplayName>>,
    report: &mut SyncReport,
) {
    let server = code_mail::mail_server(state).await;
    for code in codes {
        let address = mail.get(&code.user).copied().flatten().map(String::as_str);
        let name = display
            .get(&code.user)
            .copied()
            .flatten()
            .map(DisplayName::as_str);
        let sent = match &server {
            Ok(server) => code_mail::mail_code(state, server, &code, address, name).await,
            Err(why) => Err(why.clone()),
        };
        match sent {
            Ok(()) => report.mailed.push(code.user.clone()),
            Err(reason) => {
                tracing::warn!(user = %code.user, %reason, "mailing an activation code failed");
                report.mail_failures.push(SkippedEntry {
                    entry: code.user.to_string(),
                    reason,
                });
                report.codes.push(code);
            }
        }
    }
}

/// Runs scheduled syncs on the node holding the sync lease, every `interval_s`.
pub(crate) async fn run_schedule(state: Arc<State>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SCHEDULE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Ok(Some(settings)) = stored_settings(&state).await else {
            continue;
        };
        if settings.interval_s == 0 {
            continue;
        }
        let last = last_status(&state)
            .await
            .ok()
            .flatten()
            .map_or(0, |s| s.at_unix_s);
        if state.now() < last + i64::from(settings.interval_s) {
            continue;
        }
        // Errors are recorded as the last sync's status and logged there; a sync another
        // node is running (the lease) is simply not repeated here.
        let _ = sync(&state, None, SyncRequest::default(), "scheduled").await;
    }
}

/// A new SCIM token: 32 random bytes, base32 (lower case), prefixed so it is recognisable
/// in a vault.
fn new_scim_token() -> String {
    use rand_core::RngCore;
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let encoded = data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase();
    format!("rdscim_{encoded}")
}

/// A SCIM token as stored: its SHA-256, never the token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredToken {
    pub hash: [u8; 32],
    pub created_at_unix_s: i64,
    pub created_by: UserName,
}

pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Every SCIM token by name.
pub(crate) async fn scim_tokens(state: &State) -> Result<BTreeMap<String, StoredToken>, ApiError> {
    links(state, SCIM_TOKEN_PREFIX, |n| Some(n.to_owned())).await
}

/// `AdminScimTokenCreate`.
pub(crate) async fn scim_token_create(
    state: &State,
    who: &Authenticated,
    name: String,
) -> Result<ScimTokenCreated, ApiError> {
    require(state, who, Permission::ManageDirectory).await?;
    check_scim_token_name(&name).map_err(|why| ApiError::new(ErrorCode::InvalidArgument, why))?;
    if scim_tokens(state).await?.contains_key(&name) {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("a SCIM token named {name} exists; revoke it first or choose another name"),
        ));
    }
    let token = new_scim_token();
    let stored = StoredToken {
        hash: token_hash(&token),
        created_at_unix_s: state.now(),
        created_by: who.user.clone(),
    };
    state
        .store
        .apply(
            &[link_change(SCIM_TOKEN_PREFIX, &name, Some(&stored))?],
            &[audit(
                state,
                Some(who),
                "scim.token.create",
                format!("scim token {name}"),
                "",
            )],
        )
        .await?;
    tracing::info!(admin = %who.user, token_name = %name, "SCIM token created");
    Ok(ScimTokenCreated { name, token })
}

/// `AdminScimTokenList`.
pub(crate) async fn scim_token_list(
    state: &State,
    who: &Authenticated,
) -> Result<Vec<ScimTokenInfo>, ApiError> {
    require(state, who, Permission::ManageDirectory).await?;
    Ok(scim_tokens(state)
        .await?
        .into_iter()
        .map(|(name, stored)| ScimTokenInfo {
            name,
            created_at_unix_s: stored.created_at_unix_s,
            created_by: stored.created_by,
        })
        .collect())
}

/// `AdminScimTokenRevoke`.
pub(crate) async fn scim_token_revoke(
    state: &State,
    who: &Authenticated,
    name: String,
) -> Result<(), ApiError> {
    require(state, who, Permission::ManageDirectory).await?;
    if !scim_tokens(state).await?.contains_key(&name) {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no SCIM token is named {name}"),
        ));
    }
    state
        .store
        .apply(
            &[link_change::<StoredToken>(SCIM_TOKEN_PREFIX, &name, None)?],
            &[audit(
                state,
                Some(who),
                "scim.token.revoke",
                format!("scim token {name}"),
                "",
            )],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn scim_tokens_are_long_random_and_lower_case() {
        let a = new_scim_token();
        let b = new_scim_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), "rdscim_".len() + 52);
        assert!(
            a[7..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
        );
    }
}

/// SCIM provisioning's own settings.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct ScimSettings {
    /// Mail each user provisioned or activated through SCIM a new activation code.
    pub email_codes: bool,
}

pub(crate) async fn scim_settings(state: &State) -> Result<ScimSettings, ApiError> {
    Ok(state
        .store
        .settings(SCIM_SETTINGS_KEY)
        .await?
        .into_iter()
        .next()
        .and_then(|(_, bytes)| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default())
}

/// `AdminScimSet`.
pub(crate) async fn scim_set(state: &State, who: &Authenticated, email_codes: bool) -> Result<(), ApiError> {
    require(state, who, Permission::ManageDirectory).await?;
    let settings = ScimSettings { email_codes };
    state
        .store
        .apply(
            &[link_change("", SCIM_SETTINGS_KEY, Some(&settings))?],
            &[audit(
                state,
                Some(who),
                "scim.set",
                "scim",
                format!("email_codes={email_codes}"),
            )],
        )
        .await?;
    Ok(())
}
