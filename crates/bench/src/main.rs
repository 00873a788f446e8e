//! `redoubt-bench`: drives simulated devices against a Redoubt server over the real
//! protocol (TLS 1.3 + WebSocket, real authentication, real MLS ciphertexts) and reports
//! what it measured. See BENCHMARKS.md.

mod big_group;
mod device;
mod directory_sync;
mod history;
mod kt;
mod mail_push;
mod messaging;
mod report;
mod scenarios;
mod search;
mod sessions;
mod target;
mod web;
mod wire;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "redoubt-bench",
    version,
    about = "Benchmarks a Redoubt server with simulated devices over the real protocol"
)]
struct Cli {
    /// Print one JSON object per scenario instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Benchmark the server at this address (host:port) instead of starting one.
    #[arg(long, global = true, requires = "admin_profile")]
    server: Option<String>,
    /// With --server: the profile folder of an enrolled admin device (no passcode).
    #[arg(long, global = true)]
    admin_profile: Option<PathBuf>,
    /// With --server: the server's process id, for its CPU time and memory (found from
    /// the listening port when omitted and the process is visible).
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Start the server as a child process instead of in this one, so its memory figures
    /// exclude the load generator's.
    #[arg(long, global = true, conflicts_with = "server")]
    spawn_server: bool,
    /// A setting of the server this harness starts, as section.key=value (repeatable),
    /// applied after the harness's own (see BENCHMARKS.md).
    #[arg(long = "set", global = true, value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Keep the server's data in PostgreSQL: a URL, or `auto` for a throwaway PostgreSQL
    /// started for this run (Debian's `postgresql`). Default: the embedded SQLite file.
    #[arg(long, global = true, value_name = "URL|auto", conflicts_with_all = ["server", "spawn_server"])]
    database: Option<String>,
    /// With --database: start a second node on the same database; devices that only
    /// receive (`room --senders`) connect to it.
    #[arg(long, global = true, requires = "database")]
    second_node: bool,
    /// Give up on a scenario after this many seconds.
    #[arg(long, global = true, default_value_t = 1800)]
    timeout_s: u64,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// USERS users in one group; --size messages of --body-bytes with --in-flight unanswered.
    Room(MessageArgs),
    /// USERS users in USERS/2 groups of two; the same load.
    Pairs(MessageArgs),
    /// --size concurrent idle authenticated sessions.
    Sessions(SessionArgs),
    /// --size sessions, then all drop and reconnect at once.
    ReconnectStorm(SessionArgs),
    /// MLS create, join, add, remove, update at each --size member devices.
    BigGroup(BigGroupArgs),
    /// One sender at a fixed rate to groups of each --size; cost per message vs size.
    FanoutScaling(FanoutArgs),
    /// --size mails by SMTP into real Postfix + Dovecot, pushed by the mail connector to
    /// each of --users devices; delivery to device latency.
    MailPush(MailPushArgs),
    /// A new device gets --size messages of history from another device of its user,
    /// against a device reading as many live messages from the server's log.
    History(HistoryArgs),
    /// One device's local history search over --messages messages (no server): p50/p99
    /// query latency against plain SQLite FTS5 over the same text.
    Search(search::SearchArgs),
    /// --users LDAP users in --groups groups in a real slapd (needs `.ci/install-slapd`):
    /// the first directory sync, then an incremental one of 100 changes against the raw
    /// `ldapsearch` of the same entries.
    DirectorySync(DirectorySyncArgs),
    /// `redoubt web` in headless Chromium (needs `.ci/install-browser` and the `redoubt`
    /// binary beside this one): a conversation of --messages opened, then --rate messages
    /// a second arriving while it is open.
    Web(WebArgs),
    /// The key directory (key transparency) on SQLite against akd's own in-memory
    /// directory doing the same work (no server): --users published, then --epochs epochs
    /// of 100 and of 1,000 changes; publish times, history and audit proofs, store size.
    Kt(kt::KtArgs),
    /// Internal: the child-process server of --spawn-server.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        data: PathBuf,
        /// Run the mail connector beside the server.
        #[arg(long)]
        connector: bool,
    },
}

