//! Hot ↔ cold for an Ethereum chain (docs/design/ethereum.md, "Cold setup"): the excess of ETH
//! and of each token swept from the hot key to the cold multisig contract, and refills from it
//! (a request file out, the keyholders' signatures in, `execute(...)` sent by the hot key). Both
//! are signed by the signer, which takes the cold address from its own configuration, recorded
//! (`RecordCustodyTx`; gas booked by `RecordGas`) before they are broadcast, re-sent as
//! recorded until mined, and booked back (`RevertCustodyMove`) if a mined call reverted.

use crate::eth::{EthAsset, EthSignError, EthWatchError, SocketSigner};
use kinko_chain::eth::cold::{
    execute_calldata, read_state, recover, refill_payment, EthRefill, RefillFileError, RefillPays,
    RefillSignature, COLD_SWEEP_GAS, EXECUTE_GAS, REFILL_KIND,
};
use kinko_chain::eth::rpc::EthRpc;
use kinko_chain::eth::{erc20_transfer, read_token_call, Eip1559, EthAddress, TokenCall};
use kinko_core::engine::Command;
use kinko_core::wallet::{CustodyMoveKind, CustodyMoveStatus, WithdrawalStatus};
use kinko_core::{Amount, AssetId, SystemAccount};
use kinko_engine::link::EngineLink;
use std::collections::BTreeMap;

/// The incident opened when the cold contract holds less than the ledger's cold wallet and no
/// earlier one explains it (funds moved by the keyholders outside kinko, or taken).
pub const KIND_COLD_SHORTFALL: &str = "cold_shortfall";

/// Largest refill request accepted at submit.
pub const REFILL_BYTES_MAX: usize = 64 * 1024;

/// Why a refill request was refused at submit: a stable code and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct ColdRefused {
    pub code: &'static str,
    pub reason: String,
}

fn refused<T>(code: &'static str, reason: impl Into<String>) -> Result<T, EthWatchError> {
    Err(EthWatchError::Cold(ColdRefused {
        code,
        reason: reason.into(),
    }))
}

/// One asset of the chain as hot → cold sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColdAsset {
    pub code: String,
    pub asset: AssetId,
    pub kind: EthAsset,
    /// Gas of the asset's transfer from hot (a token's `transfer`; ETH: [`COLD_SWEEP_GAS`]).
    pub gas_limit: u64,
    pub hot_share_bps: u32,
    pub hot_cap: u128,
}

/// A cold move of ours not yet final: re-sent until mined, booked back if it reverted.
#[derive(Clone, Debug)]
struct Unsettled {
    asset: AssetId,
    kind: CustodyMoveKind,
    txid: String,
    raw: Vec<u8>,
    amount: u128,
    /// Mined (successfully) at the last [`EthCold::settle`].
    mined: bool,
}

/// Hot ↔ cold of one chain: the cold contract, the hot key, what is in flight.
pub struct EthCold {
    rpc: EthRpc,
    link: EngineLink,
    chain_id: u64,
    hot: EthAddress,
    contract: EthAddress,
    /// The chain's native asset (ETH): gas is booked in its ledger.
    native: AssetId,
    priority_fee: u128,
    max_fee_cap: u128,
    finality_depth: u64,
    /// Where unsigned transactions are kept between asking the signer and recording its
    /// answer (`<code>.cold-sweep.eth-tx`, `<code>.refill.eth-tx`); none: memory only.
    state_dir: Option<std::path::PathBuf>,
    kept: BTreeMap<String, Vec<u8>>,
    /// Recorded moves not yet final, by transaction hash (`None`: not read from the engine yet).
    unsettled: Option<BTreeMap<[u8; 32], Unsettled>>,
}

impl std::fmt::Debug for EthCold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthCold")
            .field("contract", &self.contract)
            .field("hot", &self.hot)
            .finish_non_exhaustive()
    }
}

