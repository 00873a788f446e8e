#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Hostile input on the device: a profile folder whose `keys.json` or `profile.json` holds
//! arbitrary, mutated or ill-typed content is refused with an error, never a panic; a
//! tampered vault value or wrapped data key never opens; and policy files (TOML, read as the
//! CLI reads them) are refused or round-trip. The fuzz targets under `fuzz/` search further.
//!
//! The profile is written here from scratch in the documented format (see
//! `crates/client/src/profile.rs`), with fixed keys, so no server is needed.

use std::path::Path;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};
use redoubt_client::{ClientError, Profile, VaultError};
use redoubt_proto::*;
use serde_json::{Value, json};

const KEY_ID: [u8; 16] = [0x42; 16];
const DATA_KEY: [u8; 32] = [0x24; 32];
const AAD_DATA_KEY: &[u8] = b"redoubt/keys/v1/data-key\0";
const AAD_DEVICE_KEY: &[u8] = b"redoubt/keys/v1/device-key\0";
const PASSCODE: &str = "correct horse";
const SALT: [u8; 16] = [0x33; 16];

fn org_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn device_key() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// As the client seals: a 24-byte nonce ‖ XChaCha20-Poly1305 ciphertext ‖ tag.
fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce = [0x11; 24];
    let sealed = XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key))
        .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad })
        .unwrap();
    [nonce.as_slice(), &sealed].concat()
}

/// argon2id with deliberately tiny costs, so each test case takes microseconds.
fn passcode_key(passcode: &str) -> [u8; 32] {
    let params = argon2::Params::new(8, 1, 1, Some(32)).unwrap();
    let mut key = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(passcode.as_bytes(), &SALT, &mut key)
        .unwrap();
    key
}

fn certificate() -> DeviceCertificate {
    DeviceCertificate::issue(
        &CertificateBody {
            version: 1,
            serial: 7,
            org_id: OrgId::from([1; 16]),
            user: UserName::parse("alice").unwrap(),
            device_id: DeviceId::from([3; 16]),
            device_name: DeviceName::parse("phone").unwrap(),
            device_public_key: Bytes(device_key().verifying_key().to_bytes()),
            roles: vec![],
            not_before_unix_s: 1_700_000_000,
            not_after_unix_s: 1_800_000_000,
        },
        &org_key(),
    )
}

fn profile_json() -> Value {
    json!({
        "server": "redoubt.example.org:8443",
        "server_certificate_pin": hex(&[1; 32]),
        "org_name": "Example",
        "org_public_key": hex(org_key().verifying_key().as_bytes()),
        "certificate": hex(certificate().encoded()),
    })
}

fn sealed_device_key() -> Vec<u8> {
    seal(
        &DATA_KEY,
        &[AAD_DEVICE_KEY, &KEY_ID].concat(),
        device_key().as_bytes(),
    )
}

/// `keys.json` without a passcode.
fn keys_json() -> Value {
    json!({
        "version": 1,
        "key_id": hex(&KEY_ID),
        "protection": "none",
        "data_key": hex(&DATA_KEY),
        "device_key": hex(&sealed_device_key()),
        "failed_attempts": 0,
        "wipe_after_failures": null,
        "remote_lock": false,
    })
}

fn wrapped_data_key() -> Vec<u8> {
    seal(
        &passcode_key(PASSCODE),
        &[AAD_DATA_KEY, &KEY_ID].concat(),
        &DATA_KEY,
    )
}

/// `keys.json` with the data key wrapped under [`PASSCODE`].
fn passcode_keys_json(wrapped: &[u8]) -> Value {
    json!({
        "version": 1,
        "key_id": hex(&KEY_ID),
        "protection": "passcode",
        "kdf": { "algorithm": "argon2id", "salt": hex(&SALT), "memory_kib": 8, "iterations": 1, "parallelism": 1 },
        "wrapped_data_key": hex(wrapped),
        "device_key": hex(&sealed_device_key()),
        "failed_attempts": 0,
        "wipe_after_failures": null,
        "remote_lock": false,
    })
}

fn bytes_of(value: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(value).unwrap()
}

/// Makes `dir` a profile folder holding exactly these two files: no vault, no leftovers
/// of the case before.
fn write_profile(dir: &Path, profile: &[u8], keys: &[u8]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    std::fs::write(dir.join("profile.json"), profile).unwrap();
    std::fs::write(dir.join("keys.json"), keys).unwrap();
}

