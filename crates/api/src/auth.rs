//! Who is calling: native bearer tokens and Coinbase-style signed requests. Both end in a
//! [`Principal`]; handlers check its permissions. Secrets are compared in constant time and
//! never logged; every native failure reads the same to the client, and Coinbase-style ones use
//! Coinbase's messages (which ccxt maps to its exception classes).

use crate::error::{ApiError, ApiResult};
use crate::vault;
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use kinko_core::keys::{ApiKey, KeySecret, Permissions};
use kinko_core::UserId;

#[derive(Clone, Debug)]
pub struct Principal {
    pub user: UserId,
    pub key_id: String,
    pub permissions: Permissions,
}

#[derive(Clone, Copy, Debug)]
pub enum Need {
    View,
    Trade,
    Transfer,
}

impl Principal {
    pub fn require(&self, need: Need) -> ApiResult<()> {
        let ok = match need {
            Need::View => self.permissions.view,
            Need::Trade => self.permissions.trade,
            Need::Transfer => self.permissions.transfer,
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

fn from_record(k: &ApiKey) -> Principal {
    Principal {
        user: k.user,
        key_id: k.id.clone(),
        permissions: k.permissions,
    }
}

/// Finds a key, waiting once for the read side if it is not there yet (a key created a moment
/// ago).
pub async fn find_key(g: &AppState, id: &str) -> Option<ApiKey> {
    if let Some(k) = g.read.model().engine.keys().get(id).cloned() {
        return Some(k);
    }
    g.caught_up().await.ok()?;
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
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme is case-insensitive (RFC 9110 §11.1).
            .and_then(|v| {
                v.get(..7)
                    .filter(|s| s.eq_ignore_ascii_case("bearer "))
                    .map(|_| &v[7..])
            })
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <api key>"))?;
        let (id, secret) = token.trim().split_once('.').ok_or_else(bad_credentials)?;
        let key = find_key(g, id).await.ok_or_else(bad_credentials)?;
        if !vault::verify_native(&key, secret) {
            return Err(bad_credentials());
        }
        g.check_key_rate(id)?;
        Ok(Auth(from_record(&key)))
    }
}

/// Why a Coinbase-style request was refused (the compat layer renders it its own way).
pub fn coinbase_error(message: &str) -> ApiError {
    ApiError::unauthorized(message.to_owned())
}

/// Checks CB-ACCESS-KEY / -SIGN / -TIMESTAMP / -PASSPHRASE over timestamp + method + path with
/// query + body.
pub async fn coinbase(
    g: &AppState,
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
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now_s.abs_diff(ts_s) > g.config.signature_window_s {
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
    g.check_key_rate(key)?;
    Ok(from_record(&record))
}
