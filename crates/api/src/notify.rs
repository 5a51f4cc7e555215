//! Security messages from committed events: new-device logins, credential and factor changes,
//! new withdrawal addresses, withdrawals requested and sent, API keys created, freezes.
//!
//! The read side turns each committed batch's events into [`Notice`]s (with the user's address
//! and anti-phishing code as they are at that point) and hands them to one mail thread through
//! a bounded queue, so a slow relay never holds up the replica. Every message carries a freeze
//! link: a MAC'd token naming the user, valid for 30 days, checked in constant time.

use crate::mail::{Mailer, Message, MessageKind};
use crate::vault::Vault;
use crate::AppState;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use kinko_core::engine::Event;
use kinko_core::identity::{IdentityEvent, User, UserStatus};
use kinko_core::keys::KeyEvent;
use kinko_core::wallet::{WalletEvent, WithdrawalStatus};
use kinko_core::UserId;
use kinko_engine::replica::{Observer, ReadModel};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Messages queued for the mail thread before new ones are dropped (and counted).
pub const NOTICES_QUEUED_MAX: usize = 10_000;
const FREEZE_LINK_TTL_S: u64 = 30 * 24 * 3600;

/// One message for one user.
#[derive(Clone, Debug)]
pub struct Notice {
    pub user: UserId,
    pub message: Message,
}

/// A freeze-link token for `user`, valid for 30 days from `now_s`.
pub fn freeze_token(vault: &Vault, user: UserId, now_s: u64) -> String {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&user.0.to_be_bytes());
    b[8..16].copy_from_slice(&(now_s + FREEZE_LINK_TTL_S).to_be_bytes());
    let mac = blake3::keyed_hash(&vault.subkey("freeze link"), &b[..16]);
    b[16..].copy_from_slice(&mac.as_bytes()[..16]);
    URL_SAFE_NO_PAD.encode(b)
}

/// The user a freeze token names, if it is genuine and unexpired.
pub fn freeze_token_user(vault: &Vault, token: &str, now_s: u64) -> Option<UserId> {
    if token.len() > 64 {
        return None;
    }
    let b = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    if b.len() != 32 {
        return None;
    }
    let mac = blake3::keyed_hash(&vault.subkey("freeze link"), &b[..16]);
    if !bool::from(mac.as_bytes()[..16].ct_eq(&b[16..])) {
        return None;
    }
    let user = u64::from_be_bytes(b[..8].try_into().ok()?);
    let exp = u64::from_be_bytes(b[8..16].try_into().ok()?);
    (now_s <= exp).then_some(UserId(user))
}

/// Starts the mail thread; returns the queue's sender.
pub fn start(
    mailer: Arc<dyn Mailer>,
    vault: Vault,
    public_url: Arc<dyn Fn() -> String + Send + Sync>,
) -> crossbeam_channel::Sender<Notice> {
    let (tx, rx) = crossbeam_channel::bounded::<Notice>(NOTICES_QUEUED_MAX);
    std::thread::Builder::new()
        .name("kinko-mail".into())
        .spawn(move || {
            while let Ok(n) = rx.recv() {
                let now_s = crate::auth::now_ns() / 1_000_000_000;
                let url = format!("{}/freeze?t={}", public_url(), freeze_token(&vault, n.user, now_s));
                if let Err(e) = mailer.send(&n.message, Some(&url)) {
                    tracing::warn!(kind = n.message.kind.name(), user = n.user.0, error = %e, "a security message could not be sent");
                } else {
                    tracing::info!(kind = n.message.kind.name(), user = n.user.0, "security message sent");
                }
            }
        })
        .expect("cannot start the mail thread");
    tx
}

/// The replica's observer: collects each command's messages under the replica's lock, queues
/// them for the mail thread once the batch is applied.
pub struct Notifier {
    tx: crossbeam_channel::Sender<Notice>,
    pending: Vec<Notice>,
}

