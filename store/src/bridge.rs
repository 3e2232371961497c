//! Bridges between tokio's async streams and the store's blocking code.
//!
//! The fast paths need none: receiving is a sans-I/O decoder pushed from
//! the async task ([`crate::IncomingBlob`]), and serving hands batches of
//! zero-copy chunks of [`PIPE_BATCH`] bytes to the async side
//! ([`crate::Store::encode_response`]). [`BlockingRead`] lets blocking code
//! pull from an `AsyncRead` owned by the async side, for the generic
//! (any reader) receive path.

use std::io::{self, Read};

use tokio::{
    io::{AsyncRead, AsyncReadExt},
    runtime::Handle,
};

/// Bytes per batch of chunks handed from a blocking encoder to the async
/// task that sends them (see [`crate::Store::encode_response`]).
pub const PIPE_BATCH: usize = 256 * 1024;

/// A synchronous `Read` over an `AsyncRead`, for use on a blocking thread.
pub struct BlockingRead<R> {
    handle: Handle,
    /// The wrapped stream; taken back by the caller when done.
    pub inner: R,
}

impl<R: AsyncRead + Unpin> BlockingRead<R> {
    /// Wraps `inner`; `handle` is the runtime that drives it.
    pub fn new(handle: Handle, inner: R) -> Self {
        Self { handle, inner }
    }
}

impl<R: AsyncRead + Unpin> Read for BlockingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.handle.block_on(self.inner.read(buf))
    }
}
