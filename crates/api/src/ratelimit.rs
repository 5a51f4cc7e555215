//! Token-bucket rate limits per API key and per client IP. Ephemeral gateway state: never
//! journaled, bounded in size (the table is cleared of idle entries when it grows).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Requests allowed in a burst.
    pub burst: u32,
    /// Sustained requests per second.
    pub per_second: u32,
}

pub struct Limiter<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, (u64, Instant)>>,
    entries_max: usize,
}

/// Tokens are kept in millitokens so that refill needs no floating point.
const MILLI: u64 = 1_000;

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: Rate, entries_max: usize) -> Limiter<K> {
        Limiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
            entries_max,
        }
    }

    /// Takes one token for `key`; false when the bucket is empty.
    pub fn check(&self, key: &K) -> bool {
        if self.rate.per_second == 0 {
            return true;
        }
        let now = Instant::now();
        let cap = u64::from(self.rate.burst.max(1)) * MILLI;
        let mut b = self.buckets.lock();
        if b.len() >= self.entries_max && !b.contains_key(key) {
            // Drop buckets that are full again (idle clients); they would start full anyway.
            let per_s = u64::from(self.rate.per_second);
            b.retain(|_, (tokens, at)| {
                let refill = u64::try_from(now.duration_since(*at).as_millis()).unwrap_or(u64::MAX) * per_s;
                tokens.saturating_add(refill) < cap
            });
            if b.len() >= self.entries_max {
                return false;
            }
        }
        let (tokens, at) = b.entry(key.clone()).or_insert((cap, now));
        let elapsed_ms = u64::try_from(now.duration_since(*at).as_millis()).unwrap_or(u64::MAX);
        if elapsed_ms > 0 {
            *tokens = tokens
                .saturating_add(elapsed_ms.saturating_mul(u64::from(self.rate.per_second)))
                .min(cap);
            *at = now;
        }
        if *tokens >= MILLI {
            *tokens -= MILLI;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusal() {
        let l = Limiter::new(
            Rate {
                burst: 3,
                per_second: 1,
            },
            10,
        );
        assert!(l.check(&1));
        assert!(l.check(&1));
        assert!(l.check(&1));
        assert!(!l.check(&1));
        assert!(l.check(&2), "keys are independent");
    }
}
