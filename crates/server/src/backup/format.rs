//! The backup archive's bytes (specified in `docs/backup.md`): a plaintext header, then the
//! entry stream sealed in ChaCha20-Poly1305 chunks under a key stretched from the
//! passphrase with argon2id.
//!
//! Chunk `i` is sealed with the nonce `i (u64 BE) ‖ 0 0 0 ‖ last` and the header as
//! associated data. Every chunk but the last holds exactly `chunk_bytes` of plaintext and
//! the last fewer (possibly none), so dropping, reordering, repeating or cutting chunks, or
//! changing the header, fails authentication: the reader trusts no byte before its chunk
//! authenticated, and the stream is whole only when a chunk marked last authenticated
//! at the very end of the file. The salt is fresh per archive, so the key is too, and a
//! counter nonce never repeats under a key.

use std::io::{Read, Write};

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use super::{BackupError, Passphrase};

pub(super) const MAGIC: &[u8; 8] = b"RDBACKUP";
pub(super) const VERSION: u16 = 1;
pub(super) const HEADER_BYTES: usize = 60;
const TAG_BYTES: usize = 16;

/// argon2id costs of new archives: 64 MiB, 3 passes, 1 lane (about a second here).
pub(super) const KDF_MEMORY_KIB: u32 = 64 * 1024;
pub(super) const KDF_ITERATIONS: u32 = 3;
pub(super) const KDF_LANES: u32 = 1;
/// Plaintext bytes per chunk of new archives.
pub(super) const CHUNK_BYTES: u32 = 64 * 1024;

/// Bounds on what a header may ask of the reader (the archive is hostile input until its
/// first chunk authenticated, and the header is read before that).
const KDF_MEMORY_KIB_MAX: u32 = 1024 * 1024;
const KDF_ITERATIONS_MAX: u32 = 16;
const KDF_LANES_MAX: u32 = 16;
const CHUNK_BYTES_MIN: u32 = 1024;
const CHUNK_BYTES_MAX: u32 = 1024 * 1024;

/// The plaintext header: format version, key derivation parameters and salt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Header {
    pub memory_kib: u32,
    pub iterations: u32,
    pub lanes: u32,
    pub chunk_bytes: u32,
    pub salt: [u8; 32],
}

impl Header {
    pub(super) fn fresh() -> Self {
        let mut salt = [0; 32];
        OsRng.fill_bytes(&mut salt);
        Self {
            memory_kib: KDF_MEMORY_KIB,
            iterations: KDF_ITERATIONS,
            lanes: KDF_LANES,
            chunk_bytes: CHUNK_BYTES,
            salt,
        }
    }

    pub(super) fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0; HEADER_BYTES];
        out[0..8].copy_from_slice(MAGIC);
        out[8..10].copy_from_slice(&VERSION.to_be_bytes());
        // 10..12: flags, none defined.
        out[12..16].copy_from_slice(&self.memory_kib.to_be_bytes());
        out[16..20].copy_from_slice(&self.iterations.to_be_bytes());
        out[20..24].copy_from_slice(&self.lanes.to_be_bytes());
        out[24..28].copy_from_slice(&self.chunk_bytes.to_be_bytes());
        out[28..60].copy_from_slice(&self.salt);
        out
    }

    pub(super) fn decode(bytes: &[u8; HEADER_BYTES]) -> Result<Self, BackupError> {
        let u32_at = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        if &bytes[0..8] != MAGIC {
            return Err(BackupError::NotAnArchive);
        }
        let version = u16::from_be_bytes([bytes[8], bytes[9]]);
        if version != VERSION || bytes[10..12] != [0, 0] {
            return Err(BackupError::UnsupportedVersion(version));
        }
        let header = Self {
            memory_kib: u32_at(12),
            iterations: u32_at(16),
            lanes: u32_at(20),
            chunk_bytes: u32_at(24),
            salt: bytes[28..60].try_into().map_err(|_| BackupError::NotAnArchive)?,
        };
        let sane = (8 * header.lanes..=KDF_MEMORY_KIB_MAX).contains(&header.memory_kib)
            && (1..=KDF_ITERATIONS_MAX).contains(&header.iterations)
            && (1..=KDF_LANES_MAX).contains(&header.lanes)
            && (CHUNK_BYTES_MIN..=CHUNK_BYTES_MAX).contains(&header.chunk_bytes);
        if !sane {
            return Err(BackupError::Damaged {
                offset: 12,
                reason: "the header's key-derivation or chunk parameters are out of bounds".into(),
            });
        }
        Ok(header)
    }

    /// The archive key: argon2id of the passphrase with this header's salt and costs.
    pub(super) fn derive_key(&self, passphrase: &Passphrase) -> Result<Zeroizing<[u8; 32]>, BackupError> {
        let failed = |e: argon2::Error| BackupError::Internal(format!("argon2id: {e}"));
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.lanes, Some(32)).map_err(failed)?;
        let mut key = Zeroizing::new([0u8; 32]);
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_into(passphrase.expose().as_bytes(), &self.salt, key.as_mut())
            .map_err(failed)?;
        Ok(key)
    }
}

