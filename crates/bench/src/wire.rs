//! A lean connection for load generation: pinned TLS 1.3 and a WebSocket speaking Redoubt
//! frames, like `redoubt_client::Connection`, but with what a load generator needs and the
//! device library does not offer: a chosen source address (past ~28k connections to one
//! server port, 127.0.0.1 runs out of ephemeral ports), small buffers (the library's
//! 128 KiB WebSocket read buffer would dominate the generator's own memory at 100k+
//! sessions), and a reader and a writer that run in separate tasks so many requests can be
//! in flight on one session.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
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

/// Largest frame accepted from the server (a 10k-member Welcome is several MB).
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Connect, TLS, WebSocket upgrade and hello, all together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// One answer during set-up (a 10k-member commit takes the server seconds to validate).
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

pub type Socket = WebSocketStream<TlsStream<TcpStream>>;
pub type Writer = SplitSink<Socket, Message>;
pub type Reader = SplitStream<Socket>;

/// Everything needed to open connections to one server.
#[derive(Clone)]
pub struct Connector {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    pub server: ServerAddress,
    pub addr: SocketAddr,
    /// The pinned certificate's SHA-256 (the same on every node of a cluster).
    pub pin: [u8; 32],
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Connector {
    pub async fn new(server: &ServerAddress, pin: [u8; 32]) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = Arc::new(redoubt_client::PinVerifier::new(pin, provider.clone()));
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // The device library makes a fresh configuration per connection, so it never
        // resumes a TLS session; neither do we, or reconnects would look cheaper than they are.
        config.resumption = rustls::client::Resumption::disabled();
        let server_name = ServerName::try_from(server.host_unbracketed().to_owned())?;
        let addr = tokio::net::lookup_host((server.host_unbracketed(), server.port()))
            .await?
            .next()
            .ok_or_else(|| anyhow!("{server} has no address"))?;
        Ok(Self {
            config: Arc::new(config),
            server_name,
            server: server.clone(),
            addr,
            pin,
        })
    }

    /// Opens a connection, from `source` when given (any free port on it), and reads the
    /// server's hello.
    pub async fn connect(&self, source: Option<IpAddr>) -> Result<Conn> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect_inner(source))
            .await
            .map_err(|_| anyhow!("connecting to {} timed out", self.server))?
    }

    async fn connect_inner(&self, source: Option<IpAddr>) -> Result<Conn> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("binding a source port on {ip}"))?;
        }
        let tcp = socket.connect(self.addr).await.context("TCP connect")?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .context("TLS handshake")?;
        let mut tls_exporter = [0; TLS_EXPORTER_BYTES];
        tls.get_ref()
            .1
            .export_keying_material(&mut tls_exporter, TLS_EXPORTER_LABEL, None)?;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(FRAME_BYTES_MAX))
            .max_frame_size(Some(FRAME_BYTES_MAX));
        let url = format!("wss://{}/v1/ws", self.server);
        let (mut socket, _) = tokio_tungstenite::client_async_with_config(url, tls, Some(ws_config))
            .await
            .context("WebSocket upgrade")?;
        let hello = match read_frame(&mut socket).await? {
            ServerFrame::Hello(hello) => hello,
            other => bail!("expected Hello, got {other:?}"),
        };
        Ok(Conn {
            socket,
            hello,
            tls_exporter,
            next_request_id: 1,
        })
    }
}

/// One connection, used whole for set-up (one request at a time) or split for load.
pub struct Conn {
    socket: Socket,
    pub hello: Hello,
    pub tls_exporter: [u8; TLS_EXPORTER_BYTES],
    next_request_id: u64,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

impl Conn {
    /// Sends one request and waits for its answer; events arriving meanwhile are dropped.
    pub async fn call(&mut self, request: Request) -> Result<Response> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let bytes = encode_client_frame(&ClientFrame { request_id, request });
        self.socket.send(Message::Binary(bytes.into())).await?;
        let answer = async {
            loop {
                match read_frame(&mut self.socket).await? {
                    ServerFrame::Response {
                        request_id: id,
                        response,
                    } if id == request_id => return Ok(response),
                    ServerFrame::Error {
                        request_id: id,
                        error,
                    } if id == request_id || id == 0 => {
                        bail!("server refused: {:?}: {}", error.code, error.message)
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, answer)
            .await
            .map_err(|_| anyhow!("no answer within {CALL_TIMEOUT:?}"))?
    }

    /// The first request id the caller may use after splitting.
    pub fn next_request_id(&self) -> u64 {
        self.next_request_id
    }

    pub fn split(self) -> (Writer, Reader) {
        let (writer, reader) = self.socket.split();
        (writer, reader)
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// Encodes a request as the binary WebSocket message that carries it.
pub fn frame(request_id: u64, request: Request) -> Message {
    Message::Binary(encode_client_frame(&ClientFrame { request_id, request }).into())
}

async fn read_frame(socket: &mut Socket) -> Result<ServerFrame> {
    loop {
        match socket.next().await {
            None => bail!("connection closed"),
            Some(message) => {
                if let Some(frame) = decode(message?)? {
                    return Ok(frame);
                }
            }
        }
    }
}

/// A server frame from a WebSocket message; `None` for control messages.
pub fn decode(message: Message) -> Result<Option<ServerFrame>> {
    match message {
        Message::Binary(bytes) => Ok(Some(decode_server_frame(&bytes, FRAME_BYTES_MAX)?)),
        Message::Close(frame) => bail!(
            "closed by server: {}",
            frame.map(|f| f.reason.to_string()).unwrap_or_default()
        ),
        Message::Text(_) => bail!("text frame from server"),
        _ => Ok(None),
    }
}

/// The next server frame from a split reader; `Ok(None)` when the connection ended.
pub async fn next_frame(reader: &mut Reader) -> Result<Option<ServerFrame>> {
    loop {
        match reader.next().await {
            None => return Ok(None),
            Some(message) => {
                if let Some(frame) = decode(message?)? {
                    return Ok(Some(frame));
                }
            }
        }
    }
}
