//! Replication benchmark with real node processes over real QUIC (mutual TLS) on
//! loopback: a head office and one enrolled station holding demo data.
//!
//! 1. first sync of the station to the empty head office (time from the station's start
//!    until both hold the same events and documents, looked at every 10 ms; bytes as the
//!    head office counted them);
//! 2. reconnect with nothing changed (station restarted): the first round's time, bytes
//!    and flights, as the station counted them;
//! 3. reconnect after 100 cylinders were filled at the station while the head office was
//!    down: the same figures, and the round's bytes over the bytes of the items sent;
//! 4. live: a handheld operation at the station until the head office lists the event
//!    (polled every millisecond), over `--live` operations;
//! 5. a second station (another region, 200 demo cylinders) joins and takes in the first
//!    one's data relayed by the head office, while its keeper scans without a pause: how
//!    long each scan took to be acknowledged during that intake, and after it. The station
//!    must never make its staff wait on the link.
//!
//! With `--stations K` (K > 1) it measures only the head office's cold ingest instead: K
//! stations (regions 370102, 370103, ...), each with `--cylinders` demo cylinders, start
//! together against an empty head office; the figure is events per second until the
//! head office holds them all, and its peak memory, and the CPU the head office used until
//! then (on this one machine the stations, storing what the head office relays to each of
//! them, take most of the cores). Then the stations stop and it waits for the head
//! office's traceability index.
//!
//! `--keep` leaves the nodes' data directories and logs in place (the path is printed).
//! `--stations-from DIR` (with `--stations`) copies each station's demo data from
//! `DIR/station-<k>` when it is there and otherwise writes it and leaves a copy there, so
//! that alternated runs need not write the stations' data each time (most of a run at
//! 5,000 cylinders). The copies are taken before enrolment; what is measured starts after.
//!
//! ```text
//! cargo build --release -p node -p simulations
//! cargo run --release -p simulations --bin net_bench -- --cylinders 10000 --live 200
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use handheld_proto::client::Client;
use handheld_proto::{ListQuery, Operation, OperationRequest, PeerView};
use simulations::proc::{cpu_seconds, node_bin, rss_kib, spawn, terminate, wait_healthy};
use simulations::stats::{ms, percentile};

