//! The fast order book.
//!
//! - Orders live in a slab (`Vec<Slot>`) reused through a free list: no allocation per order once
//!   the slab has grown to the book's peak size.
//! - Each price level is a FIFO queue linked through the slots (`prev` / `next` slot indices):
//!   O(1) append, O(1) cancel anywhere by unlinking, exact time priority.
//! - Price levels: see `ladder` (a window array indexed by tick offset with a bitmap of
//!   non-empty levels, and a sorted map for prices outside the window).
//! - Order id -> slot: see `ids` (a direct-mapped ring exploiting sequential ids, with a hash
//!   map for the rest).

mod ids;
mod ladder;

use std::ops::ControlFlow;

use ids::IdIndex;
use ladder::{Ladder, Level};

use super::{
    budget_lots, cancelled, fill, limit_bound, reject_invalid, spend, within, BookEvent, CancelReason,
    NewOrder, OrderBook, OrderId, OrderView, OwnerId, Price, Qty, Side, Stop, Stp, TimeInForce,
};

/// "No slot": the end of a queue, an empty ring entry, the end of the free list.
const NIL: u32 = u32::MAX;
/// The slab never holds more slots than this, so every index fits in a `u32` below `NIL`.
const SLOTS_MAX: usize = NIL as usize;
/// Default window width in ticks.
const WINDOW_TICKS_DEFAULT: u64 = 4096;
const WINDOW_TICKS_MAX: u64 = 1 << 20;

/// One order. A free slot has `qty == 0` and links the free list through `next`.
#[derive(Clone, Copy, Debug)]
struct Slot {
    id: u64,
    qty: u64,
    price: u64,
    owner: u32,
    prev: u32,
    next: u32,
    side: Side,
}

#[inline]
fn side_ix(side: Side) -> usize {
    match side {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}

/// Sizes of a [`FastBook`]'s internal structures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastBookStats {
    /// Slab slots ever allocated (live + free): the book's peak size.
    pub slots: usize,
    /// Resting orders.
    pub live: usize,
    /// Entries of the direct-mapped id ring.
    pub id_ring: usize,
    /// Ids held in the overflow hash map instead of the ring.
    pub id_overflow: usize,
    /// Non-empty levels kept in the sorted maps outside the price windows.
    pub levels_outside_window: usize,
    /// Times a price window moved while it held levels.
    pub recenters: u64,
}

/// Slab + intrusive FIFO levels + price-window ladder + sequential-id index.
#[derive(Clone, Debug)]
pub struct FastBook {
    slots: Vec<Slot>,
    /// Head of the free list.
    free: u32,
    live: usize,
    ids: IdIndex,
    /// Bids, asks.
    ladders: [Ladder; 2],
}

impl Default for FastBook {
    fn default() -> Self {
        Self::new()
    }
}

impl FastBook {
    pub fn new() -> Self {
        Self::with_window(WINDOW_TICKS_DEFAULT)
    }

    /// A book whose price window spans `ticks` (rounded up to a power of two in 64..=2^20).
    pub fn with_window(ticks: u64) -> Self {
        let width = ticks.clamp(64, WINDOW_TICKS_MAX).next_power_of_two();
        Self {
            slots: Vec::new(),
            free: NIL,
            live: 0,
            ids: IdIndex::new(),
            ladders: [Ladder::new(Side::Buy, width), Ladder::new(Side::Sell, width)],
        }
    }

    /// Reserve slab room for `orders` resting orders.
    pub fn reserve(&mut self, orders: usize) {
        self.slots
            .reserve(orders.min(SLOTS_MAX).saturating_sub(self.slots.len()));
    }

    /// Number of non-empty price levels on `side`.
    pub fn levels(&self, side: Side) -> usize {
        self.ladders[side_ix(side)].levels()
    }

    /// Sizes of the internal structures, for monitoring.
    pub fn stats(&self) -> FastBookStats {
        FastBookStats {
            slots: self.slots.len(),
            live: self.live,
            id_ring: self.ids.ring_len(),
            id_overflow: self.ids.overflow_len(),
            levels_outside_window: self.ladders[0].outside_len() + self.ladders[1].outside_len(),
            recenters: self.ladders[0].recenters() + self.ladders[1].recenters(),
        }
    }

    /// Rest an order at the back of its level; `false` if the slab is full.
    fn rest(&mut self, id: u64, owner: u32, side: Side, price: u64, qty: u64) -> bool {
        debug_assert!(
            self.ids.get(id, &self.slots).is_none(),
            "duplicate resting id {id}"
        );
        let slot = Slot {
            id,
            qty,
            price,
            owner,
            prev: NIL,
            next: NIL,
            side,
        };
        let s = if self.free != NIL {
            let s = self.free;
            self.free = self.slots[s as usize].next;
            self.slots[s as usize] = slot;
            s
        } else {
            if self.slots.len() >= SLOTS_MAX {
                return false;
            }
            self.slots.push(slot);
            // Below SLOTS_MAX, checked above.
            (self.slots.len() - 1) as u32
        };
        self.ladders[side_ix(side)].push_back(&mut self.slots, s);
        self.ids.insert(id, s, &self.slots);
        self.live += 1;
        true
    }

