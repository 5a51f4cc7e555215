//! The double-entry ledger.
//!
//! Every account holds one asset and counts `debits` and `credits` (posted) plus `held`, the part
//! of its constrained side reserved by open pending transfers (and, for customers, by open
//! orders). A transfer adds its amount to the debits of one account and the credits of another
//! of the same asset, so per asset the sum of all debits always equals the sum of all credits:
//! the ledger is balanced by construction and the audit checks it.
//!
//! Accounts have a normal side that says which way they may never go:
//! - `Credit` (customer balances, company equity, fee revenue, withdrawals in flight):
//!   `debits + held <= credits`. A customer can never go negative.
//! - `Debit` (custody: hot wallet, cold wallet, deposits in flight): `credits + held <= debits`.
//!   The ledger never believes it holds less than nothing.
//! - `Free` (suspense for unexplained differences): no constraint, never holds.
//!
//! Transfers are immutable history. Mistakes are corrected by `Reverse`, at most once per
//! transfer. Client ids make every transfer idempotent: a resubmission of the same request
//! returns the original outcome and never moves money twice. A failed transfer leaves no trace
//! (nothing changed), so it may be retried under the same id once the cause is fixed.

use crate::money::{AccountId, Amount, AssetId, TransferId, UserId};
use crate::reject::Reject;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Roles of the accounts the exchange itself keeps for every asset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SystemAccount {
    /// Coins in the online wallet (custody).
    HotWallet,
    /// Coins in offline multi-signature storage (custody).
    ColdWallet,
    /// Deposits seen on chain, not yet confirmed (custody on its way in).
    DepositsInFlight,
    /// Withdrawals debited from customers, not yet confirmed on chain.
    WithdrawalsInFlight,
    /// Trading and withdrawal fees earned (company funds).
    FeeRevenue,
    /// The insurance fund (company funds).
    InsuranceFund,
    /// The company's own holdings (company funds).
    CompanyTreasury,
    /// Unexplained differences, parked until explained.
    Suspense,
    /// Miner fees paid to move coins on chain (an expense: debit-normal), less what company
    /// funds (fee revenue, then the treasury) were charged for them: what is left was paid
    /// with customers' coins.
    NetworkFees,
}

impl SystemAccount {
    pub const COUNT: usize = 9;
    pub const ALL: [SystemAccount; SystemAccount::COUNT] = [
        SystemAccount::HotWallet,
        SystemAccount::ColdWallet,
        SystemAccount::DepositsInFlight,
        SystemAccount::WithdrawalsInFlight,
        SystemAccount::FeeRevenue,
        SystemAccount::InsuranceFund,
        SystemAccount::CompanyTreasury,
        SystemAccount::Suspense,
        SystemAccount::NetworkFees,
    ];

    pub fn normal(self) -> Normal {
        match self {
            SystemAccount::HotWallet
            | SystemAccount::ColdWallet
            | SystemAccount::DepositsInFlight
            | SystemAccount::NetworkFees => Normal::Debit,
            SystemAccount::WithdrawalsInFlight
            | SystemAccount::FeeRevenue
            | SystemAccount::InsuranceFund
            | SystemAccount::CompanyTreasury => Normal::Credit,
            SystemAccount::Suspense => Normal::Free,
        }
    }

    /// Funds that belong to the company rather than to customers.
    pub fn is_company_funds(self) -> bool {
        matches!(
            self,
            SystemAccount::FeeRevenue | SystemAccount::InsuranceFund | SystemAccount::CompanyTreasury
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            SystemAccount::HotWallet => "hot_wallet",
            SystemAccount::ColdWallet => "cold_wallet",
            SystemAccount::DepositsInFlight => "deposits_in_flight",
            SystemAccount::WithdrawalsInFlight => "withdrawals_in_flight",
            SystemAccount::FeeRevenue => "fee_revenue",
            SystemAccount::InsuranceFund => "insurance_fund",
            SystemAccount::CompanyTreasury => "company_treasury",
            SystemAccount::Suspense => "suspense",
            SystemAccount::NetworkFees => "network_fees",
        }
    }
}

