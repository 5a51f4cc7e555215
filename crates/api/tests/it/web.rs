//! The account web page (`crates/api/src/web`) in a real headless Chromium with a CDP virtual
//! authenticator, against a real gateway: register, add a passkey, step-up confirmations with
//! WebAuthn assertions over action-bound challenges, a cancelled step-up, whitelisting a
//! withdrawal address, sign-out and sign-in with the passkey as second factor, the security
//! messages (anti-phishing code, freeze link) and the freeze link opened in the browser.
//!
//! The page is opened as `http://localhost:<port>` (WebAuthn refuses IP-address origins; the
//! gateway's default relying party is `localhost` with that origin). A missing chromium fails
//! the test: run `scripts/install-test-deps`.

use crate::browser::{Browser, Page};
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use kinko_api::password::Cost;
use kinko_api::server::Http;
use kinko_api::vault::Vault;
use kinko_api::{ApiConfig, AppState};
use kinko_core::engine::Command;
use kinko_core::identity::UserStatus;
use kinko_core::{AssetCode, UserId};
use kinko_engine::launch::{open, Node};
use kinko_engine::EngineConfig;
use kinko_sim::SimChain;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long the page may take to reach a state after a click.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

const EMAIL: &str = "web-user@kinko.test";
const PASSWORD: &str = "correct horse battery staple";
const ANTI_PHISHING: &str = "blue-otter 42";

