//! Ethereum deposits (docs/design/ethereum.md, "Deposits and reorgs"): per-user deposit
//! addresses derived from the hot account's xpub (public keys only), ETH payments read from
//! blocks and token payments from `Transfer` logs, each one a `DepositSeen` keyed by
//! `(tx hash, log index)` (ETH: [`NATIVE_VOUT`]), credited at the configured confirmations,
//! dropped (pending) or reversed (credited) when a reorg takes it off the chain. Every loop is
//! bounded by the blocks of one poll ([`BLOCKS_PER_POLL_MAX`]) and the watched deposits.

use bitcoin::bip32::Xpub;
use kinko_chain::eth::rpc::{EthRpc, EthRpcError};
use kinko_chain::eth::{derive_address, Branch, DeriveError, EthAddress, TRANSFER_TOPIC};
use kinko_core::engine::{Command, Reply};
use kinko_core::wallet::{DepositId, DepositStatus};
use kinko_core::{Amount, AssetId, UserId};
use kinko_engine::link::{EngineLink, LinkError};
use std::collections::{BTreeMap, HashMap};

/// The `vout` of an ETH payment (a transaction's value; token logs use their log index).
pub const NATIVE_VOUT: u32 = u32::MAX;
/// Most blocks scanned in one poll.
pub const BLOCKS_PER_POLL_MAX: u64 = 500;

/// What is deposited: ether, or the token of this contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EthAsset {
    Ether,
    Token(EthAddress),
}

/// Why a poll failed (the next poll starts again from the same cursor).
#[derive(Debug, thiserror::Error)]
pub enum EthWatchError {
    #[error("node: {0}")]
    Rpc(#[from] EthRpcError),
    #[error(transparent)]
    Engine(#[from] LinkError),
    #[error("{what}: {code}")]
    Refused { what: &'static str, code: &'static str },
    #[error("{what}: unexpected reply {reply}")]
    Unexpected { what: &'static str, reply: String },
    #[error("deposit address: {0}")]
    Derive(#[from] DeriveError),
    #[error("a log of {0} bytes is not a Transfer")]
    BadLog(usize),
    #[error(transparent)]
    Signer(EthSignError),
    #[error("asset {0} is not defined in the engine")]
    UnknownAsset(String),
    #[error("this node is {0}: only the node that writes keeps custody")]
    NotLeader(&'static str),
    #[error("the pending transaction: {0}")]
    Pending(String),
    #[error("the node's chain id is {node}, the configured one {configured}")]
    ChainId { node: u64, configured: u64 },
    /// Hot ↔ cold refused it (a refill request, a sweep): a stable code and why.
    #[error(transparent)]
    Cold(crate::eth_cold::ColdRefused),
}

impl EthWatchError {
    /// The stable code of a refusal (a refill's, the engine's), if it is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            EthWatchError::Cold(c) => Some(c.code),
            EthWatchError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A payment to a deposit address found in a block.
struct Found {
    address: String,
    tx: [u8; 32],
    vout: u32,
    amount: u128,
    block: u64,
    block_hash: [u8; 32],
}

/// A deposit being watched until it is deep enough to forget.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Watched {
    deposit: DepositId,
    tx: [u8; 32],
    block: u64,
    block_hash: [u8; 32],
    credited: bool,
}

/// A deposit watcher's cursor as kept in `<data_dir>/custody/<ASSET>.eth-deposits.json`: the
/// last scanned block, the hashes of the blocks down to the watch depth below it (to find a
/// reorg that happened while kinko was down) and the deposits watched, all of it already in
/// the engine (written after the poll's commands are durable).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct DepositCursor {
    cursor: Option<u64>,
    scanned: Vec<(u64, [u8; 32])>,
    watched: Vec<((String, u32), Watched)>,
}

/// Reads a cursor file (`None`: none, or unreadable: logged, and scanning starts from the
/// configured block as without one).
fn load_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "an Ethereum scan cursor does not read; scanning from the configured start");
            None
        }
    }
}

fn save_json<T: serde::Serialize>(path: &std::path::Path, v: &T) -> Result<(), EthWatchError> {
    let bytes = serde_json::to_vec(v).map_err(|e| EthWatchError::Pending(e.to_string()))?;
    crate::cursor::write_atomic(path, &bytes).map_err(|e| EthWatchError::Pending(e.to_string()))
}

/// What one poll did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollStats {
    /// The first block this poll read (`None`: none).
    pub scanned_from: Option<u64>,
    pub scanned_to: u64,
    pub seen: usize,
    pub credited: usize,
    pub dropped: usize,
    pub reversed: usize,
}

/// The deposit watcher of one Ethereum asset.
pub struct EthDeposits {
    rpc: EthRpc,
    link: EngineLink,
    asset: AssetId,
    kind: EthAsset,
    account: Xpub,
    confirmations: u64,
    /// Credited deposits are watched this many blocks deep, then forgotten.
    watch_depth: u64,
    /// The last scanned block and the hashes of recent scanned blocks (to find a reorg).
    cursor: Option<u64>,
    scanned: BTreeMap<u64, [u8; 32]>,
    watched: BTreeMap<(String, u32), Watched>,
    /// kinko's own transactions in flight (sweeps, top-ups): what they pay is no deposit.
    internal: std::collections::BTreeSet<[u8; 32]>,
    /// Where the cursor is kept across restarts (`None`: memory only).
    state: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for EthDeposits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthDeposits")
            .field("asset", &self.asset)
            .field("kind", &self.kind)
            .field("cursor", &self.cursor)
            .field("watched", &self.watched.len())
            .finish_non_exhaustive()
    }
}

fn tx_id(hash: &[u8; 32]) -> String {
    format!("0x{}", hex::encode(hash))
}

