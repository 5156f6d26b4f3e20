//! Replication benchmark, in process: two real redb stores (temp files, durable commits)
//! reconcile through the sans-IO session with the node's session settings and the real
//! frame encoding, with no network in between. It measures the protocol and storage
//! costs under what `net_bench` measures over QUIC: time, bytes on the wire and round
//! trips (the QUIC driver's read-ahead of signature checks is not in it).
//!
//! ```text
//! cargo run --release -p simulations --bin sync_bench -- --cylinders 10000 --events 20
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use node::clock::{Clock, ManualClock, SystemClock};
use node::config::Role;
use node::replication::{MERGE_ITEM_BYTES, options};
use node::store::replica::Replica;
use node::store::{Store, StoreOptions};
use schema::archive::CylinderArchive;
use schema::codes::FullCode;
use schema::event::EventBody;
use schema::vocab::Medium;
use sync::frame::Frame;
use sync::session::Session;

const ENT: &str = "3701020001";

fn archive(n: usize) -> CylinderArchive {
    CylinderArchive::example(&format!("37010201{n:08}"))
}

struct Traffic {
    bytes: u64,
    frames: u64,
    flights: u64,
    /// Time each side (0: the initiator, 1: the other) spent producing its frames and
    /// taking in the other's.
    busy: [std::time::Duration; 2],
}

/// Sends everything `from` has queued to `to`; true if anything went.
fn flight(
    from: &mut Session,
    from_store: &Replica,
    to: &mut Session,
    to_store: &mut Replica,
    now: u64,
    side: usize,
    t: &mut Traffic,
) -> anyhow::Result<bool> {
    let mut any = false;
    // As the QUIC driver does: consecutive items frames of one scope go to the store as
    // one put, up to `MERGE_ITEM_BYTES` (there, those already decoded when the writer is
    // free; here, all of a flight's).
    let mut pending: Option<Frame> = None;
    // Decoded items count as being received until they are put, as in the driver (the
    // receiver's idle writer then starts no index pass or merge in between).
    let mut receiving = None;
    loop {
        let polled = Instant::now();
        let Some(f) = from.poll_transmit(from_store)? else {
            t.busy[side] += polled.elapsed();
            break;
        };
        let bytes = f.encode();
        t.busy[side] += polled.elapsed();
        t.bytes += bytes.len() as u64;
        t.frames += 1;
        let f = Frame::decode(&bytes[4..])?;
        if matches!(f, Frame::Items { .. }) && receiving.is_none() {
            receiving = Some(to_store.store.start_receiving());
        }
        match (&mut pending, f) {
            (Some(Frame::Items { scope, items }), Frame::Items { scope: s, items: more })
                if *scope == s && items.iter().map(Vec::len).sum::<usize>() < MERGE_ITEM_BYTES =>
            {
                items.extend(more)
            }
            (pending, f) => {
                if let Some(ready) = pending.replace(f) {
                    let handled = Instant::now();
                    to.handle(ready, to_store, now)?;
                    t.busy[1 - side] += handled.elapsed();
                    if !matches!(pending, Some(Frame::Items { .. })) {
                        receiving = None;
                    }
                }
            }
        }
        any = true;
    }
    if let Some(ready) = pending {
        let handled = Instant::now();
        to.handle(ready, to_store, now)?;
        t.busy[1 - side] += handled.elapsed();
    }
    if any {
        t.flights += 1;
    }
    Ok(any)
}

/// The office writer's counters (see `WriterStats`).
#[derive(Debug, Clone, Copy)]
struct WriterFigures {
    commits: u64,
    busy_s: f64,
    durable_s: f64,
    background_s: f64,
}

impl WriterFigures {
    fn of(store: &Store) -> WriterFigures {
        use std::sync::atomic::Ordering::Relaxed;
        let s = store.stats();
        WriterFigures {
            commits: s.commits.load(Relaxed),
            busy_s: s.commit_micros.load(Relaxed) as f64 / 1e6,
            durable_s: s.durable_micros.load(Relaxed) as f64 / 1e6,
            background_s: s.background_micros.load(Relaxed) as f64 / 1e6,
        }
    }

