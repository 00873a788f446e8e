//! `redoubt`: run the server, enrol a device, administer the organisation.

mod backup;
mod chat;
mod cluster;
mod directory;
mod kt;
mod mail;
mod manage;
mod output;
mod pim;
mod search;
mod unlock;
mod web;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use redoubt_client::{Messenger, Profile, Session};
use redoubt_proto::{ActivationCode, CommandKind, DeviceName, DisplayName, UserName};

use output::Output;

/// Redoubt: secure communications for organisations, on your own server.
#[derive(Debug, Parser)]
#[command(name = "redoubt", version, about, propagate_version = true)]
struct Cli {
    /// This device's profile folder (keys, certificate, server pin).
    /// Default: $XDG_CONFIG_HOME/redoubt/profile or ~/.config/redoubt/profile.
    #[arg(long, global = true, env = "REDOUBT_PROFILE", value_name = "DIR")]
    profile: Option<PathBuf>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// How the log (on standard error) is written: `text` for people, `json` (one object a
    /// line) for a log collector. The log never holds message content, keys or codes.
    #[arg(long, global = true, env = "REDOUBT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Redoubt server; on first run, initialise its data folder.
    Server(ServerArgs),
    /// Activate this device with a one-time activation code.
    Enroll(EnrollArgs),
    /// Show who this device is and check that its session authenticates.
    Whoami,
    /// Administer the organisation: users, devices, groups, policy, roles, audit
    /// (needs the admin role, or helpdesk / auditor for their parts).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Your own devices: list them, approve a new one.
    #[command(subcommand)]
    Device(manage::OwnDeviceCommand),
    /// Send an end-to-end encrypted message to a conversation or a user (a direct
    /// conversation is created on first use).
    Send {
        /// A conversation's name, or a user name.
        to: String,
        /// The message text.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        text: Option<String>,
        /// Send this file as an encrypted attachment instead.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Download, decrypt and verify an attachment.
    Fetch {
        /// The message id `read` shows (such as 1a2b3c4d-7).
        message_id: String,
        /// Where to write the file.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
    },
    /// Fetch new messages and print conversations.
    Read {
        /// Only this conversation.
        conversation: Option<String>,
        /// Keep running and print messages as they arrive (Ctrl-C to stop).
        #[arg(long)]
        follow: bool,
    },
    /// Search this device's own messages and attachment names, newest first (local only).
    Search(search::SearchArgs),
    /// Group conversations.
    #[command(subcommand)]
    Group(GroupCommand),
    /// A terminal UI: conversations, messages as they arrive, a line to type into.
    Chat,
    /// This device in a browser window: chats, mail, calendar, contacts and, with a role,
    /// the admin console. Serves on this machine only; prints a one-time login URL.
    Web {
        /// Where to listen (a loopback address; port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8470")]
        listen: std::net::SocketAddr,
        /// Open the URL in the default browser.
        #[arg(long)]
        open: bool,
    },
    /// This device's passcode, which encrypts its local data.
    #[command(subcommand)]
    Passcode(PasscodeCommand),
    /// Your mail, pushed end-to-end encrypted from the organisation's mail server.
    #[command(subcommand)]
    Mail(mail::MailCommand),
    /// Your calendar, mirrored end-to-end encrypted from the organisation's calendar server.
    #[command(subcommand)]
    Calendar(pim::CalendarCommand),
    /// Your contacts, mirrored end-to-end encrypted from the organisation's contacts server.
    #[command(subcommand)]
    Contacts(pim::ContactsCommand),
    /// Key-transparency notices for this account: devices added that this device was not
    /// told of, directories that differ between devices, contacts whose devices changed.
    Security,
    /// The safety number of you and another user, from both users' logged devices: the
    /// same on both sides when nobody's keys were tampered with.
    Verify {
        user: String,
        /// Record the number as verified; a later change of their devices becomes a notice.
        #[arg(long)]
        mark: bool,
        /// Also draw the number as a QR code.
        #[arg(long)]
        qr: bool,
    },
    /// The key directory, from outside (`kt audit`).
    #[command(subcommand)]
    Kt(kt::KtCommand),
}

#[derive(Debug, Subcommand)]
enum PasscodeCommand {
    /// Set or change the passcode (the new one from REDOUBT_NEW_PASSCODE, or asked twice).
    Set,
    /// Remove the passcode (refused when the organisation's policy requires one).
    Remove,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Create a group conversation with these users (all their devices, and yours).
    Create {
        name: String,
        /// Comma-separated user names.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
        /// Send members added later this many days of the conversation's history (`30d`),
        /// or `off` (the default). Every member sees the setting.
        #[arg(long, value_name = "DAYS|off", value_parser = share_history_days)]
        share_history: Option<u32>,
    },
    /// Change a group's settings; every member sees the change.
    Set {
        group: String,
        /// Days of history sent to members added later (`30d`), or `off`.
        #[arg(long, value_name = "DAYS|off", value_parser = share_history_days)]
        share_history: u32,
    },
    /// Show a conversation: its kind, MLS epoch, settings and member devices.
    Info { group: String },
    /// Add a user (all their devices) to a group.
    Add { group: String, user: String },
    /// Remove a user (all their devices) from a group.
    Remove { group: String, user: String },
    /// List this device's conversations.
    List,
    /// Show a conversation's members: every device with its certificate fingerprint.
    Members { group: String },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct ServerArgs {
    #[command(subcommand)]
    action: Option<ServerAction>,
    /// Data folder: root key, TLS certificate, database, configuration.
    #[arg(long, value_name = "DIR", required = true)]
    data: Option<PathBuf>,
    /// Address to listen on. Default: server.listen in the configuration (127.0.0.1:8443).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// host:port devices use to reach this server, written into activation codes.
    /// Default: server.public_address in the configuration, else the listen address.
    #[arg(long, value_name = "HOST:PORT")]
    public_address: Option<String>,
    /// The organisation's name, for a new data folder.
    #[arg(long, value_name = "NAME")]
    org_name: Option<String>,
    /// Do not draw the first admin's activation code as a QR code.
    #[arg(long)]
    no_qr: bool,
    /// Keep the organisation's data in this PostgreSQL database (postgres://user@host/db;
    /// `sslmode` and the other libpq parameters are honoured) instead of the embedded SQLite
    /// file: every node of a cluster names the same one. Better given in the environment,
    /// where other users' `ps` cannot read a password in it.
    #[arg(long, env = "REDOUBT_DATABASE", value_name = "URL", hide_env_values = true)]
    database: Option<String>,
    /// Overrides server.kt_epoch_ms: how often, at most, the key directory publishes an
    /// epoch (milliseconds).
    #[arg(long, env = "REDOUBT_KT_EPOCH_MS", value_name = "MS")]
    kt_epoch_ms: Option<u64>,
    /// Overrides metrics.listen: serve Prometheus metrics (GET /metrics, plain HTTP) on
    /// this address, such as 127.0.0.1:9464.
    #[arg(long, env = "REDOUBT_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
enum ServerAction {
    /// Move a single server's organisation (its SQLite database and attachments) into an
    /// empty PostgreSQL database, all or nothing; the data folder then serves as the
    /// cluster's first node (`redoubt server --data DIR --database URL`). Stop the server
    /// first.
    Migrate {
        /// The single server's data folder.
        #[arg(long, value_name = "DIR")]
        from_sqlite: PathBuf,
        /// The PostgreSQL database (postgres://user@host/db), empty.
        #[arg(long, env = "REDOUBT_DATABASE", value_name = "URL", hide_env_values = true)]
        database: String,
    },
    /// Back up a single server's data folder into one encrypted archive, while the server
    /// runs (`backup verify FILE` checks an archive).
    Backup(backup::BackupArgs),
    /// Restore an archive of `server backup` into a new data folder, all or nothing.
    Restore(backup::RestoreArgs),
}

#[derive(Debug, Args)]
struct EnrollArgs {
    /// The activation code (RDB-...), or - to read it from standard input.
    code: String,
    /// A name for this device, shown to admins. Default: the host name.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage devices: activation codes, lock, unlock, wipe, revoke.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// IT policy: what devices must enforce.
    #[command(subcommand)]
    Policy(manage::PolicyCommand),
    /// Directory groups of users (policy scopes; not conversations).
    #[command(subcommand)]
    Group(manage::DirectoryGroupCommand),
    /// Roles: admin, helpdesk, auditor.
    #[command(subcommand)]
    Role(manage::RoleCommand),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(manage::AuditCommand),
    /// The organisation's mail servers and users' addresses.
    #[command(subcommand)]
    Mail(mail::AdminMailCommand),
    /// The organisation's calendar and contacts server (CalDAV/CardDAV).
    #[command(subcommand)]
    Dav(mail::AdminDavCommand),
    /// The server nodes sharing the organisation's database.
    #[command(subcommand)]
    Cluster(cluster::AdminClusterCommand),
    /// Users and groups from the organisation's LDAP or Active Directory.
    #[command(subcommand)]
    Directory(directory::AdminDirectoryCommand),
    /// SCIM 2.0 provisioning by an identity provider (Entra ID, Okta, Keycloak).
    #[command(subcommand)]
    Scim(directory::AdminScimCommand),
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user and print an activation code for their first device.
    Add {
        /// Login name: lower-case letters, digits, '.', '_' or '-'.
        user: String,
        /// The person's full name.
        #[arg(long)]
        display_name: Option<String>,
        /// Do not draw the activation code as a QR code.
        #[arg(long)]
        no_qr: bool,
    },
    /// List users.
    List,
    /// Create users from a CSV file (columns: user,display_name,groups,roles; groups and
    /// roles separated by ';'), all or none, printing each one's activation code.
    Import {
        #[arg(value_name = "CSV")]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Print an activation code for one more device of an existing user.
    Add {
        user: String,
        /// Do not draw the activation code as a QR code.
        #[arg(long)]
        no_qr: bool,
    },
    /// List devices, with policy version acknowledged, last seen and remote commands.
    List {
        /// Only this user's devices.
        #[arg(long)]
        user: Option<String>,
    },
    /// Lock a device until its passcode is entered (or an admin unlocks it).
    Lock {
        /// Device id (or a unique prefix) or name.
        device: String,
    },
    /// Lift a remote lock.
    Unlock { device: String },
    /// Erase a device's local data and keys; it is revoked once it acknowledges.
    Wipe { device: String },
    /// Revoke a device now: sessions closed, authentication refused, removed from its
    /// conversations.
    Revoke { device: String },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The chat UI owns the terminal: log nothing there unless asked to (RUST_LOG).
    let default_filter = match cli.command {
        Command::Server(_) => "info",
        Command::Chat => "off",
        Command::Web { .. } => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One JSON object a line: time, level, target, message and the event's fields.
        LogFormat::Json => log.json().with_ansi(false).init(),
    }

    let out = Output::new(cli.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            out.error(&anyhow::Error::new(error));
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, &out)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            out.error(&error);
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, out: &Output) -> Result<()> {
    match cli.command {
        Command::Server(args) => server(args, out).await,
        Command::Enroll(args) => enroll(&profile_dir(cli.profile)?, args, out).await,
        Command::Whoami => whoami(&profile_dir(cli.profile)?, out).await,
        Command::Admin(command) => admin(&profile_dir(cli.profile)?, command, out).await,
        Command::Device(command) => {
            // A messenger, not just a session: it checks the account's key history first,
            // and knows which devices it learnt of only from the key directory.
            let mut messenger = messenger(&profile_dir(cli.profile)?).await?;
            let result = async {
                let seen_only_in_log = messenger.devices_seen_only_in_log()?;
                manage::own_device(messenger.session(), command, &seen_only_in_log, out).await
            }
            .await;
            messenger.close().await;
            result
        }
        Command::Send { to, text, file } => send(&profile_dir(cli.profile)?, &to, text, file, out).await,
        Command::Fetch {
            message_id,
            out: path,
        } => fetch(&profile_dir(cli.profile)?, &message_id, &path, out).await,
        Command::Read { conversation, follow } => {
            read(&profile_dir(cli.profile)?, conversation.as_deref(), follow, out).await
        }
        Command::Search(args) => {
            let messenger = messenger(&profile_dir(cli.profile)?).await?;
            search::run(&messenger, args, out)
        }
        Command::Group(command) => group(&profile_dir(cli.profile)?, command, out).await,
        Command::Passcode(command) => passcode(&profile_dir(cli.profile)?, command, out),
        Command::Mail(command) => {
            let mut messenger = messenger(&profile_dir(cli.profile)?).await?;
            mail::run(&mut messenger, command, out).await
        }
        Command::Calendar(command) => {
            let mut messenger = messenger(&profile_dir(cli.profile)?).await?;
            pim::calendar(&mut messenger, command, out).await
        }
        Command::Contacts(command) => {
            let mut messenger = messenger(&profile_dir(cli.profile)?).await?;
            pim::contacts(&mut messenger, command, out).await
        }
        Command::Security => kt::security(&profile_dir(cli.profile)?, out).await,
        Command::Verify { user, mark, qr } => {
            kt::verify(&profile_dir(cli.profile)?, &user, mark, qr, out).await
        }
        Command::Kt(kt::KtCommand::Audit(args)) => kt::audit(args, out).await,
        Command::Chat => {
            let mut profile = unlock::load_profile(&profile_dir(cli.profile)?)?;
            let messenger =
                unlock::comply(&mut profile, |p| async move { Messenger::open(&p).await }).await?;
            chat::run(messenger, profile).await
        }
        Command::Web { listen, open } => web::run(&profile_dir(cli.profile)?, listen, open).await,
    }
}

fn profile_dir(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir);
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .context("no --profile given and neither XDG_CONFIG_HOME nor HOME is set")?;
    Ok(config.join("redoubt").join("profile"))
}

async fn server(args: ServerArgs, out: &Output) -> Result<()> {
    match args.action {
        Some(ServerAction::Backup(args)) => return backup::backup(args, out).await,
        Some(ServerAction::Restore(args)) => return backup::restore(args, out).await,
        _ => {}
    }
    if let Some(ServerAction::Migrate {
        from_sqlite,
        database,
    }) = args.action
    {
        let report = redoubt_server::migrate_to_postgres(&from_sqlite, &database)
            .await
            .with_context(|| format!("cannot move {} into PostgreSQL", from_sqlite.display()))?;
        out.migrated(&from_sqlite, &report);
        return Ok(());
    }
    let data = args.data.context("--data is required")?;
    let stop_requested = shutdown_signal();
    let listen = match args.listen {
        Some(listen) => listen,
        None => redoubt_server::configured_listen(&data)?,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    let options = redoubt_server::OpenOptions {
        public_address: args.public_address,
        org_name: args.org_name,
        database: args.database,
        kt_epoch_ms: args.kt_epoch_ms,
        ..redoubt_server::OpenOptions::default()
    };
    let mut server = redoubt_server::Server::open(&data, bound, &options)
        .await
        .with_context(|| format!("cannot open the data folder {}", data.display()))?;
    if let Some(address) = args.metrics_listen.or(server.config().metrics.listen) {
        let metrics = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen for metrics on {address}"))?;
        let bound = metrics.local_addr()?;
        if !bound.ip().is_loopback() {
            tracing::warn!(%bound, "metrics are served beyond this machine: firewall the port");
        }
        tracing::info!(address = %bound, "serving Prometheus metrics at /metrics");
        server = server.serve_metrics_on(metrics);
    }
    match &server.first_admin_code {
        Some(code) => out.first_admin_code(&data, &server.data_dir().admin_activation(), code, !args.no_qr),
        None => {
            let pending = server.data_dir().admin_activation();
            if pending.exists() {
                tracing::info!(path = %pending.display(), "the first admin's activation code is in this file");
            }
        }
    }
    // The mail connector runs beside the server, as a device of its own (it is idle until
    // an admin sets the mail servers).
    let (stop_connector, stopped) = tokio::sync::watch::channel(false);
    let connector = tokio::spawn(run_connector(
        server.handle(),
        server.data_dir().root().join("connector"),
        stopped,
    ));
    let shutdown = async {
        stop_requested.await;
        let _ = stop_connector.send(true);
    };
    server.run(listener, shutdown).await?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), connector).await;
    Ok(())
}

/// The mail connector's lease in a cluster: one node runs it at a time.
const CONNECTOR_LEASE: &str = "mail-connector";
const CONNECTOR_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(15);
const CONNECTOR_LEASE_RENEW: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the mail connector until `stopped`. In a cluster only while this node holds the
/// connector's lease: it is renewed every 5 s, and the connector is stopped as soon as a
/// renewal fails or finds another holder (a node that was paused past the lease's 15 s
/// learns so at its first renewal); another node takes over once the lease lapses.
async fn run_connector(
    handle: redoubt_server::ServerHandle,
    dir: PathBuf,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    if !handle.is_clustered() {
        return redoubt_connector::run(handle, dir, stopped).await;
    }
    let mut tick = tokio::time::interval(CONNECTOR_LEASE_RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running: Option<(tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => break,
        }
        let held = match handle.acquire_lease(CONNECTOR_LEASE, CONNECTOR_LEASE_TTL).await {
            Ok(lease) => lease.is_some(),
            Err(error) => {
                tracing::warn!(%error, "renewing the mail connector's lease failed");
                false
            }
        };
        match (&running, held) {
            (None, true) => {
                tracing::info!("this node holds the mail connector's lease: running the connector");
                let (stop, connector_stopped) = tokio::sync::watch::channel(false);
                let task = tokio::spawn(redoubt_connector::run(
                    handle.clone(),
                    dir.clone(),
                    connector_stopped,
                ));
                running = Some((stop, task));
            }
            (Some(_), false) => {
                tracing::warn!("the mail connector's lease is lost: stopping the connector here");
                if let Some((stop, task)) = running.take() {
                    let _ = stop.send(true);
                    task.abort();
                }
            }
            _ => {}
        }
    }
    if let Some((stop, task)) = running {
        let _ = stop.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. Both are caught from this call on, not from the
/// future's first poll: the server calls it before it binds and initialises its data folder,
/// so a stop during start-up (`systemctl stop` right after a start) is graceful too, where
/// the signal's default action would kill the process.
#[cfg(unix)]
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    async fn received(signal: std::io::Result<Signal>, name: &str) {
        match signal {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for {name}");
                std::future::pending::<()>().await;
            }
        }
    }
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        tokio::select! {
            () = received(interrupt, "SIGINT") => {}
            () = received(terminate, "SIGTERM") => {}
        }
    }
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn default_device_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "device".to_owned())
}

