//! Activation codes: what an admin hands a user so one device can enrol.
//!
//! A code carries everything the device needs to reach and trust the server without any
//! other configuration: the server's address, the SHA-256 pin of the server's TLS
//! certificate, the code's identifier and a one-time secret of 128 bits. The text form is
//! `RDB-` followed by base32 in groups of four, upper case so a QR code can use its compact
//! alphanumeric mode:
//!
//! ```text
//! version (1) ‖ code id (8) ‖ secret (16) ‖ pin (32) ‖ address length (1) ‖ address ‖ checksum (4)
//! ```
//!
//! The checksum (first 4 bytes of SHA-256 of everything before it) catches typing mistakes
//! on the device, before they cost one of the code's limited attempts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ActivationCodeId, Bytes, CertificatePin};

const VERSION: u8 = 1;
const PREFIX: &str = "RDB-";
const CHECKSUM_BYTES: usize = 4;
/// Longest text accepted, so a pasted novel is refused before any work.
const TEXT_CHARS_MAX: usize = 512;
const SECRET_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActivationCodeError {
    #[error("activation code is too long")]
    TooLong,
    #[error("activation code must start with {PREFIX}")]
    Prefix,
    #[error("activation code contains characters that are not base32")]
    Encoding,
    #[error("activation code is truncated or has extra characters")]
    Length,
    #[error("activation code version {0} is not supported")]
    Version(u8),
    #[error("activation code checksum does not match: check for a typing mistake")]
    Checksum,
    #[error("server address in activation code is invalid: {0}")]
    Address(String),
}

/// A server address: `host:port`, where host is a DNS name, an IPv4 address or a bracketed
/// IPv6 address.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServerAddress {
    text: String,
    port: u16,
    host_len: usize,
}

impl ServerAddress {
    pub const BYTES_MAX: usize = 255;

    pub fn parse(text: &str) -> Result<Self, ActivationCodeError> {
        let bad = |why: &str| ActivationCodeError::Address(why.to_owned());
        if text.is_empty() || text.len() > Self::BYTES_MAX {
            return Err(bad("must be 1 to 255 bytes"));
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("missing :port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad("port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad("port is not a number from 1 to 65535"));
        }
        let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            inner.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !host.is_empty()
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        };
        if !host_ok {
            return Err(bad("host must be a DNS name, an IPv4 address or [IPv6]"));
        }
        Ok(Self {
            text: text.to_owned(),
            port,
            host_len: host.len(),
        })
    }

    /// The host as it appears in a URL: a name, IPv4 address or bracketed IPv6 address.
    pub fn host(&self) -> &str {
        &self.text[..self.host_len]
    }

    /// The host without IPv6 brackets, as a resolver or TLS server name wants it.
    pub fn host_unbracketed(&self) -> &str {
        self.host().trim_start_matches('[').trim_end_matches(']')
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for ServerAddress {
    type Error = ActivationCodeError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ServerAddress> for String {
    fn from(value: ServerAddress) -> Self {
        value.text
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

/// The one-time secret of an activation code. Its `Debug` is redacted and it is zeroed on
/// drop; the server keeps only its SHA-256.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationSecret(Bytes<SECRET_BYTES>);

impl ActivationSecret {
    pub fn from_bytes(bytes: [u8; SECRET_BYTES]) -> Self {
        Self(Bytes(bytes))
    }

    /// What the server stores and compares: SHA-256 of the secret.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_slice()).into()
    }

    pub fn expose(&self) -> &[u8; SECRET_BYTES] {
        &self.0.0
    }
}

impl Drop for ActivationSecret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0.0);
    }
}

impl fmt::Debug for ActivationSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ActivationSecret(<redacted>)")
    }
}

/// A parsed activation code.
#[derive(Clone, PartialEq, Eq)]
pub struct ActivationCode {
    pub server: ServerAddress,
    pub pin: CertificatePin,
    pub id: ActivationCodeId,
    pub secret: ActivationSecret,
}

