//! Roots and garbage collection: tags, leases, and the collector.
//!
//! A blob survives GC if a resource, a tag or a lease reaches it. Tags and
//! resources are persistent; leases are in memory and held by running imports
//! and transfers (they die with the process, which is fine: nothing runs after
//! a crash). Every change to the roots and the whole of a GC run hold one
//! lock, so the collector always sees a consistent set of roots; setting a tag
//! and releasing a lease is a single step under that lock (the race behind
//! iroh-blobs#247 cannot happen).

use std::{collections::HashSet, fs};

use tracing::info;

use crate::{Error, Hash, Result, Store};

/// Keeps a blob from garbage collection while held. Released on drop.
#[must_use = "a dropped lease no longer protects the blob"]
pub struct Lease {
    store: Store,
    hash: Hash,
}

impl Lease {
    /// The leased blob.
    pub fn hash(&self) -> Hash {
        self.hash
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({})", self.hash)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut leases = self.store.leases().lock().unwrap();
        if let Some(n) = leases.get_mut(&self.hash) {
            *n -= 1;
            if *n == 0 {
                leases.remove(&self.hash);
            }
        }
    }
}

/// What one GC run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Blobs removed.
    pub blobs_removed: u64,
    /// Stray files (no entry) removed.
    pub files_removed: u64,
}

/// Longest tag name accepted.
pub const MAX_TAG_LEN: usize = 1024;

impl Store {
    /// Takes a lease on `hash` (whether or not the blob exists yet).
    pub fn lease(&self, hash: Hash) -> Lease {
        *self.leases().lock().unwrap().entry(hash).or_insert(0) += 1;
        Lease { store: self.clone(), hash }
    }

    fn check_tag(name: &str) -> Result<()> {
        if name.is_empty() || name.len() > MAX_TAG_LEN {
            return Err(Error::InvalidArgument(format!("tag names are 1 to {MAX_TAG_LEN} bytes")));
        }
        Ok(())
    }

    /// True while a lease holds `hash` (a running import, transfer or
    /// export, or any user of [`Store::lease`]).
    pub fn is_leased(&self, hash: &Hash) -> bool {
        self.leases().lock().unwrap().contains_key(hash)
    }

    /// Points tag `name` at `hash`.
    ///
    /// Blocking (database writes and fsync): from async code, call it in `spawn_blocking`.
    pub fn set_tag(&self, name: &str, hash: Hash) -> Result<()> {
        Self::check_tag(name)?;
        let _roots = self.lock_roots();
        self.tags_tree().insert(name.as_bytes(), hash.as_bytes())?;
        self.flush()
    }

    /// Points tag `name` at the leased blob and releases the lease, atomically
    /// with respect to GC.
    ///
    /// Blocking (database writes and fsync): from async code, call it in `spawn_blocking`.
    pub fn set_tag_and_release(&self, name: &str, lease: Lease) -> Result<()> {
        Self::check_tag(name)?;
        let _roots = self.lock_roots();
        self.tags_tree().insert(name.as_bytes(), lease.hash.as_bytes())?;
        self.flush()?;
        drop(lease);
        Ok(())
    }

    /// The hash tag `name` points at.
    pub fn tag(&self, name: &str) -> Result<Option<Hash>> {
        Ok(self.tags_tree().get(name.as_bytes())?.and_then(|v| <[u8; 32]>::try_from(&v[..]).ok()).map(Hash))
    }

    /// All tags.
    pub fn tags(&self) -> Result<Vec<(String, Hash)>> {
        let mut out = Vec::new();
        for kv in self.tags_tree().iter() {
            let (k, v) = kv?;
            if let Ok(h) = <[u8; 32]>::try_from(&v[..]) {
                out.push((String::from_utf8_lossy(&k).into_owned(), Hash(h)));
            }
        }
        Ok(out)
    }

    /// Removes tag `name`; true if it existed.
    ///
    /// Blocking (database writes and fsync): from async code, call it in `spawn_blocking`.
    pub fn delete_tag(&self, name: &str) -> Result<bool> {
        let _roots = self.lock_roots();
        let existed = self.tags_tree().remove(name.as_bytes())?.is_some();
        self.flush()?;
        Ok(existed)
    }

    /// Removes every blob no resource, tag or lease reaches, and stray files.
    ///
    /// Blocking (walks the database, removes files): from async code, call it in `spawn_blocking`.
    pub fn gc(&self) -> Result<GcStats> {
        let _roots = self.lock_roots();
        let leases = self.leases().lock().unwrap();
        let mut live: HashSet<Hash> = leases.keys().copied().collect();
        for kv in self.tags_tree().iter() {
            if let Ok(h) = <[u8; 32]>::try_from(&kv?.1[..]) {
                live.insert(Hash(h));
            }
        }
        for r in self.resources(None)? {
            live.insert(r.hash);
        }
        let mut stats = GcStats::default();
        let mut known = HashSet::new();
        for h in self.entries().hashes()? {
            known.insert(h);
            if !live.contains(&h) {
                self.remove_blob(&h)?;
                stats.blobs_removed += 1;
            }
        }
        for sub in ["blobs", "partial"] {
            let dir = self.dir().join(sub);
            for e in fs::read_dir(&dir).map_err(Error::io("read directory", &dir))? {
                let p = e.map_err(Error::io("read directory", &dir))?.path();
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let owner = name.get(..64).and_then(|h| h.parse::<Hash>().ok());
                if owner.is_some_and(|h| !known.contains(&h) && !live.contains(&h)) {
                    fs::remove_file(&p).map_err(Error::io("remove", &p))?;
                    stats.files_removed += 1;
                }
            }
        }
        drop(leases);
        self.flush()?;
        info!(blobs = stats.blobs_removed, files = stats.files_removed, "gc done");
        Ok(stats)
    }
}
