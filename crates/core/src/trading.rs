//! Spot trading inside the engine: pre-trade checks, holds, matching, settlement, operator
//! controls and trade busts.
//!
//! The checks run in a fixed order, each with its own reject code (see [`Reject`] 5xx): market
//! state; asset switches; order-type switch; client order id; shape of the order; price > 0 and
//! on tick; quantity > 0, on step, within min/max; notional (checked, never wrapped) within
//! min/max; price inside the band around the reference (a stale reference stops market orders);
//! funds available; open orders below the limit. Only then is the hold placed and the order
//! matched. Whatever happens upstream, the ledger's own constraints make it impossible for a
//! fill to pay out more than the payer holds.
//!
//! Stop orders (`place_conditional` with a [`StopTrigger`]) pass the checks that do not depend
//! on the price at trigger time, hold their funds from placement and wait, per market, in
//! trigger order; the trades of a match trigger the stops they reach, which then go through
//! every check above, in the same command. Good-till-time orders carry an engine-time expiry
//! and are cancelled (`Expired`) by the first command at or after it (the sequencer's `Tick`).
//!
//! On the hot path no order record is kept by value in a hash map: open orders live in a slab
//! (`open::OpenOrders`), done ones in a fixed ring with a direct-mapped id index
//! (`closed::ClosedOrders`). Neither changes what a snapshot stores: `state` lists open orders
//! by id and done ones oldest first, as before.

use crate::asset::Asset;
use crate::book::{
    BookEvent, CancelReason, FastBook, NewOrder, OrderBook, OrderId, OrderView, OwnerId, Price, Qty, Side,
    Stp, TimeInForce,
};
use crate::engine::Event;
use crate::ledger::{
    InvariantViolation, Ledger, LedgerEvent, Owner, SystemAccount, TransferKind, TransferRequest,
};
use crate::market::{
    fee, FeeTier, Market, MarketId, MarketMeta, MarketSpec, MarketState, OrderTypeSwitches, PassiveBand,
    MARKETS_MAX,
};
use crate::money::{AccountId, Amount, TransferId, UserId};
use crate::reject::Reject;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

mod closed;
mod open;

/// A client's own id for an order (a UUID on the wire), unique per account forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientOrderId(pub u128);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderType {
    /// A limit order at `price` (quote minor units per whole base unit).
    Limit { price: Amount, tif: TimeInForce },
    /// A market order, protected by the band: it never fills outside it. By quantity (`qty`) or
    /// by quote amount (`funds`, fees included), exactly one of them.
    Market { funds: Option<Amount> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub user: UserId,
    pub market: MarketId,
    pub client_id: Option<ClientOrderId>,
    pub side: Side,
    pub order_type: OrderType,
    /// Base minor units.
    pub qty: Option<Amount>,
    pub stp: Stp,
}

/// Which way the last trade price must move for a stop order to trigger (Coinbase's `stop`):
/// a `Loss` triggers when the last trade price is at or below the stop price and is a sell; an
/// `Entry` triggers when it is at or above and is a buy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StopDirection {
    Loss,
    Entry,
}

impl StopDirection {
    /// The only direction a side's stop may have (Coinbase refuses the other two pairs).
    pub fn for_side(side: Side) -> StopDirection {
        match side {
            Side::Sell => StopDirection::Loss,
            Side::Buy => StopDirection::Entry,
        }
    }
}

/// A stop as the client gives it: the direction and the stop price (quote minor units per whole
/// base unit, on tick).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopTrigger {
    pub direction: StopDirection,
    pub price: Amount,
}

/// A stop on an order record, its price in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub direction: StopDirection,
    pub price: Price,
}

/// When a good-till-time order ends: at an engine time, or a duration after it is accepted
/// (Coinbase's `cancel_after`, measured on the engine's clock so that replay agrees).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    AtNs(u64),
    AfterNs(u64),
}

/// An order with conditions: a stop (it waits, funds held, until the last trade price reaches
/// the stop price, then enters the book through every pre-trade check), an expiry (good till
/// time: the engine cancels it with reason `Expired` at the first command at or after it), or
/// both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionalOrder {
    pub order: PlaceOrder,
    pub stop: Option<StopTrigger>,
    pub expiry: Option<Expiry>,
}

