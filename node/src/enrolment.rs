//! Enrolment: a head office holds its enterprise's CA and issues each station (or
//! regulator laptop) a certificate for the station's own node key, in exchange for a
//! one-time code. The code is `<secret>-<CA fingerprint>`: the secret proves the station
//! to the head office, the fingerprint proves the head office (its CA) to the station,
//! so the exchange needs no other trust.
//!
//! A regulator's laptop may enrol with the head office of every enterprise in its
//! region: the certificate of its own enterprise (`enterprise` in its config) goes into
//! its store; another enterprise's goes into a store of that enterprise's own under
//! `enterprises/<code>/` in the data directory, with the same node key. Each enrolment
//! also remembers the head office's QUIC address, so `node run` needs no `--upstream`.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{Context, bail};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use schema::archive::DocId;
use schema::codes::{EnterpriseCode, RegionCode};
use schema::records::NodeRecord;

use crate::auth::{hex, unhex};
use crate::replication::tls;
use crate::store::{Store, StoreError};

const CA_SEED: &str = "ca_seed";
/// The enterprise CA certificate (DER), on every enrolled node.
pub const CA_CERT: &str = "ca_cert";
/// This node's certificate (DER), once issued.
pub const CERT: &str = "cert";
/// The head office's QUIC address (`ip:port`), learnt at enrolment.
pub const UPSTREAM: &str = "upstream";
/// Set when a station is enrolled, until its first checkpoints with the head office are
/// saved: the head office holds nothing of it yet, so its first round pushes its whole
/// log (see `replication::load_checkpoints`).
pub const FIRST_PUSH: &str = "first_push";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrolRequest {
    pub code: String,
    /// Hex Ed25519 public key of the enrolling node.
    pub node_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrolResponse {
    pub name: String,
    pub enterprise: String,
    /// Hex DER.
    pub certificate: String,
    /// Hex DER.
    pub ca_certificate: String,
    /// `station` or `regulator`: what the head office enrolled the node as.
    #[serde(default = "station")]
    pub role: String,
    /// The port the head office accepts replication on (its host is the one enrolled with).
    #[serde(default)]
    pub quic_port: Option<u16>,
}

fn station() -> String {
    "station".to_owned()
}

/// First 8 bytes of the CA certificate's SHA-256, hex.
pub fn ca_fingerprint(ca_der: &[u8]) -> String {
    hex(&Sha256::digest(ca_der)[..8])
}

/// Makes this node a head office: creates the enterprise CA and its own certificate
/// (named `head-office`) unless they exist. Returns the CA certificate.
pub fn ensure_head_office(store: &Store) -> anyhow::Result<Vec<u8>> {
    if let Some(ca) = store.meta(CA_CERT)?
        && store.meta(CA_SEED)?.is_some()
        && store.meta(CERT)?.is_some()
    {
        return Ok(ca);
    }
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let enterprise = store.enterprise().to_owned();
    let ca = tls::ca_certificate(&seed, &enterprise).map_err(anyhow::Error::msg)?;
    let own = ed25519_dalek::SigningKey::from_bytes(&store.node_seed()?).verifying_key().to_bytes();
    let cert = tls::issue(&seed, &enterprise, &own, tls::HEAD_OFFICE_NAME).map_err(anyhow::Error::msg)?;
    let ca_out = ca.clone();
    let record =
        NodeRecord { key: hex(&own), name: tls::HEAD_OFFICE_NAME.into(), role: "head-office".into(), enterprise };
    store.write_blocking(move |ctx| {
        ctx.set_meta(CA_SEED, &seed)?;
        ctx.set_meta(CA_CERT, &ca)?;
        ctx.set_meta(CERT, &cert)?;
        ctx.put_record(&DocId::record("node", &record.key), &record)
    })?;
    Ok(ca_out)
}

/// A new one-time code for a node called `name` with `role` (`station` or `regulator`).
pub fn create_code(store: &Store, name: &str, role: &str) -> anyhow::Result<String> {
    if !matches!(role, "station" | "regulator") {
        bail!("the role must be station or regulator");
    }
    if name.trim().is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!("the name must be 1-64 letters, digits, - or _");
    }
    let ca = ensure_head_office(store)?;
    let mut secret = [0u8; 16];
    rand::rng().fill_bytes(&mut secret);
    let secret = hex(&secret);
    let key = format!("enrol:{secret}");
    let value = format!("{role}:{name}");
    store.write_blocking(move |ctx| ctx.set_meta(&key, value.as_bytes()))?;
    Ok(format!("{secret}-{}", ca_fingerprint(&ca)))
}

