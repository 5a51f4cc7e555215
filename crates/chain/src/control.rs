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
    pub fn new(
        asset: &str,
        sequence: u64,
        nonce: &[u8; 32],
        cold: &ColdKeys,
    ) -> Result<ColdChallenge, ControlError> {
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
        // What the keyholder is shown must be what the keys say: an edited descriptor or
        // threshold would misdescribe the wallet whose control is being proven.
        let cold = ColdKeys {
            threshold: self.threshold,
            keys: self.keys.clone(),
        };
        if self.threshold == 0
            || self.threshold > self.keys.len()
            || self.descriptor != cold_descriptor(&cold)
        {
            return Err(ControlError::BadFormat(CHALLENGE_FORMAT));
        }
        Ok(message)
    }
}

/// The accepted cold proof of control, kept as `<ASSET>.cold-control.json` beside the proof
/// set's roots (`kinko proof cold-submit` writes it, `kinko proof reserves` checks it again):
/// the proof's asset, sequence and nonce, the cold multisig and the keyholders' signatures.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColdProof {
    pub format: String,
    pub version: u32,
    pub asset: String,
    pub sequence: u64,
    /// 64 hex digits: the asset's liabilities root hash at `sequence`.
    pub nonce: String,
    pub threshold: usize,
    pub keys: Vec<WatchKey>,
    pub message: String,
    pub signatures: Vec<ColdSignature>,
}

impl ColdProof {
    /// Checks the keyholders' signatures ([`verify_cold`]) over this proof's message (asset,
    /// sequence, nonce) against the cold multisig, and keeps them.
    pub fn accept(
        asset: &str,
        sequence: u64,
        nonce: &[u8; 32],
        cold: &ColdKeys,
        signatures: Vec<ColdSignature>,
    ) -> Result<ColdProof, ControlError> {
        let message = control_message(asset, sequence, nonce)?;
        verify_cold(cold, &message, &signatures)?;
        Ok(ColdProof {
            format: COLD_PROOF_FORMAT.into(),
            version: FILE_VERSION,
            asset: asset.into(),
            sequence,
            nonce: hex::encode(nonce),
            threshold: cold.threshold,
            keys: cold.keys.clone(),
            message,
            signatures,
        })
    }

