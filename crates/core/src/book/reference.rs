//! The reference order book: a `BTreeMap` of price levels, each a `VecDeque` in time order.
//! Written to be obviously correct, not fast (a cancel scans its level). The fast book must
//! produce exactly the same events.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::{
    budget_lots, cancelled, fill, limit_bound, reject_invalid, spend, within, BookEvent, CancelReason,
    NewOrder, OrderBook, OrderId, OrderView, OwnerId, Price, Qty, Side, Stop, Stp, TimeInForce,
};

#[derive(Clone, Copy, Debug)]
struct Resting {
    id: OrderId,
    owner: OwnerId,
    qty: u64,
}

type Levels = BTreeMap<u64, VecDeque<Resting>>;

/// Plain price-time order book.
#[derive(Clone, Debug, Default)]
pub struct RefBook {
    bids: Levels,
    asks: Levels,
    /// Resting order id -> (side, price).
    index: HashMap<OrderId, (Side, u64)>,
}

impl RefBook {
    pub fn new() -> Self {
        Self::default()
    }

    fn side(&self, side: Side) -> &Levels {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut Levels {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// Levels of `side`, best first.
    fn levels(&self, side: Side) -> Box<dyn Iterator<Item = (&u64, &VecDeque<Resting>)> + '_> {
        match side {
            Side::Buy => Box::new(self.bids.iter().rev()),
            Side::Sell => Box::new(self.asks.iter()),
        }
    }

    fn best(&self, side: Side) -> Option<u64> {
        self.levels(side).next().map(|(p, _)| *p)
    }

    fn rest(&mut self, side: Side, price: u64, r: Resting) {
        debug_assert!(!self.index.contains_key(&r.id), "duplicate resting id {:?}", r.id);
        self.index.insert(r.id, (side, price));
        self.side_mut(side).entry(price).or_default().push_back(r);
    }

    /// Remove the front order of the level at `price` on `side`.
    fn pop_front(&mut self, side: Side, price: u64) {
        let book = self.side_mut(side);
        let Some(level) = book.get_mut(&price) else { return };
        let front = level.pop_front();
        if level.is_empty() {
            book.remove(&price);
        }
        if let Some(r) = front {
            self.index.remove(&r.id);
        }
    }

    fn match_taker(&mut self, o: &NewOrder, out: &mut Vec<BookEvent>) -> (u64, Stop) {
        let opp = o.side.opposite();
        let lim = limit_bound(o);
        let mut rem = o.qty.0;
        let mut budget = o.quote_budget;
        loop {
            if rem == 0 {
                return (0, Stop::Filled);
            }
            let Some(price) = self.best(opp) else {
                return (rem, Stop::Liquidity);
            };
            if !within(o.side, price, lim) {
                return (rem, Stop::Liquidity);
            }
            let Some(maker) = self.side(opp).get(&price).and_then(|l| l.front()).copied() else {
                return (rem, Stop::Liquidity);
            };
            let t = rem.min(maker.qty).min(budget_lots(budget, price));
            if t == 0 {
                return (rem, Stop::Budget);
            }
            if maker.owner == o.owner {
                if o.stp != Stp::CancelNewest {
                    self.pop_front(opp, price);
                    out.push(BookEvent::Cancelled {
                        id: maker.id,
                        side: opp,
                        price: Some(Price(price)),
                        remaining: Qty(maker.qty),
                        reason: CancelReason::SelfTrade,
                    });
                }
                if o.stp == Stp::CancelOldest {
                    continue;
                }
                out.push(cancelled(o, rem, CancelReason::SelfTrade));
                return (rem, Stop::SelfTrade);
            }
            rem -= t;
            budget = spend(budget, price, t);
            let maker_remaining = maker.qty - t;
            out.push(fill(o, maker.id.0, maker.owner, price, t, maker_remaining));
            if maker_remaining == 0 {
                self.pop_front(opp, price);
            } else if let Some(front) = self.side_mut(opp).get_mut(&price).and_then(|l| l.front_mut()) {
                front.qty = maker_remaining;
            }
        }
    }
}

impl OrderBook for RefBook {
    fn submit(&mut self, o: &NewOrder, out: &mut Vec<BookEvent>) {
        if let Some(ev) = reject_invalid(o) {
            out.push(ev);
            return;
        }
        let opp = o.side.opposite();
        match o.tif {
            TimeInForce::PostOnly => {
                let lim = limit_bound(o);
                if self.best(opp).is_some_and(|b| within(o.side, b, lim)) {
                    out.push(cancelled(o, o.qty.0, CancelReason::PostOnlyWouldCross));
                } else {
                    self.rest(
                        o.side,
                        lim,
                        Resting {
                            id: o.id,
                            owner: o.owner,
                            qty: o.qty.0,
                        },
                    );
                    out.push(BookEvent::Rested {
                        id: o.id,
                        side: o.side,
                        price: Price(lim),
                        qty: o.qty,
                    });
                }
                return;
            }
            TimeInForce::Fok => {
                if self.available_qty(o) < o.qty {
                    out.push(cancelled(o, o.qty.0, CancelReason::FokUnfillable));
                    return;
                }
            }
            TimeInForce::Gtc | TimeInForce::Ioc => {}
        }
        let (rem, stop) = self.match_taker(o, out);
        match stop {
            Stop::Filled | Stop::SelfTrade => {}
            Stop::Budget => out.push(cancelled(o, rem, CancelReason::Unfilled)),
            Stop::Liquidity => match (o.tif, o.limit) {
                (TimeInForce::Gtc, Some(price)) => {
                    self.rest(
                        o.side,
                        price.0,
                        Resting {
                            id: o.id,
                            owner: o.owner,
                            qty: rem,
                        },
                    );
                    out.push(BookEvent::Rested {
                        id: o.id,
                        side: o.side,
                        price,
                        qty: Qty(rem),
                    });
                }
                _ => out.push(cancelled(o, rem, CancelReason::Unfilled)),
            },
        }
    }

