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
}

impl AdminChange {
    /// The role both the proposer and the approver need.
    pub fn role(&self) -> AdminRole {
        match self {
            AdminChange::SetRiskPolicy(_) => AdminRole::Risk,
            // Where coins may go at once is the treasury's call, made by two of them.
            AdminChange::WhitelistAddress { .. } => AdminRole::Treasury,
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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminEvent {
    Proposed(Proposal),
    Executed(Proposal),
    Withdrawn(Proposal),
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
    IncidentOpened(Incident),
    IncidentResolved(Incident),
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
        events.push(AdminEvent::Proposed(p.clone()));
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
        events.push(AdminEvent::Executed(p.clone()));
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
        events.push(AdminEvent::Withdrawn(p.clone()));
        Ok(())
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
        };
        self.incidents.push(i.clone());
        events.push(AdminEvent::IncidentOpened(i.clone()));
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
        events.push(AdminEvent::IncidentResolved(i.clone()));
        Ok(i.clone())
    }
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
