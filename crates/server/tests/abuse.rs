#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Abusive clients are refused or disconnected by named limits (`[limits]` in
//! `redoubt.toml`), each refusal with a clear error code where the peer can still be told,
//! while well-behaved devices keep their service. Every abuser is bounded in count and time;
//! each test prints how many refusals it saw.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redoubt_client::{Connection, Messenger, Session, WsMessage};
use redoubt_proto::*;
use support::raw::*;
use support::{TestServer, admin_session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---- abusers, each bounded; each returns the refusals it saw ----

/// Connects and never authenticates: refused `unauthenticated` at `auth_timeout_ms`.
async fn idle_unauthenticated(server_code: ActivationCode) -> usize {
    let mut connection = Connection::connect(&server_code.server, &server_code.pin.0)
        .await
        .unwrap();
    let answer = wait_for_close(&mut connection).await;
    assert_eq!(
        error_code(&answer),
        Some(ErrorCode::Unauthenticated),
        "{answer:?}"
    );
    1
}

/// Sends requests without authenticating: refused `unauthenticated`, then
/// `too_many_unauthenticated_requests` and closed at `unauthenticated_requests_max`.
async fn unauthenticated_spammer(server_code: ActivationCode) -> usize {
    let mut connection = Connection::connect(&server_code.server, &server_code.pin.0)
        .await
        .unwrap();
    let mut refusals = 0;
    for _ in 0..10 {
        match connection.call(Request::WhoAmI).await {
            Err(error) if error.code() == Some(ErrorCode::Unauthenticated) => refusals += 1,
            Err(error) if error.code() == Some(ErrorCode::TooManyUnauthenticatedRequests) => {
                refusals += 1;
                assert!(
                    tokio::time::timeout(PATIENCE, connection.next_frame())
                        .await
                        .unwrap()
                        .is_err(),
                    "closed after the cap"
                );
                return refusals;
            }
            other => panic!("unexpected answer before authenticating: {other:?}"),
        }
    }
    panic!("no cap on unauthenticated requests after 10");
}

/// Declares a huge WebSocket frame and sends none of it: refused `frame_too_large` from
/// the header alone, closed with 1009.
async fn huge_header(server: &TestServer, declared: u64) -> usize {
    let mut socket = raw_websocket(server).await;
    let stream = socket.get_mut();
    stream
        .write_all(&frame_header(0x2, true, declared))
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let refusal = read_refusal(&mut socket).await;
    assert_eq!(
        refusal.error.as_ref().map(|e| e.code),
        Some(ErrorCode::FrameTooLarge),
        "declared {declared}: {refusal:?}"
    );
    assert_eq!(refusal.close_code, Some(1009), "declared {declared}: {refusal:?}");
    1
}

/// Sends `requests` one after another as fast as it can on an authenticated session;
/// returns how many were refused `rate_limited`. A device's bucket holds `burst` tokens and
/// gains `per_second`, so however fast or slow this machine, at most
/// `burst + per_second × elapsed` requests may have been served.
async fn request_flood(
    connection: &mut Connection,
    requests: impl Iterator<Item = Request>,
    per_second: u32,
    burst: u32,
) -> usize {
    let started = std::time::Instant::now();
    let (mut served, mut limited) = (0, 0);
    for request in requests {
        match connection.call(request).await {
            Err(error) if error.code() == Some(ErrorCode::RateLimited) => limited += 1,
            // Served: answered, or refused for a reason other than the rate.
            Ok(_) => served += 1,
            Err(error) if error.code() == Some(ErrorCode::NotFound) => served += 1,
            Err(error) => panic!("unexpected refusal: {error}"),
        }
    }
    let allowed = f64::from(burst) + f64::from(per_second) * (started.elapsed().as_secs_f64() + 1.0);
    assert!(
        f64::from(served) <= allowed,
        "{served} requests served in {:?}; the limit allows {allowed}",
        started.elapsed()
    );
    limited
}

fn who_am_i(count: usize) -> impl Iterator<Item = Request> {
    std::iter::repeat_n(Request::WhoAmI, count)
}

/// Asks for a blob chunk again and again and never reads a byte of the answers. Returns
/// (requests sent before the server hung up, answers that were still readable).
async fn never_reads(connection: &mut Connection, blob_id: BlobId) -> (usize, usize) {
    let fetch = |i: usize| raw_request(1_000 + i as u64, Request::BlobFetch { blob_id, index: 0 });
    let mut sent = 0;
    // Enough answers (≈32 KiB each) to fill the socket buffers of both ends many times,
    // then a paced trickle until the server hangs up: bounded in count and time.
    let mut closed = false;
    for i in 0..2_400 {
        if connection.send_raw(fetch(i)).await.is_err() {
            closed = true;
            break;
        }
        sent += 1;
        if i >= 400 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(
        closed,
        "the server kept a session whose peer never read {sent} answers (limits.write_timeout_ms)"
    );
    // What the kernel had buffered may still be read; then the connection ends.
    let mut answers = 0;
    let drain = async {
        for _ in 0..sent {
            match connection.next_frame().await {
                Ok(_) => answers += 1,
                Err(_) => return,
            }
        }
    };
    tokio::time::timeout(PATIENCE, drain)
        .await
        .expect("the connection should end");
    assert!(
        answers < sent,
        "every request was answered: the session was not closed"
    );
    (sent, answers)
}

// ---- one test per abuse ----

#[tokio::test]
async fn unauthenticated_connections_are_closed_by_the_handshake_and_auth_limits() {
    let server = TestServer::start_with_config(
        "[limits]\ntls_handshake_timeout_ms = 300\nauth_timeout_ms = 300\nunauthenticated_requests_max = 4\n",
    )
    .await;
    let mut refusals = 0;

    // TCP only, no TLS: closed at tls_handshake_timeout_ms (no TLS, so no error frame).
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut buffer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut buffer))
        .await
        .expect("a silent TCP connection is closed")
        .ok();
    refusals += 1;

    // TLS, then an HTTP request that never ends (slowloris): closed at the same limit.
    let mut tls = raw_tls(&server).await;
    tls.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut buffer = Vec::new();
    tokio::time::timeout(PATIENCE, tls.read_to_end(&mut buffer))
        .await
        .expect("an unfinished HTTP request is closed")
        .ok();
    refusals += 1;

    // WebSocket without authenticating: `unauthenticated` at auth_timeout_ms, three at once.
    let idle: Vec<_> = (0..3)
        .map(|_| tokio::spawn(idle_unauthenticated(admin_code(&server))))
        .collect();
    for task in idle {
        refusals += task.await.unwrap();
    }

    // Requests without authenticating: capped at unauthenticated_requests_max.
    refusals += unauthenticated_spammer(admin_code(&server)).await;

    // None of it touched the activation code: the admin still enrols.
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    admin.whoami().await.unwrap();
    eprintln!("unauthenticated abuse: {refusals} refusals");
    assert_eq!(refusals, 2 + 3 + 5);
}

