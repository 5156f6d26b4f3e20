//! The deterministic partition simulator: a head office, stations and regulator laptops,
//! each a real node store (redb on its in-memory backend, the real writer thread, rules,
//! derivation and anomaly detection), replicating through the real sans-IO sync sessions
//! over a simulated network, driven by one seed.
//!
//! Time is simulated (a queue of timed events), so a month of station work runs in
//! seconds and the same seed gives the same run and the same report, byte for byte. The
//! network drops, duplicates, delays (and so reorders) frames, cuts links fully or one
//! way, flaps them; node clocks are skewed by up to days; stations crash (sessions and
//! in-memory checkpoints lost, a write cut mid-commit) and restart; handhelds retry.
//! At the end every link heals and the run checks the invariants in [`oracle`] against
//! the global history of acknowledged operations.

pub mod disk;
pub mod net;
pub mod oracle;
pub mod report;
pub mod workload;

use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use node::clock::Clock;
use node::store::replica::{Replica, scopes};
use node::store::{Store, StoreError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schema::event::EventId;
use sync::session::{Session, SessionOptions};

pub const ENTERPRISE: &str = "3701020001";
/// 2026-06-01T00:00:00Z: simulated time starts here.
pub const T0_MS: i64 = 1_780_272_000_000;
pub const MINUTE: i64 = 60_000;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;
/// Idle rounds (and restarts of stalled ones) on every link. A node does this every
/// second; every 30 simulated seconds keeps long runs fast and changes nothing but lag.
pub const ROUND_EVERY_MS: i64 = 30_000;

/// How hostile the simulated world is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Faults {
    None,
    Light,
    Heavy,
}

impl std::str::FromStr for Faults {
    type Err = String;
    fn from_str(s: &str) -> Result<Faults, String> {
        match s {
            "none" => Ok(Faults::None),
            "light" => Ok(Faults::Light),
            "heavy" => Ok(Faults::Heavy),
            other => Err(format!("faults must be none, light or heavy, got {other:?}")),
        }
    }
}

impl Faults {
    pub fn name(self) -> &'static str {
        match self {
            Faults::None => "none",
            Faults::Light => "light",
            Faults::Heavy => "heavy",
        }
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub stations: usize,
    pub regulators: usize,
    pub cylinders: usize,
    pub days: u32,
    pub faults: Faults,
    /// Handheld operations per station per simulated hour, on average.
    pub ops_per_hour: u32,
    /// After the heal, every node must agree within this much simulated time.
    pub converge_within_ms: i64,
}

impl Config {
    /// The world CI sweeps: like [`Config::small`], over one simulated day.
    pub fn ci(seed: u64) -> Config {
        Config { days: 1, ..Config::small(seed) }
    }

    /// Three stations, a regulator, 60 cylinders, two days, heavy faults.
    pub fn small(seed: u64) -> Config {
        Config {
            seed,
            stations: 3,
            regulators: 1,
            cylinders: 60,
            days: 2,
            faults: Faults::Heavy,
            ops_per_hour: 6,
            converge_within_ms: 2 * MINUTE,
        }
    }
}

/// Sync checkpoints of one side of a link, per scope.
pub type Checkpoints = BTreeMap<Vec<u8>, u64>;

/// A node's clock: simulated time plus its skew; entropy from the run's seed.
#[derive(Debug)]
pub struct SimClock {
    now: AtomicI64,
    seed: u64,
    counter: AtomicU64,
}

impl SimClock {
    fn new(seed: u64) -> SimClock {
        SimClock { now: AtomicI64::new(T0_MS), seed, counter: AtomicU64::new(0) }
    }

    fn set(&self, ms: i64) {
        self.now.store(ms, Ordering::Relaxed);
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::Relaxed)
    }

    fn random_bytes(&self) -> [u8; 32] {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ n.rotate_left(32));
        rng.random()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    HeadOffice,
    Station,
    Regulator,
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    pub name: String,
    pub role: Role,
    pub store: Store,
    /// The disk under its redb file: a crash keeps only what was synced.
    pub disk: disk::Disk,
    pub clock: Arc<SimClock>,
    pub skew_ms: i64,
    /// Down after a crash until this time.
    pub down_until: i64,
}

impl SimNode {
    /// Sets the node's clock to simulated time `now` (plus its skew).
    pub fn tick(&self, now: i64) {
        self.clock.set(now + self.skew_ms);
    }
}

/// A session pair over one link (station or regulator ↔ head office).
#[derive(Debug)]
pub struct LinkSessions {
    /// Initiator: the station or regulator.
    pub edge: Session,
    /// Responder: the head office.
    pub office: Session,
}