/// Most untriggered stop orders one market holds: a cascade of triggers in one command never
/// places more orders than this.
pub const STOPS_PER_MARKET_MAX: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderRef {
    Id(OrderId),
    Client(ClientOrderId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Resting in the book (possibly partly filled).
    Open,
    Filled,
    Cancelled(CancelReason),
    /// An untriggered stop order: its funds are held, it is not in the book.
    Pending,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub market: MarketId,
    pub user: UserId,
    pub client_id: Option<ClientOrderId>,
    pub side: Side,
    pub order_type: OrderType,
    pub stp: Stp,
    /// Limit or protection price in ticks.
    pub limit: Price,
    /// Most lots this order may fill.
    pub qty: Qty,
    pub filled: Qty,
    /// Sum of price × qty × q over fills, in quote minor units.
    pub filled_notional: u128,
    /// Fees paid, in quote minor units.
    pub fees: u128,
    pub base_account: AccountId,
    pub quote_account: AccountId,
    /// What this order still reserves in its hold account (quote for buys, base for sells).
    pub held: u128,
    pub maker_bps: u32,
    pub taker_bps: u32,
    pub status: OrderStatus,
    pub created_ns: u64,
    pub updated_ns: u64,
    /// The stop of a stop order (kept after it triggered).
    pub stop: Option<Stop>,
    /// A good-till-time order's expiry (engine time).
    pub expires_ns: Option<u64>,
}

impl Order {
    pub fn hold_account(&self) -> AccountId {
        match self.side {
            Side::Buy => self.quote_account,
            Side::Sell => self.base_account,
        }
    }
    pub fn remaining(&self) -> Qty {
        Qty(self.qty.0 - self.filled.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    pub market: MarketId,
    pub id: u64,
    pub price: Price,
    pub qty: Qty,
    /// The side of the resting (maker) order, as exchanges report it.
    pub maker_side: Side,
    pub maker_order: OrderId,
    pub taker_order: OrderId,
    pub maker_user: UserId,
    pub taker_user: UserId,
    /// Quote minor units.
    pub notional: u128,
    /// Base minor units.
    pub base_amount: u128,
    pub buyer_fee: u128,
    pub seller_fee: u128,
    pub timestamp_ns: u64,
}

/// A trade with the accounts it moved money between (kept for busts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeRecord {
    pub trade: Trade,
    pub buyer_base: AccountId,
    pub buyer_quote: AccountId,
    pub seller_base: AccountId,
    pub seller_quote: AccountId,
    pub fee_account: AccountId,
}

/// Trading events, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TradingEvent {
    MarketDefined {
        market: MarketId,
        symbol: String,
    },
    MarketStateChanged {
        market: MarketId,
        state: MarketState,
    },
    OrderTypesChanged {
        market: MarketId,
        switches: OrderTypeSwitches,
    },
    ReferencePriceSet {
        market: MarketId,
        price: Price,
    },
    UserTierSet {
        user: UserId,
        tier: u8,
    },
    /// An order passed the checks and its hold is placed.
    OrderAccepted {
        order: OrderId,
        user: UserId,
        market: MarketId,
        client_id: Option<ClientOrderId>,
        side: Side,
        /// Limit (or protection) price in ticks.
        limit: Price,
        qty: Qty,
    },
    OrderRested {
        order: OrderId,
        user: UserId,
        market: MarketId,
        side: Side,
        price: Price,
        qty: Qty,
    },
    Trade(Trade),
    /// An order left the book or finished: filled, or cancelled for `reason`.
    OrderDone {
        order: OrderId,
        user: UserId,
        market: MarketId,
        status: OrderStatus,
        filled: Qty,
        /// Quote minor units.
        filled_notional: u128,
        fees: u128,
    },
    /// A level-2 change: the total at (side, price) is now `qty` lots in `orders` orders.
    Level {
        market: MarketId,
        book_seq: u64,
        side: Side,
        price: Price,
        qty: Qty,
        orders: u32,
    },
    TradeBusted {
        market: MarketId,
        trade: u64,
        requested_by: String,
        reason: String,
    },
    /// A stop order passed its checks and waits for its trigger (status pending), its funds held.
    StopAccepted {
        order: OrderId,
        user: UserId,
        market: MarketId,
        client_id: Option<ClientOrderId>,
        side: Side,
        stop: Stop,
        /// The limit of a stop-limit order, in ticks; `None` for a stop-market order.
        limit: Option<Price>,
        qty: Qty,
        expires_ns: Option<u64>,
    },
    /// The last trade price reached a stop: the order leaves the pending stops and goes through
    /// the pre-trade checks into the book (`OrderAccepted` … follow, or `OrderDone` with
    /// `StopRefused`).
    StopTriggered {
        order: OrderId,
        user: UserId,
        market: MarketId,
        /// The last trade price, in ticks, when it triggered.
        last: Price,
    },
    /// A good-till-time order reached its expiry; `OrderDone` (cancelled, `Expired`) follows.
    OrderExpired {
        order: OrderId,
        user: UserId,
        market: MarketId,
        expires_ns: u64,
    },
}

#[inline]
fn emit(events: &mut Vec<Event>, e: TradingEvent) {
    events.push(Event::Trading(e));
}

/// Orders kept after they are done (for lookups by id or client id); the oldest go first.
pub const CLOSED_ORDERS_KEPT_MAX: usize = 100_000;
/// Trades kept for busts.
pub const TRADES_KEPT_MAX: usize = 100_000;
/// Most orders cancelled by one cancel-all.
pub const CANCEL_ALL_MAX: usize = 10_000;
/// Transfer ids from here up are generated by the engine (trade busts); clients cannot use them.
pub const ENGINE_TRANSFER_ID_MIN: u128 = 1 << 127;

#[derive(Clone, Debug, Default)]
pub struct Trading {
    pub(crate) markets: Vec<Market>,
    by_symbol: BTreeMap<String, MarketId>,
    open: open::OpenOrders,
    /// Done orders: the last [`CLOSED_ORDERS_KEPT_MAX`], found by id.
    closed: closed::ClosedOrders,
    client_index: FxHashMap<(UserId, ClientOrderId), OrderId>,
    open_count: FxHashMap<(UserId, MarketId), u32>,
    next_order_id: u64,
    tiers: BTreeMap<UserId, u8>,
    /// Recent trades per market, oldest first (trade ids are consecutive per market).
    trades: Vec<std::collections::VecDeque<TradeRecord>>,
    busted: BTreeSet<(MarketId, u64)>,
    book_events: Vec<BookEvent>,
    touched: Vec<(Side, Price)>,
    /// Untriggered stop orders per market, in trigger order.
    stops: Vec<MarketStops>,
    /// Good-till-time orders (open or pending) by expiry, then id.
    expiries: BTreeSet<(u64, OrderId)>,
    /// The lowest and highest trade price of the match in progress and the taker's side (read
    /// by the stop triggers; `None` when nothing traded).
    trade_range: Option<(Price, Price, Side)>,
    /// Triggered stops waiting to enter the book in this command (reused).
    trigger_queue: Vec<OrderId>,
}

/// A market's untriggered stops: loss stops from the highest stop price down (a falling price
/// reaches them in that order), entry stops from the lowest up; equal stops by id, which is
/// the order of placement.
#[derive(Clone, Debug, Default)]
struct MarketStops {
    loss: BTreeSet<(std::cmp::Reverse<Price>, OrderId)>,
    entry: BTreeSet<(Price, OrderId)>,
}

impl MarketStops {
    fn len(&self) -> usize {
        self.loss.len() + self.entry.len()
    }
    fn insert(&mut self, stop: Stop, id: OrderId) {
        match stop.direction {
            StopDirection::Loss => self.loss.insert((std::cmp::Reverse(stop.price), id)),
            StopDirection::Entry => self.entry.insert((stop.price, id)),
        };
    }
    fn remove(&mut self, stop: Stop, id: OrderId) -> bool {
        match stop.direction {
            StopDirection::Loss => self.loss.remove(&(std::cmp::Reverse(stop.price), id)),
            StopDirection::Entry => self.entry.remove(&(stop.price, id)),
        }
    }
    /// Moves the stops that trades between `low` and `high` reached to `out`, in the order the
    /// price passed them: a buying taker lifts the price from `low` to `high` (loss stops at or
    /// above `low` first, then entry stops up to `high`), a selling one lowers it.
    fn take_triggered(&mut self, low: Price, high: Price, taker: Side, out: &mut Vec<OrderId>) {
        let mut loss = |out: &mut Vec<OrderId>| {
            while let Some(&(std::cmp::Reverse(p), id)) = self.loss.first() {
                if p < low {
                    break;
                }
                self.loss.pop_first();
                out.push(id);
            }
        };
        match taker {
            Side::Buy => {
                loss(out);
                take_entry(&mut self.entry, high, out);
            }
            Side::Sell => {
                take_entry(&mut self.entry, high, out);
                loss(out);
            }
        }
    }
}

fn take_entry(entry: &mut BTreeSet<(Price, OrderId)>, high: Price, out: &mut Vec<OrderId>) {
    while let Some(&(p, id)) = entry.first() {
        if p > high {
            break;
        }
        entry.pop_first();
        out.push(id);
    }
}

/// Trading's persistent state in canonical order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradingState {
    pub markets: Vec<(MarketMeta, Vec<OrderView>)>,
    pub open: Vec<Order>,
    pub closed: Vec<Order>,
    pub client_index: Vec<((UserId, ClientOrderId), OrderId)>,
    pub next_order_id: u64,
    pub tiers: Vec<(UserId, u8)>,
    pub trades: Vec<TradeRecord>,
    pub busted: Vec<(MarketId, u64)>,
}

impl Clone for Market {
    fn clone(&self) -> Self {
        Market {
            meta: self.meta.clone(),
            book: self.book.clone(),
        }
    }
}

impl std::fmt::Debug for Market {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Market")
            .field("meta", &self.meta)
            .field("resting", &self.book.len())
            .finish()
    }
}

/// The result of placing an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order: Order,
}

impl Trading {
    pub fn market(&self, id: MarketId) -> Option<&Market> {
        self.markets.get(id.0 as usize)
    }
    pub fn markets(&self) -> &[Market] {
        &self.markets
    }
    pub fn market_by_symbol(&self, symbol: &str) -> Option<MarketId> {
        self.by_symbol.get(symbol).copied()
    }
    /// An open or recently done order.
    pub fn order(&self, id: OrderId) -> Option<&Order> {
        self.open.get(&id).or_else(|| self.closed_get(id))
    }
    pub fn order_by_client_id(&self, user: UserId, client: ClientOrderId) -> Option<OrderId> {
        self.client_index.get(&(user, client)).copied()
    }
    /// Open orders of a user, by id.
    pub fn open_orders(&self, user: UserId) -> Vec<Order> {
        let mut v: Vec<Order> = self.open.values().filter(|o| o.user == user).copied().collect();
        v.sort_by_key(|o| o.id);
        v
    }
    /// Recently done orders of a user, newest first.
    pub fn done_orders(&self, user: UserId, limit: usize) -> Vec<Order> {
        self.closed
            .iter_rev()
            .filter(|o| o.user == user)
            .take(limit)
            .copied()
            .collect()
    }
    fn closed_get(&self, id: OrderId) -> Option<&Order> {
        self.closed.get(id)
    }
    pub fn trade(&self, market: MarketId, id: u64) -> Option<&TradeRecord> {
        let q = self.trades.get(market.0 as usize)?;
        let first = q.front()?.trade.id;
        q.get(usize::try_from(id.checked_sub(first)?).ok()?)
    }
    /// The most recent trades of a market, newest first.
    pub fn recent_trades(&self, market: MarketId, limit: usize) -> Vec<Trade> {
        self.trades
            .get(market.0 as usize)
            .map(|q| q.iter().rev().take(limit).map(|r| r.trade).collect())
            .unwrap_or_default()
    }
    pub fn tier(&self, user: UserId) -> u8 {
        self.tiers.get(&user).copied().unwrap_or(0)
    }

