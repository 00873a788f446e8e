#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! The server speaks TLS 1.3 only: clients offering older versions are refused with a fatal
//! alert during the handshake, before any application data.

mod support;

use std::time::Duration;

use support::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A minimal ClientHello for `version` (0x0301 TLS 1.0, 0x0302 TLS 1.1, 0x0303 TLS 1.2)
/// without a supported_versions extension, offering common suites of that era.
fn client_hello(version: u16) -> Vec<u8> {
    let suites: [u16; 4] = [0xc02f, 0xc030, 0x009c, 0x002f];
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    // Extensions: supported_groups (x25519, secp256r1) and ec_point_formats, as old clients send.
    let extensions: Vec<u8> = vec![
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17, // supported_groups
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats
    ];
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![1]; // ClientHello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Sends a ClientHello and returns what the server answers before closing.
async fn answer_to(server: &TestServer, hello: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap_or_default();
    answer
}

#[tokio::test]
async fn clients_offering_tls_1_0_to_1_2_are_refused_with_a_fatal_alert() {
    let server = TestServer::start().await;
    for (name, version) in [("TLS 1.0", 0x0301), ("TLS 1.1", 0x0302), ("TLS 1.2", 0x0303)] {
        let answer = answer_to(&server, &client_hello(version)).await;
        // One alert record: content type 21, then level fatal (2) and protocol_version (70).
        assert!(answer.len() >= 7, "{name}: answer {answer:02x?}");
        assert_eq!(
            answer[0], 0x15,
            "{name}: expected an alert record, got {answer:02x?}"
        );
        // rustls answers handshake_failure (40) when no offered version is TLS 1.3.
        assert_eq!(answer[5], 2, "{name}: expected a fatal alert, got {answer:02x?}");
        assert!(
            matches!(answer[6], 40 | 70),
            "{name}: expected handshake_failure or protocol_version, got {answer:02x?}"
        );
        assert_eq!(answer.len(), 7, "{name}: nothing but the alert: {answer:02x?}");
    }
    // The same server completes a TLS 1.3 handshake with a real client.
    let code = redoubt_proto::ActivationCode::parse(server.admin_code.as_deref().unwrap()).unwrap();
    redoubt_client::Connection::connect(&code.server, &code.pin.0)
        .await
        .unwrap();
}

/// Cross-check with OpenSSL's client when the machine has it (it is in the CI image).
#[tokio::test]
async fn openssl_negotiates_tls_1_3_and_is_refused_at_1_2() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("openssl is not installed; the hand-built ClientHello test covers this");
        return;
    }
    let server = TestServer::start().await;
    let target = server.addr.to_string();
    let run = |flag: &'static str| {
        let target = target.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("openssl")
                .args(["s_client", "-connect", &target, flag, "-brief"])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        })
    };
    let old = run("-tls1_2").await.unwrap();
    assert!(
        !old.status.success(),
        "TLS 1.2 must fail: {}",
        String::from_utf8_lossy(&old.stderr)
    );
    let new = run("-tls1_3").await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&new.stdout),
        String::from_utf8_lossy(&new.stderr)
    );
    assert!(text.contains("TLSv1.3"), "TLS 1.3 must be negotiated: {text}");
}
