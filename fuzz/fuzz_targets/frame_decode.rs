//! `decode_client_frame` / `decode_server_frame` on any bytes: an error or a frame that
//! encodes and decodes back to itself, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redoubt_proto::{decode_client_frame, decode_server_frame, encode_client_frame, encode_server_frame};

const FRAME_BYTES_MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode_client_frame(data, FRAME_BYTES_MAX) {
        let again = decode_client_frame(&encode_client_frame(&frame), usize::MAX);
        assert_eq!(again.as_ref(), Ok(&frame));
    }
    if let Ok(frame) = decode_server_frame(data, FRAME_BYTES_MAX) {
        let again = decode_server_frame(&encode_server_frame(&frame), usize::MAX);
        assert_eq!(again.as_ref(), Ok(&frame));
    }
});
