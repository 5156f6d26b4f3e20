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
        add_sum(&mut self.sum, id);
    }

    /// Removes an id that is in the set.
    pub fn remove(&mut self, id: &Id) {
        self.subtract(&Summary { count: 1, sum: *id });
    }

    /// Removes a subset's summary.
    pub fn subtract(&mut self, other: &Summary) {
        self.count = self.count.saturating_sub(other.count);
        let mut borrow = 0i16;
        for (a, b) in self.sum.iter_mut().zip(other.sum.iter()) {
            let v = *a as i16 - *b as i16 - borrow;
            borrow = if v < 0 { 1 } else { 0 };
            *a = v.rem_euclid(256) as u8;
        }
    }

    /// Stored form: count (u64 LE) ++ sum.
    pub fn to_bytes(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..8].copy_from_slice(&self.count.to_le_bytes());
        b[8..].copy_from_slice(&self.sum);
        b
    }

    pub fn from_bytes(b: &[u8; 40]) -> Summary {
        Summary {
            count: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            sum: b[8..].try_into().expect("32 bytes"),
        }
    }

    /// Merges a disjoint set's summary.
    pub fn merge(&mut self, other: &Summary) {
        self.count += other.count;
        add_sum(&mut self.sum, &other.sum);
    }

    /// What goes on the wire.
    pub fn fingerprint(&self) -> Fingerprint {
        let h = Sha256::new().chain_update(self.count.to_le_bytes()).chain_update(self.sum).finalize();
        Fingerprint { count: self.count, hash: h[..16].try_into().expect("16 of 32 bytes") }
    }
}

/// `sum += other` modulo 2^256, both little-endian, eight bytes at a time (a head
/// office adds three summaries per event it takes in).
fn add_sum(sum: &mut [u8; 32], other: &[u8; 32]) {
    let mut carry = false;
    for (a, b) in sum.chunks_exact_mut(8).zip(other.chunks_exact(8)) {
        let limb = |x: &[u8]| u64::from_le_bytes(x.try_into().expect("chunks of eight"));
        let (v, c1) = limb(a).overflowing_add(limb(b));
        let (v, c2) = v.overflowing_add(carry as u64);
        a.copy_from_slice(&v.to_le_bytes());
        carry = c1 || c2;
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

    /// Byte by byte, as the sum was first written.
    fn add_bytewise(sum: &mut [u8; 32], other: &[u8; 32]) {
        let mut carry = 0u16;
        for (a, b) in sum.iter_mut().zip(other.iter()) {
            let v = *a as u16 + *b as u16 + carry;
            *a = v as u8;
            carry = v >> 8;
        }
    }

    #[test]
    fn sums_add_as_256_bit_numbers() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut values: Vec<[u8; 32]> = vec![[0xff; 32], [0; 32], [1; 32]];
        // Carries that cross every limb boundary, and a wrap past 2^256.
        let mut edge = [0xff; 32];
        edge[0] = 0xfe;
        values.push(edge);
        for _ in 0..200 {
            let mut v = [0u8; 32];
            for chunk in v.chunks_exact_mut(8) {
                chunk.copy_from_slice(&next().to_le_bytes());
            }
            values.push(v);
        }
        for a in &values {
            for b in values.iter().take(20) {
                let (mut fast, mut slow) = (*a, *a);
                add_sum(&mut fast, b);
                add_bytewise(&mut slow, b);
                assert_eq!(fast, slow, "{a:?} + {b:?}");
            }
        }
    }

    #[test]
    fn summaries_compose_and_ignore_order() {
        let ids: Vec<Id> = (0..50u8).map(|i| [i.wrapping_mul(97); 32]).collect();
        let whole = Summary::of(ids.iter().copied());
        let mut parts = Summary::of(ids[..20].iter().copied());
        parts.merge(&Summary::of(ids[20..].iter().copied()));
        assert_eq!(whole, parts);
        assert_eq!(Summary::of(ids.iter().rev().copied()).fingerprint(), whole.fingerprint());
        assert_ne!(Summary::of(ids[1..].iter().copied()).fingerprint(), whole.fingerprint());
        // Removing undoes adding, borrows included.
        let mut r = whole;
        r.remove(&ids[0]);
        assert_eq!(r, Summary::of(ids[1..].iter().copied()));
        assert_eq!(Summary::from_bytes(&whole.to_bytes()), whole);
        // Carries propagate across bytes.
        let s = Summary::of([[0xff; 32], [1; 32]]);
        assert_eq!(s.sum[0], 0x00);
        assert_eq!(s.sum[1], 0x01, "0xff + 0x01 + carry 1 = 0x101");
    }
}
