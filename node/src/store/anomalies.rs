//! Anomalies as the store keeps them: recomputed for a cylinder whenever data that can make
//! or clear one arrives (events or an archive from a peer, a local handling event, a tag
//! binding, a correction), so `GET /api/v1/anomalies` is a table scan, not a derivation.
//!
//! A cylinder's anomalies live under its code; an anomaly of two cylinders (a shared tag)
//! is kept under each cylinder that found it and listed once, by its id.

use std::collections::BTreeMap;

use redb::{ReadableMultimapTable, ReadableTable};
use schema::anomaly::{Anomaly, AnomalyKind, cylinder_anomalies, tag_anomaly};
use schema::codes::FullCode;
use schema::event::{EventBody, SignedEvent};
use schema::rules::{FillCheck, Refusal, check_fill};
use schema::vocab::Medium;

use super::tables::{ANOMALIES_TABLE, CYLINDER_INDEX_TABLE};
use super::{CylinderRow, Store, StoreError, WriteCtx, code_of};

/// Whether a newly recorded local event can make or clear an anomaly. A local event
/// sorts after everything this node has seen (its clock observes received events), so
/// usually only it can offend; but a scrap or hold can also turn a fill that arrived
/// earlier with a later timestamp (a peer's clock ahead) into an anomaly, so every kind
/// but the registration is checked.
pub(crate) fn may_change_anomalies(body: &EventBody) -> bool {
    !matches!(body, EventBody::Register { .. })
}

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

    /// Replaces the stored anomalies of one cylinder with those its history shows now.
    pub(crate) fn refresh_anomalies(
        &mut self,
        code: &FullCode,
        row: &CylinderRow,
        history: &[SignedEvent],
    ) -> Result<(), StoreError> {
        let mut found = cylinder_anomalies(&row.archive, history, self.judge);
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
                histories.push((*c, if c == code { history.to_vec() } else { self.history(c)? }));
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
        let mut t = self.tx.open_table(ANOMALIES_TABLE)?;
        let (lo, hi) = cylinder_range(code);
        let old: Vec<Vec<u8>> = {
            let mut keys = Vec::new();
            for item in t.range(lo.as_slice()..=hi.as_slice())? {
                keys.push(item?.0.value().to_vec());
            }
            keys
        };
        for k in old {
            t.remove(k.as_slice())?;
        }
        for a in &found {
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
