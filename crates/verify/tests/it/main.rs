//! The known attacks on a proof of liabilities, each refused by a named check; property tests
//! that any single-field change fails; and the `kinko-verify` binary run as a process.

use ed25519_dalek::SigningKey;
use kinko_verify::tree::{build, salt, sign_root, BuildError, LeafInput, Tree};
use kinko_verify::{
    verify, Expect, InclusionProof, Root, Roots, VerifyError, KEY_AUDIT, KEY_WITNESS, ROOTS_FORMAT, VERSION,
};
use proptest::prelude::*;

const SECRET: [u8; 32] = [7; 32];
const SEQ: u64 = 4242;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn inputs(balances: &[i128]) -> Vec<LeafInput> {
    balances
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let user = 100 + u64::try_from(i).unwrap();
            LeafInput {
                user,
                salt: salt(&SECRET, "LTC", SEQ, user),
                balance: b,
            }
        })
        .collect()
}

fn signed(tree: &Tree) -> Root {
    let mut root = tree.unsigned_root("LTC", 8, SEQ, "2023-11-14T22:13:20.000000Z");
    sign_root(&mut root, KEY_AUDIT, &key()).unwrap();
    root
}

fn setup(balances: &[i128]) -> (Tree, Root) {
    let tree = build(inputs(balances)).unwrap();
    let root = signed(&tree);
    (tree, root)
}

fn code(r: Result<kinko_verify::Verified, VerifyError>) -> &'static str {
    match r {
        Ok(_) => "OK",
        Err(e) => e.code(),
    }
}

#[test]
fn every_leaf_of_trees_of_every_small_size_verifies() {
    for n in 1..=17usize {
        let balances: Vec<i128> = (0..n).map(|i| i128::try_from(i * 1000 + 1).unwrap()).collect();
        let (tree, root) = setup(&balances);
        let total: u128 = balances.iter().map(|&b| u128::try_from(b).unwrap()).sum();
        assert_eq!(tree.root().1, total);
        for (i, &b) in balances.iter().enumerate() {
            let user = 100 + u64::try_from(i).unwrap();
            let p = tree.proof(&root, user).unwrap();
            let v = verify(
                &p,
                &Expect {
                    user: Some(user),
                    public_key: Some(&root.public_key),
                    published: None,
                },
            )
            .unwrap_or_else(|e| panic!("n={n} user={user}: {e}"));
            assert_eq!(v.balance, u128::try_from(b).unwrap());
            assert_eq!(v.total, total);
        }
    }
}

#[test]
fn an_empty_tree_has_the_padding_root_and_no_proofs() {
    let tree = build(Vec::new()).unwrap();
    assert_eq!(tree.root(), (kinko_verify::pad_hash(), 0));
    let root = signed(&tree);
    assert!(tree.proof(&root, 1).is_none());
    assert_eq!(kinko_verify::verify_root(&root), Ok(0));
}

