//! The operators' console's own API (`/api/v1/ops/customers/...`, `/api/v1/ops/platform`):
//! customer lookup by email or user id (status, balances, second factors as counts and kinds,
//! recent logins from the security log, withdrawals, whitelisted addresses, open proposals about
//! the customer), an admin's freeze with a reason and a fresh passkey, and the platform page
//! (per asset: customer liabilities against hot and cold custody in the ledger and, where a
//! custody service runs, on the node; the hot share against its cap; withdrawals by state; open
//! incidents; the engine's committed sequence and queue depth), computed here, not in the
//! browser. Every read of a customer's data and every action is recorded in the audit trail
//! before it is answered or carried out: one that cannot be recorded is refused
//! (`AUDIT_UNAVAILABLE`). Unfreezing stays a two-admin proposal (`POST /ops/proposals`,
//! `unfreeze_user`).

use crate::auth::{Auth, ClientIp};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path};
use crate::ops::{admin, incident_out, proposal_out, IncidentOut, ProposalOut};
use crate::security_log::Login;
use crate::stepup::{audited, prove_admin, StepUpIn};
use crate::view::{WithdrawalAddressOut, WithdrawalOut};
use crate::wire::{fmt_amount, fmt_signed, rfc3339};
use crate::AppState;
use axum::extract::State;
use kinko_core::admin::{AdminChange, ProposalStatus};
use kinko_core::engine::{Command, Reply};
use kinko_core::identity::{Action, UserStatus, Via};
use kinko_core::ledger::SystemAccount;
use kinko_core::wallet::WithdrawalStatus;
use kinko_core::{Reject, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most withdrawals and logins a lookup shows (the newest).
const LOOKUP_LIST_MAX: usize = 20;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupIn {
    /// An email address or a user id.
    #[schema(min_length = 1, max_length = 320)]
    pub query: String,
}

#[derive(Serialize, ToSchema)]
pub struct CustomerBalanceOut {
    pub asset: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub available: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub held: String,
}

/// Second factors: how many and which kinds, never a secret.
#[derive(Serialize, ToSchema)]
pub struct FactorsOut {
    pub totp: bool,
    pub passkeys: u32,
    /// Recovery codes not used yet.
    pub recovery_codes_left: u32,
}

#[derive(Serialize, ToSchema)]
pub struct CustomerOut {
    pub user_id: String,
    pub email: String,
    /// `active`, `frozen` or `disabled`.
    #[schema(value_type = crate::schema::UserStatus)]
    pub status: String,
    /// Why it was frozen or disabled.
    pub status_reason: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Admin roles, if any.
    pub roles: Vec<String>,
    pub balances: Vec<CustomerBalanceOut>,
    pub factors: FactorsOut,
    /// Sessions open now.
    pub sessions: u32,
    /// The newest logins (from the security log), newest first.
    pub recent_logins: Vec<Login>,
    /// The newest withdrawals, newest first.
    pub withdrawals: Vec<WithdrawalOut>,
    pub addresses: Vec<WithdrawalAddressOut>,
    /// Open proposals about this customer (an unfreeze, an address usable at once).
    pub proposals: Vec<ProposalOut>,
}

fn status_name(s: UserStatus) -> &'static str {
    match s {
        UserStatus::Active => "active",
        UserStatus::Frozen => "frozen",
        UserStatus::Disabled => "disabled",
    }
}

/// The user a lookup names: digits are a user id, anything else an email address.
fn find_user(g: &AppState, query: &str) -> ApiResult<UserId> {
    let q = query.trim();
    let m = g.read.model();
    let ids = m.engine.identity();
    let user = if !q.is_empty() && q.bytes().all(|b| b.is_ascii_digit()) {
        q.parse::<u64>().ok().and_then(|id| ids.user(UserId(id)))
    } else {
        kinko_core::identity::normalise_email(q).and_then(|e| ids.user_by_email(&e))
    };
    Ok(user.ok_or(Reject::UserNotFound)?.id)
}

