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
    open: FxHashMap<OrderId, Order>,
    /// Done orders, oldest first; `closed_base` is the position of the first one ever kept
    /// that is still here, and `closed_index` maps an id to its position (small entries keep
    /// the index in cache; the orders themselves are only appended).
    closed: std::collections::VecDeque<Order>,
    closed_base: u64,
    closed_index: FxHashMap<OrderId, u64>,
    client_index: FxHashMap<(UserId, ClientOrderId), OrderId>,
    open_count: FxHashMap<(UserId, MarketId), u32>,
    next_order_id: u64,
    tiers: BTreeMap<UserId, u8>,
    /// Recent trades per market, oldest first (trade ids are consecutive per market).
    trades: Vec<std::collections::VecDeque<TradeRecord>>,
    busted: BTreeSet<(MarketId, u64)>,
    book_events: Vec<BookEvent>,
    touched: Vec<(Side, Price)>,
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
            .iter()
            .rev()
            .filter(|o| o.user == user)
            .take(limit)
            .copied()
            .collect()
    }
    fn closed_get(&self, id: OrderId) -> Option<&Order> {
        let pos = *self.closed_index.get(&id)?;
        self.closed
            .get(usize::try_from(pos.checked_sub(self.closed_base)?).ok()?)
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
        let terms = self.pre_trade_checks(ledger, assets, now_ns, p)?;
        let mut taker = self.accept(ledger, now_ns, p, &terms, events)?;
        let (rested, taker_reason) = self.match_taker(ledger, now_ns, &mut taker, &terms, events);
        let placed = if rested {
            taker.updated_ns = now_ns;
            *self.open_count.entry((p.user, p.market)).or_default() += 1;
            self.open.insert(taker.id, taker);
            taker
        } else {
            let status = if taker.filled == taker.qty || (terms.budget.is_some() && taker.filled.0 > 0) {
                OrderStatus::Filled
            } else {
                OrderStatus::Cancelled(taker_reason.unwrap_or(CancelReason::Unfilled))
            };
            self.close(ledger, taker, status, now_ns, events)
        };
        self.emit_levels(p.market, events);
        Ok(OrderPlaced { order: placed })
    }

    /// The pre-trade checks, in the order of their reject codes. Reads only: a refused order
    /// changes nothing.
    fn pre_trade_checks(
        &self,
        ledger: &Ledger,
        assets: &[Asset],
        now_ns: u64,
        p: &PlaceOrder,
    ) -> Result<Terms, Reject> {
        let m = self
            .markets
            .get(p.market.0 as usize)
            .ok_or(Reject::MarketNotFound)?;
        let meta = &m.meta;
        let spec = &meta.spec;
        // 1. market state, 2. asset switches, 3. order-type switch
        check_switches(meta, assets, p)?;
        // 4. client order id
        if let Some(c) = p.client_id {
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

        self.next_order_id += 1;
        let id = OrderId(self.next_order_id);
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
            created_ns: now_ns,
            updated_ns: now_ns,
        };
        if let Some(c) = p.client_id {
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
        let key = (o.user, o.market);
        match self.open_count.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                self.open_count.remove(&key);
            }
        }
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
        o.status = status;
        o.updated_ns = now_ns;
        if self.closed.len() >= CLOSED_ORDERS_KEPT_MAX {
            if let Some(old) = self.closed.pop_front() {
                self.closed_index.remove(&old.id);
                self.closed_base += 1;
            }
        }
        self.closed_index
            .insert(o.id, self.closed_base + self.closed.len() as u64);
        self.closed.push_back(o);
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
        if resting != self.open.len() {
            return Err(InvariantViolation(format!(
                "{} open orders but {resting} resting in books",
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
        }
        for o in s.open {
            *t.open_count.entry((o.user, o.market)).or_default() += 1;
            t.open.insert(o.id, o);
        }
        t.closed_index = s
            .closed
            .iter()
            .enumerate()
            .map(|(i, o)| (o.id, i as u64))
            .collect();
        t.closed = s.closed.into_iter().collect();
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
