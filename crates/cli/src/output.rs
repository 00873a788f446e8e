//! Everything the CLI prints: text for people, or `--json` for scripts. Results go to
//! stdout; errors to stderr (as `{"error": {...}}` with `--json`).

use std::path::Path;

use redoubt_client::{
    ClientError, Conversation, ConversationSettings, MemberDevice, Profile, Receipts, StoredMessage,
};
use redoubt_proto::{DeviceSummary, IssuedActivationCode, SessionInfo, UserSummary};
use serde_json::json;

/// `println!` that ends the process quietly when stdout is a closed pipe
/// (`redoubt read | head`), as command-line tools do, instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout(), $($arg)*) {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

pub(crate) use say;

pub(crate) struct Output {
    json: bool,
}

pub(crate) fn time(unix_s: i64) -> String {
    u64::try_from(unix_s)
        .ok()
        .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| unix_s.to_string())
}

/// Hours and minutes (UTC) of a time, for compact displays.
pub(crate) fn clock(unix_s: i64) -> String {
    let full = time(unix_s);
    full.get(11..16).map_or(full.clone(), str::to_owned)
}

pub(crate) fn optional_time(unix_s: Option<i64>) -> String {
    unix_s.map(time).unwrap_or_else(|| "-".to_owned())
}

/// The code drawn for a terminal with a dark background (the common case): dark modules
/// are blanks and light ones are blocks, as `qrencode -t UTF8` draws them.
pub(crate) fn qr(text: &str) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::L).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// An activation code, indented on its own line, then (optionally) as a QR code.
fn print_code(code: &str, draw_qr: bool) {
    say!();
    say!("    {code}");
    say!();
    if let Some(qr) = qr(code).filter(|_| draw_qr) {
        say!("{qr}");
    }
}

/// Users as `admin user list --json` prints them.
pub(crate) fn users_json(users: &[UserSummary]) -> serde_json::Value {
    let rows: Vec<_> = users
        .iter()
        .map(|u| {
            json!({
                "user": u.user.as_str(),
                "display_name": u.display_name.as_ref().map(|d| d.as_str()),
                "roles": u.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "devices_active": u.devices_active,
                "created_at": time(u.created_at_unix_s),
            })
        })
        .collect();
    json!(rows)
}

/// An activation code as `admin user add --json` prints it.
pub(crate) fn code_json(issued: &IssuedActivationCode) -> serde_json::Value {
    json!({
        "user": issued.user.as_str(),
        "code": issued.code,
        "expires_at": time(issued.expires_at_unix_s),
    })
}

