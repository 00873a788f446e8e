//! `DeviceCertificate::decode` then `verify` on any bytes: errors, never a panic. A
//! certificate that decodes is exactly its input (no trailing or non-canonical bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use redoubt_fuzz::{org_id, org_public_key};
use redoubt_proto::DeviceCertificate;

fuzz_target!(|data: &[u8]| {
    let Ok(certificate) = DeviceCertificate::decode(data) else {
        return;
    };
    assert_eq!(certificate.encoded(), data);
    let now = certificate.unverified_body().not_before_unix_s;
    if let Ok(verified) = certificate.verify(&org_public_key(), &org_id(), now) {
        let _ = verified.device_key();
    }
});
