//! Reading a blob's bytes, verified: [`BlobReader`] (blocking `Read` +
//! `Seek` + `read_at`) and [`AsyncBlobReader`] (tokio `AsyncRead` +
//! `AsyncSeek`, its disk reads on the blocking pool), over complete blobs
//! and over the verified ranges of partial ones; the whole blob in memory;
//! its outboard.
//!
//! Every 16 KiB group is checked against the blob's tree as it is read
//! (bytes at rest can rot, and a referenced file can change), so a reader
//! never returns a byte the hash does not vouch for. Reading a byte a
//! partial blob does not hold yet is an error of kind `WouldBlock` (see
//! [`is_not_held`]) and leaves the position where it was: try again once
//! more has arrived, or seek elsewhere.

use std::{
    future::Future,
    io::{self, Read, Seek, SeekFrom},
    pin::Pin,
    task::{ready, Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncSeek, ReadBuf},
    task::JoinHandle,
};

use crate::{
    opened::Opened,
    ranges::{self, ChunkNum, ChunkRanges},
    tree, Error, Hash, Result, Store,
};

impl Store {
    /// A reader over the bytes of a blob, complete or partial, verified
    /// group by group; see [`BlobReader`].
    ///
    /// Blocking (it opens files); the reads are blocking too. In async code
    /// use [`Store::async_reader`].
    pub fn reader(&self, hash: &Hash) -> Result<BlobReader> {
        let opened = self.open_blob(hash)?;
        Ok(BlobReader { store: self.clone(), hash: *hash, opened, pos: 0, group: Vec::new(), group_index: None })
    }

    /// An async reader over a blob, complete or partial (see
    /// [`AsyncBlobReader`]).
    ///
    /// ```
    /// use tokio::io::{AsyncReadExt, AsyncSeekExt};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = blixard_store::Store::temporary()?;
    /// let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    /// let imported = store.import_bytes(data.clone()).await?;
    /// let hash = imported.hash;
    /// store.set_tag_and_release("example", imported.lease)?;
    ///
    /// let mut reader = store.async_reader(&hash).await?;
    /// reader.seek(std::io::SeekFrom::Start(70_000)).await?;
    /// let mut buf = [0u8; 100];
    /// reader.read_exact(&mut buf).await?;
    /// assert_eq!(&buf[..], &data[70_000..70_100]);
    /// # Ok(()) }
    /// ```
    pub async fn async_reader(&self, hash: &Hash) -> Result<AsyncBlobReader> {
        let (store, hash) = (self.clone(), *hash);
        let reader = tokio::task::spawn_blocking(move || store.reader(&hash)).await??;
        Ok(AsyncBlobReader { size: reader.size(), pos: reader.pos, state: State::Idle(Box::new(reader)) })
    }

    /// The pre-order outboard bytes of a blob (empty for a single chunk
    /// group). Blocking.
    pub fn outboard_bytes(&self, hash: &Hash) -> Result<Vec<u8>> {
        use positioned_io::ReadAt;
        let opened = self.open_blob(hash)?;
        let mut buf = vec![0u8; tree::outboard_size(opened.size) as usize];
        opened.outboard.read_exact_at(0, &mut buf).map_err(Error::Stream)?;
        Ok(buf)
    }

    /// Reads a whole complete blob into memory (for small blobs and tests).
    /// Blocking.
    pub fn read_to_vec(&self, hash: &Hash) -> Result<Vec<u8>> {
        let mut r = self.reader(hash)?;
        if r.opened.held != ranges::all(r.size()) {
            return Err(Error::Incomplete(*hash));
        }
        let mut out = Vec::with_capacity(r.size() as usize);
        r.read_to_end(&mut out).map_err(Error::Stream)?;
        Ok(out)
    }
}

/// True if `e`, from a blob reader, means the bytes asked for are not held
/// yet (a partial blob); other errors mean damage or I/O failure.
pub fn is_not_held(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock && e.get_ref().is_some_and(|inner| inner.is::<ReadError>())
}

/// An error from a verified read, carried inside `io::Error`.
#[derive(Debug)]
pub(crate) struct ReadError(pub(crate) String);
impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ReadError {}

/// A blocking reader over a blob (see [`Store::reader`]): `Read`, `Seek`
/// and [`read_at`](Self::read_at), each group verified before any of its
/// bytes is returned. A group that does not match its tree is an
/// `InvalidData` error naming the blob and offset; a group a partial blob
/// does not hold is a `WouldBlock` error ([`is_not_held`]).
pub struct BlobReader {
    store: Store,
    hash: Hash,
    opened: Opened,
    pos: u64,
    group: Vec<u8>,
    group_index: Option<u64>,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader").field("hash", &self.hash).field("pos", &self.pos).finish()
    }
}