#[derive(Debug, Args, Clone)]
pub struct MessageArgs {
    /// Messages to send.
    #[arg(long, default_value_t = 5000)]
    pub size: usize,
    /// Users (one device each).
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// `room`: how many of the users send (the first ones); the others only receive (on
    /// the second node with --second-node). Default: all.
    #[arg(long)]
    pub senders: Option<usize>,
    /// Submissions sent and not yet acknowledged, at most.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Messages per second (open loop); as fast as acknowledgements allow when omitted.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Plaintext text bytes per message.
    #[arg(long, default_value_t = 300)]
    pub body_bytes: usize,
    /// Diagnostic: receivers do not acknowledge their cursor (`GroupAck`) after fetching.
    #[arg(long)]
    pub no_group_ack: bool,
}

#[derive(Debug, Args, Clone)]
pub struct SessionArgs {
    /// Sessions to open.
    #[arg(long, default_value_t = 10_000)]
    pub size: usize,
    /// Devices the sessions are spread over (default: the smaller of --size and 1000).
    #[arg(long)]
    pub devices: Option<usize>,
    /// TLS handshakes + authentications under way at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to hold the sessions idle before counting them.
    #[arg(long, default_value_t = 5)]
    pub hold_s: u64,
    /// Connections per loopback source address. Each address has ~28k ephemeral ports, but
    /// the kernel finds a free one for a bound socket by scanning, and past ~5,000 in use
    /// that scan slowed the storm's reconnects by a third (1,080/s at 5,000 per address,
    /// 761/s at 25,000, 19,000 sessions).
    #[arg(long, default_value_t = 5_000)]
    pub per_address: usize,
    /// `reconnect-storm` as a failover: instead of dropping the connections, SIGKILL this
    /// process (the node the sessions are on, with --server), and reconnect every session
    /// to --failover-to, where the probe's missed message is sent.
    #[arg(long, requires = "failover_to")]
    pub kill_pid: Option<u32>,
    /// With --kill-pid: another node of the same cluster (host:port).
    #[arg(long, requires = "kill_pid")]
    pub failover_to: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct BigGroupArgs {
    /// Member devices (repeatable).
    #[arg(long = "size", default_values_t = [1000])]
    pub sizes: Vec<usize>,
    /// Rounds of add, remove and update (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
}

#[derive(Debug, Args, Clone)]
pub struct FanoutArgs {
    /// Group sizes (repeatable).
    #[arg(long = "size", default_values_t = [2, 20, 200, 2000])]
    pub sizes: Vec<usize>,
    /// Messages per size.
    #[arg(long, default_value_t = 200)]
    pub messages: usize,
    /// Messages per second, the same for every size.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    #[arg(long, default_value_t = 300)]
    pub body_bytes: usize,
    /// Write the cost curve as an SVG plot here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct HistoryArgs {
    /// Messages of history.
    #[arg(long, default_value_t = 10_000)]
    pub size: usize,
    /// Plaintext text bytes per message.
    #[arg(long, default_value_t = 200)]
    pub body_bytes: usize,
}

#[derive(Debug, Args, Clone)]
pub struct WebArgs {
    /// Messages in the conversation the page opens.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Messages a second sent while the page is open.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// How long they are sent.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// The `redoubt` binary (default: the one beside redoubt-bench).
    #[arg(long)]
    pub redoubt: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct DirectorySyncArgs {
    /// Users in the directory (`user00000`..).
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Groups they are spread over (user i in group i mod GROUPS).
    #[arg(long, default_value_t = 100)]
    pub groups: usize,
}

#[derive(Debug, Args, Clone)]
pub struct MailPushArgs {
    /// Mails to send (round-robin over the users).
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// Users (one device and one mailbox each).
    #[arg(long, default_value_t = 4)]
    pub users: usize,
    /// Mails per second handed to the mail server (open loop).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// SMTP connections the mails are spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Plain-text body bytes per mail.
    #[arg(long, default_value_t = 300)]
    pub body_bytes: usize,
    /// Diagnostic: on an event naming a group, devices read only that group
    /// (`Messenger::sync_one`) instead of a whole `sync` (what the chat app does).
    #[arg(long)]
    pub sync_one: bool,
    /// Write each mail's timings (ms since the window began) here as CSV.
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

/// Runs `f` over `items` on spawned tasks, at most `concurrency` at a time; results in order.
pub async fn bounded<T, R, F, Fut>(items: Vec<T>, concurrency: usize, f: F) -> Vec<Result<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(usize, T) -> Fut,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut handles = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let permit = permits.clone().acquire_owned().await;
        let future = f(i, item);
        handles.push(tokio::spawn(async move {
            let result = future.await;
            drop(permit);
            result
        }));
    }
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(
            handle
                .await
                .map_err(|e| anyhow!("task failed: {e}"))
                .and_then(|r| r),
        );
    }
    results
}

