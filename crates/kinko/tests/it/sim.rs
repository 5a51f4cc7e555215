//! The simulated chain, as a newcomer meets it: `kinko serve --demo`, a deposit address over
//! HTTP, `kinko sim deposit` with the owner's key, and the balance credited; and where it must
//! not run: without `--demo` or `[sim] enabled`, without a credential for the address, beside a
//! real chain.

use super::{http, kinko, spawn, text, BIN, TEST_MASTER_KEY};
use std::process::Command;
use std::time::{Duration, Instant};

fn sim(addr: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("sim")
        .args(args)
        .env_remove("KINKO_CONFIG")
        .env("KINKO_MASTER_KEY", TEST_MASTER_KEY)
        .env("KINKO_LISTEN", addr)
        .output()
        .expect("run kinko sim")
}

#[test]
fn a_newcomer_sends_a_simulated_deposit_and_sees_it_credited() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = spawn(&data, &["serve", "--demo"]);
    let addr = super::serving_addr(&mut child);
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("demo-credentials.json")).unwrap()).unwrap();
    let key = creds["traders"][0]["api_key"].as_str().unwrap().to_owned();
    let balance = |addr: &str| -> String {
        let (st, b) = http(addr, "GET", "/api/v1/balances", &key, "");
        assert_eq!(st, 200, "{b}");
        b.as_array()
            .unwrap()
            .iter()
            .find(|x| x["asset"] == "LTC")
            .map_or("0".to_owned(), |x| x["available"].as_str().unwrap().to_owned())
    };
    let before = balance(&addr);
    let sim = |addr: &str, args: &[&str]| sim(addr, &[args, &["--token", &key]].concat());
    let (st, a) = http(
        &addr,
        "POST",
        "/api/v1/deposit-addresses",
        &key,
        r#"{"asset":"LTC"}"#,
    );
    assert_eq!(st, 200, "{a}");
    let address = a["address"].as_str().unwrap().to_owned();
    // Bad input is refused with a clear error; nothing is credited.
    let bad = sim(&addr, &["deposit", &address, "1.123456789"]);
    assert!(
        !bad.status.success() && text(&bad).contains("decimal places"),
        "{}",
        text(&bad)
    );
    let unknown = sim(&addr, &["deposit", "sim1nobody", "1"]);
    assert!(
        !unknown.status.success() && text(&unknown).contains("ADDRESS_UNKNOWN"),
        "{}",
        text(&unknown)
    );
    let ok = sim(&addr, &["deposit", &address, "1.5"]);
    assert!(ok.status.success(), "{}", text(&ok));
    // Credited about a second later (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(20);
    let want = kinko_core::Amount::from_decimal(&before, 8).unwrap().0 + 150_000_000;
    loop {
        let now = kinko_core::Amount::from_decimal(&balance(&addr), 8).unwrap().0;
        if now == want {
            break;
        }
        assert!(Instant::now() < deadline, "deposit not credited: {now} != {want}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (st, deps) = http(&addr, "GET", "/api/v1/deposits?asset=LTC", &key, "");
    assert_eq!(st, 200);
    assert!(
        deps.as_array()
            .unwrap()
            .iter()
            .any(|d| d["amount"] == "1.50000000" && d["status"] == "credited"),
        "{deps}"
    );
    let status = super::terminate(&mut child);
    assert!(status.success());
}

/// A demo's simulated deposits need a credential for the address: none is refused, someone
/// else's key does not reach the address, the operator token may name any.
#[test]
fn simulated_deposits_need_the_owners_credential_or_the_operator_token() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let operator = "an operator token for the simulated chain test, long enough";
    std::env::set_var("KINKO_OPERATOR_TOKEN", operator);
    let mut child = spawn(&data, &["serve", "--demo"]);
    std::env::remove_var("KINKO_OPERATOR_TOKEN");
    let addr = super::serving_addr(&mut child);
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("demo-credentials.json")).unwrap()).unwrap();
    let key = |i: usize| creds["traders"][i]["api_key"].as_str().unwrap().to_owned();
    let (st, a) = http(
        &addr,
        "POST",
        "/api/v1/deposit-addresses",
        &key(0),
        r#"{"asset":"LTC"}"#,
    );
    assert_eq!(st, 200, "{a}");
    let body = format!(
        r#"{{"address":"{}","amount":"1"}}"#,
        a["address"].as_str().unwrap()
    );
    for (who, token, want) in [
        ("nobody", String::new(), (401, "UNAUTHORIZED")),
        ("a wrong key", "nokey.nosecret".to_owned(), (401, "UNAUTHORIZED")),
        ("another trader", key(1), (400, "ADDRESS_UNKNOWN")),
    ] {
        let (st, r) = http(&addr, "POST", "/api/v1/sim/deposits", &token, &body);
        assert_eq!((st, r["code"].as_str().unwrap_or("")), want, "{who}: {r}");
    }
    // Without a credential the command line says what it needs.
    let o = Command::new(BIN)
        .args(["sim", "deposit", a["address"].as_str().unwrap(), "1"])
        .env_remove("KINKO_CONFIG")
        .env_remove("KINKO_TOKEN")
        .env_remove("KINKO_OPERATOR_TOKEN")
        .env("KINKO_LISTEN", &addr)
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("--token"),
        "{}",
        text(&o)
    );
    for token in [key(0), operator.to_owned()] {
        let (st, r) = http(&addr, "POST", "/api/v1/sim/deposits", &token, &body);
        assert_eq!(st, 200, "{r}");
    }
    let (_, deps) = http(&addr, "GET", "/api/v1/deposits?asset=LTC", &key(0), "");
    let to_it = deps
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["address"] == a["address"])
        .count();
    assert_eq!(to_it, 2, "{deps}");
    assert!(super::terminate(&mut child).success());
}

