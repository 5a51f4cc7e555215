//! Who is calling: native bearer tokens and Coinbase-style signed requests. Both end in a
//! [`Principal`]; handlers check its permissions. Secrets are compared in constant time and
//! never logged; every native failure reads the same to the client, and Coinbase-style ones use
//! Coinbase's messages (which ccxt maps to its exception classes).

use crate::error::{ApiError, ApiResult};
use crate::ratelimit::RateClass;
use crate::AppState;
use crate::{replay, vault};
use axum::extract::ConnectInfo;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use kinko_core::identity::{SessionLevel, Via};
use kinko_core::keys::{ApiKey, KeySecret, Permissions};
use kinko_core::{Reject, UserId};
use std::net::SocketAddr;

#[derive(Clone, Debug)]
pub struct Principal {
    pub user: UserId,
    /// The API key id, or `session` for a session.
    pub key_id: String,
    pub permissions: Permissions,
    /// How the caller came: the engine checks it again for withdrawal-class commands.
    pub via: Via,
    /// The client's address (for audit records).
    pub ip: String,
}

impl Principal {
    /// The session's token hash, when the caller is a session.
    pub fn session(&self) -> Option<[u8; 32]> {
        match &self.via {
            Via::Session(h) => Some(*h),
            Via::ApiKey { .. } => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Need {
    View,
    Trade,
    Withdraw,
}

/// Session tokens start with this, API key tokens never do.
pub const SESSION_PREFIX: &str = "kss_";

/// A new session token (shown to the client once) and the hash the engine keeps.
pub fn new_session_token() -> (String, [u8; 32]) {
    use base64::Engine as _;
    let token = format!(
        "{SESSION_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vault::random_bytes::<32>())
    );
    let h = session_hash(&token);
    (token, h)
}

/// Domain-separated hash of a session token.
pub fn session_hash(token: &str) -> [u8; 32] {
    *blake3::keyed_hash(b"kinko session token hash v1 ....", token.as_bytes()).as_bytes()
}

/// The client's IP address as the server saw it ("unknown" without a socket, as in tests that
/// call the router directly).
pub fn client_ip(parts: &Parts) -> String {
    ip_from(&parts.extensions)
}

/// The same from a request's extensions.
pub fn ip_from(extensions: &axum::http::Extensions) -> String {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_canonical().to_string())
}

/// The client's IP address as an extractor (never fails).
pub struct ClientIp(pub String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<ClientIp, Self::Rejection> {
        Ok(ClientIp(client_ip(parts)))
    }
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Principal {
    pub fn require(&self, need: Need) -> ApiResult<()> {
        let ok = match need {
            Need::View => self.permissions.view,
            Need::Trade => self.permissions.trade,
            Need::Withdraw => self.permissions.withdraw,
        };
        if ok {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "this API key lacks the permission for this request",
            ))
        }
    }
}

fn from_record(k: &ApiKey, ip: &str) -> Principal {
    Principal {
        user: k.user,
        key_id: k.id.clone(),
        permissions: k.permissions,
        via: Via::ApiKey {
            id: k.id.clone(),
            ip: ip.to_owned(),
        },
        ip: ip.to_owned(),
    }
}

/// The checks on a key once its secret verified: expiry, IP allowlist, the owner not frozen or
/// disabled.
fn key_usable(g: &AppState, k: &ApiKey, ip: &str) -> ApiResult<()> {
    k.usable_from(ip, now_ns())?;
    let m = g.read.model();
    if let Some(u) = m.engine.identity().user(k.user) {
        match u.status {
            kinko_core::identity::UserStatus::Active => {}
            kinko_core::identity::UserStatus::Frozen => return Err(Reject::AccountFrozen.into()),
            kinko_core::identity::UserStatus::Disabled => return Err(Reject::AccountDisabled.into()),
        }
    }
    Ok(())
}

/// A live session by token, read once the read side has every acknowledged write: a session
/// opened a moment ago is found, and one ended a moment ago (logout, revocation, freeze) is not.
pub async fn find_session(g: &AppState, token: &str) -> Option<kinko_core::identity::Session> {
    let h = session_hash(token);
    // (If the read side lags, look anyway: the handler's own read waits and answers 503.)
    let _ = g.caught_up().await;
    g.read.model().engine.identity().session(&h, now_ns()).cloned()
}

pub(crate) fn bearer(parts: &Parts) -> ApiResult<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| {
            v.get(..7)
                .filter(|s| s.eq_ignore_ascii_case("bearer "))
                .map(|_| v[7..].trim())
        })
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <api key or session token>"))
}

