//! Reconciliation and theft detection against a real node: a hot-wallet key used outside
//! kinko, and customer funds not covered by custody.

use crate::rig::{Options, Rig, COIN, NET, PASSPHRASE};
use bitcoin::consensus::encode::serialize_hex;
use kinko_chain::keys::derive_hot;
use kinko_chain::{psbt, script_for};
use kinko_core::wallet::WithdrawalStatus;
use kinko_core::{Reject, SystemAccount};
use kinko_custody::reconcile::{BY, KIND_HOT_SHORTFALL, KIND_RESERVE_SHORTFALL, KIND_UNAPPROVED_OUTFLOW};
use kinko_signer::sign::sign;
use kinko_signer::Keystore;

/// A user with `coins` LTC deposited and credited, and a whitelisted withdrawal address the
/// signer knows and has waited for.
pub fn funded(
    rig: &mut Rig,
    coins: &str,
) -> (
    (kinko_core::UserId, [u8; 32], Vec<u8>),
    kinko_core::wallet::AddressId,
) {
    let alice = rig.user(1);
    rig.deposit(alice.0, coins);
    let dest = rig.miner().get_new_address("alice elsewhere").unwrap();
    let to = rig.withdrawal_address(alice.0, &dest);
    rig.poll();
    rig.signer_waits();
    (alice, to)
}

#[test]
fn a_hot_wallet_key_used_outside_kinko_halts_withdrawals_at_the_next_poll() {
    let mut rig = Rig::start(Options::default());
    let (alice, to) = funded(&mut rig, "2");
    assert_eq!(rig.customer(alice.0).1, 2 * COIN as u128);
    assert!(rig.open_incidents().is_empty());
    assert!(rig.withdrawals_on());

    // Someone with the hot keystore signs a transaction of their own, outside kinko: 1.5 LTC
    // to their address, the rest back to one of our change addresses, and broadcasts it.
    let keys = Keystore::open_with(&rig.dir.path().join("hot.keystore"), PASSPHRASE, true).unwrap();
    let attacker = rig.miner().get_new_address("attacker").unwrap();
    let change = derive_hot(NET, &rig.hot_key, 1, 7).unwrap();
    let stolen = COIN + COIN / 2;
    let mut built = psbt::build(
        NET,
        &rig.custody.hot_utxos().unwrap(),
        &[(script_for(NET, &attacker).unwrap(), stolen)],
        Some(&change),
        10,
    )
    .unwrap();
    assert!(sign(&mut built.psbt, &keys.master()).unwrap() > 0);
    let tx = psbt::finalize(&built.psbt).unwrap();
    let txid = rig.node.rpc().send_raw_transaction(&serialize_hex(&tx)).unwrap();
    assert!(
        rig.node.rpc().get_mempool_entry(&txid).unwrap().is_some(),
        "unconfirmed"
    );
    assert_eq!(built.change, 2 * COIN - stolen - built.fee);

    // One poll: withdrawals halted and one incident naming the transaction. Missing is what
    // left custody: the 1.5 LTC paid to the attacker plus the miner fee (every input was ours).
    rig.poll();
    assert!(!rig.withdrawals_on());
    let open = rig.open_incidents();
    assert_eq!(open.len(), 1, "{open:?}");
    let i = &open[0];
    assert_eq!(i.kind, KIND_UNAPPROVED_OUTFLOW);
    assert_eq!(i.asset, Some(rig.asset));
    assert_eq!(i.txids, vec![txid.clone()]);
    assert_eq!(i.missing.0, u128::from(stolen + built.fee));
    assert_eq!(i.customer_share.0 + i.company_share.0, i.missing.0);
    assert_eq!(i.opened_by, BY);
    assert!(i.summary.contains(&attacker), "{}", i.summary);
    // The hot wallet's shortfall is this spend: no second incident for it.
    let (node_hot, _) = rig.custody.balances().unwrap();
    assert_eq!(node_hot, built.change);
    assert_eq!(rig.system(SystemAccount::HotWallet), 2 * COIN as i128);

    // New withdrawals are refused.
    assert_eq!(
        rig.withdraw(&alice, to, COIN / 10).unwrap_err(),
        Reject::WithdrawalsDisabled
    );

    // Polls after it, confirmed or not, and a restart (which lists the whole history again and
    // runs the full reconciliation) open nothing more.
    rig.poll();
    rig.mine(1);
    rig.poll();
    rig.restarted().poll().unwrap();
    let open = rig.open_incidents();
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(!rig.withdrawals_on());
    rig.audit();
}

#[test]
fn miner_fees_paid_with_customer_coins_are_a_reserve_shortfall_at_the_full_reconciliation() {
    let mut rig = Rig::start(Options::default());
    let (alice, to) = funded(&mut rig, "2");
    // No withdrawal fee: the exchange pays the miner out of custody, with no company funds
    // to pay it from.
    let w = rig.withdraw(&alice, to, COIN / 2).unwrap();
    rig.poll();
    rig.mine(2);
    rig.poll();
    let w = rig.withdrawal(w.id);
    assert_eq!(w.status, WithdrawalStatus::Completed);
    let fee = w.network_fee.0;
    assert!(fee > 0);
    // Per poll the hot wallet matches the ledger: nothing is raised.
    assert!(rig.open_incidents().is_empty());
    // The next full reconciliation (a restart runs one at once): customers hold 1.5 LTC, the
    // node 1.5 LTC less the fee.
    let (node_hot, node_cold) = rig.custody.balances().unwrap();
    assert_eq!(u128::from(node_hot + node_cold), 3 * COIN as u128 / 2 - fee);
    rig.restarted().poll().unwrap();
    let open = rig.open_incidents();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].kind, KIND_RESERVE_SHORTFALL);
    assert_eq!(open[0].missing.0, fee);
    assert!(open[0].txids.is_empty());
    // An incident for operators, not a halt: nothing left unexplained.
    assert!(rig.withdrawals_on());
    // Explained by that incident from now on.
    rig.restarted().poll().unwrap();
    assert_eq!(rig.open_incidents().len(), 1);
    rig.audit();
}

