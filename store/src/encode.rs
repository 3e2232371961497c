//! Serving: the bao encoding (size header, then pre-order parents and
//! leaves) of requested chunk ranges of a blob, rounded to 16 KiB groups.
//!
//! A referenced file (reference-mode import) can change behind the store's
//! back, so every leaf served from one is re-hashed against the outboard
//! (`encode_ranges_validated`): a change is detected and reported, never
//! sent. Data the store owns was hashed when it was written (import) or
//! verified before it was written (receive), so it is sent as it is; a
//! receiver verifies every byte, so on-disk damage fails the receiver's
//! check and is never accepted. A partial blob serves exactly the part of
//! a request it has verified.
//!
//! Data the store owns is served without copying: the encoder hands out
//! slices of read-only memory maps of the data file (windows of
//! [`MAP_WINDOW`] bytes, each unmapped when the last slice of it is dropped,
//! so what stays mapped is what the transport still holds), and QUIC copies
//! them straight into packets. Windows are populated when mapped, so a cold
//! file is read from disk on the encoding thread, not in the async task that
//! sends.

use std::{
    fs::File,
    io::{self, Write},
};

use bao_tree::{
    io::{outboard::PreOrderOutboard, sync::truncate_ranges, EncodeError},
    iter::{BaoChunk, ResponseIterRef},
};
use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    sync::mpsc,
    task::JoinHandle,
};

use crate::{
    bridge::PIPE_BATCH,
    opened::{Opened, Stored},
    ranges::{self, ChunkRanges},
    tree, Error, Hash, Result, Store,
};

/// What a served response contained.
#[derive(Debug, Clone)]
pub struct ServeOutcome {
    /// The blob size sent in the header.
    pub size: u64,
    /// The chunk ranges encoded: the request's effective ranges (see
    /// [`ranges::effective`]: normalised, rounded to 16 KiB groups)
    /// intersected with what is held.
    pub served: ChunkRanges,
    /// Bytes written, header included.
    pub bytes_written: u64,
}

impl Store {
    /// Encodes the response for `hash`: the size (u64 LE), then the
    /// pre-order encoding of `requested` (rounded to 16 KiB groups) ∩ what is held, handed to `send` in
    /// batches of about 256 KiB. Data the store owns goes out as
    /// zero-copy slices of its file (see the module docs); a referenced file
    /// is re-verified leaf by leaf as it is read. Returns what was served.
    /// Errors before anything is sent if the blob is absent.
    ///
    /// Blocking (reads from disk): from async code use [`Store::encode_response`].
    pub fn encode_batches(
        &self,
        hash: &Hash,
        requested: &ChunkRanges,
        mut send: impl FnMut(Vec<Bytes>) -> io::Result<()>,
    ) -> Result<ServeOutcome> {
        let opened = self.open_blob(hash)?;
        let served = ranges::effective(requested, opened.size) & &opened.held;
        let mapped = match (&opened.data, &opened.external) {
            (Stored::File(f), None) if opened.size > 0 => Some(f),
            _ => None,
        };
        let bytes = match mapped {
            Some(file) => encode_mapped(hash, &opened, file, &served, &mut send)?,
            None => {
                let mut w = BatchWrite { batch: Vec::new(), buf: BytesMut::new(), bytes: 0, send: &mut send };
                encode_copied(hash, opened.size, &opened, &served, &mut w).map_err(|e| self.reference_changed(e))?;
                w.flush().map_err(Error::Stream)?;
                w.bytes
            }
        };
        Ok(ServeOutcome { size: opened.size, served, bytes_written: bytes })
    }

    /// [`Store::encode_batches`] into a writer.
    ///
    /// Blocking (reads and verifies from disk): from async code use [`Store::write_response`] or [`Store::encode_response`].
    pub fn write_encoded(&self, hash: &Hash, requested: &ChunkRanges, mut writer: impl Write) -> Result<ServeOutcome> {
        let out = self.encode_batches(hash, requested, |batch| batch.iter().try_for_each(|b| writer.write_all(b)))?;
        writer.flush().map_err(Error::Stream)?;
        Ok(out)
    }

