#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]
//! Process and port plumbing shared by the harnesses that start real servers
//! (`peers/mod.rs`, `slapd/mod.rs`). Std only: the benchmark crate includes those harnesses
//! too. Include it from a harness with `#[path = "../support/processes.rs"] mod processes;`.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// `name` in the environment as whole seconds, else `default_secs` (start-up timeouts that a
/// slow, loaded machine raises).
pub fn env_secs(name: &str, default_secs: u64) -> Duration {
    let secs = std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_secs);
    Duration::from_secs(secs)
}

/// `tool` on `PATH`, else in /usr/sbin, /sbin or /usr/bin (daemons such as slapd, postfix
/// live in sbin, which a non-root `PATH` may lack).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// `n` distinct ports that were free on 127.0.0.1 a moment ago. They are drawn below the
/// kernel's ephemeral range, so that neither `bind(0)` nor an outgoing connection elsewhere
/// in the test run takes one before the server binds it (Postfix binds ~2 s later; slapd
/// binds again after a stop).
pub fn free_ports(n: usize) -> Vec<u16> {
    let low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut held: Vec<TcpListener> = Vec::new();
    if low > 12_000 {
        let span = u64::from(low - 10_000);
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default()
            ^ (u64::from(std::process::id()) << 32)
            | 1;
        for _ in 0..1000 {
            if held.len() == n {
                break;
            }
            // xorshift64: good enough to spread concurrent instances apart.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let port = 10_000 + u16::try_from(seed % span).unwrap_or_default();
            // A port already held here fails to bind again, so the ports are distinct.
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                held.push(l);
            }
        }
    }
    while held.len() < n {
        held.push(TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"));
    }
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Waits for `child` until `deadline`; kills it and returns `None` if it is still running.
pub fn wait_child(mut child: Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Sends `sig` (`TERM`, `KILL`, ...) to `pids` with `kill(1)`; errors are ignored (this
/// runs in `Drop`).
pub fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// What [`run_piped`] collected.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    /// `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    /// Lossy UTF-8.
    pub stderr: String,
    /// From just before the spawn to the exit.
    pub elapsed: Duration,
}

/// Runs `cmd` with `input` on stdin and its stdout and stderr collected, killed after
/// `deadline`. Threads feed and drain the pipes, so a large input or output cannot
/// deadlock. `Err` only when it cannot be spawned.
pub fn run_piped(cmd: &mut Command, input: &[u8], deadline: Duration) -> std::io::Result<Finished> {
    let began = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("child stdin");
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("child stdout");
    let mut stderr = child.stderr.take().expect("child stderr");
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    });
    let status = wait_child(child, began + deadline);
    let elapsed = began.elapsed();
    let _ = writer.join();
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed,
    })
}

/// Spawns `cmd` in `cwd` with stdin closed and stdout/stderr appended to `log` (a file, not
/// a pipe: daemons keep inheriting descriptors).
pub fn spawn_logged(mut cmd: Command, log: &Path, cwd: &Path) -> Child {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let file2 = file.try_clone().expect("clone a log file handle");
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The file at `path` as lossy UTF-8; empty when it cannot be read.
pub fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` lines of the file at `path` (a log), for a failure message.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = read_lossy(path);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Cleans up a harness's directory if the test process dies without running `Drop`: a
/// `sh` that waits for EOF on its stdin (our end of the pipe closes when this process is
/// gone), then runs `first` (a shell command, e.g. a daemon's own stop), kills every
/// process working inside the directory (SIGTERM, SIGKILL 2 s later) and removes it.
/// Dropping a `Watchdog` kills it first, so a normal drop leaves the cleanup to the harness.
#[derive(Debug)]
pub struct Watchdog {
    child: Child,
    /// Held open: its closing is what wakes the watchdog.
    pipe: Option<ChildStdin>,
}

impl Watchdog {
    /// `name` is the shell's `$0` (seen in `ps`); `dir` the directory to sweep and remove
    /// (`$1` to `first`, as `$d`).
    pub fn spawn(name: &str, dir: &Path, first: &str) -> Watchdog {
        // Own process group: a Ctrl-C does not reach it.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("{WATCHDOG_HEAD}{first}\n{WATCHDOG_SWEEP}"))
            .arg(name)
            .arg(dir)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} (sh): {e}"));
        let pipe = child.stdin.take();
        Watchdog { child, pipe }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Killed before its pipe closes (the fields drop after this), so it never sweeps.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WATCHDOG_HEAD: &str = r#"
trap '' INT HUP TERM PIPE
d="$1"
read -r _ignored
sweep() {
  for p in /proc/[0-9]*; do
    c=$(readlink "$p/cwd" 2>/dev/null) || continue
    case "$c" in "$d"|"$d"/*) kill -"$1" "${p#/proc/}" 2>/dev/null ;; esac
  done
}
"#;

const WATCHDOG_SWEEP: &str = r#"sweep TERM
sleep 2
sweep KILL
rm -rf "$d"
"#;
