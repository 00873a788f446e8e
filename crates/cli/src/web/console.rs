//! The admin console: the same requests `redoubt admin …` sends, from this device, so the
//! server checks this device's roles on every one (a helpdesk or an auditor gets 403 for
//! what their role does not allow, whatever the page shows).

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use redoubt_proto::{CommandKind, DisplayName, GroupName, PolicyScope, Request, Response, Role};
use serde::Deserialize;
use serde_json::{Value, json};

use super::conversations::user;
use super::device::Core;
use super::{ApiError, ApiResult, Web};
use crate::manage;
use crate::output::{code_json, qr_svg, users_json};

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/api/admin/dashboard", get(dashboard))
        .route("/api/admin/users", get(users).post(add_user))
        .route("/api/admin/users/import", post(import))
        .route("/api/admin/users/{user}/devices", post(add_device))
        .route("/api/admin/devices", get(devices))
        .route("/api/admin/devices/{device}/{action}", post(device_action))
        .route("/api/admin/groups", get(groups).post(create_group))
        .route("/api/admin/groups/{group}/members", post(group_member))
        .route("/api/admin/policies", get(policies).post(set_policy))
        .route("/api/admin/roles", post(role))
        .route("/api/admin/audit", get(audit))
        .route("/api/admin/audit/verify", post(verify_audit))
        .route("/api/admin/mail", get(mail))
        .route("/api/admin/directory", get(directory))
        .route("/api/admin/directory/sync", post(directory_sync))
        .route("/api/admin/cluster", get(cluster))
}

/// Sends one admin request from this device.
async fn ask(core: &mut Core, request: Request) -> Result<Response, ApiError> {
    Ok(core.messenger()?.session().request(request).await?)
}

fn unexpected(what: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::BAD_GATEWAY,
        "protocol",
        format!("unexpected answer to {what}"),
    )
}

fn group(text: &str) -> Result<GroupName, ApiError> {
    GroupName::parse(text.trim()).map_err(|e| ApiError::invalid(format!("group name {text:?}: {e}")))
}

