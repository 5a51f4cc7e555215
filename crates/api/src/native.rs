//! The native API under `/api/v1`. JSON; amounts and prices are decimal strings; every error is
//! `{"code", "message"}`. Routes and the OpenAPI document come from the same annotations
//! (utoipa-axum), so the document cannot list a route that does not exist or miss one that does.

use crate::auth::{Auth, Need};
use crate::error::{unexpected, ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::usecase::*;
use crate::view::*;
use crate::wire::{fmt_amount, parse_uuid, rfc3339};
use crate::AppState;
use axum::extract::State;
use kinko_core::book::OrderId;
use kinko_core::engine::{Command, Reply};
use kinko_core::market::{MarketId, CANDLE_GRANULARITIES_S};
use kinko_core::wallet::{AddressId, WithdrawalId};
use kinko_core::{AssetId, Reject};
use kinko_engine::replica::ReadModel;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The native API's routes (after the account, operator and custody routes, composed in
/// the routes module).
pub fn routes(r: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    r.routes(routes!(assets))
        .routes(routes!(markets))
        .routes(routes!(market))
        .routes(routes!(book))
        .routes(routes!(trades))
        .routes(routes!(ticker))
        .routes(routes!(candles))
        .routes(routes!(balances))
        .routes(routes!(place_order, list_orders, cancel_all))
        .routes(routes!(get_order, cancel_order))
        .routes(routes!(fills))
        .routes(routes!(create_deposit_address, list_deposit_addresses))
        .routes(routes!(deposits))
        .routes(routes!(add_withdrawal_address, list_withdrawal_addresses))
        .routes(routes!(remove_withdrawal_address))
        .routes(routes!(request_withdrawal, list_withdrawals))
        .routes(routes!(get_withdrawal, cancel_withdrawal))
        .routes(routes!(withdrawal_limits))
}

// ---------------------------------------------------------------------------------------------
// Lookups shared by handlers (and the Coinbase surface).

/// An optional `market` query parameter, resolved.
fn market_filter(m: &ReadModel, symbol: Option<&str>) -> ApiResult<Option<MarketId>> {
    symbol.map(|s| market_ref(m, s).map(|r| r.id)).transpose()
}

/// An optional `asset` query parameter, resolved.
fn asset_filter(m: &ReadModel, code: Option<&str>) -> ApiResult<Option<AssetId>> {
    code.map(|c| asset_ref(m, c).map(|(id, _)| id)).transpose()
}

fn limit(l: Option<usize>, default: usize) -> ApiResult<usize> {
    match l {
        None => Ok(default),
        Some(0) => Err(ApiError::invalid("limit must be at least 1")),
        Some(n) if n > LIST_LIMIT_MAX => Err(ApiError::invalid(format!(
            "limit must be at most {LIST_LIMIT_MAX}"
        ))),
        Some(n) => Ok(n),
    }
}

// ---------------------------------------------------------------------------------------------
// Public market data.

#[derive(Serialize, ToSchema)]
pub struct AssetOut {
    #[schema(pattern = r"^[A-Z0-9]{1,12}$")]
    pub code: String,
    pub decimals: u8,
    pub deposits_enabled: bool,
    pub withdrawals_enabled: bool,
    pub trading_enabled: bool,
    /// Charged per withdrawal, in the asset.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub withdrawal_fee: String,
    /// What withdrawals approved by an authenticator app's code alone (a TOTP proof, or to an
    /// address added with one) may total per customer in a rolling 24 h; a passkey lifts it
    /// (above it: `PASSKEY_REQUIRED`). Absent: not capped by the exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub totp_budget: Option<String>,
    /// The confirmations a deposit needs before it is credited. Absent: no chain for the
    /// asset is configured here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deposit_confirmations: Option<u32>,
}

/// Assets and what is switched on for each.
#[utoipa::path(get, path = "/assets", tag = "market data",
    responses((status = 200, body = Vec<AssetOut>)))]
