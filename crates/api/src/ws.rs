//! WebSocket at `/api/v1/ws`: market data and private channels.
//!
//! Every message is one JSON text frame. Amounts, prices and sizes are decimal strings as in
//! the native API; times are RFC 3339 UTC; errors carry stable codes like the HTTP API's.
//!
//! # Client → server
//!
//! - `{"type":"subscribe","channels":["level2","trades","ticker","candles"],"markets":["BTC-USD"]}`
//!   Public channels are per market and need `markets`. Private channels (`orders`, `fills`,
//!   `balances`, `withdrawals`) need an authenticated connection, cover every market and ignore
//!   `markets`. Subscribing again to `level2` sends a fresh snapshot.
//! - `{"type":"unsubscribe","channels":[...],"markets":[...]}` — without `markets`, from every
//!   market.
//! - `{"type":"auth","token":"<key id>.<secret>"}` — a native API key with the `view`
//!   permission, or a full session token; answered with `{"type":"authenticated","key_id":...}`
//!   (`session` for a session). Once per connection. The checks are REST's own
//!   ([`crate::auth::bearer_principal`]): the secret, expiry, the key's IP allowlist against the
//!   address the connection came from, the owner neither frozen nor disabled (a session: not
//!   disabled), the per-key rate.
//!
//! # When authentication ends
//!
//! The same checks run again ([`crate::auth::still_usable`]) after every committed batch with
//! a key or identity event (revocation, logout, session revocation, freeze, status change) and
//! every 5 s (expiry commits no event). When they fail the connection is not closed: it drops
//! back to public channels. Its private subscriptions end, nothing private of that batch is
//! sent, and it gets an `error` saying why (`UNAUTHORIZED` for a revoked key, else the failing
//! check's code: `SESSION_INVALID`, `ACCOUNT_FROZEN`, `ACCOUNT_DISABLED`, `API_KEY_EXPIRED`,
//! `API_KEY_IP_NOT_ALLOWED`), then a `subscriptions` message listing what is left. Public market
//! data goes on, so a client that streams both loses nothing it may still see; it may `auth`
//! again with a usable credential.
//! - `{"type":"ping"}` — answered with `{"type":"pong"}`.
//!
//! # Server → client
//!
//! - `subscriptions` after every (un)subscribe: `{"type":"subscriptions","channels":[{"name":
//!   "level2","markets":["BTC-USD"]},{"name":"orders"}]}` (everything subscribed).
//! - `error`: `{"type":"error","code":"INVALID_JSON","message":...}`. A bad message changes
//!   nothing and the connection stays open. Codes: `INVALID_JSON` (not JSON), `INVALID_PARAMETER`
//!   (unknown message type or channel, missing field), `MARKET_NOT_FOUND`, `UNAUTHORIZED` (private
//!   channel before `auth`, bad token, revoked key), `FORBIDDEN` (key without `view`), the
//!   refusals of REST authentication (`API_KEY_IP_NOT_ALLOWED`, `ACCOUNT_FROZEN`, ...),
//!   `ALREADY_AUTHENTICATED`, `TOO_MANY_SUBSCRIPTIONS` (more than [`SUBSCRIPTIONS_MAX`] channel ×
//!   market pairs), `RATE_LIMITED`, `SLOW_CONSUMER` (last message before the server closes).
//! - `level2_snapshot` on subscribe: `{"market","sequence","bids":[[price,size,orders]...],
//!   "asks":[...]}`, the whole book, best first. Then `level2_update`: `{"market","sequence",
//!   "changes":[[side,price,size,orders]...]}`, one per book change in sequence order; `side` is
//!   `buy` or `sell` and a zero `size` removes the level. `sequence` is the market's level-2
//!   sequence (as in `GET /markets/{symbol}/book`): each update's is the previous one's + 1, the
//!   first one's is the snapshot's + 1. A client that sees anything else resubscribes for a new
//!   snapshot.
//! - `trade`: `{"market","trade_id","price","size","side","time"}` (`side` is the taker's).
//! - `ticker`: the 24-hour ticker as `GET /markets/{symbol}/ticker`, on subscribe and after
//!   each batch with trades in the market.
//! - `candle`: `{"market","granularity":60,"start","open","high","low","close","volume","trades"}`,
//!   the current one-minute candle, after each batch with trades in the market (`start` in Unix
//!   seconds as in `GET /markets/{symbol}/candles`).
//! - `order` (private): `{"order_id","market","side","status","time",...}`; `status` is
//!   `received` (accepted: `client_order_id`, `price`, `size`), `open` (resting:
//!   `price`, `remaining_size`), `filled` or `cancelled` (done: `cancel_reason`, `filled_size`,
//!   `executed_value`, `fees`).
//! - `fill` (private): as `GET /fills`.
//! - `balance` (private): `{"asset","total","available","hold","time"}` when it changes.
//! - `withdrawal` (private): as `GET /withdrawals/{id}`, on every status change.
//!
//! # Limits
//!
//! Frames from the client are at most [`FRAME_BYTES_MAX`]; a larger one, or a binary frame,
//! closes the connection. A client may send [`MESSAGE_RATE`] messages; more are answered with
//! `RATE_LIMITED`. Each connection has a bounded outgoing queue ([`WsConfig::queue_messages`])
//! and reads the committed-batch stream through a bounded broadcast receiver
//! ([`kinko_engine::replica::EVENT_BUFFER_BATCHES`]). A client whose queue stays full for
//! [`WsConfig::queue_wait`] (a burst larger than the queue is fine if it keeps reading), or
//! whose receiver lags, gets a `SLOW_CONSUMER` error (if it can still be written) and is
//! disconnected; so the server never holds more than that per connection, whatever the client
//! does. At most [`WsConfig::connections_max`] connections are open at once (more are refused
//! with 503 `TOO_MANY_CONNECTIONS`). When the gateway shuts down every connection is closed
//! with 1001.

