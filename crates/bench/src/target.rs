//! The server under test — in this process, in a child process, or one already running —
//! the admin session that creates users on it, and what the server costs (CPU, memory).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ed25519_dalek::VerifyingKey;
use redoubt_client::{Profile, Session};
use redoubt_proto::{ActivationCode, DeviceName};
use redoubt_server::{Config, OpenOptions, Server};
use serde_json::{Value, json};

use crate::device::Org;
use crate::wire::Connector;

/// Thread names of the in-process server: its runtime's threads, SQLite's workers, and the
/// log appender and checkpointer.
pub const SERVER_THREAD_PREFIXES: [&str; 3] = ["redoubt-srv", "sqlx-sqlite-wor", "redoubt-db"];

/// Where the server runs.
#[derive(Debug, Clone)]
pub enum Mode {
    /// On its own runtime in this process; CPU is counted per thread.
    InProcess,
    /// A child process of this binary (`redoubt-bench serve`): CPU and memory are the
    /// server's alone.
    Spawn,
    /// A server someone else started.
    Remote {
        addr: String,
        admin_profile: PathBuf,
        pid: Option<u32>,
    },
}

/// How to read the server's CPU time and memory.
#[derive(Debug, Clone)]
pub enum Meter {
    /// Threads of this process whose names start with [`SERVER_THREAD_PREFIXES`]; memory
    /// is the whole process's (server and load generator together). Work that mls-rs
    /// hands to rayon's global pool (shared by both here) is counted wherever that pool's
    /// threads were started, so only the messaging scenarios (no MLS group operations on
    /// the server during the timed window) get exact figures this way.
    Threads,
    Process(u32),
    Unknown,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Meter {
    pub fn read(&self) -> Usage {
        match self {
            Meter::Threads => {
                let (rss_kib, hwm_kib) = memory("self");
                Usage {
                    cpu_s: thread_cpu_s(),
                    rss_kib,
                    hwm_kib,
                }
            }
            Meter::Process(pid) => {
                let (rss_kib, hwm_kib) = memory(&pid.to_string());
                Usage {
                    cpu_s: process_cpu_s(*pid),
                    rss_kib,
                    hwm_kib,
                }
            }
            Meter::Unknown => Usage::default(),
        }
    }

    /// Resets the peak-RSS mark (VmHWM) so a scenario reports its own peak.
    pub fn reset_peak(&self) {
        let pid = match self {
            Meter::Threads => "self".to_owned(),
            Meter::Process(pid) => pid.to_string(),
            Meter::Unknown => return,
        };
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }

    pub fn known(&self) -> bool {
        !matches!(self, Meter::Unknown)
    }

    /// Whether the memory figures include the load generator.
    pub fn memory_includes_load_generator(&self) -> bool {
        matches!(self, Meter::Threads)
    }
}

fn clock_ticks_per_s() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU time of one thread in seconds: from `schedstat` (nanoseconds) where the kernel
/// keeps it, else utime + stime from `stat` (clock ticks, 10 ms).
fn task_cpu_s(task: &Path) -> Option<f64> {
    if let Ok(text) = std::fs::read_to_string(task.join("schedstat"))
        && let Some(ns) = text.split_whitespace().next().and_then(|n| n.parse::<u64>().ok())
    {
        return Some(ns as f64 / 1e9);
    }
    let text = std::fs::read_to_string(task.join("stat")).ok()?;
    let close = text.rfind(')')?;
    let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // After the name, state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_s())
}

/// The CPU time of a process's live threads, those whose names start with one of
/// `prefixes` (all when empty). Threads that exited are not counted, which is why the
/// server's runtime keeps its threads alive.
fn threads_cpu_s(pid: &str, prefixes: &[&str]) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut total = 0.0;
    for task in tasks.flatten() {
        let path = task.path();
        if !prefixes.is_empty() {
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if !prefixes.iter().any(|p| name.starts_with(p)) {
                continue;
            }
        }
        total += task_cpu_s(&path).unwrap_or(0.0);
    }
    total
}

fn thread_cpu_s() -> f64 {
    threads_cpu_s("self", &SERVER_THREAD_PREFIXES)
}

fn process_cpu_s(pid: u32) -> f64 {
    threads_cpu_s(&pid.to_string(), &[])
}

