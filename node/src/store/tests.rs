//! Store tests on a real redb file: group commit, durability across reopen, document
//! chunks and compaction, a panicking job.

use std::sync::Arc;

use schema::archive::CylinderArchive;
use schema::event::EventBody;

use super::runs::{RUN_LEVEL_SHIFT, run_level, run_of};
use super::*;
use crate::clock::ManualClock;

fn archive(n: u32) -> CylinderArchive {
    CylinderArchive::example(&format!("370102010100{n:04}"))
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at(1_795_579_200_000))
}

fn options() -> StoreOptions {
    StoreOptions {
        enterprise: "3701020001".into(),
        cache_bytes: 8 << 20,
        quick_repair: true,
        judge: schema::anomaly::Judge::embedded("3701020001"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    let store = Store::open(&path, options(), clock()).unwrap();
    let node = store.node_id();
    store.write(|ctx| ctx.register(archive(1), "k", "p").map(|_| ())).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..300u64 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store
                .write(move |ctx| {
                    let code: FullCode = "3701020101000001".parse().unwrap();
                    let wall = ctx.wall_ms;
                    ctx.record(code, "f", "p", EventBody::Repair { description: format!("r{i}") }, wall)
                        .map(|(e, _)| e.id)
                })
                .await
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap().unwrap());
    }
    let commits = store.stats().commits.load(Ordering::Relaxed);
    let jobs = store.stats().jobs.load(Ordering::Relaxed);
    assert_eq!(jobs, 301);
    assert!(commits < jobs, "group commit: {commits} commits for {jobs} jobs");
    store.shutdown();

    // Everything acknowledged is there after reopening, with the same identity.
    let store = Store::open(&path, options(), clock()).unwrap();
    assert_eq!(store.node_id(), node);
    let code: FullCode = "3701020101000001".parse().unwrap();
    let events = store.events_of(&code, usize::MAX).unwrap();
    for id in &ids {
        assert!(events.iter().any(|e| e.id == *id));
    }
    assert_eq!(store.counts().unwrap(), (1, 301), "register + 300 repairs");
    assert_eq!(store.cylinder(&code).unwrap().unwrap().state.n_events, 301);
    // HLCs are strictly increasing across the whole run.
    let mut hlcs: Vec<_> = events.iter().map(|e| e.event.hlc).collect();
    let before = hlcs.clone();
    hlcs.sort();
    hlcs.dedup();
    assert_eq!(hlcs, before);
}

#[tokio::test]
async fn archive_edits_append_chunks_then_compact() {
    let store = Store::in_memory(clock()).unwrap();
    store.write(|ctx| ctx.register(archive(2), "k", "p").map(|_| ())).await.unwrap();
    let code: FullCode = "3701020101000002".parse().unwrap();
    for i in 0..40 {
        let row = store.write(move |ctx| ctx.edit_archive(&code, |a| a.maker = format!("maker {i}"))).await.unwrap();
        assert_eq!(row.archive.maker, format!("maker {i}"));
    }
    let r = store.db.begin_read().unwrap();
    let chunks = r.open_table(DOC_CHUNKS_TABLE).unwrap();
    let n_chunks = chunks.iter().unwrap().count();
    let docs = r.open_table(DOCS_TABLE).unwrap();
    let snapshot = docs.get("cyl:3701020101000002").unwrap().unwrap().value().len();
    let chunk_bytes: usize = chunks.iter().unwrap().map(|c| c.unwrap().1.value().len()).sum();
    assert!(n_chunks < 40, "compaction happened: {n_chunks} chunks left");
    assert!(chunk_bytes <= snapshot, "chunks ({chunk_bytes} B) never outgrow the snapshot ({snapshot} B)");
    // The edit is refused when it breaks the record, and changes nothing.
    let err = store.write(move |ctx| ctx.edit_archive(&code, |a| a.water_volume_l = -1.0)).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)));
    assert_eq!(store.cylinder(&code).unwrap().unwrap().archive.maker, "maker 39");
}

#[tokio::test]
async fn a_panicking_job_fails_alone_and_the_writer_goes_on() {
    let store = Store::in_memory(clock()).unwrap();
    let err = store.write(|_ctx| -> Result<(), StoreError> { panic!("boom") }).await.unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    store.write(|ctx| ctx.register(archive(3), "k", "p").map(|_| ())).await.unwrap();
    assert_eq!(store.counts().unwrap().0, 1);
}

/// Marks the file as of layout `n`, as an older node left it: the two-byte summary level
/// back in layout 7's row per prefix (`sync-summary-2-1`), and for layouts 1 to 6 the
/// change sequence in its one-row-per-entry form (`item-seq-2`).
fn set_layout(tx: &redb::WriteTransaction, n: u64) {
    assert!(n < LAYOUT);
    tx.open_table(META_TABLE).unwrap().insert("layout", n.to_le_bytes().as_slice()).unwrap();
    {
        let new = tx.open_table(SUMMARY_L2_TABLE).unwrap();
        let mut old = tx.open_table(SUMMARY_L2_V1_TABLE).unwrap();
        for row in new.iter().unwrap() {
            let (k, v) = row.unwrap();
            let (scope, first) = k.value();
            for (second, summary) in v.value().chunks(40).enumerate() {
                let prefix = u16::from_be_bytes([first, second as u8]);
                old.insert((scope, prefix), <&[u8; 40]>::try_from(summary).unwrap()).unwrap();
            }
        }
    }
    tx.delete_table(SUMMARY_L2_TABLE).unwrap();
    if n == 7 {
        return;
    }
    {
        let new = tx.open_table(CHANGES_TABLE).unwrap();
        let mut old = tx.open_table(ITEM_SEQ_V2_TABLE).unwrap();
        let scopes: std::collections::BTreeSet<String> =
            new.iter().unwrap().map(|row| row.unwrap().0.value().0.to_owned()).collect();
        for scope in scopes {
            for entry in changes::entries(&new, &scope, 1, u64::MAX).unwrap() {
                let (seq, change) = entry.unwrap();
                old.insert((scope.as_str(), seq), change.as_slice()).unwrap();
            }
        }
    }
    tx.delete_table(CHANGES_TABLE).unwrap();
}

