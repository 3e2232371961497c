//! Named resources: `(kind, name, version) → hash`, the names users move
//! (VM images, configurations, logs, metrics).
//!
//! Keys are `kind \0 name \0 version`, so listing one kind is a prefix scan.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{codec, entry::ResourceRecord, BlobStatus, Error, Hash, Lease, Result, Store};

/// Longest name or version accepted.
pub const MAX_NAME_LEN: usize = 255;

/// What a resource is. Serialized as its text form (`vm-image`,
/// `custom:NAME`...); a custom name must be 1 to [`MAX_NAME_LEN`] bytes
/// without NUL (checked wherever a kind enters the store).
///
/// ```
/// use blixard_store::ResourceKind;
///
/// let kind: ResourceKind = "vm-image".parse()?;
/// assert_eq!(kind, ResourceKind::VmImage);
/// let custom = ResourceKind::custom("firmware")?;
/// assert!(ResourceKind::custom("").is_err() && ResourceKind::custom("a\0b").is_err());
/// # Ok::<(), blixard_store::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ResourceKind {
    /// A VM disk image.
    VmImage,
    /// A cluster configuration.
    Configuration,
    /// Logs.
    Logs,
    /// Metrics.
    Metrics,
    /// Anything else, by name.
    Custom(String),
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceKind::VmImage => f.write_str("vm-image"),
            ResourceKind::Configuration => f.write_str("configuration"),
            ResourceKind::Logs => f.write_str("logs"),
            ResourceKind::Metrics => f.write_str("metrics"),
            ResourceKind::Custom(s) => write!(f, "custom:{s}"),
        }
    }
}

impl ResourceKind {
    /// A custom kind, checked: 1 to [`MAX_NAME_LEN`] bytes, no NUL.
    pub fn custom(name: impl Into<String>) -> Result<Self> {
        let kind = ResourceKind::Custom(name.into());
        kind.validate()?;
        Ok(kind)
    }

    /// Checks a custom kind's name (the built-in kinds are always valid).
    pub fn validate(&self) -> Result<()> {
        match self {
            ResourceKind::Custom(c) if c.is_empty() || c.len() > MAX_NAME_LEN || c.contains('\0') => {
                Err(Error::InvalidArgument(format!(
                    "custom resource kind must be 1 to {MAX_NAME_LEN} bytes without NUL: {c:?}"
                )))
            }
            _ => Ok(()),
        }
    }
}

impl From<ResourceKind> for String {
    fn from(k: ResourceKind) -> String {
        k.to_string()
    }
}

impl TryFrom<String> for ResourceKind {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl FromStr for ResourceKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "vm-image" | "vm" => ResourceKind::VmImage,
            "configuration" | "config" => ResourceKind::Configuration,
            "logs" => ResourceKind::Logs,
            "metrics" => ResourceKind::Metrics,
            other => match other.strip_prefix("custom:") {
                Some(c) => ResourceKind::custom(c)?,
                None => return Err(Error::InvalidArgument(format!("unknown resource kind {other:?}"))),
            },
        })
    }
}

/// A named resource and the blob it points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Kind.
    pub kind: ResourceKind,
    /// Name, e.g. `ubuntu-server`.
    pub name: String,
    /// Version, e.g. `22.04`.
    pub version: String,
    /// The blob.
    pub hash: Hash,
    /// Size in bytes.
    pub size: u64,
    /// When it was recorded, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

fn check(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > MAX_NAME_LEN || s.contains('\0') {
        return Err(Error::InvalidArgument(format!("{what} must be 1 to {MAX_NAME_LEN} bytes without NUL: {s:?}")));
    }
    Ok(())
}

/// Checks a resource's kind, name and version as [`Store::put_resource`]
/// would, without touching a store: for refusing a bad request up front.
pub fn validate_resource_key(kind: &ResourceKind, name: &str, version: &str) -> Result<()> {
    key(kind, name, version).map(drop)
}

fn key(kind: &ResourceKind, name: &str, version: &str) -> Result<Vec<u8>> {
    kind.validate()?;
    check("name", name)?;
    check("version", version)?;
    Ok(format!("{kind}\0{name}\0{version}").into_bytes())
}

