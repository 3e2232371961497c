//! Responses that send blob bytes, trees and content indexes, each taking
//! its place first (this connection's share, then a fair share of the
//! server's slots, and a pace the reader must keep), and the availability
//! answers of observe.

use blixard_store::{ranges, BlobStatus, ChunkRanges, Hash, Store};
use bytes::Bytes;
use tracing::{debug, warn};

use super::{Peer, ServerContext, MAX_RECHECK};
use crate::{
    frame,
    limits::OBSERVE_INTERVAL,
    plan, watched,
    wire::{Availability, ErrorCode, RangeSpec, Request},
};

/// A response's outcome, with the stream handed back.
pub(super) type Answered = (quinn::SendStream, std::result::Result<(), ErrorCode>);

/// Answers get, get-many and get-seq; hands the stream back.
pub(super) async fn answer_blobs(
    ctx: &ServerContext,
    request: Request,
    mut send: quinn::SendStream,
    peer: &Peer,
) -> Answered {
    let checked = match plan::blob_items(&ctx.store, &request) {
        Ok(items) => items,
        Err(code) => return (send, Err(code)),
    };
    for (hash, effective) in checked {
        let (s, result) = send_blob(ctx, send, hash, effective, peer).await;
        send = s;
        if result.is_err() {
            return (send, result);
        }
    }
    (send, Ok(()))
}

/// Availability of `hash` now.
pub fn availability(store: &Store, hash: &Hash) -> blixard_store::Result<Availability> {
    Ok(match store.status(hash)? {
        BlobStatus::Absent => {
            Availability { size: None, size_verified: false, ranges: RangeSpec(Vec::new()), complete: false }
        }
        BlobStatus::Partial { size, size_verified, ranges } => {
            Availability { size: Some(size), size_verified, ranges: RangeSpec::new(&ranges), complete: false }
        }
        BlobStatus::Complete { size } => Availability {
            size: Some(size),
            size_verified: true,
            ranges: RangeSpec::new(&ranges::all(size)),
            complete: true,
        },
    })
}

/// Sends the availability of `hash`; with `watch`, again whenever it changes,
/// until the blob is complete, the client stops reading, or
/// [`ServerLimits::max_observe`](crate::limits::ServerLimits::max_observe) passes.
pub(super) async fn observe(
    ctx: &ServerContext,
    send: &mut quinn::SendStream,
    hash: Hash,
    watch: bool,
) -> std::result::Result<(), ErrorCode> {
    let deadline = tokio::time::Instant::now() + ctx.limits.max_observe;
    let mut last = None;
    loop {
        let now = availability(&ctx.store, &hash).map_err(|_| ErrorCode::Internal)?;
        if last.as_ref() != Some(&now) {
            if frame::write_frame(send, &now).await.is_err() {
                return Ok(()); // the client went away
            }
            if !watch || now.complete {
                return Ok(());
            }
            last = Some(now);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(OBSERVE_INTERVAL) => {}
            _ = send.stopped() => return Ok(()),
        }
    }
}

/// Sends one blob response: the size, then the encoding of the effective
/// ranges, encoded on the blocking pool and sent as zero-copy chunks.
async fn send_blob(
    ctx: &ServerContext,
    mut send: quinn::SendStream,
    hash: Hash,
    effective: ChunkRanges,
    peer: &Peer,
) -> Answered {
    {
        let mut served = peer.served.lock().unwrap();
        if served.len() < MAX_RECHECK && !served.contains(&hash) {
            served.push(hash);
        }
    }
    // This connection's cap first, then a fair share of the server's.
    let Some(mut place) = take_place(ctx, peer).await else { return (send, Err(ErrorCode::Unavailable)) };
    // In use while it is served: garbage collection and a cache's eviction
    // leave it alone until the response ends.
    let _in_use = ctx.store.lease(hash);
    let mut response = ctx.store.encode_response(hash, effective.clone());
    let limiter = ctx.upload_limiter.as_deref();
    let mut sent = Ok(());
    while let Some(mut batch) = response.next_batch().await {
        sent = watched::send_chunks(&mut send, &mut batch, limiter, &mut place.pace).await;
        if sent.is_err() {
            break;
        }
    }
    let result = match (response.finish().await, sent) {
        // Held ranges only grow, so everything checked is still served.
        (Ok(out), Ok(())) if out.served == effective => Ok(()),
        (Ok(out), Ok(())) => {
            warn!(%hash, "served {:?} of {:?}: the blob shrank (removed?)", out.served, effective);
            Err(ErrorCode::Internal)
        }
        (_, Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            debug!(%hash, peer = %peer.id, "response reset, its slot freed: {e}");
            Err(ErrorCode::Unavailable)
        }
        (_, Err(e)) => {
            debug!(%hash, "sending stopped: {e}");
            Err(ErrorCode::Internal)
        }
        (Err(e), Ok(())) => {
            warn!(%hash, "serving failed: {e}");
            Err(ErrorCode::Internal)
        }
    };
    (send, result)
}

