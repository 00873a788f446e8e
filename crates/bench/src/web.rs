//! `web`: the browser face of a device (`redoubt web`) in Debian's Chromium.
//!
//! Set-up (outside the timed windows): alice and bob, one conversation between them, bob
//! sends `--messages` messages and alice's device stores them. Then alice's profile runs
//! `redoubt web` (the real binary, beside this one) and a headless Chromium opens its page
//! through playwright-core (`.ci/install-browser`; the browser half is `web_page.mjs`):
//!
//! - *open*: from the click on the conversation to its first message drawn and to the last
//!   one, and the page's JS heap after a garbage collection;
//! - *live*: bob sends `--rate` messages a second for `--seconds`; each one's latency runs
//!   from the moment bob's device starts sending it to the moment the page adds it to the
//!   DOM (both clocks are this machine's). Every message must be shown.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use redoubt_client::Messenger;
use redoubt_proto::{ActivationCode, DeviceName, UserName};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::WebArgs;
use crate::report::{Report, Section};
use crate::scenarios::Common;
use crate::target::Target;

const PAGE_SCRIPT: &str = include_str!("web_page.mjs");
const CONVERSATION: &str = "bench-web";
const LIVE_PREFIX: &str = "live-";

async fn open_device(dir: &Path, name: &str, code: &str) -> Result<Messenger> {
    let code = ActivationCode::parse(code)?;
    let profile = redoubt_client::enroll(&dir.join(name), &code, DeviceName::parse(name)?).await?;
    Ok(Messenger::open(&profile).await?)
}

/// The `redoubt` binary built beside this one.
fn redoubt_binary(given: Option<&PathBuf>) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.clone());
    }
    let me = std::env::current_exe()?;
    let beside = me.with_file_name("redoubt");
    if beside.exists() {
        return Ok(beside);
    }
    bail!(
        "no `redoubt` binary beside {}: build it (cargo build --release --locked -p redoubt-cli) or give --redoubt",
        me.display()
    )
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1_000.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Reads the page script's next JSON line.
async fn next_step(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    step: &str,
    deadline: Instant,
) -> Result<Value> {
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = tokio::time::timeout(wait, lines.next_line())
            .await
            .map_err(|_| anyhow!("the browser did not reach {step:?} in time"))??
            .ok_or_else(|| anyhow!("the browser script ended before {step:?} (see its stderr above)"))?;
        if let Ok(value) = serde_json::from_str::<Value>(&line)
            && value["step"] == step
        {
            return Ok(value);
        }
    }
}

