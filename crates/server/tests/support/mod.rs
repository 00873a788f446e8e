//! A real server on 127.0.0.1 with a real data folder, for integration tests.
#![allow(dead_code)]

pub mod raw;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use redoubt_client::{Messenger, Profile, Session};
use redoubt_proto::{ActivationCode, DeviceName, UserName};
use redoubt_server::{ManualClock, OpenOptions, Server, ServerHandle};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub dir: TempDir,
    pub addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    /// The first admin's code, on the run that created it.
    pub admin_code: Option<String>,
    pub org_public_key: [u8; 32],
    pub handle: ServerHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with_config("").await
    }

    /// Starts a server whose `redoubt.toml` is `config` (written before first open).
    pub async fn start_with_config(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if !config.is_empty() {
            std::fs::write(dir.path().join("redoubt.toml"), config).unwrap();
        }
        Self::start_in(dir, 0).await
    }

    /// Opens the data folder `dir` and serves it on 127.0.0.1:`port` (0: any free port).
    pub async fn start_in(dir: TempDir, port: u16) -> Self {
        Self::serve(dir, port, None, None).await
    }

    /// Starts a fresh server whose key directory misbehaves as `harness` says (the
    /// key-transparency tests' compromised server).
    pub async fn start_compromised(harness: Arc<redoubt_server::CompromisedDirectory>) -> Self {
        Self::serve(tempfile::tempdir().unwrap(), 0, None, Some(harness)).await
    }

    /// Starts a fresh server whose store is passed through `wrap` first (tests inject
    /// storage faults this way).
    pub async fn start_with_store_wrapper(wrap: redoubt_server::StoreWrapper) -> Self {
        Self::serve(tempfile::tempdir().unwrap(), 0, Some(wrap), None).await
    }

    async fn serve(
        dir: TempDir,
        port: u16,
        wrap_store: Option<redoubt_server::StoreWrapper>,
        compromised_directory: Option<Arc<redoubt_server::CompromisedDirectory>>,
    ) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let clock = Arc::new(ManualClock::new());
        let options = OpenOptions {
            clock: Some(clock.clone()),
            wrap_store,
            kt_epoch_ms: Some(20),
            compromised_directory,
            ..OpenOptions::default()
        };
        let server = Server::open(dir.path(), addr, &options).await.unwrap();
        let admin_code = server.first_admin_code.as_ref().map(|c| c.code.clone());
        let org_public_key = server.org().public_key().to_bytes();
        let handle = server.handle();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            server
                .run(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            dir,
            addr,
            clock,
            admin_code,
            org_public_key,
            handle,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Shuts down gracefully and returns the data folder.
    pub async fn stop(mut self) -> (TempDir, u16) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
        let port = self.addr.port();
        (self.dir, port)
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }
}

/// Enrols a device into a fresh profile folder inside `root`.
pub async fn enroll(root: &Path, name: &str, code: &str) -> Profile {
    let code = ActivationCode::parse(code).unwrap();
    redoubt_client::enroll(&root.join(name), &code, DeviceName::parse(name).unwrap())
        .await
        .unwrap()
}

/// An admin session on a fresh server, with its profile folder.
pub async fn admin_session(server: &TestServer, profiles: &Path) -> Session {
    let profile = enroll(profiles, "admin-laptop", server.admin_code.as_deref().unwrap()).await;
    Session::open(&profile).await.unwrap()
}

pub fn user(name: &str) -> UserName {
    UserName::parse(name).unwrap()
}

/// Enrols `devices` (user, device name) and opens a messenger for each (which publishes
/// its key packages, as enrolling with the `redoubt` command does).
pub async fn messengers(server: &TestServer, profiles: &Path, devices: &[(&str, &str)]) -> Vec<Messenger> {
    let mut admin = admin_session(server, profiles).await;
    let mut users = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (user_name, device) in devices {
        let issued = if users.insert(*user_name) {
            admin.admin_user_add(user(user_name), None).await.unwrap()
        } else {
            admin.admin_device_add(user(user_name)).await.unwrap()
        };
        let profile = enroll(profiles, device, &issued.code).await;
        out.push(Messenger::open(&profile).await.unwrap());
    }
    out
}

/// A conversation's messages as (seq, sender, text).
pub fn texts(messenger: &Messenger, name: &str) -> Vec<(u64, String, String)> {
    let conversation = messenger
        .conversation(name)
        .unwrap()
        .expect("conversation exists");
    messenger
        .messages(&conversation)
        .unwrap()
        .into_iter()
        .map(|m| (m.seq, m.sender_user.to_string(), m.text))
        .collect()
}

/// Every file under `dir`.
pub fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path))
        } else {
            files.push(path)
        }
    }
    files
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// LDAP settings that pass validation (a directory on this machine, nothing listening).
pub fn directory_settings() -> redoubt_proto::DirectorySettings {
    redoubt_proto::DirectorySettings::from_preset(
        redoubt_proto::DirectoryPreset::OpenLdap,
        "ldap://127.0.0.1:1".into(),
        "cn=redoubt,dc=corp,dc=test".into(),
        "secret".into(),
        "dc=corp,dc=test".into(),
    )
}
