//! The Coinbase Exchange WebSocket feed `/ws-feed` against a real server, spoken to as Coinbase
//! clients speak it: level-2 snapshot + l2update equal to the REST book, matches / ticker /
//! heartbeat / status, the signed `user` and `full` channels, errors; and for both feeds the
//! slow-consumer and ping behaviour with real sockets that stop reading.

use crate::harness::TestServer;
use crate::ws::{is_zero, next, next_of, send, trade_burst, Ws, WAIT};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use kinko_api::ApiConfig;
use kinko_core::book::{OrderId, Side, Stp, TimeInForce};
use kinko_core::engine::{Command, Reply};
use kinko_core::market::MarketId;
use kinko_core::trading::{OrderRef, OrderType, PlaceOrder};
use kinko_core::{Amount, UserId};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

fn feed_url(s: &TestServer) -> String {
    format!("{}/ws-feed", s.base.replace("http://", "ws://"))
}

async fn connect(s: &TestServer) -> Ws {
    tokio_tungstenite::connect_async(feed_url(s)).await.unwrap().0
}

/// A connection whose socket receives into a small buffer, so the server's writes back up fast.
async fn connect_small(url: &str, base: &str) -> Ws {
    let addr = base.strip_prefix("http://").unwrap().parse().unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4 * 1024).unwrap();
    let stream = sock.connect(addr).await.unwrap();
    tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap()
        .0
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Coinbase's subscribe authentication: base64(HMAC-SHA256(secret, timestamp + "GET" +
/// "/users/self/verify")), as ccxt sends it (a numeric timestamp).
fn signed(s: &TestServer, user: usize, mut sub: Value) -> Value {
    let u = &s.users[user];
    let ts = now_s();
    let key = STANDARD.decode(&u.cb_secret).unwrap();
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(format!("{ts}GET/users/self/verify").as_bytes());
    let o = sub.as_object_mut().unwrap();
    o.insert(
        "signature".into(),
        json!(STANDARD.encode(mac.finalize().into_bytes())),
    );
    o.insert("key".into(), json!(u.cb_key));
    o.insert("passphrase".into(), json!(u.cb_passphrase));
    o.insert("timestamp".into(), json!(ts));
    sub
}

