//! `directory-sync`: `--users` LDAP users in `--groups` groups in a real OpenLDAP slapd on
//! loopback (the test peer of `crates/cli/tests/slapd`), synchronised into the server.
//!
//! - *first sync*: every user, group and membership is created (one activation code each).
//! - *incremental sync*: after 100 changes in LDAP — 40 display names (`cn` and
//!   `displayName`), 30 users moved to the next group, 20 accounts locked
//!   (`pwdAccountLockedTime`, so disabled: within the 10 % guard) and 10 new users in the
//!   first group — the report must plan exactly 10 creations, 40 updates, 20 disables and
//!   70 membership changes (two per move, one per new user).
//! - *raw search*: right before the incremental sync, the real `ldapsearch` (paged, as the
//!   service account, all user attributes) of the same user entries and of the groups: what
//!   reading the directory costs at the least. Target: incremental sync ≤ 2× that.
//!
//! Times are the wall time of the admin request as the bench sees it and the server's own
//! `duration_ms`. Server memory is VmRSS/VmHWM of the server process with --spawn-server;
//! in-process it is the whole bench process's.

use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use redoubt_proto::{DirectoryPreset, DirectorySettings, Request, Response, SyncReport};
use serde_json::json;

use crate::DirectorySyncArgs;
use crate::report::{Report, Section};
use crate::scenarios::Common;
use crate::target::Target;

#[path = "../../cli/tests/slapd/mod.rs"]
mod slapd;

/// The changes made in LDAP between the two syncs (their sum is 100).
const RENAMED: usize = 40;
const MOVED: usize = 30;
const LOCKED: usize = 20;
const ADDED: usize = 10;

async fn sync(target: &mut Target) -> Result<(SyncReport, f64)> {
    let started = Instant::now();
    let response = target
        .admin
        .request(Request::AdminDirectorySync {
            dry_run: false,
            force: false,
            adopt: false,
        })
        .await?;
    let wall_s = started.elapsed().as_secs_f64();
    match response {
        Response::DirectorySync(report) => {
            // A sync with nothing to do applies nothing; one with changes must apply them.
            if report.refused.is_some() || (!report.applied && !report.plan.is_empty()) {
                bail!("the sync was not applied: {:?}", report.refused);
            }
            Ok((*report, wall_s))
        }
        other => Err(anyhow!("unexpected response to AdminDirectorySync: {other:?}")),
    }
}

/// Syncs with nothing to change after the incremental one (the median is reported).
const UNCHANGED_SYNCS: usize = 5;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// (created, updated, disabled, membership changes, groups created) of a sync.
fn counts(report: &SyncReport) -> [usize; 5] {
    let plan = &report.plan;
    [
        plan.create.len(),
        plan.update.len(),
        plan.disable.len(),
        plan.memberships.len(),
        plan.create_groups.len(),
    ]
}

/// The 100 changes, made in LDAP with the real `ldapmodify`/`ldapadd` as the root DN.
fn change_directory(ldap: &slapd::Slapd, users: &[slapd::DirUser], groups: usize) {
    let base = ldap.base_dn();
    let mut ldif = String::new();
    for u in &users[..RENAMED] {
        let dn = slapd::openldap_user_dn(base, &u.uid);
        let name = u.display_name.replace("User", "Renamed");
        ldif.push_str(&format!(
            "dn: {dn}\nchangetype: modify\nreplace: cn\ncn: {name}\n-\nreplace: displayName\ndisplayName: {name}\n\n"
        ));
    }
    for (i, u) in users.iter().enumerate().skip(RENAMED).take(MOVED) {
        let dn = slapd::openldap_user_dn(base, &u.uid);
        let from = slapd::group_dn(base, &format!("group{:03}", i % groups));
        let to = slapd::group_dn(base, &format!("group{:03}", (i + 1) % groups));
        ldif.push_str(&format!(
            "dn: {from}\nchangetype: modify\ndelete: member\nmember: {dn}\n\n\
             dn: {to}\nchangetype: modify\nadd: member\nmember: {dn}\n\n"
        ));
    }
    ldap.modify_ldif(&ldif);
    for u in users.iter().skip(RENAMED + MOVED).take(LOCKED) {
        ldap.lock(&slapd::openldap_user_dn(base, &u.uid));
    }
    let added: Vec<slapd::DirUser> = (users.len()..users.len() + ADDED)
        .map(|i| {
            slapd::DirUser::new(
                &format!("user{i:05}"),
                &format!("User {i:05}"),
                &format!("user{i:05}@{}", slapd::DOMAIN),
            )
            .in_groups(&["group000"])
        })
        .collect();
    ldap.add_ldif(&slapd::openldap_users_ldif(base, &added));
    let group = slapd::group_dn(base, "group000");
    let mut ldif = format!("dn: {group}\nchangetype: modify\nadd: member\n");
    for u in &added {
        ldif.push_str(&format!("member: {}\n", slapd::openldap_user_dn(base, &u.uid)));
    }
    ldap.modify_ldif(&ldif);
}

