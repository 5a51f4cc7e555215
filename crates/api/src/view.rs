//! The view layer: reading the replica for every surface. Lookups (markets, assets, orders by
//! reference) and the output shapes of the native API (`*_out` builders, book snapshots,
//! tickers, candles, balances), which the Coinbase surface and the WebSocket reuse. Nothing
//! here writes: the use cases (`usecase`) do.

use crate::error::ApiResult;
use crate::wire::{fmt_amount, fmt_uuid, rfc3339, Scale};
use kinko_core::book::{CancelReason, OrderBook, Side, TimeInForce};
use kinko_core::market::{MarketId, MarketState};
use kinko_core::risk::HOUR_NS;
use kinko_core::trading::{Order, OrderRef, OrderStatus, OrderType, StopDirection};
use kinko_core::wallet::{DepositStatus, Withdrawal, WithdrawalStatus};
use kinko_core::{AssetId, Reject, UserId};
use kinko_engine::health::Health;
use kinko_engine::replica::{Fill, Liquidity, ReadModel};
use serde::Serialize;
use utoipa::ToSchema;

pub const LIST_LIMIT_MAX: usize = 1_000;

pub const BOOK_DEPTH_MAX: usize = 1_000;

pub struct MarketRef {
    pub id: MarketId,
    pub scale: Scale,
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
        quote: spec.quote,
    })
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
        CancelReason::Expired => "expired",
        CancelReason::StopRefused(_) => "stop_refused",
    }
}

pub fn stop_name(d: StopDirection) -> &'static str {
    match d {
        StopDirection::Loss => "loss",
        StopDirection::Entry => "entry",
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
    #[schema(pattern = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$")]
    pub symbol: String,
    #[schema(pattern = r"^[A-Z0-9]{1,12}$")]
    pub base: String,
    #[schema(pattern = r"^[A-Z0-9]{1,12}$")]
    pub quote: String,
    /// Price increment (quote per whole base unit).
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub tick_size: String,
    /// Size increment (base).
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub lot_size: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub min_size: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub max_size: String,
    /// Notional limits (quote).
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub min_notional: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub max_notional: String,
    /// `open`, `post_only`, `cancel_only` or `halted`.
    #[schema(value_type = crate::schema::MarketState)]
    pub state: String,
    /// Within ± this many basis points of the reference price: an order that would trade on
    /// arrival, a market order's protection, a buy's highest and a sell's lowest price.
    pub band_bps: u32,
    /// A limit buy that would not trade on arrival may rest down to this many basis points of
    /// the reference (2,000 = 20 %); null: the band applies on both sides.
    pub passive_buy_floor_bps: Option<u32>,
    /// A limit sell that would not trade on arrival may rest up to this many basis points of
    /// the reference (50,000 = 5×); null: the band applies on both sides.
    pub passive_sell_ceiling_bps: Option<u32>,
    pub maker_fee_bps: u32,
    pub taker_fee_bps: u32,
    pub order_types: OrderTypesOut,
}

