#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! The Debian package (`packaging/debian/build-deb`) of this build's `redoubt`: built,
//! installed by dpkg into an empty root folder (its maintainer scripts run outside a chroot
//! with `DPKG_ROOT` set), its files, modes, system user and data folder checked, its
//! systemd unit accepted by `systemd-analyze verify` and rated by `systemd-analyze
//! security` at most [`EXPOSURE_MAX`], the packaged server started as its user on its data
//! folder, and a purge that keeps the organisation's data.
//!
//! Needs root (dpkg writes files owned by other users; CI runs as root) and dpkg; skips
//! with a message otherwise. systemd-analyze comes with Debian's systemd package
//! (`bash .ci/install-packaging`).

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::*;

/// The highest exposure `systemd-analyze security` may rate the unit. The unit scores 1.1
/// with systemd 252 (Debian 12); relaxing four of its settings (ProtectSystem, PrivateUsers,
/// PrivateDevices, SystemCallFilter) already makes 2.0, so the bound sits between.
const EXPOSURE_MAX: f64 = 1.5;

/// Longest a packaging tool (build-deb, dpkg, systemd-analyze) may take.
const TOOL_DEADLINE: Duration = Duration::from_secs(120);

/// Targets the unit depends on by default (and names), from the host's systemd package: an
/// installed Debian system has them, the empty root does not.
const SYSTEMD_TARGETS: [&str; 5] = [
    "sysinit.target",
    "basic.target",
    "shutdown.target",
    "network-online.target",
    "multi-user.target",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tool(program: &str, args: &[&str]) -> Output {
    output_within(
        Command::new(program).args(args),
        TOOL_DEADLINE,
        &format!("{program} {args:?}"),
    )
}

fn tool_ok(program: &str, args: &[&str]) -> String {
    let out = tool(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn installed(program: &str) -> bool {
    tool("sh", &["-c", &format!("command -v {program}")])
        .status
        .success()
}

fn skip_reason() -> Option<String> {
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        return Some("not running as root (dpkg installs files owned by other users)".into());
    }
    ["dpkg", "dpkg-deb", "dpkg-query"]
        .into_iter()
        .find(|program| !installed(program))
        .map(|program| format!("{program} is missing (not a Debian system)"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// dpkg on `root`: maintainer scripts run on the host with DPKG_ROOT=root; the empty root
/// has none of the package's dependencies.
fn dpkg(root: &Path, args: &[&str]) -> Output {
    let root_arg = format!("--root={}", root.display());
    let mut all = vec![root_arg.as_str(), "--force-script-chrootless", "--force-depends"];
    all.extend_from_slice(args);
    let out = tool("dpkg", &all);
    assert!(
        out.status.success(),
        "dpkg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An empty root folder with dpkg's database.
fn empty_root(root: &Path) {
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "etc",
        "lib/systemd/system",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(file), "").unwrap();
    }
}

/// The `redoubt` line of the root's /etc/passwd, split into fields.
fn passwd_entry(root: &Path) -> Vec<String> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let lines: Vec<&str> = passwd.lines().filter(|l| l.starts_with("redoubt:")).collect();
    assert_eq!(lines.len(), 1, "one user redoubt: {passwd}");
    lines[0].split(':').map(str::to_owned).collect()
}

#[test]
fn debian_package_installs_a_sandboxed_service() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED debian_package_installs_a_sandboxed_service: {reason}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The service user must reach the data folder inside.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let started = Instant::now();
    let deb = build_package(&tmp.path().join("out"));
    let built = started.elapsed();

    let root = tmp.path().join("root");
    empty_root(&root);
    dpkg(&root, &["--install", &deb]);
    check_files(&root);
    let uid = check_user_and_data_folder(&root);
    dpkg(&root, &["--install", &deb]);
    assert_eq!(
        check_user_and_data_folder(&root),
        uid,
        "the reinstall kept the user"
    );
    let installed = started.elapsed() - built;

    check_unit(&root);
    let analysed = started.elapsed() - built - installed;
    packaged_server_runs_as_its_user(&root, uid);
    purge_keeps_the_organisation(&root);
    eprintln!(
        "package: built in {built:?}, installed twice in {installed:?}, unit checked in \
         {analysed:?}, all in {:?}",
        started.elapsed()
    );
}

/// Runs build-deb on this build's binary; returns the package's path.
fn build_package(out: &Path) -> String {
    let build_deb = repo().join("packaging/debian/build-deb");
    let deb = tool_ok(
        "bash",
        &[
            build_deb.to_str().unwrap(),
            "--binary",
            BIN,
            "--out",
            out.to_str().unwrap(),
            "--compression",
            "gzip",
        ],
    );
    let deb = deb.trim().to_owned();
    let arch = tool_ok("dpkg", &["--print-architecture"]);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        deb.ends_with(&format!("/redoubt_{version}-1_{}.deb", arch.trim())),
        "{deb}"
    );
    let depends = tool_ok("dpkg-deb", &["--field", &deb, "Depends"]);
    assert!(depends.contains("libc6 (>= 2."), "{depends}");
    deb
}

/// dpkg knows the package and its conffile; the files are there with their modes, and the
/// binary runs.
fn check_files(root: &Path) {
    let root_arg = format!("--root={}", root.display());
    let status = tool_ok("dpkg-query", &[&root_arg, "-W", "-f=${Status}", "redoubt"]);
    assert_eq!(status, "install ok installed");
    let conffiles = tool_ok("dpkg-query", &[&root_arg, "-W", "-f=${Conffiles}", "redoubt"]);
    assert!(conffiles.contains("/etc/default/redoubt "), "{conffiles}");

    let binary = root.join("usr/bin/redoubt");
    assert_eq!(mode(&binary), 0o755);
    assert_eq!(std::fs::metadata(&binary).unwrap().uid(), 0);
    let reported = tool_ok(binary.to_str().unwrap(), &["--version"]);
    assert_eq!(reported.trim(), format!("redoubt {}", env!("CARGO_PKG_VERSION")));
    for file in [
        "lib/systemd/system/redoubt.service",
        "usr/lib/sysusers.d/redoubt.conf",
        "usr/lib/tmpfiles.d/redoubt.conf",
        "etc/default/redoubt",
        "usr/share/doc/redoubt/copyright",
        "usr/share/doc/redoubt/changelog.Debian.gz",
    ] {
        assert_eq!(mode(&root.join(file)), 0o644, "{file}");
    }
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/redoubt.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/bin/redoubt server --data /var/lib/redoubt "));
    assert!(unit.contains("\nUser=redoubt\n"));
}

/// The system user redoubt (home the data folder, no shell) and its group exist once, and
/// the data folder is the user's, 0700. Returns the user's id.
fn check_user_and_data_folder(root: &Path) -> u32 {
    let user = passwd_entry(root);
    assert_eq!(&user[5..], ["/var/lib/redoubt", "/usr/sbin/nologin"], "{user:?}");
    let (uid, gid): (u32, u32) = (user[2].parse().unwrap(), user[3].parse().unwrap());
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    let groups: Vec<&str> = group.lines().filter(|l| l.starts_with("redoubt:")).collect();
    assert_eq!(groups.len(), 1, "{group}");
    assert!(groups[0].starts_with(&format!("redoubt:x:{gid}:")), "{group}");
    let data = root.join("var/lib/redoubt");
    assert_eq!(mode(&data), 0o700);
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    uid
}

/// `systemd-analyze verify` accepts the installed unit without a warning, and `security`
/// rates its exposure at most [`EXPOSURE_MAX`].
fn check_unit(root: &Path) {
    assert!(
        installed("systemd-analyze"),
        "systemd-analyze is missing: install Debian's systemd package (bash .ci/install-packaging)"
    );
    for target in SYSTEMD_TARGETS {
        let host = Path::new("/lib/systemd/system").join(target);
        std::fs::copy(&host, root.join("lib/systemd/system").join(target))
            .unwrap_or_else(|e| panic!("{}: {e} (is systemd installed?)", host.display()));
    }
    let root_arg = format!("--root={}", root.display());
    let verify = tool("systemd-analyze", &["verify", &root_arg, "redoubt.service"]);
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "verify: {complaints}");
    assert!(complaints.trim().is_empty(), "verify warns: {complaints}");

    let security = tool_ok(
        "systemd-analyze",
        &["security", "--offline=true", &root_arg, "redoubt.service"],
    );
    let exposure: f64 = security
        .lines()
        .find_map(|l| l.strip_prefix("→ Overall exposure level for redoubt.service: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {security}"));
    let open: Vec<&str> = security.lines().filter(|l| l.starts_with('✗')).collect();
    eprintln!("exposure {exposure}; still open:\n{}", open.join("\n"));
    assert!(
        exposure <= EXPOSURE_MAX,
        "exposure {exposure} > {EXPOSURE_MAX}:\n{security}"
    );
}

/// The packaged binary, as the package's user, initialises the package's data folder (as
/// the service's first start does) and stops cleanly on SIGTERM.
fn packaged_server_runs_as_its_user(root: &Path, uid: u32) {
    let data = root.join("var/lib/redoubt");
    let id = uid.to_string();
    let server = ServerProcess::spawn(
        Command::new("setpriv")
            .args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
            .arg(root.join("usr/bin/redoubt"))
            .arg("server")
            .arg("--data")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--no-qr"])
            .env_remove("RUST_LOG"),
        &root.join("redoubt-server.log"),
    );
    let code_file = data.join("admin-activation.txt");
    let code = wait_for(&code_file);
    assert!(code.starts_with("RDB-"), "{code}");
    let meta = std::fs::metadata(&code_file).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o600));
    assert_eq!(std::fs::metadata(data.join("org-root.key")).unwrap().uid(), uid);
    server.terminate();
}