/// (VmRSS, VmHWM) in KiB.
fn memory(pid: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Finds the process listening on `port` (for `--server` without `--server-pid`): the
/// socket's inode from /proc/net/tcp*, then the process holding it.
fn find_listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    let processes = std::fs::read_dir("/proc").ok()?;
    for process in processes.flatten() {
        let Ok(pid) = process.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// The configuration the harness gives a server it starts: the defaults, with the limits
/// a load test needs raised (recorded in every report), then `--set` overrides.
pub fn bench_config(overrides: &[String]) -> Result<(Config, Value)> {
    let mut config = Config::default();
    let limits = &mut config.limits;
    // 20 simulated users sending 10,000 messages/s between them is 500 requests/s each,
    // against a default of 50/s per device (a guard against a misbehaving phone).
    limits.device_requests_per_second = 1_000_000;
    limits.device_request_burst = 1_000_000;
    // Hundreds of thousands of sessions, every one from this machine's address.
    limits.connections_max = 1_000_000;
    limits.unauthenticated_per_address_max = 1_000_000;
    // A 10k-member group's commit carries thousands of key packages.
    limits.frame_bytes_max = 16 * 1024 * 1024;
    let mut value = toml::Value::try_from(&config)?;
    for item in overrides {
        let (path, raw) = item
            .split_once('=')
            .ok_or_else(|| anyhow!("--set takes section.key=value, got {item:?}"))?;
        let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
        let mut node = &mut value;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let table = node
                .as_table_mut()
                .ok_or_else(|| anyhow!("--set {path}: not a table"))?;
            if i + 1 == parts.len() {
                if !table.contains_key(*part) {
                    bail!("--set {path}: no such setting");
                }
                table.insert((*part).to_owned(), parsed.clone());
                break;
            }
            node = table
                .get_mut(*part)
                .ok_or_else(|| anyhow!("--set {path}: no such section"))?;
        }
    }
    let text = toml::to_string(&value)?;
    let config = Config::from_toml(&text).map_err(|e| anyhow!("{}", e.0))?;
    let limits_json = serde_json::to_value(&config.limits)?;
    Ok((config, limits_json))
}

/// A started or reached server, with an admin session on it.
pub struct Target {
    pub org: Org,
    pub admin: Session,
    pub meter: Meter,
    pub mode: &'static str,
    /// The server's limits when this harness configured it; `None` for a remote server.
    pub limits: Option<Value>,
    /// Whether the server is on loopback (extra source addresses are then possible).
    pub loopback: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    /// A second node this harness started on the same database (`--second-node`).
    second: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<()>>,
    )>,
    child: Option<Child>,
    _dirs: Vec<tempfile::TempDir>,
    /// A PostgreSQL this harness started (`--database auto`), stopped when dropped.
    _postgres: Option<redoubt_store_postgres::testing::TestPostgres>,
}

/// Where the server this harness starts keeps its data.
#[derive(Debug, Clone, Default)]
pub struct Storage {
    /// A PostgreSQL URL, `auto` (a throwaway PostgreSQL started for the run), or `None`
    /// for the embedded SQLite file.
    pub database: Option<String>,
    /// Start a second node on the same database; devices that only receive connect to it.
    pub second_node: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("mode", &self.mode)
            .field("server", &self.org.connector.server)
            .finish_non_exhaustive()
    }
}

async fn enroll_admin(dir: &Path, code: &str) -> Result<Profile> {
    let code = ActivationCode::parse(code.trim())?;
    Ok(redoubt_client::enroll(&dir.join("admin"), &code, DeviceName::parse("bench-admin")?).await?)
}

async fn org_of(profile: &Profile) -> Result<Org> {
    Ok(Org {
        connector: Connector::new(&profile.server, profile.pin).await?,
        second: None,
        org_key: VerifyingKey::from_bytes(&profile.org_public_key)?,
        org_id: profile.org_id(),
    })
}

impl Target {
    /// Starts or reaches the server. `server_rt` runs an in-process server. With
    /// `connector`, a server this harness starts runs the mail connector beside it, as
    /// `redoubt server` does (idle until an admin sets the mail servers).
    pub async fn start(
        mode: &Mode,
        overrides: &[String],
        server_rt: &tokio::runtime::Handle,
        connector: bool,
        storage: &Storage,
    ) -> Result<Self> {
        if (storage.database.is_some() || storage.second_node) && !matches!(mode, Mode::InProcess) {
            bail!("--database and --second-node are for a server started in this process");
        }
        if storage.second_node && storage.database.is_none() {
            bail!("--second-node needs --database (the nodes share it)");
        }
        match mode {
            Mode::InProcess => Self::in_process(overrides, server_rt, connector, storage).await,
            Mode::Spawn => Self::spawn(overrides, connector).await,
            Mode::Remote {
                addr,
                admin_profile,
                pid,
            } => {
                let profile = Profile::load(admin_profile, None).context("loading the admin profile")?;
                let admin = Session::open(&profile).await?;
                let mut org = org_of(&profile).await?;
                // Devices go to the address given, which may be another node of the admin's
                // cluster than the one in the admin's profile.
                let server =
                    redoubt_proto::ServerAddress::parse(addr).map_err(|e| anyhow!("--server {addr}: {e}"))?;
                if server != profile.server {
                    org.connector = Connector::new(&server, profile.pin).await?;
                }
                let port = addr
                    .parse::<SocketAddr>()
                    .map(|a| a.port())
                    .unwrap_or(org.connector.addr.port());
                let pid = pid.or_else(|| find_listener_pid(port));
                Ok(Self {
                    loopback: org.connector.addr.ip().is_loopback(),
                    org,
                    admin,
                    meter: pid.map_or(Meter::Unknown, Meter::Process),
                    mode: "remote",
                    limits: None,
                    stop: None,
                    task: None,
                    second: None,
                    child: None,
                    _dirs: Vec::new(),
                    _postgres: None,
                })
            }
        }
    }

