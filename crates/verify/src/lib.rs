//! Proof of liabilities: the Merkle sum tree kinko publishes per asset, a customer's inclusion
//! proof, the signed root, and the verifier that checks them without trusting the exchange.
//!
//! The design, the attacks and which check refuses each are in `docs/design/proofs.md`. In short:
//!
//! - a **leaf** is `(H(LEAF_TAG ‖ salt ‖ user id), balance)`: the salt is per user, per asset
//!   and per proof, so a leaf does not link across proofs and nobody can enumerate users;
//! - an **internal node** is `(H(NODE_TAG ‖ left hash ‖ left sum ‖ right hash ‖ right sum),
//!   left sum + right sum)`, sums `u128` with checked addition; a level with an odd number of
//!   nodes is completed by the padding node `(H(PAD_TAG), 0)`;
//! - the **root** (asset, decimals, sequence, time, leaf count, root hash, total, which key)
//!   is signed with Ed25519 over [`Root::statement`].
//!
//! This crate depends on no other kinko crate: the exchange builds its trees with
//! [`tree::build`], and a customer checks a proof with the `kinko-verify` binary, which shares
//! nothing else with the exchange.
#![forbid(unsafe_code)]

pub mod tree;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `format` of an inclusion proof.
pub const PROOF_FORMAT: &str = "kinko-liabilities-inclusion";
/// `format` of the published roots (`GET /api/v1/proofs/liabilities`, `liabilities.json`).
pub const ROOTS_FORMAT: &str = "kinko-liabilities-roots";
/// The version of both formats and of the hashing below.
pub const VERSION: u32 = 1;

/// Domain tags: a leaf, an internal node and the padding node can never hash alike.
pub const LEAF_TAG: &[u8] = b"kinko/pol/leaf/v1\0";
pub const NODE_TAG: &[u8] = b"kinko/pol/node/v1\0";
pub const PAD_TAG: &[u8] = b"kinko/pol/pad/v1\0";
/// The first line of the signed statement.
pub const STATEMENT_TAG: &str = "kinko proof of liabilities v1";

/// Key kinds that may sign a root: the exchange's audit checkpoint key (when no witness is
/// configured), or the signer's witness key (`sign_liabilities_root`: the signer signs only
/// roots at or below the journal head it cosigned).
pub const KEY_AUDIT: &str = "audit";
pub const KEY_WITNESS: &str = "witness";

pub type Hash = [u8; 32];

/// The leaf's hash: it commits to the salt and the user id; the balance is committed by the
/// parent (which hashes every child's sum) and, for a one-leaf tree, by the signed total.
pub fn leaf_hash(salt: &[u8; 32], user: u64) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(LEAF_TAG);
    h.update(salt);
    h.update(&user.to_be_bytes());
    *h.finalize().as_bytes()
}

/// An internal node's hash: over both children's hashes and sums.
pub fn node_hash(left: &Hash, left_sum: u128, right: &Hash, right_sum: u128) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(NODE_TAG);
    h.update(left);
    h.update(&left_sum.to_be_bytes());
    h.update(right);
    h.update(&right_sum.to_be_bytes());
    *h.finalize().as_bytes()
}

/// The padding node's hash (its sum is 0); also the root of an empty tree.
pub fn pad_hash() -> Hash {
    *blake3::hash(PAD_TAG).as_bytes()
}

/// Steps from a leaf to the root of a tree of `leaves` leaves: ⌈log2(leaves)⌉ (0 for 0 or 1).
pub fn depth(leaves: u64) -> u32 {
    if leaves <= 1 {
        0
    } else {
        64 - (leaves - 1).leading_zeros()
    }
}

/// A signed root: what `GET /api/v1/proofs/liabilities` lists per asset and every inclusion
/// proof carries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Root {
    /// Asset code (1 to 16 ASCII letters or digits).
    pub asset: String,
    /// Decimal places of the asset: balances and sums are integers in its minor units.
    pub decimals: u8,
    /// The journal sequence the balances were read at.
    pub sequence: u64,
    /// The time of that sequence (the journal's, not a clock's), RFC 3339 UTC. Every number in
    /// these documents stays below 2^53, so a browser's JSON keeps it exact.
    pub time: String,
    /// Number of leaves (customers with an account in this asset).
    pub leaves: u64,
    /// The root node's hash (64 hex digits) and sum (decimal integer, minor units).
    pub root_hash: String,
    pub total: String,
    /// Which key signed: `audit` (the exchange's audit checkpoint key) or `witness` (the
    /// signer's witness key).
    pub key: String,
    /// The Ed25519 public key (64 hex digits) and signature over [`Root::statement`] (128).
    pub public_key: String,
    pub signature: String,
}

