//! Content-defined index: where a blob's bytes would be cut by content, and
//! the BLAKE3 hash of each piece, so that bytes that moved (an insertion
//! shifts everything after it) are still found in blobs already held.
//!
//! A blob's tree finds equal bytes only at equal positions (a group's
//! chaining value includes its offset). The index cuts the blob with
//! FastCDC 2020 (16 KiB minimum, 64 KiB average, 256 KiB maximum,
//! normalization level 1, the crate's default gear table); an insertion
//! moves the cut points near it only, and each chunk's plain BLAKE3 hash
//! does not depend on where it sits. The store keeps each complete blob's
//! index (built from verified bytes, on demand) and a table from chunk hash
//! to where that chunk lies in a local blob, so a download can look up
//! every chunk of the new blob's index. The parameters are part of the
//! format (version 1): changing them would find nothing in older indexes.
//!
//! An index from a peer is a hint, never trusted: its decoder checks every
//! length and count against the claimed size before anything is kept, and
//! whatever it points at is copied only after the bytes verify against the
//! new blob's tree (`seed`).

use std::io::Read;

use crate::{Error, Hash, Result, Store};

/// Minimum, average and maximum chunk length of format version 1.
pub const CDC_MIN: u32 = 16 * 1024;
/// Average chunk length.
pub const CDC_AVG: u32 = 64 * 1024;
/// Maximum chunk length.
pub const CDC_MAX: u32 = 256 * 1024;
/// The format version (and chunking parameters) this build writes and reads.
pub const INDEX_VERSION: u8 = 1;
/// Most chunks an index may list (36 MiB of entries; about 64 GiB of blob
/// at the average chunk length). Larger blobs get no index.
pub const MAX_INDEX_CHUNKS: u32 = 1 << 20;
/// Bytes of the header: version, size, count.
pub const INDEX_HEADER_BYTES: usize = 1 + 8 + 4;
/// Bytes per entry: length, hash.
pub const INDEX_ENTRY_BYTES: usize = 4 + 32;

const INDEX_TREE: &str = "content-index.v1";
const CHUNK_TREE: &str = "content-chunks.v1";

/// One chunk of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset in the blob.
    pub offset: u64,
    /// Length (at most [`CDC_MAX`]).
    pub len: u32,
    /// BLAKE3 hash of the chunk's bytes.
    pub hash: [u8; 32],
}

/// Where a chunk lies in a local blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLocation {
    /// The local blob.
    pub blob: Hash,
    /// Offset of the chunk in it.
    pub offset: u64,
    /// Its length.
    pub len: u32,
}

/// Encodes an index: the header, then each entry.
pub fn encode_index(size: u64, entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_HEADER_BYTES + entries.len() * INDEX_ENTRY_BYTES);
    out.push(INDEX_VERSION);
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.len.to_le_bytes());
        out.extend_from_slice(&e.hash);
    }
    out
}

/// Decodes an index streamed in pieces, checking it as it goes: the
/// version, the size (must be the blob's), the count (at most
/// [`MAX_INDEX_CHUNKS`], and no more chunks than the size allows), each
/// length (1 to [`CDC_MAX`], and only the last may be below [`CDC_MIN`]),
/// and that the lengths add up to the size exactly. Memory: one entry.
#[derive(Debug)]
pub struct IndexDecoder {
    size: u64,
    header: Vec<u8>,
    count: Option<u32>,
    entry: Vec<u8>,
    seen: u32,
    offset: u64,
}

impl IndexDecoder {
    /// A decoder for the index of a blob of `size` bytes.
    pub fn new(size: u64) -> Self {
        IndexDecoder { size, header: Vec::new(), count: None, entry: Vec::new(), seen: 0, offset: 0 }
    }

    fn bad(reason: String) -> Error {
        Error::BadIndex(reason)
    }

    /// Takes the next bytes; hands each complete, checked entry to `entry`.
    pub fn push(&mut self, mut data: &[u8], mut entry: impl FnMut(IndexEntry)) -> Result<()> {
        while !data.is_empty() {
            let Some(count) = self.count else {
                let take = (INDEX_HEADER_BYTES - self.header.len()).min(data.len());
                self.header.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.header.len() == INDEX_HEADER_BYTES {
                    self.count = Some(self.check_header()?);
                }
                continue;
            };
            if self.seen == count {
                return Err(Self::bad(format!("bytes after the last of {count} entries")));
            }
            let take = (INDEX_ENTRY_BYTES - self.entry.len()).min(data.len());
            self.entry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.entry.len() == INDEX_ENTRY_BYTES {
                let e = self.check_entry(count)?;
                self.entry.clear();
                entry(e);
            }
        }
        Ok(())
    }

