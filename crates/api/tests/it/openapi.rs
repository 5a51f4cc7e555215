//! The OpenAPI document served at `/api/v1/openapi.json` kept true: it is checked for
//! structure, then every documented operation is called against the running server — with valid
//! inputs (the answer must be a documented 2xx whose body fits the documented schema exactly)
//! and with inputs a client can get wrong (no key, a key without permissions, bad query and path
//! values, bad bodies: each answer must be a documented status with a documented body). Methods
//! a documented path does not list must be refused with 405.

use crate::harness::{outbox, token_after, wait_for_mails, Authenticator, TestServer, User, OPERATOR_TOKEN};
use crate::harness::{Factor, BTC};
use crate::native::{bearer, call, is_error_body, key_with, place, usable_address, uuid, Resp};
use kinko_core::engine::Command;
use kinko_core::identity::{AdminRole, IdentityCommand, Policy};
use kinko_core::keys::Permissions;
use kinko_core::risk::{Condition, Decision, RiskPolicy, RiskRule};
use kinko_core::UserId;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

const OPERATION_KEYS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The native endpoints. A new endpoint must be added here (and documented: the test checks
/// that the document lists exactly these).
const ENDPOINTS: &[(&str, &str)] = &[
    ("get", "/assets"),
    ("get", "/markets"),
    ("get", "/markets/{symbol}"),
    ("get", "/markets/{symbol}/book"),
    ("get", "/markets/{symbol}/trades"),
    ("get", "/markets/{symbol}/ticker"),
    ("get", "/markets/{symbol}/candles"),
    ("get", "/balances"),
    ("post", "/orders"),
    ("get", "/orders"),
    ("delete", "/orders"),
    ("get", "/orders/{id}"),
    ("delete", "/orders/{id}"),
    ("get", "/fills"),
    ("post", "/deposit-addresses"),
    ("get", "/deposit-addresses"),
    ("get", "/deposits"),
    ("post", "/withdrawal-addresses"),
    ("get", "/withdrawal-addresses"),
    ("delete", "/withdrawal-addresses/{id}"),
    ("post", "/withdrawals"),
    ("get", "/withdrawals"),
    ("get", "/withdrawals/{id}"),
    ("delete", "/withdrawals/{id}"),
    ("post", "/auth/register"),
    ("post", "/auth/login"),
    ("post", "/auth/login/second-factor"),
    ("post", "/auth/logout"),
    ("post", "/auth/password-reset"),
    ("post", "/auth/password-reset/confirm"),
    ("post", "/auth/freeze"),
    ("get", "/me"),
    ("get", "/me/sessions"),
    ("post", "/me/sessions/revoke-others"),
    ("delete", "/me/sessions/{id}"),
    ("post", "/me/totp"),
    ("delete", "/me/totp"),
    ("post", "/me/totp/confirm"),
    ("post", "/me/passkeys/options"),
    ("post", "/me/passkeys"),
    ("delete", "/me/passkeys/{id}"),
    ("post", "/me/recovery-codes"),
    ("post", "/me/password"),
    ("post", "/me/email"),
    ("post", "/me/anti-phishing"),
    ("post", "/me/api-keys"),
    ("get", "/me/api-keys"),
    ("delete", "/me/api-keys/{id}"),
    ("get", "/me/restitutions"),
    ("post", "/admin/revoke-everything"),
    ("post", "/admin/roles"),
    ("post", "/admin/users/{id}/status"),
    ("get", "/admin/custody/{asset}"),
    ("post", "/admin/custody/{asset}/refill"),
    ("post", "/admin/custody/{asset}/submit"),
    ("post", "/sim/deposits"),
    ("get", "/ops/withdrawals/held"),
    ("get", "/ops/signer-admin"),
    ("post", "/ops/withdrawals/{id}/review"),
    ("get", "/ops/proposals"),
    ("post", "/ops/proposals"),
    ("post", "/ops/proposals/{id}/approve"),
    ("post", "/ops/halt"),
    ("get", "/ops/incidents"),
    ("post", "/ops/incidents/{id}/resolve"),
    ("post", "/ops/customers/lookup"),
    ("post", "/ops/customers/{id}/freeze"),
    ("get", "/ops/platform"),
    ("get", "/status"),
    ("get", "/proofs/liabilities"),
    ("get", "/account/proofs/{asset}"),
    ("get", "/withdrawal-limits"),
    ("post", "/me/language"),
    ("get", "/me/security-log"),
];

// ---------------------------------------------------------------------------------------------
// A small JSON Schema checker for what utoipa emits (OpenAPI 3.1 schemas).

/// Follows `$ref`s (local ones only) to the schema they name.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..32 {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else {
            return v;
        };
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        v = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("$ref {r} does not resolve"));
    }
    panic!("$ref cycle");
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unknown schema type {other}"),
    }
}

/// Checks `value` against `schema`: types, `required` properties present, no property the
/// schema does not list, array items, enums and integer minimums. Problems go to `errs`.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, errs: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(doc, s, value, at, errs);
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(any) = schema.get(key).and_then(Value::as_array) {
            let fits = any.iter().filter(|s| {
                let mut e = Vec::new();
                check(doc, s, value, at, &mut e);
                e.is_empty()
            });
            let n = fits.count();
            if n == 0 || (key == "oneOf" && n > 1) {
                errs.push(format!("{at}: {value} fits {n} of the {key} variants"));
            }
        }
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().map(|x| x.as_str().unwrap()).collect(),
            other => panic!("bad type {other}"),
        };
        if !types.iter().any(|t| type_matches(t, value)) {
            errs.push(format!("{at}: {value} is not of type {t}"));
            return;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(value) {
            errs.push(format!("{at}: {value} is not one of {e:?}"));
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_i64), value.as_i64()) {
        if n < min {
            errs.push(format!("{at}: {n} is below the minimum {min}"));
        }
    }
    if let (Some(max), Some(n)) = (schema.get("maximum").and_then(Value::as_i64), value.as_i64()) {
        if n > max {
            errs.push(format!("{at}: {n} is above the maximum {max}"));
        }
    }
    if let Some(t) = value.as_str() {
        let n = t.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
            if n < min {
                errs.push(format!("{at}: {t:?} is shorter than {min} characters"));
            }
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
            if n > max {
                errs.push(format!("{at}: {t:?} is longer than {max} characters"));
            }
        }
    }
    if let (Some(p), Some(t)) = (schema.get("pattern").and_then(Value::as_str), value.as_str()) {
        if !matches_pattern(p, t) {
            errs.push(format!("{at}: {t:?} does not match the pattern {p}"));
        }
    }
    if let (Some("date-time"), Some(t)) = (schema.get("format").and_then(Value::as_str), value.as_str()) {
        if !is_rfc3339(t) {
            errs.push(format!("{at}: {t:?} is not an RFC 3339 date-time"));
        }
    }
    if let Some(obj) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        // An object schema with neither `properties` nor `additionalProperties` is free-form
        // (`Object`: a WebAuthn options object, a step-up challenge).
        let free_form = props.is_none() && schema.get("additionalProperties").is_none();
        if !free_form {
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let r = r.as_str().unwrap();
                if !obj.contains_key(r) {
                    errs.push(format!("{at}: required property {r:?} is missing"));
                }
            }
            for (k, v) in obj {
                match (props.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                    (Some(s), _) => check(doc, s, v, &format!("{at}.{k}"), errs),
                    (None, Some(extra)) if extra.is_object() => {
                        check(doc, extra, v, &format!("{at}.{k}"), errs)
                    }
                    (None, Some(Value::Bool(true))) => {}
                    (None, _) => errs.push(format!("{at}: property {k:?} is not in the schema")),
                }
            }
        }
    }
    if let (Some(min), Some(arr)) = (schema.get("minItems").and_then(Value::as_u64), value.as_array()) {
        if (arr.len() as u64) < min {
            errs.push(format!("{at}: fewer than {min} items"));
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check(doc, items, v, &format!("{at}[{i}]"), errs);
        }
    }
}

/// The schema itself, or of its `oneOf` / `anyOf` variants the first that `value` fits.
fn shape_of<'a>(doc: &'a Value, schema: &'a Value, value: &Value) -> &'a Value {
    let schema = resolve(doc, schema);
    for key in ["oneOf", "anyOf"] {
        for v in schema.get(key).and_then(Value::as_array).into_iter().flatten() {
            let mut e = Vec::new();
            check(doc, v, value, "", &mut e);
            if e.is_empty() {
                return resolve(doc, v);
            }
        }
    }
    schema
}

/// The pattern of decimal strings (amounts, prices, sizes) in the document.
const DECIMAL: &str = r"^[0-9]+(\.[0-9]+)?$";
/// Asset codes and market symbols.
const ASSET: &str = r"^[A-Z0-9]{1,12}$";
const SYMBOL: &str = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$";
/// Numeric ids.
const ID: &str = r"^[0-9]{1,19}$";
/// Client ids (the dashes are optional).
const UUID: &str = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$";
/// Balances that may be negative (the ledger's system accounts).
const SIGNED_DECIMAL: &str = r"^-?[0-9]+(\.[0-9]+)?$";
/// Email addresses, base64url, step-up challenges and anti-phishing codes, as the server's
/// schema module writes them.
const EMAIL: &str = kinko_api::schema::EMAIL_PATTERN;
const BASE64URL: &str = kinko_api::schema::BASE64URL_PATTERN;
const CHALLENGE: &str = kinko_api::schema::CHALLENGE_PATTERN;
const ANTI_PHISHING: &str = kinko_api::schema::ANTI_PHISHING_PATTERN;
const IPV4_CIDR: &str = kinko_api::schema::IPV4_CIDR_PATTERN;

