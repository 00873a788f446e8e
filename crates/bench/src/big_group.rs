//! MLS operations in large groups: create, join, add one, remove one, update — the
//! client's time and message sizes, and the server's time (and CPU) to accept each commit.

use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use mls_rs::MlsMessage;
use redoubt_mls::RedoubtIdentityProvider;

use crate::device::{Device, Org};
use crate::messaging::{create_group, submit};
use crate::target::Meter;
use crate::wire::FRAME_BYTES_MAX;

/// One operation's figures.
#[derive(Debug, Default, Clone, Copy)]
pub struct Op {
    pub client_s: f64,
    pub commit_bytes: usize,
    pub welcome_bytes: usize,
    /// Submission to acknowledgement, as the client sees it.
    pub server_s: f64,
    /// Server CPU time spent meanwhile.
    pub server_cpu_s: f64,
    /// Applying the accepted commit to the client's own state.
    pub apply_s: f64,
}

#[derive(Debug, Default)]
pub struct Row {
    pub key_packages_s: f64,
    pub create: Op,
    pub join_s: f64,
    pub add: Vec<Op>,
    pub remove: Vec<Op>,
    pub update: Vec<Op>,
}

/// The median of each field over repeated operations.
pub fn median(ops: &[Op]) -> Op {
    let mid = |f: &dyn Fn(&Op) -> f64| {
        let mut v: Vec<f64> = ops.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    Op {
        client_s: mid(&|o| o.client_s),
        commit_bytes: mid(&|o| o.commit_bytes as f64) as usize,
        welcome_bytes: mid(&|o| o.welcome_bytes as f64) as usize,
        server_s: mid(&|o| o.server_s),
        server_cpu_s: mid(&|o| o.server_cpu_s),
        apply_s: mid(&|o| o.apply_s),
    }
}

/// Builds a group of `size` member devices from `devices[0..size]`, then adds, removes
/// and updates with `extra`, `repeat` times.
pub async fn run_size(
    org: &Org,
    devices: &[Device],
    extra: &Device,
    size: usize,
    repeat: usize,
    meter: &Meter,
    frame_bytes_max: usize,
) -> Result<Row> {
    if size < 2 || devices.len() < size {
        bail!("a group of {size} needs {size} devices");
    }
    let identity = RedoubtIdentityProvider::new(org.org_key, org.org_id);
    let (mut conn, _) = devices[0].authenticate(org, None).await?;
    let (group_id, mut group) = create_group(org, &devices[0], &mut conn).await?;
    let mut row = Row::default();

    let started = Instant::now();
    let packages = devices[1..size]
        .iter()
        .map(Device::key_package)
        .collect::<Result<Vec<MlsMessage>>>()?;
    row.key_packages_s = started.elapsed().as_secs_f64();

    // Create: one commit adding everyone, as the device library does.
    let started = Instant::now();
    let mut builder = group.commit_builder();
    for package in packages {
        builder = builder.add_member(package)?;
    }
    let output = builder.build()?;
    row.create.client_s = started.elapsed().as_secs_f64();
    let commit = output.commit_message.to_bytes()?;
    let welcome = output
        .welcome_messages
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("no Welcome"))?;
    row.create.commit_bytes = commit.len();
    row.create.welcome_bytes = welcome.to_bytes()?.len();
    if commit.len() + 200 > frame_bytes_max.min(FRAME_BYTES_MAX) {
        bail!(
            "the creating commit is {} bytes; the server accepts frames up to {frame_bytes_max} \
             (raise limits.frame_bytes_max)",
            commit.len()
        );
    }
    // The Welcome is not submitted: the server stores one copy per added device (members
    // × the Welcome's size, which carries the whole tree). Its size is reported.
    let (server_s, server_cpu_s) = timed_submit(&mut conn, meter, group_id, commit, None)
        .await
        .context("submitting the creating commit")?;
    row.create.server_s = server_s;
    row.create.server_cpu_s = server_cpu_s;
    let started = Instant::now();
    group.apply_pending_commit()?;
    row.create.apply_s = started.elapsed().as_secs_f64();

    // Join: a new member processes the Welcome (with the tree in it).
    let started = Instant::now();
    let joined = devices[1].mls.join_group(None, &welcome, None)?;
    row.join_s = started.elapsed().as_secs_f64();
    drop(joined);

    for _ in 0..repeat {
        // Add one device.
        let package = extra.key_package()?;
        let started = Instant::now();
        let output = group.commit_builder().add_member(package)?.build()?;
        let client_s = started.elapsed().as_secs_f64();
        let commit = output.commit_message.to_bytes()?;
        let welcome = output
            .welcome_messages
            .first()
            .map(|w| w.to_bytes())
            .transpose()?;
        let mut op = Op {
            client_s,
            commit_bytes: commit.len(),
            welcome_bytes: welcome.as_ref().map_or(0, Vec::len),
            ..Op::default()
        };
        (op.server_s, op.server_cpu_s) = timed_submit(&mut conn, meter, group_id, commit, welcome).await?;
        let started = Instant::now();
        group.apply_pending_commit()?;
        op.apply_s = started.elapsed().as_secs_f64();
        row.add.push(op);

        // Remove it again.
        let index = group
            .roster()
            .members()
            .iter()
            .find(|m| identity.device_id(&m.signing_identity).ok() == Some(extra.device_id))
            .map(|m| m.index)
            .ok_or_else(|| anyhow!("the added device is not in the roster"))?;
        let started = Instant::now();
        let output = group.commit_builder().remove_member(index)?.build()?;
        let client_s = started.elapsed().as_secs_f64();
        let commit = output.commit_message.to_bytes()?;
        let mut op = Op {
            client_s,
            commit_bytes: commit.len(),
            ..Op::default()
        };
        (op.server_s, op.server_cpu_s) = timed_submit(&mut conn, meter, group_id, commit, None).await?;
        let started = Instant::now();
        group.apply_pending_commit()?;
        op.apply_s = started.elapsed().as_secs_f64();
        row.remove.push(op);

        // Update: an empty commit with a fresh path (new keys for the committer).
        let started = Instant::now();
        let output = group.commit_builder().build()?;
        let client_s = started.elapsed().as_secs_f64();
        let commit = output.commit_message.to_bytes()?;
        let mut op = Op {
            client_s,
            commit_bytes: commit.len(),
            ..Op::default()
        };
        (op.server_s, op.server_cpu_s) = timed_submit(&mut conn, meter, group_id, commit, None).await?;
        let started = Instant::now();
        group.apply_pending_commit()?;
        op.apply_s = started.elapsed().as_secs_f64();
        row.update.push(op);
    }
    conn.close().await;
    Ok(row)
}

async fn timed_submit(
    conn: &mut crate::wire::Conn,
    meter: &Meter,
    group_id: redoubt_proto::GroupId,
    commit: Vec<u8>,
    welcome: Option<Vec<u8>>,
) -> Result<(f64, f64)> {
    let cpu = meter.read().cpu_s;
    let started = Instant::now();
    submit(conn, group_id, commit, welcome).await?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok((elapsed, meter.read().cpu_s - cpu))
}
