//! The signer's own judgement: the checks before `sign_withdrawal` and `sign_sweep` sign, in the
//! order of docs/design/custody.md ("Checks before sign_withdrawal signs"), each refusal with a
//! stable code. Nothing here does I/O or reads a clock: the caller passes the registry (rebuilt
//! from the signer's log), the configuration, the hot account and `now`.

use crate::config::Config;
use crate::log::{ApprovalUse, FactorUse, ProofUse};
use crate::registry::Registry;
use crate::wire::Withdrawal;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bitcoin::bip32::{ChildNumber, DerivationPath, Fingerprint};
use bitcoin::psbt::Psbt;
use bitcoin::sighash::EcdsaSighashType;
use bitcoin::{ScriptBuf, TxOut};
use kinko_chain::keys::{derive_cold, derive_hot, ColdKeys, WatchKey};
use kinko_chain::Network;
use kinko_core::identity::{Action, ProofFactor, StepUp};
use kinko_core::UserId;
use kinko_factors::webauthn::{self, AssertionResponse, AuthenticatorAssertion};
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

const NS: u64 = 1_000_000_000;
/// How far in the future (by the signer's clock) a proof's issue time may be.
pub const PROOF_FUTURE_NS: u64 = 60 * NS;
/// The TOTP time step.
pub const TOTP_STEP_NS: u64 = kinko_factors::totp::STEP_S * NS;
/// Cold receive indexes searched for an output that names no derivation.
pub const COLD_SCAN_MAX: u32 = 10_000;
/// Most inputs and outputs a PSBT may have.
pub const PSBT_INPUTS_MAX: usize = 1_000;
pub const PSBT_OUTPUTS_MAX: usize = 1_000;
/// The rolling window of the TOTP budget.
pub const TOTP_BUDGET_WINDOW_NS: u64 = 86_400 * NS;

/// How old a withdrawal's proof may be: the engine's window (`proof_max_age_s`) plus the time
/// the withdrawal legitimately waited, which the exchange states (`waited_s`) and the signer
/// believes only up to its own `delay_max_s` (and never beyond `wait_max_s`).
pub fn proof_window_ns(p: &crate::config::PolicyConfig, waited_s: u64) -> u64 {
    let wait = waited_s.min(p.delay_max_s).min(p.wait_max_s);
    p.proof_max_age_s.saturating_add(wait).saturating_mul(NS)
}

