//! Device management: roles, directory groups, policies, remote commands, revocation,
//! approval of new devices, and the audit log.
//!
//! Every change is one [`Store::apply`] call carrying its audit entries, so a change is
//! never made without being audited, nor audited without being made. Roles are read from
//! the directory on every request ([`require`]).

use std::collections::{BTreeSet, HashMap};

use redoubt_proto::{
    CheckpointBody, CommandBody, CommandKind, CommandSummary, DeviceApproval, DeviceId, DeviceSummary,
    DirectoryGroup, EffectivePolicy, ErrorCode, Event, GroupName, ImportedUser, IssuedActivationCode, Policy,
    PolicyBody, PolicyReport, PolicyScope, PolicySettings, Role, SettingOrigin, Signed, UserName,
    certificate_hash,
};
use redoubt_store::{AuditEvent, Change, CommandRecord, DeviceRecord, StoreError, UserRecord};

use crate::State;
use crate::api::{Authenticated, new_activation_code};
use crate::cluster::{Hint, announce};
use crate::error::ApiError;

/// Most users one import may create.
pub(crate) const IMPORT_USERS_MAX: usize = 10_000;
/// Most audit entries one request returns.
pub(crate) const AUDIT_PAGE_MAX: u32 = 1_000;

/// What a request needs beyond an authenticated device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permission {
    /// Add users and devices (activation codes), list users and devices.
    ManageUsers,
    /// Lock, unlock and wipe devices.
    CommandDevices,
    /// Revoke devices.
    RevokeDevices,
    /// Write and read policies.
    ManagePolicy,
    /// Create directory groups and change their members; import users.
    ManageDirectory,
    /// Grant and take away roles.
    ManageRoles,
    /// Read the audit log.
    ReadAudit,
    /// Set the mail servers, the service account and users' addresses.
    ManageMail,
    /// See the server nodes.
    ViewCluster,
    /// See the dashboard's figures (sessions, message rate, storage).
    ViewStats,
}

/// The authorisation table: which role may do what.
fn role_allows(role: Role, permission: Permission) -> bool {
    match role {
        Role::Admin => true,
        Role::Helpdesk => matches!(
            permission,
            Permission::ManageUsers | Permission::CommandDevices | Permission::ViewStats
        ),
        Role::Auditor => matches!(permission, Permission::ReadAudit),
        _ => false,
    }
}

/// Refuses unless one of the user's current roles (read now, not from the certificate)
/// grants `permission`.
pub(crate) async fn require(
    state: &State,
    who: &Authenticated,
    permission: Permission,
) -> Result<(), ApiError> {
    let roles = state
        .store
        .user(&who.user)
        .await?
        .map(|u| u.roles)
        .unwrap_or_default();
    if roles.iter().any(|role| role_allows(*role, permission)) {
        Ok(())
    } else {
        tracing::warn!(user = %who.user, device_id = %who.device_id, ?permission, "admin request refused");
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("your roles do not allow this ({permission:?})"),
        ))
    }
}

/// An audit entry for something `who` did (or the server, with `None`).
pub(crate) fn audit(
    state: &State,
    who: Option<&Authenticated>,
    action: &'static str,
    subject: impl Into<String>,
    details: impl Into<String>,
) -> AuditEvent {
    AuditEvent {
        at_unix_s: state.now(),
        actor_user: who.map(|w| w.user.clone()),
        actor_device: who.map(|w| w.device_id),
        action,
        subject: subject.into(),
        details: details.into(),
    }
}

fn not_found(error: StoreError, what: impl std::fmt::Display) -> ApiError {
    match error {
        StoreError::NotFound(kind) => ApiError::new(ErrorCode::NotFound, format!("{kind} {what} not found")),
        StoreError::AlreadyExists(kind) => {
            ApiError::new(ErrorCode::AlreadyExists, format!("{kind} {what} already exists"))
        }
        other => other.into(),
    }
}

/// Records a new policy version and tells every connected device to refresh.
fn policy_changed(state: &State, version: Option<u64>) {
    if let Some(version) = version {
        announce(state, Hint::PolicyChanged { version });
    }
}