impl EthDeposits {
    /// A watcher that starts scanning at block `from`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rpc: EthRpc,
        link: EngineLink,
        asset: AssetId,
        kind: EthAsset,
        account: Xpub,
        confirmations: u64,
        watch_depth: u64,
        from: u64,
    ) -> EthDeposits {
        EthDeposits {
            rpc,
            link,
            asset,
            kind,
            account,
            confirmations: confirmations.max(1),
            watch_depth: watch_depth.max(confirmations.max(1)),
            cursor: from.checked_sub(1),
            scanned: BTreeMap::new(),
            watched: BTreeMap::new(),
            internal: Default::default(),
            state: None,
        }
    }

    /// Keeps the cursor in `<dir>/<code>.eth-deposits.json` and resumes from the one found
    /// there: blocks before it are not read again (the hashes kept below it find a reorg that
    /// happened meanwhile, and the deposits it watched are watched again).
    pub fn with_state_dir(mut self, dir: &std::path::Path, code: &str) -> EthDeposits {
        let path = dir.join(format!("{code}.eth-deposits.json"));
        if let Some(c) = load_json::<DepositCursor>(&path) {
            self.cursor = c.cursor;
            self.scanned = c.scanned.into_iter().collect();
            self.watched = c.watched.into_iter().collect();
        }
        self.state = Some(path);
        self
    }

    /// The last block scanned.
    pub fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    /// kinko's own transactions in flight (a gas top-up pays a deposit address): not deposits.
    pub fn set_internal(&mut self, hashes: impl IntoIterator<Item = [u8; 32]>) {
        self.internal = hashes.into_iter().collect();
    }

    fn save(&self) -> Result<(), EthWatchError> {
        let Some(path) = &self.state else { return Ok(()) };
        save_json(
            path,
            &DepositCursor {
                cursor: self.cursor,
                scanned: self.scanned.iter().map(|(k, v)| (*k, *v)).collect(),
                watched: self.watched.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            },
        )
    }

    /// Gives `user` their deposit address: `…/1/<user id>` on the hot account, derived here
    /// from the xpub and assigned through the engine. One account per user holds ETH and the
    /// tokens alike (a token sweep needs ETH for gas there anyway); the ledgers stay apart.
    pub fn assign_address(&self, user: UserId) -> Result<EthAddress, EthWatchError> {
        let index = u32::try_from(user.0).map_err(|_| DeriveError::Index(u32::MAX))?;
        let address = derive_address(&self.account, Branch::Deposit, index)?;
        self.submit(
            "assign_deposit_address",
            Command::AssignDepositAddress {
                user,
                asset: self.asset,
                address: address.checksummed(),
            },
        )?;
        Ok(address)
    }

    /// Every deposit address of the asset, as the engine holds them.
    fn addresses(&self) -> HashMap<EthAddress, String> {
        self.link.view(|e| {
            e.wallet()
                .deposit_addresses_of_asset(self.asset)
                .filter_map(|a| EthAddress::parse(&a.address).ok().map(|p| (p, a.address.clone())))
                .collect()
        })
    }

    fn submit(&self, what: &'static str, cmd: Command) -> Result<Reply, EthWatchError> {
        submit(&self.link, what, cmd)
    }

    /// Reports the payments found (`DepositSeen`, all submitted before the first answer is
    /// awaited: one group commit for many) and watches them. How many were new.
    fn seen_all(&mut self, found: Vec<Found>) -> Result<usize, EthWatchError> {
        // A gas top-up from hot moves the hot wallet's own ETH to a deposit address: never a
        // customer's deposit. It is one of kinko's transactions in flight, or one whose gas
        // was booked for another asset (the token its sweep moved). A withdrawal that pays a
        // deposit address of ours is a deposit of its owner as any payment is.
        let found: Vec<Found> = self.link.view(|e| {
            found
                .into_iter()
                .filter(|f| !self.internal.contains(&f.tx))
                .filter(|f| {
                    f.vout != NATIVE_VOUT
                        || kinko_core::wallet::Wallet::gas_booked(e.ledger(), &tx_id(&f.tx))
                            .is_none_or(|(_, moved, _)| moved == self.asset)
                })
                .collect()
        });
        let mut fresh = Vec::new();
        for f in found {
            let txid = tx_id(&f.tx);
            if self.watched.contains_key(&(txid.clone(), f.vout)) {
                continue;
            }
            // Already known to the engine and settled (seen before a restart, or dropped and
            // mined again): nothing to watch.
            let settled = self.link.view(|e| {
                let w = e.wallet();
                w.deposit_by_output(self.asset, &txid, f.vout)
                    .and_then(|id| w.deposit(id))
                    .is_some_and(|d| d.status != DepositStatus::Pending)
            });
            if !settled {
                fresh.push((txid, f));
            }
        }
        let cmds = fresh
            .iter()
            .map(|(txid, f)| Command::DepositSeen {
                asset: self.asset,
                address: f.address.clone(),
                txid: txid.clone(),
                vout: f.vout,
                amount: Amount(f.amount),
            })
            .collect();
        let replies = self.link.submit_all(cmds)?;
        let mut first: Option<EthWatchError> = None;
        let mut n = 0;
        for ((txid, f), reply) in fresh.into_iter().zip(replies) {
            let deposit = match reply {
                Ok(Reply::Deposit(d)) => d,
                Ok(other) => {
                    first.get_or_insert(EthWatchError::Unexpected {
                        what: "deposit_seen",
                        reply: format!("{other:?}"),
                    });
                    continue;
                }
                Err(reject) => {
                    first.get_or_insert(EthWatchError::Refused {
                        what: "deposit_seen",
                        code: reject.code(),
                    });
                    continue;
                }
            };
            self.watched.insert(
                (txid, f.vout),
                Watched {
                    deposit,
                    tx: f.tx,
                    block: f.block,
                    block_hash: f.block_hash,
                    credited: false,
                },
            );
            n += 1;
        }
        match first {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// Where scanning resumes: the highest scanned block still on the chain.
    fn rewind(&mut self) -> Result<(), EthWatchError> {
        while let Some((&h, &hash)) = self.scanned.last_key_value() {
            match self.rpc.block_hash_at(h)? {
                Some(b) if b == hash => break,
                _ => {
                    self.scanned.remove(&h);
                    self.cursor = h.checked_sub(1);
                }
            }
        }
        Ok(())
    }

    /// One poll: reorgs, new blocks, confirmations.
    pub fn poll(&mut self) -> Result<PollStats, EthWatchError> {
        let mut stats = PollStats::default();
        let head = self.rpc.block_number()?;
        self.rewind()?;
        let addresses = self.addresses();
        let from = self.cursor.map_or(0, |c| c + 1);
        let to = head.min(from.saturating_add(BLOCKS_PER_POLL_MAX - 1));
        if from <= to {
            stats.scanned_from = Some(from);
            let mut hashes = BTreeMap::new();
            let mut found: Vec<Found> = Vec::new();
            for n in from..=to {
                let Some(block) = self.rpc.block_at(n)? else { break };
                hashes.insert(n, block.hash);
                if self.kind == EthAsset::Ether {
                    for t in &block.transactions {
                        let Some(text) = t.to.and_then(|to| addresses.get(&to)) else {
                            continue;
                        };
                        if t.value == 0 {
                            continue;
                        }

                        // A deposit address is a key's account (no code): a payment to it
                        // that is in a block succeeded.
                        found.push(Found {
                            address: text.clone(),
                            tx: t.hash,
                            vout: NATIVE_VOUT,
                            amount: t.value,
                            block: n,
                            block_hash: block.hash,
                        });
                    }
                }
            }
            if let EthAsset::Token(token) = self.kind {
                let recipients: Vec<EthAddress> = addresses.keys().copied().collect();
                if !recipients.is_empty() {
                    for log in self.rpc.logs(&token, &TRANSFER_TOPIC, &recipients, from, to)? {
                        if log.removed || log.topics.len() != 3 {
                            continue;
                        }
                        let mut to_addr = [0u8; 20];
                        to_addr.copy_from_slice(&log.topics[2][12..]);
                        let Some(text) = addresses.get(&EthAddress(to_addr)) else {
                            continue;
                        };

                        if log.data.len() != 32 {
                            return Err(EthWatchError::BadLog(log.data.len()));
                        }
                        if log.data[..16].iter().any(|b| *b != 0) {
                            // More than u128 units: never a real deposit of ours; not credited.
                            continue;
                        }
                        let mut w = [0u8; 16];
                        w.copy_from_slice(&log.data[16..]);
                        let amount = u128::from_be_bytes(w);
                        let Ok(vout) = u32::try_from(log.log_index) else {
                            continue;
                        };
                        if amount > 0 {
                            found.push(Found {
                                address: text.clone(),
                                tx: log.tx_hash,
                                vout,
                                amount,
                                block: log.block_number,
                                block_hash: log.block_hash,
                            });
                        }
                    }
                }
            }
            stats.seen += self.seen_all(found)?;
            for (n, h) in hashes {
                self.scanned.insert(n, h);
                self.cursor = Some(n);
            }
            // Keep only recent hashes.
            let keep_from = self.cursor.unwrap_or(0).saturating_sub(self.watch_depth);
            self.scanned = self.scanned.split_off(&keep_from);
        }
        stats.scanned_to = self.cursor.unwrap_or(0);
        self.settle(head, &mut stats)?;
        // Everything up to the cursor is in the engine now (each command answered once
        // durable): the cursor may say so.
        self.save()?;
        Ok(stats)
    }

    /// Watched deposits: gone from the chain → dropped / reversed; deep enough → credited;
    /// credited and past the watch depth → forgotten.
    fn settle(&mut self, head: u64, stats: &mut PollStats) -> Result<(), EthWatchError> {
        let keys: Vec<(String, u32)> = self.watched.keys().cloned().collect();
        let mut hashes: HashMap<u64, Option<[u8; 32]>> = HashMap::new();
        let mut confirm: Vec<(String, u32)> = Vec::new();
        for key in keys {
            let Some(w) = self.watched.get(&key).cloned() else {
                continue;
            };
            let canonical = match hashes.get(&w.block) {
                Some(h) => *h,
                None => {
                    let h = self.rpc.block_hash_at(w.block)?;
                    hashes.insert(w.block, h);
                    h
                }
            };
            let mut w = w;
            if canonical != Some(w.block_hash) {
                match self.rpc.receipt(&w.tx)? {
                    Some(r) if r.status == 1 => {
                        w.block = r.block_number;
                        w.block_hash = r.block_hash;
                    }
                    _ => {
                        if w.credited {
                            self.submit(
                                "deposit_reversed",
                                Command::DepositReversed { deposit: w.deposit },
                            )?;
                            stats.reversed += 1;
                        } else {
                            self.submit("deposit_dropped", Command::DepositDropped { deposit: w.deposit })?;
                            stats.dropped += 1;
                        }
                        self.watched.remove(&key);
                        continue;
                    }
                }
            }
            let depth = head.saturating_add(1).saturating_sub(w.block);
            if !w.credited && depth >= self.confirmations {
                confirm.push(key.clone());
            }
            if w.credited && depth > self.watch_depth {
                self.watched.remove(&key);
            } else {
                self.watched.insert(key, w);
            }
        }
        // Deep enough: credited, all submitted before the first answer is awaited.
        let cmds = confirm
            .iter()
            .filter_map(|k| self.watched.get(k))
            .map(|w| Command::DepositConfirmed { deposit: w.deposit })
            .collect();
        let replies = self.link.submit_all(cmds)?;
        let mut first: Option<EthWatchError> = None;
        for (key, reply) in confirm.iter().zip(replies) {
            match reply {
                Ok(_) => {
                    if let Some(w) = self.watched.get_mut(key) {
                        w.credited = true;
                    }
                    stats.credited += 1;
                }
                Err(reject) => {
                    first.get_or_insert(EthWatchError::Refused {
                        what: "deposit_confirmed",
                        code: reject.code(),
                    });
                }
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Deposits watched now (pending, or credited and not yet deep enough to forget).
    pub fn watched(&self) -> usize {
        self.watched.len()
    }
}

/// What one reconciliation poll found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileStats {
    /// The first block this poll read (`None`: none).
    pub scanned_from: Option<u64>,
    pub scanned_to: u64,
    /// Transactions from the hot key that kinko did not sign.
    pub unapproved: Vec<[u8; 32]>,
    /// What they took of this asset (value and gas for ETH; transferred units for a token).
    pub missing: u128,
    /// The incident opened, if any.
    pub incident: Option<u64>,
}

/// Reconciliation of the hot key of one Ethereum asset (docs/design/ethereum.md,
/// "Reconciliation and theft"): every transaction sent from the hot address must be one kinko
/// recorded ([`EthReconcile::record_ours`]); any other — a nonce kinko never used — halts the
/// asset's withdrawals and opens an `unapproved_outflow` incident with what it took, within the
/// poll that sees it.
pub struct EthReconcile {
    rpc: EthRpc,
    link: EngineLink,
    asset: AssetId,
    kind: EthAsset,
    hot: EthAddress,
    ours: std::collections::BTreeSet<[u8; 32]>,
    flagged: std::collections::BTreeSet<[u8; 32]>,
    cursor: Option<u64>,
    /// Our keys besides hot: the deposit addresses (only kinko's sweeps may leave them).
    keys: std::collections::BTreeSet<EthAddress>,
    /// Where the cursor is kept across restarts (`None`: memory only).
    state: Option<std::path::PathBuf>,
}

/// How far below its kept cursor reconciliation reads again after a restart: a reorg while
/// kinko was down may have moved a transaction (what was reported is not reported again).
pub const RECONCILE_REREAD_BLOCKS: u64 = 64;

impl std::fmt::Debug for EthReconcile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthReconcile")
            .field("asset", &self.asset)
            .field("hot", &self.hot)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl EthReconcile {
    /// Reconciles `hot` from block `from` on.
    pub fn new(
        rpc: EthRpc,
        link: EngineLink,
        asset: AssetId,
        kind: EthAsset,
        hot: EthAddress,
        from: u64,
    ) -> EthReconcile {
        EthReconcile {
            rpc,
            link,
            asset,
            kind,
            hot,
            ours: Default::default(),
            flagged: Default::default(),
            cursor: from.checked_sub(1),
            keys: Default::default(),
            state: None,
        }
    }

    /// Keeps the cursor in `<dir>/<code>.eth-reconcile.json` and resumes a little below the one
    /// found there ([`RECONCILE_REREAD_BLOCKS`]).
    pub fn with_state_dir(mut self, dir: &std::path::Path, code: &str) -> EthReconcile {
        let path = dir.join(format!("{code}.eth-reconcile.json"));
        if let Some(c) = load_json::<Option<u64>>(&path) {
            self.cursor = c.map(|c| c.saturating_sub(RECONCILE_REREAD_BLOCKS));
        }
        self.state = Some(path);
        self
    }

    /// The last block reconciled.
    pub fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    /// Whether an incident of the asset already names `hash` (open or resolved: a resolved one
    /// was investigated, and a block read again after a restart names it again).
    fn reported(&self, hash: &[u8; 32]) -> bool {
        let id = tx_id(hash);
        self.link.view(|e| {
            e.admin()
                .incidents
                .iter()
                .any(|i| i.asset == Some(self.asset) && i.txids.contains(&id))
        })
    }

    /// Watches the deposit addresses' keys too: a transaction from one that kinko did not
    /// sign (a sweep) is an unapproved outflow as one from hot is.
    pub fn watch_keys(&mut self, keys: impl IntoIterator<Item = EthAddress>) {
        self.keys.extend(keys);
    }

    fn is_key(&self, a: &EthAddress) -> bool {
        *a == self.hot || self.keys.contains(a)
    }

    /// A transaction kinko recorded before broadcasting it (a withdrawal, a sweep, a top-up).
    pub fn record_ours(&mut self, tx_hash: [u8; 32]) {
        self.ours.insert(tx_hash);
    }

    /// Whether kinko recorded `hash`: a withdrawal's or in-flight sweep's transaction
    /// ([`EthReconcile::record_ours`]), or one whose gas the engine booked (`RecordGas`: a
    /// sweep or top-up kinko built, final since).
    fn is_ours(&self, hash: &[u8; 32]) -> bool {
        self.ours.contains(hash)
            || self
                .link
                .view(|e| kinko_core::wallet::Wallet::gas_booked(e.ledger(), &tx_id(hash)).is_some())
    }

    /// One poll over the new blocks (at most [`BLOCKS_PER_POLL_MAX`]).
    pub fn poll(&mut self) -> Result<ReconcileStats, EthWatchError> {
        let mut stats = ReconcileStats::default();
        let head = self.rpc.block_number()?;
        let from = self.cursor.map_or(0, |c| c + 1);
        let to = head.min(from.saturating_add(BLOCKS_PER_POLL_MAX - 1));
        let mut found: Vec<([u8; 32], u128)> = Vec::new();
        let before = self.cursor;
        if from <= to {
            stats.scanned_from = Some(from);
            for n in from..=to {
                let Some(block) = self.rpc.block_at(n)? else { break };
                for t in &block.transactions {
                    if !self.is_key(&t.from)
                        || self.is_ours(&t.hash)
                        || self.flagged.contains(&t.hash)
                        || self.reported(&t.hash)
                    {
                        continue;
                    }
                    let took = match self.kind {
                        EthAsset::Ether => {
                            let gas = self
                                .rpc
                                .receipt(&t.hash)?
                                .map_or(0, |r| r.gas_used.saturating_mul(r.effective_gas_price));
                            t.value.saturating_add(gas)
                        }
                        EthAsset::Token(_) => 0,
                    };
                    found.push((t.hash, took));
                }
                self.cursor = Some(n);
            }
            if let EthAsset::Token(token) = self.kind {
                // Tokens leave our addresses by Transfer logs whose `from` (topic 1) is one.
                for log in self.rpc.logs(&token, &TRANSFER_TOPIC, &[], from, to)? {
                    if log.removed || log.topics.len() != 3 {
                        continue;
                    }
                    let mut sender = [0u8; 20];
                    sender.copy_from_slice(&log.topics[1][12..]);
                    if !self.is_key(&EthAddress(sender)) {
                        continue;
                    }
                    if self.is_ours(&log.tx_hash)
                        || self.flagged.contains(&log.tx_hash)
                        || self.reported(&log.tx_hash)
                    {
                        continue;
                    }
                    let amount = if log.data.len() == 32 && log.data[..16].iter().all(|b| *b == 0) {
                        let mut w = [0u8; 16];
                        w.copy_from_slice(&log.data[16..]);
                        u128::from_be_bytes(w)
                    } else {
                        u128::MAX
                    };
                    match found.iter_mut().find(|(h, _)| *h == log.tx_hash) {
                        Some((_, took)) => *took = took.saturating_add(amount),
                        None => found.push((log.tx_hash, amount)),
                    }
                }
            }
        }
        stats.scanned_to = self.cursor.unwrap_or(0);
        if found.is_empty() {
            if let Some(path) = &self.state {
                save_json(path, &self.cursor)?;
            }
            return Ok(stats);
        }
        let missing = found.iter().fold(0u128, |a, (_, t)| a.saturating_add(*t));
        let txids: Vec<String> = found.iter().map(|(h, _)| tx_id(h)).collect();
        let node_nonce = self.rpc.nonce(&self.hot, "latest")?;
        let summary = format!(
            "{} transaction(s) from the hot address {} or a deposit address that kinko did not sign (the hot nonce on the node is now {node_nonce}); {missing} units taken",
            found.len(),
            self.hot
        );
        tracing::error!(asset = self.asset.0, hot = %self.hot, txids = ?txids, missing = %missing,
            "CRITICAL: unapproved outflow from an Ethereum key of ours; halting withdrawals and opening an incident");
        let incident = open_halting_incident(
            &self.link,
            crate::reconcile::KIND_UNAPPROVED_OUTFLOW,
            self.asset,
            summary,
            txids,
            missing,
        )
        .inspect_err(|_| self.cursor = before)?;
        if incident.is_some() {
            stats.incident = incident;
        }
        for (h, _) in &found {
            self.flagged.insert(*h);
        }
        stats.unapproved = found.iter().map(|(h, _)| *h).collect();
        stats.missing = missing;
        // Reported (the incident is durable): the cursor may pass them.
        if let Some(path) = &self.state {
            save_json(path, &self.cursor)?;
        }
        Ok(stats)
    }
}

/// Submits `cmd` and waits for its durable answer; the engine's refusal is
/// [`EthWatchError::Refused`] with `what` and the refusal's code.
pub(crate) fn submit(link: &EngineLink, what: &'static str, cmd: Command) -> Result<Reply, EthWatchError> {
    match link.submit(cmd)? {
        Ok(r) => Ok(r),
        Err(reject) => Err(EthWatchError::Refused {
            what,
            code: reject.code(),
        }),
    }
}

/// Opens a reconciliation incident of `kind` that halts `asset` (`missing` in its minor unit);
/// the incident's id, if the engine opened one.
pub(crate) fn open_halting_incident(
    link: &EngineLink,
    kind: &str,
    asset: AssetId,
    summary: String,
    txids: Vec<String>,
    missing: u128,
) -> Result<Option<u64>, EthWatchError> {
    let cmd = Command::OpenIncident {
        kind: kind.into(),
        asset: Some(asset),
        summary,
        txids,
        missing: Amount(missing),
        opened_by: crate::reconcile::BY.into(),
        halt: true,
    };
    match submit(link, "open_incident", cmd)? {
        Reply::Incident(i) => Ok(Some(i.id)),
        _ => Ok(None),
    }
}

/// Why the signer did not sign.
#[derive(Debug, thiserror::Error)]
pub enum EthSignError {
    /// The signer refused (its stable code): the withdrawal fails with it.
    #[error("signer refused ({code}): {reason}")]
    Refused {
        code: String,
        reason: String,
        halted: bool,
    },
    /// The signer could not be asked, or answered something else than a signature of these
    /// very bytes: nothing is recorded, the withdrawal stays `Signing` and the next poll asks
    /// again.
    #[error("signer: {0}")]
    Unavailable(String),
}

/// The signer as Ethereum transactions reach it: the withdrawal record and the raw unsigned
/// transaction in, the raw signed transaction out. The signer reads the transaction itself
/// (`kinko_signer::eth`); [`SocketSigner`] is the one `kinko serve` wires.
pub trait EthSignerPort {
    fn sign_withdrawal(
        &mut self,
        w: &kinko_core::wallet::Withdrawal,
        raw_unsigned: &[u8],
    ) -> Result<Vec<u8>, EthSignError>;
}

/// The signer over its Unix socket: `sign_eth_withdrawal` with the withdrawal's approval
/// (proof, reviews) and the journal head the signer witnesses.
#[derive(Clone)]
pub struct SocketSigner {
    socket: std::path::PathBuf,
    link: EngineLink,
}

impl std::fmt::Debug for SocketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketSigner")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl SocketSigner {
    pub fn new(socket: std::path::PathBuf, link: EngineLink) -> SocketSigner {
        SocketSigner { socket, link }
    }

    fn call(
        &self,
        req: &kinko_signer_proto::protocol::Request,
    ) -> Result<kinko_signer_proto::protocol::Response, EthSignError> {
        let mut client = kinko_signer_proto::client::SignerClient::connect(&self.socket)
            .map_err(|e| EthSignError::Unavailable(format!("{}: {e}", self.socket.display())))?;
        client
            .call(req)
            .map_err(|e| EthSignError::Unavailable(e.to_string()))
    }
}

impl SocketSigner {
    /// A hot → cold transfer (`sign_eth_cold_sweep`) or a refill's `execute` on the cold
    /// contract (`sign_eth_refill`, `refill`): the signer checks them against its own cold
    /// contract and hot address.
    pub fn sign_cold(&self, refill: bool, raw_unsigned: &[u8]) -> Result<Vec<u8>, EthSignError> {
        use kinko_signer_proto::protocol::Request;
        let journal = Some(crate::service::journal_head(&self.link));
        let raw_unsigned_owned = raw_unsigned.to_vec();
        let req = if refill {
            Request::SignEthRefill {
                raw_unsigned: raw_unsigned_owned,
                journal,
            }
        } else {
            Request::SignEthColdSweep {
                raw_unsigned: raw_unsigned_owned,
                journal,
            }
        };
        signed_answer(self.call(&req)?, raw_unsigned)
    }
}

/// The signed bytes of an answer, checked to be a signature of exactly `raw_unsigned` (the
/// signer may only add one).
fn signed_answer(
    answer: kinko_signer_proto::protocol::Response,
    raw_unsigned: &[u8],
) -> Result<Vec<u8>, EthSignError> {
    use kinko_signer_proto::protocol::Response;
    match answer {
        Response::EthSigned { raw, hash } => {
            let same = kinko_chain::eth::Eip1559::decode_signed(&raw)
                .is_ok_and(|(tx, _)| tx.encode_unsigned() == raw_unsigned);
            if !same || kinko_chain::eth::Eip1559::tx_hash(&raw) != hash {
                return Err(EthSignError::Unavailable(
                    "the signer answered another transaction than the one asked".into(),
                ));
            }
            Ok(raw)
        }
        Response::Refused { code, reason, halted } => Err(EthSignError::Refused { code, reason, halted }),
        other => Err(EthSignError::Unavailable(crate::service::refusal(&other))),
    }
}

impl EthSignerPort for SocketSigner {
    fn sign_withdrawal(
        &mut self,
        w: &kinko_core::wallet::Withdrawal,
        raw_unsigned: &[u8],
    ) -> Result<Vec<u8>, EthSignError> {
        let answer = self.call(&kinko_signer_proto::protocol::Request::SignEthWithdrawal {
            withdrawal: Box::new(crate::to_signer::withdrawal(w)),
            raw_unsigned: raw_unsigned.to_vec(),
            journal: Some(crate::service::journal_head(&self.link)),
        })?;
        signed_answer(answer, raw_unsigned)
    }
}

impl crate::eth_sweep::EthInternalSigner for SocketSigner {
    fn sign_sweep(&mut self, index: u32, raw_unsigned: &[u8]) -> Result<Vec<u8>, EthSignError> {
        let answer = self.call(&kinko_signer_proto::protocol::Request::SignEthSweep {
            index,
            raw_unsigned: raw_unsigned.to_vec(),
            journal: Some(crate::service::journal_head(&self.link)),
        })?;
        signed_answer(answer, raw_unsigned)
    }
    fn sign_topup(&mut self, index: u32, raw_unsigned: &[u8]) -> Result<Vec<u8>, EthSignError> {
        let answer = self.call(&kinko_signer_proto::protocol::Request::SignEthGasTopup {
            index,
            raw_unsigned: raw_unsigned.to_vec(),
            journal: Some(crate::service::journal_head(&self.link)),
        })?;
        signed_answer(answer, raw_unsigned)
    }
}

/// How custody builds withdrawals of one Ethereum asset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EthWithdrawalConfig {
    pub chain_id: u64,
    /// Gas of a plain ETH payment (21 000) or of the token's `transfer`.
    pub gas_limit: u64,
    pub priority_fee: u128,
    /// The most custody offers per gas; above it the withdrawal waits for cheaper blocks.
    pub max_fee_cap: u128,
    /// Blocks on top of a withdrawal's block before it is `Completed`.
    pub finality_depth: u64,
}

/// What one withdrawal poll did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WithdrawalStats {
    pub signed: usize,
    pub completed: usize,
    pub waiting_for_fees: usize,
    pub failed: usize,
}

