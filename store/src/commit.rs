//! The one place where a blob becomes complete, and the durability that
//! follows it.
//!
//! Every way in (an import, an inline blob, the last group of a download)
//! ends in [`Store::complete`]: under the roots lock, so GC never sees a blob
//! between its files and its entry, the caller's files are moved into
//! `blobs/` and the entry is written. A blob whose owned files are not yet
//! synced is recorded `durable: false` and synced in the background (an fsync
//! per import would cost about 2.5 s per GiB on slow disks); a crash before
//! that ends is caught at open, where such blobs are re-hashed.

use std::{fs, fs::File, path::PathBuf};

use tracing::warn;

use crate::{
    entry::{DataLocation, EntryRecord, OutboardLocation},
    Error, Hash, Lease, Result, Store, INLINE_MAX,
};

/// Who completes a blob; decides what an existing partial entry means and
/// when the entry must reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// An import: it supersedes a partial download of the same blob. A
    /// non-durable entry is flushed by its background sync.
    Import,
    /// A partial blob's last group: its checkpoint is dropped right after,
    /// so the entry is flushed now.
    Download,
}

/// Where a complete blob's bytes are, once placed.
pub(crate) struct Placed {
    pub data: DataLocation,
    pub outboard: OutboardLocation,
    /// False if owned files still need an fsync.
    pub durable: bool,
}

impl Store {
    /// Records `hash` (of `size` bytes) as complete. `place` moves the
    /// caller's files into `blobs/` and says where everything is; it runs
    /// under the roots lock, only if the blob is not complete already (then
    /// `discard` runs instead, and the existing blob wins).
    pub(crate) fn complete(
        &self,
        hash: &Hash,
        size: u64,
        origin: Origin,
        place: impl FnOnce() -> Result<Placed>,
        discard: impl FnOnce(),
    ) -> Result<Lease> {
        let roots = self.lock_roots();
        let lease = self.lease(*hash);
        match self.entry(hash)? {
            Some(EntryRecord::Complete { .. }) => {
                discard();
                return Ok(lease);
            }
            Some(EntryRecord::Partial { .. }) if origin == Origin::Import => self.remove_blob(hash)?,
            _ => {}
        }
        let Placed { data, outboard, durable } = place()?;
        self.entries().complete(&roots, hash, size, data, outboard, durable)?;
        if durable || origin == Origin::Download {
            self.flush()?;
        }
        if !durable {
            self.schedule_sync(*hash);
        }
        Ok(lease)
    }

    /// Records a small blob inline.
    pub(crate) fn commit_inline(&self, hash: &Hash, data: Vec<u8>) -> Result<Lease> {
        let size = data.len() as u64;
        let place = || Ok(Placed { data: DataLocation::Inline(data), outboard: OutboardLocation::None, durable: true });
        self.complete(hash, size, Origin::Import, place, || {})
    }

    /// Moves an import's temp files into place and records the blob; a blob
    /// already complete wins (the temp files are dropped).
    pub(crate) fn commit(
        &self,
        hash: &Hash,
        size: u64,
        data: DataLocation,
        data_tmp: Option<PathBuf>,
        ob: Vec<u8>,
        ob_tmp: Option<PathBuf>,
    ) -> Result<Lease> {
        let discard = || {
            for p in data_tmp.iter().chain(ob_tmp.iter()) {
                let _ = fs::remove_file(p);
            }
        };
        let place = || {
            let outboard = match (ob_tmp.as_ref(), ob.len() as u64) {
                (Some(p), _) => {
                    let dst = self.blob_path(hash, "obao4");
                    fs::rename(p, &dst).map_err(Error::io("rename", p))?;
                    OutboardLocation::Owned
                }
                (None, 0) => OutboardLocation::None,
                (None, n) if n <= INLINE_MAX => OutboardLocation::Inline(ob),
                (None, _) => {
                    let dst = self.blob_path(hash, "obao4");
                    fs::write(&dst, &ob).map_err(|e| {
                        discard();
                        Error::io("write", &dst)(e)
                    })?;
                    OutboardLocation::Owned
                }
            };
            let durable = data_tmp.is_none() && !matches!(outboard, OutboardLocation::Owned);
            if let Some(tmp) = &data_tmp {
                let dst = self.blob_path(hash, "data");
                fs::rename(tmp, &dst).map_err(Error::io("rename", tmp))?;
            }
            Ok(Placed { data, outboard, durable })
        };
        self.complete(hash, size, Origin::Import, place, discard)
    }

    /// Makes a non-durable blob durable in the background.
    /// The thread holds the store weakly: a store being closed is not kept open,
    /// and whatever is left undone is re-verified at the next open.
    pub(crate) fn schedule_sync(&self, hash: Hash) {
        let weak = self.downgrade();
        std::thread::spawn(move || {
            let Some(store) = weak.upgrade() else { return };
            if let Err(e) = store.make_durable(&hash) {
                warn!(%hash, "background sync failed: {e}");
            }
        });
    }

    /// fsyncs a blob's owned files, then marks its entry durable. Blocks.
    pub fn make_durable(&self, hash: &Hash) -> Result<()> {
        let Some(EntryRecord::Complete { data, outboard, durable: false, .. }) = self.entry(hash)? else {
            return Ok(());
        };
        // A data file handed over to an export (`ExportOptions::hand_over`)
        // is synced where it went.
        let data_path = match &data {
            DataLocation::Owned => Some(self.blob_path(hash, "data")),
            DataLocation::External { path, .. } => Some(std::path::PathBuf::from(path)),
            DataLocation::Inline(_) => None,
        };
        let outboard_path = matches!(outboard, OutboardLocation::Owned).then(|| self.blob_path(hash, "obao4"));
        for p in [data_path, outboard_path].into_iter().flatten() {
            if let Err(e) = File::open(&p).and_then(|f| f.sync_all()) {
                // Handed over meanwhile: whoever moved it syncs it.
                if e.kind() == std::io::ErrorKind::NotFound
                    && !matches!(self.entry(hash)?, Some(EntryRecord::Complete { data: ref d, durable: false, .. }) if *d == data)
                {
                    return Ok(());
                }
                return Err(Error::io("sync", &p)(e));
            }
        }
        let dir = self.dir().join("blobs");
        File::open(&dir).and_then(|f| f.sync_all()).map_err(Error::io("sync directory", &dir))?;
        // Only the entry this synced: an export may have handed the data
        // over meanwhile (then the new place is synced by its own turn).
        if self.entries().mark_durable(&self.lock_roots(), hash, &data)? {
            self.flush()?;
        }
        Ok(())
    }

    /// Makes every blob durable now (waits for the disk). Blocks.
    pub fn sync_all(&self) -> Result<()> {
        for (hash, _) in self.blobs()? {
            self.make_durable(&hash)?;
        }
        self.flush()
    }
}