/// The effective policy of `user` and where each setting came from.
pub(crate) async fn effective_policy(
    state: &State,
    user: &UserName,
) -> Result<(Policy, Vec<SettingOrigin>), ApiError> {
    let documents = state.store.policies().await?;
    let groups = state.store.user_groups(user).await?;
    let mut default = None;
    let mut own = None;
    let mut of_groups = Vec::new();
    for (scope, settings) in &documents {
        match scope {
            PolicyScope::Default => default = Some(settings),
            PolicyScope::User(name) if name == user => own = Some(settings),
            PolicyScope::Group(group) if groups.contains(group) => {
                of_groups.push((group.clone(), settings.clone()))
            }
            _ => {}
        }
    }
    Ok(Policy::resolve(default, &of_groups, own.map(|s| (user, s))))
}

pub(crate) async fn policy_set(
    state: &State,
    who: &Authenticated,
    scope: PolicyScope,
    settings: PolicySettings,
) -> Result<u64, ApiError> {
    require(state, who, Permission::ManagePolicy).await?;
    settings
        .validate()
        .map_err(|why| ApiError::new(ErrorCode::InvalidArgument, why))?;
    let details = if settings.is_empty() {
        "removed".to_owned()
    } else {
        settings
            .entries()
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let subject = scope.to_string();
    let applied = state
        .store
        .apply(
            &[
                Change::SetPolicy {
                    scope: scope.clone(),
                    settings,
                    at_unix_s: state.now(),
                },
                Change::BumpPolicyVersion,
            ],
            &[audit(state, Some(who), "policy.set", subject, details)],
        )
        .await
        .map_err(|e| not_found(e, scope_name(&scope)))?;
    policy_changed(state, applied.policy_version);
    tracing::info!(admin = %who.user, %scope, version = ?applied.policy_version, "policy set");
    Ok(applied.policy_version.unwrap_or_default())
}

fn scope_name(scope: &PolicyScope) -> String {
    match scope {
        PolicyScope::Default => String::new(),
        PolicyScope::Group(group) => group.to_string(),
        PolicyScope::User(user) => user.to_string(),
    }
}

pub(crate) async fn policy_show(
    state: &State,
    who: &Authenticated,
    user: Option<UserName>,
) -> Result<PolicyReport, ApiError> {
    require(state, who, Permission::ManagePolicy).await?;
    let effective = match user {
        Some(user) => {
            if state.store.user(&user).await?.is_none() {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("user {user} not found"),
                ));
            }
            let (policy, origins) = effective_policy(state, &user).await?;
            Some(EffectivePolicy {
                user,
                policy,
                origins,
            })
        }
        None => None,
    };
    Ok(PolicyReport {
        version: state.store.policy_version().await?,
        documents: state.store.policies().await?,
        effective,
    })
}

pub(crate) async fn group_create(
    state: &State,
    who: &Authenticated,
    group: GroupName,
) -> Result<(), ApiError> {
    require(state, who, Permission::ManageDirectory).await?;
    state
        .store
        .apply(
            &[Change::CreateGroup {
                group: group.clone(),
                at_unix_s: state.now(),
            }],
            &[audit(
                state,
                Some(who),
                "group.create",
                format!("group {group}"),
                "",
            )],
        )
        .await
        .map_err(|e| not_found(e, &group))?;
    Ok(())
}

pub(crate) async fn group_member(
    state: &State,
    who: &Authenticated,
    group: GroupName,
    user: UserName,
    add: bool,
) -> Result<(), ApiError> {
    require(state, who, Permission::ManageDirectory).await?;
    let action = if add { "group.add" } else { "group.remove" };
    // Membership can change the user's effective policy: a new version makes their
    // devices fetch it.
    let applied = state
        .store
        .apply(
            &[
                Change::SetGroupMember {
                    group: group.clone(),
                    user: user.clone(),
                    member: add,
                },
                Change::BumpPolicyVersion,
            ],
            &[audit(
                state,
                Some(who),
                action,
                format!("group {group}"),
                format!("user {user}"),
            )],
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound("user") => {
                ApiError::new(ErrorCode::NotFound, format!("user {user} not found"))
            }
            other => not_found(other, &group),
        })?;
    policy_changed(state, applied.policy_version);
    Ok(())
}

