//! The Coinbase-Exchange-compatible surface at the root path: enough of Coinbase Exchange's REST
//! API for the unmodified ccxt `coinbaseexchange` class (the contract is
//! `crates/api/COINBASE-COMPAT.md`).
//!
//! Conventions, as Coinbase has them: ids are strings, decimals are strings, times are ISO 8601
//! UTC, errors are `{"message": ...}` (400 and 404 carry the exact messages ccxt maps to its
//! exception classes; 403 and 409 are never used, because ccxt reads them as network trouble).
//! Private requests are signed with the CB-ACCESS-* headers over the raw request target and the
//! raw body bytes. Everything stays in integers: JSON numbers sent by clients are read from their
//! text, never through floating point.

use crate::auth::{self, Need, Principal};
use crate::error::{ApiError, ErrorCode};
use crate::extract::Path;
use crate::usecase::{new_deposit_address, parse_stp, submit_order, withdraw, OrderRequest};
use crate::view::{
    asset_code, balances_of, book_snapshot, candle_list, find_order, market_ref, market_ref_by_id, side_name,
    ticker_of, MarketRef, BOOK_DEPTH_MAX, LIST_LIMIT_MAX,
};
use crate::wire::{fmt_amount, fmt_uuid, parse_time_s, parse_uuid, rfc3339};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, OriginalUri, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use kinko_core::book::{CancelReason, OrderBook, OrderId, Price, Side, Stp, TimeInForce};
use kinko_core::engine::{Command, Reply};
use kinko_core::market::{MarketId, MarketState, CANDLE_GRANULARITIES_S};
use kinko_core::trading::{ClientOrderId, Order, OrderRef, OrderStatus, OrderType};
use kinko_core::wallet::{Deposit, DepositStatus, Withdrawal, WithdrawalId, WithdrawalStatus};
use kinko_core::{AssetId, Reject, UserId};
use kinko_engine::health::Health;
use kinko_engine::replica::{Fill, Liquidity, ReadModel};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub(crate) mod feed;
mod history;
use history::{Page, Paged};

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/ws-feed", get(feed::upgrade))
        .route("/time", get(time))
        .route("/currencies", get(currencies))
        .route("/currencies/{id}", get(currency))
        .route("/products", get(products))
        .route("/products/spark-lines", get(history::spark_lines))
        .route("/products/stats", get(history::all_stats))
        .route("/products/{id}", get(product))
        .route("/products/{id}/book", get(book))
        .route("/products/{id}/ticker", get(ticker))
        .route("/products/{id}/stats", get(stats))
        .route("/products/{id}/trades", get(trades))
        .route("/products/{id}/candles", get(candles))
        .route("/accounts", get(accounts))
        .route("/accounts/{id}", get(account))
        .route("/accounts/{id}/transfers", get(account_transfers))
        .route("/accounts/{id}/ledger", get(history::ledger))
        .route("/accounts/{id}/holds", get(history::holds))
        .route("/fees", get(history::fees))
        .route("/transfers", get(transfers))
        .route("/transfers/{id}", get(transfer))
        .route("/orders", post(place_order).get(list_orders).delete(cancel_all))
        .route("/orders/{id}", get(get_order).delete(cancel_order))
        .route("/fills", get(fills))
        .route("/coinbase-accounts", get(coinbase_accounts))
        .route("/coinbase-accounts/{id}/addresses", post(create_address))
        .route("/withdrawals/crypto", post(withdraw_crypto))
        .route("/withdrawals/{id}", get(transfer))
}

// ---------------------------------------------------------------------------------------------
// Errors: `{"message": ...}`.

/// An error as Coinbase clients expect it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CbError {
    pub status: StatusCode,
    /// kinko's code, for metrics and logs only (Coinbase bodies carry no code).
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (rate limits).
    pub retry_after_s: Option<u64>,
}

pub type CbResult<T> = Result<T, CbError>;

impl CbError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> CbError {
        CbError {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
    /// 400 with a message.
    fn bad(message: impl Into<String>) -> CbError {
        CbError::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER", message)
    }
    /// 404 `NotFound` (ccxt: `OrderNotFound`).
    fn not_found() -> CbError {
        CbError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "NotFound")
    }
    /// 400 `Product not found` (ccxt: `InvalidOrder`), for a product named in a body or query.
    fn no_product() -> CbError {
        CbError::new(
            StatusCode::BAD_REQUEST,
            Reject::MarketNotFound.code(),
            "Product not found",
        )
    }
    /// 404 `Product not found`, for a product named in the path.
    fn no_product_path() -> CbError {
        CbError::new(
            StatusCode::NOT_FOUND,
            Reject::MarketNotFound.code(),
            "Product not found",
        )
    }
    fn bad_order_id() -> CbError {
        CbError::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER", "Invalid order id")
    }
}

impl IntoResponse for CbError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({ "message": self.message }))).into_response();
        r.extensions_mut().insert(ErrorCode(self.code));
        if let Some(s) = self.retry_after_s {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, s.into());
        }
        r
    }
}

fn reject_of(code: &str) -> Option<Reject> {
    Reject::ALL.iter().copied().find(|r| r.code() == code)
}

/// The message (and status) ccxt maps to the right exception, for rejects that have one.
fn reject_reply(r: Reject) -> Option<(StatusCode, &'static str)> {
    use Reject::*;
    let bad = StatusCode::BAD_REQUEST;
    Some(match r {
        InsufficientFunds | FundsInsufficient => (bad, "Insufficient funds"),
        MarketNotFound => (bad, "Product not found"),
        OrderNotFound | WithdrawalNotFound | DepositNotFound => (StatusCode::NOT_FOUND, "NotFound"),
        MarketCancelOnly => (bad, "Cancel only mode"),
        MarketHalted => (bad, "Trading is halted: the market is under maintenance"),
        AssetTradingDisabled => (bad, "Trading pair not available"),
        PriceZero => (bad, "price too small"),
        PriceOffTick => (bad, "price too precise"),
        QtyZero | QtyBelowMin => (bad, "size is too small"),
        _ => return None,
    })
}

impl From<ApiError> for CbError {
    fn from(e: ApiError) -> CbError {
        if let Some((status, message)) = reject_of(e.code).and_then(reject_reply) {
            return CbError::new(status, e.code, message);
        }
        let status = match e.status.as_u16() {
            401 | 429 | 500..=599 if e.code != "CUSTODY_UNAVAILABLE" => e.status,
            // A key without the permission: an authentication problem to ccxt (403 would read
            // as "exchange not available").
            403 if e.code == "FORBIDDEN" => StatusCode::UNAUTHORIZED,
            404 => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        CbError {
            retry_after_s: e.retry_after_s,
            ..CbError::new(status, e.code, e.message)
        }
    }
}

impl From<Reject> for CbError {
    fn from(r: Reject) -> CbError {
        CbError::from(ApiError::from(r))
    }
}

// ---------------------------------------------------------------------------------------------
// Requests: signed callers, query strings, JSON bodies.

/// A caller authenticated by CB-ACCESS-* headers over the raw request target and body.
pub struct Signed {
    pub principal: Principal,
    pub uri: Uri,
    pub body: Bytes,
}

impl Signed {
    fn require(&self, need: Need) -> CbResult<UserId> {
        self.principal.require(need)?;
        Ok(self.principal.user)
    }
    fn query(&self) -> CbResult<Params> {
        Params::of(&self.uri)
    }
}

impl FromRequest<AppState> for Signed {
    type Rejection = CbError;

