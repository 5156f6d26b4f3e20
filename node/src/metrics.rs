//! Counters exported at `/metrics` in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use schema::rules::Rule;

/// Operation kinds that are counted one by one.
const KINDS: &[&str] = &[
    "register",
    "bind_tag",
    "receive_empty",
    "pre_fill_check",
    "fill",
    "post_fill_check",
    "store_full",
    "dispatch",
    "deliver",
    "return",
    "repair",
    "send_to_inspection",
    "inspection_result",
    "scrap",
    "regulator_finding",
    "correction",
];

#[derive(Debug)]
pub struct Metrics {
    pub http_requests: AtomicU64,
    pub http_errors_4xx: AtomicU64,
    pub http_errors_5xx: AtomicU64,
    pub fill_checks: AtomicU64,
    pub replays: AtomicU64,
    operations: BTreeMap<&'static str, AtomicU64>,
    refusals: BTreeMap<&'static str, AtomicU64>,
    /// Anomaly counts by kind with the store's commit number and the time they were
    /// counted: counting reads the whole anomalies table.
    pub anomaly_counts: std::sync::Mutex<Option<AnomalyCounts>>,
}

/// Anomalies by kind as counted after commit `commit` at `at`.
#[derive(Debug, Clone)]
pub struct AnomalyCounts {
    pub commit: u64,
    pub at: std::time::Instant,
    pub counts: BTreeMap<schema::anomaly::AnomalyKind, u64>,
}

impl AnomalyCounts {
    /// Counts are recounted when the store committed since, at most every 2 s: a scraper
    /// polling fast costs one table scan per 2 s, and counts are never older than that.
    pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(2);

    pub fn fresh(&self, commit: u64) -> bool {
        self.commit == commit || self.at.elapsed() < Self::MAX_AGE
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http_requests: AtomicU64::new(0),
            http_errors_4xx: AtomicU64::new(0),
            http_errors_5xx: AtomicU64::new(0),
            fill_checks: AtomicU64::new(0),
            replays: AtomicU64::new(0),
            operations: KINDS.iter().map(|k| (*k, AtomicU64::new(0))).collect(),
            refusals: Rule::ALL.iter().map(|r| (r.code(), AtomicU64::new(0))).collect(),
            anomaly_counts: std::sync::Mutex::new(None),
        }
    }
}

impl Metrics {
    pub fn operation(&self, kind: &str) {
        if let Some(c) = self.operations.get(kind) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn refusal(&self, rule: Rule) {
        if let Some(c) = self.refusals.get(rule.code()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition, with the store's figures appended.
    pub fn render(&self, store: &crate::store::WriterStats, cylinders: u64, events: u64) -> String {
        let mut out = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter("node_http_requests_total", "HTTP requests served.", get(&self.http_requests));
        counter("node_http_client_errors_total", "HTTP responses with a 4xx status.", get(&self.http_errors_4xx));
        counter("node_http_server_errors_total", "HTTP responses with a 5xx status.", get(&self.http_errors_5xx));
        counter("node_fill_checks_total", "Fill checks answered.", get(&self.fill_checks));
        counter("node_operation_replays_total", "Operations answered from their idempotency key.", get(&self.replays));
        counter("node_store_commits_total", "Durable write transactions.", get(&store.commits));
        counter(
            "node_store_jobs_total",
            "Write jobs committed (jobs / commits = group-commit batch size).",
            get(&store.jobs),
        );
        counter(
            "node_store_commit_micros_total",
            "Time spent in write batches, microseconds.",
            get(&store.commit_micros),
        );
        counter(
            "node_store_durable_micros_total",
            "Of the write batches' time, the time in commits (pages written and synced), microseconds.",
            get(&store.durable_micros),
        );
        counter(
            "node_store_background_micros_total",
            "Time the writer spent in traceability index passes and run merges, microseconds.",
            get(&store.background_micros),
        );
        counter(
            "node_store_failed_batches_total",
            "Write batches that failed and stored nothing.",
            get(&store.failed_batches),
        );
        let _ = writeln!(
            out,
            "# HELP node_store_idle_work 1 while the writer has idle work left (received events to index, runs to merge).\n# TYPE node_store_idle_work gauge\nnode_store_idle_work {}",
            u8::from(store.idle_work.load(Ordering::Acquire))
        );
        let _ = writeln!(
            out,
            "# HELP node_operations_total Operations recorded, by kind.\n# TYPE node_operations_total counter"
        );
        for (k, v) in &self.operations {
            let _ = writeln!(out, "node_operations_total{{kind=\"{k}\"}} {}", get(v));
        }
        let _ = writeln!(
            out,
            "# HELP node_fill_refusals_total Refusing rule hits, by rule.\n# TYPE node_fill_refusals_total counter"
        );
        for (k, v) in &self.refusals {
            let _ = writeln!(out, "node_fill_refusals_total{{rule=\"{k}\"}} {}", get(v));
        }
        let _ = writeln!(
            out,
            "# HELP node_cylinders Registered cylinders.\n# TYPE node_cylinders gauge\nnode_cylinders {cylinders}"
        );
        let _ = writeln!(out, "# HELP node_events Events stored.\n# TYPE node_events gauge\nnode_events {events}");
        out
    }
}

/// Per-peer replication gauges and anomaly counts, appended to the exposition.
pub fn render_replication(
    out: &mut String,
    peers: &[handheld_proto::PeerView],
    anomalies: &std::collections::BTreeMap<schema::anomaly::AnomalyKind, u64>,
) {
    let label = |p: &handheld_proto::PeerView| {
        let name = p.name.clone().unwrap_or_default().replace(['"', '\\', '\n'], "_");
        format!("peer=\"{}\",name=\"{name}\"", &p.node[..16.min(p.node.len())])
    };
    type Gauge = (&'static str, &'static str, fn(&handheld_proto::PeerView) -> f64);
    let gauges: [Gauge; 4] = [
        ("node_peer_connected", "1 while a replication connection to the peer is up.", |p| p.connected as u8 as f64),
        ("node_peer_lag_seconds", "Age of the oldest data the peer has not confirmed.", |p| p.lag_ms as f64 / 1000.0),
        ("node_peer_pending_events", "Events the peer had not confirmed at its last sync.", |p| {
            p.pending_events as f64
        }),
        ("node_peer_last_contact_timestamp_seconds", "Unix time of the last frame from the peer (0: none).", |p| {
            p.last_contact
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0)
        }),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for p in peers {
            let _ = writeln!(out, "{name}{{{}}} {}", label(p), value(p));
        }
    }
    let _ = writeln!(out, "# HELP node_anomalies Anomalies listed, by kind.\n# TYPE node_anomalies gauge");
    for kind in schema::anomaly::AnomalyKind::ALL {
        let n = anomalies.get(&kind).copied().unwrap_or(0);
        let _ = writeln!(out, "node_anomalies{{kind=\"{}\"}} {n}", kind.code());
    }
}
