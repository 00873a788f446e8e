//! The SCIM endpoint's storage: users and groups an identity provider provisions, kept as
//! Redoubt users and directory groups with a `scim` link (see the module above).
//!
//! A SCIM user's id is its Redoubt name: the `userName`'s part before any `@`, lower-cased
//! and held to Redoubt's rules (`Alice.Smith@corp.test` becomes `alice.smith`). Users and
//! groups without a SCIM link (made by hand or by LDAP sync) are not listed and cannot be
//! changed through SCIM; a `userName` that maps onto one is a uniqueness conflict. A user set
//! `active: false` or deleted is disabled, with their devices revoked in the same
//! transaction; a deleted user's row stays (devices and the audit log refer to it) and is
//! hidden from SCIM until provisioned again. Every change is audited naming the token.

use std::collections::BTreeMap;
use std::sync::Arc;

use redoubt_proto::{DeviceId, DisplayName, GroupName, IssuedActivationCode, UserName};
use redoubt_store::{AuditEvent, Change, UserRecord};
use serde_json::json;

use super::plan::{group_name_from, user_name_from};
use super::{
    GROUP_LINK_PREFIX, GroupLink, LinkSource, USER_LINK_PREFIX, UserLink, link_change, links, token_hash,
};
use crate::State;
use crate::api::new_activation_code;
use crate::cluster::{Hint, announce};
use crate::error::ApiError;
use crate::scim::{GroupRef, MemberRef, Meta, ScimBackend, ScimEmail, ScimError, ScimGroup, ScimUser};

/// The SCIM backend over the server's store.
pub(crate) struct StoreScim {
    pub state: Arc<State>,
}

fn stored(error: ApiError) -> ScimError {
    ScimError::internal(error.0.message)
}

fn meta(created: i64, link_updated: i64, version: u64) -> Meta {
    Meta {
        created: super::rfc3339(created),
        last_modified: super::rfc3339(link_updated.max(created)),
        version: format!("W/\"{version}\""),
    }
}

/// The Redoubt name for a SCIM `userName`.
fn redoubt_name(user_name: &str) -> Result<UserName, ScimError> {
    let local = user_name.split('@').next().unwrap_or_default();
    user_name_from(local).map_err(ScimError::invalid_value)
}

fn display_name(text: Option<&str>) -> Option<DisplayName> {
    text.and_then(|t| DisplayName::parse(t.trim()).ok())
}

fn scim_fields(user: &ScimUser) -> serde_json::Value {
    json!({
        "externalId": user.external_id,
        "displayName": user.display_name,
        "givenName": user.given_name,
        "familyName": user.family_name,
        "emails": user.emails.iter().map(|e| json!({"value": e.value, "type": e.kind, "primary": e.primary})).collect::<Vec<_>>(),
        "deleted": false,
    })
}

/// Whether `user` is the person `link` was provisioned for.
fn same_person(link: &UserLink, user: &ScimUser) -> bool {
    let external_id = link.scim.as_ref().and_then(|s| s["externalId"].as_str());
    link.external_name.eq_ignore_ascii_case(&user.user_name)
        || (external_id.is_some() && external_id == user.external_id.as_deref())
}

fn is_deleted(link: &UserLink) -> bool {
    link.scim
        .as_ref()
        .and_then(|s| s["deleted"].as_bool())
        .unwrap_or(false)
}

impl StoreScim {
    fn audit(&self, token: &str, action: &'static str, subject: String, details: String) -> AuditEvent {
        AuditEvent {
            at_unix_s: self.state.now(),
            actor_user: None,
            actor_device: None,
            action,
            subject,
            details: format!(
                "by SCIM token {token}{}{details}",
                if details.is_empty() { "" } else { ": " }
            ),
        }
    }

    async fn user_links(&self) -> Result<BTreeMap<UserName, UserLink>, ScimError> {
        links(&self.state, USER_LINK_PREFIX, |n| UserName::parse(n).ok())
            .await
            .map_err(stored)
    }

    async fn group_links(&self) -> Result<BTreeMap<GroupName, GroupLink>, ScimError> {
        links(&self.state, GROUP_LINK_PREFIX, |n| GroupName::parse(n).ok())
            .await
            .map_err(stored)
    }

