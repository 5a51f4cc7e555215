//! Signing against a real `litecoind -regtest` (one node per test): kinko-chain builds and
//! finalizes, [`kinko_signer::sign::sign`] signs, the node accepts and mines. These lived in
//! kinko-chain's tests until signing moved to the signer.

mod cold;
mod spend;

use kinko_chain::keys::{derive_hot, hot_account_path, hot_descriptor, watch_key, Derived, WatchKey};
use kinko_chain::psbt::Utxo;
use kinko_chain::rpc::{Rpc, Unspent};
use kinko_chain::{Network, RegtestNode};

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

/// A watch-only wallet `name` on `node` watching the hot key's receive and change chains.
pub fn hot_wallet(node: &RegtestNode, name: &str, key: &WatchKey) -> Rpc {
    node.rpc().create_watch_only_wallet(name).unwrap();
    let w = node.rpc().wallet(name);
    w.import_descriptor(&hot_descriptor(key, 0), 20, false).unwrap();
    w.import_descriptor(&hot_descriptor(key, 1), 20, false).unwrap();
    w
}

/// Our coins among `unspent`, matched to the derived addresses `ours`.
pub fn utxos(unspent: &[Unspent], ours: &[Derived]) -> Vec<Utxo> {
    unspent
        .iter()
        .filter_map(|u| {
            let script = u.script()?;
            let derived = ours.iter().find(|d| d.script_pubkey == script)?.clone();
            Some(Utxo {
                outpoint: u.outpoint()?,
                value: u.amount_sats,
                derived,
            })
        })
        .collect()
}

/// Hot receive addresses 0..n.
pub fn hot_receive(key: &WatchKey, n: u32) -> Vec<Derived> {
    (0..n).map(|i| derive_hot(NET, key, 0, i).unwrap()).collect()
}