    async fn in_process(
        overrides: &[String],
        server_rt: &tokio::runtime::Handle,
        connector: bool,
        storage: &Storage,
    ) -> Result<Self> {
        let (config, limits) = bench_config(overrides)?;
        let data = tempfile::tempdir()?;
        let profiles = tempfile::tempdir()?;
        std::fs::write(data.path().join("redoubt.toml"), toml::to_string(&config)?)?;
        let (database, postgres) = match storage.database.as_deref() {
            None => (None, None),
            Some("auto") => {
                let postgres =
                    tokio::task::spawn_blocking(redoubt_store_postgres::testing::TestPostgres::start)
                        .await?
                        .map_err(|e| anyhow!("starting PostgreSQL: {e}"))?;
                (Some(postgres.fresh_database().await), Some(postgres))
            }
            Some(url) => (Some(url.to_owned()), None),
        };
        let options = OpenOptions {
            database: database.clone(),
            // Enrolment waits for its key-directory epoch; the benchmarks enrol many devices.
            kt_epoch_ms: Some(20),
            ..OpenOptions::default()
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (ready, opened) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let path = data.path().to_owned();
        let first_options = options.clone();
        let task: tokio::task::JoinHandle<Result<()>> = server_rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let server = Server::open(&path, addr, &first_options).await?;
            let code = server.first_admin_code.as_ref().map(|c| c.code.clone());
            let _ = ready.send(code);
            serve_with_connector(server, listener, connector, async {
                let _ = stopped.await;
            })
            .await
        });
        let code = match opened.await {
            Ok(Some(code)) => code,
            Ok(None) => bail!("the new server made no admin code"),
            Err(_) => {
                return match task.await {
                    Ok(Err(e)) => Err(e.context("starting the server")),
                    _ => Err(anyhow!("the server did not start")),
                };
            }
        };
        let profile = enroll_admin(profiles.path(), &code).await?;
        let admin = Session::open(&profile).await?;
        let mut org = org_of(&profile).await?;
        let mut dirs = vec![data, profiles];
        let second = if storage.second_node {
            let (node, connector, dir) = second_node(&dirs[0], options, server_rt, profile.pin).await?;
            org.second = Some(connector);
            dirs.push(dir);
            Some(node)
        } else {
            None
        };
        Ok(Self {
            org,
            admin,
            meter: Meter::Threads,
            mode: if database.is_some() {
                "in-process, PostgreSQL"
            } else {
                "in-process"
            },
            limits: Some(limits),
            loopback: true,
            stop: Some(stop),
            task: Some(task),
            second,
            child: None,
            _dirs: dirs,
            _postgres: postgres,
        })
    }

    async fn spawn(overrides: &[String], connector: bool) -> Result<Self> {
        let (config, limits) = bench_config(overrides)?;
        let data = tempfile::tempdir()?;
        let profiles = tempfile::tempdir()?;
        std::fs::write(data.path().join("redoubt.toml"), toml::to_string(&config)?)?;
        let exe = std::env::current_exe()?;
        // A profiler for the server alone, e.g. REDOUBT_BENCH_SERVER_WRAPPER="valgrind --tool=dhat".
        let wrapper = std::env::var("REDOUBT_BENCH_SERVER_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        command.arg("serve").arg("--data").arg(data.path());
        if connector {
            command.arg("--connector");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the server process")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout from the server process"))?;
        let code = tokio::task::spawn_blocking(move || -> Result<String> {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().take(10) {
                if let Some(code) = line?.strip_prefix("admin ") {
                    return Ok(code.to_owned());
                }
            }
            bail!("the server process printed no admin code")
        })
        .await??;
        let pid = child.id();
        let profile = enroll_admin(profiles.path(), &code).await?;
        let admin = Session::open(&profile).await?;
        Ok(Self {
            org: org_of(&profile).await?,
            admin,
            meter: Meter::Process(pid),
            mode: "child-process",
            limits: Some(limits),
            loopback: true,
            stop: None,
            task: None,
            second: None,
            child: Some(child),
            _dirs: vec![data, profiles],
            _postgres: None,
        })
    }

    /// Stops a server this harness started (gracefully, bounded).
    pub async fn stop(mut self) -> Result<()> {
        if let Some((stop, task)) = self.second.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(result)) => result?,
                Ok(Err(e)) => bail!("server task failed: {e}"),
                Err(_) => bail!("the server did not stop within 30 s"),
            }
        }
        if let Some(mut child) = self.child.take() {
            // Closing its stdin asks it to stop.
            drop(child.stdin.take());
            let waited = tokio::task::spawn_blocking(move || {
                for _ in 0..300 {
                    if let Ok(Some(_)) = child.try_wait() {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = child.kill();
                child.wait().map(|_| ())
            })
            .await?;
            waited?;
        }
        Ok(())
    }
}

