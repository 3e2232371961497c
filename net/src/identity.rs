//! Node identities: an Ed25519 key per node, kept in the data dir, whose
//! public half is the [`NodeId`] peers know it by.
//!
//! The text form of a node id is its 32 bytes as 64 lowercase hex
//! characters. How to reach a node is `addr`'s.

use std::{
    fmt,
    fs::{self, OpenOptions},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
    str::FromStr,
};

use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::{Error, Result};

/// A node's identity: its Ed25519 public key. Serialized as its hex text in
/// human-readable formats (JSON, TOML), as its 32 bytes on the wire.
///
/// ```
/// let key = blixard_net::SecretKey::generate();
/// let id: blixard_net::NodeId = key.node_id().to_string().parse()?;
/// assert_eq!(id, key.node_id());
/// # Ok::<(), blixard_net::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 32]);

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_string())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(NodeId)
        }
    }
}

impl NodeId {
    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Checks an Ed25519 signature by this node.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.0).verify(message, signature).is_ok()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", &hex::encode(&self.0[..5]))
    }
}

impl FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut out = [0u8; 32];
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Error::InvalidNodeId(s.into()));
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| Error::InvalidNodeId(s.into()))?;
        Ok(NodeId(out))
    }
}

/// A node's Ed25519 secret key (PKCS#8 v2), with its public [`NodeId`].
///
/// ```
/// use blixard_net::SecretKey;
///
/// let key = SecretKey::generate();
/// let same = SecretKey::from_seed(&[7; 32]);
/// assert_eq!(same.node_id(), SecretKey::from_seed(&[7; 32]).node_id());
/// let signature = key.sign(b"hello");
/// assert!(key.node_id().verify(b"hello", &signature));
/// ```
pub struct SecretKey {
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({:?})", self.node_id())
    }
}

/// The key file's name inside a data dir.
pub const KEY_FILE: &str = "node.key";

impl SecretKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system RNG works");
        Self::from_pkcs8(doc.as_ref()).expect("ring parses its own key")
    }

    /// The key made from a 32-byte Ed25519 seed (RFC 8032): the same seed
    /// is always the same node, which makes test vectors reproducible.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        // PKCS#8 v1 for Ed25519 (RFC 8410): a fixed prefix, then the seed.
        let mut der = hex::decode("302e020100300506032b657004220420").expect("valid hex");
        der.extend_from_slice(seed);
        Self::from_pkcs8(&der).expect("a seed is always a valid key")
    }

    /// Parses a PKCS#8 Ed25519 key.
    pub fn from_pkcs8(der: &[u8]) -> std::result::Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| format!("not an Ed25519 key: {e}"))?;
        Ok(SecretKey { pkcs8: der.to_vec(), pair })
    }

    /// The PKCS#8 DER bytes.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public identity.
    pub fn node_id(&self) -> NodeId {
        let mut id = [0u8; 32];
        id.copy_from_slice(self.pair.public_key().as_ref());
        NodeId(id)
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }

    /// Loads the key from `dir/node.key`, creating it (mode 0600, written
    /// through a temp file and renamed) on first start. A key file that group
    /// or others may read is refused, as ssh refuses one.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let path = dir.join(KEY_FILE);
        let err = |reason: String| Error::Identity { path: path.clone(), reason };
        match fs::read_to_string(&path) {
            Ok(text) => {
                let mode = fs::metadata(&path).map_err(|e| err(e.to_string()))?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(err(format!(
                        "permissions {:o} are too open; the key must be private to its owner (chmod 600)",
                        mode & 0o777
                    )));
                }
                let der = pem_decode(&text).ok_or_else(|| err("not a PEM private key".to_string()))?;
                SecretKey::from_pkcs8(&der).map_err(err)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(|e| err(format!("cannot create the data dir: {e}")))?;
                let key = SecretKey::generate();
                let tmp = dir.join(format!("{KEY_FILE}.tmp"));
                let _ = fs::remove_file(&tmp);
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(|e| err(format!("cannot create: {e}")))?;
                f.write_all(pem_encode(&key.pkcs8).as_bytes())
                    .and_then(|_| f.sync_all())
                    .and_then(|_| fs::rename(&tmp, &path))
                    .map_err(|e| err(format!("cannot write: {e}")))?;
                tracing::info!(node_id = %key.node_id(), path = %path.display(), "created a new node identity");
                Ok(key)
            }
            Err(e) => Err(err(e.to_string())),
        }
    }
}

fn pem_encode(der: &[u8]) -> String {
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(der.to_vec());
    rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
        .expect("rcgen takes the Ed25519 key ring made")
        .serialize_pem()
}

fn pem_decode(text: &str) -> Option<Vec<u8>> {
    rcgen::KeyPair::from_pem(text).ok().map(|k| k.serialize_der())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_text_round_trip() {
        let id = SecretKey::generate().node_id();
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<NodeId>().unwrap(), id);
        assert!("abc".parse::<NodeId>().is_err());
        assert!(s.to_uppercase().parse::<NodeId>().is_err());
    }

    #[test]
    fn key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretKey::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = SecretKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        let sig = a.sign(b"hello");
        assert!(a.node_id().verify(b"hello", &sig));
        assert!(!a.node_id().verify(b"hellO", &sig));
        fs::set_permissions(dir.path().join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        let e = SecretKey::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(e.contains("too open"), "{e}");
    }
}
