//! Export: a complete blob copied out to a path, through a temp file
//! renamed into place.

use std::{
    fs::{self, File},
    io,
    path::Path,
};

use crate::{
    entry::{DataLocation, EntryRecord},
    reader::ReadError,
    Error, Hash, Result, Store,
};

impl Store {
    /// Exports a complete blob to `target`, through a temp file renamed into
    /// place, so `target` is never left half-written.
    pub async fn export(&self, hash: Hash, target: impl AsRef<Path>) -> Result<u64> {
        let store = self.clone();
        let target = target.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || store.export_blocking(&hash, &target)).await?
    }

    fn export_blocking(&self, hash: &Hash, target: &Path) -> Result<u64> {
        let mut name = target.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".blixard-part");
        let tmp = target.with_file_name(name);
        let res = (|| {
            let n = match self.entry(hash)? {
                // Owned bytes are copied in the kernel; referenced ones are verified as read.
                Some(EntryRecord::Complete { data: DataLocation::Owned, .. }) => {
                    fs::copy(self.blob_path(hash, "data"), &tmp).map_err(Error::io("export to", &tmp))?
                }
                _ => {
                    let mut r = self.reader(hash)?;
                    let mut f = File::create(&tmp).map_err(Error::io("create", &tmp))?;
                    io::copy(&mut r, &mut f).map_err(|e| {
                        match e.get_ref().and_then(|i| i.downcast_ref::<ReadError>()) {
                            Some(ReadError(msg)) => {
                                Error::ReferenceChanged { hash: *hash, path: target.into(), reason: msg.clone() }
                            }
                            None => Error::io("export to", &tmp)(e),
                        }
                    })?
                }
            };
            fs::rename(&tmp, target).map_err(Error::io("rename", &tmp))?;
            Ok(n)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }
}
