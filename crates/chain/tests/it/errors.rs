//! Error paths of the RPC client and the node starter.

use crate::support::*;
use kinko_chain::rpc::{Rpc, RpcError, RPC_METHOD_NOT_FOUND, RPC_WALLET_ERROR, RPC_WALLET_NOT_FOUND};
use kinko_chain::RegtestNode;
use std::path::Path;

#[test]
fn rpc_errors_are_typed_and_hide_the_password() {
    let node = node();
    let wrong = Rpc::new(&node.url(), node.user(), "not-the-password");
    assert_eq!(wrong.get_block_count(), Err(RpcError::Http(401)));
    let rpc = node.rpc();
    match rpc.call::<serde_json::Value>("nosuchmethod", serde_json::json!([])) {
        Err(RpcError::Node { code, .. }) => assert_eq!(code, RPC_METHOD_NOT_FOUND),
        other => panic!("{other:?}"),
    }
    match rpc.get_block_hash(1_000_000) {
        Err(RpcError::Node { code: -8, message }) => assert!(message.contains("out of range"), "{message}"),
        other => panic!("{other:?}"),
    }
    match rpc.wallet("absent").list_since_block(None, 1) {
        Err(RpcError::Node { code, .. }) => assert_eq!(code, RPC_WALLET_NOT_FOUND),
        other => panic!("{other:?}"),
    }
    // A key-holding wallet is not accepted where a watch-only one is needed.
    node.miner();
    match rpc.create_watch_only_wallet("miner") {
        Err(RpcError::Node { code, .. }) => assert_eq!(code, RPC_WALLET_ERROR),
        other => panic!("{other:?}"),
    }
    // Creating the watch-only wallet twice is fine.
    rpc.create_watch_only_wallet("w").unwrap();
    rpc.create_watch_only_wallet("w").unwrap();
    rpc.call::<serde_json::Value>("unloadwallet", serde_json::json!(["w"]))
        .unwrap();
    rpc.create_watch_only_wallet("w").unwrap();
    assert!(rpc.list_wallets().unwrap().contains(&"w".to_string()));
    // Bad descriptor import is a node error, not a panic.
    assert!(matches!(
        rpc.wallet("w").import_descriptor("wpkh(nonsense)", 5, false),
        Err(RpcError::Node { .. })
    ));
    // Regtest has no fee estimate.
    assert_eq!(rpc.estimate_smart_fee(6).unwrap(), None);
    let info = rpc.get_blockchain_info().unwrap();
    assert_eq!((info.chain.as_str(), info.blocks), ("regtest", 101));
    assert_eq!(info.best_block_hash, rpc.get_best_block_hash().unwrap());
    assert_eq!(rpc.get_block_hash(101).unwrap(), info.best_block_hash);
    assert_eq!(rpc.get_mempool_entry(&"00".repeat(32)).unwrap(), None);
    // Transport error once the node is gone; the password never shows.
    let url = node.url();
    let password = node.password().to_string();
    drop(node);
    let gone = Rpc::new(&url, "kinko-test", &password);
    let e = gone.get_block_count().unwrap_err();
    assert!(matches!(e, RpcError::Transport(_)), "{e:?}");
    assert!(!format!("{e} {e:?} {gone:?}").contains(&password));
}

#[test]
fn missing_binary_says_how_to_install() {
    let e = RegtestNode::start_with(Path::new("/nonexistent/litecoind")).unwrap_err();
    assert!(matches!(e, kinko_chain::RegtestError::NotFound(_)), "{e}");
    assert!(e.to_string().contains("scripts/install-test-deps"), "{e}");
}
