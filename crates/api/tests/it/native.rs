//! The native API (`/api/v1`) against a real server: market data, orders and fills with exact
//! balance arithmetic, wallet endpoints, permissions and authentication, malformed input (which
//! must never yield a 500 nor change anything), operations endpoints, rate limits, graceful
//! shutdown and durability across a restart.
//!
//! Amounts are checked in integer minor units; expected fees follow the harness markets' fee
//! tier (maker 10 bps, taker 20 bps, rounded down).

use crate::harness::{Factor, TestServer, BTC};
use kinko_api::ratelimit::Rate;
use kinko_api::vault::new_native_key;
use kinko_api::ApiConfig;
use kinko_core::engine::{Command, Reply};
use kinko_core::identity::Action;
use kinko_core::keys::Permissions;
use kinko_core::wallet::WithdrawalId;
use kinko_core::{Amount, UserId};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------------------------
// Helpers (shared with the OpenAPI test).

pub const MAKER_BPS: u128 = 10;
pub const TAKER_BPS: u128 = 20;
/// BTC-USD: tick 0.01 USD, lot 0.0001 BTC; one tick × one lot is one quote minor unit.
pub const BTC_USD_TICK: u128 = 10_000;
pub const BTC_USD_LOT: u128 = 10_000;
pub const SAT: u128 = 100_000_000;
pub const USD_UNIT: u128 = 1_000_000;
pub const ETH_UNIT: u128 = 1_000_000_000_000_000_000;

pub fn decimals(asset: &str) -> u32 {
    match asset {
        "BTC" => 8,
        "ETH" => 18,
        "USD" => 6,
        other => panic!("unknown asset {other}"),
    }
}

/// A decimal string with exactly `d` fractional digits, in minor units.
pub fn minor(text: &str, d: u32) -> u128 {
    let (i, f) = text.split_once('.').unwrap_or((text, ""));
    assert_eq!(f.len(), d as usize, "{text:?} should have {d} decimals");
    assert!(!i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()), "{text:?}");
    assert!(f.bytes().all(|b| b.is_ascii_digit()), "{text:?}");
    let frac = if f.is_empty() {
        0
    } else {
        f.parse::<u128>().unwrap()
    };
    i.parse::<u128>().unwrap() * 10u128.pow(d) + frac
}

/// Fee on a notional, rounded down.
pub fn fee(notional: u128, bps: u128) -> u128 {
    notional * bps / 10_000
}