    fn match_taker(&mut self, o: &NewOrder, lim: u64, out: &mut Vec<BookEvent>) -> (u64, Stop) {
        let Self {
            slots,
            free,
            live,
            ids,
            ladders,
        } = self;
        let opp = o.side.opposite();
        let ladder = &mut ladders[side_ix(opp)];
        let mut rem = o.qty.0;
        let mut budget = o.quote_budget;
        loop {
            let Some(price) = ladder.best else {
                return (rem, Stop::Liquidity);
            };
            if !within(o.side, price, lim) {
                return (rem, Stop::Liquidity);
            }
            let mut cap = budget_lots(budget, price);
            if cap == 0 {
                return (rem, Stop::Budget);
            }
            let Some(level) = ladder.level_mut(price) else {
                return (rem, Stop::Liquidity);
            };
            let mut traded = 0u64;
            let mut stop = None;
            while level.count > 0 {
                let s = level.head;
                let m = &mut slots[s as usize];
                if m.owner == o.owner.0 {
                    if o.stp != Stp::CancelNewest {
                        let (id, qty) = (m.id, m.qty);
                        level.unlink(slots, s);
                        release(slots, free, ids, live, s);
                        out.push(BookEvent::Cancelled {
                            id: OrderId(id),
                            side: opp,
                            price: Some(Price(price)),
                            remaining: Qty(qty),
                            reason: CancelReason::SelfTrade,
                        });
                    }
                    if o.stp == Stp::CancelOldest {
                        continue;
                    }
                    out.push(cancelled(o, rem, CancelReason::SelfTrade));
                    stop = Some(Stop::SelfTrade);
                    break;
                }
                let t = rem.min(m.qty).min(cap);
                m.qty -= t;
                rem -= t;
                cap -= t;
                traded += t;
                level.qty -= u128::from(t);
                let maker_remaining = m.qty;
                out.push(fill(o, m.id, OwnerId(m.owner), price, t, maker_remaining));
                if maker_remaining == 0 {
                    level.unlink(slots, s);
                    release(slots, free, ids, live, s);
                }
                if rem == 0 {
                    stop = Some(Stop::Filled);
                    break;
                }
                if cap == 0 {
                    break;
                }
            }
            budget = spend(budget, price, traded);
            if level.count == 0 {
                ladder.emptied(price);
            }
            if let Some(stop) = stop {
                return (rem, stop);
            }
        }
    }

    fn view(&self, s: u32) -> Option<OrderView> {
        let o = self.slots.get(s as usize)?;
        Some(OrderView {
            id: OrderId(o.id),
            owner: OwnerId(o.owner),
            side: o.side,
            price: Price(o.price),
            qty: Qty(o.qty),
        })
    }

    /// Visit the orders of a level in FIFO order until `f` breaks.
    fn for_each_order<B>(&self, level: &Level, mut f: impl FnMut(&Slot) -> ControlFlow<B>) -> ControlFlow<B> {
        let mut s = level.head;
        for _ in 0..level.count {
            let Some(o) = self.slots.get(s as usize) else {
                break;
            };
            f(o)?;
            s = o.next;
        }
        ControlFlow::Continue(())
    }
}

/// Return slot `s` (already unlinked from its level) to the free list and forget its id.
#[inline]
fn release(slots: &mut [Slot], free: &mut u32, ids: &mut IdIndex, live: &mut usize, s: u32) {
    let o = &mut slots[s as usize];
    ids.remove(o.id, s);
    o.qty = 0;
    o.next = *free;
    *free = s;
    *live -= 1;
}

