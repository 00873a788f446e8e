#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Calendar and contacts as a user with two devices handles them, against real Radicale
//! (CalDAV/CardDAV, reached by the connector as the service account) and Dovecot/Postfix
//! (the mailbox group needs mail set up): the real `redoubt server` process with its
//! connector, the real `redoubt` binary on each device, and Python's caldav client (and raw
//! WebDAV) as "another calendar client".

mod peers;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use peers::MailPeers;
use serde_json::{Value, json};
use support::{Org, all_files, json_error, json_ok, write};

const ALICE: &str = "alice@corp.test";
const ALICE_PW: &str = "alice-mailbox-pw";
const BOB: &str = "bob@corp.test";
/// The collections the connector keeps: `URL/<address>/calendar/` and `…/contacts/`.
const CALENDAR: &str = "calendar";
const CONTACTS: &str = "contacts";

/// Longest a device or the calendar server may take to see a change.
const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `check` until it returns `Some`, for at most [`DEADLINE`].
fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    support::eventually(what, DEADLINE, check)
}

fn list(profile: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.push("--json");
    json_ok(profile, &all, &[]).as_array().unwrap().clone()
}

fn events(profile: &Path) -> Vec<Value> {
    list(profile, &["calendar", "list"])
}

fn contacts(profile: &Path) -> Vec<Value> {
    list(profile, &["contacts", "list"])
}

fn with(items: &[Value], field: &str, text: &str) -> Option<Value> {
    items
        .iter()
        .find(|item| item[field].as_str().is_some_and(|v| v.contains(text)))
        .cloned()
}

/// Waits until `profile` lists an item whose `field` contains `text` (`present`) or none.
fn wait_on(profile: &Path, kind: &str, field: &str, text: &str, present: bool) -> Option<Value> {
    let what = format!(
        "{text:?} {} {kind} on {}",
        if present { "in" } else { "gone from" },
        profile.display()
    );
    eventually(&what, || {
        let items = list(profile, &[kind, "list"]);
        let found = with(&items, field, text);
        match (found, present) {
            (Some(item), true) => Some(Some(item)),
            (None, false) => Some(None),
            _ => None,
        }
    })
}

/// DELETE on Radicale as the user, by raw WebDAV (Python's http.client).
fn dav_delete(peers: &MailPeers, url: &str) {
    const SCRIPT: &str = r#"
import base64, http.client, json, sys, urllib.parse
r = json.load(sys.stdin)
u = urllib.parse.urlsplit(r['url'])
c = http.client.HTTPConnection('127.0.0.1', r['port'], timeout=20)
token = base64.b64encode(('%s:%s' % (r['user'], r['password'])).encode()).decode()
c.request('DELETE', u.path, headers={'Authorization': 'Basic ' + token})
print(c.getresponse().status)
"#;
    let request = json!({"url": url, "port": peers.dav_port, "user": ALICE, "password": ALICE_PW});
    let status = peers::run_python(SCRIPT, request.to_string().as_bytes(), Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("DELETE {url}: {e}\n{}", peers.diagnostics()));
    assert!(matches!(status.trim(), "200" | "204"), "DELETE {url}: {status}");
}

