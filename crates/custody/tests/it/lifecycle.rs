//! Recorded transactions followed to finality: reorgs that take away a credited deposit after
//! it was swept and after a withdrawal spent the sweep's change, a move the engine refuses
//! (never broadcast), and a restart between recording and broadcasting (the same transaction
//! is sent, once, and the signer is not asked again).

use crate::custody::double_spend;
use crate::rig::{Options, Rig, COIN, NET};
use kinko_core::ledger::{TransferKind, TransferRequest};
use kinko_core::wallet::{CustodyMoveKind, CustodyMoveStatus, DepositStatus, WithdrawalStatus};
use kinko_core::{Amount, Command, SystemAccount, TransferId, UserId};
use kinko_signer_proto::protocol::{Request, Response};
use kinko_signer_proto::SignerClient;
use serde_json::json;

fn mempool(rig: &Rig) -> Vec<String> {
    rig.node.rpc().call("getrawmempool", json!([])).unwrap()
}

/// The block holding `txid` (a transaction of the miner's wallet).
fn block_of(rig: &Rig, txid: &str) -> String {
    let t: serde_json::Value = rig.miner().call("gettransaction", json!([txid])).unwrap();
    t["blockhash"].as_str().unwrap().to_owned()
}

/// Customer-to-customer payment in the ledger (a trade, say).
fn pay(rig: &Rig, from: UserId, to: UserId, amount: u64) {
    rig.run(Command::OpenAccount {
        user: to,
        asset: rig.asset,
    })
    .unwrap();
    let (debit, credit) = rig.link.view(|e| {
        (
            e.ledger().customer_account(from, rig.asset).unwrap(),
            e.ledger().customer_account(to, rig.asset).unwrap(),
        )
    });
    rig.run(Command::Transfers(vec![TransferRequest {
        id: TransferId(1),
        kind: TransferKind::Post {
            debit,
            credit,
            amount: Amount(amount.into()),
        },
        linked: false,
        code: 1,
        user_data: 0,
    }]))
    .unwrap();
}

#[test]
fn a_deposit_reorganised_away_after_its_sweep_and_a_withdrawal_of_the_change_reverts_all_three() {
    let mut rig = Rig::start(Options {
        confirmations: 1,
        finality_depth: 1,
        hot_share_bps: 9_500,
        // Not about fees: the sweep goes without company funds (its miner fee paid with
        // customers' coins), as an explicit setting (tests/it/fees.rs covers the default).
        sweep_waits_for_company_funds: false,
        ..Options::default()
    });
    let alice = rig.user(1);
    let bob = rig.user(2);
    // 20 credited; the hot wallet may hold 95% (19): 10.5 less fees swept to cold, 9.5 stay
    // as the sweep's change.
    rig.deposit(alice.0, "20");
    let deposit = rig.link.view(|e| e.wallet().deposits()[0].clone());
    assert_eq!(deposit.status, DepositStatus::Credited);
    let sweep = rig.link.view(|e| e.wallet().custody_moves()[0].clone());
    assert_eq!(sweep.kind, CustodyMoveKind::Sweep);
    let dest = rig.miner().get_new_address("alice elsewhere").unwrap();
    let to = rig.withdrawal_address(alice.0, &dest);
    rig.mine(1);
    rig.poll();
    rig.signer_waits();
    // Alice pays bob 3 in the exchange and withdraws 9, paid from the sweep's change.
    pay(&rig, alice.0, bob.0, 3 * COIN);
    let w = rig.withdraw(&alice, to, 9 * COIN).unwrap();
    rig.poll();
    let sent = rig.withdrawal(w.id);
    assert_eq!(sent.status, WithdrawalStatus::Broadcast, "{:?}", sent.reason);
    let txid = sent.txid.clone().unwrap();
    let tx: bitcoin::Transaction =
        bitcoin::consensus::encode::deserialize_hex(&rig.node.rpc().get_raw_transaction(&txid).unwrap())
            .unwrap();
    assert_eq!(tx.input[0].previous_output.txid.to_string(), sweep.txid);
    rig.mine(1);
    rig.poll();
    assert_eq!(rig.withdrawal(w.id).status, WithdrawalStatus::Completed);
    assert_eq!(rig.customer(alice.0).0, (20 - 3 - 9) * COIN as i128);
    assert!(rig.open_incidents().is_empty());

    // The deposit is double-spent in a longer chain: deposit, sweep and withdrawal are gone
    // (-4 confirmations).
    rig.node
        .rpc()
        .invalidate_block(&block_of(&rig, &deposit.txid))
        .unwrap();
    double_spend(&rig, &deposit.txid);
    rig.mine(3);
    rig.poll();
    let reverted = rig.withdrawal(w.id);
    assert_eq!(
        reverted.status,
        WithdrawalStatus::Reverted,
        "{:?}",
        reverted.reason
    );
    assert!(
        reverted.reason.as_deref().unwrap_or("").contains("conflicted"),
        "{:?}",
        reverted.reason
    );
    let m = rig.link.view(|e| e.wallet().custody_moves()[0].clone());
    assert_eq!((m.status, m.shortfall), (CustodyMoveStatus::Reverted, Amount(0)));
    let d = rig.link.view(|e| e.wallet().deposits()[0].clone());
    assert_eq!(d.status, DepositStatus::Reversed);
    // Alice is not left debited for the 9 that never arrived: credited back, then the deposit
    // taken back; only what she paid bob is missing, in suspense as an open risk item.
    assert_eq!(rig.customer(alice.0), (0, 0));
    assert_eq!(rig.customer(bob.0).0, 3 * COIN as i128);
    assert_eq!(d.shortfall, Amount((3 * COIN).into()));
    assert_eq!(rig.system(SystemAccount::Suspense), -(3 * COIN as i128));
    assert_eq!(rig.system(SystemAccount::HotWallet), 0);
    assert_eq!(rig.system(SystemAccount::ColdWallet), 0);
    assert_eq!(rig.system(SystemAccount::NetworkFees), 0);
    // An incident for each reverted transaction, none for an unapproved outflow.
    let mut kinds: Vec<String> = rig.open_incidents().into_iter().map(|i| i.kind).collect();
    kinds.sort();
    assert_eq!(kinds, ["custody_move_reverted", "withdrawal_reverted"]);
    // Nothing is sent again by itself; later polls change nothing.
    rig.poll();
    rig.mine(1);
    rig.poll();
    assert_eq!(rig.withdrawal(w.id).status, WithdrawalStatus::Reverted);
    assert_eq!(rig.open_incidents().len(), 2);
    assert!(mempool(&rig).is_empty());
    rig.audit();
}

