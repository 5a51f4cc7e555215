//! A WebAuthn relying party in pure Rust: passkey registration (WebAuthn Level 2 §7.1) and
//! authentication (§7.2) for ES256 (P-256) and EdDSA (Ed25519) credentials.
//!
//! The browser's `PublicKeyCredential` arrives as JSON with every `ArrayBuffer` encoded as
//! base64url ([`RegistrationResponse`], [`AssertionResponse`]); the options the page hands to
//! `navigator.credentials.create` / `get` come from [`creation_options`] / [`request_options`] in
//! the same encoding. Challenges are the caller's: it draws them, stores them with the ceremony
//! and passes the one it expects here; this module keeps no state and reads no clock.
//!
//! Attestation is not used for trust decisions. `fmt` "none" is accepted with an empty statement;
//! "packed" self attestation is verified with the credential's own key (which proves nothing about
//! the authenticator's make, only that the statement is consistent); "packed" with an `x5c`
//! certificate chain is accepted without verifying the chain. Every other format is refused.
//!
//! Every input is bounded ([`CLIENT_DATA_BYTES_MAX`], [`AUTHENTICATOR_DATA_BYTES_MAX`],
//! [`ATTESTATION_OBJECT_BYTES_MAX`], [`SIGNATURE_BYTES_MAX`], [`CREDENTIAL_ID_BYTES_MAX`],
//! [`USER_HANDLE_BYTES_MAX`]) and bad input is a [`WebauthnError`], never a panic.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ciborium::value::Value as Cbor;
use p256::ecdsa::signature::Verifier as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Largest `clientDataJSON` accepted.
pub const CLIENT_DATA_BYTES_MAX: usize = 4 * 1024;
/// Largest authenticator data accepted (alone in an assertion, inside the attestation object at
/// registration).
pub const AUTHENTICATOR_DATA_BYTES_MAX: usize = 1024;
/// Largest attestation object accepted.
pub const ATTESTATION_OBJECT_BYTES_MAX: usize = 8 * 1024;
/// Largest assertion signature accepted (a DER ES256 signature is at most 72 bytes).
pub const SIGNATURE_BYTES_MAX: usize = 256;
/// Largest credential id (WebAuthn Level 3 §7.1 step "credentialId ≤ 1023 bytes").
pub const CREDENTIAL_ID_BYTES_MAX: usize = 1023;
/// Largest user handle (WebAuthn §5.4.3: at most 64 bytes).
pub const USER_HANDLE_BYTES_MAX: usize = 64;
/// Largest challenge read back from `clientDataJSON`.
const CHALLENGE_BYTES_MAX: usize = 1024;
/// The ceremony timeout the options ask the browser for.
pub const CEREMONY_TIMEOUT_MS: u64 = 60_000;
/// Deepest CBOR nesting parsed; the structures read here nest at most three deep.
const CBOR_DEPTH_MAX: usize = 16;

/// COSE algorithm identifiers (IANA "COSE Algorithms").
const COSE_ALG_ES256: i128 = -7;
const COSE_ALG_EDDSA: i128 = -8;
/// COSE key labels and values (RFC 9053).
const COSE_KTY: i128 = 1;
const COSE_ALG: i128 = 3;
const COSE_CRV: i128 = -1;
const COSE_X: i128 = -2;
const COSE_Y: i128 = -3;
const COSE_KTY_OKP: i128 = 1;
const COSE_KTY_EC2: i128 = 2;
const COSE_CRV_P256: i128 = 1;
const COSE_CRV_ED25519: i128 = 6;

/// Authenticator data flags (WebAuthn §6.1).
const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_AT: u8 = 0x40;
const FLAG_ED: u8 = 0x80;

const TAG_ES256: u8 = 1;
const TAG_ED25519: u8 = 2;

/// base64url without padding, as WebAuthn writes it; padding is tolerated when decoding.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The relying party: its RP ID (a registrable domain, e.g. "localhost" or "example.com") and
/// the exact origins its pages are served from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelyingParty {
    /// e.g. "localhost"
    pub id: String,
    pub name: String,
    /// Exact origins, e.g. "http://localhost:8080" or "https://example.com".
    pub origins: Vec<String>,
}

/// A credential public key in a normalised form the engine stores as opaque bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialKey {
    /// ECDSA P-256 with SHA-256 (COSE -7); the uncompressed SEC1 point `0x04 ‖ x ‖ y`.
    Es256 { sec1: [u8; 65] },
    /// Ed25519 (COSE -8); the compressed Edwards point.
    Ed25519 { key: [u8; 32] },
}

impl CredentialKey {
    /// A tag byte (1 = ES256, 2 = Ed25519), then the key.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            CredentialKey::Es256 { sec1 } => [&[TAG_ES256][..], &sec1[..]].concat(),
            CredentialKey::Ed25519 { key } => [&[TAG_ED25519][..], &key[..]].concat(),
        }
    }

    /// The inverse of [`CredentialKey::to_bytes`]; the key is validated again (a point on
    /// P-256, a non-weak Ed25519 point).
    pub fn from_bytes(b: &[u8]) -> Result<CredentialKey, WebauthnError> {
        let malformed = WebauthnError::Malformed("credential key");
        match b.split_first() {
            Some((&TAG_ES256, rest)) => {
                let sec1: [u8; 65] = rest.try_into().map_err(|_| malformed)?;
                es256_key(sec1)
            }
            Some((&TAG_ED25519, rest)) => {
                let key: [u8; 32] = rest.try_into().map_err(|_| malformed)?;
                ed25519_key(key)
            }
            _ => Err(malformed),
        }
    }

    /// The COSE algorithm this key signs with.
    fn cose_alg(&self) -> i128 {
        match self {
            CredentialKey::Es256 { .. } => COSE_ALG_ES256,
            CredentialKey::Ed25519 { .. } => COSE_ALG_EDDSA,
        }
    }
}

/// A P-256 key from its uncompressed SEC1 encoding, refused unless the point is on the curve.
fn es256_key(sec1: [u8; 65]) -> Result<CredentialKey, WebauthnError> {
    if sec1.first() != Some(&0x04) {
        return Err(WebauthnError::Malformed("credential key"));
    }
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
        .map_err(|_| WebauthnError::Malformed("credential key"))?;
    Ok(CredentialKey::Es256 { sec1 })
}

/// An Ed25519 key, refused unless it decompresses to a point of large order.
fn ed25519_key(key: [u8; 32]) -> Result<CredentialKey, WebauthnError> {
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|_| WebauthnError::Malformed("credential key"))?;
    if vk.is_weak() {
        return Err(WebauthnError::Malformed("credential key"));
    }
    Ok(CredentialKey::Ed25519 { key })
}

/// What the browser returns from `navigator.credentials.create`, with every `ArrayBuffer` as a
/// base64url string (the shape of `PublicKeyCredential.toJSON()`); unknown fields are ignored.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct RegistrationResponse {
    pub id: String,
    #[serde(rename = "rawId")]
    pub raw_id: String,
    /// "public-key"
    #[serde(rename = "type")]
    pub type_: String,
    pub response: AttestationResponse,
}

/// `AuthenticatorAttestationResponse`, base64url-encoded.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct AttestationResponse {
    #[serde(rename = "clientDataJSON")]
    pub client_data_json: String,
    #[serde(rename = "attestationObject")]
    pub attestation_object: String,
}

/// What the browser returns from `navigator.credentials.get`, base64url-encoded as above.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct AssertionResponse {
    pub id: String,
    #[serde(rename = "rawId")]
    pub raw_id: String,
    /// "public-key"
    #[serde(rename = "type")]
    pub type_: String,
    pub response: AuthenticatorAssertion,
}

/// `AuthenticatorAssertionResponse`, base64url-encoded.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct AuthenticatorAssertion {
    #[serde(rename = "clientDataJSON")]
    pub client_data_json: String,
    #[serde(rename = "authenticatorData")]
    pub authenticator_data: String,
    pub signature: String,
    /// Present for discoverable credentials; `null` or absent otherwise.
    #[serde(rename = "userHandle", default, skip_serializing_if = "Option::is_none")]
    pub user_handle: Option<String>,
}

impl AssertionResponse {
    /// The credential id, to look up the stored key before [`verify_assertion`]. `id` and
    /// `rawId` must agree.
    pub fn credential_id(&self) -> Result<Vec<u8>, WebauthnError> {
        credential_id(&self.id, &self.raw_id)
    }

    /// The user handle the authenticator returned (discoverable credentials), if any.
    pub fn user_handle(&self) -> Result<Option<Vec<u8>>, WebauthnError> {
        match &self.response.user_handle {
            None => Ok(None),
            Some(s) => b64_decode(s, USER_HANDLE_BYTES_MAX, "userHandle").map(Some),
        }
    }
}

/// A credential that passed registration; store `credential_id`, `key.to_bytes()` and
/// `sign_count` with the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCredential {
    pub credential_id: Vec<u8>,
    pub key: CredentialKey,
    pub sign_count: u32,
    pub user_verified: bool,
}

/// An assertion that passed; store `sign_count` as the credential's new counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedAssertion {
    pub credential_id: Vec<u8>,
    pub sign_count: u32,
    pub user_verified: bool,
}

