//! The thin async shell around QUIC streams: frame I/O with caps, a reader
//! that enforces deadlines, counts progress and notices cancellation, and a
//! writer that asks an upload limiter before it sends.

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
use serde::{de::DeserializeOwned, Serialize};
use tokio::{
    io::{AsyncRead, ReadBuf},
    sync::oneshot,
    time::{Instant, Sleep},
};

use crate::{wire, Error, Result};

/// Writes one frame.
pub async fn write_frame<T: Serialize>(send: &mut quinn::SendStream, value: &T) -> Result<()> {
    send.write_all(&wire::encode_frame(value)).await?;
    Ok(())
}

/// Reads one frame body of at most `limit` bytes; `None` if the stream ended
/// cleanly before a frame started.
pub async fn read_frame_body(recv: &mut quinn::RecvStream, limit: u32) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match recv.read(&mut len[got..]).await? {
            Some(n) => got += n,
            None if got == 0 => return Ok(None),
            None => return Err(Error::Malformed { what: "frame", reason: "stream ended inside a length".into() }),
        }
    }
    let len = u32::from_le_bytes(len);
    if len > limit {
        return Err(Error::Limit { what: "frame length", actual: len as u64, limit: limit as u64 });
    }
    let mut body = vec![0u8; len as usize];
    recv.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Reads one frame and decodes it.
pub async fn read_frame<T: DeserializeOwned>(recv: &mut quinn::RecvStream, what: &'static str) -> Result<T> {
    let body = read_frame_body(recv, crate::limits::MAX_RESPONSE_FRAME_BYTES)
        .await?
        .ok_or_else(|| Error::Malformed { what, reason: "stream ended before the response".into() })?;
    wire::decode_body(what, &body)
}

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
    /// 1 if a deadline passed, 2 if cancelled.
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
            2 => Error::Cancelled,
            _ => e,
        }
    }
}

/// An `AsyncRead` over a response stream that fails with `TimedOut` when a
/// deadline passes, with `ConnectionAborted` when the request is cancelled (the
/// paired [`CancelGuard`] dropped), and records bytes and reset codes in a
/// [`ReadReport`].
pub struct WatchedRead<R> {
    inner: R,
    report: Arc<ReadReport>,
    progress: Option<Arc<AtomicU64>>,
    total: Option<Pin<Box<Sleep>>>,
    stall: Pin<Box<Sleep>>,
    stall_after: Duration,
    last_progress: Instant,
    cancel: oneshot::Receiver<()>,
    cancelled: bool,
}

/// Cancels the paired [`WatchedRead`] when dropped.
pub struct CancelGuard(#[allow(dead_code)] oneshot::Sender<()>);

impl<R> WatchedRead<R> {
    /// Wraps `inner`; `progress`, if given, also counts bytes read.
    pub fn new(
        inner: R,
        deadlines: Deadlines,
        progress: Option<Arc<AtomicU64>>,
    ) -> (Self, CancelGuard, Arc<ReadReport>) {
        let (tx, rx) = oneshot::channel();
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
            cancel: rx,
            cancelled: false,
        };
        (me, CancelGuard(tx), report)
    }
}

