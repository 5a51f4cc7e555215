//! Sign-in throttling: failed passwords, second-factor answers, reset tokens and operator
//! tokens, counted per (account, client address) and per client address, with growing delays
//! instead of hard locks.
//!
//! A hard lock per account hands the attacker a way to lock the owner out: five wrong
//! passwords for an email blocked the owner's right one too. Here the counters are keyed by
//! what the attacker controls: `(account, address)` pairs and addresses. After `max` failures
//! under one key, the next attempt waits `DELAY_FIRST_S`, and each further failure doubles the
//! wait, up to the window; until then attempts under that key are refused (429
//! `TOO_MANY_FAILURES` with `Retry-After`) without being checked. The owner signing in from
//! another address is not affected. A per-account count across all addresses only slows
//! answers down (see [`Throttle::slow`]); it never refuses.
//!
//! The counts survive restarts: they are written to a small file in the data directory
//! (atomically: a temporary file, fsync, rename), at most once a second and at shutdown, and
//! read back at start. The table is bounded ([`ENTRIES_MAX`]): when full, stale entries go
//! first, then the ones whose last failure is oldest. Attackers cannot fill the engine's
//! journal with it: nothing here is journaled (the audit records of failures are, once per key
//! until its limit).

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// The file's name in the data directory.
pub const FILE_NAME: &str = "auth-throttle.json";
/// Most keys kept (about 100 bytes each in the file).
pub const ENTRIES_MAX: usize = 20_000;
/// The first wait after the limit is reached; each further failure doubles it.
pub const DELAY_FIRST_S: u64 = 30;
/// Failures of one account, from all addresses together, after which answers are slowed.
pub const SLOW_AFTER_FACTOR: u32 = 4;
/// An address (`ip:` keys) may fail this many times the per-account limit, across accounts,
/// before it waits: a few people behind one address may mistype, a sprayer soon stops.
pub const ADDRESS_FACTOR: u32 = 4;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    failures: u32,
    /// Unix seconds of the last failure.
    last_s: u64,
    /// No attempt under this key is checked before this time (unix seconds).
    wait_until_s: u64,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    entries: Vec<(String, Entry)>,
}

const FILE_VERSION: u32 = 1;

/// Failure counters per key (`pw:<email>|<ip>`, `2fa:<user>|<ip>`, `ip:<ip>`, ...).
#[derive(Debug)]
pub struct Throttle {
    map: Mutex<HashMap<String, Entry>>,
    max: u32,
    window_s: u64,
    file: Option<PathBuf>,
    dirty: AtomicBool,
}

/// The address part of a key: an IPv4 address as it is; an IPv6 address as its /64, the
/// block one subscriber usually holds whole (counting single IPv6 addresses would let one
/// attacker rotate through 2^64 of them).
pub fn address(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
        _ => ip.to_owned(),
    }
}

fn now_s() -> u64 {
    crate::auth::now_ns() / 1_000_000_000
}

