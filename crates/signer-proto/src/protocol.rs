//! The signer protocol (docs/design/custody.md, "Signer protocol"): one JSON request, one JSON
//! response, each in a frame of a 4-byte big-endian length and at most [`FRAME_BYTES_MAX`]
//! bytes of JSON.
//!
//! The messages are this crate's own types, not kinko-core's: the protocol changes only when
//! this file does. Identifiers and amounts are plain numbers here (the engine's user, asset,
//! address and withdrawal ids; amounts in the asset's minor unit); the sender (kinko's custody
//! service) converts its records into them, the signer converts them into what it checks.
//!
//! Encoding choices:
//! - Requests and responses are objects tagged by `"type"` in snake_case.
//! - Byte strings the signer defines (`credential_id`, `public_key`, a TOTP `secret`, the clear
//!   `nonce` and `mac`) are lower-case hex strings.
//! - `withdrawal` is a [`Withdrawal`]: what the user approved and the proof. Its step-up proof
//!   keeps the form kinko-core gave it when the proof was stored: byte arrays as JSON arrays of
//!   numbers, the factor as an externally tagged object (`{"Totp":{"step":…,"code":"…"}}`,
//!   `{"Passkey":{…}}`, `{"Recovery":{…}}`). Members of `withdrawal` beyond [`Withdrawal`]'s
//!   are ignored (earlier senders sent kinko-core's whole withdrawal record).
//! - `psbt` is a base64 PSBT (BIP 174).
//! - `approval` (registrations and `forget_factors`) is the user's step-up proof, in the same
//!   form as a withdrawal's, over exactly that registration's action (kinko-core's
//!   `Action::AddWithdrawalAddress`, `Action::EnrolPasskeyKey`, `Action::EnrolTotp`,
//!   `Action::RemoveTotp` / `Action::RemovePasskey`). The signer verifies it with a factor it
//!   already holds; a user's first passkey (and a never-known user's first TOTP) needs none and
//!   matures slowly. `label` is the address's label (part of that action's digest).
//! - `waited_s` is how long the withdrawal legitimately waited (a risk delay) after its proof;
//!   the signer lets it extend the proof's age only up to its own `delay_max_s`.
//!
//! Examples (one line each on the wire; `…` abbreviates):
//! ```text
//! {"type":"hello"}
//! {"type":"register_address","user":3,"address_id":9,"asset":1,"destination":"rltc1q…","label":"mine",
//!  "approval":{"action":[4,…],"issued_ns":5,"nonce":[6,…],"factor":{"Passkey":{…}}}}
//! {"type":"register_passkey","user":3,"credential_id":"abcd","public_key":"0104…"}
//! {"type":"register_totp","user":3,"secret":"3132…","approval":{…}}
//! {"type":"forget_factors","user":3,"approval":{…}}
//! {"type":"sign_withdrawal","withdrawal":{"id":7,"user":3,"asset":1,"address_id":9,"address":"rltc1q…",
//!  "amount":150000,"client_id":null,"proof":{"action":[1,…],"issued_ns":5,"nonce":[2,…],
//!  "factor":{"Totp":{"step":100,"code":"123456"}}},"reviews":[{"reviewer":5,"proof":{…}}],
//!  "approvals_needed":2,"waited_s":3600},"psbt":"cHNidP8B…","journal":{"seq":811,"hash":"4d…(64 hex)"}}
//! {"type":"sign_sweep","psbt":"cHNidP8B…","journal":{"seq":812,"hash":"5e…(64 hex)"}}
//! {"type":"sign_eth_withdrawal","withdrawal":{…as for sign_withdrawal…},"raw_unsigned":"02f8…","journal":{…}}
//! {"type":"witness_head","log":"audit"}
//! {"type":"witness","log":"audit","size":40,"root":"9a…(64 hex)","proof":["c1…(64 hex)",…]}
//! {"type":"witness","log":"journal","size":812,"root":"5e…(64 hex)","proof":[]}
//! {"type":"sign_liabilities_root","asset":"LTC","decimals":8,"sequence":812,"time":"2026-12-07T15:00:00.000000Z",
//!  "leaves":120,"root_hash":"3c…(64 hex)","total":"123456789","journal":{"seq":812,"hash":"5e…(64 hex)"}}
//! {"type":"status"}
//! {"type":"clear_challenge"}
//! {"type":"clear","nonce":"11…(64 hex)","reason":"checked","mac":"22…(64 hex)",
//!  "assertions":[{"admin":1,"proof":{"action":[…],"issued_ns":…,"nonce":[…],"factor":{"Passkey":{…}}}}]}
//! {"type":"halt","reason":"withdrawals of LTC halted: unapproved outflow","source":"engine"}
//! {"type":"admins"}
//! {"type":"admin_change","change":{"op":"add","admin":{"id":9,"name":"Kei","email":"kei@…",
//!  "credential_id":"ab…","public_key":"01…"}},"assertions":[…],"mac":"33…(64 hex)"}
//! {"type":"admin_change","change":{"op":"thresholds","thresholds":{"dual_approval_sats":10000000,
//!  "approvals":2,"fan_in_users_max":3,"fan_in_window_s":86400}},"assertions":[…],"mac":"…"}
//!
//! {"type":"hello","network":"litecoin-regtest","asset":"LTC","asset_id":1,"hot":"[d34db33f/84h/1h/0h]tpub…",
//!  "cold":["[0a0b0c0d/48h/1h/0h/2h]tpub…"],"threshold":2,"halted":null}
//! {"type":"ok"}
//! {"type":"signed","psbt":"cHNidP8B…"}
//! {"type":"eth_signed","raw":"02f8…","hash":"ab…(64 hex)"}
//! {"type":"refused","code":"PSBT_MISMATCH","reason":"no output pays the withdrawal's destination","halted":true}
//! {"type":"status","halted":null,"signed_in_window":500000,"window_max":1500000,"window_s":86400,
//!  "per_tx_max":1000000,"fee_max":100000,"log_seq":12}
//! {"type":"challenge","nonce":"11…(64 hex)"}
//! {"type":"witness_head","log":"audit","size":32,"root":"77…(64 hex)"}
//! {"type":"cosigned","log":"audit","size":40,"root":"9a…(64 hex)","time_s":1796000000,
//!  "key_id":"0f1e…(16 hex)","signature":"ab…(128 hex)"}
//! {"type":"liabilities_root_signed","key":"witness","public_key":"0f…(64 hex)","signature":"ab…(128 hex)"}
//! {"type":"admins","admins":[{"id":1,"name":"Aya","email":"aya@…","credential_id":"…","public_key":"…"}],
//!  "quorum":2,"thresholds":{…},"head":"44…(64 hex)","halt_seq":0}
//! {"type":"error","code":"BAD_REQUEST","message":"…"}
//! ```
//! `error` codes: `BAD_REQUEST`, `FRAME_TOO_LARGE` (then the connection closes), `PEER_REFUSED`,
//! `BUSY`, `SIGNER_FAILED`, `RANDOM_UNAVAILABLE`. Refusal codes are the signer's
//! (`kinko_signer::policy::Code`), e.g. `SIGNER_HALTED`, `PROOF_INVALID`, `PSBT_MISMATCH`.
//!
//! `journal` (optional on `sign_withdrawal` and `sign_sweep`) is the engine journal's head when
//! the request was made: the signer witnesses it as a `witness` request for the journal would,
//! and refuses to sign (`HISTORY_FORKED`) if it contradicts a head it saw before.
//!
//! A request object must carry `"type"` as its first member (as serde writes it): the rest of
//! the object is then read directly, without buffering, which keeps `u128` fields of the
//! withdrawal (`amount`, `client_id`) exact. Unknown members are refused.

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::io::{self, Read, Write};
use zeroize::Zeroizing;