async fn enroll(profile: &Path, args: EnrollArgs, out: &Output) -> Result<()> {
    let text = if args.code == "-" {
        use std::io::Read;
        let mut text = String::new();
        // An activation code is a few hundred characters; refuse to buffer more.
        std::io::stdin().take(4096).read_to_string(&mut text)?;
        text
    } else {
        args.code
    };
    let code = ActivationCode::parse(&text).context("that is not a valid activation code")?;
    let name = DeviceName::parse(&args.name.unwrap_or_else(default_device_name)).context("invalid --name")?;
    let mut profile = redoubt_client::enroll(profile, &code, name).await?;
    out.enrolled(&profile);
    // Reachable at once: opening the messenger publishes this device's key packages, so
    // others can add it to conversations before it runs anything else.
    // The enrolment stands whatever happens here: what is not published now goes out with
    // the device's next command. Notes go to stderr, so `--json` prints one document.
    match unlock::comply(&mut profile, |p| async move { Messenger::open(&p).await }).await {
        Ok(messenger) => messenger.close().await,
        Err(error)
            if error
                .downcast_ref::<redoubt_client::ClientError>()
                .and_then(redoubt_client::ClientError::code)
                == Some(redoubt_proto::ErrorCode::DeviceApprovalRequired) =>
        {
            eprintln!(
                "This device waits for approval from another of your devices (`redoubt device approve`); \
                 it joins your conversations once approved and used."
            );
        }
        Err(error) => eprintln!(
            "This device's keys are not published yet ({error:#}); it becomes reachable at its next command."
        ),
    }
    Ok(())
}

