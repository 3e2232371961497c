//! TLS 1.3 with node keys: a self-signed certificate made from the node's
//! Ed25519 key, and verifiers on both sides that accept a certificate only
//! for its key, checked against the expected [`NodeId`].
//!
//! There is no certificate authority: a node *is* its key. The client checks
//! the server's key against the id it dialled (or records it, trust on first
//! use); the server requires a client certificate and learns the client's id
//! from it, which an optional filter can refuse (allowlists). The handshake
//! signature proves possession of the key; certificate fields other than the
//! key are ignored.

use std::sync::{Arc, Mutex};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
};

use crate::{Error, NodeId, Result, SecretKey};

/// ALPN protocol id; it carries the protocol version.
pub const ALPN: &[u8] = b"blixard/2";
/// The relay's TLS ALPN (TCP), so a relay and a node port never mix up.
pub const RELAY_ALPN: &[u8] = b"blixard-relay/1";

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the
/// 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// Decides whether a client node may connect (for allowlists).
pub type ClientFilter = Arc<dyn Fn(&NodeId) -> bool + Send + Sync>;

/// The crypto provider: ring, TLS 1.3 suites only, AES-GCM first (hardware
/// accelerated on the machines we run on).
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite::*, default_provider};
    let mut p = default_provider();
    p.cipher_suites = vec![TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256];
    Arc::new(p)
}

/// The node id a certificate's key gives, if it is an Ed25519 key.
pub fn node_id_of(cert: &CertificateDer<'_>) -> std::result::Result<NodeId, rustls::Error> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert)?;
    let spki = parsed.subject_public_key_info();
    let spki: &[u8] = spki.as_ref();
    match spki.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(key) if key.len() == 32 => {
            let mut id = [0u8; 32];
            id.copy_from_slice(key);
            Ok(NodeId(id))
        }
        _ => Err(rustls::Error::General("the peer's certificate key is not Ed25519".into())),
    }
}

/// A self-signed certificate for `key`, and the key in rustls' form.
pub fn certificate(key: &SecretKey) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let der = PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec());
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
        .map_err(|e| Error::Tls(format!("key: {e}")))?;
    let params = rcgen::CertificateParams::new(vec!["blixard".to_string()])
        .map_err(|e| Error::Tls(format!("certificate: {e}")))?;
    let cert = params.self_signed(&pair).map_err(|e| Error::Tls(format!("certificate: {e}")))?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(der)))
}

/// The signature checks both verifiers share: TLS 1.3 with Ed25519 only
/// (the type needs an `algorithms: WebPkiSupportedAlgorithms` field).
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(&self, _: &[u8], _: &Der<'_>, _: &Dss) -> Verdict<HandshakeSignatureValid> {
            Err(rustls::Error::General("TLS 1.2 is not supported".into()))
        }

        fn verify_tls13_signature(&self, msg: &[u8], cert: &Der<'_>, dss: &Dss) -> Verdict<HandshakeSignatureValid> {
            rustls::crypto::verify_tls13_signature(msg, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
    };
}

type Der<'a> = CertificateDer<'a>;
type Dss = DigitallySignedStruct;
type Verdict<T> = std::result::Result<T, rustls::Error>;

/// Checks the server's key on the client side; records the key seen.
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    expected: Option<NodeId>,
    seen: Mutex<Option<NodeId>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerVerifier {
    pub(crate) fn new(expected: Option<NodeId>) -> Arc<Self> {
        Arc::new(ServerVerifier {
            expected,
            seen: Mutex::new(None),
            algorithms: provider().signature_verification_algorithms,
        })
    }

    /// The key the server presented, if the handshake got that far.
    pub(crate) fn seen(&self) -> Option<NodeId> {
        *self.seen.lock().unwrap()
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let id = node_id_of(end_entity)?;
        *self.seen.lock().unwrap() = Some(id);
        match self.expected {
            Some(expected) if expected != id => {
                Err(rustls::Error::General(format!("the server is node {id}, expected {expected}")))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    signature_checks!();
}

/// Requires and checks a client certificate on the server side.
pub(crate) struct ClientVerifier {
    filter: Option<ClientFilter>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientVerifier").field("filtered", &self.filter.is_some()).finish()
    }
}

impl ClientVerifier {
    pub(crate) fn new(filter: Option<ClientFilter>) -> Arc<Self> {
        Arc::new(ClientVerifier { filter, algorithms: provider().signature_verification_algorithms })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let id = node_id_of(end_entity)?;
        if let Some(filter) = &self.filter {
            if !filter(&id) {
                tracing::debug!(node = %id, "the client filter refused a connection");
                return Err(rustls::Error::General(format!("node {id} is not allowed")));
            }
        }
        Ok(ClientCertVerified::assertion())
    }

    signature_checks!();
}

/// The rustls client configuration for dialling a node.
pub(crate) fn client_config(key: &SecretKey, verifier: Arc<ServerVerifier>) -> Result<rustls::ClientConfig> {
    let (cert, private) = certificate(key)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert], private)
        .map_err(|e| Error::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// The rustls server configuration of a node.
pub(crate) fn server_config(key: &SecretKey, filter: Option<ClientFilter>) -> Result<rustls::ServerConfig> {
    let (cert, private) = certificate(key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(ClientVerifier::new(filter))
        .with_single_cert(vec![cert], private)
        .map_err(|e| Error::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

/// The relay's TLS configuration (TCP): the same certificates and client
/// check as QUIC, its own ALPN, so a relay and a node port never mix up.
pub(crate) fn relay_server_config(key: &SecretKey) -> Result<rustls::ServerConfig> {
    let mut cfg = server_config(key, None)?;
    cfg.alpn_protocols = vec![RELAY_ALPN.to_vec()];
    Ok(cfg)
}

/// A relay client's TLS configuration, pinning the relay's id.
pub(crate) fn relay_client_config(key: &SecretKey, relay: NodeId) -> Result<rustls::ClientConfig> {
    let mut cfg = client_config(key, ServerVerifier::new(Some(relay)))?;
    cfg.alpn_protocols = vec![RELAY_ALPN.to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_node_key() {
        let key = SecretKey::generate();
        let (cert, _) = certificate(&key).unwrap();
        assert_eq!(node_id_of(&cert).unwrap(), key.node_id());
    }
}
