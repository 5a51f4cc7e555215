//! The WebSocket endpoint `/api/v1/ws` against a real server: level-2 snapshot + updates,
//! trades / ticker / candles, private channels, bad messages, slow consumers, limits, shutdown.

use crate::harness::{TestServer, BTC};
use futures_util::{SinkExt, StreamExt};
use kinko_api::{ApiConfig, AppState};
use kinko_core::book::{Side, Stp, TimeInForce};
use kinko_core::engine::{Command, Reply};
use kinko_core::identity::Action;
use kinko_core::market::MarketId;
use kinko_core::trading::{OrderType, PlaceOrder};
use kinko_core::{Amount, UserId};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) const WAIT: Duration = Duration::from_secs(10);

fn ws_url(s: &TestServer) -> String {
    format!("{}/api/v1/ws", s.base.replace("http://", "ws://"))
}

async fn connect(s: &TestServer) -> Ws {
    tokio_tungstenite::connect_async(ws_url(s)).await.unwrap().0
}

pub(crate) async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next JSON message (control frames skipped); panics on close or after `WAIT`.
pub(crate) async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no message in time")
            .expect("connection ended")
            .expect("read failed");
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Skips messages until one of type `ty`.
pub(crate) async fn next_of(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let v = next(ws).await;
        if v["type"] == ty {
            return v;
        }
    }
}