/// The code as an SVG image (for the web console).
pub(crate) fn qr_svg(text: &str) -> Option<String> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::L).ok()?;
    Some(
        code.render::<svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

/// A message as `redoubt read --json` prints it and the web app serves it.
pub(crate) fn message_json(
    conversation: &Conversation,
    m: &StoredMessage,
    receipts: &Receipts,
) -> serde_json::Value {
    let names = |set: &std::collections::BTreeSet<redoubt_proto::UserName>| -> Vec<String> {
        set.iter().map(|u| u.to_string()).collect()
    };
    json!({
        "conversation": conversation.name,
        "group_id": conversation.group_id.to_string(),
        "id": m.id(conversation),
        "seq": m.seq,
        "sender": m.sender_user.as_str(),
        "sender_device": m.sender_device.to_string(),
        "sent_at": time(m.sent_at_unix_s),
        "at_unix_s": m.sent_at_unix_s,
        "server_time": time(m.server_time_unix_s),
        "text": m.text,
        "attachment": m.attachment.as_ref().map(|a| json!({ "name": a.name, "bytes": a.bytes })),
        "delivered_to": names(&receipts.delivered),
        "read_by": names(&receipts.read),
        "history": m.history,
        "event": m.event,
    })
}

pub(crate) fn print_json(value: &serde_json::Value) {
    say!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// A one-line progress report on stderr for uploads and downloads (silent with `--json`
/// or when stderr is not a terminal).
pub(crate) struct Progress {
    label: String,
    shown: bool,
    last_percent: Option<u64>,
}

impl Progress {
    pub(crate) fn new(verb: &str, file: &Path, json: bool) -> Self {
        let name = file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let shown = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
        Self {
            label: format!("{verb} {name}"),
            shown,
            last_percent: None,
        }
    }

    pub(crate) fn update(&mut self, done: u64, total: u64) {
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        if self.shown && self.last_percent != Some(percent) {
            self.last_percent = Some(percent);
            eprint!("\r{}: {percent:>3}% ({done} of {total} bytes)", self.label);
        }
    }

    pub(crate) fn finish(&mut self) {
        if self.shown {
            eprintln!();
        }
    }
}

impl Output {
    /// Whether `--json` was given.
    pub(crate) fn json(&self) -> bool {
        self.json
    }

    pub(crate) fn new(json: bool) -> Self {
        Self { json }
    }

    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// A one-line confirmation: text, or `{"ok": true, "message": ...}`.
    pub(crate) fn migrated(&self, from: &Path, report: &redoubt_server::ImportReport) {
        if self.json {
            print_json(&json!({
                "from": from.display().to_string(),
                "rows": report.rows,
                "blobs": report.blobs,
                "blob_bytes": report.blob_bytes,
            }));
            return;
        }
        let rows: u64 = report.rows.values().sum();
        say!(
            "Moved {} into PostgreSQL: {rows} rows in {} tables, {} attachments ({} bytes).",
            from.display(),
            report.rows.len(),
            report.blobs,
            report.blob_bytes
        );
        say!(
            "Start this folder's node with the same database: redoubt server --data {} --database URL",
            from.display()
        );
    }

    pub(crate) fn note(&self, message: &str) {
        if self.json {
            print_json(&json!({ "ok": true, "message": message }));
        } else {
            say!("{message}");
        }
    }

    pub(crate) fn fetched(&self, name: &str, bytes: u64, path: &Path) {
        if self.json {
            print_json(
                &json!({ "name": name, "bytes": bytes, "out": path.display().to_string(), "verified": true }),
            );
        } else {
            say!(
                "Saved {name} ({bytes} bytes, SHA-256 verified) to {}.",
                path.display()
            );
        }
    }

    pub(crate) fn error(&self, error: &anyhow::Error) {
        let server = error
            .chain()
            .find_map(|e| e.downcast_ref::<ClientError>())
            .and_then(ClientError::code);
        if self.json {
            let code = server.map(|c| c.as_str()).unwrap_or("client_error");
            let message = format!("{error:#}");
            eprintln!("{}", json!({ "error": { "code": code, "message": message } }));
        } else {
            eprintln!("error: {error:#}");
        }
    }

    pub(crate) fn first_admin_code(
        &self,
        data: &Path,
        file: &Path,
        code: &IssuedActivationCode,
        draw_qr: bool,
    ) {
        if self.json {
            print_json(&json!({
                "data": data.display().to_string(),
                "user": code.user.as_str(),
                "code": code.code,
                "expires_at": time(code.expires_at_unix_s),
                "code_file": file.display().to_string(),
            }));
            return;
        }
        say!("Redoubt initialised its data folder {}.", data.display());
        say!();
        say!(
            "First admin activation code (valid until {}, single use):",
            time(code.expires_at_unix_s)
        );
        print_code(&code.code, draw_qr);
        say!("It is also in {} (readable only by you).", file.display());
        say!("Enrol the admin's device with:");
        say!();
        say!(
            "    redoubt --profile ./admin enroll \"$(cat {})\" --name \"admin laptop\"",
            file.display()
        );
        say!();
    }

    pub(crate) fn enrolled(&self, profile: &Profile) {
        let body = profile.certificate_body();
        if self.json {
            print_json(&json!({
                "org": profile.org_name,
                "org_id": profile.org_id().to_string(),
                "user": body.user.as_str(),
                "device_id": body.device_id.to_string(),
                "device_name": body.device_name.as_str(),
                "server": profile.server.as_str(),
                "profile": profile.dir().display().to_string(),
                "certificate_expires_at": time(body.not_after_unix_s),
            }));
        } else {
            say!(
                "Enrolled \"{}\" as a device of {} in {} (server {}).",
                body.device_name,
                body.user,
                profile.org_name,
                profile.server
            );
            say!(
                "Device id {}; certificate valid until {}.",
                body.device_id,
                time(body.not_after_unix_s)
            );
            say!("Profile saved in {}.", profile.dir().display());
        }
    }

    pub(crate) fn whoami(&self, profile: &Profile, info: &SessionInfo) {
        let roles: Vec<&str> = info.roles.iter().map(|r| r.as_str()).collect();
        if self.json {
            print_json(&json!({
                "org": info.org_name,
                "org_id": info.org_id.to_string(),
                "user": info.user.as_str(),
                "display_name": info.display_name.as_ref().map(|d| d.as_str()),
                "device_id": info.device_id.to_string(),
                "device_name": info.device_name.as_str(),
                "roles": roles,
                "server": profile.server.as_str(),
                // The SHA-256 of the server certificate this device pins (for `kt audit`).
                "server_pin": data_encoding::HEXLOWER.encode(&profile.pin),
                "authenticated": true,
            }));
        } else {
            let display = info
                .display_name
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            say!("Organisation  {} ({})", info.org_name, info.org_id);
            say!("User          {}{display}", info.user);
            say!("Device        {} ({})", info.device_name, info.device_id);
            say!(
                "Roles         {}",
                if roles.is_empty() {
                    "-".to_owned()
                } else {
                    roles.join(", ")
                }
            );
            say!("Server        {}", profile.server);
            say!("Session       authenticated");
        }
    }

    pub(crate) fn activation_code(&self, issued: &IssuedActivationCode, draw_qr: bool) {
        if self.json {
            print_json(&code_json(issued));
            return;
        }
        say!(
            "Activation code for {} (valid until {}, single use):",
            issued.user,
            time(issued.expires_at_unix_s)
        );
        print_code(&issued.code, draw_qr);
        say!("On the device: redoubt enroll CODE");
    }

    pub(crate) fn users(&self, users: &[UserSummary]) {
        if self.json {
            print_json(&users_json(users));
            return;
        }
        say!(
            "{:<24} {:<28} {:<10} {:>7}  CREATED",
            "USER",
            "NAME",
            "ROLES",
            "DEVICES"
        );
        for u in users {
            let roles: Vec<&str> = u.roles.iter().map(|r| r.as_str()).collect();
            say!(
                "{:<24} {:<28} {:<10} {:>7}  {}",
                u.user,
                u.display_name.as_ref().map(|d| d.as_str()).unwrap_or("-"),
                if roles.is_empty() {
                    "-".to_owned()
                } else {
                    roles.join(",")
                },
                u.devices_active,
                time(u.created_at_unix_s)
            );
        }
    }

    pub(crate) fn devices(&self, devices: &[DeviceSummary]) {
        if self.json {
            let rows: Vec<_> = devices.iter().map(crate::manage::device_json).collect();
            print_json(&json!(rows));
            return;
        }
        say!(
            "{:<32}  {:<16} {:<20} {:>6}  {:<20}  {:>6}  STATE",
            "DEVICE",
            "USER",
            "NAME",
            "SERIAL",
            "LAST SEEN",
            "POLICY"
        );
        for d in devices {
            say!(
                "{:<32}  {:<16} {:<20} {:>6}  {:<20}  {:>6}  {}",
                d.device_id,
                d.user,
                d.name,
                d.certificate_serial,
                optional_time(d.last_seen_at_unix_s),
                d.policy_version_acked,
                crate::manage::device_state(d)
            );
        }
    }

    /// This user's devices; those this device learnt of only from the key directory (no
    /// one told it: see `redoubt security`) are marked.
    pub(crate) fn own_devices(
        &self,
        devices: &[DeviceSummary],
        seen_only_in_log: &[redoubt_proto::DeviceId],
    ) {
        if self.json {
            let rows: Vec<_> = devices
                .iter()
                .map(|d| {
                    let mut row = crate::manage::device_json(d);
                    row["seen_only_in_log"] = json!(seen_only_in_log.contains(&d.device_id));
                    row
                })
                .collect();
            print_json(&json!(rows));
            return;
        }
        self.devices(devices);
        for d in devices.iter().filter(|d| seen_only_in_log.contains(&d.device_id)) {
            say!(
                "{} ({}) was seen only in the key directory: nobody told this device of it (see `redoubt security`).",
                d.name,
                d.device_id
            );
        }
    }

    pub(crate) fn sent(&self, conversation: &Conversation, seq: u64) {
        if self.json {
            print_json(&json!({
                "conversation": conversation.name,
                "group_id": conversation.group_id.to_string(),
                "seq": seq,
                "id": conversation.message_id(seq),
            }));
        } else {
            say!(
                "Sent to {} (message {}-{seq}).",
                conversation.name,
                &conversation.group_id.to_string()[..8]
            );
        }
    }

    /// Prints messages with their receipts; `header` adds the conversation's name above
    /// them in text mode.
    pub(crate) fn messages(
        &self,
        conversation: &Conversation,
        messages: &[(StoredMessage, Receipts)],
        header: bool,
    ) {
        let names = |set: &std::collections::BTreeSet<redoubt_proto::UserName>| -> Vec<String> {
            set.iter().map(|u| u.to_string()).collect()
        };
        if self.json {
            for (m, receipts) in messages {
                say!("{}", message_json(conversation, m, receipts));
            }
            return;
        }
        if header {
            let state = if conversation.removed {
                " (you were removed)"
            } else {
                ""
            };
            say!("== {}{state} ==", conversation.name);
        }
        for (m, receipts) in messages {
            let device = m.sender_device.to_string();
            let state = if !receipts.read.is_empty() {
                format!("  (read by {})", names(&receipts.read).join(", "))
            } else if !receipts.delivered.is_empty() {
                format!("  (delivered to {})", names(&receipts.delivered).join(", "))
            } else {
                String::new()
            };
            if m.event {
                say!(
                    "[{}] — {} —  #{}",
                    time(m.sent_at_unix_s),
                    m.text,
                    m.id(conversation)
                );
                continue;
            }
            let history = if m.history { "  (transferred history)" } else { "" };
            say!(
                "[{}] {} ({}): {}  #{}{state}{history}",
                time(m.sent_at_unix_s),
                m.sender_user,
                &device[..8],
                m.text,
                m.id(conversation)
            );
        }
    }

    pub(crate) fn group_changed(&self, what: &str, conversation: &Conversation, members: &[MemberDevice]) {
        if self.json {
            print_json(&json!({
                "result": what,
                "conversation": conversation.name,
                "group_id": conversation.group_id.to_string(),
                "devices": members.len(),
            }));
        } else {
            let users: std::collections::BTreeSet<&str> = members.iter().map(|m| m.user.as_str()).collect();
            say!(
                "Group {} {what}: {} devices of {}.",
                conversation.name,
                members.len(),
                users.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
    }

    /// Conversations with their member devices and MLS epoch (`None` once removed).
    pub(crate) fn groups(&self, rows: &[(Conversation, Vec<MemberDevice>, Option<u64>)]) {
        if self.json {
            let rows: Vec<_> = rows
                .iter()
                .map(|(c, members, epoch)| {
                    let users: std::collections::BTreeSet<&str> =
                        members.iter().map(|m| m.user.as_str()).collect();
                    json!({
                        "conversation": c.name,
                        "group_id": c.group_id.to_string(),
                        "direct": c.peer.is_some(),
                        "removed": c.removed,
                        "users": users,
                        "devices": members.len(),
                        "epoch": epoch,
                    })
                })
                .collect();
            print_json(&json!(rows));
            return;
        }
        say!("{:<24} {:<8} {:>7}  USERS", "CONVERSATION", "KIND", "DEVICES");
        for (c, members, _) in rows {
            let users: std::collections::BTreeSet<&str> = members.iter().map(|m| m.user.as_str()).collect();
            let kind = if c.removed {
                "removed"
            } else if c.peer.is_some() {
                "direct"
            } else {
                "group"
            };
            let users: Vec<&str> = users.into_iter().collect();
            say!(
                "{:<24} {:<8} {:>7}  {}",
                c.name,
                kind,
                members.len(),
                users.join(", ")
            );
        }
    }

    pub(crate) fn members(
        &self,
        conversation: &Conversation,
        members: &[MemberDevice],
        settings: &ConversationSettings,
        epoch: Option<u64>,
    ) {
        if self.json {
            let rows: Vec<_> = members
                .iter()
                .map(|m| {
                    json!({
                        "user": m.user.as_str(),
                        "device_id": m.device_id.to_string(),
                        "device_name": m.device_name,
                        "certificate_fingerprint": redoubt_proto::Bytes(m.certificate_fingerprint).to_hex(),
                    })
                })
                .collect();
            print_json(&json!({
                "conversation": conversation.name,
                "group_id": conversation.group_id.to_string(),
                "direct": conversation.peer.is_some(),
                "epoch": epoch,
                "share_history_days": settings.share_history_days,
                "members": rows,
            }));
            return;
        }
        say!(
            "{} ({})",
            conversation.name,
            if conversation.peer.is_some() {
                "direct"
            } else {
                "group"
            }
        );
        say!("  group id {}", conversation.group_id);
        if let Some(epoch) = epoch {
            say!("  MLS epoch {epoch}");
        }
        match settings.share_history_days {
            0 => say!("  history for new members: not shared"),
            days => say!("  history for new members: the last {days} days are shared"),
        }
        say!("Members of {}:", conversation.name);
        for m in members {
            say!(
                "  {:<16} {:<20} {}  certificate SHA-256 {}",
                m.user,
                m.device_name,
                m.device_id,
                redoubt_proto::Bytes(m.certificate_fingerprint).to_hex()
            );
        }
    }
}
