//! `redoubt server backup`, `server backup verify` and `server restore`: the commands around
//! `redoubt_server::backup` — passphrases and printing.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use redoubt_server::backup::{PASSPHRASE_CHARS_MIN, Passphrase, Summary};
use serde_json::json;

use crate::output::{Output, print_json, say};
use crate::unlock::{forget, read_hidden};

/// Longest passphrase file read (bytes).
const PASSPHRASE_FILE_BYTES_MAX: u64 = 4096;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct BackupArgs {
    #[command(subcommand)]
    action: Option<BackupAction>,
    /// The data folder to back up (the server may be running on it).
    #[arg(long, value_name = "DIR", required = true)]
    data: Option<PathBuf>,
    /// The archive to write (a new file, outside the data folder).
    #[arg(long, value_name = "FILE", required = true)]
    out: Option<PathBuf>,
    /// Read the passphrase from this file (its first line). Default: REDOUBT_BACKUP_PASSPHRASE,
    /// else asked twice on the terminal.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// The server keeps its data in this PostgreSQL database: refused (use pg_dump); only
    /// single servers on SQLite are backed up this way.
    #[arg(long, env = "REDOUBT_DATABASE", value_name = "URL", hide_env_values = true)]
    database: Option<String>,
}

#[derive(Debug, Subcommand)]
enum BackupAction {
    /// Decrypt and check a whole archive without restoring it, and show what it holds.
    Verify {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Read the passphrase from this file (its first line). Default:
        /// REDOUBT_BACKUP_PASSPHRASE, else asked on the terminal.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The archive `redoubt server backup` wrote.
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// The data folder to create (it must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Read the passphrase from this file (its first line). Default: REDOUBT_BACKUP_PASSPHRASE,
    /// else asked on the terminal.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

/// The passphrase: from `file`, else `REDOUBT_BACKUP_PASSPHRASE`, else the terminal (twice
/// when `new`).
fn passphrase(file: Option<&Path>, new: bool) -> Result<Passphrase> {
    let text = if let Some(file) = file {
        read_passphrase_file(file)?
    } else if let Ok(text) = std::env::var("REDOUBT_BACKUP_PASSPHRASE") {
        text
    } else if std::io::stdin().is_terminal() {
        let first = read_hidden(&if new {
            format!(
                "Backup passphrase (at least {PASSPHRASE_CHARS_MIN} characters; keep it apart from the backup): "
            )
        } else {
            "Backup passphrase: ".to_owned()
        })?;
        if new {
            let mut second = read_hidden("Repeat the passphrase: ")?;
            let same = first == second;
            forget(&mut second);
            if !same {
                let mut first = first;
                forget(&mut first);
                bail!("the passphrases differ; nothing was written");
            }
        }
        first
    } else {
        bail!("no passphrase: give --passphrase-file FILE or set REDOUBT_BACKUP_PASSPHRASE");
    };
    let passphrase = Passphrase::new(text);
    Ok(passphrase)
}

fn read_passphrase_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(PASSPHRASE_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > PASSPHRASE_FILE_BYTES_MAX {
        bytes.fill(0);
        bail!("{} is too long for a passphrase file", path.display());
    }
    let mut text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let mut bytes = error.into_bytes();
            bytes.fill(0);
            bail!("{} is not UTF-8", path.display());
        }
    };
    // The first line, without its line ending.
    let line = text.lines().next().unwrap_or_default().to_owned();
    forget(&mut text);
    if line.is_empty() {
        bail!("{} holds no passphrase", path.display());
    }
    Ok(line)
}

pub(crate) async fn backup(args: BackupArgs, out: &Output) -> Result<()> {
    if let Some(BackupAction::Verify {
        file,
        passphrase_file,
    }) = args.action
    {
        let passphrase = passphrase(passphrase_file.as_deref(), false)?;
        let path = file.clone();
        let summary = tokio::task::spawn_blocking(move || redoubt_server::backup::verify(&path, &passphrase))
            .await?
            .with_context(|| format!("{} does not verify", file.display()))?;
        print_summary(out, "verified", &file, &summary);
        return Ok(());
    }
    let data = args.data.context("--data is required")?;
    let archive = args.out.context("--out is required")?;
    if args.database.is_some() {
        bail!(
            "this server keeps its data in PostgreSQL, not in {}: back up the database with \
             pg_dump (or your PostgreSQL backups) and copy the data folder's keys and \
             configuration; `redoubt server backup` covers single servers on SQLite",
            data.display()
        );
    }
    let passphrase = passphrase(args.passphrase_file.as_deref(), true)?;
    // The library checks too; checking first spares the snapshot's work.
    if !passphrase.long_enough() {
        bail!("the passphrase must have at least {PASSPHRASE_CHARS_MIN} characters; nothing was written");
    }
    let started = std::time::Instant::now();
    let (from, to) = (data.clone(), archive.clone());
    let summary =
        tokio::task::spawn_blocking(move || redoubt_server::backup::backup(&from, &to, &passphrase))
            .await?
            .with_context(|| format!("cannot back up {}", data.display()))?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "backup written"
    );
    print_summary(out, "written", &archive, &summary);
    Ok(())
}

pub(crate) async fn restore(args: RestoreArgs, out: &Output) -> Result<()> {
    let passphrase = passphrase(args.passphrase_file.as_deref(), false)?;
    let (from, to) = (args.input.clone(), args.data.clone());
    let summary =
        tokio::task::spawn_blocking(move || redoubt_server::backup::restore(&from, &to, &passphrase))
            .await?
            .with_context(|| {
                format!(
                    "cannot restore {} (nothing was written to {})",
                    args.input.display(),
                    args.data.display()
                )
            })?;
    print_summary(out, "restored", &args.data, &summary);
    Ok(())
}

fn print_summary(out: &Output, what: &str, path: &Path, summary: &Summary) {
    let taken_at = crate::output::time(i64::try_from(summary.taken_at_unix_ms / 1000).unwrap_or(i64::MAX));
    if out.json() {
        print_json(&json!({
            what: path.display().to_string(),
            "taken_at": taken_at,
            "taken_at_unix_ms": summary.taken_at_unix_ms,
            "version": summary.version,
            "files": summary.files,
            "directories": summary.directories,
            "file_bytes": summary.file_bytes,
            "database_bytes": summary.database_bytes,
            "blobs": summary.blobs,
            "blobs_gone": summary.blobs_gone,
            "archive_bytes": summary.archive_bytes,
            "kdf": {
                "algorithm": "argon2id",
                "memory_kib": summary.kdf_memory_kib,
                "iterations": summary.kdf_iterations,
                "lanes": summary.kdf_lanes,
            },
        }));
        return;
    }
    let verb = match what {
        "written" => "Backup written to",
        "verified" => "Backup verified:",
        _ => "Restored into",
    };
    say!("{verb} {}", path.display());
    say!("  taken at        {taken_at} (redoubt {})", summary.version);
    say!(
        "  files           {} in {} folders, {} bytes",
        summary.files,
        summary.directories,
        summary.file_bytes
    );
    say!(
        "  database        {} bytes (integrity checked)",
        summary.database_bytes
    );
    say!("  attachments     {}", summary.blobs);
    say!("  archive         {} bytes", summary.archive_bytes);
    if summary.blobs_gone > 0 {
        say!(
            "  note: {} history-transfer blob(s) were picked up and deleted during the backup",
            summary.blobs_gone
        );
    }
    if what == "restored" {
        say!(
            "Start the server on the same address as before: redoubt server --data {} --listen ADDR",
            path.display()
        );
    }
}
