//! Requests a device sends and the responses the server returns.
//!
//! Enum variants are encoded by their position, so variants are only ever appended, never
//! reordered or removed, within one protocol version.

use serde::{Deserialize, Serialize};

use crate::{
    ActivationCodeId, ActivationSecret, AuditEntry, BlobId, CHALLENGE_BYTES, CheckpointBody, CommandBody,
    CommandKind, DavServerSettings, DeviceApproval, DeviceId, DeviceName, DirectorySettings, DirectoryStatus,
    DisplayName, GroupId, GroupName, MailServerSettings, MailSettingsView, OrgId, Policy, PolicyBody,
    PolicyScope, PolicySettings, PublicKeyBytes, Role, ScimTokenCreated, ScimTokenInfo, SettingOrigin,
    SignatureBytes, Signed, SyncReport, UserName, bytes::Bytes,
};

/// The first frame on every connection, sent by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u8,
    /// Fresh random bytes; the device signs them (with the TLS exporter) to authenticate.
    pub challenge: Bytes<CHALLENGE_BYTES>,
    pub server_time_unix_s: i64,
    /// Largest frame the server accepts, in bytes.
    pub frame_bytes_max: u32,
    /// The public addresses of the organisation's server nodes that are up (this one
    /// included; one for a single server). A device keeps them and, when its server is
    /// unreachable, connects to another: every node has the same pinned certificate.
    pub nodes: Vec<crate::ServerAddress>,
}

/// Activate a new device with a one-time activation code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub code_id: ActivationCodeId,
    pub secret: ActivationSecret,
    /// The key the device made for itself; its private half never leaves the device.
    pub device_public_key: PublicKeyBytes,
    pub device_name: DeviceName,
    /// The device key's signature over [`crate::enroll_transcript`], proving possession.
    pub signature: SignatureBytes,
}

