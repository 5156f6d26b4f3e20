//! A typed, blocking client of the handheld API (used by the `handheld` CLI, tests and
//! benchmarks).

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::*;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an error body.
    #[error("{status} {}: {} / {}", body.code, body.message_zh, body.message_en)]
    Api { status: u16, body: ErrorBody },
    #[error("cannot reach the node: {0}")]
    Transport(String),
    #[error("unexpected response from the node: {0}")]
    Decode(String),
}

impl ClientError {
    /// The API error body, if the node sent one.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            ClientError::Api { body, .. } => Some(body),
            _ => None,
        }
    }
}

/// A client bound to one node.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// `base` is like `http://192.168.1.10:8080`.
    pub fn new(base: &str) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)))
            .build()
            .into();
        Client { base: base.trim_end_matches('/').to_owned(), token: None, agent }
    }

    pub fn with_token(mut self, token: &str) -> Client {
        self.token = Some(token.to_owned());
        self
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{PREFIX}{path}", self.base)
    }

    fn finish<T: DeserializeOwned>(
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut resp = resp.map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(|e| ClientError::Transport(e.to_string()))?;
        if (200..300).contains(&status) {
            serde_json::from_str(&text).map_err(|e| ClientError::Decode(format!("{e}: {text}")))
        } else {
            let body: ErrorBody = serde_json::from_str(&text)
                .map_err(|e| ClientError::Decode(format!("status {status}, {e}: {text}")))?;
            Err(ClientError::Api { status, body })
        }
    }

    fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T, ClientError> {
        let mut req = self.agent.get(self.url(path));
        for (k, v) in query {
            req = req.query(*k, v);
        }
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        Self::finish(req.call())
    }

    fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let mut req = self.agent.post(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        Self::finish(req.send_json(body))
    }

    /// Logs in and keeps the token for later calls.
    pub fn login(&mut self, account: &str, password: &str) -> Result<LoginResponse, ClientError> {
        let resp: LoginResponse =
            self.post("/session", &LoginRequest { account: account.into(), password: password.into() })?;
        self.token = Some(resp.token.clone());
        Ok(resp)
    }

    pub fn health(&self) -> Result<Health, ClientError> {
        let resp = self.agent.get(format!("{}/healthz", self.base)).call();
        Self::finish(resp)
    }

    pub fn cylinder(&self, code: &str) -> Result<CylinderDetail, ClientError> {
        self.get(&format!("/cylinders/{}", encode(code)), &[])
    }

    pub fn cylinders(&self, q: &ListQuery) -> Result<Page<CylinderSummary>, ClientError> {
        let mut query = Vec::new();
        let fields = [
            ("code", &q.code),
            ("tag", &q.tag),
            ("serial", &q.serial),
            ("status", &q.status),
            ("place", &q.place),
            ("medium", &q.medium),
            ("enterprise", &q.enterprise),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                query.push((k, v.clone()));
            }
        }
        if let Some(p) = q.page {
            query.push(("page", p.to_string()));
        }
        if let Some(p) = q.page_size {
            query.push(("page_size", p.to_string()));
        }
        self.get("/cylinders", &query)
    }

    pub fn anomalies(&self, q: &AnomalyQuery) -> Result<Page<AnomalyView>, ClientError> {
        let mut query = Vec::new();
        for (k, v) in [("kind", &q.kind), ("cylinder", &q.cylinder), ("enterprise", &q.enterprise)] {
            if let Some(v) = v {
                query.push((k, v.clone()));
            }
        }
        for (k, v) in [("page", q.page), ("page_size", q.page_size)] {
            if let Some(v) = v {
                query.push((k, v.to_string()));
            }
        }
        self.get("/anomalies", &query)
    }

    pub fn peers(&self) -> Result<Vec<PeerView>, ClientError> {
        self.get("/peers", &[])
    }

    pub fn events(&self, code: &str) -> Result<Vec<EventView>, ClientError> {
        self.get(&format!("/cylinders/{}/events", encode(code)), &[])
    }

    pub fn fill_check(
        &self,
        code: &str,
        medium: Option<&str>,
        filled_mass_kg: Option<f64>,
    ) -> Result<FillCheckResponse, ClientError> {
        self.post(
            &format!("/cylinders/{}/fill-check", encode(code)),
            &FillCheckRequest { medium: medium.map(str::to_owned), filled_mass_kg },
        )
    }

    pub fn operation(&self, req: &OperationRequest) -> Result<OperationResponse, ClientError> {
        self.post("/operations", req)
    }

    pub fn register(&self, archive: &Archive) -> Result<RegisterResponse, ClientError> {
        self.post("/cylinders", archive)
    }
}

/// Percent-encodes a path segment (QR URLs contain `/`, `?`, `=`).
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A new operation id: UUIDv7, so ids sort by creation time.
pub fn new_op_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
