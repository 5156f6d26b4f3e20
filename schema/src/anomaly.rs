//! Anomalies: what happened concurrently, on nodes that could not see each other, that the
//! rules forbid. Merging never undoes a fact (see [`crate::state`]); it flags the forbidden
//! combination instead, with the events that prove it.
//!
//! Like derived state, anomalies are a pure function of the data (archive, events, the rule
//! table), so every node holding the same data lists the same anomalies:
//! - **fill after scrap** (`fill_after_scrap`): a fill ordered after a scrap of the same
//!   cylinder (the filling node had not yet received the scrap);
//! - **fill during a regulator hold** (`fill_during_hold`): a fill ordered after a hold and
//!   before its release;
//! - **refused fill** (`refused_fill`): any other fill the safety rules refuse when judged
//!   on the history before it (for example a failed pre-fill check recorded elsewhere);
//! - **two places** (`two_places`): two handling events of one cylinder recorded by
//!   different nodes at different places less than [`TWO_PLACES_WINDOW_MS`] apart;
//! - **tag on two cylinders** (`tag_on_two_cylinders`): one tag bound to two cylinders
//!   (found across cylinders, so the node's store computes it with [`tag_anomaly`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::archive::{CylinderArchive, Day};
use crate::codes::FullCode;
use crate::event::{EventBody, EventId, SignedEvent};
use crate::rules::{FillCheck, RuleTable, check_fill};
use crate::state::{CylinderState, apply_one, initial};

/// Two handling events at different places by different nodes closer than this (10
/// minutes) are physically implausible for one cylinder.
pub const TWO_PLACES_WINDOW_MS: i64 = 10 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AnomalyKind {
    FillAfterScrap,
    FillDuringHold,
    RefusedFill,
    TwoPlaces,
    TagOnTwoCylinders,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 5] = [
        AnomalyKind::FillAfterScrap,
        AnomalyKind::FillDuringHold,
        AnomalyKind::RefusedFill,
        AnomalyKind::TwoPlaces,
        AnomalyKind::TagOnTwoCylinders,
    ];

    pub fn code(self) -> &'static str {
        match self {
            AnomalyKind::FillAfterScrap => "fill_after_scrap",
            AnomalyKind::FillDuringHold => "fill_during_hold",
            AnomalyKind::RefusedFill => "refused_fill",
            AnomalyKind::TwoPlaces => "two_places",
            AnomalyKind::TagOnTwoCylinders => "tag_on_two_cylinders",
        }
    }

    pub fn zh(self) -> &'static str {
        match self {
            AnomalyKind::FillAfterScrap => "报废后充装",
            AnomalyKind::FillDuringHold => "监管查封期间充装",
            AnomalyKind::RefusedFill => "违规充装",
            AnomalyKind::TwoPlaces => "同时出现在两地",
            AnomalyKind::TagOnTwoCylinders => "一签绑定两瓶",
        }
    }

    pub fn from_code(code: &str) -> Option<AnomalyKind> {
        AnomalyKind::ALL.into_iter().find(|k| k.code() == code)
    }
}

/// One anomaly and the events that prove it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    /// The cylinders involved, sorted (two for a shared tag, else one).
    pub cylinders: Vec<FullCode>,
    /// The proving events, the offending one last.
    pub events: Vec<EventId>,
    /// Wall time of the offending event (ms since the epoch, UTC).
    pub at_ms: i64,
    /// Codes of the rules a refused fill breaks; empty for other kinds.
    pub rules: Vec<String>,
    pub detail_zh: String,
    pub detail_en: String,
}

impl Anomaly {
    /// A stable id: the same anomaly found on two nodes has the same id.
    pub fn id(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.kind.code().as_bytes());
        for c in &self.cylinders {
            h.update(c.as_bytes());
        }
        let mut events = self.events.clone();
        events.sort();
        for e in events {
            h.update(e.0);
        }
        h.finalize().into()
    }
}

/// What judging a past fill needs besides the history: the rule table, the enterprise
/// the nodes fill for and the local time zone (rules count in local days).
#[derive(Debug, Clone)]
pub struct Judge {
    pub table: RuleTable,
    pub enterprise: String,
    pub utc_offset: chrono::FixedOffset,
}

