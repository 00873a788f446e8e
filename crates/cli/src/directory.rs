//! `redoubt admin directory …` (LDAP / Active Directory sync) and `redoubt admin scim …`
//! (bearer tokens for an identity provider's SCIM client).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use redoubt_client::Session;
use redoubt_proto::{
    DIRECTORY_DISABLE_MAX_PERCENT, DirectoryPreset, DirectorySettings, DirectoryStatus, DisabledRule,
    Request, Response, ScimTokenInfo, SyncReport,
};
use serde_json::json;

use crate::mail::first_line;
use crate::output::{Output, print_json, say, time};

#[derive(Debug, Subcommand)]
// Parsed once per run: the size of `Set` costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AdminDirectoryCommand {
    /// Point Redoubt at the organisation's LDAP or Active Directory server.
    Set {
        /// `ldaps://dc1.corp.test:636`, or `ldap://…` with --starttls (plain `ldap://` only
        /// for a directory on this machine).
        #[arg(long)]
        url: String,
        /// The account Redoubt binds as (read-only is enough).
        #[arg(long)]
        bind_dn: String,
        /// A file whose first line is the bind password.
        #[arg(long)]
        password_file: PathBuf,
        /// Where users and groups are searched (subtree).
        #[arg(long)]
        base_dn: String,
        /// Fill the filters, attributes and disabled rule for `active-directory` or `openldap`.
        #[arg(long)]
        preset: Option<String>,
        #[arg(long)]
        user_filter: Option<String>,
        #[arg(long)]
        group_filter: Option<String>,
        /// The attribute that becomes the Redoubt user name (`sAMAccountName`, `uid`).
        #[arg(long)]
        username_attr: Option<String>,
        #[arg(long)]
        display_name_attr: Option<String>,
        #[arg(long)]
        mail_attr: Option<String>,
        /// Users who also match this filter are disabled (instead of the preset's rule).
        #[arg(long)]
        disabled_filter: Option<String>,
        #[arg(long)]
        starttls: bool,
        /// PEM certificates to verify the directory with, instead of the system's roots.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// How often to sync (`15m`, `1h`; `0` for manual syncs only).
        #[arg(long, default_value = "15m")]
        interval: String,
        /// Mail each new user their activation code (uses `admin mail set`).
        #[arg(long)]
        email_codes: bool,
        /// A sync that would disable more than this share of directory users stops.
        #[arg(long, default_value_t = DIRECTORY_DISABLE_MAX_PERCENT)]
        disable_max_percent: u8,
    },
    /// Read the directory and bring users and groups in line with it.
    Sync {
        /// Print what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply even a sync that would disable more users than the guard allows.
        #[arg(long)]
        force: bool,
        /// Link users and groups made by hand to the directory entries of the same name
        /// (from then on the directory owns them) instead of reporting the collision.
        #[arg(long)]
        adopt: bool,
    },
    /// The settings (never the password) and the last sync.
    Show,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminScimCommand {
    /// SCIM bearer tokens for an identity provider (Entra ID, Okta, Keycloak).
    #[command(subcommand)]
    Token(ScimTokenCommand),
    /// Whether users the identity provider provisions are mailed their activation code
    /// (through `admin mail set`).
    Set {
        #[arg(long, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "on|off")]
        email_codes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ScimTokenCommand {
    /// Create a token; it is printed once and the server keeps only its hash.
    Create { name: String },
    /// List the tokens (names, never the tokens).
    List,
    /// Revoke a token: the identity provider using it is refused from now on.
    Revoke { name: String },
}

fn interval_seconds(text: &str) -> Result<u32> {
    if text == "0" {
        return Ok(0);
    }
    let duration = humantime::parse_duration(text).with_context(|| format!("--interval {text:?}"))?;
    u32::try_from(duration.as_secs()).context("--interval is too long")
}

pub(crate) async fn admin(session: &mut Session, command: AdminDirectoryCommand, out: &Output) -> Result<()> {
    match command {
        AdminDirectoryCommand::Set {
            url,
            bind_dn,
            password_file,
            base_dn,
            preset,
            user_filter,
            group_filter,
            username_attr,
            display_name_attr,
            mail_attr,
            disabled_filter,
            starttls,
            ca_file,
            interval,
            email_codes,
            disable_max_percent,
        } => {
            let preset = match preset.as_deref() {
                None => DirectoryPreset::OpenLdap,
                Some(name) => DirectoryPreset::parse(name)
                    .with_context(|| format!("--preset {name:?}: use active-directory or openldap"))?,
            };
            let ca_pem = ca_file
                .map(|path| {
                    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
                })
                .transpose()?;
            let mut settings =
                DirectorySettings::from_preset(preset, url, bind_dn, first_line(&password_file)?, base_dn);
            let overrides = [
                (user_filter, &mut settings.user_filter),
                (group_filter, &mut settings.group_filter),
                (username_attr, &mut settings.username_attr),
                (display_name_attr, &mut settings.display_name_attr),
                (mail_attr, &mut settings.mail_attr),
            ];
            for (given, field) in overrides {
                if let Some(given) = given {
                    *field = given;
                }
            }
            if let Some(filter) = disabled_filter {
                settings.disabled = DisabledRule::Filter(filter);
            }
            settings.starttls = starttls;
            settings.ca_pem = ca_pem;
            settings.interval_s = interval_seconds(&interval)?;
            settings.email_codes = email_codes;
            settings.disable_max_percent = disable_max_percent;
            if let Err(why) = settings.validate() {
                bail!("{why}");
            }
            match session.request(Request::AdminDirectorySet(settings)).await? {
                Response::Done => out.note("directory settings saved; run `redoubt admin directory sync --dry-run` to see what a sync would do"),
                other => bail!("unexpected response to AdminDirectorySet: {other:?}"),
            }
        }
        AdminDirectoryCommand::Sync {
            dry_run,
            force,
            adopt,
        } => {
            match session
                .request(Request::AdminDirectorySync {
                    dry_run,
                    force,
                    adopt,
                })
                .await?
            {
                Response::DirectorySync(report) => print_report(&report, dry_run, out),
                other => bail!("unexpected response to AdminDirectorySync: {other:?}"),
            }
        }
        AdminDirectoryCommand::Show => match session.request(Request::AdminDirectoryShow).await? {
            Response::DirectoryStatus(status) => print_status(&status, out),
            other => bail!("unexpected response to AdminDirectoryShow: {other:?}"),
        },
    }
    Ok(())
}

pub(crate) fn report_json(report: &SyncReport, dry_run: bool) -> serde_json::Value {
    let plan = &report.plan;
    json!({
        "dry_run": dry_run,
        "applied": report.applied,
        "refused": report.refused,
        "users_seen": plan.users_seen,
        "groups_seen": plan.groups_seen,
        "create": plan.create.iter().map(|u| json!({
            "user": u.user.as_str(),
            "display_name": u.display_name.as_ref().map(|d| d.as_str()),
            "mail": u.mail,
            "source": u.source,
        })).collect::<Vec<_>>(),
        "update": plan.update.iter().map(|u| json!({
            "user": u.user.as_str(),
            "display_name": u.display_name.as_ref().map(|d| d.as_str()),
            "mail": u.mail,
        })).collect::<Vec<_>>(),
        "disable": plan.disable.iter().map(|d| json!({
            "user": d.user.as_str(), "reason": d.reason, "devices": d.devices,
        })).collect::<Vec<_>>(),
        "enable": plan.enable.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        "create_groups": plan.create_groups.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "adopt_users": plan.adopt_users.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        "adopt_groups": plan.adopt_groups.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "memberships": plan.memberships.iter().map(|m| json!({
            "group": m.group.as_str(), "user": m.user.as_str(), "add": m.add,
        })).collect::<Vec<_>>(),
        "skipped": plan.skipped.iter().map(|s| json!({"entry": s.entry, "reason": s.reason})).collect::<Vec<_>>(),
        "codes": report.codes.iter().map(|c| json!({
            "user": c.user.as_str(), "code": c.code, "expires_at": time(c.expires_at_unix_s),
        })).collect::<Vec<_>>(),
        "mailed": report.mailed.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        "mail_failures": report.mail_failures.iter().map(|s| json!({"user": s.entry, "reason": s.reason})).collect::<Vec<_>>(),
        "duration_ms": report.duration_ms,
    })
}

fn print_report(report: &SyncReport, dry_run: bool, out: &Output) {
    if out.is_json() {
        print_json(&report_json(report, dry_run));
        return;
    }
    let plan = &report.plan;
    say!(
        "read {} users and {} groups from the directory in {} ms",
        plan.users_seen,
        plan.groups_seen,
        report.duration_ms
    );
    for user in &plan.create {
        say!("create user   {}  ({})", user.user, user.source);
    }
    for user in &plan.update {
        say!("update user   {}", user.user);
    }
    for disable in &plan.disable {
        say!(
            "disable user  {}  ({}; {} device(s))",
            disable.user,
            disable.reason,
            disable.devices
        );
    }
    for user in &plan.enable {
        say!("enable user   {user}");
    }
    for user in &plan.adopt_users {
        say!("adopt user    {user}  (made by hand; the directory owns it from now on)");
    }
    for group in &plan.adopt_groups {
        say!("adopt group   {group}");
    }
    for group in &plan.create_groups {
        say!("create group  {group}");
    }
    for m in &plan.memberships {
        say!(
            "{} {} {} group {}",
            if m.add { "add   " } else { "remove" },
            m.user,
            if m.add { "to  " } else { "from" },
            m.group
        );
    }
    for skipped in &plan.skipped {
        say!("skip          {}: {}", skipped.entry, skipped.reason);
    }
    if let Some(why) = &report.refused {
        say!("NOT APPLIED: {why}");
    } else if dry_run {
        say!("dry run: nothing was changed");
    } else if plan.is_empty() {
        say!("nothing to change");
    } else {
        say!("applied");
    }
    for code in &report.codes {
        say!(
            "code for {}: {}  (expires {})",
            code.user,
            code.code,
            time(code.expires_at_unix_s)
        );
    }
    for user in &report.mailed {
        say!("code mailed to {user}");
    }
    for failure in &report.mail_failures {
        say!("code for {} not mailed: {}", failure.entry, failure.reason);
    }
}

pub(crate) fn status_json(status: &DirectoryStatus) -> serde_json::Value {
    json!({
        "settings": status.settings.as_ref().map(|s| json!({
            "url": s.url, "bind_dn": s.bind_dn, "base_dn": s.base_dn,
            "user_filter": s.user_filter, "group_filter": s.group_filter,
            "username_attr": s.username_attr, "display_name_attr": s.display_name_attr,
            "mail_attr": s.mail_attr, "disabled": format!("{:?}", s.disabled),
            "starttls": s.starttls, "custom_ca": s.custom_ca, "interval_s": s.interval_s,
            "email_codes": s.email_codes, "disable_max_percent": s.disable_max_percent,
        })),
        "last_sync": status.last_sync.as_ref().map(|l| json!({
            "at": time(l.at_unix_s), "duration_ms": l.duration_ms, "error": l.error,
            "trigger": l.trigger, "users_seen": l.users_seen, "groups_seen": l.groups_seen,
            "created": l.created, "updated": l.updated, "disabled": l.disabled,
            "enabled": l.enabled, "memberships": l.memberships, "skipped": l.skipped,
            "codes_undelivered": l.codes_undelivered,
        })),
        "ldap_users": status.ldap_users,
        "scim_users": status.scim_users,
        "disabled_users": status.disabled_users,
        "scim_email_codes": status.scim_email_codes,
    })
}

fn print_status(status: &DirectoryStatus, out: &Output) {
    if out.is_json() {
        print_json(&status_json(status));
        return;
    }
    match &status.settings {
        None => say!("no directory is set"),
        Some(s) => {
            say!("directory     {} (bind {}, base {})", s.url, s.bind_dn, s.base_dn);
            say!(
                "users         {} name={} display={} mail={}",
                s.user_filter,
                s.username_attr,
                s.display_name_attr,
                s.mail_attr
            );
            say!("groups        {}", s.group_filter);
            say!("disabled      {:?}", s.disabled);
            let every = if s.interval_s == 0 {
                "manual only".to_owned()
            } else {
                format!("every {} s", s.interval_s)
            };
            say!(
                "sync          {every}; codes by mail: {}; disable guard {} %",
                s.email_codes,
                s.disable_max_percent
            );
        }
    }
    match &status.last_sync {
        None => say!("last sync     never"),
        Some(l) => {
            say!(
                "last sync     {} ({}, {} ms)",
                time(l.at_unix_s),
                l.trigger,
                l.duration_ms
            );
            say!(
                "              read {} users, {} groups; created {}, updated {}, disabled {}, enabled {}, memberships {}, skipped {}",
                l.users_seen,
                l.groups_seen,
                l.created,
                l.updated,
                l.disabled,
                l.enabled,
                l.memberships,
                l.skipped
            );
            if let Some(error) = &l.error {
                say!("              ERROR: {error}");
            }
            if l.codes_undelivered > 0 {
                say!(
                    "              {} new or re-enabled users have no code handed out (codes by mail are off): issue them with `redoubt admin device add USER`",
                    l.codes_undelivered
                );
            }
        }
    }
    say!(
        "linked users  {} from LDAP, {} from SCIM (codes by mail: {}); {} disabled",
        status.ldap_users,
        status.scim_users,
        status.scim_email_codes,
        status.disabled_users
    );
}

pub(crate) async fn scim(session: &mut Session, command: AdminScimCommand, out: &Output) -> Result<()> {
    let command = match command {
        AdminScimCommand::Token(command) => command,
        AdminScimCommand::Set { email_codes } => {
            match session.request(Request::AdminScimSet { email_codes }).await? {
                Response::Done => out.note(if email_codes {
                    "users provisioned through SCIM will be mailed their activation code"
                } else {
                    "users provisioned through SCIM get no code by mail; issue codes with `admin device add`"
                }),
                other => bail!("unexpected response to AdminScimSet: {other:?}"),
            }
            return Ok(());
        }
    };
    match command {
        ScimTokenCommand::Create { name } => {
            match session.request(Request::AdminScimTokenCreate { name }).await? {
                Response::ScimTokenCreated(created) => {
                    if out.is_json() {
                        print_json(&json!({"name": created.name, "token": created.token}));
                    } else {
                        say!(
                            "SCIM token {} (shown once; the server keeps only its hash):",
                            created.name
                        );
                        say!("{}", created.token);
                    }
                }
                other => bail!("unexpected response to AdminScimTokenCreate: {other:?}"),
            }
        }
        ScimTokenCommand::List => match session.request(Request::AdminScimTokenList).await? {
            Response::ScimTokens(tokens) => print_tokens(&tokens, out),
            other => bail!("unexpected response to AdminScimTokenList: {other:?}"),
        },
        ScimTokenCommand::Revoke { name } => {
            match session.request(Request::AdminScimTokenRevoke { name }).await? {
                Response::Done => out.note("SCIM token revoked"),
                other => bail!("unexpected response to AdminScimTokenRevoke: {other:?}"),
            }
        }
    }
    Ok(())
}

fn print_tokens(tokens: &[ScimTokenInfo], out: &Output) {
    if out.is_json() {
        let rows: Vec<_> = tokens
            .iter()
            .map(|t| json!({"name": t.name, "created_at": time(t.created_at_unix_s), "created_by": t.created_by.as_str()}))
            .collect();
        print_json(&json!(rows));
        return;
    }
    say!("{:<24} {:<22} CREATED BY", "NAME", "CREATED");
    for t in tokens {
        say!(
            "{:<24} {:<22} {}",
            t.name,
            time(t.created_at_unix_s),
            t.created_by
        );
    }
}
