//! The monitoring kit against the real thing: the metrics a real server exports after real
//! activity, the Prometheus rules under `promtool check rules` and `promtool test rules`, the
//! Grafana dashboard's and the rules' queries against a real server's `/metrics`, and the
//! systemd units under `systemd-analyze verify`.

use super::{http, http_text, kinko, serving_addr, spawn, terminate, text};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Metrics the replication part of kinko exports where `[cluster]` is configured; a single
/// node has none of them, and the dashboard and rules may still name them.
const REPLICATION: [&str; 6] = [
    "kinko_replication_lag",
    "kinko_replication_leader_changes_total",
    "kinko_replication_role",
    "kinko_replication_publish_seconds_bucket",
    "kinko_replication_publish_seconds_sum",
    "kinko_replication_publish_seconds_count",
];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// A demo server that audits after every batch (so the last audit has a time).
fn start(dir: &Path) -> (std::process::Child, String) {
    let cfg = dir.join("kinko.toml");
    std::fs::write(&cfg, "[engine]\naudit_every_commands = 1\n").unwrap();
    let mut child = spawn(
        &dir.join("data"),
        &["--config", cfg.to_str().unwrap(), "serve", "--demo"],
    );
    let addr = serving_addr(&mut child);
    (child, addr)
}

fn scrape(addr: &str) -> String {
    let (st, m) = http_text(addr, "GET", "/metrics", "", "");
    assert_eq!(st, 200);
    m
}

/// The value of the sample of `name` carrying every label in `labels` (the first one).
fn sample(m: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    m.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let (series, _) = l.rsplit_once(' ').unwrap_or((l, ""));
            let n = series.split('{').next().unwrap();
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Every metric name `/metrics` names: each sample's, and each declared family's (with a
/// histogram's `_bucket`, `_sum` and `_count`), samples or not.
fn exported(m: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in m.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap_or(""));
            names.insert(name.to_owned());
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
        } else if !l.starts_with('#') && !l.is_empty() {
            names.insert(l.split(['{', ' ']).next().unwrap().to_owned());
        }
    }
    names
}

/// The `kinko_*` metric names in a query (or any text).
fn metric_names(s: &str) -> Vec<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = s[i..].find("kinko_") {
        let start = i + at;
        let end = s[start..]
            .find(|c: char| !ident(c))
            .map_or(s.len(), |e| start + e);
        if !s[..start].chars().next_back().is_some_and(ident) {
            out.push(s[start..end].to_owned());
        }
        i = end;
    }
    out
}

/// Every string in a JSON document.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

