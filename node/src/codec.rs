//! The one place the node encodes what it persists (the transfer queue and
//! the peer book in sled): a version byte, so a record from another format
//! version is refused, not misread, then the body in the store's record
//! encoding (`blixard_store::codec`); records of the first format are read
//! here once, to migrate.

use blixard_store::codec;
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

fn decode_version<T: DeserializeOwned>(what: &'static str, version: u8, bytes: &[u8]) -> Result<T> {
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
        bytes.extend(codec::encode_record("test", &old).unwrap());
        let r = decode_v1_pending(&bytes).unwrap();
        assert_eq!(r.id, crate::TransferId(42));
        assert_eq!(r.kind, blixard_store::ResourceKind::VmImage);
        assert_eq!((r.name.as_str(), r.version.as_str()), ("ubuntu-server", "22.04"));
        assert!(decode::<crate::transfers::PendingRecord>("transfer", &bytes).is_err(), "not readable as today's");
    }
}
