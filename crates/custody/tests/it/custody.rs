//! Deposits, withdrawals, reorgs, tampering, sweeps and refills on a real regtest node.

use crate::rig::{Options, Rig, COIN, NET, PASSPHRASE};
use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::{absolute, transaction, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};
use kinko_chain::psbt;
use kinko_chain::rpc::Rpc;
use kinko_chain::script_for;
use kinko_core::wallet::{DepositStatus, WithdrawalStatus};
use kinko_core::SystemAccount;
use kinko_signer::sign::sign;
use kinko_signer_proto::protocol::{Request, Response};
use kinko_signer_proto::SignerClient;
use serde_json::json;

fn deposit_status(rig: &Rig, n: usize) -> DepositStatus {
    rig.link.view(|e| e.wallet().deposits()[n].status)
}

fn deposits(rig: &Rig) -> usize {
    rig.link.view(|e| e.wallet().deposits().len())
}

/// A transaction spending the first input of `txid` back to the miner, mined at once in a new
/// block: `txid` becomes a conflicted (double-spent) transaction.
pub(crate) fn double_spend(rig: &Rig, txid: &str) -> String {
    let miner = rig.miner();
    let hex = rig.node.rpc().get_raw_transaction(txid).unwrap();
    let tx: Transaction = deserialize_hex(&hex).unwrap();
    let spent = tx.input[0].previous_output;
    let prev: Transaction = deserialize_hex(
        &rig.node
            .rpc()
            .get_raw_transaction(&spent.txid.to_string())
            .unwrap(),
    )
    .unwrap();
    let value = prev.output[spent.vout as usize].value;
    let back = miner.get_new_address("double spend").unwrap();
    let conflict = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: spent.txid,
                vout: spent.vout,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: value - bitcoin::Amount::from_sat(50_000),
            script_pubkey: script_for(NET, &back).unwrap(),
        }],
    };
    let signed: serde_json::Value = miner
        .call("signrawtransactionwithwallet", json!([serialize_hex(&conflict)]))
        .unwrap();
    assert_eq!(signed["complete"], true, "{signed}");
    let hex = signed["hex"].as_str().unwrap().to_owned();
    let block: serde_json::Value = rig
        .node
        .rpc()
        .call("generateblock", json!([back, [hex]]))
        .unwrap();
    block["hash"].as_str().unwrap().to_owned()
}

fn sats(rpc: &Rpc, txid: &str, address: &str) -> u64 {
    let tx: Transaction = deserialize_hex(&rpc.get_raw_transaction(txid).unwrap()).unwrap();
    let script = script_for(NET, address).unwrap();
    tx.output
        .iter()
        .filter(|o| o.script_pubkey == script)
        .map(|o| o.value.to_sat())
        .sum()
}

#[test]
fn a_deposit_is_credited_once_after_its_confirmations() {
    let mut rig = Rig::start(Options::default());
    let alice = rig.user(1);
    let address = rig.deposit_address(alice.0);
    assert!(address.starts_with("rltc1q"), "{address}");
    rig.poll();
    let txid = rig.miner().send_to_address(&address, "1.5").unwrap();
    // Seen in the mempool: shown to alice but held; custody in flight.
    rig.poll();
    assert_eq!(deposits(&rig), 1);
    assert_eq!(deposit_status(&rig, 0), DepositStatus::Pending);
    assert_eq!(rig.customer(alice.0), (150_000_000, 0));
    assert_eq!(rig.system(SystemAccount::DepositsInFlight), 150_000_000);
    // One confirmation of two: still pending.
    rig.mine(1);
    rig.poll();
    assert_eq!(deposit_status(&rig, 0), DepositStatus::Pending);
    // Two: credited, exactly once however often the node reports it.
    rig.mine(1);
    rig.poll();
    rig.poll();
    assert_eq!(deposit_status(&rig, 0), DepositStatus::Credited);
    assert_eq!(deposits(&rig), 1);
    assert_eq!(rig.customer(alice.0), (150_000_000, 150_000_000));
    assert_eq!(rig.system(SystemAccount::HotWallet), 150_000_000);
    assert_eq!(rig.system(SystemAccount::DepositsInFlight), 0);
    let d = rig.link.view(|e| e.wallet().deposits()[0].clone());
    assert_eq!((d.txid.as_str(), d.amount.0), (txid.as_str(), 150_000_000));
    // A fresh service (a restart) lists everything again and changes nothing.
    let mut again = kinko_custody::Custody::new(rig.custody.config().clone(), rig.link.clone(), None);
    again.poll().unwrap();
    assert_eq!(deposits(&rig), 1);
    // The node agrees with the ledger; reconciliation (the restart's full one included) found
    // nothing.
    assert_eq!(rig.custody.balances().unwrap().0, 150_000_000);
    assert!(rig.open_incidents().is_empty());
    rig.audit();
}

