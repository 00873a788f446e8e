//! The organisation's directory: the organisation, users, activation codes and devices.
//! (SQLite keeps these in its `lib.rs`; here they have a file of their own.)

use redoubt_proto::{ActivationCodeId, Bytes, DeviceId, DeviceName, DisplayName, OrgId, Role, UserName};
use redoubt_store::{
    ActivationCodeRecord, ActivationCodeState, AuditEvent, DeviceRecord, OrgRecord, RedeemError, Result,
    StoreError, UserRecord,
};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use crate::{
    PgStore, backend_error, corrupt, fixed, from_db, get, insert_error, management, to_db, unsigned,
    user_name,
};

fn state_text(state: ActivationCodeState) -> &'static str {
    match state {
        ActivationCodeState::Active => "active",
        ActivationCodeState::Used => "used",
        ActivationCodeState::Voided => "voided",
    }
}

fn parse_state(text: &str) -> Result<ActivationCodeState> {
    match text {
        "active" => Ok(ActivationCodeState::Active),
        "used" => Ok(ActivationCodeState::Used),
        "voided" => Ok(ActivationCodeState::Voided),
        _ => Err(corrupt("activation code state")),
    }
}

/// An activation code row's columns, as a literal for `concat!`.
macro_rules! code_columns {
    () => {
        "id, user_name, secret_hash, created_at, expires_at, failed_attempts, state, device_id"
    };
}

/// A device row's columns, as a literal for `concat!`.
macro_rules! device_columns {
    () => {
        "id, user_name, name, public_key, certificate, certificate_serial, certificate_not_after, \
         created_at, last_seen_at, revoked_at, approved_at, policy_version_acked, approval"
    };
}

/// Users with their roles (an array, possibly empty), as a literal for `concat!`.
macro_rules! select_users {
    () => {
        "SELECT u.name, u.display_name, u.created_at, u.disabled_at,
                ARRAY(SELECT r.role FROM user_roles r WHERE r.user_name = u.name) AS roles
         FROM users u"
    };
}

fn code_from_row(row: &PgRow) -> Result<ActivationCodeRecord> {
    let device_id = crate::optional_fixed::<16>(row, "device_id")?.map(DeviceId::from);
    Ok(ActivationCodeRecord {
        id: ActivationCodeId::from(fixed::<8>(row, "id")?),
        user: user_name(row, "user_name")?,
        secret_hash: fixed::<32>(row, "secret_hash")?,
        created_at_unix_s: get(row, "created_at")?,
        expires_at_unix_s: get(row, "expires_at")?,
        failed_attempts: u32::try_from(get::<i64>(row, "failed_attempts")?)
            .map_err(|_| corrupt("failed attempts"))?,
        state: parse_state(&get::<String>(row, "state")?)?,
        device_id,
    })
}

fn device_from_row(row: &PgRow) -> Result<DeviceRecord> {
    Ok(DeviceRecord {
        id: DeviceId::from(fixed::<16>(row, "id")?),
        user: user_name(row, "user_name")?,
        name: DeviceName::parse(&get::<String>(row, "name")?).map_err(|_| corrupt("device name"))?,
        public_key: Bytes(fixed::<32>(row, "public_key")?),
        certificate: get(row, "certificate")?,
        certificate_serial: unsigned(row, "certificate_serial")?,
        certificate_not_after_unix_s: get(row, "certificate_not_after")?,
        created_at_unix_s: get(row, "created_at")?,
        last_seen_at_unix_s: get(row, "last_seen_at")?,
        revoked_at_unix_s: get(row, "revoked_at")?,
        approved_at_unix_s: get(row, "approved_at")?,
        policy_version_acked: unsigned(row, "policy_version_acked")?,
        approval: get(row, "approval")?,
    })
}

fn user_from_row(row: &PgRow) -> Result<UserRecord> {
    let display_name: Option<String> = get(row, "display_name")?;
    let mut roles = get::<Vec<String>>(row, "roles")?
        .iter()
        .map(|name| Role::parse(name).ok_or_else(|| corrupt("role")))
        .collect::<Result<Vec<_>>>()?;
    roles.sort();
    roles.dedup();
    Ok(UserRecord {
        name: user_name(row, "name")?,
        display_name: display_name
            .map(|d| DisplayName::parse(&d))
            .transpose()
            .map_err(|_| corrupt("display name"))?,
        roles,
        created_at_unix_s: get(row, "created_at")?,
        disabled_at_unix_s: get(row, "disabled_at")?,
    })
}

pub(crate) async fn insert_user(conn: &mut PgConnection, user: &UserRecord) -> Result<()> {
    sqlx::query("INSERT INTO users (name, display_name, created_at, disabled_at) VALUES ($1, $2, $3, $4)")
        .bind(user.name.as_str())
        .bind(user.display_name.as_ref().map(DisplayName::as_str))
        .bind(user.created_at_unix_s)
        .bind(user.disabled_at_unix_s)
        .execute(&mut *conn)
        .await
        .map_err(|e| insert_error(e, "user", "user"))?;
    let roles: Vec<&str> = user.roles.iter().map(|role| role.as_str()).collect();
    sqlx::query(
        "INSERT INTO user_roles (user_name, role) SELECT $1, role FROM unnest($2::text[]) AS role
         ON CONFLICT DO NOTHING",
    )
    .bind(user.name.as_str())
    .bind(roles)
    .execute(&mut *conn)
    .await
    .map_err(backend_error)?;
    Ok(())
}

