#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Hostile input: every decoder of bytes from outside answers arbitrary bytes, and valid
//! encodings with bytes flipped, inserted, removed or cut off, with an error — never a panic,
//! and never a value other than the one that was signed. Valid values round-trip.
//!
//! `codec.rs` already covers round trips of the common requests and server frames, arbitrary
//! bytes into the frame, certificate and activation-code decoders, and truncated client
//! frames; this file covers the other frame variants, mutated encodings, signed documents
//! and the audit log. The fuzz targets under `fuzz/` search the same decoders further.

use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use proptest::sample::Index;
use redoubt_proto::*;

const LIMIT: usize = 64 * 1024;

fn org_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn org_id() -> OrgId {
    OrgId::from([1; 16])
}

// ---------------------------------------------------------------- mutations of valid bytes

/// One change to an encoding, at a position chosen relative to its length.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    Overwrite(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
    /// Repeats a slice of the input right after itself (a duplicated field or length).
    Repeat(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Overwrite(at, byte)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        any::<Index>().prop_map(Mutation::Remove),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(at, len)| Mutation::Repeat(at, len)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..4)
}

fn mutate(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for mutation in mutations {
        let len = out.len();
        match *mutation {
            Mutation::FlipBit(at, bit) if len > 0 => out[at.index(len)] ^= 1 << bit,
            Mutation::Overwrite(at, byte) if len > 0 => out[at.index(len)] = byte,
            Mutation::Insert(at, byte) => out.insert(at.index(len + 1), byte),
            Mutation::Remove(at) if len > 0 => {
                out.remove(at.index(len));
            }
            Mutation::Truncate(at) => out.truncate(at.index(len + 1)),
            Mutation::Repeat(at, span) if len > 0 => {
                let start = at.index(len);
                let end = start + 1 + span.index(len - start);
                let copy = out[start..end].to_vec();
                out.splice(end..end, copy);
            }
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------- strategies

fn user_name() -> impl Strategy<Value = UserName> {
    "[a-z0-9][a-z0-9._-]{0,20}".prop_map(|s| UserName::parse(&s).unwrap())
}

fn group_name() -> impl Strategy<Value = GroupName> {
    "[a-z0-9][a-z0-9._-]{0,20}".prop_map(|s| GroupName::parse(&s).unwrap())
}

fn device_name() -> impl Strategy<Value = DeviceName> {
    "[A-Za-z0-9][A-Za-z0-9 ']{0,30}[A-Za-z0-9]".prop_map(|s| DeviceName::parse(&s).unwrap())
}

fn array<const N: usize>() -> impl Strategy<Value = [u8; N]> {
    proptest::collection::vec(any::<u8>(), N).prop_map(|v| v.try_into().unwrap())
}

fn blob() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64)
}

fn role() -> impl Strategy<Value = Role> {
    proptest::sample::select(Role::ALL)
}

fn command_kind() -> impl Strategy<Value = CommandKind> {
    prop_oneof![
        Just(CommandKind::Lock),
        Just(CommandKind::Unlock),
        Just(CommandKind::Wipe)
    ]
}

prop_compose! {
    fn policy_settings()(
        passcode_required in any::<Option<bool>>(),
        passcode_min_length in any::<Option<u32>>(),
        inactivity_lock_seconds in any::<Option<u32>>(),
        wipe_after_failed_passcodes in any::<Option<u32>>(),
        attachments_allowed in any::<Option<bool>>(),
        attachment_bytes_max in any::<Option<u64>>(),
        message_retention_days in any::<Option<u32>>(),
        devices_per_user_max in any::<Option<u32>>(),
        new_device_approval in any::<Option<bool>>(),
        mail_sync_days in any::<Option<u32>>(),
        mail_preview_bytes in any::<Option<u32>>(),
        history in any::<(Option<bool>, Option<u32>, Option<u32>)>(),
        auditors in proptest::collection::vec(array::<32>(), 0..=4),
        auditor_lag in any::<Option<u32>>(),
    ) -> PolicySettings {
        let auditors: Vec<String> = auditors.iter().map(|k| k.iter().map(|b| format!("{b:02x}")).collect()).collect();
        PolicySettings {
            passcode_required,
            passcode_min_length,
            inactivity_lock_seconds,
            wipe_after_failed_passcodes,
            attachments_allowed,
            attachment_bytes_max,
            message_retention_days,
            devices_per_user_max,
            new_device_approval,
            mail_sync_days,
            mail_preview_bytes,
            history_transfer: history.0,
            history_transfer_days: history.1,
            group_history_sharing_max_days: history.2,
            kt_auditor_keys: redoubt_proto::AuditorKeys::parse(&auditors).ok(),
            kt_auditor_max_lag_s: auditor_lag,
        }
    }
}

fn policy() -> impl Strategy<Value = Policy> {
    (policy_settings(), user_name())
        .prop_map(|(settings, user)| Policy::resolve(None, &[], Some((&user, &settings))).0)
}

prop_compose! {
    fn policy_body()(
        org in array::<16>(), user in user_name(), device in array::<16>(),
        version in any::<u64>(), issued in any::<i64>(), policy in policy(),
    ) -> PolicyBody {
        PolicyBody {
            org_id: OrgId::from(org),
            user,
            device_id: DeviceId::from(device),
            version,
            issued_at_unix_s: issued,
            policy,
        }
    }
}

prop_compose! {
    fn command_body()(
        org in array::<16>(), device in array::<16>(), command_id in any::<u64>(),
        kind in command_kind(), issued in any::<i64>(),
    ) -> CommandBody {
        CommandBody {
            org_id: OrgId::from(org),
            device_id: DeviceId::from(device),
            command_id,
            kind,
            issued_at_unix_s: issued,
        }
    }
}

prop_compose! {
    fn checkpoint_body()(
        org in array::<16>(), seq in any::<u64>(), hash in array::<32>(), at in any::<i64>(),
    ) -> CheckpointBody {
        CheckpointBody { org_id: OrgId::from(org), seq, hash: Bytes(hash), at_unix_s: at }
    }
}

prop_compose! {
    fn audit_entry()(
        seq in 0u64..12, at in any::<i64>(),
        actor_user in proptest::option::of(user_name()),
        actor_device in proptest::option::of(array::<16>()),
        action in ".{0,20}", subject in ".{0,20}", details in ".{0,40}",
        prev_hash in array::<32>(), hash in array::<32>(),
    ) -> AuditEntry {
        AuditEntry {
            seq,
            at_unix_s: at,
            actor_user,
            actor_device: actor_device.map(DeviceId::from),
            action,
            subject,
            details,
            prev_hash: Bytes(prev_hash),
            hash: Bytes(hash),
        }
    }
}

/// A well-linked log: each entry's `prev_hash` and `hash` set as the server sets them.
fn chain(mut entries: Vec<AuditEntry>) -> Vec<AuditEntry> {
    let mut prev = AUDIT_GENESIS;
    for (entry, seq) in entries.iter_mut().zip(1..) {
        entry.seq = seq;
        entry.prev_hash = prev;
        entry.hash = entry.compute_hash();
        prev = entry.hash;
    }
    entries
}

/// Requests `codec.rs` does not generate.
fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (array::<32>(), array::<16>(), blob(), proptest::option::of(blob())).prop_map(
            |(group, id, message, welcome)| Request::GroupSubmit(GroupSubmit {
                group_id: GroupId::from(group),
                client_message_id: Bytes(id),
                message,
                welcome,
            })
        ),
        (
            proptest::collection::vec(blob(), 0..4),
            proptest::option::of(blob())
        )
            .prop_map(|(key_packages, last_resort)| Request::KeyPackagesPublish {
                key_packages,
                last_resort
            }),
        (
            proptest::collection::vec(user_name(), 0..4),
            proptest::collection::vec(array::<16>(), 0..3)
        )
            .prop_map(|(users, devices)| Request::KeyPackagesClaim {
                users,
                except_devices: devices.into_iter().map(DeviceId::from).collect(),
            }),
        (array::<16>(), any::<u32>(), blob()).prop_map(|(blob_id, index, bytes)| {
            Request::BlobUploadChunk {
                blob_id: BlobId::from(blob_id),
                index,
                bytes,
            }
        }),
        (
            prop_oneof![
                Just(PolicyScope::Default),
                group_name().prop_map(PolicyScope::Group),
                user_name().prop_map(PolicyScope::User),
            ],
            policy_settings()
        )
            .prop_map(|(scope, settings)| Request::AdminPolicySet { scope, settings }),
        proptest::collection::vec(
            (
                user_name(),
                proptest::collection::vec(group_name(), 0..3),
                proptest::collection::vec(role(), 0..2)
            ),
            0..3
        )
        .prop_map(|users| Request::AdminUserImport {
            users: users
                .into_iter()
                .map(|(user, groups, roles)| ImportedUser {
                    user,
                    display_name: None,
                    groups,
                    roles,
                })
                .collect(),
        }),
        (array::<16>(), command_kind()).prop_map(|(device, kind)| Request::AdminDeviceCommand {
            device: DeviceId::from(device),
            kind
        }),
        (user_name(), role(), any::<bool>()).prop_map(|(user, role, grant)| Request::AdminRole {
            user,
            role,
            grant
        }),
        proptest::collection::vec(any::<u64>(), 0..5).prop_map(|ids| Request::InboxAck { ids }),
        (array::<32>(), any::<u64>(), any::<u32>()).prop_map(|(group, after_seq, limit)| {
            Request::GroupFetch {
                group_id: GroupId::from(group),
                after_seq,
                limit,
            }
        }),
        any::<u64>().prop_map(|version| Request::PolicyAck { version }),
        any::<u64>().prop_map(|command_id| Request::CommandAck { command_id }),
        Just(Request::CommandsFetch),
        Just(Request::OwnDevices),
        (array::<16>(), array::<32>(), any::<bool>()).prop_map(|(target, group, own)| {
            Request::HistoryBegin {
                target: DeviceId::from(target),
                group_id: GroupId::from(group),
                own,
            }
        }),
        (array::<16>(), any::<u32>()).prop_map(|(target, messages)| Request::HistorySent {
            target: DeviceId::from(target),
            messages,
        }),
        array::<32>().prop_map(|group| Request::HistoryReceived {
            group_id: GroupId::from(group)
        }),
    ]
}