    async fn from_request(req: Request, g: &AppState) -> Result<Signed, CbError> {
        let method = req.method().clone();
        let uri = req
            .extensions()
            .get::<OriginalUri>()
            .map_or_else(|| req.uri().clone(), |u| u.0.clone());
        let headers = req.headers().clone();
        let ip = auth::ip_from(req.extensions());
        let body = Bytes::from_request(req, g)
            .await
            .map_err(|_| CbError::bad("the request body is too large or unreadable"))?;
        // The target exactly as it came on the request line: path plus `?` and the raw query.
        let target = uri.path_and_query().map_or_else(|| uri.path(), |pq| pq.as_str());
        let principal = auth::coinbase(g, &ip, method.as_str(), target, &headers, &body).await?;
        Ok(Signed { principal, uri, body })
    }
}

/// Query parameters in order, repeated keys kept.
struct Params(Vec<(String, String)>);

impl Params {
    fn of(uri: &Uri) -> CbResult<Params> {
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|q| Params(q.0))
            .map_err(|e| CbError::bad(format!("invalid query string: {}", e.body_text())))
    }
    /// Refuses a parameter this endpoint does not know rather than ignoring a filter.
    fn only(&self, known: &[&str]) -> CbResult<()> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((k, _)) => Err(CbError::bad(format!("unsupported query parameter: {k}"))),
            None => Ok(()),
        }
    }
    /// One value; repeating the key is an error; an empty value counts as absent.
    fn one(&self, key: &str) -> CbResult<Option<&str>> {
        let mut it = self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let first = it.next();
        if it.next().is_some() {
            return Err(CbError::bad(format!("{key} may be given only once")));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }
    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
            .collect()
    }
    fn limit(&self, default: usize, max: usize) -> CbResult<usize> {
        match self.one("limit")? {
            None => Ok(default),
            Some(t) => match t.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(CbError::bad(format!("limit must be an integer from 1 to {max}"))),
            },
        }
    }
    fn time_ns(&self, key: &str) -> CbResult<Option<u64>> {
        self.one(key)?.map(|t| parse_time_ns(key, t)).transpose()
    }
}

/// RFC 3339 (fraction kept, to the nanosecond) or Unix seconds, as nanoseconds since the epoch.
fn parse_time_ns(field: &str, text: &str) -> CbResult<u64> {
    let s = parse_time_s(field, text)?;
    let frac = if text.len() > 19 && text.as_bytes()[19] == b'.' {
        &text[20..]
    } else {
        match text.split_once('.') {
            Some((i, f)) if i.bytes().all(|b| b.is_ascii_digit()) => f,
            _ => "",
        }
    };
    let digits: String = frac.chars().take_while(char::is_ascii_digit).take(9).collect();
    let frac_ns = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse::<u64>().unwrap_or(0)
    };
    s.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac_ns))
        .ok_or_else(|| CbError::bad(format!("{field}: time out of range")))
}

/// A JSON object body, each value kept as its exact text.
struct Body(BTreeMap<String, Box<RawValue>>);

impl Body {
    fn parse(bytes: &[u8], required: bool) -> CbResult<Body> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            if required {
                return Err(CbError::bad("a JSON object body is required"));
            }
            return Ok(Body(BTreeMap::new()));
        }
        serde_json::from_slice::<BTreeMap<String, Box<RawValue>>>(bytes)
            .map(Body)
            .map_err(|e| CbError::bad(format!("the body must be a JSON object: {e}")))
    }
    fn only(&self, known: &[&str]) -> CbResult<()> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(CbError::bad(format!("unsupported parameter: {k}"))),
            None => Ok(()),
        }
    }
    fn raw(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|r| r.get().trim()).filter(|t| *t != "null")
    }
    fn string(&self, key: &str) -> CbResult<Option<String>> {
        match self.raw(key) {
            None => Ok(None),
            Some(t) if t.starts_with('"') => serde_json::from_str::<String>(t)
                .map(Some)
                .map_err(|_| CbError::bad(format!("{key} must be a string"))),
            Some(_) => Err(CbError::bad(format!("{key} must be a string"))),
        }
    }
    /// A decimal given as a string or as a JSON number (read from its text, exponent included).
    fn decimal(&self, key: &str) -> CbResult<Option<String>> {
        match self.raw(key) {
            None => Ok(None),
            Some(t) if t.starts_with('"') => self.string(key),
            Some(t) if t.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => json_number_to_decimal(t)
                .map(Some)
                .map_err(|why| CbError::bad(format!("{key}: {why}"))),
            Some(_) => Err(CbError::bad(format!("{key} must be a decimal string or number"))),
        }
    }
    fn boolean(&self, key: &str) -> CbResult<Option<bool>> {
        match self.raw(key) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(CbError::bad(format!("{key} must be true or false"))),
        }
    }
}

/// The exact decimal text of a JSON number token, exponent expanded with string operations only:
/// `1e-8` → `0.00000001`, `1.5E+3` → `1500`, `-2` → `-2` (the sign is kept for the caller to
/// refuse). No floating point is involved, so nothing is rounded.
pub fn json_number_to_decimal(token: &str) -> Result<String, &'static str> {
    const MALFORMED: &str = "not a valid number";
    let (negative, rest) = match token.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, token),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) if !f.is_empty() => (i, f),
        Some(_) => return Err(MALFORMED),
        None => (mantissa, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(MALFORMED);
    }
    let exp: i64 = match exponent {
        None => 0,
        Some(e) => {
            let (sign, digits) = match e.as_bytes().first() {
                Some(b'-') => (-1, &e[1..]),
                Some(b'+') => (1, &e[1..]),
                _ => (1, e),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(MALFORMED);
            }
            let digits = digits.trim_start_matches('0');
            if digits.len() > 4 {
                return Err("out of range");
            }
            sign * digits.parse::<i64>().unwrap_or(0)
        }
    };
    let digits = format!("{int}{frac}");
    // Where the decimal point goes, counted from the left of `digits`.
    let point = int.len() as i64 + exp;
    if !(-100..=100).contains(&point) {
        return Err("out of range");
    }
    let (ip, fp) = if point <= 0 {
        (
            String::from("0"),
            format!("{}{digits}", "0".repeat(point.unsigned_abs() as usize)),
        )
    } else if point as usize >= digits.len() {
        (
            format!("{digits}{}", "0".repeat(point as usize - digits.len())),
            String::new(),
        )
    } else {
        (
            digits[..point as usize].to_owned(),
            digits[point as usize..].to_owned(),
        )
    };
    let ip = ip.trim_start_matches('0');
    let ip = if ip.is_empty() { "0" } else { ip };
    let sign = if negative { "-" } else { "" };
    Ok(if fp.is_empty() {
        format!("{sign}{ip}")
    } else {
        format!("{sign}{ip}.{fp}")
    })
}

/// Whether a plain decimal has non-zero digits beyond `decimals` places.
fn too_precise(text: &str, decimals: u8) -> bool {
    match text.trim().split_once('.') {
        Some((_, f)) if f.bytes().all(|b| b.is_ascii_digit()) => {
            f.bytes().skip(decimals as usize).any(|b| b != b'0')
        }
        _ => false,
    }
}

