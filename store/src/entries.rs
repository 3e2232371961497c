//! The blob entries: each blob's record in the metadata database (tree
//! `blobs`), and the roots lock. This module alone writes entries, through
//! typed transitions; the transitions that must not race with garbage
//! collection, hand-over or a background sync take a [`Roots`], the proof
//! that the roots lock is held, so the rule is checked by the compiler and
//! not by convention.
//!
//! ```text
//!   (absent) --begin_partial--> Partial --complete--> Complete{durable?}
//!                                  ^                     |  mark_durable
//!                                  +--demote_to_partial--+  hand_over / take_back
//!   any --remove--> (absent)
//! ```

use std::sync::{Mutex, MutexGuard};

use tracing::warn;

use crate::{
    codec,
    entry::{DataLocation, EntryRecord, OutboardLocation},
    Hash, Result,
};

/// Proof that the roots lock is held: roots (tags, resources, new blobs)
/// change, garbage is collected and entries switch places only while one
/// is alive.
pub(crate) struct Roots<'a>(#[allow(dead_code)] MutexGuard<'a, ()>);

/// The entries tree and the roots lock.
pub(crate) struct Entries {
    tree: sled::Tree,
    roots: Mutex<()>,
}

impl Entries {
    /// The entries of `db`.
    pub(crate) fn open(db: &sled::Db) -> Result<Self> {
        Ok(Entries { tree: db.open_tree("blobs")?, roots: Mutex::new(()) })
    }

    /// Takes the roots lock.
    pub(crate) fn lock_roots(&self) -> Roots<'_> {
        Roots(self.roots.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The record of `hash`, if any.
    pub(crate) fn get(&self, hash: &Hash) -> Result<Option<EntryRecord>> {
        match self.tree.get(hash.as_bytes())? {
            None => Ok(None),
            Some(v) => codec::decode_entry(&v).map(Some),
        }
    }

    /// Every blob with an entry.
    pub(crate) fn hashes(&self) -> Result<Vec<Hash>> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (k, _) = kv?;
            if let Ok(bytes) = <[u8; 32]>::try_from(&k[..]) {
                out.push(Hash(bytes));
            }
        }
        Ok(out)
    }

    /// Every entry as decoded, for recovery at open; keys that name no
    /// hash are dropped on the way.
    pub(crate) fn all(&self) -> Result<Vec<(Hash, Result<EntryRecord>)>> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            let Ok(bytes) = <[u8; 32]>::try_from(&k[..]) else {
                warn!("dropping blob entry with malformed key");
                self.tree.remove(k)?;
                continue;
            };
            out.push((Hash(bytes), codec::decode_entry(&v)));
        }
        Ok(out)
    }

    fn put(&self, hash: &Hash, e: &EntryRecord) -> Result<()> {
        self.tree.insert(hash.as_bytes(), codec::encode_entry(e)?)?;
        Ok(())
    }

    /// A partial blob begins: its files and empty checkpoint exist.
    pub(crate) fn begin_partial(&self, hash: &Hash, size: u64) -> Result<()> {
        self.put(hash, &EntryRecord::Partial { size })
    }

    /// The blob is complete: its data and outboard are where they say.
    pub(crate) fn complete(
        &self,
        _roots: &Roots,
        hash: &Hash,
        size: u64,
        data: DataLocation,
        outboard: OutboardLocation,
        durable: bool,
    ) -> Result<()> {
        self.put(hash, &EntryRecord::Complete { size, data, outboard, durable })
    }

    /// Marks a complete blob durable, only if its data is still at `data`
    /// (a hand-over may have moved it meanwhile: then its new place is
    /// synced on its own turn). True if it was marked.
    pub(crate) fn mark_durable(&self, _roots: &Roots, hash: &Hash, data: &DataLocation) -> Result<bool> {
        match self.get(hash)? {
            Some(EntryRecord::Complete { size, data: now, outboard, durable: false }) if now == *data => {
                self.put(hash, &EntryRecord::Complete { size, data: now, outboard, durable: true })?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The data of an owned complete blob now lives at `external` (recorded
    /// before the file moves, so a crash leaves a reference to a missing
    /// file, never an entry without its data).
    pub(crate) fn hand_over(
        &self,
        _roots: &Roots,
        hash: &Hash,
        size: u64,
        external: DataLocation,
        outboard: OutboardLocation,
    ) -> Result<()> {
        self.put(hash, &EntryRecord::Complete { size, data: external, outboard, durable: true })
    }

    /// Undoes [`Entries::hand_over`]: the file did not move.
    pub(crate) fn take_back(&self, _roots: &Roots, hash: &Hash, size: u64, outboard: OutboardLocation) -> Result<()> {
        self.put(hash, &EntryRecord::Complete { size, data: DataLocation::Owned, outboard, durable: true })
    }

    /// A complete blob becomes partial (damage found, or its referenced
    /// file changed); its partial files and checkpoint are in place.
    pub(crate) fn demote_to_partial(&self, _roots: &Roots, hash: &Hash, size: u64) -> Result<()> {
        self.put(hash, &EntryRecord::Partial { size })
    }

    /// Forgets a blob's entry (its files are removed by the caller).
    pub(crate) fn remove(&self, hash: &Hash) -> Result<()> {
        self.tree.remove(hash.as_bytes())?;
        Ok(())
    }
}
