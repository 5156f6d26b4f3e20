//! What a replication session needs from storage, and an in-memory implementation.
//!
//! The node implements [`ItemStore`] on redb with the summaries pre-aggregated per id
//! prefix, so every call but `ids` and `get` is a point read; [`MemStore`] computes them by
//! scanning, which is enough for tests and the simulator.

use std::collections::BTreeMap;

use crate::fingerprint::{Id, Summary};

/// Outcome of storing items received from a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOutcome {
    /// Items stored now (not seen before).
    pub stored: Vec<Id>,
    /// Items refused: why, for the log.
    pub refused: Vec<String>,
    /// The change sequence numbers the stored items took, as ranges (first, last),
    /// ascending: every number in a range went to an item of this put (the session does
    /// not push them back). A store that takes a put in several steps may let other
    /// writes take numbers between them.
    pub seqs: Vec<(u64, u64)>,
}

/// Storage as seen by a session. Ids below a scope are ordered bytewise.
pub trait ItemStore {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Summary of the ids under `prefix` in `scope`.
    fn summary(&self, scope: &[u8], prefix: &[u8]) -> Result<Summary, Self::Error>;

    /// Summaries one byte below `prefix`, non-empty children only, in byte order.
    fn children(&self, scope: &[u8], prefix: &[u8]) -> Result<Vec<(u8, Summary)>, Self::Error> {
        let mut out = Vec::new();
        let mut p = prefix.to_vec();
        p.push(0);
        for b in 0..=255u8 {
            *p.last_mut().expect("pushed above") = b;
            let s = self.summary(scope, &p)?;
            if s.count > 0 {
                out.push((b, s));
            }
        }
        Ok(out)
    }

    /// Every id under `prefix`, in order.
    fn ids(&self, scope: &[u8], prefix: &[u8]) -> Result<Vec<Id>, Self::Error>;

    /// An item's stored bytes.
    fn get(&self, scope: &[u8], id: &Id) -> Result<Option<Vec<u8>>, Self::Error>;

    /// Several items' bytes, in the order asked; ids not held are left out. A store may
    /// read them in one go.
    fn get_many(&self, scope: &[u8], ids: &[Id]) -> Result<Vec<Vec<u8>>, Self::Error> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.get(scope, id)?);
        }
        Ok(out)
    }

    /// The items of changes `changes_after` listed (ascending; the session may have left
    /// some out), in the order they should go out; items no longer held are left out. By
    /// default [`ItemStore::send_order`], then [`ItemStore::get_many`]; a store that keeps
    /// where each change lies reads them from there.
    fn get_changes(&self, scope: &[u8], changes: &[(u64, Id)]) -> Result<Vec<Vec<u8>>, Self::Error> {
        let mut ids: Vec<Id> = changes.iter().map(|(_, id)| *id).collect();
        self.send_order(scope, &mut ids)?;
        self.get_many(scope, &ids)
    }

    /// Checks and stores items from a peer; refuses what does not verify or what the
    /// peer may not write.
    fn put(&mut self, scope: &[u8], items: Vec<Vec<u8>>) -> Result<PutOutcome, Self::Error>;

    /// The peer said it has pushed all it had of `scope` (its `Pushed` frame): every item
    /// of that push was put before. A store that treats a peer's bulk upload apart from
    /// its other puts learns here that the upload is over. By default nothing.
    fn peer_pushed(&mut self, _scope: &[u8]) {}

    /// The change sequence of `scope`: every item added gets the next number (0: none).
    fn seq(&self, scope: &[u8]) -> Result<u64, Self::Error>;

    /// Makes every item put so far durable (a store that lets puts share a commit commits
    /// them now). By default puts are durable when they return.
    fn durable(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Reorders ids about to be sent (the receiver may take some orders faster). The
    /// default keeps id order.
    fn send_order(&self, _scope: &[u8], _ids: &mut Vec<Id>) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Up to `limit` ids added to `scope` after sequence `since`, oldest first, with their
    /// sequence numbers (pushes read the log a page at a time). An id may no longer be
    /// held (a document item replaced since); `get` then skips it.
    fn changes_after(&self, scope: &[u8], since: u64, limit: usize) -> Result<Vec<(u64, Id)>, Self::Error>;
}