#[test]
fn a_sweep_the_engine_refuses_to_record_is_never_broadcast() {
    let mut rig = Rig::start(Options {
        hot_cap: COIN,
        hot_share_bps: 500,
        // Not about fees: the sweep goes without company funds (its miner fee paid with
        // customers' coins), as an explicit setting (tests/it/fees.rs covers the default).
        sweep_waits_for_company_funds: false,
        ..Options::default()
    });
    rig.poll();
    // 5 LTC arrive on a hot change address the ledger knows nothing of: the node holds more
    // than the ledger, and a sweep of it is refused by the engine (CUSTODY_EXCEEDED).
    let change = kinko_chain::keys::derive_hot(NET, &rig.hot_key, 1, 5).unwrap();
    let address = kinko_chain::address_for(NET, &change.script_pubkey).unwrap();
    rig.miner().send_to_address(&address, "5").unwrap();
    rig.mine(2);
    for _ in 0..3 {
        let err = rig.custody.poll().unwrap_err();
        assert!(err.to_string().contains("CUSTODY_EXCEEDED"), "{err}");
        // Never on the network, so reconciliation sees no spend of ours it does not know.
        assert!(mempool(&rig).is_empty());
        assert!(rig.link.view(|e| e.wallet().custody_moves().is_empty()));
        assert!(rig.open_incidents().is_empty());
        assert!(rig.withdrawals_on());
    }
    assert_eq!(rig.custody.balances().unwrap().0, 5 * COIN);
    rig.audit();
}