/// Largest frame body, in bytes.
pub const FRAME_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Longest reason text accepted in `clear`.
pub const REASON_LEN_MAX: usize = 256;

/// A request to the signer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Who the signer is: answered with [`Response::Hello`].
    Hello,
    /// A withdrawal address the user whitelisted; the signer pays only addresses it learned
    /// and let cool.
    RegisterAddress {
        user: u64,
        /// The engine's id of the whitelisted address record.
        address_id: u64,
        asset: u32,
        destination: String,
        /// The address's label (part of the approved action).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        label: String,
        /// The user's proof over [`Request::RegisterAddress`]'s action.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval: Option<StepUp>,
    },
    /// A passkey of the user, for the signer's own check of withdrawal proofs.
    RegisterPasskey {
        user: u64,
        #[serde(with = "hex_vec")]
        credential_id: Vec<u8>,
        /// `kinko_factors::webauthn::CredentialKey::to_bytes()`.
        #[serde(with = "hex_vec")]
        public_key: Vec<u8>,
        /// The user's proof (needed when the signer holds a passkey of the user).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval: Option<StepUp>,
    },
    /// The user's TOTP secret, likewise.
    RegisterTotp {
        user: u64,
        /// The raw TOTP secret (not base32).
        secret: SecretBytes,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval: Option<StepUp>,
    },
    /// Forget the one factor `approval` removes (`Action::RemoveTotp` / `RemovePasskey`).
    ForgetFactors {
        user: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval: Option<StepUp>,
    },
    /// Sign `psbt`, which pays `withdrawal`, after every check.
    SignWithdrawal {
        withdrawal: Box<Withdrawal>,
        psbt: String,
        /// The journal's head, witnessed before anything is signed.
        #[serde(skip_serializing_if = "Option::is_none")]
        journal: Option<JournalHead>,
    },
    /// Sign `psbt`, which moves hot coins to the cold wallet (change back to hot).
    SignSweep {
        psbt: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        journal: Option<JournalHead>,
    },
    /// Limits and counters: answered with [`Response::Status`].
    Status,
    /// A nonce for [`Request::Clear`].
    ClearChallenge,
    /// Clear a halt: `mac` is the keystore's clear key's MAC over `nonce` and `reason`; once
    /// admins are enrolled at the signer, `assertions` from a quorum of them over the clear
    /// digest (`kinko_signer::admins::clear_digest`) are needed too.
    Clear {
        #[serde(with = "hex_arr")]
        nonce: [u8; 32],
        reason: String,
        #[serde(with = "hex_arr")]
        mac: [u8; 32],
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        assertions: Vec<AdminAssertion>,
    },
    /// What the signer last cosigned of `log` (`journal` or `audit`): answered with
    /// [`Response::WitnessHead`].
    WitnessHead { log: String },
    /// Cosign `log` at `size` with head `root` (journal: sequence and record hash; audit: tree
    /// size and RFC 6962 root). For the audit log `proof` is the consistency proof from the
    /// size the signer last cosigned (see `witness_head`); for the journal it is empty.
    /// Answered with [`Response::Cosigned`], or refused `HISTORY_FORKED` (and the signer halts)
    /// when it contradicts what the signer saw before.
    Witness {
        log: String,
        size: u64,
        #[serde(with = "hex_arr")]
        root: [u8; 32],
        #[serde(with = "hex_list")]
        proof: Vec<[u8; 32]>,
    },
    /// Halt signing now (an engine halt forwarded by kinko): applied at once and logged.
    /// Anyone on the socket may halt; only an admin quorum resumes.
    Halt { reason: String, source: String },
    /// The admins enrolled at the signer, its quorum, its review thresholds and the heads
    /// ceremonies bind: answered with [`Response::Admins`].
    Admins,
    /// An admin ceremony: `change`, approved by `assertions` of a quorum of the enrolled admins
    /// over the ceremony digest, and `mac`, the keystore's MAC over that digest (the operator
    /// at the signer's machine).
    AdminChange {
        change: AdminChange,
        #[serde(default)]
        assertions: Vec<AdminAssertion>,
        #[serde(with = "hex_arr")]
        mac: [u8; 32],
    },
    /// Proof of control of the hot key for the proof of reserves: the signer builds the message
    /// itself (`kinko proof of reserves v1`, asset, sequence, nonce: nothing else can be put in
    /// it, so it can never be a transaction) and signs its digest with the hot account key;
    /// answered with [`Response::ControlProof`].
    ProveControl {
        asset: String,
        sequence: u64,
        #[serde(with = "hex_arr")]
        nonce: [u8; 32],
    },
    /// Sign a proof-of-liabilities root (docs/design/proofs.md) with the witness key: the
    /// members are the root's statement fields (`kinko_verify::Root`; amounts and hashes as
    /// the root writes them), and the signer signs exactly `Root::statement()` with `key
    /// witness`. Refused `ROOT_NOT_WITNESSED` when `sequence` is beyond the journal head the
    /// signer last cosigned, `SIGNER_HALTED` while signing is halted; `journal`, when given, is the head at exactly `sequence`, witnessed
    /// first as a `witness` request for the journal would be (a head older than the last
    /// cosigned one is not witnessed again: the root is then below the head). Answered with
    /// [`Response::LiabilitiesRootSigned`].
    SignLiabilitiesRoot {
        asset: String,
        decimals: u8,
        sequence: u64,
        time: String,
        leaves: u64,
        root_hash: String,
        total: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        journal: Option<JournalHead>,
    },
    /// Sign `raw_unsigned` (an unsigned EIP-1559 transaction, hex), which pays `withdrawal`
    /// from the hot key: every check a `sign_withdrawal` gets (proof, address, review,
    /// limits), then the signer's own reading of the transaction
    /// (docs/design/ethereum.md). Answered with [`Response::EthSigned`].
    SignEthWithdrawal {
        withdrawal: Box<Withdrawal>,
        #[serde(with = "hex_vec")]
        raw_unsigned: Vec<u8>,
        #[serde(skip_serializing_if = "Option::is_none")]
        journal: Option<JournalHead>,
    },
    /// Sign `raw_unsigned` with the key of deposit address `index` (`m/44'/60'/0'/1/index`):
    /// a sweep paying only the signer's own hot address, all of a deposit's ETH or a token's
    /// `transfer(hot, amount)`, checked as any transaction (chain id, allowlist, calldata,
    /// fee caps, that key's nonce book). Answered with [`Response::EthSigned`].
    SignEthSweep {
        index: u32,
        #[serde(with = "hex_vec")]
        raw_unsigned: Vec<u8>,
        #[serde(skip_serializing_if = "Option::is_none")]
        journal: Option<JournalHead>,
    },
    /// Sign `raw_unsigned` with the hot key: gas for a token sweep, plain ETH paying only the
    /// signer's own deposit address `index`, at most the signer's `fee_max_wei`. Answered with
    /// [`Response::EthSigned`].
    SignEthGasTopup {
        index: u32,
        #[serde(with = "hex_vec")]
        raw_unsigned: Vec<u8>,
        #[serde(skip_serializing_if = "Option::is_none")]
        journal: Option<JournalHead>,
    },
    /// Sign `raw_unsigned` with the hot key: a hot → cold transfer paying only the cold
    /// contract of the signer's own configuration (`[eth] cold_contract`, never an address in
    /// the request), ETH with empty data or a token's `transfer(cold, x)`, checked as any
    /// transaction. Answered with [`Response::EthSigned`].
    SignEthColdSweep {
        #[serde(with = "hex_vec")]
        raw_unsigned: Vec<u8>,
        #[serde(skip_serializing_if = "Option::is_none")]
        journal: Option<JournalHead>,
    },
    /// Sign `raw_unsigned` with the hot key: an `execute` call on the signer's own cold contract
    /// whose inner call pays only the signer's hot address (ETH, or a token's `transfer(hot,
    /// x)`); the keyholders' signatures inside are the contract's to check. Answered with
    /// [`Response::EthSigned`].
    SignEthRefill {
        #[serde(with = "hex_vec")]
        raw_unsigned: Vec<u8>,
        #[serde(skip_serializing_if = "Option::is_none")]
        journal: Option<JournalHead>,
    },
}

