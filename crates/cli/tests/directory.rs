#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Directory sync against a real OpenLDAP slapd on loopback, with the real server process
//! and `redoubt` binary: users and groups appear, a group's policy reaches a member's
//! device, a user moved between groups changes policy, a locked user loses their devices
//! within one sync and may enrol again once unlocked; a directory that is down or answers
//! nothing disables nobody; hostile entries are skipped with a reason; the AD preset.

mod peers;
mod slapd;
mod support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use slapd::{DirUser, Slapd};
use support::{Org, json_error, json_ok, message, write};

const PASSCODE: &str = "correct-horse-1";

fn set_directory(org: &Org, slapd: &Slapd, preset: &str, extra: &[&str]) -> Value {
    let password = write(
        &org.root,
        "bind-password",
        &format!("{}\n", slapd.service_password()),
    );
    let url = slapd.ldap_url();
    let mut args = vec![
        "admin",
        "directory",
        "set",
        "--bind-dn",
        slapd.service_dn(),
        "--password-file",
        password.to_str().unwrap(),
        "--preset",
        preset,
        "--json",
    ];
    // The defaults, unless the test gives its own.
    for (option, value) in [
        ("--url", url.as_str()),
        ("--base-dn", slapd.base_dn()),
        ("--interval", "0"),
    ] {
        if !extra.contains(&option) {
            args.extend([option, value]);
        }
    }
    args.extend_from_slice(extra);
    org.admin(&args)
}

fn sync(org: &Org, extra: &[&str]) -> Value {
    let mut args = vec!["admin", "directory", "sync", "--json"];
    args.extend_from_slice(extra);
    org.admin(&args)
}

fn names(rows: &Value, key: &str) -> BTreeSet<String> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r[key].as_str().unwrap().to_owned())
        .collect()
}

