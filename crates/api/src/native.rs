//! The native API under `/api/v1`. JSON; amounts and prices are decimal strings; every error is
//! `{"code", "message"}`. Routes and the OpenAPI document come from the same annotations
//! (utoipa-axum), so the document cannot list a route that does not exist or miss one that does.

use crate::auth::{Auth, Need, Principal};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::read::{Fill, Liquidity, ReadModel};
use crate::wire::{fmt_amount, fmt_uuid, parse_amount, parse_uuid, rfc3339, Scale};
use crate::AppState;
use axum::extract::State;
use kinko_core::book::{CancelReason, OrderBook, OrderId, Side, Stp, TimeInForce};
use kinko_core::engine::{Command, Reply};
use kinko_core::market::{MarketId, MarketState, CANDLE_GRANULARITIES_S};
use kinko_core::trading::{ClientOrderId, Order, OrderRef, OrderStatus, OrderType, PlaceOrder};
use kinko_core::wallet::{AddressId, DepositStatus, Withdrawal, WithdrawalId};
use kinko_core::{AssetId, Reject, UserId};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub const LIST_LIMIT_MAX: usize = 1_000;
pub const BOOK_DEPTH_MAX: usize = 1_000;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kinko native API",
        description = "Amounts and prices are decimal strings in the asset's units. Private endpoints take `Authorization: Bearer <key id>.<secret>` (an API key) or `Bearer kss_…` (a session from `/auth/login`). Sensitive actions answer `STEP_UP_REQUIRED` with a challenge; repeat them with `step_up` holding a TOTP code or a WebAuthn assertion over that challenge. Every error is `{\"code\", \"message\"}` with a stable code.",
        version = "1"
    ),
    servers((url = "/api/v1")),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;
impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("<key id>.<secret>, or a session token kss_…")
                    .build(),
            ),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("kss_… (from /auth/login)")
                    .build(),
            ),
        );
        c.add_security_scheme(
            "operator",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("the operator token (KINKO_OPERATOR_TOKEN)")
                    .build(),
            ),
        );
    }
}

/// What any operation may answer whatever its own inputs — too many requests (per IP, per key),
/// the engine or read side unavailable — and, for operations with a JSON body, a body over the
/// limit or of another content type; plus a description for every response. Applied to the
/// document once the routes have added their paths (`ApiDoc`'s own modifiers run before that).
struct CommonResponses;
impl utoipa::Modify for CommonResponses {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, RefOr, Response};
        let error = |description: &str| {
            let mut r = Response::new(description);
            r.content.insert(
                "application/json".into(),
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            );
            RefOr::T(r)
        };
        for item in api.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let has_body = op.request_body.is_some();
                let r = &mut op.responses.responses;
                for (status, description) in [
                    ("429", "Too many requests from this address or API key (`RATE_LIMITED`)."),
                    ("503", "Temporarily unavailable: the engine is busy, stopping or halted, or the read side is behind."),
                ] {
                    r.entry(status.into()).or_insert_with(|| error(description));
                }
                // Any JSON body can be malformed or miss a field (`INVALID_JSON`), any path
                // segment can be undecodable (`INVALID_PARAMETER`).
                let has_path_params = op
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Path);
                if has_body || has_path_params {
                    r.entry("400".into()).or_insert_with(|| {
                        error("Malformed JSON or parameters, or refused by a check (see `code`).")
                    });
                }
                if has_body {
                    r.entry("413".into())
                        .or_insert_with(|| error("The body is over the size limit (`PAYLOAD_TOO_LARGE`)."));
                    r.entry("415".into()).or_insert_with(|| {
                        error("The body is not `application/json` (`CONTENT_TYPE_INVALID`).")
                    });
                }
                for (status, resp) in r.iter_mut() {
                    if let RefOr::T(resp) = resp {
                        if resp.description.is_empty() {
                            resp.description = match status.as_str() {
                                "200" => "Success.",
                                "400" => "Malformed JSON or parameters, or refused by a check (see `code`).",
                                "401" => "Missing or invalid API key (`UNAUTHORIZED`).",
                                "403" => "The API key lacks the permission (`FORBIDDEN`), or the market, asset or address does not allow this now.",
                                "404" => "No such market, asset or record of the caller.",
                                "409" => "Conflicts with an earlier request or the record's state.",
                                _ => "See `code`.",
                            }
                            .into();
                        }
                    }
                }
            }
        }
    }
}

