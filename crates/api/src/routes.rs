//! Every route of the gateway, composed in one place: `/health`, `/ready`, `/metrics`; `/api/v1`
//! (account, custody, operator and native routes with their one OpenAPI document, and the
//! WebSocket); the Coinbase-compatible surface; the web pages. Each surface module only lists
//! its own routes; none mounts another's.

use crate::error::ErrorBody;
use crate::AppState;
use axum::routing::get;
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kinko native API",
        description = "Amounts and prices are decimal strings in the asset's units. Private endpoints take `Authorization: Bearer <key id>.<secret>` (an API key) or `Bearer kss_…` (a session from `/auth/login`). Sensitive actions answer `STEP_UP_REQUIRED` with a challenge; repeat them with `step_up` holding a TOTP code or a WebAuthn assertion over that challenge. Every error is `{\"code\", \"message\"}` with a stable code.",
        version = "1"
    ),
    servers((url = "/api/v1")),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;
impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("<key id>.<secret>, or a session token kss_…")
                    .build(),
            ),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("kss_… (from /auth/login)")
                    .build(),
            ),
        );
        c.add_security_scheme(
            "operator",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("the operator token (KINKO_OPERATOR_TOKEN)")
                    .build(),
            ),
        );
    }
}

/// What any operation may answer whatever its own inputs — too many requests (per IP, per key),
/// the engine or read side unavailable — and, for operations with a JSON body, a body over the
/// limit or of another content type; plus a description for every response. Applied to the
/// document once the routes have added their paths (`ApiDoc`'s own modifiers run before that).
struct CommonResponses;
impl utoipa::Modify for CommonResponses {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, RefOr, Response};
        let error = |description: &str| {
            let mut r = Response::new(description);
            r.content.insert(
                "application/json".into(),
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            );
            RefOr::T(r)
        };
        for item in api.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let has_body = op.request_body.is_some();
                let r = &mut op.responses.responses;
                for (status, description) in [
                    ("429", "Too many requests from this address or API key (`RATE_LIMITED`)."),
                    ("503", "Unavailable; the command, if any, did not happen (`ENGINE_OVERLOADED`, `ENGINE_STOPPING`, `ENGINE_HALTED`, `JOURNAL_FULL`, `ENGINE_UNAVAILABLE`, the read side behind), except `OUTCOME_UNKNOWN`: it may have, look it up by its client id."),
                ] {
                    r.entry(status.into()).or_insert_with(|| error(description));
                }
                // The operator token's routes are refused while no token is configured.
                let operator = op.security.iter().flatten().any(|s| {
                    serde_json::to_value(s)
                        .ok()
                        .and_then(|v| v.as_object().map(|o| o.contains_key("operator")))
                        .unwrap_or(false)
                });
                if operator {
                    // (Described below, with the route's own reasons for a 403 if it has any.)
                    r.entry("403".into()).or_insert_with(|| error(""));
                }
                // Any JSON body can be malformed or miss a field (`INVALID_JSON`), any path
                // segment can be undecodable (`INVALID_PARAMETER`).
                let has_path_params = op
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Path);
                if has_body || has_path_params {
                    r.entry("400".into()).or_insert_with(|| {
                        error("Malformed JSON or parameters, or refused by a check (see `code`).")
                    });
                }
                if has_body {
                    r.entry("413".into())
                        .or_insert_with(|| error("The body is over the size limit (`PAYLOAD_TOO_LARGE`)."));
                    r.entry("415".into()).or_insert_with(|| {
                        error("The body is not `application/json` (`CONTENT_TYPE_INVALID`).")
                    });
                }
                for (status, resp) in r.iter_mut() {
                    if let RefOr::T(resp) = resp {
                        if resp.description.is_empty() {
                            resp.description = match status.as_str() {
                                "200" => "Success.",
                                "400" => "Malformed JSON or parameters, or refused by a check (see `code`).",
                                "401" => "Missing or invalid API key (`UNAUTHORIZED`).",
                                "403" if operator => "The operator API is off: no operator token is configured (`FORBIDDEN`); or refused by a check (see `code`).",
                                "403" => "The API key lacks the permission (`FORBIDDEN`), or the market, asset or address does not allow this now.",
                                "404" => "No such market, asset or record of the caller.",
                                "409" => "Conflicts with an earlier request or the record's state.",
                                _ => "See `code`.",
                            }
                            .into();
                        }
                    }
                }
            }
        }
    }
}

fn split() -> (axum::Router<AppState>, serde_json::Value) {
    let r = OpenApiRouter::with_openapi(ApiDoc::openapi());
    let r = crate::account::routes(r);
    let r = crate::custody::routes(r);
    let r = crate::ops::routes(r);
    let r = crate::console_api::routes(r);
    let r = crate::proofs::routes(r);
    let (router, mut doc) = crate::native::routes(r).split_for_parts();
    utoipa::Modify::modify(&CommonResponses, &mut doc);
    let mut doc = serde_json::to_value(doc).expect("the OpenAPI document is JSON");
    crate::schema::exact_requests(&mut doc);
    (router, doc)
}

/// The OpenAPI document of `/api/v1` (native, account, operator and custody routes), as JSON,
/// as a server with the default configuration serves it.
pub fn openapi() -> serde_json::Value {
    let mut doc = split().1;
    crate::schema::api_key_days_max(
        &mut doc,
        crate::account::IdentityConfig::default().api_key_days_max,
    );
    doc
}

/// `/api/v1`: its routes, the OpenAPI document and the WebSocket. The document states this
/// server's configured bounds where a request depends on them (`identity.api_key_days_max`).
fn api_v1(state: &AppState) -> axum::Router<AppState> {
    let (r, mut doc) = split();
    crate::schema::api_key_days_max(&mut doc, state.config.identity.api_key_days_max);
    let doc = std::sync::Arc::new(doc);
    r.route(
        "/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json((*doc).clone()) }
        }),
    )
    .route("/ws", axum::routing::get(crate::ws::upgrade))
}

/// The whole HTTP surface. Tests call it without a socket; `serve` puts it on one.
pub fn router(state: AppState) -> Router {
    let body_max = state.config.body_bytes_max;
    Router::new()
        .route("/health", get(crate::health))
        .route("/ready", get(crate::ready))
        .route("/metrics", get(crate::metrics_text))
        .nest("/api/v1", api_v1(&state))
        .merge(crate::coinbase::router())
        .merge(crate::web::router())
        .fallback(crate::not_found)
        .method_not_allowed_fallback(crate::method_not_allowed)
        // Inside `observe`, so that a caught panic is counted and logged with its request id.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            crate::panic_response,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::observe,
        ))
        // Outside `observe`: the client behind a trusted proxy is known before it is limited.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::real_client,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(body_max))
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
            tower_http::request_id::MakeRequestUuid,
        ))
        .with_state(state)
}