    fn check_header(&self) -> Result<u32> {
        let h = &self.header;
        if h[0] != INDEX_VERSION {
            return Err(Self::bad(format!("version {} (this build reads {INDEX_VERSION})", h[0])));
        }
        let size = u64::from_le_bytes(h[1..9].try_into().expect("8 bytes"));
        if size != self.size {
            return Err(Self::bad(format!("it is for {size} bytes, the blob has {}", self.size)));
        }
        let count = u32::from_le_bytes(h[9..13].try_into().expect("4 bytes"));
        let most = (self.size / CDC_MIN as u64 + 1).min(MAX_INDEX_CHUNKS as u64);
        if count as u64 > most || (count == 0) != (self.size == 0) {
            return Err(Self::bad(format!("{count} chunks for {size} bytes (at most {most})")));
        }
        Ok(count)
    }

    fn check_entry(&mut self, count: u32) -> Result<IndexEntry> {
        let len = u32::from_le_bytes(self.entry[..4].try_into().expect("4 bytes"));
        let hash: [u8; 32] = self.entry[4..].try_into().expect("32 bytes");
        let last = self.seen + 1 == count;
        let end = self.offset + len as u64;
        if len == 0 || len > CDC_MAX || (!last && len < CDC_MIN) || end > self.size || (last && end != self.size) {
            return Err(Self::bad(format!(
                "chunk {} of {count} is {len} bytes at offset {} of {}",
                self.seen, self.offset, self.size
            )));
        }
        let e = IndexEntry { offset: self.offset, len, hash };
        self.offset = end;
        self.seen += 1;
        Ok(e)
    }

    /// Ends the index: every entry must have arrived.
    pub fn finish(self) -> Result<()> {
        match self.count {
            Some(c) if c == self.seen && self.entry.is_empty() => Ok(()),
            Some(c) => Err(Self::bad(format!("it ended after {} of {c} entries", self.seen))),
            None => Err(Self::bad("it ended inside its header".into())),
        }
    }
}

/// Cuts `data` (the start of a blob, or all of it) into version-1 chunks;
/// for tests and benches of the chunking alone.
pub fn chunk_bytes(data: &[u8]) -> Vec<IndexEntry> {
    fastcdc::v2020::FastCDC::with_level(data, CDC_MIN, CDC_AVG, CDC_MAX, fastcdc::v2020::Normalization::Level1)
        .map(|c| IndexEntry {
            offset: c.offset as u64,
            len: c.length as u32,
            hash: *blake3::hash(&data[c.offset..c.offset + c.length]).as_bytes(),
        })
        .collect()
}

impl Store {
    fn index_tree(&self) -> Result<sled::Tree> {
        Ok(self.db().open_tree(INDEX_TREE)?)
    }

    fn chunk_tree(&self) -> Result<sled::Tree> {
        Ok(self.db().open_tree(CHUNK_TREE)?)
    }

    /// The encoded content index of a complete blob, if it was built.
    /// Blocking.
    pub fn content_index(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        Ok(self.index_tree()?.get(hash.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Builds (unless it exists) the content index of a complete blob from
    /// its verified bytes, and records where each of its chunks lies.
    /// Returns the number of chunks; a blob too large for an index
    /// ([`MAX_INDEX_CHUNKS`]) gets none. Blocking: it reads the whole blob.
    pub fn build_content_index(&self, hash: &Hash) -> Result<u32> {
        let index = self.index_tree()?;
        if let Some(v) = index.get(hash.as_bytes())? {
            return Ok(v.get(9..13).map_or(0, |c| u32::from_le_bytes(c.try_into().expect("4 bytes"))));
        }
        let reader = self.reader(hash)?;
        let size = reader.size();
        if reader.held() != &crate::ranges::all(size) {
            return Err(Error::Incomplete(*hash));
        }
        let level = fastcdc::v2020::Normalization::Level1;
        let chunker = fastcdc::v2020::StreamCDC::with_level(reader, CDC_MIN, CDC_AVG, CDC_MAX, level);
        let mut entries = Vec::new();
        for c in chunker {
            let c = c.map_err(|e| match e {
                fastcdc::v2020::Error::IoError(e) => Error::Stream(e),
                other => Error::Stream(std::io::Error::other(other.to_string())),
            })?;
            if entries.len() == MAX_INDEX_CHUNKS as usize {
                tracing::debug!(%hash, size, "too many chunks for a content index");
                return Ok(0);
            }
            entries.push(IndexEntry {
                offset: c.offset,
                len: c.length as u32,
                hash: *blake3::hash(&c.data).as_bytes(),
            });
        }
        // Plain inserts, not `apply_batch`: sled 0.34 takes a process-wide
        // write lock for batches, which waits on every other database's
        // flusher (and deadlocked with them, several stores in one process).
        let chunks = self.chunk_tree()?;
        for e in &entries {
            chunks.insert(&chunk_key(&e.hash, hash)[..], &chunk_value(e.offset, e.len)[..])?;
        }
        index.insert(hash.as_bytes(), encode_index(size, &entries))?;
        Ok(entries.len() as u32)
    }

    /// A local complete blob other than `except` holding a chunk with this
    /// hash, and where. Blocking.
    pub fn find_chunk(&self, chunk: &[u8; 32], except: &Hash) -> Result<Option<ChunkLocation>> {
        for kv in self.chunk_tree()?.scan_prefix(chunk) {
            let (k, v) = kv?;
            let (Ok(blob), Ok(value)) = (<[u8; 32]>::try_from(&k[32..]), <[u8; 12]>::try_from(&v[..])) else {
                continue;
            };
            let blob = Hash(blob);
            if blob == *except || !matches!(self.status(&blob)?, crate::BlobStatus::Complete { .. }) {
                continue;
            }
            let offset = u64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(value[8..].try_into().expect("4 bytes"));
            return Ok(Some(ChunkLocation { blob, offset, len }));
        }
        Ok(None)
    }

    /// True if any local blob has a content index (so a download may find
    /// chunks by content).
    pub fn has_content_indexes(&self) -> Result<bool> {
        Ok(!self.index_tree()?.is_empty())
    }

    /// Forgets a blob's index and its chunks (the blob is being removed).
    pub(crate) fn remove_content_index(&self, hash: &Hash) -> Result<()> {
        let index = self.index_tree()?;
        let Some(v) = index.get(hash.as_bytes())? else { return Ok(()) };
        let size = u64::from_le_bytes(v[1..9].try_into().map_err(|_| Error::BadIndex("short header".into()))?);
        let chunks = self.chunk_tree()?;
        let mut keys = Vec::new();
        let mut decoder = IndexDecoder::new(size);
        decoder.push(&v, |e| keys.push(chunk_key(&e.hash, hash)))?;
        for k in keys {
            chunks.remove(&k[..])?;
        }
        index.remove(hash.as_bytes())?;
        Ok(())
    }
}

fn chunk_key(chunk: &[u8; 32], blob: &Hash) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(chunk);
    k[32..].copy_from_slice(blob.as_bytes());
    k
}

fn chunk_value(offset: u64, len: u32) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&offset.to_le_bytes());
    v[8..].copy_from_slice(&len.to_le_bytes());
    v
}

