//! A watch-only wallet sees deposits to derived addresses, with exact amounts.

use crate::support::*;
use kinko_chain::keys::derive_hot;

#[test]
fn deposit_is_seen_then_confirmed_and_listed_unspent() {
    let node = node();
    let miner = node.miner();
    let key = hot_key(2);
    let hot = hot_wallet(&node, "kinko-hot", &key);
    let to = derive_hot(NET, &key, 0, 3).unwrap();
    let cursor = node.rpc().get_best_block_hash().unwrap();
    // 0.29 has no exact binary floating-point form.
    let txid = miner.send_to_address(&to.address, "0.29").unwrap();

    let seen = poll("the deposit in the mempool", || {
        let since = hot.list_since_block(Some(&cursor), 1).unwrap();
        entry(&since.transactions, &txid).cloned()
    });
    assert_eq!(seen.category, "receive");
    assert_eq!(seen.amount_sats, 29_000_000);
    assert_eq!(seen.address.as_deref(), Some(to.address.as_str()));
    assert_eq!(
        (seen.confirmations, seen.blockhash.as_ref(), seen.blockheight),
        (0, None, None)
    );
    // Unconfirmed: only with min_conf 0.
    assert!(hot.list_unspent(1, None).unwrap().is_empty());
    assert_eq!(hot.list_unspent(0, None).unwrap().len(), 1);

    let block = node.mine(1).remove(0);
    let since = hot.list_since_block(Some(&cursor), 1).unwrap();
    let e = entry(&since.transactions, &txid).unwrap();
    assert_eq!(
        (e.confirmations, e.blockhash.as_deref(), e.blockheight),
        (1, Some(block.as_str()), Some(102))
    );
    assert_eq!(since.lastblock, block);
    node.mine(2);
    // With target 3, lastblock stays 2 below the tip and the deposit (3 confirmations) is
    // still reported from the old cursor.
    let since = hot.list_since_block(Some(&cursor), 3).unwrap();
    assert_eq!(entry(&since.transactions, &txid).unwrap().confirmations, 3);
    assert_eq!(since.lastblock, block);
    // From the new cursor nothing new.
    let later = hot
        .list_since_block(Some(&node.rpc().get_best_block_hash().unwrap()), 1)
        .unwrap();
    assert!(later.transactions.is_empty(), "{later:?}");

    let unspent = hot.list_unspent(1, None).unwrap();
    assert_eq!(unspent.len(), 1);
    let u = &unspent[0];
    assert_eq!(
        (u.txid.as_str(), u.amount_sats, u.confirmations),
        (txid.as_str(), 29_000_000, 3)
    );
    assert_eq!(u.script().unwrap(), to.script_pubkey);
    assert_eq!(u.address.as_deref(), Some(to.address.as_str()));
    assert_eq!(
        hot.list_unspent(1, Some(std::slice::from_ref(&to.address)))
            .unwrap(),
        unspent
    );
    let other = derive_hot(NET, &key, 0, 4).unwrap().address;
    assert!(hot.list_unspent(1, Some(&[other])).unwrap().is_empty());
    let detail = hot.get_transaction(&txid).unwrap();
    assert_eq!((detail.confirmations, detail.fee_sats), (3, None));
    assert_eq!(tx_from_hex(&detail.hex).compute_txid().to_string(), txid);
    let balances = hot.get_balances().unwrap();
    assert_eq!(balances.watchonly.unwrap().trusted_sats, 29_000_000);
}