/// Quote minor units of `sats` BTC at `price` USD minor units per BTC.
pub fn btc_notional(price: u128, sats: u128) -> u128 {
    price * sats / SAT
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bal {
    pub total: u128,
    pub available: u128,
    pub hold: u128,
}

/// The balances of user `i` by asset code, checked for consistency.
pub async fn balances(s: &TestServer, i: usize) -> BTreeMap<String, Bal> {
    let (st, body) = s.get(Some(i), "/api/v1/balances").await;
    assert_eq!(st, 200, "{body}");
    let mut out = BTreeMap::new();
    for b in body.as_array().unwrap() {
        let code = b["asset"].as_str().unwrap().to_owned();
        let d = decimals(&code);
        let bal = Bal {
            total: minor(b["total"].as_str().unwrap(), d),
            available: minor(b["available"].as_str().unwrap(), d),
            hold: minor(b["hold"].as_str().unwrap(), d),
        };
        assert_eq!(bal.available + bal.hold, bal.total, "{b}");
        out.insert(code, bal);
    }
    assert_eq!(out.len(), 3, "{body}");
    out
}

pub async fn all_balances(s: &TestServer) -> Vec<BTreeMap<String, Bal>> {
    let mut v = Vec::new();
    for i in 0..s.users.len() {
        v.push(balances(s, i).await);
    }
    v
}

/// The funding every harness user starts with.
pub fn funded() -> BTreeMap<String, Bal> {
    let b = |total| Bal {
        total,
        available: total,
        hold: 0,
    };
    BTreeMap::from([
        ("BTC".to_owned(), b(10 * SAT)),
        ("ETH".to_owned(), b(100 * ETH_UNIT)),
        ("USD".to_owned(), b(1_000_000 * USD_UNIT)),
    ])
}

/// `b` with its total moved by `delta` and its hold set to `hold`.
pub fn moved(b: Bal, delta: i128, hold: u128) -> Bal {
    let total = u128::try_from(i128::try_from(b.total).unwrap() + delta).unwrap();
    Bal {
        total,
        available: total - hold,
        hold,
    }
}

/// An error response: exactly `{"code", "message"}`, the status and code as expected.
pub fn assert_error(ctx: &str, status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{ctx}: status ({body})");
    assert!(is_error_body(body), "{ctx}: not an error body: {body}");
    assert_eq!(body["code"], want_code, "{ctx}: {body}");
}

/// `{"code", "message"}`, and with `STEP_UP_REQUIRED` the `step_up` challenge.
pub fn is_error_body(body: &Value) -> bool {
    body.as_object().is_some_and(|o| {
        let step_up = o.get("code") == Some(&json!("STEP_UP_REQUIRED"));
        o.len() == 2 + usize::from(step_up)
            && (!step_up || o.get("step_up").is_some_and(Value::is_object))
            && o.get("code")
                .and_then(Value::as_str)
                .is_some_and(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
            && o.get("message")
                .and_then(Value::as_str)
                .is_some_and(|m| !m.is_empty())
    })
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

/// Any request: `auth` is a whole `Authorization` header value.
pub async fn call(
    s: &TestServer,
    method: Method,
    path: &str,
    auth: Option<&str>,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
) -> Resp {
    let mut r = s.client.request(method, s.url(path));
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    if let Some(ct) = content_type {
        r = r.header("content-type", ct);
    }
    if let Some(b) = body {
        r = r.body(b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    Resp {
        status,
        headers,
        json: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A new native key of `user` with `permissions`; returns its token. A key with the withdraw
/// scope gets the allowlist 127.0.0.1 and the user's passkey proof, as the engine requires.
pub async fn key_with(s: &TestServer, user: UserId, permissions: Permissions) -> String {
    let mut k = new_native_key(user, "test key", permissions);
    let proof = permissions.withdraw.then(|| {
        k.record.ip_allowlist = vec!["127.0.0.1".into()];
        let u = s.users.iter().find(|u| u.id == user).expect("a harness user");
        let action = Action::CreateWithdrawKey {
            user,
            label: k.record.label.clone(),
            ip_allowlist: k.record.ip_allowlist.clone(),
        };
        u.proof(&action, &s.origin)
    });
    s.gateway
        .submit(Command::CreateApiKey { key: k.record, proof })
        .await
        .unwrap()
        .reply
        .unwrap();
    k.token
}

/// Places an order that must be accepted.
pub async fn place(s: &TestServer, i: usize, body: Value) -> Value {
    let (st, o) = s.post(i, "/api/v1/orders", body.clone()).await;
    assert_eq!(st, 200, "{body} → {o}");
    o
}

pub async fn delete(s: &TestServer, i: usize, path: &str) -> (u16, Value) {
    s.send(Method::DELETE, Some(i), path, None).await
}

/// A whitelisted address usable at once. The HTTP API always applies the cooling period, and
/// the engine makes an address usable at once only on two treasury admins' word: the harness's
/// quorum admins ([`TestServer::quorum`]) propose and approve it with their passkeys.
pub async fn usable_address(s: &TestServer, user: UserId, address: &str) -> u64 {
    let [a, b] = s.quorum().await;
    let change = kinko_core::admin::AdminChange::WhitelistAddress {
        user,
        asset: BTC,
        address: address.to_owned(),
        label: "hot".into(),
        cooling_ns: 0,
    };
    let action = kinko_core::identity::Action::ProposeChange {
        user: a.id,
        change: change.digest(),
    };
    let r = s
        .gateway
        .submit(Command::ProposeChange {
            by: a.id,
            change: change.clone(),
            reason: "an address usable at once".into(),
            via: a.via_session(),
            proof: a.proof(&action, &s.origin),
        })
        .await
        .unwrap()
        .reply
        .unwrap();
    let Reply::Proposal(p) = r else { panic!("{r:?}") };
    let action = kinko_core::identity::Action::ApproveChange {
        user: b.id,
        proposal: p.id,
        change: change.digest(),
    };
    s.gateway
        .submit(Command::ApproveChange {
            id: p.id,
            by: b.id,
            via: b.via_session(),
            proof: b.proof(&action, &s.origin),
        })
        .await
        .unwrap()
        .reply
        .unwrap();
    s.gateway.caught_up().await.unwrap();
    let m = s.gateway.read.model();
    let found = m
        .engine
        .wallet()
        .withdrawal_addresses_of(user)
        .into_iter()
        .find(|x| x.address == address && x.asset == BTC)
        .map(|x| x.id.0);
    found.expect("the approved address is whitelisted")
}

pub fn uuid(n: u128) -> String {
    kinko_api::wire::fmt_uuid(0x6b69_6e6b_6f00_4000_8000_0000_0000_0000 | n)
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort_by_key(|x| x.parse::<u64>().unwrap());
    v
}

// ---------------------------------------------------------------------------------------------
// Market data.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_market_data() {
    // Many requests in a row, about something else than rate limits.
    let config = crate::harness::without_rate_limits(ApiConfig::default());
    let s = TestServer::start_with(2, config).await;

    let (st, assets) = s.get(None, "/api/v1/assets").await;
    assert_eq!(st, 200, "{assets}");
    assert_eq!(
        assets,
        json!([
            // The harness's simulated chain carries BTC and ETH, credited at one confirmation.
            {"code": "BTC", "decimals": 8, "deposits_enabled": true, "withdrawals_enabled": true,
             "trading_enabled": true, "withdrawal_fee": "0.00000000", "deposit_confirmations": 1},
            {"code": "ETH", "decimals": 18, "deposits_enabled": true, "withdrawals_enabled": true,
             "trading_enabled": true, "withdrawal_fee": "0.000000000000000000", "deposit_confirmations": 1},
            {"code": "USD", "decimals": 6, "deposits_enabled": true, "withdrawals_enabled": true,
             "trading_enabled": true, "withdrawal_fee": "0.000000"},
        ])
    );

    let btc_usd = json!({
        "symbol": "BTC-USD", "base": "BTC", "quote": "USD",
        "tick_size": "0.010000", "lot_size": "0.00010000",
        "min_size": "0.00010000", "max_size": "1000.00000000",
        "min_notional": "1.000000", "max_notional": "100000000.000000",
        "state": "open", "band_bps": 1000, "maker_fee_bps": 10, "taker_fee_bps": 20,
        "passive_buy_floor_bps": null, "passive_sell_ceiling_bps": null,
        "order_types": {"limit": true, "market": true, "ioc": true, "fok": true, "post_only": true},
    });
    let (st, markets) = s.get(None, "/api/v1/markets").await;
    assert_eq!(st, 200);
    let markets = markets.as_array().unwrap();
    assert_eq!(markets.len(), 2);
    assert_eq!(markets[0], btc_usd);
    assert_eq!(markets[1]["symbol"], "ETH-USD");
    assert_eq!(markets[1]["lot_size"], "0.001000000000000000");
    let (st, one) = s.get(None, "/api/v1/markets/BTC-USD").await;
    assert_eq!((st, &one), (200, &btc_usd));

    // A book with three bid levels (two orders at the best) and two ask levels.
    for (i, side, price, size) in [
        (0, "buy", "29900.00", "0.1"),
        (1, "buy", "29900.00", "0.2"),
        (0, "buy", "29800.00", "0.3"),
        (0, "buy", "29700.5", "0.0001"),
        (1, "sell", "30100.00", "0.5"),
        (1, "sell", "30200.00", "1"),
    ] {
        place(
            &s,
            i,
            json!({"market": "BTC-USD", "side": side, "price": price, "size": size}),
        )
        .await;
    }
    let (st, book) = s.get(None, "/api/v1/markets/BTC-USD/book").await;
    assert_eq!(st, 200, "{book}");
    assert_eq!(book["market"], "BTC-USD");
    assert!(book["sequence"].as_u64().unwrap() >= 6, "{book}");
    assert_eq!(
        book["bids"],
        json!([
            ["29900.000000", "0.30000000", "2"],
            ["29800.000000", "0.30000000", "1"],
            ["29700.500000", "0.00010000", "1"],
        ])
    );
    assert_eq!(
        book["asks"],
        json!([
            ["30100.000000", "0.50000000", "1"],
            ["30200.000000", "1.00000000", "1"]
        ])
    );
    for (depth, bids, asks) in [(1, 1, 1), (2, 2, 2), (3, 3, 2), (1000, 3, 2)] {
        let (st, b) = s
            .get(None, &format!("/api/v1/markets/BTC-USD/book?depth={depth}"))
            .await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["bids"].as_array().unwrap().len(), bids, "depth {depth}");
        assert_eq!(b["asks"].as_array().unwrap().len(), asks, "depth {depth}");
        assert_eq!(b["bids"][0], book["bids"][0]);
    }

    // One trade: user 0 sells into user 0's... no: user 1 buys 0.1 from its own ask would be a
    // self-trade, so user 0 buys from user 1.
    place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "buy", "price": "30100", "size": "0.1"}),
    )
    .await;
    let (st, trades) = s.get(None, "/api/v1/markets/BTC-USD/trades").await;
    assert_eq!(st, 200);
    let trades = trades.as_array().unwrap();
    assert_eq!(trades.len(), 1, "{trades:?}");
    assert_eq!(trades[0]["price"], "30100.000000");
    assert_eq!(trades[0]["size"], "0.10000000");
    assert_eq!(trades[0]["side"], "buy");
    assert!(trades[0]["time"].as_str().unwrap().ends_with('Z'));

    let (st, t) = s.get(None, "/api/v1/markets/BTC-USD/ticker").await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["market"], "BTC-USD");
    assert_eq!(t["last"], "30100.000000");
    assert_eq!(t["best_bid"], "29900.000000");
    assert_eq!(t["best_ask"], "30100.000000");
    assert_eq!(t["open_24h"], "30100.000000");
    assert_eq!(t["volume_24h"], "0.10000000");
    assert_eq!(t["trades_24h"], 1);
    let (st, t) = s.get(None, "/api/v1/markets/ETH-USD/ticker").await;
    assert_eq!(st, 200);
    assert_eq!(
        (&t["last"], &t["best_bid"], &t["volume_24h"]),
        (&Value::Null, &Value::Null, &json!("0.000000000000000000"))
    );

    let (st, c) = s
        .get(None, "/api/v1/markets/BTC-USD/candles?granularity=60")
        .await;
    assert_eq!(st, 200, "{c}");
    let c = c.as_array().unwrap();
    assert_eq!(c.len(), 1, "{c:?}");
    for k in ["open", "high", "low", "close"] {
        assert_eq!(c[0][k], "30100.000000", "{k}");
    }
    assert_eq!(c[0]["volume"], "0.10000000");
    assert_eq!(c[0]["trades"], 1);
    assert_eq!(c[0]["start"].as_u64().unwrap() % 60, 0);
    let (st, c) = s.get(None, "/api/v1/markets/BTC-USD/candles").await;
    assert_eq!((st, c.as_array().unwrap().len()), (200, 1));
    let (st, c) = s
        .get(None, "/api/v1/markets/ETH-USD/candles?granularity=86400")
        .await;
    assert_eq!((st, c), (200, json!([])));

    // Refusals.
    for (path, status, code) in [
        ("/api/v1/markets/NOPE-USD", 404, "MARKET_NOT_FOUND"),
        ("/api/v1/markets/btc-usd", 404, "MARKET_NOT_FOUND"),
        ("/api/v1/markets/NOPE-USD/book", 404, "MARKET_NOT_FOUND"),
        ("/api/v1/markets/NOPE-USD/trades", 404, "MARKET_NOT_FOUND"),
        ("/api/v1/markets/NOPE-USD/ticker", 404, "MARKET_NOT_FOUND"),
        ("/api/v1/markets/NOPE-USD/candles", 404, "MARKET_NOT_FOUND"),
        ("/api/v1/markets/BTC-USD/book?depth=0", 400, "INVALID_PARAMETER"),
        (
            "/api/v1/markets/BTC-USD/book?depth=1001",
            400,
            "INVALID_PARAMETER",
        ),
        ("/api/v1/markets/BTC-USD/book?depth=-1", 400, "INVALID_PARAMETER"),
        ("/api/v1/markets/BTC-USD/book?depth=abc", 400, "INVALID_PARAMETER"),
        (
            "/api/v1/markets/BTC-USD/book?depth=99999999999999999999999",
            400,
            "INVALID_PARAMETER",
        ),
        ("/api/v1/markets/BTC-USD/trades?limit=0", 400, "INVALID_PARAMETER"),
        (
            "/api/v1/markets/BTC-USD/trades?limit=1001",
            400,
            "INVALID_PARAMETER",
        ),
        ("/api/v1/markets/BTC-USD/trades?limit=x", 400, "INVALID_PARAMETER"),
        (
            "/api/v1/markets/BTC-USD/candles?granularity=61",
            400,
            "INVALID_PARAMETER",
        ),
        (
            "/api/v1/markets/BTC-USD/candles?granularity=0",
            400,
            "INVALID_PARAMETER",
        ),
        (
            "/api/v1/markets/BTC-USD/candles?granularity=-60",
            400,
            "INVALID_PARAMETER",
        ),
        (
            "/api/v1/markets/BTC-USD/candles?granularity=1m",
            400,
            "INVALID_PARAMETER",
        ),
        (
            "/api/v1/markets/BTC-USD/candles?limit=0",
            400,
            "INVALID_PARAMETER",
        ),
        (
            "/api/v1/markets/BTC-USD/candles?limit=5000",
            400,
            "INVALID_PARAMETER",
        ),
    ] {
        let (st, body) = s.get(None, path).await;
        assert_error(path, st, &body, status, code);
    }
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Orders.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_order_rests_is_listed_and_cancels_releasing_funds() {
    let s = TestServer::start(1).await;
    assert_eq!(balances(&s, 0).await, funded());
    let client = uuid(1);
    let o = place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.5",
               "client_order_id": client, "time_in_force": "gtc"}),
    )
    .await;
    let id = o["id"].as_str().unwrap().to_owned();
    assert_eq!(o["status"], "open");
    assert_eq!(o["client_order_id"], client.as_str());
    assert_eq!(o["market"], "BTC-USD");
    assert_eq!(o["side"], "buy");
    assert_eq!(o["type"], "limit");
    assert_eq!(o["time_in_force"], "gtc");
    assert_eq!(o["price"], "29000.000000");
    assert_eq!(o["size"], "0.50000000");
    assert_eq!(o["filled_size"], "0.00000000");
    assert_eq!(o["executed_value"], "0.000000");
    assert_eq!(o["fees"], "0.000000");
    assert_eq!(o["funds"], Value::Null);
    assert_eq!(o["cancel_reason"], Value::Null);

    // A resting buy holds its notional plus the larger fee rate.
    let n = btc_notional(29_000 * USD_UNIT, SAT / 2);
    let mut want = funded();
    want.insert("USD".into(), moved(want["USD"], 0, n + fee(n, TAKER_BPS)));
    assert_eq!(balances(&s, 0).await, want);

    let (st, open) = s.get(Some(0), "/api/v1/orders").await;
    assert_eq!(st, 200);
    assert_eq!(open, json!([o.clone()]));
    let (st, by_market) = s.get(Some(0), "/api/v1/orders?market=BTC-USD&status=open").await;
    assert_eq!((st, &by_market), (200, &open));
    let (st, other_market) = s.get(Some(0), "/api/v1/orders?market=ETH-USD").await;
    assert_eq!((st, other_market), (200, json!([])));
    let (st, done) = s.get(Some(0), "/api/v1/orders?status=done").await;
    assert_eq!((st, done), (200, json!([])));
    let (st, by_id) = s.get(Some(0), &format!("/api/v1/orders/{id}")).await;
    assert_eq!((st, &by_id), (200, &o));
    let (st, by_client) = s.get(Some(0), &format!("/api/v1/orders/client:{client}")).await;
    assert_eq!((st, &by_client), (200, &o));
    // UUIDs are accepted in upper case and without dashes too.
    let (st, by_client) = s
        .get(
            Some(0),
            &format!("/api/v1/orders/client:{}", client.replace('-', "").to_uppercase()),
        )
        .await;
    assert_eq!((st, &by_client), (200, &o));

    // The same client order id again is refused and changes nothing.
    let (st, body) = s
        .post(
            0,
            "/api/v1/orders",
            json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.1", "client_order_id": client}),
        )
        .await;
    assert_error("duplicate client id", st, &body, 409, "DUPLICATE_CLIENT_ORDER_ID");
    assert_eq!(balances(&s, 0).await, want);

    let (st, c) = delete(&s, 0, &format!("/api/v1/orders/{id}")).await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["cancel_reason"], "user");
    assert_eq!(
        balances(&s, 0).await,
        funded(),
        "cancelling releases the hold exactly"
    );

    let (st, body) = delete(&s, 0, &format!("/api/v1/orders/{id}")).await;
    assert_error("cancel twice", st, &body, 404, "ORDER_NOT_FOUND");
    let (st, by_id) = s.get(Some(0), &format!("/api/v1/orders/{id}")).await;
    assert_eq!(st, 200);
    assert_eq!(by_id["status"], "cancelled");
    assert_eq!(by_id["cancel_reason"], "user");
    let (st, open) = s.get(Some(0), "/api/v1/orders").await;
    assert_eq!((st, open), (200, json!([])));
    let (st, done) = s.get(Some(0), "/api/v1/orders?status=done").await;
    assert_eq!(st, 200);
    assert_eq!(ids(&done), vec![id.clone()]);

    // Cancel by client id.
    let client2 = uuid(2);
    let o2 = place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "sell", "price": "31000", "size": "1", "client_order_id": client2}),
    )
    .await;
    let mut want = funded();
    want.insert("BTC".into(), moved(want["BTC"], 0, SAT));
    assert_eq!(balances(&s, 0).await, want);
    let (st, c) = delete(&s, 0, &format!("/api/v1/orders/client:{client2}")).await;
    assert_eq!(st, 200, "{c}");
    assert_eq!((&c["id"], &c["status"]), (&o2["id"], &json!("cancelled")));
    assert_eq!(balances(&s, 0).await, funded());

    let (st, all) = s.get(Some(0), "/api/v1/orders?status=all").await;
    assert_eq!(st, 200);
    assert_eq!(
        ids(&all),
        vec![o2["id"].as_str().unwrap().to_owned(), id],
        "done ones newest first"
    );
    let (st, one) = s.get(Some(0), "/api/v1/orders?status=all&limit=1").await;
    assert_eq!((st, one.as_array().unwrap().len()), (200, 1));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_orders_fill_both_sides_with_fees_and_move_balances_exactly() {
    let s = TestServer::start(2).await;
    // User 0 rests a sell of 0.3 BTC at 30,000; user 1 buys 0.5 at 30,100: 0.3 fills at the
    // maker's price, the remaining 0.2 rests.
    let maker = place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "sell", "price": "30000", "size": "0.3"}),
    )
    .await;
    assert_eq!(maker["status"], "open");
    let taker = place(
        &s,
        1,
        json!({"market": "BTC-USD", "side": "buy", "price": "30100", "size": "0.5"}),
    )
    .await;
    let n = btc_notional(30_000 * USD_UNIT, 30 * SAT / 100);
    assert_eq!(n, 9_000 * USD_UNIT);
    let (maker_fee, taker_fee) = (fee(n, MAKER_BPS), fee(n, TAKER_BPS));
    assert_eq!(taker["status"], "open");
    assert_eq!(taker["filled_size"], "0.30000000");
    assert_eq!(minor(taker["executed_value"].as_str().unwrap(), 6), n);
    assert_eq!(minor(taker["fees"].as_str().unwrap(), 6), taker_fee);

    // The taker's hold was notional + fee at its own limit for the whole size; the fill used
    // notional + fee at the maker's price; the rest stays held until the order is done.
    let full = btc_notional(30_100 * USD_UNIT, SAT / 2);
    let taker_hold = full + fee(full, TAKER_BPS) - (n + taker_fee);
    let f = funded();
    let want0 = BTreeMap::from([
        ("BTC".to_owned(), moved(f["BTC"], -(30 * SAT as i128 / 100), 0)),
        ("ETH".to_owned(), f["ETH"]),
        ("USD".to_owned(), moved(f["USD"], (n - maker_fee) as i128, 0)),
    ]);
    let want1 = BTreeMap::from([
        ("BTC".to_owned(), moved(f["BTC"], 30 * SAT as i128 / 100, 0)),
        ("ETH".to_owned(), f["ETH"]),
        (
            "USD".to_owned(),
            moved(f["USD"], -((n + taker_fee) as i128), taker_hold),
        ),
    ]);
    assert_eq!(balances(&s, 0).await, want0);
    assert_eq!(balances(&s, 1).await, want1);

    let (st, m) = s
        .get(
            Some(0),
            &format!("/api/v1/orders/{}", maker["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(m["status"], "filled");
    assert_eq!(m["filled_size"], "0.30000000");
    assert_eq!(minor(m["fees"].as_str().unwrap(), 6), maker_fee);

    let (st, f0) = s.get(Some(0), "/api/v1/fills").await;
    assert_eq!(st, 200);
    let (st, f1) = s.get(Some(1), "/api/v1/fills").await;
    assert_eq!(st, 200);
    let (f0, f1) = (f0.as_array().unwrap(), f1.as_array().unwrap());
    assert_eq!((f0.len(), f1.len()), (1, 1), "{f0:?} {f1:?}");
    assert_eq!(f0[0]["trade_id"], f1[0]["trade_id"]);
    for (fill, order, side, liquidity, fee_paid) in [
        (&f0[0], &maker, "sell", "maker", maker_fee),
        (&f1[0], &taker, "buy", "taker", taker_fee),
    ] {
        assert_eq!(fill["order_id"], order["id"]);
        assert_eq!(fill["market"], "BTC-USD");
        assert_eq!(fill["side"], side);
        assert_eq!(fill["liquidity"], liquidity);
        assert_eq!(fill["price"], "30000.000000");
        assert_eq!(fill["size"], "0.30000000");
        assert_eq!(minor(fill["value"].as_str().unwrap(), 6), n);
        assert_eq!(minor(fill["fee"].as_str().unwrap(), 6), fee_paid);
    }
    for q in [
        "?market=BTC-USD",
        &format!("?order_id={}", taker["id"].as_str().unwrap()),
        "?limit=1",
    ] {
        let (st, f) = s.get(Some(1), &format!("/api/v1/fills{q}")).await;
        assert_eq!((st, f.as_array().unwrap().len()), (200, 1), "{q}");
    }
    for q in [
        "?market=ETH-USD",
        &format!("?order_id={}", maker["id"].as_str().unwrap()),
    ] {
        let (st, f) = s.get(Some(1), &format!("/api/v1/fills{q}")).await;
        assert_eq!((st, f), (200, json!([])), "{q}");
    }

    let (st, book) = s.get(None, "/api/v1/markets/BTC-USD/book").await;
    assert_eq!(st, 200);
    assert_eq!(book["bids"], json!([["30100.000000", "0.20000000", "1"]]));
    assert_eq!(book["asks"], json!([]));

    // Cancelling the rest releases exactly what is still held.
    let (st, c) = delete(
        &s,
        1,
        &format!("/api/v1/orders/{}", taker["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["filled_size"], "0.30000000");
    let mut want1 = want1;
    want1.insert("USD".into(), moved(want1["USD"], 0, 0));
    assert_eq!(balances(&s, 1).await, want1);
    assert_eq!(balances(&s, 0).await, want0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn market_orders_by_size_and_by_funds() {
    let s = TestServer::start(2).await;
    let f = funded();
    let a = place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "sell", "price": "30000", "size": "0.1"}),
    )
    .await;
    let b = place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "sell", "price": "30010", "size": "0.1"}),
    )
    .await;

    // Market buy of 0.15 BTC: 0.1 at 30,000 and 0.05 at 30,010.
    let m = place(
        &s,
        1,
        json!({"market": "BTC-USD", "side": "buy", "type": "market", "size": "0.15"}),
    )
    .await;
    let n1 = btc_notional(30_000 * USD_UNIT, SAT / 10);
    let n2 = btc_notional(30_010 * USD_UNIT, SAT / 20);
    assert_eq!((n1, n2), (3_000 * USD_UNIT, 1_500_500_000));
    assert_eq!(m["type"], "market");
    assert_eq!(m["status"], "filled");
    assert_eq!(m["time_in_force"], Value::Null);
    // What was filled, not the protection limit, is what the reply reports: 4,500.5 USD for
    // 0.15 BTC is 30,003.333333… on average (rounded down); the band's edge is its protection.
    assert_eq!(m["price"], Value::Null, "{m}");
    assert_eq!(m["average_price"], "30003.333333", "{m}");
    assert_eq!(m["protection_price"], "33000.000000", "{m}");
    assert_eq!(b["average_price"], Value::Null, "an unfilled limit order: {b}");
    assert_eq!(b["protection_price"], Value::Null, "{b}");
    assert_eq!(b["price"], "30010.000000", "{b}");
    assert_eq!(m["filled_size"], "0.15000000");
    assert_eq!(minor(m["executed_value"].as_str().unwrap(), 6), n1 + n2);
    let taker_fees = fee(n1, TAKER_BPS) + fee(n2, TAKER_BPS);
    assert_eq!(minor(m["fees"].as_str().unwrap(), 6), taker_fees);
    let maker_fees = fee(n1, MAKER_BPS) + fee(n2, MAKER_BPS);
    let mut b0 = f["BTC"];
    let mut u0 = f["USD"];
    let mut b1 = f["BTC"];
    let mut u1 = f["USD"];
    b0 = moved(b0, -(15 * SAT as i128 / 100), 5 * SAT / 100);
    u0 = moved(u0, (n1 + n2 - maker_fees) as i128, 0);
    b1 = moved(b1, 15 * SAT as i128 / 100, 0);
    u1 = moved(u1, -((n1 + n2 + taker_fees) as i128), 0);
    let check = |b: BTreeMap<String, Bal>, btc: Bal, usd: Bal| {
        assert_eq!(b["BTC"], btc, "BTC");
        assert_eq!(b["USD"], usd, "USD");
        assert_eq!(b["ETH"], funded()["ETH"]);
    };
    check(balances(&s, 0).await, b0, u0);
    check(balances(&s, 1).await, b1, u1);
    let (st, ao) = s
        .get(Some(0), &format!("/api/v1/orders/{}", a["id"].as_str().unwrap()))
        .await;
    assert_eq!((st, &ao["status"]), (200, &json!("filled")));

    // Market buy with 1,000 USD of funds, fees included: the notional may use at most
    // funds × 10,000 / 10,020; whole lots at 30,010 within that fill.
    let funds = 1_000 * USD_UNIT;
    let m = place(
        &s,
        1,
        json!({"market": "BTC-USD", "side": "buy", "type": "market", "funds": "1000"}),
    )
    .await;
    let for_notional = funds * 10_000 / (10_000 + TAKER_BPS);
    let ticks = 30_010 * USD_UNIT / BTC_USD_TICK;
    let lots = for_notional / ticks; // one tick × one lot = one quote minor unit
    let sats = lots * BTC_USD_LOT;
    let n3 = btc_notional(30_010 * USD_UNIT, sats);
    assert_eq!((lots, n3), (332, 996_332_000));
    assert!(n3 + fee(n3, TAKER_BPS) <= funds);
    assert_eq!(m["status"], "filled");
    assert_eq!(m["funds"], "1000.000000");
    assert_eq!(minor(m["filled_size"].as_str().unwrap(), 8), sats);
    assert_eq!(minor(m["executed_value"].as_str().unwrap(), 6), n3);
    assert_eq!(minor(m["fees"].as_str().unwrap(), 6), fee(n3, TAKER_BPS));
    b0 = moved(b0, -(sats as i128), 5 * SAT / 100 - sats);
    u0 = moved(u0, (n3 - fee(n3, MAKER_BPS)) as i128, 0);
    b1 = moved(b1, sats as i128, 0);
    u1 = moved(u1, -((n3 + fee(n3, TAKER_BPS)) as i128), 0);
    check(balances(&s, 0).await, b0, u0);
    check(balances(&s, 1).await, b1, u1);

    // Market sell of 0.01 BTC into user 0's bid at 29,990 (0.02).
    let bid = place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "buy", "price": "29990", "size": "0.02"}),
    )
    .await;
    let nb = btc_notional(29_990 * USD_UNIT, 2 * SAT / 100);
    u0 = moved(u0, 0, nb + fee(nb, TAKER_BPS));
    check(balances(&s, 0).await, b0, u0);
    let m = place(
        &s,
        1,
        json!({"market": "BTC-USD", "side": "sell", "type": "market", "size": "0.01"}),
    )
    .await;
    let n4 = btc_notional(29_990 * USD_UNIT, SAT / 100);
    assert_eq!(m["status"], "filled");
    assert_eq!(minor(m["executed_value"].as_str().unwrap(), 6), n4);
    assert_eq!(minor(m["fees"].as_str().unwrap(), 6), fee(n4, TAKER_BPS));
    b0 = moved(b0, (SAT / 100) as i128, b0.hold);
    u0 = moved(
        u0,
        -((n4 + fee(n4, MAKER_BPS)) as i128),
        u0.hold - n4 - fee(n4, MAKER_BPS),
    );
    b1 = moved(b1, -((SAT / 100) as i128), 0);
    u1 = moved(u1, (n4 - fee(n4, TAKER_BPS)) as i128, 0);
    check(balances(&s, 0).await, b0, u0);
    check(balances(&s, 1).await, b1, u1);

    // A market order with nothing to fill against is cancelled unfilled and holds nothing.
    let m = place(
        &s,
        1,
        json!({"market": "ETH-USD", "side": "buy", "type": "market", "size": "1"}),
    )
    .await;
    assert_eq!(m["status"], "cancelled");
    assert_eq!(m["cancel_reason"], "unfilled");
    check(balances(&s, 1).await, b1, u1);

    // Cancel-all gives back the rest of the holds.
    let (st, c) = delete(&s, 0, "/api/v1/orders").await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(
        sorted(
            c["cancelled"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_owned())
                .collect()
        ),
        sorted(vec![
            b["id"].as_str().unwrap().to_owned(),
            bid["id"].as_str().unwrap().to_owned()
        ])
    );
    check(balances(&s, 0).await, moved(b0, 0, 0), moved(u0, 0, 0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_all_per_market_and_everywhere() {
    let s = TestServer::start(1).await;
    let mut btc = Vec::new();
    for p in ["29000", "29100", "29200"] {
        let o = place(
            &s,
            0,
            json!({"market": "BTC-USD", "side": "buy", "price": p, "size": "0.01"}),
        )
        .await;
        btc.push(o["id"].as_str().unwrap().to_owned());
    }
    let eth = place(
        &s,
        0,
        json!({"market": "ETH-USD", "side": "buy", "price": "1990", "size": "1"}),
    )
    .await;
    let eth_n = 1_990 * USD_UNIT;
    let btc_n: u128 = [29_000, 29_100, 29_200]
        .iter()
        .map(|p| {
            let n = btc_notional(p * USD_UNIT, SAT / 100);
            n + fee(n, TAKER_BPS)
        })
        .sum();
    let mut want = funded();
    want.insert(
        "USD".into(),
        moved(want["USD"], 0, btc_n + eth_n + fee(eth_n, TAKER_BPS)),
    );
    assert_eq!(balances(&s, 0).await, want);

    let (st, body) = delete(&s, 0, "/api/v1/orders?market=NOPE-USD").await;
    assert_error("cancel all, unknown market", st, &body, 404, "MARKET_NOT_FOUND");
    let (st, c) = delete(&s, 0, "/api/v1/orders?market=BTC-USD").await;
    assert_eq!(st, 200, "{c}");
    let got: Vec<String> = c["cancelled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sorted(got), btc);
    let (st, open) = s.get(Some(0), "/api/v1/orders").await;
    assert_eq!(st, 200);
    assert_eq!(ids(&open), vec![eth["id"].as_str().unwrap().to_owned()]);
    want.insert("USD".into(), moved(want["USD"], 0, eth_n + fee(eth_n, TAKER_BPS)));
    assert_eq!(balances(&s, 0).await, want);

    let (st, c) = delete(&s, 0, "/api/v1/orders").await;
    assert_eq!((st, &c), (200, &json!({"cancelled": [eth["id"]]})));
    let (st, c) = delete(&s, 0, "/api/v1/orders").await;
    assert_eq!((st, c), (200, json!({"cancelled": []})));
    let (st, open) = s.get(Some(0), "/api/v1/orders").await;
    assert_eq!((st, open), (200, json!([])));
    assert_eq!(balances(&s, 0).await, funded());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_cannot_see_or_cancel_each_others_orders() {
    let s = TestServer::start(2).await;
    let client = uuid(77);
    let o = place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.1", "client_order_id": client}),
    )
    .await;
    let id = o["id"].as_str().unwrap();
    let before = all_balances(&s).await;
    for (method, path) in [
        (Method::GET, format!("/api/v1/orders/{id}")),
        (Method::GET, format!("/api/v1/orders/client:{client}")),
        (Method::DELETE, format!("/api/v1/orders/{id}")),
        (Method::DELETE, format!("/api/v1/orders/client:{client}")),
    ] {
        let (st, body) = s.send(method.clone(), Some(1), &path, None).await;
        assert_error(&format!("{method} {path}"), st, &body, 404, "ORDER_NOT_FOUND");
    }
    for path in [
        "/api/v1/orders?status=all",
        "/api/v1/fills",
        &format!("/api/v1/fills?order_id={id}"),
    ] {
        let (st, body) = s.get(Some(1), path).await;
        assert_eq!((st, body), (200, json!([])), "{path}");
    }
    let (st, c) = delete(&s, 1, "/api/v1/orders").await;
    assert_eq!((st, c), (200, json!({"cancelled": []})));
    // User 1 may use the same client order id for its own order.
    place(
        &s,
        1,
        json!({"market": "BTC-USD", "side": "buy", "price": "28000", "size": "0.1", "client_order_id": client}),
    )
    .await;
    let (st, still) = s.get(Some(0), &format!("/api/v1/orders/{id}")).await;
    assert_eq!((st, &still["status"]), (200, &json!("open")));
    assert_eq!(balances(&s, 0).await, before[0]);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Wallet.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposit_addresses_and_deposits() {
    let s = TestServer::start(2).await;
    let (st, list) = s.get(Some(0), "/api/v1/deposit-addresses").await;
    assert_eq!(st, 200, "{list}");
    let list = list.as_array().unwrap().clone();
    // The harness funded each user through one address per asset.
    assert_eq!(list.len(), 3, "{list:?}");

    let before = all_balances(&s).await;
    let (st, a) = s
        .post(0, "/api/v1/deposit-addresses", json!({"asset": "btc"}))
        .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["asset"], "BTC");
    let address = a["address"].as_str().unwrap().to_owned();
    assert!(address.starts_with("sim1") && address.len() == 44, "{address}");
    let created = kinko_api::wire::parse_time_s("created_at", a["created_at"].as_str().unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        created + 60 > now && created <= now + 60,
        "created_at {} is not now",
        a["created_at"]
    );
    let (st, b) = s
        .post(0, "/api/v1/deposit-addresses", json!({"asset": "BTC"}))
        .await;
    assert_eq!(st, 200);
    assert_ne!(b["address"], a["address"], "each request gives a new address");

    let (st, list) = s.get(Some(0), "/api/v1/deposit-addresses?asset=BTC").await;
    assert_eq!(st, 200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.contains(&a) && list.contains(&b), "{list:?}");
    let (st, list) = s.get(Some(0), "/api/v1/deposit-addresses").await;
    assert_eq!((st, list.as_array().unwrap().len()), (200, 5));
    let (st, other) = s.get(Some(1), "/api/v1/deposit-addresses?asset=BTC").await;
    assert_eq!(st, 200);
    assert_eq!(other.as_array().unwrap().len(), 1);
    assert!(!other.as_array().unwrap().contains(&a));

    for (body, status, code) in [
        // No chain carries USD here: deposits of it are unavailable, said with a stable code.
        (json!({"asset": "USD"}), 409, "DEPOSITS_UNAVAILABLE"),
        (json!({"asset": "DOGE"}), 404, "ASSET_NOT_FOUND"),
        (json!({"asset": ""}), 404, "ASSET_NOT_FOUND"),
        (json!({}), 400, "INVALID_JSON"),
        (json!({"asset": "BTC", "x": 1}), 400, "INVALID_JSON"),
    ] {
        let (st, r) = s.post(0, "/api/v1/deposit-addresses", body.clone()).await;
        assert_error(&body.to_string(), st, &r, status, code);
    }
    let (st, r) = s.get(Some(0), "/api/v1/deposit-addresses?asset=DOGE").await;
    assert_error("list, unknown asset", st, &r, 404, "ASSET_NOT_FOUND");

    let (st, deps) = s.get(Some(0), "/api/v1/deposits").await;
    assert_eq!(st, 200, "{deps}");
    let deps = deps.as_array().unwrap();
    assert_eq!(deps.len(), 3, "{deps:?}");
    // Newest first: USD, ETH, BTC.
    for (d, (asset, amount)) in deps.iter().zip([
        ("USD", "1000000.000000"),
        ("ETH", "100.000000000000000000"),
        ("BTC", "10.00000000"),
    ]) {
        assert_eq!(d["asset"], asset);
        assert_eq!(d["amount"], amount);
        assert_eq!(d["status"], "credited");
        assert_eq!(d["vout"], 0);
        assert_eq!(d["txid"].as_str().unwrap().len(), 64);
        assert!(list_has_address(&s, 0, asset, d["address"].as_str().unwrap()).await);
    }
    let (st, usd) = s.get(Some(0), "/api/v1/deposits?asset=usd").await;
    assert_eq!(st, 200);
    assert_eq!(usd, json!([deps[0]]));
    let (st, r) = s.get(Some(0), "/api/v1/deposits?asset=NOPE").await;
    assert_error("deposits, unknown asset", st, &r, 404, "ASSET_NOT_FOUND");
    let (st, d1) = s.get(Some(1), "/api/v1/deposits").await;
    assert_eq!(st, 200);
    assert!(
        d1.as_array().unwrap().iter().all(|d| !deps.contains(d)),
        "user 1 sees only its own"
    );
    assert_eq!(all_balances(&s).await, before, "addresses move no funds");
    s.stop().await;
}

async fn list_has_address(s: &TestServer, i: usize, asset: &str, address: &str) -> bool {
    let (_, list) = s
        .get(Some(i), &format!("/api/v1/deposit-addresses?asset={asset}"))
        .await;
    list.as_array().unwrap().iter().any(|a| a["address"] == address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_withdrawal_address_cools_for_a_day() {
    let s = TestServer::start(2).await;
    let address = s.btc_usd_address.clone();
    let (st, a) = s
        .with_step_up(
            0,
            Method::POST,
            "/api/v1/withdrawal-addresses",
            json!({"asset": "BTC", "address": address, "label": "cold"}),
        )
        .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        (&a["asset"], &a["address"], &a["label"]),
        (&json!("BTC"), &json!(address), &json!("cold"))
    );
    let created = kinko_api::wire::parse_time_s("c", a["created_at"].as_str().unwrap()).unwrap();
    let usable = kinko_api::wire::parse_time_s("u", a["usable_at"].as_str().unwrap()).unwrap();
    assert_eq!(usable - created, 24 * 3_600, "{a}");
    assert_eq!(
        a["created_at"].as_str().unwrap()[19..],
        a["usable_at"].as_str().unwrap()[19..],
        "exactly 24 h: same fraction"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(usable > now + 23 * 3_600, "usable_at is a day ahead");

    // Adding the same address again returns the same record.
    let (st, again) = s
        .with_step_up(
            0,
            Method::POST,
            "/api/v1/withdrawal-addresses",
            json!({"asset": "BTC", "address": address}),
        )
        .await;
    assert_eq!((st, &again), (200, &a));
    let (st, list) = s.get(Some(0), "/api/v1/withdrawal-addresses").await;
    assert_eq!((st, list), (200, json!([a])));
    let (st, list) = s.get(Some(1), "/api/v1/withdrawal-addresses").await;
    assert_eq!((st, list), (200, json!([])));

    let before = all_balances(&s).await;
    let (st, r) = s
        .with_step_up(
            0,
            Method::POST,
            "/api/v1/withdrawals",
            json!({"address_id": a["id"], "amount": "0.5"}),
        )
        .await;
    assert_error(
        "withdraw while cooling",
        st,
        &r,
        403,
        "WITHDRAWAL_ADDRESS_COOLING",
    );
    let (st, r) = s
        .with_step_up(
            1,
            Method::POST,
            "/api/v1/withdrawals",
            json!({"address_id": a["id"], "amount": "0.5"}),
        )
        .await;
    assert_error(
        "another user's address",
        st,
        &r,
        404,
        "WITHDRAWAL_ADDRESS_NOT_FOUND",
    );
    let (st, w) = s.get(Some(0), "/api/v1/withdrawals").await;
    assert_eq!((st, w), (200, json!([])));
    assert_eq!(all_balances(&s).await, before);

    for (body, status, code) in [
        (
            json!({"asset": "BTC", "address": "bc1notoursim"}),
            400,
            "ADDRESS_INVALID",
        ),
        // (Upper case is the same address: an_address_is_whitelisted_in_its_canonical_form.)
        (
            json!({"asset": "BTC", "address": format!("sim1{}", "g".repeat(40))}),
            400,
            "ADDRESS_INVALID",
        ),
        (
            json!({"asset": "USD", "address": address}),
            400,
            "ADDRESS_INVALID",
        ),
        (
            json!({"asset": "NOPE", "address": address}),
            404,
            "ASSET_NOT_FOUND",
        ),
        (
            json!({"asset": "ETH", "address": address, "label": "a\u{7}b"}),
            400,
            "LABEL_INVALID",
        ),
        (
            json!({"asset": "ETH", "address": address, "label": "x".repeat(10_000)}),
            400,
            "LABEL_INVALID",
        ),
        (json!({"asset": "BTC"}), 400, "INVALID_JSON"),
    ] {
        let (st, r) = s
            .with_step_up(0, Method::POST, "/api/v1/withdrawal-addresses", body.clone())
            .await;
        assert_error(
            &body.to_string()[..body.to_string().len().min(80)],
            st,
            &r,
            status,
            code,
        );
    }

    // Removal.
    let path = format!("/api/v1/withdrawal-addresses/{}", a["id"].as_str().unwrap());
    let (st, r) = delete(&s, 1, &path).await;
    assert_error(
        "remove another user's address",
        st,
        &r,
        404,
        "WITHDRAWAL_ADDRESS_NOT_FOUND",
    );
    let (st, r) = delete(&s, 0, &path).await;
    assert_eq!((st, r), (200, json!({"cancelled": [a["id"]]})));
    let (st, list) = s.get(Some(0), "/api/v1/withdrawal-addresses").await;
    assert_eq!((st, list), (200, json!([])));
    let (st, r) = delete(&s, 0, &path).await;
    assert_error("remove twice", st, &r, 404, "WITHDRAWAL_ADDRESS_NOT_FOUND");
    s.stop().await;
}

/// The engine's mirror of the signer's TOTP budget: shown with the asset, and a withdrawal
/// approved by an authenticator code alone above it is refused at request time; a passkey is not
/// capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_alone_is_capped_and_the_assets_say_so() {
    let s = TestServer::start(2).await;
    let (st, assets) = s.get(None, "/api/v1/assets").await;
    assert_eq!((st, &assets[0].get("totp_budget")), (200, &None));
    s.gateway
        .submit(Command::SetTotpBudget {
            asset: BTC,
            budget: Amount(10_000_000),
        })
        .await
        .unwrap()
        .reply
        .unwrap();
    let (st, assets) = s.get(None, "/api/v1/assets").await;
    assert_eq!((st, &assets[0]["totp_budget"]), (200, &json!("0.10000000")));
    let addr = usable_address(&s, s.users[0].id, &s.btc_usd_address.clone()).await;
    let req = json!({"address_id": addr.to_string(), "amount": "0.2"});
    let u = &s.users[0];
    let (st, r) = s
        .with_step_up_as(
            u,
            &u.token,
            Factor::Totp,
            Method::POST,
            "/api/v1/withdrawals",
            req.clone(),
        )
        .await;
    assert_error("TOTP above the budget", st, &r, 403, "PASSKEY_REQUIRED");
    let (st, w) = s.with_step_up(0, Method::POST, "/api/v1/withdrawals", req).await;
    assert_eq!((st, &w["status"]), (200, &json!("requested")), "{w}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_hold_cancel_and_complete() {
    let s = TestServer::start(2).await;
    let withdrawal_fee = 10_000u128; // 0.0001 BTC
    s.gateway
        .submit(Command::SetWithdrawalFee {
            asset: BTC,
            fee: Amount(withdrawal_fee),
        })
        .await
        .unwrap()
        .reply
        .unwrap();
    let (st, assets) = s.get(None, "/api/v1/assets").await;
    assert_eq!((st, &assets[0]["withdrawal_fee"]), (200, &json!("0.00010000")));
    let addr = usable_address(&s, s.users[0].id, &s.btc_usd_address.clone()).await;
    let f = funded();

    let client = uuid(9);
    let req = json!({"address_id": addr.to_string(), "amount": "1.5", "client_id": client});
    let (st, w) = s
        .with_step_up(0, Method::POST, "/api/v1/withdrawals", req.clone())
        .await;
    assert_eq!(st, 200, "{w}");
    assert_eq!(w["status"], "requested");
    assert_eq!(w["asset"], "BTC");
    assert_eq!(w["address_id"], addr.to_string());
    assert_eq!(w["address"], s.btc_usd_address.as_str());
    assert_eq!(w["amount"], "1.50000000");
    assert_eq!(w["fee"], "0.00010000");
    assert_eq!(w["client_id"], client.as_str());
    assert_eq!((&w["txid"], &w["reason"]), (&Value::Null, &Value::Null));
    let held = 150_000_000 + withdrawal_fee;
    let mut want = f.clone();
    want.insert("BTC".into(), moved(f["BTC"], 0, held));
    assert_eq!(balances(&s, 0).await, want);

    // The same request with the same client id returns the first; a different one is refused.
    let (st, again) = s
        .with_step_up(0, Method::POST, "/api/v1/withdrawals", req.clone())
        .await;
    assert_eq!((st, &again), (200, &w));
    let (st, r) = s
        .with_step_up(
            0,
            Method::POST,
            "/api/v1/withdrawals",
            json!({"address_id": addr.to_string(), "amount": "1.4", "client_id": client}),
        )
        .await;
    assert_error("client id reused", st, &r, 409, "DUPLICATE_CLIENT_WITHDRAWAL_ID");
    assert_eq!(balances(&s, 0).await, want);

    let id = w["id"].as_str().unwrap().to_owned();
    let (st, list) = s.get(Some(0), "/api/v1/withdrawals").await;
    assert_eq!((st, list), (200, json!([w])));
    let (st, list) = s.get(Some(0), "/api/v1/withdrawals?asset=BTC").await;
    assert_eq!((st, list), (200, json!([w])));
    let (st, list) = s.get(Some(0), "/api/v1/withdrawals?asset=ETH").await;
    assert_eq!((st, list), (200, json!([])));
    let (st, one) = s.get(Some(0), &format!("/api/v1/withdrawals/{id}")).await;
    assert_eq!((st, &one), (200, &w));
    for method in [Method::GET, Method::DELETE] {
        let (st, r) = s
            .send(
                method.clone(),
                Some(1),
                &format!("/api/v1/withdrawals/{id}"),
                None,
            )
            .await;
        assert_error(
            &format!("{method} another user's withdrawal"),
            st,
            &r,
            404,
            "WITHDRAWAL_NOT_FOUND",
        );
    }
    let (st, list) = s.get(Some(1), "/api/v1/withdrawals").await;
    assert_eq!((st, list), (200, json!([])));

    // More than is available.
    let (st, r) = s
        .with_step_up(
            0,
            Method::POST,
            "/api/v1/withdrawals",
            json!({"address_id": addr.to_string(), "amount": "8.5"}),
        )
        .await;
    assert_error("more than available", st, &r, 400, "FUNDS_INSUFFICIENT");
    assert_eq!(balances(&s, 0).await, want);

    // Cancelling releases both holds.
    let (st, c) = delete(&s, 0, &format!("/api/v1/withdrawals/{id}")).await;
    assert_eq!(st, 200, "{c}");
    assert_eq!((&c["id"], &c["status"]), (&json!(id), &json!("cancelled")));
    assert_eq!(balances(&s, 0).await, f);
    let (st, r) = delete(&s, 0, &format!("/api/v1/withdrawals/{id}")).await;
    assert_error("cancel twice", st, &r, 409, "WITHDRAWAL_STATE_INVALID");

    // A withdrawal that goes through: broadcast, then confirmed.
    let (st, w2) = s
        .with_step_up(
            0,
            Method::POST,
            "/api/v1/withdrawals",
            json!({"address_id": addr.to_string(), "amount": "2"}),
        )
        .await;
    assert_eq!(st, 200, "{w2}");
    assert_eq!(w2["client_id"], Value::Null);
    let id2: u64 = w2["id"].as_str().unwrap().parse().unwrap();
    let txid = format!("{:064x}", 0xabcdu64);
    for c in [
        Command::WithdrawalSigning {
            id: WithdrawalId(id2),
        },
        Command::WithdrawalBroadcast {
            id: WithdrawalId(id2),
            txid: txid.clone(),
            network_fee: kinko_core::Amount(0),
        },
        Command::WithdrawalConfirmed {
            id: WithdrawalId(id2),
        },
    ] {
        s.gateway.submit(c).await.unwrap().reply.unwrap();
    }
    let (st, done) = s.get(Some(0), &format!("/api/v1/withdrawals/{id2}")).await;
    assert_eq!(st, 200);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["txid"], txid.as_str());
    let mut want = f.clone();
    want.insert(
        "BTC".into(),
        moved(f["BTC"], -((2 * SAT + withdrawal_fee) as i128), 0),
    );
    assert_eq!(balances(&s, 0).await, want);
    let (st, r) = delete(&s, 0, &format!("/api/v1/withdrawals/{id2}")).await;
    assert_error(
        "cancel a completed withdrawal",
        st,
        &r,
        409,
        "WITHDRAWAL_STATE_INVALID",
    );
    let (st, list) = s.get(Some(0), "/api/v1/withdrawals").await;
    assert_eq!(st, 200);
    assert_eq!(ids(&list), vec![id2.to_string(), id.clone()], "newest first");

    let (st, metrics) = text(&s, "/metrics").await;
    assert_eq!(st, 200);
    for line in [
        "kinko_withdrawals{state=\"requested\"} 0",
        "kinko_withdrawals{state=\"signing\"} 0",
        "kinko_withdrawals{state=\"broadcast\"} 0",
        "kinko_withdrawals{state=\"completed\"} 1",
        "kinko_withdrawals{state=\"cancelled\"} 1",
        "kinko_withdrawals{state=\"failed\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line}");
    }
    assert_eq!(balances(&s, 1).await, f);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Permissions and authentication.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_are_enforced_per_key() {
    let s = TestServer::start(1).await;
    let user = s.users[0].id;
    let addr = usable_address(&s, user, &s.btc_usd_address.clone()).await;
    let view = key_with(
        &s,
        user,
        Permissions {
            view: true,
            trade: false,
            withdraw: false,
        },
    )
    .await;
    let trade = key_with(
        &s,
        user,
        Permissions {
            view: false,
            trade: true,
            withdraw: false,
        },
    )
    .await;
    let withdraw = key_with(
        &s,
        user,
        Permissions {
            view: false,
            trade: false,
            withdraw: true,
        },
    )
    .await;
    let none = key_with(&s, user, Permissions::default()).await;
    let order = json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.01"});
    let withdrawal = json!({"address_id": addr.to_string(), "amount": "0.01"});
    let waddr = json!({"asset": "ETH", "address": s.btc_usd_address});

    // (key, method, path, body, allowed?)
    let cases: Vec<(&str, Method, &str, Option<&Value>, bool)> = vec![
        (view.as_str(), Method::GET, "/api/v1/balances", None, true),
        (view.as_str(), Method::GET, "/api/v1/orders", None, true),
        (view.as_str(), Method::GET, "/api/v1/fills", None, true),
        (view.as_str(), Method::GET, "/api/v1/withdrawals", None, true),
        (view.as_str(), Method::POST, "/api/v1/orders", Some(&order), false),
        (view.as_str(), Method::DELETE, "/api/v1/orders", None, false),
        (view.as_str(), Method::DELETE, "/api/v1/orders/1", None, false),
        (
            view.as_str(),
            Method::POST,
            "/api/v1/withdrawals",
            Some(&withdrawal),
            false,
        ),
        (
            view.as_str(),
            Method::POST,
            "/api/v1/withdrawal-addresses",
            Some(&waddr),
            false,
        ),
        (
            view.as_str(),
            Method::DELETE,
            "/api/v1/withdrawals/1",
            None,
            false,
        ),
        (
            view.as_str(),
            Method::DELETE,
            "/api/v1/withdrawal-addresses/1",
            None,
            false,
        ),
        (trade.as_str(), Method::GET, "/api/v1/balances", None, false),
        (trade.as_str(), Method::GET, "/api/v1/orders", None, false),
        (trade.as_str(), Method::GET, "/api/v1/orders/1", None, false),
        (
            trade.as_str(),
            Method::POST,
            "/api/v1/withdrawals",
            Some(&withdrawal),
            false,
        ),
        (
            withdraw.as_str(),
            Method::POST,
            "/api/v1/orders",
            Some(&order),
            false,
        ),
        (withdraw.as_str(), Method::GET, "/api/v1/deposits", None, false),
        (none.as_str(), Method::GET, "/api/v1/balances", None, false),
        (none.as_str(), Method::POST, "/api/v1/orders", Some(&order), false),
        (
            none.as_str(),
            Method::POST,
            "/api/v1/withdrawals",
            Some(&withdrawal),
            false,
        ),
        // Public market data needs no permission.
        (none.as_str(), Method::GET, "/api/v1/markets", None, true),
    ];
    for (key, method, path, body, allowed) in &cases {
        let r = call(
            &s,
            method.clone(),
            path,
            Some(&bearer(key)),
            body.map(|_| "application/json"),
            body.map(|b| b.to_string().into_bytes()),
        )
        .await;
        let ctx = format!("{method} {path} with key {}", &key[..10]);
        if *allowed {
            assert_eq!(r.status, 200, "{ctx}: {}", r.json);
        } else {
            assert_error(&ctx, r.status, &r.json, 403, "FORBIDDEN");
        }
    }
    // Nothing was placed or requested by the refused keys.
    let (st, all) = s.get(Some(0), "/api/v1/orders?status=all").await;
    assert_eq!((st, all), (200, json!([])));
    let (st, w) = s.get(Some(0), "/api/v1/withdrawals").await;
    assert_eq!((st, w), (200, json!([])));
    assert_eq!(balances(&s, 0).await, funded());

    // The trade key places, the withdraw key withdraws (with a second factor).
    let r = call(
        &s,
        Method::POST,
        "/api/v1/orders",
        Some(&bearer(&trade)),
        Some("application/json"),
        Some(order.to_string().into_bytes()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let (st, r) = s
        .with_step_up_as(
            &s.users[0],
            &withdraw,
            Factor::Passkey,
            Method::POST,
            "/api/v1/withdrawals",
            withdrawal.clone(),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_are_401_and_do_not_tell_which_part_was_wrong() {
    let s = TestServer::start(2).await;
    let token = s.users[0].token.clone();
    let (key_id, _) = token.split_once('.').unwrap();
    let revoked = key_with(&s, s.users[0].id, Permissions::ALL).await;
    let r = call(
        &s,
        Method::GET,
        "/api/v1/balances",
        Some(&bearer(&revoked)),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "the new key works before it is revoked");
    s.gateway
        .submit(Command::RevokeApiKey {
            user: s.users[0].id,
            id: revoked.split_once('.').unwrap().0.to_owned(),
        })
        .await
        .unwrap()
        .reply
        .unwrap();

    let wrong_secret = format!("Bearer {key_id}.{}", "A".repeat(43));
    let unknown_key = format!("Bearer kk{}.{}", "0".repeat(24), token.split_once('.').unwrap().1);
    let other_users_secret = format!("Bearer {key_id}.{}", s.users[1].token.split_once('.').unwrap().1);
    let cb_key_as_bearer = format!("Bearer {}.{}", s.users[0].cb_key, s.users[0].cb_secret);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing header", None),
        ("empty", Some(String::new())),
        ("basic scheme", Some(format!("Basic {token}"))),
        ("scheme only", Some("Bearer".into())),
        ("empty token", Some("Bearer ".into())),
        ("no dot", Some(format!("Bearer {key_id}"))),
        ("empty secret", Some(format!("Bearer {key_id}."))),
        (
            "empty id",
            Some(format!("Bearer .{}", token.split_once('.').unwrap().1)),
        ),
        ("wrong secret", Some(wrong_secret.clone())),
        ("unknown key", Some(unknown_key.clone())),
        ("another user's secret", Some(other_users_secret.clone())),
        ("revoked key", Some(bearer(&revoked))),
        ("coinbase key as bearer", Some(cb_key_as_bearer)),
        (
            "huge token",
            Some(format!("Bearer {}.{}", "k".repeat(5_000), "s".repeat(5_000))),
        ),
    ];
    let mut bad_credentials = None;
    for path in ["/api/v1/balances", "/api/v1/orders", "/api/v1/withdrawals/1"] {
        for (name, auth) in &cases {
            let r = call(&s, Method::GET, path, auth.as_deref(), None, None).await;
            assert_error(
                &format!("{name} on {path}"),
                r.status,
                &r.json,
                401,
                "UNAUTHORIZED",
            );
            if [
                "wrong secret",
                "unknown key",
                "another user's secret",
                "revoked key",
            ]
            .contains(name)
            {
                let m = r.json["message"].clone();
                assert_eq!(
                    &*bad_credentials.get_or_insert_with(|| m.clone()),
                    &m,
                    "{name}: every credential failure reads the same"
                );
            }
        }
    }
    // A refused order changes nothing.
    let body = json!({"market": "BTC-USD", "side": "sell", "price": "30000", "size": "1"}).to_string();
    let r = call(
        &s,
        Method::POST,
        "/api/v1/orders",
        Some(&wrong_secret),
        Some("application/json"),
        Some(body.into_bytes()),
    )
    .await;
    assert_error(
        "order with a wrong secret",
        r.status,
        &r.json,
        401,
        "UNAUTHORIZED",
    );
    assert_eq!(all_balances(&s).await, vec![funded(), funded()]);
    // The right token still works, whatever the case of the scheme.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = call(
            &s,
            Method::GET,
            "/api/v1/balances",
            Some(&format!("{scheme} {token}")),
            None,
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{scheme}: {}", r.json);
    }
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Malformed input.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_stable_4xx_codes_and_change_nothing() {
    // Many requests in a row, about something else than rate limits.
    let config = crate::harness::without_rate_limits(ApiConfig::default());
    let s = TestServer::start_with(2, config).await;
    let addr = usable_address(&s, s.users[0].id, &s.btc_usd_address.clone()).await;
    let before = all_balances(&s).await;
    let auth = bearer(&s.users[0].token);
    let json_ct = Some("application/json");
    let ok = |extra: Value| {
        let mut o = json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.01"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                o.as_object_mut().unwrap().remove(k);
            } else {
                o[k] = v.clone();
            }
        }
        o.to_string().into_bytes()
    };
    let big = format!(
        "{{\"market\":\"BTC-USD\",\"side\":\"buy\",\"price\":\"29000\",\"size\":\"0.01\",\"client_order_id\":\"{}\"}}",
        "0".repeat(70 * 1024)
    );
    // (name, method, path, content type, body, status, code)
    type Case = (
        &'static str,
        Method,
        String,
        Option<&'static str>,
        Option<Vec<u8>>,
        u16,
        &'static str,
    );
    let p = |s: &str| s.to_owned();
    let orders = p("/api/v1/orders");
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("invalid JSON", Method::POST, orders.clone(), json_ct, Some(b"{\"market\":".to_vec()), 400, "INVALID_JSON"),
        ("empty body", Method::POST, orders.clone(), json_ct, Some(Vec::new()), 400, "INVALID_JSON"),
        ("not an object", Method::POST, orders.clone(), json_ct, Some(b"[1,2]".to_vec()), 400, "INVALID_JSON"),
        ("invalid UTF-8", Method::POST, orders.clone(), json_ct, Some(b"{\"market\":\"\xff\"}".to_vec()), 400, "INVALID_JSON"),
        ("text/plain", Method::POST, orders.clone(), Some("text/plain"), Some(ok(json!({}))), 415, "CONTENT_TYPE_INVALID"),
        ("form", Method::POST, orders.clone(), Some("application/x-www-form-urlencoded"), Some(b"market=BTC-USD".to_vec()), 415, "CONTENT_TYPE_INVALID"),
        ("no content type", Method::POST, orders.clone(), None, Some(ok(json!({}))), 415, "CONTENT_TYPE_INVALID"),
        ("unknown field", Method::POST, orders.clone(), json_ct, Some(ok(json!({"leverage": "100"}))), 400, "INVALID_JSON"),
        ("missing market", Method::POST, orders.clone(), json_ct, Some(ok(json!({"market": null}))), 400, "INVALID_JSON"),
        ("missing side", Method::POST, orders.clone(), json_ct, Some(ok(json!({"side": null}))), 400, "INVALID_JSON"),
        ("size as a number", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": 1}))), 400, "INVALID_JSON"),
        ("price as a number", Method::POST, orders.clone(), json_ct, Some(ok(json!({"price": 29000}))), 400, "INVALID_JSON"),
        ("missing size", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": null}))), 400, "INVALID_PARAMETER"),
        ("missing price", Method::POST, orders.clone(), json_ct, Some(ok(json!({"price": null}))), 400, "INVALID_PARAMETER"),
        ("negative size", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "-0.01"}))), 400, "INVALID_PARAMETER"),
        ("negative price", Method::POST, orders.clone(), json_ct, Some(ok(json!({"price": "-29000"}))), 400, "INVALID_PARAMETER"),
        ("plus sign", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "+0.01"}))), 400, "INVALID_PARAMETER"),
        ("exponent", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "1e-2"}))), 400, "INVALID_PARAMETER"),
        ("exponent price", Method::POST, orders.clone(), json_ct, Some(ok(json!({"price": "2.9E4"}))), 400, "INVALID_PARAMETER"),
        ("hex", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "0x10"}))), 400, "INVALID_PARAMETER"),
        ("empty size", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": ""}))), 400, "INVALID_PARAMETER"),
        ("dot only", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "."}))), 400, "INVALID_PARAMETER"),
        ("trailing dot", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "1."}))), 400, "INVALID_PARAMETER"),
        ("leading dot", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": ".5"}))), 400, "INVALID_PARAMETER"),
        ("two dots", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "0.0.1"}))), 400, "INVALID_PARAMETER"),
        ("comma", Method::POST, orders.clone(), json_ct, Some(ok(json!({"price": "29,000"}))), 400, "INVALID_PARAMETER"),
        ("NaN", Method::POST, orders.clone(), json_ct, Some(ok(json!({"price": "NaN"}))), 400, "INVALID_PARAMETER"),
        ("infinity", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "inf"}))), 400, "INVALID_PARAMETER"),
        ("overlong decimal", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": format!("0.{}1", "0".repeat(100))}))), 400, "INVALID_PARAMETER"),
        ("overlong zeros", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": format!("{}1", "0".repeat(100))}))), 400, "INVALID_PARAMETER"),
        ("too many decimals", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "0.000100001"}))), 400, "INVALID_PARAMETER"),
        ("too many price decimals", Method::POST, orders.clone(), json_ct, Some(ok(json!({"price": "29000.0000001"}))), 400, "INVALID_PARAMETER"),
        ("non-ASCII digit past the precision", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "0.0000000\u{e9}"}))), 400, "INVALID_PARAMETER"),
        ("non-ASCII digits", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "\u{661}.\u{660}\u{660}\u{660}\u{660}\u{660}\u{660}\u{660}\u{660}\u{660}"}),)), 400, "INVALID_PARAMETER"),
        ("overflows u128", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "340282366920938463463374607431768211456"}))), 400, "INVALID_PARAMETER"),
        ("overflows u128 once scaled", Method::POST, orders.clone(), json_ct, Some(ok(json!({"price": "340282366920938463463374607431768211"}))), 400, "INVALID_PARAMETER"),
        ("price beyond any tick count", Method::POST, orders.clone(), json_ct, Some(ok(json!({"price": "1000000000000000000000000"}))), 400, "PRICE_OUTSIDE_BAND"),
        ("size beyond the maximum", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "100000000000000000000"}))), 400, "QTY_ABOVE_MAX"),
        ("price off tick", Method::POST, orders.clone(), json_ct, Some(ok(json!({"price": "29000.005"}))), 400, "PRICE_OFF_TICK"),
        ("size off step", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "0.00015"}))), 400, "QTY_OFF_STEP"),
        ("zero price", Method::POST, orders.clone(), json_ct, Some(ok(json!({"price": "0"}))), 400, "PRICE_ZERO"),
        ("zero size", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "0.0"}))), 400, "QTY_ZERO"),
        ("outside the band", Method::POST, orders.clone(), json_ct, Some(ok(json!({"price": "40000"}))), 400, "PRICE_OUTSIDE_BAND"),
        ("insufficient funds", Method::POST, orders.clone(), json_ct, Some(ok(json!({"size": "100"}))), 400, "FUNDS_INSUFFICIENT"),
        ("insufficient base", Method::POST, orders.clone(), json_ct, Some(ok(json!({"side": "sell", "price": "30000", "size": "11"}))), 400, "FUNDS_INSUFFICIENT"),
        ("unknown market", Method::POST, orders.clone(), json_ct, Some(ok(json!({"market": "DOGE-USD"}))), 404, "MARKET_NOT_FOUND"),
        ("lower-case market", Method::POST, orders.clone(), json_ct, Some(ok(json!({"market": "btc-usd"}))), 404, "MARKET_NOT_FOUND"),
        ("bad side", Method::POST, orders.clone(), json_ct, Some(ok(json!({"side": "long"}))), 400, "INVALID_PARAMETER"),
        ("bad type", Method::POST, orders.clone(), json_ct, Some(ok(json!({"type": "stop"}))), 400, "INVALID_PARAMETER"),
        ("bad time in force", Method::POST, orders.clone(), json_ct, Some(ok(json!({"time_in_force": "day"}))), 400, "INVALID_PARAMETER"),
        ("bad stp", Method::POST, orders.clone(), json_ct, Some(ok(json!({"stp": "never"}))), 400, "INVALID_PARAMETER"),
        ("market order with a price", Method::POST, orders.clone(), json_ct, Some(ok(json!({"type": "market"}))), 400, "INVALID_PARAMETER"),
        ("market order with size and funds", Method::POST, orders.clone(), json_ct, Some(ok(json!({"type": "market", "price": null, "funds": "100"}))), 400, "INVALID_PARAMETER"),
        ("market order with neither", Method::POST, orders.clone(), json_ct, Some(ok(json!({"type": "market", "price": null, "size": null}))), 400, "INVALID_PARAMETER"),
        ("limit order with funds", Method::POST, orders.clone(), json_ct, Some(ok(json!({"funds": "100"}))), 400, "INVALID_PARAMETER"),
        ("market funds below minimum", Method::POST, orders.clone(), json_ct, Some(ok(json!({"type": "market", "price": null, "size": null, "funds": "0.5"}),)), 400, "NOTIONAL_BELOW_MIN"),
        ("bad UUID", Method::POST, orders.clone(), json_ct, Some(ok(json!({"client_order_id": "not-a-uuid"}))), 400, "INVALID_PARAMETER"),
        ("UUID too short", Method::POST, orders.clone(), json_ct, Some(ok(json!({"client_order_id": "3b0fa9e2-52d1-4c1e-9a8e-2f4d0b6a7c1"}),)), 400, "INVALID_PARAMETER"),
        ("UUID with a sign", Method::POST, orders.clone(), json_ct, Some(ok(json!({"client_order_id": "+b0fa9e2-52d1-4c1e-9a8e-2f4d0b6a7c11"}),)), 400, "INVALID_PARAMETER"),
        ("UUID, non-hex", Method::POST, orders.clone(), json_ct, Some(ok(json!({"client_order_id": "zb0fa9e2-52d1-4c1e-9a8e-2f4d0b6a7c11"}),)), 400, "INVALID_PARAMETER"),
        ("body over the limit", Method::POST, orders.clone(), json_ct, Some(big.into_bytes()), 413, "PAYLOAD_TOO_LARGE"),
        ("order id not a number", Method::GET, p("/api/v1/orders/abc"), None, None, 400, "INVALID_PARAMETER"),
        ("order id negative", Method::GET, p("/api/v1/orders/-1"), None, None, 400, "INVALID_PARAMETER"),
        ("order id overflows", Method::GET, p("/api/v1/orders/99999999999999999999999"), None, None, 400, "INVALID_PARAMETER"),
        ("order client id not a UUID", Method::GET, p("/api/v1/orders/client:abc"), None, None, 400, "INVALID_PARAMETER"),
        ("order id unknown", Method::GET, p("/api/v1/orders/123456"), None, None, 404, "ORDER_NOT_FOUND"),
        ("order client id unknown", Method::GET, p(&format!("/api/v1/orders/client:{}", uuid(404))), None, None, 404, "ORDER_NOT_FOUND"),
        ("cancel id not a number", Method::DELETE, p("/api/v1/orders/1.5"), None, None, 400, "INVALID_PARAMETER"),
        ("cancel unknown", Method::DELETE, p("/api/v1/orders/0"), None, None, 404, "ORDER_NOT_FOUND"),
        ("bad status filter", Method::GET, p("/api/v1/orders?status=closed"), None, None, 400, "INVALID_PARAMETER"),
        ("limit zero", Method::GET, p("/api/v1/orders?limit=0"), None, None, 400, "INVALID_PARAMETER"),
        ("limit too large", Method::GET, p("/api/v1/orders?limit=1001"), None, None, 400, "INVALID_PARAMETER"),
        ("limit negative", Method::GET, p("/api/v1/orders?limit=-5"), None, None, 400, "INVALID_PARAMETER"),
        ("limit not a number", Method::GET, p("/api/v1/orders?limit=ten"), None, None, 400, "INVALID_PARAMETER"),
        ("orders, unknown market", Method::GET, p("/api/v1/orders?market=NOPE"), None, None, 404, "MARKET_NOT_FOUND"),
        ("fills, bad order id", Method::GET, p("/api/v1/fills?order_id=abc"), None, None, 400, "INVALID_PARAMETER"),
        ("fills, bad limit", Method::GET, p("/api/v1/fills?limit=100000"), None, None, 400, "INVALID_PARAMETER"),
        ("fills, unknown market", Method::GET, p("/api/v1/fills?market=NOPE"), None, None, 404, "MARKET_NOT_FOUND"),
        ("withdrawal id not a number", Method::GET, p("/api/v1/withdrawals/abc"), None, None, 400, "INVALID_PARAMETER"),
        ("withdrawal unknown", Method::GET, p("/api/v1/withdrawals/77"), None, None, 404, "WITHDRAWAL_NOT_FOUND"),
        ("cancel withdrawal unknown", Method::DELETE, p("/api/v1/withdrawals/77"), None, None, 404, "WITHDRAWAL_NOT_FOUND"),
        ("withdrawal address id negative", Method::DELETE, p("/api/v1/withdrawal-addresses/-1"), None, None, 400, "INVALID_PARAMETER"),
        ("withdrawal address unknown", Method::DELETE, p("/api/v1/withdrawal-addresses/999"), None, None, 404, "WITHDRAWAL_ADDRESS_NOT_FOUND"),
        ("withdrawal address id not a number", Method::POST, p("/api/v1/withdrawals"), json_ct, Some(json!({"address_id": "x", "amount": "1"}).to_string().into_bytes()), 400, "INVALID_PARAMETER"),
        ("withdrawal address id as a number", Method::POST, p("/api/v1/withdrawals"), json_ct, Some(json!({"address_id": addr, "amount": "1"}) .to_string() .into_bytes(),), 400, "INVALID_JSON"),
        ("withdrawal amount negative", Method::POST, p("/api/v1/withdrawals"), json_ct, Some(json!({"address_id": addr.to_string(), "amount": "-1"}) .to_string() .into_bytes(),), 400, "INVALID_PARAMETER"),
        ("withdrawal amount too precise", Method::POST, p("/api/v1/withdrawals"), json_ct, Some(json!({"address_id": addr.to_string(), "amount": "0.000000001"}) .to_string() .into_bytes(),), 400, "INVALID_PARAMETER"),
        ("withdrawal amount zero", Method::POST, p("/api/v1/withdrawals"), json_ct, Some(json!({"address_id": addr.to_string(), "amount": "0"}) .to_string() .into_bytes(),), 400, "AMOUNT_ZERO"),
        ("withdrawal amount overflows", Method::POST, p("/api/v1/withdrawals"), json_ct, Some(json!({"address_id": addr.to_string(), "amount": "9".repeat(60)}) .to_string() .into_bytes(),), 400, "INVALID_PARAMETER"),
        ("withdrawal client id not a UUID", Method::POST, p("/api/v1/withdrawals"), json_ct, Some(json!({"address_id": addr.to_string(), "amount": "1", "client_id": "1"}) .to_string() .into_bytes(),), 400, "INVALID_PARAMETER"),
        ("withdrawal unknown field", Method::POST, p("/api/v1/withdrawals"), json_ct, Some(json!({"address_id": addr.to_string(), "amount": "1", "to": "x"}) .to_string() .into_bytes(),), 400, "INVALID_JSON"),
        ("withdrawal to an unknown address", Method::POST, p("/api/v1/withdrawals"), json_ct, Some(json!({"address_id": "999", "amount": "1"}) .to_string() .into_bytes(),), 404, "WITHDRAWAL_ADDRESS_NOT_FOUND"),
        ("withdrawal, text/plain", Method::POST, p("/api/v1/withdrawals"), Some("text/plain"), Some(json!({"address_id": addr.to_string(), "amount": "1"}) .to_string() .into_bytes(),), 415, "CONTENT_TYPE_INVALID"),
        ("deposit address, wrong type", Method::POST, p("/api/v1/deposit-addresses"), json_ct, Some(b"{\"asset\": 5}".to_vec()), 400, "INVALID_JSON"),
        ("wrong method on orders", Method::PUT, orders.clone(), None, None, 405, "METHOD_NOT_ALLOWED"),
        ("wrong method on one order", Method::POST, p("/api/v1/orders/1"), json_ct, Some(b"{}".to_vec()), 405, "METHOD_NOT_ALLOWED"),
        ("wrong method on balances", Method::PATCH, p("/api/v1/balances"), None, None, 405, "METHOD_NOT_ALLOWED"),
        ("wrong method on assets", Method::POST, p("/api/v1/assets"), json_ct, Some(b"{}".to_vec()), 405, "METHOD_NOT_ALLOWED"),
        ("wrong method on health", Method::DELETE, p("/health"), None, None, 405, "METHOD_NOT_ALLOWED"),
        ("wrong method on the document", Method::POST, p("/api/v1/openapi.json"), None, None, 405, "METHOD_NOT_ALLOWED"),
        ("unknown path", Method::GET, p("/api/v1/nope"), None, None, 404, "NOT_FOUND"),
        ("unknown nested path", Method::GET, p("/api/v1/orders/1/fills"), None, None, 404, "NOT_FOUND"),
        ("trailing slash", Method::GET, p("/api/v1/orders/"), None, None, 404, "NOT_FOUND"),
        ("unknown version", Method::GET, p("/api/v2/orders"), None, None, 404, "NOT_FOUND"),
    ];
    for (name, method, path, ct, body, status, code) in cases {
        let mut r = call(&s, method.clone(), &path, Some(&auth), ct, body.clone()).await;
        if r.json["code"] == "STEP_UP_REQUIRED" {
            // A well-formed sensitive request: the engine's check comes after the second factor.
            let mut b: Value = serde_json::from_slice(body.as_deref().unwrap()).unwrap();
            let challenge = r.json["step_up"]["challenge"].as_str().unwrap();
            b["step_up"] = s.users[0].step_up_passkey(challenge, &s.origin);
            r = call(
                &s,
                method.clone(),
                &path,
                Some(&auth),
                ct,
                Some(b.to_string().into_bytes()),
            )
            .await;
        }
        assert_error(
            &format!("{name} ({method} {path})"),
            r.status,
            &r.json,
            status,
            code,
        );
        let ct = r
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert_eq!(ct, "application/json", "{name}: an error is JSON");
    }
    assert_eq!(
        all_balances(&s).await,
        before,
        "malformed requests changed balances"
    );
    let (st, all) = s.get(Some(0), "/api/v1/orders?status=all").await;
    assert_eq!((st, all), (200, json!([])));
    let (st, w) = s.get(Some(0), "/api/v1/withdrawals").await;
    assert_eq!((st, w), (200, json!([])));
    let (st, fills) = s.get(Some(0), "/api/v1/fills").await;
    assert_eq!((st, fills), (200, json!([])));
    // The server is healthy afterwards.
    place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.01"}),
    )
    .await;
    s.stop().await;
}

