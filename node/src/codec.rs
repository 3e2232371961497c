//! The one place the node encodes what it persists (the transfer queue in
//! sled): bincode 2 with a fixed configuration and a version byte, so a
//! record from another format version is refused, not misread.

use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, Result};

/// Bumped when a persisted record's layout changes.
const VERSION: u8 = 1;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_fixed_int_encoding().with_limit::<65536>()
}

/// Encodes a record.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    out.extend(bincode::serde::encode_to_vec(value, config()).expect("records always encode"));
    out
}

/// Decodes a record, refusing other versions and trailing bytes.
pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&VERSION, body)) => {
            let (v, used) = bincode::serde::decode_from_slice(body, config())
                .map_err(|e| Error::Config(format!("damaged {what} record: {e}")))?;
            if used != body.len() {
                return Err(Error::Config(format!("damaged {what} record: trailing bytes")));
            }
            Ok(v)
        }
        Some((v, _)) => Err(Error::Config(format!("{what} record of format version {v}; this build reads {VERSION}"))),
        None => Err(Error::Config(format!("empty {what} record"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let v = ("a".to_string(), 7u64);
        let bytes = encode(&v);
        assert_eq!(decode::<(String, u64)>("test", &bytes).unwrap(), v);
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(decode::<(String, u64)>("test", &other).unwrap_err().to_string().contains("version 9"));
        let mut long = bytes;
        long.push(0);
        assert!(decode::<(String, u64)>("test", &long).is_err());
    }
}
