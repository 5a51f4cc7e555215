//! The ports that services plug into, shared by the gateway and the custody services so that
//! neither depends on the other: [`ChainAdapter`] (deposit addresses and address checks, which
//! the gateway asks of whatever chain runs — the custody service's real chain, or the simulated
//! chain of `kinko-sim`), [`CustodyOps`] (the operator's custody actions, which the custody
//! service carries out) and [`SecretOpener`] (sealed secrets opened for the signer).

use kinko_core::UserId;

pub trait ChainAdapter: Send + Sync {
    /// A new deposit address for `user` on the chain of `asset` (the user's `n`-th; the
    /// `index`-th of the asset, which derives it on a real chain), or `None` when no chain is
    /// configured for the asset.
    fn deposit_address(&self, asset: &str, user: UserId, n: u32, index: u32) -> Option<String>;
    /// The canonical form of `address` on `asset`'s chain, or `None` if it is not a valid
    /// address there. Two spellings of one destination (bech32 in upper or lower case, a
    /// Litecoin P2SH address under its legacy or current prefix) give the same string: it is
    /// what the gateway stores and the engine compares, exactly.
    fn canonical_address(&self, asset: &str, address: &str) -> Option<String>;
    /// Whether `address` is well formed for `asset`'s chain.
    fn valid_address(&self, asset: &str, address: &str) -> bool {
        self.canonical_address(asset, address).is_some()
    }
    /// Whether withdrawals of `asset` can be carried out at all.
    fn supports(&self, asset: &str) -> bool;
    /// How many confirmations a deposit of `asset` needs before it is credited (`None`: not
    /// known here).
    fn deposit_confirmations(&self, _asset: &str) -> Option<u32> {
        None
    }
}

/// No chain configured: deposits and withdrawals are unavailable.
pub struct NoChain;

impl ChainAdapter for NoChain {
    fn deposit_address(&self, _asset: &str, _user: UserId, _n: u32, _index: u32) -> Option<String> {
        None
    }
    fn canonical_address(&self, _asset: &str, _address: &str) -> Option<String> {
        None
    }
    fn supports(&self, _asset: &str) -> bool {
        false
    }
}

/// Several chains behind one adapter: each asset goes to the first chain that supports it.
pub struct Chains(pub Vec<std::sync::Arc<dyn ChainAdapter>>);

impl Chains {
    fn of(&self, asset: &str) -> Option<&dyn ChainAdapter> {
        self.0.iter().find(|c| c.supports(asset)).map(|c| &**c)
    }
}

impl ChainAdapter for Chains {
    fn deposit_address(&self, asset: &str, user: UserId, n: u32, index: u32) -> Option<String> {
        self.of(asset)?.deposit_address(asset, user, n, index)
    }
    fn canonical_address(&self, asset: &str, address: &str) -> Option<String> {
        self.of(asset)?.canonical_address(asset, address)
    }
    fn supports(&self, asset: &str) -> bool {
        self.of(asset).is_some()
    }
    fn deposit_confirmations(&self, asset: &str) -> Option<u32> {
        self.of(asset)?.deposit_confirmations(asset)
    }
}

/// What the gateway needs from custody services. Calls block (node and signer I/O); the
/// gateway runs them on the blocking pool.
pub trait CustodyOps: Send + Sync {
    /// The node's balances of the hot and cold wallets, in minor units.
    fn balances(&self, asset: &str) -> Result<(u128, u128), CustodyOpsError>;
    /// An unsigned request moving `amount` (minor units) from cold to hot: a PSBT (base64)
    /// for a UTXO chain, a refill request (JSON) for the cold multisig of an Ethereum chain.
    fn refill(&self, asset: &str, amount: u128) -> Result<String, CustodyOpsError>;
    /// Broadcasts a refill signed by enough keyholders: (txid, amount to hot, miner fee; for
    /// an Ethereum chain the gas paid from hot, in wei).
    fn submit(&self, asset: &str, psbt: &str) -> Result<(String, u128, u128), CustodyOpsError>;
    /// The company's own deposit address of `asset`: what arrives there is credited to the
    /// company treasury (company funds, which pay miner fees withdrawal fees do not cover).
    fn company_address(&self, asset: &str) -> Result<String, CustodyOpsError>;
    /// The hot wallet's cap for `asset` as (share of customer liabilities in basis points,
    /// absolute cap in minor units); `None` where no custody service runs for it.
    fn hot_policy(&self, _asset: &str) -> Option<(u32, u64)> {
        None
    }
    /// On an account chain (Ethereum), where the hot wallet's coins are on the node: (the hot
    /// address, what it holds, what the deposit addresses hold, in minor units). `None` on a
    /// chain whose hot wallet is one wallet (Litecoin).
    fn hot_breakdown(&self, _asset: &str) -> Option<Result<(String, u128, u128), CustodyOpsError>> {
        None
    }
}

/// Why a custody operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CustodyOpsError {
    #[error("no custody service for {0}")]
    NoService(String),
    /// The service's own error (node, signer, PSBT), for the operator.
    #[error("{0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Opens secrets the gateway sealed under the master key, for services that must hand them on
/// (the custody service teaches the signer each user's TOTP secret).
pub trait SecretOpener: Send + Sync {
    /// The plaintext of `sealed`, or `None` if it does not open under this key.
    fn open(&self, sealed: &[u8]) -> Option<Vec<u8>>;
}
