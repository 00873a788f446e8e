#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Property tests of the codec: every frame round-trips, and no input makes a decoder panic.

use proptest::prelude::*;
use redoubt_proto::*;

fn user_name() -> impl Strategy<Value = UserName> {
    "[a-z0-9][a-z0-9._-]{0,20}".prop_map(|s| UserName::parse(&s).unwrap())
}

fn device_name() -> impl Strategy<Value = DeviceName> {
    "[A-Za-z0-9][A-Za-z0-9 ']{0,30}[A-Za-z0-9]".prop_map(|s| DeviceName::parse(&s).unwrap())
}

fn display_name() -> impl Strategy<Value = Option<DisplayName>> {
    proptest::option::of("[A-Za-zé][A-Za-z é.]{0,40}[a-z]".prop_map(|s| DisplayName::parse(&s).unwrap()))
}

fn bytes<const N: usize>() -> impl Strategy<Value = Bytes<N>> {
    proptest::collection::vec(any::<u8>(), N).prop_map(|v| Bytes::try_from(v.as_slice()).unwrap())
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            bytes::<8>(),
            bytes::<16>(),
            bytes::<32>(),
            device_name(),
            bytes::<64>()
        )
            .prop_map(|(id, secret, key, name, sig)| Request::Enroll(EnrollRequest {
                code_id: ActivationCodeId(id),
                secret: ActivationSecret::from_bytes(secret.0),
                device_public_key: key,
                device_name: name,
                signature: sig,
            })),
        (proptest::collection::vec(any::<u8>(), 0..600), bytes::<64>()).prop_map(
            |(certificate, signature)| {
                Request::Authenticate(AuthenticateRequest {
                    certificate,
                    signature,
                })
            }
        ),
        Just(Request::WhoAmI),
        (user_name(), display_name())
            .prop_map(|(user, display_name)| Request::AdminUserAdd { user, display_name }),
        user_name().prop_map(|user| Request::AdminDeviceAdd { user }),
        Just(Request::AdminUserList),
        proptest::option::of(user_name()).prop_map(|user| Request::AdminDeviceList { user }),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (
            bytes::<32>(),
            any::<i64>(),
            any::<u32>(),
            proptest::collection::vec(("[a-z]{1,20}(\\.[a-z]{1,10}){0,2}", 1u16..), 0..4)
        )
            .prop_map(|(challenge, t, max, nodes)| {
                ServerFrame::Hello(Hello {
                    protocol_version: PROTOCOL_VERSION,
                    challenge,
                    server_time_unix_s: t,
                    frame_bytes_max: max,
                    nodes: nodes
                        .into_iter()
                        .map(|(host, port)| ServerAddress::parse(&format!("{host}:{port}")).unwrap())
                        .collect(),
                })
            }),
        (any::<u64>(), any::<u16>(), ".{0,50}").prop_map(|(request_id, code, message)| {
            ServerFrame::Error {
                request_id,
                error: ErrorBody::new(ErrorCode::from_u16(code), message),
            }
        }),
        (any::<u64>(), user_name(), ".{0,80}", any::<i64>()).prop_map(|(request_id, user, code, at)| {
            ServerFrame::Response {
                request_id,
                response: Response::ActivationCodeIssued(IssuedActivationCode {
                    user,
                    code,
                    expires_at_unix_s: at,
                }),
            }
        }),
        (
            any::<u64>(),
            proptest::collection::vec((user_name(), display_name(), any::<i64>(), any::<u32>()), 0..5)
        )
            .prop_map(|(request_id, users)| ServerFrame::Response {
                request_id,
                response: Response::Users(
                    users
                        .into_iter()
                        .map(|(user, display_name, created, n)| UserSummary {
                            user,
                            display_name,
                            roles: vec![Role::Admin],
                            created_at_unix_s: created,
                            devices_active: n,
                        })
                        .collect()
                ),
            }),
    ]
}

const LIMIT: usize = 64 * 1024;

proptest! {
    #[test]
    fn client_frames_round_trip(request_id in any::<u64>(), request in request()) {
        let frame = ClientFrame { request_id, request };
        let bytes = encode_client_frame(&frame);
        prop_assert_eq!(decode_client_frame(&bytes, LIMIT).unwrap(), frame);
    }

    #[test]
    fn server_frames_round_trip(frame in server_frame()) {
        let bytes = encode_server_frame(&frame);
        prop_assert_eq!(decode_server_frame(&bytes, LIMIT).unwrap(), frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_client_frame(&bytes, LIMIT);
        let _ = decode_server_frame(&bytes, LIMIT);
        let _ = DeviceCertificate::decode(&bytes);
        let _ = ActivationCode::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn versioned_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        // With the right version byte the decoder reaches postcard for every input.
        let mut framed = vec![PROTOCOL_VERSION];
        framed.extend_from_slice(&bytes);
        let _ = decode_client_frame(&framed, LIMIT);
        let _ = decode_server_frame(&framed, LIMIT);
    }

    #[test]
    fn truncated_frames_are_errors(request in request(), cut in any::<prop::sample::Index>()) {
        let bytes = encode_client_frame(&ClientFrame { request_id: 1, request });
        let cut = cut.index(bytes.len());
        prop_assert!(decode_client_frame(&bytes[..cut], LIMIT).is_err());
    }

    #[test]
    fn activation_codes_round_trip(
        id in bytes::<8>(), secret in bytes::<16>(), pin in bytes::<32>(), port in 1u16..,
        host in "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,20}){0,3}",
    ) {
        let code = ActivationCode {
            server: ServerAddress::parse(&format!("{host}:{port}")).unwrap(),
            pin,
            id: ActivationCodeId(id),
            secret: ActivationSecret::from_bytes(secret.0),
        };
        prop_assert_eq!(ActivationCode::parse(&code.to_text()).unwrap(), code);
    }
}

#[test]
fn oversized_frame_is_refused_before_decoding() {
    let frame = encode_client_frame(&ClientFrame {
        request_id: 1,
        request: Request::WhoAmI,
    });
    let mut big = frame.clone();
    big.resize(LIMIT + 1, 0);
    assert_eq!(
        decode_client_frame(&big, LIMIT),
        Err(DecodeError::TooLarge {
            len: LIMIT + 1,
            max: LIMIT
        })
    );
}

#[test]
fn wrong_version_and_trailing_bytes_are_refused() {
    let mut frame = encode_client_frame(&ClientFrame {
        request_id: 1,
        request: Request::WhoAmI,
    });
    frame.push(0);
    assert_eq!(
        decode_client_frame(&frame, LIMIT),
        Err(DecodeError::TrailingBytes(1))
    );
    frame.pop();
    for other in [PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1] {
        frame[0] = other;
        assert_eq!(
            decode_client_frame(&frame, LIMIT),
            Err(DecodeError::UnsupportedVersion(other))
        );
    }
    assert_eq!(decode_client_frame(&[], LIMIT), Err(DecodeError::Empty));
}

#[test]
fn huge_declared_length_does_not_allocate() {
    // An Authenticate whose certificate claims 2^32 bytes but carries 3: postcard must
    // notice the input is short instead of reserving the declared size.
    let mut frame = vec![PROTOCOL_VERSION, 1, 1];
    frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]);
    assert!(matches!(
        decode_client_frame(&frame, LIMIT),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn unknown_error_codes_survive_decoding() {
    let frame = ServerFrame::Error {
        request_id: 3,
        error: ErrorBody::new(ErrorCode::Unknown(999), "new"),
    };
    let decoded = decode_server_frame(&encode_server_frame(&frame), LIMIT).unwrap();
    assert_eq!(decoded, frame);
}
