//! Enrolment: a head office holds its enterprise's CA and issues each station (or
//! regulator laptop) a certificate for the station's own node key, in exchange for a
//! one-time code. The code is `<secret>-<CA fingerprint>`: the secret proves the station
//! to the head office, the fingerprint proves the head office (its CA) to the station,
//! so the exchange needs no other trust.

use anyhow::{Context, bail};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use schema::archive::DocId;
use schema::records::NodeRecord;

use crate::auth::{hex, unhex};
use crate::replication::tls;
use crate::store::{Store, StoreError};

const CA_SEED: &str = "ca_seed";
/// The enterprise CA certificate (DER), on every enrolled node.
pub const CA_CERT: &str = "ca_cert";
/// This node's certificate (DER), once issued.
pub const CERT: &str = "cert";

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

/// Head office: consumes a one-time code and issues the certificate.
pub async fn redeem(store: &Store, req: EnrolRequest) -> Result<EnrolResponse, RedeemError> {
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
    let name = entry.name;
    let cert = tls::issue(&ca_seed, &enterprise, &node_key, &name).map_err(RedeemError::Certificate)?;
    tracing::info!(name = %name, node = %req.node_key, "node enrolled");
    Ok(EnrolResponse { name, enterprise, certificate: hex(&cert), ca_certificate: hex(&ca_cert) })
}

/// Station: asks the head office at `url` (its HTTP address) for a certificate.
pub fn enrol(store: &Store, url: &str, code: &str) -> anyhow::Result<EnrolResponse> {
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
    if answer.enterprise != store.enterprise() {
        bail!("the head office is of enterprise {}, this node of {}", answer.enterprise, store.enterprise());
    }
    // The certificate must carry this node's key: building the TLS config checks it.
    tls::client_config(&ca, &cert, &store.node_seed()?).map_err(anyhow::Error::msg)?;
    store.write_blocking(move |ctx| {
        ctx.set_meta(CA_CERT, &ca)?;
        ctx.set_meta(CERT, &cert)
    })?;
    Ok(answer)
}
