//! Tables kept in runs (log-structured): each key is a 4-byte big-endian run number
//! followed by the entry, and the value is empty. Writes go into one run at a time, which
//! holds a bounded number of entries, so a write dirties pages of that run only, however
//! big the table grows; a look-up reads every run. The idle writer merges two full runs of
//! one level into one of the next ([`RUN_LEVEL_SHIFT`]).
//!
//! Three tables are kept so: the traceability index (`event-index-2`, whose entries are in
//! time order per dimension, so that a one-tree index rewrote pages all over it for every
//! batch of received events), the event-id table (`event-ids-3`) and the sealed table
//! (`sealed-2`), both keyed by event id, a hash: in one tree, each batch of received ids
//! dirtied nearly every page of them.

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::StoreError;
use super::tables::{EVENT_ID_RUNS_TABLE, EVENT_INDEX_TABLE, META_TABLE, SEALED_RUNS_TABLE};

/// Bytes of the run number that leads each key.
pub(crate) const RUN_PREFIX: usize = 4;
/// The run of this node's own entries, written as they are stored; never merged.
pub(crate) const LIVE_RUN: u32 = 0;
/// A run number's level is its top byte: runs are made at level 1, and the idle writer
/// merges two full runs of one level into one of the next, so a table that took N entries
/// keeps about log2(N / run size) runs and copies each entry that many times (merging the
/// oldest runs whatever their size would copy the biggest run again for every new one).
/// The bits below number runs in the order they were made.
pub(crate) const RUN_LEVEL_SHIFT: u32 = 24;
/// Entries a merge copies or deletes in one transaction at most (about 10 ms of work, so
/// that a step a write stops is little to do again).
pub(crate) const MERGE_STEP: usize = if cfg!(test) { 64 } else { 8_192 };
/// Entries after which a merge step asks whether a write waits (it then gives way, and
/// the step is done again later).
pub(crate) const YIELD_EVERY: usize = if cfg!(test) { 16 } else { 1024 };

/// A table kept in runs, and the names of its state in `meta-1`.
#[derive(Clone, Copy)]
pub(crate) struct RunTable {
    pub def: TableDefinition<'static, &'static [u8], ()>,
    /// `<name>_run:<scope>`: the run being filled and its entries; `<name>_merge:<scope>`:
    /// a merge in progress.
    name: &'static str,
    /// Whether the table is per events scope (the index) or one for the node (ids).
    scoped: bool,
}

/// The traceability index (`EVENT_INDEX_TABLE`).
pub(crate) const INDEX_RUNS: RunTable = RunTable { def: EVENT_INDEX_TABLE, name: "index", scoped: true };
/// The event-id table (`EVENT_ID_RUNS_TABLE`).
pub(crate) const ID_RUNS: RunTable = RunTable { def: EVENT_ID_RUNS_TABLE, name: "ids", scoped: false };
/// The sealed table (`SEALED_RUNS_TABLE`).
pub(crate) const SEALED_RUNS: RunTable = RunTable { def: SEALED_RUNS_TABLE, name: "sealed", scoped: false };

impl RunTable {
    fn meta_key(&self, what: &str, enterprise: &str) -> String {
        match self.scoped {
            true => format!("{}_{what}:{}", self.name, super::replica::events_scope(enterprise)),
            false => format!("{}_{what}", self.name),
        }
    }

    pub(crate) fn run_key(&self, enterprise: &str) -> String {
        self.meta_key("run", enterprise)
    }

    pub(crate) fn merge_key(&self, enterprise: &str) -> String {
        self.meta_key("merge", enterprise)
    }

    /// The run being filled and the entries it holds ((0, 0): none yet).
    pub(crate) fn saved_run(
        &self,
        meta: &impl ReadableTable<&'static str, &'static [u8]>,
        enterprise: &str,
    ) -> Result<(u32, u64), StoreError> {
        let Some(v) = meta.get(self.run_key(enterprise).as_str())? else { return Ok((LIVE_RUN, 0)) };
        v.value()
            .split_first_chunk::<4>()
            .and_then(|(run, n)| Some((u32::from_le_bytes(*run), u64::from_le_bytes(n.try_into().ok()?))))
            .ok_or_else(|| StoreError::Corrupt(format!("{} run length", self.name)))
    }

