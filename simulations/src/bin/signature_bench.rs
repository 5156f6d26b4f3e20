//! How fast this machine signs and verifies events, one Ed25519 signature per event:
//! the figure that decides whether a head office can check every event's origin one by
//! one at its ingest target (issue 3: ≥ 100k events/s) or needs signatures per batch.
//!
//! ```text
//! cargo run --release -p simulations --bin signature_bench -- --events 100000
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Instant;

use anyhow::Context;
use ed25519_dalek::SigningKey;
use schema::event::{Event, EventBody, NodeId, SignedEvent};
use schema::hlc::Hlc;
use schema::vocab::Medium;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut n = 100_000usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => n = args.next().context("--events N")?.parse()?,
            other => anyhow::bail!("unknown flag {other}; flags: --events N"),
        }
    }
    let key = SigningKey::from_bytes(&[7; 32]);
    let node = NodeId(key.verifying_key().to_bytes());
    let events: Vec<Event> = (0..n)
        .map(|i| Event {
            cylinder: format!("37010201{:08}", i % 100_000).parse().expect("valid code"),
            hlc: Hlc { physical_ms: 1_795_579_200_000 + i as i64, logical: 0 },
            wall_ms: 1_795_579_200_000 + i as i64,
            node,
            operator: "demo-filler".into(),
            place: "历下充装站".into(),
            body: EventBody::Fill { medium: Medium::Lpg, filled_mass_g: 14_500, batch: None },
        })
        .collect();

    let t = Instant::now();
    let signed: Vec<SignedEvent> = events.into_iter().map(|e| e.sign(&key)).collect();
    let sign_s = t.elapsed().as_secs_f64();
    let stored: Vec<Vec<u8>> = signed.iter().map(SignedEvent::to_stored).collect();

    let t = Instant::now();
    let mut ok = 0usize;
    for s in &stored {
        ok += SignedEvent::from_stored(s).is_ok() as usize;
    }
    let verify_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(ok == n, "{} of {n} verified", ok);

    let t = Instant::now();
    for s in &stored {
        SignedEvent::from_stored_trusted(s).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let decode_s = t.elapsed().as_secs_f64();

    println!("signature_bench: {n} events of {} bytes stored, one core", stored[0].len());
    println!("  encode + hash + sign           {:>10.0} events/s", n as f64 / sign_s);
    println!("  decode + hash + verify         {:>10.0} events/s", n as f64 / verify_s);
    println!("  decode + hash (no signature)   {:>10.0} events/s", n as f64 / decode_s);
    Ok(())
}