fn failed_attempts_on_disk(dir: &Path) -> u64 {
    let keys: Value = serde_json::from_slice(&std::fs::read(dir.join("keys.json")).unwrap()).unwrap();
    keys["failed_attempts"].as_u64().unwrap()
}

// ---------------------------------------------------------------- mutations of valid bytes

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    Overwrite(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Overwrite(at, byte)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        any::<Index>().prop_map(Mutation::Remove),
        any::<Index>().prop_map(Mutation::Truncate),
    ];
    proptest::collection::vec(one, 1..4)
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
            _ => {}
        }
    }
    out
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

// ---------------------------------------------------------------- profile files

#[test]
fn the_hand_written_profile_loads() {
    // The fixtures below are only worth something if the untouched files open.
    let dir = tempfile::tempdir().unwrap();
    write_profile(dir.path(), &bytes_of(&profile_json()), &bytes_of(&keys_json()));
    let profile = Profile::load(dir.path(), None).unwrap();
    assert_eq!(profile.certificate(), certificate().encoded());
    drop(profile);

    let passcode_keys = bytes_of(&passcode_keys_json(&wrapped_data_key()));
    write_profile(dir.path(), &bytes_of(&profile_json()), &passcode_keys);
    assert!(matches!(
        Profile::load(dir.path(), None),
        Err(ClientError::PasscodeRequired)
    ));
    assert!(matches!(
        Profile::load(dir.path(), Some("wrong")),
        Err(ClientError::PasscodeWrong { attempts_left: None })
    ));
    assert!(Profile::load(dir.path(), Some(PASSCODE)).unwrap().has_passcode());
}

