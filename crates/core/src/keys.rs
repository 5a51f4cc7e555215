//! API keys: who may act for a user through the API, with which permissions.
//!
//! The engine stores no usable secret. A native key stores the BLAKE3 hash of its secret; a
//! Coinbase-style key (HMAC-signed requests need the secret itself) stores the secret sealed
//! by the gateway under a key kept outside the data directory, and the hash of its passphrase.
//! Checking a presented secret (in constant time) is the gateway's job.

use crate::money::UserId;
use crate::reject::Reject;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

pub const KEY_ID_LEN_MAX: usize = 64;
pub const SEALED_SECRET_LEN_MAX: usize = 256;
pub const KEYS_PER_USER_MAX: usize = 32;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    /// Read balances, orders, fills, deposits and withdrawals.
    pub view: bool,
    /// Place and cancel orders.
    pub trade: bool,
    /// Request withdrawals and manage withdrawal addresses (needs an IP allowlist, and each
    /// withdrawal still needs a second-factor proof).
    pub withdraw: bool,
}

impl Permissions {
    pub const ALL: Permissions = Permissions {
        view: true,
        trade: true,
        withdraw: true,
    };
}

/// Most entries in a key's IP allowlist.
pub const IP_ALLOWLIST_MAX: usize = 16;

/// Parses an allowlist entry: an IP address or a CIDR block (`203.0.113.0/24`, `2001:db8::/32`).
pub fn parse_ip_entry(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
            l.parse::<u8>().ok()?
        }
        Some(_) => return None,
        None => max,
    };
    if len > max {
        return None;
    }
    // Client addresses are compared in IPv4 form when IPv4-mapped, so entries are too.
    match ip {
        IpAddr::V6(v6) if len >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => Some((IpAddr::V4(v4), len - 96)),
            None => Some((ip, len)),
        },
        _ => Some((ip, len)),
    }
}

