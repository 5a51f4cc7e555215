//! The operators' API for admin users (`/api/v1/ops/...`): the review queue with the rule that
//! fired, reviews, two-person proposals, halts and incidents; and the public status endpoint.
//! Admins are users with roles, signed in with a full session; every action here carries a
//! fresh passkey assertion bound to it (`STEP_UP_REQUIRED` answers with the challenge; TOTP and
//! recovery codes are refused with `ADMIN_PASSKEY_REQUIRED`), and the engine checks roles,
//! verifies the assertion's signature itself, and that nobody approves their own request.

use crate::auth::{Auth, ClientIp};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path};
use crate::stepup::{audited, prove_admin, StepUpIn};
use crate::wire::{fmt_amount, rfc3339};
use crate::AppState;
use axum::extract::State;
use kinko_core::admin::{AdminChange, Incident, Proposal};
use kinko_core::engine::{Command, HaltBy, Reply};
use kinko_core::identity::{Action, AdminRole, Via};
use kinko_core::wallet::{Withdrawal, WithdrawalId, WithdrawalStatus};
use kinko_core::{AssetId, Reject, UserId};
use kinko_engine::replica::ReadModel;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The signed-in admin: their user id, session and roles (any role; the engine checks which).
pub(crate) fn admin(g: &AppState, p: &crate::auth::Principal) -> ApiResult<(UserId, [u8; 32])> {
    let session = p
        .session()
        .ok_or_else(|| ApiError::forbidden("the operators' API needs an admin's session, not an API key"))?;
    let has_role = g
        .read
        .model()
        .engine
        .identity()
        .user(p.user)
        .is_some_and(|u| !u.roles.is_empty());
    if !has_role {
        return Err(Reject::RoleRequired.into());
    }
    Ok((p.user, session))
}

fn asset_id(m: &ReadModel, code: &str) -> ApiResult<AssetId> {
    Ok(crate::view::asset_ref(m, code)?.0)
}

async fn run(g: &AppState, cmd: Command) -> ApiResult<Reply> {
    Ok(g.submit(cmd).await?.reply?)
}

/// What an admin action records in the audit trail: its kind, subject and detail.
struct Record<'a> {
    kind: &'a str,
    subject: String,
    detail: serde_json::Value,
}

/// An admin action: the admin's passkey assertion for `action` (or `STEP_UP_REQUIRED` offering
/// only the passkey; `ADMIN_PASSKEY_REQUIRED` for TOTP, a recovery code, or an admin without a
/// passkey), its audit entry written first, then the command built with the proof; failures
/// are audited.
async fn act(
    g: &AppState,
    me: UserId,
    ip: &str,
    step_up: Option<&StepUpIn>,
    action: &Action,
    record: Record<'_>,
    command: impl FnOnce(kinko_core::identity::StepUp) -> Command,
) -> ApiResult<Reply> {
    let proof = prove_admin(g, me, action, step_up, ip).await?;
    let mut detail = record.detail;
    detail["ip"] = serde_json::json!(ip);
    crate::trail::record(
        g,
        record.kind,
        &format!("admin:{}", me.0),
        &record.subject,
        detail,
    )
    .await?;
    let res = run(g, command(proof)).await;
    audited(g, me, ip, res).await
}

#[derive(Serialize, ToSchema)]
pub struct HeldOut {
    pub id: String,
    pub user_id: String,
    pub asset: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: String,
    pub address: String,
    /// `review`, `waiting`, ...
    #[schema(value_type = crate::schema::WithdrawalStatus)]
    pub status: String,
    /// The risk rule that decided, and why.
    pub rule: Option<String>,
    pub decision: Option<String>,
    pub reason: Option<String>,
    pub approvals: Vec<String>,
    pub approvals_needed: u8,
    #[schema(format = DateTime)]
    pub requested_at: String,
}

fn held_out(m: &ReadModel, w: &Withdrawal) -> HeldOut {
    let dec = m.engine.asset(w.asset).map_or(0, |a| a.decimals);
    HeldOut {
        id: w.id.0.to_string(),
        user_id: w.user.0.to_string(),
        asset: crate::view::asset_code(m, w.asset),
        amount: fmt_amount(w.amount.0, dec),
        address: w.address.clone(),
        status: w.status.name().into(),
        rule: w.risk.as_ref().map(|r| r.rule.clone()),
        decision: w.risk.as_ref().map(|r| r.decision.name().to_owned()),
        reason: w.risk.as_ref().map(|r| r.reason.clone()),
        approvals: w.approvals.iter().map(|u| u.0.to_string()).collect(),
        approvals_needed: w.approvals_needed,
        requested_at: rfc3339(w.requested_ns),
    }
}

