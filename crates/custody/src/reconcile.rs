//! Continuous reconciliation and theft detection.
//!
//! Zaif's hot wallet was drained with a key used outside the exchange, and nothing on the
//! exchange's side noticed. Here, after deposits, withdrawals and sweeps, every poll of the
//! custody service (the poll interval is the reconciliation interval) checks:
//!
//! 1. **Every spend of our coins is one kinko made.** The hot and the cold watch-only wallets
//!    are each listed with a `listsinceblock` cursor of their own, stored across restarts
//!    ([`crate::cursor`]; a cursor is stored only once every spend before it has been valued
//!    and reported, so a restart lists a waiting one again; an unknown cursor rescans from
//!    `rescan_depth` below the tip; no cursor at all lists the whole history). In a
//!    watch-only wallet a `send` entry is a transaction spending our coins, mempool included.
//!    One whose txid is neither a withdrawal's, nor a custody move's, nor a transaction this
//!    service signed and has not recorded yet is an **unapproved outflow**: it is valued from
//!    the decoded transaction in integer satoshis ([`Spend`]), logged as CRITICAL and reported
//!    with `OpenIncident { kind: "unapproved_outflow", halt: true, .. }`, which halts the
//!    asset's withdrawals in the same command. A txid named by any incident, open or resolved,
//!    never opens another: a resolved one was investigated, and a restart lists it again.
//!    A spend that cannot be valued yet (node look-ups failed or the per-poll budget is spent)
//!    halts withdrawals at once and is valued on a later poll.
//! 2. **The hot wallet holds what the ledger says** ([`HotCheck`]); a shortfall that the
//!    unapproved spends found (and earlier `hot_shortfall` incidents) do not explain opens a
//!    `hot_shortfall` incident with `halt: true` (a deep reorg, a spend the scan cannot see).
//!    A surplus is never an alarm: it is a deposit not yet scanned.
//! 3. **Customer funds are covered** ([`ReserveCheck`]), once at start and then every
//!    `full_reconcile_every`; a shortfall that earlier incidents do not explain opens a
//!    `reserve_shortfall` incident (not halting: the company owes the difference, and an
//!    unexplained outflow halts on its own). The result is logged either way.
//!
//! "Earlier incidents" are the asset's incidents of these three kinds, open or resolved:
//! resolving one does not change the ledger, so the shortfall it reported stays explained.
//!
//! Checks 2 and 3 run only when the poll's bookkeeping steps succeeded and every unapproved
//! spend has been valued: a half-booked step or an unvalued spend would make them report what
//! check 1 reports, or what the next poll books.
//!
//! 4. **Blindness is an alarm too** ([`Custody::fail_closed`]). When reconciliation cannot run
//!    (the node unreachable or lost, its wallets missing, a look-up failing) for
//!    `reconcile_failures_max` polls in a row, the asset's withdrawals are halted by the system
//!    (`HaltWithdrawals`, the reason naming the cause) and a `reconciliation_down` incident is
//!    opened (one per outage). The halt stays when the node comes back: operators resume, which
//!    takes two admins.
//!
//! Cost of a poll: three node calls (`listunspent` of hot, `listsinceblock` of hot and of
//! cold) plus, only for spends kinko did not make, their transactions and at most one look-up
//! per transaction they spend from (the inputs are usually valued from the previous poll's
//! coins), at most [`LOOKUPS_PER_POLL_MAX`] in all. Engine reads are incremental: withdrawals,
//! custody moves and deposits are indexed from low-water marks, so the work follows what is
//! new. Check 3 adds the cold wallet's `listunspent` and a pass over the ledger's accounts.

use crate::cursor::{self, Scan};
use crate::error::{rpc_err, CustodyError};
use crate::service::{coins_total, Custody};
use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{OutPoint, Script, Transaction, Txid};
use kinko_chain::rpc::{Rpc, RpcError, RPC_INVALID_ADDRESS_OR_KEY};
use kinko_chain::{address_for, format_sats, Network};
use kinko_core::admin::TXIDS_PER_INCIDENT_MAX;
use kinko_core::engine::HaltBy;
use kinko_core::wallet::DepositStatus;
use kinko_core::{Amount, AssetId, Command, Engine, Reply, SystemAccount};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::time::Instant;

/// Who reconciliation is in the engine: the halts and incidents it opens name it.
pub const BY: &str = "system:reconciliation";
pub const KIND_UNAPPROVED_OUTFLOW: &str = "unapproved_outflow";
pub const KIND_HOT_SHORTFALL: &str = "hot_shortfall";
pub const KIND_RESERVE_SHORTFALL: &str = "reserve_shortfall";
/// Reconciliation could not run for `reconcile_failures_max` polls in a row: theft detection
/// was blind, so the asset's withdrawals were halted (fail closed).
pub const KIND_RECONCILE_DOWN: &str = "reconciliation_down";
/// Node look-ups per poll for valuing unapproved spends (their transactions and the
/// transactions they spend from); the rest waits for the next poll, withdrawals halted.
pub const LOOKUPS_PER_POLL_MAX: usize = 256;
/// Destinations named in an incident's summary.
const SUMMARY_DESTINATIONS_MAX: usize = 8;
/// An incident summary's length (the engine takes up to 1024 bytes).
const SUMMARY_CHARS_MAX: usize = 1000;

/// Which of our wallets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Hot,
    Cold,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Hot => "hot",
            Side::Cold => "cold",
        }
    }
}

/// What one transaction spending our coins did, in satoshis, from the transaction itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spend {
    pub txid: String,
    /// Our coins it spends (hot and cold), and the hot ones among them.
    pub ours_in: u128,
    pub hot_in: u128,
    /// What it pays to our own scripts, and to hot ones among them.
    pub ours_out: u128,
    pub hot_out: u128,
    /// What it pays to scripts that are not ours, and their addresses ("non-standard script"
    /// when the script has none), each once.
    pub foreign_out: u128,
    pub destinations: Vec<String>,
    /// Inputs that are not our coins (someone else paid part of it).
    pub foreign_inputs: usize,
    /// Conflicted when valued (a double spend won): it took nothing.
    pub conflicted: bool,
}

