#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! `redoubt web` as its users see it: a real server on 127.0.0.1, real devices, a
//! `redoubt web` process on each browser user's profile, and one Node script
//! (`tests/web/e2e.mjs`) driving Debian's Chromium with playwright-core by the accessible
//! names docs/web.md lists. Alice and Bob chat live in two pages with Carol on the command
//! line, send a file, Alice answers a mail (real Dovecot and Postfix); the admin adds a user,
//! locks and wipes a device and changes the policy; a helpdesk and an auditor see only their
//! parts. The guard's rules (cookie, Host, Origin, headers) are checked with plain HTTP.
//! Afterwards this test checks what the server, the mail server and the CLI devices say.
//!
//! Needs `.ci/install-browser` (Chromium, playwright-core) and `.ci/install-mail-peers`.
//! Screenshots of every main screen go to `target/web-screenshots/`.

mod peers;
mod support;

#[allow(clippy::duplicate_mod)] // peers includes it too: the shared code is the file
#[path = "support/processes.rs"]
mod processes;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use peers::MailPeers;
use serde_json::{Value, json};
use support::{BIN, Org, device_row, eventually, json_error, json_ok, message, run};

const ALICE_MAIL: &str = "alice@corp.test";
const ALICE_PW: &str = "alice-mailbox-pw";
const BOB_MAIL: &str = "bob@corp.test";
const BOB_PW: &str = "bob-mailbox-pw";

const GROUP: &str = "ops";
const ALICE_TEXT: &str = "Morning! Stand-up at ten (from alice's browser)";
const BOB_TEXT: &str = "On my way, from bob's browser";
const CAROL_TEXT: &str = "Carol here, on the command line";
const MAIL_SUBJECT: &str = "Budget review GANNET-4471";
const MAIL_WORD: &str = "CORMORANT-9902";
const MAIL_REPLY: &str = "Thanks, I will bring the numbers. TERN-3318";
const NEW_USER: &str = "erin";
const NEW_DEVICE: &str = "erin-phone";
const FORGED_USER: &str = "mallory";
const POLICY: &str = "message_retention_days = 45\n";
const BAD_POLICY: &str = "message_retention_days = 45\ncolour = \"red\"\n";

/// The screens of which the script takes a screenshot (`NAME.png`), at least.
const MAIN_SCREENS: [&str; 10] = [
    "chats",
    "mail",
    "calendar",
    "contacts",
    "devices",
    "console-dashboard",
    "console-users",
    "console-devices",
    "console-policies",
    "console-audit",
];