#[test]
fn arbitrary_profile_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (profile, keys) = (bytes_of(&profile_json()), bytes_of(&keys_json()));
    let noise = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..1024),
        // Text that looks like JSON gets further into serde_json.
        "[{}\\[\\]\":, 0-9a-z_.e+-]{0,200}".prop_map(String::into_bytes),
    ];
    runner(256)
        .run(&(noise, any::<bool>()), |(noise, in_keys)| {
            let (profile, keys) = if in_keys {
                (profile.as_slice(), noise.as_slice())
            } else {
                (noise.as_slice(), keys.as_slice())
            };
            write_profile(dir.path(), profile, keys);
            prop_assert!(Profile::load(dir.path(), None).is_err());
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_profile_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (profile, keys) = (bytes_of(&profile_json()), bytes_of(&keys_json()));
    runner(256)
        .run(&(mutations(), any::<bool>()), |(changes, in_keys)| {
            let (profile, keys) = if in_keys {
                (profile.clone(), mutate(&keys, &changes))
            } else {
                (mutate(&profile, &changes), keys.clone())
            };
            write_profile(dir.path(), &profile, &keys);
            // Some changes are harmless (white space, hex case, the organisation's display
            // name); whatever loads holds the certified device key.
            if let Ok(loaded) = Profile::load(dir.path(), None) {
                let expected = certificate();
                prop_assert_eq!(loaded.certificate(), expected.encoded());
            }
            Ok(())
        })
        .unwrap();
}

/// A `keys.json` field: the valid value, or one that must be refused.
fn field(valid: Value, hostile: Vec<Value>) -> impl Strategy<Value = (bool, Value)> {
    prop_oneof![
        3 => Just((false, valid)),
        1 => proptest::sample::select(hostile).prop_map(|v| (true, v)),
    ]
}

/// Missing (`None`), or present with this value.
const ABSENT: Value = Value::Null;

#[test]
fn ill_typed_keys_json_is_refused() {
    // Each field is valid or hostile; the file loads if and only if none is hostile. A
    // hostile kdf is refused before argon2id could run with it.
    let dir = tempfile::tempdir().unwrap();
    let profile = bytes_of(&profile_json());
    let sealed = sealed_device_key();
    let mut flipped = sealed.clone();
    flipped[30] ^= 1;
    let fields = (
        field(
            json!(1),
            vec![json!(0), json!(2), json!(-1), json!("1"), json!(1.5), ABSENT],
        ),
        field(
            json!(hex(&KEY_ID)),
            vec![
                json!(hex(&KEY_ID[..15])),
                json!(hex(&[KEY_ID.as_slice(), &[0]].concat())),
                json!("zz"),
                json!(""),
                json!(7),
            ],
        ),
        field(
            json!(hex(&DATA_KEY)),
            vec![
                json!(hex(&DATA_KEY[..31])),
                json!(hex(&[9; 32])),
                json!("not hex"),
                json!([1, 2]),
                ABSENT,
            ],
        ),
        field(
            json!(hex(&sealed)),
            vec![
                json!(hex(&flipped)),
                json!(hex(&sealed[..sealed.len() - 1])),
                json!(hex(&sealed[..39])),
                json!(hex(&[sealed.as_slice(), &[0]].concat())),
                json!(""),
                json!("0"),
            ],
        ),
        field(
            json!("none"),
            vec![json!("passcode"), json!("None"), json!(""), json!(0)],
        ),
        // Fields that do not belong with protection "none", or to keys.json at all.
        field(
            ABSENT,
            vec![
                json!({"kdf": {"algorithm": "argon2id", "salt": "00", "memory_kib": 8, "iterations": 1, "parallelism": 1}}),
                json!({"wrapped_data_key": "00"}),
                json!({"extra": true}),
            ],
        ),
        field(
            json!(0),
            vec![json!(-1), json!(4_294_967_296u64), json!("0"), json!(null)],
        ),
    );
    runner(512)
        .run(
            &fields,
            |(
                (v1, version),
                (v2, key_id),
                (v3, data_key),
                (v4, device_key),
                (v5, protection),
                (v6, extra),
                (v7, failed),
            )| {
                let mut keys = keys_json();
                let set = |keys: &mut Value, name: &str, value: Value| match value {
                    Value::Null if name != "failed_attempts" => {
                        keys.as_object_mut().unwrap().remove(name);
                    }
                    value => keys[name] = value,
                };
                set(&mut keys, "version", version);
                set(&mut keys, "key_id", key_id);
                set(&mut keys, "data_key", data_key);
                set(&mut keys, "device_key", device_key);
                set(&mut keys, "protection", protection);
                set(&mut keys, "failed_attempts", failed);
                if let Value::Object(more) = extra {
                    keys.as_object_mut().unwrap().extend(more);
                }
                write_profile(dir.path(), &profile, &bytes_of(&keys));
                let hostile = v1 || v2 || v3 || v4 || v5 || v6 || v7;
                let loaded = Profile::load(dir.path(), Some(PASSCODE));
                prop_assert_eq!(loaded.is_err(), hostile, "{} gave {:?}", keys, loaded.err());
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn hostile_kdf_settings_are_refused_before_any_work() {
    // Out-of-range argon2id costs would let a planted keys.json make an unlock allocate or
    // run without bound; each must be refused, whatever the passcode.
    let dir = tempfile::tempdir().unwrap();
    let profile = bytes_of(&profile_json());
    let hostile = [
        ("algorithm", json!("argon2i")),
        ("algorithm", json!("")),
        ("salt", json!("not hex")),
        ("salt", json!("")),
        ("memory_kib", json!(0)),
        ("memory_kib", json!(4 * 1024 * 1024 + 1)),
        ("memory_kib", json!(u32::MAX)),
        ("iterations", json!(0)),
        ("iterations", json!(65)),
        ("parallelism", json!(0)),
        ("parallelism", json!(17)),
        ("parallelism", json!(-1)),
    ];
    for (name, value) in hostile {
        let mut keys = passcode_keys_json(&wrapped_data_key());
        keys["kdf"][name] = value.clone();
        write_profile(dir.path(), &profile, &bytes_of(&keys));
        let started = std::time::Instant::now();
        let result = Profile::load(dir.path(), Some(PASSCODE));
        assert!(result.is_err(), "kdf {name} = {value} was accepted");
        assert!(
            started.elapsed().as_secs() < 5,
            "kdf {name} = {value} ran argon2id"
        );
    }
}

#[test]
fn a_tampered_wrapped_data_key_is_a_wrong_passcode() {
    // The right passcode, a changed wrapped key: it never opens, and the attempt counts.
    let dir = tempfile::tempdir().unwrap();
    let profile = bytes_of(&profile_json());
    let wrapped = wrapped_data_key();
    let candidates = prop_oneof![
        mutations().prop_map(move |changes| mutate(&wrapped, &changes)),
        proptest::collection::vec(any::<u8>(), 0..120),
    ];
    let original = wrapped_data_key();
    runner(128)
        .run(&candidates, |tampered| {
            prop_assume!(tampered != original);
            write_profile(dir.path(), &profile, &bytes_of(&passcode_keys_json(&tampered)));
            let result = Profile::load(dir.path(), Some(PASSCODE));
            prop_assert!(
                matches!(result, Err(ClientError::PasscodeWrong { attempts_left: None })),
                "{:?}",
                result.map(|_| "opened")
            );
            prop_assert_eq!(failed_attempts_on_disk(dir.path()), 1);
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------- vault values

#[test]
fn tampered_vault_values_never_open() {
    let dir = tempfile::tempdir().unwrap();
    write_profile(dir.path(), &bytes_of(&profile_json()), &bytes_of(&keys_json()));
    let profile = Profile::load(dir.path(), None).unwrap();
    let vault = profile.vault();
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0u8..4)
        .map(|i| (vec![b'k', i], vec![i; 10 * usize::from(i)]))
        .collect();
    for (key, value) in &entries {
        vault.put("hostile", key, value).unwrap();
    }
    // A second connection plays the attacker who can write the file.
    let raw = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
    let sealed_of = |key: &[u8]| -> Vec<u8> {
        raw.query_row(
            "SELECT value FROM entry WHERE ns = 'hostile' AND key = ?1",
            [key],
            |row| row.get(0),
        )
        .unwrap()
    };
    let originals: Vec<Vec<u8>> = entries.iter().map(|(key, _)| sealed_of(key)).collect();
    let set = |key: &[u8], sealed: &[u8]| {
        raw.execute(
            "UPDATE entry SET value = ?2 WHERE ns = 'hostile' AND key = ?1",
            rusqlite::params![key, sealed],
        )
        .unwrap();
    };

    let tampering = prop_oneof![
        mutations().prop_map(|changes| (0u8, changes, vec![])),
        // Another row's ciphertext, valid under the same key but for another (ns, key).
        Just((1u8, vec![], vec![])),
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(|noise| (2u8, vec![], noise)),
    ];
    runner(256)
        .run(&(any::<Index>(), tampering), |(at, (how, changes, noise))| {
            let i = at.index(entries.len());
            let (key, value) = &entries[i];
            let tampered = match how {
                0 => mutate(&originals[i], &changes),
                1 => originals[(i + 1) % originals.len()].clone(),
                _ => noise,
            };
            prop_assume!(tampered != originals[i]);
            set(key, &tampered);
            let got = vault.get("hostile", key);
            prop_assert!(
                matches!(got, Err(VaultError::Corrupt { .. })),
                "{:?}",
                got.map(|v| v.map(|v| v.to_vec()))
            );
            let all = vault.get_by_prefix("hostile", b"k").map(|rows| rows.len());
            prop_assert!(matches!(all, Err(VaultError::Corrupt { .. })), "{:?}", all);
            set(key, &originals[i]);
            prop_assert_eq!(
                vault.get("hostile", key).unwrap().unwrap().to_vec(),
                value.clone()
            );
            Ok(())
        })
        .unwrap();

    // A valid value moved under another key, or into another namespace, does not open there.
    raw.execute(
        "INSERT INTO entry (ns, key, value) VALUES ('hostile', ?1, ?2)",
        rusqlite::params![b"moved".as_slice(), originals[1]],
    )
    .unwrap();
    let moved = vault.get("hostile", "moved").map(|v| v.is_some());
    assert!(matches!(moved, Err(VaultError::Corrupt { .. })), "{moved:?}");
    raw.execute(
        "INSERT INTO entry (ns, key, value) VALUES ('elsewhere', ?1, ?2)",
        rusqlite::params![entries[1].0, originals[1]],
    )
    .unwrap();
    let moved = vault.get("elsewhere", &entries[1].0).map(|v| v.is_some());
    assert!(matches!(moved, Err(VaultError::Corrupt { .. })), "{moved:?}");
}

// ---------------------------------------------------------------- policy files

/// What the CLI does with a policy file (crates/cli/src/manage.rs, `read_policy_file`).
fn read_policy(text: &str) -> Result<PolicySettings, String> {
    let settings: PolicySettings = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    settings.validate()?;
    Ok(settings)
}

/// A TOML value of any type, ill-typed or out of range for most settings.
fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0i64..100_000).prop_map(|n| n.to_string()),
        Just("18446744073709551615".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "\"[a-z0-9 ]{0,10}\"",
        Just("1979-05-27T07:32:00Z".to_owned()),
        Just("inf".to_owned()),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|v| {
                let pairs: Vec<String> = v.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", pairs.join(", "))
            }),
        ]
    })
}

fn setting_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(PolicySettings::NAMES).prop_map(str::to_owned),
        1 => "[a-z_]{1,24}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_policy_text_never_panics(text in ".{0,300}") {
        let _ = read_policy(&text);
    }

    #[test]
    fn policy_files_with_any_values_are_refused_or_round_trip(
        lines in proptest::collection::vec((setting_name(), toml_value()), 0..6),
    ) {
        let text: String = lines.iter().map(|(name, value)| format!("{name} = {value}\n")).collect();
        if let Ok(settings) = read_policy(&text) {
            for (name, _) in &lines {
                prop_assert!(PolicySettings::NAMES.contains(&name.as_str()), "unknown {} accepted", name);
            }
            let written = toml::to_string(&settings).unwrap();
            prop_assert_eq!(read_policy(&written), Ok(settings));
        }
    }

    #[test]
    fn mutated_policy_files_never_panic(
        text in proptest::sample::select(&[
            "passcode_required = true\npasscode_min_length = 8\n",
            "inactivity_lock_seconds = 300\nwipe_after_failed_passcodes = 10\nattachments_allowed = false\n",
            "attachment_bytes_max = 1048576 # 1 MiB\nmessage_retention_days = 30\ndevices_per_user_max = 3\n",
        ][..]),
        changes in mutations(),
    ) {
        let mutated = String::from_utf8_lossy(&mutate(text.as_bytes(), &changes)).into_owned();
        if let Ok(settings) = read_policy(&mutated) {
            prop_assert_eq!(read_policy(&toml::to_string(&settings).unwrap()), Ok(settings));
        }
    }
}

