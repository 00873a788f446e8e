#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]
//! A real OpenLDAP `slapd` (2.5, Debian's package) for directory sync tests and benchmarks,
//! started fresh in its own temporary directory on 127.0.0.1, driven through the real
//! `ldap-utils` clients (`ldapadd`, `ldapmodify`, `ldapsearch`, `ldapwhoami`, `ldapdelete`).
//!
//! Include it with `mod slapd;` from a test file, or from the benchmark crate with
//! `#[path = "../../cli/tests/slapd/mod.rs"] mod slapd;`. Needs what `.ci/install-slapd`
//! installs (`slapd`, `ldap-utils`) and the `openssl` command. Works as root or not: slapd
//! runs as the calling user and no system file is read or written besides Debian's schema
//! LDIFs (`/etc/ldap/schema`, override with `REDOUBT_SLAPD_SCHEMA_DIR`) and modules
//! (`/usr/lib/ldap`, override with `REDOUBT_SLAPD_MODULE_PATH`).
//!
//! Conventions:
//! - Suffix [`BASE_DN`] `dc=corp,dc=test` (one mdb database, no fsync: throwaway data), with
//!   `ou=people`, `ou=groups`, `ou=services` and `ou=policies` under it. Root DN
//!   [`ADMIN_DN`]/[`ADMIN_PASSWORD`]: every helper that writes binds as it, and like any
//!   root DN it is exempt from size limits and access control. cn=config is writable as
//!   [`CONFIG_ADMIN_DN`] (same password) through [`Slapd::modify_config_ldif`].
//! - Service account [`SERVICE_DN`]/[`SERVICE_PASSWORD`]: reads every entry and attribute
//!   (userPassword included), writes nothing (`olcAccess`). Any other bound user reads the
//!   tree but not passwords; anonymous may only bind.
//! - Size limit: `size.soft=500 size.hard=500 size.pr=unlimited size.prtotal=unlimited`
//!   ([`SIZE_LIMIT`]). A search without the paged-results control (RFC 2696) gets at most
//!   500 entries and then `sizeLimitExceeded` (4), also when it asks for more; with the
//!   control it gets everything, in pages of any size it asks for. The root DN is exempt.
//! - Listens on `ldap://127.0.0.1:P1` (StartTLS offered, not required) and
//!   `ldaps://127.0.0.1:P2`. TLS uses a throwaway CA ([`Slapd::ca_pem_path`]) and a
//!   server certificate (EC P-256) for `localhost`, `127.0.0.1` and this machine's host
//!   name (libldap checks `ldaps://localhost` against the host name, not `localhost`).
//! - Schemas: core, cosine, nis, inetorgperson; the ppolicy overlay (its schema is built
//!   into `ppolicy.la` in 2.5) with a default policy `cn=default,ou=policies` that has
//!   `pwdLockout: TRUE` and `pwdMaxFailure: 0`: failed binds never lock anyone, but
//!   `pwdAccountLockedTime: 000001010000Z` ([`LOCKED_FOREVER`]) locks an account until it is
//!   removed (without a policy with `pwdLockout`, slapd 2.5 ignores that attribute). The
//!   root DN adds and removes it with a plain modify: no relax control is needed
//!   ([`Slapd::lock`], [`Slapd::unlock`]); an `ldapadd` may carry it too.
//! - A test schema (`cn=redoubt-ad`) for Active-Directory-style entries, with AD's own OIDs:
//!   `sAMAccountName` and `userPrincipalName` (directoryString, caseIgnoreMatch, single),
//!   `userAccountControl` (INTEGER, integerMatch, single), `objectGUID` (OctetString, 16
//!   bytes); objectClass `user`, STRUCTURAL, SUP inetOrgPerson, MUST sAMAccountName (so AD
//!   users also match `(objectClass=inetOrgPerson)`, and have uid/mail/displayName), and
//!   objectClass `group`, STRUCTURAL, MUST cn, MAY member/description/sAMAccountName/
//!   objectGUID/mail (empty AD groups have no `member` at all). No `memberOf` anywhere.
//!   Plus `redoubtRawName` (OctetString, multi-valued, allowed on `user`, `group` and the
//!   auxiliary class `redoubtRaw`) to store bytes that are not UTF-8: directoryString
//!   attributes (`cn`, `displayName`, ...) refuse them with invalidAttributeSyntax (21).
//! - The AD preset's disabled rule `(userAccountControl:1.2.840.113556.1.4.803:=2)`
//!   ([`AD_DISABLED_FILTER`]) works server-side: slapd 2.5 implements the extensible-match
//!   rules integerBitAndMatch (1.2.840.113556.1.4.803) and integerBitOrMatch (...804) for
//!   INTEGER attributes, so the filter (and its negation) selects by bit 2 as AD does; a
//!   client may still evaluate bit 2 of the integer itself.
//! - Generators: [`openldap_users_ldif`] (inetOrgPerson `uid=<uid>,ou=people`),
//!   [`groups_ldif`] (groupOfNames `cn=<name>,ou=groups`; groupOfNames needs a `member`,
//!   so an empty group gets one zero-length value, the empty DN, which a sync must skip),
//!   [`ad_users_ldif`] (`user`, DN `cn=<display name>,ou=people`, sAMAccountName = uid,
//!   userAccountControl 512, or 514 plus `pwdAccountLockedTime` when locked, so a disabled
//!   account also cannot bind) and [`ad_groups_ldif`] (`group`). 10,000 users with 100
//!   groups go in with one `ldapadd` in ~1.6 s (2 cores); [`Slapd::load_offline`]
//!   (`slapadd -q` while stopped) takes ~0.35 s including the restart. DN values are
//!   escaped as slapd writes DNs back (`cn=Carol\2C Jr.`, see [`escape_dn_value`]), so
//!   generated DNs and the `dn:` and `member:` values slapd returns compare equal as strings.
//!
//! slapd stops on drop (also while unwinding from a panic); a watchdog process kills it and
//! removes the directory if the test process dies without unwinding.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

// Tests and the benchmark crate may include both harnesses, each with its own copy of
// this module: the shared code is the file, not one module of the including crate.
#[allow(clippy::duplicate_mod)]
#[path = "../support/processes.rs"]
mod processes;

