//! The built-in withdrawal risk policy on a real server (`kinko serve` over loopback, on the
//! simulated chain, which the risk engine does not depend on): 50 new accounts paying one new
//! address are held and the asset halted without any `[risk]` section, and an explicit line
//! loosens it.

use super::crash::Totp;
use super::{http, spawn, terminate};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// The one destination every account pays: a new address on the simulated chain.
const DRAIN: &str = "sim1d4a1d4a1d4a1d4a1d4a1d4a1d4a1d4a1d4a1d4a1";

/// What the tests relax, none of it the risk policy: the simulated chain on (no demo traders),
/// a new withdrawal address usable after a second (instead of a day; at once would take two
/// admins), cheap password hashing,
/// and the per-address request limit (fifty accounts of an attacker come from many addresses;
/// here they all share loopback, whose limit would stop them before the risk policy does).
pub(super) const BASE: &str = r#"
[api]
withdrawal_cooling_s = 1
rate_per_ip_burst = 100000
rate_per_ip_per_s = 100000
[identity]
password_memory_kib = 8
password_passes = 1
[sim]
enabled = true
"#;

pub(super) struct Customer {
    pub(super) token: String,
    totp: Totp,
}

/// Waits (bounded) until `f` holds.
pub(super) fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A new account: registered, signed in, TOTP enrolled, 1 LTC deposited on the simulated chain.
pub(super) fn customer(addr: &str, i: usize) -> Customer {
    let (token, totp) = super::crash::customer_with_totp(addr, &format!("user{i}@example.com"));
    let (st, a) = http(
        addr,
        "POST",
        "/api/v1/deposit-addresses",
        &token,
        r#"{"asset":"LTC"}"#,
    );
    assert_eq!(st, 200, "{a}");
    let body = json!({"address": a["address"], "amount": "1"}).to_string();
    let (st, r) = http(addr, "POST", "/api/v1/sim/deposits", &token, &body);
    assert_eq!(st, 200, "{r}");
    Customer { token, totp }
}

/// Whitelists the drain address and asks to withdraw 0.1 LTC to it: the HTTP status and body.
/// Whitelists the drain for `c` (usable after the configured second of cooling); returns its id.
pub(super) fn whitelist(addr: &str, c: &mut Customer) -> Value {
    let body = json!({"asset": "LTC", "address": DRAIN, "label": "mine", "step_up": {"totp": c.totp.next()}});
    let (st, a) = http(
        addr,
        "POST",
        "/api/v1/withdrawal-addresses",
        &c.token,
        &body.to_string(),
    );
    assert_eq!(st, 200, "{a}");
    a["id"].clone()
}

