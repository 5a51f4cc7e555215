//! Order books: a plain reference implementation ([`RefBook`]) and the fast one ([`FastBook`]).
//!
//! Both implement [`OrderBook`] with exactly the same observable behaviour (the same events in the
//! same order for every command), which the test suite checks on random command streams.
//!
//! # Semantics
//! - Price-time priority: a taker matches the best opposite level first, oldest order first
//!   within a level; every trade executes at the maker's price.
//! - A taker walks levels while its limit allows (`limit: None` = no limit).
//! - [`TimeInForce::Gtc`]: the remainder rests at the back of its level (`Rested`).
//! - [`TimeInForce::Ioc`] and market orders: the remainder is cancelled with
//!   [`CancelReason::Unfilled`], also when nothing matched.
//! - [`TimeInForce::Fok`]: if the quantity the order would execute now (see
//!   [`OrderBook::available_qty`]) is less than `qty`, it is cancelled with
//!   [`CancelReason::FokUnfillable`] and the book is left untouched; otherwise it fills completely.
//! - [`TimeInForce::PostOnly`]: if the limit reaches the best opposite price it is cancelled with
//!   [`CancelReason::PostOnlyWouldCross`], otherwise it rests. It never trades.
//! - Quote budget (market-by-quote): before each trade the taker may take at most
//!   `budget_left / price` whole lots at that price. When that is zero the taker stops and its
//!   remainder is cancelled with [`CancelReason::Unfilled`] whatever its time in force (a spent
//!   budget never rests).
//! - Self-trade prevention applies when the next maker the taker would trade with (within limit
//!   and budget) has the taker's owner: [`Stp::CancelNewest`] cancels the taker's remainder
//!   (`Cancelled{SelfTrade}` for the taker); [`Stp::CancelOldest`] cancels that maker
//!   (`Cancelled{SelfTrade}`) and matching goes on; [`Stp::CancelBoth`] cancels the maker, then the
//!   taker.
//! - FOK and STP: the FOK check simulates the match. With `CancelOldest`, same-owner makers are
//!   skipped (they would be cancelled and matching would go on), so the order fills if enough other
//!   liquidity lies within its limit; with `CancelNewest` / `CancelBoth`, only liquidity ahead of the
//!   first same-owner maker counts, because reaching that maker would end the order. An unfillable
//!   FOK cancels nothing else. So a FOK either fills completely or has no effect besides its
//!   own `Cancelled{FokUnfillable}`.
//! - Invalid orders (qty 0, limit `Price(0)`, or no limit on a GTC / post-only order) are rejected
//!   as a no-op: one `Cancelled{Unfilled}` event and nothing else. The engine validates before, so
//!   this is only a guarantee that the book never panics or loops on them.
//! - Order ids are unique among resting orders (the engine guarantees it; checked with
//!   `debug_assert!`). With a duplicate, behaviour is unspecified but never panics in release.

mod fast;
mod reference;

pub use fast::{FastBook, FastBookStats};
pub use reference::RefBook;

use serde::{Deserialize, Serialize};

/// Order identifier, assigned by the engine (sequentially, but any `u64` works).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OrderId(pub u64);

/// Price in ticks, > 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Price(pub u64);

/// Quantity in lots (quantity steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Qty(pub u64);

/// Account / user index, used for self-trade prevention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OwnerId(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// The other side.
    #[inline]
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TimeInForce {
    /// Good till cancelled: the remainder rests.
    Gtc,
    /// Immediate or cancel: the remainder is cancelled.
    Ioc,
    /// Fill or kill: fills completely or not at all.
    Fok,
    /// Rests without trading, or is cancelled if it would trade.
    PostOnly,
}

/// Self-trade prevention mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stp {
    /// Cancel the incoming order's remainder.
    #[default]
    CancelNewest,
    /// Cancel the resting order and keep matching.
    CancelOldest,
    /// Cancel both.
    CancelBoth,
}

/// An incoming order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NewOrder {
    pub id: OrderId,
    pub owner: OwnerId,
    pub side: Side,
    /// `None` = market order (no limit). Protected market orders pass their protection price.
    pub limit: Option<Price>,
    /// Maximum quantity.
    pub qty: Qty,
    /// Market-by-quote: the taker never spends (buy) or receives (sell) more than this in
    /// `price * qty` units (tick·lot); only whole lots that fit are filled.
    pub quote_budget: Option<u128>,
    pub tif: TimeInForce,
    pub stp: Stp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CancelReason {
    /// Cancelled on request.
    User,
    /// Self-trade prevention.
    SelfTrade,
    /// IOC / market remainder, spent quote budget, or an invalid order.
    Unfilled,
    /// A FOK order that could not fill completely.
    FokUnfillable,
    /// A post-only order that would have traded.
    PostOnlyWouldCross,
    /// Cancelled by the engine (cancel-all, market halt, ...).
    Engine,
    /// A good-till-time order reached its expiry.
    Expired,
    /// A stop order triggered, but the pre-trade checks refused the order it became (the band
    /// around the new reference, funds, the market's state, ...): the reject says which.
    StopRefused(crate::reject::Reject),
}