    pub(crate) fn save_run(
        &self,
        meta: &mut Table<&'static str, &'static [u8]>,
        enterprise: &str,
        run: u32,
        entries: u64,
    ) -> Result<(), StoreError> {
        let mut saved = run.to_le_bytes().to_vec();
        saved.extend_from_slice(&entries.to_le_bytes());
        meta.insert(self.run_key(enterprise).as_str(), saved.as_slice())?;
        Ok(())
    }

    /// The run to write into and the entries it holds: the one being filled while it
    /// holds fewer than `size`, else a new one of level 1.
    pub(crate) fn filling(&self, tx: &WriteTransaction, enterprise: &str, size: u64) -> Result<(u32, u64), StoreError> {
        match self.saved_run(&tx.open_table(META_TABLE)?, enterprise)? {
            (run, entries) if run != LIVE_RUN && entries < size => Ok((run, entries)),
            (run, _) => {
                let mut runs = runs_in(&tx.open_table(self.def)?)?;
                runs.push(run);
                Ok((new_run(1, &runs), 0))
            }
        }
    }

    /// Full runs per level (this node's own run and the run being filled are not full).
    pub(crate) fn full_runs(
        &self,
        r: &redb::ReadTransaction,
        enterprise: &str,
    ) -> Result<std::collections::BTreeMap<u32, usize>, StoreError> {
        let (filling, _) = self.saved_run(&r.open_table(META_TABLE)?, enterprise)?;
        let mut per_level = std::collections::BTreeMap::new();
        for run in runs_in(&r.open_table(self.def)?)? {
            if run != LIVE_RUN && run != filling {
                *per_level.entry(run_level(run)).or_default() += 1;
            }
        }
        Ok(per_level)
    }

    /// Whether one level holds `at` full runs or more.
    pub(crate) fn piled_up(&self, r: &redb::ReadTransaction, enterprise: &str, at: usize) -> Result<bool, StoreError> {
        Ok(self.full_runs(r, enterprise)?.values().any(|n| *n >= at))
    }