/// A gateway on a loopback port with BTC (8 decimals) and USD (6), whose security messages go
/// to an outbox folder.
struct Server {
    dir: tempfile::TempDir,
    node: Node,
    gateway: AppState,
    http: Http,
    base: String,
    /// `http://localhost:<port>`: where the page is opened (the WebAuthn origin).
    origin: String,
    outbox: PathBuf,
    withdrawal_address: String,
    client: reqwest::Client,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut ec = EngineConfig::new(dir.path());
        ec.tick_ms = 20;
        let node = tokio::task::block_in_place(|| open(&ec)).unwrap();
        let sim = Arc::new(SimChain::new([7; 32], &["BTC"]));
        let mut config = ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ApiConfig::default()
        };
        // argon2id at a cost that keeps the test quick.
        config.identity.password_cost = Cost {
            memory_kib: 64,
            passes: 1,
        };
        let gateway = kinko_api::server::gateway(&node, Vault::from_key([6; 32]), config, sim.clone());
        for (code, decimals) in [("BTC", 8), ("USD", 6)] {
            gateway
                .submit(Command::DefineAsset {
                    code: AssetCode::new(code).unwrap(),
                    decimals,
                })
                .await
                .unwrap()
                .reply
                .unwrap();
        }
        let outbox = dir.path().join("outbox");
        gateway.set_mailer(Arc::new(kinko_api::mail::Outbox::new(&outbox)));
        gateway.set_ready(true);
        let http = Http::start(gateway.clone()).await.unwrap();
        Server {
            base: format!("http://{}", http.addr),
            origin: format!("http://localhost:{}", http.addr.port()),
            dir,
            node,
            gateway,
            http,
            outbox,
            withdrawal_address: sim.address("web/cold storage"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// One API request (on 127.0.0.1: only the page needs the `localhost` origin).
    async fn api(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rq = self.client.request(method, format!("{}/api/v1{path}", self.base));
        if let Some(t) = token {
            rq = rq.bearer_auth(t);
        }
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let resp = rq.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Stops the HTTP server and the sequencer (a final snapshot), then removes the data.
    async fn stop(self) {
        self.http.stop().await.unwrap();
        let node = self.node;
        tokio::task::block_in_place(|| node.sequencer.shutdown()).unwrap();
        drop(self.dir);
    }

    fn user_status(&self, user: UserId) -> UserStatus {
        let m = self.gateway.read.model();
        m.engine.identity().user(user).expect("the user exists").status
    }

    /// The outbox's messages to `to`, oldest first, as (file name, text).
    fn messages_to(&self, to: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir(&self.outbox) else {
            return out;
        };
        for e in dir {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".eml") || name.starts_with('.') {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            if text.lines().any(|l| l == format!("To: {to}")) {
                out.push((name, text));
            }
        }
        // `<stamp>-<kind>.eml` with a zero-padded stamp: names sort in sending order.
        out.sort();
        out
    }

    /// The messages to `to` once one of `kind` is among them.
    async fn wait_message(&self, to: &str, kind: &str) -> Vec<(String, String)> {
        let deadline = Instant::now() + WAIT;
        loop {
            let m = self.messages_to(to);
            if m.iter().any(|(name, _)| name.ends_with(&format!("-{kind}.eml"))) {
                return m;
            }
            let names: Vec<&String> = m.iter().map(|(n, _)| n).collect();
            assert!(
                Instant::now() < deadline,
                "no {kind} message to {to} within {WAIT:?}; messages: {names:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Evaluates `js` until it gives something other than null, false or "" (bounded by [`WAIT`]);
/// on timeout the failure names `what` and quotes the page's notice line.
async fn wait_for(b: &mut Browser, page: &Page, js: &str, what: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = b
            .eval(page, js)
            .await
            .unwrap_or_else(|e| panic!("{what}: evaluating `{js}`: {e}"));
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

async fn eval(b: &mut Browser, page: &Page, js: &str) -> Value {
    b.eval(page, js)
        .await
        .unwrap_or_else(|e| panic!("evaluating `{js}`: {e}"))
}

/// Sets an input's value.
async fn fill(b: &mut Browser, page: &Page, id: &str, value: &str) {
    eval(
        b,
        page,
        &format!("document.getElementById({}).value = {}", json!(id), json!(value)),
    )
    .await;
}

async fn click(b: &mut Browser, page: &Page, id: &str) {
    let clicked = eval(
        b,
        page,
        &format!(
            "(() => {{ const e = document.getElementById({}); if (!e || !e.checkVisibility()) return false; \
             e.click(); return true; }})()",
            json!(id)
        ),
    )
    .await;
    assert_eq!(clicked, json!(true), "#{id} is missing or not shown");
}

/// The `dd[data-fact=...]` text of the account panel.
fn fact_js(fact: &str) -> String {
    format!("(document.querySelector('dd[data-fact=\"{fact}\"]')?.textContent ?? null)")
}

/// Whether the element is rendered (`hidden` and its ancestors' `display: none` count, as the
/// style sheet applies them).
async fn visible(b: &mut Browser, page: &Page, id: &str) -> bool {
    eval(b, page, &shown_js(id)).await == json!(true)
}

fn shown_js(id: &str) -> String {
    format!("document.getElementById({}).checkVisibility()", json!(id))
}

async fn token(b: &mut Browser, page: &Page) -> Option<String> {
    eval(b, page, "sessionStorage.getItem('kinko.token')")
        .await
        .as_str()
        .map(str::to_owned)
}

/// Answers the step-up dialog with the passkey: waits for the dialog, checks what it offers
/// (only a passkey is enrolled), and clicks "Use a passkey".
async fn confirm_with_passkey(b: &mut Browser, page: &Page, what: &str) {
    wait_for(
        b,
        page,
        "document.getElementById('stepup').open",
        "the step-up dialog opens",
    )
    .await;
    assert_eq!(
        eval(b, page, "document.getElementById('stepup-what').textContent").await,
        json!(what)
    );
    assert!(visible(b, page, "stepup-passkey").await);
    assert!(visible(b, page, "stepup-cancel").await);
    for id in ["stepup-code-label", "stepup-recovery-label", "stepup-totp"] {
        assert!(!visible(b, page, id).await, "#{id} shown in the step-up dialog");
    }
    click(b, page, "stepup-passkey").await;
}

/// Serves an empty page on 127.0.0.1 (opened as `http://localhost:<port>`: another origin of
/// the same host, which the relying party id `localhost` covers but the gateway does not list).
async fn other_origin() -> (u16, tokio::task::JoinHandle<()>) {
    let app = Router::new().route(
        "/",
        get(|| async { Html("<!doctype html><title>elsewhere</title><p>another site</p>") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (port, server)
}

/// Script asking the browser for an assertion with request options (binary fields base64url)
/// and giving it back as `PublicKeyCredential` JSON.
fn get_assertion_js(options: &Value) -> String {
    format!(
        r#"(async (o) => {{
  const dec = (s) => {{
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    const b = atob(s);
    const u = new Uint8Array(b.length);
    for (let i = 0; i < b.length; i++) u[i] = b.charCodeAt(i);
    return u.buffer;
  }};
  const enc = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const c = await navigator.credentials.get({{ publicKey: {{
    ...o,
    challenge: dec(o.challenge),
    allowCredentials: (o.allowCredentials || []).map((d) => ({{ ...d, id: dec(d.id) }})),
  }} }});
  const r = c.response;
  return {{
    id: c.id, rawId: enc(c.rawId), type: c.type,
    response: {{
      clientDataJSON: enc(r.clientDataJSON),
      authenticatorData: enc(r.authenticatorData),
      signature: enc(r.signature),
      userHandle: r.userHandle ? enc(r.userHandle) : null,
    }},
  }};
}})({options})"#
    )
}

fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/web-account.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_page_sign_in_passkey_step_up_and_freeze() {
    let s = Server::start().await;
    let mut b = Browser::launch().await.unwrap_or_else(|e| {
        panic!("chromium is needed for the web page test: run scripts/install-test-deps ({e})")
    });
    let page = b.new_page().await.unwrap();
    b.add_virtual_authenticator(&page).await.unwrap();

    // 1. The sign-in form; "Create account" registers and signs in (no factor yet: full).
    b.navigate(&page, &format!("{}/", s.origin)).await.unwrap();
    assert_eq!(eval(&mut b, &page, "window.isSecureContext").await, json!(true));
    wait_for(&mut b, &page, &shown_js("signin"), "the sign-in form shows").await;
    assert!(!visible(&mut b, &page, "account").await);
    fill(&mut b, &page, "email", EMAIL).await;
    fill(&mut b, &page, "password", PASSWORD).await;
    click(&mut b, &page, "register").await;
    wait_for(
        &mut b,
        &page,
        &format!(
            "document.getElementById('account').checkVisibility() && document.getElementById('who').textContent === {}",
            json!(EMAIL)
        ),
        "the account panel shows the email",
    )
    .await;
    assert_eq!(eval(&mut b, &page, &fact_js("Status")).await, json!("active"));
    assert_eq!(eval(&mut b, &page, &fact_js("Passkeys")).await, json!("0"));
    let first_token = token(&mut b, &page)
        .await
        .expect("a session token in sessionStorage");
    let (st, me) = s.api(Method::GET, "/me", Some(&first_token), None).await;
    assert_eq!(st, 200, "{me}");
    assert_eq!(me["email"], EMAIL);
    assert_eq!(me["passkeys"], json!([]));
    let user = UserId(me["user_id"].as_str().unwrap().parse().unwrap());

    // 2. "Add a passkey": the virtual authenticator registers; the first factor brings the
    // recovery codes, shown once.
    click(&mut b, &page, "passkey-add").await;
    wait_for(
        &mut b,
        &page,
        &format!("{} === '1'", fact_js("Passkeys")),
        "the passkey is listed",
    )
    .await;
    assert!(visible(&mut b, &page, "recovery").await);
    let codes = eval(
        &mut b,
        &page,
        "document.getElementById('recovery-codes').textContent",
    )
    .await;
    let codes: Vec<&str> = codes.as_str().unwrap().lines().collect();
    assert_eq!(codes.len(), 10, "{codes:?}");
    assert!(codes.iter().all(|c| !c.trim().is_empty()), "{codes:?}");
    assert_eq!(
        eval(&mut b, &page, &fact_js("Recovery codes left")).await,
        json!("10")
    );
    let (st, me) = s.api(Method::GET, "/me", Some(&first_token), None).await;
    assert_eq!(st, 200, "{me}");
    assert_eq!(me["passkeys"].as_array().unwrap().len(), 1, "{me}");
    assert_eq!(me["passkeys"][0]["label"], "passkey");
    assert_eq!(me["recovery_codes_left"], 10);
    assert_eq!(me["totp"], false);

    // 3. The anti-phishing code: with a factor enrolled the API asks for a step-up; the dialog
    // opens and the passkey signs the challenge bound to this very action.
    fill(&mut b, &page, "ap-code", ANTI_PHISHING).await;
    click(&mut b, &page, "ap-save").await;
    confirm_with_passkey(&mut b, &page, "set the anti-phishing code").await;
    wait_for(
        &mut b,
        &page,
        &format!("{} === {}", fact_js("Anti-phishing code"), json!(ANTI_PHISHING)),
        "the anti-phishing code is saved",
    )
    .await;
    assert_eq!(
        eval(&mut b, &page, "document.getElementById('stepup').open").await,
        json!(false)
    );
    let (_, me) = s.api(Method::GET, "/me", Some(&first_token), None).await;
    assert_eq!(me["anti_phishing_code"], ANTI_PHISHING);

    // 7b. A step-up dialog cancelled changes nothing: closed as Escape closes it (a close
    // request, no button: the dialog's return value is whatever it was before, here the
    // passkey answer of the step-up above), or with its Cancel button.
    let cancels = [
        ("Escape", "document.getElementById('stepup').requestClose()"),
        ("Cancel", "document.getElementById('stepup-cancel').click()"),
    ];
    for (how, js) in cancels {
        eval(
            &mut b,
            &page,
            "document.getElementById('notice').textContent = ''",
        )
        .await;
        fill(&mut b, &page, "ap-code", "changed-code").await;
        click(&mut b, &page, "ap-save").await;
        wait_for(
            &mut b,
            &page,
            "document.getElementById('stepup').open",
            "the step-up dialog opens again",
        )
        .await;
        eval(&mut b, &page, js).await;
        wait_for(
            &mut b,
            &page,
            "document.getElementById('notice').textContent.startsWith('CANCELLED')",
            &format!("the page reports the step-up cancelled with {how}"),
        )
        .await;
        assert_eq!(
            eval(&mut b, &page, "document.getElementById('stepup').open").await,
            json!(false)
        );
        assert_eq!(
            eval(&mut b, &page, &fact_js("Anti-phishing code")).await,
            json!(ANTI_PHISHING),
            "{how}"
        );
    }
    let (_, me) = s.api(Method::GET, "/me", Some(&first_token), None).await;
    assert_eq!(
        me["anti_phishing_code"], ANTI_PHISHING,
        "a cancelled step-up changed the code"
    );

    // 4. Whitelisting a withdrawal address: step-up again with the passkey.
    fill(&mut b, &page, "addr-asset", "BTC").await;
    fill(&mut b, &page, "addr-address", &s.withdrawal_address).await;
    fill(&mut b, &page, "addr-label", "cold storage").await;
    click(&mut b, &page, "addr-add").await;
    confirm_with_passkey(&mut b, &page, "whitelist a withdrawal address").await;
    wait_for(
        &mut b,
        &page,
        &format!(
            "document.getElementById('addresses').textContent.includes({})",
            json!(s.withdrawal_address)
        ),
        "the address is listed on the page",
    )
    .await;
    let (st, list) = s
        .api(Method::GET, "/withdrawal-addresses", Some(&first_token), None)
        .await;
    assert_eq!(st, 200, "{list}");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["asset"], "BTC");
    assert_eq!(list[0]["address"], json!(s.withdrawal_address));
    assert_eq!(list[0]["label"], "cold storage");

    // The account page, as a person sees it.
    eval(&mut b, &page, "window.scrollTo(0, 0)").await;
    let png = screenshot_path();
    b.screenshot(&page, &png).await.unwrap();
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));

    // 5. Sign out: the session ends and nothing of the account stays on the page. Sign in
    // again: the second-factor panel; the passkey completes the login with a new token.
    click(&mut b, &page, "logout").await;
    wait_for(
        &mut b,
        &page,
        &shown_js("signin"),
        "the sign-in form shows after sign-out",
    )
    .await;
    assert_eq!(token(&mut b, &page).await, None);
    let (st, _) = s.api(Method::GET, "/me", Some(&first_token), None).await;
    assert_eq!(st, 401, "the signed-out session still works");
    // Nothing of the account stays behind in the tab: not the password in the sign-in form,
    // not the recovery codes, the facts or the addresses.
    let left = eval(
        &mut b,
        &page,
        "({ password: document.getElementById('password').value, \
            email: document.getElementById('email').value, \
            who: document.getElementById('who').textContent, \
            recovery_shown: document.getElementById('recovery').checkVisibility(), \
            recovery: document.getElementById('recovery-codes').textContent, \
            facts: document.getElementById('facts').childElementCount, \
            addresses: document.getElementById('addresses').childElementCount })",
    )
    .await;
    assert_eq!(
        left,
        json!({"password": "", "email": EMAIL, "who": "", "recovery_shown": false, "recovery": "",
            "facts": 0, "addresses": 0}),
        "left on the page after sign-out"
    );
    fill(&mut b, &page, "password", PASSWORD).await;
    click(&mut b, &page, "login").await;
    wait_for(
        &mut b,
        &page,
        &shown_js("second"),
        "the second-factor panel shows",
    )
    .await;
    assert!(!visible(&mut b, &page, "account").await);
    let password_token = token(&mut b, &page).await.expect("a password-level token");
    let (st, r) = s
        .api(Method::GET, "/withdrawal-addresses", Some(&password_token), None)
        .await;
    assert_eq!((st, &r["code"]), (403, &json!("SECOND_FACTOR_REQUIRED")), "{r}");
    // Only a passkey is enrolled: the panel offers it and no code field.
    assert!(visible(&mut b, &page, "second-passkey").await);
    assert!(!visible(&mut b, &page, "second-code").await);
    assert!(!visible(&mut b, &page, "second-totp").await);
    click(&mut b, &page, "second-passkey").await;
    wait_for(
        &mut b,
        &page,
        &shown_js("account"),
        "the account panel after the passkey",
    )
    .await;
    let second_token = token(&mut b, &page).await.expect("a full session token");
    assert_ne!(second_token, first_token);
    assert_ne!(second_token, password_token);
    let (st, me) = s.api(Method::GET, "/me", Some(&second_token), None).await;
    assert_eq!(st, 200, "{me}");
    assert_eq!(me["anti_phishing_code"], ANTI_PHISHING);
    let (st, _) = s.api(Method::GET, "/me", Some(&password_token), None).await;
    assert_eq!(st, 401, "the password-level token outlived the completed login");
    // The recovery codes were shown once: not again to whoever signs in next in this tab.
    assert!(
        !visible(&mut b, &page, "recovery").await,
        "recovery codes still shown after sign-out and sign-in"
    );
    assert_eq!(
        eval(
            &mut b,
            &page,
            "document.getElementById('recovery-codes').textContent"
        )
        .await,
        json!("")
    );
    assert_eq!(
        eval(&mut b, &page, &fact_js("Anti-phishing code")).await,
        json!(ANTI_PHISHING)
    );

    // 7a. Another origin cannot use the passkey for this site. On http://127.0.0.1:<port> (the
    // gateway itself, by IP address) the browser refuses the relying party `localhost`; on
    // http://localhost:<other port> it signs, but the gateway refuses an assertion made for
    // another origin.
    let (st, needed) = s
        .api(
            Method::POST,
            "/me/anti-phishing",
            Some(&second_token),
            Some(json!({"code": "evil-code"})),
        )
        .await;
    assert_eq!(
        (st, &needed["code"]),
        (403, &json!("STEP_UP_REQUIRED")),
        "{needed}"
    );
    let step_up = &needed["step_up"];
    b.navigate(&page, &format!("{}/", s.base)).await.unwrap();
    let refused = b
        .eval(&page, &get_assertion_js(&step_up["webauthn"]))
        .await
        .expect_err("the browser signed for relying party localhost on an IP-address origin");
    assert!(refused.contains("SecurityError"), "{refused}");
    let (other_port, other_server) = other_origin().await;
    b.navigate(&page, &format!("http://localhost:{other_port}/"))
        .await
        .unwrap();
    let assertion = b
        .eval(&page, &get_assertion_js(&step_up["webauthn"]))
        .await
        .unwrap();
    let (st, refused) = s
        .api(
            Method::POST,
            "/me/anti-phishing",
            Some(&second_token),
            Some(json!({"code": "evil-code", "step_up": {"challenge": step_up["challenge"], "webauthn": assertion}})),
        )
        .await;
    assert_eq!(
        (st, &refused["code"]),
        (403, &json!("STEP_UP_INVALID")),
        "{refused}"
    );
    assert!(
        refused["message"].as_str().unwrap().contains("origin"),
        "{refused}"
    );
    other_server.abort();
    let (_, me) = s.api(Method::GET, "/me", Some(&second_token), None).await;
    assert_eq!(me["anti_phishing_code"], ANTI_PHISHING);
    // Back home: the tab's session is still there.
    b.navigate(&page, &format!("{}/", s.origin)).await.unwrap();
    wait_for(
        &mut b,
        &page,
        &shown_js("account"),
        "the account panel after coming back",
    )
    .await;

    // 6. The messages: each names the user's anti-phishing code once it is set, and carries a
    // freeze link to this server.
    let messages = s.wait_message(EMAIL, "withdrawal_address_added").await;
    let kinds: Vec<&str> = messages
        .iter()
        .map(|(name, _)| name.split_once('-').unwrap().1.trim_end_matches(".eml"))
        .collect();
    for kind in [
        "second_factor_changed",
        "anti_phishing_changed",
        "withdrawal_address_added",
    ] {
        assert!(kinds.contains(&kind), "no {kind} message: {kinds:?}");
    }
    let code_set_at = kinds.iter().position(|k| *k == "anti_phishing_changed").unwrap();
    let code_line = format!("Your anti-phishing code: {ANTI_PHISHING}");
    let freeze_prefix = format!("{}/freeze?t=", s.origin);
    let mut freeze_url = None;
    for (i, (name, text)) in messages.iter().enumerate() {
        assert_eq!(
            text.lines().any(|l| l == code_line),
            i >= code_set_at,
            "{name}: the anti-phishing code line should be there exactly once the code is set:\n{text}"
        );
        if i >= code_set_at {
            let subject = format!("Subject: [{ANTI_PHISHING}] ");
            assert!(
                text.lines().any(|l| l.starts_with(&subject)),
                "{name}: the subject lacks the code:\n{text}"
            );
        }
        let link = text
            .lines()
            .find_map(|l| l.strip_prefix("Not you? Freeze your account: "))
            .unwrap_or_else(|| panic!("{name}: no freeze link:\n{text}"));
        assert!(link.starts_with(&freeze_prefix), "{name}: {link}");
        if name.ends_with("-withdrawal_address_added.eml") {
            assert!(text.contains(&s.withdrawal_address), "{name}:\n{text}");
            freeze_url = Some(link.to_owned());
        }
    }

    // The freeze link, opened in the browser: the page freezes at once and says so; every
    // session ends and the user is frozen.
    let freeze_url = freeze_url.unwrap();
    b.navigate(&page, &freeze_url).await.unwrap();
    wait_for(
        &mut b,
        &page,
        "document.getElementById('freeze-text').textContent.startsWith('Your account is frozen')",
        "the page reports the account frozen",
    )
    .await;
    assert!(visible(&mut b, &page, "freeze").await);
    assert!(!visible(&mut b, &page, "freeze-button").await);
    assert_eq!(
        eval(&mut b, &page, "document.getElementById('notice').className").await,
        json!("")
    );
    assert_eq!(token(&mut b, &page).await, None);
    let (st, _) = s.api(Method::GET, "/me", Some(&second_token), None).await;
    assert_eq!(st, 401, "a session outlived the freeze");
    s.gateway.caught_up().await.unwrap();
    assert_eq!(s.user_status(user), UserStatus::Frozen);
    let messages = s.wait_message(EMAIL, "account_frozen").await;
    let (name, text) = messages.last().unwrap();
    assert!(name.ends_with("-account_frozen.eml"), "{name}");
    assert!(text.lines().any(|l| l == code_line), "{text}");
    assert!(
        !text.contains("/freeze?t="),
        "the frozen message offers to freeze again:\n{text}"
    );
    b.close_page(page).await.unwrap();
    drop(b);
    s.stop().await;
}
