//! Prometheus metrics, rendered in the text exposition format at `/metrics`.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Upper bounds (seconds × 10^6) of the request latency histogram.
const LATENCY_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// The commit this binary was built from: `KINKO_COMMIT` in the build's environment
/// (`KINKO_COMMIT=$(git rev-parse HEAD) cargo build --release`), else "unknown". Not read from
/// git by a build script, which would rebuild the gateway at every commit.
pub const COMMIT: &str = match option_env!("KINKO_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// Request latency of one route template, method and status class (`2xx`, ...).
#[derive(Default)]
struct RouteLatency {
    buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: u64,
}

/// Route labels: templates are interned and capped (see `intern` in lib.rs), methods and status
/// classes are fixed lists, so the series stay bounded.
type RouteKey = (&'static str, &'static str, &'static str);

#[derive(Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<RouteKey, RouteLatency>>,
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
    pub fn request(&self, route: &'static str, method: &axum::http::Method, status: u16, micros: u64) {
        *self.requests.lock().entry((route, status)).or_default() += 1;
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
        let mut routes = self.routes.lock();
        let r = routes
            .entry((route, method_label(method), status_class(status)))
            .or_default();
        r.buckets[i] += 1;
        r.sum_us = r.sum_us.saturating_add(micros);
    }

    pub fn reject(&self, code: &'static str) {
        *self.rejects.lock().entry(code).or_default() += 1;
    }

    /// Renders everything; `extra` appends gauges owned elsewhere.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP kinko_build_info The kinko version and commit serving (always 1).\n# TYPE kinko_build_info gauge\nkinko_build_info{{version=\"{}\",commit=\"{COMMIT}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        self.render_routes(out);
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

impl Metrics {
    fn render_routes(&self, out: &mut String) {
        let name = "kinko_http_route_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP request handling time by route template, method and status class.\n# TYPE {name} histogram"
        );
        for ((route, method, class), r) in self.routes.lock().iter() {
            let labels = format!("route=\"{route}\",method=\"{method}\",class=\"{class}\"");
            let mut cum = 0u64;
            for (b, c) in LATENCY_BUCKETS_US.iter().zip(&r.buckets) {
                cum += c;
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{}\"}} {cum}", seconds(*b));
            }
            cum += r.buckets[LATENCY_BUCKETS_US.len()];
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", seconds(r.sum_us));
            let _ = writeln!(out, "{name}_count{{{labels}}} {cum}");
        }
    }
}

fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// `num / den` as a decimal with six places, in integers (0 when `den` is 0).
pub fn ratio(num: u128, den: u128) -> String {
    if den == 0 {
        return "0".into();
    }
    let micro = num.checked_mul(1_000_000).map_or(u128::MAX / den, |n| n / den);
    let s = format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A gauge family with one labelled sample per entry.
pub fn labelled(out: &mut String, name: &str, help: &str, kind: &str, samples: &[(String, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
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

/// The hot wallet's limits of a custodied asset (`[[custody]]` `hot_share_bps`, `hot_cap` in
/// minor units), for the hot-share gauges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotLimits {
    pub share_bps: u32,
    pub cap: u64,
}

/// Gauges read from the replica and the sequencer: markets, custody and reserves, snapshots,
/// audits, signer refusals. `node` holds the chain nodes' (hot, cold) balances of the assets
/// custody runs for.
pub fn render_state(out: &mut String, g: &crate::Gateway, node: &BTreeMap<String, (u128, u128)>) {
    use kinko_core::ledger::{Owner, SystemAccount};
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let m = g.read.model();
    let e = &m.engine;
    let (mut trades, mut trades_24h, mut volume_24h) = (Vec::new(), Vec::new(), Vec::new());
    for mk in e.trading().markets() {
        let label = format!("market=\"{}\"", mk.meta.spec.symbol);
        let t = mk.meta.ticker(now_ns, None, None);
        trades.push((label.clone(), mk.meta.next_trade_id.saturating_sub(1).to_string()));
        trades_24h.push((label.clone(), t.trades_24h.to_string()));
        volume_24h.push((label, t.volume_24h.saturating_mul(mk.meta.spec.lot.0).to_string()));
    }
    labelled(
        out,
        "kinko_trades_total",
        "Trades since the market was defined.",
        "counter",
        &trades,
    );
    labelled(
        out,
        "kinko_market_trades_24h",
        "Trades over the last 24 h.",
        "gauge",
        &trades_24h,
    );
    labelled(
        out,
        "kinko_market_volume_24h",
        "Base volume over the last 24 h, in the base asset's minor units.",
        "gauge",
        &volume_24h,
    );

    // Customer liabilities per asset: what customers' accounts hold.
    let mut liabilities = vec![0u128; e.assets().len()];
    for a in e.ledger().accounts() {
        if let (Owner::Customer(_), Some(l)) = (a.owner, liabilities.get_mut(a.asset.0 as usize)) {
            *l = l.saturating_add(u128::try_from(a.balance()).unwrap_or(0));
        }
    }
    let limits = g.hot_limits.get();
    let (mut balances, mut liab, mut coverage, mut share, mut share_cap, mut hot_cap) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for a in e.assets() {
        let code = a.code.as_str();
        let Some(id) = e.asset_by_code(code) else { continue };
        let bal = |w: SystemAccount| {
            e.ledger()
                .account(a.system_account(w))
                .map_or(0, |x| u128::try_from(x.balance()).unwrap_or(0))
        };
        let (hot, cold) = (bal(SystemAccount::HotWallet), bal(SystemAccount::ColdWallet));
        balances.push((
            format!("asset=\"{code}\",wallet=\"hot\",source=\"ledger\""),
            hot.to_string(),
        ));
        balances.push((
            format!("asset=\"{code}\",wallet=\"cold\",source=\"ledger\""),
            cold.to_string(),
        ));
        let custody = match node.get(code) {
            Some((nh, nc)) => {
                balances.push((
                    format!("asset=\"{code}\",wallet=\"hot\",source=\"node\""),
                    nh.to_string(),
                ));
                balances.push((
                    format!("asset=\"{code}\",wallet=\"cold\",source=\"node\""),
                    nc.to_string(),
                ));
                nh.saturating_add(*nc)
            }
            None => hot + cold,
        };
        let owed = liabilities.get(id.0 as usize).copied().unwrap_or(0);
        liab.push((format!("asset=\"{code}\""), owed.to_string()));
        if owed > 0 {
            coverage.push((format!("asset=\"{code}\""), ratio(custody, owed)));
            share.push((format!("asset=\"{code}\""), ratio(hot, owed)));
        }
        if let Some(l) = limits.and_then(|l| l.get(code)) {
            share_cap.push((
                format!("asset=\"{code}\""),
                ratio(u128::from(l.share_bps), 10_000),
            ));
            hot_cap.push((format!("asset=\"{code}\""), l.cap.to_string()));
        }
    }
    labelled(
        out,
        "kinko_custody_balance",
        "Custody balances in minor units: hot and cold, as the ledger books them and (with [[custody]]) as the chain node reports them.",
        "gauge",
        &balances,
    );
    labelled(
        out,
        "kinko_reserve_liabilities",
        "What customers' accounts hold, per asset, in minor units.",
        "gauge",
        &liab,
    );
    labelled(
        out,
        "kinko_reserve_coverage_ratio",
        "Custody (the node's hot + cold where custody runs, else the ledger's) over customer liabilities; below 1 customers' coins are missing.",
        "gauge",
        &coverage,
    );
    labelled(
        out,
        "kinko_hot_share_ratio",
        "The ledger's hot wallet over customer liabilities.",
        "gauge",
        &share,
    );
    labelled(
        out,
        "kinko_hot_share_cap_ratio",
        "The configured hot share cap ([[custody]] hot_share_bps / 10000).",
        "gauge",
        &share_cap,
    );
    labelled(
        out,
        "kinko_hot_cap",
        "The configured hot wallet cap ([[custody]] hot_cap), in minor units.",
        "gauge",
        &hot_cap,
    );
    // The segregation test (crate::segregation): customers' crypto assets outside cold storage,
    // valued in yen, against the 5% ceiling. No sample while it cannot be computed (an asset
    // without a yen price, or no crypto assets held).
    let seg = crate::segregation::build(e, node);
    let _ = writeln!(
        out,
        "# HELP kinko_segregation_hot_share_bps Customers' crypto assets outside cold storage, valued in yen, over all of them, in basis points (rounded up)."
    );
    let _ = writeln!(out, "# TYPE kinko_segregation_hot_share_bps gauge");
    if let Some(b) = seg.hot_share_bps {
        let _ = writeln!(out, "kinko_segregation_hot_share_bps {b}");
    }
    gauge(
        out,
        "kinko_segregation_hot_share_ceiling_bps",
        "The ceiling on kinko_segregation_hot_share_bps: 500 (5%).",
        i64::try_from(crate::segregation::HOT_SHARE_CEILING_BPS).unwrap_or(i64::MAX),
    );
    gauge(
        out,
        "kinko_segregation_unpriced_assets",
        "Crypto assets customers hold that have no yen price: the segregation share cannot be computed while above 0.",
        i64::try_from(seg.unpriced.len()).unwrap_or(i64::MAX),
    );
    drop(m);

    let s = g.engine.stats();
    let snap_ns = s.snapshot_last_ns.load(Ordering::Acquire);
    gauge(
        out,
        "kinko_snapshot_last_seq",
        "Sequence of the last snapshot this server wrote (0: none since it started).",
        i64::try_from(s.snapshot_last_seq.load(Ordering::Acquire)).unwrap_or(i64::MAX),
    );
    gauge(
        out,
        "kinko_snapshot_last_timestamp_seconds",
        "When this server last wrote a snapshot, Unix seconds (0: none since it started).",
        i64::try_from(snap_ns / 1_000_000_000).unwrap_or(i64::MAX),
    );
    let started_ns = g.started_ns;
    gauge(
        out,
        "kinko_snapshot_age_seconds",
        "Seconds since the last snapshot this server wrote (since it started, if none).",
        i64::try_from(now_ns.saturating_sub(snap_ns.max(started_ns)) / 1_000_000_000).unwrap_or(i64::MAX),
    );
    let audit_ns = s.audit_last_ns.load(Ordering::Acquire);
    gauge(
        out,
        "kinko_audit_last_timestamp_seconds",
        "When the sequencer last checked every invariant, Unix seconds (0: not since it started; recovery audits at start).",
        i64::try_from(audit_ns / 1_000_000_000).unwrap_or(i64::MAX),
    );
    gauge(
        out,
        "kinko_audit_last_ok",
        "1 when the last invariant audit passed (or none has run since the start, which recovery audited), 0 when it found a violation.",
        i64::from(audit_ns == 0 || s.audit_last_ok.load(Ordering::Acquire)),
    );
    counter(
        out,
        "kinko_audits_failed_total",
        "Invariant audits that found a violation (each halts the engine).",
        s.audits_failed.load(Ordering::Relaxed),
    );
    let refusals: Vec<(String, String)> = g
        .health
        .signer_refusals()
        .into_iter()
        .map(|((asset, code), n)| (format!("asset=\"{asset}\",code=\"{code}\""), n.to_string()))
        .collect();
    labelled(
        out,
        "kinko_signer_refusals_total",
        "Requests the signer refused, by asset and the signer's code.",
        "counter",
        &refusals,
    );
}