    /// Checks a kept proof again for the proof set at hand and the configured cold keys: a
    /// proof of another set (another sequence or nonce) is `WRONG_MESSAGE`, so it is never
    /// reused; a proof for other cold keys is `BAD_FORMAT`; then every signature as at
    /// [`Self::accept`].
    pub fn check(
        &self,
        asset: &str,
        sequence: u64,
        nonce: &[u8; 32],
        cold: &ColdKeys,
    ) -> Result<(), ControlError> {
        if self.format != COLD_PROOF_FORMAT || self.version != FILE_VERSION {
            return Err(ControlError::BadFormat(COLD_PROOF_FORMAT));
        }
        let message = control_message(asset, sequence, nonce)?;
        if self.asset != asset
            || self.sequence != sequence
            || self.nonce != hex::encode(nonce)
            || self.message != message
        {
            return Err(ControlError::WrongMessage);
        }
        if self.threshold != cold.threshold || self.keys != cold.keys {
            return Err(ControlError::BadFormat(COLD_PROOF_FORMAT));
        }
        verify_cold(cold, &message, &self.signatures)
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

#[cfg(test)]
mod tests {
    //! The cold ceremony's attack table, with keyholders' keys made here (signing itself is
    //! the signer's; these tests sign the same digest directly).
    use super::*;
    use crate::keys::{cold_account_path, watch_key};
    use crate::Network;
    use bitcoin::bip32::Xpriv;

    const NONCE: [u8; 32] = [7; 32];

    fn master(seed: u8) -> Xpriv {
        Xpriv::new_master(bitcoin::NetworkKind::Test, &[seed; 32]).unwrap()
    }

    fn key(seed: u8) -> WatchKey {
        watch_key(&master(seed), &cold_account_path(Network::LitecoinRegtest))
    }

    /// Keyholder `seed`'s signature file over `message`.
    fn sign(seed: u8, message: &str) -> ColdSignature {
        let secp = Secp256k1::new();
        let sk = master(seed)
            .derive_priv(&secp, &cold_account_path(Network::LitecoinRegtest))
            .unwrap();
        let sig = secp.sign_ecdsa_low_r(&control_digest(message), &sk.private_key);
        ColdSignature::new(message.into(), key(seed), hex::encode(sig.serialize_der()))
    }

    /// A 2-of-3 cold multisig of keyholders 1, 2, 3.
    fn cold() -> ColdKeys {
        ColdKeys {
            threshold: 2,
            keys: vec![key(1), key(2), key(3)],
        }
    }

    fn message() -> String {
        control_message("LTC", 42, &NONCE).unwrap()
    }

    fn code(r: Result<(), ControlError>) -> &'static str {
        r.map_or_else(|e| e.code(), |()| "OK")
    }

    #[test]
    fn a_threshold_of_cold_keys_proves_control() {
        let m = message();
        assert_eq!(code(verify_cold(&cold(), &m, &[sign(1, &m), sign(3, &m)])), "OK");
        assert_eq!(
            code(verify_cold(&cold(), &m, &[sign(3, &m), sign(2, &m), sign(1, &m)])),
            "OK"
        );
    }

    /// Each attack on the keyholders' signatures, refused with its code.
    #[test]
    fn the_cold_attack_table() {
        let m = message();
        let other_sequence = control_message("LTC", 41, &NONCE).unwrap();
        let other_nonce = control_message("LTC", 42, &[8; 32]).unwrap();
        let mut flipped = sign(2, &m);
        let mut der = hex::decode(&flipped.signature).unwrap();
        *der.last_mut().unwrap() ^= 1;
        flipped.signature = hex::encode(der);
        // The message field says this proof's message, the signature is over another one.
        let mut relabelled = sign(2, &other_sequence);
        relabelled.message = m.clone();
        let mut bad_format = sign(2, &m);
        bad_format.format = "kinko-cold-control-signatur".into();
        let cases: Vec<(&str, Vec<ColdSignature>, &str)> = vec![
            (
                "another sequence",
                vec![sign(1, &m), sign(2, &other_sequence)],
                "WRONG_MESSAGE",
            ),
            (
                "another nonce",
                vec![sign(1, &other_nonce), sign(2, &m)],
                "WRONG_MESSAGE",
            ),
            (
                "a key not in the multisig",
                vec![sign(1, &m), sign(9, &m)],
                "UNKNOWN_KEY",
            ),
            (
                "the same key twice",
                vec![sign(1, &m), sign(1, &m)],
                "DUPLICATE_KEY",
            ),
            ("one of two", vec![sign(3, &m)], "TOO_FEW_SIGNATURES"),
            ("none", vec![], "TOO_FEW_SIGNATURES"),
            (
                "a flipped signature byte",
                vec![sign(1, &m), flipped],
                "BAD_SIGNATURE",
            ),
            (
                "a signature of another message",
                vec![sign(1, &m), relabelled],
                "BAD_SIGNATURE",
            ),
            (
                "a signature of another key",
                vec![sign(1, &m), {
                    let mut s = sign(9, &m);
                    s.key = key(2);
                    s
                }],
                "BAD_SIGNATURE",
            ),
            (
                "not a signature file",
                vec![sign(1, &m), bad_format],
                "BAD_FORMAT",
            ),
        ];
        for (what, sigs, want) in cases {
            assert_eq!(code(verify_cold(&cold(), &m, &sigs)), want, "{what}");
        }
        // A bad signature refuses the set even when a threshold of good ones is there.
        let mut extra = sign(3, &m);
        extra.signature = sign(3, &other_sequence).signature;
        assert_eq!(
            code(verify_cold(&cold(), &m, &[sign(1, &m), sign(2, &m), extra])),
            "BAD_SIGNATURE"
        );
    }

    /// The challenge shows what is signed; an edited message or wallet is refused before
    /// anything is signed.
    #[test]
    fn an_edited_challenge_is_refused() {
        let c = ColdChallenge::new("LTC", 42, &NONCE, &cold()).unwrap();
        assert_eq!(c.checked_message().unwrap(), message());
        let round: ColdChallenge = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);
        let mut edited = c.clone();
        edited.message = edited.message.replace("sequence 42", "sequence 43");
        assert_eq!(code(edited.checked_message().map(drop)), "WRONG_MESSAGE");
        let mut edited = c.clone();
        edited.sequence = 43;
        assert_eq!(code(edited.checked_message().map(drop)), "WRONG_MESSAGE");
        let mut edited = c.clone();
        edited.message.push_str("send 1 LTC to me\n");
        assert_eq!(code(edited.checked_message().map(drop)), "WRONG_MESSAGE");
        let mut edited = c.clone();
        edited.threshold = 1;
        assert_eq!(code(edited.checked_message().map(drop)), "BAD_FORMAT");
        let mut edited = c.clone();
        edited.keys[0] = key(9);
        assert_eq!(code(edited.checked_message().map(drop)), "BAD_FORMAT");
        let mut edited = c;
        edited.nonce = "00".into();
        assert_eq!(code(edited.checked_message().map(drop)), "BAD_FORMAT");
        let unknown_field = r#"{"format":"kinko-cold-control-challenge","extra":1}"#;
        assert!(serde_json::from_str::<ColdChallenge>(unknown_field).is_err());
    }

    /// A kept proof counts only for its own proof set: replayed at a later sequence or under
    /// another nonce it is `WRONG_MESSAGE`.
    #[test]
    fn a_cold_proof_is_never_reused_for_another_proof_set() {
        let m = message();
        let proof = ColdProof::accept("LTC", 42, &NONCE, &cold(), vec![sign(1, &m), sign(2, &m)]).unwrap();
        let kept: ColdProof = serde_json::from_str(&serde_json::to_string(&proof).unwrap()).unwrap();
        assert_eq!(code(kept.check("LTC", 42, &NONCE, &cold())), "OK");
        assert_eq!(code(kept.check("LTC", 43, &NONCE, &cold())), "WRONG_MESSAGE");
        assert_eq!(code(kept.check("LTC", 42, &[8; 32], &cold())), "WRONG_MESSAGE");
        assert_eq!(code(kept.check("BTC", 42, &NONCE, &cold())), "WRONG_MESSAGE");
        // Relabelled as the later set's, the signatures are still over the old message.
        let mut relabelled = kept.clone();
        relabelled.sequence = 43;
        relabelled.message = control_message("LTC", 43, &NONCE).unwrap();
        assert_eq!(
            code(relabelled.check("LTC", 43, &NONCE, &cold())),
            "WRONG_MESSAGE"
        );
        for s in &mut relabelled.signatures {
            s.message = relabelled.message.clone();
        }
        assert_eq!(
            code(relabelled.check("LTC", 43, &NONCE, &cold())),
            "BAD_SIGNATURE"
        );
        // Cold keys changed since: not this wallet's proof.
        let mut other = cold();
        other.keys[2] = key(9);
        assert_eq!(code(kept.check("LTC", 42, &NONCE, &other)), "BAD_FORMAT");
        // Too few at acceptance: nothing kept.
        let one = ColdProof::accept("LTC", 42, &NONCE, &cold(), vec![sign(1, &m)]);
        assert_eq!(one.unwrap_err().code(), "TOO_FEW_SIGNATURES");
    }
}