    pub(crate) fn define_market(
        &mut self,
        assets: &[Asset],
        spec: &MarketSpec,
        now_ns: u64,
        events: &mut Vec<Event>,
    ) -> Result<(MarketId, bool), Reject> {
        let base = assets.get(spec.base.0 as usize).ok_or(Reject::AssetNotFound)?;
        if assets.get(spec.quote.0 as usize).is_none() {
            return Err(Reject::AssetNotFound);
        }
        let q = spec.validate(base.decimals)?;
        if let Some(&id) = self.by_symbol.get(&spec.symbol) {
            return if self.markets[id.0 as usize].meta.spec == *spec {
                Ok((id, false))
            } else {
                Err(Reject::MarketExists)
            };
        }
        if self.markets.len() >= MARKETS_MAX {
            return Err(Reject::MarketLimit);
        }
        let id = MarketId(self.markets.len() as u32);
        let fee_account = assets[spec.quote.0 as usize].system_account(SystemAccount::FeeRevenue);
        self.markets.push(Market {
            meta: MarketMeta::new(spec.clone(), q, fee_account, now_ns),
            book: FastBook::new(),
        });
        self.by_symbol.insert(spec.symbol.clone(), id);
        self.trades.push(std::collections::VecDeque::new());
        self.stops.push(MarketStops::default());
        emit(
            events,
            TradingEvent::MarketDefined {
                market: id,
                symbol: spec.symbol.clone(),
            },
        );
        Ok((id, true))
    }

    fn market_mut(&mut self, id: MarketId) -> Result<&mut Market, Reject> {
        self.markets.get_mut(id.0 as usize).ok_or(Reject::MarketNotFound)
    }

    pub(crate) fn set_state(
        &mut self,
        id: MarketId,
        state: MarketState,
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        self.market_mut(id)?.meta.state = state;
        emit(events, TradingEvent::MarketStateChanged { market: id, state });
        Ok(())
    }

    pub(crate) fn set_passive_band(&mut self, id: MarketId, band: PassiveBand) -> Result<(), Reject> {
        let m = self.market_mut(id)?;
        band.validate(m.meta.spec.band_bps)?;
        m.meta.passive = Some(band);
        Ok(())
    }

    pub(crate) fn set_order_types(
        &mut self,
        id: MarketId,
        switches: OrderTypeSwitches,
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        self.market_mut(id)?.meta.switches = switches;
        emit(events, TradingEvent::OrderTypesChanged { market: id, switches });
        Ok(())
    }

    pub(crate) fn set_reference(
        &mut self,
        id: MarketId,
        price: Amount,
        now_ns: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        let m = self.market_mut(id)?;
        let ticks = m
            .meta
            .price_ticks(price)
            .map_err(|_| Reject::ReferencePriceInvalid)?;
        m.meta.reference = ticks;
        m.meta.reference_ns = now_ns;
        emit(
            events,
            TradingEvent::ReferencePriceSet {
                market: id,
                price: ticks,
            },
        );
        Ok(())
    }

    pub(crate) fn set_tier(&mut self, user: UserId, tier: u8, events: &mut Vec<Event>) {
        self.tiers.insert(user, tier);
        emit(events, TradingEvent::UserTierSet { user, tier });
    }

    /// Places an order: checks, hold, match, settle.
    pub(crate) fn place(
        &mut self,
        ledger: &mut Ledger,
        assets: &[Asset],
        now_ns: u64,
        p: &PlaceOrder,
        events: &mut Vec<Event>,
    ) -> Result<OrderPlaced, Reject> {
        let terms = self.pre_trade_checks(ledger, assets, now_ns, p, true)?;
        let taker = self.accept(ledger, now_ns, p, &terms, None, events)?;
        let placed = self.execute(ledger, now_ns, taker, &terms, events);
        self.emit_levels(p.market, events);
        let order = if self.run_triggers(ledger, assets, now_ns, p.market, events) {
            // Triggered stops may have traded with it since.
            self.order(placed.id).copied().unwrap_or(placed)
        } else {
            placed
        };
        Ok(OrderPlaced { order })
    }

    /// Places an order with a stop, an expiry or both. Without a stop it is placed at once like
    /// any other (an expiry only on a limit order that rests); with one it waits in the
    /// market's stops, its funds held from now.
    pub(crate) fn place_conditional(
        &mut self,
        ledger: &mut Ledger,
        assets: &[Asset],
        now_ns: u64,
        c: &ConditionalOrder,
        events: &mut Vec<Event>,
    ) -> Result<OrderPlaced, Reject> {
        let p = &c.order;
        let expires_ns = match c.expiry {
            None => None,
            Some(Expiry::AtNs(t)) if t > now_ns => Some(t),
            Some(Expiry::AfterNs(d)) if d > 0 => Some(now_ns.checked_add(d).ok_or(Reject::ExpiryInvalid)?),
            Some(_) => return Err(Reject::ExpiryInvalid),
        };
        let rests = matches!(
            p.order_type,
            OrderType::Limit {
                tif: TimeInForce::Gtc | TimeInForce::PostOnly,
                ..
            }
        );
        if let Some(stop) = c.stop {
            return self.place_stop(ledger, assets, now_ns, p, stop, expires_ns, rests, events);
        }
        let terms = self.pre_trade_checks(ledger, assets, now_ns, p, true)?;
        if expires_ns.is_some() && !rests {
            return Err(Reject::ExpiryInvalid);
        }
        let mut taker = self.accept(ledger, now_ns, p, &terms, None, events)?;
        taker.expires_ns = expires_ns;
        let placed = self.execute(ledger, now_ns, taker, &terms, events);
        self.emit_levels(p.market, events);
        let order = if self.run_triggers(ledger, assets, now_ns, p.market, events) {
            // Triggered stops may have traded with it since.
            self.order(placed.id).copied().unwrap_or(placed)
        } else {
            placed
        };
        Ok(OrderPlaced { order })
    }

    /// Matches an accepted order and files it: resting (open, with its expiry) or done.
    fn execute(
        &mut self,
        ledger: &mut Ledger,
        now_ns: u64,
        mut taker: Order,
        terms: &Terms,
        events: &mut Vec<Event>,
    ) -> Order {
        let (rested, taker_reason) = self.match_taker(ledger, now_ns, &mut taker, terms, events);
        if rested {
            taker.updated_ns = now_ns;
            *self.open_count.entry((taker.user, taker.market)).or_default() += 1;
            if let Some(t) = taker.expires_ns {
                self.expiries.insert((t, taker.id));
            }
            self.open.insert(taker.id, taker);
            taker
        } else {
            let status = if taker.filled == taker.qty || (terms.budget.is_some() && taker.filled.0 > 0) {
                OrderStatus::Filled
            } else {
                OrderStatus::Cancelled(taker_reason.unwrap_or(CancelReason::Unfilled))
            };
            self.close(ledger, taker, status, now_ns, events)
        }
    }

