//! The gateway's view of a UTXO chain: deposit addresses derived from the hot account's xpub
//! (receive chain, the asset's `index`-th address) and address checks for the network.

use kinko_chain::keys::{derive_hot, WatchKey};
use kinko_chain::{script_for, Network};
use kinko_core::UserId;
use kinko_engine::ports::ChainAdapter;

pub struct UtxoChain {
    asset: String,
    network: Network,
    hot_key: WatchKey,
    /// How many receive addresses the node watches ([`crate::Custody::receive_gate`]); none:
    /// no limit (tests of the adapter alone).
    gate: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl UtxoChain {
    pub fn new(asset: &str, network: Network, hot_key: WatchKey) -> UtxoChain {
        UtxoChain {
            asset: asset.to_owned(),
            network,
            hot_key,
            gate: None,
        }
    }

    /// Hands out only addresses the node already watches: a deposit to an address imported
    /// later (without a rescan) would be missed.
    pub fn gated(mut self, gate: std::sync::Arc<std::sync::atomic::AtomicU64>) -> UtxoChain {
        self.gate = Some(gate);
        self
    }
}

impl ChainAdapter for UtxoChain {
    fn deposit_address(&self, asset: &str, _user: UserId, _n: u32, index: u32) -> Option<String> {
        if !self.supports(asset) {
            return None;
        }
        if let Some(g) = &self.gate {
            if u64::from(index) >= g.load(std::sync::atomic::Ordering::Acquire) {
                return None;
            }
        }
        derive_hot(self.network, &self.hot_key, 0, index)
            .ok()
            .map(|d| d.address)
    }
    fn valid_address(&self, asset: &str, address: &str) -> bool {
        self.supports(asset) && script_for(self.network, address).is_ok()
    }
    fn supports(&self, asset: &str) -> bool {
        asset == self.asset
    }
}