/// A response's place: this connection's share, then a fair share of the
/// server's slots, and the pace it must keep (held until dropped).
struct Place<'a> {
    _mine: tokio::sync::SemaphorePermit<'a>,
    _slot: crate::admission::ResponseSlot,
    pace: watched::Pace,
}

async fn take_place<'a>(ctx: &ServerContext, peer: &'a Peer) -> Option<Place<'a>> {
    let mine = peer.responses.acquire().await.ok()?;
    let slot = ctx.admission.response(peer.id, peer.privileged).await;
    let pace = watched::Pace::new(ctx.limits.response_stall, ctx.limits.min_response_rate);
    Some(Place { _mine: mine, _slot: slot, pace })
}

/// The code a response that stopped sending is reset with: a reader too
/// slow for the pace frees its slot (`Unavailable`), anything else is ours.
fn stopped(e: &std::io::Error) -> ErrorCode {
    if e.kind() == std::io::ErrorKind::TimedOut {
        ErrorCode::Unavailable
    } else {
        ErrorCode::Internal
    }
}

/// Tree bytes read per piece (verified as read, then sent).
const TREE_PIECE: usize = 256 * 1024;

/// Sends a complete blob's tree: its size, then every parent record in
/// pre-order, each checked against the hash as it is read (a tree damaged
/// at rest is never served). Counted and paced like a blob response.
pub(super) async fn send_tree(ctx: &ServerContext, mut send: quinn::SendStream, hash: Hash, peer: &Peer) -> Answered {
    let _in_use = ctx.store.lease(hash);
    let store = ctx.store.clone();
    let opened = tokio::task::spawn_blocking(move || store.tree_reader(&hash)).await;
    let mut reader = match opened {
        Ok(Ok(r)) => r,
        Ok(Err(blixard_store::Error::NotFound(_))) => return (send, Err(ErrorCode::NotFound)),
        Ok(Err(blixard_store::Error::Incomplete(_))) => return (send, Err(ErrorCode::NotHeld)),
        Ok(Err(e)) => {
            debug!(%hash, "cannot serve the tree: {e}");
            return (send, Err(ErrorCode::Internal));
        }
        Err(_) => return (send, Err(ErrorCode::Internal)),
    };
    let Some(mut place) = take_place(ctx, peer).await else { return (send, Err(ErrorCode::Unavailable)) };
    let limiter = ctx.upload_limiter.as_deref();
    let mut batch = vec![Bytes::copy_from_slice(&reader.size().to_le_bytes())];
    loop {
        if let Err(e) = watched::send_chunks(&mut send, &mut batch, limiter, &mut place.pace).await {
            debug!(%hash, "sending the tree stopped: {e}");
            return (send, Err(stopped(&e)));
        }
        let piece = tokio::task::spawn_blocking(move || {
            let piece = reader.next_piece(TREE_PIECE);
            (reader, piece)
        })
        .await;
        let next = match piece {
            Ok((r, Ok(next))) => {
                reader = r;
                next
            }
            Ok((_, Err(e))) => {
                warn!(%hash, "not serving its tree: {e}");
                return (send, Err(ErrorCode::Internal));
            }
            Err(_) => return (send, Err(ErrorCode::Internal)),
        };
        match next {
            Some(piece) => batch = vec![Bytes::from(piece)],
            None => return (send, Ok(())),
        }
    }
}

/// Sends a complete blob's content index, if it was built (not built on
/// request: a stranger must not make the server read whole blobs).
pub(super) async fn send_index(ctx: &ServerContext, mut send: quinn::SendStream, hash: Hash, peer: &Peer) -> Answered {
    let _in_use = ctx.store.lease(hash);
    let store = ctx.store.clone();
    let index = tokio::task::spawn_blocking(move || match store.status(&hash)? {
        BlobStatus::Complete { .. } => store.content_index(&hash),
        _ => Ok(None),
    })
    .await;
    let index = match index {
        Ok(Ok(Some(i))) => i,
        Ok(Ok(None)) => return (send, Err(ErrorCode::NotFound)),
        Ok(Err(e)) => {
            debug!(%hash, "cannot serve the content index: {e}");
            return (send, Err(ErrorCode::Internal));
        }
        Err(_) => return (send, Err(ErrorCode::Internal)),
    };
    let Some(mut place) = take_place(ctx, peer).await else { return (send, Err(ErrorCode::Unavailable)) };
    let mut batch: Vec<Bytes> = Bytes::from(index).chunks(TREE_PIECE).map(Bytes::copy_from_slice).collect();
    match watched::send_chunks(&mut send, &mut batch, ctx.upload_limiter.as_deref(), &mut place.pace).await {
        Ok(()) => (send, Ok(())),
        Err(e) => {
            debug!(%hash, "sending the content index stopped: {e}");
            (send, Err(stopped(&e)))
        }
    }
}
