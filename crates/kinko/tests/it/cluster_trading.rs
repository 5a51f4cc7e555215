//! Failover under real trading load (issue 20, item 4; docs/design/replication.md): a primary
//! and two `--standby` nodes of `kinko serve`, each configured with the same `[[custody]]` for
//! LTC against one real `litecoind -regtest` and one signer, on a real three-node `nats-server`
//! cluster. Two customers deposit real LTC and are credited; two client threads place and
//! cancel limit orders continuously (each with its own client order id, retried unchanged on
//! the other nodes on `NOT_LEADER` or a lost connection); each customer asks for a withdrawal
//! and the primary is SIGKILLed the moment the signer is asked to sign one. Afterwards every
//! acknowledged order is on the new primary once and in the state acknowledged, the journal
//! replayed places no client order id twice (a retry whose first attempt got through is
//! journaled and refused as `DUPLICATE_CLIENT_ORDER_ID`), the survivors end at the same sequence
//! and state hash, and each withdrawal was signed once (a re-sign of the same transaction by
//! the new primary aside) and paid once.
use super::cluster::start_with;
use super::crash::{signer_rig, SignerRig, Totp};
use super::custody::custody_section;
use kinko_chain::regtest::RegtestNode;
use kinko_cluster::testkit::NatsCluster;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSWORD: &str = "a long enough password";
/// Orders each client thread places at most (bounded load; the funds held stay below the
/// deposit: one order in `RESTING_EVERY` rests until the end, 0.2 LTC each).
const ORDERS_MAX: usize = 500;
const RESTING_EVERY: usize = 32;

/// One request on a fresh loopback connection; `None` when the node is unreachable or the
/// connection breaks (a killed node), never a panic.
fn request(addr: &str, method: &str, path: &str, token: &str, body: &str) -> Option<(u16, Value)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, rest) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let start = rest.find(['{', '[']).unwrap_or(0);
    let end = rest.rfind(['}', ']']).map_or(rest.len(), |e| e + 1);
    Some((
        status,
        serde_json::from_str(&rest[start..end]).unwrap_or(Value::Null),
    ))
}

/// A request that must be answered (setup steps on a live node).
fn must(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    request(addr, method, path, token, body).unwrap_or_else(|| panic!("{method} {path} at {addr}: no answer"))
}

/// Waits (bounded) until `f` holds.
fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a client learns from the nodes: which one it believes leads.
struct Client {
    nodes: Vec<String>,
    leader: usize,
    token: String,
    /// Attempts refused with `NOT_LEADER` or lost with the connection, each retried.
    retries: usize,
}

/// How one command ended.
#[derive(Debug)]
enum Outcome {
    /// 2xx: acknowledged.
    Acked(Value),
    /// A refusal after an attempt whose outcome was unknown (a lost connection or
    /// `OUTCOME_UNKNOWN`): the status and body, to be judged by the caller.
    RefusedAfterUnknown(u16, Value),
}

