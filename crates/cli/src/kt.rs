//! Key transparency commands: `security` (this device's notices), `verify` (safety numbers
//! between two users) and `kt audit` (an independent auditor of the key directory, which
//! needs nothing but the server's address and certificate pin).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore};
use redoubt_client::{Connection, SecurityNotice};
use redoubt_proto::{
    AuditorStatement, Bytes, EpochHead, KT_AUDIT_EPOCHS_MAX, KtKeysBody, Request, Response, ServerAddress,
    Signed,
};
use serde::{Deserialize, Serialize};

use crate::output::Output;

#[derive(Debug, Subcommand)]
pub(crate) enum KtCommand {
    /// Check the organisation's key directory from outside: every epoch appends to the one
    /// before, with one root per epoch; then countersign the newest head.
    Audit(AuditArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// The server's host:port.
    #[arg(long, value_name = "HOST:PORT")]
    server: String,
    /// The hex SHA-256 of the server certificate's DER (as in activation codes).
    #[arg(long, value_name = "SHA256HEX")]
    pin: String,
    /// The auditor's own folder: its signing key and what it verified so far.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// Start from this epoch (trusting its head) when the state is new. Default 0.
    #[arg(long, value_name = "EPOCH")]
    from: Option<u64>,
}

pub(crate) fn notice_json(notice: &SecurityNotice) -> serde_json::Value {
    serde_json::json!({
        "kind": notice.kind.as_str(),
        "user": notice.user.as_str(),
        "device_id": notice.device_id.map(|d| d.to_string()),
        "device_name": notice.device_name,
        "epoch": notice.epoch,
        "at_unix_s": notice.at_unix_s,
        "detail": notice.detail,
    })
}

/// `redoubt security`: this device's key-transparency notices, after checking its account.
pub(crate) async fn security(profile_dir: &Path, out: &Output) -> Result<()> {
    let mut messenger = crate::messenger(profile_dir).await?;
    let result = async {
        messenger.monitor_own().await?;
        messenger.security_notices()
    }
    .await;
    messenger.close().await;
    let notices = result?;
    if out.is_json() {
        crate::output::print_json(&serde_json::json!({
            "notices": notices.iter().map(notice_json).collect::<Vec<_>>(),
        }));
    } else if notices.is_empty() {
        println!("No security notices: the key directory shows only devices this device knows of.");
    } else {
        for notice in &notices {
            println!(
                "[{}] epoch {}: {}",
                notice.kind.as_str(),
                notice.epoch,
                notice.detail
            );
        }
    }
    Ok(())
}

/// `redoubt verify USER [--mark] [--qr]`.
pub(crate) async fn verify(profile_dir: &Path, peer: &str, mark: bool, qr: bool, out: &Output) -> Result<()> {
    let peer = crate::user_name(peer)?;
    let mut messenger = crate::messenger(profile_dir).await?;
    let result = messenger.safety_number(&peer, mark).await;
    messenger.close().await;
    let number = result?;
    let changed = number.marked.as_ref().is_some_and(|m| *m != number.number);
    if out.is_json() {
        crate::output::print_json(&serde_json::json!({
            "user": number.peer.as_str(),
            "safety_number": number.number,
            "verified": number.marked.as_ref() == Some(&number.number),
            "changed_since_verified": changed,
            "devices": number.peer_devices.iter().map(|(id, name)| serde_json::json!({
                "device_id": id.to_string(), "name": name,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!("Safety number with {}:", number.peer);
    for line in number.number.split(' ').collect::<Vec<_>>().chunks(4) {
        println!("    {}", line.join(" "));
    }
    if qr && let Some(code) = crate::output::qr(&number.number.replace(' ', "")) {
        println!("{code}");
    }
    println!(
        "Compare it with what {} sees with `redoubt verify YOUR-NAME`, in person or on a call.",
        number.peer
    );
    println!("{}'s logged devices:", number.peer);
    for (id, name) in &number.peer_devices {
        println!("    {name} ({id})");
    }
    if changed {
        println!("Their devices changed since you marked them verified: compare again.");
    } else if mark {
        println!("Marked verified: a change of their devices will show in `redoubt security`.");
    }
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
struct AuditorState {
    /// The directory's keys as first seen (postcard, hex): they must never change.
    keys: String,
    epoch: u64,
    root_hash: String,
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

fn auditor_key(dir: &Path) -> Result<SigningKey> {
    let path = dir.join("auditor.key");
    if path.exists() {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", path.display()))?;
        return Ok(SigningKey::from_bytes(&seed));
    }
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    write_private(&path, &seed)?;
    Ok(SigningKey::from_bytes(&seed))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

async fn connect(server: &ServerAddress, pin: &[u8; 32]) -> Result<Connection> {
    Connection::connect(server, pin)
        .await
        .with_context(|| format!("connecting to {server}"))
}

/// Asks, reconnecting once when the server closed the connection or refuses more requests
/// on it (it limits what an unauthenticated connection may ask).
async fn ask(
    connection: &mut Connection,
    server: &ServerAddress,
    pin: &[u8; 32],
    request: Request,
) -> Result<Response> {
    match connection.call(request.clone()).await {
        Ok(response) => Ok(response),
        Err(error)
            if error.code().is_some_and(|c| {
                // Unauthenticated connections are limited in requests and in time
                // (`auth_timeout_ms`): a long audit goes on over a new one.
                !matches!(
                    c,
                    redoubt_proto::ErrorCode::TooManyUnauthenticatedRequests
                        | redoubt_proto::ErrorCode::Unauthenticated
                )
            }) =>
        {
            Err(error.into())
        }
        Err(_) => {
            *connection = connect(server, pin).await?;
            Ok(connection.call(request).await?)
        }
    }
}

async fn head_of(
    connection: &mut Connection,
    server: &ServerAddress,
    pin: &[u8; 32],
    epoch: Option<u64>,
) -> Result<redoubt_proto::KtHead> {
    match ask(connection, server, pin, Request::KtHead { epoch }).await? {
        Response::KtHead(head) => Ok(*head),
        _ => bail!("unexpected answer to KtHead"),
    }
}

/// `redoubt kt audit`.
pub(crate) async fn audit(args: AuditArgs, out: &Output) -> Result<()> {
    let server = ServerAddress::parse(&args.server).map_err(|e| anyhow::anyhow!("--server: {e}"))?;
    let pin: [u8; 32] = data_encoding::HEXLOWER_PERMISSIVE
        .decode(args.pin.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("--pin must be 64 hex digits (the SHA-256 of the server certificate)")?;
    std::fs::create_dir_all(&args.state).with_context(|| format!("creating {}", args.state.display()))?;
    let signing = auditor_key(&args.state)?;
    let mut connection = connect(&server, &pin).await?;
    let newest = head_of(&mut connection, &server, &pin, None).await?;
    let offered: KtKeysBody =
        postcard::from_bytes(&newest.keys.body).context("the server's key directory keys are malformed")?;
    let state_path = state_file(&args.state);
    let (keys, mut previous) = if state_path.exists() {
        let state: AuditorState = serde_json::from_slice(&std::fs::read(&state_path)?)
            .with_context(|| format!("reading {}", state_path.display()))?;
        let pinned: KtKeysBody = data_encoding::HEXLOWER
            .decode(state.keys.as_bytes())
            .ok()
            .and_then(|bytes| postcard::from_bytes(&bytes).ok())
            .with_context(|| format!("{} names no keys", state_path.display()))?;
        if pinned != offered {
            bail!("AUDIT FAILED: the key directory's keys changed since this auditor's last run");
        }
        // The head verified last time must still be the server's head for that epoch.
        let again = head_of(&mut connection, &server, &pin, Some(state.epoch))
            .await?
            .head
            .context("the server no longer serves an epoch this auditor verified")?;
        let again = redoubt_kt::verify_head(&again, &pinned)?;
        if hex(&again.root_hash.0) != state.root_hash {
            bail!(
                "AUDIT FAILED: epoch {}: the server now shows another root than the one verified \
                 ({} then, {} now): two roots for one epoch",
                state.epoch,
                state.root_hash,
                hex(&again.root_hash.0)
            );
        }
        (pinned, again)
    } else {
        let from = args.from.unwrap_or(0);
        let anchor = head_of(&mut connection, &server, &pin, Some(from))
            .await?
            .head
            .with_context(|| format!("the server has no epoch {from}"))?;
        let anchor = redoubt_kt::verify_head(&anchor, &offered)?;
        (offered, anchor)
    };
    let first = previous.epoch;
    let started = std::time::Instant::now();
    loop {
        let batch = match ask(
            &mut connection,
            &server,
            &pin,
            Request::KtAudit {
                after_epoch: previous.epoch,
                limit: KT_AUDIT_EPOCHS_MAX,
            },
        )
        .await
        .with_context(|| {
            format!(
                "AUDIT FAILED: epoch {}: the server gave no proof",
                previous.epoch + 1
            )
        })? {
            Response::KtAudit(batch) => batch,
            _ => bail!("unexpected answer to KtAudit"),
        };
        if batch.is_empty() {
            break;
        }
        for epoch in &batch {
            previous = redoubt_kt::verify_audit_epoch(&keys, &previous, epoch)
                .await
                .map_err(|e| anyhow::anyhow!("AUDIT FAILED: {e}"))?;
        }
        save(&state_path, &keys, &previous)?;
    }
    save(&state_path, &keys, &previous)?;
    // The server showed this epoch as its newest when the audit began: an audit that stops
    // short of it (the server no longer serves the epochs after) signs nothing.
    let newest_epoch = newest
        .head
        .as_ref()
        .map(|h| redoubt_kt::verify_head(h, &keys))
        .transpose()?
        .map_or(0, |h| h.epoch);
    if previous.epoch < newest_epoch {
        bail!(
            "AUDIT FAILED: epoch {}: the server showed epoch {newest_epoch} as its newest but served proofs only up to epoch {}",
            previous.epoch + 1,
            previous.epoch
        );
    }
    let statement = Signed::sign(
        &AuditorStatement {
            org_id: keys.org_id,
            auditor_key: Bytes(signing.verifying_key().to_bytes()),
            epoch: previous.epoch,
            root_hash: previous.root_hash,
            signed_at_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        },
        &signing,
    );
    let published = match ask(&mut connection, &server, &pin, Request::KtAuditorSign(statement)).await {
        Ok(_) => Ok(()),
        Err(error) => Err(format!("{error:#}")),
    };
    connection.close().await;
    let verified = previous.epoch - first;
    if out.is_json() {
        crate::output::print_json(&serde_json::json!({
            "verified_from": first,
            "verified_to": previous.epoch,
            "epochs_verified": verified,
            "root_hash": hex(&previous.root_hash.0),
            "seconds": started.elapsed().as_secs_f64(),
            "auditor_key": hex(signing.verifying_key().as_bytes()),
            "countersignature_published": published.is_ok(),
            "countersignature_error": published.as_ref().err(),
        }));
    } else {
        println!(
            "Verified epochs {first}..{} ({verified} new) in {:.1} s: each appends to the one before.",
            previous.epoch,
            started.elapsed().as_secs_f64()
        );
        println!("Root of epoch {}: {}", previous.epoch, hex(&previous.root_hash.0));
        match published {
            Ok(()) => println!("Countersignature published."),
            Err(error) => println!(
                "Countersignature not taken ({error}); to have devices see it, the server's \
                 kt_auditor_keys must list this auditor's key {}",
                hex(signing.verifying_key().as_bytes())
            ),
        }
    }
    Ok(())
}

fn save(path: &Path, keys: &KtKeysBody, head: &EpochHead) -> Result<()> {
    let state = AuditorState {
        keys: hex(&postcard::to_stdvec(keys)?),
        epoch: head.epoch,
        root_hash: hex(&head.root_hash.0),
    };
    write_private(path, &serde_json::to_vec_pretty(&state)?)
}
