//! Request and response bodies of the handheld HTTP API, version 1.

use serde::{Deserialize, Serialize};

/// API version advertised over mDNS and in `/healthz`.
pub const API_VERSION: &str = "1";
/// mDNS service type the node advertises.
pub const SERVICE_TYPE: &str = "_cylinder-node._tcp.local.";
/// Path prefix of every API route.
pub const PREFIX: &str = "/api/v1";

/// Every error response: a stable code and a message in Chinese and English.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message_zh: String,
    pub message_en: String,
    /// For refused fills: every failing rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
}

/// One failing safety rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub rule: String,
    pub message_zh: String,
    pub message_en: String,
    pub regulation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginRequest {
    pub account: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    /// The first role; `roles` lists all of them.
    pub role: String,
    pub roles: Vec<String>,
    pub name: String,
    pub enterprise: String,
    pub station: String,
    /// RFC 3339 UTC.
    pub expires_at: String,
}

/// A cylinder in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CylinderSummary {
    /// 16-digit code.
    pub code: String,
    /// 10-digit code printed as a barcode.
    pub code10: String,
    pub variety: String,
    pub variety_zh: String,
    pub medium: String,
    pub medium_zh: String,
    pub serial: String,
    pub owner: String,
    pub status: String,
    pub status_zh: String,
    pub place: Option<String>,
    pub full: Option<bool>,
    pub fill_count: u32,
    pub next_inspection: String,
    pub scrapped: bool,
    pub held: bool,
}

/// The archive record as the handheld sees it (and sends it when registering).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Archive {
    pub code: String,
    pub variety: String,
    pub medium: String,
    pub serial: String,
    pub maker: String,
    /// YYYY-MM-DD.
    pub manufactured: String,
    pub standard: String,
    pub nominal_pressure_mpa: f64,
    pub water_volume_l: f64,
    pub tare_kg: Option<f64>,
    pub rated_max_fill_kg: Option<f64>,
    pub design_life_years: Option<u32>,
    pub last_inspection: Option<String>,
    pub next_inspection: Option<String>,
    pub owner: String,
    pub property: String,
    pub customer: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Derived state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub status: String,
    pub status_zh: String,
    pub place: Option<String>,
    pub full: Option<bool>,
    pub fill_count: u32,
    pub last_fill_at: Option<String>,
    pub last_fill_mass_kg: Option<f64>,
    pub last_inspection: Option<String>,
    pub next_inspection: String,
    pub scrapped: bool,
    pub inspection_hold: Option<String>,
    pub regulator_holds: Vec<String>,
    pub tags: Vec<String>,
    pub n_events: u32,
}

/// One event of a cylinder's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    /// Hex SHA-256 of the canonical encoding.
    pub id: String,
    pub code: String,
    pub kind: String,
    pub kind_zh: String,
    /// RFC 3339 UTC wall time of the recording node.
    pub at: String,
    /// Hybrid logical clock `physical_ms.logical`.
    pub hlc: String,
    /// Hex public key of the recording node.
    pub node: String,
    pub operator: String,
    pub place: String,
    /// Kind-specific fields.
    pub fields: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CylinderDetail {
    pub archive: Archive,
    pub state: State,
    pub recent_events: Vec<EventView>,
}

/// Query of `GET /api/v1/cylinders`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ListQuery {
    pub code: Option<String>,
    pub tag: Option<String>,
    pub serial: Option<String>,
    pub status: Option<String>,
    pub place: Option<String>,
    pub medium: Option<String>,
    /// A regulator's laptop: the enterprise whose cylinders to list (default: its own).
    pub enterprise: Option<String>,
    /// 1-based.
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub total: u64,
    pub page: u32,
    pub page_size: u32,
    pub items: Vec<T>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FillCheckRequest {
    pub medium: Option<String>,
    pub filled_mass_kg: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FillCheckResponse {
    pub code: String,
    pub allowed: bool,
    pub reasons: Vec<Reason>,
    pub rule_table: String,
    /// RFC 3339 UTC.
    pub checked_at: String,
}

/// A handheld operation. `op_id` is made by the handheld: a retry with the same `op_id`
/// returns the first result and records nothing new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationRequest {
    pub op_id: String,
    /// Scanned code: 10 or 16 digits, or the QR URL.
    pub code: String,
    #[serde(flatten)]
    pub op: Operation,
}

/// The kind-specific part of an operation; `kind` selects the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Operation {
    BindTag {
        tag: String,
    },
    ReceiveEmpty {
        warehouse: String,
    },
    PreFillCheck {
        passed: bool,
        #[serde(default)]
        failed_items: Vec<String>,
    },
    Fill {
        medium: String,
        filled_mass_kg: f64,
        #[serde(default)]
        batch: Option<String>,
    },
    PostFillCheck {
        passed: bool,
        #[serde(default)]
        failed_items: Vec<String>,
    },
    StoreFull {
        warehouse: String,
    },
    Dispatch {
        #[serde(default)]
        order: Option<String>,
    },
    Deliver {
        customer: String,
        #[serde(default)]
        order: Option<String>,
        /// Details collected at the door for a new customer.
        #[serde(default)]
        customer_name: Option<String>,
        #[serde(default)]
        customer_phone: Option<String>,
        #[serde(default)]
        customer_address: Option<String>,
    },
    Return {
        customer: String,
        #[serde(default)]
        slip: Option<String>,
    },
    Repair {
        description: String,
    },
    SendToInspection {
        reason: String,
    },
    InspectionResult {
        passed: bool,
        report_no: String,
        /// YYYY-MM-DD.
        inspected_on: String,
        /// YYYY-MM-DD; computed from the rule table when absent.
        #[serde(default)]
        next_due: Option<String>,
    },
    Scrap {
        reason: String,
    },
    RegulatorFinding {
        /// `hold` or `release`.
        action: String,
        finding: String,
        #[serde(default)]
        note: String,
    },
    Correction {
        /// Hex id of the event declared wrong.
        target: String,
        /// `did_not_occur` or `incorrect_data`.
        reason: String,
        #[serde(default)]
        note: String,
    },
}

