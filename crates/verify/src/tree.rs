//! Building a Merkle sum tree (the exchange's side) and cutting inclusion proofs from it.

use crate::{
    leaf_hash, node_hash, pad_hash, to_hex, Hash, InclusionProof, Root, Step, VerifyError, PROOF_FORMAT,
    VERSION,
};
use std::fmt;

/// Per-user salt derivation context (BLAKE3 `derive_key`).
pub const SALT_CONTEXT: &str = "kinko proof of liabilities 2026-12 per-user salt v1";

/// A customer's salt in one proof: keyed BLAKE3 under a server secret (derived from the master
/// key) over the asset, the proof's sequence and the user id. Deterministic, so the server can
/// hand the same salt out again, and unlinkable across proofs and assets without the secret.
pub fn salt(secret: &[u8; 32], asset: &str, sequence: u64, user: u64) -> [u8; 32] {
    let key = blake3::derive_key(SALT_CONTEXT, secret);
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(&u64::try_from(asset.len()).unwrap_or(u64::MAX).to_be_bytes());
    h.update(asset.as_bytes());
    h.update(&sequence.to_be_bytes());
    h.update(&user.to_be_bytes());
    *h.finalize().as_bytes()
}

/// One customer's input: user id, salt and balance (signed, so that a negative balance can be
/// refused rather than be unrepresentable upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafInput {
    pub user: u64,
    pub salt: [u8; 32],
    pub balance: i128,
}

/// Why a tree was not built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    NegativeBalance { user: u64, balance: i128 },
    Overflow,
    DuplicateUser(u64),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NegativeBalance { user, balance } => write!(
                f,
                "user {user} has a negative balance ({balance}): a proof of liabilities is not built over one"
            ),
            BuildError::Overflow => f.write_str("the balances' sum overflows 2^128-1: no proof is built"),
            BuildError::DuplicateUser(u) => {
                write!(f, "user {u} appears twice: every customer has exactly one leaf")
            }
        }
    }
}

impl std::error::Error for BuildError {}

struct Leaf {
    user: u64,
    salt: [u8; 32],
}

/// A built tree: every level's nodes (hash, sum), leaves first.
pub struct Tree {
    leaves: Vec<Leaf>,
    levels: Vec<Vec<(Hash, u128)>>,
    /// (user, leaf index), sorted by user.
    by_user: Vec<(u64, u32)>,
}

/// Builds the tree: refuses a negative balance, a user twice, and a total above `u128::MAX`.
/// Leaves are ordered by leaf hash (salted, so the order says nothing about users).
pub fn build(mut inputs: Vec<LeafInput>) -> Result<Tree, BuildError> {
    if let Some(bad) = inputs.iter().find(|l| l.balance < 0) {
        return Err(BuildError::NegativeBalance {
            user: bad.user,
            balance: bad.balance,
        });
    }
    inputs.sort_unstable_by_key(|l| l.user);
    if let Some(w) = inputs.windows(2).find(|w| w[0].user == w[1].user) {
        return Err(BuildError::DuplicateUser(w[0].user));
    }
    if u32::try_from(inputs.len()).is_err() {
        return Err(BuildError::Overflow);
    }
    let mut hashed: Vec<(Hash, u128, Leaf)> = inputs
        .into_iter()
        .map(|l| {
            // Checked above: not negative.
            let balance = u128::try_from(l.balance).unwrap_or(0);
            (
                leaf_hash(&l.salt, l.user),
                balance,
                Leaf {
                    user: l.user,
                    salt: l.salt,
                },
            )
        })
        .collect();
    hashed.sort_unstable_by_key(|a| a.0);
    let mut level0 = Vec::with_capacity(hashed.len());
    let mut leaves = Vec::with_capacity(hashed.len());
    for (h, b, l) in hashed {
        level0.push((h, b));
        leaves.push(l);
    }
    let mut by_user: Vec<(u64, u32)> = leaves
        .iter()
        .enumerate()
        .map(|(i, l)| (l.user, u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
    by_user.sort_unstable();
    let mut levels = vec![level0];
    let pad = pad_hash();
    while levels.last().is_some_and(|l| l.len() > 1) {
        let below = levels.last().map(Vec::as_slice).unwrap_or(&[]);
        let mut up = Vec::with_capacity(below.len().div_ceil(2));
        for pair in below.chunks(2) {
            let (lh, ls) = pair[0];
            let (rh, rs) = pair.get(1).copied().unwrap_or((pad, 0));
            let sum = ls.checked_add(rs).ok_or(BuildError::Overflow)?;
            up.push((node_hash(&lh, ls, &rh, rs), sum));
        }
        levels.push(up);
    }
    Ok(Tree {
        leaves,
        levels,
        by_user,
    })
}

impl Tree {
    /// Number of leaves.
    pub fn len(&self) -> u64 {
        u64::try_from(self.leaves.len()).unwrap_or(u64::MAX)
    }
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }
    /// The root node (the padding node for an empty tree).
    pub fn root(&self) -> (Hash, u128) {
        self.levels
            .last()
            .and_then(|l| l.first().copied())
            .unwrap_or((pad_hash(), 0))
    }
    /// The leaf index of a user.
    pub fn index_of(&self, user: u64) -> Option<u64> {
        self.by_user
            .binary_search_by_key(&user, |e| e.0)
            .ok()
            .map(|i| u64::from(self.by_user[i].1))
    }
    /// Users in leaf order with their salt and balance.
    pub fn leaves(&self) -> impl Iterator<Item = (u64, [u8; 32], u128)> + '_ {
        self.leaves
            .iter()
            .zip(self.levels[0].iter())
            .map(|(l, (_, b))| (l.user, l.salt, *b))
    }
    /// The root statement, not yet signed (`public_key` and `signature` empty).
    pub fn unsigned_root(&self, asset: &str, decimals: u8, sequence: u64, time: &str) -> Root {
        let (h, total) = self.root();
        Root {
            asset: asset.to_owned(),
            decimals,
            sequence,
            time: time.to_owned(),
            leaves: self.len(),
            root_hash: to_hex(&h),
            total: total.to_string(),
            key: String::new(),
            public_key: String::new(),
            signature: String::new(),
        }
    }
    /// The inclusion proof of `user`, under `root` (which must be this tree's signed root).
    pub fn proof(&self, root: &Root, user: u64) -> Option<InclusionProof> {
        let index = self.index_of(user)?;
        let i = usize::try_from(index).ok()?;
        let leaf = &self.leaves[i];
        let mut path = Vec::with_capacity(self.levels.len());
        let mut at = i;
        for level in &self.levels[..self.levels.len() - 1] {
            let (h, s) = level.get(at ^ 1).copied().unwrap_or((pad_hash(), 0));
            path.push(Step {
                hash: to_hex(&h),
                sum: s.to_string(),
            });
            at >>= 1;
        }
        Some(InclusionProof {
            format: PROOF_FORMAT.to_owned(),
            version: VERSION,
            root: root.clone(),
            user,
            salt: to_hex(&leaf.salt),
            balance: self.levels[0][i].1.to_string(),
            index,
            path,
        })
    }
}

/// Signs a root with `key`, recording which kind of key it is.
pub fn sign_root(root: &mut Root, kind: &str, key: &ed25519_dalek::SigningKey) -> Result<(), VerifyError> {
    use ed25519_dalek::Signer;
    root.key = kind.to_owned();
    root.public_key = to_hex(key.verifying_key().as_bytes());
    let statement = root.statement()?;
    root.signature = to_hex(&key.sign(&statement).to_bytes());
    Ok(())
}
