//! The custody loop of one chain asset (see the crate documentation for what each poll does).

use crate::config::{CustodyConfig, COMPANY_DEPOSIT_INDEX, REFILL_BASE, SWEEP_CHANGE_BASE};
use crate::cursor::{self, CursorStore, Scan};
use crate::error::{rpc_err, CustodyError};
use crate::reconcile::Reconciler;
use bitcoin::consensus::encode::serialize_hex;
use bitcoin::{OutPoint, ScriptBuf, Txid};
use kinko_chain::keys::{cold_descriptor, derive_cold, derive_hot, hot_descriptor, Derived};
use kinko_chain::psbt::{self, Utxo};
use kinko_chain::rpc::{Rpc, RpcError, Unspent};
use kinko_chain::script_for;
use kinko_core::ledger::Owner;
use kinko_core::wallet::{
    CustodyMoveKind, DepositId, DepositStatus, Wallet, Withdrawal, WithdrawalId, WithdrawalStatus,
};
use kinko_core::{Amount, AssetId, Command, Engine, Reject, Reply, SystemAccount};
use kinko_engine::health::{Health, Severity};
use kinko_engine::link::EngineLink;
use kinko_engine::ports::{CustodyOpsError, SecretOpener};
use kinko_signer_proto::client::SignerClient;
use kinko_signer_proto::protocol::{JournalHead, Request, Response};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A credited deposit is watched for reversal until it is this deep.
pub const REORG_WATCH_DEPTH: i64 = 100;
/// Refill transactions pay the hot wallet at most this many times before indexes wrap into
/// another range (far more than a deployment will ever need).
const REFILLS_MAX: u32 = 100_000_000;

/// The custody service of one asset. `poll` does one round; [`Custody::spawn`] runs it on its
/// own thread every `config.poll`.
pub struct Custody {
    /// How many receive addresses the node's wallet watches (shared with the gateway's
    /// [`crate::UtxoChain`], which hands out no address beyond them).
    receive_gate: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) cfg: CustodyConfig,
    pub(crate) link: EngineLink,
    pub(crate) hot: Rpc,
    pub(crate) cold: Rpc,
    /// The node with a short time limit: asked first each poll, so that a hung or stopped
    /// node costs one short wait per poll, not every call's full timeout.
    pub(crate) probe: Rpc,
    asset: Option<AssetId>,
    /// The `listsinceblock` cursors of the deposit scan and of reconciliation, kept across
    /// restarts ([`crate::cursor`]).
    pub(crate) cursors: CursorStore,
    /// Highest index imported so far per range (`None`: nothing imported yet this run).
    pub(crate) imported: BTreeMap<&'static str, u32>,
    pub(crate) wallets_ready: bool,
    /// Scripts of ours, for recognising UTXOs: hot receive, hot change and cold.
    pub(crate) scripts: HashMap<ScriptBuf, Derived>,
    /// Credited deposits still shallow enough to be reorganised away.
    watched: BTreeSet<DepositId>,
    /// Signed transactions not yet recorded, by withdrawal: (txid, hex, miner fee).
    /// Reconciliation counts them as ours, and as possibly gone. Empty since transactions are
    /// recorded before they are broadcast (`crate::lifecycle`); kept for reconciliation's
    /// accounting.
    pub(crate) signed: BTreeMap<WithdrawalId, (String, String, u64)>,
    /// Recorded transactions followed to finality (`crate::lifecycle`).
    pub(crate) life: crate::lifecycle::Lifecycle,
    /// Fault injection for tests: stop (as a crash would) right after the next withdrawal's
    /// transaction is recorded, before it is broadcast.
    crash_before_broadcast: bool,
    /// Fault injection (tests): die after the signer answered, before recording.
    crash_after_signing: bool,
    /// Unsigned withdrawal PSBTs kept between asking the signer and recording its answer.
    pending: crate::pending::PendingPsbts,
    /// The signer's registry, fed from committed state.
    feed: crate::signer_feed::SignerFeed,
    /// Withdrawals found in `Signing` at start: looked up on chain before anything is re-signed.
    recovered: bool,
    /// Reconciliation's memory of this run (cursors, approved txids, unapproved spends found).
    pub(crate) rec: Reconciler,
    /// What works right now (`node:`, `signer:`, `custody:`, `reconcile:`, `hot:` + asset),
    /// shared with the gateway's `/ready`, `/metrics` and withdrawal views ([`crate::health`]).
    pub(crate) health: Health,
    /// The company's own deposit address (`None`: it cannot be derived from the hot key).
    company_address: Option<String>,
    /// The last sweep waited for company funds (logged once per wait, not every poll).
    sweep_waiting: bool,
    /// The engine halt last forwarded to the signer ([`crate::halts`]).
    pub(crate) halt_forwarded: Option<String>,
}

