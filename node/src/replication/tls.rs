//! Certificates and TLS configuration for replication: a head office holds its
//! enterprise's CA; every node's certificate binds its Ed25519 node key (the key that
//! signs its events) and is issued by that CA at enrolment. Both sides of a connection
//! present certificates (mutual TLS, TLS 1.3 only, ring only); a certificate from any
//! other CA is refused in the handshake.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Name the head office's certificate carries and stations connect to.
pub const HEAD_OFFICE_NAME: &str = "head-office";
/// ALPN of the replication protocol.
pub const ALPN: &[u8] = b"cylinder-sync/1";

/// PKCS#8 (v1) encoding of an Ed25519 secret seed.
pub fn pkcs8_ed25519(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend_from_slice(seed);
    der
}

/// An Ed25519 public key as rcgen needs it to issue a certificate for it.
struct Ed25519Public([u8; 32]);

impl rcgen::PublicKeyData for Ed25519Public {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

fn key_pair(seed: &[u8; 32]) -> Result<KeyPair, String> {
    KeyPair::try_from(pkcs8_ed25519(seed).as_slice()).map_err(|e| format!("key: {e}"))
}

fn ca_params(enterprise: &str) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, format!("cylinder CA {enterprise}"));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

/// The self-signed CA certificate of an enterprise, from the CA's seed.
pub fn ca_certificate(ca_seed: &[u8; 32], enterprise: &str) -> Result<Vec<u8>, String> {
    let cert = ca_params(enterprise)?.self_signed(&key_pair(ca_seed)?).map_err(|e| e.to_string())?;
    Ok(cert.der().to_vec())
}

/// A node certificate for `node_key` named `name`, issued by the enterprise CA.
pub fn issue(ca_seed: &[u8; 32], enterprise: &str, node_key: &[u8; 32], name: &str) -> Result<Vec<u8>, String> {
    let issuer = Issuer::new(ca_params(enterprise)?, key_pair(ca_seed)?);
    let mut p = CertificateParams::new(vec![name.to_owned()]).map_err(|e| e.to_string())?;
    p.distinguished_name.push(DnType::CommonName, name.to_owned());
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&Ed25519Public(*node_key), &issuer).map_err(|e| e.to_string())?;
    Ok(cert.der().to_vec())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_der: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec())).map_err(|e| format!("CA certificate: {e}"))?;
    Ok(roots)
}

fn private_key(seed: &[u8; 32]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8_ed25519(seed)))
}

/// The QUIC server side of a head office: requires client certificates from its CA.
pub fn server_config(ca_der: &[u8], cert_der: &[u8], node_seed: &[u8; 32]) -> Result<quinn::ServerConfig, String> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_der)?), provider())
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(cert_der.to_vec())], private_key(node_seed))
        .map_err(|e| format!("server certificate: {e}"))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport(HEAD_OFFICE_WINDOW));
    Ok(config)
}

/// The head office's QUIC endpoint. Its stateless-reset key is derived from the node key,
/// so after a restart it can tell stations that their old connection is gone (a reset
/// they can verify) instead of leaving them to wait for the idle timeout. The key derives
/// from the node key (which never leaves the node), so no one else can forge a reset.
pub fn server_endpoint(
    config: quinn::ServerConfig,
    addr: std::net::SocketAddr,
    node_seed: &[u8; 32],
) -> std::io::Result<quinn::Endpoint> {
    use sha2::Digest;
    let secret =
        sha2::Sha256::new().chain_update(b"cylinder-sync stateless reset v1").chain_update(node_seed).finalize();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(key));
    endpoint_config.cid_generator(|| Box::new(RandomCids));
    let socket = std::net::UdpSocket::bind(addr)?;
    let runtime = quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime"))?;
    quinn::Endpoint::new(endpoint_config, Some(config), socket, runtime)
}

/// Random 8-byte connection ids. quinn's default generator checks ids against a key made
/// at start-up, so a restarted head office would drop the packets of its old connections
/// as invalid instead of answering them with a stateless reset; these ids are not checked.
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut cid = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut cid);
        quinn::ConnectionId::new(&cid)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Bytes a station or laptop lets its head office send ahead of what it has read: room
/// for several item frames in flight, so the head office keeps reading and sending while
/// the node commits (quinn's defaults allow about one).
const NODE_WINDOW: u32 = 8 << 20;

/// The same for each node a head office serves. What is received and not yet read is
/// held in memory, per connection: with twenty stations uploading at once and 8 MiB each,
/// up to 160 MiB of a head office's RSS could wait in quinn's buffers for its writer
/// (56 MiB at the peak of `net_bench --stations 20 --cylinders 5000`, heaptrack). The
/// frames a head office decodes ahead are bounded over all its sessions anyway
/// (`replication::DECODED_MAX`), so a window of two item frames keeps each upload going.
const HEAD_OFFICE_WINDOW: u32 = 4 << 20;

/// A peer that stays silent for 5 s is gone (keep-alives every second keep a quiet link
/// open), so a station notices a dead head office, and a healed link is used, within
/// seconds instead of quinn's default 30 s. `window`: bytes the peer may send ahead of
/// what this side has read, on the stream and on the connection.
fn transport(window: u32) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(5_000))));
    t.keep_alive_interval(Some(std::time::Duration::from_secs(1)));
    t.stream_receive_window(quinn::VarInt::from_u32(window));
    t.receive_window(quinn::VarInt::from_u32(window));
    t.send_window(16 << 20);
    Arc::new(t)
}

/// The QUIC client side of a station: trusts only its CA, presents its own certificate.
pub fn client_config(ca_der: &[u8], cert_der: &[u8], node_seed: &[u8; 32]) -> Result<quinn::ClientConfig, String> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca_der)?)
        .with_client_auth_cert(vec![CertificateDer::from(cert_der.to_vec())], private_key(node_seed))
        .map_err(|e| format!("client certificate: {e}"))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport(NODE_WINDOW));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_issue_and_configs_build() {
        let ca = ca_certificate(&[1; 32], "3701020001").unwrap();
        let node_seed = [2u8; 32];
        let node_pub = ed25519_dalek::SigningKey::from_bytes(&node_seed).verifying_key().to_bytes();
        let cert = issue(&[1; 32], "3701020001", &node_pub, HEAD_OFFICE_NAME).unwrap();
        server_config(&ca, &cert, &node_seed).unwrap();
        client_config(&ca, &cert, &node_seed).unwrap();
        // The certificate carries the node key: a different seed does not match it.
        assert!(server_config(&ca, &cert, &[3; 32]).is_err());
    }
}