/// Why a code was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error("this node is not a head office")]
    NotHeadOffice,
    #[error("unknown or already used enrolment code")]
    BadCode,
    #[error("node key must be 64 hex digits")]
    BadKey,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("certificate: {0}")]
    Certificate(String),
}

/// Head office: consumes a one-time code and issues the certificate. `quic_port` is where
/// it accepts replication.
pub async fn redeem(store: &Store, req: EnrolRequest, quic_port: Option<u16>) -> Result<EnrolResponse, RedeemError> {
    let (Some(ca_seed), Some(ca_cert)) = (store.meta(CA_SEED)?, store.meta(CA_CERT)?) else {
        return Err(RedeemError::NotHeadOffice);
    };
    let ca_seed: [u8; 32] = ca_seed.as_slice().try_into().map_err(|_| RedeemError::NotHeadOffice)?;
    let node_key: [u8; 32] = unhex(&req.node_key).and_then(|k| k.try_into().ok()).ok_or(RedeemError::BadKey)?;
    let secret = req.code.split('-').next().unwrap_or_default().to_owned();
    if secret.len() != 32 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RedeemError::BadCode);
    }
    let key = format!("enrol:{secret}");
    let enterprise = store.enterprise().to_owned();
    // Consume the code and register the node in one transaction: the registry record
    // replicates, so every node can check who signed what.
    let (enterprise_for_job, node_hex) = (enterprise.clone(), req.node_key.to_ascii_lowercase());
    let entry = store
        .write(move |ctx| {
            let Some(entry) = ctx.take_meta(&key)? else { return Ok(None) };
            let entry = String::from_utf8_lossy(&entry).into_owned();
            let (role, name) = entry.split_once(':').unwrap_or(("station", entry.as_str()));
            let record = NodeRecord {
                key: node_hex.clone(),
                name: name.to_owned(),
                role: role.to_owned(),
                enterprise: enterprise_for_job,
            };
            ctx.put_record(&DocId::record("node", &node_hex), &record)?;
            Ok(Some(record))
        })
        .await?
        .ok_or(RedeemError::BadCode)?;
    let (name, role) = (entry.name, entry.role);
    let cert = tls::issue(&ca_seed, &enterprise, &node_key, &name).map_err(RedeemError::Certificate)?;
    tracing::info!(name = %name, role = %role, node = %req.node_key, "node enrolled");
    Ok(EnrolResponse { name, enterprise, certificate: hex(&cert), ca_certificate: hex(&ca_cert), role, quic_port })
}

/// A certificate a head office granted, checked but not yet saved.
#[derive(Debug)]
pub struct Granted {
    pub answer: EnrolResponse,
    ca: Vec<u8>,
    cert: Vec<u8>,
    /// The head office's QUIC address, if it said its port.
    pub upstream: Option<SocketAddr>,
}

/// Asks the head office at `url` (its HTTP address) for a certificate for this node's
/// key, and checks the answer: the CA must be the one the code names, the certificate
/// must carry this node's key.
pub fn request(store: &Store, url: &str, code: &str) -> anyhow::Result<Granted> {
    let (_, fingerprint) = code.split_once('-').context("the code looks like <secret>-<fingerprint>")?;
    let req = EnrolRequest { code: code.to_owned(), node_key: store.node_id().to_string() };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let mut resp = agent
        .post(format!("{}/api/v1/enrol", url.trim_end_matches('/')))
        .send_json(&req)
        .with_context(|| format!("reaching the head office at {url}"))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().context("reading the answer")?;
    if status != 200 {
        bail!("the head office refused the code ({status}): {text}");
    }
    let answer: EnrolResponse = serde_json::from_str(&text).context("the head office's answer does not parse")?;
    let ca = unhex(&answer.ca_certificate).context("CA certificate is not hex")?;
    let cert = unhex(&answer.certificate).context("certificate is not hex")?;
    if ca_fingerprint(&ca) != fingerprint {
        bail!("the head office's CA does not match the code: refusing it");
    }
    // The certificate must carry this node's key: building the TLS config checks it.
    tls::client_config(&ca, &cert, &store.node_seed()?).map_err(anyhow::Error::msg)?;
    let upstream = answer.quic_port.and_then(|port| quic_address(url, port));
    Ok(Granted { answer, ca, cert, upstream })
}

/// The head office's QUIC address: the host of its HTTP address `url` with `port`.
fn quic_address(url: &str, port: u16) -> Option<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (host, port).to_socket_addrs().ok()?.next()
}

/// Where a granted certificate belongs on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The node's own store: its enterprise's head office enrolled it.
    Own,
    /// A regulator's laptop enrolled by another enterprise of its region.
    Other(EnterpriseCode),
}

