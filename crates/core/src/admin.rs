//! Operators' controls: two-person proposals for sensitive changes, halts, incidents
//! (docs/design/withdrawals.md).
//!
//! - Sensitive changes (risk policy, roles, resuming halted withdrawals, unfreezing an account
//!   its owner or an operator froze, whitelisting an address usable at once) are proposed by one
//!   admin and carried out when a second, distinct admin with the required role approves. Each
//!   step needs the admin's fresh second factor bound to that exact proposal. Nobody approves
//!   their own proposal.
//! - Halting is one admin's (or the system's) decision: stopping coins is never dual-controlled.
//! - An incident records what was detected (kind, asset, transactions, the missing amount and
//!   its split between customer and company funds) and stays open until resolved.

use crate::identity::AdminRole;
use crate::money::{Amount, AssetId, UserId};
use crate::reject::Reject;
use crate::risk::RiskPolicy;
use serde::{Deserialize, Serialize};

pub const PROPOSALS_OPEN_MAX: usize = 256;
pub const INCIDENTS_MAX: usize = 1 << 16;
pub const TEXT_LEN_MAX: usize = 1024;
pub const TXIDS_PER_INCIDENT_MAX: usize = 64;

/// An operation of an asset that can be halted besides withdrawals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    Deposits,
    Trading,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Deposits => "deposits",
            Operation::Trading => "trading",
        }
    }
    pub fn from_name(s: &str) -> Option<Operation> {
        [Operation::Deposits, Operation::Trading]
            .into_iter()
            .find(|o| o.name() == s)
    }
}

/// What a proposal changes once a second admin approves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminChange {
    SetRiskPolicy(RiskPolicy),
    SetRoles {
        user: UserId,
        roles: Vec<AdminRole>,
    },
    /// Resumes withdrawals of one asset, or of every asset.
    ResumeWithdrawals {
        asset: Option<AssetId>,
    },
    /// Resumes deposits or trading of an asset.
    ResumeOperation {
        asset: AssetId,
        operation: Operation,
    },
    /// Makes a frozen or disabled account active again. Freezing stays one person's decision
    /// (it protects); undoing it takes two.
    UnfreezeUser {
        user: UserId,
    },
    /// Whitelists a withdrawal address for a user on two admins' word: what an operator's
    /// whitelisting, or one usable at once (`cooling_ns` 0), needs once admins prove with
    /// passkeys. Withdrawals to it still need the user's own proof.
    WhitelistAddress {
        user: UserId,
        asset: AssetId,
        address: String,
        label: String,
        cooling_ns: u64,
    },
    /// Pays the customers an incident attributed its customer share to, from the insurance
    /// fund, then the company treasury (docs/design/restitution.md). Last: journals before it
    /// keep their variant numbers.
    Restitution(RestitutionPlan),
}

