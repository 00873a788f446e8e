//! Attachment encryption: a fresh ChaCha20-Poly1305 key per file, the file cut into
//! 32 KiB chunks, each sealed with its index as nonce and `index ‖ is_last` in the
//! associated data, so chunks cannot be reordered, dropped or the file truncated without
//! the receiver noticing. The key and the plaintext's SHA-256 travel in the MLS message.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};

use crate::ClientError;

/// Plaintext bytes per chunk; with the 16-byte tag a chunk is `redoubt_proto::BLOB_CHUNK_BYTES`.
pub(crate) const PLAINTEXT_CHUNK_BYTES: usize = 32 * 1024;
const TAG_BYTES: usize = 16;
const LABEL: &[u8] = b"redoubt/attachment/v1\0";

pub(crate) struct ChunkCipher(ChaCha20Poly1305);

fn nonce(index: u32) -> chacha20poly1305::Nonce {
    let mut nonce = [0u8; 12];
    nonce[8..].copy_from_slice(&index.to_be_bytes());
    chacha20poly1305::Nonce::from(nonce)
}

fn aad(index: u32, last: bool) -> Vec<u8> {
    [LABEL, &index.to_be_bytes(), &[u8::from(last)]].concat()
}

/// Chunks a file of `bytes` plaintext bytes is cut into (an empty file is one empty chunk).
pub(crate) fn chunk_count(bytes: u64) -> u64 {
    bytes.div_ceil(PLAINTEXT_CHUNK_BYTES as u64).max(1)
}

/// Ciphertext size of a file of `bytes` plaintext bytes.
pub(crate) fn ciphertext_bytes(bytes: u64) -> u64 {
    bytes + chunk_count(bytes) * TAG_BYTES as u64
}

impl ChunkCipher {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self(ChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key)))
    }

    pub(crate) fn seal(&self, index: u32, last: bool, plaintext: &[u8]) -> Result<Vec<u8>, ClientError> {
        let aad = aad(index, last);
        self.0
            .encrypt(
                &nonce(index),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| ClientError::Attachment("encryption failed".into()))
    }

    pub(crate) fn open(&self, index: u32, last: bool, ciphertext: &[u8]) -> Result<Vec<u8>, ClientError> {
        let aad = aad(index, last);
        self.0
            .decrypt(
                &nonce(index),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                ClientError::Attachment(format!(
                    "chunk {index} does not authenticate: the blob was tampered with"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_resist_reordering_and_truncation() {
        let cipher = ChunkCipher::new(&[7; 32]);
        let a = cipher.seal(0, false, b"first").unwrap();
        let b = cipher.seal(1, true, b"second").unwrap();
        assert_eq!(cipher.open(0, false, &a).unwrap(), b"first");
        assert_eq!(cipher.open(1, true, &b).unwrap(), b"second");
        // Swapped chunks, a non-final chunk presented as final, a flipped bit: all refused.
        assert!(cipher.open(0, false, &b).is_err());
        assert!(cipher.open(0, true, &a).is_err());
        let mut flipped = a.clone();
        flipped[2] ^= 1;
        assert!(cipher.open(0, false, &flipped).is_err());
        // Another key cannot open it.
        assert!(ChunkCipher::new(&[8; 32]).open(0, false, &a).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(chunk_count(0), 1);
        assert_eq!(chunk_count(32 * 1024), 1);
        assert_eq!(chunk_count(32 * 1024 + 1), 2);
        assert_eq!(ciphertext_bytes(32 * 1024 + 1), 32 * 1024 + 1 + 32);
        assert_eq!(PLAINTEXT_CHUNK_BYTES + TAG_BYTES, redoubt_proto::BLOB_CHUNK_BYTES);
    }
}