/// An admin enrolled at the signer: kinko's user id, a display name, an email for the signer's
/// alerts, and the passkey (credential id, `CredentialKey::to_bytes()`) their assertions use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub id: u64,
    pub name: String,
    pub email: String,
    #[serde(with = "hex_vec")]
    pub credential_id: Vec<u8>,
    #[serde(with = "hex_vec")]
    pub public_key: Vec<u8>,
}

/// The signer's own review thresholds (changed only by an admin ceremony).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewThresholds {
    /// Withdrawals of at least this many sats need `approvals` reviewers.
    pub dual_approval_sats: u64,
    /// Reviewers' assertions a withdrawal needs when review is required (at least 1).
    pub approvals: u32,
    /// More than this many distinct users paying one destination within `fan_in_window_s`
    /// (counted from the signer's own log) requires review.
    pub fan_in_users_max: u32,
    pub fan_in_window_s: u64,
}

/// What an admin ceremony changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminChange {
    Add { admin: Admin },
    Remove { id: u64 },
    Quorum { quorum: u32 },
    Thresholds { thresholds: ReviewThresholds },
}

/// An admin's passkey assertion over a ceremony, clear or review digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminAssertion {
    pub admin: u64,
    pub proof: StepUp,
}

/// A reviewer's approval of a held withdrawal, kept by the engine with the withdrawal: a
/// passkey assertion over `Action::ReviewWithdrawal`'s digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub reviewer: u64,
    pub proof: StepUp,
}

