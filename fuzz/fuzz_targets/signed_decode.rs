//! Signed documents (policies, commands, audit checkpoints) on any bytes: errors, never a
//! panic. The first byte picks the kind and whether the rest is a whole stored document
//! (`Signed::from_bytes` then `verify`) or a body the test signs itself, so the body's
//! decoder is reached past the signature check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redoubt_fuzz::{org_key, org_public_key, resign};
use redoubt_proto::{CheckpointBody, CommandBody, PolicyBody, Signable, Signed};

fn check<T: Signable + PartialEq + std::fmt::Debug>(resigned: bool, data: &[u8]) {
    let key = org_public_key();
    let document = if resigned {
        resign::<T>(data)
    } else {
        match Signed::<T>::from_bytes(data) {
            Ok(document) => document,
            Err(_) => return,
        }
    };
    if let Ok(value) = document.verify(&key) {
        // Whatever verifies is a value the organisation can sign again.
        assert_eq!(Signed::sign(&value, &org_key()).verify(&key).as_ref(), Ok(&value));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let resigned = selector & 0x80 != 0;
    match selector % 3 {
        0 => check::<PolicyBody>(resigned, rest),
        1 => check::<CommandBody>(resigned, rest),
        _ => check::<CheckpointBody>(resigned, rest),
    }
});
