//! [`DownloadRequest`]: what to download, from whom, how urgently. One type
//! for the library ([`crate::Node::download`]), the body of the control
//! API's `POST /v1/download`, and the record of a queued transfer in
//! `node.db` ([`super::record`]), so the three cannot drift apart.

use blixard_protocol::NodeId;
use blixard_store::{Hash, ResourceKind};
use serde::{Deserialize, Serialize};

use crate::queue::TransferPriority;

/// A resource as the transfer table keys requests: kind, name, version.
pub(crate) type Key = (ResourceKind, String, String);

/// What to download, from whom, how urgently: see [`crate::Node::download`].
///
/// ```
/// use blixard_node::{DownloadRequest, ResourceKind, TransferPriority};
///
/// let request = DownloadRequest::new(ResourceKind::VmImage, "ubuntu-server", "22.04").priority(TransferPriority::High);
/// assert_eq!(request.version, "22.04");
/// // then: let id = node.download(request)?;
/// ```
///
/// As JSON (the control API's body), everything but the key may be left
/// out: `{"kind": "vm-image", "name": "ubuntu-server", "version": "22.04",
/// "priority": "High"}`. Unknown fields are refused, so a misspelt option
/// is an error, not silently ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use = "a request does nothing until passed to Node::download"]
pub struct DownloadRequest {
    /// Resource kind.
    pub kind: ResourceKind,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Its place in the queue (default normal).
    #[serde(default)]
    pub priority: TransferPriority,
    /// The content, whoever claims it under the name (the hash verifies
    /// it; the name is how it is recorded here). Default: what trusted
    /// publishers name.
    #[serde(default)]
    pub hash: Option<Hash>,
    /// The only peers to ask (empty: any connected peer).
    #[serde(default)]
    pub providers: Vec<NodeId>,
    /// This transfer's own download limit, megabits per second, under the
    /// node's `bandwidth_limit_mbps` (both hold).
    #[serde(default)]
    pub limit_mbps: Option<f64>,
    /// Seed from this local version of the same name too. Resolved to its
    /// blob when the request is queued (then kept in `bases`).
    #[serde(default)]
    pub base_version: Option<String>,
    /// Local blobs to seed from, besides other versions of the same name.
    #[serde(default)]
    pub bases: Vec<Hash>,
}

impl DownloadRequest {
    /// `(kind, name, version)` as trusted publishers name it, from any
    /// connected peer, at `Normal` priority.
    pub fn new(kind: ResourceKind, name: impl Into<String>, version: impl Into<String>) -> Self {
        DownloadRequest {
            kind,
            name: name.into(),
            version: version.into(),
            priority: TransferPriority::Normal,
            hash: None,
            providers: Vec::new(),
            limit_mbps: None,
            base_version: None,
            bases: Vec::new(),
        }
    }

    /// Seed the download from this local blob too: groups it shares with
    /// the new one are copied from it (each verified against the new tree)
    /// instead of fetched. Other local versions of the same name are used
    /// anyway (see `docs/INCREMENTAL.md`); this adds any blob, e.g. a
    /// similar image of another name.
    pub fn base(mut self, hash: Hash) -> Self {
        self.bases.push(hash);
        self
    }

    /// Seed the download from this local version of the same name too.
    pub fn base_version(mut self, version: impl Into<String>) -> Self {
        self.base_version = Some(version.into());
        self
    }

    /// This transfer's own download limit in megabits per second, under
    /// the node-wide `bandwidth_limit_mbps` (both hold).
    pub fn limit_mbps(mut self, mbps: f64) -> Self {
        self.limit_mbps = Some(mbps);
        self
    }

    /// The content is this blob, whoever claims it under the name (the
    /// hash verifies it; the name is how it is recorded here).
    pub fn hash(mut self, hash: Hash) -> Self {
        self.hash = Some(hash);
        self
    }

    /// Ask and download from these peers only (connect them first, e.g.
    /// with [`crate::Node::connect`]).
    pub fn providers(mut self, providers: impl IntoIterator<Item = NodeId>) -> Self {
        self.providers = providers.into_iter().collect();
        self
    }

    /// Its place in the queue.
    pub fn priority(mut self, priority: TransferPriority) -> Self {
        self.priority = priority;
        self
    }

    /// The key the transfer table merges requests on.
    pub(crate) fn key(&self) -> Key {
        (self.kind.clone(), self.name.clone(), self.version.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_takes_defaults_and_refuses_unknown_fields() {
        let r: DownloadRequest =
            serde_json::from_str(r#"{"kind":"vm-image","name":"ubuntu-server","version":"22.04"}"#).unwrap();
        assert_eq!(r, DownloadRequest::new(ResourceKind::VmImage, "ubuntu-server", "22.04"));
        let e = serde_json::from_str::<DownloadRequest>(r#"{"kind":"vm-image","name":"a","version":"1","limit":5}"#)
            .unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
    }

    #[test]
    fn json_round_trips_every_field() {
        let r = DownloadRequest::new(ResourceKind::Logs, "n", "v")
            .priority(TransferPriority::High)
            .hash(Hash([1; 32]))
            .providers([blixard_protocol::SecretKey::from_seed(&[2; 32]).node_id()])
            .limit_mbps(2.5)
            .base_version("u")
            .base(Hash([3; 32]));
        let back: DownloadRequest = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