impl Notifier {
    pub fn new(tx: crossbeam_channel::Sender<Notice>) -> Notifier {
        Notifier {
            tx,
            pending: Vec::new(),
        }
    }
}

impl Observer for Notifier {
    fn on_command(&mut self, model: &ReadModel, events: &[Event]) {
        collect(model, events, &mut self.pending);
    }
    fn on_batch(&mut self) {
        for n in self.pending.drain(..) {
            if self.tx.try_send(n).is_err() {
                tracing::warn!("mail queue full: a security message was dropped");
            }
        }
    }
}

fn notice(u: &User, kind: MessageKind, subject: &str, body: String) -> Notice {
    Notice {
        user: u.id,
        message: Message {
            to: u.email.clone(),
            subject: subject.to_owned(),
            body,
            anti_phishing: u.anti_phishing.clone(),
            kind,
        },
    }
}

/// Queues a message now (for messages whose content is not in any event, like a reset link).
pub fn send_now(g: &AppState, u: &User, kind: MessageKind, subject: &str, body: String) {
    if let Some(tx) = g.notices() {
        if tx.try_send(notice(u, kind, subject, body)).is_err() {
            tracing::warn!(
                kind = kind.name(),
                "mail queue full: a security message was dropped"
            );
        }
    }
}

/// The messages one command's events call for, read against the replica right after it.
pub fn collect(m: &ReadModel, events: &[Event], out: &mut Vec<Notice>) {
    for e in events {
        match e {
            Event::Admin(kinko_core::admin::AdminEvent::IncidentOpened(i)) => incident_notices(m, i, out),
            Event::Identity(IdentityEvent::EverythingRevoked { .. }) => revoked_notices(m, out),
            Event::Identity(
                e @ (IdentityEvent::SessionOpened { .. } | IdentityEvent::StatusChanged { .. }),
            ) => out.extend(account_notice(m, e)),
            Event::Identity(
                e @ (IdentityEvent::PasswordChanged { .. }
                | IdentityEvent::EmailChanged { .. }
                | IdentityEvent::AntiPhishingSet { .. }),
            ) => out.extend(credential_notice(m, e)),
            Event::Identity(
                e @ (IdentityEvent::FactorEnrolled { .. }
                | IdentityEvent::FactorRemoved { .. }
                | IdentityEvent::RecoveryCodesIssued { .. }),
            ) => out.extend(factor_notice(m, e)),
            Event::Wallet(e) => out.extend(wallet_notice(m, e)),
            Event::Key(KeyEvent::Created(k)) => out.extend(key_created_notice(m, k)),
            _ => {}
        }
    }
}

/// An amount as the user reads it: decimal and asset code (minor units if the asset is unknown).
fn amount_text(m: &ReadModel, asset: kinko_core::AssetId, a: u128) -> String {
    m.engine.asset(asset).map_or_else(
        || a.to_string(),
        |x| {
            format!(
                "{} {}",
                kinko_core::Amount(a).to_decimal(x.decimals),
                x.code.as_str()
            )
        },
    )
}

/// An incident goes to every security admin at once.
fn incident_notices(m: &ReadModel, i: &kinko_core::admin::Incident, out: &mut Vec<Notice>) {
    let what = match i.asset {
        Some(a) => amount_text(m, a, i.missing.0),
        None => i.missing.0.to_string(),
    };
    for u in m
        .engine
        .identity()
        .users()
        .iter()
        .filter(|u| u.roles.contains(&kinko_core::identity::AdminRole::SecurityAdmin))
    {
        out.push(notice(
            u,
            MessageKind::SecurityIncident,
            &format!("CRITICAL: kinko incident {} ({})", i.id, i.kind),
            format!(
                "Incident {} was opened by {}: {}\nMissing: {what}. Transactions: {}.\nOpen the operators' console to review it.",
                i.id,
                i.opened_by,
                i.summary,
                if i.txids.is_empty() { "none".to_owned() } else { i.txids.join(", ") }
            ),
        ));
    }
}

