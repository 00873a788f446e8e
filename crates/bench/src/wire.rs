//! The load generator's connections: the device library's own [`redoubt_client::Connector`]
//! (pinned TLS 1.3, WebSocket, Redoubt frames), opened with small buffers (the library's
//! default 128 KiB read buffer would dominate the generator's memory at 100k+ sessions)
//! and from chosen source addresses (past ~28k connections to one server port, 127.0.0.1
//! runs out of ephemeral ports), split into a reader and a writer that run in separate
//! tasks so many requests are in flight on one session. What is here only adapts errors
//! to the generator's `anyhow` and keeps the address it measures against.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use redoubt_client::{Connection, FrameSink, FrameStream, WsMessage};
use redoubt_proto::{Hello, Request, Response, ServerAddress, ServerFrame, TLS_EXPORTER_BYTES};

pub use redoubt_client::FRAME_BYTES_MAX;

/// One answer during set-up (a 10k-member commit takes the server seconds to validate; the
/// library's own answer timeout is for devices, 30 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

pub type Writer = FrameSink;
pub type Reader = FrameStream;

/// Everything needed to open connections to one server.
#[derive(Clone, Debug)]
pub struct Connector {
    inner: redoubt_client::Connector,
    pub server: ServerAddress,
    /// The address connections go to (resolved once), for the report and source binding.
    pub addr: SocketAddr,
    /// The pinned certificate's SHA-256 (the same on every node of a cluster).
    pub pin: [u8; 32],
}

impl Connector {
    pub async fn new(server: &ServerAddress, pin: [u8; 32]) -> Result<Self> {
        let addr = tokio::net::lookup_host((server.host_unbracketed(), server.port()))
            .await?
            .next()
            .ok_or_else(|| anyhow!("{server} has no address"))?;
        Ok(Self {
            inner: redoubt_client::Connector::new(server, &pin)?.with_small_buffers(),
            server: server.clone(),
            addr,
            pin,
        })
    }

    /// Opens a connection, from `source` when given (any free port on it), and reads the
    /// server's hello.
    pub async fn connect(&self, source: Option<IpAddr>) -> Result<Conn> {
        let connection = match source {
            Some(ip) => self.inner.connect_from(ip).await,
            None => self.inner.connect().await,
        }
        .with_context(|| format!("connecting to {}", self.server))?;
        Ok(Conn {
            hello: connection.hello().clone(),
            tls_exporter: *connection.tls_exporter(),
            connection,
        })
    }
}

/// One connection, used whole for set-up (one request at a time) or split for load.
pub struct Conn {
    connection: Connection,
    pub hello: Hello,
    pub tls_exporter: [u8; TLS_EXPORTER_BYTES],
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

impl Conn {
    /// Sends one request and waits for its answer.
    pub async fn call(&mut self, request: Request) -> Result<Response> {
        let answer = self.connection.call_within(request, CALL_TIMEOUT).await?;
        // Set-up reads no events: they would only pile up in the library's bounded queue.
        self.connection.take_events(|_| true);
        Ok(answer)
    }

    /// The first request id the caller may use after splitting.
    pub fn next_request_id(&self) -> u64 {
        self.connection.next_request_id()
    }

    pub fn split(self) -> (Writer, Reader) {
        self.connection.split()
    }

    pub async fn close(self) {
        self.connection.close().await;
    }
}

/// Encodes a request as the binary WebSocket message that carries it.
pub fn frame(request_id: u64, request: Request) -> WsMessage {
    redoubt_client::request_message(request_id, request)
}

/// The next server frame from a split reader; `Ok(None)` when the connection ended.
pub async fn next_frame(reader: &mut Reader) -> Result<Option<ServerFrame>> {
    Ok(redoubt_client::next_frame(reader, "server").await?)
}
