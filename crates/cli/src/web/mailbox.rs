//! Mail, calendar and contacts in the page. Reads come from this device's encrypted copy;
//! changes are commands to the organisation's mail connector, answered `202 {command}` at
//! once, their outcome pushed to the page as an event when the connector has answered.

use axum::Json;
use axum::Router;
use axum::body::Bytes as Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use redoubt_client::{Messenger, StoredMail};
use redoubt_mls::mail::{MailCommand, NewContact, NewEvent, OutgoingMail};
use redoubt_proto::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::device::Core;
use super::{ApiError, ApiResult, Web};
use crate::mail::{forward, mail_json, reply, status_json};
use crate::pim::{check_addresses, contact_json, event_json};

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/api/mail", get(list).post(compose))
        .route("/api/mail/status", get(status))
        .route("/api/mail/folders", get(folders))
        .route("/api/mail/{id}", get(one).delete(delete_mail))
        .route("/api/mail/{id}/body", post(fetch_body))
        .route("/api/mail/{id}/flags", post(flags))
        .route("/api/mail/{id}/move", post(move_mail))
        .route("/api/mail/{id}/reply", post(reply_to))
        .route("/api/mail/{id}/forward", post(forward_to))
        .route("/api/mail/{id}/attachments/{index}", get(attachment))
        .route(
            "/api/uploads",
            post(upload).layer(DefaultBodyLimit::max(super::UPLOAD_BYTES_MAX)),
        )
        .route("/api/calendar", get(events).post(add_event))
        .route("/api/calendar/{id}", axum::routing::delete(delete_event))
        .route("/api/contacts", get(contacts).post(add_contact))
        .route("/api/contacts/{id}", axum::routing::delete(delete_contact))
}

/// Sends a command to the connector; the page hears of its outcome as an event.
async fn command(
    core: &mut Core,
    build: impl FnOnce(Bytes<16>) -> MailCommand,
) -> Result<Response, ApiError> {
    let id = core.messenger()?.send_mail_command(build).await?;
    core.expect_outcome(id);
    Ok((StatusCode::ACCEPTED, Json(json!({ "command": id.to_hex() }))).into_response())
}

fn find(messenger: &Messenger, id: &str) -> Result<StoredMail, ApiError> {
    messenger
        .mail()
        .get(id)?
        .ok_or_else(|| ApiError::not_found(format!("no message {id:?} on this device")))
}

/// A mail for the page: the CLI's JSON, with the whole text when this device has it.
fn mail_for_page(mail: &StoredMail) -> Value {
    let mut value = mail_json(mail);
    value["complete"] = value["text_complete"].clone();
    value["full_text"] = json!(
        value["text_complete"]
            .as_bool()
            .unwrap_or(false)
            .then(|| value["text"].clone())
    );
    value
}

#[derive(Deserialize)]
struct ListQuery {
    folder: Option<String>,
    q: Option<String>,
}

async fn list(State(web): State<Web>, Query(query): Query<ListQuery>) -> ApiResult {
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let mails = match query.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        Some(words) => messenger.mail().search(words)?,
        None => messenger
            .mail()
            .list(Some(query.folder.as_deref().unwrap_or("INBOX")))?,
    };
    Ok(Json(Value::Array(mails.iter().map(mail_for_page).collect())))
}

async fn status(State(web): State<Web>) -> ApiResult {
    let mut core = web.device.lock().await;
    Ok(Json(status_json(core.messenger()?)?))
}

async fn folders(State(web): State<Web>) -> ApiResult {
    let mut core = web.device.lock().await;
    Ok(Json(json!(core.messenger()?.mail().folders()?)))
}

async fn one(State(web): State<Web>, Path(id): Path<String>) -> ApiResult {
    let mut core = web.device.lock().await;
    Ok(Json(mail_for_page(&find(core.messenger()?, &id)?)))
}

async fn fetch_body(State(web): State<Web>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let mut core = web.device.lock().await;
    let mail = find(core.messenger()?, &id)?.summary.mail;
    command(&mut core, |id| MailCommand::FetchBody { id, mail }).await
}

#[derive(Deserialize)]
struct Flags {
    seen: Option<bool>,
    flagged: Option<bool>,
}