#[test]
fn a_withdrawal_is_signed_broadcast_confirmed_and_its_fee_booked() {
    let mut rig = Rig::start(Options::default());
    let alice = rig.user(1);
    rig.deposit(alice.0, "2");
    assert_eq!(rig.customer(alice.0).1, 2 * COIN as u128);
    let dest = rig.miner().get_new_address("alice elsewhere").unwrap();
    let to = rig.withdrawal_address(alice.0, &dest);
    // The signer learns the address and alice's TOTP secret on the next poll, then lets its own
    // waiting periods pass.
    rig.poll();
    rig.signer_waits();
    let w = rig.withdraw(&alice, to, COIN / 2).unwrap();
    rig.poll();
    let w = rig.withdrawal(w.id);
    assert_eq!(w.status, WithdrawalStatus::Broadcast, "{:?}", w.reason);
    let txid = w.txid.clone().unwrap();
    assert!(w.network_fee.0 > 0);
    // The transaction pays exactly the approved amount to the approved address.
    assert_eq!(sats(&rig.node.rpc(), &txid, &dest), COIN / 2);
    assert_eq!(
        rig.customer(alice.0),
        ((2 * COIN - COIN / 2) as i128, (2 * COIN - COIN / 2) as u128)
    );
    assert_eq!(rig.system(SystemAccount::NetworkFees), w.network_fee.0 as i128);
    // Reconciliation knows the spend as kinko's, and the hot wallet matches the ledger with
    // the withdrawal in flight.
    assert!(rig.open_incidents().is_empty());
    assert!(rig.withdrawals_on());
    rig.mine(2);
    rig.poll();
    assert_eq!(rig.withdrawal(w.id).status, WithdrawalStatus::Completed);
    rig.poll();
    assert!(rig.open_incidents().is_empty());
    // Hot wallet: the node's coins equal the ledger's.
    let hot = rig.system(SystemAccount::HotWallet);
    assert_eq!(hot, (2 * COIN - COIN / 2) as i128 - w.network_fee.0 as i128);
    assert_eq!(rig.custody.balances().unwrap().0 as i128, hot);
    rig.audit();
}

#[test]
fn a_pending_deposit_double_spent_by_a_reorg_is_dropped_and_a_credited_one_reversed() {
    let mut rig = Rig::start(Options {
        confirmations: 1,
        ..Options::default()
    });
    let alice = rig.user(1);
    let a1 = rig.deposit_address(alice.0);
    let a2 = rig.deposit_address(alice.0);
    rig.poll();
    // Pending, then double-spent before its confirmation: dropped, nothing credited.
    let t1 = rig.miner().send_to_address(&a1, "1").unwrap();
    rig.poll();
    assert_eq!(deposit_status(&rig, 0), DepositStatus::Pending);
    double_spend(&rig, &t1);
    rig.poll();
    assert_eq!(deposit_status(&rig, 0), DepositStatus::Dropped);
    assert_eq!(rig.customer(alice.0), (0, 0));
    // Credited at one confirmation, then the block is reorganised away and the transaction
    // double-spent: reversed; alice still had the coins, so nothing is missing.
    let t2 = rig.miner().send_to_address(&a2, "3").unwrap();
    let block = rig.node.mine(1).remove(0);
    rig.poll();
    assert_eq!(deposit_status(&rig, 1), DepositStatus::Credited);
    assert_eq!(rig.customer(alice.0), (3 * COIN as i128, 3 * COIN as u128));
    rig.node.rpc().invalidate_block(&block).unwrap();
    double_spend(&rig, &t2);
    rig.poll();
    assert_eq!(deposit_status(&rig, 1), DepositStatus::Reversed);
    assert_eq!(rig.customer(alice.0), (0, 0));
    assert_eq!(rig.system(SystemAccount::HotWallet), 0);
    assert_eq!(rig.link.view(|e| e.wallet().open_risk_items().count()), 0);
    assert!(rig.open_incidents().is_empty());
    rig.audit();
}

