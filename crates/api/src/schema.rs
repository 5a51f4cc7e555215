//! What the OpenAPI document says about values the wire carries as plain strings and numbers:
//! the names of sides, order types, statuses and the like, and the shape of decimals. These
//! types only describe; handlers keep parsing and formatting as they do (the wire is unchanged),
//! and the OpenAPI test checks every value the server emits against these lists.

// Never constructed: the types exist for their schemas (and `Serialize` for their serde names).
#![allow(dead_code)]

use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::ToSchema;

// Decimals in the asset's units are strings with the pattern `^[0-9]+(\.[0-9]+)?$` (digits,
// optionally a point and more digits: `"0.5"`, `"30000"`; no sign, exponent or separator),
// written on each field as `#[schema(pattern = ...)]`.

/// An order's side.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Buy,
    Sell,
}

/// An order's type.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    Limit,
    Market,
}

/// How long a limit order may rest.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    Gtc,
    Gtt,
    Ioc,
    Fok,
    PostOnly,
}

/// Self-trade prevention.
#[derive(Serialize, ToSchema)]
pub enum SelfTradePrevention {
    #[serde(rename = "cancel_newest")]
    Newest,
    #[serde(rename = "cancel_oldest")]
    Oldest,
    #[serde(rename = "cancel_both")]
    Both,
}

/// An order's status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// An untriggered stop order: funds held, not in the book.
    Pending,
    Open,
    Filled,
    Cancelled,
}

/// Which way the last trade price must move for a stop order to trigger.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopDirection {
    /// At or below the stop price (sells).
    Loss,
    /// At or above the stop price (buys).
    Entry,
}

/// How long after acceptance a good-till-time order is cancelled.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelAfter {
    Min,
    Hour,
    Day,
}

/// Which orders a list shows.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatusFilter {
    Open,
    Done,
    All,
}

/// Why an order was cancelled.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    User,
    SelfTrade,
    Unfilled,
    FokUnfillable,
    PostOnlyWouldCross,
    Engine,
    /// A good-till-time order reached its expiry.
    Expired,
    /// A triggered stop order that the pre-trade checks refused (`cancel_reject` says why).
    StopRefused,
}

/// A market's trading state.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MarketState {
    Open,
    PostOnly,
    CancelOnly,
    Halted,
}

/// Whether a fill added liquidity (maker) or took it (taker).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Liquidity {
    Maker,
    Taker,
}

/// A deposit's status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DepositStatus {
    Pending,
    Credited,
    Dropped,
    Reversed,
}

/// A withdrawal's status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawalStatus {
    Requested,
    Waiting,
    Review,
    Approved,
    Signing,
    Signed,
    Broadcast,
    Completed,
    Cancelled,
    Failed,
    Reverted,
}

/// A WebAuthn assertion: what `navigator.credentials.get` returns, binary fields base64url.
#[derive(Serialize, ToSchema)]
pub struct WebAuthnAssertion {
    /// The credential id (base64url).
    #[schema(
        pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
        min_length = 2,
        max_length = 1364
    )]
    pub id: String,
    /// The same id (base64url).
    #[serde(rename = "rawId")]
    #[schema(
        pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
        min_length = 2,
        max_length = 1364
    )]
    pub raw_id: String,
    #[serde(rename = "type")]
    pub type_: CredentialType,
    pub response: WebAuthnAssertionResponse,
}

/// A WebAuthn credential's type.
#[derive(Serialize, ToSchema)]
pub enum CredentialType {
    #[serde(rename = "public-key")]
    PublicKey,
}

/// `AuthenticatorAssertionResponse`, binary fields base64url.
#[derive(Serialize, ToSchema)]
pub struct WebAuthnAssertionResponse {
    #[serde(rename = "clientDataJSON")]
    #[schema(
        pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
        max_length = 5462
    )]
    pub client_data_json: String,
    #[serde(rename = "authenticatorData")]
    #[schema(
        pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
        max_length = 1366
    )]
    pub authenticator_data: String,
    #[schema(
        pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
        max_length = 342
    )]
    pub signature: String,
    /// Present for discoverable credentials; null or absent otherwise.
    #[serde(rename = "userHandle")]
    #[schema(
        pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
        max_length = 86
    )]
    pub user_handle: Option<String>,
}

/// Candle widths in seconds, as the schema of the `granularity` parameter.
pub fn granularity() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Integer))
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .enum_values(Some(kinko_core::market::CANDLE_GRANULARITIES_S.iter().copied()))
}

/// A user's status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Frozen,
    Disabled,
}

/// What a proposal changes.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProposalKind {
    SetRiskPolicy,
    SetRoles,
    ResumeWithdrawals,
    ResumeOperation,
    UnfreezeUser,
    WhitelistAddress,
    Restitution,
}