    /// Checks a stop order and files it among the market's pending stops, its funds held. Checks
    /// 1–4 and 10–11 as for any order; then the stop (direction for the side, price on tick);
    /// shape, quantity and notional as for its order, but not the band: the band is the one
    /// around the reference when it triggers, checked then.
    #[allow(clippy::too_many_arguments)]
    fn place_stop(
        &mut self,
        ledger: &mut Ledger,
        assets: &[Asset],
        now_ns: u64,
        p: &PlaceOrder,
        stop: StopTrigger,
        expires_ns: Option<u64>,
        rests: bool,
        events: &mut Vec<Event>,
    ) -> Result<OrderPlaced, Reject> {
        let m = self
            .markets
            .get(p.market.0 as usize)
            .ok_or(Reject::MarketNotFound)?;
        let meta = &m.meta;
        check_switches(meta, assets, p)?;
        if let Some(c) = p.client_id {
            if self.client_index.contains_key(&(p.user, c)) {
                return Err(Reject::DuplicateClientOrderId);
            }
        }
        if stop.direction != StopDirection::for_side(p.side) {
            return Err(Reject::StopInvalid);
        }
        let stop_price = meta.price_ticks(stop.price).map_err(|_| Reject::StopInvalid)?;
        let tier = meta.spec.fee_tier(self.tiers.get(&p.user).copied().unwrap_or(0));
        let terms = stop_terms(meta, tier, p, stop_price)?;
        if expires_ns.is_some() && !rests {
            return Err(Reject::ExpiryInvalid);
        }
        let hold_asset = crate::market::hold_asset(&meta.spec, p.side);
        let available = ledger
            .customer_account(p.user, hold_asset)
            .and_then(|a| ledger.account(a))
            .map_or(0, |a| a.available());
        if available < terms.hold {
            return Err(Reject::FundsInsufficient);
        }
        let n = self.open_count.get(&(p.user, p.market)).copied().unwrap_or(0);
        if n >= meta.spec.open_orders_per_account_max {
            return Err(Reject::TooManyOpenOrders);
        }
        if self.stops[p.market.0 as usize].len() >= STOPS_PER_MARKET_MAX {
            return Err(Reject::StopLimit);
        }
        let mut o = self.accept(ledger, now_ns, p, &terms, None, events)?;
        // `accept` announced the order for the book; a stop waits instead, and says so.
        let announced = events.pop();
        debug_assert!(matches!(
            announced,
            Some(Event::Trading(TradingEvent::OrderAccepted { .. }))
        ));
        let stop = Stop {
            direction: stop.direction,
            price: stop_price,
        };
        o.status = OrderStatus::Pending;
        o.stop = Some(stop);
        o.expires_ns = expires_ns;
        emit(
            events,
            TradingEvent::StopAccepted {
                order: o.id,
                user: o.user,
                market: o.market,
                client_id: o.client_id,
                side: o.side,
                stop,
                limit: matches!(o.order_type, OrderType::Limit { .. }).then_some(o.limit),
                qty: o.qty,
                expires_ns,
            },
        );
        *self.open_count.entry((o.user, o.market)).or_default() += 1;
        if let Some(t) = expires_ns {
            self.expiries.insert((t, o.id));
        }
        self.stops[o.market.0 as usize].insert(stop, o.id);
        self.open.insert(o.id, o);
        Ok(OrderPlaced { order: o })
    }

    /// After a match that traded: the stops the trades reached enter the book one by one, in
    /// trigger order; their own trades may reach more, which follow. Each stop triggers once,
    /// so a cascade ends after at most the market's stops ([`STOPS_PER_MARKET_MAX`]). Returns
    /// whether any triggered. A market without stops pays one branch.
    fn run_triggers(
        &mut self,
        ledger: &mut Ledger,
        assets: &[Asset],
        now_ns: u64,
        market: MarketId,
        events: &mut Vec<Event>,
    ) -> bool {
        let Some((low, high, side)) = self.trade_range.take() else {
            return false;
        };
        let stops = &mut self.stops[market.0 as usize];
        if stops.len() == 0 {
            return false;
        }
        let mut queue = std::mem::take(&mut self.trigger_queue);
        queue.clear();
        stops.take_triggered(low, high, side, &mut queue);
        let mut i = 0;
        while i < queue.len() {
            let id = queue[i];
            i += 1;
            self.trigger(ledger, assets, now_ns, id, events);
            if let Some((low, high, side)) = self.trade_range.take() {
                self.stops[market.0 as usize].take_triggered(low, high, side, &mut queue);
            }
        }
        let any = !queue.is_empty();
        queue.clear();
        self.trigger_queue = queue;
        any
    }

    /// A triggered stop (already out of the market's stops): its hold released and its count
    /// given back, it goes through the pre-trade checks as the order it carries, keeping its id;
    /// refused, it is cancelled with the reject as its reason.
    fn trigger(
        &mut self,
        ledger: &mut Ledger,
        assets: &[Asset],
        now_ns: u64,
        id: OrderId,
        events: &mut Vec<Event>,
    ) {
        let mut o = self.open.remove(&id).expect("trading: a triggered stop is open");
        assert_eq!(
            o.status,
            OrderStatus::Pending,
            "trading: a triggered stop is pending"
        );
        self.uncount(o.user, o.market);
        if let Some(t) = o.expires_ns {
            self.expiries.remove(&(t, o.id));
        }
        if o.held > 0 {
            ledger.release(o.hold_account(), o.held);
            o.held = 0;
        }
        let meta = &self.markets[o.market.0 as usize].meta;
        let last = meta.last_price.unwrap_or(meta.reference);
        emit(
            events,
            TradingEvent::StopTriggered {
                order: o.id,
                user: o.user,
                market: o.market,
                last,
            },
        );
        let qty = match o.order_type {
            OrderType::Market { funds: Some(_) } => None,
            _ => Some(Amount(u128::from(o.qty.0) * meta.spec.lot.0)),
        };
        let p = PlaceOrder {
            user: o.user,
            market: o.market,
            client_id: o.client_id,
            side: o.side,
            order_type: o.order_type,
            qty,
            stp: o.stp,
        };
        let accepted = self
            .pre_trade_checks(ledger, assets, now_ns, &p, false)
            .and_then(|terms| {
                self.accept(ledger, now_ns, &p, &terms, Some(&o), events)
                    .map(|t| (t, terms))
            });
        match accepted {
            Ok((taker, terms)) => {
                self.execute(ledger, now_ns, taker, &terms, events);
                self.emit_levels(o.market, events);
            }
            Err(r) => {
                self.close(
                    ledger,
                    o,
                    OrderStatus::Cancelled(CancelReason::StopRefused(r)),
                    now_ns,
                    events,
                );
            }
        }
    }

    /// Cancels every good-till-time order whose expiry is at or before `now_ns`, oldest expiry
    /// first, whatever the market's state (the order ends on its own terms; nothing trades).
    pub(crate) fn expire_due(&mut self, ledger: &mut Ledger, now_ns: u64, events: &mut Vec<Event>) {
        while let Some(&(t, id)) = self.expiries.first() {
            if t > now_ns {
                break;
            }
            let o = *self.open.get(&id).expect("trading: an expiring order is open");
            emit(
                events,
                TradingEvent::OrderExpired {
                    order: o.id,
                    user: o.user,
                    market: o.market,
                    expires_ns: t,
                },
            );
            self.cancel_open(ledger, now_ns, o, CancelReason::Expired, events);
        }
    }

    /// The earliest expiry of a good-till-time order.
    pub fn next_expiry_ns(&self) -> Option<u64> {
        self.expiries.first().map(|e| e.0)
    }

