//! Errors as clients see them: `{"code", "message"}` with a stable code and the right status.
//! One table maps every engine reject to its HTTP status; nothing maps to 500 except a bug
//! (a caught panic), which is logged with the request id.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kinko_core::Reject;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// What the client needs to go on (a step-up challenge), sent as `step_up`.
    pub step_up: Option<Box<serde_json::Value>>,
    /// Seconds before trying again is worth it, sent as `Retry-After` (rate limits, throttled
    /// sign-in attempts).
    pub retry_after_s: Option<u64>,
    /// With `NOT_LEADER`: the cluster leader's API address, sent as `leader` and in the
    /// `X-Kinko-Leader` header.
    pub leader: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `FUNDS_INSUFFICIENT`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// With `STEP_UP_REQUIRED`: the challenge to answer with a second factor.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::StepUpChallenge>)]
    pub step_up: Option<Box<serde_json::Value>>,
    /// With `NOT_LEADER`: the leader's API address, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            step_up: None,
            retry_after_s: None,
            leader: None,
        }
    }
    /// The same error with a `Retry-After` of `seconds` (at least 1).
    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after_s = Some(seconds.max(1));
        self
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER", message)
    }
    pub fn bad_json(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_JSON", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }
    /// 429 `RATE_LIMITED` with `Retry-After: retry_after_s`.
    pub fn rate_limited(retry_after_s: u64) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "too many requests; slow down",
        )
        .retry_after(retry_after_s)
    }
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
}