/// Sends `request` and returns `None` when the device's roles do not allow it: the
/// dashboard shows what the role may see.
async fn ask_if_allowed(core: &mut Core, request: Request) -> Result<Option<Response>, ApiError> {
    match core.messenger()?.session().request(request).await {
        Ok(response) => Ok(Some(response)),
        Err(redoubt_client::ClientError::Server(body))
            if body.code == redoubt_proto::ErrorCode::Forbidden =>
        {
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

async fn dashboard(State(web): State<Web>) -> ApiResult {
    let mut core = web.device.lock().await;
    let org_key = manage::ed25519_dalek_key(core.messenger()?.profile())?;
    let mut value = json!({});
    if let Some(response) = ask_if_allowed(&mut core, Request::AdminStats).await? {
        let Response::Stats(stats) = response else {
            return Err(unexpected("AdminStats"));
        };
        value["stats"] = serde_json::to_value(&stats).unwrap_or_default();
        value["storage_bytes"] = json!(stats.database_bytes.unwrap_or(0) + stats.blob_bytes.unwrap_or(0));
    }
    if let Some(response) = ask_if_allowed(&mut core, Request::AdminUserList).await? {
        let Response::Users(users) = response else {
            return Err(unexpected("AdminUserList"));
        };
        value["users"] = json!(users.len());
    }
    if let Some(response) = ask_if_allowed(&mut core, Request::AdminDeviceList { user: None }).await? {
        let Response::Devices(devices) = response else {
            return Err(unexpected("AdminDeviceList"));
        };
        let active: Vec<_> = devices.iter().filter(|d| d.revoked_at_unix_s.is_none()).collect();
        value["devices"] = json!(active.len());
        value["commands_pending"] = json!(
            active
                .iter()
                .flat_map(|d| &d.commands)
                .filter(|c| c.acknowledged_at_unix_s.is_none())
                .count()
        );
    }
    if let Some(response) = ask_if_allowed(&mut core, Request::AdminPolicyShow { user: None }).await? {
        let Response::PolicyReport(policy) = response else {
            return Err(unexpected("AdminPolicyShow"));
        };
        value["policy_version"] = json!(policy.version);
    }
    if let Some(response) = ask_if_allowed(
        &mut core,
        Request::AdminAuditList {
            after_seq: 0,
            limit: 1,
        },
    )
    .await?
    {
        let Response::Audit {
            last_seq,
            checkpoints,
            ..
        } = response
        else {
            return Err(unexpected("AdminAuditList"));
        };
        // Only a checkpoint the organisation's key signed is shown.
        let last = checkpoints.last().and_then(|c| c.verify(&org_key).ok());
        value["audit"] = json!({
            "entries": last_seq,
            "last_checkpoint_seq": last.as_ref().map(|c| c.seq),
            "last_checkpoint_at": last.as_ref().map(|c| crate::output::time(c.at_unix_s)),
        });
    }
    // Devices online and messages per minute are the answering node's (AdminStats).
    if let Some(stats) = value.get("stats").cloned() {
        value["devices_online"] = stats["devices_online"].clone();
        value["messages_last_minute"] = stats["messages_last_minute"].clone();
    }
    Ok(Json(value))
}

async fn users(State(web): State<Web>) -> ApiResult {
    let mut core = web.device.lock().await;
    let Response::Users(users) = ask(&mut core, Request::AdminUserList).await? else {
        return Err(unexpected("AdminUserList"));
    };
    Ok(Json(users_json(&users)))
}

/// A code for the page: as the CLI prints it, with its QR code as an SVG image.
fn code_for_page(issued: &redoubt_proto::IssuedActivationCode) -> Value {
    let mut value = code_json(issued);
    value["qr_svg"] = json!(qr_svg(&issued.code));
    value
}

#[derive(Deserialize)]
struct NewUser {
    user: String,
    display_name: Option<String>,
}

async fn add_user(State(web): State<Web>, Json(body): Json<NewUser>) -> ApiResult {
    let display_name = body
        .display_name
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(DisplayName::parse)
        .transpose()
        .map_err(|e| ApiError::invalid(format!("display name: {e}")))?;
    let user = user(&body.user)?;
    let mut core = web.device.lock().await;
    let issued = core
        .messenger()?
        .session()
        .admin_user_add(user, display_name)
        .await?;
    Ok(Json(code_for_page(&issued)))
}

async fn add_device(State(web): State<Web>, Path(name): Path<String>) -> ApiResult {
    let user = user(&name)?;
    let mut core = web.device.lock().await;
    let issued = core.messenger()?.session().admin_device_add(user).await?;
    Ok(Json(code_for_page(&issued)))
}

async fn import(State(web): State<Web>, csv: String) -> ApiResult {
    let users = manage::parse_import(&csv)?;
    let mut core = web.device.lock().await;
    let Response::Imported(issued) = ask(&mut core, Request::AdminUserImport { users }).await? else {
        return Err(unexpected("AdminUserImport"));
    };
    Ok(Json(manage::import_json(&issued)))
}

#[derive(Deserialize)]
struct UserQuery {
    user: Option<String>,
}

impl UserQuery {
    /// `?user=NAME`, absent or empty for none.
    fn user(&self) -> Result<Option<redoubt_proto::UserName>, ApiError> {
        self.user
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(user)
            .transpose()
    }
}

async fn devices(State(web): State<Web>, Query(query): Query<UserQuery>) -> ApiResult {
    let user = query.user()?;
    let mut core = web.device.lock().await;
    let Response::Devices(devices) = ask(&mut core, Request::AdminDeviceList { user }).await? else {
        return Err(unexpected("AdminDeviceList"));
    };
    Ok(Json(json!(
        devices.iter().map(manage::device_json).collect::<Vec<_>>()
    )))
}

async fn device_action(State(web): State<Web>, Path((device, action)): Path<(String, String)>) -> ApiResult {
    let kind = match action.as_str() {
        "lock" => Some(CommandKind::Lock),
        "unlock" => Some(CommandKind::Unlock),
        "wipe" => Some(CommandKind::Wipe),
        "revoke" => None,
        other => return Err(ApiError::not_found(format!("no device action {other:?}"))),
    };
    let device =
        redoubt_proto::DeviceId::parse(&device).map_err(|e| ApiError::invalid(format!("device id: {e}")))?;
    let mut core = web.device.lock().await;
    match kind {
        Some(kind) => {
            let Response::CommandIssued { command_id } =
                ask(&mut core, Request::AdminDeviceCommand { device, kind }).await?
            else {
                return Err(unexpected("AdminDeviceCommand"));
            };
            Ok(Json(
                json!({ "device_id": device.to_string(), "command": kind.as_str(), "command_id": command_id, "state": "pending" }),
            ))
        }
        None => {
            let Response::Revoked { groups } = ask(&mut core, Request::AdminDeviceRevoke { device }).await?
            else {
                return Err(unexpected("AdminDeviceRevoke"));
            };
            Ok(Json(
                json!({ "device_id": device.to_string(), "revoked": true, "groups": groups }),
            ))
        }
    }
}

async fn groups(State(web): State<Web>) -> ApiResult {
    let mut core = web.device.lock().await;
    let Response::DirectoryGroups(groups) = ask(&mut core, Request::AdminGroupList).await? else {
        return Err(unexpected("AdminGroupList"));
    };
    Ok(Json(manage::groups_json(&groups)))
}

#[derive(Deserialize)]
struct NewGroup {
    group: String,
}

async fn create_group(State(web): State<Web>, Json(body): Json<NewGroup>) -> ApiResult {
    let group = group(&body.group)?;
    let mut core = web.device.lock().await;
    ask(&mut core, Request::AdminGroupCreate { group }).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct GroupMember {
    user: String,
    add: bool,
}

async fn group_member(
    State(web): State<Web>,
    Path(name): Path<String>,
    Json(body): Json<GroupMember>,
) -> ApiResult {
    let request = Request::AdminGroupMember {
        group: group(&name)?,
        user: user(&body.user)?,
        add: body.add,
    };
    let mut core = web.device.lock().await;
    ask(&mut core, request).await?;
    Ok(Json(json!({})))
}

async fn policies(State(web): State<Web>, Query(query): Query<UserQuery>) -> ApiResult {
    let user = query.user()?;
    let mut core = web.device.lock().await;
    let Response::PolicyReport(report) = ask(&mut core, Request::AdminPolicyShow { user }).await? else {
        return Err(unexpected("AdminPolicyShow"));
    };
    let mut value = manage::policy_json(&report);
    // The page edits each scope's document in the policy-file format.
    if let Some(documents) = value["documents"].as_array_mut() {
        for (document, (_, settings)) in documents.iter_mut().zip(&report.documents) {
            document["settings_toml"] = json!(toml::to_string(settings).unwrap_or_default());
        }
    }
    value["settings_known"] = json!(redoubt_proto::PolicySettings::NAMES);
    Ok(Json(value))
}

#[derive(Deserialize)]
struct SetPolicy {
    scope: String,
    settings_toml: String,
}

/// `org` (or `default`), `group:NAME` or `user:NAME`.
fn scope(text: &str) -> Result<PolicyScope, ApiError> {
    match text.trim().split_once(':') {
        None if matches!(text.trim(), "org" | "default") => Ok(PolicyScope::Default),
        Some(("group", name)) => Ok(PolicyScope::Group(group(name)?)),
        Some(("user", name)) => Ok(PolicyScope::User(user(name)?)),
        _ => Err(ApiError::invalid(format!(
            "scope {text:?}: use org, group:NAME or user:NAME"
        ))),
    }
}

async fn set_policy(State(web): State<Web>, Json(body): Json<SetPolicy>) -> ApiResult {
    let scope = scope(&body.scope)?;
    let settings = manage::parse_policy(&body.settings_toml)?;
    let mut core = web.device.lock().await;
    let Response::PolicySet { version } = ask(
        &mut core,
        Request::AdminPolicySet {
            scope: scope.clone(),
            settings,
        },
    )
    .await?
    else {
        return Err(unexpected("AdminPolicySet"));
    };
    Ok(Json(json!({ "scope": scope.to_string(), "version": version })))
}

#[derive(Deserialize)]
struct RoleChange {
    user: String,
    role: String,
    grant: bool,
}

async fn role(State(web): State<Web>, Json(body): Json<RoleChange>) -> ApiResult {
    let role = Role::parse(&body.role)
        .ok_or_else(|| ApiError::invalid(format!("role {:?}: use admin, helpdesk or auditor", body.role)))?;
    let request = Request::AdminRole {
        user: user(&body.user)?,
        role,
        grant: body.grant,
    };
    let mut core = web.device.lock().await;
    ask(&mut core, request).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct AuditQuery {
    since: Option<i64>,
    action: Option<String>,
    limit: Option<usize>,
}

/// Entries shown at most (the newest of those that match).
const AUDIT_SHOWN_MAX: usize = 1_000;

async fn audit(State(web): State<Web>, Query(query): Query<AuditQuery>) -> ApiResult {
    let mut core = web.device.lock().await;
    let (entries, _) = manage::whole_audit_log(core.messenger()?.session()).await?;
    let action = query.action.as_deref().map(str::trim).unwrap_or("");
    let since = query.since.unwrap_or(i64::MIN);
    let matching: Vec<_> = entries
        .iter()
        .filter(|e| e.at_unix_s >= since && e.action.starts_with(action))
        .collect();
    let limit = query.limit.unwrap_or(AUDIT_SHOWN_MAX).min(AUDIT_SHOWN_MAX);
    let shown = &matching[matching.len().saturating_sub(limit)..];
    Ok(Json(json!(
        shown
            .iter()
            .map(|e| manage::audit_entry_json(e))
            .collect::<Vec<_>>()
    )))
}

async fn verify_audit(State(web): State<Web>) -> ApiResult {
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let profile = messenger.profile().clone();
    let (entries, checkpoints) = manage::whole_audit_log(messenger.session()).await?;
    let org_key = manage::ed25519_dalek_key(&profile)?;
    Ok(Json(
        match redoubt_proto::verify_audit_log(&entries, &checkpoints, &org_key, &profile.org_id()) {
            Ok(verified) => json!({
                "ok": true,
                "entries": verified.entries,
                "signed_through": verified.signed_through,
                "message": format!(
                    "Audit log verified: {} entries, each linked to the one before; signed by the organisation through entry {}.",
                    verified.entries, verified.signed_through
                ),
            }),
            Err(broken) => json!({
                "ok": false,
                "entries": entries.len(),
                "message": format!("The audit log does NOT verify: {broken}"),
            }),
        },
    ))
}

async fn mail(State(web): State<Web>) -> ApiResult {
    let mut core = web.device.lock().await;
    let Response::MailSettings(view) = ask(&mut core, Request::AdminMailShow).await? else {
        return Err(unexpected("AdminMailShow"));
    };
    Ok(Json(serde_json::to_value(&view).unwrap_or_default()))
}

async fn directory(State(web): State<Web>) -> ApiResult {
    let mut core = web.device.lock().await;
    let Response::DirectoryStatus(status) = ask(&mut core, Request::AdminDirectoryShow).await? else {
        return Err(unexpected("AdminDirectoryShow"));
    };
    Ok(Json(crate::directory::status_json(&status)))
}

#[derive(Deserialize)]
struct Sync {
    #[serde(default)]
    dry_run: bool,
}

async fn directory_sync(State(web): State<Web>, Json(body): Json<Sync>) -> ApiResult {
    let mut core = web.device.lock().await;
    let request = Request::AdminDirectorySync {
        dry_run: body.dry_run,
        force: false,
        adopt: false,
    };
    let Response::DirectorySync(report) = ask(&mut core, request).await? else {
        return Err(unexpected("AdminDirectorySync"));
    };
    Ok(Json(crate::directory::report_json(&report, body.dry_run)))
}

async fn cluster(State(web): State<Web>) -> ApiResult {
    let mut core = web.device.lock().await;
    let Response::ClusterNodes(nodes) = ask(&mut core, Request::AdminClusterList).await? else {
        return Err(unexpected("AdminClusterList"));
    };
    Ok(Json(crate::cluster::nodes_json(&nodes)))
}
