//! The one place the node encodes what it persists (the transfer queue and
//! the peer book in sled): a version byte, so a record from another format
//! version is refused, not misread, then the body in the store's record
//! encoding (`blixard_store::codec`); records of the first format are read
//! here once, to migrate.

use blixard_store as codec;
use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, Result};

/// Bumped when a persisted record's layout changes.
const VERSION: u8 = 2;

/// Encodes a record.
pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    let mut out = vec![VERSION];
    out.extend(codec::encode_record(what, value)?);
    Ok(out)
}

/// Decodes a record, refusing other versions and trailing bytes.
pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    decode_version(what, VERSION, bytes)
}

pub(crate) fn decode_version<T: DeserializeOwned>(what: &'static str, version: u8, bytes: &[u8]) -> Result<T> {
    let corrupt = |reason: String| Error::CorruptRecord { what, reason };
    match bytes.split_first() {
        Some((&v, body)) if v == version => codec::decode_record(what, body).map_err(|e| match e {
            blixard_store::Error::CorruptRecord { reason, .. } => corrupt(reason),
            e => corrupt(e.to_string()),
        }),
        Some((v, _)) => Err(corrupt(format!("format version {v}; expected {version}"))),
        None => Err(corrupt("empty".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let v = ("a".to_string(), 7u64);
        let bytes = encode("test", &v).unwrap();
        assert_eq!(decode::<(String, u64)>("test", &bytes).unwrap(), v);
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(decode::<(String, u64)>("test", &other).unwrap_err().to_string().contains("version 9"));
        assert!(matches!(decode::<(String, u64)>("test", &[]), Err(Error::CorruptRecord { .. })));
        let mut long = bytes;
        long.push(0);
        assert!(decode::<(String, u64)>("test", &long).is_err());
    }
}
