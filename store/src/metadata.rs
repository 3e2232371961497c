//! Opening a sled database: waiting out a lock a dropped database still
//! holds, turning sled's panics on damage into errors, and moving a
//! database too damaged to open aside. The store's metadata and the node's
//! own database both open this way.

use std::{
    fs,
    path::{Path, PathBuf},
};

use tracing::{error, warn};

use crate::{Error, Result};

/// Opens the sled database at `path`; one too damaged to open is moved
/// aside (to `<name>.damaged-<unix time>`, kept for inspection) and a new
/// one started. Returns where the damaged one went, if it was. A database
/// locked by another process is an error, never moved. The store's
/// metadata and the node's own database both open this way.
pub fn open_or_set_aside(path: &Path) -> Result<(sled::Db, Option<PathBuf>)> {
    match open_sled(path) {
        Err(Error::OpenMetadata { reason, .. }) if !reason.contains("another process") => {
            warn!(path = %path.display(), "cannot open the database: {reason}");
            let stamp =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let aside = path.with_file_name(format!("{name}.damaged-{stamp}"));
            fs::rename(path, &aside).map_err(Error::io("move aside", path))?;
            error!(path = %aside.display(), "a damaged database was moved aside; starting a new one");
            Ok((open_sled(path)?, Some(aside)))
        }
        other => other.map(|db| (db, None)),
    }
}

/// How long `open` waits for sled's lock on the metadata directory. sled's
/// flusher thread releases the lock of a dropped database up to one flush
/// interval later, so an immediate reopen in the same process can find it held.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn open_sled(path: &Path) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        let p = path.to_path_buf();
        // sled may panic on some kinds of damage; turn that into an error naming the path.
        let res = std::panic::catch_unwind(move || sled::Config::new().path(&p).open());
        match res {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(sled::Error::Io(e)))
                if e.to_string().contains("could not acquire lock") && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Ok(Err(e)) => {
                let reason = match &e {
                    sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                        format!("{e} (is another process using this store?)")
                    }
                    _ => e.to_string(),
                };
                return Err(Error::OpenMetadata { path: path.to_path_buf(), reason });
            }
            Err(_) => {
                return Err(Error::OpenMetadata { path: path.to_path_buf(), reason: "database is damaged".into() })
            }
        }
    }
}