/// One unlabelled figure from a node's `/metrics`.
fn metric(url: &str, name: &str) -> Option<f64> {
    let text = ureq::get(format!("{url}/metrics")).call().ok()?.body_mut().read_to_string().ok()?;
    let line = text.lines().find(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn node_cmd(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(node_bin()?).args(args).output()?;
    if !out.status.success() {
        bail!("node {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A one-time enrolment code for `name`, made in the (stopped) head office's data.
fn enrolment_code(ho_data: &str, name: &str) -> anyhow::Result<String> {
    let out = node_cmd(&["enrolment", "create", "--name", name, "--data", ho_data])?;
    Ok(out.lines().last().context("no code printed")?.trim().to_owned())
}

/// How many events the node at `url` holds.
fn events_held(url: &str) -> anyhow::Result<u64> {
    Ok(Client::new(url).health().map_err(|e| anyhow::anyhow!("{e:?}"))?.events)
}

/// p50, p99 and max of sorted latencies.
fn spread(sorted: &[Duration]) -> String {
    format!(
        "p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        ms(percentile(sorted, 50.0)),
        ms(percentile(sorted, 99.0)),
        ms(sorted.last().copied().unwrap_or_default())
    )
}

struct Node {
    child: Child,
    url: String,
}

fn start(dir: &Path, name: &str, http: u16, extra: &[String]) -> anyhow::Result<Node> {
    let mut args: Vec<String> =
        ["run", "--mdns", "off", "--http", &format!("127.0.0.1:{http}"), "--data"].map(String::from).to_vec();
    args.push(dir.join(name).display().to_string());
    args.extend(extra.iter().cloned());
    let mut child = spawn(&args, &dir.join(format!("{name}.log")))?;
    let url = format!("http://127.0.0.1:{http}");
    wait_healthy(&mut child, &url, Duration::from_secs(1800))?;
    Ok(Node { child, url })
}

fn fingerprints(url: &str) -> Option<(String, String)> {
    Client::new(url).health().ok().map(|h| (h.events_fingerprint, h.documents_fingerprint))
}

/// Waits until both nodes report the same fingerprints, asking both every `every`. Each
/// look is an HTTP request to each node; during a first sync, looking every millisecond
/// took about a tenth of a core from the two nodes and this program together.
fn wait_equal(a: &str, b: &str, within: Duration, every: Duration) -> anyhow::Result<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        let (x, y) = (fingerprints(a), fingerprints(b));
        if x.is_some() && x == y {
            return Ok(t.elapsed());
        }
        std::thread::sleep(every);
    }
    bail!("not in sync within {within:?}")
}

fn login(url: &str, account: &str) -> anyhow::Result<Client> {
    let mut c = Client::new(url);
    c.login(account, "demo-pass").map_err(|e| anyhow::anyhow!("login {account}: {e:?}"))?;
    Ok(c)
}

/// The station's view of the head office once its latest session reached sync.
fn upstream_round(station: &Client, within: Duration) -> anyhow::Result<PeerView> {
    let t = Instant::now();
    while t.elapsed() < within {
        let peers = station.peers().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if let Some(p) = peers.into_iter().find(|p| p.connected && p.first_round_ms.is_some() && p.lag_ms == 0) {
            return Ok(p);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!("the station did not reach sync within {within:?}")
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut cylinders, mut live, mut stations, mut keep) = (10_000usize, 200usize, 1usize, false);
    let mut stations_from: Option<std::path::PathBuf> = None;
    let mut catch_up = 0usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cylinders" => cylinders = args.next().context("--cylinders N")?.parse()?,
            "--live" => live = args.next().context("--live N")?.parse()?,
            "--stations" => stations = args.next().context("--stations N")?.parse()?,
            "--keep" => keep = true,
            "--stations-from" => stations_from = Some(args.next().context("--stations-from DIR")?.into()),
            "--catch-up" => catch_up = args.next().context("--catch-up N")?.parse()?,
            other => {
                bail!(
                    "unknown flag {other}; flags: --cylinders N --live N --stations N --keep --stations-from DIR --catch-up N"
                )
            }
        }
    }
    let dir = tempfile::tempdir()?;
    // `--keep`: the nodes' data directories and logs stay for a look afterwards.
    let (d, _dir) = match keep {
        true => (dir.keep(), None),
        false => (dir.path().to_owned(), Some(dir)),
    };
    if keep {
        eprintln!("keeping the nodes' data and logs in {}", d.display());
    }
    let d = d.as_path();
    if stations > 1 {
        return ingest(d, stations, cylinders, stations_from.as_deref());
    }
    let (ho_http, st_http, quic) = (free_port()?, free_port()?, free_port()?);
    let ho_data = d.join("head-office").display().to_string();
    let st_data = d.join("station").display().to_string();

    eprintln!("generating demo data: {cylinders} cylinders at the station ...");
    let mut st = start(d, "station", st_http, &["--demo".into(), "--demo-cylinders".into(), cylinders.to_string()])?;
    let health = Client::new(&st.url).health().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    terminate(&mut st.child);
    eprintln!("  {} cylinders, {} events", health.cylinders, health.events);

    let code = enrolment_code(&ho_data, "station-1")?;
    let second_code = enrolment_code(&ho_data, "station-2")?;
    let ho_args = ["--role".to_owned(), "head-office".into(), "--quic".into(), format!("127.0.0.1:{quic}")];
    let mut ho = start(d, "head-office", ho_http, &ho_args)?;
    node_cmd(&["enrol", "--head-office", &ho.url, "--code", &code, "--data", &st_data])?;
    let st_args = ["--upstream".to_owned(), format!("127.0.0.1:{quic}")];

    // 1. First sync.
    let t = Instant::now();
    st = start(d, "station", st_http, &st_args)?;
    let started = t.elapsed();
    // Every 10 ms: a first sync takes seconds, and the nodes' CPU is what it measures.
    wait_equal(&ho.url, &st.url, Duration::from_secs(3600), Duration::from_millis(10))?;
    let first = t.elapsed();
    let office = login(&ho.url, "demo-manager")?;
    let ho_view = office.peers().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let ho_peer = ho_view.iter().find(|p| p.connected).context("station not connected at the head office")?;
    let first_bytes = ho_peer.bytes_in + ho_peer.bytes_out;
    let (ho_rss, ho_peak) = rss_kib(ho.child.id());
    let (ho_cpu, st_cpu) = (cpu_seconds(ho.child.id()), cpu_seconds(st.child.id()));
    // How much of the first sync the head office's writer spent in write batches.
    let writer_s = metric(&ho.url, "node_store_commit_micros_total").map_or(0.0, |us| us / 1e6);
    let (commits, jobs) = (
        metric(&ho.url, "node_store_commits_total").unwrap_or_default(),
        metric(&ho.url, "node_store_jobs_total").unwrap_or_default(),
    );
    // Received events reach the traceability index in the head office's idle-time passes.
    while metric(&ho.url, "node_index_backlog_events").is_none_or(|n| n > 0.0) {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(3600), "the index backlog never emptied");
        std::thread::sleep(Duration::from_millis(100));
    }
    let indexed = t.elapsed();
    // Then merges its runs (a head office between a station's visits has the time): the
    // reconnects below are measured against a head office that has done its idle work.
    wait_idle(&ho.url)?;
    let idle_done = t.elapsed();

    // 2. Reconnect with nothing changed: restart the station.
    terminate(&mut st.child);
    st = start(d, "station", st_http, &st_args)?;
    let manager = login(&st.url, "demo-manager")?;
    let idle = upstream_round(&manager, Duration::from_secs(60))?;

    // 3. The head office goes down; 100 cylinders are filled at the station; it comes back.
    terminate(&mut ho.child);
    let filler = login(&st.url, "demo-filler")?;
    let list = manager
        .cylinders(&ListQuery { medium: Some("lpg".into()), page_size: Some(500), ..Default::default() })
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut filled = 0;
    for c in &list.items {
        if filled == 100 {
            break;
        }
        let op = Operation::Fill { medium: "lpg".into(), filled_mass_kg: 14.0, batch: None };
        let req = OperationRequest { op_id: format!("bench-fill-{}", c.code), code: c.code.clone(), op };
        if filler.operation(&req).is_ok() {
            filled += 1;
        }
    }
    ho = start(d, "head-office", ho_http, &ho_args)?;
    std::thread::sleep(Duration::from_millis(100));
    let changed = upstream_round(&manager, Duration::from_secs(60))?;
    wait_equal(&ho.url, &st.url, Duration::from_secs(60), Duration::from_millis(1))?;

    // 4. Live: one operation at the station until the head office lists it.
    let office = login(&ho.url, "demo-manager")?;
    let keeper = login(&st.url, "demo-keeper")?;
    let mut lat = Vec::with_capacity(live);
    let mut slowest_lookup = Duration::ZERO;
    for i in 0..live {
        let code = &list.items[i % list.items.len()].code;
        let warehouse = if i % 2 == 0 { "空瓶左库" } else { "空瓶右库" };
        let req = OperationRequest {
            op_id: format!("bench-live-{i}"),
            code: code.clone(),
            op: Operation::ReceiveEmpty { warehouse: warehouse.into() },
        };
        let resp = keeper.operation(&req).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let acked = Instant::now();
        loop {
            let asked = Instant::now();
            let events = office.events(code).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            // A slow answer is the look-up's own time, not replication's: kept apart.
            slowest_lookup = slowest_lookup.max(asked.elapsed());
            if events.iter().any(|e| e.id == resp.event.id) {
                break;
            }
            if acked.elapsed() > Duration::from_secs(10) {
                bail!("operation {i} not at the head office after 10 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        lat.push(acked.elapsed());
    }
    lat.sort();

    // 5. A week offline: the station stops, its week of work is written into its data
    // directory, and it starts again and pushes the week to the head office, which ran
    // throughout (its idle work done meanwhile, as in a week).
    let week = match catch_up {
        0 => None,
        n => {
            let before = events_held(&st.url)?;
            terminate(&mut st.child);
            let t = Instant::now();
            node_cmd(&["demo", "week", "--data", &st_data, "--events", &n.to_string()])?;
            let written = t.elapsed();
            wait_idle(&ho.url)?;
            let ho_before = (
                metric(&ho.url, "node_store_commit_micros_total").unwrap_or(0.0),
                cpu_seconds(ho.child.id()),
                metric(&ho.url, "node_store_commits_total").unwrap_or(0.0),
                metric(&ho.url, "node_store_jobs_total").unwrap_or(0.0),
            );
            let t = Instant::now();
            st = start(d, "station", st_http, &st_args)?;
            let started = t.elapsed();
            wait_equal(&ho.url, &st.url, Duration::from_secs(3600), Duration::from_millis(10))?;
            let took = t.elapsed();
            Some(Week {
                events: events_held(&st.url)? - before,
                written,
                started,
                took,
                round: upstream_round(&login(&st.url, "demo-manager")?, Duration::from_secs(60))?,
                writer_s: metric(&ho.url, "node_store_commit_micros_total").map_or(0.0, |us| (us - ho_before.0) / 1e6),
                cpu: (cpu_seconds(ho.child.id()) - ho_before.1, cpu_seconds(st.child.id())),
                commits: metric(&ho.url, "node_store_commits_total").map_or(0.0, |n| n - ho_before.2),
                jobs: metric(&ho.url, "node_store_jobs_total").map_or(0.0, |n| n - ho_before.3),
            })
        }
    };

    // 6. A second station joins and takes in the first one's data while its keeper scans
    // (not after a catch-up: at the sizes one is measured, it would relay millions).
    let second = match week {
        None => Some(joining_station(d, &ho, &second_code, &ho_args[3])?),
        Some(_) => None,
    };
    terminate(&mut st.child);
    terminate(&mut ho.child);
    println!(
        "net_bench (node processes, QUIC + mutual TLS on loopback): {} cylinders, {} events",
        health.cylinders, health.events
    );
    println!(
        "  first sync to an empty head office  {:>8.2} s (station start {:.2} s)  {:>8.2} MB of frames",
        first.as_secs_f64(),
        started.as_secs_f64(),
        first_bytes as f64 / 1e6
    );
    println!(
        "    head office RSS {:.0} MiB, peak {:.0} MiB; its writer busy {:.1} s of it in {commits} commits of {jobs} jobs",
        ho_rss as f64 / 1024.0,
        ho_peak as f64 / 1024.0,
        writer_s
    );
    println!("    CPU used so far: head office {ho_cpu:.1} s, station {st_cpu:.1} s (2 cores here)");
    println!("    items the head office stored {}, refused {}", ho_peer.items_received, ho_peer.items_refused);
    println!(
        "    traceability index complete at the head office {:.2} s after the station started",
        indexed.as_secs_f64()
    );
    println!("    its idle work (runs merged) done {:.2} s after the station started", idle_done.as_secs_f64());
    let round = |p: &PeerView| {
        format!(
            "{:>4} ms  {:>6} B  {} flights",
            p.first_round_ms.unwrap_or(-1),
            p.first_round_bytes.unwrap_or(0),
            p.first_round_flights.unwrap_or(0)
        )
    };
    println!("  reconnect, nothing changed          {}", round(&idle));
    let items = changed.first_round_item_bytes.unwrap_or(0);
    println!(
        "  reconnect, {filled} cylinders filled      {}; items {} B ({:.2}×)",
        round(&changed),
        items,
        changed.first_round_bytes.unwrap_or(0) as f64 / items.max(1) as f64
    );
    println!("  live, station operation → head office  {}  ({} operations)", spread(&lat), lat.len());
    println!("    slowest single look-up at the head office {:.1} ms", ms(slowest_lookup));
    if let Some(week) = week {
        week.print();
    }
    if let Some(second) = second {
        second.print();
    }
    Ok(())
}

/// Waits until the node at `url` has no idle work left (`node_store_idle_work`: index
/// passes, run merges).
fn wait_idle(url: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    while metric(url, "node_store_idle_work").is_none_or(|n| n > 0.0) {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(3600), "the node's idle work never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A station's week offline pushed to the head office.
struct Week {
    /// Events the station held more afterwards.
    events: u64,
    /// Time `node demo week` took to write them.
    written: Duration,
    /// Time to start the station process, and until both held the same.
    started: Duration,
    took: Duration,
    /// The station's view of its first round.
    round: PeerView,
    /// The head office's writer busy meanwhile (s).
    writer_s: f64,
    /// CPU seconds: the head office's meanwhile, the station's since it started.
    cpu: (f64, f64),
    /// The head office's commits and jobs meanwhile.
    commits: f64,
    jobs: f64,
}

impl Week {
    fn print(&self) {
        println!(
            "  catch-up after a week offline ({} events written at the station in {:.1} s)  {:.2} s (station start {:.2} s)  {:.2} MB, {} flights",
            self.events,
            self.written.as_secs_f64(),
            self.took.as_secs_f64(),
            self.started.as_secs_f64(),
            self.round.first_round_bytes.unwrap_or(0) as f64 / 1e6,
            self.round.first_round_flights.unwrap_or(0)
        );
        println!(
            "    head office writer busy {:.1} s in {} commits of {} jobs; CPU meanwhile: head office {:.1} s, station {:.1} s (since its start)",
            self.writer_s, self.commits, self.jobs, self.cpu.0, self.cpu.1
        );
    }
}

/// Scan latencies at a station that joins while the head office relays it everything.
struct Joining {
    intake: Duration,
    relayed: u64,
    during: Vec<Duration>,
    after: Vec<Duration>,
}

impl Joining {
    fn print(&self) {
        let line = |l: &[Duration]| format!("{}  ({} scans)", spread(l), l.len());
        println!(
            "  a second station joins: {} relayed events taken in within {:.2} s; its keeper's scans meanwhile",
            self.relayed,
            self.intake.as_secs_f64()
        );
        println!("    during the intake  {}", line(&self.during));
        println!("    after it           {}", line(&self.after));
    }
}

/// Station 2 (region 370103, 200 demo cylinders) connects to the head office, which holds
/// station 1's data; its keeper receives empties back to back, each timed from request to
/// acknowledgement, until the station holds everything the head office had.
fn joining_station(d: &Path, ho: &Node, code: &str, quic: &str) -> anyhow::Result<Joining> {
    let config = d.join("station-2.toml");
    std::fs::write(&config, "station_name = \"站二\"\nregion = \"370103\"\n")?;
    let config = ["--config".to_owned(), config.display().to_string()];
    let http = free_port()?;
    let mut args = config.to_vec();
    args.extend(["--demo".into(), "--demo-cylinders".into(), "200".into()]);
    let mut st = start(d, "station-2", http, &args)?;
    let own = events_held(&st.url)?;
    terminate(&mut st.child);
    let data = d.join("station-2").display().to_string();
    node_cmd(&["enrol", "--head-office", &ho.url, "--code", code, "--data", &data])?;
    let office = events_held(&ho.url)?;
    let mut args = config.to_vec();
    args.extend(["--upstream".into(), quic.to_owned()]);
    let t = Instant::now();
    let mut st = start(d, "station-2", http, &args)?;
    let keeper = login(&st.url, "demo-keeper")?;
    let list = login(&st.url, "demo-manager")?
        .cylinders(&ListQuery { page_size: Some(200), ..Default::default() })
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    anyhow::ensure!(!list.items.is_empty(), "station 2 lists no cylinders");
    let mut scan = |i: usize| -> anyhow::Result<Duration> {
        let req = OperationRequest {
            op_id: format!("bench-join-{i}"),
            code: list.items[i % list.items.len()].code.clone(),
            op: Operation::ReceiveEmpty {
                warehouse: if i.is_multiple_of(2) { "空瓶左库" } else { "空瓶右库" }.into()
            },
        };
        let asked = Instant::now();
        keeper.operation(&req).map_err(|e| anyhow::anyhow!("scan {i}: {e:?}"))?;
        Ok(asked.elapsed())
    };
    // Everything the head office held, its own demo events and each scan's event.
    let (mut during, mut i) = (Vec::new(), 0usize);
    let intake = loop {
        if i.is_multiple_of(10) {
            let held = events_held(&st.url)?;
            if held >= office + own + i as u64 {
                break t.elapsed();
            }
            anyhow::ensure!(t.elapsed() < Duration::from_secs(3600), "station 2 never caught up");
        }
        during.push(scan(i)?);
        i += 1;
    };
    let mut after: Vec<Duration> = (i..i + 200).map(&mut scan).collect::<anyhow::Result<_>>()?;
    terminate(&mut st.child);
    during.sort();
    after.sort();
    Ok(Joining { intake, relayed: office, during, after })
}

/// Copies a stopped node's data directory (`cp -r`: one redb file and a few small ones).
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp").arg("-r").arg(from).arg(to).status()?;
    if !status.success() {
        bail!("cp -r {} {}: {status}", from.display(), to.display());
    }
    Ok(())
}

/// K stations with distinct regions sync into an empty head office at once.
fn ingest(d: &Path, stations: usize, cylinders: usize, from: Option<&Path>) -> anyhow::Result<()> {
    let mut total = 0u64;
    let mut station_args = Vec::new();
    // Each station's demo data is written by its own node process, two at a time (one
    // per core): with 50,000 cylinders each, one at a time took about an hour.
    let generate = |k: usize, port: u16| -> anyhow::Result<(u64, (String, Vec<String>))> {
        let name = format!("station-{k}");
        let config = d.join(format!("{name}.toml"));
        std::fs::write(&config, format!("station_name = \"站{k}\"\nregion = \"3701{:02}\"\n", 2 + k))?;
        let extra = vec!["--config".to_owned(), config.display().to_string()];
        // A copy made by an earlier run: its data and the events it held.
        let kept = from.map(|f| (f.join(&name), f.join(format!("{name}.events"))));
        if let Some((data, held)) = kept.as_ref().filter(|(data, _)| data.is_dir()) {
            let held: u64 = std::fs::read_to_string(held)
                .with_context(|| format!("{}", held.display()))?
                .trim()
                .parse()
                .with_context(|| format!("{}: not a count of events", held.display()))?;
            eprintln!("copying {name}'s demo data ({held} events) from {}", data.display());
            copy_dir(data, &d.join(&name))?;
            return Ok((held, (name, extra)));
        }
        eprintln!("generating demo data: {cylinders} cylinders at {name} ...");
        let mut args = extra.clone();
        args.extend(["--demo".into(), "--demo-cylinders".into(), cylinders.to_string()]);
        let mut st = start(d, &name, port, &args)?;
        let held = events_held(&st.url);
        terminate(&mut st.child);
        let held = held?;
        if let Some((data, count)) = kept {
            // Under another name until whole, so that a copy cut short is never taken.
            let partial = data.with_extension("partial");
            if let Some(parent) = data.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let _ = std::fs::remove_dir_all(&partial);
            copy_dir(&d.join(&name), &partial)?;
            std::fs::write(count, held.to_string())?;
            std::fs::rename(&partial, &data)?;
        }
        Ok((held, (name, extra)))
    };
    for pair in (0..stations).collect::<Vec<_>>().chunks(2) {
        let ports: Vec<u16> = pair.iter().map(|_| free_port()).collect::<anyhow::Result<_>>()?;
        let made: Vec<anyhow::Result<_>> = std::thread::scope(|s| {
            let running: Vec<_> =
                pair.iter().zip(&ports).map(|(&k, &port)| s.spawn(move || generate(k, port))).collect();
            running
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a generating thread panicked"))))
                .collect()
        });
        for m in made {
            let (held, args) = m?;
            total += held;
            station_args.push(args);
        }
    }
    let (ho_http, quic) = (free_port()?, free_port()?);
    let ho_data = d.join("head-office").display().to_string();
    let codes: Vec<String> =
        station_args.iter().map(|(name, _)| enrolment_code(&ho_data, name)).collect::<anyhow::Result<_>>()?;
    let ho_args = ["--role".to_owned(), "head-office".into(), "--quic".into(), format!("127.0.0.1:{quic}")];
    let mut ho = start(d, "head-office", ho_http, &ho_args)?;
    for ((name, _), code) in station_args.iter().zip(&codes) {
        let data = d.join(name).display().to_string();
        node_cmd(&["enrol", "--head-office", &ho.url, "--code", code, "--data", &data])?;
    }
    let t = Instant::now();
    let mut running = Vec::new();
    for (name, extra) in &station_args {
        let mut args = extra.to_vec();
        args.extend(["--upstream".into(), format!("127.0.0.1:{quic}")]);
        running.push(start(d, name, free_port()?, &args)?);
    }
    let mut peak = 0;
    let mut said = Instant::now();
    loop {
        let held = events_held(&ho.url)?;
        peak = peak.max(rss_kib(ho.child.id()).1);
        if held >= total {
            break;
        }
        if said.elapsed() > Duration::from_secs(10) {
            said = Instant::now();
            eprintln!("  {:.0} s: {held} of {total} events, RSS peak {} MiB", t.elapsed().as_secs_f64(), peak / 1024);
        }
        if t.elapsed() > Duration::from_secs(7200) {
            bail!("the head office holds {held} of {total} events after two hours");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = t.elapsed();
    // What the head office had taken in and sent out by then (its relaying included).
    let (bytes_in, bytes_out) = login(&ho.url, "demo-manager")
        .ok()
        .and_then(|c| c.peers().ok())
        .map_or((0, 0), |peers| peers.iter().fold((0, 0), |(i, o), p| (i + p.bytes_in, o + p.bytes_out)));
    // What the head office itself spent (relaying to the stations included): on this
    // shared machine the stations' share of the cores sets much of the wall time.
    let (ho_cpu, writer_s) =
        (cpu_seconds(ho.child.id()), metric(&ho.url, "node_store_commit_micros_total").map_or(0.0, |us| us / 1e6));
    let (commits, jobs) = (
        metric(&ho.url, "node_store_commits_total").unwrap_or_default(),
        metric(&ho.url, "node_store_jobs_total").unwrap_or_default(),
    );
    println!("net_bench ingest: {stations} stations × {cylinders} cylinders, {total} events into an empty head office");
    println!(
        "  {:.1} s, {:.0} events/s, head office peak RSS {:.0} MiB",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        peak as f64 / 1024.0,
    );
    println!(
        "  head office CPU until it held them: {ho_cpu:.1} s ({:.0} events per CPU-second); writer busy {writer_s:.1} s in {commits} commits of {jobs} jobs",
        total as f64 / ho_cpu.max(0.01),
    );
    println!(
        "  head office traffic until then: {:.1} MB in, {:.1} MB out (to the stations: relays and walk answers)",
        bytes_in as f64 / 1e6,
        bytes_out as f64 / 1e6
    );
    // What the stations spent by then, mostly storing what the head office relayed.
    let (mut st_cpu, mut st_commits, mut st_events) = (0.0, 0.0, 0u64);
    for st in &running {
        st_cpu += cpu_seconds(st.child.id());
        st_commits += metric(&st.url, "node_store_commits_total").unwrap_or_default();
        st_events += events_held(&st.url).unwrap_or_default();
    }
    println!(
        "  the stations by then: {st_cpu:.1} s of CPU in all, {st_commits:.0} commits, {} events held ({} of them relayed)",
        st_events,
        st_events.saturating_sub(total)
    );
    // The head office now relays every station's data to every other station; on this
    // one machine the stations' storing of it would take the cores from the head office's
    // own work, so they stop here (their uploads are done).
    for mut st in running {
        terminate(&mut st.child);
    }
    while metric(&ho.url, "node_index_backlog_events").is_none_or(|n| n > 0.0) {
        peak = peak.max(rss_kib(ho.child.id()).1);
        anyhow::ensure!(t.elapsed() < Duration::from_secs(7200), "the index backlog never emptied");
        std::thread::sleep(Duration::from_millis(100));
    }
    let indexed = t.elapsed();
    terminate(&mut ho.child);
    println!(
        "  traceability index complete after {:.1} s ({:.0} events/s; includes stopping the stations one by one), head office peak RSS {:.0} MiB",
        indexed.as_secs_f64(),
        total as f64 / indexed.as_secs_f64(),
        peak as f64 / 1024.0,
    );
    Ok(())
}