fn split() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let r = OpenApiRouter::with_openapi(ApiDoc::openapi());
    let (router, mut doc) = crate::ops::routes(crate::custody::routes(crate::account::routes(r)))
        .routes(routes!(assets))
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
        .split_for_parts();
    utoipa::Modify::modify(&CommonResponses, &mut doc);
    (router, doc)
}

/// The OpenAPI document of the native API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    split().1
}

pub fn router() -> axum::Router<AppState> {
    let (r, doc) = split();
    let doc = std::sync::Arc::new(doc);
    r.route(
        "/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json((*doc).clone()) }
        }),
    )
    .route("/ws", axum::routing::get(crate::ws::upgrade))
}

// ---------------------------------------------------------------------------------------------
// Lookups shared by handlers (and the Coinbase surface).

pub struct MarketRef {
    pub id: MarketId,
    pub scale: Scale,
    pub base: AssetId,
    pub quote: AssetId,
}

pub fn market_ref(m: &ReadModel, symbol: &str) -> ApiResult<MarketRef> {
    let id = m
        .engine
        .trading()
        .market_by_symbol(symbol)
        .ok_or(Reject::MarketNotFound)?;
    Ok(market_ref_by_id(m, id).ok_or(Reject::MarketNotFound)?)
}

pub fn market_ref_by_id(m: &ReadModel, id: MarketId) -> Option<MarketRef> {
    let e = &m.engine;
    let mk = e.trading().market(id)?;
    let spec = &mk.meta.spec;
    let bd = e.asset(spec.base).map_or(0, |a| a.decimals);
    let qd = e.asset(spec.quote).map_or(0, |a| a.decimals);
    Some(MarketRef {
        id,
        scale: Scale::of(&mk.meta, bd, qd),
        base: spec.base,
        quote: spec.quote,
    })
}

/// An optional `market` query parameter, resolved.
fn market_filter(m: &ReadModel, symbol: Option<&str>) -> ApiResult<Option<MarketId>> {
    symbol.map(|s| market_ref(m, s).map(|r| r.id)).transpose()
}

/// An optional `asset` query parameter, resolved.
fn asset_filter(m: &ReadModel, code: Option<&str>) -> ApiResult<Option<AssetId>> {
    code.map(|c| asset_ref(m, c).map(|(id, _)| id)).transpose()
}

pub fn asset_ref(m: &ReadModel, code: &str) -> ApiResult<(AssetId, u8)> {
    let id = m
        .engine
        .asset_by_code(&code.to_ascii_uppercase())
        .ok_or(Reject::AssetNotFound)?;
    Ok((id, m.engine.asset(id).map_or(0, |a| a.decimals)))
}

pub fn asset_code(m: &ReadModel, id: AssetId) -> String {
    m.engine
        .asset(id)
        .map_or_else(|| "?".into(), |a| a.code.as_str().to_owned())
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

pub fn side_name(s: Side) -> &'static str {
    match s {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

pub fn state_name(s: MarketState) -> &'static str {
    match s {
        MarketState::Open => "open",
        MarketState::PostOnly => "post_only",
        MarketState::CancelOnly => "cancel_only",
        MarketState::Halted => "halted",
    }
}

pub fn cancel_reason_name(r: CancelReason) -> &'static str {
    match r {
        CancelReason::User => "user",
        CancelReason::SelfTrade => "self_trade",
        CancelReason::Unfilled => "unfilled",
        CancelReason::FokUnfillable => "fok_unfillable",
        CancelReason::PostOnlyWouldCross => "post_only_would_cross",
        CancelReason::Engine => "engine",
    }
}

pub fn tif_name(t: TimeInForce) -> &'static str {
    match t {
        TimeInForce::Gtc => "gtc",
        TimeInForce::Ioc => "ioc",
        TimeInForce::Fok => "fok",
        TimeInForce::PostOnly => "post_only",
    }
}

// ---------------------------------------------------------------------------------------------
// Public market data.

#[derive(Serialize, ToSchema)]
pub struct AssetOut {
    pub code: String,
    pub decimals: u8,
    pub deposits_enabled: bool,
    pub withdrawals_enabled: bool,
    pub trading_enabled: bool,
    /// Charged per withdrawal, in the asset.
    pub withdrawal_fee: String,
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
            })
            .collect(),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct OrderTypesOut {
    pub limit: bool,
    pub market: bool,
    pub ioc: bool,
    pub fok: bool,
    pub post_only: bool,
}

