//! The store's side of replication: items and pre-aggregated fingerprints per scope, and
//! what to do with events and documents received from a peer.
//!
//! Every event joins the scope `E:<enterprise>`; every document joins `D:<enterprise>` as
//! the item SHA-256(document id ‖ heads), replaced whenever its heads move. Summaries of
//! the whole scope and of each one- and two-byte id prefix are updated in the same
//! transaction, so the sync session's fingerprint questions are point reads.

use automerge::{AutoCommit, ChangeHash};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use schema::archive::{CylinderArchive, DocId, read_document};
use schema::event::{NodeId, SignedEvent};
use schema::seal::{Seal, SealId, SealedId, named_seal, seal_ref, sealed_id};
use schema::state::derive;
use sha2::{Digest, Sha256};
use sync::fingerprint::{Id, Summary};
use sync::store::{ItemStore, PutOutcome};

use super::runs::{ID_RUNS, Ids, Origin};
use super::tables::*;
use super::{CylinderRow, Store, StoreError, WriteCtx};

pub fn events_scope(enterprise: &str) -> String {
    format!("E:{enterprise}")
}

pub fn docs_scope(enterprise: &str) -> String {
    format!("D:{enterprise}")
}

/// The scope of seals (`schema::seal`). Sessions list it after documents and before
/// events, and push scopes in that order: a node's enrolment record, then its seals, then
/// the events they vouch for.
pub fn seals_scope(enterprise: &str) -> String {
    format!("A:{enterprise}")
}

/// What a scope holds, told by the prefix of its name (`E:`, `A:`, `D:` above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    Events,
    Seals,
    Docs,
}

impl ScopeKind {
    pub fn of(scope: impl AsRef<[u8]>) -> ScopeKind {
        match scope.as_ref().get(..2) {
            Some(b"E:") => ScopeKind::Events,
            Some(b"A:") => ScopeKind::Seals,
            _ => ScopeKind::Docs,
        }
    }
}

/// An enterprise's scopes in the order sessions list and push them: documents (a node's
/// enrolment record among them), then seals, then the events they vouch for.
pub fn scopes(enterprise: &str) -> Vec<Vec<u8>> {
    [docs_scope(enterprise), seals_scope(enterprise), events_scope(enterprise)].map(String::into_bytes).to_vec()
}

/// The signature field of layout 8's sealed events, which named no seal (now refused on
/// receipt, and what an old event no seal here lists reads back with).
pub const NO_SIGNATURE: [u8; 64] = [0; 64];

/// The counter of received events stamped too far ahead of this node's clock to follow
/// (see [`schema::hlc::AHEAD_MAX_MS`]).
pub const EVENTS_AHEAD_COUNTER: &str = "events_clock_ahead";

/// The key of an event in `signed-unsealed-1`.
pub(crate) fn signed_unsealed_key(id: &schema::event::EventId, node: &NodeId) -> [u8; 48] {
    let mut key = [0; 48];
    key[..16].copy_from_slice(&sealed_id(id));
    key[16..].copy_from_slice(&node.0);
    key
}

/// What the seal an unsigned event names says of it.
enum SealCheck {
    /// A seal of the event's own node, stored here, lists it.
    Listed,
    /// The seal it names is not here (yet).
    NotHere,
    /// Why the event cannot be taken in under a seal.
    Refused(&'static str),
}

/// Stored seals looked up by id, each decoded once per batch, its ids sorted.
struct SealBook<T> {
    items: T,
    scope: String,
    seen: std::collections::HashMap<SealId, Option<(NodeId, Vec<SealedId>)>>,
}

impl<T: ReadableTable<(&'static str, &'static [u8; 32]), &'static [u8]>> SealBook<T> {
    fn new(items: T, enterprise: &str) -> SealBook<T> {
        SealBook { items, scope: seals_scope(enterprise), seen: std::collections::HashMap::new() }
    }

    /// Checks an event that came without a signature against the seal it names.
    fn check(&mut self, event: &SignedEvent) -> Result<SealCheck, StoreError> {
        let Some(named) = named_seal(&event.signature) else {
            return Ok(SealCheck::Refused("it carries no signature and names no seal"));
        };
        if !self.seen.contains_key(&named) {
            let seal = match self.items.get((self.scope.as_str(), &named))? {
                Some(bytes) => {
                    let seal = Seal::decode_trusted(bytes.value())
                        .map_err(|e| StoreError::Corrupt(format!("stored seal: {e}")))?;
                    let mut ids = seal.ids;
                    ids.sort_unstable();
                    Some((seal.signer, ids))
                }
                None => None,
            };
            self.seen.insert(named, seal);
        }
        Ok(match self.seen.get(&named) {
            Some(Some((signer, _))) if *signer != event.event.node => {
                SealCheck::Refused("it carries no signature and the seal it names is another node's")
            }
            Some(Some((_, ids))) => match ids.binary_search(&sealed_id(&event.id)).is_ok() {
                true => SealCheck::Listed,
                false => SealCheck::Refused("it carries no signature and the seal it names does not list it"),
            },
            _ => SealCheck::NotHere,
        })
    }
}

/// Received events kept aside for their seal at most; beyond, they are refused (and sent
/// again by a later round).
const AWAITING_SEAL_MAX: u64 = 4_000_000;

/// What became of one received item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Stored(Id),
    Duplicate,
    /// Kept aside until the seal that vouches for it arrives (see `awaiting-seal-1`).
    AwaitsSeal,
    Refused(String),
}

fn doc_item_id(doc_id: &DocId, heads: &[ChangeHash]) -> Id {
    let mut heads: Vec<&ChangeHash> = heads.iter().collect();
    heads.sort();
    let mut h = Sha256::new();
    h.update((doc_id.0.len() as u32).to_be_bytes());
    h.update(doc_id.0.as_bytes());
    for head in heads {
        h.update(head.0);
    }
    h.finalize().into()
}

/// A received event after the checks made before the writer.
#[derive(Debug)]
pub enum Verdict {
    /// Its signature, or a seal of its node stored here, vouches for it.
    Checked(SignedEvent),
    /// It came without a signature and the seal it names was not here when checked: the
    /// writer looks again (the seal may be in the frame stored just before).
    AwaitsSeal(SignedEvent),
    Refused(String),
}

/// Decodes received events and checks their signatures: in batches, on every core (a
/// batch that fails is checked event by event to name the bad ones). An event without a
/// signature is looked up in the seal it names, if that is stored here. This is most of
/// the cost of taking in a peer's events, and it runs before the writer's transaction.
pub fn verify_items(items: &[Vec<u8>], store: &Store) -> Vec<Verdict> {
    let verdicts = on_every_core(items, "event check panicked", |chunk| {
        let read = store.db.begin_read().ok();
        let mut seals =
            read.as_ref().and_then(|r| Some(SealBook::new(r.open_table(SYNC_ITEMS_TABLE).ok()?, &store.enterprise)));
        // What the seal says, if it is here (when it is not, or the look-up fails, the
        // writer looks again in its transaction).
        let mut under_seal = |e: SignedEvent| -> Verdict {
            match seals.as_mut().map(|b| b.check(&e)) {
                Some(Ok(SealCheck::Listed)) => Verdict::Checked(e),
                Some(Ok(SealCheck::Refused(why))) => Verdict::Refused(format!("event {} refused: {why}", e.id)),
                _ => Verdict::AwaitsSeal(e),
            }
        };
        let mut verdicts: Vec<Verdict> = Vec::with_capacity(chunk.len());
        let mut signed = Vec::new();
        for item in chunk {
            match SignedEvent::from_stored_trusted(item) {
                Err(e) => verdicts.push(Verdict::Refused(format!("event refused: {e}"))),
                // A node's HLC never runs behind its own wall clock; the store relies on it
                // to find a cylinder's recent events without reading its whole history.
                Ok(e) if e.event.hlc.physical_ms < e.event.wall_ms => verdicts.push(Verdict::Refused(format!(
                    "event {} refused: its HLC ({} ms) is behind its wall time ({} ms)",
                    e.id, e.event.hlc.physical_ms, e.event.wall_ms
                ))),
                Ok(e) if e.signature == NO_SIGNATURE || named_seal(&e.signature).is_some() => {
                    verdicts.push(under_seal(e))
                }
                Ok(e) => {
                    signed.push(verdicts.len());
                    verdicts.push(Verdict::Checked(e));
                }
            }
        }
        let events: Vec<SignedEvent> = signed
            .iter()
            .filter_map(|&i| match &verdicts[i] {
                Verdict::Checked(e) => Some(e.clone()),
                _ => None,
            })
            .collect();
        if !SignedEvent::verify_batch(&events) {
            for i in signed {
                if let Verdict::Checked(e) = &verdicts[i]
                    && let Err(err) = e.verify()
                {
                    verdicts[i] = Verdict::Refused(format!("event refused: {err}"));
                }
            }
        }
        verdicts.into_iter().map(Ok).collect()
    });
    verdicts.into_iter().map(|v| v.unwrap_or_else(Verdict::Refused)).collect()
}

