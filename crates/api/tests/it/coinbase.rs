//! The Coinbase-Exchange-compatible surface, spoken to the way ccxt speaks it: requests signed
//! here with CB-ACCESS-* headers over the exact request target and body.

use crate::harness::TestServer;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};

/// base64(HMAC-SHA256(base64decode(secret), timestamp + method + path + body)).
fn sign(secret_b64: &str, ts: &str, method: &str, path: &str, body: &str) -> String {
    let key = STANDARD.decode(secret_b64).unwrap();
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(format!("{ts}{method}{path}{body}").as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Creds<'a> {
    key: &'a str,
    secret: &'a str,
    passphrase: &'a str,
}

fn creds(s: &TestServer, user: usize) -> Creds<'_> {
    let u = &s.users[user];
    Creds {
        key: &u.cb_key,
        secret: &u.cb_secret,
        passphrase: &u.cb_passphrase,
    }
}

async fn send_raw(
    s: &TestServer,
    c: Option<&Creds<'_>>,
    ts: &str,
    method: Method,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let mut r = s
        .client
        .request(method.clone(), s.url(path))
        .header("Content-Type", "application/json");
    if let Some(c) = c {
        r = r
            .header("CB-ACCESS-KEY", c.key)
            .header("CB-ACCESS-SIGN", sign(c.secret, ts, method.as_str(), path, body))
            .header("CB-ACCESS-TIMESTAMP", ts)
            .header("CB-ACCESS-PASSPHRASE", c.passphrase);
    }
    if !body.is_empty() {
        r = r.body(body.to_owned());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    assert!(
        ct.starts_with("application/json"),
        "{method} {path}: content type {ct:?}, body {text}"
    );
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
    if status >= 400 {
        assert!(
            v["message"].is_string() && !v["message"].as_str().unwrap().is_empty(),
            "{method} {path}: error without a message: {status} {v}"
        );
    } else if v.is_object() {
        assert!(
            v.get("message").is_none(),
            "{method} {path}: a success body with `message`: {v}"
        );
    }
    assert!(status < 500, "{method} {path}: {status} {v}");
    assert!(status != 403 && status != 409, "{method} {path}: {status} {v}");
    (status, v)
}

/// A signed request as user `user`.
async fn cb(s: &TestServer, user: usize, method: Method, path: &str, body: &str) -> (u16, Value) {
    let c = creds(s, user);
    send_raw(s, Some(&c), &now_s().to_string(), method, path, body).await
}

async fn cb_get(s: &TestServer, user: usize, path: &str) -> (u16, Value) {
    cb(s, user, Method::GET, path, "").await
}

async fn public(s: &TestServer, path: &str) -> (u16, Value) {
    send_raw(s, None, "", Method::GET, path, "").await
}

async fn order(s: &TestServer, user: usize, body: Value) -> (u16, Value) {
    cb(s, user, Method::POST, "/orders", &body.to_string()).await
}

fn limit(side: &str, price: &str, size: &str) -> Value {
    json!({"type": "limit", "side": side, "product_id": "BTC-USD", "price": price, "size": size})
}

fn assert_iso(v: &Value) {
    let t = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    assert!(
        t.len() >= 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
        "{t}"
    );
}

/// Two trades on BTC-USD: user 1 rests sells, user 0 buys through them.
async fn trade_a_little(s: &TestServer) {
    let (st, o) = order(s, 1, limit("sell", "30000.00", "0.01")).await;
    assert_eq!(st, 200, "{o}");
    let (st, o) = order(s, 1, limit("sell", "30010.50", "0.01")).await;
    assert_eq!(st, 200, "{o}");
    let (st, o) = order(s, 0, limit("buy", "30010.50", "0.015")).await;
    assert_eq!(st, 200, "{o}");
    assert_eq!(o["status"], "done", "{o}");
    assert_eq!(o["done_reason"], "filled", "{o}");
}

#[test]
fn the_signing_helper_matches_the_worked_examples() {
    let secret = "a2lua28tZXhhbXBsZS1zZWNyZXQtMzItYnl0ZXMhISE=";
    assert_eq!(
        sign(
            secret,
            "1700000000",
            "GET",
            "/orders?product_id=BTC-USD&status=done",
            ""
        ),
        "8a0J3G7LH0oJAZHmoaCEMQDnCrQ5AUD9etC62/PWoM0="
    );
    assert_eq!(
        sign(
            secret,
            "1700000000",
            "POST",
            "/orders",
            r#"{"type":"limit","side":"buy","product_id":"BTC-USD","price":"29999.95","size":"0.001"}"#
        ),
        "MuUTfDIkC58DWSyLMr0hO0ao5xBec5qqHbmCs8574PQ="
    );
    assert_eq!(
        sign(
            secret,
            "1700000000",
            "POST",
            "/withdrawals/crypto",
            r#"{"currency":"BTC","amount":0.001,"crypto_address":"bcrt1qexample"}"#
        ),
        "Ke1i7nhhvgPK2n2x9pphLzSre78K6lYsLPIG9LE9NxU="
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_market_data_has_coinbase_shapes() {
    // Many requests in a row, about something else than rate limits.
    let config = crate::harness::without_rate_limits(kinko_api::ApiConfig::default());
    let s = TestServer::start_with(2, config).await;
    trade_a_little(&s).await;

    let (st, products) = public(&s, "/products").await;
    assert_eq!(st, 200);
    let p = products
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "BTC-USD")
        .unwrap()
        .clone();
    assert_eq!(p["base_currency"], "BTC");
    assert_eq!(p["quote_currency"], "USD");
    assert_eq!(p["base_increment"], "0.00010000");
    assert_eq!(p["quote_increment"], "0.010000");
    assert_eq!(p["min_market_funds"], "1.000000");
    assert_eq!(p["base_min_size"], "0.00010000");
    assert_eq!(p["status"], "online");
    assert_eq!(p["margin_enabled"], false);
    assert_eq!(products.as_array().unwrap().len(), 2);
    let (st, one) = public(&s, "/products/BTC-USD").await;
    assert_eq!(st, 200);
    assert_eq!(one, p);
    let (st, e) = public(&s, "/products/DOGE-USD").await;
    assert_eq!((st, e["message"].as_str()), (404, Some("Product not found")));

    let (st, cur) = public(&s, "/currencies").await;
    assert_eq!(st, 200);
    let cur = cur.as_array().unwrap();
    let ids: Vec<&str> = cur.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["BTC", "ETH", "USD"]);
    assert_eq!(cur[0]["max_precision"], "0.00000001");
    assert_eq!(cur[0]["details"]["type"], "crypto");
    assert_eq!(cur[2]["details"]["type"], "fiat");
    assert_eq!(cur[0]["status"], "online");

    // Level 2: user 1's remaining 0.005 @ 30010.50 is the only level.
    let (st, b) = public(&s, "/products/BTC-USD/book?level=2").await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["asks"], json!([["30010.500000", "0.00500000", 1]]));
    assert_eq!(b["bids"], json!([]));
    assert!(b["sequence"].is_u64());
    order(&s, 0, limit("buy", "29000.00", "0.01")).await;
    order(&s, 0, limit("buy", "29000.00", "0.02")).await;
    order(&s, 0, limit("buy", "28999.99", "0.01")).await;
    let (_, b) = public(&s, "/products/BTC-USD/book?level=2").await;
    assert_eq!(
        b["bids"],
        json!([
            ["29000.000000", "0.03000000", 2],
            ["28999.990000", "0.01000000", 1]
        ])
    );
    let (st, b1) = public(&s, "/products/BTC-USD/book?level=1").await;
    assert_eq!(st, 200);
    assert_eq!(b1["bids"], json!([["29000.000000", "0.03000000", 2]]));
    let (_, b0) = public(&s, "/products/BTC-USD/book").await;
    assert_eq!(b0["bids"], b1["bids"], "level 1 is the default");
    let (st, e) = public(&s, "/products/BTC-USD/book?level=3").await;
    assert_eq!(st, 400);
    assert!(e["message"].as_str().unwrap().contains("level 3"), "{e}");
    let (st, _) = public(&s, "/products/BTC-USD/book?level=x").await;
    assert_eq!(st, 400);
    let (st, _) = public(&s, "/products/NOPE-USD/book?level=2").await;
    assert_eq!(st, 404);

    let (st, t) = public(&s, "/products/BTC-USD/ticker").await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["bid"], "29000.000000");
    assert_eq!(t["ask"], "30010.500000");
    assert_eq!(t["price"], "30010.500000");
    assert_eq!(t["size"], "0.00500000");
    assert_eq!(t["volume"], "0.01500000");
    assert!(t["trade_id"].is_u64());
    assert_iso(&t["time"]);

    // Trades, newest first, with the maker's side (both makers sold).
    let (st, tr) = public(&s, "/products/BTC-USD/trades").await;
    assert_eq!(st, 200);
    let tr = tr.as_array().unwrap().clone();
    assert_eq!(tr.len(), 2);
    assert_eq!(tr[0]["price"], "30010.500000");
    assert_eq!(tr[0]["size"], "0.00500000");
    assert_eq!(tr[1]["price"], "30000.000000");
    assert_eq!(tr[1]["size"], "0.01000000");
    for t in &tr {
        assert_eq!(t["side"], "sell");
        assert!(t["trade_id"].is_u64());
        assert_iso(&t["time"]);
        assert!(t.get("order_id").is_none() && t.get("maker_order_id").is_none());
    }
    let (_, one) = public(&s, "/products/BTC-USD/trades?limit=1").await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    let newest = tr[0]["trade_id"].as_u64().unwrap();
    let (_, older) = public(&s, &format!("/products/BTC-USD/trades?after={newest}")).await;
    assert_eq!(older.as_array().unwrap(), &tr[1..]);
    let (st, _) = public(&s, "/products/BTC-USD/trades?limit=0").await;
    assert_eq!(st, 400);

    // Candles: [time, low, high, open, close, volume], JSON numbers, on the bucket start.
    let (st, c) = public(&s, "/products/BTC-USD/candles?granularity=60").await;
    assert_eq!(st, 200, "{c}");
    let rows = c.as_array().unwrap();
    assert!(!rows.is_empty() && rows.len() <= 2, "{c}");
    for r in rows {
        let r = r.as_array().unwrap();
        assert_eq!(r.len(), 6);
        assert!(r.iter().all(Value::is_number), "{c}");
        assert_eq!(r[0].as_u64().unwrap() % 60, 0);
    }
    let total: Vec<String> = rows.iter().map(|r| r[5].to_string()).collect();
    if rows.len() == 1 {
        let r = &rows[0];
        assert_eq!(r[1].to_string(), "30000", "{c}");
        assert_eq!(r[2].to_string(), "30010.5", "{c}");
        assert_eq!(r[3].to_string(), "30000", "{c}");
        assert_eq!(r[4].to_string(), "30010.5", "{c}");
        assert_eq!(total, ["0.015"]);
    } else {
        assert!(rows[0][0].as_u64() > rows[1][0].as_u64(), "newest first: {c}");
    }
    let start = rows[0][0].as_u64().unwrap();
    // Unix seconds are accepted as well as ISO 8601.
    let (st, c2) = public(
        &s,
        &format!(
            "/products/BTC-USD/candles?granularity=60&start={start}&end={}",
            start + 60
        ),
    )
    .await;
    assert_eq!(st, 200, "{c2}");
    assert_eq!(c2.as_array().unwrap()[0], rows[0]);
    let (st, _) = public(
        &s,
        "/products/BTC-USD/candles?granularity=60&start=2024-01-01T00%3A00%3A00.000Z&end=2024-01-01T04%3A59%3A00.000Z",
    )
    .await;
    assert_eq!(st, 200);
    let (st, e) = public(
        &s,
        "/products/BTC-USD/candles?granularity=60&start=2024-01-01T00%3A00%3A00.000Z&end=2024-01-02T00%3A00%3A00.000Z",
    )
    .await;
    assert_eq!(st, 400, "{e}");
    let (st, e) = public(&s, "/products/BTC-USD/candles?granularity=2h").await;
    assert_eq!(st, 400, "{e}");
    let (st, _) = public(&s, "/products/BTC-USD/candles?granularity=7").await;
    assert_eq!(st, 400);

    let (st, t) = public(&s, "/time").await;
    assert_eq!(st, 200);
    assert_iso(&t["iso"]);
    assert!(t["epoch"].is_number());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_show_balances_and_are_private() {
    let s = TestServer::start(2).await;
    let (st, a) = cb_get(&s, 0, "/accounts").await;
    assert_eq!(st, 200, "{a}");
    let a = a.as_array().unwrap().clone();
    assert_eq!(a.len(), 3);
    let usd = a.iter().find(|x| x["currency"] == "USD").unwrap();
    assert_eq!(usd["available"], "1000000.000000");
    assert_eq!(usd["balance"], "1000000.000000");
    assert_eq!(usd["hold"], "0.000000");
    let btc = a.iter().find(|x| x["currency"] == "BTC").unwrap().clone();
    assert_eq!(btc["available"], "10.00000000");
    let ids: std::collections::BTreeSet<&str> = a.iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);

    // A resting buy holds quote.
    let (st, _) = order(&s, 0, limit("buy", "28000.00", "0.5")).await;
    assert_eq!(st, 200);
    let id = usd["id"].as_str().unwrap();
    let (st, one) = cb_get(&s, 0, &format!("/accounts/{id}")).await;
    assert_eq!(st, 200, "{one}");
    assert_eq!(one["currency"], "USD");
    assert_ne!(one["hold"], "0.000000");
    assert_ne!(one["available"], "1000000.000000");
    assert_eq!(one["balance"], "1000000.000000");

    // Ids are stable, and nobody reaches another user's accounts.
    let (_, again) = cb_get(&s, 0, "/accounts").await;
    assert_eq!(again.as_array().unwrap()[0]["id"], a[0]["id"]);
    let (_, theirs) = cb_get(&s, 1, "/accounts").await;
    assert!(theirs
        .as_array()
        .unwrap()
        .iter()
        .all(|x| !ids.contains(x["id"].as_str().unwrap())));
    let (st, e) = cb_get(&s, 1, &format!("/accounts/{id}")).await;
    assert_eq!((st, e["message"].as_str()), (404, Some("NotFound")));
    let (st, _) = cb_get(&s, 1, &format!("/accounts/{id}/transfers")).await;
    assert_eq!(st, 404);
    let (st, _) = cb_get(&s, 0, "/accounts/not-an-account").await;
    assert_eq!(st, 404);

    // Deposits (the harness funding) through the account and through /transfers.
    let btc_id = btc["id"].as_str().unwrap();
    let (st, d) = cb_get(&s, 0, &format!("/accounts/{btc_id}/transfers?type=deposit")).await;
    assert_eq!(st, 200, "{d}");
    let d = d.as_array().unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["type"], "deposit");
    assert_eq!(d[0]["amount"], "10.00000000");
    assert_eq!(d[0]["account_id"], btc["id"]);
    assert!(d[0]["completed_at"].is_string());
    assert!(d[0]["canceled_at"].is_null());
    assert!(d[0]["details"]["crypto_address"].is_string());
    assert_iso(&d[0]["created_at"]);
    let (_, none) = cb_get(&s, 0, &format!("/accounts/{btc_id}/transfers?type=withdraw")).await;
    assert_eq!(none, json!([]));
    let (st, all) = cb_get(&s, 0, "/transfers?type=deposit").await;
    assert_eq!(st, 200);
    assert_eq!(all.as_array().unwrap().len(), 3);
    let (_, lim) = cb_get(&s, 0, "/transfers?limit=2&type=deposit").await;
    assert_eq!(lim.as_array().unwrap().len(), 2);
    let tid = d[0]["id"].as_str().unwrap();
    let (st, one) = cb_get(&s, 0, &format!("/transfers/{tid}")).await;
    assert_eq!((st, &one), (200, &d[0]));
    let (st, _) = cb_get(&s, 1, &format!("/transfers/{tid}")).await;
    assert_eq!(st, 404);
    let (st, e) = cb_get(&s, 0, "/transfers?type=withdrawal").await;
    assert_eq!(st, 400, "{e}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_placed_read_listed_and_cancelled() {
    let s = TestServer::start(2).await;
    let client = "3b0fa9e2-52d1-4c1e-9a8e-2f4d0b6a7c11";
    let mut body = limit("buy", "28000.5", "0.001");
    body["client_oid"] = json!(client);
    let (st, o) = order(&s, 0, body).await;
    assert_eq!(st, 200, "{o}");
    let id = o["id"].as_str().unwrap().to_owned();
    assert_eq!(o["status"], "open");
    assert_eq!(o["product_id"], "BTC-USD");
    assert_eq!(o["side"], "buy");
    assert_eq!(o["type"], "limit");
    assert_eq!(o["price"], "28000.500000");
    assert_eq!(o["size"], "0.00100000");
    assert_eq!(o["filled_size"], "0.00000000");
    assert_eq!(o["executed_value"], "0.000000");
    assert_eq!(o["fill_fees"], "0.000000");
    assert_eq!(o["time_in_force"], "GTC");
    assert_eq!(o["post_only"], false);
    assert_eq!(o["client_oid"], client);
    assert_eq!(o["settled"], false);
    assert_iso(&o["created_at"]);

    let (st, got) = cb_get(&s, 0, &format!("/orders/{id}")).await;
    assert_eq!((st, &got), (200, &o));
    let (st, got) = cb_get(&s, 0, &format!("/orders/client:{client}")).await;
    assert_eq!((st, &got), (200, &o));
    let (st, got) = cb_get(&s, 0, &format!("/orders/client%3A{client}")).await;
    assert_eq!((st, &got), (200, &o));

    let (st, open) = cb_get(&s, 0, "/orders").await;
    assert_eq!(st, 200);
    assert_eq!(open, json!([o.clone()]));
    let (_, open) = cb_get(&s, 0, "/orders?product_id=BTC-USD&status=open").await;
    assert_eq!(open.as_array().unwrap().len(), 1);
    let (_, open) = cb_get(&s, 0, "/orders?product_id=ETH-USD").await;
    assert_eq!(open, json!([]));
    let (_, done) = cb_get(&s, 0, "/orders?product_id=BTC-USD&status=done").await;
    assert_eq!(done, json!([]));
    let (st, e) = cb_get(&s, 0, "/orders?product_id=NOPE-USD").await;
    assert_eq!((st, e["message"].as_str()), (400, Some("Product not found")));
    let (st, _) = cb_get(&s, 0, "/orders?status=weird").await;
    assert_eq!(st, 400);
    let (_, future) = cb_get(&s, 0, "/orders?start_date=2100-01-01T00%3A00%3A00.000Z").await;
    assert_eq!(future, json!([]));
    let (_, past) = cb_get(&s, 0, "/orders?end_date=2000-01-01T00%3A00%3A00.000Z").await;
    assert_eq!(past, json!([]));

    // Cancel by client id, with the body ccxt sends (its symbol).
    let (st, c) = cb(
        &s,
        0,
        Method::DELETE,
        &format!("/orders/client:{client}"),
        r#"{"product_id":"BTC/USD"}"#,
    )
    .await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c, json!(id));
    let (_, open) = cb_get(&s, 0, "/orders").await;
    assert_eq!(open, json!([]));
    let (_, done) = cb_get(&s, 0, "/orders?product_id=BTC-USD&status=done").await;
    let done = done.as_array().unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["id"], json!(id));
    assert_eq!(done[0]["status"], "done");
    assert_eq!(done[0]["done_reason"], "canceled");
    assert_eq!(done[0]["filled_size"], "0.00000000");
    assert_iso(&done[0]["done_at"]);
    let (st, e) = cb(&s, 0, Method::DELETE, &format!("/orders/{id}"), "").await;
    assert_eq!((st, e["message"].as_str()), (400, Some("Order already done")));
    let (st, e) = cb(&s, 0, Method::DELETE, "/orders/987654321", "").await;
    assert_eq!((st, e["message"].as_str()), (404, Some("NotFound")));
    let (st, e) = cb_get(&s, 0, "/orders/987654321").await;
    assert_eq!((st, e["message"].as_str()), (404, Some("NotFound")));
    let (st, e) = cb_get(&s, 0, "/orders/d0c5340b-6d6c-49d9").await;
    assert_eq!((st, e["message"].as_str()), (400, Some("Invalid order id")));

    // Repeated status parameters combine; limit applies.
    let (st, o2) = order(&s, 0, limit("buy", "28000.00", "0.001")).await;
    assert_eq!(st, 200);
    let (_, both) = cb_get(&s, 0, "/orders?status=open&status=done").await;
    assert_eq!(both.as_array().unwrap().len(), 2);
    assert_eq!(both[0]["id"], o2["id"], "newest first");
    let (_, all) = cb_get(&s, 0, "/orders?status=all&limit=1").await;
    assert_eq!(all.as_array().unwrap().len(), 1);

    // Cancel everything on a product.
    order(&s, 0, limit("sell", "32000.00", "0.001")).await;
    let (st, ids) = cb(&s, 0, Method::DELETE, "/orders?product_id=BTC-USD", "").await;
    assert_eq!(st, 200, "{ids}");
    assert_eq!(ids.as_array().unwrap().len(), 2);
    let (_, open) = cb_get(&s, 0, "/orders").await;
    assert_eq!(open, json!([]));

    // Post-only and FOK that cannot rest or fill end at once, cancelled.
    order(&s, 1, limit("sell", "30000.00", "0.01")).await;
    let mut po = limit("buy", "30000.00", "0.001");
    po["post_only"] = json!(true);
    let (st, o) = order(&s, 0, po).await;
    assert_eq!(st, 200, "{o}");
    assert_eq!(
        (o["status"].as_str(), o["done_reason"].as_str()),
        (Some("done"), Some("canceled"))
    );
    assert_eq!(o["post_only"], true);
    let mut fok = limit("buy", "30000.00", "0.02");
    fok["time_in_force"] = json!("FOK");
    let (st, o) = order(&s, 0, fok).await;
    assert_eq!(st, 200, "{o}");
    assert_eq!(
        (o["status"].as_str(), o["done_reason"].as_str()),
        (Some("done"), Some("canceled"))
    );
    assert_eq!(o["filled_size"], "0.00000000");
    assert_eq!(o["time_in_force"], "FOK");
    let mut ioc = limit("buy", "30000.00", "0.02");
    ioc["time_in_force"] = json!("IOC");
    let (st, o) = order(&s, 0, ioc).await;
    assert_eq!(st, 200, "{o}");
    assert_eq!(o["status"], "done");
    assert_eq!(o["filled_size"], "0.01000000");
    assert_eq!(o["time_in_force"], "IOC");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn market_orders_fill_and_fills_are_reported() {
    let s = TestServer::start(2).await;
    order(&s, 1, limit("sell", "30000.00", "0.002")).await;
    order(&s, 1, limit("sell", "30001.00", "0.002")).await;
    let (st, o) = order(
        &s,
        0,
        json!({"type": "market", "side": "buy", "product_id": "BTC-USD", "size": "0.003"}),
    )
    .await;
    assert_eq!(st, 200, "{o}");
    assert_eq!(o["status"], "done", "{o}");
    assert_eq!(o["done_reason"], "filled");
    assert_eq!(o["type"], "market");
    assert_eq!(o["size"], "0.00300000");
    assert_eq!(o["filled_size"], "0.00300000");
    assert_eq!(o["executed_value"], "90.001000");
    assert!(o.get("price").is_none(), "{o}");
    let id = o["id"].as_str().unwrap();

    let (st, f) = cb_get(&s, 0, &format!("/fills?order_id={id}")).await;
    assert_eq!(st, 200, "{f}");
    let f = f.as_array().unwrap();
    assert_eq!(f.len(), 2);
    for x in f {
        assert_eq!(x["order_id"], json!(id));
        assert_eq!(x["side"], "buy");
        assert_eq!(x["liquidity"], "T");
        assert_eq!(x["product_id"], "BTC-USD");
        assert!(x["trade_id"].is_u64());
        assert!(x["fee"].is_string());
        assert!(x["usd_value"].is_string());
        assert_iso(&x["created_at"]);
    }
    assert_eq!(f[0]["price"], "30001.000000", "newest first");
    assert_eq!(f[0]["size"], "0.00100000");
    assert_eq!(f[0]["usd_value"], "30.001000");
    assert_eq!(f[1]["size"], "0.00200000");
    let (_, mine) = cb_get(&s, 0, "/fills?product_id=BTC-USD").await;
    assert_eq!(mine.as_array().unwrap().len(), 2);
    let (_, lim) = cb_get(&s, 0, "/fills?product_id=BTC-USD&limit=1").await;
    assert_eq!(lim.as_array().unwrap().len(), 1);
    let (_, makers) = cb_get(&s, 1, "/fills?product_id=BTC-USD").await;
    let makers = makers.as_array().unwrap();
    assert_eq!(makers.len(), 2);
    assert!(makers
        .iter()
        .all(|x| x["liquidity"] == "M" && x["side"] == "sell"));
    let (st, _) = cb_get(&s, 0, "/fills").await;
    assert_eq!(st, 400);
    let (_, none) = cb_get(&s, 0, "/fills?product_id=ETH-USD").await;
    assert_eq!(none, json!([]));

    // A market sell by size, and a market buy by funds.
    order(&s, 1, limit("buy", "29990.00", "0.01")).await;
    let (st, o) = order(
        &s,
        0,
        json!({"type": "market", "side": "sell", "product_id": "BTC-USD", "size": "0.002"}),
    )
    .await;
    assert_eq!(st, 200, "{o}");
    assert_eq!(
        (o["status"].as_str(), o["filled_size"].as_str()),
        (Some("done"), Some("0.00200000"))
    );
    order(&s, 1, limit("sell", "30000.00", "0.01")).await;
    let (st, o) = order(
        &s,
        0,
        json!({"type": "market", "side": "buy", "product_id": "BTC-USD", "funds": "31"}),
    )
    .await;
    assert_eq!(st, 200, "{o}");
    assert_eq!(o["status"], "done", "{o}");
    assert_eq!(o["done_reason"], "filled", "{o}");
    assert_eq!(o["funds"], "31.000000");
    assert!(o.get("size").is_none(), "{o}");
    assert_eq!(o["filled_size"], "0.00100000", "{o}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_are_401_with_a_message() {
    let s = TestServer::start(1).await;
    let c = creds(&s, 0);
    let now = now_s();
    let (st, _) = send_raw(&s, Some(&c), &now.to_string(), Method::GET, "/accounts", "").await;
    assert_eq!(st, 200);
    // Coinbase also allows a fractional timestamp.
    let (st, _) = send_raw(&s, Some(&c), &format!("{now}.250"), Method::GET, "/accounts", "").await;
    assert_eq!(st, 200);

    let wrong_secret = STANDARD.encode([7u8; 64]);
    let bad = Creds {
        secret: &wrong_secret,
        ..creds(&s, 0)
    };
    let (st, e) = send_raw(&s, Some(&bad), &now.to_string(), Method::GET, "/accounts", "").await;
    assert_eq!((st, e["message"].as_str()), (401, Some("invalid signature")));

    let bad = Creds {
        passphrase: "not-the-passphrase",
        ..creds(&s, 0)
    };
    let (st, e) = send_raw(&s, Some(&bad), &now.to_string(), Method::GET, "/accounts", "").await;
    assert_eq!((st, e["message"].as_str()), (401, Some("Invalid Passphrase")));
    // Both wrong: nothing about the passphrase is given away.
    let bad = Creds {
        passphrase: "not-the-passphrase",
        secret: &wrong_secret,
        ..creds(&s, 0)
    };
    let (st, e) = send_raw(&s, Some(&bad), &now.to_string(), Method::GET, "/accounts", "").await;
    assert_eq!((st, e["message"].as_str()), (401, Some("invalid signature")));

    let bad = Creds {
        key: "0123456789abcdef0123456789abcdef",
        ..creds(&s, 0)
    };
    let (st, e) = send_raw(&s, Some(&bad), &now.to_string(), Method::GET, "/accounts", "").await;
    assert_eq!((st, e["message"].as_str()), (401, Some("Invalid API Key")));

    for stale in [now - 60, now + 60] {
        let (st, e) = send_raw(&s, Some(&c), &stale.to_string(), Method::GET, "/accounts", "").await;
        assert_eq!(st, 401, "{e}");
    }
    let (st, _) = send_raw(&s, Some(&c), "yesterday", Method::GET, "/accounts", "").await;
    assert_eq!(st, 401);
    let (st, e) = send_raw(&s, None, "", Method::GET, "/accounts", "").await;
    assert_eq!(st, 401, "{e}");

    // The signature covers the query and the body exactly as sent.
    let ts = now.to_string();
    let sig = sign(c.secret, &ts, "GET", "/orders?status=all", "");
    let send = |path: &'static str, sig: String| {
        let ts = ts.clone();
        let c = creds(&s, 0);
        let r = s
            .client
            .get(s.url(path))
            .header("CB-ACCESS-KEY", c.key)
            .header("CB-ACCESS-SIGN", sig)
            .header("CB-ACCESS-TIMESTAMP", ts)
            .header("CB-ACCESS-PASSPHRASE", c.passphrase);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(send("/orders?status=all", sig.clone()).await, 200);
    assert_eq!(send("/orders?status=done", sig.clone()).await, 401);
    assert_eq!(send("/orders?status=all&", sig).await, 401);
    let body = r#"{"type":"limit","side":"buy","product_id":"BTC-USD","price":"28000","size":"0.001"}"#;
    let sig = sign(c.secret, &ts, "POST", "/orders", body);
    let r = s
        .client
        .post(s.url("/orders"))
        .header("CB-ACCESS-KEY", c.key)
        .header("CB-ACCESS-SIGN", sig)
        .header("CB-ACCESS-TIMESTAMP", &ts)
        .header("CB-ACCESS-PASSPHRASE", c.passphrase)
        .header("Content-Type", "application/json")
        .body(body.replace("0.001", "0.002"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (_, open) = cb_get(&s, 0, "/orders").await;
    assert_eq!(open, json!([]), "a request with a bad signature changed nothing");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_order_input_is_a_400_with_a_message() {
    let s = TestServer::start(1).await;
    let cases: Vec<(String, Option<&str>)> = vec![
        (limit("buy", "28000", "abc").to_string(), None),
        (limit("buy", "28000", "-1").to_string(), None),
        (limit("buy", "28000", "0.000000001").to_string(), None),
        (limit("buy", "-28000", "0.001").to_string(), None),
        (limit("buy", "28000", "").to_string(), None),
        (limit("hold", "28000", "0.001").to_string(), None),
        (limit("buy", "28000", "1e-3").to_string(), None),
        (limit("buy", "28000.001", "0.001").to_string(), Some("price too precise")),
        (limit("buy", "0", "0.001").to_string(), Some("price too small")),
        (limit("buy", "28000", "0").to_string(), Some("size is too small")),
        (limit("buy", "28000", "0.00001").to_string(), Some("size is too precise")),
        (limit("buy", "29000", "1000").to_string(), Some("Insufficient funds")),
        (limit("buy", "1000", "0.001").to_string(), Some("price too small: prices must be within ±10.00%")),
        (limit("sell", "40000", "0.001").to_string(), Some("price is outside the allowed band")),
        (
            json!({"type": "limit", "side": "buy", "product_id": "DOGE-USD", "price": "1", "size": "1"}).to_string(),
            Some("Product not found"),
        ),
        (
            json!({"type": "stop", "side": "buy", "product_id": "BTC-USD", "price": "1", "size": "1"}).to_string(),
            None,
        ),
        (
            json!({"type": "limit", "side": "buy", "product_id": "BTC-USD", "price": "28000", "size": "0.001", "time_in_force": "GTT"}).to_string(),
            Some("time_in_force GTT needs cancel_after"),
        ),
        (
            json!({"type": "limit", "side": "buy", "product_id": "BTC-USD", "price": "28000", "size": "0.001", "time_in_force": "GTT", "cancel_after": "week"}).to_string(),
            None,
        ),
        (
            json!({"type": "limit", "side": "buy", "product_id": "BTC-USD", "price": "28000", "size": "0.001", "cancel_after": "min"}).to_string(),
            Some("cancel_after requires time_in_force to be GTT"),
        ),
        (
            json!({"type": "limit", "side": "buy", "product_id": "BTC-USD", "price": "31000", "size": "0.001", "stop": "loss", "stop_price": "30500"}).to_string(),
            None,
        ),
        (
            json!({"type": "limit", "side": "sell", "product_id": "BTC-USD", "price": "29000", "size": "0.001", "stop": "loss"}).to_string(),
            Some("stop needs a stop_price"),
        ),
        (
            json!({"type": "limit", "side": "buy", "product_id": "BTC-USD", "price": "28000", "size": "0.001", "time_in_force": "IOC", "post_only": true}).to_string(),
            None,
        ),
        (
            json!({"type": "limit", "side": "buy", "product_id": "BTC-USD", "price": "28000", "size": "0.001", "iceberg": true}).to_string(),
            None,
        ),
        (
            json!({"type": "limit", "side": "buy", "product_id": "BTC-USD", "price": "28000", "size": "0.001", "client_oid": "nope"}).to_string(),
            None,
        ),
        (
            json!({"type": "market", "side": "buy", "product_id": "BTC-USD", "size": "0.001", "funds": "10"}).to_string(),
            None,
        ),
        (
            json!({"type": "market", "side": "buy", "product_id": "BTC-USD", "size": "0.001", "time_in_force": "FOK"}).to_string(),
            None,
        ),
        (json!({"side": "buy", "product_id": "BTC-USD", "size": "0.001"}).to_string(), None),
        (json!({"side": "buy", "product_id": "BTC-USD", "price": true, "size": "0.001"}).to_string(), None),
        ("[1, 2]".into(), None),
        ("{not json".into(), None),
        ("".into(), None),
    ];
    for (body, want) in cases {
        let (st, e) = cb(&s, 0, Method::POST, "/orders", &body).await;
        assert_eq!(st, 400, "{body}: {e}");
        let msg = e["message"].as_str().unwrap();
        if let Some(w) = want {
            assert!(msg.starts_with(w), "{body}: {msg:?}, want {w:?}");
        }
    }
    // A JSON number is read exactly, exponent included.
    let (st, o) = cb(
        &s,
        0,
        Method::POST,
        "/orders",
        r#"{"type":"limit","side":"buy","product_id":"BTC-USD","price":28000.5,"size":1e-3}"#,
    )
    .await;
    assert_eq!(st, 200, "{o}");
    assert_eq!(
        (o["price"].as_str(), o["size"].as_str()),
        (Some("28000.500000"), Some("0.00100000"))
    );
    let (st, _) = cb(&s, 0, Method::GET, "/orders?limit=abc", "").await;
    assert_eq!(st, 400);
    let (st, _) = cb(&s, 0, Method::GET, "/orders?before=5", "").await;
    assert_eq!(st, 400);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_cannot_reach_each_others_orders() {
    let s = TestServer::start(2).await;
    let client = "11111111-2222-4333-8444-555555555555";
    let mut body = limit("buy", "28000", "0.001");
    body["client_oid"] = json!(client);
    let (_, o) = order(&s, 0, body).await;
    let id = o["id"].as_str().unwrap();
    for path in [format!("/orders/{id}"), format!("/orders/client:{client}")] {
        let (st, e) = cb_get(&s, 1, &path).await;
        assert_eq!((st, e["message"].as_str()), (404, Some("NotFound")), "{path}");
        let (st, e) = cb(&s, 1, Method::DELETE, &path, "").await;
        assert_eq!((st, e["message"].as_str()), (404, Some("NotFound")), "{path}");
    }
    let (_, theirs) = cb_get(&s, 1, "/orders?status=all").await;
    assert_eq!(theirs, json!([]));
    let (_, ids) = cb(&s, 1, Method::DELETE, "/orders", "").await;
    assert_eq!(ids, json!([]));
    let (_, f) = cb_get(&s, 1, &format!("/fills?order_id={id}")).await;
    assert_eq!(f, json!([]));
    let (st, still) = cb_get(&s, 0, &format!("/orders/{id}")).await;
    assert_eq!((st, still["status"].as_str()), (200, Some("open")));
    // The same client id is the other user's own.
    let mut body = limit("buy", "28000", "0.002");
    body["client_oid"] = json!(client);
    let (st, mine) = order(&s, 1, body).await;
    assert_eq!(st, 200, "{mine}");
    let (_, got) = cb_get(&s, 1, &format!("/orders/client:{client}")).await;
    assert_eq!(got["id"], mine["id"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposit_addresses_come_from_the_chain() {
    let s = TestServer::start(2).await;
    let (st, accts) = cb_get(&s, 0, "/coinbase-accounts").await;
    assert_eq!(st, 200, "{accts}");
    let accts = accts.as_array().unwrap().clone();
    let id = |code: &str| {
        accts.iter().find(|a| a["currency"] == code).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let btc = id("BTC");
    let (st, a) = cb(
        &s,
        0,
        Method::POST,
        &format!("/coinbase-accounts/{btc}/addresses"),
        "",
    )
    .await;
    assert_eq!(st, 200, "{a}");
    let address = a["address"].as_str().unwrap();
    assert!(address.starts_with("sim1") && address.len() == 44, "{a}");
    let (_, native) = s.get(Some(0), "/api/v1/deposit-addresses?asset=BTC").await;
    assert!(
        native.as_array().unwrap().iter().any(|d| d["address"] == address),
        "{native}"
    );
    let (st, e) = cb(
        &s,
        0,
        Method::POST,
        &format!("/coinbase-accounts/{}/addresses", id("USD")),
        "",
    )
    .await;
    assert_eq!(st, 400, "{e}");
    let (st, _) = cb(
        &s,
        1,
        Method::POST,
        &format!("/coinbase-accounts/{btc}/addresses"),
        "",
    )
    .await;
    assert_eq!(st, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_go_only_to_whitelisted_addresses() {
    let s = TestServer::start(2).await;
    let address = s.btc_usd_address.clone();
    let sr = &s;
    let withdraw = move |user: usize, body: String| async move {
        cb(sr, user, Method::POST, "/withdrawals/crypto", &body).await
    };

    // Not whitelisted yet: refused, whatever the amount.
    let (st, e) = withdraw(
        0,
        format!(r#"{{"currency":"BTC","amount":0.001,"crypto_address":"{address}"}}"#),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("whitelisted"), "{e}");

    // Whitelisted usable at once: two treasury admins' proposal (the harness's quorum); the
    // customer's own whitelisting always cools first.
    crate::native::usable_address(&s, s.users[0].id, &address).await;
    // Every withdrawal needs a second factor: the current TOTP code as `two_factor_code`.
    let (st, e) = withdraw(
        0,
        format!(r#"{{"currency":"BTC","amount":"0.001","crypto_address":"{address}"}}"#),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    assert_eq!(
        e["message"], "this action needs a fresh second-factor proof",
        "{e}"
    );
    let (st, e) = withdraw(
        0,
        format!(r#"{{"currency":"BTC","amount":"0.001","crypto_address":"{address}","two_factor_code":"000000x"}}"#),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    assert_eq!(e["message"], "the TOTP code is wrong", "{e}");
    // More than is available: refused by the engine, which does not use the code up.
    let (_, code) = s.users[0].totp().await;
    let (st, e) = withdraw(
        0,
        format!(
            r#"{{"currency":"BTC","amount":100,"crypto_address":"{address}","two_factor_code":"{code}"}}"#
        ),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    assert!(
        e["message"].as_str().unwrap().starts_with("Insufficient funds"),
        "{e}"
    );
    // A number in exponent form is read exactly.
    let (st, w) = withdraw(
        0,
        format!(
            r#"{{"currency":"BTC","amount":1e-3,"crypto_address":"{address}","two_factor_code":"{code}"}}"#
        ),
    )
    .await;
    assert_eq!(st, 200, "{w}");
    let wid = w["id"].as_str().unwrap().to_owned();
    assert_eq!(w["currency"], "BTC");
    assert_eq!(w["amount"], "0.00100000");
    assert_eq!(w["subtotal"], "0.00100000");
    assert_eq!(w["fee"], "0.00000000");
    assert_eq!(w["type"], "withdraw");
    assert!(w["completed_at"].is_null() && w["processed_at"].is_null() && w["canceled_at"].is_null());
    // The same code twice: refused as a replay.
    let (st, e) = withdraw(
        0,
        format!(
            r#"{{"currency":"BTC","amount":"0.5","crypto_address":"{address}","two_factor_code":"{code}"}}"#
        ),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("already used"), "{e}");
    let (_, code) = s.users[0].totp().await;
    let (st, w2) = withdraw(
        0,
        format!(
            r#"{{"currency":"BTC","amount":"0.5","crypto_address":"{address}","two_factor_code":"{code}"}}"#
        ),
    )
    .await;
    assert_eq!(st, 200, "{w2}");
    assert_eq!(w2["amount"], "0.50000000");

    let (_, accts) = cb_get(&s, 0, "/accounts").await;
    let btc = accts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["currency"] == "BTC")
        .unwrap()
        .clone();
    assert_eq!(btc["available"], "9.49900000");
    assert_eq!(btc["hold"], "0.50100000");
    let (st, list) = cb_get(
        &s,
        0,
        &format!(
            "/accounts/{}/transfers?type=withdraw",
            btc["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(st, 200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["id"], json!(wid));
    assert_eq!(list[1]["details"]["sent_to_address"], json!(address));
    let (_, all) = cb_get(&s, 0, "/transfers?type=withdraw").await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["account_id"] == btc["id"]));
    let (st, one) = cb_get(&s, 0, &format!("/withdrawals/{wid}")).await;
    assert_eq!(st, 200, "{one}");
    assert_eq!(one["id"], json!(wid));
    let (st, _) = cb_get(&s, 1, &format!("/withdrawals/{wid}")).await;
    assert_eq!(st, 404);

    for (body, want) in [
        (
            format!(r#"{{"currency":"BTC","amount":1e-9,"crypto_address":"{address}"}}"#),
            None,
        ),
        (
            format!(r#"{{"currency":"BTC","amount":"0.000000001","crypto_address":"{address}"}}"#),
            None,
        ),
        (
            format!(r#"{{"currency":"BTC","amount":-1,"crypto_address":"{address}"}}"#),
            None,
        ),
        (
            format!(r#"{{"currency":"BTC","amount":"x","crypto_address":"{address}"}}"#),
            None,
        ),
        (
            format!(r#"{{"currency":"DOGE","amount":1,"crypto_address":"{address}"}}"#),
            None,
        ),
        (
            format!(r#"{{"currency":"ETH","amount":1,"crypto_address":"{address}"}}"#),
            Some("crypto_address is not"),
        ),
        (
            format!(r#"{{"currency":"BTC","amount":1,"crypto_address":"{address}","network":"x"}}"#),
            None,
        ),
        (
            format!(r#"{{"currency":"BTC","amount":1,"crypto_address":"{address}","destination_tag":"5"}}"#),
            None,
        ),
        (
            r#"{"currency":"BTC","amount":1,"crypto_address":"sim1somewhereelse"}"#.to_owned(),
            Some("crypto_address is not"),
        ),
        (r#"{"currency":"BTC","amount":1}"#.to_owned(), None),
    ] {
        let (st, e) = withdraw(0, body.clone()).await;
        assert_eq!(st, 400, "{body}: {e}");
        if let Some(w) = want {
            assert!(e["message"].as_str().unwrap().starts_with(w), "{body}: {e}");
        }
    }
    // Another user cannot use alice's whitelisted address.
    let (st, e) = withdraw(
        1,
        format!(r#"{{"currency":"BTC","amount":"0.1","crypto_address":"{address}"}}"#),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("whitelisted"), "{e}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_withdrawal_address_waits_out_its_cooling_period() {
    let s = TestServer::start(1).await;
    let address = s.btc_usd_address.clone();
    let (st, w) = s
        .with_step_up(
            0,
            Method::POST,
            "/api/v1/withdrawal-addresses",
            json!({"asset": "BTC", "address": address}),
        )
        .await;
    assert_eq!(st, 200, "{w}");
    let (st, e) = cb(
        &s,
        0,
        Method::POST,
        "/withdrawals/crypto",
        &format!(
            r#"{{"currency":"BTC","amount":"0.1","crypto_address":"{address}","two_factor_code":"{}"}}"#,
            s.users[0].totp().await.1
        ),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("cooling period"), "{e}");
    let (_, list) = cb_get(&s, 0, "/transfers?type=withdraw").await;
    assert_eq!(list, json!([]));
    s.stop().await;
}

/// A captured signed request cannot be sent again: an identical `POST /orders` is refused while
/// its timestamp is valid (it made a second order before), a timestamp more than a few seconds
/// in the future is refused (one 29 s ahead was accepted, stretching a capture's use to a
/// minute), and identical GETs within one second still work (ccxt polls like that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_request_is_used_once_and_timestamps_may_not_run_ahead() {
    let s = TestServer::start(1).await;
    let c = creds(&s, 0);
    let now = now_s();
    let ts = now.to_string();
    let body = limit("buy", "28000.00", "0.001").to_string();
    let (st, o) = send_raw(&s, Some(&c), &ts, Method::POST, "/orders", &body).await;
    assert_eq!(st, 200, "{o}");
    for _ in 0..2 {
        let (st, e) = send_raw(&s, Some(&c), &ts, Method::POST, "/orders", &body).await;
        assert_eq!(st, 401, "the replay is refused: {e}");
    }
    // The same order signed anew (another timestamp) is a new request.
    let fractional = format!("{now}.5");
    let (st, o2) = send_raw(&s, Some(&c), &fractional, Method::POST, "/orders", &body).await;
    assert_eq!(st, 200, "{o2}");
    let (st, open) = cb_get(&s, 0, "/orders").await;
    assert_eq!(st, 200);
    assert_eq!(
        open.as_array().map(Vec::len),
        Some(2),
        "one order per signed request: {open}"
    );
    // A cancel is state-changing too.
    let path = format!("/orders/{}", o["id"].as_str().unwrap());
    let (st, _) = send_raw(&s, Some(&c), &ts, Method::DELETE, &path, "").await;
    assert_eq!(st, 200);
    let (st, e) = send_raw(&s, Some(&c), &ts, Method::DELETE, &path, "").await;
    assert_eq!(st, 401, "{e}");

    // Identical reads within a second: both answered.
    for _ in 0..2 {
        let (st, _) = send_raw(&s, Some(&c), &ts, Method::GET, "/orders", "").await;
        assert_eq!(st, 200);
    }

    // The future: a little clock skew is fine, 29 s is not.
    let (st, e) = send_raw(
        &s,
        Some(&c),
        &(now + 29).to_string(),
        Method::GET,
        "/accounts",
        "",
    )
    .await;
    assert_eq!(
        (st, e["message"].as_str()),
        (401, Some("request timestamp is in the future"))
    );
    let (st, e) = send_raw(&s, Some(&c), &(now + 2).to_string(), Method::GET, "/accounts", "").await;
    assert_eq!(st, 200, "{e}");
    // The past window is unchanged.
    let (st, e) = send_raw(
        &s,
        Some(&c),
        &(now - 20).to_string(),
        Method::GET,
        "/accounts",
        "",
    )
    .await;
    assert_eq!(st, 200, "{e}");
    assert!(
        s.gateway.replays.len() >= 3,
        "the state-changing requests are remembered"
    );
    s.stop().await;
}

/// A signed GET with the paging headers of its answer (`CB-BEFORE`, `CB-AFTER`).
async fn cb_page(s: &TestServer, user: usize, path: &str) -> (Value, Option<String>, Option<String>) {
    let c = creds(s, user);
    let ts = now_s().to_string();
    let r = s
        .client
        .get(s.url(path))
        .header("Content-Type", "application/json")
        .header("CB-ACCESS-KEY", c.key)
        .header("CB-ACCESS-SIGN", sign(c.secret, &ts, "GET", path, ""))
        .header("CB-ACCESS-TIMESTAMP", &ts)
        .header("CB-ACCESS-PASSPHRASE", c.passphrase)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path}");
    let h = |k: &str| r.headers().get(k).map(|v| v.to_str().unwrap().to_owned());
    let (before, after) = (h("cb-before"), h("cb-after"));
    (r.json().await.unwrap(), before, after)
}

/// Every page of `path` (which has no query yet) by `limit`, following `CB-AFTER`; each
/// `CB-BEFORE` leads back to the page before.
async fn all_pages(s: &TestServer, user: usize, path: &str, limit: usize) -> Vec<Value> {
    let (mut page, _, mut after) = cb_page(s, user, &format!("{path}?limit={limit}")).await;
    let mut all: Vec<Value> = Vec::new();
    for _ in 0..50 {
        let prev = page.as_array().unwrap().clone();
        assert!(prev.len() <= limit);
        all.extend(prev.iter().cloned());
        let Some(a) = after.take() else { break };
        let (next, before, next_after) = cb_page(s, user, &format!("{path}?limit={limit}&after={a}")).await;
        if let Some(b) = before {
            let (back, _, _) = cb_page(s, user, &format!("{path}?limit={limit}&before={b}")).await;
            assert_eq!(back.as_array().unwrap(), &prev, "{path}: before {b} leads back");
        }
        page = next;
        after = next_after;
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_holds_fees_tickers_and_paging() {
    let s = TestServer::start_with(2, crate::harness::without_rate_limits(Default::default())).await;
    trade_a_little(&s).await;

    // Tickers of every product: spark-lines (ccxt's fetch_tickers) and stats.
    let (st, sp) = public(&s, "/products/spark-lines").await;
    assert_eq!(st, 200, "{sp}");
    let rows = sp["BTC-USD"].as_array().unwrap_or_else(|| panic!("{sp}"));
    assert_eq!(rows.len(), 1, "{sp}");
    assert_eq!(
        rows[0][4].to_string(),
        "30010.5",
        "the newest close is the last trade: {sp}"
    );
    assert_eq!(sp["ETH-USD"], json!([]), "{sp}");
    let (st, stats) = public(&s, "/products/stats").await;
    assert_eq!(st, 200, "{stats}");
    assert_eq!(
        stats["BTC-USD"]["stats_24hour"]["last"], "30010.500000",
        "{stats}"
    );
    assert_eq!(
        stats["BTC-USD"]["stats_24hour"]["volume"], "0.01500000",
        "{stats}"
    );
    let (st, _) = public(&s, "/products/NOPE-USD").await;
    assert_eq!(st, 404);

    // Fees: the harness's markets charge 0.10 % maker, 0.20 % taker at tier 0.
    let (st, f) = cb_get(&s, 0, "/fees").await;
    assert_eq!(st, 200, "{f}");
    assert_eq!(
        (f["maker_fee_rate"].as_str(), f["taker_fee_rate"].as_str()),
        (Some("0.0010"), Some("0.0020")),
        "{f}"
    );
    assert_eq!(f["products"]["BTC-USD"]["taker_fee_rate"], "0.0020", "{f}");
    // Its 30-day USD volume: 0.01 at 30,000.00 and 0.005 at 30,010.50.
    assert_eq!(f["usd_volume"], "450.052500", "{f}");

    // The ledger of user 0's USD account: the funding deposit, two matches and two fees.
    let (_, accounts) = cb_get(&s, 0, "/accounts").await;
    let acct = |code: &str| {
        accounts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["currency"] == code)
            .unwrap()
            .clone()
    };
    let usd = acct("USD");
    let path = format!("/accounts/{}/ledger", usd["id"].as_str().unwrap());
    let (entries, _, _) = cb_page(&s, 0, &path).await;
    let entries = entries.as_array().unwrap().clone();
    let kinds: Vec<&str> = entries.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["fee", "match", "fee", "match", "transfer"], "{entries:?}");
    let amounts: Vec<&str> = entries.iter().map(|e| e["amount"].as_str().unwrap()).collect();
    assert_eq!(
        amounts,
        [
            "-0.300105",
            "-150.052500",
            "-0.600000",
            "-300.000000",
            "1000000.000000"
        ],
        "{entries:?}"
    );
    assert_eq!(
        entries[0]["balance"], usd["balance"],
        "the newest balance is the account's"
    );
    assert_eq!(entries[4]["balance"], "1000000.000000");
    assert_eq!(entries[1]["details"]["product_id"], "BTC-USD");
    assert!(entries.iter().all(|e| e["id"].is_string()));
    assert_iso(&entries[0]["created_at"]);
    // Paged by two, following CB-AFTER, the same entries in the same order.
    assert_eq!(all_pages(&s, 0, &path, 2).await, entries);

    // Another user's account is not found; a bad cursor is a 400.
    let (st, _) = cb_get(&s, 1, &path).await;
    assert_eq!(st, 404);
    let (st, e) = cb_get(&s, 0, &format!("{path}?after=xyz")).await;
    assert_eq!(st, 400, "{e}");

    // Holds: user 1 still has 0.005 BTC resting in a sell; the account's hold is their sum.
    let (_, accounts1) = cb_get(&s, 1, "/accounts").await;
    let btc1 = accounts1
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["currency"] == "BTC")
        .unwrap()
        .clone();
    let (st, holds) = cb_get(
        &s,
        1,
        &format!("/accounts/{}/holds", btc1["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(st, 200, "{holds}");
    let holds = holds.as_array().unwrap();
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(holds[0]["type"], "order");
    assert_eq!(holds[0]["amount"], "0.00500000");
    assert_eq!(holds[0]["amount"], btc1["hold"], "{btc1}");

    // Orders, fills and transfers page the same way.
    let (orders, _, _) = cb_page(&s, 1, "/orders?status=all&limit=100").await;
    assert_eq!(orders.as_array().unwrap().len(), 2);
    assert_eq!(
        all_pages(&s, 1, "/orders", 1).await.len(),
        1,
        "open orders only by default"
    );
    let (fills, _, _) = cb_page(&s, 0, "/fills?product_id=BTC-USD").await;
    assert_eq!(fills.as_array().unwrap().len(), 2);
    let (one, _, after) = cb_page(&s, 0, "/fills?product_id=BTC-USD&limit=1").await;
    assert_eq!(one[0], fills[0]);
    let (two, _, _) = cb_page(
        &s,
        0,
        &format!("/fills?product_id=BTC-USD&limit=1&after={}", after.unwrap()),
    )
    .await;
    assert_eq!(two[0], fills[1]);
    let transfers = all_pages(&s, 0, "/transfers", 1).await;
    assert_eq!(transfers.len(), 3, "the three funding deposits: {transfers:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_side_bands_let_a_far_limit_buy_rest_and_refuse_an_aggressive_one() {
    use kinko_core::engine::{Command, Reply};
    use kinko_core::market::{MarketId, PassiveBand};
    let s = TestServer::start(2).await;
    // The harness's markets are defined as before per-side bands: both sides keep the band.
    let (st, e) = order(&s, 0, limit("buy", "15000.00", "0.002")).await;
    assert_eq!(st, 400, "{e}");
    let r = s
        .gateway
        .submit(Command::SetPassiveBand {
            market: MarketId(0),
            band: PassiveBand::DEFAULT,
        })
        .await
        .unwrap();
    assert!(matches!(r.reply, Ok(Reply::MarketUpdated)), "{:?}", r.reply);
    let (_, markets) = s.get(None, "/api/v1/markets").await;
    assert_eq!(
        (
            &markets[0]["passive_buy_floor_bps"],
            &markets[0]["passive_sell_ceiling_bps"]
        ),
        (&json!(2_000), &json!(50_000)),
        "{markets}"
    );
    order(&s, 1, limit("sell", "30100.00", "0.01")).await;

    // Half the reference, below any ask: it rests.
    let (st, o) = order(&s, 0, limit("buy", "15000.00", "0.001")).await;
    assert_eq!(st, 200, "{o}");
    assert_eq!(
        (o["status"].as_str(), o["filled_size"].as_str()),
        (Some("open"), Some("0.00000000")),
        "{o}"
    );
    // Five times the reference, above any bid: it rests.
    let (st, o) = order(&s, 1, limit("sell", "150000.00", "0.001")).await;
    assert_eq!((st, o["status"].as_str()), (200, Some("open")), "{o}");
    // Beyond the floor, above the band (aggressive), beyond the ceiling: refused, with the rule.
    for (side, price, start) in [
        ("buy", "5999.99", "price too small: a buy may be priced up to 33000.000000 USD; one that would trade at once from 27000.000000, one that rests from 6000.000000 USD"),
        ("buy", "33000.01", "price is outside the allowed band: a buy may be priced up to 33000.000000 USD"),
        ("sell", "150000.01", "price is outside the allowed band: a sell may be priced down to 27000.000000 USD; one that would trade at once up to 33000.000000, one that rests up to 150000.000000 USD"),
        ("sell", "26999.99", "price too small: a sell may be priced down to 27000.000000 USD"),
    ] {
        let (st, e) = order(&s, 0, limit(side, price, "0.001")).await;
        assert_eq!(st, 400, "{side} {price}: {e}");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.starts_with(start), "{side} {price}: {msg}");
    }
    // A market sell is still protected: it takes nothing at 15,000 (below the band's 27,000).
    let (st, o) = order(
        &s,
        1,
        json!({"type": "market", "side": "sell", "product_id": "BTC-USD", "size": "0.001"}),
    )
    .await;
    assert_eq!(st, 200, "{o}");
    assert_eq!(o["filled_size"], "0.00000000", "{o}");
    let (_, open) = cb_get(&s, 0, "/orders").await;
    assert!(
        open.as_array()
            .unwrap()
            .iter()
            .any(|x| x["price"] == "15000.000000"),
        "{open}"
    );
    s.stop().await;
}

/// Stop orders as Coinbase takes them (`stop` + `stop_price`, or `stop_price` alone as ccxt
/// sends it): `active` until the last trade price reaches the stop, with `stop` and
/// `stop_price` in the order; good till time with `cancel_after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_good_till_time_orders_as_coinbase_has_them() {
    let s = TestServer::start(2).await;
    let mut body = limit("sell", "29000.00", "0.1");
    body["stop"] = json!("loss");
    body["stop_price"] = json!("29500.00");
    let (st, stop) = order(&s, 0, body).await;
    assert_eq!(st, 200, "{stop}");
    assert_eq!(stop["status"], "active", "{stop}");
    assert_eq!(
        (&stop["stop"], &stop["stop_price"]),
        (&json!("loss"), &json!("29500.000000"))
    );
    assert_eq!(stop["settled"], false);
    let id = stop["id"].as_str().unwrap().to_owned();
    // Listed among the open orders, and held.
    let (st, open) = cb_get(&s, 0, "/orders?status=open").await;
    assert_eq!(st, 200);
    assert!(
        open.as_array().unwrap().iter().any(|o| o["id"] == id.as_str()),
        "{open}"
    );
    let (_, accounts) = cb_get(&s, 0, "/accounts").await;
    let btc = accounts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["currency"] == "BTC")
        .unwrap()
        .clone();
    assert_eq!(btc["hold"], "0.10000000", "{btc}");
    let (st, holds) = cb_get(&s, 0, &format!("/accounts/{}/holds", btc["id"].as_str().unwrap())).await;
    assert_eq!(st, 200, "{holds}");
    assert_eq!(
        (&holds[0]["type"], &holds[0]["ref"], &holds[0]["amount"]),
        (&json!("order"), &json!(id.as_str()), &json!("0.10000000")),
        "{holds}"
    );
    // `stop_price` alone: the direction the side allows (a buy enters).
    let mut body = json!({"type": "market", "side": "buy", "product_id": "BTC-USD", "size": "0.01"});
    body["stop_price"] = json!("31000");
    let (st, entry) = order(&s, 1, body).await;
    assert_eq!(st, 200, "{entry}");
    assert_eq!(
        (&entry["status"], &entry["stop"]),
        (&json!("active"), &json!("entry"))
    );
    // The wrong direction for the side.
    let mut body = limit("sell", "29000.00", "0.1");
    body["stop"] = json!("entry");
    body["stop_price"] = json!("31000");
    let (st, e) = order(&s, 0, body).await;
    assert_eq!(
        (st, &e["message"]),
        (400, &json!(kinko_core::Reject::StopInvalid.to_string())),
        "{e}"
    );

    // A trade at 29,500 triggers the stop loss; it rests at 29,000 (no bid).
    let (st, _) = order(&s, 1, limit("buy", "29500.00", "0.01")).await;
    assert_eq!(st, 200);
    let (st, t) = order(&s, 0, limit("sell", "29500.00", "0.01")).await;
    assert_eq!((st, &t["done_reason"]), (200, &json!("filled")), "{t}");
    let (st, o) = cb_get(&s, 0, &format!("/orders/{id}")).await;
    assert_eq!(st, 200);
    assert_eq!(
        (&o["status"], &o["stop"]),
        (&json!("open"), &json!("loss")),
        "{o}"
    );
    let (st, _) = cb(&s, 0, Method::DELETE, &format!("/orders/{id}"), "").await;
    assert_eq!(st, 200);
    // The untriggered entry stop cancels too.
    let (st, _) = cb(
        &s,
        1,
        Method::DELETE,
        &format!("/orders/{}", entry["id"].as_str().unwrap()),
        "",
    )
    .await;
    assert_eq!(st, 200);

    // Good till time: an hour.
    let mut body = limit("buy", "28000.00", "0.01");
    body["time_in_force"] = json!("GTT");
    body["cancel_after"] = json!("hour");
    let (st, g) = order(&s, 1, body).await;
    assert_eq!(st, 200, "{g}");
    assert_eq!(
        (&g["status"], &g["time_in_force"]),
        (&json!("open"), &json!("GTT"))
    );
    assert_iso(&g["expire_time"]);
    s.stop().await;
}