impl Spend {
    /// What custody lost: our coins spent less what came back to our scripts, i.e. the outputs
    /// paying others **plus the miner fee** when every input is ours. 0 when conflicted.
    pub fn lost(&self) -> u128 {
        if self.conflicted {
            return 0;
        }
        self.ours_in.saturating_sub(self.ours_out)
    }

    /// What left the hot wallet (to others, to the miner, or to cold). 0 when conflicted.
    pub fn left_hot(&self) -> u128 {
        if self.conflicted {
            return 0;
        }
        self.hot_in.saturating_sub(self.hot_out)
    }
}

/// Values `tx`. `script` tells whether an output script is ours (and on which side); `coin`
/// gives the value and side of an outpoint if it is our coin.
pub fn value_spend(
    net: Network,
    tx: &Transaction,
    conflicted: bool,
    script: impl Fn(&Script) -> Option<Side>,
    mut coin: impl FnMut(&OutPoint) -> Result<Option<(u64, Side)>, CustodyError>,
) -> Result<Spend, CustodyError> {
    let mut s = Spend {
        txid: tx.compute_txid().to_string(),
        conflicted,
        ..Spend::default()
    };
    for o in &tx.output {
        let v = u128::from(o.value.to_sat());
        match script(&o.script_pubkey) {
            Some(side) => {
                s.ours_out = s.ours_out.saturating_add(v);
                if side == Side::Hot {
                    s.hot_out = s.hot_out.saturating_add(v);
                }
            }
            None => {
                s.foreign_out = s.foreign_out.saturating_add(v);
                let to = address_for(net, &o.script_pubkey).unwrap_or_else(|| "non-standard script".into());
                if !s.destinations.contains(&to) {
                    s.destinations.push(to);
                }
            }
        }
    }
    for i in &tx.input {
        match coin(&i.previous_output)? {
            Some((v, side)) => {
                s.ours_in = s.ours_in.saturating_add(u128::from(v));
                if side == Side::Hot {
                    s.hot_in = s.hot_in.saturating_add(u128::from(v));
                }
            }
            None => s.foreign_inputs += 1,
        }
    }
    Ok(s)
}

/// The hot-wallet balance check, every poll. Only a shortfall is an alarm.
///
/// ```text
///   node_hot − node_pending_deposits  ≥  ledger_hot − withdrawals_in_flight − signed_unrecorded
/// ```
///
/// - `node_hot`: our hot outputs unspent on the node at any depth, mempool included
///   (`listunspent 0` with unsafe outputs).
/// - `ledger_hot`: the ledger's `HotWallet`. Credited deposits are in it; a withdrawal's miner
///   fee leaves it at broadcast and its amount at confirmation; sweeps leave it and refills
///   enter it (amount, and the fee of a sweep) when recorded, right after their broadcast.
/// - `withdrawals_in_flight`: the ledger's `WithdrawalsInFlight`, the amounts of withdrawals
///   broadcast and not yet confirmed: gone from the node, still in `HotWallet`.
/// - `signed_unrecorded`: amount + miner fee of withdrawals this service signed and has not
///   recorded as broadcast (the node may or may not have them): counted as gone, so the check
///   can only err towards silence for them.
/// - Pending deposits (`DepositsInFlight`) are on the node but not in `HotWallet`. They are
///   taken out of the node's side, output by output, instead of adding `DepositsInFlight` to
///   the ledger's side: a pending deposit the node no longer has (evicted from its mempool,
///   not yet dropped by the engine) is then no false alarm.
///
/// Equivalently `node_hot ≥ HotWallet + (DepositsInFlight still on the node) −
/// WithdrawalsInFlight − signed_unrecorded`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HotCheck {
    pub ledger_hot: i128,
    pub withdrawals_in_flight: i128,
    pub signed_unrecorded: u128,
    pub node_hot: u64,
    pub node_pending_deposits: u64,
}

impl HotCheck {
    /// What the ledger says the node holds outside pending deposits.
    pub fn expected(&self) -> i128 {
        self.ledger_hot
            .saturating_sub(self.withdrawals_in_flight)
            .saturating_sub(i128::try_from(self.signed_unrecorded).unwrap_or(i128::MAX))
    }
    /// What the node holds outside pending deposits.
    pub fn held(&self) -> i128 {
        i128::from(self.node_hot).saturating_sub(i128::from(self.node_pending_deposits))
    }
    /// How much less the node holds than expected (0: none, or a surplus).
    pub fn shortfall(&self) -> u128 {
        u128::try_from(self.expected().saturating_sub(self.held())).unwrap_or(0)
    }
}

/// The full reconciliation: customer funds against everything custody holds on the node.
///
/// ```text
///   node_hot − node_pending_deposits + node_cold + signed_unrecorded
///       ≥  liabilities − deposits_in_flight
/// ```
///
/// `liabilities` is what customers' accounts hold; it includes pending deposits (credited to
/// the customer, held, when first seen), so `deposits_in_flight` is taken out of it and their
/// outputs out of the node's side, as in [`HotCheck`]. Broadcast withdrawals are already
/// debited from customers and gone from the node. A withdrawal signed and not yet recorded is
/// still in its customer's balance though possibly gone: counted as held. Miner fees the
/// company has not earned back (withdrawal fees, trading fees, treasury) are a real shortfall:
/// they were paid with customers' coins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReserveCheck {
    pub liabilities: u128,
    pub deposits_in_flight: u128,
    pub signed_unrecorded: u128,
    pub node_hot: u64,
    pub node_pending_deposits: u64,
    pub node_cold: u64,
}

