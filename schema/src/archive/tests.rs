//! Archive documents: round trips and concurrent edits that merge field by field.

use automerge::ActorId;
use proptest::prelude::*;

use super::*;

/// The example archive, made 2020-03-01 and inspected 2024-03-01: the rule tests count
/// their boundary dates from these.
pub(crate) fn sample() -> CylinderArchive {
    CylinderArchive {
        serial: "131475088".into(),
        manufactured: Day::ymd(2020, 3, 1).unwrap(),
        last_inspection: Some(Day::ymd(2024, 3, 1).unwrap()),
        next_inspection: Some(Day::ymd(2028, 3, 1).unwrap()),
        tags: vec!["0110100001".into()],
        ..CylinderArchive::example("3701020110100001")
    }
}

#[test]
fn document_round_trip_keeps_every_field() {
    let a = sample();
    a.validate().unwrap();
    let mut doc = new_document(&a, ActorId::from(&[1u8; 16][..]), 1_700_000_000).unwrap();
    let bytes = doc.save();
    let loaded = AutoCommit::load(&bytes).unwrap();
    let b: CylinderArchive = read_document(&loaded).unwrap();
    assert_eq!(a, b);
}

#[test]
fn validation_names_the_field() {
    let mut a = sample();
    a.water_volume_l = 0.0;
    assert_eq!(a.validate(), Err(ArchiveError::Field { field: "water_volume_l", reason: "must be a positive number" }));
    let mut a = sample();
    a.next_inspection = a.last_inspection;
    assert!(matches!(a.validate(), Err(ArchiveError::Field { field: "next_inspection", .. })));
    let mut a = sample();
    a.owner = "12".into();
    assert!(matches!(a.validate(), Err(ArchiveError::Code(_))));
}

proptest! {
    /// Two stations edit different fields of the same archive offline; merging in either
    /// order gives the same heads and both edits.
    #[test]
    fn concurrent_edits_merge_in_any_order(serial in "[0-9]{6,9}", maker in "[a-z]{3,8}", tare in 10.0f64..60.0) {
        let base = sample();
        let mut origin = new_document(&base, ActorId::from(&[1u8; 16][..]), 1).unwrap();
        let mut a = origin.fork().with_actor(ActorId::from(&[2u8; 16][..]));
        let mut b = origin.fork().with_actor(ActorId::from(&[3u8; 16][..]));
        let mut ea = base.clone();
        ea.serial = serial.clone();
        update_document(&mut a, &ea, 2).unwrap();
        let mut eb = base.clone();
        eb.maker = maker.clone();
        eb.tare_kg = Some(tare);
        update_document(&mut b, &eb, 2).unwrap();

        let mut ab = a.fork();
        ab.merge(&mut b).unwrap();
        let mut ba = b.fork();
        ba.merge(&mut a).unwrap();
        ba.merge(&mut origin).unwrap(); // duplicate delivery is harmless
        prop_assert_eq!(ab.get_heads(), ba.get_heads());
        let merged: CylinderArchive = read_document(&ab).unwrap();
        prop_assert_eq!(&merged.serial, &serial);
        prop_assert_eq!(&merged.maker, &maker);
        prop_assert_eq!(merged.tare_kg, Some(tare));
        prop_assert_eq!(read_document::<CylinderArchive>(&ba).unwrap(), merged);
    }
}
