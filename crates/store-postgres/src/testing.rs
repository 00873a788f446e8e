//! A throwaway PostgreSQL cluster for tests (feature `testing`). Needs nothing but the
//! server binaries of Debian's `postgresql` package.
//!
//! [`TestPostgres::shared`] starts one cluster per test process, on 127.0.0.1 at a free
//! port, in a temporary directory; [`TestPostgres::fresh_database`] gives each test a new
//! empty database, so tests running in parallel never share data. The server runs with
//! `fsync` and `synchronous_commit` on, as in production: what tests measure is real.
//!
//! Nothing is left behind: a watchdog shell, started beside the server, waits for this
//! process's end (its standard input, a pipe from us, reaches end of file however we exit,
//! killed or not), then stops the server and removes the directory.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use sqlx::{Connection, PgConnection};

/// How long the server may take to accept connections, in seconds.
const START_TIMEOUT_S: u32 = 30;
/// Free ports tried before giving up (another process may take the one we found).
const PORT_ATTEMPTS_MAX: u32 = 5;
/// Server log lines quoted when it fails.
const LOG_TAIL_LINES: usize = 30;
/// The system user the server runs as when we are root (Debian's package creates it).
const SYSTEM_USER: &str = "postgres";

/// A PostgreSQL cluster in a temporary directory. Dropping it stops the server and removes
/// the directory; the one [`TestPostgres::shared`] returns lives until the process ends.
#[derive(Debug)]
pub struct TestPostgres {
    bin: PathBuf,
    /// Holds `data/`, the Unix socket and `server.log`.
    dir: tempfile::TempDir,
    port: u16,
    /// `initdb` and `postgres` refuse to run as root: then they run as [`SYSTEM_USER`].
    as_system_user: bool,
    /// Its standard input is our end of the pipe it waits on.
    watchdog: Mutex<Option<Child>>,
    databases: AtomicU64,
}

