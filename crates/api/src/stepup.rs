//! Step-up: the proof of a fresh second factor that every sensitive action needs, shared by
//! every surface. [`prove`] turns a `step_up` answer into a `StepUp` (or answers
//! `STEP_UP_REQUIRED` with a challenge bound to the action's digest); the client answers with a
//! TOTP code, a WebAuthn assertion over that challenge, or (only to re-enrol) a recovery code.
//! Failures are counted ([`Failures`], ephemeral) and audited in the journal; [`audited`]
//! records an engine refusal that concerns the factor. [`Operator`] authenticates the operator
//! token.

use crate::auth::{client_ip, now_ns};
use crate::error::{ApiError, ApiResult};
use crate::identity;
use crate::vault::random_bytes;
use crate::webauthn::{self, AssertionResponse, CredentialKey, RelyingParty};
use crate::wire::rfc3339;
use crate::{totp, AppState};
use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use kinko_core::identity::{
    challenge_bytes, parse_challenge, Action, IdentityCommand, ProofFactor, StepUp, User,
};
use kinko_core::{Reject, UserId};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

pub(crate) fn ttl_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

pub(crate) fn unb64(what: &str, s: &str) -> ApiResult<Vec<u8>> {
    if s.len() > 8192 {
        return Err(ApiError::invalid(format!("{what} is too long")));
    }
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| ApiError::invalid(format!("{what} is not base64url")))
}

/// The relying party: configured origins, or `http://localhost:<port>` of the bound socket.
pub fn relying_party(g: &AppState) -> RelyingParty {
    let c = &g.config.identity;
    let origins = if c.rp_origins.is_empty() {
        vec![format!("http://localhost:{}", g.bound_port())]
    } else {
        c.rp_origins.clone()
    };
    RelyingParty {
        id: c.rp_id.clone(),
        name: "kinko".into(),
        origins,
    }
}

/// The failure counter of a user's second factor answered from `ip` (what `prove` checks):
/// per address, so that someone who has the password cannot lock the owner's factor.
pub(crate) fn second_factor_key(user: UserId, ip: &str) -> String {
    format!("2fa:{}|{}", user.0, crate::throttle::address(ip))
}

/// The failure counter of a client address, across accounts (password spraying).
pub(crate) fn ip_key(ip: &str) -> String {
    format!("ip:{}", crate::throttle::address(ip))
}

/// Refused while `ip`, or one of `keys`, must wait after failures.
pub(crate) fn check_throttle(g: &AppState, ip: &str, keys: &[&str]) -> ApiResult<()> {
    let ip = ip_key(ip);
    let wait = std::iter::once(ip.as_str())
        .chain(keys.iter().copied())
        .filter_map(|k| g.failures.blocked(k))
        .max();
    match wait {
        Some(s) => Err(locked(s)),
        None => Ok(()),
    }
}

/// Records a second-factor failure (or, without a user, a failure from `ip`) in the journal and
/// counts it; see [`audit_failure_as`].
pub async fn audit_failure(g: &AppState, user: Option<UserId>, ip: &str, reason: &str) {
    let key = user.map_or_else(|| ip_key(ip), |u| second_factor_key(u, ip));
    audit_failure_as(g, &key, user, ip, reason).await;
}

/// Records an authentication failure in the journal (audit) and counts it under `key` and
/// under the client's address: each kind of failure has its own counter, so wrong passwords
/// typed by a stranger cannot block the user's second factor, and failures from one address
/// never hold back another. Until a key's limit each failure is journaled, then only the one
/// that reached it, until the window passes.
pub async fn audit_failure_as(g: &AppState, key: &str, user: Option<UserId>, ip: &str, reason: &str) {
    let address = ip_key(ip);
    if key != address {
        g.failures.fail(&address);
    }
    let over = g.failures.blocked(key).is_some();
    let reached = g.failures.fail(key);
    if over && !reached {
        return;
    }
    let reason = if reached {
        format!("{reason} (limit reached: further attempts refused for a while)")
    } else {
        reason.to_owned()
    };
    let _ = identity(
        g,
        IdentityCommand::AuthFailed {
            user,
            ip: ip.chars().take(64).collect(),
            reason,
        },
    )
    .await;
}

