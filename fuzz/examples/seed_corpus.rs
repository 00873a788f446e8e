//! Writes the seed corpus, a handful of valid inputs per target, into `fuzz/corpus/<target>/`:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus
//! ```
//!
//! The files are checked in; run this again when a format changes. Seeds are named by what
//! they hold, so rerunning replaces them instead of adding copies. Each seed is checked to
//! be accepted first, so the fuzzer starts from inputs that reach deep into each decoder.

use std::path::Path;

use redoubt_fuzz::*;
use redoubt_proto::*;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = dir.join(format!("seed-{name}"));
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The target's selector byte, then the input.
fn selected(selector: u8, bytes: &[u8]) -> Vec<u8> {
    [&[selector], bytes].concat()
}

fn main() {
    for (i, frame) in client_frames().iter().enumerate() {
        assert_eq!(
            decode_client_frame(&encode_client_frame(frame), usize::MAX).as_ref(),
            Ok(frame)
        );
        write(
            "frame_decode",
            &format!("client-{i}"),
            &encode_client_frame(frame),
        );
    }
    for (i, frame) in server_frames().iter().enumerate() {
        assert_eq!(
            decode_server_frame(&encode_server_frame(frame), usize::MAX).as_ref(),
            Ok(frame)
        );
        write(
            "frame_decode",
            &format!("server-{i}"),
            &encode_server_frame(frame),
        );
    }

    for (i, code) in activation_codes().iter().enumerate() {
        assert_eq!(ActivationCode::parse(&code.to_text()).as_ref(), Ok(code));
        write(
            "activation_code_decode",
            &format!("code-{i}"),
            code.to_text().as_bytes(),
        );
    }
    let spaced = format!(
        "  {}\n",
        activation_codes()[0].to_text().to_lowercase().replace('-', " ")
    );
    write("activation_code_decode", "spaced-lower-case", spaced.as_bytes());

    let cert = certificate();
    let now = cert.unverified_body().not_before_unix_s;
    assert!(cert.clone().verify(&org_public_key(), &org_id(), now).is_ok());
    write("certificate_decode", "certificate", cert.encoded());

    // Selector: 0 policy, 1 command, 2 checkpoint; bit 7 set = the rest is a body to sign.
    let chain = audit_chain(3);
    let policy = Signed::sign(&policy_body(), &org_key());
    let command = Signed::sign(&command_body(CommandKind::Wipe), &org_key());
    let checkpoint_doc = Signed::sign(&checkpoint(&chain[2]), &org_key());
    write("signed_decode", "policy", &selected(0, &policy.to_bytes()));
    write("signed_decode", "command", &selected(1, &command.to_bytes()));
    write(
        "signed_decode",
        "checkpoint",
        &selected(2, &checkpoint_doc.to_bytes()),
    );
    write("signed_decode", "policy-body", &selected(0x80, &policy.body));
    write("signed_decode", "command-body", &selected(0x81, &command.body));
    write(
        "signed_decode",
        "checkpoint-body",
        &selected(0x82, &checkpoint_doc.body),
    );

    assert!(policy.verify(&org_public_key()).is_ok() && command.verify(&org_public_key()).is_ok());
    assert!(checkpoint_doc.verify(&org_public_key()).is_ok());
    for (i, text) in POLICY_FILES.iter().enumerate() {
        let settings: PolicySettings = toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(settings.validate(), Ok(()));
        write("policy_toml_decode", &format!("policy-{i}"), text.as_bytes());
    }

    // postcard of (flags, entries, checkpoint bodies); see the target for the flags.
    let audit = |flags: u8, entries: &[AuditEntry], bodies: &[CheckpointBody]| {
        postcard::to_stdvec(&(flags, entries, bodies)).unwrap_or_else(|e| panic!("{e}"))
    };
    let signed = [Signed::sign(&checkpoint(&chain[1]), &org_key())];
    assert!(verify_audit_log(&chain, &signed, &org_public_key(), &org_id()).is_ok());
    write(
        "audit_log_verify",
        "valid",
        &audit(0, &chain, &[checkpoint(&chain[1])]),
    );
    write(
        "audit_log_verify",
        "relinked",
        &audit(1, &chain, &[checkpoint(&chain[2])]),
    );
    write(
        "audit_log_verify",
        "other-key",
        &audit(2, &chain, &[checkpoint(&chain[0])]),
    );
    write("audit_log_verify", "empty", &audit(0, &[], &[]));

    // The seeds open: the fuzzer starts from a profile that loads.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_profile(dir.path(), &profile_json(), &keys_json()).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = redoubt_client::Profile::load(dir.path(), None) {
        panic!("the sample profile does not load: {e}");
    }
    // Selector bit 0 clear: the input is keys.json; set: the input is profile.json.
    write("profile_load", "keys-json", &selected(0, &keys_json()));
    write("profile_load", "profile-json", &selected(1, &profile_json()));
    let mut passcode_keys: serde_json::Value =
        serde_json::from_slice(&keys_json()).unwrap_or_else(|e| panic!("{e}"));
    passcode_keys["protection"] = "passcode".into();
    passcode_keys["kdf"] = serde_json::json!({
        "algorithm": "argon2id", "salt": "00".repeat(16), "memory_kib": 8, "iterations": 1, "parallelism": 1,
    });
    passcode_keys["wrapped_data_key"] = "00".repeat(72).into();
    if let Some(keys) = passcode_keys.as_object_mut() {
        keys.remove("data_key");
    }
    let passcode_keys = serde_json::to_vec_pretty(&passcode_keys).unwrap_or_else(|e| panic!("{e}"));
    write_profile(dir.path(), &profile_json(), &passcode_keys).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        redoubt_client::Profile::load(dir.path(), None),
        Err(redoubt_client::ClientError::PasscodeRequired)
    ));
    write("profile_load", "keys-json-passcode", &selected(0, &passcode_keys));

    // What a calendar server answers: a PROPFIND listing, an event, a contact.
    for (name, answer) in DAV_ANSWERS {
        assert!(
            redoubt_connector::read_server_answer_for_fuzzing(answer.as_bytes()) > 0,
            "the sample {name} is not read"
        );
        write("dav_response_parse", name, answer.as_bytes());
    }
}

