//! Request handlers. Each takes what it needs and returns a response or an [`ApiError`];
//! a handler that fails has changed nothing (multi-step writes are single store calls).

use ed25519_dalek::{Signature, VerifyingKey};
use rand_core::{OsRng, RngCore};
use redoubt_proto::{
    ActivationCode, ActivationCodeId, ActivationSecret, AuthenticateRequest, Bytes, CertificateError,
    DeviceCertificate, DeviceId, DeviceSummary, DisplayName, EnrollRequest, Enrolled, ErrorCode,
    IssuedActivationCode, SessionInfo, TLS_EXPORTER_BYTES, UserName, UserSummary, enroll_transcript,
    session_transcript,
};
use redoubt_store::{ActivationCodeRecord, ActivationCodeState, Change, DeviceRecord, UserRecord};

use crate::State;
use crate::error::ApiError;
use crate::management::{Permission, audit, require};
use crate::org::DeviceGrant;

/// What a connection knows about its peer before and after authentication.
#[derive(Debug)]
pub(crate) struct Peer {
    pub challenge: Bytes<{ redoubt_proto::CHALLENGE_BYTES }>,
    pub tls_exporter: [u8; TLS_EXPORTER_BYTES],
}

/// An authenticated session's identity.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated {
    pub user: UserName,
    pub device_id: DeviceId,
    /// The policy version this device has acknowledged (kept current by `PolicyAck`).
    pub policy_acked: u64,
    /// Whether the device is approved; re-read while it is not.
    pub approved: bool,
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

fn verify_signature(key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> bool {
    key.verify_strict(message, &Signature::from_bytes(signature))
        .is_ok()
}

/// Makes a fresh activation code for `user`: the record to store (with only the secret's
/// hash) and the text to hand to the admin.
pub(crate) fn new_activation_code(
    state: &State,
    user: &UserName,
    now: i64,
) -> (ActivationCodeRecord, IssuedActivationCode) {
    let id = ActivationCodeId::from(random::<8>());
    let secret = ActivationSecret::from_bytes(random::<16>());
    let expires_at = now + i64::from(state.config.activation.code_ttl_hours) * 3600;
    let record = ActivationCodeRecord::new(id, user.clone(), secret.hash(), now, expires_at);
    let code = ActivationCode {
        server: state.public_address.clone(),
        pin: Bytes(state.tls_pin),
        id,
        secret,
    };
    let issued = IssuedActivationCode {
        user: user.clone(),
        code: code.to_text(),
        expires_at_unix_s: expires_at,
    };
    (record, issued)
}

pub(crate) async fn enroll(state: &State, peer: &Peer, request: EnrollRequest) -> Result<Enrolled, ApiError> {
    let now = state.now();
    let code = state
        .store
        .activation_code(&request.code_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::ActivationCodeUnknown, "unknown activation code"))?;
    match code.state {
        ActivationCodeState::Used => return Err(redoubt_store::RedeemError::Used.into()),
        ActivationCodeState::Voided => return Err(redoubt_store::RedeemError::Voided.into()),
        ActivationCodeState::Active => {}
    }
    if now >= code.expires_at_unix_s {
        tracing::warn!(code_id = %code.id, user = %code.user, "expired activation code presented");
        return Err(redoubt_store::RedeemError::Expired.into());
    }
    if !redoubt_proto::constant_time_eq(&request.secret.hash(), &code.secret_hash) {
        let attempts_max = state.config.activation.attempts_max;
        let event = audit(
            state,
            None,
            "activation.failed",
            format!("user {}", code.user),
            format!("wrong secret for activation code {}", code.id),
        );
        let after = state
            .store
            .record_failed_activation(&code.id, attempts_max, &event)
            .await?;
        tracing::warn!(
            code_id = %code.id, user = %code.user, failed_attempts = after.failed_attempts,
            "wrong activation secret"
        );
        if after.state == ActivationCodeState::Voided {
            return Err(redoubt_store::RedeemError::Voided.into());
        }
        let left = attempts_max.saturating_sub(after.failed_attempts);
        return Err(ApiError::new(
            ErrorCode::ActivationSecretWrong,
            format!("wrong activation secret; {left} attempt(s) left before the code is voided"),
        ));
    }

    let device_key = VerifyingKey::from_bytes(&request.device_public_key.0).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            "device_public_key is not an Ed25519 key",
        )
    })?;
    let transcript = enroll_transcript(&peer.challenge, &peer.tls_exporter, &request.code_id);
    if !verify_signature(&device_key, &transcript, &request.signature.0) {
        return Err(ApiError::new(
            ErrorCode::AuthenticationFailed,
            "signature does not prove possession of the device key for this session",
        ));
    }

    let user = state
        .store
        .user(&code.user)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("user {} not found", code.user)))?;
    // The policy may cap a user's devices and make new ones wait for approval.
    let (policy, _) = crate::management::effective_policy(state, &user.name).await?;
    let devices: Vec<DeviceRecord> = state
        .store
        .list_devices(Some(&user.name))
        .await?
        .into_iter()
        .filter(|d| d.revoked_at_unix_s.is_none())
        .collect();
    if devices.len() >= policy.devices_per_user_max as usize {
        return Err(ApiError::new(
            ErrorCode::PolicyViolation,
            format!(
                "{} already has {} device(s), the most the organisation's policy allows; \
                 an admin can revoke an old one",
                user.name,
                devices.len()
            ),
        ));
    }
    let needs_approval = policy.new_device_approval && devices.iter().any(|d| d.approved_at_unix_s.is_some());
    let serial = state.store.next_certificate_serial().await?;
    let device_id = DeviceId::from(random::<16>());
    let certificate = state.org.certify(DeviceGrant {
        serial,
        user: &user.name,
        device_id,
        device_name: &request.device_name,
        device_public_key: request.device_public_key,
        roles: user.roles.clone(),
        now_unix_s: now,
        validity_days: state.config.certificates.device_validity_days,
    });
    let device = DeviceRecord {
        id: device_id,
        user: user.name.clone(),
        name: request.device_name.clone(),
        public_key: request.device_public_key,
        certificate: certificate.encoded().to_vec(),
        certificate_serial: serial,
        certificate_not_after_unix_s: certificate.unverified_body().not_after_unix_s,
        created_at_unix_s: now,
        last_seen_at_unix_s: None,
        revoked_at_unix_s: None,
        approved_at_unix_s: (!needs_approval).then_some(now),
        policy_version_acked: 0,
        approval: None,
    };
    let event = audit(
        state,
        None,
        "device.enroll",
        format!("device {device_id}"),
        format!(
            "user {}, device {}, certificate serial {serial}{}",
            user.name,
            request.device_name,
            if needs_approval { ", awaiting approval" } else { "" }
        ),
    );
    state
        .store
        .redeem_activation_code(&code.id, now, &device, &event)
        .await?;
    tracing::info!(user = %user.name, device_id = %device_id, serial, "device enrolled");
    crate::kt::log_device(
        state,
        &user.name,
        (!needs_approval).then_some(certificate.encoded()),
    )
    .await;
    Ok(Enrolled {
        certificate: certificate.encoded().to_vec(),
        org_public_key: Bytes(state.org.public_key().to_bytes()),
        org_name: state.org.name.clone(),
    })
}

