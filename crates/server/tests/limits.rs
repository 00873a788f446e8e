#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! The limits at the door: `connections_max` answers `server_busy` at once,
//! `unauthenticated_per_address_max` keeps one host from holding every slot, WebSocket
//! protocol errors get their own code, and a device's attachments are bounded per day.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redoubt_client::{ClientError, Connection, WsMessage};
use redoubt_proto::*;
use support::TestServer;
use support::raw::*;
use tokio::io::AsyncWriteExt;

/// Connects until it succeeds (a slot frees asynchronously after a close), bounded.
async fn connect_once_free(code: &ActivationCode) -> Connection {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match Connection::connect(&code.server, &code.pin.0).await {
            Ok(connection) => return connection,
            Err(error) => {
                assert!(Instant::now() < deadline, "no slot freed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn busy(result: &Result<Connection, ClientError>) -> bool {
    matches!(result, Err(error) if error.code() == Some(ErrorCode::ServerBusy))
}

#[tokio::test]
async fn connections_past_the_limit_are_told_the_server_is_busy_at_once() {
    let server = TestServer::start_with_config("[limits]\nconnections_max = 2\n").await;
    let code = admin_code(&server);
    let first = Connection::connect(&code.server, &code.pin.0).await.unwrap();
    let _second = Connection::connect(&code.server, &code.pin.0).await.unwrap();

    // The device library sees a transient `server_busy`, quickly: it can try another node.
    let started = Instant::now();
    let third = Connection::connect(&code.server, &code.pin.0).await;
    assert!(busy(&third), "{:?}", third.err());
    assert!(third.as_ref().err().is_some_and(ClientError::is_transient));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // On the wire: an error frame in place of the hello, then close 1013 (try again later).
    let tls = raw_tls(&server).await;
    let (mut socket, _) = tokio_tungstenite::client_async(format!("wss://{}/v1/ws", server.addr), tls)
        .await
        .unwrap();
    let mut said = None;
    let mut close_code = None;
    while let Some(Ok(message)) = tokio::time::timeout(PATIENCE, socket.next()).await.unwrap() {
        match message {
            WsMessage::Binary(bytes) => said = Some(decode_server_frame(&bytes, 1 << 20).unwrap()),
            WsMessage::Close(frame) => {
                close_code = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    assert!(
        matches!(&said, Some(ServerFrame::Error { error, .. }) if error.code == ErrorCode::ServerBusy),
        "{said:?}"
    );
    assert_eq!(close_code, Some(1013));

    // A freed slot serves the next client.
    first.close().await;
    connect_once_free(&code).await;
}

#[tokio::test]
async fn a_connection_flood_holds_slots_only_until_the_auth_timeout() {
    // connections_max is full of clients that never authenticate. A newcomer is told the
    // server is busy (not left waiting unseen), and is served once auth_timeout_ms has
    // closed the slot holders.
    let server =
        TestServer::start_with_config("[limits]\nconnections_max = 3\nauth_timeout_ms = 1000\n").await;
    let code = admin_code(&server);
    let mut hogs = Vec::new();
    for _ in 0..3 {
        hogs.push(Connection::connect(&code.server, &code.pin.0).await.unwrap());
    }
    let newcomer = Connection::connect(&code.server, &code.pin.0).await;
    assert!(busy(&newcomer), "{:?}", newcomer.err());
    let mut refusals = 1;
    for hog in &mut hogs {
        let answer = wait_for_close(hog).await;
        assert_eq!(
            error_code(&answer),
            Some(ErrorCode::Unauthenticated),
            "{answer:?}"
        );
        refusals += 1;
    }
    connect_once_free(&code).await;
    eprintln!("connection flood: {refusals} refusals; the newcomer was served once the slots freed");
}

#[tokio::test]
async fn one_address_holds_a_bounded_number_of_unauthenticated_connections() {
    let server = TestServer::start_with_config("[limits]\nunauthenticated_per_address_max = 2\n").await;
    let profiles = tempfile::tempdir().unwrap();
    // An authenticated session does not count against its address.
    let mut admin = support::admin_session(&server, profiles.path()).await;
    let code = admin_code(&server);
    // Two connections from this address that never even start TLS hold its two places.
    let hog = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _other_hog = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // The third is closed before its handshake: a connection error, at once.
    let started = Instant::now();
    let refused = Connection::connect(&code.server, &code.pin.0).await;
    assert!(
        matches!(&refused, Err(ClientError::Connect { .. })),
        "{:?}",
        refused.err()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    admin.whoami().await.unwrap();
    // One place freed: the address is served again.
    drop(hog);
    connect_once_free(&code).await.close().await;
}

#[tokio::test]
async fn websocket_protocol_errors_have_their_own_code() {
    let server = TestServer::start().await;
    // A reserved opcode (3), and a client frame without a mask (RFC 6455 §5.1).
    let reserved_opcode = frame_header(0x3, true, 0);
    let mut unmasked = frame_header(0x2, true, 4);
    unmasked[1] &= 0x7f;
    unmasked.truncate(2);
    unmasked.extend_from_slice(b"abcd");
    for bytes in [reserved_opcode, unmasked] {
        let mut socket = raw_websocket(&server).await;
        let stream = socket.get_mut();
        stream.write_all(&bytes).await.unwrap();
        stream.flush().await.unwrap();
        let refusal = read_refusal(&mut socket).await;
        assert_eq!(
            refusal.error.as_ref().map(|e| e.code),
            Some(ErrorCode::WebsocketProtocolError),
            "{bytes:x?}: {refusal:?}"
        );
        assert_eq!(refusal.close_code, Some(1002), "{bytes:x?}: {refusal:?}");
    }
    // An oversized frame keeps its own code.
    let mut socket = raw_websocket(&server).await;
    let stream = socket.get_mut();
    stream.write_all(&frame_header(0x2, true, 1 << 30)).await.unwrap();
    stream.flush().await.unwrap();
    let refusal = read_refusal(&mut socket).await;
    assert_eq!(refusal.error.map(|e| e.code), Some(ErrorCode::FrameTooLarge));
    assert_eq!(refusal.close_code, Some(1009));
}

#[tokio::test]
async fn a_device_uploads_at_most_its_daily_attachment_quota() {
    let server = TestServer::start_with_config("[limits]\nattachment_bytes_per_day_max = 200000\n").await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &["alice", "bob"]).await;
    d[0].create_conversation("files", &[user("bob")], false)
        .await
        .unwrap();
    d[1].sync().await.unwrap();
    let file = profiles.path().join("report.bin");
    std::fs::write(&file, vec![7u8; 120_000]).unwrap();

    d[0].send_file("files", &file, |_, _| {}).await.unwrap();
    let refused = d[0].send_file("files", &file, |_, _| {}).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::LimitReached), "{refused}");
    assert!(
        refused.to_string().contains("daily limit of 200000 bytes"),
        "{refused}"
    );
    // The quota is the device's own: Bob's uploads are not held up by Alice's.
    d[1].send_file("files", &file, |_, _| {}).await.unwrap();
    // A day later Alice may upload again.
    server.clock.advance(86_401);
    d[0].send_file("files", &file, |_, _| {}).await.unwrap();
}
