//! Proof of control of a custody key, for the proof of reserves (docs/design/proofs.md): a
//! message that names only the proof's asset, sequence and a nonce, its digest, and the check
//! of a signature over it with an account's public key. Signing is the signer's
//! (`kinko_signer::sign::sign_control`); this module holds public keys only.

use crate::keys::WatchKey;
use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::secp256k1::{ecdsa::Signature, Message, Secp256k1};

/// The message's first line, and the digest's domain tag.
pub const CONTROL_TAG: &str = "kinko proof of reserves v1";

/// Why a control message or signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("asset {0:?} is not 1 to 16 ASCII letters or digits")]
    BadAsset(String),
    #[error("the signature is not hex DER")]
    BadSignature,
    #[error("the signature does not verify with the key")]
    Invalid,
}

/// The exact message: four lines, nothing the caller can add.
pub fn control_message(asset: &str, sequence: u64, nonce: &[u8; 32]) -> Result<String, ControlError> {
    if asset.is_empty() || asset.len() > 16 || !asset.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ControlError::BadAsset(asset.to_owned()));
    }
    Ok(format!(
        "{CONTROL_TAG}\nasset {asset}\nsequence {sequence}\nnonce {}\n",
        hex::encode(nonce)
    ))
}

/// The digest signed: SHA-256 of the tag, a zero byte and SHA-256 of the message. A
/// transaction's signature hash is a double SHA-256 of a serialized transaction, never of this
/// tagged form, so a control signature cannot spend anything.
pub fn control_digest(message: &str) -> Message {
    let inner = sha256::Hash::hash(message.as_bytes());
    let mut e = sha256::Hash::engine();
    e.input(CONTROL_TAG.as_bytes());
    e.input(&[0]);
    e.input(inner.as_byte_array());
    Message::from_digest(sha256::Hash::from_engine(e).to_byte_array())
}

/// Checks `signature` (hex DER) over `message` with the account key of `key`.
pub fn verify_control(key: &WatchKey, message: &str, signature: &str) -> Result<(), ControlError> {
    let der = hex::decode(signature.trim()).map_err(|_| ControlError::BadSignature)?;
    let sig = Signature::from_der(&der).map_err(|_| ControlError::BadSignature)?;
    Secp256k1::verification_only()
        .verify_ecdsa(&control_digest(message), &sig, &key.xpub.public_key)
        .map_err(|_| ControlError::Invalid)
}
