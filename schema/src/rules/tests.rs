//! One table-driven test per rule, with the dates on both sides of each boundary.

use super::*;
use crate::archive::tests::sample;
use crate::state::derive;

fn day(s: &str) -> Day {
    s.parse().unwrap()
}

struct Case {
    name: &'static str,
    archive: fn(&mut CylinderArchive),
    state: fn(&mut CylinderState),
    today: &'static str,
    medium: Option<Medium>,
    mass: Option<f64>,
    expect: &'static [Rule],
}

fn none_a(_: &mut CylinderArchive) {}
fn none_s(_: &mut CylinderState) {}

/// The sample archive: LPG, GB 5842-2006, made 2020-03-01, next inspection 2028-03-01,
/// 35.5 L (max fill 14.91 kg at 0.42 kg/L), tare 15 kg, owned by 3701020001.
fn check(cases: &[Case]) {
    let table = RuleTable::embedded();
    for c in cases {
        let mut a = sample();
        (c.archive)(&mut a);
        let mut s = derive(&a, &[]);
        // Recent activity unless the case says otherwise.
        s.last_activity_ms = Some(1_764_000_000_000); // 2025-11-24
        (c.state)(&mut s);
        let got: Vec<Rule> = check_fill(
            &table,
            &FillCheck {
                archive: &a,
                state: &s,
                today: day(c.today),
                station_enterprise: "3701020001",
                medium: c.medium,
                filled_mass_kg: c.mass,
            },
        )
        .into_iter()
        .map(|r| r.rule)
        .collect();
        assert_eq!(got, c.expect, "case {}", c.name);
    }
}

#[test]
fn a_good_cylinder_is_allowed() {
    check(&[Case {
        name: "good",
        archive: none_a,
        state: none_s,
        today: "2026-11-25",
        medium: Some(Medium::Lpg),
        mass: Some(14.5),
        expect: &[],
    }]);
}

#[test]
fn inspection_overdue() {
    check(&[
        Case {
            name: "day before due",
            archive: |a| a.design_life_years = Some(30),
            state: none_s,
            today: "2028-02-29",
            medium: None,
            mass: None,
            expect: &[],
        },
        Case {
            name: "due date",
            archive: |a| a.design_life_years = Some(30),
            state: none_s,
            today: "2028-03-01",
            medium: None,
            mass: None,
            expect: &[Rule::InspectionOverdue],
        },
        Case {
            name: "no dates: manufacture + 4 y",
            archive: |a| {
                a.last_inspection = None;
                a.next_inspection = None;
            },
            state: none_s,
            today: "2024-02-29",
            medium: None,
            mass: None,
            expect: &[],
        },
        Case {
            name: "no dates: manufacture + 4 y reached",
            archive: |a| {
                a.last_inspection = None;
                a.next_inspection = None;
            },
            state: none_s,
            today: "2024-03-01",
            medium: None,
            mass: None,
            expect: &[Rule::InspectionOverdue],
        },
    ]);
}

#[test]
fn scrapped_and_failed_inspection() {
    check(&[
        Case {
            name: "scrapped",
            archive: none_a,
            state: |s| s.scrapped = Some(crate::event::EventId([1; 32])),
            today: "2026-01-01",
            medium: None,
            mass: None,
            expect: &[Rule::Scrapped],
        },
        Case {
            name: "failed",
            archive: none_a,
            state: |s| s.inspection_hold = Some("inspection_failed:R".into()),
            today: "2026-01-01",
            medium: None,
            mass: None,
            expect: &[Rule::FailedInspection],
        },
    ]);
}

