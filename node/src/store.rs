//! The node's storage: one redb file holding the event log, Automerge documents, derived
//! cylinder rows and indexes.
//!
//! Writes go through one writer thread that owns the write side of the database. Jobs
//! that arrive while a commit is in flight are applied together in the next transaction
//! and made durable by one fsync (group commit); each job is answered only after that
//! commit returned. A job must do all its checks before its first write: a job that
//! refuses writes nothing, so its batch can still commit.
//!
//! Reads use their own read transactions (MVCC): they never wait for the writer.

pub mod anomalies;
pub(crate) mod changes;
pub mod replica;
pub(crate) mod runs;
pub(crate) mod tables;

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use automerge::{ActorId, AutoCommit};
use autosurgeon::{Hydrate, Reconcile};
use ed25519_dalek::SigningKey;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction,
};
use schema::anomaly::Judge;
use schema::archive::{CylinderArchive, DocId, new_document, read_document, update_document};
use schema::codes::FullCode;
use schema::event::{Event, EventBody, EventId, NodeId, SignedEvent};
use schema::hlc::{Hlc, HlcClock};
use schema::state::{CylinderState, derive};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::clock::Clock;
use runs::{ID_RUNS, INDEX_RUNS, Ids, LIVE_RUN, RUN_PREFIX, runs_in, without_run};
use tables::*;

/// Storage layout version written into `meta-1`. Older layouts are converted on open:
/// layout 1's events scope change sequence held ids, not keys (`migrate_change_log`);
/// layout 2's log kept 64 zero bytes for the signature a seal stands for (`migrate_log`);
/// layout 3's id table repeated each event's id in its value (`migrate_ids`);
/// layout 4's traceability index was one tree without runs (`migrate_index`);
/// layout 5's id and sealed tables were one tree each (`migrate_to_runs`);
/// layout 6's change sequence had a row per entry (`migrate_packed_changes`);
/// layout 7's two-byte summary level had a row per prefix (`migrate_packed_summaries`);
/// layout 8's sealed events did not name their seal, a table per event did
/// (`migrate_seal_refs`).
pub const LAYOUT: u64 = 9;
/// Jobs applied in one transaction at most.
const BATCH_MAX: usize = 512;
/// How long answered puts of a peer's items wait in an open transaction for the next
/// put before they commit (see [`Store::write_unsettled_blocking`]). A stream's next
/// frame is usually decoded already; a live operation's relay waits this much longer.
pub const COMMIT_LINGER: std::time::Duration = std::time::Duration::from_millis(2);
/// How long answered puts wait in an open transaction, past [`COMMIT_LINGER`], while a
/// peer's next frame is on its way in (`Store::start_receiving`): a stream whose frames
/// come just slower than the writer takes them otherwise commits every few frames, and
/// each commit rewrites most pages of the random-keyed tables.
const RECEIVING_LINGER_MAX: std::time::Duration = std::time::Duration::from_secs(1);
/// Bytes of answered puts after which the open transaction commits anyway: bounds what a
/// crash makes a peer send again and what a handheld write arriving meanwhile commits
/// with it.
const UNSETTLED_MAX: usize = 64 << 20;
/// Received events whose traceability index entries one pass writes at most.
/// (Small in unit tests, so that their backlogs take several passes.)
const INDEX_PASS: usize = if cfg!(test) { 100 } else { 100_000 };
/// Events per step of a pass; between steps it gives way to a waiting write.
const INDEX_CHUNK: usize = if cfg!(test) { 16 } else { 256 };
/// Events behind the index after which a pass runs even if the writer is never idle
/// (a head office under a constant stream), after a batch that ends in a commit. It
/// limits what a trace reads past the index but does not bound it: a stream's puts mostly
/// commit when their linger runs out, and at the end of a 20 × 50k ingest the index was
/// 17 million events behind (the idle passes then caught up at about 70,000 events/s).
const INDEX_FORCE: u64 = if cfg!(test) { 512 } else { 500_000 };
/// Full runs one level of a table in runs may hold before the writer merges them between
/// a stream's jobs instead of waiting for idle time: a head office under a stream that
/// never lets it idle would otherwise pile up runs without end, each one more read per
/// look-up by id (a run a week at 40,000 received events a day, ids and seals each).
/// With four, twenty stations' cold ingest of 2.15 million events merged during the
/// stream and took 76–84 s against 65–80 s (three runs each); with eight it does not
/// start before the ingest's last run.
const MERGE_FORCE_RUNS: usize = if cfg!(test) { 4 } else { 8 };
/// Received events one run of the traceability index takes before a pass starts the next
/// (`EVENT_INDEX_TABLE`). A pass inserts into this run only, so its cost is bounded by
/// the run's size, not the index's: at a head office holding 900,000 events a pass of
/// 100,000 took 3.6 s in one tree and 1.3 s in a run (`net_bench --stations 20
/// --cylinders 5000`), and the one tree's passes grew with every event stored.
const RUN_EVENTS: u64 = if cfg!(test) { 150 } else { 100_000 };
/// How long the writer must have been idle before it works on the index backlog.
const INDEX_IDLE: std::time::Duration = std::time::Duration::from_millis(200);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Redb(#[from] redb::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("cylinder {0} is not registered")]
    UnknownCylinder(FullCode),
    #[error("cylinder {0} is already registered")]
    AlreadyRegistered(FullCode),
    #[error("record invalid: {0}")]
    Invalid(String),
    #[error("the writer stopped")]
    WriterGone,
    #[error("the node is shutting down")]
    Closing,
    #[error("a write job panicked: {0}")]
    Panicked(String),
}

impl StoreError {
    /// Errors after which the transaction must not be committed.
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(self, StoreError::Redb(_) | StoreError::Corrupt(_) | StoreError::Panicked(_))
    }
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Redb(e.into()) }
        }
    )*};
}
redb_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// A cylinder's materialised row: archive and derived state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CylinderRow {
    pub archive: CylinderArchive,
    pub state: CylinderState,
}

impl CylinderRow {
    fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("serialising to a Vec cannot fail")
    }

    fn decode(bytes: &[u8]) -> Result<CylinderRow, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("cylinder row: {e}")))
    }
}

/// An operation's stored answer: SHA-256 of its request, the event it recorded and the
/// cylinder's state right after.
#[derive(Debug, Clone)]
pub struct StoredResult {
    pub request_hash: [u8; 32],
    pub event: SignedEvent,
    pub state: CylinderState,
}

/// How the store uses redb.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The enterprise this node writes for: local writes join its replication scopes.
    pub enterprise: String,
    /// Page cache size.
    pub cache_bytes: usize,
    /// Save the allocator state with every commit so that recovery after a crash is
    /// almost instant instead of a walk over the whole file.
    pub quick_repair: bool,
    /// Rule table, enterprise and time zone that anomaly detection judges past fills by.
    pub judge: Judge,
}

/// One line of the stock: cylinders at `place` (empty for none) with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLine {
    pub place: String,
    pub status: &'static str,
    pub full: Option<bool>,
    pub count: u64,
}

/// Filters of a cylinder list.
#[derive(Debug, Clone, Default)]
pub struct CylinderFilter {
    /// Prefix of the 16-digit code.
    pub code_prefix: Option<String>,
    pub tag: Option<String>,
    pub serial: Option<String>,
    pub status: Option<String>,
    pub place: Option<String>,
    pub medium: Option<String>,
}

/// Write-path statistics for `/metrics`.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub jobs: AtomicU64,
    pub commit_micros: AtomicU64,
    /// Of `commit_micros`, the time in redb's commit (pages written and synced).
    pub durable_micros: AtomicU64,
    /// Time in index passes and run merges (work no job waits for, done when the writer
    /// is idle or its index backlog is full).
    pub background_micros: AtomicU64,
    pub failed_batches: AtomicU64,
    /// Puts of a peer's items being stored right now (see [`Store::receiving`]).
    pub receiving: AtomicU64,
    /// The writer holds answered puts not yet committed (see [`Store::write_unsettled_blocking`]).
    pub unsettled: std::sync::atomic::AtomicBool,
    /// Peers whose upload is not over (see [`Store::uploading`]).
    pub uploads: AtomicU64,
    /// The node is shutting down (see [`Store::begin_close`]).
    pub closing: std::sync::atomic::AtomicBool,
    /// The writer has idle work left: received events not yet in the traceability index,
    /// or runs to merge (it may not know there are none until it has looked).
    pub idle_work: std::sync::atomic::AtomicBool,
}

/// Counts one of [`WriterStats`]' counters up for as long as it lives: received items
/// from their decoding until they are stored ([`Store::start_receiving`]), or a peer's
/// upload that is not over ([`Store::start_upload`]). A copy counts once more (a cloned
/// `Replica` holds its own).
pub struct Counted {
    stats: Arc<WriterStats>,
    counter: fn(&WriterStats) -> &AtomicU64,
}

impl Counted {
    fn new(stats: &Arc<WriterStats>, counter: fn(&WriterStats) -> &AtomicU64) -> Counted {
        counter(stats).fetch_add(1, Ordering::AcqRel);
        Counted { stats: stats.clone(), counter }
    }
}

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted").field("now", &(self.counter)(&self.stats).load(Ordering::Relaxed)).finish()
    }
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        Counted::new(&self.stats, self.counter)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.counter)(&self.stats).fetch_sub(1, Ordering::AcqRel);
    }
}

/// Received items on their way in (see [`Store::receiving`]).
pub type Receiving = Counted;
/// A peer's upload not over (see [`Store::uploading`]).
pub type Uploading = Counted;

type JobResult = Result<Box<dyn Any + Send>, StoreError>;
type JobFn = Box<dyn FnOnce(&mut WriteCtx<'_>) -> JobResult + Send>;

struct Job {
    run: JobFn,
    reply: oneshot::Sender<JobResult>,
    /// Answered before its commit, which may wait for more of its kind: the bytes it
    /// brings (0: answered after its commit, like every write but a peer's items).
    unsettled: usize,
}

/// Unboxes a job's answer into the type its closure returned.
fn finish<T: 'static>(result: JobResult) -> Result<T, StoreError> {
    Ok(*result?.downcast::<T>().expect("the job returns the type it was built with"))
}