#[derive(Serialize, ToSchema)]
pub struct MarketOut {
    /// `BASE-QUOTE`.
    pub symbol: String,
    pub base: String,
    pub quote: String,
    /// Price increment (quote per whole base unit).
    pub tick_size: String,
    /// Size increment (base).
    pub lot_size: String,
    pub min_size: String,
    pub max_size: String,
    /// Notional limits (quote).
    pub min_notional: String,
    pub max_notional: String,
    /// `open`, `post_only`, `cancel_only` or `halted`.
    pub state: String,
    /// Orders must be priced within ± this many basis points of the reference price.
    pub band_bps: u32,
    pub maker_fee_bps: u32,
    pub taker_fee_bps: u32,
    pub order_types: OrderTypesOut,
}

fn market_out(m: &ReadModel, id: MarketId) -> Option<MarketOut> {
    let mk = m.engine.trading().market(id)?;
    let r = market_ref_by_id(m, id)?;
    let spec = &mk.meta.spec;
    let fees = spec
        .fee_tiers
        .first()
        .copied()
        .unwrap_or(kinko_core::market::FeeTier {
            maker_bps: 0,
            taker_bps: 0,
        });
    let sw = mk.meta.switches;
    Some(MarketOut {
        symbol: spec.symbol.clone(),
        base: asset_code(m, spec.base),
        quote: asset_code(m, spec.quote),
        tick_size: r.scale.quote(spec.tick.0),
        lot_size: r.scale.base(spec.lot.0),
        min_size: r.scale.base(spec.qty_min.0),
        max_size: r.scale.base(spec.qty_max.0),
        min_notional: r.scale.quote(spec.notional_min.0),
        max_notional: r.scale.quote(spec.notional_max.0),
        state: state_name(mk.meta.state).into(),
        band_bps: spec.band_bps,
        maker_fee_bps: fees.maker_bps,
        taker_fee_bps: fees.taker_bps,
        order_types: OrderTypesOut {
            limit: sw.limit,
            market: sw.market,
            ioc: sw.ioc,
            fok: sw.fok,
            post_only: sw.post_only,
        },
    })
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
    params(("symbol" = String, Path, description = "e.g. BTC-USD")),
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
    pub depth: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct BookOut {
    pub market: String,
    /// The market's level-2 sequence: WebSocket `level2` updates with a higher sequence apply
    /// on top of this snapshot; a gap means resubscribe.
    pub sequence: u64,
    /// `[price, size, orders]`, best first.
    pub bids: Vec<[String; 3]>,
    pub asks: Vec<[String; 3]>,
}

pub fn book_snapshot(m: &ReadModel, r: &MarketRef, symbol: &str, depth: usize) -> BookOut {
    let mk = m.engine.trading().market(r.id).expect("market exists");
    let mut levels = Vec::new();
    let mut side = |s: Side| {
        levels.clear();
        mk.book.depth(s, depth, &mut levels);
        levels
            .iter()
            .map(|(p, q, n)| [r.scale.price(*p), r.scale.size(*q), n.to_string()])
            .collect::<Vec<_>>()
    };
    let bids = side(Side::Buy);
    let asks = side(Side::Sell);
    BookOut {
        market: symbol.to_owned(),
        sequence: mk.meta.book_seq,
        bids,
        asks,
    }
}

/// Level-2 order book snapshot.
#[utoipa::path(get, path = "/markets/{symbol}/book", tag = "market data",
    params(("symbol" = String, Path), DepthQuery),
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
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct TradeOut {
    pub id: u64,
    pub price: String,
    pub size: String,
    /// The taker's side.
    pub side: String,
    pub time: String,
}

/// Recent trades, newest first.
#[utoipa::path(get, path = "/markets/{symbol}/trades", tag = "market data",
    params(("symbol" = String, Path), LimitQuery),
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

#[derive(Serialize, ToSchema)]
pub struct TickerOut {
    pub market: String,
    pub last: Option<String>,
    pub best_bid: Option<String>,
    pub best_ask: Option<String>,
    pub open_24h: Option<String>,
    pub high_24h: Option<String>,
    pub low_24h: Option<String>,
    /// Base volume over the last 24 hours.
    pub volume_24h: String,
    pub trades_24h: u64,
    pub time: String,
}

pub fn ticker_of(m: &ReadModel, r: &MarketRef, symbol: &str) -> TickerOut {
    let mk = m.engine.trading().market(r.id).expect("market exists");
    let now = m.engine.last_timestamp_ns();
    let t = mk.meta.ticker(now, mk.book.best_bid(), mk.book.best_ask());
    let p = |x: Option<kinko_core::book::Price>| x.map(|v| r.scale.price(v));
    TickerOut {
        market: symbol.to_owned(),
        last: p(t.last),
        best_bid: p(t.best_bid),
        best_ask: p(t.best_ask),
        open_24h: p(t.open_24h),
        high_24h: p(t.high_24h),
        low_24h: p(t.low_24h),
        volume_24h: r.scale.lots_u128(t.volume_24h),
        trades_24h: t.trades_24h,
        time: rfc3339(now),
    }
}

/// 24-hour ticker.
#[utoipa::path(get, path = "/markets/{symbol}/ticker", tag = "market data",
    params(("symbol" = String, Path)),
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
    pub granularity: Option<u64>,
    /// At most 1000 (default 300).
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct CandleOut {
    /// Bucket start, Unix seconds.
    pub start: u64,
    pub open: String,
    pub high: String,
    pub low: String,
    pub close: String,
    /// Base volume.
    pub volume: String,
    pub trades: u64,
}

/// Candles, oldest first.
#[utoipa::path(get, path = "/markets/{symbol}/candles", tag = "market data",
    params(("symbol" = String, Path), CandleQuery),
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

pub fn candle_list(
    m: &ReadModel,
    r: &MarketRef,
    gran: u64,
    from_s: u64,
    to_s: u64,
    n: usize,
) -> Vec<CandleOut> {
    let mk = m.engine.trading().market(r.id).expect("market exists");
    let Some(series) = mk.meta.candles(gran) else {
        return Vec::new();
    };
    let mut v: Vec<CandleOut> = series
        .candles
        .iter()
        .rev()
        .filter(|c| c.start_s >= from_s && c.start_s <= to_s)
        .take(n)
        .map(|c| CandleOut {
            start: c.start_s,
            open: r.scale.price(c.open),
            high: r.scale.price(c.high),
            low: r.scale.price(c.low),
            close: r.scale.price(c.close),
            volume: r.scale.lots_u128(c.volume),
            trades: c.trades,
        })
        .collect();
    v.reverse();
    v
}

// ---------------------------------------------------------------------------------------------
// Balances.

#[derive(Serialize, ToSchema)]
pub struct BalanceOut {
    pub asset: String,
    pub total: String,
    pub available: String,
    /// Reserved by open orders and pending withdrawals.
    pub hold: String,
}

pub struct Balance {
    pub asset: AssetId,
    pub code: String,
    pub decimals: u8,
    pub total: u128,
    pub available: u128,
    pub hold: u128,
}

/// Every asset's balance of a user (zero where no account exists yet).
pub fn balances_of(m: &ReadModel, user: UserId) -> Vec<Balance> {
    let e = &m.engine;
    e.assets()
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let id = AssetId(i as u32);
            let acc = e
                .ledger()
                .customer_account(user, id)
                .and_then(|x| e.ledger().account(x));
            let total = acc.map_or(0, |x| u128::try_from(x.balance()).unwrap_or(0));
            let hold = acc.map_or(0, |x| x.held);
            Balance {
                asset: id,
                code: a.code.as_str().to_owned(),
                decimals: a.decimals,
                total,
                available: total.saturating_sub(hold),
                hold,
            }
        })
        .collect()
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
    pub market: String,
    /// `buy` or `sell`.
    pub side: String,
    /// `limit` (default) or `market`.
    #[serde(rename = "type")]
    pub order_type: Option<String>,
    /// Limit price (quote per whole base unit); limit orders only.
    pub price: Option<String>,
    /// Base quantity. Limit orders need it; market orders need `size` or `funds`.
    pub size: Option<String>,
    /// Quote to spend or receive, fees included (market orders only).
    pub funds: Option<String>,
    /// `gtc` (default), `ioc`, `fok` or `post_only`.
    pub time_in_force: Option<String>,
    /// Your own id for the order (a UUID), unique per account.
    pub client_order_id: Option<String>,
    /// Self-trade prevention: `cancel_newest` (default), `cancel_oldest` or `cancel_both`.
    pub stp: Option<String>,
}