pub(crate) async fn group_list(state: &State, who: &Authenticated) -> Result<Vec<DirectoryGroup>, ApiError> {
    require(state, who, Permission::ManageDirectory).await?;
    Ok(state
        .store
        .directory_groups()
        .await?
        .into_iter()
        .map(|g| DirectoryGroup {
            name: g.name,
            members: g.members,
            created_at_unix_s: g.created_at_unix_s,
        })
        .collect())
}

/// Creates every user or none; refuses with one message listing every problem found.
pub(crate) async fn user_import(
    state: &State,
    who: &Authenticated,
    users: Vec<ImportedUser>,
) -> Result<Vec<IssuedActivationCode>, ApiError> {
    require(state, who, Permission::ManageDirectory).await?;
    require(state, who, Permission::ManageRoles).await?;
    if users.is_empty() || users.len() > IMPORT_USERS_MAX {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("an import holds 1 to {IMPORT_USERS_MAX} users"),
        ));
    }
    for imported in &users {
        crate::mail::refuse_reserved(&imported.user)?;
    }
    let existing: BTreeSet<UserName> = state
        .store
        .list_users()
        .await?
        .into_iter()
        .map(|u| u.name)
        .collect();
    let groups: BTreeSet<GroupName> = state
        .store
        .directory_groups()
        .await?
        .into_iter()
        .map(|g| g.name)
        .collect();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (index, user) in users.iter().enumerate() {
        let row = index + 1;
        if existing.contains(&user.user) {
            problems.push(format!("user {row} ({}): already exists", user.user));
        }
        if !seen.insert(user.user.clone()) {
            problems.push(format!("user {row} ({}): listed twice", user.user));
        }
        for group in &user.groups {
            if !groups.contains(group) {
                problems.push(format!(
                    "user {row} ({}): group {group} does not exist",
                    user.user
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!(
                "nothing imported; {} problem(s): {}",
                problems.len(),
                problems.join("; ")
            ),
        ));
    }
    let now = state.now();
    let mut changes = Vec::new();
    let mut issued = Vec::new();
    let mut in_groups = false;
    for user in users {
        let (code, text) = new_activation_code(state, &user.user, now);
        let mut roles = user.roles.clone();
        roles.sort();
        roles.dedup();
        changes.push(Change::CreateUser {
            user: UserRecord {
                name: user.user.clone(),
                display_name: user.display_name.clone(),
                roles,
                created_at_unix_s: now,
                disabled_at_unix_s: None,
            },
            code,
        });
        for group in user.groups {
            in_groups = true;
            changes.push(Change::SetGroupMember {
                group,
                user: user.user.clone(),
                member: true,
            });
        }
        issued.push(text);
    }
    if in_groups {
        changes.push(Change::BumpPolicyVersion);
    }
    let names = issued
        .iter()
        .map(|i| i.user.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let applied = state
        .store
        .apply(
            &changes,
            &[audit(
                state,
                Some(who),
                "user.import",
                format!("{} users", issued.len()),
                names,
            )],
        )
        .await
        .map_err(|e| not_found(e, "in import"))?;
    policy_changed(state, applied.policy_version);
    tracing::info!(admin = %who.user, users = issued.len(), "users imported");
    Ok(issued)
}

async fn existing_device(state: &State, device: &DeviceId) -> Result<DeviceRecord, ApiError> {
    state
        .store
        .device(device)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("device {device} not found")))
}

fn sign_command(state: &State, record: &CommandRecord) -> Signed<CommandBody> {
    state.org.sign(&CommandBody {
        org_id: state.org.id,
        device_id: record.device,
        command_id: record.id,
        kind: record.kind,
        issued_at_unix_s: record.issued_at_unix_s,
    })
}