async fn assets(State(g): State<AppState>) -> ApiResult<Json<Vec<AssetOut>>> {
    g.caught_up().await?;
    let m = g.read.model();
    let e = &m.engine;
    Ok(Json(
        e.assets()
            .iter()
            .enumerate()
            .map(|(i, a)| AssetOut {
                code: a.code.as_str().to_owned(),
                decimals: a.decimals,
                deposits_enabled: a.switches.deposits,
                withdrawals_enabled: a.switches.withdrawals,
                trading_enabled: a.switches.trading,
                withdrawal_fee: fmt_amount(e.wallet().withdrawal_fee(AssetId(i as u32)).0, a.decimals),
                totp_budget: e
                    .wallet()
                    .totp_budget(AssetId(i as u32))
                    .map(|b| fmt_amount(b.0, a.decimals)),
                deposit_confirmations: g.chain.deposit_confirmations(a.code.as_str()),
            })
            .collect(),
    ))
}

/// All markets.
#[utoipa::path(get, path = "/markets", tag = "market data",
    responses((status = 200, body = Vec<MarketOut>)))]
async fn markets(State(g): State<AppState>) -> ApiResult<Json<Vec<MarketOut>>> {
    g.caught_up().await?;
    let m = g.read.model();
    let n = m.engine.trading().markets().len();
    Ok(Json(
        (0..n)
            .filter_map(|i| market_out(&m, MarketId(i as u32)))
            .collect(),
    ))
}

