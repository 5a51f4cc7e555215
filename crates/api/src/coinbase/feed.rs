//! The Coinbase Exchange WebSocket feed at `/ws-feed`, for clients written for
//! `wss://ws-feed.exchange.coinbase.com` (ccxt.pro's `coinbaseexchange` with `urls['api']['ws']`
//! pointed here). The native `/api/v1/ws` is [`crate::ws`]; both read the same rendered batch
//! stream and share their queues, writer and limits ([`crate::fanout`]).
//!
//! # Client → server
//!
//! `{"type":"subscribe","product_ids":["BTC-USD"],"channels":["level2",{"name":"ticker",
//! "product_ids":["ETH-USD"]}]}` — a channel is a name (for the message's `product_ids`) or an
//! object with its own `product_ids`. `unsubscribe` has the same shape; a channel named without
//! products is left for every product. Both are answered with `subscriptions`, listing
//! everything subscribed. Channels: `heartbeat`, `status`, `ticker`, `ticker_batch`, `level2`,
//! `level2_batch`, `matches`, `full`, `user`.
//!
//! Authentication is Coinbase's: the subscribe message carries `key`, `passphrase`, `timestamp`
//! and `signature` = base64(HMAC-SHA256(secret, timestamp + "GET" + "/users/self/verify")),
//! checked as a signed REST request ([`crate::auth::coinbase`]: constant-time, timestamp
//! window, key usable from this address, owner not frozen, the key's rate). A key needs the
//! `view` permission. `user` and `full` need an authenticated connection; the other channels
//! accept one (ccxt signs its `level2` subscriptions too) and then refuse a bad signature. The
//! key and its owner are checked again after every batch that changes keys or identities and
//! every 5 s; when they no longer pass, `user` and `full` end with an `error` and a new
//! `subscriptions`.
//!
//! # Server → client
//!
//! Times are RFC 3339 UTC with microseconds; prices and sizes decimal strings from minor units.
//! `sequence` is the product's: every `received`, `open`, `done` and `match` message of a
//! product takes the next one (the sequence is the gateway's, counted since it started), and
//! `ticker` and `heartbeat` carry the product's current one; a client of `full` sees every
//! number and so detects a gap. `level2` messages carry the book's level-2 sequence instead (as
//! `GET /products/{id}/book` has it): each `l2update` is the previous one's + 1.
//!
//! - `subscriptions`: `{"channels":[{"name":"level2","product_ids":["BTC-USD"]},...]}`.
//! - `error`: `{"message":"Failed to subscribe","reason":...,"code":...}` (`message` is
//!   `Authentication Failed` for a bad signature, `code` is kinko's stable code). A bad message
//!   changes nothing; the connection stays open.
//! - `heartbeat` every second per product: `{"sequence","last_trade_id","product_id","time"}`.
//! - `status` on subscribe and every 5 s: `{"products":[...],"currencies":[...]}` as
//!   `GET /products` and `GET /currencies` show them.
//! - `ticker` on subscribe and after each batch with trades in the product: `{"sequence",
//!   "product_id","price","open_24h","volume_24h","low_24h","high_24h","best_bid",
//!   "best_bid_size","best_ask","best_ask_size","side","time","trade_id","last_size"}`;
//!   `ticker_batch` sends the latest of them at most every 5 s.
//! - `level2` and `level2_batch`: `snapshot` (`{"product_id","bids":[[price,size]...],
//!   "asks":...,"sequence","time"}`, the whole book) then `l2update` (`{"product_id","changes":
//!   [[side,price,size]...],"time","sequence"}`; size 0 removes the level). A new `snapshot`
//!   may come at any time (after updates were dropped for a client that fell behind): replace
//!   the book with it.
//! - `matches`: `last_match` (the product's last trade) on subscribe, then `match`:
//!   `{"trade_id","sequence","maker_order_id","taker_order_id","time","product_id","size",
//!   "price","side"}` (`side` is the maker's).
//! - `full`: every order's `received` (`order_id`, `order_type`, `size` or `funds`, `price`,
//!   `side`, `client_oid` of one's own orders only), `open` (`price`, `remaining_size`), `done`
//!   (`reason` `filled` or `canceled`, `remaining_size`, `price`) and `match`.
//! - `user`: the `full` messages of one's own orders, with `user_id` and `profile_id`, and on
//!   `match` the side one was on: `maker_user_id` and `maker_fee_rate`, or `taker_user_id` and
//!   `taker_fee_rate`.
//!
//! Not offered: `level2_50`, `level3`, `auctionfeed`, `rfq_matches`, `balance`; `change`
//! messages (kinko orders are never modified) and `activate` (no stop orders yet).

use super::{currency_json, product_json};
use crate::auth::{self, still_usable, ClientIp, Principal};
use crate::fanout::ModelGuard;
use crate::fanout::{close, End, FeedConn, Outbox, Part, Pub, Rendered, RESYNC_EVERY};
use crate::ratelimit::Limiter;
use crate::view;
use crate::wire::{fmt_uuid, rfc3339};
use crate::ws::{market_info, next_batch, MarketInfo, Ticket, NO_PONG};
use crate::ws::{AUTH_FAILURES_MAX, MESSAGE_RATE, SUBSCRIPTIONS_MAX};
use crate::wsio::{Incoming, Socket, Upgrade};
use crate::AppState;
use axum::extract::ws::{close_code, Message};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use kinko_core::book::{CancelReason, OrderBook, Side};
use kinko_core::engine::Event;
use kinko_core::market::MarketId;
use kinko_core::trading::{OrderStatus, OrderType, Trade, TradingEvent};
use kinko_core::{AssetId, UserId};
use kinko_engine::replica::{BatchEvents, ReadModel};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};

