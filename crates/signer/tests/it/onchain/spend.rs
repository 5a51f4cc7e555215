//! Hot wallet spend: build → sign → finalize → accepted, mined, fee as built.

use super::*;
use kinko_chain::keys::derive_hot;
use kinko_chain::psbt::{self, Summary};
use kinko_chain::script_for;
use kinko_signer::sign::sign;

#[test]
fn build_sign_finalize_broadcast_confirm() {
    let node = node();
    let miner = node.miner();
    let key = hot_key(3);
    let hot = hot_wallet(&node, "kinko-hot", &key);
    let ours = hot_receive(&key, 5);
    for (i, amount) in [(0, "0.3"), (1, "0.2"), (4, "0.00005")] {
        miner.send_to_address(&ours[i].address, amount).unwrap();
    }
    node.mine(1);
    let coins = utxos(&hot.list_unspent(1, None).unwrap(), &ours);
    assert_eq!(coins.len(), 3);

    let dest_addr = miner.get_new_address("withdrawal").unwrap();
    let dest = script_for(NET, &dest_addr).unwrap();
    let change = derive_hot(NET, &key, 1, 0).unwrap();
    let built = psbt::build(NET, &coins, &[(dest.clone(), 40_000_000)], Some(&change), 5).unwrap();
    let Summary { inputs, outputs, fee } = psbt::summarise(NET, &built.psbt).unwrap();
    assert_eq!(inputs.len(), 2, "largest first: 0.3 and 0.2");
    assert_eq!(fee, built.fee);
    assert_eq!(inputs.iter().map(|(_, v)| v).sum::<u64>(), 50_000_000);
    assert_eq!(outputs[0].address.as_deref(), Some(dest_addr.as_str()));
    assert_eq!(outputs[1].value, built.change);
    assert_eq!(built.change, 50_000_000 - 40_000_000 - built.fee);

    let mut signed = psbt::from_base64(&psbt::to_base64(&built.psbt)).unwrap();
    assert_eq!(sign(&mut signed, &master(99)).unwrap(), 0);
    assert_eq!(sign(&mut signed, &master(3)).unwrap(), 2);
    let tx = psbt::finalize(&signed).unwrap();
    let hex_tx = bitcoin::consensus::encode::serialize_hex(&tx);
    let accept = node.rpc().test_mempool_accept(&hex_tx).unwrap();
    assert!(accept.allowed, "{accept:?}");
    assert_eq!(accept.fee_sats, Some(built.fee));
    // Estimated size is an upper bound: the real fee rate is at least what was asked.
    assert!(accept.vsize.unwrap() * 5 <= built.fee, "{accept:?} {}", built.fee);
    let txid = node.rpc().send_raw_transaction(&hex_tx).unwrap();
    assert_eq!(txid, tx.compute_txid().to_string());
    let entry = node.rpc().get_mempool_entry(&txid).unwrap().unwrap();
    assert_eq!(entry.fee_sats, built.fee);

    // Unconfirmed change of our own spend: Core calls it unsafe in a watch-only wallet, so
    // it is listed only with min_conf 0.
    let pending = hot.list_unspent(0, None).unwrap();
    assert!(
        pending.iter().any(|u| u.txid == txid && u.confirmations == 0),
        "{pending:?}"
    );

    node.mine(1);
    let detail = hot.get_transaction(&txid).unwrap();
    assert_eq!(detail.confirmations, 1);
    assert_eq!(detail.fee_sats, Some(-i64::try_from(built.fee).unwrap()));
    let left = hot.list_unspent(1, None).unwrap();
    let mut left: Vec<(String, u64)> = left
        .into_iter()
        .map(|u| (u.address.unwrap(), u.amount_sats))
        .collect();
    left.sort();
    let mut want = vec![
        (ours[4].address.clone(), 5000),
        (change.address.clone(), built.change),
    ];
    want.sort();
    assert_eq!(left, want);
    // The change (internal chain) is not reported as a deposit.
    let all = hot.list_since_block(None, 1).unwrap();
    let ours_in_spend: Vec<_> = all.transactions.iter().filter(|t| t.txid == txid).collect();
    assert!(
        ours_in_spend.iter().all(|t| t.category == "send"),
        "{ours_in_spend:?}"
    );
    assert!(
        ours_in_spend
            .iter()
            .any(|t| t.amount_sats == -40_000_000 && t.address.as_deref() == Some(&dest_addr)),
        "{ours_in_spend:?}"
    );
}