use crate::auth::{bearer_principal, still_usable, ClientIp, Principal};
use crate::error::{ApiError, ApiResult};
use crate::ratelimit::RateClass;
use crate::ratelimit::{Limiter, Rate};
use crate::view::{self, MarketRef};
use crate::wire::{fmt_amount, fmt_uuid, rfc3339};
use crate::AppState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use kinko_core::engine::Event;
use kinko_core::market::MarketId;
use kinko_core::trading::{OrderStatus, TradingEvent};
use kinko_core::wallet::WalletEvent;
use kinko_core::UserId;
use kinko_engine::replica::{BatchEvents, Fill, ReadModel};
use serde::{Deserialize, Serialize};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Largest frame (and message) accepted from a client.
pub const FRAME_BYTES_MAX: usize = 16 * 1024;
/// Most channel × market subscriptions per connection (a private channel counts once).
pub const SUBSCRIPTIONS_MAX: usize = 100;
/// Failed `auth` messages allowed per connection; later ones are refused unchecked.
pub const AUTH_FAILURES_MAX: u32 = 5;
/// How long the last messages (`SLOW_CONSUMER`, close) may take to write before the connection
/// is dropped anyway.
const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often an authenticated connection checks its key or session again without an event
/// (for expiry, which commits none).
const RECHECK_EVERY: Duration = Duration::from_secs(5);
/// Granularity of the `candles` channel, in seconds.
const CANDLE_S: u64 = 60;
/// Messages a client may send per connection; beyond it they are refused with `RATE_LIMITED`.
pub const MESSAGE_RATE: Rate = Rate {
    burst: 100,
    per_second: 50,
};

/// WebSocket settings (part of [`crate::ApiConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsConfig {
    /// Connections open at once; more are refused with 503.
    pub connections_max: usize,
    /// Outgoing messages queued per connection.
    pub queue_messages: usize,
    /// How long a full queue may stay full before the client is disconnected as a slow
    /// consumer (a burst larger than the queue is fine if the client keeps reading).
    pub queue_wait: Duration,
}

impl Default for WsConfig {
    fn default() -> WsConfig {
        WsConfig {
            connections_max: 10_000,
            queue_messages: 1_024,
            queue_wait: Duration::from_secs(2),
        }
    }
}

/// The gateway's WebSocket bookkeeping: open connections and the shutdown signal.
pub struct Hub {
    live: watch::Sender<usize>,
    closing: watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            live: watch::channel(0).0,
            closing: watch::channel(false).0,
        }
    }
}

impl Hub {
    /// Open connections.
    pub fn connections(&self) -> usize {
        *self.live.borrow()
    }

    /// Closes every connection (with 1001) and refuses new ones.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once no connection is open.
    pub async fn drained(&self) {
        let mut rx = self.live.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// One open connection's place in the hub; freed when the connection's tasks are done.
struct Ticket(AppState);

impl Ticket {
    fn take(g: &AppState) -> ApiResult<Ticket> {
        if *g.ws.closing.borrow() {
            return Err(ApiError::unavailable(
                "SHUTTING_DOWN",
                "the server is shutting down",
            ));
        }
        let max = g.config.ws.connections_max;
        let ok = g.ws.live.send_if_modified(|n| {
            if *n < max {
                *n += 1;
                true
            } else {
                false
            }
        });
        if !ok {
            return Err(ApiError::unavailable(
                "TOO_MANY_CONNECTIONS",
                "too many WebSocket connections; retry later",
            ));
        }
        g.metrics.ws_connections.fetch_add(1, Ordering::Relaxed);
        Ok(Ticket(g.clone()))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.metrics.ws_connections.fetch_sub(1, Ordering::Relaxed);
        self.0.ws.live.send_modify(|n| *n = n.saturating_sub(1));
    }
}

pub async fn upgrade(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return ApiError::new(e.status(), "WEBSOCKET_EXPECTED", e.body_text()).into_response(),
    };
    let ticket = match Ticket::take(&g) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    ws.max_message_size(FRAME_BYTES_MAX)
        .max_frame_size(FRAME_BYTES_MAX)
        .read_buffer_size(8 * 1024)
        .on_upgrade(move |socket| run(g, socket, ticket, ip))
}

// ---------------------------------------------------------------------------------------------
// Channels and messages.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Channel {
    Level2,
    Trades,
    Ticker,
    Candles,
    Orders,
    Fills,
    Balances,
    Withdrawals,
}

