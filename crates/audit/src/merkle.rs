//! RFC 6962 Merkle tree hashing, proofs and their verification.
//!
//! - leaf hash `SHA-256(0x00 ‖ data)`, node hash `SHA-256(0x01 ‖ left ‖ right)`;
//! - `MTH` of `n > 1` leaves splits at `k`, the largest power of two smaller than `n`
//!   (RFC 6962 §2.1); the empty tree's hash is `SHA-256("")`;
//! - proofs are generated as RFC 6962 §2.1.1 (`PATH`) and §2.1.2 (`PROOF` / `SUBPROOF`) define
//!   them, and verified with the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2.
//!
//! Proof generation is written once, over [`Nodes`] (something that can hash an aligned
//! perfect subtree): the free functions hash plain slices ([`Flat`], `O(n)` per proof, nothing
//! kept), and the log keeps a [`Tree`] that remembers larger subtrees so that proofs cost
//! `O(log n)` hashes.
//!
//! A verified proof binds the leaf (or the old root) to the root; it does not bind the tree
//! size — no RFC 6962 hash does. Sizes are bound by the signed checkpoint that carries them.

use sha2::{Digest, Sha256};

/// `SHA-256("")`: the root of the empty tree.
pub const EMPTY_ROOT: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27,
    0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Longest proof any tree of at most `u64::MAX` leaves has (one hash per level).
pub const PROOF_HASHES_MAX: usize = 64;

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ l ‖ r)`.
pub fn node_hash(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// The Merkle tree hash (`MTH`) of a list of leaf hashes; [`EMPTY_ROOT`] for none.
pub fn root(leaves: &[[u8; 32]]) -> [u8; 32] {
    mth(&Flat(leaves), 0, len64(leaves))
}

/// The audit path (`PATH(index, D[n])`, RFC 6962 §2.1.1) of leaf `index` in the tree of all
/// `leaves`, deepest sibling first. Empty when `index` is not a leaf of the tree (such a
/// request has no proof, and an empty proof verifies for no index of a tree of two or more).
pub fn inclusion_proof(leaves: &[[u8; 32]], index: u64) -> Vec<[u8; 32]> {
    let n = len64(leaves);
    let mut out = Vec::new();
    if index < n {
        path(&Flat(leaves), index, 0, n, &mut out);
    }
    out
}

/// The consistency proof (`PROOF(old_size, D[new_size])`, RFC 6962 §2.1.2) between the tree
/// of the first `old_size` leaves and the tree of the first `new_size`. Empty when
/// `old_size` is 0 or equal to `new_size` (nothing to prove), and when the sizes are not
/// `old_size <= new_size <= leaves.len()` (no proof exists).
pub fn consistency_proof(leaves: &[[u8; 32]], old_size: u64, new_size: u64) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    if 0 < old_size && old_size < new_size && new_size <= len64(leaves) {
        subproof(&Flat(leaves), old_size, 0, new_size, true, &mut out);
    }
    out
}

/// Checks that `proof` proves leaf `leaf_hash` at `index` in a tree of `tree_size` leaves
/// whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &[u8; 32],
    index: u64,
    tree_size: u64,
    proof: &[[u8; 32]],
    root: &[u8; 32],
) -> bool {
    if index >= tree_size || proof.len() > PROOF_HASHES_MAX {
        return false;
    }
    let mut fn_ = index;
    let mut sn = tree_size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// Checks that `proof` proves the tree of `old_size` leaves with root `old_root` is a prefix
/// of the tree of `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2).
///
/// The cases the RFC leaves to the caller: equal sizes need an empty proof and equal roots;
/// `old_size == 0` needs an empty proof and `old_root` equal to [`EMPTY_ROOT`] (the empty tree
/// is a prefix of every tree, so nothing about `new_root` is proven); `old_size > new_size`
/// never verifies.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &[u8; 32],
    new_root: &[u8; 32],
    proof: &[[u8; 32]],
) -> bool {
    if old_size > new_size || proof.len() > PROOF_HASHES_MAX {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty() && *old_root == EMPTY_ROOT;
    }
    // 1. An empty proof fails.
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    // 2. If old_size is a power of two, old_root is the path's first value.
    let (start, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        (first, rest)
    };
    // 3.-4.
    let mut fn_ = old_size - 1;
    let mut sn = new_size - 1;
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5.
    let mut fr = *start;
    let mut sr = *start;
    // 6.
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // 7.
    fr == *old_root && sr == *new_root && sn == 0
}

