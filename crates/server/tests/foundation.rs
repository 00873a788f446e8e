#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! The foundation end to end: real TLS on loopback, real SQLite files, real keys.

mod support;

use ed25519_dalek::{Signer, SigningKey};
use redoubt_client::{ClientError, Connection, Profile, Session, WsMessage};
use redoubt_proto::*;
use redoubt_server::Clock;
use support::{TestServer, admin_session, enroll};

fn user(name: &str) -> UserName {
    UserName::parse(name).unwrap()
}

#[tokio::test]
async fn happy_path_admin_adds_alice_who_enrolls_two_devices() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();

    // The first admin code is also in the data folder, readable only by the owner.
    let file = server.data().join("admin-activation.txt");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        server.admin_code.as_deref().unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let mut admin = admin_session(&server, profiles.path()).await;
    assert_eq!(admin.info().user, user("admin"));
    assert_eq!(admin.info().roles, vec![Role::Admin]);

    let issued = admin
        .admin_user_add(user("alice"), Some(DisplayName::parse("Alice Liddell").unwrap()))
        .await
        .unwrap();
    assert_eq!(issued.user, user("alice"));
    // Issued a moment ago: the clock moves.
    let left = issued.expires_at_unix_s - server.clock.now_unix_s();
    assert!((72 * 3600 - 5..=72 * 3600).contains(&left), "{left}");

    let phone = enroll(profiles.path(), "alice-phone", &issued.code).await;
    assert_eq!(phone.user(), &user("alice"));
    let mut alice = Session::open(&phone).await.unwrap();
    let who = alice.whoami().await.unwrap();
    assert_eq!(
        (who.user.as_str(), who.device_name.as_str()),
        ("alice", "alice-phone")
    );
    assert_eq!(
        who.display_name.as_ref().map(DisplayName::as_str),
        Some("Alice Liddell")
    );
    assert_eq!(who.roles, vec![]);
    assert_eq!(who.device_id, phone.device_id());

    // A second device for Alice, from `admin device add`.
    let second = admin.admin_device_add(user("alice")).await.unwrap();
    let laptop = enroll(profiles.path(), "alice-laptop", &second.code).await;
    assert_ne!(laptop.device_id(), phone.device_id());
    Session::open(&laptop).await.unwrap();

    let users = admin.admin_user_list().await.unwrap();
    let summary: Vec<_> = users
        .iter()
        .map(|u| (u.user.as_str(), u.devices_active))
        .collect();
    assert_eq!(summary, vec![("admin", 1), ("alice", 2)]);
    let devices = admin.admin_device_list(Some(user("alice"))).await.unwrap();
    assert_eq!(devices.len(), 2);
    assert!(
        devices
            .iter()
            .all(|d| d.last_seen_at_unix_s.is_some() && d.revoked_at_unix_s.is_none())
    );
    let serials: std::collections::HashSet<_> = devices.iter().map(|d| d.certificate_serial).collect();
    assert_eq!(serials.len(), 2, "serials are unique");

    // The device's private key stayed on the device: the server only has public keys.
    let key = Profile::load(&profiles.path().join("alice-phone"), None)
        .unwrap()
        .device_key_seed_for_tests()
        .to_vec();
    assert_eq!(key.len(), 32);
    assert!(
        devices
            .iter()
            .all(|d| d.public_key.0.as_slice() != key.as_slice())
    );
    let db = std::fs::read(server.data().join("redoubt.db")).unwrap();
    let wal = std::fs::read(server.data().join("redoubt.db-wal")).unwrap_or_default();
    for haystack in [&db, &wal] {
        assert!(
            haystack.windows(32).all(|w| w != key.as_slice()),
            "device key found in the database"
        );
    }
    // Profile files are private.
    for file in ["profile.json", "keys.json", "vault.db"] {
        let mode = std::fs::metadata(profiles.path().join("alice-phone").join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    server.stop().await;
}

#[tokio::test]
async fn activation_secret_is_not_stored() {
    let server = TestServer::start().await;
    let code = ActivationCode::parse(server.admin_code.as_deref().unwrap()).unwrap();
    let (dir, _) = server.stop().await;
    let mut bytes = std::fs::read(dir.path().join("redoubt.db")).unwrap();
    bytes.extend(std::fs::read(dir.path().join("redoubt.db-wal")).unwrap_or_default());
    assert!(
        bytes.windows(16).all(|w| w != code.secret.expose()),
        "activation secret stored in plaintext"
    );
}

#[tokio::test]
async fn expired_code_is_refused() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let issued = admin.admin_user_add(user("bob"), None).await.unwrap();
    server.clock.advance(72 * 3600);
    let code = ActivationCode::parse(&issued.code).unwrap();
    let result = redoubt_client::enroll(
        &profiles.path().join("bob"),
        &code,
        DeviceName::parse("bob").unwrap(),
    )
    .await;
    assert_eq!(result.unwrap_err().code(), Some(ErrorCode::ActivationCodeExpired));
    // Nothing was written for the refused device.
    assert!(!profiles.path().join("bob/profile.json").exists());
    assert_eq!(admin.admin_device_list(Some(user("bob"))).await.unwrap().len(), 0);
}