#[tokio::test]
async fn high_rate_requests_are_rate_limited_and_chunk_requests_do_not_bypass_it() {
    let server = TestServer::start_with_config(
        "[limits]\ndevice_requests_per_second = 1\ndevice_request_burst = 40\n",
    )
    .await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &["alice", "mallory", "trudy"]).await;

    // A legitimate attachment of 20 chunks is uploaded and downloaded at full speed under
    // this strict rate: the chunks of a transfer under way are not counted.
    d[0].create_conversation("files", &[], false).await.unwrap();
    let content: Vec<u8> = (0..20 * 32 * 1024u32).map(|i| (i % 251) as u8).collect();
    let source = profiles.path().join("big.bin");
    std::fs::write(&source, &content).unwrap();
    d[0].send_file("files", &source, |_, _| {}).await.unwrap();
    let conversation = d[0].conversation("files").unwrap().unwrap();
    let attachment = d[0]
        .messages(&conversation)
        .unwrap()
        .into_iter()
        .find_map(|m| m.attachment)
        .unwrap();
    let out = profiles.path().join("copy.bin");
    d[0].fetch_attachment(&attachment, &out, |_, _| {}).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), content);

    // Mallory floods ordinary requests: refused `rate_limited` beyond the burst.
    let limited = request_flood(d[1].session().connection(), who_am_i(100), 1, 40).await;

    // Trudy floods chunk requests for blobs she has no transfer of (each costs the server
    // a lookup): limited the same way.
    let chunks = (0..100u32).map(|i| {
        let blob_id = BlobId::from([i as u8; 16]);
        if i % 2 == 0 {
            Request::BlobFetch { blob_id, index: 0 }
        } else {
            Request::BlobUploadChunk {
                blob_id,
                index: 0,
                bytes: vec![0; 16],
            }
        }
    });
    let chunk_limited = request_flood(d[2].session().connection(), chunks, 1, 40).await;

    // Alice, on her own budget, is still served.
    d[0].session().whoami().await.unwrap();
    eprintln!(
        "request floods: {limited} of 100 requests and {chunk_limited} of 100 chunk requests refused rate_limited"
    );
}

