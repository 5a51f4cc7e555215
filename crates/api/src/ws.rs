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
//! `RATE_LIMITED`. Each connection has a bounded outgoing queue ([`WsConfig::queue_messages`]).
//! A client that falls behind is not waited for: while its queue is full, `level2_update` and
//! `ticker` / `candle` messages are dropped, and once there is room again a new
//! `level2_snapshot` of each market whose updates were dropped comes first (replace the book
//! with it; its `sequence` continues as after a subscription). Trades and private messages are
//! never dropped: one that does not fit within [`WsConfig::queue_wait`] makes the client a slow
//! consumer, as does a write that makes no progress for [`WsConfig::write_stall`] or a client
//! from which nothing, not even the pong to the server's ping (every [`WsConfig::ping_every`]),
//! has arrived for [`WsConfig::pong_wait`]. A slow consumer gets a `SLOW_CONSUMER` error (if it
//! can still be written) and is disconnected; so the server never holds more than that per
//! connection, whatever the client does. At most [`WsConfig::connections_max`] connections are
//! open at once (more are refused with 503 `TOO_MANY_CONNECTIONS`). When the gateway shuts down
//! every connection is closed with 1001. How the fan-out is kept away from order entry:
//! [`crate::fanout`].

use crate::auth::{bearer_principal, still_usable, ClientIp, Principal};
use crate::error::{ApiError, ApiResult};
use crate::fanout::{close, End, FeedConn, Outbox, Part, Pub, Rendered, RESYNC_EVERY};
use crate::ratelimit::RateClass;
use crate::ratelimit::{Limiter, Rate};
use crate::view::{self, MarketRef};
use crate::wire::{fmt_amount, fmt_uuid, rfc3339};
use crate::wsio::{Incoming, Socket, Upgrade};
use crate::AppState;
use axum::extract::ws::{close_code, Message};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
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
use tokio::sync::{broadcast, oneshot, watch};

/// Largest frame (and message) accepted from a client.
pub const FRAME_BYTES_MAX: usize = 16 * 1024;
/// Most channel × market subscriptions per connection (a private channel counts once).
pub const SUBSCRIPTIONS_MAX: usize = 100;
/// Failed `auth` messages allowed per connection; later ones are refused unchecked.
pub const AUTH_FAILURES_MAX: u32 = 5;
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
    /// How long a trade or private message may wait for room in a full queue before the
    /// client is disconnected as a slow consumer (a burst larger than the queue is fine if the
    /// client keeps reading; book updates and tickers are dropped instead of waiting).
    pub queue_wait: Duration,
    /// How long a write may make no progress before the client is disconnected as a slow
    /// consumer.
    pub write_stall: Duration,
    /// How often the server pings every connection.
    pub ping_every: Duration,
    /// How long a client may send nothing (not even a pong) before it is disconnected.
    pub pong_wait: Duration,
    /// How long the last messages (`SLOW_CONSUMER`, the close) may take to write before the
    /// connection is dropped anyway.
    pub final_write: Duration,
    /// The shortest time between two deliveries of rendered batches to the connections: batches
    /// committed within it go out together, so that under load a connection wakes (and
    /// writes) at most once per window, not once per batch. A batch after a quiet spell goes out
    /// at once.
    pub coalesce: Duration,
}

impl Default for WsConfig {
    fn default() -> WsConfig {
        WsConfig {
            connections_max: 10_000,
            queue_messages: 1_024,
            queue_wait: Duration::from_secs(2),
            write_stall: Duration::from_secs(10),
            ping_every: Duration::from_secs(10),
            pong_wait: Duration::from_secs(30),
            final_write: Duration::from_secs(2),
            coalesce: Duration::from_millis(5),
        }
    }
}

