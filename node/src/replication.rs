//! Replication over QUIC: drives the sans-IO `sync` session over one bidirectional
//! stream per connection, with mutual TLS (see [`tls`]).
//!
//! A station connects to its head office, reconciles, then stays connected: it starts a
//! new round as soon as one of its own commits lands and at least every second, so data
//! committed on either side reaches the other within about a second. It reconnects with
//! backoff capped at 2 s; the station never waits on the link.

pub mod peers;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use sync::frame::{Decoder, Frame};
use sync::session::{Session, SessionOptions};
use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::replication::peers::{FirstRound, Peers, peer_of};
use crate::store::Store;
use crate::store::replica::{Prechecked, Replica, scopes};

/// How often an idle station starts a round anyway (to learn the head office's news).
const ROUND_EVERY: Duration = Duration::from_secs(1);
/// Reconnect attempts cost one QUIC handshake; a short cap means a healed link is used
/// within seconds.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A head office that does not answer a handshake within this is taken as down (an
/// unanswered handshake would otherwise wait for the 5 s idle timeout).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Checkpoints are saved at most this often while a session moves data (and when it
/// ends); a lost checkpoint costs one fingerprint walk, never data.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// Items a walk found wait until the peer has sent nothing for WALK_QUIET, and for
/// HOLD_MAX at most (see `SessionOptions::hold_items_below`): a walk's next answers
/// follow within a round trip, but a busy head office may walk slowly or stream
/// relayed items meanwhile.
const WALK_QUIET: Duration = Duration::from_millis(10);
const HOLD_MAX: Duration = Duration::from_secs(5);

type Checkpoints = std::collections::BTreeMap<Vec<u8>, u64>;

/// The session settings of a node's replication with one peer.
pub fn options(store: &Store, initiator: bool, checkpoints: Checkpoints, mark_bytes: u64) -> SessionOptions {
    let e = store.enterprise();
    SessionOptions {
        initiator,
        scopes: scopes(e),
        checkpoints,
        // The receiver commits once per frame: 2 MiB frames (about 10,000 events) make
        // fewer, larger commits than 2,048 items did (each commit rewrites every page its
        // random-keyed tables touched; sync_bench at 3,000 cylinders: 3.1 s with 512 KiB
        // frames, 2.5 s with 2 MiB, 2.5 s with 4 MiB), and a station's handheld write
        // waits behind at most one of them.
        items_per_frame: 1 << 16,
        frame_bytes_max: 2 << 20,
        // A first contact with a peer that holds other data (a station joining a head
        // office that has the others') is a walk: its differences come back a few ids
        // per range. Held until the peer is quiet (WALK_QUIET; HOLD_MAX at most: a
        // head office relaying to the station may never be) they go out sorted, a
        // cylinder's events together, in full frames: a twenty-station ingest otherwise
        // committed frames of about 100 events of 100 cylinders, each cylinder derived
        // again in each.
        hold_items_below: 1 << 16,
        hold_quiet_ms: WALK_QUIET.as_millis() as u64,
        hold_max_ms: HOLD_MAX.as_millis() as u64,
        // A long push (a station's first upload, a head office relaying everything back)
        // marks its progress about once per merged put's worth of items; each mark costs
        // the receiver one commit, and a link cut later resumes from the last mark
        // answered instead of from the start. A mark also ends a merge (it is not an
        // items frame): marks every 16 MiB with 64 MiB merges took the week's catch-up
        // at 100,000 cylinders back to 28.3 s from 17.6–18.1 s (`sync_bench`).
        // `MERGE_ITEM_BYTES` unless configured (`sync_mark_kib`).
        mark_bytes,
        ..SessionOptions::default()
    }
}

fn checkpoint_key(peer: schema::event::NodeId) -> String {
    format!("sync_checkpoint:{peer}")
}

/// The checkpoints of `peer`: the newest in memory, else those saved in the store. With
/// none, a first meeting starts from 0 in every scope (push everything) on the side that
/// knows the other holds nothing of it, and is a walk otherwise:
/// - a station just enrolled, meeting its head office (which holds nothing of it): it
///   pushes its log at once instead of waiting for a walk to find it range by range,
///   which kept twenty stations uploading into an empty head office waiting on each
///   other's walks (`net_bench --stations 20`);
/// - a head office (the only side that answers sessions) meeting a node it never was in
///   sync with: it pushes what it holds back, a page at a time, after the node's own
///   push. Found by a walk instead, the other stations' data made each session hold the
///   ids of millions of events: 3 GiB of RSS relaying twenty stations' 2.1 million
///   events to each of them.
///
/// A station enrolled again over data the head office has, or a head office that lost
/// its checkpoints, costs resent bytes, not data: the receiver keeps one copy.
fn load_checkpoints(store: &Store, peers: &Peers, peer: schema::event::NodeId, initiator: bool) -> Checkpoints {
    if let Some(c) = peers.checkpoints(peer) {
        return c;
    }
    match store.meta(&checkpoint_key(peer)) {
        Ok(Some(bytes)) => postcard::from_bytes(&bytes).unwrap_or_default(),
        _ if !initiator || matches!(store.meta(crate::enrolment::FIRST_PUSH), Ok(Some(_))) => {
            scopes(store.enterprise()).into_iter().map(|s| (s, 0)).collect()
        }
        _ => Checkpoints::new(),
    }
}

