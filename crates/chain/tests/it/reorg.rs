//! What `listsinceblock` reports when a deposit's block leaves the main chain, and when a
//! conflicting transaction replaces the deposit (documented on `Rpc::list_since_block`).

use crate::support::*;
use bitcoin::{absolute, transaction, Amount, Sequence, Transaction, TxIn, TxOut, Witness};
use kinko_chain::keys::derive_hot;
use kinko_chain::script_for;
use serde_json::json;

#[test]
fn reorged_and_double_spent_deposit() {
    let node = node();
    let rpc = node.rpc();
    let miner = node.miner();
    let key = hot_key(5);
    let hot = hot_wallet(&node, "kinko-hot", &key);
    let to = derive_hot(NET, &key, 0, 2).unwrap();
    let before = rpc.get_best_block_hash().unwrap();
    let txid = miner.send_to_address(&to.address, "0.25").unwrap();
    let block = node.mine(1).remove(0);
    let since = hot.list_since_block(Some(&before), 1).unwrap();
    assert_eq!(entry(&since.transactions, &txid).unwrap().confirmations, 1);
    assert_eq!(since.lastblock, block);

    // 1. The deposit's block is invalidated: back to the mempool.
    rpc.invalidate_block(&block).unwrap();
    let since = hot.list_since_block(Some(&before), 1).unwrap();
    let e = entry(&since.transactions, &txid).expect("listed again");
    assert_eq!(
        (e.confirmations, e.blockhash.as_ref(), e.blockheight),
        (0, None, None)
    );
    assert!(since.removed.is_empty(), "{since:?}");
    assert_eq!(since.lastblock, before);
    // 2. From a cursor at the removed block: `removed` has it, with its current state.
    let since = hot.list_since_block(Some(&block), 1).unwrap();
    assert_eq!(entry(&since.removed, &txid).unwrap().confirmations, 0);
    assert_eq!(entry(&since.transactions, &txid).unwrap().confirmations, 0);
    assert_eq!(since.lastblock, before);
    assert!(rpc.get_mempool_entry(&txid).unwrap().is_some());

    // 3. A conflicting transaction (same input, paying the miner) is mined.
    let deposit = tx_from_hex(&rpc.get_raw_transaction(&txid).unwrap());
    let spent = deposit.input[0].previous_output;
    let parent = tx_from_hex(&rpc.get_raw_transaction(&spent.txid.to_string()).unwrap());
    let value = parent.output[spent.vout as usize].value.to_sat();
    let back = script_for(NET, &miner.get_new_address("").unwrap()).unwrap();
    let conflict = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: spent,
            sequence: Sequence::MAX,
            ..TxIn::default()
        }],
        output: vec![TxOut {
            value: Amount::from_sat(value - 100_000),
            script_pubkey: back,
        }],
    };
    assert!(conflict.input[0].witness == Witness::new());
    #[derive(serde::Deserialize)]
    struct Signed {
        hex: String,
        complete: bool,
    }
    let signed: Signed = miner
        .call(
            "signrawtransactionwithwallet",
            json!([bitcoin::consensus::encode::serialize_hex(&conflict)]),
        )
        .unwrap();
    assert!(signed.complete);
    let mine_to = miner.get_new_address("").unwrap();
    let _: serde_json::Value = rpc.call("generateblock", json!([mine_to, [signed.hex]])).unwrap();
    assert!(rpc.get_mempool_entry(&txid).unwrap().is_none());
    // Cursor on the main chain: the conflicted deposit is in neither list.
    let since = hot.list_since_block(Some(&before), 1).unwrap();
    assert!(entry(&since.transactions, &txid).is_none(), "{since:?}");
    assert!(entry(&since.removed, &txid).is_none(), "{since:?}");
    // Only gettransaction tells.
    assert_eq!(hot.get_transaction(&txid).unwrap().confirmations, -1);
    // Cursor at the removed block: `removed` reports it conflicted.
    let since = hot.list_since_block(Some(&block), 1).unwrap();
    assert_eq!(entry(&since.removed, &txid).unwrap().confirmations, -1);
    assert!(entry(&since.transactions, &txid).is_none());
    // Nothing to spend.
    assert!(hot.list_unspent(0, None).unwrap().is_empty());
    // Reconsidering the old block switches back to it (equal work: the block first received
    // wins): the deposit is confirmed again, in its old block, after having been conflicted.
    let new_tip = rpc.get_best_block_hash().unwrap();
    rpc.reconsider_block(&block).unwrap();
    assert_eq!(rpc.get_best_block_hash().unwrap(), block);
    let detail = hot.get_transaction(&txid).unwrap();
    assert_eq!(
        (detail.confirmations, detail.blockhash.as_deref()),
        (1, Some(block.as_str()))
    );
    let since = hot.list_since_block(Some(&before), 1).unwrap();
    assert_eq!(entry(&since.transactions, &txid).unwrap().confirmations, 1);
    // From the abandoned tip's cursor it is a plain new transaction; nothing of ours removed.
    let since = hot.list_since_block(Some(&new_tip), 1).unwrap();
    assert_eq!(entry(&since.transactions, &txid).unwrap().confirmations, 1);
    assert!(since.removed.is_empty(), "{since:?}");
}
