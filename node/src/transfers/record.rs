//! The records of unfinished transfers in `node.db`, so a restarted node
//! resumes them: today's form (the [`DownloadRequest`] itself, with its id)
//! and the three earlier forms, each moved over once when read.

use blixard_protocol::NodeId;
use blixard_store::{Hash, ResourceKind};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{id::TransferId, request::DownloadRequest};
use crate::{
    codec,
    error::{Error, Result},
    queue::TransferPriority,
};

/// A transfer that has not finished, as kept in `node.db` (fourth format):
/// its id and the request as queued (`base_version` already resolved into
/// `bases`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PendingRecord {
    pub id: TransferId,
    pub request: DownloadRequest,
}

/// The tree of [`PendingRecord`]s, keyed by id (u64, big endian, so sled
/// iterates them in order).
pub(crate) const PENDING_TREE: &str = "transfers.v4";

/// The third format (`transfers.v3`): the request's fields flattened, no
/// bases.
#[derive(Serialize, Deserialize)]
struct PendingV3 {
    id: TransferId,
    kind: ResourceKind,
    name: String,
    version: String,
    priority: TransferPriority,
    hash: Option<Hash>,
    providers: Vec<NodeId>,
    limit_mbps: Option<f64>,
}

/// The second format (`transfers.v2`): no providers, no limit.
#[derive(Deserialize)]
struct PendingV2 {
    id: TransferId,
    kind: ResourceKind,
    name: String,
    version: String,
    priority: TransferPriority,
    hash: Option<Hash>,
}

/// The first format (`transfers`, version byte 1): text id `NODE-N`, kind
/// as text.
#[derive(Deserialize)]
struct PendingV1 {
    id: String,
    kind: String,
    name: String,
    version: String,
    priority: TransferPriority,
}

impl From<PendingV3> for PendingRecord {
    fn from(v: PendingV3) -> Self {
        let PendingV3 { id, kind, name, version, priority, hash, providers, limit_mbps } = v;
        let request =
            DownloadRequest { priority, hash, providers, limit_mbps, ..DownloadRequest::new(kind, name, version) };
        PendingRecord { id, request }
    }
}

fn decode_v3(bytes: &[u8]) -> Result<PendingRecord> {
    Ok(codec::decode::<PendingV3>("transfer", bytes)?.into())
}

fn decode_v2(bytes: &[u8]) -> Result<PendingRecord> {
    let PendingV2 { id, kind, name, version, priority, hash } = codec::decode("transfer", bytes)?;
    let request = DownloadRequest { priority, hash, ..DownloadRequest::new(kind, name, version) };
    Ok(PendingRecord { id, request })
}

fn decode_v1(bytes: &[u8]) -> Result<PendingRecord> {
    let old: PendingV1 = codec::decode_version("transfer", 1, bytes)?;
    let corrupt = |reason: String| Error::CorruptRecord { what: "transfer", reason };
    let number = old.id.rsplit('-').next().and_then(|n| n.parse().ok());
    let id = number.ok_or_else(|| corrupt(format!("id {:?}", old.id)))?;
    let kind = old.kind.parse().map_err(|e: blixard_store::Error| corrupt(e.to_string()))?;
    let request = DownloadRequest { priority: old.priority, ..DownloadRequest::new(kind, old.name, old.version) };
    Ok(PendingRecord { id: TransferId(id), request })
}

/// The persisted records, over the tree [`PENDING_TREE`] of `node.db`.
pub(crate) struct PendingRecords(sled::Tree);

impl PendingRecords {
    /// Opens the tree in `db`.
    pub(crate) fn open(db: &sled::Db) -> Result<Self> {
        Ok(PendingRecords(db.open_tree(PENDING_TREE)?))
    }

    /// Records (or re-records) a queued transfer.
    pub(crate) fn put(&self, record: &PendingRecord) -> Result<()> {
        self.0.insert(record.id.0.to_be_bytes(), codec::encode("transfer", record)?)?;
        Ok(())
    }

    /// Forgets a transfer that ended.
    pub(crate) fn remove(&self, id: TransferId) {
        let _ = self.0.remove(id.0.to_be_bytes());
    }

