//! What the gateway needs from chains: deposit addresses and address checks. Real adapters
//! (Litecoin Core, an Ethereum node, behind the signer) implement [`ChainAdapter`]; the embedded
//! demo uses [`SimChain`], a simulated chain that exists only under `kinko serve --demo`.

use kinko_core::UserId;

pub trait ChainAdapter: Send + Sync {
    /// A new deposit address for `user` on the chain of `asset` (the user's `n`-th; the
    /// `index`-th of the asset, which derives it on a real chain), or `None` when no chain is
    /// configured for the asset.
    fn deposit_address(&self, asset: &str, user: UserId, n: u32, index: u32) -> Option<String>;
    /// Whether `address` is well formed for `asset`'s chain.
    fn valid_address(&self, asset: &str, address: &str) -> bool;
    /// Whether withdrawals of `asset` can be carried out at all.
    fn supports(&self, asset: &str) -> bool;
}

/// No chain configured: deposits and withdrawals are unavailable.
pub struct NoChain;

impl ChainAdapter for NoChain {
    fn deposit_address(&self, _asset: &str, _user: UserId, _n: u32, _index: u32) -> Option<String> {
        None
    }
    fn valid_address(&self, _asset: &str, _address: &str) -> bool {
        false
    }
    fn supports(&self, _asset: &str) -> bool {
        false
    }
}

/// The demo's simulated chain: every asset is "on chain"; addresses are `sim1` + 40 hex digits
/// derived from a per-data-directory seed.
pub struct SimChain {
    seed: [u8; 32],
    assets: Vec<String>,
}

impl SimChain {
    /// A simulated chain for the listed assets (fiat assets are left out).
    pub fn new(seed: [u8; 32], assets: &[&str]) -> SimChain {
        SimChain {
            seed,
            assets: assets.iter().map(|a| (*a).to_owned()).collect(),
        }
    }
    pub fn address(&self, label: &str) -> String {
        let h = blake3::keyed_hash(&self.seed, label.as_bytes());
        format!("sim1{}", hex::encode(&h.as_bytes()[..20]))
    }
}

impl ChainAdapter for SimChain {
    fn deposit_address(&self, asset: &str, user: UserId, n: u32, _index: u32) -> Option<String> {
        self.supports(asset)
            .then(|| self.address(&format!("deposit/{asset}/{}/{n}", user.0)))
    }
    fn valid_address(&self, asset: &str, address: &str) -> bool {
        self.supports(asset)
            && address.len() == 44
            && address.starts_with("sim1")
            && address[4..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }
    fn supports(&self, asset: &str) -> bool {
        self.assets.iter().any(|a| a == asset)
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
    fn valid_address(&self, asset: &str, address: &str) -> bool {
        self.of(asset).is_some_and(|c| c.valid_address(asset, address))
    }
    fn supports(&self, asset: &str) -> bool {
        self.of(asset).is_some()
    }
}
