//! The async receive path: a response body pushed in pieces as QUIC hands
//! them over, verified in the pushing task, with full batches written on
//! the blocking pool.

use std::{collections::VecDeque, sync::Arc};

use bytes::Buf;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::{
    aligned::AlignedBuf,
    decode::{Decoder, Progress},
    partial::PartialBlob,
    receive::{ReceiveOutcome, Receiving, Target, WRITES_IN_FLIGHT},
    ChunkRanges, Error, Hash, Result, Store,
};

/// A response being received: push the body's bytes as they arrive with
/// [`IncomingBlob::push`], then [`IncomingBlob::close`] it.
///
/// Bytes are verified in the pushing task, while still in the CPU cache;
/// full batches of chunk groups are written on the blocking pool, at most
/// four (`WRITES_IN_FLIGHT`) at a time, so a slow disk slows the pushing task
/// down (and, through QUIC flow control, the sender). Dropped without
/// `close` (a cancelled transfer), it still writes out and checkpoints what
/// it verified, on the blocking pool.
pub struct IncomingBlob {
    decoder: Decoder,
    sink: Option<Receiving>,
    writes: VecDeque<JoinHandle<Result<(AlignedBuf, usize, bool)>>>,
    spare: Vec<AlignedBuf>,
}

impl IncomingBlob {
    /// Verifies and takes bytes from the front of `data`; true once the
    /// response body is complete (what is left of `data` follows it).
    /// After an error, what verified before it is kept (see `close`).
    pub async fn push(&mut self, data: &mut bytes::Bytes) -> Result<bool> {
        loop {
            let sink = self.sink.as_mut().expect("present until closed");
            let mut rest: &[u8] = data;
            let progress = self.decoder.push(&mut rest, sink);
            let used = data.len() - rest.len();
            data.advance(used);
            match progress? {
                Progress::Done => return Ok(true),
                Progress::NeedData => return Ok(false),
                Progress::NeedRoom => self.make_room().await?,
            }
        }
    }

    /// The error for a stream that ended before the response did.
    pub fn truncated(&self) -> Error {
        let hash = self.decoder.hash();
        Error::Truncated { hash, reason: format!("the stream ended before {}", self.decoder.expecting()) }
    }

    /// Sends the full batch to be written and installs an empty buffer.
    async fn make_room(&mut self) -> Result<()> {
        let fresh = match self.spare.pop() {
            Some(b) => b,
            None if self.writes.len() < WRITES_IN_FLIGHT => {
                let s = self.sink.as_ref().expect("present until closed");
                AlignedBuf::with_len(Receiving::batch_cap(&s.target, s.size))
            }
            None => self.wait_oldest().await?,
        };
        let sink = self.sink.as_mut().expect("present until closed");
        let Some((start, full, len)) = sink.take_batch(fresh)? else { return Ok(()) };
        let Target::Partial(p) = &sink.target else { unreachable!("only partial blobs batch") };
        let write = BatchWrite { partial: p.clone(), start, buf: Some(full), len };
        self.writes.push_back(tokio::task::spawn_blocking(move || write.run()));
        Ok(())
    }

    /// Waits for the oldest write; returns its buffer.
    async fn wait_oldest(&mut self) -> Result<AlignedBuf> {
        let write = self.writes.pop_front().expect("a write in flight");
        let (buf, len, complete) = write.await??;
        let sink = self.sink.as_mut().expect("present until closed");
        sink.out.data_bytes += len as u64;
        sink.out.complete |= complete;
        Ok(buf)
    }

    /// Writes out everything verified, waits for the writes, checkpoints and
    /// returns what the response changed. Call it whether or not the pushes
    /// succeeded (what verified is kept), and after a successful one check
    /// that the last push returned true.
    pub async fn close(mut self) -> Result<ReceiveOutcome> {
        let mut first_error = None;
        while !self.writes.is_empty() {
            match self.wait_oldest().await {
                Ok(buf) => self.spare.push(buf),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        let mut sink = self.sink.take().expect("present until closed");
        let done = matches!(self.decoder.wanted(), 0);
        let finished = tokio::task::spawn_blocking(move || {
            let out = sink.finish();
            if done && out.is_ok() {
                sink.after_success()?;
                return Ok(sink.out.clone());
            }
            out
        })
        .await?;
        match first_error {
            Some(e) => Err(e),
            None => finished,
        }
    }
}

impl Drop for IncomingBlob {
    fn drop(&mut self) {
        let Some(sink) = self.sink.take() else { return };
        let finish = FinishOnDrop(sink);
        // On the blocking pool if there is one. A task the runtime cancels at
        // shutdown before it starts still drops its closure, and so the
        // guard, which then writes out here.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || drop(finish))),
            Err(_) => drop(finish),
        }
    }
}

/// A verified batch on its way to the disk: written by [`BatchWrite::run`],
/// or when dropped unrun (a runtime shutting down drops blocking tasks that
/// have not started), so a cancelled receive keeps every batch it verified.
struct BatchWrite {
    partial: Arc<PartialBlob>,
    start: u64,
    buf: Option<AlignedBuf>,
    len: usize,
}

impl BatchWrite {
    /// Writes and records the batch; returns its buffer for reuse.
    fn run(mut self) -> Result<(AlignedBuf, usize, bool)> {
        let buf = self.buf.take().expect("a batch is written once");
        let complete = self.partial.write_groups(self.start, buf.slice(0, self.len))?;
        Ok((buf, self.len, complete))
    }
}

impl Drop for BatchWrite {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            if let Err(e) = self.partial.write_groups(self.start, buf.slice(0, self.len)) {
                warn!(hash = %self.partial.hash, "writing out a cancelled receive's batch failed: {e}");
            }
        }
    }
}

/// Writes out and checkpoints what a cancelled receive verified when
/// dropped, wherever that happens.
struct FinishOnDrop(Receiving);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        if let Err(e) = self.0.finish() {
            warn!(hash = %self.0.hash, "writing out a cancelled receive failed: {e}");
        }
    }
}

impl Store {
    /// Starts receiving a response body pushed in pieces as they arrive (the
    /// async fast path; see [`IncomingBlob`]). `size` is from the response's
    /// size header.
    pub fn start_receive(&self, hash: Hash, size: u64, requested: &ChunkRanges) -> Result<IncomingBlob> {
        let sink = Receiving::new(self, hash, size, false)?;
        Ok(IncomingBlob {
            decoder: Decoder::new(hash, size, requested),
            sink: Some(sink),
            writes: VecDeque::new(),
            spare: Vec::new(),
        })
    }
}
