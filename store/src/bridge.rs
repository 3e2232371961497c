//! Bridges between tokio's async streams and bao-tree's synchronous encoder
//! and decoder.
//!
//! Hashing is CPU work, so encoding and decoding run on tokio's blocking
//! pool; these adapters let that blocking code pull from an `AsyncRead` or
//! push to an `AsyncWrite` owned by the async side.
//!
//! [`chunk_pipe`] is the fast path: an async task moves zero-copy chunks in
//! batches of up to [`PIPE_BATCH`] bytes over a bounded channel, so the
//! blocking thread wakes once per batch rather than once per network packet.
//! (Serving goes the other way with [`crate::Store::encode_response`].)
//! [`BlockingRead`] and [`BlockingWrite`] drive the stream from the blocking
//! thread directly; they suit small or occasional I/O.

use std::{
    collections::VecDeque,
    io::{self, Read, Write},
};

use bytes::Bytes;

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    runtime::Handle,
    sync::mpsc,
};

/// Bytes per batch in a pipe.
pub const PIPE_BATCH: usize = 256 * 1024;
/// Batches queued in a pipe; with the one being filled and the one being
/// drained, a pipe holds at most 4 x [`PIPE_BATCH`] bytes.
const PIPE_QUEUED: usize = 16;

/// The blocking end of a [`chunk_pipe`]: a `Read` over the chunks an async
/// task sends with the paired [`ChunkSender`].
pub struct PipeReader {
    rx: mpsc::Receiver<io::Result<Vec<Bytes>>>,
    chunks: VecDeque<Bytes>,
    failed: Option<(io::ErrorKind, String)>,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, msg)) = &self.failed {
            return Err(io::Error::new(*kind, msg.clone()));
        }
        loop {
            while self.chunks.front().is_some_and(|c| c.is_empty()) {
                self.chunks.pop_front();
            }
            if let Some(chunk) = self.chunks.front_mut() {
                let n = out.len().min(chunk.len());
                out[..n].copy_from_slice(&chunk[..n]);
                bytes::Buf::advance(chunk, n);
                return Ok(n);
            }
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(batch)) => self.chunks.extend(batch),
                Some(Err(e)) => {
                    self.failed = Some((e.kind(), e.to_string()));
                    return Err(e);
                }
            }
        }
    }
}

/// The async end of a [`chunk_pipe`].
pub struct ChunkSender {
    tx: mpsc::Sender<io::Result<Vec<Bytes>>>,
}

impl ChunkSender {
    /// Sends a batch of chunks; false if the reader is gone.
    pub async fn send(&self, batch: Vec<Bytes>) -> bool {
        batch.is_empty() || self.tx.send(Ok(batch)).await.is_ok()
    }

    /// Fails the reader with `e` (after the chunks already sent).
    pub async fn fail(&self, e: io::Error) {
        let _ = self.tx.send(Err(e)).await;
    }

    /// Completes once the reader is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A pipe that carries zero-copy chunks (e.g. from a QUIC stream's
/// `read_chunk`) from an async task to a blocking reader. The sender should
/// batch chunks up to about [`PIPE_BATCH`] bytes; at most two batches queue.
/// Dropping the sender ends the reader's stream (`Ok(0)`).
pub fn chunk_pipe() -> (ChunkSender, PipeReader) {
    let (tx, rx) = mpsc::channel(PIPE_QUEUED);
    (ChunkSender { tx }, PipeReader { rx, chunks: VecDeque::new(), failed: None })
}

/// A synchronous `Read` over an `AsyncRead`, for use on a blocking thread.
pub struct BlockingRead<R> {
    handle: Handle,
    /// The wrapped stream; taken back by the caller when done.
    pub inner: R,
    /// Bytes read so far.
    pub bytes: u64,
}

impl<R: AsyncRead + Unpin> BlockingRead<R> {
    /// Wraps `inner`; `handle` is the runtime that drives it.
    pub fn new(handle: Handle, inner: R) -> Self {
        Self { handle, inner, bytes: 0 }
    }
}

impl<R: AsyncRead + Unpin> Read for BlockingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.handle.block_on(self.inner.read(buf))?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A synchronous `Write` over an `AsyncWrite`, for use on a blocking thread.
pub struct BlockingWrite<W> {
    handle: Handle,
    /// The wrapped stream.
    pub inner: W,
    /// Bytes written so far.
    pub bytes: u64,
}

impl<W: AsyncWrite + Unpin> BlockingWrite<W> {
    /// Wraps `inner`; `handle` is the runtime that drives it.
    pub fn new(handle: Handle, inner: W) -> Self {
        Self { handle, inner, bytes: 0 }
    }
}

impl<W: AsyncWrite + Unpin> Write for BlockingWrite<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.handle.block_on(self.inner.write_all(buf))?;
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.handle.block_on(self.inner.flush())
    }
}