/// A session principal, at either level.
async fn session_principal(
    g: &AppState,
    token: &str,
    ip: String,
    class: RateClass,
) -> ApiResult<(Principal, SessionLevel)> {
    let s = find_session(g, token)
        .await
        .ok_or_else(|| ApiError::from(Reject::SessionInvalid))?;
    session_usable(g, s.user)?;
    g.check_key_rate(&hex::encode(&s.token_hash[..8]), class)?;
    Ok((
        Principal {
            user: s.user,
            key_id: "session".into(),
            permissions: Permissions::ALL,
            via: Via::Session(s.token_hash),
            ip,
        },
        s.level,
    ))
}

/// The check on a live session's owner: not disabled (a frozen owner may still sign in and
/// look; the engine refuses what a frozen account may not do).
fn session_usable(g: &AppState, user: UserId) -> ApiResult<()> {
    let m = g.read.model();
    match m.engine.identity().user(user) {
        Some(u) if u.status == kinko_core::identity::UserStatus::Disabled => {
            Err(Reject::AccountDisabled.into())
        }
        _ => Ok(()),
    }
}

/// Whether a principal authenticated earlier may still act, by the read side as it is now: its
/// key not revoked or expired and usable from its address by an owner neither frozen nor
/// disabled, or its session not ended or expired and its owner not disabled. Long-lived
/// connections (the WebSocket) ask again after each batch that could change the answer.
pub fn still_usable(g: &AppState, p: &Principal) -> ApiResult<()> {
    match &p.via {
        Via::ApiKey { id, .. } => {
            let key = g.read.model().engine.keys().get(id).cloned();
            match key {
                Some(k) if !k.revoked => key_usable(g, &k, &p.ip),
                _ => Err(ApiError::unauthorized("the API key was revoked")),
            }
        }
        Via::Session(h) => {
            let user = g
                .read
                .model()
                .engine
                .identity()
                .session(h, now_ns())
                .map(|s| s.user);
            session_usable(g, user.ok_or_else(|| ApiError::from(Reject::SessionInvalid))?)
        }
    }
}

/// A caller with a session at any level: a password-only session may finish its login (second
/// factor), log out, and re-enrol a factor after platform-wide revocation; nothing else.
pub struct AnySession(pub Principal, pub SessionLevel);

impl FromRequestParts<AppState> for AnySession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, g: &AppState) -> Result<AnySession, ApiError> {
        let token = bearer(parts)?;
        if !token.starts_with(SESSION_PREFIX) {
            return Err(ApiError::unauthorized(
                "this endpoint needs a session token, not an API key",
            ));
        }
        let (p, level) = session_principal(g, token, client_ip(parts), RateClass::Private).await?;
        Ok(AnySession(p, level))
    }
}

/// Finds a key once the read side has every acknowledged write: a key created a moment ago is
/// found, one revoked a moment ago (or whose owner was just frozen or disabled) is refused.
pub async fn find_key(g: &AppState, id: &str) -> Option<ApiKey> {
    let _ = g.caught_up().await;
    g.read.model().engine.keys().get(id).cloned()
}

fn bad_credentials() -> ApiError {
    ApiError::unauthorized("invalid API key or secret")
}

/// A caller authenticated with `Authorization: Bearer <key id>.<secret>`.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, g: &AppState) -> Result<Auth, ApiError> {
        let token = bearer(parts)?;
        let class = RateClass::of(parts.method.as_str(), parts.uri.path());
        bearer_principal(g, token, client_ip(parts), class)
            .await
            .map(Auth)
    }
}

