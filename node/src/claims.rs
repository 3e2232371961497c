//! Claim ordering: a publisher's newer signed claim for a name wins over
//! its older ones, and a replay of an older claim is refused, even after a
//! restart. The node keeps, per publisher and `(kind, name, version)`, the
//! newest creation time it accepted (tree `claims.seen` in `node.db`: a
//! high-water mark). The creation time is inside the signed body, so it
//! cannot be changed without the publisher's key.

use std::collections::HashMap;

use blixard_protocol::{wire::ResourceInfo, NodeId};
use tracing::{debug, warn};

use crate::Result;

/// The sled tree of high-water marks.
const TREE: &str = "claims.seen";

/// The newest accepted claim time per publisher and name.
pub(crate) struct ClaimMarks(sled::Tree);

fn key(c: &ResourceInfo) -> Vec<u8> {
    // Lengths first: no two (kind, name, version) encode alike.
    let mut k = c.publisher.as_bytes().to_vec();
    for field in [&c.kind, &c.name, &c.version] {
        k.extend((field.len() as u32).to_be_bytes());
        k.extend(field.as_bytes());
    }
    k
}

impl ClaimMarks {
    /// The marks kept in `db`.
    pub(crate) fn open(db: &sled::Db) -> Result<Self> {
        Ok(ClaimMarks(db.open_tree(TREE)?))
    }

    fn mark(&self, c: &ResourceInfo) -> u64 {
        let stored = self.0.get(key(c)).ok().flatten();
        stored.and_then(|v| <[u8; 8]>::try_from(&v[..]).ok()).map_or(0, u64::from_be_bytes)
    }

    /// Of signed claims for one name (checked by the caller), the newest of
    /// each publisher, without those older than what was accepted before.
    pub(crate) fn newest(&self, claims: Vec<ResourceInfo>) -> Vec<ResourceInfo> {
        let mut best: HashMap<NodeId, ResourceInfo> = HashMap::new();
        for c in claims {
            let mark = self.mark(&c);
            if c.created_unix_ms < mark {
                // A peer may simply keep an old claim; a replay is refused
                // all the same.
                debug!(
                    publisher = %c.publisher,
                    "refused a replayed claim for {} {} {}: made at {} ms, a newer one ({mark} ms) was seen",
                    c.kind, c.name, c.version, c.created_unix_ms
                );
                continue;
            }
            match best.get(&c.publisher) {
                Some(b) if b.created_unix_ms >= c.created_unix_ms => {}
                _ => {
                    best.insert(c.publisher, c);
                }
            }
        }
        best.into_values().collect()
    }

    /// Records that `c` was accepted: older claims of its publisher for the
    /// same name are refused from now on.
    pub(crate) fn accepted(&self, c: &ResourceInfo) {
        if c.created_unix_ms > self.mark(c) {
            if let Err(e) = self.0.insert(key(c), &c.created_unix_ms.to_be_bytes()) {
                warn!("cannot record a claim's time: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use blixard_protocol::SecretKey;
    use blixard_store::{Hash, Resource, ResourceKind};

    use super::*;

    fn claim(key: &SecretKey, version: &str, created: u64, hash: &[u8]) -> ResourceInfo {
        let r = Resource {
            kind: ResourceKind::VmImage,
            name: "img".into(),
            version: version.into(),
            hash: Hash::of(hash),
            size: hash.len() as u64,
            created_unix_ms: created,
        };
        ResourceInfo::sign(&r, key)
    }

    #[test]
    fn the_newest_claim_wins_and_an_older_replay_is_refused_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (p, q) = (SecretKey::from_seed(&[1; 32]), SecretKey::from_seed(&[2; 32]));
        let (old, new) = (claim(&p, "1", 10, b"old"), claim(&p, "1", 20, b"new"));
        {
            let db = sled::open(dir.path().join("db")).unwrap();
            let marks = ClaimMarks::open(&db).unwrap();
            let mut got = marks.newest(vec![old.clone(), new.clone(), claim(&q, "1", 5, b"q")]);
            got.sort_by_key(|c| c.created_unix_ms);
            assert_eq!(got.iter().map(|c| c.created_unix_ms).collect::<Vec<_>>(), [5, 20], "one per publisher");
            marks.accepted(&new);
            marks.accepted(&old); // never lowers the mark
        }
        let db = sled::open(dir.path().join("db")).unwrap();
        let marks = ClaimMarks::open(&db).unwrap();
        assert!(marks.newest(vec![old.clone()]).is_empty(), "the older claim is refused after a restart");
        assert_eq!(marks.newest(vec![new.clone()]).len(), 1, "the same claim again is fine");
        assert_eq!(marks.newest(vec![claim(&p, "2", 1, b"other")]).len(), 1, "marks are per version");
    }
}