/// The attack table: each row changes one thing an exchange (or anyone between it and the
/// customer) might change, and names the check that refuses it.
#[test]
fn attacks_are_refused_by_the_named_check() {
    let (tree, root) = setup(&[500, 1_000, 250, 4_000, 0, 75]);
    let user = 102;
    let good = tree.proof(&root, user).unwrap();
    let published = Roots {
        format: ROOTS_FORMAT.into(),
        version: VERSION,
        roots: vec![root.clone()],
    };
    let full = Expect {
        user: Some(user),
        public_key: Some(&root.public_key),
        published: Some(&published),
    };
    assert_eq!(code(verify(&good, &full)), "OK");

    type Tamper = fn(&mut InclusionProof);
    let rows: Vec<(&str, Tamper, &str)> = vec![
        (
            "tampered sibling hash",
            |p| {
                let mut h = p.path[0].hash.clone().into_bytes();
                h[0] = if h[0] == b'0' { b'1' } else { b'0' };
                p.path[0].hash = String::from_utf8(h).unwrap();
            },
            "ROOT_HASH_MISMATCH",
        ),
        (
            "tampered sibling sum (less liability shown)",
            |p| {
                let s: u128 = p.path[1].sum.parse().unwrap();
                p.path[1].sum = s.checked_sub(1).unwrap_or(1).to_string();
            },
            "ROOT_HASH_MISMATCH",
        ),
        (
            "negative sibling sum",
            |p| p.path[1].sum = "-100".into(),
            "NEGATIVE_BALANCE",
        ),
        (
            "negative own balance",
            |p| p.balance = "-1".into(),
            "NEGATIVE_BALANCE",
        ),
        (
            "sibling sum that overflows",
            |p| p.path[0].sum = u128::MAX.to_string(),
            "SUM_OVERFLOW",
        ),
        (
            "balance raised",
            |p| p.balance = "251".into(),
            "ROOT_HASH_MISMATCH",
        ),
        ("another salt", |p| p.salt = "00".repeat(32), "ROOT_HASH_MISMATCH"),
        ("index moved", |p| p.index ^= 1, "ROOT_HASH_MISMATCH"),
        (
            "index past the leaves",
            |p| p.index = p.root.leaves,
            "INDEX_OUT_OF_RANGE",
        ),
        (
            "a step dropped",
            |p| {
                p.path.pop();
            },
            "PATH_LENGTH",
        ),
        ("a step added", |p| p.path.push(p.path[0].clone()), "PATH_LENGTH"),
        (
            "total lowered in the root",
            |p| p.root.total = "1".into(),
            "TOTAL_MISMATCH",
        ),
        (
            "root hash replaced",
            |p| p.root.root_hash = "ab".repeat(32),
            "ROOT_HASH_MISMATCH",
        ),
        (
            "sequence changed after signing",
            |p| p.root.sequence += 1,
            "BAD_SIGNATURE",
        ),
        (
            "asset changed after signing",
            |p| p.root.asset = "BTC".into(),
            "BAD_SIGNATURE",
        ),
        (
            "signature of another statement",
            |p| {
                let mut other = p.root.clone();
                other.sequence += 1;
                sign_root(&mut other, KEY_AUDIT, &key()).unwrap();
                p.root.signature = other.signature;
            },
            "BAD_SIGNATURE",
        ),
        (
            "re-signed by another key",
            |p| {
                sign_root(&mut p.root, KEY_AUDIT, &SigningKey::from_bytes(&[3; 32])).unwrap();
            },
            "KEY_MISMATCH",
        ),
        (
            "unknown key kind",
            |p| p.root.key = "mine".into(),
            "UNKNOWN_KEY_KIND",
        ),
        (
            "balance with a leading zero",
            |p| p.balance = format!("0{}", p.balance),
            "BAD_FIELD",
        ),
        ("wrong format", |p| p.format = "something-else".into(), "FORMAT"),
    ];
    for (name, tamper, want) in rows {
        let mut p = good.clone();
        tamper(&mut p);
        assert_eq!(code(verify(&p, &full)), want, "{name}");
    }
}

/// A root signed by the signer's witness key verifies pinned to that key; pinned to another
/// (the audit key), or signed as "witness" by a key of the attacker's, it is `KEY_MISMATCH`;
/// the key kind is in the statement, so an audit signature relabelled "witness" is
/// `BAD_SIGNATURE`.
#[test]
fn witness_signed_roots_verify_pinned_to_the_witness_key_only() {
    let witness = SigningKey::from_bytes(&[5; 32]);
    let witness_hex = kinko_verify::to_hex(witness.verifying_key().as_bytes());
    let audit_hex = kinko_verify::to_hex(key().verifying_key().as_bytes());
    let tree = build(inputs(&[10, 20, 30])).unwrap();
    let mut root = tree.unsigned_root("LTC", 8, SEQ, "2023-11-14T22:13:20.000000Z");
    sign_root(&mut root, KEY_WITNESS, &witness).unwrap();
    let proof = tree.proof(&root, 101).unwrap();
    let pinned = |k: &str| {
        let expect = Expect {
            public_key: Some(k),
            ..Expect::default()
        };
        code(verify(&proof, &expect))
    };
    assert_eq!(pinned(&witness_hex), "OK");
    assert_eq!(verify(&proof, &Expect::default()).unwrap().key, KEY_WITNESS);
    assert_eq!(pinned(&audit_hex), "KEY_MISMATCH");

    let mut forged = proof.clone();
    sign_root(&mut forged.root, KEY_WITNESS, &SigningKey::from_bytes(&[6; 32])).unwrap();
    let expect = Expect {
        public_key: Some(&witness_hex),
        ..Expect::default()
    };
    assert_eq!(code(verify(&forged, &expect)), "KEY_MISMATCH");

    let (_, audit_root) = setup(&[10, 20, 30]);
    let mut relabelled = tree.proof(&audit_root, 101).unwrap();
    relabelled.root.key = KEY_WITNESS.into();
    assert_eq!(code(verify(&relabelled, &Expect::default())), "BAD_SIGNATURE");
}