/// xorshift64*: deterministic garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "0.01",
    "29000",
    "30000.00",
    "-1",
    "1e3",
    "1.",
    ".1",
    "0x1f",
    "",
    " ",
    "NaN",
    "∞",
    "١",
    "0.000000001",
    "340282366920938463463374607431768211456",
    "18446744073709551616",
    "00000000000000000001",
    "29000.005",
    "0.00015",
    "9999999999999999999999999999999999999999999999999999999999999999999999999",
    "1.0000000é",
    "\u{0}",
    "null",
    "true",
    "{}",
    "[]",
    "%",
    "'",
    "\"",
    "\\",
];

fn garbage_value(r: &mut Rng, depth: u32) -> Value {
    match r.below(if depth > 2 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => Value::Bool(r.below(2) == 0),
        2 => json!(r.next() as i64),
        3 => json!(r.next()),
        4 => json!(u64::MAX),
        5 => Value::String((*r.pick(NUMBERS)).to_owned()),
        6 => Value::String(String::from_utf8_lossy(&r.bytes(40)).into_owned()),
        7 => Value::Array((0..r.below(4)).map(|_| garbage_value(r, depth + 1)).collect()),
        _ => garbage_object(r, depth + 1),
    }
}

const FIELDS: &[&str] = &[
    "market",
    "side",
    "type",
    "price",
    "size",
    "funds",
    "time_in_force",
    "client_order_id",
    "stp",
    "asset",
    "address",
    "label",
    "address_id",
    "amount",
    "client_id",
    "x",
    "",
];

