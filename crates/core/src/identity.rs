//! Who the users are and what proves it is them: accounts, sessions, second factors, step-up
//! proofs, the security-change lock, freezes and platform-wide revocation.
//!
//! Everything that decides who may move money is here and changes only by journaled commands.
//! No usable secret is: passwords arrive as argon2id PHC strings (hashed by the gateway with a
//! pepper the engine never sees), session tokens and recovery codes as BLAKE3 hashes, TOTP
//! secrets sealed under a key kept outside the data directory, passkeys as public keys.
//!
//! Cryptographic checks that need a secret or a signature library (the password, the TOTP code,
//! the WebAuthn signature) are done by the gateway before it submits a command, and again by the
//! signer before a withdrawal leaves. What the engine enforces itself, deterministically, is
//! everything else about a [`StepUp`] proof: it names this exact action (the engine recomputes
//! the action's digest from its own state), it is fresh, it was never used (a TOTP step, a
//! passkey's signature counter and the challenge are each accepted once), the factor belongs to
//! the user, and the user is neither frozen, disabled nor inside the security-change lock.

use crate::ledger::InvariantViolation;
use crate::money::{Amount, AssetId, UserId};
use crate::passkey::RelyingParty;
use crate::reject::Reject;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const EMAIL_LEN_MAX: usize = 254;
pub const PASSWORD_HASH_LEN_MAX: usize = 512;
pub const ANTI_PHISHING_LEN_MAX: usize = 32;
pub const DEVICE_LEN_MAX: usize = 128;
pub const SESSIONS_PER_USER_MAX: usize = 32;
pub const PASSKEYS_PER_USER_MAX: usize = 10;
pub const RECOVERY_CODES_MAX: usize = 16;
pub const CREDENTIAL_ID_LEN_MAX: usize = 1023;
pub const PUBLIC_KEY_LEN_MAX: usize = 128;
pub const SEALED_SECRET_LEN_MAX: usize = 256;
pub const REASON_LEN_MAX: usize = 256;
/// Longest a session may be opened for.
pub const SESSION_TTL_MAX_NS: u64 = 30 * 24 * 3600 * NS;
pub const TOTP_STEP_NS: u64 = 30 * NS;
/// Outstanding password-reset tokens per user (a newer one replaces the oldest).
pub const RESET_TOKENS_PER_USER_MAX: usize = 3;
pub const RESET_TOKEN_TTL_MAX_NS: u64 = 3600 * NS;
/// Parts of a WebAuthn proof, bounded as the gateway bounds them.
pub const AUTHENTICATOR_DATA_LEN_MAX: usize = 1024;
pub const CLIENT_DATA_LEN_MAX: usize = 4096;
pub const SIGNATURE_LEN_MAX: usize = 256;

const NS: u64 = 1_000_000_000;
/// The longest `Policy::proof_fresh_ns` may be. A used challenge is remembered this long after
/// it was issued, whatever the policy is later, so raising the policy cannot revive one.
pub const PROOF_FRESH_MAX_NS: u64 = 3600 * NS;

/// Engine-wide identity settings, changed only by a journaled command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// How long withdrawals stay locked after a password, email, factor or anti-phishing change.
    pub security_lock_ns: u64,
    /// How old a step-up proof may be when the action it authorises is applied.
    pub proof_fresh_ns: u64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            security_lock_ns: 24 * 3600 * NS,
            proof_fresh_ns: 5 * 60 * NS,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserStatus {
    Active,
    /// Withdrawals and sessions halted (by the user's freeze link or an operator) until reviewed.
    Frozen,
    /// Closed by an operator: no login, no sessions.
    Disabled,
}

impl UserStatus {
    pub fn name(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Frozen => "frozen",
            UserStatus::Disabled => "disabled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpFactor {
    /// The raw secret sealed (AEAD) under the master key; the engine cannot read it.
    pub sealed_secret: Vec<u8>,
    pub created_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passkey {
    pub credential_id: Vec<u8>,
    /// The credential's public key in the gateway's normalised form (algorithm tag + key).
    pub public_key: Vec<u8>,
    pub sign_count: u32,
    pub label: String,
    pub created_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryCode {
    /// BLAKE3 of the normalised code.
    pub hash: [u8; 32],
    pub used: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    /// Normalised: trimmed, lower case.
    pub email: String,
    /// argon2id PHC string over password ‖ pepper.
    pub password_hash: String,
    pub status: UserStatus,
    pub status_reason: Option<String>,
    pub anti_phishing: Option<String>,
    /// When the anti-phishing code was last set (protection-programme eligibility reads it).
    pub anti_phishing_set_ns: u64,
    /// Withdrawals are refused until this time (the security-change lock).
    pub security_locked_until_ns: u64,
    pub created_ns: u64,
    pub totp: Option<TotpFactor>,
    /// Highest TOTP step ever accepted: a code is good at most once, even inside its step.
    pub last_totp_step: u64,
    pub passkeys: Vec<Passkey>,
    pub recovery: Vec<RecoveryCode>,
    /// Set by platform-wide revocation: the user must re-enrol a factor through the recovery
    /// flow (a recovery code) before anything sensitive.
    pub reenrol_required: bool,
    /// Admin roles (least privilege; see [`AdminRole`]).
    pub roles: Vec<AdminRole>,
    /// The user's proofs behind their factors, kept for the signer, which re-verifies them.
    pub approvals: FactorApprovals,
    /// The language the user reads kinko's messages in (`SetLanguage`).
    pub language: Language,
}

/// The languages kinko speaks to users in: English (the default) and Japanese.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Language {
    #[default]
    En,
    Ja,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::En, Language::Ja];

    /// The BCP 47 primary tag: `en`, `ja`.
    pub fn code(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Ja => "ja",
        }
    }

    /// The language of a tag by its primary subtag (`ja-JP` → Japanese), if kinko speaks it.
    pub fn of(tag: &str) -> Option<Language> {
        let primary = tag.trim().split(['-', '_']).next()?;
        Language::ALL
            .into_iter()
            .find(|l| primary.eq_ignore_ascii_case(l.code()))
    }
}

/// Most removal proofs kept per user (the newest).
pub const REMOVALS_KEPT_MAX: usize = 8;

/// The step-up proofs with which a user approved their factors (and removed old ones), kept in
/// state so that the custody service can show them to the signer: it accepts a later factor only
/// with a proof it verifies itself (docs/design/custody.md, "Registrations").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactorApprovals {
    /// The proof behind each passkey's enrolment, by credential id (none for a first factor).
    pub passkeys: Vec<(Vec<u8>, StepUp)>,
    /// The proof behind the TOTP secret's enrolment.
    pub totp: Option<StepUp>,
    /// Proofs of removed factors, newest last, at most [`REMOVALS_KEPT_MAX`].
    pub removals: Vec<StepUp>,
}

/// What an admin may do. Every sensitive admin action also needs the admin's fresh second
/// factor; the most sensitive ones need a second admin (docs/design/withdrawals.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AdminRole {
    /// Reads alerts, queues and incidents.
    Viewer,
    /// Account support: reads accounts, freezes them.
    Support,
    /// Reviews held withdrawals, changes risk rules (with a second admin).
    Risk,
    /// Reviews held withdrawals, moves cold funds (with a second admin).
    Treasury,
    /// Grants roles, halts and resumes (with a second admin), revokes platform-wide.
    SecurityAdmin,
}

impl AdminRole {
    pub fn name(self) -> &'static str {
        match self {
            AdminRole::Viewer => "viewer",
            AdminRole::Support => "support",
            AdminRole::Risk => "risk",
            AdminRole::Treasury => "treasury",
            AdminRole::SecurityAdmin => "security_admin",
        }
    }
    pub fn from_name(s: &str) -> Option<AdminRole> {
        [
            AdminRole::Viewer,
            AdminRole::Support,
            AdminRole::Risk,
            AdminRole::Treasury,
            AdminRole::SecurityAdmin,
        ]
        .into_iter()
        .find(|r| r.name() == s)
    }
}