/// Writes the log back in layout 2's form (`events-1`: signature or 64 zero bytes, then
/// the canonical bytes), as an older node left it; the events of `sealed` get zero bytes,
/// as received under a seal. Returns each row in that form.
fn downgrade_log(tx: &redb::WriteTransaction, sealed: &[u32]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rows = Vec::new();
    {
        let new = tx.open_table(EVENTS_TABLE).unwrap();
        let mut old = tx.open_table(EVENTS_V1_TABLE).unwrap();
        for row in new.iter().unwrap() {
            let (k, v) = row.unwrap();
            let mut stored = stored_of_log(v.value()).unwrap();
            if sealed.iter().any(|n| k.value().starts_with(archive(*n).code.as_bytes())) {
                stored[..64].copy_from_slice(&replica::NO_SIGNATURE);
            }
            old.insert(k.value(), stored.as_slice()).unwrap();
            rows.push((k.value().to_vec(), stored));
        }
    }
    tx.delete_table(EVENTS_TABLE).unwrap();
    rows
}

/// Writes the sealed events back in layout 8's form (log values led by byte 0, with no
/// seal named; `sealed-2` listing each id of every stored seal under its signer, in run 0;
/// no `signed-unsealed-1`), as an older node left them.
fn downgrade_seal_refs(tx: &redb::WriteTransaction) {
    let mut entries = Vec::new();
    {
        let items = tx.open_table(SYNC_ITEMS_TABLE).unwrap();
        for row in items.iter().unwrap() {
            let (k, v) = row.unwrap();
            if replica::ScopeKind::of(k.value().0) == replica::ScopeKind::Seals {
                let seal = schema::seal::Seal::decode(v.value()).unwrap();
                entries.extend(seal.ids.iter().map(|id| [&LIVE_RUN.to_be_bytes()[..], id, &seal.signer.0].concat()));
            }
        }
    }
    {
        let mut t = tx.open_table(runs::SEALED_RUNS.def).unwrap();
        for entry in &entries {
            t.insert(entry.as_slice(), ()).unwrap();
        }
        let mut log = tx.open_table(EVENTS_TABLE).unwrap();
        let rows: Vec<(Vec<u8>, Vec<u8>)> =
            log.iter().unwrap().map(|r| r.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())).unwrap()).collect();
        for (k, v) in rows {
            if v[0] == LOG_SEALED_BY {
                log.insert(k.as_slice(), [&[LOG_SEALED][..], &v[33..]].concat().as_slice()).unwrap();
            }
        }
    }
    tx.delete_table(SIGNED_UNSEALED_TABLE).unwrap();
}

/// Writes the id and sealed tables back in layout 5's form (`event-ids-2`, `sealed-1`:
/// one tree each), as an older node left them.
fn downgrade_id_runs(tx: &redb::WriteTransaction) {
    downgrade_seal_refs(tx);
    {
        let runs = runs::Ids::new(tx.open_table(ID_RUNS.def).unwrap()).unwrap();
        let mut old = tx.open_table(EVENT_IDS_V2_TABLE).unwrap();
        for id in runs.between(&[0; 32], &[0xff; 32]).unwrap() {
            old.insert(&id, &runs.get(&id).unwrap().unwrap()).unwrap();
        }
        let sealed = tx.open_table(runs::SEALED_RUNS.def).unwrap();
        let mut old = tx.open_table(SEALED_V1_TABLE).unwrap();
        for entry in sealed.iter().unwrap() {
            let entry = entry.unwrap().0.value().to_vec();
            let (id, signer) = entry[4..].split_at(16);
            old.insert(&<[u8; 16]>::try_from(id).unwrap(), &<[u8; 32]>::try_from(signer).unwrap()).unwrap();
        }
    }
    tx.delete_table(ID_RUNS.def).unwrap();
    tx.delete_table(runs::SEALED_RUNS.def).unwrap();
    let mut meta = tx.open_table(META_TABLE).unwrap();
    meta.remove(ID_RUNS.run_key("").as_str()).unwrap();
    meta.remove(runs::SEALED_RUNS.run_key("").as_str()).unwrap();
}

/// Writes the id table back in layout 3's form (`event-ids-1`: each id's whole event
/// key), as an older node left it.
fn downgrade_ids(tx: &redb::WriteTransaction) {
    downgrade_id_runs(tx);
    {
        let new = tx.open_table(EVENT_IDS_V2_TABLE).unwrap();
        let mut old = tx.open_table(EVENT_IDS_V1_TABLE).unwrap();
        for row in new.iter().unwrap() {
            let (id, head) = row.unwrap();
            old.insert(id.value(), key_of(head.value(), id.value()).as_slice()).unwrap();
        }
    }
    tx.delete_table(EVENT_IDS_V2_TABLE).unwrap();
}

/// The file at `path`, opened, with cylinders 1 to `n` registered in it.
fn with_cylinders(path: &Path, n: u32) -> Store {
    let store = Store::open(path, options(), clock()).unwrap();
    register(&store, 1..=n);
    store
}

/// Registers the example cylinders numbered `numbers` at `store`.
fn register(store: &Store, numbers: std::ops::RangeInclusive<u32>) {
    store
        .write_blocking(move |ctx| {
            for i in numbers {
                ctx.register(archive(i), "k", "p")?;
            }
            Ok(())
        })
        .unwrap();
}

/// Changes of a scope (number, item) and the items a push of them reads.
type Pushed = (Vec<(u64, [u8; 32])>, Vec<Vec<u8>>);

/// A file with three registered cylinders, and what a push of its events scope reads.
fn three_cylinders(path: &Path) -> Pushed {
    use sync::store::ItemStore;
    let scope = replica::events_scope("3701020001");
    let store = with_cylinders(path, 3);
    let replica = replica::Replica::new(store.clone());
    let before = replica.changes_after(scope.as_bytes(), 0, usize::MAX).unwrap();
    let items = replica.get_changes(scope.as_bytes(), &before).unwrap();
    drop(replica);
    store.shutdown();
    assert_eq!(before.len(), 3);
    (before, items)
}

/// [`three_cylinders`], then the file marked as of `layout` (its change sequence in that
/// layout's form) and `downgrade` run on it, in one transaction.
fn three_cylinders_at_layout(path: &Path, layout: u64, downgrade: impl FnOnce(&redb::WriteTransaction)) -> Pushed {
    let three = three_cylinders(path);
    let db = Database::create(path).unwrap();
    let tx = db.begin_write().unwrap();
    set_layout(&tx, layout);
    downgrade(&tx);
    tx.commit().unwrap();
    three
}

fn table_names(r: &redb::ReadTransaction) -> Vec<String> {
    r.list_tables().unwrap().map(|t| redb::TableHandle::name(&t).to_owned()).collect()
}