/// The caller behind a bearer token (a full session, or `<key id>.<secret>` of a native key)
/// coming from `ip`, with every check REST makes: the secret, expiry, IP allowlist, the owner's
/// status, the per-key rate. The WebSocket's `auth` uses it too.
pub async fn bearer_principal(
    g: &AppState,
    token: &str,
    ip: String,
    class: RateClass,
) -> ApiResult<Principal> {
    if token.starts_with(SESSION_PREFIX) {
        let (p, level) = session_principal(g, token, ip, class).await?;
        if level != SessionLevel::Full {
            return Err(Reject::SecondFactorRequired.into());
        }
        return Ok(p);
    }
    let (id, secret) = token.split_once('.').ok_or_else(bad_credentials)?;
    let key = find_key(g, id).await.ok_or_else(bad_credentials)?;
    if !vault::verify_native(&key, secret) {
        return Err(bad_credentials());
    }
    key_usable(g, &key, &ip)?;
    g.check_key_rate(id, class)?;
    Ok(from_record(&key, &ip))
}

/// Why a Coinbase-style request was refused (the compat layer renders it its own way).
pub fn coinbase_error(message: &str) -> ApiError {
    ApiError::unauthorized(message.to_owned())
}

/// Checks CB-ACCESS-KEY / -SIGN / -TIMESTAMP / -PASSPHRASE over timestamp + method + path with
/// query + body.
pub async fn coinbase(
    g: &AppState,
    ip: &str,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Principal> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(key), Some(sign), Some(ts), Some(pass)) = (
        h("cb-access-key"),
        h("cb-access-sign"),
        h("cb-access-timestamp"),
        h("cb-access-passphrase"),
    ) else {
        return Err(coinbase_error("invalid signature"));
    };
    let ts_s = ts
        .split_once('.')
        .map_or(ts, |(i, _)| i)
        .parse::<u64>()
        .map_err(|_| coinbase_error("invalid timestamp"))?;
    let now_s = now_ns() / 1_000_000_000;
    if ts_s > now_s.saturating_add(replay::FUTURE_S) {
        return Err(coinbase_error("request timestamp is in the future"));
    }
    if now_s.saturating_sub(ts_s) > g.config.signature_window_s {
        return Err(coinbase_error("request timestamp expired"));
    }
    let record = find_key(g, key)
        .await
        .ok_or_else(|| coinbase_error("Invalid API Key"))?;
    let mut prehash = Vec::with_capacity(ts.len() + method.len() + path_and_query.len() + body.len());
    prehash.extend_from_slice(ts.as_bytes());
    prehash.extend_from_slice(method.as_bytes());
    prehash.extend_from_slice(path_and_query.as_bytes());
    prehash.extend_from_slice(body);
    if !vault::verify_coinbase(&g.vault, &record, pass, &prehash, sign) {
        // Coinbase tells a wrong passphrase apart, but only to a caller whose signature is
        // right (who holds the secret): otherwise the answer would be a passphrase oracle.
        let signature_ok = match &record.secret {
            KeySecret::Coinbase { sealed_secret, .. } => {
                let mut with_given = record.clone();
                with_given.secret = KeySecret::Coinbase {
                    sealed_secret: sealed_secret.clone(),
                    passphrase_hash: vault::secret_hash(pass.as_bytes()),
                };
                vault::verify_coinbase(&g.vault, &with_given, pass, &prehash, sign)
            }
            KeySecret::Native { .. } => false,
        };
        return Err(coinbase_error(if signature_ok {
            "Invalid Passphrase"
        } else {
            "invalid signature"
        }));
    }
    key_usable(g, &record, ip).map_err(|e| coinbase_error(&e.message))?;
    g.check_key_rate(key, RateClass::of(method, path_and_query))?;
    if changes_state(method) {
        let until_s = ts_s.saturating_add(g.config.signature_window_s);
        g.replays
            .first_use(replay::Seen::digest(key, &prehash), until_s, now_s)
            .map_err(|r| match r {
                replay::Refused::Replayed => ApiError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "REQUEST_REPLAYED",
                    "this signed request was already used; sign every request anew",
                ),
                replay::Refused::Full => ApiError::unavailable(
                    "SIGNED_REQUESTS_BUSY",
                    "too many signed requests right now; retry in a few seconds",
                ),
            })?;
    }
    Ok(from_record(&record, ip))
}

/// Whether a Coinbase-style request is refused when replayed. GET and HEAD are not: they
/// change nothing, and clients such as ccxt sign with whole-second timestamps, so polling the
/// same path twice within a second sends the very same signed request, which must still work.
/// A replayed read reveals nothing the captured request's own answer did not, for at most the
/// window.
fn changes_state(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD")
}