impl Judge {
    /// The embedded rule table in Asia/Shanghai time (UTC+8).
    pub fn embedded(enterprise: &str) -> Judge {
        Judge {
            table: RuleTable::embedded(),
            enterprise: enterprise.to_owned(),
            utc_offset: chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset"),
        }
    }

    /// The local day of a wall time.
    pub fn day(&self, wall_ms: i64) -> Day {
        let utc = chrono::DateTime::from_timestamp_millis(wall_ms).unwrap_or_default();
        Day(utc.with_timezone(&self.utc_offset).date_naive())
    }
}

/// Whether an event kind means someone handled the cylinder at its `place`.
fn handled_at_place(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::ReceiveEmpty { .. }
            | EventBody::PreFillCheck { .. }
            | EventBody::Fill { .. }
            | EventBody::PostFillCheck { .. }
            | EventBody::StoreFull { .. }
            | EventBody::Deliver { .. }
            | EventBody::Return { .. }
    )
}

/// Anomalies found in one cylinder's history. `events` may hold duplicates and come in any
/// order (as for [`crate::state::derive`]).
pub fn cylinder_anomalies(archive: &CylinderArchive, events: &[SignedEvent], judge: &Judge) -> Vec<Anomaly> {
    let sorted = sorted_unique(events.iter());
    let mut out = Vec::new();
    let Ok(code) = archive.full_code() else { return out };
    let corrections: BTreeSet<EventId> = sorted
        .iter()
        .filter_map(|e| match &e.event.body {
            EventBody::Correction { target, .. } => Some(*target),
            _ => None,
        })
        .collect();
    let mut state = initial(archive);
    state.correction_targets = corrections.clone();
    let mut fills = Fills { archive, judge, code, scrap: None, holds: Vec::new(), state };
    for e in &sorted {
        fills.step(e, &mut out);
    }
    out.extend(two_places(code, &sorted, &corrections));
    out
}

fn sorted_unique<'e>(events: impl Iterator<Item = &'e SignedEvent>) -> Vec<&'e SignedEvent> {
    let mut sorted: Vec<&SignedEvent> = events.collect();
    sorted.sort_by_key(|e| e.order_key());
    sorted.dedup_by_key(|e| e.id);
    sorted
}

/// Judges a history's fills one event at a time, in order: the state before each event,
/// the first scrap and the regulator holds in force (each with the event that made it).
struct Fills<'a> {
    archive: &'a CylinderArchive,
    judge: &'a Judge,
    code: FullCode,
    scrap: Option<EventId>,
    holds: Vec<(String, EventId)>,
    state: CylinderState,
}

