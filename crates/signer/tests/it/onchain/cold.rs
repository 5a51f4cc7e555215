//! 2-of-3 cold wallet: two keyholders sign separately (base64 between machines), combine,
//! broadcast.

use super::*;
use kinko_chain::keys::{cold_account_path, cold_descriptor, derive_cold, derive_hot, watch_key, ColdKeys};
use kinko_chain::psbt::{self, PsbtError};
use kinko_signer::sign::sign;

#[test]
fn two_of_three_refill() {
    let node = node();
    let miner = node.miner();
    let masters: Vec<_> = (21..=23).map(master).collect();
    let cold = ColdKeys {
        threshold: 2,
        keys: masters
            .iter()
            .map(|m| watch_key(m, &cold_account_path(NET)))
            .collect(),
    };
    let rpc = node.rpc();
    rpc.create_watch_only_wallet("kinko-cold").unwrap();
    let wallet = rpc.wallet("kinko-cold");
    wallet
        .import_descriptor(&cold_descriptor(&cold), 10, false)
        .unwrap();
    let ours: Vec<_> = (0..3).map(|i| derive_cold(NET, &cold, i).unwrap()).collect();
    let funding = miner.send_to_address(&ours[0].address, "0.5").unwrap();
    node.mine(1);
    let coins = utxos(&wallet.list_unspent(1, None).unwrap(), &ours);
    assert_eq!(coins.len(), 1);
    assert_eq!(coins[0].outpoint.txid.to_string(), funding);

    let hot = derive_hot(NET, &hot_key(4), 0, 7).unwrap();
    let built = psbt::build(
        NET,
        &coins,
        &[(hot.script_pubkey.clone(), 30_000_000)],
        Some(&ours[1]),
        2,
    )
    .unwrap();
    let file = psbt::to_base64(&built.psbt);

    // Keyholder 1, on their own machine.
    let mut one = psbt::from_base64(&file).unwrap();
    assert_eq!(sign(&mut one, &masters[0]).unwrap(), 1);
    let file_one = psbt::to_base64(&one);
    assert_eq!(
        psbt::finalize(&psbt::from_base64(&file_one).unwrap()),
        Err(PsbtError::NotEnoughSignatures {
            input: 0,
            have: 1,
            need: 2
        })
    );
    // Keyholder 3, from the original file.
    let mut three = psbt::from_base64(&file).unwrap();
    assert_eq!(sign(&mut three, &masters[2]).unwrap(), 1);
    let file_three = psbt::to_base64(&three);

    let both = psbt::combine(
        psbt::from_base64(&file_one).unwrap(),
        psbt::from_base64(&file_three).unwrap(),
    )
    .unwrap();
    let tx = psbt::finalize(&both).unwrap();
    let hex_tx = bitcoin::consensus::encode::serialize_hex(&tx);
    let accept = rpc.test_mempool_accept(&hex_tx).unwrap();
    assert!(accept.allowed, "{accept:?}");
    assert!(accept.vsize.unwrap() * 2 <= built.fee);
    let txid = rpc.send_raw_transaction(&hex_tx).unwrap();
    node.mine(1);
    let detail = wallet.get_transaction(&txid).unwrap();
    assert_eq!(detail.confirmations, 1);
    assert_eq!(detail.fee_sats, Some(-i64::try_from(built.fee).unwrap()));
    let left = wallet.list_unspent(1, None).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].address.as_deref(), left[0].amount_sats),
        (Some(ours[1].address.as_str()), built.change)
    );
    assert_eq!(built.change, 50_000_000 - 30_000_000 - built.fee);
    // Change to a receive-chain (non-internal) address of the same wallet is listed as a
    // send to ourselves *and* a receive: a watcher must not count it as a deposit.
    let listed = wallet.list_since_block(None, 1).unwrap();
    let mut spend: Vec<(String, i64)> = listed
        .transactions
        .iter()
        .filter(|t| t.txid == txid)
        .map(|t| (t.category.clone(), t.amount_sats))
        .collect();
    spend.sort();
    let change = i64::try_from(built.change).unwrap();
    assert_eq!(
        spend,
        vec![
            ("receive".into(), change),
            ("send".into(), -30_000_000),
            ("send".into(), -change)
        ]
    );
}
