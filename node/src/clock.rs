//! The node's source of time and entropy, injected so tests and simulations can fix both.

use rand::RngCore;

/// Wall-clock milliseconds (UTC) and random bytes.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
    fn random_bytes(&self) -> [u8; 32];
}

/// The operating system's clock and random source.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }

    fn random_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        b
    }
}

/// A clock fixed at a time that tests move by hand; entropy from the start time and a
/// counter, so two clocks started at different times give two node identities.
#[derive(Debug, Default)]
pub struct ManualClock {
    pub now_ms: std::sync::atomic::AtomicI64,
    start_ms: i64,
    counter: std::sync::atomic::AtomicU64,
}

impl ManualClock {
    pub fn at(ms: i64) -> ManualClock {
        ManualClock { now_ms: ms.into(), start_ms: ms, counter: 0.into() }
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn random_bytes(&self) -> [u8; 32] {
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut b = [7u8; 32];
        b[..8].copy_from_slice(&n.to_le_bytes());
        b[8..16].copy_from_slice(&self.start_ms.to_le_bytes());
        b
    }
}
