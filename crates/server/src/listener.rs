//! The accept loop: connection limits, TLS handshake, HTTP/1.1 with WebSocket upgrade.
//!
//! Two limits apply at accept. `connections_max` bounds the sessions served: past it a new
//! client is answered `server_busy` (close 1013) at once, so it can try another node or
//! back off, instead of waiting unseen in the kernel's backlog; only when
//! [`BUSY_ANSWERS_MAX`] such answers are already under way does it wait there.
//! `unauthenticated_per_address_max` bounds the connections one source address holds
//! before authenticating, so one host cannot take every slot with connections that never
//! authenticate; past it the connection is closed before its TLS handshake.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, State as AxumState, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use redoubt_proto::{PROTOCOL_VERSION, TLS_EXPORTER_BYTES, TLS_EXPORTER_LABEL};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::State;

/// `server_busy` answers in progress at once; past this, new clients wait in the backlog.
const BUSY_ANSWERS_MAX: usize = 64;

/// What the server knows of one TLS connection, handed to the WebSocket session.
#[derive(Debug)]
pub(crate) struct ConnectionInfo {
    pub peer: SocketAddr,
    /// Keying material exported from this TLS session; signatures are bound to it.
    pub tls_exporter: [u8; TLS_EXPORTER_BYTES],
    /// The server is at `connections_max`: the session answers `server_busy` and closes.
    busy: bool,
    /// Held for as long as the connection or its session lives.
    _permit: OwnedSemaphorePermit,
    /// This connection's place in its address's unauthenticated count, until it
    /// authenticates.
    unauthenticated: Mutex<Option<AddressSlot>>,
}

impl ConnectionInfo {
    /// The session authenticated: it no longer counts against its address's cap.
    pub(crate) fn authenticated(&self) {
        self.unauthenticated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

/// Connections not yet authenticated, per source address.
#[derive(Debug, Default)]
struct Unauthenticated {
    by_address: Mutex<HashMap<IpAddr, u32>>,
}

impl Unauthenticated {
    /// Counts a new connection from `ip`, or `None` when the address holds `max` already.
    fn enter(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<AddressSlot> {
        let mut by_address = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        let count = by_address.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            ip,
        })
    }
}

/// One unauthenticated connection of an address; uncounted when dropped.
#[derive(Debug)]
struct AddressSlot {
    table: Arc<Unauthenticated>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut by_address = self.table.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = by_address.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                by_address.remove(&self.ip);
            }
        }
    }
}

#[derive(Clone)]
struct AppState {
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
}

fn router(state: Arc<State>, shutdown: watch::Receiver<bool>) -> Router {
    let scim = crate::scim::router(
        Arc::new(crate::directory::scim_backend::StoreScim { state: state.clone() }),
        crate::scim::ScimConfig {
            base_url: format!("https://{}/scim/v2", state.public_address),
            limits: crate::scim::ScimLimits::default(),
        },
    );
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/ws", get(websocket))
        .with_state(AppState { state, shutdown })
        .nest("/scim/v2", scim)
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok", "protocol_version": PROTOCOL_VERSION }))
}

async fn websocket(
    AxumState(app): AxumState<AppState>,
    Extension(connection): Extension<Arc<ConnectionInfo>>,
    upgrade: WebSocketUpgrade,
) -> impl IntoResponse {
    if connection.busy {
        return upgrade
            .max_message_size(1024)
            .on_upgrade(crate::session::refuse_busy)
            .into_response();
    }
    let frame_bytes_max = app.state.config.limits.frame_bytes_max as usize;
    upgrade
        // Small buffers: an idle session should cost a few KB, not the 128 KB default. A
        // frame longer than the read buffer is read in several steps into a buffer reserved
        // for its whole length (from rustls's plaintext, not a system call each).
        .read_buffer_size(256)
        .write_buffer_size(0)
        .max_message_size(frame_bytes_max)
        .max_frame_size(frame_bytes_max)
        .on_upgrade(move |socket| crate::session::run(app.state, connection, socket, app.shutdown))
        .into_response()
}

/// Accepts connections until `shutdown` turns true, then waits up to the grace period
/// for connections and sessions to end.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    acceptor: TlsAcceptor,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = state.config.limits.clone();
    let permits = Arc::new(Semaphore::new(limits.connections_max as usize));
    let busy_answers = Arc::new(Semaphore::new(BUSY_ANSWERS_MAX));
    let unauthenticated = Arc::new(Unauthenticated::default());
    let app = router(state.clone(), shutdown.clone());
    loop {
        // Before accepting, make sure the connection can at least be told the server is
        // busy; while even that cannot be done, new clients wait in the kernel's backlog.
        let busy_permit = tokio::select! {
            permit = busy_answers.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Some(address_slot) = unauthenticated.enter(peer.ip(), limits.unauthenticated_per_address_max)
        else {
            state.metrics.refused_by("unauthenticated_per_address_max");
            tracing::debug!(%peer, "too many unauthenticated connections from this address; closed");
            continue;
        };
        let (permit, busy) = match permits.clone().try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => {
                state.metrics.refused_by("connections_max");
                (busy_permit, true)
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let app_state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let slot = ConnectionSlot {
                permit,
                busy,
                address: address_slot,
            };
            connection(tcp, peer, slot, acceptor, app, app_state, shutdown).await;
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; waiting for sessions to close");
    let grace = Duration::from_millis(limits.shutdown_grace_ms);
    let all = permits.acquire_many(limits.connections_max);
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!("sessions still open after the shutdown grace period; closing them");
    }
}

/// What a connection holds of the limits from accept on.
struct ConnectionSlot {
    permit: OwnedSemaphorePermit,
    busy: bool,
    address: AddressSlot,
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
    acceptor: TlsAcceptor,
    app: Router,
    app_state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let handshake_timeout = Duration::from_millis(app_state.config.limits.tls_handshake_timeout_ms);
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            app_state.metrics.handshake("ok");
            tls
        }
        Ok(Err(error)) => {
            app_state.metrics.handshake("failed");
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            app_state.metrics.handshake("timeout");
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let mut tls_exporter = [0; TLS_EXPORTER_BYTES];
    if let Err(error) = tls
        .get_ref()
        .1
        .export_keying_material(&mut tls_exporter, TLS_EXPORTER_LABEL, None)
    {
        tracing::warn!(%peer, %error, "TLS exporter unavailable");
        return;
    }
    let info = Arc::new(ConnectionInfo {
        peer,
        tls_exporter,
        busy: slot.busy,
        _permit: slot.permit,
        unauthenticated: Mutex::new(Some(slot.address)),
    });
    let service = app.map_request(
        move |mut request: axum::extract::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(info.clone());
            request
        },
    );
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
        }
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
