//! Anomalies as the store keeps them: recomputed for a cylinder whenever data that can make
//! or clear one arrives (events or an archive from a peer, a local handling event, a tag
//! binding, a correction), so `GET /api/v1/anomalies` is a table scan, not a derivation.
//!
//! A cylinder's anomalies live under its code; an anomaly of two cylinders (a shared tag)
//! is kept under each cylinder that found it and listed once, by its id.

use std::collections::BTreeMap;

use redb::{ReadableMultimapTable, ReadableTable};
use schema::anomaly::{Anomaly, AnomalyKind, appended, cylinder_anomalies, recent_after_ms, tag_anomaly};
use schema::codes::FullCode;
use schema::event::{EventBody, SignedEvent};
use schema::hlc::Hlc;
use schema::rules::{FillCheck, Refusal, check_fill};
use schema::state::derive;
use schema::vocab::Medium;

use super::tables::{ANOMALIES_TABLE, CYLINDER_INDEX_TABLE, EVENTS_TABLE};
use super::{CylinderRow, Store, StoreError, WriteCtx, code_of, decode_keyed_event, prefix_range};

/// Every key of one cylinder's anomalies lies in `lo..=hi`.
fn cylinder_range(code: &FullCode) -> (Vec<u8>, Vec<u8>) {
    let (mut lo, mut hi) = (code.as_bytes().to_vec(), code.as_bytes().to_vec());
    lo.extend_from_slice(&[0; 32]);
    hi.extend_from_slice(&[0xff; 32]);
    (lo, hi)
}

fn key(code: &FullCode, a: &Anomaly) -> Vec<u8> {
    let mut k = code.as_bytes().to_vec();
    k.extend_from_slice(&a.id());
    k
}

impl WriteCtx<'_> {
    /// The rules a fill of `code` at `wall_ms` would break, judged as anomaly detection
    /// judges it (for generators of plausible history: demo data, simulations).
    pub fn fill_refusals(
        &self,
        code: &FullCode,
        medium: Medium,
        filled_mass_g: u64,
        wall_ms: i64,
    ) -> Result<Vec<Refusal>, StoreError> {
        let row = self.row(code)?.ok_or(StoreError::UnknownCylinder(*code))?;
        Ok(check_fill(
            &self.judge.table,
            &FillCheck {
                archive: &row.archive,
                state: &row.state,
                today: self.judge.day(wall_ms),
                station_enterprise: &self.judge.enterprise,
                medium: Some(medium),
                filled_mass_kg: Some(filled_mass_g as f64 / 1000.0),
            },
        ))
    }

    /// Brings a cylinder's derived row and anomalies up to date after `fresh` events of it
    /// were stored in this transaction. Usually they sort after everything it held: then
    /// the row is folded forward and only the recent events are read, so a write does not
    /// cost the cylinder's whole history; otherwise the history is judged again.
    pub(crate) fn cylinder_changed(
        &mut self,
        code: &FullCode,
        old: &CylinderRow,
        fresh: &[SignedEvent],
    ) -> Result<CylinderRow, StoreError> {
        let recent = match recent_after_ms(fresh) {
            Some(after) => self.recent_history(code, after, fresh)?,
            None => Vec::new(),
        };
        if let Some(a) = appended(&old.archive, &old.state, &recent, fresh, self.judge) {
            let row = CylinderRow { state: a.state, archive: old.archive.clone() };
            self.put_row(code, Some(old), &row)?;
            let mut found = a.fills;
            found.extend(a.two_places);
            found.extend(self.tag_anomalies(code, &row, None)?);
            let from = a.two_places_from_ms;
            self.replace_anomalies(
                code,
                Some(&|x: &Anomaly| {
                    x.kind == AnomalyKind::TagOnTwoCylinders || (x.kind == AnomalyKind::TwoPlaces && x.at_ms >= from)
                }),
                &found,
            )?;
            return Ok(row);
        }
        let history = self.history(code)?;
        let row = CylinderRow { state: derive(&old.archive, &history), archive: old.archive.clone() };
        self.put_row(code, Some(old), &row)?;
        self.refresh_anomalies(code, &row, &history)?;
        Ok(row)
    }

    /// The latest events of a cylinder, back to the first whose HLC is at or before
    /// `after_ms`: with it, every event whose wall time is after `after_ms` (a node's HLC
    /// never runs behind its wall clock; received events that do are refused). Those of
    /// `fresh` are left out, not decoded: the caller has them (in a first sync they were
    /// all of them, and decoding them again was a third of `cylinder_changed`).
    fn recent_history(
        &self,
        code: &FullCode,
        after_ms: i64,
        fresh: &[SignedEvent],
    ) -> Result<Vec<SignedEvent>, StoreError> {
        let events = self.tx.open_table(EVENTS_TABLE)?;
        let (lo, hi) = prefix_range(code.as_bytes());
        let mut recent = Vec::new();
        for item in events.range(lo.as_slice()..hi.as_slice())?.rev() {
            let (k, v) = item?;
            // An event key: the 16-byte code, the 12-byte HLC (physical time first), the id.
            let key = k.value();
            let physical = key.get(16..24).and_then(|b| <[u8; 8]>::try_from(b).ok());
            let physical = physical.ok_or_else(|| StoreError::Corrupt("event key shorter than its HLC".into()))?;
            if Hlc::physical_ms_of_key(physical) <= after_ms {
                break;
            }
            // The events just stored are at hand already (`appended` takes them apart).
            if fresh.iter().any(|e| key.ends_with(&e.id.0)) {
                continue;
            }
            recent.push(decode_keyed_event(key, v.value())?);
        }
        Ok(recent)
    }

    /// Replaces the stored anomalies of one cylinder with those its history shows now.
    pub(crate) fn refresh_anomalies(
        &mut self,
        code: &FullCode,
        row: &CylinderRow,
        history: &[SignedEvent],
    ) -> Result<(), StoreError> {
        let mut found = cylinder_anomalies(&row.archive, history, self.judge);
        found.extend(self.tag_anomalies(code, row, Some(history))?);
        self.replace_anomalies(code, None, &found)
    }

    /// The anomalies of the tags bound to this cylinder that are bound to others too; the
    /// cylinder's history is read when one is (unless given).
    fn tag_anomalies(
        &self,
        code: &FullCode,
        row: &CylinderRow,
        history: Option<&[SignedEvent]>,
    ) -> Result<Vec<Anomaly>, StoreError> {
        let mut found = Vec::new();
        for tag in &row.state.tags {
            let codes: Vec<FullCode> = {
                let idx = self.tx.open_multimap_table(CYLINDER_INDEX_TABLE)?;
                let mut codes = Vec::new();
                for c in idx.get(format!("tag:{tag}").as_str())? {
                    codes.push(code_of(c?.value())?);
                }
                codes
            };
            if codes.len() < 2 {
                continue;
            }
            let mut histories = Vec::with_capacity(codes.len());
            for c in &codes {
                let h = match history {
                    Some(h) if c == code => h.to_vec(),
                    _ => self.history(c)?,
                };
                histories.push((*c, h));
            }
            let bindings: Vec<(FullCode, Vec<&SignedEvent>)> = histories
                .iter()
                .map(|(c, h)| {
                    let binds = h.iter().filter(|e| matches!(&e.event.body, EventBody::BindTag { tag: t } if t == tag));
                    (*c, binds.collect())
                })
                .collect();
            found.extend(tag_anomaly(tag, &bindings));
        }
        Ok(found)
    }

    /// Removes the stored anomalies of one cylinder that `drop` picks (all with `None`)
    /// and stores `add`.
    fn replace_anomalies(
        &mut self,
        code: &FullCode,
        drop: Option<&dyn Fn(&Anomaly) -> bool>,
        add: &[Anomaly],
    ) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(ANOMALIES_TABLE)?;
        let (lo, hi) = cylinder_range(code);
        let old: Vec<Vec<u8>> = {
            let mut keys = Vec::new();
            for item in t.range(lo.as_slice()..=hi.as_slice())? {
                let (k, v) = item?;
                let dropped = match drop {
                    None => true,
                    Some(drop) => {
                        let a: Anomaly = postcard::from_bytes(v.value())
                            .map_err(|e| StoreError::Corrupt(format!("stored anomaly: {e}")))?;
                        drop(&a)
                    }
                };
                if dropped {
                    keys.push(k.value().to_vec());
                }
            }
            keys
        };
        for k in old {
            t.remove(k.as_slice())?;
        }
        for a in add {
            let bytes = postcard::to_allocvec(a).map_err(|e| StoreError::Invalid(format!("anomaly: {e}")))?;
            t.insert(key(code, a).as_slice(), bytes.as_slice())?;
        }
        Ok(())
    }
}