pub async fn run(target: &mut Target, common: &Common, args: &DirectorySyncArgs) -> Result<Report> {
    if args.users < RENAMED + MOVED + LOCKED || args.groups < 2 {
        bail!(
            "--users must be at least {} and --groups at least 2",
            RENAMED + MOVED + LOCKED
        );
    }
    // Set-up (not timed): slapd with the users and groups, loaded offline.
    let setup_started = Instant::now();
    let mut ldap = slapd::Slapd::start();
    let users = slapd::synthetic_users(args.users, args.groups);
    let base = ldap.base_dn();
    let mut ldif = slapd::openldap_users_ldif(base, &users);
    ldif.push_str(&slapd::groups_ldif(base, &users, &[]));
    ldap.load_offline(&ldif);
    drop(ldif);
    let setup_s = setup_started.elapsed().as_secs_f64();

    let settings = DirectorySettings::from_preset(
        DirectoryPreset::OpenLdap,
        ldap.ldap_url(),
        ldap.service_dn().to_owned(),
        ldap.service_password().to_owned(),
        base.to_owned(),
    );
    match target
        .admin
        .request(Request::AdminDirectorySet(settings.clone()))
        .await?
    {
        Response::Done => {}
        other => bail!("unexpected response to AdminDirectorySet: {other:?}"),
    }

    // First sync.
    let meter = target.meter.clone();
    let before = meter.read();
    meter.reset_peak();
    let (first, first_wall_s) = sync(target).await?;
    let after_first = meter.read();
    let first_counts = counts(&first);
    let first_expected = [args.users, 0, 0, args.users, args.groups];

    // The changes, then the reference searches, then the incremental sync.
    let changes_started = Instant::now();
    change_directory(&ldap, &users, args.groups);
    let changes_s = changes_started.elapsed().as_secs_f64();
    let (user_entries, users_search) = ldap.ldapsearch_count(base, &settings.user_filter);
    let (group_entries, groups_search) = ldap.ldapsearch_count(base, &settings.group_filter);
    let raw_s = (users_search + groups_search).as_secs_f64();
    let before_incremental = meter.read();
    meter.reset_peak();
    let (incremental, incremental_wall_s) = sync(target).await?;
    let after_incremental = meter.read();
    let incremental_counts = counts(&incremental);
    // Diagnostic: syncs with nothing to change cost the read of the directory and of the
    // server's users and groups, and the plan; the difference is the apply.
    let mut unchanged_s = Vec::with_capacity(UNCHANGED_SYNCS);
    let mut unchanged_server_s = Vec::with_capacity(UNCHANGED_SYNCS);
    for _ in 0..UNCHANGED_SYNCS {
        let (report, wall_s) = sync(target).await?;
        if !report.plan.is_empty() {
            bail!(
                "a sync right after another planned changes: {:?}",
                counts(&report)
            );
        }
        unchanged_s.push(wall_s);
        unchanged_server_s.push(report.duration_ms as f64 / 1000.0);
    }
    let unchanged_s = median(&mut unchanged_s);
    let unchanged_server_s = median(&mut unchanged_server_s);
    let incremental_expected = [ADDED, RENAMED, LOCKED, 2 * MOVED + ADDED, 0];
    let searched_expected = (args.users + ADDED, args.groups);
    let ratio = incremental_wall_s / raw_s;

    let ok = first_counts == first_expected
        && incremental_counts == incremental_expected
        && (user_entries, group_entries) == searched_expected;
    let mut notes = Vec::new();
    if !ok {
        notes.push(format!(
            "counts (created, updated, disabled, memberships, groups created): first sync {first_counts:?}, \
             expected {first_expected:?}; incremental {incremental_counts:?}, expected \
             {incremental_expected:?}; ldapsearch saw {user_entries} users and {group_entries} \
             groups, expected {searched_expected:?}"
        ));
    }

    let mut s = Section::new(format!("{} users in {} groups", args.users, args.groups));
    s.add("users", args.users, "");
    s.add("groups", args.groups, "");
    s.num("first_sync_s", first_wall_s, 3, "s");
    s.num("first_sync_server_s", first.duration_ms as f64 / 1000.0, 3, "s");
    s.add("first_created", first_counts[0], "");
    s.add("first_memberships", first_counts[3], "");
    s.add("first_codes", first.codes.len(), "");
    s.num("changes_s", changes_s, 3, "s");
    s.num("ldapsearch_users_s", users_search.as_secs_f64(), 3, "s");
    s.add("ldapsearch_users", user_entries, "");
    s.num("ldapsearch_groups_s", groups_search.as_secs_f64(), 3, "s");
    s.add("ldapsearch_groups", group_entries, "");
    s.num("raw_search_s", raw_s, 3, "s");
    s.num("incremental_sync_s", incremental_wall_s, 3, "s");
    s.target("<= 2 x raw_search_s");
    s.num(
        "incremental_sync_server_s",
        incremental.duration_ms as f64 / 1000.0,
        3,
        "s",
    );
    s.num("incremental_over_raw_search", ratio, 2, "x");
    s.target("<= 2");
    s.num("unchanged_sync_s", unchanged_s, 3, "s");
    s.num("unchanged_sync_server_s", unchanged_server_s, 3, "s");
    s.add("incremental_created", incremental_counts[0], "");
    s.add("incremental_updated", incremental_counts[1], "");
    s.add("incremental_disabled", incremental_counts[2], "");
    s.add("incremental_memberships", incremental_counts[3], "");
    if meter.known() {
        s.num("server_rss_before_mib", mib(before.rss_kib), 1, "MiB");
        s.num("server_rss_after_first_mib", mib(after_first.rss_kib), 1, "MiB");
        s.num("server_peak_first_sync_mib", mib(after_first.hwm_kib), 1, "MiB");
        s.num(
            "server_rss_after_incremental_mib",
            mib(after_incremental.rss_kib),
            1,
            "MiB",
        );
        s.num(
            "server_peak_incremental_mib",
            mib(after_incremental.hwm_kib),
            1,
            "MiB",
        );
        s.num(
            "server_cpu_first_sync_s",
            after_first.cpu_s - before.cpu_s,
            3,
            "s",
        );
        s.num(
            "server_cpu_incremental_s",
            after_incremental.cpu_s - before_incremental.cpu_s,
            3,
            "s",
        );
    }
    s.num("setup_s", setup_s, 1, "s");
    if meter.memory_includes_load_generator() {
        notes.push(
            "the server runs in this process: memory is the whole process's (server, bench and \
             the generated LDIF); use --spawn-server for the server's alone"
                .into(),
        );
    }
    notes.push(format!(
        "slapd (OpenLDAP, mdb, no fsync) runs on this machine on loopback; the raw search is the \
         real ldapsearch, paged (500), as the service account, all user attributes: \
         {} and {} under {base}",
        settings.user_filter, settings.group_filter
    ));
    notes.push(format!(
        "unchanged_sync_*: the median of {UNCHANGED_SYNCS} syncs right after the incremental one, \
         with nothing to change: reading the directory and the server's users and groups, and \
         planning; incremental minus unchanged is about the apply of the 100 changes"
    ));
    notes.push(format!(
        "the {} changes: {RENAMED} display names, {MOVED} users moved to another group, {LOCKED} \
         locked (pwdAccountLockedTime), {ADDED} new users in group000",
        RENAMED + MOVED + LOCKED + ADDED
    ));
    ldap.stop();
    Ok(Report {
        scenario: "directory-sync".into(),
        description: format!(
            "{} LDAP users in {} groups (real slapd): first sync, then an incremental sync of 100 changes against the raw ldapsearch",
            args.users, args.groups
        ),
        settings: crate::scenarios::settings(
            target,
            common,
            json!({"users": args.users, "groups": args.groups}),
        ),
        sections: vec![s],
        notes,
        ok,
    })
}
