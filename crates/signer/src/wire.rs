//! What the signer makes of the protocol's messages ([`kinko_signer_proto`]): the withdrawal
//! with the engine's typed ids and amount, and the proof as kinko-core's [`StepUp`], so that the
//! checks recompute the step-up action's digest and challenge with kinko-core's own code.

use kinko_core::identity::{ProofFactor, StepUp};
use kinko_core::wallet::{AddressId, WithdrawalId};
use kinko_core::{Amount, AssetId, UserId};
use kinko_signer_proto::protocol as proto;

/// A withdrawal to sign, as the checks see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withdrawal {
    pub id: WithdrawalId,
    pub user: UserId,
    pub asset: AssetId,
    pub address_id: AddressId,
    pub address: String,
    pub amount: Amount,
    pub client_id: Option<u128>,
    pub proof: Option<StepUp>,
    /// Reviewers' approvals: (reviewer, proof).
    pub reviews: Vec<(UserId, StepUp)>,
    /// Approvals the engine's policy asked for.
    pub approvals_needed: u32,
    /// Seconds it waited after the request, as the exchange says (bounded by `delay_max_s`).
    pub waited_s: u64,
}

impl From<&proto::Withdrawal> for Withdrawal {
    fn from(w: &proto::Withdrawal) -> Withdrawal {
        Withdrawal {
            id: WithdrawalId(w.id),
            user: UserId(w.user),
            asset: AssetId(w.asset),
            address_id: AddressId(w.address_id),
            address: w.address.clone(),
            amount: Amount(w.amount),
            client_id: w.client_id,
            proof: w.proof.as_ref().map(step_up),
            reviews: w
                .reviews
                .iter()
                .map(|r| (UserId(r.reviewer), step_up(&r.proof)))
                .collect(),
            approvals_needed: w.approvals_needed,
            waited_s: w.waited_s,
        }
    }
}

/// A proof of the protocol as kinko-core's [`StepUp`].
pub fn step_up(p: &proto::StepUp) -> StepUp {
    StepUp {
        action: p.action,
        issued_ns: p.issued_ns,
        nonce: p.nonce,
        factor: match &p.factor {
            proto::ProofFactor::Totp { step, code } => ProofFactor::Totp {
                step: *step,
                code: code.clone(),
            },
            proto::ProofFactor::Passkey {
                credential_id,
                authenticator_data,
                client_data_json,
                signature,
            } => ProofFactor::Passkey {
                credential_id: credential_id.clone(),
                authenticator_data: authenticator_data.clone(),
                client_data_json: client_data_json.clone(),
                signature: signature.clone(),
            },
            proto::ProofFactor::Recovery { code_hash } => ProofFactor::Recovery {
                code_hash: *code_hash,
            },
        },
    }
}