#[tokio::test]
async fn endless_uploads_are_bounded_by_size_count_and_session() {
    let server = TestServer::start_with_config("[limits]\nattachment_bytes_max = 200000\n").await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &["oscar"]).await;
    let group = d[0]
        .create_conversation("dump", &[], false)
        .await
        .unwrap()
        .group_id;
    let mut refusals = Vec::new();
    let connection = d[0].session().connection();
    let mut call = async |request: Request| connection.call(request).await;

    // Declared sizes beyond the limits are refused before anything is stored.
    for (bytes_total, chunk_count, expected) in [
        (u64::MAX, u32::MAX, ErrorCode::PolicyViolation),
        (300_000, 10, ErrorCode::LimitReached),
    ] {
        let start = Request::BlobUploadStart {
            group_id: group,
            bytes_total,
            chunk_count,
        };
        let error = call(start).await.unwrap_err();
        assert_eq!(error.code(), Some(expected), "{bytes_total} bytes: {error}");
        refusals.push(expected);
    }

    // An upload takes exactly the chunks it declared: more, or the wrong size, is refused.
    let start = |chunks: u32| Request::BlobUploadStart {
        group_id: group,
        bytes_total: u64::from(chunks) * BLOB_CHUNK_BYTES as u64,
        chunk_count: chunks,
    };
    let Response::BlobUploadStarted { blob_id } = call(start(2)).await.unwrap() else {
        panic!()
    };
    let chunk = |index: u32, len: usize| Request::BlobUploadChunk {
        blob_id,
        index,
        bytes: vec![0; len],
    };
    let error = call(chunk(0, BLOB_CHUNK_BYTES + 1)).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidArgument), "{error}");
    refusals.push(ErrorCode::InvalidArgument);
    call(chunk(0, BLOB_CHUNK_BYTES)).await.unwrap();
    call(chunk(1, BLOB_CHUNK_BYTES)).await.unwrap();
    for index in 2..22 {
        let error = call(chunk(index, BLOB_CHUNK_BYTES)).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::InvalidArgument), "{error}");
        refusals.push(ErrorCode::InvalidArgument);
    }
    call(Request::BlobUploadFinish { blob_id }).await.unwrap();
    let stored = std::fs::metadata(server.data().join("blobs").join(blob_id.to_string()))
        .unwrap()
        .len();
    assert_eq!(
        stored,
        2 * BLOB_CHUNK_BYTES as u64,
        "nothing beyond the declared size"
    );

    // At most four uploads open per session.
    for _ in 0..4 {
        call(start(1)).await.unwrap();
    }
    let error = call(start(1)).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::LimitReached), "{error}");
    refusals.push(ErrorCode::LimitReached);

    // The session's end deletes its unfinished uploads.
    drop(d);
    let blobs = server.data().join("blobs");
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::fs::read_dir(&blobs).unwrap().count() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "unfinished uploads were kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("upload abuse: {} refusals ({refusals:?})", refusals.len());
}