    fn to_scim_user(&self, record: &UserRecord, link: &UserLink, groups: &[GroupRef]) -> ScimUser {
        let scim = link.scim.clone().unwrap_or_default();
        let text = |key: &str| scim[key].as_str().map(str::to_owned);
        ScimUser {
            id: record.name.to_string(),
            external_id: text("externalId"),
            user_name: link.external_name.clone(),
            display_name: text("displayName").or_else(|| record.display_name.as_ref().map(|d| d.to_string())),
            given_name: text("givenName"),
            family_name: text("familyName"),
            emails: scim["emails"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    Some(ScimEmail {
                        value: e["value"].as_str()?.to_owned(),
                        kind: e["type"].as_str().map(str::to_owned),
                        primary: e["primary"].as_bool().unwrap_or(false),
                    })
                })
                .collect(),
            active: record.disabled_at_unix_s.is_none(),
            groups: groups.to_vec(),
            meta: meta(record.created_at_unix_s, link.updated_at_unix_s, link.version),
        }
    }

    /// Every SCIM-provisioned user (not deleted), with their SCIM groups.
    async fn scim_users(&self) -> Result<Vec<ScimUser>, ScimError> {
        let links = self.user_links().await?;
        let group_links = self.group_links().await?;
        let mut groups_of: BTreeMap<UserName, Vec<GroupRef>> = BTreeMap::new();
        for group in self
            .state
            .store
            .directory_groups()
            .await
            .map_err(|e| stored(e.into()))?
        {
            if !group_links
                .get(&group.name)
                .is_some_and(|l| l.source == LinkSource::Scim)
            {
                continue;
            }
            for member in group.members {
                groups_of
                    .entry(member)
                    .or_default()
                    .extend(group_ref(&group.name, &group_links));
            }
        }
        let mut out = Vec::new();
        for record in self
            .state
            .store
            .list_users()
            .await
            .map_err(|e| stored(e.into()))?
        {
            let Some(link) = links
                .get(&record.name)
                .filter(|l| l.source == LinkSource::Scim && !is_deleted(l))
            else {
                continue;
            };
            let groups = groups_of.remove(&record.name).unwrap_or_default();
            out.push(self.to_scim_user(&record, link, &groups));
        }
        Ok(out)
    }

    async fn active_devices(&self, user: &UserName) -> Result<Vec<DeviceId>, ScimError> {
        Ok(self
            .state
            .store
            .list_devices(Some(user))
            .await
            .map_err(|e| stored(e.into()))?
            .into_iter()
            .filter(|d| d.revoked_at_unix_s.is_none())
            .map(|d| d.id)
            .collect())
    }

    /// Applies `changes` with `events`, then closes revoked devices' sessions and tells
    /// devices of a policy change.
    async fn commit(&self, changes: &[Change], events: &[AuditEvent]) -> Result<(), ScimError> {
        let applied = self
            .state
            .store
            .apply(changes, events)
            .await
            .map_err(|e| match e {
                redoubt_store::StoreError::AlreadyExists(what) => {
                    ScimError::uniqueness(format!("that {what} exists"))
                }
                redoubt_store::StoreError::NotFound(what) => {
                    ScimError::invalid_value(format!("no such {what}"))
                }
                other => stored(other.into()),
            })?;
        super::after_revocations(&self.state, &applied.revoked_devices).await;
        if let Some(version) = applied.policy_version {
            announce(&self.state, Hint::PolicyChanged { version });
        }
        Ok(())
    }

    /// Mails `code` to the user's primary (or first) address in the background, when SCIM
    /// codes go by mail: the provider's request does not wait for the mail server. A code
    /// that could not be mailed is logged (never the code) for the admin to issue another.
    fn mail_code(&self, code: Option<IssuedActivationCode>, user: &ScimUser) {
        let Some(code) = code else { return };
        let address = user
            .emails
            .iter()
            .find(|e| e.primary)
            .or(user.emails.first())
            .map(|e| e.value.clone());
        let display = user.display_name.clone();
        let state = self.state.clone();
        // After the commit nothing may fail the provider's request: the settings are read
        // in the background too.
        tokio::spawn(async move {
            match super::scim_settings(&state).await {
                Ok(settings) if settings.email_codes => {}
                Ok(_) => return,
                Err(error) => {
                    tracing::warn!(user = %code.user, error = %error.0.message, "reading the SCIM settings failed; no code mailed");
                    return;
                }
            }
            let sent = match super::code_mail::mail_server(&state).await {
                Ok(server) => {
                    super::code_mail::mail_code(
                        &state,
                        &server,
                        &code,
                        address.as_deref(),
                        display.as_deref(),
                    )
                    .await
                }
                Err(why) => Err(why),
            };
            match sent {
                Ok(()) => tracing::info!(user = %code.user, "activation code mailed"),
                Err(reason) => {
                    tracing::warn!(user = %code.user, %reason, "mailing an activation code failed")
                }
            }
        });
    }

    async fn scim_user_by_id(&self, id: &str) -> Result<Option<(UserRecord, UserLink)>, ScimError> {
        let Ok(name) = UserName::parse(id) else {
            return Ok(None);
        };
        let Some(record) = self.state.store.user(&name).await.map_err(|e| stored(e.into()))? else {
            return Ok(None);
        };
        let link: Option<UserLink> = super::link(&self.state, USER_LINK_PREFIX, name.as_str())
            .await
            .map_err(stored)?;
        Ok(link
            .filter(|l| l.source == LinkSource::Scim && !is_deleted(l))
            .map(|l| (record, l)))
    }

    async fn scim_group(&self, id: &str) -> Result<Option<ScimGroup>, ScimError> {
        Ok(self.list_groups().await?.into_iter().find(|g| g.id == id))
    }
}