    fn cancel(&mut self, id: OrderId, out: &mut Vec<BookEvent>) -> bool {
        let Some((side, price)) = self.index.get(&id).copied() else {
            return false;
        };
        let book = self.side_mut(side);
        let Some(level) = book.get_mut(&price) else {
            return false;
        };
        let Some(pos) = level.iter().position(|r| r.id == id) else {
            return false;
        };
        let Some(r) = level.remove(pos) else { return false };
        if level.is_empty() {
            book.remove(&price);
        }
        self.index.remove(&id);
        out.push(BookEvent::Cancelled {
            id,
            side,
            price: Some(Price(price)),
            remaining: Qty(r.qty),
            reason: CancelReason::User,
        });
        true
    }

    fn best_bid(&self) -> Option<Price> {
        self.best(Side::Buy).map(Price)
    }

    fn best_ask(&self) -> Option<Price> {
        self.best(Side::Sell).map(Price)
    }

    fn order(&self, id: OrderId) -> Option<OrderView> {
        let (side, price) = self.index.get(&id).copied()?;
        let r = self.side(side).get(&price)?.iter().find(|r| r.id == id)?;
        Some(OrderView {
            id,
            owner: r.owner,
            side,
            price: Price(price),
            qty: Qty(r.qty),
        })
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn depth(&self, side: Side, levels: usize, out: &mut Vec<(Price, Qty, u32)>) {
        out.clear();
        for (price, level) in self.levels(side).take(levels) {
            let total = level.iter().map(|r| u128::from(r.qty)).sum::<u128>();
            let count = u32::try_from(level.len()).unwrap_or(u32::MAX);
            out.push((
                Price(*price),
                Qty(u64::try_from(total).unwrap_or(u64::MAX)),
                count,
            ));
        }
    }

    fn level(&self, side: Side, price: Price) -> (Qty, u32) {
        let Some(level) = self.side(side).get(&price.0) else {
            return (Qty(0), 0);
        };
        let total = level.iter().map(|r| u128::from(r.qty)).sum::<u128>();
        (
            Qty(u64::try_from(total).unwrap_or(u64::MAX)),
            u32::try_from(level.len()).unwrap_or(u32::MAX),
        )
    }

    fn available_qty(&self, o: &NewOrder) -> Qty {
        let lim = limit_bound(o);
        let mut acc = 0u64;
        let mut budget = o.quote_budget;
        for (&price, level) in self.levels(o.side.opposite()) {
            if !within(o.side, price, lim) {
                break;
            }
            for maker in level {
                let t = (o.qty.0 - acc).min(maker.qty).min(budget_lots(budget, price));
                if t == 0 {
                    return Qty(acc);
                }
                if maker.owner == o.owner {
                    if o.stp == Stp::CancelOldest {
                        continue;
                    }
                    return Qty(acc);
                }
                acc += t;
                budget = spend(budget, price, t);
                if acc == o.qty.0 {
                    return Qty(acc);
                }
            }
        }
        Qty(acc)
    }

    fn orders(&self) -> Vec<OrderView> {
        let mut v = Vec::with_capacity(self.index.len());
        for side in [Side::Buy, Side::Sell] {
            for (&price, level) in self.levels(side) {
                v.extend(level.iter().map(|r| OrderView {
                    id: r.id,
                    owner: r.owner,
                    side,
                    price: Price(price),
                    qty: Qty(r.qty),
                }));
            }
        }
        v
    }

    fn restore(&mut self, o: OrderView) {
        if o.qty.0 == 0 || o.price.0 == 0 {
            return;
        }
        self.rest(
            o.side,
            o.price.0,
            Resting {
                id: o.id,
                owner: o.owner,
                qty: o.qty.0,
            },
        );
    }
}
