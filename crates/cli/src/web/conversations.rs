//! Conversations in the page: list, messages, send, files, members, search.

use axum::Json;
use axum::Router;
use axum::body::Bytes as Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::Response;
use axum::routing::{delete, get, post};
use redoubt_client::{Conversation, Messenger, Receipts, StoredMessage};
use redoubt_proto::{GroupId, UserName};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Web};
use crate::output::message_json;

/// Messages looked at for a conversation's last line in the list.
const LAST_LOOKBACK: u32 = 20;

/// Hits `GET /api/search` returns at most.
const SEARCH_HITS: usize = 200;

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/api/conversations", get(list).post(create))
        .route("/api/conversations/{id}/messages", get(messages).post(send))
        .route(
            "/api/conversations/{id}/files",
            post(send_file).layer(DefaultBodyLimit::max(super::UPLOAD_BYTES_MAX)),
        )
        .route("/api/conversations/{id}/read", post(read))
        .route("/api/conversations/{id}/members", get(members).post(add_member))
        .route("/api/conversations/{id}/members/{user}", delete(remove_member))
        .route("/api/messages/{id}/file", get(file))
        .route("/api/search", get(search))
        .route("/api/devices", get(own_devices))
        .route("/api/security", get(security))
        .route("/api/devices/{device}/approve", post(approve_device))
}

pub(super) fn user(text: &str) -> Result<UserName, ApiError> {
    UserName::parse(text.trim()).map_err(|e| ApiError::invalid(format!("user name {text:?}: {e}")))
}

/// The conversation with the hex group id `id` (the mailbox and transfer groups are not).
fn find(messenger: &Messenger, id: &str) -> Result<Conversation, ApiError> {
    let group_id = GroupId::parse(id).map_err(|e| ApiError::invalid(format!("conversation id: {e}")))?;
    messenger
        .conversation_by_id(&group_id)?
        .filter(|c| Some(c.group_id) != messenger.mailbox().ok().flatten().map(|m| m.group_id))
        .ok_or_else(|| ApiError::not_found("no such conversation"))
}

/// A message for the page: the CLI's JSON plus who sent it and how far it has come.
fn message(
    messenger: &Messenger,
    conversation: &Conversation,
    m: &StoredMessage,
    receipts: &Receipts,
) -> Value {
    let mine = m.sender_user == *messenger.profile().user();
    let mut value = message_json(conversation, m, receipts);
    value["mine"] = json!(mine);
    value["state"] = json!(if !receipts.read.is_empty() {
        "read"
    } else if !receipts.delivered.is_empty() {
        "delivered"
    } else {
        "sent"
    });
    value
}

async fn list(State(web): State<Web>) -> ApiResult {
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let mailbox = messenger.mailbox()?.map(|m| m.group_id);
    let mut rows = Vec::new();
    for conversation in messenger.conversations()? {
        if Some(conversation.group_id) == mailbox {
            continue;
        }
        // The newest message someone wrote (settings changes are events, not shown here).
        let newest = messenger.messages_after(&conversation, 0, true, LAST_LOOKBACK)?;
        let last = newest.iter().find(|m| !m.event).map(
            |m| json!({ "text": m.text, "sender": m.sender_user.as_str(), "at_unix_s": m.sent_at_unix_s }),
        );
        rows.push(json!({
            "id": conversation.group_id.to_string(),
            "name": conversation.name,
            "direct": conversation.peer.is_some(),
            "removed": conversation.removed,
            "unread": messenger.unread(&conversation)?,
            "last": last,
        }));
    }
    Ok(Json(json!(rows)))
}

#[derive(Deserialize)]
struct Create {
    name: Option<String>,
    #[serde(default)]
    members: Vec<String>,
    peer: Option<String>,
}

