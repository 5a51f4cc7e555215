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
use crate::eth_sweep::{EthSweeper, SweepAsset, SweepConfig};
use crate::signer_feed::SignerFeed;
use bitcoin::bip32::Xpub;
use kinko_chain::eth::rpc::EthRpc;
use kinko_chain::eth::{derive_address, Branch, Eip1559, EthAddress};
use kinko_core::wallet::WithdrawalStatus;
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
    /// A deposit address's balance below this (minor units) waits there, not swept.
    pub sweep_min: u128,
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
    /// The block deposits and our keys are scanned from at the first start; later starts
    /// resume from the cursors kept in `state_dir` (deposits are credited once per (tx, log
    /// index) whatever is scanned again).
    pub start_block: u64,
    /// The priority fee offered (wei per gas), and the most custody offers per gas; above it a
    /// withdrawal waits for cheaper blocks. The signer holds its own, independent caps.
    pub priority_fee: u128,
    pub max_fee_cap: u128,
    /// An ETH sweep waits while its gas is more than this share of what it moves (bps).
    pub sweep_gas_max_bps: u32,
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
    last_deposits: crate::eth::PollStats,
    last_reconcile: crate::eth::ReconcileStats,
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
    /// Sweeps of deposit addresses and gas top-ups (built with the parts).
    sweeper: Option<EthSweeper>,
    /// Keys whose pool held a transaction kinko did not build, with the pending count then
    /// (reported once per count).
    pool_flagged: std::collections::BTreeMap<EthAddress, u64>,
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
            sweeper: None,
            pool_flagged: Default::default(),
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
        let mut sweep_assets = Vec::new();
        let mut eth_asset: Option<AssetId> = None;
        for a in &cfg.assets {
            let asset = self
                .link
                .view(|e| e.asset_by_code(&a.code))
                .ok_or_else(|| EthWatchError::UnknownAsset(a.code.clone()))?;
            if a.kind == EthAsset::Ether {
                eth_asset = Some(asset);
            }
            sweep_assets.push(SweepAsset {
                code: a.code.clone(),
                asset,
                kind: a.kind,
                gas_limit: a.gas_limit,
                sweep_min: a.sweep_min,
            });
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
                deposits: {
                    let d = EthDeposits::new(
                        rpc.clone(),
                        link.clone(),
                        asset,
                        a.kind,
                        cfg.account,
                        cfg.confirmations,
                        cfg.finality_depth.max(cfg.confirmations).saturating_mul(2),
                        cfg.start_block,
                    );
                    match &cfg.state_dir {
                        Some(dir) => d.with_state_dir(dir, &a.code),
                        None => d,
                    }
                },
                withdrawals: {
                    let w = EthWithdrawals::new(rpc.clone(), link.clone(), asset, a.kind, hot, wcfg);
                    let w = match eth_asset {
                        Some(eth) => w.with_gas_asset(eth),
                        None => w,
                    };
                    match &cfg.state_dir {
                        Some(d) => w.with_pending_dir(d, &a.code),
                        None => w,
                    }
                },
                reconcile: {
                    let r = EthReconcile::new(rpc.clone(), link.clone(), asset, a.kind, hot, cfg.start_block);
                    match &cfg.state_dir {
                        Some(dir) => r.with_state_dir(dir, &a.code),
                        None => r,
                    }
                },
                last_deposits: Default::default(),
                last_reconcile: Default::default(),
            });
        }
        let sweeper = EthSweeper::open(
            self.rpc.clone(),
            self.link.clone(),
            cfg.account,
            self.hot,
            SweepConfig {
                chain_id: cfg.chain_id,
                priority_fee: cfg.priority_fee,
                max_fee_cap: cfg.max_fee_cap,
                finality_depth: cfg.finality_depth,
                sweep_gas_max_bps: cfg.sweep_gas_max_bps,
                assets: sweep_assets,
            },
            cfg.state_dir.as_deref(),
            cfg.assets.first().map_or("ETH", |a| a.code.as_str()),
        )?;
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
        self.sweeper = Some(sweeper);
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
            let r = cold
                .retry_kept_refill(&assets, a, &mut nonce, &self.signer)
                .and_then(|_| cold.sweep(&assets, a, &mut nonce, &self.signer));
            self.next_nonce = Some(nonce);
            // The operator sees a sweep to cold that keeps failing (the hot wallet stays above
            // its share meanwhile).
            let name = format!("cold:{}", a.code);
            match r {
                Ok(_) => self.health.up(&name, Severity::Degraded),
                Err(e) => {
                    tracing::warn!(asset = %a.code, error = %e, "the sweep to cold failed; retrying");
                    self.health.down(&name, Severity::Degraded, e.to_string());
                    first.get_or_insert(e);
                }
            }
        }
        let settled = cold.settle(&assets);
        // The contract against the ledger's cold wallet, once the moves above are booked.
        if settled.is_ok() && first.is_none() {
            for a in &parts {
                let name = format!("reconcile-cold:{}", a.code);
                match cold.reconcile(&assets, a) {
                    Ok(Some(_)) => {
                        self.health.down(
                            &name,
                            Severity::Critical,
                            "the cold contract holds less than the ledger",
                        );
                    }
                    Ok(None) => self.health.up(&name, Severity::Critical),
                    Err(e) => {
                        self.health.down(&name, Severity::Critical, e.to_string());
                        first.get_or_insert(e);
                    }
                }
            }
        }
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

    /// The scan cursors of `code`: (deposits, reconciliation), the last block each read.
    pub fn cursors(&self, code: &str) -> Option<(Option<u64>, Option<u64>)> {
        self.parts
            .iter()
            .find(|p| p.code == code)
            .map(|p| (p.deposits.cursor(), p.reconcile.cursor()))
    }

    /// The last poll's deposit and reconciliation statistics of `code`.
    pub fn last_stats(&self, code: &str) -> Option<(crate::eth::PollStats, crate::eth::ReconcileStats)> {
        self.parts
            .iter()
            .find(|p| p.code == code)
            .map(|p| (p.last_deposits.clone(), p.last_reconcile.clone()))
    }

    /// The sweeps and top-ups in flight (built, their gas not yet booked).
    pub fn sweeps_in_flight(&self) -> &[crate::eth_sweep::InternalTx] {
        self.sweeper.as_ref().map_or(&[], |s| s.in_flight())
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
        let topups = self
            .sweeper
            .as_ref()
            .and_then(EthSweeper::hot_next_nonce)
            .unwrap_or(0);
        Ok(recorded
            .max(kept)
            .max(topups)
            .max(self.rpc.nonce(&self.hot, "pending")?))
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
        // What the sweeper signed this poll (its own records), ours for reconciliation.
        let mut swept: Vec<[u8; 32]> = Vec::new();
        let internal: Vec<[u8; 32]> = self.sweeper.as_ref().map_or(Vec::new(), |s| s.signed_hashes());
        for p in &mut self.parts {
            p.deposits.set_internal(internal.iter().copied());
            let r = p.deposits.poll();
            if let Ok(s) = &r {
                p.last_deposits = s.clone();
            }
            note(r.map(|_| ()));
        }
        // Credited deposits to hot (and the gas top-ups token sweeps need, from hot at the
        // hot key's next nonce), before withdrawals take the next nonces.
        if let (Some(sweeper), Some(mut n)) = (self.sweeper.as_mut(), self.next_nonce) {
            let r = sweeper.poll(&mut self.signer, &mut n);
            self.next_nonce = Some(n);
            swept.extend(sweeper.signed_hashes());
            let name = format!("sweeps:{}", self.parts.first().map_or("ETH", |p| p.code.as_str()));
            match &r {
                Ok(_) => self.health.up(&name, Severity::Degraded),
                Err(e) => {
                    self.health.down(&name, Severity::Degraded, e.to_string());
                }
            }
            note(r.map(|_| ()));
        }
        let keys = self.deposit_keys();
        for p in &mut self.parts {
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
        let mut ours: Vec<[u8; 32]> = self.recorded().iter().filter_map(|r| tx_hash_of(r)).collect();
        ours.extend(swept);
        for p in &mut self.parts {
            for h in &ours {
                p.reconcile.record_ours(*h);
            }
            p.reconcile.watch_keys(keys.iter().copied());
            let rec = p.reconcile.poll();
            if let Ok(s) = &rec {
                p.last_reconcile = s.clone();
            }
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
        // The pools: a transaction from a key of ours that kinko did not build halts before it
        // is mined (what it takes is reported when it is, by the reconciliation above).
        if let Err(e) = self.check_pools(&keys) {
            first.get_or_insert(e);
        }
        // Balances, once every step before booked what it did (a half-booked poll would
        // report what the next one books).
        if first.is_none() {
            let r = self.check_balances(&keys);
            for (code, r) in &r {
                let name = format!("balances:{code}");
                match r {
                    Ok(None) => self.health.up(&name, Severity::Critical),
                    Ok(Some(_)) => {
                        self.health.down(
                            &name,
                            Severity::Critical,
                            "the node holds less than the ledger expects",
                        );
                    }
                    Err(e) => {
                        self.health.down(&name, Severity::Critical, e.to_string());
                    }
                }
            }
            for (_, r) in r {
                if let Err(e) = r {
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Compares each key's pending transaction count with what kinko built: the hot key's
    /// next nonce of kinko's records, a deposit key's mined count plus its sweeps not yet
    /// mined. More is a transaction kinko did not build, in the pool or mined: every asset of
    /// the chain halts with an `unapproved_outflow` incident naming the key (its amount comes
    /// with the transaction's block). Reported once per key and count.
    fn check_pools(&mut self, keys: &[EthAddress]) -> Result<(), EthWatchError> {
        let Some(ours_next) = self.next_nonce else {
            return Ok(());
        };
        let mut all = vec![self.hot];
        all.extend(keys.iter().copied().filter(|k| *k != self.hot));
        let pending = self.rpc.nonces(&all, "pending")?;
        let latest = self.rpc.nonces(&all, "latest")?;
        // The nonce after the sweeps kinko keeps for each deposit key.
        let mut kept_next: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for t in self.sweeps_in_flight() {
            let n = kept_next.entry(t.from.clone()).or_insert(0);
            *n = (*n).max(t.nonce.saturating_add(1));
        }
        let mut foreign: Vec<(EthAddress, u64)> = Vec::new();
        for (i, key) in all.iter().enumerate() {
            let (p, l) = (pending[i], latest[i]);
            let allowed = if *key == self.hot {
                ours_next
            } else {
                // A deposit key's transactions are kinko's sweeps only: the mined ones and
                // those kept.
                kept_next.get(&key.checksummed()).copied().unwrap_or(0).max(l)
            };
            if p > allowed && self.pool_flagged.get(key) < Some(&p) {
                foreign.push((*key, p));
            }
        }
        for (key, p) in foreign {
            let which = if key == self.hot {
                "the hot key"
            } else {
                "a deposit key"
            };
            let summary = format!(
                "{which} {key} has {p} transactions on the node (its pool included) and kinko built fewer: one it did not sign is pending or mined; what it takes is reported with its block"
            );
            tracing::error!(key = %key, pending = p, "CRITICAL: a transaction kinko did not build from an Ethereum key of ours; halting withdrawals");
            for part in &self.parts {
                crate::eth::open_halting_incident(
                    &self.link,
                    crate::reconcile::KIND_UNAPPROVED_OUTFLOW,
                    part.asset,
                    summary.clone(),
                    Vec::new(),
                    0,
                )?;
            }
            self.pool_flagged.insert(key, p);
        }
        Ok(())
    }

    /// Every deposit address of the chain's assets (one per user, shared by ETH and tokens).
    fn deposit_keys(&self) -> Vec<EthAddress> {
        let assets: Vec<AssetId> = self.parts.iter().map(|p| p.asset).collect();
        let mut keys: Vec<EthAddress> = self.link.view(|e| {
            assets
                .iter()
                .flat_map(|a| e.wallet().deposit_addresses_of_asset(*a))
                .filter_map(|a| EthAddress::parse(&a.address).ok())
                .collect()
        });
        keys.sort();
        keys.dedup();
        keys
    }

    /// The balance check of each asset ([`BalanceCheck`]): what the node holds on the hot
    /// address and every deposit address against the ledger. A shortfall that no incident of
    /// the asset explains yet opens a `hot_shortfall` incident (withdrawals halted) with it.
    /// Per asset: the incident opened, if any.
    fn check_balances(&self, keys: &[EthAddress]) -> Vec<(String, Result<Option<u64>, EthWatchError>)> {
        let mut holders = vec![self.hot];
        holders.extend(keys.iter().copied());
        holders.sort();
        holders.dedup();
        let assets: Vec<AssetId> = self.parts.iter().map(|p| p.asset).collect();
        // Gas kinko's transactions may have spent and not booked yet (booked at depth).
        let mut gas_in_flight: u128 = self.sweeps_in_flight().iter().map(|t| t.gas_max).sum();
        let raws: Vec<String> = self.link.view(|e| {
            e.wallet()
                .withdrawals()
                .iter()
                .filter(|w| assets.contains(&w.asset))
                .filter(|w| matches!(w.status, WithdrawalStatus::Signed | WithdrawalStatus::Broadcast))
                .filter_map(|w| w.raw_tx.clone())
                .collect()
        });
        for raw in raws {
            if let Some((tx, _)) = hex::decode(&raw)
                .ok()
                .and_then(|r| Eip1559::decode_signed(&r).ok())
            {
                gas_in_flight =
                    gas_in_flight.saturating_add(u128::from(tx.gas_limit).saturating_mul(tx.max_fee_per_gas));
            }
        }
        let mut out = Vec::new();
        for p in &self.parts {
            let kind = self
                .cfg
                .assets
                .iter()
                .find(|a| a.code == p.code)
                .map_or(EthAsset::Ether, |a| a.kind);
            let r = (|| -> Result<Option<u64>, EthWatchError> {
                // One block for every address (batched: one round trip per 256 addresses).
                let tag = format!("0x{:x}", self.rpc.block_number()?);
                let token = match kind {
                    EthAsset::Ether => None,
                    EthAsset::Token(t) => Some(t),
                };
                let node = self
                    .rpc
                    .balances(&holders, token.as_ref(), &tag)?
                    .into_iter()
                    .fold(0u128, u128::saturating_add);
                let check = self.link.view(|e| {
                    let a = e.asset(p.asset)?;
                    let bal = |w| e.ledger().account(a.system_account(w)).map_or(0, |x| x.balance());
                    let explained = e
                        .admin()
                        .incidents
                        .iter()
                        .filter(|i| i.asset == Some(p.asset))
                        .filter(|i| {
                            i.kind == crate::reconcile::KIND_UNAPPROVED_OUTFLOW
                                || i.kind == crate::reconcile::KIND_HOT_SHORTFALL
                        })
                        .fold(0u128, |t, i| t.saturating_add(i.missing.0));
                    Some(BalanceCheck {
                        ledger_hot: bal(kinko_core::SystemAccount::HotWallet),
                        deposits_in_flight: bal(kinko_core::SystemAccount::DepositsInFlight),
                        withdrawals_in_flight: bal(kinko_core::SystemAccount::WithdrawalsInFlight),
                        gas_in_flight: if kind == EthAsset::Ether { gas_in_flight } else { 0 },
                        refills_in_flight: self.cold.as_ref().map_or(0, |c| c.refills_in_flight(p.asset)),
                        node,
                        explained,
                    })
                });
                let Some(check) = check else {
                    return Err(EthWatchError::UnknownAsset(p.code.clone()));
                };
                let missing = check.unexplained();
                tracing::debug!(asset = %p.code, expected = %check.expected(), node = %node, missing = %missing, "Ethereum balances reconciled");
                if missing == 0 {
                    return Ok(None);
                }
                let summary = format!(
                    "the node holds {missing} units of {} less on the hot and deposit addresses than the ledger expects and no incident explains it (expected at least {}, held {node}, gas in flight {})",
                    p.code,
                    check.expected(),
                    check.gas_in_flight
                );
                tracing::error!(asset = %p.code, expected = %check.expected(), node = %node, missing = %missing,
                    "CRITICAL: Ethereum balance shortfall; halting withdrawals and opening an incident");
                crate::eth::open_halting_incident(
                    &self.link,
                    crate::reconcile::KIND_HOT_SHORTFALL,
                    p.asset,
                    summary,
                    Vec::new(),
                    missing,
                )
            })();
            out.push((p.code.clone(), r));
        }
        out
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
        let token = match kind {
            EthAsset::Ether => None,
            EthAsset::Token(t) => Some(t),
        };
        let hot = self
            .rpc
            .balances(&holders, token.as_ref(), "latest")?
            .into_iter()
            .fold(0u128, u128::saturating_add);
        let cold = match &self.cold {
            Some(c) => c.cold_balance(kind)?,
            None => 0,
        };
        Ok((hot, cold))
    }

    /// What the node holds of `code` on the hot address, and on the deposit addresses.
    pub fn hot_breakdown(&self, code: &str) -> Result<(u128, u128), EthWatchError> {
        let asset = self
            .link
            .view(|e| e.asset_by_code(code))
            .ok_or_else(|| EthWatchError::UnknownAsset(code.to_owned()))?;
        let token = match self.cfg.assets.iter().find(|a| a.code == code).map(|a| a.kind) {
            Some(EthAsset::Token(t)) => Some(t),
            _ => None,
        };
        let deposit: Vec<EthAddress> = self.link.view(|e| {
            let mut d: Vec<EthAddress> = e
                .wallet()
                .deposit_addresses_of_asset(asset)
                .filter_map(|a| EthAddress::parse(&a.address).ok())
                .filter(|a| *a != self.hot)
                .collect();
            d.sort();
            d.dedup();
            d
        });
        let tag = format!("0x{:x}", self.rpc.block_number()?);
        let hot = self
            .rpc
            .balances(&[self.hot], token.as_ref(), &tag)?
            .first()
            .copied()
            .unwrap_or(0);
        let deposits = self
            .rpc
            .balances(&deposit, token.as_ref(), &tag)?
            .into_iter()
            .fold(0u128, u128::saturating_add);
        Ok((hot, deposits))
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

/// What the node must hold of one asset on the hot and deposit addresses:
///
/// ```text
///   node ≥ HotWallet + DepositsInFlight − WithdrawalsInFlight − gas_in_flight
/// ```
///
/// Pending deposits are on the node and not yet in the hot wallet; recorded withdrawals may
/// have left the node before they complete; kinko's transactions not yet final may have spent
/// up to `gas_limit × max_fee` of ETH each that is booked only at depth. Sweeps and top-ups
/// move coins between our own addresses: nothing. A surplus is never an alarm (ETH sent by a
/// contract, dust); a shortfall is, less what incidents of the asset already reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalanceCheck {
    pub ledger_hot: i128,
    pub deposits_in_flight: i128,
    pub withdrawals_in_flight: i128,
    pub gas_in_flight: u128,
    /// Refills from cold booked to hot whose transaction is not mined yet.
    pub refills_in_flight: u128,
    pub node: u128,
    pub explained: u128,
}

impl BalanceCheck {
    pub fn expected(&self) -> i128 {
        self.ledger_hot
            .saturating_add(self.deposits_in_flight)
            .saturating_sub(self.withdrawals_in_flight)
            .saturating_sub(i128::try_from(self.gas_in_flight).unwrap_or(i128::MAX))
            .saturating_sub(i128::try_from(self.refills_in_flight).unwrap_or(i128::MAX))
    }
    pub fn shortfall(&self) -> u128 {
        u128::try_from(
            self.expected()
                .saturating_sub(i128::try_from(self.node).unwrap_or(i128::MAX)),
        )
        .unwrap_or(0)
    }
    /// The shortfall no incident reported yet.
    pub fn unexplained(&self) -> u128 {
        self.shortfall().saturating_sub(self.explained)
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