/// Layout 1 kept ids in the change sequence; opening such a file converts it to the
/// current layout (event keys for the events scope), and pushes read the same changes as
/// before.
#[test]
fn a_layout_1_file_is_converted_on_open() {
    use sync::store::ItemStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    let scope = replica::events_scope("3701020001");
    // Back to layout 1, as an older node left it.
    let (before, items) = three_cylinders_at_layout(&path, 1, |tx| {
        {
            let new = tx.open_table(ITEM_SEQ_V2_TABLE).unwrap();
            let mut old = tx.open_table(ITEM_SEQ_V1_TABLE).unwrap();
            for row in new.iter().unwrap() {
                let (k, v) = row.unwrap();
                let v = v.value();
                let id: [u8; 32] = v[v.len() - 32..].try_into().unwrap();
                old.insert(k.value(), &id).unwrap();
            }
        }
        tx.delete_table(ITEM_SEQ_V2_TABLE).unwrap();
        downgrade_log(tx, &[]);
        downgrade_ids(tx);
    });
    let store = Store::open(&path, options(), clock()).unwrap();
    let replica = replica::Replica::new(store.clone());
    let after = replica.changes_after(scope.as_bytes(), 0, usize::MAX).unwrap();
    assert_eq!(after, before);
    assert_eq!(replica.get_changes(scope.as_bytes(), &after).unwrap(), items);
    let r = store.db.begin_read().unwrap();
    let layout = r.open_table(META_TABLE).unwrap().get("layout").unwrap().unwrap().value().to_vec();
    assert_eq!(layout, LAYOUT.to_le_bytes());
    let names = table_names(&r);
    let old = ["item-seq-1", "item-seq-2", "events-1", "event-ids-1"];
    assert!(!names.iter().any(|n| old.contains(&n.as_str())), "{names:?}");
    // Every event-scope entry holds the event's key in the log.
    let seqs = r.open_table(CHANGES_TABLE).unwrap();
    let events = r.open_table(EVENTS_TABLE).unwrap();
    for entry in changes::entries(&seqs, &scope, 1, u64::MAX).unwrap() {
        let (_, key) = entry.unwrap();
        assert!(events.get(key.as_slice()).unwrap().is_some());
    }
}

/// Layout 6 kept one row per change; opening such a file packs them (`item-seq-3`), and
/// pushes read the same changes as before, with a new change numbered after them.
#[test]
fn a_layout_6_change_sequence_is_packed_on_open() {
    use sync::store::ItemStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    let scope = replica::events_scope("3701020001");
    let (before, items) = three_cylinders_at_layout(&path, 6, |_| {});
    let store = Store::open(&path, options(), clock()).unwrap();
    let replica = replica::Replica::new(store.clone());
    assert_eq!(replica.changes_after(scope.as_bytes(), 0, usize::MAX).unwrap(), before);
    assert_eq!(replica.get_changes(scope.as_bytes(), &before).unwrap(), items);
    {
        let r = store.db.begin_read().unwrap();
        assert!(!table_names(&r).contains(&"item-seq-2".to_owned()));
        let layout = r.open_table(META_TABLE).unwrap().get("layout").unwrap().unwrap().value().to_vec();
        assert_eq!(layout, LAYOUT.to_le_bytes());
    }
    store.write_blocking(|ctx| ctx.register(archive(4), "k", "p").map(|_| ())).unwrap();
    let after = replica.changes_after(scope.as_bytes(), 0, usize::MAX).unwrap();
    assert_eq!(after[..3], before[..]);
    assert_eq!(after.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
}

/// Checks every pre-aggregated summary a peer can ask for (the whole scope, each first
/// byte, each two-byte prefix, and the children of the first two) against the items it
/// counts, for the events and the documents scopes.
fn assert_summaries_count_their_items(store: &Store) {
    use sync::fingerprint::Summary;
    use sync::store::ItemStore;
    let replica = replica::Replica::new(store.clone());
    for scope in [replica::events_scope("3701020001"), replica::docs_scope("3701020001")] {
        let scope = scope.as_bytes();
        let ids = replica.ids(scope, &[]).unwrap();
        assert!(!ids.is_empty());
        for len in [0, 1, 2] {
            let prefixes: std::collections::BTreeSet<&[u8]> = ids.iter().map(|id| &id[..len]).collect();
            for prefix in prefixes {
                let under: Vec<_> = ids.iter().filter(|id| id.starts_with(prefix)).copied().collect();
                assert_eq!(replica.summary(scope, prefix).unwrap(), Summary::of(under.iter().copied()), "{prefix:?}");
                let mut children: Vec<(u8, Summary)> = Vec::new();
                for id in &under {
                    match children.last_mut() {
                        Some((b, s)) if *b == id[len] => s.add(id),
                        _ => children.push((id[len], Summary::of([*id]))),
                    }
                }
                assert_eq!(replica.children(scope, prefix).unwrap(), children, "{prefix:?}");
            }
        }
    }
}

/// Layout 7 kept a row per two-byte prefix of the summaries; opening such a file packs
/// them 256 to a row, and every summary reads as before, also after a new write.
#[test]
fn a_layout_7_summary_level_is_packed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    three_cylinders_at_layout(&path, 7, |_| {});
    let store = Store::open(&path, options(), clock()).unwrap();
    {
        let r = store.db.begin_read().unwrap();
        assert!(!table_names(&r).contains(&"sync-summary-2-1".to_owned()));
        assert!(r.open_table(SUMMARY_L2_TABLE).unwrap().len().unwrap() > 0);
        let layout = r.open_table(META_TABLE).unwrap().get("layout").unwrap().unwrap().value().to_vec();
        assert_eq!(layout, LAYOUT.to_le_bytes());
    }
    assert_summaries_count_their_items(&store);
    store.write_blocking(|ctx| ctx.register(archive(4), "k", "p").map(|_| ())).unwrap();
    assert_summaries_count_their_items(&store);
}

