//! One pinned TLS + WebSocket connection speaking Redoubt frames.
//!
//! The one implementation of the client side of the wire: devices use it through
//! [`Connection::connect`], and the load generator (`redoubt-bench`) opens hundreds of
//! thousands of them through a [`Connector`] with small buffers and chosen source addresses,
//! splitting each into a writer and a reader so many requests are in flight at once.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use redoubt_proto::{
    ClientFrame, Hello, Request, Response, ServerAddress, ServerFrame, TLS_EXPORTER_BYTES,
    TLS_EXPORTER_LABEL, decode_server_frame, encode_client_frame,
};
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::ClientError;
use crate::tls::PinVerifier;

/// Largest frame this client accepts from a server (a 10,000-member Welcome is several MB).
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Time allowed to connect, handshake and receive the server's hello.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The same for a node when others remain to be tried: a dead machine does not answer at
/// all, and its devices should be elsewhere well within the time a person waits.
const FAILOVER_CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// Time allowed for the server to answer one request.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Events kept while waiting for answers; older ones are dropped beyond this (they are
/// hints: a sync finds everything after the cursor anyway).
const PENDING_EVENTS_MAX: usize = 1024;

/// The WebSocket a connection runs on.
pub type Socket = WebSocketStream<TlsStream<TcpStream>>;
/// The sending half of a [`Connection::split`].
pub type FrameSink = SplitSink<Socket, Message>;
/// The receiving half of a [`Connection::split`].
pub type FrameStream = SplitStream<Socket>;

