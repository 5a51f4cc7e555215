//! The operator's custody endpoints (`/api/v1/admin/custody/{asset}/...`): the node's view of
//! hot and cold against the ledger, refill PSBTs for the cold keyholders, and the submission of
//! a refill they signed. The work is done by the custody service (crate `kinko-custody`),
//! registered with [`crate::Gateway::set_custody`]; without one these answer
//! `CUSTODY_UNAVAILABLE`.

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path};
use crate::stepup::Operator;
use crate::AppState;
use axum::extract::State;
use kinko_core::ledger::SystemAccount;
use kinko_engine::ports::CustodyOps;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

fn ops(g: &AppState) -> ApiResult<std::sync::Arc<dyn CustodyOps>> {
    g.custody
        .get()
        .cloned()
        .ok_or_else(|| ApiError::unavailable("CUSTODY_UNAVAILABLE", "no custody service runs here"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, kinko_engine::ports::CustodyOpsError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::unavailable("CUSTODY_UNAVAILABLE", "the custody call did not finish"))?
        .map_err(|e| ApiError::unavailable("CUSTODY_FAILED", e.to_string()))
}

fn asset_decimals(g: &AppState, code: &str) -> ApiResult<(String, u8)> {
    let m = g.read.model();
    let (id, _) = crate::view::asset_ref(&m, code)?;
    let a = m
        .engine
        .asset(id)
        .ok_or_else(|| ApiError::invalid("unknown asset"))?;
    Ok((a.code.as_str().to_owned(), a.decimals))
}

#[derive(Serialize, ToSchema)]
pub struct CustodyOut {
    pub asset: String,
    /// The node's view (confirmed and unconfirmed outputs of ours).
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub node_hot: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub node_cold: String,
    /// The ledger's custody accounts.
    #[schema(pattern = r"^-?[0-9]+(\.[0-9]+)?$")]
    pub ledger_hot: String,
    #[schema(pattern = r"^-?[0-9]+(\.[0-9]+)?$")]
    pub ledger_cold: String,
    #[schema(pattern = r"^-?[0-9]+(\.[0-9]+)?$")]
    pub deposits_in_flight: String,
    #[schema(pattern = r"^-?[0-9]+(\.[0-9]+)?$")]
    pub withdrawals_in_flight: String,
    /// Miner fees company funds did not cover (paid with customers' coins; reconciliation
    /// reports them as a reserve shortfall).
    #[schema(pattern = r"^-?[0-9]+(\.[0-9]+)?$")]
    pub network_fees: String,
    /// Company funds: withdrawal and trading fees earned, and the company's own coins (what
    /// arrived at `company_address`). Miner fees are paid from fee revenue first, then the
    /// treasury.
    #[schema(pattern = r"^-?[0-9]+(\.[0-9]+)?$")]
    pub fee_revenue: String,
    #[schema(pattern = r"^-?[0-9]+(\.[0-9]+)?$")]
    pub company_treasury: String,
    #[schema(pattern = r"^-?[0-9]+(\.[0-9]+)?$")]
    pub insurance_fund: String,
    /// Fee revenue and treasury not held: what can pay the next miner fees.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub company_funds: String,
    /// The company's own deposit address: coins sent there are credited to the treasury
    /// (none on a chain without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_address: Option<String>,
    /// What each withdrawal of the asset is charged.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub withdrawal_fee: String,
    /// On an account chain (Ethereum): the hot address, and `node_hot` split into what it holds
    /// and what the deposit addresses hold (deposits not yet swept, and sweep dust).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hot_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub node_hot_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub node_deposit_addresses: Option<String>,
}

/// The node's balances next to the ledger's custody accounts.
#[utoipa::path(get, path = "/admin/custody/{asset}", tag = "operator", security(("operator" = [])),
    params(("asset" = String, Path)),
    responses((status = 200, body = CustodyOut), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn custody_status(
    State(g): State<AppState>,
    _: Operator,
    Path(asset): Path<String>,
) -> ApiResult<axum::Json<CustodyOut>> {
    let (code, dec) = asset_decimals(&g, &asset)?;
    let o = ops(&g)?;
    let c = code.clone();
    let (hot, cold) = blocking(move || o.balances(&c)).await?;
    let (o, c) = (ops(&g)?, code.clone());
    // A chain without a company deposit address (Ethereum) answers without one.
    let company_address = blocking(move || o.company_address(&c)).await.ok();
    let (o, c) = (ops(&g)?, code.clone());
    let breakdown = blocking(move || o.hot_breakdown(&c).transpose()).await?;
    let m = g.read.model();
    let id = m
        .engine
        .asset_by_code(&code)
        .ok_or_else(|| ApiError::invalid("unknown asset"))?;
    let a = m
        .engine
        .asset(id)
        .ok_or_else(|| ApiError::invalid("unknown asset"))?;
    let bal = |w: SystemAccount| {
        let b = m
            .engine
            .ledger()
            .account(a.system_account(w))
            .map_or(0, |x| x.balance());
        crate::wire::fmt_signed(b, dec)
    };
    Ok(axum::Json(CustodyOut {
        asset: code,
        node_hot: crate::wire::fmt_amount(hot, dec),
        node_cold: crate::wire::fmt_amount(cold, dec),
        ledger_hot: bal(SystemAccount::HotWallet),
        ledger_cold: bal(SystemAccount::ColdWallet),
        deposits_in_flight: bal(SystemAccount::DepositsInFlight),
        withdrawals_in_flight: bal(SystemAccount::WithdrawalsInFlight),
        network_fees: bal(SystemAccount::NetworkFees),
        fee_revenue: bal(SystemAccount::FeeRevenue),
        company_treasury: bal(SystemAccount::CompanyTreasury),
        insurance_fund: bal(SystemAccount::InsuranceFund),
        company_funds: crate::wire::fmt_amount(
            [SystemAccount::FeeRevenue, SystemAccount::CompanyTreasury]
                .into_iter()
                .filter_map(|w| m.engine.ledger().account(a.system_account(w)))
                .map(|x| x.available())
                .fold(0u128, u128::saturating_add),
            dec,
        ),
        company_address,
        withdrawal_fee: crate::wire::fmt_amount(m.engine.wallet().withdrawal_fee(id).0, dec),
        hot_address: breakdown.as_ref().map(|b| b.0.clone()),
        node_hot_address: breakdown.as_ref().map(|b| crate::wire::fmt_amount(b.1, dec)),
        node_deposit_addresses: breakdown.as_ref().map(|b| crate::wire::fmt_amount(b.2, dec)),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefillIn {
    /// Decimal, in whole units of the asset.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: String,
}

#[derive(Serialize, ToSchema)]
pub struct RefillOut {
    /// Unsigned PSBT, base64 (a UTXO chain), or an Ethereum refill request (JSON): each cold
    /// keyholder runs `kinko-signer offline-sign` on it.
    pub psbt: String,
}

/// A cold → hot refill as an unsigned PSBT for the cold keyholders.
#[utoipa::path(post, path = "/admin/custody/{asset}/refill", tag = "operator", security(("operator" = [])),
    params(("asset" = String, Path)), request_body = RefillIn,
    responses((status = 200, body = RefillOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn refill(
    State(g): State<AppState>,
    _: Operator,
    Path(asset): Path<String>,
    Json(r): Json<RefillIn>,
) -> ApiResult<axum::Json<RefillOut>> {
    let (code, dec) = asset_decimals(&g, &asset)?;
    let amount = kinko_core::Amount::from_decimal(&r.amount, dec)
        .ok()
        .map(|a| a.0)
        .filter(|a| *a > 0)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "amount must be a positive decimal with at most {dec} places"
            ))
        })?;
    let o = ops(&g)?;
    crate::trail::record(
        &g,
        "operator.custody_refill",
        "operator",
        &code,
        serde_json::json!({"amount": amount}),
    )
    .await?;
    let psbt = blocking(move || o.refill(&code, amount)).await?;
    Ok(axum::Json(RefillOut { psbt }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitIn {
    /// The refill PSBT with the keyholders' signatures, base64.
    pub psbt: String,
}

#[derive(Serialize, ToSchema)]
pub struct SubmitOut {
    pub txid: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub network_fee: String,
}

/// Broadcasts a refill signed offline by enough cold keyholders and records the move.
#[utoipa::path(post, path = "/admin/custody/{asset}/submit", tag = "operator", security(("operator" = [])),
    params(("asset" = String, Path)), request_body = SubmitIn,
    responses((status = 200, body = SubmitOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn submit(
    State(g): State<AppState>,
    _: Operator,
    Path(asset): Path<String>,
    Json(r): Json<SubmitIn>,
) -> ApiResult<axum::Json<SubmitOut>> {
    let (code, dec) = asset_decimals(&g, &asset)?;
    let o = ops(&g)?;
    crate::trail::record(
        &g,
        "operator.custody_submit",
        "operator",
        &code,
        serde_json::json!({"psbt_bytes": r.psbt.len()}),
    )
    .await?;
    let (txid, amount, fee) = blocking(move || o.submit(&code, r.psbt.trim())).await?;
    Ok(axum::Json(SubmitOut {
        txid,
        amount: crate::wire::fmt_amount(amount, dec),
        network_fee: crate::wire::fmt_amount(fee, dec),
    }))
}

pub fn routes(r: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    r.routes(routes!(custody_status))
        .routes(routes!(refill))
        .routes(routes!(submit))
        .routes(routes!(sim_deposit))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimDepositIn {
    /// A deposit address kinko handed out (`POST /api/v1/deposit-addresses`).
    pub address: String,
    /// Decimal, in whole units of the address's asset.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: String,
}

#[derive(Serialize, ToSchema)]
pub struct SimDepositOut {
    pub deposit_id: String,
    pub txid: String,
}

/// Who may send a simulated deposit: the operator (any address), or the owner of the address
/// (their full session or API key). The simulated chain's being off is said first: there is
/// nothing to authenticate against.
pub enum SimCaller {
    Operator,
    User(kinko_core::UserId),
}

impl axum::extract::FromRequestParts<AppState> for SimCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        g: &AppState,
    ) -> Result<SimCaller, ApiError> {
        if !g.simulated.load(std::sync::atomic::Ordering::Acquire) {
            return Err(sim_disabled());
        }
        let token = crate::auth::bearer(parts)?;
        if let Some(want) = g.config.operator_token_hash {
            use subtle::ConstantTimeEq;
            if bool::from(crate::stepup::operator_token_hash(token).ct_eq(&want)) {
                return Ok(SimCaller::Operator);
            }
        }
        let p = crate::auth::bearer_principal(
            g,
            token,
            crate::auth::client_ip(parts),
            crate::ratelimit::RateClass::Private,
        )
        .await?;
        // As for the deposit address itself: a key that may at least view the account.
        p.require(crate::auth::Need::View)?;
        Ok(SimCaller::User(p.user))
    }
}

fn sim_disabled() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        "SIM_DISABLED",
        "the simulated chain is off on this server (it runs only with `kinko serve --demo` or `[sim] enabled = true`, never beside a real chain)",
    )
}

/// Simulated chain only: "sends" coins to a deposit address. The deposit shows at once (held)
/// and is credited a second later. Needs the address owner's session or API key, or the
/// operator token; answers `SIM_DISABLED` unless the simulated chain runs (`--demo` or
/// `[sim] enabled = true`).
#[utoipa::path(post, path = "/sim/deposits", tag = "wallet",
    request_body = SimDepositIn,
    security(("api_key" = []), ("session" = []), ("operator" = [])),
    responses((status = 200, body = SimDepositOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn sim_deposit(
    State(g): State<AppState>,
    caller: SimCaller,
    Json(r): Json<SimDepositIn>,
) -> ApiResult<axum::Json<SimDepositOut>> {
    let (id, txid) = simulate_deposit(&g, &caller, r.address.trim(), &r.amount).await?;
    Ok(axum::Json(SimDepositOut {
        deposit_id: id.0.to_string(),
        txid,
    }))
}

/// "Sends" `amount` (a decimal in whole units of the address's asset) to a deposit address on
/// the simulated chain: the deposit is seen at once and confirmed by the simulated chain's loop (`kinko_sim::run_sim`) a second later.
/// Refused unless the simulated chain runs, and for an address that is not the caller's (the
/// operator may name any).
async fn simulate_deposit(
    g: &crate::AppState,
    caller: &SimCaller,
    address: &str,
    amount: &str,
) -> crate::error::ApiResult<(kinko_core::wallet::DepositId, String)> {
    use crate::error::ApiError;
    use kinko_core::engine::{Command, Reply};
    if !g.simulated.load(std::sync::atomic::Ordering::Acquire) {
        return Err(sim_disabled());
    }
    g.caught_up().await?;
    let (asset, decimals) = {
        let m = g.read.model();
        let w = m.engine.wallet();
        m.engine
            .assets()
            .iter()
            .enumerate()
            .map(|(i, a)| (kinko_core::AssetId(i as u32), a.decimals))
            .find(|(a, _)| match caller {
                SimCaller::Operator => w.deposit_address_owner(*a, address).is_some(),
                // Someone else's address is as unknown as a made-up one.
                SimCaller::User(u) => w.deposit_address_owner(*a, address) == Some(*u),
            })
    }
    .ok_or(kinko_core::Reject::AddressUnknown)?;
    let amount = crate::wire::parse_amount("amount", amount, decimals)?;
    let n = g.sim_deposits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let txid = hex::encode(
        blake3::hash(format!("sim deposit {address} {n} {}", crate::auth::now_ns()).as_bytes()).as_bytes(),
    );
    match g
        .submit(Command::DepositSeen {
            asset,
            address: address.to_owned(),
            txid: txid.clone(),
            vout: 0,
            amount,
        })
        .await?
        .reply?
    {
        Reply::Deposit(id) => Ok((id, txid)),
        other => Err(ApiError::invalid(format!("unexpected reply {other:?}"))),
    }
}
