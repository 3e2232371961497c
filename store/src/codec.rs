//! The one place where persisted records are encoded and decoded, the
//! store's and (through [`encode_record`] and [`decode_record`]) those of
//! crates that keep records in sled beside it, such as the node's.
//!
//! All records use bincode 2 with a fixed configuration: little-endian,
//! fixed-width integers, and a byte limit per record so a corrupt length can
//! never allocate without bound. Checkpoint files add a magic, a version and a
//! BLAKE3 checksum around the record; a file that fails any check is rejected
//! and its blob re-verified or dropped, never trusted.

use serde::{de::DeserializeOwned, Serialize};

use crate::{
    entry::{CheckpointRecord, EntryRecord, ResourceRecord},
    ranges, Error, Result, MAX_BLOB_SIZE,
};

/// Largest encoded metadata record accepted (an inline blob plus its outboard
/// is at most 32 KiB; everything else is far smaller).
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Largest checkpoint body accepted: 1 Mi range boundaries.
pub const MAX_CHECKPOINT_BYTES: usize = 8 * 1024 * 1024 + 64;
/// Magic at the start of every checkpoint file.
pub const CHECKPOINT_MAGIC: &[u8; 8] = b"BXCKPT01";

fn config<const LIMIT: usize>(
) -> bincode::config::Configuration<bincode::config::LittleEndian, bincode::config::Fixint, bincode::config::Limit<LIMIT>>
{
    bincode::config::standard().with_little_endian().with_fixed_int_encoding().with_limit::<LIMIT>()
}

fn encode<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(v, config::<MAX_CHECKPOINT_BYTES>())
        .map_err(|e| Error::CorruptRecord { what, reason: format!("encode: {e}") })
}

fn decode<T: DeserializeOwned, const LIMIT: usize>(what: &'static str, bytes: &[u8]) -> Result<T> {
    if bytes.len() > LIMIT {
        return Err(Error::CorruptRecord { what, reason: format!("{} bytes exceeds limit {LIMIT}", bytes.len()) });
    }
    let (v, used) = bincode::serde::decode_from_slice(bytes, config::<LIMIT>())
        .map_err(|e| Error::CorruptRecord { what, reason: e.to_string() })?;
    if used != bytes.len() {
        return Err(Error::CorruptRecord { what, reason: format!("{} trailing bytes", bytes.len() - used) });
    }
    Ok(v)
}

/// Encodes any record (at most 64 KiB, `MAX_RECORD_BYTES`, to be read back).
pub fn encode_record<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>> {
    encode(what, v)
}

/// Decodes any record of at most 64 KiB (`MAX_RECORD_BYTES`), refusing trailing bytes.
pub fn decode_record<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    decode::<_, MAX_RECORD_BYTES>(what, bytes)
}

/// Encodes a blob entry.
pub fn encode_entry(e: &EntryRecord) -> Result<Vec<u8>> {
    encode("entry", e)
}

/// Decodes a blob entry, checking its sizes are within limits.
pub fn decode_entry(bytes: &[u8]) -> Result<EntryRecord> {
    let e: EntryRecord = decode::<_, MAX_RECORD_BYTES>("entry", bytes)?;
    let size = match &e {
        EntryRecord::Complete { size, .. } | EntryRecord::Partial { size } => *size,
    };
    if size > MAX_BLOB_SIZE {
        return Err(Error::CorruptRecord { what: "entry", reason: format!("size {size} exceeds maximum") });
    }
    Ok(e)
}

/// Encodes a resource record.
pub fn encode_resource(r: &ResourceRecord) -> Result<Vec<u8>> {
    encode("resource", r)
}

/// Decodes a resource record.
pub fn decode_resource(bytes: &[u8]) -> Result<ResourceRecord> {
    decode::<_, MAX_RECORD_BYTES>("resource", bytes)
}

/// Encodes a checkpoint file: magic, bincode body, BLAKE3 of both.
pub fn encode_checkpoint(c: &CheckpointRecord) -> Result<Vec<u8>> {
    let mut out = CHECKPOINT_MAGIC.to_vec();
    out.extend(encode("checkpoint", c)?);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    Ok(out)
}

/// Decodes and validates a checkpoint file: magic, checksum, limits, and
/// boundaries strictly increasing within the blob.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<CheckpointRecord> {
    let bad = |reason: String| Error::CorruptRecord { what: "checkpoint", reason };
    if bytes.len() < CHECKPOINT_MAGIC.len() + 32 {
        return Err(bad(format!("{} bytes is too short", bytes.len())));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if &body[..8] != CHECKPOINT_MAGIC {
        return Err(bad("bad magic".into()));
    }
    if blake3::hash(body).as_bytes() != sum {
        return Err(bad("checksum mismatch".into()));
    }
    let c: CheckpointRecord = decode::<_, MAX_CHECKPOINT_BYTES>("checkpoint", &body[8..])?;
    if c.size > MAX_BLOB_SIZE {
        return Err(bad(format!("size {} exceeds maximum", c.size)));
    }
    if ranges::from_boundaries(&c.boundaries).is_none() {
        return Err(bad("range boundaries are not strictly increasing".into()));
    }
    if c.boundaries.last().is_some_and(|&b| b > ranges::chunk_count(c.size)) || !c.boundaries.len().is_multiple_of(2) {
        return Err(bad("ranges extend past the end of the blob".into()));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{entry::*, Hash};

    #[test]
    fn checkpoint_round_trip_and_rejects_damage() {
        let c = CheckpointRecord { hash: Hash::of(b"x"), size: 100_000, boundaries: vec![0, 16, 32, 48] };
        let bytes = encode_checkpoint(&c).unwrap();
        assert_eq!(decode_checkpoint(&bytes).unwrap(), c);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode_checkpoint(&b).is_err(), "flip at {i} accepted");
        }
        for len in 0..bytes.len() {
            assert!(decode_checkpoint(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn checkpoint_rejects_ranges_past_end() {
        let c = CheckpointRecord { hash: Hash::of(b"x"), size: 2048, boundaries: vec![0, 3] };
        assert!(decode_checkpoint(&encode_checkpoint(&c).unwrap()).is_err());
        let c = CheckpointRecord { hash: Hash::of(b"x"), size: 2048, boundaries: vec![1] };
        assert!(decode_checkpoint(&encode_checkpoint(&c).unwrap()).is_err());
    }

    #[test]
    fn entry_round_trip() {
        let e = EntryRecord::Complete {
            size: 5,
            data: DataLocation::Inline(b"hello".to_vec()),
            outboard: OutboardLocation::None,
            durable: true,
        };
        assert_eq!(decode_entry(&encode_entry(&e).unwrap()).unwrap(), e);
        assert!(decode_entry(&[0xff; 3]).is_err());
        let mut long = encode_entry(&e).unwrap();
        long.push(0);
        assert!(decode_entry(&long).is_err());
    }
}