pub use processes::accepts;
use processes::{Watchdog, free_ports, signal, spawn_logged, wait_child};

/// The suffix of the one database.
pub const BASE_DN: &str = "dc=corp,dc=test";
/// The mail domain of generated users (and AD userPrincipalNames).
pub const DOMAIN: &str = "corp.test";
pub const PEOPLE_DN: &str = "ou=people,dc=corp,dc=test";
pub const GROUPS_DN: &str = "ou=groups,dc=corp,dc=test";
pub const SERVICES_DN: &str = "ou=services,dc=corp,dc=test";
pub const POLICIES_DN: &str = "ou=policies,dc=corp,dc=test";
/// The ppolicy default policy (see the module docs).
pub const DEFAULT_POLICY_DN: &str = "cn=default,ou=policies,dc=corp,dc=test";
/// The database's root DN.
pub const ADMIN_DN: &str = "cn=admin,dc=corp,dc=test";
pub const ADMIN_PASSWORD: &str = "redoubt-ldap-admin-pw";
/// cn=config's root DN (password [`ADMIN_PASSWORD`]).
pub const CONFIG_ADMIN_DN: &str = "cn=admin,cn=config";
/// The read-only service account a directory sync binds as.
pub const SERVICE_DN: &str = "cn=redoubt,ou=services,dc=corp,dc=test";
pub const SERVICE_PASSWORD: &str = "redoubt-ldap-service-pw";
/// Entries a search without the paged-results control gets at most.
pub const SIZE_LIMIT: usize = 500;
/// `pwdAccountLockedTime` value that locks an account until the attribute is removed.
pub const LOCKED_FOREVER: &str = "000001010000Z";
/// AD userAccountControl of an enabled account (NORMAL_ACCOUNT).
pub const AD_ENABLED: u32 = 512;
/// AD userAccountControl of a disabled account (NORMAL_ACCOUNT | ACCOUNTDISABLE).
pub const AD_DISABLED: u32 = 514;
/// The ACCOUNTDISABLE bit of userAccountControl.
pub const AD_ACCOUNTDISABLE: u32 = 2;
/// The AD preset's disabled rule; slapd 2.5 evaluates it (integerBitAndMatch).
pub const AD_DISABLED_FILTER: &str = "(userAccountControl:1.2.840.113556.1.4.803:=2)";
/// OID arc of the test-only schema elements (a UUID-based OID, ITU-T X.667).
pub const TEST_OID_ARC: &str = "2.25.127199870009287923763296009684431729555";

/// How long slapd may take to answer after a start before it fails with its log.
/// `REDOUBT_SLAPD_STARTUP_SECS` overrides it (slow, loaded machines).
fn startup_timeout() -> Duration {
    processes::env_secs("REDOUBT_SLAPD_STARTUP_SECS", 20)
}

/// Longest one client tool run may take before it is killed.
const TOOL_DEADLINE: Duration = Duration::from_secs(180);

/// A directory user for the generators. `DirUser::new("alice", "Alice Liddell",
/// "alice@corp.test").in_groups(&["staff"])`, or a struct literal with `..Default::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirUser {
    /// The login name: `uid` (OpenLDAP) or `sAMAccountName` (AD).
    pub uid: String,
    /// `displayName` and `cn` (the uid when empty); `sn` is its last word.
    pub display_name: String,
    /// `mail`; none when empty.
    pub mail: String,
    /// Names of the groups (`cn`) the user is a member of.
    pub groups: Vec<String>,
    /// OpenLDAP: `pwdAccountLockedTime: 000001010000Z`. AD: userAccountControl 514 (and the
    /// same lock, so the account cannot bind either).
    pub locked: bool,
    /// `userPassword` (plain text; slapd compares it as it is); none when `None`.
    pub password: Option<String>,
}

impl DirUser {
    pub fn new(uid: &str, display_name: &str, mail: &str) -> DirUser {
        DirUser {
            uid: uid.to_owned(),
            display_name: display_name.to_owned(),
            mail: mail.to_owned(),
            ..DirUser::default()
        }
    }

    pub fn in_groups(mut self, groups: &[&str]) -> DirUser {
        self.groups = groups.iter().map(|g| (*g).to_owned()).collect();
        self
    }

    pub fn with_password(mut self, password: &str) -> DirUser {
        self.password = Some(password.to_owned());
        self
    }

    pub fn locked(mut self) -> DirUser {
        self.locked = true;
        self
    }

    fn cn(&self) -> &str {
        if self.display_name.is_empty() {
            &self.uid
        } else {
            &self.display_name
        }
    }

    fn sn(&self) -> &str {
        self.cn().split_whitespace().last().unwrap_or(&self.uid)
    }
}

/// `count` users `user00000`.., display name `User 00000`, mail `user00000@corp.test`, no
/// password; user `i` is in group `group{i % groups:03}` (no groups when `groups` is 0).
pub fn synthetic_users(count: usize, groups: usize) -> Vec<DirUser> {
    (0..count)
        .map(|i| {
            let mut u = DirUser::new(
                &format!("user{i:05}"),
                &format!("User {i:05}"),
                &format!("user{i:05}@{DOMAIN}"),
            );
            if groups > 0 {
                u.groups = vec![format!("group{:03}", i % groups)];
            }
            u
        })
        .collect()
}

/// One entry of `ldapsearch` output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LdifEntry {
    pub dn: String,
    /// `(attribute as the server names it, raw value)`, in the server's order.
    pub attrs: Vec<(String, Vec<u8>)>,
}

impl LdifEntry {
    /// The values of `attr` (case-insensitive name), lossy UTF-8.
    pub fn values(&self, attr: &str) -> Vec<String> {
        self.raw_values(attr)
            .into_iter()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .collect()
    }

    /// The first value of `attr`, lossy UTF-8.
    pub fn get(&self, attr: &str) -> Option<String> {
        self.values(attr).into_iter().next()
    }

