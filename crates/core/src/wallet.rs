//! Customer money on chain: deposit addresses, deposits, withdrawal addresses (a whitelist with
//! a cooling period) and withdrawals.
//!
//! The wallet records what happened and moves money in the ledger; it does not talk to chains.
//! Chain watchers report deposits and broadcasts as commands, so a replay explains every coin:
//!
//! - A deposit is first `Pending` (seen, not yet final): deposits in flight (custody on its way
//!   in, debit-normal) → customer, with the same amount held on the customer so it shows but
//!   cannot be spent. Once confirmed it is `Credited`: the hold is voided and hot wallet ← deposits
//!   in flight. A pending deposit that leaves the chain (reorg) is `Dropped`: hold voided, credit
//!   reversed. A credited deposit that leaves the chain is `Reversed`: the customer is debited
//!   what is available and the rest goes to suspense (an open risk item), against the hot wallet.
//! - A withdrawal request holds `amount` (customer → withdrawals in flight) and `fee` (customer →
//!   fee revenue) in one linked pair. Cancelling or failing voids both holds. `Signing` (the
//!   custody service has taken it to the signer) can no longer be cancelled by the customer.
//!   Broadcasting posts both holds (the customer is debited) and books the miner fee (network
//!   fees ← hot wallet). Confirmation moves withdrawals in flight → hot wallet, which lowers
//!   custody by what left on chain.
//! - Custody moves between hot and cold (sweeps, refills) move the amount between the two
//!   custody accounts and book their miner fee.
//! - Every miner fee (network fees ← custody) is paid, in the same linked chain, out of company
//!   funds as far as they go: debit fee revenue (a withdrawal's own fee first), then the company
//!   treasury, crediting network fees. What stays in network fees was paid with customers'
//!   coins. A reversal gives each part back where it was charged.
//! - A deposit to the company's own address credits the company treasury (company treasury ←
//!   hot wallet), once per output: company funds in the asset, never a customer's.
//! - Record, then broadcast: a withdrawal's signed transaction (txid and raw hex) is recorded
//!   (`Signed`: the holds are posted, the miner fee booked) before the custody service sends it,
//!   so nothing the engine refused is ever on the network; `Broadcast` then only notes that it
//!   was sent. Custody moves are recorded with their raw transaction the same way.
//! - A recorded transaction that leaves the chain (conflicted by a reorg, even after
//!   `Completed`) is reverted: the withdrawal becomes `Reverted` and the customer is credited
//!   back amount and fee (what fee revenue cannot return comes from suspense, an open risk
//!   item); a custody move becomes `Reverted` and its amount and fee go back. The engine opens
//!   an incident in the same command. A reverted withdrawal is never re-sent by itself: the
//!   customer asks again (with a fresh second factor) once operators have looked.
//! - A withdrawal goes only to a whitelisted address of the same user and asset whose cooling
//!   period is over.

use crate::asset::Asset;
use crate::ledger::{
    InvariantViolation, Ledger, LedgerEvent, Owner, SystemAccount, TransferKind, TransferRequest,
};
use crate::money::{AccountId, Amount, AssetId, TransferId, UserId};
use crate::reject::Reject;
use crate::risk::Decision;
use crate::trading::ENGINE_TRANSFER_ID_MIN;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const ADDRESS_LEN_MAX: usize = 128;
pub const TXID_LEN_MAX: usize = 128;
/// A signed transaction's hex, at most (a 200 kB transaction; ours are a few hundred bytes).
pub const RAW_TX_LEN_MAX: usize = 400_000;
pub const LABEL_LEN_MAX: usize = 64;
pub const DEPOSIT_ADDRESSES_PER_ACCOUNT_MAX: usize = 64;
pub const WITHDRAWAL_ADDRESSES_PER_USER_MAX: usize = 256;
/// Withdrawals one user may have in `Requested` or `Broadcast` at once.
pub const WITHDRAWALS_OPEN_PER_USER_MAX: usize = 64;

/// Ledger codes (`TransferRequest::code`) for wallet movements.
pub const TRANSFER_CODE_DEPOSIT: u16 = 100;
pub const TRANSFER_CODE_WITHDRAWAL: u16 = 200;
pub const TRANSFER_CODE_WITHDRAWAL_FEE: u16 = 201;
pub const TRANSFER_CODE_WITHDRAWAL_SETTLE: u16 = 202;
pub const TRANSFER_CODE_NETWORK_FEE: u16 = 203;
pub const TRANSFER_CODE_DEPOSIT_PENDING: u16 = 101;
pub const TRANSFER_CODE_DEPOSIT_REVERSAL: u16 = 102;
pub const TRANSFER_CODE_CUSTODY_MOVE: u16 = 300;
/// Custody moves recorded, at most (each is a sweep or a refill transaction).
pub const CUSTODY_MOVES_MAX: usize = 1 << 20;

/// Engine-reserved transfer ids of wallet movements: bit 127 (engine) and bit 126 (wallet), then
/// the movement kind and the deposit or withdrawal id. Trade busts use bit 127 with a market id
/// below 2^32 at bit 80, so the ranges never meet.
fn transfer_id(kind: u128, id: u64) -> TransferId {
    TransferId(ENGINE_TRANSFER_ID_MIN | (1 << 126) | (kind << 120) | (u128::from(id) << 4))
}
const KIND_DEPOSIT: u128 = 1;
const KIND_WITHDRAWAL: u128 = 2;
const KIND_WITHDRAWAL_FEE: u128 = 3;
const KIND_WITHDRAWAL_SETTLE: u128 = 4;
const KIND_DEPOSIT_PENDING: u128 = 5;
const KIND_DEPOSIT_HOLD: u128 = 6;
const KIND_DEPOSIT_DROP: u128 = 7;
const KIND_WITHDRAWAL_NETWORK_FEE: u128 = 8;
const KIND_CUSTODY_MOVE: u128 = 9;
const KIND_CUSTODY_MOVE_FEE: u128 = 10;
const KIND_DEPOSIT_REVERSAL: u128 = 11;
const KIND_DEPOSIT_SHORTFALL: u128 = 12;
const KIND_DEPOSIT_REVERSAL_COLD: u128 = 13;
const KIND_DEPOSIT_SHORTFALL_COLD: u128 = 14;
const KIND_WITHDRAWAL_REVERT: u128 = 15;
const KIND_WITHDRAWAL_FEE_REVERT: u128 = 16;
const KIND_WITHDRAWAL_FEE_SHORTFALL: u128 = 17;
const KIND_WITHDRAWAL_NETWORK_FEE_REVERT: u128 = 18;
const KIND_CUSTODY_MOVE_REVERT: u128 = 19;
const KIND_CUSTODY_MOVE_FEE_REVERT: u128 = 20;
/// A miner fee charged to company funds (fee revenue, then the treasury), and its return.
const KIND_WITHDRAWAL_MINER_FEE_FROM_REVENUE: u128 = 21;
const KIND_WITHDRAWAL_MINER_FEE_FROM_TREASURY: u128 = 22;
const KIND_CUSTODY_MOVE_FEE_FROM_REVENUE: u128 = 23;
const KIND_CUSTODY_MOVE_FEE_FROM_TREASURY: u128 = 24;
const KIND_WITHDRAWAL_MINER_FEE_REVENUE_BACK: u128 = 25;
const KIND_WITHDRAWAL_MINER_FEE_TREASURY_BACK: u128 = 26;
const KIND_CUSTODY_MOVE_FEE_REVENUE_BACK: u128 = 27;
const KIND_CUSTODY_MOVE_FEE_TREASURY_BACK: u128 = 28;
const KIND_COMPANY_DEPOSIT: u128 = 29;
const KIND_GAS: u128 = 30;
const KIND_GAS_FROM_REVENUE: u128 = 31;
const KIND_GAS_FROM_TREASURY: u128 = 32;

/// The transfer id of a gas booking of kind `kind` for the transaction `hash`: 112 bits of the
/// hash in place of a record number (a gas booking has no record of its own: the ledger's
/// transfer is it). `user_data` of the main leg holds the rest of the hash and the asset moved
/// ([`gas_user_data`]), so a booking is found again exactly.
fn gas_transfer_id(kind: u128, hash: &[u8; 32]) -> TransferId {
    let mut w = [0u8; 16];
    w[2..].copy_from_slice(&hash[..14]);
    TransferId(ENGINE_TRANSFER_ID_MIN | (1 << 126) | (kind << 120) | (u128::from_be_bytes(w) << 4))
}

fn gas_user_data(hash: &[u8; 32], for_asset: AssetId) -> u128 {
    let mut w = [0u8; 16];
    w[..12].copy_from_slice(&hash[14..26]);
    w[12..].copy_from_slice(&for_asset.0.to_be_bytes());
    u128::from_be_bytes(w)
}

