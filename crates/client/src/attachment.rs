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

/// Refuses attachments the organisation's policy does not allow (the server checks too).
pub(crate) fn check_policy(session: &crate::Session, bytes: Option<u64>) -> Result<(), ClientError> {
    let policy = session.policy();
    if !policy.attachments_allowed {
        return Err(ClientError::Attachment(
            "the organisation's policy does not allow attachments".into(),
        ));
    }
    if let Some(bytes) = bytes
        && bytes > policy.attachment_bytes_max
    {
        return Err(ClientError::Attachment(format!(
            "the organisation's policy allows attachments of at most {} bytes; this file has {bytes}",
            policy.attachment_bytes_max
        )));
    }
    Ok(())
}

/// Encrypts `bytes` bytes read from `reader` under a fresh key and uploads them as a blob of
/// the group over `session`; returns what a member needs to fetch and check it (nothing is
/// sent to the group: the caller puts the [`redoubt_mls::Attachment`] in a message).
///
/// Any authenticated session of a member may carry the transfer, so a device (or the mail
/// connector) can move large files on a connection of their own.
pub async fn upload(
    session: &mut crate::Session,
    group_id: &redoubt_proto::GroupId,
    name: String,
    reader: impl tokio::io::AsyncRead + Unpin,
    bytes: u64,
    progress: impl FnMut(u64, u64),
) -> Result<redoubt_mls::Attachment, ClientError> {
    check_policy(session, Some(bytes))?;
    send_blob(session, group_id, name, reader, bytes, progress).await
}

/// [`upload`] without the attachment policy: for blobs that are not attachments (history).
pub(crate) async fn send_blob(
    session: &mut crate::Session,
    group_id: &redoubt_proto::GroupId,
    name: String,
    mut reader: impl tokio::io::AsyncRead + Unpin,
    bytes: u64,
    mut progress: impl FnMut(u64, u64),
) -> Result<redoubt_mls::Attachment, ClientError> {
    use rand_core::{OsRng, RngCore};
    use redoubt_proto::{Request, Response};
    use sha2::Digest;
    use tokio::io::AsyncReadExt;
    let read_error = |e: std::io::Error| ClientError::Attachment(format!("{name}: {e}"));
    let chunk_count =
        u32::try_from(chunk_count(bytes)).map_err(|_| ClientError::Attachment("file too large".into()))?;
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    let cipher = ChunkCipher::new(&key);
    let request = Request::BlobUploadStart {
        group_id: *group_id,
        bytes_total: ciphertext_bytes(bytes),
        chunk_count,
    };
    let blob_id = match session.request_paced(request).await? {
        Response::BlobUploadStarted { blob_id } => blob_id,
        _ => {
            return Err(ClientError::Protocol(
                "unexpected response to BlobUploadStart".into(),
            ));
        }
    };
    let mut hash = sha2::Sha256::new();
    let mut sent = 0u64;
    let mut buffer = vec![0u8; PLAINTEXT_CHUNK_BYTES];
    for index in 0..chunk_count {
        let last = index + 1 == chunk_count;
        let want = if last {
            (bytes - sent) as usize
        } else {
            buffer.len()
        };
        reader.read_exact(&mut buffer[..want]).await.map_err(read_error)?;
        hash.update(&buffer[..want]);
        let sealed = cipher.seal(index, last, &buffer[..want])?;
        let request = Request::BlobUploadChunk {
            blob_id,
            index,
            bytes: sealed,
        };
        session.request(request).await?;
        sent += want as u64;
        progress(sent, bytes);
    }
    session
        .request_paced(Request::BlobUploadFinish { blob_id })
        .await?;
    Ok(redoubt_mls::Attachment {
        name,
        bytes,
        sha256: hash.finalize().into(),
        key,
        blob_id,
        chunk_count,
        sent_at_unix_s: crate::unix_now(),
    })
}

/// Downloads, decrypts and checks an attachment into `out` over `session`. On an error,
/// what was written must be discarded: only a complete, matching file counts.
pub async fn download(
    session: &mut crate::Session,
    attachment: &redoubt_mls::Attachment,
    out: impl tokio::io::AsyncWrite + Unpin,
    progress: impl FnMut(u64, u64),
) -> Result<(), ClientError> {
    check_policy(session, None)?;
    receive_blob(session, attachment, out, progress).await
}

/// [`download`] without the attachment policy: for blobs that are not attachments (history).
pub(crate) async fn receive_blob(
    session: &mut crate::Session,
    attachment: &redoubt_mls::Attachment,
    mut out: impl tokio::io::AsyncWrite + Unpin,
    mut progress: impl FnMut(u64, u64),
) -> Result<(), ClientError> {
    use redoubt_proto::{Request, Response};
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    let cipher = ChunkCipher::new(&attachment.key);
    let io_error = |e: std::io::Error| ClientError::Attachment(format!("{}: {e}", attachment.name));
    let mut hash = sha2::Sha256::new();
    let mut written = 0u64;
    for index in 0..attachment.chunk_count {
        let request = Request::BlobFetch {
            blob_id: attachment.blob_id,
            index,
        };
        let bytes = match session.request(request).await? {
            Response::BlobChunk {
                bytes, chunk_count, ..
            } if chunk_count == attachment.chunk_count => bytes,
            Response::BlobChunk { .. } => {
                return Err(ClientError::Attachment(
                    "the server's blob has the wrong number of chunks".into(),
                ));
            }
            _ => return Err(ClientError::Protocol("unexpected response to BlobFetch".into())),
        };
        let plaintext = cipher.open(index, index + 1 == attachment.chunk_count, &bytes)?;
        hash.update(&plaintext);
        out.write_all(&plaintext).await.map_err(io_error)?;
        written += plaintext.len() as u64;
        progress(written, attachment.bytes);
    }
    out.flush().await.map_err(io_error)?;
    let digest: [u8; 32] = hash.finalize().into();
    if digest != attachment.sha256 || written != attachment.bytes {
        return Err(ClientError::Attachment(
            "the file's SHA-256 does not match the sender's".into(),
        ));
    }
    Ok(())
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
