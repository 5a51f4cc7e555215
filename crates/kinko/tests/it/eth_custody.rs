//! `kinko serve` with `[[custody]]` sections for ETH and a token against a real Anvil node and a
//! real Ethereum signer on its Unix socket: a customer signs up, deposits ETH and the token to
//! the address the HTTP API gives (credited at depth), kinko sweeps them to the hot address
//! (the token after a gas top-up from hot) and books their exact gas, `kinko custody status ETH`
//! / `USDC` show the node against the ledger, and withdrawals approved with a TOTP step-up are
//! signed by the signer after its own checks, mined, and completed at depth, paid from what the
//! sweeps brought.

use super::crash::{cli, customer_with_totp, start, until, withdrawals, Logs, Totp};
use super::custody::{keystore, PASSPHRASE};
use super::{http, text};
use kinko_chain::eth::anvil::{Anvil, CHAIN_ID};
use kinko_chain::eth::{erc20_transfer, Branch, EthAddress};
use kinko_signer::{Keystore, Role, Server, SystemClock};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ETH: u128 = 1_000_000_000_000_000_000;
/// The engine's asset ids: the default assets in order, then the token.
const ETH_ID: u32 = 1;
const USDC_ID: u32 = 5;

/// The default assets and the token; neither ETH nor the token capped by the engine's TOTP
/// budget (the test signer's is relaxed too: this customer approves with TOTP).
const ASSETS: &str = r#"
[[assets]]
code = "BTC"
decimals = 8
[[assets]]
code = "ETH"
decimals = 18
totp_budget = "0"
[[assets]]
code = "LTC"
decimals = 8
[[assets]]
code = "USD"
decimals = 6
[[assets]]
code = "JPY"
decimals = 0
[[assets]]
code = "USDC"
decimals = 6
withdrawal_fee = "1"
totp_budget = "0"
"#;

/// The Ethereum signer on `socket`, on the system clock, its waiting periods zero and its
/// limits in wei (the test's only relaxations: TOTP alone may approve, no reviewer below 9 ETH).
fn eth_signer(dir: &Path, hot: &Path, socket: &Path, token: &EthAddress) -> Server {
    eth_signer_with(dir, hot, socket, token, "")
}

/// [`eth_signer`] with more lines in its `[eth]` section.
fn eth_signer_with(dir: &Path, hot: &Path, socket: &Path, token: &EthAddress, eth_extra: &str) -> Server {
    let config = format!(
        r#"
network = "litecoin-regtest"
asset = "ETH"
asset_id = {ETH_ID}
keystore = "{}"
log = "{}"
socket = "{}"
[policy]
per_tx_max_sats = 5000000000000000000
window_max_sats = 9000000000000000000
totp_budget_sats = 9000000000000000000
fee_max_sats = 1000000
address_cooling_s = 0
credential_maturity_s = 0
registration_maturity_s = 0
[review]
dual_approval_sats = 9000000000000000000
[webauthn]
rp_id = "localhost"
origins = ["http://localhost:8080"]
[eth]
chain_id = {CHAIN_ID}
{eth_extra}
[[eth.tokens]]
asset_id = {USDC_ID}
contract = "{}"
per_tx_max = 100000000
window_max = 300000000
"#,
        hot.display(),
        dir.join("signer.log").display(),
        socket.display(),
        token.checksummed()
    );
    let config = kinko_signer::Config::parse(&config, dir).unwrap();
    let keys = Keystore::open_with(hot, PASSPHRASE, true).unwrap();
    Server::start(config, keys, Arc::new(SystemClock)).unwrap()
}

