//! The account web page: sign-in with a second factor, TOTP and passkey enrolment, step-up
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
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const APP_CSS: &str = include_str!("web/app.css");
const CONSOLE: &str = include_str!("web/console.html");
const CONSOLE_JS: &str = include_str!("web/console.js");
const CONSOLE_CSS: &str = include_str!("web/console.css");
const STEPUP_JS: &str = include_str!("web/stepup.js");
const CONSOLE_I18N_JS: &str = include_str!("web/console.i18n.js");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn page(content_type: &'static str, body: impl Into<axum::body::Body>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.into(),
    )
        .into_response()
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn app_js() -> Response {
    page("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    page("text/css; charset=utf-8", APP_CSS)
}

/// The console's languages; the first is the default.
const CONSOLE_LANGS: [&str; 2] = ["en", "ja"];

/// The console's language: the `lang` cookie if it names one, else the first of
/// `Accept-Language` (by quality, then order) that does, else English.
pub(crate) fn console_lang(headers: &axum::http::HeaderMap) -> &'static str {
    let known = |tag: &str| {
        let primary = tag
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        CONSOLE_LANGS.into_iter().find(|l| *l == primary)
    };
    for cookie in headers.get_all(header::COOKIE) {
        for pair in cookie.to_str().unwrap_or("").split(';') {
            if let Some(("lang", v)) = pair.trim().split_once('=') {
                if let Some(l) = known(v) {
                    return l;
                }
            }
        }
    }
    let mut best: Option<(u16, &'static str)> = None;
    for value in headers.get_all(header::ACCEPT_LANGUAGE) {
        for item in value.to_str().unwrap_or("").split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let q = parts.find_map(|p| p.trim().strip_prefix("q=")).map_or(1000, |q| {
                // q is 0..1 with up to three decimals: compared as thousandths, no floats.
                let (whole, frac) = q.split_once('.').unwrap_or((q, ""));
                let frac: String = frac.chars().chain("000".chars()).take(3).collect();
                whole.parse::<u16>().unwrap_or(0).min(1) * 1000 + frac.parse::<u16>().unwrap_or(0)
            });
            if let Some(l) = known(tag) {
                if q > 0 && best.is_none_or(|(bq, _)| q > bq) {
                    best = Some((q, l));
                }
            }
        }
    }
    best.map_or(CONSOLE_LANGS[0], |(_, l)| l)
}

async fn console(headers: axum::http::HeaderMap) -> Response {
    let lang = console_lang(&headers);
    let body = CONSOLE.replacen("<html lang=\"en\">", &format!("<html lang=\"{lang}\">"), 1);
    let mut r = page("text/html; charset=utf-8", body);
    r.headers_mut().insert(
        header::VARY,
        axum::http::HeaderValue::from_static("Accept-Language, Cookie"),
    );
    r
}

async fn console_i18n_js() -> Response {
    page("text/javascript; charset=utf-8", CONSOLE_I18N_JS)
}

async fn console_js() -> Response {
    page("text/javascript; charset=utf-8", CONSOLE_JS)
}

async fn console_css() -> Response {
    page("text/css; charset=utf-8", CONSOLE_CSS)
}

async fn stepup_js() -> Response {
    page("text/javascript; charset=utf-8", STEPUP_JS)
}

/// The paths of the static pages and their files.
const PAGES: [&str; 9] = [
    "/",
    "/freeze",
    "/app.js",
    "/app.css",
    "/console",
    "/console.js",
    "/console.css",
    "/stepup.js",
    "/console.i18n.js",
];

/// Whether `route` is one of the static pages or their files (not an API call).
pub(crate) fn is_page(route: &str) -> bool {
    PAGES.contains(&route)
}

pub fn router() -> Router<AppState> {
    let r = Router::new()
        .route(PAGES[0], get(index))
        .route(PAGES[1], get(index))
        .route(PAGES[2], get(app_js))
        .route(PAGES[3], get(app_css))
        .route(PAGES[4], get(console))
        .route(PAGES[5], get(console_js))
        .route(PAGES[6], get(console_css));
    r.route(PAGES[7], get(stepup_js))
        .route(PAGES[8], get(console_i18n_js))
}