    pub fn raw_values(&self, attr: &str) -> Vec<Vec<u8>> {
        self.attrs
            .iter()
            .filter(|(a, _)| a.eq_ignore_ascii_case(attr))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// The entry among `entries` whose `attr` has `value` (exactly); panics with the entries'
/// DNs when there is none.
pub fn entry_with<'a>(entries: &'a [LdifEntry], attr: &str, value: &str) -> &'a LdifEntry {
    entries
        .iter()
        .find(|e| e.values(attr).iter().any(|v| v == value))
        .unwrap_or_else(|| {
            let dns: Vec<&str> = entries.iter().map(|e| e.dn.as_str()).collect();
            panic!("no entry with {attr}={value} among {dns:?}")
        })
}

/// What one `ldapsearch` run returned.
#[derive(Debug, Clone, Default)]
pub struct SearchOutcome {
    pub entries: Vec<LdifEntry>,
    /// Search continuation references (`ref` URLs of referral objects).
    pub references: Vec<String>,
    /// The exit code: the LDAP result code (0 success, 4 sizeLimitExceeded, 32 noSuchObject,
    /// 49 invalidCredentials, ...); `None` when killed.
    pub code: Option<i32>,
    pub stderr: String,
    /// Wall time of the `ldapsearch` process.
    pub elapsed: Duration,
}

/// What one client tool run returned.
#[derive(Debug, Clone, Default)]
pub struct ToolOutput {
    /// The exit code (the LDAP result code for the ldap-utils); `None` when killed.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl ToolOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr and the stdout's tail, for a failure message.
    pub fn message(&self) -> String {
        let out = self.stdout_text();
        let tail: Vec<&str> = out.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("exit {:?}: {}{}", self.code, self.stderr.trim_end(), {
            if tail.is_empty() {
                String::new()
            } else {
                format!("\n(stdout tail)\n{}", tail.join("\n"))
            }
        })
    }
}

/// A running slapd on 127.0.0.1; stopped on drop.
#[derive(Debug)]
pub struct Slapd {
    /// Holds config, database, certificates and log; removed on drop.
    pub dir: tempfile::TempDir,
    pub ldap_port: u16,
    pub ldaps_port: u16,
    /// Canonical path of `dir`: slapd's (and the tools') working directory.
    root: PathBuf,
    child: Option<Child>,
    watchdog: Option<Watchdog>,
}

impl Slapd {
    /// Makes the certificates and cn=config (`slapadd -n0`), loads the base entries
    /// (`slapadd -n1`), starts slapd and waits until it answers; panics with its log if
    /// that takes longer than ~20 s.
    pub fn start() -> Slapd {
        for tool in [
            "slapd",
            "slapadd",
            "ldapadd",
            "ldapmodify",
            "ldapsearch",
            "ldapwhoami",
            "ldapdelete",
        ] {
            assert!(
                tool_path(tool).is_file(),
                "`{tool}` is not installed: run .ci/install-slapd (Debian's slapd and ldap-utils)"
            );
        }
        assert!(
            tool_path("openssl").is_file(),
            "the `openssl` command is not installed"
        );
        let schema_dir = schema_dir();
        assert!(
            schema_dir.join("core.ldif").is_file(),
            "no {}/core.ldif: run .ci/install-slapd (or set REDOUBT_SLAPD_SCHEMA_DIR)",
            schema_dir.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("redoubt-slapd-")
            .tempdir()
            .expect("create slapd's temp dir");
        let root = fs::canonicalize(dir.path()).expect("canonicalize slapd's temp dir");
        let ports = free_ports(2);
        let mut slapd = Slapd {
            dir,
            ldap_port: ports[0],
            ldaps_port: ports[1],
            root,
            child: None,
            watchdog: None,
        };
        // Kills slapd (or a hung client tool) and removes the directory if this process
        // dies without running `Drop`.
        slapd.watchdog = Some(Watchdog::spawn("redoubt-slapd-watchdog", &slapd.root, ""));
        for sub in ["slapd.d", "db", "tls"] {
            fs::create_dir_all(slapd.root.join(sub)).expect("create a slapd dir");
        }
        slapd.make_certificates();
        let config = config_ldif(&slapd.root, &schema_dir, &module_path());
        write_file(&slapd.root.join("config.ldif"), &config);
        slapd.slapadd(&["-n0", "-l", "config.ldif"]);
        write_file(&slapd.root.join("base.ldif"), &base_ldif());
        slapd.slapadd(&["-n1", "-l", "base.ldif"]);
        slapd.launch();
        slapd
    }

    pub fn base_dn(&self) -> &'static str {
        BASE_DN
    }

