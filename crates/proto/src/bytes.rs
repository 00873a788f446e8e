use std::fmt;

use serde::de::{Error as _, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A fixed-size byte string: keys, signatures, identifiers, nonces.
///
/// On the wire it is a length-prefixed byte string whose length must be exactly `N`; the
/// decoder rejects any other length, so a decoded value is always well formed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bytes<const N: usize>(pub [u8; N]);

impl<const N: usize> Bytes<N> {
    /// The bytes as a slice.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// Lower-case hexadecimal.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// Parses lower- or upper-case hexadecimal of exactly `2 * N` digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let decoded = data_encoding::HEXLOWER_PERMISSIVE.decode(text.as_bytes()).ok()?;
        Self::try_from(decoded.as_slice()).ok()
    }
}

impl<const N: usize> Default for Bytes<N> {
    fn default() -> Self {
        Self([0; N])
    }
}

impl<const N: usize> From<[u8; N]> for Bytes<N> {
    fn from(value: [u8; N]) -> Self {
        Self(value)
    }
}

impl<const N: usize> TryFrom<&[u8]> for Bytes<N> {
    type Error = std::array::TryFromSliceError;
    fn try_from(value: &[u8]) -> Result<Self, Self::Error> {
        Ok(Self(<[u8; N]>::try_from(value)?))
    }
}

impl<const N: usize> fmt::Debug for Bytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl<const N: usize> Serialize for Bytes<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de, const N: usize> Deserialize<'de> for Bytes<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FixedVisitor<const M: usize>;
        impl<const M: usize> Visitor<'_> for FixedVisitor<M> {
            type Value = Bytes<M>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a byte string of exactly {M} bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Bytes::try_from(v).map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        deserializer
            .deserialize_bytes(FixedVisitor::<N>)
            .map_err(D::Error::custom)
    }
}

/// Compares two secrets' hashes without an early exit, so timing does not reveal how much
/// of one matched.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
