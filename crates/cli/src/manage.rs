//! Device management commands: policies, directory groups, bulk import, remote lock and
//! wipe, revocation, roles and the audit log (`redoubt admin ...`), and a user's own
//! devices (`redoubt device ...`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use redoubt_client::{Profile, Session};
use redoubt_proto::{
    AuditEntry, CommandKind, DeviceId, DeviceSummary, DisplayName, GroupName, HistoryState, ImportedUser,
    PolicyReport, PolicyScope, PolicySettings, Request, Response, Role, UserName, verify_audit_log,
};
use serde_json::json;

use crate::output::{Output, print_json, say, time};

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Replace the policy at one scope with the settings in a TOML file (an empty file
    /// removes it). Scopes: `default`, `--group NAME`, `--user NAME`; the most specific
    /// wins, and between groups the strictest value.
    Set {
        /// `default` for the organisation-wide policy.
        #[arg(value_parser = ["default"], required_unless_present_any = ["group", "user"])]
        scope: Option<String>,
        #[arg(long, conflicts_with_all = ["scope", "user"])]
        group: Option<String>,
        #[arg(long, conflicts_with = "scope")]
        user: Option<String>,
        /// Settings, e.g. `passcode_required = true`.
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
    },
    /// Show the policy documents, and with --user that user's effective policy and where
    /// each setting came from.
    Show {
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DirectoryGroupCommand {
    /// Create a directory group (a policy scope).
    Create { group: String },
    /// Add a user to a directory group.
    Add { group: String, user: String },
    /// Remove a user from a directory group.
    Remove { group: String, user: String },
    /// List directory groups and their members.
    List,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RoleCommand {
    /// Grant a role: admin, helpdesk or auditor.
    Grant { user: String, role: String },
    /// Take a role away.
    Revoke { user: String, role: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Print audit entries, oldest first.
    List {
        /// Only entries from this time on: RFC 3339 (2026-11-22T10:00:00Z) or an age (2h, 7d).
        #[arg(long)]
        since: Option<String>,
    },
    /// Check the whole log: every hash link and every organisation-signed checkpoint.
    Verify,
}

#[derive(Debug, Subcommand)]
pub(crate) enum OwnDeviceCommand {
    /// List your devices.
    List,
    /// Approve a new device of yours (when the organisation's policy asks for approval).
    Approve {
        /// Device id (or a unique prefix) or name.
        device: String,
    },
}

fn user_name(text: &str) -> Result<UserName> {
    UserName::parse(text).with_context(|| format!("invalid user name {text:?}"))
}

fn group_name(text: &str) -> Result<GroupName> {
    GroupName::parse(text).with_context(|| format!("invalid group name {text:?}"))
}

fn role(text: &str) -> Result<Role> {
    Role::parse(text).with_context(|| {
        let known: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown role {text:?}; roles are {}", known.join(", "))
    })
}

/// Reads a policy file: unknown settings and bad values are refused, naming them.
pub(crate) fn read_policy_file(path: &Path) -> Result<PolicySettings> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_policy(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Parses policy settings in the policy-file format (TOML): unknown settings and bad
/// values are refused, naming them.
pub(crate) fn parse_policy(text: &str) -> Result<PolicySettings> {
    let settings: PolicySettings = toml::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{}; known settings: {}",
            e.message(),
            PolicySettings::NAMES.join(", ")
        )
    })?;
    settings.validate().map_err(anyhow::Error::msg)?;
    Ok(settings)
}

fn done(response: Response, what: &str) -> Result<()> {
    match response {
        Response::Done => Ok(()),
        other => bail!("unexpected answer to {what}: {other:?}"),
    }
}

pub(crate) async fn policy(session: &mut Session, command: PolicyCommand, out: &Output) -> Result<()> {
    match command {
        PolicyCommand::Set {
            group, user, file, ..
        } => {
            let scope = match (group, user) {
                (Some(group), _) => PolicyScope::Group(group_name(&group)?),
                (_, Some(user)) => PolicyScope::User(user_name(&user)?),
                _ => PolicyScope::Default,
            };
            let settings = read_policy_file(&file)?;
            let response = session
                .request(Request::AdminPolicySet {
                    scope: scope.clone(),
                    settings,
                })
                .await?;
            let Response::PolicySet { version } = response else {
                bail!("unexpected answer to AdminPolicySet");
            };
            if out.is_json() {
                print_json(&json!({ "scope": scope.to_string(), "version": version }));
            } else {
                say!("Policy for {scope} set; the organisation's policy version is now {version}.");
                say!("Devices apply it before their next request.");
            }
        }
        PolicyCommand::Show { user } => {
            let user = user.as_deref().map(user_name).transpose()?;
            let Response::PolicyReport(report) = session.request(Request::AdminPolicyShow { user }).await?
            else {
                bail!("unexpected answer to AdminPolicyShow");
            };
            print_policy(&report, out);
        }
    }
    Ok(())
}

pub(crate) fn policy_json(report: &PolicyReport) -> serde_json::Value {
    let documents: Vec<_> = report
        .documents
        .iter()
        .map(|(scope, settings)| {
            let values: serde_json::Map<_, _> = settings
                .entries()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), json!(v)))
                .collect();
            json!({ "scope": scope.to_string(), "settings": values })
        })
        .collect();
    let effective = report.effective.as_ref().map(|e| {
        let settings: Vec<_> = e
            .origins
            .iter()
            .map(|o| json!({ "setting": o.setting, "value": o.value, "source": o.source.to_string() }))
            .collect();
        json!({ "user": e.user.as_str(), "settings": settings })
    });
    json!({ "version": report.version, "documents": documents, "effective": effective })
}