impl BlobReader {
    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.opened.size
    }

    /// The chunk ranges held when the reader last looked (all of them for
    /// a complete blob; a partial blob's grow as it downloads, and the
    /// reader looks again when asked for bytes it did not hold).
    pub fn held(&self) -> &ChunkRanges {
        &self.opened.held
    }

    /// Reads up to `buf.len()` bytes at `offset`, verified, without moving
    /// the position; 0 at or past the end. Stops at the end of the held
    /// range it starts in.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.opened.size;
        let mut done = 0;
        while done < buf.len() && offset + (done as u64) < size {
            let at = offset + done as u64;
            let g = at / tree::BLOCK_BYTES;
            if let Err(e) = self.load_group(g) {
                if done > 0 && is_not_held(&e) {
                    break;
                }
                return Err(e);
            }
            let off = (at - g * tree::BLOCK_BYTES) as usize;
            let n = (buf.len() - done).min(self.group.len() - off);
            buf[done..done + n].copy_from_slice(&self.group[off..off + n]);
            done += n;
        }
        Ok(done)
    }

    /// True if group `g` is held, looking at the store again if the
    /// snapshot says no (a partial blob may have grown).
    fn holds(&mut self, g: u64) -> io::Result<bool> {
        const PER_GROUP: u64 = tree::BLOCK_BYTES / ranges::CHUNK_BYTES;
        let group_chunks =
            ChunkNum(g * PER_GROUP)..ChunkNum(((g + 1) * PER_GROUP).min(ranges::chunk_count(self.opened.size)));
        let wanted = ChunkRanges::from(group_chunks);
        if self.opened.held.is_superset(&wanted) {
            return Ok(true);
        }
        self.opened = self.store.open_blob(&self.hash).map_err(io::Error::other)?;
        self.group_index = None;
        Ok(self.opened.held.is_superset(&wanted))
    }

    /// Loads and verifies chunk group `g` unless it is the one loaded.
    fn load_group(&mut self, g: u64) -> io::Result<()> {
        use positioned_io::ReadAt;
        if self.group_index == Some(g) {
            return Ok(());
        }
        let size = self.opened.size;
        let start = g * tree::BLOCK_BYTES;
        if !self.holds(g)? {
            let what = format!("bytes {start}.. of blob {} are not held yet", self.hash);
            return Err(io::Error::new(io::ErrorKind::WouldBlock, ReadError(what)));
        }
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
            let what = match &self.opened.external {
                Some(path) => {
                    format!("{} changed at byte {start}: chunk group does not match blob {}", path.display(), self.hash)
                }
                None => format!("blob {} is damaged at rest at bytes {start}..{}", self.hash, start + len as u64),
            };
            return Err(io::Error::new(io::ErrorKind::InvalidData, ReadError(what)));
        }
        self.group_index = Some(g);
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.read_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for BlobReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = seek_target(self.pos, self.opened.size, to)?;
        Ok(self.pos)
    }
}

/// Where a seek lands; before the start is an error, past the end is
/// allowed (reads there return 0), as for files.
fn seek_target(pos: u64, size: u64, to: SeekFrom) -> io::Result<u64> {
    let target = match to {
        SeekFrom::Start(n) => Some(n),
        SeekFrom::End(d) => size.checked_add_signed(d),
        SeekFrom::Current(d) => pos.checked_add_signed(d),
    };
    target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the blob"))
}

/// An async reader over a blob (see [`Store::async_reader`]): tokio
/// `AsyncRead` and `AsyncSeek`, with the same checks as [`BlobReader`];
/// each read of up to 1 MiB runs on the blocking pool, so the runtime's
/// workers never wait on the disk.
pub struct AsyncBlobReader {
    size: u64,
    pos: u64,
    state: State,
}

/// Bytes read per trip to the blocking pool.
const ASYNC_READ_BYTES: usize = 1024 * 1024;

enum State {
    Idle(Box<BlobReader>),
    Reading(JoinHandle<(Box<BlobReader>, io::Result<Vec<u8>>)>),
    /// Bytes read ahead of the caller's buffer, from `at`.
    Buffered(Box<BlobReader>, Vec<u8>, usize),
    Gone,
}

impl AsyncBlobReader {
    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl AsyncRead for AsyncBlobReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            match std::mem::replace(&mut self.state, State::Gone) {
                State::Buffered(reader, data, at) => {
                    let n = buf.remaining().min(data.len() - at);
                    buf.put_slice(&data[at..at + n]);
                    self.pos += n as u64;
                    self.state =
                        if at + n < data.len() { State::Buffered(reader, data, at + n) } else { State::Idle(reader) };
                    return Poll::Ready(Ok(()));
                }
                State::Idle(mut reader) => {
                    if buf.remaining() == 0 || self.pos >= self.size {
                        self.state = State::Idle(reader);
                        return Poll::Ready(Ok(()));
                    }
                    let (pos, want) = (self.pos, buf.remaining().min(ASYNC_READ_BYTES));
                    self.state = State::Reading(tokio::task::spawn_blocking(move || {
                        let mut data = vec![0u8; want];
                        let read = reader.read_at(pos, &mut data).map(|n| {
                            data.truncate(n);
                            data
                        });
                        (reader, read)
                    }));
                }
                State::Reading(mut task) => match Pin::new(&mut task).poll(cx) {
                    Poll::Pending => {
                        self.state = State::Reading(task);
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                    Poll::Ready(Ok((reader, Err(e)))) => {
                        self.state = State::Idle(reader);
                        return Poll::Ready(Err(e));
                    }
                    Poll::Ready(Ok((reader, Ok(data)))) => {
                        if data.is_empty() {
                            self.state = State::Idle(reader);
                            return Poll::Ready(Ok(()));
                        }
                        self.state = State::Buffered(reader, data, 0);
                    }
                },
                State::Gone => return Poll::Ready(Err(io::Error::other("the reader failed earlier"))),
            }
        }
    }
}

impl AsyncSeek for AsyncBlobReader {
    fn start_seek(mut self: Pin<&mut Self>, to: SeekFrom) -> io::Result<()> {
        let target = seek_target(self.pos, self.size, to)?;
        // A read in flight finishes first (poll_complete); what it or an
        // earlier read buffered is dropped.
        if let State::Buffered(..) = self.state {
            if let State::Buffered(reader, ..) = std::mem::replace(&mut self.state, State::Gone) {
                self.state = State::Idle(reader);
            }
        }
        self.pos = target;
        Ok(())
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        if let State::Reading(task) = &mut self.state {
            let (reader, _) = ready!(Pin::new(task).poll(cx)).map_err(io::Error::other)?;
            self.state = State::Idle(reader);
        }
        Poll::Ready(Ok(self.pos))
    }
}