const PLAYWRIGHT_DIR: &str = "/opt/redoubt-playwright";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole browser script; the script gives up by itself a little earlier.
const BROWSER_DEADLINE: Duration = Duration::from_secs(300);
/// Longest the mail server may take to see what a device sent.
const MAIL_DEADLINE: Duration = Duration::from_secs(60);
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[test]
fn users_chat_mail_and_administer_through_the_browser() {
    let began = Instant::now();
    let browser = browser_tools();
    let root = tempfile::tempdir().unwrap();
    let peers = browser
        .is_some()
        .then(|| MailPeers::start(&[(ALICE_MAIL, ALICE_PW), (BOB_MAIL, BOB_PW)]));
    let org = Org::start(
        root.path(),
        "127.0.0.1:0",
        &[
            ("alice", "alice-laptop"),
            ("bob", "bob-laptop"),
            ("carol", "carol-cli"),
            ("helpdesk", "helpdesk-laptop"),
            ("auditor", "auditor-laptop"),
        ],
    );
    org.admin(&["admin", "role", "grant", "helpdesk", "helpdesk", "--json"]);
    org.admin(&["admin", "role", "grant", "auditor", "auditor", "--json"]);
    refuses_to_listen_beyond_loopback(&org.profile("carol-cli"));
    if let Some(peers) = &peers {
        // Before alice's web process holds her profile: the connector makes her mailbox.
        org.set_mail(
            peers.imap_port,
            peers.submission_port,
            &peers.master_user,
            &peers.master_password,
        );
        eventually("alice's mailbox to connect", MAIL_DEADLINE, || {
            let status = json_ok(&org.profile("alice-laptop"), &["mail", "status", "--json"], &[]);
            (status["ok"] == true).then_some(())
        });
    }

    let webs: Vec<WebProcess> = [
        "alice-laptop",
        "bob-laptop",
        "admin",
        "helpdesk-laptop",
        "auditor-laptop",
    ]
    .iter()
    .map(|name| WebProcess::start(&org.profile(name), &root.path().join(format!("web-{name}.log"))))
    .collect();
    let [alice, bob, admin, helpdesk, auditor] = &webs[..] else {
        unreachable!()
    };
    let auditor_cookie = guard_refuses_what_it_should(auditor);
    println!("guard checks passed after {:.0?}", began.elapsed());

    let (Some(tools), Some(peers)) = (browser, peers) else {
        println!(
            "REDOUBT_SKIP_BROWSER=1 and no browser: the browser part of this test did NOT run \
             (install it with `bash .ci/install-browser`)"
        );
        return;
    };
    let original_id = peers.send_mail(
        BOB_MAIL,
        ALICE_MAIL,
        MAIL_SUBJECT,
        &format!("Can you bring the figures? Codeword {MAIL_WORD}."),
        None,
    );
    let upload = root.path().join("budget-2026.bin");
    std::fs::write(&upload, pseudo_random_bytes(300_000)).unwrap();
    let config = json!({
        "bin": BIN,
        "login": {
            "alice": alice.login_url, "bob": bob.login_url,
            "admin": admin.login_url, "helpdesk": helpdesk.login_url,
        },
        "auditor": { "base": auditor.base(), "cookie": auditor_cookie },
        "carol": org.profile("carol-cli"),
        "new_profile": org.profile(NEW_DEVICE),
        "new_user": NEW_USER, "new_device": NEW_DEVICE, "forged_user": FORGED_USER,
        "group": GROUP,
        "chat": { "alice": ALICE_TEXT, "bob": BOB_TEXT, "carol": CAROL_TEXT },
        "mail": { "subject": MAIL_SUBJECT, "word": MAIL_WORD, "reply": MAIL_REPLY },
        "policy": { "good": POLICY, "bad": BAD_POLICY, "bad_name": "colour" },
        "upload": upload,
        "work": root.path(),
        "screenshots": screenshot_dir(),
        "results": root.path().join("results.json"),
    });
    run_browser(&tools, &config, &webs);
    let results: Value =
        serde_json::from_slice(&std::fs::read(root.path().join("results.json")).unwrap()).unwrap();
    println!("browser part passed after {:.0?}", began.elapsed());

    // The profiles are the web processes' until they stop; Ctrl-C stops each cleanly.
    for web in webs {
        web.interrupt();
    }
    the_chat_reached_the_cli_device(&org, &upload, &results);
    the_reply_reached_the_mail_server(&peers, &original_id);
    the_console_changed_the_organisation(&org, &results);
    let shots: Vec<&str> = results["screenshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for screen in MAIN_SCREENS {
        assert!(
            shots.iter().any(|p| p.ends_with(&format!("/{screen}.png"))),
            "no screenshot of {screen}: {shots:?}"
        );
    }
    for path in shots {
        let png = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "{path} is not a PNG");
        println!("screenshot: {path}");
    }
    println!("passed in {:.0?}", began.elapsed());
}

/// Node, Chromium and playwright-core, or `None` when they are missing and
/// REDOUBT_SKIP_BROWSER=1 says to go on without them.
struct BrowserTools {
    node: PathBuf,
}

fn browser_tools() -> Option<BrowserTools> {
    let node = processes::find_tool("node");
    let missing: Vec<&str> = [
        (node.is_none(), "node"),
        (!Path::new(CHROMIUM).is_file(), CHROMIUM),
        (
            !Path::new(PLAYWRIGHT_DIR)
                .join("node_modules/playwright-core/package.json")
                .is_file(),
            "playwright-core in /opt/redoubt-playwright",
        ),
    ]
    .into_iter()
    .filter_map(|(absent, what)| absent.then_some(what))
    .collect();
    if missing.is_empty() {
        return Some(BrowserTools { node: node.unwrap() });
    }
    assert!(
        std::env::var("REDOUBT_SKIP_BROWSER").as_deref() == Ok("1"),
        "missing {}: run `bash .ci/install-browser` (or set REDOUBT_SKIP_BROWSER=1 to run only \
         the plain-HTTP part of this test)",
        missing.join(", ")
    );
    None
}

