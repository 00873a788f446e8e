#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! The test harness's own check: a real OpenLDAP slapd starts on loopback with its TLS,
//! size limit, access control, ppolicy locking and AD-style schema, survives a restart with
//! its data, and takes 10,000 users quickly.

mod slapd;

use std::time::Instant;

use slapd::{
    AD_DISABLED_FILTER, ADMIN_DN, ADMIN_PASSWORD, DirUser, GROUPS_DN, LOCKED_FOREVER, PEOPLE_DN, SERVICE_DN,
    SERVICE_PASSWORD, SIZE_LIMIT, Slapd,
};

const SERVICE: Option<(&str, &str)> = Some((SERVICE_DN, SERVICE_PASSWORD));

#[test]
fn slapd_serves_users_groups_limits_tls_and_locks() {
    let began = Instant::now();
    let mut ldap = Slapd::start();
    let started = began.elapsed();
    let base = ldap.base_dn();

    // 200 users in 5 groups, plus an empty group.
    let users: Vec<DirUser> = slapd::synthetic_users(200, 5);
    ldap.add_ldif(&slapd::openldap_users_ldif(base, &users));
    ldap.add_ldif(&slapd::groups_ldif(base, &users, &["nobody-yet"]));
    let people = ldap.search(
        PEOPLE_DN,
        "(objectClass=inetOrgPerson)",
        &["uid", "mail", "displayName"],
    );
    assert_eq!(people.len(), 200);
    let u7 = slapd::entry_with(&people, "uid", "user00007");
    assert_eq!(u7.dn, "uid=user00007,ou=people,dc=corp,dc=test");
    assert_eq!(u7.get("mail").as_deref(), Some("user00007@corp.test"));
    assert_eq!(u7.get("displayName").as_deref(), Some("User 00007"));
    let groups = ldap.search(GROUPS_DN, "(objectClass=groupOfNames)", &["cn", "member"]);
    assert_eq!(groups.len(), 6, "{groups:?}");
    let g2 = slapd::entry_with(&groups, "cn", "group002");
    assert_eq!(g2.values("member").len(), 40);
    assert!(
        g2.values("member")
            .contains(&"uid=user00007,ou=people,dc=corp,dc=test".to_owned())
    );
    let empty = slapd::entry_with(&groups, "cn", "nobody-yet");
    assert_eq!(
        empty.values("member"),
        vec![String::new()],
        "an empty group holds the empty DN"
    );

    // Over 500 entries: without the paged-results control the service account gets 500 and
    // sizeLimitExceeded, even when it asks for more; with it, everything. The root DN is
    // exempt.
    let more: Vec<DirUser> = (200..600)
        .map(|i| DirUser::new(&format!("user{i:05}"), &format!("User {i:05}"), ""))
        .collect();
    ldap.add_ldif(&slapd::openldap_users_ldif(base, &more));
    let filter = "(objectClass=inetOrgPerson)";
    let cut = ldap.search_as(SERVICE, PEOPLE_DN, filter, &["uid"], false);
    assert_eq!(
        (cut.code, cut.entries.len()),
        (Some(4), SIZE_LIMIT),
        "{}",
        cut.stderr
    );
    let url = ldap.ldap_url();
    let asked = ldap.search_with(SERVICE, &["-z", "1000"], PEOPLE_DN, filter, &["1.1"]);
    assert_eq!((asked.code, asked.entries.len()), (Some(4), SIZE_LIMIT));
    let paged = ldap.search_as(SERVICE, PEOPLE_DN, filter, &["uid"], true);
    assert_eq!(
        (paged.code, paged.entries.len()),
        (Some(0), 600),
        "{}",
        paged.stderr
    );
    let one_page = ldap.search_with(SERVICE, &["-E", "pr=1000/noprompt"], PEOPLE_DN, filter, &["1.1"]);
    assert_eq!(
        (one_page.code, one_page.entries.len()),
        (Some(0), 600),
        "pages of any size"
    );
    let admin = ldap.search_as(
        Some((ADMIN_DN, ADMIN_PASSWORD)),
        PEOPLE_DN,
        filter,
        &["1.1"],
        false,
    );
    assert_eq!((admin.code, admin.entries.len()), (Some(0), 600));
    let (count, took) = ldap.ldapsearch_count(base, filter);
    assert_eq!(count, 600);
    eprintln!("ldapsearch_count: {count} entries in {took:?}");

    // TLS: LDAPS and StartTLS verify against the throwaway CA, not against the system's.
    let ldaps = ldap.ldaps_url();
    let ca = ldap.ca_pem_path().display().to_string();
    let me = format!("dn:{SERVICE_DN}");
    assert_eq!(
        ldap.whoami(
            &ldaps,
            SERVICE_DN,
            SERVICE_PASSWORD,
            &[],
            &[("LDAPTLS_CACERT", &ca)]
        ),
        Ok(me.clone())
    );
    let localhost = format!("ldaps://localhost:{}", ldap.ldaps_port);
    assert_eq!(
        ldap.whoami(&localhost, SERVICE_DN, SERVICE_PASSWORD, &[], &[]),
        Ok(me.clone())
    );
    let system_ca = [("LDAPTLS_CACERT", "/etc/ssl/certs/ca-certificates.crt")];
    let refused = ldap.whoami(&ldaps, SERVICE_DN, SERVICE_PASSWORD, &[], &system_ca);
    assert!(
        refused.is_err(),
        "LDAPS verified against the system CAs: {refused:?}"
    );
    assert_eq!(
        ldap.whoami(&url, SERVICE_DN, SERVICE_PASSWORD, &["-ZZ"], &[]),
        Ok(me.clone())
    );
    assert!(
        ldap.whoami(&url, SERVICE_DN, SERVICE_PASSWORD, &["-ZZ"], &system_ca)
            .is_err()
    );
    let over_tls = ldap.search_with(SERVICE, &["-ZZ"], GROUPS_DN, "(cn=group001)", &["cn"]);
    assert_eq!(
        (over_tls.code, over_tls.entries.len()),
        (Some(0), 1),
        "{}",
        over_tls.stderr
    );
    assert!(ldap.whoami(&url, SERVICE_DN, "wrong", &[], &[]).is_err());

    // The service account reads (passwords too) but does not write.
    let alice = slapd::openldap_user_dn(base, "alice");
    ldap.add_ldif(&slapd::openldap_users_ldif(
        base,
        &[DirUser::new("alice", "Alice Liddell", "alice@corp.test")
            .in_groups(&["staff"])
            .with_password("alice-pw")],
    ));
    let read = ldap.search(&alice, "(objectClass=*)", &["userPassword", "sn"]);
    assert_eq!(read[0].get("userPassword").as_deref(), Some("alice-pw"));
    assert_eq!(read[0].get("sn").as_deref(), Some("Liddell"));
    let change = format!("dn: {alice}\nchangetype: modify\nreplace: sn\nsn: Hacked\n");
    let denied = ldap.try_modify_ldif_as(SERVICE_DN, SERVICE_PASSWORD, &change);
    assert!(
        denied.as_ref().is_err_and(|e| e.contains("Insufficient access")),
        "{denied:?}"
    );
    let denied = ldap.try_modify_ldif_as(&alice, "alice-pw", &change);
    assert!(denied.is_err(), "a user may not change her own sn: {denied:?}");

    // Locking with pwdAccountLockedTime (a plain modify by the root DN, no relax control).
    assert_eq!(
        ldap.whoami(&url, &alice, "alice-pw", &[], &[]),
        Ok(format!("dn:{alice}"))
    );
    ldap.lock(&alice);
    let locked = ldap.whoami(&url, &alice, "alice-pw", &[], &[]);
    assert!(locked.as_ref().is_err_and(|e| e.contains("49")), "{locked:?}");
    let attr = ldap.search_admin(&alice, "(objectClass=*)", &["pwdAccountLockedTime"]);
    assert_eq!(
        attr[0].get("pwdAccountLockedTime").as_deref(),
        Some(LOCKED_FOREVER)
    );
    ldap.unlock(&alice);
    assert!(ldap.whoami(&url, &alice, "alice-pw", &[], &[]).is_ok());
    // A user generated locked cannot bind; failed binds lock nobody (pwdMaxFailure 0).
    let bob = DirUser::new("bob", "Bob Locked", "")
        .with_password("bob-pw")
        .locked();
    ldap.add_ldif(&slapd::openldap_users_ldif(base, &[bob]));
    assert!(
        ldap.whoami(&url, &slapd::openldap_user_dn(base, "bob"), "bob-pw", &[], &[])
            .is_err()
    );
    for _ in 0..5 {
        assert!(ldap.whoami(&url, &alice, "wrong", &[], &[]).is_err());
    }
    assert!(ldap.whoami(&url, &alice, "alice-pw", &[], &[]).is_ok());

    // Referral objects go in with ManageDsaIT and come back as continuation references.
    ldap.add_ldif_manage_dsa_it(&format!(
        "dn: ou=elsewhere,{base}\nobjectClass: referral\nobjectClass: extensibleObject\nou: elsewhere\nref: ldap://ldap.other.test/ou=people,dc=other,dc=test\n"
    ));
    let refs = ldap.search_as(SERVICE, base, "(ou=*)", &["ou"], true);
    assert_eq!(refs.code, Some(0), "{}", refs.stderr);
    assert!(
        refs.references
            .iter()
            .any(|r| r.starts_with("ldap://ldap.other.test/")),
        "{refs:?}"
    );

    // Bytes that are not UTF-8: OctetString keeps them, directoryString refuses them.
    let raw = [0xff_u8, 0xfe, 0x00, 0x80, b'x'];
    let mut ldif =
        format!("dn: cn=raw,{PEOPLE_DN}\nobjectClass: person\nobjectClass: redoubtRaw\ncn: raw\nsn: raw\n");
    slapd::ldif_line(&mut ldif, "redoubtRawName", &raw);
    ldap.add_ldif(&ldif);
    let got = ldap.search(
        &format!("cn=raw,{PEOPLE_DN}"),
        "(objectClass=*)",
        &["redoubtRawName"],
    );
    assert_eq!(got[0].raw_values("redoubtRawName"), vec![raw.to_vec()]);
    let mut bad = format!("dn: cn=bad,{PEOPLE_DN}\nobjectClass: inetOrgPerson\ncn: bad\nsn: bad\n");
    slapd::ldif_line(&mut bad, "displayName", &raw);
    let refused = ldap.try_add_ldif(&bad);
    assert!(refused.as_ref().is_err_and(|e| e.contains("21")), "{refused:?}");

    // stop: both ports refuse connections; start_again: same ports, same data.
    let ports = (ldap.ldap_port, ldap.ldaps_port);
    ldap.stop();
    assert!(!slapd::accepts(ports.0) && !slapd::accepts(ports.1));
    assert!(ldap.whoami(&url, SERVICE_DN, SERVICE_PASSWORD, &[], &[]).is_err());
    let restart = Instant::now();
    ldap.start_again();
    let restarted = restart.elapsed();
    assert_eq!((ldap.ldap_port, ldap.ldaps_port), ports);
    assert_eq!(ldap.ldapsearch_count(PEOPLE_DN, filter).0, 602);
    assert!(ldap.whoami(&ldaps, &alice, "alice-pw", &[], &[]).is_ok());
    ldap.delete(&alice);
    assert_eq!(ldap.ldapsearch_count(PEOPLE_DN, "(uid=alice)").0, 0);
    eprintln!(
        "slapd: started in {started:?}, restarted in {restarted:?}, whole test {:?}",
        began.elapsed()
    );
}