/// Whether `ip` falls inside any allowlist entry (IPv4-mapped IPv6 addresses count as IPv4).
pub fn ip_allowed(allowlist: &[String], ip: &str) -> bool {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    allowlist
        .iter()
        .filter_map(|e| parse_ip_entry(e))
        .any(|(net, len)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), len),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), len),
            _ => false,
        })
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let full = (len / 8) as usize;
    let rest = len % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeySecret {
    /// BLAKE3 of the secret.
    Native { secret_hash: [u8; 32] },
    /// The HMAC secret sealed (AEAD) by the gateway, and BLAKE3 of the passphrase.
    Coinbase {
        sealed_secret: Vec<u8>,
        passphrase_hash: [u8; 32],
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The public key id the client sends.
    pub id: String,
    pub user: UserId,
    pub label: String,
    pub permissions: Permissions,
    pub secret: KeySecret,
    pub created_ns: u64,
    pub revoked: bool,
    /// Client addresses the key may be used from; empty means any (not allowed with withdraw).
    pub ip_allowlist: Vec<String>,
    /// After this time the key no longer works.
    pub expires_ns: Option<u64>,
}

impl ApiKey {
    /// Whether the key works at `now_ns` from `ip`.
    pub fn usable_from(&self, ip: &str, now_ns: u64) -> Result<(), Reject> {
        if self.revoked {
            return Err(Reject::ApiKeyNotFound);
        }
        if self.expires_ns.is_some_and(|e| now_ns >= e) {
            return Err(Reject::ApiKeyExpired);
        }
        if !self.ip_allowlist.is_empty() && !ip_allowed(&self.ip_allowlist, ip) {
            return Err(Reject::ApiKeyIpNotAllowed);
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyEvent {
    /// A key was created (the record carries no usable secret).
    Created(Box<ApiKey>),
    Revoked {
        user: UserId,
        id: String,
    },
}

#[derive(Clone, Debug, Default)]
pub struct Keys {
    keys: BTreeMap<String, ApiKey>,
}

impl Keys {
    pub fn get(&self, id: &str) -> Option<&ApiKey> {
        self.keys.get(id).filter(|k| !k.revoked)
    }
    pub fn of_user(&self, user: UserId) -> Vec<&ApiKey> {
        self.keys
            .values()
            .filter(|k| k.user == user && !k.revoked)
            .collect()
    }

    /// The checks the engine repeats before a withdrawal-class command arriving through a key.
    pub fn check_withdraw(&self, user: UserId, id: &str, ip: &str, now_ns: u64) -> Result<(), Reject> {
        let k = self
            .get(id)
            .filter(|k| k.user == user)
            .ok_or(Reject::ApiKeyNotFound)?;
        k.usable_from(ip, now_ns)?;
        if !k.permissions.withdraw {
            return Err(Reject::ApiKeyScopeMissing);
        }
        if k.ip_allowlist.is_empty() {
            return Err(Reject::ApiKeyIpAllowlistRequired);
        }
        Ok(())
    }

    pub(crate) fn create(
        &mut self,
        now_ns: u64,
        key: &ApiKey,
        events: &mut Vec<KeyEvent>,
    ) -> Result<(), Reject> {
        if key.id.len() < 16
            || key.id.len() > KEY_ID_LEN_MAX
            || !key
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            || key.label.len() > 64
            || key.label.chars().any(char::is_control)
        {
            return Err(Reject::ApiKeyInvalid);
        }
        if let KeySecret::Coinbase { sealed_secret, .. } = &key.secret {
            if sealed_secret.is_empty() || sealed_secret.len() > SEALED_SECRET_LEN_MAX {
                return Err(Reject::ApiKeyInvalid);
            }
        }
        if key.ip_allowlist.len() > IP_ALLOWLIST_MAX
            || key.ip_allowlist.iter().any(|e| parse_ip_entry(e).is_none())
        {
            return Err(Reject::ApiKeyInvalid);
        }
        if key.permissions.withdraw && key.ip_allowlist.is_empty() {
            return Err(Reject::ApiKeyIpAllowlistRequired);
        }
        if key.expires_ns.is_some_and(|e| e <= now_ns) {
            return Err(Reject::ApiKeyExpired);
        }
        if self.keys.contains_key(&key.id) {
            return Err(Reject::ApiKeyExists);
        }
        if self.of_user(key.user).len() >= KEYS_PER_USER_MAX {
            return Err(Reject::LimitExceeded);
        }
        let k = ApiKey {
            created_ns: now_ns,
            revoked: false,
            ..key.clone()
        };
        self.keys.insert(k.id.clone(), k.clone());
        events.push(KeyEvent::Created(Box::new(k)));
        Ok(())
    }

    pub(crate) fn revoke(
        &mut self,
        user: UserId,
        id: &str,
        events: &mut Vec<KeyEvent>,
    ) -> Result<(), Reject> {
        let k = self
            .keys
            .get_mut(id)
            .filter(|k| k.user == user && !k.revoked)
            .ok_or(Reject::ApiKeyNotFound)?;
        k.revoked = true;
        events.push(KeyEvent::Revoked {
            user,
            id: id.to_owned(),
        });
        Ok(())
    }

    /// Revokes every key of `user` (their password, a factor or their status changed).
    pub(crate) fn revoke_user(&mut self, user: UserId, events: &mut Vec<KeyEvent>) {
        self.revoke_where(|k| k.user == user, events);
    }

    /// Revokes every key (platform-wide revocation).
    pub(crate) fn revoke_all(&mut self, events: &mut Vec<KeyEvent>) {
        self.revoke_where(|_| true, events);
    }

    fn revoke_where(&mut self, which: impl Fn(&ApiKey) -> bool, events: &mut Vec<KeyEvent>) {
        for k in self.keys.values_mut().filter(|k| !k.revoked && which(k)) {
            k.revoked = true;
            events.push(KeyEvent::Revoked {
                user: k.user,
                id: k.id.clone(),
            });
        }
    }

    pub fn state(&self) -> Vec<ApiKey> {
        self.keys.values().cloned().collect()
    }
    pub fn from_state(v: Vec<ApiKey>) -> Keys {
        Keys {
            keys: v.into_iter().map(|k| (k.id.clone(), k)).collect(),
        }
    }
}