/// A purge removes the package's files and configuration but keeps a data folder that
/// holds an organisation, and says so.
fn purge_keeps_the_organisation(root: &Path) {
    let out = dpkg(root, &["--purge", "redoubt"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("kept /var/lib/redoubt"), "{said}");
    for gone in [
        "usr/bin/redoubt",
        "lib/systemd/system/redoubt.service",
        "etc/default/redoubt",
    ] {
        assert!(!root.join(gone).exists(), "{gone} survived the purge");
    }
    assert!(root.join("var/lib/redoubt/org-root.key").exists());
    let root_arg = format!("--root={}", root.display());
    let query = tool("dpkg-query", &[&root_arg, "-W", "-f=${Status}", "redoubt"]);
    let status = String::from_utf8_lossy(&query.stdout);
    assert!(
        !query.status.success() || status.ends_with(" not-installed"),
        "dpkg still knows redoubt after the purge: {status}"
    );
}

/// Regression: SIGTERM (systemd's KillSignal) during start-up, once the data folder was
/// initialised but before the server caught the signal, killed the process instead of
/// stopping it cleanly. The signal is now caught before the server binds; every stop here
/// comes the moment the first admin's code is written.
#[test]
fn sigterm_during_start_up_stops_cleanly() {
    for round in 0..5 {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let server = ServerProcess::start(&data);
        let code_file = data.join("admin-activation.txt");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !code_file.exists() {
            assert!(Instant::now() < deadline, "round {round}: no code file");
            std::thread::sleep(Duration::from_millis(1));
        }
        server.terminate();
    }
}
