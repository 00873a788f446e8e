//! The server's configuration: one struct, read from `DATA/redoubt.toml`.
//!
//! Every field has a default, so an empty file is a valid configuration; unknown fields are
//! refused so a typo is never silently ignored. [`Config::example_toml`] renders the
//! documented file that `init` writes.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use redoubt_proto::FRAME_BYTES_MIN;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub tls: TlsSection,
    pub activation: ActivationSection,
    pub certificates: CertificateSection,
    pub limits: Limits,
    pub metrics: MetricsSection,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address to listen on. `--listen` overrides it. Default `127.0.0.1:8443`.
    pub listen: SocketAddr,
    /// `host:port` devices use to reach this server; it goes into activation codes.
    /// Default: the listen address (which must then not be 0.0.0.0 or [::]).
    pub public_address: Option<String>,
    /// The organisation's name, shown to users. Default `Redoubt`.
    pub org_name: String,
    /// The key directory publishes an epoch at most this often (milliseconds), when a
    /// user's devices changed. A new device is usable by others once logged, so enrolment
    /// waits up to this long. Default 5000.
    pub kt_epoch_ms: u64,
    /// Ed25519 public keys (64 hex digits) of the auditors whose countersignatures of
    /// epoch heads the server keeps and shows devices (`redoubt kt audit`). Default none.
    pub kt_auditor_keys: Vec<String>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_address: None,
            org_name: "Redoubt".to_owned(),
            kt_epoch_ms: 5000,
            kt_auditor_keys: Vec::new(),
        }
    }
}

/// By default `init` makes a self-signed certificate that devices pin through their
/// activation code. An operator may supply their own instead; the pin in new activation
/// codes is then that certificate's, and devices enrolled with the old pin must re-enrol.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first. Default: `tls/cert.pem` in the data folder.
    pub certificate: Option<String>,
    /// PEM private key of the leaf. Default: `tls/key.pem` in the data folder.
    pub private_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivationSection {
    /// Hours an activation code stays valid. Default 72.
    pub code_ttl_hours: u32,
    /// Wrong secrets after which a code is voided. Default 5.
    pub attempts_max: u32,
}