impl TestPostgres {
    /// The cluster of this test process, started on first use. Panics, with the server's
    /// log, when it cannot start: no test could run without it.
    pub fn shared() -> &'static TestPostgres {
        static SHARED: OnceLock<Result<TestPostgres, String>> = OnceLock::new();
        match SHARED.get_or_init(TestPostgres::start) {
            Ok(server) => server,
            Err(error) => panic!("cannot start the test PostgreSQL: {error}"),
        }
    }

    /// A cluster of the caller's own, for tests that stop or restart it.
    pub fn start() -> Result<TestPostgres, String> {
        let bin = binaries()?;
        let dir = tempfile::Builder::new()
            .prefix("redoubt-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        // The directory is ours: its owner is who we run as.
        let as_system_user = {
            use std::os::unix::fs::MetadataExt;
            let owner = std::fs::metadata(dir.path())
                .map_err(|e| format!("cannot inspect {}: {e}", dir.path().display()))?
                .uid();
            owner == 0
        };
        let mut server = TestPostgres {
            bin,
            dir,
            port: 0,
            as_system_user,
            watchdog: Mutex::new(None),
            databases: AtomicU64::new(0),
        };
        if as_system_user {
            run(Command::new("chown")
                .arg(format!("{SYSTEM_USER}:"))
                .arg(server.dir.path()))?;
        }
        server.init_cluster()?;
        server.watchdog = Mutex::new(Some(server.start_watchdog()?));
        for attempt in 1..=PORT_ATTEMPTS_MAX {
            server.port = free_port()?;
            server.configure()?;
            match server.start_server() {
                Ok(()) => return Ok(server),
                Err(error) if attempt < PORT_ATTEMPTS_MAX && error.contains("could not bind") => {}
                Err(error) => return Err(error),
            }
        }
        Err("no free port".into())
    }

    /// The port the server listens on, at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `database` (superuser `postgres`, no password: trust).
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// The URL of a new, empty database, made for the caller alone.
    pub async fn fresh_database(&self) -> String {
        let number = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("redoubt_{}_{number}", std::process::id());
        let result = async {
            let mut conn = PgConnection::connect(&self.url_for("postgres")).await?;
            // A name of digits and underscores: nothing to escape.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await?;
            conn.close().await
        }
        .await;
        if let Err(error) = result {
            panic!("cannot create database {name}: {error}\n{}", self.log_tail());
        }
        self.url_for(&name)
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are ended, transactions rolled
    /// back). Blocks until it is down; panics, with the server's log, if it does not stop.
    pub fn stop(&self) {
        let stopped = run(self
            .command("pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-s", "-D"])
            .arg(self.data()));
        if let Err(error) = stopped {
            panic!("cannot stop the test PostgreSQL: {error}\n{}", self.log_tail());
        }
    }

    /// Starts the server again on the same directory and port, stopping it first if it
    /// runs. Blocks until it accepts connections; panics, with the server's log, if it
    /// does not.
    pub fn restart(&self) {
        let running = self
            .command("pg_ctl")
            .args(["status", "-D"])
            .arg(self.data())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if running {
            self.stop();
        }
        if let Err(error) = self.start_server() {
            panic!("cannot restart the test PostgreSQL: {error}");
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// A PostgreSQL program, run as [`SYSTEM_USER`] when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_system_user {
            let mut command = Command::new("runuser");
            command.args(["-u", SYSTEM_USER, "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        // Somewhere the system user may enter (not, perhaps, the test's directory).
        command.current_dir(self.dir.path());
        command
    }

    fn init_cluster(&self) -> Result<(), String> {
        // --no-sync: a throwaway cluster's files need not be on disk before it starts; the
        // server itself runs with fsync on.
        run(self
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(self.data()))
    }

    /// Settings appended to `postgresql.conf` (a later line wins, so a new port may follow).
    fn configure(&self) -> Result<(), String> {
        let settings = format!(
            "\n# redoubt_store_postgres::testing\n\
             listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{}'\n\
             max_connections = 300\n\
             fsync = on\n\
             synchronous_commit = on\n\
             full_page_writes = on\n",
            self.port,
            self.dir.path().display(),
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))
            .and_then(|mut file| file.write_all(settings.as_bytes()))
            .map_err(|e| format!("cannot configure the test cluster: {e}"))
    }

    fn start_server(&self) -> Result<(), String> {
        let timeout = START_TIMEOUT_S.to_string();
        let started = run(self
            .command("pg_ctl")
            .args(["start", "-w", "-s", "-t", &timeout, "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.log()));
        started.map_err(|error| {
            format!(
                "the server did not accept connections within {START_TIMEOUT_S} s: {error}\n\
                 server log ({}):\n{}",
                self.log().display(),
                self.log_tail()
            )
        })
    }

    /// The shell that stops the server and removes the directory once our end of its
    /// standard input closes, that is, when this process ends or drops the cluster. In a
    /// process group of its own, ignoring the terminal's signals: an interrupted test run
    /// still cleans up.
    fn start_watchdog(&self) -> Result<Child, String> {
        use std::os::unix::process::CommandExt;
        let script = r#"trap '' INT TERM HUP
read -r _
if [ -n "$4" ]; then runuser -u "$4" -- "$1" stop -D "$2" -m immediate -s
else "$1" stop -D "$2" -m immediate -s
fi
rm -rf "$3""#;
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("redoubt-test-postgres-watchdog")
            .arg(self.bin.join("pg_ctl"))
            .arg(self.data())
            .arg(self.dir.path())
            .arg(if self.as_system_user { SYSTEM_USER } else { "" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the watchdog: {e}"))
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let watchdog = self.watchdog.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut watchdog) = watchdog {
            // Closing its standard input: it stops the server and removes the directory.
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// The directory of `initdb`, `pg_ctl` and `postgres`: `pg_config --bindir`, else the
/// newest `/usr/lib/postgresql/<version>/bin`.
fn binaries() -> Result<PathBuf, String> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    newest.map(|(_, bin)| bin).ok_or_else(|| {
        "no PostgreSQL server binaries: neither `pg_config --bindir` nor /usr/lib/postgresql/*/bin \
         has initdb and pg_ctl (install Debian's `postgresql` package)"
            .to_owned()
    })
}

/// A port nothing listens on now, on 127.0.0.1.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// Runs a command to its end; its output is the error when it fails.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