/// Server frames `codec.rs` does not generate: events, signed documents, the audit log.
fn server_frame() -> impl Strategy<Value = ServerFrame> {
    let key = org_key();
    let event = prop_oneof![
        (array::<32>(), any::<u64>()).prop_map(|(group, seq)| Event::GroupAppended {
            group_id: GroupId::from(group),
            seq
        }),
        Just(Event::InboxChanged),
        any::<u64>().prop_map(|version| Event::PolicyChanged { version }),
        (
            array::<32>(),
            proptest::collection::vec(
                (
                    any::<u64>(),
                    array::<16>(),
                    proptest::collection::vec(any::<u8>(), 0..64),
                    any::<i64>()
                ),
                0..4
            )
        )
            .prop_map(|(group, entries)| Event::GroupEntries {
                group_id: GroupId::from(group),
                entries: entries
                    .into_iter()
                    .map(|(seq, sender, message, server_time_unix_s)| GroupEntry {
                        seq,
                        sender: DeviceId::from(sender),
                        message,
                        server_time_unix_s,
                    })
                    .collect(),
            }),
        command_body().prop_map(move |body| Event::Command(Signed::sign(&body, &org_key()))),
        array::<16>().prop_map(|device| Event::DeviceReady {
            device: DeviceId::from(device)
        }),
    ];
    let response = prop_oneof![
        policy_body().prop_map(move |body| Response::Policy(Signed::sign(&body, &key))),
        proptest::collection::vec(command_body(), 0..3).prop_map(|bodies| Response::Commands(
            bodies.iter().map(|b| Signed::sign(b, &org_key())).collect()
        )),
        (
            proptest::collection::vec(audit_entry(), 0..4),
            proptest::collection::vec(checkpoint_body(), 0..2),
            any::<u64>()
        )
            .prop_map(|(entries, bodies, last_seq)| Response::Audit {
                entries,
                checkpoints: bodies.iter().map(|b| Signed::sign(b, &org_key())).collect(),
                last_seq,
            }),
        (
            any::<u64>(),
            proptest::collection::vec((group_name(), policy_settings()), 0..3)
        )
            .prop_map(|(version, documents)| Response::PolicyReport(PolicyReport {
                version,
                documents: documents
                    .into_iter()
                    .map(|(g, s)| (PolicyScope::Group(g), s))
                    .collect(),
                effective: None,
            })),
        (
            proptest::collection::vec((any::<u64>(), array::<16>(), blob()), 0..3),
            any::<u64>()
        )
            .prop_map(|(entries, last_seq)| Response::GroupEntries {
                entries: entries
                    .into_iter()
                    .map(|(seq, sender, message)| GroupEntry {
                        seq,
                        sender: DeviceId::from(sender),
                        message,
                        server_time_unix_s: 0,
                    })
                    .collect(),
                last_seq,
            }),
        (blob(), any::<u32>(), any::<u64>()).prop_map(|(bytes, chunk_count, bytes_total)| {
            Response::BlobChunk {
                bytes,
                chunk_count,
                bytes_total,
            }
        }),
        Just(Response::Done),
    ];
    prop_oneof![
        event.prop_map(ServerFrame::Event),
        (any::<u64>(), response)
            .prop_map(|(request_id, response)| ServerFrame::Response { request_id, response }),
    ]
}