async fn flags(
    State(web): State<Web>,
    Path(id): Path<String>,
    Json(body): Json<Flags>,
) -> Result<Response, ApiError> {
    if body.seen.is_none() && body.flagged.is_none() {
        return Err(ApiError::invalid("say seen or flagged"));
    }
    let mut core = web.device.lock().await;
    let mail = find(core.messenger()?, &id)?.summary.mail;
    command(&mut core, |id| MailCommand::SetFlags {
        id,
        mail,
        seen: body.seen,
        flagged: body.flagged,
    })
    .await
}

#[derive(Deserialize)]
struct Move {
    folder: String,
}

async fn move_mail(
    State(web): State<Web>,
    Path(id): Path<String>,
    Json(body): Json<Move>,
) -> Result<Response, ApiError> {
    if body.folder.trim().is_empty() {
        return Err(ApiError::invalid("name the folder to move to"));
    }
    let mut core = web.device.lock().await;
    let mail = find(core.messenger()?, &id)?.summary.mail;
    command(&mut core, |id| MailCommand::Move {
        id,
        mail,
        folder: body.folder,
    })
    .await
}

async fn delete_mail(State(web): State<Web>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let mut core = web.device.lock().await;
    let mail = find(core.messenger()?, &id)?.summary.mail;
    command(&mut core, |id| MailCommand::Delete { id, mail }).await
}

#[derive(Deserialize)]
struct Compose {
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    cc: Vec<String>,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    uploads: Vec<String>,
}

async fn send(core: &mut Core, mail: OutgoingMail) -> Result<Response, ApiError> {
    if mail.to.is_empty() {
        return Err(ApiError::invalid("the mail has no recipient"));
    }
    check_addresses(&mail.to)?;
    check_addresses(&mail.cc)?;
    let mail = Box::new(mail);
    command(core, |id| MailCommand::Send { id, mail }).await
}

async fn compose(State(web): State<Web>, Json(body): Json<Compose>) -> Result<Response, ApiError> {
    let mut core = web.device.lock().await;
    let mut attachments = Vec::new();
    for upload in &body.uploads {
        let attachment = core
            .uploads
            .get(upload)
            .ok_or_else(|| ApiError::not_found(format!("no upload {upload}: upload the file again")))?;
        attachments.push(attachment.clone());
    }
    let mail = OutgoingMail {
        to: body.to,
        cc: body.cc,
        subject: body.subject,
        text: body.text,
        attachments,
        reply_to: None,
        forward_of: None,
    };
    let answer = send(&mut core, mail).await?;
    for upload in &body.uploads {
        core.uploads.remove(upload);
    }
    Ok(answer)
}

#[derive(Deserialize)]
struct ReplyBody {
    #[serde(default)]
    text: String,
}

async fn reply_to(
    State(web): State<Web>,
    Path(id): Path<String>,
    Json(body): Json<ReplyBody>,
) -> Result<Response, ApiError> {
    let mut core = web.device.lock().await;
    let original = find(core.messenger()?, &id)?;
    send(&mut core, reply(&original, &body.text)).await
}

#[derive(Deserialize)]
struct ForwardBody {
    to: Vec<String>,
    #[serde(default)]
    text: String,
}

async fn forward_to(
    State(web): State<Web>,
    Path(id): Path<String>,
    Json(body): Json<ForwardBody>,
) -> Result<Response, ApiError> {
    let mut core = web.device.lock().await;
    let original = find(core.messenger()?, &id)?;
    send(&mut core, forward(&original, body.to, &body.text)).await
}

#[derive(Deserialize)]
struct UploadName {
    name: String,
}

/// A file for a mail being written: encrypted and uploaded now, attached when it is sent.
async fn upload(State(web): State<Web>, Query(query): Query<UploadName>, body: Body) -> ApiResult {
    let name = super::conversations::attachment_name(&query.name)?;
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let mailbox = messenger.mailbox()?.ok_or_else(|| {
        ApiError::not_found("no mailbox yet: the organisation's mail connector has not set one up")
    })?;
    let attachment = messenger
        .upload(
            &mailbox.group_id,
            name.clone(),
            &body[..],
            body.len() as u64,
            |_, _| {},
        )
        .await?;
    let mut id = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
    let id = Bytes(id).to_hex();
    core.keep_upload(id.clone(), attachment);
    Ok(Json(json!({ "upload": id, "name": name, "bytes": body.len() })))
}