#[test]
fn slapd_serves_active_directory_style_entries() {
    let ldap = Slapd::start();
    let base = ldap.base_dn();
    let users = vec![
        DirUser::new("alice", "Alice Liddell", "alice@corp.test")
            .in_groups(&["Staff", "Admins"])
            .with_password("alice-pw"),
        DirUser::new("bob", "Bob Stone", "bob@corp.test")
            .in_groups(&["Staff"])
            .with_password("bob-pw")
            .locked(),
        DirUser::new("carol", "Carol, Jr.", "carol@corp.test").in_groups(&["Staff"]),
    ];
    ldap.add_ldif(&slapd::ad_users_ldif(base, &users));
    ldap.add_ldif(&slapd::ad_groups_ldif(base, &users, &["Empty"]));

    // Found by sAMAccountName, case-insensitively, as AD does.
    let found = ldap.search(base, "(&(objectClass=user)(sAMAccountName=ALICE))", &["*"]);
    assert_eq!(found.len(), 1);
    let alice = &found[0];
    assert_eq!(alice.dn, "cn=Alice Liddell,ou=people,dc=corp,dc=test");
    assert_eq!(alice.get("userAccountControl").as_deref(), Some("512"));
    assert_eq!(alice.get("userPrincipalName").as_deref(), Some("alice@corp.test"));
    assert_eq!(
        alice.raw_values("objectGUID"),
        vec![slapd::ad_object_guid("alice").to_vec()]
    );
    assert!(alice.values("memberOf").is_empty());
    let carol = ldap.search(base, "(sAMAccountName=carol)", &["cn"]);
    // slapd writes DN specials back as hex escapes; the generators' DNs match that form.
    assert_eq!(carol[0].dn, r"cn=Carol\2C Jr.,ou=people,dc=corp,dc=test");
    assert_eq!(carol[0].dn, slapd::ad_user_dn(base, &users[2]));

    // The AD preset's disabled rule: slapd evaluates the bitwise-AND matching rule.
    let disabled = ldap.search(
        base,
        &format!("(&(objectClass=user){AD_DISABLED_FILTER})"),
        &["sAMAccountName"],
    );
    let names: Vec<String> = disabled.iter().filter_map(|e| e.get("sAMAccountName")).collect();
    assert_eq!(names, ["bob"]);
    let enabled = ldap.search(
        base,
        &format!("(&(objectClass=user)(!{AD_DISABLED_FILTER}))"),
        &["sAMAccountName"],
    );
    assert_eq!(enabled.len(), 2);
    let bit_or = ldap.search(base, "(userAccountControl:1.2.840.113556.1.4.804:=6)", &["1.1"]);
    assert_eq!(bit_or.len(), 1, "integerBitOrMatch");
    let url = ldap.ldap_url();
    let bob_dn = slapd::ad_user_dn(base, &users[1]);
    assert!(
        ldap.whoami(&url, &bob_dn, "bob-pw", &[], &[]).is_err(),
        "a disabled account cannot bind"
    );
    assert!(
        ldap.whoami(&url, &slapd::ad_user_dn(base, &users[0]), "alice-pw", &[], &[])
            .is_ok()
    );

    // Groups: member DNs are the users' AD DNs; an empty group has no member at all.
    let groups = ldap.search(
        GROUPS_DN,
        "(objectClass=group)",
        &["cn", "member", "sAMAccountName"],
    );
    assert_eq!(groups.len(), 3);
    let staff = slapd::entry_with(&groups, "sAMAccountName", "Staff");
    assert_eq!(staff.values("member").len(), 3);
    assert!(
        staff
            .values("member")
            .contains(&slapd::ad_user_dn(base, &users[2]))
    );
    let empty = slapd::entry_with(&groups, "cn", "Empty");
    assert!(empty.values("member").is_empty());
    let by_member = ldap.search(GROUPS_DN, &format!("(member={})", alice.dn), &["cn"]);
    assert_eq!(by_member.len(), 2);
}

