//! The accept loop: connection limit, TLS handshake, HTTP/1.1 with WebSocket upgrade.

use std::net::SocketAddr;
use std::sync::Arc;
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

/// What the server knows of one TLS connection, handed to the WebSocket session.
#[derive(Debug)]
pub(crate) struct ConnectionInfo {
    pub peer: SocketAddr,
    /// Keying material exported from this TLS session; signatures are bound to it.
    pub tls_exporter: [u8; TLS_EXPORTER_BYTES],
    /// Held for as long as the connection or its session lives.
    _permit: OwnedSemaphorePermit,
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
    let app = router(state.clone(), shutdown.clone());
    loop {
        // Take the permit before accepting, so at the limit new clients wait in the
        // kernel's backlog instead of costing us a handshake.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
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
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let app_state = state.clone();
        let shutdown = shutdown.clone();
        let handshake_timeout = Duration::from_millis(limits.tls_handshake_timeout_ms);
        tokio::spawn(async move {
            connection(
                tcp,
                peer,
                permit,
                acceptor,
                app,
                app_state,
                shutdown,
                handshake_timeout,
            )
            .await;
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

#[allow(clippy::too_many_arguments, reason = "one connection's parts, each used once")]
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    acceptor: TlsAcceptor,
    app: Router,
    app_state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
    handshake_timeout: Duration,
) {
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
        _permit: permit,
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