#[test]
fn deeply_nested_policy_text_is_refused() {
    // An array or inline table nested far beyond any real file must be an error, not a
    // stack overflow.
    for depth in [100, 1_000, 100_000] {
        let arrays = format!("passcode_required = {}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(read_policy(&arrays).is_err(), "depth {depth}");
        let tables = format!(
            "passcode_required = {}{}",
            "{ a = ".repeat(depth),
            "}".repeat(depth)
        );
        assert!(read_policy(&tables).is_err(), "depth {depth}");
    }
}

#[test]
fn values_beyond_toml_integers_are_refused() {
    for text in [
        "attachment_bytes_max = 18446744073709551615",
        "attachment_bytes_max = 9223372036854775808",
        "passcode_min_length = 4294967296",
        "passcode_min_length = -1",
        "passcode_min_length = 8.0",
        "passcode_required = 1",
        "unknown_setting = true",
        "[passcode_required]",
    ] {
        assert!(read_policy(text).is_err(), "{text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A history part comes from another device: any bytes are refused or decoded, never a
    /// panic, and nothing over the part limit is decoded at all.
    #[test]
    fn arbitrary_history_parts_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = redoubt_mls::history::HistoryPart::decode(&bytes);
        let _ = redoubt_mls::AppBody::decode(&bytes);
    }

    #[test]
    fn history_parts_round_trip(
        names in proptest::collection::vec("[a-z]{1,12}", 0..4),
        texts in proptest::collection::vec(".{0,40}", 0..6),
    ) {
        use redoubt_mls::history::*;
        let sender = redoubt_proto::UserName::parse("alice").unwrap();
        let part = HistoryPart {
            conversations: names.iter().enumerate().map(|(i, name)| HistoryConversation {
                group_id: redoubt_proto::GroupId::from([i as u8; 32]),
                name: name.clone(),
                peer: None,
                settings: ConversationSettings { share_history_days: i as u32 },
                messages: texts.iter().enumerate().map(|(seq, text)| HistoryMessage {
                    seq: seq as u64 + 1,
                    sender_user: sender.clone(),
                    sender_device: redoubt_proto::DeviceId::from([7; 16]),
                    sent_at_unix_s: 1_700_000_000,
                    server_time_unix_s: 1_700_000_001,
                    text: text.clone(),
                    attachment: None,
                    event: false,
                    delivered: vec![sender.clone()],
                    read: vec![],
                }).collect(),
            }).collect(),
        };
        prop_assert_eq!(HistoryPart::decode(&part.encode()).unwrap(), part);
    }
}

#[test]
fn history_parts_over_the_limit_are_refused_before_decoding() {
    let big = vec![0u8; redoubt_mls::history::HISTORY_PART_BYTES_MAX as usize + 1];
    let error = redoubt_mls::history::HistoryPart::decode(&big).unwrap_err();
    assert!(error.to_string().contains("exceeds"), "{error}");
}