/// Without `--demo` and without `[sim] enabled` there is no simulated chain: its endpoint and
/// command are refused, and with no real chain either, deposit addresses say deposits are
/// unavailable. `[sim] enabled = true` turns it on explicitly.
#[test]
fn the_simulated_chain_is_off_unless_a_demo_or_the_config_asks_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = spawn(&data, &["serve"]);
    let addr = super::serving_addr(&mut child);
    let (st, r) = http(
        &addr,
        "POST",
        "/api/v1/auth/register",
        "",
        r#"{"email":"dan@example.com","password":"a long enough password"}"#,
    );
    assert_eq!(st, 201, "{r}");
    let (st, s) = http(
        &addr,
        "POST",
        "/api/v1/auth/login",
        "",
        r#"{"email":"dan@example.com","password":"a long enough password"}"#,
    );
    assert_eq!(st, 200, "{s}");
    let token = s["token"].as_str().unwrap().to_owned();
    for asset in ["BTC", "LTC"] {
        let (st, r) = http(
            &addr,
            "POST",
            "/api/v1/deposit-addresses",
            &token,
            &format!(r#"{{"asset":"{asset}"}}"#),
        );
        assert_eq!(
            (st, r["code"].as_str()),
            (409, Some("DEPOSITS_UNAVAILABLE")),
            "{r}"
        );
    }
    for t in ["", token.as_str()] {
        let (st, r) = http(
            &addr,
            "POST",
            "/api/v1/sim/deposits",
            t,
            r#"{"address":"sim1x","amount":"1"}"#,
        );
        assert_eq!((st, r["code"].as_str()), (403, Some("SIM_DISABLED")), "{r}");
    }
    let o = sim(&addr, &["deposit", "sim1x", "1", "--token", &token]);
    assert!(
        !o.status.success() && text(&o).contains("SIM_DISABLED"),
        "{}",
        text(&o)
    );
    assert!(super::terminate(&mut child).success());

    // Asked for explicitly: the simulated chain runs without the demo's traders.
    let config = tmp.path().join("sim.toml");
    std::fs::write(&config, "[sim]\nenabled = true\n").unwrap();
    let mut child = spawn(&data, &["--config", config.to_str().unwrap(), "serve"]);
    let addr = super::serving_addr(&mut child);
    let (st, s) = http(
        &addr,
        "POST",
        "/api/v1/auth/login",
        "",
        r#"{"email":"dan@example.com","password":"a long enough password"}"#,
    );
    assert_eq!(st, 200, "{s}");
    let token = s["token"].as_str().unwrap().to_owned();
    let (st, a) = http(
        &addr,
        "POST",
        "/api/v1/deposit-addresses",
        &token,
        r#"{"asset":"LTC"}"#,
    );
    assert_eq!(st, 200, "{a}");
    let o = sim(
        &addr,
        &["deposit", a["address"].as_str().unwrap(), "1", "--token", &token],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!data.join("demo-credentials.json").exists());
    assert!(super::terminate(&mut child).success());
}

/// A server with a real chain refuses to start with the simulated chain on (`[sim] enabled`;
/// `--demo` with `[[custody]]` is refused likewise): a clear error and a non-zero exit, before
/// anything is journaled.
#[test]
fn a_server_with_a_real_chain_refuses_to_start_with_the_simulated_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let custody = r#"
[[custody]]
asset = "LTC"
network = "litecoin-regtest"
rpc_url = "http://127.0.0.1:1"
rpc_user = "kinko"
hot_key = "not checked before the refusal"
cold_keys = []
signer_socket = "/nonexistent/ltc.sock"
hot_cap = "1"
"#;
    let both = tmp.path().join("both.toml");
    std::fs::write(&both, format!("[sim]\nenabled = true\n{custody}")).unwrap();
    let o = kinko(&data, &["--config", both.to_str().unwrap(), "serve"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("[sim] enabled = true") && text(&o).contains("refused beside a real chain"),
        "{}",
        text(&o)
    );
    assert!(!data.join("journal").exists(), "nothing was journaled");
}
