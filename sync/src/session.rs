//! The reconciliation protocol between two peers, as a state machine.
//!
//! Both peers run the same machine. Each starts by sending its root fingerprint per
//! scope. A peer that receives a fingerprint compares it with its own for the same
//! prefix: equal ranges end there; small ranges are answered with the full id list;
//! large ones with the fingerprints of their 256 children, and so on down the id bytes.
//! An id list tells the receiver exactly what the sender has in that range, so it sends
//! what the sender lacks and asks for what it lacks itself. Equal root fingerprints end
//! the round (`InSync`).
//!
//! Every message is a comparison against current state, so a lost, duplicated or late
//! frame costs at most a repeated comparison; a round that stalls because frames were
//! lost is restarted from the root after `retry_ms` without progress.
//!
//! Checkpoints make the common rounds cheap (CouchDB's `since`, without trusting it):
//! each side remembers, per peer and scope, its own change sequence at the last moment
//! the two were found equal. A round first *pushes* what each side added since then
//! (initiator, then responder, each ending with `Pushed`), and only then compares root
//! fingerprints. After a live change or a reconnect the pushed items are usually the
//! whole difference, so the fingerprints agree at once: two round trips and the new
//! data. When they do not agree (a lost checkpoint, a restored backup) the walk below
//! finds the rest, so a wrong checkpoint costs bytes, never data.
//!
//! A long push (a station's first upload, everything relayed back to it) marks its
//! progress every [`SessionOptions::mark_bytes`] of items: `Mark` says every change up to
//! a sequence has gone before it, and the peer answers `Holding` once what came before
//! is durable there. The pusher's checkpoint moves to the mark, so a link cut part way
//! costs the push since the last answered mark, not the whole push again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::fingerprint::{Fingerprint, Id};
use crate::frame::Frame;
use crate::store::ItemStore;

/// Settings of a session; the node builds them from its configuration.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The initiator (the side that connected) starts rounds and restarts stalled ones;
    /// the responder only answers. Two initiators would move every difference twice.
    pub initiator: bool,
    /// Scopes this node replicates with this peer.
    pub scopes: Vec<Vec<u8>>,
    /// Ranges with at most this many ids (on both sides together) are sent as id lists.
    pub id_list_max: u64,
    /// Items per `Items` frame at most.
    pub items_per_frame: usize,
    /// Item bytes per `Items` frame at most (one larger item still goes alone). Bigger
    /// frames mean fewer, larger commits at the receiver; the limit keeps a frame well
    /// under [`crate::frame::FRAME_LEN_MAX`].
    pub frame_bytes_max: usize,
    /// Ids per `IdList`/`Want` frame.
    pub ids_per_frame: usize,
    /// Restart from the root after this long without progress, in milliseconds.
    pub retry_ms: u64,
    /// Per scope, this side's change sequence when it was last in sync with this peer (0:
    /// the peer holds nothing of this side; see [`Session::start`]).
    pub checkpoints: BTreeMap<Vec<u8>, u64>,
    /// Items a walk found the peer lacks wait until this many are queued, or until the
    /// peer has sent nothing for `hold_quiet_ms`, or for `hold_max_ms` at most (a peer
    /// that streams items or walks slowly). A walk's answers come a few ids per range:
    /// sent as they come, every frame would carry a few items of unrelated cylinders;
    /// held, they go out together, in the store's order, in full frames. 0 sends them at
    /// once. [`Session::release_at`] says when to call [`Session::handle_timeout`] for
    /// them.
    pub hold_items_below: usize,
    pub hold_quiet_ms: u64,
    pub hold_max_ms: u64,
    /// A push marks its progress after about this many item bytes (at a page of the
    /// log; a sixteenth of it where one scope's push ends): the peer answers once it
    /// holds them durably, and the checkpoint moves there, so a push cut off by the link
    /// resumes instead of starting over. 0: never.
    pub mark_bytes: u64,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            initiator: true,
            scopes: Vec::new(),
            id_list_max: 64,
            items_per_frame: 256,
            frame_bytes_max: 1 << 20,
            ids_per_frame: 4096,
            retry_ms: 1_000,
            checkpoints: BTreeMap::new(),
            hold_items_below: 0,
            hold_quiet_ms: 0,
            hold_max_ms: 0,
            mark_bytes: 16 << 20,
        }
    }
}

