//! Replication between nodes as a sans-IO state machine.
//!
//! Like quinn-proto, this crate takes the time and bytes in and returns bytes out: it
//! opens no socket, reads no clock and touches no disk. Storage is reached through the
//! [`store::ItemStore`] trait, which the node implements on redb and the simulator in
//! memory ([`store::MemStore`]).
//!
//! Reading order:
//! - [`fingerprint`]: set fingerprints of id ranges (count + sum of ids, hashed).
//! - [`frame`]: the versioned wire frames and their length-prefixed encoding.
//! - [`store`]: what a session needs from storage.
//! - [`session`]: the reconciliation protocol, one state machine per peer connection.
//!
//! Items are 32-byte ids (event ids: hashes of signed events) grouped by *scope*, a byte
//! string such as an enterprise code; a scope is a key range. Ranges are the prefixes of
//! the ids below a scope, so a range fingerprint is a pre-aggregated value the store can
//! answer in one read, and finding `d` differences among `n` items costs
//! `O(d · log₂₅₆ n)` round trips' worth of fingerprints rather than `O(n)`.

pub mod fingerprint;
pub mod frame;
pub mod session;
pub mod store;