/// Stable refusal codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Signing is halted after a tamper refusal, until `kinko-signer clear`.
    SignerHalted,
    /// The withdrawal's asset is not this signer's (config `asset_id`).
    AssetWrong,
    /// The PSBT is not valid base64 / BIP 174.
    PsbtMalformed,
    /// This withdrawal id was signed before for another transaction (tamper).
    AlreadySigned,
    /// No TOTP or passkey proof (none, or a recovery code).
    ProofMissing,
    /// The proof names another action than the withdrawal (tamper).
    ProofMismatch,
    /// The proof is older than `proof_max_age_s` (or from the future).
    ProofStale,
    /// The proof's factor is not in the signer's registry for that user.
    FactorUnknown,
    /// The factor was learned less than `credential_maturity_s` ago.
    FactorImmature,
    /// The assertion or code does not verify, or was used before (tamper).
    ProofInvalid,
    /// The destination is not registered for that user and address id.
    AddressUnknown,
    /// The address was learned less than `address_cooling_s` ago.
    AddressCooling,
    /// An input is not ours (derivation, script or signing mode) (tamper).
    InputForeign,
    /// The outputs do not pay the destination exactly the amount once (tamper).
    PsbtMismatch,
    /// An output other than the payment is not our change (tamper).
    ChangeForeign,
    FeeTooHigh,
    LimitTx,
    LimitWindow,
    /// register_address: another destination under a known address id (tamper).
    AddressConflict,
    /// register_address: not an address of this network or asset.
    AddressInvalid,
    /// register_passkey: another key under a known credential id (tamper).
    FactorConflict,
    /// register_passkey / register_totp: an unreadable key or a secret of a bad length.
    FactorInvalid,
    /// sign_sweep without a `[cold]` configuration.
    SweepUnconfigured,
    /// clear: unknown or expired nonce, or a wrong MAC.
    ClearInvalid,
    /// The log could not be written; nothing was decided.
    LogUnavailable,
    /// Signing itself failed.
    SignFailed,
    /// witness (or the journal head of a signing request): the head contradicts one the
    /// signer cosigned before — a lower sequence or tree size, another hash at the same
    /// sequence, an audit tree not consistent with the last one — so the host's history was
    /// rewritten (tamper).
    HistoryForked,
    /// witness: an unknown log name, or a head the signer cannot judge (a malformed proof).
    WitnessInvalid,
    /// Review is required (the engine held it, or the signer's own dual-approval or fan-in
    /// rule) and fewer valid reviewers' assertions came with it than needed.
    ReviewRequired,
    /// A review names a reviewer who is not an admin enrolled at the signer.
    ReviewerUnknown,
    /// A review is by the user who asked for the withdrawal.
    ReviewerIsRequester,
    /// The same admin reviewed twice.
    ReviewsNotDistinct,
    /// A review's assertion is over another action (another withdrawal, amount, destination),
    /// not made with the admin's enrolled passkey, or does not verify.
    ReviewInvalid,
    /// A review's assertion is older than `review_max_age_s` (or from the future).
    ReviewStale,
    /// admin_change / clear: fewer valid assertions of distinct enrolled admins than the quorum.
    QuorumMissing,
    /// admin_change: the keystore MAC over the ceremony digest is wrong.
    AdminMacInvalid,
    /// admin_change: the change cannot apply (unknown admin, quorum out of range, bad record).
    AdminChangeInvalid,
    /// halt: an empty, overlong or unprintable reason or source.
    HaltInvalid,
    /// A registration or forget for a user the signer holds a factor of, without an approval
    /// it verifies over exactly that change (or one that replaces a TOTP secret); alerted.
    RegistrationUnapproved,
    /// More than `registrations_per_hour_max` registrations in the last hour; alerted.
    RegistrationRate,
    /// TOTP alone (a TOTP proof, or an address approved by TOTP) would approve more than
    /// `totp_budget_sats` for the user in 24 h: a passkey proof is needed.
    TotpBudgetExceeded,
    /// Ethereum (docs/design/ethereum.md): not a well-formed unsigned EIP-1559 transaction
    /// (or a non-empty access list, a contract creation, a priority fee above the fee cap).
    EthTxMalformed,
    /// Ethereum: the transaction's chain id is not the configured one (tamper).
    ChainIdWrong,
    /// Ethereum: it pays another destination or amount than approved (tamper).
    TxPaysOther,
    /// Ethereum: calldata on an ETH payment, or a token call that is not exactly
    /// `transfer(address,uint256)` (`approve`, extra bytes), or ETH sent with it (tamper).
    CalldataForbidden,
    /// Ethereum: a contract other than the asset's allowlisted token (tamper).
    TokenNotAllowed,
    /// Ethereum: the nonce is not the next one the signer expects for the key (a gap, or one
    /// used before without being a valid replacement).
    NonceUnexpected,
    /// Ethereum: a transaction at a nonce signed before that changes what it pays, or does not
    /// raise both fees (tamper).
    ReplacementInvalid,
    /// The request comes from a cluster epoch older than the newest this signer has seen: a
    /// deposed primary (docs/design/replication.md).
    StaleEpoch,
    /// sign_liabilities_root: the root's sequence is beyond the journal head the signer last
    /// cosigned: a state the signer never saw (docs/design/proofs.md).
    RootNotWitnessed,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::SignerHalted => "SIGNER_HALTED",
            Code::AssetWrong => "ASSET_WRONG",
            Code::PsbtMalformed => "PSBT_MALFORMED",
            Code::AlreadySigned => "ALREADY_SIGNED",
            Code::ProofMissing => "PROOF_MISSING",
            Code::ProofMismatch => "PROOF_MISMATCH",
            Code::ProofStale => "PROOF_STALE",
            Code::FactorUnknown => "FACTOR_UNKNOWN",
            Code::FactorImmature => "FACTOR_IMMATURE",
            Code::ProofInvalid => "PROOF_INVALID",
            Code::AddressUnknown => "ADDRESS_UNKNOWN",
            Code::AddressCooling => "ADDRESS_COOLING",
            Code::InputForeign => "INPUT_FOREIGN",
            Code::PsbtMismatch => "PSBT_MISMATCH",
            Code::ChangeForeign => "CHANGE_FOREIGN",
            Code::FeeTooHigh => "FEE_TOO_HIGH",
            Code::LimitTx => "LIMIT_TX",
            Code::LimitWindow => "LIMIT_WINDOW",
            Code::AddressConflict => "ADDRESS_CONFLICT",
            Code::AddressInvalid => "ADDRESS_INVALID",
            Code::FactorConflict => "FACTOR_CONFLICT",
            Code::FactorInvalid => "FACTOR_INVALID",
            Code::SweepUnconfigured => "SWEEP_UNCONFIGURED",
            Code::ClearInvalid => "CLEAR_INVALID",
            Code::LogUnavailable => "LOG_UNAVAILABLE",
            Code::SignFailed => "SIGN_FAILED",
            Code::HistoryForked => "HISTORY_FORKED",
            Code::WitnessInvalid => "WITNESS_INVALID",
            Code::ReviewRequired => "REVIEW_REQUIRED",
            Code::ReviewerUnknown => "REVIEWER_UNKNOWN",
            Code::ReviewerIsRequester => "REVIEWER_IS_REQUESTER",
            Code::ReviewsNotDistinct => "REVIEWS_NOT_DISTINCT",
            Code::ReviewInvalid => "REVIEW_INVALID",
            Code::ReviewStale => "REVIEW_STALE",
            Code::QuorumMissing => "QUORUM_MISSING",
            Code::AdminMacInvalid => "ADMIN_MAC_INVALID",
            Code::AdminChangeInvalid => "ADMIN_CHANGE_INVALID",
            Code::HaltInvalid => "HALT_INVALID",
            Code::RegistrationUnapproved => "REGISTRATION_UNAPPROVED",
            Code::RegistrationRate => "REGISTRATION_RATE",
            Code::TotpBudgetExceeded => "TOTP_BUDGET_EXCEEDED",
            Code::EthTxMalformed => "ETH_TX_MALFORMED",
            Code::ChainIdWrong => "CHAIN_ID_WRONG",
            Code::TxPaysOther => "TX_PAYS_OTHER",
            Code::CalldataForbidden => "CALLDATA_FORBIDDEN",
            Code::TokenNotAllowed => "TOKEN_NOT_ALLOWED",
            Code::NonceUnexpected => "NONCE_UNEXPECTED",
            Code::ReplacementInvalid => "REPLACEMENT_INVALID",
            Code::StaleEpoch => "STALE_EPOCH",
            Code::RootNotWitnessed => "ROOT_NOT_WITNESSED",
        }
    }

    /// Whether the refusal is raised as an alert to the signer's admins (review and admin
    /// checks: someone tried to skip a person).
    pub fn alerted(self) -> bool {
        matches!(
            self,
            Code::ReviewRequired
                | Code::ReviewerUnknown
                | Code::ReviewerIsRequester
                | Code::ReviewsNotDistinct
                | Code::ReviewInvalid
                | Code::ReviewStale
                | Code::QuorumMissing
                | Code::AdminMacInvalid
                | Code::ClearInvalid
        ) || self.tamper()
    }

    /// Whether the refusal means someone is lying to the signer: it halts all signing.
    pub fn tamper(self) -> bool {
        matches!(
            self,
            Code::AlreadySigned
                | Code::ProofMismatch
                | Code::ProofInvalid
                | Code::InputForeign
                | Code::PsbtMismatch
                | Code::ChangeForeign
                | Code::AddressConflict
                | Code::FactorConflict
                | Code::HistoryForked
                | Code::ChainIdWrong
                | Code::TxPaysOther
                | Code::CalldataForbidden
                | Code::TokenNotAllowed
                | Code::ReplacementInvalid
        )
    }

    pub const ALL: [Code; 50] = [
        Code::SignerHalted,
        Code::AssetWrong,
        Code::PsbtMalformed,
        Code::AlreadySigned,
        Code::ProofMissing,
        Code::ProofMismatch,
        Code::ProofStale,
        Code::FactorUnknown,
        Code::FactorImmature,
        Code::ProofInvalid,
        Code::AddressUnknown,
        Code::AddressCooling,
        Code::InputForeign,
        Code::PsbtMismatch,
        Code::ChangeForeign,
        Code::FeeTooHigh,
        Code::LimitTx,
        Code::LimitWindow,
        Code::AddressConflict,
        Code::AddressInvalid,
        Code::FactorConflict,
        Code::FactorInvalid,
        Code::SweepUnconfigured,
        Code::ClearInvalid,
        Code::LogUnavailable,
        Code::SignFailed,
        Code::HistoryForked,
        Code::WitnessInvalid,
        Code::ReviewRequired,
        Code::ReviewerUnknown,
        Code::ReviewerIsRequester,
        Code::ReviewsNotDistinct,
        Code::ReviewInvalid,
        Code::ReviewStale,
        Code::QuorumMissing,
        Code::AdminMacInvalid,
        Code::AdminChangeInvalid,
        Code::HaltInvalid,
        Code::RegistrationUnapproved,
        Code::RegistrationRate,
        Code::TotpBudgetExceeded,
        Code::EthTxMalformed,
        Code::ChainIdWrong,
        Code::TxPaysOther,
        Code::CalldataForbidden,
        Code::TokenNotAllowed,
        Code::NonceUnexpected,
        Code::ReplacementInvalid,
        Code::StaleEpoch,
        Code::RootNotWitnessed,
    ];
}