    pub fn people_dn(&self) -> &'static str {
        PEOPLE_DN
    }

    pub fn groups_dn(&self) -> &'static str {
        GROUPS_DN
    }

    pub fn admin_dn(&self) -> &'static str {
        ADMIN_DN
    }

    pub fn admin_password(&self) -> &'static str {
        ADMIN_PASSWORD
    }

    pub fn service_dn(&self) -> &'static str {
        SERVICE_DN
    }

    pub fn service_password(&self) -> &'static str {
        SERVICE_PASSWORD
    }

    /// `ldap://127.0.0.1:P1` (StartTLS available).
    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    /// `ldaps://127.0.0.1:P2`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// The throwaway CA that signed the server certificate (PEM).
    pub fn ca_pem_path(&self) -> PathBuf {
        self.root.join("tls/ca.pem")
    }

    /// The temp dir (canonical path).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// slapd's log (stderr at debug level `REDOUBT_SLAPD_DEBUG`, default `none`: errors
    /// only; e.g. `stats` logs every operation).
    pub fn diagnostics(&self) -> String {
        let tail = processes::log_tail(&self.root.join("slapd.log"), 60);
        format!("----- slapd.log -----\n{tail}\n")
    }

    // ----- writing, as the root DN -----

    /// `ldapadd` as the root DN; panics with slapd's message on failure.
    pub fn add_ldif(&self, ldif: &str) {
        let out = self.admin_tool("ldapadd", &[], ldif);
        assert!(out.success(), "ldapadd failed: {}", out.message());
    }

    /// `ldapadd` as the root DN; the result code and message on failure.
    pub fn try_add_ldif(&self, ldif: &str) -> Result<(), String> {
        let out = self.admin_tool("ldapadd", &[], ldif);
        if out.success() { Ok(()) } else { Err(out.message()) }
    }

    /// `ldapadd -M` (ManageDsaIT) as the root DN, for `referral` objects with `ref:`.
    pub fn add_ldif_manage_dsa_it(&self, ldif: &str) {
        let out = self.admin_tool("ldapadd", &["-M"], ldif);
        assert!(out.success(), "ldapadd -M failed: {}", out.message());
    }

    /// `ldapmodify` (records with `changetype:`) as the root DN; panics on failure.
    pub fn modify_ldif(&self, ldif: &str) {
        let out = self.admin_tool("ldapmodify", &[], ldif);
        assert!(out.success(), "ldapmodify failed: {}", out.message());
    }

    /// `ldapmodify -e relax` as the root DN (the relax control, for NO-USER-MODIFICATION
    /// attributes; not needed for pwdAccountLockedTime).
    pub fn modify_ldif_relax(&self, ldif: &str) {
        let out = self.admin_tool("ldapmodify", &["-e", "relax"], ldif);
        assert!(out.success(), "ldapmodify -e relax failed: {}", out.message());
    }

    /// `ldapmodify` as `bind_dn`; the result code and message on failure.
    pub fn try_modify_ldif_as(&self, bind_dn: &str, password: &str, ldif: &str) -> Result<(), String> {
        let url = self.ldap_url();
        let out = self.run_tool(
            "ldapmodify",
            &["-x", "-H", &url, "-D", bind_dn, "-w", password],
            ldif.as_bytes(),
            &[],
        );
        if out.success() { Ok(()) } else { Err(out.message()) }
    }

    /// `ldapmodify` on cn=config as [`CONFIG_ADMIN_DN`]; panics on failure.
    pub fn modify_config_ldif(&self, ldif: &str) {
        let url = self.ldap_url();
        let out = self.run_tool(
            "ldapmodify",
            &["-x", "-H", &url, "-D", CONFIG_ADMIN_DN, "-w", ADMIN_PASSWORD],
            ldif.as_bytes(),
            &[],
        );
        assert!(out.success(), "ldapmodify on cn=config failed: {}", out.message());
    }

    /// `ldapdelete` of one leaf entry; panics on failure.
    pub fn delete(&self, dn: &str) {
        let out = self.admin_tool("ldapdelete", &[dn], "");
        assert!(out.success(), "ldapdelete {dn} failed: {}", out.message());
    }

    /// `ldapdelete -r`: the entry and everything under it.
    pub fn delete_subtree(&self, dn: &str) {
        let out = self.admin_tool("ldapdelete", &["-r", dn], "");
        assert!(out.success(), "ldapdelete -r {dn} failed: {}", out.message());
    }

    /// Locks the account: adds `pwdAccountLockedTime: 000001010000Z` (binds then fail with
    /// invalidCredentials, 49).
    pub fn lock(&self, dn: &str) {
        self.modify_ldif(&format!(
            "dn: {dn}\nchangetype: modify\nreplace: pwdAccountLockedTime\npwdAccountLockedTime: {LOCKED_FOREVER}\n"
        ));
    }

    /// Unlocks the account: removes `pwdAccountLockedTime`.
    pub fn unlock(&self, dn: &str) {
        self.modify_ldif(&format!(
            "dn: {dn}\nchangetype: modify\ndelete: pwdAccountLockedTime\n"
        ));
    }

    /// Loads `ldif` (entries only) with `slapadd -q` while slapd is stopped, then starts it
    /// again: several times faster than `add_ldif` for bulk data, but no overlay runs.
    pub fn load_offline(&mut self, ldif: &str) {
        self.stop();
        write_file(&self.root.join("bulk.ldif"), ldif);
        self.slapadd(&["-q", "-n1", "-l", "bulk.ldif"]);
        let _ = fs::remove_file(self.root.join("bulk.ldif"));
        self.start_again();
    }

    // ----- reading -----

    /// Runs `ldapsearch -LLL -o ldif-wrap=no <args>` (no bind, URL or base added) and parses
    /// its output; `env` is applied last (e.g. `LDAPTLS_CACERT`).
    pub fn ldapsearch(&self, args: &[&str], env: &[(&str, &str)]) -> SearchOutcome {
        let mut all = vec!["-LLL", "-o", "ldif-wrap=no"];
        all.extend_from_slice(args);
        let out = self.run_tool("ldapsearch", &all, b"", env);
        let (entries, references) = parse_ldif(&out.stdout);
        SearchOutcome {
            entries,
            references,
            code: out.code,
            stderr: out.stderr,
            elapsed: out.elapsed,
        }
    }

    /// A subtree search on `ldap_url` as `bind_dn` (anonymous when `None`), with the
    /// paged-results control (pages of 500) when `paged`.
    pub fn search_as(
        &self,
        bind: Option<(&str, &str)>,
        base: &str,
        filter: &str,
        attrs: &[&str],
        paged: bool,
    ) -> SearchOutcome {
        let options: &[&str] = if paged { &PAGED } else { &[] };
        self.search_with(bind, options, base, filter, attrs)
    }

    /// A subtree search on `ldap_url` as `bind_dn` (anonymous when `None`) with more
    /// `ldapsearch` options, e.g. `-z 1000`, `-E pr=1000/noprompt`, `-ZZ`.
    pub fn search_with(
        &self,
        bind: Option<(&str, &str)>,
        options: &[&str],
        base: &str,
        filter: &str,
        attrs: &[&str],
    ) -> SearchOutcome {
        let url = self.ldap_url();
        self.ldapsearch(&search_args(&url, bind, options, base, filter, attrs), &[])
    }

    /// A paged subtree search as the service account; panics unless it succeeds.
    pub fn search(&self, base: &str, filter: &str, attrs: &[&str]) -> Vec<LdifEntry> {
        self.search_ok((SERVICE_DN, SERVICE_PASSWORD), base, filter, attrs, true)
    }

    /// A subtree search as the root DN (no limits, operational attributes on request);
    /// panics unless it succeeds.
    pub fn search_admin(&self, base: &str, filter: &str, attrs: &[&str]) -> Vec<LdifEntry> {
        self.search_ok((ADMIN_DN, ADMIN_PASSWORD), base, filter, attrs, false)
    }

    fn search_ok(
        &self,
        bind: (&str, &str),
        base: &str,
        filter: &str,
        attrs: &[&str],
        paged: bool,
    ) -> Vec<LdifEntry> {
        let out = self.search_as(Some(bind), base, filter, attrs, paged);
        assert_eq!(
            out.code,
            Some(0),
            "ldapsearch {base} {filter} failed: {}",
            out.stderr
        );
        out.entries
    }

    /// The reference for benchmarks: the real `ldapsearch` as the service account with the
    /// paged-results control (pages of 500), all user attributes; the number of entries and
    /// the wall time of the process. Panics unless it succeeds.
    pub fn ldapsearch_count(&self, base: &str, filter: &str) -> (usize, Duration) {
        let url = self.ldap_url();
        let mut args = vec!["-LLL", "-o", "ldif-wrap=no"];
        args.extend(search_args(
            &url,
            Some((SERVICE_DN, SERVICE_PASSWORD)),
            &PAGED,
            base,
            filter,
            &[],
        ));
        let out = self.run_tool("ldapsearch", &args, b"", &[]);
        assert!(
            out.success(),
            "ldapsearch {base} {filter} failed: {}",
            out.message()
        );
        let count = out
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| l.starts_with(b"dn:"))
            .count();
        (count, out.elapsed)
    }

    /// `ldapwhoami -x -H url -D dn -w password <extra>` (e.g. `-ZZ` for StartTLS); the
    /// authzid it prints, or the code and message.
    pub fn whoami(
        &self,
        url: &str,
        dn: &str,
        password: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<String, String> {
        let mut args = vec!["-x", "-H", url, "-D", dn, "-w", password];
        args.extend_from_slice(extra);
        let out = self.run_tool("ldapwhoami", &args, b"", env);
        if out.success() {
            Ok(out.stdout_text().trim().to_owned())
        } else {
            Err(out.message())
        }
    }

    /// Runs an ldap-utils `tool` with `input` on stdin, killed after 3 minutes. The
    /// environment is clean: no `LDAP*` variable of the caller, no ldap.conf or ldaprc
    /// (`LDAPCONF=/dev/null`), `LDAPTLS_CACERT` = this CA and `LDAPTLS_REQCERT=demand`;
    /// `env` is applied last.
    pub fn run_tool(&self, tool: &str, args: &[&str], input: &[u8], env: &[(&str, &str)]) -> ToolOutput {
        let mut cmd = Command::new(tool_path(tool));
        cmd.args(args).current_dir(&self.root);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("LDAP") {
                cmd.env_remove(k);
            }
        }
        cmd.env("LDAPCONF", "/dev/null")
            .env("LDAPRC", "redoubt-no-ldaprc")
            .env("LDAPTLS_CACERT", self.ca_pem_path())
            .env("LDAPTLS_REQCERT", "demand");
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd, input, TOOL_DEADLINE)
    }

    fn admin_tool(&self, tool: &str, extra: &[&str], input: &str) -> ToolOutput {
        let url = self.ldap_url();
        let mut args = vec!["-x", "-H", &url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD];
        args.extend_from_slice(extra);
        self.run_tool(tool, &args, input.as_bytes(), &[])
    }

    // ----- start and stop -----

    /// Stops slapd (SIGTERM, then SIGKILL after 10 s) and waits until both ports refuse
    /// connections. Does nothing when it is not running.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            signal("TERM", &[child.id()]);
            if wait_child(child, Instant::now() + Duration::from_secs(10)).is_none() {
                eprintln!("slapd did not stop within 10 s of SIGTERM: killed");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while (accepts(self.ldap_port) || accepts(self.ldaps_port)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts slapd again after [`Slapd::stop`]: same ports, config and data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "slapd is still running: stop() it first");
        self.launch();
    }

    fn make_certificates(&self) {
        let tls = self.root.join("tls");
        let mut sans = vec!["DNS:localhost".to_owned(), "IP:127.0.0.1".to_owned()];
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host = host.trim();
        if !host.is_empty()
            && host != "localhost"
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            sans.push(format!("DNS:{host}"));
        }
        write_file(
            &tls.join("server.ext"),
            &format!(
                "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
                sans.join(",")
            ),
        );
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let steps: [Vec<&str>; 3] = [
            [
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "30",
                    "-subj",
                    "/CN=Redoubt test LDAP CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
            [
                &["req", "-new"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
            vec![
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "2",
                "-days",
                "30",
                "-out",
                "server.pem",
                "-extfile",
                "server.ext",
            ],
        ];
        for args in steps {
            let mut cmd = Command::new(tool_path("openssl"));
            cmd.args(&args).current_dir(&tls);
            let out = run(cmd, b"", Duration::from_secs(60));
            assert!(
                out.success(),
                "openssl {} failed: {}",
                args.join(" "),
                out.message()
            );
        }
    }

    fn slapadd(&self, args: &[&str]) {
        let mut cmd = Command::new(tool_path("slapadd"));
        cmd.arg("-F")
            .arg(self.root.join("slapd.d"))
            .args(args)
            .current_dir(&self.root);
        let out = run(cmd, b"", TOOL_DEADLINE);
        assert!(
            out.success(),
            "slapadd {} failed: {}",
            args.join(" "),
            out.message()
        );
    }

    fn launch(&mut self) {
        let deadline = Instant::now() + startup_timeout();
        let debug = std::env::var("REDOUBT_SLAPD_DEBUG").unwrap_or_else(|_| "none".to_owned());
        // `-d` keeps slapd in the foreground (the child is slapd itself) and sends its
        // messages to stderr; `none` still shows errors.
        let mut slapd = Command::new(tool_path("slapd"));
        slapd
            .arg("-F")
            .arg(self.root.join("slapd.d"))
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
                self.ldap_port, self.ldaps_port
            ))
            .args(["-d", &debug]);
        self.child = Some(spawn_logged(slapd, &self.root.join("slapd.log"), &self.root));
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                panic!("slapd exited with {status}\n{}", self.diagnostics());
            }
            if accepts(self.ldap_port) && accepts(self.ldaps_port) {
                let url = self.ldap_url();
                if self.whoami(&url, ADMIN_DN, ADMIN_PASSWORD, &[], &[]).is_ok() {
                    return;
                }
            }
            if Instant::now() >= deadline {
                self.stop();
                panic!(
                    "slapd does not answer on 127.0.0.1:{}/{} after {:?}\n{}",
                    self.ldap_port,
                    self.ldaps_port,
                    startup_timeout(),
                    self.diagnostics()
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }
}

