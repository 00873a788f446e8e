//! `Profile::load` on a folder whose `keys.json` or `profile.json` holds the input (the
//! other file valid): an error or a loaded profile, never a panic. The first byte picks the
//! file. No passcode is offered, so a hostile `kdf` never runs argon2id here.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use redoubt_client::Profile;
use redoubt_fuzz::{keys_json, profile_json, write_profile};

/// A new folder for each input, removed after it. Under /dev/shm where there is one:
/// SQLite's fsyncs cost nothing there.
fn folder() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("redoubt-fuzz-profile")
        .tempdir_in(Path::new("/dev/shm"))
        .or_else(|_| tempfile::tempdir())
        .unwrap_or_else(|e| panic!("temporary folder: {e}"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    static VALID: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    let (valid_profile, valid_keys) = VALID.get_or_init(|| (profile_json(), keys_json()));
    let (profile, keys) = if selector & 1 == 0 {
        (valid_profile.as_slice(), file)
    } else {
        (file, valid_keys.as_slice())
    };
    let dir = folder();
    write_profile(dir.path(), profile, keys).unwrap_or_else(|e| panic!("writing the profile: {e}"));
    if let Ok(profile) = Profile::load(dir.path(), None) {
        assert_eq!(profile.dir(), dir.path());
    }
});
