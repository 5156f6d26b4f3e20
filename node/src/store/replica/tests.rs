//! Two real stores replicate through the sans-IO session: identical event sets,
//! documents and derived rows; concurrent offline edits merge; nothing is undone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use schema::archive::CylinderArchive;
use schema::codes::FullCode;
use schema::event::EventBody;
use schema::records::Customer;
use schema::vocab::Medium;
use sync::frame::Frame;
use sync::session::{Session, SessionOptions};

use super::*;
use crate::clock::ManualClock;

const ENT: &str = "3701020001";

fn archive(n: u32) -> CylinderArchive {
    let mut a = CylinderArchive::example(&format!("370102010100{n:04}"));
    a.tags = vec![format!("T{n}")];
    a
}

fn code(n: u32) -> FullCode {
    format!("370102010100{n:04}").parse().unwrap()
}

fn store(at: i64) -> Store {
    Store::in_memory_for(ENT, Arc::new(ManualClock::at(at))).unwrap()
}

fn opts(initiator: bool) -> SessionOptions {
    SessionOptions { initiator, scopes: scopes(ENT), ..SessionOptions::default() }
}

/// Runs a session pair over a perfect in-process link, through the frame encoding, until
/// both are in sync. Returns the frames exchanged.
fn replicate(a: &Store, b: &Store) -> u64 {
    let (mut ra, mut rb) = (Replica::new(a.clone()), Replica::new(b.clone()));
    let (mut sa, mut sb) = (Session::new(opts(true)), Session::new(opts(false)));
    sa.start(&ra, 0).unwrap();
    let mut now = 0;
    let mut frames = 0;
    for _ in 0..10_000 {
        now += 10;
        let mut moved = false;
        while let Some(f) = sa.poll_transmit(&ra).unwrap() {
            let f = Frame::decode(&f.encode()[4..]).unwrap();
            sb.handle(f, &mut rb, now).unwrap();
            frames += 1;
            moved = true;
        }
        while let Some(f) = sb.poll_transmit(&rb).unwrap() {
            let f = Frame::decode(&f.encode()[4..]).unwrap();
            sa.handle(f, &mut ra, now).unwrap();
            frames += 1;
            moved = true;
        }
        if !moved {
            now += 2_000;
            sa.handle_timeout(&ra, now).unwrap();
        }
        if sa.is_in_sync() && sb.is_in_sync() {
            return frames;
        }
    }
    let (ra, rb) = (sa.take_refusals(), sb.take_refusals());
    panic!("no convergence: {:?} / {:?} {:?} {:?}", sa.stats, sb.stats, ra.first(), rb.first());
}

fn assert_same(a: &Store, b: &Store, n: u32) {
    for i in 1..=n {
        let (ra, rb) = (a.cylinder(&code(i)).unwrap(), b.cylinder(&code(i)).unwrap());
        assert!(ra.is_some(), "cylinder {i} at a");
        assert_eq!(ra, rb, "cylinder {i}");
        let ids = |s: &Store| s.events_of(&code(i), usize::MAX).unwrap().into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(a), ids(b), "events of cylinder {i}");
    }
    assert_eq!(a.counts().unwrap(), b.counts().unwrap());
    for scope in [docs_scope(ENT), events_scope(ENT)] {
        assert_eq!(a.summary_of(&scope, &[]).unwrap(), b.summary_of(&scope, &[]).unwrap(), "{scope}");
    }
}

#[test]
fn a_station_and_an_empty_head_office_converge_then_merge_offline_work() {
    let a = store(1_795_579_200_000);
    let b = store(1_795_579_300_000);
    a.write_blocking(|ctx| {
        for i in 1..=30 {
            ctx.register(archive(i), "k", "W")?;
            let wall = ctx.wall_ms;
            ctx.record(code(i), "k", "W", EventBody::ReceiveEmpty { warehouse: "空瓶左库".into() }, wall)?;
            ctx.record(
                code(i),
                "f",
                "W",
                EventBody::Fill { medium: Medium::Lpg, filled_mass_g: 14_000, batch: None },
                wall,
            )?;
        }
        ctx.put_record(
            &DocId::record("customer", "C1"),
            &Customer {
                code: "C1".into(),
                name: "王家".into(),
                address: "a".into(),
                region: "370102".into(),
                contact: "王".into(),
                phone: "1".into(),
                household: true,
                active: true,
            },
        )
    })
    .unwrap();
    replicate(&a, &b);
    assert_same(&a, &b, 30);
    assert_eq!(b.record(&DocId::record("customer", "C1")).unwrap().unwrap()["name"], "王家");

    // Nothing changed: two round trips (pushes of nothing, then root fingerprints), a
    // frame per scope (seals, documents, events) each way.
    let frames = replicate(&a, &b);
    assert!(frames <= 12, "{frames} frames when nothing changed");

    // Offline on both sides: a fills and edits the maker, b scraps and edits the tare.
    a.write_blocking(|ctx| {
        let wall = ctx.wall_ms;
        ctx.record(
            code(1),
            "f",
            "W",
            EventBody::Fill { medium: Medium::Lpg, filled_mass_g: 14_100, batch: None },
            wall,
        )?;
        ctx.edit_archive(&code(1), |x| x.maker = "济南钢瓶厂".into()).map(|_| ())
    })
    .unwrap();
    b.write_blocking(|ctx| {
        let wall = ctx.wall_ms;
        ctx.record(code(1), "i", "HQ", EventBody::Scrap { reason: "裂纹".into() }, wall)?;
        ctx.edit_archive(&code(1), |x| x.tare_kg = Some(15.2)).map(|_| ())
    })
    .unwrap();
    replicate(&a, &b);
    assert_same(&a, &b, 30);
    let row = a.cylinder(&code(1)).unwrap().unwrap();
    assert!(row.state.scrapped.is_some(), "the scrap is not undone by the merge");
    assert_eq!(row.state.fill_count, 2);
    assert_eq!(row.archive.maker, "济南钢瓶厂");
    assert_eq!(row.archive.tare_kg, Some(15.2));
}

/// Registers cylinder 1 in `s` and fills it; the fill event.
fn registered_and_filled(s: &Store) -> SignedEvent {
    let (fill, _) = s
        .write_blocking(|ctx| {
            ctx.register(archive(1), "k", "W")?;
            let wall = ctx.wall_ms;
            let fill = EventBody::Fill { medium: Medium::Lpg, filled_mass_g: 14_000, batch: None };
            ctx.record(code(1), "f", "W", fill, wall)
        })
        .unwrap();
    fill
}

/// A station's store with cylinders 1..=n, each registered and received empty.
fn station_with_empties(n: u32) -> Store {
    let a = store(1_795_579_200_000);
    a.write_blocking(move |ctx| {
        for i in 1..=n {
            ctx.register(archive(i), "k", "W")?;
            let wall = ctx.wall_ms;
            ctx.record(code(i), "k", "W", EventBody::ReceiveEmpty { warehouse: "空瓶左库".into() }, wall)?;
        }
        Ok(())
    })
    .unwrap();
    a
}

