//! Seeding a download from local blobs before fetching: the new blob's
//! tree from a provider, groups equal to a local blob's copied, zero groups
//! kept as holes, chunks found by content through the provider's index.

use std::sync::atomic::Ordering;

use blixard_protocol::{
    client::{self, GetOptions},
    watched::Deadlines,
    NodeId,
};
use blixard_store::{ranges, ChunkRanges, Hash, Store};
use tracing::{debug, info, warn};

use super::{Context, Live, STALL};
use crate::events::P2pEvent;

/// Seeds a download that has not started (see `Store::start_seed`): asks
/// the providers in turn for the blob's tree until one gives it, then
/// copies the groups equal to those of `bases` and keeps zero groups as
/// holes, so [`fetch`](super::fetch) fetches only the rest. Best effort: a peer without
/// the request (an older version), or without the whole blob, is skipped;
/// one whose tree does not verify is cut off and reported; with no tree
/// the download fetches everything, as it would have.
pub(crate) async fn seed(ctx: &Context, hash: Hash, size: u64, peers: &[NodeId], bases: &[Hash], live: &Live) {
    if size <= ranges::GROUP_BYTES {
        return;
    }
    match ctx.store.missing(&hash) {
        // Only a download that holds nothing yet: a resumed one was seeded.
        Ok(Some(m)) if m == ChunkRanges::all() || ranges::byte_count(&m, size) == size => {}
        _ => return,
    }
    // The content index only helps if local blobs have indexes to match.
    let by_content = ctx.store.has_content_indexes().unwrap_or(false);
    for peer in peers {
        let Some(conn) = ctx.peers.current_or_dial(peer).await else { continue };
        let options = GetOptions {
            deadlines: Deadlines { total: None, stall: STALL },
            progress: Some(live.wire.clone()),
            limiter: ctx.limiter.clone(),
        };
        let mut from = client::SeedSources { bases: bases.to_vec(), moved: Vec::new() };
        let mut index_bytes = 0;
        if by_content {
            let before = live.wire.load(Ordering::Relaxed);
            match client::get_index(&conn, hash, size, &options).await {
                Ok(entries) => from.moved = find_moved(&ctx.store, hash, entries).await,
                Err(e) if e.is_peer_misbehaving() => {
                    warn!(%peer, "its content index of {hash} is malformed (ignored): {e}");
                }
                Err(e) => debug!(%peer, %hash, "no content index: {e}"),
            }
            index_bytes = live.wire.load(Ordering::Relaxed) - before;
        }
        match client::get_tree(&conn, &ctx.store, hash, size, &from, &options).await {
            Ok(out) => {
                let s = &out.seed;
                ctx.metrics.tree_bytes.inc_by(out.wire_bytes + index_bytes);
                ctx.metrics.reused_bytes.inc_by(s.reused_bytes);
                ctx.metrics.zero_bytes.inc_by(s.zero_bytes);
                live.reused.fetch_add(s.reused_bytes, Ordering::Relaxed);
                live.zeros.fetch_add(s.zero_bytes, Ordering::Relaxed);
                info!(
                    %hash, %peer, tree = out.wire_bytes, index = index_bytes, reused = s.reused_bytes,
                    moved = s.moved_bytes, zeros = s.zero_bytes, damaged = s.damaged_bytes,
                    bases = bases.len(), "seeded from local blobs"
                );
                return;
            }
            Err(e) if e.is_peer_misbehaving() => {
                warn!(%peer, "cut off: its tree of {hash} did not verify: {e}");
                let _ = ctx.events.send(P2pEvent::PeerMisbehaved(*peer, e.to_string()));
                conn.close(blixard_protocol::ErrorCode::ProtocolViolation, "sent an unverifiable tree");
            }
            Err(e) => debug!(%peer, %hash, "no tree: {e}"),
        }
    }
    debug!(%hash, "no provider gave the tree: fetching everything");
}

/// Looks up each chunk of a content index among local blobs: the chunks
/// found, as their offset in the new blob and where they lie.
async fn find_moved(
    store: &Store,
    hash: Hash,
    entries: Vec<blixard_store::content_index::IndexEntry>,
) -> Vec<(u64, blixard_store::content_index::ChunkLocation)> {
    let store = store.clone();
    let found = tokio::task::spawn_blocking(move || {
        entries
            .iter()
            .filter_map(|e| store.find_chunk(&e.hash, &hash).ok().flatten().map(|l| (e.offset, l)))
            .filter(|(_, l)| l.len > 0)
            .collect::<Vec<_>>()
    })
    .await;
    found.unwrap_or_default()
}
