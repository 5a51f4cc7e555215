//! Signed requests already used, so that a captured Coinbase-style request cannot be sent
//! again while its timestamp is still accepted.
//!
//! A Coinbase-style signature covers timestamp + method + path + body and nothing unique per
//! request, so the same bytes verify for the whole window the timestamp is accepted in (up to
//! `signature_window_s` in the past, [`FUTURE_S`] in the future). [`Seen`] remembers what each
//! state-changing request signed (a digest of key id and signed bytes, not the signature's
//! encoding, so re-encoding the signature does not make it new) until its timestamp leaves the
//! window, and a second use is refused with `REQUEST_REPLAYED`.
//!
//! Bounded: at most [`ENTRIES_MAX`] entries (about 80 bytes each, so under 100 MiB at worst).
//! Only requests whose signature verified, from a usable key within its rate limit, are ever
//! recorded, so only customers' own traffic fills it: one key at the default limit (burst 2,000,
//! then 1,000 a second) records at most about 38,000 in a 36-second window, and 27 keys at full
//! rate together still fit. No size can make it impossible to fill (the number of keys is not
//! bounded), so when it is full it refuses new state-changing signed requests with 503
//! `SIGNED_REQUESTS_BUSY` (retry shortly) rather than forget an entry whose request could then
//! be replayed: refusing is safe, forgetting is not.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Most signed requests remembered at once.
pub const ENTRIES_MAX: usize = 1 << 20;
/// How far in the future a signed request's timestamp may be, in seconds (clock skew).
pub const FUTURE_S: u64 = 5;

/// Why a signed request may not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The same signed request was used before, within its window.
    Replayed,
    /// [`ENTRIES_MAX`] requests are remembered and none has expired yet.
    Full,
}

/// The signed requests used within their window (see the module docs).
pub struct Seen {
    entries_max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    digests: HashSet<[u8; 32]>,
    /// (last second the request is valid, digest), in the order recorded.
    order: VecDeque<(u64, [u8; 32])>,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen::new(ENTRIES_MAX)
    }
}

impl Seen {
    pub fn new(entries_max: usize) -> Seen {
        Seen {
            entries_max,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// What a signed request is remembered by: the key and the exact bytes signed.
    pub fn digest(key_id: &str, signed: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("kinko coinbase-style signed request v1");
        h.update(&(key_id.len() as u64).to_le_bytes());
        h.update(key_id.as_bytes());
        h.update(signed);
        *h.finalize().as_bytes()
    }

    /// Records `digest` as used until second `valid_until_s` (inclusive), unless it was used
    /// already or the set is full. Entries are dropped in the order recorded once their second
    /// has passed; one recorded later that expires sooner stays until those before it go, which
    /// only ever refuses a request its timestamp makes invalid anyway.
    pub fn first_use(&self, digest: [u8; 32], valid_until_s: u64, now_s: u64) -> Result<(), Refused> {
        let mut i = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(&(until, d)) = i.order.front() {
            if until >= now_s {
                break;
            }
            i.order.pop_front();
            i.digests.remove(&d);
        }
        if i.digests.contains(&digest) {
            return Err(Refused::Replayed);
        }
        if i.order.len() >= self.entries_max {
            return Err(Refused::Full);
        }
        i.digests.insert(digest);
        i.order.push_back((valid_until_s, digest));
        assert_eq!(i.digests.len(), i.order.len(), "replay set and its order agree");
        Ok(())
    }

    /// Entries remembered now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .order
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_used_once_until_it_expires_and_a_full_set_refuses() {
        let s = Seen::new(2);
        let a = Seen::digest("k1", b"100POST/orders{}");
        let b = Seen::digest("k2", b"100POST/orders{}");
        let c = Seen::digest("k1", b"101POST/orders{}");
        assert_eq!(s.first_use(a, 130, 100), Ok(()));
        assert_eq!(s.first_use(a, 130, 102), Err(Refused::Replayed));
        assert_eq!(
            s.first_use(b, 130, 102),
            Ok(()),
            "another key's request is another request"
        );
        assert_eq!(
            s.first_use(c, 131, 102),
            Err(Refused::Full),
            "full: refused, nothing forgotten"
        );
        assert_eq!(
            s.first_use(a, 130, 130),
            Err(Refused::Replayed),
            "still valid at its last second"
        );
        assert_eq!(s.first_use(c, 131, 131), Ok(()), "expired entries make room");
        assert_eq!(s.len(), 1);
    }
}