/// How often `heartbeat` messages go out.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How often `ticker_batch` and `status` messages go out, and the key is checked again.
const SLOW_TICK: Duration = Duration::from_secs(5);

pub async fn upgrade(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    ws: Result<Upgrade, crate::wsio::NotUpgrade>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return super::CbError::new(e.status(), "WEBSOCKET_EXPECTED", e.body_text()).into_response()
        }
    };
    let ticket = match Ticket::take(&g) {
        Ok(t) => t,
        Err(e) => return super::CbError::from(e).into_response(),
    };
    ws.on_upgrade(move |socket| async move {
        let hub = g.clone();
        hub.ws.fanout.run(run(g, socket, ticket, ip)).await
    })
}

// ---------------------------------------------------------------------------------------------
// Channels and messages.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Channel {
    Heartbeat,
    Status,
    Ticker,
    TickerBatch,
    Level2,
    Level2Batch,
    Matches,
    Full,
    User,
}

const CHANNELS: [Channel; 9] = [
    Channel::Heartbeat,
    Channel::Status,
    Channel::Ticker,
    Channel::TickerBatch,
    Channel::Level2,
    Channel::Level2Batch,
    Channel::Matches,
    Channel::Full,
    Channel::User,
];

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Channel::Heartbeat => "heartbeat",
            Channel::Status => "status",
            Channel::Ticker => "ticker",
            Channel::TickerBatch => "ticker_batch",
            Channel::Level2 => "level2",
            Channel::Level2Batch => "level2_batch",
            Channel::Matches => "matches",
            Channel::Full => "full",
            Channel::User => "user",
        }
    }
    fn private(self) -> bool {
        matches!(self, Channel::Full | Channel::User)
    }
    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

const LEVEL2: u16 = 1 << (Channel::Level2 as u16) | 1 << (Channel::Level2Batch as u16);
const PRIVATE: u16 = 1 << (Channel::Full as u16) | 1 << (Channel::User as u16);

/// Kinds of message the renderer makes only if some connection wants them
/// ([`crate::fanout::Fanout::coinbase_interest`]).
pub(crate) const WANT_LEVEL2: usize = 0;
pub(crate) const WANT_MATCHES: usize = 1;
pub(crate) const WANT_TICKER: usize = 2;
/// `full` or `user`.
pub(crate) const WANT_FULL: usize = 3;

/// Kinds of rendered message ([`Pub::kind`]).
const K_L2UPDATE: u8 = 0;
const K_MATCH: u8 = 1;
/// `received`, `open`, `done`.
const K_ORDER: u8 = 2;
const K_TICKER: u8 = 3;

#[derive(Deserialize)]
#[serde(untagged)]
enum ChannelIn {
    Name(String),
    With {
        name: String,
        #[serde(default)]
        product_ids: Vec<String>,
    },
}

#[derive(Deserialize)]
struct In {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    product_ids: Vec<String>,
    #[serde(default)]
    channels: Vec<ChannelIn>,
    signature: Option<String>,
    key: Option<String>,
    passphrase: Option<String>,
    /// ccxt sends a number, Coinbase's documentation a string.
    timestamp: Option<Value>,
}

/// A refused message: Coinbase's `message` and `reason`, kinko's stable code.
struct Refusal {
    code: &'static str,
    message: &'static str,
    reason: String,
}

impl Refusal {
    fn subscribe(code: &'static str, reason: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: "Failed to subscribe",
            reason: reason.into(),
        }
    }
    fn auth(code: &'static str, reason: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: "Authentication Failed",
            reason: reason.into(),
        }
    }
    fn msg(&self) -> Message {
        text(&json!({
            "type": "error",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }))
    }
}

fn text(v: &Value) -> Message {
    Message::Text(v.to_string().into())
}

fn slow_msg(reason: &str) -> Message {
    Refusal {
        code: "SLOW_CONSUMER",
        message: "Slow consumer",
        reason: reason.to_owned(),
    }
    .msg()
}

fn now_ns() -> u64 {
    auth::now_ns()
}

// ---------------------------------------------------------------------------------------------
// Rendering, once per batch for every connection.

/// Renders the feed's public messages of each batch once ([`crate::fanout`]) and keeps each
/// product's sequence. The one place that maps engine events to feed messages.
#[derive(Default)]
pub(crate) struct Renderer {
    info: BTreeMap<MarketId, MarketInfo>,
    seqs: BTreeMap<MarketId, u64>,
}

impl Renderer {
    fn next_seq(&mut self, market: MarketId) -> u64 {
        let s = self.seqs.entry(market).or_insert(0);
        *s += 1;
        *s
    }