impl Fills<'_> {
    fn step(&mut self, e: &SignedEvent, out: &mut Vec<Anomaly>) {
        let code = self.code;
        if let EventBody::Fill { medium, filled_mass_g, .. } = &e.event.body {
            let one = |kind: AnomalyKind, mut events: Vec<EventId>, rules: Vec<String>, zh: String, en: String| {
                events.push(e.id);
                Anomaly {
                    kind,
                    cylinders: vec![code],
                    events,
                    at_ms: e.event.wall_ms,
                    rules,
                    detail_zh: zh,
                    detail_en: en,
                }
            };
            if let Some(s) = self.scrap {
                out.push(one(
                    AnomalyKind::FillAfterScrap,
                    vec![s],
                    vec![crate::rules::Rule::Scrapped.code().to_owned()],
                    format!("气瓶 {code} 报废后仍被充装（操作员 {}）", e.event.operator),
                    format!("cylinder {code} was filled after it was scrapped (operator {})", e.event.operator),
                ));
            } else if !self.holds.is_empty() {
                let findings: Vec<&str> = self.holds.iter().map(|(f, _)| f.as_str()).collect();
                out.push(one(
                    AnomalyKind::FillDuringHold,
                    self.holds.iter().map(|(_, id)| *id).collect(),
                    vec![crate::rules::Rule::RegulatorHold.code().to_owned()],
                    format!("气瓶 {code} 在监管查封（{}）期间被充装", findings.join("、")),
                    format!("cylinder {code} was filled while held by finding(s) {}", findings.join(", ")),
                ));
            } else {
                let refusals = check_fill(
                    &self.judge.table,
                    &FillCheck {
                        archive: self.archive,
                        state: &self.state,
                        today: self.judge.day(e.event.wall_ms),
                        station_enterprise: &self.judge.enterprise,
                        medium: Some(*medium),
                        filled_mass_kg: Some(*filled_mass_g as f64 / 1000.0),
                    },
                );
                if !refusals.is_empty() {
                    let rules: Vec<String> = refusals.iter().map(|r| r.rule.code().to_owned()).collect();
                    let zh: Vec<&str> = refusals.iter().map(|r| r.message_zh.as_str()).collect();
                    let en: Vec<&str> = refusals.iter().map(|r| r.message_en.as_str()).collect();
                    out.push(one(
                        AnomalyKind::RefusedFill,
                        Vec::new(),
                        rules,
                        format!("气瓶 {code} 的充装违反安全规则：{}", zh.join("；")),
                        format!("cylinder {code} was filled against the safety rules: {}", en.join("; ")),
                    ));
                }
            }
        }
        match &e.event.body {
            EventBody::Scrap { .. } => {
                self.scrap.get_or_insert(e.id);
            }
            EventBody::RegulatorFinding { action, finding, .. } => match action {
                crate::event::FindingAction::Hold => self.holds.push((finding.clone(), e.id)),
                crate::event::FindingAction::Release => self.holds.retain(|(f, _)| f != finding),
            },
            _ => {}
        }
        apply_one(&mut self.state, e);
    }
}

/// What events appended to a cylinder's history change in its anomalies, found from the
/// state before them and the recent events only (see [`appended`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The state after the new events (as [`crate::state::derive`] over the whole history).
    pub state: CylinderState,
    /// Anomalies of the new events' fills. Those of earlier fills do not change: a fill is
    /// judged on the history before it.
    pub fills: Vec<Anomaly>,
    /// Every two-places anomaly whose offending event has a wall time at or after
    /// `two_places_from_ms`: they replace the stored ones of that span, the only span the
    /// new events can change. `i64::MAX` (nothing to replace) when no new event was
    /// handled at a place.
    pub two_places: Vec<Anomaly>,
    pub two_places_from_ms: i64,
}

/// Whether a new event takes part in the two-places check.
fn placed(e: &SignedEvent) -> bool {
    handled_at_place(&e.event.body) && !e.event.place.is_empty()
}

/// The wall time after which [`appended`] needs the history's events (`recent`): a new
/// event handled at a place pairs with events up to [`TWO_PLACES_WINDOW_MS`] before it.
/// `None` when it needs none of them.
pub fn recent_after_ms(new: &[SignedEvent]) -> Option<i64> {
    new.iter().filter(|e| placed(e)).map(|e| e.event.wall_ms).min().map(|w| w.saturating_sub(TWO_PLACES_WINDOW_MS))
}

/// The anomalies that `new` events, appended to a history whose derived state is
/// `before`, add or change, without replaying that history: the same as
/// [`cylinder_anomalies`] over the whole history would say for those spans.
///
/// `recent` must hold every event of the history whose wall time is after
/// [`recent_after_ms`] (it may hold more). `None` when the whole history must be judged
/// again: a new event does not sort after every event of the history, is a correction or
/// the target of one, or a regulator hold is in force before them (the state keeps the
/// findings, not the events that made them).
pub fn appended(
    archive: &CylinderArchive,
    before: &CylinderState,
    recent: &[SignedEvent],
    new: &[SignedEvent],
    judge: &Judge,
) -> Option<Appended> {
    let code = archive.full_code().ok()?;
    let new = sorted_unique(new.iter());
    let first = new.first()?;
    let after_all = before.last_applied.is_none_or(|last| first.order_key() > last);
    let plain = new
        .iter()
        .all(|e| !matches!(e.event.body, EventBody::Correction { .. }) && !before.correction_targets.contains(&e.id));
    if !after_all || !plain || !before.regulator_holds.is_empty() {
        return None;
    }
    let mut fills = Fills { archive, judge, code, scrap: before.scrapped, holds: Vec::new(), state: before.clone() };
    let mut found = Vec::new();
    for e in &new {
        fills.step(e, &mut found);
    }
    let from = new.iter().filter(|e| placed(e)).map(|e| e.event.wall_ms).min();
    let two = match from {
        Some(from) => {
            let all = sorted_unique(recent.iter().chain(new.iter().copied()));
            let mut two = two_places(code, &all, &before.correction_targets);
            two.retain(|a| a.at_ms >= from);
            two
        }
        None => Vec::new(),
    };
    Some(Appended { state: fills.state, fills: found, two_places: two, two_places_from_ms: from.unwrap_or(i64::MAX) })
}