impl ReserveCheck {
    /// Customer funds that must be on the node.
    pub fn required(&self) -> u128 {
        self.liabilities.saturating_sub(self.deposits_in_flight)
    }
    /// What custody holds on the node towards them.
    pub fn held(&self) -> u128 {
        u128::from(self.node_hot.saturating_sub(self.node_pending_deposits))
            .saturating_add(u128::from(self.node_cold))
            .saturating_add(self.signed_unrecorded)
    }
    pub fn shortfall(&self) -> u128 {
        self.required().saturating_sub(self.held())
    }
}

/// The part of a shortfall that incidents already opened (or spends already reported) do not
/// account for: what a new incident reports. 0: nothing new.
pub fn unexplained(shortfall: u128, explained: u128) -> u128 {
    shortfall.saturating_sub(explained)
}

/// Reconciliation's memory of one run.
#[derive(Default)]
pub(crate) struct Reconciler {
    hot: SendScan,
    cold: SendScan,
    /// Txids of withdrawals and custody moves recorded in the engine, indexed incrementally.
    approved: HashSet<String>,
    /// Withdrawals before this index will get no txid any more (they have one, or are closed).
    withdrawals_indexed: usize,
    moves_indexed: usize,
    /// Deposits before this index are no longer pending.
    deposits_settled: usize,
    /// Unapproved spends valued in this run (reported now, or by an earlier incident).
    flagged: BTreeMap<String, Spend>,
    /// Our hot coins at this poll's and the previous poll's check: the values of what a new
    /// spend took, without asking the node.
    coins: HashMap<OutPoint, u64>,
    coins_before: HashMap<OutPoint, u64>,
    /// When the last full reconciliation ran (`None`: not yet in this run).
    last_full: Option<Instant>,
    /// The send cursors were read from the cursor store.
    cursors_loaded: bool,
    /// The spends earlier incidents named were put back in the backlog ([`Custody::list_reported`]).
    reported_listed: bool,
}

/// One wallet's `send` entries.
#[derive(Default)]
struct SendScan {
    cursor: Option<String>,
    /// Sends classified (ours or flagged) that the node may list again (in the mempool, or in
    /// a block after the cursor); forgotten once no longer listed.
    seen: HashSet<String>,
    /// Sends that are not ours and are not valued yet.
    backlog: BTreeSet<String>,
}

/// What the engine says, for checks 2 and 3.
struct LedgerView {
    hot: i128,
    withdrawals_in_flight: i128,
    deposits_in_flight: i128,
    pending: Vec<OutPoint>,
    signed_unrecorded: u128,
    /// `missing` of the asset's `hot_shortfall` incidents, and of all its loss incidents.
    hot_incidents: u128,
    all_incidents: u128,
}

fn balance(e: &Engine, asset: AssetId, which: SystemAccount) -> i128 {
    e.asset(asset)
        .map(|a| a.system_account(which))
        .and_then(|id| e.ledger().account(id))
        .map_or(0, |a| a.balance())
}

fn coins_text(sats: u128) -> String {
    match u64::try_from(sats) {
        Ok(s) => format_sats(s),
        Err(_) => format!("{sats} sats"),
    }
}

fn summary(text: String) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(SUMMARY_CHARS_MAX)
        .collect()
}

impl Custody {
    /// One round of reconciliation (see the module documentation). `books_ok`: this poll's
    /// bookkeeping steps all succeeded.
    pub(crate) fn reconcile(&mut self, asset: AssetId, books_ok: bool) -> Result<(), CustodyError> {
        // Our hot coins first, the spends second: a spend landing between the two is listed by
        // the scan before it is missing from the coins, so it is never counted twice.
        // Whatever fails, the spends are still listed and reported.
        if !self.rec.cursors_loaded {
            self.rec.hot.cursor = self.cursors.get(Scan::HotSends);
            self.rec.cold.cursor = self.cursors.get(Scan::ColdSends);
            self.rec.cursors_loaded = true;
        }
        if !self.rec.reported_listed {
            self.rec.reported_listed = self.list_reported(asset);
        }
        let coins = self
            .node_coins(false)
            .map(|c| self.rec.coins_before = std::mem::replace(&mut self.rec.coins, c));
        let listed_hot = self.list_sends(Side::Hot);
        let listed_cold = self.list_sends(Side::Cold);
        let spends = self.value_backlog();
        self.report_spends(asset, spends)?;
        let waiting = self.halt_for_unvalued(asset)?;
        listed_hot?;
        listed_cold?;
        coins?;
        self.keep_send_cursors();
        if waiting || !books_ok {
            return Ok(());
        }
        let view = self.ledger_view(asset);
        self.check_hot(asset, &view)?;
        let due = self
            .rec
            .last_full
            .is_none_or(|t| t.elapsed() >= self.cfg.full_reconcile_every);
        if due {
            self.check_reserves(asset, &view)?;
            self.rec.last_full = Some(Instant::now());
        }
        Ok(())
    }

    /// A stored cursor skips the spends before it, among them those that earlier
    /// `unapproved_outflow` incidents named; they still explain the hot shortfall they caused.
    /// Once per run they go back in the backlog of the wallet that knows them, to be valued
    /// again and recognised as reported (no new incident). Returns false when the node did not
    /// answer (tried again next poll).
    fn list_reported(&mut self, asset: AssetId) -> bool {
        let txids: Vec<String> = self.link.view(|e| {
            e.admin()
                .incidents
                .iter()
                .filter(|i| i.asset == Some(asset) && i.kind == KIND_UNAPPROVED_OUTFLOW)
                .flat_map(|i| i.txids.iter().cloned())
                .collect()
        });
        for txid in txids {
            let queued = self.rec.hot.backlog.contains(&txid) || self.rec.cold.backlog.contains(&txid);
            if queued || self.rec.flagged.contains_key(&txid) {
                continue;
            }
            for side in [Side::Hot, Side::Cold] {
                match self.rpc(side).get_transaction(&txid) {
                    Ok(_) => {
                        self.scan(side).backlog.insert(txid);
                        break;
                    }
                    // Not this wallet's (or a node without that history: nothing to explain).
                    Err(RpcError::Node {
                        code: RPC_INVALID_ADDRESS_OR_KEY,
                        ..
                    }) => {}
                    Err(_) => return false,
                }
            }
        }
        true
    }

