//! What this node knows of its replication peers, for `GET /api/v1/peers` and `/metrics`:
//! when each was last heard from, whether it holds everything this node holds, and how
//! much it still lacks.
//!
//! A peer is "in sync" when a round ended with equal fingerprints on every scope. From
//! then on, every commit here (a local write, or data from another peer) is news to it:
//! its lag is the age of the oldest such commit, and its pending count is the number of
//! events this node gained since. Kept in memory: after a restart a peer shows up again
//! at its next contact (enrolled nodes are listed from the node registry meanwhile).

use std::collections::BTreeMap;
use std::sync::Mutex;

use schema::event::NodeId;

/// One peer as seen from here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerState {
    pub address: Option<String>,
    pub connected: bool,
    /// Last frame received (ms since the epoch).
    pub last_contact_ms: Option<i64>,
    /// Last time a round ended with nothing to exchange.
    pub last_in_sync_ms: Option<i64>,
    /// This node's event count at that moment.
    pub events_at_sync: u64,
    /// The first commit here since that moment: what the peer lags behind.
    pub unsynced_since_ms: Option<i64>,
    pub items_sent: u64,
    pub items_received: u64,
    pub items_refused: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub sessions: u64,
    /// The latest session's first round, to in sync: duration (ms), bytes both ways,
    /// flights of frames this side sent, and bytes of the items it sent.
    pub first_round: Option<FirstRound>,
    /// The newest sync checkpoints with this peer (`sync::session`).
    pub checkpoints: Option<BTreeMap<Vec<u8>, u64>>,
}

/// What the first round of a session cost (a reconnect's price).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FirstRound {
    pub ms: i64,
    pub bytes: u64,
    pub flights: u64,
    pub item_bytes: u64,
}

impl PeerState {
    /// How far behind this node the peer is, in ms (0 when in sync).
    pub fn lag_ms(&self, now_ms: i64) -> i64 {
        match (self.last_in_sync_ms, self.unsynced_since_ms) {
            (Some(_), None) => 0,
            (_, Some(since)) => (now_ms - since).max(0),
            (None, None) => 0,
        }
    }

    /// Events this node holds that the peer had not confirmed at its last sync.
    pub fn pending_events(&self, events_now: u64) -> u64 {
        if self.last_in_sync_ms.is_none() {
            return events_now;
        }
        events_now.saturating_sub(self.events_at_sync)
    }
}

/// Every peer of this node by node key.
#[derive(Debug, Default)]
pub struct Peers {
    inner: Mutex<BTreeMap<NodeId, PeerState>>,
}

impl Peers {
    fn with<T>(&self, peer: NodeId, f: impl FnOnce(&mut PeerState) -> T) -> T {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(peer).or_default())
    }

    pub fn connected(&self, peer: NodeId, address: String, now_ms: i64) {
        self.with(peer, |p| {
            p.connected = true;
            p.address = Some(address);
            p.last_contact_ms = Some(now_ms);
            p.sessions += 1;
        });
    }

    pub fn disconnected(&self, peer: NodeId) {
        self.with(peer, |p| p.connected = false);
    }

    pub fn received(&self, peer: NodeId, bytes: u64, now_ms: i64) {
        self.with(peer, |p| {
            p.bytes_in += bytes;
            p.last_contact_ms = Some(now_ms);
        });
    }

    pub fn sent(&self, peer: NodeId, bytes: u64) {
        self.with(peer, |p| p.bytes_out += bytes);
    }

    /// Item counts of a session so far (the session's totals, not increments).
    pub fn items(&self, peer: NodeId, base: (u64, u64, u64), sent: u64, stored: u64, refused: u64) {
        self.with(peer, |p| {
            p.items_sent = base.0 + sent;
            p.items_received = base.1 + stored;
            p.items_refused = base.2 + refused;
        });
    }

    /// Item totals before a new session starts adding to them.
    pub fn item_base(&self, peer: NodeId) -> (u64, u64, u64) {
        self.with(peer, |p| (p.items_sent, p.items_received, p.items_refused))
    }

    /// A round ended with nothing to exchange.
    pub fn in_sync(&self, peer: NodeId, events_now: u64, now_ms: i64) {
        self.with(peer, |p| {
            p.last_in_sync_ms = Some(now_ms);
            p.events_at_sync = events_now;
            p.unsynced_since_ms = None;
        });
    }

    /// Something was committed here: news for every peer that was in sync.
    pub fn committed(&self, now_ms: i64) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for p in map.values_mut() {
            p.unsynced_since_ms.get_or_insert(now_ms);
        }
    }

    pub fn first_round(&self, peer: NodeId, round: FirstRound) {
        self.with(peer, |p| p.first_round = Some(round));
    }

    pub fn set_checkpoints(&self, peer: NodeId, c: BTreeMap<Vec<u8>, u64>) {
        self.with(peer, |p| p.checkpoints = Some(c));
    }

    pub fn checkpoints(&self, peer: NodeId) -> Option<BTreeMap<Vec<u8>, u64>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).get(&peer).and_then(|p| p.checkpoints.clone())
    }

    pub fn snapshot(&self) -> BTreeMap<NodeId, PeerState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The Ed25519 key a node certificate carries (its SubjectPublicKeyInfo is the fixed
/// 12-byte Ed25519 prefix and the 32-byte key). `None` for any other certificate.
pub fn node_key_of(cert_der: &[u8]) -> Option<NodeId> {
    const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    let at = cert_der.windows(SPKI_PREFIX.len()).position(|w| w == SPKI_PREFIX)?;
    let key = cert_der.get(at + SPKI_PREFIX.len()..at + SPKI_PREFIX.len() + 32)?;
    Some(NodeId(key.try_into().ok()?))
}

/// The node key of the peer at the other end of a QUIC connection.
pub fn peer_of(conn: &quinn::Connection) -> Option<NodeId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    node_key_of(certs.first()?.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::tls;

    #[test]
    fn a_certificate_names_its_node_key() {
        let node_pub = ed25519_dalek::SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes();
        let cert = tls::issue(&[1; 32], "3701020001", &node_pub, "s1").unwrap();
        assert_eq!(node_key_of(&cert), Some(NodeId(node_pub)));
        assert_eq!(node_key_of(b"not a certificate"), None);
    }

    #[test]
    fn lag_and_pending_follow_commits_after_the_last_sync() {
        let peers = Peers::default();
        let p = NodeId([7; 32]);
        peers.connected(p, "127.0.0.1:1".into(), 1_000);
        let s = &peers.snapshot()[&p];
        assert_eq!(s.pending_events(50), 50, "never in sync: everything is pending");
        peers.in_sync(p, 50, 2_000);
        assert_eq!(peers.snapshot()[&p].lag_ms(9_000), 0);
        peers.committed(3_000);
        peers.committed(4_000);
        let s = &peers.snapshot()[&p];
        assert_eq!(s.lag_ms(9_000), 6_000, "the oldest unconfirmed commit counts");
        assert_eq!(s.pending_events(53), 3);
        peers.in_sync(p, 53, 9_500);
        assert_eq!(peers.snapshot()[&p].lag_ms(10_000), 0);
    }
}