/// The paged-results control with pages of 500 (RFC 2696), as a sync asks for it.
const PAGED: [&str; 2] = ["-E", "pr=500/noprompt"];

/// `ldapsearch` arguments for a simple bind on `url` (anonymous when `bind` is `None`) and
/// a subtree search.
fn search_args<'a>(
    url: &'a str,
    bind: Option<(&'a str, &'a str)>,
    options: &[&'a str],
    base: &'a str,
    filter: &'a str,
    attrs: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["-x", "-H", url, "-b", base];
    if let Some((dn, pw)) = bind {
        args.extend_from_slice(&["-D", dn, "-w", pw]);
    }
    args.extend_from_slice(options);
    args.push(filter);
    args.extend_from_slice(attrs);
    args
}

impl Drop for Slapd {
    fn drop(&mut self) {
        // Nothing here may panic (this runs in `Drop`, possibly while unwinding).
        self.watchdog = None;
        self.stop();
    }
}

// ----- LDIF generators -----

/// `uid=<uid>,ou=people,<base>`.
pub fn openldap_user_dn(base: &str, uid: &str) -> String {
    format!("uid={},ou=people,{base}", escape_dn_value(uid))
}

/// `cn=<name>,ou=groups,<base>` (for both group generators).
pub fn group_dn(base: &str, name: &str) -> String {
    format!("cn={},ou=groups,{base}", escape_dn_value(name))
}

