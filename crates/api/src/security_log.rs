//! A user's security events read back from the audit trail: logins (time, IP, device, level),
//! second-factor and credential changes, freezes and status changes, withdrawal addresses.
//! The engine emits them (`IdentityEvent`, `WalletEvent::WithdrawalAddressAdded`); the trail
//! appends them from committed batches (`trail::run`), durably and tamper-evident, as
//! `identity.<event>` / `wallet.address_added` / `wallet.withdrawal_<state>` entries whose
//! subject is `user:<id>`. This module only reads: the operators' customer lookup uses it
//! ([`logins_of`]), and the customer's own log at `/me/security-log` ([`page_of`]: paged by
//! the entry's index in the trail, each event's detail cut to what the customer may see).

use crate::trail::Trail;
use kinko_core::UserId;
use serde::Serialize;
use utoipa::ToSchema;

/// How many of the newest audit entries one read looks through at most.
pub const SCAN_MAX: u64 = 20_000;

/// One security event of a user.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SecurityEvent {
    /// Its index in the audit trail (pages go `before` it).
    pub id: u64,
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
    Ok(scan(trail, user, None, limit, |e| {
        kinds.is_empty() || kinds.iter().any(|k| e.kind.starts_with(k))
    })?
    .0)
}

/// The newest `limit` events of `user` below trail index `before` that `keep` takes, and the
/// lowest index looked at (`None` when nothing was).
fn scan(
    trail: &Trail,
    user: UserId,
    before: Option<u64>,
    limit: usize,
    keep: impl Fn(&kinko_audit::Entry) -> bool,
) -> Result<(Vec<SecurityEvent>, Option<u64>), String> {
    let subject = format!("user:{}", user.0);
    let mut out = Vec::new();
    let lowest = trail.scan_back(before, SCAN_MAX, |i, e| {
        if e.subject == subject && e.actor == "engine" && keep(e) {
            out.push(SecurityEvent {
                id: i,
                at: crate::wire::rfc3339(e.time_ns),
                kind: e.kind.clone(),
                detail: e.detail.clone(),
            });
        }
        out.len() < limit
    })?;
    Ok((out, lowest))
}

/// What the customer's own log shows: their sign-ins (and failed ones), factor, credential and
/// status changes, addresses and withdrawals; not the second-factor uses behind each action, nor
/// what operators and risk rules wrote about them.
const CUSTOMER_KINDS: [&str; 14] = [
    "identity.registered",
    "identity.session_opened",
    "identity.sessions_ended",
    "identity.factor_enrolled",
    "identity.factor_removed",
    "identity.recovery_codes_issued",
    "identity.recovery_code_used",
    "identity.password_changed",
    "identity.email_changed",
    "identity.anti_phishing_set",
    "identity.reset_requested",
    "identity.status_changed",
    "identity.auth_failed",
    "wallet.",
];

/// The detail fields the customer sees (`reason` only where it is the customer's own: a failed
/// sign-in's or a failed withdrawal's).
const CUSTOMER_FIELDS: [&str; 14] = [
    "ip",
    "device",
    "level",
    "new_device",
    "factor",
    "count",
    "by_reset",
    "old",
    "status",
    "withdrawal",
    "asset",
    "amount",
    "address",
    "txid",
];

/// One page of the customer's security log, newest first.
pub struct Page {
    pub events: Vec<SecurityEvent>,
    /// Where the next (older) page starts; `None` on the last.
    pub next_before: Option<u64>,
}

/// A page of `user`'s own security log: at most `limit` events older than trail index
/// `before`, looking through at most [`SCAN_MAX`] entries (a page that found fewer than
/// `limit` but did not reach the start says where to go on).
pub fn page_of(trail: &Trail, user: UserId, before: Option<u64>, limit: usize) -> Result<Page, String> {
    let (mut events, lowest) = scan(trail, user, before, limit, |e| {
        CUSTOMER_KINDS.iter().any(|k| e.kind.starts_with(k))
    })?;
    let next_before = if events.len() >= limit {
        events.last().map(|e| e.id).filter(|i| *i > 0)
    } else {
        lowest.filter(|i| *i > 0)
    };
    for e in &mut events {
        let own_reason = e.kind == "identity.auth_failed" || e.kind == "wallet.withdrawal_failed";
        if let serde_json::Value::Object(m) = &mut e.detail {
            m.retain(|k, _| CUSTOMER_FIELDS.contains(&k.as_str()) || (own_reason && k == "reason"));
        }
    }
    Ok(Page { events, next_before })
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
