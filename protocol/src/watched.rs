//! The async side of one response stream: a reader that enforces
//! deadlines (total and stall) and counts progress, and a sender of
//! zero-copy chunk batches that asks a rate limiter first and notices a peer
//! that stopped reading.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, ReadBuf},
    time::{Instant, Sleep},
};

use crate::{rate::RateLimiter, wire, Error};

/// Deadlines for reading a response.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// The whole response must arrive within this.
    pub total: Option<Duration>,
    /// Fail if no byte arrives for this long.
    pub stall: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines { total: None, stall: Duration::from_secs(30) }
    }
}

/// What a [`WatchedRead`] saw, shared with the caller.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// Bytes read so far.
    pub bytes: AtomicU64,
    /// The stream-reset code, if the peer reset the stream (+1; 0 = none).
    reset_code: AtomicU64,
    /// 1 if a deadline passed.
    ended: AtomicU64,
}

impl ReadReport {
    /// The peer's reset code, if it reset the stream.
    pub fn reset_code(&self) -> Option<wire::ErrorCode> {
        match self.reset_code.load(Ordering::Relaxed) {
            0 => None,
            c => Some(wire::ErrorCode::from_code(c - 1)),
        }
    }

    /// Turns a failure seen through the reader into the precise error.
    pub fn explain(&self, e: Error, deadlines: &Deadlines) -> Error {
        if let Some(code) = self.reset_code() {
            return Error::Remote(code);
        }
        match self.ended.load(Ordering::Relaxed) {
            1 => Error::Timeout(format!(
                "no response within the deadline (total {:?}, stall {:?}) after {} bytes",
                deadlines.total,
                deadlines.stall,
                self.bytes.load(Ordering::Relaxed)
            )),
            _ => e,
        }
    }
}

/// An `AsyncRead` over a response stream that fails with `TimedOut` when a
/// deadline passes and records bytes and reset codes in a
/// [`ReadReport`].
pub struct WatchedRead<R> {
    inner: R,
    report: Arc<ReadReport>,
    progress: Option<Arc<AtomicU64>>,
    total: Option<Pin<Box<Sleep>>>,
    stall: Pin<Box<Sleep>>,
    stall_after: Duration,
    last_progress: Instant,
}

impl<R> WatchedRead<R> {
    /// Wraps `inner`; `progress`, if given, also counts bytes read.
    pub fn new(inner: R, deadlines: Deadlines, progress: Option<Arc<AtomicU64>>) -> (Self, Arc<ReadReport>) {
        let report = Arc::new(ReadReport::default());
        let now = Instant::now();
        let me = WatchedRead {
            inner,
            report: report.clone(),
            progress,
            total: deadlines.total.map(|d| Box::pin(tokio::time::sleep_until(now + d))),
            stall: Box::pin(tokio::time::sleep_until(now + deadlines.stall)),
            stall_after: deadlines.stall,
            last_progress: now,
        };
        (me, report)
    }
}

impl<R> WatchedRead<R> {
    /// Checks the deadlines while a read is pending; an error ends the
    /// read. The stall timer is only moved when it fires (not on every
    /// read): it is then re-armed from the last progress, or the read has
    /// stalled.
    fn poll_deadlines(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let total_passed = self.total.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready());
        let mut stalled = false;
        while !total_passed && self.stall.as_mut().poll(cx).is_ready() {
            let due = self.last_progress + self.stall_after;
            if due <= Instant::now() {
                stalled = true;
                break;
            }
            self.stall.as_mut().reset(due);
        }
        if total_passed || stalled {
            self.report.ended.store(1, Ordering::Relaxed);
            return Some(io::Error::new(io::ErrorKind::TimedOut, "response deadline passed"));
        }
        None
    }

    fn progressed(&mut self, n: u64) {
        self.report.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(p) = &self.progress {
            p.fetch_add(n, Ordering::Relaxed);
        }
        self.last_progress = Instant::now();
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for WatchedRead<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut me.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                me.progressed((buf.filled().len() - before) as u64);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                if let Some(quinn::ReadError::Reset(code)) = e.get_ref().and_then(|i| i.downcast_ref()) {
                    me.report.reset_code.store(code.into_inner() + 1, Ordering::Relaxed);
                }
                Poll::Ready(Err(e))
            }
            Poll::Pending => match me.poll_deadlines(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl WatchedRead<quinn::RecvStream> {
    /// Fills `bufs` with the next chunks of the stream as received (no
    /// copy) in one go; how many, or `None` at its end.
    pub async fn read_chunks(&mut self, bufs: &mut [Bytes]) -> io::Result<Option<usize>> {
        std::future::poll_fn(|cx| {
            let polled = {
                let read = std::pin::pin!(self.inner.read_chunks(bufs));
                read.poll(cx)
            };
            match polled {
                Poll::Ready(Ok(Some(n))) => {
                    self.progressed(bufs[..n].iter().map(|b| b.len() as u64).sum());
                    Poll::Ready(Ok(Some(n)))
                }
                Poll::Ready(Ok(None)) => Poll::Ready(Ok(None)),
                Poll::Ready(Err(e)) => {
                    if let quinn::ReadError::Reset(code) = e {
                        self.report.reset_code.store(code.into_inner() + 1, Ordering::Relaxed);
                    }
                    Poll::Ready(Err(e.into()))
                }
                Poll::Pending => match self.poll_deadlines(cx) {
                    Some(e) => Poll::Ready(Err(e)),
                    None => Poll::Pending,
                },
            }
        })
        .await
    }
}

/// Sends a batch of zero-copy chunks on `send`: first waits as `limiter`
/// says for the whole batch, then hands the chunks to QUIC. Fails with
/// `TimedOut` when the peer accepts no byte for `stall` (it stopped reading).
pub async fn send_chunks(
    send: &mut quinn::SendStream,
    batch: &mut [Bytes],
    limiter: Option<&dyn RateLimiter>,
    stall: Duration,
) -> io::Result<()> {
    if let Some(limiter) = limiter {
        let delay = limiter.reserve(batch.iter().map(|b| b.len() as u64).sum());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    let mut done = 0;
    while done < batch.len() {
        // Chunks written whole are counted; a partly written one was
        // advanced in place and is retried.
        match tokio::time::timeout(stall, send.write_chunks(&mut batch[done..])).await {
            Ok(Ok(written)) => done += written.chunks,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "the peer stopped reading")),
        }
    }
    Ok(())
}