fn parse(k: &[u8], v: &[u8]) -> Result<Resource> {
    let bad = || Error::CorruptRecord { what: "resource", reason: "malformed key".into() };
    let k = std::str::from_utf8(k).map_err(|_| bad())?;
    let mut parts = k.splitn(3, '\0');
    let (Some(kind), Some(name), Some(version)) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
    let r = codec::decode_resource(v)?;
    Ok(Resource {
        kind: kind.parse()?,
        name: name.into(),
        version: version.into(),
        hash: r.hash,
        size: r.size,
        created_unix_ms: r.created_unix_ms,
    })
}

impl Store {
    /// Records resource `(kind, name, version) → hash`; the blob must be
    /// complete. Replaces an earlier record of the same key.
    ///
    /// Blocking (database writes and fsync): from async code, call it in `spawn_blocking`.
    pub fn put_resource(&self, kind: &ResourceKind, name: &str, version: &str, hash: Hash) -> Result<Resource> {
        let k = key(kind, name, version)?;
        let size = match self.status(&hash)? {
            BlobStatus::Complete { size } => size,
            BlobStatus::Partial { .. } => return Err(Error::Incomplete(hash)),
            BlobStatus::Absent => return Err(Error::NotFound(hash)),
        };
        let created_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let rec = ResourceRecord { hash, size, created_unix_ms };
        let _roots = self.lock_roots();
        self.resources_tree().insert(k, codec::encode_resource(&rec)?)?;
        self.flush()?;
        Ok(Resource { kind: kind.clone(), name: name.into(), version: version.into(), hash, size, created_unix_ms })
    }

    /// [`Store::put_resource`] for a leased blob, releasing the lease after
    /// the resource is durable (GC cannot run in between).
    ///
    /// Blocking (database writes and fsync): from async code, call it in `spawn_blocking`.
    pub fn put_resource_and_release(
        &self,
        kind: &ResourceKind,
        name: &str,
        version: &str,
        lease: Lease,
    ) -> Result<Resource> {
        let r = self.put_resource(kind, name, version, lease.hash())?;
        drop(lease);
        Ok(r)
    }

    /// Looks up one resource.
    pub fn resource(&self, kind: &ResourceKind, name: &str, version: &str) -> Result<Option<Resource>> {
        let k = key(kind, name, version)?;
        match self.resources_tree().get(&k)? {
            Some(v) => parse(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Lists resources, of one kind or all.
    pub fn resources(&self, kind: Option<&ResourceKind>) -> Result<Vec<Resource>> {
        let prefix = kind.map(|k| format!("{k}\0").into_bytes()).unwrap_or_default();
        let mut out = Vec::new();
        for kv in self.resources_tree().scan_prefix(prefix) {
            let (k, v) = kv?;
            out.push(parse(&k, &v)?);
        }
        Ok(out)
    }

    /// Deletes a resource record (the blob goes at the next GC if nothing else
    /// reaches it); true if it existed.
    ///
    /// Blocking (database writes and fsync): from async code, call it in `spawn_blocking`.
    pub fn delete_resource(&self, kind: &ResourceKind, name: &str, version: &str) -> Result<bool> {
        let k = key(kind, name, version)?;
        let _roots = self.lock_roots();
        let existed = self.resources_tree().remove(k)?.is_some();
        self.flush()?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn custom_kinds_are_checked() {
        assert!(ResourceKind::custom("nixos-closure").is_ok());
        assert!(ResourceKind::custom("").is_err());
        assert!(ResourceKind::custom("a\0b").is_err());
        assert!(ResourceKind::custom("x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!("custom:".parse::<ResourceKind>().is_err());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let hash = store.import_bytes(vec![1u8; 10]).await.unwrap().hash;
        store.put_resource(&ResourceKind::VmImage, "n", "v", hash).unwrap();
        let bad = ResourceKind::Custom(String::new());
        assert!(store.put_resource(&bad, "n", "v", hash).is_err(), "an invalid kind never enters the store");
        assert_eq!(store.resources(None).unwrap().len(), 1, "listing still works");
        store.delete_resource(&ResourceKind::VmImage, "n", "v").unwrap();
        assert!(store.resources(None).unwrap().is_empty());
    }

    #[test]
    fn kinds_serialize_as_their_text() {
        let json = serde_json::to_string(&ResourceKind::custom("closure").unwrap()).unwrap();
        assert_eq!(json, "\"custom:closure\"");
        assert_eq!(serde_json::from_str::<ResourceKind>("\"vm-image\"").unwrap(), ResourceKind::VmImage);
        assert!(serde_json::from_str::<ResourceKind>("\"custom:\"").is_err());
    }
}
