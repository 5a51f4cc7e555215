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

pub const KEY_ID_LEN_MAX: usize = 64;
pub const SEALED_SECRET_LEN_MAX: usize = 256;
pub const KEYS_PER_USER_MAX: usize = 32;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    /// Read balances, orders, fills, deposits and withdrawals.
    pub view: bool,
    /// Place and cancel orders.
    pub trade: bool,
    /// Request withdrawals and manage addresses.
    pub transfer: bool,
}

impl Permissions {
    pub const ALL: Permissions = Permissions {
        view: true,
        trade: true,
        transfer: true,
    };
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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyEvent {
    /// A key was created (the record carries no usable secret).
    Created(ApiKey),
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
        events.push(KeyEvent::Created(k));
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

    pub fn state(&self) -> Vec<ApiKey> {
        self.keys.values().cloned().collect()
    }
    pub fn from_state(v: Vec<ApiKey>) -> Keys {
        Keys {
            keys: v.into_iter().map(|k| (k.id.clone(), k)).collect(),
        }
    }
}