/// `cn=<display name, or uid>,ou=people,<base>`: AD names users by their full name, not
/// their login. Display names must be unique.
pub fn ad_user_dn(base: &str, user: &DirUser) -> String {
    format!("cn={},ou=people,{base}", escape_dn_value(user.cn()))
}

/// inetOrgPerson entries under `ou=people,<base>`: `uid`, `cn` (display name), `sn` (its
/// last word), `displayName`, `mail`, `userPassword`, and `pwdAccountLockedTime:
/// 000001010000Z` when locked.
pub fn openldap_users_ldif(base: &str, users: &[DirUser]) -> String {
    user_entries(users, 256, |out, u| {
        ldif_line(out, "dn", openldap_user_dn(base, &u.uid).as_bytes());
        for oc in ["top", "person", "organizationalPerson", "inetOrgPerson"] {
            ldif_line(out, "objectClass", oc.as_bytes());
        }
        ldif_line(out, "uid", u.uid.as_bytes());
    })
}

/// groupOfNames entries under `ou=groups,<base>`: one per group name in `users` (sorted),
/// then one per name in `empty_groups` not already there. `member` is each member's
/// [`openldap_user_dn`]; a group without members gets one empty `member` value (the empty
/// DN), since groupOfNames requires the attribute.
pub fn groups_ldif(base: &str, users: &[DirUser], empty_groups: &[&str]) -> String {
    group_entries(base, users, empty_groups, "groupOfNames", |out, _, members| {
        if members.is_empty() {
            out.push_str("member:\n");
        }
        for m in members {
            ldif_line(out, "member", openldap_user_dn(base, &m.uid).as_bytes());
        }
    })
}

/// AD-style `user` entries under `ou=people,<base>` ([`ad_user_dn`]): `sAMAccountName` =
/// uid, `userPrincipalName` = uid@<domain of base>, `userAccountControl` 512 (514 when
/// locked, with `pwdAccountLockedTime` too so the account cannot bind), `objectGUID`
/// ([`ad_object_guid`] of the uid), `cn`, `sn`, `displayName`, `mail`, `userPassword`.
pub fn ad_users_ldif(base: &str, users: &[DirUser]) -> String {
    let domain = domain_of(base);
    user_entries(users, 320, |out, u| {
        ldif_line(out, "dn", ad_user_dn(base, u).as_bytes());
        for oc in ["top", "person", "organizationalPerson", "inetOrgPerson", "user"] {
            ldif_line(out, "objectClass", oc.as_bytes());
        }
        ldif_line(out, "sAMAccountName", u.uid.as_bytes());
        ldif_line(out, "userPrincipalName", format!("{}@{domain}", u.uid).as_bytes());
        let uac = if u.locked { AD_DISABLED } else { AD_ENABLED };
        ldif_line(out, "userAccountControl", uac.to_string().as_bytes());
        ldif_line(out, "objectGUID", &ad_object_guid(&u.uid));
    })
}

/// AD-style `group` entries under `ou=groups,<base>`, grouped as in [`groups_ldif`]:
/// `cn`, `sAMAccountName` (the name), `objectGUID` ([`ad_object_guid`] of `group:<name>`),
/// `member` = each member's [`ad_user_dn`]; an empty group has no `member`, as in AD.
pub fn ad_groups_ldif(base: &str, users: &[DirUser], empty_groups: &[&str]) -> String {
    group_entries(base, users, empty_groups, "group", |out, name, members| {
        ldif_line(out, "sAMAccountName", name.as_bytes());
        ldif_line(out, "objectGUID", &ad_object_guid(&format!("group:{name}")));
        for m in members {
            ldif_line(out, "member", ad_user_dn(base, m).as_bytes());
        }
    })
}

/// A stable 16-byte `objectGUID` derived from `name` (two FNV-1a hashes).
pub fn ad_object_guid(name: &str) -> [u8; 16] {
    let fnv = |seed: u8| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in std::iter::once(seed).chain(name.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let mut guid = [0u8; 16];
    guid[..8].copy_from_slice(&fnv(b'a').to_be_bytes());
    guid[8..].copy_from_slice(&fnv(b'b').to_be_bytes());
    guid
}

/// Appends `attr: value`, or `attr:: <base64>` when the value is not a safe LDIF string
/// (not ASCII, a leading space, colon or `<`, a trailing space, a control character).
pub fn ldif_line(out: &mut String, attr: &str, value: &[u8]) {
    let safe = value.iter().all(|&b| (0x20..0x7f).contains(&b))
        && !matches!(value.first(), Some(b' ' | b':' | b'<'))
        && value.last() != Some(&b' ');
    if safe {
        let _ = writeln!(out, "{attr}: {}", String::from_utf8_lossy(value));
    } else {
        let _ = writeln!(out, "{attr}:: {}", base64_encode(value));
    }
}

/// Escapes an attribute value for use in a DN (RFC 4514) the way slapd writes DNs back
/// (`\2C` for a comma, `\20` for a leading or trailing space, ...), so that a DN built here
/// equals, as a string, the one slapd returns in `dn:` and `member:` values.
pub fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' | '\0' => {
                let _ = write!(out, "\\{:02X}", u32::from(c));
            }
            '#' if i == 0 => out.push_str("\\23"),
            ' ' if i == 0 || i == last => out.push_str("\\20"),
            _ => out.push(c),
        }
    }
    out
}

