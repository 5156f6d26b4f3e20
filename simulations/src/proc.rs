//! Starting and watching node processes for benchmarks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The `node` binary next to the running benchmark (same profile).
pub fn node_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("binary directory")?;
    let node = dir.join("node");
    if !node.exists() {
        bail!("{} not found: build it first with `cargo build --release -p node`", node.display());
    }
    Ok(node)
}

/// Spawns `node run` with `args`, stderr to `log`.
pub fn spawn(args: &[String], log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    Command::new(node_bin()?).args(args).stdout(Stdio::null()).stderr(log).spawn().context("starting node")
}

/// Waits until `/healthz` answers; returns how long it took.
pub fn wait_healthy(child: &mut Child, url: &str, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let client = handheld_proto::client::Client::new(url);
    while started.elapsed() < within {
        if let Some(s) = child.try_wait()? {
            bail!("node exited with {s}");
        }
        if client.health().is_ok() {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!("node not healthy within {within:?}")
}

/// Resident and peak resident memory of a process, in KiB (Linux /proc).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at its closing bracket.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name; the
    // kernel counts them in USER_HZ, 100 on Linux.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Sends SIGTERM and waits.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}
