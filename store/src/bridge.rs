//! Bridges between tokio's async streams and bao-tree's synchronous encoder
//! and decoder.
//!
//! Hashing is CPU work, so encoding and decoding run on tokio's blocking
//! pool; these adapters let that blocking code pull from an `AsyncRead` or
//! push to an `AsyncWrite` owned by the async side.

use std::io::{self, Read, Write};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    runtime::Handle,
};

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
