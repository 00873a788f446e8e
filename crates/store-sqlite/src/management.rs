//! Device management tables: directory groups, policies, remote commands, audit log.

use redoubt_proto::{
    AUDIT_GENESIS, AuditEntry, Bytes, CommandKind, DeviceId, DisplayName, GroupName, PolicyScope,
    PolicySettings, UserName,
};
use redoubt_store::{Applied, AuditEvent, Change, CommandRecord, DirectoryGroupRecord, Result, StoreError};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteRow;

use crate::reader::column;
use crate::{SqliteStore, backend_error, corrupt, fixed, get, insert_code, insert_error};

fn to_db(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| StoreError::Backend(format!("{what} exceeds i64")))
}

fn from_db(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| corrupt(what))
}

fn scope_key(scope: &PolicyScope) -> (&'static str, &str) {
    match scope {
        PolicyScope::Default => ("default", ""),
        PolicyScope::Group(group) => ("group", group.as_str()),
        PolicyScope::User(user) => ("user", user.as_str()),
    }
}

fn kind_text(kind: CommandKind) -> &'static str {
    kind.as_str()
}

fn parse_kind(text: &str) -> Result<CommandKind> {
    match text {
        "lock" => Ok(CommandKind::Lock),
        "unlock" => Ok(CommandKind::Unlock),
        "wipe" => Ok(CommandKind::Wipe),
        _ => Err(corrupt("command kind")),
    }
}