    fn uncount(&mut self, user: UserId, market: MarketId) {
        let key = (user, market);
        match self.open_count.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                self.open_count.remove(&key);
            }
        }
    }

    /// The pre-trade checks, in the order of their reject codes. Reads only: a refused order
    /// changes nothing.
    fn pre_trade_checks(
        &self,
        ledger: &Ledger,
        assets: &[Asset],
        now_ns: u64,
        p: &PlaceOrder,
        new: bool,
    ) -> Result<Terms, Reject> {
        let m = self
            .markets
            .get(p.market.0 as usize)
            .ok_or(Reject::MarketNotFound)?;
        let meta = &m.meta;
        let spec = &meta.spec;
        // 1. market state, 2. asset switches, 3. order-type switch
        check_switches(meta, assets, p)?;
        // 4. client order id (a triggered stop already owns its own)
        if let Some(c) = p.client_id.filter(|_| new) {
            if self.client_index.contains_key(&(p.user, c)) {
                return Err(Reject::DuplicateClientOrderId);
            }
        }
        // 5. shape, 6. price, 7. quantity, 8. notional, 9. band
        let tier = spec.fee_tier(self.tiers.get(&p.user).copied().unwrap_or(0));
        let opposite_best = match p.side {
            Side::Buy => m.book.best_ask(),
            Side::Sell => m.book.best_bid(),
        };
        let terms = order_terms(meta, tier, p, opposite_best, now_ns)?;
        // 10. funds (accounts are opened only once every check has passed: a refused order
        // changes nothing)
        let hold_asset = match p.side {
            Side::Buy => spec.quote,
            Side::Sell => spec.base,
        };
        let available = ledger
            .customer_account(p.user, hold_asset)
            .and_then(|a| ledger.account(a))
            .map_or(0, |a| a.available());
        if available < terms.hold {
            return Err(Reject::FundsInsufficient);
        }
        // 11. open orders
        let rests = matches!(terms.tif, TimeInForce::Gtc | TimeInForce::PostOnly);
        if rests {
            let n = self.open_count.get(&(p.user, p.market)).copied().unwrap_or(0);
            if n >= spec.open_orders_per_account_max {
                return Err(Reject::TooManyOpenOrders);
            }
        }
        Ok(terms)
    }

    /// Takes a checked order: opens the user's two accounts, places the hold, gives the order
    /// its id.
    fn accept(
        &mut self,
        ledger: &mut Ledger,
        now_ns: u64,
        p: &PlaceOrder,
        t: &Terms,
        triggered: Option<&Order>,
        events: &mut Vec<Event>,
    ) -> Result<Order, Reject> {
        let spec = &self.markets[p.market.0 as usize].meta.spec;
        let (base, quote) = (spec.base, spec.quote);
        let base_account = ledger.open_account(base, Owner::Customer(p.user))?;
        let quote_account = ledger.open_account(quote, Owner::Customer(p.user))?;
        let hold_account = match p.side {
            Side::Buy => quote_account,
            Side::Sell => base_account,
        };
        ledger
            .hold(hold_account, t.hold)
            .map_err(|_| Reject::FundsInsufficient)?;

        let id = match triggered {
            Some(o) => o.id,
            None => {
                self.next_order_id += 1;
                OrderId(self.next_order_id)
            }
        };
        let taker = Order {
            id,
            market: p.market,
            user: p.user,
            client_id: p.client_id,
            side: p.side,
            order_type: p.order_type,
            stp: p.stp,
            limit: t.limit,
            qty: t.lots,
            filled: Qty(0),
            filled_notional: 0,
            fees: 0,
            base_account,
            quote_account,
            held: t.hold,
            maker_bps: t.tier.maker_bps,
            taker_bps: t.tier.taker_bps,
            status: OrderStatus::Open,
            created_ns: triggered.map_or(now_ns, |o| o.created_ns),
            updated_ns: now_ns,
            stop: triggered.and_then(|o| o.stop),
            expires_ns: triggered.and_then(|o| o.expires_ns),
        };
        if let Some(c) = p.client_id.filter(|_| triggered.is_none()) {
            self.client_index.insert((p.user, c), id);
        }
        emit(
            events,
            TradingEvent::OrderAccepted {
                order: id,
                user: p.user,
                market: p.market,
                client_id: p.client_id,
                side: p.side,
                limit: t.limit,
                qty: t.lots,
            },
        );
        Ok(taker)
    }

    /// Submits the taker to its book and settles what the book reports, in the book's order:
    /// fills, the taker resting, makers removed by self-trade prevention. Returns whether the
    /// taker rests and why the book cancelled it, if it did.
    fn match_taker(
        &mut self,
        ledger: &mut Ledger,
        now_ns: u64,
        taker: &mut Order,
        t: &Terms,
        events: &mut Vec<Event>,
    ) -> (bool, Option<CancelReason>) {
        let (id, user, market) = (taker.id, taker.user, taker.market);
        let new = NewOrder {
            id,
            owner: OwnerId(taker.base_account.0),
            side: taker.side,
            limit: Some(t.limit),
            qty: t.lots,
            quote_budget: t.budget,
            tif: t.tif,
            stp: taker.stp,
        };
        let mut book_events = std::mem::take(&mut self.book_events);
        book_events.clear();
        self.markets[market.0 as usize]
            .book
            .submit(&new, &mut book_events);
        let mut rested = false;
        let mut taker_reason = None;
        for ev in &book_events {
            match *ev {
                BookEvent::Fill {
                    maker,
                    price,
                    qty,
                    maker_remaining,
                    ..
                } => self.settle_fill(ledger, now_ns, taker, maker, price, qty, maker_remaining, events),
                BookEvent::Rested { price, qty, side, .. } => {
                    rested = true;
                    self.touched.push((side, price));
                    emit(
                        events,
                        TradingEvent::OrderRested {
                            order: id,
                            user,
                            market,
                            side,
                            price,
                            qty,
                        },
                    );
                }
                BookEvent::Cancelled { id: cid, reason, .. } => {
                    if cid == id {
                        taker_reason = Some(reason);
                    } else {
                        // Self-trade prevention removed a resting order.
                        let o = self.open.remove(&cid).expect("trading: cancelled maker is open");
                        self.touched.push((o.side, o.limit));
                        self.finish(ledger, o, OrderStatus::Cancelled(reason), now_ns, events);
                    }
                }
            }
        }
        self.book_events = book_events;
        (rested, taker_reason)
    }

    #[allow(clippy::too_many_arguments)]
    fn settle_fill(
        &mut self,
        ledger: &mut Ledger,
        now_ns: u64,
        taker: &mut Order,
        maker_id: OrderId,
        price: Price,
        qty: Qty,
        maker_remaining: Qty,
        events: &mut Vec<Event>,
    ) {
        let market = &mut self.markets[taker.market.0 as usize].meta;
        let maker = self
            .open
            .get_mut(&maker_id)
            .expect("trading: filled maker is open");
        let spec = &market.spec;
        let base_amount = u128::from(qty.0) * spec.lot.0;
        let notional = u128::from(price.0) * u128::from(qty.0) * market.q;
        // The taker pays the taker fee, the maker the maker fee, each at the rate fixed when
        // the order was placed (so the hold always covers it).
        let (buyer_bps, seller_bps) = match taker.side {
            Side::Buy => (taker.taker_bps, maker.maker_bps),
            Side::Sell => (maker.maker_bps, taker.taker_bps),
        };
        let (buyer, seller) = match taker.side {
            Side::Buy => (&mut *taker, &mut *maker),
            Side::Sell => (&mut *maker, &mut *taker),
        };
        let buyer_fee = fee(notional, buyer_bps);
        let seller_fee = fee(notional, seller_bps);
        let fee_account = market.fee_account;
        ledger.settle(seller.base_account, buyer.base_account, base_amount, base_amount);
        ledger.settle(buyer.quote_account, seller.quote_account, notional, notional);
        if buyer_fee > 0 {
            ledger.settle(buyer.quote_account, fee_account, buyer_fee, buyer_fee);
        }
        if seller_fee > 0 {
            ledger.settle(seller.quote_account, fee_account, seller_fee, 0);
        }
        buyer.held = buyer
            .held
            .checked_sub(notional + buyer_fee)
            .expect("trading: buyer's hold covers the fill");
        seller.held = seller
            .held
            .checked_sub(base_amount)
            .expect("trading: seller's hold covers the fill");
        buyer.fees += buyer_fee;
        seller.fees += seller_fee;
        for o in [&mut *buyer, &mut *seller] {
            o.filled = Qty(o.filled.0 + qty.0);
            o.filled_notional += notional;
            o.updated_ns = now_ns;
        }
        let trade = Trade {
            market: taker.market,
            id: market.next_trade_id,
            price,
            qty,
            maker_side: maker.side,
            maker_order: maker.id,
            taker_order: taker.id,
            maker_user: maker.user,
            taker_user: taker.user,
            notional,
            base_amount,
            buyer_fee,
            seller_fee,
            timestamp_ns: now_ns,
        };
        let (bb, bq, sb, sq) = match taker.side {
            Side::Buy => (
                taker.base_account,
                taker.quote_account,
                maker.base_account,
                maker.quote_account,
            ),
            Side::Sell => (
                maker.base_account,
                maker.quote_account,
                taker.base_account,
                taker.quote_account,
            ),
        };
        market.next_trade_id += 1;
        market.record_trade(now_ns, price, qty);
        self.trade_range = Some(match self.trade_range {
            None => (price, price, taker.side),
            Some((low, high, side)) => (low.min(price), high.max(price), side),
        });
        let maker_side = maker.side;
        debug_assert_eq!(maker.remaining(), maker_remaining);
        self.touched.push((maker_side, price));
        let kept = &mut self.trades[trade.market.0 as usize];
        if kept.len() >= TRADES_KEPT_MAX {
            kept.pop_front();
        }
        kept.push_back(TradeRecord {
            trade,
            buyer_base: bb,
            buyer_quote: bq,
            seller_base: sb,
            seller_quote: sq,
            fee_account,
        });
        emit(events, TradingEvent::Trade(trade));
        if maker_remaining.0 == 0 {
            let o = self.open.remove(&maker_id).expect("trading: maker is open");
            self.finish(ledger, o, OrderStatus::Filled, now_ns, events);
        }
    }

    /// Takes a resting order out of the open set's bookkeeping and closes it.
    fn finish(
        &mut self,
        ledger: &mut Ledger,
        o: Order,
        status: OrderStatus,
        now_ns: u64,
        events: &mut Vec<Event>,
    ) -> Order {
        self.uncount(o.user, o.market);
        self.close(ledger, o, status, now_ns, events)
    }

    /// Releases what the order still holds and files it among the done orders.
    fn close(
        &mut self,
        ledger: &mut Ledger,
        mut o: Order,
        status: OrderStatus,
        now_ns: u64,
        events: &mut Vec<Event>,
    ) -> Order {
        if o.held > 0 {
            ledger.release(o.hold_account(), o.held);
            o.held = 0;
        }
        if let Some(t) = o.expires_ns {
            self.expiries.remove(&(t, o.id));
        }
        o.status = status;
        o.updated_ns = now_ns;
        self.closed.push(o);
        emit(
            events,
            TradingEvent::OrderDone {
                order: o.id,
                user: o.user,
                market: o.market,
                status,
                filled: o.filled,
                filled_notional: o.filled_notional,
                fees: o.fees,
            },
        );
        o
    }

    fn emit_levels(&mut self, market: MarketId, events: &mut Vec<Event>) {
        if self.touched.is_empty() {
            return;
        }
        self.touched.sort_unstable();
        self.touched.dedup();
        let m = &mut self.markets[market.0 as usize];
        m.meta.book_seq += 1;
        for &(side, price) in &self.touched {
            let (qty, orders) = m.book.level(side, price);
            emit(
                events,
                TradingEvent::Level {
                    market,
                    book_seq: m.meta.book_seq,
                    side,
                    price,
                    qty,
                    orders,
                },
            );
        }
        self.touched.clear();
    }

    pub(crate) fn cancel(
        &mut self,
        ledger: &mut Ledger,
        now_ns: u64,
        user: UserId,
        which: OrderRef,
        events: &mut Vec<Event>,
    ) -> Result<Order, Reject> {
        let id = match which {
            OrderRef::Id(id) => id,
            OrderRef::Client(c) => self
                .client_index
                .get(&(user, c))
                .copied()
                .ok_or(Reject::OrderNotFound)?,
        };
        let o = *self
            .open
            .get(&id)
            .filter(|o| o.user == user)
            .ok_or(Reject::OrderNotFound)?;
        if self.markets[o.market.0 as usize].meta.state == MarketState::Halted {
            return Err(Reject::MarketHalted);
        }
        Ok(self.cancel_open(ledger, now_ns, o, CancelReason::User, events))
    }

    fn cancel_open(
        &mut self,
        ledger: &mut Ledger,
        now_ns: u64,
        o: Order,
        reason: CancelReason,
        events: &mut Vec<Event>,
    ) -> Order {
        if o.status == OrderStatus::Pending {
            let stop = o.stop.expect("trading: a pending order has a stop");
            let was_pending = self.stops[o.market.0 as usize].remove(stop, o.id);
            assert!(
                was_pending,
                "trading: pending order {} is not among the stops",
                o.id.0
            );
            self.open.remove(&o.id);
            return self.finish(ledger, o, OrderStatus::Cancelled(reason), now_ns, events);
        }
        let mut book_events = std::mem::take(&mut self.book_events);
        book_events.clear();
        let was_resting = self.markets[o.market.0 as usize]
            .book
            .cancel(o.id, &mut book_events);
        assert!(was_resting, "trading: open order {} is not in the book", o.id.0);
        self.book_events = book_events;
        self.open.remove(&o.id);
        self.touched.push((o.side, o.limit));
        let done = self.finish(ledger, o, OrderStatus::Cancelled(reason), now_ns, events);
        self.emit_levels(o.market, events);
        done
    }

    /// Cancels every open order of `user` (on one market or all), oldest first; at most
    /// [`CANCEL_ALL_MAX`] per command.
    pub(crate) fn cancel_all(
        &mut self,
        ledger: &mut Ledger,
        now_ns: u64,
        user: Option<UserId>,
        market: Option<MarketId>,
        reason: CancelReason,
        events: &mut Vec<Event>,
    ) -> Result<Vec<OrderId>, Reject> {
        if let Some(m) = market {
            let mk = self.markets.get(m.0 as usize).ok_or(Reject::MarketNotFound)?;
            if mk.meta.state == MarketState::Halted && reason == CancelReason::User {
                return Err(Reject::MarketHalted);
            }
        }
        let mut ids: Vec<OrderId> = self
            .open
            .values()
            .filter(|o| user.is_none_or(|u| o.user == u) && market.is_none_or(|m| o.market == m))
            .filter(|o| {
                reason != CancelReason::User
                    || self.markets[o.market.0 as usize].meta.state != MarketState::Halted
            })
            .map(|o| o.id)
            .collect();
        ids.sort_unstable();
        ids.truncate(CANCEL_ALL_MAX);
        for id in &ids {
            let o = self.open[id];
            self.cancel_open(ledger, now_ns, o, reason, events);
        }
        Ok(ids)
    }

    /// Reverses a trade through correcting ledger transfers (linked: all or nothing), recording
    /// who asked and why. Refused if either side no longer has the funds to give back.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn bust(
        &mut self,
        ledger: &mut Ledger,
        seq: u64,
        now_ns: u64,
        market: MarketId,
        trade: u64,
        requested_by: &str,
        reason: &str,
        events: &mut Vec<Event>,
        ledger_events: &mut Vec<LedgerEvent>,
    ) -> Result<(), Reject> {
        if requested_by.trim().is_empty()
            || reason.trim().is_empty()
            || requested_by.len() > 256
            || reason.len() > 1024
        {
            return Err(Reject::ReasonRequired);
        }
        self.markets
            .get(market.0 as usize)
            .ok_or(Reject::MarketNotFound)?;
        if self.busted.contains(&(market, trade)) {
            return Err(Reject::TradeAlreadyBusted);
        }
        let r = *self.trade(market, trade).ok_or(Reject::TradeNotFound)?;
        let t = r.trade;
        let base_id = ENGINE_TRANSFER_ID_MIN | (u128::from(market.0) << 80) | (u128::from(trade) << 4);
        // Fees go back first so that the seller holds the whole notional to return.
        let mut legs = vec![(r.buyer_base, r.seller_base, t.base_amount)];
        if t.buyer_fee > 0 {
            legs.push((r.fee_account, r.buyer_quote, t.buyer_fee));
        }
        if t.seller_fee > 0 {
            legs.push((r.fee_account, r.seller_quote, t.seller_fee));
        }
        legs.push((r.seller_quote, r.buyer_quote, t.notional));
        let n = legs.len();
        let requests: Vec<TransferRequest> = legs
            .into_iter()
            .enumerate()
            .map(|(i, (debit, credit, amount))| TransferRequest {
                id: TransferId(base_id | i as u128),
                kind: TransferKind::Post {
                    debit,
                    credit,
                    amount: Amount(amount),
                },
                linked: i + 1 < n,
                code: TRANSFER_CODE_TRADE_BUST,
                user_data: u128::from(trade),
            })
            .collect();
        let results = ledger.create_transfers(seq, now_ns, &requests, ledger_events);
        if let Some(Err(e)) = results
            .into_iter()
            .find(|r| matches!(r, Err(e) if *e != Reject::LinkedTransferFailed))
        {
            return Err(match e {
                Reject::InsufficientFunds => Reject::FundsInsufficient,
                other => other,
            });
        }
        self.busted.insert((market, trade));
        emit(
            events,
            TradingEvent::TradeBusted {
                market,
                trade,
                requested_by: requested_by.to_owned(),
                reason: reason.to_owned(),
            },
        );
        Ok(())
    }

    /// What open orders hold, per account (the trading part of the ledger's `held`).
    pub fn holds(&self) -> BTreeMap<AccountId, u128> {
        let mut m = BTreeMap::new();
        for o in self.open.values() {
            *m.entry(o.hold_account()).or_default() += o.held;
        }
        m
    }

    /// Checks that open orders, books, counts and holds agree.
    pub fn check(&self, ledger: &Ledger) -> Result<(), InvariantViolation> {
        let mut resting = 0usize;
        let mut pending = 0usize;
        for (i, stops) in self.stops.iter().enumerate() {
            let ids = stops
                .loss
                .iter()
                .map(|(std::cmp::Reverse(p), id)| (StopDirection::Loss, *p, *id))
                .chain(stops.entry.iter().map(|(p, id)| (StopDirection::Entry, *p, *id)));
            for (direction, price, id) in ids {
                pending += 1;
                let o = self.open.get(&id).ok_or_else(|| {
                    InvariantViolation(format!("stops of market {i} hold unknown order {}", id.0))
                })?;
                if o.status != OrderStatus::Pending
                    || o.stop != Some(Stop { direction, price })
                    || o.market.0 as usize != i
                {
                    return Err(InvariantViolation(format!(
                        "order {} disagrees with the stops",
                        id.0
                    )));
                }
                let need =
                    pending_hold(&self.markets[i].meta, o).map_err(|e| InvariantViolation(e.to_string()))?;
                if o.held != need {
                    return Err(InvariantViolation(format!(
                        "stop order {} holds {} but needs {need}",
                        id.0, o.held
                    )));
                }
            }
        }
        if self
            .open
            .values()
            .filter(|o| o.status == OrderStatus::Pending)
            .count()
            != pending
        {
            return Err(InvariantViolation("pending orders missing from the stops".into()));
        }
        for &(t, id) in &self.expiries {
            if self.open.get(&id).and_then(|o| o.expires_ns) != Some(t) {
                return Err(InvariantViolation(format!("expiry of order {} disagrees", id.0)));
            }
        }
        if self.open.values().filter(|o| o.expires_ns.is_some()).count() != self.expiries.len() {
            return Err(InvariantViolation(
                "open orders with an expiry missing from the expiries".into(),
            ));
        }
        for (i, m) in self.markets.iter().enumerate() {
            for v in m.book.orders() {
                resting += 1;
                let o = self.open.get(&v.id).ok_or_else(|| {
                    InvariantViolation(format!("book of market {i} holds unknown order {}", v.id.0))
                })?;
                if o.remaining() != v.qty
                    || o.limit != v.price
                    || o.side != v.side
                    || o.market.0 as usize != i
                {
                    return Err(InvariantViolation(format!(
                        "order {} disagrees with the book",
                        v.id.0
                    )));
                }
                // A resting order holds at least what its remaining quantity needs.
                let need = match o.side {
                    Side::Buy => {
                        let n = m
                            .meta
                            .notional(o.limit, o.remaining())
                            .map_err(|e| InvariantViolation(e.to_string()))?;
                        n + fee(n, o.maker_bps.max(o.taker_bps))
                    }
                    Side::Sell => u128::from(o.remaining().0) * m.meta.spec.lot.0,
                };
                if o.held < need {
                    return Err(InvariantViolation(format!(
                        "order {} holds {} but needs {need}",
                        o.id.0, o.held
                    )));
                }
            }
        }
        if resting + pending != self.open.len() {
            return Err(InvariantViolation(format!(
                "{} open orders but {resting} resting in books and {pending} pending stops",
                self.open.len()
            )));
        }
        let mut counts: BTreeMap<(UserId, MarketId), u32> = BTreeMap::new();
        for o in self.open.values() {
            *counts.entry((o.user, o.market)).or_default() += 1;
            let acct = ledger
                .account(o.hold_account())
                .ok_or_else(|| InvariantViolation("order without account".into()))?;
            if acct.owner != Owner::Customer(o.user) {
                return Err(InvariantViolation(format!(
                    "order {} holds on another's account",
                    o.id.0
                )));
            }
        }
        let mine: BTreeMap<(UserId, MarketId), u32> = self.open_count.iter().map(|(k, v)| (*k, *v)).collect();
        if counts != mine {
            return Err(InvariantViolation("open order counts disagree".into()));
        }
        Ok(())
    }

    pub fn state(&self) -> TradingState {
        let mut open: Vec<Order> = self.open.values().copied().collect();
        open.sort_by_key(|o| o.id);
        let mut client_index: Vec<_> = self.client_index.iter().map(|(k, v)| (*k, *v)).collect();
        client_index.sort_unstable();
        TradingState {
            markets: self
                .markets
                .iter()
                .map(|m| (m.meta.clone(), m.book.orders()))
                .collect(),
            open,
            closed: self.closed.iter().copied().collect(),
            client_index,
            next_order_id: self.next_order_id,
            tiers: self.tiers.iter().map(|(k, v)| (*k, *v)).collect(),
            trades: self.trades.iter().flatten().copied().collect(),
            busted: self.busted.iter().copied().collect(),
        }
    }

    pub fn from_state(s: TradingState) -> Trading {
        let mut t = Trading {
            next_order_id: s.next_order_id,
            ..Trading::default()
        };
        for (i, (meta, orders)) in s.markets.into_iter().enumerate() {
            let mut book = FastBook::new();
            for o in orders {
                book.restore(o);
            }
            t.by_symbol.insert(meta.spec.symbol.clone(), MarketId(i as u32));
            t.markets.push(Market { meta, book });
            t.stops.push(MarketStops::default());
        }
        for o in s.open {
            *t.open_count.entry((o.user, o.market)).or_default() += 1;
            if let (OrderStatus::Pending, Some(stop)) = (o.status, o.stop) {
                if let Some(stops) = t.stops.get_mut(o.market.0 as usize) {
                    stops.insert(stop, o.id);
                }
            }
            if let Some(e) = o.expires_ns {
                t.expiries.insert((e, o.id));
            }
            t.open.insert(o.id, o);
        }
        for o in s.closed {
            t.closed.push(o);
        }
        t.client_index = s.client_index.into_iter().collect();
        t.tiers = s.tiers.into_iter().collect();
        t.trades = vec![std::collections::VecDeque::new(); t.markets.len()];
        for r in s.trades {
            if let Some(q) = t.trades.get_mut(r.trade.market.0 as usize) {
                q.push_back(r);
            }
        }
        t.busted = s.busted.into_iter().collect();
        t
    }
}