/// A proposal's status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    Open,
    Executed,
    Withdrawn,
}

/// An incident's status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Resolved,
}

/// The `step_up` of a `STEP_UP_REQUIRED` answer: a challenge for exactly the action refused.
#[derive(Serialize, ToSchema)]
pub struct StepUpChallenge {
    /// Base64url; sign it with a passkey, or send it back with a TOTP code.
    pub challenge: String,
    /// The answer must arrive before this time.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The second factors the user can answer with.
    pub methods: Vec<StepUpMethod>,
    /// For `navigator.credentials.get({publicKey})`.
    pub webauthn: WebAuthnRequestOptions,
}

/// A second factor that answers a step-up challenge.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepUpMethod {
    Totp,
    Webauthn,
    RecoveryCode,
}

/// `PublicKeyCredentialRequestOptions`, binary fields base64url.
#[derive(Serialize, ToSchema)]
pub struct WebAuthnRequestOptions {
    pub challenge: String,
    /// Milliseconds.
    pub timeout: u64,
    #[serde(rename = "rpId")]
    pub rp_id: String,
    /// The user's passkeys.
    #[serde(rename = "allowCredentials")]
    pub allow_credentials: Vec<WebAuthnCredentialDescriptor>,
    #[serde(rename = "userVerification")]
    pub user_verification: UserVerification,
}

/// A credential a WebAuthn ceremony may use.
#[derive(Serialize, ToSchema)]
pub struct WebAuthnCredentialDescriptor {
    #[serde(rename = "type")]
    pub type_: CredentialType,
    /// The credential id (base64url).
    pub id: String,
}

/// What the server asks of user verification.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserVerification {
    Preferred,
}

/// What a session may do: `password` (the second factor is still owed) or `full`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionLevel {
    Password,
    Full,
}

/// The language of a user's messages (and pages): `en` or `ja`.
#[derive(Serialize, serde::Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    En,
    Ja,
}

impl From<Language> for kinko_core::identity::Language {
    fn from(l: Language) -> Self {
        match l {
            Language::En => kinko_core::identity::Language::En,
            Language::Ja => kinko_core::identity::Language::Ja,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request rules: what the handlers accept, written so that a generated request that matches the
// document passes the handler's own checks (the state of the server — whether a token or an
// enrolment exists, a market's tick and band, a balance — aside).

/// `kinko_core::identity::normalise_email` as a pattern (with `maxLength` 254): one `@`, printable
/// ASCII without `<>",;`, a domain that contains a dot and neither starts nor ends with one.
/// (The server also trims surrounding white space and lowercases; the document asks for neither.)
pub const EMAIL_PATTERN: &str =
    r#"^[!#-+\--:=?A-~]+@[!#-+\-/-:=?A-~][!#-+\--:=?A-~]*\.[!#-+\--:=?A-~]*[!#-+\-/-:=?A-~]$"#;

/// Canonical base64url without padding (what `stepup::unb64` and the WebAuthn decoder take):
/// groups of four, then nothing, two or three characters whose unused low bits are zero.
pub const BASE64URL_PATTERN: &str =
    r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$";

/// A step-up challenge as the server issues it: 60 bytes starting with `KSU1`, base64url.
pub const CHALLENGE_PATTERN: &str = r"^S1NVM[Q-Za-f][A-Za-z0-9_-]{74}=*$";

/// An IPv4 CIDR block (`203.0.113.0/24`), as `kinko_core::keys::parse_ip_entry` reads one.
pub const IPV4_CIDR_PATTERN: &str = r"^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}/(3[0-2]|[12]?[0-9])$";

/// `kinko_core::identity::anti_phishing_ok` for ASCII: 4 to 32 letters, digits, spaces or
/// `-_.!`, not starting or ending with a space. (Letters and digits of other scripts are
/// accepted too; the document lists the ASCII ones.)
pub const ANTI_PHISHING_PATTERN: &str = r"^[A-Za-z0-9_.!-][A-Za-z0-9 _.!-]{2,30}[A-Za-z0-9_.!-]$";

/// The `type` of a limit order (the default when absent).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitType {
    Limit,
}

/// The `type` of a market order.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MarketType {
    Market,
}

// The handler parses all of these as one `native::PlaceOrderIn`; each new order type is one
// more variant here.
/// An order: exactly one of these shapes.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum PlaceOrder {
    Limit(LimitOrder),
    MarketSize(MarketOrderBySize),
    MarketFunds(MarketOrderByFunds),
}