fn nonce(index: u64, last: bool) -> chacha20poly1305::Nonce {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&index.to_be_bytes());
    nonce[11] = u8::from(last);
    chacha20poly1305::Nonce::from(nonce)
}

fn cipher(key: &[u8; 32]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key))
}

/// Seals plaintext written to it into chunks on `inner`; [`Self::finish`] writes the last.
pub(super) struct SealingWriter<W: Write> {
    inner: W,
    cipher: ChaCha20Poly1305,
    aad: [u8; HEADER_BYTES],
    chunk_bytes: usize,
    buffer: Zeroizing<Vec<u8>>,
    index: u64,
    /// Archive bytes written, header included.
    pub written: u64,
}

impl<W: Write> SealingWriter<W> {
    /// Writes the header to `inner` and seals what follows under `key`.
    pub(super) fn new(mut inner: W, header: &Header, key: &[u8; 32]) -> std::io::Result<Self> {
        let aad = header.encode();
        inner.write_all(&aad)?;
        let chunk_bytes = header.chunk_bytes as usize;
        Ok(Self {
            inner,
            cipher: cipher(key),
            aad,
            chunk_bytes,
            buffer: Zeroizing::new(Vec::with_capacity(chunk_bytes + TAG_BYTES)),
            index: 0,
            written: HEADER_BYTES as u64,
        })
    }

    fn seal_buffer(&mut self, last: bool) -> std::io::Result<()> {
        self.cipher
            .encrypt_in_place(&nonce(self.index, last), &self.aad, &mut *self.buffer)
            .map_err(|_| std::io::Error::other("chunk encryption failed"))?;
        self.inner.write_all(&self.buffer)?;
        self.written += self.buffer.len() as u64;
        self.buffer.clear();
        self.index += 1;
        Ok(())
    }

    /// Seals the last chunk (shorter than a full one, possibly empty) and flushes.
    pub(super) fn finish(mut self) -> std::io::Result<(W, u64)> {
        self.seal_buffer(true)?;
        self.inner.flush()?;
        Ok((self.inner, self.written))
    }
}

impl<W: Write> Write for SealingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // A full buffer is sealed only once more bytes come, so the last chunk is never full.
        if self.buffer.len() == self.chunk_bytes {
            self.seal_buffer(false)?;
        }
        let take = bytes.len().min(self.chunk_bytes - self.buffer.len());
        self.buffer.extend_from_slice(&bytes[..take]);
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads and authenticates chunks from `inner`; yields plaintext only once its chunk
/// authenticated.
pub(super) struct OpeningReader<R: Read> {
    inner: R,
    cipher: ChaCha20Poly1305,
    aad: [u8; HEADER_BYTES],
    chunk_bytes: usize,
    plain: Zeroizing<Vec<u8>>,
    position: usize,
    index: u64,
    /// Archive offset of the next chunk.
    offset: u64,
    /// The last chunk authenticated and the file ended right after it.
    ended: bool,
    /// One byte read past a full chunk, to tell whether it was the last.
    lookahead: Option<u8>,
}

impl<R: Read> OpeningReader<R> {
    pub(super) fn new(inner: R, header: &Header, key: &[u8; 32]) -> Self {
        Self {
            inner,
            cipher: cipher(key),
            aad: header.encode(),
            chunk_bytes: header.chunk_bytes as usize,
            plain: Zeroizing::new(Vec::new()),
            position: 0,
            index: 0,
            offset: HEADER_BYTES as u64,
            ended: false,
            lookahead: None,
        }
    }

    fn fill(&mut self, buffer: &mut Vec<u8>, want: usize) -> Result<(), BackupError> {
        if let Some(byte) = self.lookahead.take() {
            buffer.push(byte);
        }
        let start = buffer.len();
        buffer.resize(want, 0);
        let mut filled = start;
        while filled < want {
            match self.inner.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BackupError::Io(format!("reading the archive: {e}"))),
            }
        }
        buffer.truncate(filled);
        Ok(())
    }

    fn next_chunk(&mut self) -> Result<(), BackupError> {
        let full = self.chunk_bytes + TAG_BYTES;
        let mut sealed = Zeroizing::new(Vec::with_capacity(full));
        self.fill(&mut sealed, full)?;
        // A full chunk is the last only when nothing follows it (never, as written).
        let last = if sealed.len() == full {
            let mut byte = [0u8; 1];
            let mut more = false;
            loop {
                match self.inner.read(&mut byte) {
                    Ok(0) => break,
                    Ok(_) => {
                        more = true;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(BackupError::Io(format!("reading the archive: {e}"))),
                }
            }
            if more {
                self.lookahead = Some(byte[0]);
            }
            !more
        } else {
            true
        };
        let offset = self.offset;
        let chunk_len = sealed.len() as u64;
        self.cipher
            .decrypt_in_place(&nonce(self.index, last), &self.aad, &mut *sealed)
            .map_err(|_| match self.index {
                0 => BackupError::WrongPassphraseOrDamaged,
                _ if last => BackupError::Damaged {
                    offset,
                    reason: "truncated, or a changed byte in the chunk here".into(),
                },
                _ => BackupError::Damaged {
                    offset,
                    reason: "a changed byte in the chunk here".into(),
                },
            })?;
        self.offset += chunk_len;
        self.index += 1;
        self.ended = last;
        self.plain = sealed;
        self.position = 0;
        Ok(())
    }
}

