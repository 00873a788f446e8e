//! The Redoubt server.
//!
//! [`Server::open`] initialises or reopens a data folder (organisation root key, TLS
//! certificate, SQLite database, configuration); [`Server::run`] serves HTTPS and
//! WebSocket on an already-bound listener until a shutdown signal, then drains sessions
//! and closes the store. Tests bind `127.0.0.1:0` and drive real clients over loopback.

mod api;
pub mod backup;
mod blobs;
mod cluster;
mod config;
mod data_dir;
mod delivery;
mod directory;
mod error;
mod history;
mod kt;
mod listener;
mod mail;
mod management;
mod metrics;
mod migrate;
mod org;
mod pending;
mod rate_limit;
mod scim;
mod session;
mod stats;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore};
use redoubt_proto::{DisplayName, IssuedActivationCode, OrgId, Role, ServerAddress, UserName};
use redoubt_store::{OrgRecord, Store, UserRecord};
use redoubt_store_sqlite::SqliteStore;
use tokio::net::TcpListener;
use zeroize::Zeroize;

pub use config::{
    ActivationSection, CertificateSection, Config, ConfigError, Limits, ServerSection, TlsSection,
};
pub use data_dir::DataDir;
pub use error::ServerError;
pub use kt::{CompromisedDirectory, DeviceSet, KeyDirectory};
pub use mail::{ConnectorConfig, MailUser, smtp_transport};
pub use migrate::migrate_to_postgres;
pub use org::Org;
pub use redoubt_store_postgres::ImportReport;

/// The name of the first admin user, made at initialisation.
pub const FIRST_ADMIN_USER: &str = "admin";

/// Wraps the store the server opened; see [`OpenOptions::wrap_store`].
pub type StoreWrapper = Arc<dyn Fn(Arc<dyn Store>) -> Arc<dyn Store> + Send + Sync>;

/// Choices made on the command line, overriding the configuration file. Construct it with
/// `..OpenOptions::default()` so new options do not break callers.
#[derive(Clone, Default)]
pub struct OpenOptions {
    /// Overrides `server.public_address`.
    pub public_address: Option<String>,
    /// Used for a new organisation's configuration file; ignored when it exists.
    pub org_name: Option<String>,
    /// The time source; the system clock when `None`. Tests pass a [`ManualClock`] to
    /// exercise expiry without waiting.
    pub clock: Option<Arc<dyn Clock>>,
    /// Called once with the opened database; the server then uses the store it returns.
    /// Tests wrap the store to inject storage faults (a full disk) at chosen moments.
    pub wrap_store: Option<StoreWrapper>,
    /// A PostgreSQL URL: the store is that database (shared by every node of a cluster),
    /// blobs included. `None`: the embedded SQLite file in the data folder.
    pub database: Option<String>,
    /// Overrides `server.kt_epoch_ms` (tests publish epochs without waiting seconds).
    pub kt_epoch_ms: Option<u64>,
    /// Tests only: the key directory misbehaves as a compromised server's would (see
    /// [`CompromisedDirectory`]).
    pub compromised_directory: Option<Arc<CompromisedDirectory>>,
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("public_address", &self.public_address)
            .field("org_name", &self.org_name)
            .field("database", &self.database.as_ref().map(|_| "(URL)"))
            .field("clock", &self.clock)
            .field(
                "wrap_store",
                &self.wrap_store.as_ref().map(|_| "Fn(store) -> store"),
            )
            .finish()
    }
}

/// Where the server reads the time (Unix seconds) for expiry and validity decisions.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_unix_s(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_s(&self) -> i64 {
        unix_now()
    }
}

/// The system clock shifted by what a test adds: time passes as it does (the MLS library
/// checks key package lifetimes against the system clock, and the log's times must agree
/// with it), and a test can jump it forwards or back.
#[derive(Debug)]
pub struct ManualClock {
    offset_s: std::sync::atomic::AtomicI64,
}

impl ManualClock {
    pub fn new() -> Self {
        Self {
            offset_s: std::sync::atomic::AtomicI64::new(0),
        }
    }