pub(crate) async fn device_command(
    state: &State,
    who: &Authenticated,
    device: DeviceId,
    kind: CommandKind,
) -> Result<u64, ApiError> {
    require(state, who, Permission::CommandDevices).await?;
    let record = existing_device(state, &device).await?;
    if record.revoked_at_unix_s.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("device {device} is revoked; it can no longer receive commands"),
        ));
    }
    let now = state.now();
    let applied = state
        .store
        .apply(
            &[Change::IssueCommand {
                device,
                kind,
                issued_by: who.user.clone(),
                at_unix_s: now,
            }],
            &[audit(
                state,
                Some(who),
                match kind {
                    CommandKind::Lock => "device.lock",
                    CommandKind::Unlock => "device.unlock",
                    CommandKind::Wipe => "device.wipe",
                },
                format!("device {device}"),
                format!("user {}, device {}", record.user, record.name),
            )],
        )
        .await
        .map_err(|e| not_found(e, device))?;
    let command_id = applied.command_ids.first().copied().unwrap_or_default();
    if kind == CommandKind::Wipe {
        announce(
            state,
            Hint::WipePending {
                device,
                pending: true,
            },
        );
    }
    let command = CommandRecord {
        id: command_id,
        device,
        kind,
        issued_by: who.user.clone(),
        issued_at_unix_s: now,
        acknowledged_at_unix_s: None,
    };
    // Online devices get it now; others fetch it when they next connect.
    announce(
        state,
        Hint::Notify {
            devices: vec![device],
            event: Event::Command(sign_command(state, &command)),
        },
    );
    tracing::info!(admin = %who.user, %device, %kind, command_id, "device command issued");
    Ok(command_id)
}

/// Revokes at once: the directory first (authentication refused from now on), then open
/// sessions are closed, then the organisation proposes removing the device from every
/// group it is in. Returns the number of groups.
pub(crate) async fn revoke(
    state: &State,
    who: Option<&Authenticated>,
    device: DeviceId,
    why: &str,
) -> Result<u32, ApiError> {
    let record = existing_device(state, &device).await?;
    if record.revoked_at_unix_s.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("device {device} is already revoked"),
        ));
    }
    state
        .store
        .apply(
            &[Change::RevokeDevice {
                device,
                at_unix_s: state.now(),
            }],
            &[audit(
                state,
                who,
                "device.revoke",
                format!("device {device}"),
                format!("user {}, device {}: {why}", record.user, record.name),
            )],
        )
        .await
        .map_err(|e| not_found(e, device))?;
    announce(state, Hint::Revoked { device });
    crate::kt::log_device(state, &record.user, None).await;
    let groups = crate::delivery::propose_device_removal(state, &device).await?;
    tracing::warn!(%device, user = %record.user, groups, "device revoked");
    Ok(u32::try_from(groups).unwrap_or(u32::MAX))
}

pub(crate) async fn device_revoke(
    state: &State,
    who: &Authenticated,
    device: DeviceId,
) -> Result<u32, ApiError> {
    require(state, who, Permission::RevokeDevices).await?;
    revoke(state, Some(who), device, "revoked by an admin").await
}

pub(crate) async fn role(
    state: &State,
    who: &Authenticated,
    user: UserName,
    role: Role,
    grant: bool,
) -> Result<(), ApiError> {
    require(state, who, Permission::ManageRoles).await?;
    if role == Role::Admin && !grant {
        let admins = state
            .store
            .list_users()
            .await?
            .into_iter()
            .filter(|u| u.roles.contains(&Role::Admin))
            .collect::<Vec<_>>();
        if admins.len() == 1 && admins[0].name == user {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("{user} is the last admin; grant admin to someone else first"),
            ));
        }
    }
    let action = if grant { "role.grant" } else { "role.revoke" };
    state
        .store
        .apply(
            &[Change::SetRole {
                user: user.clone(),
                role,
                granted: grant,
            }],
            &[audit(
                state,
                Some(who),
                action,
                format!("user {user}"),
                role.as_str(),
            )],
        )
        .await
        .map_err(|e| not_found(e, &user))?;
    tracing::info!(admin = %who.user, %user, %role, grant, "role changed");
    Ok(())
}

