//! What a sync would change: the directory as read, against the users and groups Redoubt
//! has. Pure (no I/O), so a dry run and a real run compute the same plan, and the rules
//! are tested here without a directory.
//!
//! The rules:
//! - A directory user becomes a Redoubt user named by their user name attribute,
//!   lower-cased; a value that cannot be a Redoubt name is skipped with the reason.
//! - Users made by hand (no link) are never touched; a directory user with the same name is
//!   reported as a collision, not merged. Users linked to SCIM are left to SCIM.
//! - A linked user the search no longer returns, or returns disabled, is disabled; one
//!   returned enabled again is enabled. A disabled user still holding active devices (a sync
//!   interrupted after disabling) has them revoked.
//! - The disable guard: a sync that would disable more than the allowed share of the
//!   directory's users, or anyone at all when the search returned no user, is refused unless
//!   forced. Nothing of a refused plan is applied.
//! - Directory groups follow the directory's groups: created when new, members made to
//!   match (users the sync knows only; skipped entries are left as they are).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use redoubt_proto::{
    DeviceId, DisplayName, GroupName, PlannedDisable, PlannedMembership, PlannedUpdate, PlannedUser,
    SkippedEntry, SyncPlan, UserName,
};
use redoubt_store::UserRecord;

use super::dn::normalise_dn;
use super::ldap::{LdapUser, Snapshot, printable};
use super::{GroupLink, LinkSource, UserLink};

/// A Redoubt user as the planner sees it.
#[derive(Debug, Clone)]
pub(crate) struct CurrentUser {
    pub record: UserRecord,
    pub link: Option<UserLink>,
    /// Devices enrolled and not revoked.
    pub active_devices: Vec<DeviceId>,
}

/// A Redoubt directory group as the planner sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct CurrentGroup {
    pub members: BTreeSet<UserName>,
    pub link: Option<GroupLink>,
}

/// A directory value as a Redoubt user name: ASCII only (so no Unicode case folding can
/// make two different values one name: the Kelvin sign lower-cases to `k`), lower-cased,
/// then held to the usual rules; the mail connector's reserved name is refused.
pub(crate) fn user_name_from(value: &str) -> Result<UserName, String> {
    let invalid = || {
        format!(
            "{:?} cannot be a Redoubt user name (a letter or digit, then letters, digits, '.', '_' or '-'; \
             at most 64)",
            printable(value)
        )
    };
    if !value.is_ascii() {
        return Err(invalid());
    }
    let name = UserName::parse(&value.to_ascii_lowercase()).map_err(|_| invalid())?;
    if name.as_str() == redoubt_mls::mail::CONNECTOR_USER {
        return Err(format!("{name} is reserved for the mail connector"));
    }
    Ok(name)
}

/// A directory group's name as a Redoubt group name: lower-cased, blanks made dashes.
pub(crate) fn group_name_from(value: &str) -> Result<GroupName, String> {
    let name: String = value
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_whitespace() { '-' } else { c })
        .collect();
    GroupName::parse(&name).map_err(|_| {
        format!(
            "{:?} cannot be a Redoubt group name (letters, digits, '.', '_' or '-'; at most 64)",
            printable(value)
        )
    })
}

fn display_name(value: Option<&str>) -> Option<DisplayName> {
    let value = value?;
    let cut: String = value.chars().take(DisplayName::CHARS_MAX).collect();
    DisplayName::parse(cut.trim()).ok()
}

fn skip(out: &mut SyncPlan, dn: &str, reason: impl Into<String>) {
    out.skipped.push(SkippedEntry {
        entry: printable(dn),
        reason: reason.into(),
    });
}

/// Why a directory entry may not take over a Redoubt `kind` named `name` that exists
/// (`owner`: `Some(link source)` when it exists): made by hand, or owned by SCIM.
fn owned_elsewhere(owner: Option<Option<LinkSource>>, kind: &str, name: &str) -> Option<String> {
    match owner {
        Some(None) => Some(format!("a {kind} {name} made by hand exists; not merged")),
        Some(Some(LinkSource::Scim)) => Some(format!("the {kind} {name} is provisioned through SCIM")),
        Some(Some(LinkSource::Ldap)) | None => None,
    }
}

