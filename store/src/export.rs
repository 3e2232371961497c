//! Export: a complete blob copied out to a path, every byte checked against
//! the blob's tree on the way (bytes at rest can rot), through a temp file
//! created next to the target with `O_CREAT | O_EXCL` under a random name
//! (a planted file or link there is never written through) and renamed
//! into place, so the target is never left half-written. Zero pages are
//! left as holes (`sparse`).

use std::path::Path;

use crate::{ranges, verify, Error, Hash, Result, Store};

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
/// store.export(blob.hash, &target, blixard_store::ExportOptions { overwrite: true }).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Replace an existing target (a file, or a symbolic link, which is
    /// replaced itself, never followed). Without it an existing target is
    /// an error.
    pub overwrite: bool,
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
            let ranges = ranges::to_vec(&damaged, opened.size)
                .iter()
                .map(|r| {
                    format!("{}..{}", r.start * ranges::CHUNK_BYTES, (r.end * ranges::CHUNK_BYTES).min(opened.size))
                })
                .collect::<Vec<_>>()
                .join(", ");
            if let Some(path) = &opened.external {
                let reason = format!("bytes {ranges} do not match the blob");
                return Err(self.reference_changed(Error::ReferenceChanged {
                    hash: *hash,
                    path: path.clone(),
                    reason,
                }));
            }
            self.forget_damaged(hash, &damaged)?;
            return Err(Error::Damaged { hash: *hash, ranges });
        }
        tmp.as_file().sync_data().map_err(Error::io("sync", tmp.path()))?;
        tmp.persist(target).map_err(|e| Error::io("rename into", target)(e.error))?;
        Ok(opened.size)
    }
}