/// Parsed order request, shared with the Coinbase surface.
pub struct OrderRequest<'a> {
    pub market: &'a str,
    pub side: &'a str,
    pub order_type: &'a str,
    pub price: Option<&'a str>,
    pub size: Option<&'a str>,
    pub funds: Option<&'a str>,
    pub tif: &'a str,
    pub client_order_id: Option<u128>,
    pub stp: Stp,
}

pub fn build_order(m: &ReadModel, user: UserId, o: &OrderRequest<'_>) -> ApiResult<PlaceOrder> {
    let r = market_ref(m, o.market)?;
    let side = match o.side {
        "buy" => Side::Buy,
        "sell" => Side::Sell,
        _ => return Err(ApiError::invalid("side must be buy or sell")),
    };
    let qd = r.scale.quote_decimals;
    let bd = r.scale.base_decimals;
    let size = o.size.map(|s| parse_amount("size", s, bd)).transpose()?;
    let order_type = match o.order_type {
        "limit" => {
            let tif = match o.tif {
                "gtc" | "GTC" => TimeInForce::Gtc,
                "ioc" | "IOC" => TimeInForce::Ioc,
                "fok" | "FOK" => TimeInForce::Fok,
                "post_only" => TimeInForce::PostOnly,
                _ => {
                    return Err(ApiError::invalid(
                        "time_in_force must be gtc, ioc, fok or post_only",
                    ))
                }
            };
            if o.funds.is_some() {
                return Err(ApiError::invalid("funds is for market orders"));
            }
            let price = o
                .price
                .ok_or_else(|| ApiError::invalid("a limit order needs a price"))?;
            if size.is_none() {
                return Err(ApiError::invalid("a limit order needs a size"));
            }
            OrderType::Limit {
                price: parse_amount("price", price, qd)?,
                tif,
            }
        }
        "market" => {
            if o.price.is_some() {
                return Err(ApiError::invalid("a market order takes no price"));
            }
            let funds = o.funds.map(|f| parse_amount("funds", f, qd)).transpose()?;
            if funds.is_some() == size.is_some() {
                return Err(ApiError::invalid(
                    "a market order needs exactly one of size and funds",
                ));
            }
            OrderType::Market { funds }
        }
        _ => return Err(ApiError::invalid("type must be limit or market")),
    };
    Ok(PlaceOrder {
        user,
        market: r.id,
        client_id: o.client_order_id.map(ClientOrderId),
        side,
        order_type,
        qty: size,
        stp: o.stp,
    })
}