    /// Starts encoding the response for `hash` on the blocking pool (see
    /// [`Store::encode_batches`]); take its batches from the returned
    /// [`EncodedResponse`]. At most two batches wait ahead of the reader.
    pub fn encode_response(&self, hash: Hash, requested: ChunkRanges) -> EncodedResponse {
        let store = self.clone();
        let (tx, rx) = mpsc::channel(2);
        let task = tokio::task::spawn_blocking(move || {
            store.encode_batches(&hash, &requested, |batch| {
                tx.blocking_send(batch)
                    .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the response's reader went away"))
            })
        });
        EncodedResponse { rx, task }
    }

    /// Writes the response for `hash` to `writer` (see
    /// [`Store::encode_response`]). The writer is handed back whatever the
    /// outcome, so the caller can still finish or reset it.
    pub async fn write_response<W>(
        &self,
        hash: Hash,
        requested: ChunkRanges,
        mut writer: W,
    ) -> (Result<ServeOutcome>, W)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut response = self.encode_response(hash, requested);
        let mut written = Ok(());
        'out: while let Some(batch) = response.next_batch().await {
            for b in batch {
                if let Err(e) = writer.write_all(&b).await {
                    written = Err(e);
                    break 'out;
                }
            }
        }
        if written.is_ok() {
            written = writer.flush().await;
        }
        let encoded = response.finish().await;
        let result = match (encoded, written) {
            (Ok(outcome), Ok(())) => Ok(outcome),
            (Err(e), Ok(())) => Err(e),
            (_, Err(e)) => Err(Error::Stream(e)),
        };
        (result, writer)
    }
}

/// Bytes of a data file mapped at once when serving; whole chunk groups, so
/// a leaf never spans two windows.
pub const MAP_WINDOW: u64 = 2 * 1024 * 1024;

/// A response being encoded on the blocking pool (see [`Store::encode_response`]).
pub struct EncodedResponse {
    rx: mpsc::Receiver<Vec<Bytes>>,
    task: JoinHandle<Result<ServeOutcome>>,
}

impl EncodedResponse {
    /// The next batch of chunks, in order; `None` when the encoding ended
    /// (see [`EncodedResponse::finish`] for how).
    pub async fn next_batch(&mut self) -> Option<Vec<Bytes>> {
        self.rx.recv().await
    }

    /// Stops taking batches and returns how the encoding ended: what was
    /// served, or the error that stopped it (`Stream` if the reader stopped first).
    pub async fn finish(self) -> Result<ServeOutcome> {
        drop(self.rx);
        match self.task.await {
            Ok(done) => done,
            // A blocking task is cancelled only at runtime shutdown; a panic
            // in the encoder is a bug and propagates.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// A `Write` that gathers bytes into batches of chunks for a sender.
struct BatchWrite<'a, F> {
    batch: Vec<Bytes>,
    buf: BytesMut,
    bytes: u64,
    send: &'a mut F,
}

impl<F: FnMut(Vec<Bytes>) -> io::Result<()>> Write for BatchWrite<'_, F> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() {
            self.buf.reserve(PIPE_BATCH);
        }
        self.buf.extend_from_slice(b);
        self.bytes += b.len() as u64;
        if self.buf.len() >= PIPE_BATCH {
            self.flush()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.batch.push(self.buf.split().freeze());
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        (self.send)(std::mem::take(&mut self.batch))
    }
}

/// Encodes through bao-tree's encoder, copying: for inline and partial
/// blobs, and with re-verification for referenced files.
fn encode_copied(hash: &Hash, size: u64, opened: &Opened, served: &ChunkRanges, w: &mut impl Write) -> Result<()> {
    w.write_all(&size.to_le_bytes()).map_err(Error::Stream)?;
    let outboard = PreOrderOutboard { root: (*hash).into(), tree: tree::bao_tree(size), data: &opened.outboard };
    let encoded = if opened.external.is_some() {
        bao_tree::io::sync::encode_ranges_validated(&opened.data, outboard, served, w)
    } else {
        bao_tree::io::sync::encode_ranges(&opened.data, outboard, served, w)
    };
    encoded.map_err(|e| match (e, &opened.external) {
        (EncodeError::Io(io), _) => Error::Stream(io),
        (e, Some(p)) => Error::ReferenceChanged { hash: *hash, path: p.clone(), reason: e.to_string() },
        (e, None) => Error::Verification { hash: *hash, reason: format!("local data is damaged: {e}") },
    })
}

/// A read-only map of part of a data file, the owner of the chunks sliced
/// from it.
struct MapWindow(memmap2::Mmap);