fn customer_out(g: &AppState, user: UserId, recent_logins: Vec<Login>) -> ApiResult<CustomerOut> {
    let m = g.read.model();
    let e = &m.engine;
    let u = e.identity().user(user).ok_or(Reject::UserNotFound)?;
    let concerns = |c: &AdminChange| match c {
        AdminChange::UnfreezeUser { user: x } | AdminChange::WhitelistAddress { user: x, .. } => *x == user,
        AdminChange::SetRoles { user: x, .. } => *x == user,
        _ => false,
    };
    Ok(CustomerOut {
        user_id: user.0.to_string(),
        email: u.email.clone(),
        status: status_name(u.status).into(),
        status_reason: u.status_reason.clone(),
        created_at: rfc3339(u.created_ns),
        roles: u.roles.iter().map(|r| r.name().to_owned()).collect(),
        balances: crate::view::balances_of(&m, user)
            .into_iter()
            .map(|b| CustomerBalanceOut {
                asset: b.code,
                available: fmt_amount(b.available, b.decimals),
                held: fmt_amount(b.hold, b.decimals),
            })
            .collect(),
        factors: FactorsOut {
            totp: u.totp.is_some(),
            passkeys: u32::try_from(u.passkeys.len()).unwrap_or(u32::MAX),
            recovery_codes_left: u32::try_from(u.recovery.iter().filter(|c| !c.used).count())
                .unwrap_or(u32::MAX),
        },
        sessions: u32::try_from(e.identity().sessions_of(user, crate::view::now_ns()).len())
            .unwrap_or(u32::MAX),
        recent_logins,
        withdrawals: e
            .wallet()
            .withdrawals()
            .iter()
            .rev()
            .filter(|w| w.user == user)
            .take(LOOKUP_LIST_MAX)
            .map(|w| crate::view::withdrawal_out(&m, &g.health, w))
            .collect(),
        addresses: e
            .wallet()
            .withdrawal_addresses_of(user)
            .into_iter()
            .map(|a| crate::view::withdrawal_address_out(&m, a))
            .collect(),
        proposals: e
            .admin()
            .proposals
            .iter()
            .rev()
            .filter(|p| p.status == ProposalStatus::Open && concerns(&p.change))
            .map(proposal_out)
            .collect(),
    })
}

