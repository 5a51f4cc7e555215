//! Accounts and second factors over HTTP: registration, login (password, then a second factor),
//! sessions, TOTP and passkey enrolment, recovery codes, credential changes, password reset,
//! the freeze link, API keys, and the operator's platform-wide revocation.
//!
//! Every sensitive action goes through [`crate::stepup::prove`]: without a `step_up` the answer is
//! `STEP_UP_REQUIRED` carrying a challenge bound to the action's digest; the client answers
//! with a TOTP code, a WebAuthn assertion over that challenge, or (only to re-enrol) a recovery
//! code. The gateway verifies the factor; the engine then checks the proof's binding, freshness
//! and single use itself and stores it with the action.

use crate::auth::{new_session_token, now_ns, AnySession, Auth, ClientIp, Principal};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, OptionalJson, Path};
use crate::identity;
use crate::stepup::*;
use crate::vault::random_bytes;
use crate::webauthn::{self, RegistrationResponse};
use crate::wire::rfc3339;
use crate::{totp, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use kinko_core::identity::{
    Action, FactorRef, IdentityCommand, IdentityReply, Passkey, SessionLevel, User, UserStatus,
};
use kinko_core::keys::Permissions;
use kinko_core::{Command, Reject, UserId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Identity settings (the `[identity]` section of the config).
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// Base of the links in messages (the freeze link), e.g. `https://exchange.example`.
    pub public_url: String,
    /// WebAuthn relying-party id: the site's host name (`localhost` in development).
    pub rp_id: String,
    /// Origins allowed in WebAuthn ceremonies; empty means `http://localhost:<bound port>`.
    pub rp_origins: Vec<String>,
    /// Lifetime of a full session.
    pub session_ttl: Duration,
    /// Lifetime of a password-only session (time to give the second factor).
    pub login_ttl: Duration,
    /// Expiry of a new API key when the request names none.
    pub api_key_ttl: Duration,
    /// The longest expiry a new API key may ask for, in days.
    pub api_key_days_max: u32,
    /// Failed second-factor (or password) attempts allowed per user in `failure_window`.
    pub failures_max: u32,
    pub failure_window: Duration,
    pub password_cost: crate::password::Cost,
}

impl Default for IdentityConfig {
    fn default() -> IdentityConfig {
        IdentityConfig {
            public_url: String::new(),
            rp_id: "localhost".into(),
            rp_origins: Vec::new(),
            session_ttl: Duration::from_secs(12 * 3600),
            login_ttl: Duration::from_secs(600),
            api_key_ttl: Duration::from_secs(90 * 24 * 3600),
            api_key_days_max: 90,
            failures_max: 5,
            failure_window: Duration::from_secs(900),
            password_cost: crate::password::Cost::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Registration, login, logout

/// How long a login answer waits once an account has had many failures from all addresses
/// together: slower guessing, never a lockout.
const SLOW_ANSWER: Duration = Duration::from_secs(1);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterIn {
    /// An email address (at most 254 characters).
    #[schema(
        pattern = r#"^[!#-+\--:=?A-~]+@[!#-+\-/-:=?A-~][!#-+\--:=?A-~]*\.[!#-+\--:=?A-~]*[!#-+\-/-:=?A-~]$"#,
        max_length = 254
    )]
    pub email: String,
    /// 10 to 256 characters.
    #[schema(min_length = 10, max_length = 256)]
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct RegisterOut {
    pub user_id: String,
}

/// Creates an account. Log in afterwards; enrol a second factor before anything sensitive.
/// The account's messages are written in the language of the `lang` cookie or else of
/// `Accept-Language` (English or Japanese; `/me/language` changes it).
#[utoipa::path(post, path = "/auth/register", tag = "identity", request_body = RegisterIn,
    responses((status = 201, body = RegisterOut), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn register(
    State(g): State<AppState>,
    headers: axum::http::HeaderMap,
    Json(r): Json<RegisterIn>,
) -> ApiResult<(StatusCode, axum::Json<RegisterOut>)> {
    let language = crate::lang::choose_lang(&headers);
    if kinko_core::identity::normalise_email(&r.email).is_none() {
        return Err(Reject::EmailInvalid.into());
    }
    let hash = g.hasher.hash(&r.password).await.map_err(password_error)?;
    match identity(
        &g,
        IdentityCommand::Register {
            email: r.email,
            password_hash: hash,
        },
    )
    .await?
    {
        IdentityReply::Registered(u) => {
            // Before the account can sign in, so its first message is already in its language.
            if language != kinko_core::identity::Language::default() {
                identity(&g, IdentityCommand::SetLanguage { user: u, language }).await?;
            }
            Ok((
                StatusCode::CREATED,
                axum::Json(RegisterOut {
                    user_id: u.0.to_string(),
                }),
            ))
        }
        other => Err(ApiError::invalid(format!("unexpected reply {other:?}"))),
    }
}

fn password_error(e: crate::password::PasswordError) -> ApiError {
    match e {
        crate::password::PasswordError::Length => {
            ApiError::new(StatusCode::BAD_REQUEST, "PASSWORD_WEAK", e.to_string())
        }
        crate::password::PasswordError::Unavailable => {
            ApiError::unavailable("PASSWORD_HASHING_UNAVAILABLE", e.to_string())
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginIn {
    pub email: String,
    pub password: String,
    /// A name for this device (shown in the session list and in new-device messages).
    pub device: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionOut {
    /// The bearer token (`Authorization: Bearer <token>`), shown once.
    pub token: String,
    /// `password` (the second factor is still owed) or `full`.
    #[schema(value_type = crate::schema::SessionLevel)]
    pub level: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub user_id: String,
    /// With level `password`: the challenge to answer at `/auth/login/second-factor`.
    #[schema(value_type = Option<Object>)]
    pub second_factor: Option<serde_json::Value>,
}

/// Checks email and password. With a second factor enrolled, the session is `password` level
/// and can only complete the login at `/auth/login/second-factor`.
#[utoipa::path(post, path = "/auth/login", tag = "identity", request_body = LoginIn,
    responses((status = 200, body = SessionOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
async fn login(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(r): Json<LoginIn>,
) -> ApiResult<axum::Json<SessionOut>> {
    // Failures count per (email, address) and per address: a stranger's wrong passwords
    // hold back the stranger, not the owner signing in from elsewhere. Across addresses they
    // only slow the answers down.
    let email = r.email.trim().to_ascii_lowercase();
    let pair_key = format!("pw:{email}|{}", crate::throttle::address(&ip));
    let email_key = format!("pw:{email}");
    check_throttle(&g, &ip, &[&pair_key])?;
    if g.failures.slow(&email_key) {
        tokio::time::sleep(SLOW_ANSWER).await;
    }
    g.caught_up().await?;
    let user = g.read.model().engine.identity().user_by_email(&r.email).cloned();
    let ok = g
        .hasher
        .verify(user.as_ref().map(|u| u.password_hash.as_str()), &r.password)
        .await
        .map_err(password_error)?;
    let Some(u) = user.as_ref().filter(|_| ok).cloned() else {
        let uid = user.map(|u| u.id);
        g.failures.fail(&email_key);
        audit_failure_as(&g, &pair_key, uid, &ip, "wrong email or password").await;
        return Err(Reject::CredentialsInvalid.into());
    };
    g.failures.clear(&pair_key);
    if u.status == UserStatus::Disabled {
        return Err(Reject::AccountDisabled.into());
    }
    let level = if u.has_factor() || u.reenrol_required {
        SessionLevel::Password
    } else {
        SessionLevel::Full
    };
    let ttl = if level == SessionLevel::Full {
        g.config.identity.session_ttl
    } else {
        g.config.identity.login_ttl
    };
    let (token, hash) = new_session_token();
    let expires = now_ns().saturating_add(ttl_ns(ttl));
    identity(
        &g,
        IdentityCommand::OpenSession {
            user: u.id,
            token_hash: hash,
            level,
            expires_ns: expires,
            device: device_name(r.device.as_deref()),
            ip: ip.clone(),
            password_hash_digest: *blake3::hash(u.password_hash.as_bytes()).as_bytes(),
        },
    )
    .await?;
    let second_factor = (level == SessionLevel::Password).then(|| {
        if u.reenrol_required && !u.has_factor() {
            json!({"reenrol_required": true, "methods": ["recovery_code"]})
        } else {
            let e = step_up_required(
                &g,
                u.id,
                &Action::Login {
                    user: u.id,
                    session: hash,
                },
            );
            e.step_up.map_or(serde_json::Value::Null, |b| *b)
        }
    });
    Ok(axum::Json(SessionOut {
        token,
        level: level_name(level).into(),
        expires_at: rfc3339(expires),
        user_id: u.id.0.to_string(),
        second_factor,
    }))
}

fn device_name(d: Option<&str>) -> String {
    d.unwrap_or("unnamed device")
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect()
}

fn level_name(l: SessionLevel) -> &'static str {
    match l {
        SessionLevel::Password => "password",
        SessionLevel::Full => "full",
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorIn {
    pub step_up: StepUpIn,
}

/// Completes a login with the second factor; the password-level token stops working and a new
/// full session token is returned.
#[utoipa::path(post, path = "/auth/login/second-factor", tag = "identity", request_body = SecondFactorIn,
    security(("session" = [])),
    responses((status = 200, body = SessionOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
async fn login_second_factor(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    AnySession(p, level): AnySession,
    Json(r): Json<SecondFactorIn>,
) -> ApiResult<axum::Json<SessionOut>> {
    let old = p.session().ok_or(Reject::SessionInvalid)?;
    if level == SessionLevel::Full {
        return Err(ApiError::invalid("this session has already completed its login"));
    }
    let action = Action::Login {
        user: p.user,
        session: old,
    };
    let proof = prove(&g, p.user, &action, Some(&r.step_up), &ip).await?;
    let (token, hash) = new_session_token();
    let expires = now_ns().saturating_add(ttl_ns(g.config.identity.session_ttl));
    let r = identity(
        &g,
        IdentityCommand::CompleteLogin {
            token_hash: old,
            new_token_hash: hash,
            expires_ns: expires,
            proof,
        },
    )
    .await;
    audited(&g, p.user, &ip, r).await?;
    g.failures.clear(&second_factor_key(p.user, &ip));
    Ok(axum::Json(SessionOut {
        token,
        level: "full".into(),
        expires_at: rfc3339(expires),
        user_id: p.user.0.to_string(),
        second_factor: None,
    }))
}

/// Ends this session.
#[utoipa::path(post, path = "/auth/logout", tag = "identity", security(("session" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
async fn logout(State(g): State<AppState>, AnySession(p, _): AnySession) -> ApiResult<StatusCode> {
    let h = p.session().ok_or(Reject::SessionInvalid)?;
    identity(&g, IdentityCommand::CloseSession { token_hash: h }).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Password reset and the freeze link

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetIn {
    pub email: String,
}

/// Sends a password-reset link if the address belongs to an account; always answers 202 (the
/// answer does not tell whether an account exists).
#[utoipa::path(post, path = "/auth/password-reset", tag = "identity", request_body = ResetIn,
    responses((status = 202), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn password_reset(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(r): Json<ResetIn>,
) -> ApiResult<StatusCode> {
    let key = format!("reset:{}", r.email.trim().to_ascii_lowercase());
    if let Some(wait) = g.failures.blocked(&key) {
        return Err(locked(wait));
    }
    g.failures.fail(&key);
    g.caught_up().await?;
    let user = g.read.model().engine.identity().user_by_email(&r.email).cloned();
    if let Some(u) = user.filter(|u| u.status != UserStatus::Disabled) {
        let token = format!("kpr_{}", b64(&random_bytes::<32>()));
        identity(
            &g,
            IdentityCommand::IssueResetToken {
                user: u.id,
                token_hash: reset_hash(&token),
                expires_ns: now_ns().saturating_add(3_600_000_000_000),
            },
        )
        .await?;
        let url = format!("{}/#reset={token}", g.public_url());
        crate::notify::send_now(
            &g,
            &u,
            crate::mail::MessageKind::PasswordReset,
            crate::notify::Texts {
                en: ("Reset your kinko password", format!(
                    "Someone (from {ip}) asked to reset the password of your kinko account.\n\
                     To choose a new password, open this link within one hour:\n\n{url}\n\n\
                     A reset keeps your second factors; withdrawals stay locked for a while afterwards.\n\
                     If this was not you, ignore this message or freeze your account with the link below."
                )),
                ja: ("kinko のパスワード再設定", format!(
                    "kinko アカウントのパスワード再設定が（{ip} から）申請されました。\n\
                     新しいパスワードを設定するには、1 時間以内に次のリンクを開いてください:\n\n{url}\n\n\
                     再設定しても二要素認証はそのままです。再設定後しばらくの間、出金はロックされます。\n\
                     お心当たりがない場合は、このメッセージを無視するか、下のリンクからアカウントを凍結してください。"
                )),
            },
        )?;
    }
    Ok(StatusCode::ACCEPTED)
}

fn reset_hash(token: &str) -> [u8; 32] {
    *blake3::keyed_hash(b"kinko password reset token v1 ..", token.as_bytes()).as_bytes()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirmIn {
    pub token: String,
    /// 10 to 256 characters.
    #[schema(min_length = 10, max_length = 256)]
    pub new_password: String,
}

/// Sets a new password with a reset token. Ends every session, keeps every second factor, and
/// locks withdrawals for the security-change period.
#[utoipa::path(post, path = "/auth/password-reset/confirm", tag = "identity", request_body = ResetConfirmIn,
    responses((status = 204), (status = 400, body = ErrorBody)))]
async fn password_reset_confirm(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(r): Json<ResetConfirmIn>,
) -> ApiResult<StatusCode> {
    check_throttle(&g, &ip, &[])?;
    let hash = g.hasher.hash(&r.new_password).await.map_err(password_error)?;
    let res = identity(
        &g,
        IdentityCommand::ResetPassword {
            token_hash: reset_hash(r.token.trim()),
            password_hash: hash,
        },
    )
    .await;
    if res.is_err() {
        audit_failure(&g, None, &ip, "wrong or expired password-reset token").await;
    }
    res?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeIn {
    /// The `t` parameter of the freeze link in a message.
    pub token: String,
}

/// The "Not you? Freeze your account" link: halts the account's withdrawals and ends its
/// sessions until an operator has reviewed it.
#[utoipa::path(post, path = "/auth/freeze", tag = "identity", request_body = FreezeIn,
    responses((status = 204), (status = 400, body = ErrorBody)))]
async fn freeze(State(g): State<AppState>, Json(r): Json<FreezeIn>) -> ApiResult<StatusCode> {
    let user = crate::notify::freeze_token_user(&g.vault, &r.token, now_ns() / 1_000_000_000)
        .ok_or(Reject::TokenInvalid)?;
    identity(
        &g,
        IdentityCommand::Freeze {
            user,
            reason: "frozen by the user's freeze link".into(),
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// The user's own account

#[derive(Serialize, ToSchema)]
pub struct PasskeyOut {
    /// base64url credential id.
    pub id: String,
    pub label: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct MeOut {
    pub user_id: String,
    pub email: String,
    /// `active`, `frozen` or `disabled`.
    #[schema(value_type = crate::schema::UserStatus)]
    pub status: String,
    pub anti_phishing_code: Option<String>,
    pub totp: bool,
    pub passkeys: Vec<PasskeyOut>,
    pub recovery_codes_left: usize,
    /// Withdrawals are refused until then (after a security change).
    pub withdrawals_locked_until: Option<String>,
    /// Second factors were revoked platform-wide: re-enrol with a recovery code.
    pub reenrol_required: bool,
    /// The language of the account's messages.
    #[schema(value_type = crate::schema::Language)]
    pub language: String,
}

fn me_out(u: &User, now: u64) -> MeOut {
    MeOut {
        user_id: u.id.0.to_string(),
        email: u.email.clone(),
        status: u.status.name().into(),
        anti_phishing_code: u.anti_phishing.clone(),
        totp: u.totp.is_some(),
        passkeys: u
            .passkeys
            .iter()
            .map(|p| PasskeyOut {
                id: b64(&p.credential_id),
                label: p.label.clone(),
                created_at: rfc3339(p.created_ns),
            })
            .collect(),
        recovery_codes_left: u.recovery_left(),
        withdrawals_locked_until: (u.security_locked_until_ns > now)
            .then(|| rfc3339(u.security_locked_until_ns)),
        reenrol_required: u.reenrol_required,
        language: u.language.code().into(),
    }
}

fn user_of(g: &AppState, id: UserId) -> ApiResult<User> {
    g.read
        .model()
        .engine
        .identity()
        .user(id)
        .cloned()
        .ok_or_else(|| Reject::UserNotFound.into())
}

/// The signed-in user's account and factors.
#[utoipa::path(get, path = "/me", tag = "identity", security(("session" = [])),
    responses((status = 200, body = MeOut), (status = 401, body = ErrorBody)))]
async fn me(State(g): State<AppState>, AnySession(p, _): AnySession) -> ApiResult<axum::Json<MeOut>> {
    g.caught_up().await?;
    Ok(axum::Json(me_out(&user_of(&g, p.user)?, now_ns())))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LanguageIn {
    pub language: crate::schema::Language,
}

/// Sets the language of the account's messages (the pages' language switch calls it while
/// signed in). Any session, no step-up: it is not a security change.
#[utoipa::path(post, path = "/me/language", tag = "identity", security(("session" = [])), request_body = LanguageIn,
    responses((status = 204), (status = 401, body = ErrorBody)))]
async fn set_language(
    State(g): State<AppState>,
    AnySession(p, _): AnySession,
    Json(r): Json<LanguageIn>,
) -> ApiResult<StatusCode> {
    identity(
        &g,
        IdentityCommand::SetLanguage {
            user: p.user,
            language: r.language.into(),
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many security events one page of `/me/security-log` holds at most.
pub const SECURITY_LOG_PAGE_MAX: usize = 100;

#[derive(Deserialize, utoipa::IntoParams)]
pub struct SecurityLogQuery {
    /// Events per page (1 to 100, default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// Only events older than this one (the `next_before` of the previous page).
    #[param(minimum = 0)]
    pub before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct SecurityLogOut {
    /// Newest first.
    pub events: Vec<crate::security_log::SecurityEvent>,
    /// Pass as `before` for the next, older page; absent on the last page.
    pub next_before: Option<u64>,
}

/// The signed-in customer's security log, newest first: sign-ins (time, IP, device), failed
/// sign-ins, second-factor, password, email, anti-phishing and status changes, withdrawal
/// addresses added, withdrawals requested, held, cancelled, completed or failed. Read from the
/// tamper-evident audit trail.
#[utoipa::path(get, path = "/me/security-log", tag = "identity", security(("session" = [])),
    params(SecurityLogQuery),
    responses((status = 200, body = SecurityLogOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn security_log(
    State(g): State<AppState>,
    AnySession(p, _): AnySession,
    crate::extract::Query(q): crate::extract::Query<SecurityLogQuery>,
) -> ApiResult<axum::Json<SecurityLogOut>> {
    let limit = match q.limit {
        None => 50,
        Some(n) if (1..=SECURITY_LOG_PAGE_MAX).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "limit must be 1 to {SECURITY_LOG_PAGE_MAX}"
            )))
        }
    };
    let before = match q.before {
        None => None,
        Some(b) => Some(u64::try_from(b).map_err(|_| ApiError::invalid("before must be at least 0"))?),
    };
    let Some(trail) = g.trail.get().cloned() else {
        return Ok(axum::Json(SecurityLogOut {
            events: Vec::new(),
            next_before: None,
        }));
    };
    // The security events of the latest batches are appended as they commit: wait for them.
    g.caught_up().await?;
    let user = p.user;
    let page = tokio::task::spawn_blocking(move || crate::security_log::page_of(&trail, user, before, limit))
        .await
        .map_err(|_| ApiError::unavailable("AUDIT_UNAVAILABLE", "the audit log did not answer"))?
        .map_err(|e| {
            tracing::error!(error = %e, "security log: the audit log could not be read");
            ApiError::unavailable("AUDIT_UNAVAILABLE", "the audit log cannot be read right now")
        })?;
    let mut events = page.events;
    {
        // Assets by code and amounts as decimals, as everywhere else in the API.
        let m = g.read.model();
        for e in &mut events {
            let serde_json::Value::Object(d) = &mut e.detail else {
                continue;
            };
            let asset = d
                .get("asset")
                .and_then(|v| v.as_u64())
                .and_then(|a| u32::try_from(a).ok())
                .and_then(|a| m.engine.asset(kinko_core::AssetId(a)));
            if let Some(asset) = asset {
                let amount = d
                    .get("amount")
                    .and_then(|v| v.as_str())
                    .and_then(|v| v.parse::<u128>().ok());
                if let Some(x) = amount {
                    d.insert(
                        "amount".into(),
                        kinko_core::Amount(x).to_decimal(asset.decimals).into(),
                    );
                }
                d.insert("asset".into(), asset.code.as_str().into());
            }
        }
    }
    Ok(axum::Json(SecurityLogOut {
        events,
        next_before: page.next_before,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct SessionInfo {
    /// A short id of the session (not its token).
    pub id: String,
    #[schema(value_type = crate::schema::SessionLevel)]
    pub level: String,
    pub device: String,
    pub ip: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub expires_at: String,
    pub current: bool,
}

/// The user's live sessions.
#[utoipa::path(get, path = "/me/sessions", tag = "identity", security(("session" = [])),
    responses((status = 200, body = [SessionInfo]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn sessions(State(g): State<AppState>, Auth(p): Auth) -> ApiResult<axum::Json<Vec<SessionInfo>>> {
    let me = session_of(&p)?;
    g.caught_up().await?;
    let m = g.read.model();
    Ok(axum::Json(
        m.engine
            .identity()
            .sessions_of(p.user, now_ns())
            .into_iter()
            .map(|s| SessionInfo {
                id: hex::encode(&s.token_hash[..8]),
                level: level_name(s.level).into(),
                device: s.device.clone(),
                ip: s.ip.clone(),
                created_at: rfc3339(s.created_ns),
                expires_at: rfc3339(s.expires_ns),
                current: s.token_hash == me,
            })
            .collect(),
    ))
}

fn session_of(p: &Principal) -> ApiResult<[u8; 32]> {
    p.session()
        .ok_or_else(|| ApiError::forbidden("this endpoint needs a session, not an API key"))
}

/// Ends every other session of the user (needs a second-factor proof: a stolen session alone
/// cannot sign the owner out).
#[utoipa::path(post, path = "/me/sessions/revoke-others", tag = "identity", security(("session" = [])),
    request_body = StepUpOnly,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn revoke_other_sessions(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    OptionalJson(body): OptionalJson<StepUpOnly>,
) -> ApiResult<StatusCode> {
    let me = session_of(&p)?;
    g.caught_up().await?;
    let step_up = body.step_up;
    end_sessions(&g, &p, me, None, step_up.as_ref(), &ip).await
}

/// Ends one session by its id (from the session list). Another session needs a second-factor
/// proof; this one (a logout) does not.
#[utoipa::path(delete, path = "/me/sessions/{id}", tag = "identity", security(("session" = [])),
    params(("id" = String, Path)), request_body = StepUpOnly,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn end_session(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<StepUpOnly>,
) -> ApiResult<StatusCode> {
    let me = session_of(&p)?;
    g.caught_up().await?;
    let target = {
        let m = g.read.model();
        m.engine
            .identity()
            .sessions_of(p.user, now_ns())
            .into_iter()
            .find(|s| hex::encode(&s.token_hash[..8]) == id)
            .map(|s| s.token_hash)
    };
    let h = target.ok_or_else(|| ApiError::not_found("no such session"))?;
    if h == me {
        identity(&g, IdentityCommand::CloseSession { token_hash: h }).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    let step_up = body.step_up;
    end_sessions(&g, &p, me, Some(h), step_up.as_ref(), &ip).await
}

/// Ends `session` (or every session but `me`) with a proof for exactly that.
async fn end_sessions(
    g: &AppState,
    p: &Principal,
    me: [u8; 32],
    session: Option<[u8; 32]>,
    step_up: Option<&StepUpIn>,
    ip: &str,
) -> ApiResult<StatusCode> {
    // Without a second factor there is nothing to prove (such a session may change the
    // password, which ends the others, just as well).
    if !user_of(g, p.user)?.has_factor() {
        let c = match session {
            Some(h) => IdentityCommand::CloseSession { token_hash: h },
            None => IdentityCommand::RevokeSessions {
                user: p.user,
                keep: Some(me),
            },
        };
        identity(g, c).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    let action = Action::EndSessions {
        user: p.user,
        session,
    };
    let proof = prove(g, p.user, &action, step_up, ip).await?;
    let res = identity(
        g,
        IdentityCommand::EndSessionsWithProof {
            user: p.user,
            keep: me,
            session,
            proof,
        },
    )
    .await;
    audited(g, p.user, ip, res).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who may enrol: a full session, or a password-level session of a user who must re-enrol
/// after platform-wide revocation.
fn enrolling(g: &AppState, p: &Principal, level: SessionLevel) -> ApiResult<User> {
    let u = user_of(g, p.user)?;
    if level != SessionLevel::Full && !u.reenrol_required {
        return Err(Reject::SecondFactorRequired.into());
    }
    if u.status != UserStatus::Active {
        return Err(if u.status == UserStatus::Frozen {
            Reject::AccountFrozen.into()
        } else {
            Reject::AccountDisabled.into()
        });
    }
    Ok(u)
}

/// Sealed enrolment state handed to the client between the two steps (user, expiry, payload).
fn seal_enrolment(g: &AppState, user: UserId, payload: &[u8]) -> String {
    let mut b = Vec::with_capacity(16 + payload.len());
    b.extend_from_slice(&user.0.to_be_bytes());
    b.extend_from_slice(&(now_ns() / 1_000_000_000 + 600).to_be_bytes());
    b.extend_from_slice(payload);
    b64(&g.vault.seal(&b))
}

fn open_enrolment(g: &AppState, user: UserId, token: &str) -> ApiResult<Vec<u8>> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "ENROLMENT_INVALID",
            "the enrolment is unknown or expired; start again",
        )
    };
    let b = g.vault.open(&unb64("enrolment", token)?).ok_or_else(bad)?;
    if b.len() < 16 {
        return Err(bad());
    }
    let u = u64::from_be_bytes(b[..8].try_into().map_err(|_| bad())?);
    let exp = u64::from_be_bytes(b[8..16].try_into().map_err(|_| bad())?);
    if u != user.0 || now_ns() / 1_000_000_000 > exp {
        return Err(bad());
    }
    Ok(b[16..].to_vec())
}

/// New recovery codes for a user who has none left: (codes shown once, hashes for the engine).
fn first_recovery(u: &User) -> (Vec<String>, Vec<[u8; 32]>) {
    if u.recovery_left() > 0 {
        return (Vec::new(), Vec::new());
    }
    totp::new_recovery_set(RECOVERY_CODES)
}

/// Recovery codes given out at a time.
const RECOVERY_CODES: usize = 10;

#[derive(Serialize, ToSchema)]
pub struct TotpBeginOut {
    /// Base32 secret, for manual entry.
    pub secret: String,
    /// `otpauth://` URI for authenticator apps (QR code).
    pub otpauth_uri: String,
    /// Pass back to `/me/totp/confirm` (sealed; expires in 10 minutes).
    pub enrolment: String,
}

/// Starts TOTP enrolment: a new secret, not active until confirmed with a code.
#[utoipa::path(post, path = "/me/totp", tag = "identity", security(("session" = [])),
    responses((status = 200, body = TotpBeginOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn totp_begin(
    State(g): State<AppState>,
    AnySession(p, level): AnySession,
) -> ApiResult<axum::Json<TotpBeginOut>> {
    g.caught_up().await?;
    let u = enrolling(&g, &p, level)?;
    if u.totp.is_some() {
        return Err(Reject::FactorExists.into());
    }
    let secret = totp::new_secret();
    Ok(axum::Json(TotpBeginOut {
        secret: totp::base32_encode(&secret),
        otpauth_uri: totp::otpauth_uri("kinko", &u.email, &secret),
        enrolment: seal_enrolment(&g, u.id, &secret),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirmIn {
    /// The `enrolment` of `POST /me/totp` (base64url).
    #[schema(
        pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$"
    )]
    pub enrolment: String,
    /// A current code from the authenticator app.
    pub code: String,
    /// Needed when the user already has a second factor (or must re-enrol: a recovery code).
    pub step_up: Option<StepUpIn>,
}

#[derive(Serialize, ToSchema)]
pub struct EnrolledOut {
    /// Recovery codes, shown once, when the user had none left.
    pub recovery_codes: Vec<String>,
}

/// Confirms TOTP enrolment with a current code.
#[utoipa::path(post, path = "/me/totp/confirm", tag = "identity", security(("session" = [])),
    request_body = TotpConfirmIn,
    responses((status = 200, body = EnrolledOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn totp_confirm(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    AnySession(p, level): AnySession,
    Json(r): Json<TotpConfirmIn>,
) -> ApiResult<axum::Json<EnrolledOut>> {
    g.caught_up().await?;
    let u = enrolling(&g, &p, level)?;
    let secret = open_enrolment(&g, u.id, &r.enrolment)?;
    let step = match totp::verify(
        &secret,
        r.code.trim(),
        now_ns() / 1_000_000_000,
        Some(u.last_totp_step),
    ) {
        Ok(s) => s,
        Err(e) => {
            audit_failure(
                &g,
                Some(u.id),
                &ip,
                &format!("TOTP enrolment code refused: {}", e.code()),
            )
            .await;
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                e.code(),
                "the code does not match the new secret",
            ));
        }
    };
    let proof = proof_if_enrolled(&g, &u, &Action::EnrolTotp { user: u.id }, r.step_up.as_ref(), &ip).await?;
    let (codes, hashes) = first_recovery(&u);
    let res = identity(
        &g,
        IdentityCommand::EnrolTotp {
            user: u.id,
            sealed_secret: g.vault.seal(&secret),
            first_step: step,
            proof,
            recovery: hashes,
        },
    )
    .await;
    audited(&g, u.id, &ip, res).await?;
    Ok(axum::Json(EnrolledOut {
        recovery_codes: codes,
    }))
}

#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpOnly {
    pub step_up: Option<StepUpIn>,
}

/// Removes TOTP (needs a second-factor proof; starts the security-change lock).
#[utoipa::path(delete, path = "/me/totp", tag = "identity", security(("session" = [])), request_body = StepUpOnly,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn totp_remove(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Json(r): Json<StepUpOnly>,
) -> ApiResult<StatusCode> {
    session_of(&p)?;
    remove_factor(&g, &p, FactorRef::Totp, r.step_up.as_ref(), &ip).await
}

async fn remove_factor(
    g: &AppState,
    p: &Principal,
    factor: FactorRef,
    step_up: Option<&StepUpIn>,
    ip: &str,
) -> ApiResult<StatusCode> {
    g.caught_up().await?;
    let action = match &factor {
        FactorRef::Totp => Action::RemoveTotp { user: p.user },
        FactorRef::Passkey(id) => Action::RemovePasskey {
            user: p.user,
            credential_id: id.clone(),
        },
    };
    let proof = prove(g, p.user, &action, step_up, ip).await?;
    let r = identity(
        g,
        IdentityCommand::RemoveFactor {
            user: p.user,
            factor,
            proof,
        },
    )
    .await;
    audited(g, p.user, ip, r).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct PasskeyBeginOut {
    /// `PublicKeyCredentialCreationOptions` (binary fields base64url).
    #[schema(value_type = Object)]
    pub public_key: serde_json::Value,
    /// Pass back with the new credential (sealed; expires in 10 minutes).
    pub enrolment: String,
}

/// Starts passkey registration: creation options with a fresh challenge.
#[utoipa::path(post, path = "/me/passkeys/options", tag = "identity", security(("session" = [])),
    responses((status = 200, body = PasskeyBeginOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn passkey_begin(
    State(g): State<AppState>,
    AnySession(p, level): AnySession,
) -> ApiResult<axum::Json<PasskeyBeginOut>> {
    g.caught_up().await?;
    let u = enrolling(&g, &p, level)?;
    let challenge = random_bytes::<32>();
    let exclude: Vec<Vec<u8>> = u.passkeys.iter().map(|k| k.credential_id.clone()).collect();
    let handle = blake3::keyed_hash(&g.vault.subkey("webauthn user handle"), &u.id.0.to_be_bytes());
    Ok(axum::Json(PasskeyBeginOut {
        public_key: webauthn::creation_options(
            &relying_party(&g),
            &handle.as_bytes()[..16],
            &u.email,
            &challenge,
            &exclude,
        ),
        enrolment: seal_enrolment(&g, u.id, &challenge),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyIn {
    /// The `enrolment` of `POST /me/passkeys/options` (base64url).
    #[schema(
        pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$"
    )]
    pub enrolment: String,
    /// The `PublicKeyCredential` from `navigator.credentials.create` (binary fields base64url).
    #[schema(value_type = crate::schema::RegistrationCredential)]
    pub credential: RegistrationResponse,
    pub label: Option<String>,
    /// Needed when the user already has a second factor (or must re-enrol: a recovery code).
    pub step_up: Option<StepUpIn>,
}

/// Registers a passkey.
#[utoipa::path(post, path = "/me/passkeys", tag = "identity", security(("session" = [])), request_body = PasskeyIn,
    responses((status = 200, body = EnrolledOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn passkey_register(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    AnySession(p, level): AnySession,
    Json(r): Json<PasskeyIn>,
) -> ApiResult<axum::Json<EnrolledOut>> {
    g.caught_up().await?;
    let u = enrolling(&g, &p, level)?;
    let challenge = open_enrolment(&g, u.id, &r.enrolment)?;
    let cred = match webauthn::verify_registration(&relying_party(&g), &challenge, &r.credential) {
        Ok(c) => c,
        Err(e) => {
            audit_failure(
                &g,
                Some(u.id),
                &ip,
                &format!("passkey registration refused: {}", e.code()),
            )
            .await;
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                e.code(),
                format!("the passkey was refused: {e}"),
            ));
        }
    };
    let action = Action::EnrolPasskeyKey {
        user: u.id,
        credential_id: cred.credential_id.clone(),
        public_key: cred.key.to_bytes(),
    };
    let proof = proof_if_enrolled(&g, &u, &action, r.step_up.as_ref(), &ip).await?;
    let (codes, hashes) = first_recovery(&u);
    let res = identity(
        &g,
        IdentityCommand::EnrolPasskey {
            user: u.id,
            passkey: Passkey {
                credential_id: cred.credential_id,
                public_key: cred.key.to_bytes(),
                sign_count: cred.sign_count,
                label: r
                    .label
                    .as_deref()
                    .map_or_else(|| "passkey".to_owned(), |l| l.chars().take(64).collect()),
                created_ns: 0,
            },
            proof,
            recovery: hashes,
        },
    )
    .await;
    audited(&g, u.id, &ip, res).await?;
    Ok(axum::Json(EnrolledOut {
        recovery_codes: codes,
    }))
}

/// Removes a passkey (needs a second-factor proof; starts the security-change lock).
#[utoipa::path(delete, path = "/me/passkeys/{id}", tag = "identity", security(("session" = [])),
    params(("id" = String, Path, description = "base64url credential id", pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$")), request_body = StepUpOnly,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn passkey_remove(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(r): Json<StepUpOnly>,
) -> ApiResult<StatusCode> {
    session_of(&p)?;
    let id = unb64("id", &id)?;
    remove_factor(&g, &p, FactorRef::Passkey(id), r.step_up.as_ref(), &ip).await
}

/// Replaces the recovery codes (needs a second-factor proof); the new ones are shown once.
#[utoipa::path(post, path = "/me/recovery-codes", tag = "identity", security(("session" = [])), request_body = StepUpOnly,
    responses((status = 200, body = EnrolledOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn recovery_codes(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Json(r): Json<StepUpOnly>,
) -> ApiResult<axum::Json<EnrolledOut>> {
    session_of(&p)?;
    g.caught_up().await?;
    let proof = prove(
        &g,
        p.user,
        &Action::NewRecoveryCodes { user: p.user },
        r.step_up.as_ref(),
        &ip,
    )
    .await?;
    let (codes, hashes) = totp::new_recovery_set(RECOVERY_CODES);
    let res = identity(
        &g,
        IdentityCommand::NewRecoveryCodes {
            user: p.user,
            hashes,
            proof,
        },
    )
    .await;
    audited(&g, p.user, &ip, res).await?;
    Ok(axum::Json(EnrolledOut {
        recovery_codes: codes,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordIn {
    pub current_password: String,
    /// 10 to 256 characters.
    #[schema(min_length = 10, max_length = 256)]
    pub new_password: String,
    pub step_up: Option<StepUpIn>,
}

/// Changes the password: needs the current one and (with a factor enrolled) a second-factor
/// proof; ends the other sessions and locks withdrawals for the security-change period.
#[utoipa::path(post, path = "/me/password", tag = "identity", security(("session" = [])), request_body = PasswordIn,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn change_password(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Json(r): Json<PasswordIn>,
) -> ApiResult<StatusCode> {
    let me = session_of(&p)?;
    g.caught_up().await?;
    let u = user_of(&g, p.user)?;
    if !g
        .hasher
        .verify(Some(&u.password_hash), &r.current_password)
        .await
        .map_err(password_error)?
    {
        audit_failure(&g, Some(u.id), &ip, "wrong current password on password change").await;
        return Err(Reject::CredentialsInvalid.into());
    }
    let proof = proof_if_enrolled(
        &g,
        &u,
        &Action::ChangePassword { user: u.id },
        r.step_up.as_ref(),
        &ip,
    )
    .await?;
    let hash = g.hasher.hash(&r.new_password).await.map_err(password_error)?;
    let res = identity(
        &g,
        IdentityCommand::ChangePassword {
            user: u.id,
            password_hash: hash,
            proof,
            keep_session: Some(me),
        },
    )
    .await;
    audited(&g, u.id, &ip, res).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailIn {
    #[schema(
        pattern = r#"^[!#-+\--:=?A-~]+@[!#-+\-/-:=?A-~][!#-+\--:=?A-~]*\.[!#-+\--:=?A-~]*[!#-+\-/-:=?A-~]$"#,
        max_length = 254
    )]
    pub email: String,
    pub step_up: Option<StepUpIn>,
}

/// Changes the email address (needs a second-factor proof; the old address is told; locks
/// withdrawals for the security-change period).
#[utoipa::path(post, path = "/me/email", tag = "identity", security(("session" = [])), request_body = EmailIn,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn change_email(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Json(r): Json<EmailIn>,
) -> ApiResult<StatusCode> {
    session_of(&p)?;
    let email = kinko_core::identity::normalise_email(&r.email).ok_or(Reject::EmailInvalid)?;
    g.caught_up().await?;
    let action = Action::ChangeEmail {
        user: p.user,
        email: email.clone(),
    };
    let proof = prove(&g, p.user, &action, r.step_up.as_ref(), &ip).await?;
    let res = identity(
        &g,
        IdentityCommand::ChangeEmail {
            user: p.user,
            email,
            proof,
        },
    )
    .await;
    audited(&g, p.user, &ip, res).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AntiPhishingIn {
    /// 4 to 32 letters, digits, spaces or `-_.!` (not starting or ending with a space); every
    /// message kinko sends shows it first.
    #[schema(pattern = r"^[A-Za-z0-9_.!-][A-Za-z0-9 _.!-]{2,30}[A-Za-z0-9_.!-]$")]
    pub code: String,
    pub step_up: Option<StepUpIn>,
}

/// Sets the anti-phishing code. Changing an existing one needs a second-factor proof (with a
/// factor enrolled) and locks withdrawals for the security-change period.
#[utoipa::path(post, path = "/me/anti-phishing", tag = "identity", security(("session" = [])), request_body = AntiPhishingIn,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn set_anti_phishing(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Json(r): Json<AntiPhishingIn>,
) -> ApiResult<StatusCode> {
    session_of(&p)?;
    if !kinko_core::identity::anti_phishing_ok(&r.code) {
        return Err(Reject::AntiPhishingInvalid.into());
    }
    g.caught_up().await?;
    let u = user_of(&g, p.user)?;
    let action = Action::SetAntiPhishing {
        user: u.id,
        code: r.code.clone(),
    };
    let proof = proof_if_enrolled(&g, &u, &action, r.step_up.as_ref(), &ip).await?;
    let res = identity(
        &g,
        IdentityCommand::SetAntiPhishing {
            user: u.id,
            code: r.code,
            proof,
        },
    )
    .await;
    audited(&g, u.id, &ip, res).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// API keys

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scopes {
    #[serde(default)]
    pub view: bool,
    #[serde(default)]
    pub trade: bool,
    #[serde(default)]
    pub withdraw: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyIn {
    pub label: Option<String>,
    pub scopes: Scopes,
    /// IPs or CIDR blocks the key may be used from; required with the withdraw scope.
    #[serde(default)]
    pub ip_allowlist: Vec<String>,
    /// Days until the key expires (default and most: `identity.api_key_days_max`, 90 unless
    /// configured).
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    pub expires_in_days: Option<u32>,
    /// A second-factor proof for exactly this key (every key needs one).
    pub step_up: Option<StepUpIn>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyOut {
    pub id: String,
    pub label: String,
    pub scopes: Vec<String>,
    pub ip_allowlist: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// `<id>.<secret>`: only in the answer that created the key, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn key_out(k: &kinko_core::keys::ApiKey, token: Option<String>) -> ApiKeyOut {
    let mut scopes = Vec::new();
    for (on, name) in [
        (k.permissions.view, "view"),
        (k.permissions.trade, "trade"),
        (k.permissions.withdraw, "withdraw"),
    ] {
        if on {
            scopes.push(name.to_owned());
        }
    }
    ApiKeyOut {
        id: k.id.clone(),
        label: k.label.clone(),
        scopes,
        ip_allowlist: k.ip_allowlist.clone(),
        created_at: rfc3339(k.created_ns),
        expires_at: k.expires_ns.map(rfc3339),
        token,
    }
}

/// Creates an API key; the secret is in this answer only. The withdraw scope needs an IP
/// allowlist and a second-factor proof.
#[utoipa::path(post, path = "/me/api-keys", tag = "identity", security(("session" = [])), request_body = ApiKeyIn,
    responses((status = 201, body = ApiKeyOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn create_api_key(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Json(r): Json<ApiKeyIn>,
) -> ApiResult<(StatusCode, axum::Json<ApiKeyOut>)> {
    session_of(&p)?;
    let permissions = Permissions {
        view: r.scopes.view,
        trade: r.scopes.trade,
        withdraw: r.scopes.withdraw,
    };
    if !(permissions.view || permissions.trade || permissions.withdraw) {
        return Err(ApiError::invalid("an API key needs at least one scope"));
    }
    let max = g.config.identity.api_key_days_max.max(1);
    let default = u32::try_from(g.config.identity.api_key_ttl.as_secs() / 86_400).unwrap_or(u32::MAX);
    let days = r.expires_in_days.unwrap_or(default.clamp(1, max));
    if days == 0 || days > max {
        return Err(ApiError::invalid(format!("expires_in_days must be 1 to {max}")));
    }
    let label = r.label.unwrap_or_default();
    let mut k = crate::vault::new_native_key(p.user, &label, permissions);
    k.record.ip_allowlist = r.ip_allowlist.iter().map(|s| s.trim().to_owned()).collect();
    k.record.expires_ns = Some(now_ns().saturating_add(u64::from(days) * 86_400_000_000_000));
    if permissions.withdraw && k.record.ip_allowlist.is_empty() {
        return Err(Reject::ApiKeyIpAllowlistRequired.into());
    }
    g.caught_up().await?;
    // Every key needs a fresh second factor: a session alone (perhaps a stolen one) cannot
    // mint a credential that outlives it.
    let action = if permissions.withdraw {
        Action::CreateWithdrawKey {
            user: p.user,
            label: label.clone(),
            ip_allowlist: k.record.ip_allowlist.clone(),
        }
    } else {
        Action::CreateApiKey {
            user: p.user,
            label: label.clone(),
            permissions,
            ip_allowlist: k.record.ip_allowlist.clone(),
        }
    };
    let proof = Some(prove(&g, p.user, &action, r.step_up.as_ref(), &ip).await?);
    let res = g
        .submit(Command::CreateApiKey {
            key: k.record.clone(),
            proof,
        })
        .await
        .and_then(|c| c.reply.map_err(ApiError::from));
    audited(&g, p.user, &ip, res).await?;
    g.caught_up().await?;
    let rec = g
        .read
        .model()
        .engine
        .keys()
        .get(&k.record.id)
        .cloned()
        .unwrap_or(k.record);
    Ok((StatusCode::CREATED, axum::Json(key_out(&rec, Some(k.token)))))
}

/// The user's API keys (never their secrets).
#[utoipa::path(get, path = "/me/api-keys", tag = "identity", security(("session" = [])),
    responses((status = 200, body = [ApiKeyOut]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_api_keys(State(g): State<AppState>, Auth(p): Auth) -> ApiResult<axum::Json<Vec<ApiKeyOut>>> {
    session_of(&p)?;
    g.caught_up().await?;
    let m = g.read.model();
    Ok(axum::Json(
        m.engine
            .keys()
            .of_user(p.user)
            .into_iter()
            .map(|k| key_out(k, None))
            .collect(),
    ))
}

/// Revokes an API key (needs a second-factor proof: a stolen session alone cannot take the
/// owner's keys away).
#[utoipa::path(delete, path = "/me/api-keys/{id}", tag = "identity", security(("session" = [])),
    params(("id" = String, Path)), request_body = StepUpOnly,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn revoke_api_key(
    State(g): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(p): Auth,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<StepUpOnly>,
) -> ApiResult<StatusCode> {
    session_of(&p)?;
    g.caught_up().await?;
    let owned = g
        .read
        .model()
        .engine
        .keys()
        .get(&id)
        .is_some_and(|k| k.user == p.user);
    if !owned {
        return Err(Reject::ApiKeyNotFound.into());
    }
    // A key made before keys needed a second factor, by a user who has none: nothing to prove.
    if !user_of(&g, p.user)?.has_factor() {
        g.submit(Command::RevokeApiKey { user: p.user, id })
            .await?
            .reply?;
        return Ok(StatusCode::NO_CONTENT);
    }
    let action = Action::RevokeApiKey {
        user: p.user,
        id: id.clone(),
    };
    let step_up = body.step_up;
    let proof = prove(&g, p.user, &action, step_up.as_ref(), &ip).await?;
    let res = g
        .submit(Command::RevokeApiKeyWithProof {
            user: p.user,
            id,
            proof,
        })
        .await
        .and_then(|c| c.reply.map_err(ApiError::from));
    audited(&g, p.user, &ip, res).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Operators

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeEverythingIn {
    pub requested_by: String,
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct RevokedOut {
    pub sessions: usize,
    pub users: usize,
}

/// Platform-wide revocation: every session and every second factor of every user. Users log in
/// again and re-enrol a factor with a recovery code; withdrawals are locked meanwhile.
#[utoipa::path(post, path = "/admin/revoke-everything", tag = "operator", security(("operator" = [])),
    request_body = RevokeEverythingIn,
    responses((status = 200, body = RevokedOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn revoke_everything(
    State(g): State<AppState>,
    _: Operator,
    Json(r): Json<RevokeEverythingIn>,
) -> ApiResult<axum::Json<RevokedOut>> {
    crate::trail::record(
        &g,
        "operator.revoke_everything",
        &format!("operator:{}", r.requested_by),
        "platform",
        json!({"reason": r.reason}),
    )
    .await?;
    match identity(
        &g,
        IdentityCommand::RevokeEverything {
            requested_by: r.requested_by,
            reason: r.reason,
        },
    )
    .await?
    {
        IdentityReply::Revoked { sessions, users } => Ok(axum::Json(RevokedOut { sessions, users })),
        other => Err(ApiError::invalid(format!("unexpected reply {other:?}"))),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusIn {
    /// `active`, `frozen` or `disabled`.
    #[schema(value_type = crate::schema::UserStatus)]
    pub status: String,
    pub requested_by: String,
    pub reason: String,
}

/// Freezes or disables a user (protective: one person may). Anything that loosens (active
/// again, or frozen after disabled) is refused with `TWO_ADMINS_REQUIRED`: one admin proposes
/// `unfreeze_user` in the console (`POST /ops/proposals`), a second approves it, each with
/// their second factor.
#[utoipa::path(post, path = "/admin/users/{id}/status", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path)), request_body = StatusIn,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn set_status(
    State(g): State<AppState>,
    _: Operator,
    Path(id): Path<String>,
    Json(r): Json<StatusIn>,
) -> ApiResult<StatusCode> {
    let user = id
        .parse::<u64>()
        .map(UserId)
        .map_err(|_| ApiError::invalid("id must be a user id"))?;
    let status = match r.status.as_str() {
        "active" => UserStatus::Active,
        "frozen" => UserStatus::Frozen,
        "disabled" => UserStatus::Disabled,
        _ => return Err(ApiError::invalid("status must be active, frozen or disabled")),
    };
    // One person may only tighten: active → frozen → disabled. Anything looser is two admins'.
    let rank = |s: UserStatus| match s {
        UserStatus::Active => 0,
        UserStatus::Frozen => 1,
        UserStatus::Disabled => 2,
    };
    g.caught_up().await?;
    let current = g
        .read
        .model()
        .engine
        .identity()
        .user(user)
        .map(|u| u.status)
        .ok_or(Reject::UserNotFound)?;
    if rank(status) < rank(current) || status == UserStatus::Active {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "TWO_ADMINS_REQUIRED",
            "unfreezing takes two admins: one proposes unfreeze_user in the console, a second approves it",
        ));
    }
    crate::trail::record(
        &g,
        "operator.set_status",
        &format!("operator:{}", r.requested_by),
        &format!("user:{}", user.0),
        json!({"status": r.status, "reason": r.reason}),
    )
    .await?;
    identity(
        &g,
        IdentityCommand::SetStatus {
            user,
            status,
            requested_by: r.requested_by,
            reason: r.reason,
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRoleIn {
    /// The user's id or email address.
    pub user: String,
    /// `viewer`, `support`, `risk`, `treasury` or `security_admin`.
    pub role: String,
    pub requested_by: String,
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct RolesOut {
    pub user_id: String,
    pub roles: Vec<String>,
}

/// Bootstrap: adds an admin role to a user, so that a new installation gets its first admins.
/// Refused with `ROLES_BOOTSTRAP_CLOSED` once two security admins exist; from then on roles
/// change only by a proposal that a second admin approves. A role the user already holds is
/// answered with the roles as they are, changing nothing.
#[utoipa::path(post, path = "/admin/roles", tag = "operator", security(("operator" = [])),
    request_body = GrantRoleIn,
    responses((status = 200, body = RolesOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn grant_role(
    State(g): State<AppState>,
    _: Operator,
    Json(r): Json<GrantRoleIn>,
) -> ApiResult<axum::Json<RolesOut>> {
    let role = kinko_core::identity::AdminRole::from_name(r.role.trim())
        .ok_or_else(|| ApiError::invalid("role must be viewer, support, risk, treasury or security_admin"))?;
    g.caught_up().await?;
    let (user, mut roles) = {
        let m = g.read.model();
        let id = m.engine.identity();
        let u = match r.user.trim().parse::<u64>() {
            Ok(n) => id.user(UserId(n)),
            Err(_) => id.user_by_email(&r.user),
        }
        .ok_or(Reject::UserNotFound)?;
        (u.id, u.roles.clone())
    };
    if roles.contains(&role) {
        // Already held: nothing to change (a retried command is answered the same).
        return Ok(roles_out(user, roles));
    }
    roles.push(role);
    crate::trail::record(
        &g,
        "operator.grant_role",
        &format!("operator:{}", r.requested_by),
        &format!("user:{}", user.0),
        json!({"role": role.name(), "reason": r.reason}),
    )
    .await?;
    identity(
        &g,
        IdentityCommand::SetRoles {
            user,
            roles: roles.clone(),
            requested_by: r.requested_by,
            reason: r.reason,
        },
    )
    .await?;
    Ok(roles_out(user, roles))
}

fn roles_out(user: UserId, mut roles: Vec<kinko_core::identity::AdminRole>) -> axum::Json<RolesOut> {
    roles.sort_unstable();
    axum::Json(RolesOut {
        user_id: user.0.to_string(),
        roles: roles.iter().map(|r| r.name().to_owned()).collect(),
    })
}

#[derive(Serialize, ToSchema)]
pub struct RestitutionOut {
    /// The incident that cost the customer.
    pub incident_id: String,
    pub incident_kind: String,
    /// The proposal two admins approved.
    pub proposal_id: String,
    pub asset: String,
    /// What was credited to the account.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: String,
    #[schema(format = DateTime)]
    pub paid_at: String,
}

/// What executed restitution plans paid this account, newest first.
#[utoipa::path(get, path = "/me/restitutions", tag = "identity", security(("session" = [])),
    responses((status = 200, body = [RestitutionOut]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn restitutions(
    State(g): State<AppState>,
    Auth(p): Auth,
) -> ApiResult<axum::Json<Vec<RestitutionOut>>> {
    session_of(&p)?;
    g.caught_up().await?;
    let m = g.read.model();
    let e = &m.engine;
    let mut out = Vec::new();
    for prop in e.admin().proposals.iter().rev() {
        let kinko_core::admin::AdminChange::Restitution(plan) = &prop.change else {
            continue;
        };
        if prop.status != kinko_core::admin::ProposalStatus::Executed {
            continue;
        }
        let Some(asset) = e.asset(plan.pay_asset) else {
            continue;
        };
        for l in plan.lines.iter().filter(|l| l.user == p.user) {
            out.push(RestitutionOut {
                incident_id: plan.incident.to_string(),
                incident_kind: e
                    .admin()
                    .incident(plan.incident)
                    .map(|i| i.kind.clone())
                    .unwrap_or_default(),
                proposal_id: prop.id.to_string(),
                asset: asset.code.as_str().to_owned(),
                amount: l.pay.to_decimal(asset.decimals),
                paid_at: rfc3339(prop.updated_ns),
            });
        }
    }
    Ok(axum::Json(out))
}

pub fn routes(r: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    r.routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(login_second_factor))
        .routes(routes!(logout))
        .routes(routes!(password_reset))
        .routes(routes!(password_reset_confirm))
        .routes(routes!(freeze))
        .routes(routes!(me))
        .routes(routes!(sessions))
        .routes(routes!(revoke_other_sessions))
        .routes(routes!(end_session))
        .routes(routes!(totp_begin, totp_remove))
        .routes(routes!(totp_confirm))
        .routes(routes!(passkey_begin))
        .routes(routes!(passkey_register))
        .routes(routes!(passkey_remove))
        .routes(routes!(recovery_codes))
        .routes(routes!(change_password))
        .routes(routes!(change_email))
        .routes(routes!(set_anti_phishing))
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(revoke_api_key))
        .routes(routes!(revoke_everything))
        .routes(routes!(set_status))
        .routes(routes!(grant_role))
        .routes(routes!(restitutions))
        .routes(routes!(set_language))
        .routes(routes!(security_log))
}
