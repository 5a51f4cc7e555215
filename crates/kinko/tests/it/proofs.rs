//! Proof of liabilities on real data: a demo day of trading, deposits and withdrawals on a real
//! server; `kinko proof build` beside it; every customer's proof in every asset checked by
//! `kinko-verify` run as a process; a customer's proof over the API matching their balance.

use super::risk::{customer, until, whitelist, withdraw, BASE};
use super::{http, kinko, serving_addr_checking, spawn, terminate, text, BIN};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `kinko-verify` binary beside `kinko` (built by cargo if this test run did not build it).
fn verify_bin() -> PathBuf {
    let bin = Path::new(BIN).with_file_name("kinko-verify");
    if !bin.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "kinko-verify", "--bin", "kinko-verify"])
            .status()
            .expect("cargo build kinko-verify");
        assert!(st.success(), "cannot build kinko-verify");
    }
    bin
}

fn run_verify(args: &[&str]) -> (i32, String) {
    let out = Command::new(verify_bin()).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), text(&out))
}

fn order(addr: &str, key: &str, side: &str) {
    let body = json!({"market": "BTC-USD", "side": side, "type": "market", "size": "0.01"});
    let (st, o) = http(addr, "POST", "/api/v1/orders", key, &body.to_string());
    assert_eq!(st, 200, "{o}");
}