impl<R> WatchedRead<R> {
    /// Checks cancellation and the deadlines; an error ends the read. The
    /// stall timer is only moved when it fires (not on every read): it is
    /// then re-armed from the last progress, or the read has stalled.
    fn poll_watch(&mut self, cx: &mut Context<'_>, pending: bool) -> Option<io::Error> {
        if self.cancelled || Pin::new(&mut self.cancel).poll(cx).is_ready() {
            self.cancelled = true;
            self.report.ended.store(2, Ordering::Relaxed);
            return Some(io::Error::new(io::ErrorKind::ConnectionAborted, "cancelled"));
        }
        if !pending {
            return None;
        }
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
        if let Some(e) = me.poll_watch(cx, false) {
            return Poll::Ready(Err(e));
        }
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
            Poll::Pending => match me.poll_watch(cx, true) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl WatchedRead<quinn::RecvStream> {
    /// The next chunk of the stream as received (no copy), at most `max`
    /// bytes; `None` at its end.
    pub async fn read_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx, max)).await
    }

    /// Fills `bufs` with the next chunks of the stream as received (no
    /// copy) in one go; how many, or `None` at its end.
    pub async fn read_chunks(&mut self, bufs: &mut [Bytes]) -> io::Result<Option<usize>> {
        std::future::poll_fn(|cx| {
            if let Some(e) = self.poll_watch(cx, false) {
                return Poll::Ready(Err(e));
            }
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
                Poll::Pending => match self.poll_watch(cx, true) {
                    Some(e) => Poll::Ready(Err(e)),
                    None => Poll::Pending,
                },
            }
        })
        .await
    }

    /// Polls for the next chunk, as [`WatchedRead::read_chunk`] waits for
    /// (a batching reader polls once more to take what is ready now).
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<Option<Bytes>>> {
        if let Some(e) = self.poll_watch(cx, false) {
            return Poll::Ready(Err(e));
        }
        let polled = {
            let read = std::pin::pin!(self.inner.read_chunk(max, true));
            read.poll(cx)
        };
        match polled {
            Poll::Ready(Ok(Some(chunk))) => {
                self.progressed(chunk.bytes.len() as u64);
                Poll::Ready(Ok(Some(chunk.bytes)))
            }
            Poll::Ready(Ok(None)) => Poll::Ready(Ok(None)),
            Poll::Ready(Err(e)) => {
                if let quinn::ReadError::Reset(code) = e {
                    self.report.reset_code.store(code.into_inner() + 1, Ordering::Relaxed);
                }
                Poll::Ready(Err(e.into()))
            }
            Poll::Pending => match self.poll_watch(cx, true) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

/// Paces uploads: asked before bytes are sent, answers how long to wait
/// first. Implementations are token buckets (per node, per transfer...).
pub trait UploadLimiter: Send + Sync {
    /// Reserves `bytes` and returns the delay before they may be sent.
    fn reserve(&self, bytes: u64) -> Duration;
}

/// Sends a batch of zero-copy chunks on `send`: first waits as `limiter`
/// says for the whole batch, then hands the chunks to QUIC. Fails with
/// `TimedOut` when the peer accepts no byte for `stall` (it stopped reading).
pub async fn send_chunks(
    send: &mut quinn::SendStream,
    batch: &mut [Bytes],
    limiter: Option<&dyn UploadLimiter>,
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

/// A token bucket: `rate` bytes per second with a burst of `burst` bytes.
/// Shared by reference, it paces every transfer that uses it together.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl TokenBucket {
    /// A bucket of `rate` bytes/s, starting full with `burst` bytes.
    pub fn new(rate_bytes_per_sec: u64, burst: u64) -> Self {
        let rate = rate_bytes_per_sec.max(1) as f64;
        TokenBucket {
            rate,
            burst: burst as f64,
            state: std::sync::Mutex::new((burst as f64, std::time::Instant::now())),
        }
    }
}

impl UploadLimiter for TokenBucket {
    fn reserve(&self, bytes: u64) -> Duration {
        let mut s = self.state.lock().unwrap();
        let now = std::time::Instant::now();
        let tokens = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.burst) - bytes as f64;
        *s = (tokens, now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_paces_to_its_rate() {
        let b = TokenBucket::new(1_000_000, 100_000);
        assert_eq!(b.reserve(100_000), Duration::ZERO);
        let d = b.reserve(500_000);
        assert!(d >= Duration::from_millis(490) && d <= Duration::from_millis(510), "{d:?}");
    }

    /// A cancelled read must end a blocking `read_exact` (std retries
    /// `Interrupted` errors forever, which once spun a receiving thread).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_ends_a_blocking_read_exact() {
        let (_writer, reader) = tokio::io::duplex(64);
        let (watched, cancel, report) = WatchedRead::new(reader, Deadlines::default(), None);
        let handle = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            let mut r = blixard_store::bridge::BlockingRead::new(handle, watched);
            let mut buf = [0u8; 8];
            std::io::Read::read_exact(&mut r, &mut buf)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(cancel);
        let result = tokio::time::timeout(Duration::from_secs(5), task).await.expect("the read ended").unwrap();
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(report.ended.load(Ordering::Relaxed), 2);
    }
}