#[test]
fn a_psbt_altered_to_pay_another_address_is_refused_and_halts_the_signer() {
    let mut rig = Rig::start(Options::default());
    let alice = rig.user(1);
    let bob = rig.user(2);
    for u in [&alice, &bob] {
        let address = rig.deposit_address(u.0);
        rig.miner().send_to_address(&address, "2").unwrap();
    }
    rig.poll();
    rig.mine(2);
    rig.poll();
    rig.poll();
    let dest = rig.miner().get_new_address("alice elsewhere").unwrap();
    let to = rig.withdrawal_address(alice.0, &dest);
    let bob_dest = rig.miner().get_new_address("bob elsewhere").unwrap();
    let bob_to = rig.withdrawal_address(bob.0, &bob_dest);
    rig.poll();
    rig.signer_waits();
    let w = rig.withdraw(&alice, to, COIN / 2).unwrap();
    // A compromised kinko host asks the signer to sign alice's approved withdrawal with a
    // transaction that pays the attacker instead.
    let attacker = rig.miner().get_new_address("attacker").unwrap();
    let change = kinko_chain::keys::derive_hot(NET, &rig.hot_key, 1, 7).unwrap();
    let utxos = rig.custody.hot_utxos().unwrap();
    let bad = psbt::build(
        NET,
        &utxos,
        &[(script_for(NET, &attacker).unwrap(), COIN / 2)],
        Some(&change),
        10,
    )
    .unwrap();
    let mut signer = SignerClient::connect(&rig.signer_socket).unwrap();
    let r = signer
        .call(&Request::SignWithdrawal {
            withdrawal: Box::new(kinko_custody::to_signer::withdrawal(&w)),
            psbt: psbt::to_base64(&bad.psbt),
            journal: None,
        })
        .unwrap();
    match r {
        Response::Refused { code, halted, .. } => {
            assert_eq!(code, "PSBT_MISMATCH");
            assert!(halted);
        }
        other => panic!("{other:?}"),
    }
    // Signing is halted: even the honest transaction is refused, the withdrawal fails and its
    // hold is released. No coin moved.
    rig.poll();
    let failed = rig.withdrawal(w.id);
    assert_eq!(failed.status, WithdrawalStatus::Failed);
    assert!(
        failed.reason.as_deref().unwrap_or("").contains("SIGNER_HALTED"),
        "{:?}",
        failed.reason
    );
    // The refusal custody received is counted for `/metrics` (kinko_signer_refusals_total).
    let refusals = rig.health.signer_refusals();
    assert_eq!(
        refusals.get(&("LTC".to_owned(), "SIGNER_HALTED".to_owned())),
        Some(&1),
        "{refusals:?}"
    );
    assert_eq!(rig.customer(alice.0), (2 * COIN as i128, 2 * COIN as u128));
    assert_eq!(rig.custody.balances().unwrap().0, 4 * COIN);
    assert!(rig
        .miner()
        .list_unspent(0, Some(std::slice::from_ref(&attacker)))
        .unwrap()
        .is_empty());
    // An operator who can open the keystore clears the halt; signing resumes.
    let Response::Challenge { nonce } = signer.call(&Request::ClearChallenge).unwrap() else {
        panic!()
    };
    let keys =
        kinko_signer::Keystore::open_with(&rig.dir.path().join("hot.keystore"), PASSPHRASE, true).unwrap();
    let reason = "investigated: the gateway host was rebuilt".to_owned();
    let mac = kinko_signer::service::clear_mac(&keys.clear_key(), &nonce, &reason);
    assert_eq!(
        signer
            .call(&Request::Clear {
                nonce,
                reason,
                mac,
                assertions: Vec::new(),
            })
            .unwrap(),
        Response::Ok
    );
    let w2 = rig.withdraw(&bob, bob_to, COIN / 4).unwrap();
    rig.poll();
    assert_eq!(rig.withdrawal(w2.id).status, WithdrawalStatus::Broadcast);
    assert!(rig.open_incidents().is_empty());
    rig.audit();
}