impl Root {
    /// The exact bytes signed: one `name value` line per field, in this order.
    pub fn statement(&self) -> Result<Vec<u8>, VerifyError> {
        check_text("asset", &self.asset, 16, |c| c.is_ascii_alphanumeric())?;
        check_text("time", &self.time, 64, |c| c.is_ascii_graphic())?;
        check_text("key", &self.key, 16, |c| c.is_ascii_lowercase())?;
        Ok(format!(
            "{STATEMENT_TAG}\nasset {}\ndecimals {}\nsequence {}\ntime {}\nleaves {}\nroot_hash {}\ntotal {}\nkey {}\n",
            self.asset,
            self.decimals,
            self.sequence,
            self.time,
            self.leaves,
            self.root_hash,
            self.total,
            self.key
        )
        .into_bytes())
    }
}

fn check_text(
    field: &'static str,
    v: &str,
    max: usize,
    ok: impl Fn(char) -> bool,
) -> Result<(), VerifyError> {
    if v.is_empty() || v.len() > max || !v.chars().all(ok) {
        return Err(VerifyError::BadField {
            field,
            why: "empty, too long or an unexpected character".into(),
        });
    }
    Ok(())
}

/// One step of a path: the sibling's hash and sum.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub hash: String,
    pub sum: String,
}

/// A customer's inclusion proof in one asset's tree.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    pub format: String,
    pub version: u32,
    pub root: Root,
    /// The customer's user id and their salt for this proof (64 hex digits).
    pub user: u64,
    pub salt: String,
    /// The customer's balance (decimal integer, minor units; held funds included).
    pub balance: String,
    /// The leaf's position (leaves are ordered by leaf hash).
    pub index: u64,
    /// The siblings from the leaf's up to the root's children.
    pub path: Vec<Step>,
}

/// The published roots, one per asset.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Roots {
    pub format: String,
    pub version: u32,
    pub roots: Vec<Root>,
}

/// Why a proof does not verify. [`VerifyError::code`] is stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    Format(String),
    BadField { field: &'static str, why: String },
    NegativeBalance { field: &'static str },
    UserMismatch { proof: u64, expected: u64 },
    IndexOutOfRange { index: u64, leaves: u64 },
    PathLength { got: usize, want: u32 },
    SumOverflow { level: usize },
    RootHashMismatch { computed: String, signed: String },
    TotalMismatch { computed: u128, signed: String },
    UnknownKeyKind(String),
    BadSignature,
    KeyMismatch { proof: String, expected: String },
    NotPublished { asset: String },
    PublishedRootDiffers { asset: String },
}

impl VerifyError {
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Format(_) => "FORMAT",
            VerifyError::BadField { .. } => "BAD_FIELD",
            VerifyError::NegativeBalance { .. } => "NEGATIVE_BALANCE",
            VerifyError::UserMismatch { .. } => "USER_MISMATCH",
            VerifyError::IndexOutOfRange { .. } => "INDEX_OUT_OF_RANGE",
            VerifyError::PathLength { .. } => "PATH_LENGTH",
            VerifyError::SumOverflow { .. } => "SUM_OVERFLOW",
            VerifyError::RootHashMismatch { .. } => "ROOT_HASH_MISMATCH",
            VerifyError::TotalMismatch { .. } => "TOTAL_MISMATCH",
            VerifyError::UnknownKeyKind(_) => "UNKNOWN_KEY_KIND",
            VerifyError::BadSignature => "BAD_SIGNATURE",
            VerifyError::KeyMismatch { .. } => "KEY_MISMATCH",
            VerifyError::NotPublished { .. } => "NOT_PUBLISHED",
            VerifyError::PublishedRootDiffers { .. } => "PUBLISHED_ROOT_DIFFERS",
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.code())?;
        match self {
            VerifyError::Format(w) => write!(f, "not a proof of this format: {w}"),
            VerifyError::BadField { field, why } => write!(f, "field {field}: {why}"),
            VerifyError::NegativeBalance { field } => {
                write!(f, "{field} is negative: a proof of liabilities has no negative balance")
            }
            VerifyError::UserMismatch { proof, expected } => write!(
                f,
                "the proof is for user {proof}, not for user {expected}: it is not your leaf"
            ),
            VerifyError::IndexOutOfRange { index, leaves } => {
                write!(f, "leaf index {index} is outside a tree of {leaves} leaves")
            }
            VerifyError::PathLength { got, want } => write!(
                f,
                "the path has {got} steps; a tree of this many leaves needs exactly {want}"
            ),
            VerifyError::SumOverflow { level } => write!(
                f,
                "the sums overflow at level {level}: no honest tree has a sum above 2^128-1"
            ),
            VerifyError::RootHashMismatch { computed, signed } => write!(
                f,
                "the path leads to root {computed}, but the signed root is {signed}: a hash, sum, salt, user or balance was changed"
            ),
            VerifyError::TotalMismatch { computed, signed } => write!(
                f,
                "the path sums to {computed}, but the signed total is {signed}"
            ),
            VerifyError::UnknownKeyKind(k) => {
                write!(f, "key kind {k:?} is neither \"audit\" nor \"witness\"")
            }
            VerifyError::BadSignature => f.write_str(
                "the root's signature does not verify with its public key: the root was changed after signing",
            ),
            VerifyError::KeyMismatch { proof, expected } => write!(
                f,
                "the root is signed by key {proof}, not by the published key {expected}"
            ),
            VerifyError::NotPublished { asset } => {
                write!(f, "the published roots have no root for asset {asset}")
            }
            VerifyError::PublishedRootDiffers { asset } => write!(
                f,
                "the proof's {asset} root is not the published one: you were shown a different tree"
            ),
        }
    }
}