/// A user's reference to `group`, when SCIM provisioned it.
fn group_ref(group: &GroupName, links: &BTreeMap<GroupName, GroupLink>) -> Option<GroupRef> {
    let link = links.get(group).filter(|l| l.source == LinkSource::Scim)?;
    Some(GroupRef {
        value: group.to_string(),
        display: link
            .scim
            .as_ref()
            .and_then(|s| s["displayName"].as_str())
            .map(str::to_owned),
    })
}

/// Refuses a change computed from another version than the stored one (a PATCH read on
/// another node meanwhile, a PUT with a stale `If-Match`). The router serialises its own
/// read-modify-write; this catches the other nodes' (up to the short window between this
/// read and the commit).
fn stale(from: &str, current: u64) -> Result<(), ScimError> {
    let from = from.trim_start_matches("W/").trim_matches('"');
    if from.is_empty() || from == current.to_string() {
        Ok(())
    } else {
        Err(ScimError::precondition_failed(format!(
            "the resource changed meanwhile (version {current}); read it again"
        )))
    }
}

/// Disables `user`: the store revokes their devices and voids their codes in the same
/// transaction.
fn disable(user: &UserName, now: i64) -> Change {
    Change::SetUserDisabled {
        user: user.clone(),
        at_unix_s: Some(now),
    }
}

impl ScimBackend for StoreScim {
    async fn authenticate(&self, bearer: &str) -> Option<String> {
        let presented = token_hash(bearer);
        let tokens = super::scim_tokens(&self.state).await.ok()?;
        let mut found = None;
        // Every stored hash is compared, each in constant time.
        for (name, stored) in tokens {
            if redoubt_proto::constant_time_eq(&stored.hash, &presented) {
                found = Some(name);
            }
        }
        found
    }

    async fn list_users(&self) -> Result<Vec<ScimUser>, ScimError> {
        self.scim_users().await
    }

    async fn get_user(&self, id: &str) -> Result<Option<ScimUser>, ScimError> {
        // One user's record, link and groups: not every user's (a provider looks one up
        // before each change).
        let Some((record, link)) = self.scim_user_by_id(id).await? else {
            return Ok(None);
        };
        let group_links = self.group_links().await?;
        let groups: Vec<GroupRef> = self
            .state
            .store
            .user_groups(&record.name)
            .await
            .map_err(|e| stored(e.into()))?
            .iter()
            .filter_map(|group| group_ref(group, &group_links))
            .collect();
        Ok(Some(self.to_scim_user(&record, &link, &groups)))
    }