fn print_policy(report: &PolicyReport, out: &Output) {
    if out.is_json() {
        print_json(&policy_json(report));
        return;
    }
    say!("Policy version {}", report.version);
    if report.documents.is_empty() {
        say!("No policy documents: every device runs the built-in defaults.");
    }
    for (scope, settings) in &report.documents {
        say!("\n[{scope}]");
        for (name, value) in settings.entries() {
            say!("  {name} = {value}");
        }
    }
    if let Some(effective) = &report.effective {
        say!("\nEffective policy for {}:", effective.user);
        say!("  {:<28} {:<12} FROM", "SETTING", "VALUE");
        for origin in &effective.origins {
            say!("  {:<28} {:<12} {}", origin.setting, origin.value, origin.source);
        }
    }
}

pub(crate) async fn directory_group(
    session: &mut Session,
    command: DirectoryGroupCommand,
    out: &Output,
) -> Result<()> {
    match command {
        DirectoryGroupCommand::Create { group } => {
            let group = group_name(&group)?;
            done(
                session
                    .request(Request::AdminGroupCreate { group: group.clone() })
                    .await?,
                "AdminGroupCreate",
            )?;
            out.note(&format!("Directory group {group} created."));
        }
        DirectoryGroupCommand::Add { group, user } => {
            let (group, user) = (group_name(&group)?, user_name(&user)?);
            let request = Request::AdminGroupMember {
                group: group.clone(),
                user: user.clone(),
                add: true,
            };
            done(session.request(request).await?, "AdminGroupMember")?;
            out.note(&format!("{user} added to {group}."));
        }
        DirectoryGroupCommand::Remove { group, user } => {
            let (group, user) = (group_name(&group)?, user_name(&user)?);
            let request = Request::AdminGroupMember {
                group: group.clone(),
                user: user.clone(),
                add: false,
            };
            done(session.request(request).await?, "AdminGroupMember")?;
            out.note(&format!("{user} removed from {group}."));
        }
        DirectoryGroupCommand::List => {
            let Response::DirectoryGroups(groups) = session.request(Request::AdminGroupList).await? else {
                bail!("unexpected answer to AdminGroupList");
            };
            if out.is_json() {
                print_json(&groups_json(&groups));
            } else {
                for g in &groups {
                    let members: Vec<_> = g.members.iter().map(UserName::as_str).collect();
                    say!("{:<20} {}", g.name, members.join(", "));
                }
            }
        }
    }
    Ok(())
}

