//! `ActivationCode::parse` on any text: an error or a code whose text form parses back
//! to the same code, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redoubt_proto::ActivationCode;

fuzz_target!(|data: &[u8]| {
    // Lossy, so invalid UTF-8 still reaches the parser as replacement characters.
    let text = String::from_utf8_lossy(data);
    if let Ok(code) = ActivationCode::parse(&text) {
        assert_eq!(ActivationCode::parse(&code.to_text()).as_ref(), Ok(&code));
    }
});
