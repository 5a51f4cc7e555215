//! The operators' console's customer lookup and platform page in a real headless Chromium
//! against a real gateway with a real audit trail (its security events appended from committed
//! batches, as `kinko serve` runs it).
//!
//! A customer is made through the API (register, passkey, authenticator app, API key), given a
//! deposit address through the API and credited on the simulated chain, places an order (funds
//! held), and gets an address usable at once and a withdrawal. Admin A looks the customer up by
//! email: status, balances (available and held) equal to what the customer's own API says,
//! second factors (counts and kinds), the harness's login with its device, the withdrawal and
//! the address; the read is in the audit log. A freezes with a reason and the passkey: the page
//! and the engine say frozen, the customer's session and key are refused, and a fresh sign-in
//! may look but a withdrawal is refused with `ACCOUNT_FROZEN`. A proposes the unfreeze (still
//! frozen); admin B, in a tab of their own, looks the customer up by id, sees the pending
//! proposal and approves it: only then is the customer active. The platform page shows per
//! asset the liabilities the test sums from every customer's balances through the API, the
//! withdrawals by state counted from the customers' own lists, and the engine's committed
//! sequence. Then the switch to Japanese, remembered across a reload by the `lang` cookie, and
//! the lookup in Japanese; the page at 375 px wide without sideways scrolling.
//!
//! Screenshots: `target/screenshots/console-*.png`.

use crate::browser::{Browser, Page};
use crate::console::{
    click, confirm_with_passkey, console_sign_in, enrol, eval, fill, notice, q, set_roles, shown_js, text,
    text_js, wait_for,
};
use crate::harness::{Factor, TestServer, User};
use kinko_core::engine::Command;
use kinko_core::identity::UserStatus;
use kinko_core::Amount;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn shot_path(name: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("console-{name}.png"))
}

/// A full-page screenshot: the viewport made as tall as the page first (at `width`).
async fn shot(b: &mut Browser, page: &Page, name: &str, width: u32) {
    eval(b, page, "window.scrollTo(0, 0)").await;
    b.set_viewport(page, width, 600, width < 600).await.unwrap();
    let h = eval(b, page, "document.documentElement.scrollHeight").await;
    let h = u32::try_from(h.as_u64().unwrap_or(900))
        .unwrap_or(900)
        .clamp(600, 6000);
    b.set_viewport(page, width, h, width < 600).await.unwrap();
    let png = shot_path(name);
    b.screenshot(page, &png).await.unwrap();
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
}

/// Loads `url` afresh in the tab (by way of about:blank: a change of the fragment alone would
/// not load the page again). The tab's sessionStorage, and so the console's session, stays.
async fn load(b: &mut Browser, page: &Page, url: &str) {
    b.navigate(page, "about:blank").await.unwrap();
    b.navigate(page, url).await.unwrap();
}

/// Every audit entry so far, oldest first.
fn audit_entries(dir: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join(kinko_audit::ENTRIES_FILE)).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn audited(dir: &std::path::Path, kind: &str, actor: &str, subject: &str) -> bool {
    audit_entries(dir)
        .iter()
        .any(|e| e["kind"] == kind && e["actor"] == actor && e["subject"] == subject)
}