impl AdminChange {
    /// The role both the proposer and the approver need.
    pub fn role(&self) -> AdminRole {
        match self {
            AdminChange::SetRiskPolicy(_) => AdminRole::Risk,
            // Where coins may go at once is the treasury's call, made by two of them.
            AdminChange::WhitelistAddress { .. } | AdminChange::Restitution(_) => AdminRole::Treasury,
            AdminChange::SetRoles { .. }
            | AdminChange::ResumeWithdrawals { .. }
            | AdminChange::ResumeOperation { .. }
            | AdminChange::UnfreezeUser { .. } => AdminRole::SecurityAdmin,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            AdminChange::SetRiskPolicy(_) => "set_risk_policy",
            AdminChange::SetRoles { .. } => "set_roles",
            AdminChange::ResumeWithdrawals { .. } => "resume_withdrawals",
            AdminChange::ResumeOperation { .. } => "resume_operation",
            AdminChange::UnfreezeUser { .. } => "unfreeze_user",
            AdminChange::WhitelistAddress { .. } => "whitelist_address",
            AdminChange::Restitution(_) => "restitution",
        }
    }
    /// BLAKE3 (derive-key mode) of the change's canonical encoding: what a second factor approves.
    pub fn digest(&self) -> [u8; 32] {
        let bytes = postcard::to_stdvec(self).expect("changes always serialize");
        let mut h = blake3::Hasher::new_derive_key("kinko admin change v1");
        h.update(&bytes);
        *h.finalize().as_bytes()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposalStatus {
    Open,
    Executed,
    Withdrawn,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: u64,
    pub change: AdminChange,
    pub proposer: UserId,
    pub reason: String,
    pub approver: Option<UserId>,
    pub status: ProposalStatus,
    pub created_ns: u64,
    pub updated_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IncidentStatus {
    Open,
    Resolved,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    /// e.g. `unapproved_outflow`, `reserve_shortfall`, `risk_halt`.
    pub kind: String,
    pub asset: Option<AssetId>,
    pub summary: String,
    pub txids: Vec<String>,
    /// What is missing, and its split between customers' and the company's funds (in
    /// proportion to what each had in custody when it was detected).
    pub missing: Amount,
    pub customer_share: Amount,
    pub company_share: Amount,
    /// Who opened it (`system:<component>` or an admin).
    pub opened_by: String,
    pub opened_ns: u64,
    pub status: IncidentStatus,
    pub resolution: Option<String>,
    pub resolved_ns: u64,
    /// The customer share attributed to the customers who held the asset when the incident
    /// opened, in proportion to their balances ([`split`]), by user id; empty when nobody held
    /// it or more than [`AFFECTED_ACCOUNTS_MAX`] did (`affected_over_limit`).
    pub affected: Vec<(UserId, Amount)>,
    pub affected_over_limit: bool,
    /// The restitution proposal executed for this incident.
    pub restitution: Option<u64>,
}

/// Customers an incident records by name, at most (and so the lines of a restitution plan).
pub const AFFECTED_ACCOUNTS_MAX: usize = 4096;

/// An exchange rate as a fraction: `num` minor units of the paid asset per `den` minor units of
/// the lost one. Never a float.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub num: u128,
    pub den: u128,
}

impl Rate {
    /// `owed` converted, rounded up: the customer never receives less than the rate says.
    pub fn convert_up(self, owed: Amount) -> Option<Amount> {
        if self.num == 0 || self.den == 0 {
            return None;
        }
        let p = owed.0.checked_mul(self.num)?;
        Some(Amount(p.div_ceil(self.den)))
    }
}

/// One customer's restitution: what the incident attributed to them (`owed`, in the lost
/// asset) and what is paid (`pay`, in the plan's paid asset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestitutionLine {
    pub user: UserId,
    pub owed: Amount,
    pub pay: Amount,
}

/// A restitution plan: exactly the incident's attribution, paid in its asset or in another at
/// `rate`, funded from the insurance fund first and the company treasury for the rest. The
/// proposal's digest covers all of it; the engine checks it again when it is approved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestitutionPlan {
    pub incident: u64,
    /// The asset paid: the incident's asset (`rate` none) or another one at `rate`.
    pub pay_asset: AssetId,
    pub rate: Option<Rate>,
    /// Sorted by user, one per affected customer.
    pub lines: Vec<RestitutionLine>,
    pub from_insurance: Amount,
    pub from_treasury: Amount,
}

impl RestitutionPlan {
    /// The sum paid, checked.
    pub fn total(&self) -> Option<Amount> {
        self.lines
            .iter()
            .try_fold(0u128, |t, l| t.checked_add(l.pay.0))
            .map(Amount)
    }
    /// The plan's hash (the proposal's change digest): what both admins' passkeys sign.
    pub fn hash(&self) -> [u8; 32] {
        AdminChange::Restitution(self.clone()).digest()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminEvent {
    Proposed(Box<Proposal>),
    Executed(Box<Proposal>),
    Withdrawn(Box<Proposal>),
    Halted {
        asset: Option<AssetId>,
        by: String,
        reason: String,
    },
    Resumed {
        asset: Option<AssetId>,
        by: String,
    },
    OperationHalted {
        asset: AssetId,
        operation: Operation,
        by: String,
        reason: String,
    },
    OperationResumed {
        asset: AssetId,
        operation: Operation,
        by: String,
    },
    IncidentOpened(Box<Incident>),
    IncidentResolved(Box<Incident>),
    /// A customer was paid by an executed restitution plan (one per line).
    RestitutionPaid {
        incident: u64,
        proposal: u64,
        user: UserId,
        asset: AssetId,
        amount: Amount,
    },
    /// The incident records the executed restitution plan.
    IncidentRestituted(Box<Incident>),
}

/// The admin state, in canonical form.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminState {
    pub proposals: Vec<Proposal>,
    pub incidents: Vec<Incident>,
    /// Every asset's withdrawals halted (a global halt), and why.
    pub global_halt: Option<String>,
}

pub(crate) fn text_ok(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= TEXT_LEN_MAX && !s.chars().any(char::is_control)
}

impl AdminState {
    pub fn proposal(&self, id: u64) -> Option<&Proposal> {
        self.proposals.get(usize::try_from(id.checked_sub(1)?).ok()?)
    }
    pub fn incident(&self, id: u64) -> Option<&Incident> {
        self.incidents.get(usize::try_from(id.checked_sub(1)?).ok()?)
    }
    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.iter().filter(|i| i.status == IncidentStatus::Open)
    }

