//! Serving: the bao encoding of requested chunk ranges, a reader over a
//! complete blob, and export to a path.
//!
//! A referenced file (reference-mode import) can change behind the store's
//! back, so every leaf served from one is re-hashed against the outboard
//! (`encode_ranges_validated`): a change is detected and reported, never
//! sent. Data the store owns was hashed when it was written (import) or
//! verified before it was written (receive), so it is sent as it is, like
//! every content-addressed store does; a receiver verifies every byte anyway,
//! so on-disk damage (bit rot) fails the receiver's check and is never
//! accepted. A partial blob serves exactly the part of a request it has
//! verified.

use std::{
    fs::{self, File},
    io::{self, Read, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use bao_tree::io::{outboard::PreOrderOutboard, EncodeError};
use tokio::io::AsyncWrite;

use crate::{
    bridge::write_pipe,
    entry::{DataLocation, EntryRecord, OutboardLocation},
    ranges::{self, ChunkRanges},
    tree, Error, Hash, Result, Store,
};

/// What a served response contained.
#[derive(Debug, Clone)]
pub struct ServeOutcome {
    /// The blob size sent in the header.
    pub size: u64,
    /// The chunk ranges encoded: the request, normalised (see
    /// [`ranges::normalize`]), intersected with what is held.
    pub served: ChunkRanges,
    /// Bytes written, header included.
    pub bytes_written: u64,
}

/// Random-access bytes of a blob or outboard: in memory or in a file.
pub(crate) enum Bytes {
    Memory(Vec<u8>),
    File(File),
}

impl positioned_io::ReadAt for Bytes {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Bytes::Memory(v) => {
                let start = (pos as usize).min(v.len());
                let n = buf.len().min(v.len() - start);
                buf[..n].copy_from_slice(&v[start..start + n]);
                Ok(n)
            }
            Bytes::File(f) => FileExt::read_at(f, buf, pos),
        }
    }
}

impl positioned_io::Size for Bytes {
    fn size(&self) -> io::Result<Option<u64>> {
        match self {
            Bytes::Memory(v) => Ok(Some(v.len() as u64)),
            Bytes::File(f) => Ok(Some(f.metadata()?.len())),
        }
    }
}

/// A blob opened for reading: its data, outboard and where they came from.
pub(crate) struct Opened {
    pub size: u64,
    pub held: ChunkRanges,
    pub data: Bytes,
    pub outboard: Bytes,
    /// For a referenced file: its path (reads are verified).
    pub external: Option<PathBuf>,
}

impl Store {
    pub(crate) fn open_blob(&self, hash: &Hash) -> Result<Opened> {
        let io = |op, p: PathBuf| Error::io(op, p);
        match self.entry(hash)? {
            None => Err(Error::NotFound(*hash)),
            Some(EntryRecord::Complete { size, data, outboard, .. }) => {
                let mut external = None;
                let data = match data {
                    DataLocation::Inline(v) => Bytes::Memory(v),
                    DataLocation::Owned => {
                        let p = self.blob_path(hash, "data");
                        Bytes::File(File::open(&p).map_err(io("open", p))?)
                    }
                    DataLocation::External { path, len, mtime_ns } => {
                        let p = PathBuf::from(path);
                        let changed = |reason: String| Error::ReferenceChanged { hash: *hash, path: p.clone(), reason };
                        let f = File::open(&p).map_err(|e| changed(format!("cannot open: {e}")))?;
                        let m = f.metadata().map_err(|e| changed(format!("cannot stat: {e}")))?;
                        if m.len() != len {
                            return Err(changed(format!("length is {} bytes, was {len}", m.len())));
                        }
                        let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                        if mtime.map(|d| d.as_nanos() as i128) != Some(mtime_ns) {
                            return Err(changed("modification time changed".into()));
                        }
                        external = Some(p);
                        Bytes::File(f)
                    }
                };
                let outboard = match outboard {
                    OutboardLocation::None => Bytes::Memory(Vec::new()),
                    OutboardLocation::Inline(v) => Bytes::Memory(v),
                    OutboardLocation::Owned => {
                        let p = self.blob_path(hash, "obao4");
                        Bytes::File(File::open(&p).map_err(io("open", p))?)
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
                        (d, o, crate::partial::PartialBlob::load_checkpoint(self, hash, size).unwrap_or_default())
                    }
                };
                Ok(Opened { size, held, data: Bytes::File(data), outboard: Bytes::File(outboard), external: None })
            }
        }
    }

    /// Writes a bao response for `hash`: the size (u64 LE), then the pre-order
    /// encoding of `requested` ∩ what is held, each leaf re-verified as it is
    /// sent. Returns what was served. Errors before the header is written if
    /// the blob is absent.
    pub fn write_encoded(&self, hash: &Hash, requested: &ChunkRanges, mut writer: impl Write) -> Result<ServeOutcome> {
        let opened = self.open_blob(hash)?;
        let served = ranges::normalize(requested, opened.size) & &opened.held;
        writer.write_all(&opened.size.to_le_bytes()).map_err(Error::Stream)?;
        let mut counting = CountingWrite { inner: writer, bytes: 8 };
        let outboard =
            PreOrderOutboard { root: (*hash).into(), tree: tree::bao_tree(opened.size), data: opened.outboard };
        let encoded = if opened.external.is_some() {
            bao_tree::io::sync::encode_ranges_validated(opened.data, outboard, &served, &mut counting)
        } else {
            bao_tree::io::sync::encode_ranges(opened.data, outboard, &served, &mut counting)
        };
        encoded.map_err(|e| match (e, &opened.external) {
            (EncodeError::Io(io), _) => Error::Stream(io),
            (e, Some(p)) => Error::ReferenceChanged { hash: *hash, path: p.clone(), reason: e.to_string() },
            (e, None) => Error::Verification { hash: *hash, reason: format!("local data is damaged: {e}") },
        })?;
        counting.flush().map_err(Error::Stream)?;
        Ok(ServeOutcome { size: opened.size, served, bytes_written: counting.bytes })
    }

