//! Known answers: the Certificate Transparency test data (eight leaves), its roots for sizes
//! 0..=8 and its inclusion and consistency proofs, as published in
//! transparency-dev/merkle `proof/verify_test.go` (the same data as google/
//! certificate-transparency `cpp/merkletree/merkle_tree_test.cc`). Indexes there are
//! 1-based (`{1, 8}` is leaf index 0 of the 8-leaf tree); here they are 0-based.

use kinko_audit::{
    consistency_proof, inclusion_proof, leaf_hash, node_hash, root, verify_consistency, verify_inclusion,
    EMPTY_ROOT,
};

fn h(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).unwrap();
    out
}

pub fn ct_leaves() -> Vec<[u8; 32]> {
    let data: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    data.iter().map(|d| leaf_hash(d)).collect()
}

/// Roots of the trees of the first 0..=8 leaves.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf index, tree size, proof).
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (old size, new size, proof).
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

/// A claim to check: two sizes (or index and size), two hashes (leaf and root, or old and
/// new root), a proof, and what was changed.
type Probe = (u64, u64, [u8; 32], [u8; 32], Vec<[u8; 32]>, &'static str);

fn proof(p: &[&str]) -> Vec<[u8; 32]> {
    p.iter().map(|s| h(s)).collect()
}

#[test]
fn empty_and_one_leaf_roots() {
    // SHA-256("") and SHA-256(0x00): the empty tree, and the tree of the one empty leaf.
    assert_eq!(root(&[]), h(ROOTS[0]));
    assert_eq!(EMPTY_ROOT, h(ROOTS[0]));
    assert_eq!(leaf_hash(b""), h(ROOTS[1]));
    assert_eq!(root(&[leaf_hash(b"")]), h(ROOTS[1]));
}

#[test]
fn roots_of_every_prefix() {
    let leaves = ct_leaves();
    for n in 0..=8 {
        assert_eq!(root(&leaves[..n]), h(ROOTS[n]), "size {n}");
    }
    assert_eq!(
        node_hash(&leaves[0], &leaves[1]),
        h(ROOTS[2]),
        "a two-leaf root is one node hash"
    );
}

#[test]
fn published_inclusion_proofs() {
    let leaves = ct_leaves();
    for (index, size, p) in INCLUSION {
        let want = proof(p);
        let tree = &leaves[..size as usize];
        assert_eq!(inclusion_proof(tree, index), want, "{index} in {size}");
        let root = h(ROOTS[size as usize]);
        let leaf = leaves[index as usize];
        assert!(
            verify_inclusion(&leaf, index, size, &want, &root),
            "{index} in {size}"
        );

        // The probes of the published verifier tests, all of which must fail.
        let some = h("abacaba000000000000000000000000000000000000000000060061e00123456");
        let mut probes: Vec<Probe> = vec![
            (index.wrapping_sub(1), size, leaf, root, want.clone(), "index - 1"),
            (index + 1, size, leaf, root, want.clone(), "index + 1"),
            (index ^ 2, size, leaf, root, want.clone(), "index ^ 2"),
            (index, size * 2, leaf, root, want.clone(), "size * 2"),
            (index, size / 2, leaf, root, want.clone(), "size / 2"),
            (
                index,
                size,
                leaf_hash(b"WrongLeaf"),
                root,
                want.clone(),
                "wrong leaf",
            ),
            (index, size, leaf, EMPTY_ROOT, want.clone(), "empty root"),
            (index, size, leaf, some, want.clone(), "random root"),
            (
                index,
                size,
                leaf,
                root,
                [want.clone(), vec![[0; 32]]].concat(),
                "trailing zeros",
            ),
            (
                index,
                size,
                leaf,
                root,
                [want.clone(), vec![root]].concat(),
                "trailing root",
            ),
            (
                index,
                size,
                leaf,
                root,
                [vec![[0; 32]], want.clone()].concat(),
                "preceding zeros",
            ),
            (
                index,
                size,
                leaf,
                root,
                [vec![root], want.clone()].concat(),
                "preceding root",
            ),
        ];
        for i in 0..want.len() {
            let mut bad = want.clone();
            bad[i][0] ^= 8;
            probes.push((index, size, leaf, root, bad, "modified element"));
        }
        if !want.is_empty() {
            probes.push((
                index,
                size,
                leaf,
                root,
                want[..want.len() - 1].to_vec(),
                "removed",
            ));
        }
        if want.len() > 1 {
            let mut bad = want.clone();
            bad.insert(1, some);
            probes.push((index, size, leaf, root, bad, "inserted"));
        }
        for (i, s, l, r, p, what) in probes {
            assert!(!verify_inclusion(&l, i, s, &p, &r), "{what}: {index} in {size}");
        }
    }
}

#[test]
fn published_consistency_proofs() {
    let leaves = ct_leaves();
    for (old, new, p) in CONSISTENCY {
        let want = proof(p);
        assert_eq!(
            consistency_proof(&leaves[..new as usize], old, new),
            want,
            "{old}->{new}"
        );
        assert_eq!(consistency_proof(&leaves, old, new), want, "{old}->{new} in 8");
        let r1 = h(ROOTS[old as usize]);
        let r2 = h(ROOTS[new as usize]);
        assert!(verify_consistency(old, new, &r1, &r2, &want), "{old}->{new}");
        if want.is_empty() {
            continue;
        }
        let wrong = h("abacaba000000000000000000000000000000000000000000060061e00123456");
        let mut probes: Vec<Probe> = vec![
            (old - 1, new, r1, r2, want.clone(), "old - 1"),
            (old + 1, new, r1, r2, want.clone(), "old + 1"),
            (old ^ 2, new, r1, r2, want.clone(), "old ^ 2"),
            (old, new * 2, r1, r2, want.clone(), "new * 2"),
            (old, new / 2, r1, r2, want.clone(), "new / 2"),
            (old, new, wrong, r2, want.clone(), "wrong old root"),
            (old, new, r1, wrong, want.clone(), "wrong new root"),
            (old, new, r2, r1, want.clone(), "swapped roots"),
            (old, new, r1, r2, vec![], "empty proof"),
            (
                old,
                new,
                r1,
                r2,
                [want.clone(), vec![[0; 32]]].concat(),
                "trailing zeros",
            ),
            (
                old,
                new,
                r1,
                r2,
                [want.clone(), vec![r1]].concat(),
                "trailing old root",
            ),
            (
                old,
                new,
                r1,
                r2,
                [want.clone(), vec![r2]].concat(),
                "trailing new root",
            ),
            (
                old,
                new,
                r1,
                r2,
                [vec![[0; 32]], want.clone()].concat(),
                "preceding zeros",
            ),
            (
                old,
                new,
                r1,
                r2,
                [vec![r1], want.clone()].concat(),
                "preceding old root",
            ),
            (
                old,
                new,
                r1,
                r2,
                [vec![r2], want.clone()].concat(),
                "preceding new root",
            ),
            (
                old,
                new,
                r1,
                r2,
                [vec![want[0]], want.clone()].concat(),
                "preceding proof[0]",
            ),
            (old, new, r1, r2, want[..want.len() - 1].to_vec(), "truncated"),
        ];
        for i in 0..want.len() {
            let mut bad = want.clone();
            bad[i][0] ^= 16;
            probes.push((old, new, r1, r2, bad, "modified element"));
        }
        for (o, n, a, b, p, what) in probes {
            assert!(!verify_consistency(o, n, &a, &b, &p), "{what}: {old}->{new}");
        }
    }
}

/// The published verifier's table of trivial cases, with one deliberate difference: a
/// consistency claim from size 0 must carry the empty tree's root (the published verifier
/// accepts any).
#[test]
fn trivial_consistency_cases() {
    let a = [1u8; 32];
    let b = [2u8; 32];
    let e = EMPTY_ROOT;
    for (old, new, r1, r2, proof, ok) in [
        (0, 0, a, b, vec![], false),
        (1, 1, a, b, vec![], false),
        (0, 0, a, a, vec![], true),
        (0, 1, e, b, vec![], true),
        (0, 1, a, b, vec![], false),
        (1, 1, b, b, vec![], true),
        (1, 0, a, b, vec![], false),
        (2, 1, a, b, vec![], false),
        (1, 2, a, b, vec![], false),
        (0, 0, e, b, vec![], false),
        (1, 1, e, b, vec![], false),
        (0, 0, e, e, vec![e], false),
        (0, 1, e, e, vec![e], false),
        (1, 1, e, e, vec![e], false),
    ] {
        assert_eq!(
            verify_consistency(old, new, &r1, &r2, &proof),
            ok,
            "{old}->{new} {proof:?}"
        );
    }
}
