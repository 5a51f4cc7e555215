//! Sweeps of Ethereum deposit addresses into the hot address, and the gas top-ups token sweeps
//! need (docs/design/ethereum.md, "Sweeps and gas").
//!
//! After every deposit to an address is credited (none pending there, of any asset of the
//! chain), its balances move to the hot address:
//! - a token balance of at least the token's `sweep_min`: `transfer(hot, balance)` from the
//!   deposit key, its gas paid with ETH already on the address or, if it has too little, sent
//!   there first by the hot key (a **gas top-up** of `gas_limit × max_fee`);
//! - then the ETH left, if at least ETH's `sweep_min` and its gas at most `sweep_gas_max_bps`
//!   of it: `value = balance − 21 000 × max_fee`.
//!
//! Each transaction is written to `<state_dir>/<CHAIN>.internal-txs.json` (atomically) before
//! the signer is asked (unsigned), again when signed and before it is broadcast, and leaves
//! the file only when its gas is booked (`RecordGas`, exact: `gasUsed × effectiveGasPrice` of
//! its receipt at the finality depth). A restart therefore asks the signer for the very same
//! bytes, re-sends a signed one as it is, and never builds a second sweep of an address while
//! one is unmined: no double sweep, no lost sweep. A deposit address and the hot address are
//! both the hot wallet in the ledger: a sweep or a top-up moves nothing there but its gas.

use crate::eth::{EthAsset, EthSignError, EthWatchError};
use bitcoin::bip32::Xpub;
use kinko_chain::eth::rpc::EthRpc;
use kinko_chain::eth::{derive_address, erc20_transfer, Branch, Eip1559, EthAddress};
use kinko_core::engine::{Command, Reply};
use kinko_core::wallet::DepositStatus;
use kinko_core::{Amount, AssetId};
use kinko_engine::link::EngineLink;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Gas of a plain ETH payment (a sweep or a top-up).
const ETH_GAS: u64 = 21_000;
/// New sweeps and top-ups started in one poll, at most.
pub const SWEEPS_PER_POLL_MAX: usize = 64;
/// Transactions kept in flight, at most (new ones wait).
pub const INTERNAL_TXS_MAX: usize = 4096;

/// What an internal transaction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InternalKind {
    /// A deposit address's ETH to hot.
    EthSweep,
    /// A deposit address's token balance to hot.
    TokenSweep,
    /// ETH from hot to a deposit address, for a token sweep's gas.
    GasTopup,
}

/// A sweep or a top-up kinko built, from before the signer is asked until its gas is booked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InternalTx {
    pub kind: InternalKind,
    /// The deposit address's index (`…/1/index`): the key that signs a sweep, the address a
    /// top-up pays.
    pub index: u32,
    /// The asset it moves (a top-up: the token whose sweep it pays for), by code.
    pub asset: String,
    /// The key that signs it (and pays its gas).
    pub from: String,
    pub nonce: u64,
    /// Hex of the unsigned transaction (asked of the signer as is, again after a crash).
    pub unsigned: String,
    /// Hex of the signed transaction, once the signer answered (then broadcast as is).
    pub signed: Option<String>,
    /// The most its gas can cost (`gas_limit × max_fee_per_gas`), what reconciliation allows
    /// for it until its exact gas is booked.
    pub gas_max: u128,
    /// What it moves: ETH value (sweep, top-up) or token units.
    pub amount: u128,
}

impl InternalTx {
    fn tx_hash(&self) -> Option<[u8; 32]> {
        let raw = hex::decode(self.signed.as_deref()?).ok()?;
        Some(Eip1559::tx_hash(&raw))
    }
    /// The hash once signed, as `0x…`.
    pub fn txid(&self) -> Option<String> {
        self.tx_hash().map(|h| format!("0x{}", hex::encode(h)))
    }
}

/// The signer's side of sweeps and top-ups (`sign_eth_sweep`, `sign_eth_gas_topup`).
pub trait EthInternalSigner {
    fn sign_sweep(&mut self, index: u32, raw_unsigned: &[u8]) -> Result<Vec<u8>, EthSignError>;
    fn sign_topup(&mut self, index: u32, raw_unsigned: &[u8]) -> Result<Vec<u8>, EthSignError>;
}

