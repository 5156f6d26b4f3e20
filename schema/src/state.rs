//! A cylinder's derived state: a pure function of its archive record and its events.
//!
//! Events are applied in (HLC, node, id) order, so any order of arrival and any duplication
//! gives the same state. Safety facts come only from events and only grow:
//! - a scrap is absorbing; nothing un-scraps a cylinder;
//! - a failed pre-fill check or failed inspection holds the cylinder until a passed
//!   inspection that is later in HLC order;
//! - a regulator hold is lifted only by a release that names the same finding;
//! - corrections (error declarations) never remove a safety fact: a corrected scrap, fill,
//!   inspection result, failed check or finding still counts.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::archive::{CylinderArchive, Day};
use crate::event::{EventBody, EventId, FindingAction, NodeId, SignedEvent};
use crate::hlc::Hlc;
use crate::vocab::Medium;

/// Where a cylinder is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Location {
    Unknown,
    EmptyStore { warehouse: String },
    FullStore { warehouse: String },
    InTransit { driver: String },
    AtCustomer { customer: String },
    InRepair,
    AtInspection,
    Scrapped,
}

impl Location {
    /// Chinese label used in lists and reports.
    pub fn zh(&self) -> &'static str {
        let status = self.status();
        Location::ALL_STATUSES.iter().find(|(s, _)| *s == status).map_or("未知", |(_, zh)| zh)
    }

    /// Every status code with its Chinese label.
    pub const ALL_STATUSES: [(&'static str, &'static str); 8] = [
        ("unknown", "未知"),
        ("empty_store", "空瓶库"),
        ("full_store", "满瓶库"),
        ("in_transit", "配送中"),
        ("at_customer", "已配送"),
        ("in_repair", "维修"),
        ("at_inspection", "送检"),
        ("scrapped", "报废"),
    ];

    /// Stable status code used by indexes and filters.
    pub fn status(&self) -> &'static str {
        match self {
            Location::Unknown => "unknown",
            Location::EmptyStore { .. } => "empty_store",
            Location::FullStore { .. } => "full_store",
            Location::InTransit { .. } => "in_transit",
            Location::AtCustomer { .. } => "at_customer",
            Location::InRepair => "in_repair",
            Location::AtInspection => "at_inspection",
            Location::Scrapped => "scrapped",
        }
    }

    /// The place id, if the location has one.
    pub fn place(&self) -> Option<&str> {
        match self {
            Location::EmptyStore { warehouse } | Location::FullStore { warehouse } => Some(warehouse),
            Location::InTransit { driver } => Some(driver),
            Location::AtCustomer { customer } => Some(customer),
            _ => None,
        }
    }
}

/// The last recorded fill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFill {
    pub wall_ms: i64,
    pub medium: Medium,
    pub filled_mass_g: u64,
    pub operator: String,
    pub event: EventId,
}

/// Everything the safety rules and the lists need, materialised per cylinder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CylinderState {
    pub location: Location,
    /// `Some(true)` full, `Some(false)` empty, `None` unknown.
    pub full: Option<bool>,
    pub fill_count: u32,
    pub last_fill: Option<LastFill>,
    pub last_inspection: Option<Day>,
    pub last_passed_inspection: Option<Day>,
    pub next_inspection: Option<Day>,
    /// The scrap event, once scrapped.
    pub scrapped: Option<EventId>,
    /// Why the cylinder is held for inspection (failed pre-fill check or failed inspection).
    pub inspection_hold: Option<String>,
    /// Active regulator holds: finding id → note.
    pub regulator_holds: BTreeMap<String, String>,
    /// Wall time of the latest event: how long the cylinder has been out of use.
    pub last_activity_ms: Option<i64>,
    pub tags: BTreeSet<String>,
    /// Events declared wrong by a correction (that are present).
    pub corrected: BTreeSet<EventId>,
    /// Every event named by a correction, present or not yet arrived.
    pub correction_targets: BTreeSet<EventId>,
    /// Order key of the last event applied, for incremental derivation.
    pub last_applied: Option<(Hlc, NodeId, EventId)>,
    pub n_events: u32,
}

impl CylinderState {
    /// Safety facts as a set of strings, for monotonicity checks and reports.
    pub fn safety_facts(&self) -> BTreeSet<String> {
        let mut facts = BTreeSet::new();
        if self.scrapped.is_some() {
            facts.insert("scrapped".to_owned());
        }
        if self.inspection_hold.is_some() {
            facts.insert("inspection_hold".to_owned());
        }
        for finding in self.regulator_holds.keys() {
            facts.insert(format!("regulator_hold:{finding}"));
        }
        for n in 1..=self.fill_count {
            facts.insert(format!("fill:{n:08}"));
        }
        facts
    }
}

/// Whether a correction may cancel this event. Safety facts cannot be cancelled.
fn correctable(body: &EventBody) -> bool {
    match body {
        EventBody::Scrap { .. }
        | EventBody::Fill { .. }
        | EventBody::InspectionResult { .. }
        | EventBody::RegulatorFinding { .. }
        | EventBody::Correction { .. } => false,
        EventBody::PreFillCheck { passed, .. } | EventBody::PostFillCheck { passed, .. } => *passed,
        _ => true,
    }
}