/// An EVM transaction hash as the engine takes it: `0x` and 64 lowercase hex digits.
fn evm_tx_hash(txid: &str) -> Option<[u8; 32]> {
    let hex = txid.strip_prefix("0x")?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
/// Ledger code of the legs that charge a miner fee to company funds (network fees ← fee
/// revenue, network fees ← company treasury).
pub const TRANSFER_CODE_MINER_FEE_COVERED: u16 = 205;
/// Ledger code of a deposit to the company's own address (company treasury ← hot wallet).
pub const TRANSFER_CODE_COMPANY_DEPOSIT: u16 = 103;
/// Company deposits recorded, at most.
pub const COMPANY_DEPOSITS_MAX: usize = 1 << 20;
/// Ledger code of the legs that undo a withdrawal or custody move whose transaction left the chain.
pub const TRANSFER_CODE_TX_REVERTED: u16 = 204;
/// Ledger code of gas booked for a transaction ([`Wallet::record_gas`]: network fees ← hot
/// wallet; its `user_data` names the transaction and the asset it moved).
pub const TRANSFER_CODE_GAS: u16 = 206;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DepositId(pub u64);
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WithdrawalId(pub u64);
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AddressId(pub u64);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositAddress {
    pub user: UserId,
    pub asset: AssetId,
    pub address: String,
    pub created_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DepositStatus {
    Pending,
    Credited,
    Dropped,
    /// Credited, then gone from the chain: reversed (see [`Deposit::shortfall`]).
    Reversed,
}

impl DepositStatus {
    pub fn name(self) -> &'static str {
        match self {
            DepositStatus::Pending => "pending",
            DepositStatus::Credited => "credited",
            DepositStatus::Dropped => "dropped",
            DepositStatus::Reversed => "reversed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposit {
    pub id: DepositId,
    pub user: UserId,
    pub asset: AssetId,
    pub address: String,
    pub txid: String,
    pub vout: u32,
    pub amount: Amount,
    pub status: DepositStatus,
    /// For a reversed deposit: what the customer no longer had (already spent or withdrawn),
    /// booked to suspense. Non-zero is an open risk item for operators.
    pub shortfall: Amount,
    /// For a reversed deposit: the part taken out of the cold wallet because the hot wallet
    /// (already swept) held less than the deposit.
    pub reversed_from_cold: Amount,
    pub seen_ns: u64,
    pub updated_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalAddress {
    pub id: AddressId,
    pub user: UserId,
    pub asset: AssetId,
    pub address: String,
    pub label: String,
    pub created_ns: u64,
    /// Withdrawals to this address are refused before this time (the cooling period).
    pub usable_at_ns: u64,
    pub removed: bool,
    /// The user's proof that approved it (none when an operator added it), kept for the
    /// signer, which accepts the address only with a proof it verifies itself.
    pub approval: Option<crate::identity::StepUp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WithdrawalStatus {
    /// Funds held; passed the risk check, waiting to be signed and broadcast.
    Requested,
    /// Funds held; a risk rule delayed it until `not_before_ns`.
    Waiting,
    /// Funds held; a risk rule sent it to reviewers.
    Review,
    /// Funds held; reviewers approved it.
    Approved,
    /// Taken to the signer: funds still held, no longer cancellable by the customer.
    Signing,
    /// Its signed transaction is recorded (txid and raw hex) and not yet known to be on the
    /// network; the customer has been debited. Only this recorded transaction is ever sent.
    Signed,
    /// On chain, waiting for confirmations; the customer has been debited.
    Broadcast,
    /// At the finality depth. Still watched: a deeper reorg reverts it.
    Completed,
    Cancelled,
    /// Refused after the request (by the signer or an operator); the hold was released.
    Failed,
    /// Its recorded transaction left the chain (conflicted) after it was recorded, possibly
    /// after `Completed`: the customer was credited back (see [`Withdrawal::shortfall`]) and an
    /// incident opened. Never re-sent automatically.
    Reverted,
}

impl WithdrawalStatus {
    pub fn is_open(self) -> bool {
        self.is_held() || matches!(self, WithdrawalStatus::Signed | WithdrawalStatus::Broadcast)
    }
    /// Whether a transaction of it is recorded and may be on chain (watched for reorgs).
    pub fn has_tx(self) -> bool {
        matches!(
            self,
            WithdrawalStatus::Signed | WithdrawalStatus::Broadcast | WithdrawalStatus::Completed
        )
    }
    /// Whether the request's funds are still held (not yet debited).
    pub fn is_held(self) -> bool {
        self.cancellable() || self == WithdrawalStatus::Signing
    }
    /// Whether the customer may still cancel (until it goes to the signer).
    pub fn cancellable(self) -> bool {
        matches!(
            self,
            WithdrawalStatus::Requested
                | WithdrawalStatus::Waiting
                | WithdrawalStatus::Review
                | WithdrawalStatus::Approved
        )
    }
    pub fn name(self) -> &'static str {
        match self {
            WithdrawalStatus::Requested => "requested",
            WithdrawalStatus::Waiting => "waiting",
            WithdrawalStatus::Review => "review",
            WithdrawalStatus::Approved => "approved",
            WithdrawalStatus::Signing => "signing",
            WithdrawalStatus::Signed => "signed",
            WithdrawalStatus::Broadcast => "broadcast",
            WithdrawalStatus::Completed => "completed",
            WithdrawalStatus::Cancelled => "cancelled",
            WithdrawalStatus::Failed => "failed",
            WithdrawalStatus::Reverted => "reverted",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub id: WithdrawalId,
    pub user: UserId,
    pub asset: AssetId,
    pub address_id: AddressId,
    pub address: String,
    pub amount: Amount,
    pub fee: Amount,
    pub client_id: Option<u128>,
    /// The second-factor proof that authorised it, kept for the signer to verify again.
    pub proof: Option<crate::identity::StepUp>,
    pub status: WithdrawalStatus,
    pub txid: Option<String>,
    /// The signed transaction (lowercase hex), recorded before it is broadcast: the only
    /// transaction ever sent for this withdrawal, re-sent as is after a crash.
    pub raw_tx: Option<String>,
    /// For a reverted withdrawal: the part of its fee that fee revenue could not return and
    /// suspense paid instead (an open risk item).
    pub shortfall: Amount,
    /// The miner fee of its transaction (booked to network fees when broadcast).
    pub network_fee: Amount,
    /// The risk rule that decided (none: no rule matched).
    pub risk: Option<Box<crate::risk::RiskVerdict>>,
    /// Not to be signed before this time (a `delay` decision).
    pub not_before_ns: u64,
    /// Reviewers who approved it (held for review), and how many it needs.
    pub approvals: Vec<UserId>,
    pub approvals_needed: u8,
    /// Each approval's proof, in the order of `approvals`: the signer checks them again.
    pub approval_proofs: Vec<crate::identity::StepUp>,
    /// When it went to the signer (counts toward the hourly hot-wallet outflow cap).
    pub signing_ns: u64,
    pub reason: Option<String>,
    pub requested_ns: u64,
    pub updated_ns: u64,
}

impl Withdrawal {
    /// The step-up action a reviewer approves (or rejects) for this withdrawal: bound to its
    /// id, requester, asset, destination and amount.
    pub fn review_action(&self, reviewer: UserId, approve: bool) -> crate::identity::Action {
        crate::identity::Action::ReviewWithdrawal {
            user: reviewer,
            withdrawal: self.id.0,
            requester: self.user,
            asset: self.asset,
            address: self.address.clone(),
            amount: self.amount,
            approve,
        }
    }

    /// Whether the custody service may take it to the signer at `now_ns`: passed the risk check
    /// (or approved by reviewers), and any delay is over.
    pub fn ready_for_signing(&self, now_ns: u64) -> bool {
        match self.status {
            WithdrawalStatus::Requested | WithdrawalStatus::Approved => true,
            WithdrawalStatus::Waiting => now_ns >= self.not_before_ns,
            _ => false,
        }
    }
}

// A withdrawal record carries its step-up proof, so that variant is large; wallet events are a
// few per wallet command, off the trading hot path, so boxing it is not worth the churn.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalletEvent {
    DepositAddressAssigned {
        user: UserId,
        asset: AssetId,
        address: String,
    },
    DepositSeen(Deposit),
    DepositCredited(Deposit),
    DepositDropped(Deposit),
    DepositReversed(Deposit),
    CustodyMoved(Box<CustodyMove>),
    /// A deposit to the company's own address was credited to the company treasury.
    CompanyDeposited(CompanyDeposit),
    WithdrawalFeeSet {
        asset: AssetId,
        fee: Amount,
    },
    WithdrawalAddressAdded(Box<WithdrawalAddress>),
    WithdrawalAddressRemoved {
        user: UserId,
        id: AddressId,
    },
    /// A withdrawal changed state (the record after the change; boxed, so that events stay
    /// small on the trading path).
    Withdrawal(Box<Withdrawal>),
}

/// The wallet's persistent state, in canonical (sorted) form.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletState {
    pub deposit_addresses: Vec<DepositAddress>,
    pub deposits: Vec<Deposit>,
    pub withdrawal_fees: Vec<(AssetId, Amount)>,
    pub totp_budgets: Vec<(AssetId, Amount)>,
    pub withdrawal_addresses: Vec<WithdrawalAddress>,
    pub withdrawals: Vec<Withdrawal>,
    pub custody_moves: Vec<CustodyMove>,
    pub company_deposits: Vec<CompanyDeposit>,
}

/// Coins the company sent to its own deposit address of an asset (to fund miner fees and
/// other company costs): credited to the company treasury, never to a customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyDeposit {
    pub id: u64,
    pub asset: AssetId,
    pub txid: String,
    pub vout: u32,
    pub amount: Amount,
    pub credited_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustodyMoveKind {
    /// Hot → cold (excess over the hot wallet's limit).
    Sweep,
    /// Cold → hot (offline-signed by the cold keyholders).
    Refill,
}

impl CustodyMoveKind {
    pub fn name(self) -> &'static str {
        match self {
            CustodyMoveKind::Sweep => "sweep",
            CustodyMoveKind::Refill => "refill",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustodyMoveStatus {
    /// Booked; its transaction is (or is about to be) on the network.
    Recorded,
    /// Its transaction left the chain: the amount and fee went back (see
    /// [`CustodyMove::shortfall`]), an incident was opened.
    Reverted,
}

impl CustodyMoveStatus {
    pub fn name(self) -> &'static str {
        match self {
            CustodyMoveStatus::Recorded => "recorded",
            CustodyMoveStatus::Reverted => "reverted",
        }
    }
}

/// A movement of the exchange's own coins between hot and cold, recorded before it is
/// broadcast (with its signed transaction) or, for the older command, right after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodyMove {
    pub id: u64,
    pub asset: AssetId,
    pub kind: CustodyMoveKind,
    pub txid: String,
    pub amount: Amount,
    pub network_fee: Amount,
    pub recorded_ns: u64,
    pub status: CustodyMoveStatus,
    /// The signed transaction (lowercase hex), when recorded before broadcast.
    pub raw_tx: Option<String>,
    /// For a reverted move: the part of the amount the receiving wallet no longer held (an
    /// earlier reversal already took it), not moved back.
    pub shortfall: Amount,
    pub reason: Option<String>,
    pub updated_ns: u64,
}

/// What a customer may still withdraw of an asset under their tier's limits
/// ([`Wallet::limit_left`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitLeft {
    /// In the rolling 24 h.
    pub day: Amount,
    /// In the rolling 30 days.
    pub month: Amount,
}

/// What the engine decided about a request before the wallet records it.
#[derive(Clone, Debug, Default)]
pub struct RequestRisk {
    pub verdict: Option<crate::risk::RiskVerdict>,
    /// The account's limit for the asset (by tier), if one is set.
    pub limit: Option<crate::risk::TierLimit>,
    /// Held withdrawals at or above this need two approvals.
    pub dual_approval_from: Option<Amount>,
}

/// Whether two stored addresses are one destination for the shared-destination rule.
///
/// The gateway stores each chain's canonical form (its `ChainAdapter::canonical_address`:
/// bech32 in lower case, P2SH under the current prefix), which the core cannot compute: it
/// knows no chain's address format. What it can do without one is compare letter case
/// loosely: a bech32 address in upper case is the same address, and EIP-55 hex spells one
/// address in mixed case. Base58 is case-sensitive, so two distinct base58 addresses could in
/// principle differ only by case (both checksums would have to hold); merging them only
/// counts more accounts towards the rule, never fewer, so the rule can only get stricter.
/// The whitelist itself compares exactly: there, merging two addresses would pay the wrong one.
fn same_destination(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl crate::risk::History for Wallet {
    fn destination_users(&self, asset: AssetId, destination: &str, since_ns: u64, user: UserId) -> u32 {
        let mut users: Vec<UserId> = self
            .withdrawals
            .iter()
            .rev()
            .take_while(|w| w.requested_ns >= since_ns)
            .filter(|w| w.asset == asset && same_destination(&w.address, destination))
            .map(|w| w.user)
            .chain(std::iter::once(user))
            .collect();
        users.sort_unstable();
        users.dedup();
        users.len() as u32
    }
    fn requested_between(&self, asset: AssetId, from_ns: u64, to_ns: u64) -> (u64, u128) {
        self.withdrawals
            .iter()
            .rev()
            .skip_while(|w| w.requested_ns >= to_ns)
            .take_while(|w| w.requested_ns >= from_ns)
            .filter(|w| w.asset == asset)
            .fold((0, 0), |(n, v), w| (n + 1, v + w.amount.0))
    }
}

#[derive(Clone, Debug, Default)]
pub struct Wallet {
    deposit_addresses: Vec<DepositAddress>,
    address_owner: BTreeMap<(AssetId, String), usize>,
    addresses_of: BTreeMap<(UserId, AssetId), Vec<usize>>,
    deposits: Vec<Deposit>,
    deposit_by_output: BTreeMap<(AssetId, String, u32), DepositId>,
    withdrawal_fees: BTreeMap<AssetId, Amount>,
    totp_budgets: BTreeMap<AssetId, Amount>,
    withdrawal_addresses: Vec<WithdrawalAddress>,
    withdrawals: Vec<Withdrawal>,
    withdrawal_by_client: BTreeMap<(UserId, u128), WithdrawalId>,
    custody_moves: Vec<CustodyMove>,
    custody_move_by_txid: BTreeMap<(AssetId, String), u64>,
    company_deposits: Vec<CompanyDeposit>,
    company_deposit_by_output: BTreeMap<(AssetId, String, u32), usize>,
}

fn text_ok(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

/// A signed transaction as recorded: lowercase hex, whole bytes, bounded.
fn raw_tx_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= RAW_TX_LEN_MAX
        && s.len().is_multiple_of(2)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn reason_ok(reason: &str) -> bool {
    !reason.trim().is_empty() && reason.len() <= 1024
}

/// The customer account of `user` for `asset`, opened if missing.
fn customer(ledger: &mut Ledger, user: UserId, asset: AssetId) -> Result<AccountId, Reject> {
    ledger.open_account(asset, Owner::Customer(user))
}

fn first_error(results: Vec<Result<crate::ledger::TransferOutcome, Reject>>) -> Result<(), Reject> {
    match results
        .into_iter()
        .find_map(|r| r.err().filter(|e| *e != Reject::LinkedTransferFailed))
    {
        None => Ok(()),
        Some(Reject::InsufficientFunds) => Err(Reject::FundsInsufficient),
        Some(e) => Err(e),
    }
}

pub(crate) struct Ctx<'a> {
    pub ledger: &'a mut Ledger,
    pub assets: &'a [Asset],
    pub seq: u64,
    pub now_ns: u64,
    pub events: &'a mut Vec<WalletEvent>,
    pub ledger_events: &'a mut Vec<LedgerEvent>,
}

impl Ctx<'_> {
    fn asset(&self, id: AssetId) -> Result<&Asset, Reject> {
        self.assets.get(id.0 as usize).ok_or(Reject::AssetNotFound)
    }
    fn system(&self, asset: AssetId, which: SystemAccount) -> AccountId {
        let i = SystemAccount::ALL
            .iter()
            .position(|w| *w == which)
            .expect("every role has an account");
        self.assets[asset.0 as usize].system[i]
    }
    fn transfers(&mut self, requests: &[TransferRequest]) -> Result<(), Reject> {
        let r = self
            .ledger
            .create_transfers(self.seq, self.now_ns, requests, self.ledger_events);
        first_error(r)
    }
}

fn post(
    id: TransferId,
    debit: AccountId,
    credit: AccountId,
    amount: Amount,
    code: u16,
    linked: bool,
) -> TransferRequest {
    TransferRequest {
        id,
        kind: TransferKind::Post {
            debit,
            credit,
            amount,
        },
        linked,
        code,
        user_data: 0,
    }
}

impl Wallet {
    pub fn deposit_addresses(&self, user: UserId, asset: AssetId) -> Vec<&DepositAddress> {
        self.addresses_of
            .get(&(user, asset))
            .map(|v| v.iter().map(|&i| &self.deposit_addresses[i]).collect())
            .unwrap_or_default()
    }
    /// Who owns a deposit address.
    pub fn deposit_address_owner(&self, asset: AssetId, address: &str) -> Option<UserId> {
        self.address_owner
            .get(&(asset, address.to_owned()))
            .map(|&i| self.deposit_addresses[i].user)
    }
    pub fn deposit(&self, id: DepositId) -> Option<&Deposit> {
        self.deposits.get(usize::try_from(id.0.checked_sub(1)?).ok()?)
    }
    pub fn deposits(&self) -> &[Deposit] {
        &self.deposits
    }
    pub fn deposit_by_output(&self, asset: AssetId, txid: &str, vout: u32) -> Option<DepositId> {
        self.deposit_by_output
            .get(&(asset, txid.to_owned(), vout))
            .copied()
    }
    /// The one rule for a withdrawal request repeated under the same client id: `None` when
    /// `client_id` names no earlier request of `user` (a new request); the original when the
    /// retry asks for the same address and amount (answered without a new proof or new
    /// checks); `DUPLICATE_CLIENT_WITHDRAWAL_ID` otherwise. The engine and the gateway both ask
    /// this.
    pub fn withdrawal_retry(
        &self,
        user: UserId,
        client_id: Option<u128>,
        address_id: AddressId,
        amount: Amount,
    ) -> Option<Result<&Withdrawal, Reject>> {
        let id = self.withdrawal_by_client(user, client_id?)?;
        let w = self.withdrawal(id).expect("indexed withdrawal exists");
        Some(if w.address_id == address_id && w.amount == amount {
            Ok(w)
        } else {
            Err(Reject::DuplicateClientWithdrawalId)
        })
    }
    pub fn withdrawal_fee(&self, asset: AssetId) -> Amount {
        self.withdrawal_fees.get(&asset).copied().unwrap_or(Amount(0))
    }
    pub fn withdrawal_address(&self, id: AddressId) -> Option<&WithdrawalAddress> {
        self.withdrawal_addresses
            .get(usize::try_from(id.0.checked_sub(1)?).ok()?)
    }
    /// Every withdrawal address ever added (removed ones included), in id order.
    pub fn withdrawal_addresses_all(&self) -> &[WithdrawalAddress] {
        &self.withdrawal_addresses
    }
    pub fn withdrawal_addresses_of(&self, user: UserId) -> Vec<&WithdrawalAddress> {
        self.withdrawal_addresses
            .iter()
            .filter(|a| a.user == user && !a.removed)
            .collect()
    }
    /// The step-up action a withdrawal request stands for, from the wallet's own record of the
    /// address (what its second-factor proof must name).
    pub fn withdrawal_action(
        &self,
        user: UserId,
        address: AddressId,
        amount: Amount,
        client_id: Option<u128>,
    ) -> Result<crate::identity::Action, Reject> {
        let a = self
            .withdrawal_address(address)
            .filter(|a| a.user == user && !a.removed)
            .ok_or(Reject::WithdrawalAddressNotFound)?;
        Ok(crate::identity::Action::Withdraw {
            user,
            asset: a.asset,
            address_id: address.0,
            destination: a.address.clone(),
            amount,
            client_id,
        })
    }

    /// What `user` asked to withdraw of `asset` since `since_ns`, not counting cancelled or
    /// failed requests (scans back from the newest; requests are in time order).
    pub fn withdrawn_since(&self, user: UserId, asset: AssetId, since_ns: u64) -> u128 {
        self.withdrawals
            .iter()
            .rev()
            .take_while(|w| w.requested_ns >= since_ns)
            .filter(|w| w.user == user && w.asset == asset)
            .filter(|w| {
                !matches!(
                    w.status,
                    WithdrawalStatus::Cancelled | WithdrawalStatus::Failed | WithdrawalStatus::Reverted
                )
            })
            .fold(0u128, |a, w| a.saturating_add(w.amount.0))
    }

    /// What `user` may still withdraw of `asset` at `now_ns` under `limit`: its 24 h and 30-day
    /// maxima less every withdrawal in the window not cancelled, failed or reverted (pending
    /// ones count). The one computation both the request check and the customer's view use.
    pub fn limit_left(
        &self,
        user: UserId,
        asset: AssetId,
        limit: &crate::risk::TierLimit,
        now_ns: u64,
    ) -> LimitLeft {
        let day = self.withdrawn_since(user, asset, now_ns.saturating_sub(crate::risk::DAY_NS));
        let month = self.withdrawn_since(user, asset, now_ns.saturating_sub(crate::risk::MONTH_NS));
        LimitLeft {
            day: Amount(limit.day_max.0.saturating_sub(day)),
            month: Amount(limit.month_max.0.saturating_sub(month)),
        }
    }

    /// What went to the signer for `asset` since `since_ns` (the hot wallet's recent outflow).
    pub fn signed_since(&self, asset: AssetId, since_ns: u64) -> u128 {
        self.withdrawals
            .iter()
            .rev()
            .take_while(|w| w.requested_ns >= since_ns.saturating_sub(crate::risk::MONTH_NS))
            .filter(|w| w.asset == asset && w.signing_ns >= since_ns && w.signing_ns > 0)
            .filter(|w| {
                matches!(
                    w.status,
                    WithdrawalStatus::Signing
                        | WithdrawalStatus::Signed
                        | WithdrawalStatus::Broadcast
                        | WithdrawalStatus::Completed
                )
            })
            .fold(0u128, |a, w| a.saturating_add(w.amount.0))
    }

    pub fn withdrawal(&self, id: WithdrawalId) -> Option<&Withdrawal> {
        self.withdrawals.get(usize::try_from(id.0.checked_sub(1)?).ok()?)
    }
    pub fn withdrawals(&self) -> &[Withdrawal] {
        &self.withdrawals
    }
    pub fn withdrawal_by_client(&self, user: UserId, client: u128) -> Option<WithdrawalId> {
        self.withdrawal_by_client.get(&(user, client)).copied()
    }

    pub(crate) fn assign_deposit_address(
        &mut self,
        cx: &mut Ctx<'_>,
        user: UserId,
        asset: AssetId,
        address: &str,
    ) -> Result<(), Reject> {
        let a = cx.asset(asset)?;
        if !a.switches.deposits {
            return Err(Reject::DepositsDisabled);
        }
        if !text_ok(address, ADDRESS_LEN_MAX) {
            return Err(Reject::AddressInvalid);
        }
        if let Some(&i) = self.address_owner.get(&(asset, address.to_owned())) {
            return if self.deposit_addresses[i].user == user {
                Ok(())
            } else {
                Err(Reject::AddressTaken)
            };
        }
        let mine = self.addresses_of.entry((user, asset)).or_default();
        if mine.len() >= DEPOSIT_ADDRESSES_PER_ACCOUNT_MAX {
            return Err(Reject::LimitExceeded);
        }
        customer(cx.ledger, user, asset)?;
        let i = self.deposit_addresses.len();
        mine.push(i);
        self.deposit_addresses.push(DepositAddress {
            user,
            asset,
            address: address.to_owned(),
            created_ns: cx.now_ns,
        });
        self.address_owner.insert((asset, address.to_owned()), i);
        cx.events.push(WalletEvent::DepositAddressAssigned {
            user,
            asset,
            address: address.to_owned(),
        });
        Ok(())
    }

    /// Records a deposit seen on chain (idempotent per output): deposits in flight → customer,
    /// held on the customer until confirmed.
    pub(crate) fn deposit_seen(
        &mut self,
        cx: &mut Ctx<'_>,
        asset: AssetId,
        address: &str,
        txid: &str,
        vout: u32,
        amount: Amount,
    ) -> Result<DepositId, Reject> {
        cx.asset(asset)?;
        if !text_ok(txid, TXID_LEN_MAX) {
            return Err(Reject::TxidInvalid);
        }
        if amount.0 == 0 {
            return Err(Reject::AmountZero);
        }
        let &i = self
            .address_owner
            .get(&(asset, address.to_owned()))
            .ok_or(Reject::AddressUnknown)?;
        if let Some(id) = self.deposit_by_output(asset, txid, vout) {
            let d = self.deposit(id).expect("indexed deposit exists");
            return if d.amount == amount && d.address == address {
                Ok(id)
            } else {
                Err(Reject::DepositConflict)
            };
        }
        let id = DepositId(self.deposits.len() as u64 + 1);
        let user = self.deposit_addresses[i].user;
        let account = customer(cx.ledger, user, asset)?;
        let in_flight = cx.system(asset, SystemAccount::DepositsInFlight);
        cx.transfers(&[
            post(
                transfer_id(KIND_DEPOSIT_PENDING, id.0),
                in_flight,
                account,
                amount,
                TRANSFER_CODE_DEPOSIT_PENDING,
                true,
            ),
            TransferRequest {
                id: transfer_id(KIND_DEPOSIT_HOLD, id.0),
                kind: TransferKind::Hold {
                    debit: account,
                    credit: in_flight,
                    amount,
                    timeout_ns: 0,
                },
                linked: false,
                code: TRANSFER_CODE_DEPOSIT_PENDING,
                user_data: u128::from(id.0),
            },
        ])?;
        let d = Deposit {
            id,
            user,
            asset,
            address: address.to_owned(),
            txid: txid.to_owned(),
            vout,
            amount,
            status: DepositStatus::Pending,
            shortfall: Amount(0),
            reversed_from_cold: Amount(0),
            seen_ns: cx.now_ns,
            updated_ns: cx.now_ns,
        };
        self.deposit_by_output.insert((asset, txid.to_owned(), vout), id);
        cx.events.push(WalletEvent::DepositSeen(d.clone()));
        self.deposits.push(d);
        Ok(id)
    }

    fn deposit_mut(&mut self, id: DepositId) -> Result<&mut Deposit, Reject> {
        self.deposits
            .get_mut(usize::try_from(id.0.wrapping_sub(1)).unwrap_or(usize::MAX))
            .ok_or(Reject::DepositNotFound)
    }

    fn void_deposit_hold(id: DepositId, linked: bool) -> TransferRequest {
        TransferRequest {
            id: TransferId(transfer_id(KIND_DEPOSIT_HOLD, id.0).0 | 0b1),
            kind: TransferKind::VoidPending {
                pending: transfer_id(KIND_DEPOSIT_HOLD, id.0),
            },
            linked,
            code: TRANSFER_CODE_DEPOSIT,
            user_data: u128::from(id.0),
        }
    }

    fn set_deposit_status(&mut self, cx: &mut Ctx<'_>, id: DepositId, status: DepositStatus) -> Deposit {
        let rec = &mut self.deposits[(id.0 - 1) as usize];
        rec.status = status;
        rec.updated_ns = cx.now_ns;
        rec.clone()
    }

    /// Credits a pending deposit: the customer's hold is released and the coins count as hot
    /// wallet. Crediting twice is a no-op.
    pub(crate) fn deposit_confirmed(&mut self, cx: &mut Ctx<'_>, id: DepositId) -> Result<(), Reject> {
        let d = self.deposit(id).ok_or(Reject::DepositNotFound)?.clone();
        if d.status == DepositStatus::Pending && !cx.asset(d.asset)?.switches.deposits {
            // Deposits halted: seen and held, credited once resumed.
            return Err(Reject::DepositsDisabled);
        }
        match d.status {
            DepositStatus::Credited => return Ok(()),
            DepositStatus::Dropped | DepositStatus::Reversed => return Err(Reject::DepositStateInvalid),
            DepositStatus::Pending => {}
        }
        let hot = cx.system(d.asset, SystemAccount::HotWallet);
        let in_flight = cx.system(d.asset, SystemAccount::DepositsInFlight);
        cx.transfers(&[
            Self::void_deposit_hold(id, true),
            post(
                transfer_id(KIND_DEPOSIT, id.0),
                hot,
                in_flight,
                d.amount,
                TRANSFER_CODE_DEPOSIT,
                false,
            ),
        ])?;
        let rec = self.set_deposit_status(cx, id, DepositStatus::Credited);
        cx.events.push(WalletEvent::DepositCredited(rec));
        Ok(())
    }

    /// A pending deposit left the chain before it was final: its hold and credit are undone.
    pub(crate) fn deposit_dropped(&mut self, cx: &mut Ctx<'_>, id: DepositId) -> Result<(), Reject> {
        let d = self.deposit_mut(id)?.clone();
        match d.status {
            DepositStatus::Dropped => return Ok(()),
            DepositStatus::Credited | DepositStatus::Reversed => return Err(Reject::DepositStateInvalid),
            DepositStatus::Pending => {}
        }
        let account = customer(cx.ledger, d.user, d.asset)?;
        let in_flight = cx.system(d.asset, SystemAccount::DepositsInFlight);
        cx.transfers(&[
            Self::void_deposit_hold(id, true),
            post(
                transfer_id(KIND_DEPOSIT_DROP, id.0),
                account,
                in_flight,
                d.amount,
                TRANSFER_CODE_DEPOSIT_REVERSAL,
                false,
            ),
        ])?;
        let rec = self.set_deposit_status(cx, id, DepositStatus::Dropped);
        cx.events.push(WalletEvent::DepositDropped(rec));
        Ok(())
    }

    /// A credited deposit left the chain (a reorg deeper than the confirmation target): the hot
    /// wallet no longer has the coins. The customer is debited what is still available; the rest
    /// (already traded or withdrawn) is booked to suspense and stays an open risk item.
    pub(crate) fn deposit_reversed(&mut self, cx: &mut Ctx<'_>, id: DepositId) -> Result<(), Reject> {
        let d = self.deposit_mut(id)?.clone();
        match d.status {
            DepositStatus::Reversed => return Ok(()),
            DepositStatus::Pending | DepositStatus::Dropped => return Err(Reject::DepositStateInvalid),
            DepositStatus::Credited => {}
        }
        let account = customer(cx.ledger, d.user, d.asset)?;
        let available = cx.ledger.account(account).map_or(0, |a| a.available());
        let take = Amount(d.amount.0.min(available));
        let shortfall = Amount(d.amount.0 - take.0);
        let hot = cx.system(d.asset, SystemAccount::HotWallet);
        let cold = cx.system(d.asset, SystemAccount::ColdWallet);
        let suspense = cx.system(d.asset, SystemAccount::Suspense);
        // The coins are gone from custody: from the hot wallet, or, if it was swept meanwhile,
        // partly from cold.
        let hot_has = cx.ledger.account(hot).map_or(0, |a| a.available());
        let from_cold = Amount(d.amount.0.saturating_sub(hot_has));
        // The customer's part comes out of hot first; what hot lacks comes out of cold.
        let hot_part = d.amount.0 - from_cold.0;
        let cust_hot = take.0.min(hot_part);
        let cust_cold = take.0 - cust_hot;
        let susp_hot = hot_part - cust_hot;
        let susp_cold = from_cold.0 - cust_cold;
        let legs = [
            (KIND_DEPOSIT_REVERSAL, account, hot, cust_hot),
            (KIND_DEPOSIT_REVERSAL_COLD, account, cold, cust_cold),
            (KIND_DEPOSIT_SHORTFALL, suspense, hot, susp_hot),
            (KIND_DEPOSIT_SHORTFALL_COLD, suspense, cold, susp_cold),
        ];
        cx.transfers(&linked_posts(id.0, TRANSFER_CODE_DEPOSIT_REVERSAL, &legs))?;
        self.deposit_mut(id)?.shortfall = shortfall;
        self.deposit_mut(id)?.reversed_from_cold = from_cold;
        let rec = self.set_deposit_status(cx, id, DepositStatus::Reversed);
        cx.events.push(WalletEvent::DepositReversed(rec));
        Ok(())
    }

    /// Reversed deposits whose customer had already used the funds: money the exchange is
    /// missing until an operator resolves it.
    pub fn open_risk_items(&self) -> impl Iterator<Item = &Deposit> {
        self.deposits
            .iter()
            .filter(|d| d.status == DepositStatus::Reversed && d.shortfall.0 > 0)
    }

    /// How many deposit addresses exist for `asset` (the next derivation index).
    pub fn deposit_address_count(&self, asset: AssetId) -> usize {
        self.deposit_addresses.iter().filter(|a| a.asset == asset).count()
    }

    /// Every deposit address of `asset`, in the order they were assigned.
    pub fn deposit_addresses_of_asset(&self, asset: AssetId) -> impl Iterator<Item = &DepositAddress> + '_ {
        self.deposit_addresses.iter().filter(move |a| a.asset == asset)
    }

    pub fn custody_moves(&self) -> &[CustodyMove] {
        &self.custody_moves
    }

    /// Records a hot/cold movement (idempotent per transaction), with its signed transaction
    /// when recorded before the broadcast.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn custody_move(
        &mut self,
        cx: &mut Ctx<'_>,
        asset: AssetId,
        kind: CustodyMoveKind,
        txid: &str,
        raw_tx: Option<&str>,
        amount: Amount,
        network_fee: Amount,
    ) -> Result<CustodyMove, Reject> {
        cx.asset(asset)?;
        if !text_ok(txid, TXID_LEN_MAX) {
            return Err(Reject::TxidInvalid);
        }
        if raw_tx.is_some_and(|r| !raw_tx_ok(r)) {
            return Err(Reject::RawTxInvalid);
        }
        if amount.0 == 0 {
            return Err(Reject::AmountZero);
        }
        if let Some(&i) = self.custody_move_by_txid.get(&(asset, txid.to_owned())) {
            let m = &self.custody_moves[(i - 1) as usize];
            return if m.kind == kind && m.amount == amount && m.network_fee == network_fee {
                Ok(m.clone())
            } else {
                Err(Reject::DepositConflict)
            };
        }
        if self.custody_moves.len() >= CUSTODY_MOVES_MAX {
            return Err(Reject::LimitExceeded);
        }
        let id = self.custody_moves.len() as u64 + 1;
        let hot = cx.system(asset, SystemAccount::HotWallet);
        let cold = cx.system(asset, SystemAccount::ColdWallet);
        let fees = cx.system(asset, SystemAccount::NetworkFees);
        let (to, from) = match kind {
            CustodyMoveKind::Sweep => (cold, hot),
            CustodyMoveKind::Refill => (hot, cold),
        };
        let mut legs = vec![post(
            transfer_id(KIND_CUSTODY_MOVE, id),
            to,
            from,
            amount,
            TRANSFER_CODE_CUSTODY_MOVE,
            network_fee.0 > 0,
        )];
        if network_fee.0 > 0 {
            legs.push(post(
                transfer_id(KIND_CUSTODY_MOVE_FEE, id),
                fees,
                from,
                network_fee,
                TRANSFER_CODE_NETWORK_FEE,
                false,
            ));
            legs.extend(miner_fee_cover(
                cx,
                asset,
                id,
                network_fee,
                0,
                (
                    KIND_CUSTODY_MOVE_FEE_FROM_REVENUE,
                    KIND_CUSTODY_MOVE_FEE_FROM_TREASURY,
                ),
            ));
        }
        chain(&mut legs);
        cx.transfers(&legs)?;
        let m = CustodyMove {
            id,
            asset,
            kind,
            txid: txid.to_owned(),
            amount,
            network_fee,
            recorded_ns: cx.now_ns,
            status: CustodyMoveStatus::Recorded,
            raw_tx: raw_tx.map(str::to_owned),
            shortfall: Amount(0),
            reason: None,
            updated_ns: cx.now_ns,
        };
        self.custody_move_by_txid.insert((asset, txid.to_owned()), id);
        self.custody_moves.push(m.clone());
        cx.events.push(WalletEvent::CustodyMoved(Box::new(m.clone())));
        Ok(m)
    }

    /// Books `amount` of `asset` paid as gas for the transaction `txid`, which moved
    /// `for_asset` ([`crate::engine::Command::RecordGas`]): network fees ← hot wallet, covered
    /// by fee revenue then the treasury. Idempotent per transaction.
    pub(crate) fn record_gas(
        &mut self,
        cx: &mut Ctx<'_>,
        asset: AssetId,
        txid: &str,
        for_asset: AssetId,
        amount: Amount,
    ) -> Result<(), Reject> {
        cx.asset(asset)?;
        cx.asset(for_asset)?;
        let hash = evm_tx_hash(txid).ok_or(Reject::TxidInvalid)?;
        if amount.0 == 0 {
            return Err(Reject::AmountZero);
        }
        let id = gas_transfer_id(KIND_GAS, &hash);
        if let Some(t) = cx.ledger.transfer(id) {
            let same = t.asset == asset
                && t.amount == amount
                && t.request.user_data == gas_user_data(&hash, for_asset);
            return if same { Ok(()) } else { Err(Reject::GasConflict) };
        }
        let mut main = post(
            id,
            cx.system(asset, SystemAccount::NetworkFees),
            cx.system(asset, SystemAccount::HotWallet),
            amount,
            TRANSFER_CODE_GAS,
            false,
        );
        main.user_data = gas_user_data(&hash, for_asset);
        let mut legs = vec![main];
        legs.extend(miner_fee_cover_ids(
            cx,
            asset,
            amount,
            0,
            (
                gas_transfer_id(KIND_GAS_FROM_REVENUE, &hash),
                gas_transfer_id(KIND_GAS_FROM_TREASURY, &hash),
            ),
        ));
        chain(&mut legs);
        cx.transfers(&legs)?;
        Ok(())
    }

    /// The gas booked for the transaction `txid` ([`Wallet::record_gas`]): (asset paid,
    /// asset moved, amount).
    pub fn gas_booked(ledger: &Ledger, txid: &str) -> Option<(AssetId, AssetId, Amount)> {
        let hash = evm_tx_hash(txid)?;
        let t = ledger.transfer(gas_transfer_id(KIND_GAS, &hash))?;
        let mut w = [0u8; 16];
        w[..12].copy_from_slice(&hash[14..26]);
        let rest = u128::from_be_bytes(w) >> 32;
        let for_asset = AssetId((t.request.user_data & u128::from(u32::MAX)) as u32);
        (t.request.user_data >> 32 == rest).then_some((t.asset, for_asset, t.amount))
    }

    pub fn company_deposits(&self) -> &[CompanyDeposit] {
        &self.company_deposits
    }

    pub fn company_deposit_by_output(
        &self,
        asset: AssetId,
        txid: &str,
        vout: u32,
    ) -> Option<&CompanyDeposit> {
        self.company_deposit_by_output
            .get(&(asset, txid.to_owned(), vout))
            .map(|&i| &self.company_deposits[i])
    }

    /// Credits a confirmed deposit to the company's own address to the company treasury
    /// (company treasury ← hot wallet), once per output: the same output again returns the
    /// record, a different amount for it is refused.
    pub(crate) fn company_deposit(
        &mut self,
        cx: &mut Ctx<'_>,
        asset: AssetId,
        txid: &str,
        vout: u32,
        amount: Amount,
    ) -> Result<CompanyDeposit, Reject> {
        cx.asset(asset)?;
        if !text_ok(txid, TXID_LEN_MAX) {
            return Err(Reject::TxidInvalid);
        }
        if amount.0 == 0 {
            return Err(Reject::AmountZero);
        }
        if let Some(d) = self.company_deposit_by_output(asset, txid, vout) {
            return if d.amount == amount {
                Ok(d.clone())
            } else {
                Err(Reject::DepositConflict)
            };
        }
        if self.company_deposits.len() >= COMPANY_DEPOSITS_MAX {
            return Err(Reject::LimitExceeded);
        }
        let id = self.company_deposits.len() as u64 + 1;
        cx.transfers(&[post(
            transfer_id(KIND_COMPANY_DEPOSIT, id),
            cx.system(asset, SystemAccount::HotWallet),
            cx.system(asset, SystemAccount::CompanyTreasury),
            amount,
            TRANSFER_CODE_COMPANY_DEPOSIT,
            false,
        )])?;
        let d = CompanyDeposit {
            id,
            asset,
            txid: txid.to_owned(),
            vout,
            amount,
            credited_ns: cx.now_ns,
        };
        self.company_deposit_by_output
            .insert((asset, txid.to_owned(), vout), self.company_deposits.len());
        self.company_deposits.push(d.clone());
        cx.events.push(WalletEvent::CompanyDeposited(d.clone()));
        Ok(d)
    }

    pub(crate) fn set_withdrawal_fee(
        &mut self,
        cx: &mut Ctx<'_>,
        asset: AssetId,
        fee: Amount,
    ) -> Result<(), Reject> {
        cx.asset(asset)?;
        self.withdrawal_fees.insert(asset, fee);
        cx.events.push(WalletEvent::WithdrawalFeeSet { asset, fee });
        Ok(())
    }

    /// Keeps the user's proof with the address it approved (for the signer), unless one is kept.
    pub(crate) fn keep_address_approval(
        &mut self,
        id: AddressId,
        approval: crate::identity::StepUp,
    ) -> Option<WithdrawalAddress> {
        let a = self
            .withdrawal_addresses
            .get_mut((id.0 as usize).wrapping_sub(1))?;
        if a.approval.is_none() {
            a.approval = Some(approval);
        }
        Some(a.clone())
    }

    pub(crate) fn set_totp_budget(
        &mut self,
        cx: &mut Ctx<'_>,
        asset: AssetId,
        budget: Amount,
    ) -> Result<(), Reject> {
        cx.asset(asset)?;
        if budget.0 == 0 {
            self.totp_budgets.remove(&asset);
        } else {
            self.totp_budgets.insert(asset, budget);
        }
        Ok(())
    }

    /// What TOTP alone may withdraw of `asset` per user in 24 h (`None`: not capped here).
    pub fn totp_budget(&self, asset: AssetId) -> Option<Amount> {
        self.totp_budgets.get(&asset).copied()
    }

    /// Whether TOTP alone approved a withdrawal with `proof` to `address`: a TOTP proof, or an
    /// address whitelisted with a TOTP proof (the signer's TOTP-grade).
    pub fn totp_only(&self, proof: &crate::identity::StepUp, address: AddressId) -> bool {
        use crate::identity::ProofFactor;
        matches!(proof.factor, ProofFactor::Totp { .. })
            || self
                .withdrawal_addresses
                .get((address.0 as usize).wrapping_sub(1))
                .and_then(|a| a.approval.as_ref())
                .is_some_and(|p| matches!(p.factor, ProofFactor::Totp { .. }))
    }

    /// What TOTP alone approved of `asset` for `user` in requests since `since_ns` (failed and
    /// cancelled ones excepted).
    pub fn totp_spent_since(&self, user: UserId, asset: AssetId, since_ns: u64) -> u128 {
        self.withdrawals
            .iter()
            .rev()
            .take_while(|w| w.requested_ns >= since_ns)
            .filter(|w| w.user == user && w.asset == asset)
            .filter(|w| !matches!(w.status, WithdrawalStatus::Failed | WithdrawalStatus::Cancelled))
            .filter(|w| w.proof.as_ref().is_some_and(|p| self.totp_only(p, w.address_id)))
            .fold(0u128, |s, w| s.saturating_add(w.amount.0))
    }

    pub(crate) fn add_withdrawal_address(
        &mut self,
        cx: &mut Ctx<'_>,
        user: UserId,
        asset: AssetId,
        address: &str,
        label: &str,
        cooling_ns: u64,
    ) -> Result<WithdrawalAddress, Reject> {
        cx.asset(asset)?;
        if !text_ok(address, ADDRESS_LEN_MAX) {
            return Err(Reject::AddressInvalid);
        }
        if label.len() > LABEL_LEN_MAX || label.chars().any(char::is_control) {
            return Err(Reject::LabelInvalid);
        }
        if let Some(a) = self
            .withdrawal_addresses
            .iter()
            .find(|a| a.user == user && a.asset == asset && !a.removed && a.address == address)
        {
            return Ok(a.clone());
        }
        if self.withdrawal_addresses_of(user).len() >= WITHDRAWAL_ADDRESSES_PER_USER_MAX {
            return Err(Reject::LimitExceeded);
        }
        let usable_at_ns = cx.now_ns.checked_add(cooling_ns).ok_or(Reject::LimitExceeded)?;
        let a = WithdrawalAddress {
            id: AddressId(self.withdrawal_addresses.len() as u64 + 1),
            user,
            asset,
            address: address.to_owned(),
            label: label.to_owned(),
            created_ns: cx.now_ns,
            usable_at_ns,
            removed: false,
            approval: None,
        };
        self.withdrawal_addresses.push(a.clone());
        cx.events
            .push(WalletEvent::WithdrawalAddressAdded(Box::new(a.clone())));
        Ok(a)
    }

    pub(crate) fn remove_withdrawal_address(
        &mut self,
        cx: &mut Ctx<'_>,
        user: UserId,
        id: AddressId,
    ) -> Result<(), Reject> {
        let a = self
            .withdrawal_addresses
            .get_mut(usize::try_from(id.0.wrapping_sub(1)).unwrap_or(usize::MAX))
            .filter(|a| a.user == user && !a.removed)
            .ok_or(Reject::WithdrawalAddressNotFound)?;
        a.removed = true;
        cx.events.push(WalletEvent::WithdrawalAddressRemoved { user, id });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn request_withdrawal(
        &mut self,
        cx: &mut Ctx<'_>,
        user: UserId,
        address_id: AddressId,
        amount: Amount,
        client_id: Option<u128>,
        proof: &crate::identity::StepUp,
        risk: &RequestRisk,
    ) -> Result<Withdrawal, Reject> {
        if let Some(original) = self.withdrawal_retry(user, client_id, address_id, amount) {
            return original.cloned();
        }
        let addr = self.request_checks(cx, user, address_id, amount, risk)?;
        // The signer caps what TOTP alone approves a day; say so now rather than at signing.
        if let Some(budget) = self.totp_budget(addr.asset) {
            if self.totp_only(proof, address_id) {
                let since = cx.now_ns.saturating_sub(crate::risk::DAY_NS);
                let spent = self.totp_spent_since(user, addr.asset, since);
                if spent.saturating_add(amount.0) > budget.0 {
                    return Err(Reject::PasskeyRequired);
                }
            }
        }
        let fee = self.withdrawal_fee(addr.asset);
        let account = cx
            .ledger
            .customer_account(user, addr.asset)
            .ok_or(Reject::FundsInsufficient)?;
        let id = WithdrawalId(self.withdrawals.len() as u64 + 1);
        let (status, not_before_ns, approvals_needed) = request_status(risk, amount, cx.now_ns);
        let legs = withdrawal_holds(cx, addr.asset, id, account, amount, fee);
        // A rejected request is recorded (with the rule that fired) but holds nothing.
        if status != WithdrawalStatus::Failed {
            cx.transfers(&legs)?;
        }
        let w = Withdrawal {
            id,
            user,
            asset: addr.asset,
            address_id,
            address: addr.address,
            amount,
            fee,
            client_id,
            proof: Some(proof.clone()),
            status,
            txid: None,
            raw_tx: None,
            shortfall: Amount(0),
            network_fee: Amount(0),
            risk: risk.verdict.clone().map(Box::new),
            not_before_ns,
            approvals: Vec::new(),
            approval_proofs: Vec::new(),
            approvals_needed,
            signing_ns: 0,
            reason: (status == WithdrawalStatus::Failed).then(|| {
                let v = risk.verdict.as_ref().expect("a rejection has a verdict");
                format!("rejected by risk rule {}: {}", v.rule, v.reason)
            }),
            requested_ns: cx.now_ns,
            updated_ns: cx.now_ns,
        };
        if let Some(c) = client_id {
            self.withdrawal_by_client.insert((user, c), id);
        }
        self.withdrawals.push(w.clone());
        cx.events.push(WalletEvent::Withdrawal(Box::new(w.clone())));
        Ok(w)
    }

    /// The checks of a new withdrawal request, in order: the address (the user's, not
    /// removed), the asset's switch, the cooling period, the amount, open requests, limits.
    fn request_checks(
        &self,
        cx: &Ctx<'_>,
        user: UserId,
        address_id: AddressId,
        amount: Amount,
        risk: &RequestRisk,
    ) -> Result<WithdrawalAddress, Reject> {
        let addr = self
            .withdrawal_address(address_id)
            .filter(|a| a.user == user && !a.removed)
            .ok_or(Reject::WithdrawalAddressNotFound)?
            .clone();
        let asset = cx.asset(addr.asset)?;
        if !asset.switches.withdrawals {
            return Err(Reject::WithdrawalsDisabled);
        }
        if cx.now_ns < addr.usable_at_ns {
            return Err(Reject::WithdrawalAddressCooling);
        }
        if amount.0 == 0 {
            return Err(Reject::AmountZero);
        }
        let open = self
            .withdrawals
            .iter()
            .rev()
            .filter(|w| w.user == user && w.status.is_open())
            .take(WITHDRAWALS_OPEN_PER_USER_MAX)
            .count();
        if open >= WITHDRAWALS_OPEN_PER_USER_MAX {
            return Err(Reject::LimitExceeded);
        }
        if let Some(l) = &risk.limit {
            // Every withdrawal not cancelled or failed counts, pending ones included, so two
            // concurrent requests cannot both slip under (the engine handles one at a time).
            let left = self.limit_left(user, addr.asset, l, cx.now_ns);
            if amount > left.day || amount > left.month {
                return Err(Reject::WithdrawalLimitExceeded);
            }
        }
        Ok(addr)
    }

    fn resolve_holds(&self, cx: &mut Ctx<'_>, w: &Withdrawal, post: bool) -> Result<(), Reject> {
        self.resolve_holds_with(cx, w, post, Vec::new())
    }

    /// Posts or voids a withdrawal's holds, with `extra` linked after them (all or nothing).
    fn resolve_holds_with(
        &self,
        cx: &mut Ctx<'_>,
        w: &Withdrawal,
        post: bool,
        extra: Vec<TransferRequest>,
    ) -> Result<(), Reject> {
        let mut legs = vec![transfer_id(KIND_WITHDRAWAL, w.id.0)];
        if w.fee.0 > 0 {
            legs.push(transfer_id(KIND_WITHDRAWAL_FEE, w.id.0));
        }
        let n = legs.len() + extra.len();
        let mut requests: Vec<TransferRequest> = legs
            .into_iter()
            .enumerate()
            .map(|(i, pending)| TransferRequest {
                id: TransferId(pending.0 | 0b1),
                kind: if post {
                    TransferKind::PostPending {
                        pending,
                        amount: None,
                    }
                } else {
                    TransferKind::VoidPending { pending }
                },
                linked: i + 1 < n,
                code: TRANSFER_CODE_WITHDRAWAL,
                user_data: u128::from(w.id.0),
            })
            .collect();
        requests.extend(extra);
        chain(&mut requests);
        cx.transfers(&requests)
    }

    fn finish(
        &mut self,
        cx: &mut Ctx<'_>,
        id: WithdrawalId,
        status: WithdrawalStatus,
        txid: Option<&str>,
        reason: Option<&str>,
    ) -> Withdrawal {
        let w = &mut self.withdrawals[(id.0 - 1) as usize];
        w.status = status;
        if let Some(t) = txid {
            w.txid = Some(t.to_owned());
        }
        if let Some(r) = reason {
            w.reason = Some(r.to_owned());
        }
        w.updated_ns = cx.now_ns;
        let w = w.clone();
        cx.events.push(WalletEvent::Withdrawal(Box::new(w.clone())));
        w
    }

    /// A reviewer's decision on a withdrawal held for review. The requester never reviews; one
    /// reviewer counts once; a rejection fails it (the hold is released); enough approvals make
    /// it `Approved`. (The engine checks the reviewer's role and second factor first.)
    pub(crate) fn review_withdrawal(
        &mut self,
        cx: &mut Ctx<'_>,
        id: WithdrawalId,
        reviewer: UserId,
        approve: bool,
        reason: &str,
        proof: &crate::identity::StepUp,
    ) -> Result<Withdrawal, Reject> {
        if reason.trim().is_empty() || reason.len() > 1024 {
            return Err(Reject::ReasonRequired);
        }
        let w = self.withdrawal(id).ok_or(Reject::WithdrawalNotFound)?.clone();
        if w.status != WithdrawalStatus::Review {
            return Err(Reject::WithdrawalStateInvalid);
        }
        if w.user == reviewer {
            return Err(Reject::ReviewerIsRequester);
        }
        if w.approvals.contains(&reviewer) {
            return Err(Reject::AlreadyReviewed);
        }
        if !approve {
            self.resolve_holds(cx, &w, false)?;
            let why = format!("rejected by reviewer {}: {}", reviewer.0, reason.trim());
            return Ok(self.finish(cx, id, WithdrawalStatus::Failed, None, Some(&why)));
        }
        let rec = &mut self.withdrawals[(id.0 - 1) as usize];
        rec.approvals.push(reviewer);
        rec.approval_proofs.push(proof.clone());
        let status = if rec.approvals.len() >= usize::from(rec.approvals_needed.max(1)) {
            WithdrawalStatus::Approved
        } else {
            WithdrawalStatus::Review
        };
        Ok(self.finish(cx, id, status, None, None))
    }

    /// The customer withdraws the request before it is broadcast.
    pub(crate) fn cancel_withdrawal(
        &mut self,
        cx: &mut Ctx<'_>,
        user: UserId,
        id: WithdrawalId,
    ) -> Result<Withdrawal, Reject> {
        let w = match self.withdrawal(id) {
            Some(w) if w.user == user => w.clone(),
            _ => return Err(Reject::WithdrawalNotFound),
        };
        if !w.status.cancellable() {
            return Err(Reject::WithdrawalStateInvalid);
        }
        self.resolve_holds(cx, &w, false)?;
        Ok(self.finish(cx, id, WithdrawalStatus::Cancelled, None, None))
    }

    /// Refused after the request (signer or operator): the hold is released. Possible until
    /// the transaction is broadcast.
    pub(crate) fn fail_withdrawal(
        &mut self,
        cx: &mut Ctx<'_>,
        id: WithdrawalId,
        reason: &str,
    ) -> Result<Withdrawal, Reject> {
        if reason.trim().is_empty() || reason.len() > 1024 {
            return Err(Reject::ReasonRequired);
        }
        let w = self.withdrawal(id).ok_or(Reject::WithdrawalNotFound)?.clone();
        if !w.status.is_held() {
            return Err(Reject::WithdrawalStateInvalid);
        }
        self.resolve_holds(cx, &w, false)?;
        Ok(self.finish(cx, id, WithdrawalStatus::Failed, None, Some(reason)))
    }

    /// The custody service takes the withdrawal to the signer: from now on only the signer's
    /// refusal (a failure) or the broadcast ends it; the customer can no longer cancel.
    pub(crate) fn withdrawal_signing(
        &mut self,
        cx: &mut Ctx<'_>,
        id: WithdrawalId,
        hot_outflow_per_hour: Option<Amount>,
    ) -> Result<Withdrawal, Reject> {
        let w = self.withdrawal(id).ok_or(Reject::WithdrawalNotFound)?;
        match w.status {
            WithdrawalStatus::Signing => return Ok(w.clone()),
            WithdrawalStatus::Requested | WithdrawalStatus::Approved => {}
            WithdrawalStatus::Waiting if cx.now_ns >= w.not_before_ns => {}
            WithdrawalStatus::Waiting | WithdrawalStatus::Review => return Err(Reject::WithdrawalNotReady),
            _ => return Err(Reject::WithdrawalStateInvalid),
        }
        let asset = cx.asset(w.asset)?;
        if !asset.switches.withdrawals {
            return Err(Reject::WithdrawalsDisabled);
        }
        if let Some(cap) = hot_outflow_per_hour {
            let hour = self.signed_since(w.asset, cx.now_ns.saturating_sub(crate::risk::HOUR_NS));
            if hour.saturating_add(w.amount.0) > cap.0 {
                return Err(Reject::HotOutflowCapReached);
            }
        }
        self.withdrawals[(id.0 - 1) as usize].signing_ns = cx.now_ns;
        Ok(self.finish(cx, id, WithdrawalStatus::Signing, None, None))
    }

    /// The signed transaction is on the network. From `Signed` (recorded first): the same txid,
    /// nothing more to book. From `Signing` (a chain without a recorded transaction, the
    /// simulated one): records and books in one step, as [`Wallet::record_withdrawal_tx`].
    pub(crate) fn withdrawal_broadcast(
        &mut self,
        cx: &mut Ctx<'_>,
        id: WithdrawalId,
        txid: &str,
        network_fee: Amount,
    ) -> Result<Withdrawal, Reject> {
        if !text_ok(txid, TXID_LEN_MAX) {
            return Err(Reject::TxidInvalid);
        }
        let w = self.withdrawal(id).ok_or(Reject::WithdrawalNotFound)?.clone();
        match w.status {
            WithdrawalStatus::Signing => {}
            WithdrawalStatus::Signed | WithdrawalStatus::Broadcast if w.txid.as_deref() != Some(txid) => {
                return Err(Reject::WithdrawalTxConflict)
            }
            WithdrawalStatus::Signed => {
                return Ok(self.finish(cx, id, WithdrawalStatus::Broadcast, None, None));
            }
            WithdrawalStatus::Broadcast => return Ok(w),
            _ => return Err(Reject::WithdrawalStateInvalid),
        }
        self.book_withdrawal_tx(cx, &w, network_fee)?;
        Ok(self.finish(cx, id, WithdrawalStatus::Broadcast, Some(txid), None))
    }

    /// Records the signed transaction of a withdrawal in `Signing` before it is broadcast: the
    /// customer is debited (the holds are posted) and the miner fee booked against the hot
    /// wallet. The same transaction again is a no-op; another one is refused.
    pub(crate) fn record_withdrawal_tx(
        &mut self,
        cx: &mut Ctx<'_>,
        id: WithdrawalId,
        txid: &str,
        raw_tx: &str,
        network_fee: Amount,
    ) -> Result<Withdrawal, Reject> {
        if !text_ok(txid, TXID_LEN_MAX) {
            return Err(Reject::TxidInvalid);
        }
        if !raw_tx_ok(raw_tx) {
            return Err(Reject::RawTxInvalid);
        }
        let w = self.withdrawal(id).ok_or(Reject::WithdrawalNotFound)?.clone();
        match w.status {
            WithdrawalStatus::Signing => {}
            s if s.has_tx() && w.txid.as_deref() == Some(txid) => return Ok(w),
            s if s.has_tx() => return Err(Reject::WithdrawalTxConflict),
            _ => return Err(Reject::WithdrawalStateInvalid),
        }
        self.book_withdrawal_tx(cx, &w, network_fee)?;
        self.withdrawals[(id.0 - 1) as usize].raw_tx = Some(raw_tx.to_owned());
        Ok(self.finish(cx, id, WithdrawalStatus::Signed, Some(txid), None))
    }

    /// Posts a withdrawal's holds and books its miner fee (network fees ← hot wallet).
    fn book_withdrawal_tx(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &Withdrawal,
        network_fee: Amount,
    ) -> Result<(), Reject> {
        let id = w.id;
        let mut legs = Vec::new();
        if network_fee.0 > 0 {
            legs.push(post(
                transfer_id(KIND_WITHDRAWAL_NETWORK_FEE, id.0),
                cx.system(w.asset, SystemAccount::NetworkFees),
                cx.system(w.asset, SystemAccount::HotWallet),
                network_fee,
                TRANSFER_CODE_NETWORK_FEE,
                false,
            ));
            // The withdrawal's own fee is posted to fee revenue in the same chain.
            legs.extend(miner_fee_cover(
                cx,
                w.asset,
                id.0,
                network_fee,
                w.fee.0,
                (
                    KIND_WITHDRAWAL_MINER_FEE_FROM_REVENUE,
                    KIND_WITHDRAWAL_MINER_FEE_FROM_TREASURY,
                ),
            ));
        }
        self.resolve_holds_with(cx, w, true, legs)?;
        self.withdrawals[(id.0 - 1) as usize].network_fee = network_fee;
        Ok(())
    }

    /// The withdrawal's recorded transaction left the chain (conflicted), in `Signed`,
    /// `Broadcast` or `Completed`: the customer is credited back the amount (from withdrawals
    /// in flight, or from the hot wallet once completed) and the fee (from fee revenue; what it
    /// no longer holds from suspense, recorded as the shortfall), and the miner fee goes back
    /// to the hot wallet. Returns the record and whether it changed (reverting twice is a no-op).
    pub(crate) fn revert_withdrawal(
        &mut self,
        cx: &mut Ctx<'_>,
        id: WithdrawalId,
        reason: &str,
    ) -> Result<(Withdrawal, bool), Reject> {
        if !reason_ok(reason) {
            return Err(Reject::ReasonRequired);
        }
        let w = self.withdrawal(id).ok_or(Reject::WithdrawalNotFound)?.clone();
        if w.status == WithdrawalStatus::Reverted {
            return Ok((w, false));
        }
        if !w.status.has_tx() {
            return Err(Reject::WithdrawalStateInvalid);
        }
        let account = customer(cx.ledger, w.user, w.asset)?;
        let hot = cx.system(w.asset, SystemAccount::HotWallet);
        let revenue = cx.system(w.asset, SystemAccount::FeeRevenue);
        let amount_from = if w.status == WithdrawalStatus::Completed {
            hot
        } else {
            cx.system(w.asset, SystemAccount::WithdrawalsInFlight)
        };
        let treasury = cx.system(w.asset, SystemAccount::CompanyTreasury);
        // The miner fee goes back where it was charged: company funds first (so fee revenue
        // can return the customer's fee), network fees the rest.
        let (from_revenue, from_treasury) = covered(
            cx.ledger,
            id.0,
            (
                KIND_WITHDRAWAL_MINER_FEE_FROM_REVENUE,
                KIND_WITHDRAWAL_MINER_FEE_FROM_TREASURY,
            ),
        );
        let uncovered = w
            .network_fee
            .0
            .saturating_sub(from_revenue)
            .saturating_sub(from_treasury);
        let revenue_has = cx.ledger.account(revenue).map_or(0, |a| a.available()) + from_revenue;
        let fee_back = w.fee.0.min(revenue_has);
        let shortfall = w.fee.0 - fee_back;
        let legs = [
            (KIND_WITHDRAWAL_MINER_FEE_REVENUE_BACK, hot, revenue, from_revenue),
            (
                KIND_WITHDRAWAL_MINER_FEE_TREASURY_BACK,
                hot,
                treasury,
                from_treasury,
            ),
            (KIND_WITHDRAWAL_REVERT, amount_from, account, w.amount.0),
            (KIND_WITHDRAWAL_FEE_REVERT, revenue, account, fee_back),
            (
                KIND_WITHDRAWAL_FEE_SHORTFALL,
                cx.system(w.asset, SystemAccount::Suspense),
                account,
                shortfall,
            ),
            (
                KIND_WITHDRAWAL_NETWORK_FEE_REVERT,
                hot,
                cx.system(w.asset, SystemAccount::NetworkFees),
                uncovered,
            ),
        ];
        cx.transfers(&linked_posts(id.0, TRANSFER_CODE_TX_REVERTED, &legs))?;
        self.withdrawals[(id.0 - 1) as usize].shortfall = Amount(shortfall);
        Ok((
            self.finish(cx, id, WithdrawalStatus::Reverted, None, Some(reason.trim())),
            true,
        ))
    }

    /// A custody move's transaction left the chain: the amount goes back from the receiving
    /// wallet (what it no longer holds is the move's shortfall: an earlier reversal already
    /// took it from there) and the miner fee back to the paying wallet. Returns the record and
    /// whether it changed (reverting twice is a no-op).
    pub(crate) fn revert_custody_move(
        &mut self,
        cx: &mut Ctx<'_>,
        asset: AssetId,
        txid: &str,
        reason: &str,
    ) -> Result<(CustodyMove, bool), Reject> {
        if !reason_ok(reason) {
            return Err(Reject::ReasonRequired);
        }
        cx.asset(asset)?;
        let &id = self
            .custody_move_by_txid
            .get(&(asset, txid.to_owned()))
            .ok_or(Reject::CustodyMoveNotFound)?;
        let m = self.custody_moves[(id - 1) as usize].clone();
        if m.status == CustodyMoveStatus::Reverted {
            return Ok((m, false));
        }
        let hot = cx.system(asset, SystemAccount::HotWallet);
        let cold = cx.system(asset, SystemAccount::ColdWallet);
        let (to, from) = match m.kind {
            CustodyMoveKind::Sweep => (cold, hot),
            CustodyMoveKind::Refill => (hot, cold),
        };
        let to_has = cx.ledger.account(to).map_or(0, |a| a.available());
        let back = m.amount.0.min(to_has);
        let (from_revenue, from_treasury) = covered(
            cx.ledger,
            id,
            (
                KIND_CUSTODY_MOVE_FEE_FROM_REVENUE,
                KIND_CUSTODY_MOVE_FEE_FROM_TREASURY,
            ),
        );
        let legs = [
            (KIND_CUSTODY_MOVE_REVERT, from, to, back),
            (
                KIND_CUSTODY_MOVE_FEE_REVERT,
                from,
                cx.system(asset, SystemAccount::NetworkFees),
                m.network_fee
                    .0
                    .saturating_sub(from_revenue)
                    .saturating_sub(from_treasury),
            ),
            (
                KIND_CUSTODY_MOVE_FEE_REVENUE_BACK,
                from,
                cx.system(asset, SystemAccount::FeeRevenue),
                from_revenue,
            ),
            (
                KIND_CUSTODY_MOVE_FEE_TREASURY_BACK,
                from,
                cx.system(asset, SystemAccount::CompanyTreasury),
                from_treasury,
            ),
        ];
        cx.transfers(&linked_posts(id, TRANSFER_CODE_TX_REVERTED, &legs))?;
        let rec = &mut self.custody_moves[(id - 1) as usize];
        rec.status = CustodyMoveStatus::Reverted;
        rec.shortfall = Amount(m.amount.0 - back);
        rec.reason = Some(reason.trim().to_owned());
        rec.updated_ns = cx.now_ns;
        let rec = rec.clone();
        cx.events.push(WalletEvent::CustodyMoved(Box::new(rec.clone())));
        Ok((rec, true))
    }

    /// Final on chain: the coins have left custody.
    pub(crate) fn withdrawal_confirmed(
        &mut self,
        cx: &mut Ctx<'_>,
        id: WithdrawalId,
    ) -> Result<Withdrawal, Reject> {
        let w = self.withdrawal(id).ok_or(Reject::WithdrawalNotFound)?.clone();
        // Recorded and then found deep enough before `Broadcast` was noted: final all the same.
        if !matches!(w.status, WithdrawalStatus::Signed | WithdrawalStatus::Broadcast) {
            return Err(Reject::WithdrawalStateInvalid);
        }
        let in_flight = cx.system(w.asset, SystemAccount::WithdrawalsInFlight);
        let hot = cx.system(w.asset, SystemAccount::HotWallet);
        cx.transfers(&[post(
            transfer_id(KIND_WITHDRAWAL_SETTLE, id.0),
            in_flight,
            hot,
            w.amount,
            TRANSFER_CODE_WITHDRAWAL_SETTLE,
            false,
        )])?;
        Ok(self.finish(cx, id, WithdrawalStatus::Completed, None, None))
    }

    pub fn state(&self) -> WalletState {
        WalletState {
            deposit_addresses: self.deposit_addresses.clone(),
            deposits: self.deposits.clone(),
            withdrawal_fees: self.withdrawal_fees.iter().map(|(k, v)| (*k, *v)).collect(),
            totp_budgets: self.totp_budgets.iter().map(|(k, v)| (*k, *v)).collect(),
            withdrawal_addresses: self.withdrawal_addresses.clone(),
            withdrawals: self.withdrawals.clone(),
            custody_moves: self.custody_moves.clone(),
            company_deposits: self.company_deposits.clone(),
        }
    }

    pub fn from_state(s: WalletState) -> Wallet {
        let mut w = Wallet {
            withdrawal_fees: s.withdrawal_fees.into_iter().collect(),
            totp_budgets: s.totp_budgets.into_iter().collect(),
            ..Wallet::default()
        };
        for (i, a) in s.deposit_addresses.iter().enumerate() {
            w.address_owner.insert((a.asset, a.address.clone()), i);
            w.addresses_of.entry((a.user, a.asset)).or_default().push(i);
        }
        w.deposit_addresses = s.deposit_addresses;
        for d in &s.deposits {
            w.deposit_by_output
                .insert((d.asset, d.txid.clone(), d.vout), d.id);
        }
        w.deposits = s.deposits;
        w.withdrawal_addresses = s.withdrawal_addresses;
        for x in &s.withdrawals {
            if let Some(c) = x.client_id {
                w.withdrawal_by_client.insert((x.user, c), x.id);
            }
        }
        w.withdrawals = s.withdrawals;
        for m in &s.custody_moves {
            w.custody_move_by_txid.insert((m.asset, m.txid.clone()), m.id);
        }
        w.custody_moves = s.custody_moves;
        for (i, d) in s.company_deposits.iter().enumerate() {
            w.company_deposit_by_output
                .insert((d.asset, d.txid.clone(), d.vout), i);
        }
        w.company_deposits = s.company_deposits;
        w
    }

    /// Every open withdrawal's holds are open in the ledger, ids are dense, indexes agree.
    pub fn check(&self, ledger: &Ledger) -> Result<(), InvariantViolation> {
        for (i, d) in self.deposits.iter().enumerate() {
            if d.id.0 != i as u64 + 1 {
                return Err(InvariantViolation(format!("deposit ids not dense at {i}")));
            }
            if self.deposit_by_output(d.asset, &d.txid, d.vout) != Some(d.id) {
                return Err(InvariantViolation(format!(
                    "deposit {} missing from its output index",
                    d.id.0
                )));
            }
            let hold = transfer_id(KIND_DEPOSIT_HOLD, d.id.0);
            let open = matches!(
                ledger.pending_state(hold),
                Some(crate::ledger::PendingState::Open { .. })
            );
            if open != (d.status == DepositStatus::Pending) {
                return Err(InvariantViolation(format!(
                    "deposit {} is {} but its hold is open: {open}",
                    d.id.0,
                    d.status.name()
                )));
            }
        }
        for (i, m) in self.custody_moves.iter().enumerate() {
            if m.id != i as u64 + 1
                || self.custody_move_by_txid.get(&(m.asset, m.txid.clone())) != Some(&m.id)
            {
                return Err(InvariantViolation(format!(
                    "custody move {} not dense or not indexed",
                    m.id
                )));
            }
        }
        for (i, w) in self.withdrawals.iter().enumerate() {
            if w.id.0 != i as u64 + 1 {
                return Err(InvariantViolation(format!("withdrawal ids not dense at {i}")));
            }
            let hold = transfer_id(KIND_WITHDRAWAL, w.id.0);
            let open = matches!(
                ledger.pending_state(hold),
                Some(crate::ledger::PendingState::Open { .. })
            );
            if open != w.status.is_held() {
                return Err(InvariantViolation(format!(
                    "withdrawal {} is {} but its hold is {}",
                    w.id.0,
                    w.status.name(),
                    if open { "open" } else { "not open" }
                )));
            }
        }
        Ok(())
    }
}

/// One linked chain of posts `(kind, debit, credit, amount)` with engine-reserved ids for
/// `id`; legs of zero are left out.
fn linked_posts(id: u64, code: u16, legs: &[(u128, AccountId, AccountId, u128)]) -> Vec<TransferRequest> {
    let mut out: Vec<TransferRequest> = legs
        .iter()
        .filter(|l| l.3 > 0)
        .map(|&(kind, debit, credit, n)| post(transfer_id(kind, id), debit, credit, Amount(n), code, true))
        .collect();
    if let Some(l) = out.last_mut() {
        l.linked = false;
    }
    out
}

/// Links a chain of transfer requests: each but the last is linked to the next.
fn chain(requests: &mut [TransferRequest]) {
    let n = requests.len();
    for (i, r) in requests.iter_mut().enumerate() {
        r.linked = i + 1 < n;
    }
}

/// The legs that pay a miner fee of `fee` (already booked network fees ← custody in the same
/// chain) out of company funds: debit fee revenue, credit network fees, as far as fee revenue
/// goes (counting `revenue_posted`, revenue posted earlier in the same chain), then the same
/// from the company treasury. What company funds cannot cover stays in network fees: miner fees paid
/// with customers' coins, which reconciliation reports as a reserve shortfall. `kinds`: the
/// transfer id kinds of the two legs, so that a reversal finds them.
fn miner_fee_cover(
    cx: &Ctx<'_>,
    asset: AssetId,
    id: u64,
    fee: Amount,
    revenue_posted: u128,
    kinds: (u128, u128),
) -> Vec<TransferRequest> {
    miner_fee_cover_ids(
        cx,
        asset,
        fee,
        revenue_posted,
        (transfer_id(kinds.0, id), transfer_id(kinds.1, id)),
    )
}

/// [`miner_fee_cover`] with the two legs' transfer ids given.
fn miner_fee_cover_ids(
    cx: &Ctx<'_>,
    asset: AssetId,
    fee: Amount,
    revenue_posted: u128,
    ids: (TransferId, TransferId),
) -> Vec<TransferRequest> {
    let available = |which| {
        cx.ledger
            .account(cx.system(asset, which))
            .map_or(0, |a| a.available())
    };
    let revenue = available(SystemAccount::FeeRevenue).saturating_add(revenue_posted);
    let from_revenue = fee.0.min(revenue);
    let from_treasury = (fee.0 - from_revenue).min(available(SystemAccount::CompanyTreasury));
    let fees = cx.system(asset, SystemAccount::NetworkFees);
    [
        (ids.0, SystemAccount::FeeRevenue, from_revenue),
        (ids.1, SystemAccount::CompanyTreasury, from_treasury),
    ]
    .into_iter()
    .filter(|l| l.2 > 0)
    .map(|(id, account, n)| {
        post(
            id,
            cx.system(asset, account),
            fees,
            Amount(n),
            TRANSFER_CODE_MINER_FEE_COVERED,
            false,
        )
    })
    .collect()
}

/// How much of a recorded miner fee company funds paid: (fee revenue, company treasury).
fn covered(ledger: &Ledger, id: u64, kinds: (u128, u128)) -> (u128, u128) {
    let amount = |kind| ledger.transfer(transfer_id(kind, id)).map_or(0, |t| t.amount.0);
    (amount(kinds.0), amount(kinds.1))
}

/// What the risk verdict makes of a new request: its status, when it may be sent at the
/// earliest, and how many approvals it needs.
///
/// A withdrawal at or above the asset's dual-approval amount is held for two reviewers whatever
/// the rules say (short of a refusal): the signer keeps the same threshold and refuses it
/// without their assertions, so letting it through unreviewed would only fail it there.
fn request_status(risk: &RequestRisk, amount: Amount, now_ns: u64) -> (WithdrawalStatus, u64, u8) {
    let dual = risk.dual_approval_from.is_some_and(|d| amount >= d);
    match risk.verdict.as_ref().map(|v| v.decision) {
        None | Some(Decision::Allow | Decision::Delay { .. }) if dual => (WithdrawalStatus::Review, 0, 2),
        None | Some(Decision::Allow) => (WithdrawalStatus::Requested, 0, 0),
        Some(Decision::Delay { seconds }) => (
            WithdrawalStatus::Waiting,
            now_ns.saturating_add(seconds.saturating_mul(1_000_000_000)),
            0,
        ),
        Some(Decision::Review | Decision::HaltAsset) => {
            (WithdrawalStatus::Review, 0, if dual { 2 } else { 1 })
        }
        Some(Decision::Reject) => (WithdrawalStatus::Failed, 0, 0),
    }
}

/// A withdrawal's ledger holds: the amount to withdrawals in flight and, linked to it, the fee
/// (if any) to fee revenue.
fn withdrawal_holds(
    cx: &Ctx<'_>,
    asset: AssetId,
    id: WithdrawalId,
    account: AccountId,
    amount: Amount,
    fee: Amount,
) -> Vec<TransferRequest> {
    let in_flight = cx.system(asset, SystemAccount::WithdrawalsInFlight);
    let revenue = cx.system(asset, SystemAccount::FeeRevenue);
    let mut legs = vec![TransferRequest {
        id: transfer_id(KIND_WITHDRAWAL, id.0),
        kind: TransferKind::Hold {
            debit: account,
            credit: in_flight,
            amount,
            timeout_ns: 0,
        },
        linked: fee.0 > 0,
        code: TRANSFER_CODE_WITHDRAWAL,
        user_data: u128::from(id.0),
    }];
    if fee.0 > 0 {
        legs.push(TransferRequest {
            id: transfer_id(KIND_WITHDRAWAL_FEE, id.0),
            kind: TransferKind::Hold {
                debit: account,
                credit: revenue,
                amount: fee,
                timeout_ns: 0,
            },
            linked: false,
            code: TRANSFER_CODE_WITHDRAWAL_FEE,
            user_data: u128::from(id.0),
        });
    }
    legs
}
