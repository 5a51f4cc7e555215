//! `kinko serve` with a `[[custody]]` section against a real `litecoind -regtest` and a real
//! signer on its Unix socket: a deposit over the HTTP API is credited, the hot wallet is swept to
//! cold, and an operator refills hot from cold with `kinko custody refill`, two keyholders'
//! offline signatures and `kinko custody submit`.

use super::{spawn, text, BIN, TEST_MASTER_KEY};
use kinko_chain::psbt;
use kinko_chain::regtest::RegtestNode;
use kinko_chain::Network;
use kinko_signer::keystore::KdfParams;
use kinko_signer::{Keystore, ManualClock, Role, Server};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const OPERATOR_TOKEN: &str = "operator-token-for-custody-tests-0123456789";
pub(crate) const PASSPHRASE: &str = "correct horse battery staple";

fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let start = rest.find(['{', '[']).unwrap_or(0);
    let end = rest.rfind(['}', ']']).map_or(rest.len(), |e| e + 1);
    (
        status,
        serde_json::from_str(&rest[start..end]).unwrap_or(serde_json::Value::Null),
    )
}

fn cli(addr: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("KINKO_CONFIG")
        .env("KINKO_MASTER_KEY", TEST_MASTER_KEY)
        .env("KINKO_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env("KINKO_LISTEN", addr)
        .output()
        .expect("run kinko")
}

/// A fast test keystore of `role` in `dir`, with its watch key.
pub(crate) fn keystore(dir: &Path, name: &str, role: Role) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    Keystore::create_with(
        &path,
        Network::LitecoinRegtest,
        role,
        PASSPHRASE,
        KdfParams::TEST_FAST,
    )
    .unwrap();
    let k = Keystore::open_with(&path, PASSPHRASE, true).unwrap();
    (path, k.watch_key().to_string())
}

/// A `[[custody]]` section for LTC on `node` (its RPC password written beside it in `dir`) with
/// the signer on `socket`: one confirmation is final, polled every 200 ms; `tuning` adds keys
/// (`hot_share_bps`, `hot_cap`, ...).
pub(crate) fn custody_section(
    dir: &Path,
    node: &RegtestNode,
    hot_key: &str,
    cold_list: &str,
    socket: &Path,
    tuning: &str,
) -> String {
    std::fs::write(dir.join("rpc-password"), node.password()).unwrap();
    format!(
        r#"
[[custody]]
asset = "LTC"
network = "litecoin-regtest"
rpc_url = "{}"
rpc_user = "{}"
rpc_password_file = "{}"
hot_key = "{hot_key}"
cold_keys = [{cold_list}]
signer_socket = "{}"
confirmations = 1
finality_depth = 1
poll_ms = 200
lookahead = 50
{tuning}"#,
        node.url(),
        node.user(),
        dir.join("rpc-password").display(),
        socket.display()
    )
}