#[test]
fn events_and_contacts_travel_between_devices_and_the_calendar_server_both_ways() {
    let began = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let peers = MailPeers::start(&[(ALICE, ALICE_PW)]);
    let org = Org::start(
        root.path(),
        "127.0.0.1:0",
        &[("alice", "alice-phone"), ("alice", "alice-laptop")],
    );
    let (phone, laptop) = (org.profile("alice-phone"), org.profile("alice-laptop"));

    // Mail first: the connector sets up alice's mailbox group.
    org.set_mail(
        peers.imap_port,
        peers.submission_port,
        &peers.master_user,
        &peers.master_password,
    );
    eventually("alice's mailbox to connect", || {
        let status = json_ok(&phone, &["mail", "status", "--json"], &[]);
        (status["ok"] == true).then_some(())
    });

    // Without a calendar server, calendar commands get a clear answer.
    let refused = json_error(
        &phone,
        &[
            "calendar",
            "add",
            "--title",
            "x",
            "--start",
            "2030-01-01T00:00:00Z",
            "--json",
        ],
        &[],
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("no calendar server"),
        "{refused:#}"
    );

    let dav_url = peers.dav_url();
    let password_file = write(&org.root, "dav-password", &format!("{}\n", peers.master_password));
    let password_file = password_file.to_str().unwrap();
    org.admin(&[
        "admin",
        "dav",
        "set",
        "--url",
        &dav_url,
        "--user",
        &peers.master_user,
        "--password-file",
        password_file,
        "--json",
    ]);

    // 1. An event made on the phone reaches Radicale and the laptop.
    let added = json_ok(
        &phone,
        &[
            "calendar",
            "add",
            "--title",
            "Board meeting OSPREY-4410",
            "--start",
            "2030-01-02T10:00:00Z",
            "--end",
            "2030-01-02T11:30:00Z",
            "--location",
            "Room 7",
            "--attendee",
            BOB,
            "--json",
        ],
        &[],
    );
    assert_eq!(added["title"], "Board meeting OSPREY-4410", "{added:#}");
    assert_eq!(added["start_unix_s"], 1_893_578_400, "{added:#}");
    let board_id = added["id"].as_str().unwrap().to_owned();
    let on_server = peers.dav_list_events(ALICE, ALICE_PW, CALENDAR);
    let board = on_server
        .iter()
        .find(|e| e.summary == "Board meeting OSPREY-4410")
        .unwrap_or_else(|| panic!("not in Radicale: {on_server:#?}\n{}", peers.radicale_log()));
    assert_eq!(
        (board.dtstart.as_str(), board.dtend.as_str()),
        ("20300102T100000Z", "20300102T113000Z")
    );
    assert!(board.ics.contains("mailto:bob@corp.test"), "{}", board.ics);
    assert!(board.ics.contains("LOCATION:Room 7"), "{}", board.ics);
    let on_laptop = wait_on(&laptop, "calendar", "title", "OSPREY-4410", true).unwrap();
    assert_eq!(on_laptop["id"], board_id.as_str());
    assert_eq!(on_laptop["end_unix_s"], 1_893_578_400 + 90 * 60, "{on_laptop:#}");
    assert_eq!(on_laptop["location"], "Room 7");
    assert_eq!(on_laptop["attendees"], json!([BOB]));
    assert_eq!(on_laptop["start"], "2030-01-02T10:00:00Z");

    // 2. An event made through CalDAV reaches both devices.
    peers.dav_put_event(
        ALICE,
        ALICE_PW,
        CALENDAR,
        "dentist-1",
        "Dentist PELICAN-7731",
        "20300105T090000Z",
        "20300105T093000Z",
    );
    for device in [&phone, &laptop] {
        let dentist = wait_on(device, "calendar", "title", "PELICAN-7731", true).unwrap();
        assert_eq!(dentist["start_unix_s"], 1_893_834_000, "{dentist:#}");
        assert_eq!(dentist["end_unix_s"], 1_893_835_800, "{dentist:#}");
    }
    let later = list(&phone, &["calendar", "list", "--from", "2030-01-03"]);
    assert_eq!(later.len(), 1, "{later:#?}");
    assert_eq!(later[0]["title"], "Dentist PELICAN-7731");
    let earlier = list(
        &phone,
        &[
            "calendar",
            "list",
            "--from",
            "2030-01-02T11:00:00+01:00",
            "--to",
            "2030-01-03",
        ],
    );
    assert_eq!(earlier.len(), 1, "{earlier:#?}");
    assert_eq!(earlier[0]["id"], board_id.as_str());

    // 3. Deleted on a device: gone from Radicale and the other device.
    json_ok(&laptop, &["calendar", "delete", &board_id, "--json"], &[]);
    let left = peers.dav_list_events(ALICE, ALICE_PW, CALENDAR);
    assert!(left.iter().all(|e| !e.summary.contains("OSPREY")), "{left:#?}");
    assert_eq!(left.len(), 1, "{left:#?}");
    wait_on(&phone, "calendar", "title", "OSPREY-4410", false);
    let gone = json_error(&phone, &["calendar", "delete", &board_id, "--json"], &[]);
    assert!(gone["message"].as_str().unwrap().contains("no event"), "{gone:#}");

    // 4. Deleted in Radicale: gone from the devices.
    dav_delete(&peers, &left[0].href);
    for device in [&phone, &laptop] {
        wait_on(device, "calendar", "title", "PELICAN-7731", false);
    }
    assert!(events(&laptop).is_empty());

    // 5. Contacts: made on a device, reach Radicale and the other device.
    let carol = json_ok(
        &laptop,
        &[
            "contacts",
            "add",
            "--name",
            "Carol HERON-5",
            "--email",
            "carol@corp.test",
            "--phone",
            "+1 555 0100",
            "--json",
        ],
        &[],
    );
    assert_eq!(carol["name"], "Carol HERON-5", "{carol:#}");
    let cards = peers.dav_list_contacts(ALICE, ALICE_PW, CONTACTS);
    let card = cards
        .iter()
        .find(|c| c.full_name == "Carol HERON-5")
        .unwrap_or_else(|| panic!("not in Radicale: {cards:#?}"));
    assert_eq!(card.emails, vec!["carol@corp.test".to_owned()]);
    assert!(card.vcard.contains("+1 555 0100"), "{}", card.vcard);
    let on_phone = wait_on(&phone, "contacts", "name", "HERON-5", true).unwrap();
    assert_eq!(on_phone["id"], carol["id"]);
    assert_eq!(on_phone["emails"], json!(["carol@corp.test"]));
    assert_eq!(on_phone["phones"], json!(["+1 555 0100"]));

    // Made through CardDAV: reaches both devices.
    peers.dav_put_contact(
        ALICE,
        ALICE_PW,
        CONTACTS,
        "dave-1",
        "Dave KESTREL-2",
        "dave@corp.test",
    );
    for device in [&phone, &laptop] {
        let dave = wait_on(device, "contacts", "name", "KESTREL-2", true).unwrap();
        assert_eq!(dave["emails"], json!(["dave@corp.test"]));
    }
    let names: Vec<Value> = contacts(&phone).iter().map(|c| c["name"].clone()).collect();
    assert_eq!(names, vec![json!("Carol HERON-5"), json!("Dave KESTREL-2")]);

    // Deleted on a device: gone from Radicale and the other device.
    json_ok(
        &phone,
        &["contacts", "delete", carol["id"].as_str().unwrap(), "--json"],
        &[],
    );
    let cards = peers.dav_list_contacts(ALICE, ALICE_PW, CONTACTS);
    assert_eq!(
        cards.iter().map(|c| c.full_name.as_str()).collect::<Vec<_>>(),
        vec!["Dave KESTREL-2"]
    );
    wait_on(&laptop, "contacts", "name", "HERON-5", false);

    // Deleted in Radicale: gone from the devices.
    let dave_url = format!("http://127.0.0.1:{}{}", peers.dav_port, cards[0].href);
    dav_delete(&peers, &dave_url);
    for device in [&phone, &laptop] {
        wait_on(device, "contacts", "name", "KESTREL-2", false);
    }

    // The server keeps no event or contact content, nor logs any.
    let mut files = all_files(&org.data);
    let log = org.data.with_extension("log");
    files.push((log.clone(), std::fs::read(&log).unwrap_or_default()));
    for (path, bytes) in files {
        for canary in ["OSPREY-4410", "PELICAN-7731", "HERON-5", "KESTREL-2", "Room 7"] {
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "{canary} found in {}",
                path.display()
            );
        }
    }
    // Mail kept working beside it.
    let status = json_ok(&phone, &["mail", "status", "--json"], &[]);
    assert_eq!(status["mailbox"], true, "{status:#}");
    eprintln!("calendar and contacts round trip: {:?}", began.elapsed());
}
