//! The customer web app: the markets list (`/markets`), the trading screen (`/trade/{market}`),
//! the wallet (`/wallet`) and the account page (`/account`, also `/`). Each customer page is a
//! static HTML file with the shared header and dialogs (`chrome.html`) put in, in English or
//! Japanese ([`choose_lang`]: the `lang` cookie of the page's language switch, else
//! `Accept-Language`; `i18n.js` translates the marked texts), and plain JavaScript modules:
//! `dec.js` (decimal strings as BigInt units: nothing the API receives is floating point),
//! `common.js` (the session in sessionStorage, API calls, the sign-in dialog that keeps the page
//! as typed when a session is lost), and one script per page. Deposit addresses' QR codes are
//! drawn here as SVG (`/qr.svg`).
//!
//! The account page: sign-in with a second factor, TOTP and passkey enrolment, step-up
//! confirmation of sensitive actions, the anti-phishing code, the freeze link and password
//! reset. Static files compiled into the binary, served with a strict content security policy
//! (scripts and styles from this origin only, no framing, no referrer: the freeze and reset
//! links carry tokens).
//!
//! The operators' console (`/console`): the same sign-in, then open incidents and halts, the
//! withdrawal review queue, halting and proposing to resume withdrawals, two-person proposals and
//! incidents, each action confirmed with the admin's second factor. Same headers.
//!
//! The console speaks English and Japanese: `/console` is served with `<html lang>` from the
//! `lang` cookie (the page's switch sets it) or else from `Accept-Language`, and
//! `console.i18n.js` holds its strings and formats numbers and dates for that locale.
//!
//! Both pages load `stepup.js` before their own script: the step-up dialog (authenticator-app
//! code, passkey, recovery code) and the WebAuthn helpers, one copy for the two.
//!
//! WebAuthn refuses IP-address origins: open it as `http://localhost:<port>/` in development.