#[test]
fn the_hot_wallet_is_swept_to_cold_and_refilled_by_two_of_three_keyholders_offline() {
    let mut rig = Rig::start(Options {
        hot_cap: COIN,
        hot_share_bps: 500,
        // Not about fees: the sweep goes without company funds (its miner fee paid with
        // customers' coins), as an explicit setting (tests/it/fees.rs covers the default).
        sweep_waits_for_company_funds: false,
        ..Options::default()
    });
    let alice = rig.user(1);
    // Credited, then above the hot wallet's limit (5% of 10 = 0.5): swept to cold.
    rig.deposit(alice.0, "10");
    let moves = rig.link.view(|e| e.wallet().custody_moves().to_vec());
    assert_eq!(moves.len(), 1, "{moves:?}");
    let sweep = &moves[0];
    assert_eq!(sweep.kind, kinko_core::wallet::CustodyMoveKind::Sweep);
    let cold = rig.system(SystemAccount::ColdWallet);
    assert_eq!(cold, sweep.amount.0 as i128);
    let hot = rig.system(SystemAccount::HotWallet);
    assert!(hot <= (COIN / 2) as i128 && hot > 0, "hot {hot}");
    assert_eq!(
        hot + cold + rig.system(SystemAccount::NetworkFees),
        10 * COIN as i128
    );
    // Cold coins are spent only at the finality depth.
    rig.mine(2);
    rig.poll();
    let (node_hot, node_cold) = rig.custody.balances().unwrap();
    assert_eq!((node_hot as i128, node_cold as i128), (hot, cold));
    assert!(rig.open_incidents().is_empty());

    // Refill 2 LTC from cold: an unsigned PSBT, signed offline by keyholders 1 and 3.
    let unsigned = rig.custody.refill_psbt(2 * COIN).unwrap();
    let sign = |file: &str, keystore: &std::path::Path| {
        let mut p = psbt::from_base64(file).unwrap();
        let keys = kinko_signer::Keystore::open_with(keystore, PASSPHRASE, true).unwrap();
        assert!(sign(&mut p, &keys.master()).unwrap() > 0);
        psbt::to_base64(&p)
    };
    let once = sign(&unsigned, &rig.cold_keystores[0]);
    // One signature is not enough.
    let err = rig.custody.submit_refill(&once).unwrap_err();
    assert!(
        matches!(
            err,
            kinko_custody::CustodyError::Psbt {
                source: kinko_chain::PsbtError::NotEnoughSignatures { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("signatures"), "{err}");
    let twice = sign(&once, &rig.cold_keystores[2]);
    let (txid, amount, fee) = rig.custody.submit_refill(&twice).unwrap();
    assert_eq!(amount, 2 * COIN);
    assert!(fee > 0 && !txid.is_empty());
    assert_eq!(rig.system(SystemAccount::HotWallet), hot + 2 * COIN as i128);
    assert_eq!(
        rig.system(SystemAccount::ColdWallet),
        cold - (2 * COIN + fee) as i128
    );
    assert_eq!(rig.link.view(|e| e.wallet().custody_moves().len()), 2);
    // Submitting it again changes nothing (the node has it; the move is recorded once).
    rig.custody.submit_refill(&twice).unwrap();
    assert_eq!(rig.link.view(|e| e.wallet().custody_moves().len()), 2);
    assert_eq!(rig.system(SystemAccount::HotWallet), hot + 2 * COIN as i128);
    // The refill spends cold coins: reconciliation knows it as kinko's, unconfirmed and
    // confirmed.
    rig.poll();
    rig.mine(1);
    rig.poll();
    assert!(rig.open_incidents().is_empty());
    assert!(rig.withdrawals_on());
    rig.audit();
}
