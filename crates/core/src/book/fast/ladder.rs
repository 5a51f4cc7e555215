//! The price levels of one side.
//!
//! Levels whose price lies in a window `[base, base + width)` live in a flat array indexed by
//! tick offset, with a two-level bitmap of the non-empty ones (a leaf bit per level, a top bit per
//! non-zero leaf word) to find the next non-empty level in a few word operations. Levels outside
//! the window live in a `BTreeMap`. The window follows the market: when the best price leaves it,
//! it is re-centred on the best price (at most once per `width` insertions, so the cost of moving
//! levels stays amortised), and an empty window jumps to the first price inserted outside it.
//!
//! Each level is a FIFO queue of slab slots linked through `Slot::prev` / `Slot::next`.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use super::{Slot, NIL};
use crate::book::Side;

/// One price level: an intrusive FIFO of slots. Empty iff `count == 0` (then `head`/`tail` are
/// meaningless).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Level {
    /// Sum of the remaining quantities.
    pub(super) qty: u128,
    pub(super) head: u32,
    pub(super) tail: u32,
    pub(super) count: u32,
}

impl Level {
    /// Unlink `s` (which is in this level) from the queue.
    #[inline]
    pub(super) fn unlink(&mut self, slots: &mut [Slot], s: u32) {
        let o = slots[s as usize];
        if o.prev == NIL {
            self.head = o.next;
        } else {
            slots[o.prev as usize].next = o.next;
        }
        if o.next == NIL {
            self.tail = o.prev;
        } else {
            slots[o.next as usize].prev = o.prev;
        }
        self.count -= 1;
        self.qty -= u128::from(o.qty);
    }

    /// Append `s` at the back of the queue.
    #[inline]
    fn push_back(&mut self, slots: &mut [Slot], s: u32) {
        let qty = slots[s as usize].qty;
        if self.count == 0 {
            self.head = s;
            slots[s as usize].prev = NIL;
        } else {
            slots[self.tail as usize].next = s;
            slots[s as usize].prev = self.tail;
        }
        slots[s as usize].next = NIL;
        self.tail = s;
        self.count += 1;
        self.qty += u128::from(qty);
    }
}

/// A bitmap with a summary word per 64 leaf words.
#[derive(Clone, Debug)]
struct Bits {
    leaf: Vec<u64>,
    top: Vec<u64>,
}

impl Bits {
    fn new(bits: usize) -> Self {
        let words = bits.div_ceil(64);
        Self {
            leaf: vec![0; words],
            top: vec![0; words.div_ceil(64)],
        }
    }

    #[inline]
    fn set(&mut self, i: usize) {
        let w = i >> 6;
        self.leaf[w] |= 1 << (i & 63);
        self.top[w >> 6] |= 1 << (w & 63);
    }

    #[inline]
    fn clear(&mut self, i: usize) {
        let w = i >> 6;
        self.leaf[w] &= !(1 << (i & 63));
        if self.leaf[w] == 0 {
            self.top[w >> 6] &= !(1 << (w & 63));
        }
    }

    /// The lowest set bit `>= i`.
    #[inline]
    fn next_ge(&self, i: usize) -> Option<usize> {
        let w = i >> 6;
        let m = *self.leaf.get(w)? & (u64::MAX << (i & 63));
        if m != 0 {
            return Some((w << 6) | m.trailing_zeros() as usize);
        }
        let w = w + 1;
        let mut t = w >> 6;
        let mut tm = *self.top.get(t)? & (u64::MAX << (w & 63));
        loop {
            if tm != 0 {
                let lw = (t << 6) | tm.trailing_zeros() as usize;
                return Some((lw << 6) | self.leaf[lw].trailing_zeros() as usize);
            }
            t += 1;
            tm = *self.top.get(t)?;
        }
    }