/// Why a ceremony was refused. [`WebauthnError::code`] is the stable string clients see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebauthnError {
    /// Undecodable, oversized or structurally wrong input; the text names the part.
    #[error("malformed WebAuthn response: {0}")]
    Malformed(&'static str),
    #[error("client data type is not the expected ceremony")]
    TypeMismatch,
    #[error("challenge does not match")]
    ChallengeMismatch,
    #[error("origin is not one of the relying party's origins")]
    OriginMismatch,
    #[error("RP ID hash does not match the relying party")]
    RpIdMismatch,
    #[error("user presence flag not set")]
    UserNotPresent,
    #[error("credential algorithm not supported")]
    AlgorithmUnsupported,
    #[error("signature does not verify")]
    SignatureInvalid,
    #[error("signature counter did not increase")]
    CounterNotIncreased,
    #[error("credential not known")]
    CredentialUnknown,
}

impl WebauthnError {
    pub fn code(&self) -> &'static str {
        match self {
            WebauthnError::Malformed(_) => "WEBAUTHN_MALFORMED",
            WebauthnError::TypeMismatch => "WEBAUTHN_TYPE_MISMATCH",
            WebauthnError::ChallengeMismatch => "WEBAUTHN_CHALLENGE_MISMATCH",
            WebauthnError::OriginMismatch => "WEBAUTHN_ORIGIN_MISMATCH",
            WebauthnError::RpIdMismatch => "WEBAUTHN_RP_ID_MISMATCH",
            WebauthnError::UserNotPresent => "WEBAUTHN_USER_NOT_PRESENT",
            WebauthnError::AlgorithmUnsupported => "WEBAUTHN_ALGORITHM_UNSUPPORTED",
            WebauthnError::SignatureInvalid => "WEBAUTHN_SIGNATURE_INVALID",
            WebauthnError::CounterNotIncreased => "WEBAUTHN_COUNTER_NOT_INCREASED",
            WebauthnError::CredentialUnknown => "WEBAUTHN_CREDENTIAL_UNKNOWN",
        }
    }
}

/// `PublicKeyCredentialCreationOptions` in the WebAuthn JSON form (binary fields base64url):
/// the page decodes `challenge`, `user.id` and `excludeCredentials[].id` to `ArrayBuffer`s and
/// passes the object as `publicKey` to `navigator.credentials.create`. `user_handle` should be
/// 1..=64 random bytes that are not personally identifying.
pub fn creation_options(
    rp: &RelyingParty,
    user_handle: &[u8],
    user_name: &str,
    challenge: &[u8],
    exclude: &[Vec<u8>],
) -> serde_json::Value {
    json!({
        "rp": { "id": rp.id, "name": rp.name },
        "user": { "id": b64_encode(user_handle), "name": user_name, "displayName": user_name },
        "challenge": b64_encode(challenge),
        "pubKeyCredParams": [
            { "type": "public-key", "alg": COSE_ALG_ES256 as i64 },
            { "type": "public-key", "alg": COSE_ALG_EDDSA as i64 },
        ],
        "timeout": CEREMONY_TIMEOUT_MS,
        "excludeCredentials": descriptors(exclude),
        "authenticatorSelection": {
            "residentKey": "preferred",
            "requireResidentKey": false,
            "userVerification": "preferred",
        },
        "attestation": "none",
    })
}

/// `PublicKeyCredentialRequestOptions` in the WebAuthn JSON form, for
/// `navigator.credentials.get`. An empty `allow` asks for a discoverable credential.
pub fn request_options(rp: &RelyingParty, challenge: &[u8], allow: &[Vec<u8>]) -> serde_json::Value {
    json!({
        "challenge": b64_encode(challenge),
        "timeout": CEREMONY_TIMEOUT_MS,
        "rpId": rp.id,
        "allowCredentials": descriptors(allow),
        "userVerification": "preferred",
    })
}

fn descriptors(ids: &[Vec<u8>]) -> serde_json::Value {
    ids.iter()
        .map(|id| json!({ "type": "public-key", "id": b64_encode(id) }))
        .collect()
}

/// Registration, WebAuthn Level 2 §7.1.
pub fn verify_registration(
    rp: &RelyingParty,
    expected_challenge: &[u8],
    resp: &RegistrationResponse,
) -> Result<NewCredential, WebauthnError> {
    check_credential_type(&resp.type_)?;
    let credential_id = credential_id(&resp.id, &resp.raw_id)?;
    // Steps 5–11: the client data.
    let client_data = b64_decode(
        &resp.response.client_data_json,
        CLIENT_DATA_BYTES_MAX,
        "clientDataJSON",
    )?;
    check_client_data(rp, "webauthn.create", expected_challenge, &client_data)?;
    let client_data_hash = Sha256::digest(&client_data);
    // Step 12: the attestation object.
    let attestation_object = b64_decode(
        &resp.response.attestation_object,
        ATTESTATION_OBJECT_BYTES_MAX,
        "attestationObject",
    )?;
    let att = parse_attestation_object(&attestation_object)?;
    if att.auth_data.len() > AUTHENTICATOR_DATA_BYTES_MAX {
        return Err(WebauthnError::Malformed("authenticatorData length"));
    }
    let auth = parse_auth_data(&att.auth_data)?;
    // Steps 13–14.
    check_rp_and_presence(rp, &auth)?;
    // Steps 16 (algorithm, in parse_cose_key) and the attested credential data itself.
    let Some(attested) = auth.attested else {
        return Err(WebauthnError::Malformed("attested credential data missing"));
    };
    if attested.credential_id != credential_id {
        return Err(WebauthnError::Malformed("credential id"));
    }
    // Steps 18–19: the attestation statement.
    match att.fmt.as_str() {
        "none" => {
            if !att.att_stmt.as_map().is_some_and(Vec::is_empty) {
                return Err(WebauthnError::Malformed("attestation statement"));
            }
        }
        "packed" => {
            let signed = [&att.auth_data[..], &client_data_hash[..]].concat();
            verify_packed(&att.att_stmt, &attested.key, &signed)?;
        }
        _ => return Err(WebauthnError::Malformed("attestation format")),
    }
    Ok(NewCredential {
        credential_id,
        key: attested.key,
        sign_count: auth.sign_count,
        user_verified: auth.flags & FLAG_UV != 0,
    })
}

/// Authentication, WebAuthn Level 2 §7.2. The caller found `key` and `stored_sign_count` by
/// [`AssertionResponse::credential_id`] (and answers [`WebauthnError::CredentialUnknown`]
/// itself when there is none) and must store the returned `sign_count`.
pub fn verify_assertion(
    rp: &RelyingParty,
    expected_challenge: &[u8],
    key: &CredentialKey,
    stored_sign_count: u32,
    resp: &AssertionResponse,
) -> Result<VerifiedAssertion, WebauthnError> {
    check_credential_type(&resp.type_)?;
    let credential_id = resp.credential_id()?;
    resp.user_handle()?;
    // Steps 10–16: the client data.
    let client_data = b64_decode(
        &resp.response.client_data_json,
        CLIENT_DATA_BYTES_MAX,
        "clientDataJSON",
    )?;
    check_client_data(rp, "webauthn.get", expected_challenge, &client_data)?;
    // Steps 17–18.
    let auth_data = b64_decode(
        &resp.response.authenticator_data,
        AUTHENTICATOR_DATA_BYTES_MAX,
        "authenticatorData",
    )?;
    let auth = parse_auth_data(&auth_data)?;
    if auth.attested.is_some() {
        return Err(WebauthnError::Malformed(
            "attested credential data in an assertion",
        ));
    }
    check_rp_and_presence(rp, &auth)?;
    // Steps 19–20: the signature over authenticatorData ‖ SHA-256(clientDataJSON).
    let signature = b64_decode(&resp.response.signature, SIGNATURE_BYTES_MAX, "signature")?;
    let signed = [&auth_data[..], &Sha256::digest(&client_data)[..]].concat();
    verify_signature(key, &signed, &signature)?;
    // Step 21: a counter that does not move forward may mean a cloned authenticator.
    if (stored_sign_count != 0 || auth.sign_count != 0) && auth.sign_count <= stored_sign_count {
        return Err(WebauthnError::CounterNotIncreased);
    }
    Ok(VerifiedAssertion {
        credential_id,
        sign_count: auth.sign_count,
        user_verified: auth.flags & FLAG_UV != 0,
    })
}

fn check_credential_type(type_: &str) -> Result<(), WebauthnError> {
    if type_ == "public-key" {
        Ok(())
    } else {
        Err(WebauthnError::Malformed("credential type"))
    }
}

/// The credential id from `rawId`, which `id` must repeat.
fn credential_id(id: &str, raw_id: &str) -> Result<Vec<u8>, WebauthnError> {
    let raw = b64_decode(raw_id, CREDENTIAL_ID_BYTES_MAX, "rawId")?;
    let again = b64_decode(id, CREDENTIAL_ID_BYTES_MAX, "id")?;
    if raw.is_empty() || raw != again {
        return Err(WebauthnError::Malformed("credential id"));
    }
    Ok(raw)
}

/// `CollectedClientData` (WebAuthn §5.8.1); other members (`topOrigin`, `tokenBinding`) are
/// ignored.
#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    type_: String,
    challenge: String,
    origin: String,
    #[serde(rename = "crossOrigin", default)]
    cross_origin: Option<bool>,
}