const CHANNELS: [Channel; 8] = [
    Channel::Level2,
    Channel::Trades,
    Channel::Ticker,
    Channel::Candles,
    Channel::Orders,
    Channel::Fills,
    Channel::Balances,
    Channel::Withdrawals,
];

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Channel::Level2 => "level2",
            Channel::Trades => "trades",
            Channel::Ticker => "ticker",
            Channel::Candles => "candles",
            Channel::Orders => "orders",
            Channel::Fills => "fills",
            Channel::Balances => "balances",
            Channel::Withdrawals => "withdrawals",
        }
    }
    fn private(self) -> bool {
        matches!(
            self,
            Channel::Orders | Channel::Fills | Channel::Balances | Channel::Withdrawals
        )
    }
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Channel names → (public mask, private mask).
fn parse_channels(names: &[String]) -> ApiResult<(u8, u8)> {
    if names.is_empty() {
        return Err(ApiError::invalid("channels: name at least one channel"));
    }
    let (mut public, mut private) = (0u8, 0u8);
    for n in names {
        let c = CHANNELS.into_iter().find(|c| c.name() == n).ok_or_else(|| {
            let known: Vec<&str> = CHANNELS.iter().map(|c| c.name()).collect();
            ApiError::invalid(format!(
                "channels: unknown channel {n:?}; known: {}",
                known.join(", ")
            ))
        })?;
        if c.private() {
            private |= c.bit();
        } else {
            public |= c.bit();
        }
    }
    Ok((public, private))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum In {
    Subscribe {
        channels: Vec<String>,
        markets: Option<Vec<String>>,
    },
    Unsubscribe {
        channels: Vec<String>,
        markets: Option<Vec<String>>,
    },
    Auth {
        token: String,
    },
    Ping,
}

#[derive(Serialize)]
struct SubOut {
    name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    markets: Option<Vec<String>>,
}

#[derive(Serialize)]
struct CandleMsg<'a> {
    market: &'a str,
    granularity: u64,
    #[serde(flatten)]
    candle: view::CandleOut,
}

#[derive(Serialize, Default)]
struct OrderMsg<'a> {
    order_id: String,
    market: &'a str,
    side: Option<&'static str>,
    /// `pending` (a stop order waiting for its trigger), `triggered` (it is going into the
    /// book), `received`, `open`, `expired` (a good-till-time order's end; `cancelled` with
    /// reason `expired` follows), `filled` or `cancelled`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filled_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    executed_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fees: Option<String>,
    /// A stop order's direction (`loss` or `entry`) and price.
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_price: Option<String>,
    /// The last trade price that triggered a stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_price: Option<String>,
    /// A good-till-time order's expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    expire_time: Option<String>,
    time: String,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Out<'a> {
    Pong,
    Error {
        code: &'a str,
        message: &'a str,
    },
    Authenticated {
        key_id: &'a str,
    },
    Subscriptions {
        channels: Vec<SubOut>,
    },
    Level2Snapshot(view::BookOut),
    Level2Update {
        market: &'a str,
        sequence: u64,
        changes: Vec<[String; 4]>,
    },
    Trade {
        market: &'a str,
        trade_id: u64,
        price: String,
        size: String,
        side: &'static str,
        time: String,
    },
    Ticker(view::TickerOut),
    Candle(CandleMsg<'a>),
    Order(OrderMsg<'a>),
    Fill(view::FillOut),
    Balance {
        asset: String,
        total: String,
        available: String,
        hold: String,
        time: String,
    },
    Withdrawal(view::WithdrawalOut),
}

impl Out<'_> {
    fn msg(&self) -> Message {
        Message::Text(
            serde_json::to_string(self)
                .expect("messages always serialize")
                .into(),
        )
    }
}

fn error_msg(e: &ApiError) -> Message {
    Out::Error {
        code: e.code,
        message: &e.message,
    }
    .msg()
}

// ---------------------------------------------------------------------------------------------
// One connection.

/// A market's symbol and scale (market specs never change once defined).
struct MarketInfo {
    symbol: String,
    r: MarketRef,
}

fn market_info<'c>(
    cache: &'c mut BTreeMap<MarketId, MarketInfo>,
    m: &ReadModel,
    id: MarketId,
) -> Option<&'c MarketInfo> {
    match cache.entry(id) {
        Entry::Occupied(e) => Some(e.into_mut()),
        Entry::Vacant(e) => {
            let symbol = m.engine.trading().market(id)?.meta.spec.symbol.clone();
            let r = view::market_ref(m, &symbol).ok()?;
            Some(e.insert(MarketInfo { symbol, r }))
        }
    }
}

#[derive(Default)]
struct MarketSubs {
    /// Public channel bits.
    channels: u8,
    /// Sequence of the last level-2 snapshot or update sent.
    level2_seq: u64,
}

