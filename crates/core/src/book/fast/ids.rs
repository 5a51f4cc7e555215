//! Order id -> slab slot.
//!
//! The engine assigns ids sequentially, so the ids of resting orders mostly lie in a window of
//! recent ids. A direct-mapped ring (`id & mask`) therefore finds almost every order with one
//! array read and one compare against the id stored in the slot; an id whose ring entry is held by
//! another live order goes to an overflow hash map. Correct for arbitrary `u64` ids; the ring grows
//! (rebuilt from the slab) while the overflow stays large compared with it.
//!
//! A lookup costs two dependent memory reads, the ring entry and then the slot. Layouts that save
//! the first (each order in the slot `id & mask` itself) or shrink the slot to 32 bytes were
//! measured slower on the standard stream: see "Decisions worth knowing" in ARCHITECTURE.md.

use rustc_hash::FxHashMap;

use super::{Slot, NIL};

const RING_BITS_MIN: u32 = 12;
const RING_BITS_MAX: u32 = 22;
/// Grow the ring when the overflow holds more than `ring.len() >> OVERFLOW_SHIFT` ids.
const OVERFLOW_SHIFT: u32 = 6;

#[derive(Clone, Debug)]
pub(super) struct IdIndex {
    /// Slot of a live order whose `id & mask` is the position, or `NIL`.
    ring: Vec<u32>,
    mask: u64,
    /// Live orders whose ring position was taken.
    overflow: FxHashMap<u64, u32>,
}

impl IdIndex {
    pub(super) fn new() -> Self {
        let len = 1usize << RING_BITS_MIN;
        Self {
            ring: vec![NIL; len],
            mask: (len - 1) as u64,
            overflow: FxHashMap::default(),
        }
    }

    #[inline]
    fn pos(&self, id: u64) -> usize {
        // The mask is below the ring length, which is a `usize`.
        (id & self.mask) as usize
    }

    /// The slot of the live order `id`.
    #[inline]
    pub(super) fn get(&self, id: u64, slots: &[Slot]) -> Option<u32> {
        let s = self.ring[self.pos(id)];
        if s != NIL && slots.get(s as usize).is_some_and(|o| o.id == id) {
            return Some(s);
        }
        if self.overflow.is_empty() {
            None
        } else {
            self.overflow.get(&id).copied()
        }
    }

    /// Record that live order `id` sits in `slot`.
    #[inline]
    pub(super) fn insert(&mut self, id: u64, slot: u32, slots: &[Slot]) {
        let p = self.pos(id);
        if self.ring[p] == NIL {
            self.ring[p] = slot;
            return;
        }
        self.overflow.insert(id, slot);
        if self.overflow.len() > (self.ring.len() >> OVERFLOW_SHIFT)
            && self.ring.len() < (1usize << RING_BITS_MAX)
        {
            self.grow(slots);
        }
    }

    /// Forget live order `id`, which sits in `slot`.
    #[inline]
    pub(super) fn remove(&mut self, id: u64, slot: u32) {
        let p = self.pos(id);
        if self.ring[p] == slot {
            self.ring[p] = NIL;
        } else {
            self.overflow.remove(&id);
        }
    }

    /// Double the ring (at least) and re-insert every live order.
    #[cold]
    fn grow(&mut self, slots: &[Slot]) {
        let len = self.ring.len() * 2;
        self.ring.clear();
        self.ring.resize(len, NIL);
        self.mask = (len - 1) as u64;
        self.overflow.clear();
        for (s, o) in slots.iter().enumerate() {
            if o.qty != 0 {
                let p = self.pos(o.id);
                // Slot indices fit in u32: the slab never grows past `NIL`.
                let s = s as u32;
                if self.ring[p] == NIL {
                    self.ring[p] = s;
                } else {
                    self.overflow.insert(o.id, s);
                }
            }
        }
    }

    pub(super) fn ring_len(&self) -> usize {
        self.ring.len()
    }

    pub(super) fn overflow_len(&self) -> usize {
        self.overflow.len()
    }
}
