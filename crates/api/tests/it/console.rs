//! The operators' console (`crates/api/src/web/console.*`) in a real headless Chromium against a
//! real gateway. Two admins, each with a passkey made by the tab's CDP virtual authenticator and
//! enrolled through the account page (the harness's software passkeys never reach the browser),
//! admin B also with an authenticator app. A customer's withdrawal is held for review by a rule
//! with dual approval, and an incident is open.
//!
//! Admin A signs in (password, passkey), sees the incident and the held withdrawal with the rule
//! that fired, approves it (still in review, 1/2), approves again (ALREADY_REVIEWED on the page),
//! halts BTC (the status shows it) and proposes to resume it: the page does not offer A the
//! approval of A's own proposal, and the server refuses it anyway (OWN_PROPOSAL). Admin B, in
//! another tab, approves the withdrawal (approved), approves the proposal (BTC resumes) and
//! resolves the incident with the passkey, the step-up dialog offering B no code field although
//! B has an authenticator app (admin actions take only a passkey); A's tab sees all of it by polling. B signs out:
//! nothing stays on the page and the polling stops. Every step is checked on the page and in the
//! engine's state.
//!
//! Another signs in an admin who has no passkey yet: the console says admin actions need one,
//! and a halt is refused (ADMIN_PASSKEY_REQUIRED) until one is added on the account page.
//!
//! A second test gives the step-up dialog (stepup.js, shared with the account page) a recovery
//! code: the console sends it, and the server refuses it for an operator action
//! (ADMIN_PASSKEY_REQUIRED).
//!
//! The pages are opened as `http://localhost:<port>` (WebAuthn refuses IP-address origins).

use crate::browser::{Browser, Page};
use crate::harness::{TestServer, User, BTC};
use crate::native::usable_address;
use kinko_core::admin::{IncidentStatus, ProposalStatus};
use kinko_core::engine::{Command, Reply};
use kinko_core::identity::{AdminRole, IdentityCommand};
use kinko_core::risk::{AssetRisk, Condition, Decision, RiskPolicy, RiskRule};
use kinko_core::wallet::{WithdrawalId, WithdrawalStatus};
use kinko_core::Amount;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

/// How long the page may take to reach a state after a click.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
/// The console's refresh interval (`POLL_MS` in console.js).
const CONSOLE_POLL: Duration = Duration::from_millis(3000);

const RULE: &str = "large-withdrawals-reviewed";
const SUMMARY: &str = "spend of hot coins <img src=x id=injected> matching no withdrawal";

pub(crate) async fn eval(b: &mut Browser, page: &Page, js: &str) -> Value {
    b.eval(page, js)
        .await
        .unwrap_or_else(|e| panic!("evaluating `{js}`: {e}"))
}