fn passcode(profile_dir: &Path, command: PasscodeCommand, out: &Output) -> Result<()> {
    let mut profile = unlock::load_profile(profile_dir)?;
    let policy = redoubt_client::current_policy(&profile)?;
    match command {
        PasscodeCommand::Set => {
            let passcode = match std::env::var("REDOUBT_NEW_PASSCODE") {
                Ok(passcode) if passcode.chars().count() as u64 >= u64::from(policy.passcode_min_length) => {
                    passcode
                }
                Ok(_) => anyhow::bail!(
                    "the passcode must have at least {} characters",
                    policy.passcode_min_length
                ),
                Err(_) if std::env::var_os("REDOUBT_PASSCODE").is_some() => {
                    anyhow::bail!(
                        "give the new passcode in REDOUBT_NEW_PASSCODE (REDOUBT_PASSCODE is the current one)"
                    )
                }
                Err(_) => unlock::new_passcode(policy.passcode_min_length)?,
            };
            profile.set_passcode(Some(&passcode))?;
            out.note("Passcode set: this device's data is now encrypted under it.");
        }
        PasscodeCommand::Remove => {
            if policy.passcode_required {
                anyhow::bail!("the organisation's policy requires a passcode on this device");
            }
            profile.set_passcode(None)?;
            out.note("Passcode removed.");
        }
    }
    Ok(())
}