/// Why a connection ends.
enum End {
    /// The client closed, or the socket failed.
    Gone,
    /// Fell behind (outgoing queue full or broadcast lagged).
    Slow,
    /// A binary frame (1003) or one that could not be read, e.g. too large (1008).
    Refused(u16),
    Shutdown,
}

struct Conn {
    g: AppState,
    out: mpsc::Sender<Message>,
    /// The committed-batch stream; subscribed before the first snapshot is taken.
    events: Option<broadcast::Receiver<Arc<BatchEvents>>>,
    markets: BTreeMap<MarketId, MarketSubs>,
    /// Private channel bits.
    private: u8,
    principal: Option<Principal>,
    /// The client's address, as REST sees it (for a key's IP allowlist).
    ip: String,
    auth_failures: u32,
    info: BTreeMap<MarketId, MarketInfo>,
    limit: Limiter<()>,
}

impl Conn {
    /// Queues a message; waits at most `queue_wait` for room.
    async fn push(&self, m: Message) -> Result<(), End> {
        let m = match self.out.try_send(m) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(End::Gone),
            Err(mpsc::error::TrySendError::Full(m)) => m,
        };
        match tokio::time::timeout(self.g.config.ws.queue_wait, self.out.send(m)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Slow),
        }
    }

    fn ensure_events(&mut self) {
        if self.events.is_none() {
            self.events = Some(self.g.read.subscribe());
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let replies = match self.handle(text).await {
            Ok(r) => r,
            Err(e) => vec![error_msg(&e)],
        };
        for r in replies {
            self.push(r).await?;
        }
        Ok(())
    }

    async fn handle(&mut self, text: &str) -> ApiResult<Vec<Message>> {
        if let Err(retry_after_s) = self.limit.take(&()) {
            return Err(ApiError::rate_limited(retry_after_s));
        }
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ApiError::bad_json(format!("the message is not JSON: {e}")))?;
        let msg: In = serde_json::from_value(v).map_err(|e| ApiError::invalid(e.to_string()))?;
        match msg {
            In::Ping => Ok(vec![Out::Pong.msg()]),
            In::Auth { token } => self.auth(&token).await,
            In::Subscribe { channels, markets } => self.subscribe(&channels, markets.as_deref()),
            In::Unsubscribe { channels, markets } => self.unsubscribe(&channels, markets.as_deref()),
        }
    }

    async fn auth(&mut self, token: &str) -> ApiResult<Vec<Message>> {
        if self.principal.is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "ALREADY_AUTHENTICATED",
                "this connection is already authenticated",
            ));
        }
        if self.auth_failures >= AUTH_FAILURES_MAX {
            return Err(ApiError::unauthorized(
                "too many failed attempts on this connection; reconnect to try again",
            ));
        }
        // Subscribed before the key is looked up, so that a revocation committed after the
        // lookup is seen.
        self.ensure_events();
        let p = match bearer_principal(&self.g, token.trim(), self.ip.clone(), RateClass::Private).await {
            Ok(p) => p,
            Err(e) => {
                if e.code != "RATE_LIMITED" {
                    self.auth_failures += 1;
                }
                return Err(e);
            }
        };
        if !p.permissions.view {
            return Err(ApiError::forbidden("this API key lacks the view permission"));
        }
        let reply = Out::Authenticated { key_id: &p.key_id }.msg();
        self.principal = Some(p);
        Ok(vec![reply])
    }

    /// Drops the connection back to public channels if its principal may no longer act (key
    /// revoked or expired, session ended, owner frozen or disabled, address no longer allowed):
    /// the error says why. Returns the messages saying so, if it did.
    fn recheck(&mut self) -> Option<Vec<Message>> {
        let p = self.principal.as_ref()?;
        let e = still_usable(&self.g, p).err()?;
        tracing::info!(user = ?p.user, code = e.code, "websocket authentication ended");
        self.principal = None;
        self.private = 0;
        let e = ApiError::new(
            e.status,
            e.code,
            format!("{}; private subscriptions ended", e.message),
        );
        Some(vec![error_msg(&e), self.ack()])
    }

    /// The periodic check (expiry has no event).
    async fn on_tick(&mut self) -> Result<(), End> {
        for m in self.recheck().unwrap_or_default() {
            self.push(m).await?;
        }
        Ok(())
    }

    fn count(&self) -> usize {
        self.markets
            .values()
            .map(|s| s.channels.count_ones() as usize)
            .sum::<usize>()
            + self.private.count_ones() as usize
    }

    fn subscribe(&mut self, channels: &[String], markets: Option<&[String]>) -> ApiResult<Vec<Message>> {
        let (public, private) = parse_channels(channels)?;
        if private != 0 && self.principal.is_none() {
            return Err(ApiError::unauthorized(
                "private channels need an authenticated connection: send {\"type\":\"auth\",\"token\":...} first",
            ));
        }
        let names = markets.unwrap_or(&[]);
        if public != 0 && names.is_empty() {
            return Err(ApiError::invalid(
                "markets: name at least one market for level2, trades, ticker or candles",
            ));
        }
        if names.len() > SUBSCRIPTIONS_MAX {
            return Err(ApiError::invalid(format!(
                "markets: at most {SUBSCRIPTIONS_MAX} per message"
            )));
        }
        // The stream must be subscribed before a snapshot is taken: every change after the
        // snapshot then arrives on it, and the ones before are recognized by their sequence.
        self.ensure_events();
        let g = self.g.clone();
        let m = g.read.model();
        let mut ids = Vec::new();
        if public != 0 {
            for n in names {
                let r = view::market_ref(&m, n)
                    .map_err(|e| ApiError::new(e.status, e.code, format!("no such market: {n:?}")))?;
                ids.push(r.id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let added: usize = ids
            .iter()
            .map(|id| {
                let have = self.markets.get(id).map_or(0, |s| s.channels);
                (public & !have).count_ones() as usize
            })
            .sum::<usize>()
            + (private & !self.private).count_ones() as usize;
        if self.count() + added > SUBSCRIPTIONS_MAX {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "TOO_MANY_SUBSCRIPTIONS",
                format!("at most {SUBSCRIPTIONS_MAX} subscriptions (channel × market) per connection"),
            ));
        }
        self.private |= private;
        let mut extra = Vec::new();
        for id in ids {
            let Some(info) = market_info(&mut self.info, &m, id) else {
                continue;
            };
            let subs = self.markets.entry(id).or_default();
            subs.channels |= public;
            if public & Channel::Level2.bit() != 0 {
                let book = view::book_snapshot(&m, &info.r, &info.symbol, usize::MAX);
                subs.level2_seq = book.sequence;
                extra.push(Out::Level2Snapshot(book).msg());
            }
            if public & Channel::Ticker.bit() != 0 {
                extra.push(Out::Ticker(view::ticker_of(&m, &info.r, &info.symbol)).msg());
            }
        }
        drop(m);
        let mut replies = vec![self.ack()];
        replies.append(&mut extra);
        Ok(replies)
    }

    fn unsubscribe(&mut self, channels: &[String], markets: Option<&[String]>) -> ApiResult<Vec<Message>> {
        let (public, private) = parse_channels(channels)?;
        let ids: Vec<MarketId> = match markets {
            None => self.markets.keys().copied().collect(),
            Some(names) => {
                let m = self.g.read.model();
                names
                    .iter()
                    .map(|n| {
                        view::market_ref(&m, n)
                            .map(|r| r.id)
                            .map_err(|e| ApiError::new(e.status, e.code, format!("no such market: {n:?}")))
                    })
                    .collect::<ApiResult<_>>()?
            }
        };
        for id in ids {
            if let Some(s) = self.markets.get_mut(&id) {
                s.channels &= !public;
                if s.channels == 0 {
                    self.markets.remove(&id);
                }
            }
        }
        self.private &= !private;
        Ok(vec![self.ack()])
    }

    fn ack(&self) -> Message {
        let mut channels = Vec::new();
        for c in CHANNELS {
            if c.private() {
                if self.private & c.bit() != 0 {
                    channels.push(SubOut {
                        name: c.name(),
                        markets: None,
                    });
                }
                continue;
            }
            let markets: Vec<String> = self
                .markets
                .iter()
                .filter(|(_, s)| s.channels & c.bit() != 0)
                .filter_map(|(id, _)| self.info.get(id).map(|i| i.symbol.clone()))
                .collect();
            if !markets.is_empty() {
                channels.push(SubOut {
                    name: c.name(),
                    markets: Some(markets),
                });
            }
        }
        Out::Subscriptions { channels }.msg()
    }

    /// Turns one committed batch into this connection's messages and queues them.
    async fn on_batch(&mut self, b: &BatchEvents) -> Result<(), End> {
        if self.markets.is_empty() && self.principal.is_none() {
            return Ok(());
        }
        // The read side applied this batch before sending it: a key revoked, a session ended or
        // an owner frozen by it is seen now, and nothing private of the batch goes out after.
        let touches_auth = b
            .events
            .iter()
            .any(|e| matches!(e, Event::Key(_) | Event::Identity(_)));
        let mut out = if touches_auth {
            self.recheck().unwrap_or_default()
        } else {
            Vec::new()
        };
        let g = self.g.clone();
        {
            let m = g.read.model();
            let Conn {
                markets,
                private,
                principal,
                info,
                ..
            } = self;
            let me: Option<UserId> = principal.as_ref().map(|p| p.user);
            let time = rfc3339(b.timestamp_ns);
            let mut level2: Option<(MarketId, u64, Vec<[String; 4]>)> = None;
            let mut traded: Vec<MarketId> = Vec::new();
            for e in &b.events {
                if let Event::Trading(TradingEvent::Level { market, book_seq, .. }) = e {
                    let Some(change) = level2_change(markets, info, e) else {
                        continue;
                    };
                    match &mut level2 {
                        Some((m2, s2, changes)) if m2 == market && s2 == book_seq => changes.push(change),
                        _ => {
                            flush_level2(markets, info, &mut out, level2.take());
                            level2 = Some((*market, *book_seq, vec![change]));
                        }
                    }
                    continue;
                }
                flush_level2(markets, info, &mut out, level2.take());
                match e {
                    Event::Trading(TradingEvent::Trade(t)) => {
                        if !traded.contains(&t.market) {
                            traded.push(t.market);
                        }
                        trade_msgs(&m, markets, info, t, me, *private, &mut out);
                    }
                    Event::Trading(
                        o @ (TradingEvent::OrderAccepted { user, .. }
                        | TradingEvent::OrderRested { user, .. }
                        | TradingEvent::OrderDone { user, .. }
                        | TradingEvent::StopAccepted { user, .. }
                        | TradingEvent::StopTriggered { user, .. }
                        | TradingEvent::OrderExpired { user, .. }),
                    ) if mine(me, *private, *user, Channel::Orders) => {
                        out.extend(order_msg(&m, info, o, &time));
                    }
                    Event::Wallet(WalletEvent::Withdrawal(w))
                        if mine(me, *private, w.user, Channel::Withdrawals) =>
                    {
                        out.push(Out::Withdrawal(view::withdrawal_out(&m, &g.health, w)).msg());
                    }
                    _ => {}
                }
            }
            flush_level2(markets, info, &mut out, level2.take());
            market_stats_msgs(&m, markets, info, &traded, &mut out);
            balance_msgs(&m, b, me, *private, &time, &mut out);
        }
        for msg in out {
            self.push(msg).await?;
        }
        Ok(())
    }
}