/// The HTTP status of each engine reject.
pub fn reject_status(r: Reject) -> StatusCode {
    use Reject::*;
    match r {
        EngineHalted | EngineOverloaded | EngineStopping => StatusCode::SERVICE_UNAVAILABLE,
        CredentialsInvalid | SessionInvalid => StatusCode::UNAUTHORIZED,
        SecondFactorRequired
        | StepUpRequired
        | StepUpActionMismatch
        | StepUpExpired
        | StepUpReplayed
        | StepUpInvalid
        | AdminPasskeyRequired
        | PasskeyAssertionInvalid
        | RecoveryCodeInvalid
        | RecoveryNotAllowed
        | ReenrolmentRequired
        | SecurityLocked
        | AccountFrozen
        | AccountDisabled
        | ApiKeyScopeMissing
        | ApiKeyIpNotAllowed
        | PasskeyRequired
        | ApiKeyExpired => StatusCode::FORBIDDEN,
        UserNotFound | FactorNotEnrolled => StatusCode::NOT_FOUND,
        EmailTaken | FactorExists => StatusCode::CONFLICT,
        AssetNotFound
        | AccountNotFound
        | MarketNotFound
        | TradeNotFound
        | OrderNotFound
        | DepositNotFound
        | WithdrawalNotFound
        | WithdrawalAddressNotFound
        | ApiKeyNotFound
        | PendingNotFound
        | ReversalTargetNotFound => StatusCode::NOT_FOUND,
        AssetExists
        | MarketExists
        | TransferExistsWithDifferentFields
        | DuplicateClientOrderId
        | AddressTaken
        | DepositConflict
        | DuplicateClientWithdrawalId
        | ApiKeyExists
        | TradeAlreadyBusted
        | AlreadyReversed
        | PendingAlreadyPosted
        | PendingAlreadyVoided
        | PendingExpired
        | DepositStateInvalid
        | WithdrawalStateInvalid
        | WithdrawalNotReady
        | AlreadyReviewed => StatusCode::CONFLICT,
        ReviewerIsRequester | RoleRequired | OwnProposal | RolesBootstrapClosed | AddressQuorumRequired => {
            StatusCode::FORBIDDEN
        }
        ProposalNotFound | IncidentNotFound => StatusCode::NOT_FOUND,
        ProposalNotOpen | RestitutionDone | RestitutionUnfunded => StatusCode::CONFLICT,
        WithdrawalLimitExceeded | HotOutflowCapReached => StatusCode::FORBIDDEN,
        MarketHalted
        | MarketCancelOnly
        | MarketPostOnly
        | AssetTradingDisabled
        | OrderTypeDisabled
        | DepositsDisabled
        | WithdrawalsDisabled
        | WithdrawalAddressCooling
        | ReferenceStale => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl From<Reject> for ApiError {
    fn from(r: Reject) -> ApiError {
        ApiError::new(reject_status(r), r.code(), r.to_string())
    }
}

/// When the engine gives no durable reply. Every code says what became of the command, and
/// only `OUTCOME_UNKNOWN` leaves it open (all are HTTP 503):
///
/// | code | promise |
/// |---|---|
/// | `ENGINE_OVERLOADED` | not applied, and never will be; retry shortly |
/// | `ENGINE_STOPPING` | not applied, and never will be; the server is shutting down |
/// | `ENGINE_HALTED` | not applied, and never will be; the engine halted on an integrity failure |
/// | `JOURNAL_FULL` | not applied, and never will be; the disk is full, the server keeps serving reads and accepts writes again by itself once space is freed; retry later |
/// | `ENGINE_UNAVAILABLE` | not applied, and never will be; the journal failed and the server writes nothing until an operator restarts it |
/// | `OUTCOME_UNKNOWN` | may or may not have been applied: the journal failed while writing it; look it up by its client id (after the restart the journal's failure requires, the answer is final) |
/// | `NOT_LEADER` | not applied by this node, and never will be: it is a standby or a deposed primary of a cluster; the message and the `X-Kinko-Leader` header name the leader's address, where the same request (same client id) can be sent |
///
/// A command answered with any code but `OUTCOME_UNKNOWN` is never applied, not even after a
/// restart; resubmitting it (same client id) is safe.
impl From<kinko_engine::SubmitError> for ApiError {
    fn from(e: kinko_engine::SubmitError) -> ApiError {
        use kinko_engine::SubmitError as S;
        let message = match &e {
            S::Overloaded => return ApiError::from(Reject::EngineOverloaded),
            S::Stopped(_) => return ApiError::from(Reject::EngineStopping),
            S::Halted(_) => return ApiError::from(Reject::EngineHalted),
            S::JournalFull(_) => {
                "the exchange cannot record commands right now (its disk is full): this command was \
                 not carried out and will not be; retry later"
            }
            S::JournalFailed(_) => {
                "the exchange's journal failed: this command was not carried out and will not be; \
                 writes resume after the operator restarts the server"
            }
            S::OutcomeUnknown(_) => {
                "the exchange's journal failed while recording this command: it may or may not have \
                 been carried out; look it up by its client id (once the server has restarted, the \
                 answer is final) before sending it again"
            }
            S::NotLeader(leader) => {
                let mut a = ApiError::unavailable(
                    e.code(),
                    if leader.is_empty() {
                        "this node does not take writes (it is not the cluster's leader) and no leader \
                         is known right now: this command was not carried out; retry shortly"
                            .to_owned()
                    } else {
                        format!(
                            "this node does not take writes (it is not the cluster's leader): this \
                             command was not carried out; send it to the leader at {leader}"
                        )
                    },
                );
                a.leader = Some(leader.clone()).filter(|l| !l.is_empty());
                return a;
            }
        };
        tracing::warn!(code = e.code(), error = %e, "command not answered by the engine");
        ApiError::unavailable(e.code(), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(ErrorBody {
                code: self.code,
                message: self.message,
                step_up: self.step_up,
                leader: self.leader.clone(),
            }),
        )
            .into_response();
        if let Some(l) = self.leader.as_deref().and_then(|l| l.parse().ok()) {
            r.headers_mut().insert("x-kinko-leader", l);
        }
        r.extensions_mut().insert(ErrorCode(self.code));
        if let Some(s) = self.retry_after_s {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, s.into());
        }
        r
    }
}

/// Attached to error responses so that metrics can count rejects by code.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub &'static str);

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

pub type ApiResult<T> = Result<T, ApiError>;

pub fn unexpected(r: &kinko_core::engine::Reply) -> ApiError {
    tracing::error!(reply = ?r, "unexpected engine reply");
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "unexpected engine reply; it has been logged",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinko_engine::SubmitError as S;

    /// Every unanswered command gets a 503 with its own stable code, and only
    /// `OUTCOME_UNKNOWN` admits the command may have happened.
    #[test]
    fn each_submit_error_has_its_code_and_promise() {
        let s = || "x".to_owned();
        let table = [
            (S::Overloaded, "ENGINE_OVERLOADED", false),
            (S::Stopped(s()), "ENGINE_STOPPING", false),
            (S::Halted(s()), "ENGINE_HALTED", false),
            (S::JournalFull(s()), "JOURNAL_FULL", false),
            (S::JournalFailed(s()), "ENGINE_UNAVAILABLE", false),
            (S::OutcomeUnknown(s()), "OUTCOME_UNKNOWN", true),
            (S::NotLeader(s()), "NOT_LEADER", false),
        ];
        for (e, code, maybe) in table {
            assert_eq!(e.may_have_been_applied(), maybe, "{code}");
            let a = ApiError::from(e);
            assert_eq!((a.status, a.code), (StatusCode::SERVICE_UNAVAILABLE, code));
            assert_eq!(a.message.contains("may or may not"), maybe, "{}", a.message);
        }
    }
}