pub(crate) async fn insert_code(conn: &mut PgConnection, code: &ActivationCodeRecord) -> Result<()> {
    // The row lock orders this against disabling the user, which voids their codes.
    let disabled: Option<Option<i64>> =
        sqlx::query_scalar("SELECT disabled_at FROM users WHERE name = $1 FOR SHARE")
            .bind(code.user.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend_error)?;
    if disabled.flatten().is_some() {
        return Err(StoreError::Disabled("user"));
    }
    sqlx::query(concat!(
        "INSERT INTO activation_codes (",
        code_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    ))
    .bind(code.id.as_bytes())
    .bind(code.user.as_str())
    .bind(code.secret_hash)
    .bind(code.created_at_unix_s)
    .bind(code.expires_at_unix_s)
    .bind(i64::from(code.failed_attempts))
    .bind(state_text(code.state))
    .bind(code.device_id.as_ref().map(DeviceId::as_bytes))
    .execute(conn)
    .await
    .map_err(|e| insert_error(e, "activation code", "user"))?;
    Ok(())
}

async fn insert_device(conn: &mut PgConnection, device: &DeviceRecord) -> Result<()> {
    sqlx::query(concat!(
        "INSERT INTO devices (",
        device_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    ))
    .bind(device.id.as_bytes())
    .bind(device.user.as_str())
    .bind(device.name.as_str())
    .bind(device.public_key.0)
    .bind(device.certificate.as_slice())
    .bind(to_db(device.certificate_serial, "certificate serial")?)
    .bind(device.certificate_not_after_unix_s)
    .bind(device.created_at_unix_s)
    .bind(device.last_seen_at_unix_s)
    .bind(device.revoked_at_unix_s)
    .bind(device.approved_at_unix_s)
    .bind(to_db(device.policy_version_acked, "policy version")?)
    .bind(device.approval.as_deref())
    .execute(conn)
    .await
    .map_err(|e| insert_error(e, "device", "user"))?;
    Ok(())
}

async fn code_by_id(conn: &mut PgConnection, id: &ActivationCodeId) -> Result<Option<ActivationCodeRecord>> {
    sqlx::query(concat!(
        "SELECT ",
        code_columns!(),
        " FROM activation_codes WHERE id = $1"
    ))
    .bind(id.as_bytes())
    .fetch_optional(conn)
    .await
    .map_err(backend_error)?
    .as_ref()
    .map(code_from_row)
    .transpose()
}

impl PgStore {
    pub(crate) async fn org_impl(&self) -> Result<Option<OrgRecord>> {
        let row = sqlx::query("SELECT org_id, created_at FROM org")
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?;
        row.map(|row| {
            Ok(OrgRecord {
                org_id: OrgId::from(fixed::<16>(&row, "org_id")?),
                created_at_unix_s: get(&row, "created_at")?,
            })
        })
        .transpose()
    }

    pub(crate) async fn init_org_impl(&self, org: &OrgRecord) -> Result<()> {
        sqlx::query("INSERT INTO org (singleton, org_id, created_at) VALUES (TRUE, $1, $2)")
            .bind(org.org_id.as_bytes())
            .bind(org.created_at_unix_s)
            .execute(&self.pool)
            .await
            .map_err(|e| insert_error(e, "organisation", "organisation"))?;
        Ok(())
    }

    pub(crate) async fn create_user_impl(
        &self,
        user: &UserRecord,
        code: &ActivationCodeRecord,
    ) -> Result<()> {
        transaction!(self, StoreError, |tx| {
            insert_user(&mut tx, user).await?;
            insert_code(&mut tx, code).await?;
        })
    }