/// A limit order: `price` and `size`, no `funds`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"market": "BTC-USD", "side": "buy", "price": "29000", "size": "0.001"}))]
#[serde(deny_unknown_fields)]
pub struct LimitOrder {
    /// e.g. `BTC-USD`.
    #[schema(pattern = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$")]
    pub market: String,
    pub side: Side,
    /// `limit`, the default.
    #[serde(rename = "type")]
    pub order_type: Option<LimitType>,
    /// Limit price (quote per whole base unit): a multiple of the market's tick, inside its
    /// price band.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub price: String,
    /// Base quantity: a multiple of the market's lot.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub size: String,
    /// `gtc` (default), `gtt` (with `expire_time` or `cancel_after`), `ioc`, `fok` or `post_only`.
    pub time_in_force: Option<TimeInForce>,
    /// Your own id for the order (a UUID), unique per account.
    #[schema(pattern = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")]
    pub client_order_id: Option<String>,
    /// Self-trade prevention: `cancel_newest` (default), `cancel_oldest` or `cancel_both`.
    /// Makes it a stop order: it waits, its funds held, until the last trade price reaches
    /// `stop_price` (a multiple of the tick), then enters the book through every pre-trade check.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub stop_price: Option<String>,
    /// With `stop_price`: `loss` (sells) or `entry` (buys); defaults to the one the side allows.
    pub stop: Option<StopDirection>,
    /// With `time_in_force` `gtt`: when the order is cancelled (reason `expired`); or
    /// `cancel_after`.
    #[schema(format = DateTime)]
    pub expire_time: Option<String>,
    /// With `time_in_force` `gtt`: cancelled a minute, an hour or a day after acceptance.
    pub cancel_after: Option<CancelAfter>,
    pub stp: Option<SelfTradePrevention>,
}

/// A market order for a base quantity: `size`, no `price` or `funds`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"market": "BTC-USD", "side": "buy", "type": "market", "size": "0.001"}))]
#[serde(deny_unknown_fields)]
pub struct MarketOrderBySize {
    #[schema(pattern = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$")]
    pub market: String,
    pub side: Side,
    #[serde(rename = "type")]
    pub order_type: MarketType,
    /// Base quantity: a multiple of the market's lot.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub size: String,
    /// Not used: a market order never rests.
    pub time_in_force: Option<TimeInForce>,
    #[schema(pattern = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")]
    pub client_order_id: Option<String>,
    /// Makes it a stop order: it waits, its funds held, until the last trade price reaches
    /// `stop_price` (a multiple of the tick), then enters the book through every pre-trade check.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub stop_price: Option<String>,
    /// With `stop_price`: `loss` (sells) or `entry` (buys); defaults to the one the side allows.
    pub stop: Option<StopDirection>,
    pub stp: Option<SelfTradePrevention>,
}

/// A market order for an amount of quote, fees included: `funds`, no `price` or `size`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"market": "BTC-USD", "side": "sell", "type": "market", "funds": "30"}))]
#[serde(deny_unknown_fields)]
pub struct MarketOrderByFunds {
    #[schema(pattern = r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$")]
    pub market: String,
    pub side: Side,
    #[serde(rename = "type")]
    pub order_type: MarketType,
    /// Quote to spend or receive, fees included.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub funds: String,
    /// Not used: a market order never rests.
    pub time_in_force: Option<TimeInForce>,
    #[schema(pattern = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")]
    pub client_order_id: Option<String>,
    /// Makes it a stop order: it waits, its funds held, until the last trade price reaches
    /// `stop_price` (a multiple of the tick), then enters the book through every pre-trade check.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub stop_price: Option<String>,
    /// With `stop_price`: `loss` (sells) or `entry` (buys); defaults to the one the side allows.
    pub stop: Option<StopDirection>,
    pub stp: Option<SelfTradePrevention>,
}

/// A `PublicKeyCredential` from `navigator.credentials.create`, binary fields base64url (other
/// members a browser adds, such as `clientExtensionResults`, are ignored).
#[derive(Serialize, ToSchema)]
pub struct RegistrationCredential {
    /// The credential id (base64url); the same bytes as `rawId`.
    #[schema(
        pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
        min_length = 2,
        max_length = 1364
    )]
    pub id: String,
    #[serde(rename = "rawId")]
    #[schema(
        pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
        min_length = 2,
        max_length = 1364
    )]
    pub raw_id: String,
    #[serde(rename = "type")]
    pub type_: CredentialType,
    pub response: AttestationResponse,
}

/// `AuthenticatorAttestationResponse`, binary fields base64url (`transports` and other members
/// are ignored).
#[derive(Serialize, ToSchema)]
pub struct AttestationResponse {
    #[serde(rename = "clientDataJSON")]
    #[schema(
        pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
        max_length = 5462
    )]
    pub client_data_json: String,
    #[serde(rename = "attestationObject")]
    #[schema(
        pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
        max_length = 10923
    )]
    pub attestation_object: String,
}