/// 429 `TOO_MANY_FAILURES` with `Retry-After`: attempts from this address wait that long.
pub(crate) fn locked(retry_after_s: u64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_FAILURES",
        "too many failed attempts from this address; wait before trying again",
    )
    .retry_after(retry_after_s)
}

/// A second-factor answer to a step-up challenge.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpIn {
    /// The `challenge` of the `STEP_UP_REQUIRED` answer (base64url). Required with `webauthn`;
    /// optional with `totp` (the code is then bound to the action as sent).
    pub challenge: Option<String>,
    /// A 6-digit TOTP code.
    pub totp: Option<String>,
    /// A WebAuthn assertion (`PublicKeyCredential` JSON, binary fields base64url) over the
    /// challenge.
    #[schema(value_type = Option<crate::schema::WebAuthnAssertion>)]
    pub webauthn: Option<AssertionResponse>,
    /// A recovery code: only to re-enrol a second factor.
    pub recovery_code: Option<String>,
}

/// The `STEP_UP_REQUIRED` answer: a fresh challenge for exactly this action.
pub fn step_up_required(g: &AppState, user: UserId, action: &Action) -> ApiError {
    challenge_for(g, user, action, false)
}

/// `ADMIN_PASSKEY_REQUIRED`: what an admin without a passkey, or answering with TOTP or a
/// recovery code, is told.
fn admin_passkey_required() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        Reject::AdminPasskeyRequired.code(),
        "admin actions need a passkey (TOTP codes and recovery codes are not accepted for them): \
         add a passkey on the account page, then try again",
    )
}

/// As [`prove`], for an admin action: only a passkey assertion is offered and accepted, as the
/// engine verifies the assertion itself and refuses anything else (`ADMIN_PASSKEY_REQUIRED`).
pub async fn prove_admin(
    g: &AppState,
    user: UserId,
    action: &Action,
    input: Option<&StepUpIn>,
    ip: &str,
) -> ApiResult<StepUp> {
    let has_passkey = g
        .read
        .model()
        .engine
        .identity()
        .user(user)
        .is_some_and(|u| !u.passkeys.is_empty());
    if !has_passkey {
        return Err(admin_passkey_required());
    }
    match input {
        None => Err(challenge_for(g, user, action, true)),
        Some(i) if i.totp.is_some() || i.recovery_code.is_some() => {
            audit_failure(g, Some(user), ip, "admin action answered without a passkey").await;
            Err(admin_passkey_required())
        }
        Some(_) => prove(g, user, action, input, ip).await,
    }
}

/// Makes the engine's relying party the gateway's (RP ID and origins, as [`relying_party`]
/// gives them): journaled when it differs, so that the engine verifies admins' passkey
/// assertions against what the gateway serves. Called at every start, once the port is bound.
pub async fn journal_relying_party(g: &AppState) -> ApiResult<()> {
    let rp = relying_party(g);
    let want = kinko_core::passkey::RelyingParty {
        id: rp.id,
        origins: rp.origins,
    };
    let have = g.read.model().engine.identity().relying_party().cloned();
    if have.as_ref() == Some(&want) {
        return Ok(());
    }
    g.submit(kinko_core::Command::SetRelyingParty(want))
        .await?
        .reply?;
    // Serving starts once the read side shows it too: the first step-up is checked against it.
    g.caught_up().await
}

fn challenge_for(g: &AppState, user: UserId, action: &Action, passkey_only: bool) -> ApiError {
    let issued = now_ns();
    let nonce = random_bytes::<16>();
    let challenge = challenge_bytes(issued, &nonce, &action.digest());
    let m = g.read.model();
    let u = m.engine.identity().user(user);
    let fresh = m.engine.identity().policy().proof_fresh_ns;
    let mut methods = Vec::new();
    let mut allow = Vec::new();
    if let Some(u) = u {
        if u.totp.is_some() && !passkey_only {
            methods.push("totp");
        }
        if !u.passkeys.is_empty() {
            methods.push("webauthn");
            allow = u.passkeys.iter().map(|p| p.credential_id.clone()).collect();
        }
        if u.reenrol_required && u.recovery_left() > 0 && !passkey_only {
            methods.push("recovery_code");
        }
    }
    if methods.is_empty() {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            Reject::FactorNotEnrolled.code(),
            "this action needs a second factor: enrol TOTP or a passkey first",
        );
    }
    let mut e = ApiError::from(Reject::StepUpRequired);
    e.step_up = Some(Box::new(json!({
        "challenge": b64(&challenge),
        "expires_at": rfc3339(issued.saturating_add(fresh)),
        "methods": methods,
        "webauthn": webauthn::request_options(&relying_party(g), &challenge, &allow),
    })));
    e
}