/// Whether `user`'s private channel `c` goes to this connection (authenticated as `me`, with
/// the private channel bits `private`).
fn mine(me: Option<UserId>, private: u8, user: UserId, c: Channel) -> bool {
    me == Some(user) && private & c.bit() != 0
}

/// The change a `Level` event makes to a level-2 update, if the connection wants it: subscribed
/// to the market's `level2` and not yet past this book sequence.
fn level2_change(
    markets: &BTreeMap<MarketId, MarketSubs>,
    info: &BTreeMap<MarketId, MarketInfo>,
    e: &Event,
) -> Option<[String; 4]> {
    let Event::Trading(TradingEvent::Level {
        market,
        book_seq,
        side,
        price,
        qty,
        orders,
    }) = e
    else {
        return None;
    };
    let wanted = markets
        .get(market)
        .is_some_and(|s| s.channels & Channel::Level2.bit() != 0 && *book_seq > s.level2_seq);
    if !wanted {
        return None;
    }
    let i = info.get(market)?;
    Some([
        view::side_name(*side).to_owned(),
        i.r.scale.price(*price),
        i.r.scale.size(*qty),
        orders.to_string(),
    ])
}

/// A trade: the public `trade` message to the market's subscribers, a `fill` to each side that
/// is this connection's user.
fn trade_msgs(
    m: &ReadModel,
    markets: &BTreeMap<MarketId, MarketSubs>,
    info: &BTreeMap<MarketId, MarketInfo>,
    t: &kinko_core::trading::Trade,
    me: Option<UserId>,
    private: u8,
    out: &mut Vec<Message>,
) {
    let subscribed = markets
        .get(&t.market)
        .is_some_and(|s| s.channels & Channel::Trades.bit() != 0);
    if subscribed {
        if let Some(i) = info.get(&t.market) {
            out.push(
                Out::Trade {
                    market: &i.symbol,
                    trade_id: t.id,
                    price: i.r.scale.price(t.price),
                    size: i.r.scale.size(t.qty),
                    side: view::side_name(t.maker_side.opposite()),
                    time: rfc3339(t.timestamp_ns),
                }
                .msg(),
            );
        }
    }
    for f in Fill::both(t) {
        if !mine(me, private, f.user, Channel::Fills) {
            continue;
        }
        out.push(Out::Fill(view::fill_out(m, &f)).msg());
    }
}

