//! Resolving `(kind, name, version)` to a blob: every connected peer is
//! asked for its claim, each signature checked, and only trusted
//! publishers name things.

use std::time::Duration;

use blixard_protocol::{client, wire::ResourceInfo as WireResource, Connection, NodeId};
use blixard_store::{Hash, ResourceKind};
use tracing::{debug, warn};

use crate::{claims::ClaimMarks, Error, Result};

/// Resolves `(kind, name, version)` to a claim: every connected peer is
/// asked, every claim's signature is checked (a forged one is dropped and
/// its peer logged), and only claims whose publisher `trusted` accepts name
/// the resource. Trusted publishers that disagree are an error listing
/// each hash and publisher. With `pinned`, the claim for that hash is used,
/// whoever made it (the user chose the content). Who provides the blob is
/// decided by [`fetch`](super::fetch), from holdings. Of each publisher
/// only its newest claim counts, and claims older than one accepted before
/// are refused ([`ClaimMarks`]); the claim chosen is recorded there.
pub(crate) async fn resolve(
    marks: &ClaimMarks,
    conns: &[Connection],
    kind: &ResourceKind,
    name: &str,
    version: &str,
    pinned: Option<Hash>,
    trusted: impl Fn(&NodeId) -> bool,
) -> Result<WireResource> {
    if conns.is_empty() {
        return Err(Error::NoPeers);
    }
    let kind_text = kind.to_string();
    let lookups = conns.iter().map(|c| async {
        let r = tokio::time::timeout(Duration::from_secs(15), client::lookup(c, &kind_text, name, version)).await;
        (c.remote_id(), r)
    });
    let mut found: Vec<WireResource> = Vec::new();
    for (peer, r) in crate::join::join_all(lookups).await {
        match r {
            Ok(Ok(Some(claim))) => found.push(claim),
            Ok(Ok(None)) => {}
            Ok(Err(e)) if e.is_peer_misbehaving() => warn!(%peer, "refused its answer to a lookup: {e}"),
            Ok(Err(e)) => debug!(%peer, "lookup failed: {e}"),
            Err(_) => debug!(%peer, "lookup timed out"),
        }
    }
    let found = marks.newest(found);
    let chosen = choose(found, conns.len(), &kind_text, name, version, pinned, trusted)?;
    marks.accepted(&chosen);
    Ok(chosen)
}

/// The claim that names the resource, of the newest claims per publisher.
fn choose(
    found: Vec<WireResource>,
    peers: usize,
    kind_text: &str,
    name: &str,
    version: &str,
    pinned: Option<Hash>,
    trusted: impl Fn(&NodeId) -> bool,
) -> Result<WireResource> {
    let describe = |claims: &[&WireResource]| {
        claims.iter().map(|c| format!("{} by {}", Hash(c.hash), c.publisher)).collect::<Vec<_>>().join("; ")
    };
    let what = || format!("{kind_text} {name} {version}");
    if let Some(h) = pinned {
        return found.into_iter().find(|c| c.hash == h.0).ok_or_else(|| Error::NotFound {
            kind: kind_text.into(),
            name: format!("{name} (hash {h})"),
            version: version.into(),
            peers,
        });
    }
    let trusted_claims: Vec<&WireResource> = found.iter().filter(|c| trusted(&c.publisher)).collect();
    let mut hashes: Vec<[u8; 32]> = trusted_claims.iter().map(|c| c.hash).collect();
    hashes.sort();
    hashes.dedup();
    match hashes.len() {
        1 => Ok(trusted_claims[0].clone()),
        0 if found.is_empty() => {
            Err(Error::NotFound { kind: kind_text.into(), name: name.into(), version: version.into(), peers })
        }
        0 => Err(Error::Untrusted { what: what(), claims: describe(&found.iter().collect::<Vec<_>>()) }),
        _ => Err(Error::Conflict { what: what(), claims: describe(&trusted_claims) }),
    }
}
