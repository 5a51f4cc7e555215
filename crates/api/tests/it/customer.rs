//! What the customer web app reads beside the trading and wallet basics, over HTTP against a
//! real gateway: the customer's own security log from a real audit trail (newest first, paged,
//! only their own events and only what they may see), the withdrawal limits left as the engine
//! counts them, the confirmations each asset's deposits need, and the language of the
//! customer's messages (from `Accept-Language` at sign-up, changed by `/me/language`) with the
//! anti-phishing code in each, in the outbox.

use crate::harness::{wait_for_mail, Factor, TestServer, User, BTC};
use kinko_core::engine::Command;
use kinko_core::risk::{RiskPolicy, TierLimit};
use kinko_core::Amount;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const COIN: u128 = 100_000_000;

/// A real audit trail with its feed of security events from committed batches, as `kinko
/// serve` runs it. Keep the returned directory alive.
fn with_trail(s: &TestServer) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let key = kinko_audit::load_or_create_key(&dir.path().join("k")).unwrap();
    let log = kinko_audit::AuditLog::open(dir.path(), key).unwrap();
    assert!(s.gateway.trail.set(kinko_api::trail::Trail::new(log)).is_ok());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(kinko_api::trail::run(
        s.gateway.clone(),
        Duration::from_secs(3600),
        stop_rx,
    ));
    // The feed runs until the server goes away.
    std::mem::forget(stop_tx);
    dir
}

async fn withdraw(s: &TestServer, u: &User, address_id: u64, amount: &str) -> (u16, Value) {
    s.with_step_up_as(
        u,
        &u.token,
        Factor::Passkey,
        Method::POST,
        "/api/v1/withdrawals",
        json!({"address_id": address_id.to_string(), "amount": amount}),
    )
    .await
}

async fn limits(s: &TestServer, token: &str) -> Value {
    let (st, r) = s
        .request(Method::GET, "/api/v1/withdrawal-limits", Some(token), None)
        .await;
    assert_eq!(st, 200, "{r}");
    r
}

async fn security_log(s: &TestServer, session: &str, query: &str) -> Value {
    let (st, r) = s
        .request(
            Method::GET,
            &format!("/api/v1/me/security-log{query}"),
            Some(session),
            None,
        )
        .await;
    assert_eq!(st, 200, "{r}");
    r
}