// ---------------------------------------------------------------- signed documents

/// A document holding any `body`, signed by `key` under the kind's label.
fn sign_raw<T: Signable>(body: &[u8], key: &SigningKey) -> Signed<T> {
    let signature = Bytes(key.sign(&[T::LABEL, body].concat()).to_bytes());
    Signed::<T>::from_bytes(&postcard::to_stdvec(&(body, signature)).unwrap()).unwrap()
}

/// What every signed kind must do, whatever its body type.
fn check_signed_kind<T>(value: &T, noise: &[u8], changes: &[Mutation]) -> Result<(), TestCaseError>
where
    T: Signable + PartialEq + std::fmt::Debug,
{
    let key = org_key();
    let public = key.verifying_key();
    let signed = Signed::sign(value, &key);
    let stored = signed.to_bytes();

    // Round trip through storage.
    let loaded = Signed::<T>::from_bytes(&stored).unwrap();
    prop_assert_eq!(&loaded.verify(&public).unwrap(), value);

    // Arbitrary bytes: refused, or at least never verified.
    if let Ok(document) = Signed::<T>::from_bytes(noise) {
        prop_assert!(document.verify(&public).is_err());
    }

    // A mutated stored document: whatever still verifies is exactly what was signed.
    let mutated = mutate(&stored, changes);
    if let Ok(document) = Signed::<T>::from_bytes(&mutated)
        && let Ok(verified) = document.verify(&public)
    {
        prop_assert_eq!(&document, &signed, "a changed document verified");
        prop_assert_eq!(&verified, value);
    }

    // A mutated body, correctly signed (a compromised or buggy signer): the body's decoder
    // refuses it or yields a value, never panics; a cut-off body is always refused.
    let body = mutate(&signed.body, changes);
    if let Ok(decoded) = sign_raw::<T>(&body, &key).verify(&public) {
        prop_assert_eq!(&Signed::sign(&decoded, &key).verify(&public).unwrap(), &decoded);
    }
    for cut in 0..signed.body.len() {
        prop_assert!(sign_raw::<T>(&signed.body[..cut], &key).verify(&public).is_err());
    }
    let mut longer = signed.body.clone();
    longer.push(0);
    prop_assert!(matches!(
        sign_raw::<T>(&longer, &key).verify(&public),
        Err(SignedError::Malformed(_))
    ));

    // Another key's signature.
    let other = SigningKey::from_bytes(&[8; 32]);
    prop_assert_eq!(
        Signed::sign(value, &other).verify(&public),
        Err(SignedError::BadSignature)
    );
    Ok(())
}