pub fn market_out(m: &ReadModel, id: MarketId) -> Option<MarketOut> {
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
        passive_buy_floor_bps: mk.meta.passive.map(|p| p.buy_floor_bps),
        passive_sell_ceiling_bps: mk.meta.passive.map(|p| p.sell_ceiling_bps),
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

#[derive(Serialize, ToSchema)]
pub struct TickerOut {
    pub market: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub last: Option<String>,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub best_bid: Option<String>,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub best_ask: Option<String>,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub open_24h: Option<String>,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub high_24h: Option<String>,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub low_24h: Option<String>,
    /// Base volume over the last 24 hours.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub volume_24h: String,
    pub trades_24h: u64,
    #[schema(format = DateTime)]
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

#[derive(Serialize, ToSchema)]
pub struct CandleOut {
    /// Bucket start, Unix seconds.
    pub start: u64,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub open: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub high: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub low: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub close: String,
    /// Base volume.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub volume: String,
    pub trades: u64,
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

#[derive(Serialize, ToSchema)]
pub struct OrderOut {
    pub id: String,
    #[schema(pattern = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")]
    pub client_order_id: Option<String>,
    #[schema(pattern = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$")]
    pub market: String,
    #[schema(value_type = crate::schema::Side)]
    pub side: String,
    /// `limit` or `market`.
    #[serde(rename = "type")]
    #[schema(value_type = crate::schema::OrderType)]
    pub order_type: String,
    #[schema(value_type = Option<crate::schema::TimeInForce>)]
    pub time_in_force: Option<String>,
    /// Limit price; absent (null) for a market order, which has none: what it paid is
    /// `average_price`, and the price it could not go beyond is `protection_price`.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub price: Option<String>,
    /// A market order's protection: the edge of the price band when it was placed (the most a
    /// buy, the least a sell could fill at). Null for limit orders.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub protection_price: Option<String>,
    /// `executed_value / filled_size` in quote per whole base unit, rounded down to the quote
    /// asset's precision; null until something fills.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub average_price: Option<String>,
    /// Requested size (the most it may fill).
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub size: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub funds: Option<String>,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub filled_size: String,
    /// Quote value of the fills.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub executed_value: String,
    /// Fees paid (quote).
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub fees: String,
    /// `pending` (an untriggered stop), `open`, `filled` or `cancelled`.
    #[schema(value_type = crate::schema::OrderStatus)]
    pub status: String,
    #[schema(value_type = Option<crate::schema::CancelReason>)]
    pub cancel_reason: Option<String>,
    /// With `cancel_reason` `stop_refused`: the reject code of the pre-trade check that refused
    /// the triggered order (e.g. `PRICE_OUTSIDE_BAND`).
    pub cancel_reject: Option<String>,
    /// A stop order's direction, `loss` or `entry` (kept after it triggered).
    #[schema(value_type = Option<crate::schema::StopDirection>)]
    pub stop: Option<String>,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub stop_price: Option<String>,
    /// A good-till-time order's expiry.
    #[schema(format = DateTime)]
    pub expire_time: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// What an order's fills cost per whole base unit on average (quote minor units, rounded down),
/// formatted like a price; `None` before any fill.
pub fn average_price(scale: &crate::wire::Scale, o: &Order) -> Option<String> {
    let base = u128::from(o.filled.0).checked_mul(scale.lot).filter(|b| *b > 0)?;
    let per_unit = 10u128.checked_pow(u32::from(scale.base_decimals))?;
    let avg = o.filled_notional.checked_mul(per_unit)? / base;
    Some(scale.quote(avg))
}

pub fn order_out(m: &ReadModel, o: &Order) -> OrderOut {
    let r = market_ref_by_id(m, o.market).expect("orders belong to markets");
    let (status, reason) = match o.status {
        OrderStatus::Pending => ("pending", None),
        OrderStatus::Open => ("open", None),
        OrderStatus::Filled => ("filled", None),
        OrderStatus::Cancelled(c) => ("cancelled", Some(cancel_reason_name(c).to_owned())),
    };
    let cancel_reject = match o.status {
        OrderStatus::Cancelled(CancelReason::StopRefused(r)) => Some(r.code().to_owned()),
        _ => None,
    };
    let (ty, tif, funds) = match o.order_type {
        OrderType::Limit { .. } if o.expires_ns.is_some() => ("limit", Some("gtt".to_owned()), None),
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
        price: (ty == "limit").then(|| r.scale.price(o.limit)),
        protection_price: (ty == "market").then(|| r.scale.price(o.limit)),
        average_price: average_price(&r.scale, o),
        size: r.scale.size(o.qty),
        funds,
        filled_size: r.scale.size(o.filled),
        executed_value: r.scale.quote(o.filled_notional),
        fees: r.scale.quote(o.fees),
        status: status.into(),
        cancel_reason: reason,
        cancel_reject,
        stop: o.stop.map(|s| stop_name(s.direction).to_owned()),
        stop_price: o.stop.map(|s| r.scale.price(s.price)),
        expire_time: o.expires_ns.map(rfc3339),
        created_at: rfc3339(o.created_ns),
        updated_at: rfc3339(o.updated_ns),
    }
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

#[derive(Serialize, ToSchema)]
pub struct FillOut {
    pub trade_id: u64,
    pub order_id: String,
    #[schema(pattern = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$")]
    pub market: String,
    #[schema(value_type = crate::schema::Side)]
    pub side: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub price: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub size: String,
    /// Quote value.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub value: String,
    /// Fee paid (quote).
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub fee: String,
    /// `maker` or `taker`.
    #[schema(value_type = crate::schema::Liquidity)]
    pub liquidity: String,
    #[schema(format = DateTime)]
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

pub fn deposit_status_name(s: DepositStatus) -> &'static str {
    s.name()
}

#[derive(Serialize, ToSchema)]
pub struct WithdrawalAddressOut {
    pub id: String,
    pub asset: String,
    pub address: String,
    pub label: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Withdrawals to this address are refused before this time.
    #[schema(format = DateTime)]
    pub usable_at: String,
}

pub fn withdrawal_address_out(
    m: &ReadModel,
    a: &kinko_core::wallet::WithdrawalAddress,
) -> WithdrawalAddressOut {
    WithdrawalAddressOut {
        id: a.id.0.to_string(),
        asset: asset_code(m, a.asset),
        address: a.address.clone(),
        label: a.label.clone(),
        created_at: rfc3339(a.created_ns),
        usable_at: rfc3339(a.usable_at_ns),
    }
}

#[derive(Serialize, ToSchema)]
pub struct WithdrawalOut {
    pub id: String,
    pub asset: String,
    pub address_id: String,
    pub address: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub fee: String,
    #[schema(value_type = crate::schema::WithdrawalStatus)]
    pub status: String,
    pub txid: Option<String>,
    #[schema(pattern = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")]
    pub client_id: Option<String>,
    pub reason: Option<String>,
    #[schema(format = DateTime)]
    pub requested_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Why a withdrawal that could go out is waiting right now (the asset's withdrawals are
    /// halted, its node or signer is unavailable, the hot wallet awaits a refill from cold, or
    /// the platform's hourly limit is reached); absent when nothing holds it.
    pub waiting_reason: Option<String>,
}

/// Why `w` waits at `now_ns`, from the replica and the health registry, computed at read time
/// (nothing is stored). Only withdrawals that custody would take next (`requested`,
/// `approved`, `waiting` past its delay) or is taking (`signing`) get one; a withdrawal in
/// review waits for reviewers, which its status says.
pub fn waiting_reason(m: &ReadModel, health: &Health, w: &Withdrawal, now_ns: u64) -> Option<String> {
    let taking = w.status == WithdrawalStatus::Signing;
    if !taking && !w.ready_for_signing(now_ns) {
        return None;
    }
    let e = &m.engine;
    let code = asset_code(m, w.asset);
    if e.admin().global_halt.is_some() {
        return Some(
            "withdrawals are halted on the whole platform; they resume when operators lift the halt".into(),
        );
    }
    if !taking && e.asset(w.asset).is_some_and(|a| !a.switches.withdrawals) {
        return Some(format!(
            "withdrawals of {code} are halted; they resume when operators lift the halt"
        ));
    }
    let down = |part: &str| health.get(&format!("{part}:{code}")).is_some_and(|c| !c.up);
    if down("node") {
        return Some(format!(
            "the {code} node is unavailable; the withdrawal goes out when it is back"
        ));
    }
    if down("signer") {
        return Some(format!(
            "the {code} signer is unavailable; the withdrawal goes out when it is back"
        ));
    }
    if !taking && down("hot") {
        return Some(format!(
            "the {code} hot wallet is waiting for a refill from cold storage"
        ));
    }
    if !taking {
        if let Some(cap) = e.risk_policy().asset(w.asset).map(|r| r.hot_outflow_per_hour) {
            let hour = e.wallet().signed_since(w.asset, now_ns.saturating_sub(HOUR_NS));
            if hour.saturating_add(w.amount.0) > cap.0 {
                return Some(format!(
                    "the platform's hourly {code} withdrawal limit is reached; it goes out as the hour allows"
                ));
            }
        }
    }
    if down("custody") {
        return Some(format!("the {code} custody service is retrying after an error"));
    }
    None
}

/// A withdrawal as the native API and the WebSocket show it; `health` gives its waiting reason.
pub fn withdrawal_out(m: &ReadModel, health: &Health, w: &Withdrawal) -> WithdrawalOut {
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
        waiting_reason: waiting_reason(m, health, w, now_ns()),
    }
}

/// The wall clock, for read-time views only (nothing engine-side reads it).
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