/// Decides where a certificate of `answer` goes on a node of `enterprise` in `region`.
pub fn target(enterprise: &str, region: RegionCode, answer: &EnrolResponse) -> anyhow::Result<Target> {
    if answer.enterprise == enterprise {
        return Ok(Target::Own);
    }
    if answer.role != "regulator" {
        bail!("the head office is of enterprise {}, this node of {enterprise}", answer.enterprise);
    }
    let other: EnterpriseCode =
        answer.enterprise.parse().with_context(|| format!("the head office's enterprise {:?}", answer.enterprise))?;
    if !region.contains(other.region()) {
        bail!(
            "enterprise {other} is outside this regulator's region {region} (企业不在本监管辖区), not enrolled; \
             ask its head office to withdraw the code"
        );
    }
    Ok(Target::Other(other))
}

/// Saves a granted certificate, and the head office's QUIC address (`upstream` if given,
/// else the one it said), into `store`.
pub fn save(store: &Store, granted: Granted, upstream: Option<SocketAddr>) -> anyhow::Result<()> {
    let Granted { ca, cert, upstream: said, answer } = granted;
    let upstream = upstream.or(said).map(|a| a.to_string());
    let station = answer.role == "station";
    store.write_blocking(move |ctx| {
        ctx.set_meta(CA_CERT, &ca)?;
        ctx.set_meta(CERT, &cert)?;
        if let Some(u) = &upstream {
            ctx.set_meta(UPSTREAM, u.as_bytes())?;
        }
        if station {
            ctx.set_meta(FIRST_PUSH, b"1")?;
        }
        Ok(())
    })?;
    Ok(())
}

/// The head office's QUIC address saved at enrolment, if any.
pub fn saved_upstream(store: &Store) -> anyhow::Result<Option<SocketAddr>> {
    let Some(bytes) = store.meta(UPSTREAM)? else { return Ok(None) };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    text.parse().map(Some).with_context(|| format!("saved upstream {text:?} is not ip:port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(enterprise: &str, role: &str) -> EnrolResponse {
        EnrolResponse {
            name: "regulator-1".into(),
            enterprise: enterprise.into(),
            certificate: String::new(),
            ca_certificate: String::new(),
            role: role.into(),
            quic_port: Some(7443),
        }
    }

    #[test]
    fn a_certificate_goes_to_the_store_of_its_enterprise_within_the_region() {
        let city: RegionCode = "370100".parse().unwrap();
        assert_eq!(target("3701020001", city, &answer("3701020001", "station")).unwrap(), Target::Own);
        assert_eq!(
            target("3701020001", city, &answer("3701120001", "regulator")).unwrap(),
            Target::Other("3701120001".parse().unwrap())
        );
        let outside = target("3701020001", city, &answer("3702020001", "regulator")).unwrap_err();
        assert!(outside.to_string().contains("outside this regulator's region 370100"), "{outside}");
        // Only a regulator holds other enterprises' data.
        let station = target("3701020001", city, &answer("3701120001", "station")).unwrap_err();
        assert!(station.to_string().contains("the head office is of enterprise 3701120001"), "{station}");
    }

    #[test]
    fn the_quic_address_is_the_http_host_with_the_port_the_head_office_said() {
        assert_eq!(quic_address("http://127.0.0.1:8080", 7443), Some("127.0.0.1:7443".parse().unwrap()));
        assert_eq!(quic_address("http://127.0.0.1:8080/", 9), Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(quic_address("http://[::1]:8080", 7443), Some("[::1]:7443".parse().unwrap()));
        assert_eq!(quic_address("10.0.0.2", 7443), Some("10.0.0.2:7443".parse().unwrap()));
    }

    /// A station's first round with its head office pushes its whole log; a regulator's
    /// laptop, which meets several offices, walks.
    #[test]
    fn only_an_enrolled_station_is_marked_for_a_first_push() {
        for (role, marked) in [("station", true), ("regulator", false)] {
            let store =
                Store::in_memory(std::sync::Arc::new(crate::clock::ManualClock::at(1_795_579_200_000))).unwrap();
            let granted = Granted { answer: answer("3701020001", role), ca: vec![1], cert: vec![2], upstream: None };
            save(&store, granted, None).unwrap();
            assert_eq!(store.meta(FIRST_PUSH).unwrap().is_some(), marked, "{role}");
            assert_eq!(store.meta(CERT).unwrap(), Some(vec![2]));
        }
    }

    #[test]
    fn an_older_head_offices_answer_still_parses() {
        let old = r#"{"name":"s1","enterprise":"3701020001","certificate":"00","ca_certificate":"00"}"#;
        let a: EnrolResponse = serde_json::from_str(old).unwrap();
        assert_eq!((a.role.as_str(), a.quic_port), ("station", None));
    }
}
