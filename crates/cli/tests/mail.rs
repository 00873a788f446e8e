#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Mail as a user with two devices handles it, against real Dovecot (IMAP, LMTP) and
//! Postfix (SMTP in, submission): the real `redoubt server` process with its connector,
//! the real `redoubt` binary on each device, and Python's smtplib/imaplib as the outside
//! world and as "another IMAP client".

mod peers;
mod support;

use std::path::Path;
use std::time::Duration;

use peers::MailPeers;
use serde_json::Value;
use support::{
    Org, ServerProcess, all_files, contains, eventually, free_port, json_error, json_ok,
    wait_until_listening, write,
};

const ALICE: &str = "alice@corp.test";
const ALICE_PW: &str = "alice-mailbox-pw";
const BOB: &str = "bob@corp.test";
const BOB_PW: &str = "bob-mailbox-pw";

/// Longest a device may take to see something the mail server has.
const PUSH_DEADLINE: Duration = Duration::from_secs(60);

/// `admin mail set` to the test peers' Dovecot and Postfix.
fn set_mail(org: &Org, peers: &MailPeers, imap_port: u16, password: &str) -> Value {
    org.set_mail(imap_port, peers.submission_port, &peers.master_user, password)
}

fn mail_show(org: &Org) -> Value {
    org.admin(&["admin", "mail", "show", "--json"])
}

fn mail_list(profile: &Path, folder: &str) -> Vec<Value> {
    json_ok(profile, &["mail", "list", "--folder", folder, "--json"], &[])
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the device lists a message whose subject contains `subject` in `folder`.
fn wait_for_mail_on(profile: &Path, folder: &str, subject: &str) -> Value {
    eventually(
        &format!("{subject:?} in {folder} on {}", profile.display()),
        PUSH_DEADLINE,
        || {
            mail_list(profile, folder)
                .into_iter()
                .find(|m| m["subject"].as_str().unwrap().contains(subject))
        },
    )
}

fn user_status(show: &Value, user: &str) -> Value {
    show["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user"] == user)
        .unwrap_or_else(|| panic!("no {user} in {show:#}"))["status"]
        .clone()
}

