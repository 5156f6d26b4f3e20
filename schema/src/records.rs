//! Station records that people edit (企业业务管理系统): enterprise, staff, warehouses,
//! delivery stations, customers and fill batches. Each is one Automerge document with the
//! document id `<kind>:<id>` (see [`crate::archive::DocId::record`]).

use autosurgeon::{Hydrate, Reconcile};
use serde::{Deserialize, Serialize};

use crate::vocab::{Medium, Role};

/// Enterprise information (企业信息).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Hydrate, Reconcile)]
pub struct Enterprise {
    /// Enterprise code, e.g. `3701020001`.
    pub code: String,
    pub name: String,
    /// Unified social credit code (社会统一信用代码).
    pub credit_code: String,
    pub region: String,
    pub address: String,
    pub contact: String,
    pub phone: String,
    /// Gases handled (充装介质).
    pub media: Vec<Medium>,
    pub in_use: bool,
}

/// A staff member (企业人员) and their login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Hydrate, Reconcile)]
pub struct Staff {
    pub account: String,
    pub name: String,
    /// ID number (身份证号).
    pub id_number: String,
    pub roles: Vec<Role>,
    pub enterprise: String,
    pub active: bool,
    /// Argon2 PHC string; never logged, never sent to handhelds.
    pub password_hash: String,
}

/// Warehouse (仓库): an empty store, a full store, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Hydrate, Reconcile)]
pub struct Warehouse {
    pub id: String,
    pub name: String,
    pub holds_empty: bool,
    pub holds_full: bool,
    pub enterprise: String,
}

/// Delivery station (配送站).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Hydrate, Reconcile)]
pub struct DeliveryStation {
    pub id: String,
    pub name: String,
    pub address: String,
    pub phone: String,
    pub enterprise: String,
}

/// Customer (客户): an enterprise or a household.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Hydrate, Reconcile)]
pub struct Customer {
    pub code: String,
    pub name: String,
    pub address: String,
    pub region: String,
    pub contact: String,
    pub phone: String,
    pub household: bool,
    pub active: bool,
}

/// Fill batch (充装批次): fills are recorded against a batch for lab analysis (化验).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Hydrate, Reconcile)]
pub struct FillBatch {
    pub id: String,
    pub medium: Medium,
    pub opened: String,
    pub note: String,
}

/// An enrolled node (节点): who may write what. Issued by the head office at enrolment and
/// replicated, so every node can check the signer of an event it receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Hydrate, Reconcile)]
pub struct NodeRecord {
    /// Hex Ed25519 public key: the node id that signs its events.
    pub key: String,
    pub name: String,
    /// `station`, `head-office` or `regulator`.
    pub role: String,
    pub enterprise: String,
}

impl NodeRecord {
    /// Whether a node of this role may write an event of this kind. A regulator's laptop
    /// writes only findings. Stations and head offices write every kind, findings
    /// included: a regulator on site records through the station's node with a
    /// regulator staff account, which the node's API gates by role.
    pub fn may_write(&self, kind: &str) -> bool {
        match self.role.as_str() {
            "regulator" => kind == "regulator_finding",
            "station" | "head-office" => true,
            _ => false,
        }
    }
}