pub(crate) async fn authenticate(
    state: &State,
    peer: &Peer,
    request: AuthenticateRequest,
) -> Result<(Authenticated, SessionInfo), ApiError> {
    let now = state.now();
    let failed = |why: &str| ApiError::new(ErrorCode::AuthenticationFailed, why.to_owned());
    let certificate = DeviceCertificate::decode(&request.certificate)
        .map_err(|e| failed(&format!("certificate refused: {e}")))?;
    let verified = certificate
        .verify(&state.org.public_key(), &state.org.id, now)
        .map_err(|e| match e {
            CertificateError::Expired => ApiError::new(
                ErrorCode::CertificateExpired,
                "device certificate is outside its validity period; re-enrol this device",
            ),
            other => failed(&format!("certificate refused: {other}")),
        })?;
    let body = verified.body();
    let device = state
        .store
        .device(&body.device_id)
        .await?
        .ok_or_else(|| failed("certificate names a device this server does not know"))?;
    if device.revoked_at_unix_s.is_some() {
        tracing::warn!(device_id = %device.id, user = %device.user, "revoked device tried to authenticate");
        return Err(ApiError::new(
            ErrorCode::DeviceRevoked,
            "this device has been revoked",
        ));
    }
    if device.public_key != body.device_public_key || device.certificate_serial != body.serial {
        return Err(failed("certificate has been superseded"));
    }
    let key = verified.device_key().map_err(|e| failed(&e.to_string()))?;
    if !verify_signature(
        &key,
        &session_transcript(&peer.challenge, &peer.tls_exporter),
        &request.signature.0,
    ) {
        tracing::warn!(device_id = %device.id, "session signature did not verify");
        return Err(failed("signature over the session challenge does not verify"));
    }
    // Written with the next second's coalesced writes: last-seen is informative.
    state.pending.last_seen.record(device.id, now);
    let who = Authenticated {
        user: device.user.clone(),
        device_id: device.id,
        policy_acked: device.policy_version_acked,
        approved: device.approved_at_unix_s.is_some(),
    };
    let user = state.store.user(&who.user).await?.ok_or_else(gone)?;
    let info = describe_session(state, &who, user, device);
    tracing::info!(user = %who.user, device_id = %who.device_id, "session authenticated");
    Ok((who, info))
}