/// One asset of the chain as the sweeper sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepAsset {
    pub code: String,
    pub asset: AssetId,
    pub kind: EthAsset,
    /// Gas offered for its sweep's transfer.
    pub gas_limit: u64,
    /// A smaller balance waits on the deposit address (minor units).
    pub sweep_min: u128,
}

/// How sweeps are built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepConfig {
    pub chain_id: u64,
    pub priority_fee: u128,
    pub max_fee_cap: u128,
    pub finality_depth: u64,
    /// An ETH sweep waits while its gas would be more than this share of what it moves (basis
    /// points).
    pub sweep_gas_max_bps: u32,
    /// ETH first, then the tokens.
    pub assets: Vec<SweepAsset>,
}

/// What one sweep poll did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub signed: usize,
    pub topups: usize,
    pub completed: usize,
    /// Balances left on deposit addresses because they are below `sweep_min` or their gas
    /// costs too much.
    pub waiting_small: usize,
    pub refused: usize,
}

/// The sweeper of one chain.
pub struct EthSweeper {
    rpc: EthRpc,
    link: EngineLink,
    account: Xpub,
    hot: EthAddress,
    cfg: SweepConfig,
    file: Option<PathBuf>,
    txs: Vec<InternalTx>,
    /// Addresses found with nothing to sweep, by index, with their count of credited deposits
    /// then: looked at again only when another deposit there is credited (or after a restart).
    idle: std::collections::BTreeMap<u32, usize>,
}

impl std::fmt::Debug for EthSweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthSweeper")
            .field("hot", &self.hot)
            .field("in_flight", &self.txs.len())
            .finish_non_exhaustive()
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

impl EthSweeper {
    /// A sweeper keeping its transactions in `state_dir` (`None`: memory only), reading back
    /// what an earlier run left there.
    pub fn open(
        rpc: EthRpc,
        link: EngineLink,
        account: Xpub,
        hot: EthAddress,
        cfg: SweepConfig,
        state_dir: Option<&std::path::Path>,
        chain_code: &str,
    ) -> Result<EthSweeper, EthWatchError> {
        let file = state_dir.map(|d| d.join(format!("{chain_code}.internal-txs.json")));
        let txs = match &file {
            Some(f) if f.exists() => {
                let text =
                    std::fs::read(f).map_err(|e| EthWatchError::Pending(format!("{}: {e}", f.display())))?;
                serde_json::from_slice(&text)
                    .map_err(|e| EthWatchError::Pending(format!("{}: {e}", f.display())))?
            }
            _ => Vec::new(),
        };
        Ok(EthSweeper {
            rpc,
            link,
            account,
            hot,
            cfg,
            file,
            txs,
            idle: Default::default(),
        })
    }

    /// The transactions in flight (built, not yet booked).
    pub fn in_flight(&self) -> &[InternalTx] {
        &self.txs
    }

    /// The hot key's next nonce after the top-ups kinko built.
    pub fn hot_next_nonce(&self) -> Option<u64> {
        let hot = self.hot.checksummed();
        self.txs
            .iter()
            .filter(|t| t.from == hot)
            .map(|t| t.nonce.saturating_add(1))
            .max()
    }

    /// The hashes of the signed ones (ours for reconciliation).
    pub fn signed_hashes(&self) -> Vec<[u8; 32]> {
        self.txs.iter().filter_map(InternalTx::tx_hash).collect()
    }

    fn save(&self) -> Result<(), EthWatchError> {
        let Some(f) = &self.file else { return Ok(()) };
        let bytes =
            serde_json::to_vec_pretty(&self.txs).map_err(|e| EthWatchError::Pending(e.to_string()))?;
        crate::cursor::write_atomic(f, &bytes).map_err(|e| EthWatchError::Pending(e.to_string()))
    }

    fn submit(&self, what: &'static str, cmd: Command) -> Result<Reply, EthWatchError> {
        crate::eth::submit(&self.link, what, cmd)
    }

    fn asset_of(&self, code: &str) -> Option<&SweepAsset> {
        self.cfg.assets.iter().find(|a| a.code == code)
    }

    fn eth(&self) -> Option<&SweepAsset> {
        self.cfg.assets.iter().find(|a| a.kind == EthAsset::Ether)
    }

