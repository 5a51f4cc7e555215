//! The witness: the signer cosigns kinko's journal and audit heads with its own key, and
//! refuses (`HISTORY_FORKED`, halting all signing) a head that contradicts one it cosigned.
//! Host-compromise rows: root on the kinko host rewrites the journal or the audit log after a
//! witnessed point and presents the rewritten head.

use crate::harness::*;
use kinko_audit::witness::{check_history, Cosignature, LOG_AUDIT, LOG_JOURNAL};
use kinko_audit::{consistency_proof, leaf_hash, root};
use kinko_signer_proto::protocol::{JournalHead, Request, Response};
use std::process::{Command, Stdio};

const AMOUNT: u64 = 300_000;

fn witness(env: &Env, log: &str, size: u64, root: [u8; 32], proof: Vec<[u8; 32]>) -> Response {
    env.call(&Request::Witness {
        log: log.into(),
        size,
        root,
        proof,
    })
}

fn cosigned(r: Response) -> Cosignature {
    match r {
        Response::Cosigned {
            log,
            size,
            root,
            time_s,
            key_id,
            signature,
        } => Cosignature {
            log,
            size,
            root,
            time_s,
            key_id,
            signature,
        },
        other => panic!("expected a cosignature, got {other:?}"),
    }
}

fn leaves(tag: u8, n: usize) -> Vec<[u8; 32]> {
    (0..n).map(|i| leaf_hash(&[tag, i as u8])).collect()
}

#[test]
fn journal_heads_are_cosigned_and_a_fork_halts_signing() {
    let env = Env::new();
    let key = env.keys().witness_key().verifying_key();
    let c = cosigned(witness(&env, LOG_JOURNAL, 5, [1; 32], vec![]));
    assert_eq!((c.log.as_str(), c.size), (LOG_JOURNAL, 5));
    assert_eq!(c.verify(&key).unwrap(), [1; 32]);
    assert_eq!(c.time_s, env.now() / NS);
    // Moving forward and repeating are fine; the head is what the signer last cosigned.
    cosigned(witness(&env, LOG_JOURNAL, 5, [1; 32], vec![]));
    cosigned(witness(&env, LOG_JOURNAL, 9, [2; 32], vec![]));
    assert_eq!(
        env.call(&Request::WitnessHead {
            log: LOG_JOURNAL.into()
        }),
        Response::WitnessHead {
            log: LOG_JOURNAL.into(),
            size: 9,
            root: [2; 32]
        }
    );
    // An unknown log is not a fork.
    expect_refused(
        witness(&env, "ledger", 1, [0; 32], vec![]),
        "WITNESS_INVALID",
        false,
    );

    // Root on the host rewrote record 9 (payload changed, chain recomputed): same sequence,
    // another hash. Refused, and signing halts.
    expect_refused(
        witness(&env, LOG_JOURNAL, 9, [3; 32], vec![]),
        "HISTORY_FORKED",
        true,
    );
    let refused = log_entries(&env.log_path(), "refused");
    assert_eq!(refused.last().unwrap()["entry"]["code"], "HISTORY_FORKED");
    assert_eq!(refused.last().unwrap()["entry"]["tamper"], true);
    assert_eq!(log_entries(&env.log_path(), "halted").len(), 1);
    // A truncated journal (a lower sequence) is a fork too.
    expect_refused(
        witness(&env, LOG_JOURNAL, 8, [4; 32], vec![]),
        "HISTORY_FORKED",
        true,
    );
    // The rewritten head was never accepted: the signer's head is still the one it saw.
    assert!(matches!(
        env.call(&Request::WitnessHead { log: LOG_JOURNAL.into() }),
        Response::WitnessHead { size: 9, root, .. } if root == [2; 32]
    ));

    // Nothing is signed while halted, however good the withdrawal.
    let cust = Customer::new(1);
    env.onboard(&cust);
    let w = cust.with_passkey(cust.withdrawal(1, AMOUNT), env.now());
    expect_refused(env.sign(&w, &env.psbt_for(&cust, AMOUNT)), "SIGNER_HALTED", true);
    assert!(log_entries(&env.log_path(), "signed").is_empty());
}