/// Ledger transfer code of the correcting transfers of a trade bust.
pub const TRANSFER_CODE_TRADE_BUST: u16 = 900;

fn base_amount(spec: &MarketSpec, lots: Qty) -> Result<u128, Reject> {
    u128::from(lots.0)
        .checked_mul(spec.lot.0)
        .ok_or(Reject::NotionalOverflow)
}

/// An order as the pre-trade checks accepted it, in the book's terms.
#[derive(Clone, Copy, Debug)]
struct Terms {
    /// The limit in ticks; for a market order the edge of the band, its protection.
    limit: Price,
    lots: Qty,
    /// For a market order by funds: the most it may spend, in units of `q`.
    budget: Option<u128>,
    tif: TimeInForce,
    /// What the order reserves: quote (notional and the highest fee) to buy, base to sell.
    hold: u128,
    tier: FeeTier,
}

/// Checks 5–8 of a stop order (shape, price, quantity, notional) and what it holds from
/// placement: a stop-limit holds like its limit order; a stop-market buy by size holds the
/// size at the highest protection price it may get (the band's edge around the stop price or
/// around today's reference, whichever is higher) plus the taker fee, by funds the funds; a
/// stop-market sell holds its base (by funds: the lots the funds need at the lower band edge).
fn stop_terms(meta: &MarketMeta, tier: FeeTier, p: &PlaceOrder, stop: Price) -> Result<Terms, Reject> {
    let spec = &meta.spec;
    let (low_now, high_now) = meta.band();
    let (low_stop, high_stop) = meta.band_around(stop);
    let (low, high) = (low_now.min(low_stop), high_now.max(high_stop));
    let max_bps = tier.maker_bps.max(tier.taker_bps);
    let (limit, lots, budget, tif, hold) = match (p.order_type, p.qty) {
        (OrderType::Limit { price, tif }, Some(qty)) => {
            let price = meta.price_ticks(price)?;
            let lots = meta.qty_lots(qty)?;
            let n = meta.notional(price, lots)?;
            meta.check_notional(n)?;
            let hold = match p.side {
                Side::Buy => n.checked_add(fee(n, max_bps)).ok_or(Reject::NotionalOverflow)?,
                Side::Sell => base_amount(spec, lots)?,
            };
            (price, lots, None, tif, hold)
        }
        (OrderType::Market { funds: None }, Some(qty)) => {
            let lots = meta.qty_lots(qty)?;
            let protection = match p.side {
                Side::Buy => high,
                Side::Sell => low,
            };
            let n = meta.notional(protection, lots)?;
            meta.check_notional(n)?;
            let hold = match p.side {
                Side::Buy => n
                    .checked_add(fee(n, tier.taker_bps))
                    .ok_or(Reject::NotionalOverflow)?,
                Side::Sell => base_amount(spec, lots)?,
            };
            (protection, lots, None, TimeInForce::Ioc, hold)
        }
        (OrderType::Market { funds: Some(funds) }, None) => {
            if funds.is_zero() {
                return Err(Reject::QtyZero);
            }
            meta.check_notional(funds.0)?;
            let max_lots = u64::try_from(spec.qty_max.0 / spec.lot.0).unwrap_or(u64::MAX);
            match p.side {
                Side::Buy => (high, Qty(max_lots), None, TimeInForce::Ioc, funds.0),
                Side::Sell => {
                    let units = funds.0 / meta.q;
                    if units == 0 {
                        return Err(Reject::NotionalBelowMin);
                    }
                    let need = units.div_ceil(u128::from(low.0));
                    let lots = Qty(u64::try_from(need).unwrap_or(u64::MAX).min(max_lots));
                    (low, lots, None, TimeInForce::Ioc, base_amount(spec, lots)?)
                }
            }
        }
        _ => return Err(Reject::OrderSpecInvalid),
    };
    Ok(Terms {
        limit,
        lots,
        budget,
        tif,
        hold,
        tier,
    })
}

