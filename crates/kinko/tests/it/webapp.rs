//! The customer web app in real headless Chromium against `kinko serve --demo`: a new customer
//! signs up, enrols a passkey and an authenticator app, gets a deposit address (with its QR
//! code), is credited on the simulated chain, places a limit order and sees it in the live book,
//! cancels it, trades with the demo market maker, sees the fills and the new balances, adds an
//! address, withdraws with a passkey step-up once the waiting period is over and sees the
//! withdrawal complete; a lost session keeps what was typed; the pages fit a 375 px phone. A
//! second, shorter flow in Japanese. Screenshots of each screen go to `target/screenshots/`.
//!
//! Test relaxations, each an explicit config line: new addresses usable after a few seconds
//! (`api.withdrawal_cooling_s`), no withdrawal lock after the first factors
//! (`identity.security_lock_s = 0`), no risk rules (a new session's withdrawal would wait an
//! hour).

#[path = "../../../api/tests/it/cdp.rs"]
mod cdp;

use super::{http, serving_addr, spawn, terminate, BIN, TEST_MASTER_KEY};
use cdp::{Browser, Page};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);
/// The waiting period of a new withdrawal address in these tests.
const COOLING_S: u64 = 4;
const PASSWORD: &str = "correct horse battery staple";

struct Server {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("kinko.toml");
        std::fs::write(
            &config,
            format!(
                "[api]\nwithdrawal_cooling_s = {COOLING_S}\n[identity]\nsecurity_lock_s = 0\n\
                 [risk]\nrules = []\n"
            ),
        )
        .unwrap();
        let data = dir.path().join("data");
        let mut child = spawn(&data, &["--config", config.to_str().unwrap(), "serve", "--demo"]);
        let addr = serving_addr(&mut child);
        Server {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The origin the browser uses: WebAuthn refuses IP-address origins.
    fn origin(&self) -> String {
        let port = self.addr.rsplit(':').next().unwrap();
        format!("http://localhost:{port}")
    }

    /// The newest message of `kind` in the server's `data/outbox`, waiting for it (bounded).
    async fn wait_for_mail(&self, kind: &str) -> String {
        let dir = self._dir.path().join("data/outbox");
        let deadline = Instant::now() + WAIT;
        loop {
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .map(|d| {
                    d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .filter(|n| n.ends_with(&format!("-{kind}.eml")) && !n.starts_with('.'))
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            if let Some(n) = names.last() {
                return std::fs::read_to_string(dir.join(n)).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} message in {}",
                dir.display()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// `kinko sim deposit` with the customer's own session token.
    fn sim_deposit(&self, token: &str, address: &str, amount: &str) {
        let out = Command::new(BIN)
            .args([
                "sim", "deposit", address, amount, "--token", token, "--server", &self.addr,
            ])
            .env_remove("KINKO_CONFIG")
            .env("KINKO_MASTER_KEY", TEST_MASTER_KEY)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", super::text(&out));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            terminate(&mut self.child);
        }
    }
}

fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(b: &mut Browser, page: &Page, name: &str) {
    let path = shots().join(name);
    b.screenshot(page, &path).await.unwrap();
    assert!(std::fs::read(&path).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
}

async fn eval(b: &mut Browser, page: &Page, js: &str) -> Value {
    b.eval(page, js)
        .await
        .unwrap_or_else(|e| panic!("evaluating `{js}`: {e}"))
}

/// Waits (bounded) until `js` gives something other than null, false or "".
async fn wait_for(b: &mut Browser, page: &Page, js: &str, what: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        // (An evaluation that fails while the page reloads is tried again.)
        let v = match b.eval(page, js).await {
            Ok(v) => v,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                Value::Null
            }
            Err(e) => panic!("{what}: evaluating `{js}`: {e}"),
        };
        if !(v.is_null() || v == json!(false) || v == json!("")) {
            return v;
        }
        if Instant::now() >= deadline {
            let notice = b
                .eval(
                    page,
                    "[document.getElementById('notice')?.textContent, \
                     document.getElementById('order-error')?.textContent, \
                     document.getElementById('withdraw-error')?.textContent, \
                     document.getElementById('si-error')?.textContent, \
                     document.getElementById('main')?.innerText.slice(0, 3000)]",
                )
                .await;
            panic!("{what}: not within {WAIT:?} (`{js}` gave {v}); the page says {notice:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn fill(b: &mut Browser, page: &Page, id: &str, value: &str) {
    let js = format!(
        "(() => {{ const e = document.getElementById({}); e.value = {}; \
         e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change')); return true; }})()",
        json!(id),
        json!(value)
    );
    assert_eq!(eval(b, page, &js).await, json!(true));
}

async fn click(b: &mut Browser, page: &Page, id: &str) {
    let js = format!(
        "(() => {{ const e = document.getElementById({}); if (!e || !e.checkVisibility()) return false; \
         e.click(); return true; }})()",
        json!(id)
    );
    assert_eq!(
        eval(b, page, &js).await,
        json!(true),
        "#{id} is missing or not shown"
    );
}

async fn open(b: &mut Browser, page: &Page, url: &str) {
    b.navigate(page, url).await.unwrap();
    wait_for(
        b,
        page,
        "document.body.dataset.ready === '1' || !!document.getElementById('account')",
        url,
    )
    .await;
}

async fn token(b: &mut Browser, page: &Page) -> String {
    eval(b, page, "sessionStorage.getItem('kinko.token')")
        .await
        .as_str()
        .expect("a session token in sessionStorage")
        .to_owned()
}

/// Every form control has a label (its own, or an aria-label), and nothing is in localStorage.
async fn check_labels_and_storage(b: &mut Browser, page: &Page) {
    let unlabelled = eval(
        b,
        page,
        "[...document.querySelectorAll('input, select, button, canvas')]
           .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
             && !(e.textContent || '').trim())
           .map((e) => e.id || e.outerHTML.slice(0, 60))",
    )
    .await;
    assert_eq!(unlabelled, json!([]), "controls without a label");
    assert_eq!(eval(b, page, "localStorage.length").await, json!(0));
}

/// The page fits a 375 px phone: nothing scrolls the page sideways.
async fn check_phone(b: &mut Browser, page: &Page, url: &str, name: &str) {
    b.command(
        page,
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 375, "height": 812, "deviceScaleFactor": 1, "mobile": true }),
    )
    .await
    .unwrap();
    open(b, page, url).await;
    let width = eval(b, page, "document.documentElement.scrollWidth").await;
    let wide = eval(
        b,
        page,
        "[...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > 376
             && !(e.parentElement && e.parentElement.getBoundingClientRect().right > 376))
           .slice(0, 5).map((e) => e.tagName + '#' + e.id + '.' + e.className + ' in ' + e.parentElement.tagName
             + '.' + e.parentElement.className + ' ' + e.getBoundingClientRect().width)",
    )
    .await;
    assert!(
        width.as_u64().unwrap() <= 375,
        "{url} is {width} px wide on a 375 px phone: {wide}"
    );
    shot(b, page, name).await;
    b.command(page, "Emulation.clearDeviceMetricsOverride", json!({}))
        .await
        .unwrap();
}

/// Answers the open step-up dialog with the passkey.
async fn step_up_with_passkey(b: &mut Browser, page: &Page) {
    wait_for(
        b,
        page,
        "document.getElementById('stepup').open",
        "the step-up dialog opens",
    )
    .await;
    click(b, page, "stepup-passkey").await;
}

fn totp_now(secret_b32: &str) -> String {
    let secret = kinko_factors::totp::base32_decode(secret_b32).expect("a base32 TOTP secret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!("{:06}", kinko_factors::totp::code_at(&secret, now / 30))
}

fn launch_error(e: String) -> Browser {
    panic!("chromium is needed for the web app tests: run scripts/install-test-deps ({e})")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_customer_deposits_trades_and_withdraws_in_the_browser() {
    let s = Server::start();
    let origin = s.origin();
    let mut b = Browser::launch().await.unwrap_or_else(launch_error);
    let page = b.new_page().await.unwrap();
    b.add_virtual_authenticator(&page).await.unwrap();
    b.command(
        &page,
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1280, "height": 1200, "deviceScaleFactor": 1, "mobile": false }),
    )
    .await
    .unwrap();

    // The markets, with a 24 h ticker each, before signing in.
    open(&mut b, &page, &format!("{origin}/markets")).await;
    assert_eq!(
        eval(&mut b, &page, "document.documentElement.lang").await,
        json!("en")
    );
    wait_for(
        &mut b,
        &page,
        "document.querySelectorAll('#markets tr').length >= 4",
        "the markets listed",
    )
    .await;
    let ltc = eval(
        &mut b,
        &page,
        "document.querySelector('#markets tr[data-market=\"LTC-USD\"]').textContent",
    )
    .await;
    assert!(ltc.as_str().unwrap().contains("LTC/USD"), "{ltc}");
    check_labels_and_storage(&mut b, &page).await;
    shot(&mut b, &page, "01-markets.png").await;

    // Sign up on the account page; a passkey, then an authenticator app (confirmed with it).
    let email = "newcomer@example.com";
    b.navigate(&page, &format!("{origin}/account")).await.unwrap();
    wait_for(
        &mut b,
        &page,
        "document.getElementById('signin').checkVisibility()",
        "the sign-in form",
    )
    .await;
    fill(&mut b, &page, "email", email).await;
    fill(&mut b, &page, "password", PASSWORD).await;
    click(&mut b, &page, "register").await;
    wait_for(
        &mut b,
        &page,
        "document.getElementById('account').checkVisibility()",
        "signed up",
    )
    .await;
    click(&mut b, &page, "passkey-add").await;
    wait_for(
        &mut b,
        &page,
        "document.querySelector('dd[data-fact=\"Passkeys\"]')?.textContent === '1'",
        "the passkey added",
    )
    .await;
    click(&mut b, &page, "totp-begin").await;
    let secret = wait_for(
        &mut b,
        &page,
        "document.getElementById('totp-secret').textContent",
        "the TOTP secret",
    )
    .await;
    fill(&mut b, &page, "totp-code", &totp_now(secret.as_str().unwrap())).await;
    click(&mut b, &page, "totp-confirm").await;
    step_up_with_passkey(&mut b, &page).await;
    wait_for(
        &mut b,
        &page,
        "document.querySelector('dd[data-fact=\"Authenticator app\"]')?.textContent === 'on'",
        "the authenticator app added",
    )
    .await;
    wait_for(
        &mut b,
        &page,
        "document.querySelectorAll('#sessions tr').length === 1",
        "this session listed",
    )
    .await;
    check_labels_and_storage(&mut b, &page).await;
    shot(&mut b, &page, "02-account.png").await;
    let session = token(&mut b, &page).await;

    // A deposit address with its QR code; a deposit on the simulated chain is credited.
    open(&mut b, &page, &format!("{origin}/wallet")).await;
    fill(&mut b, &page, "deposit-asset", "LTC").await;
    click(&mut b, &page, "deposit-address-new").await;
    let address = wait_for(
        &mut b,
        &page,
        "document.getElementById('deposit-address').textContent",
        "the deposit address",
    )
    .await;
    let address = address.as_str().unwrap().to_owned();
    assert!(address.starts_with("sim1"), "{address}");
    // The confirmations the asset's deposits need (the simulated chain credits at the first).
    assert_eq!(
        eval(
            &mut b,
            &page,
            "document.getElementById('deposit-confirmations').textContent"
        )
        .await,
        json!("Credited after 1 confirmation.")
    );
    wait_for(&mut b, &page, "(() => { const q = document.getElementById('deposit-qr'); return q.complete && q.naturalWidth >= 200; })()", "the QR code").await;
    shot(&mut b, &page, "03-deposit-address.png").await;
    s.sim_deposit(&session, &address, "10");
    let balance = |asset: &str| {
        format!("document.querySelector('#balances tr[data-asset=\"{asset}\"] td:nth-child(2)')?.textContent ?? null")
    };
    wait_for(
        &mut b,
        &page,
        &format!("{} === '10'", balance("LTC")),
        "the deposit credited",
    )
    .await;
    wait_for(
        &mut b,
        &page,
        "document.querySelector('#deposits tr')?.textContent.includes('credited')",
        "the deposit listed as credited",
    )
    .await;
    let value = eval(
        &mut b,
        &page,
        "document.querySelector('#balances tr[data-asset=\"LTC\"] td:nth-child(4)').textContent",
    )
    .await;
    assert!(
        value.as_str().unwrap().contains('.'),
        "LTC valued in USD: {value}"
    );
    check_labels_and_storage(&mut b, &page).await;
    shot(&mut b, &page, "04-wallet-credited.png").await;

    // A resting limit order shows in the live book, then is cancelled.
    open(&mut b, &page, &format!("{origin}/trade/LTC-USD")).await;
    wait_for(&mut b, &page, "document.querySelectorAll('#bids tr').length > 0 && document.querySelectorAll('#asks tr').length > 0", "the live book").await;
    wait_for(
        &mut b,
        &page,
        "document.getElementById('spread').textContent.includes('Spread')",
        "the spread line",
    )
    .await;
    wait_for(
        &mut b,
        &page,
        "Number(document.getElementById('candles').dataset.candles) > 0",
        "the candles",
    )
    .await;
    click(&mut b, &page, "side-sell").await;
    fill(&mut b, &page, "order-type", "limit").await;
    fill(&mut b, &page, "price", "200.005").await;
    fill(&mut b, &page, "size", "1").await;
    click(&mut b, &page, "order-submit").await;
    let refused = wait_for(
        &mut b,
        &page,
        "document.getElementById('order-error').textContent",
        "an off-tick price refused",
    )
    .await;
    assert!(
        refused.as_str().unwrap().contains("multiple of 0.01"),
        "{refused}"
    );
    fill(&mut b, &page, "price", "200").await;
    let preview = eval(
        &mut b,
        &page,
        "document.getElementById('order-preview').textContent",
    )
    .await;
    assert!(
        preview.as_str().unwrap().contains("Fee: maker") && preview.as_str().unwrap().contains("Price band"),
        "{preview}"
    );
    click(&mut b, &page, "order-submit").await;
    wait_for(
        &mut b,
        &page,
        "!!document.querySelector('#asks tr[data-price=\"200.00\"]')",
        "the order in the live book",
    )
    .await;
    wait_for(
        &mut b,
        &page,
        "document.querySelectorAll('#open-orders tr').length === 1",
        "the open order listed",
    )
    .await;
    shot(&mut b, &page, "05-trade-order-in-book.png").await;
    eval(
        &mut b,
        &page,
        "document.querySelector('#open-orders button').click()",
    )
    .await;
    wait_for(&mut b, &page, "!document.querySelector('#asks tr[data-price=\"200.00\"]') && document.querySelectorAll('#open-orders tr').length === 0", "the order cancelled and gone from the book").await;
    wait_for(
        &mut b,
        &page,
        "document.getElementById('order-history').textContent.includes('cancelled')",
        "the cancelled order in the history",
    )
    .await;

    // An order the engine refuses is refused in words: more than the balance.
    fill(&mut b, &page, "size", "50").await;
    click(&mut b, &page, "order-submit").await;
    let refused = wait_for(
        &mut b,
        &page,
        "document.getElementById('order-error').textContent",
        "the engine's refusal",
    )
    .await;
    assert!(refused.as_str().unwrap().contains("FUNDS"), "{refused}");

    // Trades with the demo market maker: sell 1 LTC at market, then buy with 20 USD.
    fill(&mut b, &page, "order-type", "market").await;
    click(&mut b, &page, "by-size").await;
    fill(&mut b, &page, "size", "1").await;
    click(&mut b, &page, "order-submit").await;
    wait_for(
        &mut b,
        &page,
        "document.querySelectorAll('#fills tr').length >= 1",
        "the sell filled",
    )
    .await;
    click(&mut b, &page, "side-buy").await;
    click(&mut b, &page, "by-funds").await;
    fill(&mut b, &page, "funds", "20").await;
    click(&mut b, &page, "order-submit").await;
    wait_for(
        &mut b,
        &page,
        "[...document.querySelectorAll('#fills tr')].some((r) => r.cells[0].textContent === 'buy')",
        "the buy filled",
    )
    .await;
    check_labels_and_storage(&mut b, &page).await;
    shot(&mut b, &page, "06-trade-filled.png").await;

    // The new balances; an address whitelisted with a passkey step-up, usable after a countdown.
    open(&mut b, &page, &format!("{origin}/wallet")).await;
    let ltc = eval(&mut b, &page, &balance("LTC")).await;
    let usd = eval(&mut b, &page, &balance("USD")).await;
    assert!(
        ltc.as_str().unwrap().starts_with("9."),
        "LTC after selling 1 and buying some: {ltc}"
    );
    assert!(usd.as_str().unwrap() != "0", "USD after the trades: {usd}");
    fill(&mut b, &page, "addr-asset", "LTC").await;
    let destination = format!("sim1{}", "5a".repeat(20));
    fill(&mut b, &page, "addr-address", &destination).await;
    fill(&mut b, &page, "addr-label", "my cold wallet").await;
    click(&mut b, &page, "addr-add").await;
    step_up_with_passkey(&mut b, &page).await;
    wait_for(
        &mut b,
        &page,
        "document.querySelector('#address-book .countdown')?.textContent.startsWith('usable in')",
        "the countdown",
    )
    .await;
    shot(&mut b, &page, "07-address-cooling.png").await;
    wait_for(
        &mut b,
        &page,
        "document.querySelector('#address-book .countdown')?.textContent === 'usable now'",
        "the waiting period over",
    )
    .await;
    // The fee and what is left of the limits (the built-in tier-0 limits of LTC) before sending.
    wait_for(
        &mut b,
        &page,
        "document.getElementById('withdraw-facts').textContent.includes('Limit left: 750 LTC in 24 h (of 750), 7,500 LTC in 30 days (of 7,500).')",
        "the limits left",
    )
    .await;
    let facts = eval(
        &mut b,
        &page,
        "document.getElementById('withdraw-facts').textContent",
    )
    .await;
    assert!(facts.as_str().unwrap().starts_with("Fee: "), "{facts}");

    // A lost session: the page says so, keeps what was typed, and carries on after sign-in.
    fill(&mut b, &page, "withdraw-amount", "1").await;
    let (st, _) = http(&s.addr, "POST", "/api/v1/auth/logout", &session, "");
    assert_eq!(st, 204);
    click(&mut b, &page, "withdraw-submit").await;
    wait_for(&mut b, &page, "document.getElementById('signin-dialog').open && document.getElementById('si-lost').checkVisibility()", "the lost session said").await;
    assert_eq!(
        eval(&mut b, &page, "document.getElementById('withdraw-amount').value").await,
        json!("1")
    );
    shot(&mut b, &page, "08-session-lost.png").await;
    fill(&mut b, &page, "si-email", email).await;
    fill(&mut b, &page, "si-password", PASSWORD).await;
    click(&mut b, &page, "si-login").await;
    wait_for(
        &mut b,
        &page,
        "document.getElementById('si-passkey').checkVisibility()",
        "the second factor asked",
    )
    .await;
    click(&mut b, &page, "si-passkey").await;
    // Signed in again, the withdrawal goes on: its step-up, with the passkey.
    step_up_with_passkey(&mut b, &page).await;
    wait_for(
        &mut b,
        &page,
        "document.querySelector('#withdrawals tr')?.dataset.status === 'completed'",
        "the withdrawal completed",
    )
    .await;
    assert_ne!(token(&mut b, &page).await, session);
    let row = eval(
        &mut b,
        &page,
        "document.querySelector('#withdrawals tr').textContent",
    )
    .await;
    assert!(row.as_str().unwrap().contains(&destination), "{row}");
    assert_eq!(eval(&mut b, &page, "localStorage.length").await, json!(0));
    wait_for(
        &mut b,
        &page,
        "document.getElementById('withdraw-facts').textContent.includes('Limit left: 749 LTC in 24 h (of 750), 7,499 LTC in 30 days')",
        "the limit left after the withdrawal",
    )
    .await;
    shot(&mut b, &page, "09-withdrawal-completed.png").await;

    // The security log on the account page: sign-ins, factors, the address, the withdrawal.
    open(&mut b, &page, &format!("{origin}/account")).await;
    let logged = |kind: &str| format!("!!document.querySelector('#security-log tr[data-kind=\"{kind}\"]')");
    for kind in [
        "wallet.withdrawal_completed",
        "wallet.withdrawal_requested",
        "wallet.address_added",
        "identity.factor_enrolled",
        "identity.session_opened",
        "identity.registered",
    ] {
        wait_for(&mut b, &page, &logged(kind), kind).await;
    }
    let newest = eval(
        &mut b,
        &page,
        "document.querySelector('#security-log tr').dataset.kind",
    )
    .await;
    assert_eq!(newest, json!("wallet.withdrawal_completed"), "newest first");
    let requested = eval(
        &mut b,
        &page,
        "document.querySelector('#security-log tr[data-kind=\"wallet.withdrawal_requested\"]').textContent",
    )
    .await;
    let requested = requested.as_str().unwrap();
    assert!(
        requested.contains("Withdrawal requested")
            && requested.contains("1 LTC")
            && requested.contains(&destination),
        "{requested}"
    );
    eval(
        &mut b,
        &page,
        "document.getElementById('security-log').scrollIntoView()",
    )
    .await;
    check_labels_and_storage(&mut b, &page).await;
    shot(&mut b, &page, "12-account-security-log.png").await;

    // A phone: the trading screen and the wallet fit 375 px.
    check_phone(
        &mut b,
        &page,
        &format!("{origin}/trade/LTC-USD"),
        "10-phone-trade.png",
    )
    .await;
    check_phone(&mut b, &page, &format!("{origin}/wallet"), "11-phone-wallet.png").await;
    b.close_page(page).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_japanese_customer_sees_every_page_in_japanese() {
    let s = Server::start();
    let origin = s.origin();
    let mut b = Browser::launch().await.unwrap_or_else(launch_error);
    let page = b.new_page().await.unwrap();
    b.command(&page, "Network.enable", json!({})).await.unwrap();
    b.command(
        &page,
        "Network.setExtraHTTPHeaders",
        json!({ "headers": { "Accept-Language": "ja-JP,ja;q=0.9,en;q=0.5" } }),
    )
    .await
    .unwrap();
    b.command(
        &page,
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1280, "height": 1200, "deviceScaleFactor": 1, "mobile": false }),
    )
    .await
    .unwrap();

    for path in ["/markets", "/trade/BTC-USD", "/account"] {
        b.navigate(&page, &format!("{origin}{path}")).await.unwrap();
        assert_eq!(
            eval(&mut b, &page, "document.documentElement.lang").await,
            json!("ja"),
            "{path}"
        );
        assert_eq!(
            eval(&mut b, &page, "kinkoI18n.missing()").await,
            json!([]),
            "{path}: untranslated texts"
        );
    }
    open(&mut b, &page, &format!("{origin}/markets")).await;
    assert_eq!(
        eval(&mut b, &page, "document.querySelector('h1').textContent").await,
        json!("マーケット")
    );
    shot(&mut b, &page, "ja-01-markets.png").await;

    // Sign up from the wallet's sign-in dialog; a BTC deposit address; credited.
    b.navigate(&page, &format!("{origin}/wallet")).await.unwrap();
    assert_eq!(
        eval(&mut b, &page, "kinkoI18n.missing()").await,
        json!([]),
        "/wallet: untranslated texts"
    );
    wait_for(
        &mut b,
        &page,
        "document.getElementById('signin-dialog').open",
        "the sign-in dialog",
    )
    .await;
    assert_eq!(
        eval(&mut b, &page, "document.getElementById('si-title').textContent").await,
        json!("ログイン")
    );
    fill(&mut b, &page, "si-email", "hanako@example.jp").await;
    fill(&mut b, &page, "si-password", PASSWORD).await;
    click(&mut b, &page, "si-register").await;
    wait_for(&mut b, &page, "document.body.dataset.ready === '1'", "the wallet").await;
    fill(&mut b, &page, "deposit-asset", "BTC").await;
    click(&mut b, &page, "deposit-address-new").await;
    let address = wait_for(
        &mut b,
        &page,
        "document.getElementById('deposit-address').textContent",
        "the deposit address",
    )
    .await;
    let session = token(&mut b, &page).await;
    s.sim_deposit(&session, address.as_str().unwrap(), "0.5");
    wait_for(
        &mut b,
        &page,
        "document.querySelector('#balances tr[data-asset=\"BTC\"] td:nth-child(2)')?.textContent === '0.5'",
        "the deposit credited",
    )
    .await;
    wait_for(
        &mut b,
        &page,
        "document.querySelector('#deposits tr')?.textContent.includes('反映済み')",
        "the deposit's state in Japanese",
    )
    .await;
    shot(&mut b, &page, "ja-02-wallet.png").await;

    // Messages in Japanese: an anti-phishing code set on the account page comes back in a
    // Japanese message in data/outbox that carries it (the account took the language of the
    // browser it was opened from); the security log speaks Japanese too.
    open(&mut b, &page, &format!("{origin}/account")).await;
    fill(&mut b, &page, "ap-code", "SAKURA77").await;
    click(&mut b, &page, "ap-save").await;
    let mail = s.wait_for_mail("anti_phishing_changed").await;
    assert!(
        mail.contains("\r\nSubject: [SAKURA77] kinko のフィッシング対策コードが設定されました\r\n"),
        "{mail}"
    );
    assert!(
        mail.contains("\r\n\r\nお客様のフィッシング対策コード: SAKURA77\r\n"),
        "{mail}"
    );
    assert!(mail.contains("アカウントを凍結してください: http"), "{mail}");
    wait_for(
        &mut b,
        &page,
        "document.querySelector('#security-log tr[data-kind=\"identity.session_opened\"]')?.textContent.includes('ログイン')",
        "the security log in Japanese",
    )
    .await;

    // A limit order in the live book, its state in Japanese; a refusal in words.
    open(&mut b, &page, &format!("{origin}/trade/BTC-USD")).await;
    click(&mut b, &page, "side-sell").await;
    fill(&mut b, &page, "price", "40000").await;
    fill(&mut b, &page, "size", "0.01").await;
    click(&mut b, &page, "order-submit").await;
    wait_for(
        &mut b,
        &page,
        "!!document.querySelector('#asks tr[data-price=\"40000.00\"]')",
        "the order in the live book",
    )
    .await;
    wait_for(
        &mut b,
        &page,
        "document.getElementById('open-orders').textContent.includes('注文中')",
        "the open order in Japanese",
    )
    .await;
    fill(&mut b, &page, "size", "5").await;
    click(&mut b, &page, "order-submit").await;
    let refused = wait_for(
        &mut b,
        &page,
        "document.getElementById('order-error').textContent",
        "the refusal",
    )
    .await;
    assert!(
        refused.as_str().unwrap().contains("残高が足りません"),
        "{refused}"
    );
    shot(&mut b, &page, "ja-03-trade.png").await;

    // The switch to English is remembered although the browser still prefers Japanese.
    click(&mut b, &page, "lang-switch").await;
    wait_for(
        &mut b,
        &page,
        "document.documentElement.lang === 'en' && document.body.dataset.ready === '1'",
        "English after the switch",
    )
    .await;
    open(&mut b, &page, &format!("{origin}/markets")).await;
    assert_eq!(
        eval(&mut b, &page, "document.documentElement.lang").await,
        json!("en")
    );
    assert_eq!(
        eval(&mut b, &page, "document.querySelector('h1').textContent").await,
        json!("Markets")
    );
    assert_eq!(eval(&mut b, &page, "localStorage.length").await, json!(0));
    b.close_page(page).await.unwrap();
}

/// The README shows screenshots of the web app; each it names is a PNG in the repository.
#[test]
fn the_readme_shows_screenshots_of_the_web_app_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let images: Vec<&str> = readme
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|p| p.ends_with(".png"))
        .collect();
    assert!(images.len() >= 2, "the README shows {images:?}");
    for image in images {
        let png = std::fs::read(root.join(image)).unwrap_or_else(|e| panic!("{image}: {e}"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{image} is not a PNG");
    }
}

/// `dec.js`, the pages' decimal-string arithmetic, as the browser runs it: exact beyond 2^53,
/// refusing what is not a plain decimal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_decimal_helper_is_exact() {
    let s = Server::start();
    let mut b = Browser::launch().await.unwrap_or_else(launch_error);
    let page = b.new_page().await.unwrap();
    open(&mut b, &page, &format!("{}/markets", s.origin())).await;
    let cases = [
        (
            "kinkoDec.toUnits('123456789012.12345678', 8).toString()",
            json!("12345678901212345678"),
        ),
        (
            "kinkoDec.fromUnits(12345678901212345678n, 8)",
            json!("123456789012.12345678"),
        ),
        ("kinkoDec.fromUnits(1500n, 8)", json!("0.000015")),
        ("kinkoDec.fromUnits(100n, 2, 2)", json!("1.00")),
        ("kinkoDec.toUnits('1.10', 1).toString()", json!("11")),
        ("kinkoDec.isMultiple('200.00', '0.01')", json!(true)),
        ("kinkoDec.isMultiple('200.005', '0.01')", json!(false)),
        ("kinkoDec.isMultiple('0.3', '0.1')", json!(true)),
        ("kinkoDec.floorTo('1.239', '0.01')", json!("1.23")),
        ("kinkoDec.floorTo('80.080000', '0.010000')", json!("80.08")),
        ("kinkoDec.floorTo('1.00000000', '0.01000000')", json!("1.00")),
        ("kinkoDec.trim('0.50000000')", json!("0.5")),
        ("kinkoDec.trim('10.000')", json!("10")),
        ("kinkoDec.mul('0.1', '0.2')", json!("0.02")),
        ("kinkoDec.add('0.1', '0.2')", json!("0.3")),
        ("kinkoDec.sub('1', '1.001')", json!("-0.001")),
        (
            "kinkoDec.mulDiv('9007199254740993', '3', '1', 0)",
            json!("27021597764222979"),
        ),
        ("kinkoDec.bpsOf('100.01', 20, 2)", json!("0.21")),
        ("kinkoDec.changeBps('80', '84')", json!(500)),
        ("kinkoDec.changeBps(null, '84')", json!(null)),
        ("kinkoDec.cmp('10', '9.99')", json!(1)),
        ("kinkoDec.group('1234567.5', 2)", json!("1,234,567.50")),
        ("kinkoDec.places('0.0001')", json!(4)),
    ];
    for (js, want) in cases {
        assert_eq!(eval(&mut b, &page, js).await, want, "{js}");
    }
    for bad in ["'1e5'", "'-1'", "'1.'", "' '", "'0x10'", "'1.123'"] {
        let e = b
            .eval(&page, &format!("kinkoDec.toUnits({bad}, 2)"))
            .await
            .expect_err(bad);
        assert!(e.contains("decimal"), "{bad}: {e}");
    }
    b.close_page(page).await.unwrap();
}