fn garbage_object(r: &mut Rng, depth: u32) -> Value {
    let mut o = serde_json::Map::new();
    for _ in 0..r.below(8) {
        let k = (*r.pick(FIELDS)).to_owned();
        let v = match (k.as_str(), r.below(3)) {
            ("market", 0) => json!(r.pick(&["BTC-USD", "ETH-USD", "NOPE"])),
            ("side", 0) => json!(r.pick(&["buy", "sell"])),
            ("type", 0) => json!(r.pick(&["limit", "market"])),
            ("time_in_force", 0) => json!(r.pick(&["gtc", "ioc", "fok", "post_only"])),
            ("asset", 0) => json!(r.pick(&["BTC", "ETH", "USD"])),
            _ => garbage_value(r, depth),
        };
        o.insert(k, v);
    }
    Value::Object(o)
}

fn percent(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(b) {
                (*b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_yields_a_server_error() {
    // Many requests in a row, about something else than rate limits.
    let config = crate::harness::without_rate_limits(ApiConfig::default());
    let s = TestServer::start_with(1, config).await;
    let addr = usable_address(&s, s.users[0].id, &s.btc_usd_address.clone()).await;
    let auth = bearer(&s.users[0].token);
    let valid = json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.01"}).to_string();
    let mut r = Rng(0x5eed_0f6a_7ba6);
    let check = |what: String, resp: Resp| {
        assert!(resp.status < 500, "{what} → {} {}", resp.status, resp.json);
        if resp.status >= 400 {
            assert!(
                is_error_body(&resp.json),
                "{what} → {} {}",
                resp.status,
                resp.json
            );
        }
    };
    let posts = [
        "/api/v1/orders",
        "/api/v1/orders",
        "/api/v1/orders",
        "/api/v1/withdrawals",
        "/api/v1/withdrawal-addresses",
        "/api/v1/deposit-addresses",
    ];
    for i in 0..400 {
        let path = *r.pick(&posts);
        let body: Vec<u8> = match i % 4 {
            0 => r.bytes(120),
            1 => {
                // A valid order with a few bytes replaced.
                let mut b = valid.clone().into_bytes();
                for _ in 0..1 + r.below(3) {
                    let at = r.below(b.len());
                    b[at] = *r.pick(b"{}[]\":,.-+e0123456789 \\ntruefalsenul\xff\x00");
                }
                b
            }
            2 => {
                let mut o = garbage_object(&mut r, 0);
                if r.below(2) == 0 {
                    o["address_id"] = json!(addr.to_string());
                }
                o.to_string().into_bytes()
            }
            _ => {
                // A valid order with one field replaced by garbage.
                let mut o: Value = serde_json::from_str(&valid).unwrap();
                let k = *r.pick(FIELDS);
                o[k] = garbage_value(&mut r, 0);
                o.to_string().into_bytes()
            }
        };
        let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        let ct = *r.pick(&[
            "application/json",
            "application/json",
            "application/json",
            "text/plain",
        ]);
        let resp = call(&s, Method::POST, path, Some(&auth), Some(ct), Some(body)).await;
        check(format!("POST {path} {shown}"), resp);
    }
    let gets = [
        "/api/v1/orders",
        "/api/v1/fills",
        "/api/v1/deposits",
        "/api/v1/withdrawals",
        "/api/v1/deposit-addresses",
        "/api/v1/withdrawal-addresses",
        "/api/v1/balances",
        "/api/v1/assets",
        "/api/v1/markets",
        "/api/v1/markets/BTC-USD/book",
        "/api/v1/markets/BTC-USD/trades",
        "/api/v1/markets/BTC-USD/candles",
        "/api/v1/markets/BTC-USD/ticker",
    ];
    let keys = [
        "limit",
        "depth",
        "granularity",
        "market",
        "status",
        "asset",
        "order_id",
        "x",
        "",
        "limit[]",
    ];
    for i in 0..400 {
        let (method, path) = match i % 5 {
            0 => (Method::GET, format!("/api/v1/orders/{}", percent(&r.bytes(40)))),
            1 => (
                Method::DELETE,
                format!("/api/v1/orders/{}", percent(&r.bytes(40))),
            ),
            2 => (
                r.pick(&[Method::GET, Method::DELETE]).clone(),
                format!(
                    "/api/v1/{}/{}",
                    r.pick(&["withdrawals", "withdrawal-addresses", "markets"]),
                    percent(&r.bytes(30))
                ),
            ),
            _ => (Method::GET, (*r.pick(&gets)).to_owned()),
        };
        let mut q = Vec::new();
        for _ in 0..r.below(5) {
            let k = *r.pick(&keys);
            let v = if r.below(2) == 0 {
                (*r.pick(NUMBERS)).as_bytes().to_vec()
            } else {
                r.bytes(30)
            };
            q.push(format!("{}={}", percent(k.as_bytes()), percent(&v)));
        }
        let full = if q.is_empty() {
            path
        } else {
            format!("{path}?{}", q.join("&"))
        };
        let resp = call(&s, method.clone(), &full, Some(&auth), None, None).await;
        check(format!("{method} {full}"), resp);
    }
    // Whatever was placed, the books balance: cancel everything and every hold is gone.
    let (st, _) = delete(&s, 0, "/api/v1/orders").await;
    assert_eq!(st, 200);
    let (st, w) = s.get(Some(0), "/api/v1/withdrawals").await;
    assert_eq!(st, 200);
    for w in w.as_array().unwrap() {
        let (st, _) = delete(
            &s,
            0,
            &format!("/api/v1/withdrawals/{}", w["id"].as_str().unwrap()),
        )
        .await;
        assert!(st == 200 || st == 409);
    }
    for (code, b) in balances(&s, 0).await {
        assert_eq!(b.hold, 0, "{code}");
    }
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Operations.

async fn text(s: &TestServer, path: &str) -> (u16, String) {
    let r = s.client.get(s.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of a metric line `name{labels} value` (or `name value`).
fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_metrics_and_request_ids() {
    let s = TestServer::start(1).await;
    let (st, body) = text(&s, "/health").await;
    assert_eq!((st, body.as_str()), (200, "ok\n"));
    let (st, ready) = s.get(None, "/ready").await;
    assert_eq!(st, 200, "{ready}");
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["halted"], Value::Null);
    assert!(ready["committed_seq"].as_u64().unwrap() > 0);

    // Request ids: generated, unique, on success and on errors; a client's own id is kept.
    let mut seen = std::collections::HashSet::new();
    for (path, auth) in [
        ("/health", None),
        ("/api/v1/assets", None),
        ("/api/v1/nope", None),
        ("/api/v1/balances", None),
        ("/api/v1/balances", Some(bearer(&s.users[0].token))),
    ] {
        let r = call(&s, Method::GET, path, auth.as_deref(), None, None).await;
        let id = r
            .headers
            .get("x-request-id")
            .unwrap_or_else(|| panic!("{path}: no x-request-id"));
        let id = id.to_str().unwrap().to_owned();
        assert_eq!(id.len(), 36, "{path}: {id}");
        assert!(seen.insert(id), "request ids are unique");
    }
    let r = s
        .client
        .get(s.url("/api/v1/assets"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");

    // A refused order and an accepted one.
    let (st, body) = s
        .post(
            0,
            "/api/v1/orders",
            json!({"market": "BTC-USD", "side": "buy", "price": "30000", "size": "50"}),
        )
        .await;
    assert_error("too big", st, &body, 400, "FUNDS_INSUFFICIENT");
    place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.1"}),
    )
    .await;
    let (st, m) = text(&s, "/metrics").await;
    assert_eq!(st, 200);
    assert!(m.contains("# TYPE kinko_http_requests_total counter"), "{m}");
    assert_eq!(
        metric(&m, "kinko_http_requests_total{route=\"/health\",status=\"200\"}"),
        Some(2),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "kinko_http_requests_total{route=\"/api/v1/orders\",status=\"400\"}"
        ),
        Some(1),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "kinko_http_requests_total{route=\"/api/v1/orders\",status=\"200\"}"
        ),
        Some(1),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "kinko_http_requests_total{route=\"unmatched\",status=\"404\"}"
        ),
        Some(1),
        "{m}"
    );
    assert_eq!(
        metric(&m, "kinko_rejects_total{code=\"FUNDS_INSUFFICIENT\"}"),
        Some(1),
        "{m}"
    );
    assert_eq!(
        metric(&m, "kinko_rejects_total{code=\"UNAUTHORIZED\"}"),
        Some(1),
        "{m}"
    );
    assert_eq!(
        metric(&m, "kinko_rejects_total{code=\"NOT_FOUND\"}"),
        Some(1),
        "{m}"
    );
    assert_eq!(
        metric(&m, "kinko_orders_total{result=\"accepted\"}"),
        Some(1),
        "{m}"
    );
    assert_eq!(
        metric(&m, "kinko_orders_total{result=\"rejected\"}"),
        Some(1),
        "{m}"
    );
    assert!(
        metric(&m, "kinko_journal_fsync_seconds_bucket{le=\"+Inf\"}").unwrap() > 0,
        "{m}"
    );
    assert!(m.contains("# TYPE kinko_journal_fsync_seconds histogram"));
    assert!(metric(&m, "kinko_http_request_duration_seconds_count").unwrap() >= 9);
    assert_eq!(metric(&m, "kinko_sequencer_queue_depth"), Some(0), "{m}");
    assert!(metric(&m, "kinko_committed_seq").unwrap() > 0);
    assert_eq!(metric(&m, "kinko_engine_halted"), Some(0));
    for state in ["requested", "broadcast", "completed", "cancelled", "failed"] {
        assert_eq!(
            metric(&m, &format!("kinko_withdrawals{{state=\"{state}\"}}")),
            Some(0),
            "{state}"
        );
    }
    // Every sample line is `name{labels} integer-or-decimal`.
    for l in m.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
        assert!(
            v.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-'),
            "{l}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_rate_limit() {
    let config = ApiConfig {
        rate_per_key: Rate {
            burst: 5,
            per_second: 1,
        },
        ..ApiConfig::default()
    };
    let s = TestServer::start_with(2, config).await;
    // Failed authentication does not use up the key's budget.
    let wrong = format!("Bearer {}.wrong", s.users[0].token.split_once('.').unwrap().0);
    for _ in 0..10 {
        let r = call(&s, Method::GET, "/api/v1/balances", Some(&wrong), None, None).await;
        assert_error("wrong secret", r.status, &r.json, 401, "UNAUTHORIZED");
    }
    // Orders until the first refusal: the burst passes (plus what refilled meanwhile, at one
    // per second), then 429.
    let started = std::time::Instant::now();
    let mut accepted = 0u64;
    let refused = loop {
        let (st, body) = s
            .post(
                0,
                "/api/v1/orders",
                json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.01"}),
            )
            .await;
        if st != 200 || accepted == 50 {
            break (st, body);
        }
        accepted += 1;
    };
    let refill = started.elapsed().as_secs() + 1;
    assert!(
        (5..=5 + refill).contains(&accepted),
        "{accepted} orders passed a burst of 5"
    );
    assert_error(
        "an order over the limit",
        refused.0,
        &refused.1,
        429,
        "RATE_LIMITED",
    );
    let (st, all) = s.get(Some(1), "/api/v1/orders?status=all").await;
    assert_eq!((st, all), (200, json!([])), "other keys are not limited");
    let (st, _) = s.get(None, "/api/v1/markets").await;
    assert_eq!(st, 200, "public endpoints are not limited per key");
    // The bucket refills at one request per second; the refused order was not placed.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (st, all) = s.get(Some(0), "/api/v1/orders?status=all&limit=1000").await;
    assert_eq!(st, 200, "{all}");
    assert_eq!(all.as_array().unwrap().len() as u64, accepted);
    assert_eq!(balances(&s, 1).await, funded());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_rate_limit() {
    let config = ApiConfig {
        rate_per_ip: Rate {
            burst: 3,
            per_second: 1,
        },
        ..ApiConfig::default()
    };
    let s = TestServer::start_with(1, config).await;
    let started = std::time::Instant::now();
    let mut passed = 0u64;
    let refused = loop {
        let (st, body) = s.get(None, "/api/v1/assets").await;
        if st != 200 || passed == 50 {
            break (st, body);
        }
        passed += 1;
    };
    let refill = started.elapsed().as_secs() + 1;
    assert!(
        (3..=3 + refill).contains(&passed),
        "{passed} requests passed a burst of 3"
    );
    assert_error("over the limit", refused.0, &refused.1, 429, "RATE_LIMITED");
    s.stop().await;
}

/// The first refusal of a loop of `n` requests: how many passed before it, and the refusal.
async fn until_refused(n: u64, mut send: impl AsyncFnMut() -> Resp) -> (u64, Option<Resp>) {
    for passed in 0..n {
        let r = send().await;
        if r.status != 200 {
            return (passed, Some(r));
        }
    }
    (n, None)
}

fn assert_rate_limited(what: &str, r: Option<Resp>) {
    let r = r.unwrap_or_else(|| panic!("{what}: never refused"));
    assert_error(what, r.status, &r.json, 429, "RATE_LIMITED");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{what}: Retry-After {retry}");
}

/// Without any rate setting the gateway allows what large exchanges do (Coinbase Exchange:
/// private calls 15/s in bursts of 30 per key, public ones 10/s in bursts of 15 per IP, order
/// entry a little more), not the thousands per second it once did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_rate_limits_are_those_of_large_exchanges() {
    let s = TestServer::start(2).await;
    let started = std::time::Instant::now();
    let bearer = format!("Bearer {}", s.users[0].token);
    let (passed, refused) = until_refused(200, async || {
        call(&s, Method::GET, "/api/v1/balances", Some(&bearer), None, None).await
    })
    .await;
    let refill = 15 * (started.elapsed().as_secs() + 1);
    assert!(
        (30..=30 + refill).contains(&passed),
        "{passed} private reads passed"
    );
    assert_rate_limited("a private read over the limit", refused);

    // Order entry has more room than the other private calls, on another key.
    let bearer = format!("Bearer {}", s.users[1].token);
    let order = json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.0001"});
    let started = std::time::Instant::now();
    let (passed, refused) = until_refused(200, async || {
        let body = serde_json::to_vec(&order).unwrap();
        call(
            &s,
            Method::POST,
            "/api/v1/orders",
            Some(&bearer),
            Some("application/json"),
            Some(body),
        )
        .await
    })
    .await;
    let refill = 25 * (started.elapsed().as_secs() + 1);
    assert!((50..=50 + refill).contains(&passed), "{passed} orders passed");
    assert_rate_limited("an order over the limit", refused);

    // Unauthenticated market data, per address.
    let started = std::time::Instant::now();
    let (passed, refused) = until_refused(200, async || {
        call(&s, Method::GET, "/api/v1/markets", None, None, None).await
    })
    .await;
    let refill = 10 * (started.elapsed().as_secs() + 1);
    assert!(
        (15..=15 + refill).contains(&passed),
        "{passed} public reads passed"
    );
    assert_rate_limited("a public read over the limit", refused);
    // The pages themselves are not API calls.
    let page = call(&s, Method::GET, "/app.js", None, None, None).await;
    assert_eq!(page.status, 200);
    s.stop().await;
}

/// Sends a request over a raw socket in two parts, so that it is in flight across a shutdown.
async fn raw_post_in_two_parts(
    addr: &str,
    token: &str,
    body: &str,
    between: impl std::future::Future<Output = ()>,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/orders HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (a, b) = body.split_at(body.len() / 2);
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(a.as_bytes()).await.unwrap();
    sock.flush().await.unwrap();
    between.await;
    sock.write_all(b.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_completes_in_flight_requests_and_restart_keeps_everything() {
    // Many requests in a row, about something else than rate limits.
    let config = crate::harness::without_rate_limits(ApiConfig::default());
    let s = TestServer::start_with(2, config).await;
    // Some history: a trade, resting orders, a cancelled one.
    place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "sell", "price": "30000", "size": "0.2"}),
    )
    .await;
    place(
        &s,
        1,
        json!({"market": "BTC-USD", "side": "buy", "price": "30000", "size": "0.1"}),
    )
    .await;
    let c = place(
        &s,
        1,
        json!({"market": "ETH-USD", "side": "sell", "price": "2100", "size": "2"}),
    )
    .await;
    let (st, _) = delete(&s, 1, &format!("/api/v1/orders/{}", c["id"].as_str().unwrap())).await;
    assert_eq!(st, 200);

    // Many orders in flight while the server stops: each one is either acknowledged (and then
    // durable) or cleanly refused.
    let mut tasks = Vec::new();
    for k in 0..60u32 {
        let client = s.client.clone();
        let url = s.url("/api/v1/orders");
        let user = (k % 2) as usize;
        let token = s.users[user].token.clone();
        let cid = uuid(1_000 + u128::from(k));
        let price = format!("{}.00", 28_000 + k);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(k % 20))).await;
            let body = json!({"market": "BTC-USD", "side": "buy", "price": price, "size": "0.01", "client_order_id": cid});
            let r = client.post(url).bearer_auth(token).json(&body).send().await;
            let outcome = match r {
                Ok(r) => {
                    let st = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    Some((st, body))
                }
                Err(_) => None, // the connection was refused or closed: not acknowledged
            };
            (user, cid, outcome)
        }));
    }
    // One request whose body arrives only after the shutdown began.
    let addr = s.base.trim_start_matches("http://").to_owned();
    let token0 = s.users[0].token.clone();
    let slow_body =
        json!({"market": "BTC-USD", "side": "buy", "price": "27000", "size": "0.02", "client_order_id": uuid(5)})
            .to_string();
    let (start_stop_tx, start_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let slow = tokio::spawn(async move {
        raw_post_in_two_parts(&addr, &token0, &slow_body, async move {
            let _ = start_stop_tx.send(());
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        })
        .await
    });
    start_stop_rx.await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let restart = tokio::spawn(s.restart());

    let (st, slow_order) = slow.await.unwrap();
    assert_eq!(st, 200, "the in-flight request completed: {slow_order}");
    let mut acked = vec![(0usize, slow_order)];
    let mut unacked = Vec::new();
    for t in tasks {
        let (user, cid, outcome) = t.await.unwrap();
        match outcome {
            Some((200, o)) => acked.push((user, o)),
            Some((st, body)) => {
                // Refused while stopping: a clean JSON error, never a 5xx other than 503.
                assert!(st == 503 && is_error_body(&body), "{st} {body}");
                unacked.push((user, cid));
            }
            None => unacked.push((user, cid)),
        }
    }
    let (s, stopped, recovered) = restart.await.unwrap();
    assert_eq!(
        stopped, recovered,
        "recovery reaches the state the engine stopped with"
    );

    // Every acknowledged order is there, unchanged.
    for (user, o) in &acked {
        let (st, again) = s
            .get(
                Some(*user),
                &format!("/api/v1/orders/{}", o["id"].as_str().unwrap()),
            )
            .await;
        assert_eq!(st, 200, "acknowledged order {o} lost: {again}");
        assert_eq!(&again, o);
    }
    // An unacknowledged one may or may not have been committed; either way it is consistent.
    for (user, cid) in &unacked {
        let (st, o) = s.get(Some(*user), &format!("/api/v1/orders/client:{cid}")).await;
        assert!(st == 200 || st == 404, "{st} {o}");
    }
    // Balances agree with the orders: no trades since the first, holds match open orders.
    let (n, taker_fee, maker_fee) = {
        let n = btc_notional(30_000 * USD_UNIT, SAT / 10);
        (n, fee(n, TAKER_BPS), fee(n, MAKER_BPS))
    };
    for user in 0..2 {
        let (st, open) = s.get(Some(user), "/api/v1/orders?limit=1000").await;
        assert_eq!(st, 200);
        let mut usd_hold = 0;
        let mut btc_hold = 0;
        for o in open.as_array().unwrap() {
            let price = minor(o["price"].as_str().unwrap(), 6);
            let size = minor(o["size"].as_str().unwrap(), 8);
            let filled = minor(o["filled_size"].as_str().unwrap(), 8);
            if o["side"] == "buy" {
                assert_eq!(filled, 0, "{o}");
                let n = btc_notional(price, size);
                usd_hold += n + fee(n, TAKER_BPS);
            } else {
                btc_hold += size - filled;
            }
        }
        let b = balances(&s, user).await;
        let f = funded();
        let (btc_delta, usd_delta) = if user == 0 {
            (-(SAT as i128 / 10), (n - maker_fee) as i128)
        } else {
            (SAT as i128 / 10, -((n + taker_fee) as i128))
        };
        assert_eq!(b["BTC"], moved(f["BTC"], btc_delta, btc_hold), "user {user}");
        assert_eq!(b["USD"], moved(f["USD"], usd_delta, usd_hold), "user {user}");
        assert_eq!(b["ETH"], f["ETH"], "user {user}");
    }
    let (st, trades) = s.get(None, "/api/v1/markets/BTC-USD/trades").await;
    assert_eq!((st, trades.as_array().unwrap().len()), (200, 1));
    let (st, fills) = s.get(Some(1), "/api/v1/fills").await;
    assert_eq!(
        (st, fills.as_array().unwrap().len()),
        (200, 1),
        "fills are rebuilt after a restart"
    );
    let (st, done) = s.get(Some(1), "/api/v1/orders?status=done").await;
    assert_eq!(st, 200);
    assert!(ids(&done).contains(&c["id"].as_str().unwrap().to_owned()));
    let (st, ready) = s.get(None, "/ready").await;
    assert_eq!((st, &ready["ready"]), (200, &json!(true)));

    // And it keeps working.
    place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.01"}),
    )
    .await;
    s.stop().await;
}