    /// Advances the product sequences over `b` and renders into `out` the kinds `want` asks
    /// for ([`WANT_LEVEL2`], ...). `seqs` gets the sequence of each product the batch touched.
    pub(crate) fn render(
        &mut self,
        guard: &mut ModelGuard<'_>,
        b: &BatchEvents,
        want: [bool; 4],
        out: &mut Vec<Pub>,
        seqs: &mut Vec<(MarketId, u64)>,
    ) {
        let time = rfc3339(b.timestamp_ns);
        let mut group: Option<(usize, MarketId, u64, Vec<Value>)> = None;
        let mut traded: Vec<MarketId> = Vec::new();
        let mut touched: Vec<MarketId> = Vec::new();
        for (i, e) in b.events.iter().enumerate() {
            crate::fanout::let_the_replica_in(guard, i);
            let m: &ReadModel = guard;
            let Event::Trading(t) = e else {
                self.flush(out, group.take(), &time);
                continue;
            };
            if let TradingEvent::Level {
                market,
                book_seq,
                side,
                price,
                qty,
                ..
            } = t
            {
                if !want[WANT_LEVEL2] {
                    continue;
                }
                let Some(info) = market_info(&mut self.info, m, *market) else {
                    continue;
                };
                let change = json!([
                    view::side_name(*side),
                    info.r.scale.price(*price),
                    info.r.scale.size(*qty)
                ]);
                match &mut group {
                    Some((at, m2, s2, changes)) if m2 == market && s2 == book_seq => {
                        *at = i;
                        changes.push(change);
                    }
                    _ => {
                        self.flush(out, group.take(), &time);
                        group = Some((i, *market, *book_seq, vec![change]));
                    }
                }
                continue;
            }
            self.flush(out, group.take(), &time);
            let market = match t {
                TradingEvent::OrderAccepted { market, .. }
                | TradingEvent::OrderRested { market, .. }
                | TradingEvent::OrderDone { market, .. } => *market,
                TradingEvent::Trade(tr) => tr.market,
                _ => continue,
            };
            let seq = self.next_seq(market);
            if !touched.contains(&market) {
                touched.push(market);
            }
            if let TradingEvent::Trade(_) = t {
                if !traded.contains(&market) {
                    traded.push(market);
                }
            }
            let is_trade = matches!(t, TradingEvent::Trade(_));
            if want[WANT_FULL] || (is_trade && want[WANT_MATCHES]) {
                if let Some(p) = self.full_msg(m, i, t, seq, &time, want[WANT_FULL]) {
                    out.push(p);
                }
            }
        }
        self.flush(out, group.take(), &time);
        let m: &ReadModel = guard;
        if want[WANT_TICKER] {
            for id in traded {
                let seq = self.seqs.get(&id).copied().unwrap_or(0);
                let Some(info) = market_info(&mut self.info, m, id) else {
                    continue;
                };
                out.push(Pub {
                    at: usize::MAX,
                    market: id,
                    kind: K_TICKER,
                    seq,
                    users: [None, None],
                    own: [None, None],
                    msg: text(&ticker_json(m, id, info, seq)),
                });
            }
        }
        for id in touched {
            seqs.push((id, self.seqs.get(&id).copied().unwrap_or(0)));
        }
    }

    fn flush(&self, out: &mut Vec<Pub>, group: Option<(usize, MarketId, u64, Vec<Value>)>, time: &str) {
        let Some((at, market, sequence, changes)) = group else {
            return;
        };
        let Some(i) = self.info.get(&market) else {
            return;
        };
        out.push(Pub {
            at,
            market,
            kind: K_L2UPDATE,
            seq: sequence,
            users: [None, None],
            own: [None, None],
            msg: text(&json!({
                "type": "l2update",
                "product_id": i.symbol,
                "changes": changes,
                "time": time,
                "sequence": sequence,
            })),
        });
    }

    /// The `full` channel message of an order event or trade, with its owners' `user` variants.
    /// With `own`, also the `user` channel's variants for the owners.
    fn full_msg(
        &mut self,
        m: &ReadModel,
        at: usize,
        e: &TradingEvent,
        seq: u64,
        time: &str,
        own: bool,
    ) -> Option<Pub> {
        let trading = m.engine.trading();
        match e {
            TradingEvent::OrderAccepted {
                order,
                user,
                market,
                client_id,
                side,
                limit,
                qty,
            } => {
                let i = market_info(&mut self.info, m, *market)?;
                let record = trading.order(*order);
                let mut v = Map::new();
                v.insert("type".into(), json!("received"));
                v.insert("time".into(), json!(time));
                v.insert("product_id".into(), json!(i.symbol));
                v.insert("sequence".into(), json!(seq));
                v.insert("order_id".into(), json!(order.0.to_string()));
                v.insert("side".into(), json!(view::side_name(*side)));
                match record.map(|o| o.order_type) {
                    Some(OrderType::Market { funds }) => {
                        v.insert("order_type".into(), json!("market"));
                        match funds {
                            Some(f) => v.insert("funds".into(), json!(i.r.scale.quote(f.0))),
                            None => v.insert("size".into(), json!(i.r.scale.size(*qty))),
                        };
                    }
                    _ => {
                        v.insert("order_type".into(), json!("limit"));
                        v.insert("size".into(), json!(i.r.scale.size(*qty)));
                        v.insert("price".into(), json!(i.r.scale.price(*limit)));
                    }
                }
                let public = Value::Object(v.clone());
                if let Some(c) = client_id {
                    v.insert("client_oid".into(), json!(fmt_uuid(c.0)));
                }
                Some(order_pub(at, *market, seq, *user, public, v))
            }
            TradingEvent::OrderRested {
                order,
                user,
                market,
                side,
                price,
                qty,
            } => {
                let i = market_info(&mut self.info, m, *market)?;
                let v = json!({
                    "type": "open",
                    "time": time,
                    "product_id": i.symbol,
                    "sequence": seq,
                    "order_id": order.0.to_string(),
                    "price": i.r.scale.price(*price),
                    "remaining_size": i.r.scale.size(*qty),
                    "side": view::side_name(*side),
                });
                let own = v.as_object().cloned().unwrap_or_default();
                Some(order_pub(at, *market, seq, *user, v, own))
            }
            TradingEvent::OrderDone {
                order,
                user,
                market,
                status,
                filled,
                ..
            } => {
                let i = market_info(&mut self.info, m, *market)?;
                let record = trading.order(*order);
                let market_order = record.is_some_and(|o| matches!(o.order_type, OrderType::Market { .. }));
                // As REST reports it: a market order that ran out of book or funds after
                // filling some is filled.
                let reason = match status {
                    OrderStatus::Filled => "filled",
                    OrderStatus::Cancelled(CancelReason::Unfilled) if market_order && filled.0 > 0 => {
                        "filled"
                    }
                    _ => "canceled",
                };
                let mut v = Map::new();
                v.insert("type".into(), json!("done"));
                v.insert("time".into(), json!(time));
                v.insert("product_id".into(), json!(i.symbol));
                v.insert("sequence".into(), json!(seq));
                v.insert("order_id".into(), json!(order.0.to_string()));
                v.insert("reason".into(), json!(reason));
                if let Some(o) = record {
                    v.insert("side".into(), json!(view::side_name(o.side)));
                    let remaining = if reason == "filled" {
                        0
                    } else {
                        o.qty.0.saturating_sub(filled.0)
                    };
                    v.insert(
                        "remaining_size".into(),
                        json!(i.r.scale.size(kinko_core::book::Qty(remaining))),
                    );
                    if !market_order {
                        v.insert("price".into(), json!(i.r.scale.price(o.limit)));
                    }
                }
                Some(order_pub(at, *market, seq, *user, Value::Object(v.clone()), v))
            }
            TradingEvent::Trade(t) => {
                let i = market_info(&mut self.info, m, t.market)?;
                let public = match_json(i, t, seq, "match");
                let side_of = |maker: bool| {
                    let order = if maker { t.maker_order } else { t.taker_order };
                    let bps = trading
                        .order(order)
                        .map(|o| if maker { o.maker_bps } else { o.taker_bps });
                    let user = if maker { t.maker_user } else { t.taker_user };
                    let mut v = public.as_object().cloned().unwrap_or_default();
                    let who = if maker { "maker" } else { "taker" };
                    v.insert("user_id".into(), json!(user.0.to_string()));
                    v.insert("profile_id".into(), json!(user.0.to_string()));
                    v.insert(format!("{who}_user_id"), json!(user.0.to_string()));
                    v.insert(format!("{who}_profile_id"), json!(user.0.to_string()));
                    if let Some(bps) = bps {
                        v.insert(format!("{who}_fee_rate"), json!(super::history::bps_rate(bps)));
                    }
                    text(&Value::Object(v))
                };
                Some(Pub {
                    at,
                    market: t.market,
                    kind: K_MATCH,
                    seq,
                    users: [Some(t.maker_user), Some(t.taker_user)],
                    own: if own {
                        [Some(side_of(true)), Some(side_of(false))]
                    } else {
                        [None, None]
                    },
                    msg: text(&public),
                })
            }
            _ => None,
        }
    }
}

