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

/// The longest message [`Bus::publish`] carries (PostgreSQL's `NOTIFY` payload is at most
/// 8,000 bytes of text; this leaves room for its hex encoding).
pub const BUS_MESSAGE_BYTES_MAX: usize = 3_900;

/// What a node hears on the [`Bus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// A message another node (or this one) published.
    Message(Vec<u8>),
    /// The bus lost its connection and has it again: messages published meanwhile were
    /// lost, so whatever they would have woken must be looked at again.
    Gap,
}

/// Wake-ups between the nodes of a cluster. Only ever a hint: everything a message stands
/// for is in the store, so a lost one delays and never loses (nodes re-read on a
/// [`BusEvent::Gap`]). Never used inside a write transaction: a node publishes after its
/// commit, one message per batch.
#[async_trait::async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends `message` (at most [`BUS_MESSAGE_BYTES_MAX`] bytes) to every node listening.
    async fn publish(&self, message: &[u8]) -> crate::Result<()>;

    /// The next event; waits for one. Reconnects by itself after a lost connection (and
    /// then returns [`BusEvent::Gap`]); an error means the bus was closed.
    async fn next(&self) -> crate::Result<BusEvent>;
}