    pub(crate) fn propose(
        &mut self,
        change: AdminChange,
        proposer: UserId,
        reason: &str,
        now_ns: u64,
        events: &mut Vec<AdminEvent>,
    ) -> Result<Proposal, Reject> {
        if !text_ok(reason) {
            return Err(Reject::ReasonRequired);
        }
        let open = self
            .proposals
            .iter()
            .filter(|p| p.status == ProposalStatus::Open)
            .count();
        if open >= PROPOSALS_OPEN_MAX {
            return Err(Reject::LimitExceeded);
        }
        let p = Proposal {
            id: self.proposals.len() as u64 + 1,
            change,
            proposer,
            reason: reason.trim().to_owned(),
            approver: None,
            status: ProposalStatus::Open,
            created_ns: now_ns,
            updated_ns: now_ns,
        };
        self.proposals.push(p.clone());
        events.push(AdminEvent::Proposed(Box::new(p.clone())));
        Ok(p)
    }

    /// Checks that `approver` may approve proposal `id` (open, not their own).
    pub(crate) fn check_approval(&self, id: u64, approver: UserId) -> Result<&Proposal, Reject> {
        let p = self.proposal(id).ok_or(Reject::ProposalNotFound)?;
        if p.status != ProposalStatus::Open {
            return Err(Reject::ProposalNotOpen);
        }
        if p.proposer == approver {
            return Err(Reject::OwnProposal);
        }
        Ok(p)
    }

    pub(crate) fn mark_executed(
        &mut self,
        id: u64,
        approver: UserId,
        now_ns: u64,
        events: &mut Vec<AdminEvent>,
    ) {
        let p = &mut self.proposals[(id - 1) as usize];
        p.approver = Some(approver);
        p.status = ProposalStatus::Executed;
        p.updated_ns = now_ns;
        events.push(AdminEvent::Executed(Box::new(p.clone())));
    }

    pub(crate) fn withdraw(
        &mut self,
        id: u64,
        by: UserId,
        now_ns: u64,
        events: &mut Vec<AdminEvent>,
    ) -> Result<(), Reject> {
        let p = self.proposal(id).ok_or(Reject::ProposalNotFound)?;
        if p.status != ProposalStatus::Open {
            return Err(Reject::ProposalNotOpen);
        }
        if p.proposer != by {
            return Err(Reject::RoleRequired);
        }
        let p = &mut self.proposals[(id - 1) as usize];
        p.status = ProposalStatus::Withdrawn;
        p.updated_ns = now_ns;
        events.push(AdminEvent::Withdrawn(Box::new(p.clone())));
        Ok(())
    }

