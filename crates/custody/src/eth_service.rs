//! The custody loop of one Ethereum chain and its tokens (docs/design/ethereum.md): one thread,
//! because ETH and every token are paid from the same hot key and share its nonces. Each poll
//! it feeds the signer (factors, the assets' whitelisted addresses), watches deposits of each
//! asset, hands requested withdrawals to the signer over its socket ([`SocketSigner`]) at the
//! next nonce of kinko's own records, and reconciles the hot key's transactions. The gateway's
//! view of the chain (deposit addresses, address checks) is [`EthChain`].

use crate::eth::{
    EthAsset, EthDeposits, EthReconcile, EthWatchError, EthWithdrawalConfig, EthWithdrawals, SocketSigner,
};
use crate::eth_cold::{ColdAsset, EthCold, EthColdConfig};
use crate::signer_feed::SignerFeed;
use bitcoin::bip32::Xpub;
use kinko_chain::eth::rpc::EthRpc;
use kinko_chain::eth::{derive_address, Branch, Eip1559, EthAddress};
use kinko_core::{AssetId, UserId};
use kinko_engine::health::{Health, Severity};
use kinko_engine::link::EngineLink;
use kinko_engine::ports::{ChainAdapter, SecretOpener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Gas of a plain ETH payment.
pub const ETH_TRANSFER_GAS: u64 = 21_000;
/// Gas offered for a token's `transfer` unless configured.
pub const TOKEN_TRANSFER_GAS_DEFAULT: u64 = 80_000;

/// One asset of the chain: ETH itself, or a token by its contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EthAssetConfig {
    /// The asset's code in kinko (`ETH`, `USDC`).
    pub code: String,
    pub kind: EthAsset,
    /// Gas offered for its withdrawals.
    pub gas_limit: u64,
    /// The hot wallet's cap as (share of customer funds in basis points, absolute cap in the
    /// asset's minor unit): what the metrics compare the hot balance with.
    pub hot_share_bps: u32,
    pub hot_cap: u128,
}

/// How kinko keeps custody on one Ethereum chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EthCustodyConfig {
    pub rpc_url: String,
    pub chain_id: u64,
    /// The signer's account xpub (`m/44'/60'/0'`, `kinko-signer eth-xpub`): deposit addresses
    /// and the hot address are derived from it; no private key here.
    pub account: Xpub,
    pub signer_socket: PathBuf,
    pub confirmations: u64,
    /// Blocks on top of a withdrawal's block before it is completed; at least `confirmations`.
    pub finality_depth: u64,
    pub poll: Duration,
    /// The block deposits and the hot key are scanned from after each start (deposits are
    /// credited once per (tx, log index) whatever is scanned again).
    pub start_block: u64,
    /// The priority fee offered (wei per gas), and the most custody offers per gas; above it a
    /// withdrawal waits for cheaper blocks. The signer holds its own, independent caps.
    pub priority_fee: u128,
    pub max_fee_cap: u128,
    /// ETH first, then its tokens.
    pub assets: Vec<EthAssetConfig>,
    /// Where each withdrawal's unsigned transaction is kept until the signer's answer is
    /// recorded (`<data_dir>/custody`; none: in memory only).
    pub state_dir: Option<PathBuf>,
    /// The cold multisig contract (docs/design/ethereum.md, "Cold setup"): the excess over the
    /// hot share goes there, refills come from it. None: no hot → cold, no refills.
    pub cold_contract: Option<EthAddress>,
}

struct Part {
    code: String,
    asset: AssetId,
    deposits: EthDeposits,
    withdrawals: EthWithdrawals,
    reconcile: EthReconcile,
}

/// The custody service of one Ethereum chain.
pub struct EthCustody {
    cfg: EthCustodyConfig,
    link: EngineLink,
    rpc: EthRpc,
    hot: EthAddress,
    /// Built at the first poll that finds every asset defined in the engine.
    parts: Vec<Part>,
    feed: SignerFeed,
    signer: SocketSigner,
    health: Health,
    /// The hot key's next nonce by kinko's records (`None`: not read since the start).
    next_nonce: Option<u64>,
    /// Hot ↔ cold, with a cold contract configured (built with the parts).
    cold: Option<EthCold>,
}