async fn create(State(web): State<Web>, Json(body): Json<Create>) -> ApiResult {
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let conversation = match (body.peer, body.name) {
        (Some(peer), _) => messenger.resolve_or_create(user(&peer)?.as_str()).await?,
        (None, Some(name)) => {
            let name = name.trim();
            if name.is_empty() {
                return Err(ApiError::invalid("give the group a name"));
            }
            if messenger.conversation(name)?.is_some() {
                return Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "already_exists",
                    format!("a conversation called {name:?} exists already"),
                ));
            }
            let members = body
                .members
                .iter()
                .map(|m| user(m))
                .collect::<Result<Vec<_>, _>>()?;
            messenger.create_group_sharing_history(name, &members, 0).await?
        }
        (None, None) => return Err(ApiError::invalid("give a group name and members, or a peer")),
    };
    let id = conversation.group_id.to_string();
    core.notify(json!({ "type": "sync", "conversations": [id], "mail": false }));
    Ok(Json(json!({
        "id": id,
        "name": conversation.name,
        "direct": conversation.peer.is_some(),
        "removed": conversation.removed,
        "unread": 0,
        "last": null,
    })))
}

#[derive(Deserialize)]
struct After {
    #[serde(default)]
    after: u64,
}

async fn messages(State(web): State<Web>, Path(id): Path<String>, Query(after): Query<After>) -> ApiResult {
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let conversation = find(messenger, &id)?;
    let receipts = messenger.receipts_after(&conversation, after.after)?;
    let none = Receipts::default();
    let rows: Vec<Value> = messenger
        .messages_after(&conversation, after.after, false, u32::MAX)?
        .iter()
        .map(|m| message(messenger, &conversation, m, receipts.get(&m.seq).unwrap_or(&none)))
        .collect();
    Ok(Json(json!(rows)))
}

#[derive(Deserialize)]
struct Text {
    text: String,
}

async fn send(State(web): State<Web>, Path(id): Path<String>, Json(body): Json<Text>) -> ApiResult {
    if body.text.trim().is_empty() {
        return Err(ApiError::invalid("the message is empty"));
    }
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let conversation = find(messenger, &id)?;
    let (conversation, seq) = messenger.send_text(&conversation.name, &body.text).await?;
    core.notify(json!({ "type": "sync", "conversations": [id], "mail": false }));
    Ok(Json(json!({ "id": conversation.message_id(seq), "seq": seq })))
}

#[derive(Deserialize)]
struct FileName {
    name: String,
}

async fn send_file(
    State(web): State<Web>,
    Path(id): Path<String>,
    Query(file): Query<FileName>,
    body: Body,
) -> ApiResult {
    let name = attachment_name(&file.name)?;
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let conversation = find(messenger, &id)?;
    let (conversation, seq) = messenger
        .send_stream(&conversation.name, name, &body[..], body.len() as u64, |_, _| {})
        .await?;
    core.notify(json!({ "type": "sync", "conversations": [id], "mail": false }));
    Ok(Json(json!({ "id": conversation.message_id(seq), "seq": seq })))
}

/// A file name from the page: its last path component, printable, at most 255 bytes.
pub(super) fn attachment_name(name: &str) -> Result<String, ApiError> {
    let name = name.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    if name.is_empty()
        || name.len() > 255
        || name.chars().any(char::is_control)
        || name == "."
        || name == ".."
    {
        return Err(ApiError::invalid(
            "a file name of 1 to 255 printable bytes is needed",
        ));
    }
    Ok(name.to_owned())
}

#[derive(Deserialize)]
struct Seq {
    seq: u64,
}

async fn read(State(web): State<Web>, Path(id): Path<String>, Json(body): Json<Seq>) -> ApiResult {
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let conversation = find(messenger, &id)?;
    messenger.mark_read(&conversation, body.seq).await?;
    Ok(Json(json!({})))
}

async fn file(State(web): State<Web>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let (_, message) = messenger
        .find_message(&id)?
        .ok_or_else(|| ApiError::not_found(format!("no message {id}")))?;
    let attachment = message
        .attachment
        .ok_or_else(|| ApiError::not_found(format!("message {id} is not a file")))?;
    let name = attachment.name.clone();
    super::download(messenger, &attachment, &name).await
}

