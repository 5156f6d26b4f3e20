//! The cylinder archive record (气瓶档案): what people register and edit about a cylinder.
//!
//! One Automerge document per cylinder, with a deterministic document id derived from the
//! 16-digit code, so that two stations registering the same cylinder offline edit the same
//! document and merge field by field. The archive holds no history and no safety facts:
//! those are events (see [`crate::event`]).

use std::fmt;
use std::str::FromStr;

use automerge::{ActorId, AutoCommit};
use autosurgeon::{Hydrate, HydrateError, Reconcile, Reconciler};
use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::codes::{EnterpriseCode, FullCode};
use crate::vocab::{Medium, PropertyKind, Variety};

/// Version of the document layout written into every document as `layout`.
pub const LAYOUT_VERSION: u64 = 1;

/// A calendar day (no time zone: stamps and reports carry dates only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Day(pub NaiveDate);

impl Day {
    pub fn ymd(y: i32, m: u32, d: u32) -> Option<Day> {
        NaiveDate::from_ymd_opt(y, m, d).map(Day)
    }

    /// Adds whole years, clamping 29 February to 28 February.
    pub fn plus_years(self, years: i32) -> Day {
        let y = self.0.year() + years;
        Day(NaiveDate::from_ymd_opt(y, self.0.month(), self.0.day())
            .or_else(|| NaiveDate::from_ymd_opt(y, self.0.month(), 28))
            .expect("day 28 exists in every month"))
    }

    pub fn plus_days(self, days: i64) -> Day {
        Day(self.0 + chrono::Duration::days(days))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

impl FromStr for Day {
    type Err = chrono::ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map(Day)
    }
}

impl Hydrate for Day {
    fn hydrate_string(s: &str) -> Result<Self, HydrateError> {
        s.parse().map_err(|_| HydrateError::unexpected("a YYYY-MM-DD date", s.to_owned()))
    }
}

impl Reconcile for Day {
    type Key<'a> = autosurgeon::reconcile::NoKey;
    fn reconcile<R: Reconciler>(&self, reconciler: R) -> Result<(), R::Error> {
        self.to_string().reconcile(reconciler)
    }
}

/// Deterministic document ids: `cyl:<16 digits>` for archives, `<kind>:<id>` for records.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DocId(pub String);

impl DocId {
    pub fn cylinder(code: &FullCode) -> DocId {
        DocId(format!("cyl:{code}"))
    }

    pub fn record(kind: &str, id: &str) -> DocId {
        DocId(format!("{kind}:{id}"))
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The archive record as people see and edit it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Hydrate, Reconcile)]
pub struct CylinderArchive {
    pub layout: u64,
    /// 16-digit code; never changes after registration.
    pub code: String,
    pub variety: Variety,
    pub medium: Medium,
    /// Factory serial number (出厂编号).
    pub serial: String,
    /// Manufacturer (制造单位).
    pub maker: String,
    pub manufactured: Day,
    /// Manufacturing standard, e.g. `GB 5842-2006`; the design life of LPG cylinders depends on it.
    pub standard: String,
    pub nominal_pressure_mpa: f64,
    pub water_volume_l: f64,
    /// Tare weight; unknown tare refuses a liquefied-gas fill (domain.md §1.6).
    pub tare_kg: Option<f64>,
    /// Rated maximum fill as stamped (e.g. YSP118/49.5 → 49.5 kg); wins over volume × ratio.
    pub rated_max_fill_kg: Option<f64>,
    /// Design service life as stamped; when absent the rule table decides.
    pub design_life_years: Option<u32>,
    pub last_inspection: Option<Day>,
    pub next_inspection: Option<Day>,
    /// Enterprise code of the owner (产权单位).
    pub owner: String,
    pub property: PropertyKind,
    /// Customer code, for customer-owned cylinders.
    pub customer: Option<String>,
    /// Tag ids printed or encoded on the cylinder (laser QR, RFID ring...).
    pub tags: Vec<String>,
}

/// Why an archive record is not acceptable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArchiveError {
    #[error("invalid code: {0}")]
    Code(#[from] crate::codes::CodeError),
    #[error("field {field} is invalid: {reason}")]
    Field { field: &'static str, reason: &'static str },
    #[error("document layout {0} is newer than this build understands")]
    Layout(u64),
    #[error("automerge: {0}")]
    Automerge(String),
}

impl CylinderArchive {
    /// A typical 15 kg LPG cylinder (YSP35.5, GB 5842-2006) of enterprise 3701020001,
    /// made 2023-01-01 and due for inspection 2027-01-01: for examples, tests and
    /// benchmarks, which change what they need.
    pub fn example(code: &str) -> CylinderArchive {
        CylinderArchive {
            layout: LAYOUT_VERSION,
            code: code.to_owned(),
            variety: Variety::LpgWeldedSteel,
            medium: Medium::Lpg,
            serial: format!("S{}", code.get(6..).unwrap_or(code)),
            maker: "济南钢瓶厂".into(),
            manufactured: Day::ymd(2023, 1, 1).expect("a valid date"),
            standard: "GB 5842-2006".into(),
            nominal_pressure_mpa: 2.1,
            water_volume_l: 35.5,
            tare_kg: Some(15.0),
            rated_max_fill_kg: None,
            design_life_years: None,
            last_inspection: None,
            next_inspection: Day::ymd(2027, 1, 1),
            owner: "3701020001".into(),
            property: PropertyKind::Own,
            customer: None,
            tags: Vec::new(),
        }
    }