/// Which anomalies to list.
#[derive(Debug, Clone, Default)]
pub struct AnomalyFilter {
    pub kind: Option<AnomalyKind>,
    pub cylinder: Option<FullCode>,
}

impl Store {
    /// Anomalies, newest first, each once.
    pub fn anomalies(&self, filter: &AnomalyFilter) -> Result<Vec<Anomaly>, StoreError> {
        let r = self.read()?;
        let t = r.open_table(ANOMALIES_TABLE)?;
        let mut by_id = BTreeMap::new();
        let (lo, hi) = match &filter.cylinder {
            Some(code) => cylinder_range(code),
            None => (Vec::new(), vec![0xff; 48]),
        };
        for item in t.range(lo.as_slice()..=hi.as_slice())? {
            let (k, v) = item?;
            let a: Anomaly =
                postcard::from_bytes(v.value()).map_err(|e| StoreError::Corrupt(format!("anomaly row: {e}")))?;
            if filter.kind.is_none_or(|kind| kind == a.kind) {
                let id: [u8; 32] = k.value()[16..].try_into().map_err(|_| StoreError::Corrupt("anomaly key".into()))?;
                by_id.insert(id, a);
            }
        }
        // Newest first; ties by id (the map's key: not hashed again per comparison).
        let mut out: Vec<([u8; 32], Anomaly)> = by_id.into_iter().collect();
        out.sort_by(|(ia, a), (ib, b)| b.at_ms.cmp(&a.at_ms).then_with(|| ia.cmp(ib)));
        Ok(out.into_iter().map(|(_, a)| a).collect())
    }

    /// How many anomalies of each kind are listed (for `/metrics`: no sorting, and each
    /// anomaly counted once however many cylinders it names).
    pub fn anomaly_counts(&self) -> Result<BTreeMap<AnomalyKind, u64>, StoreError> {
        let r = self.read()?;
        let t = r.open_table(ANOMALIES_TABLE)?;
        let mut seen = std::collections::BTreeSet::new();
        let mut counts = BTreeMap::new();
        for item in t.iter()? {
            let (k, v) = item?;
            let id: [u8; 32] = k.value()[16..].try_into().map_err(|_| StoreError::Corrupt("anomaly key".into()))?;
            if seen.insert(id) {
                let a: Anomaly =
                    postcard::from_bytes(v.value()).map_err(|e| StoreError::Corrupt(format!("anomaly row: {e}")))?;
                *counts.entry(a.kind).or_default() += 1;
            }
        }
        Ok(counts)
    }
}