/// Waits (bounded) until `f` holds.
fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn serve_with_custody_credits_a_real_deposit_sweeps_to_cold_and_refills_offline() {
    let node = RegtestNode::start().expect("litecoind regtest (run scripts/install-test-deps)");
    let miner = node.miner();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (hot_path, hot_key) = keystore(dir, "hot.keystore", Role::Hot);
    let cold: Vec<(std::path::PathBuf, String)> = (1..=3)
        .map(|i| keystore(dir, &format!("cold{i}.keystore"), Role::Cold))
        .collect();
    let cold_list = cold
        .iter()
        .map(|(_, k)| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // The signer, on its own socket (in this test process; its binary is tested in its crate).
    let socket = dir.join("signer").join("ltc.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let signer_config = format!(
        r#"
network = "litecoin-regtest"
asset = "LTC"
asset_id = 2
keystore = "{}"
log = "{}"
socket = "{}"
[policy]
per_tx_max_sats = 1000000000
window_max_sats = 3000000000
fee_max_sats = 1000000
[webauthn]
rp_id = "localhost"
origins = ["http://localhost:8080"]
[cold]
threshold = 2
keys = [{cold_list}]
"#,
        hot_path.display(),
        dir.join("signer.log").display(),
        socket.display()
    );
    let signer_config = kinko_signer::Config::parse(&signer_config, dir).unwrap();
    let keys = Keystore::open_with(&hot_path, PASSPHRASE, true).unwrap();
    let _signer = Server::start(signer_config, keys, Arc::new(ManualClock::at_system_now())).unwrap();
    // kinko, configured for the node and the signer.
    let config = dir.join("kinko.toml");
    std::fs::write(
        &config,
        custody_section(
            dir,
            &node,
            &hot_key,
            &cold_list,
            &socket,
            "hot_share_bps = 500\nhot_cap = \"1\"\n",
        ),
    )
    .unwrap();
    std::env::set_var("KINKO_OPERATOR_TOKEN", OPERATOR_TOKEN);
    let mut child = spawn(
        &dir.join("data"),
        &["--config", config.to_str().unwrap(), "serve"],
    );
    std::env::remove_var("KINKO_OPERATOR_TOKEN");
    let addr = super::serving_addr(&mut child);

    // A customer signs up and asks for a deposit address: derived from the hot xpub.
    let (st, r) = http(
        &addr,
        "POST",
        "/api/v1/auth/register",
        None,
        r#"{"email":"carol@example.com","password":"a long enough password"}"#,
    );
    assert_eq!(st, 201, "{r}");
    let (st, s) = http(
        &addr,
        "POST",
        "/api/v1/auth/login",
        None,
        r#"{"email":"carol@example.com","password":"a long enough password"}"#,
    );
    assert_eq!(st, 200, "{s}");
    let token = s["token"].as_str().unwrap().to_owned();
    // (Handed out once the node watches it: the custody service imports ahead of use.)
    let mut a = serde_json::Value::Null;
    until("a deposit address", 30, || {
        let (st, r) = http(
            &addr,
            "POST",
            "/api/v1/deposit-addresses",
            Some(&token),
            r#"{"asset":"LTC"}"#,
        );
        assert!(
            st == 200 || (st == 503 && r["code"] == "CUSTODY_UNAVAILABLE"),
            "{st} {r}"
        );
        a = r;
        st == 200
    });
    let address = a["address"].as_str().unwrap().to_owned();
    assert!(address.starts_with("rltc1q"), "{address}");
    // The simulated chain is off on a server with a real chain.
    let (st, e) = http(
        &addr,
        "POST",
        "/api/v1/sim/deposits",
        None,
        &format!(r#"{{"address":"{address}","amount":"5"}}"#),
    );
    assert_eq!((st, e["code"].as_str()), (403, Some("SIM_DISABLED")), "{e}");

    // 10 LTC arrive and confirm: credited once.
    miner.send_to_address(&address, "10").unwrap();
    node.mine(1);
    let balance = || {
        let (_, b) = http(&addr, "GET", "/api/v1/balances", Some(&token), "");
        b.as_array()
            .and_then(|v| v.iter().find(|x| x["asset"] == "LTC"))
            .and_then(|x| x["available"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    until("the deposit to be credited", 30, || balance() == "10.00000000");
    // Hot may hold 5% of customer funds: the rest goes to cold, once company funds can pay
    // the sweep's miner fee (customers' coins never do): the operator sends 0.1 LTC to the
    // company's own address.
    let status = || {
        let o = cli(&addr, &["custody", "status", "LTC"]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let o = cli(&addr, &["custody", "company-address", "LTC"]);
    assert!(o.status.success(), "{}", text(&o));
    let company = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    miner.send_to_address(&company, "0.1").unwrap();
    node.mine(1);
    until("the sweep to cold", 30, || {
        status()["ledger_cold"] != "0.00000000"
    });
    node.mine(1);
    let s = status();
    assert_eq!(s["node_cold"], s["ledger_cold"], "{s}");

    // Refill 2 LTC: a PSBT file, signed offline by keyholders 1 and 2, then submitted.
    let file = dir.join("refill.psbt");
    let o = cli(
        &addr,
        &["custody", "refill", "LTC", "2", "--out", file.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    for (keystore, _) in &cold[..2] {
        let mut p = psbt::from_base64(std::fs::read_to_string(&file).unwrap().trim()).unwrap();
        let k = Keystore::open_with(keystore, PASSPHRASE, true).unwrap();
        assert!(kinko_signer::sign::sign(&mut p, &k.master()).unwrap() > 0);
        std::fs::write(&file, psbt::to_base64(&p)).unwrap();
    }
    let o = cli(&addr, &["custody", "submit", "LTC", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("broadcast"),
        "{}",
        text(&o)
    );
    // Without the operator token nothing custody-related answers.
    let (st, _) = http(&addr, "GET", "/api/v1/admin/custody/LTC", None, "");
    assert_eq!(st, 401);
    assert!(super::terminate(&mut child).success());
    // The journal holds the refill of exactly 2 LTC (hot may have been swept again since: it
    // holds at most its share).
    let d = super::kinko(&dir.join("data"), &["journal", "dump"]);
    let dump = String::from_utf8_lossy(&d.stdout);
    assert!(
        dump.lines().any(|l| l.contains("RecordCustodyTx")
            && l.contains("Refill")
            && l.contains("amount: Amount(200000000)")),
        "{}",
        dump.lines()
            .filter(|l| l.contains("RecordCustodyTx"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