impl User {
    pub fn has_factor(&self) -> bool {
        self.totp.is_some() || !self.passkeys.is_empty()
    }
    pub fn recovery_left(&self) -> usize {
        self.recovery.iter().filter(|c| !c.used).count()
    }
    pub fn passkey(&self, credential_id: &[u8]) -> Option<&Passkey> {
        self.passkeys.iter().find(|p| p.credential_id == credential_id)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionLevel {
    /// Password checked; the second factor is still owed. Such a session can only finish login.
    Password,
    /// Password and second factor (or no factor enrolled yet).
    Full,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// BLAKE3 of the bearer token; the token itself is shown to the client once.
    pub token_hash: [u8; 32],
    pub user: UserId,
    pub level: SessionLevel,
    pub created_ns: u64,
    pub expires_ns: u64,
    pub device: String,
    pub ip: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetToken {
    pub hash: [u8; 32],
    pub user: UserId,
    pub expires_ns: u64,
}

/// What a step-up proof authorises. Its digest is what a WebAuthn challenge signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Finishing a login: the second factor for the password session `session`.
    Login {
        user: UserId,
        session: [u8; 32],
    },
    Withdraw {
        user: UserId,
        asset: AssetId,
        /// The whitelisted address record and the destination it names.
        address_id: u64,
        destination: String,
        amount: Amount,
        client_id: Option<u128>,
    },
    AddWithdrawalAddress {
        user: UserId,
        asset: AssetId,
        address: String,
        label: String,
    },
    /// Creating an API key that may withdraw.
    CreateWithdrawKey {
        user: UserId,
        label: String,
        ip_allowlist: Vec<String>,
    },
    ChangePassword {
        user: UserId,
    },
    ChangeEmail {
        user: UserId,
        email: String,
    },
    SetAntiPhishing {
        user: UserId,
        code: String,
    },
    EnrolTotp {
        user: UserId,
    },
    EnrolPasskey {
        user: UserId,
        credential_id: Vec<u8>,
    },
    RemoveTotp {
        user: UserId,
    },
    RemovePasskey {
        user: UserId,
        credential_id: Vec<u8>,
    },
    NewRecoveryCodes {
        user: UserId,
    },
    /// A reviewer's decision on a held withdrawal: `user` is the reviewer; the rest names the
    /// withdrawal exactly (its id, requester, asset, destination and amount), so the signer
    /// can check a review against the withdrawal it is asked to sign
    /// ([`crate::wallet::Withdrawal::review_action`] builds it).
    ReviewWithdrawal {
        user: UserId,
        withdrawal: u64,
        requester: UserId,
        asset: AssetId,
        address: String,
        amount: Amount,
        approve: bool,
    },
    /// Proposing a sensitive change (`change` is [`crate::admin::AdminChange::digest`]).
    ProposeChange {
        user: UserId,
        change: [u8; 32],
    },
    /// Approving someone else's proposal `proposal` of exactly `change`.
    ApproveChange {
        user: UserId,
        proposal: u64,
        change: [u8; 32],
    },
    /// Halting withdrawals of an asset, or of every asset.
    Halt {
        user: UserId,
        asset: Option<AssetId>,
    },
    /// Halting deposits or trading of an asset.
    HaltOperation {
        user: UserId,
        asset: AssetId,
        operation: crate::admin::Operation,
    },
    /// Closing an incident.
    ResolveIncident {
        user: UserId,
        incident: u64,
    },
    /// Creating an API key without the withdraw scope (that one is [`Action::CreateWithdrawKey`]).
    CreateApiKey {
        user: UserId,
        label: String,
        permissions: crate::keys::Permissions,
        ip_allowlist: Vec<String>,
    },
    /// Revoking one of the user's API keys.
    RevokeApiKey {
        user: UserId,
        id: String,
    },
    /// Ending one other session of the user (`Some`, by token hash), or all the others.
    EndSessions {
        user: UserId,
        session: Option<[u8; 32]>,
    },
    /// Enrolling a passkey, bound to its public key (`CredentialKey::to_bytes()`), so that the
    /// signer can tell the approved key from another one under the same credential id.
    /// (Appended last; [`Action::EnrolPasskey`] is the form of older proofs.)
    EnrolPasskeyKey {
        user: UserId,
        credential_id: Vec<u8>,
        public_key: Vec<u8>,
    },
    /// An admin (`user`) freezing the account of `target`. (Appended last.)
    FreezeUser {
        user: UserId,
        target: UserId,
    },
}

impl Action {
    pub fn user(&self) -> UserId {
        match self {
            Action::Login { user, .. }
            | Action::Withdraw { user, .. }
            | Action::AddWithdrawalAddress { user, .. }
            | Action::CreateWithdrawKey { user, .. }
            | Action::ChangePassword { user }
            | Action::ChangeEmail { user, .. }
            | Action::SetAntiPhishing { user, .. }
            | Action::EnrolTotp { user }
            | Action::EnrolPasskey { user, .. }
            | Action::RemoveTotp { user }
            | Action::RemovePasskey { user, .. }
            | Action::NewRecoveryCodes { user }
            | Action::ReviewWithdrawal { user, .. }
            | Action::ProposeChange { user, .. }
            | Action::ApproveChange { user, .. }
            | Action::Halt { user, .. }
            | Action::HaltOperation { user, .. }
            | Action::ResolveIncident { user, .. }
            | Action::CreateApiKey { user, .. }
            | Action::RevokeApiKey { user, .. }
            | Action::EndSessions { user, .. }
            | Action::EnrolPasskeyKey { user, .. }
            | Action::FreezeUser { user, .. } => *user,
        }
    }

    /// BLAKE3 (in derive-key mode, so no other use of BLAKE3 can collide with it) over the
    /// action's canonical encoding.
    pub fn digest(&self) -> [u8; 32] {
        let bytes = postcard::to_stdvec(self).expect("actions always serialize");
        let mut h = blake3::Hasher::new_derive_key("kinko step-up action v1");
        h.update(&bytes);
        *h.finalize().as_bytes()
    }

    /// Whether a recovery code may authorise it (the recovery flow: re-enrolling a factor).
    fn recovery_allowed(&self) -> bool {
        matches!(
            self,
            Action::EnrolTotp { .. }
                | Action::EnrolPasskey { .. }
                | Action::EnrolPasskeyKey { .. }
                | Action::NewRecoveryCodes { .. }
        )
    }
}

/// The bytes a WebAuthn authenticator signs as its challenge for a step-up: a version tag, when
/// the challenge was issued, a random nonce, and the action's digest.
pub fn challenge_bytes(issued_ns: u64, nonce: &[u8; 16], action: &[u8; 32]) -> [u8; 60] {
    let mut c = [0u8; 60];
    c[..4].copy_from_slice(b"KSU1");
    c[4..12].copy_from_slice(&issued_ns.to_be_bytes());
    c[12..28].copy_from_slice(nonce);
    c[28..].copy_from_slice(action);
    c
}

/// An operator's command names who decided and why (recorded with it).
fn operator_reason(requested_by: &str, reason: &str) -> Result<(), Reject> {
    if requested_by.trim().is_empty()
        || reason.trim().is_empty()
        || !text_ok(requested_by, 64)
        || !text_ok(reason, REASON_LEN_MAX)
    {
        return Err(Reject::ReasonRequired);
    }
    Ok(())
}

/// Splits challenge bytes back into (issued_ns, nonce, action digest).
pub fn parse_challenge(c: &[u8]) -> Option<(u64, [u8; 16], [u8; 32])> {
    if c.len() != 60 || &c[..4] != b"KSU1" {
        return None;
    }
    let issued = u64::from_be_bytes(c[4..12].try_into().ok()?);
    Some((issued, c[12..28].try_into().ok()?, c[28..].try_into().ok()?))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProofFactor {
    /// A TOTP code, consumed at `step`. Whoever holds the secret can check `code` again.
    Totp { step: u64, code: String },
    /// A WebAuthn assertion over [`challenge_bytes`]; the signer re-verifies it with its own copy
    /// of the public key.
    Passkey {
        credential_id: Vec<u8>,
        authenticator_data: Vec<u8>,
        client_data_json: Vec<u8>,
        signature: Vec<u8>,
    },
    /// A single-use recovery code (only for re-enrolling a factor).
    Recovery { code_hash: [u8; 32] },
}

impl ProofFactor {
    pub fn name(&self) -> &'static str {
        match self {
            ProofFactor::Totp { .. } => "totp",
            ProofFactor::Passkey { .. } => "passkey",
            ProofFactor::Recovery { .. } => "recovery_code",
        }
    }
}

/// A fresh second-factor proof bound to one action. Stored with the action it authorised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepUp {
    /// Digest of the action the user approved.
    pub action: [u8; 32],
    pub issued_ns: u64,
    pub nonce: [u8; 16],
    pub factor: ProofFactor,
}

impl StepUp {
    pub fn challenge(&self) -> [u8; 60] {
        challenge_bytes(self.issued_ns, &self.nonce, &self.action)
    }
}

/// How a request reached the engine, so the engine can check the caller's right to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Via {
    /// A browser or app session (BLAKE3 of its token).
    Session([u8; 32]),
    /// An API key, from this client IP.
    ApiKey { id: String, ip: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FactorRef {
    Totp,
    Passkey(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentityCommand {
    SetPolicy(Policy),
    Register {
        email: String,
        password_hash: String,
    },
    /// After the gateway checked the password against `password_hash_digest` (BLAKE3 of the
    /// PHC string it verified; refused if the password changed meanwhile).
    OpenSession {
        user: UserId,
        token_hash: [u8; 32],
        level: SessionLevel,
        expires_ns: u64,
        device: String,
        ip: String,
        password_hash_digest: [u8; 32],
    },
    /// Second factor for a password session: the old token stops working, a new one is full.
    CompleteLogin {
        token_hash: [u8; 32],
        new_token_hash: [u8; 32],
        expires_ns: u64,
        proof: StepUp,
    },
    CloseSession {
        token_hash: [u8; 32],
    },
    /// Ends the user's sessions, all or all but one.
    RevokeSessions {
        user: UserId,
        keep: Option<[u8; 32]>,
    },
    /// Enrols TOTP: `first_step` is the step of the code that confirmed the secret (consumed).
    /// A user who has a factor (or must re-enrol) needs `proof`; `recovery` gives a user who
    /// has no recovery codes a first set.
    EnrolTotp {
        user: UserId,
        sealed_secret: Vec<u8>,
        first_step: u64,
        proof: Option<StepUp>,
        recovery: Vec<[u8; 32]>,
    },
    EnrolPasskey {
        user: UserId,
        passkey: Passkey,
        proof: Option<StepUp>,
        recovery: Vec<[u8; 32]>,
    },
    RemoveFactor {
        user: UserId,
        factor: FactorRef,
        proof: StepUp,
    },
    NewRecoveryCodes {
        user: UserId,
        hashes: Vec<[u8; 32]>,
        proof: StepUp,
    },
    ChangePassword {
        user: UserId,
        password_hash: String,
        proof: Option<StepUp>,
        /// The session that asked keeps working; every other session ends.
        keep_session: Option<[u8; 32]>,
    },
    ChangeEmail {
        user: UserId,
        email: String,
        proof: StepUp,
    },
    SetAntiPhishing {
        user: UserId,
        code: String,
        proof: Option<StepUp>,
    },
    IssueResetToken {
        user: UserId,
        token_hash: [u8; 32],
        expires_ns: u64,
    },
    /// Password reset by emailed token: never removes a factor, ends every session and starts
    /// the security-change lock.
    ResetPassword {
        token_hash: [u8; 32],
        password_hash: String,
    },
    /// Halts the account's withdrawals and sessions until an operator reviews it.
    Freeze {
        user: UserId,
        reason: String,
    },
    /// Operator: back to active after review (or disabled).
    SetStatus {
        user: UserId,
        status: UserStatus,
        requested_by: String,
        reason: String,
    },
    /// Operator: every session and every second factor of every user, as after a breach; an
    /// admin who holds a passkey keeps the passkeys (and signs in with one).
    RevokeEverything {
        requested_by: String,
        reason: String,
    },
    /// Sets a user's admin roles. Through the operator (bootstrap: while fewer than two
    /// security admins exist) or as a two-admin proposal (later).
    SetRoles {
        user: UserId,
        roles: Vec<AdminRole>,
        requested_by: String,
        reason: String,
    },
    /// An authentication failure, recorded for audit (wrong password, bad code, ...).
    AuthFailed {
        user: Option<UserId>,
        ip: String,
        reason: String,
    },
    /// Ends the user's other sessions (all but `keep`), or only `session`, with a
    /// second-factor proof for [`Action::EndSessions`]: a stolen session alone cannot sign the
    /// owner out. `RevokeSessions` stays for the engine's own callers and old journals.
    EndSessionsWithProof {
        user: UserId,
        keep: [u8; 32],
        session: Option<[u8; 32]>,
        proof: StepUp,
    },
    /// The language of the user's messages (the page's language switch, or the browser's at
    /// sign-up). Not a security change: no proof, no lock.
    SetLanguage {
        user: UserId,
        language: Language,
    },
}

impl IdentityCommand {
    pub fn name(&self) -> &'static str {
        match self {
            IdentityCommand::SetPolicy(_) => "set_identity_policy",
            IdentityCommand::Register { .. } => "register_user",
            IdentityCommand::OpenSession { .. } => "open_session",
            IdentityCommand::CompleteLogin { .. } => "complete_login",
            IdentityCommand::CloseSession { .. } => "close_session",
            IdentityCommand::RevokeSessions { .. } => "revoke_sessions",
            IdentityCommand::EnrolTotp { .. } => "enrol_totp",
            IdentityCommand::EnrolPasskey { .. } => "enrol_passkey",
            IdentityCommand::RemoveFactor { .. } => "remove_factor",
            IdentityCommand::NewRecoveryCodes { .. } => "new_recovery_codes",
            IdentityCommand::ChangePassword { .. } => "change_password",
            IdentityCommand::ChangeEmail { .. } => "change_email",
            IdentityCommand::SetAntiPhishing { .. } => "set_anti_phishing",
            IdentityCommand::IssueResetToken { .. } => "issue_reset_token",
            IdentityCommand::ResetPassword { .. } => "reset_password",
            IdentityCommand::Freeze { .. } => "freeze_account",
            IdentityCommand::SetStatus { .. } => "set_user_status",
            IdentityCommand::RevokeEverything { .. } => "revoke_everything",
            IdentityCommand::SetRoles { .. } => "set_roles",
            IdentityCommand::AuthFailed { .. } => "auth_failed",
            IdentityCommand::EndSessionsWithProof { .. } => "end_sessions_with_proof",
            IdentityCommand::SetLanguage { .. } => "set_language",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentityReply {
    Registered(UserId),
    Session { user: UserId, level: SessionLevel },
    Done(UserId),
    Revoked { sessions: usize, users: usize },
}

/// What changed, for messages to the user, WebSocket and audit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentityEvent {
    Registered {
        user: UserId,
    },
    SessionOpened {
        user: UserId,
        level: SessionLevel,
        device: String,
        ip: String,
        new_device: bool,
    },
    SessionsEnded {
        user: UserId,
        count: usize,
    },
    FactorEnrolled {
        user: UserId,
        factor: String,
    },
    FactorRemoved {
        user: UserId,
        factor: String,
    },
    RecoveryCodesIssued {
        user: UserId,
    },
    RecoveryCodeUsed {
        user: UserId,
    },
    PasswordChanged {
        user: UserId,
        by_reset: bool,
    },
    EmailChanged {
        user: UserId,
        old: String,
    },
    AntiPhishingSet {
        user: UserId,
    },
    /// Withdrawals locked until the given time.
    SecurityLocked {
        user: UserId,
        until_ns: u64,
    },
    ResetRequested {
        user: UserId,
    },
    StatusChanged {
        user: UserId,
        status: UserStatus,
        reason: String,
    },
    RolesSet {
        user: UserId,
        roles: Vec<AdminRole>,
        by: String,
    },
    EverythingRevoked {
        requested_by: String,
        reason: String,
        sessions: usize,
        users: usize,
    },
    /// A proof was accepted for an action (audit trail of every second-factor use).
    StepUpUsed {
        user: UserId,
        factor: String,
        action: [u8; 32],
    },
    AuthFailed {
        user: Option<UserId>,
        ip: String,
        reason: String,
    },
}

/// The identity subsystem's persistent state, in canonical (sorted) form.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityState {
    pub policy: Policy,
    pub users: Vec<User>,
    pub sessions: Vec<Session>,
    pub reset_tokens: Vec<ResetToken>,
    /// Challenges already used, with the time after which they would be stale anyway.
    pub used_challenges: Vec<([u8; 32], u64)>,
    /// The relying party admins' passkey assertions are verified against. Once set (the
    /// gateway journals it at every start), admin actions need a passkey assertion the engine
    /// verifies itself; it is never unset.
    pub relying_party: Option<RelyingParty>,
}

/// A validated proof not yet applied: applying it is the last step of a command, after every
/// other check passed, so that a refused command consumes nothing.
#[derive(Clone, Debug)]
pub struct ProofUse {
    user: UserId,
    challenge: [u8; 32],
    stale_ns: u64,
    factor: Used,
    action: [u8; 32],
}

#[derive(Clone, Debug)]
enum Used {
    Totp(u64),
    Passkey(usize, u32),
    Recovery(usize),
}

#[derive(Clone, Debug, Default)]
pub struct Identity {
    policy: Policy,
    users: Vec<User>,
    by_email: BTreeMap<String, UserId>,
    sessions: BTreeMap<[u8; 32], Session>,
    reset_tokens: BTreeMap<[u8; 32], ResetToken>,
    used_challenges: BTreeMap<[u8; 32], u64>,
    relying_party: Option<RelyingParty>,
}

/// Trims and lower-cases an email address; None if it is not a plausible one.
pub fn normalise_email(email: &str) -> Option<String> {
    let e = email.trim().to_ascii_lowercase();
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && e.len() <= EMAIL_LEN_MAX
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && e.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b',' | b';'));
    ok.then_some(e)
}

fn text_ok(s: &str, max: usize) -> bool {
    s.len() <= max && !s.chars().any(char::is_control)
}

/// An anti-phishing code: 4 to 32 printable characters (letters, digits, spaces, `-_.!`).
pub fn anti_phishing_ok(code: &str) -> bool {
    let n = code.chars().count();
    (4..=ANTI_PHISHING_LEN_MAX).contains(&n)
        && code.trim() == code
        && code
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '!'))
}