/// Never fails.
#[derive(Debug, thiserror::Error)]
#[error("in-memory store cannot fail")]
pub struct Infallible;

/// An in-memory store: scope → id → bytes, with pluggable id derivation and checks.
#[derive(Debug, Clone)]
pub struct MemStore {
    pub items: BTreeMap<Vec<u8>, BTreeMap<Id, Vec<u8>>>,
    /// Per scope, ids in the order they were added (sequence = index + 1).
    pub log: BTreeMap<Vec<u8>, Vec<Id>>,
    /// Derives an item's id from its bytes, or refuses it.
    pub check: fn(&[u8], &[u8]) -> Result<Id, String>,
}

impl MemStore {
    pub fn new(check: fn(&[u8], &[u8]) -> Result<Id, String>) -> MemStore {
        MemStore { items: BTreeMap::new(), log: BTreeMap::new(), check }
    }

    pub fn insert(&mut self, scope: &[u8], id: Id, bytes: Vec<u8>) {
        if self.items.entry(scope.to_vec()).or_default().insert(id, bytes).is_none() {
            self.log.entry(scope.to_vec()).or_default().push(id);
        }
    }

    fn under<'a>(&'a self, scope: &[u8], prefix: &'a [u8]) -> impl Iterator<Item = (&'a Id, &'a Vec<u8>)> + 'a {
        let mut lo = [0u8; 32];
        lo[..prefix.len()].copy_from_slice(prefix);
        self.items
            .get(scope)
            .into_iter()
            .flat_map(move |m| m.range(lo..).take_while(move |(id, _)| id.starts_with(prefix)))
    }
}

impl ItemStore for MemStore {
    type Error = Infallible;

    fn summary(&self, scope: &[u8], prefix: &[u8]) -> Result<Summary, Infallible> {
        Ok(Summary::of(self.under(scope, prefix).map(|(id, _)| *id)))
    }

    fn children(&self, scope: &[u8], prefix: &[u8]) -> Result<Vec<(u8, Summary)>, Infallible> {
        let mut out: Vec<(u8, Summary)> = Vec::new();
        for (id, _) in self.under(scope, prefix) {
            let Some(&b) = id.get(prefix.len()) else { continue };
            match out.last_mut() {
                Some((last, s)) if *last == b => s.add(id),
                _ => out.push((b, Summary::of([*id]))),
            }
        }
        Ok(out)
    }

    fn ids(&self, scope: &[u8], prefix: &[u8]) -> Result<Vec<Id>, Infallible> {
        Ok(self.under(scope, prefix).map(|(id, _)| *id).collect())
    }

    fn get(&self, scope: &[u8], id: &Id) -> Result<Option<Vec<u8>>, Infallible> {
        Ok(self.items.get(scope).and_then(|m| m.get(id)).cloned())
    }

    fn put(&mut self, scope: &[u8], items: Vec<Vec<u8>>) -> Result<PutOutcome, Infallible> {
        let mut out = PutOutcome::default();
        let before = self.seq(scope)?;
        for bytes in items {
            match (self.check)(scope, &bytes) {
                Ok(id) => {
                    let m = self.items.entry(scope.to_vec()).or_default();
                    if m.insert(id, bytes).is_none() {
                        self.log.entry(scope.to_vec()).or_default().push(id);
                        out.stored.push(id);
                    }
                }
                Err(reason) => out.refused.push(reason),
            }
        }
        let after = self.seq(scope)?;
        out.seqs.extend((after > before).then_some((before + 1, after)));
        Ok(out)
    }

    fn seq(&self, scope: &[u8]) -> Result<u64, Infallible> {
        Ok(self.log.get(scope).map_or(0, |l| l.len() as u64))
    }

    fn changes_after(&self, scope: &[u8], since: u64, limit: usize) -> Result<Vec<(u64, Id)>, Infallible> {
        let log = self.log.get(scope).map_or(&[][..], Vec::as_slice);
        let new = log.get(since as usize..).unwrap_or_default();
        Ok(new.iter().take(limit).enumerate().map(|(i, id)| (since + 1 + i as u64, *id)).collect())
    }
}