/// This whole process's CPU time (user + system), in seconds.
pub fn process_cpu_s() -> f64 {
    let pid = std::process::id();
    target::Meter::Process(pid).read().cpu_s
}

/// Raises the open-file limit as far as allowed: every session is a socket, two when the
/// server runs in this process.
fn raise_fd_limit() -> u64 {
    use rlimit::Resource;
    let wanted = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1_048_576u64);
    if rlimit::setrlimit(Resource::NOFILE, wanted, wanted).is_err()
        && let Ok((_, hard)) = rlimit::getrlimit(Resource::NOFILE)
    {
        let _ = rlimit::setrlimit(Resource::NOFILE, hard, hard);
    }
    rlimit::getrlimit(Resource::NOFILE).map_or(0, |(soft, _)| soft)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // The server's (and the mail connector's) logs, for diagnosis: only when asked for.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    if let Scenario::Search(args) = &cli.scenario {
        // All on the device: no server to start.
        return search::main(args, cli.json);
    }
    if let Scenario::Kt(args) = &cli.scenario {
        // The key directory alone, opened on a data folder as the server opens it.
        return kt::main(args, cli.json);
    }
    let fd_limit = raise_fd_limit();
    if let Scenario::Serve { data, connector } = &cli.scenario {
        return target::serve_child(data, *connector);
    }
    let mode = match (&cli.server, &cli.admin_profile) {
        (Some(addr), Some(profile)) => target::Mode::Remote {
            addr: addr.clone(),
            admin_profile: profile.clone(),
            pid: cli.server_pid,
        },
        (Some(_), None) => return Err(anyhow!("--server needs --admin-profile")),
        _ if cli.spawn_server => target::Mode::Spawn,
        _ => target::Mode::InProcess,
    };
    let server_rt = target::server_runtime()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(cli.timeout_s);
    let machine = target::machine();
    let result = client_rt.block_on(async {
        // Only mail-push runs the mail connector beside the server (`redoubt server` always
        // does; it is idle until mail servers are set, so the other figures do not need it).
        let connector = matches!(cli.scenario, Scenario::MailPush(_));
        let storage = target::Storage {
            database: cli.database.clone(),
            second_node: cli.second_node,
        };
        let mut target =
            target::Target::start(&mode, &cli.set, server_rt.handle(), connector, &storage).await?;
        let common = scenarios::Common {
            deadline,
            fd_limit,
            prefix: scenarios::run_prefix(),
        };
        let report = match &cli.scenario {
            Scenario::Room(args) => scenarios::room(&mut target, &common, args, false).await,
            Scenario::Pairs(args) => scenarios::room(&mut target, &common, args, true).await,
            Scenario::Sessions(args) => scenarios::sessions(&mut target, &common, args, false).await,
            Scenario::ReconnectStorm(args) => scenarios::sessions(&mut target, &common, args, true).await,
            Scenario::BigGroup(args) => scenarios::big_group(&mut target, &common, args).await,
            Scenario::FanoutScaling(args) => scenarios::fanout(&mut target, &common, args).await,
            Scenario::MailPush(args) => mail_push::run(&mut target, &common, args).await,
            Scenario::History(args) => history::run(&mut target, &common, args).await,
            Scenario::DirectorySync(args) => directory_sync::run(&mut target, &common, args).await,
            Scenario::Web(args) => web::run(&mut target, &common, args).await,
            Scenario::Serve { .. } | Scenario::Search(_) | Scenario::Kt(_) => Err(anyhow!("unreachable")),
        };
        let stopped = target.stop().await;
        let report = report?;
        stopped?;
        Ok::<_, anyhow::Error>(report)
    });
    drop(client_rt);
    server_rt.shutdown_timeout(Duration::from_secs(5));
    result?.emit(&machine, cli.json, "the scenario's checks failed")
}