/// The side an account may never go below zero on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Normal {
    Credit,
    Debit,
    Free,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Owner {
    Customer(UserId),
    System(SystemAccount),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub asset: AssetId,
    pub owner: Owner,
    pub normal: Normal,
    pub debits: u128,
    pub credits: u128,
    pub held: u128,
}

impl Account {
    /// Posted balance on the account's normal side (credits − debits for credit-normal
    /// accounts, debits − credits for debit-normal ones); signed for `Free` accounts.
    pub fn balance(&self) -> i128 {
        let d = i128::try_from(self.debits).unwrap_or(i128::MAX);
        let c = i128::try_from(self.credits).unwrap_or(i128::MAX);
        match self.normal {
            Normal::Credit | Normal::Free => c.saturating_sub(d),
            Normal::Debit => d.saturating_sub(c),
        }
    }
    /// What may still leave the account (balance − held); 0 for `Free` accounts' negative side.
    pub fn available(&self) -> u128 {
        u128::try_from(self.balance())
            .unwrap_or(0)
            .saturating_sub(self.held)
    }
    fn constraint_holds(&self) -> bool {
        match self.normal {
            Normal::Credit => self
                .debits
                .checked_add(self.held)
                .is_some_and(|x| x <= self.credits),
            Normal::Debit => self
                .credits
                .checked_add(self.held)
                .is_some_and(|x| x <= self.debits),
            Normal::Free => self.held == 0,
        }
    }
}

/// What a client asks the ledger to do. `linked` chains this transfer to the next one in the same
/// batch: the whole chain is applied, or none of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    pub id: TransferId,
    pub kind: TransferKind,
    pub linked: bool,
    /// Why the money moves (deposit, withdrawal, fee, correction, ...), for reports.
    pub code: u16,
    pub user_data: u128,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferKind {
    /// Moves `amount` at once.
    Post {
        debit: AccountId,
        credit: AccountId,
        amount: Amount,
    },
    /// Reserves `amount` (a hold); resolved later by `PostPending`, `VoidPending` or expiry.
    /// `timeout_ns` = 0 means it never expires.
    Hold {
        debit: AccountId,
        credit: AccountId,
        amount: Amount,
        timeout_ns: u64,
    },
    /// Moves the held amount, or less (`amount`); the rest is released.
    PostPending {
        pending: TransferId,
        amount: Option<Amount>,
    },
    /// Releases a hold.
    VoidPending { pending: TransferId },
    /// Moves the amount of a posted transfer back; at most once per transfer.
    Reverse { original: TransferId },
}

/// An applied transfer, as kept in history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub request: TransferRequest,
    pub debit: AccountId,
    pub credit: AccountId,
    pub asset: AssetId,
    /// The amount this transfer moved (posted), held (hold) or released (void).
    pub amount: Amount,
    pub seq: u64,
    pub timestamp_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PendingState {
    Open { expires_at_ns: Option<u64> },
    Posted { amount: Amount },
    Voided,
    Expired,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferOutcome {
    pub transfer: Transfer,
    /// True when this request repeated an earlier one and nothing was applied again.
    pub duplicate: bool,
}

/// Ledger-level events, in the order they happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerEvent {
    Transferred(Transfer),
    PendingExpired { pending: TransferId, amount: Amount },
}