/// How to open connections to one server: its pinned TLS configuration, built once, and
/// the WebSocket buffers to use.
#[derive(Clone)]
pub struct Connector {
    config: Arc<rustls::ClientConfig>,
    verifier: Arc<PinVerifier>,
    server: ServerAddress,
    server_name: ServerName<'static>,
    websocket: WebSocketConfig,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Connections to `server` that accept only the certificate whose SHA-256 is `pin`.
    pub fn new(server: &ServerAddress, pin: &[u8; 32]) -> Result<Self, ClientError> {
        let failed = |reason: String| ClientError::Connect {
            server: server.to_string(),
            reason,
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = Arc::new(PinVerifier::new(*pin, provider.clone()));
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| failed(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Devices do not resume TLS sessions (the server issues no tickets), and a shared
        // configuration must not make a load generator's reconnects look cheaper than
        // devices' are.
        config.resumption = rustls::client::Resumption::disabled();
        let server_name =
            ServerName::try_from(server.host_unbracketed().to_owned()).map_err(|e| failed(e.to_string()))?;
        Ok(Self {
            config: Arc::new(config),
            verifier,
            server: server.clone(),
            server_name,
            websocket: WebSocketConfig::default()
                .max_message_size(Some(FRAME_BYTES_MAX))
                .max_frame_size(Some(FRAME_BYTES_MAX)),
        })
    }

    /// Small WebSocket buffers (4 KiB read, no write buffer) in place of tungstenite's
    /// 128 KiB, for a process that holds very many connections.
    pub fn with_small_buffers(mut self) -> Self {
        self.websocket = self.websocket.read_buffer_size(4096).write_buffer_size(0);
        self
    }

    pub fn server(&self) -> &ServerAddress {
        &self.server
    }

    /// Connects, refusing any certificate but the pinned one, and reads the server's hello.
    pub async fn connect(&self) -> Result<Connection, ClientError> {
        self.connect_within(None, CONNECT_TIMEOUT).await
    }

    /// [`Self::connect`] from a port on `source`: past ~28,000 connections from one address
    /// to one server port, the ephemeral ports run out.
    pub async fn connect_from(&self, source: IpAddr) -> Result<Connection, ClientError> {
        self.connect_within(Some(source), CONNECT_TIMEOUT).await
    }

    async fn connect_within(
        &self,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Connection, ClientError> {
        tokio::time::timeout(timeout, self.open(source))
            .await
            .map_err(|_| self.failed("timed out".into()))?
    }

    fn failed(&self, reason: String) -> ClientError {
        ClientError::Connect {
            server: self.server.to_string(),
            reason,
        }
    }

    async fn tcp(&self, source: Option<IpAddr>) -> Result<TcpStream, ClientError> {
        let target = (self.server.host_unbracketed(), self.server.port());
        let Some(source) = source else {
            return TcpStream::connect(target)
                .await
                .map_err(|e| self.failed(e.to_string()));
        };
        let addr: SocketAddr = tokio::net::lookup_host(target)
            .await
            .map_err(|e| self.failed(e.to_string()))?
            .next()
            .ok_or_else(|| self.failed("the name has no address".into()))?;
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| self.failed(e.to_string()))?;
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| self.failed(format!("binding a source port on {source}: {e}")))?;
        socket.connect(addr).await.map_err(|e| self.failed(e.to_string()))
    }

    async fn open(&self, source: Option<IpAddr>) -> Result<Connection, ClientError> {
        let name = self.server.to_string();
        let tcp = self.tcp(source).await?;
        let _ = tcp.set_nodelay(true);
        let tls = match tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
        {
            Ok(tls) => tls,
            Err(_) if self.verifier.mismatched.load(Ordering::Relaxed) => {
                return Err(ClientError::PinMismatch { server: name });
            }
            Err(e) => return Err(self.failed(format!("TLS: {e}"))),
        };
        let mut tls_exporter = [0; TLS_EXPORTER_BYTES];
        tls.get_ref()
            .1
            .export_keying_material(&mut tls_exporter, TLS_EXPORTER_LABEL, None)
            .map_err(|e| self.failed(e.to_string()))?;
        let url = format!("wss://{}/v1/ws", self.server);
        let (mut socket, _) = tokio_tungstenite::client_async_with_config(url, tls, Some(self.websocket))
            .await
            .map_err(|e| self.failed(format!("WebSocket: {e}")))?;
        let hello = match read_frame(&mut socket, &name).await?.0 {
            ServerFrame::Hello(hello) if hello.protocol_version == redoubt_proto::PROTOCOL_VERSION => hello,
            ServerFrame::Hello(hello) => {
                return Err(ClientError::Protocol(format!(
                    "server speaks protocol {}, this client {}",
                    hello.protocol_version,
                    redoubt_proto::PROTOCOL_VERSION
                )));
            }
            // A server at its connection limit says so in place of its hello.
            ServerFrame::Error { error, .. } => return Err(ClientError::Server(error)),
            other => {
                return Err(ClientError::Protocol(format!("expected Hello, got {other:?}")));
            }
        };
        Ok(Connection {
            socket,
            pending_events: Default::default(),
            hello,
            tls_exporter,
            next_request_id: 1,
            server: name,
            frame_bytes: (0, 0),
        })
    }
}

pub struct Connection {
    socket: Socket,
    pending_events: std::collections::VecDeque<redoubt_proto::Event>,
    hello: Hello,
    tls_exporter: [u8; TLS_EXPORTER_BYTES],
    next_request_id: u64,
    server: String,
    /// WebSocket payload bytes sent and received on this connection (frames, not TLS).
    frame_bytes: (u64, u64),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to the first of `servers` (the nodes of one server, in order of preference)
    /// that answers, and returns which one it was. A certificate that does not match the
    /// pin ends the search: every node serves the same certificate, so that is no outage.
    pub async fn connect_any(
        servers: &[ServerAddress],
        pin: &[u8; 32],
    ) -> Result<(Self, ServerAddress), ClientError> {
        let mut last_error = None;
        for (i, server) in servers.iter().enumerate() {
            let timeout = if i + 1 < servers.len() {
                FAILOVER_CONNECT_TIMEOUT
            } else {
                CONNECT_TIMEOUT
            };
            match Self::connect_within(server, pin, timeout).await {
                Ok(connection) => return Ok((connection, server.clone())),
                Err(error @ ClientError::PinMismatch { .. }) => return Err(error),
                Err(error) => {
                    tracing::info!(%server, %error, "server node unreachable; trying the next");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ClientError::Profile("no server address".into())))
    }

    /// Connects to `server`, refusing any certificate but the pinned one, and reads the
    /// server's hello.
    pub async fn connect(server: &ServerAddress, pin: &[u8; 32]) -> Result<Self, ClientError> {
        Self::connect_within(server, pin, CONNECT_TIMEOUT).await
    }

    async fn connect_within(
        server: &ServerAddress,
        pin: &[u8; 32],
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        Connector::new(server, pin)?.connect_within(None, timeout).await
    }

    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Keying material exported from this TLS session; authentication signatures cover it.
    pub fn tls_exporter(&self) -> &[u8; TLS_EXPORTER_BYTES] {
        &self.tls_exporter
    }

    /// Sends one request and waits for its answer.
    pub async fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        self.call_within(request, RESPONSE_TIMEOUT).await
    }

    /// [`Self::call`], waiting at most `timeout` for the answer.
    pub async fn call_within(
        &mut self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let bytes = encode_client_frame(&ClientFrame { request_id, request });
        self.send_raw(Message::Binary(bytes.into())).await?;
        let answer = async {
            loop {
                match self.next_frame().await? {
                    ServerFrame::Response {
                        request_id: id,
                        response,
                    } if id == request_id => return Ok(response),
                    ServerFrame::Error {
                        request_id: id,
                        error,
                    } if id == request_id || id == 0 => {
                        return Err(ClientError::Server(error));
                    }
                    ServerFrame::Event(event) => {
                        if self.pending_events.len() == PENDING_EVENTS_MAX {
                            self.pending_events.pop_front();
                        }
                        self.pending_events.push_back(event);
                    }
                    other => tracing::debug!(?other, "ignoring unexpected frame"),
                }
            }
        };
        tokio::time::timeout(timeout, answer)
            .await
            .map_err(|_| ClientError::Connect {
                server: self.server.clone(),
                reason: "timed out waiting for the server's answer".into(),
            })?
    }

