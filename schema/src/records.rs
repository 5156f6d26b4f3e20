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