/// Saves `peer`'s checkpoints; the first ones end a fresh station's first push.
fn save_checkpoints(store: &Store, peer: schema::event::NodeId, c: &Checkpoints) {
    let Ok(bytes) = postcard::to_allocvec(c) else { return };
    let key = checkpoint_key(peer);
    let save = move |ctx: &mut crate::store::WriteCtx<'_>| {
        ctx.set_meta(&key, &bytes)?;
        ctx.take_meta(crate::enrolment::FIRST_PUSH).map(|_| ())
    };
    if let Err(e) = tokio::task::block_in_place(|| store.write_blocking(save)) {
        tracing::warn!(error = %e, "could not save replication checkpoints");
    }
}

/// What a session reports its progress to, and how often a long push marks it.
#[derive(Clone)]
pub struct Tracking {
    pub peers: Arc<Peers>,
    pub clock: Arc<dyn Clock>,
    /// Bytes of items between a long push's marks (config `sync_mark_kib`).
    pub mark_bytes: u64,
}

impl std::fmt::Debug for Tracking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracking").finish_non_exhaustive()
    }
}

/// Marks every peer as lagging from the first commit after its last sync.
pub fn track_commits(store: &Store, tracking: Tracking) -> tokio::task::JoinHandle<()> {
    let mut commits = store.subscribe();
    tokio::spawn(async move {
        while commits.changed().await.is_ok() {
            tracking.peers.committed(tracking.clock.now_ms());
        }
    })
}

/// A frame from the peer, with its size on the wire and, for events, the signature
/// checks already under way.
struct Incoming {
    frame: Frame,
    wire_bytes: u64,
    checked: Option<tokio::task::JoinHandle<Prechecked>>,
    /// Held until the frame is handled: decoded frames wait within a bound (a small
    /// frame needs none; see [`SMALL_FRAME_MAX`]).
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Items count as being received from their decoding on (see [`Store::receiving`]).
    _receiving: Option<crate::store::Receiving>,
}

/// Stops a task when the session that started it ends, however it ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Frames decoded ahead at most per session (each up to 8 MiB).
const READ_AHEAD: usize = 8;

/// Bytes up to which a frame, on the wire and inflated, needs no read-ahead permit (see
/// [`next_frame`]): a handheld's operation sent live (a frame of well under a kilobyte),
/// a mark, a fingerprint. With permits for these too, a station's scrap waited at its head office
/// behind another station's upload frames holding every permit, about a second
/// (`a_scrap_at_one_station_reaches_another_while_a_third_uploads`). What such frames
/// hold decoded stays small: `READ_AHEAD` of them per session.
const SMALL_FRAME_MAX: usize = 16 << 10;

/// Item bytes of consecutive `Items` frames of one scope, already decoded, that go to the
/// writer as one put (one commit). Every commit rewrites the pages it touches of the
/// random-keyed tables (event ids, seals); merged, a catch-up at 30,000 cylinders took
/// 6.3 s instead of 9.3 s and a first sync 15.5 s instead of 20.1 s (`sync_bench`). A
/// put is sorted by cylinder, so a larger one also derives each cylinder it touches once
/// instead of once per 16 MiB: the week's catch-up at 100,000 cylinders took 17.6 s
/// instead of 27.0 s with 16 MiB (`sync_bench --cylinders 100000`). What a merge holds is
/// bounded by the read-ahead permits (`DECODED_MAX` frames), not by this.
pub const MERGE_ITEM_BYTES: usize = 64 << 20;

/// How long a head office's session waits at most, while a peer's upload is not over
/// (`Store::uploading`) or peers' items are being stored (`Store::receiving`) and nothing
/// commits, before it sends (see `run_session`). A bound for a peer that stalls in the
/// middle of its upload; under a load that keeps committing, what
/// this node, a regulator or a station outside an upload writes is relayed meanwhile
/// (`Store::live_changes`), the uploads after them. Relaying uploads while they went on
/// slowed them: with a 10-s bound from the wait's start, twenty stations of 2,000
/// cylinders took 46.3 s to upload instead of 21.8 s, as each station stored the others'
/// data in the loop that also sends its own (`net_bench --stations 20`).
const RELAY_WAIT_MAX: Duration = Duration::from_secs(60);

/// Whether a head office's session holds back its frames while other peers' items go in
/// (see [`RELAY_WAIT_MAX`]): from the moment they do, until they are in or nothing has
/// committed for the bound. A peer that stalls in the middle of its upload (it holds its
/// upload open and sends nothing) then holds nothing back until something commits again;
/// before, the wait began again at once, and relays went out one burst a minute.
#[derive(Debug, Default)]
struct RelayWait {
    /// The start of the wait, or the last commit during it.
    since: Option<Instant>,
}

impl RelayWait {
    /// Whether to hold back now; `others_in`: a peer's upload is not over or peers' items
    /// are being stored.
    fn waits(&mut self, others_in: bool, now: Instant) -> bool {
        if !others_in {
            self.since = None;
            return false;
        }
        now.saturating_duration_since(*self.since.get_or_insert(now)) < RELAY_WAIT_MAX
    }