    /// Sends a WebSocket message as is. For tests of how the server treats bad input.
    pub async fn send_raw(&mut self, message: Message) -> Result<(), ClientError> {
        self.frame_bytes.0 += message.len() as u64;
        let server = self.server.clone();
        self.socket.send(message).await.map_err(|e| ClientError::Connect {
            server,
            reason: e.to_string(),
        })
    }

    /// Reads the next frame, skipping WebSocket control messages. A close from the server
    /// is reported as a connection error carrying the server's reason.
    pub async fn next_frame(&mut self) -> Result<ServerFrame, ClientError> {
        let (frame, bytes) = read_frame(&mut self.socket, &self.server).await?;
        self.frame_bytes.1 += bytes as u64;
        Ok(frame)
    }

    /// Takes the events received while waiting for answers that `wanted` selects; returns
    /// how many there were.
    pub fn take_events(&mut self, wanted: impl Fn(&redoubt_proto::Event) -> bool) -> usize {
        let before = self.pending_events.len();
        self.pending_events.retain(|event| !wanted(event));
        before - self.pending_events.len()
    }

    /// WebSocket payload bytes (sent, received) on this connection so far, for measuring
    /// what a piece of work costs on the wire.
    pub fn frame_bytes(&self) -> (u64, u64) {
        self.frame_bytes
    }

    /// The next event from the server: one received while waiting for an answer, or the
    /// next to arrive.
    pub async fn next_event(&mut self) -> Result<redoubt_proto::Event, ClientError> {
        if let Some(event) = self.pending_events.pop_front() {
            return Ok(event);
        }
        loop {
            match self.next_frame().await? {
                ServerFrame::Event(event) => return Ok(event),
                other => tracing::debug!(?other, "ignoring unexpected frame"),
            }
        }
    }

    /// The first request id not yet used, for a caller that goes on after [`Self::split`].
    pub fn next_request_id(&self) -> u64 {
        self.next_request_id
    }

    /// Splits the connection so one task writes requests while another reads answers and
    /// events (the load generator's many requests in flight). Events received while waiting
    /// for answers so far are dropped.
    pub fn split(self) -> (FrameSink, FrameStream) {
        self.socket.split()
    }

    /// Closes the connection with a normal close frame.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// The WebSocket message that carries a request.
pub fn request_message(request_id: u64, request: Request) -> Message {
    Message::Binary(encode_client_frame(&ClientFrame { request_id, request }).into())
}

/// The next server frame from a split connection's reader; `Ok(None)` when the connection
/// ended, an error when the server closed it (with its reason) or sent something undecodable.
pub async fn next_frame(reader: &mut FrameStream, server: &str) -> Result<Option<ServerFrame>, ClientError> {
    Ok(read_frame_or_end(reader, server).await?.map(|(frame, _)| frame))
}

/// The next frame and its size; a connection that ended without a close frame is an error.
async fn read_frame(socket: &mut Socket, server: &str) -> Result<(ServerFrame, usize), ClientError> {
    read_frame_or_end(socket, server)
        .await?
        .ok_or_else(|| ClientError::Connect {
            server: server.to_owned(),
            reason: "connection closed".into(),
        })
}

/// The next frame and its size, skipping control messages; `None` when the stream ended.
async fn read_frame_or_end(
    socket: &mut (
             impl futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin
         ),
    server: &str,
) -> Result<Option<(ServerFrame, usize)>, ClientError> {
    let closed = |reason: String| ClientError::Connect {
        server: server.to_owned(),
        reason,
    };
    loop {
        match socket.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(closed(e.to_string())),
            Some(Ok(Message::Binary(bytes))) => {
                return decode_server_frame(&bytes, FRAME_BYTES_MAX)
                    .map(|frame| Some((frame, bytes.len())))
                    .map_err(|e| ClientError::Protocol(e.to_string()));
            }
            Some(Ok(Message::Close(frame))) => {
                let reason = frame.map(|f| format!("closed by server: {} ({})", f.reason, u16::from(f.code)));
                return Err(closed(reason.unwrap_or_else(|| "closed by server".into())));
            }
            Some(Ok(Message::Text(_))) => {
                return Err(ClientError::Protocol("text frame from server".into()));
            }
            Some(Ok(_)) => {}
        }
    }
}