use crate::AppState;
use axum::extract::Query;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("web/index.html");
/// The account page's script, with the texts (`i18n.js`) in front: the page loads the shared
/// step-up script and this one only.
const APP_JS: &str = concat!(include_str!("web/i18n.js"), "\n", include_str!("web/app.js"));
const APP_CSS: &str = include_str!("web/app.css");
const CONSOLE: &str = include_str!("web/console.html");
const CONSOLE_JS: &str = include_str!("web/console.js");
const CONSOLE_CSS: &str = include_str!("web/console.css");
const STEPUP_JS: &str = include_str!("web/stepup.js");
const I18N_JS: &str = include_str!("web/i18n.js");
const DEC_JS: &str = include_str!("web/dec.js");
const COMMON_JS: &str = include_str!("web/common.js");
const MARKETS: &str = include_str!("web/markets.html");
const MARKETS_JS: &str = include_str!("web/markets.js");
const TRADE: &str = include_str!("web/trade.html");
const TRADE_JS: &str = include_str!("web/trade.js");
const WALLET: &str = include_str!("web/wallet.html");
const WALLET_JS: &str = include_str!("web/wallet.js");
/// The customer pages' header, sign-in dialog and step-up dialog, put where a page says
/// `<!--chrome-->`.
const CHROME: &str = include_str!("web/chrome.html");
const CONSOLE_I18N_JS: &str = include_str!("web/console.i18n.js");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn page(content_type: &'static str, body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

pub use crate::lang::choose_lang;

/// An HTML page in the chosen language (its `<html lang>`, which the scripts read).
fn html(headers: &HeaderMap, body: &'static str) -> Response {
    let lang = choose_lang(headers);
    let body = body
        .replacen(
            "<html lang=\"en\">",
            &format!("<html lang=\"{}\">", lang.code()),
            1,
        )
        .replacen("<!--chrome-->", CHROME, 1);
    let mut r = page("text/html; charset=utf-8", body);
    r.headers_mut().insert(
        header::VARY,
        axum::http::HeaderValue::from_static("Accept-Language, Cookie"),
    );
    r
}

async fn index(h: HeaderMap) -> Response {
    html(&h, INDEX)
}

/// The console, with `<html lang>` chosen as for the customer pages; its texts are in
/// `console.i18n.js`.
async fn console(h: HeaderMap) -> Response {
    let lang = choose_lang(&h);
    let body = CONSOLE.replacen(
        "<html lang=\"en\">",
        &format!("<html lang=\"{}\">", lang.code()),
        1,
    );
    let mut r = page("text/html; charset=utf-8", body);
    r.headers_mut().insert(
        header::VARY,
        axum::http::HeaderValue::from_static("Accept-Language, Cookie"),
    );
    r
}

async fn markets(h: HeaderMap) -> Response {
    html(&h, MARKETS)
}

async fn trade(h: HeaderMap) -> Response {
    html(&h, TRADE)
}

async fn wallet(h: HeaderMap) -> Response {
    html(&h, WALLET)
}

fn js(body: &'static str) -> Response {
    page("text/javascript; charset=utf-8", body)
}

fn css(body: &'static str) -> Response {
    page("text/css; charset=utf-8", body)
}

/// The longest text `/qr.svg` encodes (deposit addresses are far shorter).
const QR_DATA_MAX: usize = 256;

#[derive(serde::Deserialize)]
struct QrQuery {
    d: Option<String>,
}

/// A QR code of `d` (a deposit address) as SVG, drawn here so that the page needs no script
/// library for it.
async fn qr(Query(q): Query<QrQuery>) -> Response {
    let data = q.d.unwrap_or_default();
    if data.is_empty() || data.len() > QR_DATA_MAX {
        return crate::error::ApiError::invalid(format!("d must be 1 to {QR_DATA_MAX} bytes"))
            .into_response();
    }
    match qr_svg(&data) {
        Some(svg) => page("image/svg+xml", svg),
        None => crate::error::ApiError::invalid("d cannot be encoded as a QR code").into_response(),
    }
}

/// `data` as a QR code in SVG (medium error correction, a quiet zone), or None if too long.
pub fn qr_svg(data: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::M).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

/// The paths of the static pages and their files.
const PAGES: [&str; 21] = [
    "/",
    "/freeze",
    "/app.js",
    "/app.css",
    "/console",
    "/console.js",
    "/console.css",
    "/stepup.js",
    "/account",
    "/markets",
    "/trade/{market}",
    "/wallet",
    "/i18n.js",
    "/dec.js",
    "/common.js",
    "/markets.js",
    "/trade.js",
    "/wallet.js",
    "/qr.svg",
    "/trade",
    "/console.i18n.js",
];

/// Whether `route` is one of the static pages or their files (not an API call).
pub(crate) fn is_page(route: &str) -> bool {
    PAGES.contains(&route)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(PAGES[0], get(index))
        .route(PAGES[1], get(index))
        .route(PAGES[2], get(|| async { js(APP_JS) }))
        .route(PAGES[3], get(|| async { css(APP_CSS) }))
        .route(PAGES[4], get(console))
        .route(PAGES[5], get(|| async { js(CONSOLE_JS) }))
        .route(PAGES[6], get(|| async { css(CONSOLE_CSS) }))
        .route(PAGES[7], get(|| async { js(STEPUP_JS) }))
        .route(PAGES[8], get(index))
        .route(PAGES[9], get(markets))
        .route(PAGES[10], get(trade))
        .route(PAGES[11], get(wallet))
        .route(PAGES[12], get(|| async { js(I18N_JS) }))
        .route(PAGES[13], get(|| async { js(DEC_JS) }))
        .route(PAGES[14], get(|| async { js(COMMON_JS) }))
        .route(PAGES[15], get(|| async { js(MARKETS_JS) }))
        .route(PAGES[16], get(|| async { js(TRADE_JS) }))
        .route(PAGES[17], get(|| async { js(WALLET_JS) }))
        .route(PAGES[18], get(qr))
        .route(PAGES[19], get(trade))
        .route(PAGES[20], get(|| async { js(CONSOLE_I18N_JS) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::{quality, Lang};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_language_comes_from_the_cookie_then_accept_language() {
        assert_eq!(choose_lang(&headers(&[])), Lang::En);
        assert_eq!(
            choose_lang(&headers(&[("accept-language", "ja-JP,ja;q=0.9,en;q=0.8")])),
            Lang::Ja
        );
        assert_eq!(
            choose_lang(&headers(&[("accept-language", "fr, en;q=0.5, ja;q=0.7")])),
            Lang::Ja
        );
        assert_eq!(
            choose_lang(&headers(&[("accept-language", "ja;q=0.2, en-GB")])),
            Lang::En
        );
        assert_eq!(choose_lang(&headers(&[("accept-language", "fr, de")])), Lang::En);
        assert_eq!(choose_lang(&headers(&[("accept-language", "ja;q=0")])), Lang::En);
        assert_eq!(
            choose_lang(&headers(&[("accept-language", "ja;q=abc")])),
            Lang::En
        );
        assert_eq!(
            choose_lang(&headers(&[("accept-language", "ja"), ("cookie", "a=1; lang=en")])),
            Lang::En
        );
        assert_eq!(
            choose_lang(&headers(&[("accept-language", "en"), ("cookie", "lang=ja")])),
            Lang::Ja
        );
        // An unknown cookie value falls back to Accept-Language.
        assert_eq!(
            choose_lang(&headers(&[("accept-language", "ja"), ("cookie", "lang=xx")])),
            Lang::Ja
        );
    }

    #[test]
    fn qualities_are_parsed_without_floats() {
        assert_eq!(quality("1"), 1000);
        assert_eq!(quality("1.000"), 1000);
        assert_eq!(quality("0.8"), 800);
        assert_eq!(quality("0.125"), 125);
        assert_eq!(quality("0.1234"), 0);
        assert_eq!(quality("2"), 0);
        assert_eq!(quality("-1"), 0);
    }

    #[test]
    fn a_qr_code_is_svg_and_long_text_is_refused() {
        let svg = qr_svg("sim1aabbccddeeff00112233445566778899aabbccdd").unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "{svg}");
        assert!(qr_svg(&"x".repeat(5000)).is_none());
    }
}