fn check_client_data(
    rp: &RelyingParty,
    expected_type: &str,
    expected_challenge: &[u8],
    raw: &[u8],
) -> Result<(), WebauthnError> {
    let cd: ClientData =
        serde_json::from_slice(raw).map_err(|_| WebauthnError::Malformed("clientDataJSON"))?;
    if cd.type_ != expected_type {
        return Err(WebauthnError::TypeMismatch);
    }
    let challenge = b64_decode(&cd.challenge, CHALLENGE_BYTES_MAX, "clientDataJSON challenge")?;
    if !bool::from(challenge.as_slice().ct_eq(expected_challenge)) {
        return Err(WebauthnError::ChallengeMismatch);
    }
    if !rp.origins.contains(&cd.origin) {
        return Err(WebauthnError::OriginMismatch);
    }
    // A ceremony run inside a cross-origin iframe is not one this relying party offers.
    if cd.cross_origin == Some(true) {
        return Err(WebauthnError::OriginMismatch);
    }
    Ok(())
}

fn check_rp_and_presence(rp: &RelyingParty, auth: &AuthData) -> Result<(), WebauthnError> {
    if auth.rp_id_hash[..] != Sha256::digest(rp.id.as_bytes())[..] {
        return Err(WebauthnError::RpIdMismatch);
    }
    if auth.flags & FLAG_UP == 0 {
        return Err(WebauthnError::UserNotPresent);
    }
    Ok(())
}

/// Authenticator data (WebAuthn §6.1).
struct AuthData {
    rp_id_hash: [u8; 32],
    flags: u8,
    sign_count: u32,
    attested: Option<AttestedCredential>,
}

/// Attested credential data (WebAuthn §6.5.1).
struct AttestedCredential {
    credential_id: Vec<u8>,
    key: CredentialKey,
}

/// `n` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], WebauthnError> {
    let (head, tail) = rest.split_at_checked(n).ok_or(WebauthnError::Malformed(what))?;
    *rest = tail;
    Ok(head)
}

fn take_array<const N: usize>(rest: &mut &[u8], what: &'static str) -> Result<[u8; N], WebauthnError> {
    take(rest, N, what)?
        .try_into()
        .map_err(|_| WebauthnError::Malformed(what))
}

fn parse_auth_data(data: &[u8]) -> Result<AuthData, WebauthnError> {
    const WHAT: &str = "authenticatorData";
    if data.len() > AUTHENTICATOR_DATA_BYTES_MAX {
        return Err(WebauthnError::Malformed("authenticatorData length"));
    }
    let mut rest = data;
    let rp_id_hash = take_array::<32>(&mut rest, WHAT)?;
    let [flags] = take_array::<1>(&mut rest, WHAT)?;
    let sign_count = u32::from_be_bytes(take_array::<4>(&mut rest, WHAT)?);
    let attested = if flags & FLAG_AT != 0 {
        const ACD: &str = "attested credential data";
        let _aaguid = take_array::<16>(&mut rest, ACD)?;
        let id_len = usize::from(u16::from_be_bytes(take_array::<2>(&mut rest, ACD)?));
        if id_len == 0 || id_len > CREDENTIAL_ID_BYTES_MAX {
            return Err(WebauthnError::Malformed("credential id length"));
        }
        let credential_id = take(&mut rest, id_len, ACD)?.to_vec();
        let cose = cbor_read(&mut rest, "credential public key")?;
        let key = parse_cose_key(&cose)?;
        Some(AttestedCredential { credential_id, key })
    } else {
        None
    };
    if flags & FLAG_ED != 0 {
        // Extension outputs are not used, but they must be a well-formed map.
        if cbor_read(&mut rest, "extensions")?.as_map().is_none() {
            return Err(WebauthnError::Malformed("extensions"));
        }
    }
    if !rest.is_empty() {
        return Err(WebauthnError::Malformed("authenticatorData trailing bytes"));
    }
    Ok(AuthData {
        rp_id_hash,
        flags,
        sign_count,
        attested,
    })
}

/// One CBOR item off the front of `rest` (ciborium reads exactly the item's bytes).
fn cbor_read(rest: &mut &[u8], what: &'static str) -> Result<Cbor, WebauthnError> {
    ciborium::de::from_reader_with_recursion_limit(&mut *rest, CBOR_DEPTH_MAX)
        .map_err(|_| WebauthnError::Malformed(what))
}

/// The value under `key` in a CBOR map, refusing a key given twice.
fn cbor_get<'a>(
    map: &'a [(Cbor, Cbor)],
    key: impl Fn(&Cbor) -> bool,
    what: &'static str,
) -> Result<Option<&'a Cbor>, WebauthnError> {
    let mut found = map.iter().filter(|(k, _)| key(k)).map(|(_, v)| v);
    let first = found.next();
    if found.next().is_some() {
        return Err(WebauthnError::Malformed(what));
    }
    Ok(first)
}

fn int_key(label: i128) -> impl Fn(&Cbor) -> bool {
    move |k| k.as_integer().is_some_and(|i| i128::from(i) == label)
}

fn text_key(label: &'static str) -> impl Fn(&Cbor) -> bool {
    move |k| k.as_text() == Some(label)
}

fn cbor_int(v: Option<&Cbor>, what: &'static str) -> Result<i128, WebauthnError> {
    v.and_then(Cbor::as_integer)
        .map(i128::from)
        .ok_or(WebauthnError::Malformed(what))
}

fn cbor_bytes<'a>(v: Option<&'a Cbor>, what: &'static str) -> Result<&'a [u8], WebauthnError> {
    v.and_then(Cbor::as_bytes)
        .map(Vec::as_slice)
        .ok_or(WebauthnError::Malformed(what))
}

/// A COSE_Key (RFC 9052 §7): EC2 P-256 with ES256, or OKP Ed25519 with EdDSA.
fn parse_cose_key(v: &Cbor) -> Result<CredentialKey, WebauthnError> {
    const WHAT: &str = "credential public key";
    let map = v.as_map().ok_or(WebauthnError::Malformed(WHAT))?;
    let kty = cbor_int(cbor_get(map, int_key(COSE_KTY), WHAT)?, WHAT)?;
    let alg = cbor_int(cbor_get(map, int_key(COSE_ALG), WHAT)?, WHAT)?;
    let crv = cbor_get(map, int_key(COSE_CRV), WHAT)?;
    let x = cbor_get(map, int_key(COSE_X), WHAT)?;
    match (kty, alg) {
        (COSE_KTY_EC2, COSE_ALG_ES256) => {
            if cbor_int(crv, WHAT)? != COSE_CRV_P256 {
                return Err(WebauthnError::AlgorithmUnsupported);
            }
            let y = cbor_get(map, int_key(COSE_Y), WHAT)?;
            // The y-coordinate as a sign bit (point compression) is not accepted.
            let (x, y) = (cbor_bytes(x, WHAT)?, cbor_bytes(y, WHAT)?);
            if x.len() != 32 || y.len() != 32 {
                return Err(WebauthnError::Malformed(WHAT));
            }
            let mut sec1 = [0u8; 65];
            sec1[0] = 0x04;
            sec1[1..33].copy_from_slice(x);
            sec1[33..].copy_from_slice(y);
            es256_key(sec1)
        }
        (COSE_KTY_OKP, COSE_ALG_EDDSA) => {
            if cbor_int(crv, WHAT)? != COSE_CRV_ED25519 {
                return Err(WebauthnError::AlgorithmUnsupported);
            }
            let key: [u8; 32] = cbor_bytes(x, WHAT)?
                .try_into()
                .map_err(|_| WebauthnError::Malformed(WHAT))?;
            ed25519_key(key)
        }
        _ => Err(WebauthnError::AlgorithmUnsupported),
    }
}

/// The attestation object (WebAuthn §6.5): `{fmt, attStmt, authData}`.
struct AttestationObject {
    fmt: String,
    att_stmt: Cbor,
    auth_data: Vec<u8>,
}

fn parse_attestation_object(b: &[u8]) -> Result<AttestationObject, WebauthnError> {
    const WHAT: &str = "attestationObject";
    let mut rest = b;
    let v = cbor_read(&mut rest, WHAT)?;
    if !rest.is_empty() {
        return Err(WebauthnError::Malformed(WHAT));
    }
    let map = v.as_map().ok_or(WebauthnError::Malformed(WHAT))?;
    let fmt = cbor_get(map, text_key("fmt"), WHAT)?
        .and_then(Cbor::as_text)
        .ok_or(WebauthnError::Malformed(WHAT))?;
    let att_stmt = cbor_get(map, text_key("attStmt"), WHAT)?
        .filter(|s| s.as_map().is_some())
        .ok_or(WebauthnError::Malformed(WHAT))?;
    let auth_data = cbor_bytes(cbor_get(map, text_key("authData"), WHAT)?, WHAT)?;
    Ok(AttestationObject {
        fmt: fmt.to_owned(),
        att_stmt: att_stmt.clone(),
        auth_data: auth_data.to_vec(),
    })
}

