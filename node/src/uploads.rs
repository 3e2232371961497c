//! Uploads: importing a file, bytes or a reader into the store and
//! publishing it under a name (signed as this node's claim), and the
//! registry of imports running now, with their progress.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use blixard_store::{ImportMode, ImportOutcome, ResourceKind};
use tracing::info;

use crate::{
    events::{P2pEvent, ResourceInfo, UploadProgress},
    Error, Node, Result,
};

/// One import running now.
struct Running {
    path: PathBuf,
    total: u64,
    done: Arc<AtomicU64>,
}

/// The imports running now.
#[derive(Default)]
pub(crate) struct Uploads(Mutex<Vec<Arc<Running>>>);

/// An import listed in [`Uploads`] until dropped.
pub(crate) struct Listed<'a> {
    uploads: &'a Uploads,
    entry: Arc<Running>,
    /// Bytes hashed so far: the import adds to it.
    pub(crate) done: Arc<AtomicU64>,
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.uploads.0.lock().unwrap().retain(|r| !Arc::ptr_eq(r, &self.entry));
    }
}

impl Uploads {
    /// Lists an import of `path` (`total` bytes) until the guard is dropped.
    pub(crate) fn begin(&self, path: &Path, total: u64) -> Listed<'_> {
        let done = Arc::new(AtomicU64::new(0));
        let entry = Arc::new(Running { path: path.to_path_buf(), total, done: done.clone() });
        self.0.lock().unwrap().push(entry.clone());
        Listed { uploads: self, entry, done }
    }

    /// Every import running now, with its progress.
    pub(crate) fn list(&self) -> Vec<UploadProgress> {
        let running = self.0.lock().unwrap();
        running
            .iter()
            .map(|r| UploadProgress {
                path: r.path.clone(),
                bytes: r.done.load(Ordering::Relaxed).min(r.total),
                total: r.total,
            })
            .collect()
    }
}

impl Node {
    /// Imports the file at `path` into the store (copy mode) and publishes
    /// it as `(kind, name, version)`. Its progress is listed by
    /// [`Node::uploads`] while it runs.
    pub async fn upload_resource(
        &self,
        kind: ResourceKind,
        name: &str,
        version: &str,
        path: &Path,
    ) -> Result<ResourceInfo> {
        self.upload_path(kind, name, version, path, ImportMode::Copy).await
    }

    /// [`Node::upload_resource`] in either mode: `Copy` (the store owns a
    /// copy) or `Reference` (the store keeps the path and serves from the
    /// file, re-verifying what it reads; the file must not change).
    pub async fn upload_path(
        &self,
        kind: ResourceKind,
        name: &str,
        version: &str,
        path: &Path,
        mode: ImportMode,
    ) -> Result<ResourceInfo> {
        blixard_store::validate_resource_key(&kind, name, version)?;
        if !path.is_file() {
            return Err(Error::Io {
                op: "upload",
                path: path.into(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a readable file"),
            });
        }
        let total = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        // Listed while it runs, even if this future is dropped (a client
        // that hung up on the control API).
        let listed = self.inner.uploads.begin(path, total);
        let imported = self.inner.store.import_path_with_progress(path, mode, listed.done.clone()).await;
        drop(listed);
        self.publish(kind, name, version, imported?)
    }

    /// Imports `data` and publishes it as `(kind, name, version)`.
    pub async fn upload_bytes(
        &self,
        kind: ResourceKind,
        name: &str,
        version: &str,
        data: impl Into<blixard_store::Bytes>,
    ) -> Result<ResourceInfo> {
        blixard_store::validate_resource_key(&kind, name, version)?;
        let imported = self.inner.store.import_bytes(data).await?;
        self.publish(kind, name, version, imported)
    }

    /// Imports everything `reader` yields and publishes it as `(kind, name,
    /// version)`.
    pub async fn upload_reader(
        &self,
        kind: ResourceKind,
        name: &str,
        version: &str,
        reader: impl tokio::io::AsyncRead + Unpin,
    ) -> Result<ResourceInfo> {
        blixard_store::validate_resource_key(&kind, name, version)?;
        let imported = self.inner.store.import_reader(reader).await?;
        self.publish(kind, name, version, imported)
    }

    /// Names an imported blob, signs it as this node's claim and tells
    /// listeners.
    fn publish(&self, kind: ResourceKind, name: &str, version: &str, imported: ImportOutcome) -> Result<ResourceInfo> {
        let r = self.inner.store.put_resource_and_release(&kind, name, version, imported.lease)?;
        self.inner.cache.uploaded(&kind, name, version);
        self.inner.index_in_background(r.hash);
        let info = r.clone();
        info!(kind = %kind, name, version, hash = %r.hash, size = r.size, "uploaded");
        let _ = self.inner.events.send(P2pEvent::ResourceAvailable(info.clone()));
        Ok(info)
    }

    /// Uploads (imports) running now, with their progress.
    pub fn uploads(&self) -> Vec<UploadProgress> {
        self.inner.uploads.list()
    }
}
