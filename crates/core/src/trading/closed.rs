//! The history of done orders: the last [`CLOSED_ORDERS_KEPT_MAX`] of them in a fixed ring,
//! found by id through a direct-mapped index.
//!
//! Order ids are handed out consecutively and most orders end soon after they start, so the
//! ids being filed at any moment are close together: indexing a slot table by the id's low
//! bits touches neighbouring entries, with no hashing and no insert-and-remove churn per order
//! (what a hash map keyed by id costs on every close). A slot holds the ring position of the
//! order filed last under it; a position older than the ring's window is stale and ignored. An
//! order that lived so long that a newer one took its slot while it is still kept moves to a
//! small spill map, so every kept order stays findable.

use super::{Order, CLOSED_ORDERS_KEPT_MAX};
use crate::book::OrderId;
use rustc_hash::FxHashMap;

/// Slots in the direct-mapped index: a power of two above the ring's length, so that a slot is
/// taken again only by an id at least this far from the one before.
const SLOTS: usize = 1 << 18;
const _: () = assert!(SLOTS > CLOSED_ORDERS_KEPT_MAX && SLOTS.is_power_of_two());

#[derive(Clone, Debug, Default)]
pub(super) struct ClosedOrders {
    /// Position `p` sits at `p % CLOSED_ORDERS_KEPT_MAX`; grows up to that length, then each
    /// new order overwrites the oldest.
    ring: Vec<Order>,
    /// Orders ever filed: the position of the next one.
    total: u64,
    /// `id % SLOTS` → position + 1 of the order filed last under that slot (0: none). Empty
    /// until the first order is filed.
    slots: Vec<u64>,
    /// Kept orders whose slot a newer kept order took: id → position.
    spill: FxHashMap<OrderId, u64>,
}

impl ClosedOrders {
    /// The position of the oldest order still kept.
    fn first(&self) -> u64 {
        self.total - self.ring.len() as u64
    }

    fn kept(&self, pos: u64) -> bool {
        pos >= self.first() && pos < self.total
    }

    fn at(&self, pos: u64) -> &Order {
        &self.ring[(pos % CLOSED_ORDERS_KEPT_MAX as u64) as usize]
    }

    fn slot(id: OrderId) -> usize {
        (id.0 % SLOTS as u64) as usize
    }

    /// Files a done order, dropping the oldest when the ring is full.
    pub(super) fn push(&mut self, o: Order) {
        if self.slots.is_empty() {
            self.slots = vec![0; SLOTS];
        }
        let pos = self.total;
        let slot = Self::slot(o.id);
        let prev = self.slots[slot];
        if prev != 0 && self.kept(prev - 1) {
            // A kept order under the same slot (one at least `SLOTS` ids away): keep it findable.
            let older = self.at(prev - 1).id;
            if older != o.id {
                self.spill.insert(older, prev - 1);
            }
        }
        if self.ring.len() < CLOSED_ORDERS_KEPT_MAX {
            self.ring.push(o);
        } else {
            let i = (pos % CLOSED_ORDERS_KEPT_MAX as u64) as usize;
            let gone = std::mem::replace(&mut self.ring[i], o);
            if !self.spill.is_empty() {
                self.spill.remove(&gone.id);
            }
        }
        self.slots[slot] = pos + 1;
        self.total += 1;
    }

    pub(super) fn get(&self, id: OrderId) -> Option<&Order> {
        let check = |pos: u64| Some(self.at(pos)).filter(|o| self.kept(pos) && o.id == id);
        let prev = *self.slots.get(Self::slot(id))?;
        if prev != 0 {
            if let Some(o) = check(prev - 1) {
                return Some(o);
            }
        }
        self.spill.get(&id).and_then(|&pos| check(pos))
    }

    /// Newest first.
    pub(super) fn iter_rev(&self) -> impl Iterator<Item = &Order> + '_ {
        (self.first()..self.total).rev().map(|p| self.at(p))
    }

    /// Oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Order> + '_ {
        (self.first()..self.total).map(|p| self.at(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::{Price, Qty};
    use crate::book::{Side, Stp, TimeInForce};
    use crate::market::MarketId;
    use crate::money::{AccountId, Amount, UserId};
    use crate::trading::{OrderStatus, OrderType};

    fn order(id: u64) -> Order {
        Order {
            id: OrderId(id),
            market: MarketId(0),
            user: UserId(id % 7),
            client_id: None,
            side: Side::Buy,
            order_type: OrderType::Limit {
                price: Amount(1),
                tif: TimeInForce::Gtc,
            },
            stp: Stp::CancelNewest,
            limit: Price(1),
            qty: Qty(1),
            filled: Qty(0),
            filled_notional: 0,
            fees: 0,
            base_account: AccountId(0),
            quote_account: AccountId(1),
            held: 0,
            maker_bps: 0,
            taker_bps: 0,
            status: OrderStatus::Filled,
            created_ns: 0,
            updated_ns: 0,
            stop: None,
            expires_ns: None,
        }
    }

    /// Against a plain list of the last `CLOSED_ORDERS_KEPT_MAX`: ids filed far apart (every
    /// slot collision case) and in shuffled order stay findable exactly while they are kept.
    #[test]
    fn finds_exactly_the_kept_orders() {
        let mut c = ClosedOrders::default();
        let mut all: Vec<u64> = Vec::new();
        let mut seen = rustc_hash::FxHashSet::default();
        let n = CLOSED_ORDERS_KEPT_MAX as u64 * 3;
        for i in 0..n {
            // Mostly recent ids, every 97th one an id from far back (a long-lived order), some
            // exactly `SLOTS` apart from a recent one.
            let id = match i % 97 {
                0 => i / 2 + 1,
                1 if i > SLOTS as u64 => i - SLOTS as u64 + 5_000_000,
                _ => i + 5_000_000,
            };
            if !seen.insert(id) {
                continue;
            }
            c.push(order(id));
            all.push(id);
            if i % 10_007 == 0 || i + 1 == n {
                let kept = &all[all.len().saturating_sub(CLOSED_ORDERS_KEPT_MAX)..];
                assert_eq!(c.ring.len(), kept.len());
                assert!(c.iter().map(|o| o.id.0).eq(kept.iter().copied()));
                assert!(c.iter_rev().map(|o| o.id.0).eq(kept.iter().rev().copied()));
                for &id in kept.iter().step_by(13).chain(kept.iter().rev().take(50)) {
                    assert_eq!(c.get(OrderId(id)).map(|o| o.id.0), Some(id), "kept {id}");
                }
                for &id in all[..all.len() - kept.len()].iter().rev().take(2_000) {
                    assert!(c.get(OrderId(id)).is_none(), "dropped {id} still found");
                }
            }
        }
        assert!(c.spill.len() <= CLOSED_ORDERS_KEPT_MAX);
    }
}