/// A fresh set of recovery codes from their hashes, none used.
fn recovery_codes(hashes: &[[u8; 32]]) -> Vec<RecoveryCode> {
    hashes
        .iter()
        .map(|h| RecoveryCode {
            hash: *h,
            used: false,
        })
        .collect()
}

fn password_hash_ok(h: &str) -> bool {
    h.starts_with("$argon2id$") && h.len() <= PASSWORD_HASH_LEN_MAX && h.bytes().all(|b| b.is_ascii_graphic())
}

impl Identity {
    pub fn policy(&self) -> Policy {
        self.policy
    }
    pub fn user(&self, id: UserId) -> Option<&User> {
        id.0.checked_sub(1).and_then(|i| self.users.get(i as usize))
    }
    pub fn user_by_email(&self, email: &str) -> Option<&User> {
        let e = normalise_email(email)?;
        self.by_email.get(&e).and_then(|id| self.user(*id))
    }
    pub fn users(&self) -> &[User] {
        &self.users
    }
    /// A live session (not expired at `now_ns`) by token hash.
    pub fn session(&self, token_hash: &[u8; 32], now_ns: u64) -> Option<&Session> {
        self.sessions.get(token_hash).filter(|s| s.expires_ns > now_ns)
    }
    pub fn sessions_of(&self, user: UserId, now_ns: u64) -> Vec<&Session> {
        let mut v: Vec<&Session> = self
            .sessions
            .values()
            .filter(|s| s.user == user && s.expires_ns > now_ns)
            .collect();
        v.sort_by_key(|s| s.created_ns);
        v
    }
    pub fn reset_token(&self, hash: &[u8; 32], now_ns: u64) -> Option<&ResetToken> {
        self.reset_tokens.get(hash).filter(|t| t.expires_ns > now_ns)
    }

