//! `simulations`: the deterministic partition simulator's command line.
//!
//! ```text
//! cargo run --release -p simulations -- run --stations 20 --cylinders 50000 --days 30 --seed 7 --faults heavy --report r.html
//! cargo run --release -p simulations -- sweep --seeds 1000 [--from 1] [--stations 3 --cylinders 60 --days 2]
//! ```
//! `run` prints the run's summary (the same seed prints the same bytes) and exits 1 if an
//! invariant broke; `sweep` runs many seeds and prints the replay command of each failure.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use anyhow::{Context, bail};
use simulations::sim::{Config, Faults, run};

fn parse(args: &[String]) -> anyhow::Result<(Config, Option<String>, u64, u64)> {
    let mut cfg = Config::small(1);
    let (mut report, mut seeds, mut from) = (None, 100u64, 1u64);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--seed" => cfg.seed = value()?.parse().context("--seed")?,
            "--stations" => cfg.stations = value()?.parse().context("--stations")?,
            "--regulators" => cfg.regulators = value()?.parse().context("--regulators")?,
            "--cylinders" => cfg.cylinders = value()?.parse().context("--cylinders")?,
            "--days" => cfg.days = value()?.parse().context("--days")?,
            "--ops-per-hour" => cfg.ops_per_hour = value()?.parse().context("--ops-per-hour")?,
            "--faults" => cfg.faults = value()?.parse::<Faults>().map_err(anyhow::Error::msg)?,
            "--report" => report = Some(value()?.clone()),
            "--seeds" => seeds = value()?.parse().context("--seeds")?,
            "--from" => from = value()?.parse().context("--from")?,
            other => bail!("unknown flag {other}"),
        }
    }
    if cfg.stations == 0 {
        bail!("--stations must be at least 1");
    }
    Ok((cfg, report, seeds, from))
}

fn replay(cfg: &Config) -> String {
    format!(
        "cargo run --release -p simulations -- run --seed {} --stations {} --regulators {} --cylinders {} --days {} --ops-per-hour {} --faults {}",
        cfg.seed,
        cfg.stations,
        cfg.regulators,
        cfg.cylinders,
        cfg.days,
        cfg.ops_per_hour,
        cfg.faults.name()
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match real_main(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(args: &[String]) -> anyhow::Result<ExitCode> {
    let Some((command, rest)) = args.split_first() else {
        bail!("usage: simulations run [--seed S ...] | sweep --seeds N [--from S ...]");
    };
    let (cfg, report, seeds, from) = parse(rest)?;
    match command.as_str() {
        "run" => {
            let bar = indicatif::ProgressBar::new(1000);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {percent}% simulated {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let (r, failure) = run(cfg.clone(), &|done, total| {
                bar.set_position((done * 1000 / total.max(1)) as u64);
            })?;
            bar.finish_and_clear();
            print!("{}", r.text);
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            if let Some(path) = report {
                std::fs::write(&path, &r.html).with_context(|| format!("writing {path}"))?;
                eprintln!("report: {path}");
            }
            if failure.is_some() {
                println!("replay: {}", replay(&cfg));
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        "sweep" => {
            let bar = indicatif::ProgressBar::new(seeds);
            let failed = std::sync::atomic::AtomicU64::new(0);
            let next = std::sync::atomic::AtomicU64::new(from);
            // Seeds are independent runs: one per core.
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            std::thread::scope(|s| -> anyhow::Result<()> {
                let workers: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| -> anyhow::Result<()> {
                            loop {
                                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                if seed >= from + seeds {
                                    return Ok(());
                                }
                                let c = Config { seed, ..cfg.clone() };
                                let (_, failure) = run(c.clone(), &|_, _| {})?;
                                if let Some(f) = failure {
                                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    bar.suspend(|| println!("seed {seed} FAILED {f}\n  replay: {}", replay(&c)));
                                }
                                bar.inc(1);
                            }
                        })
                    })
                    .collect();
                for w in workers {
                    w.join().map_err(|_| anyhow::anyhow!("a sweep thread panicked"))??;
                }
                Ok(())
            })?;
            bar.finish_and_clear();
            let failed = failed.into_inner();
            println!("{seeds} seeds from {from}: {failed} failed");
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        other => bail!("unknown command {other}; commands: run, sweep"),
    }
}