/// The engine journal's head: the last record's sequence number and chain hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalHead {
    pub seq: u64,
    #[serde(with = "hex_arr")]
    pub hash: [u8; 32],
    /// In a replicated cluster, the epoch of the primary asking (docs/design/replication.md):
    /// the signer refuses an epoch older than the newest it has seen (`STALE_EPOCH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// A withdrawal the exchange asks the signer to sign: what the user's second-factor proof
/// approved, and the proof. Nothing of the engine's bookkeeping (status, risk, approvals).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    /// The engine's withdrawal id.
    pub id: u64,
    pub user: u64,
    pub asset: u32,
    /// The engine's id of the whitelisted address record the user chose.
    pub address_id: u64,
    /// The destination that address record names.
    pub address: String,
    /// In the asset's minor unit (satoshis).
    pub amount: u128,
    /// The client's idempotency id of the request (part of what the proof approved).
    pub client_id: Option<u128>,
    /// The second-factor proof that authorised the withdrawal.
    pub proof: Option<StepUp>,
    /// The reviewers' approvals the engine kept (a withdrawal it held for review).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reviews: Vec<Review>,
    /// How many approvals the engine's policy asked for (0: not held for review). The signer
    /// requires at least this many, and more if its own thresholds say so.
    #[serde(default)]
    pub approvals_needed: u32,
    /// Seconds it legitimately waited after the request (a risk delay).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waited_s: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A second-factor proof bound to one action: the user approved the action whose digest is
/// `action` (BLAKE3, as kinko-core computes it), at `issued_ns`, under the challenge `nonce`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepUp {
    pub action: [u8; 32],
    pub issued_ns: u64,
    pub nonce: [u8; 16],
    pub factor: ProofFactor,
}

/// How the user proved it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProofFactor {
    /// A TOTP code of time step `step`.
    Totp { step: u64, code: String },
    /// A WebAuthn assertion over the challenge (`"KSU1"`, `issued_ns` big-endian, `nonce`,
    /// `action`).
    Passkey {
        credential_id: Vec<u8>,
        authenticator_data: Vec<u8>,
        client_data_json: Vec<u8>,
        signature: Vec<u8>,
    },
    /// A recovery code (the signer refuses it for withdrawals).
    Recovery { code_hash: [u8; 32] },
}

impl Request {
    /// The request's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Hello => "hello",
            Request::RegisterAddress { .. } => "register_address",
            Request::RegisterPasskey { .. } => "register_passkey",
            Request::RegisterTotp { .. } => "register_totp",
            Request::ForgetFactors { .. } => "forget_factors",
            Request::SignWithdrawal { .. } => "sign_withdrawal",
            Request::SignSweep { .. } => "sign_sweep",
            Request::Status => "status",
            Request::ClearChallenge => "clear_challenge",
            Request::Clear { .. } => "clear",
            Request::WitnessHead { .. } => "witness_head",
            Request::Witness { .. } => "witness",
            Request::Halt { .. } => "halt",
            Request::Admins => "admins",
            Request::AdminChange { .. } => "admin_change",
            Request::ProveControl { .. } => "prove_control",
            Request::SignLiabilitiesRoot { .. } => "sign_liabilities_root",
            Request::SignEthWithdrawal { .. } => "sign_eth_withdrawal",
            Request::SignEthSweep { .. } => "sign_eth_sweep",
            Request::SignEthGasTopup { .. } => "sign_eth_gas_topup",
            Request::SignEthColdSweep { .. } => "sign_eth_cold_sweep",
            Request::SignEthRefill { .. } => "sign_eth_refill",
        }
    }
}