#[tokio::test]
async fn reused_code_is_refused() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let issued = admin.admin_user_add(user("carol"), None).await.unwrap();
    enroll(profiles.path(), "carol-1", &issued.code).await;
    let code = ActivationCode::parse(&issued.code).unwrap();
    let again = redoubt_client::enroll(
        &profiles.path().join("carol-2"),
        &code,
        DeviceName::parse("c2").unwrap(),
    )
    .await;
    assert_eq!(again.unwrap_err().code(), Some(ErrorCode::ActivationCodeUsed));
    assert_eq!(
        admin.admin_device_list(Some(user("carol"))).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn five_wrong_secrets_void_the_code() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let issued = admin.admin_user_add(user("dave"), None).await.unwrap();
    let good = ActivationCode::parse(&issued.code).unwrap();
    let mut wrong = good.clone();
    let mut secret = *good.secret.expose();
    secret[0] ^= 1;
    wrong.secret = ActivationSecret::from_bytes(secret);

    for attempt in 1..=5 {
        let dir = profiles.path().join(format!("dave-{attempt}"));
        let error = redoubt_client::enroll(&dir, &wrong, DeviceName::parse("d").unwrap())
            .await
            .unwrap_err();
        let expected = if attempt < 5 {
            ErrorCode::ActivationSecretWrong
        } else {
            ErrorCode::ActivationCodeVoided
        };
        assert_eq!(error.code(), Some(expected), "attempt {attempt}: {error}");
    }
    // The right secret no longer helps.
    let error = redoubt_client::enroll(
        &profiles.path().join("dave-ok"),
        &good,
        DeviceName::parse("d").unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::ActivationCodeVoided));
    // A fresh code for the same user works.
    let fresh = admin.admin_device_add(user("dave")).await.unwrap();
    enroll(profiles.path(), "dave-fresh", &fresh.code).await;
}

#[tokio::test]
async fn wrong_certificate_pin_is_refused_by_the_client() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let good = ActivationCode::parse(server.admin_code.as_deref().unwrap()).unwrap();
    let mut bad = good.clone();
    bad.pin.0[0] ^= 0xff;
    let error = redoubt_client::enroll(&profiles.path().join("a"), &bad, DeviceName::parse("a").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::PinMismatch { .. }), "{error}");
    assert!(!profiles.path().join("a/profile.json").exists());
    // The client sent nothing: the code has no failed attempt and still works.
    enroll(profiles.path(), "b", server.admin_code.as_deref().unwrap()).await;
}

#[tokio::test]
async fn pinned_profile_refuses_a_server_with_another_certificate() {
    // A device enrolled with server A's pin refuses server B at the same address.
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let profile = enroll(profiles.path(), "admin", server.admin_code.as_deref().unwrap()).await;
    let (_dir, port) = server.stop().await;
    let impostor = TestServer::start_in(tempfile::tempdir().unwrap(), port).await;
    let error = Session::open(&profile).await.unwrap_err();
    assert!(matches!(error, ClientError::PinMismatch { .. }), "{error}");
    impostor.stop().await;
}

/// Authenticates on a raw connection with a certificate and key of the caller's choosing.
async fn authenticate_with(
    profile: &Profile,
    certificate: Vec<u8>,
    key: &SigningKey,
) -> Result<SessionInfo, ClientError> {
    let mut connection = Connection::connect(&profile.server, &profile.pin).await?;
    let transcript = session_transcript(&connection.hello().challenge, connection.tls_exporter());
    let request = Request::Authenticate(AuthenticateRequest {
        certificate,
        signature: Bytes(key.sign(&transcript).to_bytes()),
    });
    match connection.call(request).await? {
        Response::Authenticated(info) => Ok(info),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn certificate_not_signed_by_the_org_key_is_refused() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let profile = enroll(profiles.path(), "admin", server.admin_code.as_deref().unwrap()).await;
    let device_key = SigningKey::from_bytes(
        &Profile::load(&profiles.path().join("admin"), None)
            .unwrap()
            .device_key_seed_for_tests(),
    );

    // The genuine certificate with the genuine key works.
    authenticate_with(&profile, profile.certificate().to_vec(), &device_key)
        .await
        .unwrap();

    // The same body signed by a key that is not the organisation's is refused.
    let forger = SigningKey::from_bytes(&[42; 32]);
    let forged = DeviceCertificate::issue(profile.certificate_body(), &forger);
    let error = authenticate_with(&profile, forged.encoded().to_vec(), &device_key)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::AuthenticationFailed), "{error}");

    // A forged certificate for an attacker's own key, claiming the admin device, too.
    let attacker = SigningKey::from_bytes(&[7; 32]);
    let mut body = profile.certificate_body().clone();
    body.device_public_key = Bytes(attacker.verifying_key().to_bytes());
    let forged = DeviceCertificate::issue(&body, &forger);
    let error = authenticate_with(&profile, forged.encoded().to_vec(), &attacker)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::AuthenticationFailed), "{error}");

    // The genuine certificate with someone else's key fails the challenge signature.
    let error = authenticate_with(&profile, profile.certificate().to_vec(), &attacker)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::AuthenticationFailed), "{error}");

    // Garbage instead of a certificate.
    let error = authenticate_with(&profile, vec![1, 2, 3], &device_key)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::AuthenticationFailed), "{error}");
}