/// The private `order` message for an order accepted, resting or done; None for other events.
fn order_msg(
    m: &ReadModel,
    info: &mut BTreeMap<MarketId, MarketInfo>,
    e: &TradingEvent,
    time: &str,
) -> Option<Message> {
    let msg = match e {
        TradingEvent::OrderAccepted {
            order,
            market,
            client_id,
            side,
            limit,
            qty,
            ..
        } => {
            let i = market_info(info, m, *market)?;
            OrderMsg {
                order_id: order.0.to_string(),
                market: &i.symbol,
                side: Some(view::side_name(*side)),
                status: "received",
                client_order_id: client_id.map(|c| fmt_uuid(c.0)),
                price: Some(i.r.scale.price(*limit)),
                size: Some(i.r.scale.size(*qty)),
                time: time.to_owned(),
                ..OrderMsg::default()
            }
        }
        TradingEvent::OrderRested {
            order,
            market,
            side,
            price,
            qty,
            ..
        } => {
            let client = m.engine.trading().order(*order).and_then(|o| o.client_id);
            let i = market_info(info, m, *market)?;
            OrderMsg {
                order_id: order.0.to_string(),
                market: &i.symbol,
                side: Some(view::side_name(*side)),
                status: "open",
                client_order_id: client.map(|c| fmt_uuid(c.0)),
                price: Some(i.r.scale.price(*price)),
                remaining_size: Some(i.r.scale.size(*qty)),
                time: time.to_owned(),
                ..OrderMsg::default()
            }
        }
        TradingEvent::OrderDone {
            order,
            market,
            status,
            filled,
            filled_notional,
            fees,
            ..
        } => {
            // Side and client id never change: the current record tells them.
            let known = m.engine.trading().order(*order);
            let (status, reason) = match status {
                OrderStatus::Pending => ("pending", None),
                OrderStatus::Open => ("open", None),
                OrderStatus::Filled => ("filled", None),
                OrderStatus::Cancelled(c) => ("cancelled", Some(view::cancel_reason_name(*c))),
            };
            let i = market_info(info, m, *market)?;
            OrderMsg {
                order_id: order.0.to_string(),
                market: &i.symbol,
                side: known.map(|o| view::side_name(o.side)),
                status,
                client_order_id: known.and_then(|o| o.client_id).map(|c| fmt_uuid(c.0)),
                cancel_reason: reason,
                filled_size: Some(i.r.scale.size(*filled)),
                executed_value: Some(i.r.scale.quote(*filled_notional)),
                fees: Some(i.r.scale.quote(*fees)),
                time: time.to_owned(),
                ..OrderMsg::default()
            }
        }
        TradingEvent::StopAccepted {
            order,
            market,
            client_id,
            side,
            stop,
            limit,
            qty,
            expires_ns,
            ..
        } => {
            let i = market_info(info, m, *market)?;
            OrderMsg {
                order_id: order.0.to_string(),
                market: &i.symbol,
                side: Some(view::side_name(*side)),
                status: "pending",
                client_order_id: client_id.map(|c| fmt_uuid(c.0)),
                price: limit.map(|l| i.r.scale.price(l)),
                size: Some(i.r.scale.size(*qty)),
                stop: Some(view::stop_name(stop.direction)),
                stop_price: Some(i.r.scale.price(stop.price)),
                expire_time: expires_ns.map(rfc3339),
                time: time.to_owned(),
                ..OrderMsg::default()
            }
        }
        TradingEvent::StopTriggered {
            order, market, last, ..
        } => {
            let known = m.engine.trading().order(*order);
            let i = market_info(info, m, *market)?;
            OrderMsg {
                order_id: order.0.to_string(),
                market: &i.symbol,
                side: known.map(|o| view::side_name(o.side)),
                status: "triggered",
                client_order_id: known.and_then(|o| o.client_id).map(|c| fmt_uuid(c.0)),
                stop: known.and_then(|o| o.stop).map(|s| view::stop_name(s.direction)),
                stop_price: known.and_then(|o| o.stop).map(|s| i.r.scale.price(s.price)),
                last_price: Some(i.r.scale.price(*last)),
                time: time.to_owned(),
                ..OrderMsg::default()
            }
        }
        TradingEvent::OrderExpired {
            order,
            market,
            expires_ns,
            ..
        } => {
            let known = m.engine.trading().order(*order);
            let i = market_info(info, m, *market)?;
            OrderMsg {
                order_id: order.0.to_string(),
                market: &i.symbol,
                side: known.map(|o| view::side_name(o.side)),
                status: "expired",
                client_order_id: known.and_then(|o| o.client_id).map(|c| fmt_uuid(c.0)),
                expire_time: Some(rfc3339(*expires_ns)),
                time: time.to_owned(),
                ..OrderMsg::default()
            }
        }
        _ => return None,
    };
    Some(Out::Order(msg).msg())
}

