//! `kinko serve` with `[[custody]]` killed (SIGKILL) at pseudo-random points while withdrawals
//! go through signing, recording, broadcasting and completing, against a real `litecoind
//! -regtest` and a real signer, many times over on the same data directory. Afterwards every
//! withdrawal is paid exactly once on chain (counted in the blocks themselves), the signer has
//! not halted, no incident is open, LTC withdrawals are on, and the customer's balance is the
//! deposits less what was withdrawn.
//!
//! The seed is printed; `KINKO_CRASH_SEED=<seed>` replays the same kill times and blocks.

use super::custody::{custody_section, keystore, PASSPHRASE};
use super::{http, http_text, BIN, TEST_MASTER_KEY};
use kinko_api::totp;
use kinko_chain::regtest::RegtestNode;
use kinko_signer::{Keystore, Role, Server, SystemClock};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(crate) const OPERATOR_TOKEN: &str = "operator-token-for-crash-tests-0123456789";
pub(crate) const COIN: u64 = 100_000_000;
/// Withdrawals, each a distinct amount so that every payment on chain names its withdrawal.
const AMOUNTS: [u64; 3] = [COIN / 10, COIN / 10 + COIN / 100, COIN / 10 + 2 * COIN / 100];
/// Deposits: two coins, so that a rebuilt transaction may pick other coins than a lost one.
const DEPOSITS: [u64; 2] = [6 * COIN, 4 * COIN];
const KILLS: u32 = 20;

/// The default assets (default fees), LTC without the engine's TOTP budget.
pub(crate) const ASSETS_WITHOUT_LTC_TOTP_BUDGET: &str = r#"
[[assets]]
code = "BTC"
decimals = 8
[[assets]]
code = "ETH"
decimals = 18
[[assets]]
code = "LTC"
decimals = 8
totp_budget = "0"
[[assets]]
code = "USD"
decimals = 6
[[assets]]
code = "JPY"
decimals = 0
"#;

/// The default assets, LTC without a withdrawal fee and without the engine's TOTP budget (the
/// test signer's is relaxed too: these customers approve with TOTP).
pub(crate) const ASSETS_WITHOUT_LTC_FEE: &str = r#"
[[assets]]
code = "BTC"
decimals = 8
[[assets]]
code = "ETH"
decimals = 18
[[assets]]
code = "LTC"
decimals = 8
withdrawal_fee = "0"
totp_budget = "0"
[[assets]]
code = "USD"
decimals = 6
[[assets]]
code = "JPY"
decimals = 0
"#;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A running `kinko serve`, SIGKILLed when dropped.
pub(crate) struct Kinko {
    child: Child,
    pub(crate) addr: String,
}