#[test]
fn a_demo_days_proofs_verify_for_every_customer_with_kinko_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("kinko.toml");
    std::fs::write(&cfg, format!("{BASE}[risk]\nrules = []\n")).unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    let data = tmp.path().join("data");
    let mut child = spawn(&data, &["--config", &cfg, "serve", "--demo"]);
    let addr = serving_addr_checking(&mut child, |_| {});
    let creds: Value =
        serde_json::from_slice(&std::fs::read(data.join("demo-credentials.json")).unwrap()).unwrap();
    let alice = creds["traders"][0]["api_key"].as_str().unwrap().to_owned();
    let bob = creds["traders"][1]["api_key"].as_str().unwrap().to_owned();

    // Nothing published yet: a stable code, not an error page.
    let (st, r) = http(&addr, "GET", "/api/v1/proofs/liabilities", "", "");
    assert_eq!(
        (st, r["code"].as_str()),
        (404, Some("PROOF_NOT_PUBLISHED")),
        "{r}"
    );

    // The day: trades both ways, customers depositing, one withdrawing (paid out), one
    // withdrawal still in flight (its funds held) when the proof is built.
    order(&addr, &alice, "buy");
    order(&addr, &bob, "sell");
    order(&addr, &bob, "buy");
    let mut carol = customer(&addr, 1);
    let mut dave = customer(&addr, 2);
    for c in [&carol, &dave] {
        until("the deposit to be credited", 30, || {
            let (_, d) = http(&addr, "GET", "/api/v1/deposits?asset=LTC", &c.token, "");
            d.as_array()
                .is_some_and(|v| !v.is_empty() && v.iter().all(|x| x["status"] == "credited"))
        });
    }
    let a = whitelist(&addr, &mut carol);
    let (st, w) = withdraw(&addr, &mut carol, &a);
    assert_eq!(st, 200, "{w}");
    until("carol's withdrawal to complete", 30, || {
        let (_, list) = http(&addr, "GET", "/api/v1/withdrawals", &carol.token, "");
        list[0]["status"] == "completed"
    });
    let a = whitelist(&addr, &mut dave);
    let (st, w) = withdraw(&addr, &mut dave, &a);
    assert_eq!(st, 200, "{w}");

    // The proof, while the server runs.
    let b = kinko(&data, &["--config", &cfg, "proof", "build"]);
    assert!(b.status.success(), "{}", text(&b));
    let (st, published) = http(&addr, "GET", "/api/v1/proofs/liabilities", "", "");
    assert_eq!(st, 200, "{published}");
    let roots = published["roots"].as_array().unwrap();
    let codes: Vec<&str> = roots.iter().map(|r| r["asset"].as_str().unwrap()).collect();
    for want in ["BTC", "LTC", "USD"] {
        assert!(codes.contains(&want), "{published}");
    }
    let published_file = tmp.path().join("liabilities.json");
    std::fs::write(&published_file, published.to_string()).unwrap();
    let published_file = published_file.to_str().unwrap().to_owned();
    let key = kinko_audit::load_or_create_key(&tmp.path().join("kinko-audit.key")).unwrap();
    let public_key = kinko_audit::public_key_hex(&key.verifying_key());
    assert!(roots
        .iter()
        .all(|r| r["key"] == "audit" && r["public_key"] == public_key.as_str()));

    // Every customer's proof in every asset, through `kinko proof user`, verified by the
    // standalone verifier as a process; their balances add up to the signed total.
    let sets: Vec<PathBuf> = std::fs::read_dir(data.join("proofs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_str().unwrap().starts_with('.'))
        .collect();
    assert_eq!(sets.len(), 1, "{sets:?}");
    let mut checked = 0;
    for r in roots {
        let asset = r["asset"].as_str().unwrap();
        let leaves = std::fs::read_to_string(sets[0].join(format!("{asset}.leaves.jsonl"))).unwrap();
        let mut sum: u128 = 0;
        let mut users = 0;
        for line in leaves.lines() {
            let leaf: Value = serde_json::from_str(line).unwrap();
            let user = leaf["user"].as_u64().unwrap().to_string();
            let out = kinko(&data, &["--config", &cfg, "proof", "user", &user, asset]);
            assert!(out.status.success(), "{}", text(&out));
            let file = tmp.path().join(format!("proof-{asset}-{user}.json"));
            std::fs::write(&file, &out.stdout).unwrap();
            let (code, said) = run_verify(&[
                file.to_str().unwrap(),
                "--published",
                &published_file,
                "--public-key",
                &public_key,
                "--user",
                &user,
            ]);
            assert_eq!(code, 0, "{asset} user {user}: {said}");
            assert!(said.contains("VALID"), "{said}");
            sum += leaf["balance"].as_str().unwrap().parse::<u128>().unwrap();
            users += 1;
            checked += 1;
        }
        assert_eq!(sum.to_string(), r["total"].as_str().unwrap(), "{asset}");
        assert_eq!(users, r["leaves"].as_u64().unwrap(), "{asset}");
    }
    assert!(checked >= 8, "only {checked} proofs");

    // Dave's LTC proof over the API carries his whole balance, the withdrawal in flight
    // included (held funds are still owed), and verifies.
    let (st, p) = http(&addr, "GET", "/api/v1/account/proofs/LTC", &dave.token, "");
    assert_eq!(st, 200, "{p}");
    let (_, bal) = http(&addr, "GET", "/api/v1/balances", &dave.token, "");
    let ltc = bal
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["asset"] == "LTC")
        .unwrap()
        .clone();
    let total = kinko_core::Amount::from_decimal(ltc["total"].as_str().unwrap(), 8)
        .unwrap()
        .0;
    let before_withdrawal_settles = p["balance"].as_str().unwrap().parse::<u128>().unwrap();
    assert!(
        before_withdrawal_settles == 100_000_000 || before_withdrawal_settles == total,
        "{p} {ltc}"
    );
    let file = tmp.path().join("dave.json");
    std::fs::write(&file, p.to_string()).unwrap();
    let (code, said) = run_verify(&[file.to_str().unwrap(), "--published", &published_file]);
    assert_eq!(code, 0, "{said}");
    // Shown to another customer as theirs, it fails.
    let (code, said) = run_verify(&[file.to_str().unwrap(), "--user", "999999"]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("USER_MISMATCH"), "{said}");
    // Tampered on the way (a lower balance), it fails.
    let mut bad = p.clone();
    bad["balance"] = json!("1");
    std::fs::write(&file, bad.to_string()).unwrap();
    let (code, said) = run_verify(&[file.to_str().unwrap()]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("ROOT_HASH_MISMATCH"), "{said}");

    // Errors are stable codes: no proof for an asset the user has no leaf in, or unknown, or
    // without a credential.
    let (st, r) = http(&addr, "GET", "/api/v1/account/proofs/NOPE", &dave.token, "");
    assert_eq!((st, r["code"].as_str()), (404, Some("NO_PROOF")), "{r}");
    let (st, _) = http(&addr, "GET", "/api/v1/account/proofs/LTC", "", "");
    assert_eq!(st, 401);

    assert!(terminate(&mut child).success());
}