impl Default for ActivationSection {
    fn default() -> Self {
        Self {
            code_ttl_hours: 72,
            attempts_max: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertificateSection {
    /// Days a device certificate is valid. Default 365.
    pub device_validity_days: u32,
}

impl Default for CertificateSection {
    fn default() -> Self {
        Self {
            device_validity_days: 365,
        }
    }
}

/// The Prometheus endpoint, on a listener of its own (plain HTTP: it carries counts only,
/// never a user, group or content).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Address `GET /metrics` is served on, such as `127.0.0.1:9464`. Default: none (off).
    /// Anything but a loopback address exposes the figures to the network: firewall it.
    pub listen: Option<SocketAddr>,
}

/// Every resource limit of the server, in one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Concurrent connections; further clients are answered `server_busy` (WebSocket close
    /// 1013) and try another node or later. Default 10000.
    pub connections_max: u32,
    /// Largest WebSocket message (one frame) accepted, in bytes. Default 65536.
    pub frame_bytes_max: u32,
    /// Time allowed for the TLS handshake, in milliseconds. Default 10000.
    pub tls_handshake_timeout_ms: u64,
    /// Time allowed from connection to successful authentication, in ms. Default 10000.
    pub auth_timeout_ms: u64,
    /// Requests allowed on a connection before it authenticates. Default 4.
    pub unauthenticated_requests_max: u32,
    /// Connections one source address may hold before they authenticate; more are closed
    /// at once. Devices behind one NAT share an address, so keep it well above their
    /// number reconnecting at once. Default 1000.
    pub unauthenticated_per_address_max: u32,
    /// Sustained requests per second per device, over all its connections. Default 50.
    pub device_requests_per_second: u32,
    /// Requests a device may send in a burst above the sustained rate. Default 100.
    pub device_request_burst: u32,
    /// Interval between server pings on an idle session, in ms. Default 30000.
    pub ping_interval_ms: u64,
    /// A session that sends nothing (not even a pong) for this long is closed, in ms. Default 90000.
    pub idle_timeout_ms: u64,
    /// Time the server waits to hand one frame to a peer that is not reading its socket
    /// before it closes the session, in ms. Default 30000.
    pub write_timeout_ms: u64,
    /// Time in-flight sessions get to finish at shutdown, in ms. Default 5000.
    pub shutdown_grace_ms: u64,
    /// One-time MLS key packages a device may keep on the server. Default 100.
    pub key_packages_per_device_max: u32,
    /// Log entries returned by one fetch. Default 500.
    pub fetch_entries_max: u32,
    /// Events queued for one session before it is disconnected as too slow (new-entry
    /// notices are coalesced per group and do not count). Default 256.
    pub session_events_max: u32,
    /// Bytes of new log entries held for one session to carry in its next events; past it
    /// the session gets a notice instead and its device fetches. Default 65536.
    pub session_inline_bytes_max: u32,
    /// Largest attachment, in bytes of ciphertext. Default 104857600 (100 MiB).
    pub attachment_bytes_max: u64,
    /// Attachment bytes (ciphertext) one device may upload in any 24 hours; an upload
    /// beyond it is refused `limit_reached`. History sent to a new device is not counted.
    /// Default 2147483648 (2 GiB).
    pub attachment_bytes_per_day_max: u64,
    /// Largest blob of a history transfer (one part of a new device's history), in bytes of
    /// ciphertext. Devices send history in parts of at most 4 MiB. Default 8388608 (8 MiB).
    pub history_blob_bytes_max: u64,
    /// Days a group's log entries are kept when not every member device has read them.
    /// Entries every member has acknowledged are deleted sooner. Default 30.
    pub log_retention_days: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections_max: 10_000,
            frame_bytes_max: 64 * 1024,
            tls_handshake_timeout_ms: 10_000,
            auth_timeout_ms: 10_000,
            unauthenticated_requests_max: 4,
            unauthenticated_per_address_max: 1000,
            device_requests_per_second: 50,
            device_request_burst: 100,
            ping_interval_ms: 30_000,
            idle_timeout_ms: 90_000,
            write_timeout_ms: 30_000,
            shutdown_grace_ms: 5_000,
            key_packages_per_device_max: 100,
            fetch_entries_max: 500,
            session_events_max: 256,
            session_inline_bytes_max: 64 * 1024,
            attachment_bytes_max: 100 * 1024 * 1024,
            attachment_bytes_per_day_max: 2 * 1024 * 1024 * 1024,
            history_blob_bytes_max: 8 * 1024 * 1024,
            log_retention_days: 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense, with a message naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field: &str, why: &str| Err(ConfigError(format!("{field}: {why}")));
        if !(1..=20_000).contains(&self.server.kt_epoch_ms) {
            // Enrolment waits for its epoch; a device gives up on an answer after 30 s.
            return fail("server.kt_epoch_ms", "must be between 1 and 20000");
        }
        for key in &self.server.kt_auditor_keys {
            if data_encoding::HEXLOWER_PERMISSIVE
                .decode(key.as_bytes())
                .map_or(true, |k| k.len() != 32)
            {
                return fail("server.kt_auditor_keys", "each key must be 64 hex digits");
            }
        }
        let l = &self.limits;
        if l.connections_max == 0 {
            return fail("limits.connections_max", "must be at least 1");
        }
        if l.unauthenticated_per_address_max == 0 {
            return fail("limits.unauthenticated_per_address_max", "must be at least 1");
        }
        if (l.frame_bytes_max as usize) < FRAME_BYTES_MIN {
            return fail(
                "limits.frame_bytes_max",
                &format!("must be at least {FRAME_BYTES_MIN}"),
            );
        }
        if l.frame_bytes_max > 16 * 1024 * 1024 {
            return fail("limits.frame_bytes_max", "must be at most 16 MiB");
        }
        if l.session_inline_bytes_max > 16 * 1024 * 1024 {
            // A device reads frames of at most 16 MiB.
            return fail("limits.session_inline_bytes_max", "must be at most 16 MiB");
        }
        if l.device_requests_per_second == 0 || l.device_request_burst == 0 {
            return fail(
                "limits.device_requests_per_second",
                "rate and burst must be at least 1",
            );
        }
        if l.unauthenticated_requests_max < 2 {
            return fail(
                "limits.unauthenticated_requests_max",
                "must be at least 2 (enrol, then authenticate)",
            );
        }
        for (field, value) in [
            ("limits.tls_handshake_timeout_ms", l.tls_handshake_timeout_ms),
            ("limits.auth_timeout_ms", l.auth_timeout_ms),
            ("limits.ping_interval_ms", l.ping_interval_ms),
            ("limits.idle_timeout_ms", l.idle_timeout_ms),
            ("limits.write_timeout_ms", l.write_timeout_ms),
        ] {
            if value == 0 {
                return fail(field, "must be greater than 0");
            }
        }
        for (field, value) in [
            (
                "limits.key_packages_per_device_max",
                l.key_packages_per_device_max,
            ),
            ("limits.fetch_entries_max", l.fetch_entries_max),
            ("limits.session_events_max", l.session_events_max),
            ("limits.log_retention_days", l.log_retention_days),
        ] {
            if value == 0 {
                return fail(field, "must be at least 1");
            }
        }
        if l.idle_timeout_ms <= l.ping_interval_ms {
            return fail(
                "limits.idle_timeout_ms",
                "must be longer than limits.ping_interval_ms",
            );
        }
        if self.activation.code_ttl_hours == 0 {
            return fail("activation.code_ttl_hours", "must be at least 1");
        }
        if self.activation.attempts_max == 0 {
            return fail("activation.attempts_max", "must be at least 1");
        }
        if self.certificates.device_validity_days == 0 {
            return fail("certificates.device_validity_days", "must be at least 1");
        }
        if self.server.org_name.trim().is_empty() || self.server.org_name.len() > 128 {
            return fail("server.org_name", "must be 1 to 128 characters");
        }
        if let Some(address) = &self.server.public_address {
            redoubt_proto::ServerAddress::parse(address)
                .map_err(|e| ConfigError(format!("server.public_address: {e}")))?;
        }
        if self.tls.certificate.is_some() != self.tls.private_key.is_some() {
            return fail("tls", "set both certificate and private_key, or neither");
        }
        Ok(())
    }

