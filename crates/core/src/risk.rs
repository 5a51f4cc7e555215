//! Withdrawal risk: limits per account by tier, and rules evaluated in order on every request,
//! the first match deciding (docs/design/withdrawals.md).
//!
//! Everything here is deterministic: the engine gathers the facts of a request from its own
//! state ([`Facts`]) and [`RiskPolicy::evaluate`] decides. The policy itself changes only by a
//! journaled command, so a replay explains every decision.

use crate::money::{Amount, AssetId};
use serde::{Deserialize, Serialize};

/// Most rules in a policy; most limit rows.
pub const RULES_MAX: usize = 64;
pub const LIMITS_MAX: usize = 1024;
pub const NAME_LEN_MAX: usize = 64;
/// The longest window a rule or limit may look back (31 days).
pub const WINDOW_MAX_NS: u64 = 31 * 24 * 3600 * 1_000_000_000;

pub const HOUR_NS: u64 = 3_600_000_000_000;
pub const DAY_NS: u64 = 24 * HOUR_NS;
pub const MONTH_NS: u64 = 30 * DAY_NS;

/// What a rule looks at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The request came through a session or API key created less than `hours` ago (a new
    /// device or a new key).
    NewDevice { hours: u32 },
    /// The amount is more than `percent` of what the user holds of the asset.
    BalanceShare { percent: u32 },
    /// The destination was used by more than `accounts` distinct accounts (this one included)
    /// within `window_s` (many accounts drained to one address). Addresses that differ only
    /// by letter case count as one destination (see `wallet.rs`, `same_destination`).
    SharedDestination { accounts: u32, window_s: u64 },
    /// Platform-wide withdrawals of the asset in the last `window_s` exceed `multiple` times
    /// their average per window over the `baseline_s` before, by count or by value (and at
    /// least `min_count` withdrawals in the window).
    PlatformSurge {
        multiple: u32,
        window_s: u64,
        baseline_s: u64,
        min_count: u32,
    },
    /// The user's first withdrawal after a security change made less than `hours` ago.
    AfterSecurityChange { hours: u32 },
    /// Every request (a catch-all, e.g. last with `review`).
    Always,
    /// The policy sets no limit for the account's tier and the asset, or no per-asset row
    /// (dual-approval threshold, hourly hot outflow cap): an asset or tier nobody configured
    /// limits for. With `review`, such withdrawals fail closed instead of being unlimited.
    /// (Appended last: older journals' policies keep their encoding.)
    Unlimited,
}

/// What a matching rule decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Allow,
    /// Approved, but not to be signed before `seconds` have passed.
    Delay {
        seconds: u64,
    },
    /// Held for reviewers.
    Review,
    /// Refused (recorded as failed, nothing held).
    Reject,
    /// Held for reviewers, and the asset's withdrawals halted.
    HaltAsset,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Delay { .. } => "delay",
            Decision::Review => "review",
            Decision::Reject => "reject",
            Decision::HaltAsset => "halt_asset",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskRule {
    pub name: String,
    /// Only withdrawals of this asset (`None`: every asset).
    pub asset: Option<AssetId>,
    pub when: Condition,
    pub then: Decision,
}

/// Withdrawal limits of one tier and asset, counting every withdrawal not cancelled or failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierLimit {
    pub tier: u8,
    pub asset: AssetId,
    pub day_max: Amount,
    pub month_max: Amount,
}

/// Withdrawals at or above `amount` need two distinct reviewers' approvals when held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetRisk {
    pub asset: AssetId,
    /// At or above: two approvals (when held for review).
    pub dual_approval_from: Amount,
    /// The platform's hot-wallet outflow per rolling hour; beyond it, approved withdrawals wait.
    pub hot_outflow_per_hour: Amount,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskPolicy {
    pub rules: Vec<RiskRule>,
    pub limits: Vec<TierLimit>,
    pub assets: Vec<AssetRisk>,
}

/// The facts of one request, gathered by the engine from its own state.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub asset: AssetId,
    pub amount: Amount,
    /// What the user has of the asset before the request (available: not held by orders or
    /// other withdrawals).
    pub holding: u128,
    /// Age of the session or key the request came through.
    pub credential_age_ns: u64,
    /// Time since the user's last security change, if there was one.
    pub since_security_change_ns: Option<u64>,
    /// Whether the user withdrew since the last security change.
    pub withdrew_since_change: bool,
    /// The account's tier (for the limits).
    pub tier: u8,
}

/// Platform history the surge and shared-destination rules read (the engine implements it).
pub trait History {
    /// Distinct users who withdrew to `destination` of `asset` since `since_ns`, counting `user`
    /// (the one asking now).
    fn destination_users(
        &self,
        asset: AssetId,
        destination: &str,
        since_ns: u64,
        user: crate::money::UserId,
    ) -> u32;
    /// Withdrawals of `asset` requested in `[from_ns, to_ns)`: (count, total amount).
    fn requested_between(&self, asset: AssetId, from_ns: u64, to_ns: u64) -> (u64, u128);
}

/// The rule that decided, and why (shown to reviewers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskVerdict {
    pub rule: String,
    pub decision: Decision,
    pub reason: String,
}

fn secs(s: u64) -> u64 {
    s.saturating_mul(1_000_000_000).min(WINDOW_MAX_NS)
}

