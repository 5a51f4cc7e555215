//! Prometheus metrics, rendered in the text exposition format at `/metrics`.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Upper bounds (seconds × 10^6) of the request latency histogram.
const LATENCY_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    rejects: Mutex<BTreeMap<&'static str, u64>>,
    pub orders_accepted: AtomicU64,
    pub orders_rejected: AtomicU64,
    pub ws_connections: AtomicI64,
    pub ws_slow_disconnects: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

impl Metrics {
    pub fn request(&self, route: &'static str, status: u16, micros: u64) {
        *self.requests.lock().entry((route, status)).or_default() += 1;
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn reject(&self, code: &'static str) {
        *self.rejects.lock().entry(code).or_default() += 1;
    }

    /// Renders everything; `extra` appends gauges owned elsewhere.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP kinko_http_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE kinko_http_requests_total counter");
        for ((route, status), n) in self.requests.lock().iter() {
            let _ = writeln!(
                out,
                "kinko_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        histogram(
            out,
            "kinko_http_request_duration_seconds",
            "HTTP request handling time.",
            &LATENCY_BUCKETS_US,
            &self.latency,
            self.latency_sum_us.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP kinko_rejects_total Requests refused, by stable error code."
        );
        let _ = writeln!(out, "# TYPE kinko_rejects_total counter");
        for (code, n) in self.rejects.lock().iter() {
            let _ = writeln!(out, "kinko_rejects_total{{code=\"{code}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP kinko_orders_total Orders submitted through the API, by result."
        );
        let _ = writeln!(out, "# TYPE kinko_orders_total counter");
        let _ = writeln!(
            out,
            "kinko_orders_total{{result=\"accepted\"}} {}",
            self.orders_accepted.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "kinko_orders_total{{result=\"rejected\"}} {}",
            self.orders_rejected.load(Ordering::Relaxed)
        );
        gauge(
            out,
            "kinko_ws_connections",
            "Open WebSocket connections.",
            self.ws_connections.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP kinko_ws_slow_disconnects_total WebSocket clients disconnected for falling behind."
        );
        let _ = writeln!(out, "# TYPE kinko_ws_slow_disconnects_total counter");
        let _ = writeln!(
            out,
            "kinko_ws_slow_disconnects_total {}",
            self.ws_slow_disconnects.load(Ordering::Relaxed)
        );
    }
}

pub fn gauge(out: &mut String, name: &str, help: &str, v: i64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {v}");
}

pub fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {v}");
}

/// A histogram from bucket counts (not cumulative) with bounds in microseconds.
pub fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    bounds_us: &[u64],
    counts: &[AtomicU64],
    sum_us: u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cum = 0u64;
    for (b, c) in bounds_us.iter().zip(counts) {
        cum += c.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cum}", seconds(*b));
    }
    cum += counts[bounds_us.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
    let _ = writeln!(out, "{name}_sum {}", seconds(sum_us));
    let _ = writeln!(out, "{name}_count {cum}");
}

/// Microseconds as a decimal number of seconds, without floating point.
fn seconds(us: u64) -> String {
    let s = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}
