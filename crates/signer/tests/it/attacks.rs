//! The attack table: what a compromised kinko host might send, and what the signer answers.
//! Every case runs against its own signer on a real Unix socket.

use crate::harness::*;
use bitcoin::psbt::PsbtSighashType;
use bitcoin::sighash::EcdsaSighashType;
use kinko_signer_proto::protocol::{ProofFactor, Request, Response, Withdrawal};

const AMOUNT: u64 = 500_000;

#[test]
fn passkey_withdrawal_signs_and_counts() {
    let env = Env::new();
    let c = Customer::new(1);
    env.onboard(&c);
    let w = c.with_passkey(c.withdrawal(1, AMOUNT), env.now());
    let psbt = env.psbt_for(&c, AMOUNT);
    let signed = expect_signed(env.sign(&w, &psbt));
    assert_eq!(signed.unsigned_tx.compute_txid(), psbt.unsigned_tx.compute_txid());
    match env.call(&Request::Status) {
        Response::Status {
            signed_in_window,
            window_max,
            halted,
            ..
        } => {
            assert_eq!((signed_in_window, window_max, halted), (AMOUNT, WINDOW_MAX, None));
        }
        other => panic!("{other:?}"),
    }
    let s = log_entries(&env.log_path(), "signed");
    assert_eq!(s.len(), 1);
    assert_eq!(s[0]["entry"]["amount_sats"], AMOUNT);
    assert_eq!(s[0]["entry"]["txid"], psbt.unsigned_tx.compute_txid().to_string());
    assert_eq!(s[0]["entry"]["destinations"][0], c.address);
    // The same withdrawal and transaction again (kinko retrying after a lost answer): signed,
    // not counted twice.
    let again = c.with_passkey(c.withdrawal(1, AMOUNT), env.now());
    expect_signed(env.sign(&again, &psbt));
    assert!(matches!(
        env.call(&Request::Status),
        Response::Status {
            signed_in_window: AMOUNT,
            ..
        }
    ));
}

#[test]
fn totp_withdrawal_signs() {
    let env = Env::new();
    let c = Customer::new(2);
    env.onboard(&c);
    let mut w = c.withdrawal(1, AMOUNT);
    w.proof = Some(c.totp_proof(&Customer::action(&w), env.now(), 0));
    expect_signed(env.sign(&w, &env.psbt_for(&c, AMOUNT)));
    // The same step again for another withdrawal: a replayed code.
    let mut w2 = c.withdrawal(2, AMOUNT);
    let mut p = c.totp_proof(&Customer::action(&w2), env.now(), 0);
    p.nonce = [9; 16];
    w2.proof = Some(p);
    expect_refused(env.sign(&w2, &env.psbt_for(&c, AMOUNT)), "PROOF_INVALID", true);
}

/// A case of the table: how to spoil a valid request, and the refusal expected.
struct Case {
    name: &'static str,
    code: &'static str,
    tamper: bool,
    spoil: fn(&mut Env, &Customer, &mut Withdrawal, &mut bitcoin::psbt::Psbt),
}

fn fresh_psbt(env: &mut Env, pay: &[(bitcoin::ScriptBuf, u64)]) -> bitcoin::psbt::Psbt {
    env.psbt(pay)
}

