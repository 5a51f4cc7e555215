//! Withdrawal fees and company funds with `kinko serve`, a real `litecoind -regtest` and a real
//! signer: a fresh install on the default configuration takes a deposit, sweeps and pays a
//! withdrawal without a `reserve_shortfall`; a company funded through its own address pays a
//! miner fee above the withdrawal fee; a real shortfall still opens an incident, and `kinko
//! incident report` prints it plainly with affected accounts that agree with its split.

use super::crash::{
    coins, customer_with_totp, sats, signer_rig, start, until, withdraw, withdrawals, Kinko, Logs, SignerRig,
    Totp, ASSETS_WITHOUT_LTC_FEE, COIN,
};
use super::custody::custody_section;
use super::{http, text};
use kinko_chain::regtest::RegtestNode;
use kinko_signer::Server;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A server with custody of LTC on a fresh node, and one customer with TOTP (also used by the
/// reserves test in proofs.rs).
pub(super) struct Exchange {
    pub(super) node: RegtestNode,
    _signer: Server,
    pub(super) _tmp: tempfile::TempDir,
    pub(super) data: PathBuf,
    kinko: Option<Kinko>,
    logs: Logs,
    pub(super) addr: String,
    token: String,
    totp: Totp,
}

impl Exchange {
    /// `hot_share_bps`: the hot wallet's share of customer funds (the rest is swept); `extra`:
    /// configuration lines after the `[[custody]]` section (e.g. `[[assets]]`).
    pub(super) fn start(hot_share_bps: u32, extra: &str) -> Exchange {
        let node = RegtestNode::start().expect("litecoind regtest (run scripts/install-test-deps)");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let SignerRig {
            hot_key,
            cold_list,
            socket,
            server: signer,
        } = signer_rig(dir);
        // Test relaxations only: new withdrawal addresses usable after a second, no lock after the
        // first factor, no risk rules (they would make a new session's withdrawal wait an
        // hour; this is about fees, not risk), one confirmation final, a fast poll, the full
        // reconciliation (customer funds against the node) every poll.
        let config = dir.join("kinko.toml");
        let custody = custody_section(
            dir,
            &node,
            &hot_key,
            &cold_list,
            &socket,
            &format!("hot_share_bps = {hot_share_bps}\nhot_cap = \"100\"\nfull_reconcile_s = 0\n"),
        );
        std::fs::write(
            &config,
            format!(
                "[api]\nwithdrawal_cooling_s = 1\n[identity]\nsecurity_lock_s = 0\n[risk]\nrules = []\n{custody}{extra}"
            ),
        )
        .unwrap();
        let data = dir.join("data");
        let logs = Logs::default();
        let kinko = start(&data, &config, &logs, 0);
        let addr = kinko.addr.clone();
        let (token, totp) = customer_with_totp(&addr, "carol@example.com");
        Exchange {
            node,
            _signer: signer,
            _tmp: tmp,
            data,
            kinko: Some(kinko),
            logs,
            addr,
            token,
            totp,
        }
    }

    pub(super) fn until(&self, what: &str, f: impl FnMut() -> bool) {
        until(what, 60, &self.logs, f)
    }

    /// `kinko custody status LTC` (the operator's view), as JSON.
    pub(super) fn custody(&self) -> Value {
        let o = self.cli(&["custody", "status", "LTC"]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    pub(super) fn cli(&self, args: &[&str]) -> std::process::Output {
        super::crash::cli(&self.addr, args)
    }

    fn ltc_available(&self) -> String {
        let (_, b) = http(&self.addr, "GET", "/api/v1/balances", &self.token, "");
        b.as_array()
            .and_then(|v| v.iter().find(|x| x["asset"] == "LTC"))
            .and_then(|x| x["available"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The customer deposits `amount` sats: credited.
    pub(super) fn deposit(&self, amount: u64) {
        let mut a = Value::Null;
        self.until("a deposit address", || {
            let (st, r) = http(
                &self.addr,
                "POST",
                "/api/v1/deposit-addresses",
                &self.token,
                r#"{"asset":"LTC"}"#,
            );
            assert!(
                st == 200 || (st == 503 && r["code"] == "CUSTODY_UNAVAILABLE"),
                "{st} {r}"
            );
            a = r;
            st == 200
        });
        let before = sats(&self.ltc_available());
        self.node
            .miner()
            .send_to_address(a["address"].as_str().unwrap(), &coins(amount))
            .unwrap();
        self.node.mine(1);
        self.until("the deposit to be credited", || {
            sats(&self.ltc_available()) == before + amount
        });
    }

    /// The customer withdraws `amount` sats to the miner's wallet; returns the withdrawal once
    /// completed.
    pub(super) fn withdraw(&mut self, amount: u64) -> Value {
        let dest = self.node.miner().get_new_address("carol elsewhere").unwrap();
        let body =
            json!({"asset": "LTC", "address": dest, "label": "mine", "step_up": {"totp": self.totp.next()}});
        let (st, a) = http(
            &self.addr,
            "POST",
            "/api/v1/withdrawal-addresses",
            &self.token,
            &body.to_string(),
        );
        assert_eq!(st, 200, "{a}");
        let code = self.totp.next();
        let id = withdraw(
            &self.addr,
            &self.token,
            a["id"].as_str().unwrap(),
            amount,
            &code,
            &self.logs,
        );
        let mut last_block = Instant::now();
        let mut done = Value::Null;
        self.until("the withdrawal to complete", || {
            let w = withdrawals(&self.addr, &self.token)
                .into_iter()
                .find(|w| w["id"] == id.as_str())
                .unwrap();
            assert!(
                !matches!(w["status"].as_str(), Some("failed" | "reverted" | "cancelled")),
                "{w}"
            );
            if last_block.elapsed() > Duration::from_millis(500) {
                self.node.mine(1);
                last_block = Instant::now();
            }
            let complete = w["status"] == "completed";
            done = w;
            complete
        });
        done
    }

    /// The public status's open notices.
    fn notices(&self) -> Vec<Value> {
        let (st, s) = http(&self.addr, "GET", "/api/v1/status", "", "");
        assert_eq!(st, 200, "{s}");
        s["notices"].as_array().unwrap().clone()
    }

    /// Waits for `n` more full reconciliations (they log each time).
    fn reconciled(&self, n: usize) {
        let count = || {
            self.logs
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("full reconciliation"))
                .count()
        };
        let from = count();
        self.until("full reconciliations", || count() >= from + n);
    }

    pub(super) fn stop(&mut self) {
        if let Some(k) = self.kinko.take() {
            k.kill();
        }
    }
}

fn journal_lines(data: &std::path::Path, what: &str) -> Vec<String> {
    let dump = super::kinko(data, &["journal", "dump"]);
    assert!(dump.status.success(), "{}", text(&dump));
    String::from_utf8_lossy(&dump.stdout)
        .lines()
        .filter(|l| l.contains(what))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_fresh_install_deposits_sweeps_and_withdraws_without_a_reserve_shortfall() {
    // The default configuration: LTC withdrawals charge 0.001.
    // The hot wallet may hold 5% of customer funds: the rest is swept.
    let mut x = Exchange::start(500, super::crash::ASSETS_WITHOUT_LTC_TOTP_BUDGET);
    x.deposit(10 * COIN);
    // The hot wallet is above its limit, but nothing of the company's can pay a sweep's miner
    // fee yet: the sweep waits instead of spending customers' coins.
    x.until("the sweep to wait", || {
        x.logs
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("the sweep waits"))
    });
    assert_eq!(x.custody()["ledger_cold"], "0.00000000");
    // A withdrawal: the customer pays the fee, which pays the miner.
    let w = x.withdraw(COIN);
    assert_eq!(w["fee"], "0.00100000", "{w}");
    assert_eq!(sats(&x.ltc_available()), 9 * COIN - 100_000);
    // Fee revenue now pays the sweep.
    x.until("the sweep to cold", || x.custody()["ledger_cold"] != "0.00000000");
    x.node.mine(1);
    x.reconciled(3);
    let c = x.custody();
    assert_eq!(c["network_fees"], "0.00000000", "{c}");
    assert_eq!(c["company_treasury"], "0.00000000", "{c}");
    assert_eq!(c["withdrawal_fee"], "0.00100000", "{c}");
    let revenue = sats(c["fee_revenue"].as_str().unwrap());
    assert!(revenue > 0 && revenue < 100_000, "{c}");
    assert_eq!(c["company_funds"], c["fee_revenue"], "{c}");
    // `/metrics` shows the node's balances as custody reports them, the configured hot share
    // cap and hot cap, and the reserves covered.
    let (st, m) = super::http_text(&x.addr, "GET", "/metrics", "", "");
    assert_eq!(st, 200);
    let c = x.custody();
    for (wallet, field) in [("hot", "node_hot"), ("cold", "node_cold")] {
        let line = format!("kinko_custody_balance{{asset=\"LTC\",wallet=\"{wallet}\",source=\"node\"}} ");
        let v: u64 = m
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .unwrap_or_else(|| panic!("{line} in {m}"))
            .parse()
            .unwrap();
        assert_eq!(v, sats(c[field].as_str().unwrap()), "{c} {m}");
    }
    assert!(
        m.contains("kinko_hot_share_cap_ratio{asset=\"LTC\"} 0.05\n"),
        "{m}"
    );
    assert!(m.contains("kinko_hot_cap{asset=\"LTC\"} 10000000000\n"), "{m}");
    let coverage: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("kinko_reserve_coverage_ratio{asset=\"LTC\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(coverage >= 1.0, "{m}");
    // Nothing open, on the public status either.
    assert!(x.notices().is_empty(), "{:?}", x.notices());
    x.stop();
    let incidents = journal_lines(&x.data, "OpenIncident");
    assert!(incidents.is_empty(), "{incidents:#?}");
    // The fee came from the configuration through the journal.
    assert_eq!(journal_lines(&x.data, "SetWithdrawalFee").len(), 5);
    let audit = super::kinko(&x.data, &["audit"]);
    assert!(audit.status.success(), "{}", text(&audit));
}

#[test]
fn a_company_funded_through_its_address_pays_a_miner_fee_above_the_withdrawal_fee() {
    let assets = ASSETS_WITHOUT_LTC_FEE.replace("withdrawal_fee = \"0\"", "withdrawal_fee = \"0.000001\"");
    // The hot wallet may hold all of the customers' funds (the company's coins on top are
    // swept, the company paying that sweep's miner fee too).
    let mut x = Exchange::start(10_000, &assets);
    x.deposit(3 * COIN);
    // The operator funds the company's own account with 0.5 LTC at its address.
    let o = x.cli(&["custody", "company-address", "LTC"]);
    assert!(o.status.success(), "{}", text(&o));
    let company = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(company.starts_with("rltc1q"), "{company}");
    assert_eq!(x.custody()["company_address"], company.as_str());
    x.node.miner().send_to_address(&company, "0.5").unwrap();
    x.node.mine(1);
    x.until("the company deposit", || {
        x.custody()["company_treasury"] != "0.00000000"
    });
    // The customer's balance is untouched.
    assert_eq!(sats(&x.ltc_available()), 3 * COIN);
    let w = x.withdraw(COIN / 2);
    assert_eq!(w["fee"], "0.00000100", "{w}");
    x.node.mine(1);
    x.reconciled(3);
    let c = x.custody();
    assert_eq!(c["network_fees"], "0.00000000", "{c}");
    assert_eq!(c["fee_revenue"], "0.00000000", "{c}");
    let treasury = sats(c["company_treasury"].as_str().unwrap());
    assert!(treasury < COIN / 2 && treasury > COIN / 2 - 100_000, "{c}");
    assert!(x.notices().is_empty(), "{:?}", x.notices());
    x.stop();
    assert!(journal_lines(&x.data, "OpenIncident").is_empty());
    let deposits = journal_lines(&x.data, "CompanyDeposit");
    assert_eq!(deposits.len(), 1, "{deposits:#?}");
    assert!(deposits[0].contains("amount: Amount(50000000)"), "{deposits:#?}");
}

#[test]
fn a_real_shortfall_opens_an_incident_whose_report_agrees_with_its_split() {
    // No withdrawal fee and no company funds: the miner is paid with customers' coins.
    let mut x = Exchange::start(500, ASSETS_WITHOUT_LTC_FEE);
    x.deposit(COIN / 2);
    let w = x.withdraw(COIN / 10);
    assert_eq!(w["fee"], "0.00000000", "{w}");
    let mut notices = Vec::new();
    x.until("the shortfall notice", || {
        notices = x.notices();
        !notices.is_empty()
    });
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["kind"], "reserve_shortfall", "{notices:?}");
    let c = x.custody();
    let miner = c["network_fees"].as_str().unwrap().to_owned();
    assert_ne!(miner, "0.00000000");
    // Withdrawals continue (the company owes the difference), and the log says so.
    let lines = x.logs.0.lock().unwrap().clone();
    let opened: Vec<&String> = lines.iter().filter(|l| l.contains("incident opened")).collect();
    assert_eq!(opened.len(), 1, "{opened:#?}");
    assert!(opened[0].contains("withdrawals continue"), "{opened:#?}");
    x.stop();
    let out = super::kinko(&x.data, &["incident", "report", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    // One customer held the asset and the company nothing: the whole loss is the customer's,
    // and the affected accounts say exactly that.
    for want in [
        "incident 1 — reserve_shortfall — LTC".to_owned(),
        "status     open\n".to_owned(),
        format!("missing    {miner} (customers {miner}, company 0.00000000)"),
        format!("  customers  {miner}\n"),
        format!("    account        1  {miner}  (of "),
        "  company    0.00000000\n".to_owned(),
    ] {
        assert!(report.contains(&want), "missing {want:?} in\n{report}");
    }
    assert!(!report.contains("Some("), "debug forms in the report:\n{report}");
}

#[test]
fn the_configured_withdrawal_fee_reaches_the_engine_through_the_journal_when_it_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("kinko.toml");
    let asset_fee = |ltc: &str| {
        std::fs::write(
            &config,
            ASSETS_WITHOUT_LTC_FEE.replace("withdrawal_fee = \"0\"", &format!("withdrawal_fee = \"{ltc}\"")),
        )
        .unwrap();
        let mut child = super::spawn(&data, &["--config", config.to_str().unwrap(), "serve"]);
        let addr = super::serving_addr(&mut child);
        let (st, assets) = http(&addr, "GET", "/api/v1/assets", "", "");
        assert_eq!(st, 200, "{assets}");
        assert!(super::terminate(&mut child).success());
        assets
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["code"] == "LTC" || a["asset"] == "LTC")
            .map(|a| a["withdrawal_fee"].clone())
            .unwrap()
    };
    // First start: every asset's fee is journaled; customers see LTC's.
    assert_eq!(asset_fee("0.0005"), "0.00050000");
    assert_eq!(journal_lines(&data, "SetWithdrawalFee").len(), 5);
    // The same configuration again journals nothing.
    assert_eq!(asset_fee("0.0005"), "0.00050000");
    assert_eq!(journal_lines(&data, "SetWithdrawalFee").len(), 5);
    // A changed fee is journaled once, and takes effect.
    assert_eq!(asset_fee("0.002"), "0.00200000");
    let set = journal_lines(&data, "SetWithdrawalFee");
    assert_eq!(set.len(), 6, "{set:#?}");
    assert!(set[5].contains("fee: Amount(200000)"), "{set:#?}");
    // A fee finer than the asset's decimals is refused before anything starts.
    std::fs::write(
        &config,
        ASSETS_WITHOUT_LTC_FEE.replace("withdrawal_fee = \"0\"", "withdrawal_fee = \"0.000000001\""),
    )
    .unwrap();
    let mut child = super::spawn(&data, &["--config", config.to_str().unwrap(), "serve"]);
    let status = super::wait_exit(&mut child, Duration::from_secs(30));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        !status.success() && err.contains("withdrawal_fee"),
        "{status:?}: {err}"
    );
}