/// A refusal: its code and a reason for the operator (no secrets in it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: Code,
    pub reason: String,
}

fn refuse<T>(code: Code, reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        code,
        reason: reason.into(),
    })
}

/// Parses a base64 PSBT and bounds its size.
pub fn parse_psbt(text: &str) -> Result<Psbt, Refusal> {
    let psbt = match kinko_chain::psbt::from_base64(text) {
        Ok(p) => p,
        Err(e) => return refuse(Code::PsbtMalformed, format!("not a base64 PSBT: {e}")),
    };
    if psbt.inputs.is_empty() || psbt.inputs.len() > PSBT_INPUTS_MAX {
        return refuse(Code::PsbtMalformed, "the PSBT has no inputs or too many");
    }
    if psbt.outputs.is_empty() || psbt.outputs.len() > PSBT_OUTPUTS_MAX {
        return refuse(Code::PsbtMalformed, "the PSBT has no outputs or too many");
    }
    Ok(psbt)
}

/// The signer's hot account, as the PSBT checks need it.
#[derive(Clone, Copy, Debug)]
pub struct Hot<'a> {
    pub net: Network,
    pub key: &'a WatchKey,
}

impl Hot<'_> {
    /// `(chain, index)` if `path` is `account/chain/index` with chain 0 or 1, both unhardened.
    fn split(&self, path: &DerivationPath) -> Option<(u32, u32)> {
        let account: &[ChildNumber] = self.key.path.as_ref();
        let p: &[ChildNumber] = path.as_ref();
        if p.len() != account.len() + 2 || &p[..account.len()] != account {
            return None;
        }
        match (p[account.len()], p[account.len() + 1]) {
            (ChildNumber::Normal { index: chain }, ChildNumber::Normal { index }) if chain <= 1 => {
                Some((chain, index))
            }
            _ => None,
        }
    }

    /// Whether `txout` is our change output, as `derivation` claims: `account/1/i` with the
    /// script of that key.
    fn is_change(
        &self,
        derivation: &BTreeMap<bitcoin::secp256k1::PublicKey, bitcoin::bip32::KeySource>,
        txout: &TxOut,
    ) -> bool {
        derivation.values().any(|(fp, path)| {
            *fp == self.key.fingerprint
                && matches!(self.split(path), Some((1, i))
                    if derive_hot(self.net, self.key, 1, i).is_ok_and(|d| d.script_pubkey == txout.script_pubkey))
        })
    }
}

