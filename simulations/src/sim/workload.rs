//! What the people at the nodes do, modelled on station work: each station's cylinders
//! cycle receive empty → pre-fill check → fill → store full → dispatch → deliver →
//! return (now and then to another station); failed checks go to inspection; the head
//! office scraps cylinders and edits archives; regulators hold and release. Every
//! operation goes through the node's own write path with an op id (as the API does:
//! idempotency, the fill rules); handhelds sometimes retry, and a write is sometimes cut
//! mid-commit and retried.

use std::collections::{BTreeMap, BTreeSet};

use node::store::replica::{Replica, scopes};
use node::store::{Store, StoreError};
use rand::Rng;
use schema::archive::{CylinderArchive, Day, DocId};
use schema::codes::FullCode;
use schema::event::{EventBody, EventId, FindingAction};
use schema::records::NodeRecord;
use schema::vocab::Medium;
use sync::session::{Session, SessionOptions};

use super::{Config, DAY, ENTERPRISE, Failure, Faults, HOUR, MINUTE, Role, What, World, sim_err, store_err};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Empty,
    Checked,
    Filled,
    Stored,
    Dispatched,
    Delivered,
    /// A failed check: waiting for inspection.
    Held,
    Inspecting,
}

#[derive(Debug)]
pub struct Workload {
    /// Per cylinder: the station node holding it and its phase there.
    cylinders: Vec<(usize, Phase)>,
    /// Per station node: the cylinders it holds.
    held: BTreeMap<usize, Vec<usize>>,
    next_op: u64,
    findings: BTreeMap<(usize, String), ()>,
    pub scrapped: BTreeMap<FullCode, EventId>,
    /// Per acknowledged scrap: the fills of its cylinder the scrapping node held when it
    /// recorded it (those happened before it, whatever their clocks said).
    pub fills_before_scrap: BTreeMap<EventId, BTreeSet<EventId>>,
    /// Holds acknowledged and not released: (code, finding).
    pub holds: BTreeMap<(FullCode, String), EventId>,
}

pub fn code(i: usize) -> FullCode {
    format!("37010201{i:08}").parse().expect("16 digits")
}

impl Workload {
    pub fn new(cfg: &Config) -> Workload {
        let cylinders: Vec<(usize, Phase)> =
            (0..cfg.cylinders).map(|i| (1 + i % cfg.stations.max(1), Phase::Empty)).collect();
        let mut held: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, (node, _)) in cylinders.iter().enumerate() {
            held.entry(*node).or_default().push(i);
        }
        Workload {
            cylinders,
            held,
            next_op: 0,
            findings: BTreeMap::new(),
            scrapped: BTreeMap::new(),
            fills_before_scrap: BTreeMap::new(),
            holds: BTreeMap::new(),
        }
    }
}

/// Registers the cylinders and enrols every node at the head office, then brings every
/// node up to date over a clean link (the stations' first sync).
pub fn set_up(w: &mut World) -> anyhow::Result<()> {
    let records: Vec<NodeRecord> = w
        .nodes
        .iter()
        .map(|n| NodeRecord {
            key: n.store.node_id().to_string(),
            name: n.name.clone(),
            role: match n.role {
                Role::HeadOffice => "head-office",
                Role::Station => "station",
                Role::Regulator => "regulator",
            }
            .into(),
            enterprise: ENTERPRISE.into(),
        })
        .collect();
    let mut archives = Vec::new();
    for i in 0..w.cfg.cylinders {
        let mut a = CylinderArchive::example(code(i).as_str());
        a.serial = format!("SIM{i:06}");
        // Some are due for inspection during the run: fills must stop then.
        if w.rng.random_range(0..20) == 0 {
            a.next_inspection = Day::ymd(2026, 6, 1 + w.rng.random_range(0..20));
        }
        archives.push(a);
    }
    let office = w.nodes[0].store.clone();
    office
        .write_blocking(move |ctx| {
            for r in &records {
                ctx.put_record(&DocId::record("node", &r.key), r)?;
            }
            for a in archives {
                ctx.register(a, "sim-keeper", "head-office")?;
            }
            Ok(())
        })
        .map_err(store_err)?;
    for n in &w.nodes {
        n.store.write_blocking(|ctx| ctx.set_meta(node::enrolment::CA_CERT, b"simulated")).map_err(store_err)?;
    }
    for i in 0..w.cfg.cylinders {
        for e in office.events_of(&code(i), usize::MAX).map_err(store_err)? {
            w.acked.insert(e.id, w.now);
        }
    }
    for n in 1..w.nodes.len() {
        direct_sync(&w.nodes[n].store, &office)?;
    }
    Ok(())
}

