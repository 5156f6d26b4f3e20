//! Canonical encoding, ids and signatures.

use super::*;

pub(crate) fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub(crate) fn event(key: &SigningKey, physical_ms: i64, body: EventBody) -> Event {
    Event {
        cylinder: "3701020110100001".parse().unwrap(),
        hlc: Hlc { physical_ms, logical: 0 },
        wall_ms: physical_ms,
        node: NodeId(key.verifying_key().to_bytes()),
        operator: "demo-filler".into(),
        place: "W1".into(),
        body,
    }
}

#[test]
fn encoding_is_stable_and_signed() {
    let k = key(7);
    let e = event(&k, 1_700_000_000_000, EventBody::Fill { medium: Medium::Lpg, filled_mass_g: 14_500, batch: None });
    let a = e.clone().sign(&k);
    let b = e.sign(&k);
    assert_eq!(a.id, b.id, "same event, same id");
    let stored = a.to_stored();
    let back = SignedEvent::from_stored(&stored).unwrap();
    assert_eq!(back, a);
}

#[test]
fn the_node_is_read_from_the_encoding_alone() {
    for (seed, ms) in [(7, 1_700_000_000_000), (9, 1), (200, i64::MAX / 4)] {
        let k = key(seed);
        let e = event(&k, ms, EventBody::Scrap { reason: "裂纹".into() });
        assert_eq!(Event::node_of(&e.encode()), Ok(e.node));
    }
    assert!(Event::node_of(&[]).is_err());
    assert!(Event::node_of(&[ENCODING_VERSION, 1, 2]).is_err(), "cut short");
    assert_eq!(Event::node_of(&[ENCODING_VERSION + 1]), Err(EventError::Version(ENCODING_VERSION + 1)));
}

#[test]
fn tampering_is_detected() {
    let k = key(7);
    let signed = event(&k, 1, EventBody::Scrap { reason: "裂纹".into() }).sign(&k);
    let mut stored = signed.to_stored();
    let last = stored.len() - 1;
    stored[last] ^= 1; // change one byte of the reason
    assert!(matches!(SignedEvent::from_stored(&stored), Err(EventError::Signature(_) | EventError::Decode(_))));
    // A signature by another node does not verify.
    let other = key(8);
    let mut forged = signed.clone();
    forged.signature = other.sign(&signed.id.0).to_bytes();
    assert_eq!(forged.verify(), Err(EventError::Signature(signed.id)));
}

#[test]
fn bad_bytes_are_errors_not_panics() {
    for bytes in [&[][..], &[0u8; 64][..], &[0u8; 65][..], &[9u8; 100][..]] {
        assert!(SignedEvent::from_stored(bytes).is_err());
    }
    assert_eq!(Event::decode(&[2, 0]), Err(EventError::Version(2)));
}

#[test]
fn hex_parses_exact_lengths() {
    assert_eq!(parse_hex::<2>("0aFf"), Some([0x0a, 0xff]));
    assert_eq!(parse_hex::<2>("0aF"), None);
    assert_eq!(parse_hex::<2>("zz00"), None);
}

#[test]
fn batch_verification_accepts_good_signatures_and_rejects_one_bad() {
    let (a, b) = (key(1), key(2));
    let mut events: Vec<SignedEvent> = (0..40)
        .map(|i| {
            let k = if i % 2 == 0 { &a } else { &b };
            event(k, 1_700_000_000_000 + i, EventBody::Repair { description: format!("阀 {i}") }).sign(k)
        })
        .collect();
    assert!(SignedEvent::verify_batch(&events));
    assert!(SignedEvent::verify_batch(&[]));
    events[17].signature[3] ^= 1;
    assert!(!SignedEvent::verify_batch(&events));
    assert_eq!(events.iter().filter(|e| e.verify().is_err()).count(), 1);
}