fn order_pub(
    at: usize,
    market: MarketId,
    seq: u64,
    user: UserId,
    public: Value,
    mut own: Map<String, Value>,
) -> Pub {
    own.insert("user_id".into(), json!(user.0.to_string()));
    own.insert("profile_id".into(), json!(user.0.to_string()));
    Pub {
        at,
        market,
        kind: K_ORDER,
        seq,
        users: [Some(user), None],
        own: [Some(text(&Value::Object(own))), None],
        msg: text(&public),
    }
}

fn match_json(i: &MarketInfo, t: &Trade, seq: u64, ty: &str) -> Value {
    json!({
        "type": ty,
        "trade_id": t.id,
        "sequence": seq,
        "maker_order_id": t.maker_order.0.to_string(),
        "taker_order_id": t.taker_order.0.to_string(),
        "time": rfc3339(t.timestamp_ns),
        "product_id": i.symbol,
        "size": i.r.scale.size(t.qty),
        "price": i.r.scale.price(t.price),
        "side": view::side_name(t.maker_side),
    })
}

fn ticker_json(m: &ReadModel, id: MarketId, i: &MarketInfo, seq: u64) -> Value {
    let t = view::ticker_of(m, &i.r, &i.symbol);
    let mut v = Map::new();
    v.insert("type".into(), json!("ticker"));
    v.insert("sequence".into(), json!(seq));
    v.insert("product_id".into(), json!(i.symbol));
    let mut put = |k: &str, x: Option<String>| {
        if let Some(x) = x {
            v.insert(k.into(), json!(x));
        }
    };
    put("price", t.last);
    put("open_24h", t.open_24h);
    put("volume_24h", Some(t.volume_24h));
    put("low_24h", t.low_24h);
    put("high_24h", t.high_24h);
    if let Some(mk) = m.engine.trading().market(id) {
        for (side, name) in [(Side::Buy, "best_bid"), (Side::Sell, "best_ask")] {
            let best = match side {
                Side::Buy => mk.book.best_bid(),
                Side::Sell => mk.book.best_ask(),
            };
            if let Some(p) = best {
                v.insert(name.into(), json!(i.r.scale.price(p)));
                v.insert(
                    format!("{name}_size"),
                    json!(i.r.scale.size(mk.book.level(side, p).0)),
                );
            }
        }
    }
    if let Some(last) = m.engine.trading().recent_trades(id, 1).first() {
        v.insert("side".into(), json!(view::side_name(last.maker_side.opposite())));
        v.insert("trade_id".into(), json!(last.id));
        v.insert("last_size".into(), json!(i.r.scale.size(last.qty)));
    }
    v.insert("time".into(), json!(t.time));
    Value::Object(v)
}

fn status_json(m: &ReadModel) -> Value {
    let products: Vec<Value> = (0..m.engine.trading().markets().len())
        .filter_map(|i| product_json(m, MarketId(i as u32)))
        .collect();
    let currencies: Vec<Value> = (0..m.engine.assets().len())
        .filter_map(|i| currency_json(m, AssetId(i as u32)))
        .collect();
    json!({ "type": "status", "products": products, "currencies": currencies })
}

// ---------------------------------------------------------------------------------------------
// One connection.

#[derive(Default)]
struct Subs {
    channels: u16,
    /// Sequence of the last level-2 snapshot or update sent.
    level2_seq: u64,
    /// Level-2 updates were dropped (the queue was full): a fresh snapshot is due.
    stale: bool,
    /// Book sequence of the last level-2 update dropped: a snapshot must show at least this one.
    dropped: u64,
    /// The product's sequence as of the last batch seen.
    seq: u64,
    /// The latest ticker not yet sent to `ticker_batch`.
    ticker_due: Option<Message>,
}