/// Handling events of different nodes at different places within the window: each event
/// is paired with the latest earlier such event (by wall time), so a run of events makes
/// one anomaly per offending event, not one per pair.
fn two_places(code: FullCode, sorted: &[&SignedEvent], corrected: &BTreeSet<EventId>) -> Vec<Anomaly> {
    let mut handled: Vec<&SignedEvent> = sorted
        .iter()
        .copied()
        .filter(|e| handled_at_place(&e.event.body) && !e.event.place.is_empty() && !corrected.contains(&e.id))
        .collect();
    handled.sort_by_key(|e| (e.event.wall_ms, e.order_key()));
    let mut out = Vec::new();
    for (i, e) in handled.iter().enumerate() {
        let earlier =
            handled[..i].iter().rev().take_while(|f| e.event.wall_ms - f.event.wall_ms < TWO_PLACES_WINDOW_MS);
        let Some(f) = earlier.into_iter().find(|f| f.event.node != e.event.node && f.event.place != e.event.place)
        else {
            continue;
        };
        let minutes = (e.event.wall_ms - f.event.wall_ms) as f64 / 60_000.0;
        out.push(Anomaly {
            kind: AnomalyKind::TwoPlaces,
            cylinders: vec![code],
            events: vec![f.id, e.id],
            at_ms: e.event.wall_ms,
            rules: Vec::new(),
            detail_zh: format!(
                "气瓶 {code} 在 {minutes:.1} 分钟内先后出现在 {} 和 {}（不同节点记录）",
                f.event.place, e.event.place
            ),
            detail_en: format!(
                "cylinder {code} was at {} and at {} within {minutes:.1} minutes (recorded by different nodes)",
                f.event.place, e.event.place
            ),
        });
    }
    out
}

/// One tag bound to several cylinders: `bindings` holds, per cylinder, the events that
/// bound `tag` to it (empty when the tag came with the archive). `None` for one cylinder.
pub fn tag_anomaly(tag: &str, bindings: &[(FullCode, Vec<&SignedEvent>)]) -> Option<Anomaly> {
    if bindings.len() < 2 {
        return None;
    }
    let mut bindings: Vec<&(FullCode, Vec<&SignedEvent>)> = bindings.iter().collect();
    bindings.sort_by_key(|(c, _)| *c);
    let cylinders: Vec<FullCode> = bindings.iter().map(|(c, _)| *c).collect();
    let mut events: Vec<&SignedEvent> = bindings.iter().flat_map(|(_, e)| e.iter().copied()).collect();
    events.sort_by_key(|e| e.order_key());
    let list: Vec<&str> = cylinders.iter().map(|c| c.as_str()).collect();
    Some(Anomaly {
        kind: AnomalyKind::TagOnTwoCylinders,
        at_ms: events.last().map_or(0, |e| e.event.wall_ms),
        events: events.iter().map(|e| e.id).collect(),
        detail_zh: format!("标签 {tag} 同时绑定在 {} 只气瓶上：{}", cylinders.len(), list.join("、")),
        detail_en: format!("tag {tag} is bound to {} cylinders: {}", cylinders.len(), list.join(", ")),
        cylinders,
        rules: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