/// After a batch with trades in a market: its `ticker` and current one-minute `candle`, to the
/// market's subscribers.
fn market_stats_msgs(
    m: &ReadModel,
    markets: &BTreeMap<MarketId, MarketSubs>,
    info: &BTreeMap<MarketId, MarketInfo>,
    traded: &[MarketId],
    out: &mut Vec<Message>,
) {
    for id in traded {
        let Some(s) = markets.get(id) else { continue };
        let Some(i) = info.get(id) else { continue };
        if s.channels & Channel::Ticker.bit() != 0 {
            out.push(Out::Ticker(view::ticker_of(m, &i.r, &i.symbol)).msg());
        }
        if s.channels & Channel::Candles.bit() != 0 {
            if let Some(c) = view::candle_list(m, &i.r, CANDLE_S, 0, u64::MAX, 1).pop() {
                out.push(
                    Out::Candle(CandleMsg {
                        market: &i.symbol,
                        granularity: CANDLE_S,
                        candle: c,
                    })
                    .msg(),
                );
            }
        }
    }
}

/// The private `balance` messages: each of this connection's user's balances the batch changed.
fn balance_msgs(
    m: &ReadModel,
    b: &BatchEvents,
    me: Option<UserId>,
    private: u8,
    time: &str,
    out: &mut Vec<Message>,
) {
    for &(user, asset, available, held) in &b.balances {
        if !mine(me, private, user, Channel::Balances) {
            continue;
        }
        let decimals = m.engine.asset(asset).map_or(0, |a| a.decimals);
        out.push(
            Out::Balance {
                asset: view::asset_code(m, asset),
                total: fmt_amount(available.saturating_add(held), decimals),
                available: fmt_amount(available, decimals),
                hold: fmt_amount(held, decimals),
                time: time.to_owned(),
            }
            .msg(),
        );
    }
}