/// Waits (bounded) for an audit entry to appear.
async fn wait_audited(dir: &std::path::Path, kind: &str, actor: &str, subject: &str) {
    for _ in 0..200 {
        if audited(dir, kind, actor, subject) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no audit entry {kind} by {actor} of {subject}");
}

/// Signs in with password and passkey through the API; the new full session's token.
async fn sign_in(s: &TestServer, u: &User) -> String {
    let (st, r) = s
        .request(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": u.email, "password": u.password, "device": "customer laptop"})),
        )
        .await;
    assert_eq!((st, &r["level"]), (200, &json!("password")), "{r}");
    let token = r["token"].as_str().unwrap().to_owned();
    let challenge = r["second_factor"]["challenge"].as_str().unwrap();
    let step_up = u.step_up_passkey(challenge, &s.origin);
    let (st, r) = s
        .request(
            Method::POST,
            "/api/v1/auth/login/second-factor",
            Some(&token),
            Some(json!({"step_up": step_up})),
        )
        .await;
    assert_eq!((st, &r["level"]), (200, &json!("full")), "{r}");
    r["token"].as_str().unwrap().to_owned()
}

/// Minor units of a decimal string with `decimals` places.
fn minor(s: &str, decimals: u8) -> u128 {
    Amount::from_decimal(s, decimals).unwrap().0
}

fn decimals(code: &str) -> u8 {
    match code {
        "BTC" => 8,
        "ETH" => 18,
        "USD" => 6,
        other => panic!("unknown asset {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_looks_up_freezes_unfreezes_with_two_and_shows_the_platform() {
    let s = TestServer::start(1).await;
    // The audit trail, with its feed of security events from committed batches.
    let audit_dir = tempfile::tempdir().unwrap();
    let key = kinko_audit::load_or_create_key(&audit_dir.path().join("k")).unwrap();
    let log = kinko_audit::AuditLog::open(audit_dir.path(), key).unwrap();
    let trail = kinko_api::trail::Trail::new(log);
    assert!(s.gateway.trail.set(trail.clone()).is_ok());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let feed = tokio::spawn(kinko_api::trail::run(
        s.gateway.clone(),
        std::time::Duration::from_secs(3600),
        stop_rx,
    ));
    // The treasury quorum (address usable at once) before the two security admins close the
    // roles bootstrap.
    s.quorum().await;

    // The customer, through the API: registered and signed in ("test harness"), a passkey, an
    // authenticator app, an API key.
    // (Without the security-change lock, as the harness makes its users: the withdrawal below
    // follows the enrolment at once.)
    s.set_policy(kinko_core::identity::Policy {
        security_lock_ns: 0,
        ..kinko_core::identity::Policy::default()
    })
    .await;
    let customer = s.new_user("customer@kinko.test").await;
    let cid = customer.id;
    s.fund(&customer, 3 * 100_000_000).await;
    // An order that holds BTC, an address usable at once, and a withdrawal.
    let (st, o) = s
        .request(
            Method::POST,
            "/api/v1/orders",
            Some(&customer.token),
            Some(json!({"market": "BTC-USD", "side": "sell", "price": "31000", "size": "0.25"})),
        )
        .await;
    assert_eq!(st, 200, "{o}");
    let address = s.btc_usd_address.clone();
    let address_id = crate::native::usable_address(&s, cid, &address).await;
    let (st, w) = s
        .with_step_up_as(
            &customer,
            &customer.token,
            Factor::Passkey,
            Method::POST,
            "/api/v1/withdrawals",
            json!({"address_id": address_id.to_string(), "amount": "0.1"}),
        )
        .await;
    assert_eq!(st, 200, "{w}");
    let (st, balances) = s
        .request(Method::GET, "/api/v1/balances", Some(&customer.token), None)
        .await;
    assert_eq!(st, 200, "{balances}");
    let btc = balances
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == "BTC")
        .unwrap()
        .clone();
    assert_ne!(
        btc["hold"],
        json!("0"),
        "the order and the withdrawal hold BTC: {btc}"
    );

    // Two security admins, each with a passkey made in the browser.
    let mut a = s.register("admin-a@kinko.test").await;
    let mut bb = s.register("admin-b@kinko.test").await;
    set_roles(&s, &a).await;
    set_roles(&s, &bb).await;
    let mut b = Browser::launch().await.unwrap_or_else(|e| {
        panic!("chromium is needed for the console test: run scripts/install-test-deps ({e})")
    });
    let pa = b.new_page().await.unwrap();
    b.add_virtual_authenticator(&pa).await.unwrap();
    b.set_viewport(&pa, 1280, 900, false).await.unwrap();
    enrol(&mut b, &pa, &s, &mut a, false).await;
    b.navigate(&pa, &format!("{}/console", s.origin)).await.unwrap();
    wait_for(&mut b, &pa, &shown_js("#signin"), "the sign-in form").await;
    shot(&mut b, &pa, "signin", 1280).await;
    console_sign_in(&mut b, &pa, &s, &a).await;
    shot(&mut b, &pa, "overview", 1280).await;

    // 1. A looks the customer up by email (keyboard: the form submits with Enter, the
    // nav buttons are buttons).
    click(&mut b, &pa, "#nav-customers").await;
    wait_for(&mut b, &pa, &shown_js("#lookup-query"), "the lookup form").await;
    assert_eq!(
        eval(&mut b, &pa, "document.activeElement.id").await,
        json!("lookup-query"),
        "the lookup field has the focus"
    );
    assert_eq!(eval(&mut b, &pa, "location.hash").await, json!("#customers"));
    fill(&mut b, &pa, "#lookup-query", "  Customer@Kinko.test ").await;
    eval(
        &mut b,
        &pa,
        "document.getElementById('lookup-form').requestSubmit()",
    )
    .await;
    wait_for(
        &mut b,
        &pa,
        &format!("{}?.dataset.status === 'active'", q("#customer-status")),
        "the customer, active",
    )
    .await;
    assert_eq!(text(&mut b, &pa, "#customer-email").await, json!(customer.email));
    assert_eq!(text(&mut b, &pa, "#customer-id").await, json!(cid.0.to_string()));
    for asset in ["BTC", "ETH", "USD"] {
        let api = balances
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["asset"] == asset)
            .unwrap();
        for (field, key) in [("available", "available"), ("held", "hold")] {
            let shown = eval(
                &mut b,
                &pa,
                &format!(
                    "{}?.dataset.value ?? null",
                    q(&format!(
                        "#customer-balances tr[data-asset=\"{asset}\"] [data-field=\"{field}\"]"
                    ))
                ),
            )
            .await;
            assert_eq!(shown, api[key], "{asset} {field}");
        }
    }
    // Shown per locale: under a thousand the digits read as the API's decimal.
    let held_text = text(
        &mut b,
        &pa,
        "#customer-balances tr[data-asset=\"BTC\"] [data-field=\"held\"]",
    )
    .await;
    assert_eq!(held_text, btc["hold"]);
    let usd = text(
        &mut b,
        &pa,
        "#customer-balances tr[data-asset=\"USD\"] [data-field=\"available\"]",
    )
    .await;
    let usd_api = balances
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["asset"] == "USD")
        .unwrap();
    assert_eq!(usd, usd_api["available"]);
    assert_eq!(
        eval(
            &mut b,
            &pa,
            "document.getElementById('factor-totp').dataset.value"
        )
        .await,
        json!("true")
    );
    assert_eq!(
        eval(
            &mut b,
            &pa,
            "document.getElementById('factor-passkeys').dataset.value"
        )
        .await,
        json!("1")
    );
    assert_eq!(
        eval(
            &mut b,
            &pa,
            "document.getElementById('factor-recovery').dataset.value"
        )
        .await,
        json!("10")
    );
    // No secret on the page: not the TOTP secret, not a recovery code.
    let body = eval(&mut b, &pa, "document.body.innerText").await;
    let secret = kinko_api::totp::base32_encode(&customer.totp_secret);
    assert!(!body.as_str().unwrap().contains(&secret));
    assert!(!body.as_str().unwrap().contains(&customer.recovery_codes[0]));
    // The harness's sign-in, from the security log.
    let device = wait_for(
        &mut b,
        &pa,
        &text_js("#customer-logins tr [data-field=\"device\"]"),
        "a recent login",
    )
    .await;
    assert_eq!(device, json!("test harness"));
    assert_eq!(
        text(&mut b, &pa, "#customer-logins tr [data-field=\"ip\"]").await,
        json!("127.0.0.1")
    );
    assert_eq!(
        eval(
            &mut b,
            &pa,
            &format!("{}?.dataset.id ?? null", q("#customer-withdrawals tr"))
        )
        .await,
        w["id"]
    );
    assert_eq!(
        text(&mut b, &pa, "#customer-addresses tr [data-field=\"address\"]").await,
        json!(address)
    );
    let admin_a = format!("admin:{}", a.id.0);
    let subject = format!("user:{}", cid.0);
    wait_audited(audit_dir.path(), "ops.read_customer", &admin_a, &subject).await;
    shot(&mut b, &pa, "customer", 1280).await;

    // 2. A freezes the customer: reason, passkey.
    fill(&mut b, &pa, "#freeze-reason", "card fraud report").await;
    click(&mut b, &pa, "#freeze-submit").await;
    confirm_with_passkey(&mut b, &pa, &format!("freeze user {}", cid.0)).await;
    notice(&mut b, &pa, &format!("User {} is frozen.", cid.0)).await;
    wait_for(
        &mut b,
        &pa,
        &format!("{}?.dataset.status === 'frozen'", q("#customer-status")),
        "the customer, frozen",
    )
    .await;
    assert!(text(&mut b, &pa, "#customer-status-reason")
        .await
        .as_str()
        .unwrap()
        .contains("card fraud report"));
    wait_audited(audit_dir.path(), "ops.freeze_user", &admin_a, &subject).await;
    s.gateway.caught_up().await.unwrap();
    let status = |s: &TestServer| {
        let m = s.gateway.read.model();
        m.engine.identity().user(cid).unwrap().status
    };
    assert_eq!(status(&s), UserStatus::Frozen);
    // The customer's next calls: the session and the key are gone; signed in afresh they may
    // look, but a withdrawal is refused as frozen.
    let (st, r) = s
        .request(Method::GET, "/api/v1/me", Some(&customer.session), None)
        .await;
    assert_eq!((st, r["code"].as_str()), (401, Some("SESSION_INVALID")), "{r}");
    let (st, r) = s
        .request(Method::GET, "/api/v1/balances", Some(&customer.token), None)
        .await;
    assert_eq!(st, 401, "{r}");
    let session = sign_in(&s, &customer).await;
    let (st, r) = s.request(Method::GET, "/api/v1/me", Some(&session), None).await;
    assert_eq!(st, 200, "{r}");
    let (st, r) = s
        .with_step_up_as(
            &customer,
            &session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/withdrawals",
            json!({"address_id": address_id.to_string(), "amount": "0.1"}),
        )
        .await;
    assert_eq!((st, r["code"].as_str()), (403, Some("ACCOUNT_FROZEN")), "{r}");
    // The freeze form gives way to the unfreeze proposal.
    assert_eq!(eval(&mut b, &pa, &shown_js("#freeze-form")).await, json!(false));
    shot(&mut b, &pa, "customer-frozen", 1280).await;

    // 3. A proposes the unfreeze: one admin's word does not unfreeze.
    fill(
        &mut b,
        &pa,
        "#customer-unfreeze-reason",
        "identity confirmed by phone",
    )
    .await;
    click(&mut b, &pa, "#customer-unfreeze-submit").await;
    confirm_with_passkey(&mut b, &pa, &format!("propose unfreezing user {}", cid.0)).await;
    notice(&mut b, &pa, "Proposal ").await;
    let pid = wait_for(
        &mut b,
        &pa,
        "document.querySelector('#customer-proposals li[data-kind=\"unfreeze_user\"]')?.dataset.id ?? null",
        "the pending unfreeze on the customer's page",
    )
    .await;
    let pid = pid.as_str().unwrap().to_owned();
    let own = format!("#customer-proposals li[data-id=\"{pid}\"] button[data-act=\"approve-proposal\"]");
    assert_eq!(
        eval(&mut b, &pa, &format!("{}?.disabled ?? null", q(&own))).await,
        json!(true),
        "A is not offered the approval of A's own proposal"
    );
    wait_audited(audit_dir.path(), "ops.propose", &admin_a, "unfreeze_user").await;
    s.gateway.caught_up().await.unwrap();
    assert_eq!(status(&s), UserStatus::Frozen, "proposed is not done");

    // 4. B, in a tab of their own, looks the customer up by id and approves.
    let pb = b.new_page().await.unwrap();
    b.add_virtual_authenticator(&pb).await.unwrap();
    b.set_viewport(&pb, 1280, 900, false).await.unwrap();
    enrol(&mut b, &pb, &s, &mut bb, false).await;
    console_sign_in(&mut b, &pb, &s, &bb).await;
    click(&mut b, &pb, "#nav-customers").await;
    fill(&mut b, &pb, "#lookup-query", &cid.0.to_string()).await;
    click(&mut b, &pb, "#lookup-submit").await;
    let theirs = format!("#customer-proposals li[data-id=\"{pid}\"] button[data-act=\"approve-proposal\"]");
    wait_for(&mut b, &pb, &q(&theirs), "the pending unfreeze seen by B").await;
    assert_eq!(
        eval(
            &mut b,
            &pb,
            &format!("{}?.dataset.status ?? null", q("#customer-status"))
        )
        .await,
        json!("frozen")
    );
    click(&mut b, &pb, &theirs).await;
    confirm_with_passkey(
        &mut b,
        &pb,
        &format!("approve proposal {pid}: unfreeze user {}", cid.0),
    )
    .await;
    notice(&mut b, &pb, &format!("Proposal {pid} is executed")).await;
    wait_for(
        &mut b,
        &pb,
        &format!("{}?.dataset.status === 'active'", q("#customer-status")),
        "the customer, active again on B's page",
    )
    .await;
    s.gateway.caught_up().await.unwrap();
    assert_eq!(status(&s), UserStatus::Active, "unfrozen by two admins");
    wait_audited(
        audit_dir.path(),
        "ops.approve",
        &format!("admin:{}", bb.id.0),
        &format!("proposal:{pid}"),
    )
    .await;
    wait_audited(
        audit_dir.path(),
        "ops.read_customer",
        &format!("admin:{}", bb.id.0),
        &subject,
    )
    .await;
    b.close_page(pb).await.unwrap();

    // 5. The platform page against what the test sums through the API: every customer's
    // balances (total = available + held) and withdrawals by state.
    let mut liabilities: BTreeMap<String, u128> = BTreeMap::new();
    let mut states: BTreeMap<(String, String), u64> = BTreeMap::new();
    for token in [s.users[0].token.as_str(), session.as_str()] {
        let (st, list) = s
            .request(Method::GET, "/api/v1/balances", Some(token), None)
            .await;
        assert_eq!(st, 200, "{list}");
        for x in list.as_array().unwrap() {
            let code = x["asset"].as_str().unwrap().to_owned();
            let d = decimals(&code);
            *liabilities.entry(code).or_default() += minor(x["total"].as_str().unwrap(), d);
        }
        let (st, list) = s
            .request(Method::GET, "/api/v1/withdrawals", Some(token), None)
            .await;
        assert_eq!(st, 200, "{list}");
        for x in list.as_array().unwrap() {
            let key = (
                x["asset"].as_str().unwrap().to_owned(),
                x["status"].as_str().unwrap().to_owned(),
            );
            *states.entry(key).or_default() += 1;
        }
    }
    assert!(!states.is_empty());
    load(&mut b, &pa, &format!("{}/console#platform", s.origin)).await;
    wait_for(
        &mut b,
        &pa,
        &q("#platform-assets tr[data-asset=\"BTC\"]"),
        "the platform page (restored from the address, signed in still)",
    )
    .await;
    for (code, sum) in &liabilities {
        let shown = eval(
            &mut b,
            &pa,
            &format!(
                "{}?.dataset.value ?? null",
                q(&format!(
                    "#platform-assets tr[data-asset=\"{code}\"] [data-field=\"liabilities\"]"
                ))
            ),
        )
        .await;
        let shown = minor(shown.as_str().unwrap(), decimals(code));
        assert_eq!(shown, *sum, "{code} liabilities");
    }
    for ((code, state), n) in &states {
        let shown = eval(
            &mut b,
            &pa,
            &format!(
                "{}?.dataset.value ?? null",
                q(&format!(
                    "#platform-states tr[data-asset=\"{code}\"] [data-field=\"{state}\"]"
                ))
            ),
        )
        .await;
        assert_eq!(shown, json!(n.to_string()), "{code} withdrawals {state}");
    }
    let committed = eval(
        &mut b,
        &pa,
        "document.getElementById('platform-committed').dataset.value",
    )
    .await;
    let committed: u64 = committed.as_str().unwrap().parse().unwrap();
    let now = s
        .gateway
        .engine
        .stats()
        .last_seq
        .load(std::sync::atomic::Ordering::Acquire);
    assert!(committed > 0 && committed <= now, "{committed} of {now}");
    assert_eq!(
        eval(
            &mut b,
            &pa,
            "document.getElementById('platform-queue').dataset.value"
        )
        .await,
        json!("0")
    );
    shot(&mut b, &pa, "platform", 1280).await;

    // 6. Japanese: the switch, remembered by the cookie across a reload; the lookup in it.
    click(&mut b, &pa, "#lang-ja").await;
    assert_eq!(
        eval(&mut b, &pa, "document.documentElement.lang").await,
        json!("ja")
    );
    assert!(eval(&mut b, &pa, "document.cookie")
        .await
        .as_str()
        .unwrap()
        .contains("lang=ja"));
    load(&mut b, &pa, &format!("{}/console#customers", s.origin)).await;
    wait_for(
        &mut b,
        &pa,
        &shown_js("#lookup-query"),
        "the lookup form after the reload",
    )
    .await;
    assert_eq!(
        eval(&mut b, &pa, "document.documentElement.lang").await,
        json!("ja")
    );
    assert_eq!(text(&mut b, &pa, "#customers-title").await, json!("顧客検索"));
    fill(&mut b, &pa, "#lookup-query", &customer.email).await;
    click(&mut b, &pa, "#lookup-submit").await;
    wait_for(
        &mut b,
        &pa,
        &format!("{} === '有効'", text_js("#customer-status")),
        "the customer's status in Japanese",
    )
    .await;
    assert_eq!(
        text(&mut b, &pa, "#nav-platform").await,
        json!("プラットフォーム")
    );
    shot(&mut b, &pa, "customer-ja", 1280).await;

    // 7. A phone: 375 px wide, nothing wider than the screen but the tables' own scrolling.
    b.set_viewport(&pa, 375, 800, true).await.unwrap();
    let wide = eval(&mut b, &pa, "document.documentElement.scrollWidth").await;
    assert!(wide.as_u64().unwrap() <= 375, "the page is {wide} px wide at 375");
    shot(&mut b, &pa, "customer-375", 375).await;
    click(&mut b, &pa, "#lang-en").await;
    assert_eq!(
        text(&mut b, &pa, "#customers-title").await,
        json!("Customer lookup")
    );

    b.close_page(pa).await.unwrap();
    drop(b);
    let _ = stop_tx.send(true);
    let _ = feed.await;
    s.stop().await;
}