/// Seeds for `dav_response_parse`, as Radicale writes them.
const DAV_ANSWERS: [(&str, &str); 3] = [
    (
        "multistatus",
        "<?xml version='1.0' encoding='utf-8'?>\n<multistatus xmlns=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\" xmlns:CS=\"http://calendarserver.org/ns/\"><response><href>/alice%40corp.test/calendar/</href><propstat><prop><getetag>\"ca5d\"</getetag><CS:getctag>\"ca5d\"</CS:getctag><sync-token>http://radicale.org/ns/sync/e3b0</sync-token><resourcetype><C:calendar /><collection /></resourcetype></prop><status>HTTP/1.1 200 OK</status></propstat></response><response><href>/alice%40corp.test/calendar/ev-1.ics</href><propstat><prop><getetag>\"431a\"</getetag><resourcetype /></prop><status>HTTP/1.1 200 OK</status></propstat><propstat><prop><CS:getctag /></prop><status>HTTP/1.1 404 Not Found</status></propstat></response></multistatus>",
    ),
    (
        "event",
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Redoubt//Connector//EN\r\nBEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nEND:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:ev-1@example.com\r\nDTSTAMP:20300101T000000Z\r\nDTSTART;TZID=Europe/Berlin:20300102T100000\r\nDURATION:PT45M\r\nSUMMARY:Budget review\\, Q3\r\nLOCATION:Room 7\r\nATTENDEE;CN=\"Bob\";RSVP=TRUE:mailto:bob@corp.test\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT5M\r\nEND:VALARM\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:ev-1@example.com\r\nRECURRENCE-ID;VALUE=DATE:20300109\r\nDTSTART;VALUE=DATE:20300109\r\nSUMMARY:Moved\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    ),
    (
        "contact",
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c-1\r\nFN:Bob Builder\\, Jr.\r\nN:Builder;Bob;;;Jr.\r\nitem1.EMAIL;type=INTERNET;type=pref:bob@corp.test\r\nTEL;TYPE=CELL:+49 30 1234\r\nTEL;VALUE=uri:tel:+1-555-0100\r\nEND:VCARD\r\n",
    ),
];
