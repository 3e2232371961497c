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

use crate::{wire, Error};
use blixard_net::rate::RateLimiter;

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

/// The pace a response must keep: over each window of time spent waiting
/// on the peer (flow control), at least `min_rate` bytes/s must go out. A
/// slow reader that accepts just enough to look alive (slowloris) fails
/// this and loses its slot; time in our own rate limiter does not count.
#[derive(Debug, Clone)]
pub struct Pace {
    window: Duration,
    min_rate: u64,
    waited: Duration,
    bytes: u64,
}

impl Pace {
    /// A floor of `min_rate` bytes/s judged over `window` (at least 1 ms).
    pub fn new(window: Duration, min_rate: u64) -> Self {
        Pace { window: window.max(Duration::from_millis(1)), min_rate, waited: Duration::ZERO, bytes: 0 }
    }

    /// Time left in the current window.
    fn left(&self) -> Duration {
        self.window.saturating_sub(self.waited)
    }

    /// Counts `bytes` accepted after waiting `waited`; an error once a whole
    /// window was below the floor.
    fn account(&mut self, bytes: u64, waited: Duration) -> io::Result<()> {
        self.bytes += bytes;
        self.waited += waited;
        if self.waited < self.window {
            return Ok(());
        }
        let floor = (self.min_rate as f64 * self.waited.as_secs_f64()) as u64;
        if self.bytes < floor.max(1) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the peer accepted {} bytes in {:?}, below the floor of {} bytes/s",
                    self.bytes, self.waited, self.min_rate
                ),
            ));
        }
        (self.bytes, self.waited) = (0, Duration::ZERO);
        Ok(())
    }
}

/// Sends a batch of zero-copy chunks on `send`: first waits as `limiter`
/// says for the whole batch, then hands the chunks to QUIC, keeping `pace`
/// (a peer that stops reading, or reads too slowly, fails it with
/// `TimedOut`).
pub async fn send_chunks(
    send: &mut quinn::SendStream,
    batch: &mut [Bytes],
    limiter: Option<&dyn RateLimiter>,
    pace: &mut Pace,
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
        let before: u64 = batch[done..].iter().map(|b| b.len() as u64).sum();
        let started = Instant::now();
        match tokio::time::timeout(pace.left(), send.write_chunks(&mut batch[done..])).await {
            Ok(Ok(written)) => {
                done += written.chunks;
                let after: u64 = batch[done..].iter().map(|b| b.len() as u64).sum();
                pace.account(before - after, started.elapsed())?;
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => pace.account(0, started.elapsed())?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pace_below_the_floor_fails_after_a_window() {
        let mut p = Pace::new(Duration::from_secs(10), 1000);
        p.account(5000, Duration::from_secs(5)).unwrap();
        // 9,000 bytes in 10 s is under 1,000 bytes/s.
        assert!(p.account(4000, Duration::from_secs(5)).is_err());
        let mut p = Pace::new(Duration::from_secs(10), 1000);
        p.account(20_000, Duration::from_secs(10)).unwrap();
        assert_eq!(p.left(), Duration::from_secs(10), "a new window starts");
        // With no floor, only a window with nothing accepted fails.
        let mut p = Pace::new(Duration::from_secs(1), 0);
        p.account(1, Duration::from_secs(1)).unwrap();
        assert!(p.account(0, Duration::from_secs(1)).is_err());
    }
}
