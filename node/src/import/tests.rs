//! Import of the CSV and XLSX templates: good rows kept, every bad row rejected with its
//! reason, the templates themselves import cleanly.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;

fn store() -> Store {
    Store::in_memory(Arc::new(ManualClock::at(1_795_579_200_000))).unwrap()
}

fn region() -> RegionCode {
    "370102".parse().unwrap()
}

fn check_fixture(file: &str) {
    let store = store();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/import").join(file);
    let report = import(&store, &path, region(), "3701020001", "import", &|_, _| {}).unwrap();
    assert_eq!(report.imported, 2, "{file}: {report:?}");
    let rows: Vec<usize> = report.rejected.iter().map(|r| r.row).collect();
    assert_eq!(rows, [3, 4, 5, 6, 7], "{file}: {report:?}");
    let reasons: Vec<&str> = report.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert!(reasons[0].starts_with("code:"), "{reasons:?}");
    assert!(reasons[1].starts_with("medium:"), "{reasons:?}");
    assert!(reasons[2].starts_with("manufactured:"), "{reasons:?}");
    assert!(reasons[3].contains("water_volume_l"), "{reasons:?}");
    assert!(reasons[4].contains("already registered"), "{reasons:?}");
    // The good rows are there, with their fields.
    let code: FullCode = "3701020110100107".parse().unwrap();
    let row = store.cylinder(&code).unwrap().unwrap();
    assert_eq!(row.archive.medium, schema::vocab::Medium::CarbonDioxide);
    assert_eq!(row.archive.manufactured.to_string(), "2022-04-01", "year-month is normalised to day 1");
    assert_eq!(row.archive.property, schema::vocab::PropertyKind::Entrusted);
    assert!(row.state.tags.contains("X-7"));
    assert_eq!(store.counts().unwrap().0, 2);
    // The report is written as CSV.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(file);
    std::fs::copy(&path, &copy).unwrap();
    let out = write_report(&copy, &report.rejected).unwrap();
    let text = std::fs::read_to_string(out).unwrap();
    assert_eq!(text.lines().count(), 6);
}

#[test]
fn csv_with_bad_rows() {
    check_fixture("fixture-bad-rows.csv");
}

#[test]
fn xlsx_with_bad_rows() {
    check_fixture("fixture-bad-rows.xlsx");
}

#[test]
fn the_templates_import_cleanly() {
    for file in ["cylinders-template.csv", "cylinders-template.xlsx"] {
        let store = store();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").join(file);
        let report = import(&store, &path, region(), "3701020001", "import", &|_, _| {}).unwrap();
        assert_eq!((report.imported, report.rejected.len()), (3, 0), "{file}: {report:?}");
    }
}

#[test]
fn a_file_without_the_required_columns_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.csv");
    std::fs::write(&path, "气瓶编码,出厂编号\n0110100001,1\n").unwrap();
    let err = import(&store(), &path, region(), "3701020001", "import", &|_, _| {}).unwrap_err();
    assert!(err.to_string().contains("missing columns"), "{err}");
    assert!(err.to_string().contains("充装介质"), "{err}");
    let path = dir.path().join("x.pdf");
    std::fs::write(&path, "x").unwrap();
    assert!(import(&store(), &path, region(), "3701020001", "import", &|_, _| {}).is_err());
}