    /// One step of a merge of two full runs of one level into a new run of the next,
    /// starting one if a level holds two. `stop` is asked every [`YIELD_EVERY`] entries; when
    /// it says so the step ends at once with [`Step::Stopped`], its writes half done: the
    /// caller aborts the transaction (a write waits, and committing the step would make
    /// that write's commit flush the step's pages). A reader meanwhile finds entries copied
    /// but not yet deleted in two runs and takes them once.
    pub(crate) fn merge_step(
        &self,
        tx: &WriteTransaction,
        enterprise: &str,
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<Step, StoreError> {
        let mut meta = tx.open_table(META_TABLE)?;
        let mut table = tx.open_table(self.def)?;
        let key = self.merge_key(enterprise);
        let saved = meta.get(key.as_str())?.map(|v| Merge::decode(v.value())).transpose()?;
        let mut merge = match saved {
            Some(merge) => merge,
            None => {
                let (filling, _) = self.saved_run(&meta, enterprise)?;
                let mut runs = runs_in(&table)?;
                let full: Vec<u32> = runs.iter().copied().filter(|r| *r != LIVE_RUN && *r != filling).collect();
                // The two first full runs of the lowest level that holds two.
                let pair = (1..=u8::MAX.into()).find_map(|level| {
                    let mut of_level = full.iter().filter(|r| run_level(**r) == level);
                    Some([*of_level.next()?, *of_level.next()?])
                });
                let Some(from) = pair else { return Ok(Step::Nothing) };
                runs.push(filling);
                let into = new_run(run_level(from[0]) + 1, &runs);
                Merge { from, into, deleting: false, after: Vec::new() }
            }
        };
        if merge.deleting {
            let mut left = MERGE_STEP;
            for run in merge.from {
                let (lo, hi) = run_range(run, &[]);
                for item in table.extract_from_if(lo.as_slice()..hi.as_slice(), |_, _| true)?.take(left) {
                    item?;
                    left -= 1;
                    if left.is_multiple_of(YIELD_EVERY) && stop() {
                        return Ok(Step::Stopped);
                    }
                }
            }
            if left > 0 {
                // Both runs are gone.
                meta.remove(key.as_str())?;
                tracing::debug!(table = self.name, from = ?merge.from, into = merge.into, "runs merged");
            } else {
                meta.insert(key.as_str(), merge.encode().as_slice())?;
            }
        } else {
            // The next entries of the two runs, in key order without the run.
            let mut next: Vec<Vec<u8>> = Vec::with_capacity(2 * MERGE_STEP);
            for run in merge.from {
                let (lo, hi) = run_range(run, &merge.after);
                for item in table.range(lo.as_slice()..hi.as_slice())?.take(MERGE_STEP) {
                    next.push(without_run(item?.0.value())?.to_vec());
                }
            }
            next.sort_unstable();
            next.dedup();
            // Past the step, a run may hold keys before ones not read from the other.
            let whole = next.len() < MERGE_STEP;
            next.truncate(MERGE_STEP);
            let mut into = merge.into.to_be_bytes().to_vec();
            for (i, k) in next.iter().enumerate() {
                into.truncate(RUN_PREFIX);
                into.extend_from_slice(k);
                table.insert(into.as_slice(), ())?;
                if (i + 1).is_multiple_of(YIELD_EVERY) && stop() {
                    return Ok(Step::Stopped);
                }
            }
            match next.last() {
                Some(last) if !whole => merge.after = last.clone(),
                _ => merge.deleting = true,
            }
            meta.insert(key.as_str(), merge.encode().as_slice())?;
        }
        Ok(Step::Done)
    }
}

/// What a merge step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// No level holds two full runs: nothing to merge.
    Nothing,
    /// A step's worth merged: commit it.
    Done,
    /// Told to stop midway: abort the transaction.
    Stopped,
}

/// The run a key is in.
pub(crate) fn run_of(key: &[u8]) -> Result<u32, StoreError> {
    Ok(u32::from_be_bytes(*split_run(key)?.0))
}

/// A key without its run: what two runs holding the same entry have in common.
pub(crate) fn without_run(key: &[u8]) -> Result<&[u8], StoreError> {
    Ok(split_run(key)?.1)
}

fn split_run(key: &[u8]) -> Result<(&[u8; RUN_PREFIX], &[u8]), StoreError> {
    key.split_first_chunk::<RUN_PREFIX>().ok_or_else(|| StoreError::Corrupt("a key without a run".into()))
}

/// The runs a table holds entries in, in order: one look-up per run.
pub(crate) fn runs_in(table: &impl ReadableTable<&'static [u8], ()>) -> Result<Vec<u32>, StoreError> {
    let mut runs = Vec::new();
    let mut from = LIVE_RUN.to_be_bytes();
    while let Some(item) = table.range::<&[u8]>(from.as_slice()..)?.next() {
        let run = run_of(item?.0.value())?;
        runs.push(run);
        match run.checked_add(1) {
            Some(next) => from = next.to_be_bytes(),
            None => break,
        }
    }
    Ok(runs)
}

pub(crate) fn run_level(run: u32) -> u32 {
    run >> RUN_LEVEL_SHIFT
}

/// A new run of `level`, numbered after each of `runs`.
pub(crate) fn new_run(level: u32, runs: &[u32]) -> u32 {
    let mask = (1 << RUN_LEVEL_SHIFT) - 1;
    let last = runs.iter().map(|r| r & mask).max().unwrap_or(0);
    (level << RUN_LEVEL_SHIFT) | last.saturating_add(1).min(mask)
}

/// The keys of `run` after `after` (a key without its run; empty: from the start).
fn run_range(run: u32, after: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut from = run.to_be_bytes().to_vec();
    if !after.is_empty() {
        from.extend_from_slice(after);
        from.push(0);
    }
    (from, run.saturating_add(1).to_be_bytes().to_vec())
}