impl RiskPolicy {
    /// Checks the policy's bounds (a refused policy changes nothing).
    pub fn valid(&self) -> bool {
        self.rules.len() <= RULES_MAX
            && self.limits.len() <= LIMITS_MAX
            && self.assets.len() <= LIMITS_MAX
            && self.rules.iter().all(|r| {
                !r.name.is_empty()
                    && r.name.len() <= NAME_LEN_MAX
                    && r.name.bytes().all(|b| b.is_ascii_graphic())
            })
            && self.rules.iter().all(|r| match r.when {
                Condition::PlatformSurge {
                    multiple,
                    window_s,
                    baseline_s,
                    ..
                } => multiple > 0 && window_s > 0 && baseline_s >= window_s,
                Condition::SharedDestination { accounts, window_s } => accounts > 0 && window_s > 0,
                _ => true,
            })
    }

    pub fn limit(&self, tier: u8, asset: AssetId) -> Option<&TierLimit> {
        self.limits.iter().find(|l| l.tier == tier && l.asset == asset)
    }

    pub fn asset(&self, asset: AssetId) -> Option<&AssetRisk> {
        self.assets.iter().find(|a| a.asset == asset)
    }

    /// The first matching rule's verdict (`None`: no rule matched, the request is allowed).
    pub fn evaluate(
        &self,
        facts: &Facts,
        user: crate::money::UserId,
        destination: &str,
        now_ns: u64,
        history: &dyn History,
    ) -> Option<RiskVerdict> {
        for r in &self.rules {
            if r.asset.is_some_and(|a| a != facts.asset) {
                continue;
            }
            let reason = match &r.when {
                Condition::Always => Some("every withdrawal".to_owned()),
                Condition::Unlimited => {
                    let limit = self.limit(facts.tier, facts.asset).is_some();
                    let asset = self.asset(facts.asset).is_some();
                    (!limit || !asset).then(|| {
                        format!(
                            "the policy sets {} for this asset (rule: no limits, no automatic release)",
                            match (limit, asset) {
                                (false, false) =>
                                    format!("no tier {} limit and no per-asset row", facts.tier),
                                (false, true) => format!("no tier {} limit", facts.tier),
                                _ => "no per-asset row (dual approval, hourly cap)".to_owned(),
                            }
                        )
                    })
                }
                Condition::NewDevice { hours } => {
                    let limit = u64::from(*hours) * HOUR_NS;
                    (facts.credential_age_ns < limit).then(|| {
                        format!(
                            "requested through a session or key {} min old (rule: under {hours} h)",
                            facts.credential_age_ns / 60_000_000_000
                        )
                    })
                }
                Condition::BalanceShare { percent } => {
                    let over = facts
                        .amount
                        .0
                        .checked_mul(100)
                        .is_none_or(|a| a > facts.holding.saturating_mul(u128::from(*percent)));
                    over.then(|| {
                        format!("{}% or more of the balance (rule: over {percent}%)", {
                            facts.amount.0.saturating_mul(100) / facts.holding.max(1)
                        })
                    })
                }
                Condition::SharedDestination { accounts, window_s } => {
                    let since = now_ns.saturating_sub(secs(*window_s));
                    let n = history.destination_users(facts.asset, destination, since, user);
                    (n > *accounts).then(|| {
                        format!("{n} accounts withdrew to this address within {window_s} s (rule: more than {accounts})")
                    })
                }
                Condition::PlatformSurge {
                    multiple,
                    window_s,
                    baseline_s,
                    min_count,
                } => {
                    let w = secs(*window_s);
                    let b = secs(*baseline_s);
                    let (count, value) =
                        history.requested_between(facts.asset, now_ns.saturating_sub(w), now_ns);
                    let (count, value) = (count + 1, value.saturating_add(facts.amount.0));
                    let (bc, bv) = history.requested_between(
                        facts.asset,
                        now_ns.saturating_sub(w).saturating_sub(b),
                        now_ns.saturating_sub(w),
                    );
                    // Average per window over the baseline (at least one withdrawal, so a quiet
                    // baseline does not make the first few requests a surge on their own).
                    let windows = u128::from((b / w.max(1)).max(1));
                    let avg_count = (u128::from(bc) / windows).max(1);
                    let avg_value = (bv / windows).max(1);
                    let m = u128::from(*multiple);
                    let surge = count >= u64::from(*min_count)
                        && (u128::from(count) > avg_count.saturating_mul(m)
                            || value > avg_value.saturating_mul(m));
                    surge.then(|| {
                        format!(
                            "{count} withdrawals ({value} units) in the last {window_s} s against an average of {avg_count} ({avg_value}) (rule: × {multiple})"
                        )
                    })
                }
                Condition::AfterSecurityChange { hours } => match facts.since_security_change_ns {
                    Some(age) if age < u64::from(*hours) * HOUR_NS && !facts.withdrew_since_change => {
                        Some(format!(
                            "first withdrawal {} min after a security change (rule: within {hours} h)",
                            age / 60_000_000_000
                        ))
                    }
                    _ => None,
                },
            };
            if let Some(reason) = reason {
                return Some(RiskVerdict {
                    rule: r.name.clone(),
                    decision: r.then,
                    reason,
                });
            }
        }
        None
    }
}