/// Looks a customer up by email address or user id. The read is recorded in the audit trail
/// (who read whose data, from where) before it is answered.
#[utoipa::path(post, path = "/ops/customers/lookup", tag = "operations", security(("session" = [])),
    request_body = LookupIn,
    responses((status = 200, body = CustomerOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn lookup_customer(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Json(r): Json<LookupIn>,
) -> ApiResult<axum::Json<CustomerOut>> {
    let (me, _) = admin(&g, &p)?;
    if r.query.trim().is_empty() || r.query.len() > 320 {
        return Err(ApiError::invalid("query must be an email address or a user id"));
    }
    g.caught_up().await?;
    let user = find_user(&g, &r.query)?;
    crate::trail::record(
        &g,
        "ops.read_customer",
        &format!("admin:{}", me.0),
        &format!("user:{}", user.0),
        serde_json::json!({"ip": ip}),
    )
    .await?;
    let logins = match g.trail.get().cloned() {
        Some(t) => {
            tokio::task::spawn_blocking(move || crate::security_log::logins_of(&t, user, LOOKUP_LIST_MAX))
                .await
                .map_err(|_| ApiError::unavailable("AUDIT_UNAVAILABLE", "the security log did not answer"))?
                .map_err(|e| {
                    tracing::error!(error = %e, "security log read failed");
                    ApiError::unavailable("AUDIT_UNAVAILABLE", "the security log cannot be read")
                })?
        }
        None => Vec::new(),
    };
    Ok(axum::Json(customer_out(&g, user, logins)?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeUserIn {
    pub reason: String,
    pub step_up: Option<StepUpIn>,
}

/// Freezes a customer's account (protective: one admin may): withdrawals are refused, sessions
/// and API keys end. Unfreezing takes two admins (`unfreeze_user` proposal).
#[utoipa::path(post, path = "/ops/customers/{id}/freeze", tag = "operations", security(("session" = [])),
    params(("id" = String, Path)), request_body = FreezeUserIn,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn freeze_customer(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(r): Json<FreezeUserIn>,
) -> ApiResult<axum::http::StatusCode> {
    let (me, session) = admin(&g, &p)?;
    let user = id
        .parse::<u64>()
        .map(UserId)
        .map_err(|_| ApiError::invalid("id must be a user id"))?;
    g.caught_up().await?;
    if g.read.model().engine.identity().user(user).is_none() {
        return Err(Reject::UserNotFound.into());
    }
    let action = Action::FreezeUser {
        user: me,
        target: user,
    };
    let proof = prove_admin(&g, me, &action, r.step_up.as_ref(), &ip).await?;
    crate::trail::record(
        &g,
        "ops.freeze_user",
        &format!("admin:{}", me.0),
        &format!("user:{}", user.0),
        serde_json::json!({"reason": r.reason, "ip": ip}),
    )
    .await?;
    let res = g
        .submit(Command::FreezeUser {
            user,
            by: me,
            reason: r.reason,
            via: Via::Session(session),
            proof,
        })
        .await
        .and_then(|c| c.reply.map_err(ApiError::from));
    match audited(&g, me, &ip, res).await? {
        Reply::Identity(_) => Ok(axum::http::StatusCode::NO_CONTENT),
        other => Err(ApiError::invalid(format!("unexpected reply {other:?}"))),
    }
}

#[derive(Serialize, ToSchema)]
pub struct StateCountOut {
    #[schema(value_type = crate::schema::WithdrawalStatus)]
    pub status: String,
    pub count: u64,
}

#[derive(Serialize, ToSchema)]
pub struct PlatformAssetOut {
    pub asset: String,
    /// What customers hold (available and held): the platform's liabilities.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub liabilities: String,
    /// The ledger's custody accounts.
    #[schema(pattern = r"^-?[0-9]+(\.[0-9]+)?$")]
    pub ledger_hot: String,
    #[schema(pattern = r"^-?[0-9]+(\.[0-9]+)?$")]
    pub ledger_cold: String,
    /// Hot and cold together, against the liabilities: what custody holds beyond them (negative:
    /// short).
    #[schema(pattern = r"^-?[0-9]+(\.[0-9]+)?$")]
    pub custody_surplus: String,
    /// The node's view, where a custody service runs for the asset.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub node_hot: Option<String>,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub node_cold: Option<String>,
    /// Why the node's view is missing although custody runs.
    pub node_error: Option<String>,
    /// The ledger's hot wallet as a share of the liabilities, in basis points (none without
    /// liabilities).
    pub hot_share_bps: Option<u64>,
    /// The custody service's cap on the hot wallet: a share of liabilities (basis points) and
    /// an absolute amount; the limit is the lower of the two.
    pub hot_cap_share_bps: Option<u32>,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub hot_cap: Option<String>,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub hot_limit: Option<String>,
    /// Whether the hot wallet holds more than its limit.
    pub hot_over_limit: Option<bool>,
    pub withdrawals_running: bool,
    /// Withdrawals of the asset by state (every state, zeros included).
    pub withdrawals: Vec<StateCountOut>,
}

#[derive(Serialize, ToSchema)]
pub struct PlatformOut {
    /// The engine's last committed (journaled) sequence number.
    pub committed_sequence: u64,
    /// What the read side has applied.
    pub applied_sequence: u64,
    /// Commands waiting for the sequencer.
    pub queue_depth: u64,
    /// Whether new commands are accepted (the journal writes, the engine is not halted).
    pub accepting_requests: bool,
    /// Every asset's withdrawals halted.
    pub withdrawals_halted: bool,
    pub assets: Vec<PlatformAssetOut>,
    pub open_incidents: Vec<IncidentOut>,
}

const STATES: [WithdrawalStatus; 11] = [
    WithdrawalStatus::Requested,
    WithdrawalStatus::Waiting,
    WithdrawalStatus::Review,
    WithdrawalStatus::Approved,
    WithdrawalStatus::Signing,
    WithdrawalStatus::Signed,
    WithdrawalStatus::Broadcast,
    WithdrawalStatus::Completed,
    WithdrawalStatus::Cancelled,
    WithdrawalStatus::Failed,
    WithdrawalStatus::Reverted,
];

/// The platform's money and machinery, per asset and overall. Computed server-side.
#[utoipa::path(get, path = "/ops/platform", tag = "operations", security(("session" = [])),
    responses((status = 200, body = PlatformOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn platform_overview(State(g): State<AppState>, Auth(p): Auth) -> ApiResult<axum::Json<PlatformOut>> {
    admin(&g, &p)?;
    g.caught_up().await?;
    let codes: Vec<String> = {
        let m = g.read.model();
        m.engine
            .assets()
            .iter()
            .map(|a| a.code.as_str().to_owned())
            .collect()
    };
    // The node's view first (blocking calls), then one consistent read of the engine.
    let mut nodes = Vec::new();
    for code in &codes {
        let node = match g.custody.get().cloned() {
            Some(o) if o.hot_policy(code).is_some() => {
                let (o2, c) = (o.clone(), code.clone());
                let r = tokio::task::spawn_blocking(move || o2.balances(&c)).await;
                let node = match r {
                    Ok(Ok(b)) => Ok(b),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the custody call did not finish".to_owned()),
                };
                Some((node, o.hot_policy(code)))
            }
            _ => None,
        };
        nodes.push(node);
    }
    let m = g.read.model();
    let e = &m.engine;
    let mut assets = Vec::new();
    for ((i, a), node) in e.assets().iter().enumerate().zip(nodes) {
        let id = kinko_core::AssetId(u32::try_from(i).unwrap_or(u32::MAX));
        let dec = a.decimals;
        let (liabilities, _) = e.funds(id);
        let bal = |w: SystemAccount| e.ledger().account(a.system_account(w)).map_or(0, |x| x.balance());
        let (hot, cold) = (bal(SystemAccount::HotWallet), bal(SystemAccount::ColdWallet));
        let held = hot.saturating_add(cold);
        let surplus = i128::try_from(liabilities)
            .ok()
            .map(|l| held.saturating_sub(l))
            .unwrap_or(i128::MIN);
        let hot_u = u128::try_from(hot).unwrap_or(0);
        let hot_share_bps = (liabilities > 0)
            .then(|| u64::try_from(hot_u.saturating_mul(10_000) / liabilities).unwrap_or(u64::MAX));
        let (node_hot, node_cold, node_error, policy) = match node {
            None => (None, None, None, None),
            Some((Ok((h, c)), pol)) => (Some(fmt_amount(h, dec)), Some(fmt_amount(c, dec)), None, pol),
            Some((Err(err), pol)) => (None, None, Some(err), pol),
        };
        let limit = policy.map(|(bps, cap)| {
            let share = liabilities.saturating_mul(u128::from(bps)) / 10_000;
            share.min(u128::from(cap))
        });
        let mut counts = [0u64; STATES.len()];
        for w in e.wallet().withdrawals().iter().filter(|w| w.asset == id) {
            if let Some(k) = STATES.iter().position(|s| *s == w.status) {
                counts[k] = counts[k].saturating_add(1);
            }
        }
        assets.push(PlatformAssetOut {
            asset: a.code.as_str().to_owned(),
            liabilities: fmt_amount(liabilities, dec),
            ledger_hot: fmt_signed(hot, dec),
            ledger_cold: fmt_signed(cold, dec),
            custody_surplus: fmt_signed(surplus, dec),
            node_hot,
            node_cold,
            node_error,
            hot_share_bps,
            hot_cap_share_bps: policy.map(|(bps, _)| bps),
            hot_cap: policy.map(|(_, cap)| fmt_amount(u128::from(cap), dec)),
            hot_limit: limit.map(|l| fmt_amount(l, dec)),
            hot_over_limit: limit.map(|l| hot_u > l),
            withdrawals_running: a.switches.withdrawals && e.admin().global_halt.is_none(),
            withdrawals: STATES
                .iter()
                .zip(counts)
                .map(|(s, count)| StateCountOut {
                    status: s.name().into(),
                    count,
                })
                .collect(),
        });
    }
    let stats = g.engine.stats();
    Ok(axum::Json(PlatformOut {
        committed_sequence: stats.last_seq.load(std::sync::atomic::Ordering::Acquire),
        applied_sequence: g.read.applied_seq(),
        queue_depth: u64::try_from(g.engine.queue_depth()).unwrap_or(u64::MAX),
        accepting_requests: stats.journal().0 == kinko_engine::JournalState::Ok && e.halted().is_none(),
        withdrawals_halted: e.admin().global_halt.is_some(),
        assets,
        open_incidents: e.admin().open_incidents().map(|i| incident_out(&m, i)).collect(),
    }))
}

pub fn routes(r: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    r.routes(routes!(lookup_customer))
        .routes(routes!(freeze_customer))
        .routes(routes!(platform_overview))
}