    /// One poll: the transactions in flight (signed, re-sent, booked at depth), then new
    /// sweeps of credited deposits. `hot_nonce` is the hot key's next nonce by kinko's
    /// records, advanced past any top-up built here.
    pub fn poll(
        &mut self,
        signer: &mut dyn EthInternalSigner,
        hot_nonce: &mut u64,
    ) -> Result<SweepStats, EthWatchError> {
        let mut stats = SweepStats::default();
        self.advance(signer, hot_nonce, &mut stats)?;
        self.plan(signer, hot_nonce, &mut stats)?;
        Ok(stats)
    }

    /// Signs what waits for the signer, re-sends what is not mined, books the gas of what is
    /// final and forgets it.
    fn advance(
        &mut self,
        signer: &mut dyn EthInternalSigner,
        hot_nonce: &mut u64,
        stats: &mut SweepStats,
    ) -> Result<(), EthWatchError> {
        let head = self.rpc.block_number()?;
        let mut i = 0;
        while i < self.txs.len() {
            let t = self.txs[i].clone();
            let Some(raw) = t.signed.as_deref().and_then(unhex) else {
                match self.sign(signer, &t)? {
                    Some(raw) => {
                        self.txs[i].signed = Some(hex::encode(&raw));
                        self.save()?;
                        let _ = self.rpc.send_raw(&raw);
                        stats.signed += 1;
                        i += 1;
                    }
                    None => {
                        self.txs.remove(i);
                        self.save()?;
                        stats.refused += 1;
                        // A refused top-up leaves its hot nonce free, if it was the last one.
                        if t.kind == InternalKind::GasTopup && *hot_nonce == t.nonce.saturating_add(1) {
                            *hot_nonce = t.nonce;
                        }
                    }
                }
                continue;
            };
            let hash = Eip1559::tx_hash(&raw);
            match self.rpc.receipt(&hash)? {
                Some(r)
                    if head.saturating_add(1).saturating_sub(r.block_number) >= self.cfg.finality_depth =>
                {
                    let gas = r.gas_used.saturating_mul(r.effective_gas_price);
                    let (Some(eth), Some(moved)) = (self.eth(), self.asset_of(&t.asset)) else {
                        return Err(EthWatchError::UnknownAsset(t.asset.clone()));
                    };
                    if gas > 0 {
                        self.submit(
                            "record_gas",
                            Command::RecordGas {
                                asset: eth.asset,
                                txid: format!("0x{}", hex::encode(hash)),
                                for_asset: moved.asset,
                                amount: Amount(gas),
                            },
                        )?;
                    }
                    tracing::info!(kind = ?t.kind, index = t.index, asset = %t.asset, gas = %gas, "Ethereum sweep final; gas booked");
                    self.txs.remove(i);
                    self.save()?;
                    stats.completed += 1;
                }
                Some(_) => i += 1,
                None => {
                    // Not mined (dropped from a pool, or a reorg): the recorded bytes again.
                    let _ = self.rpc.send_raw(&raw);
                    i += 1;
                }
            }
        }
        Ok(())
    }

    /// The signer's signature of `t` (`None`: refused, it is forgotten and its nonce free).
    fn sign(
        &self,
        signer: &mut dyn EthInternalSigner,
        t: &InternalTx,
    ) -> Result<Option<Vec<u8>>, EthWatchError> {
        let Some(unsigned) = unhex(&t.unsigned) else {
            return Ok(None);
        };
        let answer = match t.kind {
            InternalKind::GasTopup => signer.sign_topup(t.index, &unsigned),
            _ => signer.sign_sweep(t.index, &unsigned),
        };
        match answer {
            Ok(raw) => Ok(Some(raw)),
            Err(e @ EthSignError::Refused { .. }) => {
                tracing::warn!(kind = ?t.kind, index = t.index, error = %e, "the signer refused an Ethereum sweep");
                Ok(None)
            }
            Err(e @ EthSignError::Unavailable(_)) => Err(EthWatchError::Signer(e)),
        }
    }

    /// The fees now: (base fee, max fee, priority fee), `None` above the cap.
    fn fees(&self) -> Result<Option<(u128, u128, u128)>, EthWatchError> {
        let base = self
            .rpc
            .block("latest")?
            .and_then(|b| b.base_fee_per_gas)
            .unwrap_or(0);
        let max_fee = base.saturating_mul(2).saturating_add(self.cfg.priority_fee);
        Ok((max_fee <= self.cfg.max_fee_cap).then_some((base, max_fee, self.cfg.priority_fee)))
    }