async fn place(s: &TestServer, user: usize, side: &str, price: &str, size: &str) -> Value {
    let (st, body) = s
        .post(
            user,
            "/api/v1/orders",
            json!({"market": "BTC-USD", "side": side, "price": price, "size": size}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    body
}

type Book = BTreeMap<(String, String), String>;

/// `(side, price) → size` of the REST book at full depth.
async fn rest_book(s: &TestServer) -> Book {
    let (st, v) = s.get(None, "/products/BTC-USD/book?level=2").await;
    assert_eq!(st, 200, "{v}");
    let mut b = Book::new();
    for (key, side) in [("bids", "buy"), ("asks", "sell")] {
        for l in v[key].as_array().unwrap() {
            b.insert(
                (side.to_owned(), l[0].as_str().unwrap().to_owned()),
                l[1].as_str().unwrap().to_owned(),
            );
        }
    }
    b
}

/// Applies a `snapshot` (replacing the book) or an `l2update`.
fn apply(book: &mut Book, v: &Value) {
    if v["type"] == "snapshot" {
        book.clear();
        for (key, side) in [("bids", "buy"), ("asks", "sell")] {
            for l in v[key].as_array().unwrap() {
                book.insert(
                    (side.to_owned(), l[0].as_str().unwrap().to_owned()),
                    l[1].as_str().unwrap().to_owned(),
                );
            }
        }
        return;
    }
    assert_eq!(v["type"], "l2update", "{v}");
    for c in v["changes"].as_array().unwrap() {
        let k = (
            c[0].as_str().unwrap().to_owned(),
            c[1].as_str().unwrap().to_owned(),
        );
        let size = c[2].as_str().unwrap();
        if is_zero(size) {
            book.remove(&k);
        } else {
            book.insert(k, size.to_owned());
        }
    }
}

fn assert_time(v: &Value) {
    let t = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    // RFC 3339 UTC with microseconds: 2026-12-07T02:48:18.123456Z
    assert!(
        t.len() == 27 && t.ends_with('Z') && t.as_bytes()[19] == b'.',
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level2_snapshot_and_l2updates_rebuild_the_rest_book() {
    let s = TestServer::start(2).await;
    let mut ids = Vec::new();
    for (user, side, price) in [
        (0, "buy", "29900.00"),
        (0, "buy", "29950.00"),
        (1, "sell", "30050.00"),
        (1, "sell", "30100.00"),
    ] {
        ids.push(place(&s, user, side, price, "0.0100").await["id"].clone());
    }
    let mut ws = connect(&s).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "product_ids": ["btc-usd"], "channels": ["level2"]}),
    )
    .await;
    let ack = next(&mut ws).await;
    assert_eq!(ack["type"], "subscriptions");
    assert_eq!(
        ack["channels"],
        json!([{"name": "level2", "product_ids": ["BTC-USD"]}])
    );
    let snap = next(&mut ws).await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(snap["product_id"], "BTC-USD");
    assert_eq!(snap["bids"][0], json!(["29950.000000", "0.01000000"]));
    assert_time(&snap["time"]);
    let mut book = Book::new();
    apply(&mut book, &snap);
    assert_eq!(book, rest_book(&s).await);
    let mut seq = snap["sequence"].as_u64().unwrap();
    // Orders placed, crossed and cancelled: each change is one l2update, in sequence.
    place(&s, 0, "buy", "29990.00", "0.0200").await;
    place(&s, 1, "sell", "29990.00", "0.0050").await;
    let cancel = ids[0].as_str().unwrap().to_owned();
    let (st, _) = s
        .send(
            reqwest::Method::DELETE,
            Some(0),
            &format!("/api/v1/orders/{cancel}"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let want = rest_book(&s).await;
    while book != want {
        let u = next(&mut ws).await;
        assert_eq!(u["type"], "l2update", "{u}");
        assert_eq!(u["sequence"].as_u64().unwrap(), seq + 1, "a gap: {u}");
        seq += 1;
        assert_time(&u["time"]);
        apply(&mut book, &u);
    }
    assert_eq!(
        book.get(&("buy".into(), "29990.000000".into())).unwrap(),
        "0.01500000"
    );
    assert!(!book.contains_key(&("buy".into(), "29900.000000".into())));
    // Unsubscribing ends the updates.
    send(
        &mut ws,
        json!({"type": "unsubscribe", "product_ids": ["BTC-USD"], "channels": ["level2"]}),
    )
    .await;
    let ack = next(&mut ws).await;
    assert_eq!(ack, json!({"type": "subscriptions", "channels": []}));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_ticker_heartbeat_and_status() {
    let s = TestServer::start(2).await;
    place(&s, 1, "sell", "30000.00", "0.0100").await;
    place(&s, 0, "buy", "30000.00", "0.0040").await;
    let mut ws = connect(&s).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "product_ids": ["BTC-USD"],
               "channels": ["matches", "ticker", "heartbeat", {"name": "status"}]}),
    )
    .await;
    let ack = next(&mut ws).await;
    assert_eq!(ack["type"], "subscriptions", "{ack}");
    let names: Vec<&str> = ack["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["heartbeat", "status", "ticker", "matches"]);
    // On subscribe: the status, the ticker and the last match (in the order asked for).
    let mut first = BTreeMap::new();
    for _ in 0..3 {
        let v = next(&mut ws).await;
        first.insert(v["type"].as_str().unwrap().to_owned(), v);
    }
    let status = &first["status"];
    assert!(status["products"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == "BTC-USD"));
    assert!(status["currencies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == "BTC"));
    let ticker = &first["ticker"];
    assert_eq!(ticker["price"], "30000.000000", "{ticker}");
    assert_eq!(ticker["best_ask"], "30000.000000");
    assert_eq!(ticker["best_ask_size"], "0.00600000");
    assert_eq!(ticker["last_size"], "0.00400000");
    assert_eq!(ticker["side"], "buy");
    let last = &first["last_match"];
    assert_eq!(last["size"], "0.00400000", "{last}");
    assert_eq!(last["side"], "sell");
    // A trade: the match (the maker's side), then the ticker, both with the product's sequence.
    place(&s, 0, "buy", "30000.00", "0.0010").await;
    let m = next_of(&mut ws, "match").await;
    assert_eq!(m["product_id"], "BTC-USD");
    assert_eq!(m["price"], "30000.000000");
    assert_eq!(m["size"], "0.00100000");
    assert_eq!(m["side"], "sell");
    assert!(m["maker_order_id"].is_string() && m["taker_order_id"].is_string());
    assert_eq!(
        m["trade_id"].as_u64().unwrap(),
        last["trade_id"].as_u64().unwrap() + 1
    );
    assert_time(&m["time"]);
    let seq = m["sequence"].as_u64().unwrap();
    let t = next_of(&mut ws, "ticker").await;
    assert_eq!(t["best_ask_size"], "0.00500000");
    assert_eq!(t["trade_id"], m["trade_id"]);
    assert!(t["sequence"].as_u64().unwrap() >= seq);
    // The taker's order is received and done after the match: the product's sequence moved on.
    let hb = next_of(&mut ws, "heartbeat").await;
    assert_eq!(hb["product_id"], "BTC-USD");
    assert_eq!(hb["last_trade_id"], m["trade_id"]);
    assert!(hb["sequence"].as_u64().unwrap() > seq, "{hb}");
    assert_time(&hb["time"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_full_channels_need_a_signature_and_show_own_orders() {
    let s = TestServer::start(2).await;
    let mut ws = connect(&s).await;
    // Without a signature: refused, nothing subscribed.
    send(
        &mut ws,
        json!({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["user"]}),
    )
    .await;
    let e = next(&mut ws).await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["message"], "Failed to subscribe");
    assert_eq!(e["code"], "UNAUTHORIZED");
    // A wrong signature (another user's secret under this key).
    let mut bad = signed(
        &s,
        1,
        json!({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["user"]}),
    );
    bad["key"] = json!(s.users[0].cb_key);
    send(&mut ws, bad).await;
    let e = next(&mut ws).await;
    assert_eq!(e["message"], "Authentication Failed", "{e}");
    assert_eq!(e["reason"], "invalid signature");
    // Half the fields.
    send(
        &mut ws,
        json!({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["level2"], "key": s.users[0].cb_key}),
    )
    .await;
    assert_eq!(next(&mut ws).await["message"], "Authentication Failed");
    // Signed: subscribed.
    send(
        &mut ws,
        signed(
            &s,
            0,
            json!({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["user"]}),
        ),
    )
    .await;
    let ack = next(&mut ws).await;
    assert_eq!(
        ack["channels"],
        json!([{"name": "user", "product_ids": ["BTC-USD"]}]),
        "{ack}"
    );
    // Another user watches everything.
    let mut full = connect(&s).await;
    send(
        &mut full,
        signed(
            &s,
            1,
            json!({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["full"]}),
        ),
    )
    .await;
    assert_eq!(next(&mut full).await["type"], "subscriptions");
    // User 0 rests a buy; user 1 sells into part of it.
    let (st, o) = s
        .post(
            0,
            "/api/v1/orders",
            json!({"market": "BTC-USD", "side": "buy", "price": "30000.00", "size": "0.0100",
                   "client_order_id": "11111111-2222-3333-4444-555555555555"}),
        )
        .await;
    assert_eq!(st, 200, "{o}");
    let id = o["id"].as_str().unwrap().to_owned();
    place(&s, 1, "sell", "30000.00", "0.0040").await;
    let received = next(&mut ws).await;
    assert_eq!(received["type"], "received", "{received}");
    assert_eq!(received["order_id"], id);
    assert_eq!(received["order_type"], "limit");
    assert_eq!(received["size"], "0.01000000");
    assert_eq!(received["price"], "30000.000000");
    assert_eq!(received["side"], "buy");
    assert_eq!(received["client_oid"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(received["user_id"], s.users[0].id.0.to_string());
    let open = next(&mut ws).await;
    assert_eq!(open["type"], "open", "{open}");
    assert_eq!(open["remaining_size"], "0.01000000");
    let m = next(&mut ws).await;
    assert_eq!(m["type"], "match", "{m}");
    assert_eq!(m["maker_order_id"], id);
    assert_eq!(m["size"], "0.00400000");
    assert_eq!(m["maker_user_id"], s.users[0].id.0.to_string());
    assert!(m["maker_fee_rate"].as_str().unwrap().starts_with("0."), "{m}");
    assert!(m.get("taker_fee_rate").is_none());
    // The full channel: every message of the product in sequence, nobody's user id or client
    // order id but one's own.
    let mut seq = None;
    let mut types = Vec::new();
    while types.len() < 5 {
        let v = next(&mut full).await;
        let n = v["sequence"].as_u64().unwrap();
        if let Some(prev) = seq {
            assert_eq!(n, prev + 1, "a gap: {v}");
        }
        seq = Some(n);
        if v["type"] == "received" && v["order_id"] == id {
            assert!(v.get("client_oid").is_none() && v.get("user_id").is_none(), "{v}");
        }
        types.push(v["type"].as_str().unwrap().to_owned());
    }
    // User 0's buy: received, open; user 1's sell: received, match, done (the maker's
    // remainder rests unchanged: kinko sends no `change`).
    assert_eq!(types, ["received", "open", "received", "match", "done"]);
    // Cancelling the rest: done, canceled, with what was left.
    let (st, _) = s
        .send(
            reqwest::Method::DELETE,
            Some(0),
            &format!("/api/v1/orders/{id}"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let done = next_of(&mut ws, "done").await;
    assert_eq!(done["order_id"], id);
    assert_eq!(done["reason"], "canceled");
    assert_eq!(done["remaining_size"], "0.00600000");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_answered_with_errors_and_change_nothing() {
    let s = TestServer::start(1).await;
    let mut ws = connect(&s).await;
    for (msg, code, reason) in [
        ("not json", "INVALID_JSON", "not JSON"),
        (r#"{"type":"hello"}"#, "INVALID_PARAMETER", "unknown message type"),
        (
            r#"{"type":"subscribe","product_ids":["BTC-USD"]}"#,
            "INVALID_PARAMETER",
            "No channels provided",
        ),
        (
            r#"{"type":"subscribe","product_ids":["BTC-USD"],"channels":["level3"]}"#,
            "INVALID_PARAMETER",
            "level3 is not a valid channel",
        ),
        (
            r#"{"type":"subscribe","product_ids":["NOPE-USD"],"channels":["level2"]}"#,
            "MARKET_NOT_FOUND",
            "NOPE-USD is not a valid product",
        ),
        (
            r#"{"type":"subscribe","channels":["matches"]}"#,
            "INVALID_PARAMETER",
            "No product ids",
        ),
    ] {
        ws.send(Message::text(msg)).await.unwrap();
        let e = next(&mut ws).await;
        assert_eq!(e["type"], "error", "{msg}: {e}");
        assert_eq!(e["message"], "Failed to subscribe", "{msg}: {e}");
        assert_eq!(e["code"], code, "{msg}: {e}");
        assert!(e["reason"].as_str().unwrap().contains(reason), "{msg}: {e}");
    }
    // Still open, still nothing subscribed.
    send(
        &mut ws,
        json!({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["heartbeat"]}),
    )
    .await;
    assert_eq!(
        next(&mut ws).await["channels"],
        json!([{"name": "heartbeat", "product_ids": ["BTC-USD"]}])
    );
    s.stop().await;
}

/// `n` resting buys at distinct prices, then their cancels: 2 × `n` level-2 changes, submitted
/// to the engine directly.
async fn book_changes(s: &TestServer, n: u64, from: u64) {
    let mut all = Vec::new();
    for k in 0..n {
        all.push(s.gateway.submit(Command::PlaceOrder(PlaceOrder {
            user: UserId(1),
            market: MarketId(0),
            client_id: None,
            side: Side::Buy,
            order_type: OrderType::Limit {
                price: Amount(u128::from(27_000 + (from + k) % 2_000) * 1_000_000),
                tif: TimeInForce::Gtc,
            },
            qty: Some(Amount(10_000)),
            stp: Stp::CancelNewest,
        })));
    }
    let mut ids: Vec<OrderId> = Vec::new();
    for r in futures_util::future::join_all(all).await {
        match r.unwrap().reply {
            Ok(Reply::OrderPlaced(p)) => ids.push(p.order.id),
            other => panic!("{other:?}"),
        }
    }
    let cancels = ids.into_iter().map(|order| {
        s.gateway.submit(Command::CancelOrder {
            user: UserId(1),
            order: OrderRef::Id(order),
        })
    });
    for r in futures_util::future::join_all(cancels).await {
        assert!(r.unwrap().reply.is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_gets_a_fresh_snapshot_instead_of_back_pressure() {
    let mut config = ApiConfig::default();
    config.ws.queue_messages = 4;
    config.ws.write_stall = Duration::from_secs(60);
    let s = TestServer::start_with(1, config).await;
    let mut ws = connect_small(&feed_url(&s), &s.base).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["level2"]}),
    )
    .await;
    assert_eq!(next(&mut ws).await["type"], "subscriptions");
    let mut book = Book::new();
    apply(&mut book, &next(&mut ws).await);
    // Far more changes than the queue and the socket buffers hold, while the client reads
    // nothing: the order entry never waits for it.
    let started = std::time::Instant::now();
    let mut placed = 0;
    for round in 0..20 {
        book_changes(&s, 100, round * 100).await;
        placed += 200;
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    // Now it reads: updates, then a fresh snapshot (the dropped updates' replacement), and the
    // book it builds is the server's.
    let want = rest_book(&s).await;
    let mut snapshots = 0;
    let mut updates = 0;
    let mut seq = 0;
    while book != want || updates + snapshots == 0 {
        let v = next(&mut ws).await;
        if v["type"] == "snapshot" {
            snapshots += 1;
        } else {
            updates += 1;
            if seq != 0 {
                assert_eq!(
                    v["sequence"].as_u64().unwrap(),
                    seq + 1,
                    "a gap without a snapshot"
                );
            }
        }
        seq = v["sequence"].as_u64().unwrap();
        apply(&mut book, &v);
    }
    assert!(snapshots >= 1, "no fresh snapshot after {placed} changes");
    assert!(updates < placed, "every update was sent: {updates}");
    assert_eq!(s.gateway.metrics.ws_slow_disconnects.load(Ordering::Relaxed), 0);
    s.stop().await;
}

/// A client that stops reading while trades flow gets `SLOW_CONSUMER` and a close within a
/// bounded time, on either feed.
async fn stuck_client(native: bool) {
    let mut config = ApiConfig::default();
    config.ws.queue_wait = Duration::from_secs(60);
    config.ws.write_stall = Duration::from_millis(300);
    // Time for the client below to notice and drain what was sent before the last words.
    config.ws.final_write = Duration::from_secs(30);
    let s = TestServer::start_with(2, config).await;
    let g = s.gateway.clone();
    let (url, sub) = if native {
        (
            format!("{}/api/v1/ws", s.base.replace("http://", "ws://")),
            json!({"type": "subscribe", "channels": ["level2", "trades"], "markets": ["BTC-USD"]}),
        )
    } else {
        (
            feed_url(&s),
            json!({"type": "subscribe", "channels": ["level2", "matches"], "product_ids": ["BTC-USD"]}),
        )
    };
    let mut ws = connect_small(&url, &s.base).await;
    send(&mut ws, sub).await;
    assert_eq!(next(&mut ws).await["type"], "subscriptions");
    // From here on the client reads nothing while user 1 trades with user 2.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut rounds = 0;
    while g.metrics.ws_slow_disconnects.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no slow-consumer disconnect after {rounds} rounds"
        );
        trade_burst(&g, 100, 1 + rounds % 2).await;
        rounds += 1;
    }
    // It reads again: what was sent before the cut, then SLOW_CONSUMER, then the close.
    let mut slow = false;
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let m = tokio::time::timeout_at(until, ws.next())
            .await
            .expect("not closed in time");
        match m {
            Some(Ok(Message::Text(t))) => {
                if t.as_str().contains(r#""type":"error""#) {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_eq!(v["code"], "SLOW_CONSUMER", "{v}");
                    slow = true;
                }
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => {}
        }
    }
    assert!(slow, "closed without SLOW_CONSUMER");
    tokio::time::timeout(WAIT, s.gateway.ws.drained()).await.unwrap();
    assert_eq!(g.metrics.ws_slow_disconnects.load(Ordering::Relaxed), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_coinbase_feed_client_gets_slow_consumer_then_a_close() {
    stuck_client(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_native_client_gets_slow_consumer_then_a_close() {
    stuck_client(true).await;
}

/// A quiet connection sees pings; one that answers nothing, not even a pong, is closed with
/// `SLOW_CONSUMER`.
async fn pings(native: bool) {
    let mut config = ApiConfig::default();
    config.ws.ping_every = Duration::from_millis(200);
    config.ws.pong_wait = Duration::from_millis(1_500);
    let s = TestServer::start_with(1, config).await;
    let url = if native {
        format!("{}/api/v1/ws", s.base.replace("http://", "ws://"))
    } else {
        feed_url(&s)
    };
    // A client that reads answers the pings (tungstenite replies as it reads) and stays.
    let mut alive = tokio_tungstenite::connect_async(&url).await.unwrap().0;
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(2_500);
    while let Ok(m) = tokio::time::timeout_at(until, alive.next()).await {
        match m {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 5, "{pings} pings in 2.5 s");
    // A client that reads nothing (so answers nothing) for longer than pong_wait.
    // By hand: a client library would answer the pings as soon as it reads.
    let path = if native { "/api/v1/ws" } else { "/ws-feed" };
    let mut silent = tokio::net::TcpStream::connect(s.base.strip_prefix("http://").unwrap())
        .await
        .unwrap();
    silent
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut bytes = Vec::new();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    tokio::time::timeout(WAIT, silent.read_to_end(&mut bytes))
        .await
        .expect("not closed in time")
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let slow = text
        .find("SLOW_CONSUMER")
        .unwrap_or_else(|| panic!("no SLOW_CONSUMER: {text:?}"));
    // The close frame (FIN + opcode 8) follows it.
    assert!(
        bytes[slow..].contains(&0x88),
        "no close frame after SLOW_CONSUMER: {text:?}"
    );
    drop(alive);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_coinbase_feed_connections_are_pinged_and_a_silent_client_is_closed() {
    pings(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_native_connections_are_pinged_and_a_silent_client_is_closed() {
    pings(true).await;
}