/// A JSON body built by hand (for the few places Coinbase sends JSON numbers that are not
/// integers, which serde_json would route through floating point).
fn raw_json(text: String) -> Response {
    let mut r = text.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `30000.010000` → `30000.01`, `30000.000000` → `30000`: a JSON number token.
fn trim_decimal(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Ids: accounts and transfers as UUID-formatted strings that encode what they name.

/// `"acct"`, in the middle of an account id.
const ACCOUNT_TAG: u128 = 0x6163_6374;
/// `"deposit\0"` and `"withdraw"`, in the high half of a transfer id.
const DEPOSIT_TAG: u128 = 0x6465_706f_7369_7400;
const WITHDRAWAL_TAG: u128 = 0x7769_7468_6472_6177;
/// `"nonce\0\0\0"`: the high half of the client withdrawal id made from a Coinbase `nonce`.
const NONCE_TAG: u128 = 0x6e6f_6e63_6500_0000;

/// The account of `user` in `asset`: user id in the high 64 bits, then the tag, then the asset.
pub fn account_id(user: UserId, asset: AssetId) -> String {
    fmt_uuid((u128::from(user.0) << 64) | (ACCOUNT_TAG << 32) | u128::from(asset.0))
}

pub fn parse_account_id(text: &str) -> Option<(UserId, AssetId)> {
    let v = parse_uuid("account id", text).ok()?;
    if (v >> 32) & 0xffff_ffff != ACCOUNT_TAG {
        return None;
    }
    Some((UserId((v >> 64) as u64), AssetId((v & 0xffff_ffff) as u32)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TransferRef {
    Deposit(u64),
    Withdrawal(u64),
}

fn transfer_id(t: TransferRef) -> String {
    match t {
        TransferRef::Deposit(id) => fmt_uuid((DEPOSIT_TAG << 64) | u128::from(id)),
        TransferRef::Withdrawal(id) => fmt_uuid((WITHDRAWAL_TAG << 64) | u128::from(id)),
    }
}

fn parse_transfer_id(text: &str) -> Option<TransferRef> {
    let v = parse_uuid("transfer id", text).ok()?;
    let id = (v & u128::from(u64::MAX)) as u64;
    match v >> 64 {
        DEPOSIT_TAG => Some(TransferRef::Deposit(id)),
        WITHDRAWAL_TAG => Some(TransferRef::Withdrawal(id)),
        _ => None,
    }
}

/// The caller's own account named in a path; anyone else's (or garbage) is not found.
fn own_account(m: &ReadModel, user: UserId, text: &str) -> CbResult<AssetId> {
    match parse_account_id(text) {
        Some((u, asset)) if u == user && m.engine.asset(asset).is_some() => Ok(asset),
        _ => Err(CbError::not_found()),
    }
}

// ---------------------------------------------------------------------------------------------
// Public: time, currencies, products, market data.

async fn time() -> Response {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    raw_json(format!(
        "{{\"iso\":\"{}\",\"epoch\":{}.{:03}}}",
        rfc3339(ns),
        d.as_secs(),
        d.subsec_millis()
    ))
}

const FIAT: [&str; 10] = [
    "USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "SGD", "HKD", "KRW",
];

fn currency_name(code: &str) -> &str {
    match code {
        "BTC" => "Bitcoin",
        "ETH" => "Ethereum",
        "LTC" => "Litecoin",
        "USD" => "United States Dollar",
        "EUR" => "Euro",
        "GBP" => "British Pound",
        "JPY" => "Japanese Yen",
        other => other,
    }
}

fn currency_json(m: &ReadModel, id: AssetId) -> Option<Value> {
    let a = m.engine.asset(id)?;
    let code = a.code.as_str();
    let unit = fmt_amount(1, a.decimals);
    let online = a.switches.deposits || a.switches.withdrawals || a.switches.trading;
    let fiat = FIAT.contains(&code);
    Some(json!({
        "id": code,
        "name": currency_name(code),
        "min_size": unit,
        "status": if online { "online" } else { "offline" },
        "message": "",
        "max_precision": unit,
        "convertible_to": [],
        "details": {
            "type": if fiat { "fiat" } else { "crypto" },
            "symbol": "",
            "sort_order": id.0,
            "push_payment_methods": [],
            "min_withdrawal_amount": unit,
            "withdrawal_fee": fmt_amount(m.engine.wallet().withdrawal_fee(id).0, a.decimals),
            "deposits_enabled": a.switches.deposits,
            "withdrawals_enabled": a.switches.withdrawals,
        },
        "supported_networks": [],
    }))
}

async fn currencies(State(g): State<AppState>) -> CbResult<Json<Vec<Value>>> {
    g.caught_up().await?;
    let m = g.read.model();
    let n = m.engine.assets().len();
    Ok(Json(
        (0..n)
            .filter_map(|i| currency_json(&m, AssetId(i as u32)))
            .collect(),
    ))
}

async fn currency(State(g): State<AppState>, Path(id): Path<String>) -> CbResult<Json<Value>> {
    g.caught_up().await?;
    let m = g.read.model();
    let asset = m
        .engine
        .asset_by_code(&id.to_ascii_uppercase())
        .ok_or_else(CbError::not_found)?;
    currency_json(&m, asset).map(Json).ok_or_else(CbError::not_found)
}

/// A product by id (case-insensitive), or `not_found`.
fn product_ref(m: &ReadModel, id: &str, not_found: fn() -> CbError) -> CbResult<MarketRef> {
    market_ref(m, &id.to_ascii_uppercase()).map_err(|_| not_found())
}

fn symbol_of(m: &ReadModel, id: MarketId) -> String {
    m.engine
        .trading()
        .market(id)
        .map(|x| x.meta.spec.symbol.clone())
        .unwrap_or_default()
}

fn product_json(m: &ReadModel, id: MarketId) -> Option<Value> {
    let mk = m.engine.trading().market(id)?;
    let r = market_ref_by_id(m, id)?;
    let spec = &mk.meta.spec;
    let (base, quote) = (asset_code(m, spec.base), asset_code(m, spec.quote));
    let state = mk.meta.state;
    let trading = [spec.base, spec.quote]
        .iter()
        .all(|a| m.engine.asset(*a).is_some_and(|x| x.switches.trading));
    let online = state != MarketState::Halted && trading;
    Some(json!({
        "id": spec.symbol,
        "base_currency": base,
        "quote_currency": quote,
        "quote_increment": r.scale.quote(spec.tick.0),
        "base_increment": r.scale.base(spec.lot.0),
        "display_name": format!("{base}/{quote}"),
        "min_market_funds": r.scale.quote(spec.notional_min.0),
        "max_market_funds": r.scale.quote(spec.notional_max.0),
        "base_min_size": r.scale.base(spec.qty_min.0),
        "base_max_size": r.scale.base(spec.qty_max.0),
        "margin_enabled": false,
        "post_only": state == MarketState::PostOnly,
        "limit_only": !mk.meta.switches.market,
        "cancel_only": state == MarketState::CancelOnly,
        "trading_disabled": !online,
        "status": if online { "online" } else { "offline" },
        "status_message": "",
        "auction_mode": false,
        "fx_stablecoin": false,
    }))
}

async fn products(State(g): State<AppState>) -> CbResult<Json<Vec<Value>>> {
    g.caught_up().await?;
    let m = g.read.model();
    let n = m.engine.trading().markets().len();
    Ok(Json(
        (0..n)
            .filter_map(|i| product_json(&m, MarketId(i as u32)))
            .collect(),
    ))
}

async fn product(State(g): State<AppState>, Path(id): Path<String>) -> CbResult<Json<Value>> {
    g.caught_up().await?;
    let m = g.read.model();
    let r = product_ref(&m, &id, CbError::no_product_path)?;
    product_json(&m, r.id)
        .map(Json)
        .ok_or_else(CbError::no_product_path)
}

/// `[price, size, num_orders]` levels; level 1 is the best of each side, level 2 aggregated
/// depth. Level 3 (every order) is not offered.
async fn book(
    State(g): State<AppState>,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> CbResult<Json<Value>> {
    let q = Params::of(&uri)?;
    q.only(&["level"])?;
    let depth = match q.one("level")? {
        None | Some("1") => 1,
        Some("2") => BOOK_DEPTH_MAX,
        Some("3") => return Err(CbError::bad("level 3 is not supported; use level 1 or 2")),
        Some(_) => return Err(CbError::bad("level must be 1 or 2")),
    };
    g.caught_up().await?;
    let m = g.read.model();
    let r = product_ref(&m, &id, CbError::no_product_path)?;
    let symbol = symbol_of(&m, r.id);
    let b = book_snapshot(&m, &r, &symbol, depth);
    let side = |levels: Vec<[String; 3]>| -> Vec<Value> {
        levels
            .into_iter()
            .map(|[p, s, n]| json!([p, s, n.parse::<u64>().unwrap_or(0)]))
            .collect()
    };
    Ok(Json(json!({
        "bids": side(b.bids),
        "asks": side(b.asks),
        "sequence": b.sequence,
        "auction_mode": false,
        "time": rfc3339(m.engine.last_timestamp_ns()),
    })))
}

async fn ticker(State(g): State<AppState>, Path(id): Path<String>) -> CbResult<Json<Value>> {
    g.caught_up().await?;
    let m = g.read.model();
    let r = product_ref(&m, &id, CbError::no_product_path)?;
    let symbol = symbol_of(&m, r.id);
    let t = ticker_of(&m, &r, &symbol);
    let mut o = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            o.insert(k.into(), Value::String(v));
        }
    };
    put("ask", t.best_ask);
    put("bid", t.best_bid);
    put("volume", Some(t.volume_24h));
    put("open", t.open_24h);
    put("high", t.high_24h);
    put("low", t.low_24h);
    if let Some(last) = m.engine.trading().recent_trades(r.id, 1).first() {
        o.insert("trade_id".into(), json!(last.id));
        o.insert("price".into(), Value::String(r.scale.price(last.price)));
        o.insert("size".into(), Value::String(r.scale.size(last.qty)));
    }
    o.insert("time".into(), Value::String(t.time));
    Ok(Json(Value::Object(o)))
}

/// 24-hour statistics.
async fn stats(State(g): State<AppState>, Path(id): Path<String>) -> CbResult<Json<Value>> {
    g.caught_up().await?;
    let m = g.read.model();
    let r = product_ref(&m, &id, CbError::no_product_path)?;
    let symbol = symbol_of(&m, r.id);
    Ok(Json(stats_json(&m, &r, &symbol)))
}

/// `open`, `high`, `low`, `last` (those that exist) and `volume` of the last 24 hours.
fn stats_json(m: &ReadModel, r: &MarketRef, symbol: &str) -> Value {
    let t = ticker_of(m, r, symbol);
    let mut o = Map::new();
    for (k, v) in [
        ("open", t.open_24h),
        ("high", t.high_24h),
        ("low", t.low_24h),
        ("last", t.last),
    ] {
        if let Some(v) = v {
            o.insert(k.into(), Value::String(v));
        }
    }
    o.insert("volume".into(), Value::String(t.volume_24h));
    Value::Object(o)
}

/// Recent trades, newest first; `side` is the maker's (Coinbase's convention). `after` and
/// `before` page by trade id (older than / newer than).
async fn trades(
    State(g): State<AppState>,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> CbResult<Json<Vec<Value>>> {
    let q = Params::of(&uri)?;
    q.only(&["limit", "before", "after"])?;
    let n = q.limit(100, LIST_LIMIT_MAX)?;
    let cursor = |k: &str| -> CbResult<Option<u64>> {
        q.one(k)?
            .map(|t| {
                t.parse::<u64>()
                    .map_err(|_| CbError::bad(format!("{k} must be a trade id")))
            })
            .transpose()
    };
    let (before, after) = (cursor("before")?, cursor("after")?);
    g.caught_up().await?;
    let m = g.read.model();
    let r = product_ref(&m, &id, CbError::no_product_path)?;
    Ok(Json(
        m.engine
            .trading()
            .recent_trades(r.id, usize::MAX)
            .iter()
            .filter(|t| after.is_none_or(|a| t.id < a) && before.is_none_or(|b| t.id > b))
            .take(n)
            .map(|t| {
                json!({
                    "time": rfc3339(t.timestamp_ns),
                    "trade_id": t.id,
                    "price": r.scale.price(t.price),
                    "size": r.scale.size(t.qty),
                    "side": side_name(t.maker_side),
                })
            })
            .collect(),
    ))
}

/// At most this many candles per response, as Coinbase.
const CANDLES_MAX: u64 = 300;

/// `[time, low, high, open, close, volume]`, newest first; time is the bucket start in Unix
/// seconds and the rest are JSON numbers, as Coinbase sends them.
async fn candles(
    State(g): State<AppState>,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> CbResult<Response> {
    let q = Params::of(&uri)?;
    q.only(&["granularity", "start", "end"])?;
    let gran = match q.one("granularity")? {
        None => 60,
        Some(t) => match t.parse::<u64>() {
            Ok(s) if CANDLE_GRANULARITIES_S.contains(&s) => s,
            _ => {
                return Err(CbError::bad(format!(
                    "Unsupported granularity: must be one of {CANDLE_GRANULARITIES_S:?} (seconds)"
                )))
            }
        },
    };
    let start = q.one("start")?.map(|t| parse_time_s("start", t)).transpose()?;
    let end = q.one("end")?.map(|t| parse_time_s("end", t)).transpose()?;
    let span = gran * (CANDLES_MAX - 1);
    let (from, to) = match (start, end) {
        (None, None) => (0, u64::MAX),
        (Some(s), None) => (s, s.saturating_add(span)),
        (None, Some(e)) => (e.saturating_sub(span), e),
        (Some(s), Some(e)) if e < s => return Err(CbError::bad("end must not be before start")),
        (Some(s), Some(e)) if (e - s) / gran >= CANDLES_MAX => return Err(CbError::bad(
            "granularity too small for the requested time range. Count of aggregations requested exceeds 300",
        )),
        (Some(s), Some(e)) => (s, e),
    };
    g.caught_up().await?;
    let m = g.read.model();
    let r = product_ref(&m, &id, CbError::no_product_path)?;
    let rows: Vec<String> = candle_list(&m, &r, gran, from, to, CANDLES_MAX as usize)
        .iter()
        .rev()
        .map(|c| {
            format!(
                "[{},{},{},{},{},{}]",
                c.start,
                trim_decimal(&c.low),
                trim_decimal(&c.high),
                trim_decimal(&c.open),
                trim_decimal(&c.close),
                trim_decimal(&c.volume)
            )
        })
        .collect();
    Ok(raw_json(format!("[{}]", rows.join(","))))
}

// ---------------------------------------------------------------------------------------------
// Accounts.

fn account_json(m: &ReadModel, user: UserId, b: &crate::view::Balance) -> Value {
    json!({
        "id": account_id(user, b.asset),
        "currency": b.code,
        "balance": fmt_amount(b.total, b.decimals),
        "hold": fmt_amount(b.hold, b.decimals),
        "available": fmt_amount(b.available, b.decimals),
        "profile_id": "default",
        "trading_enabled": m.engine.asset(b.asset).is_some_and(|a| a.switches.trading),
    })
}

async fn accounts(State(g): State<AppState>, s: Signed) -> CbResult<Json<Vec<Value>>> {
    let user = s.require(Need::View)?;
    g.caught_up().await?;
    let m = g.read.model();
    Ok(Json(
        balances_of(&m, user)
            .iter()
            .map(|b| account_json(&m, user, b))
            .collect(),
    ))
}

async fn account(State(g): State<AppState>, Path(id): Path<String>, s: Signed) -> CbResult<Json<Value>> {
    let user = s.require(Need::View)?;
    g.caught_up().await?;
    let m = g.read.model();
    let asset = own_account(&m, user, &id)?;
    let b = balances_of(&m, user)
        .into_iter()
        .find(|b| b.asset == asset)
        .ok_or_else(CbError::not_found)?;
    Ok(Json(account_json(&m, user, &b)))
}

/// Coinbase "wallets" of the caller: one per asset, with the same ids as `/accounts`.
async fn coinbase_accounts(State(g): State<AppState>, s: Signed) -> CbResult<Json<Vec<Value>>> {
    let user = s.require(Need::View)?;
    g.caught_up().await?;
    let m = g.read.model();
    Ok(Json(
        balances_of(&m, user)
            .iter()
            .map(|b| {
                let fiat = FIAT.contains(&b.code.as_str());
                json!({
                    "id": account_id(user, b.asset),
                    "name": format!("{} Wallet", b.code),
                    "balance": fmt_amount(b.total, b.decimals),
                    "hold_balance": fmt_amount(b.hold, b.decimals),
                    "currency": b.code,
                    "type": if fiat { "fiat" } else { "wallet" },
                    "primary": false,
                    "active": true,
                    "available_on_consumer": false,
                })
            })
            .collect(),
    ))
}

/// A new deposit address for the asset of one of the caller's accounts.
async fn create_address(
    State(g): State<AppState>,
    Path(id): Path<String>,
    s: Signed,
) -> CbResult<Json<Value>> {
    let user = s.require(Need::View)?;
    Body::parse(&s.body, false)?.only(&[])?;
    let code = {
        let m = g.read.model();
        let asset = own_account(&m, user, &id)?;
        asset_code(&m, asset)
    };
    let address = new_deposit_address(&g, user, &code).await?;
    let created = {
        let m = g.read.model();
        let asset = own_account(&m, user, &id)?;
        m.engine
            .wallet()
            .deposit_addresses(user, asset)
            .iter()
            .find(|d| d.address == address)
            .map_or(0, |d| d.created_ns)
    };
    Ok(Json(json!({
        "address": address,
        "address_info": { "address": address },
        "name": format!("{code} deposit address"),
        "network": code.to_ascii_lowercase(),
        "created_at": rfc3339(created),
        "updated_at": rfc3339(created),
        "resource": "address",
        "exchange_deposit_address": true,
        "warnings": [],
    })))
}

// ---------------------------------------------------------------------------------------------
// Orders.

const ORDER_FIELDS: [&str; 14] = [
    "type",
    "side",
    "product_id",
    "price",
    "size",
    "funds",
    "time_in_force",
    "post_only",
    "client_oid",
    "stp",
    "profile_id",
    "stop",
    "stop_price",
    "cancel_after",
];

fn stp_code(s: Stp) -> &'static str {
    match s {
        Stp::CancelNewest => "cn",
        Stp::CancelOldest => "co",
        Stp::CancelBoth => "cb",
    }
}

/// An order as Coinbase shows it.
fn order_json(m: &ReadModel, o: &Order) -> Value {
    let mut v = Map::new();
    let Some(r) = market_ref_by_id(m, o.market) else {
        return json!({ "id": o.id.0.to_string() });
    };
    let mut put = |k: &str, x: Value| {
        v.insert(k.into(), x);
    };
    put("id", json!(o.id.0.to_string()));
    put("product_id", json!(symbol_of(m, o.market)));
    put("side", json!(side_name(o.side)));
    match o.order_type {
        OrderType::Limit { tif, .. } => {
            put("type", json!("limit"));
            put("price", json!(r.scale.price(o.limit)));
            put("size", json!(r.scale.size(o.qty)));
            let name = match tif {
                TimeInForce::Gtc if o.expires_ns.is_some() => "GTT",
                TimeInForce::Gtc | TimeInForce::PostOnly => "GTC",
                TimeInForce::Ioc => "IOC",
                TimeInForce::Fok => "FOK",
            };
            put("time_in_force", json!(name));
            put("post_only", json!(tif == TimeInForce::PostOnly));
        }
        OrderType::Market { funds } => {
            put("type", json!("market"));
            match funds {
                Some(f) => {
                    put("funds", json!(r.scale.quote(f.0)));
                    put("specified_funds", json!(r.scale.quote(f.0)));
                }
                None => put("size", json!(r.scale.size(o.qty))),
            }
            put("post_only", json!(false));
        }
    }
    put("stp", json!(stp_code(o.stp)));
    if let Some(stop) = o.stop {
        put("stop", json!(crate::view::stop_name(stop.direction)));
        put("stop_price", json!(r.scale.price(stop.price)));
    }
    if let Some(t) = o.expires_ns {
        put("expire_time", json!(rfc3339(t)));
    }
    put("created_at", json!(rfc3339(o.created_ns)));
    put("fill_fees", json!(r.scale.quote(o.fees)));
    put("filled_size", json!(r.scale.size(o.filled)));
    put("executed_value", json!(r.scale.quote(o.filled_notional)));
    let done_reason = match o.status {
        OrderStatus::Pending | OrderStatus::Open => None,
        OrderStatus::Filled => Some("filled"),
        // A market order ends when its size or funds are used up or the book (within the band)
        // is: Coinbase reports those as filled.
        OrderStatus::Cancelled(CancelReason::Unfilled)
            if matches!(o.order_type, OrderType::Market { .. }) && o.filled.0 > 0 =>
        {
            Some("filled")
        }
        OrderStatus::Cancelled(_) => Some("canceled"),
    };
    match done_reason {
        // An untriggered stop order: Coinbase's `active`.
        None if o.status == OrderStatus::Pending => {
            put("status", json!("active"));
            put("settled", json!(false));
        }
        None => {
            put("status", json!("open"));
            put("settled", json!(false));
        }
        Some(reason) => {
            put("status", json!("done"));
            put("done_reason", json!(reason));
            put("done_at", json!(rfc3339(o.updated_ns)));
            put("settled", json!(true));
        }
    }
    if let Some(c) = o.client_id {
        put("client_oid", json!(fmt_uuid(c.0)));
    }
    Value::Object(v)
}

/// Refines an order reject with the market's numbers, in the words ccxt maps.
fn order_error(
    e: ApiError,
    m: &ReadModel,
    r: &MarketRef,
    side: &str,
    price: Option<&str>,
    by_funds: bool,
) -> CbError {
    let Some(mk) = m.engine.trading().market(r.id) else {
        return e.into();
    };
    let spec = &mk.meta.spec;
    let quote = asset_code(m, spec.quote);
    let bad = |msg: String| CbError::new(StatusCode::BAD_REQUEST, e.code, msg);
    match reject_of(e.code) {
        Some(Reject::PriceOffTick) => bad(format!(
            "price too precise. Tick size is {}",
            r.scale.quote(spec.tick.0)
        )),
        Some(Reject::QtyBelowMin | Reject::QtyZero) => bad(format!(
            "size is too small. Minimum size is {}",
            r.scale.base(spec.qty_min.0)
        )),
        Some(Reject::QtyOffStep) => bad(format!(
            "size is too precise. Size increment is {}",
            r.scale.base(spec.lot.0)
        )),
        Some(Reject::QtyAboveMax) => bad(format!(
            "size is too large. Maximum size is {}",
            r.scale.base(spec.qty_max.0)
        )),
        Some(Reject::NotionalBelowMin) if by_funds => bad(format!(
            "funds is too small. Minimum funds is {} {quote}",
            r.scale.quote(spec.notional_min.0)
        )),
        Some(Reject::NotionalBelowMin) => bad(format!(
            "size is too small: the order is worth less than the minimum funds of {} {quote}",
            r.scale.quote(spec.notional_min.0)
        )),
        Some(Reject::NotionalAboveMax) => bad(format!(
            "the order is worth more than the maximum funds of {} {quote}",
            r.scale.quote(spec.notional_max.0)
        )),
        Some(Reject::PriceOutsideBand) => {
            let side = if side == "buy" { Side::Buy } else { Side::Sell };
            let ticks = price
                .and_then(|p| crate::wire::parse_amount("price", p, r.scale.quote_decimals).ok())
                .map(|p| p.0 / r.scale.tick);
            let opposite = match side {
                Side::Buy => mk.book.best_ask(),
                Side::Sell => mk.book.best_bid(),
            };
            let crosses = ticks.is_some_and(|t| {
                kinko_core::trading::crosses(side, Price(u64::try_from(t).unwrap_or(u64::MAX)), opposite)
            });
            let (band_low, band_high) = mk.meta.band();
            let (lowest, _) = mk.meta.limit_range(side, crosses);
            let below = ticks.is_some_and(|t| t < u128::from(lowest.0));
            let band = format!(
                "±{}.{:02}% of the reference price, from {} to {} {quote}",
                spec.band_bps / 100,
                spec.band_bps % 100,
                r.scale.price(band_low),
                r.scale.price(band_high)
            );
            let passive = |p: Price| r.scale.price(p);
            let rule = match (side, mk.meta.passive.is_some()) {
                (Side::Buy, true) => format!(
                    "a buy may be priced up to {} {quote}; one that would trade at once from {}, one that rests from {} {quote} (band: {band})",
                    r.scale.price(band_high),
                    r.scale.price(band_low),
                    passive(mk.meta.limit_range(side, false).0)
                ),
                (Side::Sell, true) => format!(
                    "a sell may be priced down to {} {quote}; one that would trade at once up to {}, one that rests up to {} {quote} (band: {band})",
                    r.scale.price(band_low),
                    r.scale.price(band_high),
                    passive(mk.meta.limit_range(side, false).1)
                ),
                (_, false) => format!("prices must be within {band}"),
            };
            if below {
                bad(format!("price too small: {rule}"))
            } else {
                bad(format!("price is outside the allowed band: {rule}"))
            }
        }
        _ => e.into(),
    }
}

async fn place_order(State(g): State<AppState>, s: Signed) -> CbResult<Json<Value>> {
    let user = s.require(Need::Trade)?;
    let b = Body::parse(&s.body, true)?;
    b.only(&ORDER_FIELDS)?;
    let stop = b.string("stop")?;
    let stop_price = b.decimal("stop_price")?;
    if stop.is_some() && stop_price.is_none() {
        return Err(CbError::bad("stop needs a stop_price"));
    }
    if let Some(d) = stop.as_deref() {
        if d != "loss" && d != "entry" {
            return Err(CbError::bad("stop must be loss or entry"));
        }
    }
    let cancel_after = b.string("cancel_after")?;
    let order_type = b.string("type")?.unwrap_or_else(|| "limit".into());
    let side = b
        .string("side")?
        .ok_or_else(|| CbError::bad("side is required (buy or sell)"))?;
    if side != "buy" && side != "sell" {
        return Err(CbError::bad("side must be buy or sell"));
    }
    let product = b
        .string("product_id")?
        .ok_or_else(|| CbError::bad("product_id is required"))?
        .to_ascii_uppercase();
    let price = b.decimal("price")?;
    let size = b.decimal("size")?;
    let funds = b.decimal("funds")?;
    let post_only = b.boolean("post_only")?.unwrap_or(false);
    let client = b
        .string("client_oid")?
        .map(|c| parse_uuid("client_oid", &c).map_err(|_| CbError::bad("client_oid must be a UUID")))
        .transpose()?;
    let stp = parse_stp(b.string("stp")?.as_deref())?;
    let tif_in = b.string("time_in_force")?;
    let tif = match order_type.as_str() {
        "limit" => match (tif_in.as_deref().unwrap_or("GTC"), post_only) {
            ("GTC", false) => "gtc",
            ("GTC", true) => "post_only",
            ("IOC", false) => "ioc",
            ("FOK", false) => "fok",
            ("GTT", false) => "gtt",
            ("IOC" | "FOK" | "GTT", true) => {
                return Err(CbError::bad("post_only is only valid with time_in_force GTC"))
            }
            _ => return Err(CbError::bad("time_in_force must be GTC, GTT, IOC or FOK")),
        },
        "market" => {
            if post_only {
                return Err(CbError::bad("post_only is only valid for limit orders"));
            }
            match tif_in.as_deref() {
                None | Some("IOC") => "ioc",
                Some(_) => {
                    return Err(CbError::bad(
                        "a market order takes no time_in_force other than IOC",
                    ))
                }
            }
        }
        "stop" => {
            return Err(CbError::bad(
                "type stop is not supported: send type limit or market with stop and stop_price",
            ))
        }
        _ => return Err(CbError::bad("type must be limit or market")),
    };
    if tif == "gtt" && cancel_after.is_none() {
        return Err(CbError::bad(
            "time_in_force GTT needs cancel_after (min, hour or day)",
        ));
    }
    if tif != "gtt" && cancel_after.is_some() {
        return Err(CbError::bad("cancel_after requires time_in_force to be GTT"));
    }
    let r = {
        let m = g.read.model();
        let r = market_ref(&m, &product).map_err(|_| CbError::no_product())?;
        for p in price.iter().chain(stop_price.iter()) {
            if too_precise(p, r.scale.quote_decimals) {
                return Err(CbError::bad(format!(
                    "price too precise. Tick size is {}",
                    r.scale.quote(r.scale.tick)
                )));
            }
        }
        r
    };
    let req = OrderRequest {
        market: &product,
        side: &side,
        order_type: &order_type,
        price: price.as_deref(),
        size: size.as_deref(),
        funds: funds.as_deref(),
        tif,
        client_order_id: client,
        stp,
        stop: stop.as_deref(),
        stop_price: stop_price.as_deref(),
        expire_time: None,
        cancel_after: cancel_after.as_deref(),
    };
    let placed = submit_order(&g, user, &req).await;
    let m = g.read.model();
    match placed {
        Ok(o) => Ok(Json(order_json(&m, &o))),
        Err(e) => Err(order_error(e, &m, &r, &side, price.as_deref(), funds.is_some())),
    }
}

/// `123` or `client:<uuid>`.
fn parse_order_ref(text: &str) -> CbResult<OrderRef> {
    if let Some(c) = text.strip_prefix("client:") {
        return parse_uuid("client_oid", c)
            .map(|c| OrderRef::Client(ClientOrderId(c)))
            .map_err(|_| CbError::bad_order_id());
    }
    text.parse::<u64>()
        .map(|i| OrderRef::Id(OrderId(i)))
        .map_err(|_| CbError::bad_order_id())
}

/// One of the caller's orders; anyone else's is not found.
fn own_order(m: &ReadModel, user: UserId, r: OrderRef) -> CbResult<Order> {
    find_order(m, user, r).map_err(|_| CbError::not_found())
}

async fn get_order(State(g): State<AppState>, Path(id): Path<String>, s: Signed) -> CbResult<Json<Value>> {
    let user = s.require(Need::View)?;
    let r = parse_order_ref(&id)?;
    g.caught_up().await?;
    let m = g.read.model();
    let o = own_order(&m, user, r)?;
    Ok(Json(order_json(&m, &o)))
}

#[derive(Clone, Copy)]
struct StatusFilter {
    open: bool,
    done: bool,
}

fn status_filter(values: &[&str]) -> CbResult<StatusFilter> {
    let mut f = StatusFilter {
        open: values.is_empty(),
        done: false,
    };
    for v in values {
        match *v {
            "open" | "pending" | "active" => f.open = true,
            "done" => f.done = true,
            "all" => {
                f.open = true;
                f.done = true;
            }
            // Coinbase states kinko orders never are in.
            "received" | "rejected" => {}
            other => {
                return Err(CbError::bad(format!(
                    "invalid status {other:?}: use open, pending, active, done or all"
                )))
            }
        }
    }
    Ok(f)
}

/// The caller's orders, newest first: without `status` the open ones only. Paged by
/// `before` / `after` (cursors of creation time and order id).
async fn list_orders(State(g): State<AppState>, s: Signed) -> CbResult<Paged> {
    let user = s.require(Need::View)?;
    let q = s.query()?;
    q.only(&[
        "status",
        "product_id",
        "limit",
        "start_date",
        "end_date",
        "profile_id",
        "before",
        "after",
        "sortedBy",
        "sorting",
    ])?;
    let f = status_filter(&q.all("status"))?;
    let page = Page::of(&q)?;
    if q.one("sortedBy")?.is_some_and(|x| x != "created_at") || q.one("sorting")?.is_some_and(|x| x != "desc")
    {
        return Err(CbError::bad("orders are sorted by created_at, desc only"));
    }
    let from = q.time_ns("start_date")?.unwrap_or(0);
    let to = q.time_ns("end_date")?.unwrap_or(u64::MAX);
    let product = q.one("product_id")?.map(str::to_owned);
    g.caught_up().await?;
    let m = g.read.model();
    let market = product
        .map(|p| market_ref(&m, &p.to_ascii_uppercase()).map_err(|_| CbError::no_product()))
        .transpose()?
        .map(|r| r.id);
    let t = m.engine.trading();
    let mut v: Vec<Order> = Vec::new();
    if f.open {
        v.extend(t.open_orders(user));
    }
    if f.done {
        v.extend(t.done_orders(user, usize::MAX));
    }
    v.retain(|o| market.is_none_or(|x| o.market == x) && o.created_ns >= from && o.created_ns <= to);
    let keyed = v.into_iter().map(|o| ([o.created_ns, o.id.0, 0], o)).collect();
    Ok(Paged::new(page.apply(keyed), |o| order_json(&m, o)))
}

/// Cancels one open order. The body may name the product (ccxt sends its symbol, `BTC/USD`):
/// it must then be the order's.
async fn cancel_order(
    State(g): State<AppState>,
    Path(id): Path<String>,
    s: Signed,
) -> CbResult<Json<String>> {
    let user = s.require(Need::Trade)?;
    let b = Body::parse(&s.body, false)?;
    b.only(&["product_id", "profile_id"])?;
    let q = s.query()?;
    q.only(&["product_id", "profile_id"])?;
    let product = match b.string("product_id")? {
        Some(p) => Some(p.replace('/', "-").to_ascii_uppercase()),
        None => q.one("product_id")?.map(str::to_ascii_uppercase),
    };
    let r = parse_order_ref(&id)?;
    g.caught_up().await?;
    let o = {
        let m = g.read.model();
        let o = own_order(&m, user, r)?;
        if let Some(p) = &product {
            let want = market_ref(&m, p).map_err(|_| CbError::no_product())?;
            if want.id != o.market {
                return Err(CbError::not_found());
            }
        }
        o
    };
    if !matches!(o.status, OrderStatus::Open | OrderStatus::Pending) {
        return Err(CbError::bad("Order already done"));
    }
    match crate::usecase::cancel(&g, user, OrderRef::Id(o.id)).await {
        Ok(c) => Ok(Json(c.id.0.to_string())),
        // Filled or cancelled between the look-up and the cancel.
        Err(e) if e.code == Reject::OrderNotFound.code() => Err(CbError::bad("Order already done")),
        Err(e) => Err(e.into()),
    }
}

/// Cancels every open order of the caller, on one product or all; the ids cancelled.
async fn cancel_all(State(g): State<AppState>, s: Signed) -> CbResult<Json<Vec<String>>> {
    let user = s.require(Need::Trade)?;
    let q = s.query()?;
    q.only(&["product_id", "profile_id"])?;
    let b = Body::parse(&s.body, false)?;
    b.only(&["product_id", "profile_id"])?;
    let product = match b.string("product_id")? {
        Some(p) => Some(p.replace('/', "-")),
        None => q.one("product_id")?.map(str::to_owned),
    };
    let market = {
        let m = g.read.model();
        product
            .map(|p| market_ref(&m, &p.to_ascii_uppercase()).map_err(|_| CbError::no_product()))
            .transpose()?
            .map(|r| r.id)
    };
    match g.submit(Command::CancelAll { user, market }).await?.reply? {
        Reply::OrdersCancelled(ids) => Ok(Json(ids.iter().map(|i| i.0.to_string()).collect())),
        other => Err(crate::error::unexpected(&other).into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Fills.

fn fill_json(m: &ReadModel, f: &Fill) -> Value {
    let Some(r) = market_ref_by_id(m, f.market) else {
        return json!({ "trade_id": f.trade_id, "order_id": f.order.0.to_string() });
    };
    let quote = asset_code(m, r.quote).to_ascii_lowercase();
    let mut v = Map::new();
    v.insert("created_at".into(), json!(rfc3339(f.timestamp_ns)));
    v.insert("trade_id".into(), json!(f.trade_id));
    v.insert("product_id".into(), json!(symbol_of(m, f.market)));
    v.insert("order_id".into(), json!(f.order.0.to_string()));
    v.insert(
        "liquidity".into(),
        json!(match f.liquidity {
            Liquidity::Maker => "M",
            Liquidity::Taker => "T",
        }),
    );
    v.insert("price".into(), json!(r.scale.price(f.price)));
    v.insert("size".into(), json!(r.scale.size(f.qty)));
    v.insert("fee".into(), json!(r.scale.quote(f.fee)));
    v.insert("side".into(), json!(side_name(f.side)));
    v.insert("settled".into(), json!(true));
    // ccxt reads the cost from `<quote>_value`; exact, unlike price × size in floating point.
    v.insert(format!("{quote}_value"), json!(r.scale.quote(f.notional)));
    Value::Object(v)
}

/// The caller's fills, newest first, of one order or one product. Paged by `before` /
/// `after` (cursors of time, product and trade id).
async fn fills(State(g): State<AppState>, s: Signed) -> CbResult<Paged> {
    let user = s.require(Need::View)?;
    let q = s.query()?;
    q.only(&[
        "order_id",
        "product_id",
        "limit",
        "start_date",
        "end_date",
        "profile_id",
        "before",
        "after",
    ])?;
    let page = Page::of(&q)?;
    let from = q.time_ns("start_date")?.unwrap_or(0);
    let to = q.time_ns("end_date")?.unwrap_or(u64::MAX);
    let order = q
        .one("order_id")?
        .map(|t| t.parse::<u64>().map(OrderId).map_err(|_| CbError::bad_order_id()))
        .transpose()?;
    let product = q.one("product_id")?.map(str::to_ascii_uppercase);
    if order.is_none() && product.is_none() {
        return Err(CbError::bad("order_id or product_id is required"));
    }
    g.caught_up().await?;
    let m = g.read.model();
    let market = product
        .map(|p| market_ref(&m, &p).map_err(|_| CbError::no_product()))
        .transpose()?
        .map(|r| r.id);
    let keyed = m
        .fills(user, market, order, usize::MAX)
        .into_iter()
        .filter(|f| f.timestamp_ns >= from && f.timestamp_ns <= to)
        .map(|f| {
            let maker = u64::from(f.liquidity == Liquidity::Maker);
            (
                [f.timestamp_ns, (u64::from(f.market.0) << 1) | maker, f.trade_id],
                f,
            )
        })
        .collect();
    Ok(Paged::new(page.apply(keyed), |f| fill_json(&m, f)))
}

// ---------------------------------------------------------------------------------------------
// Transfers: deposits and withdrawals.

fn deposit_json(m: &ReadModel, d: &Deposit) -> Value {
    let dec = m.engine.asset(d.asset).map_or(0, |a| a.decimals);
    let code = asset_code(m, d.asset);
    let done = (d.status == DepositStatus::Credited).then(|| rfc3339(d.updated_ns));
    let dropped = (d.status == DepositStatus::Dropped).then(|| rfc3339(d.updated_ns));
    json!({
        "id": transfer_id(TransferRef::Deposit(d.id.0)),
        "type": "deposit",
        "created_at": rfc3339(d.seen_ns),
        "completed_at": done,
        "processed_at": done,
        "canceled_at": dropped,
        "account_id": account_id(d.user, d.asset),
        "amount": fmt_amount(d.amount.0, dec),
        "currency": code,
        "details": {
            "crypto_address": d.address,
            "crypto_transaction_hash": d.txid,
            "vout": d.vout,
            "network": code.to_ascii_lowercase(),
        },
    })
}

/// A withdrawal as a Coinbase transfer. Coinbase's `amount` is what leaves the account, fee
/// included (ccxt subtracts `details.fee` to show what arrives); kinko's request amount arrives
/// and the fee is charged on top, so `amount` here is the request amount plus the fee.
fn withdrawal_json(m: &ReadModel, health: &Health, w: &Withdrawal) -> Value {
    let dec = m.engine.asset(w.asset).map_or(0, |a| a.decimals);
    let code = asset_code(m, w.asset);
    let at = rfc3339(w.updated_ns);
    let (completed, processed, canceled) = match w.status {
        WithdrawalStatus::Requested
        | WithdrawalStatus::Waiting
        | WithdrawalStatus::Review
        | WithdrawalStatus::Approved
        | WithdrawalStatus::Signing
        | WithdrawalStatus::Signed
        | WithdrawalStatus::Broadcast => (None, None, None),
        WithdrawalStatus::Completed => (Some(at.clone()), Some(at), None),
        WithdrawalStatus::Cancelled => (None, None, Some(at)),
        // processed without completed: ccxt's "failed".
        WithdrawalStatus::Failed | WithdrawalStatus::Reverted => (None, Some(at), None),
    };
    let mut details = json!({
        "sent_to_address": w.address,
        "crypto_address": w.address,
        "fee": fmt_amount(w.fee.0, dec),
        "subtotal": fmt_amount(w.amount.0, dec),
        "network": code.to_ascii_lowercase(),
        "status": w.status.name(),
    });
    if let Some(tx) = &w.txid {
        details["crypto_transaction_hash"] = json!(tx);
    }
    if let Some(reason) = &w.reason {
        details["reason"] = json!(reason);
    }
    if let Some(waiting) = crate::view::waiting_reason(m, health, w, crate::view::now_ns()) {
        details["waiting_reason"] = json!(waiting);
    }
    json!({
        "id": transfer_id(TransferRef::Withdrawal(w.id.0)),
        "type": "withdraw",
        "created_at": rfc3339(w.requested_ns),
        "completed_at": completed,
        "processed_at": processed,
        "canceled_at": canceled,
        "account_id": account_id(w.user, w.asset),
        "amount": fmt_amount(w.amount.0.saturating_add(w.fee.0), dec),
        "currency": code,
        "details": details,
    })
}

#[derive(Clone, Copy)]
struct Kinds {
    deposits: bool,
    withdrawals: bool,
}

/// Deposits and withdrawals, newest first, paged by `before` / `after` (cursors of time, kind
/// and id).
fn transfer_list(
    m: &ReadModel,
    health: &Health,
    user: UserId,
    asset: Option<AssetId>,
    k: Kinds,
    page: &Page,
) -> Paged {
    let w = m.engine.wallet();
    let mut v: Vec<(history::Cursor, TransferRef)> = Vec::new();
    if k.deposits {
        v.extend(
            w.deposits()
                .iter()
                .filter(|d| d.user == user && asset.is_none_or(|a| a == d.asset))
                .map(|d| ([d.seen_ns, 0, d.id.0], TransferRef::Deposit(d.id.0))),
        );
    }
    if k.withdrawals {
        v.extend(
            w.withdrawals()
                .iter()
                .filter(|x| x.user == user && asset.is_none_or(|a| a == x.asset))
                .map(|x| ([x.requested_ns, 1, x.id.0], TransferRef::Withdrawal(x.id.0))),
        );
    }
    Paged::new(page.apply(v), |t| match *t {
        TransferRef::Deposit(i) => w
            .deposits()
            .iter()
            .find(|d| d.id.0 == i)
            .map_or(Value::Null, |d| deposit_json(m, d)),
        TransferRef::Withdrawal(i) => w
            .withdrawal(WithdrawalId(i))
            .map_or(Value::Null, |x| withdrawal_json(m, health, x)),
    })
}

fn transfer_query(s: &Signed) -> CbResult<(Kinds, Page)> {
    let q = s.query()?;
    q.only(&["type", "limit", "profile_id", "currency", "before", "after"])?;
    let k = match q.one("type")? {
        None => Kinds {
            deposits: true,
            withdrawals: true,
        },
        Some("deposit") => Kinds {
            deposits: true,
            withdrawals: false,
        },
        Some("withdraw") => Kinds {
            deposits: false,
            withdrawals: true,
        },
        // Transfers between Coinbase profiles: kinko has none.
        Some("internal_deposit" | "internal_withdraw") => Kinds {
            deposits: false,
            withdrawals: false,
        },
        Some(other) => {
            return Err(CbError::bad(format!(
                "invalid type {other:?}: use deposit or withdraw"
            )))
        }
    };
    Ok((k, Page::of(&q)?))
}

/// The caller's deposits and withdrawals, newest first (`type=deposit|withdraw`).
async fn transfers(State(g): State<AppState>, s: Signed) -> CbResult<Paged> {
    let user = s.require(Need::View)?;
    let (k, page) = transfer_query(&s)?;
    let currency = s.query()?.one("currency")?.map(str::to_ascii_uppercase);
    g.caught_up().await?;
    let m = g.read.model();
    let asset = currency
        .map(|c| {
            m.engine
                .asset_by_code(&c)
                .ok_or_else(|| CbError::bad("Currency not found"))
        })
        .transpose()?;
    Ok(transfer_list(&m, &g.health, user, asset, k, &page))
}

/// The deposits and withdrawals of one of the caller's accounts.
async fn account_transfers(State(g): State<AppState>, Path(id): Path<String>, s: Signed) -> CbResult<Paged> {
    let user = s.require(Need::View)?;
    let (k, page) = transfer_query(&s)?;
    g.caught_up().await?;
    let m = g.read.model();
    let asset = own_account(&m, user, &id)?;
    Ok(transfer_list(&m, &g.health, user, Some(asset), k, &page))
}

/// One deposit or withdrawal of the caller (`/transfers/{id}`, `/withdrawals/{id}`).
async fn transfer(State(g): State<AppState>, Path(id): Path<String>, s: Signed) -> CbResult<Json<Value>> {
    let user = s.require(Need::View)?;
    let t = parse_transfer_id(&id).ok_or_else(CbError::not_found)?;
    g.caught_up().await?;
    let m = g.read.model();
    let w = m.engine.wallet();
    match t {
        TransferRef::Deposit(i) => w
            .deposits()
            .iter()
            .find(|d| d.id.0 == i && d.user == user)
            .map(|d| Json(deposit_json(&m, d))),
        TransferRef::Withdrawal(i) => w
            .withdrawal(WithdrawalId(i))
            .filter(|x| x.user == user)
            .map(|x| Json(withdrawal_json(&m, &g.health, x))),
    }
    .ok_or_else(CbError::not_found)
}

/// A withdrawal to a crypto address. The address must be one of the caller's whitelisted
/// withdrawal addresses of that asset, past its cooling period: nothing else can be withdrawn
/// to. `amount` may be a JSON number (read exactly from its text) or a string; more decimals
/// than the asset has are refused, never rounded.
async fn withdraw_crypto(State(g): State<AppState>, s: Signed) -> CbResult<Json<Value>> {
    let user = s.require(Need::Withdraw)?;
    let b = Body::parse(&s.body, true)?;
    b.only(&[
        "amount",
        "currency",
        "crypto_address",
        "destination_tag",
        "no_destination_tag",
        "nonce",
        "profile_id",
        "two_factor_code",
    ])?;
    // kinko extension: every withdrawal needs a second factor; a TOTP code goes here.
    let step_up = b.string("two_factor_code")?.map(|code| crate::stepup::StepUpIn {
        totp: Some(code.to_owned()),
        ..Default::default()
    });
    let amount = b
        .decimal("amount")?
        .ok_or_else(|| CbError::bad("amount is required"))?;
    let code = b
        .string("currency")?
        .ok_or_else(|| CbError::bad("currency is required"))?
        .to_ascii_uppercase();
    let address = b
        .string("crypto_address")?
        .ok_or_else(|| CbError::bad("crypto_address is required"))?;
    // Whitelisted addresses are stored in their chain's canonical form; so is the one looked
    // up (one that is no address at all is simply not whitelisted).
    let address = g.chain.canonical_address(&code, &address).unwrap_or(address);
    if b.string("destination_tag")?.is_some_and(|t| !t.is_empty()) {
        return Err(CbError::bad(format!(
            "{code} withdrawals take no destination_tag"
        )));
    }
    b.boolean("no_destination_tag")?;
    let client = match b.raw("nonce") {
        None => None,
        Some(t) => Some(
            t.parse::<u64>()
                .map(|n| (NONCE_TAG << 64) | u128::from(n))
                .map_err(|_| CbError::bad("nonce must be a non-negative integer"))?,
        ),
    };
    g.caught_up().await?;
    let (address_id, cooling_until) = {
        let m = g.read.model();
        let asset = m
            .engine
            .asset_by_code(&code)
            .ok_or_else(|| CbError::bad(format!("Currency not found: {code}")))?;
        let whitelisted = m
            .engine
            .wallet()
            .withdrawal_addresses_of(user)
            .into_iter()
            .find(|a| a.asset == asset && !a.removed && a.address == address)
            .ok_or_else(|| {
                CbError::bad(format!(
                    "crypto_address is not one of your whitelisted {code} withdrawal addresses; \
                     whitelist it first (POST /api/v1/withdrawal-addresses) and withdraw once its cooling period is over"
                ))
            })?;
        (whitelisted.id, whitelisted.usable_at_ns)
    };
    let cooling = || {
        CbError::bad(format!(
            "crypto_address is whitelisted but still in its cooling period, until {}",
            rfc3339(cooling_until)
        ))
    };
    let w = match withdraw(&g, &s.principal, address_id, &amount, client, step_up.as_ref()).await {
        Ok(w) => w,
        Err(e) if e.code == Reject::WithdrawalAddressCooling.code() => return Err(cooling()),
        Err(e) => return Err(e.into()),
    };
    let m = g.read.model();
    let dec = m.engine.asset(w.asset).map_or(0, |a| a.decimals);
    let mut out = withdrawal_json(&m, &g.health, &w);
    out["fee"] = json!(fmt_amount(w.fee.0, dec));
    out["subtotal"] = json!(fmt_amount(w.amount.0, dec));
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_expand_exactly() {
        for (t, want) in [
            ("0.001", "0.001"),
            ("1e-8", "0.00000001"),
            ("1e-08", "0.00000001"),
            ("1E-8", "0.00000001"),
            ("1.5e+3", "1500"),
            ("1.5e3", "1500"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("12", "12"),
            ("0", "0"),
            ("120e-1", "12.0"),
            ("0.000123e2", "0.0123"),
            ("-2", "-2"),
            ("2.5e-1", "0.25"),
            ("100e-2", "1.00"),
        ] {
            assert_eq!(json_number_to_decimal(t).as_deref(), Ok(want), "{t}");
        }
        for bad in [
            "", "e5", "1.", ".5", "1e", "1e+", "1x", "--1", "1e99999", "1e200", "0x10",
        ] {
            assert!(json_number_to_decimal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn account_and_transfer_ids_round_trip() {
        let id = account_id(UserId(42), AssetId(3));
        assert_eq!(id.len(), 36);
        assert_eq!(parse_account_id(&id), Some((UserId(42), AssetId(3))));
        assert_eq!(parse_account_id("not-an-id"), None);
        let t = transfer_id(TransferRef::Withdrawal(7));
        assert_eq!(parse_transfer_id(&t), Some(TransferRef::Withdrawal(7)));
        assert_eq!(parse_account_id(&t), None);
        assert_eq!(parse_transfer_id(&id), None);
        let d = transfer_id(TransferRef::Deposit(7));
        assert_ne!(d, t);
        assert_eq!(parse_transfer_id(&d), Some(TransferRef::Deposit(7)));
    }

    #[test]
    fn precision_and_trimming() {
        assert!(too_precise("0.0000001", 6));
        assert!(!too_precise("0.0000010", 6));
        assert!(!too_precise("10", 0));
        assert!(too_precise("10.5", 0));
        assert_eq!(trim_decimal("30000.010000"), "30000.01");
        assert_eq!(trim_decimal("30000.000000"), "30000");
        assert_eq!(trim_decimal("300"), "300");
    }

    #[test]
    fn errors_use_the_messages_ccxt_maps() {
        let e = CbError::from(ApiError::from(Reject::FundsInsufficient));
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::BAD_REQUEST, "Insufficient funds")
        );
        let e = CbError::from(ApiError::from(Reject::OrderNotFound));
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::NOT_FOUND, "NotFound")
        );
        for r in Reject::ALL {
            let e = CbError::from(ApiError::from(*r));
            assert!(
                e.status != StatusCode::FORBIDDEN && e.status != StatusCode::CONFLICT,
                "{r:?} → {}",
                e.status
            );
        }
        let e = CbError::from(ApiError::forbidden("no"));
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    }
}
