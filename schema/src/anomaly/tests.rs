//! Each anomaly kind is found exactly for its forbidden history, in any arrival order.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use super::*;
use crate::archive::tests::sample;
use crate::event::tests::{event, key};
use crate::event::{CorrectionReason, FindingAction};
use crate::vocab::Medium;

/// 2026-05-28 in ms; one minute.
const T: i64 = 1_780_000_000_000;
const MIN: i64 = 60_000;

fn at(k: &SigningKey, ms: i64, place: &str, body: EventBody) -> SignedEvent {
    let mut e = event(k, ms, body);
    e.place = place.into();
    e.sign(k)
}

fn fill() -> EventBody {
    EventBody::Fill { medium: Medium::Lpg, filled_mass_g: 14_500, batch: None }
}

fn judge() -> Judge {
    Judge::embedded(&sample().owner)
}

fn kinds(found: &[Anomaly]) -> Vec<AnomalyKind> {
    found.iter().map(|a| a.kind).collect()
}

#[test]
fn a_fill_after_a_scrap_elsewhere_is_flagged_with_both_events() {
    let (station, office) = (key(1), key(2));
    let scrap = at(&office, T, "head-office", EventBody::Scrap { reason: "crack".into() });
    let late_fill = at(&station, T + 30 * MIN, "S1", fill());
    let found = cylinder_anomalies(&sample(), &[late_fill.clone(), scrap.clone()], &judge());
    assert_eq!(kinds(&found), [AnomalyKind::FillAfterScrap]);
    assert_eq!(found[0].events, [scrap.id, late_fill.id]);
    assert_eq!(found[0].at_ms, T + 30 * MIN);

    // A fill before the scrap is history, not an anomaly.
    let early_fill = at(&station, T - 30 * MIN, "S1", fill());
    assert!(cylinder_anomalies(&sample(), &[early_fill, scrap.clone()], &judge()).is_empty());

    // A correction of the fill does not hide it (a fill is a safety fact).
    let correction = at(
        &station,
        T + 40 * MIN,
        "S1",
        EventBody::Correction { target: late_fill.id, reason: CorrectionReason::DidNotOccur, note: String::new() },
    );
    let found = cylinder_anomalies(&sample(), &[scrap, late_fill, correction], &judge());
    assert_eq!(kinds(&found), [AnomalyKind::FillAfterScrap]);
}

#[test]
fn a_fill_during_a_regulator_hold_is_flagged_until_the_release() {
    let (station, regulator) = (key(1), key(3));
    let finding = |action, ms| {
        at(&regulator, ms, "R", EventBody::RegulatorFinding { action, finding: "F-1".into(), note: String::new() })
    };
    let hold = finding(FindingAction::Hold, T);
    let during = at(&station, T + 20 * MIN, "S1", fill());
    let release = finding(FindingAction::Release, T + 40 * MIN);
    let after = at(&station, T + 60 * MIN, "S1", fill());
    let found = cylinder_anomalies(&sample(), &[after, release, during.clone(), hold.clone()], &judge());
    assert_eq!(kinds(&found), [AnomalyKind::FillDuringHold]);
    assert_eq!(found[0].events, [hold.id, during.id]);
}

#[test]
fn a_fill_the_rules_refuse_is_flagged_with_the_rules() {
    let (a, b) = (key(1), key(2));
    let failed_check = at(&b, T, "S2", EventBody::PreFillCheck { passed: false, failed_items: vec!["valve".into()] });
    let f = at(&a, T + 20 * MIN, "S2", fill());
    let found = cylinder_anomalies(&sample(), &[failed_check, f.clone()], &judge());
    assert_eq!(kinds(&found), [AnomalyKind::RefusedFill]);
    assert_eq!(found[0].rules, ["failed_inspection"]);
    assert_eq!(found[0].events, [f.id]);

    // An overfill is refused too; a normal fill is not.
    let over = at(&a, T, "S1", EventBody::Fill { medium: Medium::Lpg, filled_mass_g: 20_000, batch: None });
    assert_eq!(cylinder_anomalies(&sample(), &[over], &judge())[0].rules, ["overfill"]);
    assert!(cylinder_anomalies(&sample(), &[at(&a, T, "S1", fill())], &judge()).is_empty());
}

#[test]
fn two_places_needs_two_nodes_two_places_and_a_short_window() {
    let (a, b) = (key(1), key(2));
    let here = at(&a, T, "W-A", EventBody::ReceiveEmpty { warehouse: "W-A".into() });
    let there = |ms| at(&b, ms, "W-B", EventBody::ReceiveEmpty { warehouse: "W-B".into() });
    let found = cylinder_anomalies(&sample(), &[here.clone(), there(T + 5 * MIN)], &judge());
    assert_eq!(kinds(&found), [AnomalyKind::TwoPlaces]);
    assert_eq!(found[0].events[0], here.id);
    assert!(cylinder_anomalies(&sample(), &[here.clone(), there(T + 11 * MIN)], &judge()).is_empty());
    // The same node moving a cylinder between its own places is normal work.
    let same_node = at(&a, T + MIN, "W-C", EventBody::StoreFull { warehouse: "W-C".into() });
    assert!(cylinder_anomalies(&sample(), &[here.clone(), same_node], &judge()).is_empty());
    // A correction that says one of them did not happen clears it.
    let wrong = there(T + 5 * MIN);
    let correction = at(
        &b,
        T + 6 * MIN,
        "W-B",
        EventBody::Correction { target: wrong.id, reason: CorrectionReason::DidNotOccur, note: String::new() },
    );
    assert!(cylinder_anomalies(&sample(), &[here, wrong, correction], &judge()).is_empty());
}