/// Withdrawals held for review or delayed, oldest first, with the rule that fired.
#[utoipa::path(get, path = "/ops/withdrawals/held", tag = "operations", security(("session" = [])),
    responses((status = 200, body = Vec<HeldOut>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn held(State(g): State<AppState>, Auth(p): Auth) -> ApiResult<axum::Json<Vec<HeldOut>>> {
    admin(&g, &p)?;
    g.caught_up().await?;
    let m = g.read.model();
    Ok(axum::Json(
        m.engine
            .wallet()
            .withdrawals()
            .iter()
            .filter(|w| matches!(w.status, WithdrawalStatus::Review | WithdrawalStatus::Waiting))
            .map(|w| held_out(&m, w))
            .collect(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewIn {
    pub approve: bool,
    pub reason: String,
    pub step_up: Option<StepUpIn>,
}

/// Approve or reject a held withdrawal. The requester never reviews; each reviewer counts once;
/// large ones need two.
#[utoipa::path(post, path = "/ops/withdrawals/{id}/review", tag = "operations", security(("session" = [])),
    params(("id" = String, Path)), request_body = ReviewIn,
    responses((status = 200, body = HeldOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn review(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(r): Json<ReviewIn>,
) -> ApiResult<axum::Json<HeldOut>> {
    let (me, session) = admin(&g, &p)?;
    let id = id
        .parse::<u64>()
        .map(WithdrawalId)
        .map_err(|_| ApiError::invalid("id must be a withdrawal id"))?;
    // The reviewer approves this exact withdrawal (requester, asset, destination, amount).
    let action = g
        .read
        .model()
        .engine
        .wallet()
        .withdrawal(id)
        .map(|w| w.review_action(me, r.approve))
        .ok_or_else(|| ApiError::from(Reject::WithdrawalNotFound))?;
    let record = Record {
        kind: "ops.review_withdrawal",
        subject: format!("withdrawal:{}", id.0),
        detail: serde_json::json!({"approve": r.approve, "reason": r.reason}),
    };
    let session = Via::Session(session);
    let res = act(&g, me, &ip, r.step_up.as_ref(), &action, record, |proof| {
        Command::ReviewWithdrawal {
            id,
            reviewer: me,
            approve: r.approve,
            reason: r.reason,
            via: session,
            proof,
        }
    })
    .await;
    match res? {
        Reply::Withdrawal(w) => Ok(axum::Json(held_out(&g.read.model(), &w))),
        other => Err(ApiError::invalid(format!("unexpected reply {other:?}"))),
    }
}

#[derive(Serialize, ToSchema)]
pub struct ProposalOut {
    pub id: String,
    /// `set_risk_policy`, `set_roles`, `resume_withdrawals`, `resume_operation`,
    /// `unfreeze_user`, `whitelist_address` or `restitution`.
    #[schema(value_type = crate::schema::ProposalKind)]
    pub kind: String,
    #[schema(value_type = Object)]
    pub change: serde_json::Value,
    pub proposer: String,
    pub reason: String,
    pub approver: Option<String>,
    /// `open`, `executed` or `withdrawn`.
    #[schema(value_type = crate::schema::ProposalStatus)]
    pub status: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

pub(crate) fn proposal_out(p: &Proposal) -> ProposalOut {
    ProposalOut {
        id: p.id.to_string(),
        kind: p.change.name().into(),
        change: serde_json::to_value(&p.change).unwrap_or_default(),
        proposer: p.proposer.0.to_string(),
        reason: p.reason.clone(),
        approver: p.approver.map(|u| u.0.to_string()),
        status: match p.status {
            kinko_core::admin::ProposalStatus::Open => "open",
            kinko_core::admin::ProposalStatus::Executed => "executed",
            kinko_core::admin::ProposalStatus::Withdrawn => "withdrawn",
        }
        .into(),
        created_at: rfc3339(p.created_ns),
    }
}

/// Proposals, newest first.
#[utoipa::path(get, path = "/ops/proposals", tag = "operations", security(("session" = [])),
    responses((status = 200, body = Vec<ProposalOut>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn proposals(State(g): State<AppState>, Auth(p): Auth) -> ApiResult<axum::Json<Vec<ProposalOut>>> {
    admin(&g, &p)?;
    g.caught_up().await?;
    let m = g.read.model();
    Ok(axum::Json(
        m.engine
            .admin()
            .proposals
            .iter()
            .rev()
            .map(proposal_out)
            .collect(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposeIn {
    /// `resume_withdrawals` (with `asset`, or none for every asset), `resume_operation` (with
    /// `asset` and `operation`: deposits or trading), `set_roles` (with `user_id` and `roles`),
    /// `unfreeze_user` (with `user_id`: a frozen or disabled account back to active),
    /// `set_risk_policy` (with `policy`, the engine's policy JSON), or `whitelist_address` (with
    /// `user_id`, `asset`, `address` and an optional `label`: a withdrawal address of that user
    /// usable at once, which the engine accepts only from two treasury admins; withdrawals to it
    /// still need the user's own second factor), or `restitution` (with `plan`: an incident's
    /// customers paid from the insurance fund, then the treasury; treasury admins).
    #[schema(value_type = crate::schema::ProposalKind)]
    pub kind: String,
    pub asset: Option<String>,
    pub operation: Option<String>,
    pub user_id: Option<String>,
    /// `viewer`, `support`, `risk`, `treasury`, `security_admin`.
    pub roles: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub policy: Option<serde_json::Value>,
    /// The destination of `whitelist_address`.
    pub address: Option<String>,
    /// The label of `whitelist_address`.
    pub label: Option<String>,
    /// The plan of `restitution`, as `kinko incident restitution ID` prints it (the engine's
    /// plan JSON): the engine checks it against the incident again, now and when approved.
    #[schema(value_type = Option<Object>)]
    pub plan: Option<serde_json::Value>,
    pub reason: String,
    pub step_up: Option<StepUpIn>,
}

fn change_of(g: &AppState, r: &ProposeIn) -> ApiResult<AdminChange> {
    match r.kind.as_str() {
        "resume_withdrawals" => {
            let asset = match &r.asset {
                Some(code) => Some(asset_id(&g.read.model(), code)?),
                None => None,
            };
            Ok(AdminChange::ResumeWithdrawals { asset })
        }
        "resume_operation" => {
            let code = r
                .asset
                .as_deref()
                .ok_or_else(|| ApiError::invalid("asset is required"))?;
            let asset = asset_id(&g.read.model(), code)?;
            let operation = r
                .operation
                .as_deref()
                .and_then(kinko_core::admin::Operation::from_name)
                .ok_or_else(|| ApiError::invalid("operation must be deposits or trading"))?;
            Ok(AdminChange::ResumeOperation { asset, operation })
        }
        "unfreeze_user" => {
            let user = user_of(r)?;
            let m = g.read.model();
            let u = m.engine.identity().user(user).ok_or(Reject::UserNotFound)?;
            if u.status == kinko_core::identity::UserStatus::Active {
                return Err(ApiError::invalid("this account is not frozen or disabled"));
            }
            Ok(AdminChange::UnfreezeUser { user })
        }
        "set_roles" => {
            let user = user_of(r)?;
            let roles = r
                .roles
                .iter()
                .flatten()
                .map(|n| {
                    AdminRole::from_name(n).ok_or_else(|| ApiError::invalid(format!("unknown role {n:?}")))
                })
                .collect::<ApiResult<Vec<_>>>()?;
            Ok(AdminChange::SetRoles { user, roles })
        }
        "set_risk_policy" => {
            let policy = r
                .policy
                .clone()
                .ok_or_else(|| ApiError::invalid("policy is required"))?;
            let policy =
                serde_json::from_value(policy).map_err(|e| ApiError::invalid(format!("policy: {e}")))?;
            Ok(AdminChange::SetRiskPolicy(policy))
        }
        "whitelist_address" => {
            let user = user_of(r)?;
            let code = r
                .asset
                .as_deref()
                .ok_or_else(|| ApiError::invalid("asset is required"))?;
            let asset = asset_id(&g.read.model(), code)?;
            let given = r
                .address
                .as_deref()
                .ok_or_else(|| ApiError::invalid("address is required"))?;
            // One spelling per destination, as the customer's own whitelisting stores it.
            let address = g
                .chain
                .canonical_address(&code.to_ascii_uppercase(), given)
                .ok_or(Reject::AddressInvalid)?;
            Ok(AdminChange::WhitelistAddress {
                user,
                asset,
                address,
                label: r.label.clone().unwrap_or_default(),
                cooling_ns: 0,
            })
        }
        "restitution" => {
            let plan = r
                .plan
                .clone()
                .ok_or_else(|| ApiError::invalid("plan is required"))?;
            let plan = serde_json::from_value(plan).map_err(|e| ApiError::invalid(format!("plan: {e}")))?;
            Ok(AdminChange::Restitution(plan))
        }
        _ => Err(ApiError::invalid(
            "kind must be resume_withdrawals, resume_operation, set_roles, unfreeze_user, set_risk_policy, whitelist_address or restitution",
        )),
    }
}

fn user_of(r: &ProposeIn) -> ApiResult<UserId> {
    r.user_id
        .as_deref()
        .and_then(|u| u.parse::<u64>().ok())
        .map(UserId)
        .ok_or_else(|| ApiError::invalid("user_id must be a user id"))
}

/// Proposes a sensitive change; a second admin with the same role carries it out.
#[utoipa::path(post, path = "/ops/proposals", tag = "operations", security(("session" = [])),
    request_body = ProposeIn,
    responses((status = 200, body = ProposalOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn propose(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Json(r): Json<ProposeIn>,
) -> ApiResult<axum::Json<ProposalOut>> {
    let (me, session) = admin(&g, &p)?;
    let change = change_of(&g, &r)?;
    let action = Action::ProposeChange {
        user: me,
        change: change.digest(),
    };
    let record = Record {
        kind: "ops.propose",
        subject: change.name().to_owned(),
        detail: serde_json::json!({"change": serde_json::to_value(&change).unwrap_or_default(), "reason": r.reason}),
    };
    let session = Via::Session(session);
    let res = act(&g, me, &ip, r.step_up.as_ref(), &action, record, |proof| {
        Command::ProposeChange {
            by: me,
            change,
            reason: r.reason,
            via: session,
            proof,
        }
    })
    .await;
    match res? {
        Reply::Proposal(p) => Ok(axum::Json(proposal_out(&p))),
        other => Err(ApiError::invalid(format!("unexpected reply {other:?}"))),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveIn {
    pub step_up: Option<StepUpIn>,
}

/// A second admin approves (and so carries out) someone else's proposal.
#[utoipa::path(post, path = "/ops/proposals/{id}/approve", tag = "operations", security(("session" = [])),
    params(("id" = String, Path)), request_body = ApproveIn,
    responses((status = 200, body = ProposalOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn approve(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(r): Json<ApproveIn>,
) -> ApiResult<axum::Json<ProposalOut>> {
    let (me, session) = admin(&g, &p)?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id must be a proposal id"))?;
    g.caught_up().await?;
    let change = g
        .read
        .model()
        .engine
        .admin()
        .proposal(id)
        .map(|p| p.change.digest())
        .ok_or(Reject::ProposalNotFound)?;
    let action = Action::ApproveChange {
        user: me,
        proposal: id,
        change,
    };
    let record = Record {
        kind: "ops.approve",
        subject: format!("proposal:{id}"),
        detail: serde_json::json!({}),
    };
    let session = Via::Session(session);
    let res = act(&g, me, &ip, r.step_up.as_ref(), &action, record, |proof| {
        Command::ApproveChange {
            id,
            by: me,
            via: session,
            proof,
        }
    })
    .await;
    match res? {
        Reply::Proposal(p) => Ok(axum::Json(proposal_out(&p))),
        other => Err(ApiError::invalid(format!("unexpected reply {other:?}"))),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HaltIn {
    /// An asset code; none halts every asset's withdrawals.
    pub asset: Option<String>,
    /// `withdrawals` (the default), `deposits` or `trading` (these two need an asset).
    pub operation: Option<String>,
    pub reason: String,
    pub step_up: Option<StepUpIn>,
}

/// Halts withdrawals of an asset, or of every asset, at once. Resuming takes two admins.
#[utoipa::path(post, path = "/ops/halt", tag = "operations", security(("session" = [])),
    request_body = HaltIn,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn halt(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Json(r): Json<HaltIn>,
) -> ApiResult<axum::http::StatusCode> {
    let (me, session) = admin(&g, &p)?;
    let asset = match &r.asset {
        Some(code) => Some(asset_id(&g.read.model(), code)?),
        None => None,
    };
    let operation = match r.operation.as_deref() {
        None | Some("withdrawals") => None,
        Some(o) => Some(
            kinko_core::admin::Operation::from_name(o)
                .ok_or_else(|| ApiError::invalid("operation must be withdrawals, deposits or trading"))?,
        ),
    };
    let action = match (operation, asset) {
        (None, _) => Action::Halt { user: me, asset },
        (Some(operation), Some(asset)) => Action::HaltOperation {
            user: me,
            asset,
            operation,
        },
        (Some(_), None) => return Err(ApiError::invalid("halting deposits or trading needs an asset")),
    };
    let record = Record {
        kind: "ops.halt",
        subject: r.asset.clone().unwrap_or_else(|| "all assets".into()),
        detail: serde_json::json!({"operation": operation.map_or("withdrawals", |o| o.name()), "reason": r.reason}),
    };
    let session = Via::Session(session);
    act(&g, me, &ip, r.step_up.as_ref(), &action, record, |proof| {
        let by = HaltBy::Admin {
            user: me,
            via: session,
            proof,
        };
        match (operation, asset) {
            (Some(operation), Some(asset)) => Command::HaltOperation {
                asset,
                operation,
                by,
                reason: r.reason,
            },
            _ => Command::HaltWithdrawals {
                asset,
                by,
                reason: r.reason,
            },
        }
    })
    .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct IncidentOut {
    pub id: String,
    pub kind: String,
    pub asset: Option<String>,
    pub summary: String,
    pub txids: Vec<String>,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub missing: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub customer_share: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub company_share: String,
    pub opened_by: String,
    #[schema(format = DateTime)]
    pub opened_at: String,
    /// `open` or `resolved`.
    #[schema(value_type = crate::schema::IncidentStatus)]
    pub status: String,
    pub resolution: Option<String>,
}

pub fn incident_out(m: &ReadModel, i: &Incident) -> IncidentOut {
    let dec = i.asset.and_then(|a| m.engine.asset(a)).map_or(0, |a| a.decimals);
    IncidentOut {
        id: i.id.to_string(),
        kind: i.kind.clone(),
        asset: i.asset.map(|a| crate::view::asset_code(m, a)),
        summary: i.summary.clone(),
        txids: i.txids.clone(),
        missing: fmt_amount(i.missing.0, dec),
        customer_share: fmt_amount(i.customer_share.0, dec),
        company_share: fmt_amount(i.company_share.0, dec),
        opened_by: i.opened_by.clone(),
        opened_at: rfc3339(i.opened_ns),
        status: match i.status {
            kinko_core::admin::IncidentStatus::Open => "open",
            kinko_core::admin::IncidentStatus::Resolved => "resolved",
        }
        .into(),
        resolution: i.resolution.clone(),
    }
}

/// Incidents, newest first.
#[utoipa::path(get, path = "/ops/incidents", tag = "operations", security(("session" = [])),
    responses((status = 200, body = Vec<IncidentOut>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn incidents(State(g): State<AppState>, Auth(p): Auth) -> ApiResult<axum::Json<Vec<IncidentOut>>> {
    admin(&g, &p)?;
    g.caught_up().await?;
    let m = g.read.model();
    Ok(axum::Json(
        m.engine
            .admin()
            .incidents
            .iter()
            .rev()
            .map(|i| incident_out(&m, i))
            .collect(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveIn {
    pub resolution: String,
    pub step_up: Option<StepUpIn>,
}

/// A security admin closes an incident.
#[utoipa::path(post, path = "/ops/incidents/{id}/resolve", tag = "operations", security(("session" = [])),
    params(("id" = String, Path)), request_body = ResolveIn,
    responses((status = 200, body = IncidentOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn resolve(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(r): Json<ResolveIn>,
) -> ApiResult<axum::Json<IncidentOut>> {
    let (me, session) = admin(&g, &p)?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id must be an incident id"))?;
    let action = Action::ResolveIncident {
        user: me,
        incident: id,
    };
    let record = Record {
        kind: "ops.resolve_incident",
        subject: format!("incident:{id}"),
        detail: serde_json::json!({"resolution": r.resolution}),
    };
    let session = Via::Session(session);
    let res = act(&g, me, &ip, r.step_up.as_ref(), &action, record, |proof| {
        Command::ResolveIncident {
            id,
            by: me,
            resolution: r.resolution,
            via: session,
            proof,
        }
    })
    .await;
    match res? {
        Reply::Incident(i) => Ok(axum::Json(incident_out(&g.read.model(), &i))),
        other => Err(ApiError::invalid(format!("unexpected reply {other:?}"))),
    }
}

#[derive(Serialize, ToSchema)]
pub struct AssetStatusOut {
    pub asset: String,
    pub deposits: bool,
    pub withdrawals: bool,
    pub trading: bool,
    /// Why withdrawals that run are delayed now (the asset's node or signer unavailable, the
    /// hot wallet waiting for a refill, the custody service retrying); absent when they flow.
    pub withdrawals_delayed: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct NoticeOut {
    pub kind: String,
    pub asset: Option<String>,
    pub since: String,
}

#[derive(Serialize, ToSchema)]
pub struct StatusOut {
    /// Whether new orders and requests are taken now (false while the journal cannot write:
    /// a full disk, until space returns; a failed journal, until a restart).
    pub accepting_requests: bool,
    /// Every asset's withdrawals halted.
    pub withdrawals_halted: bool,
    pub assets: Vec<AssetStatusOut>,
    /// Open incidents (kind and asset only: details are for operators).
    pub notices: Vec<NoticeOut>,
}

/// Public platform status: which operations run, and current notices.
#[utoipa::path(get, path = "/status", tag = "public",
    responses((status = 200, body = StatusOut)))]
async fn status(State(g): State<AppState>) -> ApiResult<axum::Json<StatusOut>> {
    g.caught_up().await?;
    let m = g.read.model();
    let e = &m.engine;
    let delayed = |code: &str| {
        let down = |part: &str| g.health.get(&format!("{part}:{code}")).is_some_and(|c| !c.up);
        [
            ("node", "the node is unavailable"),
            ("signer", "the signer is unavailable"),
            ("hot", "the hot wallet is waiting for a refill from cold storage"),
            ("custody", "the custody service is retrying"),
        ]
        .into_iter()
        .find(|(part, _)| down(part))
        .map(|(_, why)| why.to_owned())
    };
    let journal_ok = g.engine.stats().journal().0 == kinko_engine::JournalState::Ok;
    Ok(axum::Json(StatusOut {
        accepting_requests: journal_ok && e.halted().is_none(),
        withdrawals_halted: e.admin().global_halt.is_some(),
        assets: e
            .assets()
            .iter()
            .map(|a| AssetStatusOut {
                asset: a.code.as_str().to_owned(),
                deposits: a.switches.deposits,
                withdrawals: a.switches.withdrawals && e.admin().global_halt.is_none(),
                trading: a.switches.trading,
                withdrawals_delayed: delayed(a.code.as_str()),
            })
            .collect(),
        notices: e
            .admin()
            .open_incidents()
            .map(|i| NoticeOut {
                kind: i.kind.clone(),
                asset: i.asset.map(|a| crate::view::asset_code(&m, a)),
                since: rfc3339(i.opened_ns),
            })
            .collect(),
    }))
}

/// The signed-in admin as `kinko-signer init --admin FILE` and `kinko-signer admin add --admin
/// FILE` read them: one record per passkey (public values only).
#[derive(Serialize, ToSchema)]
pub struct SignerAdminOut {
    /// Kinko's user id.
    pub id: u64,
    pub name: String,
    pub email: String,
    /// Hex.
    pub credential_id: String,
    /// The passkey's public key as the signer reads it (hex).
    pub public_key: String,
}

/// The signed-in admin's enrolment records for the signer (one per passkey).
#[utoipa::path(get, path = "/ops/signer-admin", tag = "operations", security(("session" = [])),
    responses((status = 200, body = Vec<SignerAdminOut>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn signer_admin(
    State(g): State<AppState>,
    Auth(p): Auth,
) -> ApiResult<axum::Json<Vec<SignerAdminOut>>> {
    let (me, _) = admin(&g, &p)?;
    g.caught_up().await?;
    let m = g.read.model();
    let u = m
        .engine
        .identity()
        .user(me)
        .ok_or_else(|| ApiError::from(Reject::RoleRequired))?;
    let name = u.email.split('@').next().unwrap_or(&u.email).to_owned();
    Ok(axum::Json(
        u.passkeys
            .iter()
            .map(|k| SignerAdminOut {
                id: me.0,
                name: name.clone(),
                email: u.email.clone(),
                credential_id: hex::encode(&k.credential_id),
                public_key: hex::encode(&k.public_key),
            })
            .collect(),
    ))
}

pub fn routes(r: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    r.routes(routes!(held))
        .routes(routes!(signer_admin))
        .routes(routes!(review))
        .routes(routes!(proposals, propose))
        .routes(routes!(approve))
        .routes(routes!(halt))
        .routes(routes!(incidents))
        .routes(routes!(resolve))
        .routes(routes!(status))
}