/// The running service; stopping it joins the thread.
pub struct CustodyThread {
    stop: Arc<AtomicBool>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl CustodyThread {
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Drop for CustodyThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// The value of `coins`, refusing a sum no chain can have.
pub(crate) fn coins_total(coins: &HashMap<OutPoint, u64>) -> Result<u64, CustodyError> {
    coins
        .values()
        .try_fold(0u64, |t, v| t.checked_add(*v))
        .ok_or(CustodyError::Overflow("balance"))
}

/// How many sweeps and refills of `asset` have been recorded: (sweeps, refills). The indexes of
/// the addresses custody moves use follow from them.
fn move_counts(w: &Wallet, asset: AssetId) -> (u32, u32) {
    let n = |k: CustodyMoveKind| {
        w.custody_moves()
            .iter()
            .filter(|m| m.asset == asset && m.kind == k)
            .count() as u32
    };
    (n(CustodyMoveKind::Sweep), n(CustodyMoveKind::Refill))
}

fn amount_u64(a: Amount) -> Result<u64, CustodyError> {
    u64::try_from(a.0).map_err(|_| CustodyError::AmountTooLarge(a.0))
}

impl Custody {
    /// `vault` opens the sealed TOTP secrets the signer must learn; without it the signer gets
    /// passkeys only.
    pub fn new(cfg: CustodyConfig, link: EngineLink, vault: Option<Arc<dyn SecretOpener>>) -> Custody {
        let node = Rpc::new(&cfg.rpc_url, &cfg.rpc_user, &cfg.rpc_password);
        let hot = node.wallet(&cfg.hot_wallet());
        let cold = node.wallet(&cfg.cold_wallet());
        let cursors = CursorStore::open(cfg.cursor_dir.as_deref(), &cfg.asset);
        let pending = crate::pending::PendingPsbts::open(cfg.cursor_dir.as_deref(), &cfg.asset);
        let probe = node.with_timeout(crate::health::NODE_PROBE_TIMEOUT);
        let (cfg_network, cfg_hot_key) = (cfg.network, cfg.hot_key.clone());
        let feed = crate::signer_feed::SignerFeed::new(cfg.signer_socket.clone(), link.clone(), vault);
        Custody {
            probe,
            cfg,
            link,
            hot,
            cold,
            asset: None,
            cursors,
            imported: BTreeMap::new(),
            wallets_ready: false,
            scripts: HashMap::new(),
            watched: BTreeSet::new(),
            signed: BTreeMap::new(),
            life: crate::lifecycle::Lifecycle::default(),
            crash_before_broadcast: false,
            crash_after_signing: false,
            pending,
            feed,
            recovered: false,
            receive_gate: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            rec: Reconciler::default(),
            health: Health::new(),
            company_address: derive_hot(cfg_network, &cfg_hot_key, 0, COMPANY_DEPOSIT_INDEX)
                .ok()
                .map(|d| d.address.to_string()),
            sweep_waiting: false,
            halt_forwarded: None,
        }
    }

    /// The company's own deposit address of the asset: coins sent to it are credited to the
    /// company treasury once confirmed (see [`COMPANY_DEPOSIT_INDEX`]).
    pub fn company_address(&self) -> Result<String, CustodyError> {
        derive_hot(self.cfg.network, &self.cfg.hot_key, 0, COMPANY_DEPOSIT_INDEX)
            .map(|d| d.address.to_string())
            .map_err(derive("company address"))
    }

    /// Reports to `health` (the gateway's registry) instead of a private one.
    pub fn with_health(mut self, health: Health) -> Custody {
        self.health = health;
        self
    }

    /// The count of receive addresses the node watches, for the gateway's adapter: a deposit
    /// address is handed out only once the node is watching it.
    pub fn receive_gate(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.receive_gate.clone()
    }

    /// Shares `gate` with the gateway's adapter (see [`Custody::receive_gate`]).
    pub fn with_receive_gate(mut self, gate: Arc<std::sync::atomic::AtomicU64>) -> Custody {
        self.receive_gate = gate;
        self
    }

    pub fn config(&self) -> &CustodyConfig {
        &self.cfg
    }

    /// Fault injection (tests): the next withdrawal stops after its transaction is recorded and
    /// before it is broadcast, as if the process died there; the poll returns
    /// [`CustodyError::Crashed`].
    #[doc(hidden)]
    pub fn crash_before_next_broadcast(&mut self) {
        self.crash_before_broadcast = true;
    }

    /// Fault injection (tests): the next withdrawal stops after the signer signed it and
    /// before its transaction is recorded, as if the process died there.
    #[doc(hidden)]
    pub fn crash_after_next_signing(&mut self) {
        self.crash_after_signing = true;
    }

    /// Runs [`Custody::poll`] every `config.poll` on a thread of its own.
    pub fn spawn(self) -> CustodyThread {
        spawn_shared(Arc::new(Mutex::new(self)))
    }

    fn asset(&mut self) -> Result<AssetId, CustodyError> {
        if let Some(a) = self.asset {
            return Ok(a);
        }
        let code = self.cfg.asset.clone();
        let a = self
            .link
            .view(|e| e.asset_by_code(&code))
            .ok_or(CustodyError::AssetUndefined(code))?;
        self.asset = Some(a);
        Ok(a)
    }

    /// One round: imports, deposits, signer registry, withdrawals, sweep, then reconciliation,
    /// then the cursors are stored and the outcome reported to the health registry
    /// ([`crate::health`]). Reconciliation runs even when a bookkeeping step failed (a signer
    /// or engine outage must not blind theft detection); it cannot run without the node's
    /// wallets, and enough polls in a row without it halt the asset's withdrawals. The first
    /// error is returned.
    pub fn poll(&mut self) -> Result<(), CustodyError> {
        self.leading()?;
        let asset = self.asset()?;
        // First, and whatever else fails: an engine halt reaches the signer at once.
        let forwarded = self.forward_halt(asset);
        let imports = self.probe_node().and_then(|()| self.ensure_imports(asset));
        let imports_ok = imports.is_ok();
        let books = imports.and_then(|()| self.books(asset));
        let checked = match (self.cfg.reconcile, &books) {
            (false, _) => None,
            // Without the node's wallets there is nothing to compare: blind, not clean.
            (true, Err(e)) if !imports_ok => Some(Err(CustodyError::ReconcileBlind(e.to_string()))),
            (true, _) => Some(self.reconcile(asset, books.is_ok())),
        };
        // A halt reconciliation just made reaches the signer in the same poll.
        let forwarded = forwarded.and(self.forward_halt(asset));
        let saved = self.cursors.save();
        self.report(asset, &books, checked.as_ref(), &saved);
        books.and(saved).and(checked.unwrap_or(Ok(()))).and(forwarded)
    }

    /// The steps that move coins and book them.
    fn books(&mut self, asset: AssetId) -> Result<(), CustodyError> {
        self.scan_deposits(asset)?;
        // Withdrawals and moves that left the chain are reverted before deposits are reversed.
        self.follow_transactions(asset)?;
        self.settle_deposits(asset)?;
        self.register_with_signer(asset)?;
        self.leading()?;
        self.send_withdrawals(asset)?;
        self.leading()?;
        self.sweep(asset)?;
        Ok(())
    }

    // --- the node's watch-only wallets ----------------------------------------------------

    fn import(&mut self, range: &'static str, begin: u32, end: u32) -> Result<(), CustodyError> {
        let (rpc, desc, internal) = match range {
            "receive" | "company" => (&self.hot, hot_descriptor(&self.cfg.hot_key, 0), false),
            "cold" => (&self.cold, cold_descriptor(&self.cfg.cold), false),
            _ => (&self.hot, hot_descriptor(&self.cfg.hot_key, 1), true),
        };
        let req = serde_json::json!([{
            "desc": desc,
            "range": [begin, end],
            "timestamp": "now",
            "watchonly": true,
            "internal": internal,
            "keypool": false,
        }]);
        let res: Vec<serde_json::Value> = rpc
            .call("importmulti", serde_json::json!([req, {"rescan": false}]))
            .map_err(|e| rpc_err("importmulti", e))?;
        if let Some(bad) = res.iter().find(|r| r["success"] != serde_json::Value::Bool(true)) {
            return Err(CustodyError::Import {
                range,
                begin,
                end,
                error: bad["error"].to_string(),
            });
        }
        // Remember the scripts, to recognise our UTXOs.
        for i in begin..=end {
            let d = match range {
                "receive" | "company" => derive_hot(self.cfg.network, &self.cfg.hot_key, 0, i),
                "cold" => derive_cold(self.cfg.network, &self.cfg.cold, i),
                _ => derive_hot(self.cfg.network, &self.cfg.hot_key, 1, i),
            }
            .map_err(|source| CustodyError::Derive {
                what: format!("derive {range} {i}"),
                source,
            })?;
            self.scripts.insert(d.script_pubkey.clone(), d);
        }
        self.imported.insert(range, end);
        if range == "receive" {
            self.receive_gate
                .store(u64::from(end) + 1, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }

    fn ensure_range(&mut self, range: &'static str, base: u32, used: u32) -> Result<(), CustodyError> {
        let want = used.saturating_add(self.cfg.lookahead);
        let have = self.imported.get(range).copied();
        match have {
            Some(h) if h >= used.saturating_add(self.cfg.lookahead / 2) => Ok(()),
            Some(h) => self.import(range, h + 1, want),
            None => self.import(range, base, want),
        }
    }

    fn ensure_imports(&mut self, asset: AssetId) -> Result<(), CustodyError> {
        if !self.wallets_ready {
            self.hot
                .create_watch_only_wallet(&self.cfg.hot_wallet())
                .map_err(|e| rpc_err("create hot wallet", e))?;
            self.cold
                .create_watch_only_wallet(&self.cfg.cold_wallet())
                .map_err(|e| rpc_err("create cold wallet", e))?;
            self.wallets_ready = true;
        }
        let (addresses, withdrawals, (sweeps, refills)) = self.link.view(|e| {
            let w = e.wallet();
            (
                w.deposit_address_count(asset) as u32,
                w.withdrawals().len() as u32,
                move_counts(w, asset),
            )
        });
        self.ensure_range("receive", 0, addresses)?;
        self.ensure_range("change", 0, withdrawals)?;
        self.ensure_range("sweep-change", SWEEP_CHANGE_BASE, SWEEP_CHANGE_BASE + sweeps)?;
        self.ensure_range("refill", REFILL_BASE, REFILL_BASE + refills)?;
        self.ensure_range("cold", 0, sweeps + refills)?;
        if !self.imported.contains_key("company") {
            self.import("company", COMPANY_DEPOSIT_INDEX, COMPANY_DEPOSIT_INDEX)?;
        }
        Ok(())
    }

    // --- deposits ---------------------------------------------------------------------------

    fn submit(&self, cmd: Command) -> Result<Result<Reply, Reject>, CustodyError> {
        self.link.submit(cmd).map_err(CustodyError::Engine)
    }

    fn scan_deposits(&mut self, asset: AssetId) -> Result<(), CustodyError> {
        let cursor = self.cursors.get(Scan::Deposits);
        let since = cursor::list_since(
            &self.hot,
            cursor.as_deref(),
            self.cfg.confirmations.max(1),
            self.cfg.rescan_depth,
            "listsinceblock (deposits)",
        )?
        .since;
        for tx in &since.transactions {
            if tx.category != "receive" || tx.confirmations < 0 || tx.amount_sats <= 0 {
                continue;
            }
            let Some(address) = tx.address.as_deref() else {
                continue;
            };
            if self.company_address.as_deref() == Some(address) {
                self.company_deposit(asset, tx)?;
                continue;
            }
            let known = self.link.view(|e| {
                let w = e.wallet();
                (
                    w.deposit_address_owner(asset, address).is_some(),
                    w.deposit_by_output(asset, &tx.txid, tx.vout).is_some(),
                )
            });
            if !known.0 || known.1 {
                continue;
            }
            let cmd = Command::DepositSeen {
                asset,
                address: address.to_owned(),
                txid: tx.txid.clone(),
                vout: tx.vout,
                amount: Amount(tx.amount_sats.unsigned_abs().into()),
            };
            match self.submit(cmd)? {
                Ok(_) => tracing::info!(asset = %self.cfg.asset, txid = %tx.txid, vout = tx.vout,
                    sats = tx.amount_sats, "deposit seen"),
                Err(r) => tracing::warn!(txid = %tx.txid, code = r.code(), "deposit refused by the engine"),
            }
        }
        self.cursors.set(Scan::Deposits, since.lastblock);
        Ok(())
    }

    /// A deposit to the company's own address: credited to the company treasury once it has
    /// `confirmations` (listed again by the scan until then), once per output.
    fn company_deposit(&self, asset: AssetId, tx: &kinko_chain::rpc::WalletTx) -> Result<(), CustodyError> {
        if tx.confirmations < i64::from(self.cfg.confirmations.max(1)) {
            return Ok(());
        }
        let known = self.link.view(|e| {
            e.wallet()
                .company_deposit_by_output(asset, &tx.txid, tx.vout)
                .is_some()
        });
        if known {
            return Ok(());
        }
        let cmd = Command::CompanyDeposit {
            asset,
            txid: tx.txid.clone(),
            vout: tx.vout,
            amount: Amount(tx.amount_sats.unsigned_abs().into()),
        };
        match self.submit(cmd)? {
            Ok(_) => tracing::info!(asset = %self.cfg.asset, txid = %tx.txid, vout = tx.vout,
                sats = tx.amount_sats, "company deposit credited to the company treasury"),
            Err(r) => {
                tracing::warn!(txid = %tx.txid, code = r.code(), "company deposit refused by the engine")
            }
        }
        Ok(())
    }

    /// Pending deposits: confirmed at depth, dropped when conflicted. Credited ones still
    /// shallow: reversed when conflicted.
    fn settle_deposits(&mut self, asset: AssetId) -> Result<(), CustodyError> {
        let open: Vec<(DepositId, String, DepositStatus)> = self.link.view(|e| {
            e.wallet()
                .deposits()
                .iter()
                .filter(|d| d.asset == asset)
                .filter(|d| {
                    d.status == DepositStatus::Pending
                        || (d.status == DepositStatus::Credited && !self.recovered)
                        || self.watched.contains(&d.id)
                })
                .map(|d| (d.id, d.txid.clone(), d.status))
                .collect()
        });
        let target = i64::from(self.cfg.confirmations.max(1));
        for (id, txid, status) in open {
            let conf = match self.hot.get_transaction(&txid) {
                Ok(t) => t.confirmations,
                Err(e) => {
                    tracing::warn!(txid = %txid, error = %e, "deposit transaction unknown to the node");
                    continue;
                }
            };
            match status {
                DepositStatus::Pending if conf >= target => {
                    if let Ok(r) = self.submit(Command::DepositConfirmed { deposit: id })? {
                        tracing::info!(deposit = id.0, txid = %txid, ?r, "deposit credited");
                        self.watched.insert(id);
                    }
                }
                DepositStatus::Pending if conf < 0 => {
                    self.submit(Command::DepositDropped { deposit: id })?
                        .map_err(|r| refused(format!("drop deposit {}", id.0), r))?;
                    tracing::warn!(deposit = id.0, txid = %txid, "pending deposit left the chain: dropped");
                }
                DepositStatus::Credited if conf < 0 => {
                    self.submit(Command::DepositReversed { deposit: id })?
                        .map_err(|r| refused(format!("reverse deposit {}", id.0), r))?;
                    self.watched.remove(&id);
                    let shortfall = self
                        .link
                        .view(|e| e.wallet().deposit(id).map(|d| d.shortfall.0).unwrap_or(0));
                    if shortfall > 0 {
                        tracing::error!(deposit = id.0, txid = %txid, shortfall,
                            "credited deposit left the chain after its funds were used: open risk item");
                    } else {
                        tracing::warn!(deposit = id.0, txid = %txid, "credited deposit left the chain: reversed");
                    }
                }
                DepositStatus::Credited if conf >= REORG_WATCH_DEPTH => {
                    self.watched.remove(&id);
                }
                DepositStatus::Credited => {
                    self.watched.insert(id);
                }
                _ => {}
            }
        }
        self.recovered = true;
        Ok(())
    }

    // --- the signer's registry ----------------------------------------------------------------

    /// The engine journal's head, which the signer witnesses with every signature.
    fn journal_head(&self) -> JournalHead {
        journal_head(&self.link)
    }

    /// Custody acts only on the node that writes: a single node, or the cluster's primary. A
    /// standby or a deposed primary stops before it builds, signs or broadcasts anything; the
    /// signer refuses what a deposed primary already had in flight (its epoch is older).
    fn leading(&self) -> Result<(), CustodyError> {
        match self.link.handle().stats().role() {
            kinko_engine::Role::Single | kinko_engine::Role::Primary => Ok(()),
            other => Err(CustodyError::NotLeader(other.name())),
        }
    }

    pub(crate) fn signer(&self) -> Result<SignerClient, CustodyError> {
        SignerClient::connect(&self.cfg.signer_socket).map_err(|source| CustodyError::SignerUnreachable {
            path: self.cfg.signer_socket.clone(),
            source,
        })
    }

    /// Tells the signer every withdrawal address of the asset and every second factor it does
    /// not know yet ([`crate::signer_feed`]).
    fn register_with_signer(&mut self, asset: AssetId) -> Result<(), CustodyError> {
        self.feed.register(&[asset])
    }

    // --- withdrawals ----------------------------------------------------------------------------

    fn fee_rate(&self) -> u64 {
        match self.hot.estimate_smart_fee(6) {
            Ok(Some(r)) if r > 0 => r,
            _ => self.cfg.fee_rate_sat_vb,
        }
    }

    /// Our spendable hot UTXOs: only final ones (at least `finality_depth` deep, change
    /// included: a coin that a reorg can still take away is never spent), and none that a
    /// recorded withdrawal not yet sent will spend.
    pub fn hot_utxos(&self) -> Result<Vec<Utxo>, CustodyError> {
        let reserved = self.reserved_inputs()?;
        self.our_utxos(
            &self.hot,
            self.cfg.finality_depth.max(1),
            "listunspent",
            |u, d| {
                let op = Txid::from_str(&u.txid)
                    .ok()
                    .map(|txid| OutPoint { txid, vout: u.vout });
                d.witness_script.is_none() && !op.is_some_and(|op| reserved.contains(&op))
            },
        )
    }

    /// The coins that recorded withdrawals still in `Signed` spend (maybe not broadcast yet).
    fn reserved_inputs(&self) -> Result<BTreeSet<OutPoint>, CustodyError> {
        let raws: Vec<(String, String)> = self.link.view(|e| {
            e.wallet()
                .withdrawals()
                .iter()
                .filter(|w| w.status == WithdrawalStatus::Signed)
                .filter_map(|w| Some((w.txid.clone()?, w.raw_tx.clone()?)))
                .collect()
        });
        let mut out = BTreeSet::new();
        for (txid, raw) in raws {
            let tx: bitcoin::Transaction = bitcoin::consensus::encode::deserialize_hex(&raw)
                .map_err(|source| CustodyError::TxDecode { txid, source })?;
            out.extend(tx.input.iter().map(|i| i.previous_output));
        }
        Ok(out)
    }

    /// The outputs `rpc`'s wallet lists with at least `min_conf` confirmations that pay one of
    /// our scripts and that `keep` accepts, as coins to spend.
    fn our_utxos(
        &self,
        rpc: &Rpc,
        min_conf: u32,
        what: &str,
        keep: impl Fn(&Unspent, &Derived) -> bool,
    ) -> Result<Vec<Utxo>, CustodyError> {
        let list = rpc.list_unspent(min_conf, None).map_err(|e| rpc_err(what, e))?;
        let mut out = Vec::new();
        for u in list {
            let script = ScriptBuf::from_hex(&u.script_pub_key).map_err(CustodyError::ScriptHex)?;
            let Some(d) = self.scripts.get(&script).filter(|d| keep(&u, d)) else {
                continue;
            };
            let txid = Txid::from_str(&u.txid).map_err(CustodyError::Txid)?;
            out.push(Utxo {
                outpoint: OutPoint { txid, vout: u.vout },
                value: u.amount_sats,
                derived: d.clone(),
            });
        }
        Ok(out)
    }

    pub(crate) fn broadcast(&self, hex: &str) -> Result<String, CustodyError> {
        match self.hot.send_raw_transaction(hex) {
            Ok(txid) => Ok(txid),
            Err(RpcError::Node { message, .. }) if message.contains("already") => {
                let tx: bitcoin::Transaction =
                    bitcoin::consensus::encode::deserialize_hex(hex).map_err(|source| {
                        CustodyError::TxDecode {
                            txid: "of our own".into(),
                            source,
                        }
                    })?;
                Ok(tx.compute_txid().to_string())
            }
            Err(e) => Err(rpc_err("sendrawtransaction", e)),
        }
    }

    /// Requested withdrawals go to the signer, one transaction each; withdrawals left in
    /// `Signing` by a crash (or by an older version that broadcast before recording) are
    /// looked up on chain first. `Signed` ones are sent by [`Custody::follow_transactions`].
    fn send_withdrawals(&mut self, asset: AssetId) -> Result<(), CustodyError> {
        let work: Vec<Withdrawal> = self.link.view(|e| {
            e.wallet()
                .withdrawals()
                .iter()
                .filter(|w| w.asset == asset)
                .filter(|w| w.status == WithdrawalStatus::Signing || w.ready_for_signing(now_ns()))
                .cloned()
                .collect()
        });
        for w in work {
            if w.status == WithdrawalStatus::Signing {
                if let Some((txid, fee)) = self.find_on_chain(&w)? {
                    self.record_broadcast(&w, &txid, fee)?;
                    tracing::warn!(withdrawal = w.id.0, txid = %txid, "found a signing withdrawal already on chain");
                    continue;
                }
            }
            self.sign_and_send(&w)?;
        }
        Ok(())
    }

    /// A transaction of ours paying `w`'s destination exactly its amount with change to its own
    /// change address (or no change), not yet attributed to another withdrawal.
    fn find_on_chain(&self, w: &Withdrawal) -> Result<Option<(String, u64)>, CustodyError> {
        let since = self
            .hot
            .list_since_block(None, 1)
            .map_err(|e| rpc_err("listsinceblock", e))?;
        let amount = i64::try_from(w.amount.0).unwrap_or(i64::MAX);
        let taken: BTreeSet<String> = self.link.view(|e| {
            e.wallet()
                .withdrawals()
                .iter()
                .filter_map(|x| x.txid.clone())
                .collect()
        });
        let found = since.transactions.iter().find(|t| {
            t.category == "send"
                && t.address.as_deref() == Some(w.address.as_str())
                && t.amount_sats == -amount
                && t.confirmations >= 0
                && !taken.contains(&t.txid)
        });
        if let Some(t) = found {
            let d = self
                .hot
                .get_transaction(&t.txid)
                .map_err(|e| rpc_err("gettransaction", e))?;
            let fee = d.fee_sats.map_or(0, i64::unsigned_abs);
            return Ok(Some((t.txid.clone(), fee)));
        }
        Ok(None)
    }

    fn sign_and_send(&mut self, w: &Withdrawal) -> Result<(), CustodyError> {
        let amount = amount_u64(w.amount)?;
        let dest = match script_for(self.cfg.network, &w.address) {
            Ok(s) => s,
            Err(e) => {
                return self.fail(
                    w,
                    &format!("destination is not a {} address: {e}", self.cfg.network.name()),
                );
            }
        };
        let change_index = u32::try_from(w.id.0).map_err(|_| CustodyError::ChangeRange(w.id.0))?;
        let change = derive_hot(self.cfg.network, &self.cfg.hot_key, 1, change_index)
            .map_err(derive("change address"))?;
        let utxos = self.hot_utxos()?;
        // A transaction this withdrawal was already taken to the signer with (kinko died before
        // recording the answer) is asked for again as it was, while its inputs are unspent.
        let kept = self
            .pending
            .load(w.id.0)
            .filter(|p| inputs_available(p, &utxos) && pays(p, &dest, amount))
            .and_then(|p| {
                let fee = psbt_fee(&p)?;
                Some(psbt::Built {
                    psbt: p,
                    fee,
                    change: 0,
                })
            });
        let built = match kept.map(Ok).unwrap_or_else(|| {
            psbt::build(
                self.cfg.network,
                &utxos,
                &[(dest, amount)],
                Some(&change),
                self.fee_rate(),
            )
        }) {
            Ok(b) => b,
            Err(psbt::BuildError::InsufficientFunds { needed, available }) => {
                tracing::warn!(
                    withdrawal = w.id.0,
                    needed,
                    available,
                    "hot wallet cannot pay this withdrawal yet; a refill from cold is needed"
                );
                return Ok(());
            }
            Err(e) => return self.fail(w, &format!("cannot build the transaction: {e}")),
        };
        if w.status != WithdrawalStatus::Signing {
            match self.submit(Command::WithdrawalSigning { id: w.id })? {
                Ok(_) => {}
                // Cancelled meanwhile, or the asset is halted: nothing to sign.
                Err(r) => {
                    tracing::info!(
                        withdrawal = w.id.0,
                        code = r.code(),
                        "withdrawal not taken to the signer"
                    );
                    return Ok(());
                }
            }
        }
        self.pending.save(w.id.0, &built.psbt)?;
        let mut signer = self.signer()?;
        let answer = signer.call(&Request::SignWithdrawal {
            withdrawal: Box::new(crate::to_signer::withdrawal(w)),
            psbt: psbt::to_base64(&built.psbt),
            journal: Some(self.journal_head()),
        })?;
        match answer {
            Response::Signed { psbt: signed } => {
                let p = psbt::from_base64(&signed).map_err(psbt_err("signer's PSBT"))?;
                // The signer may only add signatures: the transaction must be the one we built.
                if p.unsigned_tx != built.psbt.unsigned_tx {
                    return Err(CustodyError::SignerTxChanged(format!("withdrawal {}", w.id.0)));
                }
                let tx = psbt::finalize(&p).map_err(psbt_err("finalize"))?;
                let txid = tx.compute_txid().to_string();
                let hex = serialize_hex(&tx);
                if std::mem::take(&mut self.crash_after_signing) {
                    return Err(CustodyError::Crashed("after signing, before recording"));
                }
                // Recorded first: what the engine refuses is never sent.
                self.submit_ok(
                    Command::RecordWithdrawalTx {
                        id: w.id,
                        txid: txid.clone(),
                        raw_tx: hex.clone(),
                        network_fee: Amount(built.fee.into()),
                    },
                    &format!("record withdrawal {} transaction", w.id.0),
                )?;
                self.pending.remove(w.id.0);
                if std::mem::take(&mut self.crash_before_broadcast) {
                    return Err(CustodyError::Crashed("after recording, before broadcasting"));
                }
                self.finish_broadcast(w, &txid, &hex, built.fee)
            }
            Response::Refused { code, reason, halted } => {
                self.health.signer_refused(&self.cfg.asset, &code);
                if halted {
                    tracing::error!(withdrawal = w.id.0, code = %code, "the signer refused and halted signing");
                }
                self.fail(w, &format!("signer refused ({code}): {reason}"))
            }
            other => Err(CustodyError::SignerAnswer {
                request: "sign_withdrawal",
                answer: refusal(&other),
            }),
        }
    }

    fn finish_broadcast(
        &mut self,
        w: &Withdrawal,
        txid: &str,
        hex: &str,
        fee: u64,
    ) -> Result<(), CustodyError> {
        let sent = self.broadcast(hex)?;
        if sent != txid {
            return Err(CustodyError::TxidMismatch {
                txid: txid.to_owned(),
                reported: sent,
            });
        }
        self.record_broadcast(w, txid, fee)?;
        tracing::info!(withdrawal = w.id.0, txid = %txid, fee, "withdrawal broadcast");
        Ok(())
    }

    /// Records that `w` went out as `txid`, paying the miner `fee`.
    fn record_broadcast(&self, w: &Withdrawal, txid: &str, fee: u64) -> Result<(), CustodyError> {
        self.submit(Command::WithdrawalBroadcast {
            id: w.id,
            txid: txid.to_owned(),
            network_fee: Amount(fee.into()),
        })?
        .map(|_| ())
        .map_err(|r| refused(format!("withdrawal {} broadcast", w.id.0), r))
    }

    fn fail(&self, w: &Withdrawal, reason: &str) -> Result<(), CustodyError> {
        tracing::warn!(withdrawal = w.id.0, reason = %reason, "withdrawal failed");
        self.submit(Command::FailWithdrawal {
            id: w.id,
            reason: reason.chars().take(1000).collect(),
        })?
        .map(|_| ())
        .map_err(|r| refused(format!("fail withdrawal {}", w.id.0), r))
    }

    // --- hot → cold ---------------------------------------------------------------------------

    /// Customer liabilities of the asset (what customers' accounts hold).
    pub fn liabilities(e: &Engine, asset: AssetId) -> u128 {
        e.ledger()
            .accounts()
            .iter()
            .filter(|a| a.asset == asset && matches!(a.owner, Owner::Customer(_)))
            .map(|a| u128::try_from(a.balance()).unwrap_or(0))
            .sum()
    }

    /// When the hot wallet holds more than its limit, sends the excess (down to half the limit,
    /// keeping what requested withdrawals need) to the next cold address.
    fn sweep(&mut self, asset: AssetId) -> Result<(), CustodyError> {
        let (liabilities, pending, (sweeps, refills)) = self.link.view(|e| {
            let w = e.wallet();
            let pending: u128 = w
                .withdrawals()
                .iter()
                .filter(|x| x.asset == asset && x.status.is_held())
                .map(|x| x.amount.0)
                .sum();
            (Self::liabilities(e, asset), pending, move_counts(w, asset))
        });
        let limit = self.cfg.hot_limit(liabilities);
        let utxos = self.hot_utxos()?;
        let hot: u64 = utxos.iter().map(|u| u.value).sum();
        if hot <= limit {
            self.health
                .up(&crate::health::sweep(&self.cfg.asset), Severity::Degraded);
            return Ok(());
        }
        let keep = (limit / 2)
            .max(u64::try_from(pending).unwrap_or(u64::MAX))
            .min(limit);
        let Some(amount) = hot.checked_sub(keep).filter(|a| *a > 10_000) else {
            return Ok(());
        };
        let to = derive_cold(self.cfg.network, &self.cfg.cold, sweeps + refills)
            .map_err(derive("cold address"))?;
        let change = derive_hot(self.cfg.network, &self.cfg.hot_key, 1, SWEEP_CHANGE_BASE + sweeps)
            .map_err(derive("change address"))?;
        let fee_rate = self.fee_rate();
        // The fee comes out of what moves, so the sweep never dips into what stays.
        let probe = psbt::build(
            self.cfg.network,
            &utxos,
            &[(to.script_pubkey.clone(), amount / 2)],
            Some(&change),
            fee_rate,
        )
        .map_err(build_err("sweep"))?;
        let Some(amount) = amount.checked_sub(probe.fee.saturating_mul(2)) else {
            return Ok(());
        };
        if !self.company_funds_cover(asset, probe.fee.saturating_mul(2), hot, limit) {
            return Ok(());
        }
        let mut built = psbt::build(
            self.cfg.network,
            &utxos,
            &[(to.script_pubkey.clone(), amount)],
            Some(&change),
            fee_rate,
        )
        .map_err(build_err("sweep"))?;
        // Name the cold output's keys, so the signer recognises it at any index.
        if let Some(out) = built.psbt.outputs.first_mut() {
            out.bip32_derivation = to.keys.iter().cloned().collect();
            out.witness_script = to.witness_script.clone();
        }
        let mut signer = self.signer()?;
        let answer = signer.call(&Request::SignSweep {
            psbt: psbt::to_base64(&built.psbt),
            journal: Some(self.journal_head()),
        })?;
        let Response::Signed { psbt: signed } = answer else {
            return Err(CustodyError::SignerAnswer {
                request: "sign_sweep",
                answer: refusal(&answer),
            });
        };
        let p = psbt::from_base64(&signed).map_err(psbt_err("signer's PSBT"))?;
        if p.unsigned_tx != built.psbt.unsigned_tx {
            return Err(CustodyError::SignerTxChanged("the sweep".into()));
        }
        let tx = psbt::finalize(&p).map_err(psbt_err("finalize"))?;
        let txid = self.broadcast_move(asset, CustodyMoveKind::Sweep, &tx, amount, built.fee)?;
        tracing::info!(asset = %self.cfg.asset, txid = %txid, amount, hot, limit, "swept hot to cold");
        Ok(())
    }

    /// Whether company funds in the ledger (fee revenue and the company treasury) can pay a
    /// sweep's miner fee of at most `fee`, so that customers' coins do not; always true when
    /// `sweep_waits_for_company_funds` is off. A wait is logged when it starts.
    fn company_funds_cover(&mut self, asset: AssetId, fee: u64, hot: u64, limit: u64) -> bool {
        if !self.cfg.sweep_waits_for_company_funds {
            return true;
        }
        let funds = self.link.view(|e| company_funds(e, asset));
        let covered = funds >= u128::from(fee);
        if !covered && !self.sweep_waiting {
            tracing::warn!(asset = %self.cfg.asset, hot, limit, fee, company_funds = %funds,
                company_address = self.company_address.as_deref().unwrap_or(""),
                "the hot wallet is above its limit but the sweep waits: company funds cannot pay its miner fee \
                 (withdrawal fees will, or send coins to the company address)");
        }
        self.sweep_waiting = !covered;
        let name = crate::health::sweep(&self.cfg.asset);
        if covered {
            self.health.up(&name, Severity::Degraded);
        } else {
            self.health.down(
                &name,
                Severity::Degraded,
                format!(
                    "the hot wallet holds {hot}, above its limit {limit}, and the sweep to cold waits: \
                     company funds ({funds}) cannot pay its miner fee ({fee}) (minor units); send coins \
                     to the company address"
                ),
            );
        }
        covered
    }

    /// Records a custody move with its signed transaction (`amount` reaches the other wallet,
    /// the miner takes `network_fee`), then broadcasts it; returns its txid. A move the engine
    /// refuses to record is never broadcast, so reconciliation never meets a transaction of
    /// ours that the ledger does not know.
    fn broadcast_move(
        &self,
        asset: AssetId,
        kind: CustodyMoveKind,
        tx: &bitcoin::Transaction,
        amount: u64,
        network_fee: u64,
    ) -> Result<String, CustodyError> {
        let txid = tx.compute_txid().to_string();
        let hex = serialize_hex(tx);
        self.submit_ok(
            Command::RecordCustodyTx {
                asset,
                kind,
                txid: txid.clone(),
                raw_tx: hex.clone(),
                amount: Amount(amount.into()),
                network_fee: Amount(network_fee.into()),
            },
            &format!("record {}", kind.name()),
        )?;
        let sent = self.broadcast(&hex)?;
        if sent != txid {
            return Err(CustodyError::TxidMismatch { txid, reported: sent });
        }
        Ok(txid)
    }

    // --- cold → hot (offline) -------------------------------------------------------------------

    /// An unsigned PSBT moving `amount` from cold to the hot wallet, for the keyholders to sign
    /// offline (`kinko-signer offline-sign`), then [`Custody::submit_refill`].
    pub fn refill_psbt(&mut self, amount: u64) -> Result<String, CustodyError> {
        let asset = self.asset()?;
        self.ensure_imports(asset)?;
        let (sweeps, refills) = self.link.view(|e| move_counts(e.wallet(), asset));
        if refills >= REFILLS_MAX {
            return Err(CustodyError::RefillsExhausted);
        }
        let utxos = self.our_utxos(
            &self.cold,
            self.cfg.finality_depth.max(1),
            "listunspent (cold)",
            |_, d| d.witness_script.is_some(),
        )?;
        let to = derive_hot(self.cfg.network, &self.cfg.hot_key, 1, REFILL_BASE + refills)
            .map_err(derive("hot address"))?;
        let change = derive_cold(self.cfg.network, &self.cfg.cold, sweeps + refills + 1)
            .map_err(derive("cold change"))?;
        let built = psbt::build(
            self.cfg.network,
            &utxos,
            &[(to.script_pubkey, amount)],
            Some(&change),
            self.fee_rate(),
        )
        .map_err(build_err("refill"))?;
        Ok(psbt::to_base64(&built.psbt))
    }

    /// Finalizes and broadcasts a refill PSBT signed by enough keyholders, after checking it
    /// spends only cold coins and pays only our hot and cold addresses; records the move.
    /// Returns (txid, amount to hot, miner fee).
    pub fn submit_refill(&mut self, psbt_b64: &str) -> Result<(String, u64, u64), CustodyError> {
        let asset = self.asset()?;
        self.ensure_imports(asset)?;
        let p = psbt::from_base64(psbt_b64).map_err(psbt_err("PSBT"))?;
        let summary = psbt::summarise(self.cfg.network, &p).map_err(psbt_err("PSBT"))?;
        for (i, input) in p.inputs.iter().enumerate() {
            let ours = input
                .witness_utxo
                .as_ref()
                .and_then(|o| self.scripts.get(&o.script_pubkey))
                .is_some_and(|d| d.witness_script.is_some());
            if !ours {
                return Err(CustodyError::RefillInputForeign(i));
            }
        }
        let mut to_hot = 0u64;
        for o in &summary.outputs {
            match self.scripts.get(&o.script_pubkey) {
                Some(d) if d.witness_script.is_none() => {
                    to_hot = to_hot
                        .checked_add(o.value)
                        .ok_or(CustodyError::Overflow("output sum"))?;
                }
                Some(_) => {}
                None => {
                    return Err(CustodyError::RefillOutputForeign(
                        o.address.as_deref().unwrap_or("a non-standard script").to_owned(),
                    ))
                }
            }
        }
        if to_hot == 0 {
            return Err(CustodyError::RefillPaysNothing);
        }
        let tx = psbt::finalize(&p).map_err(psbt_err("not enough signatures yet"))?;
        let txid = self.broadcast_move(asset, CustodyMoveKind::Refill, &tx, to_hot, summary.fee)?;
        tracing::info!(asset = %self.cfg.asset, txid = %txid, amount = to_hot, "refilled hot from cold");
        Ok((txid, to_hot, summary.fee))
    }

    /// The node's view of the hot wallet (every UTXO of ours, any depth) and of cold.
    pub fn balances(&self) -> Result<(u64, u64), CustodyError> {
        Ok((
            coins_total(&self.node_coins(false)?)?,
            coins_total(&self.node_coins(true)?)?,
        ))
    }

    /// Our unspent outputs on the node at any depth, mempool included: the hot wallet's hot
    /// coins, or the cold wallet's multisig coins; value by outpoint.
    pub(crate) fn node_coins(&self, cold: bool) -> Result<HashMap<OutPoint, u64>, CustodyError> {
        let rpc = if cold { &self.cold } else { &self.hot };
        let list = rpc.list_unspent(0, None).map_err(|e| rpc_err("listunspent", e))?;
        let mut coins = HashMap::with_capacity(list.len());
        for u in list {
            let script = ScriptBuf::from_hex(&u.script_pub_key).map_err(CustodyError::ScriptHex)?;
            if self
                .scripts
                .get(&script)
                .is_some_and(|d| d.witness_script.is_some() == cold)
            {
                let outpoint = u
                    .outpoint()
                    .ok_or_else(|| CustodyError::Outpoint(u.txid.clone()))?;
                coins.insert(outpoint, u.amount_sats);
            }
        }
        Ok(coins)
    }
}

/// Runs the shared service's poll every `config.poll` until stopped; operator calls (refills)
/// take the same lock between polls.
pub fn spawn_shared(shared: Arc<Mutex<Custody>>) -> CustodyThread {
    let (name, every) = {
        let c = shared.lock().unwrap_or_else(|p| p.into_inner());
        (format!("kinko-custody-{}", c.cfg.asset), c.cfg.poll)
    };
    spawn_loop(name, every, move || {
        let mut c = shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = c.poll() {
            tracing::warn!(asset = %c.cfg.asset, error = %e, "custody poll failed; retrying");
        }
    })
}

/// Runs `poll` on a thread named `name` every `every` until the returned handle stops it.
pub(crate) fn spawn_loop(
    name: String,
    every: Duration,
    mut poll: impl FnMut() + Send + 'static,
) -> CustodyThread {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let join = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            while !flag.load(Ordering::Acquire) {
                let started = Instant::now();
                poll();
                let until = started + every;
                while !flag.load(Ordering::Acquire) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })
        .expect("cannot start the custody thread");
    CustodyThread {
        stop,
        join: Some(join),
    }
}

/// The custody services of a process, by asset: what the gateway's operator endpoints call.
#[derive(Default, Clone)]
pub struct Registry {
    by_asset: BTreeMap<String, Arc<Mutex<Custody>>>,
    /// Ethereum chains, each holding ETH and its tokens.
    eth: Vec<Arc<Mutex<crate::eth_service::EthCustody>>>,
}

impl Registry {
    pub fn add_eth(
        &mut self,
        c: crate::eth_service::EthCustody,
    ) -> Arc<Mutex<crate::eth_service::EthCustody>> {
        let shared = Arc::new(Mutex::new(c));
        self.eth.push(shared.clone());
        shared
    }

    fn eth_of(&self, asset: &str) -> Option<&Arc<Mutex<crate::eth_service::EthCustody>>> {
        self.eth
            .iter()
            .find(|c| c.lock().unwrap_or_else(|p| p.into_inner()).holds(asset))
    }

    pub fn add(&mut self, c: Custody) -> Arc<Mutex<Custody>> {
        let asset = c.cfg.asset.clone();
        let shared = Arc::new(Mutex::new(c));
        self.by_asset.insert(asset, shared.clone());
        shared
    }
    /// Runs `f` on the service of `asset`.
    fn with<T>(
        &self,
        asset: &str,
        f: impl FnOnce(&mut Custody) -> Result<T, CustodyError>,
    ) -> Result<T, CustodyOpsError> {
        let c = self
            .by_asset
            .get(asset)
            .ok_or_else(|| CustodyOpsError::NoService(asset.to_owned()))?;
        let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c).map_err(|e| CustodyOpsError::Failed(Box::new(e)))
    }
}

impl kinko_engine::ports::CustodyOps for Registry {
    fn balances(&self, asset: &str) -> Result<(u128, u128), CustodyOpsError> {
        if let Some(c) = self.eth_of(asset) {
            let c = c.lock().unwrap_or_else(|p| p.into_inner());
            return c
                .balances(asset)
                .map_err(|e| CustodyOpsError::Failed(Box::new(e)));
        }
        self.with(asset, |c| {
            let a = c.asset()?;
            c.ensure_imports(a)?;
            let (hot, cold) = c.balances()?;
            Ok((u128::from(hot), u128::from(cold)))
        })
    }
    fn refill(&self, asset: &str, amount: u128) -> Result<String, CustodyOpsError> {
        if let Some(c) = self.eth_of(asset) {
            let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
            return c
                .refill_request(asset, amount)
                .map_err(|e| CustodyOpsError::Failed(Box::new(e)));
        }
        let amount = u64::try_from(amount)
            .map_err(|_| CustodyOpsError::Failed(Box::new(CustodyError::Overflow("refill amount"))))?;
        self.with(asset, |c| c.refill_psbt(amount))
    }
    fn submit(&self, asset: &str, psbt: &str) -> Result<(String, u128, u128), CustodyOpsError> {
        if let Some(c) = self.eth_of(asset) {
            let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
            return c
                .submit_refill(asset, psbt)
                .map_err(|e| CustodyOpsError::Failed(Box::new(e)));
        }
        self.with(asset, |c| c.submit_refill(psbt))
            .map(|(txid, amount, fee)| (txid, u128::from(amount), u128::from(fee)))
    }
    fn company_address(&self, asset: &str) -> Result<String, CustodyOpsError> {
        self.with(asset, |c| c.company_address())
    }
    fn hot_policy(&self, asset: &str) -> Option<(u32, u64)> {
        if let Some(c) = self.eth_of(asset) {
            return c.lock().unwrap_or_else(|p| p.into_inner()).hot_policy(asset);
        }
        let c = self.by_asset.get(asset)?;
        let c = c.lock().unwrap_or_else(|p| p.into_inner());
        Some((c.cfg.hot_share_bps, c.cfg.hot_cap))
    }
    fn hot_breakdown(&self, asset: &str) -> Option<Result<(String, u128, u128), CustodyOpsError>> {
        let c = self.eth_of(asset)?;
        let c = c.lock().unwrap_or_else(|p| p.into_inner());
        Some(
            c.hot_breakdown(asset)
                .map(|(hot, deposits)| (c.hot().checksummed(), hot, deposits))
                .map_err(|e| CustodyOpsError::Failed(Box::new(e))),
        )
    }
}

/// What company funds in the ledger can spend on miner fees: fee revenue and the company
/// treasury, available (not held).
pub fn company_funds(e: &Engine, asset: AssetId) -> u128 {
    let Some(a) = e.asset(asset) else {
        return 0;
    };
    [SystemAccount::FeeRevenue, SystemAccount::CompanyTreasury]
        .into_iter()
        .filter_map(|w| e.ledger().account(a.system_account(w)))
        .map(|x| x.available())
        .fold(0u128, u128::saturating_add)
}

/// Whether every input of `p` is among `utxos` (unspent, ours, not taken by another withdrawal).
fn inputs_available(p: &bitcoin::Psbt, utxos: &[Utxo]) -> bool {
    p.unsigned_tx
        .input
        .iter()
        .all(|i| utxos.iter().any(|u| u.outpoint == i.previous_output))
}

/// Whether `p` pays `dest` exactly `amount`.
fn pays(p: &bitcoin::Psbt, dest: &bitcoin::ScriptBuf, amount: u64) -> bool {
    p.unsigned_tx
        .output
        .iter()
        .any(|o| &o.script_pubkey == dest && o.value.to_sat() == amount)
}

/// The miner fee of `p`: what its inputs hold less what its outputs pay.
fn psbt_fee(p: &bitcoin::Psbt) -> Option<u64> {
    let inputs = p
        .inputs
        .iter()
        .map(|i| i.witness_utxo.as_ref().map(|o| o.value.to_sat()))
        .sum::<Option<u64>>()?;
    let outputs: u64 = p.unsigned_tx.output.iter().map(|o| o.value.to_sat()).sum();
    inputs.checked_sub(outputs)
}

/// The engine journal's head (and the cluster epoch), which the signer witnesses with every
/// signature.
pub(crate) fn journal_head(link: &EngineLink) -> JournalHead {
    let stats = link.handle().stats();
    let (seq, hash) = stats.journal_head();
    let epoch = stats.epoch.load(std::sync::atomic::Ordering::Acquire);
    JournalHead {
        seq,
        hash,
        epoch: (epoch > 0).then_some(epoch),
    }
}

/// The engine refused a command (`what`) custody needed.
pub(crate) fn refused(what: String, r: Reject) -> CustodyError {
    CustodyError::Refused { what, code: r.code() }
}

fn derive(what: &'static str) -> impl FnOnce(kinko_chain::KeyError) -> CustodyError {
    move |source| CustodyError::Derive {
        what: what.into(),
        source,
    }
}

fn build_err(what: &'static str) -> impl FnOnce(psbt::BuildError) -> CustodyError {
    move |source| CustodyError::Build { what, source }
}

fn psbt_err(what: &'static str) -> impl FnOnce(kinko_chain::PsbtError) -> CustodyError {
    move |source| CustodyError::Psbt { what, source }
}

/// A response reduced to what may be logged.
pub(crate) fn refusal(r: &Response) -> String {
    match r {
        Response::Refused { code, reason, halted } => format!("refused {code}: {reason} (halted: {halted})"),
        Response::Error { code, message } => format!("error {code}: {message}"),
        Response::Ok => "ok".into(),
        Response::Signed { .. } => "signed".into(),
        _ => "unexpected response".into(),
    }
}

pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