/// The account page's proof of liabilities: a customer credited on the simulated chain, a proof
/// built beside the server, the page shows their balance in it and downloads the JSON, which
/// the standalone `kinko-verify` accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_page_shows_and_downloads_the_customers_proof() {
    let s = Server::start();
    let origin = s.origin();
    let login = json!({"email": "proof@example.com", "password": PASSWORD}).to_string();
    let (st, r) = http(&s.addr, "POST", "/api/v1/auth/register", "", &login);
    assert_eq!(st, 201, "{r}");
    let (st, l) = http(&s.addr, "POST", "/api/v1/auth/login", "", &login);
    assert_eq!(st, 200, "{l}");
    let tok = l["token"].as_str().unwrap().to_owned();
    let (st, a) = http(
        &s.addr,
        "POST",
        "/api/v1/deposit-addresses",
        &tok,
        r#"{"asset":"BTC"}"#,
    );
    assert_eq!(st, 200, "{a}");
    s.sim_deposit(&tok, a["address"].as_str().unwrap(), "1.25");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, d) = http(&s.addr, "GET", "/api/v1/deposits?asset=BTC", &tok, "");
        if d.as_array()
            .is_some_and(|v| v.iter().any(|x| x["status"] == "credited"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the deposit was not credited: {d}");
        tokio::time::sleep(POLL).await;
    }
    let data = s._dir.path().join("data");
    let built = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--config",
            s._dir.path().join("kinko.toml").to_str().unwrap(),
            "proof",
            "build",
        ])
        .env_remove("KINKO_CONFIG")
        .env("KINKO_MASTER_KEY", TEST_MASTER_KEY)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", super::text(&built));

    let mut b = Browser::launch().await.unwrap_or_else(launch_error);
    let page = b.new_page().await.unwrap();
    b.navigate(&page, &format!("{origin}/account")).await.unwrap();
    eval(
        &mut b,
        &page,
        &format!("sessionStorage.setItem('kinko.token', {}); true", json!(tok)),
    )
    .await;
    open(&mut b, &page, &format!("{origin}/account")).await;
    wait_for(
        &mut b,
        &page,
        "!document.getElementById('account').hidden",
        "the account page",
    )
    .await;
    fill(&mut b, &page, "proof-asset", "btc").await;
    click(&mut b, &page, "proof-show").await;
    let balance = wait_for(
        &mut b,
        &page,
        "document.querySelector('#proof-facts dd[data-fact=\"Your balance in the proof\"]')?.textContent",
        "the proof shown",
    )
    .await;
    assert_eq!(balance, json!("1.25000000"));
    shot(&mut b, &page, "account-proof.png").await;
    // A real download (the page's CSP lets no script fetch it): into a folder, by a click.
    let downloads = s._dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    b.command(
        &page,
        "Browser.setDownloadBehavior",
        json!({ "behavior": "allow", "downloadPath": downloads.to_str().unwrap() }),
    )
    .await
    .unwrap();
    wait_for(
        &mut b,
        &page,
        "(() => { const a = document.getElementById('proof-download'); \
         return !a.hidden && a.href.startsWith('blob:') && a.download.endsWith('.json'); })()",
        "the download link",
    )
    .await;
    click(&mut b, &page, "proof-download").await;
    let deadline = Instant::now() + WAIT;
    let file = loop {
        let done = std::fs::read_dir(&downloads)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "json"));
        if let Some(f) = done {
            break f;
        }
        assert!(Instant::now() < deadline, "no download arrived");
        tokio::time::sleep(POLL).await;
    };
    assert!(
        file.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("kinko-proof-BTC-"),
        "{file:?}"
    );
    let verifier = Path::new(BIN).with_file_name("kinko-verify");
    if !verifier.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "kinko-verify", "--bin", "kinko-verify"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let out = Command::new(&verifier).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", super::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("holds 1.25000000 BTC"),
        "{}",
        super::text(&out)
    );
    // Another asset without a leaf: the page says so with the stable code.
    fill(&mut b, &page, "proof-asset", "NOPE").await;
    click(&mut b, &page, "proof-show").await;
    wait_for(
        &mut b,
        &page,
        "document.getElementById('notice').textContent.includes('NO_PROOF') && \
         document.getElementById('proof-download').hidden",
        "the refusal shown",
    )
    .await;
    b.close_page(page).await.unwrap();
}