/// Evaluates `js` until it gives something other than null, false or "" (bounded by [`WAIT`]);
/// on timeout the failure names `what` and quotes the page's notice line.
pub(crate) async fn wait_for(b: &mut Browser, page: &Page, js: &str, what: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = eval(b, page, js).await;
        if !(v.is_null() || v == json!(false) || v == json!("")) {
            return v;
        }
        if Instant::now() >= deadline {
            let notice = b
                .eval(page, "document.getElementById('notice')?.textContent")
                .await;
            panic!("{what}: not within {WAIT:?} (`{js}` gave {v}); the page says {notice:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

pub(crate) fn q(selector: &str) -> String {
    format!("document.querySelector({})", json!(selector))
}

/// The element's text, or null when there is none.
pub(crate) fn text_js(selector: &str) -> String {
    format!("({}?.textContent ?? null)", q(selector))
}

pub(crate) async fn text(b: &mut Browser, page: &Page, selector: &str) -> Value {
    eval(b, page, &text_js(selector)).await
}

pub(crate) async fn fill(b: &mut Browser, page: &Page, selector: &str, value: &str) {
    let done = eval(
        b,
        page,
        &format!(
            "(() => {{ const e = {}; if (!e) return false; e.value = {}; return e.value === {1}; }})()",
            q(selector),
            json!(value)
        ),
    )
    .await;
    assert_eq!(done, json!(true), "{selector} is missing or refused {value:?}");
}

/// Clicks an element that is shown and enabled.
pub(crate) async fn click(b: &mut Browser, page: &Page, selector: &str) {
    let clicked = eval(
        b,
        page,
        &format!(
            "(() => {{ const e = {}; if (!e || !e.checkVisibility() || e.disabled) return false; \
             e.click(); return true; }})()",
            q(selector)
        ),
    )
    .await;
    assert_eq!(
        clicked,
        json!(true),
        "{selector} is missing, not shown or disabled"
    );
}

pub(crate) fn shown_js(selector: &str) -> String {
    format!("({}?.checkVisibility() ?? false)", q(selector))
}

async fn shown(b: &mut Browser, page: &Page, selector: &str) -> bool {
    eval(b, page, &shown_js(selector)).await == json!(true)
}

async fn clear_notice(b: &mut Browser, page: &Page) {
    eval(b, page, "document.getElementById('notice').textContent = ''").await;
}

/// Waits for the notice line to start with `prefix`; returns it.
pub(crate) async fn notice(b: &mut Browser, page: &Page, prefix: &str) -> String {
    let v = wait_for(
        b,
        page,
        &format!(
            "(() => {{ const t = document.getElementById('notice').textContent; return t.startsWith({}) ? t : null; }})()",
            json!(prefix)
        ),
        &format!("the notice says {prefix:?}"),
    )
    .await;
    v.as_str().unwrap().to_owned()
}

/// Answers the console's text question (a reason, a resolution) whose title starts with `title`.
async fn answer(b: &mut Browser, page: &Page, title: &str, text: &str) {
    wait_for(
        b,
        page,
        "document.getElementById('ask').open",
        "the question opens",
    )
    .await;
    let t = eval(b, page, "document.getElementById('ask-title').textContent").await;
    assert!(
        t.as_str().unwrap().starts_with(title),
        "asked {t}, expected {title:?}"
    );
    fill(b, page, "#ask-text", text).await;
    click(b, page, "#ask-ok").await;
}

/// Answers the step-up dialog for `what` with the passkey (the tab's virtual authenticator).
pub(crate) async fn confirm_with_passkey(b: &mut Browser, page: &Page, what: &str) {
    wait_for(
        b,
        page,
        "document.getElementById('stepup').open",
        "the step-up dialog opens",
    )
    .await;
    assert_eq!(text(b, page, "#stepup-what").await, json!(what));
    click(b, page, "#stepup-passkey").await;
}

/// Gives `user` a passkey through the account page in this tab (the tab's virtual
/// authenticator makes it), keeping the recovery codes it brings, and with `totp` an
/// authenticator app too (confirmed with the passkey); signs out of the account page again.
pub(crate) async fn enrol(b: &mut Browser, page: &Page, s: &TestServer, user: &mut User, totp: bool) {
    b.navigate(page, &format!("{}/", s.origin)).await.unwrap();
    wait_for(b, page, &shown_js("#signin"), "the account page's sign-in form").await;
    fill(b, page, "#email", &user.email).await;
    fill(b, page, "#password", &user.password).await;
    click(b, page, "#login").await;
    let passkeys = "(document.querySelector('dd[data-fact=\"Passkeys\"]')?.textContent ?? null)";
    wait_for(b, page, &format!("{passkeys} === '0'"), "the account panel").await;
    click(b, page, "#passkey-add").await;
    wait_for(b, page, &format!("{passkeys} === '1'"), "the passkey is enrolled").await;
    let codes = text(b, page, "#recovery-codes").await;
    user.recovery_codes = codes.as_str().unwrap().lines().map(str::to_owned).collect();
    assert_eq!(user.recovery_codes.len(), 10, "{codes}");
    if totp {
        click(b, page, "#totp-begin").await;
        let secret = wait_for(b, page, &text_js("#totp-secret"), "the TOTP secret").await;
        user.totp_secret = kinko_api::totp::base32_decode(secret.as_str().unwrap()).unwrap();
        let (_, code) = user.totp().await;
        fill(b, page, "#totp-code", &code).await;
        click(b, page, "#totp-confirm").await;
        wait_for(
            b,
            page,
            "document.getElementById('stepup').open",
            "the account page's step-up",
        )
        .await;
        click(b, page, "#stepup-passkey").await;
        wait_for(
            b,
            page,
            "document.querySelector('dd[data-fact=\"Authenticator app\"]')?.textContent === 'on'",
            "the authenticator app is enrolled",
        )
        .await;
    }
    click(b, page, "#logout").await;
    wait_for(b, page, &shown_js("#signin"), "signed out of the account page").await;
}

/// Signs in to the console: email and password, then the passkey.
pub(crate) async fn console_sign_in(b: &mut Browser, page: &Page, s: &TestServer, user: &User) {
    b.navigate(page, &format!("{}/console", s.origin)).await.unwrap();
    assert_eq!(eval(b, page, "window.isSecureContext").await, json!(true));
    wait_for(b, page, &shown_js("#signin"), "the console's sign-in form").await;
    assert!(!shown(b, page, "#console").await);
    fill(b, page, "#email", &user.email).await;
    fill(b, page, "#password", &user.password).await;
    click(b, page, "#login").await;
    wait_for(b, page, &shown_js("#second"), "the second-factor panel").await;
    assert_eq!(
        eval(b, page, "document.getElementById('password').value").await,
        json!("")
    );
    click(b, page, "#second-passkey").await;
    wait_for(
        b,
        page,
        &format!(
            "{} && document.getElementById('who').textContent === {}",
            shown_js("#console"),
            json!(user.email)
        ),
        "the console after the passkey",
    )
    .await;
    assert_eq!(eval(b, page, "document.body.dataset.polling").await, json!("on"));
}

/// Where the console shows whether BTC withdrawals run.
const BTC_STATUS: &str = "#asset-status [data-asset-status=\"BTC\"]";

/// Fills the halt form for BTC with `reason` and submits it: the step-up dialog comes next.
async fn submit_btc_halt(b: &mut Browser, page: &Page, reason: &str) {
    wait_for(
        b,
        page,
        &q("#halt-asset option[value=\"BTC\"]"),
        "BTC among the assets",
    )
    .await;
    fill(b, page, "#halt-asset", "BTC").await;
    fill(b, page, "#halt-reason", reason).await;
    click(b, page, "#halt-submit").await;
}

/// Confirms the submitted halt of BTC with the passkey; waits for the page to show it halted.
async fn confirm_btc_halt(b: &mut Browser, page: &Page) {
    confirm_with_passkey(b, page, "halt withdrawals of BTC").await;
    notice(b, page, "Withdrawals of BTC halted.").await;
    wait_for(
        b,
        page,
        &format!("{}?.dataset.withdrawals === 'halted'", q(BTC_STATUS)),
        "BTC halted on the status",
    )
    .await;
}

/// Whether BTC withdrawals run, once the read model has caught up.
async fn btc_withdrawals_run(s: &TestServer) -> bool {
    s.gateway.caught_up().await.unwrap();
    let m = s.gateway.read.model();
    m.engine.asset(BTC).unwrap().switches.withdrawals
}

/// The console's session token in this tab.
pub(crate) async fn console_token(b: &mut Browser, page: &Page) -> String {
    let t = eval(b, page, "sessionStorage.getItem('kinko.console.token')").await;
    t.as_str().expect("a console session token").to_owned()
}

fn row(table: &str, id: impl std::fmt::Display) -> String {
    format!("#{table} tr[data-id=\"{id}\"]")
}

fn field(row: &str, name: &str) -> String {
    format!("{row} [data-field=\"{name}\"]")
}

pub(crate) async fn set_roles(s: &TestServer, user: &User) {
    s.gateway
        .submit(Command::Identity(IdentityCommand::SetRoles {
            user: user.id,
            roles: vec![AdminRole::Risk, AdminRole::SecurityAdmin],
            requested_by: "operator".into(),
            reason: "console test".into(),
        }))
        .await
        .unwrap()
        .reply
        .unwrap();
}

/// The headers of the console's files and of the shared step-up script: the account page's
/// strict ones. Both pages load the shared script, then their own.
async fn check_headers(s: &TestServer) {
    let headers = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let home = s.client.get(s.url("/")).send().await.unwrap();
    for (path, content_type) in [
        ("/console", "text/html; charset=utf-8"),
        ("/console.js", "text/javascript; charset=utf-8"),
        ("/console.css", "text/css; charset=utf-8"),
        ("/stepup.js", "text/javascript; charset=utf-8"),
        ("/console.i18n.js", "text/javascript; charset=utf-8"),
    ] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(headers(&r, "content-type"), content_type, "{path}");
        for h in [
            "content-security-policy",
            "x-frame-options",
            "referrer-policy",
            "x-content-type-options",
            "cache-control",
        ] {
            assert!(!headers(&r, h).is_empty(), "{path}: no {h}");
            assert_eq!(headers(&r, h), headers(&home, h), "{path}: {h}");
        }
        assert!(
            headers(&r, "content-security-policy").contains("script-src 'self';"),
            "{path}"
        );
    }
    // Both pages load the shared step-up script, then their own (the console its strings
    // first), and nothing inline.
    for (path, scripts_wanted) in [
        ("/console", &["/console.i18n.js", "/stepup.js", "/console.js"][..]),
        ("/", &["/stepup.js", "/app.js"][..]),
    ] {
        let html = s
            .client
            .get(s.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            !html.contains("<script>") && !html.contains(" style="),
            "{path}: inline script or style"
        );
        let scripts: Vec<&str> = html
            .split("<script src=\"")
            .skip(1)
            .map(|t| t.split('"').next().unwrap())
            .collect();
        assert_eq!(scripts, scripts_wanted, "{path}: the scripts it loads");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_console_reviews_halts_resumes_and_resolves_with_two_admins() {
    let started = std::time::Instant::now();
    let s = TestServer::start(1).await;
    let customer = s.users[0].id;
    // The treasury quorum that whitelists the customer's address, before two security admins
    // close the operator's bootstrap.
    s.quorum().await;
    let mut a = s.register("admin-a@kinko.test").await;
    let mut bb = s.register("admin-b@kinko.test").await;
    set_roles(&s, &a).await;
    set_roles(&s, &bb).await;
    // Every withdrawal is held for review; from 1 BTC it needs two reviewers.
    s.gateway
        .submit(Command::SetRiskPolicy(RiskPolicy {
            rules: vec![RiskRule {
                name: RULE.into(),
                asset: None,
                when: Condition::Always,
                then: Decision::Review,
            }],
            assets: vec![AssetRisk {
                asset: BTC,
                dual_approval_from: Amount(100_000_000),
                hot_outflow_per_hour: Amount(u128::MAX),
            }],
            ..RiskPolicy::default()
        }))
        .await
        .unwrap()
        .reply
        .unwrap();
    let to = usable_address(&s, customer, &s.btc_usd_address.clone()).await;
    let (st, w) = s
        .with_step_up(
            0,
            Method::POST,
            "/api/v1/withdrawals",
            json!({"address_id": to.to_string(), "amount": "1.5"}),
        )
        .await;
    assert_eq!((st, w["status"].as_str()), (200, Some("review")), "{w}");
    let wid: u64 = w["id"].as_str().unwrap().parse().unwrap();
    let txid = "ab".repeat(32);
    let Reply::Incident(incident) = s
        .gateway
        .submit(Command::OpenIncident {
            kind: "unapproved_outflow".into(),
            asset: Some(BTC),
            summary: SUMMARY.into(),
            txids: vec![txid.clone()],
            missing: Amount(50_000_000),
            opened_by: "system:reconcile".into(),
            halt: false,
        })
        .await
        .unwrap()
        .reply
        .unwrap()
    else {
        panic!("OpenIncident answers the incident")
    };
    check_headers(&s).await;
    let setup = started.elapsed();

    let mut b = Browser::launch().await.unwrap_or_else(|e| {
        panic!("chromium is needed for the console test: run scripts/install-test-deps ({e})")
    });
    let pa = b.new_page().await.unwrap();
    b.add_virtual_authenticator(&pa).await.unwrap();
    enrol(&mut b, &pa, &s, &mut a, false).await;

    // 1. Admin A signs in: the alerts show the open incident, its split and its transaction;
    // the status shows BTC running. The summary's markup is text, not elements.
    console_sign_in(&mut b, &pa, &s, &a).await;
    let alert = format!("#open-incidents [data-incident=\"{}\"]", incident.id);
    wait_for(&mut b, &pa, &q(&alert), "the incident among the alerts").await;
    let fmt = |x: Amount| kinko_api::wire::fmt_amount(x.0, 8);
    assert_eq!(
        text(&mut b, &pa, &format!("{alert} h3")).await,
        json!(format!("Incident {}: unapproved_outflow", incident.id))
    );
    assert_eq!(text(&mut b, &pa, &field(&alert, "asset")).await, json!("BTC"));
    assert_eq!(
        text(&mut b, &pa, &field(&alert, "missing")).await,
        json!("0.50000000")
    );
    assert_eq!(
        text(&mut b, &pa, &field(&alert, "customer_share")).await,
        json!(fmt(incident.customer_share))
    );
    assert_eq!(
        text(&mut b, &pa, &field(&alert, "company_share")).await,
        json!(fmt(incident.company_share))
    );
    assert_eq!(
        incident.customer_share.0 + incident.company_share.0,
        50_000_000,
        "the split adds up"
    );
    assert_eq!(text(&mut b, &pa, &field(&alert, "txids")).await, json!(txid));
    assert!(text(&mut b, &pa, &field(&alert, "opened_at"))
        .await
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(text(&mut b, &pa, &field(&alert, "summary")).await, json!(SUMMARY));
    assert_eq!(
        eval(
            &mut b,
            &pa,
            "document.querySelectorAll('#injected, main img').length"
        )
        .await,
        json!(0)
    );
    assert!(!shown(&mut b, &pa, "#no-alerts").await);
    assert!(!shown(&mut b, &pa, "#global-halt").await);
    assert_eq!(
        eval(&mut b, &pa, &format!("{}.dataset.withdrawals", q(BTC_STATUS))).await,
        json!("running")
    );
    assert_eq!(
        text(&mut b, &pa, &field(&row("incidents", incident.id), "status")).await,
        json!("open")
    );

    // 2. The review queue: the held withdrawal with the rule that fired and 0 of 2 approvals.
    let held = row("held", wid);
    wait_for(&mut b, &pa, &q(&held), "the held withdrawal").await;
    assert_eq!(text(&mut b, &pa, &field(&held, "rule")).await, json!(RULE));
    assert_eq!(
        text(&mut b, &pa, &field(&held, "decision")).await,
        json!("review")
    );
    assert_eq!(
        text(&mut b, &pa, &field(&held, "amount")).await,
        json!("1.50000000 BTC")
    );
    assert_eq!(
        text(&mut b, &pa, &field(&held, "address")).await,
        json!(s.btc_usd_address)
    );
    assert_eq!(
        text(&mut b, &pa, &field(&held, "user_id")).await,
        json!(customer.0.to_string())
    );
    assert_eq!(text(&mut b, &pa, &field(&held, "approvals")).await, json!("0/2"));
    assert!(!text(&mut b, &pa, &field(&held, "reason"))
        .await
        .as_str()
        .unwrap()
        .is_empty());

    // 3. A approves (reason, passkey): one of two approvals, still in review.
    let approve = format!("{held} button[data-act=\"approve\"]");
    click(&mut b, &pa, &approve).await;
    answer(
        &mut b,
        &pa,
        &format!("Approve withdrawal {wid}"),
        "destination checked with the customer",
    )
    .await;
    confirm_with_passkey(&mut b, &pa, &format!("approve withdrawal {wid}")).await;
    notice(&mut b, &pa, &format!("Withdrawal {wid} approved by you: 1 of 2")).await;
    wait_for(
        &mut b,
        &pa,
        &format!("{} === '1/2 (you approved)'", text_js(&field(&held, "approvals"))),
        "1/2 on the page",
    )
    .await;
    s.gateway.caught_up().await.unwrap();
    {
        let m = s.gateway.read.model();
        let w = m.engine.wallet().withdrawal(WithdrawalId(wid)).unwrap();
        assert_eq!(
            (w.status, w.approvals.clone()),
            (WithdrawalStatus::Review, vec![a.id])
        );
    }

    // 4. Again: the server refuses, the page says why with the stable code.
    clear_notice(&mut b, &pa).await;
    click(&mut b, &pa, &approve).await;
    answer(&mut b, &pa, &format!("Approve withdrawal {wid}"), "once more").await;
    confirm_with_passkey(&mut b, &pa, &format!("approve withdrawal {wid}")).await;
    notice(&mut b, &pa, "ALREADY_REVIEWED: ").await;
    assert_eq!(
        eval(&mut b, &pa, "document.getElementById('notice').className").await,
        json!("error")
    );
    assert_eq!(
        eval(&mut b, &pa, "document.getElementById('notice').dataset.code").await,
        json!("ALREADY_REVIEWED")
    );

    // 5. A halts BTC (reason, passkey): the status shows it at once.
    submit_btc_halt(&mut b, &pa, "unapproved outflow under investigation").await;
    confirm_btc_halt(&mut b, &pa).await;
    assert!(!shown(&mut b, &pa, "#global-halt").await);
    s.gateway.caught_up().await.unwrap();
    {
        let m = s.gateway.read.model();
        assert!(!m.engine.asset(BTC).unwrap().switches.withdrawals);
        assert_eq!(m.engine.admin().global_halt, None);
    }

    // 6. A proposes to resume BTC (passkey); the proposal is listed as A's own and A cannot
    // approve it: the button is disabled, and the server refuses it anyway.
    fill(&mut b, &pa, "#resume-asset", "BTC").await;
    fill(&mut b, &pa, "#resume-reason", "outflow explained: a sweep").await;
    click(&mut b, &pa, "#resume-submit").await;
    confirm_with_passkey(&mut b, &pa, "propose resuming withdrawals of BTC").await;
    notice(&mut b, &pa, "Proposal ").await;
    let pid = wait_for(
        &mut b,
        &pa,
        "document.querySelector('#proposals tr[data-kind=\"resume_withdrawals\"][data-status=\"open\"]')?.dataset.id ?? null",
        "the open proposal",
    )
    .await;
    let pid: u64 = pid.as_str().unwrap().parse().unwrap();
    let prow = row("proposals", pid);
    assert_eq!(
        text(&mut b, &pa, &format!("{} span", field(&prow, "change"))).await,
        json!("resume withdrawals of BTC")
    );
    assert_eq!(
        text(&mut b, &pa, &field(&prow, "proposer")).await,
        json!(format!("you (user {})", a.id.0))
    );
    assert_eq!(text(&mut b, &pa, &field(&prow, "status")).await, json!("open"));
    let approve_proposal = format!("{prow} button[data-act=\"approve-proposal\"]");
    assert_eq!(
        eval(&mut b, &pa, &format!("{}.disabled", q(&approve_proposal))).await,
        json!(true)
    );
    clear_notice(&mut b, &pa).await;
    eval(&mut b, &pa, &format!("{}.disabled = false", q(&approve_proposal))).await;
    click(&mut b, &pa, &approve_proposal).await;
    confirm_with_passkey(
        &mut b,
        &pa,
        &format!("approve proposal {pid}: resume withdrawals of BTC"),
    )
    .await;
    notice(&mut b, &pa, "OWN_PROPOSAL: ").await;
    s.gateway.caught_up().await.unwrap();
    {
        let m = s.gateway.read.model();
        let p = m.engine.admin().proposal(pid).unwrap();
        assert_eq!(
            (p.status, p.proposer, p.approver),
            (ProposalStatus::Open, a.id, None)
        );
        assert!(!m.engine.asset(BTC).unwrap().switches.withdrawals);
    }
    let a_done = started.elapsed();
    // The console as A sees it now (target/web-console.png): the incident, BTC halted, the
    // review queue, the open proposal.
    eval(&mut b, &pa, "window.scrollTo(0, 0)").await;
    let png = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/web-console.png");
    b.screenshot(&pa, &png).await.unwrap();
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));

    // 7. Admin B, in a tab of their own, with a passkey and an authenticator app.
    let pb = b.new_page().await.unwrap();
    b.add_virtual_authenticator(&pb).await.unwrap();
    enrol(&mut b, &pb, &s, &mut bb, true).await;
    console_sign_in(&mut b, &pb, &s, &bb).await;
    let held_b = row("held", wid);
    wait_for(
        &mut b,
        &pb,
        &format!("{} === '1/2'", text_js(&field(&held_b, "approvals"))),
        "A's approval seen by B",
    )
    .await;
    click(&mut b, &pb, &format!("{held_b} button[data-act=\"approve\"]")).await;
    answer(
        &mut b,
        &pb,
        &format!("Approve withdrawal {wid}"),
        "second look: fine",
    )
    .await;
    confirm_with_passkey(&mut b, &pb, &format!("approve withdrawal {wid}")).await;
    notice(&mut b, &pb, &format!("Withdrawal {wid} is now approved.")).await;
    wait_for(
        &mut b,
        &pb,
        &format!("{} === null", q(&held_b)),
        "the withdrawal leaves the queue",
    )
    .await;
    s.gateway.caught_up().await.unwrap();
    {
        let m = s.gateway.read.model();
        let w = m.engine.wallet().withdrawal(WithdrawalId(wid)).unwrap();
        assert_eq!(
            (w.status, w.approvals.clone()),
            (WithdrawalStatus::Approved, vec![a.id, bb.id])
        );
    }

    // 8. B approves A's proposal (passkey): BTC withdrawals resume.
    let prow_b = row("proposals", pid);
    assert_eq!(
        text(&mut b, &pb, &field(&prow_b, "proposer")).await,
        json!(format!("user {}", a.id.0))
    );
    click(
        &mut b,
        &pb,
        &format!("{prow_b} button[data-act=\"approve-proposal\"]"),
    )
    .await;
    confirm_with_passkey(
        &mut b,
        &pb,
        &format!("approve proposal {pid}: resume withdrawals of BTC"),
    )
    .await;
    notice(&mut b, &pb, &format!("Proposal {pid} is executed")).await;
    wait_for(
        &mut b,
        &pb,
        &format!("{}?.dataset.withdrawals === 'running'", q(BTC_STATUS)),
        "BTC running again",
    )
    .await;
    assert_eq!(
        text(&mut b, &pb, &field(&prow_b, "status")).await,
        json!("executed")
    );
    assert_eq!(
        text(&mut b, &pb, &field(&prow_b, "approver")).await,
        json!(format!("user {}", bb.id.0))
    );
    s.gateway.caught_up().await.unwrap();
    {
        let m = s.gateway.read.model();
        let p = m.engine.admin().proposal(pid).unwrap();
        assert_eq!((p.status, p.approver), (ProposalStatus::Executed, Some(bb.id)));
        assert!(m.engine.asset(BTC).unwrap().switches.withdrawals);
    }

    // 9. B resolves the incident, confirmed with the authenticator app this time.
    let irow = row("incidents", incident.id);
    click(&mut b, &pb, &format!("{irow} button[data-act=\"resolve\"]")).await;
    answer(
        &mut b,
        &pb,
        &format!("Resolve incident {}", incident.id),
        "a sweep to cold storage, recorded late",
    )
    .await;
    wait_for(
        &mut b,
        &pb,
        "document.getElementById('stepup').open",
        "the step-up dialog opens",
    )
    .await;
    assert_eq!(
        text(&mut b, &pb, "#stepup-what").await,
        json!(format!("resolve incident {}", incident.id))
    );
    // B has an authenticator app too, but admin actions take only the passkey: the dialog
    // offers no code field.
    assert!(shown(&mut b, &pb, "#stepup-passkey").await);
    assert!(!shown(&mut b, &pb, "#stepup-code-label").await);
    assert!(!shown(&mut b, &pb, "#stepup-totp").await);
    click(&mut b, &pb, "#stepup-passkey").await;
    notice(&mut b, &pb, &format!("Incident {} is resolved.", incident.id)).await;
    wait_for(
        &mut b,
        &pb,
        &format!("{} === 'resolved'", text_js(&field(&irow, "status"))),
        "the incident resolved",
    )
    .await;
    assert!(shown(&mut b, &pb, "#no-alerts").await);
    s.gateway.caught_up().await.unwrap();
    {
        let m = s.gateway.read.model();
        let i = m
            .engine
            .admin()
            .incidents
            .iter()
            .find(|i| i.id == incident.id)
            .unwrap();
        assert_eq!(i.status, IncidentStatus::Resolved);
        assert_eq!(
            i.resolution.as_deref(),
            Some("a sweep to cold storage, recorded late")
        );
        assert_eq!(m.engine.admin().open_incidents().count(), 0);
    }

    // 10. B signs out: nothing stays on the page, and the polling stops (no request after the
    // sign-out's own, over more than one refresh interval).
    let token_b = console_token(&mut b, &pb).await;
    eval(
        &mut b,
        &pb,
        "window.seen = []; const f = window.fetch; \
         window.fetch = (u, o) => { window.seen.push(((o && o.method) || 'GET') + ' ' + u); return f(u, o); }",
    )
    .await;
    click(&mut b, &pb, "#logout").await;
    let signed_out = Instant::now();
    wait_for(
        &mut b,
        &pb,
        &shown_js("#signin"),
        "the sign-in form after sign-out",
    )
    .await;
    let left = eval(
        &mut b,
        &pb,
        "({ token: sessionStorage.getItem('kinko.console.token'), \
            who: document.getElementById('who').textContent, \
            password: document.getElementById('password').value, \
            alerts: document.getElementById('open-incidents').childElementCount, \
            status: document.getElementById('asset-status').childElementCount, \
            held: document.getElementById('held').childElementCount, \
            proposals: document.getElementById('proposals').childElementCount, \
            incidents: document.getElementById('incidents').childElementCount, \
            console: document.getElementById('console').checkVisibility(), \
            polling: document.body.dataset.polling })",
    )
    .await;
    assert_eq!(
        left,
        json!({"token": null, "who": "", "password": "", "alerts": 0, "status": 0, "held": 0,
            "proposals": 0, "incidents": 0, "console": false, "polling": "off"}),
        "left on the page after sign-out"
    );

    // Meanwhile A's tab has seen all of it by polling.
    wait_for(
        &mut b,
        &pa,
        &format!(
            "{}?.dataset.withdrawals === 'running' && {} === null && {} === 'executed' && \
             document.getElementById('no-alerts').checkVisibility()",
            q(BTC_STATUS),
            q(&held),
            text_js(&field(&prow, "status"))
        ),
        "A's page catches up by polling",
    )
    .await;
    assert_eq!(
        text(&mut b, &pa, &field(&row("incidents", incident.id), "status")).await,
        json!("resolved")
    );

    let quiet = CONSOLE_POLL + Duration::from_millis(500);
    tokio::time::sleep_until(signed_out + quiet).await;
    assert_eq!(
        eval(&mut b, &pb, "window.seen").await,
        json!(["POST /api/v1/auth/logout"]),
        "requests after sign-out"
    );
    let (st, _) = s
        .request(Method::GET, "/api/v1/ops/incidents", Some(&token_b), None)
        .await;
    assert_eq!(st, 401, "B's session outlived the sign-out");

    let browser_done = started.elapsed();
    b.close_page(pb).await.unwrap();
    b.close_page(pa).await.unwrap();
    drop(b);
    s.stop().await;
    eprintln!(
        "console test: setup {setup:?}, admin A done at {a_done:?}, browser done at {browser_done:?}, total {:?}",
        started.elapsed()
    );
}

/// The console's step-up dialog takes a recovery code where the server offers one, and sends it
/// as the `step_up` answer. No operator action accepts a recovery code: the server offers one
/// only while a user must re-enrol a factor (and then opens no full session, which every
/// operator endpoint needs), and accepts one only to enrol a factor. So the tab's `fetch` adds
/// `recovery_code` to the methods of the real STEP_UP_REQUIRED answer (challenge and all else
/// untouched); the admin halts BTC with a recovery code in the dialog, the real gateway refuses
/// it (ADMIN_PASSKEY_REQUIRED: admin actions take only a passkey), BTC keeps running and the code stays unused. The passkey then
/// confirms the halt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_step_up_dialog_sends_a_recovery_code_which_operator_actions_refuse() {
    let s = TestServer::start(0).await;
    let mut admin = s.register("admin-recovery@kinko.test").await;
    set_roles(&s, &admin).await;
    let mut b = Browser::launch().await.unwrap_or_else(|e| {
        panic!("chromium is needed for the console test: run scripts/install-test-deps ({e})")
    });
    let page = b.new_page().await.unwrap();
    b.add_virtual_authenticator(&page).await.unwrap();
    enrol(&mut b, &page, &s, &mut admin, false).await;
    console_sign_in(&mut b, &page, &s, &admin).await;
    let token = console_token(&mut b, &page).await;

    // Every STEP_UP_REQUIRED answer offers a recovery code too; the halt requests are kept.
    eval(
        &mut b,
        &page,
        "window.halts = []; const f = window.fetch; \
         window.fetch = async (u, o) => { \
           if (String(u).endsWith('/ops/halt')) window.halts.push(JSON.parse(o.body)); \
           const r = await f(u, o); \
           if (r.status !== 403) return r; \
           const d = await r.clone().json(); \
           if (d.code !== 'STEP_UP_REQUIRED') return r; \
           d.step_up.methods.push('recovery_code'); \
           return new Response(JSON.stringify(d), { status: 403, headers: r.headers }); \
         }",
    )
    .await;

    submit_btc_halt(&mut b, &page, "key ceremony").await;
    wait_for(
        &mut b,
        &page,
        "document.getElementById('stepup').open",
        "the step-up dialog opens",
    )
    .await;
    assert_eq!(
        text(&mut b, &page, "#stepup-what").await,
        json!("halt withdrawals of BTC")
    );
    // The admin has a passkey and no authenticator app: no code field, a recovery code field.
    for (id, offered) in [
        ("#stepup-recovery-label", true),
        ("#stepup-totp", true),
        ("#stepup-passkey", true),
        ("#stepup-code-label", false),
    ] {
        assert_eq!(shown(&mut b, &page, id).await, offered, "{id}");
    }
    let code = admin.recovery_codes[0].clone();
    fill(&mut b, &page, "#stepup-recovery", &format!(" {code} ")).await;
    click(&mut b, &page, "#stepup-totp").await;
    notice(&mut b, &page, "ADMIN_PASSKEY_REQUIRED: ").await;
    let halts = eval(&mut b, &page, "window.halts").await;
    assert_eq!(
        halts,
        json!([
            {"asset": "BTC", "reason": "key ceremony"},
            {"asset": "BTC", "reason": "key ceremony", "step_up": {"recovery_code": code}},
        ])
    );
    assert_eq!(
        eval(&mut b, &page, "document.getElementById('stepup-recovery').value").await,
        json!(""),
        "the recovery code stays in the dialog"
    );
    assert!(btc_withdrawals_run(&s).await);
    let (st, me) = s.request(Method::GET, "/api/v1/me", Some(&token), None).await;
    assert_eq!((st, &me["recovery_codes_left"]), (200, &json!(10)), "{me}");

    // The passkey confirms the same halt.
    clear_notice(&mut b, &page).await;
    submit_btc_halt(&mut b, &page, "key ceremony").await;
    confirm_btc_halt(&mut b, &page).await;
    assert!(!btc_withdrawals_run(&s).await);

    b.close_page(page).await.unwrap();
    drop(b);
    s.stop().await;
}

/// Grants `role` to `who` through the operator API, as `kinko admin grant-role` does.
async fn grant_role(s: &TestServer, who: &str, role: &str) -> (u16, Value) {
    s.request(
        Method::POST,
        "/api/v1/admin/roles",
        Some(crate::harness::OPERATOR_TOKEN),
        Some(json!({"user": who, "role": role, "requested_by": "founder", "reason": "first admins"})),
    )
    .await
}

/// A server whose only admins come from the operator's bootstrap (`kinko admin grant-role`,
/// the operator API): two security admins granted, each signs in to the console with a passkey
/// made in the browser; a third grant is refused (ROLES_BOOTSTRAP_CLOSED), and the user without
/// a role stays out. A customer's account, frozen with one person's decision, cannot be
/// unfrozen by the operator's token (TWO_ADMINS_REQUIRED): admin A proposes it in the console
/// (passkey), admin B approves it in another tab (passkey), and only then is it active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_admins_bootstrapped_by_the_operator_sign_in_and_unfreeze_with_two() {
    let s = TestServer::start(1).await;
    let customer = s.users[0].id;
    let mut a = s.register("boot-a@kinko.test").await;
    let mut bb = s.register("boot-b@kinko.test").await;
    let c = s.register("boot-c@kinko.test").await;
    let (st, r) = grant_role(&s, &a.email, "security_admin").await;
    assert_eq!((st, r["roles"].clone()), (200, json!(["security_admin"])), "{r}");
    let (st, r) = grant_role(&s, &bb.id.0.to_string(), "security_admin").await;
    assert_eq!(st, 200, "{r}");
    let (st, r) = grant_role(&s, &c.email, "security_admin").await;
    assert_eq!(
        (st, r["code"].as_str()),
        (403, Some("ROLES_BOOTSTRAP_CLOSED")),
        "{r}"
    );
    {
        s.gateway.caught_up().await.unwrap();
        let m = s.gateway.read.model();
        assert!(m.engine.identity().user(c.id).unwrap().roles.is_empty());
    }
    // Frozen by one decision; the operator's token alone does not unfreeze.
    let status = |st: &'static str| {
        let s = &s;
        async move {
            s.request(
                Method::POST,
                &format!("/api/v1/admin/users/{}/status", customer.0),
                Some(crate::harness::OPERATOR_TOKEN),
                Some(json!({"status": st, "requested_by": "support", "reason": "customer call"})),
            )
            .await
        }
    };
    assert_eq!(status("frozen").await.0, 204);
    let (st, r) = status("active").await;
    assert_eq!(
        (st, r["code"].as_str()),
        (403, Some("TWO_ADMINS_REQUIRED")),
        "{r}"
    );
    s.gateway.caught_up().await.unwrap();
    let frozen = |s: &TestServer| {
        let m = s.gateway.read.model();
        m.engine.identity().user(customer).unwrap().status == kinko_core::identity::UserStatus::Frozen
    };
    assert!(frozen(&s));

    let mut b = Browser::launch().await.unwrap_or_else(|e| {
        panic!("chromium is needed for the console test: run scripts/install-test-deps ({e})")
    });
    let pa = b.new_page().await.unwrap();
    b.add_virtual_authenticator(&pa).await.unwrap();
    enrol(&mut b, &pa, &s, &mut a, false).await;
    console_sign_in(&mut b, &pa, &s, &a).await;
    // A proposes the unfreeze.
    fill(&mut b, &pa, "#unfreeze-user", &customer.0.to_string()).await;
    fill(&mut b, &pa, "#unfreeze-reason", "identity confirmed by phone").await;
    click(&mut b, &pa, "#unfreeze-submit").await;
    confirm_with_passkey(&mut b, &pa, &format!("propose unfreezing user {}", customer.0)).await;
    notice(&mut b, &pa, "Proposal ").await;
    let pid = wait_for(
        &mut b,
        &pa,
        "document.querySelector('#proposals tr[data-kind=\"unfreeze_user\"][data-status=\"open\"]')?.dataset.id ?? null",
        "the unfreeze proposal listed",
    )
    .await;
    let pid = pid.as_str().unwrap().to_owned();
    let prow = row("proposals", &pid);
    assert_eq!(
        text(&mut b, &pa, &format!("{} span", field(&prow, "change"))).await,
        json!(format!("unfreeze user {}", customer.0))
    );
    s.gateway.caught_up().await.unwrap();
    assert!(frozen(&s), "proposed is not done");

    // B, in a tab of their own, approves it.
    let pb = b.new_page().await.unwrap();
    b.add_virtual_authenticator(&pb).await.unwrap();
    enrol(&mut b, &pb, &s, &mut bb, false).await;
    console_sign_in(&mut b, &pb, &s, &bb).await;
    let prow_b = row("proposals", &pid);
    wait_for(&mut b, &pb, &q(&prow_b), "A's proposal seen by B").await;
    click(
        &mut b,
        &pb,
        &format!("{prow_b} button[data-act=\"approve-proposal\"]"),
    )
    .await;
    confirm_with_passkey(
        &mut b,
        &pb,
        &format!("approve proposal {pid}: unfreeze user {}", customer.0),
    )
    .await;
    notice(&mut b, &pb, &format!("Proposal {pid} is executed")).await;
    s.gateway.caught_up().await.unwrap();
    assert!(!frozen(&s), "unfrozen by two admins");
    {
        let m = s.gateway.read.model();
        assert_eq!(
            m.engine.identity().user(customer).unwrap().status,
            kinko_core::identity::UserStatus::Active
        );
    }
    b.close_page(pb).await.unwrap();
    b.close_page(pa).await.unwrap();
    drop(b);
    s.stop().await;
}