#[test]
fn a_real_server_exports_the_operators_metrics_with_sensible_values() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(tmp.path());
    let data = tmp.path().join("data");
    let creds: Value =
        serde_json::from_slice(&std::fs::read(data.join("demo-credentials.json")).unwrap()).unwrap();
    let key = creds["traders"][0]["api_key"].as_str().unwrap().to_owned();
    let before = scrape(&addr);
    let trades_before = sample(&before, "kinko_trades_total", &[("market", "BTC-USD")]).unwrap();
    let body = json!({"market": "BTC-USD", "side": "buy", "type": "market", "size": "0.01"});
    let (st, o) = http(&addr, "POST", "/api/v1/orders", &key, &body.to_string());
    assert_eq!(st, 200, "{o}");
    let snap = kinko(&data, &["snapshot"]);
    assert!(snap.status.success(), "{}", text(&snap));
    let m = scrape(&addr);
    let now = now_s();

    let v = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(&m, "kinko_build_info", &[("version", v)]),
        Some(1.0),
        "{m}"
    );
    assert!(m.contains("kinko_build_info{version=\"0.1.0\",commit=\""), "{m}");
    // Route latency, labelled by template, method and status class.
    let orders = [("route", "/api/v1/orders"), ("method", "POST"), ("class", "2xx")];
    assert!(
        sample(&m, "kinko_http_route_duration_seconds_count", &orders) >= Some(1.0),
        "{m}"
    );
    assert!(
        sample(&m, "kinko_http_route_duration_seconds_sum", &orders) > Some(0.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "kinko_http_route_duration_seconds_bucket",
            &[("route", "/api/v1/orders"), ("le", "+Inf")]
        ),
        sample(&m, "kinko_http_route_duration_seconds_count", &orders)
    );
    assert!(
        !m.contains("route=\"/api/v1/orders/"),
        "templates, not paths: {m}"
    );
    // Trades and volume per market.
    let trades = sample(&m, "kinko_trades_total", &[("market", "BTC-USD")]).unwrap();
    assert!(trades >= trades_before + 1.0, "{trades_before} → {trades}");
    assert!(sample(&m, "kinko_market_trades_24h", &[("market", "BTC-USD")]) >= Some(1.0));
    assert!(sample(&m, "kinko_market_volume_24h", &[("market", "BTC-USD")]) > Some(0.0));
    // Custody, reserves, hot share (the demo's coins are all in the ledger's hot wallet).
    let hot = sample(
        &m,
        "kinko_custody_balance",
        &[("asset", "BTC"), ("wallet", "hot"), ("source", "ledger")],
    )
    .unwrap();
    let owed = sample(&m, "kinko_reserve_liabilities", &[("asset", "BTC")]).unwrap();
    assert!(hot > 0.0 && owed > 0.0, "{m}");
    assert_eq!(
        sample(
            &m,
            "kinko_custody_balance",
            &[("asset", "BTC"), ("wallet", "cold"), ("source", "ledger")]
        ),
        Some(0.0)
    );
    let coverage = sample(&m, "kinko_reserve_coverage_ratio", &[("asset", "BTC")]).unwrap();
    assert!((1.0..1.01).contains(&coverage), "{coverage}");
    let share = sample(&m, "kinko_hot_share_ratio", &[("asset", "BTC")]).unwrap();
    assert!((0.99..=1.01).contains(&share), "{share}");
    assert!(m.contains("# TYPE kinko_hot_share_cap_ratio gauge"), "{m}");
    // Snapshot and audit.
    let committed = sample(&m, "kinko_committed_seq", &[]).unwrap();
    let snap_seq = sample(&m, "kinko_snapshot_last_seq", &[]).unwrap();
    assert!(snap_seq > 0.0 && snap_seq <= committed, "{snap_seq} {committed}");
    let snap_ts = sample(&m, "kinko_snapshot_last_timestamp_seconds", &[]).unwrap();
    assert!((now - snap_ts).abs() < 120.0, "{snap_ts} vs {now}");
    assert!(sample(&m, "kinko_snapshot_age_seconds", &[]) < Some(120.0));
    let audit_ts = sample(&m, "kinko_audit_last_timestamp_seconds", &[]).unwrap();
    assert!((now - audit_ts).abs() < 120.0, "{audit_ts} vs {now}");
    assert_eq!(sample(&m, "kinko_audit_last_ok", &[]), Some(1.0));
    assert_eq!(sample(&m, "kinko_audits_failed_total", &[]), Some(0.0));
    // What was there already, still there.
    assert_eq!(sample(&m, "kinko_engine_halted", &[]), Some(0.0));
    assert!(sample(&m, "kinko_sequencer_queue_depth", &[]) >= Some(0.0));
    assert!(sample(&m, "kinko_journal_fsync_seconds_count", &[]) > Some(0.0));
    assert_eq!(sample(&m, "kinko_incidents_open", &[]), Some(0.0));
    assert_eq!(
        sample(&m, "kinko_withdrawals_halted", &[("asset", "LTC")]),
        Some(0.0)
    );
    assert!(sample(&m, "kinko_withdrawals", &[("state", "requested")]).is_some());
    assert!(m.contains("# TYPE kinko_signer_refusals_total counter"), "{m}");
    assert!(terminate(&mut child).success());
}

/// Every metric the dashboard's and the rules' queries name is exported by a real server, or
/// is one of the replication metrics.
#[test]
fn the_dashboard_and_the_rules_query_only_metrics_kinko_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(tmp.path());
    // One request of each kind the histograms count.
    let _ = http(&addr, "GET", "/api/v1/markets", "", "");
    let names = exported(&scrape(&addr));
    assert!(terminate(&mut child).success());

    let dash: Value =
        serde_json::from_slice(&std::fs::read(deploy().join("grafana/kinko.json")).unwrap()).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    let mut used = BTreeSet::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel without targets: {p}"));
        assert!(!targets.is_empty(), "{p}");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let found = metric_names(expr);
            assert!(!found.is_empty(), "a query without a kinko metric: {expr}");
            used.extend(found);
        }
    }
    let mut all = Vec::new();
    strings(&dash, &mut all);
    used.extend(all.iter().flat_map(|s| metric_names(s)));
    let rules = std::fs::read_to_string(deploy().join("prometheus/kinko-rules.yml")).unwrap();
    let in_rules: BTreeSet<String> = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
        .flat_map(metric_names)
        .collect();
    assert!(in_rules.len() >= 12, "{in_rules:?}");
    let missing: Vec<&String> = used
        .iter()
        .chain(&in_rules)
        .filter(|n| !names.contains(*n) && !REPLICATION.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {names:?}"
    );
    assert!(used.len() >= 25, "{used:?}");
    // The instance variable and each replication metric the brief names are on the board.
    for r in [
        "kinko_replication_lag",
        "kinko_replication_leader_changes_total",
        "kinko_replication_publish_seconds_bucket",
    ] {
        assert!(used.contains(r), "{r}");
    }
}