/// Directory groups as `admin group list --json` prints them.
pub(crate) fn groups_json(groups: &[redoubt_proto::DirectoryGroup]) -> serde_json::Value {
    let rows: Vec<_> = groups
        .iter()
        .map(|g| {
            json!({
                "group": g.name.as_str(),
                "members": g.members.iter().map(UserName::as_str).collect::<Vec<_>>(),
                "created_at": time(g.created_at_unix_s),
            })
        })
        .collect();
    json!(rows)
}

/// Splits one CSV line: commas separate fields; a field in double quotes may hold commas
/// and doubled quotes.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if field.is_empty() => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(field);
    Ok(fields.into_iter().map(|f| f.trim().to_owned()).collect())
}

/// Parses `user,display_name,groups,roles` (groups and roles separated by `;`). Every
/// problem is reported with its line number; nothing is sent if there is any.
pub(crate) fn parse_import(text: &str) -> Result<Vec<ImportedUser>> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        bail!("the file is empty; expected a header line: user,display_name,groups,roles");
    };
    let header = csv_fields(header).map_err(|e| anyhow::anyhow!("line 1: {e}"))?;
    if header.first().map(String::as_str) != Some("user") {
        bail!("line 1: expected a header line: user,display_name,groups,roles");
    }
    let column = |name: &str| header.iter().position(|h| h == name);
    let (display, groups, roles) = (column("display_name"), column("groups"), column("roles"));
    if let Some(unknown) = header
        .iter()
        .find(|h| !["user", "display_name", "groups", "roles"].contains(&h.as_str()))
    {
        bail!("line 1: unknown column {unknown:?}; columns are user, display_name, groups, roles");
    }
    let mut users = Vec::new();
    let mut problems = Vec::new();
    for (index, line) in lines {
        let number = index + 1;
        let fields = match csv_fields(line) {
            Ok(fields) => fields,
            Err(e) => {
                problems.push(format!("line {number}: {e}"));
                continue;
            }
        };
        let get = |i: Option<usize>| i.and_then(|i| fields.get(i)).map(String::as_str).unwrap_or("");
        let list = |text: &str| {
            text.split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let mut row_problems = Vec::new();
        let user = UserName::parse(get(Some(0))).map_err(|e| row_problems.push(format!("user: {e}")));
        let display_name = match get(display) {
            "" => Ok(None),
            text => DisplayName::parse(text)
                .map(Some)
                .map_err(|e| row_problems.push(format!("display_name: {e}"))),
        };
        let group_list: Vec<_> = list(get(groups))
            .iter()
            .filter_map(|g| {
                GroupName::parse(g)
                    .map_err(|e| row_problems.push(format!("group {g:?}: {e}")))
                    .ok()
            })
            .collect();
        let role_list: Vec<_> = list(get(roles))
            .iter()
            .filter_map(|r| {
                Role::parse(r)
                    .ok_or_else(|| row_problems.push(format!("unknown role {r:?}")))
                    .ok()
            })
            .collect();
        match (user, display_name) {
            (Ok(user), Ok(display_name)) if row_problems.is_empty() => users.push(ImportedUser {
                user,
                display_name,
                groups: group_list,
                roles: role_list,
            }),
            _ => problems.push(format!("line {number}: {}", row_problems.join("; "))),
        }
    }
    if !problems.is_empty() {
        bail!("nothing imported; fix these lines:\n  {}", problems.join("\n  "));
    }
    if users.is_empty() {
        bail!("the file lists no users");
    }
    Ok(users)
}

pub(crate) async fn import(session: &mut Session, path: &Path, out: &Output) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let users = parse_import(&text)?;
    let Response::Imported(issued) = session.request(Request::AdminUserImport { users }).await? else {
        bail!("unexpected answer to AdminUserImport");
    };
    if out.is_json() {
        print_json(&import_json(&issued));
    } else {
        say!(
            "Imported {} user(s). Give each their activation code:",
            issued.len()
        );
        for i in &issued {
            say!(
                "  {:<20} {}  (expires {})",
                i.user,
                i.code,
                time(i.expires_at_unix_s)
            );
        }
    }
    Ok(())
}

