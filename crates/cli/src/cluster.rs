//! `redoubt admin cluster …`: the server nodes sharing the organisation's database.

use anyhow::{Result, bail};
use clap::Subcommand;
use redoubt_client::Session;
use redoubt_proto::{ClusterNode, Request, Response};
use serde_json::json;

use crate::output::{Output, print_json, say, time};

#[derive(Debug, Subcommand)]
pub(crate) enum AdminClusterCommand {
    /// List the nodes: address, state (up, silent, stopped), sessions, last heartbeat.
    List,
}

pub(crate) async fn admin(session: &mut Session, command: AdminClusterCommand, out: &Output) -> Result<()> {
    match command {
        AdminClusterCommand::List => match session.request(Request::AdminClusterList).await? {
            Response::ClusterNodes(nodes) => print_nodes(&nodes, out),
            other => bail!("unexpected response to AdminClusterList: {other:?}"),
        },
    }
    Ok(())
}

pub(crate) fn nodes_json(nodes: &[ClusterNode]) -> serde_json::Value {
    let rows: Vec<_> = nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "public_address": n.public_address,
                "state": n.state.as_str(),
                "sessions": n.sessions,
                "started_at": time(n.started_at_unix_s),
                "heartbeat_at": time(n.heartbeat_at_unix_s),
            })
        })
        .collect();
    json!(rows)
}

fn print_nodes(nodes: &[ClusterNode], out: &Output) {
    if out.is_json() {
        print_json(&nodes_json(nodes));
        return;
    }
    say!(
        "{:<14} {:<32} {:<8} {:>9}  LAST HEARTBEAT",
        "NODE",
        "ADDRESS",
        "STATE",
        "SESSIONS"
    );
    for n in nodes {
        say!(
            "{:<14} {:<32} {:<8} {:>9}  {}",
            n.id,
            n.public_address,
            n.state.as_str(),
            n.sessions,
            time(n.heartbeat_at_unix_s)
        );
    }
}