/// Emits a grouped level-2 update and records its sequence.
fn flush_level2(
    markets: &mut BTreeMap<MarketId, MarketSubs>,
    info: &BTreeMap<MarketId, MarketInfo>,
    out: &mut Vec<Message>,
    group: Option<(MarketId, u64, Vec<[String; 4]>)>,
) {
    let Some((market, sequence, changes)) = group else {
        return;
    };
    let (Some(s), Some(i)) = (markets.get_mut(&market), info.get(&market)) else {
        return;
    };
    s.level2_seq = sequence;
    out.push(
        Out::Level2Update {
            market: &i.symbol,
            sequence,
            changes,
        }
        .msg(),
    );
}

async fn next_batch(
    rx: &mut Option<broadcast::Receiver<Arc<BatchEvents>>>,
) -> Result<Arc<BatchEvents>, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

async fn run(g: AppState, socket: WebSocket, ticket: Ticket, ip: String) {
    let (sink, mut stream) = socket.split();
    let (tx, rx) = mpsc::channel(g.config.ws.queue_messages.max(1));
    let (last_tx, last_rx) = oneshot::channel::<Vec<Message>>();
    let writer = tokio::spawn(write(sink, rx, last_rx));
    let mut closing = g.ws.closing.subscribe();
    let mut recheck = tokio::time::interval(RECHECK_EVERY);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn = Conn {
        g: g.clone(),
        out: tx,
        events: None,
        markets: BTreeMap::new(),
        private: 0,
        principal: None,
        ip,
        auth_failures: 0,
        info: BTreeMap::new(),
        limit: Limiter::new(MESSAGE_RATE, 1),
    };
    let end = loop {
        let step = tokio::select! {
            _ = async { drop(closing.wait_for(|c| *c).await) } => Err(End::Shutdown),
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => conn.on_text(t.as_str()).await,
                Some(Ok(Message::Binary(_))) => Err(End::Refused(close_code::UNSUPPORTED)),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                Some(Ok(Message::Close(_))) | None => Err(End::Gone),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    Err(End::Refused(close_code::POLICY))
                }
            },
            b = next_batch(&mut conn.events) => match b {
                Ok(b) => conn.on_batch(&b).await,
                Err(broadcast::error::RecvError::Lagged(_)) => Err(End::Slow),
                Err(broadcast::error::RecvError::Closed) => Err(End::Shutdown),
            },
            _ = conn.out.closed() => Err(End::Gone),
            _ = recheck.tick() => conn.on_tick().await,
        };
        if let Err(end) = step {
            break end;
        }
    };
    let last = match end {
        End::Gone => Vec::new(),
        End::Slow => {
            g.metrics.ws_slow_disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(user = ?conn.principal.as_ref().map(|p| p.user), "websocket client too slow; disconnected");
            vec![
                error_msg(&ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SLOW_CONSUMER",
                    "the connection fell too far behind and is being closed; reconnect and resubscribe",
                )),
                close(close_code::POLICY, "slow consumer"),
            ]
        }
        End::Refused(code) => vec![close(code, "JSON text frames of at most 16 KiB only")],
        End::Shutdown => vec![close(close_code::AWAY, "server shutting down")],
    };
    // Free the subscription to the batch stream and the queue before waiting for the writer.
    drop(conn);
    drop(stream);
    let _ = last_tx.send(last);
    let _ = writer.await;
    drop(ticket);
}

/// Writes queued messages until the connection ends; then writes `last` (if given) with a
/// deadline. Queued messages not yet written are dropped at once.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Message>,
    mut last: oneshot::Receiver<Vec<Message>>,
) {
    loop {
        let m = tokio::select! {
            biased;
            l = &mut last => return finish(sink, queue, l.ok()).await,
            m = queue.recv() => m,
        };
        let Some(m) = m else {
            // The connection task is ending: its last words follow.
            let l = last.await.ok();
            return finish(sink, queue, l).await;
        };
        tokio::select! {
            biased;
            l = &mut last => return finish(sink, queue, l.ok()).await,
            r = sink.send(m) => {
                if r.is_err() {
                    return;
                }
            }
        }
    }
}

async fn finish(
    mut sink: SplitSink<WebSocket, Message>,
    queue: mpsc::Receiver<Message>,
    last: Option<Vec<Message>>,
) {
    drop(queue);
    let Some(last) = last else { return };
    let _ = tokio::time::timeout(FINAL_WRITE_TIMEOUT, async {
        for m in last {
            sink.send(m).await?;
        }
        Ok::<(), axum::Error>(())
    })
    .await;
}