/// Reconciles two stores over a perfect in-process link.
fn direct_sync(a: &Store, b: &Store) -> anyhow::Result<()> {
    let opts = |initiator| SessionOptions {
        initiator,
        scopes: scopes(ENTERPRISE),
        items_per_frame: 2048,
        ..SessionOptions::default()
    };
    let (mut ra, mut rb) = (Replica::new(a.clone()), Replica::new(b.clone()));
    let (mut sa, mut sb) = (Session::new(opts(true)), Session::new(opts(false)));
    sa.start(&ra, 0).map_err(sim_err)?;
    let mut now = 0;
    for _ in 0..100_000 {
        let mut moved = false;
        while let Some(f) = sa.poll_transmit(&ra).map_err(sim_err)? {
            sb.handle(f, &mut rb, now).map_err(sim_err)?;
            moved = true;
        }
        while let Some(f) = sb.poll_transmit(&rb).map_err(sim_err)? {
            sa.handle(f, &mut ra, now).map_err(sim_err)?;
            moved = true;
        }
        if sa.is_in_sync() && sb.is_in_sync() {
            return Ok(());
        }
        if !moved {
            // The round ended with items moved: the retry timer starts the next one.
            now += 10_000;
            sa.handle_timeout(&ra, now).map_err(sim_err)?;
        }
    }
    anyhow::bail!("set-up sync did not finish")
}

/// Crash times, drawn up front: each edge node a few times, the head office once.
pub fn schedule_crashes(w: &mut World) {
    let per_node = match w.cfg.faults {
        Faults::None => 0,
        Faults::Light => 1,
        Faults::Heavy => 3,
    };
    let span = w.cfg.days as i64 * DAY;
    for node in 0..w.nodes.len() {
        let n = if node == 0 { per_node.min(1) } else { per_node };
        for _ in 0..n {
            let at = w.now + w.rng.random_range(0..span.max(1));
            w.schedule(at, What::Crash { node });
        }
    }
}

/// A node loses power: its connections go, it restarts from what its disk synced (a
/// torn tail of unsynced writes at most), with the checkpoints it had saved only, and is
/// back after a while.
pub fn crash(w: &mut World, node: usize) -> anyhow::Result<()> {
    let links: Vec<usize> = if node == 0 { (0..w.links.len()).collect() } else { vec![node - 1] };
    for &link in &links {
        w.disconnect(link);
        if w.rng.random_bool(0.5) {
            if node == 0 {
                w.checkpoints[link].1.clear();
            } else {
                w.checkpoints[link].0.clear();
            }
        }
    }
    let torn = w.rng.random_range(0..=w.nodes[node].disk.unsynced());
    w.restart(node, torn)?;
    let down = if node == 0 { w.rng.random_range(MINUTE..20 * MINUTE) } else { w.rng.random_range(MINUTE..2 * HOUR) };
    w.nodes[node].down_until = w.now + down;
    w.stats.crashes += 1;
    Ok(())
}

/// What one handheld operation came to.
enum Done {
    Acked(EventId),
    Refused,
}

/// One operation as the node's API runs it: replay by op id, the fill rules, then the
/// event and the stored answer in one job.
fn operate(
    store: &Store,
    op_id: String,
    code: FullCode,
    operator: &'static str,
    place: String,
    body: EventBody,
) -> Result<Done, StoreError> {
    store.write_blocking(move |ctx| {
        if let Some(stored) = ctx.operation_result(&op_id)? {
            return Ok(Done::Acked(stored.event.id));
        }
        if let EventBody::Fill { medium, filled_mass_g, .. } = &body {
            let wall = ctx.wall_ms;
            if !ctx.fill_refusals(&code, *medium, *filled_mass_g, wall)?.is_empty() {
                return Ok(Done::Refused);
            }
        }
        let wall = ctx.wall_ms;
        let (event, row) = ctx.record(code, operator, &place, body, wall)?;
        ctx.put_operation_result(&op_id, [0; 32], &event.id, &row.state)?;
        Ok(Done::Acked(event.id))
    })
}

