//! Reading a complete blob: a sequential reader that verifies every 16 KiB
//! group against the blob's tree as it reads it (bytes at rest can rot, and
//! a referenced file can change), the whole blob in memory, its outboard.

use std::io::{self, Read};

use crate::{opened::Opened, ranges, tree, Error, Hash, Result, Store};

impl Store {
    /// A reader over the bytes of a complete blob, verified group by group;
    /// a group that does not match its tree is an `InvalidData` error naming
    /// the blob and the offset.
    pub fn reader(&self, hash: &Hash) -> Result<BlobReader> {
        let opened = self.open_blob(hash)?;
        if opened.held != ranges::all(opened.size) {
            return Err(Error::Incomplete(*hash));
        }
        Ok(BlobReader { hash: *hash, opened, pos: 0, group: Vec::new(), group_index: u64::MAX })
    }

    /// The pre-order outboard bytes of a blob (empty for a single chunk group).
    pub fn outboard_bytes(&self, hash: &Hash) -> Result<Vec<u8>> {
        use positioned_io::ReadAt;
        let opened = self.open_blob(hash)?;
        let mut buf = vec![0u8; tree::outboard_size(opened.size) as usize];
        opened.outboard.read_exact_at(0, &mut buf).map_err(Error::Stream)?;
        Ok(buf)
    }

    /// Reads a whole complete blob into memory (for small blobs and tests).
    pub fn read_to_vec(&self, hash: &Hash) -> Result<Vec<u8>> {
        let mut r = self.reader(hash)?;
        let mut out = Vec::with_capacity(r.size() as usize);
        r.read_to_end(&mut out).map_err(Error::Stream)?;
        Ok(out)
    }
}

/// An error from a verified read, carried inside `io::Error`.
#[derive(Debug)]
pub(crate) struct ReadError(pub(crate) String);
impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ReadError {}

/// A sequential reader over a complete blob (see [`Store::reader`]).
pub struct BlobReader {
    hash: Hash,
    opened: Opened,
    pos: u64,
    group: Vec<u8>,
    group_index: u64,
}

impl BlobReader {
    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.opened.size
    }

    /// Loads and verifies chunk group `g`.
    fn load_group(&mut self, g: u64) -> io::Result<()> {
        use positioned_io::ReadAt;
        let size = self.opened.size;
        let start = g * tree::BLOCK_BYTES;
        let len = (size - start).min(tree::BLOCK_BYTES) as usize;
        self.group.resize(len, 0);
        self.opened.data.read_exact_at(start, &mut self.group)?;
        let n = tree::blocks(size);
        let expected = match tree::leaf_parent(n, g) {
            None => *self.hash.as_bytes(),
            Some((index, left)) => {
                let mut pair = [0u8; 64];
                self.opened.outboard.read_exact_at(index * tree::PARENT_BYTES, &mut pair)?;
                let half = if left { &pair[..32] } else { &pair[32..] };
                half.try_into().expect("32 bytes")
            }
        };
        if tree::leaf_hash(g, &self.group, n == 1) != expected {
            let what = match &self.opened.external {
                Some(path) => {
                    format!("{} changed at byte {start}: chunk group does not match blob {}", path.display(), self.hash)
                }
                None => format!("blob {} is damaged at rest at bytes {start}..{}", self.hash, start + len as u64),
            };
            return Err(io::Error::new(io::ErrorKind::InvalidData, ReadError(what)));
        }
        self.group_index = g;
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.opened.size;
        if self.pos >= size || buf.is_empty() {
            return Ok(0);
        }
        let g = self.pos / tree::BLOCK_BYTES;
        if g != self.group_index {
            self.load_group(g)?;
        }
        let off = (self.pos - g * tree::BLOCK_BYTES) as usize;
        let n = buf.len().min(self.group.len() - off);
        buf[..n].copy_from_slice(&self.group[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}