/// Why a session stopped.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("storage: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
}

/// Counters for reports and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub frames_in: u64,
    pub frames_out: u64,
    pub items_sent: u64,
    /// Bytes of the items sent (their stored form, without framing).
    pub item_bytes_sent: u64,
    pub items_stored: u64,
    pub items_refused: u64,
    pub rounds: u64,
    /// `Holding` answers that moved a checkpoint (a long push confirmed part way).
    pub pushes_confirmed: u64,
}

/// One replication session with one peer.
#[derive(Debug)]
pub struct Session {
    opts: SessionOptions,
    out: VecDeque<Frame>,
    /// Frames that go first, and also while a caller holds this side's other frames back
    /// (see [`Session::poll_urgent`]): answers to the peer's marks (`Holding`), and items
    /// relayed ahead of their push ([`Session::relay_now`]).
    urgent: VecDeque<Frame>,
    /// Items to send, per scope, read from the store when frames go out.
    to_send: BTreeMap<Vec<u8>, BTreeSet<Id>>,
    /// The items held in `to_send` may go (see `hold_items_below`).
    released: bool,
    /// When the last frame came, and when the items held began to wait.
    last_frame_ms: u64,
    held_since_ms: u64,
    /// The items of one scope being sent now, in the store's preferred order.
    sending: Option<Sending>,
    in_sync: BTreeSet<Vec<u8>>,
    /// Frames that must follow every queued item (`Pushed`).
    tail: VecDeque<Frame>,
    /// Scopes whose root fingerprint the initiator sends once the peer has pushed.
    awaiting_push: BTreeSet<Vec<u8>>,
    /// Scopes whose peer push is in, waiting for the others of the round: their root
    /// fingerprints go out together, so that a round is two flights however the peer's
    /// answers were split on the way.
    pushed_back: Vec<Vec<u8>>,
    /// Sequence ranges of the items stored from this peer since the scope was last in
    /// sync (one per `Items` frame): not pushed back.
    received: BTreeMap<Vec<u8>, Vec<(u64, u64)>>,
    /// Pushes under way: per scope, the sequence read up to and the one to stop at. The
    /// log is read a page at a time as frames go out, so a push of millions of changes
    /// holds one page of ids, not all of them.
    pushing: BTreeMap<Vec<u8>, (u64, u64)>,
    /// Per scope, the sequence up to which this session already pushed: a later round
    /// pushes only what is newer (what a lost frame dropped, the walk finds).
    pushed_upto: BTreeMap<Vec<u8>, u64>,
    last_progress_ms: u64,
    /// The last page of a push taken from the log (scope, sequence read up to), and the
    /// item bytes sent since the last `Mark`.
    last_page: Option<(Vec<u8>, u64)>,
    unmarked_bytes: u64,
    refusals: Vec<String>,
    pub stats: SessionStats,
}

/// The most ids a side sends as a list because it holds far fewer in a range than the
/// peer (128 KiB; an id list goes in one frame).
const DENSE_IDS_MAX: u64 = 4096;

/// A page of a push: changes of one scope (sequence number, id), and the sequence the
/// log was read up to.
type PushPage = (Vec<u8>, Vec<(u64, Id)>, u64);

/// Items of one scope on their way out: those already read from the store first, then
/// ids still to read, a few at a time ([`READ_CHUNK`]).
#[derive(Debug)]
struct Sending {
    scope: Vec<u8>,
    ready: VecDeque<Vec<u8>>,
    ids: VecDeque<Id>,
}

impl Sending {
    fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.ids.is_empty()
    }
}

/// Ids read from the store in one call while frames are built.
const READ_CHUNK: usize = 1024;

