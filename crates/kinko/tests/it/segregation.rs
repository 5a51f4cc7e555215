//! `kinko report segregation` on a demo day (deposits through the simulated chain, a market
//! maker and traders trading): the customers' totals equal the ledger's, custody is the ledger's
//! hot and cold, the yen values follow the markets' prices, the report at an earlier sequence
//! is that state's, the scheduled report is written by `kinko serve`, and the metric the alert
//! rule reads says the same share.

use super::{http_text, kinko, serving_addr, spawn, terminate, text};
use kinko_core::engine::Engine;
use kinko_core::ledger::{Owner, SystemAccount};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

fn replay(data: &Path, at: Option<u64>) -> Engine {
    let mut e = Engine::new();
    let mut ev = Vec::new();
    for rec in kinko_journal::read_from(&data.join("journal"), 1).unwrap() {
        let rec = rec.unwrap();
        if at.is_some_and(|a| rec.seq > a) {
            break;
        }
        let cmd = kinko_engine::decode_command(rec.kind, &rec.payload).unwrap();
        let _ = e.apply(rec.seq, rec.timestamp_ns, &cmd, &mut ev);
        ev.clear();
    }
    e
}

/// Per asset code: what customers' accounts hold, as decimals.
fn customer_totals(e: &Engine) -> BTreeMap<String, String> {
    e.assets()
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let total: i128 = e
                .ledger()
                .accounts()
                .iter()
                .filter(|x| x.asset.0 as usize == i && matches!(x.owner, Owner::Customer(_)))
                .map(|x| x.balance())
                .sum();
            (
                a.code.as_str().to_owned(),
                kinko_core::Amount(total as u128).to_decimal(a.decimals),
            )
        })
        .collect()
}

fn files(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The customers CSV: per asset the sum of the rows (in minor units, through the decimals) and
/// the TOTAL row.
fn check_customers_csv(csv: &str, e: &Engine) -> BTreeMap<String, String> {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("asset,user_id,quantity"));
    let mut sums: BTreeMap<String, u128> = BTreeMap::new();
    let mut totals = BTreeMap::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f.len(), 3, "{l}");
        let dec = e.assets()[e.asset_by_code(f[0]).unwrap().0 as usize].decimals;
        let q = kinko_core::Amount::from_decimal(f[2], dec).unwrap().0;
        if f[1] == "TOTAL" {
            assert_eq!(
                sums.get(f[0]).copied().unwrap_or(0),
                q,
                "rows of {} add up to its total",
                f[0]
            );
            totals.insert(f[0].to_owned(), f[2].to_owned());
        } else {
            let u: u64 = f[1].parse().unwrap();
            let acc = e
                .ledger()
                .customer_account(kinko_core::UserId(u), e.asset_by_code(f[0]).unwrap())
                .unwrap();
            assert_eq!(e.ledger().account(acc).unwrap().balance(), q as i128, "{l}");
            *sums.entry(f[0].to_owned()).or_default() += q;
        }
    }
    totals
}