/// What an import issued, as `admin user import --json` prints it.
pub(crate) fn import_json(issued: &[redoubt_proto::IssuedActivationCode]) -> serde_json::Value {
    let rows: Vec<_> = issued
        .iter()
        .map(|i| json!({ "user": i.user.as_str(), "activation_code": i.code, "expires_at": time(i.expires_at_unix_s) }))
        .collect();
    json!({ "imported": issued.len(), "users": rows })
}

/// Finds a device by id, unique id prefix (4+ hex digits) or unique name.
pub(crate) fn resolve_device(devices: &[DeviceSummary], text: &str) -> Result<DeviceId> {
    let text = text.trim();
    let by_id: Vec<_> = if text.len() >= 4 && text.chars().all(|c| c.is_ascii_hexdigit()) {
        let lower = text.to_ascii_lowercase();
        devices
            .iter()
            .filter(|d| d.device_id.to_string().starts_with(&lower))
            .collect()
    } else {
        Vec::new()
    };
    let candidates = if by_id.is_empty() {
        devices.iter().filter(|d| d.name.as_str() == text).collect()
    } else {
        by_id
    };
    match candidates.as_slice() {
        [one] => Ok(one.device_id),
        [] => bail!("no device matches {text:?} (see `redoubt admin device list`)"),
        many => bail!(
            "{text:?} matches {} devices; give more of the id: {}",
            many.len(),
            many.iter()
                .map(|d| d.device_id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

async fn all_devices(session: &mut Session) -> Result<Vec<DeviceSummary>> {
    match session.request(Request::AdminDeviceList { user: None }).await? {
        Response::Devices(devices) => Ok(devices),
        _ => bail!("unexpected answer to AdminDeviceList"),
    }
}

pub(crate) async fn device_command(
    session: &mut Session,
    device: &str,
    kind: CommandKind,
    out: &Output,
) -> Result<()> {
    let devices = all_devices(session).await?;
    let device_id = resolve_device(&devices, device)?;
    let Response::CommandIssued { command_id } = session
        .request(Request::AdminDeviceCommand {
            device: device_id,
            kind,
        })
        .await?
    else {
        bail!("unexpected answer to AdminDeviceCommand");
    };
    if out.is_json() {
        print_json(
            &json!({ "device_id": device_id.to_string(), "command": kind.as_str(), "command_id": command_id, "state": "pending" }),
        );
    } else {
        say!(
            "{kind} command {command_id} sent to device {device_id}: pending until the device acknowledges it."
        );
        say!("An online device gets it at once; an offline one when it next connects.");
    }
    Ok(())
}

pub(crate) async fn device_revoke(session: &mut Session, device: &str, out: &Output) -> Result<()> {
    let devices = all_devices(session).await?;
    let device_id = resolve_device(&devices, device)?;
    let Response::Revoked { groups } = session
        .request(Request::AdminDeviceRevoke { device: device_id })
        .await?
    else {
        bail!("unexpected answer to AdminDeviceRevoke");
    };
    if out.is_json() {
        print_json(&json!({ "device_id": device_id.to_string(), "revoked": true, "groups": groups }));
    } else {
        say!("Device {device_id} revoked: its sessions are closed and it can no longer connect.");
        say!(
            "The organisation proposed removing it from {groups} conversation(s); the next member online commits it."
        );
    }
    Ok(())
}

pub(crate) async fn roles(session: &mut Session, command: RoleCommand, out: &Output) -> Result<()> {
    let (user, role_text, grant) = match &command {
        RoleCommand::Grant { user, role } => (user, role, true),
        RoleCommand::Revoke { user, role } => (user, role, false),
    };
    let (user, role) = (user_name(user)?, role(role_text)?);
    let request = Request::AdminRole {
        user: user.clone(),
        role,
        grant,
    };
    done(session.request(request).await?, "AdminRole")?;
    out.note(&if grant {
        format!("{user} now has the {role} role.")
    } else {
        format!("{user} no longer has the {role} role.")
    });
    Ok(())
}

/// Every audit entry and checkpoint, page by page.
pub(crate) async fn whole_audit_log(
    session: &mut Session,
) -> Result<(
    Vec<AuditEntry>,
    Vec<redoubt_proto::Signed<redoubt_proto::CheckpointBody>>,
)> {
    let mut entries = Vec::new();
    let mut checkpoints = Vec::new();
    loop {
        let after_seq = entries.last().map_or(0, |e: &AuditEntry| e.seq);
        let Response::Audit {
            entries: page,
            checkpoints: signed,
            last_seq,
        } = session
            .request(Request::AdminAuditList {
                after_seq,
                limit: 1_000,
            })
            .await?
        else {
            bail!("unexpected answer to AdminAuditList");
        };
        let empty = page.is_empty();
        entries.extend(page);
        checkpoints.extend(signed);
        if empty || entries.last().map_or(0, |e| e.seq) >= last_seq {
            return Ok((entries, checkpoints));
        }
    }
}

/// An audit entry as `admin audit list --json` prints it.
pub(crate) fn audit_entry_json(e: &AuditEntry) -> serde_json::Value {
    json!({
        "seq": e.seq,
        "at": time(e.at_unix_s),
        "at_unix_s": e.at_unix_s,
        "actor": e.actor_user.as_ref().map(UserName::as_str),
        "actor_device": e.actor_device.map(|d| d.to_string()),
        "action": e.action,
        "subject": e.subject,
        "details": e.details,
        "hash": e.hash.to_hex(),
    })
}

fn since(text: &str) -> Result<i64> {
    if let Ok(age) = humantime::parse_duration(text) {
        let now = std::time::SystemTime::now();
        let then = now.checked_sub(age).context("--since is too far back")?;
        return Ok(then
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
    }
    let time = humantime::parse_rfc3339_weak(text)
        .with_context(|| format!("--since {text:?}: give an RFC 3339 time or an age such as 2h"))?;
    Ok(time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
}

pub(crate) async fn audit(
    session: &mut Session,
    profile: &Profile,
    command: AuditCommand,
    out: &Output,
) -> Result<()> {
    let (entries, checkpoints) = whole_audit_log(session).await?;
    match command {
        AuditCommand::List { since: from } => {
            let from = from.as_deref().map(since).transpose()?.unwrap_or(i64::MIN);
            let shown: Vec<_> = entries.iter().filter(|e| e.at_unix_s >= from).collect();
            if out.is_json() {
                let rows: Vec<_> = shown.iter().map(|e| audit_entry_json(e)).collect();
                print_json(&json!(rows));
            } else {
                say!(
                    "{:>6}  {:<20}  {:<12} {:<26} {:<40} DETAILS",
                    "SEQ",
                    "TIME",
                    "ACTOR",
                    "ACTION",
                    "SUBJECT"
                );
                for e in shown {
                    say!(
                        "{:>6}  {:<20}  {:<12} {:<26} {:<40} {}",
                        e.seq,
                        time(e.at_unix_s),
                        e.actor_user.as_ref().map_or("server", UserName::as_str),
                        e.action,
                        e.subject,
                        e.details
                    );
                }
            }
        }
        AuditCommand::Verify => {
            let org_key = ed25519_dalek_key(profile)?;
            match verify_audit_log(&entries, &checkpoints, &org_key, &profile.org_id()) {
                Ok(verified) => {
                    if out.is_json() {
                        print_json(
                            &json!({ "verified": true, "entries": verified.entries, "signed_through": verified.signed_through }),
                        );
                    } else {
                        say!(
                            "Audit log verified: {} entries, each linked to the one before; \
                             signed by the organisation through entry {}.",
                            verified.entries,
                            verified.signed_through
                        );
                    }
                }
                Err(broken) => bail!("audit log does NOT verify: {broken}"),
            }
        }
    }
    Ok(())
}

pub(crate) fn ed25519_dalek_key(profile: &Profile) -> Result<ed25519_dalek::VerifyingKey> {
    ed25519_dalek::VerifyingKey::from_bytes(&profile.org_public_key)
        .context("the organisation key in the profile is invalid")
}

pub(crate) async fn own_device(
    session: &mut Session,
    command: OwnDeviceCommand,
    seen_only_in_log: &[redoubt_proto::DeviceId],
    out: &Output,
) -> Result<()> {
    let Response::Devices(devices) = session.request(Request::OwnDevices).await? else {
        bail!("unexpected answer to OwnDevices");
    };
    match command {
        OwnDeviceCommand::List => out.own_devices(&devices, seen_only_in_log),
        OwnDeviceCommand::Approve { device } => {
            let device_id = resolve_device(&devices, &device)?;
            let certificate = devices
                .iter()
                .find(|d| d.device_id == device_id)
                .map(|d| d.certificate.as_slice())
                .unwrap_or_default();
            let approval = session.profile().approve(device_id, certificate)?;
            done(
                session
                    .request(Request::DeviceApprove {
                        device: device_id,
                        approval,
                    })
                    .await?,
                "DeviceApprove",
            )?;
            out.note(&format!("Device {device_id} approved; it can now connect."));
        }
    }
    Ok(())
}

/// Device rows with management state, for `admin device list`.
pub(crate) fn device_json(d: &DeviceSummary) -> serde_json::Value {
    let commands: Vec<_> = d
        .commands
        .iter()
        .map(|c| {
            json!({
                "command_id": c.command_id,
                "command": c.kind.as_str(),
                "issued_by": c.issued_by.as_str(),
                "issued_at": time(c.issued_at_unix_s),
                "state": if c.acknowledged_at_unix_s.is_some() { "acknowledged" } else { "pending" },
                "acknowledged_at": c.acknowledged_at_unix_s.map(time),
            })
        })
        .collect();
    json!({
        "device_id": d.device_id.to_string(),
        "user": d.user.as_str(),
        "name": d.name.as_str(),
        "public_key": d.public_key.to_hex(),
        "certificate_serial": d.certificate_serial,
        "certificate_expires_at": time(d.certificate_not_after_unix_s),
        "created_at": time(d.created_at_unix_s),
        "last_seen_at": d.last_seen_at_unix_s.map(time),
        "revoked_at": d.revoked_at_unix_s.map(time),
        "approved": d.approved,
        "policy_version_acked": d.policy_version_acked,
        "commands": commands,
        "history": d.history.as_ref().map(|h| json!({
            "state": h.state.as_str(),
            "source_device": h.source.map(|s| s.to_string()),
            "sent_at": h.sent_at_unix_s.map(time),
            "received_at": h.received_at_unix_s.map(time),
            "messages": h.messages,
        })),
    })
}

/// One word for a device's state in tables.
pub(crate) fn device_state(d: &DeviceSummary) -> String {
    if d.revoked_at_unix_s.is_some() {
        return "revoked".into();
    }
    let pending: Vec<_> = d
        .commands
        .iter()
        .filter(|c| c.acknowledged_at_unix_s.is_none())
        .map(|c| format!("{} pending", c.kind))
        .collect();
    let mut state = if d.approved {
        "active".to_owned()
    } else {
        "awaiting approval".to_owned()
    };
    if !pending.is_empty() {
        state = format!("{state}, {}", pending.join(", "));
    }
    if let Some(history) = &d.history {
        let when = |at: Option<i64>| at.map(|at| format!(" {}", time(at))).unwrap_or_default();
        let history = match history.state {
            HistoryState::Waiting => "history waiting".to_owned(),
            HistoryState::Sending => "history being sent".to_owned(),
            HistoryState::Sent => format!(
                "history sent{} ({} messages)",
                when(history.sent_at_unix_s),
                history.messages
            ),
            HistoryState::Received => format!(
                "history received{} ({} messages)",
                when(history.received_at_unix_s),
                history.messages
            ),
        };
        state = format!("{state}, {history}");
    }
    state
}