impl Client {
    /// Sends one command to the node believed to lead; on `NOT_LEADER` follows the leader it
    /// names, on a lost connection or `OUTCOME_UNKNOWN` tries the next node, always with the
    /// same request (bounded).
    fn send(&mut self, method: &str, path: &str, body: &str) -> Outcome {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut unknown = false;
        loop {
            assert!(
                Instant::now() < deadline,
                "{method} {path} {body}: no node took it within 30 s"
            );
            let addr = self.nodes[self.leader].clone();
            match request(&addr, method, path, &self.token, body) {
                Some((st, v)) if (200..300).contains(&st) => return Outcome::Acked(v),
                Some((503, v)) if v["code"] == "NOT_LEADER" => {
                    self.retries += 1;
                    let named = v["leader"].as_str().and_then(|l| l.strip_prefix("http://"));
                    match named.and_then(|l| self.nodes.iter().position(|n| n == l)) {
                        Some(i) if i != self.leader => self.leader = i,
                        // No leader known yet (a takeover in progress): wait a little.
                        _ => {
                            self.leader = (self.leader + 1) % self.nodes.len();
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                Some((503, v)) if v["code"] == "OUTCOME_UNKNOWN" => {
                    unknown = true;
                    self.leader = (self.leader + 1) % self.nodes.len();
                }
                // The read side of a new primary still catching up, or the node overloaded.
                Some((503, _)) => std::thread::sleep(Duration::from_millis(20)),
                Some((st, v)) if unknown => return Outcome::RefusedAfterUnknown(st, v),
                Some((st, v)) => panic!("{method} {path} {body} at {addr}: {st} {v}"),
                None => {
                    self.retries += 1;
                    unknown = true;
                    self.leader = (self.leader + 1) % self.nodes.len();
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// A customer with a session, TOTP enrolled and a credited LTC deposit of `coins`.
struct Customer {
    token: String,
    totp: Totp,
    index: usize,
}

fn customer(addr: &str, i: usize, node: &RegtestNode, coins: &str) -> Customer {
    let login = json!({"email": format!("trader{i}@example.com"), "password": PASSWORD}).to_string();
    let (st, r) = must(addr, "POST", "/api/v1/auth/register", "", &login);
    assert_eq!(st, 201, "{r}");
    let (st, s) = must(addr, "POST", "/api/v1/auth/login", "", &login);
    assert_eq!(st, 200, "{s}");
    let token = s["token"].as_str().unwrap().to_owned();
    let (st, t) = must(addr, "POST", "/api/v1/me/totp", &token, "");
    assert_eq!(st, 200, "{t}");
    let mut totp = Totp {
        secret: kinko_api::totp::base32_decode(t["secret"].as_str().unwrap()).unwrap(),
        last: 0,
    };
    let body = json!({"enrolment": t["enrolment"], "code": totp.next()});
    let (st, r) = must(addr, "POST", "/api/v1/me/totp/confirm", &token, &body.to_string());
    assert_eq!(st, 200, "{r}");
    let mut address = String::new();
    until("a deposit address", 60, || {
        let (st, r) = must(
            addr,
            "POST",
            "/api/v1/deposit-addresses",
            &token,
            r#"{"asset":"LTC"}"#,
        );
        assert!(
            st == 200 || (st == 503 && r["code"] == "CUSTODY_UNAVAILABLE"),
            "{st} {r}"
        );
        address = r["address"].as_str().unwrap_or_default().to_owned();
        st == 200
    });
    node.miner().send_to_address(&address, coins).unwrap();
    node.mine(1);
    Customer {
        token,
        totp,
        index: i,
    }
}

fn ltc_available(addr: &str, token: &str) -> String {
    let (_, b) = must(addr, "GET", "/api/v1/balances", token, "");
    b.as_array()
        .and_then(|v| v.iter().find(|x| x["asset"] == "LTC"))
        .and_then(|x| x["available"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Lines of the signer's log of one `kind`.
fn signer_log(path: &Path, kind: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["entry"]["kind"] == kind)
        .collect()
}

/// What one client thread was told: client order ids of acknowledged orders, and of orders
/// whose cancel was acknowledged.
#[derive(Default)]
struct Acks {
    placed: Vec<String>,
    cancelled: BTreeSet<String>,
    retries: usize,
    /// Orders whose answer was lost and that a retry found placed (`DUPLICATE_CLIENT_ORDER_ID`).
    found: usize,
}

/// Places limit sells (they rest: nobody buys) and cancels all but one in `RESTING_EVERY`,
/// until `stop`.
fn trade(mut client: Client, thread: usize, stop: &AtomicBool, count: &AtomicUsize) -> Acks {
    let mut acks = Acks::default();
    for i in 0..ORDERS_MAX {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let id = format!("{thread:08x}-0000-4000-8000-{i:012x}");
        let body = json!({
            "market": "LTC-USD", "side": "sell", "type": "limit", "size": "0.2",
            "price": format!("{}.{:02}", 84 + thread, i % 100), "client_order_id": id,
        })
        .to_string();
        match client.send("POST", "/api/v1/orders", &body) {
            Outcome::Acked(o) => {
                assert_eq!(o["client_order_id"], id.as_str(), "{o}");
                assert_eq!(o["status"], "open", "{o}");
            }
            // An earlier attempt did get through (its answer was lost with the primary): the
            // account's client order id is taken, never a second order. The client looks it
            // up by that id, as after `OUTCOME_UNKNOWN`.
            Outcome::RefusedAfterUnknown(409, v) if v["code"] == "DUPLICATE_CLIENT_ORDER_ID" => {
                let Outcome::Acked(o) = client.send("GET", &format!("/api/v1/orders/client:{id}"), "") else {
                    panic!("order {id}: no answer to its lookup");
                };
                let sent: Value = serde_json::from_str(&body).unwrap();
                for k in ["market", "side", "price", "size"] {
                    assert_eq!(decimal(&o[k]), decimal(&sent[k]), "{id} {k}: {o}");
                }
                assert_eq!(o["status"], "open", "{o}");
                acks.found += 1;
            }
            Outcome::RefusedAfterUnknown(st, v) => panic!("order {id} refused on retry: {st} {v}"),
        }
        acks.placed.push(id.clone());
        count.fetch_add(1, Ordering::AcqRel);
        if i % RESTING_EVERY != RESTING_EVERY - 1 {
            match client.send("DELETE", &format!("/api/v1/orders/client:{id}"), "") {
                Outcome::Acked(o) => assert_eq!(o["status"], "cancelled", "{o}"),
                // The first attempt did get through: the order is no longer open.
                Outcome::RefusedAfterUnknown(st, v) => {
                    eprintln!("cancel of {id} after an unknown outcome: {st} {v}");
                }
            }
            acks.cancelled.insert(id);
            count.fetch_add(1, Ordering::AcqRel);
        }
    }
    acks.retries = client.retries;
    acks
}

/// A decimal string without trailing zeros (`"84.050000"` → `"84.05"`); other values as text.
fn decimal(v: &Value) -> String {
    match v.as_str() {
        Some(t) if t.contains('.') => t.trim_end_matches('0').trim_end_matches('.').to_owned(),
        Some(t) => t.to_owned(),
        None => v.to_string(),
    }
}

/// The journal of `data` replayed from its first record: how often each client order id was
/// placed (the engine accepted it), the codes of its placements the engine refused (a retry
/// whose first attempt had got through is journaled and refused), and the state hash reached.
struct Replayed {
    placed: BTreeMap<u128, usize>,
    refused: BTreeMap<u128, Vec<&'static str>>,
    state_hash: [u8; 32],
}

fn replay(data: &Path) -> Replayed {
    let mut engine = kinko_core::Engine::new();
    let mut out = Replayed {
        placed: BTreeMap::new(),
        refused: BTreeMap::new(),
        state_hash: [0; 32],
    };
    let mut events = Vec::new();
    for rec in kinko_journal::read_from(&data.join("journal"), 1).unwrap() {
        let rec = rec.unwrap();
        let cmd = kinko_engine::decode_command(rec.kind, &rec.payload).unwrap();
        events.clear();
        let reply = engine.apply(rec.seq, rec.timestamp_ns, &cmd, &mut events);
        if let kinko_core::Command::PlaceOrder(kinko_core::trading::PlaceOrder {
            client_id: Some(c), ..
        }) = cmd
        {
            match reply {
                Ok(_) => *out.placed.entry(c.0).or_insert(0) += 1,
                Err(r) => out.refused.entry(c.0).or_default().push(r.code()),
            }
        }
    }
    out.state_hash = engine.state_hash();
    out
}

fn uuid_u128(id: &str) -> u128 {
    u128::from_str_radix(&id.replace('-', ""), 16).unwrap()
}

#[test]
fn the_primary_killed_under_trading_load_loses_no_order_runs_none_twice_and_signs_each_withdrawal_once() {
    let node = RegtestNode::start().expect("litecoind regtest (run scripts/install-test-deps)");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // One signer for every node, as in production: the epoch each request carries keeps a
    // deposed primary out (its waiting periods for new addresses and factors are zero here).
    let SignerRig {
        hot_key,
        cold_list,
        socket,
        server: _signer,
    } = signer_rig(dir);
    let log = dir.join("signer.log");
    // Every node has the same custody configuration: it runs only on the primary, and a
    // standby that takes over takes custody over. Sessions under a day old may withdraw at
    // once (`rules = []`; the limits stay), and password hashing is cheap.
    let sections = format!(
        "[identity]\npassword_memory_kib = 8\npassword_passes = 1\n[risk]\nrules = []\n{}",
        custody_section(
            dir,
            &node,
            &hot_key,
            &cold_list,
            &socket,
            "hot_share_bps = 500\nhot_cap = \"1\"\n"
        )
    );
    let api = "withdrawal_cooling_s = 1\nrate_per_key_burst = 1000000\nrate_per_key_per_s = 1000000\n\
               rate_private_per_key_burst = 1000000\nrate_private_per_key_per_s = 1000000\n";
    let nats = NatsCluster::start(3).expect("a three-node nats-server cluster");
    let urls = nats.urls();
    let mut a = start_with(dir, "a", &urls, false, api, &sections);
    let b = start_with(dir, "b", &urls, true, api, &sections);
    let c = start_with(dir, "c", &urls, true, api, &sections);

    // Two customers deposit 5 LTC each for real; credited once confirmed.
    let mut customers: Vec<Customer> = (0..2).map(|i| customer(&a.addr, i, &node, "5")).collect();
    for cu in &customers {
        until("the deposit to be credited", 60, || {
            ltc_available(&a.addr, &cu.token) == "5.00000000"
        });
    }
    // Each whitelists an address of its own (TOTP-approved).
    let mut drains = Vec::new();
    let mut address_ids = Vec::new();
    for cu in customers.iter_mut() {
        let drain = node.miner().get_new_address("drain").unwrap();
        let body =
            json!({"asset": "LTC", "address": drain, "label": "mine", "step_up": {"totp": cu.totp.next()}});
        let (st, r) = must(
            &a.addr,
            "POST",
            "/api/v1/withdrawal-addresses",
            &cu.token,
            &body.to_string(),
        );
        assert_eq!(st, 200, "{r}");
        address_ids.push(r["id"].clone());
        drains.push(drain);
    }
    // The load: a thread per customer, each placing and cancelling orders on whichever node
    // it believes leads.
    let nodes = vec![a.addr.clone(), b.addr.clone(), c.addr.clone()];
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = customers
        .iter()
        .enumerate()
        .map(|(t, cu)| {
            let client = Client {
                nodes: nodes.clone(),
                leader: 0,
                token: cu.token.clone(),
                retries: 0,
            };
            let (stop, count) = (stop.clone(), count.clone());
            std::thread::spawn(move || trade(client, t, &stop, &count))
        })
        .collect();
    until("load on the primary", 60, || count.load(Ordering::Acquire) >= 40);
    // Under load, each asks the primary for a withdrawal of 0.01 LTC (with a client id).
    let mut withdrawals = Vec::new();
    for (cu, address) in customers.iter_mut().zip(&address_ids) {
        let body = json!({"address_id": address, "amount": "0.01",
            "client_id": format!("{:08x}-1111-4000-8000-000000000000", cu.index),
            "step_up": {"totp": cu.totp.next()}})
        .to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        let w = loop {
            let (st, w) = must(&a.addr, "POST", "/api/v1/withdrawals", &cu.token, &body);
            if w["code"] != "WITHDRAWAL_ADDRESS_COOLING" {
                assert_eq!((st, w["status"].as_str()), (200, Some("requested")), "{w}");
                break w;
            }
            assert!(Instant::now() < deadline, "the address never finished cooling");
            std::thread::sleep(Duration::from_millis(100));
        };
        withdrawals.push(
            w["id"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| w["id"].to_string()),
        );
    }
    // The primary dies as soon as the signer is asked to sign a withdrawal: the signature is
    // on its way back to a process that will not record it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !signer_log(&log, "request")
        .iter()
        .any(|l| !l["entry"]["withdrawal"].is_null())
    {
        assert!(
            Instant::now() < deadline,
            "the signer was never asked to sign a withdrawal"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    a.child.kill().unwrap();
    let killed = Instant::now();
    let at_kill = count.load(Ordering::Acquire);
    // Where the withdrawals stood then (a standby serves reads).
    let stood: Vec<Value> = customers
        .iter()
        .map(|cu| must(&b.addr, "GET", "/api/v1/withdrawals", &cu.token, "").1[0]["status"].clone())
        .collect();
    eprintln!("primary SIGKILLed after {at_kill} acknowledged commands; withdrawals then: {stood:?}");
    // Load goes on on the survivors: until the new primary has acknowledged some, then 2 s.
    until("acknowledged commands on the new primary", 60, || {
        count.load(Ordering::Acquire) >= at_kill + 5
    });
    eprintln!(
        "first writes acknowledged again {:?} after the kill",
        killed.elapsed()
    );
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Release);
    let acks: Vec<Acks> = threads
        .into_iter()
        .map(|t| t.join().expect("a client thread failed"))
        .collect();
    let total: usize = acks.iter().map(|a| a.placed.len()).sum();
    let retries: Vec<usize> = acks.iter().map(|a| a.retries).collect();
    let found: usize = acks.iter().map(|a| a.found).sum();
    let after = count.load(Ordering::Acquire) - at_kill;
    eprintln!("{total} orders acknowledged; commands acknowledged before the kill {at_kill}, after {after}; retries per client {retries:?}; {found} orders whose answer was lost found placed by their client id");
    assert!(
        retries.iter().all(|r| *r > 0),
        "every client met the failover: {retries:?}"
    );
    assert!(
        acks.iter().all(|a| a.placed.len() < ORDERS_MAX),
        "the load ran until stopped"
    );

    // The new primary answers for every acknowledged order, once, in the state acknowledged.
    let survivors = [&b, &c];
    let primary = survivors
        .iter()
        .find(|n| {
            let (_, m) = super::http_text(&n.addr, "GET", "/metrics", "", "");
            m.lines()
                .any(|l| l == "kinko_replication_role{role=\"primary\"} 1")
        })
        .expect("a survivor is primary");
    for (acks, cu) in acks.iter().zip(&customers) {
        for id in &acks.placed {
            let (st, o) = must(
                &primary.addr,
                "GET",
                &format!("/api/v1/orders/client:{id}"),
                &cu.token,
                "",
            );
            assert_eq!(st, 200, "{id}: {o}");
            let want = if acks.cancelled.contains(id) {
                "cancelled"
            } else {
                "open"
            };
            assert_eq!(o["status"], want, "{id}: {o}");
        }
    }

    // Each withdrawal is paid once: completed on the new primary, one transaction to its
    // address, signed once by the signer.
    for cu in &customers {
        until("the withdrawal to complete on the new primary", 90, || {
            node.mine(1);
            let (_, list) = must(&primary.addr, "GET", "/api/v1/withdrawals", &cu.token, "");
            list[0]["status"] == "completed"
        });
    }
    for drain in &drains {
        let r: Value = node
            .miner()
            .call("listreceivedbyaddress", json!([0, false, false, drain]))
            .unwrap();
        let txids = r[0]["txids"].as_array().cloned().unwrap_or_default();
        assert_eq!(txids.len(), 1, "{drain} was paid once: {r}");
    }
    let signed: Vec<Value> = signer_log(&log, "signed")
        .into_iter()
        .filter(|l| l["entry"]["what"] == "withdrawal")
        .collect();
    let mut by_withdrawal: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in &signed {
        by_withdrawal
            .entry(l["entry"]["withdrawal"].to_string())
            .or_default()
            .insert(l["entry"]["txid"].to_string());
    }
    assert_eq!(by_withdrawal.len(), 2, "two withdrawals signed: {signed:#?}");
    assert!(
        by_withdrawal.values().all(|t| t.len() == 1),
        "a withdrawal signed as two transactions: {signed:#?}"
    );
    assert_eq!(
        signed.iter().filter(|l| l["entry"]["resign"] == false).count(),
        2,
        "{signed:#?}"
    );
    let story: Vec<String> = ["request", "signed", "refused"]
        .iter()
        .flat_map(|k| signer_log(&log, k))
        .filter(|l| !l["entry"]["withdrawal"].is_null())
        .map(|l| {
            let e = &l["entry"];
            format!(
                "#{} {} w{} resign={} code={}",
                l["seq"], e["kind"], e["withdrawal"], e["resign"], e["code"]
            )
        })
        .collect();
    eprintln!("withdrawals {withdrawals:?} signed once each; the signer's log: {story:?}");

    // The journals: no client order id twice, every acknowledged one once, and the survivors
    // at the same sequence with the same state.
    let (b_data, c_data) = (b.data.clone(), c.data.clone());
    for mut n in [b, c] {
        super::terminate(&mut n.child);
    }
    let jb = replay(&b_data);
    let jc = replay(&c_data);
    assert_eq!(
        (&jb.placed, &jb.refused),
        (&jc.placed, &jc.refused),
        "both survivors journaled the same orders"
    );
    let twice: Vec<_> = jb.placed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "client order ids placed twice: {twice:?}");
    for id in acks.iter().flat_map(|a| &a.placed) {
        assert_eq!(jb.placed.get(&uuid_u128(id)), Some(&1), "{id} exactly once");
    }
    // A refused placement is a retry of one that was placed, refused for that reason only.
    for (id, codes) in &jb.refused {
        assert_eq!(
            jb.placed.get(id),
            Some(&1),
            "{id:x} refused {codes:?}, never placed"
        );
        assert!(
            codes.iter().all(|c| *c == "DUPLICATE_CLIENT_ORDER_ID"),
            "{id:x}: {codes:?}"
        );
    }
    eprintln!(
        "journal: {} orders placed once each, {} retries refused as duplicates",
        jb.placed.len(),
        jb.refused.len()
    );
    let (_, _, rb) = kinko_engine::recover(&kinko_engine::EngineConfig::new(&b_data)).unwrap();
    let (_, _, rc) = kinko_engine::recover(&kinko_engine::EngineConfig::new(&c_data)).unwrap();
    assert_eq!(rb.head_seq, rc.head_seq);
    assert_eq!(rb.state_hash, rc.state_hash);
    assert_eq!(
        jb.state_hash, rb.state_hash,
        "the replay from the first record agrees"
    );
    drop(a);
    drop(nats);
}