/// The invariant that failed, with enough detail to investigate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invariant violated: {0}")]
pub struct InvariantViolation(pub String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Undo {
    Account(AccountId, Account),
    Pushed(TransferId),
    Pending(TransferId, Option<PendingState>),
    ExpiryAdded(u64, TransferId),
    ExpiryRemoved(u64, TransferId),
    Reversed(TransferId),
    Total(AssetId, u128),
}

#[derive(Clone, Debug, Default)]
pub struct Ledger {
    accounts: Vec<Account>,
    customer_index: FxHashMap<(UserId, AssetId), AccountId>,
    transfers: Vec<Transfer>,
    by_id: FxHashMap<TransferId, u32>,
    pending: BTreeMap<TransferId, PendingState>,
    expiries: BTreeSet<(u64, TransferId)>,
    reversed: BTreeSet<TransferId>,
    /// Per asset, the sum of all posted debits (= the sum of all posted credits). Tracked so
    /// that no posting can make the ledger's own totals overflow.
    totals: Vec<u128>,
    undo: Vec<Undo>,
}

/// The ledger's persistent state, in canonical order (what snapshots store and `state_hash` covers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    pub accounts: Vec<Account>,
    pub transfers: Vec<Transfer>,
    pub pending: Vec<(TransferId, PendingState)>,
    pub reversed: Vec<TransferId>,
}