/// Changes a push reads from the log at a time, at most: their items are read at once
/// and held until sent.
const PUSH_PAGE_MAX: usize = 16_384;

/// Whether `seq` lies in one of `ranges` (ascending, disjoint).
fn in_ranges(ranges: &[(u64, u64)], seq: u64) -> bool {
    let i = ranges.partition_point(|(_, end)| *end < seq);
    ranges.get(i).is_some_and(|(start, _)| *start <= seq)
}

fn store_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> SessionError {
    SessionError::Store(Box::new(e))
}

impl Session {
    pub fn new(opts: SessionOptions) -> Session {
        Session {
            opts,
            out: VecDeque::new(),
            urgent: VecDeque::new(),
            to_send: BTreeMap::new(),
            released: false,
            last_frame_ms: 0,
            held_since_ms: 0,
            sending: None,
            in_sync: BTreeSet::new(),
            tail: VecDeque::new(),
            awaiting_push: BTreeSet::new(),
            pushed_back: Vec::new(),
            received: BTreeMap::new(),
            pushing: BTreeMap::new(),
            pushed_upto: BTreeMap::new(),
            last_progress_ms: 0,
            last_page: None,
            unmarked_bytes: 0,
            refusals: Vec::new(),
            stats: SessionStats::default(),
        }
    }

    /// Starts a round (initiator only): pushes this side's changes since the checkpoint
    /// of every scope; the root fingerprints follow once the peer has pushed its own.
    pub fn start<S: ItemStore>(&mut self, store: &S, now_ms: u64) -> Result<(), SessionError> {
        self.last_progress_ms = now_ms;
        if !self.opts.initiator {
            return Ok(());
        }
        self.in_sync.clear();
        self.stats.rounds += 1;
        self.pushed_back.clear();
        for scope in self.opts.scopes.clone() {
            self.push(store, &scope)?;
            self.awaiting_push.insert(scope);
        }
        Ok(())
    }

    /// Queues what this side added to `scope` since its checkpoint, then `Pushed`. With no
    /// checkpoint (a first contact) nothing is pushed: the fingerprint walk decides. A
    /// checkpoint of 0 says the peer holds nothing of this side yet (a station meeting
    /// the head office that just enrolled it): its whole log is pushed, at once, instead
    /// of coming out of a walk range by range.
    fn push<S: ItemStore>(&mut self, store: &S, scope: &[u8]) -> Result<(), SessionError> {
        self.push_newer(store, scope)?;
        self.tail.push_back(Frame::Pushed { scope: scope.to_vec() });
        Ok(())
    }

    /// Queues what this side added to `scope` since it last pushed (or since the
    /// checkpoint): a push under way goes on to the newer end.
    fn push_newer<S: ItemStore>(&mut self, store: &S, scope: &[u8]) -> Result<(), SessionError> {
        let ckpt = self.opts.checkpoints.get(scope).copied();
        let since = ckpt.unwrap_or(0).max(self.pushed_upto.get(scope).copied().unwrap_or(0));
        let now = store.seq(scope).map_err(store_err)?;
        self.pushed_upto.insert(scope.to_vec(), now);
        if ckpt.is_some() && now > since {
            let push = self.pushing.entry(scope.to_vec()).or_insert((since, now));
            *push = (push.0.min(since), now);
        }
        Ok(())
    }

    /// Whether this side (the responder, resuming from a checkpoint) stored changes after
    /// the last push of `scope` it made in this session (`seq`: its sequence now).
    fn stored_since_push(&self, scope: &[u8], seq: u64) -> bool {
        !self.opts.initiator
            && self.opts.checkpoints.contains_key(scope)
            && self.pushed_upto.get(scope).is_some_and(|upto| seq > *upto)
    }