/// Withdraws 0.1 LTC of `c`'s 1 LTC to the whitelisted `address`, asking again (same code: a
/// refused request uses none up) while the address is still in its cooling second.
pub(super) fn withdraw(addr: &str, c: &mut Customer, address: &Value) -> (u16, Value) {
    let (st, b) = http(addr, "GET", "/api/v1/balances", &c.token, "");
    assert_eq!(st, 200);
    let ltc = b
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["asset"] == "LTC")
        .cloned();
    assert_eq!(ltc.map(|x| x["available"].clone()), Some(json!("1.00000000")));
    let body = json!({"address_id": address, "amount": "0.1", "step_up": {"totp": c.totp.next()}});
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (st, w) = http(addr, "POST", "/api/v1/withdrawals", &c.token, &body.to_string());
        if w["code"] != "WITHDRAWAL_ADDRESS_COOLING" {
            return (st, w);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the address never finished cooling"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `n` customers, each funded (credited) before anyone withdraws.
fn customers(addr: &str, n: usize) -> Vec<Customer> {
    let all: Vec<Customer> = (0..n).map(|i| customer(addr, i)).collect();
    for c in &all {
        until("the deposit to be credited", 30, || {
            let (_, d) = http(addr, "GET", "/api/v1/deposits?asset=LTC", &c.token, "");
            d.as_array()
                .is_some_and(|v| v.iter().all(|x| x["status"] == "credited") && !v.is_empty())
        });
    }
    all
}

fn ltc_withdrawals_on(addr: &str) -> bool {
    let (st, s) = http(addr, "GET", "/api/v1/status", "", "");
    assert_eq!(st, 200, "{s}");
    s["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["asset"] == "LTC")
        .unwrap()["withdrawals"]
        .as_bool()
        .unwrap()
}

fn start(dir: &Path, config: &str) -> (std::process::Child, String) {
    let file = dir.join("kinko.toml");
    std::fs::write(&file, config).unwrap();
    let mut child = spawn(&dir.join("data"), &["--config", file.to_str().unwrap(), "serve"]);
    let addr = super::serving_addr(&mut child);
    (child, addr)
}

/// Issue 16's reproduction, with no `[risk]` section: 50 new accounts each withdraw to the same
/// new address. The first three wait (a session under a day old), the next ones are held for
/// review (more than 3 accounts paying one address in a day), the eleventh is held and halts
/// LTC withdrawals (more than 10), and the rest are refused. Nothing goes out.
#[test]
fn fifty_new_accounts_paying_one_new_address_are_held_and_the_asset_halted_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(tmp.path(), BASE);
    let mut all = customers(&addr, 50);
    assert!(ltc_withdrawals_on(&addr));
    let addresses: Vec<Value> = all.iter_mut().map(|c| whitelist(&addr, c)).collect();
    let mut outcomes = Vec::new();
    for (c, a) in all.iter_mut().zip(&addresses) {
        let (st, w) = withdraw(&addr, c, a);
        outcomes.push(match st {
            200 => w["status"].as_str().unwrap().to_owned(),
            _ => w["code"].as_str().unwrap_or("?").to_owned(),
        });
    }
    let count = |s: &str| outcomes.iter().filter(|o| *o == s).count();
    assert_eq!(
        (count("waiting"), count("review"), count("WITHDRAWALS_DISABLED")),
        (3, 8, 39),
        "{outcomes:?}"
    );
    assert!(outcomes[..3].iter().all(|o| o == "waiting"), "{outcomes:?}");
    assert!(outcomes[3..11].iter().all(|o| o == "review"), "{outcomes:?}");
    assert!(!ltc_withdrawals_on(&addr), "LTC withdrawals halted");
    // The simulated chain takes what is ready every half second: nothing is, nothing goes out.
    std::thread::sleep(Duration::from_secs(2));
    for c in &all {
        let (_, list) = http(&addr, "GET", "/api/v1/withdrawals", &c.token, "");
        for w in list.as_array().unwrap() {
            assert!(
                ["waiting", "review"].contains(&w["status"].as_str().unwrap()),
                "a withdrawal went out: {w}"
            );
        }
    }
    assert!(terminate(&mut child).success());
}

/// The same drain with the rules removed by an explicit line (`rules = []`; the limits and the
/// per-asset rows stay): every withdrawal goes out.
#[test]
fn an_explicit_line_loosens_the_default_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let config = format!("{BASE}[risk]\nrules = []   # no rules: the limits and per-asset rows stay\n");
    let (mut child, addr) = start(tmp.path(), &config);
    let mut all = customers(&addr, 12);
    let addresses: Vec<Value> = all.iter_mut().map(|c| whitelist(&addr, c)).collect();
    for (c, a) in all.iter_mut().zip(&addresses) {
        let (st, w) = withdraw(&addr, c, a);
        assert_eq!((st, w["status"].as_str()), (200, Some("requested")), "{w}");
    }
    for c in &all {
        until("the withdrawal to complete", 30, || {
            let (_, list) = http(&addr, "GET", "/api/v1/withdrawals", &c.token, "");
            list[0]["status"] == "completed"
        });
    }
    assert!(ltc_withdrawals_on(&addr));
    assert!(terminate(&mut child).success());
}