/// Timed things that happen, in time order (ties by insertion).
#[derive(Debug, PartialEq, Eq)]
pub struct Timed {
    pub at: i64,
    pub seq: u64,
    pub what: What,
}

#[derive(Debug, PartialEq, Eq)]
pub enum What {
    /// A frame arrives over link `link`; `to_office` says which way.
    Frame { link: usize, to_office: bool, frame: sync::frame::Frame, epoch: u64 },
    /// Handheld work at every node.
    Work,
    /// Idle rounds and retry timers of every link.
    Rounds,
    /// A link's fault state changes.
    LinkChange { link: usize },
    /// A station crashes (and comes back later).
    Crash { node: usize },
}

impl Ord for Timed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: the earliest first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Why a run failed: the first broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub invariant: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// The world of one run.
#[derive(Debug)]
pub struct World {
    pub cfg: Config,
    pub rng: ChaCha8Rng,
    pub now: i64,
    pub nodes: Vec<SimNode>,
    /// One per edge node (node index = link index + 1).
    pub links: Vec<net::Link>,
    pub sessions: Vec<Option<LinkSessions>>,
    /// Per link: checkpoints kept by the edge node and by the office (lost in crashes).
    pub checkpoints: Vec<(Checkpoints, Checkpoints)>,
    pub queue: BinaryHeap<Timed>,
    seq: u64,
    pub work: workload::Workload,
    /// Every event acknowledged to a handheld (or written at set-up), by id.
    pub acked: BTreeMap<EventId, i64>,
    pub stats: report::Stats,
    pub series: report::Series,
}

fn sim_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

impl World {
    pub fn new(cfg: Config) -> anyhow::Result<World> {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut nodes = Vec::new();
        let roles = std::iter::once(Role::HeadOffice)
            .chain(std::iter::repeat_n(Role::Station, cfg.stations))
            .chain(std::iter::repeat_n(Role::Regulator, cfg.regulators));
        for (i, role) in roles.enumerate() {
            let clock = Arc::new(SimClock::new(cfg.seed.wrapping_mul(1000).wrapping_add(i as u64)));
            let skew_ms = match (cfg.faults, role) {
                (_, Role::HeadOffice) | (Faults::None, _) => 0,
                (Faults::Light, _) => rng.random_range(-10 * MINUTE..=10 * MINUTE),
                (Faults::Heavy, _) => rng.random_range(-2 * DAY..=2 * DAY),
            };
            let disk = disk::Disk::default();
            let node = SimNode {
                name: match role {
                    Role::HeadOffice => "head-office".to_owned(),
                    Role::Station => format!("station-{i}"),
                    Role::Regulator => format!("regulator-{}", i - cfg.stations),
                },
                role,
                store: open_store(&disk, clock.clone())?,
                disk,
                clock,
                skew_ms,
                down_until: 0,
            };
            node.tick(T0_MS);
            nodes.push(node);
        }
        let edges = nodes.len() - 1;
        let links = (0..edges).map(|_| net::Link::new(cfg.faults)).collect();
        let mut world = World {
            work: workload::Workload::new(&cfg),
            cfg,
            rng,
            now: T0_MS,
            nodes,
            links,
            sessions: (0..edges).map(|_| None).collect(),
            checkpoints: (0..edges).map(|_| Default::default()).collect(),
            queue: BinaryHeap::new(),
            seq: 0,
            acked: BTreeMap::new(),
            stats: report::Stats::default(),
            series: report::Series::default(),
        };
        workload::set_up(&mut world)?;
        Ok(world)
    }

    pub fn schedule(&mut self, at: i64, what: What) {
        self.seq += 1;
        self.queue.push(Timed { at, seq: self.seq, what });
    }

    /// Opens the sessions of a link (a connection), with the checkpoints both sides kept.
    pub fn connect(&mut self, link: usize) -> anyhow::Result<()> {
        let (edge_ckpt, office_ckpt) = self.checkpoints[link].clone();
        let opts = |initiator, checkpoints| SessionOptions {
            initiator,
            scopes: scopes(ENTERPRISE),
            checkpoints,
            items_per_frame: 512,
            retry_ms: 3_000,
            // The simulated world's pushes are small: mark every 4 KiB (a few dozen events)
            // so that marks, their answers and resumed pushes happen under its faults.
            mark_bytes: 4 << 10,
            ..SessionOptions::default()
        };
        let mut s =
            LinkSessions { edge: Session::new(opts(true, edge_ckpt)), office: Session::new(opts(false, office_ckpt)) };
        let edge = Replica::new(self.nodes[link + 1].store.clone());
        s.edge.start(&edge, self.now as u64).map_err(sim_err)?;
        self.sessions[link] = Some(s);
        self.links[link].epoch += 1;
        self.stats.connections += 1;
        self.flush(link)
    }