impl Throttle {
    /// Counters allowing `max` failures per key in `window_s`, read from `file` when it exists
    /// (an unreadable file is reported and set aside: counting starts again).
    pub fn open(max: u32, window_s: u64, file: Option<PathBuf>) -> Throttle {
        let mut map = HashMap::new();
        if let Some(f) = &file {
            match std::fs::read(f) {
                Ok(bytes) => match serde_json::from_slice::<File>(&bytes) {
                    Ok(x) if x.version == FILE_VERSION => {
                        map.extend(x.entries.into_iter().take(ENTRIES_MAX));
                    }
                    _ => {
                        tracing::warn!(file = %f.display(), "sign-in throttle file unreadable; starting afresh")
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(file = %f.display(), error = %e, "sign-in throttle file unreadable"),
            }
        }
        Throttle {
            map: Mutex::new(map),
            max: max.max(1),
            window_s: window_s.max(1),
            file,
            dirty: AtomicBool::new(false),
        }
    }

    fn stale(&self, e: &Entry, now: u64) -> bool {
        now >= e.last_s.saturating_add(self.window_s) && now >= e.wait_until_s
    }

    /// None when an attempt under `key` may be checked now; otherwise the seconds to wait.
    pub fn blocked(&self, key: &str) -> Option<u64> {
        let now = now_s();
        let m = self.map.lock();
        m.get(key)
            .filter(|e| now < e.wait_until_s)
            .map(|e| e.wait_until_s - now)
    }

    /// Counts one failure under `key`; true when this one reached the limit.
    pub fn fail(&self, key: &str) -> bool {
        let now = now_s();
        let mut m = self.map.lock();
        if m.len() >= ENTRIES_MAX && !m.contains_key(key) {
            m.retain(|_, e| !self.stale(e, now));
            if m.len() >= ENTRIES_MAX {
                // Forget the quietest key rather than refuse to count.
                if let Some(k) = m.iter().min_by_key(|(_, e)| e.last_s).map(|(k, _)| k.clone()) {
                    m.remove(&k);
                }
            }
        }
        let e = m.entry(key.to_owned()).or_default();
        if self.stale(e, now) {
            *e = Entry::default();
        }
        e.failures = e.failures.saturating_add(1);
        e.last_s = now;
        let max = if key.starts_with("ip:") {
            self.max.saturating_mul(ADDRESS_FACTOR)
        } else {
            self.max
        };
        if e.failures >= max {
            let doublings = (e.failures - max).min(20);
            let wait = (DELAY_FIRST_S << doublings).min(self.window_s.max(DELAY_FIRST_S));
            e.wait_until_s = now.saturating_add(wait);
        }
        let reached = e.failures == max;
        self.dirty.store(true, Ordering::Release);
        reached
    }

    /// Forgets `key` (a success under it).
    pub fn clear(&self, key: &str) {
        if self.map.lock().remove(key).is_some() {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Whether answers under `key` should be slowed down: many failures across addresses.
    pub fn slow(&self, key: &str) -> bool {
        let now = now_s();
        let m = self.map.lock();
        m.get(key)
            .is_some_and(|e| !self.stale(e, now) && e.failures >= self.max.saturating_mul(SLOW_AFTER_FACTOR))
    }

    /// Writes the counters to the file if they changed since the last write.
    pub fn flush(&self) -> std::io::Result<()> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let now = now_s();
        let entries: Vec<(String, Entry)> = {
            let m = self.map.lock();
            m.iter()
                .filter(|(_, e)| !self.stale(e, now))
                .map(|(k, e)| (k.clone(), *e))
                .collect()
        };
        let bytes = serde_json::to_vec(&File {
            version: FILE_VERSION,
            entries,
        })
        .map_err(std::io::Error::other)?;
        let (dir, name) = match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
            (Some(dir), Some(name)) => (dir, name),
            _ => {
                return Err(std::io::Error::other(
                    "the throttle file needs a directory and a name",
                ))
            }
        };
        let r = crate::mail::write_atomic(dir, name, &bytes);
        if r.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_delays_per_key_and_counts_kept_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("throttle.json");
        let t = Throttle::open(3, 900, Some(file.clone()));
        assert!(!t.fail("k"));
        assert!(!t.fail("k"));
        assert_eq!(t.blocked("k"), None);
        assert!(t.fail("k"), "the third failure reaches the limit");
        let first = t.blocked("k").unwrap();
        assert!((DELAY_FIRST_S - 1..=DELAY_FIRST_S).contains(&first), "{first}");
        assert!(!t.fail("k"));
        let second = t.blocked("k").unwrap();
        assert!(
            (2 * DELAY_FIRST_S - 1..=2 * DELAY_FIRST_S).contains(&second),
            "doubles: {second}"
        );
        assert_eq!(t.blocked("other"), None, "keys are independent");
        t.flush().unwrap();
        let again = Throttle::open(3, 900, Some(file));
        assert!(again.blocked("k").is_some(), "kept across a restart");
        again.clear("k");
        assert_eq!(again.blocked("k"), None);
    }

    #[test]
    fn an_ipv6_address_counts_as_its_64() {
        assert_eq!(address("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(address("2001:db8:1:2:bbbb::9"), address("2001:db8:1:2:aaaa::1"));
        assert_eq!(address("203.0.113.7"), "203.0.113.7");
        assert_eq!(address("unknown"), "unknown");
    }
}
