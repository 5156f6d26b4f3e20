//! The invariants, checked after the heal against the global history: the events every
//! handheld was told were stored (and the set-up's), with the pure functions of `schema`
//! (derivation, anomalies) applied to it.

use std::collections::BTreeSet;

use node::store::anomalies::AnomalyFilter;
use schema::anomaly::{AnomalyKind, Judge, cylinder_anomalies};
use schema::event::EventId;
use schema::state::derive;

use super::workload::code;
use super::{ENTERPRISE, Failure, World, store_err};

/// Whether every node holds the same events and documents.
pub fn agreed(w: &World) -> anyhow::Result<bool> {
    let first = w.nodes[0].store.fingerprints().map_err(store_err)?;
    for n in &w.nodes[1..] {
        if n.store.fingerprints().map_err(store_err)? != first {
            return Ok(false);
        }
    }
    Ok(true)
}

fn fail(invariant: &'static str, detail: String) -> anyhow::Result<Result<(), Failure>> {
    Ok(Err(Failure { invariant, detail }))
}

pub fn check(w: &World) -> anyhow::Result<Result<(), Failure>> {
    if !agreed(w)? {
        return fail("identical sets", "fingerprints differ after convergence".into());
    }
    let acked: Vec<EventId> = w.acked.keys().copied().collect();
    for n in &w.nodes {
        let (_, events) = n.store.counts().map_err(store_err)?;
        let found = n.store.events_by_id(&acked).map_err(store_err)?;
        if found.len() != acked.len() {
            let have: BTreeSet<EventId> = found.iter().map(|e| e.id).collect();
            let lost = acked.iter().find(|id| !have.contains(id));
            return fail("no acknowledged operation lost", format!("{} lacks event {lost:?}", n.name));
        }
        if events != acked.len() as u64 {
            return fail(
                "nothing unacknowledged",
                format!("{} holds {events} events, {} were acknowledged", n.name, acked.len()),
            );
        }
    }
    let judge = Judge::embedded(ENTERPRISE);
    let mut expected = BTreeSet::new();
    for i in 0..w.cfg.cylinders {
        let c = code(i);
        let office = &w.nodes[0].store;
        let history = office.events_of(&c, usize::MAX).map_err(store_err)?;
        let Some(row) = office.cylinder(&c).map_err(store_err)? else {
            return fail("identical states", format!("the head office lacks cylinder {c}"));
        };
        let oracle = derive(&row.archive, &history);
        for n in &w.nodes {
            let theirs = n.store.cylinder(&c).map_err(store_err)?;
            if theirs.as_ref().map(|r| (&r.archive, &r.state)) != Some((&row.archive, &oracle)) {
                return fail("identical states", format!("{} differs from the history's state for {c}", n.name));
            }
        }
        if w.work.scrapped.contains_key(&c) && oracle.scrapped.is_none() {
            return fail("no safety fact lost", format!("acknowledged scrap of {c} is not in its state"));
        }
        for a in cylinder_anomalies(&row.archive, &history, &judge) {
            // A fill the scrapping node already held when it scrapped came before the
            // scrap: the history must not show it after.
            if a.kind == AnomalyKind::FillAfterScrap
                && let Some((fill, before)) = a.events.split_last()
                && before.iter().any(|s| w.work.fills_before_scrap.get(s).is_some_and(|f| f.contains(fill)))
            {
                return fail("causal order", format!("{c}: a fill the scrapping node held sorts after its scrap"));
            }
            expected.insert(a.id());
        }
    }
    for (c, finding) in w.work.holds.keys() {
        let row = w.nodes[0].store.cylinder(c).map_err(store_err)?;
        if !row.is_some_and(|r| r.state.regulator_holds.contains_key(finding)) {
            return fail("no safety fact lost", format!("acknowledged hold {finding} of {c} is not in its state"));
        }
    }
    for n in &w.nodes {
        let listed: BTreeSet<[u8; 32]> =
            n.store.anomalies(&AnomalyFilter::default()).map_err(store_err)?.iter().map(|a| a.id()).collect();
        if listed != expected {
            return fail(
                "anomalies exactly",
                format!("{} lists {} anomalies, the history has {}", n.name, listed.len(), expected.len()),
            );
        }
    }
    Ok(Ok(()))
}