impl AsRef<[u8]> for MapWindow {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Encodes from memory maps of the store's own files, without copying data.
fn encode_mapped(
    hash: &Hash,
    opened: &Opened,
    file: &File,
    served: &ChunkRanges,
    send: &mut impl FnMut(Vec<Bytes>) -> io::Result<()>,
) -> Result<u64> {
    let size = opened.size;
    let damaged =
        |reason: String| Error::Verification { hash: *hash, reason: format!("local data is damaged: {reason}") };
    let len = file.metadata().map_err(Error::Stream)?.len();
    if len < size {
        return Err(damaged(format!("the data file has {len} of {size} bytes")));
    }
    let tree = tree::bao_tree(size);
    let ob_len = tree::outboard_size(size);
    let outboard_map;
    let outboard: &[u8] = match &opened.outboard {
        Stored::Memory(v) => v,
        Stored::File(f) => {
            let len = f.metadata().map_err(Error::Stream)?.len();
            if len < ob_len {
                return Err(damaged(format!("the outboard has {len} of {ob_len} bytes")));
            }
            // SAFETY: a read-only map of a file of the store's own; the store
            // never truncates or rewrites a blob's files while it exists
            // (removal unlinks them, which leaves maps valid).
            outboard_map = unsafe { memmap2::MmapOptions::new().len(ob_len as usize).map(f) }.map_err(Error::Stream)?;
            &outboard_map
        }
    };
    if (outboard.len() as u64) < ob_len {
        return Err(damaged(format!("the outboard has {} of {ob_len} bytes", outboard.len())));
    }
    let mut batch = Vec::with_capacity(64);
    let mut batch_bytes = 0usize;
    let mut total = 0u64;
    let mut small = BytesMut::with_capacity(4096);
    small.extend_from_slice(&size.to_le_bytes());
    let mut window: Option<(u64, Bytes)> = None;
    // The last chunk of `batch`, when it is a run of leaves: the map window's
    // start and the run's offsets in it.
    let mut run: Option<(u64, usize, usize)> = None;
    for chunk in ResponseIterRef::new(tree, truncate_ranges(served, size)) {
        match chunk {
            BaoChunk::Parent { node, .. } => {
                let Some(i) = tree.pre_order_offset(node) else {
                    return Err(damaged(format!("no outboard record for {node:?}")));
                };
                let at = (i * tree::PARENT_BYTES) as usize;
                small.extend_from_slice(&outboard[at..at + tree::PARENT_BYTES as usize]);
            }
            BaoChunk::Leaf { start_chunk, size: len, .. } => {
                let offset = start_chunk.to_bytes();
                let start = offset - offset % MAP_WINDOW;
                let map = match &window {
                    Some((s, m)) if *s == start => m,
                    _ => {
                        let wlen = (size - start).min(MAP_WINDOW) as usize;
                        // SAFETY: as for the outboard map above. Populated at
                        // once: pages are read in here, on the encoding thread,
                        // in one call instead of a fault per 64 KiB.
                        let m = unsafe { memmap2::MmapOptions::new().offset(start).len(wlen).populate().map(file) }
                            .map_err(Error::Stream)?;
                        &window.insert((start, Bytes::from_owner(MapWindow(m)))).1
                    }
                };
                let at = (offset - start) as usize;
                if !small.is_empty() {
                    batch_bytes += small.len();
                    batch.push(small.split().freeze());
                    if small.capacity() < 1024 {
                        small.reserve(4096);
                    }
                    run = None;
                }
                batch_bytes += len;
                // Leaves adjacent in the file (no parent between them) go out
                // as one slice: QUIC's send buffer scans its chunks linearly
                // for every packet, so fewer chunks cost less CPU.
                match run {
                    Some((s, from, to)) if s == start && to == at => {
                        *batch.last_mut().expect("a run is the last chunk") = map.slice(from..at + len);
                        run = Some((start, from, at + len));
                    }
                    _ => {
                        batch.push(map.slice(at..at + len));
                        run = Some((start, at, at + len));
                    }
                }
                if batch_bytes >= PIPE_BATCH {
                    total += batch_bytes as u64;
                    batch_bytes = 0;
                    run = None;
                    send(std::mem::replace(&mut batch, Vec::with_capacity(64))).map_err(Error::Stream)?;
                }
            }
        }
    }
    if !small.is_empty() {
        batch_bytes += small.len();
        batch.push(small.split().freeze());
    }
    total += batch_bytes as u64;
    if !batch.is_empty() {
        send(batch).map_err(Error::Stream)?;
    }
    Ok(total)
}