/// The node's store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    enterprise: String,
    /// Bumped after every commit; replication sessions wait on it.
    commits: Arc<tokio::sync::watch::Sender<u64>>,
    jobs: mpsc::SyncSender<Job>,
    node: NodeId,
    token_key: [u8; 32],
    stats: Arc<WriterStats>,
    writer: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
    /// Change sequence ranges that stations' uploads added, per scope, in order (see
    /// `Store::live_changes`).
    from_stations: Arc<std::sync::Mutex<replica::FromStations>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("node", &self.node).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path, options: StoreOptions, clock: Arc<dyn Clock>) -> Result<Store, StoreError> {
        let db = Database::builder().set_cache_size(options.cache_bytes).create(path)?;
        let (idle, linger) = (Some(INDEX_IDLE), Some(COMMIT_LINGER));
        Store::start(db, options.enterprise, options.quick_repair, options.judge, clock, idle, linger)
    }

    /// Compacts a stopped node's file in place: frees the pages left over by
    /// copy-on-write commits. Returns the file size before and after.
    pub fn compact_file(path: &Path) -> Result<(u64, u64), StoreError> {
        let before = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let mut db = Database::open(path)?;
        db.compact().map_err(|e| StoreError::Redb(e.into()))?;
        drop(db);
        let after = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Ok((before, after))
    }

    /// Makes sure the store file at `path` signs with `node_seed`: creates it with that
    /// key, or checks that an existing one holds it (a regulator's laptop keeps one node
    /// key across the stores of the enterprises of its region).
    pub fn prepare_with_key(path: &Path, node_seed: &[u8; 32]) -> Result<(), StoreError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        {
            let mut meta = tx.open_table(META_TABLE)?;
            let existing = meta.get("node_key")?.map(|v| v.value().to_vec());
            match existing {
                None => {
                    meta.insert("node_key", node_seed.as_slice())?;
                }
                Some(k) if k == node_seed => {}
                Some(_) => return Err(StoreError::Invalid(format!("{} holds another node key", path.display()))),
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A store in memory for enterprise 3701020001, for tests.
    pub fn in_memory(clock: Arc<dyn Clock>) -> Result<Store, StoreError> {
        Store::in_memory_for("3701020001", clock)
    }

    /// A store in memory for `enterprise`, for tests and simulations.
    pub fn in_memory_for(enterprise: &str, clock: Arc<dyn Clock>) -> Result<Store, StoreError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        // Tests see the index backlog for a full second after a sync.
        let idle = Some(std::time::Duration::from_secs(1));
        Store::start(db, enterprise.to_owned(), false, Judge::embedded(enterprise), clock, idle, Some(COMMIT_LINGER))
    }

    /// A store in memory whose writer keeps answered puts waiting `linger` for more.
    #[cfg(test)]
    fn in_memory_lingering(clock: Arc<dyn Clock>, linger: std::time::Duration) -> Result<Store, StoreError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        let e = "3701020001";
        Store::start(db, e.to_owned(), false, Judge::embedded(e), clock, None, Some(linger))
    }

    /// A store on any redb storage backend (the simulator's crash-consistent disk). Its
    /// writer writes only when given jobs (index passes wait for a full backlog, never for
    /// wall-clock idleness), so a simulated run's disk writes depend on its seed alone.
    pub fn on_backend(
        backend: impl redb::StorageBackend,
        options: StoreOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Store, StoreError> {
        let db = Database::builder().set_cache_size(options.cache_bytes).create_with_backend(backend)?;
        Store::start(db, options.enterprise, options.quick_repair, options.judge, clock, None, None)
    }

    fn start(
        db: Database,
        scope: String,
        quick_repair: bool,
        judge: Judge,
        clock: Arc<dyn Clock>,
        index_idle: Option<std::time::Duration>,
        linger: Option<std::time::Duration>,
    ) -> Result<Store, StoreError> {
        let (key, last_hlc, token_key) = init(&db, quick_repair, clock.as_ref())?;
        let (index_cursor, index_backlog) = index_position(&db, &scope)?;
        let node = NodeId(key.verifying_key().to_bytes());
        let db = Arc::new(db);
        // Until the writer has looked, it may have runs to merge.
        let stats = Arc::new(WriterStats { idle_work: true.into(), ..Default::default() });
        let (tx, rx) = mpsc::sync_channel::<Job>(4096);
        let enterprise = scope.clone();
        let commits = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let mut writer = Writer {
            commits: commits.clone(),
            db: db.clone(),
            scope,
            quick_repair,
            judge,
            key,
            node,
            hlc: HlcClock::new(last_hlc),
            clock,
            stats: stats.clone(),
            index_cursor,
            index_backlog,
            index_merging: true,
            index_idle,
            index_behind: 0,
            merge_forced: false,
            linger,
            open: None,
        };
        writer.merge_forced = writer.runs_piled_up()?;
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| StoreError::Invalid(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            db,
            enterprise,
            commits,
            jobs: tx,
            node,
            token_key,
            stats,
            writer: Arc::new(std::sync::Mutex::new(Some(writer))),
            from_stations: Arc::default(),
        })
    }

    /// Wakes up after every commit (replication's live mode).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Whether peers' items are being taken in: received frames of items are being checked
    /// or stored, or answered puts wait for their commit. A head office's sessions wait
    /// for that before they send (see `replication::RELAY_WAIT_MAX`).
    pub fn receiving(&self) -> bool {
        self.stats.receiving.load(Ordering::Acquire) > 0 || self.stats.unsettled.load(Ordering::Acquire)
    }

    /// Whether a peer's upload is not over: a station's session from its start until its
    /// first push is in, and from any put of a full frame or more until that push's end
    /// (`Replica::put`). Steadier than [`Store::receiving`], which drops to false whenever
    /// no frame is on its way in and nothing waits for a commit, also in the middle of an
    /// upload: a head office's sessions relay nothing but live changes while it holds
    /// (see `replication::RELAY_WAIT_MAX`).
    pub fn uploading(&self) -> bool {
        self.stats.uploads.load(Ordering::Acquire) > 0
    }

    /// The node begins to shut down: a peer's put under way stops before its next part
    /// (`Replica::put`) and says so. What its parts before stored stays; the peer sends
    /// the rest again, from the last progress mark this side made durable.
    pub fn begin_close(&self) {
        self.stats.closing.store(true, Ordering::Release);
    }

    /// Whether the node is shutting down ([`Store::begin_close`]).
    pub fn is_closing(&self) -> bool {
        self.stats.closing.load(Ordering::Acquire)
    }

    /// Counts a peer's upload as not over until the guard drops.
    pub fn start_upload(&self) -> Uploading {
        Counted::new(&self.stats, |s| &s.uploads)
    }

    /// Counts received items until the guard drops: a driver holds one from the moment
    /// it decodes a frame of items until that frame is put. The idle writer does no index
    /// pass or merge meanwhile.
    pub fn start_receiving(&self) -> Receiving {
        Counted::new(&self.stats, |s| &s.receiving)
    }

    /// The node's Ed25519 secret seed (its TLS key too). Never logged.
    pub fn node_seed(&self) -> Result<[u8; 32], StoreError> {
        let bytes = self.meta("node_key")?.ok_or_else(|| StoreError::Corrupt("node key missing".into()))?;
        bytes.as_slice().try_into().map_err(|_| StoreError::Corrupt("node key length".into()))
    }

    /// The enterprise whose scopes this node writes.
    pub fn enterprise(&self) -> &str {
        &self.enterprise
    }

    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// The secret that signs login tokens (kept in `meta-1`, never logged).
    pub fn token_key(&self) -> &[u8; 32] {
        &self.token_key
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Runs `f` in the writer's next transaction and returns once it is durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let rx = self.submit(f)?;
        finish(rx.await.map_err(|_| StoreError::WriterGone)?)
    }

    /// Blocking form of [`Store::write`] for start-up code (demo data, import) and the
    /// replication session.
    pub fn write_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let rx = self.submit(f)?;
        finish(rx.blocking_recv().map_err(|_| StoreError::WriterGone)?)
    }

    /// [`Store::write_blocking`] for a peer's items (`bytes` of them), answered as soon as
    /// they are applied, before their commit: the writer keeps the transaction open for
    /// the next frame of a stream and commits when none has come for [`COMMIT_LINGER`],
    /// when [`UNSETTLED_MAX`] bytes wait, when any other write comes (it is durable as
    /// before, with them), or when a read needs them ([`Store::settle`]). One commit then
    /// rewrites each page of the random-keyed tables once for many frames.
    ///
    /// What the answer says is not durable yet: a crash (or a failed later write in the
    /// same transaction) loses it. That costs the peer a resend, never data: checkpoints
    /// move only when fingerprints read after a commit agree.
    pub fn write_unsettled_blocking<T, F>(&self, bytes: usize, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let rx = self.submit_job(f, bytes.max(1))?;
        finish(rx.blocking_recv().map_err(|_| StoreError::WriterGone)?)
    }

    /// Commits what the writer holds unsettled, if anything, and waits for it.
    pub fn settle(&self) -> Result<(), StoreError> {
        if self.stats.unsettled.load(Ordering::Acquire) {
            self.write_blocking(|_| Ok(()))?;
        }
        Ok(())
    }

    fn submit<T, F>(&self, f: F) -> Result<oneshot::Receiver<JobResult>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit_job(f, 0)
    }

    fn submit_job<T, F>(&self, f: F, unsettled: usize) -> Result<oneshot::Receiver<JobResult>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let run: JobFn = Box::new(move |ctx| f(ctx).map(|v| Box::new(v) as Box<dyn Any + Send>));
        self.jobs.send(Job { run, reply, unsettled }).map_err(|_| StoreError::WriterGone)?;
        Ok(rx)
    }

    /// Stops the writer after the jobs already queued and closes the database cleanly.
    /// Other handles still held (a replication task finishing) get up to five seconds to
    /// go; a file left open is repaired on the next start instead.
    pub fn shutdown(self) {
        let Store { jobs, writer, db, .. } = self;
        drop(jobs);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while Arc::strong_count(&writer) > 1 && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        match writer.lock().ok().and_then(|mut w| w.take()) {
            Some(h) if Arc::strong_count(&writer) == 1 => {
                let _ = h.join();
            }
            _ => tracing::warn!("the store is still in use at shutdown; it will be repaired on the next start"),
        }
        drop(db);
    }

    pub(crate) fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    /// Now, as this node's rules take it (an inspection overdue, an inspection date not in
    /// the future), given its wall clock's `wall_ms`: that, or the newest time its clock has
    /// reached (its own events and what it observed from peers, as of the last commit) when
    /// the wall clock is behind it. A station box that lost its clock (no battery, offline,
    /// no time service) starts again in 1970 or at its last shutdown, and overdue
    /// cylinders would pass its fill check.
    pub fn now_ms(&self, wall_ms: i64) -> Result<i64, StoreError> {
        let hlc = self.meta("hlc")?.and_then(|b| Hlc::from_key(&b));
        Ok(wall_ms.max(hlc.map_or(i64::MIN, |h| h.physical_ms)))
    }

    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.read()?;
        let t = r.open_table(META_TABLE)?;
        Ok(t.get(name)?.map(|v| v.value().to_vec()))
    }

    pub fn cylinder(&self, code: &FullCode) -> Result<Option<CylinderRow>, StoreError> {
        let r = self.read()?;
        let t = r.open_table(CYLINDERS_TABLE)?;
        t.get(code.as_bytes())?.map(|v| CylinderRow::decode(v.value())).transpose()
    }

    /// The cylinder a tag is bound to (the first, if an anomaly bound it twice).
    pub fn cylinder_by_tag(&self, tag: &str) -> Result<Option<FullCode>, StoreError> {
        let r = self.read()?;
        let t = r.open_multimap_table(CYLINDER_INDEX_TABLE)?;
        let mut values = t.get(format!("tag:{tag}").as_str())?;
        match values.next() {
            Some(v) => Ok(Some(code_of(v?.value())?)),
            None => Ok(None),
        }
    }

    /// Events of one cylinder, oldest first (in HLC order), at most the last `limit`.
    pub fn events_of(&self, code: &FullCode, limit: usize) -> Result<Vec<SignedEvent>, StoreError> {
        let r = self.read()?;
        let t = r.open_table(EVENTS_TABLE)?;
        let (lo, hi) = prefix_range(code.as_bytes());
        let mut out = Vec::new();
        for item in t.range(lo.as_slice()..hi.as_slice())?.rev().take(limit) {
            let (k, v) = item?;
            out.push(decode_keyed_event(k.value(), v.value())?);
        }
        out.reverse();
        Ok(out)
    }

    /// One of the store's counters (0 if never counted).
    pub fn counter(&self, name: &str) -> Result<u64, StoreError> {
        let r = self.read()?;
        let t = r.open_table(COUNTERS_TABLE)?;
        Ok(t.get(name)?.map_or(0, |v| v.value()))
    }

    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        let r = self.read()?;
        let t = r.open_table(COUNTERS_TABLE)?;
        let get = |k: &str| -> Result<u64, StoreError> { Ok(t.get(k)?.map_or(0, |v| v.value())) };
        Ok((get("cylinders")?, get("events")?))
    }

    /// A hydrated record (JSON) by document id.
    pub fn record(&self, doc: &DocId) -> Result<Option<serde_json::Value>, StoreError> {
        let r = self.read()?;
        let t = r.open_table(RECORDS_TABLE)?;
        match t.get(doc.0.as_str())? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("record {doc}: {e}"))),
            None => Ok(None),
        }
    }

    /// Records whose id starts with `kind:`.
    pub fn records(&self, kind: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let r = self.read()?;
        let t = r.open_table(RECORDS_TABLE)?;
        let lo = format!("{kind}:");
        let hi = format!("{kind};");
        let mut out = Vec::new();
        for item in t.range(lo.as_str()..hi.as_str())? {
            let (_, v) = item?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt(format!("record: {e}")))?);
        }
        Ok(out)
    }

    /// The previously stored answer to an operation id.
    pub fn operation_result(&self, op_id: &str) -> Result<Option<StoredResult>, StoreError> {
        let r = self.read()?;
        let ops = r.open_table(OPS_TABLE)?;
        let Some(v) = ops.get(op_id)? else { return Ok(None) };
        let (request_hash, id, state) = split_op(v.value())?;
        let ids = Ids::new(r.open_table(ID_RUNS.def)?)?;
        let events = r.open_table(EVENTS_TABLE)?;
        let key = ids.key(&id)?.ok_or_else(|| StoreError::Corrupt("operation event missing".into()))?;
        let stored =
            events.get(key.as_slice())?.ok_or_else(|| StoreError::Corrupt("operation event missing".into()))?;
        Ok(Some(StoredResult { request_hash, event: decode_keyed_event(&key, stored.value())?, state }))
    }

    /// One page of cylinders matching `filter`, and the number that match.
    /// Stock: how many cylinders sit at each place, by status and whether they are full
    /// (one pass over the rows; the head office's stock across its stations).
    pub fn stock(&self) -> Result<Vec<StockLine>, StoreError> {
        let r = self.read()?;
        let rows = r.open_table(CYLINDERS_TABLE)?;
        let mut counts: std::collections::BTreeMap<(String, &'static str, Option<bool>), u64> =
            std::collections::BTreeMap::new();
        for item in rows.iter()? {
            let (_, v) = item?;
            let row = CylinderRow::decode(v.value())?;
            let place = row.state.location.place().unwrap_or_default().to_owned();
            *counts.entry((place, row.state.location.status(), row.state.full)).or_default() += 1;
        }
        Ok(counts.into_iter().map(|((place, status, full), count)| StockLine { place, status, full, count }).collect())
    }

    pub fn list(&self, f: &CylinderFilter, page: u32, page_size: u32) -> Result<(u64, Vec<CylinderRow>), StoreError> {
        let r = self.read()?;
        let rows = r.open_table(CYLINDERS_TABLE)?;
        let index = r.open_multimap_table(CYLINDER_INDEX_TABLE)?;
        let skip = (page.saturating_sub(1) as u64) * page_size as u64;
        let matches = |row: &CylinderRow| -> bool {
            f.code_prefix.as_deref().is_none_or(|p| row.archive.code.starts_with(p))
                && f.serial.as_deref().is_none_or(|s| row.archive.serial == s)
                && f.status.as_deref().is_none_or(|s| row.state.location.status() == s)
                && f.place.as_deref().is_none_or(|p| row.state.location.place() == Some(p))
                && f.medium.as_deref().is_none_or(|m| row.archive.medium.code() == m)
                && f.tag.as_deref().is_none_or(|t| row.state.tags.contains(t))
        };
        // Use the most selective index; filter the rest row by row.
        let key = [
            f.tag.as_ref().map(|v| format!("tag:{v}")),
            f.serial.as_ref().map(|v| format!("serial:{v}")),
            f.place.as_ref().map(|v| format!("place:{v}")),
            f.status.as_ref().map(|v| format!("status:{v}")),
            f.medium.as_ref().map(|v| format!("medium:{v}")),
        ]
        .into_iter()
        .flatten()
        .next();
        let mut total = 0u64;
        let mut out = Vec::new();
        let mut consider = |row: CylinderRow| {
            if matches(&row) {
                if total >= skip && out.len() < page_size as usize {
                    out.push(row);
                }
                total += 1;
            }
        };
        match key {
            Some(key) => {
                for code in index.get(key.as_str())? {
                    if let Some(v) = rows.get(&code?.value())? {
                        consider(CylinderRow::decode(v.value())?);
                    }
                }
            }
            None => {
                let prefix = f.code_prefix.clone().unwrap_or_default();
                let mut lo = [b'0'; 16];
                let mut hi = [b'9'; 16];
                for (i, b) in prefix.bytes().take(16).enumerate() {
                    lo[i] = b;
                    hi[i] = b;
                }
                if prefix.is_empty() && f.code_prefix.is_none() {
                    // Unfiltered: the counter gives the total, paging reads one page.
                    total = rows.len()?;
                    for item in rows.iter()?.skip(skip as usize).take(page_size as usize) {
                        out.push(CylinderRow::decode(item?.1.value())?);
                    }
                    return Ok((total, out));
                }
                for item in rows.range::<&[u8; 16]>(&lo..=&hi)? {
                    consider(CylinderRow::decode(item?.1.value())?);
                }
            }
        }
        Ok((total, out))
    }

    /// Events across cylinders by a traceability dimension (`time`, `operator`, `kind`,
    /// `place`), newest first, within [from_ms, to_ms).
    pub fn trace(
        &self,
        dimension: &str,
        value: &str,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<SignedEvent>, StoreError> {
        let r = self.read()?;
        let idx = r.open_table(EVENT_INDEX_TABLE)?;
        let ids = Ids::new(r.open_table(ID_RUNS.def)?)?;
        let events = r.open_table(EVENTS_TABLE)?;
        let (lo, hi) =
            (index_key(0, dimension, value, from_ms, &[0; 32]), index_key(0, dimension, value, to_ms, &[0; 32]));
        let in_range = |k: &[u8]| lo[RUN_PREFIX..] <= *k && *k < hi[RUN_PREFIX..];
        // (index key without its run, the event if read already), newest first: the
        // newest `limit` of every run, then what waits for the index.
        let mut found: Vec<(Vec<u8>, Option<SignedEvent>)> = Vec::new();
        for run in runs_in(&idx)? {
            let (lo, hi) = (
                index_key(run, dimension, value, from_ms, &[0; 32]),
                index_key(run, dimension, value, to_ms, &[0; 32]),
            );
            for item in idx.range(lo.as_slice()..hi.as_slice())?.rev().take(limit) {
                found.push((without_run(item?.0.value())?.to_vec(), None));
            }
        }
        // Received events past the index cursor (an index pass follows soon after a sync).
        let cursor = read_index_cursor(&r, &self.enterprise)?;
        let scope = replica::events_scope(&self.enterprise);
        let s = scope.as_str();
        let seqs = r.open_table(CHANGES_TABLE)?;
        for item in changes::entries(&seqs, s, cursor.saturating_add(1), u64::MAX)? {
            let (_, ekey) = item?;
            let Some(v) = events.get(ekey.as_slice())? else { continue };
            let event = decode_keyed_event(&ekey, v.value())?;
            if let Some(k) = index_keys(&event, 0).into_iter().find(|k| in_range(&k[RUN_PREFIX..])) {
                found.push((k[RUN_PREFIX..].to_vec(), Some(event)));
            }
        }
        // An event in two runs (a pass indexed one of this node's own) or in the backlog
        // too counts once.
        found.sort_by(|a, b| b.0.cmp(&a.0));
        found.dedup_by(|a, b| a.0 == b.0);
        found.truncate(limit);
        let mut out = Vec::with_capacity(found.len());
        for (k, event) in found {
            if let Some(event) = event {
                out.push(event);
                continue;
            }
            let id = k.len().checked_sub(32).and_then(|at| <[u8; 32]>::try_from(&k[at..]).ok());
            let id = id.ok_or_else(|| StoreError::Corrupt("index key shorter than an id".into()))?;
            let Some(ekey) = ids.key(&id)? else { continue };
            if let Some(v) = events.get(ekey.as_slice())? {
                out.push(decode_keyed_event(&ekey, v.value())?);
            }
        }
        Ok(out)
    }
}

impl Store {
    /// Seals every event of this node that waits for a seal (`schema::seal`); says how
    /// many. A node does it as it starts and after writing demo data, so that what it
    /// wrote before travels without per-event signatures.
    pub fn seal_all(&self) -> Result<usize, StoreError> {
        self.write_blocking(|ctx| {
            let mut sealed = 0;
            loop {
                match ctx.seal_own()? {
                    0 => return Ok(sealed),
                    n => sealed += n,
                }
            }
        })
    }

    /// Stored events whose traceability index entries wait for the writer's next index
    /// pass (received events; 0 once it ran).
    pub fn index_backlog(&self) -> Result<u64, StoreError> {
        let r = self.read()?;
        let cursor = read_index_cursor(&r, &self.enterprise)?;
        Ok(last_seq_in(&r.open_table(CHANGES_TABLE)?, &self.enterprise)?.saturating_sub(cursor))
    }

    /// Events by id, in the order asked; ids not held here are left out.
    pub fn events_by_id(&self, wanted: &[EventId]) -> Result<Vec<SignedEvent>, StoreError> {
        let r = self.read()?;
        let ids = Ids::new(r.open_table(ID_RUNS.def)?)?;
        let events = r.open_table(EVENTS_TABLE)?;
        let mut out = Vec::with_capacity(wanted.len());
        for id in wanted {
            let Some(key) = ids.key(&id.0)? else { continue };
            if let Some(v) = events.get(key.as_slice())? {
                out.push(decode_keyed_event(&key, v.value())?);
            }
        }
        Ok(out)
    }
}

fn split_op(v: &[u8]) -> Result<([u8; 32], [u8; 32], CylinderState), StoreError> {
    let bad = || StoreError::Corrupt("operation result".into());
    let hash = v.get(..32).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
    let id = v.get(32..64).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
    let state = postcard::from_bytes(&v[64..]).map_err(|_| bad())?;
    Ok((hash, id, state))
}

fn code_of(bytes: &[u8; 16]) -> Result<FullCode, StoreError> {
    FullCode::try_from(&bytes[..]).map_err(|e| StoreError::Corrupt(format!("code: {e}")))
}

/// A document's stored bytes: its snapshot followed by its chunks (Automerge loads the
/// concatenation). Works in read and write transactions alike.
pub(crate) fn doc_bytes(
    docs: &impl ReadableTable<&'static str, &'static [u8]>,
    chunks: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    doc_id: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(snapshot) = docs.get(doc_id)? else {
        return Ok(None);
    };
    let mut bytes = snapshot.value().to_vec();
    for item in chunks.range((doc_id, 0)..=(doc_id, u64::MAX))? {
        bytes.extend_from_slice(item?.1.value());
    }
    Ok(Some(bytes))
}

/// First byte of an `events-2` value: the canonical bytes follow directly (a seal stands
/// for the event's signature, layouts 3 to 8, which kept which seal in `sealed-2`) ...
const LOG_SEALED: u8 = 0;
/// ... or the 64-byte signature comes first ...
const LOG_SIGNED: u8 = 1;
/// ... or the 32-byte id of the seal that stands for the signature (layout 9).
const LOG_SEALED_BY: u8 = 2;

/// An event's `events-2` value: a sealed event keeps only its seal's id of the 64 bytes
/// its stored (wire) form has in place of a signature ([`schema::seal::seal_ref`]).
pub(crate) fn log_value(event: &SignedEvent) -> Vec<u8> {
    log_value_of(&event.signature, &event.bytes)
}

fn log_value_of(signature: &[u8; 64], bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(65 + bytes.len());
    if let Some(seal) = schema::seal::named_seal(signature) {
        out.push(LOG_SEALED_BY);
        out.extend_from_slice(&seal);
    } else if *signature == replica::NO_SIGNATURE {
        out.push(LOG_SEALED);
    } else {
        out.push(LOG_SIGNED);
        out.extend_from_slice(signature);
    }
    out.extend_from_slice(bytes);
    out
}

/// An `events-2` value's signature (or the reference to its seal; zero bytes for an
/// event of layout 8 or older that no seal here lists) and canonical bytes.
pub(crate) fn log_parts(value: &[u8]) -> Result<([u8; 64], &[u8]), StoreError> {
    let bad = || StoreError::Corrupt("event log value".into());
    match value.split_first() {
        Some((&LOG_SEALED, bytes)) if !bytes.is_empty() => Ok((replica::NO_SIGNATURE, bytes)),
        Some((&LOG_SIGNED, rest)) if rest.len() > 64 => {
            let (sig, bytes) = rest.split_at(64);
            Ok((sig.try_into().map_err(|_| bad())?, bytes))
        }
        Some((&LOG_SEALED_BY, rest)) if rest.len() > 32 => {
            let (seal, bytes) = rest.split_at(32);
            let seal: [u8; 32] = seal.try_into().map_err(|_| bad())?;
            match seal == [0; 32] {
                true => Err(bad()),
                false => Ok((schema::seal::seal_ref(&seal), bytes)),
            }
        }
        _ => Err(bad()),
    }
}

/// The stored (wire) form of an `events-2` value: signature or zero bytes, then the
/// canonical bytes.
pub(crate) fn stored_of_log(value: &[u8]) -> Result<Vec<u8>, StoreError> {
    let (signature, bytes) = log_parts(value)?;
    let mut out = Vec::with_capacity(64 + bytes.len());
    out.extend_from_slice(&signature);
    out.extend_from_slice(bytes);
    Ok(out)
}

/// An event read under its `events-2` key, which ends with its id: nothing is hashed.
fn decode_keyed_event(key: &[u8], value: &[u8]) -> Result<SignedEvent, StoreError> {
    let id = key.len().checked_sub(32).and_then(|at| <[u8; 32]>::try_from(&key[at..]).ok());
    let id = id.ok_or_else(|| StoreError::Corrupt("event key shorter than an id".into()))?;
    let (signature, bytes) = log_parts(value)?;
    SignedEvent::from_parts(signature, bytes, EventId(id)).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let lo = prefix.to_vec();
    let mut hi = prefix.to_vec();
    hi.push(0xff);
    (lo, hi)
}

/// Bytes of an event key before its id: the 16-byte cylinder code and the 12-byte HLC.
const EVENT_KEY_HEAD: usize = 28;
/// Bytes of an event key: its head, then the 32-byte id.
const EVENT_KEY_LEN: usize = EVENT_KEY_HEAD + 32;

/// What the id table (`event-ids-3`) keeps of an event key: the part before the id.
fn key_head(key: &[u8]) -> Result<&[u8; EVENT_KEY_HEAD], StoreError> {
    match key.len() {
        EVENT_KEY_LEN => key[..EVENT_KEY_HEAD].try_into().map_err(|_| StoreError::Corrupt("event key".into())),
        n => Err(StoreError::Corrupt(format!("an event key of {n} bytes, not {EVENT_KEY_LEN}"))),
    }
}

/// The event key of `id` from what the id table keeps of it.
fn key_of(head: &[u8; EVENT_KEY_HEAD], id: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(EVENT_KEY_LEN);
    k.extend_from_slice(head);
    k.extend_from_slice(id);
    k
}

fn event_key(e: &SignedEvent) -> Vec<u8> {
    let mut k = Vec::with_capacity(EVENT_KEY_LEN);
    k.extend_from_slice(e.event.cylinder.as_bytes());
    k.extend_from_slice(&e.event.hlc.to_key());
    k.extend_from_slice(&e.id.0);
    k
}

/// The traceability index keys of an event in `run`: by time, operator, kind and place.
fn index_keys(event: &SignedEvent, run: u32) -> [Vec<u8>; 4] {
    let e = &event.event;
    [("time", ""), ("operator", e.operator.as_str()), ("kind", e.body.kind()), ("place", e.place.as_str())]
        .map(|(dim, value)| index_key(run, dim, value, e.wall_ms, &event.id.0))
}

fn index_key(run: u32, dimension: &str, value: &str, wall_ms: i64, id: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(RUN_PREFIX + dimension.len() + value.len() + 42);
    k.extend_from_slice(&run.to_be_bytes());
    k.extend_from_slice(dimension.as_bytes());
    k.push(0);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k.extend_from_slice(&((wall_ms as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(id);
    k
}

/// Creates the tables, the node key and the layout marker on first open; returns the key
/// and the last HLC issued.
fn init(db: &Database, quick_repair: bool, clock: &dyn Clock) -> Result<(SigningKey, Hlc, [u8; 32]), StoreError> {
    let tx = begin(db, quick_repair)?;
    let (key, hlc, token_key) = {
        let meta = tx.open_table(META_TABLE)?;
        tx.open_table(EVENTS_TABLE)?;
        tx.open_table(ID_RUNS.def)?;
        tx.open_table(EVENT_INDEX_TABLE)?;
        tx.open_table(DOCS_TABLE)?;
        tx.open_table(DOC_CHUNKS_TABLE)?;
        tx.open_table(RECORDS_TABLE)?;
        tx.open_table(CYLINDERS_TABLE)?;
        tx.open_multimap_table(CYLINDER_INDEX_TABLE)?;
        tx.open_table(OPS_TABLE)?;
        tx.open_table(COUNTERS_TABLE)?;
        tx.open_table(SYNC_ITEMS_TABLE)?;
        tx.open_table(DOC_ITEMS_TABLE)?;
        tx.open_table(SUMMARY_L0_TABLE)?;
        tx.open_table(SUMMARY_L1_TABLE)?;
        tx.open_table(SUMMARY_L2_TABLE)?;
        tx.open_table(ANOMALIES_TABLE)?;
        tx.open_table(CHANGES_TABLE)?;
        tx.open_table(SIGNED_UNSEALED_TABLE)?;
        tx.open_table(UNSEALED_TABLE)?;
        tx.open_table(AWAITING_SEAL_TABLE)?;
        let layout = meta.get("layout")?.map(|v| v.value().to_vec());
        let from = match &layout {
            None => LAYOUT,
            Some(v) => match <[u8; 8]>::try_from(v.as_slice()).map(u64::from_le_bytes) {
                Ok(n) if (1..=LAYOUT).contains(&n) => n,
                _ => return Err(StoreError::Corrupt(format!("unknown storage layout {v:?}"))),
            },
        };
        // Each conversion takes the file one layout on, in this one transaction.
        let steps: [Conversion; 8] = [
            migrate_change_log,
            migrate_log,
            migrate_ids,
            migrate_index,
            migrate_to_runs,
            migrate_packed_changes,
            migrate_packed_summaries,
            migrate_seal_refs,
        ];
        // The conversions open `meta-1` themselves.
        drop(meta);
        for step in steps.iter().skip(from as usize - 1) {
            step(&tx)?;
        }
        let mut meta = tx.open_table(META_TABLE)?;
        if layout.is_none() || from < LAYOUT {
            meta.insert("layout", LAYOUT.to_le_bytes().as_slice())?;
        }
        let existing = meta.get("node_key")?.map(|v| v.value().to_vec());
        let key = match existing {
            Some(bytes) => {
                let secret: [u8; 32] =
                    bytes.as_slice().try_into().map_err(|_| StoreError::Corrupt("node key length".into()))?;
                SigningKey::from_bytes(&secret)
            }
            None => {
                let secret: [u8; 32] = clock.random_bytes();
                meta.insert("node_key", secret.as_slice())?;
                SigningKey::from_bytes(&secret)
            }
        };
        let hlc = meta.get("hlc")?.and_then(|v| Hlc::from_key(v.value())).unwrap_or_default();
        let stored_token_key = meta.get("token_key")?.map(|v| v.value().to_vec());
        let token_key = match stored_token_key {
            Some(b) => b.as_slice().try_into().map_err(|_| StoreError::Corrupt("token key length".into()))?,
            None => {
                let k = clock.random_bytes();
                meta.insert("token_key", k.as_slice())?;
                k
            }
        };
        (key, hlc, token_key)
    };
    tx.commit()?;
    Ok((key, hlc, token_key))
}

/// Converts layout 1's change sequence (`item-seq-1`: ids) into `item-seq-2`, where the
/// events scope's rows hold event keys, and drops the old table. Runs once, in the
/// opening transaction, so a crash leaves either layout whole.
fn migrate_change_log(tx: &WriteTransaction) -> Result<(), StoreError> {
    let started = Instant::now();
    let mut rows = 0u64;
    {
        let old = tx.open_table(ITEM_SEQ_V1_TABLE)?;
        let ids = tx.open_table(EVENT_IDS_V1_TABLE)?;
        let mut new = tx.open_table(ITEM_SEQ_V2_TABLE)?;
        for item in old.iter()? {
            let (k, id) = item?;
            let (scope, seq) = k.value();
            let id = id.value();
            if replica::ScopeKind::of(scope) == replica::ScopeKind::Events {
                let key = ids.get(id)?.ok_or_else(|| {
                    StoreError::Corrupt(format!("change {seq} of {scope} names an event that is not stored"))
                })?;
                new.insert((scope, seq), key.value())?;
            } else {
                new.insert((scope, seq), id.as_slice())?;
            }
            rows += 1;
        }
    }
    tx.delete_table(ITEM_SEQ_V1_TABLE)?;
    tracing::info!(rows, ms = started.elapsed().as_millis() as u64, "storage layout 1 converted to 2");
    Ok(())
}

/// Converts layout 6's change sequence (`item-seq-2`, a row per entry) into packed rows
/// (`item-seq-3`, [`changes`]) and drops the old table. Runs once, in the opening
/// transaction, so a crash leaves either layout whole. A scope's entries are numbered
/// without gaps; a gap, if one were found, starts a new row.
fn migrate_packed_changes(tx: &WriteTransaction) -> Result<(), StoreError> {
    let started = Instant::now();
    let mut rows = 0u64;
    {
        let old = tx.open_table(ITEM_SEQ_V2_TABLE)?;
        let mut new = tx.open_table(CHANGES_TABLE)?;
        // (scope, first sequence number, entries) of the row being gathered.
        let mut row: Option<(String, u64, Vec<Vec<u8>>)> = None;
        let mut flush = |row: &mut Option<(String, u64, Vec<Vec<u8>>)>| -> Result<(), StoreError> {
            match row.take() {
                Some((scope, first, entries)) => {
                    changes::put_row(&mut new, &scope, first, &entries).map_err(|e| match e {
                        StoreError::Invalid(reason) => StoreError::Corrupt(reason),
                        e => e,
                    })
                }
                None => Ok(()),
            }
        };
        for item in old.iter()? {
            let (k, v) = item?;
            let (scope, seq) = k.value();
            let v = v.value();
            let joins = row.as_ref().is_some_and(|(s, first, entries)| {
                s == scope
                    && *first + entries.len() as u64 == seq
                    && entries.len() < changes::ROW_ENTRIES
                    && entries[0].len() == v.len()
            });
            if !joins {
                flush(&mut row)?;
                row = Some((scope.to_owned(), seq, Vec::new()));
            }
            if let Some((_, _, entries)) = row.as_mut() {
                entries.push(v.to_vec());
            }
            rows += 1;
        }
        flush(&mut row)?;
    }
    tx.delete_table(ITEM_SEQ_V2_TABLE)?;
    tracing::info!(rows, ms = started.elapsed().as_millis() as u64, "storage layout 6 converted to 7");
    Ok(())
}

/// A conversion of the file from one layout to the next, in the opening transaction.
type Conversion = fn(&WriteTransaction) -> Result<(), StoreError>;

/// Converts layout 7's two-byte summary level (`sync-summary-2-1`, a row per prefix) into
/// rows of 256 (`sync-summary-2-2`) and drops the old table. Runs once, in the opening
/// transaction, so a crash leaves either layout whole.
fn migrate_packed_summaries(tx: &WriteTransaction) -> Result<(), StoreError> {
    let started = Instant::now();
    let mut rows = 0u64;
    {
        let old = tx.open_table(SUMMARY_L2_V1_TABLE)?;
        let mut new = tx.open_table(SUMMARY_L2_TABLE)?;
        // (scope, first byte, row) being gathered; the old keys come in that order.
        let mut row: Option<(String, u8, Vec<u8>)> = None;
        for item in old.iter()? {
            let (k, v) = item?;
            let (scope, prefix) = k.value();
            let [first, second] = prefix.to_be_bytes();
            if row.as_ref().is_none_or(|(s, f, _)| s != scope || *f != first) {
                if let Some((s, f, bytes)) = row.take() {
                    new.insert((s.as_str(), f), bytes.as_slice())?;
                }
                row = Some((scope.to_owned(), first, vec![0; replica::L2_ROW_BYTES]));
            }
            if let Some((_, _, bytes)) = row.as_mut() {
                replica::l2_set(bytes, second, v.value());
            }
            rows += 1;
        }
        if let Some((s, f, bytes)) = row {
            new.insert((s.as_str(), f), bytes.as_slice())?;
        }
    }
    tx.delete_table(SUMMARY_L2_V1_TABLE)?;
    tracing::info!(rows, ms = started.elapsed().as_millis() as u64, "storage layout 7 converted to 8");
    Ok(())
}

/// Converts layout 2's log (`events-1`, every value led by a signature or 64 zero bytes)
/// into `events-2` ([`log_value`]) and drops the old table. Runs once, in the opening
/// transaction, so a crash leaves either layout whole; the keys come in order, so the new
/// table is written front to back (about 2.2 million events at a head office of 100,000
/// cylinders).
fn migrate_log(tx: &WriteTransaction) -> Result<(), StoreError> {
    let started = Instant::now();
    let mut rows = 0u64;
    {
        let old = tx.open_table(EVENTS_V1_TABLE)?;
        let mut new = tx.open_table(EVENTS_TABLE)?;
        for item in old.iter()? {
            let (k, v) = item?;
            let v = v.value();
            let (signature, bytes) = match v.split_first_chunk::<64>() {
                Some((signature, bytes)) if !bytes.is_empty() => (signature, bytes),
                _ => return Err(StoreError::Corrupt("event log value shorter than a signature".into())),
            };
            new.insert(k.value(), log_value_of(signature, bytes).as_slice())?;
            rows += 1;
        }
    }
    tx.delete_table(EVENTS_V1_TABLE)?;
    tracing::info!(rows, ms = started.elapsed().as_millis() as u64, "storage layout 2 converted to 3");
    Ok(())
}

/// Converts layout 3's id table (`event-ids-1`, each value the event's whole key) into
/// `event-ids-2` (the key without the id it ends with) and drops the old table. Runs
/// once, in the opening transaction, so a crash leaves either layout whole.
fn migrate_ids(tx: &WriteTransaction) -> Result<(), StoreError> {
    let started = Instant::now();
    let mut rows = 0u64;
    {
        let old = tx.open_table(EVENT_IDS_V1_TABLE)?;
        let mut new = tx.open_table(EVENT_IDS_V2_TABLE)?;
        for item in old.iter()? {
            let (id, key) = item?;
            let (id, key) = (id.value(), key.value());
            if key.get(EVENT_KEY_HEAD..) != Some(id.as_slice()) {
                return Err(StoreError::Corrupt(format!(
                    "the id table's key of {} does not end with it",
                    crate::auth::hex(id)
                )));
            }
            new.insert(id, key_head(key)?)?;
            rows += 1;
        }
    }
    tx.delete_table(EVENT_IDS_V1_TABLE)?;
    tracing::info!(rows, ms = started.elapsed().as_millis() as u64, "storage layout 3 converted to 4");
    Ok(())
}

/// Converts layout 4's traceability index (`event-index-1`, one tree) into run 0 of
/// `event-index-2` and drops the old table. Runs once, in the opening transaction, so a
/// crash leaves either layout whole; the keys come in order and keep it with the run
/// number in front, so the new table is written front to back.
fn migrate_index(tx: &WriteTransaction) -> Result<(), StoreError> {
    let started = Instant::now();
    let mut rows = 0u64;
    {
        let old = tx.open_table(EVENT_INDEX_V1_TABLE)?;
        let mut new = tx.open_table(EVENT_INDEX_TABLE)?;
        let mut key = Vec::new();
        for item in old.iter()? {
            let (k, _) = item?;
            key.clear();
            key.extend_from_slice(&LIVE_RUN.to_be_bytes());
            key.extend_from_slice(k.value());
            new.insert(key.as_slice(), ())?;
            rows += 1;
        }
    }
    tx.delete_table(EVENT_INDEX_V1_TABLE)?;
    tracing::info!(rows, ms = started.elapsed().as_millis() as u64, "storage layout 4 converted to 5");
    Ok(())
}

/// Converts layout 5's id and sealed tables into runs (`runs::migrate`). Runs once, in
/// the opening transaction, so a crash leaves either layout whole.
fn migrate_to_runs(tx: &WriteTransaction) -> Result<(), StoreError> {
    let started = Instant::now();
    let ids = runs::migrate(tx, EVENT_IDS_V2_TABLE, ID_RUNS)?;
    let sealed = runs::migrate(tx, SEALED_V1_TABLE, runs::SEALED_RUNS)?;
    tracing::info!(ids, sealed, ms = started.elapsed().as_millis() as u64, "storage layout 5 converted to 6");
    Ok(())
}

/// Converts layout 8's sealed events (log values led by byte 0, which seal lists each
/// kept in `sealed-2`) into layout 9's: each event that a stored seal of its own node
/// lists gets that seal's id in its log value, a signed one too (it travels on without its
/// signature, as `sealed-2` made it before), and `sealed-2` is dropped. Other nodes'
/// events still signed are listed in `signed-unsealed-1` for their seal to come. Runs
/// once, in the opening transaction, so a crash leaves either layout whole.
fn migrate_seal_refs(tx: &WriteTransaction) -> Result<(), StoreError> {
    let started = Instant::now();
    let (mut sealed, mut signed) = (0u64, 0u64);
    {
        let items = tx.open_table(SYNC_ITEMS_TABLE)?;
        let ids = Ids::new(tx.open_table(ID_RUNS.def)?)?;
        let mut log = tx.open_table(EVENTS_TABLE)?;
        for item in items.iter()? {
            let (k, v) = item?;
            let (scope, seal_id) = k.value();
            if replica::ScopeKind::of(scope) != replica::ScopeKind::Seals {
                continue;
            }
            let seal = schema::seal::Seal::decode_trusted(v.value())
                .map_err(|e| StoreError::Corrupt(format!("stored seal: {e}")))?;
            let reference = schema::seal::seal_ref(seal_id);
            // In id order: neighbouring ids share pages of each run of `event-ids-3`.
            let mut listed_ids = seal.ids;
            listed_ids.sort_unstable();
            for listed in &listed_ids {
                for key in ids.keys_with_prefix(listed)? {
                    let Some(value) = log.get(key.as_slice())?.map(|v| v.value().to_vec()) else { continue };
                    let (signature, bytes) = log_parts(&value)?;
                    if schema::seal::named_seal(&signature).is_some() || Event::node_of(bytes).ok() != Some(seal.signer)
                    {
                        continue;
                    }
                    log.insert(key.as_slice(), log_value_of(&reference, bytes).as_slice())?;
                    sealed += 1;
                }
            }
        }
    }
    {
        let own = tx.open_table(META_TABLE)?.get("node_key")?.and_then(|v| <[u8; 32]>::try_from(v.value()).ok());
        let own = own.map(|secret| NodeId(SigningKey::from_bytes(&secret).verifying_key().to_bytes()));
        let log = tx.open_table(EVENTS_TABLE)?;
        let mut waiting = tx.open_table(SIGNED_UNSEALED_TABLE)?;
        for item in log.iter()? {
            let (k, v) = item?;
            let (signature, bytes) = log_parts(v.value())?;
            if signature == replica::NO_SIGNATURE || schema::seal::named_seal(&signature).is_some() {
                continue;
            }
            let (Ok(node), Some(id)) = (Event::node_of(bytes), k.value().last_chunk::<32>()) else { continue };
            if Some(node) != own {
                waiting.insert(&replica::signed_unsealed_key(&EventId(*id), &node), k.value())?;
                signed += 1;
            }
        }
    }
    tx.delete_table(runs::SEALED_RUNS.def)?;
    {
        let mut meta = tx.open_table(META_TABLE)?;
        meta.remove(runs::SEALED_RUNS.run_key("").as_str())?;
        meta.remove(runs::SEALED_RUNS.merge_key("").as_str())?;
    }
    tracing::info!(sealed, signed, ms = started.elapsed().as_millis() as u64, "storage layout 8 converted to 9");
    Ok(())
}

/// The writer thread's state: the only holder of the write side of the database.
struct Writer {
    commits: Arc<tokio::sync::watch::Sender<u64>>,
    db: Arc<Database>,
    scope: String,
    quick_repair: bool,
    judge: Judge,
    key: SigningKey,
    node: NodeId,
    hlc: HlcClock,
    clock: Arc<dyn Clock>,
    stats: Arc<WriterStats>,
    /// Change sequence of the events scope up to which every event is in the
    /// traceability index (saved in `meta-1` as `index_cursor:<scope>`).
    index_cursor: u64,
    /// Received events wait for an index pass past `index_cursor`.
    index_backlog: bool,
    /// Runs of the index or the id table may wait to be merged (see
    /// [`runs::RUN_LEVEL_SHIFT`]).
    index_merging: bool,
    /// How long the writer must have been idle before an index pass (never: only full
    /// backlogs are indexed).
    index_idle: Option<std::time::Duration>,
    /// Events past the cursor after the last commit (see [`INDEX_FORCE`]).
    index_behind: u64,
    /// A table in runs holds [`MERGE_FORCE_RUNS`] full runs of one level: merges go on
    /// between jobs, idle or not.
    merge_forced: bool,
    /// How long an open transaction with answered puts waits for more before it commits
    /// (`None`: every batch commits at once, as the simulator needs).
    linger: Option<std::time::Duration>,
    /// The transaction under way, when answered puts wait in it for their commit.
    open: Option<Open>,
}

/// A write transaction kept open across batches (see [`Store::write_unsettled_blocking`]).
struct Open {
    tx: WriteTransaction,
    summaries: replica::SummaryDeltas,
    /// Received events in it wait for an index pass.
    deferred: bool,
    /// It started a run of the id table: two full ones may wait to be merged.
    new_run: bool,
    /// The clock as it was before the transaction, restored if it fails.
    hlc_before: HlcClock,
    /// Time spent applying its jobs (not waiting for them).
    busy: std::time::Duration,
    jobs: u64,
    /// Bytes of the answered puts in it.
    unsettled: usize,
    /// Answers that wait for the commit.
    replies: Replies,
    /// When it began.
    begun: Instant,
}

type Replies = Vec<(oneshot::Sender<JobResult>, JobResult)>;

/// Answers a write whose transaction will not commit.
fn refuse(reply: oneshot::Sender<JobResult>, e: &StoreError) {
    let _ = reply.send(Err(StoreError::Invalid(format!("write failed: {e}"))));
}

impl Writer {
    fn run(mut self, rx: &mpsc::Receiver<Job>) {
        // Jobs that arrived during an index pass, in order (it stopped for the last).
        let mut carried = std::collections::VecDeque::new();
        loop {
            if self.merge_forced && self.open.is_none() && carried.is_empty() {
                carried = self.merge_runs(rx, true);
            }
            // Received events' index entries are written when nothing else waits.
            self.stats.idle_work.store(self.index_backlog || self.index_merging, Ordering::Release);
            let idle = self.index_idle.filter(|_| self.index_backlog || self.index_merging);
            let linger = self.linger.filter(|_| self.open.is_some());
            let first = if let Some(job) = carried.pop_front() {
                job
            } else if let Some(linger) = linger {
                // Answered puts wait in the open transaction for the next one.
                match rx.recv_timeout(linger) {
                    Ok(job) => job,
                    // A peer's next frame is on its way in (decoded, being checked): it
                    // joins this transaction, unless that has been open for long.
                    Err(mpsc::RecvTimeoutError::Timeout)
                        if self.stats.receiving.load(Ordering::Acquire) > 0
                            && self.open.as_ref().is_some_and(|o| o.begun.elapsed() < RECEIVING_LINGER_MAX) =>
                    {
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.settle_open();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        self.settle_open();
                        break;
                    }
                }
            } else if let Some(idle) = idle {
                match rx.recv_timeout(idle) {
                    Ok(job) => job,
                    // A peer's items on their way in (a frame decoded or checked, not yet
                    // put) mean the writer is not idle, only between puts: in a catch-up
                    // at 100,000 cylinders, passes and merges started in such gaps took
                    // half the writer's time before the stream was in.
                    Err(mpsc::RecvTimeoutError::Timeout) if self.stats.receiving.load(Ordering::Acquire) > 0 => {
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        carried = match self.index_backlog {
                            true => self.index_pass(rx, false),
                            false => self.merge_runs(rx, false),
                        };
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            let mut batch = vec![first];
            while batch.len() < BATCH_MAX {
                if let Some(job) = carried.pop_front() {
                    batch.push(job);
                    continue;
                }
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let result = self.apply(batch);
            // Answered puts may wait for more; anything else is answered after its commit.
            let settle = match &result {
                Ok(()) => self
                    .open
                    .as_ref()
                    .is_some_and(|o| self.linger.is_none() || !o.replies.is_empty() || o.unsettled >= UNSETTLED_MAX),
                Err(_) => false,
            };
            match result {
                Ok(()) if settle => self.settle_open(),
                Ok(()) => {}
                Err(e) => self.finish_batch(Err(e)),
            }
            if self.open.is_none() && self.index_backlog && self.index_behind >= INDEX_FORCE {
                carried = self.index_pass(rx, true);
            }
        }
    }

    /// Commits the open transaction, if any: counts the commit or logs the failure.
    fn settle_open(&mut self) {
        let result = self.commit_open();
        self.finish_batch(result);
    }

    /// Counts a commit, or logs a failed one.
    fn finish_batch(&mut self, result: Result<bool, StoreError>) {
        match result {
            Ok(true) => self.commits.send_modify(|n| *n += 1),
            Ok(false) => {}
            Err(e) => {
                self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "write batch failed, nothing of it was stored");
            }
        }
    }

    /// Applies a batch of jobs in the open transaction (begun if none is): a put of a
    /// peer's items is answered at once, any other job after the commit. A job that fails
    /// for good (storage, corruption) drops the whole transaction.
    fn apply(&mut self, batch: Vec<Job>) -> Result<(), StoreError> {
        let mut open = match self.open.take() {
            Some(open) => open,
            None => match begin(&self.db, self.quick_repair) {
                Ok(tx) => Open {
                    tx,
                    summaries: replica::SummaryDeltas::default(),
                    deferred: false,
                    new_run: false,
                    hlc_before: self.hlc.clone(),
                    busy: std::time::Duration::ZERO,
                    jobs: 0,
                    unsettled: 0,
                    replies: Vec::new(),
                    begun: Instant::now(),
                },
                Err(e) => {
                    for job in batch {
                        refuse(job.reply, &e);
                    }
                    return Err(e);
                }
            },
        };
        let started = Instant::now();
        let mut fatal = None;
        for job in batch {
            if fatal.is_some() {
                open.replies.push((job.reply, Err(StoreError::Invalid("batch aborted".into()))));
                continue;
            }
            let mut ctx = WriteCtx {
                tx: &mut open.tx,
                summaries: &mut open.summaries,
                scope: &self.scope,
                judge: &self.judge,
                key: &self.key,
                node: self.node,
                hlc: &mut self.hlc,
                deferred: &mut open.deferred,
                new_run: &mut open.new_run,
                wall_ms: self.clock.now_ms(),
            };
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| (job.run)(&mut ctx)))
                .unwrap_or_else(|p| Err(StoreError::Panicked(panic_message(&p))));
            if let Err(e) = &result
                && e.is_fatal()
            {
                fatal = Some(e.to_string());
            }
            open.jobs += 1;
            if job.unsettled > 0 && self.linger.is_some() && fatal.is_none() {
                open.unsettled += job.unsettled;
                // Raised before the answer: a read that follows it settles first.
                self.stats.unsettled.store(true, Ordering::Release);
                let _ = job.reply.send(result);
            } else {
                open.replies.push((job.reply, result));
            }
        }
        if let Some(e) = fatal {
            self.hlc = open.hlc_before.clone();
            let err = StoreError::Corrupt(e);
            self.drop_open(open, &err);
            return Err(err);
        }
        open.busy += started.elapsed();
        self.stats.unsettled.store(open.unsettled > 0, Ordering::Release);
        self.open = Some(open);
        Ok(())
    }

    /// Fails every answer still waiting in a transaction that will not commit.
    fn drop_open(&mut self, open: Open, e: &StoreError) {
        for (reply, _) in open.replies {
            refuse(reply, e);
        }
        self.stats.unsettled.store(false, Ordering::Release);
    }

    /// Commits the open transaction, if any, and answers what waited for it; true if it
    /// committed.
    fn commit_open(&mut self) -> Result<bool, StoreError> {
        let Some(open) = self.open.take() else { return Ok(false) };
        let Open { tx, mut summaries, deferred, new_run, hlc_before, busy, jobs: n_jobs, replies, .. } = open;
        let started = Instant::now();
        let backlog = self.index_backlog || deferred;
        let committed = (|| -> Result<Option<u64>, StoreError> {
            replica::apply_summaries(&tx, &mut summaries)?;
            // With no backlog every event so far is indexed: the cursor follows the log.
            let last = last_seq(&tx, &self.scope)?;
            self.index_behind = last.saturating_sub(self.index_cursor);
            let cursor = (!backlog).then_some(last);
            {
                let mut meta = tx.open_table(META_TABLE)?;
                meta.insert("hlc", self.hlc.last().to_key().as_slice())?;
                if let Some(c) = cursor.filter(|c| *c != self.index_cursor) {
                    meta.insert(index_cursor_key(&self.scope).as_str(), c.to_le_bytes().as_slice())?;
                }
            }
            let durable = Instant::now();
            tx.commit()?;
            self.stats.durable_micros.fetch_add(durable.elapsed().as_micros() as u64, Ordering::Relaxed);
            Ok(cursor)
        })();
        match committed {
            Ok(cursor) => {
                self.index_backlog = backlog;
                self.index_merging |= new_run;
                if new_run {
                    self.merge_forced = self.runs_piled_up().unwrap_or_else(|e| {
                        tracing::error!(error = %e, "counting runs failed");
                        false
                    });
                }
                // Said before anyone is answered, as the counts below.
                self.stats.idle_work.store(self.index_backlog || self.index_merging, Ordering::Release);
                if let Some(c) = cursor {
                    self.index_cursor = c;
                }
                // Counted before anyone is answered, so what a client reads after its
                // acknowledgement includes its own write.
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.stats.jobs.fetch_add(n_jobs, Ordering::Relaxed);
                let busy = busy + started.elapsed();
                self.stats.commit_micros.fetch_add(busy.as_micros() as u64, Ordering::Relaxed);
                self.stats.unsettled.store(false, Ordering::Release);
                for (reply, result) in replies {
                    let _ = reply.send(result);
                }
                Ok(true)
            }
            Err(e) => {
                self.hlc = hlc_before;
                for (reply, _) in replies {
                    refuse(reply, &e);
                }
                self.stats.unsettled.store(false, Ordering::Release);
                Err(e)
            }
        }
    }
}

fn index_cursor_key(enterprise: &str) -> String {
    format!("index_cursor:{}", replica::events_scope(enterprise))
}

/// The saved index cursor, if any.
fn saved_cursor(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    enterprise: &str,
) -> Result<Option<u64>, StoreError> {
    let Some(v) = meta.get(index_cursor_key(enterprise).as_str())? else { return Ok(None) };
    let bytes = v.value().try_into().map_err(|_| StoreError::Corrupt("index cursor length".into()))?;
    Ok(Some(u64::from_le_bytes(bytes)))
}

/// The last change sequence number of the events scope.
fn last_seq_in(
    seqs: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    enterprise: &str,
) -> Result<u64, StoreError> {
    changes::last(seqs, &replica::events_scope(enterprise))
}

fn read_index_cursor(r: &ReadTransaction, enterprise: &str) -> Result<u64, StoreError> {
    Ok(saved_cursor(&r.open_table(META_TABLE)?, enterprise)?.unwrap_or(0))
}

fn last_seq(tx: &WriteTransaction, enterprise: &str) -> Result<u64, StoreError> {
    last_seq_in(&tx.open_table(CHANGES_TABLE)?, enterprise)
}

/// The index cursor and whether events past it wait for the index. A store written
/// before the cursor existed indexed every event as it stored it: its cursor starts at
/// the end of the log.
fn index_position(db: &Database, enterprise: &str) -> Result<(u64, bool), StoreError> {
    let tx = db.begin_write()?;
    let last = last_seq(&tx, enterprise)?;
    let key = index_cursor_key(enterprise);
    let cursor = {
        let mut meta = tx.open_table(META_TABLE)?;
        match saved_cursor(&meta, enterprise)? {
            Some(c) => c,
            None => {
                meta.insert(key.as_str(), last.to_le_bytes().as_slice())?;
                last
            }
        }
    };
    tx.commit()?;
    Ok((cursor, cursor < last))
}

impl Writer {
    /// Writes the traceability index entries of up to [`INDEX_PASS`] events past the
    /// cursor, sorted, in one transaction: received events skip the index when they are
    /// stored (their random keys made each receiving commit rewrite most of the index's
    /// pages; a sync spent half its time there), and a pass writes each touched page once.
    ///
    /// An idle-time pass stops at the first chunk boundary after a job arrived on
    /// `yield_to`, commits what it did and hands the job back, so a write waits for about
    /// one chunk. A pass `forced` by a full backlog (a node under a constant stream) takes
    /// puts of a stream that arrive meanwhile aside and runs whole, since small passes
    /// would rewrite the index's pages again and again; it still stops for a write that
    /// waits for its commit (a handheld's scan: at a station taking in a head office's
    /// relay of a million events a scan waited 2.9 s behind a whole pass). The jobs that
    /// arrived come back in order.
    fn index_pass(&mut self, yield_to: &mpsc::Receiver<Job>, forced: bool) -> std::collections::VecDeque<Job> {
        let started = Instant::now();
        let mut arrived = std::collections::VecDeque::new();
        let mut pass = || -> Result<(u64, bool), StoreError> {
            let mut tx = begin(&self.db, self.quick_repair)?;
            let scope = replica::events_scope(&self.scope);
            let s = scope.as_str();
            let (mut cursor, mut n, mut exhausted, mut yielded) = (self.index_cursor, 0, false, false);
            // The newest run while it holds fewer than RUN_EVENTS, else a new one.
            let (run, in_run) = INDEX_RUNS.filling(&tx, &self.scope, RUN_EVENTS)?;
            {
                let seqs = tx.open_table(CHANGES_TABLE)?;
                let events = tx.open_table(EVENTS_TABLE)?;
                let mut index = tx.open_table(EVENT_INDEX_TABLE)?;
                // Chunks end where the log does (fewer than a chunk left) or after INDEX_PASS.
                let mut entries = changes::entries(&seqs, s, self.index_cursor.saturating_add(1), u64::MAX)?;
                let mut keys = Vec::with_capacity(4 * INDEX_CHUNK);
                loop {
                    keys.clear();
                    let mut taken = 0;
                    for item in entries.by_ref().take(INDEX_CHUNK) {
                        let (seq, ekey) = item?;
                        cursor = seq;
                        taken += 1;
                        if let Some(v) = events.get(ekey.as_slice())? {
                            keys.extend(index_keys(&decode_keyed_event(&ekey, v.value())?, run));
                        }
                    }
                    n += taken;
                    keys.sort_unstable();
                    for k in &keys {
                        index.insert(k.as_slice(), ())?;
                    }
                    if taken < INDEX_CHUNK {
                        exhausted = true;
                        break;
                    }
                    if n >= INDEX_PASS {
                        break;
                    }
                    while !yielded && let Ok(job) = yield_to.try_recv() {
                        yielded = !forced || job.unsettled == 0;
                        arrived.push_back(job);
                    }
                    if yielded {
                        break;
                    }
                }
                let mut meta = tx.open_table(META_TABLE)?;
                meta.insert(index_cursor_key(&self.scope).as_str(), cursor.to_le_bytes().as_slice())?;
                INDEX_RUNS.save_run(&mut meta, &self.scope, run, in_run + n as u64)?;
            }
            if yielded {
                // The write that waits makes this pass durable with its own commit.
                tx.set_durability(Durability::None)?;
            }
            tx.commit()?;
            Ok((cursor, !exhausted))
        };
        let passed = pass();
        self.stats.background_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match passed {
            Ok((cursor, more)) => {
                tracing::debug!(
                    from = self.index_cursor,
                    to = cursor,
                    ms = started.elapsed().as_millis() as u64,
                    "index pass"
                );
                self.index_behind = self.index_behind.saturating_sub(cursor - self.index_cursor);
                self.index_cursor = cursor;
                self.index_backlog = more;
                self.index_merging = true;
                self.merge_forced = self.runs_piled_up().unwrap_or_else(|e| {
                    tracing::error!(error = %e, "counting runs failed");
                    false
                });
            }
            Err(e) => {
                // Tried again at the next idle moment; queries read the backlog meanwhile.
                tracing::error!(error = %e, "index pass failed");
            }
        }
        arrived
    }
}

impl Writer {
    /// Merges two full runs of one level into a new run of the next while any level of
    /// the index, the id table or the sealed table holds two ([`runs::RUN_LEVEL_SHIFT`]),
    /// a step of up to [`runs::MERGE_STEP`] entries per transaction. Idle: until a job
    /// arrives on `yield_to` (handed back), the store shuts down, or nothing is left to
    /// merge. `forced` (runs piled up, [`MERGE_FORCE_RUNS`]): between jobs, idle or not,
    /// until no level holds that many or jobs came meanwhile (handed back, to be done before
    /// the next step); a step then gives way only to a write that waits for its commit, and
    /// a stream's answered puts wait aside until it is done, as in a forced index pass (a
    /// constant stream would cut every step short). A trace meanwhile finds entries copied
    /// but not yet deleted twice and counts them once.
    fn merge_runs(&mut self, yield_to: &mpsc::Receiver<Job>, forced: bool) -> std::collections::VecDeque<Job> {
        let mut arrived = std::collections::VecDeque::new();
        loop {
            // Asked within a step and after it: a job that arrived ends it (unless forced
            // and the job's answer does not wait for a commit); so does a store shutting
            // down (the merge goes on at the next start).
            let mut stop = || loop {
                match yield_to.try_recv() {
                    Ok(job) => {
                        let gives_way = !forced || job.unsettled == 0;
                        arrived.push_back(job);
                        if gives_way {
                            return true;
                        }
                    }
                    Err(mpsc::TryRecvError::Disconnected) => return true,
                    Err(mpsc::TryRecvError::Empty) => return false,
                }
            };
            let started = Instant::now();
            let step = self.merge_step(&mut stop);
            self.stats.background_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            match step {
                Ok(runs::Step::Done) => {
                    let go_on = match forced {
                        true => {
                            self.merge_forced = self.runs_piled_up().unwrap_or_else(|e| {
                                tracing::error!(error = %e, "counting runs failed");
                                false
                            });
                            self.merge_forced && arrived.is_empty()
                        }
                        false => !stop(),
                    };
                    if !go_on {
                        break;
                    }
                }
                Ok(runs::Step::Stopped) => break,
                Ok(runs::Step::Nothing) => {
                    self.merge_forced = false;
                    self.index_merging = false;
                    break;
                }
                Err(e) => {
                    // Tried again after the next index pass or new run.
                    self.merge_forced = false;
                    self.index_merging = false;
                    tracing::error!(error = %e, "index merge failed");
                    break;
                }
            }
        }
        arrived
    }

    /// Whether a table in runs holds [`MERGE_FORCE_RUNS`] full runs of one level.
    fn runs_piled_up(&self) -> Result<bool, StoreError> {
        let r = self.db.begin_read()?;
        for table in [INDEX_RUNS, ID_RUNS] {
            if table.piled_up(&r, &self.scope, MERGE_FORCE_RUNS)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One step of a merge of the index's runs or, once they need none, of the id
    /// table's: committed when done, aborted when stopped.
    fn merge_step(&mut self, stop: &mut dyn FnMut() -> bool) -> Result<runs::Step, StoreError> {
        let tx = begin(&self.db, self.quick_repair)?;
        let mut step = runs::Step::Nothing;
        for table in [INDEX_RUNS, ID_RUNS] {
            step = table.merge_step(&tx, &self.scope, stop)?;
            if step != runs::Step::Nothing {
                break;
            }
        }
        match step {
            runs::Step::Done => tx.commit()?,
            runs::Step::Nothing | runs::Step::Stopped => tx.abort()?,
        }
        Ok(step)
    }
}

fn begin(db: &Database, quick_repair: bool) -> Result<WriteTransaction, StoreError> {
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate)?;
    // With quick repair, recovery after a crash reads the saved allocator state instead of
    // walking every page (50 ms instead of 5.5 s at 100k cylinders), but every commit
    // saves that state and commits in two phases (about 20% fewer durable writes per
    // second). See `StoreOptions`.
    tx.set_quick_repair(quick_repair);
    Ok(tx)
}

fn panic_message(p: &Box<dyn Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// What a write job can do inside the writer's transaction.
pub struct WriteCtx<'a> {
    tx: &'a mut WriteTransaction,
    /// Summary changes of this batch, folded in before the commit.
    summaries: &'a mut replica::SummaryDeltas,
    /// The enterprise whose replication scopes local writes go to.
    scope: &'a str,
    judge: &'a Judge,
    key: &'a SigningKey,
    node: NodeId,
    hlc: &'a mut HlcClock,
    /// Set when received events were stored without their index entries.
    deferred: &'a mut bool,
    /// Set when ids went into a new run of the id table.
    new_run: &'a mut bool,
    /// The wall clock when this job started.
    pub wall_ms: i64,
}

impl std::fmt::Debug for WriteCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteCtx").field("node", &self.node).field("wall_ms", &self.wall_ms).finish()
    }
}

impl WriteCtx<'_> {
    /// Moves this node's hybrid logical clock past a timestamp seen in a peer's event;
    /// false when it lies too far ahead of this node's wall clock to follow (see
    /// [`schema::hlc::AHEAD_MAX_MS`]).
    pub(crate) fn observe_hlc(&mut self, seen: Hlc) -> bool {
        self.hlc.observe(seen, self.wall_ms)
    }

    pub fn row(&self, code: &FullCode) -> Result<Option<CylinderRow>, StoreError> {
        let t = self.tx.open_table(CYLINDERS_TABLE)?;
        t.get(code.as_bytes())?.map(|v| CylinderRow::decode(v.value())).transpose()
    }

    pub fn operation_result(&self, op_id: &str) -> Result<Option<StoredResult>, StoreError> {
        let ops = self.tx.open_table(OPS_TABLE)?;
        let Some(v) = ops.get(op_id)? else { return Ok(None) };
        let (request_hash, id, state) = split_op(v.value())?;
        let ids = Ids::new(self.tx.open_table(ID_RUNS.def)?)?;
        let events = self.tx.open_table(EVENTS_TABLE)?;
        let key = ids.key(&id)?.ok_or_else(|| StoreError::Corrupt("operation event missing".into()))?;
        let stored =
            events.get(key.as_slice())?.ok_or_else(|| StoreError::Corrupt("operation event missing".into()))?;
        Ok(Some(StoredResult { request_hash, event: decode_keyed_event(&key, stored.value())?, state }))
    }

    /// Remembers the answer to an operation id: the event it recorded and the state after
    /// it (about 300 bytes; the response is rebuilt from them on a retry).
    pub fn put_operation_result(
        &mut self,
        op_id: &str,
        request_hash: [u8; 32],
        event: &EventId,
        state: &CylinderState,
    ) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(OPS_TABLE)?;
        let mut v = request_hash.to_vec();
        v.extend_from_slice(&event.0);
        v.extend_from_slice(&postcard::to_stdvec(state).expect("serialising to a Vec cannot fail"));
        t.insert(op_id, v.as_slice())?;
        Ok(())
    }

    /// [`Store::now_ms`] in this transaction: the wall clock, or the clock's newest time if
    /// the wall clock is behind it.
    pub fn now_ms(&self) -> i64 {
        self.wall_ms.max(self.hlc.last().physical_ms)
    }

    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.tx.open_table(META_TABLE)?;
        Ok(t.get(name)?.map(|v| v.value().to_vec()))
    }

    pub fn set_meta(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(META_TABLE)?;
        t.insert(name, value)?;
        Ok(())
    }

    /// Removes a metadata entry and returns what it held.
    pub fn take_meta(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut t = self.tx.open_table(META_TABLE)?;
        Ok(t.remove(name)?.map(|v| v.value().to_vec()))
    }

    /// Makes, signs and stores a new event from this node, and updates the derived row.
    pub fn record(
        &mut self,
        code: FullCode,
        operator: &str,
        place: &str,
        body: EventBody,
        wall_ms: i64,
    ) -> Result<(SignedEvent, CylinderRow), StoreError> {
        let hlc = self.hlc.now(wall_ms);
        self.record_with(code, operator, place, body, wall_ms, hlc, true)
    }

    /// Records an event that happened at `wall_ms` in the past (demo data, imported
    /// history): its HLC is its own time, so it sorts where it happened.
    pub fn record_backdated(
        &mut self,
        code: FullCode,
        operator: &str,
        place: &str,
        body: EventBody,
        wall_ms: i64,
    ) -> Result<(), StoreError> {
        let hlc = Hlc { physical_ms: wall_ms, logical: 0 };
        // In the past: followed.
        self.hlc.observe(hlc, self.wall_ms);
        self.record_with(code, operator, place, body, wall_ms, hlc, false).map(|_| ())
    }

    /// Signs and stores an event stamped `hlc`; `after_newest`: or just after the newest
    /// event of the cylinder held here, if that is later. The clock follows a peer's
    /// timestamps only so far ahead of the wall clock ([`schema::hlc::AHEAD_MAX_MS`]), so
    /// it alone would not put a scrap recorded here after a fill that came from a fast
    /// clock; a cylinder's derived state needs only its own events in causal order.
    #[allow(clippy::too_many_arguments)]
    fn record_with(
        &mut self,
        code: FullCode,
        operator: &str,
        place: &str,
        body: EventBody,
        wall_ms: i64,
        hlc: Hlc,
        after_newest: bool,
    ) -> Result<(SignedEvent, CylinderRow), StoreError> {
        let Some(row) = self.row(&code)? else {
            return Err(StoreError::UnknownCylinder(code));
        };
        let hlc = match row.state.last_applied {
            Some((newest, ..)) if after_newest && newest >= hlc => {
                Hlc { physical_ms: newest.physical_ms, logical: newest.logical.saturating_add(1) }
            }
            _ => hlc,
        };
        let event = Event {
            cylinder: code,
            hlc,
            wall_ms,
            node: self.node,
            operator: operator.to_owned(),
            place: place.to_owned(),
            body,
        }
        .sign(self.key);
        let row = match self.insert_event(&event)? {
            true => self.cylinder_changed(&code, &row, std::slice::from_ref(&event))?,
            false => row,
        };
        Ok((event, row))
    }

    /// Stores an event (already signed) and adds it to the replication set; false for a
    /// duplicate, which is ignored.
    fn insert_event(&mut self, event: &SignedEvent) -> Result<bool, StoreError> {
        let key = event_key(event);
        {
            // The log's key ends with the id: a stored event is found there.
            let mut events = self.tx.open_table(EVENTS_TABLE)?;
            if events.get(key.as_slice())?.is_some() {
                return Ok(false);
            }
            events.insert(key.as_slice(), log_value(event).as_slice())?;
        }
        let origin = match event.event.node == self.node {
            true => runs::Origin::Own,
            false => runs::Origin::Received,
        };
        *self.new_run |= runs::insert(&*self.tx, ID_RUNS, origin, &mut [(event.id.0, *key_head(&key)?)])?;
        {
            let mut idx = self.tx.open_table(EVENT_INDEX_TABLE)?;
            for k in index_keys(event, LIVE_RUN) {
                idx.insert(k.as_slice(), ())?;
            }
        }
        self.bump("events", 1)?;
        let scope = replica::events_scope(self.scope);
        self.update_summaries(&scope, &event.id.0, Some(&key))?;
        if event.event.node == self.node {
            self.queue_for_sealing(event)?;
        }
        Ok(true)
    }

    /// Every event of one cylinder in this transaction.
    pub(crate) fn history(&self, code: &FullCode) -> Result<Vec<SignedEvent>, StoreError> {
        let events = self.tx.open_table(EVENTS_TABLE)?;
        let (lo, hi) = prefix_range(code.as_bytes());
        let mut history = Vec::new();
        for item in events.range(lo.as_slice()..hi.as_slice())? {
            let (k, v) = item?;
            history.push(decode_keyed_event(k.value(), v.value())?);
        }
        Ok(history)
    }

    pub(crate) fn bump(&mut self, counter: &str, by: i64) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(COUNTERS_TABLE)?;
        let now = t.get(counter)?.map_or(0, |v| v.value());
        t.insert(counter, now.saturating_add_signed(by))?;
        Ok(())
    }

    pub(crate) fn put_row(
        &mut self,
        code: &FullCode,
        old: Option<&CylinderRow>,
        row: &CylinderRow,
    ) -> Result<(), StoreError> {
        let old_keys = old.map(index_entries).unwrap_or_default();
        let new_keys = index_entries(row);
        {
            let mut idx = self.tx.open_multimap_table(CYLINDER_INDEX_TABLE)?;
            for k in old_keys.iter().filter(|k| !new_keys.contains(k)) {
                idx.remove(k.as_str(), code.as_bytes())?;
            }
            for k in new_keys.iter().filter(|k| !old_keys.contains(k)) {
                idx.insert(k.as_str(), code.as_bytes())?;
            }
        }
        let mut rows = self.tx.open_table(CYLINDERS_TABLE)?;
        rows.insert(code.as_bytes(), row.encode().as_slice())?;
        Ok(())
    }

    /// Registers a cylinder: archive document, row, and a `Register` event (plus a
    /// `BindTag` event per tag, so tag issuing is traceable).
    pub fn register(
        &mut self,
        archive: CylinderArchive,
        operator: &str,
        place: &str,
    ) -> Result<(SignedEvent, CylinderRow), StoreError> {
        self.create_archive(&archive)?;
        let code = archive.full_code().map_err(|e| StoreError::Invalid(e.to_string()))?;
        let wall = self.wall_ms;
        let first = self.record(code, operator, place, EventBody::Register { owner: archive.owner.clone() }, wall)?;
        let mut last = first.1;
        for tag in &archive.tags {
            last = self.record(code, operator, place, EventBody::BindTag { tag: tag.clone() }, wall)?.1;
        }
        Ok((first.0, last))
    }

    /// [`WriteCtx::register`] for a cylinder whose registration happened at `wall_ms`.
    pub fn register_backdated(
        &mut self,
        archive: CylinderArchive,
        operator: &str,
        place: &str,
        wall_ms: i64,
    ) -> Result<(), StoreError> {
        self.create_archive(&archive)?;
        let code = archive.full_code().map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.record_backdated(code, operator, place, EventBody::Register { owner: archive.owner.clone() }, wall_ms)?;
        for tag in &archive.tags {
            self.record_backdated(code, operator, place, EventBody::BindTag { tag: tag.clone() }, wall_ms)?;
        }
        Ok(())
    }

    /// The archive document and the cylinder's first row. Checks before it writes.
    fn create_archive(&mut self, archive: &CylinderArchive) -> Result<(), StoreError> {
        archive.validate().map_err(|e| StoreError::Invalid(e.to_string()))?;
        let code = archive.full_code().map_err(|e| StoreError::Invalid(e.to_string()))?;
        if self.row(&code)?.is_some() {
            return Err(StoreError::AlreadyRegistered(code));
        }
        let doc =
            new_document(archive, self.actor(), self.wall_ms / 1000).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.save_doc(&DocId::cylinder(&code), doc)?;
        let row = CylinderRow { state: derive(archive, &[]), archive: archive.clone() };
        self.put_row(&code, None, &row)?;
        self.bump("cylinders", 1)
    }

    /// Applies an edit to a cylinder's archive document and re-derives its row.
    pub fn edit_archive(
        &mut self,
        code: &FullCode,
        edit: impl FnOnce(&mut CylinderArchive),
    ) -> Result<CylinderRow, StoreError> {
        let Some(old) = self.row(code)? else {
            return Err(StoreError::UnknownCylinder(*code));
        };
        let doc_id = DocId::cylinder(code);
        let mut doc = self.load_doc(&doc_id)?.ok_or_else(|| StoreError::Corrupt(format!("{doc_id} missing")))?;
        let mut archive: CylinderArchive = read_document(&doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        edit(&mut archive);
        archive.validate().map_err(|e| StoreError::Invalid(e.to_string()))?;
        if archive.code != old.archive.code {
            return Err(StoreError::Invalid("the code of a cylinder never changes".into()));
        }
        update_document(&mut doc, &archive, self.wall_ms / 1000).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.append_chunk(&doc_id, &mut doc)?;
        let history = self.history(code)?;
        let row = CylinderRow { state: derive(&archive, &history), archive };
        self.put_row(code, Some(&old), &row)?;
        self.refresh_anomalies(code, &row, &history)?;
        Ok(row)
    }

    /// Creates or updates a record document and its hydrated JSON.
    pub fn put_record<T: Reconcile + Hydrate + Serialize>(
        &mut self,
        doc_id: &DocId,
        value: &T,
    ) -> Result<(), StoreError> {
        match self.load_doc(doc_id)? {
            Some(mut doc) => {
                update_document(&mut doc, value, self.wall_ms / 1000)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                self.append_chunk(doc_id, &mut doc)?;
            }
            None => {
                let doc = new_document(value, self.actor(), self.wall_ms / 1000)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                self.save_doc(doc_id, doc)?;
            }
        }
        let json = serde_json::to_vec(value).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut t = self.tx.open_table(RECORDS_TABLE)?;
        t.insert(doc_id.0.as_str(), json.as_slice())?;
        Ok(())
    }

    pub(crate) fn actor(&self) -> ActorId {
        ActorId::from(&self.node.0[..16])
    }

    fn save_doc(&mut self, doc_id: &DocId, mut doc: AutoCommit) -> Result<(), StoreError> {
        self.write_snapshot(doc_id, &mut doc)
    }

    /// Stores a document as one compacted snapshot, drops its incremental chunks and
    /// moves its replication item to the new heads.
    pub(crate) fn write_snapshot(&mut self, doc_id: &DocId, doc: &mut AutoCommit) -> Result<(), StoreError> {
        let heads = doc.get_heads();
        self.write_snapshot_bytes(doc_id, &doc.save(), &heads)
    }

    /// [`WriteCtx::write_snapshot`] of bytes that load as the document with `heads`.
    pub(crate) fn write_snapshot_bytes(
        &mut self,
        doc_id: &DocId,
        bytes: &[u8],
        heads: &[automerge::ChangeHash],
    ) -> Result<(), StoreError> {
        {
            let mut docs = self.tx.open_table(DOCS_TABLE)?;
            docs.insert(doc_id.0.as_str(), bytes)?;
            let mut chunks = self.tx.open_table(DOC_CHUNKS_TABLE)?;
            let stale: Vec<u64> = chunks
                .range((doc_id.0.as_str(), 0)..=(doc_id.0.as_str(), u64::MAX))?
                .map(|r| r.map(|(k, _)| k.value().1))
                .collect::<Result<_, _>>()?;
            for seq in stale {
                chunks.remove((doc_id.0.as_str(), seq))?;
            }
        }
        self.doc_item_changed(doc_id, heads)
    }

    /// Loads a document: snapshot plus its incremental chunks.
    pub(crate) fn load_doc(&self, doc_id: &DocId) -> Result<Option<AutoCommit>, StoreError> {
        let docs = self.tx.open_table(DOCS_TABLE)?;
        let chunks = self.tx.open_table(DOC_CHUNKS_TABLE)?;
        let Some(bytes) = doc_bytes(&docs, &chunks, &doc_id.0)? else {
            return Ok(None);
        };
        let doc = AutoCommit::load(&bytes).map_err(|e| StoreError::Corrupt(format!("{doc_id}: {e}")))?;
        Ok(Some(doc.with_actor(self.actor())))
    }

    /// Appends the document's new changes as a chunk; compacts into a fresh snapshot when
    /// the chunks outgrow it (the automerge-repo rule).
    fn append_chunk(&mut self, doc_id: &DocId, doc: &mut AutoCommit) -> Result<(), StoreError> {
        let chunk = doc.save_incremental();
        if chunk.is_empty() {
            return Ok(());
        }
        let (snapshot_len, chunks_len, next_seq) = {
            let docs = self.tx.open_table(DOCS_TABLE)?;
            let snapshot_len = docs.get(doc_id.0.as_str())?.map_or(0, |v| v.value().len());
            let chunks = self.tx.open_table(DOC_CHUNKS_TABLE)?;
            let mut len = 0;
            let mut next = 0;
            for item in chunks.range((doc_id.0.as_str(), 0)..=(doc_id.0.as_str(), u64::MAX))? {
                let (k, v) = item?;
                len += v.value().len();
                next = k.value().1 + 1;
            }
            (snapshot_len, len, next)
        };
        if chunks_len + chunk.len() > snapshot_len {
            return self.write_snapshot(doc_id, doc);
        }
        {
            let mut chunks = self.tx.open_table(DOC_CHUNKS_TABLE)?;
            chunks.insert((doc_id.0.as_str(), next_seq), chunk.as_slice())?;
        }
        self.doc_item_changed(doc_id, &doc.get_heads())
    }

    /// Whether an event is stored (as of this transaction).
    pub fn event_exists(&self, id: &EventId) -> Result<bool, StoreError> {
        Ok(Ids::new(self.tx.open_table(ID_RUNS.def)?)?.get(&id.0)?.is_some())
    }
}

/// Index keys of a row.
fn index_entries(row: &CylinderRow) -> Vec<String> {
    let mut keys = vec![
        format!("status:{}", row.state.location.status()),
        format!("medium:{}", row.archive.medium.code()),
        format!("serial:{}", row.archive.serial),
        format!("owner:{}", row.archive.owner),
    ];
    if let Some(p) = row.state.location.place() {
        keys.push(format!("place:{p}"));
    }
    for t in &row.state.tags {
        keys.push(format!("tag:{t}"));
    }
    keys
}

#[cfg(test)]
mod tests;
