//! What the fuzz targets share: one organisation key, valid samples of every decoded type
//! (the seed corpus is made from them, see `examples/seed_corpus.rs`), and a valid device
//! profile on disk for the profile target.
//!
//! Keys are fixed, so a crash found on one machine reproduces on every other.

use std::path::Path;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use redoubt_proto::*;

/// The organisation's root key in every target.
pub fn org_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

pub fn org_public_key() -> VerifyingKey {
    org_key().verifying_key()
}

pub fn org_id() -> OrgId {
    OrgId::from([1; 16])
}

/// The device key of the sample certificate and profile.
pub fn device_key() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

fn user(name: &str) -> UserName {
    UserName::parse(name).unwrap_or_else(|e| panic!("sample user name {name:?}: {e}"))
}

pub fn certificate() -> DeviceCertificate {
    DeviceCertificate::issue(
        &CertificateBody {
            version: 1,
            serial: 7,
            org_id: org_id(),
            user: user("alice"),
            device_id: DeviceId::from([3; 16]),
            device_name: DeviceName::parse("phone").unwrap_or_else(|e| panic!("{e}")),
            device_public_key: Bytes(device_key().verifying_key().to_bytes()),
            roles: vec![Role::Admin],
            not_before_unix_s: 1_700_000_000,
            not_after_unix_s: 1_800_000_000,
        },
        &org_key(),
    )
}

pub fn policy_body() -> PolicyBody {
    PolicyBody {
        org_id: org_id(),
        user: user("alice"),
        device_id: DeviceId::from([3; 16]),
        version: 4,
        issued_at_unix_s: 1_700_000_100,
        policy: Policy {
            passcode_required: true,
            passcode_min_length: 8,
            ..Policy::default()
        },
    }
}

pub fn command_body(kind: CommandKind) -> CommandBody {
    CommandBody {
        org_id: org_id(),
        device_id: DeviceId::from([3; 16]),
        command_id: 9,
        kind,
        issued_at_unix_s: 1_700_000_200,
    }
}

/// A hash-chained audit log of `count` entries.
pub fn audit_chain(count: u64) -> Vec<AuditEntry> {
    let mut prev = AUDIT_GENESIS;
    (1..=count)
        .map(|seq| {
            let mut entry = AuditEntry {
                seq,
                at_unix_s: 1_700_000_000 + seq as i64,
                actor_user: (seq % 2 == 1).then(|| user("admin")),
                actor_device: (seq % 3 == 0).then(|| DeviceId::from([3; 16])),
                action: "policy.set".into(),
                subject: "default".into(),
                details: format!("change {seq}"),
                prev_hash: prev,
                hash: AUDIT_GENESIS,
            };
            entry.hash = entry.compute_hash();
            prev = entry.hash;
            entry
        })
        .collect()
}

pub fn checkpoint(entry: &AuditEntry) -> CheckpointBody {
    CheckpointBody {
        org_id: org_id(),
        seq: entry.seq,
        hash: entry.hash,
        at_unix_s: entry.at_unix_s,
    }
}

/// Replaces a document's body by `body` and signs it with [`org_key`], so verification gets
/// past the signature to the body's decoder.
pub fn resign<T: Signable>(body: &[u8]) -> Signed<T> {
    // An empty body and a zero signature: postcard's length 0, then 64 bytes of length 64.
    let empty = [[0, 64].as_slice(), &[0; 64]].concat();
    let mut signed = Signed::<T>::from_bytes(&empty).unwrap_or_else(|e| panic!("empty document: {e}"));
    signed.body = body.to_vec();
    signed.signature = Bytes(org_key().sign(&[T::LABEL, body].concat()).to_bytes());
    signed
}

pub fn client_frames() -> Vec<ClientFrame> {
    let device = DeviceId::from([3; 16]);
    let requests = vec![
        Request::Enroll(EnrollRequest {
            code_id: ActivationCodeId::from([1; 8]),
            secret: ActivationSecret::from_bytes([2; 16]),
            device_public_key: Bytes(device_key().verifying_key().to_bytes()),
            device_name: DeviceName::parse("phone").unwrap_or_else(|e| panic!("{e}")),
            signature: Bytes([4; 64]),
        }),
        Request::Authenticate(AuthenticateRequest {
            certificate: certificate().encoded().to_vec(),
            signature: Bytes([4; 64]),
        }),
        Request::WhoAmI,
        Request::GroupSubmit(GroupSubmit {
            group_id: GroupId::from([6; 32]),
            client_message_id: Bytes([8; 16]),
            message: vec![1, 2, 3],
            welcome: Some(vec![4, 5]),
        }),
        Request::AdminPolicySet {
            scope: PolicyScope::Group(GroupName::parse("finance").unwrap_or_else(|e| panic!("{e}"))),
            settings: PolicySettings {
                passcode_min_length: Some(10),
                attachments_allowed: Some(false),
                ..PolicySettings::default()
            },
        },
        Request::AdminUserImport {
            users: vec![ImportedUser {
                user: user("bob"),
                display_name: Some(DisplayName::parse("Bob").unwrap_or_else(|e| panic!("{e}"))),
                groups: vec![GroupName::parse("finance").unwrap_or_else(|e| panic!("{e}"))],
                roles: vec![Role::Helpdesk],
            }],
        },
        Request::AdminDeviceCommand {
            device,
            kind: CommandKind::Wipe,
        },
        Request::BlobUploadChunk {
            blob_id: BlobId::from([9; 16]),
            index: 2,
            bytes: vec![0xAA; 64],
        },
        Request::KeyPackagesClaim {
            users: vec![user("alice"), user("bob")],
            except_devices: vec![device],
        },
    ];
    requests
        .into_iter()
        .zip(1..)
        .map(|(request, request_id)| ClientFrame { request_id, request })
        .collect()
}