/// Verifies a second-factor answer for `action` and returns the proof for the command. Every
/// failure is audited and counted; past the limit the user's attempts are refused for a while.
pub async fn prove(
    g: &AppState,
    user: UserId,
    action: &Action,
    input: Option<&StepUpIn>,
    ip: &str,
) -> ApiResult<StepUp> {
    let Some(i) = input else {
        return Err(step_up_required(g, user, action));
    };
    check_throttle(g, ip, &[&second_factor_key(user, ip)])?;
    let digest = action.digest();
    let given = [i.totp.is_some(), i.webauthn.is_some(), i.recovery_code.is_some()];
    if given.iter().filter(|x| **x).count() != 1 {
        return Err(ApiError::invalid(
            "step_up needs exactly one of totp, webauthn, recovery_code",
        ));
    }
    let (issued, nonce) = match &i.challenge {
        Some(c) => {
            let (issued, nonce, d) = parse_challenge(&unb64("challenge", c)?)
                .ok_or_else(|| ApiError::invalid("challenge is malformed"))?;
            if !bool::from(d.ct_eq(&digest)) {
                audit_failure(g, Some(user), ip, "step-up challenge for a different action").await;
                return Err(Reject::StepUpActionMismatch.into());
            }
            (issued, nonce)
        }
        None if i.webauthn.is_some() => {
            return Err(ApiError::invalid(
                "a webauthn answer needs the challenge it signed",
            ));
        }
        None => (now_ns(), random_bytes::<16>()),
    };
    let (fresh, record) = {
        let m = g.read.model();
        let fresh = m.engine.identity().policy().proof_fresh_ns;
        let u = m
            .engine
            .identity()
            .user(user)
            .cloned()
            .ok_or(Reject::UserNotFound)?;
        (fresh, u)
    };
    let now = now_ns();
    if now >= issued.saturating_add(fresh) || issued > now.saturating_add(60_000_000_000) {
        audit_failure(g, Some(user), ip, "expired step-up proof").await;
        return Err(Reject::StepUpExpired.into());
    }
    let factor = if let Some(code) = &i.totp {
        totp_factor(g, &record, code, ip).await?
    } else if let Some(a) = &i.webauthn {
        let challenge = challenge_bytes(issued, &nonce, &digest);
        passkey_factor(g, &record, a, &challenge, ip).await?
    } else {
        let code = i.recovery_code.as_deref().unwrap_or("");
        let h = totp::recovery_code_hash(code);
        let known = record
            .recovery
            .iter()
            .any(|c| !c.used && bool::from(c.hash.ct_eq(&h)));
        if !known {
            audit_failure(g, Some(user), ip, "wrong or used recovery code").await;
            return Err(Reject::RecoveryCodeInvalid.into());
        }
        ProofFactor::Recovery { code_hash: h }
    };
    Ok(StepUp {
        action: digest,
        issued_ns: issued,
        nonce,
        factor,
    })
}

pub(crate) async fn totp_factor(g: &AppState, u: &User, code: &str, ip: &str) -> ApiResult<ProofFactor> {
    let Some(f) = &u.totp else {
        audit_failure(g, Some(u.id), ip, "TOTP code without TOTP enrolled").await;
        return Err(Reject::FactorNotEnrolled.into());
    };
    let secret = g.vault.open(&f.sealed_secret).ok_or_else(|| {
        ApiError::unavailable(
            "VAULT_KEY_MISMATCH",
            "the TOTP secret cannot be opened with this master key",
        )
    })?;
    let now_s = now_ns() / 1_000_000_000;
    match totp::verify(&secret, code.trim(), now_s, Some(u.last_totp_step)) {
        Ok(step) => Ok(ProofFactor::Totp {
            step,
            code: code.trim().to_owned(),
        }),
        Err(e) => {
            audit_failure(g, Some(u.id), ip, &format!("TOTP refused: {}", e.code())).await;
            Err(match e {
                totp::TotpError::Replayed => Reject::StepUpReplayed.into(),
                _ => ApiError::new(
                    StatusCode::FORBIDDEN,
                    Reject::StepUpInvalid.code(),
                    "the TOTP code is wrong",
                ),
            })
        }
    }
}