    /// The highest set bit `<= i`.
    #[inline]
    fn prev_le(&self, i: usize) -> Option<usize> {
        let w = i >> 6;
        let m = *self.leaf.get(w)? & (u64::MAX >> (63 - (i & 63)));
        if m != 0 {
            return Some((w << 6) | (63 - m.leading_zeros() as usize));
        }
        let w = w.checked_sub(1)?;
        let mut t = w >> 6;
        let mut tm = self.top[t] & (u64::MAX >> (63 - (w & 63)));
        loop {
            if tm != 0 {
                let lw = (t << 6) | (63 - tm.leading_zeros() as usize);
                return Some((lw << 6) | (63 - self.leaf[lw].leading_zeros() as usize));
            }
            t = t.checked_sub(1)?;
            tm = self.top[t];
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Ladder {
    side: Side,
    /// Price of `win[0]`; `base + width <= u64::MAX`.
    base: u64,
    width: u64,
    win: Vec<Level>,
    bits: Bits,
    /// Non-empty levels in the window.
    in_window: usize,
    /// Non-empty levels outside the window.
    outside: BTreeMap<u64, Level>,
    /// How many of `outside` are better than every window price (above it for bids, below for asks).
    outside_better: usize,
    /// The best non-empty price.
    pub(super) best: Option<u64>,
    inserts_since_recenter: u64,
    /// Re-centrings of a non-empty window.
    recenters: u64,
    /// Scratch space for re-centring.
    moving: Vec<(u64, Level)>,
}

impl Ladder {
    /// `width` is a power of two >= 64.
    pub(super) fn new(side: Side, width: u64) -> Self {
        let w = usize::try_from(width).unwrap_or(usize::MAX);
        Self {
            side,
            base: 0,
            width,
            win: vec![Level::default(); w],
            bits: Bits::new(w),
            in_window: 0,
            outside: BTreeMap::new(),
            outside_better: 0,
            best: None,
            inserts_since_recenter: 0,
            recenters: 0,
            moving: Vec::new(),
        }
    }

    /// Window index of `price`.
    #[inline]
    fn idx(&self, price: u64) -> Option<usize> {
        let d = price.wrapping_sub(self.base);
        // `d < width`, and the window has `width` entries, so it fits in usize.
        (d < self.width).then_some(d as usize)
    }

    /// Whether `a` has priority over `b` on this side.
    #[inline]
    fn better(&self, a: u64, b: u64) -> bool {
        match self.side {
            Side::Buy => a > b,
            Side::Sell => a < b,
        }
    }

    /// Whether an outside price is better than every window price.
    #[inline]
    fn outside_is_better(&self, price: u64) -> bool {
        match self.side {
            Side::Buy => price >= self.base + self.width,
            Side::Sell => price < self.base,
        }
    }

    /// The level at `price`, if it exists (window levels always exist, maybe empty).
    #[inline]
    pub(super) fn level_mut(&mut self, price: u64) -> Option<&mut Level> {
        match self.idx(price) {
            Some(i) => self.win.get_mut(i),
            None => self.outside.get_mut(&price),
        }
    }

    /// The level at `price`, if it exists (window levels always exist, maybe empty).
    #[inline]
    pub(super) fn level(&self, price: u64) -> Option<&Level> {
        match self.idx(price) {
            Some(i) => self.win.get(i),
            None => self.outside.get(&price),
        }
    }

    /// Append slot `s` (whose `price` and `qty` are set) at the back of its level.
    #[inline]
    pub(super) fn push_back(&mut self, slots: &mut [Slot], s: u32) {
        let price = slots[s as usize].price;
        self.inserts_since_recenter = self.inserts_since_recenter.saturating_add(1);
        if self.idx(price).is_none() {
            self.steer(price);
        }
        match self.idx(price) {
            Some(i) => {
                let level = &mut self.win[i];
                if level.count == 0 {
                    self.bits.set(i);
                    self.in_window += 1;
                }
                level.push_back(slots, s);
            }
            None => {
                let better = self.outside_is_better(price);
                let level = self.outside.entry(price).or_default();
                if level.count == 0 && better {
                    self.outside_better += 1;
                }
                level.push_back(slots, s);
            }
        }
        if self.best.is_none_or(|b| self.better(price, b)) {
            self.best = Some(price);
        }
    }

    /// Unlink slot `s` from its level (at `price`).
    #[inline]
    pub(super) fn remove(&mut self, slots: &mut [Slot], s: u32, price: u64) {
        let Some(level) = self.level_mut(price) else {
            return;
        };
        level.unlink(slots, s);
        if level.count == 0 {
            self.emptied(price);
        }
    }

    /// The level at `price` has just become empty.
    #[inline]
    pub(super) fn emptied(&mut self, price: u64) {
        match self.idx(price) {
            Some(i) => {
                self.bits.clear(i);
                self.in_window -= 1;
            }
            None => {
                if self.outside.remove(&price).is_some() && self.outside_is_better(price) {
                    self.outside_better -= 1;
                }
            }
        }
        if self.best == Some(price) {
            self.best = self.find_best(price);
        }
    }

    /// The best non-empty price; nothing is better than `from`.
    #[inline]
    fn find_best(&self, from: u64) -> Option<u64> {
        let hi = self.base + self.width;
        match self.side {
            Side::Buy => {
                if self.outside_better > 0 {
                    return self.outside.range(hi..).next_back().map(|(p, _)| *p);
                }
                if self.in_window > 0 {
                    let start = self.idx(from).unwrap_or(self.win.len() - 1);
                    return self.bits.prev_le(start).map(|i| self.base + i as u64);
                }
                self.outside.range(..self.base).next_back().map(|(p, _)| *p)
            }
            Side::Sell => {
                if self.outside_better > 0 {
                    return self.outside.range(..self.base).next().map(|(p, _)| *p);
                }
                if self.in_window > 0 {
                    let start = self.idx(from).unwrap_or(0);
                    return self.bits.next_ge(start).map(|i| self.base + i as u64);
                }
                self.outside.range(hi..).next().map(|(p, _)| *p)
            }
        }
    }

    /// `price` is outside the window: move the window if that serves the market better.
    fn steer(&mut self, price: u64) {
        if self.in_window == 0 {
            self.recenter(price);
            return;
        }
        let best = match self.best {
            Some(b) if self.better(b, price) => b,
            _ => price,
        };
        if self.idx(best).is_none() && self.inserts_since_recenter >= self.width {
            self.recenter(best);
        }
    }

    /// Move the window so that `center` is in its middle, moving levels between the window and the
    /// outside map.
    #[cold]
    fn recenter(&mut self, center: u64) {
        self.inserts_since_recenter = 0;
        if self.in_window > 0 {
            self.recenters += 1;
        }
        let base = center.saturating_sub(self.width / 2).min(u64::MAX - self.width);
        let mut moving = std::mem::take(&mut self.moving);
        moving.clear();
        // Take every window level out.
        let mut i = self.bits.next_ge(0);
        while let Some(j) = i {
            moving.push((self.base + j as u64, std::mem::take(&mut self.win[j])));
            self.bits.clear(j);
            i = self.bits.next_ge(j + 1);
        }
        self.in_window = 0;
        self.base = base;
        // Outside levels that the new window covers.
        let keys: Vec<u64> = self
            .outside
            .range(base..base + self.width)
            .map(|(p, _)| *p)
            .collect();
        for p in keys {
            if let Some(level) = self.outside.remove(&p) {
                moving.push((p, level));
            }
        }
        for &(p, level) in &moving {
            match self.idx(p) {
                Some(j) => {
                    self.win[j] = level;
                    self.bits.set(j);
                    self.in_window += 1;
                }
                None => {
                    self.outside.insert(p, level);
                }
            }
        }
        self.outside_better = match self.side {
            Side::Buy => self.outside.range(base + self.width..).count(),
            Side::Sell => self.outside.range(..base).count(),
        };
        moving.clear();
        self.moving = moving;
    }

    /// Visit non-empty levels best first until `f` breaks.
    pub(super) fn for_each_level<B>(
        &self,
        mut f: impl FnMut(u64, &Level) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        let hi = self.base + self.width;
        match self.side {
            Side::Buy => {
                for (&p, l) in self.outside.range(hi..).rev() {
                    f(p, l)?;
                }
                let mut i = self.bits.prev_le(self.win.len() - 1);
                while let Some(j) = i {
                    f(self.base + j as u64, &self.win[j])?;
                    i = j.checked_sub(1).and_then(|k| self.bits.prev_le(k));
                }
                for (&p, l) in self.outside.range(..self.base).rev() {
                    f(p, l)?;
                }
            }
            Side::Sell => {
                for (&p, l) in self.outside.range(..self.base) {
                    f(p, l)?;
                }
                let mut i = self.bits.next_ge(0);
                while let Some(j) = i {
                    f(self.base + j as u64, &self.win[j])?;
                    i = self.bits.next_ge(j + 1);
                }
                for (&p, l) in self.outside.range(hi..) {
                    f(p, l)?;
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Number of non-empty levels.
    pub(super) fn levels(&self) -> usize {
        self.in_window + self.outside.len()
    }

    pub(super) fn outside_len(&self) -> usize {
        self.outside.len()
    }

    pub(super) fn recenters(&self) -> u64 {
        self.recenters
    }
}