const CASES: &[Case] = &[
    Case {
        name: "psbt pays another address",
        code: "PSBT_MISMATCH",
        tamper: true,
        spoil: |env, _, _, psbt| {
            *psbt = fresh_psbt(env, &[(some_address(0xee).1, AMOUNT)]);
        },
    },
    Case {
        name: "psbt pays another amount",
        code: "PSBT_MISMATCH",
        tamper: true,
        spoil: |env, c, _, psbt| *psbt = fresh_psbt(env, &[(c.script.clone(), AMOUNT + 1)]),
    },
    Case {
        name: "psbt pays the destination twice",
        code: "PSBT_MISMATCH",
        tamper: true,
        spoil: |env, c, _, psbt| {
            *psbt = fresh_psbt(env, &[(c.script.clone(), AMOUNT), (c.script.clone(), AMOUNT)]);
        },
    },
    Case {
        name: "extra output to an attacker",
        code: "CHANGE_FOREIGN",
        tamper: true,
        spoil: |env, c, _, psbt| {
            *psbt = fresh_psbt(
                env,
                &[(c.script.clone(), AMOUNT), (some_address(0xee).1, 100_000)],
            );
        },
    },
    Case {
        name: "change to a foreign wallet",
        code: "CHANGE_FOREIGN",
        tamper: true,
        spoil: |env, c, _, psbt| {
            let u = env.utxo();
            let theirs = kinko_chain::keys::derive_hot(NET, &foreign_hot(), 1, 0).unwrap();
            *psbt =
                kinko_chain::psbt::build(NET, &[u], &[(c.script.clone(), AMOUNT)], Some(&theirs), FEE_RATE)
                    .unwrap()
                    .psbt;
        },
    },
    Case {
        name: "change claims our derivation but pays another script",
        code: "CHANGE_FOREIGN",
        tamper: true,
        spoil: |env, _, _, psbt| {
            let last = psbt.unsigned_tx.output.len() - 1;
            psbt.unsigned_tx.output[last].script_pubkey = some_address(0xee).1;
            psbt.outputs[last].bip32_derivation = env.change(3).keys.into_iter().collect();
        },
    },
    Case {
        name: "change on our receive chain",
        code: "CHANGE_FOREIGN",
        tamper: true,
        spoil: |env, c, _, psbt| {
            let u = env.utxo();
            let receive = kinko_chain::keys::derive_hot(NET, &env.hot, 0, 77).unwrap();
            *psbt =
                kinko_chain::psbt::build(NET, &[u], &[(c.script.clone(), AMOUNT)], Some(&receive), FEE_RATE)
                    .unwrap()
                    .psbt;
        },
    },
    Case {
        name: "a foreign input",
        code: "INPUT_FOREIGN",
        tamper: true,
        spoil: |env, c, _, psbt| {
            let mut theirs = env.utxo();
            theirs.derived = kinko_chain::keys::derive_hot(NET, &foreign_hot(), 0, 0).unwrap();
            let ours = env.utxo();
            let mut p = kinko_chain::psbt::build(
                NET,
                &[ours, theirs],
                &[(c.script.clone(), 2 * UTXO_SATS - 100_000)],
                Some(&env.change(0)),
                FEE_RATE,
            )
            .unwrap()
            .psbt;
            assert_eq!(p.inputs.len(), 2);
            // Keep the payment exact so that only the input is wrong.
            p.unsigned_tx.output[0].value = bitcoin::Amount::from_sat(AMOUNT);
            *psbt = p;
        },
    },
    Case {
        name: "an input whose script is not its derivation's",
        code: "INPUT_FOREIGN",
        tamper: true,
        spoil: |_, _, _, psbt| {
            psbt.inputs[0].witness_utxo.as_mut().unwrap().script_pubkey = some_address(0xee).1;
        },
    },
    Case {
        name: "an input asking for SIGHASH_NONE",
        code: "INPUT_FOREIGN",
        tamper: true,
        spoil: |_, _, _, psbt| {
            psbt.inputs[0].sighash_type = Some(PsbtSighashType::from(EcdsaSighashType::None));
        },
    },
    Case {
        name: "an input under another account of our seed",
        code: "INPUT_FOREIGN",
        tamper: true,
        spoil: |_, _, _, psbt| {
            let (pk, (fp, path)) = psbt.inputs[0].bip32_derivation.pop_first().unwrap();
            let mut steps: Vec<bitcoin::bip32::ChildNumber> = path.as_ref().to_vec();
            steps[2] = bitcoin::bip32::ChildNumber::from_hardened_idx(1).unwrap();
            psbt.inputs[0].bip32_derivation.insert(pk, (fp, steps.into()));
        },
    },
    Case {
        name: "fee above the limit",
        code: "FEE_TOO_HIGH",
        tamper: false,
        spoil: |env, c, _, psbt| {
            let u = env.utxo();
            *psbt = kinko_chain::psbt::build(
                NET,
                &[u],
                &[(c.script.clone(), AMOUNT)],
                Some(&env.change(0)),
                1_000,
            )
            .unwrap()
            .psbt;
        },
    },
    Case {
        name: "proof for another amount",
        code: "PROOF_MISMATCH",
        tamper: true,
        spoil: |env, c, w, _| {
            let mut other = w.clone();
            other.amount = u128::from(AMOUNT) + 1;
            w.proof = Some(c.passkey_proof(&Customer::action(&other), env.now()));
        },
    },
    Case {
        name: "proof for another destination",
        code: "PROOF_MISMATCH",
        tamper: true,
        spoil: |env, c, w, _| {
            let mut other = w.clone();
            other.address = some_address(0xee).0;
            w.proof = Some(c.passkey_proof(&Customer::action(&other), env.now()));
        },
    },
    Case {
        name: "no proof",
        code: "PROOF_MISSING",
        tamper: false,
        spoil: |_, _, w, _| w.proof = None,
    },
    Case {
        name: "a recovery-code proof",
        code: "PROOF_MISSING",
        tamper: false,
        spoil: |_, _, w, _| {
            let p = w.proof.as_mut().unwrap();
            p.factor = ProofFactor::Recovery { code_hash: [1; 32] };
        },
    },
    Case {
        name: "a stale proof",
        code: "PROOF_STALE",
        tamper: false,
        spoil: |env, c, w, _| {
            let issued = env.now() - (PROOF_MAX_AGE_S + 1) * NS;
            w.proof = Some(c.passkey_proof(&Customer::action(w), issued));
        },
    },
    Case {
        name: "a proof from the future",
        code: "PROOF_STALE",
        tamper: false,
        spoil: |env, c, w, _| {
            w.proof = Some(c.passkey_proof(&Customer::action(w), env.now() + 3600 * NS));
        },
    },
    Case {
        name: "a stale TOTP step",
        code: "PROOF_STALE",
        tamper: false,
        spoil: |env, c, w, _| {
            let steps = (PROOF_MAX_AGE_S / 30 + 2) as i64;
            w.proof = Some(c.totp_proof(&Customer::action(w), env.now(), -steps));
        },
    },
    Case {
        name: "a wrong TOTP code",
        code: "PROOF_INVALID",
        tamper: true,
        spoil: |env, c, w, _| {
            let mut p = c.totp_proof(&Customer::action(w), env.now(), 0);
            if let ProofFactor::Totp { code, .. } = &mut p.factor {
                let n: u32 = code.parse().unwrap();
                *code = format!("{:06}", (n + 1) % 1_000_000);
            }
            w.proof = Some(p);
        },
    },
    Case {
        name: "a passkey assertion with a bad signature",
        code: "PROOF_INVALID",
        tamper: true,
        spoil: |_, _, w, _| {
            if let Some(ProofFactor::Passkey { signature, .. }) = w.proof.as_mut().map(|p| &mut p.factor) {
                let last = signature.len() - 1;
                signature[last] ^= 1;
            }
        },
    },
    Case {
        name: "an assertion over another challenge",
        code: "PROOF_INVALID",
        tamper: true,
        spoil: |_, _, w, _| w.proof.as_mut().unwrap().nonce[0] ^= 1,
    },
    Case {
        name: "a passkey that is not registered",
        code: "FACTOR_UNKNOWN",
        tamper: false,
        spoil: |env, _, w, _| {
            let stranger = Customer::new(1);
            w.proof = Some(stranger.passkey_proof(&Customer::action(w), env.now()));
        },
    },
    Case {
        name: "another user's passkey",
        code: "FACTOR_UNKNOWN",
        tamper: false,
        spoil: |env, c, w, _| {
            let other = Customer::new(9);
            env.ok(&other.register_passkey());
            let _ = c;
            w.proof = Some(other.passkey_proof(&Customer::action(w), env.now()));
        },
    },
    Case {
        name: "an address id that is not registered",
        code: "ADDRESS_UNKNOWN",
        tamper: false,
        spoil: |env, c, w, _| {
            w.address_id = 999;
            *w = c.with_passkey(w.clone(), env.now());
        },
    },
    Case {
        name: "a registered id with another destination",
        code: "ADDRESS_UNKNOWN",
        tamper: false,
        spoil: |env, c, w, psbt| {
            w.address = some_address(0xee).0;
            *w = c.with_passkey(w.clone(), env.now());
            *psbt = fresh_psbt(env, &[(some_address(0xee).1, AMOUNT)]);
        },
    },
    Case {
        name: "another asset",
        code: "ASSET_WRONG",
        tamper: false,
        spoil: |env, c, w, _| {
            w.asset = 2;
            *w = c.with_passkey(w.clone(), env.now());
        },
    },
    Case {
        name: "above the per-transaction limit",
        code: "LIMIT_TX",
        tamper: false,
        spoil: |env, c, w, psbt| {
            *w = c.with_passkey(c.withdrawal(w.id, PER_TX_MAX + 1), env.now());
            *psbt = fresh_psbt(env, &[(c.script.clone(), PER_TX_MAX + 1)]);
        },
    },
    Case {
        name: "a PSBT that is not base64",
        code: "PSBT_MALFORMED",
        tamper: false,
        spoil: |_, _, _, psbt| psbt.inputs.clear(),
    },
];