    /// New sweeps and top-ups for addresses whose deposits are all settled.
    fn plan(
        &mut self,
        signer: &mut dyn EthInternalSigner,
        hot_nonce: &mut u64,
        stats: &mut SweepStats,
    ) -> Result<(), EthWatchError> {
        let Some(eth) = self.eth().cloned() else {
            return Ok(());
        };
        let codes: Vec<AssetId> = self.cfg.assets.iter().map(|a| a.asset).collect();
        // Addresses with a credited deposit and none pending, by index (the user id).
        type Candidates = (std::collections::BTreeMap<(u32, String), usize>, BTreeSet<String>);
        let (candidates, busy): Candidates = self.link.view(|e| {
            let w = e.wallet();
            let mut credited = std::collections::BTreeMap::new();
            let mut pending = BTreeSet::new();
            for d in w.deposits().iter().filter(|d| codes.contains(&d.asset)) {
                let key = d.address.to_ascii_lowercase();
                match d.status {
                    DepositStatus::Pending => {
                        pending.insert(key);
                    }
                    DepositStatus::Credited => {
                        if let Ok(index) = u32::try_from(d.user.0) {
                            *credited.entry((index, key)).or_insert(0usize) += 1;
                        }
                    }
                    _ => {}
                }
            }
            (credited, pending)
        });
        let mut started = 0;
        for ((index, text), credited) in candidates {
            if started >= SWEEPS_PER_POLL_MAX || self.txs.len() >= INTERNAL_TXS_MAX {
                break;
            }
            if busy.contains(&text) || self.idle.get(&index) == Some(&credited) {
                continue;
            }

            let Ok(address) = derive_address(&self.account, Branch::Deposit, index) else {
                continue;
            };
            if address.checksummed().to_ascii_lowercase() != text {
                // Not an address of ours by that index: never swept (and never signed).
                continue;
            }
            // One unmined transaction per address at a time (a top-up to it, or its sweep).
            if self.unmined_for(index)? {
                continue;
            }
            let Some((base, max_fee, priority)) = self.fees()? else {
                continue;
            };
            let eth_balance = self.rpc.balance(&address, "latest")?;
            let mut token_waits = false;
            let tokens: Vec<SweepAsset> = self
                .cfg
                .assets
                .iter()
                .filter(|a| matches!(a.kind, EthAsset::Token(_)))
                .cloned()
                .collect();
            let mut acted = false;
            for tok in tokens {
                let EthAsset::Token(contract) = tok.kind else {
                    continue;
                };
                let units = self.rpc.token_balance(&contract, &address, "latest")?;
                if units == 0 {
                    continue;
                }
                if units < tok.sweep_min {
                    stats.waiting_small += 1;
                    continue;
                }
                token_waits = true;
                let gas = u128::from(tok.gas_limit);
                let need = gas.saturating_mul(max_fee);
                // What the address can offer per gas with the ETH it holds (a top-up sent at
                // other fees may be a little short of `need` now): enough above the base fee.
                let affordable = (eth_balance / gas.max(1)).min(max_fee);
                if affordable >= base.saturating_add(priority.min(affordable.saturating_sub(base)))
                    && affordable > base
                {
                    // The address pays its sweep's gas with what it holds.
                    let tx = Eip1559 {
                        chain_id: self.cfg.chain_id,
                        nonce: self.rpc.nonce(&address, "pending")?,
                        max_priority_fee_per_gas: priority.min(affordable - base),
                        max_fee_per_gas: affordable,
                        gas_limit: tok.gas_limit,
                        to: contract,
                        value: 0,
                        data: erc20_transfer(&self.hot, units),
                    };
                    self.start(
                        signer,
                        InternalKind::TokenSweep,
                        index,
                        &tok.code,
                        address,
                        tx,
                        units,
                        stats,
                    )?;
                } else {
                    // What the address lacks for its sweep's gas, from hot (once hot has it:
                    // swept ETH arrives there first).
                    let lacking = need.saturating_sub(eth_balance);
                    let hot_has = self.rpc.balance(&self.hot, "latest")?;
                    if hot_has < lacking.saturating_add(u128::from(ETH_GAS).saturating_mul(max_fee)) {
                        break;
                    }
                    let tx = Eip1559 {
                        chain_id: self.cfg.chain_id,
                        nonce: *hot_nonce,
                        max_priority_fee_per_gas: priority,
                        max_fee_per_gas: max_fee,
                        gas_limit: ETH_GAS,
                        to: address,
                        value: lacking,
                        data: Vec::new(),
                    };
                    *hot_nonce = hot_nonce.saturating_add(1);
                    let ok = self.start(
                        signer,
                        InternalKind::GasTopup,
                        index,
                        &tok.code,
                        self.hot,
                        tx,
                        lacking,
                        stats,
                    )?;
                    if ok {
                        stats.topups += 1;
                    } else {
                        // Refused: nothing was signed at its nonce.
                        *hot_nonce = hot_nonce.saturating_sub(1);
                    }
                }
                acted = true;
                break;
            }
            if acted {
                started += 1;
                continue;
            }
            if token_waits {
                continue;
            }
            if eth_balance == 0 {
                self.idle.insert(index, credited);
                continue;
            }
            // ETH: what is left once the tokens are swept.
            let gas_cost = u128::from(ETH_GAS).saturating_mul(max_fee);
            let small = eth_balance < eth.sweep_min
                || eth_balance <= gas_cost
                || gas_cost.saturating_mul(10_000)
                    > eth_balance.saturating_mul(u128::from(self.cfg.sweep_gas_max_bps));
            if small {
                stats.waiting_small += 1;
                // Below the minimum whatever the fees: looked at again when another deposit
                // here is credited (or after a restart); a wait for cheaper gas is not idle.
                if eth_balance < eth.sweep_min {
                    self.idle.insert(index, credited);
                }
                continue;
            }
            let value = eth_balance - gas_cost;
            let tx = Eip1559 {
                chain_id: self.cfg.chain_id,
                nonce: self.rpc.nonce(&address, "pending")?,
                max_priority_fee_per_gas: priority,
                max_fee_per_gas: max_fee,
                gas_limit: ETH_GAS,
                to: self.hot,
                value,
                data: Vec::new(),
            };
            self.start(
                signer,
                InternalKind::EthSweep,
                index,
                &eth.code,
                address,
                tx,
                value,
                stats,
            )?;
            started += 1;
        }
        Ok(())
    }