/// How [`EthCold`] builds and sends its transactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EthColdConfig {
    pub chain_id: u64,
    pub hot: EthAddress,
    pub contract: EthAddress,
    pub native: AssetId,
    pub priority_fee: u128,
    pub max_fee_cap: u128,
    pub finality_depth: u64,
    pub state_dir: Option<std::path::PathBuf>,
}

fn tx_id(hash: &[u8; 32]) -> String {
    format!("0x{}", hex::encode(hash))
}

impl EthCold {
    pub fn new(rpc: EthRpc, link: EngineLink, cfg: EthColdConfig) -> EthCold {
        EthCold {
            rpc,
            link,
            chain_id: cfg.chain_id,
            hot: cfg.hot,
            contract: cfg.contract,
            native: cfg.native,
            priority_fee: cfg.priority_fee,
            max_fee_cap: cfg.max_fee_cap,
            finality_depth: cfg.finality_depth.max(1),
            state_dir: cfg.state_dir,
            kept: BTreeMap::new(),
            unsettled: None,
        }
    }

    /// The cold contract.
    pub fn contract(&self) -> EthAddress {
        self.contract
    }

    fn kept_path(&self, name: &str) -> Option<std::path::PathBuf> {
        self.state_dir.as_ref().map(|d| d.join(format!("{name}.eth-tx")))
    }

    fn keep(&mut self, name: &str, raw: &[u8]) -> Result<(), EthWatchError> {
        if let Some(p) = self.kept_path(name) {
            crate::cursor::write_atomic(&p, hex::encode(raw).as_bytes())
                .map_err(|e| EthWatchError::Pending(e.to_string()))?;
        }
        self.kept.insert(name.to_owned(), raw.to_vec());
        Ok(())
    }

    fn kept(&self, name: &str) -> Option<Eip1559> {
        let raw = self.kept.get(name).cloned().or_else(|| {
            let text = std::fs::read_to_string(self.kept_path(name)?).ok()?;
            hex::decode(text.trim()).ok()
        })?;
        Eip1559::decode_unsigned(&raw).ok()
    }