/// Where the screenshots go: `target/web-screenshots/`, emptied first.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("web-screenshots");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs e2e.mjs; panics with its output (the failed step, expected and got) unless it passed.
fn run_browser(tools: &BrowserTools, config: &Value, webs: &[WebProcess]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/e2e.mjs");
    let mut command = Command::new(&tools.node);
    command
        .arg(&script)
        .env("REDOUBT_E2E", config.to_string())
        .env("REDOUBT_PLAYWRIGHT_DIR", PLAYWRIGHT_DIR)
        .env("REDOUBT_CHROMIUM", CHROMIUM);
    let finished = processes::run_piped(&mut command, b"", BROWSER_DEADLINE).unwrap();
    println!("{}", String::from_utf8_lossy(&finished.stdout));
    let passed = finished.status.is_some_and(|s| s.success());
    if !passed {
        let logs: Vec<String> = webs
            .iter()
            .map(|w| format!("--- {}:\n{}", w.log.display(), processes::log_tail(&w.log, 30)))
            .collect();
        panic!(
            "the browser script {} after {:.0?} ({:?}):\n{}\n{}",
            if finished.status.is_none() {
                "was killed at its deadline"
            } else {
                "failed"
            },
            finished.elapsed,
            finished.status,
            finished.stderr,
            logs.join("\n")
        );
    }
}

