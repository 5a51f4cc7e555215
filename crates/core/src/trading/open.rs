//! Open (resting or pending) orders: the records in a slab whose freed slots are reused last
//! in, first out, found by id through a small map from id to slot.
//!
//! An order record is 240 bytes. Kept by value in a hash map, every new order is written to a
//! random bucket of a table several megabytes large, and the map moves whole records whenever
//! it grows. Here the map holds only id → slot (small enough to stay in cache), and a new order
//! takes the slot the last finished order left, which is still in cache.

use super::Order;
use crate::book::OrderId;
use rustc_hash::FxHashMap;

#[derive(Clone, Debug, Default)]
pub(super) struct OpenOrders {
    slots: Vec<Order>,
    /// Slots no order uses, the most recently freed last.
    free: Vec<u32>,
    by_id: FxHashMap<OrderId, u32>,
}

impl OpenOrders {
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn get(&self, id: &OrderId) -> Option<&Order> {
        self.by_id.get(id).map(|&s| &self.slots[s as usize])
    }

    pub(super) fn get_mut(&mut self, id: &OrderId) -> Option<&mut Order> {
        self.by_id.get(id).map(|&s| &mut self.slots[s as usize])
    }

    /// Files an order that is not open yet (an open order's id is never filed twice).
    pub(super) fn insert(&mut self, id: OrderId, o: Order) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = o;
                s
            }
            None => {
                let s = u32::try_from(self.slots.len()).expect("trading: open orders fit in u32 slots");
                self.slots.push(o);
                s
            }
        };
        let before = self.by_id.insert(id, slot);
        assert!(before.is_none(), "trading: order {} is already open", id.0);
    }

    pub(super) fn remove(&mut self, id: &OrderId) -> Option<Order> {
        let s = self.by_id.remove(id)?;
        self.free.push(s);
        Some(self.slots[s as usize])
    }

    /// In no particular order (every caller sorts or sums).
    pub(super) fn values(&self) -> impl Iterator<Item = &Order> + '_ {
        self.by_id.values().map(|&s| &self.slots[s as usize])
    }
}

impl std::ops::Index<&OrderId> for OpenOrders {
    type Output = Order;
    fn index(&self, id: &OrderId) -> &Order {
        self.get(id).expect("trading: the order is open")
    }
}
