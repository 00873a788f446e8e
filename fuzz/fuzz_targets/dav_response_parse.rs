//! What the mail connector reads from a calendar server, on any bytes: a PROPFIND
//! `multistatus` (quick-xml) with its hrefs made request paths, and a calendar object and a
//! vCard (calcard) read into an event and a contact. Refused or read, never a panic, and
//! within the connector's bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    std::hint::black_box(redoubt_dav::read_server_answer_for_fuzzing(data));
});