fn len64(leaves: &[[u8; 32]]) -> u64 {
    // A slice never holds more than isize::MAX elements.
    leaves.len() as u64
}

/// `usize` of a leaf position already checked against a slice's length.
fn at(i: u64) -> usize {
    usize::try_from(i).expect("a position below a slice length fits usize")
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Hashes of aligned perfect subtrees: `perfect(level, k)` is the MTH of leaves
/// `[k·2^level, (k+1)·2^level)`, which the caller guarantees exist.
pub(crate) trait Nodes {
    fn perfect(&self, level: u32, k: u64) -> [u8; 32];

    /// `MTH(D[start..end])` if it is known without hashing (a node on the right edge).
    fn known(&self, _start: u64, _end: u64) -> Option<[u8; 32]> {
        None
    }
}

/// A plain slice of leaf hashes: every subtree is hashed from its leaves.
pub(crate) struct Flat<'a>(pub(crate) &'a [[u8; 32]]);

impl Nodes for Flat<'_> {
    fn perfect(&self, level: u32, k: u64) -> [u8; 32] {
        if level == 0 {
            return self.0[at(k)];
        }
        node_hash(
            &self.perfect(level - 1, 2 * k),
            &self.perfect(level - 1, 2 * k + 1),
        )
    }
}

/// `MTH(D[start..end])`. RFC subtrees start at a multiple of the power of two at or above
/// their length, so a perfect one is always aligned; an unaligned range is split anyway.
pub(crate) fn mth<N: Nodes>(nodes: &N, start: u64, end: u64) -> [u8; 32] {
    let n = end - start;
    if n == 0 {
        return EMPTY_ROOT;
    }
    if let Some(h) = nodes.known(start, end) {
        return h;
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        let level = n.trailing_zeros();
        return nodes.perfect(level, start >> level);
    }
    if n == 1 {
        return nodes.perfect(0, start);
    }
    let k = split(n);
    node_hash(&mth(nodes, start, start + k), &mth(nodes, start + k, end))
}

/// `PATH(m, D[start..end])` with `m` relative to `start`, appended deepest first.
pub(crate) fn path<N: Nodes>(nodes: &N, m: u64, start: u64, end: u64, out: &mut Vec<[u8; 32]>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(nodes, m, start, start + k, out);
        out.push(mth(nodes, start + k, end));
    } else {
        path(nodes, m - k, start + k, end, out);
        out.push(mth(nodes, start, start + k));
    }
}