pub async fn run(target: &mut Target, common: &Common, args: &WebArgs) -> Result<Report> {
    let redoubt = redoubt_binary(args.redoubt.as_ref())?;
    let dir = tempfile::tempdir()?;
    let alice_name = UserName::parse(&format!("{}web-a", common.prefix))?;
    let bob_name = UserName::parse(&format!("{}web-b", common.prefix))?;
    let code = target.admin.admin_user_add(alice_name.clone(), None).await?.code;
    let mut alice = open_device(dir.path(), "alice", &code).await?;
    let code = target.admin.admin_user_add(bob_name.clone(), None).await?.code;
    let mut bob = open_device(dir.path(), "bob", &code).await?;
    alice
        .create_conversation(CONVERSATION, std::slice::from_ref(&bob_name), false)
        .await?;
    bob.sync().await?;
    let seed_started = Instant::now();
    for i in 0..args.messages {
        bob.send_text(
            CONVERSATION,
            &format!("history {i}: the quarterly numbers, the plan for the launch and the review"),
        )
        .await?;
        if Instant::now() > common.deadline {
            bail!("deadline reached while sending the messages");
        }
    }
    alice.sync().await?;
    let conversation = alice
        .conversation(CONVERSATION)?
        .context("alice has no conversation")?;
    let last_seq = alice.messages(&conversation)?.last().map_or(0, |m| m.seq);
    let held = alice.messages(&conversation)?.iter().filter(|m| !m.event).count();
    alice.close().await;
    let seed_s = seed_started.elapsed().as_secs_f64();

    let mut web = tokio::process::Command::new(&redoubt)
        .arg("--profile")
        .arg(dir.path().join("alice"))
        .args(["web", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", redoubt.display()))?;
    let web_out = web.stdout.take().context("no stdout")?;
    let url = BufReader::new(web_out)
        .lines()
        .next_line()
        .await?
        .context("redoubt web printed no URL")?;

    let script = dir.path().join("web_page.mjs");
    std::fs::write(&script, PAGE_SCRIPT)?;
    let config = json!({
        "url": url,
        "conversation": CONVERSATION,
        "last_seq": last_seq,
        "live_prefix": LIVE_PREFIX,
    });
    let mut page = tokio::process::Command::new("node")
        .arg(&script)
        .env("REDOUBT_BENCH_WEB", config.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting node (Node.js 20, and .ci/install-browser for Chromium and playwright-core)")?;
    let mut page_in = page.stdin.take().context("no stdin")?;
    let mut lines = BufReader::new(page.stdout.take().context("no stdout")?).lines();
    let step_deadline = Instant::now() + Duration::from_secs(300);
    let opened = next_step(&mut lines, "opened", step_deadline).await?;
    next_step(&mut lines, "watching", step_deadline).await?;

    // Live: an open loop at --rate; a send that runs late does not push the others back.
    let count = (args.rate * args.seconds as f64).round() as usize;
    let mut sent_at = Vec::with_capacity(count);
    let started = tokio::time::Instant::now();
    for i in 0..count {
        tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / args.rate)).await;
        sent_at.push(unix_ms());
        bob.send_text(
            CONVERSATION,
            &format!("{LIVE_PREFIX}{i} arriving while the page is open"),
        )
        .await?;
    }
    let send_s = started.elapsed().as_secs_f64();
    page_in
        .write_all(
            format!(
                "{}\n",
                json!({"stop": true, "expected": count, "wait_ms": 15_000})
            )
            .as_bytes(),
        )
        .await?;
    let live = next_step(&mut lines, "live", Instant::now() + Duration::from_secs(60)).await?;
    drop(page_in);
    let _ = page.wait().await;
    let _ = web.kill().await;
    bob.close().await;

    let shown = live["shown"].as_object().cloned().unwrap_or_default();
    let mut latencies: Vec<f64> = shown
        .iter()
        .filter_map(|(n, at)| Some(at.as_f64()? - sent_at.get(n.parse::<usize>().ok()?)?))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let p99 = percentile(&latencies, 99.0);
    let opened_shown = opened["shown"].as_u64().unwrap_or(0) as usize;
    let ok = latencies.len() == count && opened_shown >= held;

    let mut open = Section::new(format!("open a conversation of {} messages", args.messages));
    open.num(
        "first_render_ms",
        opened["first_render_ms"].as_f64().unwrap_or(f64::NAN),
        1,
        "ms",
    )
    .num(
        "fully_loaded_ms",
        opened["loaded_ms"].as_f64().unwrap_or(f64::NAN),
        1,
        "ms",
    )
    .num(
        "js_heap_mib",
        opened["heap_bytes"].as_f64().unwrap_or(f64::NAN) / 1_048_576.0,
        1,
        "MiB",
    )
    .add("messages_shown", opened_shown, "")
    .add("messages_held", held, "");
    let mut watch = Section::new(format!("{} messages/s arriving while open", args.rate));
    watch
        .add("sent", count, "")
        .add("shown", latencies.len(), "")
        .num("send_s", send_s, 2, "s")
        .num("send_to_shown_p50_ms", percentile(&latencies, 50.0), 1, "ms")
        .num("send_to_shown_p99_ms", p99, 1, "ms")
        .target("≤ 100 ms")
        .num(
            "send_to_shown_max_ms",
            latencies.last().copied().unwrap_or(f64::NAN),
            1,
            "ms",
        );
    Ok(Report {
        scenario: "web".into(),
        description: format!(
            "redoubt web in headless Chromium: a conversation of {} messages opened, then {} messages/s for {} s",
            args.messages, args.rate, args.seconds
        ),
        settings: crate::scenarios::settings(
            target,
            common,
            json!({"messages": args.messages, "rate": args.rate, "seconds": args.seconds}),
        ),
        sections: vec![open, watch],
        notes: vec![
            format!("set-up (bob sends, alice's device stores, outside the windows): {seed_s:.1} s"),
            "the sender is a device-library Messenger in this process; the page is alice's `redoubt web` \
             (the release binary beside redoubt-bench) in Debian's Chromium, headless, on loopback"
                .into(),
            "latency: from bob's device starting to send (encrypt, submit) to the page's MutationObserver \
             seeing the message's <li>; both clocks are this machine's"
                .into(),
        ],
        ok,
    })
}