/// Prove possession of an enrolled device's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticateRequest {
    /// The device certificate, as returned by enrolment ([`crate::DeviceCertificate`] bytes).
    pub certificate: Vec<u8>,
    /// The device key's signature over [`crate::session_transcript`].
    pub signature: SignatureBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Unauthenticated sessions only.
    Enroll(EnrollRequest),
    /// Unauthenticated sessions only.
    Authenticate(AuthenticateRequest),
    /// Who this session is.
    WhoAmI,
    /// Admin: create a user and an activation code for their first device.
    AdminUserAdd {
        user: UserName,
        display_name: Option<DisplayName>,
    },
    /// Admin: an activation code for one more device of an existing user.
    AdminDeviceAdd { user: UserName },
    /// Admin: all users.
    AdminUserList,
    /// Admin: all devices, or one user's.
    AdminDeviceList { user: Option<UserName> },
    /// Add one-time MLS key packages to this device's pool, and optionally replace its
    /// last-resort package (used when the pool is empty, never consumed).
    KeyPackagesPublish {
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    },
    /// Claim one key package for every active device of each user, atomically per device,
    /// skipping `except_devices` (those already in the group).
    KeyPackagesClaim {
        users: Vec<UserName>,
        except_devices: Vec<DeviceId>,
    },
    /// Register a new group from its GroupInfo; the caller's device must be its only member.
    GroupCreate { group_info: Vec<u8> },
    /// Append an MLS message to a group's ordered log.
    GroupSubmit(GroupSubmit),
    /// Read a group's log after `after_seq`, at most `limit` entries.
    GroupFetch {
        group_id: GroupId,
        after_seq: u64,
        limit: u32,
    },
    /// The groups this device belongs to.
    GroupList,
    /// Welcome messages waiting for this device.
    InboxFetch,
    /// Drop handled Welcome messages from this device's inbox.
    InboxAck { ids: Vec<u64> },
    /// The active (enrolled, not revoked) devices of each user.
    UserDevices { users: Vec<UserName> },
    /// Begin uploading an encrypted attachment for a group: `bytes_total` of ciphertext in
    /// `chunk_count` chunks of [`crate::BLOB_CHUNK_BYTES`] (the last may be shorter).
    BlobUploadStart {
        group_id: GroupId,
        bytes_total: u64,
        chunk_count: u32,
    },
    /// The next chunk of an upload, in order from 0.
    BlobUploadChunk {
        blob_id: BlobId,
        index: u32,
        bytes: Vec<u8>,
    },
    /// Complete an upload once every chunk is sent; the blob becomes fetchable.
    BlobUploadFinish { blob_id: BlobId },
    /// One chunk of a stored blob; only the group's member devices may fetch.
    BlobFetch { blob_id: BlobId, index: u32 },
    /// This device has processed the group's log up to `seq`; entries every member has
    /// acknowledged may be deleted.
    GroupAck { group_id: GroupId, seq: u64 },
    /// Admin: replace the policy document at one scope (empty settings remove it).
    AdminPolicySet {
        scope: PolicyScope,
        settings: PolicySettings,
    },
    /// Admin: every policy document, and with `user` that user's effective policy.
    AdminPolicyShow { user: Option<UserName> },
    /// Admin: create a directory group.
    AdminGroupCreate { group: GroupName },
    /// Admin: add a user to a directory group (`add`), or remove them.
    AdminGroupMember {
        group: GroupName,
        user: UserName,
        add: bool,
    },
    /// Admin: directory groups and their members.
    AdminGroupList,
    /// Admin: create many users at once, all or none, each with a first activation code.
    AdminUserImport { users: Vec<ImportedUser> },
    /// Admin or helpdesk: send a signed lock, unlock or wipe command to a device.
    AdminDeviceCommand { device: DeviceId, kind: CommandKind },
    /// Admin: revoke a device at once: its sessions close, it can no longer authenticate,
    /// and the organisation proposes its removal from every group.
    AdminDeviceRevoke { device: DeviceId },
    /// Admin: grant (`grant`) or take away a role.
    AdminRole { user: UserName, role: Role, grant: bool },
    /// Admin or auditor: audit log entries after `after_seq`, at most `limit`, with the
    /// organisation-signed checkpoints among them.
    AdminAuditList { after_seq: u64, limit: u32 },
    /// This device's effective policy, signed by the organisation.
    PolicyFetch,
    /// This device has applied the policy of `version`.
    PolicyAck { version: u64 },
    /// Remote commands waiting for this device, signed by the organisation.
    CommandsFetch,
    /// This device verified the command and is about to carry it out.
    CommandAck { command_id: u64 },
    /// Approve a new device of the same user (when policy asks for approval), with this
    /// device's signed approval of its certificate (logged with it in the key directory).
    DeviceApprove {
        device: DeviceId,
        approval: Signed<DeviceApproval>,
    },
    /// The devices of this session's user.
    OwnDevices,
    /// Admin: the organisation's mail servers and the connector's service account.
    AdminMailSet(MailServerSettings),
    /// Admin: a user's mail address (an empty address returns to `user@domain`).
    AdminMailMap { user: UserName, address: String },
    /// Admin: the mail settings (never the password) and each user's mailbox status.
    AdminMailShow,
    /// Admin: the organisation's CalDAV/CardDAV server and its service account.
    AdminDavSet(DavServerSettings),
    /// This user's own mail login, used instead of the service account (when the mail
    /// server has no master user); stored by the server sealed. `None` removes it.
    MailLink { credential: Option<MailCredential> },
    /// Take on sending history to `target` through `group_id`, a group this device made for
    /// that transfer alone (it and `target`). `own`: `target` is a new device of this
    /// session's user, waiting for the user's history; one device at a time holds that job
    /// (a claim lapses after [`HISTORY_CLAIM_LEASE_S`]), and only one that is not waiting
    /// for history itself. Otherwise `target` was added to a conversation that shares its
    /// history with new members. Blobs uploaded to `group_id` are history blobs: bounded by
    /// the server's `history_blob_bytes_max` and deleted once `target` has received them.
    HistoryBegin {
        target: DeviceId,
        group_id: GroupId,
        own: bool,
    },
    /// The history for this user's new device `target` went out: `messages` messages.
    HistorySent { target: DeviceId, messages: u32 },
    /// This device has stored the history sent to it through `group_id`; the server deletes
    /// that transfer's blobs.
    HistoryReceived { group_id: GroupId },
    /// Admin: the server nodes sharing the organisation's database.
    AdminClusterList,
    /// Admin: where the organisation's LDAP / Active Directory is and how to read it.
    AdminDirectorySet(DirectorySettings),
    /// Admin: read the directory and bring users and groups in line with it (`dry_run`:
    /// only say what would change). `force` passes the disable guard; `adopt` links users
    /// and groups made by hand to the directory entries of the same name instead of
    /// reporting them.
    AdminDirectorySync { dry_run: bool, force: bool, adopt: bool },
    /// Admin: the directory settings (never the password) and the last sync.
    AdminDirectoryShow,
    /// Admin: a new SCIM bearer token, returned once (the server keeps its hash).
    AdminScimTokenCreate { name: String },
    /// Admin: the SCIM tokens (names, never the tokens).
    AdminScimTokenList,
    /// Admin: revoke a SCIM token.
    AdminScimTokenRevoke { name: String },
    /// Admin: whether users an identity provider provisions through SCIM are mailed their
    /// activation code (through the organisation's mail settings).
    AdminScimSet { email_codes: bool },
    /// Admin or helpdesk: this node's live figures (sessions, messages in the last minute,
    /// storage) for the web console's dashboard.
    AdminStats,
    /// The key directory's keys, its newest epoch head (or epoch `epoch`'s) and the newest
    /// auditor countersignatures. Allowed before authentication.
    KtHead { epoch: Option<u64> },
    /// Every logged version of `user`'s device set with akd's history proof.
    KtHistory { user: UserName },
    /// For auditors: epochs after `after_epoch` with their append-only proofs, at most
    /// `limit` (capped at [`crate::KT_AUDIT_EPOCHS_MAX`]). Allowed before authentication;
    /// it carries no user names.
    KtAudit { after_epoch: u64, limit: u32 },
    /// An auditor's countersignature of an epoch head; taken only from keys the
    /// organisation's policy names in `kt_auditor_keys`. Allowed before authentication.
    KtAuditorSign(Signed<crate::AuditorStatement>),
}

