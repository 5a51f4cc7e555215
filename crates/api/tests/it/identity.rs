//! Accounts, sessions and second factors over HTTP against a real server on loopback: register
//! and login, the password-level session that can only finish its login, sessions, operator
//! actions, the attack table of docs/design/identity.md (each refusal with its stable code and,
//! where the design asks, its audit record in the journal), the security-change lock, the
//! anti-phishing code and freeze link in every message (an outbox folder and a real SMTP
//! socket), the freeze link itself, and platform-wide revocation with re-enrolment through a
//! recovery code.

use crate::harness::{
    token_after, unb64, wait_for_mail, Authenticator, Factor, TestServer, User, BTC, OPERATOR_TOKEN,
};
use crate::native::{assert_error, usable_address};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use kinko_api::mail::Smtp;
use kinko_api::ApiConfig;
use kinko_core::engine::{Command, Reply};
use kinko_core::identity::{challenge_bytes, Action, IdentityCommand, Policy};
use kinko_core::keys::Permissions;
use kinko_core::wallet::AddressId;
use kinko_core::{Amount, Reject, UserId};
use reqwest::Method;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NS: u64 = 1_000_000_000;

fn assert_refused(ctx: &str, r: &(u16, Value), status: u16, code: &str) {
    assert_error(ctx, r.0, &r.1, status, code);
}

async fn login(s: &TestServer, email: &str, password: &str, device: &str) -> (u16, Value) {
    s.request(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"email": email, "password": password, "device": device})),
    )
    .await
}

/// Logs `u` in with its password: a password-level session and its second-factor answer.
async fn password_login(s: &TestServer, u: &User) -> (String, Value) {
    let (st, r) = login(s, &u.email, &u.password, "test").await;
    assert_eq!((st, &r["level"]), (200, &json!("password")), "{r}");
    (
        r["token"].as_str().unwrap().to_owned(),
        r["second_factor"].clone(),
    )
}

async fn second_factor(s: &TestServer, token: &str, step_up: Value) -> (u16, Value) {
    s.request(
        Method::POST,
        "/api/v1/auth/login/second-factor",
        Some(token),
        Some(json!({"step_up": step_up})),
    )
    .await
}

/// A new full session of `u` (password, then its passkey).
async fn full_session(s: &TestServer, u: &User) -> String {
    let (token, sf) = password_login(s, u).await;
    let r = second_factor(
        s,
        &token,
        u.step_up_passkey(sf["challenge"].as_str().unwrap(), &s.origin),
    )
    .await;
    assert_eq!((r.0, &r.1["level"]), (200, &json!("full")), "{}", r.1);
    r.1["token"].as_str().unwrap().to_owned()
}

async fn me(s: &TestServer, session: &str) -> (u16, Value) {
    s.request(Method::GET, "/api/v1/me", Some(session), None).await
}

/// A withdrawal address of user `i` usable at once (whitelisted by an operator), and its id.
async fn address_of(s: &TestServer, i: usize) -> (String, u64) {
    let address = kinko_sim::SimChain::new([9; 32], &["BTC", "ETH"]).address(&format!("identity/BTC/{i}"));
    let id = usable_address(s, s.users[i].id, &address).await;
    (address, id)
}

fn withdrawal(address_id: u64, amount: &str) -> Value {
    json!({"address_id": address_id.to_string(), "amount": amount})
}

/// BTC balance of user `i` as (available, hold).
async fn btc(s: &TestServer, i: usize) -> (String, String) {
    let (st, b) = s.get(Some(i), "/api/v1/balances").await;
    assert_eq!(st, 200, "{b}");
    let b = b
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == "BTC")
        .unwrap()
        .clone();
    (
        b["available"].as_str().unwrap().to_owned(),
        b["hold"].as_str().unwrap().to_owned(),
    )
}