/// Packing keeps every change of every scope under its number: rows of at most
/// `changes::ROW_ENTRIES`, a new row where the numbers or the widths break.
#[test]
fn packing_a_change_sequence_keeps_every_entry_under_its_number() {
    let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
    let entry = |tag: u8, seq: u64, width: usize| {
        let mut e = vec![tag; width];
        e[..8].copy_from_slice(&seq.to_be_bytes());
        e
    };
    let mut want: Vec<(&str, u64, Vec<u8>)> = (1..=2500).map(|seq| ("E:a", seq, entry(1, seq, 60))).collect();
    want.extend([("D:a", 1, entry(2, 1, 32)), ("D:a", 2, entry(2, 2, 32)), ("D:a", 5, entry(2, 5, 32))]);
    want.extend([("D:b", 1, entry(3, 1, 60)), ("D:b", 2, entry(3, 2, 32))]);
    let tx = db.begin_write().unwrap();
    {
        let mut old = tx.open_table(ITEM_SEQ_V2_TABLE).unwrap();
        for (scope, seq, e) in &want {
            old.insert((*scope, *seq), e.as_slice()).unwrap();
        }
    }
    migrate_packed_changes(&tx).unwrap();
    tx.commit().unwrap();
    let r = db.begin_read().unwrap();
    assert!(!table_names(&r).contains(&"item-seq-2".to_owned()));
    let t = r.open_table(CHANGES_TABLE).unwrap();
    let rows: Vec<(String, u64)> =
        t.iter().unwrap().map(|row| row.unwrap().0).map(|k| (k.value().0.to_owned(), k.value().1)).collect();
    let expected_rows = [("D:a", 1), ("D:a", 5), ("D:b", 1), ("D:b", 2), ("E:a", 1), ("E:a", 1025), ("E:a", 2049)];
    assert_eq!(rows, expected_rows.map(|(s, n)| (s.to_owned(), n)));
    for scope in ["E:a", "D:a", "D:b"] {
        let got: Vec<(u64, Vec<u8>)> = changes::entries(&t, scope, 1, u64::MAX).unwrap().map(Result::unwrap).collect();
        let expected: Vec<(u64, Vec<u8>)> =
            want.iter().filter(|(s, ..)| *s == scope).map(|(_, seq, e)| (*seq, e.clone())).collect();
        assert_eq!(got, expected, "{scope}");
    }
    assert_eq!(changes::last(&t, "E:a").unwrap(), 2500);
    assert_eq!(changes::last(&t, "D:a").unwrap(), 5);
}

/// Layout 2's log led every value with 64 bytes, zero for an event received under a
/// seal; opening such a file rewrites it without them (`events-2`), and every event reads
/// back as it was stored, signature or zero bytes alike.
#[test]
fn a_layout_2_log_is_converted_on_open_and_reads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    three_cylinders(&path);
    let old_rows = {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        set_layout(&tx, 2);
        let rows = downgrade_log(&tx, &[2]);
        downgrade_ids(&tx);
        tx.commit().unwrap();
        rows
    };
    assert_eq!(old_rows.len(), 3);
    let store = Store::open(&path, options(), clock()).unwrap();
    let r = store.db.begin_read().unwrap();
    assert_eq!(r.open_table(META_TABLE).unwrap().get("layout").unwrap().unwrap().value(), LAYOUT.to_le_bytes());
    assert!(!table_names(&r).iter().any(|n| n == "events-1" || n == "event-ids-1"));
    let events = r.open_table(EVENTS_TABLE).unwrap();
    assert_eq!(events.len().unwrap(), 3);
    for (key, stored) in &old_rows {
        let value = events.get(key.as_slice()).unwrap().unwrap();
        let sealed = key.starts_with(archive(2).code.as_bytes());
        // 64 bytes shorter under a seal; one tag byte longer otherwise.
        assert_eq!(value.value().len(), if sealed { stored.len() - 63 } else { stored.len() + 1 });
        assert_eq!(&stored_of_log(value.value()).unwrap(), stored);
    }
    drop(events);
    for n in 1..=3 {
        let code: FullCode = archive(n).code.parse().unwrap();
        let [event] = <[SignedEvent; 1]>::try_from(store.events_of(&code, 10).unwrap()).unwrap();
        assert_eq!(event.signature == replica::NO_SIGNATURE, n == 2);
        if n != 2 {
            event.verify().unwrap();
        }
    }
}

/// Layout 3's id table repeated each id in its value; opening such a file keeps only
/// the key's head (`event-ids-2`), and events are found by id and pushed as before.
#[test]
fn a_layout_3_id_table_is_converted_on_open_and_finds_the_same_events() {
    use sync::store::ItemStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    let scope = replica::events_scope("3701020001");
    let (before, items) = three_cylinders(&path);
    let old_ids: Vec<([u8; 32], Vec<u8>)> = {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        set_layout(&tx, 3);
        downgrade_ids(&tx);
        let rows = tx
            .open_table(EVENT_IDS_V1_TABLE)
            .unwrap()
            .iter()
            .unwrap()
            .map(|row| row.map(|(id, key)| (*id.value(), key.value().to_vec())).unwrap())
            .collect();
        tx.commit().unwrap();
        rows
    };
    assert_eq!(old_ids.len(), 3);
    let store = Store::open(&path, options(), clock()).unwrap();
    {
        let r = store.db.begin_read().unwrap();
        assert_eq!(r.open_table(META_TABLE).unwrap().get("layout").unwrap().unwrap().value(), LAYOUT.to_le_bytes());
        assert!(!table_names(&r).iter().any(|n| n == "event-ids-1"));
        assert!(!table_names(&r).iter().any(|n| n == "event-ids-2"));
        let ids = runs::Ids::new(r.open_table(ID_RUNS.def).unwrap()).unwrap();
        for (id, key) in &old_ids {
            assert_eq!(ids.key(id).unwrap().as_ref(), Some(key));
        }
    }
    let wanted: Vec<schema::event::EventId> = old_ids.iter().map(|(id, _)| schema::event::EventId(*id)).collect();
    let found = store.events_by_id(&wanted).unwrap();
    assert_eq!(found.iter().map(|e| e.id).collect::<Vec<_>>(), wanted);
    let replica = replica::Replica::new(store.clone());
    let ids: Vec<[u8; 32]> = before.iter().map(|(_, id)| *id).collect();
    let mut ordered = ids.clone();
    replica.send_order(scope.as_bytes(), &mut ordered).unwrap();
    assert_eq!(replica.get_many(scope.as_bytes(), &ordered).unwrap(), items);
    assert_eq!(replica.changes_after(scope.as_bytes(), 0, usize::MAX).unwrap(), before);
}