    async fn create_user(&self, token: &str, user: ScimUser) -> Result<ScimUser, ScimError> {
        let name = redoubt_name(&user.user_name)?;
        let now = self.state.now();
        let existing = self.state.store.user(&name).await.map_err(|e| stored(e.into()))?;
        let previous = self.user_links().await?.remove(&name);
        let mut changes = Vec::new();
        let issued = match (&existing, &previous) {
            (None, _) => {
                let (code, fresh) = new_activation_code(&self.state, &name, now);
                changes.push(Change::CreateUser {
                    user: UserRecord {
                        name: name.clone(),
                        display_name: display_name(user.display_name.as_deref()),
                        roles: vec![],
                        created_at_unix_s: now,
                        disabled_at_unix_s: None,
                    },
                    code,
                });
                fresh
            }
            // Provisioned before and deleted: provisioned again, if it is the same person
            // (same userName, or same externalId) — a new person with a name that maps to
            // the same Redoubt name must not inherit the old one's roles and conversations.
            (Some(_), Some(link))
                if link.source == LinkSource::Scim && is_deleted(link) && same_person(link, &user) =>
            {
                changes.push(Change::SetUserDisabled {
                    user: name.clone(),
                    at_unix_s: None,
                });
                changes.push(Change::SetDisplayName {
                    user: name.clone(),
                    display_name: display_name(user.display_name.as_deref()),
                });
                let (code, fresh) = new_activation_code(&self.state, &name, now);
                changes.push(Change::CreateActivationCode(code));
                fresh
            }
            (Some(_), _) => {
                return Err(ScimError::uniqueness(format!(
                    "userName {:?} is the Redoubt user {name}, which exists",
                    user.user_name
                )));
            }
        };
        if !user.active {
            changes.push(disable(&name, now));
        }
        let link = UserLink {
            source: LinkSource::Scim,
            dn: None,
            entry_id: None,
            external_name: user.user_name.clone(),
            mail: user
                .emails
                .iter()
                .find(|e| e.primary)
                .or(user.emails.first())
                .map(|e| e.value.clone()),
            scim: Some(scim_fields(&user)),
            updated_at_unix_s: now,
            version: previous.map_or(1, |l| l.version + 1),
        };
        changes.push(link_change(USER_LINK_PREFIX, name.as_str(), Some(&link)).map_err(stored)?);
        let mut mailboxes = crate::mail::Mailboxes::load(&self.state).await.map_err(stored)?;
        changes.extend(mailboxes.map(&name, link.mail.as_deref()));
        let event = self.audit(
            token,
            "scim.user.create",
            format!("user {name}"),
            format!("userName {:?}", user.user_name),
        );
        self.commit(&changes, &[event]).await?;
        if user.active {
            self.mail_code(Some(issued), &user);
        }
        self.get_user(name.as_str())
            .await?
            .ok_or_else(|| ScimError::internal("the new user is missing"))
    }

    async fn replace_user(&self, token: &str, id: &str, user: ScimUser) -> Result<ScimUser, ScimError> {
        let Some((record, mut link)) = self.scim_user_by_id(id).await? else {
            return Err(ScimError::not_found(format!("no user {id}")));
        };
        stale(&user.meta.version, link.version)?;
        // A new userName keeps the id (the Redoubt name): identity providers rename.
        let now = self.state.now();
        let mut changes = vec![Change::SetDisplayName {
            user: record.name.clone(),
            display_name: display_name(user.display_name.as_deref()),
        }];
        let mut details = String::new();
        let mut activation = None;
        match (record.disabled_at_unix_s.is_none(), user.active) {
            (true, false) => {
                let devices = self.active_devices(&record.name).await?.len();
                changes.push(disable(&record.name, now));
                details = format!("deactivated; {devices} device(s) revoked");
            }
            (false, true) => {
                changes.push(Change::SetUserDisabled {
                    user: record.name.clone(),
                    at_unix_s: None,
                });
                details = "activated".into();
                // Disabling voided their codes: a new one, if it is to be mailed.
                if super::scim_settings(&self.state)
                    .await
                    .map_err(stored)?
                    .email_codes
                {
                    let (code, fresh) = new_activation_code(&self.state, &record.name, now);
                    changes.push(Change::CreateActivationCode(code));
                    activation = Some(fresh);
                    details.push_str("; a new activation code mailed");
                }
            }
            _ => {}
        }
        let mail_before = link.mail.clone();
        link.external_name = user.user_name.clone();
        link.mail = user
            .emails
            .iter()
            .find(|e| e.primary)
            .or(user.emails.first())
            .map(|e| e.value.clone());
        link.scim = Some(scim_fields(&user));
        link.updated_at_unix_s = now;
        link.version += 1;
        if link.mail != mail_before {
            let mut mailboxes = crate::mail::Mailboxes::load(&self.state).await.map_err(stored)?;
            changes.extend(mailboxes.map(&record.name, link.mail.as_deref()));
        }
        changes.push(link_change(USER_LINK_PREFIX, record.name.as_str(), Some(&link)).map_err(stored)?);
        let event = self.audit(
            token,
            "scim.user.replace",
            format!("user {}", record.name),
            details,
        );
        self.commit(&changes, &[event]).await?;
        self.mail_code(activation, &user);
        self.get_user(id)
            .await?
            .ok_or_else(|| ScimError::internal("the user is missing"))
    }