    /// Stores the send cursors of the wallets whose every spend has been classified and
    /// reported: a restart must list again a spend that was still waiting to be valued.
    fn keep_send_cursors(&mut self) {
        for (side, scan) in [(Side::Hot, Scan::HotSends), (Side::Cold, Scan::ColdSends)] {
            let s = self.scan(side);
            if let (true, Some(c)) = (s.backlog.is_empty(), s.cursor.clone()) {
                self.cursors.set(scan, c);
            }
        }
    }

    fn scan(&mut self, side: Side) -> &mut SendScan {
        match side {
            Side::Hot => &mut self.rec.hot,
            Side::Cold => &mut self.rec.cold,
        }
    }

    fn rpc(&self, side: Side) -> &Rpc {
        match side {
            Side::Hot => &self.hot,
            Side::Cold => &self.cold,
        }
    }

    /// New `send` entries of one wallet since its cursor: ours are noted, others go to the
    /// backlog to be valued.
    fn list_sends(&mut self, side: Side) -> Result<(), CustodyError> {
        let since = {
            let scan = self.scan(side);
            let from = scan.cursor.clone();
            cursor::list_since(
                self.rpc(side),
                from.as_deref(),
                1,
                self.cfg.rescan_depth,
                &format!("listsinceblock ({})", side.name()),
            )?
            .since
        };
        let mut listed: HashSet<&str> = HashSet::new();
        let mut new: Vec<String> = Vec::new();
        for t in since.transactions.iter().filter(|t| t.category == "send") {
            if listed.insert(t.txid.as_str()) {
                let scan = self.scan(side);
                if !scan.seen.contains(&t.txid) && !scan.backlog.contains(&t.txid) {
                    new.push(t.txid.clone());
                }
            }
        }
        let scan = self.scan(side);
        scan.seen.retain(|t| listed.contains(t.as_str()));
        scan.cursor = Some(since.lastblock.clone());
        for txid in new {
            let known = self.rec.flagged.contains_key(&txid) || self.is_ours(&txid);
            let scan = self.scan(side);
            if known {
                scan.seen.insert(txid);
            } else {
                scan.backlog.insert(txid);
            }
        }
        Ok(())
    }

    /// Whether kinko made `txid`: a withdrawal's or a custody move's transaction, or one this
    /// service signed and has not recorded yet.
    fn is_ours(&mut self, txid: &str) -> bool {
        if self.signed.values().any(|(t, _, _)| t == txid) || self.rec.approved.contains(txid) {
            return true;
        }
        self.index_approved();
        self.rec.approved.contains(txid)
    }

    /// Adds the txids recorded since the last call to the approved index.
    fn index_approved(&mut self) {
        let (from_w, from_m) = (self.rec.withdrawals_indexed, self.rec.moves_indexed);
        let (txids, next_w, next_m) = self.link.view(|e| {
            let w = e.wallet();
            let mut txids = Vec::new();
            let mut next_w = from_w;
            let mut settled = true;
            for (i, x) in w.withdrawals().iter().enumerate().skip(from_w) {
                if let Some(t) = &x.txid {
                    txids.push(t.clone());
                }
                settled = settled && (x.txid.is_some() || !x.status.is_open());
                if settled {
                    next_w = i + 1;
                }
            }
            let moves = w.custody_moves();
            txids.extend(moves.iter().skip(from_m).map(|m| m.txid.clone()));
            (txids, next_w, moves.len())
        });
        self.rec.approved.extend(txids);
        self.rec.withdrawals_indexed = next_w;
        self.rec.moves_indexed = next_m;
    }

    /// Values the backlog within this poll's look-up budget; what fails or does not fit stays.
    fn value_backlog(&mut self) -> Vec<Spend> {
        let mut budget = LOOKUPS_PER_POLL_MAX;
        let mut out: Vec<Spend> = Vec::new();
        for side in [Side::Hot, Side::Cold] {
            let todo: Vec<String> = self.scan(side).backlog.iter().cloned().collect();
            for txid in todo {
                let valued = self.rec.flagged.contains_key(&txid) || out.iter().any(|s| s.txid == txid);
                if valued || self.is_ours(&txid) {
                    // Recorded meanwhile (a move booked late), or spending coins of both
                    // wallets and valued on the other side.
                    let scan = self.scan(side);
                    scan.backlog.remove(&txid);
                    scan.seen.insert(txid);
                    continue;
                }
                if budget == 0 {
                    break;
                }
                match self.value(side, &txid, &mut budget) {
                    Ok(s) => {
                        let scan = self.scan(side);
                        scan.backlog.remove(&txid);
                        scan.seen.insert(txid);
                        out.push(s);
                    }
                    Err(e) => {
                        tracing::error!(asset = %self.cfg.asset, wallet = side.name(), txid = %txid, error = %e,
                            "CRITICAL: cannot value a spend of our coins that kinko did not make yet; retrying");
                    }
                }
            }
        }
        out
    }