    /// Sends what this side added since it last pushed at once, within the round under
    /// way (initiator only), instead of in the next round: a station's handheld operation
    /// then reaches a head office that answers nothing for a while (it takes in another
    /// station's upload first) as soon as it is made. No checkpoint moves; the next round
    /// confirms the items, without sending them again.
    pub fn push_now<S: ItemStore>(&mut self, store: &S) -> Result<(), SessionError> {
        if !self.opts.initiator {
            return Ok(());
        }
        for scope in self.opts.scopes.clone() {
            self.push_newer(store, &scope)?;
        }
        Ok(())
    }

    /// The next page of a push under way: changes of this side's log not stored from
    /// the peer. `None` when no push is under way.
    fn next_push_page<S: ItemStore>(&mut self, store: &S) -> Result<Option<PushPage>, SessionError> {
        // Scopes in the order the options list them: a scope whose items the next one's
        // checks rely on goes first (a node's records before its seals and events).
        while let Some(scope) = self.opts.scopes.iter().find(|s| self.pushing.contains_key(*s)).cloned() {
            let Some((from, upto)) = self.pushing.remove(&scope) else { break };
            let limit = self.opts.items_per_frame.clamp(1, PUSH_PAGE_MAX);
            let page = store.changes_after(&scope, from, limit).map_err(store_err)?;
            let read_to = page.last().map_or(upto, |(seq, _)| *seq).min(upto);
            let theirs = self.received.get(&scope);
            let changes: Vec<(u64, Id)> = page
                .into_iter()
                .filter(|(seq, _)| *seq <= upto)
                .filter(|(seq, _)| theirs.is_none_or(|r| !in_ranges(r, *seq)))
                .collect();
            if read_to < upto {
                self.pushing.insert(scope.clone(), (read_to, upto));
            }
            if !changes.is_empty() {
                return Ok(Some((scope, changes, read_to)));
            }
        }
        Ok(None)
    }

    /// Checkpoints reached in this session (or given at its start), for the caller to keep.
    pub fn checkpoints(&self) -> &BTreeMap<Vec<u8>, u64> {
        &self.opts.checkpoints
    }

    /// `scope` was found equal on both sides while this side's sequence was `seq`.
    fn reached(&mut self, scope: Vec<u8>, seq: u64) {
        let ckpt = self.opts.checkpoints.entry(scope.clone()).or_default();
        *ckpt = (*ckpt).max(seq);
        self.received.remove(&scope);
        self.in_sync.insert(scope);
    }

    /// True when every scope's root fingerprints were found equal and nothing is queued.
    pub fn is_in_sync(&self) -> bool {
        self.opts.scopes.iter().all(|s| self.in_sync.contains(s))
            && self.out.is_empty()
            && self.urgent.is_empty()
            && self.to_send.is_empty()
            && self.pushing.is_empty()
            && !self.is_sending()
            && self.tail.is_empty()
    }

    /// Refusals of received items since the last call (for the log).
    pub fn take_refusals(&mut self) -> Vec<String> {
        std::mem::take(&mut self.refusals)
    }

    /// Restarts a round that stalled. Sending counts as progress: a round is stalled only
    /// when nothing is queued and nothing arrived for `retry_ms`.
    pub fn handle_timeout<S: ItemStore>(&mut self, store: &S, now_ms: u64) -> Result<(), SessionError> {
        if self.release_at().is_some_and(|at| now_ms >= at) {
            self.released = true;
        }
        if !self.out.is_empty()
            || !self.urgent.is_empty()
            || !self.to_send.is_empty()
            || !self.pushing.is_empty()
            || self.is_sending()
            || !self.tail.is_empty()
        {
            self.last_progress_ms = now_ms;
            return Ok(());
        }
        if self.opts.initiator
            && !self.is_in_sync()
            && now_ms.saturating_sub(self.last_progress_ms) >= self.opts.retry_ms
        {
            self.start(store, now_ms)?;
        }
        Ok(())
    }

    /// When `handle_timeout` wants to be called next.
    pub fn poll_timeout(&self) -> Option<u64> {
        (self.opts.initiator && !self.is_in_sync()).then_some(self.last_progress_ms + self.opts.retry_ms)
    }

