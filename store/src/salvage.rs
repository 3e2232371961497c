//! Salvage after the metadata database is damaged or lost: what can be
//! recovered is recovered, and what cannot is said out loud.
//!
//! Blob files are content-addressed, so a data file in `blobs/` whose
//! record is gone can be re-hashed and, if it matches its name, taken back
//! (its outboard is rebuilt). Names (resources), tags and small blobs kept
//! inside the database cannot: [`Recovery`] reports what happened, and
//! recovered blobs get a tag `recovered/<hash>` so that GC keeps them until
//! the operator names or drops them.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
};

use tracing::{error, info, warn};

use crate::{Error, Hash, Result, Store};

/// What opening the store found wrong with its metadata, and what it
/// recovered. Empty ([`Recovery::is_clean`]) when nothing was wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The metadata database could not be opened: it was moved here and a
    /// new one started.
    pub moved_aside: Option<PathBuf>,
    /// The database opened but had lost its records (emptied, deleted or
    /// replaced) while blob files were present.
    pub metadata_lost: bool,
    /// Blobs found on disk without a record, re-verified and kept, with
    /// their sizes; each is tagged `recovered/<hash>`.
    pub recovered: Vec<(Hash, u64)>,
    /// Files without a record whose bytes did not match their name: removed.
    pub discarded: usize,
}

impl Recovery {
    /// True if the metadata was intact.
    pub fn is_clean(&self) -> bool {
        *self == Recovery::default()
    }

    /// One paragraph for the operator.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.moved_aside {
            parts.push(format!("the metadata database was damaged (kept at {} for inspection)", p.display()));
        }
        if self.metadata_lost {
            parts.push("the metadata database had lost its records".into());
        }
        parts.push(format!(
            "{} blob(s) recovered from their files and tagged recovered/<hash>; {} damaged file(s) removed; \
             resource names, tags and blobs of 16 KiB or less that were recorded only in the database are lost",
            self.recovered.len(),
            self.discarded
        ));
        parts.join("; ")
    }
}

/// Opens the sled database at `path`; one too damaged to open is moved
/// aside (to `<name>.damaged-<unix time>`, kept for inspection) and a new
/// one started. Returns where the damaged one went, if it was. A database
/// locked by another process is an error, never moved. The store's
/// metadata and the node's own database both open this way.
pub fn open_or_set_aside(path: &Path) -> Result<(sled::Db, Option<PathBuf>)> {
    match crate::store::open_sled(path) {
        Err(Error::OpenMetadata { reason, .. }) if !reason.contains("another process") => {
            warn!(path = %path.display(), "cannot open the database: {reason}");
            let stamp =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let aside = path.with_file_name(format!("{name}.damaged-{stamp}"));
            fs::rename(path, &aside).map_err(Error::io("move aside", path))?;
            error!(path = %aside.display(), "a damaged database was moved aside; starting a new one");
            Ok((crate::store::open_sled(path)?, Some(aside)))
        }
        other => other.map(|db| (db, None)),
    }
}

impl Store {
    /// Takes back every owned data file in `blobs/` that has no record:
    /// re-hashed, kept if it matches its name (tagged), removed if not.
    pub(crate) fn adopt_orphans(&self, recovery: &mut Recovery) -> Result<()> {
        let blobs = self.inner.dir.join("blobs");
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
}