    /// Whether a transaction of ours to or from deposit address `index` is not mined yet.
    fn unmined_for(&self, index: u32) -> Result<bool, EthWatchError> {
        for t in self.txs.iter().filter(|t| t.index == index) {
            match t.tx_hash() {
                None => return Ok(true),
                Some(h) => {
                    if self.rpc.receipt(&h)?.is_none() {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Records `tx` (unsigned), asks the signer, records the signature, broadcasts. Whether it
    /// was signed.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        signer: &mut dyn EthInternalSigner,
        kind: InternalKind,
        index: u32,
        asset: &str,
        from: EthAddress,
        tx: Eip1559,
        amount: u128,
        stats: &mut SweepStats,
    ) -> Result<bool, EthWatchError> {
        let t = InternalTx {
            kind,
            index,
            asset: asset.to_owned(),
            from: from.checksummed(),
            nonce: tx.nonce,
            unsigned: hex::encode(tx.encode_unsigned()),
            signed: None,
            gas_max: u128::from(tx.gas_limit).saturating_mul(tx.max_fee_per_gas),
            amount,
        };
        self.txs.push(t.clone());
        self.save()?;
        let pos = self.txs.len() - 1;
        match self.sign(signer, &t) {
            Ok(Some(raw)) => {
                self.txs[pos].signed = Some(hex::encode(&raw));
                self.save()?;
                if let Err(e) = self.rpc.send_raw(&raw) {
                    tracing::warn!(kind = ?kind, index, error = %e, "broadcast of a sweep failed; re-sent next poll");
                }
                tracing::info!(kind = ?kind, index, asset, amount = %amount, "Ethereum sweep signed and broadcast");
                stats.signed += 1;
                Ok(true)
            }
            Ok(None) => {
                self.txs.pop();
                self.save()?;
                stats.refused += 1;
                Ok(false)
            }
            // Kept unsigned: the next poll asks for the same bytes.
            Err(e) => Err(e),
        }
    }
}