/// A merge of two runs into a new one, as saved in `meta-1` between steps: the entries of
/// `from` are copied into `into` in key order up to `after`, then deleted.
struct Merge {
    from: [u32; 2],
    into: u32,
    deleting: bool,
    after: Vec<u8>,
}

impl Merge {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(13 + self.after.len());
        for run in [self.from[0], self.from[1], self.into] {
            v.extend_from_slice(&run.to_le_bytes());
        }
        v.push(u8::from(self.deleting));
        v.extend_from_slice(&self.after);
        v
    }

    fn decode(v: &[u8]) -> Result<Merge, StoreError> {
        let bad = || StoreError::Corrupt("run merge state".into());
        let run = |at: usize| -> Result<u32, StoreError> {
            Ok(u32::from_le_bytes(v.get(at..at + 4).and_then(|b| b.try_into().ok()).ok_or_else(bad)?))
        };
        let deleting = match v.get(12) {
            Some(0) => false,
            Some(1) => true,
            _ => return Err(bad()),
        };
        let after = v.get(13..).ok_or_else(bad)?.to_vec();
        Ok(Merge { from: [run(0)?, run(4)?], into: run(8)?, deleting, after })
    }
}

/// Ids per run of level 1 of the id table and of the sealed table: a batch of received
/// ids dirties pages of one run of this many entries (about 16 MiB) instead of pages all
/// over the whole table.
pub(crate) const RUN_IDS: u64 = if cfg!(test) { 40 } else { 1 << 18 };
/// Bytes of an event key before its id (cylinder code ++ HLC), which the id table keeps.
pub(crate) const HEAD: usize = 28;

/// A table in runs as a map: each entry is a key of `K` bytes followed by its value of
/// `V` bytes.
pub(crate) struct Keyed<T, const K: usize, const V: usize> {
    table: T,
    /// Newest first: a look-up of a key just stored finds it in the first run.
    runs: Vec<u32>,
}

/// The id table: event id → the head of its key in the log.
pub(crate) type Ids<T> = Keyed<T, 32, HEAD>;

impl<T: ReadableTable<&'static [u8], ()>, const K: usize, const V: usize> Keyed<T, K, V> {
    pub(crate) fn new(table: T) -> Result<Self, StoreError> {
        let mut runs = runs_in(&table)?;
        let mask = (1 << RUN_LEVEL_SHIFT) - 1;
        runs.sort_unstable_by_key(|r| std::cmp::Reverse(r & mask));
        Ok(Keyed { table, runs })
    }

    /// The value of `key`, if stored: one look-up per run.
    pub(crate) fn get(&self, key: &[u8; K]) -> Result<Option<[u8; V]>, StoreError> {
        let (mut lo, mut hi) = (Vec::with_capacity(RUN_PREFIX + K + V), Vec::with_capacity(RUN_PREFIX + K + V));
        for &run in &self.runs {
            entry_into(&mut lo, run, key, &[0; V]);
            entry_into(&mut hi, run, key, &[0xff; V]);
            if let Some(item) = self.table.range::<&[u8]>(lo.as_slice()..=hi.as_slice())?.next() {
                return Ok(Some(split_entry::<K, V>(item?.0.value())?.1));
            }
        }
        Ok(None)
    }

    /// The stored keys from `lo` to `hi` (both included), in order.
    pub(crate) fn between(&self, lo: &[u8; K], hi: &[u8; K]) -> Result<Vec<[u8; K]>, StoreError> {
        let mut out = Vec::new();
        let (mut from, mut to) = (Vec::new(), Vec::new());
        for &run in &self.runs {
            entry_into(&mut from, run, lo, &[0; V]);
            entry_into(&mut to, run, hi, &[0xff; V]);
            for item in self.table.range::<&[u8]>(from.as_slice()..=to.as_slice())? {
                out.push(split_entry::<K, V>(item?.0.value())?.0);
            }
        }
        // A key is in two runs while a merge copies it.
        if self.runs.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        Ok(out)
    }
}