    pub fn full_code(&self) -> Result<FullCode, ArchiveError> {
        Ok(self.code.parse()?)
    }

    pub fn owner_code(&self) -> Result<EnterpriseCode, ArchiveError> {
        Ok(self.owner.parse()?)
    }

    /// Checks the invariants of a record before it is committed and after it is loaded.
    pub fn validate(&self) -> Result<(), ArchiveError> {
        if self.layout > LAYOUT_VERSION {
            return Err(ArchiveError::Layout(self.layout));
        }
        self.full_code()?;
        self.owner_code()?;
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.water_volume_l) {
            return Err(ArchiveError::Field { field: "water_volume_l", reason: "must be a positive number" });
        }
        if !positive(self.nominal_pressure_mpa) {
            return Err(ArchiveError::Field { field: "nominal_pressure_mpa", reason: "must be a positive number" });
        }
        if self.tare_kg.is_some_and(|t| !positive(t)) {
            return Err(ArchiveError::Field { field: "tare_kg", reason: "must be a positive number" });
        }
        if self.rated_max_fill_kg.is_some_and(|t| !positive(t)) {
            return Err(ArchiveError::Field { field: "rated_max_fill_kg", reason: "must be a positive number" });
        }
        if self.serial.trim().is_empty() {
            return Err(ArchiveError::Field { field: "serial", reason: "must not be empty" });
        }
        if let (Some(last), Some(next)) = (self.last_inspection, self.next_inspection)
            && next <= last
        {
            return Err(ArchiveError::Field { field: "next_inspection", reason: "must be after last_inspection" });
        }
        if self.last_inspection.is_some_and(|d| d < self.manufactured) {
            return Err(ArchiveError::Field {
                field: "last_inspection",
                reason: "must not be before the manufacture date",
            });
        }
        if self.property == PropertyKind::Customer && self.customer.is_none() {
            return Err(ArchiveError::Field {
                field: "customer",
                reason: "customer-owned cylinders name their customer",
            });
        }
        Ok(())
    }
}

/// Writes `value` into a new document made by `actor`, committed at `time_s`.
pub fn new_document<T: Reconcile>(value: &T, actor: ActorId, time_s: i64) -> Result<AutoCommit, ArchiveError> {
    let mut doc = AutoCommit::new().with_actor(actor);
    autosurgeon::reconcile(&mut doc, value).map_err(|e| ArchiveError::Automerge(e.to_string()))?;
    doc.commit_with(automerge::transaction::CommitOptions::default().with_time(time_s));
    Ok(doc)
}

/// Reads a value out of a document.
pub fn read_document<T: Hydrate>(doc: &AutoCommit) -> Result<T, ArchiveError> {
    autosurgeon::hydrate(doc).map_err(|e| ArchiveError::Automerge(e.to_string()))
}

/// Applies an edit to a document: only changed fields produce operations.
pub fn update_document<T: Reconcile>(doc: &mut AutoCommit, value: &T, time_s: i64) -> Result<(), ArchiveError> {
    autosurgeon::reconcile(doc, value).map_err(|e| ArchiveError::Automerge(e.to_string()))?;
    doc.commit_with(automerge::transaction::CommitOptions::default().with_time(time_s));
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