    /// Records an executed restitution on its incident.
    pub(crate) fn mark_restituted(&mut self, incident: u64, proposal: u64, events: &mut Vec<AdminEvent>) {
        if let Some(i) = usize::try_from(incident.wrapping_sub(1))
            .ok()
            .and_then(|n| self.incidents.get_mut(n))
        {
            i.restitution = Some(proposal);
            events.push(AdminEvent::IncidentRestituted(Box::new(i.clone())));
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open_incident(
        &mut self,
        kind: &str,
        asset: Option<AssetId>,
        summary: &str,
        txids: &[String],
        missing: Amount,
        shares: (Amount, Amount),
        affected: (Vec<(UserId, Amount)>, bool),
        opened_by: &str,
        now_ns: u64,
        events: &mut Vec<AdminEvent>,
    ) -> Result<Incident, Reject> {
        if !text_ok(kind)
            || kind.len() > 64
            || !text_ok(summary)
            || !text_ok(opened_by)
            || opened_by.len() > 64
        {
            return Err(Reject::ReasonRequired);
        }
        if txids.len() > TXIDS_PER_INCIDENT_MAX || txids.iter().any(|t| t.is_empty() || t.len() > 128) {
            return Err(Reject::TxidInvalid);
        }
        if self.incidents.len() >= INCIDENTS_MAX {
            return Err(Reject::LimitExceeded);
        }
        let i = Incident {
            id: self.incidents.len() as u64 + 1,
            kind: kind.to_owned(),
            asset,
            summary: summary.trim().to_owned(),
            txids: txids.to_vec(),
            missing,
            customer_share: shares.0,
            company_share: shares.1,
            opened_by: opened_by.to_owned(),
            opened_ns: now_ns,
            status: IncidentStatus::Open,
            resolution: None,
            resolved_ns: 0,
            affected: affected.0,
            affected_over_limit: affected.1,
            restitution: None,
        };
        self.incidents.push(i.clone());
        events.push(AdminEvent::IncidentOpened(Box::new(i.clone())));
        Ok(i)
    }

    pub(crate) fn resolve_incident(
        &mut self,
        id: u64,
        resolution: &str,
        now_ns: u64,
        events: &mut Vec<AdminEvent>,
    ) -> Result<Incident, Reject> {
        if !text_ok(resolution) {
            return Err(Reject::ReasonRequired);
        }
        let i = self
            .incidents
            .get_mut(usize::try_from(id.wrapping_sub(1)).unwrap_or(usize::MAX))
            .ok_or(Reject::IncidentNotFound)?;
        if i.status != IncidentStatus::Open {
            return Err(Reject::IncidentNotFound);
        }
        i.status = IncidentStatus::Resolved;
        i.resolution = Some(resolution.trim().to_owned());
        i.resolved_ns = now_ns;
        events.push(AdminEvent::IncidentResolved(Box::new(i.clone())));
        Ok(i.clone())
    }
}

/// `total` split over `weights` in proportion, rounded down, the units left over given to the
/// largest remainders (ties: the earlier one): the parts add up to `total` exactly whenever a
/// weight is non-zero.
pub fn split(total: u128, weights: &[u128]) -> Vec<u128> {
    let sum = weights.iter().fold(0u128, |t, w| t.saturating_add(*w));
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut parts = Vec::with_capacity(weights.len());
    let mut rems = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let (q, r) = match total.checked_mul(*w) {
            Some(p) => (p / sum, p % sum),
            // Too large to multiply: coarser, the leftover still goes out below.
            None => (total / sum * w, 0),
        };
        parts.push(q);
        rems.push((r, i));
    }
    let given = parts.iter().fold(0u128, |t, p| t.saturating_add(*p));
    let mut left = total.saturating_sub(given);
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    // Exact products leave less than one unit per part; the coarse path may leave more,
    // which goes to the largest weight.
    for (_, i) in &rems {
        if left == 0 {
            break;
        }
        parts[*i] += 1;
        left -= 1;
    }
    if left > 0 {
        let heaviest = (0..weights.len()).max_by_key(|i| (weights[*i], std::cmp::Reverse(*i)));
        if let Some(i) = heaviest {
            parts[i] = parts[i].saturating_add(left);
        }
    }
    parts
}

/// Splits `missing` between customers and the company in proportion to `customers` and
/// `company` (what each had of the asset). The customers' share is rounded down.
pub fn split_loss(missing: Amount, customers: u128, company: u128) -> (Amount, Amount) {
    let total = customers.saturating_add(company);
    if total == 0 {
        return (missing, Amount(0));
    }
    // missing × customers / total without overflow: both operands below 2^64 in practice; fall
    // back to a coarser division when the product would overflow.
    let c = match missing.0.checked_mul(customers) {
        Some(p) => p / total,
        None => missing.0 / total.max(1) * customers,
    }
    .min(missing.0);
    (Amount(c), Amount(missing.0 - c))
}