/// Runs an operation at `node` with retries and cuts; records what was acknowledged.
fn op(
    w: &mut World,
    node: usize,
    code: FullCode,
    operator: &'static str,
    place: String,
    body: EventBody,
) -> anyhow::Result<Result<Option<EventId>, Failure>> {
    w.work.next_op += 1;
    let op_id = format!("sim-{}-{}", node, w.work.next_op);
    w.nodes[node].tick(w.now);
    let cut_pct = if w.cfg.faults == Faults::Heavy { 2 } else { 0 };
    let mut before_cut = None;
    if w.rng.random_range(0..100) < cut_pct {
        // Power is cut during the write: after some of its disk writes, the disk dies and
        // the node restarts from what was synced. The handheld then retries.
        w.stats.cut_writes += 1;
        let disk = w.nodes[node].disk.clone();
        disk.die_after(w.rng.random_range(0..24));
        // (The store handle must be gone before the restart, as a dead process holds none.)
        let r = operate(&w.nodes[node].store.clone(), op_id.clone(), code, operator, place.clone(), body.clone());
        if let Ok(Done::Acked(id)) = r {
            before_cut = Some(id);
        }
        let torn = w.rng.random_range(0..=disk.unsynced());
        w.restart(node, torn)?;
        if let Some(link) = node.checked_sub(1) {
            w.disconnect(link);
        } else {
            for link in 0..w.links.len() {
                w.disconnect(link);
            }
        }
    }
    let store = w.nodes[node].store.clone();
    let first = operate(&store, op_id.clone(), code, operator, place.clone(), body.clone());
    let id = match first {
        Ok(Done::Acked(id)) => id,
        Ok(Done::Refused) if before_cut.is_none() => {
            w.stats.ops_refused += 1;
            return Ok(Ok(None));
        }
        Ok(Done::Refused) => EventId([0; 32]),
        Err(e) => return Err(store_err(e)),
    };
    if before_cut.is_some_and(|acked| acked != id) {
        return Ok(Err(Failure {
            invariant: "no acknowledged operation lost",
            detail: format!("op {op_id} was acknowledged before a power cut and is gone after it"),
        }));
    }
    if w.rng.random_range(0..100) < 10 {
        // The handheld did not see the answer and retries with the same op id.
        w.stats.retries += 1;
        match operate(&store, op_id.clone(), code, operator, place, body) {
            Ok(Done::Acked(again)) if again == id => {}
            _ => {
                return Ok(Err(Failure {
                    invariant: "idempotent retry",
                    detail: format!("retry of {op_id} did not return event {id}"),
                }));
            }
        }
    }
    w.stats.ops_acked += 1;
    w.acked.insert(id, w.now);
    // Live mode: a commit starts a round on an idle link.
    let link = node.checked_sub(1);
    if let Some(link) = link
        && let Some(mut s) = w.sessions[link].take()
    {
        if s.edge.is_in_sync() {
            s.edge.start(&Replica::new(store.clone()), w.now as u64).map_err(sim_err)?;
        }
        w.sessions[link] = Some(s);
        w.flush(link)?;
    }
    Ok(Ok(Some(id)))
}

/// One simulated minute of work at every node that is up.
pub fn work(w: &mut World) -> anyhow::Result<Result<(), Failure>> {
    for node in 0..w.nodes.len() {
        if w.nodes[node].down_until > w.now {
            continue;
        }
        let r = match w.nodes[node].role {
            Role::Station => station_minute(w, node)?,
            Role::HeadOffice => office_minute(w)?,
            Role::Regulator => regulator_minute(w, node)?,
        };
        if let Err(f) = r {
            return Ok(Err(f));
        }
        // Now and then a node seals what it wrote (a real node seals every 4,096 events
        // and at start): its sealed events then travel without their signatures.
        if w.rng.random_bool(1.0 / 30.0) {
            w.nodes[node].store.seal_all()?;
        }
    }
    Ok(Ok(()))
}

