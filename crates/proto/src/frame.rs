//! The frame codec. One frame is one WebSocket binary message:
//!
//! ```text
//! byte 0      protocol version (1)
//! bytes 1..   postcard encoding of ClientFrame (device → server) or ServerFrame (server → device)
//! ```
//!
//! The decoder checks the frame's length against the caller's limit before it looks at
//! anything else, rejects unknown versions and trailing bytes, and never allocates more
//! than the frame's own length.

use serde::{Deserialize, Serialize};

use crate::{ErrorBody, Hello, Request, Response};

/// The protocol version this build speaks; the first byte of every frame.
pub const PROTOCOL_VERSION: u8 = 2;

/// The smallest frame limit a server may be configured with: enough for any request of
/// this version (the largest is `BlobUploadChunk`, carrying one blob chunk).
pub const FRAME_BYTES_MIN: usize = 40 * 1024;

/// A frame from a device. `request_id` is chosen by the device, starts at 1 and is echoed
/// in the server's answer; 0 is reserved for server errors that answer no request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFrame {
    pub request_id: u64,
    pub request: Request,
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// Always the first frame on a connection.
    Hello(Hello),
    /// The request succeeded.
    Response { request_id: u64, response: Response },
    /// The request failed and changed nothing. `request_id` 0: the frame could not be read.
    Error { request_id: u64, error: ErrorBody },
    /// Unsolicited news for an authenticated session.
    Event(crate::Event),
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("unsupported protocol version {0}; this peer speaks {PROTOCOL_VERSION}")]
    UnsupportedVersion(u8),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("{0} unexpected bytes after the frame")]
    TrailingBytes(usize),
}

fn encode<T: Serialize>(frame: &T) -> Vec<u8> {
    let out = vec![PROTOCOL_VERSION];
    // Serialising these types into a Vec cannot fail: they contain no maps with
    // non-string keys, no unsized sequences and no custom serialisers that error.
    match postcard::to_extend(frame, out) {
        Ok(bytes) => bytes,
        Err(_) => unreachable!("postcard encoding of protocol types into a Vec is infallible"),
    }
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], frame_bytes_max: usize) -> Result<T, DecodeError> {
    if bytes.len() > frame_bytes_max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: frame_bytes_max,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

pub fn encode_client_frame(frame: &ClientFrame) -> Vec<u8> {
    encode(frame)
}

pub fn encode_server_frame(frame: &ServerFrame) -> Vec<u8> {
    encode(frame)
}

pub fn decode_client_frame(bytes: &[u8], frame_bytes_max: usize) -> Result<ClientFrame, DecodeError> {
    decode(bytes, frame_bytes_max)
}

pub fn decode_server_frame(bytes: &[u8], frame_bytes_max: usize) -> Result<ServerFrame, DecodeError> {
    decode(bytes, frame_bytes_max)
}
