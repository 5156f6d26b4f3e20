//! What a run prints and draws. Everything here comes from simulated quantities only (no
//! wall clock), so the same seed gives the same report byte for byte.

use std::fmt::Write as _;

use node::store::anomalies::AnomalyFilter;

use super::{Failure, HOUR, MINUTE, T0_MS, World};

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub ops_acked: u64,
    pub ops_refused: u64,
    pub retries: u64,
    pub cut_writes: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub archive_edits: u64,
    pub connections: u64,
    /// Marks of a long push the peer answered (in sessions that ended).
    pub pushes_confirmed: u64,
    pub frames: u64,
    pub bytes: u64,
    pub refusals: Vec<String>,
    pub by_kind: std::collections::BTreeMap<String, u64>,
}

/// Hourly samples: events the head office holds that each edge node lacks (and the
/// reverse), anomalies listed at the head office, links up.
#[derive(Debug, Default, Clone)]
pub struct Series {
    pub hours: Vec<i64>,
    pub divergence: Vec<u64>,
    pub anomalies: Vec<u64>,
    pub links_up: Vec<u64>,
}

impl Series {
    pub fn sample(&mut self, w: &World) {
        let minute = (w.now - T0_MS) / MINUTE;
        if minute % 60 != 0 {
            return;
        }
        let count = |i: usize| w.nodes[i].store.counts().map(|c| c.1).unwrap_or(0);
        let office = count(0);
        let divergence = (1..w.nodes.len()).map(|i| office.abs_diff(count(i))).sum();
        if std::env::var_os("SIM_DEBUG_COUNTS").is_some() {
            let all: Vec<u64> = (0..w.nodes.len()).map(count).collect();
            eprintln!("h{} {all:?}", (w.now - T0_MS) / HOUR);
        }
        let anomalies = w.nodes[0].store.anomalies(&AnomalyFilter::default()).map(|a| a.len() as u64).unwrap_or(0);
        self.hours.push((w.now - T0_MS) / HOUR);
        self.divergence.push(divergence);
        self.anomalies.push(anomalies);
        self.links_up.push(w.sessions.iter().filter(|s| s.is_some()).count() as u64);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub converged_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub text: String,
    pub html: String,
}

impl Report {
    pub fn of(w: &World, outcome: &Result<Outcome, Failure>) -> Report {
        let c = &w.cfg;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "seed {} · {} stations, {} regulators, {} cylinders, {} days, faults {}",
            c.seed,
            c.stations,
            c.regulators,
            c.cylinders,
            c.days,
            c.faults.name()
        );
        let s = &w.stats;
        let events = w.nodes[0].store.counts().map(|c| c.1).unwrap_or(0);
        let _ = writeln!(
            t,
            "operations acknowledged {} (refused by the rules {}), handheld retries {}, writes cut mid-commit {}",
            s.ops_acked, s.ops_refused, s.retries, s.cut_writes
        );
        let _ = writeln!(
            t,
            "archive edits {}, crashes {} (restarts from the synced disk {}), connections {}",
            s.archive_edits, s.crashes, s.restarts, s.connections
        );
        let cuts: u64 = w.links.iter().map(|l| l.cuts).sum();
        let _ = writeln!(
            t,
            "link cuts {cuts}, frames {}, {} bytes, push marks answered {}",
            s.frames, s.bytes, s.pushes_confirmed
        );
        let _ = writeln!(t, "events {events}, refused items {}", s.refusals.len());
        let anomalies = w.nodes[0].store.anomalies(&AnomalyFilter::default()).unwrap_or_default();
        let mut kinds = std::collections::BTreeMap::new();
        for a in &anomalies {
            *kinds.entry(a.kind.code()).or_insert(0u32) += 1;
        }
        let listed: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(t, "anomalies {} ({})", anomalies.len(), listed.join(", "));
        match outcome {
            Ok(o) => {
                let _ = writeln!(
                    t,
                    "converged {:.1} s after the heal; all invariants hold",
                    o.converged_ms as f64 / 1000.0
                );
            }
            Err(f) => {
                let _ = writeln!(t, "FAILED {f}");
            }
        }
        let html = html(&t, &w.series);
        Report { text: t, html }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// One line chart as inline SVG.
fn chart(title: &str, hours: &[i64], values: &[u64]) -> String {
    let (w, h, pad) = (720.0, 160.0, 30.0);
    let max_x = hours.last().copied().unwrap_or(1).max(1) as f64;
    let max_y = values.iter().copied().max().unwrap_or(1).max(1) as f64;
    let points: Vec<String> = hours
        .iter()
        .zip(values)
        .map(|(x, y)| {
            format!(
                "{:.1},{:.1}",
                pad + (*x as f64 / max_x) * (w - 2.0 * pad),
                h - pad - (*y as f64 / max_y) * (h - 2.0 * pad)
            )
        })
        .collect();
    format!(
        "<h2>{}</h2>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\
         <rect width=\"{w}\" height=\"{h}\" fill=\"#fff\" stroke=\"#ccc\"/>\
         <polyline fill=\"none\" stroke=\"#c0392b\" stroke-width=\"1.5\" points=\"{}\"/>\
         <text x=\"{pad}\" y=\"16\" font-size=\"11\">max {}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{} h</text></svg>\n",
        escape(title),
        points.join(" "),
        max_y,
        w - pad,
        h - 8.0,
        max_x
    )
}

fn html(text: &str, s: &Series) -> String {
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>分区仿真报告 / partition simulation</title>\
         <style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em}</style></head><body>\n\
         <h1>分区仿真报告 / partition simulation report</h1>\n",
    );
    let _ = writeln!(out, "<pre>{}</pre>", escape(text));
    out.push_str(&chart("站点落后的事件数 / events the stations lack (sum, hourly)", &s.hours, &s.divergence));
    out.push_str(&chart("总部列出的异常 / anomalies listed at the head office", &s.hours, &s.anomalies));
    out.push_str(&chart("在线连接 / links up", &s.hours, &s.links_up));
    out.push_str("</body></html>\n");
    out
}
