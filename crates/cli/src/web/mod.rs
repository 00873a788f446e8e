//! `redoubt web`: this device in a browser window (docs/web.md).
//!
//! The process is the device: its keys, MLS state and vault stay here, and it talks to the
//! Redoubt server over the usual protocol. The browser is only a display, served from
//! loopback with assets compiled into the binary; the Redoubt server serves no code to
//! browsers and gains no new way to authenticate.

mod console;
mod conversations;
mod device;
mod guard;
mod mailbox;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use redoubt_client::{ClientError, Messenger, Profile};
use redoubt_proto::ErrorCode;
use serde::Deserialize;
use serde_json::json;

use device::Device;
use guard::Guard;

/// Files the page uploads (attachments), at most: the server's default
/// `attachment_bytes_max`; its policy may allow less.
pub(crate) const UPLOAD_BYTES_MAX: usize = 100 * 1024 * 1024;

/// Any other request body (JSON, an imported CSV), at most.
const BODY_BYTES_MAX: usize = 1024 * 1024;

/// The shared state of every handler.
#[derive(Clone)]
pub(crate) struct Web {
    device: Arc<Device>,
}

/// An error as the page sees it: an HTTP status and `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn locked() -> Self {
        Self::new(
            StatusCode::LOCKED,
            "locked",
            "this device is locked: enter its passcode",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<ClientError> for ApiError {
    fn from(error: ClientError) -> Self {
        let status = match &error {
            ClientError::Server(body) => match body.code {
                ErrorCode::Forbidden => StatusCode::FORBIDDEN,
                ErrorCode::NotFound => StatusCode::NOT_FOUND,
                ErrorCode::AlreadyExists | ErrorCode::EpochConflict | ErrorCode::CommandPending => {
                    StatusCode::CONFLICT
                }
                ErrorCode::InvalidArgument
                | ErrorCode::PolicyViolation
                | ErrorCode::LimitReached
                | ErrorCode::NotAMember => StatusCode::BAD_REQUEST,
                ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::BAD_GATEWAY,
            },
            ClientError::PasscodeWrong { .. } | ClientError::PasscodeRequired => StatusCode::UNAUTHORIZED,
            ClientError::DeviceLocked => StatusCode::LOCKED,
            ClientError::ProfileWiped | ClientError::RemotelyWiped => StatusCode::GONE,
            ClientError::Attachment(_) | ClientError::PolicyInvalid(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        };
        let code = match &error {
            ClientError::Server(body) => body.code.as_str(),
            ClientError::PasscodeWrong { .. } => "passcode_wrong",
            ClientError::DeviceLocked => "locked",
            ClientError::ProfileWiped | ClientError::RemotelyWiped => "wiped",
            _ => "client_error",
        };
        let message = match &error {
            ClientError::Server(body) => body.message.clone(),
            other => other.to_string(),
        };
        Self::new(status, code, message)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        match error.downcast::<ClientError>() {
            Ok(client) => client.into(),
            Err(other) => Self::invalid(format!("{other:#}")),
        }
    }
}

impl From<redoubt_client::mail::MailStoreError> for ApiError {
    fn from(error: redoubt_client::mail::MailStoreError) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", error.to_string())
    }
}

pub(crate) type ApiResult<T = axum::Json<serde_json::Value>> = Result<T, ApiError>;

/// An attachment's bytes as a download named `name`. Checked whole (every chunk and the
/// SHA-256) before the first byte goes out: a file that does not authenticate is an
/// error, never a truncated download.
pub(crate) async fn download(
    messenger: &mut Messenger,
    attachment: &redoubt_mls::Attachment,
    name: &str,
) -> Result<Response, ApiError> {
    let mut bytes = Vec::with_capacity(usize::try_from(attachment.bytes).unwrap_or(0));
    messenger.download(attachment, &mut bytes, |_, _| {}).await?;
    let disposition = format!("attachment; filename=\"{}\"", name.replace(['"', '\\'], "_"));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// The page's files, compiled in: no build step, nothing fetched from anywhere else.
const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../web/index.html"),
    ),
    (
        "/app.css",
        "text/css; charset=utf-8",
        include_str!("../../web/app.css"),
    ),
    ("/app.js", JS, include_str!("../../web/app.js")),
    ("/util.js", JS, include_str!("../../web/util.js")),
    ("/chat.js", JS, include_str!("../../web/chat.js")),
    ("/mail.js", JS, include_str!("../../web/mail.js")),
    ("/calendar.js", JS, include_str!("../../web/calendar.js")),
    ("/contacts.js", JS, include_str!("../../web/contacts.js")),
    ("/devices.js", JS, include_str!("../../web/devices.js")),
    ("/console.js", JS, include_str!("../../web/console.js")),
];