impl fmt::Debug for ActivationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivationCode")
            .field("server", &self.server)
            .field("pin", &self.pin)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ActivationCode {
    /// The text form, `RDB-XXXX-XXXX-…`. It contains the secret: show it only to the admin.
    pub fn to_text(&self) -> String {
        let mut payload = vec![VERSION];
        payload.extend_from_slice(self.id.as_bytes());
        payload.extend_from_slice(self.secret.expose());
        payload.extend_from_slice(self.pin.as_slice());
        let address = self.server.as_str().as_bytes();
        // ServerAddress::parse bounds the address to 255 bytes.
        payload.push(address.len() as u8);
        payload.extend_from_slice(address);
        let checksum = Sha256::digest(&payload);
        payload.extend_from_slice(&checksum[..CHECKSUM_BYTES]);
        let encoded = data_encoding::BASE32_NOPAD.encode(&payload);
        let groups: Vec<&str> = encoded
            .as_bytes()
            .chunks(4)
            // Base32 output is ASCII, so every chunk is valid UTF-8.
            .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
            .collect();
        format!("{PREFIX}{}", groups.join("-"))
    }

    pub fn parse(text: &str) -> Result<Self, ActivationCodeError> {
        if text.len() > TEXT_CHARS_MAX {
            return Err(ActivationCodeError::TooLong);
        }
        let text = text.trim();
        let body = text
            .get(..PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PREFIX))
            .map(|_| &text[PREFIX.len()..])
            .ok_or(ActivationCodeError::Prefix)?;
        let compact: String = body
            .chars()
            .filter(|c| *c != '-' && !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let payload = data_encoding::BASE32_NOPAD
            .decode(compact.as_bytes())
            .map_err(|_| ActivationCodeError::Encoding)?;
        let fixed = 1 + 8 + SECRET_BYTES + 32 + 1;
        if payload.len() < fixed + CHECKSUM_BYTES {
            return Err(ActivationCodeError::Length);
        }
        let (signed, checksum) = payload.split_at(payload.len() - CHECKSUM_BYTES);
        if Sha256::digest(signed)[..CHECKSUM_BYTES] != *checksum {
            return Err(ActivationCodeError::Checksum);
        }
        if signed[0] != VERSION {
            return Err(ActivationCodeError::Version(signed[0]));
        }
        let take = |from: usize, len: usize| &signed[from..from + len];
        let address_len = usize::from(signed[fixed - 1]);
        if signed.len() != fixed + address_len {
            return Err(ActivationCodeError::Length);
        }
        let address = std::str::from_utf8(&signed[fixed..])
            .map_err(|_| ActivationCodeError::Address("not UTF-8".to_owned()))?;
        // The slices below have exactly the lengths the conversions need.
        let id: [u8; 8] = take(1, 8).try_into().map_err(|_| ActivationCodeError::Length)?;
        let secret: [u8; SECRET_BYTES] = take(9, SECRET_BYTES)
            .try_into()
            .map_err(|_| ActivationCodeError::Length)?;
        let pin = Bytes::try_from(take(9 + SECRET_BYTES, 32)).map_err(|_| ActivationCodeError::Length)?;
        Ok(Self {
            server: ServerAddress::parse(address)?,
            pin,
            id: ActivationCodeId::from(id),
            secret: ActivationSecret::from_bytes(secret),
        })
    }
}

impl FromStr for ActivationCode {
    type Err = ActivationCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ActivationCode {
        ActivationCode {
            server: ServerAddress::parse("redoubt.example.org:8443").unwrap(),
            pin: Bytes([7; 32]),
            id: ActivationCodeId::from([1, 2, 3, 4, 5, 6, 7, 8]),
            secret: ActivationSecret::from_bytes([9; 16]),
        }
    }

    #[test]
    fn text_round_trip() {
        let code = sample();
        let text = code.to_text();
        assert!(text.starts_with("RDB-"));
        assert_eq!(ActivationCode::parse(&text).unwrap(), code);
        assert_eq!(ActivationCode::parse(&text.to_lowercase()).unwrap(), code);
        let spaced = format!("  {}\n", text.replace('-', " - "));
        assert_eq!(
            ActivationCode::parse(&spaced.replacen(" - ", "-", 1)).unwrap(),
            code
        );
    }

    #[test]
    fn typo_is_caught_by_checksum() {
        let text = sample().to_text();
        // Change one character in the middle of the payload.
        let mut chars: Vec<char> = text.chars().collect();
        let i = (chars.len() / 2..).find(|&i| chars[i] != '-').unwrap();
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(ActivationCode::parse(&typo), Err(ActivationCodeError::Checksum));
    }

    #[test]
    fn refuses_junk() {
        assert_eq!(ActivationCode::parse("hello"), Err(ActivationCodeError::Prefix));
        assert_eq!(
            ActivationCode::parse("RDB-!!!!"),
            Err(ActivationCodeError::Encoding)
        );
        assert_eq!(
            ActivationCode::parse("RDB-AAAA"),
            Err(ActivationCodeError::Length)
        );
        assert_eq!(
            ActivationCode::parse(&"RDB-".repeat(200)),
            Err(ActivationCodeError::TooLong)
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let shown = format!("{:?}", sample());
        assert!(!shown.contains("9, 9") && !shown.contains("0909"), "{shown}");
    }

    #[test]
    fn server_addresses() {
        for good in ["127.0.0.1:8443", "[::1]:443", "mail.example.org:1"] {
            assert!(ServerAddress::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "host",
            "host:0",
            "host:99999",
            "bad host:1",
            ":80",
            "[zz]:1",
            "a..b:1",
        ] {
            assert!(ServerAddress::parse(bad).is_err(), "{bad}");
        }
        let v6 = ServerAddress::parse("[::1]:8443").unwrap();
        assert_eq!(
            (v6.host(), v6.host_unbracketed(), v6.port()),
            ("[::1]", "::1", 8443)
        );
    }
}
