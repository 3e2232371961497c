//! [`Recovery`]: what opening a store found wrong with its metadata and
//! what it recovered (see `salvage`).

use std::path::PathBuf;

use crate::Hash;

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