/// The console's language from the `lang` cookie, else `Accept-Language` (by quality), else
/// English; the page says which in `<html lang>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_language_follows_the_cookie_then_accept_language() {
    let s = TestServer::start(0).await;
    let lang_of = |accept: Option<&'static str>, cookie: Option<&'static str>| {
        let s = &s;
        async move {
            let mut r = s.client.get(s.url("/console"));
            if let Some(a) = accept {
                r = r.header("accept-language", a);
            }
            if let Some(c) = cookie {
                r = r.header("cookie", c);
            }
            let html = r.send().await.unwrap().text().await.unwrap();
            html.split("<html lang=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(lang_of(None, None).await, "en");
    assert_eq!(lang_of(Some("ja-JP,ja;q=0.9,en;q=0.8"), None).await, "ja");
    assert_eq!(lang_of(Some("en-US,ja;q=0.5"), None).await, "en");
    assert_eq!(lang_of(Some("fr, ja;q=0.3, en;q=0.2"), None).await, "ja");
    assert_eq!(lang_of(Some("fr"), None).await, "en");
    assert_eq!(lang_of(Some("ja"), Some("other=1; lang=en")).await, "en");
    assert_eq!(lang_of(None, Some("lang=ja")).await, "ja");
    assert_eq!(lang_of(Some("ja"), Some("lang=xx")).await, "ja");
    s.stop().await;
}

/// The console's routes over HTTP: who may call them (401 without a token, 403 for an API key
/// or a user without a role), a lookup of nobody (404), a freeze that needs the admin's passkey
/// (a TOTP code is refused, a viewer may not freeze, a second freeze is refused), and a lookup
/// the audit log cannot record is refused and shows nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_routes_refuse_non_admins_need_a_passkey_and_the_audit_log() {
    use kinko_core::identity::{AdminRole, IdentityCommand};
    let s = TestServer::start(3).await;
    let set = |i: usize, roles: Vec<AdminRole>| {
        let s = &s;
        async move {
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
    };
    set(0, vec![AdminRole::Support]).await;
    set(1, vec![AdminRole::Viewer]).await;
    let dir = tempfile::tempdir().unwrap();
    let key = kinko_audit::load_or_create_key(&dir.path().join("k")).unwrap();
    let log = kinko_audit::AuditLog::open(dir.path(), key).unwrap();
    let trail = kinko_api::trail::Trail::new(log);
    assert!(s.gateway.trail.set(trail.clone()).is_ok());
    let target = &s.users[2];
    let lookup = json!({"query": target.email});
    let freeze_path = format!("/api/v1/ops/customers/{}/freeze", target.id.0);

    // Who may call.
    for (path, method, body) in [
        ("/api/v1/ops/customers/lookup", Method::POST, Some(lookup.clone())),
        ("/api/v1/ops/platform", Method::GET, None),
    ] {
        let (st, r) = s.request(method.clone(), path, None, body.clone()).await;
        assert_eq!(st, 401, "{path}: {r}");
        let (st, r) = s
            .request(method.clone(), path, Some(&s.users[0].token), body.clone())
            .await;
        assert_eq!(st, 403, "{path} with an API key: {r}");
        let (st, r) = s
            .request(method.clone(), path, Some(&target.session), body.clone())
            .await;
        assert_eq!(
            (st, r["code"].as_str()),
            (403, Some("ROLE_REQUIRED")),
            "{path}: {r}"
        );
    }
    assert_eq!(trail.size(), 0, "nothing read, nothing recorded");

    // A viewer reads (recorded); nobody is 404.
    let (st, r) = s
        .request(
            Method::POST,
            "/api/v1/ops/customers/lookup",
            Some(&s.users[1].session),
            Some(lookup.clone()),
        )
        .await;
    assert_eq!((st, &r["user_id"]), (200, &json!(target.id.0.to_string())), "{r}");
    assert_eq!(r["status"], "active");
    assert!(audited(
        dir.path(),
        "ops.read_customer",
        &format!("admin:{}", s.users[1].id.0),
        &format!("user:{}", target.id.0)
    ));
    let (st, r) = s
        .request(
            Method::POST,
            "/api/v1/ops/customers/lookup",
            Some(&s.users[1].session),
            Some(json!({"query": "nobody@kinko.test"})),
        )
        .await;
    assert_eq!((st, r["code"].as_str()), (404, Some("USER_NOT_FOUND")), "{r}");
    let (st, r) = s
        .request(
            Method::GET,
            "/api/v1/ops/platform",
            Some(&s.users[1].session),
            None,
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["assets"].as_array().unwrap().len(), 3, "{r}");

    // A viewer may not freeze; a TOTP code is not an admin's proof; the passkey is.
    let (st, r) = s
        .with_step_up_as(
            &s.users[1],
            &s.users[1].session,
            Factor::Passkey,
            Method::POST,
            &freeze_path,
            json!({"reason": "drill"}),
        )
        .await;
    assert_eq!((st, r["code"].as_str()), (403, Some("ROLE_REQUIRED")), "{r}");
    let (st, r) = s
        .with_step_up_as(
            &s.users[0],
            &s.users[0].session,
            Factor::Totp,
            Method::POST,
            &freeze_path,
            json!({"reason": "drill"}),
        )
        .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (403, Some("ADMIN_PASSKEY_REQUIRED")),
        "{r}"
    );
    s.gateway.caught_up().await.unwrap();
    let status = |s: &TestServer| {
        s.gateway
            .read
            .model()
            .engine
            .identity()
            .user(target.id)
            .unwrap()
            .status
    };
    assert_eq!(status(&s), UserStatus::Active);
    let (st, r) = s
        .with_step_up_as(
            &s.users[0],
            &s.users[0].session,
            Factor::Passkey,
            Method::POST,
            &freeze_path,
            json!({"reason": "drill"}),
        )
        .await;
    assert_eq!(st, 204, "{r}");
    s.gateway.caught_up().await.unwrap();
    assert_eq!(status(&s), UserStatus::Frozen);
    assert!(audited(
        dir.path(),
        "ops.freeze_user",
        &format!("admin:{}", s.users[0].id.0),
        &format!("user:{}", target.id.0)
    ));
    let (st, r) = s
        .with_step_up_as(
            &s.users[0],
            &s.users[0].session,
            Factor::Passkey,
            Method::POST,
            &freeze_path,
            json!({"reason": "again"}),
        )
        .await;
    assert_eq!(r["code"], "ACCOUNT_FROZEN", "{st} {r}");

    // The audit log cannot be written: the lookup is refused and shows nothing.
    let entries = dir.path().join(kinko_audit::ENTRIES_FILE);
    std::fs::remove_file(&entries).unwrap();
    std::fs::create_dir(&entries).unwrap();
    let (st, r) = s
        .request(
            Method::POST,
            "/api/v1/ops/customers/lookup",
            Some(&s.users[1].session),
            Some(lookup),
        )
        .await;
    assert_eq!((st, r["code"].as_str()), (503, Some("AUDIT_UNAVAILABLE")), "{r}");
    assert!(r.get("email").is_none());
    s.stop().await;
}
