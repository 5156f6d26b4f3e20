//! The `node` command line: `run` a node, `import cylinders` from a spreadsheet.
//! Errors print one line and exit non-zero.

#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::clock::{Clock, SystemClock};
use crate::config::{RawConfig, Settings};
use crate::store::Store;
use crate::{Deps, Node};

#[derive(Debug, Parser)]
#[command(name = "node", about = "气瓶充装追溯 站点节点 / cylinder traceability station node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Configuration file (TOML); see node/config.example.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (overrides the config; also env NODE_DATA_DIR).
    #[arg(long, env = "NODE_DATA_DIR")]
    data: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: handheld API, mDNS advertising, storage.
    Run {
        #[command(flatten)]
        common: Common,
        /// HTTP listen address, e.g. 0.0.0.0:8080 (overrides the config).
        #[arg(long)]
        http: Option<String>,
        /// mDNS interfaces: all, off, or names such as lo or eth0,wlan0.
        #[arg(long)]
        mdns: Option<String>,
        /// Create demo data (once per data directory).
        #[arg(long)]
        demo: bool,
        /// How many demo cylinders to create.
        #[arg(long, default_value_t = 20_000)]
        demo_cylinders: usize,
        /// station or head-office (overrides the config).
        #[arg(long)]
        role: Option<String>,
        /// The head office's QUIC address, ip:port (station, regulator; default: the one
        /// learnt at enrolment).
        #[arg(long)]
        upstream: Option<String>,
        /// Where a head office accepts replication, ip:port.
        #[arg(long)]
        quic: Option<String>,
    },
    /// Head office: make a one-time enrolment code for a station or laptop.
    Enrolment {
        #[command(subcommand)]
        what: EnrolmentWhat,
    },
    /// Station or regulator's laptop: get this node's certificate from a head office with
    /// a one-time code (a regulator may enrol with every enterprise of its region).
    Enrol {
        /// The head office's HTTP address, e.g. http://192.168.1.2:8080.
        #[arg(long)]
        head_office: String,
        #[arg(long)]
        code: String,
        /// The head office's QUIC address, ip:port, if not its HTTP host with the port it
        /// says it replicates on.
        #[arg(long)]
        upstream: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Compact a stopped node's redb file (frees space left by past commits).
    Compact {
        #[command(flatten)]
        common: Common,
    },
    /// Import data into a stopped node's data directory.
    Import {
        #[command(subcommand)]
        what: ImportWhat,
    },
    /// Demo data in a stopped node's data directory (`run --demo` creates it).
    Demo {
        #[command(subcommand)]
        what: DemoWhat,
    },
}

#[derive(Debug, Subcommand)]
enum DemoWhat {
    /// Write a week of station work into the last seven days (each cylinder back empty,
    /// checked, filled, stored full): what a station does while its link is down.
    Week {
        #[command(flatten)]
        common: Common,
        /// How many events to write.
        #[arg(long, default_value_t = 400_000)]
        events: usize,
    },
}

#[derive(Debug, Subcommand)]
enum EnrolmentWhat {
    /// Create a one-time code (run on a stopped head office's data directory).
    Create {
        /// Name the node's certificate will carry, e.g. station-1.
        #[arg(long)]
        name: String,
        /// station, or regulator (a laptop that may write only findings).
        #[arg(long, default_value = "station")]
        role: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
enum ImportWhat {
    /// Cylinder archives from the CSV or XLSX template; bad rows go to FILE.errors.csv.
    Cylinders {
        file: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Staff account recorded as the operator of the registrations.
        #[arg(long, default_value = "import")]
        operator: String,
    },
}

/// What the log shows unless `RUST_LOG` says otherwise: this node's information, and
/// only warnings from Automerge. Automerge marks its loads and column parsing as spans
/// at the information level; with those on, the log formatted each span's fields, a
/// quarter of the time a head office spent loading a station's documents in a first sync
/// (perf, `net_bench --cylinders 10000`).
pub const DEFAULT_LOG: &str = "info,automerge=warn";

pub fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("错误 / error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn settings(common: &Common) -> anyhow::Result<Settings> {
    let mut raw = match &common.config {
        Some(p) => RawConfig::load(p)?,
        None => RawConfig::default(),
    };
    if let Some(d) = &common.data {
        raw.data_dir = d.clone();
    }
    raw.validate()
}

fn open_store(s: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Store> {
    open_store_of(s, &s.data_dir, s.enterprise.as_str(), clock)
}

/// Where a regulator's laptop keeps the data of another enterprise of its region.
fn other_dir(s: &Settings, enterprise: &str) -> PathBuf {
    s.data_dir.join("enterprises").join(enterprise)
}

/// A regulator's laptop: the stores of the other enterprises it is enrolled with.
fn open_others(s: &Settings, clock: &Arc<dyn Clock>) -> anyhow::Result<Vec<Store>> {
    let root = s.data_dir.join("enterprises");
    let mut codes = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", root.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.parse::<schema::codes::EnterpriseCode>().is_ok() && entry.path().join("node.redb").exists() {
                codes.push(name);
            }
        }
    }
    if s.role != crate::config::Role::Regulator {
        if !codes.is_empty() {
            tracing::warn!(dir = %root.display(), "other enterprises' data is used only by a regulator's laptop");
        }
        return Ok(Vec::new());
    }
    codes.sort();
    codes.iter().map(|code| open_store_of(s, &other_dir(s, code), code, clock.clone())).collect()
}

