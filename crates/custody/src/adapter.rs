//! The gateway's view of a UTXO chain: deposit addresses derived from the hot account's xpub
//! (receive chain, the asset's `index`-th address), and address checks and canonical forms for
//! the network.

use kinko_chain::keys::{derive_hot, WatchKey};
use kinko_chain::{address_for, script_for, Network};
use kinko_core::UserId;
use kinko_engine::ports::ChainAdapter;

pub struct UtxoChain {
    asset: String,
    network: Network,
    hot_key: WatchKey,
    /// How many receive addresses the node watches ([`crate::Custody::receive_gate`]); none:
    /// no limit (tests of the adapter alone).
    gate: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// The confirmations the custody service credits a deposit at (`with_confirmations`).
    confirmations: Option<u32>,
}

impl UtxoChain {
    pub fn new(asset: &str, network: Network, hot_key: WatchKey) -> UtxoChain {
        UtxoChain {
            asset: asset.to_owned(),
            network,
            hot_key,
            gate: None,
            confirmations: None,
        }
    }

    /// Hands out only addresses the node already watches: a deposit to an address imported
    /// later (without a rescan) would be missed.
    pub fn gated(mut self, gate: std::sync::Arc<std::sync::atomic::AtomicU64>) -> UtxoChain {
        self.gate = Some(gate);
        self
    }

    /// States the confirmations deposits need (the custody service's `confirmations`), which
    /// the gateway shows customers.
    pub fn with_confirmations(mut self, confirmations: u32) -> UtxoChain {
        self.confirmations = Some(confirmations);
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
    /// The address re-encoded from the script it pays: bech32 in lower case, P2SH under the
    /// network's current prefix (`M…` / `Q…`, never the legacy `3…` / `2…`).
    fn canonical_address(&self, asset: &str, address: &str) -> Option<String> {
        if !self.supports(asset) {
            return None;
        }
        let script = script_for(self.network, address).ok()?;
        address_for(self.network, &script)
    }
    fn supports(&self, asset: &str) -> bool {
        asset == self.asset
    }
    fn deposit_confirmations(&self, asset: &str) -> Option<u32> {
        self.confirmations.filter(|_| self.supports(asset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::{ScriptBuf, WitnessProgram, WitnessVersion};
    use kinko_chain::keys::{hot_account_path, watch_key};

    fn chain(net: Network) -> UtxoChain {
        let master = bitcoin::bip32::Xpriv::new_master(net.key_kind(), &[1; 32]).unwrap();
        UtxoChain::new("LTC", net, watch_key(&master, &hot_account_path(net)))
    }

    fn base58(version: u8, hash: [u8; 20]) -> String {
        let mut data = vec![version];
        data.extend_from_slice(&hash);
        bitcoin::base58::encode_check(&data)
    }

    /// Every spelling of one destination gives one canonical address; what is not an address
    /// of the network gives none.
    #[test]
    fn spellings_of_one_destination_share_one_canonical_address() {
        for (net, p2sh_legacy, p2sh_current) in [
            (Network::Litecoin, '3', 'M'),
            (Network::LitecoinTestnet, '2', 'Q'),
            (Network::LitecoinRegtest, '2', 'Q'),
        ] {
            let c = chain(net);
            let [current, legacy] = net.p2sh_versions().map(|v| base58(v, [4; 20]));
            assert!(legacy.starts_with(p2sh_legacy), "{net:?}: {legacy}");
            assert!(current.starts_with(p2sh_current), "{net:?}: {current}");
            let wpkh = WitnessProgram::new(WitnessVersion::V0, &[7; 20]).unwrap();
            let bech32 = address_for(net, &ScriptBuf::new_witness_program(&wpkh)).unwrap();
            let wsh = WitnessProgram::new(WitnessVersion::V0, &[9; 32]).unwrap();
            let bech32_wsh = address_for(net, &ScriptBuf::new_witness_program(&wsh)).unwrap();
            let p2pkh = base58(net.p2pkh_version(), [3; 20]);
            let cases: Vec<(String, Option<&String>)> = vec![
                (current.clone(), Some(&current)),
                (legacy.clone(), Some(&current)),
                (bech32.clone(), Some(&bech32)),
                (bech32.to_ascii_uppercase(), Some(&bech32)),
                (bech32_wsh.to_ascii_uppercase(), Some(&bech32_wsh)),
                (p2pkh.clone(), Some(&p2pkh)),
                // Mixed case is not bech32; base58 is case-sensitive.
                (mixed_case(&bech32), None),
                (current.to_ascii_lowercase(), None),
                (String::new(), None),
                ("not an address".into(), None),
            ];
            for (given, want) in cases {
                assert_eq!(
                    c.canonical_address("LTC", &given).as_ref(),
                    want,
                    "{net:?}: {given}"
                );
                assert_eq!(c.valid_address("LTC", &given), want.is_some(), "{net:?}: {given}");
            }
            // Another asset's addresses are not this chain's to judge.
            assert_eq!(c.canonical_address("BTC", &current), None);
        }
        // An address of another network is refused, in any spelling.
        let main = chain(Network::Litecoin);
        let wpkh = WitnessProgram::new(WitnessVersion::V0, &[7; 20]).unwrap();
        let regtest = address_for(Network::LitecoinRegtest, &ScriptBuf::new_witness_program(&wpkh)).unwrap();
        assert_eq!(main.canonical_address("LTC", &regtest), None);
        assert_eq!(main.canonical_address("LTC", &regtest.to_ascii_uppercase()), None);
    }

    fn mixed_case(s: &str) -> String {
        s.chars()
            .enumerate()
            .map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c })
            .collect()
    }
}