    pub fn advance(&self, seconds: i64) {
        self.offset_s
            .fetch_add(seconds, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now_unix_s(&self) -> i64 {
        unix_now() + self.offset_s.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Test hook: aborts the process at a named point when `REDOUBT_TEST_CRASH_AT` names it,
/// as a SIGKILL at that instant would (nothing flushed, no shutdown), so tests can prove
/// recovery from exactly there. Costs one environment lookup.
pub(crate) fn crash_point(name: &str) {
    if std::env::var("REDOUBT_TEST_CRASH_AT").is_ok_and(|at| at == name) {
        std::process::abort();
    }
}

/// Everything request handlers share.
pub(crate) struct State {
    pub store: Arc<dyn Store>,
    pub org: Org,
    pub config: Config,
    pub public_address: ServerAddress,
    pub tls_pin: [u8; 32],
    pub limiter: rate_limit::RateLimiter,
    pub clock: Arc<dyn Clock>,
    /// Validates credentials: devices certified by this organisation.
    pub identity: redoubt_mls::RedoubtIdentityProvider,
    /// Follows groups' public state to validate handshake messages.
    pub external: mls_rs::external_client::ExternalClient<delivery::ServerMlsConfig>,
    pub subscribers: delivery::Subscribers,
    /// Each active group's epoch and members, for the message path.
    pub group_views: delivery::GroupViews,
    /// Puts new entries out in log order.
    pub sequencer: delivery::Sequencer,
    /// Serialises each group's handshakes.
    pub commit_locks: delivery::CommitLocks,
    /// Decoded state of the groups with the latest commits.
    pub live_groups: delivery::LiveGroups,
    /// Acknowledgements and last-seen times not yet written.
    pub pending: pending::PendingWrites,
    pub blobs: blobs::BlobBytes,
    /// The organisation's policy version (the store's, cached: other nodes' changes arrive
    /// as cluster hints).
    pub policy_version: std::sync::atomic::AtomicU64,
    /// Devices with a wipe issued and not yet acknowledged: they get no other service.
    pub wipes_pending: std::sync::Mutex<std::collections::HashSet<redoubt_proto::DeviceId>>,
    /// Mail settings' change counter and the connector's per-mailbox status.
    pub mail: mail::MailState,
    /// One directory sync at a time on this node.
    pub directory: directory::DirectoryState,
    /// This node and its link to the others sharing the store.
    pub cluster: cluster::Cluster,
    /// The SQLite database file (none with PostgreSQL), for `AdminStats`.
    pub database_file: Option<std::path::PathBuf>,
    /// Messages appended through this node over the last minute (`metrics` counts them
    /// all; this keeps the last minute's for the dashboard).
    pub message_rate: stats::MessageRate,
    /// The key directory (key transparency).
    pub kt: kt::Kt,
    /// What `/metrics` serves.
    pub metrics: metrics::Metrics,
}

impl State {
    pub(crate) fn now(&self) -> i64 {
        self.clock.now_unix_s()
    }

    /// Counts a message appended to a group's log through this node.
    pub(crate) fn message_appended(&self) {
        self.message_rate.add(self.now());
        self.metrics.messages_appended.inc();
    }

    pub(crate) fn policy_version(&self) -> u64 {
        self.policy_version.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn wipe_pending(&self, device: redoubt_proto::DeviceId, pending: bool) {
        let mut set = self.wipes_pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending {
            set.insert(device);
        } else {
            set.remove(&device);
        }
    }

    pub(crate) fn is_wipe_pending(&self, device: &redoubt_proto::DeviceId) -> bool {
        self.wipes_pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(device)
    }
}

/// An opened server, ready to run.
pub struct Server {
    state: Arc<State>,
    tls: tls::TlsIdentity,
    /// Set on the run that created the first admin: the code to show the operator.
    pub first_admin_code: Option<IssuedActivationCode>,
    data: DataDir,
    /// Where `/metrics` is served, when the admin asked for it.
    metrics_listener: Option<TcpListener>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("data", &self.data.root())
            .field("org", &self.state.org)
            .field("public_address", &self.state.public_address)
            .finish_non_exhaustive()
    }
}

pub(crate) fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn now_for(options: &OpenOptions) -> i64 {
    options.clock.as_ref().map_or_else(unix_now, |c| c.now_unix_s())
}

/// The listen address configured in `DATA/redoubt.toml`, or the default when the folder
/// is new, so a caller can bind before opening.
pub fn configured_listen(data: &Path) -> Result<SocketAddr, ServerError> {
    Ok(read_config(&DataDir::new(data))?
        .map(|c| c.server.listen)
        .unwrap_or(Config::default().server.listen))
}

fn read_config(data: &DataDir) -> Result<Option<Config>, ServerError> {
    let path = data.config();
    if !path.exists() {
        return Ok(None);
    }
    let text = String::from_utf8(data_dir::read(&path)?)
        .map_err(|_| ServerError::DataDir(format!("{} is not UTF-8", path.display())))?;
    Config::from_toml(&text)
        .map(Some)
        .map_err(|e| ServerError::Config(ConfigError(format!("{}: {}", path.display(), e.0))))
}

pub(crate) fn load_or_create_org_key(data: &DataDir, org_exists: bool) -> Result<SigningKey, ServerError> {
    let path = data.org_key();
    if path.exists() {
        let mut bytes = data_dir::read(&path)?;
        let seed: Result<[u8; 32], _> = bytes.as_slice().try_into();
        bytes.zeroize();
        let mut seed = seed
            .map_err(|_| ServerError::DataDir(format!("{} is not a 32-byte Ed25519 key", path.display())))?;
        let key = SigningKey::from_bytes(&seed);
        seed.zeroize();
        return Ok(key);
    }
    if org_exists {
        return Err(ServerError::DataDir(format!(
            "the organisation's root key {} is missing; restore it from backup \
             (without it no device can be certified or authenticated)",
            path.display()
        )));
    }
    let key = SigningKey::generate(&mut OsRng);
    data_dir::write_private(&path, key.as_bytes())?;
    tracing::info!(path = %path.display(), "created the organisation's root key");
    Ok(key)
}

fn public_address(
    config: &Config,
    options: &OpenOptions,
    listen: SocketAddr,
) -> Result<ServerAddress, ServerError> {
    let text = match options
        .public_address
        .as_ref()
        .or(config.server.public_address.as_ref())
    {
        Some(text) => text.clone(),
        None if listen.ip().is_unspecified() => {
            return Err(ServerError::Config(ConfigError(
                "listening on all interfaces: set server.public_address (or --public-address) \
                 to the host:port devices should use"
                    .to_owned(),
            )));
        }
        None => listen.to_string(),
    };
    ServerAddress::parse(&text)
        .map_err(|e| ServerError::Config(ConfigError(format!("public address {text:?}: {e}"))))
}

/// The store named by the options, and the bus to the other nodes when it is shared.
async fn open_store(
    data: &DataDir,
    options: &OpenOptions,
) -> Result<(Arc<dyn Store>, Option<Arc<dyn redoubt_store::Bus>>), ServerError> {
    match &options.database {
        None => Ok((Arc::new(SqliteStore::open(&data.database()).await?), None)),
        Some(url) => {
            let store = redoubt_store_postgres::PgStore::connect(url).await?;
            let bus = store.bus().await?;
            Ok((Arc::new(store), Some(Arc::new(bus))))
        }
    }
}

impl Server {
    /// Opens the data folder at `data`, initialising whatever is missing. `listen` is the
    /// address actually bound; it is the default public address.
    pub async fn open(data: &Path, listen: SocketAddr, options: &OpenOptions) -> Result<Self, ServerError> {
        let data = DataDir::new(data);
        data.create()?;
        let config = match read_config(&data)? {
            Some(config) => config,
            None => {
                let org_name = options.org_name.as_deref().unwrap_or("Redoubt");
                let text = Config::example_toml(org_name);
                let config = Config::from_toml(&text)?;
                data_dir::write_private(&data.config(), text.as_bytes())?;
                config
            }
        };
        let public_address = public_address(&config, options, listen)?;

        let (cert_path, key_path) = match (&config.tls.certificate, &config.tls.private_key) {
            (Some(cert), Some(key)) => (data.root().join(cert), data.root().join(key)),
            _ => {
                let (cert, key) = (data.tls_certificate(), data.tls_private_key());
                if !cert.exists() || !key.exists() {
                    let names = vec![
                        public_address.host_unbracketed().to_owned(),
                        "localhost".to_owned(),
                    ];
                    tls::generate_self_signed(names, &cert, &key)?;
                    tracing::info!(path = %cert.display(), "created a self-signed TLS certificate");
                }
                (cert, key)
            }
        };
        let tls = tls::load(&cert_path, &key_path)?;

        let (store, bus) = open_store(&data, options).await?;
        let store = match &options.wrap_store {
            Some(wrap) => wrap(store),
            None => store,
        };
        let policy_version = store.policy_version().await?;
        let wipes_pending = store
            .commands(None, true)
            .await?
            .into_iter()
            .filter(|c| c.kind == redoubt_proto::CommandKind::Wipe)
            .map(|c| c.device)
            .collect();
        let existing = store.org().await?;
        let key = load_or_create_org_key(&data, existing.is_some())?;
        let org_record = match existing {
            Some(org) => org,
            None => {
                let mut id = [0; 16];
                OsRng.fill_bytes(&mut id);
                let org = OrgRecord {
                    org_id: OrgId::from(id),
                    created_at_unix_s: now_for(options),
                };
                store.init_org(&org).await?;
                org
            }
        };
        let org = Org::new(org_record.org_id, config.server.org_name.clone(), key);
        let kt = kt::Kt::open(
            &data,
            store.clone(),
            &org,
            options.kt_epoch_ms.unwrap_or(config.server.kt_epoch_ms),
            bus.is_some(),
            options.compromised_directory.clone(),
        )
        .await?;
        let identity = redoubt_mls::RedoubtIdentityProvider::new(org.public_key(), org.id);
        let external = delivery::external_client(identity.clone(), &org);
        let public_address_for_cluster = public_address.clone();
        let limiter = rate_limit::RateLimiter::new(
            config.limits.device_requests_per_second,
            config.limits.device_request_burst,
        );
        let state = Arc::new(State {
            store,
            org,
            public_address,
            tls_pin: tls.pin,
            limiter,
            config,
            clock: options.clock.clone().unwrap_or_else(|| Arc::new(SystemClock)),
            external,
            identity,
            subscribers: delivery::Subscribers::default(),
            group_views: delivery::GroupViews::default(),
            sequencer: delivery::Sequencer::default(),
            commit_locks: delivery::CommitLocks::default(),
            live_groups: delivery::LiveGroups::default(),
            pending: pending::PendingWrites::default(),
            blobs: match &options.database {
                None => blobs::BlobBytes::Files(data.blobs()),
                Some(_) => blobs::BlobBytes::Database,
            },
            policy_version: std::sync::atomic::AtomicU64::new(policy_version),
            wipes_pending: std::sync::Mutex::new(wipes_pending),
            mail: mail::MailState::default(),
            directory: directory::DirectoryState::default(),
            cluster: cluster::Cluster::new(bus, public_address_for_cluster, now_for(options)),
            database_file: options.database.is_none().then(|| data.database()),
            message_rate: stats::MessageRate::default(),
            kt,
            metrics: metrics::Metrics::new(),
        });
        state.store.observe(state.metrics.store_observer());
        blobs::clean_up(&state).await?;

        let first_admin_code = if state.store.list_users().await?.is_empty() {
            Some(create_first_admin(&state, &data).await?)
        } else {
            None
        };
        Ok(Self {
            state,
            tls,
            first_admin_code,
            data,
            metrics_listener: None,
        })
    }

    /// A handle for acting on the server while it runs.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            state: self.state.clone(),
        }
    }

    /// The address written into activation codes.
    pub fn public_address(&self) -> &ServerAddress {
        &self.state.public_address
    }

    /// SHA-256 of the TLS certificate devices pin.
    pub fn tls_pin(&self) -> [u8; 32] {
        self.tls.pin
    }

    pub fn org(&self) -> &Org {
        &self.state.org
    }

    pub fn config(&self) -> &Config {
        &self.state.config
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data
    }

    /// Serves Prometheus metrics (`GET /metrics`, plain HTTP) on `listener` while the
    /// server runs (`[metrics] listen`).
    pub fn serve_metrics_on(mut self, listener: TcpListener) -> Self {
        self.metrics_listener = Some(listener);
        self
    }

    /// Serves until `shutdown` completes, then stops accepting, gives open sessions the
    /// grace period to end, and closes the store.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.config.clone());
        let address = listener
            .local_addr()
            .map_err(|e| ServerError::Io(e.to_string()))?;
        tracing::info!(%address, public_address = %self.state.public_address, org = %self.state.org.name, "serving");
        let pruning = tokio::spawn(prune_periodically(self.state.clone(), stop.subscribe()));
        let clustering = tokio::spawn(cluster::run(self.state.clone(), stop.subscribe()));
        let directory_schedule = tokio::spawn(directory::run_schedule(self.state.clone(), stop.subscribe()));
        let transparency = tokio::spawn(kt::run(self.state.clone(), stop.subscribe()));
        let metrics = self
            .metrics_listener
            .map(|listener| tokio::spawn(metrics::serve(listener, self.state.clone(), stop.subscribe())));
        let serve = listener::serve(listener, self.state.clone(), acceptor, stopped);
        tokio::pin!(serve);
        tokio::select! {
            () = &mut serve => {}
            () = shutdown => {
                tracing::info!("shutting down");
                let _ = stop.send(true);
                serve.await;
            }
        }
        let _ = stop.send(true);
        let _ = pruning.await;
        let _ = clustering.await;
        let _ = directory_schedule.await;
        let _ = transparency.await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        if let Err(error) = pending::flush(&self.state).await {
            tracing::warn!(%error, "writing acknowledgements and last-seen times at shutdown failed");
        }
        if let Err(error) = management::checkpoint(&self.state).await {
            tracing::warn!(error = %error.0, "signing an audit checkpoint failed");
        }
        self.state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// How often acknowledgements and last-seen times held in memory are written.
const PENDING_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How often acknowledged and expired log entries are deleted.
const PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

async fn prune_periodically(state: Arc<State>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(PRUNE_INTERVAL);
    let mut flush = tokio::time::interval(PENDING_FLUSH_INTERVAL);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = flush.tick() => {
                if let Err(error) = pending::flush(&state).await {
                    tracing::warn!(%error, "writing acknowledgements and last-seen times failed; will retry");
                }
                state.sequencer.sweep(&state.subscribers);
            }
            _ = interval.tick() => {
                if let Err(error) = delivery::prune(&state).await {
                    tracing::warn!(%error, "pruning group logs failed");
                }
                if let Err(error) = management::checkpoint(&state).await {
                    tracing::warn!(error = %error.0, "signing an audit checkpoint failed");
                }
                if state.cluster.is_shared() {
                    // A node that died mid-upload never cleans up after itself.
                    if let Err(error) = blobs::clean_up(&state).await {
                        tracing::warn!(%error, "deleting abandoned uploads failed");
                    }
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Acts on a running server from the process that runs it.
#[derive(Clone)]
pub struct ServerHandle {
    state: Arc<State>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// Proposes, as the organisation (every group's external sender), removing `device`
    /// from all its groups; members commit the proposals on their next sync. The mechanism
    /// revocation uses. Returns the number of groups.
    pub async fn propose_device_removal(
        &self,
        device: redoubt_proto::DeviceId,
    ) -> Result<usize, ServerError> {
        delivery::propose_device_removal(&self.state, &device)
            .await
            .map_err(|e| ServerError::Refused(e.0))
    }

    /// Revokes a device as the server itself (audited with no actor): what an admin's
    /// `AdminDeviceRevoke` does. Returns the number of groups it is being removed from.
    pub async fn revoke_device(&self, device: redoubt_proto::DeviceId) -> Result<u32, ServerError> {
        management::revoke(&self.state, None, device, "revoked by the server operator")
            .await
            .map_err(|e| ServerError::Refused(e.0))
    }

    /// The mail connector's configuration (with the service account's password, opened),
    /// or `None` while no mail server is set.
    pub async fn mail_config(&self) -> Result<Option<ConnectorConfig>, ServerError> {
        mail::connector_config(&self.state)
            .await
            .map_err(|e| ServerError::Refused(e.0))
    }

    /// Moves whenever the mail settings, an address or a policy changes.
    pub fn mail_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.mail.changed.subscribe()
    }

    /// Moves when a device published key packages, so it can now be added to groups.
    pub fn device_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.mail.devices.subscribe()
    }

    /// Records the connector's latest word on a mailbox, for `admin mail show`.
    pub fn report_mail_status(&self, user: &UserName, ok: bool, detail: &str) {
        let status = redoubt_proto::MailStatus {
            ok,
            detail: detail.to_owned(),
            at_unix_s: self.state.now(),
        };
        self.state.mail.set_status(user.clone(), status);
    }

    /// Records how long the connector took from noticing new mail to its devices' group
    /// accepting it (`redoubt_connector_push_latency_seconds`).
    pub fn observe_mail_push(&self, latency: std::time::Duration) {
        self.state
            .metrics
            .connector_push_seconds
            .observe(latency.as_secs_f64());
    }

    /// The passcode for the mail connector's device profile (derived from the root key).
    pub fn connector_passcode(&self) -> zeroize::Zeroizing<String> {
        self.state.org.connector_passcode()
    }

    /// An activation code for the mail connector's service device (creating its service
    /// user on first use).
    pub async fn connector_activation_code(&self) -> Result<IssuedActivationCode, ServerError> {
        mail::connector_activation_code(&self.state)
            .await
            .map_err(|e| ServerError::Refused(e.0))
    }

    /// Whether other nodes share this node's database (a cluster).
    pub fn is_clustered(&self) -> bool {
        self.state.cluster.is_shared()
    }

    /// Takes or renews, for this node, lease `name` for `ttl`: `None` while another node
    /// holds it. The token grows whenever the holder changes.
    pub async fn acquire_lease(
        &self,
        name: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<redoubt_store::Lease>, ServerError> {
        let now_ms = unix_now_ms();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        Ok(self
            .state
            .store
            .acquire_lease(name, &self.state.cluster.node_id, now_ms, ttl_ms)
            .await?)
    }

    /// Writes the acknowledgements and last-seen times held in memory now (the server does
    /// it every second).
    pub async fn flush_pending(&self) -> Result<(), ServerError> {
        Ok(pending::flush(&self.state).await?)
    }

    /// Deletes acknowledged and expired log entries now (the server also does it every
    /// minute). Returns how many.
    pub async fn prune_logs(&self) -> Result<u64, ServerError> {
        Ok(delivery::prune(&self.state).await?)
    }
}

async fn create_first_admin(state: &State, data: &DataDir) -> Result<IssuedActivationCode, ServerError> {
    let now = state.now();
    let name = UserName::parse(FIRST_ADMIN_USER)
        .map_err(|e| ServerError::DataDir(format!("first admin name: {e}")))?;
    let (record, issued) = api::new_activation_code(state, &name, now);
    let user = UserRecord {
        name,
        display_name: DisplayName::parse("Administrator").ok(),
        roles: vec![Role::Admin],
        created_at_unix_s: now,
        disabled_at_unix_s: None,
    };
    let event = management::audit(
        state,
        None,
        "user.add",
        format!("user {}", user.name),
        "first admin",
    );
    state
        .store
        .apply(
            &[redoubt_store::Change::CreateUser { user, code: record }],
            &[event],
        )
        .await?;
    data_dir::write_private(&data.admin_activation(), format!("{}\n", issued.code).as_bytes())?;
    tracing::info!(path = %data.admin_activation().display(), "created the first admin and their activation code");
    Ok(issued)
}