fn station_minute(w: &mut World, node: usize) -> anyhow::Result<Result<(), Failure>> {
    let p = w.cfg.ops_per_hour as f64 / 60.0;
    let mut n = 0;
    while n < 4 && w.rng.random_bool(p.min(1.0)) {
        n += 1;
        let n_held = w.work.held.get(&node).map_or(0, Vec::len);
        if n_held == 0 {
            return Ok(Ok(()));
        }
        let i = w.work.held[&node][w.rng.random_range(0..n_held)];
        let phase = w.work.cylinders[i].1;
        let (store_w, station) = (format!("W-{node}"), w.nodes[node].name.clone());
        let (operator, place, body, next) = match phase {
            Phase::Empty => ("keeper", store_w.clone(), EventBody::ReceiveEmpty { warehouse: store_w }, Phase::Checked),
            Phase::Checked => {
                let passed = w.rng.random_range(0..30) != 0;
                let failed_items = if passed { vec![] } else { vec!["瓶阀".into()] };
                let next = if passed { Phase::Filled } else { Phase::Held };
                ("filler", station, EventBody::PreFillCheck { passed, failed_items }, next)
            }
            Phase::Filled => {
                let g = 14_000 + w.rng.random_range(0..800);
                (
                    "filler",
                    station,
                    EventBody::Fill { medium: Medium::Lpg, filled_mass_g: g, batch: None },
                    Phase::Stored,
                )
            }
            Phase::Stored => (
                "filler",
                format!("F-{node}"),
                EventBody::StoreFull { warehouse: format!("F-{node}") },
                Phase::Dispatched,
            ),
            Phase::Dispatched => {
                ("driver", station, EventBody::Dispatch { order: None, driver: "driver".into() }, Phase::Delivered)
            }
            Phase::Delivered => {
                let customer = format!("C{:04}", w.rng.random_range(0..500));
                ("driver", customer.clone(), EventBody::Deliver { customer, order: None }, Phase::Empty)
            }
            Phase::Held => {
                ("keeper", station, EventBody::SendToInspection { reason: "检查不合格".into() }, Phase::Inspecting)
            }
            Phase::Inspecting => {
                let on = Day(chrono::DateTime::from_timestamp_millis(w.now).unwrap_or_default().date_naive());
                let body = EventBody::InspectionResult {
                    passed: true,
                    report_no: format!("R{}", w.work.next_op),
                    inspected_on: on,
                    next_due: Some(on.plus_years(4)),
                };
                ("inspector", station, body, Phase::Empty)
            }
        };
        let delivered = phase == Phase::Delivered;
        let r = op(w, node, code(i), operator, place, body)?;
        match r {
            Err(f) => return Ok(Err(f)),
            Ok(None) => w.work.cylinders[i].1 = Phase::Held,
            Ok(Some(_)) => {
                w.work.cylinders[i].1 = next;
                if delivered {
                    // The customer returns it, usually here, sometimes to another station.
                    let back = if w.cfg.stations > 1 && w.rng.random_range(0..20) == 0 {
                        1 + w.rng.random_range(0..w.cfg.stations)
                    } else {
                        node
                    };
                    w.work.cylinders[i].0 = back;
                    if back != node {
                        if let Some(v) = w.work.held.get_mut(&node)
                            && let Some(pos) = v.iter().position(|&c| c == i)
                        {
                            v.swap_remove(pos);
                        }
                        w.work.held.entry(back).or_default().push(i);
                    }
                    let customer = format!("C{:04}", w.rng.random_range(0..500));
                    let ret = EventBody::Return { customer: customer.clone(), slip: None };
                    if let Err(f) = op(w, back, code(i), "driver", customer, ret)? {
                        return Ok(Err(f));
                    }
                }
            }
        }
    }
    Ok(Ok(()))
}

fn office_minute(w: &mut World) -> anyhow::Result<Result<(), Failure>> {
    let n = w.work.cylinders.len();
    if n == 0 {
        return Ok(Ok(()));
    }
    if w.rng.random_range(0..480) == 0 {
        let i = w.rng.random_range(0..n);
        let body = EventBody::Scrap { reason: "瓶体腐蚀".into() };
        let held = w.nodes[0].store.events_of(&code(i), usize::MAX).map_err(store_err)?;
        let fills: BTreeSet<EventId> =
            held.iter().filter(|e| matches!(e.event.body, EventBody::Fill { .. })).map(|e| e.id).collect();
        match op(w, 0, code(i), "inspector", "head-office".into(), body)? {
            Err(f) => return Ok(Err(f)),
            Ok(Some(id)) => {
                w.work.scrapped.entry(code(i)).or_insert(id);
                w.work.fills_before_scrap.insert(id, fills);
            }
            Ok(None) => {}
        }
    }
    if w.rng.random_range(0..240) == 0 {
        let i = w.rng.random_range(0..n);
        let tare = 14.0 + w.rng.random_range(0..20) as f64 / 10.0;
        w.nodes[0].tick(w.now);
        w.nodes[0]
            .store
            .write_blocking(move |ctx| ctx.edit_archive(&code(i), |a| a.tare_kg = Some(tare)).map(|_| ()))
            .map_err(store_err)?;
        w.stats.archive_edits += 1;
    }
    Ok(Ok(()))
}

fn regulator_minute(w: &mut World, node: usize) -> anyhow::Result<Result<(), Failure>> {
    let n = w.work.cylinders.len();
    if n == 0 || w.rng.random_range(0..360) != 0 {
        return Ok(Ok(()));
    }
    let release = !w.work.findings.is_empty() && w.rng.random_bool(0.5);
    let (i, finding, action) = if release {
        let keys: Vec<(usize, String)> = w.work.findings.keys().cloned().collect();
        let (i, f) = keys[w.rng.random_range(0..keys.len())].clone();
        w.work.findings.remove(&(i, f.clone()));
        (i, f, FindingAction::Release)
    } else {
        let i = w.rng.random_range(0..n);
        let f = format!("JC-{node}-{}", w.work.next_op);
        w.work.findings.insert((i, f.clone()), ());
        (i, f, FindingAction::Hold)
    };
    let body = EventBody::RegulatorFinding { action, finding: finding.clone(), note: String::new() };
    match op(w, node, code(i), "regulator", "inspection".into(), body)? {
        Err(f) => Ok(Err(f)),
        Ok(Some(id)) => {
            match action {
                FindingAction::Hold => w.work.holds.insert((code(i), finding), id),
                FindingAction::Release => w.work.holds.remove(&(code(i), finding)),
            };
            Ok(Ok(()))
        }
        Ok(None) => Ok(Ok(())),
    }
}