/// Carol's CLI device holds the three messages and the file, byte for byte; so does the
/// file Bob downloaded in his browser.
fn the_chat_reached_the_cli_device(org: &Org, upload: &Path, results: &Value) {
    let sent = std::fs::read(upload).unwrap();
    let downloaded = std::fs::read(results["download"].as_str().unwrap()).unwrap();
    assert!(
        downloaded == sent,
        "bob's download differs from the upload ({} vs {} bytes)",
        downloaded.len(),
        sent.len()
    );

    let carol = org.profile("carol-cli");
    let out = run(&carol, &["read", GROUP, "--json"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let texts: Vec<(&str, &str)> = lines
        .iter()
        .map(|m| {
            (
                m["sender"].as_str().unwrap(),
                m["text"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    for expected in [("alice", ALICE_TEXT), ("bob", BOB_TEXT), ("carol", CAROL_TEXT)] {
        assert!(
            texts.contains(&expected),
            "{expected:?} missing from carol's {GROUP}: {texts:?}"
        );
    }
    let file = lines
        .iter()
        .find(|m| m["attachment"]["name"] == "budget-2026.bin")
        .unwrap_or_else(|| panic!("no attachment in carol's {GROUP}: {lines:#?}"));
    assert_eq!(file["sender"], "alice");
    assert_eq!(file["attachment"]["bytes"], sent.len());
    let fetched = org.root.join("carol-budget-2026.bin");
    json_ok(
        &carol,
        &[
            "fetch",
            file["id"].as_str().unwrap(),
            "--out",
            fetched.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(
        std::fs::read(&fetched).unwrap() == sent,
        "carol's copy differs from the upload"
    );
}

/// Bob's mailbox has Alice's answer, threaded on his mail.
fn the_reply_reached_the_mail_server(peers: &MailPeers, original_id: &str) {
    let reply = peers
        .wait_for_mail(
            BOB_MAIL,
            BOB_PW,
            "INBOX",
            &format!("Re: {MAIL_SUBJECT}"),
            MAIL_DEADLINE,
        )
        .unwrap_or_else(|| panic!("no reply in bob's INBOX\n{}", peers.maillog()));
    assert!(reply.body_text.contains(MAIL_REPLY), "{reply:?}");
    assert_eq!(reply.in_reply_to.trim(), original_id.trim(), "{reply:?}");
}

/// What the admin did in the console, as the server and the devices see it.
fn the_console_changed_the_organisation(org: &Org, results: &Value) {
    // The added user exists; the auditor's forged one does not.
    let users = org.admin(&["admin", "user", "list", "--json"]);
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert!(names.contains(&NEW_USER), "{names:?}");
    assert!(
        !names.contains(&FORGED_USER),
        "the auditor's forged POST created {FORGED_USER}: {names:?}"
    );

    // The wiped device: its next connection carries out the wipe; nothing of it is left.
    let erin = org.profile(NEW_DEVICE);
    let wiped = json_error(&erin, &["whoami", "--json"], &[]);
    assert!(message(&wiped).contains("wiped by the organisation"), "{wiped}");
    let left = if erin.exists() {
        support::file_paths(&erin)
    } else {
        Vec::new()
    };
    assert!(left.is_empty(), "files left in the wiped profile: {left:?}");
    let devices = org.admin(&["admin", "device", "list", "--json"]);
    let row = device_row(&devices, NEW_DEVICE);
    let commands: Vec<(&str, &str)> = row["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["command"].as_str().unwrap(), c["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        commands,
        [("lock", "acknowledged"), ("wipe", "acknowledged")],
        "{row:#}"
    );
    assert!(row["revoked_at"].is_string(), "{row:#}");

    // The policy the console saved is in force; the browsers' devices took it while they ran
    // and the CLI device takes it on its next connection.
    let version = results["policy_version"].as_u64().unwrap();
    let report = org.admin(&["admin", "policy", "show", "--json"]);
    assert_eq!(report["version"].as_u64(), Some(version), "{report:#}");
    assert_eq!(
        report["documents"],
        json!([{ "scope": "default", "settings": { "message_retention_days": "45" } }])
    );
    let who = json_ok(&org.profile("carol-cli"), &["whoami", "--json"], &[]);
    assert_eq!(who["user"], "carol");
    let devices = org.admin(&["admin", "device", "list", "--json"]);
    for name in ["alice-laptop", "bob-laptop", "carol-cli"] {
        let acked = device_row(&devices, name)["policy_version_acked"].as_u64();
        assert_eq!(
            acked,
            Some(version),
            "{name} has not applied policy version {version}"
        );
    }

    // The audit log has it all, by the admin, and still verifies; refusals are not in it.
    let audit = org.admin(&["admin", "audit", "list", "--json"]);
    let entries = audit.as_array().unwrap();
    for action in [
        "user.add",
        "device.lock",
        "device.lock.acknowledged",
        "device.wipe",
        "device.wipe.acknowledged",
        "policy.set",
    ] {
        assert!(
            entries.iter().any(|e| e["action"] == action),
            "{action} missing from {audit:#}"
        );
    }
    let policy_sets = entries.iter().filter(|e| e["action"] == "policy.set").count();
    assert_eq!(policy_sets, 1, "the refused policy is not audited: {audit:#}");
    let verified = org.admin(&["admin", "audit", "verify", "--json"]);
    assert_eq!(verified["verified"], true, "{verified:#}");
}

/// `redoubt web --listen 0.0.0.0:0` must not start.
fn refuses_to_listen_beyond_loopback(profile: &Path) {
    let mut command = Command::new(BIN);
    command
        .arg("--profile")
        .arg(profile)
        .args(["web", "--listen", "0.0.0.0:0"]);
    let finished = processes::run_piped(&mut command, b"", Duration::from_secs(20)).unwrap();
    match finished.status {
        None => panic!(
            "redoubt web --listen 0.0.0.0:0 was still running after 20 s: {}",
            String::from_utf8_lossy(&finished.stdout)
        ),
        Some(status) => assert!(
            !status.success(),
            "redoubt web --listen 0.0.0.0:0 exited 0: {}",
            String::from_utf8_lossy(&finished.stdout)
        ),
    }
}

/// The guard's rules, by plain HTTP against the auditor's web process: the login URL works
/// once and sets a strict cookie; no cookie, a foreign Host or Origin, or a change without
/// an Origin is refused; every answer carries the security headers. Returns the cookie
/// (`name=value`), which the browser's auditor page then uses.
fn guard_refuses_what_it_should(web: &WebProcess) -> String {
    let port = web.port;
    let host = format!("127.0.0.1:{port}");
    let origin = format!("http://{host}");
    // Another loopback port: another local web app, not this one.
    let other_port = port.checked_add(1).unwrap_or(port - 1);
    let login_path = web.login_url.strip_prefix(&origin).unwrap();

    let login = http(port, "GET", login_path, &[("Host", &host)], "");
    assert!(matches!(login.status, 302 | 303 | 307), "GET /login: {login:?}");
    assert_eq!(login.header("location"), Some("/"), "{login:?}");
    let set_cookie = login
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no Set-Cookie: {login:?}"));
    let attributes: Vec<String> = set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    for wanted in ["httponly", "samesite=strict", "path=/"] {
        assert!(
            attributes.iter().any(|a| a == wanted),
            "Set-Cookie without {wanted}: {set_cookie}"
        );
    }
    let cookie = set_cookie.split(';').next().unwrap().trim().to_owned();
    let again = http(port, "GET", login_path, &[("Host", &host)], "");
    assert!(
        again.status >= 400 && again.header("set-cookie").is_none(),
        "the token works twice: {again:?}"
    );

    let me = |headers: &[(&str, &str)]| http(port, "GET", "/api/me", headers, "");
    let with_cookie = me(&[("Host", &host), ("Cookie", &cookie)]);
    assert_eq!(with_cookie.status, 200, "{with_cookie:?}");
    let who: Value = serde_json::from_str(&with_cookie.body).unwrap();
    assert_eq!(who["user"], "auditor", "{who:#}");
    assert_eq!(who["roles"], json!(["auditor"]), "{who:#}");
    for allowed in [format!("localhost:{port}"), format!("[::1]:{port}")] {
        let reply = me(&[("Host", &allowed), ("Cookie", &cookie)]);
        assert_eq!(reply.status, 200, "Host {allowed}: {reply:?}");
    }

    let no_cookie = me(&[("Host", &host)]);
    assert_api_error(&no_cookie, 401, "GET /api/me without the cookie");
    let page = http(port, "GET", "/", &[("Host", &host)], "");
    assert_eq!(page.status, 401, "GET / without the cookie: {page:?}");
    for foreign in [
        "rebind.example:80".to_owned(),
        format!("rebind.example:{port}"),
        format!("127.0.0.1:{other_port}"),
    ] {
        let reply = me(&[("Host", &foreign), ("Cookie", &cookie)]);
        assert_eq!(reply.status, 403, "Host {foreign}: {reply:?}");
    }
    let foreign_origin = me(&[
        ("Host", &host),
        ("Cookie", &cookie),
        ("Origin", "http://evil.example"),
    ]);
    assert_api_error(&foreign_origin, 403, "GET /api/me from another Origin");

    let activity = |headers: &[(&str, &str)]| http(port, "POST", "/api/activity", headers, "{}");
    let json_type = ("Content-Type", "application/json");
    let no_origin = activity(&[("Host", &host), ("Cookie", &cookie), json_type]);
    assert_api_error(&no_origin, 403, "POST /api/activity without an Origin");
    let other_origin = format!("http://127.0.0.1:{other_port}");
    let wrong_origin = activity(&[
        ("Host", &host),
        ("Cookie", &cookie),
        json_type,
        ("Origin", &other_origin),
    ]);
    assert_api_error(
        &wrong_origin,
        403,
        "POST /api/activity from another port's Origin",
    );
    let right_origin = activity(&[
        ("Host", &host),
        ("Cookie", &cookie),
        json_type,
        ("Origin", &origin),
    ]);
    assert_eq!(
        right_origin.status, 200,
        "POST /api/activity with its Origin: {right_origin:?}"
    );
    let forged = http(
        port,
        "POST",
        "/api/admin/users",
        &[
            ("Host", &host),
            ("Cookie", &cookie),
            json_type,
            ("Origin", &origin),
        ],
        &json!({ "user": FORGED_USER, "display_name": "Forged" }).to_string(),
    );
    assert_api_error(&forged, 403, "POST /api/admin/users as the auditor");

    let index = http(port, "GET", "/", &[("Host", &host), ("Cookie", &cookie)], "");
    assert_eq!(index.status, 200, "GET / with the cookie: {index:?}");
    assert!(
        index
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{index:?}"
    );
    for reply in [
        &login,
        &again,
        &with_cookie,
        &no_cookie,
        &page,
        &foreign_origin,
        &no_origin,
        &right_origin,
        &index,
    ] {
        assert_security_headers(reply);
    }
    cookie
}

fn assert_api_error(reply: &HttpReply, status: u16, what: &str) {
    assert_eq!(reply.status, status, "{what}: {reply:?}");
    let body: Value = serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{what}: {e}: {reply:?}"));
    assert!(
        body["error"]["code"].is_string() && body["error"]["message"].is_string(),
        "{what}: {reply:?}"
    );
    if status == 403 {
        assert_eq!(body["error"]["code"], "forbidden", "{what}: {reply:?}");
    }
}

fn assert_security_headers(reply: &HttpReply) {
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(
            reply.header(name),
            Some(value),
            "{name} on {} {}: {reply:?}",
            reply.status,
            reply.request
        );
    }
}

/// A `redoubt web` process on a profile, with the login URL it printed.
struct WebProcess {
    child: Child,
    login_url: String,
    port: u16,
    log: PathBuf,
}

impl WebProcess {
    /// Starts `redoubt --profile DIR web --listen 127.0.0.1:0` and reads the URL it prints
    /// first; its log (stderr) goes to `log`.
    fn start(profile: &Path, log: &Path) -> WebProcess {
        let log_file = std::fs::File::create(log).unwrap();
        let mut command = Command::new(BIN);
        command
            .arg("--profile")
            .arg(profile)
            .args(["web", "--listen", "127.0.0.1:0"])
            .env_remove("REDOUBT_PASSCODE")
            .env_remove("REDOUBT_PROFILE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        // REDOUBT_TEST_SERVER_LOG=filter turns the log up, as for the server.
        if let Ok(filter) = std::env::var("REDOUBT_TEST_SERVER_LOG") {
            command.env("RUST_LOG", filter);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (first_line, line) = mpsc::channel();
        // Reads the first line, then drains the rest so the process never blocks on a pipe.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = first_line.send(first);
            }
            lines.for_each(drop);
        });
        let url = line.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "redoubt web on {} printed no URL within 30 s; its log:\n{}",
                profile.display(),
                processes::read_lossy(log)
            )
        });
        let rest = url.strip_prefix("http://127.0.0.1:").unwrap_or_else(|| {
            panic!("redoubt web printed {url:?}, not http://127.0.0.1:PORT/login?token=…")
        });
        let (port, path) = rest.split_once('/').unwrap();
        let token = path
            .strip_prefix("login?token=")
            .unwrap_or_else(|| panic!("{url:?}"));
        assert!(
            token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
            "the token should be 32 bytes in hex: {url:?}"
        );
        WebProcess {
            child,
            port: port.parse().unwrap(),
            login_url: url,
            log: log.to_owned(),
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Ctrl-C (SIGINT): the process must stop cleanly within 15 s.
    fn interrupt(mut self) {
        processes::signal("INT", &[self.child.id()]);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "redoubt web exited with {status} on Ctrl-C: {}",
                    processes::log_tail(&self.log, 20)
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redoubt web did not stop within 15 s of Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WebProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct HttpReply {
    request: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection to 127.0.0.1:`port`, headers exactly as given
/// (Host too), and the whole answer.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> HttpReply {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path}: no complete answer: {e}"));
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { unchunk(body) } else { body.to_owned() };
    HttpReply {
        request: format!("{method} {path}"),
        status,
        headers,
        body,
    }
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Bytes no compressor or text filter passes through unchanged by accident (xorshift64).
fn pseudo_random_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