impl std::error::Error for VerifyError {}

/// What a valid proof proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user: u64,
    pub asset: String,
    pub decimals: u8,
    pub balance: u128,
    pub sequence: u64,
    pub time: String,
    pub total: u128,
    pub leaves: u64,
    pub key: String,
    pub public_key: String,
}

/// What the customer brings besides the proof: their user id, the published key and roots.
#[derive(Debug, Clone, Default)]
pub struct Expect<'a> {
    pub user: Option<u64>,
    pub public_key: Option<&'a str>,
    pub published: Option<&'a Roots>,
}

/// Parses a decimal amount of minor units: digits only, no sign, no leading zeros, at most
/// `u128::MAX`. A leading `-` is [`VerifyError::NegativeBalance`].
pub fn parse_amount(field: &'static str, text: &str) -> Result<u128, VerifyError> {
    if text.starts_with('-') {
        return Err(VerifyError::NegativeBalance { field });
    }
    let bad = |why: &str| VerifyError::BadField {
        field,
        why: why.into(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("not a decimal integer of minor units"));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(bad("leading zeros"));
    }
    text.parse::<u128>().map_err(|_| bad("above 2^128-1"))
}

/// Lower-case hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Exactly `N` bytes from lower-case hex.
pub fn from_hex<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], VerifyError> {
    let bad = || VerifyError::BadField {
        field,
        why: format!("not {} lower-case hex digits", N * 2),
    };
    let t = text.as_bytes();
    if t.len() != N * 2 {
        return Err(bad());
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = digit(t[2 * i]).ok_or_else(bad)?;
        let lo = digit(t[2 * i + 1]).ok_or_else(bad)?;
        *o = (hi << 4) | lo;
    }
    Ok(out)
}

/// Checks a root's signature (and the key kind); returns the total.
pub fn verify_root(root: &Root) -> Result<u128, VerifyError> {
    if root.key != KEY_AUDIT && root.key != KEY_WITNESS {
        return Err(VerifyError::UnknownKeyKind(root.key.clone()));
    }
    from_hex::<32>("root.root_hash", &root.root_hash)?;
    let total = parse_amount("root.total", &root.total)?;
    let statement = root.statement()?;
    let pk = from_hex::<32>("root.public_key", &root.public_key)?;
    let sig = from_hex::<64>("root.signature", &root.signature)?;
    let key = VerifyingKey::from_bytes(&pk).map_err(|_| VerifyError::BadField {
        field: "root.public_key",
        why: "not an Ed25519 public key".into(),
    })?;
    key.verify_strict(&statement, &Signature::from_bytes(&sig))
        .map_err(|_| VerifyError::BadSignature)?;
    Ok(total)
}

