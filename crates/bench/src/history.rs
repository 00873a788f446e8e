//! `history`: a user's new device gets `--size` messages of history from the user's other
//! device, against the same kind of device reading as many live messages from the server's
//! log, in the same run.
//!
//! Set-up (outside the timed windows): a user with a laptop, a colleague, three
//! conversations between them (two groups and a direct one), and a *reference* device of the
//! user enrolled before the messages. The colleague then sends `--size` messages round-robin
//! into the three conversations, and the laptop stores them.
//!
//! - *live read*: the reference device syncs: it reads every message from the logs (fetches
//!   of 200 entries, MLS decryption, storing, delivery receipts) — what a device that was
//!   there all along does after being offline.
//! - *history*: from enrolling a new device of the user (key generation, certificate, key
//!   packages published) through the laptop's next sync (it adds the new device to the three
//!   conversations, collects the history, uploads it encrypted and sends the keys) to the new
//!   device's sync (it joins, downloads, decrypts and stores every message): the new device
//!   then holds all of them. Both devices are the device library's `Messenger` on profiles on
//!   disk, as the `redoubt` command uses them.
//!
//! Bytes are WebSocket payload bytes (sent + received) on the devices' connections; server
//! CPU is the server's own threads or process over each window.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use redoubt_client::Messenger;
use redoubt_proto::{ActivationCode, DeviceName, UserName};
use serde_json::json;

use crate::HistoryArgs;
use crate::report::{Report, Section};
use crate::scenarios::Common;
use crate::target::Target;

const CONVERSATIONS: [&str; 2] = ["history-a", "history-b"];

async fn open_device(dir: &Path, name: &str, code: &str) -> Result<Messenger> {
    let code = ActivationCode::parse(code)?;
    let profile = redoubt_client::enroll(&dir.join(name), &code, DeviceName::parse(name)?).await?;
    Ok(Messenger::open(&profile).await?)
}

fn frame_bytes(messenger: &mut Messenger) -> u64 {
    let (sent, received) = messenger.session().connection().frame_bytes();
    sent + received
}

/// Messages held in every conversation.
fn held(messenger: &Messenger) -> Result<usize> {
    let mut count = 0;
    for conversation in messenger.conversations()? {
        count += messenger.messages(&conversation)?.len();
    }
    Ok(count)
}

/// A message of about `bytes` bytes of words.
fn body(index: usize, bytes: usize) -> String {
    const WORDS: [&str; 12] = [
        "budget", "meeting", "plan", "release", "customer", "review", "draft", "tomorrow", "numbers",
        "contract", "launch", "call",
    ];
    let mut text = format!("{index}");
    let mut i = index;
    while text.len() < bytes {
        i = i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        text.push(' ');
        text.push_str(WORDS[(i >> 33) % WORDS.len()]);
    }
    text
}