/// Reads until the server closes; returns the close code if it sent one.
pub(crate) async fn closed(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("not closed in time")
        {
            Some(Ok(Message::Close(f))) => return f.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
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

pub(crate) fn is_zero(size: &str) -> bool {
    size.bytes().all(|b| b == b'0' || b == b'.')
}

type Book = BTreeMap<(String, String), (String, String)>;

/// `(side, price) → (size, orders)` of a snapshot (REST or WebSocket).
fn book_of(v: &Value) -> Book {
    let mut b = Book::new();
    for (key, side) in [("bids", "buy"), ("asks", "sell")] {
        for l in v[key].as_array().unwrap() {
            let l: Vec<String> = l
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_owned())
                .collect();
            b.insert((side.to_owned(), l[0].clone()), (l[1].clone(), l[2].clone()));
        }
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level2_snapshot_and_updates_rebuild_the_rest_book() {
    let s = TestServer::start(3).await;
    for (user, side, price) in [
        (0, "buy", "29900.00"),
        (0, "buy", "29950.00"),
        (0, "buy", "29990.00"),
        (1, "sell", "30010.00"),
        (1, "sell", "30050.00"),
        (1, "sell", "30100.00"),
    ] {
        place(&s, user, side, price, "0.0100").await;
    }
    // Traffic runs while the client subscribes, so the snapshot is taken between changes.
    let traffic = {
        let client = s.client.clone();
        let url = s.url("/api/v1/orders");
        let tokens: Vec<String> = s.users.iter().map(|u| u.token.clone()).collect();
        tokio::spawn(async move {
            let post = |user: usize, side: &'static str, price: String, size: &'static str| {
                let (client, url, token) = (client.clone(), url.clone(), tokens[user].clone());
                async move {
                    let r = client
                        .post(url)
                        .bearer_auth(token)
                        .json(&json!({"market": "BTC-USD", "side": side, "price": price, "size": size}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    r.json::<Value>().await.unwrap()
                }
            };
            for round in 0..6u32 {
                let mut all = Vec::new();
                for k in 0..5u32 {
                    all.push(post(
                        0,
                        "buy",
                        format!("{}.00", 29_800 + round * 10 + k),
                        "0.0020",
                    ));
                    all.push(post(
                        1,
                        "sell",
                        format!("{}.00", 30_200 + round * 10 + k),
                        "0.0030",
                    ));
                }
                futures_util::future::join_all(all).await;
            }
        })
    };
    let mut ws = connect(&s).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "channels": ["level2"], "markets": ["BTC-USD"]}),
    )
    .await;
    let ack = next(&mut ws).await;
    assert_eq!(ack["type"], "subscriptions", "{ack}");
    assert_eq!(
        ack["channels"],
        json!([{"name": "level2", "markets": ["BTC-USD"]}])
    );
    let snap = next(&mut ws).await;
    assert_eq!(snap["type"], "level2_snapshot", "{snap}");
    assert_eq!(snap["market"], "BTC-USD");
    let mut seq = snap["sequence"].as_u64().unwrap();
    let mut book = book_of(&snap);
    traffic.await.unwrap();
    // Surely after the snapshot: a sweep through several ask levels (one command, one update
    // with many changes), a cancel and a sell into the bids.
    let sweep = place(&s, 2, "buy", "30100.00", "0.0250").await;
    assert_eq!(sweep["status"], "filled", "{sweep}");
    let resting = place(&s, 0, "buy", "29000.00", "0.0100").await;
    let id = resting["id"].as_str().unwrap();
    let (st, body) = s
        .send(
            reqwest::Method::DELETE,
            Some(0),
            &format!("/api/v1/orders/{id}"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    place(&s, 2, "sell", "29950.00", "0.0150").await;
    s.gateway.caught_up().await.unwrap();
    let (st, rest) = s.get(None, "/api/v1/markets/BTC-USD/book?depth=1000").await;
    assert_eq!(st, 200, "{rest}");
    let want_seq = rest["sequence"].as_u64().unwrap();
    assert!(want_seq > seq, "the traffic changed the book after the snapshot");
    let mut widest = 0;
    while seq < want_seq {
        let u = next(&mut ws).await;
        assert_eq!(u["type"], "level2_update", "{u}");
        assert_eq!(u["market"], "BTC-USD");
        let n = u["sequence"].as_u64().unwrap();
        assert_eq!(n, seq + 1, "updates are consecutive");
        seq = n;
        let changes = u["changes"].as_array().unwrap();
        assert!(!changes.is_empty());
        widest = widest.max(changes.len());
        for c in changes {
            let c: Vec<String> = c
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_owned())
                .collect();
            let key = (c[0].clone(), c[1].clone());
            if is_zero(&c[2]) {
                assert_eq!(c[3], "0");
                book.remove(&key);
            } else {
                book.insert(key, (c[2].clone(), c[3].clone()));
            }
        }
    }
    assert!(widest >= 3, "the sweep's level changes come in one update");
    assert_eq!(book, book_of(&rest));
    // Nothing more is pending: the next message answers a ping.
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await, json!({"type": "pong"}));
    // Resubscribing gives a fresh snapshot equal to the REST book.
    send(
        &mut ws,
        json!({"type": "subscribe", "channels": ["level2"], "markets": ["BTC-USD"]}),
    )
    .await;
    let again = next_of(&mut ws, "level2_snapshot").await;
    assert_eq!(again["sequence"], rest["sequence"]);
    assert_eq!(book_of(&again), book_of(&rest));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trades_ticker_and_candles_follow_trades() {
    let s = TestServer::start(2).await;
    let mut ws = connect(&s).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "channels": ["trades", "ticker", "candles"], "markets": ["BTC-USD", "ETH-USD"]}),
    )
    .await;
    let ack = next(&mut ws).await;
    assert_eq!(ack["type"], "subscriptions");
    assert_eq!(ack["channels"].as_array().unwrap().len(), 3, "{ack}");
    // A ticker per market on subscribe.
    let t1 = next(&mut ws).await;
    let t2 = next(&mut ws).await;
    assert_eq!(
        (t1["type"].as_str(), t2["type"].as_str()),
        (Some("ticker"), Some("ticker"))
    );
    assert_eq!(t1["last"], Value::Null);
    place(&s, 1, "sell", "30000.00", "0.0200").await;
    let taker = place(&s, 0, "buy", "30000.00", "0.0150").await;
    assert_eq!(taker["status"], "filled");
    let trade = next(&mut ws).await;
    assert_eq!(trade["type"], "trade", "{trade}");
    assert_eq!(trade["market"], "BTC-USD");
    assert_eq!(trade["trade_id"], 1);
    assert_eq!(trade["price"], "30000.000000");
    assert_eq!(trade["size"], "0.01500000");
    assert_eq!(trade["side"], "buy");
    assert!(trade["time"].as_str().unwrap().ends_with('Z'));
    let ticker = next(&mut ws).await;
    assert_eq!(ticker["type"], "ticker", "{ticker}");
    assert_eq!(ticker["market"], "BTC-USD");
    assert_eq!(ticker["last"], "30000.000000");
    assert_eq!(ticker["best_ask"], "30000.000000");
    assert_eq!(ticker["volume_24h"], "0.01500000");
    let candle = next(&mut ws).await;
    assert_eq!(candle["type"], "candle", "{candle}");
    assert_eq!(candle["market"], "BTC-USD");
    assert_eq!(candle["granularity"], 60);
    assert_eq!(candle["close"], "30000.000000");
    assert_eq!(candle["volume"], "0.01500000");
    assert_eq!(candle["trades"], 1);
    let (_, rest) = s
        .get(None, "/api/v1/markets/BTC-USD/candles?granularity=60")
        .await;
    assert_eq!(rest.as_array().unwrap().last().unwrap()["start"], candle["start"]);
    // Unsubscribed markets and channels stay quiet.
    send(
        &mut ws,
        json!({"type": "unsubscribe", "channels": ["ticker", "candles"]}),
    )
    .await;
    let ack = next(&mut ws).await;
    assert_eq!(
        ack["channels"],
        json!([{"name": "trades", "markets": ["BTC-USD", "ETH-USD"]}])
    );
    place(&s, 0, "buy", "30000.00", "0.0050").await;
    let trade = next(&mut ws).await;
    assert_eq!(trade["type"], "trade", "{trade}");
    assert_eq!(trade["trade_id"], 2);
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
    s.stop().await;
}

