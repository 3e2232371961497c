//! Export: a complete blob copied out to a path, every byte checked against
//! the blob's tree on the way (bytes at rest can rot), through a temp file
//! created next to the target with `O_CREAT | O_EXCL` under a random name
//! (a planted file or link there is never written through) and renamed
//! into place, so the target is never left half-written. Zero pages are
//! left as holes (`sparse`).

use std::path::Path;

use crate::{
    entry::{DataLocation, EntryRecord},
    ranges, verify, Error, Hash, Result, Store,
};

/// How an export treats an existing target.
///
/// ```
/// # #[tokio::main] async fn main() -> blixard_store::Result<()> {
/// let store = blixard_store::Store::temporary()?;
/// let blob = store.import_bytes(vec![1u8; 1000]).await?;
/// let dir = tempfile::tempdir().unwrap();
/// let target = dir.path().join("out.bin");
/// store.export(blob.hash, &target, blixard_store::ExportOptions::default()).await?;
/// // A second export to the same path needs overwrite.
/// store.export(blob.hash, &target, blixard_store::ExportOptions { overwrite: true, ..Default::default() }).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Replace an existing target (a file, or a symbolic link, which is
    /// replaced itself, never followed). Without it an existing target is
    /// an error.
    pub overwrite: bool,
    /// Hand the store's own copy over instead of copying it: where the
    /// blob's data is a file the store owns on the target's file system, it
    /// is renamed to the target (no byte is copied; holes stay holes), and
    /// the store keeps the blob as a reference to the target, re-verified
    /// whenever it is read, as a reference-mode import (a changed file is
    /// detected, never served). Its bytes are verified first, unless a
    /// download of this process completed the blob (verified as it
    /// arrived). Elsewhere, a verified copy as without it.
    pub hand_over: bool,
}

impl Store {
    /// Exports a complete blob to `target` (see [`ExportOptions`]; the
    /// default refuses an existing target). Returns the bytes written.
    ///
    /// A group whose bytes do not match the tree fails the export with
    /// [`Error::Damaged`] naming the byte ranges, and those groups become
    /// missing again ([`Store::forget_damaged`]), so the next download
    /// fetches them from peers.
    pub async fn export(&self, hash: Hash, target: impl AsRef<Path>, options: ExportOptions) -> Result<u64> {
        let store = self.clone();
        let target = target.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || store.export_blocking(&hash, &target, options)).await?
    }

    /// [`Store::export`], blocking.
    pub fn export_blocking(&self, hash: &Hash, target: &Path, options: ExportOptions) -> Result<u64> {
        if !options.overwrite && target.symlink_metadata().is_ok() {
            return Err(Error::Exists(target.to_path_buf()));
        }
        if options.hand_over {
            if let Some(size) = self.hand_over(hash, target, options.overwrite)? {
                return Ok(size);
            }
        }
        let opened = self.open_blob(hash)?;
        if opened.held != ranges::all(opened.size) {
            return Err(Error::Incomplete(*hash));
        }
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".blixard-part")
            .tempfile_in(dir)
            .map_err(Error::io("create a temp file in", dir))?;
        // Writing overlaps checking the next window: a writer thread takes
        // verified windows through a short queue.
        let file = tmp.as_file();
        let size = opened.size;
        let damaged = std::thread::scope(|scope| {
            let (send, recv) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(2);
            // Zero pages are not written: the new file keeps holes there.
            let writer = scope.spawn(move || -> std::io::Result<()> {
                file.set_len(size)?;
                for (at, bytes) in recv {
                    crate::sparse::write_sparse(file, &bytes, at, false)?;
                }
                Ok(())
            });
            let checked = verify::check(hash, &opened, &opened.held, |at, bytes| {
                send.send((at, bytes.to_vec())).map_err(|_| std::io::Error::other("the export writer stopped"))
            });
            drop(send);
            let written = writer.join().unwrap_or_else(|_| Err(std::io::Error::other("the export writer panicked")));
            match (checked, written) {
                (_, Err(e)) | (Err(e), _) => Err(e),
                (Ok(damaged), Ok(())) => Ok(damaged),
            }
        })
        .map_err(Error::io("export to", tmp.path()))?;
        if !damaged.is_empty() {
            let ranges = ranges::byte_ranges_text(&damaged, opened.size);
            if let Some(path) = &opened.external {
                let reason = format!("bytes {ranges} do not match the blob");
                return Err(self.reference_changed(Error::ReferenceChanged {
                    hash: *hash,
                    path: path.clone(),
                    reason,
                }));
            }
            self.forget_damaged(hash, &damaged)?;
            return Err(Error::Damaged { hash: *hash, size: opened.size, ranges: damaged });
        }
        tmp.as_file().sync_data().map_err(Error::io("sync", tmp.path()))?;
        tmp.persist(target).map_err(|e| Error::io("rename into", target)(e.error))?;
        Ok(opened.size)
    }

    /// See [`ExportOptions::hand_over`]; `None` if the data cannot be
    /// handed over (not an owned file, or another file system).
    fn hand_over(&self, hash: &Hash, target: &Path, overwrite: bool) -> Result<Option<u64>> {
        let Some(EntryRecord::Complete { data: DataLocation::Owned, .. }) = self.entry(hash)? else {
            return Ok(None);
        };
        let fresh = self.fresh().lock().unwrap().remove(hash);
        if !fresh {
            let report = self.verify_blob(hash, true)?;
            if !report.is_intact() {
                return Err(Error::Damaged { hash: *hash, size: report.size, ranges: report.damaged });
            }
        }
        // The entry is switched under the roots lock, which a background
        // sync (`make_durable`) also takes to mark the entry it synced.
        let roots = self.lock_roots();
        let Some(EntryRecord::Complete { size, data: DataLocation::Owned, outboard, durable }) = self.entry(hash)?
        else {
            return Ok(None);
        };
        let src = self.blob_path(hash, "data");
        // Not synced here: a blob not yet durable stays so (re-verified at
        // the next open if a crash comes first) and is synced in the
        // background where it now lies, as any completed download is.
        let meta = std::fs::metadata(&src).map_err(Error::io("stat", &src))?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = std::fs::canonicalize(dir).map_err(Error::io("resolve", dir))?;
        let name =
            target.file_name().ok_or_else(|| Error::InvalidArgument(format!("{} names no file", target.display())))?;
        let target = dir.join(name);
        // The entry first: a crash before the rename leaves a reference to a
        // file that is not there (missing again, fetched anew), never a
        // store entry without its data. Renaming keeps the modification time.
        let external = DataLocation::External { path: target.to_string_lossy().into_owned(), len: size, mtime_ns };
        self.entries().hand_over(&roots, hash, size, external, outboard.clone())?;
        self.flush()?;
        match rename(&src, &target, overwrite) {
            Ok(()) => {
                let _ = std::fs::File::open(&dir).and_then(|d| d.sync_all());
                if !durable {
                    self.schedule_sync(*hash);
                }
                Ok(Some(size))
            }
            Err(e) => {
                self.entries().take_back(&roots, hash, size, outboard)?;
                self.flush()?;
                match e.raw_os_error() {
                    Some(libc::EXDEV) => Ok(None),
                    Some(libc::EEXIST) => Err(Error::Exists(target)),
                    _ => Err(Error::io("rename into", &target)(e)),
                }
            }
        }
    }
}