/// A received document, loaded and checked as it came (before any merge).
#[derive(Debug)]
pub struct LoadedDoc {
    doc_id: DocId,
    bytes: Vec<u8>,
    doc: AutoCommit,
    /// A cylinder document's archive, valid and of the cylinder its id names.
    archive: Option<CylinderArchive>,
}

/// Received documents being loaded and their archives checked, on every core, before
/// the writer's transaction: Automerge's load was a sixth of a head office's writer time
/// in a first sync.
///
/// The load runs ahead of the writer a chunk at a time, and the writer takes each job's
/// documents as soon as they are loaded. Loaded a frame at a time, the first documents of
/// a first sync reached the writer 0.47 s after the station sent them (7,323 documents
/// loaded first), and the writer waited again for the next frame's.
#[derive(Debug, Default)]
pub struct DocLoads {
    /// One frame's documents after another (frames merged into one put).
    frames: std::collections::VecDeque<FrameLoads>,
}

/// The loads of one frame's documents.
#[derive(Debug)]
struct FrameLoads {
    len: usize,
    /// Chunks handed out so far.
    next_chunk: usize,
    /// Worker `w` loads chunks `w`, `w + workers.len()`, ... and sends each, in order.
    /// (In a mutex only so that the loads can be shared: one thread takes them.)
    workers: Vec<std::sync::Mutex<std::sync::mpsc::Receiver<LoadedChunk>>>,
    ready: std::collections::VecDeque<Result<LoadedDoc, String>>,
}

/// One chunk of a frame's documents, loaded (or why not).
type LoadedChunk = Vec<Result<LoadedDoc, String>>;

/// Documents per chunk of a load: small, so that the writer's first job waits little.
const LOAD_CHUNK: usize = 32;

impl DocLoads {
    /// Starts loading `items` on up to 8 threads (loads them here when they are few).
    pub fn start(items: Vec<Vec<u8>>) -> DocLoads {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        let len = items.len();
        let mut frame = FrameLoads { len, next_chunk: 0, workers: Vec::new(), ready: Default::default() };
        if len >= 64 && threads > 1 {
            let items = std::sync::Arc::new(items);
            for w in 0..threads {
                let (tx, rx) = std::sync::mpsc::channel();
                let items = items.clone();
                let spawned = std::thread::Builder::new().name("doc-check".into()).spawn(move || {
                    for chunk in items.chunks(LOAD_CHUNK).skip(w).step_by(threads) {
                        let load = std::panic::AssertUnwindSafe(|| chunk.iter().map(|i| load_doc_item(i)).collect());
                        let loaded = std::panic::catch_unwind(load).unwrap_or_else(|_| {
                            chunk.iter().map(|_| Err("document check panicked".to_owned())).collect()
                        });
                        if tx.send(loaded).is_err() {
                            return;
                        }
                    }
                });
                match spawned {
                    Ok(_) => frame.workers.push(std::sync::Mutex::new(rx)),
                    // Whatever was not handed to a thread is loaded here.
                    Err(_) => break,
                }
            }
            if frame.workers.len() < threads {
                frame.workers.clear();
                frame.ready = items.iter().map(|i| load_doc_item(i)).collect();
            }
        } else {
            frame.ready = items.iter().map(|i| load_doc_item(i)).collect();
        }
        DocLoads { frames: [frame].into() }
    }

    /// Documents in all (loaded or not yet).
    fn len(&self) -> usize {
        self.frames.iter().map(|f| f.len).sum()
    }

    /// The next document loaded, in item order, waiting for it if need be.
    fn next(&mut self) -> Option<Result<LoadedDoc, String>> {
        loop {
            let frame = self.frames.front_mut()?;
            if let Some(d) = frame.ready.pop_front() {
                return Some(d);
            }
            let chunks = frame.len.div_ceil(LOAD_CHUNK);
            if frame.workers.is_empty() || frame.next_chunk >= chunks {
                self.frames.pop_front();
                continue;
            }
            let c = frame.next_chunk;
            frame.next_chunk += 1;
            let n = LOAD_CHUNK.min(frame.len - c * LOAD_CHUNK);
            let worker = frame.workers[c % frame.workers.len()].lock().map(|rx| rx.recv());
            frame.ready = match worker {
                Ok(Ok(chunk)) if chunk.len() == n => chunk.into(),
                _ => (0..n).map(|_| Err("document check failed".to_owned())).collect(),
            };
        }
    }

    /// [`DocLoads::next`], which must be the load of `item` (else `item` is loaded here).
    fn next_for(&mut self, item: &[u8]) -> Result<LoadedDoc, String> {
        match self.next() {
            Some(Ok(d)) if d.is_of(item) => Ok(d),
            Some(Err(reason)) => Err(reason),
            _ => load_doc_item(item),
        }
    }
}

impl LoadedDoc {
    /// Whether this was loaded from `item`.
    fn is_of(&self, item: &[u8]) -> bool {
        decode_doc(item).is_ok_and(|(id, bytes)| id == self.doc_id && bytes == self.bytes.as_slice())
    }
}

fn load_doc_item(item: &[u8]) -> Result<LoadedDoc, String> {
    let (doc_id, bytes) = decode_doc(item).map_err(|e| format!("document refused: {e}"))?;
    let doc = AutoCommit::load(bytes).map_err(|e| format!("document {doc_id} refused: {e}"))?;
    let archive = archive_of(&doc_id, &doc)?;
    Ok(LoadedDoc { bytes: bytes.to_vec(), doc_id, doc, archive })
}

/// The archive a cylinder document holds, checked; `None` for other documents.
fn archive_of(doc_id: &DocId, doc: &AutoCommit) -> Result<Option<CylinderArchive>, String> {
    if !doc_id.0.starts_with("cyl:") {
        return Ok(None);
    }
    let archive = read_document::<CylinderArchive>(doc)
        .map_err(|e| e.to_string())
        .and_then(|a| a.validate().map(|()| a).map_err(|e| e.to_string()))
        .map_err(|e| format!("document {doc_id} is not a valid archive: {e}"))?;
    match archive.full_code() {
        Ok(code) if DocId::cylinder(&code) == *doc_id => Ok(Some(archive)),
        _ => Err(format!("document {doc_id} holds another cylinder")),
    }
}

/// Runs `check` over chunks of `items` on up to 8 threads (one for fewer than 64 items),
/// verdicts in item order. A chunk whose check panicked is refused item by item, so
/// verdicts stay aligned.
fn on_every_core<T: Send>(
    items: &[Vec<u8>],
    panicked: &str,
    check: impl Fn(&[Vec<u8>]) -> Vec<Result<T, String>> + Sync,
) -> Vec<Result<T, String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if items.len() < 64 || threads == 1 {
        return check(items);
    }
    let per = items.len().div_ceil(threads);
    let check = &check;
    std::thread::scope(|s| {
        let handles: Vec<_> = items.chunks(per).map(|c| (c.len(), s.spawn(move || check(c)))).collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| h.join().unwrap_or_else(|_| (0..n).map(|_| Err(panicked.to_owned())).collect()))
            .collect()
    })
}

/// A document item on the wire: u16 length of the id, the id, the Automerge bytes.
fn encode_doc(doc_id: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + doc_id.len() + bytes.len());
    out.extend_from_slice(&(doc_id.len() as u16).to_be_bytes());
    out.extend_from_slice(doc_id.as_bytes());
    out.extend_from_slice(bytes);
    out
}

fn decode_doc(item: &[u8]) -> Result<(DocId, &[u8]), String> {
    let len =
        u16::from_be_bytes(item.get(..2).ok_or("document item too short")?.try_into().map_err(|_| "length")?) as usize;
    let id = item.get(2..2 + len).ok_or("document id truncated")?;
    let id = std::str::from_utf8(id).map_err(|_| "document id is not UTF-8")?;
    if !(id.starts_with("cyl:") || id.split_once(':').is_some_and(|(k, v)| !k.is_empty() && !v.is_empty())) {
        return Err(format!("document id {id:?} has no kind"));
    }
    Ok((DocId(id.to_owned()), &item[2 + len..]))
}