/// Checks every input is ours (P2WPKH of the hot account, named by our fingerprint, signed
/// with SIGHASH_ALL) and returns the total they spend.
pub fn check_inputs(psbt: &Psbt, hot: Hot<'_>) -> Result<u64, Refusal> {
    let mut total: u64 = 0;
    for (i, input) in psbt.inputs.iter().enumerate() {
        let foreign = |why: &str| refuse(Code::InputForeign, format!("input {i}: {why}"));
        if let Some(t) = input.sighash_type {
            if t.ecdsa_hash_ty() != Ok(EcdsaSighashType::All) {
                return foreign("asks for a signature mode other than SIGHASH_ALL");
            }
        }
        if !input.tap_key_origins.is_empty()
            || input.tap_internal_key.is_some()
            || input.redeem_script.is_some()
            || input.witness_script.is_some()
        {
            return foreign("carries scripts or taproot keys a hot P2WPKH input does not have");
        }
        let Some(utxo) = &input.witness_utxo else {
            return foreign("has no witness_utxo");
        };
        let ours: Vec<_> = input
            .bip32_derivation
            .iter()
            .filter(|(_, (fp, _))| *fp == hot.key.fingerprint || *fp == Fingerprint::default())
            .collect();
        // Fingerprint zero is what a master key's parent looks like: an entry naming it could
        // make a generic signer derive from our master, so it counts as a claim on our key.
        let [(pk, (fp, path))] = ours[..] else {
            return foreign("does not name exactly one key of this signer");
        };
        if *fp != hot.key.fingerprint {
            return foreign("names the zero fingerprint");
        }
        let Some((chain, index)) = hot.split(path) else {
            return foreign("its key is not under the hot account");
        };
        let Ok(d) = derive_hot(hot.net, hot.key, chain, index) else {
            return foreign("its key cannot be derived");
        };
        if d.script_pubkey != utxo.script_pubkey {
            return foreign("the script it spends is not the one its derivation gives");
        }
        if !d.keys.iter().any(|(k, _)| k == pk) {
            return foreign("its public key is not the one its derivation gives");
        }
        total = total.checked_add(utxo.value.to_sat()).ok_or_else(|| Refusal {
            code: Code::InputForeign,
            reason: "input values overflow".into(),
        })?;
    }
    Ok(total)
}

fn output_total(psbt: &Psbt) -> Result<u64, Refusal> {
    psbt.unsigned_tx
        .output
        .iter()
        .try_fold(0u64, |s, o| s.checked_add(o.value.to_sat()))
        .ok_or_else(|| Refusal {
            code: Code::PsbtMismatch,
            reason: "output values overflow".into(),
        })
}

fn fee(psbt: &Psbt, total_in: u64) -> Result<u64, Refusal> {
    let out = output_total(psbt)?;
    total_in.checked_sub(out).ok_or_else(|| Refusal {
        code: Code::PsbtMismatch,
        reason: format!("outputs ({out} sats) exceed inputs ({total_in} sats)"),
    })
}

/// What a withdrawal's checks approved, for the log and the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approved {
    pub txid: String,
    pub amount_sats: u64,
    pub fee_sats: u64,
    pub destination: String,
    /// The same withdrawal and transaction were signed before: sign again, count nothing.
    pub resign: bool,
    pub proof: Option<ProofUse>,
    /// Approved by TOTP alone (counted against the TOTP budget).
    pub totp_grade: bool,
}