fn code_for(report: &Value, user: &str) -> String {
    report["codes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["user"] == user)
        .unwrap_or_else(|| panic!("no code for {user}: {report:#}"))["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn users(org: &Org) -> BTreeSet<String> {
    names(&org.admin(&["admin", "user", "list", "--json"]), "user")
}

/// One SCIM request over HTTPS (curl, verifying the server with `ca`): status and body.
fn scim_request(ca: &Path, url: &str, method: &str, body: &str, bearer: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--cacert", ca.to_str().unwrap(), "-X", method, "-H"])
        .arg(format!("Authorization: Bearer {bearer}"))
        .args([
            "-H",
            "Content-Type: application/scim+json",
            "-w",
            "\n%{http_code}",
            "--data",
            body,
            url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// The indented line of an activation mail's text part: the code.
fn code_in_mail(mail: &peers::ImapMessage) -> String {
    mail.body_text
        .lines()
        .find(|line| line.starts_with("    ") && !line.trim().is_empty())
        .unwrap_or_else(|| panic!("no code in {:?}", mail.body_text))
        .trim()
        .to_owned()
}

fn enroll(profile: &Path, code: &str, name: &str) {
    json_ok(profile, &["enroll", code, "--name", name, "--json"], &[]);
}

#[test]
fn people_and_groups_follow_openldap_and_lose_access_when_it_says_so() {
    let root = tempfile::tempdir().unwrap();
    let mut slapd = Slapd::start();
    let mut people = slapd::synthetic_users(200, 5);
    people[0].uid = "alice".into();
    people[1].uid = "bob".into();
    slapd.add_ldif(&slapd::openldap_users_ldif(slapd.base_dn(), &people));
    slapd.add_ldif(&slapd::groups_ldif(slapd.base_dn(), &people, &[]));
    let org = Org::start(root.path(), "127.0.0.1:0", &[]);
    set_directory(&org, &slapd, "openldap", &[]);

    // A dry run lists exactly the plan and changes nothing.
    let before = users(&org);
    let plan = sync(&org, &["--dry-run"]);
    assert_eq!(plan["users_seen"], 200);
    assert_eq!(plan["create"].as_array().unwrap().len(), 200, "{plan:#}");
    assert_eq!(
        names(&plan["create"], "user")
            .iter()
            .filter(|n| n.starts_with("user"))
            .count(),
        198
    );
    let groups: BTreeSet<String> = plan["create_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(groups, (0..5).map(|i| format!("group{i:03}")).collect());
    assert_eq!(plan["memberships"].as_array().unwrap().len(), 200);
    assert_eq!(plan["applied"], false);
    assert_eq!(users(&org), before, "a dry run changes nothing");

    // The sync creates them all, each with a code, and the groups with their members.
    let report = sync(&org, &[]);
    assert_eq!(report["applied"], true, "{report:#}");
    assert_eq!(report["codes"].as_array().unwrap().len(), 200);
    assert_eq!(users(&org).len(), before.len() + 200);
    let listed = org.admin(&["admin", "group", "list", "--json"]);
    let group0 = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "group000")
        .unwrap();
    assert_eq!(group0["members"].as_array().unwrap().len(), 40);
    assert!(
        group0["members"]
            .as_array()
            .unwrap()
            .contains(&Value::from("alice"))
    );
    // The directory's mail attribute maps each user's mailbox for the mail connector.
    let mail = org.admin(&["admin", "mail", "show", "--json"]);
    let alice_mail = mail["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user"] == "alice")
        .unwrap_or_else(|| panic!("alice has a mailbox: {mail:#}"));
    assert_eq!(alice_mail["address"], "user00000@corp.test");
    assert_eq!(alice_mail["mapped"], true);
    // Run again: nothing to change.
    let again = sync(&org, &[]);
    assert!(again["create"].as_array().unwrap().is_empty(), "{again:#}");
    assert!(again["memberships"].as_array().unwrap().is_empty(), "{again:#}");

    // A group-scoped policy reaches a member's device: Alice (group000) must set a passcode.
    let policy = write(root.path(), "group000.toml", "passcode_required = true\n");
    org.admin(&[
        "admin",
        "policy",
        "set",
        "--group",
        "group000",
        "--file",
        policy.to_str().unwrap(),
        "--json",
    ]);
    let alice = org.profile("alice-phone");
    enroll(&alice, &code_for(&report, "alice"), "alice-phone");
    let refused = json_error(&alice, &["whoami", "--json"], &[]);
    assert!(message(&refused).contains("passcode"), "{refused}");
    let with_passcode = &[("REDOUBT_PASSCODE", PASSCODE)];
    json_ok(&alice, &["whoami", "--json"], with_passcode);

    // Moved to group001 in the directory, her effective policy follows.
    slapd.modify_ldif(&format!(
        "dn: {g0}\nchangetype: modify\ndelete: member\nmember: {alice}\n\n\
         dn: {g1}\nchangetype: modify\nadd: member\nmember: {alice}\n",
        g0 = slapd::group_dn(slapd.base_dn(), "group000"),
        g1 = slapd::group_dn(slapd.base_dn(), "group001"),
        alice = slapd::openldap_user_dn(slapd.base_dn(), "alice"),
    ));
    let moved = sync(&org, &[]);
    assert_eq!(moved["memberships"].as_array().unwrap().len(), 2, "{moved:#}");
    let report_alice = org.admin(&["admin", "policy", "show", "--user", "alice", "--json"]);
    let passcode = report_alice["effective"]["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["setting"] == "passcode_required")
        .unwrap()
        .clone();
    assert_eq!(passcode["value"], "false", "{report_alice:#}");

    // Bob enrols and shares a conversation with Alice.
    let bob = org.profile("bob-phone");
    enroll(&bob, &code_for(&report, "bob"), "bob-phone");
    json_ok(
        &alice,
        &["group", "create", "ops", "--members", "bob", "--json"],
        with_passcode,
    );
    let members = json_ok(&alice, &["group", "members", "ops", "--json"], with_passcode);
    assert_eq!(members["members"].as_array().unwrap().len(), 2, "{members:#}");

    // Locked in LDAP: within one sync, his device is revoked, his session refused, and he
    // is proposed out of the conversation.
    let bob_dn = slapd::openldap_user_dn(slapd.base_dn(), "bob");
    slapd.lock(&bob_dn);
    let locked = sync(&org, &[]);
    let disabled = &locked["disable"].as_array().unwrap();
    assert_eq!(disabled.len(), 1, "{locked:#}");
    assert_eq!(disabled[0]["user"], "bob");
    assert_eq!(disabled[0]["devices"], 1);
    let refused = json_error(&bob, &["whoami", "--json"], &[]);
    assert!(message(&refused).contains("revoked"), "{refused}");
    let members = json_ok(&alice, &["group", "members", "ops", "--json"], with_passcode);
    assert_eq!(members["members"].as_array().unwrap().len(), 1, "{members:#}");
    let devices = org.admin(&["admin", "device", "list", "--user", "bob", "--json"]);
    assert!(devices[0]["revoked_at"].is_string(), "{devices:#}");
    // No code can be issued for him meanwhile.
    let refused = json_error(
        &org.admin,
        &["admin", "device", "add", "bob", "--json", "--no-qr"],
        &[],
    );
    assert!(message(&refused).contains("disabled"), "{refused}");

    // Unlocked: enabled again with a new code, which enrols a new device.
    slapd.unlock(&bob_dn);
    let unlocked = sync(&org, &[]);
    assert_eq!(unlocked["enable"], serde_json::json!(["bob"]), "{unlocked:#}");
    enroll(
        &org.profile("bob-laptop"),
        &code_for(&unlocked, "bob"),
        "bob-laptop",
    );
    json_ok(&org.profile("bob-laptop"), &["whoami", "--json"], &[]);

    // Hostile entries are skipped with a reason; the rest of the sync goes on.
    slapd.add_ldif(&slapd::openldap_users_ldif(
        slapd.base_dn(),
        &[
            DirUser::new("evil*)(uid=*", "Evil", "evil@corp.test"),
            DirUser::new("back\\slash", "Back Slash", ""),
            DirUser::new("carol", "Carol", "carol@corp.test"),
        ],
    ));
    let hostile = sync(&org, &[]);
    assert_eq!(
        names(&hostile["create"], "user"),
        BTreeSet::from(["carol".to_owned()])
    );
    let skipped = hostile["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2, "{hostile:#}");
    assert!(skipped.iter().all(|s| {
        s["reason"]
            .as_str()
            .unwrap()
            .contains("cannot be a Redoubt user name")
    }));

    // The directory stopped: a clear error, recorded, and nobody disabled.
    let users_before = org.admin(&["admin", "user", "list", "--json"]);
    slapd.stop();
    let failed = json_error(&org.admin, &["admin", "directory", "sync", "--json"], &[]);
    assert!(
        message(&failed).contains("directory could not be read"),
        "{failed}"
    );
    let shown = org.admin(&["admin", "directory", "show", "--json"]);
    assert!(
        shown["last_sync"]["error"]
            .as_str()
            .unwrap()
            .contains("could not be read"),
        "{shown:#}"
    );
    assert_eq!(org.admin(&["admin", "user", "list", "--json"]), users_before);
    slapd.start_again();

    // A search that returns nothing is refused by the disable guard; nothing changes.
    set_directory(
        &org,
        &slapd,
        "openldap",
        &["--user-filter", "(uid=nobody-has-this-uid)"],
    );
    let empty = sync(&org, &[]);
    assert_eq!(empty["applied"], false, "{empty:#}");
    assert!(
        empty["refused"].as_str().unwrap().contains("no user"),
        "{empty:#}"
    );
    assert_eq!(org.admin(&["admin", "user", "list", "--json"]), users_before);
    let audit = org.admin(&["admin", "audit", "list", "--json"]);
    let actions: BTreeSet<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    for action in [
        "directory.set",
        "directory.user.create",
        "directory.user.disable",
        "directory.user.enable",
    ] {
        assert!(actions.contains(action), "{action} audited: {actions:?}");
    }
}

#[test]
fn active_directory_entries_sync_with_the_ad_preset() {
    let root = tempfile::tempdir().unwrap();
    let slapd = Slapd::start();
    let mut people: Vec<DirUser> = (0..10)
        .map(|i| {
            DirUser::new(
                &format!("Staff.{i}"),
                &format!("Staff Member {i}"),
                &format!("staff{i}@corp.test"),
            )
        })
        .map(|u| u.in_groups(&["Sales Team"]))
        .collect();
    people[9] = people[9].clone().locked();
    slapd.add_ldif(&slapd::ad_users_ldif(slapd.base_dn(), &people));
    slapd.add_ldif(&slapd::ad_groups_ldif(slapd.base_dn(), &people, &[]));
    let org = Org::start(root.path(), "127.0.0.1:0", &[]);
    // A computer account is a `user` too; the preset's filter leaves it out.
    slapd.add_ldif(&format!(
        "dn: cn=WS01,{}\nobjectClass: computer\ncn: WS01\nsn: WS01\nsAMAccountName: WS01$\nuserAccountControl: 4096\n",
        slapd.people_dn()
    ));
    let filter = ["--disable-max-percent", "20"];
    set_directory(&org, &slapd, "active-directory", &filter);
    // Someone was typed in by hand before the directory was connected.
    org.admin(&["admin", "user", "add", "staff.1", "--json", "--no-qr"]);
    let report = sync(&org, &[]);
    let created = names(&report["create"], "user");
    assert_eq!(
        created.len(),
        8,
        "a disabled account (userAccountControl 514) is not created: {report:#}"
    );
    let skipped = report["skipped"].as_array().unwrap();
    assert_eq!(
        skipped.len(),
        1,
        "the computer account is not even read: {report:#}"
    );
    assert!(
        skipped[0]["reason"].as_str().unwrap().contains("made by hand"),
        "{report:#}"
    );
    // Adopted on request: linked, no new user, and from now on the directory owns it.
    let adopted = sync(&org, &["--adopt"]);
    assert_eq!(
        adopted["adopt_users"],
        serde_json::json!(["staff.1"]),
        "{adopted:#}"
    );
    assert!(adopted["create"].as_array().unwrap().is_empty(), "{adopted:#}");
    let memberships = adopted["memberships"].as_array().unwrap();
    assert!(memberships.iter().any(|m| m["user"] == "staff.1"), "{adopted:#}");
    assert!(
        created.contains("staff.0"),
        "sAMAccountName lower-cased: {created:?}"
    );
    assert_eq!(report["create_groups"], serde_json::json!(["sales-team"]));

    // Disabled in AD (bit 2 of userAccountControl): the user is disabled at the next sync.
    slapd.modify_ldif(&format!(
        "dn: {}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n",
        slapd::ad_user_dn(slapd.base_dn(), &people[0])
    ));
    let next = sync(&org, &[]);
    assert_eq!(
        names(&next["disable"], "user"),
        BTreeSet::from(["staff.0".to_owned()]),
        "{next:#}"
    );
}

#[test]
fn a_new_directory_user_gets_their_code_by_mail_and_enrols_with_it() {
    let root = tempfile::tempdir().unwrap();
    let peers = peers::MailPeers::start(&[("dana@corp.test", "dana-pw"), ("gina@corp.test", "gina-pw")]);
    let slapd = Slapd::start();
    let dana = DirUser::new("dana", "Dana Scully", "dana@corp.test");
    slapd.add_ldif(&slapd::openldap_users_ldif(slapd.base_dn(), &[dana]));
    let listen = format!("127.0.0.1:{}", support::free_port());
    let org = Org::start(root.path(), &listen, &[]);
    org.set_mail(
        peers.imap_port,
        peers.submission_port,
        &peers.master_user,
        &peers.master_password,
    );
    set_directory(&org, &slapd, "openldap", &["--email-codes"]);
    let report = sync(&org, &[]);
    assert_eq!(report["mailed"], serde_json::json!(["dana"]), "{report:#}");
    assert!(
        report["codes"].as_array().unwrap().is_empty(),
        "a mailed code is not printed"
    );

    let mail = peers
        .wait_for_mail(
            "dana@corp.test",
            "dana-pw",
            "INBOX",
            "activation code",
            std::time::Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("no activation mail: {}", peers.diagnostics()));
    let code = code_in_mail(&mail);
    let phone = org.profile("dana-phone");
    enroll(&phone, &code, "dana-phone");
    let who = json_ok(&phone, &["whoami", "--json"], &[]);
    assert_eq!(who["user"], "dana");

    // An identity provider provisions Gina through SCIM; with SCIM codes by mail on, her
    // code arrives too.
    org.admin(&["admin", "scim", "set", "--email-codes", "on", "--json"]);
    let shown = org.admin(&["admin", "directory", "show", "--json"]);
    assert_eq!(shown["scim_email_codes"], true);
    let token = org.admin(&["admin", "scim", "token", "create", "idp", "--json"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let gina = r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"gina@corp.test","displayName":"Gina Example","emails":[{"value":"gina@corp.test","type":"work","primary":true}],"active":true}"#;
    let ca = org.data.join("tls").join("cert.pem");
    let (status, body) = scim_request(
        &ca,
        &format!("https://{listen}/scim/v2/Users"),
        "POST",
        gina,
        &token,
    );
    assert_eq!(status, 201, "{body}");
    let mail = peers
        .wait_for_mail(
            "gina@corp.test",
            "gina-pw",
            "INBOX",
            "activation code",
            std::time::Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("no activation mail for gina: {}", peers.diagnostics()));
    let laptop = org.profile("gina-laptop");
    enroll(&laptop, &code_in_mail(&mail), "gina-laptop");
    assert_eq!(json_ok(&laptop, &["whoami", "--json"], &[])["user"], "gina");
}

/// The SCIM compliance tool scim2-tester (PyPI, installed by `.ci/install-scim-tester`)
/// against the real server over HTTPS: every check passes; then a provider's
/// `active: false` revokes a user's device, and a revoked token changes nothing.
#[test]
fn scim_provisioning_passes_scim2_tester_and_deactivation_revokes_devices() {
    let venv = std::env::var("REDOUBT_SCIM_VENV").unwrap_or_else(|_| "/opt/redoubt-scim-venv".into());
    let python = format!("{venv}/bin/python");
    assert!(Path::new(&python).exists(), "run .ci/install-scim-tester first");
    let root = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let org = Org::start(root.path(), &listen, &[]);
    let created = org.admin(&["admin", "scim", "token", "create", "idp", "--json"]);
    let token = created["token"].as_str().unwrap().to_owned();
    let base = format!("https://{listen}/scim/v2");
    let ca = org.data.join("tls").join("cert.pem");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scim_tester.py");
    let out = std::process::Command::new(&python)
        .args([script, &base, &token, ca.to_str().unwrap()])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scim2-tester: {printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("failures=0"), "{printed}");
    let listed = org.admin(&["admin", "scim", "token", "list", "--json"]);
    assert_eq!(listed[0]["name"], "idp");

    // A provider creates Erin; her device enrols with a code the admin issues; the provider
    // deactivates her: her device is revoked.
    let request = |method: &str, path: &str, body: &str, bearer: &str| {
        scim_request(&ca, &format!("{base}{path}"), method, body, bearer)
    };
    let erin = r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"Erin@corp.test","displayName":"Erin Example","active":true}"#;
    let (status, body) = request("POST", "/Users", erin, &token);
    assert_eq!(status, 201, "{body}");
    let issued = org.admin(&["admin", "device", "add", "erin", "--json", "--no-qr"]);
    let phone = org.profile("erin-phone");
    enroll(&phone, issued["code"].as_str().unwrap(), "erin-phone");
    let deactivate = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}"#;
    // A bad token is refused and changes nothing.
    let (status, _) = request("PATCH", "/Users/erin", deactivate, "rdscim_not-a-token");
    assert_eq!(status, 401);
    json_ok(&phone, &["whoami", "--json"], &[]);
    let (status, body) = request("PATCH", "/Users/erin", deactivate, &token);
    assert_eq!(status, 200, "{body}");
    let refused = json_error(&phone, &["whoami", "--json"], &[]);
    assert!(message(&refused).contains("revoked"), "{refused}");
    // A revoked token is refused.
    org.admin(&["admin", "scim", "token", "revoke", "idp", "--json"]);
    let (status, _) = request("GET", "/Users", "", &token);
    assert_eq!(status, 401);
}

/// Entries whose user name holds NUL, bytes that are not UTF-8, filter syntax, or 10,000
/// values; a group of 10,000 members; a referral that points at itself. Each bad entry is
/// skipped with its reason while the good ones sync; a base DN that is a referral fails the
/// whole sync with a clear error and changes nothing.
#[test]
fn hostile_directory_data_is_skipped_or_refused_and_nothing_is_half_applied() {
    let root = tempfile::tempdir().unwrap();
    let slapd = Slapd::start();
    let people = slapd.people_dn();
    let entry = |cn: &str, raw: &[&[u8]]| {
        let mut ldif = format!(
            "dn: cn={cn},{people}\nobjectClass: inetOrgPerson\nobjectClass: redoubtRaw\ncn: {cn}\nsn: {cn}\n"
        );
        for value in raw {
            slapd::ldif_line(&mut ldif, "redoubtRawName", value);
        }
        ldif
    };
    let many: Vec<Vec<u8>> = (0..10_000).map(|i| format!("m{i:05}").into_bytes()).collect();
    let many: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
    let ldif = [
        entry("good1", &[b"good1"]),
        entry("good2", &[b"good2"]),
        entry("nul", &[b"nul\0user"]),
        entry("binary", &[&[0xff, 0xfe, b'x']]),
        entry("wild", &[b"a*)(uid=*\\"]),
        entry("many", &many),
    ]
    .join("\n");
    slapd.add_ldif(&ldif);
    let mut group = format!(
        "dn: cn=big,{}\nobjectClass: groupOfNames\ncn: big\nmember: cn=good1,{people}\n",
        slapd.groups_dn()
    );
    for i in 0..10_000 {
        group.push_str(&format!("member: cn=nobody{i:05},{people}\n"));
    }
    slapd.add_ldif(&group);
    let base = slapd.base_dn();
    let loop_url = format!("{}/ou=loop,{base}", slapd.ldap_url());
    slapd.add_ldif_manage_dsa_it(&format!(
        "dn: ou=loop,{base}\nobjectClass: referral\nobjectClass: extensibleObject\nou: loop\nref: {loop_url}\n"
    ));

    let org = Org::start(root.path(), "127.0.0.1:0", &[]);
    set_directory(&org, &slapd, "openldap", &["--username-attr", "redoubtRawName"]);
    let report = sync(&org, &[]);
    assert_eq!(
        names(&report["create"], "user"),
        BTreeSet::from(["good1".to_owned(), "good2".to_owned()]),
        "{report:#}"
    );
    let reasons: Vec<String> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}: {}",
                s["entry"].as_str().unwrap(),
                s["reason"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:#?}");
    for (entry, reason) in [
        ("cn=nul", "control character"),
        ("cn=binary", "not UTF-8"),
        ("cn=wild", "cannot be a Redoubt user name"),
        ("cn=many", "10000 values"),
    ] {
        assert!(
            reasons.iter().any(|r| r.starts_with(entry) && r.contains(reason)),
            "{entry}: {reason} in {reasons:#?}"
        );
    }
    assert_eq!(
        report["memberships"],
        serde_json::json!([{ "group": "big", "user": "good1", "add": true }])
    );

    // Another entry, elsewhere in the tree, claiming good1's name does not take the user
    // over (entries are matched by their entryUUID): it is reported and nothing changes.
    slapd.add_ldif(&format!(
        "dn: cn=impostor,{}\nobjectClass: inetOrgPerson\nobjectClass: redoubtRaw\ncn: impostor\nsn: impostor\nmail: impostor@corp.test\nredoubtRawName: good1\n",
        slapd::SERVICES_DN
    ));
    let again = sync(&org, &[]);
    assert!(again["update"].as_array().unwrap().is_empty(), "{again:#}");
    let impostor = again["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["entry"].as_str().unwrap().starts_with("cn=impostor"))
        .unwrap_or_else(|| panic!("the impostor is reported: {again:#}"))
        .clone();
    assert!(
        impostor["reason"]
            .as_str()
            .unwrap()
            .contains("belongs to another directory entry")
    );

    // A base DN that is itself a referral (to itself): not followed, a clear error, and
    // nothing changes.
    let before = org.admin(&["admin", "user", "list", "--json"]);
    let loop_dn = format!("ou=loop,{base}");
    set_directory(&org, &slapd, "openldap", &["--base-dn", &loop_dn]);
    let failed = json_error(&org.admin, &["admin", "directory", "sync", "--json"], &[]);
    assert!(message(&failed).contains("does not follow referrals"), "{failed}");
    assert_eq!(org.admin(&["admin", "user", "list", "--json"]), before);
}

/// LDAPS and StartTLS verify the directory's certificate: with the organisation's CA the
/// sync reads the directory, with the system's roots (which do not hold that CA) it fails
/// with a certificate error and changes nothing; a clear-text bind to another machine is
/// refused when the settings are saved.
#[test]
fn ldaps_and_starttls_verify_the_directory_certificate() {
    let root = tempfile::tempdir().unwrap();
    let slapd = Slapd::start();
    let people = [DirUser::new("erin", "Erin Example", "erin@corp.test")];
    slapd.add_ldif(&slapd::openldap_users_ldif(slapd.base_dn(), &people));
    let org = Org::start(root.path(), "127.0.0.1:0", &[]);
    let ca = slapd.ca_pem_path();
    let ca = ca.to_str().unwrap();
    let ldaps = slapd.ldaps_url();
    let ldap = slapd.ldap_url();

    set_directory(&org, &slapd, "openldap", &["--url", &ldaps]);
    let failed = json_error(&org.admin, &["admin", "directory", "sync", "--json"], &[]);
    assert!(
        message(&failed).to_lowercase().contains("certificate"),
        "{failed}"
    );
    assert!(!users(&org).contains("erin"));

    set_directory(&org, &slapd, "openldap", &["--url", &ldaps, "--ca-file", ca]);
    let report = sync(&org, &["--dry-run"]);
    assert_eq!(
        names(&report["create"], "user"),
        BTreeSet::from(["erin".to_owned()])
    );

    set_directory(
        &org,
        &slapd,
        "openldap",
        &["--url", &ldap, "--starttls", "--ca-file", ca],
    );
    let report = sync(&org, &[]);
    assert_eq!(
        names(&report["create"], "user"),
        BTreeSet::from(["erin".to_owned()])
    );

    let password = write(&org.root, "bind-password", "secret\n");
    let refused = json_error(
        &org.admin,
        &[
            "admin",
            "directory",
            "set",
            "--url",
            "ldap://dc1.corp.test",
            "--bind-dn",
            "cn=x",
            "--password-file",
            password.to_str().unwrap(),
            "--base-dn",
            "dc=corp,dc=test",
            "--json",
        ],
        &[],
    );
    assert!(message(&refused).contains("in the clear"), "{refused}");
}

/// With an interval, the server syncs by itself: the first scheduled sync comes within one
/// scheduler tick (20 s) of the settings, and `directory show` says it ran and when.
#[test]
fn scheduled_syncs_run_by_themselves() {
    let root = tempfile::tempdir().unwrap();
    let slapd = Slapd::start();
    let people = [DirUser::new("frank", "Frank Example", "frank@corp.test")];
    slapd.add_ldif(&slapd::openldap_users_ldif(slapd.base_dn(), &people));
    let org = Org::start(root.path(), "127.0.0.1:0", &[]);
    set_directory(&org, &slapd, "openldap", &["--interval", "1h"]);
    let shown = support::eventually("a scheduled sync", std::time::Duration::from_secs(60), || {
        let shown = org.admin(&["admin", "directory", "show", "--json"]);
        (shown["last_sync"]["trigger"] == "scheduled").then_some(shown)
    });
    assert_eq!(shown["settings"]["interval_s"], 3600);
    assert_eq!(shown["last_sync"]["created"], 1, "{shown:#}");
    // Nobody saw that sync's code: the status says so.
    assert_eq!(shown["last_sync"]["codes_undelivered"], 1, "{shown:#}");
    assert!(users(&org).contains("frank"));
}