impl<T: ReadableTable<&'static [u8], ()>> Ids<T> {
    /// The event key of `id`, if the event is stored.
    pub(crate) fn key(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get(id)?.map(|head| super::key_of(&head, id)))
    }

    /// The event keys of the stored events whose id starts with `prefix` (a seal lists
    /// ids by their first 16 bytes), in order, each once.
    pub(crate) fn keys_with_prefix(&self, prefix: &[u8; 16]) -> Result<Vec<Vec<u8>>, StoreError> {
        let (mut lo, mut hi) = ([0; 32], [0xff; 32]);
        lo[..16].copy_from_slice(prefix);
        hi[..16].copy_from_slice(prefix);
        let (mut from, mut to) = (Vec::new(), Vec::new());
        let mut out = Vec::new();
        for &run in &self.runs {
            entry_into(&mut from, run, &lo, &[0; HEAD]);
            entry_into(&mut to, run, &hi, &[0xff; HEAD]);
            for item in self.table.range::<&[u8]>(from.as_slice()..=to.as_slice())? {
                let (id, head) = split_entry::<32, HEAD>(item?.0.value())?;
                out.push(super::key_of(&head, &id));
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

/// Where entries go: this node's own (its events and seals) into [`LIVE_RUN`], one tree
/// never merged, as they come one write at a time; a peer's into the filling run of
/// level 1, as they come in bulk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Own,
    Received,
}

/// Adds entries to `table`, in the run their origin says (runs of level 1 hold
/// [`RUN_IDS`]); says whether a new run was started (the idle writer may have two to
/// merge).
pub(crate) fn insert<const K: usize, const V: usize>(
    tx: &WriteTransaction,
    table: RunTable,
    origin: Origin,
    entries: &mut [([u8; K], [u8; V])],
) -> Result<bool, StoreError> {
    if entries.is_empty() {
        return Ok(false);
    }
    let (run, held) = match origin {
        Origin::Own => (LIVE_RUN, 0),
        Origin::Received => table.filling(tx, "", RUN_IDS)?,
    };
    // In key order, each page of the run is dirtied once per batch.
    entries.sort_unstable();
    {
        let mut t = tx.open_table(table.def)?;
        let mut key = Vec::with_capacity(RUN_PREFIX + K + V);
        for (k, v) in entries.iter() {
            entry_into(&mut key, run, k, v);
            t.insert(key.as_slice(), ())?;
        }
    }
    if origin == Origin::Own {
        return Ok(false);
    }
    table.save_run(&mut tx.open_table(META_TABLE)?, "", run, held + entries.len() as u64)?;
    Ok(held == 0)
}

fn entry_into<const K: usize, const V: usize>(out: &mut Vec<u8>, run: u32, key: &[u8; K], value: &[u8; V]) {
    out.clear();
    out.extend_from_slice(&run.to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

fn split_entry<const K: usize, const V: usize>(entry: &[u8]) -> Result<([u8; K], [u8; V]), StoreError> {
    let bad = || StoreError::Corrupt(format!("an entry of {} bytes, not {}", entry.len(), RUN_PREFIX + K + V));
    let (key, value) = without_run(entry)?.split_first_chunk::<K>().ok_or_else(bad)?;
    Ok((*key, value.try_into().map_err(|_| bad())?))
}

/// Converts a table of one tree (layout 5's `event-ids-2` and `sealed-1`) into
/// [`LIVE_RUN`] of `table` (one tree, as before; what comes later from peers goes into
/// runs), and drops the old table. The keys come in order, so the run is written front to
/// back.
pub(crate) fn migrate<const K: usize, const V: usize>(
    tx: &WriteTransaction,
    old: TableDefinition<&'static [u8; K], &'static [u8; V]>,
    table: RunTable,
) -> Result<u64, StoreError> {
    let mut rows = 0u64;
    {
        let from = tx.open_table(old)?;
        let mut into = tx.open_table(table.def)?;
        let mut key = Vec::with_capacity(RUN_PREFIX + K + V);
        for item in from.iter()? {
            let (k, v) = item?;
            entry_into(&mut key, LIVE_RUN, k.value(), v.value());
            into.insert(key.as_slice(), ())?;
            rows += 1;
        }
    }
    tx.delete_table(old)?;
    Ok(rows)
}