#[test]
fn mail_reaches_both_devices_and_replies_flags_moves_and_sends_reach_the_mail_server() {
    let root = tempfile::tempdir().unwrap();
    let peers = MailPeers::start(&[(ALICE, ALICE_PW), (BOB, BOB_PW)]);
    let org = Org::start(
        root.path(),
        "127.0.0.1:0",
        &[
            ("alice", "alice-phone"),
            ("alice", "alice-laptop"),
            ("bob", "bob-laptop"),
        ],
    );
    let (phone, laptop) = (org.profile("alice-phone"), org.profile("alice-laptop"));
    set_mail(&org, &peers, peers.imap_port, &peers.master_password);

    // The connector sets up Alice's mailbox group: both her devices and the connector.
    let status = eventually("alice's mailbox to connect", PUSH_DEADLINE, || {
        let status = json_ok(&phone, &["mail", "status", "--json"], &[]);
        (status["ok"] == true).then_some(status)
    });
    assert_eq!(status["mailbox"], true, "{status:#}");
    let groups = json_ok(&phone, &["group", "list", "--json"], &[]);
    let mailbox = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["conversation"] == "mailbox")
        .unwrap_or_else(|| panic!("no mailbox group: {groups:#}"));
    assert_eq!(
        mailbox["users"],
        serde_json::json!(["alice", "mail-connector"]),
        "{mailbox:#}"
    );
    assert_eq!(
        mailbox["devices"], 3,
        "two devices of alice's and the connector: {mailbox:#}"
    );

    // 1. Mail from outside, with an attachment, reaches both devices.
    let secret_body = "The merger closes on Friday; codeword PELICAN-7731.";
    let attachment: Vec<u8> = b"quarter,revenue\nQ3,ZEBRA-99181\n".to_vec();
    let original_id = peers.send_mail(
        BOB,
        ALICE,
        "Quarterly numbers OSPREY-4410",
        secret_body,
        Some(("numbers.csv", &attachment)),
    );
    let on_phone = wait_for_mail_on(&phone, "INBOX", "OSPREY-4410");
    let on_laptop = wait_for_mail_on(&laptop, "INBOX", "OSPREY-4410");
    assert_eq!(on_phone["id"], on_laptop["id"]);
    assert_eq!(on_phone["seen"], false);
    assert!(on_phone["from"].as_str().unwrap().contains(BOB), "{on_phone:#}");
    assert_eq!(on_phone["attachments"][0]["name"], "numbers.csv", "{on_phone:#}");
    let id = on_phone["id"].as_str().unwrap().to_owned();

    let read = json_ok(&laptop, &["mail", "read", &id, "--json"], &[]);
    assert!(
        read["text"].as_str().unwrap().contains("PELICAN-7731"),
        "{read:#}"
    );
    let fetched = org.root.join("numbers.csv");
    json_ok(
        &laptop,
        &[
            "mail",
            "fetch",
            &id,
            "--attachment",
            "0",
            "--out",
            fetched.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(std::fs::read(&fetched).unwrap(), attachment);
    // Reading marked it seen on the server, and the other device hears of it.
    let seen = peers.imap_messages(ALICE, ALICE_PW, "INBOX");
    let seen = seen.iter().find(|m| m.subject.contains("OSPREY-4410")).unwrap();
    assert!(seen.flags.iter().any(|f| f == "\\Seen"), "{:?}", seen.flags);
    eventually("the phone to see the message read", PUSH_DEADLINE, || {
        let listed = wait_for_mail_on(&phone, "INBOX", "OSPREY-4410");
        (listed["seen"] == true).then_some(())
    });
    let found = json_ok(&phone, &["mail", "search", "pelican-7731", "--json"], &[]);
    assert_eq!(found.as_array().unwrap().len(), 1, "{found:#}");

    // Nothing of the subject, body or attachment is under the server's data folder.
    for (path, bytes) in all_files(&org.data) {
        for canary in ["OSPREY-4410", "PELICAN-7731", "ZEBRA-99181"] {
            assert!(
                !contains(&bytes, canary.as_bytes()),
                "{canary} found in {}",
                path.display()
            );
        }
    }

    // 2. Alice replies from her phone: Bob's mailbox has it, threaded; her Sent has a copy.
    json_ok(
        &phone,
        &["mail", "reply", &id, "--body", "Thanks, see you Friday", "--json"],
        &[],
    );
    let reply = peers
        .wait_for_mail(
            BOB,
            BOB_PW,
            "INBOX",
            "Re: Quarterly numbers OSPREY-4410",
            PUSH_DEADLINE,
        )
        .unwrap_or_else(|| panic!("no reply in bob's INBOX\n{}", peers.maillog()));
    assert_eq!(reply.in_reply_to.trim(), original_id.trim(), "{reply:?}");
    assert!(reply.references.contains(original_id.trim()), "{reply:?}");
    assert!(reply.body_text.contains("Thanks, see you Friday"), "{reply:?}");
    let sent = peers.imap_messages(ALICE, ALICE_PW, "Sent");
    assert!(
        sent.iter().any(|m| m.subject.contains("Re: Quarterly")),
        "{sent:?}"
    );
    let answered = peers.imap_messages(ALICE, ALICE_PW, "INBOX");
    assert!(
        answered
            .iter()
            .any(|m| m.subject.contains("OSPREY") && m.flags.iter().any(|f| f == "\\Answered")),
        "{answered:?}"
    );

    // A forward carries the original's attachment along.
    json_ok(
        &laptop,
        &["mail", "forward", &id, "--to", BOB, "--body", "FYI", "--json"],
        &[],
    );
    let forwarded = peers
        .wait_for_mail(
            BOB,
            BOB_PW,
            "INBOX",
            "Fwd: Quarterly numbers OSPREY-4410",
            PUSH_DEADLINE,
        )
        .unwrap_or_else(|| panic!("no forward in bob's INBOX\n{}", peers.maillog()));
    assert_eq!(forwarded.attachment_names, ["numbers.csv"], "{forwarded:?}");
    assert!(forwarded.body_text.contains("PELICAN-7731"), "{forwarded:?}");

    // A new message with an attachment, sent from the laptop.
    let plan = write(&org.root, "plan.txt", "step one, step two\n");
    json_ok(
        &laptop,
        &[
            "mail",
            "send",
            "--to",
            BOB,
            "--subject",
            "The plan HERON-5",
            "--body",
            "See attached.",
            "--attach",
            plan.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    let delivered = peers
        .wait_for_mail(BOB, BOB_PW, "INBOX", "The plan HERON-5", PUSH_DEADLINE)
        .unwrap_or_else(|| panic!("no plan in bob's INBOX\n{}", peers.maillog()));
    assert_eq!(delivered.attachment_names, ["plan.txt"], "{delivered:?}");

    // 3. Flags, moves and deletes: from a device to Dovecot, and from another client back.
    json_ok(&phone, &["mail", "flag", &id, "--flagged", "--json"], &[]);
    let flagged = peers.imap_messages(ALICE, ALICE_PW, "INBOX");
    assert!(
        flagged
            .iter()
            .any(|m| m.subject.contains("OSPREY") && m.flags.iter().any(|f| f == "\\Flagged")),
        "{flagged:?}"
    );
    assert_eq!(
        peers.imap_set_flags(ALICE, ALICE_PW, "INBOX", "OSPREY", "-FLAGS", "\\Flagged \\Seen"),
        1
    );
    eventually(
        "the laptop to see the flags another client changed",
        PUSH_DEADLINE,
        || {
            let listed = wait_for_mail_on(&laptop, "INBOX", "OSPREY-4410");
            (listed["flagged"] == false && listed["seen"] == false).then_some(())
        },
    );
    json_ok(&laptop, &["mail", "move", &id, "Archive", "--json"], &[]);
    assert!(
        peers
            .imap_messages(ALICE, ALICE_PW, "INBOX")
            .iter()
            .all(|m| !m.subject.contains("OSPREY"))
    );
    assert!(
        peers
            .imap_messages(ALICE, ALICE_PW, "Archive")
            .iter()
            .any(|m| m.subject.contains("OSPREY"))
    );
    let archived = wait_for_mail_on(&phone, "Archive", "OSPREY-4410");
    eventually(
        "the phone to drop the moved message from INBOX",
        PUSH_DEADLINE,
        || {
            mail_list(&phone, "INBOX")
                .iter()
                .all(|m| !m.subject_contains("OSPREY"))
                .then_some(())
        },
    );
    // Deleted by another IMAP client: gone from the devices.
    assert_eq!(peers.imap_delete(ALICE, ALICE_PW, "Archive", "OSPREY"), 1);
    eventually("the devices to drop the deleted message", PUSH_DEADLINE, || {
        (mail_list(&phone, "Archive").is_empty() && mail_list(&laptop, "Archive").is_empty()).then_some(())
    });
    let gone = json_error(
        &phone,
        &["mail", "read", archived["id"].as_str().unwrap(), "--json"],
        &[],
    );
    assert!(
        gone["message"].as_str().unwrap().contains("no message"),
        "{gone:#}"
    );
    // And a delete from a device.
    peers.send_mail(BOB, ALICE, "Lunch? KESTREL-2", "Noon?", None);
    let lunch = wait_for_mail_on(&laptop, "INBOX", "KESTREL-2");
    json_ok(
        &laptop,
        &["mail", "delete", lunch["id"].as_str().unwrap(), "--json"],
        &[],
    );
    assert!(
        peers
            .imap_messages(ALICE, ALICE_PW, "INBOX")
            .iter()
            .all(|m| !m.subject.contains("KESTREL"))
    );

    // A device enrolled later joins the mailbox and gets the mail already there.
    peers.send_mail(BOB, ALICE, "Before the tablet DOVE-8", "old news", None);
    wait_for_mail_on(&phone, "INBOX", "DOVE-8");
    let issued = json_ok(
        &org.admin,
        &["admin", "device", "add", "alice", "--json", "--no-qr"],
        &[],
    );
    let tablet = org.profile("alice-tablet");
    json_ok(
        &tablet,
        &[
            "enroll",
            issued["code"].as_str().unwrap(),
            "--name",
            "alice-tablet",
            "--json",
        ],
        &[],
    );
    json_ok(&tablet, &["group", "list", "--json"], &[]);
    wait_for_mail_on(&tablet, "INBOX", "DOVE-8");

    // A revoked device is removed from the mailbox group: it gets nothing more.
    json_ok(
        &org.admin,
        &["admin", "device", "revoke", "alice-laptop", "--json"],
        &[],
    );
    eventually("the laptop to leave the mailbox group", PUSH_DEADLINE, || {
        let groups = json_ok(&phone, &["group", "list", "--json"], &[]);
        let mailbox = groups
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["conversation"] == "mailbox")?
            .clone();
        (mailbox["devices"] == 3).then_some(())
    });
    peers.send_mail(
        BOB,
        ALICE,
        "After the revocation GANNET-1",
        "not for the laptop",
        None,
    );
    wait_for_mail_on(&tablet, "INBOX", "GANNET-1");

    let show = mail_show(&org);
    assert_eq!(user_status(&show, "alice")["ok"], true, "{show:#}");
    drop(org);
}

trait SubjectContains {
    fn subject_contains(&self, text: &str) -> bool;
}

impl SubjectContains for Value {
    fn subject_contains(&self, text: &str) -> bool {
        self["subject"].as_str().is_some_and(|s| s.contains(text))
    }
}

/// Waits until the connector reports on `user`'s mailbox with `ok`, and returns the detail.
fn wait_for_status(org: &Org, user: &str, ok: bool) -> String {
    eventually(&format!("{user}'s mailbox status ok={ok}"), PUSH_DEADLINE, || {
        let status = user_status(&mail_show(org), user);
        (status["ok"] == ok).then(|| status["detail"].as_str().unwrap().to_owned())
    })
}

#[test]
fn bad_settings_and_missing_mailboxes_give_clear_errors_and_the_rest_keeps_working() {
    let root = tempfile::tempdir().unwrap();
    let peers = MailPeers::start(&[(ALICE, ALICE_PW), (BOB, BOB_PW)]);
    let org = Org::start(
        root.path(),
        "127.0.0.1:0",
        &[
            ("alice", "alice-phone"),
            ("bob", "bob-laptop"),
            ("carol", "carol-phone"),
        ],
    );
    let (phone, bob, carol) = (
        org.profile("alice-phone"),
        org.profile("bob-laptop"),
        org.profile("carol-phone"),
    );

    // Refused before anything is stored: no TLS to a host that is not this machine.
    let password_file = write(&org.root, "pw", "x\n");
    let refused = json_error(
        &org.admin,
        &[
            "admin",
            "mail",
            "set",
            "--imap",
            "mail.example.org:143",
            "--smtp",
            "mail.example.org:587",
            "--security",
            "none",
            "--master-user",
            "m",
            "--master-password-file",
            password_file.to_str().unwrap(),
            "--domain",
            "corp.test",
            "--json",
        ],
        &[],
    );
    assert!(
        refused["message"].as_str().unwrap().contains("loopback"),
        "{refused:#}"
    );

    // An IMAP server that does not answer.
    set_mail(&org, &peers, free_port(), &peers.master_password);
    let detail = wait_for_status(&org, "alice", false);
    assert!(
        detail.contains("IMAP server") && detail.contains("refused"),
        "{detail}"
    );
    let on_device = eventually("the phone to hear the mailbox is down", PUSH_DEADLINE, || {
        let status = json_ok(&phone, &["mail", "status", "--json"], &[]);
        (status["ok"] == false).then_some(status)
    });
    assert!(
        on_device["detail"].as_str().unwrap().contains("refused"),
        "{on_device:#}"
    );
    let send = json_error(
        &phone,
        &[
            "mail",
            "send",
            "--to",
            BOB,
            "--subject",
            "x",
            "--body",
            "y",
            "--json",
        ],
        &[],
    );
    assert!(
        send["message"].as_str().unwrap().contains("unavailable"),
        "{send:#}"
    );

    // A wrong master password.
    set_mail(&org, &peers, peers.imap_port, "not-the-master-password");
    let detail = wait_for_status(&org, "alice", false);
    assert!(detail.contains("refused the service account"), "{detail}");

    // Good settings: alice and bob connect; carol has no mailbox on the mail server.
    set_mail(&org, &peers, peers.imap_port, &peers.master_password);
    wait_for_status(&org, "alice", true);
    wait_for_status(&org, "bob", true);
    let detail = wait_for_status(&org, "carol", false);
    assert!(detail.contains("carol@corp.test"), "{detail}");
    let carol_status = eventually("carol's device to hear why", PUSH_DEADLINE, || {
        let status = json_ok(&carol, &["mail", "status", "--json"], &[]);
        (status["ok"] == false).then_some(status)
    });
    assert!(
        carol_status["detail"]
            .as_str()
            .unwrap()
            .contains("no such mailbox"),
        "{carol_status:#}"
    );

    // Bob links his own mail login instead of the service account: a wrong password is
    // reported as his, the right one connects.
    let wrong = write(&org.root, "bob-wrong", "nope\n");
    json_ok(
        &bob,
        &[
            "mail",
            "link",
            "--login",
            BOB,
            "--password-file",
            wrong.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    let detail = wait_for_status(&org, "bob", false);
    assert!(detail.contains("bob's own login"), "{detail}");
    let right = write(&org.root, "bob-right", &format!("{BOB_PW}\n"));
    json_ok(
        &bob,
        &[
            "mail",
            "link",
            "--login",
            BOB,
            "--password-file",
            right.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    wait_for_status(&org, "bob", true);
    let show = mail_show(&org);
    let bob_row = show["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user"] == "bob")
        .unwrap();
    assert_eq!(bob_row["own_login"], true, "{show:#}");
    assert!(!show.to_string().contains(BOB_PW), "the password is never shown");

    // Meanwhile everything else works: mail for alice, and messaging between people.
    peers.send_mail(BOB, ALICE, "Still working WREN-3", "yes", None);
    wait_for_mail_on(&phone, "INBOX", "WREN-3");
    json_ok(&bob, &["send", "alice", "chat still works", "--json"], &[]);
    let read = json_ok(&phone, &["read", "bob", "--json"], &[]);
    assert!(read.to_string().contains("chat still works"), "{read:#}");
}

#[test]
fn mail_arriving_while_the_server_is_killed_reaches_the_device_exactly_once() {
    let root = tempfile::tempdir().unwrap();
    let peers = MailPeers::start(&[(ALICE, ALICE_PW)]);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut org = Org::start(root.path(), &listen, &[("alice", "alice-phone")]);
    let phone = org.profile("alice-phone");
    set_mail(&org, &peers, peers.imap_port, &peers.master_password);
    wait_for_status(&org, "alice", true);

    let subjects: Vec<String> = (0..24).map(|i| format!("Batch PUFFIN-{i:02}")).collect();
    for round in 0..3 {
        // Mail arrives while the server runs, and is SIGKILLed mid-way through.
        for subject in &subjects[round * 8..round * 8 + 6] {
            peers.send_mail(BOB, ALICE, subject, "arriving", None);
        }
        wait_for_mail_on(&phone, "INBOX", &subjects[round * 8]);
        org.server.take().unwrap().kill();
        // More arrives while it is down.
        for subject in &subjects[round * 8 + 6..round * 8 + 8] {
            peers.send_mail(BOB, ALICE, subject, "arriving", None);
        }
        org.server = Some(ServerProcess::start_on(&org.data, &listen));
        wait_until_listening(&listen);
    }
    let listed = eventually("all 24 messages on the phone", PUSH_DEADLINE * 2, || {
        let listed = mail_list(&phone, "INBOX");
        (listed.len() >= subjects.len()).then_some(listed)
    });
    let mut seen: Vec<String> = listed
        .iter()
        .map(|m| m["subject"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, subjects, "every message exactly once");
    let log = org.server.as_ref().unwrap().log();
    assert!(!log.contains("panicked"), "{log}");
}