/// What a pending stop holds, from its own record (the audit recomputes it).
fn pending_hold(meta: &MarketMeta, o: &Order) -> Result<u128, Reject> {
    let max_bps = o.maker_bps.max(o.taker_bps);
    match (o.side, o.order_type) {
        (Side::Sell, _) => base_amount(&meta.spec, o.qty),
        (Side::Buy, OrderType::Market { funds: Some(f) }) => Ok(f.0),
        (Side::Buy, OrderType::Market { funds: None }) => {
            let n = meta.notional(o.limit, o.qty)?;
            n.checked_add(fee(n, o.taker_bps)).ok_or(Reject::NotionalOverflow)
        }
        (Side::Buy, OrderType::Limit { .. }) => {
            let n = meta.notional(o.limit, o.qty)?;
            n.checked_add(fee(n, max_bps)).ok_or(Reject::NotionalOverflow)
        }
    }
}

/// Pre-trade checks 1–3: market state, asset switches, order-type switch.
fn check_switches(meta: &MarketMeta, assets: &[Asset], p: &PlaceOrder) -> Result<(), Reject> {
    let spec = &meta.spec;
    // 1. market state
    let post_only = matches!(
        p.order_type,
        OrderType::Limit {
            tif: TimeInForce::PostOnly,
            ..
        }
    );
    match meta.state {
        MarketState::Halted => return Err(Reject::MarketHalted),
        MarketState::CancelOnly => return Err(Reject::MarketCancelOnly),
        MarketState::PostOnly if !post_only => return Err(Reject::MarketPostOnly),
        _ => {}
    }
    // 2. asset switches
    let base_on = assets
        .get(spec.base.0 as usize)
        .is_some_and(|a| a.switches.trading);
    let quote_on = assets
        .get(spec.quote.0 as usize)
        .is_some_and(|a| a.switches.trading);
    if !base_on || !quote_on {
        return Err(Reject::AssetTradingDisabled);
    }
    // 3. order-type switch
    let sw = meta.switches;
    let allowed = match p.order_type {
        OrderType::Limit { tif, .. } => match tif {
            TimeInForce::Gtc => sw.limit,
            TimeInForce::Ioc => sw.limit && sw.ioc,
            TimeInForce::Fok => sw.limit && sw.fok,
            TimeInForce::PostOnly => sw.limit && sw.post_only,
        },
        OrderType::Market { .. } => sw.market,
    };
    if !allowed {
        return Err(Reject::OrderTypeDisabled);
    }
    Ok(())
}