/// Layout 5 kept the id and sealed tables in one tree each; opening such a file makes
/// each tree the run of this node's own entries (run 0, never merged), and this node's
/// later events go there too; every event is found by id, under its seal.
#[test]
fn a_layout_5_id_table_becomes_the_live_run_and_every_event_is_found_by_id() {
    use sync::store::ItemStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    let scope = replica::events_scope("3701020001");
    let store = with_cylinders(&path, 100);
    assert_eq!(store.seal_all().unwrap(), 100);
    let node = store.node_id();
    store.shutdown();
    {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        set_layout(&tx, 5);
        downgrade_id_runs(&tx);
        tx.commit().unwrap();
    }
    let store = Store::open(&path, options(), clock()).unwrap();
    let runs_of = |store: &Store, def| {
        let r = store.db.begin_read().unwrap();
        let mut runs = std::collections::BTreeMap::<u32, usize>::new();
        for item in r.open_table(def).unwrap().iter().unwrap() {
            *runs.entry(run_of(item.unwrap().0.value()).unwrap()).or_default() += 1;
        }
        runs
    };
    {
        let r = store.db.begin_read().unwrap();
        assert_eq!(r.open_table(META_TABLE).unwrap().get("layout").unwrap().unwrap().value(), LAYOUT.to_le_bytes());
        let tables = table_names(&r);
        assert!(!tables.iter().any(|n| n == "event-ids-2" || n == "sealed-1" || n == "sealed-2"), "{tables:?}");
    }
    assert_eq!(runs_of(&store, ID_RUNS.def), [(LIVE_RUN, 100)].into());
    let replica = replica::Replica::new(store.clone());
    let before: Vec<[u8; 32]> = replica.ids(scope.as_bytes(), &[]).unwrap();
    // Every event names its seal, of its own node, as layout 9 keeps them.
    let seals = replica::seals_scope("3701020001");
    for item in replica.get_many(scope.as_bytes(), &before).unwrap() {
        let named = schema::seal::named_seal(&item[..64].try_into().unwrap()).expect("a sealed event");
        let seal = replica.get(seals.as_bytes(), &named).unwrap().expect("the seal it names");
        assert_eq!(schema::seal::Seal::decode(&seal).unwrap().signer, node);
    }
    register(&store, 101..=300);
    assert_eq!(runs_of(&store, ID_RUNS.def), [(LIVE_RUN, 300)].into(), "own events stay in run 0");
    let all: Vec<[u8; 32]> = replica.ids(scope.as_bytes(), &[]).unwrap();
    assert_eq!(all.len(), 300);
    let wanted: Vec<EventId> = all.iter().map(|id| EventId(*id)).collect();
    let found = store.events_by_id(&wanted).unwrap();
    assert_eq!(found.iter().map(|e| e.id).collect::<Vec<_>>(), wanted);
}

/// Layout 8 kept which seal lists each sealed event in `sealed-2`, and its log named no
/// seal. Opening such a file names each event's seal in its log value (this node's events
/// and received ones alike), drops `sealed-2`, and lists other nodes' events still signed
/// for their seal to come; when it comes, they travel on under it.
#[test]
fn a_layout_8_file_names_each_sealed_events_seal_and_drops_the_sealed_table() {
    use sync::store::ItemStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    let (events, seals) = (replica::events_scope("3701020001"), replica::seals_scope("3701020001"));
    let store = with_cylinders(&path, 50);
    let own = store.seal_all().unwrap();
    assert!(own >= 50, "{own}");
    // Another node's events, received with their signatures (no seal of theirs yet).
    let other =
        Store::open(&dir.path().join("other.redb"), options(), Arc::new(ManualClock::at(1_795_579_300_000))).unwrap();
    register(&other, 51..=60);
    let from_other = replica::Replica::new(other.clone());
    let other_ids = from_other.ids(events.as_bytes(), &[]).unwrap();
    let other_items = from_other.get_many(events.as_bytes(), &other_ids).unwrap();
    let mut into = replica::Replica::new(store.clone());
    let out = into.put(events.as_bytes(), other_items.clone()).unwrap();
    assert_eq!(out.stored.len(), other_items.len(), "{:?}", out.refused.first());
    into.durable().unwrap();
    drop(into);
    let replica = replica::Replica::new(store.clone());
    let ids = replica.ids(events.as_bytes(), &[]).unwrap();
    let before = replica.get_many(events.as_bytes(), &ids).unwrap();
    let named = |items: &[Vec<u8>]| -> usize {
        items.iter().filter(|i| schema::seal::named_seal(&i[..64].try_into().unwrap()).is_some()).count()
    };
    assert_eq!((named(&before), before.len()), (own, own + other_items.len()));
    drop(replica);
    store.shutdown();
    let tags = |db: &Database| -> Vec<u8> {
        let r = db.begin_read().unwrap();
        let log = r.open_table(EVENTS_TABLE).unwrap();
        log.iter().unwrap().map(|row| row.unwrap().1.value()[0]).collect()
    };
    {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        set_layout(&tx, 8);
        downgrade_seal_refs(&tx);
        tx.commit().unwrap();
        let tags = tags(&db);
        assert_eq!(tags.iter().filter(|t| **t == LOG_SEALED).count(), own, "layout 8's sealed form");
        assert_eq!(tags.iter().filter(|t| **t == LOG_SIGNED).count(), other_items.len());
    }
    let store = Store::open(&path, options(), clock()).unwrap();
    {
        let r = store.db.begin_read().unwrap();
        assert_eq!(r.open_table(META_TABLE).unwrap().get("layout").unwrap().unwrap().value(), LAYOUT.to_le_bytes());
        assert!(!table_names(&r).iter().any(|n| n == "sealed-2"));
        assert!(r.open_table(META_TABLE).unwrap().get("sealed_run").unwrap().is_none());
        let waiting = r.open_table(SIGNED_UNSEALED_TABLE).unwrap();
        assert_eq!(
            waiting.len().unwrap(),
            other_items.len() as u64,
            "the other node's signed events wait for its seal"
        );
    }
    let replica = replica::Replica::new(store.clone());
    assert_eq!(replica.get_many(events.as_bytes(), &ids).unwrap(), before, "every event goes as it did");
    // The other node's seal comes: its events go on under it, without their signatures.
    assert_eq!(other.seal_all().unwrap(), other_items.len());
    let seal_ids = from_other.ids(seals.as_bytes(), &[]).unwrap();
    let seal_items = from_other.get_many(seals.as_bytes(), &seal_ids).unwrap();
    let mut into = replica::Replica::new(store.clone());
    assert_eq!(into.put(seals.as_bytes(), seal_items.clone()).unwrap().stored.len(), 1);
    into.durable().unwrap();
    let after = replica.get_many(events.as_bytes(), &other_ids).unwrap();
    let seal_id = schema::seal::Seal::id_of(&seal_items[0]);
    for item in &after {
        assert_eq!(schema::seal::named_seal(&item[..64].try_into().unwrap()), Some(seal_id));
    }
    let r = store.db.begin_read().unwrap();
    assert_eq!(r.open_table(SIGNED_UNSEALED_TABLE).unwrap().len().unwrap(), 0);
}