impl Kinko {
    pub(crate) fn kill(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Kinko {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every line every `kinko serve` of the test logged, for the failure messages.
#[derive(Clone, Default)]
pub(crate) struct Logs(pub(crate) Arc<Mutex<Vec<String>>>);

impl Logs {
    /// The lines that say what custody and the signer did.
    pub(crate) fn custody(&self) -> String {
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .filter(|l| {
                ["withdrawal", "signer", "incident", "ERROR", "WARN", "run "]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub(crate) fn start(data: &Path, config: &Path, logs: &Logs, run: u32) -> Kinko {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env_remove("KINKO_CONFIG")
        .env("KINKO_LOG", "info")
        .env("KINKO_MASTER_KEY", TEST_MASTER_KEY)
        .env("KINKO_LISTEN", "127.0.0.1:0")
        .env("KINKO_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kinko");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let sink = logs.clone();
    sink.0.lock().unwrap().push(format!("----- run {run}"));
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("kinko serving") {
                let _ = tx.send(line.clone());
            }
            sink.0.lock().unwrap().push(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("run {run}: no serving line\n{}", logs.custody()));
    let at = line.find("http://").expect("address in the serving line") + 7;
    let addr = line[at..]
        .split(|c: char| c.is_whitespace() || c == '\u{1b}')
        .next()
        .unwrap()
        .to_owned();
    Kinko { child, addr }
}

/// A hot keystore and three cold ones in `dir`, and the signer serving them on its socket.
pub(crate) struct SignerRig {
    /// The hot key's xpub, for `hot_key`.
    pub hot_key: String,
    /// The cold xpubs, quoted and comma-separated, for `cold_keys = [...]`.
    pub cold_list: String,
    pub socket: std::path::PathBuf,
    pub server: Server,
}

pub(crate) fn signer_rig(dir: &Path) -> SignerRig {
    let (hot_path, hot_key) = keystore(dir, "hot.keystore", Role::Hot);
    let cold_list = (1..=3)
        .map(|i| {
            format!(
                "\"{}\"",
                keystore(dir, &format!("cold{i}.keystore"), Role::Cold).1
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let socket = dir.join("signer").join("ltc.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let server = signer(dir, &hot_path, &cold_list, &socket);
    SignerRig {
        hot_key,
        cold_list,
        socket,
        server,
    }
}

/// The signer on its own socket, on the system clock, its waiting periods for new addresses and
/// factors configured to zero and its TOTP budget to the window (the test's customers approve
/// with TOTP; the test's only relaxations: the defaults stay a day, three days for a first
/// factor, and 0.05 LTC a day for TOTP alone).
pub(crate) fn signer(dir: &Path, hot: &Path, cold_list: &str, socket: &Path) -> Server {
    let config = format!(
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
address_cooling_s = 0
credential_maturity_s = 0
registration_maturity_s = 0
totp_budget_sats = 3000000000
[webauthn]
rp_id = "localhost"
origins = ["http://localhost:8080"]
[cold]
threshold = 2
keys = [{cold_list}]
"#,
        hot.display(),
        dir.join("signer.log").display(),
        socket.display()
    );
    let config = kinko_signer::Config::parse(&config, dir).unwrap();
    let keys = Keystore::open_with(hot, PASSPHRASE, true).unwrap();
    Server::start(config, keys, Arc::new(SystemClock)).unwrap()
}

/// TOTP codes of strictly increasing steps, each inside the server's window (one step either
/// way): waits for the next 30 s step only when the window is used up.
pub(crate) struct Totp {
    pub(crate) secret: Vec<u8>,
    pub(crate) last: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

impl Totp {
    /// The next code if its step is usable now (at least 2 s away from going stale).
    fn try_next(&mut self) -> Option<String> {
        let ms = unix_ms();
        let now = ms / 30_000;
        let left_ms = 30_000 - ms % 30_000;
        let mut step = (self.last + 1).max(now - 1);
        if step + 1 == now && left_ms < 2_000 {
            step = now;
        }
        // The next step is accepted until the end of this one; not in its last 2 s.
        if step > now + 1 || (step == now + 1 && left_ms < 2_000) {
            return None;
        }
        self.last = step;
        Some(format!("{:06}", totp::code_at(&self.secret, step)))
    }

    /// The next code, waiting (bounded) for a step to become usable.
    pub(crate) fn next(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(70);
        loop {
            if let Some(c) = self.try_next() {
                return c;
            }
            assert!(Instant::now() < deadline, "no TOTP step became usable");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A customer signed up as `email`, logged in, with TOTP enrolled: the session token and the
/// codes.
pub(crate) fn customer_with_totp(addr: &str, email: &str) -> (String, Totp) {
    let login = json!({"email": email, "password": "a long enough password"}).to_string();
    let (st, r) = http(addr, "POST", "/api/v1/auth/register", "", &login);
    assert_eq!(st, 201, "{r}");
    let (st, s) = http(addr, "POST", "/api/v1/auth/login", "", &login);
    assert_eq!(st, 200, "{s}");
    let token = s["token"].as_str().unwrap().to_owned();
    let (st, t) = http(addr, "POST", "/api/v1/me/totp", &token, "");
    assert_eq!(st, 200, "{t}");
    let mut totp = Totp {
        secret: totp::base32_decode(t["secret"].as_str().unwrap()).unwrap(),
        last: 0,
    };
    let body = json!({"enrolment": t["enrolment"], "code": totp.next()});
    let (st, r) = http(addr, "POST", "/api/v1/me/totp/confirm", &token, &body.to_string());
    assert_eq!(st, 200, "{r}");
    (token, totp)
}

/// `kinko <args>` against the server at `addr` with the operator token of these tests.
pub(crate) fn cli(addr: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("KINKO_CONFIG")
        .env("KINKO_MASTER_KEY", TEST_MASTER_KEY)
        .env("KINKO_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env("KINKO_LISTEN", addr)
        .output()
        .expect("run kinko")
}

/// Waits (bounded) until `f` holds.
pub(crate) fn until(what: &str, secs: u64, logs: &Logs, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            logs.custody()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn sats(decimal: &str) -> u64 {
    let (whole, frac) = decimal.split_once('.').unwrap_or((decimal, ""));
    let frac = format!("{frac:0<8}");
    whole.parse::<u64>().unwrap() * COIN + frac[..8].parse::<u64>().unwrap()
}

pub(crate) fn coins(s: u64) -> String {
    format!("{}.{:08}", s / COIN, s % COIN)
}

pub(crate) fn withdrawals(addr: &str, token: &str) -> Vec<Value> {
    let (st, list) = http(addr, "GET", "/api/v1/withdrawals", token, "");
    assert_eq!(st, 200, "{list}");
    list.as_array().unwrap().clone()
}

/// Requests a withdrawal of `amount` with a fresh TOTP code; returns its id.
pub(crate) fn withdraw(
    addr: &str,
    token: &str,
    address_id: &str,
    amount: u64,
    code: &str,
    logs: &Logs,
) -> String {
    let body = json!({"address_id": address_id, "amount": coins(amount), "step_up": {"totp": code}});
    // A new address cools for the configured second first (at once would take two admins); a
    // refused request uses up no code, so the same one is sent again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (st, w) = loop {
        let (st, w) = http(addr, "POST", "/api/v1/withdrawals", token, &body.to_string());
        if w["code"] != "WITHDRAWAL_ADDRESS_COOLING" || Instant::now() > deadline {
            break (st, w);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        st,
        200,
        "withdrawal of {}: {w}\n{}",
        coins(amount),
        logs.custody()
    );
    w["id"].as_str().unwrap().to_owned()
}

/// Every output paying `address` in the blocks above `from`, and in the mempool:
/// (txid, sats, in a block).
fn payments_to(node: &RegtestNode, from: u64, address: &str) -> Vec<(String, u64, bool)> {
    let rpc = node.rpc();
    let tip = rpc.get_block_count().unwrap();
    let mut txs: Vec<(Value, bool)> = Vec::new();
    for h in from + 1..=tip {
        let hash = rpc.get_block_hash(h).unwrap();
        let b: Value = rpc.call("getblock", json!([hash, 2])).unwrap();
        txs.extend(b["tx"].as_array().unwrap().iter().map(|t| (t.clone(), true)));
    }
    let mempool: Vec<String> = rpc.call("getrawmempool", json!([])).unwrap();
    for txid in mempool {
        if let Ok(t) = rpc.call::<Value>("getrawtransaction", json!([txid, true])) {
            txs.push((t, false));
        }
    }
    let mut out = Vec::new();
    for (t, mined) in txs {
        for o in t["vout"].as_array().unwrap() {
            // `address` (newer nodes) or `addresses` (Litecoin Core 0.21).
            let spk = &o["scriptPubKey"];
            let to = spk["address"].as_str() == Some(address)
                || spk["addresses"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(address)));
            if to {
                // The node's decimal, read as a decimal (no float arithmetic).
                let v = sats(&o["value"].to_string());
                out.push((t["txid"].as_str().unwrap().to_owned(), v, mined));
            }
        }
    }
    out
}

#[test]
fn kinko_killed_at_random_points_across_withdrawals_pays_each_exactly_once() {
    let began = Instant::now();
    let seed: u64 = std::env::var("KINKO_CRASH_SEED")
        .ok()
        .map(|s| s.parse().expect("KINKO_CRASH_SEED is a number"))
        .unwrap_or_else(|| unix_ms() ^ u64::from(std::process::id()).rotate_left(32));
    println!("crash test seed {seed} (KINKO_CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);

    let node = RegtestNode::start().expect("litecoind regtest (run scripts/install-test-deps)");
    let miner = node.miner();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let SignerRig {
        hot_key,
        cold_list,
        socket,
        server: signer,
    } = signer_rig(dir);

    // kinko: new withdrawal addresses usable after a second and no lock after the first factor (test
    // configuration); every coin stays hot (no sweeps), one confirmation is final. The built-in
    // risk rules are removed (`rules = []`; its limits stay): they would make these withdrawals
    // through a new session wait an hour, and this test is about crashes, not risk. No LTC
    // withdrawal fee (explicitly: the default charges one), so that the miner fees are paid
    // with customers' coins and reported as reserve shortfalls, checked against the journal
    // below.
    let config = dir.join("kinko.toml");
    let custody = custody_section(
        dir,
        &node,
        &hot_key,
        &cold_list,
        &socket,
        "hot_share_bps = 10000\nhot_cap = \"1000\"\n",
    );
    std::fs::write(
        &config,
        format!(
            "[api]\nwithdrawal_cooling_s = 1\n[identity]\nsecurity_lock_s = 0\n[risk]\nrules = []\n{custody}{ASSETS_WITHOUT_LTC_FEE}"
        ),
    )
    .unwrap();
    let data = dir.join("data");
    let logs = Logs::default();
    let mut run = 0;
    let mut kinko = start(&data, &config, &logs, run);
    let addr = kinko.addr.clone();

    // A customer with a session and TOTP.
    let (token, mut totp) = customer_with_totp(&addr, "carol@example.com");

    // Deposits: two coins, credited.
    let mut deposit = Value::Null;
    until("a deposit address", 30, &logs, || {
        let (st, r) = http(
            &addr,
            "POST",
            "/api/v1/deposit-addresses",
            &token,
            r#"{"asset":"LTC"}"#,
        );
        assert!(
            st == 200 || (st == 503 && r["code"] == "CUSTODY_UNAVAILABLE"),
            "{st} {r}"
        );
        deposit = r;
        st == 200
    });
    let deposit = deposit["address"].as_str().unwrap().to_owned();
    for d in DEPOSITS {
        miner.send_to_address(&deposit, &coins(d)).unwrap();
    }
    node.mine(1);
    let deposited: u64 = DEPOSITS.iter().sum();
    let balance = |addr: &str| {
        let (_, b) = http(addr, "GET", "/api/v1/balances", &token, "");
        b.as_array()
            .and_then(|v| v.iter().find(|x| x["asset"] == "LTC").cloned())
            .unwrap_or(Value::Null)
    };
    until("the deposits to be credited", 30, &logs, || {
        balance(&addr)["available"] == coins(deposited)
    });
    let from_height = node.rpc().get_block_count().unwrap();

    // A whitelisted destination (the miner's wallet), usable after a second by configuration.
    let dest = miner.get_new_address("carol elsewhere").unwrap();
    let body = json!({"asset": "LTC", "address": dest, "label": "mine", "step_up": {"totp": totp.next()}});
    let (st, a) = http(
        &addr,
        "POST",
        "/api/v1/withdrawal-addresses",
        &token,
        &body.to_string(),
    );
    assert_eq!(st, 200, "{a}");
    let address_id = a["id"].as_str().unwrap().to_owned();

    // The first withdrawal now; the others as TOTP steps allow, between kills.
    let mut ids: BTreeMap<String, u64> = BTreeMap::new();
    ids.insert(
        withdraw(&addr, &token, &address_id, AMOUNTS[0], &totp.next(), &logs),
        AMOUNTS[0],
    );

    // Kill, restart, repeat.
    let mut kills = 0;
    let mut steps = Vec::new();
    // At least KILLS kills, and on until the TOTP steps have allowed every request (a new
    // step every 30 s).
    let loop_deadline = Instant::now() + Duration::from_secs(90);
    while kills < KILLS || ids.len() < AMOUNTS.len() {
        assert!(
            Instant::now() < loop_deadline,
            "the withdrawals were not all requested after {kills} kills"
        );
        let wait_ms = 50 + rng.below(1_451);
        let mine_at = (rng.below(3) == 0).then(|| rng.below(wait_ms));
        let mut requested = None;
        if ids.len() < AMOUNTS.len() {
            if let Some(code) = totp.try_next() {
                let amount = AMOUNTS[ids.len()];
                ids.insert(
                    withdraw(&kinko.addr, &token, &address_id, amount, &code, &logs),
                    amount,
                );
                requested = Some(amount);
            }
        }
        let t0 = Instant::now();
        if let Some(at) = mine_at {
            std::thread::sleep(Duration::from_millis(at));
            node.mine(1);
        }
        std::thread::sleep(Duration::from_millis(wait_ms).saturating_sub(t0.elapsed()));
        kinko.kill();
        kills += 1;
        let step = format!(
            "kill {kills}: run {run} killed after {wait_ms} ms{}{}",
            mine_at.map_or(String::new(), |at| format!(", a block mined at {at} ms")),
            requested.map_or(String::new(), |a| format!(
                ", withdrawal of {} requested",
                coins(a)
            ))
        );
        println!("{step}");
        logs.0.lock().unwrap().push(step.clone());
        steps.push(step);
        run += 1;
        kinko = start(&data, &config, &logs, run);
    }

    // Let it run: every withdrawal completes.
    let addr = kinko.addr.clone();
    let mut last_block = Instant::now();
    until("every withdrawal to complete", 60, &logs, || {
        let list = withdrawals(&addr, &token);
        for w in &list {
            let status = w["status"].as_str().unwrap();
            assert!(
                !matches!(status, "failed" | "reverted" | "cancelled"),
                "seed {seed}: withdrawal {w}\nsteps:\n{}\n{}",
                steps.join("\n"),
                logs.custody()
            );
        }
        if last_block.elapsed() > Duration::from_millis(700) {
            node.mine(1);
            last_block = Instant::now();
        }
        list.len() == AMOUNTS.len() && list.iter().all(|w| w["status"] == "completed")
    });
    let list = withdrawals(&addr, &token);
    println!(
        "seed {seed}: {kills} kills, every withdrawal completed after {:.1} s",
        began.elapsed().as_secs_f64()
    );

    // On chain: the destination received each amount exactly once, in the recorded transaction.
    let paid = payments_to(&node, from_height, &dest);
    let context = || format!("seed {seed}, paid {paid:?}\nsteps:\n{}", steps.join("\n"));
    assert_eq!(paid.len(), AMOUNTS.len(), "{}", context());
    assert!(
        paid.iter().all(|p| p.2),
        "every payment is in a block: {}",
        context()
    );
    for w in &list {
        let id = w["id"].as_str().unwrap();
        let amount = ids[id];
        assert_eq!(sats(w["amount"].as_str().unwrap()), amount);
        let txid = w["txid"].as_str().unwrap();
        let to_it: Vec<_> = paid.iter().filter(|p| p.1 == amount).collect();
        assert_eq!(
            to_it.len(),
            1,
            "withdrawal {id} paid {} times: {}",
            to_it.len(),
            context()
        );
        assert_eq!(to_it[0].0, txid, "withdrawal {id}: {}", context());
    }

    // The signer never halted; LTC withdrawals on; the only incidents are the reserve
    // shortfalls of the miner fees (this test charges no withdrawal fee and the company has no
    // funds, so the company owes them: the full reconciliation at each start reports them,
    // never halting).
    let halted = signer.with_signer(|s| s.halted().map(str::to_owned));
    assert_eq!(halted, None, "seed {seed}: the signer halted\n{}", logs.custody());
    let (st, status) = http(&addr, "GET", "/api/v1/status", "", "");
    assert_eq!(st, 200, "{status}");
    let ltc = status["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["asset"] == "LTC")
        .unwrap();
    assert_eq!(
        ltc["withdrawals"],
        true,
        "seed {seed}: {status}\n{}",
        logs.custody()
    );
    let notices = status["notices"].as_array().unwrap();
    assert!(
        notices.iter().all(|n| n["kind"] == "reserve_shortfall"),
        "seed {seed}: {status}\n{}",
        logs.custody()
    );
    let (_, metrics) = http_text(&addr, "GET", "/metrics", "", "");
    let open = format!("kinko_incidents_open {}", notices.len());
    assert!(
        metrics.lines().any(|l| l == open),
        "{open}: {}",
        metrics
            .lines()
            .filter(|l| l.contains("incident"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (st, custody) = http(&addr, "GET", "/api/v1/admin/custody/LTC", OPERATOR_TOKEN, "");
    assert_eq!(st, 200, "{custody}");
    let miner_fees = sats(custody["network_fees"].as_str().unwrap());
    assert!(miner_fees > 0, "{custody}");

    // The customer has the deposits less the withdrawals and their fees, nothing held.
    let fees: u64 = list.iter().map(|w| sats(w["fee"].as_str().unwrap())).sum();
    let left = deposited - AMOUNTS.iter().sum::<u64>() - fees;
    let b = balance(&addr);
    assert_eq!(
        (b["total"].as_str(), b["available"].as_str()),
        (Some(coins(left).as_str()), Some(coins(left).as_str())),
        "{b}"
    );
    kinko.kill();
    // The journal: each withdrawal's transaction recorded at most once, no halt, and the
    // incidents' shortfalls add up to exactly the miner fees.
    let dump = super::kinko(&data, &["journal", "dump"]);
    assert!(dump.status.success(), "{}", super::text(&dump));
    let dump = String::from_utf8_lossy(&dump.stdout);
    let amount_after = |line: &str, field: &str| -> u64 {
        let at = line.find(field).unwrap() + field.len();
        line[at..line[at..].find(')').unwrap() + at].parse().unwrap()
    };
    let mut recorded: Vec<&str> = dump
        .lines()
        .filter(|l| l.contains("RecordWithdrawalTx"))
        .map(|l| {
            let at = l.find("WithdrawalId(").unwrap();
            &l[at..at + l[at..].find(')').unwrap()]
        })
        .collect();
    let n = recorded.len();
    recorded.sort_unstable();
    recorded.dedup();
    assert_eq!(recorded.len(), n, "a withdrawal recorded twice: {recorded:?}");
    assert!(
        !dump.lines().any(|l| l.contains("HaltWithdrawals")),
        "seed {seed}: withdrawals were halted:\n{}",
        dump.lines()
            .filter(|l| l.contains("Halt") || l.contains("Incident"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let incidents: Vec<&str> = dump.lines().filter(|l| l.contains("OpenIncident")).collect();
    assert!(
        incidents
            .iter()
            .all(|l| l.contains("\"reserve_shortfall\"") && l.contains("halt: false")),
        "seed {seed}: {incidents:#?}"
    );
    let missing: u64 = incidents
        .iter()
        .map(|l| amount_after(l, "missing: Amount("))
        .sum();
    assert_eq!(missing, miner_fees, "seed {seed}: {incidents:#?}");
    // And the journal the kills left behind audits clean.
    let audit = super::kinko(&data, &["audit"]);
    assert!(audit.status.success(), "{}", super::text(&audit));
    println!(
        "seed {seed}: {kills} kills, {} runs, {:.1} s",
        run + 1,
        began.elapsed().as_secs_f64()
    );
}