/// The "packed" attestation statement (WebAuthn §8.2): self attestation is verified with the
/// credential key; a statement with an `x5c` chain is accepted unverified (attestation is not
/// used for trust decisions); ECDAA is refused.
fn verify_packed(stmt: &Cbor, key: &CredentialKey, signed: &[u8]) -> Result<(), WebauthnError> {
    const WHAT: &str = "packed attestation statement";
    let map = stmt.as_map().ok_or(WebauthnError::Malformed(WHAT))?;
    let alg = cbor_int(cbor_get(map, text_key("alg"), WHAT)?, WHAT)?;
    let sig = cbor_bytes(cbor_get(map, text_key("sig"), WHAT)?, WHAT)?;
    if sig.len() > SIGNATURE_BYTES_MAX || cbor_get(map, text_key("ecdaaKeyId"), WHAT)?.is_some() {
        return Err(WebauthnError::Malformed(WHAT));
    }
    match cbor_get(map, text_key("x5c"), WHAT)? {
        Some(x5c) if x5c.as_array().is_some_and(|a| !a.is_empty()) => Ok(()),
        Some(_) => Err(WebauthnError::Malformed(WHAT)),
        None => {
            if alg != key.cose_alg() {
                return Err(WebauthnError::Malformed("packed attestation algorithm"));
            }
            verify_signature(key, signed, sig)
        }
    }
}

/// ES256: an ASN.1 DER signature over SHA-256(msg); Ed25519: 64 raw bytes, strictly verified.
fn verify_signature(key: &CredentialKey, msg: &[u8], sig: &[u8]) -> Result<(), WebauthnError> {
    match key {
        CredentialKey::Es256 { sec1 } => {
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
                .map_err(|_| WebauthnError::Malformed("credential key"))?;
            let sig = p256::ecdsa::Signature::from_der(sig).map_err(|_| WebauthnError::SignatureInvalid)?;
            vk.verify(msg, &sig).map_err(|_| WebauthnError::SignatureInvalid)
        }
        CredentialKey::Ed25519 { key } => {
            let vk = ed25519_dalek::VerifyingKey::from_bytes(key)
                .map_err(|_| WebauthnError::Malformed("credential key"))?;
            let sig: [u8; 64] = sig.try_into().map_err(|_| WebauthnError::SignatureInvalid)?;
            vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
                .map_err(|_| WebauthnError::SignatureInvalid)
        }
    }
}

fn b64_encode(b: &[u8]) -> String {
    B64URL.encode(b)
}

