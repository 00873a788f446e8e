#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! The test harness's own check: real Dovecot, Postfix and Radicale start, deliver, accept
//! authenticated submission and master-user logins, serve CalDAV/CardDAV, and leave nothing
//! behind when dropped.

mod peers;

use std::time::{Duration, Instant};

use peers::{MailPeers, Outgoing};

const ALICE: &str = "alice@corp.test";
const ALICE_PW: &str = "alice-pw";
const BOB: &str = "bob@corp.test";
const BOB_PW: &str = "bob-pw";
const WAIT: Duration = Duration::from_secs(15);

#[test]
fn mail_peers_deliver_submit_and_serve_master_logins() {
    let began = Instant::now();
    let peers = MailPeers::start(&[(ALICE, ALICE_PW), (BOB, BOB_PW)]);
    let started = began.elapsed();

    // Inbound SMTP with an attachment, read back by a real IMAP client.
    let report = b"%PDF-1.4\n% not really a PDF\n";
    let message_id = peers.send_mail(
        "Carol Outside <carol@example.org>",
        ALICE,
        "Quarterly report",
        "Numbers attached.",
        Some(("report.pdf", report)),
    );
    let got = peers
        .wait_for_mail(ALICE, ALICE_PW, "INBOX", "Quarterly report", WAIT)
        .unwrap_or_else(|| panic!("the report never reached alice's INBOX\n{}", peers.diagnostics()));
    assert_eq!(got.message_id, message_id);
    assert_eq!(got.attachment_names, vec!["report.pdf".to_owned()]);
    assert!(got.body_text.contains("Numbers attached."), "{got:?}");
    assert!(got.from.contains("carol@example.org"), "{got:?}");
    let inbox = peers.imap_messages(ALICE, ALICE_PW, "INBOX");
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert!(
        !inbox[0].flags.iter().any(|f| f == "\\Seen"),
        "listing marked it seen: {:?}",
        inbox[0].flags
    );

    // The master user sees alice's INBOX, by SASL PLAIN authzid and by `user*master` LOGIN.
    let as_master = peers.imap_messages_as_master(ALICE, "INBOX");
    assert_eq!(
        as_master.iter().map(|m| &m.subject).collect::<Vec<_>>(),
        vec!["Quarterly report"]
    );
    let login = peers.master_login_name(ALICE);
    assert_eq!(
        peers.imap_messages(&login, &peers.master_password, "INBOX").len(),
        1
    );
    assert!(
        !peers.imap_login_ok(ALICE, "wrong"),
        "a wrong password must not log in"
    );

    // Authenticated submission from bob, refused without the right password.
    let lunch = Outgoing {
        from: "Bob <bob@corp.test>",
        to: vec![ALICE],
        subject: "Lunch?",
        body: "Noon at the usual place.",
        in_reply_to: Some(&message_id),
        references: Some(&message_id),
        ..Outgoing::default()
    };
    let refused = peers.try_submit_message(BOB, "not-bobs", &lunch);
    assert!(refused.is_err(), "submission with a wrong password was accepted");
    let lunch_id = peers.submit_message(BOB, BOB_PW, &lunch);
    let got = peers
        .wait_for_mail(ALICE, ALICE_PW, "INBOX", "Lunch?", WAIT)
        .unwrap_or_else(|| panic!("bob's submission never arrived\n{}", peers.diagnostics()));
    assert_eq!(got.message_id, lunch_id);
    assert_eq!(got.in_reply_to, message_id);
    assert!(
        peers.maillog().contains("sasl_username=bob@corp.test"),
        "{}",
        peers.maillog()
    );

    // The special-use folders exist; another client flags, moves and deletes.
    let folders = peers.imap_folders(ALICE, ALICE_PW);
    for (name, flag) in [
        ("Sent", "\\Sent"),
        ("Drafts", "\\Drafts"),
        ("Trash", "\\Trash"),
        ("Archive", "\\Archive"),
    ] {
        let folder = folders.iter().find(|f| f.name == name);
        assert!(
            folder.is_some_and(|f| f.flags.iter().any(|x| x == flag)),
            "{name} {flag}: {folders:?}"
        );
    }
    assert_eq!(
        peers.imap_set_flags(ALICE, ALICE_PW, "INBOX", "Lunch?", "+FLAGS", "\\Seen"),
        1
    );
    assert_eq!(peers.imap_move(ALICE, ALICE_PW, "INBOX", "Lunch?", "Archive"), 1);
    let archive = peers.imap_messages(ALICE, ALICE_PW, "Archive");
    assert_eq!(archive.len(), 1, "{archive:?}");
    assert!(
        archive[0].flags.iter().any(|f| f == "\\Seen"),
        "{:?}",
        archive[0].flags
    );
    assert_eq!(peers.imap_delete(ALICE, ALICE_PW, "Archive", "Lunch?"), 1);
    assert!(peers.imap_messages(ALICE, ALICE_PW, "Archive").is_empty());
    assert_eq!(peers.imap_messages(ALICE, ALICE_PW, "INBOX").len(), 1);

    // Calendar (python caldav) and contacts (raw WebDAV) on Radicale.
    peers.dav_put_event(
        ALICE,
        ALICE_PW,
        "work",
        "ev-1",
        "Standup",
        "20300102T100000Z",
        "20300102T101500Z",
    );
    let events = peers.dav_list_events(ALICE, ALICE_PW, "work");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].uid.as_str(), events[0].summary.as_str()),
        ("ev-1", "Standup")
    );
    assert!(peers.dav_list_events(BOB, BOB_PW, "work").is_empty());
    peers.dav_put_contact(ALICE, ALICE_PW, "contacts", "c-1", "Bob Builder", BOB);
    let contacts = peers.dav_list_contacts(ALICE, ALICE_PW, "contacts");
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    assert_eq!(contacts[0].full_name, "Bob Builder");
    assert_eq!(contacts[0].emails, vec![BOB.to_owned()]);

    // Dropping stops everything and removes the directory.
    let dir = peers.dir.path().canonicalize().expect("the peers' dir");
    let stopping = Instant::now();
    drop(peers);
    let stopped = stopping.elapsed();
    let left = peers::processes_in(&dir);
    assert!(
        left.is_empty(),
        "processes left running in {}: {left:?}",
        dir.display()
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
    eprintln!(
        "mail peers: started in {started:?}, stopped in {stopped:?}, whole test {:?}",
        began.elapsed()
    );
}
