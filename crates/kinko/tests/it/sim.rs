//! The embedded default's simulated chain, as a newcomer meets it: `kinko serve` with no
//! `[[custody]]`, a deposit address over HTTP, `kinko sim deposit`, and the balance credited.

use super::{http, spawn, text, BIN, TEST_MASTER_KEY};
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