/// An id table of layout 3 whose value does not end with its id is damage: the file is
/// not opened (and so not half converted).
#[test]
fn a_layout_3_id_table_that_does_not_match_its_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    three_cylinders(&path);
    {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        set_layout(&tx, 3);
        downgrade_ids(&tx);
        {
            let mut old = tx.open_table(EVENT_IDS_V1_TABLE).unwrap();
            let (id, mut key) = old.first().unwrap().map(|(id, key)| (*id.value(), key.value().to_vec())).unwrap();
            let last = key.len() - 1;
            key[last] ^= 1;
            old.insert(&id, key.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let err = Store::open(&path, options(), clock()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(ref m) if m.contains("does not end with it")), "{err}");
    let db = Database::create(&path).unwrap();
    let r = db.begin_read().unwrap();
    assert_eq!(r.open_table(META_TABLE).unwrap().get("layout").unwrap().unwrap().value(), 3u64.to_le_bytes());
}

/// A log value that is cut short or carries an unknown tag is reported, not read.
#[test]
fn a_damaged_log_value_is_an_error() {
    let no_seal = [&[LOG_SEALED_BY][..], &[0; 32], &[1, 2, 3]].concat();
    for bad in
        [&[][..], &[LOG_SEALED][..], &[LOG_SIGNED; 64][..], &[LOG_SEALED_BY; 32][..], &no_seal, &[7, 1, 2, 3][..]]
    {
        assert!(matches!(log_parts(bad), Err(StoreError::Corrupt(_))), "{bad:?}");
    }
}

/// Puts of a stream are answered before their commit and share it: the transaction stays
/// open until a read needs it, another write joins it, or nothing comes for the linger.
#[test]
fn unsettled_puts_share_one_commit_until_a_read_or_a_write_settles_them() {
    let store = Store::in_memory_lingering(clock(), std::time::Duration::from_secs(600)).unwrap();
    let commits = || store.stats().commits.load(Ordering::Relaxed);
    let before = commits();
    for n in 1..=2 {
        store.write_unsettled_blocking(1 << 20, move |ctx| ctx.register(archive(n), "k", "p").map(|_| ())).unwrap();
    }
    // Answered, not committed: readers see none of it yet.
    assert_eq!(store.counts().unwrap(), (0, 0));
    assert!(store.receiving(), "an open transaction of puts counts as receiving");
    assert_eq!(commits(), before);
    store.settle().unwrap();
    assert_eq!(store.counts().unwrap(), (2, 2));
    assert_eq!(commits(), before + 1, "both puts in one commit");
    assert!(!store.receiving());
    // Any other write commits what waits, with itself, before it is answered.
    store.write_unsettled_blocking(1 << 20, |ctx| ctx.register(archive(3), "k", "p").map(|_| ())).unwrap();
    store.write_blocking(|ctx| ctx.register(archive(4), "k", "p").map(|_| ())).unwrap();
    assert_eq!(store.counts().unwrap(), (4, 4));
    assert_eq!(commits(), before + 2);
    // Nothing to settle: no commit.
    store.settle().unwrap();
    assert_eq!(commits(), before + 2);

    // With a short linger the transaction commits on its own once nothing more comes.
    let store = Store::in_memory_lingering(clock(), std::time::Duration::from_millis(5)).unwrap();
    store.write_unsettled_blocking(1 << 20, |ctx| ctx.register(archive(5), "k", "p").map(|_| ())).unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while store.counts().unwrap() != (1, 1) {
        assert!(Instant::now() < deadline, "the lingering transaction never committed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!store.receiving());

    // While a peer's next frame is on its way in, the linger waits for it, up to
    // `RECEIVING_LINGER_MAX` from the transaction's start.
    let incoming = store.start_receiving();
    let begun = Instant::now();
    store.write_unsettled_blocking(1 << 20, |ctx| ctx.register(archive(6), "k", "p").map(|_| ())).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(store.counts().unwrap(), (1, 1), "committed while a frame was on its way in");
    while store.counts().unwrap() != (2, 2) {
        assert!(Instant::now() < deadline + RECEIVING_LINGER_MAX, "the lingering transaction never committed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(begun.elapsed() >= RECEIVING_LINGER_MAX, "committed after {:?}", begun.elapsed());
    drop(incoming);
}

/// `n` registered cylinders whose events the index must take again: the cursor is put
/// back to the start, as if they had been received.
fn unindexed(path: &Path, n: u32) {
    with_cylinders(path, n).shutdown();
    let db = Database::open(path).unwrap();
    let tx = db.begin_write().unwrap();
    let key = index_cursor_key("3701020001");
    tx.open_table(META_TABLE).unwrap().insert(key.as_str(), 0u64.to_le_bytes().as_slice()).unwrap();
    tx.commit().unwrap();
}

/// The file at `path` with a writer that runs index passes only when the backlog forces
/// them (no idle-time passes, no lingering commits).
fn forced_passes_only(path: &Path) -> Store {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    Store::on_backend(redb::backends::FileBackend::new(file).unwrap(), options(), clock()).unwrap()
}

/// A write job that says how far the index is, as its transaction sees it.
fn index_cursor_seen(store: &Store) -> oneshot::Receiver<JobResult> {
    store.submit(|ctx| Ok(saved_cursor(&ctx.tx.open_table(META_TABLE)?, "3701020001")?.unwrap_or(0))).unwrap()
}

/// Holds the writer in a job until the returned sender says go; returns once the writer
/// is in it, so that jobs queued meanwhile wait for the batch after it.
fn hold_writer(store: &Store) -> (std::sync::mpsc::Sender<()>, oneshot::Receiver<JobResult>) {
    let (started, in_it) = std::sync::mpsc::channel::<()>();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let held = store
        .submit(move |_| {
            let _ = started.send(());
            let _ = wait.recv();
            Ok(())
        })
        .unwrap();
    in_it.recv().unwrap();
    (go, held)
}

/// How far the index is as a write job sees it, in a store 600 events behind its index:
/// the writer is held while a stream's put (and a scan, if `with_scan`) are queued, and
/// its commit then forces an index pass. The scan reads it; without one, a write queued
/// after the put has been answered does.
fn index_seen_after_a_forced_pass(with_scan: bool) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    unindexed(&path, 600);
    let store = forced_passes_only(&path);
    let (go, held) = hold_writer(&store);
    let put = store.submit_job(|_| Ok(()), 1).unwrap();
    let scan = with_scan.then(|| index_cursor_seen(&store));
    go.send(()).unwrap();
    finish::<()>(held.blocking_recv().unwrap()).unwrap();
    finish::<()>(put.blocking_recv().unwrap()).unwrap();
    let reader = scan.unwrap_or_else(|| index_cursor_seen(&store));
    let seen = finish::<u64>(reader.blocking_recv().unwrap()).unwrap();
    store.shutdown();
    seen
}

/// A pass forced by a full backlog stops at its first chunk boundary for a write that
/// waits for its commit (a handheld's scan), and hands back, in order, a stream's put
/// that came before it.
#[test]
fn a_forced_index_pass_stops_for_a_scan_and_keeps_a_streams_put_for_after() {
    assert_eq!(index_seen_after_a_forced_pass(true), INDEX_CHUNK as u64);
}

/// Puts of a stream alone do not cut a forced pass short: it runs whole (small passes
/// would rewrite the index's pages again and again) and then takes them.
#[test]
fn a_forced_index_pass_runs_whole_past_a_streams_puts() {
    let seen = index_seen_after_a_forced_pass(false);
    assert!(seen >= INDEX_PASS as u64, "the pass stopped at {seen} for a stream's put");
}

/// `n` registered cylinders whose index entries are gone and whose index cursor is back
/// at the start, as if every event had been received: only index passes put them back.
fn received_only(path: &Path, n: u32) {
    unindexed(path, n);
    let db = Database::open(path).unwrap();
    let tx = db.begin_write().unwrap();
    tx.delete_table(EVENT_INDEX_TABLE).unwrap();
    tx.open_table(EVENT_INDEX_TABLE).unwrap();
    tx.commit().unwrap();
}

/// Entries of each run of the traceability index.
fn index_runs(store: &Store) -> std::collections::BTreeMap<u32, usize> {
    let r = store.db.begin_read().unwrap();
    let mut runs = std::collections::BTreeMap::new();
    for item in r.open_table(EVENT_INDEX_TABLE).unwrap().iter().unwrap() {
        *runs.entry(run_of(item.unwrap().0.value()).unwrap()).or_default() += 1;
    }
    runs
}

/// Traces over every dimension, some cut short by their limit.
fn traces(store: &Store) -> Vec<Vec<EventId>> {
    [("kind", "register", 1000), ("kind", "register", 7), ("time", "", 1000), ("time", "", 33), ("operator", "k", 50)]
        .map(|(d, v, limit)| store.trace(d, v, 0, i64::MAX, limit).unwrap().into_iter().map(|e| e.id).collect())
        .to_vec()
}

/// A file of `n` cylinders whose events all wait for the index ([`received_only`]), its
/// directory, and its traces before any pass (each reads the log past the cursor).
fn traced_before_any_pass(n: u32) -> (tempfile::TempDir, std::path::PathBuf, Vec<Vec<EventId>>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    received_only(&path, n);
    let store = forced_passes_only(&path);
    assert!(index_runs(&store).is_empty());
    let traced = traces(&store);
    store.shutdown();
    (dir, path, traced)
}

/// Index passes write received events into runs of bounded size (so a pass never
/// rewrites the whole index), and a trace over several runs answers exactly what the
/// log itself answers before any pass.
#[test]
fn index_passes_fill_bounded_runs_and_a_trace_reads_every_run() {
    let (_dir, path, expected) = traced_before_any_pass(500);
    assert_eq!(expected[0].len(), 500);
    assert_eq!(expected[1].len(), 7);
    assert_eq!(expected[2].len(), 500);

    let store = Store::open(&path, options(), clock()).unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while store.index_backlog().unwrap() > 0 {
        assert!(Instant::now() < deadline, "the index passes did not finish");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let runs = index_runs(&store);
    assert!(runs.len() >= 3, "500 events in runs of about {RUN_EVENTS}: {runs:?}");
    assert!(!runs.contains_key(&LIVE_RUN), "{runs:?}");
    let most = 4 * (RUN_EVENTS as usize + INDEX_PASS);
    assert!(runs.values().all(|n| *n <= most), "a run over {most} entries: {runs:?}");
    assert_eq!(runs.values().sum::<usize>(), 4 * 500);
    assert_eq!(traces(&store), expected);
    // A local write goes to the live run, and traces see it with the runs.
    store
        .write_blocking(|ctx| {
            let wall = ctx.wall_ms + 1;
            ctx.record(
                archive(1).code.parse().unwrap(),
                "k",
                "p",
                EventBody::Repair { description: "阀门".into() },
                wall,
            )
            .map(|_| ())
        })
        .unwrap();
    assert_eq!(index_runs(&store).get(&LIVE_RUN), Some(&4));
    assert_eq!(store.trace("time", "", 0, i64::MAX, 1000).unwrap().len(), 501);
    assert_eq!(store.trace("operator", "k", 0, i64::MAX, 1).unwrap()[0].event.body.kind(), "repair");
}

/// Layout 4 kept the index in one tree without runs; opening such a file moves it into
/// the live run, and traces answer as before.
#[test]
fn a_layout_4_index_is_converted_on_open_and_traces_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    let store = with_cylinders(&path, 30);
    let expected = traces(&store);
    assert_eq!(expected[0].len(), 30);
    store.shutdown();
    let entries = {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        set_layout(&tx, 4);
        let mut entries = 0;
        {
            let new = tx.open_table(EVENT_INDEX_TABLE).unwrap();
            let mut old = tx.open_table(EVENT_INDEX_V1_TABLE).unwrap();
            for row in new.iter().unwrap() {
                let (k, _) = row.unwrap();
                old.insert(&k.value()[RUN_PREFIX..], ()).unwrap();
                entries += 1;
            }
        }
        tx.delete_table(EVENT_INDEX_TABLE).unwrap();
        tx.commit().unwrap();
        entries
    };
    assert_eq!(entries, 4 * 30);
    let store = Store::open(&path, options(), clock()).unwrap();
    {
        let r = store.db.begin_read().unwrap();
        assert_eq!(r.open_table(META_TABLE).unwrap().get("layout").unwrap().unwrap().value(), LAYOUT.to_le_bytes());
        assert!(!table_names(&r).iter().any(|n| n == "event-index-1"));
    }
    assert_eq!(index_runs(&store), [(LIVE_RUN, entries)].into());
    assert_eq!(traces(&store), expected);
}

/// The idle writer merges two full runs of one level into one of the next, step by step,
/// until no level holds two: the runs stay few, no entry is lost or kept twice, and
/// traces answer as before.
#[test]
fn the_idle_writer_merges_full_runs_and_traces_answer_the_same() {
    let (_dir, path, expected) = traced_before_any_pass(1500);
    assert_eq!(expected[0].len(), 1000);

    let store = Store::open(&path, options(), clock()).unwrap();
    let merge_key = INDEX_RUNS.merge_key("3701020001");
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "passes and merges did not finish: {:?}", index_runs(&store));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let r = store.db.begin_read().unwrap();
        let merging = r.open_table(META_TABLE).unwrap().get(merge_key.as_str()).unwrap().is_some();
        drop(r);
        if store.index_backlog().unwrap() == 0 && !merging && !a_level_holds_two(&store) {
            break;
        }
    }
    let runs = index_runs(&store);
    assert_eq!(runs.values().sum::<usize>(), 4 * 1500, "every entry once: {runs:?}");
    // Six full runs of level 1 end as one of level 3 and one of level 2, next to the run
    // passes fill.
    let mut levels: Vec<u32> = runs.keys().map(|r| run_level(*r)).collect();
    levels.sort();
    assert_eq!(levels, [1, 2, 3], "{runs:?}");
    assert_eq!(traces(&store), expected);
}

/// Whether two full runs (not the one passes fill) share a level.
fn a_level_holds_two(store: &Store) -> bool {
    let r = store.db.begin_read().unwrap();
    let (filling, _) = INDEX_RUNS.saved_run(&r.open_table(META_TABLE).unwrap(), "3701020001").unwrap();
    let mut levels: Vec<u32> = index_runs(store).into_keys().filter(|r| *r != filling).map(run_level).collect();
    let all = levels.len();
    levels.dedup();
    levels.len() < all
}

/// A merge step told to stop (a write waits) ends at once and its transaction is
/// aborted; steps that run whole then merge the two runs into one of the next level with
/// every entry once.
#[test]
fn a_stopped_merge_step_leaves_nothing_and_whole_steps_merge_every_entry_once() {
    let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
    let filling = 1 << RUN_LEVEL_SHIFT | 3;
    let mut wanted = Vec::new();
    {
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(ID_RUNS.def).unwrap();
            for run in [1u32 << RUN_LEVEL_SHIFT | 1, 1 << RUN_LEVEL_SHIFT | 2] {
                for n in 0..100u8 {
                    // The two runs interleave, and share ten entries (a merge copies those once).
                    let at = if run & 1 == 1 || n < 10 { 2 * n } else { 2 * n + 1 };
                    let mut key = run.to_be_bytes().to_vec();
                    key.extend_from_slice(&[at; 60]);
                    t.insert(key.as_slice(), ()).unwrap();
                    wanted.push([at; 60].to_vec());
                }
            }
        }
        ID_RUNS.save_run(&mut tx.open_table(META_TABLE).unwrap(), "", filling, 0).unwrap();
        tx.commit().unwrap();
    }
    wanted.sort();
    wanted.dedup();
    let entries = |db: &Database| -> Vec<Vec<u8>> {
        let r = db.begin_read().unwrap();
        let t = r.open_table(ID_RUNS.def).unwrap();
        t.iter().unwrap().map(|e| e.unwrap().0.value().to_vec()).collect()
    };
    let before = entries(&db);
    let tx = db.begin_write().unwrap();
    let mut asked = 0;
    let step = ID_RUNS
        .merge_step(&tx, "", &mut || {
            asked += 1;
            true
        })
        .unwrap();
    tx.abort().unwrap();
    assert_eq!((step, asked), (runs::Step::Stopped, 1), "ends when first told to");
    assert_eq!(entries(&db), before);
    let mut steps = 0;
    loop {
        let tx = db.begin_write().unwrap();
        let step = ID_RUNS.merge_step(&tx, "", &mut || false).unwrap();
        tx.commit().unwrap();
        if step == runs::Step::Nothing {
            break;
        }
        steps += 1;
        assert!(steps < 100, "the merge does not end");
    }
    // 190 entries copied, then 200 deleted, 64 a step (in tests).
    assert!(steps >= 6, "{steps} steps");
    let r = db.begin_read().unwrap();
    let t = r.open_table(ID_RUNS.def).unwrap();
    let runs = runs::runs_in(&t).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(run_level(runs[0]), 2);
    let left: Vec<Vec<u8>> = t.iter().unwrap().map(|e| e.unwrap().0.value()[RUN_PREFIX..].to_vec()).collect();
    assert_eq!(left, wanted);
}

/// A store shutting down while runs are being merged stops after the step under way,
/// not after every merge, and the merge goes on where it stopped at the next start.
#[test]
fn a_store_shutting_down_stops_merging_runs_after_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    Store::open(&path, options(), clock()).unwrap().shutdown();
    // Twenty full runs of 1,000 entries and nothing waiting for the index.
    let (runs, per_run) = (20u32, 1000u32);
    {
        let db = Database::open(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut idx = tx.open_table(EVENT_INDEX_TABLE).unwrap();
            for run in 1..=runs {
                for n in 0..per_run {
                    let id = [(n % 251) as u8; 32];
                    let key = index_key(1 << RUN_LEVEL_SHIFT | run, "time", "", i64::from(n * runs + run), &id);
                    idx.insert(key.as_slice(), ()).unwrap();
                }
            }
            let mut filling = (1 << RUN_LEVEL_SHIFT | (runs + 1)).to_le_bytes().to_vec();
            filling.extend_from_slice(&0u64.to_le_bytes());
            tx.open_table(META_TABLE)
                .unwrap()
                .insert(INDEX_RUNS.run_key("3701020001").as_str(), filling.as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let merge_key = INDEX_RUNS.merge_key("3701020001");
    let merging = |store: &Store| {
        let r = store.db.begin_read().unwrap();
        r.open_table(META_TABLE).unwrap().get(merge_key.as_str()).unwrap().is_some()
    };
    let store = Store::open(&path, options(), clock()).unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while !merging(&store) {
        assert!(Instant::now() < deadline, "no merge started");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let stopping = Instant::now();
    store.shutdown();
    let took = stopping.elapsed();
    assert!(took < std::time::Duration::from_secs(1), "shutdown waited {took:?} for the merges");
    let store = forced_passes_only(&path);
    let left = index_runs(&store);
    // Merged to the end, twenty runs of level 1 are two (levels 5 and 3).
    assert!(left.len() > 2, "every merge ran before the shutdown: {left:?}");
    // Every entry is still there once (a run being copied holds some twice).
    let r = store.db.begin_read().unwrap();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for item in r.open_table(EVENT_INDEX_TABLE).unwrap().iter().unwrap() {
        keys.push(item.unwrap().0.value()[RUN_PREFIX..].to_vec());
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), (runs * per_run) as usize);
}