pub async fn run(target: &mut Target, common: &Common, args: &HistoryArgs) -> Result<Report> {
    if args.size == 0 {
        bail!("--size must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let user = UserName::parse(&format!("{}hist-a", common.prefix))?;
    let colleague = UserName::parse(&format!("{}hist-b", common.prefix))?;
    let code = target.admin.admin_user_add(user.clone(), None).await?.code;
    let mut laptop = open_device(dir.path(), "laptop", &code).await?;
    let code = target.admin.admin_user_add(colleague.clone(), None).await?.code;
    let mut other = open_device(dir.path(), "colleague", &code).await?;
    for name in CONVERSATIONS {
        laptop
            .create_conversation(name, std::slice::from_ref(&colleague), false)
            .await?;
    }
    laptop.send_text(colleague.as_str(), "hello").await?;
    // The reference device is there before the messages: it reads them live.
    let code = target.admin.admin_device_add(user.clone()).await?.code;
    let mut reference = open_device(dir.path(), "reference", &code).await?;
    laptop.sync().await?;
    reference.sync().await?;
    other.sync().await?;

    let seed_started = Instant::now();
    let targets = [CONVERSATIONS[0], CONVERSATIONS[1], user.as_str()];
    for i in 0..args.size {
        other.send_text(targets[i % 3], &body(i, args.body_bytes)).await?;
        if Instant::now() > common.deadline {
            bail!("deadline reached while sending the messages");
        }
    }
    laptop.sync().await?;
    let seed_s = seed_started.elapsed().as_secs_f64();
    let expected = held(&laptop)?;

    // Live read: the reference device reads them from the logs.
    let meter = &target.meter;
    let bytes_before = frame_bytes(&mut reference);
    let cpu_before = meter.read().cpu_s;
    let started = Instant::now();
    reference.sync().await?;
    let live_s = started.elapsed().as_secs_f64();
    let live_cpu_s = meter.read().cpu_s - cpu_before;
    let live_bytes = frame_bytes(&mut reference) - bytes_before;
    let live_held = held(&reference)?;

    // History: a new device, from enrolment until it holds everything.
    let cpu_before = meter.read().cpu_s;
    let laptop_bytes_before = frame_bytes(&mut laptop);
    let started = Instant::now();
    let code = target.admin.admin_device_add(user.clone()).await?.code;
    let mut tablet = open_device(dir.path(), "tablet", &code).await?;
    let enrolled_s = started.elapsed().as_secs_f64();
    laptop.sync().await?;
    let sent_s = started.elapsed().as_secs_f64();
    tablet.sync().await?;
    let history_s = started.elapsed().as_secs_f64();
    let history_cpu_s = meter.read().cpu_s - cpu_before;
    let history_bytes = frame_bytes(&mut laptop) - laptop_bytes_before + frame_bytes(&mut tablet);
    let history_held = held(&tablet)?;
    let history_marked = tablet
        .conversations()?
        .iter()
        .map(|c| tablet.messages(c).map(|m| m.iter().filter(|m| m.history).count()))
        .sum::<Result<usize, _>>()?;

    let ok = live_held == expected && history_held == expected && history_marked == expected;
    if !ok {
        return Err(anyhow!(
            "expected {expected} messages: the reference holds {live_held}, the new device {history_held} ({history_marked} as history)"
        ));
    }
    let ratio = history_s / live_s;
    let mut s = Section::new(format!("{} messages", args.size));
    s.add("messages", expected, "");
    s.num("live_read_s", live_s, 3, "s");
    s.add("live_read_bytes", live_bytes, "B");
    s.num("live_read_server_cpu_s", live_cpu_s, 3, "s");
    s.num("history_s", history_s, 3, "s");
    s.target("<= 2 x live_read_s");
    s.num("history_over_live", ratio, 2, "x");
    s.target("<= 2");
    s.num("history_enrolled_s", enrolled_s, 3, "s");
    s.num("history_sent_s", sent_s - enrolled_s, 3, "s");
    s.num("history_stored_s", history_s - sent_s, 3, "s");
    s.add("history_bytes", history_bytes, "B");
    s.num("history_server_cpu_s", history_cpu_s, 3, "s");
    s.num("seed_s", seed_s, 1, "s");
    for device in [laptop, other, reference, tablet] {
        device.close().await;
    }
    Ok(Report {
        scenario: "history".into(),
        description: format!(
            "{} messages of ~{} bytes in 3 conversations: a new device's history against a device reading them live",
            args.size, args.body_bytes
        ),
        settings: crate::scenarios::settings(
            target,
            common,
            json!({"size": args.size, "body_bytes": args.body_bytes}),
        ),
        sections: vec![s],
        notes: vec![
            "history_s runs from enrolling the new device to it holding every message: enrolment \
             and key packages (history_enrolled_s), the laptop's sync that adds it and sends the \
             history (history_sent_s), and the new device's sync that stores it (history_stored_s)"
                .into(),
            "bytes are WebSocket payloads on the devices' connections (both devices for history)".into(),
        ],
        ok,
    })
}