#[test]
fn attack_table() {
    // Each case has its own signer; they run side by side.
    std::thread::scope(|scope| {
        for case in CASES {
            scope.spawn(move || run_case(case));
        }
    });
}

fn run_case(case: &Case) {
    let mut env = Env::new();
    let c = Customer::new(1);
    env.onboard(&c);
    let mut w = c.with_passkey(c.withdrawal(1, AMOUNT), env.now());
    let mut psbt = env.psbt_for(&c, AMOUNT);
    (case.spoil)(&mut env, &c, &mut w, &mut psbt);
    let answer = if psbt.inputs.is_empty() {
        env.call(&Request::SignWithdrawal {
            withdrawal: Box::new(w.clone()),
            psbt: "this is not a psbt".into(),
            journal: None,
        })
    } else {
        env.sign(&w, &psbt)
    };
    match &answer {
        Response::Refused { code, halted, .. } if code == case.code && *halted == case.tamper => {}
        other => panic!(
            "{}: expected {} (halt {}), got {other:?}",
            case.name, case.code, case.tamper
        ),
    }
    let refused = log_entries(&env.log_path(), "refused");
    assert_eq!(refused.len(), 1, "{}", case.name);
    assert_eq!(refused[0]["entry"]["code"], case.code, "{}", case.name);
    assert_eq!(
        log_entries(&env.log_path(), "halted").len(),
        usize::from(case.tamper),
        "{}",
        case.name
    );
    // A valid withdrawal afterwards is signed unless the signer halted.
    let ok = c.with_passkey(c.withdrawal(50, AMOUNT), env.now());
    let answer = env.sign(&ok, &env.psbt_for(&c, AMOUNT));
    if case.tamper {
        expect_refused(answer, "SIGNER_HALTED", true);
    } else {
        expect_signed(answer);
    }
}