/// `SUBPROOF(m, D[start..end], b)` with `m` relative to `start`.
pub(crate) fn subproof<N: Nodes>(nodes: &N, m: u64, start: u64, end: u64, b: bool, out: &mut Vec<[u8; 32]>) {
    let n = end - start;
    if m == n {
        if !b {
            out.push(mth(nodes, start, end));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(nodes, m, start, start + k, b, out);
        out.push(mth(nodes, start + k, end));
    } else {
        subproof(nodes, m - k, start + k, end, false, out);
        out.push(mth(nodes, start, start + k));
    }
}

/// Lowest subtree level whose hashes a [`Tree`] keeps: smaller subtrees (at most
/// `2^CACHE_LEVEL_MIN - 1` hashes each) are hashed again from the leaves when a proof needs
/// them. At 4 the cache adds about 4 bytes per leaf to the 32 of the leaf hash itself.
pub(crate) const CACHE_LEVEL_MIN: u32 = 4;

/// A growing tree: leaf hashes, the hashes of aligned perfect subtrees of at least
/// `2^CACHE_LEVEL_MIN` leaves, the frontier (the perfect subtrees the current size
/// decomposes into, largest first) and the right edge, so that an append costs `O(log n)`
/// hashes, the root is always at hand, and a proof against the current tree needs at most
/// `2^CACHE_LEVEL_MIN` hashes per level below the cached ones.
#[derive(Clone, Debug)]
pub(crate) struct Tree {
    leaves: Vec<[u8; 32]>,
    /// `cache[i]`: the aligned perfect subtrees of `2^(CACHE_LEVEL_MIN + i)` leaves, in order.
    cache: Vec<Vec<[u8; 32]>>,
    frontier: Vec<[u8; 32]>,
    /// `edge[j]`: MTH from the start of `frontier[j]` to the end — the nodes on the right
    /// edge of the current tree; `edge[0]` is the root (absent when the tree is empty).
    edge: Vec<[u8; 32]>,
}

impl Tree {
    pub(crate) fn new() -> Tree {
        Tree {
            leaves: Vec::new(),
            cache: Vec::new(),
            frontier: Vec::new(),
            edge: Vec::new(),
        }
    }

    pub(crate) fn size(&self) -> u64 {
        len64(&self.leaves)
    }

    pub(crate) fn root(&self) -> [u8; 32] {
        self.edge.first().copied().unwrap_or(EMPTY_ROOT)
    }

    pub(crate) fn leaf(&self, index: u64) -> Option<[u8; 32]> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.leaves.get(i).copied())
    }

    pub(crate) fn push(&mut self, leaf: [u8; 32]) {
        let before = self.size();
        self.leaves.push(leaf);
        // Appending carries like a binary increment: every trailing one bit of the old size
        // is a perfect subtree that now merges with the new one.
        let mut h = leaf;
        let mut level = 0u32;
        let mut carry = before;
        while carry & 1 == 1 {
            let left = self
                .frontier
                .pop()
                .expect("the frontier holds one subtree per set bit of the size");
            h = node_hash(&left, &h);
            level += 1;
            if level >= CACHE_LEVEL_MIN {
                let i = (level - CACHE_LEVEL_MIN) as usize;
                if self.cache.len() <= i {
                    self.cache.resize_with(i + 1, Vec::new);
                }
                self.cache[i].push(h);
            }
            carry >>= 1;
        }
        self.frontier.push(h);
        assert_eq!(
            self.frontier.len(),
            self.size().count_ones() as usize,
            "frontier out of step with the tree size"
        );
        self.edge.clear();
        self.edge.resize(self.frontier.len(), h);
        for j in (0..self.frontier.len() - 1).rev() {
            self.edge[j] = node_hash(&self.frontier[j], &self.edge[j + 1]);
        }
    }

    /// The root of the tree of the first `size` leaves.
    pub(crate) fn root_at(&self, size: u64) -> Option<[u8; 32]> {
        if size > self.size() {
            return None;
        }
        Some(mth(self, 0, size))
    }

    pub(crate) fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<[u8; 32]>> {
        if index >= size || size > self.size() {
            return None;
        }
        let mut out = Vec::new();
        path(self, index, 0, size, &mut out);
        Some(out)
    }

    pub(crate) fn consistency_proof(&self, old: u64, new: u64) -> Option<Vec<[u8; 32]>> {
        if old > new || new > self.size() {
            return None;
        }
        let mut out = Vec::new();
        if 0 < old && old < new {
            subproof(self, old, 0, new, true, &mut out);
        }
        Some(out)
    }
}

impl Nodes for Tree {
    fn perfect(&self, level: u32, k: u64) -> [u8; 32] {
        if level == 0 {
            return self.leaves[at(k)];
        }
        if level >= CACHE_LEVEL_MIN {
            let cached = self
                .cache
                .get((level - CACHE_LEVEL_MIN) as usize)
                .and_then(|c| usize::try_from(k).ok().and_then(|k| c.get(k)));
            if let Some(h) = cached {
                return *h;
            }
            // Every complete aligned subtree of a cached level is cached as it completes.
            unreachable!("perfect subtree at level {level}, index {k} is not complete");
        }
        node_hash(
            &self.perfect(level - 1, 2 * k),
            &self.perfect(level - 1, 2 * k + 1),
        )
    }