fn command_from_row(row: &SqliteRow) -> Result<CommandRecord> {
    Ok(CommandRecord {
        id: from_db(get(row, "id")?, "command id")?,
        device: DeviceId::from(fixed::<16>(row, "device_id")?),
        kind: parse_kind(&get::<String>(row, "kind")?)?,
        issued_by: UserName::parse(&get::<String>(row, "issued_by")?).map_err(|_| corrupt("issued_by"))?,
        issued_at_unix_s: get(row, "issued_at")?,
        acknowledged_at_unix_s: get(row, "acked_at")?,
    })
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditEntry> {
    let actor_user: Option<String> = get(row, "actor_user")?;
    let actor_device: Option<Vec<u8>> = get(row, "actor_device")?;
    Ok(AuditEntry {
        seq: from_db(get(row, "seq")?, "audit seq")?,
        at_unix_s: get(row, "at")?,
        actor_user: actor_user
            .map(|u| UserName::parse(&u))
            .transpose()
            .map_err(|_| corrupt("audit actor"))?,
        actor_device: actor_device
            .map(|d| <[u8; 16]>::try_from(d).map(DeviceId::from))
            .transpose()
            .map_err(|_| corrupt("audit actor device"))?,
        action: get(row, "action")?,
        subject: get(row, "subject")?,
        details: get(row, "details")?,
        prev_hash: Bytes(fixed::<32>(row, "prev_hash")?),
        hash: Bytes(fixed::<32>(row, "hash")?),
    })
}

async fn audit_head(conn: &mut SqliteConnection) -> Result<(u64, Bytes<32>)> {
    let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(conn)
        .await
        .map_err(backend_error)?;
    match row {
        Some(row) => Ok((
            from_db(get(&row, "seq")?, "audit seq")?,
            Bytes(fixed::<32>(&row, "hash")?),
        )),
        None => Ok((0, AUDIT_GENESIS)),
    }
}

/// Appends one entry after the current head, inside the caller's transaction.
pub(crate) async fn append_audit(conn: &mut SqliteConnection, event: &AuditEvent) -> Result<u64> {
    let (head, prev_hash) = audit_head(conn).await?;
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
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor_user, actor_device, action, subject, details, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(to_db(entry.seq, "audit seq")?)
    .bind(entry.at_unix_s)
    .bind(entry.actor_user.as_ref().map(UserName::as_str))
    .bind(entry.actor_device.as_ref().map(|d| d.as_bytes().to_vec()))
    .bind(&entry.action)
    .bind(&entry.subject)
    .bind(&entry.details)
    .bind(entry.prev_hash.as_slice())
    .bind(entry.hash.as_slice())
    .execute(conn)
    .await
    .map_err(backend_error)?;
    Ok(entry.seq)
}

async fn exists(conn: &mut SqliteConnection, sql: &'static str, key: &str) -> Result<bool> {
    let found: Option<i64> = sqlx::query_scalar(sql)
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(backend_error)?;
    Ok(found.is_some())
}

async fn require_user(conn: &mut SqliteConnection, user: &UserName) -> Result<()> {
    if exists(conn, "SELECT 1 FROM users WHERE name = ?", user.as_str()).await? {
        Ok(())
    } else {
        Err(StoreError::NotFound("user"))
    }
}

async fn require_group(conn: &mut SqliteConnection, group: &GroupName) -> Result<()> {
    if exists(
        conn,
        "SELECT 1 FROM directory_groups WHERE name = ?",
        group.as_str(),
    )
    .await?
    {
        Ok(())
    } else {
        Err(StoreError::NotFound("group"))
    }
}

fn one_row(affected: u64, what: &'static str) -> Result<()> {
    if affected == 0 {
        Err(StoreError::NotFound(what))
    } else {
        Ok(())
    }
}

async fn apply_change(conn: &mut SqliteConnection, change: &Change, applied: &mut Applied) -> Result<()> {
    match change {
        Change::CreateUser { user, code } => {
            crate::insert_user(conn, user).await?;
            insert_code(conn, code).await?;
        }
        Change::CreateActivationCode(code) => insert_code(conn, code).await?,
        Change::SetRole { user, role, granted } => {
            require_user(conn, user).await?;
            let sql = if *granted {
                "INSERT OR IGNORE INTO user_roles (user_name, role) VALUES (?, ?)"
            } else {
                "DELETE FROM user_roles WHERE user_name = ? AND role = ?"
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
                "UPDATE users SET disabled_at = coalesce(disabled_at, ?) WHERE name = ?"
            } else {
                "UPDATE users SET disabled_at = ? WHERE name = ?"
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
                    "UPDATE activation_codes SET state = 'voided' WHERE user_name = ? AND state = 'active'",
                )
                .bind(user.as_str())
                .execute(&mut *conn)
                .await
                .map_err(backend_error)?;
                let revoked: Vec<Vec<u8>> = sqlx::query_scalar(
                    "UPDATE devices SET revoked_at = ? WHERE user_name = ? AND revoked_at IS NULL RETURNING id",
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
            let result = sqlx::query("UPDATE users SET display_name = ? WHERE name = ?")
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
                "DELETE FROM directory_group_members WHERE group_name = ?",
                "DELETE FROM policies WHERE scope_kind = 'group' AND scope_name = ?",
                "DELETE FROM directory_groups WHERE name = ?",
            ] {
                sqlx::query(sql)
                    .bind(group.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(backend_error)?;
            }
        }
        Change::CreateGroup { group, at_unix_s } => {
            sqlx::query("INSERT INTO directory_groups (name, created_at) VALUES (?, ?)")
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
                "INSERT OR IGNORE INTO directory_group_members (group_name, user_name) VALUES (?, ?)"
            } else {
                "DELETE FROM directory_group_members WHERE group_name = ? AND user_name = ?"
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
        } => {
            match scope {
                PolicyScope::Default => {}
                PolicyScope::Group(group) => require_group(conn, group).await?,
                PolicyScope::User(user) => require_user(conn, user).await?,
            }
            let (kind, name) = scope_key(scope);
            if settings.is_empty() {
                sqlx::query("DELETE FROM policies WHERE scope_kind = ? AND scope_name = ?")
                    .bind(kind)
                    .bind(name)
                    .execute(conn)
                    .await
                    .map_err(backend_error)?;
            } else {
                let encoded =
                    postcard::to_stdvec(settings).map_err(|e| StoreError::Backend(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO policies (scope_kind, scope_name, settings, updated_at) VALUES (?, ?, ?, ?)
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
        }
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
            let result = sqlx::query("UPDATE devices SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?")
                .bind(at_unix_s)
                .bind(device.as_bytes().as_slice())
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
                "INSERT INTO device_commands (device_id, kind, issued_by, issued_at) VALUES (?, ?, ?, ?)
                 RETURNING id",
            )
            .bind(device.as_bytes().as_slice())
            .bind(kind_text(*kind))
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
                "UPDATE device_commands SET acked_at = coalesce(acked_at, ?) WHERE id = ? AND device_id = ?",
            )
            .bind(at_unix_s)
            .bind(to_db(*command_id, "command id")?)
            .bind(device.as_bytes().as_slice())
            .execute(conn)
            .await
            .map_err(backend_error)?;
            one_row(result.rows_affected(), "command")?;
        }
        Change::SetSetting { key, value } => {
            let query = match value {
                Some(value) => sqlx::query("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)")
                    .bind(key.as_str())
                    .bind(value.as_slice()),
                None => sqlx::query("DELETE FROM settings WHERE key = ?").bind(key.as_str()),
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
                "UPDATE devices SET approval = CASE WHEN approved_at IS NULL THEN ? ELSE approval END, \
                 approved_at = coalesce(approved_at, ?) WHERE id = ?",
            )
            .bind(approval.as_slice())
            .bind(at_unix_s)
            .bind(device.as_bytes().as_slice())
            .execute(conn)
            .await
            .map_err(backend_error)?;
            one_row(result.rows_affected(), "device")?;
        }
    }
    Ok(())
}

impl SqliteStore {
    pub(crate) async fn apply_impl(&self, changes: &[Change], audit: &[AuditEvent]) -> Result<Applied> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        let mut applied = Applied::default();
        for change in changes {
            apply_change(&mut tx, change, &mut applied).await?;
        }
        for event in audit {
            applied.audit_seq = append_audit(&mut tx, event).await?;
        }
        tx.commit().await.map_err(backend_error)?;
        Ok(applied)
    }

    pub(crate) async fn policy_version_impl(&self) -> Result<u64> {
        let value: i64 = sqlx::query_scalar("SELECT value FROM counters WHERE name = 'policy_version'")
            .fetch_one(&self.pool)
            .await
            .map_err(backend_error)?;
        from_db(value, "policy version")
    }

    pub(crate) async fn settings_impl(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        // Keys are ASCII; a prefix range avoids LIKE's wildcards.
        let end = format!("{prefix}\u{10ffff}");
        self.readers.all(
            "SELECT key, value FROM settings WHERE key >= ?1 AND key < ?2 ORDER BY key",
            [prefix, end.as_str()],
            |row| Ok((column::<String>(row, "key")?, column::<Vec<u8>>(row, "value")?)),
        )
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
                let name: String = get(row, "scope_name")?;
                let scope = match get::<String>(row, "scope_kind")?.as_str() {
                    "default" => PolicyScope::Default,
                    "group" => {
                        PolicyScope::Group(GroupName::parse(&name).map_err(|_| corrupt("policy scope"))?)
                    }
                    "user" => PolicyScope::User(UserName::parse(&name).map_err(|_| corrupt("policy scope"))?),
                    _ => return Err(corrupt("policy scope")),
                };
                let bytes: Vec<u8> = get(row, "settings")?;
                let settings = postcard::from_bytes(&bytes).map_err(|_| corrupt("policy settings"))?;
                Ok((scope, settings))
            })
            .collect()
    }

    /// One statement (one snapshot) on a reader connection: every group with its members,
    /// in group order, folded in one pass — a directory of 10,000 users in 100 groups is
    /// synced by reading this.
    pub(crate) async fn directory_groups_impl(&self) -> Result<Vec<DirectoryGroupRecord>> {
        let rows = self.readers.all(
            "SELECT g.name, g.created_at, m.user_name
             FROM directory_groups g LEFT JOIN directory_group_members m ON m.group_name = g.name
             ORDER BY g.name, m.user_name",
            [],
            |row| {
                let member: Option<String> = column(row, "user_name")?;
                Ok((
                    column::<String>(row, "name")?,
                    column::<i64>(row, "created_at")?,
                    member,
                ))
            },
        )?;
        let mut groups: Vec<DirectoryGroupRecord> = Vec::new();
        for (name, created_at, member) in rows {
            if groups.last().is_none_or(|g| g.name.as_str() != name) {
                groups.push(DirectoryGroupRecord {
                    name: GroupName::parse(&name).map_err(|_| corrupt("group name"))?,
                    members: Vec::new(),
                    created_at_unix_s: created_at,
                });
            }
            if let (Some(member), Some(group)) = (member, groups.last_mut()) {
                group
                    .members
                    .push(UserName::parse(&member).map_err(|_| corrupt("group member"))?);
            }
        }
        Ok(groups)
    }

    pub(crate) async fn user_groups_impl(&self, user: &UserName) -> Result<Vec<GroupName>> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT group_name FROM directory_group_members WHERE user_name = ? ORDER BY group_name",
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
            "UPDATE devices SET policy_version_acked = max(policy_version_acked, ?) WHERE id = ?",
        )
        .bind(to_db(version, "policy version")?)
        .bind(device.as_bytes().as_slice())
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
             WHERE (?1 IS NULL OR device_id = ?1) AND (?2 = 0 OR acked_at IS NULL)
             ORDER BY id",
        )
        .bind(device.map(|d| d.as_bytes().to_vec()))
        .bind(i64::from(pending_only))
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?;
        rows.iter().map(command_from_row).collect()
    }

    pub(crate) async fn audit_entries_impl(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT seq, at, actor_user, actor_device, action, subject, details, prev_hash, hash
             FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(to_db(after_seq, "audit seq")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?;
        rows.iter().map(audit_from_row).collect()
    }

    pub(crate) async fn audit_head_impl(&self) -> Result<(u64, [u8; 32])> {
        let mut conn = self.pool.acquire().await.map_err(backend_error)?;
        audit_head(&mut conn).await.map(|(seq, hash)| (seq, hash.0))
    }

    pub(crate) async fn add_audit_checkpoint_impl(&self, seq: u64, document: &[u8]) -> Result<()> {
        sqlx::query("INSERT OR IGNORE INTO audit_checkpoints (seq, document) VALUES (?, ?)")
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
        sqlx::query_scalar("SELECT document FROM audit_checkpoints WHERE seq > ? AND seq <= ? ORDER BY seq")
            .bind(to_db(after_seq, "audit seq")?)
            .bind(to_db(through_seq, "audit seq")?)
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)
    }
}