    fn forget(&mut self, name: &str) {
        self.kept.remove(name);
        if let Some(p) = self.kept_path(name) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// The nonce after every unsigned transaction kept for the signer (it may have signed it):
    /// what the hot key must not build at again.
    pub fn kept_next_nonce(&self, codes: &[String]) -> Option<u64> {
        codes
            .iter()
            .flat_map(|c| [format!("{c}.cold-sweep"), format!("{c}.refill")])
            .filter_map(|n| self.kept(&n))
            .map(|tx| tx.nonce.saturating_add(1))
            .max()
    }

    fn submit(&self, what: &'static str, cmd: Command) -> Result<(), EthWatchError> {
        crate::eth::submit(&self.link, what, cmd).map(drop)
    }

    /// The current fees: (max fee, priority fee) per gas; `None` above the cap (it waits).
    fn fees(&self) -> Result<Option<(u128, u128)>, EthWatchError> {
        let base = self
            .rpc
            .block("latest")?
            .and_then(|b| b.base_fee_per_gas)
            .unwrap_or(0);
        let max_fee = base.saturating_mul(2).saturating_add(self.priority_fee);
        Ok((max_fee <= self.max_fee_cap).then_some((max_fee, self.priority_fee)))
    }

    /// Recorded cold moves of `assets` not yet final (read from the engine once).
    fn unsettled(&mut self, assets: &[AssetId]) -> &mut BTreeMap<[u8; 32], Unsettled> {
        let link = &self.link;
        self.unsettled.get_or_insert_with(|| {
            link.view(|e| {
                e.wallet()
                    .custody_moves()
                    .iter()
                    .filter(|m| assets.contains(&m.asset) && m.status == CustodyMoveStatus::Recorded)
                    .filter_map(|m| {
                        let raw = hex::decode(m.raw_tx.as_deref()?).ok()?;
                        Some((
                            Eip1559::tx_hash(&raw),
                            Unsettled {
                                asset: m.asset,
                                kind: m.kind,
                                txid: m.txid.clone(),
                                raw,
                                amount: m.amount.0,
                                mined: false,
                            },
                        ))
                    })
                    .collect()
            })
        })
    }

    /// Recorded moves not yet final: mined deep enough → forgotten; not mined → the recorded
    /// bytes again; mined but reverted (the call failed) → booked back with an incident.
    pub fn settle(&mut self, assets: &[AssetId]) -> Result<(), EthWatchError> {
        let head = self.rpc.block_number()?;
        let moves: Vec<([u8; 32], Unsettled)> = self
            .unsettled(assets)
            .iter()
            .map(|(h, u)| (*h, u.clone()))
            .collect();
        for (hash, u) in moves {
            match self.rpc.receipt(&hash)? {
                None => {
                    let _ = self.rpc.send_raw(&u.raw);
                }
                Some(r) if r.status != 1 => {
                    tracing::error!(asset = u.asset.0, txid = %u.txid, kind = u.kind.name(),
                        "a cold move's transaction reverted on chain; booking it back");
                    self.submit(
                        "revert_custody_move",
                        Command::RevertCustodyMove {
                            asset: u.asset,
                            txid: u.txid.clone(),
                            reason: format!("the {} transaction reverted on chain", u.kind.name()),
                        },
                    )?;
                    self.unsettled(assets).remove(&hash);
                }
                Some(r) if head.saturating_add(1).saturating_sub(r.block_number) >= self.finality_depth => {
                    self.unsettled(assets).remove(&hash);
                }
                Some(_) => {
                    if let Some(m) = self.unsettled(assets).get_mut(&hash) {
                        m.mined = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Reconciles the cold contract's balance of `a` with the ledger's cold wallet: it must hold
    /// at least the ledger's cold less the sweeps recorded and not yet mined; a shortfall no
    /// earlier `cold_shortfall` incident of the asset explains opens one and halts the asset's
    /// withdrawals. Returns the incident opened, if any.
    pub fn reconcile(&mut self, assets: &[AssetId], a: &ColdAsset) -> Result<Option<u64>, EthWatchError> {
        let sweeps_in_flight = self
            .unsettled(assets)
            .values()
            .filter(|m| m.asset == a.asset && m.kind == CustodyMoveKind::Sweep && !m.mined)
            .fold(0u128, |t, m| t.saturating_add(m.amount));
        let node = self.cold_balance(a.kind)?;
        let ledger = self.ledger(a.asset, SystemAccount::ColdWallet);
        let explained = self.link.view(|e| {
            e.admin()
                .incidents
                .iter()
                .filter(|i| i.asset == Some(a.asset) && i.kind == KIND_COLD_SHORTFALL)
                .fold(0u128, |t, i| t.saturating_add(i.missing.0))
        });
        let expected = ledger.saturating_sub(sweeps_in_flight);
        let missing = expected.saturating_sub(node).saturating_sub(explained);
        if missing == 0 {
            return Ok(None);
        }
        tracing::error!(asset = %a.code, contract = %self.contract, expected = %expected, node = %node, missing = %missing,
            "CRITICAL: the cold contract holds less than the ledger; halting withdrawals and opening an incident");
        let summary = format!(
                "the cold contract {} holds {node} of {}, {missing} less than the ledger's cold wallet ({expected} after sweeps in flight) and no incident explains it: moved by its keyholders outside kinko, or taken",
                self.contract, a.code
            );
        crate::eth::open_halting_incident(
            &self.link,
            KIND_COLD_SHORTFALL,
            a.asset,
            summary,
            Vec::new(),
            missing,
        )
    }

    /// What refills of `asset` recorded and not yet mined bring to hot: booked in the ledger's
    /// hot wallet, not yet on the node (balance reconciliation allows it).
    pub fn refills_in_flight(&self, asset: AssetId) -> u128 {
        self.unsettled.as_ref().map_or(0, |u| {
            u.values()
                .filter(|m| m.asset == asset && m.kind == CustodyMoveKind::Refill && !m.mined)
                .fold(0u128, |t, m| t.saturating_add(m.amount))
        })
    }

    /// Whether a move of `asset` of `kind` is recorded and not final yet.
    fn in_flight(&mut self, assets: &[AssetId], asset: AssetId, kind: CustodyMoveKind) -> bool {
        self.unsettled(assets)
            .values()
            .any(|u| u.asset == asset && u.kind == kind)
    }

    /// What the ledger's wallet account `which` holds of `asset` (never below 0): the most a
    /// move may take from it, or the engine refuses to record it (`CUSTODY_EXCEEDED`).
    fn ledger(&self, asset: AssetId, which: SystemAccount) -> u128 {
        self.link.view(|e| {
            e.asset(asset)
                .and_then(|a| e.ledger().account(a.system_account(which)))
                .map_or(0, |acc| u128::try_from(acc.balance()).unwrap_or(0))
        })
    }

    /// What the hot address holds of `a` on the node.
    fn hot_balance(&self, a: &ColdAsset) -> Result<u128, EthWatchError> {
        Ok(match a.kind {
            EthAsset::Ether => self.rpc.balance(&self.hot, "latest")?,
            EthAsset::Token(t) => self.rpc.token_balance(&t, &self.hot, "latest")?,
        })
    }

    /// What the cold contract holds of `kind` on the node.
    pub fn cold_balance(&self, kind: EthAsset) -> Result<u128, EthWatchError> {
        Ok(match kind {
            EthAsset::Ether => self.rpc.balance(&self.contract, "latest")?,
            EthAsset::Token(t) => self.rpc.token_balance(&t, &self.contract, "latest")?,
        })
    }

    /// The transaction sweeping `a`'s excess to cold at `nonce`, or `None` (at or under the
    /// limit, fees above the cap, nothing worth moving).
    fn build_sweep(&self, a: &ColdAsset, nonce: u64) -> Result<Option<(Eip1559, u128)>, EthWatchError> {
        let (liabilities, pending) = self.link.view(|e| {
            let pending: u128 = e
                .wallet()
                .withdrawals()
                .iter()
                .filter(|w| {
                    w.asset == a.asset && (w.status.is_held() || w.status == WithdrawalStatus::Signing)
                })
                .map(|w| w.amount.0)
                .fold(0u128, u128::saturating_add);
            (crate::service::Custody::liabilities(e, a.asset), pending)
        });
        let limit = (liabilities.saturating_mul(u128::from(a.hot_share_bps)) / 10_000).min(a.hot_cap);
        let hot = self.hot_balance(a)?;
        if hot <= limit {
            return Ok(None);
        }
        let Some((max_fee, priority)) = self.fees()? else {
            return Ok(None);
        };
        let keep = (limit / 2).max(pending).min(limit);
        // What stays is kept in the node's hot address and in the ledger's hot wallet alike (the
        // node may hold more than is booked: reconciliation's business), and no gas the ETH
        // ledger's hot wallet cannot pay: the engine would refuse to record a transaction the
        // signer already signed.
        let booked = self.ledger(a.asset, SystemAccount::HotWallet);
        let gas_limit = match a.kind {
            EthAsset::Ether => COLD_SWEEP_GAS,
            EthAsset::Token(_) => a.gas_limit,
        };
        let gas_wei = u128::from(gas_limit).saturating_mul(max_fee);
        if self.ledger(self.native, SystemAccount::HotWallet) < gas_wei
            || self.rpc.balance(&self.hot, "latest")? < gas_wei
        {
            return Ok(None);
        }
        let (to, value, data, amount) = match a.kind {
            EthAsset::Ether => {
                // The gas comes out of what moves, so what stays is never dipped into.
                let amount = hot.min(booked).saturating_sub(keep).saturating_sub(gas_wei);
                (self.contract, amount, Vec::new(), amount)
            }
            EthAsset::Token(t) => {
                let amount = hot.min(booked).saturating_sub(keep);
                (t, 0, erc20_transfer(&self.contract, amount), amount)
            }
        };
        let gas = gas_limit;
        if amount == 0 {
            return Ok(None);
        }
        Ok(Some((
            Eip1559 {
                chain_id: self.chain_id,
                nonce,
                max_priority_fee_per_gas: priority,
                max_fee_per_gas: max_fee,
                gas_limit: gas,
                to,
                value,
                data,
            },
            amount,
        )))
    }

    /// When the hot address holds more of `a` than its limit (`hot_share_bps` of customer
    /// liabilities, at most `hot_cap`), sends the excess down to half the limit (never below
    /// what requested withdrawals need) to the cold contract, at the hot key's next nonce
    /// `nonce` (moved on when a transaction is signed). Nothing while a sweep of `a` is in
    /// flight; the transaction kept from before a lost answer or a crash is asked for again as
    /// it is. Returns the hash of what was sent.
    pub fn sweep(
        &mut self,
        assets: &[AssetId],
        a: &ColdAsset,
        nonce: &mut u64,
        signer: &SocketSigner,
    ) -> Result<Option<[u8; 32]>, EthWatchError> {
        if self.in_flight(assets, a.asset, CustodyMoveKind::Sweep) {
            return Ok(None);
        }
        let name = format!("{}.cold-sweep", a.code);
        let tx = match self.kept(&name) {
            Some(k) if k.nonce >= self.rpc.nonce(&self.hot, "latest")? => k,
            other => {
                if other.is_some() {
                    // Its nonce was used on chain by another transaction: never signed by us.
                    self.forget(&name);
                }
                let Some((tx, _)) = self.build_sweep(a, *nonce)? else {
                    return Ok(None);
                };
                tx
            }
        };
        let amount = match (a.kind, read_token_call(&tx.data)) {
            (EthAsset::Ether, _) => tx.value,
            (EthAsset::Token(_), TokenCall::Transfer { amount, .. }) => amount,
            _ => 0,
        };
        let (hash, _) = self.sign_record_send(
            assets,
            a,
            CustodyMoveKind::Sweep,
            &name,
            &tx,
            amount,
            nonce,
            signer,
        )?;
        tracing::info!(asset = %a.code, txid = %tx_id(&hash), amount = %amount, "swept hot to cold");
        Ok(Some(hash))
    }

    /// Has the signer sign `tx` (a sweep to cold, or a refill's `execute`), kept as `name` from
    /// before it is asked until the answer is recorded, at the hot key's nonce (`nonce` moves past
    /// it, back on a refusal); then records it, counts it in flight and sends it (re-sent by
    /// [`EthCold::settle`] if the node did not take it). Its hash and the gas booked.
    #[allow(clippy::too_many_arguments)]
    fn sign_record_send(
        &mut self,
        assets: &[AssetId],
        a: &ColdAsset,
        kind: CustodyMoveKind,
        name: &str,
        tx: &Eip1559,
        amount: u128,
        nonce: &mut u64,
        signer: &SocketSigner,
    ) -> Result<([u8; 32], u128), EthWatchError> {
        let unsigned = tx.encode_unsigned();
        self.keep(name, &unsigned)?;
        *nonce = (*nonce).max(tx.nonce.saturating_add(1));
        let raw = match signer.sign_cold(kind == CustodyMoveKind::Refill, &unsigned) {
            Ok(raw) => raw,
            Err(EthSignError::Refused { code, reason, .. }) => {
                tracing::error!(asset = %a.code, %code, %reason, kind = kind.name(), "the signer refused a cold move");
                self.forget(name);
                if *nonce == tx.nonce.saturating_add(1) {
                    *nonce = tx.nonce;
                }
                return refused("SIGNER_REFUSED", format!("{code}: {reason}"));
            }
            Err(e @ EthSignError::Unavailable(_)) => return Err(EthWatchError::Signer(e)),
        };
        let hash = Eip1559::tx_hash(&raw);
        let gas = u128::from(tx.gas_limit).saturating_mul(tx.max_fee_per_gas);
        self.record(a, kind, &raw, amount, gas)?;
        self.forget(name);
        self.unsettled(assets).insert(
            hash,
            Unsettled {
                asset: a.asset,
                kind,
                txid: tx_id(&hash),
                raw: raw.clone(),
                amount,
                mined: false,
            },
        );
        // Recorded: in flight from now on, re-sent by `settle` if the node did not take it.
        if let Err(e) = self.rpc.send_raw(&raw) {
            tracing::warn!(asset = %a.code, txid = %tx_id(&hash), error = %e, kind = kind.name(),
                "a recorded cold move was not taken by the node; re-sent next poll");
        }
        Ok((hash, gas))
    }

    /// Records a signed cold move before it is broadcast: the gas (`gas` wei, paid by the hot
    /// key) in the native ledger, then the move itself.
    fn record(
        &self,
        a: &ColdAsset,
        kind: CustodyMoveKind,
        raw: &[u8],
        amount: u128,
        gas: u128,
    ) -> Result<(), EthWatchError> {
        let txid = tx_id(&Eip1559::tx_hash(raw));
        if gas > 0 {
            self.submit(
                "record_gas",
                Command::RecordGas {
                    asset: self.native,
                    txid: txid.clone(),
                    for_asset: a.asset,
                    amount: Amount(gas),
                },
            )?;
        }
        self.submit(
            "record_custody_tx",
            Command::RecordCustodyTx {
                asset: a.asset,
                kind,
                txid,
                raw_tx: hex::encode(raw),
                amount: Amount(amount),
                network_fee: Amount(0),
            },
        )
    }

    /// A refill's `execute` kept from before a lost answer or a crash (the signer may have signed
    /// it at its nonce) is asked for again as it is, recorded and sent, without waiting for the
    /// operator to submit the same file again: its nonce is never left a gap in the hot key's.
    pub fn retry_kept_refill(
        &mut self,
        assets: &[AssetId],
        a: &ColdAsset,
        nonce: &mut u64,
        signer: &SocketSigner,
    ) -> Result<Option<[u8; 32]>, EthWatchError> {
        let name = format!("{}.refill", a.code);
        let Some(tx) = self.kept(&name) else {
            return Ok(None);
        };
        if tx.nonce < self.rpc.nonce(&self.hot, "latest")?
            || self.in_flight(assets, a.asset, CustodyMoveKind::Refill)
        {
            // Its nonce was used by another transaction (never ours), or it was recorded.
            self.forget(&name);
            return Ok(None);
        }
        let pays = kinko_chain::eth::cold::read_execute(&tx.data)
            .and_then(|e| refill_payment(&self.hot, &e.to, e.value, &e.data));
        let amount = match (pays, a.kind) {
            (Some(RefillPays::Ether(v)), EthAsset::Ether) => v,
            (Some(RefillPays::Token { token, amount }), EthAsset::Token(t)) if token == t => amount,
            _ => {
                self.forget(&name);
                return Ok(None);
            }
        };
        let (hash, _) = self.sign_record_send(
            assets,
            a,
            CustodyMoveKind::Refill,
            &name,
            &tx,
            amount,
            nonce,
            signer,
        )?;
        tracing::info!(asset = %a.code, txid = %tx_id(&hash), amount = %amount, "a kept refill from cold sent");
        Ok(Some(hash))
    }

    /// The unsigned refill request moving `amount` of `a` from cold to the hot address, for the
    /// keyholders (`kinko-signer offline-sign`), then [`EthCold::submit_refill`].
    pub fn refill_request(&self, a: &ColdAsset, amount: u128) -> Result<EthRefill, EthWatchError> {
        if amount == 0 {
            return refused("REFILL_INVALID", "the amount is zero");
        }
        let state = read_state(&self.rpc, &self.contract, "latest").map_err(cold_err)?;
        let held = self.cold_balance(a.kind)?;
        if held < amount {
            return refused(
                "REFILL_INVALID",
                format!("the cold contract holds {held} of {}, less than {amount}", a.code),
            );
        }
        let (to, value, data) = match a.kind {
            EthAsset::Ether => (self.hot, amount, Vec::new()),
            EthAsset::Token(t) => (t, 0, erc20_transfer(&self.hot, amount)),
        };
        let digest =
            kinko_chain::eth::cold::digest(self.chain_id, &self.contract, state.nonce, &to, value, &data);
        Ok(EthRefill {
            kind: REFILL_KIND.into(),
            asset: a.code.clone(),
            amount: amount.to_string(),
            chain_id: self.chain_id,
            contract: self.contract.checksummed(),
            nonce: state.nonce,
            to: to.checksummed(),
            value: value.to_string(),
            data: hex::encode(&data),
            digest: hex::encode(digest),
            owners: state.owners.iter().map(EthAddress::checksummed).collect(),
            threshold: state.threshold,
            signatures: Vec::new(),
        })
    }

    /// Checks a refill request signed by the keyholders — for this chain and contract, at the
    /// contract's nonce, paying the hot address, `threshold` valid signatures of distinct owners
    /// over its digest — and has the hot key send `execute(...)` through the signer; recorded,
    /// broadcast. Returns (txid, amount to hot, gas in wei paid from hot).
    pub fn submit_refill(
        &mut self,
        assets: &[AssetId],
        parts: &[ColdAsset],
        text: &str,
        nonce: &mut u64,
        signer: &SocketSigner,
    ) -> Result<(String, u128, u128), EthWatchError> {
        if text.len() > REFILL_BYTES_MAX {
            return refused("REFILL_INVALID", format!("larger than {REFILL_BYTES_MAX} bytes"));
        }
        let refill: EthRefill = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) => return refused("REFILL_INVALID", format!("not a refill request: {e}")),
        };
        let call = match refill.call() {
            Ok(c) => c,
            Err(RefillFileError::DigestWrong) => {
                return refused(
                    "SIGNATURE_DIGEST_WRONG",
                    "the file's digest is not the one its fields give",
                )
            }
            Err(RefillFileError::Invalid(m)) => return refused("REFILL_INVALID", m),
        };
        if call.chain_id != self.chain_id || call.contract != self.contract {
            return refused(
                "REFILL_INVALID",
                format!(
                    "for chain {} and contract {}, not this chain's cold contract",
                    call.chain_id, call.contract
                ),
            );
        }
        let Some(a) = parts.iter().find(|p| p.code == refill.asset) else {
            return refused(
                "REFILL_INVALID",
                format!("asset {:?} is not held on this chain", refill.asset),
            );
        };
        let amount = match (
            refill_payment(&self.hot, &call.to, call.value, &call.data),
            a.kind,
        ) {
            (Some(RefillPays::Ether(v)), EthAsset::Ether) => v,
            (Some(RefillPays::Token { token, amount }), EthAsset::Token(t)) if token == t => amount,
            _ => {
                return refused(
                    "REFILL_NOT_TO_HOT",
                    format!(
                        "the call to {} ({} wei, {} bytes of data) does not pay {} to the hot address {}",
                        call.to,
                        call.value,
                        call.data.len(),
                        a.code,
                        self.hot
                    ),
                )
            }
        };
        if self.in_flight(assets, a.asset, CustodyMoveKind::Refill) {
            return refused(
                "REFILL_IN_FLIGHT",
                "a refill of this asset is recorded and not yet final",
            );
        }
        let state = read_state(&self.rpc, &self.contract, "latest").map_err(cold_err)?;
        if call.nonce != state.nonce {
            return refused(
                "REFILL_INVALID",
                format!(
                    "made at the contract's nonce {}, which is now {}",
                    call.nonce, state.nonce
                ),
            );
        }
        let sigs = check_signatures(&refill.signatures, &call.digest(), &state.owners, state.threshold)?;
        let booked = self.ledger(a.asset, SystemAccount::ColdWallet);
        if booked < amount {
            return refused(
                "REFILL_INVALID",
                format!(
                    "the ledger's cold wallet holds {booked} of {}, less than {amount}",
                    a.code
                ),
            );
        }
        let data = execute_calldata(&call.to, call.value, &call.data, &sigs);
        let name = format!("{}.refill", a.code);
        let tx = match self.kept(&name) {
            Some(k) if k.data == data && k.nonce >= self.rpc.nonce(&self.hot, "latest")? => k,
            _ => {
                let Some((max_fee, priority)) = self.fees()? else {
                    return refused(
                        "FEES_ABOVE_CAP",
                        "the network's fees are above max_fee_per_gas_wei; try later",
                    );
                };
                let gas_wei = u128::from(EXECUTE_GAS).saturating_mul(max_fee);
                if self.ledger(self.native, SystemAccount::HotWallet) < gas_wei
                    || self.rpc.balance(&self.hot, "latest")? < gas_wei
                {
                    return refused(
                        "REFILL_INVALID",
                        format!("the hot address (or the ledger's hot ETH) cannot pay the execute's gas ({gas_wei} wei)"),
                    );
                }
                Eip1559 {
                    chain_id: self.chain_id,
                    nonce: *nonce,
                    max_priority_fee_per_gas: priority,
                    max_fee_per_gas: max_fee,
                    gas_limit: EXECUTE_GAS,
                    to: self.contract,
                    value: 0,
                    data,
                }
            }
        };
        let (hash, gas) = self.sign_record_send(
            assets,
            a,
            CustodyMoveKind::Refill,
            &name,
            &tx,
            amount,
            nonce,
            signer,
        )?;
        tracing::info!(asset = %a.code, txid = %tx_id(&hash), amount = %amount, "refill from cold sent");
        Ok((tx_id(&hash), amount, gas))
    }
}

fn cold_err(e: kinko_chain::eth::cold::ColdError) -> EthWatchError {
    EthWatchError::Cold(ColdRefused {
        code: "COLD_UNAVAILABLE",
        reason: e.to_string(),
    })
}

/// The signatures `threshold` of them sorted by owner, as `execute` takes them, after checking
/// each: it recovers over `digest` to the owner it names (`SIGNATURE_DIGEST_WRONG`), that owner
/// is one of the contract's (`SIGNATURE_NOT_OWNER`) and not seen before (`SIGNATURE_DUPLICATE`);
/// fewer than `threshold` → `SIGNATURES_TOO_FEW`.
pub fn check_signatures(
    sigs: &[RefillSignature],
    digest: &[u8; 32],
    owners: &[EthAddress],
    threshold: u64,
) -> Result<Vec<[u8; 65]>, EthWatchError> {
    let mut valid: BTreeMap<EthAddress, [u8; 65]> = BTreeMap::new();
    for s in sigs.iter().take(kinko_chain::eth::cold::OWNERS_MAX * 2) {
        let Ok(owner) = EthAddress::parse(&s.owner) else {
            return refused("REFILL_INVALID", format!("{:?} is not an address", s.owner));
        };
        let mut sig = [0u8; 65];
        if hex::decode_to_slice(&s.signature, &mut sig).is_err() {
            return refused(
                "REFILL_INVALID",
                format!("the signature of {owner} is not 65 bytes of hex"),
            );
        }
        if recover(digest, &sig) != Some(owner) {
            return refused(
                "SIGNATURE_DIGEST_WRONG",
                format!("the signature named {owner} is not its signature of this request's digest"),
            );
        }
        if !owners.contains(&owner) {
            return refused(
                "SIGNATURE_NOT_OWNER",
                format!("{owner} is not an owner of the cold contract"),
            );
        }
        if valid.insert(owner, sig).is_some() {
            return refused("SIGNATURE_DUPLICATE", format!("{owner} signed twice"));
        }
    }
    let n = valid.len();
    let needed = usize::try_from(threshold).unwrap_or(usize::MAX);
    if n < needed {
        return refused(
            "SIGNATURES_TOO_FEW",
            format!("{n} valid owner signature(s), the contract needs {threshold}"),
        );
    }
    Ok(valid.into_values().take(needed).collect())
}
