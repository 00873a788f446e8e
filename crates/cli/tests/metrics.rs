#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step must fail the test loudly
//! Operations: the Prometheus endpoint moves as a messaging run says it should, Prometheus's
//! own `promtool` accepts it, and the server's JSON log carries no message, file, code or
//! key (canaries grepped from a run at debug level).

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;
use support::{Org, json_error, json_ok};

/// A scrape, by series (`name{labels}` as exposed) to value.
type Scrape = BTreeMap<String, f64>;

fn http_get(address: &str, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

fn scrape_text(address: &str) -> String {
    let (head, body) = http_get(address, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    // Chunked or not, the exposition is the lines that are not chunk sizes.
    body.lines()
        .filter(|line| line.starts_with('#') || line.contains(' '))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn parse(text: &str) -> Scrape {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse::<f64>().unwrap())
        })
        .collect()
}

fn value(scrape: &Scrape, series: &str) -> f64 {
    scrape.get(series).copied().unwrap_or(0.0)
}

fn moved(before: &Scrape, after: &Scrape, series: &str) -> f64 {
    value(after, series) - value(before, series)
}

#[test]
fn metrics_follow_a_messaging_run_and_the_log_keeps_no_secrets() {
    let root = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let org = Org::start_with_env(
        root.path(),
        "127.0.0.1:0",
        &[("alice", "alice-laptop"), ("bob", "bob-phone")],
        &[
            ("REDOUBT_METRICS_LISTEN", metrics.as_str()),
            ("REDOUBT_LOG_FORMAT", "json"),
            // The log at its most talkative is still free of secrets.
            ("RUST_LOG", "debug"),
        ],
    );
    let (alice, bob) = (org.profile("alice-laptop"), org.profile("bob-phone"));
    support::wait_until_listening(&metrics);

    // Only /metrics is served.
    let (head, _) = http_get(&metrics, "/");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    json_ok(&alice, &["send", "bob", "warm-up", "--json"], &[]);
    json_ok(&bob, &["read", "--json"], &[]);
    let before = parse(&scrape_text(&metrics));

    // Five messages, a file and a refused request.
    let canaries: Vec<String> = (0..5).map(|i| format!("canary-text-{i}-5f0c1d")).collect();
    for text in &canaries {
        json_ok(&alice, &["send", "bob", text, "--json"], &[]);
    }
    let file = root.path().join("canary.bin");
    let content: Vec<u8> = b"canary-file-7a9e41 "
        .iter()
        .copied()
        .cycle()
        .take(150_000)
        .collect();
    std::fs::write(&file, &content).unwrap();
    let sent = json_ok(
        &alice,
        &["send", "bob", "--file", file.to_str().unwrap(), "--json"],
        &[],
    );
    let out = support::run(&bob, &["read", "--json"], &[]);
    assert!(out.status.success());
    let read = String::from_utf8_lossy(&out.stdout);
    for text in &canaries {
        assert!(read.contains(text.as_str()), "bob did not get {text}");
    }
    let saved = root.path().join("saved.bin");
    let id = sent["id"].as_str().unwrap();
    json_ok(
        &bob,
        &["fetch", id, "--out", saved.to_str().unwrap(), "--json"],
        &[],
    );
    assert_eq!(std::fs::read(&saved).unwrap(), content);
    let refused = json_error(&alice, &["admin", "user", "add", "mallory", "--json"], &[]);
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let issued = org.admin(&["admin", "user", "add", "carol", "--json", "--no-qr"]);
    let carol_code = issued["code"].as_str().unwrap().to_owned();

    // A session stays open while a device follows the conversation.
    let mut follower = std::process::Command::new(support::BIN)
        .arg("--profile")
        .arg(&bob)
        .args(["read", "--follow"])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let during = support::eventually("bob's session counted", Duration::from_secs(30), || {
        let scrape = parse(&scrape_text(&metrics));
        (value(&scrape, "redoubt_devices_online") >= 1.0).then_some(scrape)
    });
    assert!(value(&during, "redoubt_sessions_open") >= 1.0);
    follower.kill().unwrap();
    follower.wait().unwrap();
    let text = scrape_text(&metrics);
    let after = parse(&text);

    let submitted = moved(
        &before,
        &after,
        r#"redoubt_requests_total{type="group_submit",code="ok"}"#,
    );
    assert!(
        submitted >= 6.0,
        "5 messages and a file submitted, counted {submitted}"
    );
    let appended = moved(&before, &after, "redoubt_messages_appended_total");
    assert!(appended >= 6.0, "appended {appended}");
    assert_eq!(
        moved(
            &before,
            &after,
            r#"redoubt_requests_total{type="admin_user_add",code="forbidden"}"#
        ),
        1.0
    );
    assert!(
        moved(
            &before,
            &after,
            r#"redoubt_requests_total{type="authenticate",code="ok"}"#
        ) >= 8.0
    );
    assert!(moved(&before, &after, r#"redoubt_tls_handshakes_total{result="ok"}"#) >= 8.0);
    let request_timings = moved(
        &before,
        &after,
        r#"redoubt_request_duration_seconds_count{type="group_submit"}"#,
    );
    assert_eq!(request_timings, submitted);
    let uploaded = moved(&before, &after, r#"redoubt_blob_bytes_total{direction="upload"}"#);
    let downloaded = moved(
        &before,
        &after,
        r#"redoubt_blob_bytes_total{direction="download"}"#,
    );
    assert!(uploaded >= content.len() as f64, "uploaded {uploaded}");
    assert!(downloaded >= content.len() as f64, "downloaded {downloaded}");
    assert!(moved(&before, &after, "redoubt_fetched_entries_total") >= 6.0);
    assert!(moved(&before, &after, "redoubt_store_commit_batch_entries_count") >= 1.0);
    assert!(moved(&before, &after, "redoubt_store_commit_batch_entries_sum") >= 6.0);
    assert!(
        moved(
            &before,
            &after,
            "redoubt_store_commit_batch_duration_seconds_count"
        ) >= 1.0
    );
    assert!(moved(&before, &after, "redoubt_store_read_duration_seconds_count") >= 10.0);
    assert!(value(&after, "process_cpu_seconds_total") > 0.0);
    assert!(value(&after, "process_resident_memory_bytes") > 1e6);
    assert!(value(&after, "process_open_fds") >= 3.0);
    // Labels hold fixed names only: never a user, a device or anything they wrote.
    for private in ["alice", "bob", "carol", "mallory", "canary"] {
        assert!(!text.contains(private), "{private:?} in the metrics");
    }
    promtool_accepts(&text);

    // The JSON log: every line an object, none holding a canary.
    let admin_code = std::fs::read_to_string(org.data.join("admin-activation.txt")).unwrap();
    let mut server = org;
    let log = server.server.take().unwrap().terminate();
    let lines: Vec<&str> = log.lines().filter(|line| !line.is_empty()).collect();
    assert!(lines.len() > 20, "the debug log is being written: {log}");
    for line in &lines {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            event["timestamp"].is_string() && event["level"].is_string(),
            "{line}"
        );
    }
    assert!(log.contains("serving Prometheus metrics"), "{log}");
    let org_key = std::fs::read(server.data.join("org-root.key")).unwrap();
    let secrets = canaries.iter().cloned().chain([
        "canary-file-7a9e41".to_owned(),
        admin_code.trim().to_owned(),
        carol_code,
        data_encoding::HEXLOWER.encode(&org_key),
        data_encoding::BASE64.encode(&org_key),
    ]);
    for secret in secrets {
        assert!(
            !log.contains(&secret),
            "a secret ({} chars) is in the server log",
            secret.len()
        );
    }
}

/// `promtool check metrics` (Debian's `prometheus` package, which CI installs) accepts the
/// exposition: names, types, help texts and units follow Prometheus's conventions.
fn promtool_accepts(text: &str) {
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing: run .ci/install-promtool"
        );
        eprintln!(
            "promtool is not installed here (.ci/install-promtool); not checking the exposition with it"
        );
        return;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
