//! Hybrid logical clock: orders events across nodes whose wall clocks disagree.
//!
//! A timestamp is (physical milliseconds, logical counter). `now` never goes backwards and
//! stays close to the wall clock; `observe` folds in a timestamp seen from a peer so that
//! anything recorded afterwards sorts after it (Kulkarni et al., 2014). The caller supplies
//! the wall clock: this crate reads no clock.

use serde::{Deserialize, Serialize};

/// One HLC timestamp. Ordered by (physical, logical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hlc {
    pub physical_ms: i64,
    pub logical: u32,
}

impl Hlc {
    /// Big-endian bytes that sort like the timestamp (for storage keys).
    pub fn to_key(self) -> [u8; 12] {
        let mut k = [0u8; 12];
        // Offsetting by i64::MIN maps the signed range onto an order-preserving unsigned one.
        k[..8].copy_from_slice(&((self.physical_ms as u64) ^ (1 << 63)).to_be_bytes());
        k[8..].copy_from_slice(&self.logical.to_be_bytes());
        k
    }

    /// The timestamp of a key [`Hlc::to_key`] made; `None` for bytes of another length.
    pub fn from_key(key: &[u8]) -> Option<Hlc> {
        let (physical, logical) = key.split_first_chunk::<8>()?;
        Some(Hlc {
            physical_ms: Hlc::physical_ms_of_key(*physical),
            logical: u32::from_be_bytes(logical.try_into().ok()?),
        })
    }

    /// The physical time of the timestamp whose key begins `key` (the first 8 bytes of
    /// [`Hlc::to_key`]).
    pub fn physical_ms_of_key(key: [u8; 8]) -> i64 {
        (u64::from_be_bytes(key) ^ (1 << 63)) as i64
    }
}

/// How far ahead of a node's wall clock a timestamp from a peer may carry its clock. A
/// node whose clock runs fast (a station box whose clock was set to Beijing time as if it
/// were UTC runs 8 h fast) would otherwise carry each node it syncs with, and every node
/// those sync with, into its future for good: the clock never goes back, and every event
/// recorded anywhere after that would bear the wrong time. CockroachDB likewise bounds a
/// peer's clock offset (`--max-offset`) instead of following it. Ten minutes is what a
/// quartz clock drifting 20 ppm gains in about a year without time service.
pub const AHEAD_MAX_MS: i64 = 10 * 60 * 1000;

/// The clock state of one node.
#[derive(Debug, Clone, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    pub fn new(last: Hlc) -> Self {
        Self { last }
    }

    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A timestamp for a local event, given the current wall time.
    pub fn now(&mut self, wall_ms: i64) -> Hlc {
        self.last = if wall_ms > self.last.physical_ms {
            Hlc { physical_ms: wall_ms, logical: 0 }
        } else {
            Hlc { physical_ms: self.last.physical_ms, logical: self.last.logical.saturating_add(1) }
        };
        self.last
    }

    /// Folds in a remote timestamp so later local events sort after it. A timestamp more
    /// than [`AHEAD_MAX_MS`] ahead of `wall_ms` moves the clock only that far (events
    /// recorded after it may then sort before it) and is answered `false`.
    pub fn observe(&mut self, remote: Hlc, wall_ms: i64) -> bool {
        let bound = wall_ms.saturating_add(AHEAD_MAX_MS);
        let within = remote.physical_ms <= bound;
        let remote = if within { remote } else { Hlc { physical_ms: bound, logical: 0 } };
        let physical = wall_ms.max(remote.physical_ms).max(self.last.physical_ms);
        let logical = if physical == self.last.physical_ms && physical == remote.physical_ms {
            self.last.logical.max(remote.logical).saturating_add(1)
        } else if physical == self.last.physical_ms {
            self.last.logical.saturating_add(1)
        } else if physical == remote.physical_ms {
            remote.logical.saturating_add(1)
        } else {
            0
        };
        self.last = Hlc { physical_ms: physical, logical };
        within
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards_and_orders_after_observed() {
        let mut c = HlcClock::default();
        let a = c.now(1000);
        let b = c.now(999); // wall clock stepped back
        assert!(b > a);
        c.observe(Hlc { physical_ms: 5000, logical: 7 }, 1001);
        let d = c.now(1002);
        assert!(d > Hlc { physical_ms: 5000, logical: 7 });
        assert!(Hlc { physical_ms: -5, logical: 0 }.to_key() < Hlc { physical_ms: 3, logical: 0 }.to_key());
        assert!(a.to_key() < b.to_key());
    }

    #[test]
    fn a_timestamp_far_ahead_moves_the_clock_only_to_the_bound() {
        let wall = 1_795_579_200_000;
        let mut c = HlcClock::new(Hlc { physical_ms: wall - 5, logical: 0 });
        let near = Hlc { physical_ms: wall + AHEAD_MAX_MS, logical: 3 };
        assert!(c.observe(near, wall), "at the bound: followed");
        assert_eq!(c.last(), Hlc { physical_ms: wall + AHEAD_MAX_MS, logical: 4 });
        let eight_hours = Hlc { physical_ms: wall + 8 * 3_600_000, logical: 0 };
        assert!(!c.observe(eight_hours, wall + 1));
        let next = c.now(wall + 2);
        assert!(next.physical_ms <= wall + 1 + AHEAD_MAX_MS, "{next:?}");
        assert!(next > near, "still never backwards");
        // A wall clock that catches up takes over again.
        assert_eq!(c.now(wall + 8 * 3_600_000), eight_hours);
    }

    #[test]
    fn physical_time_reads_back_from_a_key() {
        assert_eq!(Hlc::from_key(&[0; 11]), None);
        for physical_ms in [i64::MIN, -5, 0, 1_764_000_000_000, i64::MAX] {
            let key = Hlc { physical_ms, logical: 9 }.to_key();
            assert_eq!(Hlc::from_key(&key), Some(Hlc { physical_ms, logical: 9 }));
            let head: [u8; 8] = key[..8].try_into().expect("12-byte key");
            assert_eq!(Hlc::physical_ms_of_key(head), physical_ms);
        }
    }
}