#[tokio::test]
async fn huge_declared_sizes_are_refused_before_anything_is_read() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let mut refusals = 0;

    // WebSocket frame headers declaring 1 TiB, and one byte over frame_bytes_max (64 KiB):
    // the payload never comes, so the refusal is made from the header alone.
    for declared in [1 << 40, 64 * 1024 + 1, u64::MAX >> 1] {
        refusals += huge_header(&server, declared).await;
        admin.whoami().await.unwrap();
    }

    // A message built of fragments, each small, together over the limit.
    let mut socket = raw_websocket(&server).await;
    let fragment = vec![0u8; 16 * 1024];
    let mut refused = None;
    for i in 0..16 {
        let opcode = if i == 0 { 0x2 } else { 0x0 };
        let stream = socket.get_mut();
        let mut bytes = frame_header(opcode, false, fragment.len() as u64);
        bytes.extend_from_slice(&fragment);
        if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
            break;
        }
        // The server answers as soon as the total passes the limit.
        if let Ok(Some(Ok(WsMessage::Binary(bytes)))) =
            tokio::time::timeout(Duration::from_millis(100), socket.next()).await
        {
            refused = Some(decode_server_frame(&bytes, 1 << 20).unwrap());
            break;
        }
    }
    let refused = match refused {
        Some(frame) => frame,
        None => {
            let refusal = read_refusal(&mut socket).await;
            ServerFrame::Error {
                request_id: 0,
                error: refusal.error.expect("fragments over the limit are refused"),
            }
        }
    };
    assert!(
        matches!(&refused, ServerFrame::Error { error, .. } if error.code == ErrorCode::FrameTooLarge),
        "{refused:?}"
    );
    refusals += 1;

    // Inside a frame, a list declaring four billion key packages: the decoder is bounded.
    let code = admin_code(&server);
    let mut connection = Connection::connect(&code.server, &code.pin.0).await.unwrap();
    // The version, request id 1, request 7 (KeyPackagesPublish), list length 2^32 - 1.
    let bytes = vec![
        redoubt_proto::PROTOCOL_VERSION,
        1,
        7,
        0xff,
        0xff,
        0xff,
        0xff,
        0x0f,
    ];
    connection
        .send_raw(WsMessage::Binary(bytes.into()))
        .await
        .unwrap();
    let answer = wait_for_close(&mut connection).await;
    assert_eq!(error_code(&answer), Some(ErrorCode::MalformedFrame), "{answer:?}");
    refusals += 1;

    admin.whoami().await.unwrap();
    eprintln!("huge declared sizes: {refusals} refusals");
}

#[tokio::test]
async fn a_peer_that_never_reads_is_disconnected_by_the_write_timeout() {
    let server = TestServer::start_with_config("[limits]\nwrite_timeout_ms = 300\n").await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &["trudy", "alice"]).await;
    let blob_id = one_chunk_blob(&mut d[0], profiles.path()).await;

    let (sent, answered) = never_reads(d[0].session().connection(), blob_id).await;
    // Others are served throughout, and the server took new sessions after it.
    d[1].session().whoami().await.unwrap();
    let laptop = redoubt_client::Profile::load(&profiles.path().join("trudy"), None).unwrap();
    Session::open(&laptop).await.unwrap().whoami().await.unwrap();
    eprintln!(
        "never-reading peer: disconnected after {sent} requests, {answered} answers were readable (1 refusal: the session closed)"
    );
}

