//! A user's security events read back from the audit trail: logins (time, IP, device, level),
//! second-factor and credential changes, freezes and status changes, withdrawal addresses.
//! The engine emits them (`IdentityEvent`, `WalletEvent::WithdrawalAddressAdded`); the trail
//! appends them from committed batches (`trail::run`), durably and tamper-evident, as
//! `identity.<event>` / `wallet.address_added` entries whose subject is `user:<id>`. This module
//! only reads: the operators' customer lookup uses it, and so can the customer's own log.

use crate::trail::Trail;
use kinko_core::UserId;
use serde::Serialize;
use utoipa::ToSchema;

/// How many of the newest audit entries one read looks through at most.
pub const SCAN_MAX: u64 = 20_000;

/// One security event of a user.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SecurityEvent {
    /// When the trail recorded it.
    #[schema(format = DateTime)]
    pub at: String,
    /// e.g. `identity.session_opened`, `identity.factor_enrolled`, `wallet.address_added`.
    pub kind: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// A login: a session opened (after the password; `level` full once the second factor passed).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Login {
    #[schema(format = DateTime)]
    pub at: String,
    pub ip: String,
    pub device: String,
    /// `password` or `full`.
    #[schema(value_type = crate::schema::SessionLevel)]
    pub level: String,
    /// First login from this device.
    pub new_device: bool,
}

/// The newest `limit` security events of `user` (`kind` starting with one of `kinds`, or any
/// when empty), newest first, among the newest [`SCAN_MAX`] entries of the trail.
pub fn events_of(
    trail: &Trail,
    user: UserId,
    kinds: &[&str],
    limit: usize,
) -> Result<Vec<SecurityEvent>, String> {
    let subject = format!("user:{}", user.0);
    let mut out = Vec::new();
    trail.scan_back(SCAN_MAX, |e| {
        if e.subject == subject
            && e.actor == "engine"
            && (kinds.is_empty() || kinds.iter().any(|k| e.kind.starts_with(k)))
        {
            out.push(SecurityEvent {
                at: crate::wire::rfc3339(e.time_ns),
                kind: e.kind.clone(),
                detail: e.detail.clone(),
            });
        }
        out.len() < limit
    })?;
    Ok(out)
}

/// The newest `limit` logins of `user`, newest first.
pub fn logins_of(trail: &Trail, user: UserId, limit: usize) -> Result<Vec<Login>, String> {
    Ok(events_of(trail, user, &["identity.session_opened"], limit)?
        .into_iter()
        .map(|e| {
            let s = |k: &str| {
                e.detail
                    .get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            Login {
                at: e.at.clone(),
                ip: s("ip"),
                device: s("device"),
                level: s("level").to_ascii_lowercase(),
                new_device: e
                    .detail
                    .get("new_device")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
            }
        })
        .collect())
}
