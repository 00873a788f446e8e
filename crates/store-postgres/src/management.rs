//! Device management tables: directory groups, policies, remote commands, settings, audit.

use redoubt_proto::{
    AUDIT_GENESIS, AuditEntry, Bytes, CommandKind, DeviceId, DisplayName, GroupName, PolicyScope,
    PolicySettings, UserName,
};
use redoubt_store::{Applied, AuditEvent, Change, CommandRecord, DirectoryGroupRecord, Result, StoreError};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use crate::directory::{insert_code, insert_user};
use crate::{PgStore, backend_error, corrupt, fixed, from_db, get, insert_error, to_db, unsigned, user_name};

fn scope_key(scope: &PolicyScope) -> (&'static str, &str) {
    match scope {
        PolicyScope::Default => ("default", ""),
        PolicyScope::Group(group) => ("group", group.as_str()),
        PolicyScope::User(user) => ("user", user.as_str()),
    }
}

fn parse_kind(text: &str) -> Result<CommandKind> {
    match text {
        "lock" => Ok(CommandKind::Lock),
        "unlock" => Ok(CommandKind::Unlock),
        "wipe" => Ok(CommandKind::Wipe),
        _ => Err(corrupt("command kind")),
    }
}

fn command_from_row(row: &PgRow) -> Result<CommandRecord> {
    Ok(CommandRecord {
        id: unsigned(row, "id")?,
        device: DeviceId::from(fixed::<16>(row, "device_id")?),
        kind: parse_kind(&get::<String>(row, "kind")?)?,
        issued_by: user_name(row, "issued_by")?,
        issued_at_unix_s: get(row, "issued_at")?,
        acknowledged_at_unix_s: get(row, "acked_at")?,
    })
}

fn audit_from_row(row: &PgRow) -> Result<AuditEntry> {
    let actor_user: Option<String> = get(row, "actor_user")?;
    Ok(AuditEntry {
        seq: unsigned(row, "seq")?,
        at_unix_s: get(row, "at")?,
        actor_user: actor_user
            .map(|u| UserName::parse(&u))
            .transpose()
            .map_err(|_| corrupt("audit actor"))?,
        actor_device: crate::optional_fixed::<16>(row, "actor_device")?.map(DeviceId::from),
        action: get(row, "action")?,
        subject: get(row, "subject")?,
        details: get(row, "details")?,
        prev_hash: Bytes(fixed::<32>(row, "prev_hash")?),
        hash: Bytes(fixed::<32>(row, "hash")?),
    })
}

/// The chain's head: the newest entry's number and hash, or 0 and the genesis hash.
fn head_from_row(row: &PgRow) -> Result<(u64, Bytes<32>)> {
    let seq = unsigned(row, "seq")?;
    let hash = if seq == 0 {
        AUDIT_GENESIS
    } else {
        Bytes(fixed::<32>(row, "hash")?)
    };
    Ok((seq, hash))
}

/// Appends one entry after the current head, inside the caller's transaction. The head's
/// row lock, taken last in the transaction and held to its commit, chains the entries of
/// every node into one, numbered in commit order.
pub(crate) async fn append_audit(conn: &mut PgConnection, event: &AuditEvent) -> Result<u64> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE singleton FOR UPDATE")
        .fetch_one(&mut *conn)
        .await
        .map_err(backend_error)?;
    let (head, prev_hash) = head_from_row(&row)?;
    let mut entry = AuditEntry {
        seq: head + 1,
        at_unix_s: event.at_unix_s,
        actor_user: event.actor_user.clone(),
        actor_device: event.actor_device,
        action: event.action.to_owned(),
        subject: event.subject.clone(),
        details: event.details.clone(),
        prev_hash,
        hash: AUDIT_GENESIS,
    };
    entry.hash = entry.compute_hash();
    let seq = to_db(entry.seq, "audit seq")?;
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor_user, actor_device, action, subject, details, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(seq)
    .bind(entry.at_unix_s)
    .bind(entry.actor_user.as_ref().map(UserName::as_str))
    .bind(entry.actor_device.as_ref().map(DeviceId::as_bytes))
    .bind(&entry.action)
    .bind(&entry.subject)
    .bind(&entry.details)
    .bind(entry.prev_hash.0)
    .bind(entry.hash.0)
    .execute(&mut *conn)
    .await
    .map_err(backend_error)?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE singleton")
        .bind(seq)
        .bind(entry.hash.0)
        .execute(&mut *conn)
        .await
        .map_err(backend_error)?;
    Ok(entry.seq)
}

async fn require(conn: &mut PgConnection, sql: &'static str, key: &str, what: &'static str) -> Result<()> {
    let found: Option<i32> = sqlx::query_scalar(sql)
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(backend_error)?;
    found.map(drop).ok_or(StoreError::NotFound(what))
}