pub fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional, whitespace ignored); `None` when invalid.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Parses `ldapsearch -LLL -o ldif-wrap=no` output: entries, and the continuation
/// references it prints as `# ref<url>` comments.
pub fn parse_ldif(text: &[u8]) -> (Vec<LdifEntry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut references = Vec::new();
    let mut current: Option<LdifEntry> = None;
    for line in text.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            entries.extend(current.take());
            continue;
        }
        if let Some(r) = line.strip_prefix(b"# ref") {
            references.push(String::from_utf8_lossy(r).into_owned());
            continue;
        }
        if line.starts_with(b"#") {
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]).into_owned();
        let rest = &line[colon + 1..];
        let value = if let Some(b64) = rest.strip_prefix(b":") {
            base64_decode(&String::from_utf8_lossy(b64)).unwrap_or_default()
        } else {
            rest.strip_prefix(b" ").unwrap_or(rest).to_vec()
        };
        if name.eq_ignore_ascii_case("dn") {
            entries.extend(current.take());
            current = Some(LdifEntry {
                dn: String::from_utf8_lossy(&value).into_owned(),
                attrs: Vec::new(),
            });
        } else if let Some(e) = current.as_mut() {
            e.attrs.push((name, value));
        }
    }
    entries.extend(current);
    (entries, references)
}

/// One entry per user: `head` writes the DN, object classes and the flavour's own
/// attributes; then come the [`person_lines`] and, when locked, `pwdAccountLockedTime`.
/// `entry_bytes` sizes the buffer.
fn user_entries(
    users: &[DirUser],
    entry_bytes: usize,
    mut head: impl FnMut(&mut String, &DirUser),
) -> String {
    let mut out = String::with_capacity(users.len() * entry_bytes);
    for u in users {
        head(&mut out, u);
        person_lines(&mut out, u);
        if u.locked {
            ldif_line(&mut out, "pwdAccountLockedTime", LOCKED_FOREVER.as_bytes());
        }
        out.push('\n');
    }
    out
}

/// One entry per group of [`group_members`] under `ou=groups,<base>`: DN, objectClass
/// `top` and `class`, `cn`; `rest` writes the flavour's attributes and members.
fn group_entries<'a>(
    base: &str,
    users: &'a [DirUser],
    empty_groups: &[&str],
    class: &str,
    mut rest: impl FnMut(&mut String, &str, &[&'a DirUser]),
) -> String {
    let mut out = String::new();
    for (name, members) in group_members(users, empty_groups) {
        ldif_line(&mut out, "dn", group_dn(base, &name).as_bytes());
        ldif_line(&mut out, "objectClass", b"top");
        ldif_line(&mut out, "objectClass", class.as_bytes());
        ldif_line(&mut out, "cn", name.as_bytes());
        rest(&mut out, &name, &members);
        out.push('\n');
    }
    out
}

fn person_lines(out: &mut String, u: &DirUser) {
    ldif_line(out, "cn", u.cn().as_bytes());
    ldif_line(out, "sn", u.sn().as_bytes());
    if !u.display_name.is_empty() {
        ldif_line(out, "displayName", u.display_name.as_bytes());
    }
    if !u.mail.is_empty() {
        ldif_line(out, "mail", u.mail.as_bytes());
    }
    if let Some(pw) = &u.password {
        ldif_line(out, "userPassword", pw.as_bytes());
    }
}

fn group_members<'a>(users: &'a [DirUser], empty_groups: &[&str]) -> BTreeMap<String, Vec<&'a DirUser>> {
    let mut groups: BTreeMap<String, Vec<&DirUser>> = BTreeMap::new();
    for u in users {
        for g in &u.groups {
            let members = groups.entry(g.clone()).or_default();
            if !members.iter().any(|m| m.uid == u.uid) {
                members.push(u);
            }
        }
    }
    for g in empty_groups {
        groups.entry((*g).to_owned()).or_default();
    }
    groups
}

/// `dc=corp,dc=test` -> `corp.test`.
fn domain_of(base: &str) -> String {
    let parts: Vec<&str> = base
        .split(',')
        .filter_map(|rdn| {
            let (a, v) = rdn.trim().split_once('=')?;
            a.eq_ignore_ascii_case("dc").then_some(v)
        })
        .collect();
    if parts.is_empty() {
        DOMAIN.to_owned()
    } else {
        parts.join(".")
    }
}

// ----- config -----

fn schema_dir() -> PathBuf {
    std::env::var_os("REDOUBT_SLAPD_SCHEMA_DIR")
        .map_or_else(|| PathBuf::from("/etc/ldap/schema"), PathBuf::from)
}

/// Where `back_mdb.la` and `ppolicy.la` are: `REDOUBT_SLAPD_MODULE_PATH`, else the first of
/// the usual places that has them (Debian: /usr/lib/ldap).
fn module_path() -> PathBuf {
    if let Some(p) = std::env::var_os("REDOUBT_SLAPD_MODULE_PATH") {
        return PathBuf::from(p);
    }
    let candidates = [
        "/usr/lib/ldap",
        "/usr/lib/x86_64-linux-gnu/ldap",
        "/usr/lib/aarch64-linux-gnu/ldap",
        "/usr/lib64/openldap",
        "/usr/libexec/openldap",
        "/usr/local/libexec/openldap",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("ppolicy.la").is_file())
        .unwrap_or_else(|| {
            panic!(
                "no ppolicy.la in {candidates:?}: run .ci/install-slapd (or set REDOUBT_SLAPD_MODULE_PATH)"
            )
        })
}