#[test]
fn halt_refuses_everything_until_cleared() {
    let mut env = Env::new();
    let c = Customer::new(1);
    env.onboard(&c);
    let w = c.with_passkey(c.withdrawal(1, AMOUNT), env.now());
    let evil = env.psbt(&[(some_address(0xee).1, AMOUNT)]);
    expect_refused(env.sign(&w, &evil), "PSBT_MISMATCH", true);
    // Everything that signs is refused, even a valid request, and a sweep.
    let w2 = c.with_passkey(c.withdrawal(2, AMOUNT), env.now());
    expect_refused(env.sign(&w2, &env.psbt_for(&c, AMOUNT)), "SIGNER_HALTED", true);
    let cold = kinko_chain::keys::derive_cold(NET, &env.cold, 0).unwrap();
    let sweep = env.psbt(&[(cold.script_pubkey, 1_000_000)]);
    expect_refused(
        env.call(&Request::SignSweep {
            psbt: kinko_chain::psbt::to_base64(&sweep),
            journal: None,
        }),
        "SIGNER_HALTED",
        true,
    );
    // hello, status and registrations still answer.
    match env.call(&Request::Hello) {
        Response::Hello {
            halted: Some(why), ..
        } => assert!(why.starts_with("PSBT_MISMATCH"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        env.call(&Request::Status),
        Response::Status { halted: Some(_), .. }
    ));
    env.ok(&Customer::new(5).register_passkey());
    // The halt survives a restart.
    env.restart();
    expect_refused(env.sign(&w2, &env.psbt_for(&c, AMOUNT)), "SIGNER_HALTED", true);
    // A clear with a wrong MAC, or without a challenge, is refused.
    let mut client = env.client();
    let Response::Challenge { nonce } = client.call(&Request::ClearChallenge).unwrap() else {
        panic!()
    };
    expect_refused(
        client
            .call(&Request::Clear {
                nonce,
                reason: "trust me".into(),
                mac: [0; 32],
                assertions: Vec::new(),
            })
            .unwrap(),
        "CLEAR_INVALID",
        true,
    );
    let mac = kinko_signer::service::clear_mac(&env.keys().clear_key(), &nonce, "trust me");
    // The challenge was used up by the failed attempt.
    expect_refused(
        client
            .call(&Request::Clear {
                nonce,
                reason: "trust me".into(),
                mac,
                assertions: Vec::new(),
            })
            .unwrap(),
        "CLEAR_INVALID",
        true,
    );
    assert_eq!(env.clear("checked the host; kinko redeployed"), Response::Ok);
    assert!(matches!(
        env.call(&Request::Hello),
        Response::Hello { halted: None, .. }
    ));
    expect_signed(env.sign(&w2, &env.psbt_for(&c, AMOUNT)));
    assert_eq!(log_entries(&env.log_path(), "cleared").len(), 1);
    // The signer's own channel: the refusal, the halt and the resume once each (the refusals
    // the halt causes are logged, not alerted again), the failed clears.
    let kinds = env.alert_kinds();
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(
        (
            count("signature_refused"),
            count("halted"),
            count("resumed"),
            count("clear_refused")
        ),
        (1, 1, 1, 2),
        "{kinds:?}"
    );
}

#[test]
fn already_signed_for_another_transaction() {
    let env = Env::new();
    let c = Customer::new(1);
    env.onboard(&c);
    let w = c.with_passkey(c.withdrawal(1, AMOUNT), env.now());
    expect_signed(env.sign(&w, &env.psbt_for(&c, AMOUNT)));
    // The same withdrawal id, a new transaction (paying the customer twice).
    let w = c.with_passkey(c.withdrawal(1, AMOUNT), env.now());
    expect_refused(env.sign(&w, &env.psbt_for(&c, AMOUNT)), "ALREADY_SIGNED", true);
}

#[test]
fn replayed_proofs_are_refused() {
    let env = Env::new();
    let c = Customer::new(1);
    env.onboard(&c);
    let w1 = c.with_passkey(c.withdrawal(1, AMOUNT), env.now());
    expect_signed(env.sign(&w1, &env.psbt_for(&c, AMOUNT)));
    // The very same proof behind another withdrawal id of the same action.
    let mut w2 = c.withdrawal(2, AMOUNT);
    w2.client_id = w1.client_id;
    w2.proof = w1.proof.clone();
    let answer = env.sign(&w2, &env.psbt_for(&c, AMOUNT));
    expect_refused(answer, "PROOF_INVALID", true);
    assert!(log_entries(&env.log_path(), "refused")[0]["entry"]["reason"]
        .as_str()
        .unwrap()
        .contains("already used"));

    // A fresh assertion whose counter did not move (a cloned authenticator).
    let env = Env::new();
    env.onboard(&c);
    c.passkey.set_counter(10);
    let w1 = c.with_passkey(c.withdrawal(1, AMOUNT), env.now());
    expect_signed(env.sign(&w1, &env.psbt_for(&c, AMOUNT)));
    c.passkey.set_counter(10);
    let w2 = c.with_passkey(c.withdrawal(2, AMOUNT), env.now());
    expect_refused(env.sign(&w2, &env.psbt_for(&c, AMOUNT)), "PROOF_INVALID", true);
    assert!(log_entries(&env.log_path(), "refused")[0]["entry"]["reason"]
        .as_str()
        .unwrap()
        .contains("counter"));
}

#[test]
fn young_passkey_waits_for_maturity() {
    let env = Env::new();
    let c = Customer::new(1);
    env.ok(&c.register_passkey());
    env.ok(&c.register_address());
    env.advance_s(DAY_S + 1);
    let w = c.with_passkey(c.withdrawal(1, AMOUNT), env.now());
    let psbt = env.psbt_for(&c, AMOUNT);
    expect_refused(env.sign(&w, &psbt), "FACTOR_IMMATURE", false);
    // A first passkey matures after registration_maturity_s (3 days), not credential_maturity_s.
    env.advance_s(FIRST_MATURITY_S - DAY_S - 10);
    let w = c.with_passkey(c.withdrawal(1, AMOUNT), env.now());
    expect_refused(env.sign(&w, &psbt), "FACTOR_IMMATURE", false);
    env.advance_s(11);
    let w = c.with_passkey(c.withdrawal(1, AMOUNT), env.now());
    expect_signed(env.sign(&w, &psbt));
    // Forgetting the passkey (with its own approval) and registering it again restarts the
    // clock.
    let remove = kinko_core::identity::Action::RemovePasskey {
        user: kinko_core::UserId(c.user),
        credential_id: c.passkey.credential_id.clone(),
    };
    env.ok(&Request::ForgetFactors {
        user: c.user,
        approval: Some(c.passkey_proof(&remove, env.now())),
    });
    let w2 = c.with_passkey(c.withdrawal(2, AMOUNT), env.now());
    expect_refused(env.sign(&w2, &env.psbt_for(&c, AMOUNT)), "FACTOR_UNKNOWN", false);
    env.ok(&c.register_passkey());
    let w2 = c.with_passkey(c.withdrawal(2, AMOUNT), env.now());
    expect_refused(env.sign(&w2, &env.psbt_for(&c, AMOUNT)), "FACTOR_IMMATURE", false);
}

#[test]
fn new_address_cools_down() {
    let env = Env::new();
    let c = Customer::new(1);
    env.ok(&c.register_passkey());
    env.advance_s(FIRST_MATURITY_S + 1);
    env.ok(&c.register_address());
    let w = c.with_passkey(c.withdrawal(1, AMOUNT), env.now());
    let psbt = env.psbt_for(&c, AMOUNT);
    expect_refused(env.sign(&w, &psbt), "ADDRESS_COOLING", false);
    env.advance_s(DAY_S);
    let w = c.with_passkey(c.withdrawal(1, AMOUNT), env.now());
    expect_signed(env.sign(&w, &psbt));
}

#[test]
fn rolling_window_limit() {
    let mut env = Env::new();
    let c = Customer::new(1);
    env.onboard(&c);
    let first = 900_000;
    let w1 = c.with_passkey(c.withdrawal(1, first), env.now());
    expect_signed(env.sign(&w1, &env.psbt_for(&c, first)));
    let second = WINDOW_MAX - first + 1;
    let w2 = c.with_passkey(c.withdrawal(2, second), env.now());
    let psbt2 = env.psbt_for(&c, second);
    expect_refused(env.sign(&w2, &psbt2), "LIMIT_WINDOW", false);
    // Exactly up to the limit is fine.
    let w3 = c.with_passkey(c.withdrawal(3, second - 1), env.now());
    expect_signed(env.sign(&w3, &env.psbt_for(&c, second - 1)));
    // The window counts from the signer's log, across a restart, and rolls.
    env.restart();
    let w2 = c.with_passkey(c.withdrawal(2, second), env.now());
    expect_refused(env.sign(&w2, &psbt2), "LIMIT_WINDOW", false);
    env.advance_s(DAY_S + 1);
    let w2 = c.with_passkey(c.withdrawal(2, second), env.now());
    expect_signed(env.sign(&w2, &psbt2));
}

#[test]
fn registrations() {
    let env = Env::new();
    let c = Customer::new(1);
    env.ok(&c.register_passkey());
    env.ok(&c.register_address());
    // The same again is a no-op; another destination under the same id is tampering.
    env.ok(&c.register_address());
    assert_eq!(log_entries(&env.log_path(), "registered_address").len(), 1);
    let bad = [
        (
            Request::RegisterAddress {
                user: c.user,
                address_id: c.address_id,
                asset: 2,
                destination: c.address.clone(),
                label: String::new(),
                approval: None,
            },
            "ASSET_WRONG",
        ),
        (
            Request::RegisterAddress {
                user: c.user,
                address_id: c.address_id,
                asset: ASSET,
                destination: "ltc1qnotthisnetwork".into(),
                label: String::new(),
                approval: None,
            },
            "ADDRESS_INVALID",
        ),
        (
            Request::RegisterPasskey {
                user: c.user,
                credential_id: vec![1],
                public_key: vec![1, 2, 3],
                approval: None,
            },
            "FACTOR_INVALID",
        ),
        (
            Request::RegisterTotp {
                user: c.user,
                secret: kinko_signer_proto::protocol::SecretBytes::new(&[1; 4]),
                approval: None,
            },
            "FACTOR_INVALID",
        ),
    ];
    for (req, code) in bad {
        expect_refused(env.call(&req), code, false);
    }
    env.ok(&c.register_passkey());
    let other_key = Request::RegisterPasskey {
        user: c.user,
        credential_id: c.passkey.credential_id.clone(),
        public_key: Passkey::new().public_key(),
        approval: None,
    };
    expect_refused(env.call(&other_key), "FACTOR_CONFLICT", true);
    let moved = Request::RegisterAddress {
        user: c.user,
        address_id: c.address_id,
        asset: ASSET,
        destination: some_address(0xee).0,
        label: String::new(),
        approval: None,
    };
    expect_refused(env.call(&moved), "ADDRESS_CONFLICT", true);
}

#[test]
fn totp_secret_is_never_in_the_log_in_plaintext() {
    let mut env = Env::new();
    let c = Customer::new(1);
    env.onboard(&c);
    // Re-registering the same secret is a no-op; a new one replaces it (and must mature).
    env.ok(&c.register_totp());
    let text = env.log_text();
    let bytes = std::fs::read(env.log_path()).unwrap();
    let secret = &c.totp_secret;
    assert!(!text.contains(&hex::encode(secret)));
    assert!(!text
        .to_uppercase()
        .contains(&kinko_factors::totp::base32_encode(secret)));
    assert!(!bytes.windows(secret.len()).any(|w| w == &secret[..]));
    assert!(!text.contains(&format!("{:?}", &secret[..4]).replace(' ', "")));
    assert_eq!(log_entries(&env.log_path(), "registered_totp").len(), 1);
    // The sealed secret still works after a restart (rebuilt from the log).
    env.restart();
    let mut w = c.withdrawal(1, AMOUNT);
    w.proof = Some(c.totp_proof(&Customer::action(&w), env.now(), 0));
    expect_signed(env.sign(&w, &env.psbt_for(&c, AMOUNT)));
}

#[test]
fn sweeps_pay_only_cold_storage() {
    let env = Env::new();
    let cold = kinko_chain::keys::derive_cold(NET, &env.cold, 3).unwrap();
    let to_cold = 5_000_000;
    let psbt = env.psbt(&[(cold.script_pubkey.clone(), to_cold)]);
    let answer = env.call(&Request::SignSweep {
        psbt: kinko_chain::psbt::to_base64(&psbt),
        journal: None,
    });
    expect_signed(answer);
    let s = log_entries(&env.log_path(), "signed");
    assert_eq!(s[0]["entry"]["what"], "sweep");
    assert_eq!(s[0]["entry"]["amount_sats"], to_cold);
    assert_eq!(s[0]["entry"]["destinations"][0], cold.address);
    // A sweep counts toward no customer limit.
    assert!(matches!(
        env.call(&Request::Status),
        Response::Status {
            signed_in_window: 0,
            ..
        }
    ));
    // A cold address past the scanned range is found through the output's derivation.
    let far = kinko_chain::keys::derive_cold(NET, &env.cold, 20_000).unwrap();
    let mut psbt = env.psbt(&[(far.script_pubkey.clone(), to_cold)]);
    psbt.outputs[0].bip32_derivation = far.keys.iter().cloned().collect();
    expect_signed(env.call(&Request::SignSweep {
        psbt: kinko_chain::psbt::to_base64(&psbt),
        journal: None,
    }));
    // ... but not without it.
    let psbt = env.psbt(&[(far.script_pubkey.clone(), to_cold)]);
    let answer = env.call(&Request::SignSweep {
        psbt: kinko_chain::psbt::to_base64(&psbt),
        journal: None,
    });
    expect_refused(answer, "PSBT_MISMATCH", true);
    assert_eq!(env.clear("test"), Response::Ok);
    // A "sweep" to anything else is tampering.
    let evil = env.psbt(&[(some_address(0xee).1, to_cold)]);
    expect_refused(
        env.call(&Request::SignSweep {
            psbt: kinko_chain::psbt::to_base64(&evil),
            journal: None,
        }),
        "PSBT_MISMATCH",
        true,
    );
}

#[test]
fn hello_describes_the_signer() {
    let env = Env::new();
    match env.call(&Request::Hello) {
        Response::Hello {
            network,
            asset,
            asset_id,
            hot,
            cold,
            threshold,
            halted,
        } => {
            assert_eq!(
                (network.as_str(), asset.as_str(), asset_id),
                ("litecoin-regtest", "LTC", ASSET)
            );
            assert_eq!(hot, env.hot.to_string());
            assert_eq!(
                cold,
                env.cold.keys.iter().map(|k| k.to_string()).collect::<Vec<_>>()
            );
            assert_eq!((threshold, halted), (2, None));
        }
        other => panic!("{other:?}"),
    }
}

/// Proof of control for the proof of reserves: the signer signs only the message it builds
/// itself from asset, sequence and nonce, for its own asset; the signature verifies with the hot
/// key and for nothing else.
#[test]
fn proof_of_control_signs_only_its_fixed_message() {
    use kinko_chain::control::{control_message, verify_control};
    let env = Env::new();
    let nonce = [7u8; 32];
    let (message, key, signature) = match env.call(&Request::ProveControl {
        asset: "LTC".into(),
        sequence: 42,
        nonce,
    }) {
        Response::ControlProof {
            message,
            key,
            signature,
        } => (message, key, signature),
        other => panic!("expected a control proof, got {other:?}"),
    };
    assert_eq!(message, control_message("LTC", 42, &nonce).unwrap());
    assert_eq!(key, env.hot.to_string());
    verify_control(&env.hot, &message, &signature).unwrap();
    for other in [
        control_message("LTC", 43, &nonce).unwrap(),
        control_message("LTC", 42, &[8; 32]).unwrap(),
        control_message("BTC", 42, &nonce).unwrap(),
    ] {
        assert!(verify_control(&env.hot, &other, &signature).is_err(), "{other}");
    }
    for (asset, code) in [
        ("BTC", "WRONG_ASSET"),
        ("LTC\nfee 1", "WRONG_ASSET"),
        ("", "WRONG_ASSET"),
    ] {
        match env.call(&Request::ProveControl {
            asset: asset.into(),
            sequence: 1,
            nonce,
        }) {
            Response::Error { code: c, .. } => assert_eq!(c, code, "{asset:?}"),
            other => panic!("{asset:?}: {other:?}"),
        }
    }
    // A transaction cannot ride in: the request has no field for one, and unknown fields are
    // refused when the frame is read.
    let raw = serde_json::json!({"type": "prove_control", "asset": "LTC", "sequence": 1,
        "nonce": "07".repeat(32), "psbt": "cHNidP8B"});
    assert!(serde_json::from_value::<Request>(raw).is_err());
}