#[tokio::test]
async fn certificate_from_another_organisation_is_refused() {
    let ours = TestServer::start().await;
    let theirs = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let our_profile = enroll(profiles.path(), "ours", ours.admin_code.as_deref().unwrap()).await;
    let their_profile = enroll(profiles.path(), "theirs", theirs.admin_code.as_deref().unwrap()).await;
    let their_key = SigningKey::from_bytes(
        &Profile::load(&profiles.path().join("theirs"), None)
            .unwrap()
            .device_key_seed_for_tests(),
    );
    // Present the other organisation's valid certificate to our server.
    let error = authenticate_with(&our_profile, their_profile.certificate().to_vec(), &their_key)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::AuthenticationFailed), "{error}");
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let profile = enroll(profiles.path(), "admin", server.admin_code.as_deref().unwrap()).await;
    server.clock.advance(366 * 86_400);
    let error = Session::open(&profile).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::CertificateExpired), "{error}");
}

#[tokio::test]
async fn signature_is_bound_to_its_tls_session() {
    // A signature made for one connection (challenge + TLS exporter) does not
    // authenticate another: what a relaying man in the middle would try.
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let profile = enroll(profiles.path(), "admin", server.admin_code.as_deref().unwrap()).await;
    let key = SigningKey::from_bytes(
        &Profile::load(&profiles.path().join("admin"), None)
            .unwrap()
            .device_key_seed_for_tests(),
    );
    let first = Connection::connect(&profile.server, &profile.pin).await.unwrap();
    let signature = key.sign(&session_transcript(
        &first.hello().challenge,
        first.tls_exporter(),
    ));
    let mut second = Connection::connect(&profile.server, &profile.pin).await.unwrap();
    let request = Request::Authenticate(AuthenticateRequest {
        certificate: profile.certificate().to_vec(),
        signature: Bytes(signature.to_bytes()),
    });
    let error = second.call(request).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::AuthenticationFailed), "{error}");
}

#[tokio::test]
async fn non_admin_is_refused_admin_commands() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let issued = admin.admin_user_add(user("erin"), None).await.unwrap();
    let erin = enroll(profiles.path(), "erin", &issued.code).await;
    let mut session = Session::open(&erin).await.unwrap();
    let refused = [
        session.admin_user_add(user("mallory"), None).await.unwrap_err(),
        session.admin_device_add(user("erin")).await.unwrap_err(),
        session.admin_user_list().await.unwrap_err(),
        session.admin_device_list(None).await.unwrap_err(),
    ];
    for error in refused {
        assert_eq!(error.code(), Some(ErrorCode::Forbidden), "{error}");
    }
    // Nothing was created, and the session is still usable.
    let names: Vec<_> = admin
        .admin_user_list()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.user)
        .collect();
    assert_eq!(names, vec![user("admin"), user("erin")]);
    session.whoami().await.unwrap();
}

#[tokio::test]
async fn admin_errors_are_clear() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    admin.admin_user_add(user("frank"), None).await.unwrap();
    let dup = admin.admin_user_add(user("frank"), None).await.unwrap_err();
    assert_eq!(dup.code(), Some(ErrorCode::AlreadyExists));
    let missing = admin.admin_device_add(user("ghost")).await.unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::NotFound));
    let missing = admin.admin_device_list(Some(user("ghost"))).await.unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn requests_before_authentication_are_refused() {
    let server = TestServer::start().await;
    let code = ActivationCode::parse(server.admin_code.as_deref().unwrap()).unwrap();
    let mut connection = Connection::connect(&code.server, &code.pin.0).await.unwrap();
    let error = connection.call(Request::WhoAmI).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Unauthenticated));
    let error = connection.call(Request::AdminUserList).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Unauthenticated));
    // The connection is closed after the limit of unauthenticated requests (4).
    connection.call(Request::WhoAmI).await.unwrap_err();
    connection.call(Request::WhoAmI).await.unwrap_err();
    let error = connection.call(Request::WhoAmI).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(ErrorCode::TooManyUnauthenticatedRequests),
        "{error}"
    );
    assert!(
        connection.next_frame().await.is_err(),
        "connection should be closed"
    );
}