/// The rules a derived schema cannot state, put into the document's components: a step-up
/// answer carries exactly one factor (and a WebAuthn assertion the challenge it signed); an API
/// key has at least one scope, and the withdraw scope needs an IP allowlist.
pub fn exact_requests(doc: &mut serde_json::Value) {
    use serde_json::{json, Map, Value};
    let Some(c) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let nothing = json!({"type": "null"});
    let challenge = json!({"type": "string", "pattern": CHALLENGE_PATTERN,
        "description": "The `challenge` of the `STEP_UP_REQUIRED` answer (base64url)."});
    let optional_challenge = json!({"oneOf": [nothing.clone(), challenge.clone()]});
    let step_up = |factor: &str, value: Value, challenge: &Value, required: &[&str]| {
        let mut props = Map::new();
        for f in ["totp", "webauthn", "recovery_code"] {
            props.insert(
                f.into(),
                if f == factor {
                    value.clone()
                } else {
                    nothing.clone()
                },
            );
        }
        props.insert("challenge".into(), challenge.clone());
        json!({"type": "object", "properties": props, "required": required,
            "additionalProperties": false})
    };
    c.insert(
        "StepUpIn".into(),
        json!({
            "description": "A second-factor answer to a step-up challenge: exactly one of `totp` (a 6-digit code; `challenge` optional, the code is then bound to the action as sent), `webauthn` (an assertion over `challenge`, which it needs) or `recovery_code` (only to re-enrol a second factor).",
            "oneOf": [
                step_up("totp", json!({"type": "string"}), &optional_challenge, &["totp"]),
                step_up("webauthn", json!({"$ref": "#/components/schemas/WebAuthnAssertion"}),
                    &challenge, &["webauthn", "challenge"]),
                step_up("recovery_code", json!({"type": "string"}), &optional_challenge, &["recovery_code"]),
            ]
        }),
    );
    // Scopes of a key that cannot withdraw: `view` or `trade` (or both).
    let scope = |on: &str| {
        let mut props = Map::new();
        for s in ["view", "trade"] {
            props.insert(
                s.into(),
                if s == on {
                    json!({"type": "boolean", "enum": [true]})
                } else {
                    json!({"type": "boolean"})
                },
            );
        }
        props.insert("withdraw".into(), json!({"type": "boolean", "enum": [false]}));
        json!({"type": "object", "properties": props, "required": [on], "additionalProperties": false})
    };
    c.insert(
        "Scopes".into(),
        json!({"description": "What a key without the withdraw scope may do: at least one of `view` and `trade`.",
            "anyOf": [scope("view"), scope("trade")]}),
    );
    c.insert(
        "WithdrawScopes".into(),
        json!({"type": "object", "description": "The scopes of a key that may withdraw.",
            "properties": {"view": {"type": "boolean"}, "trade": {"type": "boolean"},
                "withdraw": {"type": "boolean", "enum": [true]}},
            "required": ["withdraw"], "additionalProperties": false}),
    );
    // An API key: the derived object, once with `Scopes`, once with `WithdrawScopes` and a
    // non-empty `ip_allowlist`.
    let Some(mut key) = c.get("ApiKeyIn").cloned() else {
        return;
    };
    // Each entry is an IP address or a CIDR block (`kinko_core::keys::parse_ip_entry`). IPv6
    // blocks (`2001:db8::/32`) are accepted too but not stated here: no pattern short of a full
    // IPv6 grammar describes them exactly.
    key["properties"]["ip_allowlist"]["items"] = json!({"anyOf": [
        {"type": "string", "format": "ipv4"},
        {"type": "string", "format": "ipv6"},
        {"type": "string", "pattern": IPV4_CIDR_PATTERN}
    ]});
    let mut plain = key.clone();
    plain["properties"]["scopes"] = json!({"$ref": "#/components/schemas/Scopes"});
    let mut withdraw = key;
    withdraw["properties"]["scopes"] = json!({"$ref": "#/components/schemas/WithdrawScopes"});
    withdraw["properties"]["ip_allowlist"]["minItems"] = json!(1);
    withdraw["required"] = json!(["scopes", "ip_allowlist"]);
    c.insert(
        "ApiKeyIn".into(),
        json!({"description": "A new API key; the withdraw scope needs an IP allowlist.",
            "oneOf": [plain, withdraw]}),
    );
}

/// States the server's `identity.api_key_days_max` as the maximum of `expires_in_days`.
pub fn api_key_days_max(doc: &mut serde_json::Value, days_max: u32) {
    let days_max = days_max.max(1);
    if let Some(variants) = doc
        .pointer_mut("/components/schemas/ApiKeyIn/oneOf")
        .and_then(serde_json::Value::as_array_mut)
    {
        for v in variants {
            if let Some(days) = v.pointer_mut("/properties/expires_in_days") {
                days["maximum"] = days_max.into();
            }
        }
    }
}
