#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Every scenario at a tiny size against a real server, so the harness never rots. These
//! check what the harness counts (messages delivered, sessions held), never speed.

use std::process::Command;

use serde_json::Value;

/// Runs `redoubt-bench --json ARGS` and returns its one JSON report.
fn bench(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_redoubt-bench"))
        .arg("--json")
        .arg("--timeout-s")
        .arg("120")
        .args(args)
        .output()
        .expect("run redoubt-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "redoubt-bench {args:?} failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one JSON object per scenario: {stdout}");
    let report: Value = serde_json::from_str(lines[0]).expect("the report is JSON");
    assert_eq!(report["ok"], true, "{report:#}");
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(report["settings"]["server_limits"].is_object());
    report
}

fn n(value: &Value) -> u64 {
    value
        .as_u64()
        .or_else(|| value.as_f64().map(|f| f as u64))
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

#[test]
fn room_delivers_every_message_to_every_member() {
    let report = bench(&["room", "--size", "60", "--users", "6"]);
    let r = &report["results"];
    assert_eq!(report["scenario"], "room");
    assert_eq!(n(&r["acknowledged"]), 60);
    // Each message reaches the five other members.
    assert_eq!(n(&r["deliveries_expected"]), 60 * 5);
    assert_eq!(n(&r["deliveries"]), 60 * 5);
    assert_eq!(n(&r["incomplete_messages"]), 0);
    // One member decrypted the others' messages: real MLS ciphertexts.
    assert_eq!(n(&r["verified_decrypted"]), 50);
    assert!(r["e2e_latency_p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn history_reaches_the_new_device_whole() {
    let report = bench(&["history", "--size", "30"]);
    let r = &report["results"];
    assert_eq!(report["scenario"], "history");
    // The 30 messages and the first hello, on the reference device and on the new one.
    assert_eq!(n(&r["messages"]), 31);
    assert!(r["history_s"].as_f64().unwrap() > 0.0);
    assert!(n(&r["history_bytes"]) > 0);
}

#[test]
fn pairs_deliver_to_the_other_member_only() {
    let report = bench(&["pairs", "--size", "40", "--users", "4", "--rate", "400"]);
    let r = &report["results"];
    assert_eq!(n(&r["groups"]), 2);
    assert_eq!(n(&r["acknowledged"]), 40);
    assert_eq!(n(&r["deliveries"]), 40);
    assert_eq!(n(&r["verified_decrypted"]), 10);
}

#[test]
fn sessions_are_held_and_the_probe_gets_its_message() {
    let report = bench(&["sessions", "--size", "30", "--devices", "10", "--hold-s", "1"]);
    let r = &report["results"];
    assert_eq!(n(&r["sessions_held"]), 30);
    assert_eq!(n(&r["sessions_failed"]), 0);
    assert!(r["probe_delivery"].as_f64().is_some(), "{r}");
}

#[test]
fn reconnect_storm_brings_every_session_back_caught_up() {
    // A child-process server here, so that path is exercised too.
    let report = bench(&[
        "--spawn-server",
        "reconnect-storm",
        "--size",
        "30",
        "--devices",
        "10",
        "--hold-s",
        "1",
    ]);
    let r = &report["results"];
    assert_eq!(report["settings"]["server"], "child-process");
    assert_eq!(n(&r["sessions_held"]), 30);
    assert_eq!(n(&r["storm_reconnected"]), 30);
    assert_eq!(n(&r["storm_failed"]), 0);
    // Every session of the probe device fetched the message it missed while away.
    assert_eq!(n(&r["storm_probe_sessions_fetched_missed"]), 3);
    assert!(n(&r["server_peak_rss"]) > 0);
}

#[test]
fn big_group_runs_each_operation() {
    let report = bench(&["big-group", "--size", "6", "--size", "12", "--repeat", "1"]);
    let rows = report["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, size) in rows.iter().zip([6, 12]) {
        assert_eq!(n(&row["members"]), size);
        for key in [
            "create_commit",
            "create_welcome",
            "add_commit_bytes",
            "update_commit_bytes",
        ] {
            assert!(row[key].as_f64().unwrap() > 0.0, "{key}: {row}");
        }
        assert!(row["join_s"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn fanout_scaling_delivers_at_each_size_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("fanout.svg");
    let report = bench(&[
        "fanout-scaling",
        "--size",
        "2",
        "--size",
        "8",
        "--messages",
        "10",
        "--rate",
        "100",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let rows = report["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, size) in rows.iter().zip([2u64, 8]) {
        assert_eq!(n(&row["deliveries"]), 10 * (size - 1));
        assert_eq!(n(&row["deliveries"]), n(&row["deliveries_expected"]));
    }
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.contains("polyline"));
}

#[test]
fn mail_push_delivers_every_mail() {
    // Real Dovecot and Postfix (root and the packages of .ci/install-mail-peers), the
    // connector beside the server, two users' devices.
    let report = bench(&["mail-push", "--size", "10", "--users", "2", "--rate", "20"]);
    let r = &report["results"];
    assert_eq!(report["scenario"], "mail-push");
    assert_eq!(n(&r["mails_accepted"]), 10);
    // Every mail reached its user's mailbox and was pushed to that user's device.
    assert_eq!(n(&r["mails_in_mailbox"]), 10);
    assert_eq!(n(&r["mails_pushed"]), 10);
    let p50 = r["push_latency_p50"].as_f64().unwrap();
    let p99 = r["push_latency_p99"].as_f64().unwrap();
    assert!(p50 > 0.0 && p99 >= p50, "{r}");
}

#[test]
fn search_agrees_with_fts5_on_every_query() {
    // No server: the device's own vault, a small history.
    let output = Command::new(env!("CARGO_BIN_EXE_redoubt-bench"))
        .args([
            "--json",
            "search",
            "--messages",
            "3000",
            "--vocabulary",
            "2000",
            "--repeat",
            "2",
        ])
        .output()
        .expect("run redoubt-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "search failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    // ok: every query returned the same messages, in the same order, as FTS5.
    assert_eq!(report["ok"], true, "{report:#}");
    let results = report["results"].as_array().unwrap();
    assert_eq!(n(&results[0]["messages"]), 3000);
    assert_eq!(n(&results[0]["queries_timed"]), 24);
    // The fixed set finds something (and the absent word nothing).
    let hits: Vec<u64> = results[1..].iter().map(|r| n(&r["hits"])).collect();
    assert!(hits.iter().filter(|h| **h > 0).count() >= 8, "{hits:?}");
    assert!(hits.contains(&0), "{hits:?}");
}

#[test]
fn kt_publishes_and_proves_like_akd() {
    // No server: the key directory on a fresh data folder against akd's in-memory one.
    let output = Command::new(env!("CARGO_BIN_EXE_redoubt-bench"))
        .args([
            "--json",
            "kt",
            "--users",
            "1200",
            "--initial-batch",
            "600",
            "--epochs",
            "1",
            "--repeat",
            "2",
        ])
        .output()
        .expect("run redoubt-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kt failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    // ok: every proof verified, and both directories hold the same records.
    assert_eq!(report["ok"], true, "{report:#}");
    let sections = report["results"].as_array().unwrap();
    let section = |label: &str| {
        sections
            .iter()
            .find(|s| s["label"].as_str().unwrap().starts_with(label))
            .unwrap_or_else(|| panic!("no section {label}: {report:#}"))
    };
    // Two epochs of first devices, one of 100 changes, one of 1,000.
    assert_eq!(n(&section("summary")["epochs_published"]), 4);
    for label in ["history proof", "audit proof"] {
        let proof = section(label);
        assert!(n(&proof["bytes"]) > 0 && n(&proof["bytes_akd"]) > 0, "{proof}");
        assert!(proof["verify_ratio"].as_f64().unwrap() > 0.0, "{proof}");
    }
    assert_eq!(section("store")["same_records_as_akd"], true);
    assert!(
        report["targets"]["publish_p50_ratio"]
            .as_str()
            .unwrap()
            .contains("akd")
    );
}