/// A 6-digit code that matches none of the steps the server accepts now.
fn wrong_code(u: &User) -> String {
    let step = kinko_api::auth::now_ns() / NS / 30;
    let near: Vec<String> = (step - 2..=step + 2).map(|t| u.totp_at(t)).collect();
    (0..1_000_000u32)
        .map(|n| format!("{:06}", (n * 7_919 + 123_457) % 1_000_000))
        .find(|c| !near.contains(c))
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Registration, login, sessions.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_validates_email_password_and_uniqueness() {
    let s = TestServer::start(0).await;
    let register = |email: &str, password: &str| {
        s.request(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(json!({"email": email, "password": password})),
        )
    };
    let (st, r) = register("Carol@Example.com", "a long enough password").await;
    assert_eq!(st, 201, "{r}");
    assert_eq!(r, json!({"user_id": "1"}));
    // The address is normalised: the same one in another case is taken.
    let r = register("  carol@EXAMPLE.com ", "another long password").await;
    assert_refused("duplicate email", &r, 409, "EMAIL_TAKEN");
    let r = register("dave@example.com", "short").await;
    assert_refused("weak password", &r, 400, "PASSWORD_WEAK");
    let r = register("dave@example.com", &"x".repeat(257)).await;
    assert_refused("overlong password", &r, 400, "PASSWORD_WEAK");
    for bad in [
        "not-an-email",
        "dave@",
        "@example.com",
        "dave@example",
        "a b@example.com",
    ] {
        let r = register(bad, "a long enough password").await;
        assert_refused(bad, &r, 400, "EMAIL_INVALID");
    }
    // Nothing of the refused ones was registered; the new user can log in (no factor yet: full).
    let (st, r) = login(&s, "carol@example.com", "a long enough password", "laptop").await;
    assert_eq!(
        (st, &r["level"], &r["user_id"]),
        (200, &json!("full"), &json!("1")),
        "{r}"
    );
    let r = login(&s, "dave@example.com", "a long enough password", "laptop").await;
    assert_refused("refused registration", &r, 401, "CREDENTIALS_INVALID");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_email_get_the_same_answer_and_are_audited() {
    let s = TestServer::start(1).await;
    let u = &s.users[0];
    let wrong = login(&s, &u.email, "not the password at all", "x").await;
    assert_refused("wrong password", &wrong, 401, "CREDENTIALS_INVALID");
    let unknown = login(&s, "nobody@kinko.test", "not the password at all", "x").await;
    assert_refused("unknown email", &unknown, 401, "CREDENTIALS_INVALID");
    assert_eq!(
        wrong.1, unknown.1,
        "the answer does not tell which part was wrong"
    );
    // Both are in the journal as audit records: one naming the user, one not.
    let audit = s.auth_failures();
    assert!(
        audit.iter().any(|(who, ip, why)| *who == Some(u.id)
            && ip == "127.0.0.1"
            && why.contains("wrong email or password")),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|(who, _, why)| who.is_none() && why.contains("wrong email or password")),
        "{audit:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_level_session_only_finishes_its_login() {
    let s = TestServer::start(1).await;
    let u = &s.users[0];
    let (token, sf) = password_login(&s, u).await;
    assert!(token.starts_with("kss_"), "{token}");
    let methods = sf["methods"].as_array().unwrap();
    assert!(
        methods.contains(&json!("totp")) && methods.contains(&json!("webauthn")),
        "{sf}"
    );
    assert_eq!(sf["webauthn"]["rpId"], "localhost");
    assert_eq!(sf["webauthn"]["challenge"], sf["challenge"]);

    // A stolen password without the second factor: the session cannot read or move anything.
    let r = s
        .request(Method::GET, "/api/v1/balances", Some(&token), None)
        .await;
    assert_refused(
        "balances with a password-level session",
        &r,
        403,
        "SECOND_FACTOR_REQUIRED",
    );
    let r = s
        .request(
            Method::POST,
            "/api/v1/withdrawals",
            Some(&token),
            Some(withdrawal(1, "0.1")),
        )
        .await;
    assert_refused(
        "withdrawal with a password-level session",
        &r,
        403,
        "SECOND_FACTOR_REQUIRED",
    );
    let r = s
        .request(Method::GET, "/api/v1/me/sessions", Some(&token), None)
        .await;
    assert_refused(
        "sessions with a password-level session",
        &r,
        403,
        "SECOND_FACTOR_REQUIRED",
    );

    // A wrong code: refused and audited; the session still waits for its factor.
    let r = second_factor(&s, &token, json!({"totp": wrong_code(u)})).await;
    assert_refused("wrong TOTP code", &r, 403, "STEP_UP_INVALID");
    assert!(s.auth_failures_of(u.id, "TOTP refused") >= 1);

    // TOTP: a new full token; the old one stops working.
    let (_, code) = u.totp().await;
    let (st, r) = second_factor(&s, &token, json!({"challenge": sf["challenge"], "totp": code})).await;
    assert_eq!((st, &r["level"]), (200, &json!("full")), "{r}");
    let full = r["token"].as_str().unwrap().to_owned();
    assert_ne!(full, token);
    let r = me(&s, &token).await;
    assert_refused(
        "the password-level token after the login",
        &r,
        401,
        "SESSION_INVALID",
    );
    let (st, b) = s
        .request(Method::GET, "/api/v1/balances", Some(&full), None)
        .await;
    assert_eq!(st, 200, "{b}");

    // A passkey: the same.
    let (token, sf) = password_login(&s, u).await;
    let (st, r) = second_factor(
        &s,
        &token,
        u.step_up_passkey(sf["challenge"].as_str().unwrap(), &s.origin),
    )
    .await;
    assert_eq!((st, &r["level"]), (200, &json!("full")), "{r}");
    let full2 = r["token"].as_str().unwrap().to_owned();
    assert_refused("the old token", &me(&s, &token).await, 401, "SESSION_INVALID");
    let (st, m) = me(&s, &full2).await;
    assert_eq!((st, &m["email"]), (200, &json!(u.email)), "{m}");
    // A full session cannot "finish" a login again.
    let r = second_factor(&s, &full2, json!({"totp": "123456"})).await;
    assert_refused("second factor on a full session", &r, 400, "INVALID_PARAMETER");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_ended_one_by_one_or_all_but_this_one() {
    let s = TestServer::start(1).await;
    let u = &s.users[0];
    let a = full_session(&s, u).await;
    let b = full_session(&s, u).await;
    let (st, list) = s
        .request(Method::GET, "/api/v1/me/sessions", Some(&u.session), None)
        .await;
    assert_eq!(st, 200, "{list}");
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 3, "{list:?}");
    assert_eq!(list.iter().filter(|x| x["current"] == true).count(), 1);
    assert!(list
        .iter()
        .all(|x| x["level"] == "full" && x["ip"] == "127.0.0.1"));
    let id_of = |token: &str| hex::encode(&kinko_api::auth::session_hash(token)[..8]);
    assert!(list.iter().any(|x| x["id"] == id_of(&a)));

    // Ending another session takes a second factor (a stolen session cannot sign the owner out).
    let r = s
        .request(
            Method::DELETE,
            &format!("/api/v1/me/sessions/{}", id_of(&a)),
            Some(&u.session),
            None,
        )
        .await;
    assert_refused(
        "ending a session without a second factor",
        &r,
        403,
        "STEP_UP_REQUIRED",
    );
    assert_eq!(me(&s, &a).await.0, 200, "not ended without the factor");
    let r = s
        .with_step_up_as(
            u,
            &u.session,
            Factor::Passkey,
            Method::DELETE,
            &format!("/api/v1/me/sessions/{}", id_of(&a)),
            json!({}),
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);
    assert_refused("an ended session", &me(&s, &a).await, 401, "SESSION_INVALID");
    assert_eq!(me(&s, &b).await.0, 200);
    let r = s
        .request(
            Method::DELETE,
            "/api/v1/me/sessions/0011223344556677",
            Some(&u.session),
            None,
        )
        .await;
    assert_refused("an unknown session", &r, 404, "NOT_FOUND");

    let r = s
        .request(
            Method::POST,
            "/api/v1/me/sessions/revoke-others",
            Some(&u.session),
            None,
        )
        .await;
    assert_refused(
        "revoke-others without a second factor",
        &r,
        403,
        "STEP_UP_REQUIRED",
    );
    assert_eq!(me(&s, &b).await.0, 200, "not ended without the factor");
    let r = s
        .with_step_up_as(
            u,
            &u.session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/me/sessions/revoke-others",
            json!({}),
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);
    assert_refused(
        "revoked by another session",
        &me(&s, &b).await,
        401,
        "SESSION_INVALID",
    );
    assert_eq!(me(&s, &u.session).await.0, 200, "the session that asked stays");

    let r = s
        .request(Method::POST, "/api/v1/auth/logout", Some(&u.session), None)
        .await;
    assert_eq!(r.0, 204, "{}", r.1);
    assert_refused("logged out", &me(&s, &u.session).await, 401, "SESSION_INVALID");
    // API keys are not sessions: they keep working.
    assert_eq!(s.get(Some(0), "/api/v1/balances").await.0, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_disabling_a_user_ends_its_sessions() {
    let s = TestServer::start(3).await;
    let u = &s.users[0];
    let status = |id: UserId, status: &str, token: &str| {
        let (path, body, token) = (
            format!("/api/v1/admin/users/{}/status", id.0),
            json!({"status": status, "requested_by": "ops", "reason": "review"}),
            token.to_owned(),
        );
        let s = &s;
        async move { s.request(Method::POST, &path, Some(&token), Some(body)).await }
    };
    // Not the operator: refused and audited.
    let r = status(u.id, "disabled", "not-the-operator-token").await;
    assert_refused("a wrong operator token", &r, 401, "UNAUTHORIZED");
    let r = status(u.id, "disabled", &u.session).await;
    assert_refused("a user's session", &r, 401, "UNAUTHORIZED");
    assert!(s
        .auth_failures()
        .iter()
        .any(|(who, _, why)| who.is_none() && why == "bad operator token"));
    assert_eq!(me(&s, &u.session).await.0, 200);

    let r = status(u.id, "disabled", OPERATOR_TOKEN).await;
    assert_eq!(r.0, 204, "{}", r.1);
    assert_refused(
        "a disabled user's session",
        &me(&s, &u.session).await,
        401,
        "SESSION_INVALID",
    );
    // Disabling ended the user's API keys as well.
    let r = s.get(Some(0), "/api/v1/balances").await;
    assert_refused("a disabled user's API key", &r, 401, "UNAUTHORIZED");
    let r = login(&s, &u.email, &u.password, "x").await;
    assert_refused("a disabled user's login", &r, 403, "ACCOUNT_DISABLED");
    // Others are untouched.
    assert_eq!(me(&s, &s.users[1].session).await.0, 200);
    let r = status(UserId(999), "frozen", OPERATOR_TOKEN).await;
    assert_refused("an unknown user", &r, 404, "USER_NOT_FOUND");
    let r = status(u.id, "asleep", OPERATOR_TOKEN).await;
    assert_refused("an unknown status", &r, 400, "INVALID_PARAMETER");

    // Back to active, or even to frozen, is not the operator's alone: two admins, each with a
    // second factor.
    let r = status(u.id, "frozen", OPERATOR_TOKEN).await;
    assert_refused(
        "disabled to frozen by the operator alone",
        &r,
        403,
        "TWO_ADMINS_REQUIRED",
    );
    let r = status(u.id, "active", OPERATOR_TOKEN).await;
    assert_refused(
        "an unfreeze by the operator alone",
        &r,
        403,
        "TWO_ADMINS_REQUIRED",
    );
    let r = login(&s, &u.email, &u.password, "x").await;
    assert_refused("still disabled", &r, 403, "ACCOUNT_DISABLED");
    unfreeze_by_two_admins(&s, u.id, [1, 2]).await;
    // Active again: sign-in works; the ended key stays ended (the user makes a new one).
    let r = s.get(Some(0), "/api/v1/balances").await;
    assert_refused("a key ended by the status change", &r, 401, "UNAUTHORIZED");
    password_login(&s, u).await;
    s.stop().await;
}

/// Makes users `admins` security admins through the operator's bootstrap, then unfreezes
/// `user` the only way there is: the first proposes (passkey), the first cannot approve their
/// own proposal, the second approves it (passkey).
async fn unfreeze_by_two_admins(s: &TestServer, user: UserId, admins: [usize; 2]) {
    for i in admins {
        let body = json!({"user": s.users[i].email, "role": "security_admin", "requested_by": "ops", "reason": "first admins"});
        let r = s
            .request(
                Method::POST,
                "/api/v1/admin/roles",
                Some(OPERATOR_TOKEN),
                Some(body),
            )
            .await;
        assert_eq!(r.0, 200, "{}", r.1);
    }
    let admin = |i: usize, path: String, body: serde_json::Value| async move {
        let a = &s.users[i];
        s.with_step_up_as(a, &a.session, Factor::Passkey, Method::POST, &path, body)
            .await
    };
    let body = json!({"kind": "unfreeze_user", "user_id": user.0.to_string(), "reason": "reviewed with the customer"});
    let (st, p) = admin(admins[0], "/api/v1/ops/proposals".into(), body).await;
    assert_eq!((st, p["kind"].as_str()), (200, Some("unfreeze_user")), "{p}");
    let approve = format!("/api/v1/ops/proposals/{}/approve", p["id"].as_str().unwrap());
    let (st, own) = admin(admins[0], approve.clone(), json!({})).await;
    assert_eq!((st, own["code"].as_str()), (403, Some("OWN_PROPOSAL")), "{own}");
    let (st, done) = admin(admins[1], approve, json!({})).await;
    assert_eq!((st, done["status"].as_str()), (200, Some("executed")), "{done}");
}

// ---------------------------------------------------------------------------------------------
// The attack table.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_a_replayed_totp_code_is_refused() {
    let s = TestServer::start(1).await;
    let u = &s.users[0];
    let (_, addr) = address_of(&s, 0).await;
    let (_, code) = u.totp().await;
    let (st, w) = s
        .post(
            0,
            "/api/v1/withdrawals",
            json!({"address_id": addr.to_string(), "amount": "0.1", "step_up": {"totp": code}}),
        )
        .await;
    assert_eq!(st, 200, "{w}");
    // The same code again, for another withdrawal, inside its 30 s step: refused.
    let r = s
        .post(
            0,
            "/api/v1/withdrawals",
            json!({"address_id": addr.to_string(), "amount": "0.2", "step_up": {"totp": code}}),
        )
        .await;
    assert_refused("a replayed code", &r, 403, "STEP_UP_REPLAYED");
    assert!(
        s.auth_failures_of(u.id, "TOTP refused: TOTP_REPLAYED") >= 1,
        "{:?}",
        s.auth_failures()
    );
    // Only the first withdrawal exists.
    let (_, list) = s.get(Some(0), "/api/v1/withdrawals").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(btc(&s, 0).await, ("9.90000000".into(), "0.10000000".into()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_a_proof_for_one_withdrawal_does_not_authorise_another() {
    let s = TestServer::start(1).await;
    let u = &s.users[0];
    let (a_address, a) = address_of(&s, 0).await;
    let other = kinko_sim::SimChain::new([9; 32], &["BTC"]).address("identity/BTC/other");
    let b = usable_address(&s, u.id, &other).await;
    let challenge = s
        .challenge(
            &u.token,
            Method::POST,
            "/api/v1/withdrawals",
            withdrawal(a, "0.1"),
        )
        .await;
    // The passkey signed 0.1 BTC to address a: not 0.2, not address b.
    for (ctx, other) in [
        ("another amount", withdrawal(a, "0.2")),
        ("another address", withdrawal(b, "0.1")),
    ] {
        let mut body = other.clone();
        body["step_up"] = u.step_up_passkey(&challenge, &s.origin);
        let r = s.post(0, "/api/v1/withdrawals", body).await;
        assert_refused(ctx, &r, 403, "STEP_UP_ACTION_MISMATCH");
        // A TOTP code bound to the first one's challenge is refused the same way.
        let mut body = other;
        body["step_up"] = u.step_up_totp(Some(&challenge)).await;
        let r = s.post(0, "/api/v1/withdrawals", body).await;
        assert_refused(&format!("{ctx} (totp)"), &r, 403, "STEP_UP_ACTION_MISMATCH");
    }
    assert!(s.auth_failures_of(u.id, "step-up challenge for a different action") >= 4);

    // The engine checks the binding itself: a proof made for 0.1 BTC, submitted directly with
    // 0.2 BTC, is refused there too.
    let action = Action::Withdraw {
        user: u.id,
        asset: BTC,
        address_id: a,
        destination: a_address.clone(),
        amount: Amount(10_000_000),
        client_id: None,
    };
    let r = s
        .gateway
        .submit(Command::RequestWithdrawal {
            user: u.id,
            address: AddressId(a),
            amount: Amount(20_000_000),
            client_id: None,
            via: u.via_session(),
            proof: u.proof(&action, &s.origin),
        })
        .await
        .unwrap();
    assert_eq!(r.reply, Err(Reject::StepUpActionMismatch));

    // Nothing moved; the request it was made for still goes through with a proof of its own.
    assert_eq!(btc(&s, 0).await, ("10.00000000".into(), "0.00000000".into()));
    let (st, w) = s
        .with_step_up(0, Method::POST, "/api/v1/withdrawals", withdrawal(a, "0.1"))
        .await;
    assert_eq!(st, 200, "{w}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_an_expired_proof_is_refused() {
    let s = TestServer::start(1).await;
    let u = &s.users[0];
    let (address, a) = address_of(&s, 0).await;
    // A challenge issued six minutes ago (the default freshness is five), correctly bound and
    // signed.
    let action = Action::Withdraw {
        user: u.id,
        asset: BTC,
        address_id: a,
        destination: address,
        amount: Amount(10_000_000),
        client_id: None,
    };
    let issued = kinko_api::auth::now_ns() - 6 * 60 * NS;
    let old = challenge_bytes(issued, &[7; 16], &action.digest());
    let mut body = withdrawal(a, "0.1");
    body["step_up"] = u.step_up_passkey(&URL_SAFE_NO_PAD.encode(old), &s.origin);
    let r = s.post(0, "/api/v1/withdrawals", body).await;
    assert_refused("a six-minute-old challenge", &r, 403, "STEP_UP_EXPIRED");

    // A short freshness window (the identity policy), outwaited.
    s.set_policy(Policy {
        proof_fresh_ns: NS,
        ..Policy::default()
    })
    .await;
    let challenge = s
        .challenge(
            &u.token,
            Method::POST,
            "/api/v1/withdrawals",
            withdrawal(a, "0.1"),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let mut body = withdrawal(a, "0.1");
    body["step_up"] = u.step_up_passkey(&challenge, &s.origin);
    let r = s.post(0, "/api/v1/withdrawals", body).await;
    assert_refused("a proof older than the policy allows", &r, 403, "STEP_UP_EXPIRED");
    assert!(s.auth_failures_of(u.id, "expired step-up proof") >= 2);

    // The engine applies the same window to a proof submitted directly.
    let mut proof = u.proof(&action, &s.origin);
    proof.issued_ns -= 2 * NS;
    let r = s
        .gateway
        .submit(Command::RequestWithdrawal {
            user: u.id,
            address: AddressId(a),
            amount: Amount(10_000_000),
            client_id: None,
            via: u.via_session(),
            proof,
        })
        .await
        .unwrap();
    assert_eq!(r.reply, Err(Reject::StepUpExpired));
    assert_eq!(btc(&s, 0).await, ("10.00000000".into(), "0.00000000".into()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_a_webauthn_assertion_for_another_challenge_or_origin_is_refused() {
    let s = TestServer::start(1).await;
    let u = &s.users[0];
    let (_, a) = address_of(&s, 0).await;
    let body = withdrawal(a, "0.1");
    let c1 = s
        .challenge(&u.token, Method::POST, "/api/v1/withdrawals", body.clone())
        .await;
    let c2 = s
        .challenge(&u.token, Method::POST, "/api/v1/withdrawals", body.clone())
        .await;
    assert_ne!(c1, c2, "every challenge is fresh");

    // Signed over another challenge (of the same action).
    let mut b = body.clone();
    b["step_up"] = json!({"challenge": c1, "webauthn": u.passkey.assert_with(&unb64(&c2), &s.origin)});
    let r = s.post(0, "/api/v1/withdrawals", b).await;
    assert_refused("an assertion over another challenge", &r, 403, "STEP_UP_INVALID");
    assert!(
        r.1["message"]
            .as_str()
            .unwrap()
            .contains("WEBAUTHN_CHALLENGE_MISMATCH"),
        "{}",
        r.1
    );

    // Signed at another origin (a phishing page relaying the challenge).
    let mut b = body.clone();
    b["step_up"] =
        json!({"challenge": c1, "webauthn": u.passkey.assert_with(&unb64(&c1), "http://kinko.evil.example")});
    let r = s.post(0, "/api/v1/withdrawals", b).await;
    assert_refused("an assertion from another origin", &r, 403, "STEP_UP_INVALID");
    assert!(
        r.1["message"]
            .as_str()
            .unwrap()
            .contains("WEBAUTHN_ORIGIN_MISMATCH"),
        "{}",
        r.1
    );

    // By a passkey that is not the user's.
    let mut b = body.clone();
    b["step_up"] =
        json!({"challenge": c1, "webauthn": Authenticator::new().assert_with(&unb64(&c1), &s.origin)});
    let r = s.post(0, "/api/v1/withdrawals", b).await;
    assert_refused("another passkey", &r, 404, "FACTOR_NOT_ENROLLED");

    let failures = s.auth_failures_of(u.id, "passkey refused: WEBAUTHN_");
    assert!(failures >= 2, "{:?}", s.auth_failures());
    assert!(s.auth_failures_of(u.id, "WEBAUTHN_CHALLENGE_MISMATCH") >= 1);
    assert!(s.auth_failures_of(u.id, "WEBAUTHN_ORIGIN_MISMATCH") >= 1);

    // The right assertion passes, once: sent again it is a replay (the signature counter), and
    // a new signature over the same challenge is too (the challenge is used up).
    let mut good = body.clone();
    good["step_up"] = u.step_up_passkey(&c1, &s.origin);
    let (st, w) = s.post(0, "/api/v1/withdrawals", good.clone()).await;
    assert_eq!(st, 200, "{w}");
    let r = s.post(0, "/api/v1/withdrawals", good).await;
    assert_refused("the same assertion again", &r, 403, "STEP_UP_REPLAYED");
    let mut again = body.clone();
    again["step_up"] = u.step_up_passkey(&c1, &s.origin);
    let r = s.post(0, "/api/v1/withdrawals", again).await;
    assert_refused(
        "a new assertion over a used challenge",
        &r,
        403,
        "STEP_UP_REPLAYED",
    );
    let (_, list) = s.get(Some(0), "/api/v1/withdrawals").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_brute_force_against_totp_locks_the_second_factor() {
    let mut config = ApiConfig::default();
    config.identity.failures_max = 3;
    let s = TestServer::start_with(2, config).await;
    let u = &s.users[0];
    let (_, a) = address_of(&s, 0).await;
    let attempt = |step_up: Value| {
        let mut body = withdrawal(a, "0.1");
        body["step_up"] = step_up;
        s.post(0, "/api/v1/withdrawals", body)
    };
    for i in 0..3 {
        let r = attempt(json!({"totp": wrong_code(u)})).await;
        assert_refused(&format!("wrong code {i}"), &r, 403, "STEP_UP_INVALID");
    }
    // The limit is reached: even the right code, even a passkey, is refused for a while.
    let (_, code) = u.totp().await;
    let r = attempt(json!({"totp": code})).await;
    assert_refused("the right code after the limit", &r, 429, "TOO_MANY_FAILURES");
    let challenge = s
        .challenge(
            &u.token,
            Method::POST,
            "/api/v1/withdrawals",
            withdrawal(a, "0.1"),
        )
        .await;
    let r = attempt(u.step_up_passkey(&challenge, &s.origin)).await;
    assert_refused("a passkey after the limit", &r, 429, "TOO_MANY_FAILURES");
    // Audit: each failure up to the limit, the last one saying so.
    assert_eq!(
        s.auth_failures_of(u.id, "TOTP refused: TOTP_INVALID"),
        3,
        "{:?}",
        s.auth_failures()
    );
    assert_eq!(
        s.auth_failures_of(u.id, "limit reached"),
        1,
        "{:?}",
        s.auth_failures()
    );
    assert_eq!(btc(&s, 0).await, ("10.00000000".into(), "0.00000000".into()));
    // Another user is not affected.
    let (_, b) = address_of(&s, 1).await;
    let (st, w) = s
        .with_step_up(1, Method::POST, "/api/v1/withdrawals", withdrawal(b, "0.1"))
        .await;
    assert_eq!(st, 200, "{w}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_a_password_reset_does_not_skip_the_second_factor() {
    let s = TestServer::start(1).await;
    let outbox = s.use_outbox();
    let u = &s.users[0];
    let (_, a) = address_of(&s, 0).await;
    let r = s
        .request(
            Method::POST,
            "/api/v1/auth/password-reset",
            None,
            Some(json!({"email": u.email})),
        )
        .await;
    assert_eq!(r.0, 202, "{}", r.1);
    // An unknown address gets the same answer (and no message).
    let r = s
        .request(
            Method::POST,
            "/api/v1/auth/password-reset",
            None,
            Some(json!({"email": "nobody@kinko.test"})),
        )
        .await;
    assert_eq!(r.0, 202, "{}", r.1);
    let m = wait_for_mail(&outbox, |m| m.kind == "password_reset").await;
    assert_eq!(m.to, u.email);
    assert!(m.body.contains("/freeze?t="), "{}", m.body);
    let token = format!("kpr_{}", token_after(&m.body, "#reset=kpr_"));

    let r = s
        .request(
            Method::POST,
            "/api/v1/auth/password-reset/confirm",
            None,
            Some(json!({"token": token, "new_password": "a brand new password"})),
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);
    // Every session ended; the token works once.
    assert_refused(
        "a session after the reset",
        &me(&s, &u.session).await,
        401,
        "SESSION_INVALID",
    );
    let r = s
        .request(
            Method::POST,
            "/api/v1/auth/password-reset/confirm",
            None,
            Some(json!({"token": token, "new_password": "yet another password"})),
        )
        .await;
    assert_refused("the reset token again", &r, 400, "TOKEN_INVALID");
    assert!(s
        .auth_failures()
        .iter()
        .any(|(who, _, why)| who.is_none() && why.contains("password-reset token")));

    // The old password is gone; the new one still needs the second factor, which was kept.
    let r = login(&s, &u.email, &u.password, "x").await;
    assert_refused("the old password", &r, 401, "CREDENTIALS_INVALID");
    let (st, r) = login(&s, &u.email, "a brand new password", "x").await;
    assert_eq!((st, &r["level"]), (200, &json!("password")), "{r}");
    let token = r["token"].as_str().unwrap().to_owned();
    let r2 = s
        .request(Method::GET, "/api/v1/balances", Some(&token), None)
        .await;
    assert_refused("the reset password alone", &r2, 403, "SECOND_FACTOR_REQUIRED");
    let (st, r) = second_factor(
        &s,
        &token,
        u.step_up_passkey(r["second_factor"]["challenge"].as_str().unwrap(), &s.origin),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    let full = r["token"].as_str().unwrap().to_owned();
    let (_, m) = me(&s, &full).await;
    assert_eq!(
        (&m["totp"], m["passkeys"].as_array().unwrap().len()),
        (&json!(true), 1),
        "{m}"
    );
    let until = m["withdrawals_locked_until"]
        .as_str()
        .expect("locked after a reset");
    let until_s = kinko_api::wire::parse_time_s("until", until).unwrap();
    let now_s = kinko_api::auth::now_ns() / NS;
    assert!(
        (now_s + 23 * 3600..=now_s + 24 * 3600).contains(&until_s),
        "{until}"
    );

    // And withdrawals wait out the lock, through the session and through the API key.
    let r = s
        .with_step_up_as(
            u,
            &full,
            Factor::Passkey,
            Method::POST,
            "/api/v1/withdrawals",
            withdrawal(a, "0.1"),
        )
        .await;
    assert_refused("a withdrawal after a reset (session)", &r, 403, "SECURITY_LOCKED");
    // The API key made before the reset ended with it; a new one waits out the lock too.
    let r = s
        .with_step_up(0, Method::POST, "/api/v1/withdrawals", withdrawal(a, "0.1"))
        .await;
    assert_refused("the API key made before the reset", &r, 401, "UNAUTHORIZED");
    let (st, key) = s
        .with_step_up_as(
            u,
            &full,
            Factor::Passkey,
            Method::POST,
            "/api/v1/me/api-keys",
            json!({"scopes": {"view": true, "withdraw": true}, "ip_allowlist": ["127.0.0.1"]}),
        )
        .await;
    assert_eq!(st, 201, "{key}");
    let r = s
        .with_step_up_as(
            u,
            key["token"].as_str().unwrap(),
            Factor::Passkey,
            Method::POST,
            "/api/v1/withdrawals",
            withdrawal(a, "0.1"),
        )
        .await;
    assert_refused("a withdrawal after a reset (API key)", &r, 403, "SECURITY_LOCKED");
    let (st, b) = s
        .request(Method::GET, "/api/v1/balances", key["token"].as_str(), None)
        .await;
    assert_eq!(st, 200, "{b}");
    let btc_now = b
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["asset"] == "BTC")
        .unwrap()
        .clone();
    assert_eq!(
        (&btc_now["available"], &btc_now["hold"]),
        (&json!("10.00000000"), &json!("0.00000000"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_api_keys_that_may_withdraw_are_bound_to_addresses_and_expire() {
    let s = TestServer::start(1).await;
    let u = &s.users[0];
    let (_, a) = address_of(&s, 0).await;
    let create = |body: Value| {
        s.with_step_up_as(
            u,
            &u.session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/me/api-keys",
            body,
        )
    };
    // The withdraw scope without an allowlist: refused (and the engine refuses it too).
    let r = create(json!({"label": "bot", "scopes": {"view": true, "withdraw": true}})).await;
    assert_refused(
        "withdraw scope without allowlist",
        &r,
        400,
        "API_KEY_IP_ALLOWLIST_REQUIRED",
    );
    let mut k = kinko_api::vault::new_native_key(u.id, "bot", Permissions::ALL);
    let action = Action::CreateWithdrawKey {
        user: u.id,
        label: "bot".into(),
        ip_allowlist: Vec::new(),
    };
    let proof = Some(u.proof(&action, &s.origin));
    let r = s
        .gateway
        .submit(Command::CreateApiKey {
            key: k.record.clone(),
            proof,
        })
        .await
        .unwrap();
    assert_eq!(r.reply, Err(Reject::ApiKeyIpAllowlistRequired));
    // Without a second factor: a challenge.
    let r = s
        .request(
            Method::POST,
            "/api/v1/me/api-keys",
            Some(&u.session),
            Some(json!({"label": "bot", "scopes": {"withdraw": true}, "ip_allowlist": ["10.0.0.1"]})),
        )
        .await;
    assert_refused(
        "withdraw scope without a second factor",
        &r,
        403,
        "STEP_UP_REQUIRED",
    );

    // Allowed from 10.0.0.1 only: useless from here, for reading and for withdrawing.
    let (st, key) = create(
        json!({"label": "bot", "scopes": {"view": true, "withdraw": true}, "ip_allowlist": ["10.0.0.1"]}),
    )
    .await;
    assert_eq!(st, 201, "{key}");
    assert_eq!(key["ip_allowlist"], json!(["10.0.0.1"]));
    let token = key["token"].as_str().unwrap().to_owned();
    let r = s
        .request(Method::GET, "/api/v1/balances", Some(&token), None)
        .await;
    assert_refused(
        "a key from an address not allowed",
        &r,
        403,
        "API_KEY_IP_NOT_ALLOWED",
    );
    let r = s
        .with_step_up_as(
            u,
            &token,
            Factor::Passkey,
            Method::POST,
            "/api/v1/withdrawals",
            withdrawal(a, "0.1"),
        )
        .await;
    assert_refused(
        "a withdrawal from an address not allowed",
        &r,
        403,
        "API_KEY_IP_NOT_ALLOWED",
    );

    // Revoked: gone.
    let (st, keys) = s
        .request(Method::GET, "/api/v1/me/api-keys", Some(&u.session), None)
        .await;
    assert_eq!(st, 200, "{keys}");
    assert!(
        keys.as_array().unwrap().iter().all(|k| k.get("token").is_none()),
        "secrets are shown once"
    );
    let native_id = u.token.split_once('.').unwrap().0;
    let r = s
        .with_step_up_as(
            u,
            &u.session,
            Factor::Passkey,
            Method::DELETE,
            &format!("/api/v1/me/api-keys/{native_id}"),
            json!({}),
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);
    let r = s.get(Some(0), "/api/v1/balances").await;
    assert_refused("a revoked key", &r, 401, "UNAUTHORIZED");

    // Expired: a key that lives for half a second.
    k.record.permissions = Permissions {
        view: true,
        trade: false,
        withdraw: false,
    };
    k.record.expires_ns = Some(kinko_api::auth::now_ns() + NS / 2);
    s.gateway
        .submit(Command::CreateApiKey {
            key: k.record,
            proof: None,
        })
        .await
        .unwrap()
        .reply
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let expired = loop {
        let r = s
            .request(Method::GET, "/api/v1/balances", Some(&k.token), None)
            .await;
        if r.0 != 200 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_refused("an expired key", &expired, 403, "API_KEY_EXPIRED");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_a_withdrawal_through_an_api_key_to_a_cooling_address() {
    let s = TestServer::start(1).await;
    let address = kinko_sim::SimChain::new([9; 32], &["BTC"]).address("identity/BTC/new");
    // Whitelisted through the withdraw-scoped API key, with a second factor: it cools a day.
    let (st, wa) = s
        .with_step_up(
            0,
            Method::POST,
            "/api/v1/withdrawal-addresses",
            json!({"asset": "BTC", "address": address}),
        )
        .await;
    assert_eq!(st, 200, "{wa}");
    let id: u64 = wa["id"].as_str().unwrap().parse().unwrap();
    let r = s
        .with_step_up(0, Method::POST, "/api/v1/withdrawals", withdrawal(id, "0.1"))
        .await;
    assert_refused(
        "a withdrawal to a cooling address",
        &r,
        403,
        "WITHDRAWAL_ADDRESS_COOLING",
    );
    let r = s
        .with_step_up_as(
            &s.users[0],
            &s.users[0].session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/withdrawals",
            withdrawal(id, "0.1"),
        )
        .await;
    assert_refused(
        "the same through a session",
        &r,
        403,
        "WITHDRAWAL_ADDRESS_COOLING",
    );
    assert_eq!(btc(&s, 0).await, ("10.00000000".into(), "0.00000000".into()));
    let (_, list) = s.get(Some(0), "/api/v1/withdrawals").await;
    assert_eq!(list, json!([]));
    s.stop().await;
}

/// The gateway whitelists the chain's canonical form of an address, so two spellings of one
/// destination are one whitelisted address (and one destination for the fan-in rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_is_whitelisted_in_its_canonical_form() {
    let s = TestServer::start(1).await;
    let address = kinko_sim::SimChain::new([9; 32], &["BTC"]).address("identity/BTC/case");
    let mut ids = Vec::new();
    for given in [address.to_ascii_uppercase(), address.clone()] {
        let (st, wa) = s
            .with_step_up(
                0,
                Method::POST,
                "/api/v1/withdrawal-addresses",
                json!({"asset": "BTC", "address": given}),
            )
            .await;
        assert_eq!(st, 200, "{given}: {wa}");
        assert_eq!(wa["address"], json!(address), "{given}");
        ids.push(wa["id"].clone());
    }
    assert_eq!(ids[0], ids[1], "one destination, one whitelisted address");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The security-change lock.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_changes_lock_withdrawals_for_the_configured_time() {
    let s = TestServer::start(4).await;
    let lock_ns = 3 * NS;
    s.set_policy(Policy {
        security_lock_ns: lock_ns,
        ..Policy::default()
    })
    .await;
    let mut addresses = Vec::new();
    for i in 0..4 {
        addresses.push(address_of(&s, i).await.1);
    }
    let server = s;
    let s = &server;
    let locked_until = |i: usize| {
        let session = s.users[i].session.clone();
        async move {
            let (st, m) = me(s, &session).await;
            assert_eq!(st, 200, "{m}");
            m["withdrawals_locked_until"].as_str().map(str::to_owned)
        }
    };
    for i in 0..4 {
        assert_eq!(locked_until(i).await, None);
    }
    let step_up = |i: usize, path: &'static str, body: Value| {
        let u = &s.users[i];
        s.with_step_up_as(u, &u.session, Factor::Passkey, Method::POST, path, body)
    };
    let started_s = kinko_api::auth::now_ns() / NS;
    // 0: the password.
    let u0 = &s.users[0];
    let r = step_up(
        0,
        "/api/v1/me/password",
        json!({"current_password": u0.password, "new_password": "another long password"}),
    )
    .await;
    assert_eq!(r.0, 204, "{}", r.1);
    // 1: the email address.
    let r = step_up(1, "/api/v1/me/email", json!({"email": "renamed@kinko.test"})).await;
    assert_eq!(r.0, 204, "{}", r.1);
    // 2: a second passkey.
    let (st, opts) = s
        .request(
            Method::POST,
            "/api/v1/me/passkeys/options",
            Some(&s.users[2].session),
            None,
        )
        .await;
    assert_eq!(st, 200, "{opts}");
    let credential =
        Authenticator::new().register(opts["public_key"]["challenge"].as_str().unwrap(), &s.origin);
    let r = step_up(
        2,
        "/api/v1/me/passkeys",
        json!({"enrolment": opts["enrolment"], "credential": credential, "label": "spare"}),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    // 3: the anti-phishing code: setting the first one protects (no lock), changing it locks.
    let r = step_up(3, "/api/v1/me/anti-phishing", json!({"code": "first code"})).await;
    assert_eq!(r.0, 204, "{}", r.1);
    assert_eq!(
        locked_until(3).await,
        None,
        "a first anti-phishing code does not lock"
    );
    let r = step_up(3, "/api/v1/me/anti-phishing", json!({"code": "second code"})).await;
    assert_eq!(r.0, 204, "{}", r.1);

    for (i, change) in ["password", "email", "second factor", "anti-phishing"]
        .iter()
        .enumerate()
    {
        let until = locked_until(i)
            .await
            .unwrap_or_else(|| panic!("{change}: not locked"));
        let until_s = kinko_api::wire::parse_time_s("until", &until).unwrap();
        assert!(
            until_s >= started_s && until_s <= started_s + 5,
            "{change}: {until}"
        );
        // Through the session that made the change: a password change and a removed factor
        // end the user's API keys.
        let u = &s.users[i];
        let r = s
            .with_step_up_as(
                u,
                &u.session,
                Factor::Passkey,
                Method::POST,
                "/api/v1/withdrawals",
                withdrawal(addresses[i], "0.1"),
            )
            .await;
        assert_refused(
            &format!("a withdrawal after a {change} change"),
            &r,
            403,
            "SECURITY_LOCKED",
        );
    }
    // The lock ends by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    for (i, address) in addresses.iter().enumerate() {
        while locked_until(i).await.is_some() {
            assert!(Instant::now() < deadline, "the lock of user {i} did not end");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let u = &s.users[i];
        let (st, w) = s
            .with_step_up_as(
                u,
                &u.session,
                Factor::Passkey,
                Method::POST,
                "/api/v1/withdrawals",
                withdrawal(*address, "0.1"),
            )
            .await;
        assert_eq!(st, 200, "user {i} after the lock: {w}");
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Messages: the anti-phishing code and the freeze link.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_security_message_carries_the_anti_phishing_code_and_a_freeze_link() {
    let s = TestServer::start(1).await;
    // The treasury quorum that whitelists the address below, before its own messages could
    // reach the outbox.
    s.quorum().await;
    let outbox = s.use_outbox();
    let u = &s.users[0];
    let code = "blue fox 7";
    let r = s
        .with_step_up_as(
            u,
            &u.session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/me/anti-phishing",
            json!({"code": code}),
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);
    let (_, m) = me(&s, &u.session).await;
    assert_eq!(m["anti_phishing_code"], code);

    // A withdrawal address added, a withdrawal requested, an API key created, a login from a
    // new device, a password changed.
    let address = kinko_sim::SimChain::new([9; 32], &["BTC"]).address("identity/BTC/mail");
    let (st, r) = s
        .with_step_up(
            0,
            Method::POST,
            "/api/v1/withdrawal-addresses",
            json!({"asset": "BTC", "address": address}),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    let (_, a) = address_of(&s, 0).await;
    let (st, r) = s
        .with_step_up(0, Method::POST, "/api/v1/withdrawals", withdrawal(a, "0.1"))
        .await;
    assert_eq!(st, 200, "{r}");
    let (st, r) = s
        .with_step_up_as(
            u,
            &u.session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/me/api-keys",
            json!({"label": "reader", "scopes": {"view": true}}),
        )
        .await;
    assert_eq!(st, 201, "{r}");
    let (st, r) = login(&s, &u.email, &u.password, "a new laptop").await;
    assert_eq!(st, 200, "{r}");
    let r = s
        .with_step_up_as(
            u,
            &u.session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/me/password",
            json!({"current_password": u.password, "new_password": "another long password"}),
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);

    for kind in [
        "anti_phishing_changed",
        "withdrawal_address_added",
        "withdrawal_requested",
        "api_key_created",
        "new_device_login",
        "password_changed",
    ] {
        let m = wait_for_mail(&outbox, |m| m.kind == kind).await;
        assert_eq!(m.to, u.email, "{kind}");
        assert!(
            m.subject.starts_with(&format!("[{code}] ")),
            "{kind}: {}",
            m.subject
        );
        assert!(
            m.body.starts_with(&format!("Your anti-phishing code: {code}\n")),
            "{kind}: {}",
            m.body
        );
        let link = format!("{}/freeze?t=", s.origin);
        assert!(
            m.body.contains(&format!("Not you? Freeze your account: {link}")),
            "{kind}: {}",
            m.body
        );
    }
    let m = wait_for_mail(&outbox, |m| m.kind == "new_device_login").await;
    assert!(
        m.body.contains("a new laptop") && m.body.contains("127.0.0.1"),
        "{}",
        m.body
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_freeze_link_halts_the_account_until_an_operator_reviews_it() {
    let s = TestServer::start(4).await;
    let outbox = s.use_outbox();
    let u = &s.users[0];
    let (_, a) = address_of(&s, 0).await;
    // A message (a new API key), and the link in it.
    let (st, r) = s
        .with_step_up_as(
            u,
            &u.session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/me/api-keys",
            json!({"label": "reader", "scopes": {"view": true}}),
        )
        .await;
    assert_eq!(st, 201, "{r}");
    let m = wait_for_mail(&outbox, |m| m.kind == "api_key_created").await;
    let token = token_after(&m.body, "/freeze?t=");
    let r = s
        .request(
            Method::POST,
            "/api/v1/auth/freeze",
            None,
            Some(json!({"token": "forged"})),
        )
        .await;
    assert_refused("a forged freeze token", &r, 400, "TOKEN_INVALID");
    let other = full_session(&s, u).await;
    let r = s
        .request(
            Method::POST,
            "/api/v1/auth/freeze",
            None,
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);

    // Sessions end, keys stop, withdrawals are refused, a message says so.
    assert_refused(
        "a session after the freeze",
        &me(&s, &u.session).await,
        401,
        "SESSION_INVALID",
    );
    assert_refused("another session", &me(&s, &other).await, 401, "SESSION_INVALID");
    // The freeze ended the user's API keys too.
    let r = s.get(Some(0), "/api/v1/balances").await;
    assert_refused("the API key of a frozen user", &r, 401, "UNAUTHORIZED");
    let r = s
        .with_step_up(0, Method::POST, "/api/v1/withdrawals", withdrawal(a, "0.1"))
        .await;
    assert_refused("a withdrawal through the key", &r, 401, "UNAUTHORIZED");
    let session = full_session(&s, u).await;
    let (_, m) = me(&s, &session).await;
    assert_eq!(m["status"], "frozen");
    let r = s
        .with_step_up_as(
            u,
            &session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/withdrawals",
            withdrawal(a, "0.1"),
        )
        .await;
    assert_refused("a withdrawal through a new session", &r, 403, "ACCOUNT_FROZEN");
    let m = wait_for_mail(&outbox, |m| m.kind == "account_frozen").await;
    assert!(!m.body.contains("/freeze?t="), "{}", m.body);
    assert_eq!(btc(&s, 1).await.0, "10.00000000", "another user is untouched");

    // Reviewed, it is set active again: not by the operator's token alone, by two admins.
    let r = s
        .request(
            Method::POST,
            &format!("/api/v1/admin/users/{}/status", u.id.0),
            Some(OPERATOR_TOKEN),
            Some(json!({"status": "active", "requested_by": "ops", "reason": "the user confirmed"})),
        )
        .await;
    assert_refused(
        "an unfreeze by the operator alone",
        &r,
        403,
        "TWO_ADMINS_REQUIRED",
    );
    unfreeze_by_two_admins(&s, u.id, [2, 3]).await;
    // Active again: the session withdraws; the ended key stays ended.
    let r = s.get(Some(0), "/api/v1/balances").await;
    assert_refused("a key ended by the freeze", &r, 401, "UNAUTHORIZED");
    let (st, w) = s
        .with_step_up_as(
            u,
            &session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/withdrawals",
            withdrawal(a, "0.1"),
        )
        .await;
    assert_eq!(st, 200, "{w}");
    s.stop().await;
}

/// A minimal SMTP server on 127.0.0.1: takes sessions one after the other for at most a
/// minute, keeps the DATA of each message.
struct SmtpSink {
    port: u16,
    messages: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn smtp_session(stream: std::net::TcpStream, messages: &Mutex<Vec<String>>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    out.write_all(b"220 sink.test ESMTP ready\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line
            .split([' ', '\r', '\n'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => out.write_all(b"250 sink.test\r\n")?,
            "DATA" => {
                out.write_all(b"354 end with <CRLF>.<CRLF>\r\n")?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    data.push_str(&line);
                }
                messages.lock().unwrap().push(data);
                out.write_all(b"250 queued\r\n")?;
            }
            "QUIT" => {
                out.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => out.write_all(b"250 ok\r\n")?,
        }
    }
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, st) = (messages.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !st.load(Ordering::Acquire) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = smtp_session(stream, &m);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        SmtpSink {
            port,
            messages,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits (at most 10 s) for a message containing `part`.
    async fn wait_for(&self, part: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(m) = self.messages.lock().unwrap().iter().find(|m| m.contains(part)) {
                return m.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no message with {part:?}; received {:#?}",
                self.messages.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The body of a message as received: quoted-printable (which the SMTP mailer uses for long
/// lines) decoded.
fn body_of(data: &str) -> String {
    let (head, body) = data.split_once("\r\n\r\n").unwrap();
    if !head.contains("Content-Transfer-Encoding: quoted-printable") {
        return body.to_owned();
    }
    let joined = body.replace("=\r\n", "");
    let b = joined.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (b[i], hex) {
            (b'=', Some(x)) => {
                out.push(x);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_messages_reach_a_real_smtp_server() {
    let s = TestServer::start(1).await;
    let sink = SmtpSink::start();
    s.gateway.set_mailer(Arc::new(Smtp {
        host: "127.0.0.1".into(),
        port: sink.port,
        from: "kinko <security@kinko.test>".into(),
        timeout: Duration::from_secs(5),
    }));
    let u = &s.users[0];
    let code = "SMTP-CODE-1";
    let r = s
        .with_step_up_as(
            u,
            &u.session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/me/anti-phishing",
            json!({"code": code}),
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);
    let (st, r) = s
        .with_step_up_as(
            u,
            &u.session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/me/api-keys",
            json!({"label": "smtp", "scopes": {"view": true}}),
        )
        .await;
    assert_eq!(st, 201, "{r}");
    for subject in ["anti-phishing code was set", "An API key was created"] {
        let data = sink.wait_for(subject).await;
        assert!(data.contains(&format!("To: {}\r\n", u.email)), "{data}");
        assert!(data.contains(&format!("Subject: [{code}] ")), "{data}");
        assert!(
            data.contains(&format!("Your anti-phishing code: {code}\r\n")),
            "{data}"
        );
        let body = body_of(&data);
        assert!(
            body.starts_with(&format!("Your anti-phishing code: {code}\r\n")),
            "{body}"
        );
        let link = format!("Not you? Freeze your account: {}/freeze?t=", s.origin);
        assert!(body.contains(&link), "{body}");
    }
    // The link in the delivered message works.
    let data = sink.wait_for("An API key was created").await;
    let token = token_after(&body_of(&data), "/freeze?t=");
    let r = s
        .request(
            Method::POST,
            "/api/v1/auth/freeze",
            None,
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);
    assert_refused("frozen", &me(&s, &u.session).await, 401, "SESSION_INVALID");
    sink.wait_for("Your kinko account is frozen").await;
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Platform-wide revocation.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_wide_revocation_then_reenrolment_with_a_recovery_code() {
    let s = TestServer::start(1).await;
    let mut u = s.new_user("victim@kinko.test").await;
    let address_u = usable_address(
        &s,
        u.id,
        &kinko_sim::SimChain::new([9; 32], &["BTC"]).address("identity/BTC/victim"),
    )
    .await;
    let r = s
        .request(
            Method::POST,
            "/api/v1/admin/revoke-everything",
            Some(&u.session),
            Some(json!({"requested_by": "ops", "reason": "breach"})),
        )
        .await;
    assert_refused("a user cannot revoke everything", &r, 401, "UNAUTHORIZED");
    let (st, r) = s
        .request(
            Method::POST,
            "/api/v1/admin/revoke-everything",
            Some(OPERATOR_TOKEN),
            Some(json!({"requested_by": "ops", "reason": "breach"})),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    // The two users, and the harness's two treasury admins (which keep their passkeys).
    assert_eq!(r["users"], 4, "{r}");
    assert!(r["sessions"].as_u64().unwrap() >= 2, "{r}");

    // Every session is gone; so are the keys that could withdraw.
    for session in [&s.users[0].session, &u.session] {
        assert_refused(
            "a session after revocation",
            &me(&s, session).await,
            401,
            "SESSION_INVALID",
        );
    }
    let r = s.get(Some(0), "/api/v1/balances").await;
    assert_refused("a withdraw-scoped key after revocation", &r, 401, "UNAUTHORIZED");

    // Login works, but only to re-enrol, with a recovery code.
    let (st, r) = login(&s, &u.email, &u.password, "x").await;
    assert_eq!((st, &r["level"]), (200, &json!("password")), "{r}");
    assert_eq!(
        r["second_factor"],
        json!({"reenrol_required": true, "methods": ["recovery_code"]})
    );
    let token = r["token"].as_str().unwrap().to_owned();
    let r2 = s
        .request(Method::GET, "/api/v1/balances", Some(&token), None)
        .await;
    assert_refused("balances before re-enrolment", &r2, 403, "SECOND_FACTOR_REQUIRED");
    let (_, m) = me(&s, &token).await;
    assert_eq!(
        (&m["reenrol_required"], &m["totp"], &m["passkeys"]),
        (&json!(true), &json!(false), &json!([])),
        "{m}"
    );
    // The revoked passkey no longer finishes a login.
    let action = Action::Login {
        user: u.id,
        session: kinko_api::auth::session_hash(&token),
    };
    let c = challenge_bytes(kinko_api::auth::now_ns(), &[1; 16], &action.digest());
    let r = second_factor(
        &s,
        &token,
        u.step_up_passkey(&URL_SAFE_NO_PAD.encode(c), &s.origin),
    )
    .await;
    assert_refused("a revoked passkey", &r, 404, "FACTOR_NOT_ENROLLED");

    // Re-enrol TOTP: the new secret confirmed with a code, authorised by a recovery code.
    let (st, begin) = s
        .request(Method::POST, "/api/v1/me/totp", Some(&token), None)
        .await;
    assert_eq!(st, 200, "{begin}");
    u.totp_secret = kinko_api::totp::base32_decode(begin["secret"].as_str().unwrap()).unwrap();
    let (_, code) = u.totp().await;
    let confirm = json!({"enrolment": begin["enrolment"], "code": code});
    let r = s
        .request(
            Method::POST,
            "/api/v1/me/totp/confirm",
            Some(&token),
            Some(confirm.clone()),
        )
        .await;
    assert_refused("re-enrolment without a proof", &r, 403, "STEP_UP_REQUIRED");
    assert_eq!(r.1["step_up"]["methods"], json!(["recovery_code"]));
    let mut body = confirm.clone();
    body["step_up"] = json!({"recovery_code": u.recovery_codes[0]});
    let (st, r) = s
        .request(Method::POST, "/api/v1/me/totp/confirm", Some(&token), Some(body))
        .await;
    assert_eq!(st, 200, "{r}");

    // A full login with the new TOTP.
    let (token, sf) = password_login(&s, &u).await;
    assert_eq!(sf["methods"], json!(["totp"]));
    let (st, r) = second_factor(&s, &token, u.step_up_totp(sf["challenge"].as_str()).await).await;
    assert_eq!(st, 200, "{r}");
    let full = r["token"].as_str().unwrap().to_owned();

    // The recovery code cannot be used twice; another one can re-enrol a passkey.
    let (st, opts) = s
        .request(Method::POST, "/api/v1/me/passkeys/options", Some(&full), None)
        .await;
    assert_eq!(st, 200, "{opts}");
    let passkey = Authenticator::new();
    let credential = passkey.register(opts["public_key"]["challenge"].as_str().unwrap(), &s.origin);
    let body = |code: &str| json!({"enrolment": opts["enrolment"], "credential": credential, "step_up": {"recovery_code": code}});
    let r = s
        .request(
            Method::POST,
            "/api/v1/me/passkeys",
            Some(&full),
            Some(body(&u.recovery_codes[0])),
        )
        .await;
    assert_refused("a used recovery code", &r, 403, "RECOVERY_CODE_INVALID");
    assert!(
        s.auth_failures_of(u.id, "wrong or used recovery code") >= 1,
        "{:?}",
        s.auth_failures()
    );
    let (st, r) = s
        .request(
            Method::POST,
            "/api/v1/me/passkeys",
            Some(&full),
            Some(body(&u.recovery_codes[1])),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    u.passkey = passkey;
    let (_, m) = me(&s, &full).await;
    assert_eq!(
        (
            &m["reenrol_required"],
            &m["totp"],
            m["recovery_codes_left"].as_u64()
        ),
        (&json!(false), &json!(true), Some(8)),
        "{m}"
    );
    assert!(m["withdrawals_locked_until"].is_string(), "{m}");

    // Withdrawals stay locked after the revocation, however good the proof.
    let r = s
        .with_step_up_as(
            &u,
            &full,
            Factor::Passkey,
            Method::POST,
            "/api/v1/withdrawals",
            withdrawal(address_u, "0.1"),
        )
        .await;
    assert_refused("a withdrawal after revocation", &r, 403, "SECURITY_LOCKED");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_state_survives_a_restart() {
    let s = TestServer::start(1).await;
    let u_session = s.users[0].session.clone();
    let (s, stopped, recovered) = s.restart().await;
    assert_eq!(stopped, recovered, "replay reproduces the state");
    // The session, the factors and the used TOTP step are all journaled.
    let (st, m) = me(&s, &u_session).await;
    assert_eq!(
        (st, &m["totp"], m["passkeys"].as_array().map(Vec::len)),
        (200, &json!(true), Some(1)),
        "{m}"
    );
    let (_, a) = address_of(&s, 0).await;
    let (st, w) = s
        .with_step_up(0, Method::POST, "/api/v1/withdrawals", withdrawal(a, "0.1"))
        .await;
    assert_eq!(st, 200, "{w}");
    let r = s
        .gateway
        .submit(Command::Identity(IdentityCommand::RevokeSessions {
            user: s.users[0].id,
            keep: None,
        }))
        .await
        .unwrap();
    assert!(matches!(r.reply, Ok(Reply::Identity(_))), "{r:?}");
    assert_refused("revoked", &me(&s, &u_session).await, 401, "SESSION_INVALID");
    s.stop().await;
}

/// Whether the key of `token` (`<id>.<secret>`) is still live in the engine, once the read
/// side has every acknowledged command.
fn key_live(s: &TestServer, token: &str) -> bool {
    let id = token.split_once('.').unwrap().0;
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current()
            .block_on(s.gateway.caught_up())
            .unwrap();
    });
    s.gateway.read.model().engine.keys().get(id).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_a_stolen_session_mints_no_key_and_revokes_nothing_without_the_second_factor() {
    let s = TestServer::start(1).await;
    let u = &s.users[0];
    let keys = |s: &TestServer| {
        let id = u.id;
        s.gateway.read.model().engine.keys().of_user(id).len()
    };
    let before = keys(&s);
    // A session alone: a challenge, no key.
    let body = json!({"label": "thief", "scopes": {"view": true, "trade": true}});
    let r = s
        .request(
            Method::POST,
            "/api/v1/me/api-keys",
            Some(&u.session),
            Some(body.clone()),
        )
        .await;
    assert_refused(
        "a view+trade key from a session alone",
        &r,
        403,
        "STEP_UP_REQUIRED",
    );
    assert_eq!(keys(&s), before, "no key was made");
    // A proof for another key does not make this one.
    let challenge = s
        .challenge(
            &u.session,
            Method::POST,
            "/api/v1/me/api-keys",
            json!({"label": "other", "scopes": {"view": true}}),
        )
        .await;
    let mut forged = body.clone();
    forged["step_up"] = u.step_up_passkey(&challenge, &s.origin);
    let r = s
        .request(
            Method::POST,
            "/api/v1/me/api-keys",
            Some(&u.session),
            Some(forged),
        )
        .await;
    assert_refused("a proof for another key", &r, 403, "STEP_UP_ACTION_MISMATCH");
    assert_eq!(keys(&s), before, "no key was made");

    // A year is no longer on offer; the default is 90 days.
    let create = |body: Value| {
        s.with_step_up_as(
            u,
            &u.session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/me/api-keys",
            body,
        )
    };
    let r = create(json!({"scopes": {"view": true}, "expires_in_days": 365})).await;
    assert_refused("a key for a year", &r, 400, "INVALID_PARAMETER");
    let r = create(json!({"scopes": {"view": true}, "expires_in_days": 91})).await;
    assert_refused("a key for 91 days", &r, 400, "INVALID_PARAMETER");
    let (st, key) = create(body).await;
    assert_eq!(st, 201, "{key}");
    let token = key["token"].as_str().unwrap().to_owned();
    let rec = s
        .gateway
        .read
        .model()
        .engine
        .keys()
        .get(key["id"].as_str().unwrap())
        .cloned()
        .unwrap();
    let lifetime = rec.expires_ns.unwrap() - rec.created_ns;
    assert!(
        (90 * 86_400 * NS - 60 * NS..=90 * 86_400 * NS).contains(&lifetime),
        "expires in 90 days: {key}"
    );
    assert_eq!(
        s.request(Method::GET, "/api/v1/balances", Some(&token), None)
            .await
            .0,
        200
    );

    // Revoking it, or signing the owner's other sessions out: a challenge, nothing happens.
    let id = key["id"].as_str().unwrap();
    let r = s
        .request(
            Method::DELETE,
            &format!("/api/v1/me/api-keys/{id}"),
            Some(&u.session),
            None,
        )
        .await;
    assert_refused("revoking a key from a session alone", &r, 403, "STEP_UP_REQUIRED");
    assert!(key_live(&s, &token) && key_live(&s, &u.token));
    let other = full_session(&s, u).await;
    let r = s
        .request(
            Method::POST,
            "/api/v1/me/sessions/revoke-others",
            Some(&u.session),
            None,
        )
        .await;
    assert_refused("revoke-others from a session alone", &r, 403, "STEP_UP_REQUIRED");
    assert_eq!(me(&s, &other).await.0, 200);
    // With the factor: gone.
    let r = s
        .with_step_up_as(
            u,
            &u.session,
            Factor::Passkey,
            Method::DELETE,
            &format!("/api/v1/me/api-keys/{id}"),
            json!({}),
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);
    assert!(!key_live(&s, &token));
    let r = s
        .request(Method::GET, "/api/v1/balances", Some(&token), None)
        .await;
    assert_refused("a revoked key", &r, 401, "UNAUTHORIZED");
    s.stop().await;
}

/// A key minted from a stolen session must not outlive the owner taking the account back:
/// a password change or reset, a removed factor, a freeze, an operator's status change and a
/// platform-wide revocation each end the user's keys, in the engine, in the same command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_keys_end_with_the_password_factors_and_status_they_were_minted_under() {
    let s = TestServer::start(6).await;
    let outbox = s.use_outbox();
    let users = &s.users;
    let live = |i: usize| key_live(&s, &users[i].token);
    let key_works = |i: usize| {
        let s = &s;
        async move { s.get(Some(i), "/api/v1/balances").await.0 == 200 }
    };
    assert!((0..6).all(live));

    // 0: a password change, from a trusted session with the factor.
    let u = &users[0];
    let r = s
        .with_step_up_as(
            u,
            &u.session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/me/password",
            json!({"current_password": u.password, "new_password": "another long password"}),
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);
    assert!(!live(0), "password change");
    let r = s.get(Some(0), "/api/v1/balances").await;
    assert_refused("a key after the password changed", &r, 401, "UNAUTHORIZED");
    assert!(key_works(5).await, "other users' keys stay");

    // 1: a password reset by email.
    let r = s
        .request(
            Method::POST,
            "/api/v1/auth/password-reset",
            None,
            Some(json!({"email": users[1].email})),
        )
        .await;
    assert_eq!(r.0, 202, "{}", r.1);
    let m = wait_for_mail(&outbox, |m| m.kind == "password_reset" && m.to == users[1].email).await;
    let token = format!("kpr_{}", token_after(&m.body, "#reset=kpr_"));
    let r = s
        .request(
            Method::POST,
            "/api/v1/auth/password-reset/confirm",
            None,
            Some(json!({"token": token, "new_password": "a brand new password"})),
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);
    assert!(!live(1), "password reset");

    // 2: a second factor removed.
    let u = &users[2];
    let r = s
        .with_step_up_as(
            u,
            &u.session,
            Factor::Passkey,
            Method::DELETE,
            "/api/v1/me/totp",
            json!({}),
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);
    assert!(!live(2), "factor removed");

    // 3: the freeze link of a message.
    let r = s
        .request(
            Method::POST,
            "/api/v1/auth/password-reset",
            None,
            Some(json!({"email": users[3].email})),
        )
        .await;
    assert_eq!(r.0, 202, "{}", r.1);
    let m = wait_for_mail(&outbox, |m| m.kind == "password_reset" && m.to == users[3].email).await;
    let freeze = token_after(&m.body, "/freeze?t=");
    let r = s
        .request(
            Method::POST,
            "/api/v1/auth/freeze",
            None,
            Some(json!({"token": freeze})),
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);
    assert!(!live(3), "frozen");

    // 4: an operator disables the account.
    let r = s
        .request(
            Method::POST,
            &format!("/api/v1/admin/users/{}/status", users[4].id.0),
            Some(OPERATOR_TOKEN),
            Some(json!({"status": "disabled", "requested_by": "ops", "reason": "review"})),
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);
    assert!(!live(4), "disabled");
    assert!(live(5) && key_works(5).await, "untouched so far");

    // 5: platform-wide revocation ends every key, view and trade ones included.
    let r = s
        .request(
            Method::POST,
            "/api/v1/admin/revoke-everything",
            Some(OPERATOR_TOKEN),
            Some(json!({"requested_by": "ops", "reason": "breach"})),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert!(!live(5), "platform-wide revocation");
    let r = s.get(Some(5), "/api/v1/balances").await;
    assert_refused("a key after platform-wide revocation", &r, 401, "UNAUTHORIZED");
    // Replaying the journal ends the same keys (the ending is part of each command).
    let (s, before, after) = s.restart().await;
    assert_eq!(before, after, "replay rebuilds the same state");
    assert!((0..6).all(|i| !key_live(&s, &s.users[i].token)));
    s.stop().await;
}

/// A client whose connections come from `ip` (another loopback address): the server sees a
/// different client address, as it would for an attacker elsewhere.
struct From {
    client: reqwest::Client,
}

impl From {
    fn new(ip: &str) -> From {
        From {
            client: reqwest::Client::builder()
                .local_address(ip.parse::<std::net::IpAddr>().unwrap())
                .build()
                .unwrap(),
        }
    }

    async fn post(
        &self,
        s: &TestServer,
        path: &str,
        bearer: Option<&str>,
        body: Value,
    ) -> (u16, Value, Option<u64>) {
        let mut r = self.client.post(s.url(path)).json(&body);
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        let resp = r.send().await.unwrap();
        let st = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse().unwrap());
        (st, resp.json().await.unwrap_or(Value::Null), retry)
    }

    async fn login(&self, s: &TestServer, email: &str, password: &str) -> (u16, Value, Option<u64>) {
        self.post(
            s,
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .await
    }
}

fn throttled(what: &str, r: &(u16, Value, Option<u64>)) {
    assert_eq!(
        (r.0, &r.1["code"]),
        (429, &json!("TOO_MANY_FAILURES")),
        "{what}: {}",
        r.1
    );
    let wait = r.2.unwrap_or_else(|| panic!("{what}: no Retry-After"));
    assert!((1..=900).contains(&wait), "{what}: Retry-After {wait}");
}

/// Failed sign-ins hold back the address they come from, with growing waits, not the account:
/// the owner signs in from elsewhere with the right password and the second factor; an
/// address spraying many emails is stopped; unknown and known emails get the same answers;
/// and the counts survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_failed_sign_ins_throttle_the_attackers_address_not_the_owner() {
    let s = TestServer::start(2).await;
    let u = &s.users[0];
    // Five wrong passwords from the attacker's address, then waits, even for the right one.
    let attacker = From::new("127.0.0.2");
    for i in 0..5 {
        let r = attacker.login(&s, &u.email, "not the password").await;
        assert_eq!(
            (r.0, &r.1["code"]),
            (401, &json!("CREDENTIALS_INVALID")),
            "wrong password {i}: {}",
            r.1
        );
    }
    let r = attacker.login(&s, &u.email, "not the password").await;
    throttled("the sixth wrong password", &r);
    let first_wait = r.2.unwrap();
    let r = attacker.login(&s, &u.email, &u.password).await;
    throttled("the right password from the attacker's address", &r);
    // The owner, elsewhere, with the right password: signed in.
    let (token, sf) = password_login(&s, u).await;
    let r = second_factor(
        &s,
        &token,
        u.step_up_passkey(sf["challenge"].as_str().unwrap(), &s.origin),
    )
    .await;
    assert_eq!((r.0, &r.1["level"]), (200, &json!("full")), "{}", r.1);

    // Someone who has the password cannot lock the owner's second factor either.
    let thief = From::new("127.0.0.3");
    let (st, session, _) = thief.login(&s, &u.email, &u.password).await;
    assert_eq!(st, 200, "{session}");
    let stolen = session["token"].as_str().unwrap().to_owned();
    for i in 0..5 {
        let r = thief
            .post(
                &s,
                "/api/v1/auth/login/second-factor",
                Some(&stolen),
                json!({"step_up": {"totp": wrong_code(u)}}),
            )
            .await;
        assert_eq!(r.0, 403, "wrong code {i}: {}", r.1);
    }
    let r = thief
        .post(
            &s,
            "/api/v1/auth/login/second-factor",
            Some(&stolen),
            json!({"step_up": {"totp": wrong_code(u)}}),
        )
        .await;
    throttled("a sixth code from the thief's address", &r);
    let (token, sf) = password_login(&s, u).await;
    let r = second_factor(
        &s,
        &token,
        u.step_up_passkey(sf["challenge"].as_str().unwrap(), &s.origin),
    )
    .await;
    assert_eq!(
        (r.0, &r.1["level"]),
        (200, &json!("full")),
        "the owner's factor still works: {}",
        r.1
    );

    // Spraying: thirty emails (two of them real) from one address. The first answers do not
    // tell real from unknown; the address is stopped long before the thirtieth.
    let sprayer = From::new("127.0.0.4");
    let mut answers = Vec::new();
    for i in 0..30 {
        let email = match i {
            3 => s.users[1].email.clone(),
            7 => u.email.clone(),
            _ => format!("spray{i}@kinko.test"),
        };
        answers.push(sprayer.login(&s, &email, "Winter2026!").await);
    }
    let refused = answers
        .iter()
        .position(|r| r.0 == 429)
        .expect("the sprayer is stopped");
    assert!(refused <= 20, "the sprayer got {refused} answers");
    for r in &answers[..refused] {
        assert_eq!(
            (r.0, &r.1),
            (401, &answers[0].1),
            "the same answer for every email"
        );
    }
    for r in &answers[refused..] {
        throttled("spraying", r);
    }
    // Another address is not held back by the sprayer.
    let (st, r) = login(&s, &s.users[1].email, &s.users[1].password, "owner").await;
    assert_eq!(st, 200, "{r}");

    // A restart forgets nothing.
    let (s, _, _) = s.restart().await;
    let u = &s.users[0];
    let r = attacker.login(&s, &u.email, &u.password).await;
    throttled("the attacker's address after a restart", &r);
    assert!(r.2.unwrap() <= first_wait, "the wait runs on");
    let r = sprayer.login(&s, "spray99@kinko.test", "Winter2026!").await;
    throttled("the sprayer after a restart", &r);
    let (st, r) = login(&s, &u.email, &u.password, "owner").await;
    assert_eq!(st, 200, "the owner after a restart: {r}");
    s.stop().await;
}

/// A user without a second factor has nothing to prove: ending other sessions works without
/// one (changing the password, which ends them too, needs none either), and making an API key
/// asks for a factor first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_second_factor_sessions_end_freely_and_keys_need_a_factor_first() {
    let s = TestServer::start(0).await;
    let u = s.register("nofactor@kinko.test").await;
    let (st, other) = login(&s, &u.email, &u.password, "other").await;
    assert_eq!(st, 200, "{other}");
    let other = other["token"].as_str().unwrap().to_owned();
    let r = s
        .request(
            Method::POST,
            "/api/v1/me/sessions/revoke-others",
            Some(&u.session),
            None,
        )
        .await;
    assert_eq!(r.0, 204, "{}", r.1);
    assert_refused("the other session", &me(&s, &other).await, 401, "SESSION_INVALID");
    let r = s
        .request(
            Method::POST,
            "/api/v1/me/api-keys",
            Some(&u.session),
            Some(json!({"scopes": {"view": true}})),
        )
        .await;
    assert_refused("a key without a factor", &r, 403, "FACTOR_NOT_ENROLLED");
    s.stop().await;
}

/// A mailer that takes nothing until it is opened (a relay that is down), then records each
/// message it is given.
#[derive(Default)]
struct ClosedRelay {
    open: AtomicBool,
    sent: Mutex<Vec<kinko_api::mail::Message>>,
}

impl kinko_api::mail::Mailer for ClosedRelay {
    fn send(&self, m: &kinko_api::mail::Message, _: Option<&str>) -> Result<(), kinko_api::mail::MailError> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.open.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.sent.lock().unwrap().push(m.clone());
        Ok(())
    }
}

/// More committed batches than the mail queue holds pile up behind a relay that takes nothing:
/// the replica and the clients go on, and the notices of the batches that did not fit are
/// derived again from the journal, so each message is sent exactly once, in order, with the
/// Message-ID and Date of its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_messages_beyond_a_full_mail_queue_are_derived_from_the_journal() {
    let s = TestServer::start(3).await;
    let relay = Arc::new(ClosedRelay::default());
    s.gateway.set_mailer(relay.clone());
    let freeze = |i: usize| {
        Command::Identity(IdentityCommand::Freeze {
            user: s.users[i].id,
            reason: "not me".into(),
        })
    };
    let first = s.gateway.submit(freeze(0)).await.unwrap();
    // One batch each: more than the queue holds while the relay is down.
    let batches = kinko_api::notify::NOTICE_BATCHES_QUEUED_MAX + 50;
    for i in 0..batches {
        let c = Command::Identity(IdentityCommand::AuthFailed {
            user: None,
            ip: "127.0.0.1".into(),
            reason: format!("filler {i}"),
        });
        s.gateway.submit(c).await.unwrap();
    }
    // This one's notice did not fit in the queue.
    let last = s.gateway.submit(freeze(1)).await.unwrap();
    assert!(last.seq > first.seq + kinko_api::notify::NOTICE_BATCHES_QUEUED_MAX as u64);
    assert!(relay.sent.lock().unwrap().len() <= 1, "the relay is down");
    relay.open.store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(60);
    let sent = loop {
        let sent = relay.sent.lock().unwrap().clone();
        if sent.len() >= 2 || Instant::now() > deadline {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let to: Vec<&str> = sent.iter().map(|m| m.to.as_str()).collect();
    assert_eq!(
        to,
        [s.users[0].email.as_str(), s.users[1].email.as_str()],
        "{sent:#?}"
    );
    let vault = &s.gateway.vault;
    for (m, c) in sent.iter().zip([&first, &last]) {
        assert_eq!(m.kind, kinko_api::mail::MessageKind::AccountFrozen);
        assert_eq!(m.date_ns, Some(c.timestamp_ns));
        assert_eq!(
            m.message_id.as_deref(),
            Some(kinko_api::notify::message_id(vault, c.seq, 0, "localhost").as_str())
        );
    }
    // Nothing is sent twice (the queue's own copies of what was derived are passed over): the
    // next notice is the next message.
    s.gateway.submit(freeze(2)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let sent = loop {
        let sent = relay.sent.lock().unwrap().clone();
        if sent.len() >= 3 || Instant::now() > deadline {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let to: Vec<&str> = sent.iter().map(|m| m.to.as_str()).collect();
    assert_eq!(
        to,
        [
            s.users[0].email.as_str(),
            s.users[1].email.as_str(),
            s.users[2].email.as_str()
        ],
        "{sent:#?}"
    );
    s.stop().await;
}
