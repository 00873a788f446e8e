//! Prometheus metrics: what the server counts, and `GET /metrics` on a listener of its own.
//!
//! Labels hold fixed names only (request types, error codes, results): never a user, a
//! device, a group or anything a user wrote, so the endpoint tells an observer how busy the
//! server is and nothing of who talks to whom.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use redoubt_store::StoreObserver;

mod process;
mod serve;

pub(crate) use serve::serve;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// `Request::kind`, or `undecodable`.
    pub r#type: &'static str,
    /// `ok`, or the error code answered.
    pub code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TypeLabel {
    pub r#type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DirectionLabel {
    /// `upload` or `download`.
    pub direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LimitLabel {
    /// The configuration field of the limit that refused.
    pub limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabel {
    pub state: &'static str,
}

fn request_seconds() -> Histogram {
    // 0.25 ms to 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Every figure the server keeps for `/metrics`. Cheap to update (atomics), so the hot
/// paths count unconditionally, whether or not anyone scrapes.
pub(crate) struct Metrics {
    registry: Registry,
    pub sessions_open: Gauge,
    pub devices_online: Gauge,
    pub handshakes: Family<ResultLabel, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<TypeLabel, Histogram, fn() -> Histogram>,
    pub messages_appended: Counter,
    pub deliveries: Counter,
    pub fetched_entries: Counter,
    pub blob_bytes: Family<DirectionLabel, Counter>,
    pub rate_limited: Family<LimitLabel, Counter>,
    pub connector_mailboxes: Family<StateLabel, Gauge>,
    pub connector_push_seconds: Histogram,
    store: Arc<StoreMetrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The store's timings (group commits and reads), fed by the backend's threads.
#[derive(Debug)]
struct StoreMetrics {
    commit_batch_entries: Histogram,
    commit_batch_seconds: Histogram,
    read_seconds: Histogram,
}

impl StoreObserver for StoreMetrics {
    fn append_batch(&self, entries: usize, elapsed: Duration) {
        self.commit_batch_entries.observe(entries as f64);
        self.commit_batch_seconds.observe(elapsed.as_secs_f64());
    }

    fn read(&self, elapsed: Duration) {
        self.read_seconds.observe(elapsed.as_secs_f64());
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut metrics = Self {
            sessions_open: Gauge::default(),
            devices_online: Gauge::default(),
            handshakes: Family::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(request_seconds),
            messages_appended: Counter::default(),
            deliveries: Counter::default(),
            fetched_entries: Counter::default(),
            blob_bytes: Family::default(),
            rate_limited: Family::default(),
            connector_mailboxes: Family::default(),
            // 1 ms to 32 s.
            connector_push_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            store: Arc::new(StoreMetrics {
                // 1 to 1024 entries.
                commit_batch_entries: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
                // 50 µs to 1.6 s.
                commit_batch_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
                // 5 µs to 0.16 s.
                read_seconds: Histogram::new(exponential_buckets(0.000_005, 2.0, 16)),
            }),
            registry: Registry::default(),
        };
        let mut registry = Registry::default();
        let r = registry.sub_registry_with_prefix("redoubt");
        r.register(
            "sessions_open",
            "WebSocket sessions open on this node",
            metrics.sessions_open.clone(),
        );
        r.register(
            "devices_online",
            "Devices with an authenticated session on this node",
            metrics.devices_online.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes, by result (ok, failed, timeout)",
            metrics.handshakes.clone(),
        );
        r.register(
            "requests",
            "Requests answered, by request type and result code (ok or the error code)",
            metrics.requests.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time to answer a request, by request type",
            Unit::Seconds,
            metrics.request_seconds.clone(),
        );
        r.register(
            "messages_appended",
            "Messages and commits appended to group logs through this node",
            metrics.messages_appended.clone(),
        );
        r.register(
            "deliveries",
            "Events (new messages, commands, notices) pushed to device sessions",
            metrics.deliveries.clone(),
        );
        r.register(
            "fetched_entries",
            "Group log entries devices fetched",
            metrics.fetched_entries.clone(),
        );
        r.register_with_unit(
            "blob",
            "Attachment and history bytes, by direction (upload, download)",
            Unit::Bytes,
            metrics.blob_bytes.clone(),
        );
        r.register(
            "rate_limit_refusals",
            "Requests or connections refused by a limit, by the limit's configuration field",
            metrics.rate_limited.clone(),
        );
        r.register(
            "connector_mailboxes",
            "Mailboxes the mail connector reported on, by state (ok, failing)",
            metrics.connector_mailboxes.clone(),
        );
        r.register_with_unit(
            "connector_push_latency",
            "Time from the mail connector noticing new mail to its devices' group accepting it",
            Unit::Seconds,
            metrics.connector_push_seconds.clone(),
        );
        r.register(
            "store_commit_batch_entries",
            "Log entries per group commit (one transaction and one sync to disk)",
            metrics.store.commit_batch_entries.clone(),
        );
        r.register_with_unit(
            "store_commit_batch_duration",
            "Time of one group commit, its sync to disk included",
            Unit::Seconds,
            metrics.store.commit_batch_seconds.clone(),
        );
        r.register_with_unit(
            "store_read_duration",
            "Time of one store read (a lookup by key or a short range); SQLite only",
            Unit::Seconds,
            metrics.store.read_seconds.clone(),
        );
        // Process figures under their conventional names, without our prefix.
        registry.register_collector(Box::new(process::ProcessCollector));
        metrics.registry = registry;
        metrics
    }

    /// What the store reports into (see [`redoubt_store::Store::observe`]).
    pub(crate) fn store_observer(&self) -> Arc<dyn StoreObserver> {
        self.store.clone()
    }

    /// Counts one answered request.
    pub(crate) fn request(&self, kind: &'static str, code: &'static str, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { r#type: kind, code })
            .inc();
        self.request_seconds
            .get_or_create(&TypeLabel { r#type: kind })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn refused_by(&self, limit: &'static str) {
        self.rate_limited.get_or_create(&LimitLabel { limit }).inc();
    }

    pub(crate) fn handshake(&self, result: &'static str) {
        self.handshakes.get_or_create(&ResultLabel { result }).inc();
    }

    pub(crate) fn blob_bytes(&self, direction: &'static str, bytes: usize) {
        self.blob_bytes
            .get_or_create(&DirectionLabel { direction })
            .inc_by(bytes as u64);
    }

    /// The exposition in Prometheus's text format (version 0.0.4).
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Counts a session for as long as it lives.
pub(crate) struct SessionGuard<'m>(&'m Metrics);

impl<'m> SessionGuard<'m> {
    pub(crate) fn new(metrics: &'m Metrics) -> Self {
        metrics.sessions_open.inc();
        Self(metrics)
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.0.sessions_open.dec();
    }
}