async fn members(State(web): State<Web>, Path(id): Path<String>) -> ApiResult {
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let conversation = find(messenger, &id)?;
    if conversation.removed {
        return Ok(Json(json!([])));
    }
    let rows: Vec<Value> = messenger
        .members(&conversation)?
        .iter()
        .map(|m| {
            json!({
                "user": m.user.as_str(),
                "device_id": m.device_id.to_string(),
                "device_name": m.device_name,
                "fingerprint": redoubt_proto::Bytes(m.certificate_fingerprint).to_hex(),
            })
        })
        .collect();
    Ok(Json(json!(rows)))
}

#[derive(Deserialize)]
struct Member {
    user: String,
}

async fn add_member(State(web): State<Web>, Path(id): Path<String>, Json(body): Json<Member>) -> ApiResult {
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let conversation = find(messenger, &id)?;
    messenger.add_users(&conversation, &[user(&body.user)?]).await?;
    core.notify(json!({ "type": "sync", "conversations": [id], "mail": false }));
    Ok(Json(json!({})))
}

async fn remove_member(State(web): State<Web>, Path((id, member)): Path<(String, String)>) -> ApiResult {
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let conversation = find(messenger, &id)?;
    messenger.remove_user(&conversation, &user(&member)?).await?;
    core.notify(json!({ "type": "sync", "conversations": [id], "mail": false }));
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct Search {
    q: String,
}

async fn search(State(web): State<Web>, Query(query): Query<Search>) -> ApiResult {
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let query = redoubt_client::search::SearchQuery {
        text: query.q,
        limit: SEARCH_HITS,
        ..Default::default()
    };
    let hits = messenger
        .search(&query)?
        .iter()
        .map(|(conversation, m)| {
            Ok(json!({
                "conversation": { "id": conversation.group_id.to_string(), "name": conversation.name },
                "message": message(messenger, conversation, m, &messenger.receipts(conversation, m.seq)?),
            }))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(json!(hits)))
}

async fn own_devices(State(web): State<Web>) -> ApiResult {
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let redoubt_proto::Response::Devices(devices) = messenger
        .session()
        .request(redoubt_proto::Request::OwnDevices)
        .await?
    else {
        return Err(ApiError::invalid("unexpected answer to OwnDevices"));
    };
    let seen_only_in_log = messenger.devices_seen_only_in_log()?;
    Ok(Json(json!(
        devices
            .iter()
            .map(|d| {
                let mut row = crate::manage::device_json(d);
                row["seen_only_in_log"] = json!(seen_only_in_log.contains(&d.device_id));
                row
            })
            .collect::<Vec<_>>()
    )))
}

/// The key-transparency notices, as `redoubt security --json`.
async fn security(State(web): State<Web>) -> ApiResult {
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let notices = messenger.security_notices()?;
    Ok(Json(json!({
        "notices": notices.iter().map(crate::kt::notice_json).collect::<Vec<_>>(),
    })))
}

/// Approves a new device of this user (policy `new_device_approval`).
async fn approve_device(State(web): State<Web>, Path(device): Path<String>) -> ApiResult {
    let device =
        redoubt_proto::DeviceId::parse(&device).map_err(|e| ApiError::invalid(format!("device id: {e}")))?;
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let session = messenger.session();
    let redoubt_proto::Response::Devices(devices) =
        session.request(redoubt_proto::Request::OwnDevices).await?
    else {
        return Err(ApiError::invalid("unexpected answer to OwnDevices"));
    };
    let certificate = devices
        .iter()
        .find(|d| d.device_id == device)
        .map(|d| d.certificate.clone())
        .ok_or_else(|| ApiError::invalid(format!("no device {device} of yours")))?;
    let approval = session.profile().approve(device, &certificate)?;
    session
        .request(redoubt_proto::Request::DeviceApprove { device, approval })
        .await?;
    Ok(Json(json!({})))
}