#[test]
fn a_long_put_goes_to_the_writer_in_jobs_and_names_exactly_its_own_change_numbers() {
    let a = station_with_empties(20);
    let (ra, mut rb) = (Replica::new(a.clone()), Replica::new(store(1_795_579_300_000)));
    let b = rb.store.clone();
    let mut stored = 0;
    for scope in scopes(ENT) {
        let ids = ra.ids(&scope, &[]).unwrap();
        let items = ra.get_many(&scope, &ids).unwrap();
        let (jobs_before, seq_before) = (b.stats().jobs.load(Ordering::Relaxed), rb.seq(&scope).unwrap());
        let out = rb.put(&scope, items.clone()).unwrap();
        // Puts during a peer's upload share the open transaction; jobs count at its commit.
        rb.durable().unwrap();
        let jobs = b.stats().jobs.load(Ordering::Relaxed) - jobs_before;
        assert_eq!(out.stored.len(), items.len(), "{}", String::from_utf8_lossy(&scope));
        // Jobs of 8 events or 4 documents here (of 4,096 and 1,024 in a release build).
        let per = if scope.starts_with(b"E:") { 8 } else { 4 };
        assert!(jobs as usize >= items.len().div_ceil(per), "{} items in {jobs} jobs", items.len());
        // Nothing else wrote meanwhile: the ranges, merged, are the numbers taken.
        let taken: u64 = out.seqs.iter().map(|(first, last)| last + 1 - first).sum();
        assert_eq!(taken, rb.seq(&scope).unwrap() - seq_before);
        assert!(out.seqs.windows(2).all(|w| w[0].1 < w[1].0), "{:?}", out.seqs);
        stored += out.stored.len();
    }
    assert!(stored > 40, "{stored} items");
    b.settle().unwrap();
    assert_same(&a, &b, 20);
}

/// While a peer uploads (from the session's start until its first push is in), what it
/// puts beside its full frames (a seal, a few records) is answered before its commit and
/// joins the open transaction, as its frames do; once its push is in, such a put is live
/// and commits, with what waited, before it is answered.
#[test]
fn an_uploading_peers_small_puts_share_the_streams_commit_and_a_live_one_commits_at_once() {
    let a = station_with_empties(3);
    let ra = Replica::new(a.clone());
    let b =
        Store::in_memory_lingering(Arc::new(ManualClock::at(1_795_579_300_000)), std::time::Duration::from_secs(600))
            .unwrap();
    let mut rb = Replica::new(b.clone());
    let scope = events_scope(ENT);
    let ids = ra.ids(scope.as_bytes(), &[]).unwrap();
    let items = ra.get_many(scope.as_bytes(), &ids).unwrap();
    let (first, rest) = items.split_at(1);
    let commits = || b.stats().commits.load(Ordering::Relaxed);
    let before = commits();
    assert_eq!(rb.put(scope.as_bytes(), first.to_vec()).unwrap().stored.len(), 1);
    assert_eq!((commits(), b.counts().unwrap().1), (before, 0), "answered, not committed yet");
    rb.peer_pushed(scope.as_bytes());
    assert_eq!(rb.put(scope.as_bytes(), rest.to_vec()).unwrap().stored.len(), rest.len());
    assert_eq!(commits(), before + 1, "the live put committed, with the one that waited");
    assert_eq!(b.counts().unwrap().1, items.len() as u64);
}

/// The log is the duplicate check (an event key ends with its id): an event that comes
/// twice in one put, or again in a later one, is stored once, counted once and summed once,
/// however many runs of the id table the ids are spread over.
#[test]
fn a_received_event_is_stored_once_however_often_it_comes() {
    let a = station_with_empties(60);
    let (ra, mut rb) = (Replica::new(a.clone()), Replica::new(store(1_795_579_300_000)));
    let b = rb.store.clone();
    let scope = events_scope(ENT);
    let ids = ra.ids(scope.as_bytes(), &[]).unwrap();
    let n = ids.len();
    assert!(n >= 120, "{n} events");
    let items = ra.get_many(scope.as_bytes(), &ids).unwrap();
    let (first, second) = items.split_at(50);
    let mut twice = first.to_vec();
    twice.extend_from_slice(first);
    let out = rb.put(scope.as_bytes(), twice).unwrap();
    assert_eq!(out.stored.len(), 50, "{out:?}");
    let mut again = first[..10].to_vec();
    again.extend_from_slice(second);
    let out = rb.put(scope.as_bytes(), again).unwrap();
    assert_eq!(out.stored.len(), n - 50, "only the new ones: {out:?}");
    let out = rb.put(scope.as_bytes(), items.clone()).unwrap();
    assert!(out.stored.is_empty(), "{out:?}");
    rb.durable().unwrap();
    assert_eq!(b.counts().unwrap().1, n as u64);
    // Ids in runs of 40 (in tests): several runs (two once the idle writer merged
    // the first two full ones), read as one table.
    assert!(ids_runs(&b) >= 2, "{} runs", ids_runs(&b));
    assert_eq!(rb.ids(scope.as_bytes(), &[]).unwrap(), ids);
    assert_eq!(b.summary_of(&scope, &[]).unwrap(), a.summary_of(&scope, &[]).unwrap());
    let wanted: Vec<schema::event::EventId> = ids.iter().map(|id| schema::event::EventId(*id)).collect();
    let found = b.events_by_id(&wanted).unwrap();
    assert_eq!(found.iter().map(|e| e.id).collect::<Vec<_>>(), wanted);
    assert_eq!(rb.get_many(scope.as_bytes(), &ids).unwrap(), items);
}