/// Reserves against a real `litecoind -regtest` and signer: after deposits, a withdrawal and a
/// sweep to cold, `kinko proof reserves` reads the node's hot and cold balances through the
/// running server and reports LTC covered, per asset; the assets no custody service holds are
/// "not proven", never folded into a total.
#[test]
fn the_reserves_report_against_a_real_litecoind_is_per_asset() {
    use super::crash::{ASSETS_WITHOUT_LTC_TOTP_BUDGET, COIN, OPERATOR_TOKEN};
    let mut x = super::fees::Exchange::start(500, ASSETS_WITHOUT_LTC_TOTP_BUDGET);
    x.deposit(10 * COIN);
    x.withdraw(COIN);
    x.until("the sweep to cold", || x.custody()["ledger_cold"] != "0.00000000");
    x.node.mine(1);
    let cfg = x._tmp.path().join("kinko.toml");
    let cfg = cfg.to_str().unwrap();
    let data = x.data.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(["--data-dir", &data, "--config", cfg])
            .args(args)
            .env_remove("KINKO_CONFIG")
            .env("KINKO_MASTER_KEY", super::TEST_MASTER_KEY)
            .env("KINKO_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("KINKO_LISTEN", &x.addr)
            .output()
            .unwrap()
    };
    let b = run(&["proof", "build"]);
    assert!(b.status.success(), "{}", text(&b));
    let r = run(&["proof", "reserves"]);
    let out = text(&r);
    assert!(r.status.success(), "{out}");
    let ltc = out
        .lines()
        .find(|l| l.starts_with("LTC "))
        .unwrap_or_else(|| panic!("no LTC line: {out}"));
    assert!(
        ltc.contains("liabilities 8.99900000") && ltc.contains("covered"),
        "{out}"
    );
    // The node's balances as the operator's status shows them.
    let c = x.custody();
    let (hot, cold) = (c["node_hot"].as_str().unwrap(), c["node_cold"].as_str().unwrap());
    assert!(
        ltc.contains(&format!("hot {hot}")) && ltc.contains(&format!("cold {cold}")),
        "{ltc} {c}"
    );
    assert_ne!(cold, "0.00000000", "{c}");
    let btc = out.lines().find(|l| l.starts_with("BTC ")).unwrap();
    assert!(btc.contains("not proven"), "{out}");
    assert!(out.contains("verdict: no asset is short"), "{out}");
    assert!(out.contains("hot key control verified: ["), "{out}");
    let report: Value = serde_json::from_slice(
        &std::fs::read(
            std::fs::read_dir(x.data.join("proofs"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.join("reserves.json").exists())
                .unwrap()
                .join("reserves.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let ltc = report["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["asset"] == "LTC")
        .unwrap();
    assert_eq!(ltc["coverage"], "covered", "{report}");
    // The proof of control checks out independently: the message binds LTC, the sequence and
    // the root hash; the key is the configured hot key; the signature verifies — and fails for
    // any other message.
    let control = &ltc["hot_control"];
    let key: kinko_chain::keys::WatchKey = control["key"].as_str().unwrap().parse().unwrap();
    let message = control["message"].as_str().unwrap();
    let signature = control["signature"].as_str().unwrap();
    assert!(
        message.starts_with("kinko proof of reserves v1\nasset LTC\nsequence "),
        "{message}"
    );
    kinko_chain::control::verify_control(&key, message, signature).unwrap();
    let other = message.replace("asset LTC", "asset BTC");
    assert!(kinko_chain::control::verify_control(&key, &other, signature).is_err());
    x.stop();
}