/// The step-up action the withdrawal record stands for.
pub fn withdraw_action(w: &Withdrawal) -> Action {
    Action::Withdraw {
        user: w.user,
        asset: w.asset,
        address_id: w.address_id.0,
        destination: w.address.clone(),
        amount: w.amount,
        client_id: w.client_id,
    }
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// What checks 1–5b found (proof, address, reviews): the withdrawal's authorisation.
#[derive(Clone, Debug)]
pub struct Authorised {
    pub resign: bool,
    pub proof: Option<ProofUse>,
    pub totp_grade: bool,
}

/// Checks 1–5b of a withdrawal, whatever chain pays it: not halted, the signer's asset
/// (`asset_ok`), not signed before as another transaction (`txid`), a fresh proof of this very
/// withdrawal, a registered address that cooled, the reviews. Litecoin's `check_withdrawal`
/// and Ethereum's `sign_eth_withdrawal` both run it first.
pub fn check_authorisation(
    reg: &Registry,
    config: &Config,
    now_ns: u64,
    w: &Withdrawal,
    txid: &str,
    asset_ok: bool,
) -> Result<Authorised, Refusal> {
    let p = &config.policy;
    // 1. Not halted.
    if let Some(why) = &reg.halted {
        return refuse(Code::SignerHalted, format!("signing is halted: {why}"));
    }
    if !asset_ok {
        return refuse(
            Code::AssetWrong,
            format!(
                "withdrawal of asset {} sent to the signer of asset {}",
                w.asset, config.asset_id
            ),
        );
    }
    // 2. Not signed before for another transaction.
    let resign = match reg.signed.get(&w.id) {
        Some(s) if s.txid != txid => {
            return refuse(
                Code::AlreadySigned,
                format!(
                    "withdrawal {} was signed before as transaction {}",
                    w.id.0, s.txid
                ),
            )
        }
        Some(_) => true,
        None => false,
    };
    // 3. A TOTP or passkey proof, for this very withdrawal, fresh.
    let Some(proof) = &w.proof else {
        return refuse(
            Code::ProofMissing,
            "the withdrawal carries no second-factor proof",
        );
    };
    if matches!(proof.factor, ProofFactor::Recovery { .. }) {
        return refuse(
            Code::ProofMissing,
            "a recovery code cannot authorise a withdrawal",
        );
    }
    let digest = withdraw_action(w).digest();
    if !bool::from(digest.ct_eq(&proof.action)) {
        return refuse(
            Code::ProofMismatch,
            "the proof authorises another action than this withdrawal",
        );
    }
    let proof_use = if resign {
        None
    } else {
        Some(check_proof(reg, config, now_ns, w, proof)?)
    };
    // 5. The destination is registered and has cooled.
    let mut totp_grade = matches!(proof.factor, ProofFactor::Totp { .. });
    if !resign {
        let a = reg
            .addresses
            .get(&(w.user, w.address_id))
            .filter(|a| a.destination == w.address);
        let Some(a) = a.filter(|a| a.asset == w.asset) else {
            return refuse(
                Code::AddressUnknown,
                format!(
                    "address {} of user {} is not registered with the signer",
                    w.address_id.0, w.user
                ),
            );
        };
        let usable = a
            .learned_ns
            .saturating_add(p.address_cooling_s.saturating_mul(NS));
        if now_ns < usable {
            return refuse(
                Code::AddressCooling,
                format!("address is usable in {} s", (usable - now_ns).div_ceil(NS)),
            );
        }
        totp_grade |= a.totp_grade;
    }
    // 5b. Reviews, when the engine held it or the signer's own thresholds ask for them.
    if !resign {
        check_reviews(reg, config, now_ns, w)?;
    }
    Ok(Authorised {
        resign,
        proof: proof_use,
        totp_grade,
    })
}

/// Check 7 in the signer's own asset: the per-transaction, TOTP-budget and window limits from
/// its own record (nothing for a re-signature).
pub fn check_limits(
    reg: &Registry,
    config: &Config,
    now_ns: u64,
    w: &Withdrawal,
    auth: &Authorised,
    amount_sats: u64,
) -> Result<(), Refusal> {
    let p = &config.policy;
    let (resign, totp_grade) = (auth.resign, auth.totp_grade);
    // 7. Limits from the signer's own record.
    if !resign {
        if amount_sats > p.per_tx_max_sats {
            return refuse(
                Code::LimitTx,
                format!(
                    "{amount_sats} sats is above the per-transaction limit of {}",
                    p.per_tx_max_sats
                ),
            );
        }
        if totp_grade {
            let spent = reg.totp_spent_since(w.user, now_ns.saturating_sub(TOTP_BUDGET_WINDOW_NS));
            if spent.saturating_add(amount_sats) > p.totp_budget_sats {
                return refuse(
                    Code::TotpBudgetExceeded,
                    format!(
                        "{spent} sats approved by TOTP alone for user {} in 24 h; {amount_sats} more is above the TOTP budget of {} (a passkey proof, to an address approved by passkey, is needed)",
                        w.user, p.totp_budget_sats
                    ),
                );
            }
        }
        let since = now_ns.saturating_sub(p.window_s.saturating_mul(NS));
        let signed = reg.signed_since(since);
        if signed.saturating_add(amount_sats) > p.window_max_sats {
            return refuse(
                Code::LimitWindow,
                format!(
                    "{signed} sats signed in the last {} s; {amount_sats} more is above the limit of {}",
                    p.window_s, p.window_max_sats
                ),
            );
        }
    }
    Ok(())
}

/// Check 7 for an Ethereum signer's token: the token's own per-transaction and window limits
/// (its minor unit, the policy's window), never mixed with the signer's asset's.
pub fn check_token_limits(
    reg: &Registry,
    config: &Config,
    now_ns: u64,
    token: &crate::config::EthToken,
    auth: &Authorised,
    amount: u64,
) -> Result<(), Refusal> {
    if auth.resign {
        return Ok(());
    }
    if amount > token.per_tx_max {
        return refuse(
            Code::LimitTx,
            format!(
                "{amount} is above the token's per-transaction limit of {}",
                token.per_tx_max
            ),
        );
    }
    let p = &config.policy;
    let since = now_ns.saturating_sub(p.window_s.saturating_mul(NS));
    let signed = reg.token_signed_since(token.asset_id, since);
    if signed.saturating_add(amount) > token.window_max {
        return refuse(
            Code::LimitWindow,
            format!(
                "{signed} of the token signed in the last {} s; {amount} more is above the limit of {}",
                p.window_s, token.window_max
            ),
        );
    }
    Ok(())
}

/// Every check before a withdrawal is signed, in the contract's order.
pub fn check_withdrawal(
    reg: &Registry,
    config: &Config,
    hot: Hot<'_>,
    now_ns: u64,
    w: &Withdrawal,
    psbt: &Psbt,
) -> Result<Approved, Refusal> {
    let p = &config.policy;
    // 2's transaction id.
    let txid = psbt.unsigned_tx.compute_txid().to_string();
    let auth = check_authorisation(reg, config, now_ns, w, &txid, w.asset == config.asset_id)?;
    let (resign, totp_grade) = (auth.resign, auth.totp_grade);
    // 6. The transaction: our inputs, exactly one payment of exactly the amount, our change.
    let total_in = check_inputs(psbt, hot)?;
    let amount = u64::try_from(w.amount.0).ok();
    let dest = kinko_chain::script_for(hot.net, &w.address).ok();
    let paying: Vec<&TxOut> = psbt
        .unsigned_tx
        .output
        .iter()
        .filter(|o| Some(&o.script_pubkey) == dest.as_ref())
        .collect();
    match (&paying[..], amount) {
        ([o], Some(a)) if o.value.to_sat() == a => {}
        ([o], _) => {
            return refuse(
                Code::PsbtMismatch,
                format!(
                    "the transaction pays {} sats, the withdrawal is {}",
                    o.value.to_sat(),
                    w.amount
                ),
            )
        }
        ([], _) => return refuse(Code::PsbtMismatch, "no output pays the withdrawal's destination"),
        (_, _) => return refuse(Code::PsbtMismatch, "more than one output pays the destination"),
    }
    let amount_sats = amount.unwrap_or(0);
    for (i, (txout, out)) in psbt.unsigned_tx.output.iter().zip(&psbt.outputs).enumerate() {
        if Some(&txout.script_pubkey) == dest.as_ref() {
            continue;
        }
        if !hot.is_change(&out.bip32_derivation, txout) {
            return refuse(
                Code::ChangeForeign,
                format!("output {i} is neither the payment nor our change"),
            );
        }
    }
    let fee_sats = fee(psbt, total_in)?;
    if fee_sats > p.fee_max_sats {
        return refuse(
            Code::FeeTooHigh,
            format!("fee {fee_sats} sats is above the limit of {}", p.fee_max_sats),
        );
    }
    // 7. Limits from the signer's own record.
    check_limits(reg, config, now_ns, w, &auth, amount_sats)?;
    Ok(Approved {
        txid,
        amount_sats,
        fee_sats,
        destination: w.address.clone(),
        resign,
        proof: auth.proof,
        totp_grade: totp_grade && !resign,
    })
}

/// How many reviewers' approvals a withdrawal needs, and why: the engine's count, the
/// signer's dual-approval amount, its fan-in rule (from its own log).
pub fn reviews_needed(reg: &Registry, config: &Config, now_ns: u64, w: &Withdrawal) -> (u32, String) {
    let t = reg.thresholds.unwrap_or_else(|| config.review.thresholds());
    let mut need = w.approvals_needed;
    let mut why = Vec::new();
    if w.approvals_needed > 0 {
        why.push(format!("kinko held it for {} approval(s)", w.approvals_needed));
    }
    if w.amount.0 >= u128::from(t.dual_approval_sats) {
        need = need.max(t.approvals);
        why.push(format!(
            "{} is at least the dual-approval amount of {}",
            w.amount, t.dual_approval_sats
        ));
    }
    let since = now_ns.saturating_sub(t.fan_in_window_s.saturating_mul(NS));
    let others = reg.fan_in(&w.address, w.user, since);
    if others >= t.fan_in_users_max as usize {
        need = need.max(t.approvals);
        why.push(format!(
            "{others} other users were paid at this destination within {} s",
            t.fan_in_window_s
        ));
    }
    (need, why.join("; "))
}

/// Check 5b: enough reviews by distinct admins enrolled at the signer, none the requester,
/// each a fresh passkey assertion over this exact withdrawal's review action.
pub fn check_reviews(reg: &Registry, config: &Config, now_ns: u64, w: &Withdrawal) -> Result<u32, Refusal> {
    let (need, why) = reviews_needed(reg, config, now_ns, w);
    if need == 0 {
        return Ok(0);
    }
    let max_age_ns = config.review.review_max_age_s.saturating_mul(NS);
    let mut seen = std::collections::BTreeSet::new();
    for (reviewer, proof) in &w.reviews {
        if *reviewer == w.user {
            return refuse(
                Code::ReviewerIsRequester,
                format!("user {reviewer} reviewed their own withdrawal"),
            );
        }
        let Some(rec) = reg.admins.get(&reviewer.0) else {
            return refuse(
                Code::ReviewerUnknown,
                format!("reviewer {reviewer} is not an admin enrolled at the signer"),
            );
        };
        if !seen.insert(*reviewer) {
            return refuse(
                Code::ReviewsNotDistinct,
                format!("reviewer {reviewer} counted twice"),
            );
        }
        let digest = review_action(w, *reviewer).digest();
        match crate::admins::verify_assertion(rec, config, now_ns, max_age_ns, &digest, proof) {
            Ok(()) => {}
            Err(crate::admins::AssertionFault::Stale) => {
                return refuse(
                    Code::ReviewStale,
                    format!("reviewer {reviewer}'s assertion is too old (or from the future)"),
                )
            }
            Err(f) => {
                return refuse(
                    Code::ReviewInvalid,
                    format!("reviewer {reviewer}'s assertion {}", f.text()),
                )
            }
        }
    }
    if (seen.len() as u64) < u64::from(need) {
        return refuse(
            Code::ReviewRequired,
            format!(
                "{need} reviewers' approvals needed ({why}); {} valid came with it",
                seen.len()
            ),
        );
    }
    Ok(need)
}

/// The action a reviewer approved for this withdrawal (kinko-core's, bound to its id,
/// requester, asset, destination and amount).
pub fn review_action(w: &Withdrawal, reviewer: kinko_core::UserId) -> Action {
    Action::ReviewWithdrawal {
        user: reviewer,
        withdrawal: w.id.0,
        requester: w.user,
        asset: w.asset,
        address: w.address.clone(),
        amount: w.amount,
        approve: true,
    }
}

/// Checks 3 (freshness) and 4 (the factor) for a proof whose digest already matched.
fn check_proof(
    reg: &Registry,
    config: &Config,
    now_ns: u64,
    w: &Withdrawal,
    proof: &StepUp,
) -> Result<ProofUse, Refusal> {
    let max_age_ns = proof_window_ns(&config.policy, w.waited_s);
    let stale = |issued: u64| {
        issued > now_ns.saturating_add(PROOF_FUTURE_NS) || now_ns.saturating_sub(issued) > max_age_ns
    };
    if stale(proof.issued_ns) {
        return refuse(
            Code::ProofStale,
            "the proof was issued too long ago (or in the future)",
        );
    }
    if let ProofFactor::Totp { step, .. } = &proof.factor {
        let now_step = now_ns / TOTP_STEP_NS;
        if *step > now_step.saturating_add(1) || stale(step.saturating_mul(TOTP_STEP_NS)) {
            return refuse(
                Code::ProofStale,
                "the TOTP code's time step is too old (or in the future)",
            );
        }
    }
    // The same proof (its challenge nonce) never authorises two withdrawals; checked once the
    // proof has verified, before the factor's own replay checks.
    let reused = || match reg.used_nonces.get(&proof.nonce) {
        Some(other) => refuse(
            Code::ProofInvalid,
            format!("the proof was already used for withdrawal {}", other.0),
        ),
        None => Ok(()),
    };
    let immature = |mature_ns: u64| now_ns < mature_ns;
    let factor = match &proof.factor {
        ProofFactor::Passkey { credential_id, .. } => {
            let Some(k) = reg.passkeys.get(&(w.user, credential_id.clone())) else {
                return refuse(
                    Code::FactorUnknown,
                    "the passkey is not registered with the signer for this user",
                );
            };
            if immature(k.mature_ns) {
                return refuse(Code::FactorImmature, "the passkey was registered too recently");
            }
            // Counters are checked against every counter used before (below), not only the
            // highest, so withdrawals signed out of order are not mistaken for replays.
            let sign_count = match verify_passkey(config, k, proof) {
                Ok(n) => n,
                Err(code) => {
                    return refuse(
                        Code::ProofInvalid,
                        format!("the passkey assertion does not verify: {code}"),
                    )
                }
            };
            let v = Verified { sign_count };
            reused()?;
            if v.sign_count != 0 && reg.used_counters.contains(&(credential_id.clone(), v.sign_count)) {
                return refuse(
                    Code::ProofInvalid,
                    "the passkey's signature counter was used before (a replayed assertion)",
                );
            }
            FactorUse::Passkey {
                credential_id: credential_id.clone(),
                sign_count: v.sign_count,
            }
        }
        ProofFactor::Totp { step, code } => {
            let Some(t) = reg.totp.get(&w.user) else {
                return refuse(
                    Code::FactorUnknown,
                    "no TOTP secret is registered with the signer for this user",
                );
            };
            if immature(t.mature_ns) {
                return refuse(
                    Code::FactorImmature,
                    "the TOTP secret was registered too recently",
                );
            }
            if !totp_matches(&t.secret, *step, code) {
                return refuse(
                    Code::ProofInvalid,
                    "the TOTP code does not match the signer's secret",
                );
            }
            reused()?;
            if reg.used_totp_steps.contains(&(w.user, *step)) {
                return refuse(Code::ProofInvalid, "the TOTP code's time step was used before");
            }
            FactorUse::Totp { step: *step }
        }
        ProofFactor::Recovery { .. } => {
            return refuse(
                Code::ProofMissing,
                "a recovery code cannot authorise a withdrawal",
            )
        }
    };
    Ok(ProofUse {
        nonce: proof.nonce,
        issued_ns: proof.issued_ns,
        factor,
    })
}

/// Which factors may approve: TOTP too (an address of a user without a passkey), and whether
/// the approving factor must have matured (a forget).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApprovalRule {
    pub allow_totp: bool,
    pub mature: bool,
}