fn promtool() -> Command {
    let mut c = Command::new("promtool");
    c.current_dir(deploy().join("prometheus"));
    c
}

#[test]
fn the_alerting_rules_pass_promtool_check_and_their_unit_tests() {
    let check = promtool()
        .args(["check", "rules", "kinko-rules.yml"])
        .output()
        .expect("promtool (Debian's prometheus package; scripts/install-test-deps installs it)");
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("SUCCESS"),
        "{}",
        text(&check)
    );
    let test = promtool()
        .args(["test", "rules", "kinko-rules.test.yml"])
        .output()
        .unwrap();
    assert!(test.status.success(), "{}", text(&test));
    // Every alert has a unit test that expects it to fire.
    let rules = std::fs::read_to_string(deploy().join("prometheus/kinko-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy().join("prometheus/kinko-rules.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 15, "{alerts:?}");
    for a in alerts {
        let firing = tests
            .split("alertname: ")
            .skip(1)
            .any(|t| t.starts_with(&format!("{a}\n")) && t.contains("exp_labels"));
        assert!(firing, "no unit test in which {a} fires");
    }
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify_and_are_hardened() {
    let dir = deploy().join("systemd");
    let units = ["kinko.service", "kinko-standby@.service", "kinko-signer.service"];
    for u in units {
        let t = std::fs::read_to_string(dir.join(u)).unwrap();
        for line in [
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "PrivateDevices=yes",
            "CapabilityBoundingSet=\n",
            "ProtectHome=yes",
            "UMask=0",
        ] {
            assert!(t.contains(line), "{u} lacks {line:?}");
        }
    }
    let signer = std::fs::read_to_string(dir.join("kinko-signer.service")).unwrap();
    for line in [
        "User=kinko-signer",
        "PrivateNetwork=yes",
        "RestrictAddressFamilies=AF_UNIX\n",
        "StateDirectoryMode=0700",
        "RuntimeDirectoryMode=0750",
        "LoadCredential=passphrase:",
    ] {
        assert!(signer.contains(line), "kinko-signer.service lacks {line:?}");
    }
    let standby = std::fs::read_to_string(dir.join("kinko-standby@.service")).unwrap();
    assert!(standby.contains("ExecStart=/usr/local/bin/kinko serve --standby"));

    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        // Only where systemd is absent altogether; scripts/install-test-deps installs it.
        eprintln!("systemd-analyze is not installed: skipping the verify step");
        return;
    }
    // The units name the installed paths; the check needs executables there, so a copy of the
    // units names links to this build's binaries (the signer's stands in by the kinko binary
    // when only this crate was built: the check is of the units, not of the binaries).
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let signer_bin = Path::new(super::BIN).with_file_name("kinko-signer");
    let signer_bin = if signer_bin.exists() {
        signer_bin
    } else {
        PathBuf::from(super::BIN)
    };
    std::os::unix::fs::symlink(super::BIN, bin.join("kinko")).unwrap();
    std::os::unix::fs::symlink(&signer_bin, bin.join("kinko-signer")).unwrap();
    for u in units {
        let t = std::fs::read_to_string(dir.join(u))
            .unwrap()
            .replace("/usr/local/bin/", &format!("{}/", bin.display()));
        std::fs::write(tmp.path().join(u), t).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args([
            "verify",
            "--man=no",
            "./kinko.service",
            "./kinko-signer.service",
            "./kinko-standby@1.service",
        ])
        .current_dir(tmp.path())
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown or misspelt directives are only warnings to systemd: refuse them here.
    assert!(out.status.success() && stderr.trim().is_empty(), "{}", text(&out));
}
