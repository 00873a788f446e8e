//! A raw client for tests that misbehave on purpose: TLS with the pin (the real client's
//! rule), then WebSocket frames or bytes of the test's choosing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failed step must fail loudly

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redoubt_client::{ClientError, Connection, Messenger, Session, WsMessage};
use redoubt_proto::*;
use sha2::Digest;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;

use super::{TestServer, admin_session, enroll};

/// Upper bound on any single wait for the server in these tests; far above every limit
/// they configure, so reaching it means a limit did not hold.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn user(name: &str) -> UserName {
    UserName::parse(name).unwrap()
}

pub fn admin_code(server: &TestServer) -> ActivationCode {
    ActivationCode::parse(server.admin_code.as_deref().unwrap()).unwrap()
}

// ---- a raw client: TLS with the pin, then bytes of our choosing ----

/// Accepts exactly the pinned certificate (the real client's rule), so raw tests speak to
/// the real server the way a device does.
#[derive(Debug)]
pub struct Pinned {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if sha2::Sha256::digest(end_entity.as_ref()).as_slice() == self.pin {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate does not match the pin".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

pub async fn raw_tls(server: &TestServer) -> TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(Pinned {
        pin: admin_code(server).pin.0,
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

pub type RawSocket = WebSocketStream<TlsStream<TcpStream>>;

/// A WebSocket to `/v1/ws` whose underlying stream the test may write to directly; the
/// server's `Hello` has been read.
pub async fn raw_websocket(server: &TestServer) -> RawSocket {
    let tls = raw_tls(server).await;
    let url = format!("wss://{}/v1/ws", server.addr);
    let (mut socket, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    match socket.next().await {
        Some(Ok(WsMessage::Binary(bytes))) => {
            assert!(matches!(
                decode_server_frame(&bytes, 1 << 20).unwrap(),
                ServerFrame::Hello(_)
            ));
        }
        other => panic!("expected Hello, got {other:?}"),
    }
    socket
}

/// The header of a client WebSocket frame (RFC 6455 §5.2) declaring `len` payload bytes,
/// masked with a zero key so the payload goes as is.
pub fn frame_header(opcode: u8, fin: bool, len: u64) -> Vec<u8> {
    let mut header = vec![if fin { 0x80 | opcode } else { opcode }];
    if len < 126 {
        header.push(0x80 | len as u8);
    } else if len <= 0xffff {
        header.push(0x80 | 126);
        header.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        header.push(0x80 | 127);
        header.extend_from_slice(&len.to_be_bytes());
    }
    header.extend_from_slice(&[0; 4]);
    header
}

/// What the server said before closing: its error frame and its close code.
#[derive(Debug, Default)]
pub struct Refusal {
    pub error: Option<ErrorBody>,
    pub close_code: Option<u16>,
}

/// Reads until the server closes (bounded by [`PATIENCE`] and a frame count).
pub async fn read_refusal(socket: &mut RawSocket) -> Refusal {
    let mut refusal = Refusal::default();
    let read = async {
        for _ in 0..16 {
            match socket.next().await {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    if let Ok(ServerFrame::Error { error, .. }) = decode_server_frame(&bytes, 1 << 20) {
                        refusal.error = Some(error);
                    }
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    refusal.close_code = frame.map(|f| u16::from(f.code));
                    return;
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return,
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the server should close the connection");
    refusal
}

/// Waits (bounded) for the server to close a connection; returns what it said first.
pub async fn wait_for_close(connection: &mut Connection) -> Result<ServerFrame, ClientError> {
    let first = tokio::time::timeout(PATIENCE, connection.next_frame())
        .await
        .expect("the server should answer or close");
    if first.is_ok() {
        let closed = tokio::time::timeout(PATIENCE, connection.next_frame())
            .await
            .expect("the server should close the connection");
        assert!(
            closed.is_err(),
            "expected the connection to be closed, got {closed:?}"
        );
    }
    first
}

pub fn error_code(frame: &Result<ServerFrame, ClientError>) -> Option<ErrorCode> {
    match frame {
        Ok(ServerFrame::Error { error, .. }) => Some(error.code),
        _ => None,
    }
}

/// Enrols one device for each of `users` and opens a messenger for each.
pub async fn messengers(server: &TestServer, profiles: &std::path::Path, users: &[&str]) -> Vec<Messenger> {
    let (admin, out) = messengers_with_admin(server, profiles, users).await;
    admin.close().await;
    out
}

/// [`messengers`], returned with the admin's session.
pub async fn messengers_with_admin(
    server: &TestServer,
    profiles: &std::path::Path,
    users: &[&str],
) -> (Session, Vec<Messenger>) {
    let mut admin = admin_session(server, profiles).await;
    let mut out = Vec::new();
    for name in users {
        let issued = admin.admin_user_add(user(name), None).await.unwrap();
        let profile = enroll(profiles, name, &issued.code).await;
        out.push(Messenger::open(&profile).await.unwrap());
    }
    (admin, out)
}

pub fn raw_request(request_id: u64, request: Request) -> WsMessage {
    WsMessage::Binary(encode_client_frame(&ClientFrame { request_id, request }).into())
}
