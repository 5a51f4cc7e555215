//! Proof of control of a custody key, for the proof of reserves (docs/design/proofs.md): a
//! message that names only the proof's asset, sequence and a nonce, its digest, and the check
//! of a signature over it with an account's public key; and for the cold multisig, the
//! ceremony's files (the challenge the keyholders sign offline, their signatures) and the check
//! of a threshold of signatures against the cold keys. Signing is the signer's
//! (`kinko_signer::sign::sign_control`, `kinko-signer prove-control`); this module holds public
//! keys only.

use crate::keys::{cold_descriptor, ColdKeys, WatchKey};
use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::secp256k1::{ecdsa::Signature, Message, Secp256k1};

/// The message's first line, and the digest's domain tag.
pub const CONTROL_TAG: &str = "kinko proof of reserves v1";

/// `format` of the cold keyholders' challenge file.
pub const CHALLENGE_FORMAT: &str = "kinko-cold-control-challenge";
/// `format` of one keyholder's signature file.
pub const SIGNATURE_FORMAT: &str = "kinko-cold-control-signature";
/// `format` of the accepted cold proof kept beside the proof set's roots.
pub const COLD_PROOF_FORMAT: &str = "kinko-cold-control";
/// The files' version.
pub const FILE_VERSION: u32 = 1;

/// Why a control message or signature is refused. Each has a stable code ([`Self::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("asset {0:?} is not 1 to 16 ASCII letters or digits")]
    BadAsset(String),
    #[error("the signature is not hex DER")]
    BadSignature,
    #[error("the signature does not verify with the key")]
    Invalid,
    #[error("not a {0} file of version 1 (or a field is wrong)")]
    BadFormat(&'static str),
    #[error("the signed message is not this proof's control message")]
    WrongMessage,
    #[error("key {0} is not one of the cold keys")]
    UnknownKey(String),
    #[error("key {0} signed twice")]
    DuplicateKey(String),
    #[error("{have} valid signature(s) of cold keys; the cold multisig needs {need}")]
    TooFewSignatures { have: usize, need: usize },
}

impl ControlError {
    /// The stable code a refusal is reported with.
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::BadAsset(_) => "BAD_ASSET",
            ControlError::BadSignature => "SIGNATURE_MALFORMED",
            ControlError::Invalid => "BAD_SIGNATURE",
            ControlError::BadFormat(_) => "BAD_FORMAT",
            ControlError::WrongMessage => "WRONG_MESSAGE",
            ControlError::UnknownKey(_) => "UNKNOWN_KEY",
            ControlError::DuplicateKey(_) => "DUPLICATE_KEY",
            ControlError::TooFewSignatures { .. } => "TOO_FEW_SIGNATURES",
        }
    }
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

/// What the cold keyholders sign offline (`kinko proof cold-challenge` writes it,
/// `kinko-signer prove-control` reads it): the proof's asset, sequence and nonce (the
/// liabilities root hash), the cold multisig (threshold, keys, receive descriptor) and the
/// exact message. Only `asset`, `sequence` and `nonce` determine what is signed: the message is
/// rebuilt from them and must equal `message`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColdChallenge {
    pub format: String,
    pub version: u32,
    pub asset: String,
    pub sequence: u64,
    /// 64 hex digits.
    pub nonce: String,
    pub threshold: usize,
    pub keys: Vec<WatchKey>,
    pub descriptor: String,
    pub message: String,
}

impl ColdChallenge {
    pub fn new(asset: &str, sequence: u64, nonce: &[u8; 32], cold: &ColdKeys) -> Result<ColdChallenge, ControlError> {
        Ok(ColdChallenge {
            format: CHALLENGE_FORMAT.into(),
            version: FILE_VERSION,
            asset: asset.into(),
            sequence,
            nonce: hex::encode(nonce),
            threshold: cold.threshold,
            keys: cold.keys.clone(),
            descriptor: cold_descriptor(cold),
            message: control_message(asset, sequence, nonce)?,
        })
    }

    /// The message to sign, rebuilt from the typed fields; refused unless it is the one the
    /// file shows.
    pub fn checked_message(&self) -> Result<String, ControlError> {
        if self.format != CHALLENGE_FORMAT || self.version != FILE_VERSION {
            return Err(ControlError::BadFormat(CHALLENGE_FORMAT));
        }
        let nonce: [u8; 32] = hex::decode(&self.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(ControlError::BadFormat(CHALLENGE_FORMAT))?;
        let message = control_message(&self.asset, self.sequence, &nonce)?;
        if message != self.message {
            return Err(ControlError::WrongMessage);
        }
        Ok(message)
    }
}

/// One keyholder's answer: the message signed, their cold account key, the signature (hex DER
/// over [`control_digest`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColdSignature {
    pub format: String,
    pub version: u32,
    pub message: String,
    pub key: WatchKey,
    pub signature: String,
}

impl ColdSignature {
    pub fn new(message: String, key: WatchKey, signature: String) -> ColdSignature {
        ColdSignature {
            format: SIGNATURE_FORMAT.into(),
            version: FILE_VERSION,
            message,
            key,
            signature,
        }
    }
}

/// Checks the keyholders' signatures over `message` against the cold multisig: every one must
/// be of this message (`WRONG_MESSAGE`), by a cold key (`UNKNOWN_KEY`), once per key
/// (`DUPLICATE_KEY`), and valid (`BAD_SIGNATURE`); and there must be at least the multisig's
/// threshold of them (`TOO_FEW_SIGNATURES`). Any bad signature refuses the whole set.
pub fn verify_cold(cold: &ColdKeys, message: &str, signatures: &[ColdSignature]) -> Result<(), ControlError> {
    let mut seen: Vec<&WatchKey> = Vec::new();
    for s in signatures {
        if s.format != SIGNATURE_FORMAT || s.version != FILE_VERSION {
            return Err(ControlError::BadFormat(SIGNATURE_FORMAT));
        }
        if s.message != message {
            return Err(ControlError::WrongMessage);
        }
        if !cold.keys.contains(&s.key) {
            return Err(ControlError::UnknownKey(s.key.to_string()));
        }
        if seen.contains(&&s.key) {
            return Err(ControlError::DuplicateKey(s.key.to_string()));
        }
        verify_control(&s.key, message, &s.signature)?;
        seen.push(&s.key);
    }
    if seen.len() < cold.threshold {
        return Err(ControlError::TooFewSignatures {
            have: seen.len(),
            need: cold.threshold,
        });
    }
    Ok(())
}