    /// Reads the unfinished transfers of an earlier run, oldest first:
    /// today's records, and those of earlier formats, which are moved over
    /// once (their trees then dropped). Damaged records are dropped with a
    /// warning.
    pub(crate) fn load(&self, db: &sled::Db) -> Result<Vec<PendingRecord>> {
        let mut records = Vec::new();
        for kv in self.0.iter() {
            let (_, v) = kv?;
            match codec::decode::<PendingRecord>("transfer", &v) {
                Ok(r) => records.push(r),
                Err(e) => warn!("dropping a pending transfer: {e}"),
            }
        }
        type Decode = fn(&[u8]) -> Result<PendingRecord>;
        let earlier: [(&str, Decode); 3] =
            [("transfers", decode_v1), ("transfers.v2", decode_v2), ("transfers.v3", decode_v3)];
        for (name, decode) in earlier {
            if !db.tree_names().iter().any(|n| n.as_ref() == name.as_bytes()) {
                continue;
            }
            let old = db.open_tree(name)?;
            for kv in old.iter() {
                let (_, v) = kv?;
                match decode(&v) {
                    Ok(r) => {
                        self.put(&r)?;
                        records.push(r);
                    }
                    Err(e) => warn!("dropping a pending transfer of an earlier format ({name}): {e}"),
                }
            }
            self.0.flush()?;
            db.drop_tree(name)?;
        }
        records.sort_by_key(|r| r.id);
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(db: &sled::Db) -> Vec<PendingRecord> {
        PendingRecords::open(db).unwrap().load(db).unwrap()
    }

    fn gone(db: &sled::Db, tree: &str) -> bool {
        !db.tree_names().iter().any(|n| n.as_ref() == tree.as_bytes())
    }

    /// A record written by the first format (kept here as its bytes'
    /// recipe) is read and moved into today's form.
    #[test]
    fn a_first_format_pending_transfer_migrates() {
        #[derive(serde::Serialize)]
        struct Old<'a>(&'a str, &'a str, &'a str, &'a str, TransferPriority);
        let mut bytes = vec![1u8];
        let old = Old("7-42", "vm-image", "ubuntu-server", "22.04", TransferPriority::High);
        bytes.extend(blixard_store::encode_record("test", &old).unwrap());
        let r = decode_v1(&bytes).unwrap();
        assert_eq!(r.id, TransferId(42));
        assert_eq!(r.request.kind, ResourceKind::VmImage);
        assert_eq!((r.request.name.as_str(), r.request.version.as_str()), ("ubuntu-server", "22.04"));
        assert_eq!(r.request.priority, TransferPriority::High);
        assert!(codec::decode::<PendingRecord>("transfer", &bytes).is_err(), "not readable as today's");
    }

    /// A second-format record (no providers) is moved to today's tree.
    #[test]
    fn a_second_format_pending_transfer_migrates() {
        #[derive(serde::Serialize)]
        struct V2(TransferId, ResourceKind, String, String, TransferPriority, Option<Hash>);
        let db = sled::Config::new().temporary(true).open().unwrap();
        let hash = Some(Hash([7; 32]));
        let old = V2(TransferId(9), ResourceKind::VmImage, "img".into(), "1".into(), TransferPriority::Low, hash);
        db.open_tree("transfers.v2")
            .unwrap()
            .insert(9u64.to_be_bytes(), codec::encode("transfer", &old).unwrap())
            .unwrap();
        let records = loaded(&db);
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].id, records[0].request.hash, records[0].request.providers.len()),
            (TransferId(9), hash, 0)
        );
        assert!(gone(&db, "transfers.v2"), "the old tree is gone");
        assert_eq!(loaded(&db).len(), 1, "kept in today's tree");
    }

    /// A third-format record (flattened fields) becomes today's request,
    /// every field kept, and the old tree is dropped.
    #[test]
    fn a_third_format_pending_transfer_migrates_to_the_fourth() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let provider = blixard_protocol::SecretKey::from_seed(&[5; 32]).node_id();
        let old = PendingV3 {
            id: TransferId(12),
            kind: ResourceKind::Configuration,
            name: "cfg".into(),
            version: "3".into(),
            priority: TransferPriority::Critical,
            hash: Some(Hash([4; 32])),
            providers: vec![provider],
            limit_mbps: Some(8.0),
        };
        db.open_tree("transfers.v3")
            .unwrap()
            .insert(12u64.to_be_bytes(), codec::encode("transfer", &old).unwrap())
            .unwrap();
        let records = loaded(&db);
        let want = DownloadRequest::new(ResourceKind::Configuration, "cfg", "3")
            .priority(TransferPriority::Critical)
            .hash(Hash([4; 32]))
            .providers([provider])
            .limit_mbps(8.0);
        assert_eq!(records, vec![PendingRecord { id: TransferId(12), request: want }]);
        assert!(gone(&db, "transfers.v3"), "the third format's tree is dropped");
        assert_eq!(loaded(&db), records, "read back from the fourth format's tree");
    }

    /// Today's record keeps bases across a restart (the third format did not).
    #[test]
    fn todays_record_round_trips_with_bases() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let records = PendingRecords::open(&db).unwrap();
        let r = PendingRecord {
            id: TransferId(3),
            request: DownloadRequest::new(ResourceKind::VmImage, "a", "2").base(Hash([9; 32])),
        };
        records.put(&r).unwrap();
        assert_eq!(records.load(&db).unwrap(), vec![r]);
    }
}