#[test]
fn audit_trees_must_stay_consistent() {
    let env = Env::new();
    let key = env.keys().witness_key().verifying_key();
    let real = leaves(1, 10);
    // From nothing: no proof needed.
    let c = cosigned(witness(&env, LOG_AUDIT, 3, root(&real[..3]), vec![]));
    assert_eq!(c.verify(&key).unwrap(), root(&real[..3]));
    // Growing with a consistency proof from what the signer cosigned.
    let proof = consistency_proof(&real, 3, 6);
    cosigned(witness(&env, LOG_AUDIT, 6, root(&real[..6]), proof));
    let mut forked = real.clone();
    forked[1] = leaf_hash(b"rewritten and re-signed with the on-host key");
    let proof = consistency_proof(&forked, 6, 8);
    // Root on the host rewrote entry 1 and re-signed its checkpoints: its tree of 8 is not an
    // extension of the tree of 6 the signer saw.
    expect_refused(
        witness(&env, LOG_AUDIT, 8, root(&forked[..8]), proof),
        "HISTORY_FORKED",
        true,
    );
    assert!(matches!(
        env.call(&Request::WitnessHead { log: LOG_AUDIT.into() }),
        Response::WitnessHead { size: 6, root, .. } if root == kinko_audit::root(&real[..6])
    ));
    // The journal is witnessed on its own; a halted signer still witnesses a consistent head.
    let proof = consistency_proof(&real, 6, 10);
    cosigned(witness(&env, LOG_AUDIT, 10, root(&real), proof));
}

#[test]
fn every_signature_witnesses_the_journal_head() {
    let env = Env::new();
    let cust = Customer::new(1);
    env.onboard(&cust);
    cosigned(witness(&env, LOG_JOURNAL, 40, [7; 32], vec![]));
    let sign = |id: u64, head: JournalHead| {
        let w = cust.with_passkey(cust.withdrawal(id, AMOUNT), env.now());
        env.call(&Request::SignWithdrawal {
            withdrawal: Box::new(w),
            psbt: kinko_chain::psbt::to_base64(&env.psbt_for(&cust, AMOUNT)),
            journal: Some(head),
        })
    };
    expect_signed(sign(
        1,
        JournalHead {
            seq: 44,
            hash: [8; 32],
            epoch: None,
        },
    ));
    let w = log_entries(&env.log_path(), "witnessed");
    assert_eq!(w.last().unwrap()["entry"]["size"], 44);
    // A head behind the one the signer saw with the last signature: the journal was cut and
    // re-appended on the host. Refused before anything is checked or signed; signing halts.
    expect_refused(
        sign(
            2,
            JournalHead {
                seq: 43,
                hash: [9; 32],
                epoch: None,
            },
        ),
        "HISTORY_FORKED",
        true,
    );
    assert_eq!(log_entries(&env.log_path(), "signed").len(), 1);
    // The same for a sweep (another hash at the sequence last witnessed).
    let far = some_address(0x77).1;
    let r = env.call(&Request::SignSweep {
        psbt: kinko_chain::psbt::to_base64(&env.psbt(&[(far, 100_000)])),
        journal: Some(JournalHead {
            seq: 44,
            hash: [1; 32],
            epoch: None,
        }),
    });
    expect_refused(r, "HISTORY_FORKED", true);
    assert_eq!(log_entries(&env.log_path(), "signed").len(), 1);
}

/// `kinko-signer witness-key` prints the key the cosignatures verify with; `witness export`
/// gives back every logged cosignature, which an auditor checks off the host.
/// A replicated cluster's deposed primary still asks with its old epoch: once the signer has
/// seen a newer one, it refuses (without halting: a deposed primary is not tampering).
#[test]
fn a_request_from_an_older_cluster_epoch_is_refused() {
    let env = Env::new();
    let cust = Customer::new(1);
    env.onboard(&cust);
    let sign = |id: u64, seq: u64, epoch: u64| {
        let w = cust.with_passkey(cust.withdrawal(id, AMOUNT), env.now());
        env.call(&Request::SignWithdrawal {
            withdrawal: Box::new(w),
            psbt: kinko_chain::psbt::to_base64(&env.psbt_for(&cust, AMOUNT)),
            journal: Some(JournalHead {
                seq,
                hash: [seq as u8; 32],
                epoch: Some(epoch),
            }),
        })
    };
    expect_signed(sign(1, 10, 1));
    expect_signed(sign(2, 20, 2));
    expect_refused(sign(3, 30, 1), "STALE_EPOCH", false);
    assert_eq!(log_entries(&env.log_path(), "signed").len(), 2);
    expect_signed(sign(4, 40, 2));
}