/// Signs the chain's head if no checkpoint covers it yet.
pub(crate) async fn checkpoint(state: &State) -> Result<(), ApiError> {
    let (seq, hash) = state.store.audit_head().await?;
    if seq == 0 || !state.store.audit_checkpoints(seq - 1, seq).await?.is_empty() {
        return Ok(());
    }
    let document = state.org.sign(&CheckpointBody {
        org_id: state.org.id,
        seq,
        hash: redoubt_proto::Bytes(hash),
        at_unix_s: state.now(),
    });
    state
        .store
        .add_audit_checkpoint(seq, &document.to_bytes())
        .await?;
    Ok(())
}

pub(crate) async fn audit_list(
    state: &State,
    who: &Authenticated,
    after_seq: u64,
    limit: u32,
) -> Result<redoubt_proto::Response, ApiError> {
    require(state, who, Permission::ReadAudit).await?;
    checkpoint(state).await?;
    let entries = state
        .store
        .audit_entries(after_seq, limit.clamp(1, AUDIT_PAGE_MAX))
        .await?;
    let through = entries.last().map_or(after_seq, |e| e.seq);
    let checkpoints = state
        .store
        .audit_checkpoints(after_seq, through)
        .await?
        .iter()
        .map(|bytes| Signed::from_bytes(bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::from(StoreError::Corrupt(e.to_string())))?;
    let (last_seq, _) = state.store.audit_head().await?;
    Ok(redoubt_proto::Response::Audit {
        entries,
        checkpoints,
        last_seq,
    })
}

pub(crate) async fn policy_fetch(state: &State, who: &Authenticated) -> Result<Signed<PolicyBody>, ApiError> {
    let version = state.store.policy_version().await?;
    let (policy, _) = effective_policy(state, &who.user).await?;
    Ok(state.org.sign(&PolicyBody {
        org_id: state.org.id,
        user: who.user.clone(),
        device_id: who.device_id,
        version,
        issued_at_unix_s: state.now(),
        policy,
    }))
}

pub(crate) async fn policy_ack(state: &State, who: &mut Authenticated, version: u64) -> Result<(), ApiError> {
    let current = state.store.policy_version().await?;
    if version > current {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("policy version {version} does not exist yet (current {current})"),
        ));
    }
    state.store.acknowledge_policy(&who.device_id, version).await?;
    who.policy_acked = who.policy_acked.max(version);
    Ok(())
}

pub(crate) async fn commands_fetch(
    state: &State,
    who: &Authenticated,
) -> Result<Vec<Signed<CommandBody>>, ApiError> {
    Ok(state
        .store
        .commands(Some(&who.device_id), true)
        .await?
        .iter()
        .map(|record| sign_command(state, record))
        .collect())
}

/// The device verified the command and is about to act. A wipe also revokes the device:
/// its keys are about to be destroyed, and its groups should drop it.
pub(crate) async fn command_ack(state: &State, who: &Authenticated, command_id: u64) -> Result<(), ApiError> {
    let pending = state.store.commands(Some(&who.device_id), false).await?;
    let Some(command) = pending.iter().find(|c| c.id == command_id) else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("command {command_id} not found for this device"),
        ));
    };
    if command.acknowledged_at_unix_s.is_some() {
        return Ok(());
    }
    let action = match command.kind {
        CommandKind::Lock => "device.lock.acknowledged",
        CommandKind::Unlock => "device.unlock.acknowledged",
        CommandKind::Wipe => "device.wipe.acknowledged",
    };
    state
        .store
        .apply(
            &[Change::AcknowledgeCommand {
                device: who.device_id,
                command_id,
                at_unix_s: state.now(),
            }],
            &[audit(
                state,
                Some(who),
                action,
                format!("device {}", who.device_id),
                format!("command {command_id} issued by {}", command.issued_by),
            )],
        )
        .await?;
    tracing::info!(device_id = %who.device_id, command_id, kind = %command.kind, "command acknowledged");
    if command.kind == CommandKind::Wipe {
        revoke(state, None, who.device_id, "wiped on command").await?;
    }
    Ok(())
}