/// Whether a limit order at `price` would trade on arrival against the best opposite price.
pub fn crosses(side: Side, price: Price, opposite_best: Option<Price>) -> bool {
    match side {
        Side::Buy => opposite_best.is_some_and(|ask| price >= ask),
        Side::Sell => opposite_best.is_some_and(|bid| price <= bid),
    }
}

/// Pre-trade checks 5–9: shape, price, quantity, notional, band (per side: see
/// [`MarketMeta::limit_range`]); and what the order holds.
fn order_terms(
    meta: &MarketMeta,
    tier: FeeTier,
    p: &PlaceOrder,
    opposite_best: Option<Price>,
    now_ns: u64,
) -> Result<Terms, Reject> {
    let spec = &meta.spec;
    let (band_low, band_high) = meta.band();
    let max_bps = tier.maker_bps.max(tier.taker_bps);
    let (limit, lots, budget, tif, hold) = match (p.order_type, p.qty) {
        (OrderType::Limit { price, tif }, Some(qty)) => {
            let price = meta.price_ticks(price)?;
            let lots = meta.qty_lots(qty)?;
            let n = meta.notional(price, lots)?;
            meta.check_notional(n)?;
            let (lowest, highest) = meta.limit_range(p.side, crosses(p.side, price, opposite_best));
            if price < lowest || price > highest {
                return Err(Reject::PriceOutsideBand);
            }
            let hold = match p.side {
                Side::Buy => n.checked_add(fee(n, max_bps)).ok_or(Reject::NotionalOverflow)?,
                Side::Sell => base_amount(spec, lots)?,
            };
            (price, lots, None, tif, hold)
        }
        (OrderType::Market { funds: None }, Some(qty)) => {
            if meta.reference_stale(now_ns) {
                return Err(Reject::ReferenceStale);
            }
            let lots = meta.qty_lots(qty)?;
            let protection = match p.side {
                Side::Buy => band_high,
                Side::Sell => band_low,
            };
            let n = meta.notional(protection, lots)?;
            meta.check_notional(n)?;
            let hold = match p.side {
                Side::Buy => n
                    .checked_add(fee(n, tier.taker_bps))
                    .ok_or(Reject::NotionalOverflow)?,
                Side::Sell => base_amount(spec, lots)?,
            };
            (protection, lots, None, TimeInForce::Ioc, hold)
        }
        (OrderType::Market { funds: Some(funds) }, None) => {
            return funds_terms(meta, tier, p.side, funds, now_ns);
        }
        _ => return Err(Reject::OrderSpecInvalid),
    };
    Ok(Terms {
        limit,
        lots,
        budget,
        tif,
        hold,
        tier,
    })
}

/// Checks 5–9 for a market order by quote amount (`funds`, fees included).
fn funds_terms(
    meta: &MarketMeta,
    tier: FeeTier,
    side: Side,
    funds: Amount,
    now_ns: u64,
) -> Result<Terms, Reject> {
    let spec = &meta.spec;
    let (band_low, band_high) = meta.band();
    if meta.reference_stale(now_ns) {
        return Err(Reject::ReferenceStale);
    }
    if funds.is_zero() {
        return Err(Reject::QtyZero);
    }
    meta.check_notional(funds.0)?;
    let max_lots = u64::try_from(spec.qty_max.0 / spec.lot.0).unwrap_or(u64::MAX);
    let (limit, lots, units, hold) = match side {
        Side::Buy => {
            // Fees come out of the funds: spend at most funds / (1 + taker fee).
            let for_notional = funds.0 / (10_000 + u128::from(tier.taker_bps)) * 10_000
                + funds.0 % (10_000 + u128::from(tier.taker_bps)) * 10_000
                    / (10_000 + u128::from(tier.taker_bps));
            let units = for_notional / meta.q;
            if units == 0 {
                return Err(Reject::NotionalBelowMin);
            }
            (band_high, Qty(max_lots), units, funds.0)
        }
        Side::Sell => {
            let units = funds.0 / meta.q;
            if units == 0 {
                return Err(Reject::NotionalBelowMin);
            }
            let need = units.div_ceil(u128::from(band_low.0));
            let lots = Qty(u64::try_from(need).unwrap_or(u64::MAX).min(max_lots));
            (band_low, lots, units, base_amount(spec, lots)?)
        }
    };
    Ok(Terms {
        limit,
        lots,
        budget: Some(units),
        tif: TimeInForce::Ioc,
        hold,
        tier,
    })
}
