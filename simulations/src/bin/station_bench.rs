//! Station benchmark: a real node process on loopback, 16 concurrent handhelds.
//!
//! Prints durable operations per second, p50/p99 of a fill check and of a durable fill,
//! node RSS, and cold-start time with N cylinders (demo data with months of history).
//!
//! ```text
//! cargo build --release -p node -p simulations
//! cargo run --release -p simulations --bin station_bench -- --cylinders 100000 --seconds 20
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use handheld_proto::client::Client;
use handheld_proto::{ListQuery, Operation, OperationRequest};
use simulations::proc::{rss_kib, spawn, terminate, wait_healthy};
use simulations::stats::{ms, percentile};

struct Args {
    cylinders: usize,
    seconds: u64,
    handhelds: usize,
    data: Option<std::path::PathBuf>,
    quick_repair: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { cylinders: 100_000, seconds: 20, handhelds: 16, data: None, quick_repair: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--cylinders" => a.cylinders = value()?.parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            "--handhelds" => a.handhelds = value()?.parse()?,
            "--data" => a.data = Some(value()?.into()),
            "--quick-repair" => a.quick_repair = true,
            other => anyhow::bail!(
                "unknown flag {other}; flags: --cylinders N --seconds S --handhelds H --data DIR --quick-repair"
            ),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let tmp = tempfile::tempdir()?;
    let data = a.data.clone().unwrap_or_else(|| tmp.path().join("node"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("http://127.0.0.1:{port}");
    let log = tmp.path().join("node.log");
    let config = tmp.path().join("node.toml");
    std::fs::write(&config, format!("quick_repair = {}\n", a.quick_repair))?;
    let run_args = |demo: bool| {
        let mut v: Vec<String> = ["run", "--mdns", "off", "--http", &format!("127.0.0.1:{port}"), "--data"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push(data.display().to_string());
        v.extend(["--config".into(), config.display().to_string()]);
        if demo {
            v.extend(["--demo".into(), "--demo-cylinders".into(), a.cylinders.to_string()]);
        }
        v
    };

    // 1. Create the data (once per data directory), then stop.
    eprintln!("creating {} demo cylinders in {} ...", a.cylinders, data.display());
    let t = Instant::now();
    let mut node = spawn(&run_args(true), &log)?;
    wait_healthy(&mut node, &url, Duration::from_secs(3600))?;
    let created = t.elapsed();
    let health = Client::new(&url).health()?;
    terminate(&mut node);
    let db_bytes = std::fs::metadata(data.join("node.redb")).map(|m| m.len()).unwrap_or(0);

    // 2. Cold start: process start to first answered /healthz.
    let mut starts = Vec::new();
    for _ in 0..3 {
        let mut node = spawn(&run_args(false), &log)?;
        starts.push(wait_healthy(&mut node, &url, Duration::from_secs(60))?);
        terminate(&mut node);
    }
    starts.sort();
    let mut node = spawn(&run_args(false), &log)?;
    wait_healthy(&mut node, &url, Duration::from_secs(60))?;
    let (rss_idle, _) = rss_kib(node.id());

    // 3. Pick fillable cylinders.
    let mut filler = Client::new(&url);
    filler.login("demo-filler", "demo-pass")?;
    let mut good = Vec::new();
    for page in 1..=20 {
        let p = filler.cylinders(&ListQuery {
            status: Some("empty_store".into()),
            medium: Some("lpg".into()),
            page: Some(page),
            page_size: Some(100),
            ..Default::default()
        })?;
        for c in &p.items {
            if filler.fill_check(&c.code, Some("lpg"), Some(14.0))?.allowed {
                good.push(c.code.clone());
            }
        }
        if p.items.len() < 100 {
            break;
        }
    }
    anyhow::ensure!(!good.is_empty(), "no fillable cylinder found");

    // 4. 16 handhelds: fill check, then a durable fill, as fast as they can.
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let checks = Arc::new(Mutex::new(Vec::new()));
    let fills = Arc::new(Mutex::new(Vec::new()));
    // Operation ids are new for every run: a reused id would be answered from the
    // idempotency table without writing, and measure something easier than a fill.
    let run = uuid::Uuid::now_v7().simple().to_string();
    let mut threads = Vec::new();
    for h in 0..a.handhelds {
        let run = run.clone();
        let client = Client::new(&url).with_token(filler.token().unwrap_or_default());
        let (good, stop, ops, errors, checks, fills) =
            (good.clone(), stop.clone(), ops.clone(), errors.clone(), checks.clone(), fills.clone());
        threads.push(std::thread::spawn(move || {
            let (mut my_checks, mut my_fills) = (Vec::new(), Vec::new());
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let code = &good[(h * 131 + i * 17) % good.len()];
                let t = Instant::now();
                let ok = client.fill_check(code, Some("lpg"), Some(14.0)).map(|r| r.allowed).unwrap_or(false);
                my_checks.push(t.elapsed());
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                let req = OperationRequest {
                    op_id: format!("{run}-{h}-{i}"),
                    code: code.clone(),
                    op: Operation::Fill { medium: "lpg".into(), filled_mass_kg: 14.0, batch: None },
                };
                let t = Instant::now();
                match client.operation(&req) {
                    Ok(_) => {
                        my_fills.push(t.elapsed());
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
            checks.lock().expect("not poisoned").extend(my_checks);
            fills.lock().expect("not poisoned").extend(my_fills);
        }));
    }
    let started = Instant::now();
    let mut rss_peak_load = 0;
    while started.elapsed() < Duration::from_secs(a.seconds) {
        std::thread::sleep(Duration::from_millis(200));
        rss_peak_load = rss_peak_load.max(rss_kib(node.id()).0);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let elapsed = started.elapsed();
    let metrics = ureq_metrics(&url);
    let (_, hwm) = rss_kib(node.id());
    terminate(&mut node);

    let mut checks = checks.lock().expect("not poisoned").clone();
    let mut fills = fills.lock().expect("not poisoned").clone();
    checks.sort();
    fills.sort();
    let n_ops = ops.load(Ordering::Relaxed);
    println!(
        "station_bench: {} cylinders, {} events, {} handhelds, {:.1} s of load, quick_repair = {}",
        health.cylinders,
        health.events,
        a.handhelds,
        elapsed.as_secs_f64(),
        a.quick_repair
    );
    println!(
        "  demo data created in        {:>10.1} s ({:.0} MiB redb file)",
        created.as_secs_f64(),
        db_bytes as f64 / 1048576.0
    );
    println!("  cold start (best/median)    {:>10.1} ms / {:.1} ms", ms(starts[0]), ms(starts[1]));
    println!(
        "  durable fills               {:>10.0} ops/s ({} ops, {} errors)",
        n_ops as f64 / elapsed.as_secs_f64(),
        n_ops,
        errors.load(Ordering::Relaxed)
    );
    println!(
        "  fill-check p50 / p99        {:>10.2} ms / {:.2} ms ({} checks)",
        ms(percentile(&checks, 50.0)),
        ms(percentile(&checks, 99.0)),
        checks.len()
    );
    println!(
        "  durable fill p50 / p99      {:>10.2} ms / {:.2} ms",
        ms(percentile(&fills, 50.0)),
        ms(percentile(&fills, 99.0))
    );
    println!(
        "  node RSS idle / under load  {:>10.1} MiB / {:.1} MiB (peak {:.1} MiB)",
        rss_idle as f64 / 1024.0,
        rss_peak_load as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    if let Some((commits, jobs, replays)) = metrics {
        println!(
            "  group commit                {:>10.1} jobs per fsync ({jobs} jobs, {commits} commits, {replays} replays)",
            jobs as f64 / commits.max(1) as f64
        );
        anyhow::ensure!(
            replays == 0 && jobs >= n_ops,
            "fills were answered without writing: {replays} replays, {jobs} jobs for {n_ops} fills"
        );
    }
    Ok(())
}

/// Commits, jobs and replays from `/metrics` (counted since this node process started).
fn ureq_metrics(url: &str) -> Option<(u64, u64, u64)> {
    let text = ureq::get(format!("{url}/metrics")).call().ok()?.body_mut().read_to_string().ok()?;
    let get = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((get("node_store_commits_total ")?, get("node_store_jobs_total ")?, get("node_operation_replays_total ")?))
}