/// What a registration's (or forget's) approval was verified with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalOk {
    pub used: ApprovalUse,
    /// Verified with the signer's TOTP secret (not a passkey).
    pub totp: bool,
}

/// Verifies the user's approval of a registration or forget: a proof over exactly `action`,
/// by a passkey of `user` the signer holds (or, when `rule.allow_totp`, its TOTP secret), never
/// used before. `rule.mature` asks the approving factor to have matured (a forget); a registration
/// may be approved by a young factor: a factor it approves matures no earlier than its approver
/// (the registry), an address is usable only with a mature factor's proof.
pub fn check_approval(
    reg: &Registry,
    config: &Config,
    now_ns: u64,
    user: UserId,
    action: &Action,
    approval: Option<&StepUp>,
    rule: ApprovalRule,
) -> Result<ApprovalOk, Refusal> {
    let ApprovalRule { allow_totp, mature } = rule;
    let unapproved = |why: &str| refuse(Code::RegistrationUnapproved, format!("user {user}: {why}"));
    let Some(proof) = approval else {
        return unapproved("the signer holds a factor of this user and the request carries no approval");
    };
    if !bool::from(action.digest().ct_eq(&proof.action)) {
        return unapproved("the approval is for another action than this one");
    }
    if reg.used_approvals.contains(&proof.nonce) {
        return unapproved("the approval was used before");
    }
    let factor = match &proof.factor {
        ProofFactor::Passkey { credential_id, .. } => {
            let Some(k) = reg.passkeys.get(&(user, credential_id.clone())) else {
                return unapproved("the approval is by a passkey the signer does not hold for this user");
            };
            if mature && now_ns < k.mature_ns {
                return refuse(
                    Code::FactorImmature,
                    format!("user {user}: the approving passkey is not mature yet"),
                );
            }
            match verify_passkey(config, k, proof) {
                Ok(sign_count) => FactorUse::Passkey {
                    credential_id: credential_id.clone(),
                    sign_count,
                },
                Err(code) => return unapproved(&format!("the passkey approval does not verify: {code}")),
            }
        }
        ProofFactor::Totp { step, code } if allow_totp => {
            let Some(t) = reg.totp.get(&user) else {
                return unapproved(
                    "the approval is by TOTP and the signer holds no TOTP secret of this user",
                );
            };
            if mature && now_ns < t.mature_ns {
                return refuse(
                    Code::FactorImmature,
                    format!("user {user}: the approving TOTP secret is not mature yet"),
                );
            }
            if !totp_matches(&t.secret, *step, code) {
                return unapproved("the TOTP approval does not match the signer's secret");
            }
            FactorUse::Totp { step: *step }
        }
        ProofFactor::Totp { .. } => {
            return unapproved("a passkey approval is needed (the user has a passkey)")
        }
        ProofFactor::Recovery { .. } => return unapproved("a recovery code cannot approve it"),
    };
    Ok(ApprovalOk {
        totp: matches!(factor, FactorUse::Totp { .. }),
        used: ApprovalUse {
            nonce: proof.nonce,
            factor,
        },
    })
}