#[test]
fn two_users_cannot_share_a_leaf() {
    let (tree, root) = setup(&[10, 20, 30, 40]);
    // The exchange shows user 101 the leaf of user 100 (same balance claimed for both).
    let mut shared = tree.proof(&root, 100).unwrap();
    let expect = Expect {
        user: Some(101),
        ..Expect::default()
    };
    assert_eq!(code(verify(&shared, &expect)), "USER_MISMATCH");
    // Relabelled as user 101's: the leaf hash is over the user id, so the path breaks.
    shared.user = 101;
    assert_eq!(code(verify(&shared, &expect)), "ROOT_HASH_MISMATCH");
    // With 101's own salt too: still not on the path.
    shared.salt = kinko_verify::to_hex(&salt(&SECRET, "LTC", SEQ, 101));
    assert_eq!(code(verify(&shared, &expect)), "ROOT_HASH_MISMATCH");
    // And building refuses one user twice.
    let mut two = inputs(&[10, 20]);
    two[1].user = two[0].user;
    assert!(matches!(build(two), Err(BuildError::DuplicateUser(100))));
}

#[test]
fn negative_and_overflowing_balances_are_refused_when_building() {
    assert!(matches!(
        build(inputs(&[5, -1, 7])),
        Err(BuildError::NegativeBalance {
            user: 101,
            balance: -1
        })
    ));
    assert!(matches!(
        build(inputs(&[i128::MAX, i128::MAX, i128::MAX])),
        Err(BuildError::Overflow)
    ));
    // Two of them still fit in u128, and verify.
    let (tree, root) = setup(&[i128::MAX, i128::MAX]);
    assert_eq!(
        code(verify(&tree.proof(&root, 100).unwrap(), &Expect::default())),
        "OK"
    );
}

#[test]
fn removing_a_user_changes_the_root() {
    let all = inputs(&[10, 20, 30, 40, 0]);
    let full = build(all.clone()).unwrap();
    for skip in 0..all.len() {
        let mut fewer = all.clone();
        fewer.remove(skip);
        let t = build(fewer).unwrap();
        assert_ne!(
            t.root().0,
            full.root().0,
            "removing leaf {skip} (even a zero balance)"
        );
    }
    // And a proof cut from the smaller tree fails against the published full root.
    let mut fewer = all.clone();
    fewer.remove(3);
    let small = build(fewer).unwrap();
    let small_root = signed(&small);
    let full_root = signed(&full);
    let published = Roots {
        format: ROOTS_FORMAT.into(),
        version: VERSION,
        roots: vec![full_root],
    };
    let p = small.proof(&small_root, 100).unwrap();
    assert_eq!(code(verify(&p, &Expect::default())), "OK");
    assert_eq!(
        code(verify(
            &p,
            &Expect {
                published: Some(&published),
                ..Expect::default()
            }
        )),
        "PUBLISHED_ROOT_DIFFERS"
    );
}

#[test]
fn salts_do_not_link_across_proofs_or_assets() {
    let a = salt(&SECRET, "LTC", 1, 5);
    assert_eq!(a, salt(&SECRET, "LTC", 1, 5));
    assert_ne!(a, salt(&SECRET, "LTC", 2, 5));
    assert_ne!(a, salt(&SECRET, "BTC", 1, 5));
    assert_ne!(a, salt(&SECRET, "LTC", 1, 6));
    assert_ne!(a, salt(&[8; 32], "LTC", 1, 5));
}