#[test]
fn the_segregation_report_of_a_demo_day_adds_up_to_the_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("kinko.toml");
    std::fs::write(&cfg, "[reports]\nsegregation_every_s = 1\n").unwrap();
    let mut child = spawn(&data, &["--config", cfg.to_str().unwrap(), "serve", "--demo"]);
    let addr = serving_addr(&mut child);
    // Trading has happened and the metric has its share (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    let share = loop {
        let (st, m) = http_text(&addr, "GET", "/metrics", "", "");
        assert_eq!(st, 200);
        let traded = m
            .lines()
            .any(|l| l.starts_with("kinko_trades_total{") && !l.ends_with(" 0"));
        let share = m
            .lines()
            .find_map(|l| l.strip_prefix("kinko_segregation_hot_share_bps "))
            .map(|v| v.trim().parse::<u64>().unwrap());
        assert!(m.contains("kinko_segregation_hot_share_ceiling_bps 500"), "{m}");
        if let (true, Some(s)) = (traded, share) {
            break s;
        }
        assert!(Instant::now() < deadline, "no trades or no share in time:\n{m}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The demo keeps every coin in the hot wallet: all of it is outside cold storage.
    assert_eq!(share, 10_000);
    // The schedule has written reports into the data directory.
    let deadline = Instant::now() + Duration::from_secs(30);
    while files(&data.join("reports"), "-customers.csv").len() < 2 {
        assert!(Instant::now() < deadline, "no scheduled reports");
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&mut child);
    let scheduled = files(&data.join("reports"), ".txt");
    let last = std::fs::read_to_string(scheduled.last().unwrap()).unwrap();
    assert!(last.contains("ABOVE THE 5% CEILING"), "{last}");

    // On demand, after the day: every file, the totals against the ledger replayed here.
    let out = tmp.path().join("out");
    let r = kinko(&data, &["report", "segregation", "--out", out.to_str().unwrap()]);
    assert_eq!(
        r.status.code(),
        Some(3),
        "above the ceiling: exit 3\n{}",
        text(&r)
    );
    let e = replay(&data, None);
    let customers = std::fs::read_to_string(&files(&out, "-customers.csv")[0]).unwrap();
    let totals = check_customers_csv(&customers, &e);
    let ledger = customer_totals(&e);
    assert_eq!(totals, ledger, "customers' totals against the ledger");
    assert!(ledger.get("BTC").is_some_and(|t| t != "0.00000000"), "{ledger:?}");
    let summary = std::fs::read_to_string(&files(&out, "-summary.csv")[0]).unwrap();
    let mut rows = summary.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let mut priced = 0;
    for row in rows {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f[col("seq")], e.last_seq().to_string());
        if f[col("asset")] == "TOTAL" {
            continue;
        }
        let id = e.asset_by_code(f[col("asset")]).unwrap();
        let a = e.asset(id).unwrap();
        let bal = |w| {
            let b = e.ledger().account(a.system_account(w)).unwrap().balance();
            kinko_core::Amount(b as u128).to_decimal(a.decimals)
        };
        assert_eq!(f[col("customer_total")], ledger[f[col("asset")]]);
        assert_eq!(f[col("ledger_hot")], bal(SystemAccount::HotWallet));
        assert_eq!(f[col("ledger_cold")], bal(SystemAccount::ColdWallet));
        // Every asset of the demo has a yen price: a JPY market, or one through another.
        assert!(!f[col("price_num")].is_empty(), "{row}");
        priced += 1;
    }
    assert_eq!(priced, e.assets().len());
    // BTC's yen value, computed here from the BTC-JPY market's last price.
    let btc = e.asset_by_code("BTC").unwrap();
    let m = e
        .trading()
        .markets()
        .iter()
        .find(|m| m.meta.spec.symbol == "BTC-JPY")
        .unwrap();
    let price = u128::from(m.meta.last_price.unwrap_or(m.meta.reference).0) * m.meta.spec.tick.0;
    let held = kinko_core::Amount::from_decimal(&ledger["BTC"], 8).unwrap().0;
    let row = summary
        .lines()
        .find(|l| l.split(',').nth(1) == Some("BTC"))
        .unwrap();
    let f: Vec<&str> = row.split(',').collect();
    assert_eq!(
        f[col("value_total_jpy")],
        (held * price / 100_000_000).to_string(),
        "{row}"
    );
    assert!(f[col("price_source")].starts_with("BTC-JPY"), "{row}");
    let _ = btc;
    let report = std::fs::read_to_string(&files(&out, ".txt")[0]).unwrap();
    assert!(
        report.contains("share outside cold storage  100.00%  (ABOVE THE 5% CEILING)"),
        "{report}"
    );

    // At an earlier sequence: that state's totals.
    let at = e.last_seq() / 2;
    let early = tmp.path().join("early");
    let r = kinko(
        &data,
        &[
            "report",
            "segregation",
            "--out",
            early.to_str().unwrap(),
            "--at",
            &at.to_string(),
        ],
    );
    assert!(matches!(r.status.code(), Some(0 | 3)), "{}", text(&r));
    let e_at = replay(&data, Some(at));
    let csv = std::fs::read_to_string(&files(&early, "-customers.csv")[0]).unwrap();
    assert_eq!(check_customers_csv(&csv, &e_at), customer_totals(&e_at));
    assert!(files(&early, ".txt")[0]
        .to_string_lossy()
        .contains(&format!("-seq{at}.txt")));
    // Past the journal's end: refused.
    let r = kinko(
        &data,
        &[
            "report",
            "segregation",
            "--out",
            early.to_str().unwrap(),
            "--at",
            "999999999",
        ],
    );
    assert!(
        !r.status.success() && text(&r).contains("before 999999999"),
        "{}",
        text(&r)
    );
}