/// A second node on the first's database, from a copy of its node secrets; returns its
/// stop handle and task, a connector to it, and its data folder.
async fn second_node(
    first: &tempfile::TempDir,
    options: OpenOptions,
    server_rt: &tokio::runtime::Handle,
    pin: [u8; 32],
) -> Result<(
    (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<()>>,
    ),
    Connector,
    tempfile::TempDir,
)> {
    let data = tempfile::tempdir()?;
    std::fs::create_dir_all(data.path().join("tls"))?;
    for file in [
        "redoubt.toml",
        "org-root.key",
        "transparency.key",
        "tls/cert.pem",
        "tls/key.pem",
    ] {
        std::fs::copy(first.path().join(file), data.path().join(file))?;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, opened) = tokio::sync::oneshot::channel::<()>();
    let path = data.path().to_owned();
    let task: tokio::task::JoinHandle<Result<()>> = server_rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let server = Server::open(&path, addr, &options).await?;
        let _ = ready.send(());
        serve_with_connector(server, listener, false, async {
            let _ = stopped.await;
        })
        .await
    });
    if opened.await.is_err() {
        return match task.await {
            Ok(Err(e)) => Err(e.context("starting the second node")),
            _ => Err(anyhow!("the second node did not start")),
        };
    }
    let server = redoubt_proto::ServerAddress::parse(&addr.to_string()).map_err(|e| anyhow!("{e}"))?;
    let connector = Connector::new(&server, pin).await?;
    Ok(((stop, task), connector, data))
}

/// Runs `server` until `shutdown`; with `connector`, the mail connector runs beside it (on
/// this runtime, so its CPU time counts as the server's) and stops with it, as in
/// `redoubt server`.
async fn serve_with_connector(
    server: Server,
    listener: tokio::net::TcpListener,
    connector: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let mut connector_task = None;
    let (stop_connector, connector_stopped) = tokio::sync::watch::channel(false);
    if connector {
        connector_task = Some(tokio::spawn(redoubt_connector::run(
            server.handle(),
            server.data_dir().root().join("connector"),
            connector_stopped,
        )));
    }
    let result = server
        .run(listener, async {
            shutdown.await;
            let _ = stop_connector.send(true);
        })
        .await;
    let _ = stop_connector.send(true);
    if let Some(task) = connector_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    Ok(result?)
}

/// `redoubt-bench serve --data DIR [--connector]`: the child-process server. Prints
/// `listening ADDR` and `admin CODE`, then serves until its standard input closes.
pub fn serve_child(data: &Path, connector: bool) -> Result<()> {
    let rt = server_runtime()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = Server::open(data, addr, &OpenOptions::default()).await?;
        let code = server
            .first_admin_code
            .as_ref()
            .map(|c| c.code.clone())
            .ok_or_else(|| anyhow!("data folder already initialised"))?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening {addr}")?;
            writeln!(out, "admin {code}")?;
            out.flush()?;
        }
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        });
        serve_with_connector(server, listener, connector, async {
            let _ = stdin_closed.await;
        })
        .await
    })
}

/// The server's runtime: named threads (so their CPU time can be told apart from the load
/// generator's) that are kept alive, so none of their time is lost when one exits.
pub fn server_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .thread_name("redoubt-srv")
        .thread_keep_alive(Duration::from_secs(24 * 3600))
        .enable_all()
        .build()?)
}

/// This machine and this build, for every report.
pub fn machine() -> Value {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned());
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "cpu": model,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
        "commit": git(&["rev-parse", "HEAD"]),
        "worktree_dirty": git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "rustc_target": std::env::consts::ARCH,
    })
}