/// After platform-wide revocation: every user who must re-enrol.
fn revoked_notices(m: &ReadModel, out: &mut Vec<Notice>) {
    for u in m.engine.identity().users().iter().filter(|u| u.reenrol_required) {
        out.push(notice(
            u,
            MessageKind::AccountRevoked,
            "Sign in again to kinko",
            "As a precaution every session and every second factor on kinko was revoked. Sign in \
             again and re-enrol your second factor with one of your recovery codes."
                .into(),
        ));
    }
}

/// Sign-ins from a new device and freezes.
fn account_notice(m: &ReadModel, e: &IdentityEvent) -> Option<Notice> {
    let user = |u: UserId| m.engine.identity().user(u);
    match e {
        IdentityEvent::SessionOpened {
            user: u,
            device,
            ip,
            new_device: true,
            ..
        } => user(*u).map(|u| {
            notice(
                u,
                MessageKind::NewDeviceLogin,
                "New sign-in to your kinko account",
                format!("Your account was signed in from a new device: \"{device}\" at {ip}."),
            )
        }),
        IdentityEvent::StatusChanged {
            user: u,
            status: UserStatus::Frozen,
            ..
        } => user(*u).map(|u| {
            notice(
                u,
                MessageKind::AccountFrozen,
                "Your kinko account is frozen",
                "Your account is frozen: withdrawals are halted and every session was ended until \
                 our team has reviewed it."
                    .into(),
            )
        }),
        _ => None,
    }
}

/// Password, email address and anti-phishing code changes.
fn credential_notice(m: &ReadModel, e: &IdentityEvent) -> Option<Notice> {
    let user = |u: UserId| m.engine.identity().user(u);
    match e {
        IdentityEvent::PasswordChanged { user: u, by_reset } => user(*u).map(|u| {
            notice(
                u,
                MessageKind::PasswordChanged,
                "Your kinko password was changed",
                format!(
                    "The password of your account was {}. Your other sessions were ended and \
                     withdrawals are locked for a while.",
                    if *by_reset {
                        "reset with an emailed link"
                    } else {
                        "changed"
                    }
                ),
            )
        }),
        IdentityEvent::EmailChanged { user: u, old } => user(*u).map(|u| {
            // To the old address: that is where the real owner still reads.
            let mut n = notice(
                u,
                MessageKind::EmailChanged,
                "The email address of your kinko account was changed",
                format!(
                    "The email address of your account was changed from {old} to {}.",
                    u.email
                ),
            );
            n.message.to = old.clone();
            n
        }),
        IdentityEvent::AntiPhishingSet { user: u } => user(*u).map(|u| {
            notice(
                u,
                MessageKind::AntiPhishingChanged,
                "Your kinko anti-phishing code was set",
                "Your anti-phishing code was set; from now on every message from kinko shows it.".into(),
            )
        }),
        _ => None,
    }
}

/// Second factors added or removed, new recovery codes.
fn factor_notice(m: &ReadModel, e: &IdentityEvent) -> Option<Notice> {
    let user = |u: UserId| m.engine.identity().user(u);
    match e {
        IdentityEvent::FactorEnrolled { user: u, factor } => user(*u).map(|u| {
            notice(
                u,
                MessageKind::SecondFactorChanged,
                "A second factor was added to your kinko account",
                format!("A new second factor ({factor}) was added to your account."),
            )
        }),
        IdentityEvent::FactorRemoved { user: u, factor } => user(*u).map(|u| {
            notice(
                u,
                MessageKind::SecondFactorChanged,
                "A second factor was removed from your kinko account",
                format!("A second factor ({factor}) was removed from your account; withdrawals are locked for a while."),
            )
        }),
        IdentityEvent::RecoveryCodesIssued { user: u } => user(*u).map(|u| {
            notice(
                u,
                MessageKind::SecondFactorChanged,
                "New recovery codes for your kinko account",
                "New recovery codes were made for your account; the old ones no longer work.".into(),
            )
        }),
        _ => None,
    }
}