    pub(crate) async fn user_impl(&self, name: &UserName) -> Result<Option<UserRecord>> {
        sqlx::query(concat!(select_users!(), " WHERE u.name = $1"))
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    pub(crate) async fn list_users_impl(&self) -> Result<Vec<UserRecord>> {
        sqlx::query(concat!(select_users!(), " ORDER BY u.name"))
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?
            .iter()
            .map(user_from_row)
            .collect()
    }

    pub(crate) async fn create_activation_code_impl(&self, code: &ActivationCodeRecord) -> Result<()> {
        // The user's row lock (taken by the disabled check) holds until the insert commits.
        let mut tx = self.pool.begin().await.map_err(backend_error)?;
        insert_code(&mut tx, code).await?;
        tx.commit().await.map_err(backend_error)
    }

    pub(crate) async fn activation_code_impl(
        &self,
        id: &ActivationCodeId,
    ) -> Result<Option<ActivationCodeRecord>> {
        let mut conn = self.pool.acquire().await.map_err(backend_error)?;
        code_by_id(&mut conn, id).await
    }

    pub(crate) async fn record_failed_activation_impl(
        &self,
        id: &ActivationCodeId,
        attempts_max: u32,
        audit: &AuditEvent,
    ) -> Result<ActivationCodeRecord> {
        transaction!(self, StoreError, |tx| {
            // The update locks the code's row: concurrent failures count one by one.
            sqlx::query(
                "UPDATE activation_codes
                 SET failed_attempts = failed_attempts + 1,
                     state = CASE WHEN failed_attempts + 1 >= $1 THEN 'voided' ELSE state END
                 WHERE id = $2 AND state = 'active'",
            )
            .bind(i64::from(attempts_max))
            .bind(id.as_bytes())
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
            let record = code_by_id(&mut tx, id)
                .await?
                .ok_or(StoreError::NotFound("activation code"))?;
            management::append_audit(&mut tx, audit).await?;
            record
        })
    }

    pub(crate) async fn redeem_activation_code_impl(
        &self,
        id: &ActivationCodeId,
        now_unix_s: i64,
        device: &DeviceRecord,
        audit: &AuditEvent,
    ) -> Result<(), RedeemError> {
        transaction!(self, RedeemError, |tx| {
            // The code's row lock makes concurrent redemptions of one code, on any node,
            // take turns: the first marks it used, the others then find it used.
            let row = sqlx::query("SELECT state, expires_at FROM activation_codes WHERE id = $1 FOR UPDATE")
                .bind(id.as_bytes())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend_error)?
                .ok_or(RedeemError::Unknown)?;
            match parse_state(&get::<String>(&row, "state")?)? {
                ActivationCodeState::Used => return Err(RedeemError::Used),
                ActivationCodeState::Voided => return Err(RedeemError::Voided),
                ActivationCodeState::Active => {}
            }
            if now_unix_s >= get::<i64>(&row, "expires_at")? {
                return Err(RedeemError::Expired);
            }
            // The user's row lock makes the user's enrolments take turns, so that of two
            // devices enrolling at once the second sees the first and waits for history.
            // (NO KEY: rows referring to the user, such as its other codes, may still be
            // inserted meanwhile.)
            sqlx::query("SELECT 1 FROM users WHERE name = $1 FOR NO KEY UPDATE")
                .bind(device.user.as_str())
                .execute(&mut *tx)
                .await
                .map_err(backend_error)?;
            insert_device(&mut tx, device).await?;
            sqlx::query(
                "INSERT INTO history_transfers (device_id, user_name, state)
                 SELECT $1, $2, 'waiting' WHERE EXISTS (
                     SELECT 1 FROM devices WHERE user_name = $2 AND id <> $1 AND revoked_at IS NULL)",
            )
            .bind(device.id.as_bytes())
            .bind(device.user.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
            sqlx::query("UPDATE activation_codes SET state = 'used', device_id = $1 WHERE id = $2")
                .bind(device.id.as_bytes())
                .bind(id.as_bytes())
                .execute(&mut *tx)
                .await
                .map_err(backend_error)?;
            management::append_audit(&mut tx, audit).await?;
        })
    }

    pub(crate) async fn next_certificate_serial_impl(&self) -> Result<u64> {
        let value: i64 = sqlx::query_scalar("SELECT nextval('certificate_serials')")
            .fetch_one(&self.pool)
            .await
            .map_err(backend_error)?;
        from_db(value, "certificate serial")
    }

    pub(crate) async fn device_impl(&self, id: &DeviceId) -> Result<Option<DeviceRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices WHERE id = $1"
        ))
        .bind(id.as_bytes())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend_error)?
        .as_ref()
        .map(device_from_row)
        .transpose()
    }

    pub(crate) async fn list_devices_impl(&self, user: Option<&UserName>) -> Result<Vec<DeviceRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices WHERE $1::text IS NULL OR user_name = $1 ORDER BY user_name, created_at, id"
        ))
        .bind(user.map(UserName::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?
        .iter()
        .map(device_from_row)
        .collect()
    }

    pub(crate) async fn record_last_seen_impl(&self, seen: &[(DeviceId, i64)]) -> Result<()> {
        // One time per device, its latest. The rows are locked in id order first, the
        // order every transaction locking several devices follows.
        let mut latest: Vec<(DeviceId, i64)> = seen.to_vec();
        latest.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()).then(b.1.cmp(&a.1)));
        latest.dedup_by_key(|(id, _)| *id);
        let ids: Vec<[u8; 16]> = latest.iter().map(|(id, _)| *id.as_bytes()).collect();
        let times: Vec<i64> = latest.iter().map(|(_, at)| *at).collect();
        transaction!(self, StoreError, |tx| {
            sqlx::query("SELECT 1 FROM devices WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
                .bind(&ids)
                .execute(&mut *tx)
                .await
                .map_err(backend_error)?;
            sqlx::query(
                "UPDATE devices d SET last_seen_at = s.at
                 FROM unnest($1::bytea[], $2::bigint[]) AS s (id, at)
                 WHERE d.id = s.id AND (d.last_seen_at IS NULL OR d.last_seen_at < s.at)",
            )
            .bind(&ids)
            .bind(&times)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        })
    }
}