    fn known(&self, start: u64, end: u64) -> Option<[u8; 32]> {
        // [start, size) is on the right edge when `start` is the size with its lowest set
        // bits cleared: the remainder lies below start's lowest set bit.
        let rest = self.size().checked_sub(start)?;
        if end != self.size() || (start != 0 && rest >= 1 << start.trailing_zeros()) {
            return None;
        }
        self.edge.get(start.count_ones() as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<[u8; 32]> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, <[u8; 32]>::from(Sha256::digest(b"")));
        assert_eq!(root(&[]), EMPTY_ROOT);
    }

    #[test]
    fn split_is_largest_power_of_two_below() {
        for (n, k) in [
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 4),
            (8, 4),
            (9, 8),
            (u64::MAX, 1 << 63),
        ] {
            assert_eq!(split(n), k, "n = {n}");
        }
    }

    #[test]
    fn tree_agrees_with_flat_at_every_size() {
        let all = leaves(300);
        let mut tree = Tree::new();
        assert_eq!(tree.root(), EMPTY_ROOT);
        for (i, leaf) in all.iter().enumerate() {
            tree.push(*leaf);
            let n = i as u64 + 1;
            assert_eq!(tree.root(), root(&all[..=i]), "size {n}");
            assert_eq!(tree.size(), n);
        }
        for size in [0u64, 1, 15, 16, 17, 255, 256, 257, 299, 300] {
            let flat = &all[..size as usize];
            assert_eq!(tree.root_at(size), Some(root(flat)), "size {size}");
            for index in [0, size / 3, size.saturating_sub(1)] {
                if index < size {
                    assert_eq!(
                        tree.inclusion_proof(index, size),
                        Some(inclusion_proof(flat, index)),
                        "index {index} size {size}"
                    );
                }
                assert_eq!(
                    tree.consistency_proof(index, size),
                    Some(consistency_proof(flat, index, size)),
                    "old {index} size {size}"
                );
            }
        }
        assert_eq!(tree.root_at(301), None);
        assert_eq!(tree.inclusion_proof(300, 300), None);
        assert_eq!(tree.consistency_proof(3, 301), None);
        assert_eq!(tree.consistency_proof(4, 3), None);
    }

    #[test]
    fn cache_holds_every_complete_subtree() {
        let mut tree = Tree::new();
        for leaf in leaves(1000) {
            tree.push(leaf);
        }
        for (i, level) in tree.cache.iter().enumerate() {
            let width = 1u64 << (CACHE_LEVEL_MIN + i as u32);
            assert_eq!(level.len() as u64, 1000 / width, "level width {width}");
            for (k, h) in level.iter().enumerate() {
                let start = k as u64 * width;
                assert_eq!(*h, root(&tree.leaves[start as usize..(start + width) as usize]));
            }
        }
    }

    #[test]
    fn out_of_range_requests_give_empty_proofs() {
        let l = leaves(5);
        assert!(inclusion_proof(&l, 5).is_empty());
        assert!(inclusion_proof(&[], 0).is_empty());
        assert!(consistency_proof(&l, 3, 6).is_empty());
        assert!(consistency_proof(&l, 4, 3).is_empty());
        assert!(consistency_proof(&l, 0, 5).is_empty());
    }

    #[test]
    fn verifiers_refuse_impossible_sizes() {
        let h = leaf_hash(b"x");
        assert!(!verify_inclusion(&h, 0, 0, &[], &h));
        assert!(!verify_inclusion(&h, 1, 1, &[], &h));
        assert!(verify_inclusion(&h, 0, 1, &[], &h));
        assert!(!verify_inclusion(&h, 0, u64::MAX, &[h; 65], &h));
        assert!(!verify_consistency(2, 1, &h, &h, &[]));
        assert!(verify_consistency(0, 7, &EMPTY_ROOT, &h, &[]));
        assert!(!verify_consistency(0, 7, &h, &h, &[]));
        assert!(!verify_consistency(0, 7, &EMPTY_ROOT, &h, &[h]));
        assert!(verify_consistency(3, 3, &h, &h, &[]));
        assert!(!verify_consistency(3, 3, &h, &h, &[h]));
        assert!(!verify_consistency(3, 4, &h, &h, &[]));
        assert!(!verify_consistency(1, u64::MAX, &h, &h, &[h; 65]));
    }
}
