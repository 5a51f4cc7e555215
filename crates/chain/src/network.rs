//! The chains kinko's UTXO custody speaks: Litecoin's three networks. Extended keys use the
//! standard BIP32 versions (`xpub` on mainnet, `tpub` on testnet and regtest), as Litecoin Core
//! does.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    Litecoin,
    LitecoinTestnet,
    LitecoinRegtest,
}

impl Network {
    pub const ALL: [Network; 3] = [
        Network::Litecoin,
        Network::LitecoinTestnet,
        Network::LitecoinRegtest,
    ];

    /// The configuration name: `litecoin`, `litecoin-testnet`, `litecoin-regtest`.
    pub fn name(self) -> &'static str {
        match self {
            Network::Litecoin => "litecoin",
            Network::LitecoinTestnet => "litecoin-testnet",
            Network::LitecoinRegtest => "litecoin-regtest",
        }
    }

    pub fn from_name(name: &str) -> Option<Network> {
        Network::ALL.into_iter().find(|n| n.name() == name)
    }

    /// Human-readable part of segwit addresses.
    pub fn hrp(self) -> &'static str {
        match self {
            Network::Litecoin => "ltc",
            Network::LitecoinTestnet => "tltc",
            Network::LitecoinRegtest => "rltc",
        }
    }

    /// Base58 version byte of pay-to-pubkey-hash addresses.
    pub fn p2pkh_version(self) -> u8 {
        match self {
            Network::Litecoin => 0x30,
            Network::LitecoinTestnet | Network::LitecoinRegtest => 0x6f,
        }
    }

    /// Base58 version bytes of pay-to-script-hash addresses: the current one first (what we
    /// encode), then the legacy one Litecoin still accepts (`3…` / `2…`).
    pub fn p2sh_versions(self) -> [u8; 2] {
        match self {
            Network::Litecoin => [0x32, 0x05],
            Network::LitecoinTestnet | Network::LitecoinRegtest => [0x3a, 0xc4],
        }
    }

    /// The BIP32 key versions (`xpub`/`xprv` or `tpub`/`tprv`).
    pub fn key_kind(self) -> bitcoin::NetworkKind {
        match self {
            Network::Litecoin => bitcoin::NetworkKind::Main,
            Network::LitecoinTestnet | Network::LitecoinRegtest => bitcoin::NetworkKind::Test,
        }
    }

    /// BIP44 coin type: 2 for Litecoin, 1 for every test network.
    pub fn coin_type(self) -> u32 {
        match self {
            Network::Litecoin => 2,
            Network::LitecoinTestnet | Network::LitecoinRegtest => 1,
        }
    }
}