/// What happened, in exact order. Emitted into a caller-provided, reusable `Vec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BookEvent {
    Fill {
        maker: OrderId,
        maker_owner: OwnerId,
        taker: OrderId,
        taker_owner: OwnerId,
        taker_side: Side,
        price: Price,
        qty: Qty,
        maker_remaining: Qty,
    },
    Rested {
        id: OrderId,
        side: Side,
        price: Price,
        qty: Qty,
    },
    Cancelled {
        id: OrderId,
        side: Side,
        /// The order's limit (`None` for a market order).
        price: Option<Price>,
        remaining: Qty,
        reason: CancelReason,
    },
}

/// A resting order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderView {
    pub id: OrderId,
    pub owner: OwnerId,
    pub side: Side,
    pub price: Price,
    /// Remaining quantity.
    pub qty: Qty,
}

/// A limit order book for one market.
pub trait OrderBook {
    /// Match `order` and rest or cancel its remainder; events are appended to `out`.
    fn submit(&mut self, order: &NewOrder, out: &mut Vec<BookEvent>);
    /// Cancel a resting order (`Cancelled{User}`); `false` (and no event) if it is not resting.
    fn cancel(&mut self, id: OrderId, out: &mut Vec<BookEvent>) -> bool;
    fn best_bid(&self) -> Option<Price>;
    fn best_ask(&self) -> Option<Price>;
    /// A resting order by id.
    fn order(&self, id: OrderId) -> Option<OrderView>;
    /// Number of resting orders.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Aggregated depth: `out` is cleared, then receives up to `levels` best levels of `side` as
    /// (price, total qty saturated to `u64::MAX`, order count), best first.
    fn depth(&self, side: Side, levels: usize, out: &mut Vec<(Price, Qty, u32)>);
    /// Total quantity (saturated to `u64::MAX`) and order count resting at one price level of
    /// `side`; `(Qty(0), 0)` if the level is empty. O(1) in `FastBook`. Used for level-2 updates.
    fn level(&self, side: Side, price: Price) -> (Qty, u32);
    /// The quantity `taker` would execute if submitted now as a taker (any time in force), under
    /// its limit, quote budget and self-trade prevention, capped at `taker.qty`. The walk stops
    /// once `taker.qty` is reached, so the work is bounded by the orders the taker would consume
    /// (plus same-owner orders skipped under `CancelOldest`). Used for FOK.
    fn available_qty(&self, taker: &NewOrder) -> Qty;
    /// All resting orders in exact priority order: bids best first, then asks best first, FIFO
    /// within a level. For snapshots and state hashing.
    fn orders(&self) -> Vec<OrderView>;
    /// Insert a resting order at the back of its level without matching (snapshot restore).
    /// Orders with qty 0 or price 0 are ignored.
    fn restore(&mut self, order: OrderView);
}

/// Why a taker stopped matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// Quantity exhausted.
    Filled,
    /// No more opposite liquidity within the limit.
    Liquidity,
    /// The quote budget cannot pay for one more lot.
    Budget,
    /// Self-trade prevention cancelled the taker (event already emitted).
    SelfTrade,
}

/// The event that ends an invalid order (qty 0, price 0, GTC / post-only without a limit), or
/// `None` if the order is valid.
fn reject_invalid(o: &NewOrder) -> Option<BookEvent> {
    let invalid = o.qty.0 == 0
        || o.limit == Some(Price(0))
        || (o.limit.is_none() && matches!(o.tif, TimeInForce::Gtc | TimeInForce::PostOnly));
    invalid.then_some(cancelled(o, o.qty.0, CancelReason::Unfilled))
}

#[inline]
fn cancelled(o: &NewOrder, remaining: u64, reason: CancelReason) -> BookEvent {
    BookEvent::Cancelled {
        id: o.id,
        side: o.side,
        price: o.limit,
        remaining: Qty(remaining),
        reason,
    }
}

/// The event for a trade of taker `o` against a maker.
#[inline]
fn fill(
    o: &NewOrder,
    maker: u64,
    maker_owner: OwnerId,
    price: u64,
    qty: u64,
    maker_remaining: u64,
) -> BookEvent {
    BookEvent::Fill {
        maker: OrderId(maker),
        maker_owner,
        taker: o.id,
        taker_owner: o.owner,
        taker_side: o.side,
        price: Price(price),
        qty: Qty(qty),
        maker_remaining: Qty(maker_remaining),
    }
}

/// The limit as a price bound: no limit means any price (`u64::MAX` for a buy, 0 for a sell).
#[inline]
fn limit_bound(o: &NewOrder) -> u64 {
    match (o.limit, o.side) {
        (Some(p), _) => p.0,
        (None, Side::Buy) => u64::MAX,
        (None, Side::Sell) => 0,
    }
}

/// Whether a taker on `side` with bound `lim` may trade at `price`.
#[inline]
fn within(side: Side, price: u64, lim: u64) -> bool {
    match side {
        Side::Buy => price <= lim,
        Side::Sell => price >= lim,
    }
}

/// Whole lots a quote budget can pay for at `price` (`u64::MAX` if unlimited).
#[inline]
fn budget_lots(budget: Option<u128>, price: u64) -> u64 {
    match budget {
        None => u64::MAX,
        Some(b) => match b.checked_div(u128::from(price)) {
            Some(lots) => u64::try_from(lots).unwrap_or(u64::MAX),
            None => u64::MAX,
        },
    }
}

/// The budget left after buying `qty` lots at `price`; `qty <= budget_lots(budget, price)`.
#[inline]
fn spend(budget: Option<u128>, price: u64, qty: u64) -> Option<u128> {
    budget.map(|b| b.saturating_sub(u128::from(price) * u128::from(qty)))
}
