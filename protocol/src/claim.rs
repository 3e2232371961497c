//! Resource claims: a publisher's signed statement that `(kind, name,
//! version)` names the blob `hash` of `size` bytes, made at `created`.
//! Content is trusted by its hash from anyone; names only by who claims
//! them, so every lookup and list record carries its publisher's signature.
//!
//! The signed message is the domain tag [`CLAIM_DOMAIN`] followed by the
//! record's fields in wire encoding, without the signature: `kind String,
//! name String, version String, hash [u8;32], size u64, created_unix_ms
//! u64, publisher [u8;32]` (`docs/PROTOCOL.md`, with a vector).

use blixard_store::Resource;
use serde::Serialize;

use crate::{wire::ResourceInfo, Error, Result, SecretKey};

/// Domain separation for claim signatures (never valid for anything else
/// a node key signs).
pub const CLAIM_DOMAIN: &[u8] = b"blixard resource claim v1\0";

#[derive(Serialize)]
struct Signed<'a> {
    kind: &'a str,
    name: &'a str,
    version: &'a str,
    hash: &'a [u8; 32],
    size: u64,
    created_unix_ms: u64,
    publisher: &'a [u8; 32],
}

impl ResourceInfo {
    /// The bytes the publisher signs.
    pub fn signed_message(&self) -> Vec<u8> {
        let fields = Signed {
            kind: &self.kind,
            name: &self.name,
            version: &self.version,
            hash: &self.hash,
            size: self.size,
            created_unix_ms: self.created_unix_ms,
            publisher: self.publisher.as_bytes(),
        };
        let mut out = CLAIM_DOMAIN.to_vec();
        out.extend(bincode::serde::encode_to_vec(&fields, crate::wire::config()).expect("claims always encode"));
        out
    }

    /// `resource` claimed and signed by `key`.
    pub fn sign(resource: &Resource, key: &SecretKey) -> Self {
        let mut claim = ResourceInfo {
            kind: resource.kind.to_string(),
            name: resource.name.clone(),
            version: resource.version.clone(),
            hash: resource.hash.0,
            size: resource.size,
            created_unix_ms: resource.created_unix_ms,
            publisher: key.node_id(),
            signature: [[0; 32]; 2],
        };
        let sig = key.sign(&claim.signed_message());
        claim.signature = [sig[..32].try_into().expect("32 bytes"), sig[32..].try_into().expect("32 bytes")];
        claim
    }

    /// Checks that this claim answers a lookup of exactly `(kind, name,
    /// version)`: a genuine claim for anything else, replayed by whoever
    /// answers, is [`Error::BadClaim`] (`docs/PROTOCOL.md` §3.2.1).
    pub fn check_answers(&self, kind: &str, name: &str, version: &str) -> Result<()> {
        if (self.kind.as_str(), self.name.as_str(), self.version.as_str()) == (kind, name, version) {
            return Ok(());
        }
        Err(Error::BadClaim(format!(
            "asked for {kind} {name} {version}, answered with {} {} {} claimed by {}",
            self.kind, self.name, self.version, self.publisher
        )))
    }

    /// Checks the claim: a size over [`blixard_store::MAX_BLOB_SIZE`] is
    /// [`Error::BadClaim`] naming the publisher (even a trusted publisher's
    /// signed claim is not acted on beyond what the protocol allows), and so
    /// is a forged or altered claim.
    pub fn verify(&self) -> Result<()> {
        if self.size > blixard_store::MAX_BLOB_SIZE {
            return Err(Error::BadClaim(format!(
                "{} {} {} claimed by {} is {} bytes, over the protocol's maximum of {}",
                self.kind,
                self.name,
                self.version,
                self.publisher,
                self.size,
                blixard_store::MAX_BLOB_SIZE
            )));
        }
        let sig: Vec<u8> = self.signature.concat();
        if self.publisher.verify(&self.signed_message(), &sig) {
            Ok(())
        } else {
            Err(Error::BadClaim(format!(
                "{} {} {} claimed by {}: the signature does not match",
                self.kind, self.name, self.version, self.publisher
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use blixard_store::{Hash, ResourceKind};

    use super::*;

    #[test]
    fn signed_claims_verify_and_altered_ones_do_not() {
        let key = SecretKey::from_seed(&[7; 32]);
        let r = Resource {
            kind: ResourceKind::VmImage,
            name: "ubuntu-server".into(),
            version: "22.04".into(),
            hash: Hash::of(b"image"),
            size: 5,
            created_unix_ms: 1,
        };
        let claim = ResourceInfo::sign(&r, &key);
        assert_eq!(claim.publisher, key.node_id());
        claim.verify().unwrap();
        let mut other = claim.clone();
        other.hash[0] ^= 1;
        assert!(matches!(other.verify(), Err(Error::BadClaim(_))));
        let mut stolen = claim.clone();
        stolen.publisher = SecretKey::from_seed(&[8; 32]).node_id();
        assert!(stolen.verify().is_err(), "a claim cannot be moved to another publisher");
        assert_eq!(Resource::try_from(claim).unwrap(), r);
    }
}