#[test]
fn past_design_life_with_the_one_time_lpg_extension() {
    // GB 5842-2006: 8 y life, ends 2028-03-01; extension of 4 y with a passed inspection
    // in the last year of life.
    check(&[
        Case {
            name: "8 y minus a day",
            archive: |a| a.next_inspection = Day::ymd(2030, 1, 1),
            state: none_s,
            today: "2028-02-29",
            medium: None,
            mass: None,
            expect: &[],
        },
        Case {
            name: "8 y",
            archive: |a| a.next_inspection = Day::ymd(2030, 1, 1),
            state: none_s,
            today: "2028-03-01",
            medium: None,
            mass: None,
            expect: &[Rule::PastDesignLife],
        },
        Case {
            name: "extended, 12 y minus a day",
            archive: |a| a.next_inspection = Day::ymd(2033, 1, 1),
            state: |s| {
                s.last_passed_inspection = Day::ymd(2027, 3, 1);
                s.last_activity_ms = Some(1_930_000_000_000);
            },
            today: "2032-02-29",
            medium: None,
            mass: None,
            expect: &[],
        },
        Case {
            name: "extended, 12 y",
            archive: |a| a.next_inspection = Day::ymd(2033, 1, 1),
            state: |s| {
                s.last_passed_inspection = Day::ymd(2027, 3, 1);
                s.last_activity_ms = Some(1_930_000_000_000);
            },
            today: "2032-03-01",
            medium: None,
            mass: None,
            expect: &[Rule::PastDesignLife],
        },
        Case {
            name: "inspection too early for the extension",
            archive: |a| a.next_inspection = Day::ymd(2030, 1, 1),
            state: |s| s.last_passed_inspection = Day::ymd(2027, 2, 28),
            today: "2028-03-01",
            medium: None,
            mass: None,
            expect: &[Rule::PastDesignLife],
        },
        Case {
            name: "GB 5842-1996: 15 y",
            archive: |a| {
                a.standard = "GB5842-1996".into();
                a.manufactured = Day::ymd(2011, 3, 1).unwrap();
                a.last_inspection = None;
            },
            state: none_s,
            today: "2026-03-01",
            medium: None,
            mass: None,
            expect: &[Rule::PastDesignLife],
        },
        Case {
            name: "stamped life wins",
            archive: |a| a.design_life_years = Some(10),
            state: none_s,
            today: "2028-03-01",
            medium: None,
            mass: None,
            expect: &[Rule::InspectionOverdue],
        },
    ]);
}

#[test]
fn fill_count_limit_from_an_enterprise_override() {
    let table = RuleTable::embedded()
        .with_overrides(
            r#"version = "ent-1"
[[fill_count_limit]]
variety = "lpg-welded-steel"
limit = 3
source = "企业规定"
"#,
        )
        .unwrap();
    assert_eq!(table.version, "cn-2026.11.1+ent-1");
    let a = sample();
    for (count, expect) in [(2, vec![]), (3, vec![Rule::FillCountLimit])] {
        let mut s = derive(&a, &[]);
        s.last_activity_ms = Some(1_764_000_000_000);
        s.fill_count = count;
        let got: Vec<Rule> = check_fill(
            &table,
            &FillCheck {
                archive: &a,
                state: &s,
                today: day("2026-01-01"),
                station_enterprise: "3701020001",
                medium: None,
                filled_mass_kg: None,
            },
        )
        .into_iter()
        .map(|r| r.rule)
        .collect();
        assert_eq!(got, expect, "count {count}");
    }
}

#[test]
fn ownership() {
    check(&[
        Case {
            name: "entrusted",
            archive: |a| a.property = PropertyKind::Entrusted,
            state: none_s,
            today: "2026-01-01",
            medium: None,
            mass: None,
            expect: &[],
        },
        Case {
            name: "other owner",
            archive: |a| a.owner = "3701260001".into(),
            state: none_s,
            today: "2026-01-01",
            medium: None,
            mass: None,
            expect: &[Rule::NotOwnCylinder],
        },
        Case {
            name: "customer property",
            archive: |a| {
                a.property = PropertyKind::Customer;
                a.customer = Some("C1".into());
            },
            state: none_s,
            today: "2026-01-01",
            medium: None,
            mass: None,
            expect: &[Rule::NotOwnCylinder],
        },
    ]);
}