    fn user_mut(&mut self, id: UserId) -> Result<&mut User, Reject> {
        id.0.checked_sub(1)
            .and_then(|i| self.users.get_mut(i as usize))
            .ok_or(Reject::UserNotFound)
    }

    /// The user, if it may act at all (not disabled; frozen users may still sign in and look).
    fn usable(&self, id: UserId) -> Result<&User, Reject> {
        let u = self.user(id).ok_or(Reject::UserNotFound)?;
        match u.status {
            UserStatus::Disabled => Err(Reject::AccountDisabled),
            UserStatus::Active | UserStatus::Frozen => Ok(u),
        }
    }

    /// The checks before anything that moves money or changes credentials.
    pub fn active(&self, id: UserId) -> Result<&User, Reject> {
        let u = self.usable(id)?;
        if u.status == UserStatus::Frozen {
            return Err(Reject::AccountFrozen);
        }
        Ok(u)
    }

    /// Sets a user's admin roles (sorted, without repeats). Callers decide who may.
    pub(crate) fn set_roles(
        &mut self,
        user: UserId,
        roles: &[AdminRole],
        by: &str,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<(), Reject> {
        let mut roles = roles.to_vec();
        roles.sort_unstable();
        roles.dedup();
        let u = self.user_mut(user)?;
        u.roles = roles.clone();
        events.push(IdentityEvent::RolesSet {
            user,
            roles,
            by: by.to_owned(),
        });
        Ok(())
    }

    /// Checks that the caller may ask for a withdrawal-class action for `user`: a full session
    /// of that user, or an unexpired key of that user with the withdraw scope used from an
    /// allowed IP. Then that the user is active and outside the security-change lock.
    pub fn check_withdraw_caller(
        &self,
        keys: &crate::keys::Keys,
        user: UserId,
        via: &Via,
        now_ns: u64,
        lock_applies: bool,
    ) -> Result<(), Reject> {
        match via {
            Via::Session(h) => {
                let s = self.session(h, now_ns).ok_or(Reject::SessionInvalid)?;
                if s.user != user {
                    return Err(Reject::SessionInvalid);
                }
                if s.level != SessionLevel::Full {
                    return Err(Reject::SecondFactorRequired);
                }
            }
            Via::ApiKey { id, ip } => keys.check_withdraw(user, id, ip, now_ns)?,
        }
        let u = self.active(user)?;
        if lock_applies && now_ns < u.security_locked_until_ns {
            return Err(Reject::SecurityLocked);
        }
        Ok(())
    }

    /// Validates a step-up proof for `action` without applying it.
    pub fn check_proof(&self, action: &Action, proof: &StepUp, now_ns: u64) -> Result<ProofUse, Reject> {
        let user = self.usable(action.user())?;
        let digest = action.digest();
        if proof.action != digest {
            return Err(Reject::StepUpActionMismatch);
        }
        let stale_ns = proof.issued_ns.saturating_add(PROOF_FRESH_MAX_NS);
        if now_ns >= proof.issued_ns.saturating_add(self.policy.proof_fresh_ns)
            || proof.issued_ns > now_ns.saturating_add(60 * NS)
        {
            return Err(Reject::StepUpExpired);
        }
        let challenge = *blake3::hash(&proof.challenge()).as_bytes();
        if self.used_challenges.contains_key(&challenge) {
            return Err(Reject::StepUpReplayed);
        }
        if user.reenrol_required && !matches!(proof.factor, ProofFactor::Recovery { .. }) {
            return Err(Reject::ReenrolmentRequired);
        }
        let factor = match &proof.factor {
            ProofFactor::Totp { step, code } => {
                if user.totp.is_none() {
                    return Err(Reject::FactorNotEnrolled);
                }
                if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Reject::StepUpInvalid);
                }
                if *step <= user.last_totp_step {
                    return Err(Reject::StepUpReplayed);
                }
                // The code's step must be the current one, give or take one (RFC 6238 §5.2).
                let now_step = now_ns / TOTP_STEP_NS;
                if step.abs_diff(now_step) > 1 {
                    return Err(Reject::StepUpExpired);
                }
                Used::Totp(*step)
            }
            ProofFactor::Passkey {
                credential_id,
                authenticator_data,
                client_data_json,
                signature,
            } => {
                if authenticator_data.len() < 37
                    || authenticator_data.len() > AUTHENTICATOR_DATA_LEN_MAX
                    || client_data_json.len() > CLIENT_DATA_LEN_MAX
                    || signature.is_empty()
                    || signature.len() > SIGNATURE_LEN_MAX
                {
                    return Err(Reject::StepUpInvalid);
                }
                let i = user
                    .passkeys
                    .iter()
                    .position(|p| &p.credential_id == credential_id)
                    .ok_or(Reject::FactorNotEnrolled)?;
                let count = u32::from_be_bytes(
                    authenticator_data[33..37]
                        .try_into()
                        .map_err(|_| Reject::StepUpInvalid)?,
                );
                let stored = user.passkeys[i].sign_count;
                if (stored != 0 || count != 0) && count <= stored {
                    return Err(Reject::StepUpReplayed);
                }
                Used::Passkey(i, count)
            }
            ProofFactor::Recovery { code_hash } => {
                if !action.recovery_allowed() {
                    return Err(Reject::RecoveryNotAllowed);
                }
                let i = user
                    .recovery
                    .iter()
                    .position(|c| !c.used && &c.hash == code_hash)
                    .ok_or(Reject::RecoveryCodeInvalid)?;
                Used::Recovery(i)
            }
        };
        Ok(ProofUse {
            user: user.id,
            challenge,
            stale_ns,
            factor,
            action: digest,
        })
    }

    /// The relying party admin assertions are checked against, once journaled.
    pub fn relying_party(&self) -> Option<&RelyingParty> {
        self.relying_party.as_ref()
    }

    /// Sets (or changes) the relying party. It cannot be unset: from the first one on, admin
    /// actions need passkey assertions the engine verifies.
    pub(crate) fn set_relying_party(&mut self, rp: &RelyingParty) -> Result<(), Reject> {
        if !rp.valid() {
            return Err(Reject::RelyingPartyInvalid);
        }
        self.relying_party = Some(rp.clone());
        Ok(())
    }

    /// Validates an admin's proof for `action`: everything [`Identity::check_proof`] checks,
    /// and, once the relying party is known, that it is a passkey assertion whose signature the
    /// engine verifies itself with the public key it stored (TOTP and recovery codes are
    /// refused: whoever holds the host can mint a TOTP code or replay a code hash). Before the
    /// relying party is journaled (journals written before it existed) the proof is checked as
    /// [`Identity::check_proof`] always did, so that old journals replay as they were applied.
    pub fn check_admin_proof(
        &self,
        action: &Action,
        proof: &StepUp,
        now_ns: u64,
    ) -> Result<ProofUse, Reject> {
        let Some(rp) = &self.relying_party else {
            return self.check_proof(action, proof, now_ns);
        };
        let ProofFactor::Passkey {
            credential_id,
            authenticator_data,
            client_data_json,
            signature,
        } = &proof.factor
        else {
            return Err(Reject::AdminPasskeyRequired);
        };
        let used = self.check_proof(action, proof, now_ns)?;
        let key = self
            .user(action.user())
            .and_then(|u| u.passkey(credential_id))
            .ok_or(Reject::FactorNotEnrolled)?;
        crate::passkey::verify_assertion(
            rp,
            &key.public_key,
            &proof.challenge(),
            authenticator_data,
            client_data_json,
            signature,
        )?;
        Ok(used)
    }

    /// A proof for changing the user's own factors: an admin who holds a passkey changes factors
    /// only with a passkey assertion (see [`Identity::check_admin_proof`]), so that a forged
    /// TOTP proof cannot enrol a key of the attacker's for them; everyone else as before.
    fn check_factor_proof(&self, action: &Action, proof: &StepUp, now_ns: u64) -> Result<ProofUse, Reject> {
        let guarded = self
            .user(action.user())
            .is_some_and(|u| !u.roles.is_empty() && !u.passkeys.is_empty());
        if guarded {
            self.check_admin_proof(action, proof, now_ns)
        } else {
            self.check_proof(action, proof, now_ns)
        }
    }

    /// Applies a checked proof: the TOTP step, passkey counter, recovery code and challenge are
    /// used up.
    pub(crate) fn commit_proof(&mut self, p: ProofUse, now_ns: u64, events: &mut Vec<IdentityEvent>) {
        self.used_challenges.retain(|_, stale| *stale > now_ns);
        self.used_challenges.insert(p.challenge, p.stale_ns);
        let u = self.user_mut(p.user).expect("checked proof names a user");
        let factor = match p.factor {
            Used::Totp(step) => {
                u.last_totp_step = step;
                "totp"
            }
            Used::Passkey(i, count) => {
                u.passkeys[i].sign_count = count;
                "passkey"
            }
            Used::Recovery(i) => {
                u.recovery[i].used = true;
                events.push(IdentityEvent::RecoveryCodeUsed { user: p.user });
                "recovery_code"
            }
        };
        events.push(IdentityEvent::StepUpUsed {
            user: p.user,
            factor: factor.to_owned(),
            action: p.action,
        });
    }

    fn lock(&mut self, user: UserId, now_ns: u64, events: &mut Vec<IdentityEvent>) {
        let until = now_ns.saturating_add(self.policy.security_lock_ns);
        if let Ok(u) = self.user_mut(user) {
            u.security_locked_until_ns = u.security_locked_until_ns.max(until);
            events.push(IdentityEvent::SecurityLocked {
                user,
                until_ns: until,
            });
        }
    }

    fn end_sessions(
        &mut self,
        user: UserId,
        keep: Option<[u8; 32]>,
        events: &mut Vec<IdentityEvent>,
    ) -> usize {
        let before = self.sessions.len();
        self.sessions.retain(|h, s| s.user != user || Some(*h) == keep);
        let count = before - self.sessions.len();
        if count > 0 {
            events.push(IdentityEvent::SessionsEnded { user, count });
        }
        count
    }

    /// A proof is required when the user has a factor or must re-enrol; `Some` is checked.
    fn optional_proof(
        &self,
        action: &Action,
        proof: &Option<StepUp>,
        now_ns: u64,
    ) -> Result<Option<ProofUse>, Reject> {
        let u = self.usable(action.user())?;
        match proof {
            Some(p) => self.check_proof(action, p, now_ns).map(Some),
            None if u.has_factor() || u.reenrol_required => Err(Reject::StepUpRequired),
            None => Ok(None),
        }
    }

    fn recovery_ok(hashes: &[[u8; 32]]) -> bool {
        hashes.len() <= RECOVERY_CODES_MAX
    }

    /// Applies one identity command, dispatched by family as `Engine` dispatches by subsystem.
    /// `funded` says whether the command's user holds a customer balance above zero on any
    /// asset (the engine reads it from the ledger; only factor enrolment uses it).
    pub(crate) fn apply(
        &mut self,
        now_ns: u64,
        cmd: &IdentityCommand,
        funded: bool,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        use IdentityCommand as C;
        match cmd {
            C::SetPolicy(p) => self.set_policy(p),
            C::Register { .. }
            | C::OpenSession { .. }
            | C::CompleteLogin { .. }
            | C::CloseSession { .. }
            | C::RevokeSessions { .. }
            | C::EndSessionsWithProof { .. } => self.session_command(now_ns, cmd, events),
            C::EnrolTotp { .. }
            | C::EnrolPasskey { .. }
            | C::RemoveFactor { .. }
            | C::NewRecoveryCodes { .. } => self.factor_command(now_ns, cmd, funded, events),
            C::ChangePassword { .. }
            | C::ChangeEmail { .. }
            | C::SetAntiPhishing { .. }
            | C::IssueResetToken { .. }
            | C::ResetPassword { .. } => self.credential_command(now_ns, cmd, events),
            C::Freeze { .. }
            | C::SetStatus { .. }
            | C::SetRoles { .. }
            | C::RevokeEverything { .. }
            | C::AuthFailed { .. } => self.status_command(now_ns, cmd, events),
            C::SetLanguage { user, language } => {
                self.user_mut(*user)?.language = *language;
                Ok(IdentityReply::Done(*user))
            }
        }
    }

    fn set_policy(&mut self, p: &Policy) -> Result<IdentityReply, Reject> {
        if p.proof_fresh_ns == 0
            || p.proof_fresh_ns > PROOF_FRESH_MAX_NS
            || p.security_lock_ns > 30 * 24 * 3600 * NS
        {
            return Err(Reject::LimitExceeded);
        }
        self.policy = *p;
        Ok(IdentityReply::Done(UserId(0)))
    }

    // Registration, login and sessions.

    fn session_command(
        &mut self,
        now_ns: u64,
        cmd: &IdentityCommand,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        use IdentityCommand as C;
        match cmd {
            C::Register { email, password_hash } => self.register(now_ns, email, password_hash, events),
            C::OpenSession {
                user,
                token_hash,
                level,
                expires_ns,
                device,
                ip,
                password_hash_digest,
            } => {
                let s = Session {
                    token_hash: *token_hash,
                    user: *user,
                    level: *level,
                    created_ns: now_ns,
                    expires_ns: *expires_ns,
                    device: device.clone(),
                    ip: ip.clone(),
                };
                self.open_session(now_ns, s, password_hash_digest, events)
            }
            C::CompleteLogin {
                token_hash,
                new_token_hash,
                expires_ns,
                proof,
            } => self.complete_login(now_ns, token_hash, new_token_hash, *expires_ns, proof, events),
            C::CloseSession { token_hash } => {
                let s = self.sessions.remove(token_hash).ok_or(Reject::SessionInvalid)?;
                events.push(IdentityEvent::SessionsEnded {
                    user: s.user,
                    count: 1,
                });
                Ok(IdentityReply::Done(s.user))
            }
            C::RevokeSessions { user, keep } => {
                self.user(*user).ok_or(Reject::UserNotFound)?;
                let n = self.end_sessions(*user, *keep, events);
                Ok(IdentityReply::Revoked {
                    sessions: n,
                    users: 1,
                })
            }
            C::EndSessionsWithProof {
                user,
                keep,
                session,
                proof,
            } => self.end_sessions_with_proof(now_ns, *user, *keep, *session, proof, events),
            _ => unreachable!("session_command called with {}", cmd.name()),
        }
    }

    fn end_sessions_with_proof(
        &mut self,
        now_ns: u64,
        user: UserId,
        keep: [u8; 32],
        session: Option<[u8; 32]>,
        proof: &StepUp,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        self.user(user).ok_or(Reject::UserNotFound)?;
        let used = self.check_proof(&Action::EndSessions { user, session }, proof, now_ns)?;
        let n = match session {
            Some(h) => {
                let theirs = self.sessions.get(&h).is_some_and(|s| s.user == user);
                if !theirs || h == keep {
                    return Err(Reject::SessionInvalid);
                }
                self.sessions.remove(&h);
                events.push(IdentityEvent::SessionsEnded { user, count: 1 });
                1
            }
            None => self.end_sessions(user, Some(keep), events),
        };
        self.commit_proof(used, now_ns, events);
        Ok(IdentityReply::Revoked {
            sessions: n,
            users: 1,
        })
    }

    fn register(
        &mut self,
        now_ns: u64,
        email: &str,
        password_hash: &str,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        let email = normalise_email(email).ok_or(Reject::EmailInvalid)?;
        if !password_hash_ok(password_hash) {
            return Err(Reject::PasswordHashInvalid);
        }
        if self.by_email.contains_key(&email) {
            return Err(Reject::EmailTaken);
        }
        let id = UserId(self.users.len() as u64 + 1);
        self.by_email.insert(email.clone(), id);
        self.users.push(User {
            id,
            email,
            password_hash: password_hash.to_owned(),
            status: UserStatus::Active,
            status_reason: None,
            anti_phishing: None,
            anti_phishing_set_ns: 0,
            security_locked_until_ns: 0,
            created_ns: now_ns,
            totp: None,
            last_totp_step: 0,
            passkeys: Vec::new(),
            recovery: Vec::new(),
            reenrol_required: false,
            roles: Vec::new(),
            approvals: FactorApprovals::default(),
            language: Language::En,
        });
        events.push(IdentityEvent::Registered { user: id });
        Ok(IdentityReply::Registered(id))
    }

    /// Opens session `s` after the gateway checked the password whose PHC string hashes to
    /// `password_hash_digest`.
    fn open_session(
        &mut self,
        now_ns: u64,
        s: Session,
        password_hash_digest: &[u8; 32],
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        let u = self.usable(s.user)?;
        if blake3::hash(u.password_hash.as_bytes()).as_bytes() != password_hash_digest {
            return Err(Reject::CredentialsInvalid);
        }
        if s.level == SessionLevel::Full && (u.has_factor() || u.reenrol_required) {
            return Err(Reject::SecondFactorRequired);
        }
        if s.expires_ns <= now_ns || s.expires_ns - now_ns > SESSION_TTL_MAX_NS {
            return Err(Reject::SessionExpiryInvalid);
        }
        if !text_ok(&s.device, DEVICE_LEN_MAX) || !text_ok(&s.ip, 64) {
            return Err(Reject::LabelInvalid);
        }
        if self.sessions.contains_key(&s.token_hash) {
            return Err(Reject::SessionInvalid);
        }
        let new_device = !self
            .sessions
            .values()
            .any(|x| x.user == s.user && x.device == s.device)
            && u.created_ns != now_ns;
        let (user, level) = (s.user, s.level);
        self.insert_session(s, now_ns, new_device, events);
        Ok(IdentityReply::Session { user, level })
    }

    fn complete_login(
        &mut self,
        now_ns: u64,
        token_hash: &[u8; 32],
        new_token_hash: &[u8; 32],
        expires_ns: u64,
        proof: &StepUp,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        let s = self
            .session(token_hash, now_ns)
            .ok_or(Reject::SessionInvalid)?
            .clone();
        if s.level != SessionLevel::Password {
            return Err(Reject::SessionInvalid);
        }
        if expires_ns <= now_ns || expires_ns - now_ns > SESSION_TTL_MAX_NS {
            return Err(Reject::SessionExpiryInvalid);
        }
        if self.sessions.contains_key(new_token_hash) {
            return Err(Reject::SessionInvalid);
        }
        let action = Action::Login {
            user: s.user,
            session: *token_hash,
        };
        let u = self.usable(s.user)?;
        let used = if u.reenrol_required && !u.has_factor() {
            // After platform-wide revocation the password session may only re-enrol.
            return Err(Reject::ReenrolmentRequired);
        } else {
            self.check_proof(&action, proof, now_ns)?
        };
        self.commit_proof(used, now_ns, events);
        self.sessions.remove(token_hash);
        self.insert_session(
            Session {
                token_hash: *new_token_hash,
                level: SessionLevel::Full,
                created_ns: now_ns,
                expires_ns,
                ..s
            },
            now_ns,
            false,
            events,
        );
        Ok(IdentityReply::Session {
            user: action.user(),
            level: SessionLevel::Full,
        })
    }

    // Second factors and recovery codes.

    fn factor_command(
        &mut self,
        now_ns: u64,
        cmd: &IdentityCommand,
        funded: bool,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        use IdentityCommand as C;
        match cmd {
            C::EnrolTotp {
                user,
                sealed_secret,
                first_step,
                proof,
                recovery,
            } => {
                let action = Action::EnrolTotp { user: *user };
                let used = self.enrol_checks(&action, proof, recovery, now_ns)?;
                let u = self.user(*user).ok_or(Reject::UserNotFound)?;
                if u.totp.is_some() {
                    return Err(Reject::FactorExists);
                }
                if sealed_secret.is_empty() || sealed_secret.len() > SEALED_SECRET_LEN_MAX {
                    return Err(Reject::FactorInvalid);
                }
                if *first_step <= u.last_totp_step || first_step.abs_diff(now_ns / TOTP_STEP_NS) > 1 {
                    return Err(Reject::StepUpReplayed);
                }
                if let Some(p) = used {
                    self.commit_proof(p, now_ns, events);
                }
                let u = self.user_mut(*user)?;
                u.totp = Some(TotpFactor {
                    sealed_secret: sealed_secret.clone(),
                    created_ns: now_ns,
                });
                u.approvals.totp = proof.clone();
                u.last_totp_step = *first_step;
                self.after_enrol(*user, "totp", recovery, funded, now_ns, events);
                Ok(IdentityReply::Done(*user))
            }
            C::EnrolPasskey {
                user,
                passkey,
                proof,
                recovery,
            } => {
                self.enrol_passkey(now_ns, *user, passkey, proof, recovery, events)?;
                self.after_enrol(*user, "passkey", recovery, funded, now_ns, events);
                Ok(IdentityReply::Done(*user))
            }
            C::RemoveFactor { user, factor, proof } => {
                self.remove_factor(now_ns, *user, factor, proof, events)
            }
            C::NewRecoveryCodes { user, hashes, proof } => {
                self.new_recovery_codes(now_ns, *user, hashes, proof, events)
            }
            _ => unreachable!("factor_command called with {}", cmd.name()),
        }
    }

    fn enrol_passkey(
        &mut self,
        now_ns: u64,
        user: UserId,
        passkey: &Passkey,
        proof: &Option<StepUp>,
        recovery: &[[u8; 32]],
        events: &mut Vec<IdentityEvent>,
    ) -> Result<(), Reject> {
        // The key-bound action; a proof over the older form (credential id only) still reads.
        let legacy = Action::EnrolPasskey {
            user,
            credential_id: passkey.credential_id.clone(),
        };
        let action = match proof {
            Some(p) if p.action == legacy.digest() => legacy,
            _ => Action::EnrolPasskeyKey {
                user,
                credential_id: passkey.credential_id.clone(),
                public_key: passkey.public_key.clone(),
            },
        };
        let used = self.enrol_checks(&action, proof, recovery, now_ns)?;
        if passkey.credential_id.is_empty()
            || passkey.credential_id.len() > CREDENTIAL_ID_LEN_MAX
            || passkey.public_key.is_empty()
            || passkey.public_key.len() > PUBLIC_KEY_LEN_MAX
            || !text_ok(&passkey.label, 64)
        {
            return Err(Reject::FactorInvalid);
        }
        if self
            .users
            .iter()
            .any(|u| u.passkey(&passkey.credential_id).is_some())
        {
            return Err(Reject::FactorExists);
        }
        let u = self.user(user).ok_or(Reject::UserNotFound)?;
        if u.passkeys.len() >= PASSKEYS_PER_USER_MAX {
            return Err(Reject::LimitExceeded);
        }
        if let Some(p) = used {
            self.commit_proof(p, now_ns, events);
        }
        let u = self.user_mut(user)?;
        u.passkeys.push(Passkey {
            created_ns: now_ns,
            ..passkey.clone()
        });
        if let Some(p) = proof {
            u.approvals
                .passkeys
                .push((passkey.credential_id.clone(), p.clone()));
        }
        Ok(())
    }

    fn remove_factor(
        &mut self,
        now_ns: u64,
        user: UserId,
        factor: &FactorRef,
        proof: &StepUp,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        let action = match factor {
            FactorRef::Totp => Action::RemoveTotp { user },
            FactorRef::Passkey(id) => Action::RemovePasskey {
                user,
                credential_id: id.clone(),
            },
        };
        self.active(user)?;
        let used = self.check_factor_proof(&action, proof, now_ns)?;
        let u = self.user(user).ok_or(Reject::UserNotFound)?;
        let present = match factor {
            FactorRef::Totp => u.totp.is_some(),
            FactorRef::Passkey(id) => u.passkey(id).is_some(),
        };
        if !present {
            return Err(Reject::FactorNotEnrolled);
        }
        self.commit_proof(used, now_ns, events);
        let u = self.user_mut(user)?;
        let name = match factor {
            FactorRef::Totp => {
                u.totp = None;
                u.approvals.totp = None;
                "totp"
            }
            FactorRef::Passkey(id) => {
                u.passkeys.retain(|p| &p.credential_id != id);
                u.approvals.passkeys.retain(|(c, _)| c != id);
                "passkey"
            }
        };
        if u.approvals.removals.len() >= REMOVALS_KEPT_MAX {
            u.approvals.removals.remove(0);
        }
        u.approvals.removals.push(proof.clone());
        events.push(IdentityEvent::FactorRemoved {
            user,
            factor: name.to_owned(),
        });
        self.lock(user, now_ns, events);
        Ok(IdentityReply::Done(user))
    }

    fn new_recovery_codes(
        &mut self,
        now_ns: u64,
        user: UserId,
        hashes: &[[u8; 32]],
        proof: &StepUp,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        self.active(user)?;
        if hashes.is_empty() || !Self::recovery_ok(hashes) {
            return Err(Reject::LimitExceeded);
        }
        let used = self.check_factor_proof(&Action::NewRecoveryCodes { user }, proof, now_ns)?;
        self.commit_proof(used, now_ns, events);
        let u = self.user_mut(user)?;
        u.recovery = recovery_codes(hashes);
        events.push(IdentityEvent::RecoveryCodesIssued { user });
        Ok(IdentityReply::Done(user))
    }

    // Credentials: password, email, anti-phishing code, password reset.

    fn credential_command(
        &mut self,
        now_ns: u64,
        cmd: &IdentityCommand,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        use IdentityCommand as C;
        match cmd {
            C::ChangePassword {
                user,
                password_hash,
                proof,
                keep_session,
            } => self.change_password(now_ns, *user, password_hash, proof, *keep_session, events),
            C::ChangeEmail { user, email, proof } => self.change_email(now_ns, *user, email, proof, events),
            C::SetAntiPhishing { user, code, proof } => {
                self.set_anti_phishing(now_ns, *user, code, proof, events)
            }
            C::IssueResetToken {
                user,
                token_hash,
                expires_ns,
            } => self.issue_reset_token(now_ns, *user, token_hash, *expires_ns, events),
            C::ResetPassword {
                token_hash,
                password_hash,
            } => {
                let t = self
                    .reset_token(token_hash, now_ns)
                    .ok_or(Reject::TokenInvalid)?
                    .clone();
                self.usable(t.user)?;
                if !password_hash_ok(password_hash) {
                    return Err(Reject::PasswordHashInvalid);
                }
                let user = t.user;
                self.reset_tokens.retain(|_, t| t.user != user);
                self.user_mut(user)?.password_hash = password_hash.clone();
                events.push(IdentityEvent::PasswordChanged { user, by_reset: true });
                self.end_sessions(user, None, events);
                self.lock(user, now_ns, events);
                Ok(IdentityReply::Done(user))
            }
            _ => unreachable!("credential_command called with {}", cmd.name()),
        }
    }

    fn change_password(
        &mut self,
        now_ns: u64,
        user: UserId,
        password_hash: &str,
        proof: &Option<StepUp>,
        keep_session: Option<[u8; 32]>,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        self.active(user)?;
        if !password_hash_ok(password_hash) {
            return Err(Reject::PasswordHashInvalid);
        }
        let used = self.optional_proof(&Action::ChangePassword { user }, proof, now_ns)?;
        if let Some(p) = used {
            self.commit_proof(p, now_ns, events);
        }
        self.user_mut(user)?.password_hash = password_hash.to_owned();
        events.push(IdentityEvent::PasswordChanged {
            user,
            by_reset: false,
        });
        self.end_sessions(user, keep_session, events);
        self.lock(user, now_ns, events);
        Ok(IdentityReply::Done(user))
    }

    fn change_email(
        &mut self,
        now_ns: u64,
        user: UserId,
        email: &str,
        proof: &StepUp,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        self.active(user)?;
        let email = normalise_email(email).ok_or(Reject::EmailInvalid)?;
        if self.by_email.get(&email).is_some_and(|u| *u != user) {
            return Err(Reject::EmailTaken);
        }
        let action = Action::ChangeEmail {
            user,
            email: email.clone(),
        };
        let used = self.check_proof(&action, proof, now_ns)?;
        self.commit_proof(used, now_ns, events);
        let u = self.user_mut(user)?;
        let old = std::mem::replace(&mut u.email, email.clone());
        self.by_email.remove(&old);
        self.by_email.insert(email, user);
        events.push(IdentityEvent::EmailChanged { user, old });
        self.lock(user, now_ns, events);
        Ok(IdentityReply::Done(user))
    }

    fn set_anti_phishing(
        &mut self,
        now_ns: u64,
        user: UserId,
        code: &str,
        proof: &Option<StepUp>,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        self.active(user)?;
        if !anti_phishing_ok(code) {
            return Err(Reject::AntiPhishingInvalid);
        }
        let action = Action::SetAntiPhishing {
            user,
            code: code.to_owned(),
        };
        let used = self.optional_proof(&action, proof, now_ns)?;
        if let Some(p) = used {
            self.commit_proof(p, now_ns, events);
        }
        let u = self.user_mut(user)?;
        let first = u.anti_phishing.is_none();
        u.anti_phishing = Some(code.to_owned());
        u.anti_phishing_set_ns = now_ns;
        events.push(IdentityEvent::AntiPhishingSet { user });
        // Setting the first code protects; changing one is what a phisher would do.
        if !first {
            self.lock(user, now_ns, events);
        }
        Ok(IdentityReply::Done(user))
    }

    fn issue_reset_token(
        &mut self,
        now_ns: u64,
        user: UserId,
        token_hash: &[u8; 32],
        expires_ns: u64,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        self.usable(user)?;
        if expires_ns <= now_ns || expires_ns - now_ns > RESET_TOKEN_TTL_MAX_NS {
            return Err(Reject::SessionExpiryInvalid);
        }
        self.reset_tokens.retain(|_, t| t.expires_ns > now_ns);
        let mut mine: Vec<([u8; 32], u64)> = self
            .reset_tokens
            .iter()
            .filter(|(_, t)| t.user == user)
            .map(|(h, t)| (*h, t.expires_ns))
            .collect();
        mine.sort_by_key(|(_, e)| *e);
        while mine.len() >= RESET_TOKENS_PER_USER_MAX {
            let (h, _) = mine.remove(0);
            self.reset_tokens.remove(&h);
        }
        self.reset_tokens.insert(
            *token_hash,
            ResetToken {
                hash: *token_hash,
                user,
                expires_ns,
            },
        );
        events.push(IdentityEvent::ResetRequested { user });
        Ok(IdentityReply::Done(user))
    }

    // Account status and platform controls: freezes, operators' status and role changes,
    // platform-wide revocation, and the record of authentication failures.

    fn status_command(
        &mut self,
        now_ns: u64,
        cmd: &IdentityCommand,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        use IdentityCommand as C;
        match cmd {
            C::Freeze { user, reason } => {
                if !text_ok(reason, REASON_LEN_MAX) {
                    return Err(Reject::LabelInvalid);
                }
                let u = self.usable(*user)?;
                if u.status == UserStatus::Active {
                    let u = self.user_mut(*user)?;
                    u.status = UserStatus::Frozen;
                    u.status_reason = Some(reason.clone());
                    events.push(IdentityEvent::StatusChanged {
                        user: *user,
                        status: UserStatus::Frozen,
                        reason: reason.clone(),
                    });
                }
                self.end_sessions(*user, None, events);
                Ok(IdentityReply::Done(*user))
            }
            C::SetStatus {
                user,
                status,
                requested_by,
                reason,
            } => self.set_status(*user, *status, requested_by, reason, events),
            C::SetRoles {
                user,
                roles,
                requested_by,
                reason,
            } => self.bootstrap_roles(*user, roles, requested_by, reason, events),
            C::RevokeEverything { requested_by, reason } => {
                self.revoke_everything(now_ns, requested_by, reason, events)
            }
            C::AuthFailed { user, ip, reason } => {
                if !text_ok(ip, 64) || !text_ok(reason, REASON_LEN_MAX) {
                    return Err(Reject::LabelInvalid);
                }
                if let Some(u) = user {
                    self.user(*u).ok_or(Reject::UserNotFound)?;
                }
                events.push(IdentityEvent::AuthFailed {
                    user: *user,
                    ip: ip.clone(),
                    reason: reason.clone(),
                });
                Ok(IdentityReply::Done(user.unwrap_or(UserId(0))))
            }
            _ => unreachable!("status_command called with {}", cmd.name()),
        }
    }

    fn set_status(
        &mut self,
        user: UserId,
        status: UserStatus,
        requested_by: &str,
        reason: &str,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        operator_reason(requested_by, reason)?;
        let u = self.user_mut(user)?;
        u.status = status;
        u.status_reason = Some(format!("{requested_by}: {reason}"));
        events.push(IdentityEvent::StatusChanged {
            user,
            status,
            reason: reason.to_owned(),
        });
        if status != UserStatus::Active {
            self.end_sessions(user, None, events);
        }
        Ok(IdentityReply::Done(user))
    }

    /// Back to active, carried out by two admins (an approved proposal named in `by`).
    pub(crate) fn unfreeze(
        &mut self,
        user: UserId,
        by: &str,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        self.set_status(user, UserStatus::Active, "two admins", by, events)
    }

    /// Roles set through the operator's token, which only bootstraps: once two security admins
    /// exist, roles change only with two admins (a proposal).
    fn bootstrap_roles(
        &mut self,
        user: UserId,
        roles: &[AdminRole],
        requested_by: &str,
        reason: &str,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        operator_reason(requested_by, reason)?;
        let admins = self
            .users
            .iter()
            .filter(|u| u.roles.contains(&AdminRole::SecurityAdmin))
            .count();
        if admins >= 2 {
            return Err(Reject::RolesBootstrapClosed);
        }
        self.set_roles(user, roles, requested_by, events)?;
        Ok(IdentityReply::Done(user))
    }

    fn revoke_everything(
        &mut self,
        now_ns: u64,
        requested_by: &str,
        reason: &str,
        events: &mut Vec<IdentityEvent>,
    ) -> Result<IdentityReply, Reject> {
        operator_reason(requested_by, reason)?;
        let sessions = self.sessions.len();
        self.sessions.clear();
        self.reset_tokens.clear();
        let lock_until = now_ns.saturating_add(self.policy.security_lock_ns);
        let mut users = 0;
        for u in &mut self.users {
            if u.has_factor() {
                users += 1;
                u.totp = None;
                u.approvals.totp = None;
                // An admin's passkeys stay: their private keys never were on the host, and
                // re-enrolling through the recovery flow would let whoever holds the host (who
                // reads the recovery codes' hashes) enrol a key of their own for the admin.
                if u.roles.is_empty() || u.passkeys.is_empty() {
                    u.passkeys.clear();
                    u.approvals.passkeys.clear();
                    u.reenrol_required = true;
                }
                u.security_locked_until_ns = u.security_locked_until_ns.max(lock_until);
            }
        }
        events.push(IdentityEvent::EverythingRevoked {
            requested_by: requested_by.to_owned(),
            reason: reason.to_owned(),
            sessions,
            users,
        });
        Ok(IdentityReply::Revoked { sessions, users })
    }

    /// Inserts a checked session, first ending expired ones and, over the per-user cap, the
    /// user's oldest.
    fn insert_session(&mut self, s: Session, now_ns: u64, new_device: bool, events: &mut Vec<IdentityEvent>) {
        let user = s.user;
        self.sessions.retain(|_, x| x.expires_ns > now_ns);
        let mut mine: Vec<([u8; 32], u64)> = self
            .sessions
            .iter()
            .filter(|(_, x)| x.user == user)
            .map(|(h, x)| (*h, x.created_ns))
            .collect();
        mine.sort_by_key(|(h, c)| (*c, *h));
        let mut ended = 0;
        while mine.len() >= SESSIONS_PER_USER_MAX {
            let (h, _) = mine.remove(0);
            self.sessions.remove(&h);
            ended += 1;
        }
        if ended > 0 {
            events.push(IdentityEvent::SessionsEnded { user, count: ended });
        }
        events.push(IdentityEvent::SessionOpened {
            user,
            level: s.level,
            device: s.device.clone(),
            ip: s.ip.clone(),
            new_device,
        });
        self.sessions.insert(s.token_hash, s);
    }

    fn enrol_checks(
        &self,
        action: &Action,
        proof: &Option<StepUp>,
        recovery: &[[u8; 32]],
        now_ns: u64,
    ) -> Result<Option<ProofUse>, Reject> {
        let u = self.active(action.user())?;
        if !Self::recovery_ok(recovery) || (!recovery.is_empty() && u.recovery_left() > 0) {
            return Err(Reject::LimitExceeded);
        }
        match proof {
            Some(p) => self.check_factor_proof(action, p, now_ns).map(Some),
            None => self.optional_proof(action, proof, now_ns),
        }
    }

    fn after_enrol(
        &mut self,
        user: UserId,
        factor: &str,
        recovery: &[[u8; 32]],
        funded: bool,
        now_ns: u64,
        events: &mut Vec<IdentityEvent>,
    ) {
        let Ok(u) = self.user_mut(user) else { return };
        let first = !u.reenrol_required
            && u.recovery.is_empty()
            && (u.totp.is_some() as usize + u.passkeys.len()) == 1;
        u.reenrol_required = false;
        if !recovery.is_empty() {
            u.recovery = recovery_codes(recovery);
            events.push(IdentityEvent::RecoveryCodesIssued { user });
        }
        events.push(IdentityEvent::FactorEnrolled {
            user,
            factor: factor.to_owned(),
        });
        // The very first factor of a new, empty account protects it; any later one could be an
        // attacker's, so withdrawals wait out the lock while the user is told. So does a first
        // factor on an account that already holds funds: a password stolen before the user
        // set up a second factor would otherwise be enough to enrol one and withdraw at once.
        if !first || funded {
            self.lock(user, now_ns, events);
        }
    }

    pub fn state(&self) -> IdentityState {
        IdentityState {
            policy: self.policy,
            users: self.users.clone(),
            sessions: self.sessions.values().cloned().collect(),
            reset_tokens: self.reset_tokens.values().cloned().collect(),
            used_challenges: self.used_challenges.iter().map(|(k, v)| (*k, *v)).collect(),
            relying_party: self.relying_party.clone(),
        }
    }

    pub fn from_state(s: IdentityState) -> Identity {
        Identity {
            policy: s.policy,
            by_email: s.users.iter().map(|u| (u.email.clone(), u.id)).collect(),
            users: s.users,
            sessions: s.sessions.into_iter().map(|x| (x.token_hash, x)).collect(),
            reset_tokens: s.reset_tokens.into_iter().map(|t| (t.hash, t)).collect(),
            used_challenges: s.used_challenges.into_iter().collect(),
            relying_party: s.relying_party,
        }
    }

    pub fn check(&self) -> Result<(), InvariantViolation> {
        for (i, u) in self.users.iter().enumerate() {
            if u.id.0 != i as u64 + 1 || self.by_email.get(&u.email) != Some(&u.id) {
                return Err(InvariantViolation(format!(
                    "identity: user index broken at {}",
                    u.id.0
                )));
            }
        }
        if self.by_email.len() != self.users.len() {
            return Err(InvariantViolation(
                "identity: email index has extra entries".into(),
            ));
        }
        for s in self.sessions.values() {
            if self.user(s.user).is_none() {
                return Err(InvariantViolation("identity: session of an unknown user".into()));
            }
        }
        Ok(())
    }
}