fn gone() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "this session's user or device no longer exists",
    )
}

pub(crate) async fn session_info(state: &State, who: &Authenticated) -> Result<SessionInfo, ApiError> {
    let user = state.store.user(&who.user).await?.ok_or_else(gone)?;
    let device = state.store.device(&who.device_id).await?.ok_or_else(gone)?;
    Ok(describe_session(state, who, user, device))
}

fn describe_session(
    state: &State,
    who: &Authenticated,
    user: UserRecord,
    device: DeviceRecord,
) -> SessionInfo {
    SessionInfo {
        org_id: state.org.id,
        org_name: state.org.name.clone(),
        user: user.name,
        display_name: user.display_name,
        device_id: device.id,
        device_name: device.name,
        roles: user.roles,
        server_time_unix_s: state.now(),
        policy_version: state.policy_version(),
        policy_version_acked: who.policy_acked,
        approved: device.approved_at_unix_s.is_some(),
    }
}

pub(crate) async fn user_add(
    state: &State,
    who: &Authenticated,
    user: UserName,
    display_name: Option<DisplayName>,
) -> Result<IssuedActivationCode, ApiError> {
    require(state, who, Permission::ManageUsers).await?;
    crate::mail::refuse_reserved(&user)?;
    let now = state.now();
    let (record, issued) = new_activation_code(state, &user, now);
    let new_user = UserRecord {
        name: user.clone(),
        display_name,
        roles: vec![],
        created_at_unix_s: now,
        disabled_at_unix_s: None,
    };
    let event = audit(
        state,
        Some(who),
        "user.add",
        format!("user {user}"),
        "first activation code issued",
    );
    state
        .store
        .apply(
            &[Change::CreateUser {
                user: new_user,
                code: record.clone(),
            }],
            &[event],
        )
        .await
        .map_err(|e| match e {
            redoubt_store::StoreError::AlreadyExists("user") => {
                ApiError::new(ErrorCode::AlreadyExists, format!("user {user} already exists"))
            }
            other => other.into(),
        })?;
    tracing::info!(admin = %who.user, user = %user, code_id = %record.id, "user added");
    Ok(issued)
}

pub(crate) async fn device_add(
    state: &State,
    who: &Authenticated,
    user: UserName,
) -> Result<IssuedActivationCode, ApiError> {
    require(state, who, Permission::ManageUsers).await?;
    let now = state.now();
    let (record, issued) = new_activation_code(state, &user, now);
    let event = audit(
        state,
        Some(who),
        "device.add",
        format!("user {user}"),
        "activation code issued",
    );
    state
        .store
        .apply(&[Change::CreateActivationCode(record.clone())], &[event])
        .await
        .map_err(|e| match e {
            redoubt_store::StoreError::NotFound(_) => {
                ApiError::new(ErrorCode::NotFound, format!("user {user} does not exist"))
            }
            other => other.into(),
        })?;
    tracing::info!(admin = %who.user, user = %user, code_id = %record.id, "device activation code issued");
    Ok(issued)
}

pub(crate) async fn user_list(state: &State, who: &Authenticated) -> Result<Vec<UserSummary>, ApiError> {
    require(state, who, Permission::ManageUsers).await?;
    let users = state.store.list_users().await?;
    let devices = state.store.list_devices(None).await?;
    Ok(users
        .into_iter()
        .map(|u| {
            let active = devices
                .iter()
                .filter(|d| d.user == u.name && d.revoked_at_unix_s.is_none())
                .count();
            UserSummary {
                devices_active: u32::try_from(active).unwrap_or(u32::MAX),
                user: u.name,
                display_name: u.display_name,
                roles: u.roles,
                created_at_unix_s: u.created_at_unix_s,
            }
        })
        .collect())
}

pub(crate) async fn device_list(
    state: &State,
    who: &Authenticated,
    user: Option<UserName>,
) -> Result<Vec<DeviceSummary>, ApiError> {
    require(state, who, Permission::ManageUsers).await?;
    if let Some(user) = &user
        && state.store.user(user).await?.is_none()
    {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("user {user} does not exist"),
        ));
    }
    let devices = state.store.list_devices(user.as_ref()).await?;
    crate::management::summarise(state, devices).await
}