/// Verifies an inclusion proof: format, fields, the path from the customer's own leaf to the
/// root (no negative value, no overflow), the root hash and total, the root's signature, and
/// what the customer brings ([`Expect`]).
pub fn verify(proof: &InclusionProof, expect: &Expect<'_>) -> Result<Verified, VerifyError> {
    if proof.format != PROOF_FORMAT {
        return Err(VerifyError::Format(format!(
            "format is {:?}, expected {PROOF_FORMAT:?}",
            proof.format
        )));
    }
    if proof.version != VERSION {
        return Err(VerifyError::Format(format!(
            "version {} (this verifier knows {VERSION})",
            proof.version
        )));
    }
    if let Some(expected) = expect.user {
        if proof.user != expected {
            return Err(VerifyError::UserMismatch {
                proof: proof.user,
                expected,
            });
        }
    }
    let root = &proof.root;
    let salt = from_hex::<32>("salt", &proof.salt)?;
    let balance = parse_amount("balance", &proof.balance)?;
    let signed_hash = from_hex::<32>("root.root_hash", &root.root_hash)?;
    let signed_total = parse_amount("root.total", &root.total)?;
    if proof.index >= root.leaves {
        return Err(VerifyError::IndexOutOfRange {
            index: proof.index,
            leaves: root.leaves,
        });
    }
    let want = depth(root.leaves);
    if u32::try_from(proof.path.len()).ok() != Some(want) {
        return Err(VerifyError::PathLength {
            got: proof.path.len(),
            want,
        });
    }
    let mut hash = leaf_hash(&salt, proof.user);
    let mut sum = balance;
    let mut index = proof.index;
    for (level, step) in proof.path.iter().enumerate() {
        let sib_hash = from_hex::<32>("path.hash", &step.hash)?;
        let sib_sum = parse_amount("path.sum", &step.sum)?;
        let parent_sum = sum
            .checked_add(sib_sum)
            .ok_or(VerifyError::SumOverflow { level })?;
        hash = if index & 1 == 0 {
            node_hash(&hash, sum, &sib_hash, sib_sum)
        } else {
            node_hash(&sib_hash, sib_sum, &hash, sum)
        };
        sum = parent_sum;
        index >>= 1;
    }
    if hash != signed_hash {
        return Err(VerifyError::RootHashMismatch {
            computed: to_hex(&hash),
            signed: root.root_hash.clone(),
        });
    }
    if sum != signed_total {
        return Err(VerifyError::TotalMismatch {
            computed: sum,
            signed: root.total.clone(),
        });
    }
    verify_root(root)?;
    if let Some(expected) = expect.public_key {
        let expected = expected.trim().to_ascii_lowercase();
        if expected != root.public_key {
            return Err(VerifyError::KeyMismatch {
                proof: root.public_key.clone(),
                expected,
            });
        }
    }
    if let Some(published) = expect.published {
        if published.format != ROOTS_FORMAT || published.version != VERSION {
            return Err(VerifyError::Format(
                "the published roots are not kinko-liabilities-roots version 1".into(),
            ));
        }
        let p = published
            .roots
            .iter()
            .find(|r| r.asset == root.asset)
            .ok_or_else(|| VerifyError::NotPublished {
                asset: root.asset.clone(),
            })?;
        if p != root {
            return Err(VerifyError::PublishedRootDiffers {
                asset: root.asset.clone(),
            });
        }
    }
    Ok(Verified {
        user: proof.user,
        asset: root.asset.clone(),
        decimals: root.decimals,
        balance,
        sequence: root.sequence,
        time: root.time.clone(),
        total: sum,
        leaves: root.leaves,
        key: root.key.clone(),
        public_key: root.public_key.clone(),
    })
}

/// Minor units as a decimal with `decimals` places (`123456`, 4 → `12.3456`).
pub fn format_units(units: u128, decimals: u8) -> String {
    let s = units.to_string();
    let d = usize::from(decimals);
    if d == 0 {
        return s;
    }
    let padded = if s.len() <= d {
        format!("{}{s}", "0".repeat(d + 1 - s.len()))
    } else {
        s
    };
    let (int, frac) = padded.split_at(padded.len() - d);
    format!("{int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_ceil_log2() {
        for (n, d) in [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (8, 3),
            (9, 4),
            (1 << 20, 20),
        ] {
            assert_eq!(depth(n), d, "{n}");
        }
    }

    #[test]
    fn amounts_and_hex_parse_strictly() {
        assert_eq!(parse_amount("x", "0"), Ok(0));
        assert_eq!(parse_amount("x", &u128::MAX.to_string()), Ok(u128::MAX));
        assert!(matches!(
            parse_amount("x", "-1"),
            Err(VerifyError::NegativeBalance { .. })
        ));
        for bad in [
            "",
            "+1",
            "01",
            "1.5",
            "1e3",
            "340282366920938463463374607431768211456",
        ] {
            assert!(
                matches!(parse_amount("x", bad), Err(VerifyError::BadField { .. })),
                "{bad}"
            );
        }
        let h = to_hex(&[0, 1, 0xab, 0xff]);
        assert_eq!(h, "0001abff");
        assert_eq!(from_hex::<4>("x", &h), Ok([0, 1, 0xab, 0xff]));
        assert!(from_hex::<4>("x", "0001ABFF").is_err());
        assert!(from_hex::<4>("x", "0001ab").is_err());
        assert_eq!(format_units(123456, 4), "12.3456");
        assert_eq!(format_units(5, 3), "0.005");
        assert_eq!(format_units(7, 0), "7");
    }
}