/// Reads a whole index through the decoder (tests, and a check of what the
/// store serves).
pub fn decode_index(size: u64, mut bytes: impl Read) -> Result<Vec<IndexEntry>> {
    let mut d = IndexDecoder::new(size);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = bytes.read(&mut buf).map_err(Error::Stream)?;
        if n == 0 {
            break;
        }
        d.push(&buf[..n], |e| out.push(e))?;
    }
    d.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use blixard_tests::data::pseudo_random as random;

    #[tokio::test]
    async fn an_insertion_moves_only_nearby_cuts_and_chunks_are_found() {
        let store = Store::temporary().unwrap();
        let old = random(8 << 20, 1);
        let out = store.import_bytes(old.clone()).await.unwrap();
        let n = store.build_content_index(&out.hash).unwrap();
        assert!(n > 60 && n < 260, "{n} chunks for 8 MiB");
        let index = store.content_index(&out.hash).unwrap().unwrap();
        let entries = decode_index(old.len() as u64, &index[..]).unwrap();
        assert_eq!(entries, chunk_bytes(&old));
        // 100 bytes inserted at 1 MiB: all but a chunk or two are found again
        let mut new = old[..1 << 20].to_vec();
        new.extend_from_slice(&[7u8; 100]);
        new.extend_from_slice(&old[1 << 20..]);
        let new_chunks = chunk_bytes(&new);
        let found: Vec<_> = new_chunks
            .iter()
            .filter_map(|e| store.find_chunk(&e.hash, &Hash([0; 32])).unwrap().map(|l| (e, l)))
            .collect();
        assert!(found.len() + 3 >= new_chunks.len(), "{} of {} found", found.len(), new_chunks.len());
        for (e, l) in &found {
            assert_eq!(l.blob, out.hash);
            assert_eq!(
                &old[l.offset as usize..(l.offset + l.len as u64) as usize],
                &new[e.offset as usize..(e.offset + e.len as u64) as usize]
            );
        }
        // removed with the blob
        drop(out.lease);
        store.gc().unwrap();
        assert!(store.content_index(&out.hash).unwrap().is_none());
        assert!(store.find_chunk(&new_chunks[0].hash, &Hash([0; 32])).unwrap().is_none());
    }

    #[test]
    fn the_decoder_refuses_lies() {
        let data = random(300_000, 2);
        let entries = chunk_bytes(&data);
        let good = encode_index(data.len() as u64, &entries);
        assert_eq!(decode_index(data.len() as u64, &good[..]).unwrap(), entries);
        let bad = |bytes: &[u8], size: u64| decode_index(size, bytes).unwrap_err().to_string();
        let mut v = good.clone();
        v[0] = 2;
        assert!(bad(&v, 300_000).contains("version"), "{}", bad(&v, 300_000));
        assert!(bad(&good, 300_001).contains("300000"));
        let mut v = good.clone();
        v[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(bad(&v, 300_000).contains("chunks"));
        let mut v = good.clone();
        v[13..17].copy_from_slice(&(CDC_MAX + 1).to_le_bytes());
        assert!(bad(&v, 300_000).contains("chunk 0"));
        assert!(bad(&good[..good.len() - 1], 300_000).contains("ended"));
        let mut v = good.clone();
        v.push(0);
        assert!(bad(&v, 300_000).contains("after the last"));
    }
}