fn open_store_of(
    s: &Settings,
    dir: &std::path::Path,
    enterprise: &str,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Store> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating data directory {}", dir.display()))?;
    let path = dir.join("node.redb");
    Store::open(
        &path,
        crate::store::StoreOptions {
            enterprise: enterprise.to_owned(),
            cache_bytes: s.cache_bytes.unwrap_or(s.role.default_cache_bytes()),
            quick_repair: s.quick_repair,
            judge: schema::anomaly::Judge {
                table: s.rules.clone(),
                enterprise: enterprise.to_owned(),
                utc_offset: s.utc_offset,
            },
        },
        clock,
    )
    .map_err(|e| store_error(&path, e))
}

/// Says plainly when another node process holds the file.
fn store_error(path: &std::path::Path, e: crate::store::StoreError) -> anyhow::Error {
    match e {
        crate::store::StoreError::Redb(redb::Error::DatabaseAlreadyOpen) => {
            anyhow::anyhow!("{} is in use by a running node (数据目录正被运行中的节点使用)", path.display())
        }
        other => anyhow::Error::new(other).context(path.display().to_string()),
    }
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { common, http, mdns, demo, demo_cylinders, role, upstream, quic } => {
            let mut s = settings(&common)?;
            if let Some(r) = role {
                s.role = r.parse().map_err(anyhow::Error::msg).context("--role")?;
            }
            if let Some(u) = upstream {
                s.upstream = Some(u.parse().with_context(|| format!("--upstream {u:?} is not ip:port"))?);
            }
            if let Some(q) = quic {
                s.quic = q.parse().with_context(|| format!("--quic {q:?} is not ip:port"))?;
            }
            if let Some(h) = http {
                s.http = h.parse().with_context(|| format!("--http {h:?} is not ip:port"))?;
            }
            if let Some(m) = mdns {
                s.mdns = m.parse().map_err(anyhow::Error::msg).context("--mdns")?;
            }
            let rt =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let mut store = open_store(&s, clock.clone())?;
            let others = open_others(&s, &clock)?;
            if demo {
                let pb = bar(demo_cylinders as u64, "演示数据 demo data");
                let created = crate::demo::ensure(&store, &s, demo_cylinders, clock.now_ms(), &|done, total| {
                    pb.set_length(total);
                    pb.set_position(done);
                })?;
                pb.finish_and_clear();
                if created {
                    // Generation commits in large batches; compacting returns the space
                    // those commits left behind before the node starts serving.
                    store.shutdown();
                    let (before, after) = Store::compact_file(&s.data_dir.join("node.redb"))?;
                    tracing::info!(
                        cylinders = demo_cylinders,
                        file_before = before,
                        file_after = after,
                        "demo data created"
                    );
                    store = open_store(&s, clock.clone())?;
                }
            }
            // What this node wrote before (demo data, the last run's writes) travels
            // under seals rather than with a signature per event.
            for st in std::iter::once(&store).chain(&others) {
                let sealed = st.seal_all()?;
                if sealed > 0 {
                    tracing::info!(events = sealed, "sealed this node's earlier events");
                }
            }
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::bind(s.http).await.with_context(|| format!("binding {}", s.http))?;
                let peers = Arc::new(crate::replication::peers::Peers::default());
                let tracking = crate::replication::Tracking {
                    peers: peers.clone(),
                    clock: clock.clone(),
                    mark_bytes: s.sync_mark_bytes,
                };
                let mut replication = start_replication(&s, &store, tracking.clone())?;
                for other in &others {
                    replication.extend(start_replication(&s, other, tracking.clone())?);
                }
                let closing: Vec<Store> = std::iter::once(&store).chain(&others).cloned().collect();
                let node = Node::start(s, Deps { listener, store, others, clock, peers })?;
                eprintln!("节点已启动 / node listening on http://{}", node.addr);
                shutdown_signal().await;
                tracing::info!("shutting down");
                // A put under way stops at its next part: a station storing a relay took
                // up to half a minute to stop, waiting for the whole put.
                closing.iter().for_each(Store::begin_close);
                // Held on, these copies would keep the store open past its shutdown.
                drop(closing);
                // Replication tasks hold the store: end them before it closes.
                for task in replication {
                    task.abort();
                    let _ = task.await;
                }
                node.shutdown().await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Enrolment { what: EnrolmentWhat::Create { name, role, common } } => {
            let s = settings(&common)?;
            let store = open_store(&s, Arc::new(SystemClock))?;
            let code = crate::enrolment::create_code(&store, &name, &role);
            store.shutdown();
            println!("一次性注册码 / one-time enrolment code for {name}:");
            println!("{}", code?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Enrol { head_office, code, upstream, common } => {
            let s = settings(&common)?;
            let upstream =
                upstream.map(|u| u.parse().with_context(|| format!("--upstream {u:?} is not ip:port"))).transpose()?;
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let store = open_store(&s, clock.clone())?;
            // The store closes cleanly whatever happens (a file closed without it is
            // repaired at the next start).
            let enrolled = enrol(&s, &store, (&head_office, code.trim(), upstream), clock);
            store.shutdown();
            let (name, enterprise) = enrolled?;
            println!("已注册 / enrolled as {name} of enterprise {enterprise}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Compact { common } => {
            let s = settings(&common)?;
            let path = s.data_dir.join("node.redb");
            let (before, after) = Store::compact_file(&path).map_err(|e| store_error(&path, e))?;
            println!(
                "压缩完成 / compacted {}: {:.1} MiB → {:.1} MiB",
                path.display(),
                before as f64 / 1048576.0,
                after as f64 / 1048576.0
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { what: DemoWhat::Week { common, events } } => {
            let s = settings(&common)?;
            // A directory without a node is refused as it is found, not given an empty store.
            let path = s.data_dir.join("node.redb");
            if !path.exists() {
                anyhow::bail!(
                    "{} 没有节点数据 / holds no node data (run `node run --demo` first)",
                    s.data_dir.display()
                );
            }
            let clock = Arc::new(SystemClock);
            let store = open_store(&s, clock.clone())?;
            let pb = bar(events as u64, "一周作业 a week's work");
            let written = crate::demo::week(&store, events, clock.now_ms(), &|done, _| pb.set_position(done));
            pb.finish_and_clear();
            store.shutdown();
            // The refusal is the whole message: no "record invalid" before it.
            let written = written.map_err(|e| match e {
                crate::store::StoreError::Invalid(reason) => anyhow::anyhow!(reason),
                other => anyhow::Error::new(other),
            })?;
            println!("已写入 {written} 条事件 / wrote {written} events");
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { what: ImportWhat::Cylinders { file, common, operator } } => {
            let s = settings(&common)?;
            let store = open_store(&s, Arc::new(SystemClock))?;
            let pb = bar(0, "导入 import");
            let report =
                crate::import::import(&store, &file, s.region, s.enterprise.as_str(), &operator, &|done, total| {
                    pb.set_length(total);
                    pb.set_position(done);
                })?;
            pb.finish_and_clear();
            println!(
                "导入 {} 条，拒绝 {} 条 / imported {}, rejected {}",
                report.imported,
                report.rejected.len(),
                report.imported,
                report.rejected.len()
            );
            if report.rejected.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            for r in report.rejected.iter().take(10) {
                println!("  第 {} 行 {}: {}", r.row, r.code, r.reason);
            }
            let path = crate::import::write_report(&file, &report.rejected)?;
            println!("错误报告 / error report: {}", path.display());
            Ok(ExitCode::from(2))
        }
    }
}

/// `node enrol`: asks the head office for a certificate and saves it where it belongs:
/// in `store`, or for a regulator's laptop enrolled by another enterprise of its region,
/// in that enterprise's store (created with this node's key). Returns the name and
/// enterprise the certificate carries.
fn enrol(
    s: &Settings,
    store: &Store,
    (head_office, code, upstream): (&str, &str, Option<std::net::SocketAddr>),
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(String, String)> {
    use crate::enrolment::{Target, request, save, target};
    let granted = request(store, head_office, code)?;
    let named = (granted.answer.name.clone(), granted.answer.enterprise.clone());
    match target(s.enterprise.as_str(), s.region, &granted.answer)? {
        Target::Own => save(store, granted, upstream)?,
        Target::Other(other) => {
            let dir = other_dir(s, other.as_str());
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join("node.redb");
            Store::prepare_with_key(&path, &store.node_seed()?).map_err(|e| store_error(&path, e))?;
            let theirs = open_store_of(s, &dir, other.as_str(), clock)?;
            let saved = save(&theirs, granted, upstream);
            theirs.shutdown();
            saved?;
        }
    }
    Ok(named)
}

/// Starts replication for the node's role: a head office accepts enrolled nodes on its
/// QUIC address; a station with an upstream keeps a session with it.
fn start_replication(
    s: &Settings,
    store: &Store,
    tracking: crate::replication::Tracking,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    use crate::config::Role;
    use crate::enrolment::{CA_CERT, CERT};
    use crate::replication::{connect, serve, tls, track_commits};
    let seed = store.node_seed()?;
    let tracker = track_commits(store, tracking.clone());
    let mut tasks = vec![tracker];
    let upstream = match s.upstream.filter(|_| store.enterprise() == s.enterprise.as_str()) {
        Some(u) => Some(u),
        None => crate::enrolment::saved_upstream(store)?,
    };
    match (s.role, upstream) {
        (Role::HeadOffice, _) => {
            let ca = crate::enrolment::ensure_head_office(store)?;
            let cert = store.meta(CERT)?.context("head office certificate missing")?;
            let config = tls::server_config(&ca, &cert, &seed).map_err(anyhow::Error::msg)?;
            let endpoint =
                tls::server_endpoint(config, s.quic, &seed).with_context(|| format!("binding QUIC on {}", s.quic))?;
            tracing::info!(quic = %s.quic, "head office accepting replication");
            tasks.push(serve(store.clone(), endpoint, tracking));
        }
        (Role::Station | Role::Regulator, Some(upstream)) => {
            let (Some(ca), Some(cert)) = (store.meta(CA_CERT)?, store.meta(CERT)?) else {
                anyhow::bail!(
                    "this node is not enrolled with enterprise {}: run `node enrol --head-office URL --code CODE` \
                     first (尚未注册)",
                    store.enterprise()
                );
            };
            let config = tls::client_config(&ca, &cert, &seed).map_err(anyhow::Error::msg)?;
            let endpoint =
                quinn::Endpoint::client((std::net::Ipv4Addr::UNSPECIFIED, 0).into()).context("QUIC client endpoint")?;
            tracing::info!(%upstream, enterprise = store.enterprise(), "replicating with the head office");
            tasks.push(connect(store.clone(), endpoint, upstream, config, tracking));
        }
        (Role::Station | Role::Regulator, None) => {
            if store.enterprise() != s.enterprise.as_str() {
                tracing::warn!(
                    enterprise = store.enterprise(),
                    "no head office address for this enterprise: not replicating"
                );
            }
        }
    }
    Ok(tasks)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tracing_subscriber::layer::SubscriberExt;

    /// Counts the spans Automerge opens.
    struct AutomergeSpans(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AutomergeSpans {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if attrs.metadata().target().starts_with("automerge") {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Spans Automerge opens while it loads a document, under the log filter `filter`.
    fn spans_of_a_load(filter: &str) -> usize {
        let mut doc = automerge::AutoCommit::new();
        automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "code", "3701020001").expect("put");
        let bytes = doc.save();
        let count = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new(filter))
            .with(AutomergeSpans(count.clone()));
        tracing::subscriber::with_default(subscriber, || {
            automerge::AutoCommit::load(&bytes).expect("load");
            assert!(tracing::enabled!(target: "node::replication", tracing::Level::INFO));
        });
        count.load(Ordering::Relaxed)
    }

    /// Automerge's information-level spans are off by default (formatting their fields was
    /// a quarter of a document's load), this node's information is on.
    #[test]
    fn the_default_log_opens_no_automerge_spans() {
        assert!(spans_of_a_load("info") > 0, "Automerge opens spans at the information level");
        assert_eq!(spans_of_a_load(super::DEFAULT_LOG), 0);
    }
}