#[test]
fn a_restart_between_recording_and_broadcasting_sends_the_recorded_transaction_once() {
    let (mut rig, alice, dest, w) = half_coin_withdrawal();
    // kinko dies after the signer signed and the transaction was recorded, before it was sent.
    rig.custody.crash_before_next_broadcast();
    let err = rig.custody.poll().unwrap_err();
    assert!(matches!(err, kinko_custody::CustodyError::Crashed(_)), "{err}");
    let recorded = rig.withdrawal(w.id);
    assert_eq!(recorded.status, WithdrawalStatus::Signed);
    let txid = recorded.txid.clone().unwrap();
    assert!(recorded.raw_tx.is_some());
    assert!(mempool(&rig).is_empty());
    // The customer is debited already; the ledger knows the transaction as kinko's.
    assert_eq!(rig.customer(alice.0).0, (2 * COIN - COIN / 2 - 100_000) as i128);
    // While it is down, a larger coin arrives: a rebuilt transaction would pick it.
    let address = rig.deposit_address(alice.0);
    rig.miner().send_to_address(&address, "7").unwrap();
    rig.mine(2);
    // A new service over the same engine, node and signer.
    rig.custody = rig.restarted();
    rig.poll();
    let sent = rig.withdrawal(w.id);
    assert_eq!(
        (sent.status, sent.txid.as_deref()),
        (WithdrawalStatus::Broadcast, Some(txid.as_str()))
    );
    assert_eq!(mempool(&rig), vec![txid.clone()]);
    rig.poll();
    rig.mine(2);
    rig.poll();
    rig.poll();
    assert_eq!(rig.withdrawal(w.id).status, WithdrawalStatus::Completed);
    // Paid exactly once on chain; the signer was not asked again and is not halted.
    paid_once_and_signer_clean(&rig, &dest);
}

#[test]
fn a_restart_between_signing_and_recording_asks_the_signer_for_the_same_transaction() {
    let (mut rig, alice, dest, w) = half_coin_withdrawal();
    // kinko dies after the signer signed, before the signed transaction was journaled.
    rig.custody.crash_after_next_signing();
    let err = rig.custody.poll().unwrap_err();
    assert!(matches!(err, kinko_custody::CustodyError::Crashed(_)), "{err}");
    let taken = rig.withdrawal(w.id);
    assert_eq!(taken.status, WithdrawalStatus::Signing);
    assert!(taken.txid.is_none());
    assert!(mempool(&rig).is_empty());
    // While it is down, a larger coin arrives: a rebuilt transaction would pick it, and the
    // signer, which signed this withdrawal once, would take that for tampering and halt.
    let address = rig.deposit_address(alice.0);
    rig.miner().send_to_address(&address, "7").unwrap();
    rig.mine(2);
    rig.custody = rig.restarted();
    rig.poll();
    let sent = rig.withdrawal(w.id);
    assert_eq!(sent.status, WithdrawalStatus::Broadcast, "{sent:?}");
    let txid = sent.txid.clone().unwrap();
    assert_eq!(mempool(&rig), vec![txid]);
    rig.mine(2);
    rig.poll();
    rig.poll();
    assert_eq!(rig.withdrawal(w.id).status, WithdrawalStatus::Completed);
    paid_once_and_signer_clean(&rig, &dest);
}

/// A customer as the rig makes one: id, session, TOTP secret.
type Customer = (UserId, [u8; 32], Vec<u8>);

/// A rig with a withdrawal fee that covers the miner fee (a restart's full reconciliation
/// would otherwise report the miner fee paid with customers' coins), and a customer's
/// withdrawal of half a coin, requested and ready for the signer.
fn half_coin_withdrawal() -> (Rig, Customer, String, kinko_core::wallet::Withdrawal) {
    let mut rig = Rig::start(Options::default());
    rig.run(Command::SetWithdrawalFee {
        asset: rig.asset,
        fee: Amount(100_000),
    })
    .unwrap();
    let alice = rig.user(1);
    rig.deposit(alice.0, "2");
    let dest = rig.miner().get_new_address("alice elsewhere").unwrap();
    let to = rig.withdrawal_address(alice.0, &dest);
    rig.poll();
    rig.signer_waits();
    let w = rig.withdraw(&alice, to, COIN / 2).unwrap();
    (rig, alice, dest, w)
}

/// `dest` was paid half a coin exactly once; the signer is not halted, no incident is open,
/// withdrawals run and the ledger audits.
fn paid_once_and_signer_clean(rig: &Rig, dest: &str) {
    let paid = rig
        .miner()
        .list_unspent(0, Some(std::slice::from_ref(&dest.to_owned())))
        .unwrap();
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0].amount_sats, COIN / 2);
    let mut signer = SignerClient::connect(&rig.signer_socket).unwrap();
    match signer.call(&Request::Status).unwrap() {
        Response::Status { halted, .. } => assert_eq!(halted, None),
        other => panic!("{other:?}"),
    }
    assert!(rig.open_incidents().is_empty(), "{:?}", rig.open_incidents());
    assert!(rig.withdrawals_on());
    rig.audit();
}
