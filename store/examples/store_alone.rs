//! The store on its own, as a storage engine: import a file (copied) and
//! bytes, name and tag them, read and export them verified, check every
//! blob at rest, and collect what nothing names.
//!
//! `cargo run -p blixard-store --example store_alone`

use blixard_store::{ExportOptions, ImportMode, ResourceKind, Store};

#[tokio::main]
async fn main() -> blixard_store::Result<()> {
    let scratch = tempfile::tempdir().expect("a temp dir");
    // A store that lives as long as this program (Store::open(dir) for a
    // lasting one).
    let store = Store::temporary()?;

    // A file, copied in; hashing runs on all cores.
    let image = scratch.path().join("alpine.img");
    std::fs::write(&image, vec![42u8; 5 << 20]).expect("write the sample file");
    let imported = store.import_path(&image, ImportMode::Copy).await?;
    let hash = imported.hash;
    println!("imported {} ({} bytes)", hash, imported.size);
    // Named as a resource; the import's lease is released into the name,
    // so the blob is kept from now on by the name alone.
    store.put_resource_and_release(&ResourceKind::VmImage, "alpine", "3.19", imported.lease)?;

    // Bytes, tagged; and bytes nothing names (kept only while their lease
    // lives).
    let config = store.import_bytes(b"console=ttyS0".to_vec()).await?;
    store.set_tag_and_release("kernel-cmdline", config.lease)?;
    let scratch_blob = store.import_bytes(vec![1u8; 100_000]).await?;

    for r in store.resources(None)? {
        println!("resource {} {} {}: {} bytes, {}", r.kind, r.name, r.version, r.size, r.hash);
    }
    println!("tags: {:?}", store.tags()?.iter().map(|(name, _)| name).collect::<Vec<_>>());

    // Reads and exports check every 16 KiB group against the tree.
    assert_eq!(store.read_to_vec(&config.hash)?, b"console=ttyS0");
    let out = scratch.path().join("exported.img");
    let written = store.export(hash, &out, ExportOptions::default()).await?;
    println!("exported {written} bytes to {}", out.display());

    // Every blob at rest against its tree (repair=false: report only).
    let store2 = store.clone();
    let reports = tokio::task::spawn_blocking(move || store2.verify_all(false)).await??;
    println!("verified {} blobs, {} damaged", reports.len(), reports.iter().filter(|r| !r.damaged.is_empty()).count());

    // Garbage collection removes blobs nothing names or leases.
    drop(scratch_blob);
    let gc = store.gc()?;
    println!("gc removed {} blob(s)", gc.blobs_removed);
    Ok(())
}
