//! Derivation: order and duplication do not matter; safety facts only grow.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use super::*;
use crate::archive::tests::sample;
use crate::event::{CorrectionReason, Event, NodeId};
use crate::hlc::Hlc;

fn keys() -> [SigningKey; 3] {
    [SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]), SigningKey::from_bytes(&[3; 32])]
}

fn signed(key: &SigningKey, physical_ms: i64, body: EventBody) -> SignedEvent {
    Event {
        cylinder: "3701020110100001".parse().unwrap(),
        hlc: Hlc { physical_ms, logical: 0 },
        wall_ms: physical_ms,
        node: NodeId(key.verifying_key().to_bytes()),
        operator: "op".into(),
        place: "W1".into(),
        body,
    }
    .sign(key)
}

/// Event bodies without a lifting effect (no release, no passed inspection).
fn non_lifting_body() -> impl Strategy<Value = EventBody> {
    prop_oneof![
        Just(EventBody::ReceiveEmpty { warehouse: "W1".into() }),
        (0u64..60_000).prop_map(|g| EventBody::Fill { medium: Medium::Lpg, filled_mass_g: g, batch: None }),
        Just(EventBody::StoreFull { warehouse: "W2".into() }),
        Just(EventBody::Dispatch { order: None, driver: "d".into() }),
        Just(EventBody::Deliver { customer: "c1".into(), order: None }),
        Just(EventBody::Return { customer: "c1".into(), slip: None }),
        Just(EventBody::Scrap { reason: "crack".into() }),
        Just(EventBody::PreFillCheck { passed: false, failed_items: vec!["valve".into()] }),
        "[a-c]".prop_map(|f| EventBody::RegulatorFinding {
            action: FindingAction::Hold,
            finding: f,
            note: String::new()
        }),
        Just(EventBody::InspectionResult {
            passed: false,
            report_no: "R1".into(),
            inspected_on: Day::ymd(2025, 1, 1).unwrap(),
            next_due: None
        }),
        "[a-z]{2}".prop_map(|t| EventBody::BindTag { tag: t }),
    ]
}

fn any_body() -> impl Strategy<Value = EventBody> {
    prop_oneof![
        4 => non_lifting_body(),
        1 => "[a-c]".prop_map(|f| EventBody::RegulatorFinding {
            action: FindingAction::Release,
            finding: f,
            note: String::new()
        }),
        1 => Just(EventBody::InspectionResult {
            passed: true,
            report_no: "R2".into(),
            inspected_on: Day::ymd(2025, 6, 1).unwrap(),
            next_due: Day::ymd(2029, 6, 1)
        }),
    ]
}

fn events(body: impl Strategy<Value = EventBody>, n: usize) -> impl Strategy<Value = Vec<SignedEvent>> {
    proptest::collection::vec((0usize..3, 0i64..50, body), 0..n).prop_map(|v| {
        let keys = keys();
        v.into_iter().map(|(k, t, b)| signed(&keys[k], 1_700_000_000_000 + t * 1000, b)).collect()
    })
}