    fn since(&self, before: &WriterFigures) -> WriterFigures {
        WriterFigures {
            commits: self.commits - before.commits,
            busy_s: self.busy_s - before.busy_s,
            durable_s: self.durable_s - before.durable_s,
            background_s: self.background_s - before.background_s,
        }
    }
}

impl std::fmt::Display for WriterFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "office writer busy {:.2} s in {} commits, {:.2} s of it in redb's commit; index passes and run merges {:.2} s",
            self.busy_s, self.commits, self.durable_s, self.background_s
        )
    }
}

type Checkpoints = std::collections::BTreeMap<Vec<u8>, u64>;

/// Runs one reconciliation, `a` initiating, until both sides are in sync. Each side
/// starts from its checkpoints of the other and leaves its new ones there (as the node
/// keeps them per peer).
fn reconcile(a: &Store, b: &Store, ckpt: &mut (Checkpoints, Checkpoints)) -> anyhow::Result<Traffic> {
    let (mut ra, mut rb) = (Replica::new(a.clone()), Replica::new(b.clone()));
    // The node's own session settings (both stores are of enterprise ENT).
    let mut sa = Session::new(options(a, true, ckpt.0.clone(), MERGE_ITEM_BYTES as u64));
    let mut sb = Session::new(options(b, false, ckpt.1.clone(), MERGE_ITEM_BYTES as u64));
    let mut t = Traffic { bytes: 0, frames: 0, flights: 0, busy: Default::default() };
    sa.start(&ra, 0)?;
    let mut now = 0;
    loop {
        now += 1;
        let a_sent = flight(&mut sa, &ra, &mut sb, &mut rb, now, 0, &mut t)?;
        let b_sent = flight(&mut sb, &rb, &mut sa, &mut ra, now, 1, &mut t)?;
        let moved = a_sent || b_sent;
        if sa.is_in_sync() && sb.is_in_sync() {
            *ckpt = (sa.checkpoints().clone(), sb.checkpoints().clone());
            return Ok(t);
        }
        if !moved {
            now += 10_000;
            sa.handle_timeout(&ra, now)?;
        }
        anyhow::ensure!(now < 10_000_000, "no convergence");
    }
}

