//! Opening a blob for reading: where its data and outboard are (inline,
//! an owned file, a referenced file checked for change, or a partial blob's
//! files with the ranges it has verified).

use std::{fs::File, io, os::unix::fs::FileExt, path::PathBuf};

use crate::{
    entry::{DataLocation, EntryRecord, OutboardLocation},
    ranges::{self, ChunkRanges},
    Error, Hash, Result, Store,
};

/// Random-access bytes of a blob or outboard: in memory or in a file.
pub(crate) enum Stored {
    Memory(Vec<u8>),
    File(File),
}

impl positioned_io::ReadAt for Stored {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stored::Memory(v) => {
                let start = (pos as usize).min(v.len());
                let n = buf.len().min(v.len() - start);
                buf[..n].copy_from_slice(&v[start..start + n]);
                Ok(n)
            }
            Stored::File(f) => FileExt::read_at(f, buf, pos),
        }
    }
}

impl positioned_io::Size for Stored {
    fn size(&self) -> io::Result<Option<u64>> {
        match self {
            Stored::Memory(v) => Ok(Some(v.len() as u64)),
            Stored::File(f) => Ok(Some(f.metadata()?.len())),
        }
    }
}

/// A blob opened for reading: its data, outboard and where they came from.
pub(crate) struct Opened {
    pub size: u64,
    pub held: ChunkRanges,
    pub data: Stored,
    pub outboard: Stored,
    /// For a referenced file: its path (reads are verified).
    pub external: Option<PathBuf>,
}

/// Checks a referenced file's length and modification time against what
/// the import recorded; the reason if either changed.
pub(crate) fn reference_unchanged(m: &std::fs::Metadata, len: u64, mtime_ns: i128) -> std::result::Result<(), String> {
    if m.len() != len {
        return Err(format!("length is {} bytes, was {len}", m.len()));
    }
    let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    if mtime.map(|d| d.as_nanos() as i128) != Some(mtime_ns) {
        return Err("modification time changed".into());
    }
    Ok(())
}

impl Store {
    /// Opens `hash` for reading. A referenced file whose length or
    /// modification time changed makes the blob missing again
    /// ([`Store::reference_changed`]) and is an error.
    pub(crate) fn open_blob(&self, hash: &Hash) -> Result<Opened> {
        self.open_blob_unchecked(hash).map_err(|e| self.reference_changed(e))
    }

    fn open_blob_unchecked(&self, hash: &Hash) -> Result<Opened> {
        let io = |op, p: PathBuf| Error::io(op, p);
        match self.entry(hash)? {
            None => Err(Error::NotFound(*hash)),
            Some(EntryRecord::Complete { size, data, outboard, .. }) => {
                let mut external = None;
                let data = match data {
                    DataLocation::Inline(v) => Stored::Memory(v),
                    DataLocation::Owned => {
                        let p = self.blob_path(hash, "data");
                        Stored::File(File::open(&p).map_err(io("open", p))?)
                    }
                    DataLocation::External { path, len, mtime_ns } => {
                        let p = PathBuf::from(path);
                        let changed = |reason: String| Error::ReferenceChanged { hash: *hash, path: p.clone(), reason };
                        let f = File::open(&p).map_err(|e| changed(format!("cannot open: {e}")))?;
                        let m = f.metadata().map_err(|e| changed(format!("cannot stat: {e}")))?;
                        reference_unchanged(&m, len, mtime_ns).map_err(changed)?;
                        external = Some(p);
                        Stored::File(f)
                    }
                };
                let outboard = match outboard {
                    OutboardLocation::None => Stored::Memory(Vec::new()),
                    OutboardLocation::Inline(v) => Stored::Memory(v),
                    OutboardLocation::Owned => {
                        let p = self.blob_path(hash, "obao4");
                        Stored::File(File::open(&p).map_err(io("open", p))?)
                    }
                };
                Ok(Opened { size, held: ranges::all(size), data, outboard, external })
            }
            Some(EntryRecord::Partial { size }) => {
                let (data, outboard, held) = match self.live_partial(hash) {
                    Some(p) => {
                        let d = p.data_file().try_clone().map_err(io("open", self.partial_path(hash, "data")))?;
                        let o = p.outboard_file().try_clone().map_err(io("open", self.partial_path(hash, "obao4")))?;
                        (d, o, p.ranges())
                    }
                    None => {
                        let (pd, po) = (self.partial_path(hash, "data"), self.partial_path(hash, "obao4"));
                        let d = File::open(&pd).map_err(io("open", pd))?;
                        let o = File::open(&po).map_err(io("open", po))?;
                        (d, o, crate::checkpoint::load_checkpoint(self, hash, size).unwrap_or_default())
                    }
                };
                Ok(Opened { size, held, data: Stored::File(data), outboard: Stored::File(outboard), external: None })
            }
        }
    }
}

/// Reads into `buf` at `at` until it is full or the end; how much was read.
pub(crate) fn read_up_to(stored: &Stored, at: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = positioned_io::ReadAt::read_at(stored, at + filled as u64, &mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}