/// A view key allowed only from 203.0.113.7; returns its token.
async fn key_from_203(s: &TestServer) -> String {
    let view = Permissions {
        view: true,
        trade: false,
        withdraw: false,
    };
    let mut k = new_native_key(s.users[0].id, "behind a proxy", view);
    k.record.ip_allowlist = vec!["203.0.113.7".into()];
    s.gateway
        .submit(Command::CreateApiKey {
            key: k.record,
            proof: None,
        })
        .await
        .unwrap()
        .reply
        .unwrap();
    k.token
}

async fn balances_with(s: &TestServer, token: &str, header: Option<(&str, &str)>) -> (u16, Value) {
    let mut r = s.client.get(s.url("/api/v1/balances")).bearer_auth(token);
    if let Some((name, value)) = header {
        r = r.header(name, value);
    }
    let resp = r.send().await.unwrap();
    let st = resp.status().as_u16();
    (st, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_name_the_client_only_from_trusted_proxies() {
    // Without trusted proxies (the default) the headers are ignored: the client is the peer.
    let s = TestServer::start(1).await;
    let token = key_from_203(&s).await;
    for h in [
        ("x-forwarded-for", "203.0.113.7"),
        ("forwarded", "for=203.0.113.7"),
    ] {
        let (st, body) = balances_with(&s, &token, Some(h)).await;
        assert_eq!(
            (st, body["code"].as_str()),
            (403, Some("API_KEY_IP_NOT_ALLOWED")),
            "{h:?}: {body}"
        );
    }
    // Behind a trusted proxy (here: loopback), the client is the rightmost untrusted hop.
    let config = ApiConfig {
        trusted_proxies: vec!["127.0.0.0/8".into()],
        ..ApiConfig::default()
    };
    let s = TestServer::start_with(1, config).await;
    let token = key_from_203(&s).await;
    let cases: [(Option<(&str, &str)>, u16); 8] = [
        (Some(("x-forwarded-for", "203.0.113.7")), 200),
        (Some(("x-forwarded-for", "198.51.100.1")), 403),
        // A client that writes its own header cannot choose the address the proxy appends.
        (Some(("x-forwarded-for", "203.0.113.7, 198.51.100.9")), 403),
        // Further trusted hops on the right are skipped.
        (Some(("x-forwarded-for", "203.0.113.7, 127.0.0.2")), 200),
        (Some(("forwarded", "for=203.0.113.7;proto=https")), 200),
        (Some(("forwarded", "for=\"203.0.113.7:4711\"")), 200),
        (Some(("forwarded", "for=198.51.100.1")), 403),
        // No header: the proxy itself is the client.
        (None, 403),
    ];
    for (h, want) in cases {
        let (st, body) = balances_with(&s, &token, h).await;
        assert_eq!(st, want, "{h:?}: {body}");
    }
}

/// Stop orders (`stop_price`, `stop` defaulting to the one the side allows) wait as `pending`
/// with their funds held, trigger on the last trade price and keep their stop fields; a wrong
/// side is refused; good-till-time orders (`time_in_force` `gtt` with `expire_time`) are
/// cancelled with reason `expired` by the engine's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_good_till_time_orders() {
    let s = TestServer::start(2).await;
    // A stop loss: sell 0.5 BTC at 29,000 once the last trade is at or below 29,500.
    let stop = place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "sell", "price": "29000", "size": "0.5",
               "stop_price": "29500"}),
    )
    .await;
    assert_eq!(stop["status"], "pending", "{stop}");
    assert_eq!(stop["stop"], "loss");
    assert_eq!(stop["stop_price"], "29500.000000");
    assert_eq!(stop["price"], "29000.000000");
    let id = stop["id"].as_str().unwrap().to_owned();
    let mut want0 = funded();
    want0.insert("BTC".into(), moved(want0["BTC"], 0, SAT / 2));
    assert_eq!(balances(&s, 0).await, want0, "held from placement");
    let (st, open) = s.get(Some(0), "/api/v1/orders").await;
    assert_eq!((st, ids(&open)), (200, vec![id.clone()]));

    // A stop on the side the direction does not allow, or a malformed one, changes nothing.
    for (body, status, code) in [
        (
            json!({"market": "BTC-USD", "side": "buy", "price": "31000", "size": "0.1",
                   "stop": "loss", "stop_price": "30500"}),
            400,
            "STOP_INVALID",
        ),
        (
            json!({"market": "BTC-USD", "side": "buy", "price": "31000", "size": "0.1",
                   "stop": "up", "stop_price": "30500"}),
            400,
            "INVALID_PARAMETER",
        ),
        (
            json!({"market": "BTC-USD", "side": "buy", "price": "31000", "size": "0.1",
                   "stop": "entry"}),
            400,
            "INVALID_PARAMETER",
        ),
        (
            json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.1",
                   "time_in_force": "gtt"}),
            400,
            "INVALID_PARAMETER",
        ),
        (
            json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.1",
                   "time_in_force": "gtt", "expire_time": "2001-01-01T00:00:00Z"}),
            400,
            "EXPIRY_INVALID",
        ),
    ] {
        let (st, b) = s.post(0, "/api/v1/orders", body.clone()).await;
        assert_error(&body.to_string(), st, &b, status, code);
    }
    assert_eq!(balances(&s, 0).await, want0);

    // A stop-market buy by size (entry), then cancelled while pending: the hold goes exactly.
    let entry = place(
        &s,
        1,
        json!({"market": "BTC-USD", "side": "buy", "type": "market", "size": "0.01",
               "stop_price": "40000"}),
    )
    .await;
    assert_eq!(
        (&entry["status"], &entry["stop"]),
        (&json!("pending"), &json!("entry"))
    );
    assert!(balances(&s, 1).await["USD"].hold > 0);
    let (st, c) = delete(
        &s,
        1,
        &format!("/api/v1/orders/{}", entry["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!((st, &c["status"]), (200, &json!("cancelled")), "{c}");
    assert_eq!(balances(&s, 1).await, funded());

    // A trade at 29,500 triggers the stop loss: with no bid left it rests at its limit.
    place(
        &s,
        1,
        json!({"market": "BTC-USD", "side": "buy", "price": "29500", "size": "0.01"}),
    )
    .await;
    let t = place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "sell", "price": "29500", "size": "0.01"}),
    )
    .await;
    assert_eq!(t["status"], "filled");
    let (st, o) = s.get(Some(0), &format!("/api/v1/orders/{id}")).await;
    assert_eq!(st, 200);
    assert_eq!(o["status"], "open", "{o}");
    assert_eq!(
        (&o["stop"], &o["stop_price"]),
        (&json!("loss"), &json!("29500.000000"))
    );
    let (st, c) = delete(&s, 0, &format!("/api/v1/orders/{id}")).await;
    assert_eq!((st, &c["cancel_reason"]), (200, &json!("user")));

    // Good till a time two seconds ahead: the engine's tick cancels it.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let gtt = place(
        &s,
        1,
        json!({"market": "BTC-USD", "side": "buy", "price": "28000", "size": "0.1",
               "time_in_force": "gtt", "expire_time": kinko_api::wire::rfc3339((now_s + 2) * 1_000_000_000)}),
    )
    .await;
    assert_eq!(
        (&gtt["status"], &gtt["time_in_force"]),
        (&json!("open"), &json!("gtt"))
    );
    assert!(gtt["expire_time"].is_string(), "{gtt}");
    assert!(balances(&s, 1).await["USD"].hold > 0);
    let path = format!("/api/v1/orders/{}", gtt["id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let done = loop {
        let (_, o) = s.get(Some(1), &path).await;
        if o["status"] != "open" {
            break o;
        }
        assert!(std::time::Instant::now() < deadline, "never expired: {o}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        (&done["status"], &done["cancel_reason"]),
        (&json!("cancelled"), &json!("expired"))
    );
    assert_eq!(balances(&s, 1).await["USD"].hold, 0);
    s.stop().await;
}