impl Operation {
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::BindTag { .. } => "bind_tag",
            Operation::ReceiveEmpty { .. } => "receive_empty",
            Operation::PreFillCheck { .. } => "pre_fill_check",
            Operation::Fill { .. } => "fill",
            Operation::PostFillCheck { .. } => "post_fill_check",
            Operation::StoreFull { .. } => "store_full",
            Operation::Dispatch { .. } => "dispatch",
            Operation::Deliver { .. } => "deliver",
            Operation::Return { .. } => "return",
            Operation::Repair { .. } => "repair",
            Operation::SendToInspection { .. } => "send_to_inspection",
            Operation::InspectionResult { .. } => "inspection_result",
            Operation::Scrap { .. } => "scrap",
            Operation::RegulatorFinding { .. } => "regulator_finding",
            Operation::Correction { .. } => "correction",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationResponse {
    pub event: EventView,
    pub state: State,
    /// True when this `op_id` was seen before and the first result is returned.
    pub replayed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub archive: Archive,
    pub event: EventView,
}

/// Query of `GET /api/v1/anomalies`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AnomalyQuery {
    /// `fill_after_scrap`, `fill_during_hold`, `refused_fill`, `two_places` or
    /// `tag_on_two_cylinders`.
    pub kind: Option<String>,
    /// A cylinder code (10 or 16 digits).
    pub cylinder: Option<String>,
    /// A regulator's laptop: the enterprise whose anomalies to list (default: its own).
    pub enterprise: Option<String>,
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

/// Something that happened concurrently on nodes that could not see each other and that
/// the rules forbid, with the events that prove it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyView {
    /// Hex id, the same on every node that found it.
    pub id: String,
    pub kind: String,
    pub kind_zh: String,
    pub cylinders: Vec<String>,
    /// RFC 3339 UTC wall time of the offending event.
    pub at: String,
    /// Codes of the safety rules a refused fill breaks.
    pub rules: Vec<String>,
    pub message_zh: String,
    pub message_en: String,
    /// The proving events, the offending one last.
    pub events: Vec<EventView>,
}

/// One line of `GET /api/v1/stock`: how many cylinders are at a place with a status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockLine {
    /// Warehouse, driver or customer; empty when the status has no place.
    pub place: String,
    pub status: String,
    pub status_zh: String,
    /// `true` full, `false` empty, `null` unknown.
    pub full: Option<bool>,
    pub count: u64,
}

/// A replication peer as this node sees it (`GET /api/v1/peers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    /// Hex Ed25519 key of the peer node.
    pub node: String,
    /// Enrolled name and role (`station`, `regulator`, `head-office`), when known here.
    pub name: Option<String>,
    pub role: Option<String>,
    pub address: Option<String>,
    pub connected: bool,
    /// RFC 3339 UTC; `None` if not heard from since this node started.
    pub last_contact: Option<String>,
    /// When a round last ended with nothing left to exchange.
    pub last_in_sync: Option<String>,
    /// Age of the oldest data here the peer has not confirmed, ms (0 when in sync).
    pub lag_ms: i64,
    /// Events held here that the peer had not confirmed at its last sync.
    pub pending_events: u64,
    pub items_sent: u64,
    pub items_received: u64,
    pub items_refused: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The latest session's first round until in sync: ms, bytes both ways, flights of
    /// frames this node sent (round trips), bytes of the items it sent.
    #[serde(default)]
    pub first_round_ms: Option<i64>,
    #[serde(default)]
    pub first_round_bytes: Option<u64>,
    #[serde(default)]
    pub first_round_flights: Option<u64>,
    #[serde(default)]
    pub first_round_item_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub api_version: String,
    pub station: String,
    pub enterprise: String,
    pub node: String,
    pub cylinders: u64,
    pub events: u64,
    /// Fingerprint (hex) of the set of events this node holds: two nodes with the same
    /// value hold the same events.
    #[serde(default)]
    pub events_fingerprint: String,
    /// Fingerprint (hex) of the documents and their heads this node holds.
    #[serde(default)]
    pub documents_fingerprint: String,
    /// A regulator's laptop: the other enterprises of its region whose data it holds
    /// (select one with `enterprise=` on lists).
    #[serde(default)]
    pub other_enterprises: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire shape of an operation is flat: `kind` sits next to `op_id` and `code`.
    #[test]
    fn operation_json_is_flat() {
        let req = OperationRequest {
            op_id: "0193-a".into(),
            code: "0110100001".into(),
            op: Operation::Fill { medium: "lpg".into(), filled_mass_kg: 14.5, batch: None },
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"op_id":"0193-a","code":"0110100001","kind":"fill","medium":"lpg","filled_mass_kg":14.5,"batch":null}"#
        );
        let back: OperationRequest =
            serde_json::from_str(r#"{"op_id":"x","code":"1","kind":"receive_empty","warehouse":"W1"}"#).unwrap();
        assert_eq!(back.op, Operation::ReceiveEmpty { warehouse: "W1".into() });
        assert!(serde_json::from_str::<OperationRequest>(r#"{"op_id":"x","code":"1","kind":"teleport"}"#).is_err());
    }
}
