//! Shared helpers: nodes, fixed test keys, bounded polling.

use kinko_chain::keys::{hot_account_path, hot_descriptor, watch_key, WatchKey};
use kinko_chain::rpc::{Rpc, WalletTx};
use kinko_chain::{Network, RegtestNode};
use std::time::{Duration, Instant};

pub const NET: Network = Network::LitecoinRegtest;

pub fn node() -> RegtestNode {
    RegtestNode::start().unwrap_or_else(|e| panic!("{e}"))
}

/// A test master key from a fixed seed.
pub fn master(seed: u8) -> bitcoin::bip32::Xpriv {
    bitcoin::bip32::Xpriv::new_master(bitcoin::NetworkKind::Test, &[seed; 32]).unwrap()
}

pub fn hot_key(seed: u8) -> WatchKey {
    watch_key(&master(seed), &hot_account_path(NET))
}

/// Polls `f` every 20 ms until it gives `Some`, failing after 30 s.
pub fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after 30 s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A watch-only wallet `name` on `node` watching the hot key's receive and change chains.
pub fn hot_wallet(node: &RegtestNode, name: &str, key: &WatchKey) -> Rpc {
    node.rpc().create_watch_only_wallet(name).unwrap();
    let w = node.rpc().wallet(name);
    w.import_descriptor(&hot_descriptor(key, 0), 20, false).unwrap();
    w.import_descriptor(&hot_descriptor(key, 1), 20, false).unwrap();
    w
}

/// The entry of `txid` among `txs`, if any.
pub fn entry<'a>(txs: &'a [WalletTx], txid: &str) -> Option<&'a WalletTx> {
    txs.iter().find(|t| t.txid == txid)
}

pub fn tx_from_hex(hex_tx: &str) -> bitcoin::Transaction {
    bitcoin::consensus::deserialize(&hex::decode(hex_tx).unwrap()).unwrap()
}