/// Derives the state of one cylinder. `events` may hold duplicates and come in any order;
/// events of other cylinders must not be passed in.
pub fn derive(archive: &CylinderArchive, events: &[SignedEvent]) -> CylinderState {
    let mut sorted: Vec<&SignedEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.order_key());
    sorted.dedup_by_key(|e| e.id);
    let mut s = initial(archive);
    s.correction_targets = sorted
        .iter()
        .filter_map(|e| match &e.event.body {
            EventBody::Correction { target, .. } => Some(*target),
            _ => None,
        })
        .collect();
    for e in sorted {
        apply_one(&mut s, e);
    }
    s
}

/// Applies one new event to a state derived from the earlier ones, when that gives the
/// same result as [`derive`] over the whole history: the event sorts after every event
/// already applied, is not a correction, and is not the target of one. Returns `None`
/// otherwise; the caller then derives from the whole history.
pub fn apply(state: &CylinderState, event: &SignedEvent) -> Option<CylinderState> {
    let after_all = state.last_applied.is_none_or(|last| event.order_key() > last);
    let plain = !matches!(event.event.body, EventBody::Correction { .. });
    if !after_all || !plain || state.correction_targets.contains(&event.id) {
        return None;
    }
    let mut s = state.clone();
    apply_one(&mut s, event);
    Some(s)
}

pub(crate) fn initial(archive: &CylinderArchive) -> CylinderState {
    CylinderState {
        location: Location::Unknown,
        full: None,
        fill_count: 0,
        last_fill: None,
        last_inspection: archive.last_inspection,
        last_passed_inspection: archive.last_inspection,
        next_inspection: archive.next_inspection,
        scrapped: None,
        inspection_hold: None,
        regulator_holds: BTreeMap::new(),
        last_activity_ms: None,
        tags: archive.tags.iter().cloned().collect(),
        corrected: BTreeSet::new(),
        correction_targets: BTreeSet::new(),
        last_applied: None,
        n_events: 0,
    }
}

/// Applies one event, in (HLC, node, id) order, to the state of the events before it.
pub(crate) fn apply_one(s: &mut CylinderState, signed: &SignedEvent) {
    let e = &signed.event;
    s.n_events += 1;
    s.last_applied = Some(signed.order_key());
    s.last_activity_ms = Some(s.last_activity_ms.map_or(e.wall_ms, |t| t.max(e.wall_ms)));
    if s.correction_targets.contains(&signed.id) {
        s.corrected.insert(signed.id);
        if correctable(&e.body) {
            return;
        }
    }
    match &e.body {
        EventBody::Register { .. } | EventBody::Correction { .. } | EventBody::PostFillCheck { .. } => {}
        EventBody::BindTag { tag } => {
            s.tags.insert(tag.clone());
        }
        EventBody::ReceiveEmpty { warehouse } => {
            s.location = Location::EmptyStore { warehouse: warehouse.clone() };
            s.full = Some(false);
        }
        EventBody::PreFillCheck { passed, failed_items } => {
            if !passed {
                s.inspection_hold = Some(format!("pre_fill_check:{}", failed_items.join("/")));
                s.location = Location::AtInspection;
            }
        }
        EventBody::Fill { medium, filled_mass_g, .. } => {
            s.fill_count += 1;
            s.full = Some(true);
            s.last_fill = Some(LastFill {
                wall_ms: e.wall_ms,
                medium: *medium,
                filled_mass_g: *filled_mass_g,
                operator: e.operator.clone(),
                event: signed.id,
            });
        }
        EventBody::StoreFull { warehouse } => {
            s.location = Location::FullStore { warehouse: warehouse.clone() };
        }
        EventBody::Dispatch { driver, .. } => {
            s.location = Location::InTransit { driver: driver.clone() };
        }
        EventBody::Deliver { customer, .. } => {
            s.location = Location::AtCustomer { customer: customer.clone() };
        }
        EventBody::Return { .. } => {
            // Collected: on the vehicle of whoever collected it until it is received.
            s.location = Location::InTransit { driver: e.operator.clone() };
            s.full = Some(false);
        }
        EventBody::Repair { .. } => {
            s.location = Location::InRepair;
        }
        EventBody::SendToInspection { .. } => {
            s.location = Location::AtInspection;
        }
        EventBody::InspectionResult { passed, inspected_on, next_due, report_no } => {
            s.last_inspection = s.last_inspection.max(Some(*inspected_on));
            if *passed {
                s.inspection_hold = None;
                s.last_passed_inspection = s.last_passed_inspection.max(Some(*inspected_on));
                if next_due.is_some() {
                    s.next_inspection = *next_due;
                }
            } else {
                s.inspection_hold = Some(format!("inspection_failed:{report_no}"));
            }
        }
        EventBody::Scrap { .. } => {
            s.scrapped.get_or_insert(signed.id);
        }
        EventBody::RegulatorFinding { action, finding, note } => match action {
            FindingAction::Hold => {
                s.regulator_holds.insert(finding.clone(), note.clone());
            }
            FindingAction::Release => {
                s.regulator_holds.remove(finding);
            }
        },
    }
    if s.scrapped.is_some() {
        s.location = Location::Scrapped;
    }
}

#[cfg(test)]
mod tests;