#[tokio::test]
async fn malformed_and_oversized_frames_get_an_error_and_others_keep_service() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let code = ActivationCode::parse(&admin.admin_user_add(user("gina"), None).await.unwrap().code).unwrap();

    let cases: Vec<(WsMessage, ErrorCode)> = vec![
        (
            WsMessage::Binary(vec![redoubt_proto::PROTOCOL_VERSION, 0xff, 0xff, 0xff].into()),
            ErrorCode::MalformedFrame,
        ),
        (
            WsMessage::Binary(vec![9, 0, 2].into()),
            ErrorCode::UnsupportedVersion,
        ),
        (WsMessage::Binary(Vec::new().into()), ErrorCode::MalformedFrame),
        (WsMessage::Text("hello".into()), ErrorCode::MalformedFrame),
        (
            WsMessage::Binary(vec![1; 64 * 1024 + 1].into()),
            ErrorCode::FrameTooLarge,
        ),
    ];
    for (message, expected) in cases {
        let mut connection = Connection::connect(&code.server, &code.pin.0).await.unwrap();
        connection.send_raw(message).await.unwrap();
        match connection.next_frame().await {
            Ok(ServerFrame::Error { request_id: 0, error }) => {
                assert_eq!(error.code, expected, "{}", error.message)
            }
            other => panic!("expected an error frame, got {other:?}"),
        }
        assert!(
            connection.next_frame().await.is_err(),
            "connection should be closed"
        );
        // The authenticated admin session is unaffected.
        admin.whoami().await.unwrap();
    }
    // And the activation code was not touched by any of it.
    enroll(profiles.path(), "gina", &code.to_text()).await;
}

#[tokio::test]
async fn authentication_times_out() {
    let server = TestServer::start_with_config("[limits]\nauth_timeout_ms = 200\n").await;
    let code = ActivationCode::parse(server.admin_code.as_deref().unwrap()).unwrap();
    let mut connection = Connection::connect(&code.server, &code.pin.0).await.unwrap();
    match connection.next_frame().await {
        Ok(ServerFrame::Error { error, .. }) => assert_eq!(error.code, ErrorCode::Unauthenticated),
        other => panic!("expected a timeout error, got {other:?}"),
    }
    assert!(connection.next_frame().await.is_err());
}

#[tokio::test]
async fn per_device_request_rate_is_limited() {
    let server =
        TestServer::start_with_config("[limits]\ndevice_requests_per_second = 1\ndevice_request_burst = 6\n")
            .await;
    // Opening a session spends three of the burst: commands, policy fetch, policy ack.
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let mut limited = None;
    for i in 0..10 {
        if let Err(error) = admin.whoami().await {
            limited = Some((i, error));
            break;
        }
    }
    let (i, error) = limited.expect("no request was rate limited");
    assert!(i >= 3, "limited after only {i} requests");
    assert_eq!(error.code(), Some(ErrorCode::RateLimited));
}

#[tokio::test]
async fn restart_keeps_users_devices_and_keys() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let org_key = server.org_public_key;
    let admin_profile = enroll(profiles.path(), "admin", server.admin_code.as_deref().unwrap()).await;
    let mut admin = Session::open(&admin_profile).await.unwrap();
    let issued = admin.admin_user_add(user("henry"), None).await.unwrap();
    let henry = enroll(profiles.path(), "henry", &issued.code).await;
    let pending = admin.admin_device_add(user("henry")).await.unwrap();
    admin.close().await;

    let (dir, port) = server.stop().await;
    let server = TestServer::start_in(dir, port).await;
    assert_eq!(server.admin_code, None, "the first admin is made once");
    assert_eq!(server.org_public_key, org_key, "the organisation key survives");

    // Existing devices authenticate with their stored profiles (same pin, same org key).
    let admin_profile = Profile::load(&profiles.path().join("admin"), None).unwrap();
    let mut admin = Session::open(&admin_profile).await.unwrap();
    let users: Vec<_> = admin
        .admin_user_list()
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.user, u.devices_active))
        .collect();
    assert_eq!(users, vec![(user("admin"), 1), (user("henry"), 1)]);
    Session::open(&Profile::load(henry.dir(), None).unwrap())
        .await
        .unwrap();
    // A code issued before the restart still works after it.
    enroll(profiles.path(), "henry-2", &pending.code).await;
    server.stop().await;
}