/// Withdrawal addresses added, withdrawals requested and sent.
fn wallet_notice(m: &ReadModel, e: &WalletEvent) -> Option<Notice> {
    let user = |u: UserId| m.engine.identity().user(u);
    match e {
        WalletEvent::WithdrawalAddressAdded(a) => user(a.user).map(|u| {
            notice(
                u,
                MessageKind::WithdrawalAddressAdded,
                "A withdrawal address was added to your kinko account",
                format!(
                    "The address {} (\"{}\") was whitelisted for withdrawals. It can be used from {}.",
                    a.address,
                    a.label,
                    crate::wire::rfc3339(a.usable_at_ns)
                ),
            )
        }),
        // A new request (whatever the risk check decided, before any review).
        WalletEvent::Withdrawal(w)
            if w.approvals.is_empty()
                && matches!(
                    w.status,
                    WithdrawalStatus::Requested | WithdrawalStatus::Waiting | WithdrawalStatus::Review
                ) =>
        {
            user(w.user).map(|u| {
                notice(
                    u,
                    MessageKind::WithdrawalRequested,
                    "Withdrawal requested from your kinko account",
                    format!(
                        "A withdrawal of {} to {} was requested (id {}).",
                        amount_text(m, w.asset, w.amount.0),
                        w.address,
                        w.id.0
                    ),
                )
            })
        }
        WalletEvent::Withdrawal(w) if w.status == WithdrawalStatus::Broadcast => user(w.user).map(|u| {
            notice(
                u,
                MessageKind::WithdrawalSent,
                "Withdrawal sent from your kinko account",
                format!(
                    "The withdrawal of {} to {} was sent (transaction {}).",
                    amount_text(m, w.asset, w.amount.0),
                    w.address,
                    w.txid.as_deref().unwrap_or("?")
                ),
            )
        }),
        _ => None,
    }
}

fn key_created_notice(m: &ReadModel, k: &kinko_core::keys::ApiKey) -> Option<Notice> {
    let u = m.engine.identity().user(k.user)?;
    let scopes: Vec<&str> = [
        (k.permissions.view, "view"),
        (k.permissions.trade, "trade"),
        (k.permissions.withdraw, "withdraw"),
    ]
    .into_iter()
    .filter_map(|(on, n)| on.then_some(n))
    .collect();
    Some(notice(
        u,
        MessageKind::ApiKeyCreated,
        "An API key was created for your kinko account",
        format!(
            "An API key \"{}\" ({}) with scopes {} was created.",
            k.label,
            k.id,
            scopes.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_tokens_name_their_user_and_resist_forgery() {
        let v = Vault::from_key([3; 32]);
        let t = freeze_token(&v, UserId(42), 1_000);
        assert_eq!(freeze_token_user(&v, &t, 1_000), Some(UserId(42)));
        assert_eq!(
            freeze_token_user(&v, &t, 1_000 + FREEZE_LINK_TTL_S),
            Some(UserId(42))
        );
        assert_eq!(
            freeze_token_user(&v, &t, 1_001 + FREEZE_LINK_TTL_S),
            None,
            "expired"
        );
        // Another master key, a changed user, garbage: refused.
        assert_eq!(freeze_token_user(&Vault::from_key([4; 32]), &t, 1_000), None);
        let mut b = URL_SAFE_NO_PAD.decode(&t).unwrap();
        b[7] ^= 1;
        assert_eq!(freeze_token_user(&v, &URL_SAFE_NO_PAD.encode(&b), 1_000), None);
        for bad in ["", "x", "%%%", &"A".repeat(100)] {
            assert_eq!(freeze_token_user(&v, bad, 1_000), None);
        }
    }
}
