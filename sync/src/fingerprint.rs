//! Fingerprints of sets of 32-byte ids.
//!
//! A summary keeps the count and the sum of the ids modulo 2²⁵⁶ (ids read as little-endian
//! integers). Sums compose: the summary of a union of disjoint sets is the sum of their
//! summaries, which is what lets a store keep them pre-aggregated per prefix and update
//! them in O(1) per insert. The 16-byte fingerprint sent on the wire hashes count and sum.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A 32-byte item id.
pub type Id = [u8; 32];

/// Count and modular sum of a set of ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub sum: [u8; 32],
}

impl Summary {
    pub fn of(ids: impl IntoIterator<Item = Id>) -> Summary {
        let mut s = Summary::default();
        for id in ids {
            s.add(&id);
        }
        s
    }

    /// Adds one id to the set.
    pub fn add(&mut self, id: &Id) {
        self.count += 1;
        let mut carry = 0u16;
        for (a, b) in self.sum.iter_mut().zip(id.iter()) {
            let v = *a as u16 + *b as u16 + carry;
            *a = v as u8;
            carry = v >> 8;
        }
    }

    /// Merges a disjoint set's summary.
    pub fn merge(&mut self, other: &Summary) {
        self.count += other.count;
        let mut carry = 0u16;
        for (a, b) in self.sum.iter_mut().zip(other.sum.iter()) {
            let v = *a as u16 + *b as u16 + carry;
            *a = v as u8;
            carry = v >> 8;
        }
    }

    /// What goes on the wire.
    pub fn fingerprint(&self) -> Fingerprint {
        let h = Sha256::new().chain_update(self.count.to_le_bytes()).chain_update(self.sum).finalize();
        Fingerprint { count: self.count, hash: h[..16].try_into().expect("16 of 32 bytes") }
    }
}

/// A range's fingerprint as sent to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fingerprint {
    pub count: u64,
    pub hash: [u8; 16],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_compose_and_ignore_order() {
        let ids: Vec<Id> = (0..50u8).map(|i| [i.wrapping_mul(97); 32]).collect();
        let whole = Summary::of(ids.iter().copied());
        let mut parts = Summary::of(ids[..20].iter().copied());
        parts.merge(&Summary::of(ids[20..].iter().copied()));
        assert_eq!(whole, parts);
        assert_eq!(Summary::of(ids.iter().rev().copied()).fingerprint(), whole.fingerprint());
        assert_ne!(Summary::of(ids[1..].iter().copied()).fingerprint(), whole.fingerprint());
        // Carries propagate across bytes.
        let s = Summary::of([[0xff; 32], [1; 32]]);
        assert_eq!(s.sum[0], 0x00);
        assert_eq!(s.sum[1], 0x01, "0xff + 0x01 + carry 1 = 0x101");
    }
}