#[test]
fn coins_burnt_to_the_miner_without_a_send_entry_are_a_hot_shortfall() {
    let mut rig = Rig::start(Options::default());
    let _ = funded(&mut rig, "2");
    // The hot key used outside kinko again, paying only our own change addresses (so the
    // node's wallet lists no `send`) and leaving 0.4 LTC more to the miner.
    let keys = Keystore::open_with(&rig.dir.path().join("hot.keystore"), PASSPHRASE, true).unwrap();
    let ours = derive_hot(NET, &rig.hot_key, 1, 8).unwrap();
    let change = derive_hot(NET, &rig.hot_key, 1, 9).unwrap();
    let mut built = psbt::build(
        NET,
        &rig.custody.hot_utxos().unwrap(),
        &[(ours.script_pubkey.clone(), COIN)],
        Some(&change),
        10,
    )
    .unwrap();
    let burnt = 4 * COIN / 10;
    let out = &mut built.psbt.unsigned_tx.output[1];
    out.value = bitcoin::Amount::from_sat(out.value.to_sat() - burnt);
    assert!(sign(&mut built.psbt, &keys.master()).unwrap() > 0);
    let tx = psbt::finalize(&built.psbt).unwrap();
    // Any fee rate (the node's default refuses such a fee).
    let txid: String = rig
        .node
        .rpc()
        .call("sendrawtransaction", serde_json::json!([serialize_hex(&tx), 0]))
        .unwrap();
    let listed = rig
        .node
        .rpc()
        .wallet(&rig.custody.config().hot_wallet())
        .list_since_block(None, 1)
        .unwrap();
    assert!(
        !listed
            .transactions
            .iter()
            .any(|t| t.txid == txid && t.category == "send"),
        "{listed:?}"
    );
    // The balance check finds it: the hot wallet is short of what the ledger expects by what
    // the miner got.
    rig.poll();
    assert!(!rig.withdrawals_on());
    let open = rig.open_incidents();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].kind, KIND_HOT_SHORTFALL);
    assert_eq!(open[0].missing.0, u128::from(burnt + built.fee));
    // Once.
    rig.poll();
    rig.restarted().poll().unwrap();
    assert_eq!(rig.open_incidents().len(), 1);
    rig.audit();
}

#[test]
fn cold_coins_spent_outside_kinko_are_an_unapproved_outflow() {
    let mut rig = Rig::start(Options {
        hot_cap: COIN,
        hot_share_bps: 500,
        // Not about fees: the sweep goes without company funds (its miner fee paid with
        // customers' coins), as an explicit setting (tests/it/fees.rs covers the default).
        sweep_waits_for_company_funds: false,
        ..Options::default()
    });
    let alice = rig.user(1);
    rig.deposit(alice.0, "10");
    // Cold coins are spent only at the finality depth.
    rig.mine(2);
    rig.poll();
    assert_eq!(rig.link.view(|e| e.wallet().custody_moves().len()), 1);
    assert!(rig.open_incidents().is_empty());
    // Two keyholders sign, outside kinko, what started as a refill but pays 2 LTC to them.
    let mut p = psbt::from_base64(&rig.custody.refill_psbt(2 * COIN).unwrap()).unwrap();
    let thief = rig.miner().get_new_address("keyholders").unwrap();
    p.unsigned_tx.output[0].script_pubkey = script_for(NET, &thief).unwrap();
    p.outputs[0] = Default::default();
    for k in [&rig.cold_keystores[0], &rig.cold_keystores[1]] {
        let keys = Keystore::open_with(k, PASSPHRASE, true).unwrap();
        assert!(sign(&mut p, &keys.master()).unwrap() > 0);
    }
    let tx = psbt::finalize(&p).unwrap();
    let fee = psbt::summarise(NET, &p).unwrap().fee;
    let txid = rig.node.rpc().send_raw_transaction(&serialize_hex(&tx)).unwrap();
    rig.poll();
    assert!(!rig.withdrawals_on());
    let open = rig.open_incidents();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].kind, KIND_UNAPPROVED_OUTFLOW);
    assert_eq!(open[0].txids, vec![txid]);
    assert_eq!(open[0].missing.0, u128::from(2 * COIN + fee));
    // Confirmed, and after a restart: no second incident for it. The restart's full
    // reconciliation counts the theft as explained; what it does report is the sweep's miner
    // fee, paid with customers' coins (no company funds in this rig).
    rig.mine(1);
    rig.poll();
    rig.restarted().poll().unwrap();
    let open = rig.open_incidents();
    assert_eq!(open.len(), 2, "{open:#?}");
    assert_eq!(open[0].kind, KIND_UNAPPROVED_OUTFLOW);
    let sweep_fee = rig.link.view(|e| e.wallet().custody_moves()[0].network_fee.0);
    assert_eq!(
        (open[1].kind.as_str(), open[1].missing.0),
        (KIND_RESERVE_SHORTFALL, sweep_fee)
    );
    rig.audit();
}