/// Waits until the office's traceability index holds every event and says how long that
/// took after `what`.
fn wait_for_index(office: &Store, what: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    while office.index_backlog()? > 0 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!("  the office's traceability index complete {:.1} s after {what}", t.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut n, mut per, mut catch_up, mut rounds) = (10_000usize, 20usize, None, 5usize);
    // The caches a station and a head office run with unless configured otherwise.
    let mut station_cache = Role::Station.default_cache_bytes();
    let mut office_cache = Role::HeadOffice.default_cache_bytes();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cylinders" => n = args.next().context("--cylinders N")?.parse()?,
            "--events" => per = args.next().context("--events N")?.parse()?,
            "--reconnects" => rounds = args.next().context("--reconnects N")?.parse()?,
            "--catch-up" => catch_up = Some(args.next().context("--catch-up N")?.parse::<usize>()?),
            "--office-cache-mib" => office_cache = args.next().context("--office-cache-mib N")?.parse::<usize>()? << 20,
            "--station-cache-mib" => {
                station_cache = args.next().context("--station-cache-mib N")?.parse::<usize>()? << 20
            }
            other => anyhow::bail!(
                "unknown flag {other}; flags: --cylinders N --events N --reconnects N --catch-up N --office-cache-mib N --station-cache-mib N"
            ),
        }
    }
    let catch_up = catch_up.unwrap_or(4 * n);
    let dir = tempfile::tempdir()?;
    // One clock for both stores, moved by hand. Each cylinder's history is spread over
    // the three months before the bench's "now" (a month ago), as a real station's would
    // be; the week offline is written a day at a time. So events carry the times a real
    // history and week would give them (a cylinder's events of the last ten minutes are
    // what its anomaly check reads back over).
    let day_ms = 86_400_000;
    let month_ago = SystemClock.now_ms() - 30 * day_ms;
    let manual = Arc::new(ManualClock::at(month_ago));
    let clock: Arc<dyn Clock> = manual.clone();
    let opts = |cache_bytes| StoreOptions {
        enterprise: ENT.into(),
        cache_bytes,
        quick_repair: false,
        judge: schema::anomaly::Judge::embedded(ENT),
    };
    let station = Store::open(&dir.path().join("station.redb"), opts(station_cache), clock.clone())?;
    let office = Store::open(&dir.path().join("office.redb"), opts(office_cache), clock.clone())?;

    eprintln!("writing {n} cylinders × {per} events at the station ...");
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let chunk = chunk.to_vec();
        station.write_blocking(move |ctx| {
            for i in chunk {
                let a = archive(i);
                let code: FullCode = a.code.parse().map_err(|e| node::store::StoreError::Invalid(format!("{e}")))?;
                // Cylinder i's events every 90/per days from 90 days back, i seconds apart
                // from the cylinder before.
                let at = |e: usize| month_ago - 90 * day_ms + (e as i64) * (90 * day_ms / per as i64) + i as i64 * 1000;
                ctx.register_backdated(a, "k", "W", at(0))?;
                for e in 1..per {
                    let wall = at(e);
                    let body = match e % 4 {
                        0 => EventBody::ReceiveEmpty { warehouse: "空瓶左库".into() },
                        1 => EventBody::Fill { medium: Medium::Lpg, filled_mass_g: 14_000, batch: None },
                        2 => EventBody::StoreFull { warehouse: "重瓶左库".into() },
                        _ => EventBody::Deliver { customer: "C1".into(), order: None },
                    };
                    ctx.record_backdated(code, "f", "W", body, wall)?;
                }
            }
            Ok(())
        })?;
    }
    eprintln!("  {:.1} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let mut ckpt = (Checkpoints::new(), Checkpoints::new());
    let writer_before = WriterFigures::of(&office);
    let first = reconcile(&station, &office, &mut ckpt)?;
    let first_s = t.elapsed().as_secs_f64();
    let first_writer = WriterFigures::of(&office).since(&writer_before);
    anyhow::ensure!(station.counts()? == office.counts()?, "counts differ after the first sync");

    // The office indexes what it received when idle (as a head office does between a
    // station's visits): the later rounds start from an office that has done so.
    wait_for_index(&office, "the first sync")?;
    // And merges its runs. Right after its index pass, with the runs of the first sync
    // not merged yet, the first reconnect below took 30.7–51.0 ms (sixteenth session).
    let t = Instant::now();
    while office.stats().idle_work.load(std::sync::atomic::Ordering::Acquire) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!("  the office's idle work (its runs merged) done {:.1} s after that", t.elapsed().as_secs_f64());
    // Five reconnects with nothing changed: the slowest and the fastest.
    let mut idle_ms = Vec::new();
    let mut idle = None;
    for _ in 0..5 {
        let t = Instant::now();
        idle = Some(reconcile(&station, &office, &mut ckpt)?);
        idle_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let idle = idle.context("five reconnects")?;
    idle_ms.sort_by(f64::total_cmp);

    // 100 cylinders change offline at the station, one fill each, and it reconnects;
    // `--reconnects` times (5 unless given), a different hundred each time.
    let mut deltas = Vec::new();
    for round in 0..rounds {
        let changed: Vec<FullCode> =
            (0..100).map(|i| archive((i * (n / 100).max(1) + round) % n).code.parse()).collect::<Result<_, _>>()?;
        let new_bytes = station.write_blocking(move |ctx| {
            let mut bytes = 0u64;
            for code in changed {
                let wall = ctx.wall_ms;
                let (e, _) = ctx.record(
                    code,
                    "f",
                    "W",
                    EventBody::Fill { medium: Medium::Lpg, filled_mass_g: 14_200, batch: None },
                    wall,
                )?;
                bytes += e.to_stored().len() as u64;
            }
            Ok(bytes)
        })?;
        let t = Instant::now();
        let before = (WriterFigures::of(&office), WriterFigures::of(&station));
        let delta = reconcile(&station, &office, &mut ckpt)?;
        let office_writer = WriterFigures::of(&office).since(&before.0);
        let background_ms =
            (office_writer.background_s * 1000.0, WriterFigures::of(&station).since(&before.1).background_s * 1000.0);
        deltas.push((t.elapsed().as_secs_f64() * 1000.0, delta, new_bytes, background_ms, office_writer));
    }

    // A week offline: `catch_up` more events over every cylinder (the issue's 7 days at
    // 100k cylinders is ~400k events: four per cylinder), in daily batches.
    let t = Instant::now();
    for day in 0..7 {
        manual.now_ms.store(month_ago + (day as i64 + 1) * day_ms, std::sync::atomic::Ordering::Relaxed);
        let per_day = catch_up / 7;
        station.write_blocking(move |ctx| {
            for k in 0..per_day {
                let code: FullCode = archive((k * 7 + day) % n)
                    .code
                    .parse()
                    .map_err(|e| node::store::StoreError::Invalid(format!("{e}")))?;
                let wall = ctx.wall_ms;
                let body = if k % 2 == 0 {
                    EventBody::ReceiveEmpty { warehouse: "空瓶右库".into() }
                } else {
                    EventBody::Fill { medium: Medium::Lpg, filled_mass_g: 14_100, batch: None }
                };
                ctx.record(code, "f", "W", body, wall)?;
            }
            Ok(())
        })?;
    }
    eprintln!("  a week offline written in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let writer_before = (WriterFigures::of(&office), WriterFigures::of(&station));
    let week = reconcile(&station, &office, &mut ckpt)?;
    let week_s = t.elapsed().as_secs_f64();
    let week_writer = WriterFigures::of(&office).since(&writer_before.0);
    let week_station = WriterFigures::of(&station).since(&writer_before.1);
    wait_for_index(&office, "the catch-up")?;

    let (cylinders, events) = office.counts()?;
    println!("sync_bench (in process, real redb files, no network): {cylinders} cylinders, {events} events");
    println!(
        "  first sync to an empty office   {:>8.2} s   {:>8.2} MB   {} frames, {} flights",
        first_s,
        first.bytes as f64 / 1e6,
        first.frames,
        first.flights
    );
    println!("    {first_writer}");
    println!(
        "  reconnect, nothing changed      {:>8.2} ms  {:>8} B    {} frames, {} flights (fastest of five; slowest {:.2} ms)",
        idle_ms[0],
        idle.bytes,
        idle.frames,
        idle.flights,
        idle_ms[idle_ms.len() - 1]
    );
    for (ms, delta, new_bytes, background_ms, office_writer) in &deltas {
        println!(
            "  reconnect, 100 cylinders changed {:>7.2} ms  {:>8} B    {} frames, {} flights; new events {} B ({:.2}×); station busy {:.2} ms, office {:.2} ms (its writer {:.2} ms, {:.2} ms of it in redb's commit; writers' index passes and merges: office {:.2} ms, station {:.2} ms)",
            ms,
            delta.bytes,
            delta.frames,
            delta.flights,
            new_bytes,
            delta.bytes as f64 / *new_bytes as f64,
            delta.busy[0].as_secs_f64() * 1000.0,
            delta.busy[1].as_secs_f64() * 1000.0,
            office_writer.busy_s * 1000.0,
            office_writer.durable_s * 1000.0,
            background_ms.0,
            background_ms.1,
        );
    }
    println!(
        "  catch-up after a week offline ({} events) {:>6.2} s  {:>8.2} MB   {} frames, {} flights; station busy {:.2} s, office {:.2} s",
        catch_up / 7 * 7,
        week_s,
        week.bytes as f64 / 1e6,
        week.frames,
        week.flights,
        week.busy[0].as_secs_f64(),
        week.busy[1].as_secs_f64()
    );
    println!(
        "    {week_writer}; the station's writer meanwhile {:.2} s in index passes and merges",
        week_station.background_s
    );
    Ok(())
}