proptest! {
    #[test]
    fn any_order_or_duplication_gives_the_same_state(
        evs in events(any_body(), 30),
        seed in any::<u64>(),
    ) {
        let archive = sample();
        let expected = derive(&archive, &evs);
        // A deterministic shuffle with duplicates drawn from the seed.
        let mut shuffled = evs.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let dups: Vec<SignedEvent> = shuffled.iter().step_by(3).cloned().collect();
        shuffled.extend(dups);
        prop_assert_eq!(derive(&archive, &shuffled), expected);
    }

    /// Applying events one by one, falling back to a full derivation when `apply`
    /// declines, gives exactly the full derivation.
    #[test]
    fn incremental_application_equals_full_derivation(evs in events(any_body(), 30), fixes in proptest::collection::vec(any::<prop::sample::Index>(), 0..4)) {
        let archive = sample();
        let keys = keys();
        let mut all = evs;
        for idx in fixes {
            if all.is_empty() { break; }
            let target = idx.get(&all).id;
            all.push(signed(&keys[2], 1_700_000_020_000, EventBody::Correction {
                target, reason: CorrectionReason::IncorrectData, note: String::new()
            }));
        }
        let mut seen: Vec<SignedEvent> = Vec::new();
        let mut state = derive(&archive, &[]);
        for e in &all {
            if seen.iter().any(|s| s.id == e.id) { continue; }
            seen.push(e.clone());
            state = apply(&state, e).unwrap_or_else(|| derive(&archive, &seen));
            prop_assert_eq!(&state, &derive(&archive, &seen));
        }
    }

    #[test]
    fn adding_events_never_removes_a_safety_fact(
        base in events(any_body(), 25),
        more in events(non_lifting_body(), 25),
        corrections in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
    ) {
        let archive = sample();
        let before = derive(&archive, &base).safety_facts();
        let mut all = base.clone();
        all.extend(more.clone());
        // Corrections of any existing event, safety facts included.
        let keys = keys();
        for idx in corrections {
            if all.is_empty() { break; }
            let target = idx.get(&all).id;
            all.push(signed(&keys[0], 1_700_000_100_000, EventBody::Correction {
                target, reason: CorrectionReason::DidNotOccur, note: String::new()
            }));
        }
        let after = derive(&archive, &all).safety_facts();
        prop_assert!(before.is_subset(&after), "lost facts: {:?}", before.difference(&after).collect::<Vec<_>>());
    }

    #[test]
    fn scrap_is_absorbing_whatever_comes_later(base in events(any_body(), 20), more in events(any_body(), 20)) {
        let archive = sample();
        let keys = keys();
        let mut all = base;
        all.push(signed(&keys[1], 1_700_000_010_000, EventBody::Scrap { reason: "x".into() }));
        all.extend(more);
        let s = derive(&archive, &all);
        prop_assert!(s.scrapped.is_some());
        prop_assert_eq!(s.location, Location::Scrapped);
    }
}

#[test]
fn a_release_lifts_only_the_finding_it_names() {
    let [k, ..] = keys();
    let hold = |f: &str, t| {
        signed(&k, t, EventBody::RegulatorFinding { action: FindingAction::Hold, finding: f.into(), note: "n".into() })
    };
    let release = |f: &str, t| {
        signed(
            &k,
            t,
            EventBody::RegulatorFinding { action: FindingAction::Release, finding: f.into(), note: String::new() },
        )
    };
    let s = derive(&sample(), &[hold("F1", 1), hold("F2", 2), release("F1", 3)]);
    assert_eq!(s.regulator_holds.keys().collect::<Vec<_>>(), ["F2"]);
    // A release older (in HLC order) than the hold does not lift it.
    let s = derive(&sample(), &[release("F1", 1), hold("F1", 2)]);
    assert!(s.regulator_holds.contains_key("F1"));
}

#[test]
fn a_correction_cancels_a_movement_but_not_a_fill() {
    let [k, ..] = keys();
    let store = signed(&k, 1, EventBody::StoreFull { warehouse: "W9".into() });
    let fill = signed(&k, 2, EventBody::Fill { medium: Medium::Lpg, filled_mass_g: 14_000, batch: None });
    let fix = |t: EventId| {
        signed(&k, 3, EventBody::Correction { target: t, reason: CorrectionReason::DidNotOccur, note: String::new() })
    };
    let s = derive(&sample(), &[store.clone(), fill.clone(), fix(store.id), fix(fill.id)]);
    assert_eq!(s.location, Location::Unknown);
    assert_eq!(s.fill_count, 1);
    assert_eq!(s.corrected.len(), 2);
}

#[test]
fn a_later_passed_inspection_lifts_the_hold_and_moves_the_due_date() {
    let [k, ..] = keys();
    let failed = signed(&k, 1, EventBody::PreFillCheck { passed: false, failed_items: vec!["阀门".into()] });
    let passed = signed(
        &k,
        2,
        EventBody::InspectionResult {
            passed: true,
            report_no: "JY-1".into(),
            inspected_on: Day::ymd(2026, 1, 5).unwrap(),
            next_due: Day::ymd(2030, 1, 5),
        },
    );
    let held = derive(&sample(), std::slice::from_ref(&failed));
    assert!(held.inspection_hold.is_some());
    assert_eq!(held.location, Location::AtInspection);
    let s = derive(&sample(), &[failed, passed]);
    assert_eq!(s.inspection_hold, None);
    assert_eq!(s.next_inspection, Day::ymd(2030, 1, 5));
    assert_eq!(s.last_passed_inspection, Day::ymd(2026, 1, 5));
}