struct Conn {
    g: AppState,
    out: Outbox,
    events: Option<broadcast::Receiver<Arc<Rendered>>>,
    products: BTreeMap<MarketId, Subs>,
    status: bool,
    principal: Option<Principal>,
    ip: String,
    auth_failures: u32,
    info: BTreeMap<MarketId, MarketInfo>,
    limit: Limiter<()>,
    /// What this connection counts for in [`crate::fanout::Fanout::coinbase_interest`].
    interest: [bool; 4],
}

impl Drop for Conn {
    fn drop(&mut self) {
        crate::fanout::track(
            &self.g.ws.fanout.coinbase_interest,
            &mut self.interest,
            &[false; 4],
        );
    }
}

impl Conn {
    /// Tells the renderer what this connection reads now.
    fn sync_interest(&mut self) {
        let any = |bits: u16| self.products.values().any(|s| s.channels & bits != 0);
        let mut want = [false; 4];
        want[WANT_LEVEL2] = any(LEVEL2);
        want[WANT_MATCHES] = any(Channel::Matches.bit());
        want[WANT_TICKER] = any(Channel::Ticker.bit() | Channel::TickerBatch.bit());
        want[WANT_FULL] = any(PRIVATE);
        crate::fanout::track(&self.g.ws.fanout.coinbase_interest, &mut self.interest, &want);
    }

    fn ensure_events(&mut self) {
        if self.events.is_none() {
            self.events = Some(self.g.ws.fanout.subscribe(&self.g));
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let replies = match self.handle(text).await {
            Ok(r) => r,
            Err(e) => vec![e.msg()],
        };
        self.sync_interest();
        for r in replies {
            self.out.push(r).await?;
        }
        Ok(())
    }

    async fn handle(&mut self, text: &str) -> Result<Vec<Message>, Refusal> {
        if let Err(retry_after_s) = self.limit.take(&()) {
            return Err(Refusal::subscribe(
                "RATE_LIMITED",
                format!("too many messages; retry in {retry_after_s} s"),
            ));
        }
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Refusal::subscribe("INVALID_JSON", format!("the message is not JSON: {e}")))?;
        let msg: In =
            serde_json::from_value(v).map_err(|e| Refusal::subscribe("INVALID_PARAMETER", e.to_string()))?;
        match msg.ty.as_str() {
            "subscribe" => {
                self.authenticate(&msg).await?;
                // Snapshots show at least every write any client was told about (its own
                // orders included), as REST reads do.
                if self.g.caught_up().await.is_err() {
                    return Err(Refusal::subscribe(
                        "READ_MODEL_LAGGING",
                        "the read model is behind; subscribe again shortly",
                    ));
                }
                self.locked(|c| c.subscribe(&msg))
            }
            "unsubscribe" => self.locked(|c| c.unsubscribe(&msg)),
            other => Err(Refusal::subscribe(
                "INVALID_PARAMETER",
                format!("unknown message type {other:?}; known: subscribe, unsubscribe"),
            )),
        }
    }

    /// Runs `f`, which takes the read model's lock, on the fan-out's model thread
    /// ([`crate::fanout::Fanout::locked`]).
    fn locked<R: Send>(&mut self, f: impl FnOnce(&mut Self) -> R + Send) -> R {
        let g = self.g.clone();
        g.ws.fanout.locked(|| f(self))
    }