impl WriteCtx<'_> {
    /// Adds an item to a scope and its summaries; false if it was there.
    pub(crate) fn add_item(&mut self, scope: &str, id: &Id, value: &[u8]) -> Result<bool, StoreError> {
        {
            let mut items = self.tx.open_table(SYNC_ITEMS_TABLE)?;
            if items.insert((scope, id), value)?.is_some() {
                return Ok(false);
            }
        }
        self.update_summaries(scope, id, Some(id))?;
        Ok(true)
    }

    fn remove_item(&mut self, scope: &str, id: &Id) -> Result<(), StoreError> {
        let removed = {
            let mut items = self.tx.open_table(SYNC_ITEMS_TABLE)?;
            items.remove((scope, id))?.is_some()
        };
        if removed {
            self.update_summaries(scope, id, None)?;
        }
        Ok(())
    }

    /// Records an item's effect on its scope's summaries: `added` is what the change
    /// sequence keeps of an added item (its id; an event's key), `None` for a removal.
    /// The changes of a whole batch are folded into the summary tables once, before its
    /// commit (`apply_summaries`).
    pub(crate) fn update_summaries(&mut self, scope: &str, id: &Id, added: Option<&[u8]>) -> Result<(), StoreError> {
        let add = added.is_some();
        if let Some(change) = added {
            let mut log = self.tx.open_table(CHANGES_TABLE)?;
            super::changes::append(&mut log, scope, [change])?;
        }
        let ranges = self.summaries.of_scope(scope);
        for range in summary_ranges(id) {
            let (added, removed) = ranges.entry(range).or_default();
            if add { added.add(id) } else { removed.add(id) }
        }
        Ok(())
    }

    /// A document's heads moved: its item is replaced.
    pub(crate) fn doc_item_changed(&mut self, doc_id: &DocId, heads: &[ChangeHash]) -> Result<(), StoreError> {
        let scope = docs_scope(self.scope);
        let new = doc_item_id(doc_id, heads);
        let old = {
            let mut t = self.tx.open_table(DOC_ITEMS_TABLE)?;
            t.insert(doc_id.0.as_str(), &new)?.map(|v| *v.value())
        };
        if old == Some(new) {
            return Ok(());
        }
        if let Some(old) = old {
            self.remove_item(&scope, &old)?;
        }
        self.add_item(&scope, &new, doc_id.0.as_bytes())?;
        Ok(())
    }

    /// Events from a peer: each verified and stored; then each cylinder they touch is
    /// re-derived once from its whole history (they arrive in id order, not time order,
    /// so folding them in one by one would replay the history for nearly every event).
    pub fn receive_events(&mut self, items: &[Vec<u8>], store: &Store) -> Result<Vec<Received>, StoreError> {
        self.receive_checked(verify_items(items, store))
    }

    /// [`WriteCtx::receive_events`] for items [`verify_items`] checked.
    pub fn receive_checked(&mut self, checked: Vec<Verdict>) -> Result<Vec<Received>, StoreError> {
        let mut out = Vec::with_capacity(checked.len());
        let mut accepted = Vec::with_capacity(checked.len());
        let mut rights: std::collections::BTreeMap<(schema::event::NodeId, &str), Result<(), String>> =
            std::collections::BTreeMap::new();
        let seal_checks = self.seal_checks(&checked)?;
        for (event, seal_check) in checked.into_iter().zip(seal_checks) {
            let event = match event {
                Verdict::Checked(e) => e,
                Verdict::AwaitsSeal(e) => match seal_check {
                    Some(SealCheck::Listed) => e,
                    Some(SealCheck::Refused(why)) => {
                        out.push(Received::Refused(format!("event {} refused: {why}", e.id)));
                        continue;
                    }
                    Some(SealCheck::NotHere) | None => {
                        out.push(self.await_its_seal(&e)?);
                        continue;
                    }
                },
                Verdict::Refused(reason) => {
                    out.push(Received::Refused(reason));
                    continue;
                }
            };
            // One registry look-up per signer and kind per batch, not per event.
            let right = (event.event.node, event.event.body.kind());
            let verdict = match rights.get(&right) {
                Some(v) => v.clone(),
                None => {
                    let v = self.may_write(event.event.node, right.1)?;
                    rights.insert(right, v.clone());
                    v
                }
            };
            if let Err(reason) = verdict {
                out.push(Received::Refused(format!("event {} refused: {reason}", event.id)));
                continue;
            }
            out.push(Received::Duplicate);
            accepted.push((out.len() - 1, event));
        }
        let fresh = self.insert_received(accepted.iter().map(|(_, e)| e))?;
        let mut touched: std::collections::BTreeMap<schema::codes::FullCode, Vec<SignedEvent>> =
            std::collections::BTreeMap::new();
        // Per signer: events stamped too far ahead of our clock to follow, and the most ahead.
        let mut ahead: std::collections::BTreeMap<schema::event::NodeId, (u64, i64)> = Default::default();
        for ((at, event), fresh) in accepted.into_iter().zip(fresh) {
            if fresh {
                // Our clock moves past what we have seen: a local event recorded after
                // this one sorts after it (a later scrap must come after the fill it
                // follows). Not past a bound: a node whose clock runs fast is stored, not
                // followed.
                if !self.observe_hlc(event.event.hlc) {
                    let (n, most) = ahead.entry(event.event.node).or_default();
                    *n += 1;
                    *most = (*most).max(event.event.hlc.physical_ms.saturating_sub(self.wall_ms));
                }
                out[at] = Received::Stored(event.id.0);
                touched.entry(event.event.cylinder).or_default().push(event);
            }
        }
        for (node, (n, most)) in &ahead {
            tracing::warn!(
                signer = %node,
                events = n,
                ahead_minutes = most / 60_000,
                "events stamped ahead of this node's clock by more than {} minutes: stored; this node's clock does not follow them (the signer's clock runs fast)",
                schema::hlc::AHEAD_MAX_MS / 60_000
            );
        }
        let n_ahead: u64 = ahead.values().map(|(n, _)| n).sum();
        if n_ahead > 0 {
            self.bump(EVENTS_AHEAD_COUNTER, n_ahead as i64)?;
        }
        for (code, fresh) in touched {
            if let Some(old) = self.row(&code)? {
                self.cylinder_changed(&code, &old, &fresh)?;
            }
        }
        Ok(out)
    }

    /// Stores received events with each table opened once for all of them (the log, the
    /// id table, the change sequence), the counter bumped once and the summary changes
    /// gathered per range; their traceability index entries wait for the writer's next
    /// index pass. Says of each whether it was new.
    fn insert_received<'e>(&mut self, events: impl Iterator<Item = &'e SignedEvent>) -> Result<Vec<bool>, StoreError> {
        let scope = events_scope(self.scope);
        let mut fresh: Vec<bool>;
        let mut deltas: std::collections::BTreeMap<(u8, u16), Summary> = std::collections::BTreeMap::new();
        {
            let mut log = self.tx.open_table(EVENTS_TABLE)?;
            let mut seqs = self.tx.open_table(CHANGES_TABLE)?;
            let keyed: Vec<(&SignedEvent, Vec<u8>)> = events.map(|e| (e, super::event_key(e))).collect();
            // The log in key order (a merged put holds several sorted runs). A key ends with
            // the event's id, so the insert is also the duplicate check; an event stored
            // before keeps its value (one stored with its signature keeps it).
            let mut by_key: Vec<usize> = (0..keyed.len()).collect();
            by_key.sort_unstable_by_key(|&i| &keyed[i].1);
            fresh = vec![false; keyed.len()];
            let mut ids = Vec::with_capacity(keyed.len());
            // Other nodes' events stored with their signature, for their seal to come, and
            // those whose signed copy a sealed one replaced.
            let (mut signed, mut resealed) = (Vec::new(), Vec::new());
            for i in by_key {
                let (event, key) = &keyed[i];
                let value = super::log_value(event);
                let old = log.insert(key.as_slice(), value.as_slice())?.map(|old| old.value().to_vec());
                match old {
                    None => {
                        fresh[i] = true;
                        ids.push((event.id.0, *super::key_head(key)?));
                        if event.event.node != self.node
                            && event.signature != NO_SIGNATURE
                            && named_seal(&event.signature).is_none()
                        {
                            signed.push((signed_unsealed_key(&event.id, &event.event.node), i));
                        }
                    }
                    // A copy under its node's seal (checked on receipt) takes the place
                    // of one stored signed: it goes on without the signature and waits
                    // for no seal. Any other stored copy keeps its value.
                    Some(old) if named_seal(&event.signature).is_some() && old.first() == Some(&super::LOG_SIGNED) => {
                        resealed.push(signed_unsealed_key(&event.id, &event.event.node));
                    }
                    Some(old) if old != value => {
                        log.insert(key.as_slice(), old.as_slice())?;
                    }
                    Some(_) => {}
                }
            }
            *self.new_run |= super::runs::insert(self.tx, ID_RUNS, Origin::Received, &mut ids)?;
            if !signed.is_empty() || !resealed.is_empty() {
                signed.sort_unstable();
                let mut t = self.tx.open_table(SIGNED_UNSEALED_TABLE)?;
                for (key, i) in signed {
                    t.insert(&key, keyed[i].1.as_slice())?;
                }
                for key in resealed {
                    t.remove(&key)?;
                }
            }
            // The change sequence in arrival order.
            let added = keyed.iter().zip(&fresh).filter(|(_, f)| **f).map(|((_, key), _)| key.as_slice());
            super::changes::append(&mut seqs, &scope, added)?;
            for ((event, _), _) in keyed.iter().zip(&fresh).filter(|(_, f)| **f) {
                let id = &event.id.0;
                for range in summary_ranges(id) {
                    deltas.entry(range).or_default().add(id);
                }
            }
        }
        let stored = fresh.iter().filter(|f| **f).count();
        if stored > 0 {
            self.bump("events", stored as i64)?;
            // Their traceability index entries come in the writer's next index pass.
            *self.deferred = true;
        }
        let ranges = self.summaries.of_scope(&scope);
        for (range, added) in deltas {
            ranges.entry(range).or_default().0.merge(&added);
        }
        Ok(fresh)
    }

    /// The last change sequence number of `scope` in this transaction.
    fn scope_seq(&self, scope: &str) -> Result<u64, StoreError> {
        super::changes::last(&self.tx.open_table(CHANGES_TABLE)?, scope)
    }

    /// Whether the signer `node` may write events of `kind`. Enforced once this node is
    /// enrolled (it holds its enterprise's CA certificate): the signer must be a node
    /// enrolled in this enterprise, and a regulator's laptop may write only findings.
    fn may_write(&self, node: schema::event::NodeId, kind: &str) -> Result<Result<(), String>, StoreError> {
        if self.meta(crate::enrolment::CA_CERT)?.is_none() {
            return Ok(Ok(()));
        }
        let records = self.tx.open_table(RECORDS_TABLE)?;
        let id = DocId::record("node", &node.to_string());
        let Some(json) = records.get(id.0.as_str())? else {
            return Ok(Err(format!("signer {node:?} is not an enrolled node")));
        };
        let record: schema::records::NodeRecord =
            serde_json::from_slice(json.value()).map_err(|e| StoreError::Corrupt(format!("node record: {e}")))?;
        if record.enterprise != self.scope {
            return Ok(Err(format!("signer {} belongs to enterprise {}", record.name, record.enterprise)));
        }
        if !record.may_write(kind) {
            return Ok(Err(format!("a {} node ({}) may not write {kind}", record.role, record.name)));
        }
        Ok(Ok(()))
    }

    /// For each event that still awaits its seal, what the seal it names says now (the
    /// seal may have been stored since the event was checked); `None` for the others.
    fn seal_checks(&self, checked: &[Verdict]) -> Result<Vec<Option<SealCheck>>, StoreError> {
        let mut out = Vec::with_capacity(checked.len());
        let mut book = None;
        for verdict in checked {
            out.push(match verdict {
                Verdict::AwaitsSeal(e) => {
                    let book = match &mut book {
                        Some(book) => book,
                        None => book.insert(SealBook::new(self.tx.open_table(SYNC_ITEMS_TABLE)?, self.scope)),
                    };
                    Some(book.check(e)?)
                }
                _ => None,
            });
        }
        Ok(out)
    }

    /// A seal from a peer: checked, then stored with the events it lists.
    pub fn receive_seal(&mut self, item: &[u8]) -> Result<Received, StoreError> {
        let seal = match Seal::decode(item) {
            Ok(seal) => seal,
            Err(e) => return Ok(Received::Refused(format!("seal refused: {e}"))),
        };
        // No check of the signer's enrolment here: a seal vouches only for events of its
        // own signer, and each of those is checked (enrolled, allowed to write its kind)
        // when it is taken in. A relay may pass on a node's seals before the record of
        // its enrolment (documents follow seals), so a check here refused good seals.
        let id: Id = Seal::id_of(item);
        Ok(match self.store_seal(&seal, &id, item)? {
            true => Received::Stored(id),
            false => Received::Duplicate,
        })
    }

    /// Keeps an unsigned event aside until a seal listing it arrives.
    fn await_its_seal(&mut self, event: &SignedEvent) -> Result<Received, StoreError> {
        let mut t = self.tx.open_table(AWAITING_SEAL_TABLE)?;
        if t.len()? >= AWAITING_SEAL_MAX {
            return Ok(Received::Refused(format!(
                "event {} refused: it carries no signature, no seal of its node is here, and {AWAITING_SEAL_MAX} events already wait for theirs",
                event.id
            )));
        }
        t.insert(&sealed_id(&event.id), event.to_stored().as_slice())?;
        Ok(Received::AwaitsSeal)
    }

    /// Adds a checked seal to its scope, then takes in the received events that waited for
    /// it and drops the signature of those stored with theirs (they travel on under the
    /// seal); false if it was here.
    fn store_seal(&mut self, seal: &Seal, id: &Id, encoded: &[u8]) -> Result<bool, StoreError> {
        if !self.add_item(&seals_scope(self.scope), id, encoded)? {
            return Ok(false);
        }
        let reference = seal_ref(id);
        let mut waited = Vec::new();
        {
            let mut awaiting = self.tx.open_table(AWAITING_SEAL_TABLE)?;
            if !awaiting.is_empty()? {
                for sealed in &seal.ids {
                    if let Some(stored) = awaiting.remove(sealed)? {
                        waited.push(stored.value().to_vec());
                    }
                }
            }
        }
        self.reseal_signed(seal, &reference)?;
        if !waited.is_empty() {
            // Checked as on receipt (the writer's rights, then the seal). An event kept
            // aside by layout 8, which named no seal, is taken as naming this one.
            let verdicts = waited
                .iter()
                .map(|stored| match SignedEvent::from_stored_trusted(stored) {
                    Ok(mut e) => {
                        if e.signature == NO_SIGNATURE {
                            e.signature = reference;
                        }
                        Verdict::AwaitsSeal(e)
                    }
                    Err(e) => Verdict::Refused(format!("event refused: {e}")),
                })
                .collect();
            for r in self.receive_checked(verdicts)? {
                if let Received::Refused(reason) = r {
                    tracing::warn!(%reason, "an event that waited for its seal was refused");
                }
            }
        }
        Ok(true)
    }

    /// Other nodes' events stored with their signature that `seal` lists (of its signer)
    /// take the seal's id in its place in the log.
    fn reseal_signed(&mut self, seal: &Seal, reference: &[u8; 64]) -> Result<(), StoreError> {
        let mut keys = Vec::new();
        {
            let mut waiting = self.tx.open_table(SIGNED_UNSEALED_TABLE)?;
            if waiting.is_empty()? {
                return Ok(());
            }
            let mut key = [0; 48];
            key[16..].copy_from_slice(&seal.signer.0);
            for sealed in &seal.ids {
                key[..16].copy_from_slice(sealed);
                if let Some(log_key) = waiting.remove(&key)? {
                    keys.push(log_key.value().to_vec());
                }
            }
        }
        keys.sort_unstable();
        self.reseal(keys, reference)
    }

    /// Notes an event of this node for its next seal, and seals when a seal's worth waits.
    pub(crate) fn queue_for_sealing(&mut self, event: &SignedEvent) -> Result<(), StoreError> {
        let waiting = {
            let mut t = self.tx.open_table(UNSEALED_TABLE)?;
            let next = t.last()?.map_or(0, |(k, _)| k.value() + 1);
            t.insert(next, &event.id.0)?;
            t.len()?
        };
        if waiting as usize >= Seal::MAX_IDS {
            self.seal_own()?;
        }
        Ok(())
    }

    /// Seals up to [`Seal::MAX_IDS`] of this node's events that wait for a seal; says how
    /// many.
    pub(crate) fn seal_own(&mut self) -> Result<usize, StoreError> {
        let waiting: Vec<(u64, [u8; 32])> = {
            let t = self.tx.open_table(UNSEALED_TABLE)?;
            t.iter()?.take(Seal::MAX_IDS).map(|r| r.map(|(k, v)| (k.value(), *v.value()))).collect::<Result<_, _>>()?
        };
        let Some(&(last, _)) = waiting.last() else { return Ok(0) };
        let seal =
            Seal::make(self.key, waiting.iter().map(|(_, id)| sealed_id(&schema::event::EventId(*id))).collect());
        let encoded = seal.encode();
        let id: Id = Seal::id_of(&encoded);
        self.store_seal(&seal, &id, &encoded)?;
        {
            let mut t = self.tx.open_table(UNSEALED_TABLE)?;
            t.retain_in(..=last, |_, _| false)?;
        }
        self.drop_signatures(waiting.into_iter().map(|(_, id)| id), &seal_ref(&id))?;
        Ok(seal.ids.len())
    }

    /// The seal stored here vouches for these events of this node now: their log values
    /// name it in place of the signature, as a received sealed event's do, and the log
    /// keeps 32 bytes less of each.
    fn drop_signatures(&mut self, ids: impl Iterator<Item = [u8; 32]>, reference: &[u8; 64]) -> Result<(), StoreError> {
        let mut ids: Vec<[u8; 32]> = ids.collect();
        ids.sort_unstable();
        let mut keys = Vec::with_capacity(ids.len());
        {
            let t = Ids::new(self.tx.open_table(ID_RUNS.def)?)?;
            for id in &ids {
                keys.extend(t.key(id)?);
            }
        }
        keys.sort_unstable();
        self.reseal(keys, reference)
    }

    /// The events at `keys` (in key order) that carry their signature take `reference`,
    /// a seal's, in its place.
    fn reseal(&mut self, keys: Vec<Vec<u8>>, reference: &[u8; 64]) -> Result<(), StoreError> {
        let mut log = self.tx.open_table(EVENTS_TABLE)?;
        for key in keys {
            let resealed = match log.get(key.as_slice())? {
                Some(value) => match super::log_parts(value.value())? {
                    (signature, _) if signature == NO_SIGNATURE || named_seal(&signature).is_some() => None,
                    (_, bytes) => Some(super::log_value_of(reference, bytes)),
                },
                None => None,
            };
            if let Some(value) = resealed {
                log.insert(key.as_slice(), value.as_slice())?;
            }
        }
        Ok(())
    }

    /// A document from a peer (loaded by [`DocLoads`]): merged into ours (or taken
    /// as it is), then the derived row or record is refreshed. The documents it is done
    /// with go to `spent`, for the caller to drop outside the writer: freeing an Automerge
    /// document took the writer 32 µs, nearly half of its time for a new document
    /// (`sync_bench --cylinders 10000`: 318 of 680 ms for 10,000 documents).
    pub fn receive_doc(
        &mut self,
        loaded: Result<LoadedDoc, String>,
        spent: &mut Vec<AutoCommit>,
    ) -> Result<Received, StoreError> {
        let LoadedDoc { doc_id, bytes, doc: theirs, archive } = match loaded {
            Ok(d) => d,
            Err(reason) => return Ok(Received::Refused(reason)),
        };
        // A document new here is stored as it came (it loaded, so it is well formed);
        // saving it again would cost more than the rest of its receipt.
        let (mut doc, verbatim, archive) = match self.load_doc(&doc_id)? {
            Some(mut ours) => {
                let before = ours.get_heads();
                let mut theirs = theirs;
                let merged = ours.merge(&mut theirs);
                spent.push(theirs);
                if let Err(e) = merged {
                    spent.push(ours);
                    return Ok(Received::Refused(format!("document {doc_id} does not merge: {e}")));
                }
                if ours.get_heads() == before {
                    spent.push(ours);
                    return Ok(Received::Duplicate);
                }
                // Check the merged result before anything is written.
                match archive_of(&doc_id, &ours) {
                    Ok(archive) => (ours, None, archive),
                    Err(reason) => {
                        spent.push(ours);
                        return Ok(Received::Refused(reason));
                    }
                }
            }
            None => (theirs.with_actor(self.actor()), Some(bytes), archive),
        };
        match verbatim {
            Some(bytes) => self.write_snapshot_bytes(&doc_id, &bytes, &doc.get_heads())?,
            None => self.write_snapshot(&doc_id, &mut doc)?,
        }
        let heads = doc.get_heads();
        match archive {
            Some(archive) => {
                let code = archive.full_code().map_err(|e| StoreError::Invalid(e.to_string()))?;
                let old = self.row(&code)?;
                if old.is_none() {
                    self.bump("cylinders", 1)?;
                }
                let history = self.history(&code)?;
                let row = CylinderRow { state: derive(&archive, &history), archive };
                self.put_row(&code, old.as_ref(), &row)?;
                self.refresh_anomalies(&code, &row, &history)?;
            }
            None => {
                let json = serde_json::to_vec(&automerge::AutoSerde::from(&doc))
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                let mut t = self.tx.open_table(RECORDS_TABLE)?;
                t.insert(doc_id.0.as_str(), json.as_slice())?;
            }
        }
        spent.push(doc);
        Ok(Received::Stored(doc_item_id(&doc_id, &heads)))
    }
}