    /// Closes a link's sessions (the connection broke); frames in flight are lost.
    pub fn disconnect(&mut self, link: usize) {
        if let Some(s) = self.sessions[link].take() {
            self.checkpoints[link] = (s.edge.checkpoints().clone(), s.office.checkpoints().clone());
            self.stats.pushes_confirmed += s.edge.stats.pushes_confirmed + s.office.stats.pushes_confirmed;
        }
        self.links[link].epoch += 1;
    }

    /// Sends whatever both sessions of a link have queued into the network.
    pub fn flush(&mut self, link: usize) -> anyhow::Result<()> {
        let Some(mut s) = self.sessions[link].take() else { return Ok(()) };
        let edge = Replica::new(self.nodes[link + 1].store.clone());
        let office = Replica::new(self.nodes[0].store.clone());
        let mut out = Vec::new();
        while let Some(f) = s.edge.poll_transmit(&edge).map_err(sim_err)? {
            out.push((true, f));
        }
        while let Some(f) = s.office.poll_transmit(&office).map_err(sim_err)? {
            out.push((false, f));
        }
        self.sessions[link] = Some(s);
        for (to_office, frame) in out {
            let bytes = frame.encode();
            self.stats.frames += 1;
            self.stats.bytes += bytes.len() as u64;
            if std::env::var_os("SIM_DEBUG_FRAMES").is_some() {
                let kind = format!("{frame:?}").split([' ', '{']).next().unwrap_or("").to_owned();
                *self.stats.by_kind.entry(kind).or_default() += bytes.len() as u64;
            }
            // Through the encoding, as on the wire.
            let frame = sync::frame::Frame::decode(&bytes[4..]).map_err(sim_err)?;
            let epoch = self.links[link].epoch;
            for delay in self.links[link].deliveries(&mut self.rng, to_office) {
                self.schedule(self.now + delay, What::Frame { link, to_office, frame: frame.clone(), epoch });
            }
        }
        Ok(())
    }

    /// A frame arrives.
    fn deliver(&mut self, link: usize, to_office: bool, frame: sync::frame::Frame, epoch: u64) -> anyhow::Result<()> {
        if epoch != self.links[link].epoch {
            return Ok(()); // sent over a connection that has since broken
        }
        let Some(mut s) = self.sessions[link].take() else { return Ok(()) };
        let (node, session) = if to_office { (0, &mut s.office) } else { (link + 1, &mut s.edge) };
        self.nodes[node].tick(self.now);
        let mut replica = Replica::new(self.nodes[node].store.clone());
        let result = session.handle(frame, &mut replica, self.now as u64);
        for reason in session.take_refusals() {
            self.stats.refusals.push(format!("{} refused: {reason}", self.nodes[node].name));
        }
        self.sessions[link] = Some(s);
        result.map_err(sim_err)?;
        self.flush(link)
    }

    /// Every link: restart stalled rounds, start idle ones, note lag.
    fn rounds(&mut self) -> anyhow::Result<()> {
        for link in 0..self.links.len() {
            let edge_up = self.nodes[link + 1].down_until <= self.now;
            if self.sessions[link].is_none() && edge_up && self.links[link].state != net::State::Down {
                // The edge node's reconnect loop finds the link usable again.
                self.connect(link)?;
                continue;
            }
            let Some(mut s) = self.sessions[link].take() else { continue };
            let edge = Replica::new(self.nodes[link + 1].store.clone());
            self.nodes[link + 1].tick(self.now);
            s.edge.handle_timeout(&edge, self.now as u64).map_err(sim_err)?;
            if s.edge.is_in_sync() {
                s.edge.start(&edge, self.now as u64).map_err(sim_err)?;
            }
            self.sessions[link] = Some(s);
            self.flush(link)?;
        }
        Ok(())
    }