    /// Something committed: the others' items are going in, and the bound counts from now.
    fn committed(&mut self, others_in: bool, now: Instant) {
        if others_in {
            self.since = Some(now);
        }
    }
}

/// Bytes sent at most (two full item frames) before the peer's waiting frames are
/// handled. Sending everything queued first held a head office's answers to a station's
/// upload behind megabytes of what it relayed to that station (each side then waits on
/// the other's slowest work). Counted in bytes, not frames, so that a round's small
/// frames (one per scope) still go out in one flight.
const SEND_BURST: usize = 4 << 20;

/// Live changes a waiting session relays per scope per turn of its loop, at most (see
/// `Store::live_changes`); more go in the next turns.
const LIVE_RELAY_MAX: usize = 4096;

/// Frames a head office holds decoded at once over all its sessions (each up to 8 MiB
/// and several times that once its events are decoded; item frames are 2 MiB); a frame
/// of documents counts as four (`Prechecked::read_ahead_permits`). With a bound per
/// session only, 20 stations uploading at once kept about 1 GiB of frames waiting
/// (`net_bench --stations 20`).
const DECODED_MAX: usize = 10;

/// Reads and decodes the peer's frames and starts checking the signatures of each
/// `Items` frame of events as soon as it is complete: the checks of the next frame run
/// while the writer stores the one before (a first sync spent a quarter of its time
/// waiting for checks that way).
fn read_ahead(
    mut recv: quinn::RecvStream,
    (peers, peer, clock): (Arc<Peers>, schema::event::NodeId, Arc<dyn Clock>),
    permits: Arc<tokio::sync::Semaphore>,
    store: Store,
) -> (mpsc::Receiver<anyhow::Result<Incoming>>, tokio::task::AbortHandle) {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let task = tokio::spawn(async move {
        let mut decoder = Decoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        // Bytes read since the last frame came out: counted to the next one.
        let mut unaccounted = 0u64;
        loop {
            let n = match recv.read(&mut buf).await.context("receiving") {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            peers.received(peer, n as u64, clock.now_ms());
            unaccounted += n as u64;
            decoder.push(&buf[..n]);
            loop {
                let (frame, permit) = match next_frame(&mut decoder, &permits).await {
                    Ok(Some(next)) => next,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let wire_bytes = std::mem::take(&mut unaccounted);
                let receiving = match &frame {
                    Frame::Items { .. } => Some(store.start_receiving()),
                    _ => None,
                };
                let checked = match &frame {
                    Frame::Items { scope, items } => {
                        let (scope, items, store) = (scope.clone(), items.clone(), store.clone());
                        Some(tokio::task::spawn_blocking(move || Prechecked::of(&scope, items, &store)))
                    }
                    _ => None,
                };
                let incoming = Incoming { frame, wire_bytes, checked, _permit: permit, _receiving: receiving };
                if tx.send(Ok(incoming)).await.is_err() {
                    return;
                }
            }
        }
    });
    (rx, task.abort_handle())
}

/// The next whole frame `decoder` holds, with the read-ahead permits it counts for
/// (`None` when no whole frame is here). Nothing more is read from the peer until its
/// frame may go on (QUIC's flow control then holds the peer back); an idle session holds
/// no permit. The frame is decoded only once it has a permit: a frame of events decoded
/// is several times its wire size, and twenty sessions waiting each with one held 27 MiB
/// of decoded frames outside the bound at the peak of a head office's ingest (heaptrack,
/// `net_bench --stations 20 --cylinders 5000`). A frame of documents (about its wire size
/// decoded) then waits for its weight holding no permit: sessions each holding one and
/// waiting for more would wait for one another for ever. An error means the stream is
/// unusable, or the semaphore closed.
async fn next_frame(
    decoder: &mut Decoder,
    permits: &Arc<tokio::sync::Semaphore>,
) -> anyhow::Result<Option<(Frame, Option<tokio::sync::OwnedSemaphorePermit>)>> {
    if let Some(frame) = decoder.next_small_frame(SMALL_FRAME_MAX)? {
        return Ok(Some((frame, None)));
    }
    if !decoder.has_frame()? {
        return Ok(None);
    }
    let permit = permits.clone().acquire_owned().await?;
    let Some(frame) = decoder.next_frame()? else { return Ok(None) };
    let weight = match &frame {
        Frame::Items { scope, .. } => Prechecked::read_ahead_permits(scope),
        _ => 1,
    };
    if weight == 1 {
        return Ok(Some((frame, Some(permit))));
    }
    drop(permit);
    Ok(Some((frame, Some(permits.clone().acquire_many_owned(weight).await?))))
}

/// The verdicts of a frame's checks started by [`read_ahead`], once they are made.
async fn verdicts(checked: Option<tokio::task::JoinHandle<Prechecked>>) -> anyhow::Result<Option<Prechecked>> {
    match checked {
        Some(checked) => Ok(Some(checked.await.context("checking received items")?)),
        None => Ok(None),
    }
}

/// Frames handed to [`write_behind`]'s task: the frames, the bytes not yet written,
/// a signal each time a frame was written, and the task (it ends only on an error).
type WriteBehind = (
    mpsc::UnboundedSender<Vec<u8>>,
    Arc<AtomicUsize>,
    Arc<tokio::sync::Notify>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

/// Hands one frame to the stream's writer (`write_behind`); its size on the wire.
fn send_frame(out: &mpsc::UnboundedSender<Vec<u8>>, unsent: &AtomicUsize, frame: &Frame) -> anyhow::Result<usize> {
    tracing::trace!(target: "node::frames", dir = "out", frame = %kind_of(frame));
    let bytes = frame.encode();
    let n = bytes.len();
    unsent.fetch_add(n, Ordering::AcqRel);
    out.send(bytes).map_err(|_| anyhow::anyhow!("sending: the stream's writer stopped"))?;
    Ok(n)
}

/// A frame's kind and size for the trace (`RUST_LOG=node::frames=trace`): which side
/// sent what, in order, without the items.
fn kind_of(f: &Frame) -> String {
    match f {
        Frame::Fingerprint { scope, prefix, fp } => {
            format!("Fingerprint {} {prefix:02x?} n={}", String::from_utf8_lossy(scope), fp.count)
        }
        Frame::InSync { scope, .. } => format!("InSync {}", String::from_utf8_lossy(scope)),
        Frame::Split { scope, prefix, children } => {
            format!("Split {} {prefix:02x?} {}", String::from_utf8_lossy(scope), children.len())
        }
        Frame::IdList { scope, prefix, ids } => {
            format!("IdList {} {prefix:02x?} {}", String::from_utf8_lossy(scope), ids.len())
        }
        Frame::Want { scope, ids } => format!("Want {} {}", String::from_utf8_lossy(scope), ids.len()),
        Frame::Items { scope, items } => format!("Items {} {}", String::from_utf8_lossy(scope), items.len()),
        Frame::Pushed { scope } => format!("Pushed {}", String::from_utf8_lossy(scope)),
        Frame::Mark { scope, seq } => format!("Mark {} {seq}", String::from_utf8_lossy(scope)),
        Frame::Holding { scope, seq } => format!("Holding {} {seq}", String::from_utf8_lossy(scope)),
    }
}

/// Writes a session's frames in a task of its own, so that the session goes on taking
/// its peer's frames while a write waits for QUIC flow control. With the write in the
/// session's loop, both sides could block in writes while their read-aheads were full
/// and neither read: twenty stations at once stalled that way for good. The session
/// stops producing frames while [`SEND_BURST`] bytes wait here.
fn write_behind(mut send: quinn::SendStream) -> WriteBehind {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let unsent = Arc::new(AtomicUsize::new(0));
    let drained = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn({
        let (unsent, drained) = (unsent.clone(), drained.clone());
        async move {
            while let Some(bytes) = rx.recv().await {
                send.write_all(&bytes).await.context("sending")?;
                unsent.fetch_sub(bytes.len(), Ordering::AcqRel);
                drained.notify_one();
            }
            Ok(())
        }
    });
    (tx, unsent, drained, task)
}

/// Refused items logged one line each per handled batch of frames; the others are
/// counted in one line. In one run of twenty stations, a station refused 89,932 relayed
/// events whose signers' node records it did not have yet: 89,932 log lines.
pub const REFUSALS_LOGGED: usize = 20;

/// The refusals to log one by one, and how many more there were.
fn refusals_to_log(mut refusals: Vec<String>) -> (Vec<String>, usize) {
    let more = refusals.len().saturating_sub(REFUSALS_LOGGED);
    refusals.truncate(REFUSALS_LOGGED);
    (refusals, more)
}

/// Logs the items of `peer` refused since the last call (see [`REFUSALS_LOGGED`]).
fn log_refusals(peer: schema::event::NodeId, refusals: Vec<String>) {
    let (listed, more) = refusals_to_log(refusals);
    for reason in listed {
        tracing::warn!(peer = ?peer, reason = %reason, "refused an item from the peer");
    }
    if more > 0 {
        tracing::warn!(peer = ?peer, more, "refused more items from the peer (not listed one by one)");
    }
}

/// Runs one session over a stream until the peer closes it or an error occurs.
async fn run_session(
    store: Store,
    (send, recv): (quinn::SendStream, quinn::RecvStream),
    initiator: bool,
    mut commits: watch::Receiver<u64>,
    (tracking, peer): (&Tracking, schema::event::NodeId),
    permits: Arc<tokio::sync::Semaphore>,
) -> anyhow::Result<()> {
    let peers = &tracking.peers;
    let base = peers.item_base(peer);
    let mut was_in_sync = false;
    let started = Instant::now();
    let now = || started.elapsed().as_millis() as u64;
    let mut replica = Replica::new(store.clone());
    // A regulator's findings (a hold) go on to the stations at once, even during uploads.
    let record = store.record(&schema::archive::DocId::record("node", &peer.to_string())).ok().flatten();
    if record.as_ref().and_then(|r| r.get("role")).and_then(|r| r.as_str()) == Some("regulator") {
        replica.peer_is_live();
    }
    let mut saved = load_checkpoints(&store, peers, peer, initiator);
    let mut saved_at = Instant::now();
    let mut session = Session::new(options(&store, initiator, saved.clone(), tracking.mark_bytes));
    let mut confirmed = 0;
    // The first round's price: bytes both ways and flights sent until in sync.
    let (mut round_bytes, mut flights, mut first_done) = (0u64, 0u64, false);
    let result = async {
        // Storage calls block (redb, the writer's commit): keep them off the async threads.
        tokio::task::block_in_place(|| session.start(&replica, now()))?;
        let (mut frames, reader) =
            read_ahead(recv, (peers.clone(), peer, tracking.clock.clone()), permits, store.clone());
        let _stop_reader = AbortOnDrop(reader);
        let (out, unsent, drained, writer) = write_behind(send);
        let _stop_writer = AbortOnDrop(writer.abort_handle());
        let mut writer_done = writer;
        let mut tick = tokio::time::interval(ROUND_EVERY.min(Duration::from_millis(250)));
        let mut last_round = Instant::now();
        let mut changed_in_round = false;
        // Still sending the frames queued before: not a new flight.
        let mut continuing = false;
        // Whether this (head office) side waits for other sessions' puts, and per scope the
        // change up to which it relayed live changes meanwhile.
        let mut relay_wait = RelayWait::default();
        let mut live_from: Checkpoints = Checkpoints::new();
        loop {
            // A head office takes in what its peers send before it answers or relays: while
            // peers' items are being checked or stored, this session sends nothing (up to
            // `RELAY_WAIT_MAX` at a time). Relaying each station's data to the others while
            // they still uploaded made each station store the others' data in the time it
            // had for sending its own, and the uploads crawled (`net_bench --stations 20`).
            // Puts need no answer, so what waits is only this side's frames (answers to the
            // peer's marks went as each was handled, below).
            let others_in = !initiator && (store.uploading() || store.receiving());
            let waits = relay_wait.waits(others_in, Instant::now());
            // While it waits, what was written here, by a regulator's laptop, or by a station
            // outside an upload since the wait began (a scrap, a hold) goes at once all the
            // same: only stations' uploads wait. Held with them, a scrap reached an idle
            // station only after another station's upload had ended.
            match waits {
                true => tokio::task::block_in_place(|| -> anyhow::Result<()> {
                    for scope in scopes(store.enterprise()) {
                        let from = match live_from.get(&scope) {
                            Some(&from) => from,
                            None => sync::store::ItemStore::seq(&replica, &scope)?,
                        };
                        let (changes, read_to) = store.live_changes(&scope, from, LIVE_RELAY_MAX)?;
                        session.relay_now(&replica, &scope, changes)?;
                        live_from.insert(scope, read_to);
                    }
                    Ok(())
                })?,
                false => live_from.clear(),
            }
            let mut sent = 0;
            while waits && let Some(frame) = session.poll_urgent() {
                let n = send_frame(&out, &unsent, &frame)?;
                peers.sent(peer, n as u64);
                round_bytes += n as u64;
                sent += n;
            }
            while !waits
                && unsent.load(Ordering::Acquire) < SEND_BURST
                && let Some(frame) = tokio::task::block_in_place(|| session.poll_transmit(&replica))?
            {
                let n = send_frame(&out, &unsent, &frame)?;
                peers.sent(peer, n as u64);
                round_bytes += n as u64;
                sent += n;
            }
            flights += (sent > 0 && !continuing) as u64;
            // Frames wait in the session until the writer has room again.
            let more_to_send = unsent.load(Ordering::Acquire) >= SEND_BURST;
            continuing = false;
            let st = &session.stats;
            peers.items(peer, base, st.items_sent, st.items_stored, st.items_refused);
            let in_sync = session.is_in_sync();
            if in_sync && !was_in_sync {
                let events = store.counts().map(|c| c.1).unwrap_or_default();
                peers.in_sync(peer, events, tracking.clock.now_ms());
                if !first_done {
                    first_done = true;
                    let round = FirstRound {
                        ms: started.elapsed().as_millis() as i64,
                        bytes: round_bytes,
                        flights,
                        item_bytes: session.stats.item_bytes_sent,
                    };
                    let st = &session.stats;
                    tracing::info!(
                        peer = ?peer,
                        ms = round.ms,
                        bytes = round.bytes,
                        flights,
                        frames_in = st.frames_in,
                        frames_out = st.frames_out,
                        items_sent = st.items_sent,
                        items_stored = st.items_stored,
                        "first round with the peer done"
                    );
                    peers.first_round(peer, round);
                }
            }
            was_in_sync = in_sync;
            if in_sync && changed_in_round {
                changed_in_round = false;
                tokio::task::block_in_place(|| session.start(&replica, now()))?;
                last_round = Instant::now();
                continue;
            }
            if session.stats.pushes_confirmed > confirmed {
                confirmed = session.stats.pushes_confirmed;
                tracing::info!(
                    peer = ?peer,
                    checkpoints = ?session.checkpoints().values().collect::<Vec<_>>(),
                    "the peer holds part of a long push; a cut link resumes from here"
                );
            }
            if *session.checkpoints() != saved {
                peers.set_checkpoints(peer, session.checkpoints().clone());
                if saved_at.elapsed() >= CHECKPOINT_EVERY {
                    saved = session.checkpoints().clone();
                    save_checkpoints(&store, peer, &saved);
                    saved_at = Instant::now();
                }
            }
            log_refusals(peer, session.take_refusals());
            let held = session.release_at();
            let release_at = tokio::time::Instant::from_std(started + Duration::from_millis(held.unwrap_or(0)));
            let held = held.is_some();
            tokio::select! {
                // The peer's frames first; between them, this side's queued frames go on.
                biased;
                incoming = frames.recv() => {
                    let Some(mut incoming) = incoming else { return Ok(()) };
                    // Every frame already here is handled before answering: one flight back.
                    loop {
                        let Incoming { mut frame, wire_bytes, checked, _permit: permit, _receiving: receiving } =
                            incoming?;
                        round_bytes += wire_bytes;
                        let mut checked = verdicts(checked).await?;
                        // Items of the same scope decoded meanwhile go with them, in one commit.
                        let mut permits = vec![(permit, receiving)];
                        let mut after = None;
                        let mut item_bytes = match &frame {
                            Frame::Items { items, .. } => items.iter().map(Vec::len).sum(),
                            _ => 0,
                        };
                        while let Frame::Items { scope, items } = &mut frame
                            && item_bytes < MERGE_ITEM_BYTES
                        {
                            match frames.try_recv() {
                                Ok(Ok(Incoming {
                                    frame: Frame::Items { scope: s, items: more },
                                    wire_bytes,
                                    checked: c,
                                    _permit: p,
                                    _receiving: r,
                                })) if s == *scope => {
                                    round_bytes += wire_bytes;
                                    permits.push((p, r));
                                    // Verdicts that cannot be joined are made again by the put.
                                    let c = verdicts(c).await?;
                                    checked = checked.zip(c).and_then(|(a, b)| a.join(b));
                                    item_bytes += more.iter().map(Vec::len).sum::<usize>();
                                    items.extend(more);
                                }
                                Ok(other) => {
                                    after = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        if let Some(checked) = checked {
                            replica.precheck(checked);
                        }
                        tracing::trace!(target: "node::frames", dir = "in", frame = %kind_of(&frame));
                        let handled = tokio::task::block_in_place(|| session.handle(frame, &mut replica, now()));
                        replica.clear_precheck();
                        // Stored (or refused): the next frames may be decoded.
                        drop(permits);
                        handled?;
                        // An answer to the peer's mark goes now, not when its stream pauses:
                        // a long upload keeps frames coming, and its push resumes only from
                        // marks answered before a cut (held to the end, a cut upload started
                        // over).
                        while let Some(answer) = session.poll_urgent() {
                            let n = send_frame(&out, &unsent, &answer)?;
                            peers.sent(peer, n as u64);
                            round_bytes += n as u64;
                        }
                        if let Some(next) = after {
                            incoming = next;
                            continue;
                        }
                        // Frames that came in one packet are decoded one after the other
                        // on another thread: give it a turn before answering, or the
                        // answer to the first goes out alone (one more flight per round).
                        if frames.is_empty() {
                            tokio::task::yield_now().await;
                        }
                        match frames.try_recv() {
                            Ok(next) => incoming = next,
                            Err(_) => break,
                        }
                    }
                }
                () = drained.notified(), if more_to_send => continuing = true,
                // Items a walk found go once the walk is over.
                () = tokio::time::sleep_until(release_at), if held => {
                    tokio::task::block_in_place(|| session.handle_timeout(&replica, now()))?;
                }
                done = &mut writer_done => {
                    // The writer only stops on an error (or a closed stream).
                    return match done {
                        Ok(Err(e)) => Err(e),
                        _ => Err(anyhow::anyhow!("sending: the stream's writer stopped")),
                    };
                }
                // (A head office waiting for other sessions' puts looks again after each commit.)
                changed = commits.changed(), if initiator || others_in => {
                    changed.context("store closed")?;
                    // The others' puts are going in: the wait's bound counts from here.
                    // Counted from the wait's start, it ran out in the middle of a long
                    // ingest (an uploading station's puts share transactions of up to a
                    // second, so the wait no longer broke off between commits): twenty
                    // stations of 5,000 cylinders were relayed 18-20 MB each while they
                    // still uploaded, and the index after took 699 s instead of 221 s.
                    relay_wait.committed(others_in, Instant::now());
                    if initiator {
                        // A commit during a round goes at once, and a round confirms it as
                        // soon as this one ends, not at the next idle round a second later.
                        // Held for the round instead, a station's scrap reached its head
                        // office, busy with another station's upload, after about a
                        // second (`a_scrap_at_one_station_reaches_another_while_a_third_uploads`).
                        changed_in_round = !session.is_in_sync();
                        tokio::task::block_in_place(|| match session.is_in_sync() {
                            true => session.start(&replica, now()),
                            false => session.push_now(&replica),
                        })?;
                        if !changed_in_round {
                            last_round = Instant::now();
                        }
                    }
                }
                _ = tick.tick() => {
                    tokio::task::block_in_place(|| session.handle_timeout(&replica, now()))?;
                    if initiator && session.is_in_sync() && last_round.elapsed() >= ROUND_EVERY {
                        tokio::task::block_in_place(|| session.start(&replica, now()))?;
                        last_round = Instant::now();
                    }
                }
            }
        }
    }
    .await;
    if *session.checkpoints() != saved {
        save_checkpoints(&store, peer, session.checkpoints());
    }
    result
}

/// The head office side: accepts enrolled nodes and answers their sessions. Aborting
/// the returned task ends every connection with it (they live in its `JoinSet`), so the
/// store can close cleanly.
pub fn serve(store: Store, endpoint: quinn::Endpoint, tracking: Tracking) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(DECODED_MAX));
        while let Some(incoming) = endpoint.accept().await {
            while connections.try_join_next().is_some() {}
            let store = store.clone();
            let tracking = tracking.clone();
            let permits = permits.clone();
            connections.spawn(async move {
                let remote = incoming.remote_address();
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(%remote, error = %e, "replication connection refused");
                        return;
                    }
                };
                let Some(peer) = peer_of(&conn) else {
                    tracing::warn!(%remote, "peer certificate carries no node key; closing");
                    conn.close(1u32.into(), b"no node key");
                    return;
                };
                tracing::info!(%remote, %peer, "peer connected");
                tracking.peers.connected(peer, remote.to_string(), tracking.clock.now_ms());
                loop {
                    let stream = match conn.accept_bi().await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::info!(%remote, reason = %e, "peer gone");
                            tracking.peers.disconnected(peer);
                            return;
                        }
                    };
                    let commits = store.subscribe();
                    let session =
                        run_session(store.clone(), stream, false, commits, (&tracking, peer), permits.clone());
                    match session.await {
                        Ok(()) => {}
                        // A put under way stops before its next part (`Store::begin_close`).
                        Err(_) if store.is_closing() => {
                            tracing::info!(%remote, "replication session stopped: the node is shutting down");
                            return;
                        }
                        Err(e) => tracing::warn!(%remote, error = %e, "replication session ended"),
                    }
                }
            });
        }
    })
}

