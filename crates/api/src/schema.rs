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
    pub id: String,
    /// The same id (base64url).
    #[serde(rename = "rawId")]
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
    pub client_data_json: String,
    #[serde(rename = "authenticatorData")]
    pub authenticator_data: String,
    pub signature: String,
    /// Present for discoverable credentials; null or absent otherwise.
    #[serde(rename = "userHandle")]
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