/// One market.
#[utoipa::path(get, path = "/markets/{symbol}", tag = "market data",
    params(("symbol" = String, Path, description = "e.g. BTC-USD", pattern = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$")),
    responses((status = 200, body = MarketOut), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn market(State(g): State<AppState>, Path(symbol): Path<String>) -> ApiResult<Json<MarketOut>> {
    g.caught_up().await?;
    let m = g.read.model();
    let r = market_ref(&m, &symbol)?;
    Ok(Json(market_out(&m, r.id).ok_or(Reject::MarketNotFound)?))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct DepthQuery {
    /// Price levels per side (default 50, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub depth: Option<usize>,
}

/// Level-2 order book snapshot.
#[utoipa::path(get, path = "/markets/{symbol}/book", tag = "market data",
    params(("symbol" = String, Path, pattern = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$"), DepthQuery),
    responses((status = 200, body = BookOut), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn book(
    State(g): State<AppState>,
    Path(symbol): Path<String>,
    Query(q): Query<DepthQuery>,
) -> ApiResult<Json<BookOut>> {
    let depth = match q.depth {
        None => 50,
        Some(d) if (1..=BOOK_DEPTH_MAX).contains(&d) => d,
        Some(_) => return Err(ApiError::invalid(format!("depth must be 1..={BOOK_DEPTH_MAX}"))),
    };
    g.caught_up().await?;
    let m = g.read.model();
    let r = market_ref(&m, &symbol)?;
    Ok(Json(book_snapshot(&m, &r, &symbol, depth)))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct LimitQuery {
    /// At most 1000.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct TradeOut {
    pub id: u64,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub price: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub size: String,
    /// The taker's side.
    #[schema(value_type = crate::schema::Side)]
    pub side: String,
    #[schema(format = DateTime)]
    pub time: String,
}

/// Recent trades, newest first.
#[utoipa::path(get, path = "/markets/{symbol}/trades", tag = "market data",
    params(("symbol" = String, Path, pattern = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$"), LimitQuery),
    responses((status = 200, body = Vec<TradeOut>), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn trades(
    State(g): State<AppState>,
    Path(symbol): Path<String>,
    Query(q): Query<LimitQuery>,
) -> ApiResult<Json<Vec<TradeOut>>> {
    let n = limit(q.limit, 100)?;
    g.caught_up().await?;
    let m = g.read.model();
    let r = market_ref(&m, &symbol)?;
    Ok(Json(
        m.engine
            .trading()
            .recent_trades(r.id, n)
            .iter()
            .map(|t| TradeOut {
                id: t.id,
                price: r.scale.price(t.price),
                size: r.scale.size(t.qty),
                side: side_name(t.maker_side.opposite()).into(),
                time: rfc3339(t.timestamp_ns),
            })
            .collect(),
    ))
}

/// 24-hour ticker.
#[utoipa::path(get, path = "/markets/{symbol}/ticker", tag = "market data",
    params(("symbol" = String, Path, pattern = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$")),
    responses((status = 200, body = TickerOut), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn ticker(State(g): State<AppState>, Path(symbol): Path<String>) -> ApiResult<Json<TickerOut>> {
    g.caught_up().await?;
    let m = g.read.model();
    let r = market_ref(&m, &symbol)?;
    Ok(Json(ticker_of(&m, &r, &symbol)))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct CandleQuery {
    /// Seconds: 60, 300, 900, 3600, 21600 or 86400 (default 60).
    #[param(schema_with = crate::schema::granularity)]
    pub granularity: Option<u64>,
    /// At most 1000 (default 300).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// Candles, oldest first.
#[utoipa::path(get, path = "/markets/{symbol}/candles", tag = "market data",
    params(("symbol" = String, Path, pattern = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$"), CandleQuery),
    responses((status = 200, body = Vec<CandleOut>), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn candles(
    State(g): State<AppState>,
    Path(symbol): Path<String>,
    Query(q): Query<CandleQuery>,
) -> ApiResult<Json<Vec<CandleOut>>> {
    let gran = q.granularity.unwrap_or(60);
    if !CANDLE_GRANULARITIES_S.contains(&gran) {
        return Err(ApiError::invalid(format!(
            "granularity must be one of {CANDLE_GRANULARITIES_S:?}"
        )));
    }
    let n = limit(q.limit, 300)?;
    g.caught_up().await?;
    let m = g.read.model();
    let r = market_ref(&m, &symbol)?;
    Ok(Json(candle_list(&m, &r, gran, 0, u64::MAX, n)))
}

// ---------------------------------------------------------------------------------------------
// Balances.

#[derive(Serialize, ToSchema)]
pub struct BalanceOut {
    #[schema(pattern = r"^[A-Z0-9]{1,12}$")]
    pub asset: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub total: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub available: String,
    /// Reserved by open orders and pending withdrawals.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub hold: String,
}

/// The caller's balances in every asset.
#[utoipa::path(get, path = "/balances", tag = "account", security(("api_key" = [])),
    responses((status = 200, body = Vec<BalanceOut>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn balances(State(g): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Vec<BalanceOut>>> {
    p.require(Need::View)?;
    g.caught_up().await?;
    let m = g.read.model();
    Ok(Json(
        balances_of(&m, p.user)
            .into_iter()
            .map(|b| BalanceOut {
                asset: b.code,
                total: fmt_amount(b.total, b.decimals),
                available: fmt_amount(b.available, b.decimals),
                hold: fmt_amount(b.hold, b.decimals),
            })
            .collect(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Orders.

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderIn {
    /// e.g. `BTC-USD`.
    #[schema(pattern = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$")]
    pub market: String,
    /// `buy` or `sell`.
    #[schema(value_type = crate::schema::Side)]
    pub side: String,
    /// `limit` (default) or `market`.
    #[serde(rename = "type")]
    #[schema(value_type = Option<crate::schema::OrderType>)]
    pub order_type: Option<String>,
    /// Limit price (quote per whole base unit); limit orders only.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub price: Option<String>,
    /// Base quantity. Limit orders need it; market orders need `size` or `funds`.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub size: Option<String>,
    /// Quote to spend or receive, fees included (market orders only).
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub funds: Option<String>,
    /// `gtc` (default), `gtt` (good till a time: with `expire_time` or `cancel_after`), `ioc`,
    /// `fok` or `post_only`.
    #[schema(value_type = Option<crate::schema::TimeInForce>)]
    pub time_in_force: Option<String>,
    /// Makes the order a stop order (stop-limit or stop-market): it waits, its funds held, until
    /// the last trade price reaches `stop_price`, then enters the book through every pre-trade
    /// check (the band around the price then).
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub stop_price: Option<String>,
    /// `loss` (triggers at or below `stop_price`; sells only) or `entry` (at or above; buys
    /// only). Defaults to the one the side allows.
    #[schema(value_type = Option<crate::schema::StopDirection>)]
    pub stop: Option<String>,
    /// With `time_in_force` `gtt`: when the order is cancelled (reason `expired`).
    #[schema(format = DateTime)]
    pub expire_time: Option<String>,
    /// With `time_in_force` `gtt`: cancelled a minute, an hour or a day after it is accepted.
    #[schema(value_type = Option<crate::schema::CancelAfter>)]
    pub cancel_after: Option<String>,
    /// Your own id for the order (a UUID), unique per account.
    #[schema(pattern = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")]
    pub client_order_id: Option<String>,
    /// Self-trade prevention: `cancel_newest` (default), `cancel_oldest` or `cancel_both`.
    #[schema(value_type = Option<crate::schema::SelfTradePrevention>)]
    pub stp: Option<String>,
}

/// Places an order. The reply comes after the order is durable and has matched: it shows what
/// filled at once and whether the rest is open.
#[utoipa::path(post, path = "/orders", tag = "orders", security(("api_key" = [])),
    request_body = crate::schema::PlaceOrder,
    responses((status = 200, body = OrderOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn place_order(
    State(g): State<AppState>,
    Auth(p): Auth,
    Json(o): Json<PlaceOrderIn>,
) -> ApiResult<Json<OrderOut>> {
    p.require(Need::Trade)?;
    // A market order never rests, so its time in force is not used; it is still one of the
    // documented values, whatever the order type.
    if let Some(t) = o.time_in_force.as_deref() {
        if ![
            "gtc",
            "gtt",
            "ioc",
            "fok",
            "post_only",
            "GTC",
            "GTT",
            "IOC",
            "FOK",
        ]
        .contains(&t)
        {
            return Err(ApiError::invalid(
                "time_in_force must be gtc, gtt, ioc, fok or post_only",
            ));
        }
    }
    let client = o
        .client_order_id
        .as_deref()
        .map(|c| parse_uuid("client_order_id", c))
        .transpose()?;
    let req = OrderRequest {
        market: &o.market,
        side: &o.side,
        order_type: o.order_type.as_deref().unwrap_or("limit"),
        price: o.price.as_deref(),
        size: o.size.as_deref(),
        funds: o.funds.as_deref(),
        tif: o.time_in_force.as_deref().unwrap_or("gtc"),
        client_order_id: client,
        stp: parse_stp(o.stp.as_deref())?,
        stop: o.stop.as_deref(),
        stop_price: o.stop_price.as_deref(),
        expire_time: o.expire_time.as_deref(),
        cancel_after: o.cancel_after.as_deref(),
    };
    let order = submit_order(&g, p.user, &req).await?;
    let m = g.read.model();
    Ok(Json(order_out(&m, &order)))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct OrdersQuery {
    #[param(pattern = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$")]
    pub market: Option<String>,
    /// `open` (default), `done` or `all`.
    #[param(value_type = Option<crate::schema::OrderStatusFilter>, inline)]
    pub status: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// Lists the caller's orders: open ones by id, then done ones newest first.
#[utoipa::path(get, path = "/orders", tag = "orders", security(("api_key" = [])),
    params(OrdersQuery),
    responses((status = 200, body = Vec<OrderOut>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn list_orders(
    State(g): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<OrdersQuery>,
) -> ApiResult<Json<Vec<OrderOut>>> {
    p.require(Need::View)?;
    let n = limit(q.limit, 100)?;
    let (open, done) = match q.status.as_deref().unwrap_or("open") {
        "open" => (true, false),
        "done" => (false, true),
        "all" => (true, true),
        _ => return Err(ApiError::invalid("status must be open, done or all")),
    };
    g.caught_up().await?;
    let m = g.read.model();
    let market = market_filter(&m, q.market.as_deref())?;
    Ok(Json(
        orders_of(&m, p.user, market, open, done, n)
            .iter()
            .map(|o| order_out(&m, o))
            .collect(),
    ))
}

/// One order of the caller, by id or `client:<uuid>`.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders", security(("api_key" = [])),
    params(("id" = String, Path, description = "order id or client:<uuid>",
        pattern = r"^([0-9]{1,19}|client:[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12})$")),
    responses((status = 200, body = OrderOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_order(
    State(g): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<OrderOut>> {
    p.require(Need::View)?;
    let r = order_ref(&id)?;
    g.caught_up().await?;
    let m = g.read.model();
    let o = find_order(&m, p.user, r)?;
    Ok(Json(order_out(&m, &o)))
}

/// Cancels one open order.
#[utoipa::path(delete, path = "/orders/{id}", tag = "orders", security(("api_key" = [])),
    params(("id" = String, Path, description = "order id or client:<uuid>",
        pattern = r"^([0-9]{1,19}|client:[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12})$")),
    responses((status = 200, body = OrderOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn cancel_order(
    State(g): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<OrderOut>> {
    p.require(Need::Trade)?;
    let order = order_ref(&id)?;
    let o = cancel(&g, p.user, order).await?;
    let m = g.read.model();
    Ok(Json(order_out(&m, &o)))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct MarketFilter {
    #[param(pattern = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$")]
    pub market: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CancelledOut {
    /// Ids of the orders cancelled.
    pub cancelled: Vec<String>,
}

/// Cancels every open order of the caller, on one market or all.
#[utoipa::path(delete, path = "/orders", tag = "orders", security(("api_key" = [])),
    params(MarketFilter),
    responses((status = 200, body = CancelledOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn cancel_all(
    State(g): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<MarketFilter>,
) -> ApiResult<Json<CancelledOut>> {
    p.require(Need::Trade)?;
    let market = {
        let m = g.read.model();
        market_filter(&m, q.market.as_deref())?
    };
    match g
        .submit(Command::CancelAll { user: p.user, market })
        .await?
        .reply?
    {
        Reply::OrdersCancelled(ids) => Ok(Json(CancelledOut {
            cancelled: ids.iter().map(|i| i.0.to_string()).collect(),
        })),
        other => Err(unexpected(&other)),
    }
}

// ---------------------------------------------------------------------------------------------
// Fills.

#[derive(Deserialize, utoipa::IntoParams)]
pub struct FillsQuery {
    #[param(pattern = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$")]
    pub market: Option<String>,
    #[param(pattern = r"^[0-9]{1,19}$")]
    pub order_id: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// The caller's fills, newest first.
#[utoipa::path(get, path = "/fills", tag = "orders", security(("api_key" = [])),
    params(FillsQuery),
    responses((status = 200, body = Vec<FillOut>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn fills(
    State(g): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<FillsQuery>,
) -> ApiResult<Json<Vec<FillOut>>> {
    p.require(Need::View)?;
    let n = limit(q.limit, 100)?;
    let order = q
        .order_id
        .as_deref()
        .map(|s| {
            s.parse::<u64>()
                .map(OrderId)
                .map_err(|_| ApiError::invalid("order_id must be a number"))
        })
        .transpose()?;
    g.caught_up().await?;
    let m = g.read.model();
    let market = market_filter(&m, q.market.as_deref())?;
    Ok(Json(
        m.fills(p.user, market, order, n)
            .iter()
            .map(|f| fill_out(&m, f))
            .collect(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Deposits.

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssetIn {
    #[schema(pattern = r"^[A-Z0-9]{1,12}$")]
    pub asset: String,
}

#[derive(Serialize, ToSchema)]
pub struct DepositAddressOut {
    pub asset: String,
    pub address: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A new deposit address for an asset. `DEPOSITS_UNAVAILABLE` (409): no chain carries the
/// asset on this server (no `[[custody]]` for it, no simulated chain).
#[utoipa::path(post, path = "/deposit-addresses", tag = "wallet", security(("api_key" = [])),
    request_body = AssetIn,
    responses((status = 200, body = DepositAddressOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_deposit_address(
    State(g): State<AppState>,
    Auth(p): Auth,
    Json(a): Json<AssetIn>,
) -> ApiResult<Json<DepositAddressOut>> {
    p.require(Need::View)?;
    let address = new_deposit_address(&g, p.user, &a.asset).await?;
    // The address record (with its time) is read back from the replica: wait for it.
    g.caught_up().await?;
    let m = g.read.model();
    let (asset, _) = asset_ref(&m, &a.asset)?;
    let created = m
        .engine
        .wallet()
        .deposit_addresses(p.user, asset)
        .iter()
        .find(|d| d.address == address)
        .map_or(0, |d| d.created_ns);
    Ok(Json(DepositAddressOut {
        asset: asset_code(&m, asset),
        address,
        created_at: rfc3339(created),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct AssetFilter {
    #[param(pattern = r"^[A-Z0-9]{1,12}$")]
    pub asset: Option<String>,
}

/// The caller's deposit addresses.
#[utoipa::path(get, path = "/deposit-addresses", tag = "wallet", security(("api_key" = [])),
    params(AssetFilter),
    responses((status = 200, body = Vec<DepositAddressOut>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn list_deposit_addresses(
    State(g): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<AssetFilter>,
) -> ApiResult<Json<Vec<DepositAddressOut>>> {
    p.require(Need::View)?;
    g.caught_up().await?;
    let m = g.read.model();
    let only = asset_filter(&m, q.asset.as_deref())?;
    let mut out = Vec::new();
    for i in 0..m.engine.assets().len() {
        let asset = AssetId(i as u32);
        if only.is_some_and(|o| o != asset) {
            continue;
        }
        for d in m.engine.wallet().deposit_addresses(p.user, asset) {
            out.push(DepositAddressOut {
                asset: asset_code(&m, asset),
                address: d.address.clone(),
                created_at: rfc3339(d.created_ns),
            });
        }
    }
    Ok(Json(out))
}

#[derive(Serialize, ToSchema)]
pub struct DepositOut {
    pub id: String,
    pub asset: String,
    pub address: String,
    pub txid: String,
    pub vout: u32,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: String,
    /// `pending`, `credited`, `dropped` (left the chain before it was final) or `reversed`
    /// (left the chain after it was credited).
    #[schema(value_type = crate::schema::DepositStatus)]
    pub status: String,
    #[schema(format = DateTime)]
    pub seen_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// The caller's deposits, newest first.
#[utoipa::path(get, path = "/deposits", tag = "wallet", security(("api_key" = [])),
    params(AssetFilter),
    responses((status = 200, body = Vec<DepositOut>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn deposits(
    State(g): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<AssetFilter>,
) -> ApiResult<Json<Vec<DepositOut>>> {
    p.require(Need::View)?;
    g.caught_up().await?;
    let m = g.read.model();
    let only = asset_filter(&m, q.asset.as_deref())?;
    Ok(Json(
        m.engine
            .wallet()
            .deposits()
            .iter()
            .rev()
            .filter(|d| d.user == p.user && only.is_none_or(|a| a == d.asset))
            .take(LIST_LIMIT_MAX)
            .map(|d| {
                let dec = m.engine.asset(d.asset).map_or(0, |a| a.decimals);
                DepositOut {
                    id: d.id.0.to_string(),
                    asset: asset_code(&m, d.asset),
                    address: d.address.clone(),
                    txid: d.txid.clone(),
                    vout: d.vout,
                    amount: fmt_amount(d.amount.0, dec),
                    status: deposit_status_name(d.status).into(),
                    seen_at: rfc3339(d.seen_ns),
                    updated_at: rfc3339(d.updated_ns),
                }
            })
            .collect(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Withdrawal addresses and withdrawals.

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalAddressIn {
    #[schema(pattern = r"^[A-Z0-9]{1,12}$")]
    pub asset: String,
    pub address: String,
    pub label: Option<String>,
    /// The second-factor answer (see `STEP_UP_REQUIRED`).
    pub step_up: Option<crate::stepup::StepUpIn>,
}

/// Whitelists a withdrawal address (usable after the cooling period).
#[utoipa::path(post, path = "/withdrawal-addresses", tag = "wallet", security(("api_key" = [])),
    request_body = WithdrawalAddressIn,
    responses((status = 200, body = WithdrawalAddressOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn add_withdrawal_address(
    State(g): State<AppState>,
    Auth(p): Auth,
    Json(a): Json<WithdrawalAddressIn>,
) -> ApiResult<Json<WithdrawalAddressOut>> {
    p.require(Need::Withdraw)?;
    let cooling = u64::try_from(g.config.withdrawal_cooling.as_nanos()).unwrap_or(u64::MAX);
    g.caught_up().await?;
    let rec = add_address(
        &g,
        p.user,
        &a.asset,
        &a.address,
        a.label.as_deref().unwrap_or(""),
        cooling,
        Ok((&p, a.step_up.as_ref())),
    )
    .await?;
    let m = g.read.model();
    Ok(Json(withdrawal_address_out(&m, &rec)))
}

/// The caller's whitelisted withdrawal addresses.
#[utoipa::path(get, path = "/withdrawal-addresses", tag = "wallet", security(("api_key" = [])),
    responses((status = 200, body = Vec<WithdrawalAddressOut>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn list_withdrawal_addresses(
    State(g): State<AppState>,
    Auth(p): Auth,
) -> ApiResult<Json<Vec<WithdrawalAddressOut>>> {
    p.require(Need::View)?;
    g.caught_up().await?;
    let m = g.read.model();
    Ok(Json(
        m.engine
            .wallet()
            .withdrawal_addresses_of(p.user)
            .into_iter()
            .map(|a| withdrawal_address_out(&m, a))
            .collect(),
    ))
}

/// Removes a whitelisted withdrawal address.
#[utoipa::path(delete, path = "/withdrawal-addresses/{id}", tag = "wallet", security(("api_key" = [])),
    params(("id" = u64, Path)),
    responses((status = 200, body = CancelledOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn remove_withdrawal_address(
    State(g): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<u64>,
) -> ApiResult<Json<CancelledOut>> {
    p.require(Need::Withdraw)?;
    g.submit(Command::RemoveWithdrawalAddress {
        user: p.user,
        id: AddressId(id),
    })
    .await?
    .reply?;
    Ok(Json(CancelledOut {
        cancelled: vec![id.to_string()],
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalIn {
    /// Id of a whitelisted withdrawal address.
    #[schema(pattern = r"^[0-9]{1,19}$")]
    pub address_id: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: String,
    /// Your own id (a UUID): repeating a request with it returns the first one.
    #[schema(pattern = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")]
    pub client_id: Option<String>,
    /// The second-factor answer (see `STEP_UP_REQUIRED`); every withdrawal needs one.
    pub step_up: Option<crate::stepup::StepUpIn>,
}

/// Requests a withdrawal.
#[utoipa::path(post, path = "/withdrawals", tag = "wallet", security(("api_key" = [])),
    request_body = WithdrawalIn,
    responses((status = 200, body = WithdrawalOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn request_withdrawal(
    State(g): State<AppState>,
    Auth(p): Auth,
    Json(w): Json<WithdrawalIn>,
) -> ApiResult<Json<WithdrawalOut>> {
    let address = w
        .address_id
        .parse::<u64>()
        .map(AddressId)
        .map_err(|_| ApiError::invalid("address_id must be a number"))?;
    let client = w
        .client_id
        .as_deref()
        .map(|c| parse_uuid("client_id", c))
        .transpose()?;
    let rec = withdraw(&g, &p, address, &w.amount, client, w.step_up.as_ref()).await?;
    let m = g.read.model();
    Ok(Json(withdrawal_out(&m, &g.health, &rec)))
}

#[derive(Serialize, ToSchema)]
pub struct WithdrawalLimitOut {
    #[schema(pattern = r"^[A-Z0-9]{1,12}$")]
    pub asset: String,
    /// The most the caller's tier may withdraw in a rolling 24 h.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub day_max: String,
    /// What is left of it now: every withdrawal of the last 24 h not cancelled or failed
    /// counts, pending ones included.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub day_left: String,
    /// The most in a rolling 30 days.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub month_max: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub month_left: String,
}

/// The caller's withdrawal limits per asset and what is left of them now, as the engine counts
/// them when it checks a request (a request above either is `WITHDRAWAL_LIMIT_EXCEEDED`). An
/// asset the risk policy sets no limit for is not listed.
#[utoipa::path(get, path = "/withdrawal-limits", tag = "wallet", security(("api_key" = [])),
    params(AssetFilter),
    responses((status = 200, body = Vec<WithdrawalLimitOut>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn withdrawal_limits(
    State(g): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<AssetFilter>,
) -> ApiResult<Json<Vec<WithdrawalLimitOut>>> {
    p.require(Need::View)?;
    g.caught_up().await?;
    let m = g.read.model();
    let only = asset_filter(&m, q.asset.as_deref())?;
    let now = crate::auth::now_ns();
    Ok(Json(
        m.engine
            .assets()
            .iter()
            .enumerate()
            .map(|(i, a)| (AssetId(i as u32), a))
            .filter(|(id, _)| only.is_none_or(|o| o == *id))
            .filter_map(|(id, a)| {
                let (limit, left) = m.engine.withdrawal_limit_left(p.user, id, now)?;
                Some(WithdrawalLimitOut {
                    asset: a.code.as_str().to_owned(),
                    day_max: fmt_amount(limit.day_max.0, a.decimals),
                    day_left: fmt_amount(left.day.0, a.decimals),
                    month_max: fmt_amount(limit.month_max.0, a.decimals),
                    month_left: fmt_amount(left.month.0, a.decimals),
                })
            })
            .collect(),
    ))
}

/// The caller's withdrawals, newest first.
#[utoipa::path(get, path = "/withdrawals", tag = "wallet", security(("api_key" = [])),
    params(AssetFilter),
    responses((status = 200, body = Vec<WithdrawalOut>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn list_withdrawals(
    State(g): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<AssetFilter>,
) -> ApiResult<Json<Vec<WithdrawalOut>>> {
    p.require(Need::View)?;
    g.caught_up().await?;
    let m = g.read.model();
    let only = asset_filter(&m, q.asset.as_deref())?;
    Ok(Json(
        m.engine
            .wallet()
            .withdrawals()
            .iter()
            .rev()
            .filter(|w| w.user == p.user && only.is_none_or(|a| a == w.asset))
            .take(LIST_LIMIT_MAX)
            .map(|w| withdrawal_out(&m, &g.health, w))
            .collect(),
    ))
}

/// One withdrawal of the caller.
#[utoipa::path(get, path = "/withdrawals/{id}", tag = "wallet", security(("api_key" = [])),
    params(("id" = u64, Path)),
    responses((status = 200, body = WithdrawalOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_withdrawal(
    State(g): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<u64>,
) -> ApiResult<Json<WithdrawalOut>> {
    p.require(Need::View)?;
    g.caught_up().await?;
    let m = g.read.model();
    let w = m
        .engine
        .wallet()
        .withdrawal(WithdrawalId(id))
        .filter(|w| w.user == p.user)
        .ok_or(Reject::WithdrawalNotFound)?;
    Ok(Json(withdrawal_out(&m, &g.health, w)))
}

/// Cancels a withdrawal that has not been broadcast; the hold is released.
#[utoipa::path(delete, path = "/withdrawals/{id}", tag = "wallet", security(("api_key" = [])),
    params(("id" = u64, Path)),
    responses((status = 200, body = WithdrawalOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn cancel_withdrawal(
    State(g): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<u64>,
) -> ApiResult<Json<WithdrawalOut>> {
    p.require(Need::Withdraw)?;
    match g
        .submit(Command::CancelWithdrawal {
            user: p.user,
            id: WithdrawalId(id),
        })
        .await?
        .reply?
    {
        Reply::Withdrawal(w) => {
            let m = g.read.model();
            Ok(Json(withdrawal_out(&m, &g.health, &w)))
        }
        other => Err(unexpected(&other)),
    }
}