struct Verified {
    sign_count: u32,
}

fn totp_matches(secret: &[u8], step: u64, code: &str) -> bool {
    let want = zeroize::Zeroizing::new(format!("{:06}", kinko_factors::totp::code_at(secret, step)));
    code.len() == want.len() && bool::from(code.as_bytes().ct_eq(want.as_bytes()))
}

/// Verifies a passkey proof with the signer's copy of the key; the counter it carried, or the
/// verifier's error code.
fn verify_passkey(
    config: &Config,
    k: &crate::registry::PasskeyRec,
    proof: &StepUp,
) -> Result<u32, &'static str> {
    verify_passkey_key(config, &k.key, proof)
}

/// Verifies a passkey proof (a customer's or an admin's) against `key` and the signer's relying
/// party; the counter it carried, or the verifier's error code (`NOT_A_PASSKEY` for a TOTP or
/// recovery proof).
pub(crate) fn verify_passkey_key(
    config: &Config,
    key: &kinko_factors::webauthn::CredentialKey,
    proof: &StepUp,
) -> Result<u32, &'static str> {
    let ProofFactor::Passkey {
        credential_id,
        authenticator_data,
        client_data_json,
        signature,
    } = &proof.factor
    else {
        return Err("NOT_A_PASSKEY");
    };
    let id = b64(credential_id);
    let resp = AssertionResponse {
        id: id.clone(),
        raw_id: id,
        type_: "public-key".into(),
        response: AuthenticatorAssertion {
            client_data_json: b64(client_data_json),
            authenticator_data: b64(authenticator_data),
            signature: b64(signature),
            user_handle: None,
        },
    };
    webauthn::verify_assertion(&config.relying_party(), &proof.challenge(), key, 0, &resp)
        .map(|v| v.sign_count)
        .map_err(|e| e.code())
}