impl OrderBook for FastBook {
    fn submit(&mut self, o: &NewOrder, out: &mut Vec<BookEvent>) {
        if let Some(ev) = reject_invalid(o) {
            out.push(ev);
            return;
        }
        let lim = limit_bound(o);
        let crosses = self.ladders[side_ix(o.side.opposite())]
            .best
            .is_some_and(|b| within(o.side, b, lim));
        match o.tif {
            TimeInForce::PostOnly => {
                if crosses {
                    out.push(cancelled(o, o.qty.0, CancelReason::PostOnlyWouldCross));
                } else if self.rest(o.id.0, o.owner.0, o.side, lim, o.qty.0) {
                    out.push(BookEvent::Rested {
                        id: o.id,
                        side: o.side,
                        price: Price(lim),
                        qty: o.qty,
                    });
                } else {
                    out.push(cancelled(o, o.qty.0, CancelReason::Engine));
                }
                return;
            }
            TimeInForce::Fok => {
                if !crosses || self.available_qty(o) < o.qty {
                    out.push(cancelled(o, o.qty.0, CancelReason::FokUnfillable));
                    return;
                }
            }
            TimeInForce::Gtc | TimeInForce::Ioc => {}
        }
        let (rem, stop) = if crosses {
            self.match_taker(o, lim, out)
        } else {
            (o.qty.0, Stop::Liquidity)
        };
        match stop {
            Stop::Filled | Stop::SelfTrade => {}
            Stop::Budget => out.push(cancelled(o, rem, CancelReason::Unfilled)),
            Stop::Liquidity => match (o.tif, o.limit) {
                (TimeInForce::Gtc, Some(price)) => {
                    if self.rest(o.id.0, o.owner.0, o.side, price.0, rem) {
                        out.push(BookEvent::Rested {
                            id: o.id,
                            side: o.side,
                            price,
                            qty: Qty(rem),
                        });
                    } else {
                        out.push(cancelled(o, rem, CancelReason::Engine));
                    }
                }
                _ => out.push(cancelled(o, rem, CancelReason::Unfilled)),
            },
        }
    }

    fn cancel(&mut self, id: OrderId, out: &mut Vec<BookEvent>) -> bool {
        let Some(s) = self.ids.get(id.0, &self.slots) else {
            return false;
        };
        let o = self.slots[s as usize];
        self.ladders[side_ix(o.side)].remove(&mut self.slots, s, o.price);
        release(&mut self.slots, &mut self.free, &mut self.ids, &mut self.live, s);
        out.push(BookEvent::Cancelled {
            id,
            side: o.side,
            price: Some(Price(o.price)),
            remaining: Qty(o.qty),
            reason: CancelReason::User,
        });
        true
    }

    fn best_bid(&self) -> Option<Price> {
        self.ladders[0].best.map(Price)
    }

    fn best_ask(&self) -> Option<Price> {
        self.ladders[1].best.map(Price)
    }

    fn order(&self, id: OrderId) -> Option<OrderView> {
        self.view(self.ids.get(id.0, &self.slots)?)
    }

    fn len(&self) -> usize {
        self.live
    }

    fn depth(&self, side: Side, levels: usize, out: &mut Vec<(Price, Qty, u32)>) {
        out.clear();
        if levels == 0 {
            return;
        }
        let _ = self.ladders[side_ix(side)].for_each_level(|p, l| {
            let qty = u64::try_from(l.qty).unwrap_or(u64::MAX);
            out.push((Price(p), Qty(qty), l.count));
            if out.len() >= levels {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
    }

    fn level(&self, side: Side, price: Price) -> (Qty, u32) {
        match self.ladders[side_ix(side)].level(price.0) {
            Some(l) if l.count > 0 => (Qty(u64::try_from(l.qty).unwrap_or(u64::MAX)), l.count),
            _ => (Qty(0), 0),
        }
    }

    fn available_qty(&self, o: &NewOrder) -> Qty {
        let lim = limit_bound(o);
        let mut acc = 0u64;
        let mut budget = o.quote_budget;
        let _ = self.ladders[side_ix(o.side.opposite())].for_each_level(|price, level| {
            if !within(o.side, price, lim) {
                return ControlFlow::Break(());
            }
            self.for_each_order(level, |m| {
                let t = (o.qty.0 - acc).min(m.qty).min(budget_lots(budget, price));
                if t == 0 {
                    return ControlFlow::Break(());
                }
                if m.owner == o.owner.0 {
                    return if o.stp == Stp::CancelOldest {
                        ControlFlow::Continue(())
                    } else {
                        ControlFlow::Break(())
                    };
                }
                acc += t;
                budget = spend(budget, price, t);
                if acc == o.qty.0 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
        });
        Qty(acc)
    }

    fn orders(&self) -> Vec<OrderView> {
        let mut v = Vec::with_capacity(self.live);
        for ladder in &self.ladders {
            let _ = ladder.for_each_level(|_, level| {
                self.for_each_order(level, |o| {
                    v.push(OrderView {
                        id: OrderId(o.id),
                        owner: OwnerId(o.owner),
                        side: o.side,
                        price: Price(o.price),
                        qty: Qty(o.qty),
                    });
                    ControlFlow::<()>::Continue(())
                })
            });
        }
        v
    }

    fn restore(&mut self, o: OrderView) {
        if o.qty.0 == 0 || o.price.0 == 0 {
            return;
        }
        // A full slab drops the order; the restored book then differs, which its state hash shows.
        let _ = self.rest(o.id.0, o.owner.0, o.side, o.price.0, o.qty.0);
    }
}