/// Reads `ws` until an `order` message with `order_id` = `marker` and status `open` and then a
/// `balance` (the end of the marker's batch); returns everything read.
async fn until_marker(ws: &mut Ws, marker: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut open = false;
    loop {
        let v = next(ws).await;
        let done = open && v["type"] == "balance";
        if v["type"] == "order" && v["order_id"] == marker && v["status"] == "open" {
            open = true;
        }
        seen.push(v);
        if done {
            return seen;
        }
    }
}

fn last_balance(msgs: &[Value], asset: &str) -> Value {
    msgs.iter()
        .rev()
        .find(|m| m["type"] == "balance" && m["asset"] == asset)
        .cloned()
        .unwrap_or_else(|| panic!("no {asset} balance"))
}

async fn rest_balance(s: &TestServer, user: usize, asset: &str) -> Value {
    let (_, b) = s.get(Some(user), "/api/v1/balances").await;
    b.as_array()
        .unwrap()
        .iter()
        .find(|x| x["asset"] == asset)
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_channels_need_auth_and_carry_only_the_callers_data() {
    let s = TestServer::start(2).await;
    // The treasury quorum that whitelists the withdrawal address below, made before anyone
    // listens.
    s.quorum().await;
    let mut a = connect(&s).await;
    let private = json!({"type": "subscribe", "channels": ["orders", "fills", "balances", "withdrawals"]});
    send(&mut a, private.clone()).await;
    let e = next(&mut a).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("UNAUTHORIZED")),
        "{e}"
    );
    send(&mut a, json!({"type": "auth", "token": "nonsense"})).await;
    assert_eq!(next(&mut a).await["code"], "UNAUTHORIZED");
    let key_id = s.users[0].token.split_once('.').unwrap().0.to_owned();
    send(
        &mut a,
        json!({"type": "auth", "token": format!("{key_id}.wrong")}),
    )
    .await;
    assert_eq!(next(&mut a).await["code"], "UNAUTHORIZED");
    // Another user's key is not a way in either.
    let other = s.users[1].token.split_once('.').unwrap().1;
    send(
        &mut a,
        json!({"type": "auth", "token": format!("{key_id}.{other}")}),
    )
    .await;
    assert_eq!(next(&mut a).await["code"], "UNAUTHORIZED");
    send(&mut a, json!({"type": "auth", "token": s.users[0].token})).await;
    let ok = next(&mut a).await;
    assert_eq!(ok, json!({"type": "authenticated", "key_id": key_id}));
    send(&mut a, json!({"type": "auth", "token": s.users[1].token})).await;
    assert_eq!(next(&mut a).await["code"], "ALREADY_AUTHENTICATED");
    send(&mut a, private.clone()).await;
    let ack = next(&mut a).await;
    assert_eq!(
        ack["channels"],
        json!([{"name": "orders"}, {"name": "fills"}, {"name": "balances"}, {"name": "withdrawals"}])
    );
    let mut b = connect(&s).await;
    send(&mut b, json!({"type": "auth", "token": s.users[1].token})).await;
    assert_eq!(next(&mut b).await["type"], "authenticated");
    send(&mut b, private).await;
    assert_eq!(next(&mut b).await["type"], "subscriptions");

    // B's resting sell is taken by A; A withdraws; then one marker order each.
    let b1 = place(&s, 1, "sell", "30000.00", "0.0100").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a1 = place(&s, 0, "buy", "30000.00", "0.0100").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let addr = kinko_core::wallet::AddressId(
        crate::native::usable_address(&s, UserId(1), &s.btc_usd_address.clone()).await,
    );
    let Reply::Withdrawal(w) = s
        .gateway
        .submit(Command::RequestWithdrawal {
            user: UserId(1),
            address: addr,
            amount: Amount(10_000_000),
            client_id: None,
            via: s.users[0].via_session(),
            proof: s.users[0].proof(
                &Action::Withdraw {
                    user: UserId(1),
                    asset: BTC,
                    address_id: addr.0,
                    destination: s.btc_usd_address.clone(),
                    amount: Amount(10_000_000),
                    client_id: None,
                },
                &s.origin,
            ),
        })
        .await
        .unwrap()
        .reply
        .unwrap()
    else {
        panic!("withdrawal")
    };
    let a2 = place(&s, 0, "buy", "29000.00", "0.0100").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b2 = place(&s, 1, "sell", "31000.00", "0.0100").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen_a = until_marker(&mut a, &a2).await;
    let seen_b = until_marker(&mut b, &b2).await;

    let orders = |msgs: &[Value]| -> Vec<(String, String)> {
        msgs.iter()
            .filter(|m| m["type"] == "order")
            .map(|m| {
                (
                    m["order_id"].as_str().unwrap().to_owned(),
                    m["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pair = |id: &str, st: &str| (id.to_owned(), st.to_owned());
    assert_eq!(
        orders(&seen_a),
        vec![
            pair(&a1, "received"),
            pair(&a1, "filled"),
            pair(&a2, "received"),
            pair(&a2, "open")
        ]
    );
    assert_eq!(
        orders(&seen_b),
        vec![
            pair(&b1, "received"),
            pair(&b1, "open"),
            pair(&b1, "filled"),
            pair(&b2, "received"),
            pair(&b2, "open")
        ]
    );
    let fills = |msgs: &[Value]| -> Vec<(String, String)> {
        msgs.iter()
            .filter(|m| m["type"] == "fill")
            .map(|m| {
                (
                    m["order_id"].as_str().unwrap().to_owned(),
                    m["liquidity"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(fills(&seen_a), vec![pair(&a1, "taker")]);
    assert_eq!(fills(&seen_b), vec![pair(&b1, "maker")]);
    let filled = seen_a
        .iter()
        .find(|m| m["type"] == "order" && m["status"] == "filled")
        .unwrap();
    assert_eq!(filled["filled_size"], "0.01000000");
    assert_eq!(filled["executed_value"], "300.000000");
    assert_eq!(filled["side"], "buy");
    let withdrawals: Vec<&Value> = seen_a.iter().filter(|m| m["type"] == "withdrawal").collect();
    assert_eq!(withdrawals.len(), 1);
    assert_eq!(withdrawals[0]["id"], w.id.0.to_string());
    assert_eq!(withdrawals[0]["status"], "requested");
    assert!(seen_b.iter().all(|m| m["type"] != "withdrawal"));
    // Each side's balances are its own, as REST reports them.
    s.gateway.caught_up().await.unwrap();
    for (seen, user) in [(&seen_a, 0), (&seen_b, 1)] {
        for asset in ["BTC", "USD"] {
            let ws_b = last_balance(seen, asset);
            let rest = rest_balance(&s, user, asset).await;
            for f in ["total", "available", "hold"] {
                assert_eq!(ws_b[f], rest[f], "user {user} {asset} {f}");
            }
        }
    }
    assert_ne!(
        last_balance(&seen_a, "BTC")["total"],
        last_balance(&seen_b, "BTC")["total"]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_errors_and_the_connection_stays_usable() {
    let s = TestServer::start(1).await;
    let mut ws = connect(&s).await;
    for (msg, code) in [
        ("hello".to_owned(), "INVALID_JSON"),
        (json!({"type": "dance"}).to_string(), "INVALID_PARAMETER"),
        (json!({"channels": ["trades"]}).to_string(), "INVALID_PARAMETER"),
        (
            json!({"type": "subscribe", "channels": ["nope"], "markets": ["BTC-USD"]}).to_string(),
            "INVALID_PARAMETER",
        ),
        (
            json!({"type": "subscribe", "channels": [], "markets": ["BTC-USD"]}).to_string(),
            "INVALID_PARAMETER",
        ),
        (
            json!({"type": "subscribe", "channels": ["level2"]}).to_string(),
            "INVALID_PARAMETER",
        ),
        (
            json!({"type": "subscribe", "channels": ["level2"], "markets": ["BTC-USD", "DOGE-USD"]})
                .to_string(),
            "MARKET_NOT_FOUND",
        ),
        (
            json!({"type": "subscribe", "channels": ["fills"]}).to_string(),
            "UNAUTHORIZED",
        ),
        (json!({"type": "auth"}).to_string(), "INVALID_PARAMETER"),
    ] {
        ws.send(Message::text(msg.clone())).await.unwrap();
        let e = next(&mut ws).await;
        assert_eq!(e["type"], "error", "{msg}: {e}");
        assert_eq!(e["code"], code, "{msg}: {e}");
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    // A refused subscribe changed nothing (DOGE-USD spoiled the whole message).
    send(&mut ws, json!({"type": "unsubscribe", "channels": ["level2"]})).await;
    assert_eq!(
        next(&mut ws).await,
        json!({"type": "subscriptions", "channels": []})
    );
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await, json!({"type": "pong"}));
    send(
        &mut ws,
        json!({"type": "subscribe", "channels": ["trades"], "markets": ["BTC-USD"]}),
    )
    .await;
    let ack = next(&mut ws).await;
    assert_eq!(
        ack["channels"],
        json!([{"name": "trades", "markets": ["BTC-USD"]}])
    );
    // Binary frames and oversized frames end the connection.
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(closed(&mut ws).await, Some(CloseCode::Unsupported));
    let mut big = connect(&s).await;
    let _ = big.send(Message::text("x".repeat(20 * 1024))).await;
    let _ = closed(&mut big).await;
    // Both are gone from the count.
    tokio::time::timeout(WAIT, s.gateway.ws.drained()).await.unwrap();
    assert_eq!(s.gateway.metrics.ws_connections.load(Ordering::Relaxed), 0);
    s.stop().await;
}

fn order(user: u64, side: Side) -> Command {
    Command::PlaceOrder(PlaceOrder {
        user: UserId(user),
        market: MarketId(0),
        client_id: None,
        side,
        order_type: OrderType::Limit {
            price: Amount(30_000_000_000),
            tif: TimeInForce::Gtc,
        },
        qty: Some(Amount(10_000)),
        stp: Stp::CancelNewest,
    })
}

/// `pairs` sells of `seller` and buys of the other user (1 or 2) at one price, submitted
/// concurrently.
pub(crate) async fn trade_burst(g: &AppState, pairs: usize, seller: u64) {
    let mut all = Vec::new();
    for _ in 0..pairs {
        all.push(g.submit(order(seller, Side::Sell)));
        all.push(g.submit(order(3 - seller, Side::Buy)));
    }
    for r in futures_util::future::join_all(all).await {
        let r = r.unwrap().reply;
        assert!(r.is_ok(), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_disconnected_as_a_slow_consumer() {
    let mut config = ApiConfig::default();
    config.ws.queue_messages = 8;
    config.ws.queue_wait = Duration::from_millis(50);
    let s = TestServer::start_with(2, config).await;
    let g = s.gateway.clone();
    // A burst far larger than the queue is fine for a client that reads.
    let mut reader = connect(&s).await;
    send(
        &mut reader,
        json!({"type": "subscribe", "channels": ["level2", "trades"], "markets": ["BTC-USD"]}),
    )
    .await;
    assert_eq!(next(&mut reader).await["type"], "subscriptions");
    assert_eq!(next(&mut reader).await["type"], "level2_snapshot");
    trade_burst(&g, 100, 1).await;
    let mut trades = 0;
    while trades < 100 {
        if next(&mut reader).await["type"] == "trade" {
            trades += 1;
        }
    }
    assert_eq!(g.metrics.ws_slow_disconnects.load(Ordering::Relaxed), 0);
    reader.close(None).await.unwrap();
    let _ = closed(&mut reader).await;
    // A small receive buffer, so the server's writes back up quickly.
    let addr = s.base.strip_prefix("http://").unwrap().parse().unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4 * 1024).unwrap();
    let stream = sock.connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(ws_url(&s), MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    send(&mut ws, json!({"type": "auth", "token": s.users[0].token})).await;
    assert_eq!(next(&mut ws).await["type"], "authenticated");
    send(
        &mut ws,
        json!({"type": "subscribe", "channels": ["level2", "trades", "ticker", "candles", "orders", "fills", "balances"],
               "markets": ["BTC-USD"]}),
    )
    .await;
    assert_eq!(next(&mut ws).await["type"], "subscriptions");
    // From here on the client reads nothing while user 1 trades with user 2.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut rounds = 0;
    while g.metrics.ws_slow_disconnects.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no slow-consumer disconnect after {rounds} rounds"
        );
        // Turn about, so that nobody runs out of funds however long it takes.
        trade_burst(&g, 50, 1 + rounds % 2).await;
        rounds += 1;
    }
    // The connection's tasks and buffers are gone.
    tokio::time::timeout(WAIT, s.gateway.ws.drained()).await.unwrap();
    assert_eq!(g.metrics.ws_connections.load(Ordering::Relaxed), 0);
    assert_eq!(g.metrics.ws_slow_disconnects.load(Ordering::Relaxed), 1);
    let (_, metrics) = s.get(None, "/metrics").await;
    assert!(metrics
        .as_str()
        .unwrap()
        .contains("kinko_ws_slow_disconnects_total 1"));
    // The client finds what was sent before the cut, then the end of the connection.
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("not closed in time")
        {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "error" {
                    assert_eq!(v["code"], "SLOW_CONSUMER");
                }
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => {}
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_closed_on_shutdown() {
    let mut config = ApiConfig::default();
    config.ws.connections_max = 2;
    let s = TestServer::start_with(1, config).await;
    let mut one = connect(&s).await;
    let mut two = connect(&s).await;
    match tokio_tungstenite::connect_async(ws_url(&s)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 503);
            let body = String::from_utf8(r.body().clone().unwrap_or_default()).unwrap();
            assert!(body.contains("TOO_MANY_CONNECTIONS"), "{body}");
        }
        other => panic!("a third connection was not refused: {:?}", other.map(|_| ())),
    }
    // A plain GET is told what the endpoint wants.
    let (st, body) = s.get(None, "/api/v1/ws").await;
    assert_ne!(st, 200);
    assert_eq!(body["code"], "WEBSOCKET_EXPECTED", "{body}");
    // Closing one makes room.
    one.close(None).await.unwrap();
    let _ = closed(&mut one).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.gateway.ws.connections() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed connection is still counted"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut three = connect(&s).await;
    for ws in [&mut two, &mut three] {
        send(
            ws,
            json!({"type": "subscribe", "channels": ["level2"], "markets": ["BTC-USD"]}),
        )
        .await;
        assert_eq!(next(ws).await["type"], "subscriptions");
        assert_eq!(next(ws).await["type"], "level2_snapshot");
    }
    // Shutdown closes both with 1001, well within the shutdown timeout.
    let g = s.gateway.clone();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), s.stop())
        .await
        .expect("shutdown hung");
    assert!(started.elapsed() < g.config.shutdown_timeout);
    assert_eq!(g.ws.connections(), 0);
    assert_eq!(g.metrics.ws_connections.load(Ordering::Relaxed), 0);
    assert_eq!(closed(&mut two).await, Some(CloseCode::Away));
    assert_eq!(closed(&mut three).await, Some(CloseCode::Away));
}

// ---------------------------------------------------------------------------------------------
// Authentication follows REST's rules, at `auth` and for as long as the connection streams.

/// A native key of user `user` with `view` and `trade`, usable from `allow` (none: anywhere).
async fn view_key(s: &TestServer, user: UserId, allow: &[&str]) -> String {
    let mut k = kinko_api::vault::new_native_key(user, "ws test", kinko_core::keys::Permissions::ALL);
    k.record.permissions.withdraw = false;
    k.record.ip_allowlist = allow.iter().map(|a| (*a).to_owned()).collect();
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

/// Reads until an `error` with `code` arrives, within `WAIT`; the messages before it must carry
/// nothing private after the point the caller cares about (checked by the caller).
async fn error_of(ws: &mut Ws, code: &str) -> Value {
    let e = next_of(ws, "error").await;
    assert_eq!(e["code"], code, "{e}");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refuses_what_rest_refuses_ip_allowlist_and_frozen_owner() {
    let s = TestServer::start(2).await;
    let elsewhere = view_key(&s, s.users[0].id, &["10.0.0.1"]).await;
    let (st, r) = s
        .request(reqwest::Method::GET, "/api/v1/balances", Some(&elsewhere), None)
        .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (403, Some("API_KEY_IP_NOT_ALLOWED")),
        "REST: {r}"
    );
    let mut a = connect(&s).await;
    send(&mut a, json!({"type": "auth", "token": elsewhere})).await;
    error_of(&mut a, "API_KEY_IP_NOT_ALLOWED").await;
    send(&mut a, json!({"type": "subscribe", "channels": ["orders"]})).await;
    error_of(&mut a, "UNAUTHORIZED").await;
    // A key usable from here works on the same connection.
    let here = view_key(&s, s.users[0].id, &["127.0.0.1"]).await;
    send(&mut a, json!({"type": "auth", "token": here})).await;
    assert_eq!(next(&mut a).await["type"], "authenticated");

    // A frozen owner: the key is refused, as on REST (a freeze ends the owner's keys).
    let user = s.users[1].id;
    s.gateway
        .submit(Command::Identity(kinko_core::identity::IdentityCommand::Freeze {
            user,
            reason: "test".into(),
        }))
        .await
        .unwrap()
        .reply
        .unwrap();
    let (st, r) = s.get(Some(1), "/api/v1/balances").await;
    assert_eq!((st, r["code"].as_str()), (401, Some("UNAUTHORIZED")), "REST: {r}");
    let mut b = connect(&s).await;
    send(&mut b, json!({"type": "auth", "token": s.users[1].token})).await;
    error_of(&mut b, "UNAUTHORIZED").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_or_frozen_owner_ends_the_private_stream() {
    let s = TestServer::start(2).await;
    let private = json!({"type": "subscribe", "channels": ["orders", "balances"]});
    let revoked = view_key(&s, s.users[0].id, &[]).await;
    let mut a = connect(&s).await;
    send(&mut a, json!({"type": "auth", "token": revoked})).await;
    assert_eq!(next(&mut a).await["type"], "authenticated");
    send(&mut a, private.clone()).await;
    assert_eq!(next(&mut a).await["type"], "subscriptions");
    // User 1 streams with a key of their own and with their session.
    let mut b = connect(&s).await;
    send(&mut b, json!({"type": "auth", "token": s.users[1].token})).await;
    assert_eq!(next(&mut b).await["type"], "authenticated");
    send(&mut b, private.clone()).await;
    assert_eq!(next(&mut b).await["type"], "subscriptions");
    let mut c = connect(&s).await;
    send(&mut c, json!({"type": "auth", "token": s.users[1].session})).await;
    assert_eq!(
        next(&mut c).await,
        json!({"type": "authenticated", "key_id": "session"})
    );
    send(&mut c, private).await;
    assert_eq!(next(&mut c).await["type"], "subscriptions");

    // Revoked through REST (the owner's session): A's private stream ends, A stays connected.
    let id = revoked.split_once('.').unwrap().0;
    let (st, r) = s
        .with_step_up_as(
            &s.users[0],
            &s.users[0].session,
            crate::harness::Factor::Passkey,
            reqwest::Method::DELETE,
            &format!("/api/v1/me/api-keys/{id}"),
            json!({}),
        )
        .await;
    assert_eq!(st, 204, "{r}");
    let started = std::time::Instant::now();
    error_of(&mut a, "UNAUTHORIZED").await;
    assert_eq!(next_of(&mut a, "subscriptions").await["channels"], json!([]));
    assert!(started.elapsed() < WAIT);
    send(&mut a, json!({"type": "ping"})).await;
    assert_eq!(next(&mut a).await["type"], "pong", "still connected, public only");
    // User 0 trades: nothing private reaches A any more.
    place(&s, 0, "buy", "29000.00", "0.0100").await;
    send(&mut a, json!({"type": "ping"})).await;
    assert_eq!(
        next(&mut a).await["type"],
        "pong",
        "no order or balance message first"
    );

    // User 1 frozen: both of their connections lose the private stream.
    s.gateway
        .submit(Command::Identity(kinko_core::identity::IdentityCommand::Freeze {
            user: s.users[1].id,
            reason: "test".into(),
        }))
        .await
        .unwrap()
        .reply
        .unwrap();
    // The freeze ended the key too.
    error_of(&mut b, "UNAUTHORIZED").await;
    assert_eq!(next_of(&mut b, "subscriptions").await["channels"], json!([]));
    let e = next_of(&mut c, "error").await;
    assert_eq!(e["code"], "SESSION_INVALID", "a freeze ends the sessions: {e}");
    assert_eq!(next_of(&mut c, "subscriptions").await["channels"], json!([]));
    s.stop().await;
}

/// A password change ends the user's keys in the engine; a stream authenticated with one of
/// them loses its private channels at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_the_private_streams_of_the_users_keys() {
    let s = TestServer::start(2).await;
    let private = json!({"type": "subscribe", "channels": ["orders", "balances"]});
    let mut streams = Vec::new();
    for i in 0..2 {
        let mut w = connect(&s).await;
        send(&mut w, json!({"type": "auth", "token": s.users[i].token})).await;
        assert_eq!(next(&mut w).await["type"], "authenticated");
        send(&mut w, private.clone()).await;
        assert_eq!(next(&mut w).await["type"], "subscriptions");
        streams.push(w);
    }
    let u = &s.users[0];
    let (st, r) = s
        .with_step_up_as(
            u,
            &u.session,
            crate::harness::Factor::Passkey,
            reqwest::Method::POST,
            "/api/v1/me/password",
            json!({"current_password": u.password, "new_password": "another long password"}),
        )
        .await;
    assert_eq!(st, 204, "{r}");
    let started = std::time::Instant::now();
    error_of(&mut streams[0], "UNAUTHORIZED").await;
    assert_eq!(
        next_of(&mut streams[0], "subscriptions").await["channels"],
        json!([])
    );
    assert!(started.elapsed() < WAIT);
    // The other user's stream goes on.
    send(&mut streams[1], json!({"type": "ping"})).await;
    assert_eq!(next(&mut streams[1]).await["type"], "pong");
    place(&s, 1, "buy", "29000.00", "0.0100").await;
    assert_eq!(next_of(&mut streams[1], "order").await["type"], "order");
    s.stop().await;
}

/// The order messages about `id` until one with status `last`.
async fn statuses_until(ws: &mut Ws, id: &str, last: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let v = next_of(ws, "order").await;
        if v["order_id"] != id {
            continue;
        }
        let done = v["status"] == last;
        seen.push(v);
        if done {
            return seen;
        }
    }
}

/// The private orders channel tells a stop order's life: `pending` with its stop, `triggered`
/// with the last price, then the order's usual messages; and a good-till-time order's
/// `expired` before its `cancelled` (reason `expired`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_good_till_time_orders_in_the_orders_channel() {
    let s = TestServer::start(2).await;
    let mut ws = connect(&s).await;
    send(&mut ws, json!({"type": "auth", "token": s.users[0].token})).await;
    assert_eq!(next(&mut ws).await["type"], "authenticated");
    send(&mut ws, json!({"type": "subscribe", "channels": ["orders"]})).await;
    assert_eq!(next(&mut ws).await["type"], "subscriptions");

    let (st, stop) = s
        .post(
            0,
            "/api/v1/orders",
            json!({"market": "BTC-USD", "side": "sell", "price": "29000", "size": "0.5",
                   "stop_price": "29500"}),
        )
        .await;
    assert_eq!(st, 200, "{stop}");
    let id = stop["id"].as_str().unwrap().to_owned();
    let pending = statuses_until(&mut ws, &id, "pending").await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let p = &pending[0];
    assert_eq!(
        (&p["stop"], &p["stop_price"], &p["price"], &p["size"]),
        (
            &json!("loss"),
            &json!("29500.000000"),
            &json!("29000.000000"),
            &json!("0.50000000")
        ),
        "{p}"
    );
    // A trade at 29,500 triggers it; with no bid left it rests.
    place(&s, 1, "buy", "29500.00", "0.0100").await;
    place(&s, 0, "sell", "29500.00", "0.0100").await;
    let life = statuses_until(&mut ws, &id, "open").await;
    let names: Vec<&str> = life.iter().map(|v| v["status"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["triggered", "received", "open"], "{life:?}");
    assert_eq!(life[0]["last_price"], "29500.000000");

    // Good till a time two seconds ahead.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (st, g) = s
        .post(
            0,
            "/api/v1/orders",
            json!({"market": "BTC-USD", "side": "sell", "price": "31000", "size": "0.01",
                   "time_in_force": "gtt",
                   "expire_time": kinko_api::wire::rfc3339((now_s + 2) * 1_000_000_000)}),
        )
        .await;
    assert_eq!(st, 200, "{g}");
    let gid = g["id"].as_str().unwrap().to_owned();
    let end = statuses_until(&mut ws, &gid, "cancelled").await;
    let names: Vec<&str> = end.iter().map(|v| v["status"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["received", "open", "expired", "cancelled"], "{end:?}");
    assert_eq!(end[3]["cancel_reason"], "expired");
    s.stop().await;
}

/// The scheduling policy (`/proc/.../sched`'s `policy` line: 0 normal, 5 `SCHED_IDLE`) of each
/// thread of this process whose name starts with `prefix`.
#[cfg(target_os = "linux")]
fn policies(prefix: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let sched = std::fs::read_to_string(t.path().join("sched")).unwrap_or_default();
        if let Some(p) = sched
            .lines()
            .find(|l| l.starts_with("policy"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok())
        {
            out.push(p);
        }
    }
    out
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_threads_run_behind_order_entry_and_the_model_thread_does_not() {
    let s = TestServer::start(1).await;
    let mut ws = connect(&s).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "channels": ["level2"], "markets": ["BTC-USD"]}),
    )
    .await;
    let ack = next(&mut ws).await;
    assert_eq!(ack["type"], "subscriptions", "{ack}");
    let snap = next(&mut ws).await;
    assert_eq!(snap["type"], "level2_snapshot", "{snap}");
    const SCHED_IDLE: u32 = 5;
    let fanout = policies("kinko-fanout");
    assert!(!fanout.is_empty(), "no fan-out thread found");
    assert!(
        fanout.iter().all(|p| *p == SCHED_IDLE),
        "fan-out thread policies: {fanout:?}"
    );
    // The threads that take the read model's lock for connections, and those that render and
    // apply batches, keep normal priority: a lock holder is never put behind order entry.
    for name in ["kinko-wsmodel", "kinko-render"] {
        let ps = policies(name);
        assert!(!ps.is_empty(), "no {name} thread found");
        assert!(ps.iter().all(|p| *p == 0), "{name} policies: {ps:?}");
    }
}