impl Request {
    /// The request's type as a fixed `snake_case` name, for metrics and logs: it carries
    /// nothing of the request's content.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Enroll(_) => "enroll",
            Request::Authenticate(_) => "authenticate",
            Request::WhoAmI => "who_am_i",
            Request::AdminUserAdd { .. } => "admin_user_add",
            Request::AdminDeviceAdd { .. } => "admin_device_add",
            Request::AdminUserList => "admin_user_list",
            Request::AdminDeviceList { .. } => "admin_device_list",
            Request::KeyPackagesPublish { .. } => "key_packages_publish",
            Request::KeyPackagesClaim { .. } => "key_packages_claim",
            Request::GroupCreate { .. } => "group_create",
            Request::GroupSubmit(_) => "group_submit",
            Request::GroupFetch { .. } => "group_fetch",
            Request::GroupList => "group_list",
            Request::InboxFetch => "inbox_fetch",
            Request::InboxAck { .. } => "inbox_ack",
            Request::UserDevices { .. } => "user_devices",
            Request::BlobUploadStart { .. } => "blob_upload_start",
            Request::BlobUploadChunk { .. } => "blob_upload_chunk",
            Request::BlobUploadFinish { .. } => "blob_upload_finish",
            Request::BlobFetch { .. } => "blob_fetch",
            Request::GroupAck { .. } => "group_ack",
            Request::AdminPolicySet { .. } => "admin_policy_set",
            Request::AdminPolicyShow { .. } => "admin_policy_show",
            Request::AdminGroupCreate { .. } => "admin_group_create",
            Request::AdminGroupMember { .. } => "admin_group_member",
            Request::AdminGroupList => "admin_group_list",
            Request::AdminUserImport { .. } => "admin_user_import",
            Request::AdminDeviceCommand { .. } => "admin_device_command",
            Request::AdminDeviceRevoke { .. } => "admin_device_revoke",
            Request::AdminRole { .. } => "admin_role",
            Request::AdminAuditList { .. } => "admin_audit_list",
            Request::PolicyFetch => "policy_fetch",
            Request::PolicyAck { .. } => "policy_ack",
            Request::CommandsFetch => "commands_fetch",
            Request::CommandAck { .. } => "command_ack",
            Request::DeviceApprove { .. } => "device_approve",
            Request::OwnDevices => "own_devices",
            Request::AdminMailSet(_) => "admin_mail_set",
            Request::AdminMailMap { .. } => "admin_mail_map",
            Request::AdminMailShow => "admin_mail_show",
            Request::AdminDavSet(_) => "admin_dav_set",
            Request::MailLink { .. } => "mail_link",
            Request::HistoryBegin { .. } => "history_begin",
            Request::HistorySent { .. } => "history_sent",
            Request::HistoryReceived { .. } => "history_received",
            Request::AdminClusterList => "admin_cluster_list",
            Request::AdminDirectorySet(_) => "admin_directory_set",
            Request::AdminDirectorySync { .. } => "admin_directory_sync",
            Request::AdminDirectoryShow => "admin_directory_show",
            Request::AdminScimTokenCreate { .. } => "admin_scim_token_create",
            Request::AdminScimTokenList => "admin_scim_token_list",
            Request::AdminScimTokenRevoke { .. } => "admin_scim_token_revoke",
            Request::AdminScimSet { .. } => "admin_scim_set",
            Request::AdminStats => "admin_stats",
            Request::KtHead { .. } => "kt_head",
            Request::KtHistory { .. } => "kt_history",
            Request::KtAudit { .. } => "kt_audit",
            Request::KtAuditorSign(_) => "kt_auditor_sign",
        }
    }
}