async fn require_user(conn: &mut PgConnection, user: &UserName) -> Result<()> {
    require(conn, "SELECT 1 FROM users WHERE name = $1", user.as_str(), "user").await
}

async fn require_group(conn: &mut PgConnection, group: &GroupName) -> Result<()> {
    require(
        conn,
        "SELECT 1 FROM directory_groups WHERE name = $1",
        group.as_str(),
        "group",
    )
    .await
}

fn one_row(affected: u64, what: &'static str) -> Result<()> {
    if affected == 0 {
        Err(StoreError::NotFound(what))
    } else {
        Ok(())
    }
}

async fn apply_change(conn: &mut PgConnection, change: &Change, applied: &mut Applied) -> Result<()> {
    match change {
        Change::CreateUser { user, code } => {
            insert_user(conn, user).await?;
            insert_code(conn, code).await?;
        }
        Change::CreateActivationCode(code) => insert_code(conn, code).await?,
        Change::SetRole { user, role, granted } => {
            require_user(conn, user).await?;
            let sql = if *granted {
                "INSERT INTO user_roles (user_name, role) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM user_roles WHERE user_name = $1 AND role = $2"
            };
            sqlx::query(sql)
                .bind(user.as_str())
                .bind(role.as_str())
                .execute(conn)
                .await
                .map_err(backend_error)?;
        }
        Change::SetUserDisabled { user, at_unix_s } => {
            let sql = if at_unix_s.is_some() {
                "UPDATE users SET disabled_at = coalesce(disabled_at, $1) WHERE name = $2"
            } else {
                "UPDATE users SET disabled_at = $1 WHERE name = $2"
            };
            let result = sqlx::query(sql)
                .bind(at_unix_s)
                .bind(user.as_str())
                .execute(&mut *conn)
                .await
                .map_err(backend_error)?;
            one_row(result.rows_affected(), "user")?;
            if let Some(at) = at_unix_s {
                sqlx::query(
                    "UPDATE activation_codes SET state = 'voided' WHERE user_name = $1 AND state = 'active'",
                )
                .bind(user.as_str())
                .execute(&mut *conn)
                .await
                .map_err(backend_error)?;
                let revoked: Vec<Vec<u8>> = sqlx::query_scalar(
                    "UPDATE devices SET revoked_at = $1 WHERE user_name = $2 AND revoked_at IS NULL RETURNING id",
                )
                .bind(at)
                .bind(user.as_str())
                .fetch_all(conn)
                .await
                .map_err(backend_error)?;
                for id in revoked {
                    let id: [u8; 16] = id.try_into().map_err(|_| corrupt("device id"))?;
                    applied.revoked_devices.push(DeviceId::from(id));
                }
            }
        }
        Change::SetDisplayName { user, display_name } => {
            let result = sqlx::query("UPDATE users SET display_name = $1 WHERE name = $2")
                .bind(display_name.as_ref().map(DisplayName::as_str))
                .bind(user.as_str())
                .execute(conn)
                .await
                .map_err(backend_error)?;
            one_row(result.rows_affected(), "user")?;
        }
        Change::DeleteGroup { group } => {
            require_group(conn, group).await?;
            for sql in [
                "DELETE FROM directory_group_members WHERE group_name = $1",
                "DELETE FROM policies WHERE scope_kind = 'group' AND scope_name = $1",
                "DELETE FROM directory_groups WHERE name = $1",
            ] {
                sqlx::query(sql)
                    .bind(group.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(backend_error)?;
            }
        }
        Change::CreateGroup { group, at_unix_s } => {
            sqlx::query("INSERT INTO directory_groups (name, created_at) VALUES ($1, $2)")
                .bind(group.as_str())
                .bind(at_unix_s)
                .execute(conn)
                .await
                .map_err(|e| insert_error(e, "group", "group"))?;
        }
        Change::SetGroupMember { group, user, member } => {
            require_group(conn, group).await?;
            require_user(conn, user).await?;
            let sql = if *member {
                "INSERT INTO directory_group_members (group_name, user_name) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM directory_group_members WHERE group_name = $1 AND user_name = $2"
            };
            sqlx::query(sql)
                .bind(group.as_str())
                .bind(user.as_str())
                .execute(conn)
                .await
                .map_err(backend_error)?;
        }
        Change::SetPolicy {
            scope,
            settings,
            at_unix_s,
        } => set_policy(conn, scope, settings, *at_unix_s).await?,
        Change::BumpPolicyVersion => {
            let value: i64 = sqlx::query_scalar(
                "UPDATE counters SET value = value + 1 WHERE name = 'policy_version' RETURNING value",
            )
            .fetch_one(conn)
            .await
            .map_err(backend_error)?;
            applied.policy_version = Some(from_db(value, "policy version")?);
        }
        Change::RevokeDevice { device, at_unix_s } => {
            let result =
                sqlx::query("UPDATE devices SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2")
                    .bind(at_unix_s)
                    .bind(device.as_bytes())
                    .execute(conn)
                    .await
                    .map_err(backend_error)?;
            one_row(result.rows_affected(), "device")?;
        }
        Change::IssueCommand {
            device,
            kind,
            issued_by,
            at_unix_s,
        } => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO device_commands (device_id, kind, issued_by, issued_at) VALUES ($1, $2, $3, $4)
                 RETURNING id",
            )
            .bind(device.as_bytes())
            .bind(kind.as_str())
            .bind(issued_by.as_str())
            .bind(at_unix_s)
            .fetch_one(conn)
            .await
            .map_err(|e| insert_error(e, "command", "device"))?;
            applied.command_ids.push(from_db(id, "command id")?);
        }
        Change::AcknowledgeCommand {
            device,
            command_id,
            at_unix_s,
        } => {
            let result = sqlx::query(
                "UPDATE device_commands SET acked_at = coalesce(acked_at, $1) WHERE id = $2 AND device_id = $3",
            )
            .bind(at_unix_s)
            .bind(to_db(*command_id, "command id")?)
            .bind(device.as_bytes())
            .execute(conn)
            .await
            .map_err(backend_error)?;
            one_row(result.rows_affected(), "command")?;
        }
        Change::SetSetting { key, value } => {
            let query = match value {
                Some(value) => sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key.as_str())
                .bind(value.as_slice()),
                None => sqlx::query("DELETE FROM settings WHERE key = $1").bind(key.as_str()),
            };
            query.execute(conn).await.map_err(backend_error)?;
        }
        Change::ApproveDevice {
            device,
            at_unix_s,
            approval,
        } => {
            // The first approval stands, with its time.
            let result = sqlx::query(
                "UPDATE devices SET approval = CASE WHEN approved_at IS NULL THEN $3 ELSE approval END, \
                 approved_at = coalesce(approved_at, $1) WHERE id = $2",
            )
            .bind(at_unix_s)
            .bind(device.as_bytes())
            .bind(approval.as_slice())
            .execute(conn)
            .await
            .map_err(backend_error)?;
            one_row(result.rows_affected(), "device")?;
        }
    }
    Ok(())
}