#[test]
fn slapd_takes_ten_thousand_users() {
    let mut ldap = Slapd::start();
    let base = ldap.base_dn();
    let users = slapd::synthetic_users(10_000, 100);
    let t = Instant::now();
    let ldif = slapd::openldap_users_ldif(base, &users) + &slapd::groups_ldif(base, &users, &[]);
    let generated = t.elapsed();
    let t = Instant::now();
    ldap.add_ldif(&ldif);
    let added = t.elapsed();
    let (count, search) = ldap.ldapsearch_count(PEOPLE_DN, "(objectClass=inetOrgPerson)");
    assert_eq!(count, 10_000);
    assert_eq!(
        ldap.ldapsearch_count(GROUPS_DN, "(objectClass=groupOfNames)").0,
        100
    );

    // The same again offline (slapadd while stopped), AD-style, into the same database.
    let ad: Vec<DirUser> = slapd::synthetic_users(10_000, 100)
        .into_iter()
        .map(|mut u| {
            u.uid = format!("ad-{}", u.uid);
            u.display_name = format!("AD {}", u.display_name);
            u.groups = u.groups.iter().map(|g| format!("ad-{g}")).collect();
            u
        })
        .collect();
    let t = Instant::now();
    ldap.load_offline(&(slapd::ad_users_ldif(base, &ad) + &slapd::ad_groups_ldif(base, &ad, &[])));
    let offline = t.elapsed();
    assert_eq!(ldap.ldapsearch_count(PEOPLE_DN, "(objectClass=user)").0, 10_000);
    eprintln!(
        "10,000 users + 100 groups: LDIF generated in {generated:?}, ldapadd {added:?}, \
         paged ldapsearch of all users {search:?}; AD-style via load_offline (stop, slapadd -q, start) {offline:?}"
    );
}