/// Withdrawals of one Ethereum asset from the hot address: `Requested` → `Signing` → an
/// EIP-1559 transaction at the next nonce of kinko's own records → the signer → recorded
/// (`Signed`, raw bytes, gas booked to network fees for ETH) → broadcast → `Completed` at the
/// finality depth. A recorded transaction is re-sent as recorded, never rebuilt.
pub struct EthWithdrawals {
    rpc: EthRpc,
    link: EngineLink,
    asset: AssetId,
    kind: EthAsset,
    hot: EthAddress,
    cfg: EthWithdrawalConfig,
    /// The next nonce of the hot key by kinko's records (starts from the node's count).
    next_nonce: Option<u64>,
    /// Unsigned transactions kept between asking the signer and recording its answer: in
    /// memory (a lost answer) and, with a directory, on disk (a crash).
    pending: crate::pending::PendingPsbts,
    kept: BTreeMap<u64, Vec<u8>>,
    /// The chain's native asset (ETH), whose ledger books the gas (`None`: not booked).
    gas_asset: Option<AssetId>,
}

impl std::fmt::Debug for EthWithdrawals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthWithdrawals")
            .field("asset", &self.asset)
            .field("hot", &self.hot)
            .field("next_nonce", &self.next_nonce)
            .finish_non_exhaustive()
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl EthWithdrawals {
    pub fn new(
        rpc: EthRpc,
        link: EngineLink,
        asset: AssetId,
        kind: EthAsset,
        hot: EthAddress,
        cfg: EthWithdrawalConfig,
    ) -> EthWithdrawals {
        EthWithdrawals {
            rpc,
            link,
            asset,
            kind,
            hot,
            cfg,
            next_nonce: None,
            pending: crate::pending::PendingPsbts::open(None, ""),
            kept: BTreeMap::new(),
            gas_asset: (kind == EthAsset::Ether).then_some(asset),
        }
    }

    /// Books the gas of this asset's withdrawals in `eth`'s ledger (a token's: the chain's ETH).
    pub fn with_gas_asset(mut self, eth: AssetId) -> EthWithdrawals {
        self.gas_asset = Some(eth);
        self
    }

    /// Keeps each withdrawal's unsigned transaction in `dir` too (as
    /// `<code>.withdrawal-<id>.eth-tx`), so that after a crash the same transaction is asked
    /// for again; without it, only for the life of this value.
    pub fn with_pending_dir(mut self, dir: &std::path::Path, code: &str) -> EthWithdrawals {
        self.pending = crate::pending::PendingPsbts::open(Some(dir), code);
        self
    }

    /// Sets the next nonce from kinko's records (the transactions it recorded from the hot key,
    /// across every asset of the chain); the node's count only until kinko recorded any.
    pub fn set_next_nonce(&mut self, nonce: u64) {
        self.next_nonce = Some(nonce);
    }

    pub fn next_nonce(&self) -> Option<u64> {
        self.next_nonce
    }

    fn submit(&self, what: &'static str, cmd: Command) -> Result<Reply, EthWatchError> {
        submit(&self.link, what, cmd)
    }

    /// The unsigned transaction paying `w` at the next nonce: the one kept for it if the signer
    /// may have signed it already (a crash or a lost answer), else one built at the current
    /// fees (`None`: they are above the cap, it waits).
    fn unsigned_for(
        &self,
        w: &kinko_core::wallet::Withdrawal,
        dest: EthAddress,
    ) -> Result<Option<kinko_chain::eth::Eip1559>, EthWatchError> {
        let nonce = match self.next_nonce {
            Some(n) => n,
            None => self.rpc.nonce(&self.hot, "latest")?,
        };
        let (to, value, data) = match self.kind {
            EthAsset::Ether => (dest, w.amount.0, Vec::new()),
            EthAsset::Token(t) => (t, 0, kinko_chain::eth::erc20_transfer(&dest, w.amount.0)),
        };
        let kept = self
            .kept
            .get(&w.id.0)
            .cloned()
            .or_else(|| self.pending.load_eth(w.id.0))
            .and_then(|raw| kinko_chain::eth::Eip1559::decode_unsigned(&raw).ok())
            .filter(|k| k.to == to && k.value == value && k.data == data);
        if kept.is_some() {
            // Its nonce was reserved when it was kept: the signer may hold a signature of it.
            return Ok(kept);
        }
        let base = self
            .rpc
            .block("latest")?
            .and_then(|b| b.base_fee_per_gas)
            .unwrap_or(0);
        let max_fee = base.saturating_mul(2).saturating_add(self.cfg.priority_fee);
        if max_fee > self.cfg.max_fee_cap {
            return Ok(None);
        }
        Ok(Some(kinko_chain::eth::Eip1559 {
            chain_id: self.cfg.chain_id,
            nonce,
            max_priority_fee_per_gas: self.cfg.priority_fee,
            max_fee_per_gas: max_fee,
            gas_limit: self.cfg.gas_limit,
            to,
            value,
            data,
        }))
    }

    /// The nonce after every transaction kept for a withdrawal still `Signing` (the signer may
    /// have signed it): what a restart must not build at again.
    pub fn kept_next_nonce(&self) -> Option<u64> {
        use kinko_core::wallet::WithdrawalStatus;
        let signing: Vec<u64> = self.link.view(|e| {
            e.wallet()
                .withdrawals()
                .iter()
                .filter(|w| w.asset == self.asset && w.status == WithdrawalStatus::Signing)
                .map(|w| w.id.0)
                .collect()
        });
        signing
            .into_iter()
            .filter_map(|id| self.kept.get(&id).cloned().or_else(|| self.pending.load_eth(id)))
            .filter_map(|raw| kinko_chain::eth::Eip1559::decode_unsigned(&raw).ok())
            .map(|tx| tx.nonce.saturating_add(1))
            .max()
    }

    fn forget(&mut self, withdrawal: u64) {
        self.kept.remove(&withdrawal);
        self.pending.remove_eth(withdrawal);
    }

    /// `w` to the signer and, signed, recorded then broadcast; a refusal fails it.
    fn sign_one(
        &mut self,
        w: &kinko_core::wallet::Withdrawal,
        signer: &mut dyn EthSignerPort,
        stats: &mut WithdrawalStats,
    ) -> Result<(), EthWatchError> {
        use kinko_core::wallet::WithdrawalStatus;
        let Some(dest) = EthAddress::parse(&w.address).ok() else {
            self.submit(
                "fail_withdrawal",
                Command::FailWithdrawal {
                    id: w.id,
                    reason: "ADDRESS_INVALID".into(),
                },
            )?;
            stats.failed += 1;
            return Ok(());
        };
        let Some(tx) = self.unsigned_for(w, dest)? else {
            stats.waiting_for_fees += 1;
            return Ok(());
        };
        if w.status != WithdrawalStatus::Signing
            && self
                .link
                .submit(Command::WithdrawalSigning { id: w.id })?
                .is_err()
        {
            // Cancelled meanwhile, or the asset halted: nothing to sign.
            return Ok(());
        }
        let unsigned = tx.encode_unsigned();
        self.pending
            .save_eth(w.id.0, &unsigned)
            .map_err(|e| EthWatchError::Pending(e.to_string()))?;
        self.kept.insert(w.id.0, unsigned.clone());
        // Reserved from now on: whatever the signer answers (or not), no other transaction of
        // ours is built at this nonce.
        let reserved = tx.nonce.saturating_add(1);
        self.next_nonce = Some(self.next_nonce.map_or(reserved, |n| n.max(reserved)));
        let raw = match signer.sign_withdrawal(w, &unsigned) {
            Ok(raw) => raw,
            Err(refused @ EthSignError::Refused { .. }) => {
                let reason: String = refused.to_string().chars().take(1000).collect();
                tracing::warn!(asset = self.asset.0, withdrawal = w.id.0, %reason, "the signer refused an Ethereum withdrawal");
                self.submit("fail_withdrawal", Command::FailWithdrawal { id: w.id, reason })?;
                self.forget(w.id.0);
                // Nothing was signed at its nonce: the next withdrawal takes it.
                if self.next_nonce == Some(tx.nonce.saturating_add(1)) {
                    self.next_nonce = Some(tx.nonce);
                }
                stats.failed += 1;
                return Ok(());
            }
            Err(e @ EthSignError::Unavailable(_)) => return Err(EthWatchError::Signer(e)),
        };
        let hash = kinko_chain::eth::Eip1559::tx_hash(&raw);
        // Gas is ETH, booked exactly from the receipt when the withdrawal completes
        // (`RecordGas` in the ETH ledger, for ETH and token withdrawals alike): nothing here.
        let fee = 0;
        self.submit(
            "record_withdrawal_tx",
            Command::RecordWithdrawalTx {
                id: w.id,
                txid: tx_id(&hash),
                raw_tx: hex::encode(&raw),
                network_fee: Amount(fee),
            },
        )?;
        self.forget(w.id.0);
        self.rpc.send_raw(&raw)?;
        self.submit(
            "withdrawal_broadcast",
            Command::WithdrawalBroadcast {
                id: w.id,
                txid: tx_id(&hash),
                network_fee: Amount(fee),
            },
        )?;
        stats.signed += 1;
        Ok(())
    }

    /// One poll.
    pub fn poll(&mut self, signer: &mut dyn EthSignerPort) -> Result<WithdrawalStats, EthWatchError> {
        use kinko_core::wallet::WithdrawalStatus;
        let mut stats = WithdrawalStats::default();
        let now = now_ns();
        let todo: Vec<kinko_core::wallet::Withdrawal> = self.link.view(|e| {
            e.wallet()
                .withdrawals()
                .iter()
                .filter(|w| w.asset == self.asset)
                .filter(|w| w.status == WithdrawalStatus::Signing || w.ready_for_signing(now))
                .cloned()
                .collect()
        });
        for w in todo {
            self.sign_one(&w, signer, &mut stats)?;
        }
        // Broadcast ones: re-sent as recorded until mined; completed at the finality depth.
        let head = self.rpc.block_number()?;
        let sent: Vec<kinko_core::wallet::Withdrawal> = self.link.view(|e| {
            e.wallet()
                .withdrawals()
                .iter()
                .filter(|w| w.asset == self.asset)
                .filter(|w| matches!(w.status, WithdrawalStatus::Broadcast | WithdrawalStatus::Signed))
                .cloned()
                .collect()
        });
        for w in sent {
            let Some(raw) = w.raw_tx.as_deref().and_then(|r| hex::decode(r).ok()) else {
                continue;
            };
            let hash = kinko_chain::eth::Eip1559::tx_hash(&raw);
            match self.rpc.receipt(&hash)? {
                Some(r)
                    if head.saturating_add(1).saturating_sub(r.block_number) >= self.cfg.finality_depth =>
                {
                    let gas = r.gas_used.saturating_mul(r.effective_gas_price);
                    // A withdrawal recorded with its fee booked (an ETH withdrawal recorded by an
                    // earlier version booked `gas_limit × max_fee` then): not booked twice.
                    if let Some(eth) = self.gas_asset.filter(|_| gas > 0 && w.network_fee.0 == 0) {
                        self.submit(
                            "record_gas",
                            Command::RecordGas {
                                asset: eth,
                                txid: tx_id(&hash),
                                for_asset: self.asset,
                                amount: Amount(gas),
                            },
                        )?;
                    }
                    self.submit("withdrawal_confirmed", Command::WithdrawalConfirmed { id: w.id })?;
                    stats.completed += 1;
                }
                Some(_) => {}
                None => {
                    // Not mined (dropped from a pool, or a reorg): the recorded bytes again.
                    let _ = self.rpc.send_raw(&raw);
                }
            }
        }
        Ok(stats)
    }
}
