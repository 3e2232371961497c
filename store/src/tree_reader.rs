//! [`TreeReader`]: a complete blob's tree read in pieces for serving
//! (`GetTree`), each piece checked against the blob's hash by a
//! [`TreeWalk`] as it is read, so a tree damaged at rest is never served.

use crate::{
    opened::{read_up_to, Opened},
    ranges,
    tree::{self, PARENT_BYTES},
    tree_walk::TreeWalk,
    Error, Hash, Result, Store,
};

/// A complete blob's tree (its pre-order outboard) read in pieces, each
/// checked against the blob's hash as it is read, so a tree damaged at
/// rest is never served. See [`Store::tree_reader`].
pub struct TreeReader {
    hash: Hash,
    size: u64,
    opened: Opened,
    walk: Option<TreeWalk>,
    at: u64,
}

impl Store {
    /// The tree of a complete blob, for serving it (`GetTree`). A blob of
    /// one group has an empty tree. Errors: [`Error::NotFound`] if absent,
    /// [`Error::Incomplete`] if partial.
    ///
    /// Blocking.
    pub fn tree_reader(&self, hash: &Hash) -> Result<TreeReader> {
        let opened = self.open_blob(hash)?;
        if opened.held != ranges::all(opened.size) {
            return Err(Error::Incomplete(*hash));
        }
        let size = opened.size;
        let walk = (tree::blocks(size) >= 2).then(|| TreeWalk::new(hash, size));
        Ok(TreeReader { hash: *hash, size, opened, walk, at: 0 })
    }
}

impl TreeReader {
    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next verified piece of at most `max` bytes (rounded down to whole
    /// records, at least one), or `None` at the end. A record that does not
    /// verify is [`Error::Damaged`].
    pub fn next_piece(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        let total = tree::outboard_size(self.size);
        let Some(walk) = self.walk.as_mut().filter(|_| self.at < total) else { return Ok(None) };
        let records = (max as u64 / PARENT_BYTES).max(1);
        let len = (records * PARENT_BYTES).min(total - self.at) as usize;
        let mut buf = vec![0u8; len];
        let read = read_up_to(&self.opened.outboard, self.at, &mut buf).map_err(Error::Stream)?;
        let damaged = |reason: String| Error::DamagedTree { hash: self.hash, reason };
        if read < len {
            return Err(damaged(format!("{} bytes where {total} were expected", self.at + read as u64)));
        }
        for rec in buf.chunks_exact(PARENT_BYTES as usize) {
            walk.push(rec, |_, _| {}).map_err(|e| damaged(format!("{e:?}")))?;
        }
        self.at += len as u64;
        Ok(Some(buf))
    }
}