pub(crate) async fn passkey_factor(
    g: &AppState,
    u: &User,
    a: &AssertionResponse,
    challenge: &[u8],
    ip: &str,
) -> ApiResult<ProofFactor> {
    let id = a
        .credential_id()
        .map_err(|e| ApiError::invalid(format!("webauthn: {e}")))?;
    let Some(p) = u.passkey(&id) else {
        audit_failure(g, Some(u.id), ip, "assertion from a passkey not enrolled").await;
        return Err(Reject::FactorNotEnrolled.into());
    };
    let key = CredentialKey::from_bytes(&p.public_key)
        .map_err(|_| ApiError::unavailable("PASSKEY_UNREADABLE", "the stored passkey cannot be read"))?;
    match webauthn::verify_assertion(&relying_party(g), challenge, &key, p.sign_count, a) {
        Ok(_) => Ok(ProofFactor::Passkey {
            credential_id: id,
            authenticator_data: unb64("authenticatorData", &a.response.authenticator_data)?,
            client_data_json: unb64("clientDataJSON", &a.response.client_data_json)?,
            signature: unb64("signature", &a.response.signature)?,
        }),
        Err(e) => {
            audit_failure(g, Some(u.id), ip, &format!("passkey refused: {}", e.code())).await;
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                if e == webauthn::WebauthnError::CounterNotIncreased {
                    Reject::StepUpReplayed.code()
                } else {
                    Reject::StepUpInvalid.code()
                },
                format!("the passkey assertion was refused: {} ({e})", e.code()),
            ))
        }
    }
}

/// A proof when the user has a second factor (or must re-enrol); none for a user who has none
/// yet (the first factor, the first anti-phishing code).
pub(crate) async fn proof_if_enrolled(
    g: &AppState,
    u: &User,
    action: &Action,
    input: Option<&StepUpIn>,
    ip: &str,
) -> ApiResult<Option<StepUp>> {
    if u.has_factor() || u.reenrol_required {
        prove(g, u.id, action, input, ip).await.map(Some)
    } else {
        Ok(None)
    }
}

/// Audits a step-up refusal the engine made (replay, stale proof) and passes the error on.
pub async fn audited<T>(g: &AppState, user: UserId, ip: &str, r: ApiResult<T>) -> ApiResult<T> {
    if let Err(e) = &r {
        let second_factor = [
            Reject::StepUpActionMismatch,
            Reject::StepUpExpired,
            Reject::StepUpReplayed,
            Reject::StepUpInvalid,
            Reject::AdminPasskeyRequired,
            Reject::PasskeyAssertionInvalid,
            Reject::RecoveryCodeInvalid,
            Reject::RecoveryNotAllowed,
            Reject::SecondFactorRequired,
            Reject::ReenrolmentRequired,
        ];
        if second_factor.iter().any(|x| x.code() == e.code) {
            audit_failure(g, Some(user), ip, &format!("refused by the engine: {}", e.code)).await;
        }
    }
    r
}

/// An operator, authenticated by the operator token (`KINKO_OPERATOR_TOKEN`).
pub struct Operator;

impl axum::extract::FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        g: &AppState,
    ) -> Result<Operator, ApiError> {
        // No credentials at all: 401, whether or not the operator API is on (what a client
        // lacks is a credential; only with one does it learn that the API is off).
        if crate::auth::bearer(parts).is_err() {
            return Err(ApiError::unauthorized("the operator token is required"));
        }
        let Some(want) = g.config.operator_token_hash else {
            return Err(ApiError::forbidden(
                "the operator API is off (no operator token configured)",
            ));
        };
        let ip = client_ip(parts);
        let key = format!("operator:{}", crate::throttle::address(&ip));
        check_throttle(g, &ip, &[&key])?;
        let given = crate::auth::bearer(parts).unwrap_or("");
        if bool::from(operator_token_hash(given).ct_eq(&want)) {
            Ok(Operator)
        } else {
            audit_failure_as(g, &key, None, &ip, "bad operator token").await;
            Err(ApiError::unauthorized("invalid operator token"))
        }
    }
}

pub fn operator_token_hash(token: &str) -> [u8; 32] {
    *blake3::keyed_hash(b"kinko operator token hash v1 ...", token.as_bytes()).as_bytes()
}
