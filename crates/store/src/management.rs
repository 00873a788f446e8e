//! Records for device management: directory groups, policies, remote commands, audit.

use redoubt_proto::{
    CommandKind, DeviceId, DisplayName, GroupName, PolicyScope, PolicySettings, Role, UserName,
};

use crate::{ActivationCodeRecord, UserRecord};

/// Something to record in the audit log. The store numbers it and chains its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at_unix_s: i64,
    pub actor_user: Option<UserName>,
    pub actor_device: Option<DeviceId>,
    pub action: &'static str,
    pub subject: String,
    pub details: String,
}

/// One administrative change. [`crate::Store::apply`] makes a list of them, with their
/// audit entries, in one transaction: all happen and are audited, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `AlreadyExists("user")` if the name is taken.
    CreateUser {
        user: UserRecord,
        code: ActivationCodeRecord,
    },
    /// `NotFound("user")` if the user does not exist, `Disabled("user")` if they are
    /// disabled.
    CreateActivationCode(ActivationCodeRecord),
    /// Grants or takes away a role (idempotent). `NotFound("user")`.
    SetRole {
        user: UserName,
        role: Role,
        granted: bool,
    },
    /// Disables (`Some`) or enables (`None`) a user. `NotFound("user")`. Disabling, in the
    /// same transaction, revokes every device of the user not yet revoked (their ids are in
    /// [`Applied::revoked_devices`]) and voids every active activation code; while disabled
    /// no code can be issued. Disabling a disabled user keeps the first time (and revokes
    /// any device enrolled meanwhile).
    SetUserDisabled { user: UserName, at_unix_s: Option<i64> },
    /// Sets or clears a user's display name. `NotFound("user")`.
    SetDisplayName {
        user: UserName,
        display_name: Option<DisplayName>,
    },
    /// `AlreadyExists("group")`.
    CreateGroup { group: GroupName, at_unix_s: i64 },
    /// Adds or removes a member (idempotent). `NotFound("group")` / `NotFound("user")`.
    SetGroupMember {
        group: GroupName,
        user: UserName,
        member: bool,
    },
    /// Deletes a group with its memberships and its policy document. `NotFound("group")`.
    DeleteGroup { group: GroupName },
    /// Replaces the document at a scope; empty settings delete it. `NotFound("group")` /
    /// `NotFound("user")` when the scope names something that does not exist.
    SetPolicy {
        scope: PolicyScope,
        settings: PolicySettings,
        at_unix_s: i64,
    },
    /// Increments the organisation's policy version (see [`Applied::policy_version`]).
    BumpPolicyVersion,
    /// `NotFound("device")`; revoking a revoked device changes nothing.
    RevokeDevice { device: DeviceId, at_unix_s: i64 },
    /// Records a pending command; its id is in [`Applied::command_ids`]. `NotFound("device")`.
    IssueCommand {
        device: DeviceId,
        kind: CommandKind,
        issued_by: UserName,
        at_unix_s: i64,
    },
    /// Marks a pending command of `device` acknowledged. `NotFound("command")` if the device
    /// has no such command; acknowledging twice changes nothing.
    AcknowledgeCommand {
        device: DeviceId,
        command_id: u64,
        at_unix_s: i64,
    },
    /// `NotFound("device")`.
    /// Approves a device waiting for approval, keeping the approving device's signed
    /// approval (the key directory logs it with the device).
    ApproveDevice {
        device: DeviceId,
        at_unix_s: i64,
        approval: Vec<u8>,
    },
    /// Stores (`Some`) or deletes (`None`) an organisation setting: an opaque document
    /// under a key such as `mail/server` (see [`crate::Store::settings`]).
    SetSetting { key: String, value: Option<Vec<u8>> },
}

/// What [`crate::Store::apply`] produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The policy version after the changes, when one of them bumped it.
    pub policy_version: Option<u64>,
    /// Ids of the commands issued, in order.
    pub command_ids: Vec<u64>,
    /// The last audit entry written.
    pub audit_seq: u64,
    /// Devices revoked by disabling their user (`SetUserDisabled`), in order.
    pub revoked_devices: Vec<DeviceId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryGroupRecord {
    pub name: GroupName,
    /// Ordered by name.
    pub members: Vec<UserName>,
    pub created_at_unix_s: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub id: u64,
    pub device: DeviceId,
    pub kind: CommandKind,
    pub issued_by: UserName,
    pub issued_at_unix_s: i64,
    pub acknowledged_at_unix_s: Option<i64>,
}