    /// Runs the simulated days, then heals everything and waits for agreement.
    pub fn run(&mut self, progress: &dyn Fn(i64, i64)) -> anyhow::Result<Result<report::Outcome, Failure>> {
        let end = T0_MS + self.cfg.days as i64 * DAY;
        for link in 0..self.links.len() {
            self.schedule(self.now, What::LinkChange { link });
        }
        self.schedule(self.now + MINUTE, What::Work);
        self.schedule(self.now + ROUND_EVERY_MS, What::Rounds);
        workload::schedule_crashes(self);
        while let Some(t) = self.queue.pop() {
            if t.at > end {
                self.queue.push(t);
                break;
            }
            self.now = t.at;
            match t.what {
                What::Frame { link, to_office, frame, epoch } => self.deliver(link, to_office, frame, epoch)?,
                What::Work => {
                    if let Err(f) = workload::work(self)? {
                        return Ok(Err(f));
                    }
                    let mut series = std::mem::take(&mut self.series);
                    series.sample(self);
                    self.series = series;
                    progress(self.now - T0_MS, end - T0_MS);
                    self.schedule(self.now + MINUTE, What::Work);
                }
                What::Rounds => {
                    self.rounds()?;
                    self.schedule(self.now + ROUND_EVERY_MS, What::Rounds);
                }
                What::LinkChange { link } => net::change(self, link)?,
                What::Crash { node } => workload::crash(self, node)?,
            }
        }
        // Heal: every node up, every link clean and connected, no more work.
        let healed_at = end;
        self.now = end;
        self.queue.clear();
        for n in &mut self.nodes {
            n.down_until = 0;
        }
        for link in 0..self.links.len() {
            self.links[link].heal();
            self.disconnect(link);
            self.connect(link)?;
        }
        let deadline = healed_at + self.cfg.converge_within_ms;
        let mut next_round = self.now + 1_000;
        loop {
            if oracle::agreed(self)? {
                break;
            }
            let next = self.queue.peek().map(|t| t.at);
            match next {
                Some(at) if at <= next_round => {
                    let Some(t) = self.queue.pop() else { break };
                    self.now = t.at;
                    if let What::Frame { link, to_office, frame, epoch } = t.what {
                        self.deliver(link, to_office, frame, epoch)?;
                    }
                }
                _ => {
                    self.now = next_round;
                    self.rounds()?;
                    next_round += 1_000;
                }
            }
            if self.now > deadline {
                return Ok(Err(Failure {
                    invariant: "convergence",
                    detail: format!(
                        "nodes still disagree {} s after the heal (bound {} s)",
                        (self.now - healed_at) / 1000,
                        self.cfg.converge_within_ms / 1000
                    ),
                }));
            }
        }
        let converged_ms = self.now - healed_at;
        // Let the last rounds finish (InSync frames) so sessions settle.
        while let Some(t) = self.queue.pop() {
            self.now = t.at;
            if let What::Frame { link, to_office, frame, epoch } = t.what {
                self.deliver(link, to_office, frame, epoch)?;
            }
        }
        match oracle::check(self)? {
            Err(f) => Ok(Err(f)),
            Ok(()) => Ok(Ok(report::Outcome { converged_ms })),
        }
    }
}

/// Runs one seed to completion: the report text, and the failure if an invariant broke.
pub fn run(cfg: Config, progress: &dyn Fn(i64, i64)) -> anyhow::Result<(report::Report, Option<Failure>)> {
    let mut world = World::new(cfg)?;
    let outcome = world.run(progress)?;
    let report = report::Report::of(&world, &outcome);
    if std::env::var_os("SIM_DEBUG_FRAMES").is_some() {
        eprintln!("{:?}", world.stats.by_kind);
    }
    let failure = outcome.err();
    for n in world.nodes.drain(..) {
        n.store.shutdown();
    }
    Ok((report, failure))
}

fn open_store(disk: &disk::Disk, clock: Arc<SimClock>) -> anyhow::Result<Store> {
    let options = node::store::StoreOptions {
        enterprise: ENTERPRISE.into(),
        cache_bytes: 4 << 20,
        quick_repair: false,
        judge: schema::anomaly::Judge::embedded(ENTERPRISE),
    };
    Store::on_backend(disk.clone(), options, clock).map_err(sim_err)
}

impl World {
    /// A power cut at `node`: the disk keeps what was synced (and the first `torn`
    /// writes after it), the process restarts and opens its file again (redb repairs it).
    pub fn restart(&mut self, node: usize, torn: usize) -> anyhow::Result<()> {
        let survived = self.nodes[node].disk.crash(torn);
        let store = open_store(&survived, self.nodes[node].clock.clone())?;
        let old = std::mem::replace(&mut self.nodes[node].store, store);
        self.nodes[node].disk = survived;
        // The old process is gone: its writer stops, and its disk takes nothing more.
        old.shutdown();
        self.stats.restarts += 1;
        Ok(())
    }
}

/// A write job failed in the store.
pub fn store_err(e: StoreError) -> anyhow::Error {
    anyhow::anyhow!("store: {e}")
}

#[cfg(test)]
mod tests;
