//! Property tests of the proofs: every proof verifies, and tampering with any part of a claim
//! fails — with the one exception RFC 6962 has by design, stated exactly: the hashes do not
//! encode the tree size, so a proof checked under a different size (or index) verifies
//! precisely when the verifier's steps for that size are the same as for the true one
//! (the same hashes combined in the same order). The sizes a verifier trusts come from
//! signed checkpoints.

use kinko_audit::{
    consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion,
};
use proptest::prelude::*;

/// Distinct leaves (so that no two subtrees hash alike and "tampering fails" is exact).
fn leaves(n: u64, salt: u64) -> Vec<[u8; 32]> {
    (0..n)
        .map(|i| leaf_hash(&[i.to_be_bytes(), salt.to_be_bytes()].concat()))
        .collect()
}

/// The steps RFC 9162 §2.1.3.2 takes for an inclusion proof of `len` hashes: for each hash,
/// whether it goes on the left. `None` where the algorithm fails whatever the hashes.
fn inclusion_steps(index: u64, size: u64, len: usize) -> Option<Vec<bool>> {
    if index >= size {
        return None;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut steps = Vec::new();
    for _ in 0..len {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            steps.push(true);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            steps.push(false);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(steps)
}

#[derive(Debug, PartialEq)]
enum ConsistencySteps {
    Equal,
    FromEmpty,
    /// Whether the old root starts the path, then for each further hash whether it updates
    /// both running roots (true) or only the new one.
    Path(bool, Vec<bool>),
}

/// The steps RFC 9162 §2.1.4.2 (and the crate's cases around it) take for a consistency
/// proof of `len` hashes; `None` where it fails whatever the hashes.
fn consistency_steps(old: u64, new: u64, len: usize) -> Option<ConsistencySteps> {
    if old > new {
        return None;
    }
    if old == new {
        return (len == 0).then_some(ConsistencySteps::Equal);
    }
    if old == 0 {
        return (len == 0).then_some(ConsistencySteps::FromEmpty);
    }
    if len == 0 {
        return None;
    }
    let prepended = old.is_power_of_two();
    let rest = if prepended { len } else { len - 1 };
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let mut steps = Vec::new();
    for _ in 0..rest {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            steps.push(true);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            steps.push(false);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(ConsistencySteps::Path(prepended, steps))
}

fn tree_and_index() -> impl Strategy<Value = (u64, u64, u64)> {
    (1u64..=300, any::<u64>()).prop_flat_map(|(n, salt)| (Just(n), 0..n, Just(salt)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn inclusion_proofs_verify_and_tampering_fails(
        (n, index, salt) in tree_and_index(),
        bits in proptest::collection::vec(0usize..256, 64),
        root_bit in 0usize..256,
        leaf_bit in 0usize..256,
    ) {
        let l = leaves(n, salt);
        let r = root(&l);
        let leaf = l[index as usize];
        let proof = inclusion_proof(&l, index);
        prop_assert!(verify_inclusion(&leaf, index, n, &proof, &r));
        let steps = inclusion_steps(index, n, proof.len());
        prop_assert!(steps.is_some());

        for (i, bit) in bits.iter().take(proof.len()).enumerate() {
            let mut bad = proof.clone();
            bad[i][bit / 8] ^= 1 << (bit % 8);
            prop_assert!(!verify_inclusion(&leaf, index, n, &bad, &r), "proof[{}] bit {}", i, bit);
        }
        let mut bad_root = r;
        bad_root[root_bit / 8] ^= 1 << (root_bit % 8);
        prop_assert!(!verify_inclusion(&leaf, index, n, &proof, &bad_root));
        let mut bad_leaf = leaf;
        bad_leaf[leaf_bit / 8] ^= 1 << (leaf_bit % 8);
        prop_assert!(!verify_inclusion(&bad_leaf, index, n, &proof, &r));
        let mut longer = proof.clone();
        longer.push(r);
        prop_assert!(!verify_inclusion(&leaf, index, n, &longer, &r));
        if !proof.is_empty() {
            prop_assert!(!verify_inclusion(&leaf, index, n, &proof[1..], &r));
        }

        for bit in 0..64 {
            let i2 = index ^ (1 << bit);
            prop_assert_eq!(
                verify_inclusion(&leaf, i2, n, &proof, &r),
                inclusion_steps(i2, n, proof.len()) == steps,
                "index {} -> {}", index, i2
            );
            let n2 = n ^ (1 << bit);
            prop_assert_eq!(
                verify_inclusion(&leaf, index, n2, &proof, &r),
                inclusion_steps(index, n2, proof.len()) == steps,
                "size {} -> {}", n, n2
            );
        }
    }

    #[test]
    fn consistency_proofs_verify_and_tampering_fails(
        (n, old, salt) in tree_and_index().prop_map(|(n, i, s)| (n, i + 1, s)),
        bits in proptest::collection::vec(0usize..256, 64),
        root_bits in (0usize..256, 0usize..256),
    ) {
        let l = leaves(n, salt);
        let r_new = root(&l);
        let r_old = root(&l[..old as usize]);
        let proof = consistency_proof(&l, old, n);
        prop_assert!(verify_consistency(old, n, &r_old, &r_new, &proof));
        let steps = consistency_steps(old, n, proof.len());
        prop_assert!(steps.is_some());

        for (i, bit) in bits.iter().take(proof.len()).enumerate() {
            let mut bad = proof.clone();
            bad[i][bit / 8] ^= 1 << (bit % 8);
            prop_assert!(!verify_consistency(old, n, &r_old, &r_new, &bad), "proof[{}] bit {}", i, bit);
        }
        let mut bad = r_old;
        bad[root_bits.0 / 8] ^= 1 << (root_bits.0 % 8);
        prop_assert!(!verify_consistency(old, n, &bad, &r_new, &proof));
        let mut bad = r_new;
        bad[root_bits.1 / 8] ^= 1 << (root_bits.1 % 8);
        prop_assert!(!verify_consistency(old, n, &r_old, &bad, &proof));
        let mut longer = proof.clone();
        longer.push(r_new);
        prop_assert!(!verify_consistency(old, n, &r_old, &r_new, &longer));
        if !proof.is_empty() {
            prop_assert!(!verify_consistency(old, n, &r_old, &r_new, &proof[1..]));
            prop_assert!(!verify_consistency(old, n, &r_old, &r_new, &proof[..proof.len() - 1]));
        }

        for bit in 0..64 {
            let o2 = old ^ (1 << bit);
            prop_assert_eq!(
                verify_consistency(o2, n, &r_old, &r_new, &proof),
                consistency_steps(o2, n, proof.len()) == steps,
                "old size {} -> {}", old, o2
            );
            let n2 = n ^ (1 << bit);
            prop_assert_eq!(
                verify_consistency(old, n2, &r_old, &r_new, &proof),
                consistency_steps(old, n2, proof.len()) == steps,
                "new size {} -> {}", n, n2
            );
        }
    }
}

/// The exception is real, so it is worth seeing once: a proof of leaf 0 in the 5-leaf tree
/// also "verifies" under size 7 (one bit flipped), because the verifier's steps are the
/// same. A root is only meaningful with the size it was signed with.
#[test]
fn a_size_is_not_bound_by_the_hashes() {
    let l = leaves(5, 9);
    let r = root(&l);
    let proof = inclusion_proof(&l, 0);
    assert!(verify_inclusion(&l[0], 0, 5, &proof, &r));
    assert!(verify_inclusion(&l[0], 0, 7, &proof, &r));
    assert!(!verify_inclusion(&l[0], 0, 4, &proof, &r));
}
