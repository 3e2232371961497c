//! Checkpoints of partial blobs: the verified ranges written to
//! `partial/<hash>.ckpt` (checksummed, replaced by rename), read back at
//! open, and rebuilt by re-verifying the files when missing or damaged.

use std::fs::{self, File};

use tracing::warn;

use crate::{
    codec,
    entry::CheckpointRecord,
    ranges::{self, ChunkRanges},
    tree, Error, Hash, Result, Store,
};

/// Reads a partial blob's checkpoint. Errors if missing or damaged.
pub(crate) fn load_checkpoint(store: &Store, hash: &Hash, size: u64) -> Result<ChunkRanges> {
    let path = store.partial_path(hash, "ckpt");
    let bytes = fs::read(&path).map_err(Error::io("read", &path))?;
    let c = codec::decode_checkpoint(&bytes)?;
    if c.hash != *hash || c.size != size {
        return Err(Error::CorruptRecord { what: "checkpoint", reason: "belongs to another blob or size".into() });
    }
    Ok(ranges::from_boundaries(&c.boundaries).expect("validated by decode"))
}

/// At open: keep a valid checkpoint; otherwise rebuild the ranges by
/// re-verifying the files against the outboard; if even that is
/// impossible, drop the blob.
pub(crate) fn recover(store: &Store, hash: &Hash, size: u64) -> Result<()> {
    match load_checkpoint(store, hash, size) {
        Ok(_) => return Ok(()),
        Err(e) => warn!(%hash, "partial blob checkpoint unusable ({e}); re-verifying its files"),
    }
    let data_path = store.partial_path(hash, "data");
    let ob_path = store.partial_path(hash, "obao4");
    let rebuilt = (|| -> Option<ChunkRanges> {
        let data = File::open(&data_path).ok()?;
        let ob = File::open(&ob_path).ok()?;
        if data.metadata().ok()?.len() != size || ob.metadata().ok()?.len() != tree::outboard_size(size) {
            return None;
        }
        let outboard = bao_tree::io::outboard::PreOrderOutboard {
            root: blake3::Hash::from(*hash),
            tree: tree::bao_tree(size),
            data: ob,
        };
        let mut found = ChunkRanges::empty();
        for r in bao_tree::io::sync::valid_ranges(outboard, data, &ChunkRanges::all()) {
            found |= ChunkRanges::from(r.ok()?);
        }
        Some(found)
    })();
    match rebuilt {
        Some(found) => {
            write_checkpoint(store, hash, size, &found)?;
            warn!(%hash, bytes = ranges::byte_count(&found, size), "rebuilt partial blob checkpoint");
            Ok(())
        }
        None => {
            warn!(%hash, "partial blob files are missing or damaged; dropping it");
            store.remove_blob(hash)
        }
    }
}

pub(crate) fn write_checkpoint(store: &Store, hash: &Hash, size: u64, r: &ChunkRanges) -> Result<()> {
    let bytes = codec::encode_checkpoint(&CheckpointRecord { hash: *hash, size, boundaries: ranges::boundaries(r) })?;
    let path = store.partial_path(hash, "ckpt");
    let tmp = store.partial_path(hash, "ckpt.tmp");
    let mut f = File::create(&tmp).map_err(Error::io("create", &tmp))?;
    std::io::Write::write_all(&mut f, &bytes).map_err(Error::io("write", &tmp))?;
    f.sync_data().map_err(Error::io("sync", &tmp))?;
    fs::rename(&tmp, &path).map_err(Error::io("rename", &tmp))?;
    Ok(())
}