// ---------------------------------------------------------------- certificates

const CERTIFICATE_LABEL: &[u8] = b"redoubt/device-certificate/v1\0";

/// A certificate envelope (postcard: body bytes, signature) around any body, signed by `key`.
fn certificate_envelope(body: &[u8], key: &SigningKey) -> Vec<u8> {
    let signature = Bytes(key.sign(&[CERTIFICATE_LABEL, body].concat()).to_bytes());
    postcard::to_stdvec(&(body, signature)).unwrap()
}

prop_compose! {
    fn certificate_body()(
        serial in any::<u64>(), user in user_name(), device in array::<16>(),
        device_name in device_name(), device_key in array::<32>(),
        roles in proptest::collection::vec(role(), 0..3),
        not_before in any::<i64>(), days in 0i64..10_000,
    ) -> CertificateBody {
        CertificateBody {
            version: 1,
            serial,
            org_id: org_id(),
            user,
            device_id: DeviceId::from(device),
            device_name,
            device_public_key: Bytes(device_key),
            roles,
            not_before_unix_s: not_before,
            not_after_unix_s: not_before.saturating_add(days * 86_400),
        }
    }
}

// ---------------------------------------------------------------- activation codes

/// The text form of any payload, with a correct checksum: gets past the typo check to the
/// version, length and address checks.
fn activation_text(payload: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let checksum = Sha256::digest(payload);
    let encoded = data_encoding::BASE32_NOPAD.encode(&[payload, &checksum[..4]].concat());
    format!("RDB-{encoded}")
}