/// The pre-aggregated ranges an item counts in: the whole scope, its first id byte and
/// its first two id bytes, as (level, prefix).
fn summary_ranges(id: &Id) -> [(u8, u16); 3] {
    [(0, 0), (1, id[0] as u16), (2, u16::from_be_bytes([id[0], id[1]]))]
}

/// Summary changes of one write batch, per scope: (level, prefix) → (added, removed).
/// A batch touches a few scopes; each one's name is kept once, not once per item.
#[derive(Debug, Default)]
pub(crate) struct SummaryDeltas(Vec<(String, RangeDeltas)>);

/// One scope's summary changes: (level, prefix) → (added, removed).
type RangeDeltas = std::collections::BTreeMap<(u8, u16), (Summary, Summary)>;

impl SummaryDeltas {
    fn of_scope(&mut self, scope: &str) -> &mut RangeDeltas {
        let at = match self.0.iter().position(|(s, _)| s == scope) {
            Some(at) => at,
            None => {
                self.0.push((scope.to_owned(), Default::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }
}

/// Bytes of a row of the two-byte summary level: 256 summaries of 40 bytes.
pub(crate) const L2_ROW_BYTES: usize = 256 * 40;

/// The summary of the two-byte prefix (first, `second`) in its row of the packed level.
fn l2_entry(row: &[u8], second: u8) -> Result<Summary, StoreError> {
    let at = second as usize * 40;
    match row.get(at..at + 40).and_then(|b| <&[u8; 40]>::try_from(b).ok()) {
        Some(b) if row.len() == L2_ROW_BYTES => Ok(Summary::from_bytes(b)),
        _ => Err(StoreError::Corrupt(format!("summary row of {} bytes, not {L2_ROW_BYTES}", row.len()))),
    }
}

/// Writes the summary of the two-byte prefix (first, `second`) into its row of the packed
/// level (a row of [`L2_ROW_BYTES`], as [`l2_entry`] checked or the caller made it).
pub(crate) fn l2_set(row: &mut [u8], second: u8, summary: &[u8; 40]) {
    let at = second as usize * 40;
    row[at..at + 40].copy_from_slice(summary);
}

/// Folds a batch's summary changes into the tables: one read and one write per touched
/// range of levels 0 and 1, and per touched row (first byte) of the packed level 2.
pub(crate) fn apply_summaries(tx: &redb::WriteTransaction, deltas: &mut SummaryDeltas) -> Result<(), StoreError> {
    let fold = |old: Summary, added: &Summary, removed: &Summary| {
        let mut s = old;
        s.merge(added);
        s.subtract(removed);
        s.to_bytes()
    };
    let mut l0 = tx.open_table(SUMMARY_L0_TABLE)?;
    let mut l1 = tx.open_table(SUMMARY_L1_TABLE)?;
    let mut l2 = tx.open_table(SUMMARY_L2_TABLE)?;
    for (scope, ranges) in std::mem::take(&mut deltas.0) {
        let scope = scope.as_str();
        // The level-2 row being folded: ranges come in (level, prefix) order, so a row's
        // prefixes come together.
        let mut row: Option<(u8, Vec<u8>)> = None;
        for ((level, prefix), (added, removed)) in ranges {
            match level {
                0 => {
                    let old = l0.get(scope)?.map(|v| Summary::from_bytes(v.value())).unwrap_or_default();
                    l0.insert(scope, &fold(old, &added, &removed))?;
                }
                1 => {
                    let key = (scope, prefix as u8);
                    let old = l1.get(key)?.map(|v| Summary::from_bytes(v.value())).unwrap_or_default();
                    l1.insert(key, &fold(old, &added, &removed))?;
                }
                _ => {
                    let [first, second] = prefix.to_be_bytes();
                    let (_, bytes) = match row.take() {
                        Some(r) if r.0 == first => row.insert(r),
                        other => {
                            if let Some((f, bytes)) = other {
                                l2.insert((scope, f), bytes.as_slice())?;
                            }
                            let bytes = match l2.get((scope, first))? {
                                Some(v) => v.value().to_vec(),
                                None => vec![0; L2_ROW_BYTES],
                            };
                            row.insert((first, bytes))
                        }
                    };
                    let old = l2_entry(bytes, second)?;
                    l2_set(bytes, second, &fold(old, &added, &removed));
                }
            }
        }
        if let Some((f, bytes)) = row {
            l2.insert((scope, f), bytes.as_slice())?;
        }
    }
    Ok(())
}

impl Store {
    /// Hex fingerprints of this node's event set and document set.
    pub fn fingerprints(&self) -> Result<(String, String), StoreError> {
        let hex = |s: Summary| {
            let fp = s.fingerprint();
            format!("{}-{}", fp.count, crate::auth::hex(&fp.hash))
        };
        Ok((
            hex(self.summary_of(&events_scope(&self.enterprise), &[])?),
            hex(self.summary_of(&docs_scope(&self.enterprise), &[])?),
        ))
    }

    fn summary_of(&self, scope: &str, prefix: &[u8]) -> Result<Summary, StoreError> {
        let r = self.db.begin_read()?;
        let read =
            |b: Option<redb::AccessGuard<'_, &[u8; 40]>>| b.map(|v| Summary::from_bytes(v.value())).unwrap_or_default();
        match prefix.len() {
            0 => Ok(read(r.open_table(SUMMARY_L0_TABLE)?.get(scope)?)),
            1 => Ok(read(r.open_table(SUMMARY_L1_TABLE)?.get((scope, prefix[0]))?)),
            2 => match r.open_table(SUMMARY_L2_TABLE)?.get((scope, prefix[0]))? {
                Some(row) => l2_entry(row.value(), prefix[1]),
                None => Ok(Summary::default()),
            },
            _ => Ok(Summary::of(self.item_ids(scope, prefix)?)),
        }
    }

    fn item_ids(&self, scope: &str, prefix: &[u8]) -> Result<Vec<Id>, StoreError> {
        let r = self.db.begin_read()?;
        let mut lo = [0u8; 32];
        let mut hi = [0xffu8; 32];
        lo[..prefix.len()].copy_from_slice(prefix);
        hi[..prefix.len()].copy_from_slice(prefix);
        let mut out = Vec::new();
        if ScopeKind::of(scope) == ScopeKind::Events {
            // The event scope's items are the event-id table itself: one insert per event.
            if scope != events_scope(&self.enterprise) {
                return Ok(out);
            }
            return Ids::new(r.open_table(ID_RUNS.def)?)?.between(&lo, &hi);
        }
        for item in r.open_table(SYNC_ITEMS_TABLE)?.range((scope, &lo)..=(scope, &hi))? {
            out.push(*item?.0.value().1);
        }
        Ok(out)
    }

    fn item_get(&self, scope: &str, id: &Id) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.db.begin_read()?;
        if ScopeKind::of(scope) == ScopeKind::Events {
            return Ok(self.event_items(&r, std::slice::from_ref(id))?.pop());
        }
        let items = r.open_table(SYNC_ITEMS_TABLE)?;
        if ScopeKind::of(scope) == ScopeKind::Seals {
            return Ok(items.get((scope, id))?.map(|v| v.value().to_vec()));
        }
        let Some(doc_id) = items.get((scope, id))?.map(|v| String::from_utf8_lossy(v.value()).into_owned()) else {
            return Ok(None);
        };
        let (docs, chunks) = (r.open_table(DOCS_TABLE)?, r.open_table(DOC_CHUNKS_TABLE)?);
        Ok(super::doc_bytes(&docs, &chunks, &doc_id)?.map(|bytes| encode_doc(&doc_id, &bytes)))
    }

    /// Events by id as items, in the order asked (absent ones left out).
    fn event_items(&self, r: &redb::ReadTransaction, ids: &[Id]) -> Result<Vec<Vec<u8>>, StoreError> {
        let table = Ids::new(r.open_table(ID_RUNS.def)?)?;
        let mut keys = Vec::with_capacity(ids.len());
        for id in ids {
            keys.extend(table.key(id)?);
        }
        self.events_at(r, &keys)
    }

    /// The events at `keys` (event keys, each ending with its id) as items, in that order.
    /// A sealed event goes as the log keeps it: naming its seal in place of its signature.
    fn events_at(&self, r: &redb::ReadTransaction, keys: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, StoreError> {
        let events = r.open_table(EVENTS_TABLE)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(value) = events.get(key.as_slice())? else { continue };
            out.push(super::stored_of_log(value.value())?);
        }
        Ok(out)
    }

    /// The events of the changes `seqs` (ascending) of the events scope, in key order
    /// (cylinder, then time): their keys come from the change sequence, so the log is
    /// read in its own order and the id table not at all.
    fn changed_events(&self, scope: &str, seqs: &[u64]) -> Result<Vec<Vec<u8>>, StoreError> {
        let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else { return Ok(Vec::new()) };
        let r = self.db.begin_read()?;
        let mut keys = Vec::with_capacity(seqs.len());
        {
            let log = r.open_table(CHANGES_TABLE)?;
            let mut wanted = seqs.iter().peekable();
            for row in super::changes::entries(&log, scope, first, last)? {
                let (seq, key) = row?;
                while wanted.next_if(|w| **w < seq).is_some() {}
                if wanted.next_if_eq(&&seq).is_some() {
                    keys.push(key);
                }
            }
        }
        keys.sort_unstable();
        self.events_at(&r, &keys)
    }
}

/// Item bytes from which a put is taken as part of a stream (items frames are 2 MiB when
/// full; see [`Store::write_unsettled_blocking`]).
const STREAM_PUT_MIN: usize = 1 << 20;

/// Change sequence ranges stations' uploads added (`Replica::upload`): scope → ranges `(first, last)` in order,
/// neighbours joined. Kept in memory: they only steer what a waiting session relays
/// early, never what is stored or sent in the end.
pub(crate) type FromStations = std::collections::BTreeMap<String, Vec<(u64, u64)>>;

/// Ranges kept per scope at most: older ones are forgotten (they lie below any waiting
/// session's cursor long before, since a session waits a minute at most).
const STATION_RANGES_MAX: usize = 1 << 14;

impl Store {
    /// Notes changes `first..=last` of `scope` as added by a station's upload.
    fn note_from_station(&self, scope: &str, (first, last): (u64, u64)) {
        let mut streamed = self.from_stations.lock().unwrap_or_else(|p| p.into_inner());
        let ranges = streamed.entry(scope.to_owned()).or_default();
        match ranges.last_mut() {
            Some(prev) if prev.1 + 1 == first => prev.1 = last,
            _ => ranges.push((first, last)),
        }
        if ranges.len() > STATION_RANGES_MAX {
            ranges.drain(..STATION_RANGES_MAX / 2);
        }
    }

    /// Up to `limit` changes of `scope` after `after` that no station's upload added: this
    /// node's own writes (a scrap at the head office), a regulator's (a hold) and what a
    /// station sent outside an upload (a handheld's operation), with the sequence read up
    /// to. Reads only the gaps between the stations' ranges, so a session
    /// that calls this while a million events stream in reads none of them.
    pub fn live_changes(&self, scope: &[u8], after: u64, limit: usize) -> Result<(Vec<(u64, Id)>, u64), StoreError> {
        let scope = scope_str(scope)?;
        let r = self.db.begin_read()?;
        let log = r.open_table(CHANGES_TABLE)?;
        let upto = super::changes::last(&log, scope)?;
        let skipped: Vec<(u64, u64)> = {
            let streamed = self.from_stations.lock().unwrap_or_else(|p| p.into_inner());
            let ranges = streamed.get(scope).map_or(&[][..], Vec::as_slice);
            ranges.iter().filter(|(_, last)| *last > after).copied().collect()
        };
        // The gaps between the stations' ranges above `after`, then the rest up to `upto`.
        let mut gaps = Vec::new();
        let mut from = after + 1;
        for (first, last) in skipped {
            if first > from {
                gaps.push((from, first - 1));
            }
            from = from.max(last + 1);
        }
        gaps.push((from, upto));
        let mut out = Vec::new();
        for (lo, hi) in gaps {
            if lo > hi.min(upto) {
                continue;
            }
            for item in super::changes::entries(&log, scope, lo, hi.min(upto))? {
                let (seq, change) = item?;
                if out.len() == limit {
                    return Ok((out, seq - 1));
                }
                out.push((seq, change_id(&change)?));
            }
        }
        Ok((out, upto))
    }
}

/// The store as the sync session sees it. Scopes are the strings above as bytes.
#[derive(Debug, Clone)]
pub struct Replica {
    pub store: Store,
    /// Checks of the next `Items` frame, made while the writer was busy with the one
    /// before (see [`Replica::precheck`]).
    prechecked: Option<std::sync::Arc<Prechecked>>,
    /// The peer is a regulator's laptop: what it puts (findings) counts as live, as this
    /// node's own writes do, and a head office relays it while stations' uploads wait
    /// (`Store::live_changes`).
    live_peer: bool,
    /// The peer is uploading: from the session's start until its first push is in (its
    /// catch-up, whatever its size), and from any put of a stream (a full frame or more)
    /// until the end of that push (`ItemStore::peer_pushed`). What it puts then waits
    /// with the bulk; what a station puts otherwise (a handheld's operation sent live)
    /// counts as live. Taking a session's first push as live when its frames were small
    /// made twenty stations of 500 cylinders, uploading at once, be relayed each other's
    /// documents: 41.8 s instead of 6.6 s (`net_bench --stations 20 --cylinders 500`).
    /// Held while it is (`Store::uploading`).
    upload: Option<super::Uploading>,
}

/// Items of one kind the writer takes in one job of a put. A put of a stream (frames
/// merged up to `replication::MERGE_ITEM_BYTES`: up to some 300,000 events, seconds of
/// writing) goes to the writer in jobs of this many, each handed over once the one before
/// is answered: a handheld's write at a station taking in a relay then waits behind one
/// job (tens of milliseconds), not the whole put (`net_bench`, a second station joins).
/// Events: about 15 µs each at a head office; documents (merged, their rows derived):
/// about 50 µs; a seal lists up to 4,096 events and takes in those that waited for it.
const PUT_JOB_EVENTS: usize = if cfg!(test) { 8 } else { 4096 };
const PUT_JOB_DOCS: usize = if cfg!(test) { 4 } else { 1024 };
const PUT_JOB_SEALS: usize = 1;

/// `all` cut into parts of `per` (the last one may be shorter), in order.
fn in_parts<T>(mut all: Vec<T>, per: usize) -> impl Iterator<Item = Vec<T>> {
    // Split from the back, so that each split moves only the part it takes off.
    let mut parts = Vec::with_capacity(all.len().div_ceil(per));
    while all.len() > per {
        let at = (all.len() - 1) / per * per;
        parts.push(all.split_off(at));
    }
    parts.push(all);
    parts.into_iter().rev()
}

/// Verdicts on the items of one frame, made before the writer takes it.
#[derive(Debug)]
pub enum Prechecked {
    Events(Vec<Verdict>),
    Docs(DocLoads),
    /// Seals are few (one per 4,096 events) and checked by the writer.
    Seals,
}

/// One job of a put: the items the writer takes in one go (see [`PUT_JOB_EVENTS`]).
enum Job {
    Events(Vec<Verdict>),
    Docs(Vec<Result<LoadedDoc, String>>),
    Seals(Vec<Vec<u8>>),
}

impl Prechecked {
    /// The checks an `Items` frame of `scope` needs: signatures or seals for events,
    /// loading for documents.
    /// Read-ahead permits an items frame of `scope` takes (`replication::read_ahead`). A
    /// frame of documents is checked by loading each into an Automerge document, many
    /// times its bytes in memory: at four permits, two such frames wait loaded at
    /// most instead of ten. A head office's RSS peaked at 1.20–1.27 GiB in the documents
    /// of a first sync of 50,000 cylinders, and stayed at 0.5–0.7 GiB in its events; 713
    /// MiB at most since.
    pub fn read_ahead_permits(scope: &[u8]) -> u32 {
        match ScopeKind::of(scope) {
            ScopeKind::Events | ScopeKind::Seals => 1,
            ScopeKind::Docs => 4,
        }
    }

    pub fn of(scope: &[u8], items: Vec<Vec<u8>>, store: &Store) -> Prechecked {
        match ScopeKind::of(scope) {
            ScopeKind::Events => Prechecked::Events(verify_items(&items, store)),
            ScopeKind::Seals => Prechecked::Seals,
            ScopeKind::Docs => Prechecked::Docs(DocLoads::start(items)),
        }
    }

    /// The verdicts on two frames' items, one after the other, when they are of one kind.
    pub fn join(self, next: Prechecked) -> Option<Prechecked> {
        match (self, next) {
            (Prechecked::Events(mut a), Prechecked::Events(b)) => {
                a.extend(b);
                Some(Prechecked::Events(a))
            }
            (Prechecked::Docs(mut a), Prechecked::Docs(b)) => {
                a.frames.extend(b.frames);
                Some(Prechecked::Docs(a))
            }
            (Prechecked::Seals, Prechecked::Seals) => Some(Prechecked::Seals),
            _ => None,
        }
    }

    /// The jobs a put of `items` (which these verdicts describe) is stored in, in order
    /// (see [`PUT_JOB_EVENTS`]), each with its item bytes. Documents are taken from their
    /// loads job by job, as they are loaded.
    ///
    /// Events are put in key order first (cylinder, then time; refused ones ahead), so
    /// that each job writes one stretch of the log. A merged put holds several frames,
    /// each sorted over the whole key range: cut as they came, every job wrote into
    /// pages all over the log, and the week's catch-up of `sync_bench --cylinders 30000`
    /// took 6.5–7.0 s instead of 4.8–5.1 s. Sorted, it took 4.4–4.6 s.
    fn into_jobs(self, items: Vec<Vec<u8>>) -> Box<dyn Iterator<Item = (Job, usize)>> {
        match self {
            Prechecked::Events(mut checked) => {
                checked.sort_by_cached_key(|v| match v {
                    Verdict::Checked(e) | Verdict::AwaitsSeal(e) => super::event_key(e),
                    Verdict::Refused(_) => Vec::new(),
                });
                let bytes = |v: &Verdict| match v {
                    Verdict::Checked(e) | Verdict::AwaitsSeal(e) => 64 + e.bytes.len(),
                    Verdict::Refused(_) => 0,
                };
                Box::new(in_parts(checked, PUT_JOB_EVENTS).map(move |part| {
                    let n = part.iter().map(bytes).sum();
                    (Job::Events(part), n)
                }))
            }
            Prechecked::Docs(mut loads) => Box::new(in_parts(items, PUT_JOB_DOCS).map(move |part| {
                let n = part.iter().map(Vec::len).sum();
                (Job::Docs(part.iter().map(|item| loads.next_for(item)).collect()), n)
            })),
            Prechecked::Seals => Box::new(in_parts(items, PUT_JOB_SEALS).map(|part| {
                let n = part.iter().map(Vec::len).sum();
                (Job::Seals(part), n)
            })),
        }
    }

    /// Whether these verdicts were made for exactly `items`.
    fn describes(&self, items: &[Vec<u8>]) -> bool {
        match self {
            Prechecked::Events(checked) => {
                checked.len() == items.len()
                    && checked.iter().zip(items).all(|(c, item)| match c {
                        Verdict::Checked(e) | Verdict::AwaitsSeal(e) => {
                            item.len() == 64 + e.bytes.len() && item[..64] == e.signature && item[64..] == e.bytes[..]
                        }
                        Verdict::Refused(_) => true,
                    })
            }
            Prechecked::Seals => true,
            // Each loaded document is compared with its item as it is taken (`next_for`).
            Prechecked::Docs(loads) => loads.len() == items.len(),
        }
    }
}

impl Replica {
    pub fn new(store: Store) -> Replica {
        let upload = Some(store.start_upload());
        Replica { store, prechecked: None, live_peer: false, upload }
    }

    /// Takes what the peer puts as live (see `Replica::live_peer`): for a regulator's laptop.
    pub fn peer_is_live(&mut self) {
        self.live_peer = true;
        self.upload = None;
    }

    /// Hands over [`Prechecked::of`]'s verdicts on the items of the frame about to be
    /// handled, so that storing them does not wait for the checks. They are used only if
    /// they describe exactly those items (else the items are checked again); whatever the
    /// frame, they are gone after it.
    pub fn precheck(&mut self, checked: Prechecked) {
        self.prechecked = Some(std::sync::Arc::new(checked));
    }

    /// Drops verdicts no `Items` frame used.
    pub fn clear_precheck(&mut self) {
        self.prechecked = None;
    }

    /// The prechecked verdicts if they belong to `items`, item by item.
    fn take_prechecked(&mut self, items: &[Vec<u8>]) -> Option<Prechecked> {
        let checked = std::sync::Arc::into_inner(self.prechecked.take()?)?;
        checked.describes(items).then_some(checked)
    }
}

/// The item id of a change sequence row: the whole value, or the end of an event key.
fn change_id(change: &[u8]) -> Result<Id, StoreError> {
    let at = change.len().checked_sub(32).ok_or_else(|| StoreError::Corrupt("change row shorter than an id".into()))?;
    change[at..].try_into().map_err(|_| StoreError::Corrupt("change row shorter than an id".into()))
}

fn scope_str(scope: &[u8]) -> Result<&str, StoreError> {
    std::str::from_utf8(scope).map_err(|_| StoreError::Invalid("scope is not UTF-8".into()))
}

impl ItemStore for Replica {
    type Error = StoreError;

    /// Commits the puts that share the writer's open transaction.
    fn durable(&mut self) -> Result<(), StoreError> {
        self.store.settle()
    }

    /// The peer's upload is over: what it puts next is live until it streams again.
    fn peer_pushed(&mut self, _scope: &[u8]) {
        self.upload = None;
    }

    fn seq(&self, scope: &[u8]) -> Result<u64, StoreError> {
        let scope = scope_str(scope)?;
        let r = self.store.db.begin_read()?;
        super::changes::last(&r.open_table(CHANGES_TABLE)?, scope)
    }

    /// Events go out in event-key order (cylinder, then time), so a frame carries whole
    /// histories and the receiver derives each cylinder once per frame, in order.
    fn send_order(&self, scope: &[u8], ids: &mut Vec<Id>) -> Result<(), StoreError> {
        if ScopeKind::of(scope) != ScopeKind::Events || ids.len() < 2 {
            return Ok(());
        }
        let r = self.store.db.begin_read()?;
        let keys = Ids::new(r.open_table(ID_RUNS.def)?)?;
        let mut keyed = Vec::with_capacity(ids.len());
        for id in ids.iter() {
            // Key order is (head, id) order: a key is its head followed by its id.
            let head = keys.get(id)?.unwrap_or([0; 28]);
            keyed.push((head, *id));
        }
        keyed.sort_unstable();
        *ids = keyed.into_iter().map(|(_, id)| id).collect();
        Ok(())
    }

    fn changes_after(&self, scope: &[u8], since: u64, limit: usize) -> Result<Vec<(u64, Id)>, StoreError> {
        let scope = scope_str(scope)?;
        let r = self.store.db.begin_read()?;
        let log = r.open_table(CHANGES_TABLE)?;
        let mut out = Vec::with_capacity(limit.min(1 << 16));
        for item in super::changes::entries(&log, scope, since.saturating_add(1), u64::MAX)?.take(limit) {
            let (seq, change) = item?;
            out.push((seq, change_id(&change)?));
        }
        Ok(out)
    }

    // Fingerprints are compared with what the peer sent: puts still waiting for their
    // commit are committed first (reads see only committed data).
    fn summary(&self, scope: &[u8], prefix: &[u8]) -> Result<Summary, StoreError> {
        self.store.settle()?;
        self.store.summary_of(scope_str(scope)?, prefix)
    }

    fn children(&self, scope: &[u8], prefix: &[u8]) -> Result<Vec<(u8, Summary)>, StoreError> {
        self.store.settle()?;
        let scope = scope_str(scope)?;
        let r = self.store.db.begin_read()?;
        let mut out = Vec::new();
        match prefix.len() {
            0 => {
                for item in r.open_table(SUMMARY_L1_TABLE)?.range((scope, 0u8)..=(scope, 255u8))? {
                    let (k, v) = item?;
                    let s = Summary::from_bytes(v.value());
                    if s.count > 0 {
                        out.push((k.value().1, s));
                    }
                }
            }
            1 => {
                if let Some(row) = r.open_table(SUMMARY_L2_TABLE)?.get((scope, prefix[0]))? {
                    for second in 0..=255u8 {
                        let s = l2_entry(row.value(), second)?;
                        if s.count > 0 {
                            out.push((second, s));
                        }
                    }
                }
            }
            _ => {
                for id in self.store.item_ids(scope, prefix)? {
                    let Some(&b) = id.get(prefix.len()) else { continue };
                    match out.last_mut() {
                        Some((last, s)) if *last == b => s.add(&id),
                        _ => out.push((b, Summary::of([id]))),
                    }
                }
            }
        }
        Ok(out)
    }

    fn ids(&self, scope: &[u8], prefix: &[u8]) -> Result<Vec<Id>, StoreError> {
        self.store.settle()?;
        self.store.item_ids(scope_str(scope)?, prefix)
    }

    fn get(&self, scope: &[u8], id: &Id) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.item_get(scope_str(scope)?, id)
    }

    fn get_many(&self, scope: &[u8], ids: &[Id]) -> Result<Vec<Vec<u8>>, StoreError> {
        let s = scope_str(scope)?;
        if ScopeKind::of(s) != ScopeKind::Events {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.extend(self.store.item_get(s, id)?);
            }
            return Ok(out);
        }
        let r = self.store.db.begin_read()?;
        self.store.event_items(&r, ids)
    }

    fn get_changes(&self, scope: &[u8], changes: &[(u64, Id)]) -> Result<Vec<Vec<u8>>, StoreError> {
        let s = scope_str(scope)?;
        if s != events_scope(&self.store.enterprise) {
            let mut ids: Vec<Id> = changes.iter().map(|(_, id)| *id).collect();
            self.send_order(scope, &mut ids)?;
            return self.get_many(scope, &ids);
        }
        let seqs: Vec<u64> = changes.iter().map(|(seq, _)| *seq).collect();
        self.store.changed_events(s, &seqs)
    }

    fn put(&mut self, scope: &[u8], items: Vec<Vec<u8>>) -> Result<PutOutcome, StoreError> {
        // Signatures are checked and documents loaded here (or were, ahead of time), on
        // every core, not in the writer's transaction.
        let _receiving = self.store.start_receiving();
        let checked = match self.take_prechecked(&items) {
            Some(checked) => checked,
            None => Prechecked::of(scope, items.clone(), &self.store),
        };
        let scope = scope_str(scope)?;
        // Part of a stream (a full frame or more, or anything else an uploading station
        // puts: its seals and records come between its event frames): each job is
        // answered before its commit, so that the next one joins the same transaction.
        // A live change commits at once.
        let full = items.iter().map(Vec::len).sum::<usize>() >= STREAM_PUT_MIN;
        if full && !self.live_peer && self.upload.is_none() {
            self.upload = Some(self.store.start_upload());
        }
        let live = self.live_peer || self.upload.is_none();
        let stream = full || !live;
        let mut out = PutOutcome::default();
        for (job, bytes) in checked.into_jobs(items) {
            if self.store.is_closing() {
                return Err(StoreError::Closing);
            }
            let scope = scope.to_owned();
            let store = self.store.clone();
            let job = move |ctx: &mut WriteCtx<'_>| {
                let before = ctx.scope_seq(&scope)?;
                let mut spent = Vec::new();
                let results = match job {
                    Job::Events(checked) => ctx.receive_checked(checked)?,
                    Job::Docs(loaded) => {
                        loaded.into_iter().map(|doc| ctx.receive_doc(doc, &mut spent)).collect::<Result<Vec<_>, _>>()?
                    }
                    Job::Seals(items) => {
                        items.iter().map(|item| ctx.receive_seal(item)).collect::<Result<Vec<_>, _>>()?
                    }
                };
                // The writer runs one job at a time: every number in between is this job's.
                let after = ctx.scope_seq(&scope)?;
                // Noted before the commit that makes them visible: a waiting session never
                // takes a station's changes for live ones (`Store::live_changes`).
                if !live && after > before {
                    store.note_from_station(&scope, (before + 1, after));
                }
                Ok((results, (after > before).then_some((before + 1, after)), spent))
            };
            // What the job was done with is dropped here, not in the writer.
            let (results, seqs, _spent) = match stream {
                true => self.store.write_unsettled_blocking(bytes, job)?,
                false => self.store.write_blocking(job)?,
            };
            out.seqs.extend(seqs);
            for r in results {
                match r {
                    Received::Stored(id) => out.stored.push(id),
                    Received::Duplicate | Received::AwaitsSeal => {}
                    Received::Refused(reason) => out.refused.push(reason),
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