/// The directory entry a user was matched with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryRef {
    pub dn: String,
    /// Its entryUUID or objectGUID, when the directory gives one.
    pub id: Option<String>,
    pub mail: Option<String>,
}

/// What an admin decided for this sync.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    pub disable_max_percent: u8,
    /// Past the disable guard.
    pub force: bool,
    /// Link users and groups made by hand to the entries of the same name.
    pub adopt: bool,
}

/// A plan and what it leaves for the apply step.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub public: SyncPlan,
    /// The entry each user of this sync was matched with.
    pub entries: BTreeMap<UserName, EntryRef>,
    /// Groups to create, with their entry's DN.
    pub group_dns: BTreeMap<GroupName, String>,
    /// Why the disable guard refused the plan.
    pub refused: Option<String>,
}

/// Plans a sync of `snapshot` against the current users and groups.
pub(crate) fn plan(
    snapshot: &Snapshot,
    users: &BTreeMap<UserName, CurrentUser>,
    groups: &BTreeMap<GroupName, CurrentGroup>,
    rules: &Rules,
) -> Plan {
    let Rules {
        disable_max_percent,
        force,
        adopt,
    } = *rules;
    let mut plan = Plan::default();
    let out = &mut plan.public;
    out.users_seen = u32::try_from(snapshot.users.len()).unwrap_or(u32::MAX);
    out.groups_seen = u32::try_from(snapshot.groups.len()).unwrap_or(u32::MAX);

    // Which linked user each entry belongs to: by the entry's UUID when the directory
    // gives one, else by its DN. A name alone never moves a user to another entry.
    // (DN keys are only needed for links an id cannot match: links made before ids were
    // read, or any link when some entry comes without one.)
    let every_entry_has_id = snapshot.users.iter().all(|e| e.id.is_some());
    let mut link_by_id: HashMap<&str, &UserName> = HashMap::new();
    let mut link_by_dn: HashMap<String, &UserName> = HashMap::new();
    for (name, current) in users {
        if let Some(link) = current.link.as_ref().filter(|l| l.source == LinkSource::Ldap) {
            if let Some(id) = &link.entry_id {
                link_by_id.insert(id, name);
            }
            if let Some(dn) = link
                .dn
                .as_ref()
                .filter(|_| link.entry_id.is_none() || !every_entry_has_id)
            {
                link_by_dn.insert(normalise_dn(dn), name);
            }
        }
    }
    let owner_of = |entry: &LdapUser| -> Option<&UserName> {
        if let Some(owner) = entry.id.as_deref().and_then(|id| link_by_id.get(id)) {
            return Some(owner);
        }
        let owner = link_by_dn.get(&entry.dn_key)?;
        let link_id = users.get(*owner)?.link.as_ref()?.entry_id.as_ref();
        // A DN names the same entry only when the UUIDs do not say otherwise.
        (entry.id.is_none() || link_id.is_none()).then_some(*owner)
    };

    // Linked users whose entry the search returned, readable or not: those are not gone.
    let mut present: BTreeSet<&UserName> = BTreeSet::new();
    let mut candidates: BTreeMap<UserName, Vec<&LdapUser>> = BTreeMap::new();
    let mut entries: Vec<_> = snapshot.users.iter().collect();
    entries.sort_by(|a, b| a.dn.cmp(&b.dn));
    for entry in entries {
        let owner = owner_of(entry);
        present.extend(owner);
        let name = match entry
            .name
            .as_deref()
            .map_err(Clone::clone)
            .and_then(user_name_from)
        {
            Ok(name) => name,
            Err(reason) => {
                skip(out, &entry.dn, reason);
                continue;
            }
        };
        if let Some(owner) = owner.filter(|owner| **owner != name) {
            skip(
                out,
                &entry.dn,
                format!(
                    "renamed in the directory from {owner} to {name}: Redoubt names do not change, so {owner} stays as it is"
                ),
            );
            continue;
        }
        candidates.entry(name).or_default().push(entry);
    }

    // Each name to at most one entry: the entry its user is linked to, or, for a name no
    // user holds yet, the only entry claiming it. Anything else is reported, not guessed.
    let mut by_name: BTreeMap<UserName, &LdapUser> = BTreeMap::new();
    let mut member_of_dn: HashMap<String, UserName> = HashMap::new();
    for (name, claims) in candidates {
        let existing = users.get(&name);
        let owner = existing.map(|u| u.link.as_ref().map(|l| l.source));
        let chosen = match owner {
            Some(Some(LinkSource::Ldap)) => {
                let (mine, others): (Vec<_>, Vec<_>) =
                    claims.into_iter().partition(|e| owner_of(e) == Some(&name));
                for other in &others {
                    skip(
                        out,
                        &other.dn,
                        format!("the name {name} belongs to another directory entry; not taken over"),
                    );
                }
                match mine.as_slice() {
                    [entry] => *entry,
                    _ => continue,
                }
            }
            Some(None) if adopt => match claims.as_slice() {
                [entry] => {
                    out.adopt_users.push(name.clone());
                    *entry
                }
                _ => {
                    for entry in &claims {
                        skip(
                            out,
                            &entry.dn,
                            format!(
                                "{} directory entries claim the name {name}; none is adopted",
                                claims.len()
                            ),
                        );
                    }
                    continue;
                }
            },
            Some(_) => {
                let reason = owned_elsewhere(owner, "user", name.as_str()).unwrap_or_default();
                for entry in &claims {
                    skip(out, &entry.dn, reason.clone());
                }
                continue;
            }
            None => match claims.as_slice() {
                [entry] => *entry,
                _ => {
                    for entry in &claims {
                        skip(
                            out,
                            &entry.dn,
                            format!(
                                "{} directory entries claim the name {name}; none is used",
                                claims.len()
                            ),
                        );
                    }
                    continue;
                }
            },
        };
        plan.entries.insert(
            name.clone(),
            EntryRef {
                dn: chosen.dn.clone(),
                id: chosen.id.clone(),
                mail: chosen.mail.clone(),
            },
        );
        member_of_dn.insert(chosen.dn_key.clone(), name.clone());
        by_name.insert(name, chosen);
    }

    // Users: create, update, enable, disable.
    for (name, entry) in &by_name {
        let wanted_display = display_name(entry.display_name.as_deref());
        match users.get(name) {
            None if entry.disabled => {}
            None => {
                out.create.push(PlannedUser {
                    user: name.clone(),
                    display_name: wanted_display,
                    mail: entry.mail.clone(),
                    source: printable(&entry.dn),
                });
            }
            Some(current) => {
                let link = current.link.as_ref();
                let mail_changed = link.is_some_and(|l| l.mail != entry.mail);
                // The entry was matched to this user: a different DN is a move (or the
                // server writing it differently), recorded once.
                let entry_moved = link.is_some_and(|l| {
                    l.dn.as_deref() != Some(entry.dn.as_str())
                        || (entry.id.is_some() && l.entry_id != entry.id)
                });
                if current.record.display_name != wanted_display || mail_changed || entry_moved {
                    out.update.push(PlannedUpdate {
                        user: name.clone(),
                        display_name: wanted_display,
                        mail: entry.mail.clone(),
                    });
                }
                let is_disabled = current.record.disabled_at_unix_s.is_some();
                if entry.disabled && !is_disabled {
                    out.disable.push(PlannedDisable {
                        user: name.clone(),
                        reason: "disabled in the directory".into(),
                        devices: u32::try_from(current.active_devices.len()).unwrap_or(u32::MAX),
                    });
                } else if !entry.disabled && is_disabled {
                    out.enable.push(name.clone());
                }
            }
        }
    }
    let mut gone: BTreeSet<&UserName> = BTreeSet::new();
    for (name, current) in users {
        let linked = current
            .link
            .as_ref()
            .is_some_and(|l| l.source == LinkSource::Ldap);
        if !linked || by_name.contains_key(name) || present.contains(name) {
            continue;
        }
        gone.insert(name);
        if current.record.disabled_at_unix_s.is_none() {
            out.disable.push(PlannedDisable {
                user: name.clone(),
                reason: "no longer in the directory (or outside the user filter)".into(),
                devices: u32::try_from(current.active_devices.len()).unwrap_or(u32::MAX),
            });
        }
    }
    // Disabled before, devices still active (an interrupted sync, or enrolled in a race).
    for (name, current) in users {
        let disabled_linked = current.record.disabled_at_unix_s.is_some()
            && current
                .link
                .as_ref()
                .is_some_and(|l| l.source == LinkSource::Ldap);
        if disabled_linked && !current.active_devices.is_empty() && !out.enable.contains(name) {
            out.disable.push(PlannedDisable {
                user: name.clone(),
                reason: "disabled earlier; revoking the devices still active".into(),
                devices: u32::try_from(current.active_devices.len()).unwrap_or(u32::MAX),
            });
        }
    }

    // Groups.
    // Members are users that exist after the sync: not entries disabled before they were
    // ever created.
    let created: BTreeSet<UserName> = out.create.iter().map(|u| u.user.clone()).collect();
    let known: BTreeSet<&UserName> = by_name
        .keys()
        .filter(|name| users.contains_key(*name) || created.contains(*name))
        .collect();
    let mut seen_groups = BTreeSet::new();
    let mut unreadable_groups = BTreeSet::new();
    let mut group_entries: Vec<_> = snapshot.groups.iter().collect();
    group_entries.sort_by(|a, b| a.dn.cmp(&b.dn));
    for entry in group_entries {
        let name = match entry
            .name
            .as_deref()
            .map_err(Clone::clone)
            .and_then(group_name_from)
        {
            Ok(name) => name,
            Err(reason) => {
                unreadable_groups.insert(normalise_dn(&entry.dn));
                skip(out, &entry.dn, reason);
                continue;
            }
        };
        if !seen_groups.insert(name.clone()) {
            skip(
                out,
                &entry.dn,
                format!("another directory group is also named {name}"),
            );
            continue;
        }
        let current = groups.get(&name);
        let owner = current.map(|g| g.link.as_ref().map(|l| l.source));
        if adopt && owner == Some(None) {
            out.adopt_groups.push(name.clone());
            plan.group_dns.insert(name.clone(), entry.dn.clone());
        } else if let Some(reason) = owned_elsewhere(owner, "group", name.as_str()) {
            skip(out, &entry.dn, reason);
            continue;
        }
        if current.is_none() {
            out.create_groups.push(name.clone());
            plan.group_dns.insert(name.clone(), entry.dn.clone());
        }
        let wanted: BTreeSet<&UserName> = entry
            .members
            .iter()
            .filter_map(|dn| member_of_dn.get(dn))
            .filter(|user| known.contains(user))
            .collect();
        let have: BTreeSet<&UserName> = current.map(|g| g.members.iter().collect()).unwrap_or_default();
        // Only users this sync read, or that left the directory, are taken out: not users
        // whose entry could not be used this time, nor users made by hand or by SCIM.
        let removable = |user: &&&UserName| by_name.contains_key(**user) || gone.contains(**user);
        for user in wanted.difference(&have) {
            out.memberships.push(PlannedMembership {
                group: name.clone(),
                user: (*user).clone(),
                add: true,
            });
        }
        for user in have.difference(&wanted).filter(removable) {
            out.memberships.push(PlannedMembership {
                group: name.clone(),
                user: (*user).clone(),
                add: false,
            });
        }
    }
    // Linked groups the directory no longer has lose their members (their policy stays
    // for the admin to remove) — unless their entry was unreadable, or the group search
    // returned nothing at all, which looks like a broken search, not an empty directory.
    for (name, group) in groups {
        let Some(link) = group.link.as_ref().filter(|l| l.source == LinkSource::Ldap) else {
            continue;
        };
        if seen_groups.contains(name)
            || link
                .dn
                .as_ref()
                .is_some_and(|dn| unreadable_groups.contains(&normalise_dn(dn)))
        {
            continue;
        }
        if snapshot.groups.is_empty() {
            skip(
                out,
                link.dn.as_deref().unwrap_or(name.as_str()),
                "the group search returned no group: its members are left as they are",
            );
            continue;
        }
        for user in group
            .members
            .iter()
            .filter(|u| by_name.contains_key(*u) || gone.contains(*u))
        {
            out.memberships.push(PlannedMembership {
                group: name.clone(),
                user: user.clone(),
                add: false,
            });
        }
    }

    // The disable guard: users disabled now, out of the directory users enabled now (not
    // devices revoked for users disabled before, nor accounts disabled long ago).
    let directory_users = users
        .values()
        .filter(|u| u.record.disabled_at_unix_s.is_none())
        .filter(|u| u.link.as_ref().is_some_and(|l| l.source == LinkSource::Ldap))
        .count();
    let disabling = out
        .disable
        .iter()
        .filter(|d| {
            users
                .get(&d.user)
                .is_some_and(|u| u.record.disabled_at_unix_s.is_none())
        })
        .count();
    if disabling > 0 && !force {
        if snapshot.users.is_empty() {
            plan.refused = Some(format!(
                "the directory search returned no user, so this sync would disable all {disabling} directory \
                 users; check the settings and the directory, or run it with --force"
            ));
        } else if disabling * 100 > usize::from(disable_max_percent) * directory_users.max(1) {
            plan.refused = Some(format!(
                "this sync would disable {disabling} of {directory_users} directory users, more than the \
                 {disable_max_percent} % allowed; check the directory, or run it with --force"
            ));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::ldap::{LdapGroup, LdapUser};
    use super::*;

    fn rules(disable_max_percent: u8, force: bool) -> Rules {
        Rules {
            disable_max_percent,
            force,
            adopt: false,
        }
    }

    fn entry(uid: &str, disabled: bool) -> LdapUser {
        LdapUser {
            dn: format!("uid={uid},ou=people,dc=corp,dc=test"),
            dn_key: normalise_dn(&format!("uid={uid},ou=people,dc=corp,dc=test")),
            id: None,
            name: Ok(uid.to_owned()),
            display_name: Some(format!("{uid} Example")),
            mail: Some(format!("{uid}@corp.test")),
            disabled,
        }
    }

    fn linked(name: &str, devices: u8, disabled: bool) -> (UserName, CurrentUser) {
        let user = UserName::parse(name).unwrap();
        let current = CurrentUser {
            record: UserRecord {
                name: user.clone(),
                display_name: Some(DisplayName::parse(&format!("{name} Example")).unwrap()),
                roles: vec![],
                created_at_unix_s: 1,
                disabled_at_unix_s: disabled.then_some(5),
            },
            link: Some(UserLink::ldap(
                &EntryRef {
                    dn: format!("uid={name},ou=people,dc=corp,dc=test"),
                    id: None,
                    mail: Some(format!("{name}@corp.test")),
                },
                name.to_owned(),
                0,
            )),
            active_devices: (0..devices).map(|i| DeviceId::from([i; 16])).collect(),
        };
        (user, current)
    }

    fn group(cn: &str, members: &[&str]) -> LdapGroup {
        LdapGroup {
            dn: format!("cn={cn},ou=groups,dc=corp,dc=test"),
            name: Ok(cn.to_owned()),
            members: members
                .iter()
                .map(|m| normalise_dn(&format!("uid={m}, ou=People,dc=corp,dc=test")))
                .collect(),
        }
    }

    #[test]
    fn new_entries_are_created_with_their_groups_and_nothing_else_moves() {
        let snapshot = Snapshot {
            users: vec![entry("alice", false), entry("bob", false), entry("carol", true)],
            groups: vec![group("Field Staff", &["alice", "bob", "nobody"])],
        };
        let plan = plan(&snapshot, &BTreeMap::new(), &BTreeMap::new(), &rules(10, false));
        let created: Vec<_> = plan.public.create.iter().map(|u| u.user.as_str()).collect();
        assert_eq!(created, ["alice", "bob"], "a disabled entry is not created");
        assert_eq!(
            plan.public.create_groups,
            [GroupName::parse("field-staff").unwrap()]
        );
        assert_eq!(plan.public.memberships.len(), 2);
        assert!(plan.public.disable.is_empty() && plan.refused.is_none());
    }

    #[test]
    fn hand_made_users_collide_and_scim_users_are_left_to_scim() {
        let mut users = BTreeMap::new();
        let (alice, mut current) = linked("alice", 1, false);
        current.link = None;
        users.insert(alice, current);
        let (bob, mut current) = linked("bob", 0, false);
        current.link.as_mut().unwrap().source = LinkSource::Scim;
        users.insert(bob, current);
        let snapshot = Snapshot {
            users: vec![entry("alice", false), entry("bob", false)],
            groups: vec![],
        };
        let plan = plan(&snapshot, &users, &BTreeMap::new(), &rules(10, false));
        assert!(plan.public.create.is_empty() && plan.public.update.is_empty());
        assert_eq!(plan.public.skipped.len(), 2, "{:?}", plan.public.skipped);
        assert!(plan.public.skipped[0].reason.contains("made by hand"));
    }

    #[test]
    fn locked_and_removed_users_are_disabled_within_the_guard() {
        let mut users: BTreeMap<_, _> = (0..40).map(|i| linked(&format!("u{i}"), 1, false)).collect();
        users.extend([linked("gone", 2, false)]);
        let mut entries: Vec<_> = (0..40).map(|i| entry(&format!("u{i}"), i == 7)).collect();
        let snapshot = Snapshot {
            users: entries.clone(),
            groups: vec![],
        };
        let planned = plan(&snapshot, &users, &BTreeMap::new(), &rules(10, false));
        let disabled: Vec<_> = planned.public.disable.iter().map(|d| d.user.as_str()).collect();
        assert_eq!(disabled, ["u7", "gone"]);
        assert_eq!(planned.public.disable[1].devices, 2);
        assert!(planned.refused.is_none());

        // Five of 41 (12 %) is over the 10 % guard unless forced.
        for entry in entries.iter_mut().take(4) {
            entry.disabled = true;
        }
        let snapshot = Snapshot {
            users: entries,
            groups: vec![],
        };
        assert!(
            plan(&snapshot, &users, &BTreeMap::new(), &rules(10, false))
                .refused
                .is_some()
        );
        assert!(
            plan(&snapshot, &users, &BTreeMap::new(), &rules(10, true))
                .refused
                .is_none()
        );
        // An empty answer never disables anyone unforced, whatever the percentage.
        let empty = Snapshot::default();
        let planned = plan(&empty, &users, &BTreeMap::new(), &rules(100, false));
        assert!(planned.refused.unwrap().contains("no user"));
    }

    #[test]
    fn adopting_links_hand_made_users_and_groups_instead_of_reporting_them() {
        let (alice, mut current) = linked("alice", 1, false);
        current.link = None;
        let users: BTreeMap<_, _> = [(alice.clone(), current)].into();
        let staff = GroupName::parse("staff").unwrap();
        let groups: BTreeMap<_, _> = [(staff.clone(), CurrentGroup::default())].into();
        let snapshot = Snapshot {
            users: vec![entry("alice", false)],
            groups: vec![group("staff", &["alice"])],
        };
        let adopt = Rules {
            disable_max_percent: 10,
            force: false,
            adopt: true,
        };
        let plan = plan(&snapshot, &users, &groups, &adopt);
        assert_eq!(plan.public.adopt_users, [alice]);
        assert_eq!(plan.public.adopt_groups, [staff]);
        assert!(plan.public.skipped.is_empty() && plan.public.create.is_empty());
        assert_eq!(
            plan.public.memberships.len(),
            1,
            "the adopted group follows the directory"
        );
    }

    #[test]
    fn re_enabled_users_are_enabled_and_unreadable_entries_are_left_alone() {
        let users: BTreeMap<_, _> = [linked("alice", 0, true), linked("bob", 1, false)].into();
        let mut bob = entry("bob", false);
        bob.name = Err("its uid is not UTF-8".into());
        let snapshot = Snapshot {
            users: vec![entry("alice", false), bob],
            groups: vec![],
        };
        let plan = plan(&snapshot, &users, &BTreeMap::new(), &rules(10, false));
        assert_eq!(plan.public.enable, [UserName::parse("alice").unwrap()]);
        assert!(plan.public.disable.is_empty(), "{:?}", plan.public.disable);
        assert_eq!(plan.public.skipped.len(), 1);
    }

    #[test]
    fn hostile_names_are_skipped_with_a_printable_reason() {
        let mut evil = entry("x", false);
        evil.name = Ok("a*)(uid=*\0".into());
        evil.dn = "uid=evil\nforged line,dc=corp".into();
        evil.dn_key = normalise_dn("uid=evil\nforged line,dc=corp");
        let snapshot = Snapshot {
            users: vec![evil],
            groups: vec![],
        };
        let plan = plan(&snapshot, &BTreeMap::new(), &BTreeMap::new(), &rules(10, false));
        assert!(plan.public.create.is_empty());
        let skipped = &plan.public.skipped[0];
        assert!(
            !skipped.entry.contains('\n') && !skipped.reason.contains('\0'),
            "{skipped:?}"
        );
    }

    #[test]
    fn names_are_ascii_and_the_connector_name_is_reserved() {
        assert_eq!(user_name_from("J.Smith").unwrap().as_str(), "j.smith");
        assert!(
            user_name_from("\u{212A}evin").is_err(),
            "the Kelvin sign is not a k"
        );
        assert!(user_name_from("mail-connector").unwrap_err().contains("reserved"));
        assert!(group_name_from("Stra\u{df}e").is_err());
    }

    fn with_id(mut entry: LdapUser, id: &str) -> LdapUser {
        entry.id = Some(id.to_owned());
        entry
    }

    fn linked_with_id(name: &str, id: &str) -> (UserName, CurrentUser) {
        let (user, mut current) = linked(name, 1, false);
        if let Some(link) = current.link.as_mut() {
            link.entry_id = Some(id.to_owned());
        }
        (user, current)
    }

    #[test]
    fn a_name_is_never_taken_over_by_another_entry() {
        // The CEO is linked to entry id-1; an entry elsewhere claims the same uid.
        let users: BTreeMap<_, _> = [linked_with_id("ceo", "id-1")].into();
        let mut impostor = with_id(entry("ceo", false), "id-2");
        impostor.dn = "uid=CEO,ou=partners,dc=corp,dc=test".into();
        impostor.dn_key = normalise_dn("uid=CEO,ou=partners,dc=corp,dc=test");
        impostor.mail = Some("attacker@corp.test".into());
        let genuine = with_id(entry("ceo", false), "id-1");
        let snapshot = Snapshot {
            users: vec![impostor, genuine],
            groups: vec![],
        };
        let planned = plan(&snapshot, &users, &BTreeMap::new(), &rules(10, false));
        assert!(planned.public.update.is_empty(), "{:?}", planned.public.update);
        assert_eq!(planned.public.skipped.len(), 1);
        assert!(planned.public.skipped[0].entry.contains("partners"));
        assert_eq!(
            planned.entries[&UserName::parse("ceo").unwrap()].id.as_deref(),
            Some("id-1")
        );

        // Two entries claiming a name nobody holds yet: neither is used.
        let snapshot = Snapshot {
            users: vec![with_id(entry("dup", false), "a"), {
                let mut other = with_id(entry("dup", false), "b");
                other.dn = "uid=dup,ou=other,dc=corp,dc=test".into();
                other.dn_key = normalise_dn("uid=dup,ou=other,dc=corp,dc=test");
                other
            }],
            groups: vec![],
        };
        let planned = plan(&snapshot, &BTreeMap::new(), &BTreeMap::new(), &rules(10, false));
        assert!(planned.public.create.is_empty());
        assert_eq!(planned.public.skipped.len(), 2);
    }

    #[test]
    fn a_renamed_or_moved_entry_keeps_its_user() {
        let users: BTreeMap<_, _> = [linked_with_id("jsmith", "id-7")].into();
        // Renamed: reported; the user is present, so not disabled, and no new user.
        let snapshot = Snapshot {
            users: vec![with_id(entry("jsmith2", false), "id-7")],
            groups: vec![],
        };
        let planned = plan(&snapshot, &users, &BTreeMap::new(), &rules(10, false));
        assert!(planned.public.create.is_empty() && planned.public.disable.is_empty());
        assert!(planned.public.skipped[0].reason.contains("renamed"));
        // Moved to another OU: the same user, its link updated.
        let mut moved = with_id(entry("jsmith", false), "id-7");
        moved.dn = "uid=jsmith,ou=sales,dc=corp,dc=test".into();
        moved.dn_key = normalise_dn("uid=jsmith,ou=sales,dc=corp,dc=test");
        let snapshot = Snapshot {
            users: vec![moved],
            groups: vec![],
        };
        let planned = plan(&snapshot, &users, &BTreeMap::new(), &rules(10, false));
        assert_eq!(planned.public.update.len(), 1);
        assert!(planned.public.disable.is_empty());
    }

    #[test]
    fn members_are_only_removed_when_the_directory_says_so() {
        let users: BTreeMap<_, _> = [linked("alice", 0, false), linked("bob", 0, false)].into();
        let (carol, mut hand_made) = linked("carol", 0, false);
        hand_made.link = None;
        let mut users = users;
        users.insert(carol.clone(), hand_made);
        let staff = GroupName::parse("staff").unwrap();
        let current = CurrentGroup {
            members: ["alice", "bob", "carol"]
                .map(|n| UserName::parse(n).unwrap())
                .into(),
            link: Some(GroupLink::ldap("cn=staff,ou=groups,dc=corp,dc=test".into(), 0)),
        };
        let groups: BTreeMap<_, _> = [(staff.clone(), current)].into();
        // Bob's entry is unreadable this time; Carol was added by hand: both stay.
        let mut bob = entry("bob", false);
        bob.name = Err("its uid is not UTF-8".into());
        let snapshot = Snapshot {
            users: vec![entry("alice", false), bob],
            groups: vec![group("staff", &["alice"])],
        };
        let planned = plan(&snapshot, &users, &groups, &rules(10, false));
        assert!(
            planned.public.memberships.is_empty(),
            "{:?}",
            planned.public.memberships
        );
        // A group search that returns nothing strips nobody.
        let snapshot = Snapshot {
            users: vec![entry("alice", false), entry("bob", false)],
            groups: vec![],
        };
        let planned = plan(&snapshot, &users, &groups, &rules(10, false));
        assert!(
            planned.public.memberships.is_empty(),
            "{:?}",
            planned.public.memberships
        );
    }

    #[test]
    fn group_members_follow_the_directory() {
        let users: BTreeMap<_, _> = [linked("alice", 0, false), linked("bob", 0, false)].into();
        let staff = GroupName::parse("staff").unwrap();
        let mut current = CurrentGroup {
            members: [UserName::parse("alice").unwrap()].into(),
            link: Some(GroupLink::ldap("cn=staff,ou=groups,dc=corp,dc=test".into(), 0)),
        };
        current.members.insert(UserName::parse("bob").unwrap());
        let groups: BTreeMap<_, _> = [(staff.clone(), current)].into();
        let snapshot = Snapshot {
            users: vec![entry("alice", false), entry("bob", false)],
            groups: vec![group("staff", &["alice"])],
        };
        let plan = plan(&snapshot, &users, &groups, &rules(10, false));
        assert_eq!(
            plan.public.memberships,
            [PlannedMembership {
                group: staff,
                user: UserName::parse("bob").unwrap(),
                add: false
            }]
        );
    }
}