    /// Whether items a walk found wait for more of their kind (see
    /// [`SessionOptions::hold_items_below`]).
    pub fn holds_items(&self) -> bool {
        !self.released
            && !self.to_send.is_empty()
            && self.to_send.values().map(BTreeSet::len).sum::<usize>() < self.opts.hold_items_below
    }

    /// When held items may go, if some are held: call `handle_timeout` then.
    pub fn release_at(&self) -> Option<u64> {
        let quiet = self.last_frame_ms + self.opts.hold_quiet_ms;
        self.holds_items().then_some(quiet.min(self.held_since_ms + self.opts.hold_max_ms))
    }

    fn is_sending(&self) -> bool {
        self.sending.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// The next urgent frame, if any: one the caller should send even while it holds this
    /// side's other frames back (a head office taking in uploads): an answer to one of the
    /// peer's marks, since the peer's push resumes from it after a cut link, or items
    /// [`Session::relay_now`] queued. [`Session::poll_transmit`] returns these first too.
    pub fn poll_urgent(&mut self) -> Option<Frame> {
        let f = self.urgent.pop_front()?;
        self.stats.frames_out += 1;
        Some(f)
    }

    /// Queues the changes `changes` of this side's `scope` to go now, ahead of the push
    /// they belong to (a head office relaying its own writes and a regulator's findings
    /// while it holds back what stations upload): those stored from this peer
    /// are left out, and no push or checkpoint moves, so the push sends them again in
    /// their turn (the receiver keeps one copy).
    pub fn relay_now<S: ItemStore>(
        &mut self,
        store: &S,
        scope: &[u8],
        changes: Vec<(u64, Id)>,
    ) -> Result<(), SessionError> {
        if !self.opts.scopes.iter().any(|s| s == scope) {
            return Ok(());
        }
        let theirs = self.received.get(scope);
        let changes: Vec<(u64, Id)> =
            changes.into_iter().filter(|(seq, _)| theirs.is_none_or(|r| !in_ranges(r, *seq))).collect();
        if changes.is_empty() {
            return Ok(());
        }
        let mut items = store.get_changes(scope, &changes).map_err(store_err)?.into_iter().peekable();
        while items.peek().is_some() {
            let mut frame = Vec::new();
            let mut bytes = 0;
            while let Some(item) = items.next_if(|i| {
                frame.is_empty()
                    || (frame.len() < self.opts.items_per_frame && bytes + i.len() <= self.opts.frame_bytes_max)
            }) {
                bytes += item.len();
                frame.push(item);
            }
            self.stats.items_sent += frame.len() as u64;
            self.stats.item_bytes_sent += bytes as u64;
            self.urgent.push_back(Frame::Items { scope: scope.to_vec(), items: frame });
        }
        Ok(())
    }

    /// The next frame to send, if any.
    pub fn poll_transmit<S: ItemStore>(&mut self, store: &S) -> Result<Option<Frame>, SessionError> {
        if let Some(f) = self.poll_urgent() {
            return Ok(Some(f));
        }
        if let Some(f) = self.out.pop_front() {
            self.stats.frames_out += 1;
            return Ok(Some(f));
        }
        // Items go out after the comparisons, in bounded frames, read from the store only
        // now, in the order the store prefers (the node sends a cylinder's events
        // together); `Pushed` markers go out after every item queued before them.
        if !self.is_sending() {
            let held = self.holds_items();
            // Scopes in the order the options list them, as pushes go (a node's records
            // before the events it signed, which a receiver refuses without them).
            let next = match held {
                true => None,
                false => self
                    .opts
                    .scopes
                    .iter()
                    .find(|s| self.to_send.contains_key(*s))
                    .or_else(|| self.to_send.keys().next())
                    .cloned(),
            };
            if let Some((scope, ids)) = next.and_then(|scope| self.to_send.remove_entry(&scope)) {
                if self.to_send.is_empty() {
                    self.released = false;
                }
                let mut ids: Vec<Id> = ids.into_iter().collect();
                store.send_order(&scope, &mut ids).map_err(store_err)?;
                self.sending = Some(Sending { scope, ready: VecDeque::new(), ids: ids.into() });
            } else if let Some((scope, changes, read_to)) = self.next_push_page(store)? {
                let ready = store.get_changes(&scope, &changes).map_err(store_err)?;
                self.sending = Some(Sending { scope: scope.clone(), ready: ready.into(), ids: VecDeque::new() });
                // Everything before this page has gone.
                if let Some(mark) = self.mark(Some((scope, read_to))) {
                    return Ok(Some(mark));
                }
            } else if let Some(mark) = self.mark(None) {
                return Ok(Some(mark));
            } else {
                let tail = self.tail.pop_front();
                if tail.is_some() {
                    self.stats.frames_out += 1;
                }
                return Ok(tail);
            }
        }
        let Some(sending) = self.sending.as_mut() else { return Ok(None) };
        let scope = sending.scope.clone();
        let mut items = Vec::new();
        let mut bytes_in_frame = 0;
        while items.len() < self.opts.items_per_frame && bytes_in_frame < self.opts.frame_bytes_max {
            if sending.ready.is_empty() {
                if sending.ids.is_empty() {
                    break;
                }
                let n = sending.ids.len().min(READ_CHUNK);
                let chunk: Vec<Id> = sending.ids.drain(..n).collect();
                sending.ready = store.get_many(&scope, &chunk).map_err(store_err)?.into();
                continue;
            }
            let Some(bytes) = sending.ready.front() else { break };
            if !items.is_empty() && bytes_in_frame + bytes.len() > self.opts.frame_bytes_max {
                break;
            }
            bytes_in_frame += bytes.len();
            items.extend(sending.ready.pop_front());
        }
        if items.is_empty() {
            return self.poll_transmit(store);
        }
        self.stats.items_sent += items.len() as u64;
        let bytes = items.iter().map(|i| i.len() as u64).sum::<u64>();
        self.stats.item_bytes_sent += bytes;
        self.unmarked_bytes += bytes;
        self.stats.frames_out += 1;
        Ok(Some(Frame::Items { scope, items }))
    }

    /// A `Mark` of the last push page taken, once every item before `next` (the page
    /// now taken, if any) has gone and enough bytes went since the last mark: `mark_bytes`
    /// within a scope, a sixteenth of it where the push of a scope ends (a node's records
    /// and documents go before its events: a cut during the events should not send them
    /// again).
    fn mark(&mut self, next: Option<(Vec<u8>, u64)>) -> Option<Frame> {
        let scope_ends = match (&next, &self.last_page) {
            (Some((next, _)), Some((last, _))) => next != last,
            _ => true,
        };
        let done = match next {
            Some(page) => self.last_page.replace(page),
            None => self.last_page.take(),
        };
        let (scope, seq) = done?;
        let due = match scope_ends {
            true => self.opts.mark_bytes / 16,
            false => self.opts.mark_bytes,
        };
        if self.opts.mark_bytes == 0 || self.unmarked_bytes < due {
            return None;
        }
        self.unmarked_bytes = 0;
        self.stats.frames_out += 1;
        Some(Frame::Mark { scope, seq })
    }

    /// Pushes local items to the peer without a round (live mode).
    pub fn announce(&mut self, scope: &[u8], ids: impl IntoIterator<Item = Id>) {
        if self.opts.scopes.iter().any(|s| s == scope) {
            self.to_send.entry(scope.to_vec()).or_default().extend(ids);
            self.in_sync.remove(scope);
        }
    }

    /// Handles one frame from the peer.
    pub fn handle<S: ItemStore>(&mut self, frame: Frame, store: &mut S, now_ms: u64) -> Result<(), SessionError> {
        self.stats.frames_in += 1;
        self.last_frame_ms = now_ms;
        let scope = match &frame {
            Frame::Fingerprint { scope, .. }
            | Frame::InSync { scope, .. }
            | Frame::Split { scope, .. }
            | Frame::IdList { scope, .. }
            | Frame::Want { scope, .. }
            | Frame::Items { scope, .. }
            | Frame::Pushed { scope }
            | Frame::Mark { scope, .. }
            | Frame::Holding { scope, .. } => scope.clone(),
        };
        if !self.opts.scopes.contains(&scope) {
            tracing::debug!(target: "station::events::frame_out_of_scope", scope_len = scope.len());
            return Ok(());
        }
        if self.to_send.is_empty() {
            self.held_since_ms = now_ms;
        }
        match frame {
            Frame::Fingerprint { scope, prefix, fp } => {
                // Read before the summary: every change up to `seq` is in what is compared.
                let seq = store.seq(&scope).map_err(store_err)?;
                let mine = store.summary(&scope, &prefix).map_err(store_err)?.fingerprint();
                if mine == fp {
                    if prefix.is_empty() {
                        self.reached(scope.clone(), seq);
                        self.out.push_back(Frame::InSync { scope, fp });
                    }
                } else if prefix.is_empty() && self.stored_since_push(&scope, seq) {
                    // This side stored more since its push (a head office taking in other
                    // stations' uploads): push that too, then this side's fingerprint,
                    // which the peer compares once it holds the push. A walk here raced
                    // the push: it found the push's items missing at the peer and sent
                    // them a second time (twenty stations of 500 cylinders: 16.3 MB
                    // relayed to a station instead of 8.1). A wrong checkpoint still
                    // walks, from the peer's side, when this fingerprint differs there.
                    self.last_progress_ms = now_ms;
                    self.push_newer(store, &scope)?;
                    self.tail.push_back(Frame::Fingerprint { scope, prefix, fp: mine });
                } else {
                    self.last_progress_ms = now_ms;
                    self.compare(store, scope, prefix, mine, fp)?;
                }
            }
            Frame::InSync { scope, fp } => {
                let seq = store.seq(&scope).map_err(store_err)?;
                if store.summary(&scope, &[]).map_err(store_err)?.fingerprint() == fp {
                    self.reached(scope, seq);
                } else if self.opts.initiator && !self.awaiting_push.contains(&scope) {
                    // This side stored more since it sent that fingerprint (a handheld's
                    // write landed meanwhile): push it and compare again. Left alone, the
                    // round would wait for nothing until its retry, a second later.
                    self.last_progress_ms = now_ms;
                    self.push(store, &scope)?;
                    self.awaiting_push.insert(scope);
                }
            }
            Frame::Pushed { scope } => {
                self.last_progress_ms = now_ms;
                store.peer_pushed(&scope);
                if !self.opts.initiator {
                    // The initiator's changes are in: push mine back.
                    self.in_sync.remove(&scope);
                    self.push(store, &scope)?;
                } else if self.awaiting_push.remove(&scope) {
                    self.pushed_back.push(scope);
                    if self.awaiting_push.is_empty() {
                        for scope in std::mem::take(&mut self.pushed_back) {
                            let fp = store.summary(&scope, &[]).map_err(store_err)?.fingerprint();
                            self.out.push_back(Frame::Fingerprint { scope, prefix: Vec::new(), fp });
                        }
                    }
                }
            }
            Frame::Split { scope, prefix, children } => {
                self.last_progress_ms = now_ms;
                let mine: BTreeMap<u8, Fingerprint> = store
                    .children(&scope, &prefix)
                    .map_err(store_err)?
                    .into_iter()
                    .map(|(b, s)| (b, s.fingerprint()))
                    .collect();
                let theirs: BTreeMap<u8, Fingerprint> = children.into_iter().collect();
                let bytes: BTreeSet<u8> = mine.keys().chain(theirs.keys()).copied().collect();
                for b in bytes {
                    let (m, t) =
                        (mine.get(&b).copied().unwrap_or_default(), theirs.get(&b).copied().unwrap_or_default());
                    if m == t {
                        continue;
                    }
                    let mut child = prefix.clone();
                    child.push(b);
                    self.compare(store, scope.clone(), child, m, t)?;
                }
            }
            Frame::IdList { scope, prefix, ids } => {
                self.last_progress_ms = now_ms;
                let theirs: BTreeSet<Id> = ids.into_iter().filter(|id| id.starts_with(&prefix)).collect();
                let mine: BTreeSet<Id> = store.ids(&scope, &prefix).map_err(store_err)?.into_iter().collect();
                let they_lack: Vec<Id> = mine.difference(&theirs).copied().collect();
                let i_lack: Vec<Id> = theirs.difference(&mine).copied().collect();
                self.to_send.entry(scope.clone()).or_default().extend(they_lack);
                self.to_send.retain(|_, ids| !ids.is_empty());
                for chunk in i_lack.chunks(self.opts.ids_per_frame) {
                    self.out.push_back(Frame::Want { scope: scope.clone(), ids: chunk.to_vec() });
                }
            }
            Frame::Want { scope, ids } => {
                self.last_progress_ms = now_ms;
                self.to_send.entry(scope).or_default().extend(ids);
            }
            Frame::Items { scope, items } => {
                self.last_progress_ms = now_ms;
                let outcome = store.put(&scope, items).map_err(store_err)?;
                self.stats.items_stored += outcome.stored.len() as u64;
                self.stats.items_refused += outcome.refused.len() as u64;
                if !outcome.stored.is_empty() {
                    self.in_sync.remove(&scope);
                }
                for (first, last) in outcome.seqs {
                    let got = self.received.entry(scope.clone()).or_default();
                    match got.last_mut() {
                        Some((_, end)) if *end + 1 == first => *end = last,
                        _ => got.push((first, last)),
                    }
                }
                for reason in &outcome.refused {
                    tracing::warn!(target: "station::events::item_refused", reason = %reason);
                }
                self.refusals.extend(outcome.refused);
            }
            Frame::Mark { scope, seq } => {
                self.last_progress_ms = now_ms;
                store.durable().map_err(store_err)?;
                self.urgent.push_back(Frame::Holding { scope, seq });
            }
            Frame::Holding { scope, seq } => {
                self.last_progress_ms = now_ms;
                // Only a mark this session sent can be answered.
                if self.pushed_upto.get(&scope).is_some_and(|upto| seq <= *upto) {
                    let ckpt = self.opts.checkpoints.entry(scope).or_default();
                    if seq > *ckpt {
                        *ckpt = seq;
                        self.stats.pushes_confirmed += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// A range whose fingerprints differ: everything when one side is empty, an id list
    /// when small, else one level deeper.
    fn compare<S: ItemStore>(
        &mut self,
        store: &S,
        scope: Vec<u8>,
        prefix: Vec<u8>,
        mine: Fingerprint,
        theirs: Fingerprint,
    ) -> Result<(), SessionError> {
        if theirs.count == 0 {
            // They have nothing here: everything of mine goes.
            let ids = store.ids(&scope, &prefix).map_err(store_err)?;
            self.to_send.entry(scope).or_default().extend(ids);
        } else if mine.count == 0 {
            // I have nothing here: an empty list asks for all of theirs.
            self.out.push_back(Frame::IdList { scope, prefix, ids: Vec::new() });
        } else if mine.count + theirs.count <= self.opts.id_list_max
            || prefix.len() >= 32
            || (mine.count.saturating_mul(4) <= theirs.count && mine.count <= DENSE_IDS_MAX)
        {
            // Also when I hold far fewer here than they do (a station meeting a head
            // office that holds the other stations' data): nearly every sub-range would
            // differ too, and splitting down to small ranges would trade both sides' ids
            // range by range; my few ids name the whole difference at once.
            let ids = store.ids(&scope, &prefix).map_err(store_err)?;
            self.out.push_back(Frame::IdList { scope, prefix, ids });
        } else {
            let children = store
                .children(&scope, &prefix)
                .map_err(store_err)?
                .into_iter()
                .map(|(b, s)| (b, s.fingerprint()))
                .collect();
            self.out.push_back(Frame::Split { scope, prefix, children });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