#[test]
fn medium_tare_and_overfill() {
    check(&[
        Case {
            name: "wrong medium",
            archive: none_a,
            state: none_s,
            today: "2026-01-01",
            medium: Some(Medium::Propane),
            mass: None,
            expect: &[Rule::MediumMismatch],
        },
        Case {
            name: "tare unknown",
            archive: |a| a.tare_kg = None,
            state: none_s,
            today: "2026-01-01",
            medium: None,
            mass: None,
            expect: &[Rule::TareUnknown],
        },
        Case {
            name: "at max (35.5 × 0.42 = 14.91)",
            archive: none_a,
            state: none_s,
            today: "2026-01-01",
            medium: None,
            mass: Some(14.91),
            expect: &[],
        },
        Case {
            name: "over max",
            archive: none_a,
            state: none_s,
            today: "2026-01-01",
            medium: None,
            mass: Some(14.92),
            expect: &[Rule::Overfill],
        },
        Case {
            name: "rated max wins",
            archive: |a| a.rated_max_fill_kg = Some(14.5),
            state: none_s,
            today: "2026-01-01",
            medium: None,
            mass: Some(14.6),
            expect: &[Rule::Overfill],
        },
        Case {
            name: "compressed gas: no mass rule, no tare rule",
            archive: |a| {
                a.medium = Medium::Oxygen;
                a.variety = Variety::SeamlessSteel;
                a.tare_kg = None;
                a.standard = "GB/T 5099".into();
            },
            state: none_s,
            today: "2026-01-01",
            medium: Some(Medium::Oxygen),
            mass: Some(100.0),
            expect: &[],
        },
    ]);
}

#[test]
fn regulator_hold_and_out_of_service() {
    check(&[
        Case {
            name: "hold",
            archive: none_a,
            state: |s| {
                s.regulator_holds.insert("F-1".into(), "n".into());
            },
            today: "2026-01-01",
            medium: None,
            mass: None,
            expect: &[Rule::RegulatorHold],
        },
        // Last activity 2025-11-24; LPG interval 4 y.
        Case {
            name: "idle 4 y minus a day",
            archive: |a| a.next_inspection = Day::ymd(2031, 1, 1),
            state: |s| s.last_inspection = None,
            today: "2029-11-23",
            medium: None,
            mass: None,
            expect: &[Rule::PastDesignLife],
        },
        Case {
            name: "idle 4 y",
            archive: |a| {
                a.next_inspection = Day::ymd(2031, 1, 1);
                a.design_life_years = Some(30);
            },
            state: |s| s.last_inspection = None,
            today: "2029-11-24",
            medium: None,
            mass: None,
            expect: &[Rule::OutOfServiceTooLong],
        },
    ]);
}

#[test]
fn every_failing_rule_is_listed() {
    check(&[Case {
        name: "everything wrong",
        archive: |a| {
            a.owner = "3701260001".into();
            a.tare_kg = None;
        },
        state: |s| {
            s.scrapped = Some(crate::event::EventId([1; 32]));
            s.regulator_holds.insert("F".into(), String::new());
        },
        today: "2029-01-01",
        medium: Some(Medium::Oxygen),
        mass: Some(20.0),
        expect: &[
            Rule::Scrapped,
            Rule::InspectionOverdue,
            Rule::PastDesignLife,
            Rule::NotOwnCylinder,
            Rule::MediumMismatch,
            Rule::TareUnknown,
            Rule::Overfill,
            Rule::RegulatorHold,
        ],
    }]);
    let r = check_fill(
        &RuleTable::embedded(),
        &FillCheck {
            archive: &sample(),
            state: &derive(&sample(), &[]),
            today: day("2029-01-01"),
            station_enterprise: "3701020001",
            medium: None,
            filled_mass_kg: None,
        },
    );
    assert!(r.iter().all(|r| !r.message_zh.is_empty() && !r.message_en.is_empty() && !r.regulation.is_empty()));
}

#[test]
fn the_embedded_table_parses_and_bad_tables_are_refused() {
    let t = RuleTable::embedded();
    assert_eq!(t.interval_years(Variety::LpgWeldedSteel, Medium::Lpg), 4);
    assert_eq!(t.interval_years(Variety::SeamlessSteel, Medium::Nitrogen), 5);
    assert_eq!(t.interval_years(Variety::SeamlessSteel, Medium::Oxygen), 3);
    assert_eq!(t.interval_years(Variety::AluminiumSeamless, Medium::Oxygen), 3);
    assert!(matches!(RuleTable::parse("version = 1"), Err(RuleTableError::Parse(_))));
    let zero = DEFAULT_TABLE_TOML.replace("default_interval_years = 3", "default_interval_years = 0");
    assert!(matches!(RuleTable::parse(&zero), Err(RuleTableError::Invalid(_))));
}
