//! `verify_audit_log` on any entries and checkpoints: `Ok` or the first break, never a
//! panic. The input is postcard of (flags, entries, checkpoint bodies); flag bit 0 re-links
//! and re-hashes the entries so the fuzzer gets past the hash checks, bit 1 signs the
//! checkpoints with another key than the organisation's.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use redoubt_fuzz::{org_id, org_key, org_public_key};
use redoubt_proto::{AUDIT_GENESIS, AuditEntry, CheckpointBody, Signed, verify_audit_log};

fuzz_target!(|data: &[u8]| {
    let Ok(((flags, mut entries, bodies), _)) =
        postcard::take_from_bytes::<(u8, Vec<AuditEntry>, Vec<CheckpointBody>)>(data)
    else {
        return;
    };
    if flags & 1 != 0 {
        let mut prev = AUDIT_GENESIS;
        for entry in &mut entries {
            entry.prev_hash = prev;
            entry.hash = entry.compute_hash();
            prev = entry.hash;
        }
    }
    let key = if flags & 2 != 0 {
        SigningKey::from_bytes(&[8; 32])
    } else {
        org_key()
    };
    let checkpoints: Vec<Signed<CheckpointBody>> =
        bodies.iter().map(|body| Signed::sign(body, &key)).collect();
    if let Ok(verified) = verify_audit_log(&entries, &checkpoints, &org_public_key(), &org_id()) {
        assert_eq!(verified.entries, entries.len() as u64);
        assert!(verified.signed_through <= verified.entries);
    }
});