/// The patterns the document uses, checked without a regex engine; another one fails the test
/// until the checker knows it.
fn matches_pattern(pattern: &str, t: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match pattern {
        DECIMAL => match t.split_once('.') {
            Some((i, f)) => digits(i) && digits(f),
            None => digits(t),
        },
        SIGNED_DECIMAL => matches_pattern(DECIMAL, t.strip_prefix('-').unwrap_or(t)),
        ID => digits(t) && t.len() <= 19,
        ASSET => {
            (1..=12).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        }
        SYMBOL => t
            .split_once('-')
            .is_some_and(|(b, q)| matches_pattern(ASSET, b) && matches_pattern(ASSET, q)),
        UUID => {
            // Groups of 8, 4, 4, 4 and 12 hex digits, each of the first four optionally
            // followed by a dash.
            let mut rest = t;
            [8, 4, 4, 4, 12].iter().enumerate().all(|(i, &n)| {
                let ok = rest.len() >= n && rest.as_bytes()[..n].iter().all(u8::is_ascii_hexdigit);
                if ok {
                    rest = &rest[n..];
                    if i < 4 {
                        rest = rest.strip_prefix('-').unwrap_or(rest);
                    }
                }
                ok
            }) && rest.is_empty()
        }
        EMAIL => {
            // One `@`; printable ASCII without `<>",;`; a domain with a dot, not at either end.
            let allowed = |b: u8| b.is_ascii_graphic() && !b"<>\",;".contains(&b);
            t.bytes().all(allowed)
                && t.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty()
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                })
        }
        BASE64URL => {
            let b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            let last = t.bytes().last();
            t.bytes().all(b64)
                && match t.len() % 4 {
                    0 => true,
                    1 => false,
                    // The unused low bits of the last character are zero.
                    2 => last.is_some_and(|b| b"AQgw".contains(&b)),
                    _ => last.is_some_and(|b| b"AEIMQUYcgkosw048".contains(&b)),
                }
        }
        CHALLENGE => {
            let body = t.trim_end_matches('=');
            body.len() == 80
                && body.starts_with("S1NVM")
                && matches!(body.as_bytes()[5], b'Q'..=b'Z' | b'a'..=b'f')
                && body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }
        ANTI_PHISHING => {
            (4..=32).contains(&t.len())
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b" -_.!".contains(&b))
                && !t.starts_with(' ')
                && !t.ends_with(' ')
        }
        IPV4_CIDR => t.split_once('/').is_some_and(|(ip, len)| {
            ip.parse::<std::net::Ipv4Addr>().is_ok()
                && (1..=2).contains(&len.len())
                && !(len.len() == 2 && len.starts_with('0'))
                && len.parse::<u8>().is_ok_and(|l| l <= 32)
        }),
        other => panic!("the checker does not know the pattern {other}: teach it"),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`: what the server writes for times.
fn is_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    let digit_at = |i: &[usize]| i.iter().all(|&i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digit_at(&[0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
        && (b[4], b[7], b[10], b[13], b[16]) == (b'-', b'-', b'T', b':', b':')
        && t.ends_with('Z')
        && (b.len() == 20 || (b[19] == b'.' && digit_at(&(20..b.len() - 1).collect::<Vec<_>>())))
}

fn assert_fits(doc: &Value, schema: &Value, value: &Value, ctx: &str) {
    let mut errs = Vec::new();
    check(doc, schema, value, "$", &mut errs);
    assert!(
        errs.is_empty(),
        "{ctx}: the body does not fit the documented schema:\n{}\nbody: {value}",
        errs.join("\n")
    );
}

/// Every `$ref` anywhere in the document resolves.
fn all_refs_resolve(doc: &Value, v: &Value, n: &mut usize) {
    match v {
        Value::Object(o) => {
            if let Some(r) = o.get("$ref") {
                let r = r.as_str().expect("$ref is a string");
                assert!(
                    r.strip_prefix('#').and_then(|p| doc.pointer(p)).is_some(),
                    "$ref {r} does not resolve"
                );
                *n += 1;
            }
            o.values().for_each(|x| all_refs_resolve(doc, x, n));
        }
        Value::Array(a) => a.iter().for_each(|x| all_refs_resolve(doc, x, n)),
        _ => {}
    }
}

/// A keyword of `schema` (`minimum`, `maximum`, `enum`), looked for through `$ref`s and the
/// variants of `oneOf`/`anyOf`/`allOf` (an optional value is `oneOf` null and the value).
fn keyword<'a>(doc: &'a Value, schema: &'a Value, key: &str) -> Option<&'a Value> {
    let schema = resolve(doc, schema);
    if let Some(v) = schema.get(key) {
        return Some(v);
    }
    ["oneOf", "anyOf", "allOf"]
        .iter()
        .filter_map(|k| schema.get(*k).and_then(Value::as_array))
        .flatten()
        .find_map(|s| keyword(doc, s, key))
}

/// Properties whose values are names from a fixed list: the schema must list them.
const ENUM_PROPERTIES: [&str; 9] = [
    "side",
    "level",
    "type",
    "time_in_force",
    "stp",
    "status",
    "state",
    "liquidity",
    "cancel_reason",
];

/// Query parameters with the values the server takes: bounds for numbers, a list for names.
const BOUNDED_QUERY: [&str; 2] = ["depth", "limit"];
const ENUM_QUERY: [&str; 2] = ["granularity", "status"];

// ---------------------------------------------------------------------------------------------
// The document's own structure.

struct Operation<'a> {
    method: &'static str,
    path: &'a str,
    op: &'a Value,
}

impl<'a> Operation<'a> {
    fn secured(&self) -> bool {
        self.scheme().is_some()
    }
    /// The security scheme the operation names: `api_key`, `session` or `operator`.
    fn scheme(&self) -> Option<&'a str> {
        self.op
            .get("security")?
            .as_array()?
            .first()?
            .as_object()?
            .keys()
            .next()
            .map(String::as_str)
    }
    /// Whether the response for `status` is documented without a body (204, 202).
    fn bodiless(&self, doc: &'a Value, status: u16) -> bool {
        self.op["responses"]
            .get(status.to_string())
            .map(|r| resolve(doc, r))
            .is_some_and(|r| r.get("content").is_none())
    }
    fn params(&self, location: &str) -> Vec<&Value> {
        self.op
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == location)
            .collect()
    }
    fn statuses(&self) -> BTreeSet<u16> {
        self.op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.parse().unwrap())
            .collect()
    }
    fn name(&self) -> String {
        format!("{} {}", self.method.to_uppercase(), self.path)
    }
    /// The response schema documented for `status`, if any (JSON content).
    fn response_schema(&self, doc: &'a Value, status: u16) -> Option<&'a Value> {
        let r = resolve(doc, self.op["responses"].get(status.to_string())?);
        r.get("content")?.get("application/json")?.get("schema")
    }
    /// Whether the operation documents a request body.
    fn request_schema_path(&self) -> bool {
        self.op.get("requestBody").is_some()
    }
    fn request_schema(&self, doc: &'a Value) -> Option<&'a Value> {
        let b = resolve(doc, self.op.get("requestBody")?);
        b.get("content")?.get("application/json")?.get("schema")
    }
}

fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let mut v = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (k, op) in item.as_object().unwrap() {
            if let Some(m) = OPERATION_KEYS.iter().find(|m| *m == k) {
                v.push(Operation { method: m, path, op });
            }
        }
    }
    v
}

fn validate_document(doc: &Value) {
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3."),
        "not OpenAPI 3: {}",
        doc["openapi"]
    );
    assert!(
        !doc["info"]["title"].as_str().unwrap_or("").is_empty(),
        "info.title"
    );
    assert!(
        !doc["info"]["version"].as_str().unwrap_or("").is_empty(),
        "info.version"
    );
    assert_eq!(doc["servers"][0]["url"], "/api/v1");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    for scheme in ["api_key", "session", "operator"] {
        assert_eq!(schemes[scheme]["type"], "http", "{scheme}");
        assert_eq!(schemes[scheme]["scheme"], "bearer", "{scheme}");
    }
    let mut n = 0;
    all_refs_resolve(doc, doc, &mut n);
    assert!(n > 20, "the document uses component schemas");
    for (path, item) in paths {
        assert!(path.starts_with('/') && !path.ends_with('/'), "{path}");
        for k in item.as_object().unwrap().keys() {
            assert!(
                OPERATION_KEYS.contains(&k.as_str())
                    || ["parameters", "summary", "description"].contains(&k.as_str()),
                "{path}: unexpected key {k}"
            );
        }
    }
    let mut ids = BTreeSet::new();
    let mut listed = BTreeSet::new();
    for o in operations(doc) {
        let name = o.name();
        listed.insert((o.method, o.path.to_owned()));
        let id = o.op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no operationId"));
        assert!(
            ids.insert(id.to_owned()),
            "{name}: operationId {id} is not unique"
        );
        assert!(
            !o.op["summary"].as_str().unwrap_or("").is_empty(),
            "{name}: no summary"
        );
        let responses = o.op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: no responses"));
        assert!(
            responses.keys().any(|k| k.starts_with('2')),
            "{name}: no success response"
        );
        for (status, r) in responses {
            let code: u16 = status
                .parse()
                .unwrap_or_else(|_| panic!("{name}: status {status}"));
            assert!((200..600).contains(&code), "{name}: status {status}");
            let r = resolve(doc, r);
            assert!(
                r["description"].is_string(),
                "{name} {status}: a response needs a description"
            );
            let schema = o.response_schema(doc, code);
            if o.bodiless(doc, code) {
                assert!(
                    [202, 204].contains(&code),
                    "{name} {status}: only 202 and 204 may go without a body"
                );
                continue;
            }
            assert!(schema.is_some(), "{name} {status}: no JSON body documented");
            if code >= 400 {
                assert_eq!(
                    schema.unwrap().get("$ref").and_then(Value::as_str),
                    Some("#/components/schemas/ErrorBody"),
                    "{name} {status}: errors are ErrorBody"
                );
            }
        }
        // Path parameters and the template agree.
        let in_template: BTreeSet<String> = o
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|x| x.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let declared: BTreeSet<String> = o
            .params("path")
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(in_template, declared, "{name}: path parameters");
        for p in o.params("path") {
            assert_eq!(p["required"], true, "{name}: path parameters are required");
        }
        let mut names = BTreeSet::new();
        for p in
            o.op.get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        {
            let loc = p["in"].as_str().unwrap();
            assert!(
                ["path", "query", "header", "cookie"].contains(&loc),
                "{name}: parameter in {loc}"
            );
            assert!(
                names.insert((loc, p["name"].as_str().unwrap())),
                "{name}: duplicate parameter {p}"
            );
            assert!(p.get("schema").is_some(), "{name}: parameter without schema {p}");
        }
        for req in
            o.op.get("security")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        {
            for scheme in req.as_object().unwrap().keys() {
                assert!(
                    schemes.contains_key(scheme),
                    "{name}: unknown security scheme {scheme}"
                );
            }
        }
        // (A POST without a documented body is an action on the caller's own state, like
        // logging out: it is called without one below, and must succeed.)
        if let Some(b) = o.op.get("requestBody") {
            assert!(
                o.request_schema(doc).is_some(),
                "{name}: a request body that is not JSON: {b}"
            );
        }
    }
    // Names from a fixed list are enums in the schema, not free strings.
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        for (prop, ps) in schema["properties"].as_object().into_iter().flatten() {
            if ENUM_PROPERTIES.contains(&prop.as_str()) {
                assert!(
                    keyword(doc, ps, "enum").is_some(),
                    "{name}.{prop}: a free string where the values are a fixed list: {ps}"
                );
            }
        }
    }
    for o in operations(doc) {
        for p in o.params("query") {
            let pname = p["name"].as_str().unwrap();
            let schema = &p["schema"];
            // Every query parameter has a default (the valid calls below leave them out).
            assert_ne!(p["required"], json!(true), "{}: {pname} is optional", o.name());
            if BOUNDED_QUERY.contains(&pname) {
                assert!(
                    keyword(doc, schema, "minimum").is_some() && keyword(doc, schema, "maximum").is_some(),
                    "{}: {pname} without its bounds: {schema}",
                    o.name()
                );
            }
            if ENUM_QUERY.contains(&pname) {
                assert!(
                    keyword(doc, schema, "enum").is_some(),
                    "{}: {pname} without its values: {schema}",
                    o.name()
                );
            }
        }
    }
    let expected: BTreeSet<(&str, String)> = ENDPOINTS.iter().map(|(m, p)| (*m, (*p).to_owned())).collect();
    assert_eq!(
        listed, expected,
        "the document lists exactly the native endpoints"
    );
}

// ---------------------------------------------------------------------------------------------
// Calling every operation.

struct Fixtures {
    /// User 0's native API key (`api_key` operations).
    token: String,
    /// User 0's full session (`session` operations).
    session: String,
    operator: String,
    no_permissions: String,
    order_id: String,
    withdrawal_address_id: String,
    usable_address_id: String,
    withdrawal_id: String,
    sim_address: String,
    /// User 0's ETH deposit address (for the simulated chain's deposits).
    deposit_address: String,
    /// Frozen by `/auth/freeze`, set active by the operator.
    freeze_user: UserId,
    /// Gets the security-admin role through `/admin/roles` (before any `/ops` change).
    second_admin: String,
    /// Resets its password by `/auth/password-reset/confirm`.
    reset_email: String,
    outbox: PathBuf,
}

impl Fixtures {
    /// The bearer token for an operation's security scheme.
    fn auth(&self, o: &Operation<'_>) -> Option<String> {
        o.scheme().map(|scheme| match scheme {
            "api_key" => self.token.clone(),
            "session" => bearer(&self.session),
            "operator" => bearer(&self.operator),
            other => panic!("unknown security scheme {other}"),
        })
    }
}

/// A valid value for each documented query parameter.
fn query_value(f: &Fixtures, name: &str) -> String {
    match name {
        "depth" => "5".into(),
        "limit" => "10".into(),
        "granularity" => "300".into(),
        "market" => "BTC-USD".into(),
        "status" => "all".into(),
        "asset" => "BTC".into(),
        "order_id" => f.order_id.clone(),
        // The security log's cursor: events older than this trail index.
        "before" => "1000000".into(),
        other => panic!("no valid value known for query parameter {other:?}: add one"),
    }
}

fn path_value(f: &Fixtures, path: &str, name: &str) -> String {
    match (path, name) {
        (_, "symbol") => "BTC-USD".into(),
        (p, "id") if p.starts_with("/orders/") => f.order_id.clone(),
        (p, "id") if p.starts_with("/withdrawal-addresses/") => f.withdrawal_address_id.clone(),
        (p, "id") if p.starts_with("/withdrawals/") => f.withdrawal_id.clone(),
        (p, "id") if p.starts_with("/admin/users/") => f.freeze_user.0.to_string(),
        (p, "asset") if p.starts_with("/admin/custody/") => "BTC".into(),
        (p, "asset") if p.starts_with("/account/proofs/") => "BTC".into(),
        // Found when the operation is called (see `prepare`); for the probes, any.
        (p, "id") if p.starts_with("/ops/") => "1".into(),
        // Found when the operation is called (see `prepare`); for the probes, any.
        (p, "id") if p.starts_with("/me/") => "AAAAAAAAAAAAAAAAAAAAAA".into(),
        other => panic!("no value known for path parameter {other:?}: add one"),
    }
}

/// A request body of the right shape for each documented POST (every optional field used where
/// valid). Operations that need fresh state to succeed get their valid body from `prepare`.
fn body_for(f: &Fixtures, path: &str, n: u128) -> Value {
    match path {
        "/orders" => json!({
            "market": "BTC-USD", "side": "buy", "type": "limit", "price": "29000", "size": "0.01",
            "time_in_force": "gtc", "client_order_id": uuid(500 + n), "stp": "cancel_newest",
        }),
        "/deposit-addresses" => json!({"asset": "BTC"}),
        "/withdrawal-addresses" => json!({"asset": "ETH", "address": f.sim_address, "label": "spec"}),
        "/withdrawals" => {
            json!({"address_id": f.usable_address_id, "amount": "0.01", "client_id": uuid(600 + n)})
        }
        "/auth/register" => {
            json!({"email": format!("spec{n}@kinko.test"), "password": "a long enough password"})
        }
        "/auth/login" => {
            json!({"email": "nobody@kinko.test", "password": "a long enough password", "device": "spec"})
        }
        "/auth/login/second-factor" => json!({"step_up": {"totp": "123456"}}),
        "/auth/password-reset" => json!({"email": "nobody@kinko.test"}),
        "/auth/password-reset/confirm" => json!({"token": "kpr_x", "new_password": "a long enough password"}),
        "/auth/freeze" => json!({"token": "x"}),
        "/me/totp"
        | "/me/passkeys/{id}"
        | "/me/recovery-codes"
        | "/me/sessions/revoke-others"
        | "/me/sessions/{id}"
        | "/me/api-keys/{id}" => json!({}),
        "/me/totp/confirm" => json!({"enrolment": "AAAA", "code": "123456"}),
        "/me/passkeys" => json!({
            "enrolment": "AAAA",
            "credential": {"id": "AAAA", "rawId": "AAAA", "type": "public-key",
                "response": {"clientDataJSON": "AAAA", "attestationObject": "AAAA"}},
            "label": "spec",
        }),
        "/me/password" => json!({"current_password": "x", "new_password": "a long enough password"}),
        "/me/email" => json!({"email": format!("spec-email{n}@kinko.test")}),
        "/me/anti-phishing" => json!({"code": format!("spec code {}", n % 1000)}),
        "/me/language" => json!({"language": if n.is_multiple_of(2) { "ja" } else { "en" }}),
        "/me/api-keys" => json!({
            "label": "spec", "scopes": {"view": true, "trade": true, "withdraw": false},
            "ip_allowlist": ["127.0.0.1"], "expires_in_days": 30,
        }),
        "/admin/revoke-everything" => json!({"requested_by": "spec", "reason": "the OpenAPI test"}),
        "/admin/users/{id}/status" => {
            json!({"status": "frozen", "requested_by": "spec", "reason": "reviewed"})
        }
        // The second security admin: the operator's bootstrap is open until two exist.
        "/admin/roles" => json!({
            "user": f.second_admin, "role": "security_admin", "requested_by": "spec", "reason": "bootstrap",
        }),
        "/admin/custody/{asset}/refill" => json!({"amount": "0.5"}),
        "/admin/custody/{asset}/submit" => json!({"psbt": "cHNidP8B"}),
        "/sim/deposits" => json!({"address": f.deposit_address, "amount": "0.25"}),
        "/ops/withdrawals/{id}/review" => json!({"approve": true, "reason": "spec review"}),
        "/ops/proposals" => json!({"kind": "resume_withdrawals", "asset": "ETH", "reason": "spec"}),
        "/ops/proposals/{id}/approve" => json!({}),
        "/ops/halt" => json!({"asset": "ETH", "reason": "spec drill"}),
        "/ops/incidents/{id}/resolve" => json!({"resolution": "spec: explained"}),
        "/ops/customers/lookup" => json!({"query": "1"}),
        "/ops/customers/{id}/freeze" => json!({"reason": "spec: suspected takeover"}),
        other => panic!("no request body known for POST {other}: add one"),
    }
}

/// Who answers a step-up challenge for a prepared call.
enum Prover<'a> {
    Harness(&'a User),
    Own(Box<User>),
}

/// A call that must succeed: its token, path and body, and who answers a step-up.
struct Prepared<'a> {
    auth: Option<String>,
    path: String,
    body: Option<Value>,
    prover: Prover<'a>,
}

/// Logs `u` in: a password-level session and its second-factor challenge.
async fn password_session(s: &TestServer, u: &User) -> (String, String) {
    let (st, r) = s
        .request(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": u.email, "password": u.password, "device": "spec"})),
        )
        .await;
    assert_eq!((st, &r["level"]), (200, &json!("password")), "{r}");
    let challenge = r["second_factor"]["challenge"].as_str().unwrap().to_owned();
    (r["token"].as_str().unwrap().to_owned(), challenge)
}

/// A proof of liabilities published for the proof routes: a BTC tree over the test users, its
/// root signed, as `kinko proof build` writes it (the first call publishes it).
fn publish_proofs(s: &TestServer) {
    use kinko_verify::tree::{build, salt, sign_root, LeafInput};
    s.gateway.proofs.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "kinko-openapi-proofs-{}-{n}",
            std::process::id(),
            n = kinko_api::auth::now_ns()
        ));
        let leaves = s
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| LeafInput {
                user: u.id.0,
                salt: salt(&[3; 32], "BTC", 1, u.id.0),
                balance: i128::try_from(i).unwrap() * 1_000 + 5,
            })
            .collect();
        let tree = build(leaves).unwrap();
        let mut root = tree.unsigned_root("BTC", 8, 1, "2026-01-01T00:00:00.000000Z");
        sign_root(
            &mut root,
            kinko_verify::KEY_AUDIT,
            &ed25519_dalek::SigningKey::from_bytes(&[4; 32]),
        )
        .unwrap();
        let roots = kinko_verify::Roots {
            format: kinko_verify::ROOTS_FORMAT.into(),
            version: kinko_verify::VERSION,
            roots: vec![root],
        };
        let trees = [("BTC".to_owned(), tree)].into_iter().collect();
        kinko_api::proofs::write_set(&dir.join("1"), &roots, &trees).unwrap();
        std::sync::Arc::new(kinko_api::proofs::ProofStore::new(dir))
    });
}

/// What a valid call of `o` needs: for most operations the fixtures, for the identity ones
/// fresh state (a new login, a user to change, a token from a message).
/// The operator's custody endpoints need a custody service (a node and a signer); this server
/// has none, so their documented answer is 503 `CUSTODY_UNAVAILABLE`. Their successful use is
/// tested against a real node in crates/kinko/tests/it/custody.rs.
fn custody_op(o: &Operation<'_>) -> bool {
    o.path.starts_with("/admin/custody/")
}

fn assert_no_custody(r: &Resp, name: &str) {
    assert_eq!(
        (r.status, &r.json["code"]),
        (503, &json!("CUSTODY_UNAVAILABLE")),
        "{name}: without a custody service"
    );
}

async fn prepare<'a>(s: &'a TestServer, f: &Fixtures, o: &Operation<'_>, n: u128) -> Prepared<'a> {
    let user0 = &s.users[0];
    let user1 = &s.users[1];
    let mut p = Prepared {
        auth: f.auth(o),
        path: fill_path(f, o.path, &BTreeMap::new()),
        body: o.request_schema_path().then(|| body_for(f, o.path, n)),
        prover: Prover::Harness(user0),
    };
    let fresh = |what: &str| format!("spec-{what}-{n}@kinko.test");
    if o.path.contains("proofs") {
        publish_proofs(s);
    }
    match (o.method, o.path) {
        ("post", "/auth/login") => {
            p.body = Some(json!({"email": user1.email, "password": user1.password, "device": "spec"}));
        }
        ("post", "/auth/login/second-factor") => {
            let (token, challenge) = password_session(s, user1).await;
            p.auth = Some(bearer(&token));
            p.body = Some(json!({"step_up": user1.step_up_passkey(&challenge, &s.origin)}));
        }
        ("post", "/auth/logout") => {
            p.auth = Some(bearer(&password_session(s, user1).await.0));
        }
        ("post", "/auth/password-reset/confirm") => {
            let resets = |m: &crate::harness::Mail| m.kind == "password_reset" && m.to == f.reset_email;
            let seen = outbox(&f.outbox).iter().filter(|m| resets(m)).count();
            let (st, r) = s
                .request(
                    Method::POST,
                    "/api/v1/auth/password-reset",
                    None,
                    Some(json!({"email": f.reset_email})),
                )
                .await;
            assert_eq!(st, 202, "{r}");
            let m = wait_for_mails(&f.outbox, seen + 1, resets).await.pop().unwrap();
            let token = format!("kpr_{}", token_after(&m.body, "#reset=kpr_"));
            p.body = Some(json!({"token": token, "new_password": format!("new password {n}")}));
        }
        ("post", "/auth/freeze") => {
            let now_s = kinko_api::auth::now_ns() / 1_000_000_000;
            let token = kinko_api::notify::freeze_token(&s.gateway.vault, f.freeze_user, now_s);
            p.body = Some(json!({"token": token}));
        }
        ("delete", "/me/sessions/{id}") => {
            let (token, challenge) = password_session(s, user0).await;
            let (st, r) = s
                .request(
                    Method::POST,
                    "/api/v1/auth/login/second-factor",
                    Some(&token),
                    Some(json!({"step_up": user0.step_up_passkey(&challenge, &s.origin)})),
                )
                .await;
            assert_eq!(st, 200, "{r}");
            let other = kinko_api::auth::session_hash(r["token"].as_str().unwrap());
            p.path = format!("/api/v1/me/sessions/{}", hex::encode(&other[..8]));
        }
        ("post", "/me/totp") => {
            let mut u = s.register(&fresh("totp")).await;
            s.enrol_passkey(&mut u).await;
            p.auth = Some(bearer(&u.session));
            p.prover = Prover::Own(Box::new(u));
        }
        ("post", "/me/totp/confirm") => {
            let mut u = s.register(&fresh("confirm")).await;
            s.enrol_passkey(&mut u).await;
            let (st, r) = s
                .request(Method::POST, "/api/v1/me/totp", Some(&u.session), None)
                .await;
            assert_eq!(st, 200, "{r}");
            u.totp_secret = kinko_api::totp::base32_decode(r["secret"].as_str().unwrap()).unwrap();
            let code = u.totp().await.1;
            p.auth = Some(bearer(&u.session));
            p.body = Some(json!({"enrolment": r["enrolment"], "code": code}));
            p.prover = Prover::Own(Box::new(u));
        }
        ("delete", "/me/totp") => {
            let mut u = s.register(&fresh("untotp")).await;
            s.enrol_passkey(&mut u).await;
            s.enrol_totp(&mut u).await;
            p.auth = Some(bearer(&u.session));
            p.prover = Prover::Own(Box::new(u));
        }
        ("post", "/me/passkeys") => {
            let (st, opts) = s
                .request(
                    Method::POST,
                    "/api/v1/me/passkeys/options",
                    Some(&user0.session),
                    None,
                )
                .await;
            assert_eq!(st, 200, "{opts}");
            let credential =
                Authenticator::new().register(opts["public_key"]["challenge"].as_str().unwrap(), &s.origin);
            p.body = Some(json!({"enrolment": opts["enrolment"], "credential": credential, "label": "spec"}));
        }
        ("delete", "/me/passkeys/{id}") => {
            // A user of its own: removing a factor ends the user's API keys, and user 0's
            // are needed below.
            let mut u = s.register(&fresh("unpasskey")).await;
            s.enrol_passkey(&mut u).await;
            s.enrol_totp(&mut u).await;
            p.auth = Some(bearer(&u.session));
            p.path = format!("/api/v1/me/passkeys/{}", u.passkey.credential_id_b64());
            p.prover = Prover::Own(Box::new(u));
        }
        ("post", "/me/password") => {
            let mut u = s.register(&fresh("password")).await;
            s.enrol_passkey(&mut u).await;
            p.auth = Some(bearer(&u.session));
            p.body =
                Some(json!({"current_password": u.password, "new_password": format!("new password {n}")}));
            p.prover = Prover::Own(Box::new(u));
        }
        ("post", "/me/email") => {
            let mut u = s.register(&fresh("email")).await;
            s.enrol_passkey(&mut u).await;
            p.auth = Some(bearer(&u.session));
            p.prover = Prover::Own(Box::new(u));
        }
        ("post", "/ops/withdrawals/{id}/review") => {
            let (st, held) = s
                .request(
                    Method::GET,
                    "/api/v1/ops/withdrawals/held",
                    Some(&user0.session),
                    None,
                )
                .await;
            assert_eq!(st, 200, "{held}");
            let me = user0.id.0.to_string();
            let id = held
                .as_array()
                .unwrap()
                .iter()
                .find(|h| {
                    h["status"] == "review"
                        && !h["approvals"].as_array().unwrap().iter().any(|a| a == &json!(me))
                })
                .expect("a withdrawal held for review")["id"]
                .as_str()
                .unwrap()
                .to_owned();
            p.path = format!("/api/v1/ops/withdrawals/{id}/review");
        }
        ("post", "/ops/proposals/{id}/approve") => {
            // Someone else's proposal (nobody approves their own).
            let (st, pr) = s
                .with_step_up_as(
                    user1,
                    &user1.session,
                    Factor::Passkey,
                    Method::POST,
                    "/api/v1/ops/proposals",
                    json!({"kind": "resume_withdrawals", "reason": format!("spec {n}")}),
                )
                .await;
            assert_eq!(st, 200, "{pr}");
            p.path = format!("/api/v1/ops/proposals/{}/approve", pr["id"].as_str().unwrap());
        }
        ("post", "/ops/customers/{id}/freeze") => {
            // A customer of its own: user 0 and the admins are needed below.
            let u = s.register(&fresh("frozen")).await;
            p.path = format!("/api/v1/ops/customers/{}/freeze", u.id.0);
        }
        ("post", "/ops/incidents/{id}/resolve") => {
            let (st, all) = s
                .request(Method::GET, "/api/v1/ops/incidents", Some(&user0.session), None)
                .await;
            assert_eq!(st, 200, "{all}");
            let id = all
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["status"] == "open")
                .expect("an open incident")["id"]
                .as_str()
                .unwrap()
                .to_owned();
            p.path = format!("/api/v1/ops/incidents/{id}/resolve");
        }
        ("delete", "/me/api-keys/{id}") => {
            // A key of its own: the one POST /me/api-keys made may have ended already with a
            // credential change of user 0.
            let (st, key) = s
                .with_step_up_as(
                    user0,
                    &user0.session,
                    crate::harness::Factor::Passkey,
                    Method::POST,
                    "/api/v1/me/api-keys",
                    json!({"label": "spec revoke", "scopes": {"view": true}}),
                )
                .await;
            assert_eq!(st, 201, "{key}");
            let id = key["id"].as_str().unwrap().to_owned();
            p.path = format!("/api/v1/me/api-keys/{id}");
        }
        _ => {}
    }
    p
}

/// Makes a prepared call; a `STEP_UP_REQUIRED` answer (which must be documented) is answered
/// with a passkey assertion and the call made again.
async fn call_prepared(doc: &Value, s: &TestServer, o: &Operation<'_>, p: &Prepared<'_>, path: &str) -> Resp {
    let ct = p.body.as_ref().map(|_| "application/json");
    let body = |b: &Option<Value>| b.as_ref().map(|b| b.to_string().into_bytes());
    let r = call(s, method_of(o.method), path, p.auth.as_deref(), ct, body(&p.body)).await;
    if r.status != 403 || r.json["code"] != "STEP_UP_REQUIRED" {
        return r;
    }
    assert_documented(doc, o, &r, "step-up required");
    let u = match &p.prover {
        Prover::Harness(u) => u,
        Prover::Own(u) => u.as_ref(),
    };
    let mut b = p.body.clone().unwrap();
    b["step_up"] = u.step_up_passkey(r.json["step_up"]["challenge"].as_str().unwrap(), &s.origin);
    // A real authenticator's assertion fits the documented `step_up`.
    if let Some(schema) = o.request_schema(doc) {
        assert_fits(doc, schema, &b, &format!("{}: the step-up answer", o.name()));
    }
    call(
        s,
        method_of(o.method),
        path,
        p.auth.as_deref(),
        ct,
        body(&Some(b)),
    )
    .await
}

fn fill_path(f: &Fixtures, template: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = String::from("/api/v1");
    for seg in template.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        match seg.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
            Some(name) => out.push_str(
                values
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| path_value(f, template, name))
                    .as_str(),
            ),
            None => out.push_str(seg),
        }
    }
    out
}

fn method_of(m: &str) -> Method {
    Method::from_bytes(m.to_uppercase().as_bytes()).unwrap()
}

static CHECKED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A response must have a documented status, and the documented body: none, or JSON that fits
/// the documented schema.
fn assert_documented(doc: &Value, o: &Operation<'_>, r: &Resp, ctx: &str) {
    CHECKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = o.name();
    assert!(
        o.statuses().contains(&r.status),
        "{name} ({ctx}): status {} is not documented (documented: {:?}); body {}",
        r.status,
        o.statuses(),
        r.json
    );
    if o.bodiless(doc, r.status) {
        assert_eq!(r.json, json!(""), "{name} ({ctx}): {} has no body", r.status);
        return;
    }
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert_eq!(ct, "application/json", "{name} ({ctx}): content type");
    let schema = o.response_schema(doc, r.status).unwrap();
    assert_fits(doc, schema, &r.json, &format!("{name} ({ctx}) → {}", r.status));
    if r.status >= 400 {
        assert!(is_error_body(&r.json), "{name} ({ctx}): {}", r.json);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_server() {
    // Many identity calls come from one address and some are refused on purpose: the failure
    // limit must not stop the valid ones.
    // The same goes for the rate limits: every route is called in a row.
    let mut config = crate::harness::without_rate_limits(kinko_api::ApiConfig::default());
    config.identity.failures_max = 10_000;
    let s = TestServer::start_with(2, config).await;
    // Factor and credential changes below would otherwise lock user 0's withdrawals.
    s.set_policy(Policy {
        security_lock_ns: 0,
        ..Policy::default()
    })
    .await;
    let outbox_dir = s.use_outbox();
    let r = call(&s, Method::GET, "/api/v1/openapi.json", None, None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    let doc = r.json;
    assert_eq!(
        doc,
        serde_json::to_value(kinko_api::openapi()).unwrap(),
        "served = built"
    );
    validate_document(&doc);
    // This server's chain is the simulated one (`/sim/deposits` works).
    s.gateway
        .simulated
        .store(true, std::sync::atomic::Ordering::Release);

    // Fixtures: a trade (so lists of trades, fills and candles are not empty), a resting order,
    // a cooling withdrawal address, a usable one and a withdrawal to it, a deposit address,
    // users to freeze and to reset.
    place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "sell", "price": "30000", "size": "0.3"}),
    )
    .await;
    place(
        &s,
        1,
        json!({"market": "BTC-USD", "side": "buy", "price": "30000", "size": "0.1"}),
    )
    .await;
    let o = place(
        &s,
        0,
        json!({"market": "BTC-USD", "side": "buy", "price": "29500", "size": "0.1", "client_order_id": uuid(1)}),
    )
    .await;
    let sim_address = s.btc_usd_address.clone();
    let (st, wa) = s
        .with_step_up(
            0,
            Method::POST,
            "/api/v1/withdrawal-addresses",
            json!({"asset": "BTC", "address": sim_address}),
        )
        .await;
    assert_eq!(st, 200, "{wa}");
    // (Another address: whitelisting the same one again returns the cooling record.)
    let usable = usable_address(&s, s.users[0].id, &format!("sim1{}", "5a".repeat(20))).await;
    let (st, w) = s
        .with_step_up(
            0,
            Method::POST,
            "/api/v1/withdrawals",
            json!({"address_id": usable.to_string(), "amount": "0.5"}),
        )
        .await;
    assert_eq!(st, 200, "{w}");
    let (st, d) = s
        .post(0, "/api/v1/deposit-addresses", json!({"asset": "ETH"}))
        .await;
    assert_eq!(st, 200, "{d}");
    // Operators: users 0 and 1 are admins (risk and security; user 0 becomes a security admin
    // through `/admin/roles`, which sorts before every `/ops` change); BTC withdrawals of
    // user 1 are held for review; a proposal and two incidents exist.
    for (u, roles) in [
        (0, vec![AdminRole::Risk]),
        (1, vec![AdminRole::SecurityAdmin, AdminRole::Risk]),
    ] {
        s.gateway
            .submit(Command::Identity(IdentityCommand::SetRoles {
                user: s.users[u].id,
                roles,
                requested_by: "operator".into(),
                reason: "the OpenAPI test".into(),
            }))
            .await
            .unwrap()
            .reply
            .unwrap();
    }
    s.gateway
        .submit(Command::SetRiskPolicy(RiskPolicy {
            rules: vec![RiskRule {
                name: "spec-review".into(),
                asset: None,
                when: Condition::Always,
                then: Decision::Review,
            }],
            // A limit, so that `/withdrawal-limits` has something to list.
            limits: vec![kinko_core::risk::TierLimit {
                tier: 0,
                asset: BTC,
                day_max: kinko_core::Amount(1_000 * 100_000_000),
                month_max: kinko_core::Amount(10_000 * 100_000_000),
            }],
            ..RiskPolicy::default()
        }))
        .await
        .unwrap()
        .reply
        .unwrap();
    let held_to = usable_address(&s, s.users[1].id, &format!("sim1{}", "6b".repeat(20))).await;
    for i in 0..3 {
        let (st, h) = s
            .with_step_up(
                1,
                Method::POST,
                "/api/v1/withdrawals",
                json!({"address_id": held_to.to_string(), "amount": format!("0.00{}", i + 1)}),
            )
            .await;
        assert_eq!((st, h["status"].as_str()), (200, Some("review")), "{h}");
    }
    let u1 = &s.users[1];
    let (st, pr) = s
        .with_step_up_as(
            u1,
            &u1.session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/ops/proposals",
            json!({"kind": "resume_withdrawals", "reason": "fixture"}),
        )
        .await;
    assert_eq!(st, 200, "{pr}");
    for i in 0..2 {
        s.gateway
            .submit(Command::OpenIncident {
                kind: "spec".into(),
                asset: Some(BTC),
                summary: format!("fixture incident {i}"),
                txids: vec![],
                missing: kinko_core::Amount(1),
                opened_by: "system:spec".into(),
                halt: false,
            })
            .await
            .unwrap()
            .reply
            .unwrap();
    }
    // A restitution that pays user 0 (so `/me/restitutions` has a row): an incident on BTC,
    // the treasury funded, the plan proposed and approved by two treasury admins' passkeys.
    let quorum = s.quorum().await;
    s.gateway
        .submit(Command::CompanyDeposit {
            asset: BTC,
            txid: "cd".repeat(32),
            vout: 0,
            amount: kinko_core::Amount(100_000_000),
        })
        .await
        .unwrap()
        .reply
        .unwrap();
    let incident = match s
        .gateway
        .submit(Command::OpenIncident {
            kind: "spec_restitution".into(),
            asset: Some(BTC),
            summary: "fixture shortfall".into(),
            txids: vec![],
            missing: kinko_core::Amount(10_000),
            opened_by: "system:spec".into(),
            halt: false,
        })
        .await
        .unwrap()
        .reply
        .unwrap()
    {
        kinko_core::Reply::Incident(i) => i.id,
        other => panic!("{other:?}"),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let plan = loop {
        if let Ok(p) = s.gateway.read.model().engine.restitution_plan(incident, None) {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the incident never reached the read side"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(plan.lines.iter().any(|l| l.user == s.users[0].id), "{plan:?}");
    let (st, pr) = s
        .with_step_up_as(
            &quorum[0],
            &quorum[0].session,
            Factor::Passkey,
            Method::POST,
            "/api/v1/ops/proposals",
            json!({"kind": "restitution", "plan": plan, "reason": "fixture restitution"}),
        )
        .await;
    assert_eq!(st, 200, "{pr}");
    let (st, done) = s
        .with_step_up_as(
            &quorum[1],
            &quorum[1].session,
            Factor::Passkey,
            Method::POST,
            &format!("/api/v1/ops/proposals/{}/approve", pr["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!((st, done["status"].as_str()), (200, Some("executed")), "{done}");
    let freeze_user = s.register("spec-freeze@kinko.test").await;
    let reset_user = s.register("spec-reset@kinko.test").await;
    let f = Fixtures {
        token: bearer(&s.users[0].token),
        session: s.users[0].session.clone(),
        operator: OPERATOR_TOKEN.into(),
        // User 1 changes no credential below (a change of user 0's ends user 0's keys).
        no_permissions: bearer(&key_with(&s, s.users[1].id, Permissions::default()).await),
        order_id: o["id"].as_str().unwrap().to_owned(),
        withdrawal_address_id: wa["id"].as_str().unwrap().to_owned(),
        usable_address_id: usable.to_string(),
        withdrawal_id: w["id"].as_str().unwrap().to_owned(),
        sim_address,
        deposit_address: d["address"].as_str().unwrap().to_owned(),
        freeze_user: freeze_user.id,
        second_admin: s.users[0].email.clone(),
        reset_email: reset_user.email.clone(),
        outbox: outbox_dir,
    };

    // Reads first, then creations, then deletions of one thing, then deletions of many, and
    // platform-wide revocation (which ends every session) last.
    let mut ops = operations(&doc);
    ops.sort_by_key(|o| {
        let rank = match o.method {
            _ if o.path == "/admin/revoke-everything" => 4,
            "get" => 0,
            "post" => 1,
            "delete" if o.path.contains('{') => 2,
            _ => 3,
        };
        (rank, o.path.to_owned())
    });
    let mut n = 0u128;
    for o in &ops {
        let name = o.name();
        let method = method_of(o.method);
        let auth_token = f.auth(o);
        let auth = auth_token.as_deref();
        let no_values = BTreeMap::new();
        let path = fill_path(&f, o.path, &no_values);
        let body = |n: u128| {
            o.request_schema(&doc).map(|schema| {
                let b = body_for(&f, o.path, n);
                assert_fits(&doc, schema, &b, &format!("{name}: request body from the table"));
                b.to_string().into_bytes()
            })
        };
        let ct = o.request_schema(&doc).map(|_| "application/json");

        // Probes a client can get wrong, before the valid call (which may delete the thing).
        if o.secured() {
            let r = call(&s, method.clone(), &path, None, ct, body(n)).await;
            assert_documented(&doc, o, &r, "no key");
            assert_eq!(
                (r.status, &r.json["code"]),
                (401, &json!("UNAUTHORIZED")),
                "{name}: no key"
            );
            let r = call(
                &s,
                method.clone(),
                &path,
                Some(f.no_permissions.as_str()),
                ct,
                body(n),
            )
            .await;
            assert_documented(&doc, o, &r, "key without permissions");
            if o.scheme() == Some("api_key") {
                assert_eq!(
                    (r.status, &r.json["code"]),
                    (403, &json!("FORBIDDEN")),
                    "{name}: no permissions"
                );
            } else {
                // An API key where a session or the operator token is needed.
                assert!(
                    [401, 403].contains(&r.status),
                    "{name}: an API key: {} {}",
                    r.status,
                    r.json
                );
            }
        }
        for p in o.params("query") {
            let pname = p["name"].as_str().unwrap();
            for bad in ["x", "-1", "99999999999999999999999", "NOPE", "%FF", ""] {
                let r = call(
                    &s,
                    method.clone(),
                    &format!("{path}?{pname}={bad}"),
                    auth,
                    ct,
                    body(n),
                )
                .await;
                assert!(r.status < 500, "{name}?{pname}={bad}: {} {}", r.status, r.json);
                assert_documented(&doc, o, &r, &format!("{pname}={bad}"));
                n += 1;
            }
        }
        for p in o.params("path") {
            let pname = p["name"].as_str().unwrap();
            for bad in [
                "999999",
                "NOPE-USD",
                "abc",
                "-1",
                "%FF",
                "99999999999999999999999",
            ] {
                let bad_path = fill_path(&f, o.path, &BTreeMap::from([(pname, bad.to_owned())]));
                let r = call(&s, method.clone(), &bad_path, auth, ct, body(n)).await;
                assert!(
                    (400..500).contains(&r.status),
                    "{bad_path}: {} {}",
                    r.status,
                    r.json
                );
                assert_documented(&doc, o, &r, &format!("{pname} = {bad}"));
            }
        }
        if let Some(schema) = o.request_schema(&doc) {
            // (Of a body with several shapes, the one the valid body has.)
            let schema = shape_of(&doc, schema, &body_for(&f, o.path, n));
            let required: Vec<&Value> = schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .collect();
            let r = call(&s, method.clone(), &path, auth, ct, Some(b"{}".to_vec())).await;
            assert_documented(&doc, o, &r, "empty object");
            // (With nothing required, an empty object is a valid body.)
            if !required.is_empty() {
                assert_eq!(r.status, 400, "{name}: an empty object");
            }
            let r = call(&s, method.clone(), &path, auth, ct, Some(b"{\"".to_vec())).await;
            assert_documented(&doc, o, &r, "invalid JSON");
            let r = call(&s, method.clone(), &path, auth, Some("text/plain"), body(n)).await;
            assert_documented(&doc, o, &r, "text/plain");
            assert_eq!(r.status, 415, "{name}: text/plain");
            // Each required property is really required; an unknown property is refused.
            for req in &required {
                let mut b = body_for(&f, o.path, n);
                b.as_object_mut().unwrap().remove(req.as_str().unwrap());
                let r = call(
                    &s,
                    method.clone(),
                    &path,
                    auth,
                    ct,
                    Some(b.to_string().into_bytes()),
                )
                .await;
                assert_documented(&doc, o, &r, &format!("without {req}"));
                assert_eq!(r.status, 400, "{name}: without the required {req}");
            }
            let mut b = body_for(&f, o.path, n);
            b["not_in_the_schema"] = json!("x");
            let r = call(
                &s,
                method.clone(),
                &path,
                auth,
                ct,
                Some(b.to_string().into_bytes()),
            )
            .await;
            assert_documented(&doc, o, &r, "an unknown property");
            assert_eq!(r.status, 400, "{name}: an unknown property");
            // Optional properties may be left out.
            let mut p = prepare(&s, &f, o, n + 1_000).await;
            if let Some(b) = p.body.as_mut() {
                b.as_object_mut()
                    .unwrap()
                    .retain(|k, _| required.contains(&&json!(k)));
            }
            let r = call_prepared(&doc, &s, o, &p, &p.path).await;
            assert_documented(&doc, o, &r, "only the required properties");
            // (An order needs more than its required properties: a limit order a price and a
            // size, a market order a size or funds.)
            if custody_op(o) {
                assert_no_custody(&r, &name);
            } else if o.path != "/orders" {
                assert!(
                    r.status < 300,
                    "{name}: only the required properties: {} {}",
                    r.status,
                    r.json
                );
            }
        }

        // The valid call: a documented success with a body that fits its schema.
        let p = prepare(&s, &f, o, n).await;
        if let (Some(b), Some(schema)) = (&p.body, o.request_schema(&doc)) {
            assert_fits(&doc, schema, b, &format!("{name}: prepared request body"));
        }
        let r = call_prepared(&doc, &s, o, &p, &p.path).await;
        assert_documented(&doc, o, &r, "valid request");
        if custody_op(o) {
            assert_no_custody(&r, &name);
            n += 1;
            continue;
        }
        assert!(
            (200..300).contains(&r.status),
            "{name}: a valid request failed: {} {}",
            r.status,
            r.json
        );
        if let Some(items) = r.json.as_array() {
            assert!(
                !items.is_empty() || o.method != "get",
                "{name}: a fixture should make this list non-empty"
            );
        }
        // With every documented query parameter set to a valid value.
        let q: Vec<String> = o
            .params("query")
            .iter()
            .map(|p| {
                let pname = p["name"].as_str().unwrap();
                format!("{pname}={}", query_value(&f, pname))
            })
            .collect();
        if !q.is_empty() {
            let p = prepare(&s, &f, o, n + 2_000).await;
            let r = call_prepared(&doc, &s, o, &p, &format!("{}?{}", p.path, q.join("&"))).await;
            assert_documented(&doc, o, &r, &q.join("&"));
            assert!(
                (200..300).contains(&r.status),
                "{name}?{}: {} {}",
                q.join("&"),
                r.status,
                r.json
            );
        }
        // The bounds and values the document declares for query parameters are the server's:
        // just inside is taken, just outside refused.
        if o.method == "get" {
            for p in o.params("query") {
                let pname = p["name"].as_str().unwrap();
                let schema = &p["schema"];
                let mut cases: Vec<(String, bool)> = Vec::new();
                if let Some(min) = keyword(&doc, schema, "minimum").and_then(Value::as_i64) {
                    cases.push(((min - 1).to_string(), false));
                    cases.push((min.to_string(), true));
                }
                if let Some(max) = keyword(&doc, schema, "maximum").and_then(Value::as_i64) {
                    cases.push((max.to_string(), true));
                    cases.push(((max + 1).to_string(), false));
                }
                if let Some(values) = keyword(&doc, schema, "enum").and_then(Value::as_array) {
                    for v in values {
                        cases.push((v.as_str().map_or_else(|| v.to_string(), str::to_owned), true));
                    }
                    let outside = match values.iter().filter_map(Value::as_i64).max() {
                        Some(n) => (n + 1).to_string(),
                        None => "not_one_of_them".into(),
                    };
                    cases.push((outside, false));
                }
                for (value, ok) in cases {
                    let p = prepare(&s, &f, o, n + 3_000).await;
                    let url = format!("{}?{pname}={value}", p.path);
                    let r = call_prepared(&doc, &s, o, &p, &url).await;
                    assert_documented(&doc, o, &r, &format!("{pname}={value}"));
                    if ok {
                        assert!(
                            (200..300).contains(&r.status),
                            "{name}?{pname}={value} is inside what the document declares: {} {}",
                            r.status,
                            r.json
                        );
                    } else {
                        assert_eq!(
                            (r.status, &r.json["code"]),
                            (400, &json!("INVALID_PARAMETER")),
                            "{name}?{pname}={value} is outside what the document declares"
                        );
                    }
                }
            }
        }
        n += 1;
    }

    let checked = CHECKED.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        checked > 200,
        "only {checked} responses were checked against the document"
    );

    // Methods a documented path does not list are refused.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in ["get", "post", "put", "patch", "delete"] {
            if item.get(m).is_none() {
                let url = fill_path(&f, path, &BTreeMap::new());
                let r = call(&s, method_of(m), &url, Some(f.token.as_str()), None, None).await;
                assert_eq!(r.status, 405, "{m} {url}: {}", r.json);
                assert_eq!(r.json["code"], "METHOD_NOT_ALLOWED");
                assert!(is_error_body(&r.json));
            }
        }
    }
    // Paths the document does not list do not exist.
    for path in [
        "/api/v1/nope",
        "/api/v1/order",
        "/api/v1/markets/BTC-USD/nope",
        "/api/v1/orders/1/2",
    ] {
        let r = call(&s, Method::GET, path, Some(f.token.as_str()), None, None).await;
        assert_eq!(
            (r.status, &r.json["code"]),
            (404, &json!("NOT_FOUND")),
            "{path}: {}",
            r.json
        );
        assert!(is_error_body(&r.json));
        assert_eq!(r.headers["content-type"], "application/json");
    }
    s.stop().await;

    // Without an operator token the operator API is off: its routes answer the documented 403.
    let off = TestServer::start_without_operator(
        1,
        crate::harness::without_rate_limits(kinko_api::ApiConfig::default()),
    )
    .await;
    let mut refused = 0;
    for o in ops.iter().filter(|o| o.scheme() == Some("operator")) {
        let name = o.name();
        let path = fill_path(&f, o.path, &BTreeMap::new());
        let ct = o.request_schema(&doc).map(|_| "application/json");
        let body = ct.map(|_| body_for(&f, o.path, n).to_string().into_bytes());
        let auth = f.auth(o);
        let r = call(&off, method_of(o.method), &path, auth.as_deref(), ct, body).await;
        assert_documented(&doc, o, &r, "the operator API off");
        assert_eq!(
            (r.status, &r.json["code"]),
            (403, &json!("FORBIDDEN")),
            "{name}: the operator API off"
        );
        // Without any credential the answer is 401 first, whether the API is on or off: what
        // the client lacks is a credential, and it learns nothing about the server.
        let body = ct.map(|_| body_for(&f, o.path, n).to_string().into_bytes());
        let r = call(&off, method_of(o.method), &path, None, ct, body).await;
        assert_documented(&doc, o, &r, "no credential, the operator API off");
        assert_eq!(
            (r.status, &r.json["code"]),
            (401, &json!("UNAUTHORIZED")),
            "{name}: no credential, the operator API off"
        );
        refused += 1;
    }
    assert!(refused >= 3, "only {refused} operator routes");
    off.stop().await;
}

#[test]
fn the_schema_checker_catches_drift() {
    let doc = json!({"components": {"schemas": {
        "Out": {"type": "object", "required": ["id", "levels"], "properties": {
            "id": {"type": "string"},
            "n": {"type": "integer", "minimum": 0, "maximum": 10},
            "price": {"type": "string", "pattern": DECIMAL},
            "time": {"type": "string", "format": "date-time"},
            "note": {"type": ["string", "null"]},
            "levels": {"type": "array", "items": {"$ref": "#/components/schemas/Level"}},
        }},
        "Level": {"type": "object", "required": ["price"], "properties": {"price": {"type": "string"}}},
    }}});
    let schema = json!({"type": "array", "items": {"$ref": "#/components/schemas/Out"}});
    let errors = |v: Value| {
        let mut e = Vec::new();
        check(&doc, &schema, &v, "$", &mut e);
        e
    };
    assert!(errors(json!([{"id": "1", "levels": [{"price": "1"}], "note": null, "n": 3}])).is_empty());
    assert!(errors(
        json!([{"id": "1", "levels": [], "price": "30000.5", "time": "2026-11-21T09:30:00.123456Z"}])
    )
    .is_empty());
    assert!(
        errors(json!([{"id": "1", "levels": [], "price": "0", "time": "2026-11-21T09:30:00Z"}])).is_empty()
    );
    assert!(errors(json!([])).is_empty());
    for (pattern, good, bad) in [
        (
            UUID,
            "3b0fa9e2-52d1-4c1e-9a8e-2f4d0b6a7c11",
            "3b0fa9e2-52d1-4c1e-9a8e-2f4d0b6a7c1",
        ),
        (
            UUID,
            "3b0fa9e252d14c1e9a8e2f4d0b6a7c11",
            "3b0fa9e-252d14c1e9a8e2f4d0b6a7c11",
        ),
        (
            UUID,
            "3b0fa9e2-52d14c1e-9a8e-2f4d0b6a7c11",
            "3b0fa9e2--52d1-4c1e-9a8e-2f4d0b6a7c11",
        ),
        (ID, "1234567890123456789", "12345678901234567890"),
        (ID, "0", "-1"),
        (ASSET, "BTC", "btc"),
        (SYMBOL, "BTC-USD", "BTC-USD-X"),
        (SYMBOL, "ETH-JPY", "BTCUSD"),
        (SIGNED_DECIMAL, "-0.5", "--0.5"),
    ] {
        assert!(matches_pattern(pattern, good), "{good} fits {pattern}");
        assert!(!matches_pattern(pattern, bad), "{bad} does not fit {pattern}");
    }
    // A free-form object takes any properties.
    let mut e = Vec::new();
    check(
        &doc,
        &json!({"type": ["object", "null"]}),
        &json!({"challenge": "x", "methods": []}),
        "$",
        &mut e,
    );
    assert!(e.is_empty(), "{e:?}");
    for (bad, why) in [
        (json!([{"levels": []}]), "required property \"id\" is missing"),
        (
            json!([{"id": "1", "levels": [], "extra": 1}]),
            "property \"extra\" is not in the schema",
        ),
        (json!([{"id": 1, "levels": []}]), "is not of type"),
        (json!([{"id": "1", "levels": [], "n": -1}]), "below the minimum"),
        (json!([{"id": "1", "levels": [], "n": 11}]), "above the maximum"),
        (
            json!([{"id": "1", "levels": [], "price": "1e5"}]),
            "does not match the pattern",
        ),
        (
            json!([{"id": "1", "levels": [], "price": "-1"}]),
            "does not match the pattern",
        ),
        (
            json!([{"id": "1", "levels": [], "price": "1."}]),
            "does not match the pattern",
        ),
        (
            json!([{"id": "1", "levels": [], "price": ".5"}]),
            "does not match the pattern",
        ),
        (
            json!([{"id": "1", "levels": [], "time": "yesterday"}]),
            "is not an RFC 3339",
        ),
        (
            json!([{"id": "1", "levels": [], "time": "2026-11-21 09:30:00"}]),
            "is not an RFC 3339",
        ),
        (
            json!([{"id": "1", "levels": [{"price": "1", "qty": "2"}]}]),
            "$[0].levels[0]: property \"qty\"",
        ),
        (json!([{"id": "1", "levels": [{}]}]), "\"price\" is missing"),
        (json!({"id": "1"}), "is not of type"),
        (
            json!([{"id": "1", "levels": [], "free": 1}]),
            "property \"free\" is not in the schema",
        ),
    ] {
        let e = errors(bad.clone());
        assert!(
            e.iter().any(|m| m.contains(why)),
            "{bad}: expected {why:?}, got {e:?}"
        );
    }
}

/// Whether `value` fits `schema` (through `$ref`s, `oneOf` and `anyOf`).
fn fits(doc: &Value, schema: &Value, value: &Value) -> bool {
    let mut e = Vec::new();
    check(doc, schema, value, "", &mut e);
    e.is_empty()
}

/// The rules the document states for request bodies and path segments are the server's: for
/// values just inside and just outside each rule, the document accepts exactly what the server
/// does not refuse as malformed (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_request_rules_are_the_servers() {
    let mut config = crate::harness::without_rate_limits(kinko_api::ApiConfig::default());
    config.identity.failures_max = 10_000;
    let s = TestServer::start_with(2, config).await;
    // Liquidity for the market orders below.
    place(
        &s,
        1,
        json!({"market": "BTC-USD", "side": "sell", "price": "30000", "size": "1"}),
    )
    .await;
    place(
        &s,
        1,
        json!({"market": "BTC-USD", "side": "buy", "price": "28000", "size": "1"}),
    )
    .await;
    let doc = call(&s, Method::GET, "/api/v1/openapi.json", None, None, None)
        .await
        .json;
    let schema = |path: &str, method: &str| -> Value {
        resolve(
            &doc,
            &doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"],
        )
        .clone()
    };
    // (Of a path parameter.)
    let param =
        |path: &str, method: &str| -> Value { doc["paths"][path][method]["parameters"][0]["schema"].clone() };
    let mut checked = 0;
    let mut verdict = |what: String, documented: bool, r: &Resp| {
        let refused = r.status == 400;
        assert_eq!(
            documented,
            !refused,
            "{what}: the document {} it, the server answered {} {}",
            if documented { "accepts" } else { "refuses" },
            r.status,
            r.json
        );
        checked += 1;
    };

    // Registration: the email rule of `normalise_email` and the password's 10 to 256 characters.
    let register = schema("/auth/register", "post");
    let long_local = "a".repeat(254 - "@kinko.test".len());
    let mut emails: Vec<String> = [
        "a@b.c",
        "",
        "a",
        "a@b",
        "@b.c",
        "a@.b",
        "a@b.",
        "a@b@c.d",
        "a<b@c.d",
        "a b@c.d",
        "a,b@c.d",
        "a;b@c.d",
        "a\"b@c.d",
        "x.y+z@sub.example.org",
        "{odd}!#$%&'*/=?^_`|~-@x.y",
    ]
    .iter()
    .map(|e| e.to_string())
    .collect();
    emails.push(format!("{long_local}@kinko.test"));
    emails.push(format!("a{long_local}@kinko.test"));
    for (i, e) in emails.iter().enumerate() {
        // (Distinct addresses: each accepted one creates an account.)
        let e = if e.contains('@') && !e.starts_with('@') && e.len() < 250 {
            format!("r{i}{e}")
        } else {
            e.clone()
        };
        let body = json!({"email": e, "password": "a long enough password"});
        let documented = fits(&doc, &register, &body);
        let r = call(
            &s,
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
        .await;
        verdict(format!("register {e:?}"), documented, &r);
    }
    for (i, n) in [0usize, 9, 10, 256, 257].into_iter().enumerate() {
        let body = json!({"email": format!("password{i}@kinko.test"), "password": "é".repeat(n)});
        let documented = fits(&doc, &register, &body);
        let r = call(
            &s,
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
        .await;
        verdict(format!("a password of {n} characters"), documented, &r);
    }

    // The anti-phishing code (a user without a second factor sets it without a proof).
    let u = s.register("rules@kinko.test").await;
    let session = format!("Bearer {}", u.session);
    let code = schema("/me/anti-phishing", "post");
    for c in [
        "",
        "abc",
        "abcd",
        "ab cd",
        " abcd",
        "abcd ",
        "ab#cd",
        "a-b_c.d!",
        &"x".repeat(32),
        &"x".repeat(33),
    ] {
        let body = json!({"code": c});
        let documented = fits(&doc, &code, &body);
        let r = call(
            &s,
            Method::POST,
            "/api/v1/me/anti-phishing",
            Some(&session),
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
        .await;
        verdict(format!("anti-phishing code {c:?}"), documented, &r);
    }

    // A passkey id in the path is base64url (canonical: the unused low bits of the last
    // character are zero).
    let id = param("/me/passkeys/{id}", "delete");
    for v in ["AA", "AB", "A", "AAA", "AAB", "AAAA", "AAAAAQ", "a-_0", "ab+0"] {
        let documented = fits(&doc, &id, &json!(v));
        let r = call(
            &s,
            Method::DELETE,
            &format!("/api/v1/me/passkeys/{v}"),
            Some(&session),
            Some("application/json"),
            Some(b"{}".to_vec()),
        )
        .await;
        verdict(format!("passkey id {v:?}"), documented, &r);
    }

    // An API key: at least one scope; the withdraw scope with an IP allowlist; 1 to
    // `api_key_days_max` days. (Valid ones get as far as the step-up, 403.)
    let key = schema("/me/api-keys", "post");
    for body in [
        json!({"scopes": {}}),
        json!({"scopes": {"view": false, "trade": false, "withdraw": false}}),
        json!({"scopes": {"view": true}}),
        json!({"scopes": {"trade": true, "withdraw": false}}),
        json!({"scopes": {"withdraw": true}}),
        json!({"scopes": {"withdraw": true}, "ip_allowlist": []}),
        json!({"scopes": {"withdraw": true}, "ip_allowlist": ["127.0.0.1"]}),
        json!({"scopes": {"view": true}, "expires_in_days": 0}),
        json!({"scopes": {"view": true}, "expires_in_days": 1}),
        json!({"scopes": {"view": true}, "expires_in_days": 90}),
        json!({"scopes": {"view": true}, "expires_in_days": 91}),
    ] {
        let documented = fits(&doc, &key, &body);
        let r = call(
            &s,
            Method::POST,
            "/api/v1/me/api-keys",
            Some(&session),
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
        .await;
        verdict(format!("API key {body}"), documented, &r);
    }

    // An order: a limit order needs a price and a size and takes no funds; a market order
    // exactly one of size and funds and no price.
    let order = schema("/orders", "post");
    let trader = format!("Bearer {}", s.users[0].token);
    for body in [
        json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.01"}),
        json!({"market": "BTC-USD", "side": "buy", "type": "limit", "size": "0.01"}),
        json!({"market": "BTC-USD", "side": "buy", "type": "limit", "price": "29000"}),
        json!({"market": "BTC-USD", "side": "buy", "type": "limit", "price": "29000", "size": "0.01", "funds": "1"}),
        json!({"market": "BTC-USD", "side": "buy", "type": "market"}),
        json!({"market": "BTC-USD", "side": "buy", "type": "market", "price": "29000", "size": "0.01"}),
        json!({"market": "BTC-USD", "side": "buy", "type": "market", "size": "0.01", "funds": "100"}),
        json!({"market": "BTC-USD", "side": "buy", "type": "market", "funds": "100", "stp": "cancel_both"}),
        json!({"market": "BTC-USD", "side": "sell", "type": "market", "size": "0.01", "time_in_force": "gtc"}),
        json!({"market": "BTC-USD", "side": "sell", "type": "market", "size": "0.01", "time_in_force": "day"}),
    ] {
        let documented = fits(&doc, &order, &body);
        let r = call(
            &s,
            Method::POST,
            "/api/v1/orders",
            Some(&trader),
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
        .await;
        verdict(format!("order {body}"), documented, &r);
    }
    assert!(checked >= 60, "{checked} cases");
}