/// Mutates one field of the JSON proof: a string field gets one character changed, a number
/// is changed by one.
fn tamper_json(v: &mut serde_json::Value, pick: usize, seed: u8) -> bool {
    let mut leaves: Vec<&mut serde_json::Value> = Vec::new();
    fn collect<'a>(v: &'a mut serde_json::Value, out: &mut Vec<&'a mut serde_json::Value>) {
        match v {
            serde_json::Value::Object(m) => m.values_mut().for_each(|x| collect(x, out)),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| collect(x, out)),
            other => out.push(other),
        }
    }
    collect(v, &mut leaves);
    let n = leaves.len();
    let target = &mut leaves[pick % n];
    match target {
        serde_json::Value::String(s) => {
            let mut b = s.clone().into_bytes();
            if b.is_empty() {
                return false;
            }
            let i = usize::from(seed) % b.len();
            let c = b[i];
            let alphabet: &[u8] = if c.is_ascii_hexdigit() && c.is_ascii_lowercase() || c.is_ascii_digit() {
                b"0123456789abcdef"
            } else {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            };
            let mut r = alphabet[usize::from(seed) % alphabet.len()];
            if r == c {
                r = alphabet[(usize::from(seed) + 1) % alphabet.len()];
            }
            b[i] = r;
            *s = String::from_utf8(b).unwrap();
            true
        }
        serde_json::Value::Number(x) => {
            let u = x.as_u64().unwrap();
            **target = serde_json::Value::from(if u == 0 { 1 } else { u - 1 });
            true
        }
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any single-field change of a valid proof fails verification (with the key pinned and the
    /// published root given, as a careful customer runs it), whichever field it is.
    #[test]
    fn any_single_field_tamper_fails(
        balances in proptest::collection::vec(0i128..1_000_000_000_000, 1..40),
        who in 0usize..40,
        pick in 0usize..1000,
        seed in any::<u8>(),
    ) {
        let (tree, root) = setup(&balances);
        let user = 100 + u64::try_from(who % balances.len()).unwrap();
        let good = tree.proof(&root, user).unwrap();
        let published = Roots { format: ROOTS_FORMAT.into(), version: VERSION, roots: vec![root.clone()] };
        let expect = Expect { user: Some(user), public_key: Some(&root.public_key), published: Some(&published) };
        prop_assert!(verify(&good, &expect).is_ok());
        let mut v = serde_json::to_value(&good).unwrap();
        prop_assume!(tamper_json(&mut v, pick, seed));
        // A change that no longer parses is refused too; one that parses must not verify.
        if let Ok(p) = serde_json::from_value::<InclusionProof>(v) {
            prop_assert!(p != good);
            prop_assert!(verify(&p, &expect).is_err(), "tampered proof verified: {:?}", p);
        }
    }

    /// The tree's total is the exact sum, and every proof verifies.
    #[test]
    fn totals_are_exact_and_every_proof_verifies(balances in proptest::collection::vec(0i128..i128::from(u64::MAX), 0..60)) {
        let (tree, root) = setup(&balances);
        let total: u128 = balances.iter().map(|&b| u128::try_from(b).unwrap()).sum();
        prop_assert_eq!(tree.root().1, total);
        for i in 0..balances.len() {
            let p = tree.proof(&root, 100 + u64::try_from(i).unwrap()).unwrap();
            prop_assert!(verify(&p, &Expect::default()).is_ok());
        }
    }
}

fn run_verify(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kinko-verify"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_binary_exits_zero_only_for_a_valid_proof() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, root) = setup(&[123_456_789, 5, 0, 42]);
    let proof = tree.proof(&root, 100).unwrap();
    let published = Roots {
        format: ROOTS_FORMAT.into(),
        version: VERSION,
        roots: vec![root.clone()],
    };
    let pf = dir.path().join("proof.json");
    let rf = dir.path().join("liabilities.json");
    std::fs::write(&pf, serde_json::to_vec_pretty(&proof).unwrap()).unwrap();
    std::fs::write(&rf, serde_json::to_vec(&published).unwrap()).unwrap();
    let p = pf.to_str().unwrap();
    let r = rf.to_str().unwrap();

    let (code, out) = run_verify(&[
        p,
        "--published",
        r,
        "--public-key",
        &root.public_key,
        "--user",
        "100",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("VALID: user 100 holds 1.23456789 LTC"), "{out}");

    let (code, out) = run_verify(&[p, "--user", "101"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INVALID: USER_MISMATCH"), "{out}");

    let other = kinko_verify::to_hex(SigningKey::from_bytes(&[1; 32]).verifying_key().as_bytes());
    let (code, out) = run_verify(&[p, "--public-key", &other]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INVALID: KEY_MISMATCH"), "{out}");

    let mut bad = proof.clone();
    bad.path[0].sum = "-1".into();
    std::fs::write(&pf, serde_json::to_vec(&bad).unwrap()).unwrap();
    let (code, out) = run_verify(&[p]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INVALID: NEGATIVE_BALANCE"), "{out}");

    std::fs::write(&pf, b"{not json").unwrap();
    let (code, out) = run_verify(&[p]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INVALID: FORMAT"), "{out}");

    let (code, _) = run_verify(&["--bogus"]);
    assert_eq!(code, 2);
    let (code, _) = run_verify(&[dir.path().join("missing.json").to_str().unwrap()]);
    assert_eq!(code, 1);
}