/// The station side: keeps a session with the head office, reconnecting with backoff.
pub fn connect(
    store: Store,
    endpoint: quinn::Endpoint,
    upstream: SocketAddr,
    config: quinn::ClientConfig,
    tracking: Tracking,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let attempt = async {
                let connecting = endpoint.connect_with(config.clone(), upstream, tls::HEAD_OFFICE_NAME)?;
                let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within {HANDSHAKE_TIMEOUT:?}"))??;
                let peer = peer_of(&conn).context("the head office's certificate carries no node key")?;
                tracing::info!(%upstream, "connected to the head office");
                tracking.peers.connected(peer, upstream.to_string(), tracking.clock.now_ms());
                let stream = conn.open_bi().await?;
                // One session: the bound is the read-ahead itself (the channel, the frame being
                // handled and the one decoded next).
                let permits = Arc::new(tokio::sync::Semaphore::new(READ_AHEAD + 2));
                let result =
                    run_session(store.clone(), stream, true, store.subscribe(), (&tracking, peer), permits).await;
                tracking.peers.disconnected(peer);
                result
            };
            match attempt.await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(_) if store.is_closing() => {
                    tracing::info!(%upstream, "replication stopped: the node is shutting down");
                    return;
                }
                Err(e) => tracing::warn!(%upstream, error = %e, retry_in = ?backoff, "head office unreachable"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// A station just enrolled starts its first session with the head office from
    /// checkpoint 0 in every scope (it pushes its whole log), and so does the answering
    /// side of a first meeting; once the first checkpoints are saved, they are what a
    /// session starts from.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_freshly_enrolled_station_pushes_everything_until_its_first_checkpoints() {
        let store = Store::in_memory(Arc::new(ManualClock::at(1_795_579_200_000))).unwrap();
        let (peers, office) = (Peers::default(), schema::event::NodeId([9; 32]));
        assert!(load_checkpoints(&store, &peers, office, true).is_empty(), "not enrolled: a walk");
        let station = schema::event::NodeId([7; 32]);
        assert_eq!(load_checkpoints(&store, &peers, station, false).len(), 3, "a head office pushes back");
        let enrol = |ctx: &mut crate::store::WriteCtx<'_>| ctx.set_meta(crate::enrolment::FIRST_PUSH, b"1");
        tokio::task::block_in_place(|| store.write_blocking(enrol)).unwrap();
        let zero: Checkpoints = scopes(store.enterprise()).into_iter().map(|s| (s, 0)).collect();
        assert_eq!(zero.len(), 3);
        assert_eq!(load_checkpoints(&store, &peers, office, true), zero);
        assert_eq!(load_checkpoints(&store, &peers, office, false), zero, "the answering side pushes back");
        let reached: Checkpoints = zero.keys().map(|s| (s.clone(), 42)).collect();
        save_checkpoints(&store, office, &reached);
        assert_eq!(store.meta(crate::enrolment::FIRST_PUSH).unwrap(), None);
        assert_eq!(load_checkpoints(&store, &peers, office, true), reached);
        // Another peer met later (a station on the LAN) is a first contact: a walk.
        assert!(load_checkpoints(&store, &peers, schema::event::NodeId([8; 32]), true).is_empty());
    }

    /// Twenty sessions, each with a frame of documents waiting (four permits each), share
    /// the head office's ten read-ahead permits: every frame goes on in turn, and none is
    /// decoded before its session holds a permit. A session that held one permit while
    /// waiting for three more made all of them wait for one another for ever. A small
    /// frame needs none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_waiting_for_read_ahead_permits_all_go_on() {
        let permits = Arc::new(tokio::sync::Semaphore::new(DECODED_MAX));
        let scope = crate::store::replica::docs_scope("3701020001").into_bytes();
        let docs = Frame::Items { scope: scope.clone(), items: vec![vec![1; SMALL_FRAME_MAX]] };
        let weight = Prechecked::read_ahead_permits(&scope) as usize;
        assert_eq!(weight, 4);
        let sessions: Vec<_> = (0..20)
            .map(|_| {
                let (permits, docs) = (permits.clone(), docs.clone());
                tokio::spawn(async move {
                    let mut decoder = Decoder::default();
                    decoder.push(&docs.encode());
                    decoder.push(&docs.encode());
                    for _ in 0..2 {
                        let (frame, permit) = next_frame(&mut decoder, &permits).await?.context("a whole frame")?;
                        let permits = permit.map(|p| p.num_permits());
                        anyhow::ensure!(frame == docs && permits == Some(weight), "{permits:?}");
                        // Held while the frame is stored.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    next_frame(&mut decoder, &permits).await
                })
            })
            .collect();
        for session in sessions {
            let done = tokio::time::timeout(Duration::from_secs(20), session).await;
            let rest = done.expect("every session gets its permits").unwrap().unwrap();
            assert!(rest.is_none(), "both frames taken, nothing left");
        }
        assert_eq!(permits.available_permits(), DECODED_MAX);
        // No permit free: a whole frame waits undecoded in the decoder.
        let all = permits.clone().acquire_many_owned(DECODED_MAX as u32).await.unwrap();
        let mut decoder = Decoder::default();
        decoder.push(&docs.encode());
        let waiting = tokio::time::timeout(Duration::from_millis(50), next_frame(&mut decoder, &permits)).await;
        assert!(waiting.is_err(), "it waits for a permit");
        assert!(decoder.has_frame().unwrap(), "and the frame is still undecoded in the decoder");
        // A small frame (a handheld's operation sent live) goes on without one.
        let mut small = Decoder::default();
        let live = Frame::Items { scope: scope.clone(), items: vec![vec![1; 600]] };
        small.push(&live.encode());
        let went = tokio::time::timeout(Duration::from_millis(50), next_frame(&mut small, &permits)).await;
        let (frame, permit) = went.expect("no wait for a permit").unwrap().expect("a whole frame");
        assert!(frame == live && permit.is_none());
        drop(all);
        assert!(next_frame(&mut decoder, &permits).await.unwrap().is_some());
    }

    /// While other peers' items go in, a head office's session holds its frames back for
    /// at most `RELAY_WAIT_MAX` without a commit; a stalled upload then holds nothing back
    /// until something commits again.
    #[test]
    fn relays_wait_for_uploads_only_while_they_commit() {
        let (t0, s) = (Instant::now(), Duration::from_secs(1));
        let mut w = RelayWait::default();
        assert!(!w.waits(false, t0), "nothing going in: no wait");
        assert!(w.waits(true, t0));
        assert!(w.waits(true, t0 + RELAY_WAIT_MAX - s));
        w.committed(true, t0 + 30 * s);
        assert!(w.waits(true, t0 + RELAY_WAIT_MAX + s), "the bound counts from the last commit");
        assert!(!w.waits(true, t0 + 30 * s + RELAY_WAIT_MAX), "stalled for the bound");
        assert!(!w.waits(true, t0 + 30 * s + 5 * RELAY_WAIT_MAX), "and no new wait while nothing commits");
        w.committed(true, t0 + 400 * s);
        assert!(w.waits(true, t0 + 401 * s), "the upload goes on: it waits again");
        assert!(!w.waits(false, t0 + 402 * s), "the upload is in");
        assert!(w.waits(true, t0 + 1000 * s), "a new upload: a new wait from its start");
        assert!(!w.waits(true, t0 + 1000 * s + RELAY_WAIT_MAX));
        w.committed(false, t0 + 2000 * s);
        assert!(!w.waits(true, t0 + 2000 * s), "a commit of nothing going in does not start a wait");
    }

    /// Refusals are logged one by one up to a bound per batch; the rest are counted.
    #[test]
    fn refusals_beyond_the_bound_are_counted_not_listed() {
        let reasons = |n: usize| (0..n).map(|i| format!("event {i} refused")).collect::<Vec<_>>();
        let (listed, more) = refusals_to_log(reasons(3));
        assert_eq!((listed, more), (reasons(3), 0));
        let (listed, more) = refusals_to_log(reasons(89_932));
        assert_eq!(listed, reasons(REFUSALS_LOGGED), "the first ones, in order");
        assert_eq!(more, 89_932 - REFUSALS_LOGGED);
    }
}