async fn set_policy(
    conn: &mut PgConnection,
    scope: &PolicyScope,
    settings: &PolicySettings,
    at_unix_s: i64,
) -> Result<()> {
    match scope {
        PolicyScope::Default => {}
        PolicyScope::Group(group) => require_group(conn, group).await?,
        PolicyScope::User(user) => require_user(conn, user).await?,
    }
    let (kind, name) = scope_key(scope);
    if settings.is_empty() {
        sqlx::query("DELETE FROM policies WHERE scope_kind = $1 AND scope_name = $2")
            .bind(kind)
            .bind(name)
            .execute(conn)
            .await
            .map_err(backend_error)?;
    } else {
        let encoded = postcard::to_stdvec(settings).map_err(|e| StoreError::Backend(e.to_string()))?;
        sqlx::query(
            "INSERT INTO policies (scope_kind, scope_name, settings, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (scope_kind, scope_name)
             DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
        )
        .bind(kind)
        .bind(name)
        .bind(encoded)
        .bind(at_unix_s)
        .execute(conn)
        .await
        .map_err(backend_error)?;
    }
    Ok(())
}

fn parse_scope(kind: &str, name: &str) -> Result<PolicyScope> {
    match kind {
        "default" => Ok(PolicyScope::Default),
        "group" => Ok(PolicyScope::Group(
            GroupName::parse(name).map_err(|_| corrupt("policy scope"))?,
        )),
        "user" => Ok(PolicyScope::User(
            UserName::parse(name).map_err(|_| corrupt("policy scope"))?,
        )),
        _ => Err(corrupt("policy scope")),
    }
}

impl PgStore {
    pub(crate) async fn apply_impl(&self, changes: &[Change], audit: &[AuditEvent]) -> Result<Applied> {
        transaction!(self, StoreError, |tx| {
            let mut applied = Applied::default();
            for change in changes {
                apply_change(&mut tx, change, &mut applied).await?;
            }
            for event in audit {
                applied.audit_seq = append_audit(&mut tx, event).await?;
            }
            applied
        })
    }

    pub(crate) async fn policy_version_impl(&self) -> Result<u64> {
        let value: i64 = sqlx::query_scalar("SELECT value FROM counters WHERE name = 'policy_version'")
            .fetch_one(&self.pool)
            .await
            .map_err(backend_error)?;
        from_db(value, "policy version")
    }