async fn attachment(
    State(web): State<Web>,
    Path((id, index)): Path<(String, u32)>,
) -> Result<Response, ApiError> {
    let mut core = web.device.lock().await;
    let messenger = core.messenger()?;
    let mail = find(messenger, &id)?;
    let Some(info) = mail.summary.attachments.get(index as usize) else {
        return Err(ApiError::not_found(format!(
            "message {id} has {} attachment(s)",
            mail.summary.attachments.len()
        )));
    };
    let name = info.name.clone();
    let target = mail.summary.mail;
    let Some(file) = messenger.mail().attachment(&target, index)? else {
        return command(&mut core, |id| MailCommand::FetchAttachment {
            id,
            mail: target,
            index,
        })
        .await;
    };
    super::download(messenger, &file, &name).await
}

#[derive(Deserialize)]
struct Range {
    from: Option<i64>,
    to: Option<i64>,
}

async fn events(State(web): State<Web>, Query(range): Query<Range>) -> ApiResult {
    let mut core = web.device.lock().await;
    let events = core.messenger()?.mail().events(range.from, range.to)?;
    Ok(Json(Value::Array(events.iter().map(event_json).collect())))
}

#[derive(Deserialize)]
struct AddEvent {
    #[serde(alias = "title")]
    summary: String,
    start_unix_s: i64,
    end_unix_s: i64,
    #[serde(default)]
    location: String,
    #[serde(default)]
    attendees: Vec<String>,
}

async fn add_event(State(web): State<Web>, Json(body): Json<AddEvent>) -> Result<Response, ApiError> {
    if body.summary.trim().is_empty() {
        return Err(ApiError::invalid("an event needs a title"));
    }
    if body.end_unix_s < body.start_unix_s {
        return Err(ApiError::invalid("the event ends before it starts"));
    }
    check_addresses(&body.attendees)?;
    let event = NewEvent {
        title: body.summary,
        start_unix_s: body.start_unix_s,
        end_unix_s: body.end_unix_s,
        location: body.location,
        attendees: body.attendees,
    };
    let mut core = web.device.lock().await;
    command(&mut core, |id| MailCommand::AddEvent { id, event }).await
}

async fn delete_event(State(web): State<Web>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let mut core = web.device.lock().await;
    let href = core
        .messenger()?
        .mail()
        .event(&id)?
        .ok_or_else(|| ApiError::not_found(format!("no event {id:?}")))?
        .event
        .href;
    command(&mut core, |id| MailCommand::DeleteEvent { id, href }).await
}

async fn contacts(State(web): State<Web>) -> ApiResult {
    let mut core = web.device.lock().await;
    let contacts = core.messenger()?.mail().contacts()?;
    Ok(Json(Value::Array(contacts.iter().map(contact_json).collect())))
}

#[derive(Deserialize)]
struct AddContact {
    name: String,
    #[serde(default)]
    emails: Vec<String>,
    #[serde(default)]
    phones: Vec<String>,
}

async fn add_contact(State(web): State<Web>, Json(body): Json<AddContact>) -> Result<Response, ApiError> {
    if body.name.trim().is_empty() {
        return Err(ApiError::invalid("a contact needs a name"));
    }
    check_addresses(&body.emails)?;
    let contact = NewContact {
        name: body.name,
        emails: body.emails,
        phones: body.phones,
    };
    let mut core = web.device.lock().await;
    command(&mut core, |id| MailCommand::AddContact { id, contact }).await
}

async fn delete_contact(State(web): State<Web>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let mut core = web.device.lock().await;
    let href = core
        .messenger()?
        .mail()
        .contact(&id)?
        .ok_or_else(|| ApiError::not_found(format!("no contact {id:?}")))?
        .contact
        .href;
    command(&mut core, |id| MailCommand::DeleteContact { id, href }).await
}
