//! Records for running several server nodes over one database: the nodes themselves (for
//! `admin cluster list` and for telling devices where else to connect) and leases, which
//! let exactly one node at a time do a job (the mail connector) and fence off a node that
//! lost its lease without knowing it.

/// A server node, as its last heartbeat described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// Chosen by the node at start (random); a restarted node is a new row.
    pub id: String,
    /// The `host:port` devices use to reach this node.
    pub public_address: String,
    /// Authenticated sessions open on the node at its last heartbeat.
    pub sessions: u64,
    pub started_at_unix_s: i64,
    pub heartbeat_at_unix_s: i64,
    /// Set when the node stopped cleanly.
    pub stopped: bool,
}

/// A lease held: the holder may act while `now < expires_at_ms`, and stamps `token` on what
/// it writes so the store can refuse a former holder's late writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Greater than every token given to an earlier holder of the same lease.
    pub token: u64,
    pub expires_at_ms: i64,
}