pub const ACCOUNTS_MAX: usize = u32::MAX as usize - 1;

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }
    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(id.0 as usize)
    }
    pub fn customer_account(&self, user: UserId, asset: AssetId) -> Option<AccountId> {
        self.customer_index.get(&(user, asset)).copied()
    }
    /// Whether `user` holds a posted balance above zero on any asset. Held funds count: those
    /// reserved by open orders or a withdrawal, and a deposit seen but not yet confirmed (it
    /// is posted and held until it confirms).
    pub fn customer_funded(&self, user: UserId) -> bool {
        (0..self.totals.len()).any(|a| {
            self.customer_account(user, AssetId(a as u32))
                .and_then(|id| self.account(id))
                .is_some_and(|acc| acc.balance() > 0)
        })
    }
    pub fn transfers(&self) -> &[Transfer] {
        &self.transfers
    }
    pub fn transfer(&self, id: TransferId) -> Option<&Transfer> {
        self.by_id.get(&id).and_then(|&i| self.transfers.get(i as usize))
    }
    pub fn next_expiry_ns(&self) -> Option<u64> {
        self.expiries.first().map(|(at, _)| *at)
    }
    pub fn pending_state(&self, id: TransferId) -> Option<PendingState> {
        self.pending.get(&id).copied()
    }

    pub(crate) fn open_account(&mut self, asset: AssetId, owner: Owner) -> Result<AccountId, Reject> {
        if let Owner::Customer(user) = owner {
            if let Some(id) = self.customer_index.get(&(user, asset)) {
                return Ok(*id);
            }
        }
        if self.accounts.len() >= ACCOUNTS_MAX {
            return Err(Reject::AccountLimit);
        }
        let id = AccountId(self.accounts.len() as u32);
        if self.totals.len() <= asset.0 as usize {
            self.totals.resize(asset.0 as usize + 1, 0);
        }
        let normal = match owner {
            Owner::Customer(_) => Normal::Credit,
            Owner::System(s) => s.normal(),
        };
        self.accounts.push(Account {
            asset,
            owner,
            normal,
            debits: 0,
            credits: 0,
            held: 0,
        });
        if let Owner::Customer(user) = owner {
            self.customer_index.insert((user, asset), id);
        }
        Ok(id)
    }

    /// Reserves `amount` on a credit-normal account (an order's hold). Fails with
    /// `InsufficientFunds` if it is not available.
    pub(crate) fn hold(&mut self, account: AccountId, amount: u128) -> Result<(), Reject> {
        let a = self
            .accounts
            .get_mut(account.0 as usize)
            .ok_or(Reject::AccountNotFound)?;
        let held = a.held.checked_add(amount).ok_or(Reject::AmountOverflow)?;
        let need = a.debits.checked_add(held).ok_or(Reject::AmountOverflow)?;
        if a.normal != Normal::Credit || need > a.credits {
            return Err(Reject::InsufficientFunds);
        }
        a.held = held;
        Ok(())
    }

    /// Releases part of a hold placed with [`Ledger::hold`]. Releasing more than is held is a bug.
    pub(crate) fn release(&mut self, account: AccountId, amount: u128) {
        let a = &mut self.accounts[account.0 as usize];
        a.held = a
            .held
            .checked_sub(amount)
            .expect("ledger: released more than held");
    }

    /// Moves `amount` from `debit` to `credit` consuming `from_held` of the debit account's
    /// hold (trade settlement). The caller has checked both accounts exist and share the asset;
    /// constraints are asserted.
    pub(crate) fn settle(&mut self, debit: AccountId, credit: AccountId, amount: u128, from_held: u128) {
        let d = &mut self.accounts[debit.0 as usize];
        d.held = d.held.checked_sub(from_held).expect("ledger: settle beyond hold");
        d.debits = d.debits.checked_add(amount).expect("ledger: debit overflow");
        assert!(
            d.constraint_holds(),
            "ledger: settlement overdraws account {}",
            debit.0
        );
        let c = &mut self.accounts[credit.0 as usize];
        c.credits = c.credits.checked_add(amount).expect("ledger: credit overflow");
        assert!(
            c.constraint_holds(),
            "ledger: settlement breaks account {}",
            credit.0
        );
        let t = &mut self.totals[c.asset.0 as usize];
        *t = t.checked_add(amount).expect("ledger: asset total overflow");
    }

    /// Resolves every pending transfer whose timeout is at or before `now_ns`.
    pub(crate) fn expire_due(&mut self, now_ns: u64, events: &mut Vec<LedgerEvent>) {
        while let Some(&(at, id)) = self.expiries.first() {
            if at > now_ns {
                break;
            }
            self.expiries.pop_first();
            let t = *self.transfer(id).expect("ledger: expiry of unknown transfer");
            self.release_pending(&t);
            self.pending.insert(id, PendingState::Expired);
            events.push(LedgerEvent::PendingExpired {
                pending: id,
                amount: t.amount,
            });
        }
    }

    /// Applies a batch of transfer requests; linked chains all or nothing.
    pub(crate) fn create_transfers(
        &mut self,
        seq: u64,
        now_ns: u64,
        requests: &[TransferRequest],
        events: &mut Vec<LedgerEvent>,
    ) -> Vec<Result<TransferOutcome, Reject>> {
        let mut results = Vec::with_capacity(requests.len());
        let mut start = 0;
        while start < requests.len() {
            let Some(end) = requests[start..]
                .iter()
                .position(|r| !r.linked)
                .map(|p| start + p)
            else {
                // The batch ends inside a chain: refuse the whole open chain.
                for _ in start..requests.len() {
                    results.push(Err(Reject::LinkedChainOpen));
                }
                break;
            };
            debug_assert!(self.undo.is_empty());
            let mut chain: Vec<Result<TransferOutcome, Reject>> = Vec::with_capacity(end - start + 1);
            let mut failed: Option<(usize, Reject)> = None;
            for (k, req) in requests[start..=end].iter().enumerate() {
                match self.apply_one(seq, now_ns, req) {
                    Ok(o) => chain.push(Ok(o)),
                    Err(e) => {
                        failed = Some((k, e));
                        break;
                    }
                }
            }
            match failed {
                None => {
                    for o in chain.iter().flatten() {
                        if !o.duplicate {
                            events.push(LedgerEvent::Transferred(o.transfer));
                        }
                    }
                    results.extend(chain);
                    self.undo.clear();
                }
                Some((k, e)) => {
                    self.rollback();
                    for i in 0..=(end - start) {
                        results.push(Err(if i == k { e } else { Reject::LinkedTransferFailed }));
                    }
                }
            }
            start = end + 1;
        }
        results
    }

    fn rollback(&mut self) {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Account(id, prev) => self.accounts[id.0 as usize] = prev,
                Undo::Pushed(id) => {
                    self.transfers.pop();
                    self.by_id.remove(&id);
                }
                Undo::Pending(id, prev) => match prev {
                    Some(p) => {
                        self.pending.insert(id, p);
                    }
                    None => {
                        self.pending.remove(&id);
                    }
                },
                Undo::ExpiryAdded(at, id) => {
                    self.expiries.remove(&(at, id));
                }
                Undo::ExpiryRemoved(at, id) => {
                    self.expiries.insert((at, id));
                }
                Undo::Reversed(id) => {
                    self.reversed.remove(&id);
                }
                Undo::Total(asset, prev) => self.totals[asset.0 as usize] = prev,
            }
        }
    }

    fn account_checked(&self, id: AccountId, missing: Reject) -> Result<Account, Reject> {
        self.accounts.get(id.0 as usize).copied().ok_or(missing)
    }

    fn write_account(&mut self, id: AccountId, new: Account) {
        let slot = &mut self.accounts[id.0 as usize];
        self.undo.push(Undo::Account(id, *slot));
        *slot = new;
    }

    fn apply_one(&mut self, seq: u64, now_ns: u64, req: &TransferRequest) -> Result<TransferOutcome, Reject> {
        if req.id.0 == 0 {
            return Err(Reject::TransferIdZero);
        }
        if let Some(t) = self.transfer(req.id) {
            return if t.request == *req {
                Ok(TransferOutcome {
                    transfer: *t,
                    duplicate: true,
                })
            } else {
                Err(Reject::TransferExistsWithDifferentFields)
            };
        }
        let (debit, credit, amount) = match req.kind {
            TransferKind::Post {
                debit,
                credit,
                amount,
            } => {
                let (mut d, mut c) = self.pair(debit, credit, amount)?;
                Self::apply_posting(&mut d, &mut c, amount.0)?;
                self.write_account(debit, d);
                self.write_account(credit, c);
                (debit, credit, amount)
            }
            TransferKind::Hold {
                debit,
                credit,
                amount,
                timeout_ns,
            } => {
                let (mut d, mut c) = self.pair(debit, credit, amount)?;
                let expires_at_ns = match timeout_ns {
                    0 => None,
                    t => Some(now_ns.checked_add(t).ok_or(Reject::ExpiryOverflow)?),
                };
                Self::reserve(&mut d, &mut c, amount.0)?;
                self.write_account(debit, d);
                self.write_account(credit, c);
                self.set_pending(req.id, PendingState::Open { expires_at_ns });
                if let Some(at) = expires_at_ns {
                    self.expiries.insert((at, req.id));
                    self.undo.push(Undo::ExpiryAdded(at, req.id));
                }
                (debit, credit, amount)
            }
            TransferKind::PostPending { pending, amount } => {
                let (p, expires) = self.open_pending(pending)?;
                let post = amount.unwrap_or(p.amount);
                if post.is_zero() {
                    return Err(Reject::AmountZero);
                }
                if post > p.amount {
                    return Err(Reject::PostExceedsPending);
                }
                let mut d = self.accounts[p.debit.0 as usize];
                let mut c = self.accounts[p.credit.0 as usize];
                Self::unreserve(&mut d, &mut c, p.amount.0);
                Self::apply_posting(&mut d, &mut c, post.0)?;
                self.write_account(p.debit, d);
                self.write_account(p.credit, c);
                self.resolve_pending(pending, expires, PendingState::Posted { amount: post });
                (p.debit, p.credit, post)
            }
            TransferKind::VoidPending { pending } => {
                let (p, expires) = self.open_pending(pending)?;
                let mut d = self.accounts[p.debit.0 as usize];
                let mut c = self.accounts[p.credit.0 as usize];
                Self::unreserve(&mut d, &mut c, p.amount.0);
                self.write_account(p.debit, d);
                self.write_account(p.credit, c);
                self.resolve_pending(pending, expires, PendingState::Voided);
                (p.debit, p.credit, p.amount)
            }
            TransferKind::Reverse { original } => {
                let o = *self.transfer(original).ok_or(Reject::ReversalTargetNotFound)?;
                if !matches!(
                    o.request.kind,
                    TransferKind::Post { .. }
                        | TransferKind::PostPending { .. }
                        | TransferKind::Reverse { .. }
                ) {
                    return Err(Reject::ReversalTargetInvalid);
                }
                if self.reversed.contains(&original) {
                    return Err(Reject::AlreadyReversed);
                }
                let (mut d, mut c) = self.pair(o.credit, o.debit, o.amount)?;
                Self::apply_posting(&mut d, &mut c, o.amount.0)?;
                self.write_account(o.credit, d);
                self.write_account(o.debit, c);
                self.reversed.insert(original);
                self.undo.push(Undo::Reversed(original));
                (o.credit, o.debit, o.amount)
            }
        };
        let asset = self.accounts[debit.0 as usize].asset;
        if matches!(
            req.kind,
            TransferKind::Post { .. } | TransferKind::PostPending { .. } | TransferKind::Reverse { .. }
        ) {
            let prev = self.totals[asset.0 as usize];
            self.totals[asset.0 as usize] = prev.checked_add(amount.0).ok_or(Reject::AmountOverflow)?;
            self.undo.push(Undo::Total(asset, prev));
        }
        let transfer = Transfer {
            request: *req,
            debit,
            credit,
            asset,
            amount,
            seq,
            timestamp_ns: now_ns,
        };
        let index = u32::try_from(self.transfers.len()).map_err(|_| Reject::LimitExceeded)?;
        self.transfers.push(transfer);
        self.by_id.insert(req.id, index);
        self.undo.push(Undo::Pushed(req.id));
        Ok(TransferOutcome {
            transfer,
            duplicate: false,
        })
    }

    fn pair(
        &self,
        debit: AccountId,
        credit: AccountId,
        amount: Amount,
    ) -> Result<(Account, Account), Reject> {
        let d = self.account_checked(debit, Reject::DebitAccountNotFound)?;
        let c = self.account_checked(credit, Reject::CreditAccountNotFound)?;
        if debit == credit {
            return Err(Reject::SameAccount);
        }
        if d.asset != c.asset {
            return Err(Reject::AssetMismatch);
        }
        if amount.is_zero() {
            return Err(Reject::AmountZero);
        }
        Ok((d, c))
    }

    /// Posts `amount`, checking both accounts' constraints.
    fn apply_posting(d: &mut Account, c: &mut Account, amount: u128) -> Result<(), Reject> {
        d.debits = d.debits.checked_add(amount).ok_or(Reject::AmountOverflow)?;
        c.credits = c.credits.checked_add(amount).ok_or(Reject::AmountOverflow)?;
        if !d.constraint_holds() && d.normal == Normal::Credit {
            return Err(Reject::InsufficientFunds);
        }
        if !c.constraint_holds() && c.normal == Normal::Debit {
            return Err(Reject::CustodyExceeded);
        }
        // The other sides only grow toward the normal side; a failure there would mean the
        // account was already broken.
        if !d.constraint_holds() || !c.constraint_holds() {
            return Err(Reject::AmountOverflow);
        }
        Ok(())
    }

    /// Reserves `amount` on whichever side of the pair is constrained against it.
    fn reserve(d: &mut Account, c: &mut Account, amount: u128) -> Result<(), Reject> {
        if d.normal == Normal::Credit {
            d.held = d.held.checked_add(amount).ok_or(Reject::AmountOverflow)?;
            if !d.constraint_holds() {
                return Err(Reject::InsufficientFunds);
            }
        }
        if c.normal == Normal::Debit {
            c.held = c.held.checked_add(amount).ok_or(Reject::AmountOverflow)?;
            if !c.constraint_holds() {
                return Err(Reject::CustodyExceeded);
            }
        }
        Ok(())
    }

    fn unreserve(d: &mut Account, c: &mut Account, amount: u128) {
        if d.normal == Normal::Credit {
            d.held = d
                .held
                .checked_sub(amount)
                .expect("ledger: pending hold missing (debit)");
        }
        if c.normal == Normal::Debit {
            c.held = c
                .held
                .checked_sub(amount)
                .expect("ledger: pending hold missing (credit)");
        }
    }

    fn release_pending(&mut self, t: &Transfer) {
        let mut d = self.accounts[t.debit.0 as usize];
        let mut c = self.accounts[t.credit.0 as usize];
        Self::unreserve(&mut d, &mut c, t.amount.0);
        self.accounts[t.debit.0 as usize] = d;
        self.accounts[t.credit.0 as usize] = c;
    }

    fn open_pending(&self, id: TransferId) -> Result<(Transfer, Option<u64>), Reject> {
        match self.pending.get(&id) {
            None => Err(Reject::PendingNotFound),
            Some(PendingState::Posted { .. }) => Err(Reject::PendingAlreadyPosted),
            Some(PendingState::Voided) => Err(Reject::PendingAlreadyVoided),
            Some(PendingState::Expired) => Err(Reject::PendingExpired),
            Some(PendingState::Open { expires_at_ns }) => {
                let t = *self.transfer(id).expect("ledger: pending without transfer");
                Ok((t, *expires_at_ns))
            }
        }
    }

    fn set_pending(&mut self, id: TransferId, state: PendingState) {
        let prev = self.pending.insert(id, state);
        self.undo.push(Undo::Pending(id, prev));
    }

    fn resolve_pending(&mut self, id: TransferId, expires: Option<u64>, state: PendingState) {
        if let Some(at) = expires {
            self.expiries.remove(&(at, id));
            self.undo.push(Undo::ExpiryRemoved(at, id));
        }
        self.set_pending(id, state);
    }

    /// Walks the whole ledger and checks every invariant. `order_holds` gives, per account, what
    /// open orders reserve (the trading engine's part of `held`).
    pub fn audit(&self, order_holds: &BTreeMap<AccountId, u128>) -> Result<LedgerAudit, InvariantViolation> {
        let fail = |m: String| Err(InvariantViolation(m));
        // Balanced per asset.
        let mut sums: BTreeMap<AssetId, (u128, u128)> = BTreeMap::new();
        for (i, a) in self.accounts.iter().enumerate() {
            let e = sums.entry(a.asset).or_default();
            e.0 = match e.0.checked_add(a.debits) {
                Some(v) => v,
                None => return fail(format!("debit sum of asset {} overflows", a.asset)),
            };
            e.1 = match e.1.checked_add(a.credits) {
                Some(v) => v,
                None => return fail(format!("credit sum of asset {} overflows", a.asset)),
            };
            if !a.constraint_holds() {
                return fail(format!(
                    "account {i} ({:?}) breaks its constraint: debits {} credits {} held {}",
                    a.owner, a.debits, a.credits, a.held
                ));
            }
        }
        for (asset, (d, c)) in &sums {
            if d != c {
                return fail(format!("asset {asset} unbalanced: debits {d} credits {c}"));
            }
            if self.totals.get(asset.0 as usize) != Some(d) {
                return fail(format!("asset {asset} total out of step with its accounts"));
            }
        }
        // Holds equal what open pendings and open orders reserve.
        let mut expected: BTreeMap<AccountId, u128> = order_holds.clone();
        let mut resolutions: BTreeMap<TransferId, u32> = BTreeMap::new();
        let mut reversals: BTreeMap<TransferId, u32> = BTreeMap::new();
        for (i, t) in self.transfers.iter().enumerate() {
            if self.by_id.get(&t.request.id) != Some(&(i as u32)) {
                return fail(format!("transfer index broken at {i}"));
            }
            match t.request.kind {
                TransferKind::Hold { .. } => match self.pending.get(&t.request.id) {
                    None => return fail(format!("hold {} has no pending state", t.request.id)),
                    Some(PendingState::Open { .. }) => {
                        let d = self.accounts[t.debit.0 as usize];
                        let c = self.accounts[t.credit.0 as usize];
                        if d.normal == Normal::Credit {
                            *expected.entry(t.debit).or_default() += t.amount.0;
                        }
                        if c.normal == Normal::Debit {
                            *expected.entry(t.credit).or_default() += t.amount.0;
                        }
                    }
                    Some(_) => {}
                },
                TransferKind::PostPending { pending, .. } | TransferKind::VoidPending { pending } => {
                    *resolutions.entry(pending).or_default() += 1;
                }
                TransferKind::Reverse { original } => *reversals.entry(original).or_default() += 1,
                TransferKind::Post { .. } => {}
            }
        }
        for (i, a) in self.accounts.iter().enumerate() {
            let want = expected.get(&AccountId(i as u32)).copied().unwrap_or(0);
            if a.held != want {
                return fail(format!(
                    "account {i} holds {} but open pendings and orders need {want}",
                    a.held
                ));
            }
        }
        for (id, n) in &resolutions {
            let state = self.pending.get(id);
            let ok = *n == 1 && matches!(state, Some(PendingState::Posted { .. } | PendingState::Voided));
            if !ok {
                return fail(format!("pending {id} resolved {n} times, state {state:?}"));
            }
        }
        for (id, state) in &self.pending {
            let resolved = resolutions.get(id).copied().unwrap_or(0);
            let consistent = match state {
                PendingState::Open { expires_at_ns } => {
                    resolved == 0 && expires_at_ns.is_none_or(|at| self.expiries.contains(&(at, *id)))
                }
                PendingState::Expired => resolved == 0,
                PendingState::Posted { .. } | PendingState::Voided => resolved == 1,
            };
            if !consistent {
                return fail(format!(
                    "pending {id} in state {state:?} resolved {resolved} times"
                ));
            }
        }
        for (id, n) in &reversals {
            if *n != 1 || !self.reversed.contains(id) {
                return fail(format!("transfer {id} reversed {n} times"));
            }
        }
        if reversals.len() != self.reversed.len() {
            return fail("reversal set out of step with history".into());
        }
        Ok(LedgerAudit {
            accounts: self.accounts.len(),
            transfers: self.transfers.len(),
            open_pending: self
                .pending
                .values()
                .filter(|s| matches!(s, PendingState::Open { .. }))
                .count(),
        })
    }

    pub fn state(&self) -> LedgerState {
        LedgerState {
            accounts: self.accounts.clone(),
            transfers: self.transfers.clone(),
            pending: self.pending.iter().map(|(k, v)| (*k, *v)).collect(),
            reversed: self.reversed.iter().copied().collect(),
        }
    }

    pub fn from_state(s: LedgerState) -> Ledger {
        let mut l = Ledger {
            accounts: s.accounts,
            transfers: s.transfers,
            pending: s.pending.into_iter().collect(),
            reversed: s.reversed.into_iter().collect(),
            ..Ledger::default()
        };
        for (i, a) in l.accounts.iter().enumerate() {
            if l.totals.len() <= a.asset.0 as usize {
                l.totals.resize(a.asset.0 as usize + 1, 0);
            }
            let t = &mut l.totals[a.asset.0 as usize];
            *t = t.saturating_add(a.debits);
            if let Owner::Customer(u) = a.owner {
                l.customer_index.insert((u, a.asset), AccountId(i as u32));
            }
        }
        for (i, t) in l.transfers.iter().enumerate() {
            l.by_id.insert(t.request.id, i as u32);
        }
        for (id, st) in &l.pending {
            if let PendingState::Open {
                expires_at_ns: Some(at),
            } = st
            {
                l.expiries.insert((*at, *id));
            }
        }
        l
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerAudit {
    pub accounts: usize,
    pub transfers: usize,
    pub open_pending: usize,
}
