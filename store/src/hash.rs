//! The content address of a blob: a 32-byte BLAKE3 hash (the bao root).
//!
//! Its text form is 64 lower-case hex digits, the same as `b3sum` prints.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A BLAKE3 hash identifying a blob. Serialized as its hex form in
/// human-readable formats (JSON), as its 32 bytes in binary ones.
///
/// ```
/// use blixard_store::Hash;
///
/// let hash = Hash::of(b"hello");
/// let parsed: Hash = hash.to_string().parse()?;
/// assert_eq!(parsed, hash);
/// # Ok::<(), blixard_store::ParseHashError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash(pub [u8; 32]);

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(Hash)
        }
    }
}

impl Hash {
    /// Hashes bytes in memory (one thread).
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64-digit hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

impl From<Hash> for blake3::Hash {
    fn from(h: Hash) -> Self {
        blake3::Hash::from_bytes(h.0)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..12])
    }
}

/// Error parsing the text form of a [`Hash`](struct@Hash).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a hash is 64 hex digits: {0}")]
pub struct ParseHashError(String);

impl FromStr for Hash {
    type Err = ParseHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| ParseHashError(e.to_string()))?;
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_hex_and_binary_is_bytes() {
        let h = Hash::of(b"abc");
        assert_eq!(serde_json::to_string(&h).unwrap(), format!("\"{}\"", h.to_hex()));
        assert_eq!(serde_json::from_str::<Hash>(&serde_json::to_string(&h).unwrap()).unwrap(), h);
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(h, cfg).unwrap();
        assert_eq!(bytes, h.0.to_vec(), "32 raw bytes, as before");
        assert_eq!(bincode::serde::decode_from_slice::<Hash, _>(&bytes, cfg).unwrap().0, h);
    }

    #[test]
    fn hex_round_trip() {
        let h = Hash::of(b"hello");
        assert_eq!(h.to_string(), blake3::hash(b"hello").to_hex().as_str());
        assert_eq!(h.to_string().parse::<Hash>().unwrap(), h);
        assert!("zz".parse::<Hash>().is_err());
        assert!(h.to_string()[..62].parse::<Hash>().is_err());
    }
}