/// How long a device's claim to send a new device its history holds without the history
/// being sent: after it, another device of the user may take the job over.
pub const HISTORY_CLAIM_LEASE_S: i64 = 300;

/// A user's own login on the organisation's mail server.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailCredential {
    pub login: String,
    pub password: String,
}

impl std::fmt::Debug for MailCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailCredential")
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

impl MailCredential {
    pub fn validate(&self) -> Result<(), String> {
        if self.login.is_empty() || self.login.len() > 253 || self.login.chars().any(char::is_control) {
            return Err("the login must be 1 to 253 bytes without control characters".into());
        }
        if self.password.is_empty()
            || self.password.len() > 1024
            || self.password.contains(['\0', '\r', '\n'])
        {
            return Err("the password must be 1 to 1024 bytes on one line".into());
        }
        Ok(())
    }
}

/// One user of a bulk import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedUser {
    pub user: UserName,
    pub display_name: Option<DisplayName>,
    pub groups: Vec<GroupName>,
    pub roles: Vec<Role>,
}

/// An MLS message for a group's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSubmit {
    pub group_id: GroupId,
    /// Chosen by the device; a retry with the same id returns the first result.
    pub client_message_id: Bytes<16>,
    /// An MLS message: a PublicMessage commit or proposal, or a PrivateMessage application message.
    pub message: Vec<u8>,
    /// For a commit that adds members: the Welcome, delivered to the added devices.
    pub welcome: Option<Vec<u8>>,
}

impl Request {
    /// Whether this request is allowed before the session has authenticated.
    pub fn allowed_unauthenticated(&self) -> bool {
        matches!(
            self,
            Request::Enroll(_)
                | Request::Authenticate(_)
                | Request::KtHead { .. }
                | Request::KtAudit { .. }
                | Request::KtAuditorSign(_)
        )
    }