/// A peer's ids go into runs of level 1 (40 ids each in tests); the idle writer merges
/// two full runs of one level into one of the next until no level holds two, and every
/// event is found by id and listed once throughout.
#[test]
fn received_ids_go_into_runs_the_idle_writer_merges() {
    let a = station_with_empties(100);
    let (ra, mut rb) = (Replica::new(a.clone()), Replica::new(store(1_795_579_300_000)));
    let b = rb.store.clone();
    let scope = events_scope(ENT);
    let ids = put_events_in_parts(&ra, &mut rb, 50);
    assert_eq!(ids.len(), 300);
    b.settle().unwrap();
    let wanted: Vec<schema::event::EventId> = ids.iter().map(|id| schema::event::EventId(*id)).collect();
    let runs = |s: &Store| {
        let r = s.db.begin_read().unwrap();
        let mut runs = BTreeMap::<u32, usize>::new();
        for item in r.open_table(super::super::runs::ID_RUNS.def).unwrap().iter().unwrap() {
            *runs.entry(super::super::runs::run_of(item.unwrap().0.value()).unwrap()).or_default() += 1;
        }
        runs
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let idle_work = || b.stats().idle_work.load(std::sync::atomic::Ordering::Acquire);
    loop {
        // Read first: the writer says it has no idle work left only once it has done it.
        let busy = idle_work();
        assert_eq!(b.events_by_id(&wanted).unwrap().len(), 300);
        assert_eq!(rb.ids(scope.as_bytes(), &[]).unwrap(), ids);
        let now = runs(&b);
        let levels: Vec<u32> = now.keys().map(|r| super::super::runs::run_level(*r)).collect();
        // Runs take 40 and a little more (a job's ids go into one run): seven full ones
        // and the filling one end as one of each level 3, 2 and 1, and the filling one.
        let merged = levels == [1, 1, 2, 3] && now.values().sum::<usize>() == 300;
        assert!(busy || merged, "no idle work said before the merges were done: {now:?}");
        if merged {
            for (run, n) in &now {
                assert!(*n >= 40 << (super::super::runs::run_level(*run) - 1) || *n < 40, "{now:?}");
            }
            break;
        }
        assert!(std::time::Instant::now() < deadline, "merges did not finish: {now:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Then it says so (`node_store_idle_work`, which benchmarks wait for).
    while idle_work() {
        assert!(std::time::Instant::now() < deadline, "idle work still said after the merges");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A store whose writer never idles (no idle-time passes or merges, as at a head office
/// under a constant stream) merges runs between a stream's puts once four full ones of a
/// level pile up, and only so far: below that it leaves them for idle time.
#[test]
fn runs_piling_up_under_a_stream_are_merged_between_its_puts() {
    let a = station_with_empties(100);
    let ra = Replica::new(a.clone());
    let b =
        Store::in_memory_lingering(Arc::new(ManualClock::at(1_795_579_300_000)), std::time::Duration::from_millis(2))
            .unwrap();
    let mut rb = Replica::new(b.clone());
    let scope = events_scope(ENT);
    let ids = put_events_in_parts(&ra, &mut rb, 20);
    assert_eq!(ids.len(), 300);
    b.settle().unwrap();
    // Full runs per level of the id table (runs of 40 ids and a little more in tests;
    // without merges, seven full ones of level 1).
    let levels = || super::super::runs::ID_RUNS.full_runs(&b.db.begin_read().unwrap(), ENT).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while levels().values().any(|n| *n >= super::super::MERGE_FORCE_RUNS) {
        assert!(std::time::Instant::now() < deadline, "runs piled up and stayed: {:?}", levels());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let now = levels();
    assert!(now.contains_key(&2), "merged into level 2: {now:?}");
    // Below the bound, merges wait for idle time (which this writer never has).
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(levels(), now);
    assert!(now.get(&1).is_some_and(|n| *n >= 2), "level 1 left for idle time: {now:?}");
    let wanted: Vec<schema::event::EventId> = ids.iter().map(|id| schema::event::EventId(*id)).collect();
    assert_eq!(b.events_by_id(&wanted).unwrap().len(), 300);
    assert_eq!(rb.ids(scope.as_bytes(), &[]).unwrap(), ids);
}

/// Puts every event `from` lists into `to`, `per` at a time, each part stored whole; the
/// events' ids, in id order.
fn put_events_in_parts(from: &Replica, to: &mut Replica, per: usize) -> Vec<Id> {
    let scope = events_scope(ENT);
    let ids = from.ids(scope.as_bytes(), &[]).unwrap();
    let items = from.get_many(scope.as_bytes(), &ids).unwrap();
    assert_eq!(items.len(), ids.len());
    for part in items.chunks(per) {
        assert_eq!(to.put(scope.as_bytes(), part.to_vec()).unwrap().stored.len(), part.len());
    }
    ids
}

/// Runs of the id table.
fn ids_runs(s: &Store) -> usize {
    let r = s.db.begin_read().unwrap();
    super::super::runs::runs_in(&r.open_table(super::super::runs::ID_RUNS.def).unwrap()).unwrap().len()
}

#[test]
fn a_put_is_cut_into_parts_in_order() {
    let parts: Vec<Vec<u32>> = in_parts((0..10).collect(), 4).collect();
    assert_eq!(parts, [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    let parts: Vec<Vec<u32>> = in_parts((0..8).collect(), 4).collect();
    assert_eq!(parts, [vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
    assert_eq!(in_parts(Vec::<u32>::new(), 4).count(), 1);
}

#[test]
fn a_tampered_event_is_refused_and_not_stored() {
    let a = store(1_795_579_200_000);
    let (event, _) = a
        .write_blocking(|ctx| {
            ctx.register(archive(1), "k", "W")?;
            let wall = ctx.wall_ms;
            ctx.record(code(1), "k", "W", EventBody::Repair { description: "阀".into() }, wall)
        })
        .unwrap();
    let b = store(1_795_579_200_000);
    let mut stored = event.to_stored();
    let last = stored.len() - 1;
    stored[last] ^= 0x01;
    let mut rb = Replica::new(b.clone());
    let out = rb.put(events_scope(ENT).as_bytes(), vec![stored, event.to_stored()]).unwrap();
    assert_eq!(out.stored, vec![event.id.0]);
    assert_eq!(out.refused.len(), 1, "{out:?}");
    assert!(out.refused[0].contains("refused"), "{out:?}");
    rb.durable().unwrap();
    assert_eq!(b.counts().unwrap().1, 1);
    let out = rb.put(docs_scope(ENT).as_bytes(), vec![vec![0, 3, b'x', b':', b'y', 1, 2, 3]]).unwrap();
    assert_eq!(out.refused.len(), 1, "{out:?}");
}

#[test]
fn an_event_whose_clock_runs_behind_its_wall_time_is_refused() {
    let at = 1_795_579_200_000;
    let a = store(at);
    a.write_blocking(|ctx| ctx.register(archive(1), "k", "W")).unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&a.node_seed().unwrap());
    let event = |hlc_ms: i64| {
        schema::event::Event {
            cylinder: code(1),
            hlc: schema::hlc::Hlc { physical_ms: hlc_ms, logical: 0 },
            wall_ms: at,
            node: a.node_id(),
            operator: "k".into(),
            place: "W".into(),
            body: EventBody::Repair { description: "阀".into() },
        }
        .sign(&key)
    };
    let (behind, in_step) = (event(at - 1), event(at));
    let mut ra = Replica::new(a.clone());
    let out = ra.put(events_scope(ENT).as_bytes(), vec![behind.to_stored(), in_step.to_stored()]).unwrap();
    assert_eq!(out.stored, vec![in_step.id.0]);
    assert_eq!(out.refused.len(), 1, "{out:?}");
    assert!(out.refused[0].contains("behind its wall time"), "{out:?}");
    assert!(a.events_of(&code(1), usize::MAX).unwrap().iter().all(|e| e.id != behind.id));
}

#[test]
fn an_enrolled_node_takes_events_only_from_enrolled_signers_within_their_rights() {
    use schema::records::NodeRecord;
    let station = store(1_795_579_200_000);
    let fill = registered_and_filled(&station);
    let register = station.events_of(&code(1), usize::MAX).unwrap();
    let office = store(1_795_579_300_000);
    office.write_blocking(|ctx| ctx.set_meta(crate::enrolment::CA_CERT, b"enrolled")).unwrap();
    let mut ro = Replica::new(office.clone());
    let scope = events_scope(ENT);
    let all: Vec<Vec<u8>> = register.iter().map(SignedEvent::to_stored).collect();

    // Unknown signer: refused, nothing stored.
    let out = ro.put(scope.as_bytes(), all.clone()).unwrap();
    assert!(out.stored.is_empty() && out.refused.len() == all.len(), "{out:?}");
    assert!(out.refused[0].contains("not an enrolled node"), "{out:?}");

    // Enrolled as a regulator: only findings would pass.
    let key = station.node_id().to_string();
    let as_role = |role: &str, enterprise: &str| NodeRecord {
        key: key.clone(),
        name: "s1".into(),
        role: role.into(),
        enterprise: enterprise.into(),
    };
    let regulator = as_role("regulator", ENT);
    office.write_blocking(move |ctx| ctx.put_record(&DocId::record("node", &regulator.key), &regulator)).unwrap();
    let out = ro.put(scope.as_bytes(), vec![fill.to_stored()]).unwrap();
    assert!(out.refused[0].contains("may not write fill"), "{out:?}");

    // Of another enterprise: refused.
    let foreign = as_role("station", "3701260001");
    office.write_blocking(move |ctx| ctx.put_record(&DocId::record("node", &foreign.key), &foreign)).unwrap();
    let out = ro.put(scope.as_bytes(), vec![fill.to_stored()]).unwrap();
    assert!(out.refused[0].contains("belongs to enterprise 3701260001"), "{out:?}");

    // Enrolled as a station of this enterprise: accepted.
    let ours = as_role("station", ENT);
    office.write_blocking(move |ctx| ctx.put_record(&DocId::record("node", &ours.key), &ours)).unwrap();
    let out = ro.put(scope.as_bytes(), all).unwrap();
    assert_eq!(out.stored.len(), register.len(), "{out:?}");
    assert!(out.refused.is_empty());
}

#[test]
fn concurrent_forbidden_histories_are_flagged_identically_on_both_sides() {
    use crate::store::anomalies::AnomalyFilter;
    use schema::anomaly::AnomalyKind;
    let office = store(1_795_579_200_000);
    // Another start time: another node identity (the manual clock's entropy).
    let station_clock = Arc::new(ManualClock::at(1_795_579_200_001));
    let station = Store::in_memory_for(ENT, station_clock.clone()).unwrap();
    station
        .write_blocking(|ctx| {
            for i in 1..=3 {
                ctx.register(archive(i), "k", "W")?;
            }
            Ok(())
        })
        .unwrap();
    replicate(&station, &office);
    assert!(office.anomalies(&AnomalyFilter::default()).unwrap().is_empty());

    // Link down. The office scraps 1; a minute later the station fills it. Both receive
    // cylinder 2 into their own stores, and both bind tag X, to 2 and to 3.
    office
        .write_blocking(|ctx| {
            let wall = ctx.wall_ms;
            ctx.record(code(1), "i", "HQ", EventBody::Scrap { reason: "裂纹".into() }, wall)?;
            ctx.record(code(2), "k", "W-HQ", EventBody::ReceiveEmpty { warehouse: "W-HQ".into() }, wall)?;
            ctx.record(code(2), "k", "HQ", EventBody::BindTag { tag: "X".into() }, wall)
        })
        .unwrap();
    station_clock.now_ms.store(1_795_579_260_000, std::sync::atomic::Ordering::Relaxed);
    station
        .write_blocking(|ctx| {
            let wall = ctx.wall_ms;
            let fill = EventBody::Fill { medium: Medium::Lpg, filled_mass_g: 14_000, batch: None };
            ctx.record(code(1), "f", "S1", fill, wall)?;
            ctx.record(code(2), "k", "W-S1", EventBody::ReceiveEmpty { warehouse: "W-S1".into() }, wall)?;
            ctx.record(code(3), "k", "S1", EventBody::BindTag { tag: "X".into() }, wall)
        })
        .unwrap();
    assert!(station.anomalies(&AnomalyFilter::default()).unwrap().is_empty(), "nothing to see offline");

    replicate(&station, &office);
    assert_same(&station, &office, 3);
    let listed = |s: &Store| {
        let mut found: Vec<(AnomalyKind, Vec<FullCode>, [u8; 32])> = s
            .anomalies(&AnomalyFilter::default())
            .unwrap()
            .into_iter()
            .map(|a| (a.kind, a.cylinders.clone(), a.id()))
            .collect();
        found.sort();
        found
    };
    let at_office = listed(&office);
    assert_eq!(at_office, listed(&station), "the same anomalies on both sides");
    let kinds: Vec<AnomalyKind> = at_office.iter().map(|a| a.0).collect();
    assert_eq!(kinds, [AnomalyKind::FillAfterScrap, AnomalyKind::TwoPlaces, AnomalyKind::TagOnTwoCylinders]);
    assert_eq!(at_office[2].1, [code(2), code(3)]);
    let after_scrap =
        office.anomalies(&AnomalyFilter { kind: Some(AnomalyKind::FillAfterScrap), cylinder: Some(code(1)) }).unwrap();
    let proof = office.events_by_id(&after_scrap[0].events).unwrap();
    let proof: Vec<&str> = proof.iter().map(|e| e.event.body.kind()).collect();
    assert_eq!(proof, ["scrap", "fill"]);
}

/// A station whose clock runs 8 h fast (set to Beijing time as if it were UTC) gets its
/// events stored at the office, which counts them and does not follow that clock: the
/// office's next event bears its own time, not the station's, unless it is of a cylinder
/// whose events came from there (it sorts just after them).
#[test]
fn a_station_clock_running_fast_is_stored_not_followed() {
    let office = store(1_795_579_200_000);
    let station = store(1_795_579_200_000 + 8 * 3_600_000);
    station
        .write_blocking(|ctx| {
            ctx.register(archive(1), "k", "W")?;
            let wall = ctx.wall_ms;
            let fill = EventBody::Fill { medium: Medium::Lpg, filled_mass_g: 14_000, batch: None };
            ctx.record(code(1), "f", "S1", fill, wall).map(|_| ())
        })
        .unwrap();
    replicate(&station, &office);
    assert_same(&station, &office, 1);
    let ahead = office.counter(EVENTS_AHEAD_COUNTER).unwrap();
    assert_eq!(ahead, 3, "register, bind tag and fill, each 8 h ahead");
    let (fill, mine, row) = office
        .write_blocking(|ctx| {
            let fill = ctx.row(&code(1))?.and_then(|r| r.state.last_applied).map(|(hlc, ..)| hlc);
            let wall = ctx.wall_ms;
            let (empty, row) =
                ctx.record(code(1), "k", "W-HQ", EventBody::ReceiveEmpty { warehouse: "W-HQ".into() }, wall)?;
            ctx.register(archive(2), "k", "W-HQ")?;
            Ok((fill, empty, row))
        })
        .unwrap();
    let fill = fill.unwrap();
    assert_eq!(fill.physical_ms, 1_795_579_200_000 + 8 * 3_600_000);
    assert_eq!(mine.event.hlc, schema::hlc::Hlc { physical_ms: fill.physical_ms, logical: fill.logical + 1 });
    assert_eq!(row.state.fill_count, 1, "the fill counts at the office");
    assert_eq!(row.state.full, Some(false), "and the return after it");
    for e in office.events_of(&code(2), usize::MAX).unwrap() {
        assert!(
            e.event.hlc.physical_ms <= 1_795_579_200_000 + schema::hlc::AHEAD_MAX_MS,
            "the office's clock stayed near its own time: {:?}",
            e.event.hlc
        );
    }
    assert_eq!(station.counter(EVENTS_AHEAD_COUNTER).unwrap(), 0);
}

/// While a peer's items are on their way in (a driver holds a `Receiving` guard from a
/// frame's decoding to its put), the idle writer leaves the index backlog alone: a pass
/// started between two puts of a stream made the stream wait. Once nothing comes, the
/// pass runs.
#[test]
fn the_idle_writer_waits_while_items_are_on_their_way_in() {
    let a = station_with_empties(30);
    let (ra, mut rb) = (Replica::new(a.clone()), Replica::new(store(1_795_579_300_000)));
    let b = rb.store.clone();
    let scope = events_scope(ENT);
    let ids = ra.ids(scope.as_bytes(), &[]).unwrap();
    let items = ra.get_many(scope.as_bytes(), &ids).unwrap();
    let incoming = b.start_receiving();
    rb.put(scope.as_bytes(), items).unwrap();
    b.settle().unwrap();
    let backlog = b.index_backlog().unwrap();
    assert_eq!(backlog, ids.len() as u64);
    // In-memory stores here run their idle work after 1 s without jobs.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(b.index_backlog().unwrap(), backlog, "a pass ran while items were coming in");
    drop(incoming);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while b.index_backlog().unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "no pass once nothing came");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Received events reach the traceability index in the writer's idle-time pass; until
/// then a trace finds them in the backlog. Either way it answers exactly what a store
/// that recorded them itself answers.
#[test]
fn received_events_are_traced_before_and_after_their_index_pass() {
    let a = store(1_795_579_200_000);
    let b = store(1_795_579_300_000);
    a.write_blocking(|ctx| {
        for i in 1..=40 {
            ctx.register(archive(i), "k", "W")?;
            let wall = ctx.wall_ms + i64::from(i);
            let op = if i % 2 == 0 { "f1" } else { "f2" };
            ctx.record(
                code(i),
                op,
                "W",
                EventBody::Fill { medium: Medium::Lpg, filled_mass_g: 14_000, batch: None },
                wall,
            )?;
        }
        Ok(())
    })
    .unwrap();
    let traces = |s: &Store| {
        [("operator", "f1"), ("operator", "f2"), ("kind", "fill"), ("place", "W"), ("time", "")]
            .map(|(d, v)| s.trace(d, v, 0, i64::MAX, 25).unwrap().into_iter().map(|e| e.id).collect::<Vec<_>>())
    };
    let expected = traces(&a);
    assert_eq!(expected[0].len(), 20);
    assert_eq!(expected[2].len(), 25);
    assert_eq!(a.index_backlog().unwrap(), 0, "local writes are indexed as they are stored");

    replicate(&a, &b);
    // The writer waits for an idle moment: right after the sync the events are in the backlog.
    let backlog = b.index_backlog().unwrap();
    assert_eq!(traces(&b), expected);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while b.index_backlog().unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "the index pass did not run");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(backlog > 100, "the received events waited for more than one index pass: {backlog}");
    assert_eq!(traces(&b), expected);
    // A local write after the pass is indexed at once and keeps the backlog empty.
    b.write_blocking(|ctx| {
        let wall = ctx.wall_ms;
        ctx.record(code(1), "f1", "W", EventBody::ReceiveEmpty { warehouse: "空瓶左库".into() }, wall).map(|_| ())
    })
    .unwrap();
    assert_eq!(b.index_backlog().unwrap(), 0);
    assert_eq!(b.trace("operator", "f1", 0, i64::MAX, 100).unwrap().len(), 21);
}

/// Signature verdicts made ahead of time are used only for the very items they were
/// made for: handed over for a frame with a forged signature, they do not let it in.
#[test]
fn prechecked_verdicts_count_only_for_the_items_they_describe() {
    let a = store(1_795_579_200_000);
    a.write_blocking(|ctx| {
        ctx.register(archive(1), "k", "W")?;
        let wall = ctx.wall_ms;
        ctx.record(code(1), "f", "W", EventBody::ReceiveEmpty { warehouse: "空瓶左库".into() }, wall).map(|_| ())
    })
    .unwrap();
    let good: Vec<Vec<u8>> = a.events_of(&code(1), 10).unwrap().iter().map(|e| e.to_stored()).collect();
    let n = good.len();
    assert!(n >= 2);
    let mut forged = good.clone();
    forged[n - 1][3] ^= 1;
    let scope = events_scope(ENT);

    let mut rb = Replica::new(store(1_795_579_300_000));
    rb.precheck(Prechecked::of(scope.as_bytes(), good.clone(), &rb.store));
    let out = rb.put(scope.as_bytes(), forged).unwrap();
    assert_eq!((out.stored.len(), out.refused.len()), (n - 1, 1), "{:?}", out.refused);
    assert!(out.refused[0].contains("signature"), "{:?}", out.refused);

    // The right verdicts for the right items are taken as they are.
    rb.precheck(Prechecked::of(scope.as_bytes(), good.clone(), &rb.store));
    let out = rb.put(scope.as_bytes(), good).unwrap();
    assert_eq!((out.stored.len(), out.refused.len()), (1, 0));
}

/// Every document item `store` holds, as it would send them.
fn doc_items(store: Store) -> Vec<Vec<u8>> {
    let replica = Replica::new(store);
    let scope = docs_scope(ENT);
    let ids = replica.ids(scope.as_bytes(), &[]).unwrap();
    ids.iter().map(|id| replica.get(scope.as_bytes(), id).unwrap().expect("listed item")).collect()
}

/// The same holds for documents loaded ahead of time: verdicts on a good document do not
/// let a damaged copy of it in.
#[test]
fn prechecked_documents_count_only_for_the_items_they_describe() {
    let a = store(1_795_579_200_000);
    a.write_blocking(|ctx| ctx.register(archive(1), "k", "W").map(|_| ())).unwrap();
    let scope = docs_scope(ENT);
    let good = doc_items(a);
    assert!(!good.is_empty());
    let mut damaged = good.clone();
    let last = damaged[0].len() - 1;
    damaged[0][last] ^= 0x55;

    let mut rb = Replica::new(store(1_795_579_300_000));
    rb.precheck(Prechecked::of(scope.as_bytes(), good.clone(), &rb.store));
    let out = rb.put(scope.as_bytes(), damaged).unwrap();
    assert_eq!(out.refused.len(), 1, "{:?}", out.refused);
    assert_eq!(out.stored.len(), good.len() - 1);

    rb.precheck(Prechecked::of(scope.as_bytes(), good.clone(), &rb.store));
    let out = rb.put(scope.as_bytes(), good).unwrap();
    assert_eq!((out.stored.len(), out.refused.len()), (1, 0), "{:?}", out.refused);
}

/// The documents of frames merged into one put come out of their loads in item order,
/// whichever thread loaded them: 100 documents are loaded in chunks on every core.
#[test]
fn documents_loaded_on_every_core_come_out_in_item_order() {
    let a = store(1_795_579_200_000);
    a.write_blocking(|ctx| (1..=130).try_for_each(|n| ctx.register(archive(n), "k", "W").map(|_| ()))).unwrap();
    let scope = docs_scope(ENT);
    let items = doc_items(a);
    assert!(items.len() >= 130, "{}", items.len());
    let (first, second) = items.split_at(100);
    let mut loads = DocLoads::start(first.to_vec());
    loads.frames.extend(DocLoads::start(second.to_vec()).frames);
    assert_eq!(loads.len(), items.len());
    for (i, item) in items.iter().enumerate() {
        match loads.next() {
            Some(Ok(d)) => assert!(d.is_of(item), "document {i} out of order"),
            other => panic!("document {i}: {other:?}"),
        }
    }
    assert!(loads.next().is_none());

    // A put of them, loaded ahead, stores them all, and refuses the one damaged since.
    let mut damaged = items.clone();
    let last = damaged[70].len() - 1;
    damaged[70][last] ^= 0x55;
    let mut rb = Replica::new(store(1_795_579_300_000));
    rb.precheck(Prechecked::of(scope.as_bytes(), items.clone(), &rb.store));
    let out = rb.put(scope.as_bytes(), damaged).unwrap();
    assert_eq!((out.stored.len(), out.refused.len()), (items.len() - 1, 1), "{:?}", out.refused);
    rb.durable().unwrap();
    assert_eq!(rb.store.counts().unwrap().0, 129);
}

/// A station with one cylinder and five events after its registration, none sealed yet.
fn unsealed_station() -> Store {
    let a = store(1_795_579_200_000);
    a.write_blocking(|ctx| {
        ctx.register(archive(1), "k", "W")?;
        for i in 0..5 {
            let wall = ctx.wall_ms + i;
            ctx.record(code(1), "f", "W", EventBody::ReceiveEmpty { warehouse: "空瓶左库".into() }, wall)?;
        }
        Ok(())
    })
    .unwrap();
    a
}

/// The seal each item names in place of a signature (`None` for a signature).
fn named(items: &[Vec<u8>]) -> Vec<Option<SealId>> {
    items.iter().map(|i| named_seal(&i[..64].try_into().expect("64 bytes"))).collect()
}

/// Every item `r` lists in `scope`, as it would send it.
fn items(r: &Replica, scope: &str) -> Vec<Vec<u8>> {
    let ids = r.ids(scope.as_bytes(), &[]).unwrap();
    ids.iter().map(|id| r.get(scope.as_bytes(), id).unwrap().expect("listed item")).collect()
}

/// A waiting session's live changes: those no bulk stream added, read from the gaps
/// between the streamed ranges, in order, `limit` at a time, with the sequence read up to.
#[test]
fn live_changes_are_the_gaps_between_the_ranges_stations_sent() {
    let a = unsealed_station();
    let scope = events_scope(ENT);
    let all = Replica::new(a.clone()).changes_after(scope.as_bytes(), 0, 100).unwrap();
    let n = all.len() as u64;
    assert!(n >= 6, "{n}");
    let seqs = |changes: &[(u64, Id)]| changes.iter().map(|(seq, _)| *seq).collect::<Vec<_>>();
    assert_eq!(a.live_changes(scope.as_bytes(), 0, 100).unwrap(), (all.clone(), n), "nothing streamed");
    a.note_from_station(&scope, (2, 2));
    a.note_from_station(&scope, (3, 3));
    a.note_from_station(&scope, (5, 5));
    // A stream's range not committed yet reads as nothing.
    a.note_from_station(&scope, (n + 1, n + 9));
    let (live, upto) = a.live_changes(scope.as_bytes(), 0, 100).unwrap();
    let expected: Vec<u64> = [1, 4].into_iter().chain(6..=n).collect();
    assert_eq!((seqs(&live), upto), (expected.clone(), n));
    assert!(live.iter().all(|c| all.contains(c)), "ids as the change log has them");
    // A page at a time: the next read starts where the last one stopped.
    let (first, upto) = a.live_changes(scope.as_bytes(), 0, 1).unwrap();
    assert_eq!((seqs(&first), upto), (vec![1], 3));
    let (next, upto) = a.live_changes(scope.as_bytes(), upto, 2).unwrap();
    assert_eq!((seqs(&next), upto), (vec![4, 6], 6));
    assert_eq!(a.live_changes(scope.as_bytes(), n, 10).unwrap(), (vec![], n));
    assert_eq!(a.live_changes(seals_scope(ENT).as_bytes(), 0, 10).unwrap(), (vec![], 0));
}

/// What a station puts during an upload (its session's first push, or from a put of a
/// stream on; until the station says it has pushed) is noted as such and is not live;
/// what it puts outside one is, as a regulator's puts and this node's own writes are.
#[test]
fn a_stations_puts_are_live_outside_its_uploads_and_a_regulators_always() {
    let a = store(1_795_579_200_000);
    a.write_blocking(|ctx| {
        for n in 1..=60 {
            ctx.register(archive(n), "k", "W")?;
            for i in 0..120 {
                let wall = ctx.wall_ms + i;
                ctx.record(code(n), "f", "W", EventBody::ReceiveEmpty { warehouse: "空瓶左库".into() }, wall)?;
            }
        }
        Ok(())
    })
    .unwrap();
    a.seal_all().unwrap();
    let scope = events_scope(ENT);
    let items = items(&Replica::new(a.clone()), &scope);
    let bulk = items[3..items.len() - 9].to_vec();
    assert!(bulk.iter().map(Vec::len).sum::<usize>() >= STREAM_PUT_MIN, "the upload is a stream");
    let office = store(1_795_579_300_000);
    let live = |after: u64| {
        let (live, upto) = office.live_changes(scope.as_bytes(), after, 100_000).unwrap();
        (live.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), upto)
    };
    assert!(!office.uploading());
    let mut from_station = Replica::new(office.clone());
    assert!(office.uploading(), "a station's session starts with its upload");
    let put = |r: &mut Replica, part: &[Vec<u8>]| {
        let out = r.put(scope.as_bytes(), part.to_vec()).unwrap();
        assert_eq!(out.stored.len(), part.len(), "{:?}", out.refused.first());
        r.durable().unwrap();
    };
    // The station's seals first: its events, sealed, come without signatures.
    let seals = seals_scope(ENT);
    let seal_items = self::items(&Replica::new(a.clone()), &seals);
    let sealed = from_station.put(seals.as_bytes(), seal_items.clone()).unwrap();
    assert!(!sealed.stored.is_empty() && sealed.refused.is_empty(), "{:?}", sealed.refused);
    // What the station pushes when its session starts is its catch-up (here a small one),
    // not live.
    put(&mut from_station, &items[..2]);
    assert_eq!(live(0), (vec![], 2));
    from_station.peer_pushed(scope.as_bytes());
    assert!(!office.uploading(), "its first push is in");
    // Then a handheld's operation, sent as it is made.
    put(&mut from_station, &items[2..3]);
    assert_eq!(live(0), (vec![3], 3));
    // An upload: a stream, then the short end of a page, all waiting with the bulk.
    put(&mut from_station, &bulk);
    assert!(office.uploading(), "a stream is an upload");
    let n = items.len() as u64;
    put(&mut from_station, &items[items.len() - 9..items.len() - 6]);
    let (during, upto) = live(3);
    assert!(during.is_empty(), "{} changes of a station's upload taken as live", during.len());
    assert_eq!(upto, n - 6);
    // The station has pushed all it had: its next put is live again.
    from_station.peer_pushed(scope.as_bytes());
    assert!(!office.uploading());
    put(&mut from_station, &items[items.len() - 6..items.len() - 3]);
    assert!(!office.uploading(), "a live put is no upload");
    drop(Replica::new(office.clone()));
    assert!(!office.uploading(), "a session that ends ends its upload");
    assert_eq!(live(3), (vec![n - 5, n - 4, n - 3], n - 3));
    let mut from_regulator = Replica::new(office.clone());
    from_regulator.peer_is_live();
    put(&mut from_regulator, &items[items.len() - 3..]);
    assert_eq!(live(n - 3), (vec![n - 2, n - 1, n], n));
    // A regulator's put is live even when it is a stream.
    let other = store(1_795_579_300_000);
    let mut from_regulator = Replica::new(other.clone());
    from_regulator.peer_is_live();
    from_regulator.put(seals.as_bytes(), seal_items).unwrap();
    put(&mut from_regulator, &bulk);
    assert!(!other.uploading(), "a regulator's laptop never uploads");
    assert_eq!(other.live_changes(scope.as_bytes(), 0, 100_000).unwrap().0.len(), bulk.len());
    office.write_blocking(|ctx| ctx.register(archive(99), "k", "HO")).unwrap();
    let (own, upto) = office.live_changes(scope.as_bytes(), n, 100).unwrap();
    assert_eq!((own.len(), upto), (2, n + 2), "the office's own registration and tag binding");
}

/// Sealed events travel without their signatures and are taken only under a seal of the
/// node that wrote them; a relay passes them on the same way.
#[test]
fn sealed_events_travel_without_signatures_and_only_under_their_nodes_seal() {
    let a = unsealed_station();
    let (events, seals) = (events_scope(ENT), seals_scope(ENT));
    let ra = Replica::new(a.clone());
    let signed = items(&ra, &events);
    assert!(signed.len() >= 6, "{}", signed.len());
    assert!(signed.iter().all(|i| i[..64] != NO_SIGNATURE), "not sealed yet: every event carries its signature");
    assert!(items(&ra, &seals).is_empty());

    assert_eq!(a.seal_all().unwrap(), signed.len());
    assert_eq!(a.seal_all().unwrap(), 0, "nothing is sealed twice");
    // The seal stands for the signatures: the writer's own log keeps none of them.
    let tags: Vec<u8> = {
        let r = a.db.begin_read().unwrap();
        let log = r.open_table(EVENTS_TABLE).unwrap();
        log.iter().unwrap().map(|row| row.unwrap().1.value()[0]).collect()
    };
    assert_eq!(tags, vec![2; signed.len()], "a sealed event's log value names its seal, not its signature");
    let seal = items(&ra, &seals);
    assert_eq!(seal.len(), 1);
    let seal_id = Seal::id_of(&seal[0]);
    let sealed = items(&ra, &events);
    assert_eq!(named(&sealed), vec![Some(seal_id); sealed.len()], "sealed events go naming their seal");

    // Without the seal, nothing unsigned is taken: it waits for its seal.
    let b = store(1_795_579_300_000);
    let mut rb = Replica::new(b.clone());
    let out = rb.put(events.as_bytes(), sealed.clone()).unwrap();
    assert_eq!((out.stored.len(), out.refused.len()), (0, 0), "{:?}", out.refused.first());
    assert_eq!(b.counts().unwrap().1, 0);

    // Another node's seal over the same ids does not vouch for them: those waiting and
    // those sent again name a's seal and wait for it; made to name c's, they are refused.
    let c = store(1_795_579_400_000);
    let forged = Seal::make(
        &ed25519_dalek::SigningKey::from_bytes(&c.node_seed().unwrap()),
        sealed.iter().map(|i| sealed_id(&schema::event::Event::id_of(&i[64..]))).collect(),
    )
    .encode();
    let out = rb.put(seals.as_bytes(), vec![forged.clone()]).unwrap();
    assert_eq!(out.stored.len(), 1, "a valid seal of node c is kept: {:?}", out.refused);
    assert_eq!(b.counts().unwrap().1, 0, "c's seal let a's waiting events in");
    let out = rb.put(events.as_bytes(), sealed.clone()).unwrap();
    assert_eq!((out.stored.len(), out.refused.len()), (0, 0), "c's seal let a's events in");
    let renamed: Vec<Vec<u8>> =
        sealed.iter().map(|i| [&seal_ref(&Seal::id_of(&forged))[..], &i[64..]].concat()).collect();
    let out = rb.put(events.as_bytes(), renamed).unwrap();
    assert_eq!((out.stored.len(), out.refused.len()), (0, sealed.len()), "c's seal let a's events in");
    assert!(out.refused[0].contains("another node's"), "{:?}", out.refused[0]);
    assert_eq!(b.counts().unwrap().1, 0);

    // Events that came before their seal are taken in when it comes; a changed event
    // is not (its id is in no seal).
    let mut changed = sealed[0].clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    let b2 = store(1_795_579_300_000);
    let mut rb2 = Replica::new(b2.clone());
    let out = rb2.put(events.as_bytes(), [vec![changed], sealed.clone()].concat()).unwrap();
    assert_eq!((out.stored.len(), out.refused.len()), (0, 0), "{:?}", out.refused);
    let out = rb2.put(seals.as_bytes(), seal.clone()).unwrap();
    assert_eq!(out.stored.len(), 1);
    rb2.durable().unwrap();
    assert_eq!(b2.counts().unwrap().1, sealed.len() as u64, "the waiting events were taken in with their seal");
    assert_eq!(b2.cylinder(&code(1)).unwrap(), None, "no archive yet, but the events are stored");
    // Sent again after the seal, they are duplicates.
    let out = rb2.put(events.as_bytes(), sealed.clone()).unwrap();
    assert_eq!((out.stored.len(), out.refused.len()), (0, 0));
    // An event of a's that names a's seal but is not in it is refused, and so is one that
    // names no seal at all (layout 8's form).
    a.write_blocking(|ctx| {
        let wall = ctx.wall_ms + 100;
        ctx.record(code(1), "f", "W", EventBody::ReceiveEmpty { warehouse: "空瓶右库".into() }, wall).map(|_| ())
    })
    .unwrap();
    let later = items(&ra, &events).into_iter().find(|i| named(std::slice::from_ref(i)) == [None]).unwrap();
    let unlisted = [&seal_ref(&seal_id)[..], &later[64..]].concat();
    let unnamed = [&NO_SIGNATURE[..], &later[64..]].concat();
    let out = rb2.put(events.as_bytes(), vec![unlisted, unnamed]).unwrap();
    assert_eq!((out.stored.len(), out.refused.len()), (0, 2), "{:?}", out.refused);
    assert!(
        out.refused[0].contains("does not list it") && out.refused[1].contains("names no seal"),
        "{:?}",
        out.refused
    );

    // A relay passes them on sealed, and a third store takes them through a session.
    assert_eq!(named(&items(&rb2, &events)), vec![Some(seal_id); sealed.len()]);
    let d = store(1_795_579_500_000);
    replicate(&a, &d);
    assert_same(&a, &d, 1);
    assert_eq!(d.fingerprints().unwrap(), a.fingerprints().unwrap());
}

/// Another node's seal over a node's event ids hides neither the right seal nor the
/// events' signatures: a relay holding it still passes the events on signed while their
/// own seal is not there, and the writer takes unsigned ones under their own node's seal
/// though the forged one sorts first.
#[test]
fn another_nodes_seal_over_the_same_ids_hides_nothing() {
    let a = unsealed_station();
    let (events, seals) = (events_scope(ENT), seals_scope(ENT));
    let ra = Replica::new(a.clone());
    let signed = items(&ra, &events);
    assert!(signed.iter().all(|i| i[..64] != NO_SIGNATURE), "not sealed yet");
    let ids: Vec<SealedId> = signed.iter().map(|i| sealed_id(&schema::event::Event::id_of(&i[64..]))).collect();
    // A node key that sorts before a's, so a look-up of any seal over an id finds its seal first.
    let forger = (0..=255u8)
        .map(|seed| ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
        .find(|k| k.verifying_key().to_bytes() < a.node_id().0)
        .expect("some key sorts before a's");
    let forged = Seal::make(&forger, ids.clone()).encode();

    // The relay holds a's events signed, then the forged seal: it passes them on signed.
    let relay = store(1_795_579_300_000);
    let mut rr = Replica::new(relay.clone());
    let out = rr.put(events.as_bytes(), signed.clone()).unwrap();
    assert_eq!((out.stored.len(), out.refused.len()), (signed.len(), 0), "{:?}", out.refused);
    assert_eq!(rr.put(seals.as_bytes(), vec![forged.clone()]).unwrap().stored.len(), 1);
    let relayed = items(&rr, &events);
    assert_eq!(named(&relayed), vec![None; signed.len()], "the forged seal stripped a's signatures");
    assert_eq!(relayed, signed);
    let d = store(1_795_579_400_000);
    let mut rd = Replica::new(d.clone());
    let out = rd.put(events.as_bytes(), relayed).unwrap();
    assert_eq!((out.stored.len(), out.refused.len()), (signed.len(), 0), "{:?}", out.refused);

    // A node that holds the forged seal and a's own takes a's unsigned events under a's,
    // also when they reach its writer unchecked (a's seal came after the check).
    assert_eq!(a.seal_all().unwrap(), signed.len());
    let (sealed, seal) = (items(&ra, &events), items(&ra, &seals));
    assert_eq!(named(&sealed), vec![Some(Seal::id_of(&seal[0])); sealed.len()]);
    // a's own seal reaches the relay, which stored a's events signed: it passes them on
    // under that seal from then on, and a fourth store takes them so.
    assert_eq!(rr.put(seals.as_bytes(), seal.clone()).unwrap().stored.len(), 1);
    rr.durable().unwrap();
    assert_eq!(items(&rr, &events), sealed, "the relay still sends a's events signed");
    let e = store(1_795_579_600_000);
    let mut re = Replica::new(e.clone());
    assert_eq!(re.put(seals.as_bytes(), seal.clone()).unwrap().stored.len(), 1);
    let out = re.put(events.as_bytes(), items(&rr, &events)).unwrap();
    assert_eq!((out.stored.len(), out.refused.len()), (sealed.len(), 0), "{:?}", out.refused);
    // A store that had a's seal before a's signed events came keeps them signed until a
    // sealed copy comes, which takes their place.
    let f = store(1_795_579_700_000);
    let mut rf = Replica::new(f.clone());
    assert_eq!(rf.put(seals.as_bytes(), seal.clone()).unwrap().stored.len(), 1);
    assert_eq!(rf.put(events.as_bytes(), signed.clone()).unwrap().stored.len(), signed.len());
    assert_eq!(items(&rf, &events), signed);
    let out = rf.put(events.as_bytes(), sealed.clone()).unwrap();
    assert_eq!((out.stored.len(), out.refused.len()), (0, 0), "duplicates: {:?}", out.refused);
    rf.durable().unwrap();
    assert_eq!(items(&rf, &events), sealed, "the sealed copies took the signed ones' place");
    let r = f.db.begin_read().unwrap();
    assert_eq!(r.open_table(SIGNED_UNSEALED_TABLE).unwrap().len().unwrap(), 0);
    let b = store(1_795_579_500_000);
    let mut rb = Replica::new(b.clone());
    assert_eq!(rb.put(seals.as_bytes(), vec![forged]).unwrap().stored.len(), 1);
    assert_eq!(rb.put(seals.as_bytes(), seal).unwrap().stored.len(), 1);
    let unchecked: Vec<Verdict> = sealed
        .iter()
        .map(|i| Verdict::AwaitsSeal(schema::event::SignedEvent::from_stored_trusted(i).unwrap()))
        .collect();
    let received = b.write_blocking(move |ctx| ctx.receive_checked(unchecked)).unwrap();
    let stored = received.iter().filter(|r| matches!(r, Received::Stored(_))).count();
    assert_eq!(stored, sealed.len(), "{received:?}");
    assert_eq!(b.counts().unwrap().1, sealed.len() as u64);
}

/// A station's first push to an empty head office, with marks, cut after the first
/// mark the office answered: the station's checkpoints say what the office holds, and
/// the next session sends exactly what came after them, scope by scope.
#[test]
fn a_first_push_cut_off_after_a_mark_resumes_from_the_station_checkpoints() {
    let a = station_with_empties(200);
    let b = store(1_795_579_300_000);
    let (mut ra, mut rb) = (Replica::new(a.clone()), Replica::new(b.clone()));
    let zero: BTreeMap<Vec<u8>, u64> = scopes(ENT).into_iter().map(|s| (s, 0)).collect();
    let session = |initiator, checkpoints| {
        Session::new(SessionOptions { items_per_frame: 64, mark_bytes: 8 << 10, checkpoints, ..opts(initiator) })
    };
    let (mut sa, mut sb) = (session(true, zero), session(false, BTreeMap::new()));
    sa.start(&ra, 0).unwrap();
    // Frame by frame until the office has answered a mark within the events.
    let events = events_scope(ENT).into_bytes();
    let mut now = 0;
    while sa.checkpoints()[&events] == 0 {
        now += 1;
        let f = sa.poll_transmit(&ra).unwrap().expect("the push goes on");
        sb.handle(Frame::decode(&f.encode()[4..]).unwrap(), &mut rb, now).unwrap();
        while let Some(f) = sb.poll_transmit(&rb).unwrap() {
            sa.handle(Frame::decode(&f.encode()[4..]).unwrap(), &mut ra, now).unwrap();
        }
    }
    let ckpt = sa.checkpoints().clone();
    assert!(ckpt[&events] < ra.seq(&events).unwrap(), "cut before the end: {ckpt:?}");
    // Every change the checkpoints cover is at the office.
    for (scope, upto) in &ckpt {
        for (_, id) in ra.changes_after(scope, 0, *upto as usize).unwrap() {
            assert!(rb.get(scope, &id).unwrap().is_some(), "{} {upto}", String::from_utf8_lossy(scope));
        }
    }
    // The documents' push ended before the events began: marked, not sent again.
    assert_eq!(ckpt[&docs_scope(ENT).into_bytes()], ra.seq(docs_scope(ENT).as_bytes()).unwrap());

    let rest: u64 = ckpt.iter().map(|(scope, upto)| ra.seq(scope).unwrap() - upto).sum();
    let (mut sa, mut sb) = (session(true, ckpt), session(false, BTreeMap::new()));
    sa.start(&ra, 0).unwrap();
    for _ in 0..1_000 {
        now += 10;
        while let Some(f) = sa.poll_transmit(&ra).unwrap() {
            sb.handle(Frame::decode(&f.encode()[4..]).unwrap(), &mut rb, now).unwrap();
        }
        while let Some(f) = sb.poll_transmit(&rb).unwrap() {
            sa.handle(Frame::decode(&f.encode()[4..]).unwrap(), &mut ra, now).unwrap();
        }
        if sa.is_in_sync() && sb.is_in_sync() {
            break;
        }
    }
    assert!(sa.is_in_sync() && sb.is_in_sync());
    assert_eq!(sa.stats.items_sent, rest);
    assert_same(&a, &b, 200);
}

/// A node's clock observes the events it receives (found by the simulator): a scrap
/// recorded here after a fill arrived from a station whose clock runs an hour ahead
/// sorts after that fill, so the history reads fill, then scrap, and no fill after a
/// scrap is listed. Without it, the scrap took this node's earlier time and sorted first.
#[test]
fn a_local_scrap_sorts_after_a_received_fill_from_a_clock_that_runs_ahead() {
    use crate::store::anomalies::AnomalyFilter;
    let t = 1_795_579_200_000;
    let (ahead, here) = (store(t + 3_600_000), store(t));
    registered_and_filled(&ahead);
    replicate(&ahead, &here);
    here.write_blocking(|ctx| {
        let wall = ctx.wall_ms;
        ctx.record(code(1), "i", "HQ", EventBody::Scrap { reason: "裂纹".into() }, wall).map(|_| ())
    })
    .unwrap();
    let kinds: Vec<&str> = here.events_of(&code(1), usize::MAX).unwrap().iter().map(|e| e.event.body.kind()).collect();
    assert_eq!(kinds.last(), Some(&"scrap"), "{kinds:?}");
    assert!(here.anomalies(&AnomalyFilter::default()).unwrap().is_empty());
    replicate(&ahead, &here);
    assert!(ahead.anomalies(&AnomalyFilter::default()).unwrap().is_empty());
}

/// A node shutting down stops a peer's put before its next part and says so: a station
/// storing a relay took up to half a minute to stop, waiting for the whole put.
#[test]
fn a_put_stops_before_its_next_part_once_the_node_closes() {
    let a = station_with_empties(3);
    let scope = events_scope(ENT);
    let items = items(&Replica::new(a.clone()), &scope);
    let b = store(1_795_579_300_000);
    let mut rb = Replica::new(b.clone());
    b.begin_close();
    assert!(matches!(rb.put(scope.as_bytes(), items.clone()), Err(StoreError::Closing)));
    assert_eq!(b.counts().unwrap().1, 0, "nothing stored after the close began");
    let c = store(1_795_579_300_000);
    let mut rc = Replica::new(c.clone());
    let n = items.len();
    assert_eq!(rc.put(scope.as_bytes(), items).unwrap().stored.len(), n);
}