    pub(crate) async fn settings_impl(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        // `starts_with`, not LIKE: a prefix holding '%' or '_' means itself.
        let rows = sqlx::query("SELECT key, value FROM settings WHERE starts_with(key, $1) ORDER BY key")
            .bind(prefix)
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?;
        rows.iter()
            .map(|row| Ok((get::<String>(row, "key")?, get::<Vec<u8>>(row, "value")?)))
            .collect()
    }

    pub(crate) async fn policies_impl(&self) -> Result<Vec<(PolicyScope, PolicySettings)>> {
        let rows = sqlx::query(
            "SELECT scope_kind, scope_name, settings FROM policies ORDER BY scope_kind, scope_name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?;
        rows.iter()
            .map(|row| {
                let scope = parse_scope(
                    &get::<String>(row, "scope_kind")?,
                    &get::<String>(row, "scope_name")?,
                )?;
                let bytes: Vec<u8> = get(row, "settings")?;
                let settings = postcard::from_bytes(&bytes).map_err(|_| corrupt("policy settings"))?;
                Ok((scope, settings))
            })
            .collect()
    }

    pub(crate) async fn directory_groups_impl(&self) -> Result<Vec<DirectoryGroupRecord>> {
        let rows = sqlx::query(
            "SELECT g.name, g.created_at,
                    ARRAY(SELECT m.user_name FROM directory_group_members m
                          WHERE m.group_name = g.name ORDER BY m.user_name) AS members
             FROM directory_groups g ORDER BY g.name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?;
        rows.iter()
            .map(|row| {
                Ok(DirectoryGroupRecord {
                    name: GroupName::parse(&get::<String>(row, "name")?)
                        .map_err(|_| corrupt("group name"))?,
                    members: get::<Vec<String>>(row, "members")?
                        .iter()
                        .map(|name| UserName::parse(name).map_err(|_| corrupt("group member")))
                        .collect::<Result<_>>()?,
                    created_at_unix_s: get(row, "created_at")?,
                })
            })
            .collect()
    }

    pub(crate) async fn user_groups_impl(&self, user: &UserName) -> Result<Vec<GroupName>> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT group_name FROM directory_group_members WHERE user_name = $1 ORDER BY group_name",
        )
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?;
        names
            .iter()
            .map(|n| GroupName::parse(n).map_err(|_| corrupt("group name")))
            .collect()
    }

    pub(crate) async fn acknowledge_policy_impl(&self, device: &DeviceId, version: u64) -> Result<()> {
        let result = sqlx::query(
            "UPDATE devices SET policy_version_acked = GREATEST(policy_version_acked, $1) WHERE id = $2",
        )
        .bind(to_db(version, "policy version")?)
        .bind(device.as_bytes())
        .execute(&self.pool)
        .await
        .map_err(backend_error)?;
        one_row(result.rows_affected(), "device")
    }

    pub(crate) async fn commands_impl(
        &self,
        device: Option<&DeviceId>,
        pending_only: bool,
    ) -> Result<Vec<CommandRecord>> {
        let rows = sqlx::query(
            "SELECT id, device_id, kind, issued_by, issued_at, acked_at FROM device_commands
             WHERE ($1::bytea IS NULL OR device_id = $1) AND (NOT $2 OR acked_at IS NULL)
             ORDER BY id",
        )
        .bind(device.map(DeviceId::as_bytes))
        .bind(pending_only)
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?;
        rows.iter().map(command_from_row).collect()
    }

    pub(crate) async fn audit_entries_impl(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT seq, at, actor_user, actor_device, action, subject, details, prev_hash, hash
             FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(to_db(after_seq, "audit seq")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?;
        rows.iter().map(audit_from_row).collect()
    }

    pub(crate) async fn audit_head_impl(&self) -> Result<(u64, [u8; 32])> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE singleton")
            .fetch_one(&self.pool)
            .await
            .map_err(backend_error)?;
        head_from_row(&row).map(|(seq, hash)| (seq, hash.0))
    }

    pub(crate) async fn add_audit_checkpoint_impl(&self, seq: u64, document: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, document) VALUES ($1, $2) ON CONFLICT (seq) DO NOTHING",
        )
        .bind(to_db(seq, "audit seq")?)
        .bind(document)
        .execute(&self.pool)
        .await
        .map_err(|e| insert_error(e, "checkpoint", "audit entry"))?;
        Ok(())
    }

    pub(crate) async fn audit_checkpoints_impl(
        &self,
        after_seq: u64,
        through_seq: u64,
    ) -> Result<Vec<Vec<u8>>> {
        sqlx::query_scalar("SELECT document FROM audit_checkpoints WHERE seq > $1 AND seq <= $2 ORDER BY seq")
            .bind(to_db(after_seq, "audit seq")?)
            .bind(to_db(through_seq, "audit seq")?)
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)
    }
}