pub fn server_frames() -> Vec<ServerFrame> {
    let chain = audit_chain(3);
    vec![
        ServerFrame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            challenge: Bytes([1; 32]),
            server_time_unix_s: 1_700_000_000,
            frame_bytes_max: 65_536,
            nodes: vec![
                redoubt_proto::ServerAddress::parse("node1.corp.test:8443").unwrap_or_else(|e| panic!("{e}")),
                redoubt_proto::ServerAddress::parse("[2001:db8::2]:8443").unwrap_or_else(|e| panic!("{e}")),
            ],
        }),
        ServerFrame::Error {
            request_id: 3,
            error: ErrorBody::new(ErrorCode::from_u16(7), "nope"),
        },
        ServerFrame::Event(Event::Command(Signed::sign(
            &command_body(CommandKind::Lock),
            &org_key(),
        ))),
        ServerFrame::Response {
            request_id: 4,
            response: Response::Policy(Signed::sign(&policy_body(), &org_key())),
        },
        ServerFrame::Response {
            request_id: 5,
            response: Response::Audit {
                checkpoints: vec![Signed::sign(&checkpoint(&chain[1]), &org_key())],
                entries: chain,
                last_seq: 3,
            },
        },
        ServerFrame::Response {
            request_id: 6,
            response: Response::Enrolled(Enrolled {
                certificate: certificate().encoded().to_vec(),
                org_public_key: Bytes(org_public_key().to_bytes()),
                org_name: "Example".into(),
            }),
        },
    ]
}

pub fn activation_codes() -> Vec<ActivationCode> {
    ["redoubt.example.org:8443", "127.0.0.1:1", "[::1]:443"]
        .into_iter()
        .zip(1u8..)
        .map(|(server, n)| ActivationCode {
            server: ServerAddress::parse(server).unwrap_or_else(|e| panic!("{server}: {e}")),
            pin: Bytes([n; 32]),
            id: ActivationCodeId::from([n; 8]),
            secret: ActivationSecret::from_bytes([n; 16]),
        })
        .collect()
}

/// Policy files as an admin writes them.
pub const POLICY_FILES: &[&str] = &[
    "",
    "passcode_required = true\npasscode_min_length = 8\n",
    "inactivity_lock_seconds = 300\nwipe_after_failed_passcodes = 10\nattachments_allowed = false\n",
    "attachment_bytes_max = 1048576\nmessage_retention_days = 30\ndevices_per_user_max = 3\nnew_device_approval = true\n",
];

const AAD_DEVICE_KEY: &[u8] = b"redoubt/keys/v1/device-key\0";
const KEY_ID: [u8; 16] = [0x42; 16];
const DATA_KEY: [u8; 32] = [0x24; 32];

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// A valid `profile.json` for [`certificate`] (format in crates/client/src/profile.rs).
pub fn profile_json() -> Vec<u8> {
    serde_json::to_vec_pretty(&serde_json::json!({
        "server": "redoubt.example.org:8443",
        "server_certificate_pin": hex(&[1; 32]),
        "org_name": "Example",
        "org_public_key": hex(org_public_key().as_bytes()),
        "certificate": hex(certificate().encoded()),
    }))
    .unwrap_or_default()
}

/// A valid `keys.json` without a passcode, holding [`device_key`] sealed under a fixed
/// data key as the client seals it: nonce ‖ XChaCha20-Poly1305, AAD label ‖ key id.
pub fn keys_json() -> Vec<u8> {
    let nonce = [0x11; 24];
    let aad = [AAD_DEVICE_KEY, &KEY_ID].concat();
    let sealed = XChaCha20Poly1305::new(&chacha20poly1305::Key::from(DATA_KEY))
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: device_key().as_bytes(),
                aad: &aad,
            },
        )
        .unwrap_or_default();
    serde_json::to_vec_pretty(&serde_json::json!({
        "version": 1,
        "key_id": hex(&KEY_ID),
        "protection": "none",
        "data_key": hex(&DATA_KEY),
        "device_key": hex(&[nonce.as_slice(), &sealed].concat()),
        "failed_attempts": 0,
        "wipe_after_failures": null,
        "remote_lock": false,
    }))
    .unwrap_or_default()
}

/// Makes `dir` a profile folder holding exactly these two files (no vault yet).
pub fn write_profile(dir: &Path, profile_json: &[u8], keys_json: &[u8]) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        std::fs::remove_file(entry?.path())?;
    }
    std::fs::write(dir.join("profile.json"), profile_json)?;
    std::fs::write(dir.join("keys.json"), keys_json)
}