#[test]
fn witness_key_and_export() {
    let mut env = Env::new();
    let real = leaves(2, 5);
    let a = cosigned(witness(&env, LOG_AUDIT, 2, root(&real[..2]), vec![]));
    let j = cosigned(witness(&env, LOG_JOURNAL, 12, [5; 32], vec![]));
    // The same head again within the hour is cosigned but not logged again...
    cosigned(witness(&env, LOG_JOURNAL, 12, [5; 32], vec![]));
    assert_eq!(log_entries(&env.log_path(), "witnessed").len(), 2);
    // ... and after it, it is (a fresh timestamp shows the signer still sees it).
    env.advance_s(kinko_signer::service::WITNESS_RELOG_S);
    let j2 = cosigned(witness(&env, LOG_JOURNAL, 12, [5; 32], vec![]));
    assert_eq!(log_entries(&env.log_path(), "witnessed").len(), 3);
    env.stop();

    let bin = env!("CARGO_BIN_EXE_kinko-signer");
    let out = Command::new(bin)
        .env("KINKO_SIGNER_KDF_TEST_FAST", "1")
        .env("KINKO_SIGNER_PASSPHRASE", PASS)
        .stdin(Stdio::null())
        .args(["witness-key", "--keystore"])
        .arg(env.dir.path().join("hot.keystore"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = kinko_audit::parse_public_key(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(key, env.keys().witness_key().verifying_key());

    let out = Command::new(bin)
        .stdin(Stdio::null())
        .args(["witness", "export", "--log"])
        .arg(env.log_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exported: Vec<Cosignature> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported, vec![a, j, j2]);
    let check = check_history(LOG_AUDIT, &exported, &key, |size| {
        Some(root(&real[..size as usize]))
    });
    assert!(check.ok(), "{check:?}");
    // A log edited after the fact does not export.
    let text = env.log_text().replace("\"size\":12", "\"size\":13");
    std::fs::write(env.log_path(), text).unwrap();
    let out = Command::new(bin)
        .stdin(Stdio::null())
        .args(["witness", "export", "--log"])
        .arg(env.log_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The root fields of a small real tree at `sequence`, and the tree.
fn liabilities_root(sequence: u64) -> (kinko_verify::Root, kinko_verify::tree::Tree) {
    use kinko_verify::tree::{build, LeafInput};
    let leaves = (1..=3u64)
        .map(|user| LeafInput {
            user,
            salt: [user as u8; 32],
            balance: i128::from(user) * 1_000,
        })
        .collect();
    let tree = build(leaves).unwrap();
    let root = tree.unsigned_root("LTC", 8, sequence, "2026-12-07T15:00:00.000000Z");
    (root, tree)
}

fn sign_root_request(root: &kinko_verify::Root, journal: Option<JournalHead>) -> Request {
    Request::SignLiabilitiesRoot {
        asset: root.asset.clone(),
        decimals: root.decimals,
        sequence: root.sequence,
        time: root.time.clone(),
        leaves: root.leaves,
        root_hash: root.root_hash.clone(),
        total: root.total.clone(),
        journal,
    }
}

/// The signed root, or a panic naming the answer.
fn signed_root(env: &Env, mut root: kinko_verify::Root, journal: Option<JournalHead>) -> kinko_verify::Root {
    match env.call(&sign_root_request(&root, journal)) {
        Response::LiabilitiesRootSigned {
            key,
            public_key,
            signature,
        } => {
            root.key = key;
            root.public_key = public_key;
            root.signature = signature;
            root
        }
        other => panic!("expected a signed root, got {other:?}"),
    }
}

fn bad_request(r: Response) {
    assert!(
        matches!(&r, Response::Error { code, .. } if code == "BAD_REQUEST"),
        "expected BAD_REQUEST, got {r:?}"
    );
}

/// Proof-of-liabilities roots: signed with the witness key over exactly the statement, only
/// at or below the journal head the signer cosigned; a root beyond it (a state the signer never
/// saw) is refused `ROOT_NOT_WITNESSED` without halting; malformed fields are `BAD_REQUEST`.
#[test]
fn liabilities_roots_are_signed_only_up_to_the_witnessed_head() {
    let env = Env::new();
    let witness_hex = kinko_verify::to_hex(env.keys().witness_key().verifying_key().as_bytes());

    // Nothing witnessed yet: no state is known to the signer.
    let (root5, _) = liabilities_root(5);
    expect_refused(
        env.call(&sign_root_request(&root5, None)),
        "ROOT_NOT_WITNESSED",
        false,
    );

    cosigned(witness(&env, LOG_JOURNAL, 9, [2; 32], vec![]));
    // At and below the cosigned head: signed with the witness key, verifiable as a root and
    // through a customer's proof pinned to that key.
    for seq in [5, 9] {
        let (root, tree) = liabilities_root(seq);
        let signed = signed_root(&env, root, None);
        assert_eq!(signed.key, kinko_verify::KEY_WITNESS);
        assert_eq!(signed.public_key, witness_hex);
        kinko_verify::verify_root(&signed).unwrap();
        let proof = tree.proof(&signed, 2).unwrap();
        let pinned = kinko_verify::Expect {
            public_key: Some(&witness_hex),
            ..Default::default()
        };
        assert_eq!(kinko_verify::verify(&proof, &pinned).unwrap().balance, 2_000);
        let other = kinko_verify::to_hex(&[7; 32]);
        let pinned_other = kinko_verify::Expect {
            public_key: Some(&other),
            ..Default::default()
        };
        assert_eq!(
            kinko_verify::verify(&proof, &pinned_other).unwrap_err().code(),
            "KEY_MISMATCH"
        );
    }
    // Beyond the cosigned head.
    let (root10, _) = liabilities_root(10);
    expect_refused(
        env.call(&sign_root_request(&root10, None)),
        "ROOT_NOT_WITNESSED",
        false,
    );
    let refused = log_entries(&env.log_path(), "refused");
    assert_eq!(refused.last().unwrap()["entry"]["code"], "ROOT_NOT_WITNESSED");
    assert_eq!(refused.last().unwrap()["entry"]["tamper"], false);

    // With the head at the root's sequence, the head is witnessed first, then the root signed.
    let head = JournalHead {
        seq: 10,
        hash: [3; 32],
        epoch: None,
    };
    signed_root(&env, root10.clone(), Some(head));
    assert!(matches!(
        env.call(&Request::WitnessHead { log: LOG_JOURNAL.into() }),
        Response::WitnessHead { size: 10, root, .. } if root == [3; 32]
    ));
    // An older root with its (older) head is below the head: signed, the head not rewound.
    signed_root(&env, root5.clone(), Some(JournalHead { seq: 5, ..head }));
    assert!(matches!(
        env.call(&Request::WitnessHead {
            log: LOG_JOURNAL.into()
        }),
        Response::WitnessHead { size: 10, .. }
    ));

    // Malformed: a head at another sequence, a bad hash, a negative or padded total, an
    // asset or time the statement cannot hold.
    bad_request(env.call(&sign_root_request(&root10, Some(JournalHead { seq: 11, ..head }))));
    for edit in [
        |r: &mut kinko_verify::Root| r.root_hash = "zz".repeat(32),
        |r: &mut kinko_verify::Root| r.root_hash = "AB".repeat(32),
        |r: &mut kinko_verify::Root| r.total = "-1".into(),
        |r: &mut kinko_verify::Root| r.total = "01".into(),
        |r: &mut kinko_verify::Root| r.asset = String::new(),
        |r: &mut kinko_verify::Root| r.asset = "LTC\nkey audit".into(),
        |r: &mut kinko_verify::Root| r.time = "a time\nwith lines".into(),
    ] {
        let mut r = root5.clone();
        edit(&mut r);
        bad_request(env.call(&sign_root_request(&r, None)));
    }

    // Every signed root is in the log, with its fields and signature.
    let signed = log_entries(&env.log_path(), "signed_liabilities_root");
    assert_eq!(signed.len(), 4);
    assert_eq!(signed[2]["entry"]["sequence"], 10);
    assert_eq!(signed[2]["entry"]["root_hash"], root10.root_hash.as_str());
    // Refusing a root halts nothing: signing is not halted.
    assert!(log_entries(&env.log_path(), "halted").is_empty());

    // A head at the root's sequence that contradicts the cosigned one is a fork.
    expect_refused(
        env.call(&sign_root_request(
            &root10,
            Some(JournalHead {
                hash: [4; 32],
                ..head
            }),
        )),
        "HISTORY_FORKED",
        true,
    );
    // Halted, it signs no root, not even one below its head.
    expect_refused(env.call(&sign_root_request(&root5, None)), "SIGNER_HALTED", true);
    assert_eq!(log_entries(&env.log_path(), "signed_liabilities_root").len(), 4);
}