    /// Whether a device that has not acknowledged the current policy, or is waiting for
    /// approval or a wipe, may still make this request: it needs these to comply.
    pub fn allowed_before_compliance(&self) -> bool {
        matches!(
            self,
            Request::WhoAmI
                | Request::PolicyFetch
                | Request::PolicyAck { .. }
                | Request::CommandsFetch
                | Request::CommandAck { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    /// The new device certificate ([`crate::DeviceCertificate`] bytes).
    pub certificate: Vec<u8>,
    /// The organisation's root public key, which signed `certificate`.
    pub org_public_key: PublicKeyBytes,
    pub org_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub org_id: OrgId,
    pub org_name: String,
    pub user: UserName,
    pub display_name: Option<DisplayName>,
    pub device_id: DeviceId,
    pub device_name: DeviceName,
    /// Current roles, read from the server's directory for this session.
    pub roles: Vec<Role>,
    pub server_time_unix_s: i64,
    /// The organisation's current policy version.
    pub policy_version: u64,
    /// The version this device last acknowledged; below `policy_version`, the device must
    /// fetch and acknowledge the policy before anything else.
    pub policy_version_acked: u64,
    /// False while a new device waits for approval by another device of the user.
    pub approved: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedActivationCode {
    pub user: UserName,
    /// The text form of the [`crate::ActivationCode`], to hand to the user.
    pub code: String,
    pub expires_at_unix_s: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSummary {
    pub user: UserName,
    pub display_name: Option<DisplayName>,
    pub roles: Vec<Role>,
    pub created_at_unix_s: i64,
    /// Devices that are enrolled and not revoked.
    pub devices_active: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSummary {
    pub device_id: DeviceId,
    pub user: UserName,
    pub name: DeviceName,
    pub public_key: PublicKeyBytes,
    /// The certificate as issued (`DeviceCertificate` bytes): what an approving device
    /// checks and signs.
    pub certificate: Vec<u8>,
    pub certificate_serial: u64,
    pub certificate_not_after_unix_s: i64,
    pub created_at_unix_s: i64,
    pub last_seen_at_unix_s: Option<i64>,
    pub revoked_at_unix_s: Option<i64>,
    pub approved: bool,
    pub policy_version_acked: u64,
    /// Remote commands sent to the device, oldest first.
    pub commands: Vec<CommandSummary>,
    /// For a device enrolled while its user had others: how far the user's history has come.
    pub history: Option<HistoryStatus>,
}

/// Where a new device's history transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryState {
    /// No device of the user has taken it on yet.
    Waiting,
    /// A device of the user is preparing it.
    Sending,
    /// It went out; the new device has not confirmed it yet.
    Sent,
    /// The new device stored it; the server deleted the transfer's blobs.
    Received,
}

impl HistoryState {
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryState::Waiting => "waiting",
            HistoryState::Sending => "sending",
            HistoryState::Sent => "sent",
            HistoryState::Received => "received",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryStatus {
    pub state: HistoryState,
    /// The device that took it on (or sent it).
    pub source: Option<DeviceId>,
    pub sent_at_unix_s: Option<i64>,
    pub received_at_unix_s: Option<i64>,
    /// Messages sent (0 until sent).
    pub messages: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSummary {
    pub command_id: u64,
    pub kind: CommandKind,
    pub issued_by: UserName,
    pub issued_at_unix_s: i64,
    /// When the device acknowledged it; `None` while pending.
    pub acknowledged_at_unix_s: Option<i64>,
}

/// The policy documents an admin has written, and optionally one user's effective policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReport {
    pub version: u64,
    pub documents: Vec<(PolicyScope, PolicySettings)>,
    pub effective: Option<EffectivePolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectivePolicy {
    pub user: UserName,
    pub policy: Policy,
    pub origins: Vec<SettingOrigin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryGroup {
    pub name: GroupName,
    pub members: Vec<UserName>,
    pub created_at_unix_s: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedKeyPackage {
    pub user: UserName,
    pub device_id: DeviceId,
    pub key_package: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    pub seq: u64,
    pub sender: DeviceId,
    pub message: Vec<u8>,
    pub server_time_unix_s: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub group_id: GroupId,
    pub epoch: u64,
    pub last_seq: u64,
    /// The entry at which this device joined: it can read entries after this one.
    pub joined_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    pub id: u64,
    pub group_id: GroupId,
    pub welcome: Vec<u8>,
    /// The sequence number of the commit that added this device; read the log after it.
    pub joined_seq: u64,
    /// The group was made for a history transfer to this device (not a conversation).
    pub transfer: bool,
}

/// Something the server tells an authenticated device without being asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A group this device belongs to has entries up to `seq`.
    GroupAppended { group_id: GroupId, seq: u64 },
    /// The device's inbox has a new Welcome.
    InboxChanged,
    /// The organisation's policy changed: fetch, apply and acknowledge it.
    PolicyChanged { version: u64 },
    /// A remote command for this device: verify it, acknowledge it, carry it out.
    Command(Signed<CommandBody>),
    /// New entries of a group's log, in order, carried in the event itself so that a device
    /// keeping up needs no `GroupFetch`. They are the newest entries at the time, not
    /// necessarily all since the device's cursor: when the first is not the one after its
    /// cursor, the device fetches the gap.
    GroupEntries {
        group_id: GroupId,
        entries: Vec<GroupEntry>,
    },
    /// A new device of this session's user can now be added to conversations (it published
    /// its key packages): a full sync adds it, and sends it the history.
    DeviceReady { device: DeviceId },
    /// The key directory published epoch `epoch`: devices check their own user's history.
    KtEpoch { epoch: u64 },
}

impl Event {
    /// The group and its newest sequence number, for the events that announce new entries.
    pub fn appended(&self) -> Option<(GroupId, u64)> {
        match self {
            Event::GroupAppended { group_id, seq } => Some((*group_id, *seq)),
            Event::GroupEntries { group_id, entries } => Some((*group_id, entries.last()?.seq)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Enrolled(Enrolled),
    Authenticated(SessionInfo),
    WhoAmI(SessionInfo),
    ActivationCodeIssued(IssuedActivationCode),
    Users(Vec<UserSummary>),
    Devices(Vec<DeviceSummary>),
    KeyPackagesPublished {
        available: u32,
    },
    KeyPackages(Vec<ClaimedKeyPackage>),
    GroupCreated {
        group_id: GroupId,
    },
    Submitted {
        seq: u64,
        duplicate: bool,
    },
    GroupEntries {
        entries: Vec<GroupEntry>,
        last_seq: u64,
    },
    Groups(Vec<GroupSummary>),
    Inbox(Vec<InboxItem>),
    Done,
    UserDevices(Vec<UserDevice>),
    BlobUploadStarted {
        blob_id: BlobId,
    },
    BlobChunk {
        bytes: Vec<u8>,
        chunk_count: u32,
        bytes_total: u64,
    },
    PolicySet {
        version: u64,
    },
    PolicyReport(PolicyReport),
    DirectoryGroups(Vec<DirectoryGroup>),
    Imported(Vec<IssuedActivationCode>),
    CommandIssued {
        command_id: u64,
    },
    Revoked {
        /// Groups the organisation proposed removing the device from.
        groups: u32,
    },
    Audit {
        entries: Vec<AuditEntry>,
        checkpoints: Vec<Signed<CheckpointBody>>,
        /// The newest entry's sequence number.
        last_seq: u64,
    },
    Policy(Signed<PolicyBody>),
    Commands(Vec<Signed<CommandBody>>),
    MailSettings(MailSettingsView),
    ClusterNodes(Vec<ClusterNode>),
    DirectorySync(Box<SyncReport>),
    DirectoryStatus(Box<DirectoryStatus>),
    ScimTokenCreated(ScimTokenCreated),
    ScimTokens(Vec<ScimTokenInfo>),
    Stats(ServerStats),
    KtHead(Box<crate::KtHead>),
    KtHistory(Box<crate::KtHistoryAnswer>),
    KtAudit(Vec<crate::KtAuditEpoch>),
}

/// What `AdminStats` reports: the answering node's live figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStats {
    /// Authenticated sessions open on this node.
    pub sessions: u32,
    /// Distinct devices with a session open on this node.
    pub devices_online: u32,
    /// Messages and handshakes appended through this node in the last 60 seconds.
    pub messages_last_minute: u64,
    /// Bytes of the SQLite database with its write-ahead log; none with PostgreSQL.
    pub database_bytes: Option<u64>,
    /// Bytes of attachment and history blobs in the data folder; none when the database
    /// holds them (a cluster).
    pub blob_bytes: Option<u64>,
}

/// A server node as `AdminClusterList` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Chosen by the node when it starts.
    pub id: String,
    pub public_address: String,
    pub state: NodeState,
    /// Authenticated sessions open at its last heartbeat.
    pub sessions: u64,
    pub started_at_unix_s: i64,
    pub heartbeat_at_unix_s: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Heard from within the last 20 seconds (it beats every 5).
    Up,
    /// Not heard from for longer: stopped without saying so (killed, cut off, hung).
    Silent,
    /// Stopped cleanly.
    Stopped,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Silent => "silent",
            Self::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDevice {
    pub user: UserName,
    pub device_id: DeviceId,
}
