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