/// base64url to at most `bytes_max` bytes; longer text is refused before it is decoded.
fn b64_decode(s: &str, bytes_max: usize, what: &'static str) -> Result<Vec<u8>, WebauthnError> {
    // Four characters carry three bytes, and at most two padding characters may follow.
    if s.len() > bytes_max.div_ceil(3) * 4 + 2 {
        return Err(WebauthnError::Malformed(what));
    }
    let b = B64URL.decode(s).map_err(|_| WebauthnError::Malformed(what))?;
    if b.len() > bytes_max {
        return Err(WebauthnError::Malformed(what));
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;

    const RP_ID: &str = "localhost";
    const ORIGIN: &str = "http://localhost:8080";

    fn rp() -> RelyingParty {
        RelyingParty {
            id: RP_ID.into(),
            name: "kinko".into(),
            origins: vec![ORIGIN.into(), "https://kinko.example".into()],
        }
    }

    fn cbor_bytes_of(v: &Cbor) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).unwrap();
        out
    }

    fn int(i: i64) -> Cbor {
        Cbor::Integer(i.into())
    }

    fn text(s: &str) -> Cbor {
        Cbor::Text(s.into())
    }

    /// What one ceremony's client data and authenticator data say; tests change a field.
    #[derive(Clone)]
    struct Ceremony {
        type_: &'static str,
        challenge: Vec<u8>,
        origin: String,
        cross_origin: Option<bool>,
        rp_id: String,
        flags: u8,
        count: u32,
    }

    impl Ceremony {
        fn create(challenge: &[u8]) -> Ceremony {
            Ceremony {
                type_: "webauthn.create",
                challenge: challenge.to_vec(),
                origin: ORIGIN.into(),
                cross_origin: Some(false),
                rp_id: RP_ID.into(),
                flags: FLAG_UP | FLAG_UV | FLAG_AT,
                count: 0,
            }
        }

        fn get(challenge: &[u8], count: u32) -> Ceremony {
            Ceremony {
                type_: "webauthn.get",
                flags: FLAG_UP | FLAG_UV,
                count,
                ..Ceremony::create(challenge)
            }
        }

        fn client_data(&self) -> Vec<u8> {
            let mut cd = json!({
                "type": self.type_,
                "challenge": b64_encode(&self.challenge),
                "origin": self.origin,
            });
            if let Some(c) = self.cross_origin {
                cd["crossOrigin"] = c.into();
            }
            serde_json::to_vec(&cd).unwrap()
        }

        fn auth_data_head(&self) -> Vec<u8> {
            let mut a = Sha256::digest(self.rp_id.as_bytes()).to_vec();
            a.push(self.flags);
            a.extend_from_slice(&self.count.to_be_bytes());
            a
        }
    }

    enum SoftKey {
        Es256(p256::ecdsa::SigningKey),
        Ed25519(ed25519_dalek::SigningKey),
    }

    /// A software authenticator with a fixed key.
    struct Soft {
        key: SoftKey,
        credential_id: Vec<u8>,
    }

    impl Soft {
        fn es256() -> Soft {
            Soft {
                key: SoftKey::Es256(p256::ecdsa::SigningKey::from_slice(&[0x11; 32]).unwrap()),
                credential_id: b"es256-credential-0001".to_vec(),
            }
        }

        fn ed25519() -> Soft {
            Soft {
                key: SoftKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[0x22; 32])),
                credential_id: b"ed25519-credential-0001".to_vec(),
            }
        }

        fn public(&self) -> CredentialKey {
            match &self.key {
                SoftKey::Es256(k) => {
                    let point = k.verifying_key().to_encoded_point(false);
                    CredentialKey::Es256 {
                        sec1: point.as_bytes().try_into().unwrap(),
                    }
                }
                SoftKey::Ed25519(k) => CredentialKey::Ed25519 {
                    key: k.verifying_key().to_bytes(),
                },
            }
        }

        fn cose_key(&self) -> Cbor {
            match self.public() {
                CredentialKey::Es256 { sec1 } => Cbor::Map(vec![
                    (int(1), int(2)),
                    (int(3), int(-7)),
                    (int(-1), int(1)),
                    (int(-2), Cbor::Bytes(sec1[1..33].to_vec())),
                    (int(-3), Cbor::Bytes(sec1[33..].to_vec())),
                ]),
                CredentialKey::Ed25519 { key } => Cbor::Map(vec![
                    (int(1), int(1)),
                    (int(3), int(-8)),
                    (int(-1), int(6)),
                    (int(-2), Cbor::Bytes(key.to_vec())),
                ]),
            }
        }

        fn sign(&self, msg: &[u8]) -> Vec<u8> {
            match &self.key {
                SoftKey::Es256(k) => {
                    let sig: p256::ecdsa::Signature = k.sign(msg);
                    sig.to_der().as_bytes().to_vec()
                }
                SoftKey::Ed25519(k) => k.sign(msg).to_bytes().to_vec(),
            }
        }

        fn alg(&self) -> i64 {
            match self.key {
                SoftKey::Es256(_) => -7,
                SoftKey::Ed25519(_) => -8,
            }
        }

        /// Authenticator data with attested credential data for `cose`.
        fn attested_auth_data(&self, c: &Ceremony, cose: &Cbor) -> Vec<u8> {
            let mut a = c.auth_data_head();
            a.extend_from_slice(&[0xAA; 16]);
            a.extend_from_slice(&(self.credential_id.len() as u16).to_be_bytes());
            a.extend_from_slice(&self.credential_id);
            a.extend_from_slice(&cbor_bytes_of(cose));
            a
        }

        fn registration_with(
            &self,
            client_data: &[u8],
            fmt: &str,
            att_stmt: Cbor,
            auth_data: Vec<u8>,
        ) -> RegistrationResponse {
            let att = Cbor::Map(vec![
                (text("fmt"), text(fmt)),
                (text("attStmt"), att_stmt),
                (text("authData"), Cbor::Bytes(auth_data)),
            ]);
            RegistrationResponse {
                id: b64_encode(&self.credential_id),
                raw_id: b64_encode(&self.credential_id),
                type_: "public-key".into(),
                response: AttestationResponse {
                    client_data_json: b64_encode(client_data),
                    attestation_object: b64_encode(&cbor_bytes_of(&att)),
                },
            }
        }

        /// fmt "none".
        fn register(&self, c: &Ceremony) -> RegistrationResponse {
            let auth_data = self.attested_auth_data(c, &self.cose_key());
            self.registration_with(&c.client_data(), "none", Cbor::Map(vec![]), auth_data)
        }

        /// fmt "packed", self attestation.
        fn register_packed(&self, c: &Ceremony) -> RegistrationResponse {
            let client_data = c.client_data();
            let auth_data = self.attested_auth_data(c, &self.cose_key());
            let signed = [&auth_data[..], &Sha256::digest(&client_data)[..]].concat();
            let stmt = Cbor::Map(vec![
                (text("alg"), int(self.alg())),
                (text("sig"), Cbor::Bytes(self.sign(&signed))),
            ]);
            self.registration_with(&client_data, "packed", stmt, auth_data)
        }

        fn assertion_with(&self, client_data: &[u8], auth_data: &[u8], sig: &[u8]) -> AssertionResponse {
            AssertionResponse {
                id: b64_encode(&self.credential_id),
                raw_id: b64_encode(&self.credential_id),
                type_: "public-key".into(),
                response: AuthenticatorAssertion {
                    client_data_json: b64_encode(client_data),
                    authenticator_data: b64_encode(auth_data),
                    signature: b64_encode(sig),
                    user_handle: Some(b64_encode(b"user-0001")),
                },
            }
        }

        fn assert(&self, c: &Ceremony) -> AssertionResponse {
            let client_data = c.client_data();
            let auth_data = c.auth_data_head();
            let signed = [&auth_data[..], &Sha256::digest(&client_data)[..]].concat();
            self.assertion_with(&client_data, &auth_data, &self.sign(&signed))
        }
    }

    fn authenticators() -> [Soft; 2] {
        [Soft::es256(), Soft::ed25519()]
    }

    #[test]
    fn register_then_assert_es256_and_ed25519() {
        let rp = rp();
        for soft in authenticators() {
            for reg in [
                soft.register(&Ceremony::create(b"challenge-1")),
                soft.register_packed(&Ceremony::create(b"challenge-1")),
            ] {
                let cred = verify_registration(&rp, b"challenge-1", &reg).unwrap();
                assert_eq!(cred.credential_id, soft.credential_id);
                assert_eq!(cred.key, soft.public());
                assert_eq!(cred.sign_count, 0);
                assert!(cred.user_verified);
                let stored = CredentialKey::from_bytes(&cred.key.to_bytes()).unwrap();

                let asr = soft.assert(&Ceremony::get(b"challenge-2", 1));
                assert_eq!(asr.credential_id().unwrap(), soft.credential_id);
                assert_eq!(asr.user_handle().unwrap(), Some(b"user-0001".to_vec()));
                let ok = verify_assertion(&rp, b"challenge-2", &stored, 0, &asr).unwrap();
                assert_eq!(
                    ok,
                    VerifiedAssertion {
                        credential_id: soft.credential_id.clone(),
                        sign_count: 1,
                        user_verified: true,
                    }
                );
            }
        }
    }

    #[test]
    fn browser_json_shape_parses() {
        // The shape PublicKeyCredential.toJSON() produces, with members this module ignores.
        let soft = Soft::es256();
        let reg = soft.register(&Ceremony::create(b"c"));
        let json = json!({
            "id": reg.id, "rawId": reg.raw_id, "type": "public-key",
            "authenticatorAttachment": "platform", "clientExtensionResults": {},
            "response": {
                "clientDataJSON": reg.response.client_data_json,
                "attestationObject": reg.response.attestation_object,
                "transports": ["internal"], "publicKeyAlgorithm": -7,
            },
        });
        let parsed: RegistrationResponse = serde_json::from_value(json).unwrap();
        verify_registration(&rp(), b"c", &parsed).unwrap();

        let asr = soft.assert(&Ceremony::get(b"d", 1));
        let mut json = serde_json::to_value(&asr).unwrap();
        json["response"]["userHandle"] = serde_json::Value::Null;
        let parsed: AssertionResponse = serde_json::from_value(json).unwrap();
        assert_eq!(parsed.user_handle().unwrap(), None);
        verify_assertion(&rp(), b"d", &soft.public(), 0, &parsed).unwrap();
    }

    #[test]
    fn registration_refusals() {
        let rp = rp();
        let soft = Soft::es256();
        let base = Ceremony::create(b"challenge");
        let cases: Vec<(&str, Ceremony, WebauthnError)> = vec![
            (
                "wrong challenge",
                Ceremony {
                    challenge: b"challengf".to_vec(),
                    ..base.clone()
                },
                WebauthnError::ChallengeMismatch,
            ),
            (
                "shorter challenge",
                Ceremony {
                    challenge: b"challeng".to_vec(),
                    ..base.clone()
                },
                WebauthnError::ChallengeMismatch,
            ),
            (
                "wrong origin",
                Ceremony {
                    origin: "http://localhost:8081".into(),
                    ..base.clone()
                },
                WebauthnError::OriginMismatch,
            ),
            (
                "origin with a trailing slash",
                Ceremony {
                    origin: format!("{ORIGIN}/"),
                    ..base.clone()
                },
                WebauthnError::OriginMismatch,
            ),
            (
                "cross origin",
                Ceremony {
                    cross_origin: Some(true),
                    ..base.clone()
                },
                WebauthnError::OriginMismatch,
            ),
            (
                "wrong rp id",
                Ceremony {
                    rp_id: "evil.example".into(),
                    ..base.clone()
                },
                WebauthnError::RpIdMismatch,
            ),
            (
                "user not present",
                Ceremony {
                    flags: FLAG_UV | FLAG_AT,
                    ..base.clone()
                },
                WebauthnError::UserNotPresent,
            ),
            (
                "get instead of create",
                Ceremony {
                    type_: "webauthn.get",
                    ..base.clone()
                },
                WebauthnError::TypeMismatch,
            ),
            (
                "no attested credential data",
                Ceremony {
                    flags: FLAG_UP,
                    ..base.clone()
                },
                WebauthnError::Malformed("authenticatorData trailing bytes"),
            ),
        ];
        for (name, c, want) in cases {
            let got = verify_registration(&rp, b"challenge", &soft.register(&c));
            assert_eq!(got, Err(want), "{name}");
        }
        // Without crossOrigin at all (older browsers) the ceremony passes.
        let c = Ceremony {
            cross_origin: None,
            ..base.clone()
        };
        verify_registration(&rp, b"challenge", &soft.register(&c)).unwrap();
    }

    #[test]
    fn assertion_refusals() {
        let rp = rp();
        for soft in authenticators() {
            let key = soft.public();
            let base = Ceremony::get(b"challenge", 7);
            let cases: Vec<(&str, Ceremony, WebauthnError)> = vec![
                (
                    "wrong challenge",
                    Ceremony {
                        challenge: b"other".to_vec(),
                        ..base.clone()
                    },
                    WebauthnError::ChallengeMismatch,
                ),
                (
                    "wrong origin",
                    Ceremony {
                        origin: "https://evil.example".into(),
                        ..base.clone()
                    },
                    WebauthnError::OriginMismatch,
                ),
                (
                    "cross origin",
                    Ceremony {
                        cross_origin: Some(true),
                        ..base.clone()
                    },
                    WebauthnError::OriginMismatch,
                ),
                (
                    "wrong rp id",
                    Ceremony {
                        rp_id: "localhost.".into(),
                        ..base.clone()
                    },
                    WebauthnError::RpIdMismatch,
                ),
                (
                    "user not present",
                    Ceremony {
                        flags: FLAG_UV,
                        ..base.clone()
                    },
                    WebauthnError::UserNotPresent,
                ),
                (
                    "create instead of get",
                    Ceremony {
                        type_: "webauthn.create",
                        ..base.clone()
                    },
                    WebauthnError::TypeMismatch,
                ),
                (
                    "counter equal",
                    Ceremony {
                        count: 5,
                        ..base.clone()
                    },
                    WebauthnError::CounterNotIncreased,
                ),
                (
                    "counter back to zero",
                    Ceremony {
                        count: 0,
                        ..base.clone()
                    },
                    WebauthnError::CounterNotIncreased,
                ),
            ];
            for (name, c, want) in cases {
                let got = verify_assertion(&rp, b"challenge", &key, 5, &soft.assert(&c));
                assert_eq!(got, Err(want), "{name}");
            }
            // Authenticators without a counter always send 0; that is allowed while the stored
            // counter is 0 too.
            let zero = soft.assert(&Ceremony {
                count: 0,
                ..base.clone()
            });
            assert_eq!(
                verify_assertion(&rp, b"challenge", &key, 0, &zero)
                    .unwrap()
                    .sign_count,
                0
            );
            let six = soft.assert(&Ceremony {
                count: 6,
                ..base.clone()
            });
            assert_eq!(
                verify_assertion(&rp, b"challenge", &key, 5, &six)
                    .unwrap()
                    .sign_count,
                6
            );

            // A signature with any one bit flipped, and the right signature by another key.
            let good = soft.assert(&base);
            let sig = B64URL.decode(&good.response.signature).unwrap();
            for bit in 0..sig.len() * 8 {
                let mut bad = sig.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let mut asr = good.clone();
                asr.response.signature = b64_encode(&bad);
                assert_eq!(
                    verify_assertion(&rp, b"challenge", &key, 5, &asr),
                    Err(WebauthnError::SignatureInvalid),
                    "bit {bit}"
                );
            }
            let other = match soft.key {
                SoftKey::Es256(_) => Soft {
                    key: SoftKey::Es256(p256::ecdsa::SigningKey::from_slice(&[0x12; 32]).unwrap()),
                    credential_id: soft.credential_id.clone(),
                },
                SoftKey::Ed25519(_) => Soft {
                    key: SoftKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[0x23; 32])),
                    credential_id: soft.credential_id.clone(),
                },
            };
            assert_eq!(
                verify_assertion(&rp, b"challenge", &key, 5, &other.assert(&base)),
                Err(WebauthnError::SignatureInvalid)
            );
            // Any bit of the signed data flipped (authenticator data or client data).
            for field in [0, 1] {
                let raw = match field {
                    0 => &good.response.authenticator_data,
                    _ => &good.response.client_data_json,
                };
                let bytes = B64URL.decode(raw).unwrap();
                for bit in flip_bits(bytes.len(), field == 0) {
                    let mut bad = bytes.clone();
                    bad[bit / 8] ^= 1 << (bit % 8);
                    let mut asr = good.clone();
                    match field {
                        0 => asr.response.authenticator_data = b64_encode(&bad),
                        _ => asr.response.client_data_json = b64_encode(&bad),
                    }
                    assert!(
                        verify_assertion(&rp, b"challenge", &key, 5, &asr).is_err(),
                        "field {field} bit {bit}"
                    );
                }
            }
        }
    }

    #[test]
    fn attestation_statements() {
        let rp = rp();
        let soft = Soft::es256();
        let c = Ceremony::create(b"challenge");
        let auth_data = soft.attested_auth_data(&c, &soft.cose_key());
        let client_data = c.client_data();
        let signed = [&auth_data[..], &Sha256::digest(&client_data)[..]].concat();
        let sig = soft.sign(&signed);
        let verify = |fmt: &str, stmt: Cbor| {
            verify_registration(
                &rp,
                b"challenge",
                &soft.registration_with(&client_data, fmt, stmt, auth_data.clone()),
            )
            .map(|_| ())
        };
        let stmt =
            |entries: Vec<(&str, Cbor)>| Cbor::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect());
        let mut flipped = sig.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let cases: Vec<(&str, &str, Cbor, Result<(), WebauthnError>)> = vec![
            ("none", "none", stmt(vec![]), Ok(())),
            (
                "none with a statement",
                "none",
                stmt(vec![("alg", int(-7))]),
                Err(WebauthnError::Malformed("attestation statement")),
            ),
            (
                "packed self",
                "packed",
                stmt(vec![("alg", int(-7)), ("sig", Cbor::Bytes(sig.clone()))]),
                Ok(()),
            ),
            (
                "packed self, bad signature",
                "packed",
                stmt(vec![("alg", int(-7)), ("sig", Cbor::Bytes(flipped))]),
                Err(WebauthnError::SignatureInvalid),
            ),
            (
                "packed self, wrong alg",
                "packed",
                stmt(vec![("alg", int(-8)), ("sig", Cbor::Bytes(sig.clone()))]),
                Err(WebauthnError::Malformed("packed attestation algorithm")),
            ),
            (
                "packed without sig",
                "packed",
                stmt(vec![("alg", int(-7))]),
                Err(WebauthnError::Malformed("packed attestation statement")),
            ),
            (
                "packed with x5c (not verified)",
                "packed",
                stmt(vec![
                    ("alg", int(-7)),
                    ("sig", Cbor::Bytes(vec![1, 2, 3])),
                    ("x5c", Cbor::Array(vec![Cbor::Bytes(vec![0x30, 0x00])])),
                ]),
                Ok(()),
            ),
            (
                "packed with an empty x5c",
                "packed",
                stmt(vec![
                    ("alg", int(-7)),
                    ("sig", Cbor::Bytes(sig.clone())),
                    ("x5c", Cbor::Array(vec![])),
                ]),
                Err(WebauthnError::Malformed("packed attestation statement")),
            ),
            (
                "packed ECDAA",
                "packed",
                stmt(vec![
                    ("alg", int(-7)),
                    ("sig", Cbor::Bytes(sig.clone())),
                    ("ecdaaKeyId", Cbor::Bytes(vec![1])),
                ]),
                Err(WebauthnError::Malformed("packed attestation statement")),
            ),
            (
                "fido-u2f",
                "fido-u2f",
                stmt(vec![("sig", Cbor::Bytes(sig.clone()))]),
                Err(WebauthnError::Malformed("attestation format")),
            ),
            (
                "statement not a map",
                "none",
                Cbor::Array(vec![]),
                Err(WebauthnError::Malformed("attestationObject")),
            ),
        ];
        for (name, fmt, s, want) in cases {
            assert_eq!(verify(fmt, s), want, "{name}");
        }
    }

    #[test]
    fn cose_keys() {
        let rp = rp();
        let soft = Soft::es256();
        let c = Ceremony::create(b"challenge");
        let CredentialKey::Es256 { sec1 } = soft.public() else {
            unreachable!()
        };
        let x = Cbor::Bytes(sec1[1..33].to_vec());
        let y = Cbor::Bytes(sec1[33..].to_vec());
        let mut off_curve = sec1[33..].to_vec();
        off_curve[31] ^= 1;
        let ed = Soft::ed25519().public();
        let CredentialKey::Ed25519 { key: ed } = ed else {
            unreachable!()
        };
        let cose =
            |entries: Vec<(i64, Cbor)>| Cbor::Map(entries.into_iter().map(|(k, v)| (int(k), v)).collect());
        let unsupported = Err(WebauthnError::AlgorithmUnsupported);
        let malformed = Err(WebauthnError::Malformed("credential public key"));
        let bad_key = Err(WebauthnError::Malformed("credential key"));
        let cases: Vec<(&str, Cbor, Result<(), WebauthnError>)> = vec![
            (
                "es256",
                cose(vec![
                    (1, int(2)),
                    (3, int(-7)),
                    (-1, int(1)),
                    (-2, x.clone()),
                    (-3, y.clone()),
                ]),
                Ok(()),
            ),
            (
                "es256 with extra labels in another order",
                cose(vec![
                    (-3, y.clone()),
                    (2, Cbor::Bytes(vec![9])),
                    (-2, x.clone()),
                    (-1, int(1)),
                    (3, int(-7)),
                    (1, int(2)),
                ]),
                Ok(()),
            ),
            (
                "point off the curve",
                cose(vec![
                    (1, int(2)),
                    (3, int(-7)),
                    (-1, int(1)),
                    (-2, x.clone()),
                    (-3, Cbor::Bytes(off_curve)),
                ]),
                bad_key,
            ),
            (
                "compressed y",
                cose(vec![
                    (1, int(2)),
                    (3, int(-7)),
                    (-1, int(1)),
                    (-2, x.clone()),
                    (-3, Cbor::Bool(true)),
                ]),
                malformed,
            ),
            (
                "short x",
                cose(vec![
                    (1, int(2)),
                    (3, int(-7)),
                    (-1, int(1)),
                    (-2, Cbor::Bytes(vec![1; 31])),
                    (-3, y.clone()),
                ]),
                malformed,
            ),
            (
                "duplicate label",
                cose(vec![
                    (1, int(2)),
                    (3, int(-7)),
                    (3, int(-7)),
                    (-1, int(1)),
                    (-2, x.clone()),
                    (-3, y.clone()),
                ]),
                malformed,
            ),
            (
                "missing alg",
                cose(vec![(1, int(2)), (-1, int(1)), (-2, x.clone()), (-3, y.clone())]),
                malformed,
            ),
            (
                "P-384 curve",
                cose(vec![
                    (1, int(2)),
                    (3, int(-7)),
                    (-1, int(2)),
                    (-2, x.clone()),
                    (-3, y.clone()),
                ]),
                unsupported,
            ),
            (
                "RS256",
                cose(vec![
                    (1, int(3)),
                    (3, int(-257)),
                    (-1, Cbor::Bytes(vec![1; 256])),
                    (-2, Cbor::Bytes(vec![1, 0, 1])),
                ]),
                unsupported,
            ),
            (
                "ES256 alg with an OKP key",
                cose(vec![
                    (1, int(1)),
                    (3, int(-7)),
                    (-1, int(6)),
                    (-2, Cbor::Bytes(ed.to_vec())),
                ]),
                unsupported,
            ),
            (
                "ed25519",
                cose(vec![
                    (1, int(1)),
                    (3, int(-8)),
                    (-1, int(6)),
                    (-2, Cbor::Bytes(ed.to_vec())),
                ]),
                Ok(()),
            ),
            (
                "ed25519 on X25519",
                cose(vec![
                    (1, int(1)),
                    (3, int(-8)),
                    (-1, int(4)),
                    (-2, Cbor::Bytes(ed.to_vec())),
                ]),
                unsupported,
            ),
            (
                "ed25519 small-order point",
                cose(vec![
                    (1, int(1)),
                    (3, int(-8)),
                    (-1, int(6)),
                    (
                        -2,
                        Cbor::Bytes({
                            let mut k = [0u8; 32];
                            k[0] = 1;
                            k.to_vec()
                        }),
                    ),
                ]),
                bad_key,
            ),
            ("not a map", Cbor::Array(vec![]), malformed),
        ];
        for (name, key, want) in cases {
            // Only the structure of the key is under test: fmt "none" needs no signature.
            let reg = soft.registration_with(
                &c.client_data(),
                "none",
                Cbor::Map(vec![]),
                soft.attested_auth_data(&c, &key),
            );
            assert_eq!(
                verify_registration(&rp, b"challenge", &reg).map(|_| ()),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn extensions_after_the_credential_key() {
        let rp = rp();
        let soft = Soft::ed25519();
        let c = Ceremony {
            flags: FLAG_UP | FLAG_AT | FLAG_ED,
            ..Ceremony::create(b"x")
        };
        let mut auth_data = soft.attested_auth_data(&c, &soft.cose_key());
        let ext = Cbor::Map(vec![(text("credProtect"), int(1))]);
        auth_data.extend_from_slice(&cbor_bytes_of(&ext));
        let reg = soft.registration_with(&c.client_data(), "none", Cbor::Map(vec![]), auth_data.clone());
        let cred = verify_registration(&rp, b"x", &reg).unwrap();
        assert!(!cred.user_verified);
        // Extensions that are not a map, missing, or followed by more bytes.
        let mut trailing = auth_data.clone();
        trailing.push(0);
        let mut not_map = soft.attested_auth_data(&c, &soft.cose_key());
        not_map.extend_from_slice(&cbor_bytes_of(&int(1)));
        let missing = soft.attested_auth_data(&c, &soft.cose_key());
        for (name, a) in [
            ("trailing", trailing),
            ("not a map", not_map),
            ("missing", missing),
        ] {
            let reg = soft.registration_with(&c.client_data(), "none", Cbor::Map(vec![]), a);
            assert!(
                matches!(
                    verify_registration(&rp, b"x", &reg),
                    Err(WebauthnError::Malformed(_))
                ),
                "{name}"
            );
        }
    }

    /// A response field by name: read it, replace it (as base64url text).
    type Field<T> = (&'static str, fn(&T) -> &String, fn(&mut T, String));

    /// Bit positions to flip in `len` bytes: all of them, or, where most flips cost a signature
    /// verification, one per byte (a different bit in each of eight consecutive bytes).
    fn flip_bits(len: usize, every: bool) -> impl Iterator<Item = usize> {
        (0..len * 8).filter(move |bit| every || bit / 8 % 8 == bit % 8)
    }

    /// xorshift64*, for garbage that is the same on every run.
    fn garbage(seed: u64, len: usize) -> Vec<u8> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    /// Every registration field cut short, replaced by garbage or flipped bit by bit: an error
    /// (or, for flips that change nothing checked, a success), never a panic.
    #[test]
    fn registration_truncated_and_garbage() {
        let rp = rp();
        for soft in authenticators() {
            let c = Ceremony::create(b"challenge");
            let good = soft.register_packed(&c);
            verify_registration(&rp, b"challenge", &good).unwrap();
            let att = B64URL.decode(&good.response.attestation_object).unwrap();
            let auth_data = soft.attested_auth_data(&c, &soft.cose_key());
            let stmt = || {
                let v: Cbor = ciborium::de::from_reader(&att[..]).unwrap();
                v.as_map()
                    .unwrap()
                    .iter()
                    .find(|(k, _)| k.as_text() == Some("attStmt"))
                    .unwrap()
                    .1
                    .clone()
            };
            let fields: [Field<RegistrationResponse>; 4] = [
                ("id", |r| &r.id, |r, v| r.id = v),
                ("rawId", |r| &r.raw_id, |r, v| r.raw_id = v),
                (
                    "clientDataJSON",
                    |r| &r.response.client_data_json,
                    |r, v| r.response.client_data_json = v,
                ),
                (
                    "attestationObject",
                    |r| &r.response.attestation_object,
                    |r, v| r.response.attestation_object = v,
                ),
            ];
            for (name, get, setter) in fields {
                let field = get(&good);
                let bytes = B64URL.decode(field).unwrap();
                for len in 0..bytes.len() {
                    let mut r = good.clone();
                    setter(&mut r, b64_encode(&bytes[..len]));
                    assert!(
                        verify_registration(&rp, b"challenge", &r).is_err(),
                        "{name} cut to {len}"
                    );
                }
                for (seed, len) in [(1, 1), (2, 37), (3, bytes.len()), (4, 300), (5, 5000)] {
                    let mut r = good.clone();
                    setter(&mut r, b64_encode(&garbage(seed, len)));
                    assert!(
                        verify_registration(&rp, b"challenge", &r).is_err(),
                        "{name} garbage {seed}"
                    );
                }
                for not_b64 in ["!!!!", "a", "YQ=a", "\u{e9}t\u{e9}", "a b c"] {
                    let mut r = good.clone();
                    setter(&mut r, not_b64.into());
                    assert!(
                        verify_registration(&rp, b"challenge", &r).is_err(),
                        "{name} {not_b64:?}"
                    );
                }
                for bit in flip_bits(bytes.len(), false) {
                    let mut flipped = bytes.clone();
                    flipped[bit / 8] ^= 1 << (bit % 8);
                    let mut r = good.clone();
                    setter(&mut r, b64_encode(&flipped));
                    let _ = verify_registration(&rp, b"challenge", &r);
                }
            }
            // The authenticator data inside the attestation object, cut at every length.
            for len in 0..auth_data.len() {
                let r = soft.registration_with(&c.client_data(), "packed", stmt(), auth_data[..len].to_vec());
                assert!(
                    verify_registration(&rp, b"challenge", &r).is_err(),
                    "authData cut to {len}"
                );
            }
            for bit in 0..auth_data.len() * 8 {
                let mut flipped = auth_data.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                let r = soft.registration_with(&c.client_data(), "packed", stmt(), flipped);
                // Every bit is covered by the packed self-attestation signature.
                assert!(
                    verify_registration(&rp, b"challenge", &r).is_err(),
                    "authData bit {bit}"
                );
            }
            for seed in 0..64 {
                let r = soft.registration_with(
                    &c.client_data(),
                    "none",
                    Cbor::Map(vec![]),
                    garbage(seed, 37 + seed as usize * 3),
                );
                assert!(
                    verify_registration(&rp, b"challenge", &r).is_err(),
                    "authData garbage {seed}"
                );
            }
        }
    }

    #[test]
    fn assertion_truncated_and_garbage() {
        let rp = rp();
        for soft in authenticators() {
            let key = soft.public();
            let good = soft.assert(&Ceremony::get(b"challenge", 9));
            verify_assertion(&rp, b"challenge", &key, 8, &good).unwrap();
            let fields: [Field<AssertionResponse>; 6] = [
                ("id", |r| &r.id, |r, v| r.id = v),
                ("rawId", |r| &r.raw_id, |r, v| r.raw_id = v),
                (
                    "clientDataJSON",
                    |r| &r.response.client_data_json,
                    |r, v| r.response.client_data_json = v,
                ),
                (
                    "authenticatorData",
                    |r| &r.response.authenticator_data,
                    |r, v| r.response.authenticator_data = v,
                ),
                (
                    "signature",
                    |r| &r.response.signature,
                    |r, v| r.response.signature = v,
                ),
                (
                    "userHandle",
                    |r| r.response.user_handle.as_ref().unwrap(),
                    |r, v| r.response.user_handle = Some(v),
                ),
            ];
            for (name, get, setter) in fields {
                let field = get(&good);
                let bytes = B64URL.decode(field).unwrap();
                // The user handle is not signed; any value up to 64 bytes passes.
                let checked = name != "userHandle";
                for len in 0..bytes.len() {
                    let mut r = good.clone();
                    setter(&mut r, b64_encode(&bytes[..len]));
                    let got = verify_assertion(&rp, b"challenge", &key, 8, &r);
                    assert!(!checked || got.is_err(), "{name} cut to {len}");
                }
                for (seed, len) in [(1, 1), (2, 37), (3, bytes.len()), (4, 300), (5, 5000)] {
                    let mut r = good.clone();
                    setter(&mut r, b64_encode(&garbage(seed, len)));
                    let got = verify_assertion(&rp, b"challenge", &key, 8, &r);
                    assert!(
                        got.is_err() || (!checked && len <= USER_HANDLE_BYTES_MAX),
                        "{name} garbage {seed}"
                    );
                }
                for not_b64 in ["!!!!", "a", "YQ=a", "\u{e9}t\u{e9}", "a b c"] {
                    let mut r = good.clone();
                    setter(&mut r, not_b64.into());
                    assert!(
                        verify_assertion(&rp, b"challenge", &key, 8, &r).is_err(),
                        "{name} {not_b64:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn oversized_inputs_are_malformed() {
        let rp = rp();
        let soft = Soft::es256();
        let key = soft.public();
        let good = soft.assert(&Ceremony::get(b"challenge", 1));
        let big = |n: usize| b64_encode(&vec![b' '; n]);
        let mut r = good.clone();
        r.response.client_data_json = big(CLIENT_DATA_BYTES_MAX + 1);
        assert_eq!(
            verify_assertion(&rp, b"challenge", &key, 0, &r),
            Err(WebauthnError::Malformed("clientDataJSON"))
        );
        let mut r = good.clone();
        r.response.authenticator_data = big(AUTHENTICATOR_DATA_BYTES_MAX + 1);
        assert_eq!(
            verify_assertion(&rp, b"challenge", &key, 0, &r),
            Err(WebauthnError::Malformed("authenticatorData"))
        );
        let mut r = good.clone();
        r.response.signature = big(SIGNATURE_BYTES_MAX + 1);
        assert_eq!(
            verify_assertion(&rp, b"challenge", &key, 0, &r),
            Err(WebauthnError::Malformed("signature"))
        );
        let mut r = good.clone();
        r.raw_id = big(CREDENTIAL_ID_BYTES_MAX + 1);
        r.id = r.raw_id.clone();
        assert_eq!(r.credential_id(), Err(WebauthnError::Malformed("rawId")));
        // Text far beyond the limit is refused before it is decoded.
        let mut r = good.clone();
        r.response.client_data_json = "A".repeat(10_000_000);
        assert_eq!(
            verify_assertion(&rp, b"challenge", &key, 0, &r),
            Err(WebauthnError::Malformed("clientDataJSON"))
        );

        let c = Ceremony::create(b"challenge");
        let mut reg = soft.register(&c);
        reg.response.attestation_object = big(ATTESTATION_OBJECT_BYTES_MAX + 1);
        assert_eq!(
            verify_registration(&rp, b"challenge", &reg),
            Err(WebauthnError::Malformed("attestationObject"))
        );
        // Authenticator data over its limit inside an attestation object within its own.
        let mut auth_data = soft.attested_auth_data(&c, &soft.cose_key());
        auth_data.resize(AUTHENTICATOR_DATA_BYTES_MAX + 1, 0);
        let reg = soft.registration_with(&c.client_data(), "none", Cbor::Map(vec![]), auth_data);
        assert_eq!(
            verify_registration(&rp, b"challenge", &reg),
            Err(WebauthnError::Malformed("authenticatorData length"))
        );
        // Deeply nested CBOR stops at the depth limit instead of exhausting the stack.
        let mut nested = vec![0x81u8; ATTESTATION_OBJECT_BYTES_MAX - 1];
        nested.push(0xa0);
        let mut reg = soft.register(&c);
        reg.response.attestation_object = b64_encode(&nested);
        assert_eq!(
            verify_registration(&rp, b"challenge", &reg),
            Err(WebauthnError::Malformed("attestationObject"))
        );
    }

    #[test]
    fn credential_id_and_type_checks() {
        let rp = rp();
        let soft = Soft::es256();
        let c = Ceremony::create(b"challenge");
        let mut reg = soft.register(&c);
        reg.type_ = "password".into();
        assert_eq!(
            verify_registration(&rp, b"challenge", &reg),
            Err(WebauthnError::Malformed("credential type"))
        );
        let mut reg = soft.register(&c);
        reg.id = b64_encode(b"another-id");
        assert_eq!(
            verify_registration(&rp, b"challenge", &reg),
            Err(WebauthnError::Malformed("credential id"))
        );
        // rawId that disagrees with the attested credential id.
        let mut reg = soft.register(&c);
        reg.id = b64_encode(b"another-id");
        reg.raw_id = reg.id.clone();
        assert_eq!(
            verify_registration(&rp, b"challenge", &reg),
            Err(WebauthnError::Malformed("credential id"))
        );
        // Padded base64url is accepted.
        let mut reg = soft.register(&c);
        reg.raw_id = base64::engine::general_purpose::URL_SAFE.encode(&soft.credential_id);
        verify_registration(&rp, b"challenge", &reg).unwrap();
        let mut asr = soft.assert(&Ceremony::get(b"challenge", 1));
        asr.type_ = "otp".into();
        assert_eq!(
            verify_assertion(&rp, b"challenge", &soft.public(), 0, &asr),
            Err(WebauthnError::Malformed("credential type"))
        );
        // An assertion whose authenticator data carries attested credential data.
        let g = Ceremony {
            flags: FLAG_UP | FLAG_AT,
            ..Ceremony::get(b"challenge", 1)
        };
        let client_data = g.client_data();
        let auth_data = soft.attested_auth_data(&g, &soft.cose_key());
        let signed = [&auth_data[..], &Sha256::digest(&client_data)[..]].concat();
        let asr = soft.assertion_with(&client_data, &auth_data, &soft.sign(&signed));
        assert_eq!(
            verify_assertion(&rp, b"challenge", &soft.public(), 0, &asr),
            Err(WebauthnError::Malformed(
                "attested credential data in an assertion"
            ))
        );
    }

    #[test]
    fn client_data_json_is_strict() {
        let rp = rp();
        let soft = Soft::es256();
        let key = soft.public();
        let challenge = b64_encode(b"challenge");
        let cases: Vec<(String, Result<(), WebauthnError>)> = vec![
            (
                format!(
                    r#"{{"type":"webauthn.get","challenge":"{challenge}","origin":"{ORIGIN}","topOrigin":"x","other":[1]}}"#
                ),
                Ok(()),
            ),
            (
                format!(
                    r#"{{"type":"webauthn.get","challenge":"{challenge}","origin":"{ORIGIN}","crossOrigin":"yes"}}"#
                ),
                Err(WebauthnError::Malformed("clientDataJSON")),
            ),
            (
                format!(r#"{{"type":"webauthn.get","challenge":"{challenge}"}}"#),
                Err(WebauthnError::Malformed("clientDataJSON")),
            ),
            (
                format!(
                    r#"{{"type":"webauthn.get","type":"webauthn.get","challenge":"{challenge}","origin":"{ORIGIN}"}}"#
                ),
                Err(WebauthnError::Malformed("clientDataJSON")),
            ),
            (
                format!(r#"{{"type":"webauthn.get","challenge":"{challenge}=!","origin":"{ORIGIN}"}}"#),
                Err(WebauthnError::Malformed("clientDataJSON challenge")),
            ),
            (
                format!(
                    r#"{{"type":"webauthn.get","challenge":"{challenge}","origin":"{ORIGIN}"}} trailing"#
                ),
                Err(WebauthnError::Malformed("clientDataJSON")),
            ),
            ("[]".into(), Err(WebauthnError::Malformed("clientDataJSON"))),
            (
                "\u{feff}{}".into(),
                Err(WebauthnError::Malformed("clientDataJSON")),
            ),
        ];
        for (cd, want) in cases {
            let auth_data = Ceremony::get(b"challenge", 1).auth_data_head();
            let signed = [&auth_data[..], &Sha256::digest(cd.as_bytes())[..]].concat();
            let asr = soft.assertion_with(cd.as_bytes(), &auth_data, &soft.sign(&signed));
            assert_eq!(
                verify_assertion(&rp, b"challenge", &key, 0, &asr).map(|_| ()),
                want,
                "{cd}"
            );
        }
    }

    #[test]
    fn credential_key_bytes() {
        for soft in authenticators() {
            let key = soft.public();
            let bytes = key.to_bytes();
            assert_eq!(CredentialKey::from_bytes(&bytes), Ok(key.clone()));
            for len in 0..bytes.len() {
                assert!(CredentialKey::from_bytes(&bytes[..len]).is_err());
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(CredentialKey::from_bytes(&long).is_err());
        }
        assert_eq!(Soft::es256().public().to_bytes()[0], 1);
        assert_eq!(Soft::ed25519().public().to_bytes()[0], 2);
        // A point not on P-256, an invalid SEC1 prefix, an unknown tag, a weak Ed25519 key.
        let mut off_curve = Soft::es256().public().to_bytes();
        off_curve[65] ^= 1;
        let mut compressed_tag = Soft::es256().public().to_bytes();
        compressed_tag[1] = 0x02;
        let mut unknown_tag = Soft::ed25519().public().to_bytes();
        unknown_tag[0] = 3;
        // The Ed25519 identity point (y = 1), of order 1.
        let mut identity = vec![0u8; 33];
        identity[0] = 2;
        identity[1] = 1;
        for bad in [
            off_curve,
            compressed_tag,
            unknown_tag,
            identity,
            vec![1; 66],
            vec![],
        ] {
            assert_eq!(
                CredentialKey::from_bytes(&bad),
                Err(WebauthnError::Malformed("credential key"))
            );
        }
        for seed in 0..200 {
            let _ = CredentialKey::from_bytes(&garbage(seed, (seed % 70) as usize));
        }
    }

    #[test]
    fn options_json() {
        let rp = rp();
        let o = creation_options(&rp, b"user-1", "alice", b"chal", &[b"cred-a".to_vec()]);
        assert_eq!(o["rp"], json!({ "id": "localhost", "name": "kinko" }));
        assert_eq!(
            o["user"],
            json!({ "id": b64_encode(b"user-1"), "name": "alice", "displayName": "alice" })
        );
        assert_eq!(o["challenge"], b64_encode(b"chal"));
        assert_eq!(
            o["pubKeyCredParams"],
            json!([{ "type": "public-key", "alg": -7 }, { "type": "public-key", "alg": -8 }])
        );
        assert_eq!(o["timeout"], 60000);
        assert_eq!(o["attestation"], "none");
        assert_eq!(o["authenticatorSelection"]["residentKey"], "preferred");
        assert_eq!(o["authenticatorSelection"]["userVerification"], "preferred");
        assert_eq!(
            o["excludeCredentials"],
            json!([{ "type": "public-key", "id": "Y3JlZC1h" }])
        );
        let r = request_options(&rp, b"chal", &[]);
        assert_eq!(
            r,
            json!({ "challenge": "Y2hhbA", "timeout": 60000, "rpId": "localhost", "allowCredentials": [], "userVerification": "preferred" })
        );
    }

    #[test]
    fn error_codes_are_stable() {
        let all = [
            (WebauthnError::Malformed("x"), "WEBAUTHN_MALFORMED"),
            (WebauthnError::TypeMismatch, "WEBAUTHN_TYPE_MISMATCH"),
            (WebauthnError::ChallengeMismatch, "WEBAUTHN_CHALLENGE_MISMATCH"),
            (WebauthnError::OriginMismatch, "WEBAUTHN_ORIGIN_MISMATCH"),
            (WebauthnError::RpIdMismatch, "WEBAUTHN_RP_ID_MISMATCH"),
            (WebauthnError::UserNotPresent, "WEBAUTHN_USER_NOT_PRESENT"),
            (
                WebauthnError::AlgorithmUnsupported,
                "WEBAUTHN_ALGORITHM_UNSUPPORTED",
            ),
            (WebauthnError::SignatureInvalid, "WEBAUTHN_SIGNATURE_INVALID"),
            (
                WebauthnError::CounterNotIncreased,
                "WEBAUTHN_COUNTER_NOT_INCREASED",
            ),
            (WebauthnError::CredentialUnknown, "WEBAUTHN_CREDENTIAL_UNKNOWN"),
        ];
        for (e, code) in all {
            assert_eq!(e.code(), code);
        }
    }
}