/// An admin who has no passkey yet signs in (a full session straight from the password: no
/// factor at all) and is told on the console that admin actions need a passkey; a halt is
/// refused with `ADMIN_PASSKEY_REQUIRED`, before any second-factor dialog, and BTC keeps
/// running. With a passkey added on the account page the notice is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_without_a_passkey_is_told_to_add_one_and_cannot_act() {
    let s = TestServer::start(0).await;
    let mut admin = s.register("admin-new@kinko.test").await;
    set_roles(&s, &admin).await;
    let mut b = Browser::launch().await.unwrap_or_else(|e| {
        panic!("chromium is needed for the console test: run scripts/install-test-deps ({e})")
    });
    let page = b.new_page().await.unwrap();
    b.add_virtual_authenticator(&page).await.unwrap();
    b.navigate(&page, &format!("{}/console", s.origin)).await.unwrap();
    wait_for(&mut b, &page, &shown_js("#signin"), "the console's sign-in form").await;
    fill(&mut b, &page, "#email", &admin.email).await;
    fill(&mut b, &page, "#password", &admin.password).await;
    click(&mut b, &page, "#login").await;
    wait_for(&mut b, &page, &shown_js("#console"), "the console").await;
    assert!(shown(&mut b, &page, "#passkey-needed").await);
    submit_btc_halt(&mut b, &page, "drill").await;
    notice(&mut b, &page, "ADMIN_PASSKEY_REQUIRED: ").await;
    assert!(!eval(&mut b, &page, "document.getElementById('stepup').open")
        .await
        .as_bool()
        .unwrap());
    assert!(btc_withdrawals_run(&s).await);
    click(&mut b, &page, "#logout").await;
    // A passkey from the account page, then the console again: no notice, and the halt works.
    enrol(&mut b, &page, &s, &mut admin, false).await;
    console_sign_in(&mut b, &page, &s, &admin).await;
    assert!(!shown(&mut b, &page, "#passkey-needed").await);
    submit_btc_halt(&mut b, &page, "drill").await;
    confirm_btc_halt(&mut b, &page).await;
    b.close_page(page).await.unwrap();
    drop(b);
    s.stop().await;
}
