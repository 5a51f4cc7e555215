//! The operators' API on a real server: reviews in pairs (scenario d: the same admin twice, or
//! the requester, is refused), halts and the public status, and the audit trail that refuses an
//! action it cannot record.

use crate::harness::{Factor, TestServer, BTC};
use crate::native::usable_address;
use kinko_core::engine::Command;
use kinko_core::identity::{AdminRole, IdentityCommand};
use kinko_core::risk::{AssetRisk, Condition, Decision, RiskPolicy, RiskRule};
use reqwest::Method;
use serde_json::{json, Value};

async fn roles(s: &TestServer, i: usize, roles: Vec<AdminRole>) {
    s.gateway
        .submit(Command::Identity(IdentityCommand::SetRoles {
            user: s.users[i].id,
            roles,
            requested_by: "operator".into(),
            reason: "test".into(),
        }))
        .await
        .unwrap()
        .reply
        .unwrap();
}

/// As user `i`, through their session, answering the step-up with their passkey.
async fn as_admin(s: &TestServer, i: usize, method: Method, path: &str, body: Value) -> (u16, Value) {
    let u = &s.users[i];
    s.with_step_up_as(u, &u.session, Factor::Passkey, method, path, body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_is_never_approved_twice_by_one_admin_nor_by_its_requester() {
    let s = TestServer::start(3).await;
    // Users 0 and 1 review (risk, treasury); user 2 requests and is a risk admin too.
    roles(&s, 0, vec![AdminRole::Risk]).await;
    roles(&s, 1, vec![AdminRole::Treasury]).await;
    roles(&s, 2, vec![AdminRole::Risk]).await;
    s.gateway
        .submit(Command::SetRiskPolicy(RiskPolicy {
            rules: vec![RiskRule {
                name: "everything-reviewed".into(),
                asset: None,
                when: Condition::Always,
                then: Decision::Review,
            }],
            assets: vec![AssetRisk {
                asset: BTC,
                dual_approval_from: kinko_core::Amount(1),
                hot_outflow_per_hour: kinko_core::Amount(u128::MAX),
            }],
            ..RiskPolicy::default()
        }))
        .await
        .unwrap()
        .reply
        .unwrap();
    let to = usable_address(&s, s.users[2].id, &format!("sim1{}", "7c".repeat(20))).await;
    let (st, w) = s
        .with_step_up(
            2,
            Method::POST,
            "/api/v1/withdrawals",
            json!({"address_id": to.to_string(), "amount": "0.1"}),
        )
        .await;
    assert_eq!((st, w["status"].as_str()), (200, Some("review")), "{w}");
    let id = w["id"].as_str().unwrap().to_owned();
    // The queue shows the rule that fired.
    let (st, held) = s
        .request(
            Method::GET,
            "/api/v1/ops/withdrawals/held",
            Some(&s.users[0].session),
            None,
        )
        .await;
    assert_eq!(st, 200, "{held}");
    assert_eq!(held[0]["rule"], "everything-reviewed");
    assert_eq!(held[0]["approvals_needed"], 2);
    let path = format!("/api/v1/ops/withdrawals/{id}/review");
    let approve = json!({"approve": true, "reason": "looks fine"});
    // The requester cannot approve their own withdrawal.
    let (st, r) = as_admin(&s, 2, Method::POST, &path, approve.clone()).await;
    assert_eq!(
        (st, r["code"].as_str()),
        (403, Some("REVIEWER_IS_REQUESTER")),
        "{r}"
    );
    // One admin approves once; a second approval by the same admin is refused.
    let (st, r) = as_admin(&s, 0, Method::POST, &path, approve.clone()).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("review")), "{r}");
    let (st, r) = as_admin(&s, 0, Method::POST, &path, approve.clone()).await;
    assert_eq!((st, r["code"].as_str()), (409, Some("ALREADY_REVIEWED")), "{r}");
    // A customer without a role is not an admin at all; nor is an API key.
    let (st, r) = s
        .request(
            Method::GET,
            "/api/v1/ops/withdrawals/held",
            Some(&s.users[0].token),
            None,
        )
        .await;
    assert_eq!(st, 403, "{r}");
    // The second, distinct admin approves: the withdrawal may go to the signer.
    let (st, r) = as_admin(&s, 1, Method::POST, &path, approve).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("approved")), "{r}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_shows_on_the_public_status_and_is_refused_if_the_audit_log_cannot_record_it() {
    let s = TestServer::start(2).await;
    roles(&s, 0, vec![AdminRole::SecurityAdmin]).await;
    roles(&s, 1, vec![AdminRole::SecurityAdmin]).await;
    let mail = s.use_outbox();
    let dir = tempfile::tempdir().unwrap();
    let key = kinko_audit::load_or_create_key(&dir.path().join("k")).unwrap();
    let log = kinko_audit::AuditLog::open(dir.path(), key.clone()).unwrap();
    let trail = kinko_api::trail::Trail::new(log);
    let _ = s.gateway.trail.set(trail.clone());
    // Recorded, then done.
    let (st, r) = as_admin(
        &s,
        0,
        Method::POST,
        "/api/v1/ops/halt",
        json!({"asset": "ETH", "reason": "drill"}),
    )
    .await;
    assert_eq!(st, 204, "{r}");
    assert_eq!(trail.size(), 1);
    let (st, status) = s.request(Method::GET, "/api/v1/status", None, None).await;
    assert_eq!(st, 200);
    let eth = status["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["asset"] == "ETH")
        .unwrap();
    assert_eq!(eth["withdrawals"], false);
    // An incident: a critical message to every security admin, a metric, a public notice.
    s.gateway
        .submit(Command::OpenIncident {
            kind: "unapproved_outflow".into(),
            asset: Some(BTC),
            summary: "coins left the hot wallet".into(),
            txids: vec!["cd".repeat(32)],
            missing: kinko_core::Amount(5),
            opened_by: "system:reconciliation".into(),
            halt: true,
        })
        .await
        .unwrap()
        .reply
        .unwrap();
    let sent = crate::harness::wait_for_mails(&mail, 2, |m| m.kind == "security_incident").await;
    let to: std::collections::BTreeSet<&str> = sent.iter().map(|m| m.to.as_str()).collect();
    assert_eq!(
        to,
        [s.users[0].email.as_str(), s.users[1].email.as_str()]
            .into_iter()
            .collect()
    );
    assert!(sent[0].body.contains(&"cd".repeat(32)), "{}", sent[0].body);
    let text = reqwest::get(format!("{}/metrics", s.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.lines().any(|l| l == "kinko_incidents_open 1"), "{text}");
    assert!(
        text.lines()
            .any(|l| l == "kinko_withdrawals_halted{asset=\"ETH\"} 1"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "kinko_withdrawals_halted{asset=\"BTC\"} 1"),
        "{text}"
    );
    let (_, status) = s.request(Method::GET, "/api/v1/status", None, None).await;
    assert_eq!(status["notices"][0]["kind"], "unapproved_outflow");
    // The log becomes unwritable: the next admin action is refused and nothing changes.
    let entries = dir.path().join(kinko_audit::ENTRIES_FILE);
    std::fs::remove_file(&entries).unwrap();
    std::fs::create_dir(&entries).unwrap();
    let (st, r) = as_admin(
        &s,
        0,
        Method::POST,
        "/api/v1/ops/halt",
        json!({"reason": "everything"}),
    )
    .await;
    assert_eq!((st, r["code"].as_str()), (503, Some("AUDIT_UNAVAILABLE")), "{r}");
    let (_, status) = s.request(Method::GET, "/api/v1/status", None, None).await;
    assert_eq!(status["withdrawals_halted"], false);
    std::fs::remove_dir(&entries).unwrap();
    s.stop().await;
}

/// Scenario (a), after Crypto.com: an attacker holds a customer's full session (a stolen
/// cookie) but not their second factor, and tries every route that could move funds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_session_without_the_second_factor_moves_nothing() {
    let s = TestServer::start(2).await;
    let victim = &s.users[0];
    let stolen = victim.session.clone();
    let before = crate::native::balances(&s, 0).await;
    let keys_before = s.gateway.read.model().engine.keys().of_user(victim.id).len();
    let to = usable_address(&s, victim.id, &format!("sim1{}", "8d".repeat(20))).await;
    let wrong_totp = json!({"totp": "000000"});
    let attempts: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/api/v1/withdrawals".into(),
            json!({"address_id": to.to_string(), "amount": "0.1"}),
        ),
        (
            Method::POST,
            "/api/v1/withdrawals".into(),
            json!({"address_id": to.to_string(), "amount": "0.1", "step_up": wrong_totp}),
        ),
        (
            Method::POST,
            "/api/v1/withdrawal-addresses".into(),
            json!({"asset": "BTC", "address": format!("sim1{}", "9e".repeat(20))}),
        ),
        (
            Method::POST,
            "/api/v1/me/api-keys".into(),
            json!({"label": "x", "scopes": {"view": true, "withdraw": true}, "ip_allowlist": ["127.0.0.1"]}),
        ),
        (
            Method::POST,
            "/api/v1/me/password".into(),
            json!({"current_password": "guess", "new_password": "a long enough password"}),
        ),
        (
            Method::POST,
            "/api/v1/me/email".into(),
            json!({"email": "attacker@example.com"}),
        ),
        (Method::DELETE, "/api/v1/me/totp".into(), json!({})),
        (
            Method::POST,
            "/api/v1/transfers".into(),
            json!({"to": "1", "asset": "BTC", "amount": "1"}),
        ),
        (
            Method::POST,
            "/api/v1/admin/revoke-everything".into(),
            json!({"requested_by": "x", "reason": "y"}),
        ),
        (Method::POST, "/api/v1/ops/halt".into(), json!({"reason": "y"})),
        (
            Method::POST,
            "/api/v1/ops/proposals".into(),
            json!({"kind": "set_roles", "user_id": victim.id.0.to_string(), "roles": ["security_admin"], "reason": "y"}),
        ),
    ];
    for (method, path, body) in attempts {
        let (st, r) = s.request(method.clone(), &path, Some(&stolen), Some(body)).await;
        assert!(
            [401, 403, 404, 405].contains(&st),
            "{method} {path} with a stolen session answered {st}: {r}"
        );
    }
    // Nothing moved, nothing was recorded that could move it later.
    assert_eq!(crate::native::balances(&s, 0).await, before);
    {
        let m = s.gateway.read.model();
        let w = m.engine.wallet();
        assert!(w.withdrawals().iter().all(|x| x.user != victim.id));
        assert_eq!(
            w.withdrawal_addresses_of(victim.id).len(),
            1,
            "only the test's own address"
        );
        assert_eq!(
            m.engine.keys().of_user(victim.id).len(),
            keys_before,
            "no new API key"
        );
        let u = m.engine.identity().user(victim.id).unwrap();
        assert!(
            u.totp.is_some() || !u.passkeys.is_empty(),
            "the factor is still there"
        );
        assert!(u.roles.is_empty());
        // The only proposal is the harness quorum's whitelisting of the test's own address.
        assert!(
            m.engine.admin().proposals.iter().all(|p| p.proposer != victim.id
                && matches!(p.change, kinko_core::admin::AdminChange::WhitelistAddress { .. })),
            "{:?}",
            m.engine.admin().proposals
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_and_trading_halt_per_asset_and_resume_with_a_second_admin() {
    let s = TestServer::start(2).await;
    roles(&s, 0, vec![AdminRole::SecurityAdmin]).await;
    roles(&s, 1, vec![AdminRole::SecurityAdmin]).await;
    let asset_status = |status: &Value, code: &str, op: &str| {
        status["assets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["asset"] == code)
            .unwrap()[op]
            .clone()
    };
    for op in ["deposits", "trading"] {
        let (st, r) = as_admin(
            &s,
            0,
            Method::POST,
            "/api/v1/ops/halt",
            json!({"asset": "BTC", "operation": op, "reason": "check"}),
        )
        .await;
        assert_eq!(st, 204, "{op}: {r}");
    }
    let (_, status) = s.request(Method::GET, "/api/v1/status", None, None).await;
    assert_eq!(asset_status(&status, "BTC", "deposits"), false);
    assert_eq!(asset_status(&status, "BTC", "trading"), false);
    assert_eq!(asset_status(&status, "BTC", "withdrawals"), true);
    // Trading halted: an order is refused.
    let (st, r) = s
        .post(
            0,
            "/api/v1/orders",
            json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.01"}),
        )
        .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (403, Some("ASSET_TRADING_DISABLED")),
        "{r}"
    );
    // An operation needs an asset; an unknown one is refused.
    let (st, _) = as_admin(
        &s,
        0,
        Method::POST,
        "/api/v1/ops/halt",
        json!({"operation": "deposits", "reason": "x"}),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = as_admin(
        &s,
        0,
        Method::POST,
        "/api/v1/ops/halt",
        json!({"asset": "BTC", "operation": "mining", "reason": "x"}),
    )
    .await;
    assert_eq!(st, 400);
    // Resume trading: proposed by one admin, carried out by the other.
    let (st, p) = as_admin(
        &s,
        0,
        Method::POST,
        "/api/v1/ops/proposals",
        json!({"kind": "resume_operation", "asset": "BTC", "operation": "trading", "reason": "checked"}),
    )
    .await;
    assert_eq!(st, 200, "{p}");
    let path = format!("/api/v1/ops/proposals/{}/approve", p["id"].as_str().unwrap());
    let (st, r) = as_admin(&s, 0, Method::POST, &path, json!({})).await;
    assert_eq!((st, r["code"].as_str()), (403, Some("OWN_PROPOSAL")), "{r}");
    let (st, r) = as_admin(&s, 1, Method::POST, &path, json!({})).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("executed")), "{r}");
    let (_, status) = s.request(Method::GET, "/api/v1/status", None, None).await;
    assert_eq!(asset_status(&status, "BTC", "trading"), true);
    assert_eq!(asset_status(&status, "BTC", "deposits"), false);
    s.stop().await;
}

/// Admins act with passkeys only: the step-up offers nothing else, a TOTP code or an admin
/// without a passkey is told `ADMIN_PASSKEY_REQUIRED`, and an admin command injected past the
/// gateway with an assertion the admin's authenticator did not make for this relying party is
/// refused by the engine itself (`PASSKEY_ASSERTION_INVALID`), which knows the relying party
/// because the gateway journaled it at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_act_with_passkeys_only_and_the_engine_verifies_them() {
    let s = TestServer::start(1).await;
    roles(&s, 0, vec![AdminRole::SecurityAdmin]).await;
    let admin = &s.users[0];
    let rp = s
        .gateway
        .read
        .model()
        .engine
        .identity()
        .relying_party()
        .cloned()
        .expect("the gateway journaled its relying party");
    assert_eq!(rp.origins, vec![s.origin.clone()]);
    let halted = |s: &TestServer| {
        !s.gateway
            .read
            .model()
            .engine
            .asset(crate::harness::ETH)
            .unwrap()
            .switches
            .withdrawals
    };
    // The challenge offers the passkey alone, although the admin has an authenticator app.
    let body = json!({"asset": "ETH", "reason": "drill"});
    let (st, r) = s
        .request(
            Method::POST,
            "/api/v1/ops/halt",
            Some(&admin.session),
            Some(body.clone()),
        )
        .await;
    assert_eq!((st, r["code"].as_str()), (403, Some("STEP_UP_REQUIRED")), "{r}");
    assert_eq!(r["step_up"]["methods"], json!(["webauthn"]), "{r}");
    // A TOTP code is refused whatever it is.
    let (st, r) = s
        .with_step_up_as(
            admin,
            &admin.session,
            Factor::Totp,
            Method::POST,
            "/api/v1/ops/halt",
            body.clone(),
        )
        .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (403, Some("ADMIN_PASSKEY_REQUIRED")),
        "{r}"
    );
    assert!(!halted(&s));
    // An admin without a passkey is told to add one.
    let bare = s.register("no-passkey@kinko.test").await;
    s.gateway
        .submit(Command::Identity(IdentityCommand::SetRoles {
            user: bare.id,
            roles: vec![AdminRole::Support],
            requested_by: "operator".into(),
            reason: "test".into(),
        }))
        .await
        .unwrap()
        .reply
        .unwrap();
    let (st, r) = s
        .request(
            Method::POST,
            "/api/v1/ops/halt",
            Some(&bare.session),
            Some(body.clone()),
        )
        .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (403, Some("ADMIN_PASSKEY_REQUIRED")),
        "{r}"
    );
    assert!(r["message"].as_str().unwrap().contains("account page"), "{r}");
    // Injected past the gateway: an assertion made on another origin is refused by the engine.
    let action = kinko_core::identity::Action::Halt {
        user: admin.id,
        asset: Some(crate::harness::ETH),
    };
    let injected = |proof| Command::HaltWithdrawals {
        asset: Some(crate::harness::ETH),
        by: kinko_core::engine::HaltBy::Admin {
            user: admin.id,
            via: admin.via_session(),
            proof,
        },
        reason: "injected".into(),
    };
    let r = s
        .gateway
        .submit(injected(admin.proof(&action, "https://phish.example")))
        .await
        .unwrap()
        .reply;
    assert_eq!(r, Err(kinko_core::Reject::PasskeyAssertionInvalid));
    assert!(!halted(&s));
    // The admin's own passkey halts.
    let (st, r) = as_admin(&s, 0, Method::POST, "/api/v1/ops/halt", body).await;
    assert_eq!(st, 204, "{r}");
    s.gateway.caught_up().await.unwrap();
    assert!(halted(&s));
    s.stop().await;
}
