//! The one place the node encodes what it persists (the transfer queue and
//! the peer book in sled): bincode 2 with a fixed configuration and a
//! version byte, so a record from another format version is refused, not
//! misread; records of the first format are read here once, to migrate.

use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, Result};

/// Bumped when a persisted record's layout changes.
const VERSION: u8 = 2;

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
pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    decode_version(what, VERSION, bytes)
}

fn decode_version<T: DeserializeOwned>(what: &'static str, version: u8, bytes: &[u8]) -> Result<T> {
    let corrupt = |reason: String| Error::CorruptRecord { what, reason };
    match bytes.split_first() {
        Some((&v, body)) if v == version => {
            let (value, used) =
                bincode::serde::decode_from_slice(body, config()).map_err(|e| corrupt(e.to_string()))?;
            if used != body.len() {
                return Err(corrupt("trailing bytes".into()));
            }
            Ok(value)
        }
        Some((v, _)) => Err(corrupt(format!("format version {v}; expected {version}"))),
        None => Err(corrupt("empty".into())),
    }
}

/// A pending transfer as the first format kept it: text id `NODE-N`, kind
/// as text.
#[derive(serde::Deserialize)]
struct PendingV1 {
    id: String,
    kind: String,
    name: String,
    version: String,
    priority: crate::TransferPriority,
}

/// Reads a pending transfer of the first format.
pub(crate) fn decode_v1_pending(bytes: &[u8]) -> Result<crate::transfers::PendingRecord> {
    let old: PendingV1 = decode_version("transfer", 1, bytes)?;
    let corrupt = |reason: String| Error::CorruptRecord { what: "transfer", reason };
    let number = old.id.rsplit('-').next().and_then(|n| n.parse().ok());
    let id = number.ok_or_else(|| corrupt(format!("id {:?}", old.id)))?;
    let kind = old.kind.parse().map_err(|e: blixard_store::Error| corrupt(e.to_string()))?;
    let (name, version, priority) = (old.name, old.version, old.priority);
    Ok(crate::transfers::PendingRecord { id: crate::TransferId(id), kind, name, version, priority })
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
        assert!(matches!(decode::<(String, u64)>("test", &[]), Err(Error::CorruptRecord { .. })));
        let mut long = bytes;
        long.push(0);
        assert!(decode::<(String, u64)>("test", &long).is_err());
    }
}

#[cfg(test)]
mod migration_tests {
    use super::*;

    /// A record written by the first format (kept here as its bytes'
    /// recipe) is read and moved into today's form.
    #[test]
    fn a_first_format_pending_transfer_migrates() {
        #[derive(serde::Serialize)]
        struct Old<'a>(&'a str, &'a str, &'a str, &'a str, crate::TransferPriority);
        let mut bytes = vec![1u8];
        let old = Old("7-42", "vm-image", "ubuntu-server", "22.04", crate::TransferPriority::High);
        bytes.extend(bincode::serde::encode_to_vec(&old, config()).unwrap());
        let r = decode_v1_pending(&bytes).unwrap();
        assert_eq!(r.id, crate::TransferId(42));
        assert_eq!(r.kind, blixard_store::ResourceKind::VmImage);
        assert_eq!((r.name.as_str(), r.version.as_str()), ("ubuntu-server", "22.04"));
        assert!(decode::<crate::transfers::PendingRecord>("transfer", &bytes).is_err(), "not readable as today's");
    }
}