pub(crate) async fn device_approve(
    state: &State,
    who: &Authenticated,
    device: DeviceId,
    approval: Signed<DeviceApproval>,
) -> Result<(), ApiError> {
    let record = existing_device(state, &device).await?;
    if record.user != who.user {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "a device can only approve devices of its own user",
        ));
    }
    if record.revoked_at_unix_s.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("device {device} is revoked"),
        ));
    }
    if record.approved_at_unix_s.is_some() {
        return Ok(());
    }
    // The approval is logged with the device: it must be this device's own, signed with its
    // key, naming exactly that certificate, so that the user's other devices can check it.
    let approver = existing_device(state, &who.device_id).await?;
    let refused = |why: &str| ApiError::new(ErrorCode::InvalidArgument, format!("approval refused: {why}"));
    let key = ed25519_dalek::VerifyingKey::from_bytes(&approver.public_key.0)
        .map_err(|_| refused("this device's key is malformed"))?;
    let body = approval
        .verify(&key)
        .map_err(|_| refused("it is not signed by this device's key"))?;
    if body.org_id != state.org.id
        || body.user != who.user
        || body.approver != who.device_id
        || body.certificate_hash.0 != certificate_hash(&record.certificate)
    {
        return Err(refused(
            "it does not name this device and the approved device's certificate",
        ));
    }
    state
        .store
        .apply(
            &[Change::ApproveDevice {
                device,
                at_unix_s: state.now(),
                approval: approval.to_bytes(),
            }],
            &[audit(
                state,
                Some(who),
                "device.approve",
                format!("device {device}"),
                format!("user {}, device {}", record.user, record.name),
            )],
        )
        .await?;
    crate::kt::log_device(state, &record.user, Some(&record.certificate)).await;
    Ok(())
}

/// Summaries of `devices`, with each one's remote commands.
pub(crate) async fn summarise(
    state: &State,
    devices: Vec<DeviceRecord>,
) -> Result<Vec<DeviceSummary>, ApiError> {
    let mut commands: HashMap<DeviceId, Vec<CommandSummary>> = HashMap::new();
    let all = if devices.len() == 1 {
        state.store.commands(Some(&devices[0].id), false).await?
    } else {
        state.store.commands(None, false).await?
    };
    let users: std::collections::BTreeSet<&UserName> = devices.iter().map(|d| &d.user).collect();
    let only_user = if users.len() == 1 {
        users.first().copied()
    } else {
        None
    };
    let mut history: HashMap<DeviceId, redoubt_proto::HistoryStatus> = state
        .store
        .history_records(only_user)
        .await?
        .into_iter()
        .map(|r| {
            let status = redoubt_proto::HistoryStatus {
                state: r.state,
                source: r.source,
                sent_at_unix_s: r.sent_at_unix_s,
                received_at_unix_s: r.received_at_unix_s,
                messages: r.messages,
            };
            (r.device, status)
        })
        .collect();
    for command in all {
        commands.entry(command.device).or_default().push(CommandSummary {
            command_id: command.id,
            kind: command.kind,
            issued_by: command.issued_by,
            issued_at_unix_s: command.issued_at_unix_s,
            acknowledged_at_unix_s: command.acknowledged_at_unix_s,
        });
    }
    Ok(devices
        .into_iter()
        .map(|d| DeviceSummary {
            commands: commands.remove(&d.id).unwrap_or_default(),
            history: history.remove(&d.id),
            device_id: d.id,
            user: d.user,
            name: d.name,
            public_key: d.public_key,
            certificate: d.certificate,
            certificate_serial: d.certificate_serial,
            certificate_not_after_unix_s: d.certificate_not_after_unix_s,
            created_at_unix_s: d.created_at_unix_s,
            // A time not yet written is newer than the stored one.
            last_seen_at_unix_s: state.pending.last_seen.get(&d.id).max(d.last_seen_at_unix_s),
            revoked_at_unix_s: d.revoked_at_unix_s,
            approved: d.approved_at_unix_s.is_some(),
            policy_version_acked: d.policy_version_acked,
        })
        .collect())
}

pub(crate) async fn own_devices(state: &State, who: &Authenticated) -> Result<Vec<DeviceSummary>, ApiError> {
    let devices = state.store.list_devices(Some(&who.user)).await?;
    summarise(state, devices).await
}
