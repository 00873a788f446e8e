//! What a device signs. Each transcript starts with its own domain-separation label, so a
//! signature made for one purpose can never be replayed for another.

use crate::{ActivationCodeId, Bytes, CHALLENGE_BYTES};

/// The RFC 5705/8446 exporter label both sides use to bind a signature to the TLS session.
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-redoubt-session-v1";
/// Length of the exported keying material.
pub const TLS_EXPORTER_BYTES: usize = 32;

const SESSION_LABEL: &[u8] = b"redoubt/session-auth/v1\0";
const ENROLL_LABEL: &[u8] = b"redoubt/enroll/v1\0";

/// Bytes signed to authenticate a session: label ‖ challenge ‖ TLS exporter.
///
/// The exporter is unique to this TLS session, so a signature relayed by a man in the
/// middle (who would have a different TLS session with the server) does not verify.
pub fn session_transcript(
    challenge: &Bytes<CHALLENGE_BYTES>,
    tls_exporter: &[u8; TLS_EXPORTER_BYTES],
) -> Vec<u8> {
    [SESSION_LABEL, challenge.as_slice(), tls_exporter].concat()
}

/// Bytes signed at enrolment: label ‖ challenge ‖ TLS exporter ‖ activation code id.
pub fn enroll_transcript(
    challenge: &Bytes<CHALLENGE_BYTES>,
    tls_exporter: &[u8; TLS_EXPORTER_BYTES],
    code_id: &ActivationCodeId,
) -> Vec<u8> {
    [
        ENROLL_LABEL,
        challenge.as_slice(),
        tls_exporter,
        code_id.as_bytes(),
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcripts_differ_by_purpose() {
        let challenge = Bytes([1; CHALLENGE_BYTES]);
        let exporter = [2; TLS_EXPORTER_BYTES];
        let id = ActivationCodeId::from([3; 8]);
        assert_ne!(
            session_transcript(&challenge, &exporter),
            enroll_transcript(&challenge, &exporter, &id)
        );
        assert_ne!(
            session_transcript(&challenge, &exporter),
            session_transcript(&challenge, &[9; TLS_EXPORTER_BYTES])
        );
    }
}
