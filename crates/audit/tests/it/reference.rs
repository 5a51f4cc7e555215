//! An independent reference written directly from RFC 6962 §2.1's definitions (MTH, PATH,
//! PROOF / SUBPROOF): recursive, over lists of data, hashing with SHA-256 itself, no shared
//! code with the crate. The crate must agree with it for every tree of 1..=64 leaves, every
//! index and every old size, and its verifiers must accept every such proof.

use crate::common::{entries_path, entry, key, read_lines, split_line};
use kinko_audit::{consistency_proof, inclusion_proof, root, verify_consistency, verify_inclusion, AuditLog};
use sha2::{Digest, Sha256};

type Hash = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// k: the largest power of two smaller than n (n > 1).
fn k_of(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// MTH(D[n]).
pub fn mth(d: &[Vec<u8>]) -> Hash {
    match d.len() {
        0 => sha256(&[]),
        1 => sha256(&[&[0x00], &d[0]]),
        n => {
            let k = k_of(n);
            sha256(&[&[0x01], &mth(&d[..k]), &mth(&d[k..])])
        }
    }
}

/// PATH(m, D[n]).
pub fn path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
    let n = d.len();
    if n == 1 {
        return vec![];
    }
    let k = k_of(n);
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// PROOF(m, D[n]) = SUBPROOF(m, D[n], true).
pub fn proof(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
    subproof(m, d, true)
}

fn subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = k_of(n);
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

fn data(n: usize) -> Vec<Vec<u8>> {
    // Distinct, of varying length (including empty).
    (0..n)
        .map(|i| vec![i as u8; i % 5])
        .map(|mut v| {
            v.push(0xa0);
            v
        })
        .collect()
}

fn leaf(d: &[u8]) -> Hash {
    sha256(&[&[0x00], d])
}

#[test]
fn crate_agrees_with_reference_for_every_tree_up_to_64() {
    let all = data(64);
    let leaves: Vec<Hash> = all.iter().map(|d| leaf(d)).collect();
    for n in 1..=64usize {
        let d = &all[..n];
        let l = &leaves[..n];
        let r = mth(d);
        assert_eq!(root(l), r, "MTH of {n}");
        for m in 0..n {
            let p = path(m, d);
            assert_eq!(inclusion_proof(l, m as u64), p, "PATH({m}, D[{n}])");
            assert!(verify_inclusion(&l[m], m as u64, n as u64, &p, &r), "{m} in {n}");
        }
        for m in 1..=n {
            let p = if m == n { vec![] } else { proof(m, d) };
            assert_eq!(consistency_proof(l, m as u64, n as u64), p, "PROOF({m}, D[{n}])");
            assert!(
                verify_consistency(m as u64, n as u64, &mth(&d[..m]), &r, &p),
                "{m}->{n}"
            );
        }
    }
}

/// The log's own tree (incremental root, cached subtrees) answers as the reference does.
#[test]
fn log_agrees_with_reference() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path(), key(3)).unwrap();
    let mut d = Vec::new();
    for i in 0..70u64 {
        log.append(&entry(i)).unwrap();
        // The leaf data is the entry's record, as stored; the reference hashes it itself.
        let lines = read_lines(&entries_path(dir.path()));
        d.push(split_line(&lines[i as usize]).0.into_bytes());
        assert_eq!(log.leaf(i), Some(leaf(&d[i as usize])));
        assert_eq!(log.root(), mth(&d), "root after {} appends", i + 1);
    }
    for n in [1usize, 2, 3, 16, 17, 31, 32, 33, 63, 64, 65, 70] {
        assert_eq!(log.root_at(n as u64).unwrap(), mth(&d[..n]));
        for m in 0..n {
            assert_eq!(
                log.prove_inclusion(m as u64, n as u64).unwrap(),
                path(m, &d[..n]),
                "PATH({m}, D[{n}])"
            );
            let want = if m == 0 { vec![] } else { proof(m, &d[..n]) };
            assert_eq!(
                log.prove_consistency(m as u64, n as u64).unwrap(),
                want,
                "PROOF({m}, D[{n}])"
            );
        }
    }
    assert!(log.root_at(71).is_err());
    assert!(log.prove_inclusion(70, 70).is_err());
    assert!(log.prove_inclusion(3, 71).is_err());
    assert!(log.prove_consistency(5, 71).is_err());
    assert!(log.prove_consistency(6, 5).is_err());
}