prop_compose! {
    fn activation_code()(
        id in array::<8>(), secret in array::<16>(), pin in array::<32>(), port in 1u16..,
        host in "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,20}){0,3}",
    ) -> ActivationCode {
        ActivationCode {
            server: ServerAddress::parse(&format!("{host}:{port}")).unwrap(),
            pin: Bytes(pin),
            id: ActivationCodeId::from(id),
            secret: ActivationSecret::from_bytes(secret),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // ------------------------------------------------------------ frames

    #[test]
    fn other_requests_round_trip(request_id in any::<u64>(), request in request()) {
        let frame = ClientFrame { request_id, request };
        prop_assert_eq!(decode_client_frame(&encode_client_frame(&frame), LIMIT).unwrap(), frame);
    }

    #[test]
    fn events_and_signed_responses_round_trip(frame in server_frame()) {
        prop_assert_eq!(decode_server_frame(&encode_server_frame(&frame), LIMIT).unwrap(), frame);
    }

    #[test]
    fn mutated_client_frames_never_panic(
        request_id in any::<u64>(), request in request(), changes in mutations(),
    ) {
        let bytes = mutate(&encode_client_frame(&ClientFrame { request_id, request }), &changes);
        // A change inside an opaque byte string still decodes; whatever decodes re-encodes.
        if let Ok(frame) = decode_client_frame(&bytes, LIMIT) {
            prop_assert_eq!(decode_client_frame(&encode_client_frame(&frame), LIMIT).unwrap(), frame);
        }
    }

    #[test]
    fn mutated_server_frames_never_panic(frame in server_frame(), changes in mutations()) {
        let bytes = mutate(&encode_server_frame(&frame), &changes);
        if let Ok(frame) = decode_server_frame(&bytes, LIMIT) {
            prop_assert_eq!(decode_server_frame(&encode_server_frame(&frame), LIMIT).unwrap(), frame);
        }
    }

    #[test]
    fn cut_or_extended_server_frames_are_refused(
        frame in server_frame(), cut in any::<Index>(), extra in proptest::collection::vec(any::<u8>(), 1..8),
    ) {
        let bytes = encode_server_frame(&frame);
        prop_assert!(decode_server_frame(&bytes[..cut.index(bytes.len())], LIMIT).is_err());
        let longer = [bytes.as_slice(), &extra].concat();
        prop_assert_eq!(
            decode_server_frame(&longer, LIMIT),
            Err(DecodeError::TrailingBytes(extra.len()))
        );
    }

    #[test]
    fn frames_over_the_limit_are_refused_whatever_they_hold(
        frame in server_frame(), limit in 0usize..64,
    ) {
        let bytes = encode_server_frame(&frame);
        if bytes.len() > limit {
            prop_assert_eq!(
                decode_server_frame(&bytes, limit),
                Err(DecodeError::TooLarge { len: bytes.len(), max: limit })
            );
        }
    }

    // ------------------------------------------------------------ activation codes

    #[test]
    fn checksummed_garbage_codes_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..320)) {
        // Right checksum, anything else: version, lengths, UTF-8 and the address are checked.
        if let Ok(code) = ActivationCode::parse(&activation_text(&payload)) {
            prop_assert_eq!(ActivationCode::parse(&code.to_text()).unwrap(), code);
        }
    }

    #[test]
    fn checksummed_codes_with_bad_fields_are_refused(
        version in 2u8.., address_len in any::<u8>(), address in ".{0,40}", code in activation_code(),
    ) {
        // A valid code's payload with, in turn, a wrong version, a wrong address length and
        // an arbitrary address.
        let valid = data_encoding::BASE32_NOPAD
            .decode(code.to_text()[4..].replace('-', "").as_bytes())
            .unwrap();
        let payload = &valid[..valid.len() - 4];
        let fixed = 1 + 8 + 16 + 32 + 1;
        let mut wrong_version = payload.to_vec();
        wrong_version[0] = version;
        prop_assert_eq!(
            ActivationCode::parse(&activation_text(&wrong_version)),
            Err(ActivationCodeError::Version(version))
        );
        let mut wrong_length = payload.to_vec();
        wrong_length[fixed - 1] = address_len;
        if usize::from(address_len) != payload.len() - fixed {
            prop_assert_eq!(
                ActivationCode::parse(&activation_text(&wrong_length)),
                Err(ActivationCodeError::Length)
            );
        }
        // At most 40 characters of at most 4 bytes: the length fits its byte.
        let mut other_address = payload[..fixed].to_vec();
        other_address[fixed - 1] = address.len() as u8;
        other_address.extend_from_slice(address.as_bytes());
        match ActivationCode::parse(&activation_text(&other_address)) {
            Ok(parsed) => prop_assert_eq!(parsed.server, ServerAddress::parse(&address).unwrap()),
            Err(error) => prop_assert!(matches!(error, ActivationCodeError::Address(_)), "{error:?}"),
        }
    }

    #[test]
    fn mistyped_codes_are_refused(code in activation_code(), changes in mutations()) {
        // Any change the parser does not ignore (case, dashes, spaces) is caught.
        let text = code.to_text();
        let typed = String::from_utf8_lossy(&mutate(text.as_bytes(), &changes)).into_owned();
        if let Ok(parsed) = ActivationCode::parse(&typed) {
            prop_assert_eq!(parsed, code);
        }
    }

    #[test]
    fn random_base32_codes_are_refused(body in "[A-Z2-7-]{0,140}") {
        let text = format!("RDB-{body}");
        prop_assert!(ActivationCode::parse(&text).is_err());
    }

    // ------------------------------------------------------------ certificates

    #[test]
    fn certificates_round_trip(body in certificate_body()) {
        let certificate = DeviceCertificate::issue(&body, &org_key());
        let decoded = DeviceCertificate::decode(certificate.encoded()).unwrap();
        prop_assert_eq!(&decoded, &certificate);
        let verified = decoded
            .verify(&org_key().verifying_key(), &org_id(), body.not_before_unix_s)
            .unwrap();
        prop_assert_eq!(verified.body(), &body);
    }

    #[test]
    fn mutated_certificates_never_verify(body in certificate_body(), changes in mutations()) {
        let certificate = DeviceCertificate::issue(&body, &org_key());
        let bytes = mutate(certificate.encoded(), &changes);
        let verified = DeviceCertificate::decode(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                c.verify(&org_key().verifying_key(), &org_id(), body.not_before_unix_s)
                    .map_err(|e| e.to_string())
            });
        if bytes != certificate.encoded() {
            prop_assert!(verified.is_err(), "a changed certificate verified");
        }
    }

    #[test]
    fn signed_garbage_certificate_bodies_never_panic(
        body in certificate_body(), changes in mutations(), noise in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        // The organisation's signature is right, the body is not: the body's decoder must
        // refuse it or yield a certificate that round-trips.
        let valid_body = postcard::to_stdvec(&body).unwrap();
        for candidate in [mutate(&valid_body, &changes), noise] {
            let envelope = certificate_envelope(&candidate, &org_key());
            if let Ok(decoded) = DeviceCertificate::decode(&envelope) {
                prop_assert_eq!(decoded.encoded(), envelope.as_slice());
                let reissued = DeviceCertificate::issue(decoded.unverified_body(), &org_key());
                prop_assert_eq!(reissued.unverified_body(), decoded.unverified_body());
            }
        }
        for cut in 0..valid_body.len() {
            prop_assert!(DeviceCertificate::decode(&certificate_envelope(&valid_body[..cut], &org_key())).is_err());
        }
    }

    // ------------------------------------------------------------ signed documents

    #[test]
    fn signed_policies_refuse_hostile_bytes(
        body in policy_body(), noise in proptest::collection::vec(any::<u8>(), 0..300), changes in mutations(),
    ) {
        check_signed_kind(&body, &noise, &changes)?;
    }

    #[test]
    fn signed_commands_refuse_hostile_bytes(
        body in command_body(), noise in proptest::collection::vec(any::<u8>(), 0..300), changes in mutations(),
    ) {
        check_signed_kind(&body, &noise, &changes)?;
    }

    #[test]
    fn signed_checkpoints_refuse_hostile_bytes(
        body in checkpoint_body(), noise in proptest::collection::vec(any::<u8>(), 0..300), changes in mutations(),
    ) {
        check_signed_kind(&body, &noise, &changes)?;
    }

    #[test]
    fn a_document_of_one_kind_never_verifies_as_another(policy in policy_body(), command in command_body()) {
        let key = org_key();
        let public = key.verifying_key();
        let policy = Signed::sign(&policy, &key).to_bytes();
        let command = Signed::sign(&command, &key).to_bytes();
        prop_assert_eq!(
            Signed::<CommandBody>::from_bytes(&policy).unwrap().verify(&public),
            Err(SignedError::BadSignature)
        );
        prop_assert_eq!(
            Signed::<CheckpointBody>::from_bytes(&command).unwrap().verify(&public),
            Err(SignedError::BadSignature)
        );
        prop_assert_eq!(
            Signed::<PolicyBody>::from_bytes(&command).unwrap().verify(&public),
            Err(SignedError::BadSignature)
        );
    }

    // ------------------------------------------------------------ audit log

    #[test]
    fn arbitrary_audit_logs_never_panic(
        entries in proptest::collection::vec(audit_entry(), 0..8),
        bodies in proptest::collection::vec(checkpoint_body(), 0..3),
        relink in any::<bool>(),
    ) {
        let entries = if relink { chain(entries) } else { entries };
        let checkpoints: Vec<_> = bodies.iter().map(|b| Signed::sign(b, &org_key())).collect();
        if let Ok(verified) = verify_audit_log(&entries, &checkpoints, &org_key().verifying_key(), &org_id()) {
            prop_assert_eq!(verified.entries, entries.len() as u64);
            prop_assert!(verified.signed_through <= verified.entries);
        }
    }

    #[test]
    fn valid_audit_logs_verify(
        entries in proptest::collection::vec(audit_entry(), 0..10),
        signed in proptest::collection::vec(any::<Index>(), 0..3),
    ) {
        let entries = chain(entries);
        let checkpoints: Vec<_> = if entries.is_empty() { vec![] } else {
            signed.iter().map(|i| {
                let entry = &entries[i.index(entries.len())];
                Signed::sign(&CheckpointBody { org_id: org_id(), seq: entry.seq, hash: entry.hash, at_unix_s: 0 }, &org_key())
            }).collect()
        };
        let through = signed.iter().filter(|_| !entries.is_empty()).map(|i| i.index(entries.len()) as u64 + 1).max().unwrap_or(0);
        prop_assert_eq!(
            verify_audit_log(&entries, &checkpoints, &org_key().verifying_key(), &org_id()),
            Ok(AuditVerified { entries: entries.len() as u64, signed_through: through })
        );
    }

    #[test]
    fn an_altered_audit_entry_is_named(
        entries in proptest::collection::vec(audit_entry(), 1..10),
        at in any::<Index>(), field in 0u8..9, noise in array::<32>(),
    ) {
        let mut entries = chain(entries);
        let i = at.index(entries.len());
        let entry = &mut entries[i];
        let before = entry.clone();
        match field {
            0 => entry.seq = entry.seq.wrapping_add(1 + u64::from(noise[0])),
            1 => entry.at_unix_s = entry.at_unix_s.wrapping_add(1),
            2 => entry.actor_user = match &entry.actor_user { Some(_) => None, None => Some(UserName::parse("mallory").unwrap()) },
            3 => entry.actor_device = match entry.actor_device { Some(_) => None, None => Some(DeviceId::from([9; 16])) },
            4 => entry.action.push('!'),
            5 => entry.subject.push('!'),
            6 => entry.details.push('!'),
            7 => entry.prev_hash = Bytes(noise),
            _ => entry.hash = Bytes(noise),
        }
        prop_assume!(*entry != before);
        let error = verify_audit_log(&entries, &[], &org_key().verifying_key(), &org_id()).unwrap_err();
        prop_assert_eq!(error.seq, i as u64 + 1, "{}", error);
    }

    #[test]
    fn removed_audit_entries_are_found(
        entries in proptest::collection::vec(audit_entry(), 2..10), at in any::<Index>(),
    ) {
        let mut entries = chain(entries);
        let head = entries.last().unwrap().clone();
        let checkpoint = Signed::sign(
            &CheckpointBody { org_id: org_id(), seq: head.seq, hash: head.hash, at_unix_s: 0 },
            &org_key(),
        );
        entries.remove(at.index(entries.len()));
        prop_assert!(verify_audit_log(&entries, &[checkpoint], &org_key().verifying_key(), &org_id()).is_err());
    }

    #[test]
    fn checkpoints_not_from_the_organisation_are_refused(
        entries in proptest::collection::vec(audit_entry(), 1..6), other_org in array::<16>(),
    ) {
        prop_assume!(OrgId::from(other_org) != org_id());
        let entries = chain(entries);
        let head = &entries[0];
        let body = CheckpointBody { org_id: org_id(), seq: head.seq, hash: head.hash, at_unix_s: 0 };
        let public = org_key().verifying_key();
        let forged = Signed::sign(&body, &SigningKey::from_bytes(&[8; 32]));
        prop_assert_eq!(verify_audit_log(&entries, &[forged], &public, &org_id()).unwrap_err().seq, 0);
        let foreign = Signed::sign(&CheckpointBody { org_id: OrgId::from(other_org), ..body }, &org_key());
        prop_assert!(verify_audit_log(&entries, &[foreign], &public, &org_id()).is_err());
    }
}