    async fn delete_user(&self, token: &str, id: &str) -> Result<(), ScimError> {
        let Some((record, mut link)) = self.scim_user_by_id(id).await? else {
            return Err(ScimError::not_found(format!("no user {id}")));
        };
        let now = self.state.now();
        let devices = self.active_devices(&record.name).await?.len();
        let mut changes = vec![disable(&record.name, now)];
        // Out of every SCIM group too.
        for group in self.list_groups().await? {
            if group.members.iter().any(|m| m.value == id)
                && let Ok(group) = GroupName::parse(&group.id)
            {
                changes.push(Change::SetGroupMember {
                    group,
                    user: record.name.clone(),
                    member: false,
                });
                changes.push(Change::BumpPolicyVersion);
            }
        }
        if let Some(scim) = link.scim.as_mut() {
            scim["deleted"] = json!(true);
        }
        link.updated_at_unix_s = now;
        link.version += 1;
        changes.push(link_change(USER_LINK_PREFIX, record.name.as_str(), Some(&link)).map_err(stored)?);
        let event = self.audit(
            token,
            "scim.user.delete",
            format!("user {}", record.name),
            format!("disabled; {devices} device(s) revoked"),
        );
        self.commit(&changes, &[event]).await
    }

    async fn list_groups(&self) -> Result<Vec<ScimGroup>, ScimError> {
        let links = self.group_links().await?;
        let display: BTreeMap<UserName, String> = self
            .scim_users()
            .await?
            .into_iter()
            .filter_map(|u| Some((UserName::parse(&u.id).ok()?, u.display_name?)))
            .collect();
        Ok(self
            .state
            .store
            .directory_groups()
            .await
            .map_err(|e| stored(e.into()))?
            .into_iter()
            .filter_map(|group| {
                let link = links.get(&group.name).filter(|l| l.source == LinkSource::Scim)?;
                let scim = link.scim.clone().unwrap_or_default();
                Some(ScimGroup {
                    id: group.name.to_string(),
                    external_id: scim["externalId"].as_str().map(str::to_owned),
                    display_name: scim["displayName"]
                        .as_str()
                        .map_or_else(|| group.name.to_string(), str::to_owned),
                    members: group
                        .members
                        .iter()
                        .map(|m| MemberRef {
                            value: m.to_string(),
                            display: display.get(m).cloned(),
                        })
                        .collect(),
                    meta: meta(group.created_at_unix_s, link.updated_at_unix_s, link.version),
                })
            })
            .collect())
    }

    async fn get_group(&self, id: &str) -> Result<Option<ScimGroup>, ScimError> {
        self.scim_group(id).await
    }

    async fn create_group(&self, token: &str, group: ScimGroup) -> Result<ScimGroup, ScimError> {
        let name = group_name_from(&group.display_name).map_err(ScimError::invalid_value)?;
        let now = self.state.now();
        let mut changes = vec![Change::CreateGroup {
            group: name.clone(),
            at_unix_s: now,
        }];
        changes.extend(self.member_changes(&name, &[], &group.members).await?);
        let link = GroupLink {
            source: LinkSource::Scim,
            dn: None,
            scim: Some(json!({"externalId": group.external_id, "displayName": group.display_name})),
            updated_at_unix_s: now,
            version: 1,
        };
        changes.push(link_change(GROUP_LINK_PREFIX, name.as_str(), Some(&link)).map_err(stored)?);
        let event = self.audit(token, "scim.group.create", format!("group {name}"), String::new());
        self.commit(&changes, &[event]).await?;
        self.scim_group(name.as_str())
            .await?
            .ok_or_else(|| ScimError::internal("the new group is missing"))
    }