async fn open_session(profile_dir: &Path) -> Result<(Profile, Session)> {
    let mut profile = unlock::load_profile(profile_dir)?;
    let session = unlock::comply(&mut profile, |p| async move { Session::open(&p).await }).await?;
    Ok((profile, session))
}

async fn whoami(profile_dir: &Path, out: &Output) -> Result<()> {
    let (profile, mut session) = open_session(profile_dir).await?;
    let info = session.whoami().await?;
    session.close().await;
    out.whoami(&profile, &info);
    Ok(())
}

fn user_name(text: &str) -> Result<UserName> {
    UserName::parse(text).with_context(|| format!("invalid user name {text:?}"))
}

async fn admin(profile_dir: &Path, command: AdminCommand, out: &Output) -> Result<()> {
    let (profile, mut session) = open_session(profile_dir).await?;
    let result = async {
        match command {
            AdminCommand::User(UserCommand::Add {
                user,
                display_name,
                no_qr,
            }) => {
                let display_name = display_name
                    .map(|d| DisplayName::parse(&d))
                    .transpose()
                    .context("invalid --display-name")?;
                let issued = session.admin_user_add(user_name(&user)?, display_name).await?;
                out.activation_code(&issued, !no_qr);
            }
            AdminCommand::User(UserCommand::List) => {
                out.users(&session.admin_user_list().await?);
            }
            AdminCommand::Device(DeviceCommand::Add { user, no_qr }) => {
                let issued = session.admin_device_add(user_name(&user)?).await?;
                out.activation_code(&issued, !no_qr);
            }
            AdminCommand::Device(DeviceCommand::List { user }) => {
                let user = user.as_deref().map(user_name).transpose()?;
                out.devices(&session.admin_device_list(user).await?);
            }
            AdminCommand::Mail(command) => mail::admin(&mut session, command, out).await?,
            AdminCommand::Dav(command) => mail::admin_dav(&mut session, command, out).await?,
            AdminCommand::Cluster(command) => cluster::admin(&mut session, command, out).await?,
            AdminCommand::Directory(command) => directory::admin(&mut session, command, out).await?,
            AdminCommand::Scim(command) => directory::scim(&mut session, command, out).await?,
            AdminCommand::User(UserCommand::Import { file }) => {
                manage::import(&mut session, &file, out).await?
            }
            AdminCommand::Device(DeviceCommand::Lock { device }) => {
                manage::device_command(&mut session, &device, CommandKind::Lock, out).await?;
            }
            AdminCommand::Device(DeviceCommand::Unlock { device }) => {
                manage::device_command(&mut session, &device, CommandKind::Unlock, out).await?;
            }
            AdminCommand::Device(DeviceCommand::Wipe { device }) => {
                manage::device_command(&mut session, &device, CommandKind::Wipe, out).await?;
            }
            AdminCommand::Device(DeviceCommand::Revoke { device }) => {
                manage::device_revoke(&mut session, &device, out).await?;
            }
            AdminCommand::Policy(command) => manage::policy(&mut session, command, out).await?,
            AdminCommand::Group(command) => manage::directory_group(&mut session, command, out).await?,
            AdminCommand::Role(command) => manage::roles(&mut session, command, out).await?,
            AdminCommand::Audit(command) => manage::audit(&mut session, &profile, command, out).await?,
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    session.close().await;
    result
}

async fn messenger(profile_dir: &Path) -> Result<Messenger> {
    let mut profile = unlock::load_profile(profile_dir)?;
    unlock::comply(&mut profile, |p| async move { Messenger::open(&p).await }).await
}

fn conversation(messenger: &Messenger, name: &str) -> Result<redoubt_client::Conversation> {
    messenger
        .conversation(name)?
        .with_context(|| format!("no conversation called {name:?} (see `redoubt group list`)"))
}

async fn send(
    profile_dir: &Path,
    to: &str,
    text: Option<String>,
    file: Option<PathBuf>,
    out: &Output,
) -> Result<()> {
    let mut messenger = messenger(profile_dir).await?;
    let (conversation, seq) = match (text, file) {
        (_, Some(file)) => {
            let mut progress = output::Progress::new("Uploading", &file, out.is_json());
            let sent = messenger
                .send_file(to, &file, |done, total| progress.update(done, total))
                .await?;
            progress.finish();
            sent
        }
        (Some(text), None) => messenger.send_text(to, &text).await?,
        (None, None) => anyhow::bail!("give a message text or --file"),
    };
    out.sent(&conversation, seq);
    Ok(())
}

async fn fetch(profile_dir: &Path, message_id: &str, path: &Path, out: &Output) -> Result<()> {
    let mut messenger = messenger(profile_dir).await?;
    messenger.sync().await?;
    let (_, message) = messenger
        .find_message(message_id)?
        .with_context(|| format!("no message {message_id:?} (see the ids `redoubt read` prints)"))?;
    let attachment = message
        .attachment
        .with_context(|| format!("message {message_id} has no attachment"))?;
    let mut progress = output::Progress::new("Downloading", Path::new(&attachment.name), out.is_json());
    messenger
        .fetch_attachment(&attachment, path, |done, total| progress.update(done, total))
        .await?;
    progress.finish();
    out.fetched(&attachment.name, attachment.bytes, path);
    Ok(())
}

async fn read(profile_dir: &Path, only: Option<&str>, follow: bool, out: &Output) -> Result<()> {
    let mut messenger = messenger(profile_dir).await?;
    let report = messenger.sync().await?;
    if report.failures > 0 {
        tracing::warn!(
            failures = report.failures,
            "some log entries could not be processed"
        );
    }
    let selected = |messenger: &Messenger| -> Result<Vec<redoubt_client::Conversation>> {
        Ok(match only {
            Some(name) => vec![conversation(messenger, name)?],
            None => messenger.conversations()?,
        })
    };
    let mut shown: std::collections::HashMap<redoubt_proto::GroupId, u64> = Default::default();
    for conversation in selected(&messenger)? {
        let messages = with_receipts(&messenger, &conversation, 0)?;
        let last = messages.last().map_or(0, |m| m.0.seq);
        shown.insert(conversation.group_id, last);
        out.messages(&conversation, &messages, !follow);
        messenger.mark_read(&conversation, last).await?;
    }
    if !follow {
        return Ok(());
    }
    loop {
        tokio::select! {
            event = messenger.next_event() => match event {
                Ok(_) => {}
                Err(error) if error.is_transient() => {
                    eprintln!("connection lost ({error}); reconnecting…");
                    messenger.reconnect(u32::MAX, |attempt, wait| {
                        tracing::info!(attempt, wait_ms = wait.as_millis() as u64, "reconnecting");
                    }).await?;
                }
                Err(error) => return Err(error.into()),
            },
            _ = shutdown_signal() => return Ok(()),
        }
        messenger.sync().await?;
        for conversation in selected(&messenger)? {
            let last = shown.get(&conversation.group_id).copied().unwrap_or(0);
            let new = with_receipts(&messenger, &conversation, last)?;
            if let Some(newest) = new.last().map(|m| m.0.seq) {
                shown.insert(conversation.group_id, newest);
                out.messages(&conversation, &new, false);
                messenger.mark_read(&conversation, newest).await?;
            }
        }
    }
}

/// A conversation's messages after `after_seq`, each with its delivery and read receipts.
fn with_receipts(
    messenger: &Messenger,
    conversation: &redoubt_client::Conversation,
    after_seq: u64,
) -> Result<Vec<(redoubt_client::StoredMessage, redoubt_client::Receipts)>> {
    let mut rows = Vec::new();
    for message in messenger
        .messages(conversation)?
        .into_iter()
        .filter(|m| m.seq > after_seq)
    {
        let receipts = messenger.receipts(conversation, message.seq)?;
        rows.push((message, receipts));
    }
    Ok(rows)
}

async fn group(profile_dir: &Path, command: GroupCommand, out: &Output) -> Result<()> {
    let mut messenger = messenger(profile_dir).await?;
    messenger.sync().await?;
    match command {
        GroupCommand::Create {
            name,
            members,
            share_history,
        } => {
            if messenger.conversation(&name)?.is_some() {
                anyhow::bail!("a conversation called {name:?} exists already");
            }
            let members = members.iter().map(|m| user_name(m)).collect::<Result<Vec<_>>>()?;
            let created = messenger
                .create_group_sharing_history(&name, &members, share_history.unwrap_or(0))
                .await?;
            out.group_changed("created", &created, &messenger.members(&created)?);
        }
        GroupCommand::Add { group, user } => {
            let conversation = conversation(&messenger, &group)?;
            messenger.add_users(&conversation, &[user_name(&user)?]).await?;
            out.group_changed("added", &conversation, &messenger.members(&conversation)?);
        }
        GroupCommand::Remove { group, user } => {
            let conversation = conversation(&messenger, &group)?;
            messenger.remove_user(&conversation, &user_name(&user)?).await?;
            out.group_changed("removed", &conversation, &messenger.members(&conversation)?);
        }
        GroupCommand::List => {
            let mut rows = Vec::new();
            for conversation in messenger.conversations()? {
                let (members, epoch) = if conversation.removed {
                    (Vec::new(), None)
                } else {
                    (
                        messenger.members(&conversation)?,
                        Some(messenger.epoch(&conversation)?),
                    )
                };
                rows.push((conversation, members, epoch));
            }
            out.groups(&rows);
        }
        GroupCommand::Members { group } | GroupCommand::Info { group } => {
            let conversation = conversation(&messenger, &group)?;
            let epoch = (!conversation.removed)
                .then(|| messenger.epoch(&conversation))
                .transpose()?;
            out.members(
                &conversation,
                &messenger.members(&conversation)?,
                &messenger.settings(&conversation)?,
                epoch,
            );
        }
        GroupCommand::Set { group, share_history } => {
            let conversation = conversation(&messenger, &group)?;
            messenger.set_share_history(&conversation, share_history).await?;
            out.members(
                &conversation,
                &messenger.members(&conversation)?,
                &messenger.settings(&conversation)?,
                Some(messenger.epoch(&conversation)?),
            );
        }
    }
    Ok(())
}

/// `30d`, `30` or `off` (0) as days.
fn share_history_days(text: &str) -> Result<u32, String> {
    if text == "off" {
        return Ok(0);
    }
    text.strip_suffix('d')
        .unwrap_or(text)
        .parse::<u32>()
        .map_err(|_| format!("{text:?} is not a number of days (such as 30d) or off"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
