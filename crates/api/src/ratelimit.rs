//! Token-bucket rate limits per API key and per client IP. Ephemeral gateway state: never
//! journaled, bounded in size (the table is cleared of idle entries when it grows).
//!
//! The defaults follow what large exchanges allow (Coinbase Exchange: public endpoints about
//! 10 requests/s per IP with bursts of 15, private ones 15/s per profile with bursts of 30,
//! order entry somewhat more): a gateway with no `[api]` rate settings is not a free-for-all.
//! Which bucket a request draws from is its [`RateClass`].

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed in a burst.
    pub burst: u32,
    /// Sustained requests per second; 0 turns the limit off.
    pub per_second: u32,
}

/// What an authenticated request is, for the per-key limits: order entry (placing and
/// cancelling orders) draws only from the key's overall bucket, everything else also from the
/// tighter private bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateClass {
    OrderEntry,
    Private,
}

impl RateClass {
    /// Placing or cancelling orders, on either surface (`/api/v1/orders…`, `/orders…`).
    pub fn of(method: &str, path: &str) -> RateClass {
        let orders = path.starts_with("/api/v1/orders") || path.starts_with("/orders");
        if orders && matches!(method, "POST" | "DELETE") {
            RateClass::OrderEntry
        } else {
            RateClass::Private
        }
    }
}

/// The per-address bucket of a client: IPv4 as it is, IPv6 by its /64 (one subscriber's block).
pub fn address_of(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
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
        self.take(key).is_ok()
    }

    /// Takes one token for `key`, or says in how many whole seconds (at least 1) one will be
    /// there again (the `Retry-After` of the refusal).
    pub fn take(&self, key: &K) -> Result<(), u64> {
        if self.rate.per_second == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let per_s = u64::from(self.rate.per_second);
        let cap = u64::from(self.rate.burst.max(1)) * MILLI;
        let mut b = self.buckets.lock();
        if b.len() >= self.entries_max && !b.contains_key(key) {
            // Drop buckets that are full again (idle clients); they would start full anyway.
            b.retain(|_, (tokens, at)| {
                let refill = u64::try_from(now.duration_since(*at).as_millis()).unwrap_or(u64::MAX) * per_s;
                tokens.saturating_add(refill) < cap
            });
            if b.len() >= self.entries_max {
                return Err(1);
            }
        }
        let (tokens, at) = b.entry(key.clone()).or_insert((cap, now));
        let elapsed_ms = u64::try_from(now.duration_since(*at).as_millis()).unwrap_or(u64::MAX);
        if elapsed_ms > 0 {
            *tokens = tokens.saturating_add(elapsed_ms.saturating_mul(per_s)).min(cap);
            *at = now;
        }
        if *tokens >= MILLI {
            *tokens -= MILLI;
            Ok(())
        } else {
            // Millitokens refill at `per_s` per millisecond.
            let wait_ms = (MILLI - *tokens).div_ceil(per_s);
            Err(wait_ms.div_ceil(1_000).max(1))
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
        assert_eq!(l.take(&1), Err(1), "one token a second: retry after a second");
        assert!(l.check(&2), "keys are independent");
    }

    #[test]
    fn order_entry_is_told_apart() {
        for (method, path, want) in [
            ("POST", "/api/v1/orders", RateClass::OrderEntry),
            ("DELETE", "/api/v1/orders/123", RateClass::OrderEntry),
            ("POST", "/orders", RateClass::OrderEntry),
            ("DELETE", "/orders", RateClass::OrderEntry),
            ("GET", "/api/v1/orders", RateClass::Private),
            ("GET", "/orders", RateClass::Private),
            ("GET", "/api/v1/balances", RateClass::Private),
            ("POST", "/api/v1/withdrawals", RateClass::Private),
        ] {
            assert_eq!(RateClass::of(method, path), want, "{method} {path}");
        }
    }
}
