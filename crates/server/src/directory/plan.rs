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

use std::collections::{BTreeMap, BTreeSet};

use redoubt_proto::{
    DeviceId, DisplayName, GroupName, PlannedDisable, PlannedMembership, PlannedUpdate, PlannedUser,
    SkippedEntry, SyncPlan, UserName,
};
use redoubt_store::UserRecord;

use super::ldap::{Snapshot, normalise_dn, printable};
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

/// A directory value as a Redoubt user name: lower-cased, then held to the usual rules.
pub(crate) fn user_name_from(value: &str) -> Result<UserName, String> {
    UserName::parse(&value.to_lowercase()).map_err(|_| {
        format!(
            "{:?} cannot be a Redoubt user name (a letter or digit, then letters, digits, '.', '_' or '-'; \
             at most 64)",
            printable(value)
        )
    })
}

/// A directory group's name as a Redoubt group name: lower-cased, blanks made dashes.
pub(crate) fn group_name_from(value: &str) -> Result<GroupName, String> {
    let name: String = value
        .trim()
        .to_lowercase()
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
    /// Each user to create or update, with their entry's DN.
    pub dns: BTreeMap<UserName, String>,
    /// Groups to create, with their entry's DN.
    pub group_dns: BTreeMap<GroupName, String>,
    /// The mail attribute of each user to adopt.
    pub adopt_mail: BTreeMap<UserName, Option<String>>,
    /// Devices to revoke, by user.
    pub revoke: BTreeMap<UserName, Vec<DeviceId>>,
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

    // Directory users by name (the first entry holding a name keeps it), and every DN
    // the search returned, usable or not: a linked user whose entry is merely unreadable
    // this time is left alone, not disabled.
    let mut seen_dns = BTreeSet::new();
    let mut by_name: BTreeMap<UserName, &super::ldap::LdapUser> = BTreeMap::new();
    let mut member_of_dn: BTreeMap<String, UserName> = BTreeMap::new();
    let mut entries: Vec<_> = snapshot.users.iter().collect();
    entries.sort_by(|a, b| a.dn.cmp(&b.dn));
    for entry in entries {
        seen_dns.insert(normalise_dn(&entry.dn));
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
        if let Some(first) = by_name.get(&name) {
            skip(
                out,
                &entry.dn,
                format!("the name {name} is taken by {}", printable(&first.dn)),
            );
            continue;
        }
        let owner = users.get(&name).map(|u| u.link.as_ref().map(|l| l.source));
        if adopt && owner == Some(None) {
            out.adopt_users.push(name.clone());
            plan.dns.insert(name.clone(), entry.dn.clone());
            plan.adopt_mail.insert(name.clone(), entry.mail.clone());
        } else if let Some(reason) = owned_elsewhere(owner, "user", name.as_str()) {
            skip(out, &entry.dn, reason);
            continue;
        }
        by_name.insert(name.clone(), entry);
        member_of_dn.insert(normalise_dn(&entry.dn), name);
    }

    // Users: create, update, enable, disable.
    let mut directory_users = 0usize;
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
                plan.dns.insert(name.clone(), entry.dn.clone());
            }
            Some(current) => {
                directory_users += 1;
                let link = current.link.as_ref();
                let mail_changed = link.is_some_and(|l| l.mail != entry.mail);
                let dn_changed = link.is_some_and(|l| l.dn.as_deref() != Some(entry.dn.as_str()));
                if current.record.display_name != wanted_display || mail_changed || dn_changed {
                    out.update.push(PlannedUpdate {
                        user: name.clone(),
                        display_name: wanted_display,
                        mail: entry.mail.clone(),
                    });
                    plan.dns.insert(name.clone(), entry.dn.clone());
                }
                let is_disabled = current.record.disabled_at_unix_s.is_some();
                if entry.disabled && !is_disabled {
                    out.disable.push(PlannedDisable {
                        user: name.clone(),
                        reason: "disabled in the directory".into(),
                        devices: u32::try_from(current.active_devices.len()).unwrap_or(u32::MAX),
                    });
                    plan.revoke.insert(name.clone(), current.active_devices.clone());
                } else if !entry.disabled && is_disabled {
                    out.enable.push(name.clone());
                }
            }
        }
    }
    for (name, current) in users {
        let Some(link) = current.link.as_ref().filter(|l| l.source == LinkSource::Ldap) else {
            continue;
        };
        if by_name.contains_key(name) {
            continue;
        }
        let is_disabled = current.record.disabled_at_unix_s.is_some();
        if !is_disabled {
            directory_users += 1;
        }
        let unreadable = link
            .dn
            .as_ref()
            .is_some_and(|dn| seen_dns.contains(&normalise_dn(dn)));
        if unreadable {
            continue;
        }
        if !is_disabled {
            out.disable.push(PlannedDisable {
                user: name.clone(),
                reason: "no longer in the directory (or outside the user filter)".into(),
                devices: u32::try_from(current.active_devices.len()).unwrap_or(u32::MAX),
            });
            plan.revoke.insert(name.clone(), current.active_devices.clone());
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
            plan.revoke.insert(name.clone(), current.active_devices.clone());
        }
    }

    // Groups.
    // Members are users that exist after the sync: not entries disabled before they were
    // ever created.
    let known: BTreeSet<&UserName> = by_name
        .keys()
        .filter(|name| users.contains_key(*name) || plan.dns.contains_key(*name))
        .collect();
    let mut seen_groups = BTreeSet::new();
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
        for user in wanted.difference(&have) {
            out.memberships.push(PlannedMembership {
                group: name.clone(),
                user: (*user).clone(),
                add: true,
            });
        }
        for user in have.difference(&wanted) {
            out.memberships.push(PlannedMembership {
                group: name.clone(),
                user: (*user).clone(),
                add: false,
            });
        }
    }
    // Linked groups the directory no longer has lose their members (their policy stays
    // for the admin to remove).
    for (name, group) in groups {
        if group.link.as_ref().is_some_and(|l| l.source == LinkSource::Ldap) && !seen_groups.contains(name) {
            for user in &group.members {
                out.memberships.push(PlannedMembership {
                    group: name.clone(),
                    user: user.clone(),
                    add: false,
                });
            }
        }
    }

    // The disable guard counts users disabled now, not devices revoked for users disabled
    // before.
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
                format!("uid={name},ou=people,dc=corp,dc=test"),
                name.to_owned(),
                Some(format!("{name}@corp.test")),
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
        assert_eq!(planned.revoke[&UserName::parse("gone").unwrap()].len(), 2);
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
    fn group_members_follow_the_directory() {
        let users: BTreeMap<_, _> = [linked("alice", 0, false), linked("bob", 0, false)].into();
        let staff = GroupName::parse("staff").unwrap();
        let mut current = CurrentGroup {
            members: [UserName::parse("alice").unwrap()].into(),
            link: Some(GroupLink::ldap("cn=staff,ou=groups,dc=corp,dc=test".into())),
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
