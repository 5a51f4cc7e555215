//! What the custody service sends the signer: its protocol's own messages
//! ([`kinko_signer_proto`]), made here from the engine's records, so that the signer protocol
//! changes only when kinko-signer-proto does.

use kinko_core::identity::{ProofFactor, StepUp};
use kinko_core::wallet::Withdrawal;
use kinko_signer_proto::protocol as proto;

/// The withdrawal as the signer checks it: what the user approved, the proof, and the
/// reviewers' approvals with theirs.
pub fn withdrawal(w: &Withdrawal) -> proto::Withdrawal {
    proto::Withdrawal {
        id: w.id.0,
        user: w.user.0,
        asset: w.asset.0,
        address_id: w.address_id.0,
        address: w.address.clone(),
        amount: w.amount.0,
        client_id: w.client_id,
        proof: w.proof.as_ref().map(step_up),
        // Each reviewer's approval with its proof: the signer verifies them itself.
        reviews: w
            .approvals
            .iter()
            .zip(&w.approval_proofs)
            .map(|(reviewer, proof)| proto::Review {
                reviewer: reviewer.0,
                proof: step_up(proof),
            })
            .collect(),
        // The engine held it for this many approvals (0: not held): never signed with fewer.
        approvals_needed: u32::from(w.approvals_needed),
        // The risk delay it waited (the signer believes it up to its own `delay_max_s`).
        waited_s: w.not_before_ns.saturating_sub(w.requested_ns) / 1_000_000_000,
    }
}

/// A step-up proof in the protocol's form (withdrawals, registrations' approvals).
pub fn step_up(p: &StepUp) -> proto::StepUp {
    proto::StepUp {
        action: p.action,
        issued_ns: p.issued_ns,
        nonce: p.nonce,
        factor: match &p.factor {
            ProofFactor::Totp { step, code } => proto::ProofFactor::Totp {
                step: *step,
                code: code.clone(),
            },
            ProofFactor::Passkey {
                credential_id,
                authenticator_data,
                client_data_json,
                signature,
            } => proto::ProofFactor::Passkey {
                credential_id: credential_id.clone(),
                authenticator_data: authenticator_data.clone(),
                client_data_json: client_data_json.clone(),
                signature: signature.clone(),
            },
            ProofFactor::Recovery { code_hash } => proto::ProofFactor::Recovery {
                code_hash: *code_hash,
            },
        },
    }
}