pub fn parse_stp(s: Option<&str>) -> ApiResult<Stp> {
    Ok(match s {
        None | Some("cancel_newest") | Some("cn") | Some("dc") => Stp::CancelNewest,
        Some("cancel_oldest") | Some("co") => Stp::CancelOldest,
        Some("cancel_both") | Some("cb") => Stp::CancelBoth,
        Some(_) => {
            return Err(ApiError::invalid(
                "stp must be cancel_newest, cancel_oldest or cancel_both",
            ))
        }
    })
}

#[derive(Serialize, ToSchema)]
pub struct OrderOut {
    pub id: String,
    pub client_order_id: Option<String>,
    pub market: String,
    pub side: String,
    /// `limit` or `market`.
    #[serde(rename = "type")]
    pub order_type: String,
    pub time_in_force: Option<String>,
    /// Limit price, or the protection price of a market order.
    pub price: String,
    /// Requested size (the most it may fill).
    pub size: String,
    pub funds: Option<String>,
    pub filled_size: String,
    /// Quote value of the fills.
    pub executed_value: String,
    /// Fees paid (quote).
    pub fees: String,
    /// `open`, `filled` or `cancelled`.
    pub status: String,
    pub cancel_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

pub fn order_out(m: &ReadModel, o: &Order) -> OrderOut {
    let r = market_ref_by_id(m, o.market).expect("orders belong to markets");
    let (status, reason) = match o.status {
        OrderStatus::Open => ("open", None),
        OrderStatus::Filled => ("filled", None),
        OrderStatus::Cancelled(c) => ("cancelled", Some(cancel_reason_name(c).to_owned())),
    };
    let (ty, tif, funds) = match o.order_type {
        OrderType::Limit { tif, .. } => ("limit", Some(tif_name(tif).to_owned()), None),
        OrderType::Market { funds } => ("market", None, funds.map(|f| r.scale.quote(f.0))),
    };
    OrderOut {
        id: o.id.0.to_string(),
        client_order_id: o.client_id.map(|c| fmt_uuid(c.0)),
        market: m
            .engine
            .trading()
            .market(o.market)
            .map(|x| x.meta.spec.symbol.clone())
            .unwrap_or_default(),
        side: side_name(o.side).into(),
        order_type: ty.into(),
        time_in_force: tif,
        price: r.scale.price(o.limit),
        size: r.scale.size(o.qty),
        funds,
        filled_size: r.scale.size(o.filled),
        executed_value: r.scale.quote(o.filled_notional),
        fees: r.scale.quote(o.fees),
        status: status.into(),
        cancel_reason: reason,
        created_at: rfc3339(o.created_ns),
        updated_at: rfc3339(o.updated_ns),
    }
}

/// Places an order. The reply comes after the order is durable and has matched: it shows what
/// filled at once and whether the rest is open.
#[utoipa::path(post, path = "/orders", tag = "orders", security(("api_key" = [])),
    request_body = PlaceOrderIn,
    responses((status = 200, body = OrderOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn place_order(
    State(g): State<AppState>,
    Auth(p): Auth,
    Json(o): Json<PlaceOrderIn>,
) -> ApiResult<Json<OrderOut>> {
    p.require(Need::Trade)?;
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
    };
    let order = submit_order(&g, p.user, &req).await?;
    let m = g.read.model();
    Ok(Json(order_out(&m, &order)))
}

/// Builds, submits and counts an order; the engine's view of it after matching.
pub async fn submit_order(g: &AppState, user: UserId, req: &OrderRequest<'_>) -> ApiResult<Order> {
    let cmd = {
        let m = g.read.model();
        build_order(&m, user, req)
    };
    let cmd = match cmd {
        Ok(c) => c,
        Err(e) => {
            g.metrics
                .orders_rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(e);
        }
    };
    let c = g.submit(Command::PlaceOrder(cmd)).await;
    let counter = match &c {
        Ok(c) if c.reply.is_ok() => &g.metrics.orders_accepted,
        _ => &g.metrics.orders_rejected,
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match c?.reply? {
        Reply::OrderPlaced(p) => Ok(p.order),
        other => Err(unexpected(&other)),
    }
}

pub fn unexpected(r: &Reply) -> ApiError {
    tracing::error!(reply = ?r, "unexpected engine reply");
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "unexpected engine reply; it has been logged",
    )
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct OrdersQuery {
    pub market: Option<String>,
    /// `open` (default), `done` or `all`.
    pub status: Option<String>,
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

pub fn orders_of(
    m: &ReadModel,
    user: UserId,
    market: Option<MarketId>,
    open: bool,
    done: bool,
    n: usize,
) -> Vec<Order> {
    let t = m.engine.trading();
    let mut v = Vec::new();
    if open {
        v.extend(
            t.open_orders(user)
                .into_iter()
                .filter(|o| market.is_none_or(|x| o.market == x))
                .take(n),
        );
    }
    if done && v.len() < n {
        v.extend(
            t.done_orders(user, usize::MAX)
                .into_iter()
                .filter(|o| market.is_none_or(|x| o.market == x))
                .take(n - v.len()),
        );
    }
    v
}

/// `123` or `client:<uuid>`.
pub fn order_ref(text: &str) -> ApiResult<OrderRef> {
    if let Some(c) = text.strip_prefix("client:") {
        return Ok(OrderRef::Client(ClientOrderId(parse_uuid("order id", c)?)));
    }
    text.parse::<u64>()
        .map(|i| OrderRef::Id(OrderId(i)))
        .map_err(|_| ApiError::invalid("order id must be a number or client:<uuid>"))
}

pub fn find_order(m: &ReadModel, user: UserId, r: OrderRef) -> ApiResult<Order> {
    let t = m.engine.trading();
    let id = match r {
        OrderRef::Id(id) => id,
        OrderRef::Client(c) => t.order_by_client_id(user, c).ok_or(Reject::OrderNotFound)?,
    };
    t.order(id)
        .filter(|o| o.user == user)
        .copied()
        .ok_or_else(|| Reject::OrderNotFound.into())
}

/// One order of the caller, by id or `client:<uuid>`.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders", security(("api_key" = [])),
    params(("id" = String, Path, description = "order id or client:<uuid>")),
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
    params(("id" = String, Path, description = "order id or client:<uuid>")),
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

pub async fn cancel(g: &AppState, user: UserId, order: OrderRef) -> ApiResult<Order> {
    match g.submit(Command::CancelOrder { user, order }).await?.reply? {
        Reply::OrderCancelled(o) => Ok(o),
        other => Err(unexpected(&other)),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct MarketFilter {
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
    pub market: Option<String>,
    pub order_id: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct FillOut {
    pub trade_id: u64,
    pub order_id: String,
    pub market: String,
    pub side: String,
    pub price: String,
    pub size: String,
    /// Quote value.
    pub value: String,
    /// Fee paid (quote).
    pub fee: String,
    /// `maker` or `taker`.
    pub liquidity: String,
    pub time: String,
}

pub fn fill_out(m: &ReadModel, f: &Fill) -> FillOut {
    let r = market_ref_by_id(m, f.market).expect("fills belong to markets");
    FillOut {
        trade_id: f.trade_id,
        order_id: f.order.0.to_string(),
        market: m
            .engine
            .trading()
            .market(f.market)
            .map(|x| x.meta.spec.symbol.clone())
            .unwrap_or_default(),
        side: side_name(f.side).into(),
        price: r.scale.price(f.price),
        size: r.scale.size(f.qty),
        value: r.scale.quote(f.notional),
        fee: r.scale.quote(f.fee),
        liquidity: match f.liquidity {
            Liquidity::Maker => "maker",
            Liquidity::Taker => "taker",
        }
        .into(),
        time: rfc3339(f.timestamp_ns),
    }
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
    pub asset: String,
}

#[derive(Serialize, ToSchema)]
pub struct DepositAddressOut {
    pub asset: String,
    pub address: String,
    pub created_at: String,
}

/// Creates a new deposit address of the caller for an asset.
///
/// On a real chain the address is derived at the asset's next index; two requests racing for
/// the same index are told apart by the engine (`ADDRESS_TAKEN`) and the loser derives again.
pub async fn new_deposit_address(g: &AppState, user: UserId, code: &str) -> ApiResult<String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        g.caught_up().await?;
        let (asset, n, index, code) = {
            let m = g.read.model();
            let (asset, _) = asset_ref(&m, code)?;
            let w = m.engine.wallet();
            let n = w.deposit_addresses(user, asset).len() as u32;
            let index = u32::try_from(w.deposit_address_count(asset)).unwrap_or(u32::MAX);
            (asset, n, index, asset_code(&m, asset))
        };
        let address = g.chain.deposit_address(&code, user, n, index).ok_or_else(|| {
            ApiError::unavailable(
                "CUSTODY_UNAVAILABLE",
                format!("no deposit address for {code} now: no chain is configured for it, or its node is not watching new addresses yet (retry shortly)"),
            )
        })?;
        match g
            .submit(Command::AssignDepositAddress { user, asset, address })
            .await?
            .reply
        {
            Ok(Reply::DepositAddress { address }) => return Ok(address),
            Err(kinko_core::Reject::AddressTaken) if attempt < 8 => continue,
            Err(e) => return Err(e.into()),
            Ok(other) => return Err(unexpected(&other)),
        }
    }
}

/// A new deposit address for an asset.
#[utoipa::path(post, path = "/deposit-addresses", tag = "wallet", security(("api_key" = [])),
    request_body = AssetIn,
    responses((status = 200, body = DepositAddressOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
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
    pub amount: String,
    /// `pending`, `credited`, `dropped` (left the chain before it was final) or `reversed`
    /// (left the chain after it was credited).
    pub status: String,
    pub seen_at: String,
    pub updated_at: String,
}

pub fn deposit_status_name(s: DepositStatus) -> &'static str {
    s.name()
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
    pub asset: String,
    pub address: String,
    pub label: Option<String>,
    /// The second-factor answer (see `STEP_UP_REQUIRED`).
    pub step_up: Option<crate::account::StepUpIn>,
}

#[derive(Serialize, ToSchema)]
pub struct WithdrawalAddressOut {
    pub id: String,
    pub asset: String,
    pub address: String,
    pub label: String,
    pub created_at: String,
    /// Withdrawals to this address are refused before this time.
    pub usable_at: String,
}

fn withdrawal_address_out(m: &ReadModel, a: &kinko_core::wallet::WithdrawalAddress) -> WithdrawalAddressOut {
    WithdrawalAddressOut {
        id: a.id.0.to_string(),
        asset: asset_code(m, a.asset),
        address: a.address.clone(),
        label: a.label.clone(),
        created_at: rfc3339(a.created_ns),
        usable_at: rfc3339(a.usable_at_ns),
    }
}

/// Adds a whitelisted withdrawal address. It becomes usable after the cooling period.
pub async fn add_address(
    g: &AppState,
    user: UserId,
    code: &str,
    address: &str,
    label: &str,
    cooling_ns: u64,
    who: Result<(&Principal, Option<&crate::account::StepUpIn>), kinko_core::engine::AddressAuth>,
) -> ApiResult<kinko_core::wallet::WithdrawalAddress> {
    let asset = {
        let m = g.read.model();
        asset_ref(&m, code)?.0
    };
    let code = code.to_ascii_uppercase();
    if !g.chain.valid_address(&code, address) {
        return Err(Reject::AddressInvalid.into());
    }
    let (by, ip) = match who {
        Ok((p, step_up)) => {
            let action = kinko_core::identity::Action::AddWithdrawalAddress {
                user,
                asset,
                address: address.to_owned(),
                label: label.to_owned(),
            };
            let proof = crate::account::prove(g, user, &action, step_up, &p.ip).await?;
            (
                kinko_core::engine::AddressAuth::User {
                    via: p.via.clone(),
                    proof,
                },
                p.ip.clone(),
            )
        }
        Err(operator) => (operator, String::new()),
    };
    let r = g
        .submit(Command::AddWithdrawalAddress {
            user,
            asset,
            address: address.to_owned(),
            label: label.to_owned(),
            cooling_ns,
            by,
        })
        .await
        .and_then(|c| c.reply.map_err(ApiError::from));
    match crate::account::audited(g, user, &ip, r).await? {
        Reply::WithdrawalAddress(a) => Ok(a),
        other => Err(unexpected(&other)),
    }
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
    pub address_id: String,
    pub amount: String,
    /// Your own id (a UUID): repeating a request with it returns the first one.
    pub client_id: Option<String>,
    /// The second-factor answer (see `STEP_UP_REQUIRED`); every withdrawal needs one.
    pub step_up: Option<crate::account::StepUpIn>,
}

#[derive(Serialize, ToSchema)]
pub struct WithdrawalOut {
    pub id: String,
    pub asset: String,
    pub address_id: String,
    pub address: String,
    pub amount: String,
    pub fee: String,
    /// `requested`, `broadcast`, `completed`, `cancelled` or `failed`.
    pub status: String,
    pub txid: Option<String>,
    pub client_id: Option<String>,
    pub reason: Option<String>,
    pub requested_at: String,
    pub updated_at: String,
}

pub fn withdrawal_out(m: &ReadModel, w: &Withdrawal) -> WithdrawalOut {
    let dec = m.engine.asset(w.asset).map_or(0, |a| a.decimals);
    WithdrawalOut {
        id: w.id.0.to_string(),
        asset: asset_code(m, w.asset),
        address_id: w.address_id.0.to_string(),
        address: w.address.clone(),
        amount: fmt_amount(w.amount.0, dec),
        fee: fmt_amount(w.fee.0, dec),
        status: w.status.name().into(),
        txid: w.txid.clone(),
        client_id: w.client_id.map(fmt_uuid),
        reason: w.reason.clone(),
        requested_at: rfc3339(w.requested_ns),
        updated_at: rfc3339(w.updated_ns),
    }
}

/// Requests a withdrawal to a whitelisted address; the amount and fee are held at once.
pub async fn withdraw(
    g: &AppState,
    p: &Principal,
    address: AddressId,
    amount: &str,
    client: Option<u128>,
    step_up: Option<&crate::account::StepUpIn>,
) -> ApiResult<Withdrawal> {
    p.require(Need::Withdraw)?;
    g.caught_up().await?;
    let amount = {
        let m = g.read.model();
        let a = m
            .engine
            .wallet()
            .withdrawal_address(address)
            .filter(|a| a.user == p.user && !a.removed)
            .ok_or(Reject::WithdrawalAddressNotFound)?;
        let dec = m.engine.asset(a.asset).map_or(0, |x| x.decimals);
        parse_amount("amount", amount, dec)?
    };
    // A retry of a request already taken answers with the original, without a new proof.
    if let Some(c) = client {
        let m = g.read.model();
        let w = m.engine.wallet();
        if let Some(w) = w.withdrawal_by_client(p.user, c).and_then(|id| w.withdrawal(id)) {
            return if w.address_id == address && w.amount == amount {
                Ok(w.clone())
            } else {
                Err(Reject::DuplicateClientWithdrawalId.into())
            };
        }
    }
    let action = g
        .read
        .model()
        .engine
        .withdrawal_action(p.user, address, amount, client)?;
    let proof = crate::account::prove(g, p.user, &action, step_up, &p.ip).await?;
    let r = g
        .submit(Command::RequestWithdrawal {
            user: p.user,
            address,
            amount,
            client_id: client,
            via: p.via.clone(),
            proof,
        })
        .await
        .and_then(|c| c.reply.map_err(ApiError::from));
    match crate::account::audited(g, p.user, &p.ip, r).await? {
        Reply::Withdrawal(w) => Ok(w),
        other => Err(unexpected(&other)),
    }
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
    Ok(Json(withdrawal_out(&m, &rec)))
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
            .map(|w| withdrawal_out(&m, w))
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
    Ok(Json(withdrawal_out(&m, w)))
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
            Ok(Json(withdrawal_out(&m, &w)))
        }
        other => Err(unexpected(&other)),
    }
}