    /// Values one spend: the transaction from `side`'s wallet, the coins it spends from the
    /// last checks' hot coins or from the transactions that created them.
    fn value(&self, side: Side, txid: &str, budget: &mut usize) -> Result<Spend, CustodyError> {
        *budget = budget.saturating_sub(1);
        let t = self
            .rpc(side)
            .get_transaction(txid)
            .map_err(|e| rpc_err("gettransaction", e))?;
        let tx: Transaction = deserialize_hex(&t.hex).map_err(|source| CustodyError::TxDecode {
            txid: txid.to_owned(),
            source,
        })?;
        if tx.compute_txid().to_string() != txid {
            return Err(CustodyError::TxidWrong(txid.to_owned()));
        }
        let mut parents: HashMap<Txid, Option<Transaction>> = HashMap::new();
        let script_side = |s: &Script| {
            self.scripts.get(s).map(|d| match d.witness_script {
                Some(_) => Side::Cold,
                None => Side::Hot,
            })
        };
        let coin = |op: &OutPoint| -> Result<Option<(u64, Side)>, CustodyError> {
            if let Some(v) = self.rec.coins.get(op).or_else(|| self.rec.coins_before.get(op)) {
                return Ok(Some((*v, Side::Hot)));
            }
            let parent = match parents.entry(op.txid) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => v.insert(self.wallet_tx(side, &op.txid, budget)?),
            };
            let out = parent
                .as_ref()
                .and_then(|p| p.output.get(usize::try_from(op.vout).ok()?));
            Ok(out.and_then(|o| Some((o.value.to_sat(), script_side(&o.script_pubkey)?))))
        };
        value_spend(self.cfg.network, &tx, t.confirmations < 0, script_side, coin)
    }

    /// A transaction of one of our wallets (`side`'s first); `None` when neither has it (it
    /// paid none of our scripts: a foreign coin).
    fn wallet_tx(
        &self,
        side: Side,
        txid: &Txid,
        budget: &mut usize,
    ) -> Result<Option<Transaction>, CustodyError> {
        let other = match side {
            Side::Hot => Side::Cold,
            Side::Cold => Side::Hot,
        };
        for s in [side, other] {
            *budget = budget.saturating_sub(1);
            match self.rpc(s).get_transaction(&txid.to_string()) {
                Ok(t) => {
                    return deserialize_hex(&t.hex)
                        .map(Some)
                        .map_err(|source| CustodyError::TxDecode {
                            txid: txid.to_string(),
                            source,
                        })
                }
                Err(RpcError::Node {
                    code: RPC_INVALID_ADDRESS_OR_KEY,
                    ..
                }) => {}
                Err(e) => return Err(rpc_err("gettransaction", e)),
            }
        }
        Ok(None)
    }

    /// Opens an incident (halting the asset) for the valued spends no incident names yet.
    fn report_spends(&mut self, asset: AssetId, spends: Vec<Spend>) -> Result<(), CustodyError> {
        if spends.is_empty() {
            return Ok(());
        }
        let reported = self.reported(spends.iter().map(|s| s.txid.as_str()));
        let (known, new): (Vec<Spend>, Vec<Spend>) =
            spends.into_iter().partition(|s| reported.contains(&s.txid));
        for s in known {
            tracing::warn!(asset = %self.cfg.asset, txid = %s.txid, lost = %s.lost(),
                "unapproved spend already reported by an incident");
            self.rec.flagged.insert(s.txid.clone(), s);
        }
        for chunk in new.chunks(TXIDS_PER_INCIDENT_MAX) {
            let lost = chunk.iter().fold(0u128, |t, s| t.saturating_add(s.lost()));
            let txids: Vec<String> = chunk.iter().map(|s| s.txid.clone()).collect();
            let mut to: Vec<&str> = Vec::new();
            for d in chunk.iter().flat_map(|s| &s.destinations) {
                if !to.contains(&d.as_str()) {
                    to.push(d);
                }
            }
            let more = to.len().saturating_sub(SUMMARY_DESTINATIONS_MAX);
            to.truncate(SUMMARY_DESTINATIONS_MAX);
            let conflicted = chunk.iter().filter(|s| s.conflicted).count();
            let paid = chunk.iter().fold(0u128, |t, s| t.saturating_add(s.foreign_out));
            let mut text = format!(
                "{n} transaction(s) kinko did not make spent our {asset} coins: {lost} {asset} left \
                 custody ({paid} {asset} in outputs to others, the rest in miner fees), paying ",
                n = chunk.len(),
                asset = self.cfg.asset,
                lost = coins_text(lost),
                paid = coins_text(paid),
            );
            if to.is_empty() {
                text.push_str("only our own addresses");
            } else {
                text.push_str(&to.join(", "));
            }
            if more > 0 {
                text.push_str(&format!(" and {more} more"));
            }
            if conflicted > 0 {
                text.push_str(&format!("; {conflicted} of them conflicted (took nothing)"));
            }
            let text = summary(text);
            tracing::error!(asset = %self.cfg.asset, txids = ?txids, lost = %lost, destinations = ?to,
                "CRITICAL: unapproved outflow — our coins were spent by transactions kinko did not make; \
                 halting withdrawals and opening an incident");
            let cmd = Command::OpenIncident {
                kind: KIND_UNAPPROVED_OUTFLOW.into(),
                asset: Some(asset),
                summary: text.clone(),
                txids: txids.clone(),
                missing: Amount(lost),
                opened_by: BY.into(),
                halt: true,
            };
            self.open_incident(asset, cmd, &text)?;
            for s in chunk {
                self.rec.flagged.insert(s.txid.clone(), s.clone());
            }
        }
        Ok(())
    }

    /// Submits an incident. A refusal (which should not happen) still halts the asset.
    /// The log line says what became of withdrawals as the engine shows them after the
    /// command: halted (by this incident or earlier) or still running.
    fn open_incident(&self, asset: AssetId, cmd: Command, text: &str) -> Result<(), CustodyError> {
        match self.link.submit(cmd).map_err(CustodyError::Engine)? {
            Ok(Reply::Incident(i)) => {
                let on = self.link.view(|e| {
                    e.admin().global_halt.is_none() && e.asset(asset).is_some_and(|a| a.switches.withdrawals)
                });
                if on {
                    tracing::error!(asset = %self.cfg.asset, incident = i.id, kind = %i.kind, missing = %i.missing.0,
                        customer_share = %i.customer_share.0, company_share = %i.company_share.0,
                        "CRITICAL: incident opened; withdrawals continue");
                } else {
                    tracing::error!(asset = %self.cfg.asset, incident = i.id, kind = %i.kind, missing = %i.missing.0,
                        customer_share = %i.customer_share.0, company_share = %i.company_share.0,
                        "CRITICAL: incident opened; withdrawals of the asset are halted");
                }
                Ok(())
            }
            Ok(other) => Err(CustodyError::UnexpectedReply {
                what: "open incident",
                reply: format!("{other:?}"),
            }),
            Err(r) => {
                tracing::error!(asset = %self.cfg.asset, code = r.code(), summary = %text,
                    "CRITICAL: the engine refused the incident; halting withdrawals instead");
                self.halt(asset, text)
            }
        }
    }

    /// Halts the asset's withdrawals unless they are halted already.
    fn halt(&self, asset: AssetId, reason: &str) -> Result<(), CustodyError> {
        let on = self
            .link
            .view(|e| e.asset(asset).is_some_and(|a| a.switches.withdrawals));
        if !on {
            return Ok(());
        }
        self.link
            .submit(Command::HaltWithdrawals {
                asset: Some(asset),
                by: HaltBy::System(BY.into()),
                reason: summary(reason.to_owned()),
            })
            .map_err(CustodyError::Engine)?
            .map(|_| ())
            .map_err(|r| CustodyError::Refused {
                what: "halt withdrawals".into(),
                code: r.code(),
            })
    }

    /// Reconciliation has failed `failures` polls in a row, the last time for `reason`:
    /// withdrawals of the asset are halted by the system and a `reconciliation_down` incident
    /// is opened, unless they are halted and such an incident is open already. Called every
    /// poll of the outage: withdrawals resumed while reconciliation is still blind halt again.
    pub(crate) fn fail_closed(
        &self,
        asset: AssetId,
        failures: u64,
        reason: &str,
    ) -> Result<(), CustodyError> {
        let (on, open) = self.link.view(|e| {
            (
                e.asset(asset).is_some_and(|a| a.switches.withdrawals),
                e.admin()
                    .open_incidents()
                    .any(|i| i.asset == Some(asset) && i.kind == KIND_RECONCILE_DOWN),
            )
        });
        if !on && open {
            return Ok(());
        }
        let text = summary(format!(
            "reconciliation of {asset} could not run for {failures} consecutive polls ({reason}); theft \
             detection is blind, so withdrawals are halted until operators resume them",
            asset = self.cfg.asset,
        ));
        tracing::error!(asset = %self.cfg.asset, failures, reason = %reason,
            "CRITICAL: reconciliation cannot run; halting withdrawals and opening an incident");
        self.halt(asset, &text)?;
        if open {
            return Ok(());
        }
        let cmd = Command::OpenIncident {
            kind: KIND_RECONCILE_DOWN.into(),
            asset: Some(asset),
            summary: text.clone(),
            txids: Vec::new(),
            missing: Amount(0),
            opened_by: BY.into(),
            halt: true,
        };
        self.open_incident(asset, cmd, &text)
    }

    /// The txids among `txids` that some incident (open or resolved) names.
    fn reported<'a>(&self, txids: impl Iterator<Item = &'a str>) -> HashSet<String> {
        let wanted: HashSet<&str> = txids.collect();
        self.link.view(|e| {
            e.admin()
                .incidents
                .iter()
                .flat_map(|i| &i.txids)
                .filter(|t| wanted.contains(t.as_str()))
                .cloned()
                .collect()
        })
    }

    /// Unapproved spends waiting to be valued halt withdrawals now (unless an incident names
    /// them already). Returns whether any are waiting.
    fn halt_for_unvalued(&self, asset: AssetId) -> Result<bool, CustodyError> {
        let waiting: Vec<String> = self
            .rec
            .hot
            .backlog
            .iter()
            .chain(&self.rec.cold.backlog)
            .cloned()
            .collect();
        if waiting.is_empty() {
            return Ok(false);
        }
        let reported = self.reported(waiting.iter().map(String::as_str));
        let unreported: Vec<&String> = waiting.iter().filter(|t| !reported.contains(*t)).collect();
        if !unreported.is_empty() {
            tracing::error!(asset = %self.cfg.asset, txids = ?unreported,
                "CRITICAL: our coins were spent by transactions kinko did not make (not valued yet); halting withdrawals");
            let reason = format!(
                "{} transaction(s) kinko did not make spent our coins, first {}",
                unreported.len(),
                unreported[0]
            );
            self.halt(asset, &reason)?;
        }
        Ok(true)
    }

    fn ledger_view(&mut self, asset: AssetId) -> LedgerView {
        let from = self.rec.deposits_settled;
        let signed = &self.signed;
        let (view, settled) = self.link.view(|e| {
            let deposits = e.wallet().deposits();
            let mut settled = from;
            let mut pending = Vec::new();
            for (i, d) in deposits.iter().enumerate().skip(from) {
                if d.status == DepositStatus::Pending {
                    if d.asset == asset {
                        if let Ok(txid) = Txid::from_str(&d.txid) {
                            pending.push(OutPoint { txid, vout: d.vout });
                        }
                    }
                } else if settled == i {
                    settled = i + 1;
                }
            }
            let signed_unrecorded = signed
                .iter()
                .filter_map(|(id, (_, _, fee))| {
                    let w = e.wallet().withdrawal(*id)?;
                    Some(w.amount.0.saturating_add(u128::from(*fee)))
                })
                .fold(0u128, u128::saturating_add);
            let mut hot_incidents = 0u128;
            let mut all_incidents = 0u128;
            for i in e.admin().incidents.iter().filter(|i| i.asset == Some(asset)) {
                if [
                    KIND_UNAPPROVED_OUTFLOW,
                    KIND_HOT_SHORTFALL,
                    KIND_RESERVE_SHORTFALL,
                ]
                .contains(&i.kind.as_str())
                {
                    all_incidents = all_incidents.saturating_add(i.missing.0);
                }
                if i.kind == KIND_HOT_SHORTFALL {
                    hot_incidents = hot_incidents.saturating_add(i.missing.0);
                }
            }
            let view = LedgerView {
                hot: balance(e, asset, SystemAccount::HotWallet),
                withdrawals_in_flight: balance(e, asset, SystemAccount::WithdrawalsInFlight),
                deposits_in_flight: balance(e, asset, SystemAccount::DepositsInFlight),
                pending,
                signed_unrecorded,
                hot_incidents,
                all_incidents,
            };
            (view, settled)
        });
        self.rec.deposits_settled = settled;
        view
    }

    /// The value of this poll's hot coins that are outputs of pending deposits.
    fn pending_on_node(&self, view: &LedgerView) -> u64 {
        view.pending
            .iter()
            .filter_map(|op| self.rec.coins.get(op))
            .fold(0u64, |t, v| t.saturating_add(*v))
    }

    fn check_hot(&mut self, asset: AssetId, view: &LedgerView) -> Result<(), CustodyError> {
        let check = HotCheck {
            ledger_hot: view.hot,
            withdrawals_in_flight: view.withdrawals_in_flight,
            signed_unrecorded: view.signed_unrecorded,
            node_hot: coins_total(&self.rec.coins)?,
            node_pending_deposits: self.pending_on_node(view),
        };
        let shortfall = check.shortfall();
        let flagged = self
            .rec
            .flagged
            .values()
            .fold(0u128, |t, s| t.saturating_add(s.left_hot()));
        let explained = flagged.saturating_add(view.hot_incidents);
        let missing = unexplained(shortfall, explained);
        tracing::debug!(asset = %self.cfg.asset, expected = %check.expected(), held = %check.held(),
            shortfall = %shortfall, explained = %explained, "hot wallet reconciled");
        if missing == 0 {
            return Ok(());
        }
        let text = summary(format!(
            "the node's hot wallet holds {missing} {asset} less than the ledger expects and no unapproved \
             spend explains it (expected {expected}, held {held}, already explained {explained}, in sats)",
            missing = coins_text(missing),
            asset = self.cfg.asset,
            expected = check.expected(),
            held = check.held(),
        ));
        tracing::error!(asset = %self.cfg.asset, expected = %check.expected(), held = %check.held(),
            shortfall = %shortfall, explained = %explained, missing = %missing,
            "CRITICAL: hot wallet shortfall; halting withdrawals and opening an incident");
        let cmd = Command::OpenIncident {
            kind: KIND_HOT_SHORTFALL.into(),
            asset: Some(asset),
            summary: text.clone(),
            txids: Vec::new(),
            missing: Amount(missing),
            opened_by: BY.into(),
            halt: true,
        };
        self.open_incident(asset, cmd, &text)
    }

    fn check_reserves(&mut self, asset: AssetId, view: &LedgerView) -> Result<(), CustodyError> {
        let node_cold = coins_total(&self.node_coins(true)?)?;
        let liabilities = self.link.view(|e| Custody::liabilities(e, asset));
        let check = ReserveCheck {
            liabilities,
            deposits_in_flight: u128::try_from(view.deposits_in_flight).unwrap_or(0),
            signed_unrecorded: view.signed_unrecorded,
            node_hot: coins_total(&self.rec.coins)?,
            node_pending_deposits: self.pending_on_node(view),
            node_cold,
        };
        let shortfall = check.shortfall();
        let missing = unexplained(shortfall, view.all_incidents);
        tracing::info!(asset = %self.cfg.asset, liabilities = %check.liabilities, required = %check.required(),
            held = %check.held(), node_hot = check.node_hot, node_cold = check.node_cold,
            shortfall = %shortfall, explained = %view.all_incidents, missing = %missing,
            "full reconciliation: customer funds against custody on the node");
        if missing == 0 {
            return Ok(());
        }
        let text = summary(format!(
            "custody on the node covers customer funds short by {missing} {asset} not explained by earlier \
             incidents (required {required}, held {held}, in sats)",
            missing = coins_text(missing),
            asset = self.cfg.asset,
            required = check.required(),
            held = check.held(),
        ));
        tracing::error!(asset = %self.cfg.asset, required = %check.required(), held = %check.held(), missing = %missing,
            "CRITICAL: reserve shortfall; opening an incident (the company must cover it)");
        // Not halted: nothing is leaving unexplained (that halts on its own, above); the
        // company owes the difference, typically miner fees paid before its own funds in the
        // asset covered them. Operators see it as an open incident.
        let cmd = Command::OpenIncident {
            kind: KIND_RESERVE_SHORTFALL.into(),
            asset: Some(asset),
            summary: text.clone(),
            txids: Vec::new(),
            missing: Amount(missing),
            opened_by: BY.into(),
            halt: false,
        };
        self.open_incident(asset, cmd, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash as _;
    use bitcoin::{absolute, transaction, Amount as Sats, ScriptBuf, Sequence, TxIn, TxOut, Witness};

    const NET: Network = Network::LitecoinRegtest;

    fn script(n: u8) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([n; 20]))
    }

    fn tx(inputs: &[u8], outputs: &[(u8, u64)]) -> Transaction {
        Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: inputs
                .iter()
                .map(|n| TxIn {
                    previous_output: OutPoint {
                        txid: Txid::from_byte_array([*n; 32]),
                        vout: 0,
                    },
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs
                .iter()
                .map(|(n, v)| TxOut {
                    value: Sats::from_sat(*v),
                    script_pubkey: script(*n),
                })
                .collect(),
        }
    }

    /// Scripts 1–9 are hot, 10–19 cold, others foreign; input `n` spends a coin worth
    /// `n × 1000` on the same side as script `n`.
    fn value(t: &Transaction, conflicted: bool) -> Spend {
        let side = |n: u8| match n {
            1..=9 => Some(Side::Hot),
            10..=19 => Some(Side::Cold),
            _ => None,
        };
        let scripts: HashMap<ScriptBuf, Side> =
            (1..=19).filter_map(|n| Some((script(n), side(n)?))).collect();
        value_spend(
            NET,
            t,
            conflicted,
            |s| scripts.get(s).copied(),
            |op| {
                let n = op.txid.to_byte_array()[0];
                Ok(side(n).map(|s| (u64::from(n) * 1000, s)))
            },
        )
        .unwrap()
    }

    #[test]
    fn a_spend_of_hot_coins_loses_what_it_pays_others_plus_the_fee() {
        // Hot coins 5000 + 3000 in; 2000 to a stranger, 5500 back to hot change; fee 500.
        let s = value(&tx(&[5, 3], &[(30, 2000), (7, 5500)]), false);
        assert_eq!((s.ours_in, s.ours_out, s.foreign_out), (8000, 5500, 2000));
        assert_eq!(s.lost(), 2500);
        assert_eq!(s.left_hot(), 2500);
        assert_eq!(s.destinations.len(), 1);
        assert_eq!(s.foreign_inputs, 0);
        // The same, conflicted: it took nothing.
        let c = value(&tx(&[5, 3], &[(30, 2000), (7, 5500)]), true);
        assert_eq!((c.lost(), c.left_hot()), (0, 0));
    }

    #[test]
    fn hot_coins_moved_to_cold_leave_hot_but_custody_loses_only_the_fee() {
        let s = value(&tx(&[9], &[(12, 8600)]), false);
        assert_eq!(s.lost(), 400);
        assert_eq!(s.left_hot(), 9000);
        assert!(s.destinations.is_empty());
    }

    #[test]
    fn a_stranger_paying_part_does_not_count_as_our_loss() {
        // Our 4000 and a stranger's 60_000 in; 63_000 to the stranger: we lost our 4000.
        let s = value(&tx(&[4, 60], &[(31, 63_000)]), false);
        assert_eq!((s.ours_in, s.foreign_inputs), (4000, 1));
        assert_eq!(s.lost(), 4000);
    }

    #[test]
    fn the_hot_check_alarms_only_on_a_shortfall() {
        // Deposits credited 10_000; a withdrawal of 3000 broadcast, fee 200 booked; change
        // 6800 on the node; a pending deposit of 500 on the node too.
        let ok = HotCheck {
            ledger_hot: 9800,
            withdrawals_in_flight: 3000,
            signed_unrecorded: 0,
            node_hot: 6800 + 500,
            node_pending_deposits: 500,
        };
        assert_eq!((ok.expected(), ok.held(), ok.shortfall()), (6800, 6800, 0));
        // A deposit not scanned yet: a surplus, no alarm.
        assert_eq!(HotCheck { node_hot: 9000, ..ok }.shortfall(), 0);
        // A pending deposit evicted from the mempool: neither side counts it.
        assert_eq!(
            HotCheck {
                node_hot: 6800,
                node_pending_deposits: 0,
                ..ok
            }
            .shortfall(),
            0
        );
        // 1000 gone.
        assert_eq!(HotCheck { node_hot: 6300, ..ok }.shortfall(), 1000);
        // A withdrawal signed, maybe broadcast, not recorded: counted as gone.
        let signed = HotCheck {
            ledger_hot: 9800,
            withdrawals_in_flight: 0,
            signed_unrecorded: 3200,
            node_hot: 6600,
            node_pending_deposits: 0,
        };
        assert_eq!(signed.shortfall(), 0);
        assert_eq!(
            HotCheck {
                node_hot: 9800,
                ..signed
            }
            .shortfall(),
            0
        );
        // Explained by an incident already: nothing new.
        assert_eq!(unexplained(1000, 1000), 0);
        assert_eq!(unexplained(1000, 400), 600);
        assert_eq!(unexplained(0, 400), 0);
    }

    #[test]
    fn the_reserve_check_needs_customer_funds_on_the_node() {
        // Customers hold 10_000 of which 1000 is a pending deposit (on the node).
        let r = ReserveCheck {
            liabilities: 10_000,
            deposits_in_flight: 1000,
            signed_unrecorded: 0,
            node_hot: 1500 + 1000,
            node_pending_deposits: 1000,
            node_cold: 7500,
        };
        assert_eq!((r.required(), r.held(), r.shortfall()), (9000, 9000, 0));
        // Company funds on top: a surplus.
        assert_eq!(ReserveCheck { node_cold: 8000, ..r }.shortfall(), 0);
        // Cold drained by 2000.
        assert_eq!(ReserveCheck { node_cold: 5500, ..r }.shortfall(), 2000);
        // A miner fee of 200 paid with customers' coins.
        assert_eq!(ReserveCheck { node_hot: 2300, ..r }.shortfall(), 200);
        // A withdrawal of 300 + 20 signed and broadcast, not recorded yet: still covered.
        assert_eq!(
            ReserveCheck {
                node_hot: 2180,
                signed_unrecorded: 320,
                ..r
            }
            .shortfall(),
            0
        );
    }
}