/// Runs the web app on `listen` (loopback only) until Ctrl-C or the device is wiped.
pub(crate) async fn run(profile_dir: &Path, listen: SocketAddr, open_browser: bool) -> Result<()> {
    if !listen.ip().is_loopback() {
        bail!("redoubt web listens on this machine only (127.0.0.1 or ::1), not {listen}");
    }
    let messenger = open_device(profile_dir).await?;
    let device = Device::new(profile_dir.to_owned(), messenger);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let guard = Arc::new(Guard::new(listener.local_addr()?));
    let url = guard.login_url();
    // The one line a script or a person needs: the URL carries the one-time token.
    println!("{url}");
    eprintln!("Open the URL above in a browser on this machine (it works once). Ctrl-C stops.");
    if open_browser {
        open_url(&url);
    }
    tokio::spawn(device.clone().follow());
    let app = Router::new()
        .route("/login", get(guard::login))
        .with_state(guard.clone())
        .merge(router(Web {
            device: device.clone(),
        }))
        .layer(axum::middleware::from_fn_with_state(guard, guard::check));
    let gone = device.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                () = crate::shutdown_signal() => {}
                () = gone.gone.notified() => {}
            }
        })
        .await?;
    Ok(())
}

/// Opens the profile: at once without a passcode (or with `REDOUBT_PASSCODE`); with one,
/// the page asks for it.
async fn open_device(dir: &Path) -> Result<Option<Messenger>> {
    let passcode = std::env::var("REDOUBT_PASSCODE").ok();
    if passcode.is_none() && Profile::passcode_protected(dir)? {
        return Ok(None);
    }
    let mut profile = Profile::load(dir, passcode.as_deref())?;
    let mut messenger =
        crate::unlock::comply(&mut profile, |p| async move { Messenger::open(&p).await }).await?;
    messenger.sync().await?;
    Ok(Some(messenger))
}

fn open_url(url: &str) {
    for opener in ["xdg-open", "open"] {
        if std::process::Command::new(opener)
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
        {
            return;
        }
    }
    eprintln!("Could not open a browser; open the URL yourself.");
}

fn router(web: Web) -> Router {
    let mut app = Router::new()
        .route("/api/me", get(me))
        .route("/api/unlock", post(unlock))
        .route("/api/activity", post(activity))
        .route("/api/events", get(events));
    for (path, content_type, body) in ASSETS {
        app = app.route(
            path,
            get(move || async move { ([(header::CONTENT_TYPE, *content_type)], *body) }),
        );
    }
    app.merge(conversations::routes())
        .merge(mailbox::routes())
        .merge(console::routes())
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(web)
}

async fn me(State(web): State<Web>) -> ApiResult {
    let mut core = web.device.lock().await;
    let locked = core.locked;
    let Some(messenger) = core.messenger_unlocked() else {
        return Ok(axum::Json(json!({ "locked": true, "passcode": true })));
    };
    let profile = messenger.profile().clone();
    let policy = messenger.session().policy().clone();
    if locked {
        return Ok(axum::Json(json!({
            "locked": true,
            "passcode": profile.has_passcode(),
            "user": profile.user().as_str(),
        })));
    }
    let info = messenger.session().whoami().await?;
    Ok(axum::Json(json!({
        "user": info.user.as_str(),
        "display_name": info.display_name.as_ref().map(|d| d.as_str()),
        "device_id": info.device_id.to_string(),
        "device_name": info.device_name.as_str(),
        "org_name": info.org_name,
        "roles": info.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "locked": false,
        "passcode": profile.has_passcode(),
        "inactivity_lock_seconds": policy.inactivity_lock_seconds,
    })))
}

#[derive(Deserialize)]
struct Unlock {
    passcode: String,
}

async fn unlock(State(web): State<Web>, axum::Json(body): axum::Json<Unlock>) -> ApiResult {
    let mut core = web.device.lock().await;
    core.unlock(&body.passcode).await?;
    Ok(axum::Json(json!({})))
}

async fn activity(State(web): State<Web>) -> ApiResult {
    let mut core = web.device.lock().await;
    if !core.locked {
        core.last_activity = tokio::time::Instant::now();
    }
    Ok(axum::Json(json!({})))
}

/// Server-Sent Events: what changed, for the page to refetch. A page that fell behind
/// is told to refetch everything.
async fn events(State(web): State<Web>) -> impl IntoResponse {
    let receiver = web.device.subscribe();
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let data: Arc<str> = match receiver.recv().await {
            Ok(data) => data,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                Arc::from(json!({ "type": "sync", "conversations": null, "mail": true }).to_string())
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((
            Ok::<_, std::convert::Infallible>(SseEvent::default().data(&*data)),
            receiver,
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