    /// The documented configuration file `init` writes: every field with its default and
    /// unit, commented out so the defaults in code stay authoritative unless changed.
    pub fn example_toml(org_name: &str) -> String {
        let d = Config::default();
        let l = &d.limits;
        format!(
            r#"# Redoubt server configuration. Every setting is optional; the value shown is the
# default. Uncomment a line to change it, then restart the server.

[server]
# Address to listen on (the --listen flag overrides it).
# listen = "{listen}"
# host:port devices use to reach this server; written into activation codes.
# Defaults to the listen address, which must then be a specific IP.
# public_address = "redoubt.example.org:8443"
# The organisation's name, shown to users.
org_name = {org_name:?}
# The key directory (key transparency) publishes an epoch at most this often, in
# milliseconds, when someone's devices changed; enrolment waits for its epoch.
# kt_epoch_ms = {kt_epoch_ms}
# Public keys (64 hex digits each, printed by `redoubt kt audit`) of the auditors
# whose countersignatures the server keeps.
# kt_auditor_keys = []

[tls]
# Your own certificate instead of the self-signed one made at initialisation
# (PEM chain, leaf first, and its private key). New activation codes pin it;
# devices enrolled earlier must re-enrol.
# certificate = "/etc/redoubt/cert.pem"
# private_key = "/etc/redoubt/key.pem"

[activation]
# Hours an activation code stays valid.
# code_ttl_hours = {ttl}
# Wrong secrets after which a code is voided.
# attempts_max = {attempts}

[certificates]
# Days a device certificate is valid.
# device_validity_days = {validity}

[metrics]
# Serve Prometheus metrics (GET /metrics, plain HTTP) on this address. Off by default;
# keep it on loopback or behind a firewall.
# listen = "127.0.0.1:9464"  # for example; none by default

[limits]
# Concurrent connections; further clients are told the server is busy (and retry).
# connections_max = {connections}
# Largest frame (WebSocket message) accepted, in bytes.
# frame_bytes_max = {frame}
# Time allowed for the TLS handshake, in milliseconds.
# tls_handshake_timeout_ms = {handshake}
# Time allowed from connecting to authenticating, in milliseconds.
# auth_timeout_ms = {auth}
# Requests a connection may make before it authenticates.
# unauthenticated_requests_max = {unauth}
# Connections one address may hold before authenticating (devices behind one NAT share
# an address: keep it above their number).
# unauthenticated_per_address_max = {unauth_per_address}
# Sustained requests per second per device, and the burst allowed above it.
# device_requests_per_second = {rps}
# device_request_burst = {burst}
# Ping interval on idle sessions, and how long a silent session is kept, in milliseconds.
# ping_interval_ms = {ping}
# idle_timeout_ms = {idle}
# Time allowed to send one frame to a device that does not read its socket before its
# session is closed, in milliseconds.
# write_timeout_ms = {write}
# Time in-flight sessions get to finish at shutdown, in milliseconds.
# shutdown_grace_ms = {grace}
# One-time MLS key packages a device may keep on the server.
# key_packages_per_device_max = {kp}
# Log entries returned by one fetch.
# fetch_entries_max = {fetch}
# Events queued for one session before it is disconnected as too slow.
# session_events_max = {events}
# Bytes of new messages held for one session to push with its next events; past it the
# device is told to fetch them instead.
# session_inline_bytes_max = {inline}
# Largest attachment, in bytes of ciphertext.
# attachment_bytes_max = {attachment}
# Attachment bytes (ciphertext) one device may upload in any 24 hours.
# attachment_bytes_per_day_max = {attachment_per_day}
# Largest blob of a history transfer to a new device, in bytes of ciphertext.
# history_blob_bytes_max = {history}
# Days log entries are kept when not every member device has read them.
# log_retention_days = {retention}
"#,
            listen = d.server.listen,
            kt_epoch_ms = d.server.kt_epoch_ms,
            ttl = d.activation.code_ttl_hours,
            attempts = d.activation.attempts_max,
            validity = d.certificates.device_validity_days,
            connections = l.connections_max,
            frame = l.frame_bytes_max,
            handshake = l.tls_handshake_timeout_ms,
            auth = l.auth_timeout_ms,
            unauth = l.unauthenticated_requests_max,
            unauth_per_address = l.unauthenticated_per_address_max,
            rps = l.device_requests_per_second,
            burst = l.device_request_burst,
            ping = l.ping_interval_ms,
            idle = l.idle_timeout_ms,
            write = l.write_timeout_ms,
            grace = l.shutdown_grace_ms,
            kp = l.key_packages_per_device_max,
            fetch = l.fetch_entries_max,
            events = l.session_events_max,
            inline = l.session_inline_bytes_max,
            attachment = l.attachment_bytes_max,
            attachment_per_day = l.attachment_bytes_per_day_max,
            history = l.history_blob_bytes_max,
            retention = l.log_retention_days,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_to_defaults() {
        let parsed = Config::from_toml(&Config::example_toml("Redoubt")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn uncommented_example_lines_parse_to_defaults() {
        // Every commented setting, uncommented, must be valid and equal to the default.
        let text: String = Config::example_toml("Redoubt")
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") && !rest.contains("example") && !rest.contains("/etc") => {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(Config::from_toml(&text).unwrap(), Config::default());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let err = Config::from_toml("[limits]\nconections_max = 5\n").unwrap_err();
        assert!(err.0.contains("conections_max"), "{err}");
        let err = Config::from_toml("[limits]\nframe_bytes_max = 10\n").unwrap_err();
        assert!(err.0.contains("limits.frame_bytes_max"), "{err}");
        let err = Config::from_toml("[server]\npublic_address = \"nope\"\n").unwrap_err();
        assert!(err.0.contains("server.public_address"), "{err}");
    }
}