impl<R: Read> Read for OpeningReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.position == self.plain.len() {
            if self.ended {
                return Ok(0);
            }
            self.next_chunk().map_err(std::io::Error::other)?;
        }
        let n = out.len().min(self.plain.len() - self.position);
        out[..n].copy_from_slice(&self.plain[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

/// Turns an I/O error from an [`OpeningReader`] back into the [`BackupError`] it carried.
pub(super) fn unwrap_io(error: std::io::Error, context: &str) -> BackupError {
    match error.downcast::<BackupError>() {
        Ok(error) => error,
        Err(error) => BackupError::Io(format!("{context}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passphrase() -> Passphrase {
        Passphrase::new("correct horse battery staple".to_owned())
    }

    fn cheap_header() -> Header {
        Header {
            memory_kib: 64,
            iterations: 1,
            lanes: 1,
            chunk_bytes: 1024,
            salt: [7; 32],
        }
    }

    fn seal(plain: &[u8]) -> Vec<u8> {
        let header = cheap_header();
        let key = header.derive_key(&passphrase()).unwrap();
        let mut writer = SealingWriter::new(Vec::new(), &header, &key).unwrap();
        writer.write_all(plain).unwrap();
        writer.finish().unwrap().0
    }

    fn open(archive: &[u8]) -> Result<Vec<u8>, BackupError> {
        let header = Header::decode(archive[..HEADER_BYTES].try_into().unwrap())?;
        let key = header.derive_key(&passphrase())?;
        let mut reader = OpeningReader::new(&archive[HEADER_BYTES..], &header, &key);
        let mut out = Vec::new();
        // Ends only at a chunk marked last, at the end of the file.
        reader.read_to_end(&mut out).map_err(|e| unwrap_io(e, "test"))?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_every_size_around_the_chunk_boundaries() {
        for len in [0, 1, 1023, 1024, 1025, 2048, 5000] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(open(&seal(&plain)).unwrap(), plain, "length {len}");
        }
    }

    #[test]
    fn a_changed_byte_anywhere_or_a_cut_is_refused() {
        let plain = vec![42u8; 3000];
        let archive = seal(&plain);
        for at in (0..archive.len()).step_by(97) {
            let mut bad = archive.clone();
            bad[at] ^= 1;
            assert!(open(&bad).is_err(), "flipped byte {at} accepted");
        }
        // Cut at each chunk boundary (the hardest case: whole chunks dropped) and inside.
        for cut in [
            HEADER_BYTES + 1040,
            HEADER_BYTES + 2080,
            archive.len() - 1,
            HEADER_BYTES + 500,
        ] {
            assert!(open(&archive[..cut]).is_err(), "cut at {cut} accepted");
        }
        let mut longer = archive.clone();
        longer.push(0);
        assert!(open(&longer).is_err(), "a trailing byte accepted");
    }

    #[test]
    fn errors_say_where_the_archive_went_wrong() {
        let archive = seal(&[1u8; 3000]);
        let mut first = archive.clone();
        first[HEADER_BYTES + 3] ^= 1;
        assert!(matches!(open(&first), Err(BackupError::WrongPassphraseOrDamaged)));
        let mut second = archive.clone();
        second[HEADER_BYTES + 1040 + 3] ^= 1;
        match open(&second) {
            Err(BackupError::Damaged { offset, .. }) => assert_eq!(offset, (HEADER_BYTES + 1040) as u64),
            other => panic!("{other:?}"),
        }
        let mut header = archive.clone();
        header[0] = b'X';
        assert!(matches!(open(&header), Err(BackupError::NotAnArchive)));
    }

    #[test]
    fn a_hostile_header_cannot_ask_for_unbounded_work() {
        let mut header = cheap_header();
        header.memory_kib = u32::MAX;
        assert!(Header::decode(&header.encode()).is_err());
        let mut header = cheap_header();
        header.chunk_bytes = u32::MAX;
        assert!(Header::decode(&header.encode()).is_err());
    }
}