    async fn replace_group(&self, token: &str, id: &str, group: ScimGroup) -> Result<ScimGroup, ScimError> {
        let Some(current) = self.scim_group(id).await? else {
            return Err(ScimError::not_found(format!("no group {id}")));
        };
        let name = GroupName::parse(id).map_err(|_| ScimError::not_found(format!("no group {id}")))?;
        // A new displayName keeps the id (the Redoubt group name).
        let now = self.state.now();
        let mut changes = self
            .member_changes(&name, &current.members, &group.members)
            .await?;
        let mut link = self
            .group_links()
            .await?
            .remove(&name)
            .ok_or_else(|| ScimError::not_found(format!("no group {id}")))?;
        stale(&group.meta.version, link.version)?;
        link.scim = Some(json!({"externalId": group.external_id, "displayName": group.display_name}));
        link.updated_at_unix_s = now;
        link.version += 1;
        changes.push(link_change(GROUP_LINK_PREFIX, name.as_str(), Some(&link)).map_err(stored)?);
        let event = self.audit(
            token,
            "scim.group.replace",
            format!("group {name}"),
            String::new(),
        );
        self.commit(&changes, &[event]).await?;
        self.scim_group(id)
            .await?
            .ok_or_else(|| ScimError::internal("the group is missing"))
    }

    async fn delete_group(&self, token: &str, id: &str) -> Result<(), ScimError> {
        if self.scim_group(id).await?.is_none() {
            return Err(ScimError::not_found(format!("no group {id}")));
        }
        let name = GroupName::parse(id).map_err(|_| ScimError::not_found(format!("no group {id}")))?;
        let changes = vec![
            Change::DeleteGroup { group: name.clone() },
            link_change::<GroupLink>(GROUP_LINK_PREFIX, name.as_str(), None).map_err(stored)?,
            Change::BumpPolicyVersion,
        ];
        let had_policy = self
            .state
            .store
            .policies()
            .await
            .map_err(|e| stored(e.into()))?
            .iter()
            .any(|(scope, _)| scope == &redoubt_proto::PolicyScope::Group(name.clone()));
        let details = if had_policy { "with its policy" } else { "" };
        let event = self.audit(
            token,
            "scim.group.delete",
            format!("group {name}"),
            details.into(),
        );
        self.commit(&changes, &[event]).await
    }
}

impl StoreScim {
    /// The membership changes from `have` to `want` (members are user ids), with a policy
    /// version bump when there is any. Only users provisioned through SCIM are added or
    /// taken out: a member added by an admin, or by LDAP sync, is none of the provider's
    /// business. Anyone else named is refused.
    async fn member_changes(
        &self,
        group: &GroupName,
        have: &[MemberRef],
        want: &[MemberRef],
    ) -> Result<Vec<Change>, ScimError> {
        let provisioned: std::collections::BTreeSet<UserName> = self
            .user_links()
            .await?
            .into_iter()
            .filter(|(_, link)| link.source == LinkSource::Scim && !is_deleted(link))
            .map(|(name, _)| name)
            .collect();
        let have: std::collections::BTreeSet<&str> = have.iter().map(|m| m.value.as_str()).collect();
        let want: std::collections::BTreeSet<&str> = want.iter().map(|m| m.value.as_str()).collect();
        let mut changes = Vec::new();
        for (value, member) in want
            .difference(&have)
            .map(|v| (*v, true))
            .chain(have.difference(&want).map(|v| (*v, false)))
        {
            let user = UserName::parse(value).ok().filter(|u| provisioned.contains(u));
            let Some(user) = user else {
                if member {
                    return Err(ScimError::invalid_value(format!(
                        "no user {value} was provisioned through SCIM"
                    )));
                }
                continue;
            };
            changes.push(Change::SetGroupMember {
                group: group.clone(),
                user,
                member,
            });
        }
        if !changes.is_empty() {
            changes.push(Change::BumpPolicyVersion);
        }
        Ok(changes)
    }
}
