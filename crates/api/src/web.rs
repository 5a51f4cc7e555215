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

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
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

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn app_js() -> Response {
    page("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    page("text/css; charset=utf-8", APP_CSS)
}

async fn console() -> Response {
    page("text/html; charset=utf-8", CONSOLE)
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
const PAGES: [&str; 8] = [
    "/",
    "/freeze",
    "/app.js",
    "/app.css",
    "/console",
    "/console.js",
    "/console.css",
    "/stepup.js",
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
}