/// Renames `from` to `to`; without `overwrite`, fails with `EEXIST` rather
/// than replace anything (atomically: no window for a planted file). A
/// link at `to` is replaced, never followed.
fn rename(from: &Path, to: &Path, overwrite: bool) -> std::io::Result<()> {
    if overwrite {
        return std::fs::rename(from, to);
    }
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths, relative to the working directory.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), libc::RENAME_NOREPLACE) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A downloaded blob handed over: the target is the store's own file
    /// (renamed), the store keeps it as a reference and still serves it, a
    /// change to the file makes it missing again, and a planted link is
    /// replaced, never followed.
    #[tokio::test]
    async fn hand_over_renames_the_store_copy_and_keeps_a_reference() {
        let dir = tempfile::tempdir().unwrap();
        let src = Store::open(dir.path().join("src")).unwrap();
        let dst = Store::open(dir.path().join("dst")).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 5000) as u8).collect();
        let out = src.import_bytes(data.clone()).await.unwrap();
        let mut response = Vec::new();
        src.write_encoded(&out.hash, &ranges::all(data.len() as u64), &mut response).unwrap();
        dst.receive_encoded(out.hash, &ranges::all(data.len() as u64), &mut &response[..]).unwrap();
        let _lease = dst.lease(out.hash);

        // a link planted at the target, pointing elsewhere
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let target = dir.path().join("image.img");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        let options = ExportOptions { overwrite: false, hand_over: true };
        assert!(matches!(dst.export(out.hash, &target, options).await, Err(Error::Exists(_))));
        let options = ExportOptions { overwrite: true, hand_over: true };
        assert_eq!(dst.export(out.hash, &target, options).await.unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert!(!target.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), data);
        assert!(!dst.blob_path(&out.hash, "data").exists(), "the store's copy was moved, not copied");
        assert!(matches!(
            dst.entry(&out.hash).unwrap(),
            Some(EntryRecord::Complete { data: DataLocation::External { .. }, .. })
        ));
        assert_eq!(dst.read_to_vec(&out.hash).unwrap(), data);

        // the user changes the file: never served, missing again
        let f = std::fs::OpenOptions::new().write(true).open(&target).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"edit", 100).unwrap();
        drop(f);
        assert!(dst.read_to_vec(&out.hash).is_err());
        assert!(!matches!(dst.status(&out.hash).unwrap(), crate::BlobStatus::Complete { .. }));
        src.set_tag_and_release("keep", out.lease).unwrap();
    }

    /// A blob this process did not just download is verified before it is
    /// handed over: rotten bytes are an error, not a file.
    #[tokio::test]
    async fn hand_over_of_an_older_blob_verifies_it_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        let data = vec![9u8; 1 << 20];
        let out = store.import_bytes(data).await.unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(store.blob_path(&out.hash, "data")).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"rot", 70_000).unwrap();
        drop(f);
        let target = dir.path().join("out.img");
        let r = store.export(out.hash, &target, ExportOptions { overwrite: false, hand_over: true }).await;
        assert!(matches!(r, Err(Error::Damaged { .. })), "{r:?}");
        assert!(!target.exists());
        store.set_tag_and_release("keep", out.lease).unwrap();
    }
}