/// The signer's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    Hello {
        /// e.g. `litecoin-regtest`
        network: String,
        /// e.g. `LTC`
        asset: String,
        asset_id: u32,
        /// The hot account's watch key, `[fp/84h/1h/0h]tpub…`.
        hot: String,
        /// The cold multisig's keys, `[fp/48h/1h/0h/2h]tpub…` each.
        cold: Vec<String>,
        threshold: u32,
        /// Why signing is halted, if it is.
        halted: Option<String>,
    },
    /// Done (a registration, a forget, a clear).
    Ok,
    Signed {
        /// The PSBT with this signer's signatures (base64, not finalized).
        psbt: String,
    },
    Refused {
        /// A stable code (the signer's refusal codes, see the module documentation).
        code: String,
        reason: String,
        /// Whether signing is halted after this refusal.
        halted: bool,
    },
    Status {
        halted: Option<String>,
        /// Satoshis of withdrawals signed in the rolling window.
        signed_in_window: u64,
        window_max: u64,
        window_s: u64,
        per_tx_max: u64,
        fee_max: u64,
        /// Log lines so far.
        log_seq: u64,
    },
    Challenge {
        #[serde(with = "hex_arr")]
        nonce: [u8; 32],
    },
    /// What the signer last cosigned of `log` (size 0 and zero root: nothing yet).
    WitnessHead {
        log: String,
        size: u64,
        #[serde(with = "hex_arr")]
        root: [u8; 32],
    },
    /// The signer's witness cosignature (`kinko_audit::witness::Cosignature`, same members).
    Cosigned {
        log: String,
        size: u64,
        root: String,
        time_s: u64,
        key_id: String,
        signature: String,
    },
    /// The request could not be read (malformed JSON, an unknown type, an oversized frame).
    Error { code: String, message: String },
    Admins {
        admins: Vec<Admin>,
        quorum: u32,
        thresholds: ReviewThresholds,
        /// The hash of the last log line that changed the admins or thresholds (zeros: none);
        /// ceremony digests bind it, so an approval applies once.
        #[serde(with = "hex_arr")]
        head: [u8; 32],
        /// The log line where the current halt began (0: not halted); clear digests bind it.
        halt_seq: u64,
    },
    /// The hot account key's signature (DER, hex) over the digest of `message`, and that key
    /// (`[fp/84h/…]xpub…`).
    ControlProof {
        message: String,
        key: String,
        signature: String,
    },
    /// The witness key's Ed25519 signature (128 hex) over the root's statement with `key`
    /// (`witness`), and that key (64 hex): what goes into the root's `key`, `public_key` and
    /// `signature`.
    LiabilitiesRootSigned {
        key: String,
        public_key: String,
        signature: String,
    },
    /// A signed Ethereum transaction (hex, ready to broadcast) and its hash.
    EthSigned {
        #[serde(with = "hex_vec")]
        raw: Vec<u8>,
        #[serde(with = "hex_arr")]
        hash: [u8; 32],
    },
}

/// Secret bytes: hex on the wire, wiped on drop, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(pub Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: &[u8]) -> SecretBytes {
        SecretBytes(Zeroizing::new(bytes.to_vec()))
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(hex::encode(&*self.0));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SecretBytes, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        let bytes = hex::decode(&*text).map_err(|_| de::Error::custom("secret is not hex"))?;
        Ok(SecretBytes(Zeroizing::new(bytes)))
    }
}

/// Serde `with` module: a byte vector as a lower-case hex string (also the signer's log).
pub mod hex_vec {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(|_| de::Error::custom("expected a hex string"))
    }
}

/// Serde `with` module: a byte array as a lower-case hex string (also the signer's log).
pub mod hex_arr {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(b: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(text, &mut out)
            .map_err(|_| de::Error::custom(format_args!("expected {N} bytes of hex")))?;
        Ok(out)
    }
}

/// Serde `with` module: a list of 32-byte hashes as lower-case hex strings.
pub mod hex_list {
    use serde::{de, Deserialize, Deserializer, Serializer};

    /// Most hashes read (an RFC 6962 consistency proof has at most ~2·64).
    pub const HASHES_MAX: usize = 256;

    pub fn serialize<S: Serializer>(b: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(b.iter().map(hex::encode))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        if texts.len() > HASHES_MAX {
            return Err(de::Error::custom(format_args!("more than {HASHES_MAX} hashes")));
        }
        texts
            .iter()
            .map(|t| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(t, &mut out)
                    .map_err(|_| de::Error::custom("expected 32 bytes of hex"))?;
                Ok(out)
            })
            .collect()
    }
}

