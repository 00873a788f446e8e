//! A policy file as the CLI reads it (`toml::from_str::<PolicySettings>` then `validate`):
//! errors, never a panic; settings that parse write out and parse back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redoubt_proto::PolicySettings;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(settings) = toml::from_str::<PolicySettings>(text) else {
        return;
    };
    let _ = settings.validate();
    let written = toml::to_string(&settings).unwrap_or_else(|e| panic!("{settings:?} does not write: {e}"));
    assert_eq!(toml::from_str::<PolicySettings>(&written).as_ref(), Ok(&settings));
});
