//! Complying with the organisation: remote commands first, then the policy.
//!
//! Right after authenticating, a device fetches the commands waiting for it and the
//! policy (when its acknowledged version is behind). Each document must verify with the
//! organisation key stored at enrolment and name this device; a command is acknowledged
//! to the server before it is carried out (a wipe leaves nothing to acknowledge with), and
//! a policy only once it is applied. The server serves a device nothing else until then.

use ed25519_dalek::VerifyingKey;
use redoubt_proto::{CommandBody, CommandKind, Policy, PolicyBody, Request, Response, SessionInfo, Signed};

use crate::{ClientError, Connection, Profile};

/// Vault namespace for what this module keeps.
const NAMESPACE: &str = "management";
const POLICY_KEY: &[u8] = b"policy";
const LAST_COMMAND_KEY: &[u8] = b"last-command";

fn org_key(profile: &Profile) -> Result<VerifyingKey, ClientError> {
    VerifyingKey::from_bytes(&profile.org_public_key)
        .map_err(|_| ClientError::Profile("the organisation key is not an Ed25519 key".into()))
}

/// Checks a policy document: signed by the organisation, for this device, not older than
/// the one applied before.
pub fn verify_policy(profile: &Profile, signed: &Signed<PolicyBody>) -> Result<PolicyBody, ClientError> {
    let body = signed
        .verify(&org_key(profile)?)
        .map_err(|e| ClientError::PolicyInvalid(e.to_string()))?;
    if body.org_id != profile.org_id()
        || body.device_id != profile.device_id()
        || body.user != *profile.user()
    {
        return Err(ClientError::PolicyInvalid(
            "the policy is for another organisation or device".into(),
        ));
    }
    if let Some(applied) = applied_policy(profile)?
        && body.version < applied.version
    {
        return Err(ClientError::PolicyInvalid(format!(
            "policy version {} is older than the applied version {}",
            body.version, applied.version
        )));
    }
    Ok(body)
}

/// The policy this device applied last, if any (verified when it was applied).
pub fn applied_policy(profile: &Profile) -> Result<Option<PolicyBody>, ClientError> {
    let Some(bytes) = profile.vault().get(NAMESPACE, POLICY_KEY)? else {
        return Ok(None);
    };
    let signed = Signed::<PolicyBody>::from_bytes(&bytes).map_err(|e| ClientError::Profile(e.to_string()))?;
    match signed.verify(&org_key(profile)?) {
        Ok(body) => Ok(Some(body)),
        // Signed by the organisation but written by an older version, before settings were
        // added: as if none were applied, so the next connection fetches the policy anew.
        Err(redoubt_proto::SignedError::Malformed(why)) => {
            tracing::info!(%why, "the stored policy predates this version; it is fetched again");
            Ok(None)
        }
        Err(error) => Err(ClientError::Profile(format!("stored policy: {error}"))),
    }
}

/// The policy in force on this device: the applied one, or the built-in defaults.
pub fn current_policy(profile: &Profile) -> Result<Policy, ClientError> {
    Ok(applied_policy(profile)?.map(|b| b.policy).unwrap_or_default())
}

fn last_command(profile: &Profile) -> Result<u64, ClientError> {
    Ok(profile
        .vault()
        .get(NAMESPACE, LAST_COMMAND_KEY)?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// Verifies, acknowledges and carries out one command. Returns an error that ends the
/// session for a wipe (the profile is gone) and a lock.
pub(crate) async fn handle_command(
    connection: &mut Connection,
    profile: &Profile,
    signed: &Signed<CommandBody>,
) -> Result<(), ClientError> {
    let body = signed
        .verify(&org_key(profile)?)
        .map_err(|e| ClientError::PolicyInvalid(format!("remote command: {e}")))?;
    if body.org_id != profile.org_id() || body.device_id != profile.device_id() {
        return Err(ClientError::PolicyInvalid(
            "remote command for another organisation or device".into(),
        ));
    }
    let replayed = body.command_id <= last_command(profile)?;
    match connection
        .call(Request::CommandAck {
            command_id: body.command_id,
        })
        .await?
    {
        Response::Done => {}
        _ => return Err(ClientError::Protocol("unexpected response to CommandAck".into())),
    }
    if replayed {
        return Ok(());
    }
    tracing::warn!(command_id = body.command_id, kind = %body.kind, "carrying out a remote command");
    match body.kind {
        CommandKind::Wipe => {
            Profile::wipe(profile.dir())?;
            return Err(ClientError::RemotelyWiped);
        }
        CommandKind::Lock => profile.set_remote_locked(true)?,
        CommandKind::Unlock => profile.set_remote_locked(false)?,
    }
    profile
        .vault()
        .put(NAMESPACE, LAST_COMMAND_KEY, &body.command_id.to_be_bytes())?;
    if body.kind == CommandKind::Lock {
        return Err(ClientError::DeviceLocked);
    }
    Ok(())
}

/// Brings the device into line after authentication: commands, then the lock state,
/// then the policy. Returns the policy in force.
pub(crate) async fn comply(
    connection: &mut Connection,
    profile: &Profile,
    info: &SessionInfo,
) -> Result<Policy, ClientError> {
    let commands = match connection.call(Request::CommandsFetch).await? {
        Response::Commands(commands) => commands,
        _ => {
            return Err(ClientError::Protocol(
                "unexpected response to CommandsFetch".into(),
            ));
        }
    };
    for command in &commands {
        match handle_command(connection, profile, command).await {
            // A remote lock on a passcode-protected profile is lifted by the passcode this
            // process was opened with; the lock still ends whatever was running.
            Err(ClientError::DeviceLocked) if profile.has_passcode() => {}
            other => other?,
        }
    }
    if profile.remote_locked() {
        if profile.has_passcode() {
            profile.set_remote_locked(false)?;
        } else {
            return Err(ClientError::DeviceLocked);
        }
    }
    if info.policy_version_acked < info.policy_version || applied_policy(profile)?.is_none() {
        refresh_policy(connection, profile).await
    } else {
        current_policy(profile)
    }
}

/// Fetches, verifies, applies and acknowledges the organisation's policy.
pub(crate) async fn refresh_policy(
    connection: &mut Connection,
    profile: &Profile,
) -> Result<Policy, ClientError> {
    let signed = match connection.call(Request::PolicyFetch).await? {
        Response::Policy(signed) => signed,
        _ => return Err(ClientError::Protocol("unexpected response to PolicyFetch".into())),
    };
    let body = verify_policy(profile, &signed)?;
    let policy = &body.policy;
    if policy.passcode_required && !profile.has_passcode() {
        return Err(ClientError::PasscodeSetupRequired {
            min_length: policy.passcode_min_length,
        });
    }
    let wipe_after = (policy.wipe_after_failed_passcodes > 0).then_some(policy.wipe_after_failed_passcodes);
    profile.set_wipe_after_failures(wipe_after)?;
    profile.vault().put(NAMESPACE, POLICY_KEY, &signed.to_bytes())?;
    match connection
        .call(Request::PolicyAck {
            version: body.version,
        })
        .await?
    {
        Response::Done => {}
        _ => return Err(ClientError::Protocol("unexpected response to PolicyAck".into())),
    }
    tracing::info!(version = body.version, "policy applied");
    Ok(body.policy)
}