/// Uploads a one-chunk attachment into a solo conversation; returns its blob.
async fn one_chunk_blob(messenger: &mut Messenger, profiles: &std::path::Path) -> BlobId {
    messenger.create_conversation("hoard", &[], false).await.unwrap();
    let source = profiles.join("chunk.bin");
    std::fs::write(&source, vec![42u8; 32 * 1024]).unwrap();
    messenger.send_file("hoard", &source, |_, _| {}).await.unwrap();
    let conversation = messenger.conversation("hoard").unwrap().unwrap();
    messenger
        .messages(&conversation)
        .unwrap()
        .into_iter()
        .find_map(|m| m.attachment)
        .unwrap()
        .blob_id
}

// ---- all at once ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusers_at_once_while_well_behaved_devices_keep_their_service() {
    let server = TestServer::start_with_config(
        "[limits]\nauth_timeout_ms = 1500\nwrite_timeout_ms = 500\nconnections_max = 64\n\
         device_requests_per_second = 10\ndevice_request_burst = 100\n",
    )
    .await;
    let server = Arc::new(server);
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &["alice", "bob", "mallory", "trudy"]).await;
    let mut trudy = d.pop().unwrap();
    let _mallory = d.pop().unwrap();
    d[0].create_conversation("ops", &[user("bob")], false)
        .await
        .unwrap();
    d[1].sync().await.unwrap();
    let hoard = one_chunk_blob(&mut trudy, profiles.path()).await;

    // The abusers, all at once.
    let mut abusers = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let code = admin_code(&server);
        abusers.spawn(async move { ("idle unauthenticated", idle_unauthenticated(code).await) });
    }
    for _ in 0..3 {
        let code = admin_code(&server);
        abusers.spawn(async move { ("unauthenticated requests", unauthenticated_spammer(code).await) });
    }
    for _ in 0..3 {
        let server = server.clone();
        abusers.spawn(async move { ("huge frame header", huge_header(&server, 1 << 40).await) });
    }
    let mallory_profile = redoubt_client::Profile::load(&profiles.path().join("mallory"), None).unwrap();
    abusers.spawn(async move {
        let mut session = Session::open(&mallory_profile).await.unwrap();
        (
            "request flood",
            request_flood(session.connection(), who_am_i(400), 10, 100).await,
        )
    });
    let trudy_profile = redoubt_client::Profile::load(&profiles.path().join("trudy"), None).unwrap();
    abusers.spawn(async move {
        let mut session = Session::open(&trudy_profile).await.unwrap();
        never_reads(session.connection(), hoard).await;
        ("never reads", 1)
    });

    // Meanwhile Alice and Bob talk, and every request of theirs is answered.
    let mut expected = Vec::new();
    for round in 0..8 {
        let text = format!("alice {round}");
        d[0].send_text("ops", &text).await.unwrap();
        expected.push(text);
        d[1].sync().await.unwrap();
        let text = format!("bob {round}");
        d[1].send_text("ops", &text).await.unwrap();
        expected.push(text);
        d[0].sync().await.unwrap();
        d[0].session().whoami().await.unwrap();
    }
    for (i, m) in d.iter().enumerate() {
        let conversation = m.conversation("ops").unwrap().unwrap();
        let got: Vec<String> = m
            .messages(&conversation)
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(got, expected, "device {i}");
    }

    let mut refusals = std::collections::BTreeMap::<&str, usize>::new();
    let all = async {
        while let Some(result) = abusers.join_next().await {
            let (kind, count) = result.unwrap();
            *refusals.entry(kind).or_default() += count;
        }
    };
    tokio::time::timeout(PATIENCE * 2, all)
        .await
        .expect("every abuser was refused or disconnected");
    // Still served after the storm.
    d[0].session().whoami().await.unwrap();
    d[1].session().whoami().await.unwrap();
    eprintln!("abusers at once, refusals by kind: {refusals:?}");
    assert_eq!(refusals["idle unauthenticated"], 6);
    assert_eq!(refusals["unauthenticated requests"], 3 * 5);
    assert_eq!(refusals["huge frame header"], 3);
    assert_eq!(refusals["never reads"], 1);
}