#[test]
fn a_tag_on_two_cylinders_lists_both_bindings() {
    let k = key(1);
    let bind = |code: &str, ms| {
        let mut e = event(&k, ms, EventBody::BindTag { tag: "T-9".into() });
        e.cylinder = code.parse().unwrap();
        e.sign(&k)
    };
    let (x, y) = (bind("3701020110100002", T + MIN), bind("3701020110100001", T));
    let codes: Vec<FullCode> = ["3701020110100002", "3701020110100001"].iter().map(|c| c.parse().unwrap()).collect();
    assert!(tag_anomaly("T-9", &[(codes[0], vec![&x])]).is_none());
    let a = tag_anomaly("T-9", &[(codes[0], vec![&x]), (codes[1], vec![&y])]).unwrap();
    assert_eq!(a.kind, AnomalyKind::TagOnTwoCylinders);
    assert_eq!(a.cylinders, [codes[1], codes[0]]);
    assert_eq!(a.events, [y.id, x.id]);
    // The id does not depend on which cylinder found it.
    let b = tag_anomaly("T-9", &[(codes[1], vec![&y]), (codes[0], vec![&x])]).unwrap();
    assert_eq!(a.id(), b.id());
}

fn body() -> impl Strategy<Value = EventBody> {
    prop_oneof![
        3 => Just(fill()),
        1 => Just(EventBody::Scrap { reason: "crack".into() }),
        1 => Just(EventBody::ReceiveEmpty { warehouse: "W1".into() }),
        1 => Just(EventBody::PreFillCheck { passed: false, failed_items: vec!["valve".into()] }),
        1 => prop_oneof![Just(FindingAction::Hold), Just(FindingAction::Release)]
            .prop_map(|action| EventBody::RegulatorFinding { action, finding: "F".into(), note: String::new() }),
    ]
}

proptest! {
    /// Anomalies depend on the set of events only: any order, any duplication.
    #[test]
    fn anomalies_do_not_depend_on_arrival_order(
        spec in proptest::collection::vec((0u8..3, 0i64..120, "[A-C]", body()), 1..25),
        seed in any::<u64>(),
    ) {
        let keys = [key(1), key(2), key(3)];
        let events: Vec<SignedEvent> =
            spec.iter().map(|(k, m, p, b)| at(&keys[*k as usize], T + m * MIN, p, b.clone())).collect();
        let mut shuffled = events.clone();
        shuffled.extend(events.iter().take(3).cloned());
        // A deterministic shuffle from the seed.
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        let ids = |found: Vec<Anomaly>| found.iter().map(Anomaly::id).collect::<Vec<_>>();
        prop_assert_eq!(
            ids(cylinder_anomalies(&sample(), &events, &judge())),
            ids(cylinder_anomalies(&sample(), &shuffled, &judge()))
        );
    }
}

fn any_body() -> impl Strategy<Value = EventBody> {
    prop_oneof![
        6 => body(),
        2 => Just(EventBody::StoreFull { warehouse: "W2".into() }),
        1 => Just(EventBody::Deliver { customer: "C1".into(), order: None }),
        1 => Just(EventBody::BindTag { tag: "T-1".into() }),
    ]
}

proptest! {
    /// Events appended to a history, judged from the state before them and the recent
    /// events only, change the anomalies exactly as judging the whole history again does.
    #[test]
    fn appended_events_are_judged_as_the_whole_history_would_be(
        spec in proptest::collection::vec((0u8..3, 0i64..90, 0i64..15, "[A-C]", any_body()), 1..30),
        split in any::<proptest::sample::Index>(),
        corrections in proptest::collection::vec(any::<proptest::sample::Index>(), 0..2),
    ) {
        let keys = [key(1), key(2), key(3)];
        // A node's HLC never runs behind its own wall clock; its wall clock may lag.
        let mut events: Vec<SignedEvent> = spec
            .iter()
            .map(|(k, m, lag, p, b)| {
                let k = &keys[*k as usize];
                let mut e = event(k, T + m * MIN, b.clone());
                e.wall_ms -= lag * MIN;
                e.place = p.clone();
                e.sign(k)
            })
            .collect();
        for c in &corrections {
            let target = c.get(&events).clone();
            let e = event(
                &keys[0],
                target.event.hlc.physical_ms + MIN,
                EventBody::Correction { target: target.id, reason: CorrectionReason::DidNotOccur, note: String::new() },
            );
            events.push(e.sign(&keys[0]));
        }
        events.sort_by_key(|e| e.order_key());
        let (old, new) = events.split_at(split.index(events.len() + 1));
        let before = crate::state::derive(&sample(), old);
        let judged_before = cylinder_anomalies(&sample(), old, &judge());
        let recent: Vec<SignedEvent> = match recent_after_ms(new) {
            Some(after) => old.iter().filter(|e| e.event.wall_ms > after).cloned().collect(),
            None => Vec::new(),
        };
        let appended = appended(&sample(), &before, &recent, new, &judge());
        let may = !new.is_empty()
            && before.regulator_holds.is_empty()
            && new.iter().all(|e| {
                !matches!(e.event.body, EventBody::Correction { .. }) && !before.correction_targets.contains(&e.id)
            });
        prop_assert_eq!(appended.is_some(), may);
        let Some(a) = appended else { return Ok(()) };
        prop_assert_eq!(&a.state, &crate::state::derive(&sample(), &events));
        let mut expected = cylinder_anomalies(&sample(), &events, &judge());
        let mut got: Vec<Anomaly> = judged_before
            .into_iter()
            .filter(|x| !(x.kind == AnomalyKind::TwoPlaces && x.at_ms >= a.two_places_from_ms))
            .chain(a.fills)
            .chain(a.two_places)
            .collect();
        expected.sort_by_key(Anomaly::id);
        got.sort_by_key(Anomaly::id);
        prop_assert_eq!(got, expected);
    }
}