/// `kinko custody status <asset>`, as JSON.
fn status(addr: &str, asset: &str) -> Value {
    let o = cli(addr, &["custody", "status", asset]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn available(addr: &str, token: &str, asset: &str) -> String {
    let (_, b) = http(addr, "GET", "/api/v1/balances", token, "");
    b.as_array()
        .and_then(|v| v.iter().find(|x| x["asset"] == asset))
        .and_then(|x| x["available"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn serve_with_eth_custody_credits_deposits_and_pays_withdrawals_signed_through_the_socket() {
    let anvil = Anvil::start().expect("anvil (run scripts/install-test-deps)");
    let rpc = anvil.rpc();
    let faucet = anvil.faucet().unwrap();
    let token = anvil.deploy_test_token().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (hot_path, _) = keystore(dir, "hot.keystore", Role::Hot);
    let keys =
        kinko_signer::eth::EthKeys::new(&Keystore::open_with(&hot_path, PASSPHRASE, true).unwrap().master())
            .unwrap();
    let hot = keys.address(Branch::Hot, 0).unwrap();
    let socket = dir.join("signer").join("eth.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let _signer = eth_signer(dir, &hot_path, &socket, &token);
    // kinko: ETH and the token on the node, the signer's account xpub, two blocks final.
    let common = format!(
        "network = \"ethereum\"\nrpc_url = \"{}\"\nsigner_socket = \"{}\"\nconfirmations = 2\npoll_ms = 200\n",
        anvil.url(),
        socket.display()
    );
    let config = dir.join("kinko.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nwithdrawal_cooling_s = 1\n[identity]\nsecurity_lock_s = 0\n[risk]\nrules = []\n{ASSETS}\n\
             [[custody]]\nasset = \"ETH\"\n{common}chain_id = {CHAIN_ID}\nxpub = \"{}\"\nhot_share_bps = 1000\n\
             [[custody]]\nasset = \"USDC\"\n{common}token_contract = \"{}\"\n",
            keys.xpub(),
            token.checksummed()
        ),
    )
    .unwrap();
    let logs = Logs::default();
    let kinko = start(&dir.join("data"), &config, &logs, 0);
    let addr = kinko.addr.clone();

    // A customer signs up with TOTP.
    let (session, mut totp) = customer_with_totp(&addr, "dana@example.com");

    // Deposit addresses: one per user for ETH and the token, the signer's deposit key.
    let deposit_address = |asset: &str| {
        let (st, a) = http(
            &addr,
            "POST",
            "/api/v1/deposit-addresses",
            &session,
            &json!({ "asset": asset }).to_string(),
        );
        assert_eq!(st, 200, "{a}");
        a["address"].as_str().unwrap().to_owned()
    };
    let address = deposit_address("ETH");
    assert_eq!(deposit_address("USDC"), address);
    let deposit = EthAddress::parse(&address).unwrap();
    assert_eq!(address, deposit.checksummed(), "shown in EIP-55 form");
    assert!(
        (0..64u32).any(|i| keys.address(Branch::Deposit, i).unwrap() == deposit),
        "a deposit key of the signer's account"
    );

    // 2 ETH arrive: held at one block, credited at two.
    let paid = rpc.send_from_dev(&faucet, Some(&deposit), 2 * ETH, &[]).unwrap();
    anvil.mine_until_mined(&paid, 1).unwrap();
    rpc.mine(1).unwrap();
    until("the ETH deposit to be credited", 60, &logs, || {
        available(&addr, &session, "ETH") == "2.000000000000000000"
    });
    let s = status(&addr, "ETH");
    assert_eq!(s["node_cold"], "0.000000000000000000", "{s}");
    assert!(s.get("company_address").is_none(), "{s}");
    // kinko sweeps it to the hot address (the signer signs the deposit key's transaction).
    let mine_until = |what: &str, f: &mut dyn FnMut() -> bool| {
        let mut last_block = Instant::now();
        until(what, 90, &logs, || {
            if last_block.elapsed() > Duration::from_millis(300) {
                rpc.mine(1).unwrap();
                last_block = Instant::now();
            }
            f()
        });
    };
    mine_until("the ETH sweep to hot", &mut || {
        rpc.balance(&hot, "latest").unwrap() > 2 * ETH * 99 / 100
    });
    assert!(
        rpc.balance(&deposit, "latest").unwrap() < ETH / 100,
        "swept, gas aside"
    );

    // 20 USDC arrive: credited, then a gas top-up from hot and the token sweep.
    let t = rpc
        .send_from_dev(&faucet, Some(&token), 0, &erc20_transfer(&deposit, 20_000_000))
        .unwrap();
    anvil.mine_until_mined(&t, 1).unwrap();
    mine_until("the token deposit to be credited and swept", &mut || {
        available(&addr, &session, "USDC") == "20.000000"
            && rpc.token_balance(&token, &hot, "latest").unwrap() == 20_000_000
    });
    assert_eq!(rpc.token_balance(&token, &deposit, "latest").unwrap(), 0);
    // Once every sweep is final its exact gas is booked: the node (hot and deposit
    // addresses) matches the ledger for ETH, and the token's ledger never saw ETH.
    mine_until("the node to match the ledger", &mut || {
        let s = status(&addr, "ETH");
        s["node_hot"] == s["ledger_hot"]
    });
    let s = status(&addr, "USDC");
    assert_eq!(
        (&s["node_hot"], &s["ledger_hot"], &s["network_fees"]),
        (&json!("20.000000"), &json!("20.000000"), &json!("0.000000")),
        "{s}"
    );
    let s = status(&addr, "ETH");
    assert_ne!(s["network_fees"], "0.000000000000000000", "sweep gas booked: {s}");
    // The deposits are on the hot address now (the deposit address keeps sweep dust only).
    assert_eq!(s["hot_address"], hot.checksummed(), "{s}");
    let on_hot = kinko_core::Amount::from_decimal(s["node_hot_address"].as_str().unwrap(), 18).unwrap();
    assert!(on_hot.0 > 2 * ETH * 99 / 100, "{s}");
    let left = kinko_core::Amount::from_decimal(s["node_deposit_addresses"].as_str().unwrap(), 18).unwrap();
    assert!(left.0 < ETH / 100, "{s}");
    let u = status(&addr, "USDC");
    assert_eq!(
        (&u["node_hot_address"], &u["node_deposit_addresses"]),
        (&json!("20.000000"), &json!("0.000000")),
        "{u}"
    );
    let log = std::fs::read_to_string(dir.join("signer.log")).unwrap();
    assert_eq!(log.matches(r#""request":"sign_eth_sweep""#).count(), 2, "{log}");
    assert_eq!(
        log.matches(r#""request":"sign_eth_gas_topup""#).count(),
        1,
        "{log}"
    );

    // Withdrawals of 0.5 ETH and 7 USDC to a whitelisted address, each with a TOTP step-up.
    let dest = EthAddress([0xd5; 20]).checksummed();
    let whitelist = |asset: &str, totp: &mut Totp| {
        let body = json!({"asset": asset, "address": dest.to_lowercase(), "label": "mine", "step_up": {"totp": totp.next()}});
        let (st, a) = http(
            &addr,
            "POST",
            "/api/v1/withdrawal-addresses",
            &session,
            &body.to_string(),
        );
        assert_eq!(st, 200, "{a}");
        assert_eq!(a["address"], dest.as_str(), "kept in EIP-55 form: {a}");
        a["id"].as_str().unwrap().to_owned()
    };
    let eth_address = whitelist("ETH", &mut totp);
    let usdc_address = whitelist("USDC", &mut totp);
    let we = request_withdrawal(&addr, &session, &eth_address, "0.5", &totp.next());
    let wt = request_withdrawal(&addr, &session, &usdc_address, "7", &totp.next());
    let mut last_block = Instant::now();
    until("both withdrawals to complete", 90, &logs, || {
        let list = withdrawals(&addr, &session);
        let done = [&we, &wt].iter().all(|id| {
            let w = list.iter().find(|w| w["id"] == id.as_str()).unwrap();
            assert!(
                !matches!(w["status"].as_str(), Some("failed" | "reverted" | "cancelled")),
                "{w}"
            );
            w["status"] == "completed"
        });
        if last_block.elapsed() > Duration::from_millis(300) {
            rpc.mine(1).unwrap();
            last_block = Instant::now();
        }
        done
    });
    let dest = EthAddress::parse(&dest).unwrap();
    assert_eq!(rpc.balance(&dest, "latest").unwrap(), ETH / 2);
    assert_eq!(rpc.token_balance(&token, &dest, "latest").unwrap(), 7_000_000);
    assert_eq!(
        rpc.nonce(&hot, "latest").unwrap(),
        3,
        "one nonce book for the top-up, ETH and the token"
    );
    // The signer read and logged both, each after the withdrawal's own checks (and the two
    // sweeps and the top-up before them).
    let log = std::fs::read_to_string(dir.join("signer.log")).unwrap();
    assert_eq!(log.matches(r#""kind":"eth_signed""#).count(), 5);
    assert_eq!(log.matches(r#""request":"sign_eth_withdrawal""#).count(), 2);
    // The customer paid the amounts and the withdrawal fees.
    until("the balances after the withdrawals", 10, &logs, || {
        available(&addr, &session, "ETH") == "1.498000000000000000"
            && available(&addr, &session, "USDC") == "12.000000"
    });
    // Their gas booked at completion: the node still matches the ledger.
    mine_until("the node to match the ledger after the withdrawals", &mut || {
        let (e, u) = (status(&addr, "ETH"), status(&addr, "USDC"));
        e["node_hot"] == e["ledger_hot"] && u["node_hot"] == u["ledger_hot"]
    });
    let s = status(&addr, "USDC");
    assert_eq!(s["node_hot"], "13.000000", "{s}");
    assert_eq!(s["network_fees"], "0.000000", "{s}");
    // Deposits, sweeps, a top-up, withdrawals and their gas never tripped reconciliation
    // (an unapproved outflow or a shortfall is logged as CRITICAL when it halts).
    let lines = logs.0.lock().unwrap().join("\n");
    assert!(!lines.contains("CRITICAL"), "{}", logs.custody());
    let (_, ready) = http(&addr, "GET", "/ready", "", "");
    for c in [
        "balances:ETH",
        "balances:USDC",
        "reconcile:ETH",
        "reconcile:USDC",
        "sweeps:ETH",
    ] {
        assert_eq!(
            ready["components"][c]["up"], true,
            "{c} ran and found nothing: {ready}"
        );
    }

    // Killed and started again: it resumes from the scan cursors kept in the data dir (near
    // the head, not at block 0), credits nothing twice, signs nothing again, trips nothing.
    kinko.kill();
    let head = rpc.block_number().unwrap();
    for f in [
        "ETH.eth-deposits.json",
        "USDC.eth-deposits.json",
        "ETH.eth-reconcile.json",
    ] {
        let text = std::fs::read_to_string(dir.join("data").join("custody").join(f)).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let cursor = v.get("cursor").unwrap_or(&v).as_u64().unwrap();
        assert!(
            cursor + 3 >= head && cursor <= head,
            "{f}: {cursor} (head {head})"
        );
    }
    let kinko = start(&dir.join("data"), &config, &logs, 1);
    let addr = kinko.addr.clone();
    rpc.mine(3).unwrap();
    until("the restarted custody loop to reconcile", 60, &logs, || {
        let (_, ready) = http(&addr, "GET", "/ready", "", "");
        ready["components"]["balances:ETH"]["up"] == true
            && ready["components"]["balances:USDC"]["up"] == true
    });
    let (e, u) = (status(&addr, "ETH"), status(&addr, "USDC"));
    assert_eq!(e["node_hot"], e["ledger_hot"], "{e}");
    assert_eq!(u["node_hot"], u["ledger_hot"], "{u}");
    assert_eq!(available(&addr, &session, "USDC"), "12.000000", "credited once");
    let log = std::fs::read_to_string(dir.join("signer.log")).unwrap();
    assert_eq!(
        log.matches(r#""kind":"eth_signed""#).count(),
        5,
        "nothing signed again"
    );
    let lines = logs.0.lock().unwrap().join("\n");
    assert!(!lines.contains("CRITICAL"), "{}", logs.custody());
    kinko.kill();
}

/// Requests a withdrawal of `amount` (a decimal) with a TOTP code; its id. A new address cools
/// for the configured second first (a refused request uses up no code: the same one again).
fn request_withdrawal(addr: &str, session: &str, address_id: &str, amount: &str, code: &str) -> String {
    let body = json!({"address_id": address_id, "amount": amount, "step_up": {"totp": code}});
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, w) = http(addr, "POST", "/api/v1/withdrawals", session, &body.to_string());
        if w["code"] == "WITHDRAWAL_ADDRESS_COOLING" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(st, 200, "withdrawal of {amount}: {w}");
        return w["id"].as_str().unwrap().to_owned();
    }
}

/// The cold side through the binary: `kinko serve` with a cold multisig (2 of 3 keyholders'
/// `--role cold` keystores) sends the hot wallet's excess of ETH and of the token to it, signed
/// through the signer's socket; `kinko custody status` shows it as cold; a refill of ETH is a
/// request file from `kinko custody refill`, signed by two keyholders (what `kinko-signer
/// offline-sign` does), and `kinko custody submit`, mined and booked.
#[test]
fn serve_sweeps_the_excess_to_the_cold_multisig_and_refills_through_the_ceremony() {
    use kinko_chain::eth::cold::{read_state, EthRefill};
    use kinko_signer::eth_cold::OwnerKey;
    let anvil = Anvil::start().expect("anvil (run scripts/install-test-deps)");
    let rpc = anvil.rpc();
    let faucet = anvil.faucet().unwrap();
    let token = anvil.deploy_test_token().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (hot_path, _) = keystore(dir, "hot.keystore", Role::Hot);
    let keys =
        kinko_signer::eth::EthKeys::new(&Keystore::open_with(&hot_path, PASSPHRASE, true).unwrap().master())
            .unwrap();
    let owners: Vec<OwnerKey> = (1..=3)
        .map(|n| {
            let (path, _) = keystore(dir, &format!("cold-{n}.keystore"), Role::Cold);
            OwnerKey::new(&Keystore::open_with(&path, PASSPHRASE, true).unwrap().master()).unwrap()
        })
        .collect();
    let addrs: Vec<EthAddress> = owners.iter().map(OwnerKey::address).collect();
    let cold = anvil.deploy_cold_multisig(&addrs, 2).unwrap();
    let socket = dir.join("signer").join("eth.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let extra = format!(
        "gas_limit_max = 200000\ncold_contract = \"{}\"",
        cold.checksummed()
    );
    let _signer = eth_signer_with(dir, &hot_path, &socket, &token, &extra);
    let common = format!(
        "network = \"ethereum\"\nrpc_url = \"{}\"\nsigner_socket = \"{}\"\nconfirmations = 2\npoll_ms = 200\nhot_share_bps = 1000\n",
        anvil.url(),
        socket.display()
    );
    let config = dir.join("kinko.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nwithdrawal_cooling_s = 1\n[identity]\nsecurity_lock_s = 0\n[risk]\nrules = []\n{ASSETS}\n\
             [[custody]]\nasset = \"ETH\"\n{common}chain_id = {CHAIN_ID}\nxpub = \"{}\"\ncold_contract = \"{}\"\n\
             [[custody]]\nasset = \"USDC\"\n{common}token_contract = \"{}\"\n",
            keys.xpub(),
            cold.checksummed(),
            token.checksummed()
        ),
    )
    .unwrap();
    let logs = Logs::default();
    let kinko = start(&dir.join("data"), &config, &logs, 0);
    let addr = kinko.addr.clone();

    // A customer's 2 ETH and 20 USDC, credited.
    let (session, _totp) = customer_with_totp(&addr, "erin@example.com");
    let deposit_address = |asset: &str| {
        let (st, a) = http(
            &addr,
            "POST",
            "/api/v1/deposit-addresses",
            &session,
            &json!({ "asset": asset }).to_string(),
        );
        assert_eq!(st, 200, "{a}");
        EthAddress::parse(a["address"].as_str().unwrap()).unwrap()
    };
    let deposit = deposit_address("ETH");
    assert_eq!(deposit_address("USDC"), deposit);
    let paid = rpc.send_from_dev(&faucet, Some(&deposit), 2 * ETH, &[]).unwrap();
    let t = rpc
        .send_from_dev(&faucet, Some(&token), 0, &erc20_transfer(&deposit, 20_000_000))
        .unwrap();
    anvil.mine_until_mined(&paid, 1).unwrap();
    anvil.mine_until_mined(&t, 1).unwrap();
    rpc.mine(1).unwrap();
    until("the deposits to be credited", 60, &logs, || {
        available(&addr, &session, "ETH").starts_with("2.")
            && available(&addr, &session, "USDC") == "20.000000"
    });

    // The deposits are swept to hot, and the excess over hot's 10% share goes on to the
    // contract: down to half the limit (0.1 ETH, 1 USDC) in hot.
    let mut last_block = Instant::now();
    let mut tick = || {
        if last_block.elapsed() > Duration::from_millis(300) {
            rpc.mine(1).unwrap();
            last_block = Instant::now();
        }
    };
    until("the sweeps to cold", 60, &logs, || {
        tick();
        status(&addr, "USDC")["node_cold"] == "19.000000"
            && status(&addr, "ETH")["node_cold"] != "0.000000000000000000"
    });
    let s = status(&addr, "ETH");
    assert_eq!(
        s["node_cold"], s["ledger_cold"],
        "the node against the ledger: {s}"
    );
    assert_eq!(
        status(&addr, "USDC")["ledger_cold"],
        "19.000000",
        "the token's sweep booked"
    );
    let cold_before = rpc.balance(&cold, "latest").unwrap();
    assert!(
        cold_before > 18 * ETH / 10 && cold_before < 19 * ETH / 10,
        "{cold_before}"
    );

    // The ceremony: `kinko custody refill`, two keyholders sign offline, `kinko custody submit`.
    let file = dir.join("refill.json");
    let o = cli(
        &addr,
        &[
            "custody",
            "refill",
            "ETH",
            "0.05",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    for k in &owners[1..] {
        let mut r: EthRefill = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let sig = k.sign_refill(&r).unwrap();
        r.signatures.push(sig);
        std::fs::write(&file, serde_json::to_string_pretty(&r).unwrap()).unwrap();
    }
    let o = cli(&addr, &["custody", "submit", "ETH", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("broadcast"),
        "{}",
        text(&o)
    );
    until("the refill to be mined and booked", 60, &logs, || {
        tick();
        let s = status(&addr, "ETH");
        read_state(&rpc, &cold, "latest").unwrap().nonce == 1 && s["node_cold"] == s["ledger_cold"]
    });
    assert_eq!(rpc.balance(&cold, "latest").unwrap(), cold_before - ETH / 20);
    // Submitted again, the same file is refused: the contract's nonce moved on.
    let o = cli(&addr, &["custody", "submit", "ETH", file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("REFILL_INVALID") || text(&o).contains("REFILL_IN_FLIGHT"),
        "{}",
        text(&o)
    );
    let log = std::fs::read_to_string(dir.join("signer.log")).unwrap();
    assert_eq!(
        log.matches(r#""request":"sign_eth_cold_sweep""#).count(),
        2,
        "{log}"
    );
    assert_eq!(log.matches(r#""request":"sign_eth_refill""#).count(), 1);
    kinko.kill();
}