// Deserialization: "type" first, then the variant's own fields straight from the input.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterAddressBody {
    user: u64,
    address_id: u64,
    asset: u32,
    destination: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    approval: Option<StepUp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterPasskeyBody {
    user: u64,
    #[serde(with = "hex_vec")]
    credential_id: Vec<u8>,
    #[serde(with = "hex_vec")]
    public_key: Vec<u8>,
    #[serde(default)]
    approval: Option<StepUp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterTotpBody {
    user: u64,
    secret: SecretBytes,
    #[serde(default)]
    approval: Option<StepUp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgetBody {
    user: u64,
    #[serde(default)]
    approval: Option<StepUp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignWithdrawalBody {
    withdrawal: Box<Withdrawal>,
    psbt: String,
    #[serde(default)]
    journal: Option<JournalHead>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignEthWithdrawalBody {
    withdrawal: Box<Withdrawal>,
    #[serde(with = "hex_vec")]
    raw_unsigned: Vec<u8>,
    #[serde(default)]
    journal: Option<JournalHead>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignEthInternalBody {
    index: u32,
    #[serde(with = "hex_vec")]
    raw_unsigned: Vec<u8>,
    #[serde(default)]
    journal: Option<JournalHead>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignEthColdBody {
    #[serde(with = "hex_vec")]
    raw_unsigned: Vec<u8>,
    #[serde(default)]
    journal: Option<JournalHead>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignSweepBody {
    psbt: String,
    #[serde(default)]
    journal: Option<JournalHead>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogBody {
    log: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProveControlBody {
    asset: String,
    sequence: u64,
    #[serde(with = "hex_arr")]
    nonce: [u8; 32],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignLiabilitiesRootBody {
    asset: String,
    decimals: u8,
    sequence: u64,
    time: String,
    leaves: u64,
    root_hash: String,
    total: String,
    #[serde(default)]
    journal: Option<JournalHead>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WitnessBody {
    log: String,
    size: u64,
    #[serde(with = "hex_arr")]
    root: [u8; 32],
    #[serde(with = "hex_list", default)]
    proof: Vec<[u8; 32]>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearBody {
    #[serde(with = "hex_arr")]
    nonce: [u8; 32],
    reason: String,
    #[serde(with = "hex_arr")]
    mac: [u8; 32],
    #[serde(default)]
    assertions: Vec<AdminAssertion>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HaltBody {
    reason: String,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminChangeBody {
    change: AdminChange,
    #[serde(default)]
    assertions: Vec<AdminAssertion>,
    #[serde(with = "hex_arr")]
    mac: [u8; 32],
}

const TYPES: &[&str] = &[
    "hello",
    "register_address",
    "register_passkey",
    "register_totp",
    "forget_factors",
    "sign_withdrawal",
    "sign_sweep",
    "status",
    "clear_challenge",
    "clear",
    "witness_head",
    "witness",
    "halt",
    "admins",
    "admin_change",
    "prove_control",
    "sign_liabilities_root",
    "sign_eth_withdrawal",
    "sign_eth_sweep",
    "sign_eth_gas_topup",
    "sign_eth_cold_sweep",
    "sign_eth_refill",
];

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Request, D::Error> {
        d.deserialize_map(RequestVisitor)
    }
}

struct RequestVisitor;

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = Request;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a request object whose first member is \"type\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Request, A::Error> {
        match map.next_key::<String>()? {
            Some(k) if k == "type" => {}
            _ => {
                return Err(de::Error::custom(
                    "the first member of a request must be \"type\"",
                ))
            }
        }
        let kind: String = map.next_value()?;
        let rest = MapAccessDeserializer::new(map);
        Ok(match kind.as_str() {
            "hello" => {
                Empty::deserialize(rest)?;
                Request::Hello
            }
            "status" => {
                Empty::deserialize(rest)?;
                Request::Status
            }
            "clear_challenge" => {
                Empty::deserialize(rest)?;
                Request::ClearChallenge
            }
            "register_address" => {
                let b = RegisterAddressBody::deserialize(rest)?;
                Request::RegisterAddress {
                    user: b.user,
                    address_id: b.address_id,
                    asset: b.asset,
                    destination: b.destination,
                    label: b.label,
                    approval: b.approval,
                }
            }
            "register_passkey" => {
                let b = RegisterPasskeyBody::deserialize(rest)?;
                Request::RegisterPasskey {
                    user: b.user,
                    credential_id: b.credential_id,
                    public_key: b.public_key,
                    approval: b.approval,
                }
            }
            "register_totp" => {
                let b = RegisterTotpBody::deserialize(rest)?;
                Request::RegisterTotp {
                    user: b.user,
                    secret: b.secret,
                    approval: b.approval,
                }
            }
            "forget_factors" => {
                let b = ForgetBody::deserialize(rest)?;
                Request::ForgetFactors {
                    user: b.user,
                    approval: b.approval,
                }
            }
            "sign_withdrawal" => {
                let b = SignWithdrawalBody::deserialize(rest)?;
                Request::SignWithdrawal {
                    withdrawal: b.withdrawal,
                    psbt: b.psbt,
                    journal: b.journal,
                }
            }
            "sign_sweep" => {
                let b = SignSweepBody::deserialize(rest)?;
                Request::SignSweep {
                    psbt: b.psbt,
                    journal: b.journal,
                }
            }
            "witness_head" => Request::WitnessHead {
                log: LogBody::deserialize(rest)?.log,
            },
            "witness" => {
                let b = WitnessBody::deserialize(rest)?;
                Request::Witness {
                    log: b.log,
                    size: b.size,
                    root: b.root,
                    proof: b.proof,
                }
            }
            "clear" => {
                let b = ClearBody::deserialize(rest)?;
                Request::Clear {
                    nonce: b.nonce,
                    reason: b.reason,
                    mac: b.mac,
                    assertions: b.assertions,
                }
            }
            "halt" => {
                let b = HaltBody::deserialize(rest)?;
                Request::Halt {
                    reason: b.reason,
                    source: b.source,
                }
            }
            "admins" => {
                Empty::deserialize(rest)?;
                Request::Admins
            }
            "admin_change" => {
                let b = AdminChangeBody::deserialize(rest)?;
                Request::AdminChange {
                    change: b.change,
                    assertions: b.assertions,
                    mac: b.mac,
                }
            }
            "prove_control" => {
                let b = ProveControlBody::deserialize(rest)?;
                Request::ProveControl {
                    asset: b.asset,
                    sequence: b.sequence,
                    nonce: b.nonce,
                }
            }
            "sign_liabilities_root" => {
                let b = SignLiabilitiesRootBody::deserialize(rest)?;
                Request::SignLiabilitiesRoot {
                    asset: b.asset,
                    decimals: b.decimals,
                    sequence: b.sequence,
                    time: b.time,
                    leaves: b.leaves,
                    root_hash: b.root_hash,
                    total: b.total,
                    journal: b.journal,
                }
            }
            "sign_eth_withdrawal" => {
                let b = SignEthWithdrawalBody::deserialize(rest)?;
                Request::SignEthWithdrawal {
                    withdrawal: b.withdrawal,
                    raw_unsigned: b.raw_unsigned,
                    journal: b.journal,
                }
            }
            "sign_eth_sweep" => {
                let b = SignEthInternalBody::deserialize(rest)?;
                Request::SignEthSweep {
                    index: b.index,
                    raw_unsigned: b.raw_unsigned,
                    journal: b.journal,
                }
            }
            "sign_eth_gas_topup" => {
                let b = SignEthInternalBody::deserialize(rest)?;
                Request::SignEthGasTopup {
                    index: b.index,
                    raw_unsigned: b.raw_unsigned,
                    journal: b.journal,
                }
            }
            "sign_eth_cold_sweep" => {
                let b = SignEthColdBody::deserialize(rest)?;
                Request::SignEthColdSweep {
                    raw_unsigned: b.raw_unsigned,
                    journal: b.journal,
                }
            }
            "sign_eth_refill" => {
                let b = SignEthColdBody::deserialize(rest)?;
                Request::SignEthRefill {
                    raw_unsigned: b.raw_unsigned,
                    journal: b.journal,
                }
            }
            other => return Err(de::Error::unknown_variant(other, TYPES)),
        })
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes is larger than {FRAME_BYTES_MAX}")]
    TooLarge(u64),
    #[error("frame is not valid JSON for this message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Writes one frame: the 4-byte big-endian length, then the JSON.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    // Frames may carry a TOTP secret (register_totp): wipe the buffers after use.
    let body = Zeroizing::new(serde_json::to_vec(msg)?);
    if body.len() > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(body.len() as u64));
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge(body.len() as u64))?;
    let mut buf = Zeroizing::new(Vec::with_capacity(4 + body.len()));
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame's raw body (length-checked before anything is allocated).
pub fn read_frame_bytes(r: &mut impl Read) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = u32::from_be_bytes(len);
    if len as usize > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(u64::from(len)));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// Reads one frame and parses its JSON as `T`.
pub fn read_frame<T: serde::de::DeserializeOwned>(r: &mut impl Read) -> Result<T, FrameError> {
    let body = Zeroizing::new(read_frame_bytes(r)?);
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn withdrawal(client_id: Option<u128>) -> Withdrawal {
        Withdrawal {
            id: 7,
            user: 3,
            asset: 1,
            address_id: 9,
            address: "rltc1qxyz".into(),
            amount: 150_000,
            client_id,
            waited_s: 0,
            proof: Some(StepUp {
                action: [1; 32],
                issued_ns: 5,
                nonce: [2; 16],
                factor: ProofFactor::Totp {
                    step: 100,
                    code: "123456".into(),
                },
            }),
            reviews: Vec::new(),
            approvals_needed: 0,
        }
    }

    fn round_trip(r: &Request) -> Request {
        let mut buf = Vec::new();
        write_frame(&mut buf, r).unwrap();
        read_frame(&mut &buf[..]).unwrap()
    }

    #[test]
    fn requests_round_trip() {
        let all = vec![
            Request::Hello,
            Request::Status,
            Request::ClearChallenge,
            Request::RegisterAddress {
                user: 1,
                address_id: 2,
                asset: 1,
                destination: "rltc1q".into(),
                label: String::new(),
                approval: None,
            },
            Request::RegisterAddress {
                user: 1,
                address_id: 2,
                asset: 1,
                destination: "rltc1q".into(),
                label: "mine".into(),
                approval: withdrawal(None).proof,
            },
            Request::RegisterPasskey {
                user: 1,
                credential_id: vec![1, 2, 3],
                public_key: vec![4, 5],
                approval: withdrawal(None).proof,
            },
            Request::RegisterTotp {
                user: 1,
                secret: SecretBytes::new(b"12345678901234567890"),
                approval: None,
            },
            Request::ForgetFactors {
                user: 1,
                approval: withdrawal(None).proof,
            },
            Request::ForgetFactors {
                user: 1,
                approval: None,
            },
            Request::SignWithdrawal {
                withdrawal: Box::new(withdrawal(Some(u128::MAX - 5))),
                psbt: "cHNidP8=".into(),
                journal: None,
            },
            Request::SignWithdrawal {
                withdrawal: Box::new(withdrawal(None)),
                psbt: "cHNidP8=".into(),
                journal: Some(JournalHead {
                    seq: 9,
                    hash: [4; 32],
                    epoch: None,
                }),
            },
            Request::SignSweep {
                psbt: "x".into(),
                journal: None,
            },
            Request::SignSweep {
                psbt: "x".into(),
                journal: Some(JournalHead {
                    seq: 1,
                    hash: [5; 32],
                    epoch: None,
                }),
            },
            Request::WitnessHead { log: "audit".into() },
            Request::Witness {
                log: "audit".into(),
                size: 40,
                root: [6; 32],
                proof: vec![[1; 32], [2; 32]],
            },
            Request::Clear {
                nonce: [7; 32],
                reason: "checked".into(),
                mac: [8; 32],
                assertions: Vec::new(),
            },
            Request::Clear {
                nonce: [7; 32],
                reason: "checked".into(),
                mac: [8; 32],
                assertions: vec![AdminAssertion {
                    admin: 4,
                    proof: withdrawal(None).proof.unwrap(),
                }],
            },
            Request::Halt {
                reason: "withdrawals halted".into(),
                source: "engine".into(),
            },
            Request::Admins,
            Request::AdminChange {
                change: AdminChange::Add {
                    admin: Admin {
                        id: 9,
                        name: "Kei".into(),
                        email: "kei@example.com".into(),
                        credential_id: vec![1, 2],
                        public_key: vec![3, 4],
                    },
                },
                assertions: Vec::new(),
                mac: [5; 32],
            },
            Request::AdminChange {
                change: AdminChange::Thresholds {
                    thresholds: ReviewThresholds {
                        dual_approval_sats: 10,
                        approvals: 2,
                        fan_in_users_max: 3,
                        fan_in_window_s: 86_400,
                    },
                },
                assertions: Vec::new(),
                mac: [5; 32],
            },
            Request::SignWithdrawal {
                withdrawal: Box::new(Withdrawal {
                    reviews: vec![Review {
                        reviewer: 5,
                        proof: withdrawal(None).proof.unwrap(),
                    }],
                    approvals_needed: 2,
                    ..withdrawal(None)
                }),
                psbt: "cHNidP8=".into(),
                journal: None,
            },
            Request::SignLiabilitiesRoot {
                asset: "LTC".into(),
                decimals: 8,
                sequence: 812,
                time: "2026-12-07T15:00:00.000000Z".into(),
                leaves: 3,
                root_hash: "ab".repeat(32),
                total: u128::MAX.to_string(),
                journal: None,
            },
            Request::SignLiabilitiesRoot {
                asset: "BTC".into(),
                decimals: 8,
                sequence: 9,
                time: "2026-12-07T15:00:00.000000Z".into(),
                leaves: 0,
                root_hash: "00".repeat(32),
                total: "0".into(),
                journal: Some(JournalHead {
                    seq: 9,
                    hash: [4; 32],
                    epoch: Some(2),
                }),
            },
        ];
        for r in &all {
            assert_eq!(&round_trip(r), r);
        }
        let json = serde_json::to_string(&all[3]).unwrap();
        assert!(json.starts_with(r#"{"type":"register_address""#), "{json}");
    }

    #[test]
    fn bad_requests_are_errors() {
        for bad in [
            r#"{"user":1,"type":"forget_factors"}"#,
            r#"{"type":"launch_missiles"}"#,
            r#"{"type":"hello","extra":1}"#,
            r#"{"type":"forget_factors","user":"x"}"#,
            r#"{"type":"clear","nonce":"00","reason":"r","mac":"00"}"#,
            // A root's fields only: no key or signature of the sender's choosing.
            r#"{"type":"sign_liabilities_root","asset":"LTC","decimals":8,"sequence":1,"time":"t","leaves":1,"root_hash":"00","total":"1","key":"audit"}"#,
            r#"{"type":"sign_liabilities_root","asset":"LTC","decimals":300,"sequence":1,"time":"t","leaves":1,"root_hash":"00","total":"1"}"#,
            r#"{"type":"sign_liabilities_root","asset":"LTC","decimals":8,"sequence":1,"time":"t","leaves":1,"root_hash":"00"}"#,
            r#"[1,2]"#,
            r#"{}"#,
            "",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let r = Request::RegisterTotp {
            user: 1,
            secret: SecretBytes::new(b"supersecretsupersecr"),
            approval: None,
        };
        let text = format!("{r:?}");
        assert!(!text.contains("supersecret"), "{text}");
        assert!(!text.contains(&hex::encode(b"supersecret")), "{text}");
    }

    #[test]
    fn frames_are_bounded() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&(FRAME_BYTES_MAX as u32 + 1).to_be_bytes());
        assert!(matches!(
            read_frame::<Request>(&mut &buf[..]),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            read_frame::<Request>(&mut &[][..]),
            Err(FrameError::Closed)
        ));
        assert!(matches!(
            read_frame::<Request>(&mut &[0u8, 0][..]),
            Err(FrameError::Io(_))
        ));
        let mut short = Vec::new();
        short.extend_from_slice(&10u32.to_be_bytes());
        short.extend_from_slice(b"{}");
        assert!(matches!(
            read_frame::<Request>(&mut &short[..]),
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn responses_round_trip() {
        for r in [
            Response::Ok,
            Response::Challenge { nonce: [3; 32] },
            Response::Refused {
                code: "PSBT_MISMATCH".into(),
                reason: "x".into(),
                halted: true,
            },
            Response::LiabilitiesRootSigned {
                key: "witness".into(),
                public_key: "0f".repeat(32),
                signature: "ab".repeat(64),
            },
        ] {
            let mut buf = Vec::new();
            write_frame(&mut buf, &r).unwrap();
            assert_eq!(read_frame::<Response>(&mut &buf[..]).unwrap(), r);
        }
    }

    /// What a sender before this crate wrote (kinko-core's whole withdrawal record, proof in
    /// kinko-core's form) still reads, its extra members ignored.
    #[test]
    fn earlier_withdrawal_records_read() {
        let ones = ["1"; 32].join(",");
        let twos = ["2"; 16].join(",");
        let old = format!(
            r#"{{"type":"sign_withdrawal","withdrawal":{{"id":7,"user":3,"asset":1,"address_id":9,
            "address":"rltc1qxyz","amount":150000,"fee":1000,"client_id":null,
            "proof":{{"action":[{ones}],"issued_ns":5,"nonce":[{twos}],
            "factor":{{"Totp":{{"step":100,"code":"123456"}}}}}},"status":"Requested","txid":null,
            "network_fee":0,"risk":null,"not_before_ns":0,"approvals":[],"approvals_needed":0,
            "signing_ns":0,"reason":null,"requested_ns":1,"updated_ns":2}},"psbt":"cHNidP8="}}"#
        );
        let r: Request = serde_json::from_str(&old).unwrap();
        assert_eq!(
            r,
            Request::SignWithdrawal {
                withdrawal: Box::new(withdrawal(None)),
                psbt: "cHNidP8=".into(),
                journal: None,
            }
        );
        // And what this crate writes is that same form, minus the bookkeeping.
        let json = serde_json::to_value(&r).unwrap();
        let old: serde_json::Value = serde_json::from_str(&old).unwrap();
        assert_eq!(json["withdrawal"]["proof"], old["withdrawal"]["proof"]);
        assert_eq!(json["withdrawal"]["amount"], 150_000);
    }
}