fn config_ldif(root: &Path, schema_dir: &Path, module_path: &Path) -> String {
    let schema = schema_dir.display().to_string();
    let includes: String = ["core", "cosine", "nis", "inetorgperson"]
        .iter()
        .map(|s| format!("include: file://{schema}/{s}.ldif\n\n"))
        .collect();
    CONFIG_LDIF
        .replace("@DIR@", &root.display().to_string())
        .replace("@MODULES@", &module_path.display().to_string())
        .replace("@INCLUDES@\n", &includes)
        .replace("@ARC@", TEST_OID_ARC)
        .replace("@BASE@", BASE_DN)
        .replace("@ADMIN@", ADMIN_DN)
        .replace("@CONFIG_ADMIN@", CONFIG_ADMIN_DN)
        .replace("@PASSWORD@", ADMIN_PASSWORD)
        .replace("@SERVICE@", SERVICE_DN)
        .replace("@POLICY@", DEFAULT_POLICY_DN)
        .replace(
            "@LIMITS@",
            &format!(
                "size.soft={SIZE_LIMIT} size.hard={SIZE_LIMIT} size.pr=unlimited size.prtotal=unlimited"
            ),
        )
}

fn base_ldif() -> String {
    BASE_LDIF
        .replace("@BASE@", BASE_DN)
        .replace("@SERVICE@", SERVICE_DN)
        .replace("@SERVICE_PASSWORD@", SERVICE_PASSWORD)
        .replace("@POLICY@", DEFAULT_POLICY_DN)
        .replace("@POLICIES@", POLICIES_DN)
}

const CONFIG_LDIF: &str = r#"# Written by crates/cli/tests/slapd/mod.rs; loaded with slapadd -n0.
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: @DIR@/slapd.pid
olcArgsFile: @DIR@/slapd.args
olcLogLevel: 0
olcTLSCACertificateFile: @DIR@/tls/ca.pem
olcTLSCertificateFile: @DIR@/tls/server.pem
olcTLSCertificateKeyFile: @DIR@/tls/server.key

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: @MODULES@
olcModuleLoad: {0}back_mdb
olcModuleLoad: {1}ppolicy

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

@INCLUDES@
dn: cn=redoubt-ad,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: redoubt-ad
olcAttributeTypes: ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcAttributeTypes: ( 1.2.840.113556.1.4.8 NAME 'userAccountControl' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
olcAttributeTypes: ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcAttributeTypes: ( 1.2.840.113556.1.4.2 NAME 'objectGUID' EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
olcAttributeTypes: ( @ARC@.1.1 NAME 'redoubtRawName' DESC 'test: raw bytes, not necessarily UTF-8' EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 )
olcObjectClasses: ( 1.2.840.113556.1.5.9 NAME 'user' DESC 'test: AD-style user' SUP inetOrgPerson STRUCTURAL MUST sAMAccountName MAY ( userAccountControl $ userPrincipalName $ objectGUID $ redoubtRawName ) )
olcObjectClasses: ( 1.2.840.113556.1.5.8 NAME 'group' DESC 'test: AD-style group' SUP top STRUCTURAL MUST cn MAY ( member $ description $ sAMAccountName $ objectGUID $ mail $ redoubtRawName ) )
olcObjectClasses: ( 1.2.840.113556.1.3.30 NAME 'computer' DESC 'test: AD-style computer account' SUP user STRUCTURAL )
olcObjectClasses: ( @ARC@.2.1 NAME 'redoubtRaw' DESC 'test: adds redoubtRawName to any entry' SUP top AUXILIARY MAY redoubtRawName )

dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend
olcSizeLimit: @LIMITS@

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcRootDN: @CONFIG_ADMIN@
olcRootPW: @PASSWORD@

dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcSuffix: @BASE@
olcRootDN: @ADMIN@
olcRootPW: @PASSWORD@
olcDbDirectory: @DIR@/db
olcDbMaxSize: 4294967296
olcDbNoSync: TRUE
olcDbIndex: objectClass eq
olcDbIndex: entryUUID eq
olcDbIndex: uid,cn,mail,sAMAccountName,userPrincipalName eq
olcDbIndex: member eq
olcSizeLimit: @LIMITS@
olcAccess: {0}to attrs=userPassword by dn.exact="@SERVICE@" read by self write by anonymous auth by * none
olcAccess: {1}to * by dn.exact="@SERVICE@" read by self read by users read by * none

dn: olcOverlay={0}ppolicy,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {0}ppolicy
olcPPolicyDefault: @POLICY@
"#;

const BASE_LDIF: &str = r"dn: @BASE@
objectClass: top
objectClass: dcObject
objectClass: organization
dc: corp
o: corp.test

dn: ou=people,@BASE@
objectClass: organizationalUnit
ou: people

dn: ou=groups,@BASE@
objectClass: organizationalUnit
ou: groups

dn: ou=services,@BASE@
objectClass: organizationalUnit
ou: services

dn: @POLICIES@
objectClass: organizationalUnit
ou: policies

dn: @SERVICE@
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: redoubt
description: Redoubt's directory sync (read-only)
userPassword: @SERVICE_PASSWORD@

dn: @POLICY@
objectClass: applicationProcess
objectClass: pwdPolicy
cn: default
pwdAttribute: userPassword
pwdLockout: TRUE
pwdMaxFailure: 0
";

// ----- processes -----

/// `tool` on `PATH`, else in /usr/sbin or /sbin (slapd, slapadd), else the bare name.
fn tool_path(tool: &str) -> PathBuf {
    processes::find_tool(tool).unwrap_or_else(|| PathBuf::from(tool))
}

/// Runs `cmd` with `input` on stdin, killed after `deadline`.
fn run(mut cmd: Command, input: &[u8], deadline: Duration) -> ToolOutput {
    let done =
        processes::run_piped(&mut cmd, input, deadline).unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    ToolOutput {
        code: done.status.and_then(|s| s.code()),
        stdout: done.stdout,
        stderr: done.stderr,
        elapsed: done.elapsed,
    }
}

fn write_file(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