impl std::fmt::Debug for EthCustody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthCustody")
            .field("chain_id", &self.cfg.chain_id)
            .field("hot", &self.hot)
            .field("assets", &self.parts.iter().map(|p| &p.code).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn tx_hash_of(raw_hex: &str) -> Option<[u8; 32]> {
    hex::decode(raw_hex).ok().map(|raw| Eip1559::tx_hash(&raw))
}

impl EthCustody {
    pub fn new(
        cfg: EthCustodyConfig,
        link: EngineLink,
        vault: Option<Arc<dyn SecretOpener>>,
    ) -> Result<EthCustody, kinko_chain::eth::DeriveError> {
        let rpc = EthRpc::new(&cfg.rpc_url);
        let hot = derive_address(&cfg.account, Branch::Hot, 0)?;
        let feed = SignerFeed::new(cfg.signer_socket.clone(), link.clone(), vault);
        let signer = SocketSigner::new(cfg.signer_socket.clone(), link.clone());
        Ok(EthCustody {
            cfg,
            link,
            rpc,
            hot,
            parts: Vec::new(),
            feed,
            signer,
            health: Health::new(),
            next_nonce: None,
            cold: None,
        })
    }

    /// Each asset's deposit watcher, withdrawals and reconciliation, once the engine defines
    /// them all (a cluster's primary defines the configured assets after it takes the lease).
    fn ensure_parts(&mut self) -> Result<(), EthWatchError> {
        if !self.parts.is_empty() {
            return Ok(());
        }
        let cfg = &self.cfg;
        let node = self.rpc.chain_id()?;
        if node != cfg.chain_id {
            return Err(EthWatchError::ChainId {
                node,
                configured: cfg.chain_id,
            });
        }
        let mut parts = Vec::new();
        for a in &cfg.assets {
            let asset = self
                .link
                .view(|e| e.asset_by_code(&a.code))
                .ok_or_else(|| EthWatchError::UnknownAsset(a.code.clone()))?;
            let wcfg = EthWithdrawalConfig {
                chain_id: cfg.chain_id,
                gas_limit: a.gas_limit,
                priority_fee: cfg.priority_fee,
                max_fee_cap: cfg.max_fee_cap,
                finality_depth: cfg.finality_depth,
            };
            let (rpc, link, hot) = (&self.rpc, &self.link, self.hot);
            parts.push(Part {
                code: a.code.clone(),
                asset,
                deposits: EthDeposits::new(
                    rpc.clone(),
                    link.clone(),
                    asset,
                    a.kind,
                    cfg.account,
                    cfg.confirmations,
                    cfg.finality_depth.max(cfg.confirmations).saturating_mul(2),
                    cfg.start_block,
                ),
                withdrawals: {
                    let w = EthWithdrawals::new(rpc.clone(), link.clone(), asset, a.kind, hot, wcfg);
                    match &cfg.state_dir {
                        Some(d) => w.with_pending_dir(d, &a.code),
                        None => w,
                    }
                },
                reconcile: EthReconcile::new(rpc.clone(), link.clone(), asset, a.kind, hot, cfg.start_block),
            });
        }
        self.cold = match (cfg.cold_contract, parts.first()) {
            (Some(contract), Some(native)) => Some(EthCold::new(
                self.rpc.clone(),
                self.link.clone(),
                EthColdConfig {
                    chain_id: cfg.chain_id,
                    hot: self.hot,
                    contract,
                    native: native.asset,
                    priority_fee: cfg.priority_fee,
                    max_fee_cap: cfg.max_fee_cap,
                    finality_depth: cfg.finality_depth,
                    state_dir: cfg.state_dir.clone(),
                },
            )),
            _ => None,
        };
        self.parts = parts;
        Ok(())
    }

    /// Each asset as hot ↔ cold sees it.
    fn cold_assets(&self) -> Vec<ColdAsset> {
        self.parts
            .iter()
            .filter_map(|p| {
                let a = self.cfg.assets.iter().find(|a| a.code == p.code)?;
                Some(ColdAsset {
                    code: a.code.clone(),
                    asset: p.asset,
                    kind: a.kind,
                    gas_limit: a.gas_limit,
                    hot_share_bps: a.hot_share_bps,
                    hot_cap: a.hot_cap,
                })
            })
            .collect()
    }

    /// Sweeps each asset's excess to cold, then settles recorded cold moves (re-sent until
    /// mined, booked back if reverted).
    fn poll_cold(&mut self) -> Result<(), EthWatchError> {
        let assets: Vec<AssetId> = self.parts.iter().map(|p| p.asset).collect();
        let parts = self.cold_assets();
        let Some(cold) = self.cold.as_mut() else {
            return Ok(());
        };
        let mut first = None;
        for a in &parts {
            let Some(mut nonce) = self.next_nonce else {
                break;
            };
            let r = cold.sweep(&assets, a, &mut nonce, &self.signer);
            self.next_nonce = Some(nonce);
            if let Err(e) = r {
                tracing::warn!(asset = %a.code, error = %e, "the sweep to cold failed; retrying");
                first.get_or_insert(e);
            }
        }
        let settled = cold.settle(&assets);
        match first {
            Some(e) => Err(e),
            None => settled,
        }
    }

    fn cold_asset(&mut self, code: &str) -> Result<(ColdAsset, Vec<AssetId>), EthWatchError> {
        self.ensure_parts()?;
        let assets: Vec<AssetId> = self.parts.iter().map(|p| p.asset).collect();
        let a = self
            .cold_assets()
            .into_iter()
            .find(|a| a.code == code)
            .ok_or_else(|| EthWatchError::UnknownAsset(code.to_owned()))?;
        Ok((a, assets))
    }

    fn no_cold() -> EthWatchError {
        EthWatchError::Cold(crate::eth_cold::ColdRefused {
            code: "COLD_UNCONFIGURED",
            reason: "no cold_contract is configured for this chain".into(),
        })
    }

    /// The unsigned refill request (JSON) moving `amount` of `code` from the cold contract to
    /// the hot address, for the keyholders' `kinko-signer offline-sign`.
    pub fn refill_request(&mut self, code: &str, amount: u128) -> Result<String, EthWatchError> {
        let (a, _) = self.cold_asset(code)?;
        let cold = self.cold.as_ref().ok_or_else(Self::no_cold)?;
        let r = cold.refill_request(&a, amount)?;
        serde_json::to_string_pretty(&r).map_err(|e| EthWatchError::Pending(e.to_string()))
    }

    /// Submits a refill request the keyholders signed (see [`EthCold::submit_refill`]); the hot
    /// key's `execute` takes its next nonce. (txid, amount to hot, gas paid from hot in wei.)
    pub fn submit_refill(&mut self, code: &str, text: &str) -> Result<(String, u128, u128), EthWatchError> {
        let (_, assets) = self.cold_asset(code)?;
        let parts: Vec<ColdAsset> = self
            .cold_assets()
            .into_iter()
            .filter(|a| a.code == code)
            .collect();
        if self.next_nonce.is_none() {
            self.next_nonce = Some(self.read_next_nonce()?);
        }
        let mut nonce = self.next_nonce.unwrap_or(0);
        let cold = self.cold.as_mut().ok_or_else(Self::no_cold)?;
        let r = cold.submit_refill(&assets, &parts, text, &mut nonce, &self.signer);
        self.next_nonce = Some(nonce);
        r
    }

    /// Reports to `health` (the gateway's registry) instead of a private one.
    pub fn with_health(mut self, health: Health) -> EthCustody {
        self.health = health;
        self
    }

    pub fn config(&self) -> &EthCustodyConfig {
        &self.cfg
    }

    /// The hot address withdrawals are paid from.
    pub fn hot(&self) -> EthAddress {
        self.hot
    }

    /// The recorded transactions of the chain's assets (raw hex), all statuses: withdrawals
    /// and hot ↔ cold moves.
    fn recorded(&self) -> Vec<String> {
        let assets: Vec<AssetId> = self.parts.iter().map(|p| p.asset).collect();
        self.link.view(|e| {
            let w = e.wallet();
            w.withdrawals()
                .iter()
                .filter(|w| assets.contains(&w.asset))
                .filter_map(|w| w.raw_tx.clone())
                .chain(
                    w.custody_moves()
                        .iter()
                        .filter(|m| assets.contains(&m.asset))
                        .filter_map(|m| m.raw_tx.clone()),
                )
                .collect()
        })
    }

    /// The hot key's next nonce: after every transaction kinko recorded from it or kept for a
    /// withdrawal still `Signing`, and never below the node's pending count (a transaction kinko
    /// did not record is reconciliation's business, not a nonce to reuse).
    fn read_next_nonce(&self) -> Result<u64, EthWatchError> {
        let kept = self
            .parts
            .iter()
            .filter_map(|p| p.withdrawals.kept_next_nonce())
            .chain(self.cold.as_ref().and_then(|c| {
                let codes: Vec<String> = self.parts.iter().map(|p| p.code.clone()).collect();
                c.kept_next_nonce(&codes)
            }))
            .max()
            .unwrap_or(0);
        let recorded = self
            .recorded()
            .iter()
            .filter_map(|r| hex::decode(r).ok())
            .filter_map(|raw| Eip1559::decode_signed(&raw).ok())
            .map(|(tx, _)| tx.nonce.saturating_add(1))
            .max()
            .unwrap_or(0);
        Ok(recorded.max(kept).max(self.rpc.nonce(&self.hot, "pending")?))
    }

    /// One poll over every asset of the chain; the first error is returned after all ran.
    pub fn poll(&mut self) -> Result<(), EthWatchError> {
        // Only the node that writes acts (as the Litecoin loop).
        match self.link.handle().stats().role() {
            kinko_engine::Role::Single | kinko_engine::Role::Primary => {}
            other => return Err(EthWatchError::NotLeader(other.name())),
        }
        self.ensure_parts()?;
        let assets: Vec<AssetId> = self.parts.iter().map(|p| p.asset).collect();
        let name = format!("signer:{}", self.parts.first().map_or("ETH", |p| p.code.as_str()));
        match self.feed.register(&assets) {
            Ok(()) => self.health.up(&name, Severity::Critical),
            Err(e) => {
                self.health.down(&name, Severity::Critical, e.to_string());
                tracing::warn!(error = %e, "the Ethereum signer could not be fed");
            }
        }
        let mut first: Option<EthWatchError> = None;
        let mut note = |r: Result<(), EthWatchError>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        if self.next_nonce.is_none() {
            match self.read_next_nonce() {
                Ok(n) => self.next_nonce = Some(n),
                Err(e) => return Err(e),
            }
        }
        for p in &mut self.parts {
            note(p.deposits.poll().map(|_| ()));
            if let Some(n) = self.next_nonce {
                p.withdrawals.set_next_nonce(n);
            }
            let r = p.withdrawals.poll(&mut self.signer);
            self.next_nonce = p.withdrawals.next_nonce().or(self.next_nonce);
            note(r.map(|_| ()));
        }
        // Hot → cold after the withdrawals took what they need.
        note(self.poll_cold());
        // Every transaction kinko recorded from the hot key (withdrawals, cold moves, this
        // poll's too) is ours for reconciliation.
        let ours: Vec<[u8; 32]> = self.recorded().iter().filter_map(|r| tx_hash_of(r)).collect();
        for p in &mut self.parts {
            for h in &ours {
                p.reconcile.record_ours(*h);
            }
            let rec = p.reconcile.poll();
            let name = format!("reconcile:{}", p.code);
            match &rec {
                Ok(s) if s.incident.is_some() => {
                    self.health
                        .down(&name, Severity::Critical, "unapproved outflow from the hot key");
                }
                Ok(_) => self.health.up(&name, Severity::Critical),
                Err(e) => {
                    self.health.down(&name, Severity::Critical, e.to_string());
                }
            }
            note(rec.map(|_| ()));
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// What the node holds of `code` on our keys: (hot: the hot address and every deposit
    /// address, all keys of the online signer; cold: the cold contract, 0 without one).
    pub fn balances(&self, code: &str) -> Result<(u128, u128), EthWatchError> {
        let asset = self
            .link
            .view(|e| e.asset_by_code(code))
            .ok_or_else(|| EthWatchError::UnknownAsset(code.to_owned()))?;
        let kind = self
            .cfg
            .assets
            .iter()
            .find(|a| a.code == code)
            .map_or(EthAsset::Ether, |a| a.kind);
        let mut holders = vec![self.hot];
        let deposit: Vec<EthAddress> = self.link.view(|e| {
            e.wallet()
                .deposit_addresses_of_asset(asset)
                .filter_map(|a| EthAddress::parse(&a.address).ok())
                .collect()
        });
        holders.extend(deposit);
        holders.sort();
        holders.dedup();
        let mut hot: u128 = 0;
        for h in holders {
            let b = match kind {
                EthAsset::Ether => self.rpc.balance(&h, "latest")?,
                EthAsset::Token(t) => self.rpc.token_balance(&t, &h, "latest")?,
            };
            hot = hot.saturating_add(b);
        }
        let cold = match &self.cold {
            Some(c) => c.cold_balance(kind)?,
            None => 0,
        };
        Ok((hot, cold))
    }

    /// Whether this service holds `code`.
    pub fn holds(&self, code: &str) -> bool {
        self.cfg.assets.iter().any(|a| a.code == code)
    }

    /// The hot wallet's cap of `code` (share in basis points, absolute cap).
    pub fn hot_policy(&self, code: &str) -> Option<(u32, u64)> {
        self.cfg
            .assets
            .iter()
            .find(|a| a.code == code)
            .map(|a| (a.hot_share_bps, u64::try_from(a.hot_cap).unwrap_or(u64::MAX)))
    }
}

/// Runs `shared` every `poll` on its own thread until stopped.
pub fn spawn_eth(shared: Arc<Mutex<EthCustody>>) -> crate::CustodyThread {
    let every = {
        let c = shared.lock().unwrap_or_else(|p| p.into_inner());
        c.cfg.poll
    };
    crate::service::spawn_loop("kinko-custody-eth".into(), every, move || {
        let mut c = shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = c.poll() {
            tracing::warn!(chain_id = c.cfg.chain_id, error = %e, "Ethereum custody poll failed; retrying");
        }
    })
}

/// The gateway's view of an Ethereum chain: one deposit address per user for ETH and every
/// token (`m/44'/60'/0'/1/<user id>`, derived from the xpub: the custody loop's deposit watcher
/// reads the same), and EIP-55 addresses.
pub struct EthChain {
    assets: Vec<String>,
    account: Xpub,
    confirmations: u32,
}

impl EthChain {
    pub fn new(assets: Vec<String>, account: Xpub, confirmations: u32) -> EthChain {
        EthChain {
            assets,
            account,
            confirmations,
        }
    }
}

impl ChainAdapter for EthChain {
    fn deposit_address(&self, asset: &str, user: UserId, n: u32, _index: u32) -> Option<String> {
        // One address per user (an Ethereum address is reused without harm).
        if !self.supports(asset) || n > 0 {
            return None;
        }
        let index = u32::try_from(user.0).ok()?;
        derive_address(&self.account, Branch::Deposit, index)
            .ok()
            .map(|a| a.checksummed())
    }
    fn canonical_address(&self, asset: &str, address: &str) -> Option<String> {
        if !self.supports(asset) {
            return None;
        }
        EthAddress::parse(address).ok().map(|a| a.checksummed())
    }
    fn supports(&self, asset: &str) -> bool {
        self.assets.iter().any(|a| a == asset)
    }
    fn deposit_confirmations(&self, asset: &str) -> Option<u32> {
        self.supports(asset).then_some(self.confirmations)
    }
}
