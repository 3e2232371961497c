//! Recovery at open: blobs that were completed but not yet durable when
//! the process died are re-verified (kept if their bytes match, dropped if
//! not), partial blobs go back to their last checkpoint; and salvage after
//! the metadata database is damaged or lost: what can be
//! recovered is recovered, and what cannot is said out loud (in a
//! [`Recovery`]).
//!
//! Blob files are content-addressed, so a data file in `blobs/` whose
//! record is gone can be re-hashed and, if it matches its name, taken back
//! (its outboard is rebuilt). Names (resources), tags and small blobs kept
//! inside the database cannot: [`Recovery`] reports what happened, and
//! recovered blobs get a tag `recovered/<hash>` so that GC keeps them until
//! the operator names or drops them.

use std::{
    fs::{self, File},
    path::Path,
};

use tracing::{info, warn};

use crate::{
    entry::{DataLocation, EntryRecord, OutboardLocation},
    recovery::Recovery,
    Error, Hash, Result, Store,
};

impl Store {
    /// Takes back every owned data file in `blobs/` that has no record:
    /// re-hashed, kept if it matches its name (tagged), removed if not.
    pub(crate) fn adopt_orphans(&self, recovery: &mut Recovery) -> Result<()> {
        let blobs = self.dir().join("blobs");
        let mut orphans = Vec::new();
        for e in fs::read_dir(&blobs).map_err(Error::io("read directory", &blobs))? {
            let p = e.map_err(Error::io("read directory", &blobs))?.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else { continue };
            let Some(hash) = name.strip_suffix(".data").and_then(|h| h.parse::<Hash>().ok()) else { continue };
            if self.entry(&hash).ok().flatten().is_none() {
                orphans.push((hash, p));
            }
        }
        for (hash, path) in orphans {
            match self.adopt(&hash, &path) {
                Ok(Some(size)) => {
                    warn!(%hash, size, "recovered a blob whose record was lost");
                    recovery.recovered.push((hash, size));
                }
                Ok(None) => {
                    warn!(%hash, "removed a blob file whose bytes do not match its name");
                    recovery.discarded += 1;
                }
                Err(e) => warn!(%hash, "could not recover a blob file: {e}"),
            }
        }
        if !recovery.recovered.is_empty() {
            info!(count = recovery.recovered.len(), "recovered blobs are tagged recovered/<hash>");
        }
        Ok(())
    }

    /// Re-imports one orphaned data file in place (moved, not copied); its
    /// size if it matched `hash`, `None` if it did not (and was removed).
    fn adopt(&self, hash: &Hash, path: &Path) -> Result<Option<u64>> {
        let tmp = self.tmp_path("salvage");
        fs::rename(path, &tmp).map_err(Error::io("move", path))?;
        let _ = fs::remove_file(self.blob_path(hash, "obao4"));
        let f = File::open(&tmp).map_err(Error::io("open", &tmp))?;
        let outcome = self.import_owned_tmp(&tmp, f)?;
        if outcome.hash != *hash {
            // Damaged: the bytes are a valid blob of another hash, which
            // nothing references; the next GC removes it.
            drop(outcome.lease);
            return Ok(None);
        }
        self.set_tag_and_release(&format!("recovered/{}", hash.to_hex()), outcome.lease)?;
        Ok(Some(outcome.size))
    }

    /// Crash recovery at open.
    pub(crate) fn recover(&self) -> Result<()> {
        for (hash, entry) in self.entries().all()? {
            match entry {
                Err(e) => {
                    // Only the record: an owned data file is re-verified
                    // and taken back by `adopt_orphans`.
                    warn!(%hash, "dropping an undecodable record: {e}");
                    self.entries().remove(&hash)?;
                }
                Ok(EntryRecord::Complete { durable: false, size, data, outboard }) => {
                    if self.reverify_complete(&hash, size, &data, &outboard) {
                        info!(%hash, "re-verified blob that was not yet durable");
                        self.entries().mark_durable(&self.lock_roots(), &hash, &data)?;
                    } else {
                        warn!(%hash, "dropping blob whose data did not survive a crash");
                        self.remove_blob(&hash)?;
                    }
                }
                Ok(EntryRecord::Complete { .. }) => {}
                Ok(EntryRecord::Partial { size }) => crate::checkpoint::recover(self, &hash, size)?,
            }
        }
        self.flush()
    }

    /// Re-hashes owned files of a blob and syncs them; true if they match.
    fn reverify_complete(&self, hash: &Hash, size: u64, data: &DataLocation, ob: &OutboardLocation) -> bool {
        let data_path = match data {
            DataLocation::Owned => self.blob_path(hash, "data"),
            _ => return true,
        };
        let result = (|| -> Result<bool> {
            let f = File::open(&data_path).map_err(Error::io("open", &data_path))?;
            if f.metadata().map_err(Error::io("stat", &data_path))?.len() != size {
                return Ok(false);
            }
            let (h, outboard) = crate::hashing::hash_file(&f, size, &data_path, None, None)?;
            if h != *hash {
                return Ok(false);
            }
            if let OutboardLocation::Owned = ob {
                let p = self.blob_path(hash, "obao4");
                fs::write(&p, &outboard).map_err(Error::io("write", &p))?;
                File::open(&p).and_then(|f| f.sync_all()).map_err(Error::io("sync", &p))?;
            }
            f.sync_all().map_err(Error::io("sync", &data_path))?;
            Ok(true)
        })();
        result.unwrap_or_else(|e| {
            warn!(%hash, "re-verification failed: {e}");
            false
        })
    }
}
