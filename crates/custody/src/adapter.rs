//! The gateway's view of a UTXO chain: deposit addresses derived from the hot account's xpub
//! (receive chain, the asset's `index`-th address) and address checks for the network.

use kinko_api::chain::ChainAdapter;
use kinko_chain::keys::{derive_hot, WatchKey};
use kinko_chain::{script_for, Network};
use kinko_core::UserId;

pub struct UtxoChain {
    asset: String,
    network: Network,
    hot_key: WatchKey,
}

impl UtxoChain {
    pub fn new(asset: &str, network: Network, hot_key: WatchKey) -> UtxoChain {
        UtxoChain {
            asset: asset.to_owned(),
            network,
            hot_key,
        }
    }
}

impl ChainAdapter for UtxoChain {
    fn deposit_address(&self, asset: &str, _user: UserId, _n: u32, index: u32) -> Option<String> {
        if !self.supports(asset) {
            return None;
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