    /// Async form of [`Store::write_encoded`]: encodes on the blocking pool and
    /// writes to `writer`, which is handed back whatever the outcome (so the
    /// caller can still finish or reset it).
    pub async fn write_response<W>(&self, hash: Hash, requested: ChunkRanges, writer: W) -> (Result<ServeOutcome>, W)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let store = self.clone();
        let (mut pipe, pump) = write_pipe(writer);
        let pump = tokio::spawn(pump);
        let task = tokio::task::spawn_blocking(move || {
            let res = store.write_encoded(&hash, &requested, &mut pipe);
            res.and_then(|o| pipe.flush().map_err(Error::Stream).map(|_| o))
            // The pipe drops here, ending the pump.
        });
        let encoded = match task.await {
            Ok(done) => done,
            // A blocking task is cancelled only at runtime shutdown; a panic
            // in the encoder is a bug and propagates.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let (writer, written) = match pump.await {
            Ok(done) => done,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let result = match (encoded, written) {
            (Ok(outcome), Ok(())) => Ok(outcome),
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(Error::Stream(e)),
        };
        (result, writer)
    }

    /// A reader over the bytes of a complete blob. Reads of a referenced file
    /// are verified chunk group by chunk group; a change is an `InvalidData` error.
    pub fn reader(&self, hash: &Hash) -> Result<BlobReader> {
        let opened = self.open_blob(hash)?;
        if opened.held != ranges::all(opened.size) {
            return Err(Error::Incomplete(*hash));
        }
        Ok(BlobReader { hash: *hash, opened, pos: 0, group: Vec::new(), group_index: u64::MAX })
    }

    /// The pre-order outboard bytes of a blob (empty for a single chunk group).
    pub fn outboard_bytes(&self, hash: &Hash) -> Result<Vec<u8>> {
        use positioned_io::ReadAt;
        let opened = self.open_blob(hash)?;
        let mut buf = vec![0u8; tree::outboard_size(opened.size) as usize];
        opened.outboard.read_exact_at(0, &mut buf).map_err(Error::Stream)?;
        Ok(buf)
    }

    /// Reads a whole complete blob into memory (for small blobs and tests).
    pub fn read_to_vec(&self, hash: &Hash) -> Result<Vec<u8>> {
        let mut r = self.reader(hash)?;
        let mut out = Vec::with_capacity(r.size() as usize);
        r.read_to_end(&mut out).map_err(Error::Stream)?;
        Ok(out)
    }

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

/// An error from a verified read, carried inside `io::Error`.
#[derive(Debug)]
struct ReadError(String);
impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ReadError {}

/// A sequential reader over a complete blob (see [`Store::reader`]).
pub struct BlobReader {
    hash: Hash,
    opened: Opened,
    pos: u64,
    group: Vec<u8>,
    group_index: u64,
}

impl BlobReader {
    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.opened.size
    }

    /// Loads and verifies chunk group `g` of a referenced file.
    fn load_group(&mut self, g: u64) -> io::Result<()> {
        use positioned_io::ReadAt;
        let size = self.opened.size;
        let start = g * tree::BLOCK_BYTES;
        let len = (size - start).min(tree::BLOCK_BYTES) as usize;
        self.group.resize(len, 0);
        self.opened.data.read_exact_at(start, &mut self.group)?;
        let n = tree::blocks(size);
        let expected = match tree::leaf_parent(n, g) {
            None => *self.hash.as_bytes(),
            Some((index, left)) => {
                let mut pair = [0u8; 64];
                self.opened.outboard.read_exact_at(index * tree::PARENT_BYTES, &mut pair)?;
                let half = if left { &pair[..32] } else { &pair[32..] };
                half.try_into().expect("32 bytes")
            }
        };
        if tree::leaf_hash(g, &self.group, n == 1) != expected {
            let path = self.opened.external.as_deref().unwrap_or(Path::new("?")).display();
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                ReadError(format!("{path} changed at byte {start}: chunk group does not match blob {}", self.hash)),
            ));
        }
        self.group_index = g;
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use positioned_io::ReadAt;
        let size = self.opened.size;
        if self.pos >= size || buf.is_empty() {
            return Ok(0);
        }
        if self.opened.external.is_none() {
            let n = (buf.len() as u64).min(size - self.pos) as usize;
            let n = self.opened.data.read_at(self.pos, &mut buf[..n])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob file is shorter than its size"));
            }
            self.pos += n as u64;
            return Ok(n);
        }
        let g = self.pos / tree::BLOCK_BYTES;
        if g != self.group_index {
            self.load_group(g)?;
        }
        let off = (self.pos - g * tree::BLOCK_BYTES) as usize;
        let n = buf.len().min(self.group.len() - off);
        buf[..n].copy_from_slice(&self.group[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

struct CountingWrite<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWrite<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
