//! `GET /metrics` over plain HTTP/1.1 on the metrics listener.
//!
//! A scraper is one or two Prometheus servers, so the listener takes few connections at a
//! time and gives each a short time to send its request; anything but `GET /metrics` is
//! answered 404 (or 405) without reading further.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::State;

/// Scrapes served at once; more wait in the backlog.
const CONNECTIONS_MAX: usize = 8;
/// Time a scraper gets to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection lives at most this long (keep-alive included).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `/metrics` until `shutdown` turns true.
pub(crate) async fn serve(listener: TcpListener, state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let app = Router::new().route("/metrics", get(scrape)).with_state(state);
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    tracing::warn!(%error, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(permit);
        });
    }
}

async fn scrape(AxumState(state): AxumState<Arc<State>>) -> impl IntoResponse {
    refresh_gauges(&state);
    match state.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Figures read at scrape time rather than counted as they change.
fn refresh_gauges(state: &State) {
    let metrics = &state.metrics;
    let (_, devices_online) = state.subscribers.counts();
    metrics
        .devices_online
        .set(i64::try_from(devices_online).unwrap_or(i64::MAX));
    let (ok, failing) = state.mail.mailbox_counts();
    for (label, count) in [("ok", ok), ("failing", failing)] {
        metrics
            .connector_mailboxes
            .get_or_create(&super::StateLabel { state: label })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}
