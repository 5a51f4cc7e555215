//! Order slots, placed by order id.
//!
//! An order rests in its id's *home* slot, `id & mask`, when that slot is free. The engine assigns
//! ids sequentially, so the ids of resting orders mostly lie in a window of recent ids and rarely
//! share a home: finding an order by id is then one read of the order's own slot, with no index
//! to read first (a cancel touches the order and its two queue neighbours, nothing else). An
//! order whose home is held by another live order rests in a *spill* slot after the home slots,
//! found through a hash map and reused through a free list. Correct for arbitrary `u64` ids.
//!
//! The home area starts small and doubles while the spill holds more than
//! `home >> SPILL_SHIFT` orders, up to `HOME_BITS_MAX` bits and to `HOME_PER_LIVE_MAX` home slots
//! per live order (ids that collide at every size cannot make it grow without bound). Growing
//! moves every live order to its new place and returns the old-to-new slot map, with which the
//! caller renumbers its own references (the ladders' level heads and tails).

use rustc_hash::FxHashMap;

use super::{Slot, NIL, SLOTS_MAX};

const HOME_BITS_MIN: u32 = 10;
const HOME_BITS_MAX: u32 = 20;
/// Grow the home area when the spill holds more than `home >> SPILL_SHIFT` orders.
const SPILL_SHIFT: u32 = 6;
/// The home area does not grow beyond this many slots per live order.
const HOME_PER_LIVE_MAX: usize = 8;

#[derive(Clone, Debug)]
pub(super) struct Slab {
    /// `mask + 1` home slots, then the spill slots. A free slot has `qty == 0`; a free spill slot
    /// links the spill free list through `next`.
    pub(super) slots: Vec<Slot>,
    mask: u64,
    /// Head of the spill free list.
    spill_free: u32,
    /// Id -> spill slot of the live orders that rest in the spill.
    spill: FxHashMap<u64, u32>,
    live: usize,
}

impl Slab {
    pub(super) fn new() -> Self {
        let home = 1usize << HOME_BITS_MIN;
        Self {
            slots: vec![Slot::FREE; home],
            mask: (home - 1) as u64,
            spill_free: NIL,
            spill: FxHashMap::default(),
            live: 0,
        }
    }

    /// The home slot of `id`.
    #[inline]
    fn home(&self, id: u64) -> usize {
        // The mask is below the home area's length, which is a `usize`.
        (id & self.mask) as usize
    }

    #[inline]
    fn home_len(&self) -> usize {
        // The home area's length is a `usize`.
        self.mask as usize + 1
    }

    /// The slot of the live order `id`.
    #[inline]
    pub(super) fn get(&self, id: u64) -> Option<u32> {
        let h = self.home(id);
        let o = &self.slots[h];
        if o.qty != 0 && o.id == id {
            // Below the home area's length, which fits in u32 (at most 2^HOME_BITS_MAX).
            return Some(h as u32);
        }
        if self.spill.is_empty() {
            None
        } else {
            self.spill.get(&id).copied()
        }
    }

    /// Whether the spill has outgrown the home area and the home area may still grow.
    #[inline]
    pub(super) fn wants_growth(&self) -> bool {
        let home = self.home_len();
        self.spill.len() > home >> SPILL_SHIFT
            && home < 1usize << HOME_BITS_MAX
            && home < self.live.saturating_mul(HOME_PER_LIVE_MAX)
            // The grown slab (twice the home area plus at most the old spill) stays addressable.
            && self.slots.len().saturating_add(home) <= SLOTS_MAX
    }

    /// Place the live order `o` (`o.qty != 0`) in its home slot or in the spill; `None` if the
    /// spill is full.
    #[inline]
    pub(super) fn place(&mut self, o: Slot) -> Option<u32> {
        debug_assert!(o.qty != 0, "a live order has a quantity");
        let h = self.home(o.id);
        if self.slots[h].qty == 0 {
            self.slots[h] = o;
            self.live += 1;
            // Below the home area's length, which fits in u32.
            return Some(h as u32);
        }
        let s = if self.spill_free != NIL {
            let s = self.spill_free;
            self.spill_free = self.slots[s as usize].next;
            self.slots[s as usize] = o;
            s
        } else {
            if self.slots.len() >= SLOTS_MAX {
                return None;
            }
            self.slots.push(o);
            // Below SLOTS_MAX, checked above.
            (self.slots.len() - 1) as u32
        };
        self.spill.insert(o.id, s);
        self.live += 1;
        Some(s)
    }

    /// Free slot `s`, whose order has left the book (already unlinked from its level).
    #[inline]
    pub(super) fn release(&mut self, s: u32) {
        let home = self.home_len();
        let o = &mut self.slots[s as usize];
        o.qty = 0;
        if s as usize >= home {
            self.spill.remove(&o.id);
            o.next = self.spill_free;
            self.spill_free = s;
        }
        self.live -= 1;
    }

    /// Double the home area and move every live order to its new slot. Returns the map from old
    /// slot to new slot (`NIL` for a slot that held no order); the queue links inside the slab are
    /// already renumbered.
    #[cold]
    pub(super) fn grow(&mut self) -> Vec<u32> {
        let old = std::mem::take(&mut self.slots);
        let home = self.home_len() * 2;
        self.mask = (home - 1) as u64;
        self.slots = vec![Slot::FREE; home];
        self.spill.clear();
        self.spill_free = NIL;
        self.live = 0;
        let mut map = vec![NIL; old.len()];
        for (m, o) in map.iter_mut().zip(&old) {
            if o.qty != 0 {
                // `wants_growth` keeps the new slab within SLOTS_MAX, so every order finds a slot.
                let Some(s) = self.place(*o) else {
                    unreachable!("the grown slab has room for every live order");
                };
                *m = s;
            }
        }
        let renumber = |s: u32| if s == NIL { NIL } else { map[s as usize] };
        for o in &mut self.slots {
            if o.qty != 0 {
                o.prev = renumber(o.prev);
                o.next = renumber(o.next);
            }
        }
        map
    }

    pub(super) fn live(&self) -> usize {
        self.live
    }

    pub(super) fn home_slots(&self) -> usize {
        self.home_len()
    }

    pub(super) fn spilled(&self) -> usize {
        self.spill.len()
    }
}