    /// Checks the signature fields of a subscribe message, if it has any.
    async fn authenticate(&mut self, msg: &In) -> Result<(), Refusal> {
        let ts = msg.timestamp.as_ref().map(|t| match t {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let (key, signature, passphrase, ts) = match (&msg.key, &msg.signature, &msg.passphrase, ts) {
            (None, None, None, None) => return Ok(()),
            (Some(k), Some(s), Some(p), Some(t)) => (k, s, p, t),
            _ => {
                return Err(Refusal::auth(
                    "UNAUTHORIZED",
                    "key, signature, passphrase and timestamp go together",
                ))
            }
        };
        if self.auth_failures >= AUTH_FAILURES_MAX {
            return Err(Refusal::auth(
                "UNAUTHORIZED",
                "too many failed attempts on this connection; reconnect to try again",
            ));
        }
        // Subscribed before the key is looked up, so that a revocation committed after the
        // lookup is seen.
        self.ensure_events();
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("cb-access-key", key.as_str()),
            ("cb-access-sign", signature.as_str()),
            ("cb-access-timestamp", ts.as_str()),
            ("cb-access-passphrase", passphrase.as_str()),
        ] {
            let v = HeaderValue::from_str(value).map_err(|_| {
                self.auth_failures += 1;
                Refusal::auth("UNAUTHORIZED", "invalid signature")
            })?;
            h.insert(name, v);
        }
        let (g, ip) = (self.g.clone(), self.ip.clone());
        let checked = self
            .g
            .ws
            .fanout
            .at_home(async move { auth::coinbase(&g, &ip, "GET", "/users/self/verify", &h, b"").await })
            .await
            .ok_or_else(|| Refusal::auth("SHUTTING_DOWN", "the server is shutting down"))?;
        let p = match checked {
            Ok(p) => p,
            Err(e) => {
                if e.code != "RATE_LIMITED" {
                    self.auth_failures += 1;
                }
                return Err(Refusal::auth(e.code, e.message));
            }
        };
        if !p.permissions.view {
            return Err(Refusal::auth(
                "FORBIDDEN",
                "this API key lacks the view permission",
            ));
        }
        self.principal = Some(p);
        Ok(())
    }

    /// The channels and products a (un)subscribe message names: (channel, products).
    fn wanted(&self, msg: &In, m: &ReadModel) -> Result<Vec<(Channel, Vec<MarketId>)>, Refusal> {
        if msg.channels.is_empty() {
            return Err(Refusal::subscribe("INVALID_PARAMETER", "No channels provided"));
        }
        let mut out = Vec::new();
        for c in &msg.channels {
            let (name, ids) = match c {
                ChannelIn::Name(n) => (n, &msg.product_ids),
                ChannelIn::With { name, product_ids } if product_ids.is_empty() => (name, &msg.product_ids),
                ChannelIn::With { name, product_ids } => (name, product_ids),
            };
            let ch = CHANNELS.into_iter().find(|c| c.name() == name).ok_or_else(|| {
                let known: Vec<&str> = CHANNELS.iter().map(|c| c.name()).collect();
                Refusal::subscribe(
                    "INVALID_PARAMETER",
                    format!("{name} is not a valid channel; known: {}", known.join(", ")),
                )
            })?;
            if ids.len() > SUBSCRIPTIONS_MAX {
                return Err(Refusal::subscribe(
                    "INVALID_PARAMETER",
                    format!("at most {SUBSCRIPTIONS_MAX} product ids per channel"),
                ));
            }
            let mut markets = Vec::new();
            for id in ids {
                let r = view::market_ref(m, &id.to_ascii_uppercase()).map_err(|_| {
                    Refusal::subscribe("MARKET_NOT_FOUND", format!("{id} is not a valid product"))
                })?;
                markets.push(r.id);
            }
            markets.sort_unstable();
            markets.dedup();
            out.push((ch, markets));
        }
        Ok(out)
    }

    fn count(&self) -> usize {
        self.products
            .values()
            .map(|s| s.channels.count_ones() as usize)
            .sum::<usize>()
            + usize::from(self.status)
    }

    fn subscribe(&mut self, msg: &In) -> Result<Vec<Message>, Refusal> {
        // The stream must be subscribed before a snapshot is taken: every change after the
        // snapshot then arrives on it, and the ones before are recognized by their sequence.
        self.ensure_events();
        let g = self.g.clone();
        let m = g.read.model();
        let wanted = self.wanted(msg, &m)?;
        let mut added = 0;
        for (ch, ids) in &wanted {
            if ch.private() && self.principal.is_none() {
                return Err(Refusal::subscribe(
                    "UNAUTHORIZED",
                    format!(
                        "the {} channel needs an authenticated subscribe (key, passphrase, timestamp, signature)",
                        ch.name()
                    ),
                ));
            }
            if *ch == Channel::Status {
                added += usize::from(!self.status);
                continue;
            }
            if ids.is_empty() {
                return Err(Refusal::subscribe(
                    "INVALID_PARAMETER",
                    format!("No product ids provided for the {} channel", ch.name()),
                ));
            }
            added += ids
                .iter()
                .filter(|id| self.products.get(id).is_none_or(|s| s.channels & ch.bit() == 0))
                .count();
        }
        if self.count() + added > SUBSCRIPTIONS_MAX {
            return Err(Refusal::subscribe(
                "TOO_MANY_SUBSCRIPTIONS",
                format!("at most {SUBSCRIPTIONS_MAX} subscriptions (channel × product) per connection"),
            ));
        }
        let seqs = g.ws.fanout.cb_seqs.lock().clone();
        let mut extra = Vec::new();
        for (ch, ids) in wanted {
            if ch == Channel::Status {
                self.status = true;
                extra.push(text(&status_json(&m)));
                continue;
            }
            for id in ids {
                let Some(info) = market_info(&mut self.info, &m, id) else {
                    continue;
                };
                let s = self.products.entry(id).or_insert_with(|| Subs {
                    seq: seqs.get(&id).copied().unwrap_or(0),
                    ..Subs::default()
                });
                let had = s.channels;
                s.channels |= ch.bit();
                match ch {
                    // A fresh snapshot on every level-2 subscribe, as the native feed does.
                    Channel::Level2 | Channel::Level2Batch => {
                        let book = view::book_snapshot(&m, &info.r, &info.symbol, usize::MAX);
                        s.level2_seq = book.sequence;
                        s.stale = false;
                        extra.push(snapshot_msg(&info.symbol, book, m.engine.last_timestamp_ns()));
                    }
                    Channel::Ticker | Channel::TickerBatch if had & ch.bit() == 0 => {
                        extra.push(text(&ticker_json(&m, id, info, s.seq)));
                    }
                    Channel::Matches if had & ch.bit() == 0 => {
                        if let Some(t) = m.engine.trading().recent_trades(id, 1).first() {
                            extra.push(text(&match_json(info, t, s.seq, "last_match")));
                        }
                    }
                    _ => {}
                }
            }
        }
        // While the snapshot's state is still locked: every later batch is rendered for it.
        self.sync_interest();
        drop(m);
        let mut replies = vec![self.ack()];
        replies.append(&mut extra);
        Ok(replies)
    }

    fn unsubscribe(&mut self, msg: &In) -> Result<Vec<Message>, Refusal> {
        let g = self.g.clone();
        let wanted = {
            let m = g.read.model();
            self.wanted(msg, &m)?
        };
        for (ch, ids) in wanted {
            if ch == Channel::Status {
                self.status = false;
                continue;
            }
            let ids: Vec<MarketId> = if ids.is_empty() {
                self.products.keys().copied().collect()
            } else {
                ids
            };
            for id in ids {
                if let Some(s) = self.products.get_mut(&id) {
                    s.channels &= !ch.bit();
                    if s.channels == 0 {
                        self.products.remove(&id);
                    }
                }
            }
        }
        Ok(vec![self.ack()])
    }

    fn ack(&self) -> Message {
        let mut channels = Vec::new();
        for c in CHANNELS {
            if c == Channel::Status {
                if self.status {
                    channels.push(json!({"name": "status", "product_ids": []}));
                }
                continue;
            }
            let ids: Vec<&str> = self
                .products
                .iter()
                .filter(|(_, s)| s.channels & c.bit() != 0)
                .filter_map(|(id, _)| self.info.get(id).map(|i| i.symbol.as_str()))
                .collect();
            if !ids.is_empty() {
                channels.push(json!({"name": c.name(), "product_ids": ids}));
            }
        }
        text(&json!({"type": "subscriptions", "channels": channels}))
    }

    /// Ends `user` and `full` if the key or its owner may no longer act.
    fn recheck(&mut self) -> Vec<Message> {
        let Some(p) = self.principal.as_ref() else {
            return Vec::new();
        };
        let g = &self.g;
        let Err(e) = g.ws.fanout.locked(|| still_usable(g, p)) else {
            return Vec::new();
        };
        tracing::info!(user = ?p.user, code = e.code, "coinbase feed authentication ended");
        self.principal = None;
        for s in self.products.values_mut() {
            s.channels &= !PRIVATE;
        }
        self.products.retain(|_, s| s.channels != 0);
        self.sync_interest();
        let r = Refusal::auth(e.code, format!("{}; the user and full channels ended", e.message));
        vec![r.msg(), self.ack()]
    }

    async fn on_batch(&mut self, r: &Rendered) -> Result<(), End> {
        if r.lost {
            return Err(End::Slow(
                "the connection fell too far behind and is being closed; reconnect and resubscribe",
            ));
        }
        for p in &r.parts {
            self.on_part(p).await?;
        }
        self.resync().await
    }

    /// One batch of a delivery.
    async fn on_part(&mut self, r: &Part) -> Result<(), End> {
        if self.products.is_empty() {
            return Ok(());
        }
        let touches_auth = self.principal.is_some()
            && r.batch
                .events
                .iter()
                .any(|e| matches!(e, Event::Key(_) | Event::Identity(_)));
        if touches_auth {
            for m in self.recheck() {
                self.out.push(m).await?;
            }
        }
        let me = self.principal.as_ref().map(|p| p.user);
        for p in &r.coinbase {
            let Some(s) = self.products.get_mut(&p.market) else {
                continue;
            };
            match p.kind {
                K_L2UPDATE => {
                    if s.channels & LEVEL2 == 0 {
                        continue;
                    }
                    if s.stale {
                        s.dropped = s.dropped.max(p.seq);
                        continue;
                    }
                    if p.seq <= s.level2_seq {
                        continue;
                    }
                    if self.out.offer(p.msg.clone())? {
                        s.level2_seq = p.seq;
                    } else {
                        s.stale = true;
                        s.dropped = p.seq;
                    }
                }
                K_TICKER => {
                    if s.channels & Channel::Ticker.bit() != 0 {
                        self.out.offer(p.msg.clone())?;
                    }
                    if s.channels & Channel::TickerBatch.bit() != 0 {
                        s.ticker_due = Some(p.msg.clone());
                    }
                }
                _ => {
                    let own = (0..2).find(|k| me.is_some() && p.users[*k] == me);
                    let want_public = if p.kind == K_MATCH {
                        Channel::Matches.bit() | Channel::Full.bit()
                    } else {
                        Channel::Full.bit()
                    };
                    let msg = match own.and_then(|k| p.own[k].as_ref()) {
                        Some(o) if s.channels & Channel::User.bit() != 0 => o.clone(),
                        _ if s.channels & want_public != 0 => p.msg.clone(),
                        _ => continue,
                    };
                    self.out.push(msg).await?;
                }
            }
        }
        for (id, seq) in &r.cb_seqs {
            if let Some(s) = self.products.get_mut(id) {
                s.seq = *seq;
            }
        }
        Ok(())
    }

    /// A fresh snapshot of each product whose level-2 updates were dropped, once there is room.
    async fn resync(&mut self) -> Result<(), End> {
        if !self.products.values().any(|s| s.stale) || !self.out.has_room() {
            return Ok(());
        }
        let g = self.g.clone();
        let mut msgs = Vec::new();
        for (id, s) in self.products.iter_mut().filter(|(_, s)| s.stale) {
            if let Some((seq, m)) = g.ws.fanout.cached_snapshot(1, *id, s.dropped) {
                msgs.push(m);
                s.level2_seq = seq;
                s.stale = false;
            }
        }
        if self.products.values().any(|s| s.stale) {
            msgs.extend(self.locked(|c| {
                let g = c.g.clone();
                let m = g.read.model();
                let mut msgs = Vec::new();
                for (id, s) in c.products.iter_mut().filter(|(_, s)| s.stale) {
                    let Some(info) = market_info(&mut c.info, &m, *id) else {
                        continue;
                    };
                    let Some(seq) = m.engine.trading().market(*id).map(|mk| mk.meta.book_seq) else {
                        continue;
                    };
                    msgs.push(g.ws.fanout.snapshot(1, *id, seq, || {
                        let book = view::book_snapshot(&m, &info.r, &info.symbol, usize::MAX);
                        snapshot_msg(&info.symbol, book, m.engine.last_timestamp_ns())
                    }));
                    s.level2_seq = seq;
                    s.stale = false;
                }
                msgs
            }));
        }
        for m in msgs {
            self.out.push(m).await?;
        }
        Ok(())
    }

    fn on_heartbeat(&mut self) -> Result<(), End> {
        if !self
            .products
            .values()
            .any(|s| s.channels & Channel::Heartbeat.bit() != 0)
        {
            return Ok(());
        }
        let g = self.g.clone();
        let time = rfc3339(now_ns());
        let mut msgs = Vec::new();
        g.ws.fanout.locked(|| {
            let m = g.read.model();
            for (id, s) in &self.products {
                if s.channels & Channel::Heartbeat.bit() == 0 {
                    continue;
                }
                let Some(info) = self.info.get(id) else { continue };
                let last = m
                    .engine
                    .trading()
                    .recent_trades(*id, 1)
                    .first()
                    .map_or(0, |t| t.id);
                msgs.push(text(&json!({
                    "type": "heartbeat",
                    "sequence": s.seq,
                    "last_trade_id": last,
                    "product_id": info.symbol,
                    "time": time,
                })));
            }
        });
        for m in msgs {
            self.out.offer(m)?;
        }
        Ok(())
    }

    async fn on_slow_tick(&mut self) -> Result<(), End> {
        let mut msgs = self.recheck();
        for s in self.products.values_mut() {
            if let Some(t) = s.ticker_due.take() {
                msgs.push(t);
            }
        }
        if self.status {
            let g = &self.g;
            msgs.push(g.ws.fanout.locked(|| text(&status_json(&g.read.model()))));
        }
        for m in msgs {
            self.out.push(m).await?;
        }
        Ok(())
    }
}

fn snapshot_msg(symbol: &str, book: view::BookOut, time_ns: u64) -> Message {
    let side = |levels: Vec<[String; 3]>| -> Vec<Value> {
        levels.into_iter().map(|[p, s, _]| json!([p, s])).collect()
    };
    text(&json!({
        "type": "snapshot",
        "product_id": symbol,
        "bids": side(book.bids),
        "asks": side(book.asks),
        "sequence": book.sequence,
        "time": rfc3339(time_ns),
    }))
}

async fn run(g: AppState, socket: Socket, ticket: Ticket, ip: String) {
    let _feed = FeedConn::new(&g.ws.fanout.coinbase_conns);
    let Socket {
        reader: mut stream,
        writer: sink,
    } = socket;
    let (out, rx) = Outbox::new(&g);
    let (last_tx, last_rx) = oneshot::channel::<Vec<Message>>();
    let writer = tokio::spawn(crate::fanout::write(
        g.clone(),
        sink,
        rx,
        last_rx,
        slow_msg("the connection made no progress and is being closed; reconnect and resubscribe"),
    ));
    let mut closing = g.ws.closing_signal();
    let start = tokio::time::Instant::now();
    let mut heartbeat = tokio::time::interval_at(start + HEARTBEAT_EVERY, HEARTBEAT_EVERY);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut slow_tick = tokio::time::interval_at(start + SLOW_TICK, SLOW_TICK);
    slow_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ping_every = g.config.ws.ping_every;
    let mut ping = tokio::time::interval_at(start + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // While a book is stale, a fresh snapshot goes out as soon as the queue has room again,
    // even if no batch comes to trigger it.
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = start;
    let mut conn = Conn {
        g: g.clone(),
        out,
        events: None,
        products: BTreeMap::new(),
        status: false,
        principal: None,
        ip,
        auth_failures: 0,
        info: BTreeMap::new(),
        limit: Limiter::new(MESSAGE_RATE, 1),
        interest: [false; 4],
    };
    let end = loop {
        let step = tokio::select! {
            _ = async { drop(closing.wait_for(|c| *c).await) } => Err(End::Shutdown),
            m = stream.next() => {
                heard = tokio::time::Instant::now();
                match m {
                    Some(Ok(Incoming::Text(t))) => conn.on_text(&t).await,
                    Some(Ok(Incoming::Binary)) => Err(End::Refused(close_code::UNSUPPORTED)),
                    Some(Ok(Incoming::Ping(p))) => conn.out.offer(Message::Pong(p)).map(drop),
                    Some(Ok(Incoming::Pong)) => Ok(()),
                    Some(Ok(Incoming::Close)) => Err(End::Closed),
                    None => Err(End::Gone),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read failed");
                        Err(End::Refused(close_code::POLICY))
                    }
                }
            },
            b = next_batch(&mut conn.events) => match b {
                Ok(b) => conn.on_batch(&b).await,
                Err(broadcast::error::RecvError::Lagged(_)) => Err(End::Slow(
                    "the connection fell too far behind and is being closed; reconnect and resubscribe",
                )),
                Err(broadcast::error::RecvError::Closed) => Err(End::Shutdown),
            },
            _ = conn.out.closed() => Err(End::Gone),
            _ = resync.tick(), if conn.products.values().any(|s| s.stale) => conn.resync().await,
            _ = heartbeat.tick() => conn.on_heartbeat(),
            _ = slow_tick.tick() => conn.on_slow_tick().await,
            _ = ping.tick() => {
                if heard.elapsed() >= g.config.ws.pong_wait {
                    Err(End::Slow(NO_PONG))
                } else {
                    conn.out.offer(Message::Ping(Default::default())).map(drop)
                }
            }
        };
        if let Err(end) = step {
            break end;
        }
    };
    let last = match end {
        End::Gone => Vec::new(),
        End::Closed => vec![close(close_code::NORMAL, "")],
        End::Slow(why) => {
            g.metrics.ws_slow_disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(user = ?conn.principal.as_ref().map(|p| p.user), "coinbase feed client too slow; disconnected");
            vec![slow_msg(why), close(close_code::POLICY, "slow consumer")]
        }
        End::Refused(code) => vec![close(code, "JSON text frames of at most 16 KiB only")],
        End::Shutdown => vec![close(close_code::AWAY, "server shutting down")],
    };
    drop(conn);
    let _ = last_tx.send(last);
    crate::fanout::close_out(writer, stream, g.config.ws.final_write).await;
    drop(ticket);
}