/// The gateway's WebSocket bookkeeping: open connections and the shutdown signal.
pub struct Hub {
    live: watch::Sender<usize>,
    closing: watch::Sender<bool>,
    /// The runtime the connections run on and the rendered batch stream (both feeds).
    pub(crate) fanout: crate::fanout::Fanout,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            live: watch::channel(0).0,
            closing: watch::channel(false).0,
            fanout: crate::fanout::Fanout::default(),
        }
    }
}

impl Hub {
    /// Resolves when the gateway shuts down.
    pub(crate) fn closing_signal(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

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
pub(crate) struct Ticket(AppState);

impl Ticket {
    pub(crate) fn take(g: &AppState) -> ApiResult<Ticket> {
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
    ws: Result<Upgrade, crate::wsio::NotUpgrade>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return ApiError::new(e.status(), "WEBSOCKET_EXPECTED", e.body_text()).into_response(),
    };
    let ticket = match Ticket::take(&g) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
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
pub(crate) struct MarketInfo {
    pub symbol: String,
    pub r: MarketRef,
}

pub(crate) fn market_info<'c>(
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
    /// Level-2 updates were dropped (the queue was full): a fresh snapshot is due.
    stale: bool,
    /// Sequence of the last level-2 update dropped: a snapshot must show at least this one.
    dropped: u64,
}

struct Conn {
    g: AppState,
    out: Outbox,
    /// The rendered batch stream; subscribed before the first snapshot is taken.
    events: Option<broadcast::Receiver<Arc<Rendered>>>,
    markets: BTreeMap<MarketId, MarketSubs>,
    /// Private channel bits.
    private: u8,
    principal: Option<Principal>,
    /// The client's address, as REST sees it (for a key's IP allowlist).
    ip: String,
    auth_failures: u32,
    info: BTreeMap<MarketId, MarketInfo>,
    limit: Limiter<()>,
    /// What this connection counts for in [`crate::fanout::Fanout::native_interest`].
    interest: [bool; 3],
}

impl Drop for Conn {
    fn drop(&mut self) {
        crate::fanout::track(&self.g.ws.fanout.native_interest, &mut self.interest, &[false; 3]);
    }
}

impl Conn {
    /// Tells the renderer what this connection reads now.
    fn sync_interest(&mut self) {
        let any = |c: Channel| self.markets.values().any(|s| s.channels & c.bit() != 0);
        let want = [
            any(Channel::Level2),
            any(Channel::Trades),
            any(Channel::Ticker) || any(Channel::Candles),
        ];
        crate::fanout::track(&self.g.ws.fanout.native_interest, &mut self.interest, &want);
    }

    /// Queues a message that must not be lost; waits at most `queue_wait` for room.
    async fn push(&self, m: Message) -> Result<(), End> {
        self.out.push(m).await
    }

    /// Runs `f`, which takes the read model's lock, on the fan-out's model thread
    /// ([`crate::fanout::Fanout::locked`]).
    fn locked<R: Send>(&mut self, f: impl FnOnce(&mut Self) -> R + Send) -> R {
        let g = self.g.clone();
        g.ws.fanout.locked(|| f(self))
    }

    fn ensure_events(&mut self) {
        if self.events.is_none() {
            self.events = Some(self.g.ws.fanout.subscribe(&self.g));
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let replies = match self.handle(text).await {
            Ok(r) => r,
            Err(e) => vec![error_msg(&e)],
        };
        self.sync_interest();
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
            In::Subscribe { channels, markets } => {
                // Snapshots show at least every write any client was told about (its own
                // orders included), as REST reads do.
                self.g.caught_up().await?;
                self.locked(|c| c.subscribe(&channels, markets.as_deref()))
            }
            In::Unsubscribe { channels, markets } => {
                self.locked(|c| c.unsubscribe(&channels, markets.as_deref()))
            }
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
        let (g, token, ip) = (self.g.clone(), token.trim().to_owned(), self.ip.clone());
        let looked_up = self
            .g
            .ws
            .fanout
            .at_home(async move { bearer_principal(&g, &token, ip, RateClass::Private).await })
            .await
            .ok_or_else(|| ApiError::unavailable("SHUTTING_DOWN", "the server is shutting down"))?;
        let p = match looked_up {
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
        let g = &self.g;
        let e = g.ws.fanout.locked(|| still_usable(g, p).err())?;
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
                subs.stale = false;
                extra.push(Out::Level2Snapshot(book).msg());
            }
            if public & Channel::Ticker.bit() != 0 {
                extra.push(Out::Ticker(view::ticker_of(&m, &info.r, &info.symbol)).msg());
            }
        }
        // While the snapshot's state is still locked: every later batch is rendered for it.
        self.sync_interest();
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

    /// Turns one rendered batch into this connection's messages and queues them: the shared
    /// public messages it subscribed to, and its own private ones, in event order.
    async fn on_batch(&mut self, r: &Rendered) -> Result<(), End> {
        if r.lost {
            return Err(End::Slow(LAGGED));
        }
        for p in &r.parts {
            self.on_part(p).await?;
        }
        self.resync().await
    }

    /// One batch of a delivery.
    async fn on_part(&mut self, r: &Part) -> Result<(), End> {
        if self.markets.is_empty() && self.principal.is_none() {
            return Ok(());
        }
        let b = &*r.batch;
        // The read side applied this batch before sending it: a key revoked, a session ended or
        // an owner frozen by it is seen now, and nothing private of the batch goes out after.
        let touches_auth = b
            .events
            .iter()
            .any(|e| matches!(e, Event::Key(_) | Event::Identity(_)));
        if touches_auth {
            for m in self.recheck().unwrap_or_default() {
                self.push(m).await?;
            }
        }
        let private = self.private_msgs(b);
        let mut private = private.into_iter().peekable();
        for p in &r.native {
            while let Some((_, m)) = private.next_if(|(i, _)| *i < p.at) {
                self.push(m).await?;
            }
            self.public(p).await?;
        }
        for (_, m) in private {
            self.push(m).await?;
        }
        Ok(())
    }

    /// Queues a shared public message if this connection subscribed to it.
    async fn public(&mut self, p: &Pub) -> Result<(), End> {
        let Some(s) = self.markets.get_mut(&p.market) else {
            return Ok(());
        };
        if s.channels & (1 << p.kind) == 0 {
            return Ok(());
        }
        if p.kind == Channel::Level2 as u8 {
            if s.stale {
                s.dropped = s.dropped.max(p.seq);
                return Ok(());
            }
            if p.seq <= s.level2_seq {
                return Ok(());
            }
            if self.out.offer(p.msg.clone())? {
                s.level2_seq = p.seq;
            } else {
                s.stale = true;
                s.dropped = p.seq;
            }
            return Ok(());
        }
        if p.kind == Channel::Ticker as u8 || p.kind == Channel::Candles as u8 {
            self.out.offer(p.msg.clone())?;
            return Ok(());
        }
        self.out.push(p.msg.clone()).await
    }

    /// A fresh snapshot of each market whose level-2 updates were dropped, once there is room.
    async fn resync(&mut self) -> Result<(), End> {
        if !self.markets.values().any(|s| s.stale) || !self.out.has_room() {
            return Ok(());
        }
        let g = self.g.clone();
        let mut msgs = Vec::new();
        for (id, s) in self.markets.iter_mut().filter(|(_, s)| s.stale) {
            if let Some((seq, m)) = g.ws.fanout.cached_snapshot(0, *id, s.dropped) {
                msgs.push(m);
                s.level2_seq = seq;
                s.stale = false;
            }
        }
        if self.markets.values().any(|s| s.stale) {
            msgs.extend(self.locked(|c| {
                let g = c.g.clone();
                let m = g.read.model();
                let mut msgs = Vec::new();
                for (id, s) in c.markets.iter_mut().filter(|(_, s)| s.stale) {
                    let Some(info) = market_info(&mut c.info, &m, *id) else {
                        continue;
                    };
                    let Some(seq) = m.engine.trading().market(*id).map(|mk| mk.meta.book_seq) else {
                        continue;
                    };
                    msgs.push(g.ws.fanout.snapshot(0, *id, seq, || {
                        Out::Level2Snapshot(view::book_snapshot(&m, &info.r, &info.symbol, usize::MAX)).msg()
                    }));
                    s.level2_seq = seq;
                    s.stale = false;
                }
                msgs
            }));
        }
        for m in msgs {
            self.push(m).await?;
        }
        Ok(())
    }

    /// This connection's private messages of a batch, each with the index of the event it
    /// follows (`usize::MAX`: after the batch).
    fn private_msgs(&mut self, b: &BatchEvents) -> Vec<(usize, Message)> {
        let out = Vec::new();
        let Some(me) = self.principal.as_ref().map(|p| p.user) else {
            return out;
        };
        if self.private == 0 {
            return out;
        }
        let private = self.private;
        if !concerns(b, me) {
            return out;
        }
        let g = self.g.clone();
        g.ws.fanout
            .locked(|| self.private_msgs_locked(b, me, private, out))
    }

    fn private_msgs_locked(
        &mut self,
        b: &BatchEvents,
        me: UserId,
        private: u8,
        mut out: Vec<(usize, Message)>,
    ) -> Vec<(usize, Message)> {
        let g = self.g.clone();
        let m = g.read.model();
        let time = rfc3339(b.timestamp_ns);
        for (i, e) in b.events.iter().enumerate() {
            match e {
                Event::Trading(TradingEvent::Trade(t)) => {
                    for f in Fill::both(t) {
                        if mine(Some(me), private, f.user, Channel::Fills) {
                            out.push((i, Out::Fill(view::fill_out(&m, &f)).msg()));
                        }
                    }
                }
                Event::Trading(
                    o @ (TradingEvent::OrderAccepted { user, .. }
                    | TradingEvent::OrderRested { user, .. }
                    | TradingEvent::OrderDone { user, .. }
                    | TradingEvent::StopAccepted { user, .. }
                    | TradingEvent::StopTriggered { user, .. }
                    | TradingEvent::OrderExpired { user, .. }),
                ) if mine(Some(me), private, *user, Channel::Orders) => {
                    if let Some(msg) = order_msg(&m, &mut self.info, o, &time) {
                        out.push((i, msg));
                    }
                }
                Event::Wallet(WalletEvent::Withdrawal(w))
                    if mine(Some(me), private, w.user, Channel::Withdrawals) =>
                {
                    out.push((i, Out::Withdrawal(view::withdrawal_out(&m, &g.health, w)).msg()));
                }
                _ => {}
            }
        }
        for msg in balance_msgs(&m, b, Some(me), private, &time) {
            out.push((usize::MAX, msg));
        }
        out
    }
}

/// Whether a batch has anything private for `me` (read without the model's lock): a fill, an
/// order, a withdrawal or a balance of theirs.
pub(crate) fn concerns(b: &BatchEvents, me: UserId) -> bool {
    b.balances.iter().any(|(u, ..)| *u == me)
        || b.events.iter().any(|e| match e {
            Event::Trading(TradingEvent::Trade(t)) => t.maker_user == me || t.taker_user == me,
            Event::Trading(
                TradingEvent::OrderAccepted { user, .. }
                | TradingEvent::OrderRested { user, .. }
                | TradingEvent::OrderDone { user, .. }
                | TradingEvent::StopAccepted { user, .. }
                | TradingEvent::StopTriggered { user, .. }
                | TradingEvent::OrderExpired { user, .. },
            ) => *user == me,
            Event::Wallet(WalletEvent::Withdrawal(w)) => w.user == me,
            _ => false,
        })
}

/// Why a connection ends when the batch stream lagged.
const LAGGED: &str = "the connection fell too far behind and is being closed; reconnect and resubscribe";

/// Whether `user`'s private channel `c` goes to this connection (authenticated as `me`, with
/// the private channel bits `private`).
fn mine(me: Option<UserId>, private: u8, user: UserId, c: Channel) -> bool {
    me == Some(user) && private & c.bit() != 0
}

/// Kinds of native message the renderer makes only if some connection wants them
/// ([`crate::fanout::Fanout::native_interest`]).
pub(crate) const WANT_LEVEL2: usize = 0;
pub(crate) const WANT_TRADES: usize = 1;
pub(crate) const WANT_STATS: usize = 2;

/// Renders the native feed's public messages of each batch once, for every subscriber
/// ([`crate::fanout`]): a `level2_update` per market and book sequence, a `trade` per trade,
/// and after a batch with trades in a market its `ticker` and `candle`.
#[derive(Default)]
pub(crate) struct Renderer {
    info: BTreeMap<MarketId, MarketInfo>,
}

impl Renderer {
    /// Renders the kinds `want` asks for: [`WANT_LEVEL2`], [`WANT_TRADES`], [`WANT_STATS`].
    pub(crate) fn render(
        &mut self,
        guard: &mut crate::fanout::ModelGuard<'_>,
        b: &BatchEvents,
        want: [bool; 3],
        out: &mut Vec<Pub>,
    ) {
        // (index of the group's last event, market, book sequence, changes)
        let mut group: Option<(usize, MarketId, u64, Vec<[String; 4]>)> = None;
        let mut traded: Vec<MarketId> = Vec::new();
        for (i, e) in b.events.iter().enumerate() {
            crate::fanout::let_the_replica_in(guard, i);
            let m: &ReadModel = guard;
            match e {
                Event::Trading(TradingEvent::Level {
                    market,
                    book_seq,
                    side,
                    price,
                    qty,
                    orders,
                }) => {
                    if !want[WANT_LEVEL2] {
                        continue;
                    }
                    let Some(info) = market_info(&mut self.info, m, *market) else {
                        continue;
                    };
                    let change = [
                        view::side_name(*side).to_owned(),
                        info.r.scale.price(*price),
                        info.r.scale.size(*qty),
                        orders.to_string(),
                    ];
                    match &mut group {
                        Some((at, m2, s2, changes)) if m2 == market && s2 == book_seq => {
                            *at = i;
                            changes.push(change);
                        }
                        _ => {
                            self.flush_level2(out, group.take());
                            group = Some((i, *market, *book_seq, vec![change]));
                        }
                    }
                }
                Event::Trading(TradingEvent::Trade(t)) => {
                    self.flush_level2(out, group.take());
                    if want[WANT_STATS] && !traded.contains(&t.market) {
                        traded.push(t.market);
                    }
                    if !want[WANT_TRADES] {
                        continue;
                    }
                    let Some(i2) = market_info(&mut self.info, m, t.market) else {
                        continue;
                    };
                    out.push(Pub {
                        at: i,
                        market: t.market,
                        kind: Channel::Trades as u8,
                        seq: 0,
                        users: [None, None],
                        own: [None, None],
                        msg: Out::Trade {
                            market: &i2.symbol,
                            trade_id: t.id,
                            price: i2.r.scale.price(t.price),
                            size: i2.r.scale.size(t.qty),
                            side: view::side_name(t.maker_side.opposite()),
                            time: rfc3339(t.timestamp_ns),
                        }
                        .msg(),
                    });
                }
                _ => self.flush_level2(out, group.take()),
            }
        }
        self.flush_level2(out, group.take());
        let m: &ReadModel = guard;
        for id in traded {
            let Some(i) = market_info(&mut self.info, m, id) else {
                continue;
            };
            out.push(Pub {
                at: usize::MAX,
                market: id,
                kind: Channel::Ticker as u8,
                seq: 0,
                users: [None, None],
                own: [None, None],
                msg: Out::Ticker(view::ticker_of(m, &i.r, &i.symbol)).msg(),
            });
            if let Some(c) = view::candle_list(m, &i.r, CANDLE_S, 0, u64::MAX, 1).pop() {
                out.push(Pub {
                    at: usize::MAX,
                    market: id,
                    kind: Channel::Candles as u8,
                    seq: 0,
                    users: [None, None],
                    own: [None, None],
                    msg: Out::Candle(CandleMsg {
                        market: &i.symbol,
                        granularity: CANDLE_S,
                        candle: c,
                    })
                    .msg(),
                });
            }
        }
    }

    fn flush_level2(&self, out: &mut Vec<Pub>, group: Option<(usize, MarketId, u64, Vec<[String; 4]>)>) {
        let Some((at, market, sequence, changes)) = group else {
            return;
        };
        let Some(i) = self.info.get(&market) else {
            return;
        };
        out.push(Pub {
            at,
            market,
            kind: Channel::Level2 as u8,
            seq: sequence,
            users: [None, None],
            own: [None, None],
            msg: Out::Level2Update {
                market: &i.symbol,
                sequence,
                changes,
            }
            .msg(),
        });
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

/// The private `balance` messages: each of this connection's user's balances the batch changed.
fn balance_msgs(m: &ReadModel, b: &BatchEvents, me: Option<UserId>, private: u8, time: &str) -> Vec<Message> {
    let mut out = Vec::new();
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
    out
}

pub(crate) async fn next_batch(
    rx: &mut Option<broadcast::Receiver<Arc<Rendered>>>,
) -> Result<Arc<Rendered>, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The `SLOW_CONSUMER` error message.
fn slow_msg(why: &str) -> Message {
    error_msg(&ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "SLOW_CONSUMER",
        why,
    ))
}

/// A client that sent nothing, not even a pong, for `pong_wait`.
pub(crate) const NO_PONG: &str = "no reply to the server's pings; the connection is being closed";

async fn run(g: AppState, socket: Socket, ticket: Ticket, ip: String) {
    let _feed = FeedConn::new(&g.ws.fanout.native_conns);
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
    let mut closing = g.ws.closing.subscribe();
    let mut recheck = tokio::time::interval(RECHECK_EVERY);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ping_every = g.config.ws.ping_every;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // While a book is stale, a fresh snapshot goes out as soon as the queue has room again,
    // even if no batch comes to trigger it.
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = tokio::time::Instant::now();
    let mut conn = Conn {
        g: g.clone(),
        out,
        events: None,
        markets: BTreeMap::new(),
        private: 0,
        principal: None,
        ip,
        auth_failures: 0,
        info: BTreeMap::new(),
        limit: Limiter::new(MESSAGE_RATE, 1),
        interest: [false; 3],
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
                Err(broadcast::error::RecvError::Lagged(_)) => Err(End::Slow(LAGGED)),
                Err(broadcast::error::RecvError::Closed) => Err(End::Shutdown),
            },
            _ = conn.out.closed() => Err(End::Gone),
            _ = resync.tick(), if conn.markets.values().any(|s| s.stale) => conn.resync().await,
            _ = recheck.tick() => conn.on_tick().await,
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
            tracing::info!(user = ?conn.principal.as_ref().map(|p| p.user), "websocket client too slow; disconnected");
            vec![slow_msg(why), close(close_code::POLICY, "slow consumer")]
        }
        End::Refused(code) => vec![close(code, "JSON text frames of at most 16 KiB only")],
        End::Shutdown => vec![close(close_code::AWAY, "server shutting down")],
    };
    // Free the subscription to the batch stream and the queue before waiting for the writer.
    drop(conn);
    let _ = last_tx.send(last);
    crate::fanout::close_out(writer, stream, g.config.ws.final_write).await;
    drop(ticket);
}
