//! The engine's own check of a WebAuthn assertion (WebAuthn Level 2 §7.2, steps 10–21), so that
//! an admin action's passkey proof is verified by the state machine itself and not only by the
//! gateway in front of it: a command injected past the gateway still needs the admin's device.
//!
//! Pure and deterministic: the relying party is engine state ([`RelyingParty`], journaled by
//! `Command::SetRelyingParty` from the gateway's configuration), the public key is the one the
//! engine stored at enrolment, and the expected challenge is the step-up's own bytes. Signature
//! checking is verification only (ES256 over P-256, Ed25519 strictly); nothing here draws
//! randomness, reads a clock or does I/O.
//!
//! The gateway (and, independently, the signer) verify the same assertion with
//! `kinko_factors::webauthn`; this is a second, smaller implementation on purpose: the engine
//! must not trust the gateway's word, and it must not link the gateway's random challenges.

use crate::reject::Reject;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest relying-party id (a DNS name).
pub const RP_ID_LEN_MAX: usize = 253;
/// Most allowed origins.
pub const ORIGINS_MAX: usize = 16;
/// Longest origin.
pub const ORIGIN_LEN_MAX: usize = 256;

const FLAG_UP: u8 = 0x01;
const FLAG_AT: u8 = 0x40;
/// The tags of the gateway's normalised key form (`kinko_factors::webauthn::CredentialKey`).
const TAG_ES256: u8 = 1;
const TAG_ED25519: u8 = 2;

/// The relying party admin assertions are made for: its RP ID and the exact origins of its pages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelyingParty {
    pub id: String,
    pub origins: Vec<String>,
}

impl RelyingParty {
    /// A plausible RP ID (lower-case DNS name) and 1 to [`ORIGINS_MAX`] origins of the form
    /// `http(s)://host[:port]`, without repeats.
    pub fn valid(&self) -> bool {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= RP_ID_LEN_MAX
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        let origin_ok = |o: &String| {
            o.len() <= ORIGIN_LEN_MAX
                && (o.starts_with("https://") || o.starts_with("http://"))
                && o.split_once("://").is_some_and(|(_, host)| {
                    !host.is_empty() && !host.contains('/') && host.bytes().all(|b| b.is_ascii_graphic())
                })
        };
        let mut sorted = self.origins.clone();
        sorted.sort_unstable();
        sorted.dedup();
        id_ok
            && !self.origins.is_empty()
            && self.origins.len() <= ORIGINS_MAX
            && sorted.len() == self.origins.len()
            && self.origins.iter().all(origin_ok)
    }
}

/// The members of `CollectedClientData` (WebAuthn §5.8.1) the check reads.
#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    type_: String,
    challenge: String,
    origin: String,
    #[serde(rename = "crossOrigin", default)]
    cross_origin: Option<bool>,
}

/// Verifies an assertion by the credential whose stored key is `public_key` (tag byte, then
/// the key) over `challenge`, and returns the authenticator's new signature counter. The
/// counter rule (it must move forward unless both are zero) is the caller's, which already
/// checks it for every passkey proof. Every failure is [`Reject::PasskeyAssertionInvalid`].
pub fn verify_assertion(
    rp: &RelyingParty,
    public_key: &[u8],
    challenge: &[u8],
    authenticator_data: &[u8],
    client_data_json: &[u8],
    signature: &[u8],
) -> Result<u32, Reject> {
    let bad = Reject::PasskeyAssertionInvalid;
    // Steps 10–14: the client data names a `webauthn.get` of exactly this challenge, made
    // by one of the relying party's own pages (not inside a cross-origin frame).
    let cd: ClientData = serde_json::from_slice(client_data_json).map_err(|_| bad)?;
    if cd.type_ != "webauthn.get"
        || cd.challenge.trim_end_matches('=') != b64url(challenge)
        || !rp.origins.contains(&cd.origin)
        || cd.cross_origin == Some(true)
    {
        return Err(bad);
    }
    // Steps 15–17: the authenticator data is for this RP ID, the user was present, and an
    // assertion carries no attested credential.
    if authenticator_data.len() < 37 {
        return Err(bad);
    }
    let (rp_id_hash, rest) = authenticator_data.split_at(32);
    if rp_id_hash != Sha256::digest(rp.id.as_bytes()).as_slice() {
        return Err(bad);
    }
    let flags = rest[0];
    if flags & FLAG_UP == 0 || flags & FLAG_AT != 0 {
        return Err(bad);
    }
    let count = u32::from_be_bytes(rest[1..5].try_into().map_err(|_| bad)?);
    // Steps 19–20: the signature over authenticatorData ‖ SHA-256(clientDataJSON).
    let mut signed = Vec::with_capacity(authenticator_data.len() + 32);
    signed.extend_from_slice(authenticator_data);
    signed.extend_from_slice(&Sha256::digest(client_data_json));
    verify_signature(public_key, &signed, signature)?;
    Ok(count)
}

/// ES256: an ASN.1 DER signature over SHA-256(msg) by the SEC1 point; Ed25519: 64 raw bytes,
/// strictly verified (no small-order keys, canonical `S`).
fn verify_signature(public_key: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), Reject> {
    use p256::ecdsa::signature::Verifier as _;
    let bad = Reject::PasskeyAssertionInvalid;
    match public_key.split_first() {
        Some((&TAG_ES256, sec1)) => {
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1).map_err(|_| bad)?;
            let sig = p256::ecdsa::Signature::from_der(sig).map_err(|_| bad)?;
            vk.verify(msg, &sig).map_err(|_| bad)
        }
        Some((&TAG_ED25519, key)) => {
            let key: [u8; 32] = key.try_into().map_err(|_| bad)?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| bad)?;
            if vk.is_weak() {
                return Err(bad);
            }
            let sig: [u8; 64] = sig.try_into().map_err(|_| bad)?;
            vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
                .map_err(|_| bad)
        }
        _ => Err(bad),
    }
}

/// base64url without padding (RFC 4648 §5), as WebAuthn writes the challenge.
fn b64url(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | u32::from(x) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc_4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64url(raw.as_bytes()), enc);
        }
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn relying_parties_are_checked() {
        let rp = |id: &str, o: &[&str]| RelyingParty {
            id: id.into(),
            origins: o.iter().map(|s| s.to_string()).collect(),
        };
        assert!(rp("localhost", &["http://localhost:8080"]).valid());
        assert!(rp("example.com", &["https://example.com", "https://www.example.com"]).valid());
        assert!(!rp("", &["http://localhost"]).valid());
        assert!(!rp("Example.com", &["https://example.com"]).valid());
        assert!(!rp("localhost", &[]).valid());
        assert!(!rp("localhost", &["ftp://localhost"]).valid());
        assert!(!rp("localhost", &["http://localhost/x"]).valid());
        assert!(!rp("localhost", &["http://localhost", "http://localhost"]).valid());
    }
}