/// What a sweep's checks approved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepApproved {
    pub txid: String,
    pub to_cold_sats: u64,
    pub fee_sats: u64,
    pub destinations: Vec<String>,
}

/// Scripts of cold receive addresses `0..COLD_SCAN_MAX`, derived as far as a lookup needed
/// and kept: the usual sweep (to a low index) costs a few derivations, a foreign output the
/// whole range once.
#[derive(Debug, Default)]
pub struct ColdScripts {
    known: BTreeMap<ScriptBuf, u32>,
    scanned: u32,
}

impl ColdScripts {
    fn find(&mut self, net: Network, cold: &ColdKeys, script: &ScriptBuf) -> Option<u32> {
        while !self.known.contains_key(script) && self.scanned < COLD_SCAN_MAX {
            if let Ok(d) = derive_cold(net, cold, self.scanned) {
                self.known.insert(d.script_pubkey, self.scanned);
            }
            self.scanned += 1;
        }
        self.known.get(script).copied()
    }
}

/// The cold receive index `i` a derivation names: `key.path/0/i` of one of the cold keys.
fn cold_index(
    cold: &ColdKeys,
    derivation: &BTreeMap<bitcoin::secp256k1::PublicKey, bitcoin::bip32::KeySource>,
) -> Option<u32> {
    derivation.values().find_map(|(fp, path)| {
        cold.keys.iter().find_map(|k| {
            let account: &[ChildNumber] = k.path.as_ref();
            let p: &[ChildNumber] = path.as_ref();
            if *fp != k.fingerprint || p.len() != account.len() + 2 || &p[..account.len()] != account {
                return None;
            }
            match (p[account.len()], p[account.len() + 1]) {
                (ChildNumber::Normal { index: 0 }, ChildNumber::Normal { index }) => Some(index),
                _ => None,
            }
        })
    })
}

/// The checks before a sweep (hot → cold) is signed: not halted, our inputs, every output a
/// cold multisig address or our change, at least one cold output, the fee within the limit.
pub fn check_sweep(
    reg: &Registry,
    config: &Config,
    hot: Hot<'_>,
    cold_scripts: &mut ColdScripts,
    psbt: &Psbt,
) -> Result<SweepApproved, Refusal> {
    if let Some(why) = &reg.halted {
        return refuse(Code::SignerHalted, format!("signing is halted: {why}"));
    }
    let Some(cold) = &config.cold else {
        return refuse(Code::SweepUnconfigured, "no [cold] multisig is configured");
    };
    let total_in = check_inputs(psbt, hot)?;
    let mut to_cold: u64 = 0;
    let mut destinations = Vec::new();
    for (i, (txout, out)) in psbt.unsigned_tx.output.iter().zip(&psbt.outputs).enumerate() {
        let named = cold_index(cold, &out.bip32_derivation)
            .filter(|i| derive_cold(hot.net, cold, *i).is_ok_and(|d| d.script_pubkey == txout.script_pubkey));
        let index = named.or_else(|| cold_scripts.find(hot.net, cold, &txout.script_pubkey));
        if index.is_some() {
            to_cold = to_cold.checked_add(txout.value.to_sat()).ok_or_else(|| Refusal {
                code: Code::PsbtMismatch,
                reason: "output values overflow".into(),
            })?;
            destinations.push(
                kinko_chain::address_for(hot.net, &txout.script_pubkey)
                    .unwrap_or_else(|| txout.script_pubkey.to_hex_string()),
            );
        } else if !hot.is_change(&out.bip32_derivation, txout) {
            return refuse(
                Code::PsbtMismatch,
                format!("output {i} pays neither cold storage nor our change"),
            );
        }
    }
    if destinations.is_empty() {
        return refuse(Code::PsbtMismatch, "the sweep pays nothing to cold storage");
    }
    let fee_sats = fee(psbt, total_in)?;
    if fee_sats > config.policy.fee_max_sats {
        return refuse(
            Code::FeeTooHigh,
            format!(
                "fee {fee_sats} sats is above the limit of {}",
                config.policy.fee_max_sats
            ),
        );
    }
    Ok(SweepApproved {
        txid: psbt.unsigned_tx.compute_txid().to_string(),
        to_cold_sats: to_cold,
        fee_sats,
        destinations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_upper_snake() {
        let mut seen = std::collections::BTreeSet::new();
        for c in Code::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{s}");
        }
        assert!(Code::PsbtMismatch.tamper() && !Code::LimitWindow.tamper());
    }
}