fn kinds(log: &Value) -> Vec<String> {
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_security_log_is_the_customers_own_newest_first_and_paged() {
    let s = TestServer::start(1).await;
    let _trail = with_trail(&s);
    s.set_policy(kinko_core::identity::Policy {
        security_lock_ns: 0,
        ..kinko_core::identity::Policy::default()
    })
    .await;
    let customer = s.new_user("logbook@kinko.test").await;
    // A failed sign-in, an address, a withdrawal requested and cancelled.
    let (st, _) = s
        .request(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": customer.email, "password": "not the password"})),
        )
        .await;
    assert_eq!(st, 401);
    s.fund(&customer, COIN).await;
    let address = s.btc_usd_address.clone();
    let address_id = crate::native::usable_address(&s, customer.id, &address).await;
    let (st, w) = withdraw(&s, &customer, address_id, "0.1").await;
    assert_eq!(st, 200, "{w}");
    let id = w["id"].as_str().unwrap().to_owned();
    let (st, r) = s
        .request(
            Method::DELETE,
            &format!("/api/v1/withdrawals/{id}"),
            Some(&customer.token),
            None,
        )
        .await;
    assert!(st == 200 || st == 204, "{st} {r}");

    // The trail takes committed batches as they come: wait for the cancellation.
    let deadline = Instant::now() + Duration::from_secs(10);
    let all = loop {
        let log = security_log(&s, &customer.session, "?limit=100").await;
        if kinds(&log).first().map(String::as_str) == Some("wallet.withdrawal_cancelled") {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "the cancellation never reached the log: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let events = all["events"].as_array().unwrap();
    let k = kinds(&all);
    assert_eq!(all["next_before"], Value::Null, "one page holds everything");
    // Newest first: trail indices strictly decrease, and so do (weakly) the times.
    let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let pos = |kind: &str| {
        k.iter()
            .position(|x| x == kind)
            .unwrap_or_else(|| panic!("{kind} missing from {k:?}"))
    };
    assert!(pos("wallet.withdrawal_cancelled") < pos("wallet.withdrawal_requested"));
    assert!(pos("wallet.withdrawal_requested") < pos("wallet.address_added"));
    assert!(pos("identity.auth_failed") < pos("identity.factor_enrolled"));
    assert_eq!(k.last().map(String::as_str), Some("identity.registered"), "{k:?}");
    assert_eq!(
        k.iter().filter(|x| *x == "identity.factor_enrolled").count(),
        2,
        "{k:?}"
    );
    // What each says, in the API's terms (asset codes, decimal amounts).
    let ev = |kind: &str| &events[pos(kind)]["detail"];
    assert_eq!(ev("identity.session_opened")["device"], "test harness");
    assert_eq!(ev("identity.session_opened")["ip"], "127.0.0.1");
    assert!(ev("identity.auth_failed")["reason"].as_str().is_some());
    assert_eq!(ev("wallet.address_added")["address"], address.as_str());
    assert_eq!(ev("wallet.address_added")["asset"], "BTC");
    let requested = ev("wallet.withdrawal_requested");
    assert_eq!(
        (&requested["asset"], &requested["amount"]),
        (&json!("BTC"), &json!("0.10000000"))
    );
    assert_eq!(requested["address"], address.as_str());
    // Not shown to the customer: each second-factor use, operators' and rules' notes.
    assert!(
        !k.iter()
            .any(|x| x.contains("step_up_used") || x.contains("roles")),
        "{k:?}"
    );
    for e in events {
        for field in ["rule", "decision", "by", "approvals", "action", "user"] {
            assert!(e["detail"].get(field).is_none(), "{field} in {e}");
        }
    }

    // Pages of two walk the same events, each page older than the one before.
    let mut walked = Vec::new();
    let mut query = "?limit=2".to_owned();
    for _ in 0..events.len() {
        let page = security_log(&s, &customer.session, &query).await;
        let n = page["events"].as_array().unwrap().len();
        assert!(n <= 2, "{page}");
        walked.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_u64().unwrap()),
        );
        match page["next_before"].as_u64() {
            Some(b) => query = format!("?limit=2&before={b}"),
            None => break,
        }
    }
    assert_eq!(walked, ids);

    // Another customer sees none of it; an API key, bad limits and no session are refused.
    let (_, other) = s
        .request(
            Method::GET,
            "/api/v1/me/security-log",
            Some(&s.users[0].session),
            None,
        )
        .await;
    assert!(!other.to_string().contains(&address), "{other}");
    assert!(!other.to_string().contains("logbook"), "{other}");
    for (bearer, query, want) in [
        (Some(customer.token.as_str()), "", 401),
        (None, "", 401),
        (Some(customer.session.as_str()), "?limit=0", 400),
        (Some(customer.session.as_str()), "?limit=101", 400),
        (Some(customer.session.as_str()), "?before=-1", 400),
    ] {
        let (st, r) = s
            .request(
                Method::GET,
                &format!("/api/v1/me/security-log{query}"),
                bearer,
                None,
            )
            .await;
        assert!(
            st == want || (want == 401 && st == 403),
            "{query} with {bearer:?}: {st} {r}"
        );
        assert!(r["code"].as_str().is_some(), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_left_are_what_the_engine_allows_and_deposits_state_their_confirmations() {
    let s = TestServer::start(1).await;
    s.set_policy(kinko_core::identity::Policy {
        security_lock_ns: 0,
        ..kinko_core::identity::Policy::default()
    })
    .await;
    // The confirmations a deposit needs, where a chain is configured (the simulated one here).
    let (st, assets) = s.request(Method::GET, "/api/v1/assets", None, None).await;
    assert_eq!(st, 200);
    let asset = |code: &str| {
        assets
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["code"] == code)
            .unwrap()
            .clone()
    };
    assert_eq!(asset("BTC")["deposit_confirmations"], 1);
    assert_eq!(
        asset("USD").get("deposit_confirmations"),
        None,
        "no chain for USD"
    );

    let customer = s.new_user("limits@kinko.test").await;
    s.fund(&customer, 3 * COIN).await;
    s.gateway
        .submit(Command::SetRiskPolicy(RiskPolicy {
            limits: vec![TierLimit {
                tier: 0,
                asset: BTC,
                day_max: Amount(COIN),
                month_max: Amount(2 * COIN),
            }],
            ..RiskPolicy::default()
        }))
        .await
        .unwrap()
        .reply
        .unwrap();
    assert_eq!(
        limits(&s, &customer.token).await,
        json!([{"asset": "BTC", "day_max": "1.00000000", "day_left": "1.00000000",
            "month_max": "2.00000000", "month_left": "2.00000000"}])
    );
    let address_id = crate::native::usable_address(&s, customer.id, &s.btc_usd_address).await;
    let (st, w) = withdraw(&s, &customer, address_id, "0.3").await;
    assert_eq!(st, 200, "{w}");
    let left = limits(&s, &customer.token).await;
    assert_eq!(
        (&left[0]["day_left"], &left[0]["month_left"]),
        (&json!("0.70000000"), &json!("1.70000000"))
    );
    // One unit above what is shown is refused; exactly what is shown is accepted.
    let (st, r) = withdraw(&s, &customer, address_id, "0.70000001").await;
    assert_eq!(
        (st, &r["code"]),
        (403, &json!("WITHDRAWAL_LIMIT_EXCEEDED")),
        "{r}"
    );
    let (st, r) = withdraw(&s, &customer, address_id, "0.7").await;
    assert_eq!(st, 200, "{r}");
    let left = limits(&s, &customer.token).await;
    assert_eq!(
        (&left[0]["day_left"], &left[0]["month_left"]),
        (&json!("0.00000000"), &json!("1.00000000"))
    );
    // One asset at a time; an unknown one is refused with a code.
    let (st, r) = s
        .request(
            Method::GET,
            "/api/v1/withdrawal-limits?asset=ETH",
            Some(&customer.token),
            None,
        )
        .await;
    assert_eq!((st, r), (200, json!([])));
    let (st, r) = s
        .request(
            Method::GET,
            "/api/v1/withdrawal-limits?asset=NOPE",
            Some(&customer.token),
            None,
        )
        .await;
    assert!(st == 400 || st == 404, "{st} {r}");
    assert!(r["code"].as_str().is_some(), "{r}");
    let (st, _) = s
        .request(Method::GET, "/api/v1/withdrawal-limits", None, None)
        .await;
    assert_eq!(st, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_in_the_language_the_customer_chose_with_the_code() {
    let s = TestServer::start(1).await;
    let outbox = s.use_outbox();
    let email = "hanako@kinko.test";
    let password = "password of hanako";
    // Signed up from a browser that prefers Japanese.
    let r = s
        .client
        .post(s.url("/api/v1/auth/register"))
        .header("Accept-Language", "ja-JP,ja;q=0.9,en;q=0.5")
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let login = |device: &'static str| {
        let s = &s;
        async move {
            let (st, r) = s
                .request(
                    Method::POST,
                    "/api/v1/auth/login",
                    None,
                    Some(json!({"email": email, "password": password, "device": device})),
                )
                .await;
            assert_eq!(st, 200, "{r}");
            r["token"].as_str().unwrap().to_owned()
        }
    };
    let session = login("hanako phone").await;
    let (_, me) = s.request(Method::GET, "/api/v1/me", Some(&session), None).await;
    assert_eq!(me["language"], "ja", "{me}");
    let (st, r) = s
        .request(
            Method::POST,
            "/api/v1/me/anti-phishing",
            Some(&session),
            Some(json!({"code": "SAKURA77"})),
        )
        .await;
    assert_eq!(st, 204, "{r}");
    let set = wait_for_mail(&outbox, |m| m.kind == "anti_phishing_changed").await;
    assert_eq!(
        set.subject,
        "[SAKURA77] kinko のフィッシング対策コードが設定されました"
    );
    assert!(
        set.body.starts_with("お客様のフィッシング対策コード: SAKURA77\n"),
        "{}",
        set.body
    );
    assert!(
        set.body.contains("アカウントを凍結してください: http"),
        "{}",
        set.body
    );
    // A sign-in from a new device: in Japanese, with the code.
    login("hanako laptop").await;
    let new_device = wait_for_mail(&outbox, |m| {
        m.kind == "new_device_login" && m.body.contains("hanako laptop")
    })
    .await;
    assert_eq!(
        new_device.subject,
        "[SAKURA77] kinko アカウントへの新しいログイン"
    );
    assert!(new_device
        .body
        .starts_with("お客様のフィッシング対策コード: SAKURA77\n"));
    assert!(
        new_device
            .body
            .contains("新しい端末からアカウントにログインがありました"),
        "{}",
        new_device.body
    );
    let eml = std::fs::read_to_string(outbox.join(&new_device.file)).unwrap();
    assert!(eml.contains("\r\nContent-Language: ja\r\n"), "{eml}");

    // The switch to English while signed in: the next message is in English, still with the code.
    let (st, r) = s
        .request(
            Method::POST,
            "/api/v1/me/language",
            Some(&session),
            Some(json!({"language": "en"})),
        )
        .await;
    assert_eq!(st, 204, "{r}");
    let (_, me) = s.request(Method::GET, "/api/v1/me", Some(&session), None).await;
    assert_eq!(me["language"], "en");
    login("hanako tablet").await;
    let english = wait_for_mail(&outbox, |m| {
        m.kind == "new_device_login" && m.body.contains("hanako tablet")
    })
    .await;
    assert_eq!(english.subject, "[SAKURA77] New sign-in to your kinko account");
    assert!(english.body.starts_with("Your anti-phishing code: SAKURA77\n"));
    assert!(english.body.contains("Not you? Freeze your account: http"));
    // Neither language is guessed from nothing: no preference is English; bad input is a 400.
    let (st, r) = s
        .request(
            Method::POST,
            "/api/v1/me/language",
            Some(&session),
            Some(json!({"language": "fr"})),
        )
        .await;
    assert_eq!(st, 400, "{r}");
    assert!(r["code"].as_str().is_some(), "{r}");
    let (st, _) = s
        .request(
            Method::POST,
            "/api/v1/me/language",
            None,
            Some(json!({"language": "ja"})),
        )
        .await;
    assert_eq!(st, 401);
    let plain = s.register("plain@kinko.test").await;
    let (_, me) = s
        .request(Method::GET, "/api/v1/me", Some(&plain.session), None)
        .await;
    assert_eq!(me["language"], "en");
}
