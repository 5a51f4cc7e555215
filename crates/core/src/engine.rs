//! The deterministic state machine. Its only inputs are `(sequence, timestamp, command)`; its
//! outputs are a reply and events. It performs no I/O, reads no clock and draws no randomness, so
//! replaying the same journal always rebuilds the same state, which `state_hash` proves.

use crate::admin::{AdminChange, AdminEvent, AdminState, Operation};
use crate::asset::{Asset, AssetSwitches, ASSETS_MAX, DECIMALS_MAX};
use crate::book::OrderId;
use crate::identity::{
    Action, AdminRole, Identity, IdentityCommand, IdentityEvent, IdentityReply, IdentityState, StepUp, Via,
};
use crate::keys::{ApiKey, KeyEvent, Keys};
use crate::ledger::{
    InvariantViolation, Ledger, LedgerAudit, LedgerEvent, LedgerState, Owner, SystemAccount, TransferKind,
    TransferOutcome, TransferRequest,
};
use crate::market::{MarketId, MarketSpec, MarketState, OrderTypeSwitches, PassiveBand};
use crate::money::{AccountId, Amount, AssetCode, AssetId, TransferId, UserId};
use crate::reject::Reject;
use crate::risk::RiskPolicy;
use crate::trading::{
    ConditionalOrder, Order, OrderPlaced, OrderRef, PlaceOrder, Trading, TradingEvent, TradingState,
    ENGINE_TRANSFER_ID_MIN,
};
use crate::wallet::{
    AddressId, Ctx as WalletCtx, CustodyMove, CustodyMoveKind, DepositId, RequestRisk, Wallet, WalletEvent,
    WalletState, Withdrawal, WithdrawalAddress, WithdrawalId,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most transfers accepted in one command.
pub const TRANSFERS_PER_COMMAND_MAX: usize = 8190;

/// Everything that can change the engine's state. Each is journaled before it is applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Defines an asset and opens its system accounts. Repeating an identical definition is a
    /// no-op that returns the existing id.
    DefineAsset {
        code: AssetCode,
        decimals: u8,
    },
    /// Turns deposits, withdrawals or trading of an asset on or off.
    SetAssetSwitches {
        asset: AssetId,
        switches: AssetSwitches,
    },
    /// Opens (or finds) the account of `user` for `asset`.
    OpenAccount {
        user: UserId,
        asset: AssetId,
    },
    /// Applies ledger transfers; linked chains all or nothing.
    Transfers(Vec<TransferRequest>),
    /// Lets time pass: expires pending transfers whose timeout is reached.
    Tick,
    /// Defines a market (an identical repeat is a no-op).
    DefineMarket(MarketSpec),
    /// Open, post-only, cancel-only or halted.
    SetMarketState {
        market: MarketId,
        state: MarketState,
    },
    /// Which order types the market accepts.
    SetOrderTypes {
        market: MarketId,
        switches: OrderTypeSwitches,
    },
    /// Sets the reference price of a market (quote minor units per whole base unit).
    SetReferencePrice {
        market: MarketId,
        price: Amount,
    },
    /// Sets a user's fee tier.
    SetUserTier {
        user: UserId,
        tier: u8,
    },
    PlaceOrder(PlaceOrder),
    CancelOrder {
        user: UserId,
        order: OrderRef,
    },
    /// Cancels every open order of a user, on one market or all.
    CancelAll {
        user: UserId,
        market: Option<MarketId>,
    },
    /// Reverses a trade through correcting transfers, recording who asked and why.
    BustTrade {
        market: MarketId,
        trade: u64,
        requested_by: String,
        reason: String,
    },
    /// Creates an API key (its secret only hashed or sealed). A key with the withdraw scope needs
    /// an IP allowlist and a second-factor proof for [`Action::CreateWithdrawKey`].
    CreateApiKey {
        key: ApiKey,
        proof: Option<StepUp>,
    },
    RevokeApiKey {
        user: UserId,
        id: String,
    },
    /// Gives `user` a deposit address for `asset` (the address comes from the chain adapter).
    AssignDepositAddress {
        user: UserId,
        asset: AssetId,
        address: String,
    },
    /// A chain watcher saw an output paying a deposit address.
    DepositSeen {
        asset: AssetId,
        address: String,
        txid: String,
        vout: u32,
        amount: Amount,
    },
    /// The deposit has its confirmations: credit the customer.
    DepositConfirmed {
        deposit: DepositId,
    },
    /// A pending deposit left the chain (reorg).
    DepositDropped {
        deposit: DepositId,
    },
    /// A credited deposit left the chain (a reorg deeper than the confirmation target).
    DepositReversed {
        deposit: DepositId,
    },
    /// The custody service takes a requested withdrawal to the signer (no more cancelling).
    WithdrawalSigning {
        id: WithdrawalId,
    },
    /// Replaces the withdrawal risk policy: rules, limits by tier, dual-approval thresholds,
    /// hourly hot-wallet outflow caps.
    SetRiskPolicy(RiskPolicy),
    /// A reviewer's decision on a withdrawal held for review: the reviewer needs the `risk` or
    /// `treasury` role and a fresh second factor for this decision, and is never the requester.
    ReviewWithdrawal {
        id: WithdrawalId,
        reviewer: UserId,
        approve: bool,
        reason: String,
        via: Via,
        proof: StepUp,
    },
    /// An admin proposes a sensitive change; a second admin must approve it.
    ProposeChange {
        by: UserId,
        change: AdminChange,
        reason: String,
        via: Via,
        proof: StepUp,
    },
    /// A second admin (not the proposer, with the change's role) approves: it is carried out.
    ApproveChange {
        id: u64,
        by: UserId,
        via: Via,
        proof: StepUp,
    },
    /// The proposer withdraws an open proposal.
    WithdrawChange {
        id: u64,
        by: UserId,
    },
    /// Halts withdrawals of one asset or of every asset: by an admin (second factor), or by
    /// the system (reconciliation, the operator's token).
    HaltWithdrawals {
        asset: Option<AssetId>,
        by: HaltBy,
        reason: String,
    },
    /// Halts deposits or trading of an asset (withdrawals: [`Command::HaltWithdrawals`]).
    HaltOperation {
        asset: AssetId,
        operation: Operation,
        by: HaltBy,
        reason: String,
    },
    /// The system (reconciliation) or an admin opens an incident; the missing amount is split
    /// between customer and company funds by the engine. `halt` also halts the asset.
    OpenIncident {
        kind: String,
        asset: Option<AssetId>,
        summary: String,
        txids: Vec<String>,
        missing: Amount,
        opened_by: String,
        halt: bool,
    },
    /// A security admin closes an incident.
    ResolveIncident {
        id: u64,
        by: UserId,
        resolution: String,
        via: Via,
        proof: StepUp,
    },
    /// A hot ↔ cold movement was broadcast.
    RecordCustodyMove {
        asset: AssetId,
        kind: CustodyMoveKind,
        txid: String,
        amount: Amount,
        network_fee: Amount,
    },
    /// The fee charged per withdrawal of an asset.
    SetWithdrawalFee {
        asset: AssetId,
        fee: Amount,
    },
    /// Whitelists a withdrawal address, usable after `cooling_ns`. `address` must be the
    /// chain's canonical form (the gateway's `ChainAdapter::canonical_address`): the engine
    /// knows no chain's format and compares whitelisted addresses exactly.
    AddWithdrawalAddress {
        user: UserId,
        asset: AssetId,
        address: String,
        label: String,
        cooling_ns: u64,
        by: AddressAuth,
    },
    RemoveWithdrawalAddress {
        user: UserId,
        id: AddressId,
    },
    /// A withdrawal: only through a full session or a withdraw-scoped key from an allowed IP,
    /// with a fresh second-factor proof for exactly this withdrawal ([`Action::Withdraw`]).
    RequestWithdrawal {
        user: UserId,
        address: AddressId,
        amount: Amount,
        client_id: Option<u128>,
        via: Via,
        proof: StepUp,
    },
    CancelWithdrawal {
        user: UserId,
        id: WithdrawalId,
    },
    /// Refuses a requested withdrawal after the fact (signer or operator), releasing the hold.
    FailWithdrawal {
        id: WithdrawalId,
        reason: String,
    },
    /// The withdrawal's transaction is on the network; `network_fee` is its miner fee.
    WithdrawalBroadcast {
        id: WithdrawalId,
        txid: String,
        network_fee: Amount,
    },
    /// The withdrawal's transaction is final.
    WithdrawalConfirmed {
        id: WithdrawalId,
    },
    /// Accounts, sessions, second factors (see [`crate::identity`]).
    Identity(IdentityCommand),
    // New variants go last: the journal encodes a command by its variant's index.
    /// The withdrawal's signed transaction, recorded before it is broadcast (`Signing` →
    /// `Signed`): the customer is debited and the miner fee booked. Nothing the engine refuses
    /// here is ever sent.
    RecordWithdrawalTx {
        id: WithdrawalId,
        txid: String,
        raw_tx: String,
        network_fee: Amount,
    },
    /// A hot ↔ cold movement, recorded with its signed transaction before it is broadcast.
    RecordCustodyTx {
        asset: AssetId,
        kind: CustodyMoveKind,
        txid: String,
        raw_tx: String,
        amount: Amount,
        network_fee: Amount,
    },
    /// The withdrawal's recorded transaction left the chain (conflicted), even after
    /// `Completed`: `Reverted`, the customer credited back, an incident opened.
    RevertWithdrawal {
        id: WithdrawalId,
        reason: String,
    },
    /// A custody move's transaction left the chain: `Reverted`, booked back, an incident opened.
    RevertCustodyMove {
        asset: AssetId,
        txid: String,
        reason: String,
    },
    /// Revokes an API key on the owner's behalf with a second-factor proof for
    /// [`Action::RevokeApiKey`] (what the gateway sends: a stolen session alone cannot take a
    /// user's keys away). `RevokeApiKey` stays for the engine's own callers and old journals.
    RevokeApiKeyWithProof {
        user: UserId,
        id: String,
        proof: StepUp,
    },
    /// Sets how far from the reference a limit order that would not trade on arrival may rest
    /// (per side; the aggressive side keeps the band). Markets defined before it keep the band
    /// on both sides. Last in the enum: journals before it keep their variant numbers.
    SetPassiveBand {
        market: MarketId,
        band: PassiveBand,
    },
    /// A confirmed deposit to the company's own address of the asset: credited to the company
    /// treasury (company treasury ← hot wallet), once per output.
    CompanyDeposit {
        asset: AssetId,
        txid: String,
        vout: u32,
        amount: Amount,
    },
    /// Places an order with a stop (it waits, funds held, until the last trade price reaches
    /// the stop price), an expiry (good till time, cancelled with reason `Expired` through the
    /// engine's clock) or both.
    PlaceConditionalOrder(ConditionalOrder),
    /// The relying party (RP ID, allowed origins) admins' passkey assertions are verified
    /// against, journaled by the gateway from its configuration at every start. Once one is set
    /// admin actions need a passkey assertion the engine verifies itself, and whitelisting an
    /// address by an operator or without cooling needs two admins ([`AdminChange::WhitelistAddress`]).
    SetRelyingParty(crate::passkey::RelyingParty),
    /// What TOTP alone (a TOTP proof, or an address approved by TOTP) may withdraw of `asset`
    /// per user in a rolling 24 h: the signer's `totp_budget_sats`, mirrored so that the
    /// customer learns it at request time (`PASSKEY_REQUIRED`). Zero: no cap here (the signer
    /// still caps). Last in the enum: journals before it keep their variant numbers.
    SetTotpBudget {
        asset: AssetId,
        budget: Amount,
    },
    /// An admin (any role but viewer: freezing protects) freezes a customer's account with a
    /// reason and a fresh passkey proof for [`Action::FreezeUser`]: withdrawals refused,
    /// sessions and API keys ended. Unfreezing takes two admins
    /// ([`crate::admin::AdminChange::UnfreezeUser`]). Last in the enum: journals before it keep
    /// their variant numbers.
    FreezeUser {
        user: UserId,
        by: UserId,
        reason: String,
        via: Via,
        proof: StepUp,
    },
    /// A node of a replicated cluster took over writes (docs/design/replication.md): the first
    /// command of its epoch. Changes no state; it records in the journal which batches each
    /// epoch wrote.
    BeginEpoch {
        epoch: u64,
        node: String,
    },
    /// `amount` of `asset` (the chain's native coin, e.g. ETH) paid as gas by a key of ours for
    /// the transaction `txid` (`0x` + 64 hex digits), which moved `for_asset` (the same asset, or
    /// a token of its chain: the token's ledger never sees the native coin): network fees ←
    /// hot wallet, covered by company funds as miner fees are (fee revenue, then the treasury).
    /// Once per transaction: the same booking again is a no-op, another one for the same
    /// transaction is refused (`GAS_CONFLICT`). Last in the enum: journals before it keep
    /// their variant numbers.
    RecordGas {
        asset: AssetId,
        txid: String,
        for_asset: AssetId,
        amount: Amount,
    },
}

/// Who halts withdrawals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HaltBy {
    Admin {
        user: UserId,
        via: Via,
        proof: StepUp,
    },
    /// A component (`reconciliation`) or the operator's token (`operator:<name>`).
    System(String),
}

/// Who whitelists a withdrawal address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressAuth {
    /// The user, through a session or a withdraw-scoped key, with a second-factor proof for
    /// [`Action::AddWithdrawalAddress`].
    User { via: Via, proof: StepUp },
    /// An operator (named, with a reason); the cooling period still applies and withdrawals
    /// still need the user's own proof.
    Operator { name: String, reason: String },
}

impl Command {
    /// A short stable name, for logs, metrics and `journal dump`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::DefineAsset { .. } => "define_asset",
            Command::SetAssetSwitches { .. } => "set_asset_switches",
            Command::OpenAccount { .. } => "open_account",
            Command::Transfers(_) => "transfers",
            Command::Tick => "tick",
            Command::DefineMarket(_) => "define_market",
            Command::SetMarketState { .. } => "set_market_state",
            Command::SetOrderTypes { .. } => "set_order_types",
            Command::SetPassiveBand { .. } => "set_passive_band",
            Command::SetReferencePrice { .. } => "set_reference_price",
            Command::SetUserTier { .. } => "set_user_tier",
            Command::PlaceOrder(_) => "place_order",
            Command::CancelOrder { .. } => "cancel_order",
            Command::CancelAll { .. } => "cancel_all",
            Command::BustTrade { .. } => "bust_trade",
            Command::CreateApiKey { .. } => "create_api_key",
            Command::RevokeApiKey { .. } => "revoke_api_key",
            Command::AssignDepositAddress { .. } => "assign_deposit_address",
            Command::DepositSeen { .. } => "deposit_seen",
            Command::DepositConfirmed { .. } => "deposit_confirmed",
            Command::DepositDropped { .. } => "deposit_dropped",
            Command::DepositReversed { .. } => "deposit_reversed",
            Command::WithdrawalSigning { .. } => "withdrawal_signing",
            Command::RecordCustodyMove { .. } => "record_custody_move",
            Command::SetRiskPolicy(_) => "set_risk_policy",
            Command::ProposeChange { .. } => "propose_change",
            Command::ApproveChange { .. } => "approve_change",
            Command::WithdrawChange { .. } => "withdraw_change",
            Command::HaltWithdrawals { .. } => "halt_withdrawals",
            Command::HaltOperation { .. } => "halt_operation",
            Command::OpenIncident { .. } => "open_incident",
            Command::ResolveIncident { .. } => "resolve_incident",
            Command::ReviewWithdrawal { .. } => "review_withdrawal",
            Command::SetWithdrawalFee { .. } => "set_withdrawal_fee",
            Command::AddWithdrawalAddress { .. } => "add_withdrawal_address",
            Command::RemoveWithdrawalAddress { .. } => "remove_withdrawal_address",
            Command::RequestWithdrawal { .. } => "request_withdrawal",
            Command::CancelWithdrawal { .. } => "cancel_withdrawal",
            Command::FailWithdrawal { .. } => "fail_withdrawal",
            Command::WithdrawalBroadcast { .. } => "withdrawal_broadcast",
            Command::WithdrawalConfirmed { .. } => "withdrawal_confirmed",
            Command::RecordWithdrawalTx { .. } => "record_withdrawal_tx",
            Command::RecordCustodyTx { .. } => "record_custody_tx",
            Command::RevertWithdrawal { .. } => "revert_withdrawal",
            Command::RevertCustodyMove { .. } => "revert_custody_move",
            Command::RevokeApiKeyWithProof { .. } => "revoke_api_key_with_proof",
            Command::CompanyDeposit { .. } => "company_deposit",
            Command::PlaceConditionalOrder(_) => "place_conditional_order",
            Command::SetRelyingParty(_) => "set_relying_party",
            Command::SetTotpBudget { .. } => "set_totp_budget",
            Command::FreezeUser { .. } => "freeze_user",
            Command::BeginEpoch { .. } => "begin_epoch",
            Command::RecordGas { .. } => "record_gas",
            Command::Identity(c) => c.name(),
        }
    }
}

// A withdrawal reply carries the record (with its proof and, since transactions are recorded
// before broadcast, its raw transaction and shortfall); boxing it would change every gateway
// match for 40 bytes more than the lint allowed before. Replies are moved once per command.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    AssetDefined { asset: AssetId, created: bool },
    SwitchesSet,
    AccountOpened { account: AccountId },
    Transfers(Vec<Result<TransferOutcome, Reject>>),
    Ticked,
    MarketDefined { market: MarketId, created: bool },
    MarketUpdated,
    OrderPlaced(OrderPlaced),
    OrderCancelled(Order),
    OrdersCancelled(Vec<OrderId>),
    TradeBusted,
    ApiKeyCreated,
    ApiKeyRevoked,
    DepositAddress { address: String },
    Deposit(DepositId),
    Done,
    WithdrawalAddress(WithdrawalAddress),
    Withdrawal(Withdrawal),
    CustodyMove(CustodyMove),
    CompanyDeposit(crate::wallet::CompanyDeposit),
    Proposal(Box<crate::admin::Proposal>),
    Incident(Box<crate::admin::Incident>),
    Identity(IdentityReply),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    AssetDefined {
        asset: AssetId,
        code: AssetCode,
        decimals: u8,
    },
    AssetSwitchesChanged {
        asset: AssetId,
        switches: AssetSwitches,
    },
    AccountOpened {
        account: AccountId,
        user: UserId,
        asset: AssetId,
    },
    Ledger(LedgerEvent),
    Trading(TradingEvent),
    Wallet(WalletEvent),
    Key(KeyEvent),
    Identity(IdentityEvent),
    Admin(AdminEvent),
}

#[derive(Clone, Debug, Default)]
pub struct Engine {
    assets: Vec<Asset>,
    asset_by_code: BTreeMap<AssetCode, AssetId>,
    ledger: Ledger,
    trading: Trading,
    wallet: Wallet,
    keys: Keys,
    identity: Identity,
    risk: RiskPolicy,
    admin: AdminState,
    last_seq: u64,
    last_timestamp_ns: u64,
    halted: Option<String>,
    ledger_events: Vec<LedgerEvent>,
    wallet_events: Vec<WalletEvent>,
    identity_events: Vec<IdentityEvent>,
}

/// The whole persistent state in canonical form: what a snapshot stores and `state_hash` covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineState {
    pub format_version: u32,
    pub last_seq: u64,
    pub last_timestamp_ns: u64,
    pub halted: Option<String>,
    pub assets: Vec<Asset>,
    pub ledger: LedgerState,
    pub trading: TradingState,
    pub wallet: WalletState,
    pub api_keys: Vec<ApiKey>,
    pub identity: IdentityState,
    pub risk: RiskPolicy,
    pub admin: AdminState,
}

/// 9: markets carry their passive band (`MarketMeta::passive`).
/// 10: company deposits (`WalletState::company_deposits`); miner fees charged to company funds.
/// 11: stop and good-till-time orders (`Order::stop`, `Order::expires_ns`, `OrderStatus::Pending`);
///     reviewers' proofs kept with withdrawals (`Withdrawal::approval_proofs`); the relying party
///     admins' passkeys are verified against (`IdentityState::relying_party`); the
///     approvals users gave their factors and addresses (`User::approvals`,
///     `WithdrawalAddress::approval`).
/// 12: incidents record the customers their customer share falls on and their executed
///     restitution (`Incident::affected`, `affected_over_limit`, `restitution`).
/// 13: the language of a user's messages (`User::language`).
pub const STATE_FORMAT_VERSION: u32 = 13;

/// Ledger code of restitution transfers (`user_data`: the incident).
pub const TRANSFER_CODE_RESTITUTION: u16 = 400;

/// Engine-reserved ids of a restitution's transfers: bit 127 (engine), bit 125 (restitution),
/// the proposal at bit 32, the transfer's index. Wallet movements set bit 126 and trade busts
/// stay below bit 112, so the ranges never meet.
fn restitution_transfer_id(proposal: u64, index: u64) -> TransferId {
    TransferId(ENGINE_TRANSFER_ID_MIN | (1 << 125) | (u128::from(proposal) << 32) | u128::from(index))
}

/// Who opens the incident of a reverted withdrawal or custody move.
pub const BY_CUSTODY: &str = "system:custody";
pub const INCIDENT_WITHDRAWAL_REVERTED: &str = "withdrawal_reverted";
pub const INCIDENT_CUSTODY_MOVE_REVERTED: &str = "custody_move_reverted";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    pub last_seq: u64,
    pub assets: usize,
    pub ledger: LedgerAudit,
}

impl Engine {
    pub fn new() -> Engine {
        Engine::default()
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
    pub fn last_timestamp_ns(&self) -> u64 {
        self.last_timestamp_ns
    }
    pub fn halted(&self) -> Option<&str> {
        self.halted.as_deref()
    }
    pub fn assets(&self) -> &[Asset] {
        &self.assets
    }
    pub fn asset(&self, id: AssetId) -> Option<&Asset> {
        self.assets.get(id.0 as usize)
    }
    pub fn asset_by_code(&self, code: &str) -> Option<AssetId> {
        AssetCode::new(code)
            .ok()
            .and_then(|c| self.asset_by_code.get(&c).copied())
    }
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
    pub fn trading(&self) -> &Trading {
        &self.trading
    }
    pub fn risk_policy(&self) -> &RiskPolicy {
        &self.risk
    }

    pub fn wallet(&self) -> &Wallet {
        &self.wallet
    }
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
    /// `user`'s withdrawal limits of `asset` (their tier's) and what is left of them at
    /// `now_ns`, as the request check counts it; `None` when the policy sets no limit for the
    /// tier and asset.
    pub fn withdrawal_limit_left(
        &self,
        user: UserId,
        asset: AssetId,
        now_ns: u64,
    ) -> Option<(crate::risk::TierLimit, crate::wallet::LimitLeft)> {
        let limit = self.risk.limit(self.trading.tier(user), asset)?;
        Some((limit.clone(), self.wallet.limit_left(user, asset, limit, now_ns)))
    }
    /// The step-up action a withdrawal request stands for, from this engine's own records (the
    /// gateway uses it to build the challenge; the engine to check the proof).
    pub fn withdrawal_action(
        &self,
        user: UserId,
        address: AddressId,
        amount: Amount,
        client_id: Option<u128>,
    ) -> Result<Action, Reject> {
        self.wallet.withdrawal_action(user, address, amount, client_id)
    }
    /// The earliest time at which something happens without a command (a pending transfer or
    /// a good-till-time order expires); the sequencer submits a `Tick` when it is reached and
    /// nothing else arrives.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        match (self.ledger.next_expiry_ns(), self.trading.next_expiry_ns()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies one command. `seq` must follow the previous one and `timestamp_ns` must not go
    /// back; both come from the sequencer (or the journal, on replay).
    pub fn apply(
        &mut self,
        seq: u64,
        timestamp_ns: u64,
        command: &Command,
        events: &mut Vec<Event>,
    ) -> Result<Reply, Reject> {
        assert!(
            seq == self.last_seq + 1,
            "engine: sequence {seq} does not follow {}",
            self.last_seq
        );
        assert!(
            timestamp_ns >= self.last_timestamp_ns,
            "engine: time went back from {} to {timestamp_ns}",
            self.last_timestamp_ns
        );
        self.last_seq = seq;
        self.last_timestamp_ns = timestamp_ns;
        if self.halted.is_some() {
            return Err(Reject::EngineHalted);
        }
        self.ledger_events.clear();
        self.ledger.expire_due(timestamp_ns, &mut self.ledger_events);
        events.extend(self.ledger_events.drain(..).map(Event::Ledger));
        self.trading.expire_due(&mut self.ledger, timestamp_ns, events);
        let reply = self.dispatch(seq, timestamp_ns, command, events);
        events.extend(self.ledger_events.drain(..).map(Event::Ledger));
        reply
    }

    fn dispatch(
        &mut self,
        seq: u64,
        timestamp_ns: u64,
        command: &Command,
        events: &mut Vec<Event>,
    ) -> Result<Reply, Reject> {
        match command {
            Command::DefineAsset { code, decimals } => self.define_asset(code, *decimals, events),
            Command::SetAssetSwitches { asset, switches } => {
                self.set_asset_switches(*asset, *switches, events)
            }
            Command::OpenAccount { user, asset } => self.open_customer_account(*user, *asset, events),
            Command::Transfers(requests) => self.client_transfers(seq, timestamp_ns, requests),
            Command::Tick => Ok(Reply::Ticked),
            Command::DefineMarket(spec) => {
                let (market, created) =
                    self.trading
                        .define_market(&self.assets, spec, timestamp_ns, events)?;
                Ok(Reply::MarketDefined { market, created })
            }
            Command::SetMarketState { market, state } => {
                self.trading.set_state(*market, *state, events)?;
                Ok(Reply::MarketUpdated)
            }
            Command::SetOrderTypes { market, switches } => {
                self.trading.set_order_types(*market, *switches, events)?;
                Ok(Reply::MarketUpdated)
            }
            Command::SetPassiveBand { market, band } => {
                self.trading.set_passive_band(*market, *band)?;
                Ok(Reply::MarketUpdated)
            }
            Command::SetReferencePrice { market, price } => {
                self.trading
                    .set_reference(*market, *price, timestamp_ns, events)?;
                Ok(Reply::MarketUpdated)
            }
            Command::SetUserTier { user, tier } => {
                self.trading.set_tier(*user, *tier, events);
                Ok(Reply::MarketUpdated)
            }
            Command::PlaceOrder(p) => self
                .trading
                .place(&mut self.ledger, &self.assets, timestamp_ns, p, events)
                .map(Reply::OrderPlaced),
            Command::PlaceConditionalOrder(c) => self
                .trading
                .place_conditional(&mut self.ledger, &self.assets, timestamp_ns, c, events)
                .map(Reply::OrderPlaced),
            Command::CancelOrder { user, order } => self
                .trading
                .cancel(&mut self.ledger, timestamp_ns, *user, *order, events)
                .map(Reply::OrderCancelled),
            Command::CancelAll { user, market } => self
                .trading
                .cancel_all(
                    &mut self.ledger,
                    timestamp_ns,
                    Some(*user),
                    *market,
                    crate::book::CancelReason::User,
                    events,
                )
                .map(Reply::OrdersCancelled),
            Command::BustTrade {
                market,
                trade,
                requested_by,
                reason,
            } => self
                .trading
                .bust(
                    &mut self.ledger,
                    seq,
                    timestamp_ns,
                    *market,
                    *trade,
                    requested_by,
                    reason,
                    events,
                    &mut self.ledger_events,
                )
                .map(|()| Reply::TradeBusted),
            Command::CreateApiKey { key, proof } => self.create_api_key(timestamp_ns, key, proof, events),
            Command::Identity(c) => self.identity_command(timestamp_ns, c, events),
            Command::RevokeApiKey { user, id } => {
                let mut ev = Vec::new();
                let r = self.keys.revoke(*user, id, &mut ev);
                events.extend(ev.into_iter().map(Event::Key));
                r.map(|()| Reply::ApiKeyRevoked)
            }
            Command::RevokeApiKeyWithProof { user, id, proof } => {
                self.revoke_api_key_with_proof(timestamp_ns, *user, id, proof, events)
            }
            Command::SetRiskPolicy(p) => self.set_risk_policy(p).map(|()| Reply::Done),
            Command::SetRelyingParty(rp) => self.identity.set_relying_party(rp).map(|()| Reply::Done),
            Command::FreezeUser {
                user,
                by,
                reason,
                via,
                proof,
            } => self.admin_freeze(timestamp_ns, *user, *by, reason, via, proof, events),
            Command::BeginEpoch { .. } => Ok(Reply::Done),
            Command::ProposeChange { .. }
            | Command::ApproveChange { .. }
            | Command::WithdrawChange { .. }
            | Command::HaltWithdrawals { .. }
            | Command::HaltOperation { .. }
            | Command::OpenIncident { .. }
            | Command::ResolveIncident { .. } => self.admin_command(timestamp_ns, command, events),
            Command::RequestWithdrawal { .. } | Command::WithdrawalSigning { .. }
                if self.admin.global_halt.is_some() =>
            {
                Err(Reject::WithdrawalsDisabled)
            }
            _ => self.wallet_command(seq, timestamp_ns, command, events),
        }
    }

    fn set_asset_switches(
        &mut self,
        asset: AssetId,
        switches: AssetSwitches,
        events: &mut Vec<Event>,
    ) -> Result<Reply, Reject> {
        let a = self
            .assets
            .get_mut(asset.0 as usize)
            .ok_or(Reject::AssetNotFound)?;
        a.switches = switches;
        events.push(Event::AssetSwitchesChanged { asset, switches });
        Ok(Reply::SwitchesSet)
    }

    fn open_customer_account(
        &mut self,
        user: UserId,
        asset: AssetId,
        events: &mut Vec<Event>,
    ) -> Result<Reply, Reject> {
        if self.asset(asset).is_none() {
            return Err(Reject::AssetNotFound);
        }
        let existing = self.ledger.customer_account(user, asset);
        let account = self.ledger.open_account(asset, Owner::Customer(user))?;
        if existing.is_none() {
            events.push(Event::AccountOpened { account, user, asset });
        }
        Ok(Reply::AccountOpened { account })
    }

    /// A client's batch of ledger transfers.
    fn client_transfers(
        &mut self,
        seq: u64,
        timestamp_ns: u64,
        requests: &[TransferRequest],
    ) -> Result<Reply, Reject> {
        if requests.is_empty() || requests.len() > TRANSFERS_PER_COMMAND_MAX {
            return Err(Reject::LimitExceeded);
        }
        // Clients neither create nor resolve (post, void, reverse) engine transfers:
        // those belong to wallet and trading records that must keep matching the ledger.
        let reserved = |id: TransferId| id.0 >= ENGINE_TRANSFER_ID_MIN;
        if requests.iter().any(|r| {
            reserved(r.id)
                || match r.kind {
                    TransferKind::PostPending { pending, .. } | TransferKind::VoidPending { pending } => {
                        reserved(pending)
                    }
                    TransferKind::Reverse { original } => reserved(original),
                    TransferKind::Post { .. } | TransferKind::Hold { .. } => false,
                }
        }) {
            return Err(Reject::TransferIdReserved);
        }
        let results = self
            .ledger
            .create_transfers(seq, timestamp_ns, requests, &mut self.ledger_events);
        Ok(Reply::Transfers(results))
    }

    fn create_api_key(
        &mut self,
        timestamp_ns: u64,
        key: &ApiKey,
        proof: &Option<StepUp>,
        events: &mut Vec<Event>,
    ) -> Result<Reply, Reject> {
        // A registered user must be active (not frozen, not disabled) to get a key; a
        // key that may withdraw needs a registered user.
        if key.permissions.withdraw || self.identity.user(key.user).is_some() {
            self.identity.active(key.user)?;
        }
        // The gateway sends a proof with every key a user asks for; a key without the withdraw
        // scope may come without one only from the engine's own callers (demo, benchmarks).
        let used = if key.permissions.withdraw {
            let action = Action::CreateWithdrawKey {
                user: key.user,
                label: key.label.clone(),
                ip_allowlist: key.ip_allowlist.clone(),
            };
            let proof = proof.as_ref().ok_or(Reject::StepUpRequired)?;
            Some(self.identity.check_proof(&action, proof, timestamp_ns)?)
        } else if let Some(proof) = proof {
            let action = Action::CreateApiKey {
                user: key.user,
                label: key.label.clone(),
                permissions: key.permissions,
                ip_allowlist: key.ip_allowlist.clone(),
            };
            Some(self.identity.check_proof(&action, proof, timestamp_ns)?)
        } else {
            None
        };
        let mut ev = Vec::new();
        let r = self.keys.create(timestamp_ns, key, &mut ev);
        if r.is_ok() {
            if let Some(p) = used {
                self.commit_proof(p, timestamp_ns, events);
            }
        }
        events.extend(ev.into_iter().map(Event::Key));
        r.map(|()| Reply::ApiKeyCreated)
    }

    fn revoke_api_key_with_proof(
        &mut self,
        timestamp_ns: u64,
        user: UserId,
        id: &str,
        proof: &StepUp,
        events: &mut Vec<Event>,
    ) -> Result<Reply, Reject> {
        let action = Action::RevokeApiKey {
            user,
            id: id.to_owned(),
        };
        let used = self.identity.check_proof(&action, proof, timestamp_ns)?;
        let mut ev = Vec::new();
        self.keys.revoke(user, id, &mut ev)?;
        self.commit_proof(used, timestamp_ns, events);
        events.extend(ev.into_iter().map(Event::Key));
        Ok(Reply::ApiKeyRevoked)
    }

    /// The user whose API keys an identity command that succeeded ends: a password change or
    /// reset, a removed second factor, a freeze, a status other than active. A key minted from
    /// a stolen session must not outlive the owner taking the account back.
    fn keys_ended_by(c: &IdentityCommand, reply: &IdentityReply) -> Option<UserId> {
        use IdentityCommand as C;
        match (c, reply) {
            (C::ChangePassword { user, .. } | C::RemoveFactor { user, .. } | C::Freeze { user, .. }, _) => {
                Some(*user)
            }
            (C::SetStatus { user, status, .. }, _) if *status != crate::identity::UserStatus::Active => {
                Some(*user)
            }
            (C::ResetPassword { .. }, IdentityReply::Done(user)) => Some(*user),
            _ => None,
        }
    }

    fn identity_command(
        &mut self,
        timestamp_ns: u64,
        c: &IdentityCommand,
        events: &mut Vec<Event>,
    ) -> Result<Reply, Reject> {
        let mut ev = Vec::new();
        // Whether the user already holds funds decides if a first factor locks withdrawals.
        let funded = match c {
            IdentityCommand::EnrolTotp { user, .. } | IdentityCommand::EnrolPasskey { user, .. } => {
                self.ledger.customer_funded(*user)
            }
            _ => false,
        };
        let r = self.identity.apply(timestamp_ns, c, funded, &mut ev);
        // Keys end with the credentials they were minted under, in this same command: after a
        // breach (platform-wide revocation) every key, otherwise the user's own.
        let mut kev = Vec::new();
        match (&r, c) {
            (Ok(_), IdentityCommand::RevokeEverything { .. }) => self.keys.revoke_all(&mut kev),
            (Ok(reply), _) => {
                if let Some(user) = Self::keys_ended_by(c, reply) {
                    self.keys.revoke_user(user, &mut kev);
                }
            }
            (Err(_), _) => {}
        }
        events.extend(kev.into_iter().map(Event::Key));
        events.extend(ev.into_iter().map(Event::Identity));
        r.map(Reply::Identity)
    }

    pub fn admin(&self) -> &AdminState {
        &self.admin
    }

    /// An admin freezes a customer: the admin's role (any but viewer) and passkey proof, then
    /// the same freeze as the customer's own link (sessions and keys end in this command).
    #[allow(clippy::too_many_arguments)]
    fn admin_freeze(
        &mut self,
        now_ns: u64,
        user: UserId,
        by: UserId,
        reason: &str,
        via: &Via,
        proof: &StepUp,
        events: &mut Vec<Event>,
    ) -> Result<Reply, Reject> {
        if !crate::admin::text_ok(reason) {
            return Err(Reject::ReasonRequired);
        }
        let target = self.identity.user(user).ok_or(Reject::UserNotFound)?;
        if target.status != crate::identity::UserStatus::Active {
            return Err(Reject::AccountFrozen);
        }
        let admin = self.identity.active(by)?;
        let Some(role) = admin.roles.iter().copied().find(|r| *r != AdminRole::Viewer) else {
            return Err(Reject::RoleRequired);
        };
        let action = Action::FreezeUser {
            user: by,
            target: user,
        };
        let used = self.admin_check(by, role, via, &action, proof, now_ns)?;
        let freeze = IdentityCommand::Freeze {
            user,
            reason: format!("admin {}: {reason}", by.0),
        };
        let r = self.identity_command(now_ns, &freeze, events)?;
        self.commit_proof(used, now_ns, events);
        Ok(r)
    }

    /// An admin acting through a full session with `role`, proving `action` with a fresh
    /// second factor. Returns the proof to commit if the command succeeds.
    fn admin_check(
        &self,
        user: UserId,
        role: AdminRole,
        via: &Via,
        action: &Action,
        proof: &StepUp,
        now_ns: u64,
    ) -> Result<crate::identity::ProofUse, Reject> {
        let u = self.identity.active(user)?;
        if !u.roles.contains(&role) {
            return Err(Reject::RoleRequired);
        }
        match via {
            Via::Session(_) => self
                .identity
                .check_withdraw_caller(&self.keys, user, via, now_ns, false)?,
            Via::ApiKey { .. } => return Err(Reject::SessionInvalid),
        }
        self.identity.check_admin_proof(action, proof, now_ns)
    }

    /// Who halts: an admin with any role but viewer, with a second factor for `action`; or the
    /// system. Returns the name recorded and the proof to commit.
    fn halter(
        &self,
        by: &HaltBy,
        action: impl Fn(UserId) -> Action,
        now_ns: u64,
    ) -> Result<(String, Option<crate::identity::ProofUse>), Reject> {
        match by {
            HaltBy::Admin { user, via, proof } => {
                let u = self.identity.active(*user)?;
                let Some(role) = u.roles.iter().copied().find(|r| *r != AdminRole::Viewer) else {
                    return Err(Reject::RoleRequired);
                };
                let used = self.admin_check(*user, role, via, &action(*user), proof, now_ns)?;
                Ok((format!("admin {}", user.0), Some(used)))
            }
            HaltBy::System(who) => {
                if !crate::admin::text_ok(who) || who.len() > 64 {
                    return Err(Reject::ReasonRequired);
                }
                Ok((who.clone(), None))
            }
        }
    }

    /// Switches deposits or trading of an asset on or off.
    fn set_operation(&mut self, asset: AssetId, operation: Operation, on: bool, events: &mut Vec<Event>) {
        if let Some(x) = self.assets.get_mut(asset.0 as usize) {
            match operation {
                Operation::Deposits => x.switches.deposits = on,
                Operation::Trading => x.switches.trading = on,
            }
            events.push(Event::AssetSwitchesChanged {
                asset,
                switches: x.switches,
            });
        }
    }

    fn halt(
        &mut self,
        asset: Option<AssetId>,
        by: &str,
        reason: &str,
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        match asset {
            None => self.admin.global_halt = Some(format!("{by}: {reason}")),
            Some(a) => {
                let x = self.assets.get_mut(a.0 as usize).ok_or(Reject::AssetNotFound)?;
                if x.switches.withdrawals {
                    x.switches.withdrawals = false;
                    events.push(Event::AssetSwitchesChanged {
                        asset: a,
                        switches: x.switches,
                    });
                }
            }
        }
        events.push(Event::Admin(AdminEvent::Halted {
            asset,
            by: by.to_owned(),
            reason: reason.to_owned(),
        }));
        Ok(())
    }

    /// Replaces the risk policy if it is within bounds and names only known assets.
    fn set_risk_policy(&mut self, p: &RiskPolicy) -> Result<(), Reject> {
        let known = p
            .rules
            .iter()
            .filter_map(|r| r.asset)
            .chain(p.limits.iter().map(|l| l.asset))
            .chain(p.assets.iter().map(|a| a.asset))
            .all(|a| self.asset(a).is_some());
        if !p.valid() || !known {
            return Err(Reject::RiskPolicyInvalid);
        }
        self.risk = p.clone();
        Ok(())
    }

    fn execute(
        &mut self,
        change: &AdminChange,
        proposal: u64,
        by: &str,
        now_ns: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        match change {
            AdminChange::Restitution(plan) => self.restitute(plan, proposal, now_ns, events)?,
            AdminChange::WhitelistAddress {
                user,
                asset,
                address,
                label,
                cooling_ns,
            } => {
                self.identity.user(*user).ok_or(Reject::UserNotFound)?;
                let mut wev = Vec::new();
                let mut cx = WalletCtx {
                    ledger: &mut self.ledger,
                    assets: &self.assets,
                    seq: self.last_seq,
                    now_ns,
                    events: &mut wev,
                    ledger_events: &mut self.ledger_events,
                };
                self.wallet
                    .add_withdrawal_address(&mut cx, *user, *asset, address, label, *cooling_ns)?;
                events.extend(wev.into_iter().map(Event::Wallet));
            }
            AdminChange::SetRiskPolicy(p) => self.set_risk_policy(p)?,
            AdminChange::SetRoles { user, roles } => {
                let mut ev = Vec::new();
                self.identity.set_roles(*user, roles, by, &mut ev)?;
                events.extend(ev.into_iter().map(Event::Identity));
            }
            AdminChange::UnfreezeUser { user } => {
                let mut ev = Vec::new();
                self.identity.unfreeze(*user, by, &mut ev)?;
                events.extend(ev.into_iter().map(Event::Identity));
            }
            AdminChange::ResumeOperation { asset, operation } => {
                if self.asset(*asset).is_none() {
                    return Err(Reject::AssetNotFound);
                }
                self.set_operation(*asset, *operation, true, events);
                events.push(Event::Admin(AdminEvent::OperationResumed {
                    asset: *asset,
                    operation: *operation,
                    by: by.to_owned(),
                }));
            }
            AdminChange::ResumeWithdrawals { asset } => {
                match asset {
                    None => self.admin.global_halt = None,
                    Some(a) => {
                        let x = self.assets.get_mut(a.0 as usize).ok_or(Reject::AssetNotFound)?;
                        x.switches.withdrawals = true;
                        events.push(Event::AssetSwitchesChanged {
                            asset: *a,
                            switches: x.switches,
                        });
                    }
                }
                events.push(Event::Admin(AdminEvent::Resumed {
                    asset: *asset,
                    by: by.to_owned(),
                }));
            }
        }
        Ok(())
    }

    fn admin_command(
        &mut self,
        now_ns: u64,
        command: &Command,
        events: &mut Vec<Event>,
    ) -> Result<Reply, Reject> {
        let mut aev = Vec::new();
        let r = match command {
            Command::ProposeChange {
                by,
                change,
                reason,
                via,
                proof,
            } => {
                let action = Action::ProposeChange {
                    user: *by,
                    change: change.digest(),
                };
                let used = self.admin_check(*by, change.role(), via, &action, proof, now_ns)?;
                if let AdminChange::Restitution(plan) = change {
                    self.check_restitution(plan)?;
                }
                let p = self
                    .admin
                    .propose(change.clone(), *by, reason, now_ns, &mut aev)?;
                self.commit_proof(used, now_ns, events);
                Ok(Reply::Proposal(Box::new(p)))
            }
            Command::ApproveChange { id, by, via, proof } => {
                let p = self.admin.check_approval(*id, *by)?.clone();
                let action = Action::ApproveChange {
                    user: *by,
                    proposal: *id,
                    change: p.change.digest(),
                };
                let used = self.admin_check(*by, p.change.role(), via, &action, proof, now_ns)?;
                // Carried out in full or not at all: a failing change leaves the proposal open.
                let mut ev = Vec::new();
                self.execute(
                    &p.change,
                    p.id,
                    &format!("proposal {} by {} and {}", p.id, p.proposer.0, by.0),
                    now_ns,
                    &mut ev,
                )?;
                events.extend(ev);
                self.admin.mark_executed(*id, *by, now_ns, &mut aev);
                self.commit_proof(used, now_ns, events);
                Ok(Reply::Proposal(Box::new(
                    self.admin.proposal(*id).expect("just executed").clone(),
                )))
            }
            Command::WithdrawChange { id, by } => {
                self.admin.withdraw(*id, *by, now_ns, &mut aev)?;
                Ok(Reply::Done)
            }
            Command::HaltWithdrawals { asset, by, reason } => {
                if !crate::admin::text_ok(reason) {
                    return Err(Reject::ReasonRequired);
                }
                if asset.is_some_and(|a| self.asset(a).is_none()) {
                    return Err(Reject::AssetNotFound);
                }
                let (who, used) = self.halter(by, |user| Action::Halt { user, asset: *asset }, now_ns)?;
                self.halt(*asset, &who, reason, events)?;
                if let Some(u) = used {
                    self.commit_proof(u, now_ns, events);
                }
                Ok(Reply::Done)
            }
            Command::HaltOperation {
                asset,
                operation,
                by,
                reason,
            } => {
                if !crate::admin::text_ok(reason) {
                    return Err(Reject::ReasonRequired);
                }
                if self.asset(*asset).is_none() {
                    return Err(Reject::AssetNotFound);
                }
                let (who, used) = self.halter(
                    by,
                    |user| Action::HaltOperation {
                        user,
                        asset: *asset,
                        operation: *operation,
                    },
                    now_ns,
                )?;
                self.set_operation(*asset, *operation, false, events);
                aev.push(AdminEvent::OperationHalted {
                    asset: *asset,
                    operation: *operation,
                    by: who,
                    reason: reason.clone(),
                });
                if let Some(u) = used {
                    self.commit_proof(u, now_ns, events);
                }
                Ok(Reply::Done)
            }
            Command::OpenIncident {
                kind,
                asset,
                summary,
                txids,
                missing,
                opened_by,
                halt,
            } => {
                if asset.is_some_and(|a| self.asset(a).is_none()) {
                    return Err(Reject::AssetNotFound);
                }
                let shares = match asset {
                    Some(a) => {
                        let (customers, company) = self.funds(*a);
                        crate::admin::split_loss(*missing, customers, company)
                    }
                    None => (*missing, Amount(0)),
                };
                let affected = asset.map_or((Vec::new(), false), |a| self.attribute(a, shares.0));
                let i = self.admin.open_incident(
                    kind, *asset, summary, txids, *missing, shares, affected, opened_by, now_ns, &mut aev,
                )?;
                if *halt {
                    self.halt(*asset, opened_by, &format!("incident {}: {}", i.id, kind), events)?;
                }
                Ok(Reply::Incident(Box::new(i)))
            }
            Command::ResolveIncident {
                id,
                by,
                resolution,
                via,
                proof,
            } => {
                let action = Action::ResolveIncident {
                    user: *by,
                    incident: *id,
                };
                let used = self.admin_check(*by, AdminRole::SecurityAdmin, via, &action, proof, now_ns)?;
                let i = self.admin.resolve_incident(*id, resolution, now_ns, &mut aev)?;
                self.commit_proof(used, now_ns, events);
                Ok(Reply::Incident(Box::new(i)))
            }
            _ => unreachable!("admin_command called with {}", command.name()),
        };
        events.extend(aev.into_iter().map(Event::Admin));
        r
    }

    /// The customers' share of an incident spread over the customers who hold the asset now,
    /// in proportion to their balances (by user id; the parts add up to `share` exactly).
    /// More holders than a plan may pay: none recorded, flagged.
    fn attribute(&self, asset: AssetId, share: Amount) -> (Vec<(UserId, Amount)>, bool) {
        let mut holders: Vec<(UserId, u128)> = self
            .ledger
            .accounts()
            .iter()
            .filter(|a| a.asset == asset)
            .filter_map(|a| match a.owner {
                Owner::Customer(u) => u128::try_from(a.balance())
                    .ok()
                    .filter(|b| *b > 0)
                    .map(|b| (u, b)),
                Owner::System(_) => None,
            })
            .collect();
        if holders.len() > crate::admin::AFFECTED_ACCOUNTS_MAX {
            return (Vec::new(), true);
        }
        holders.sort_unstable();
        let weights: Vec<u128> = holders.iter().map(|h| h.1).collect();
        let parts = crate::admin::split(share.0, &weights);
        let affected = holders
            .iter()
            .zip(parts)
            .filter(|(_, p)| *p > 0)
            .map(|((u, _), p)| (*u, Amount(p)))
            .collect();
        (affected, false)
    }

    /// The restitution plan of an incident as the engine would accept it now: every affected
    /// customer paid their attributed amount, in the incident's asset or in `pay` at its rate
    /// (rounded up per customer), from the insurance fund first, then the treasury.
    pub fn restitution_plan(
        &self,
        incident: u64,
        pay: Option<(AssetId, crate::admin::Rate)>,
    ) -> Result<crate::admin::RestitutionPlan, Reject> {
        let i = self.admin.incident(incident).ok_or(Reject::IncidentNotFound)?;
        let asset = i.asset.ok_or(Reject::RestitutionNotPossible)?;
        let (pay_asset, rate) = match pay {
            Some((a, r)) if a != asset => (a, Some(r)),
            _ => (asset, None),
        };
        let pay_acc = self.asset(pay_asset).ok_or(Reject::AssetNotFound)?;
        let lines = i
            .affected
            .iter()
            .map(|(user, owed)| {
                let pay = match rate {
                    None => Some(*owed),
                    Some(r) => r.convert_up(*owed),
                };
                pay.map(|pay| crate::admin::RestitutionLine {
                    user: *user,
                    owed: *owed,
                    pay,
                })
                .ok_or(Reject::RestitutionPlanMismatch)
            })
            .collect::<Result<Vec<_>, Reject>>()?;
        let mut plan = crate::admin::RestitutionPlan {
            incident,
            pay_asset,
            rate,
            lines,
            from_insurance: Amount(0),
            from_treasury: Amount(0),
        };
        let total = plan.total().ok_or(Reject::RestitutionPlanMismatch)?;
        let insurance = self
            .ledger
            .account(pay_acc.system_account(SystemAccount::InsuranceFund))
            .map_or(0, |a| a.available());
        plan.from_insurance = Amount(total.0.min(insurance));
        plan.from_treasury = Amount(total.0 - plan.from_insurance.0);
        self.check_restitution(&plan)?;
        Ok(plan)
    }

    /// What a restitution plan may be, now: exactly the incident's attribution at the plan's
    /// rate, funded from the insurance fund first and the treasury for the rest, both able to
    /// pay. Returns the incident's asset.
    pub fn check_restitution(&self, plan: &crate::admin::RestitutionPlan) -> Result<AssetId, Reject> {
        let i = self
            .admin
            .incident(plan.incident)
            .filter(|i| i.status == crate::admin::IncidentStatus::Open)
            .ok_or(Reject::IncidentNotFound)?;
        if i.restitution.is_some() {
            return Err(Reject::RestitutionDone);
        }
        let Some(asset) = i.asset else {
            return Err(Reject::RestitutionNotPossible);
        };
        if i.affected.is_empty() || i.affected_over_limit {
            return Err(Reject::RestitutionNotPossible);
        }
        let pay_asset = self.asset(plan.pay_asset).ok_or(Reject::AssetNotFound)?;
        match plan.rate {
            None if plan.pay_asset != asset => return Err(Reject::RestitutionPlanMismatch),
            Some(_) if plan.pay_asset == asset => return Err(Reject::RestitutionPlanMismatch),
            _ => {}
        }
        if plan.lines.len() != i.affected.len() {
            return Err(Reject::RestitutionPlanMismatch);
        }
        for (line, (user, owed)) in plan.lines.iter().zip(&i.affected) {
            let pay = match plan.rate {
                None => Some(*owed),
                Some(r) => r.convert_up(*owed),
            };
            if line.user != *user || line.owed != *owed || Some(line.pay) != pay {
                return Err(Reject::RestitutionPlanMismatch);
            }
        }
        let total = plan.total().ok_or(Reject::RestitutionPlanMismatch)?;
        let available = |which: SystemAccount| {
            self.ledger
                .account(pay_asset.system_account(which))
                .map_or(0, |a| a.available())
        };
        let insurance = total.0.min(available(SystemAccount::InsuranceFund));
        if plan.from_insurance.0 != insurance
            || Some(plan.from_treasury.0) != total.0.checked_sub(insurance)
            || plan.from_treasury.0 > available(SystemAccount::CompanyTreasury)
        {
            return Err(Reject::RestitutionUnfunded);
        }
        Ok(asset)
    }

    /// Carries out an approved restitution plan: one linked chain of transfers (insurance fund,
    /// then treasury, to each customer in turn), all or nothing; the incident records it.
    fn restitute(
        &mut self,
        plan: &crate::admin::RestitutionPlan,
        proposal: u64,
        now_ns: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        self.check_restitution(plan)?;
        let pay = self.asset(plan.pay_asset).ok_or(Reject::AssetNotFound)?;
        let sources = [
            (
                pay.system_account(SystemAccount::InsuranceFund),
                plan.from_insurance.0,
            ),
            (
                pay.system_account(SystemAccount::CompanyTreasury),
                plan.from_treasury.0,
            ),
        ];
        // Accounts first: a customer paid in another asset may hold none of it yet.
        let mut credits = Vec::with_capacity(plan.lines.len());
        for l in &plan.lines {
            let existing = self.ledger.customer_account(l.user, plan.pay_asset);
            let account = self
                .ledger
                .open_account(plan.pay_asset, Owner::Customer(l.user))?;
            if existing.is_none() {
                events.push(Event::AccountOpened {
                    account,
                    user: l.user,
                    asset: plan.pay_asset,
                });
            }
            credits.push(account);
        }
        let mut requests = Vec::with_capacity(plan.lines.len() * 2);
        let mut src = 0usize;
        let mut left = sources[0].1;
        for (l, credit) in plan.lines.iter().zip(&credits) {
            let mut due = l.pay.0;
            while due > 0 {
                while left == 0 {
                    src += 1;
                    left = sources.get(src).ok_or(Reject::RestitutionUnfunded)?.1;
                }
                let part = due.min(left);
                requests.push(TransferRequest {
                    id: restitution_transfer_id(proposal, requests.len() as u64),
                    kind: TransferKind::Post {
                        debit: sources[src].0,
                        credit: *credit,
                        amount: Amount(part),
                    },
                    linked: true,
                    code: TRANSFER_CODE_RESTITUTION,
                    user_data: u128::from(plan.incident),
                });
                due -= part;
                left -= part;
            }
        }
        if let Some(last) = requests.last_mut() {
            last.linked = false;
        }
        let results = self
            .ledger
            .create_transfers(self.last_seq, now_ns, &requests, &mut self.ledger_events);
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            return Err(e);
        }
        let mut aev = Vec::new();
        for l in &plan.lines {
            aev.push(AdminEvent::RestitutionPaid {
                incident: plan.incident,
                proposal,
                user: l.user,
                asset: plan.pay_asset,
                amount: l.pay,
            });
        }
        self.admin.mark_restituted(plan.incident, proposal, &mut aev);
        events.extend(aev.into_iter().map(Event::Admin));
        Ok(())
    }

    /// Customers' and the company's funds of an asset (customer balances; fee revenue,
    /// insurance fund and treasury).
    pub fn funds(&self, asset: AssetId) -> (u128, u128) {
        let mut customers = 0u128;
        let mut company = 0u128;
        for a in self.ledger.accounts().iter().filter(|a| a.asset == asset) {
            let b = u128::try_from(a.balance()).unwrap_or(0);
            match a.owner {
                Owner::Customer(_) => customers = customers.saturating_add(b),
                Owner::System(s) if s.is_company_funds() => company = company.saturating_add(b),
                Owner::System(_) => {}
            }
        }
        (customers, company)
    }

    fn commit_proof(&mut self, p: crate::identity::ProofUse, now_ns: u64, events: &mut Vec<Event>) {
        let mut ev = Vec::new();
        self.identity.commit_proof(p, now_ns, &mut ev);
        events.extend(ev.into_iter().map(Event::Identity));
    }

    fn wallet_command(
        &mut self,
        seq: u64,
        now_ns: u64,
        command: &Command,
        events: &mut Vec<Event>,
    ) -> Result<Reply, Reject> {
        self.wallet_events.clear();
        self.identity_events.clear();
        let mut cx = WalletCtx {
            ledger: &mut self.ledger,
            assets: &self.assets,
            seq,
            now_ns,
            events: &mut self.wallet_events,
            ledger_events: &mut self.ledger_events,
        };
        let w = &mut self.wallet;
        let mut halt: Option<AssetId> = None;
        let mut incident: Option<RevertIncident> = None;
        let reply = match command {
            Command::AssignDepositAddress { user, asset, address } => w
                .assign_deposit_address(&mut cx, *user, *asset, address)
                .map(|()| Reply::DepositAddress {
                    address: address.clone(),
                }),
            Command::DepositSeen {
                asset,
                address,
                txid,
                vout,
                amount,
            } => w
                .deposit_seen(&mut cx, *asset, address, txid, *vout, *amount)
                .map(Reply::Deposit),
            Command::DepositConfirmed { deposit } => w
                .deposit_confirmed(&mut cx, *deposit)
                .map(|()| Reply::Deposit(*deposit)),
            Command::DepositDropped { deposit } => w
                .deposit_dropped(&mut cx, *deposit)
                .map(|()| Reply::Deposit(*deposit)),
            Command::DepositReversed { deposit } => w
                .deposit_reversed(&mut cx, *deposit)
                .map(|()| Reply::Deposit(*deposit)),
            Command::WithdrawalSigning { id } => {
                let cap = w
                    .withdrawal(*id)
                    .and_then(|x| self.risk.asset(x.asset))
                    .map(|a| a.hot_outflow_per_hour);
                w.withdrawal_signing(&mut cx, *id, cap).map(Reply::Withdrawal)
            }
            Command::ReviewWithdrawal {
                id,
                reviewer,
                approve,
                reason,
                via,
                proof,
            } => {
                let u = self.identity.active(*reviewer)?;
                if !u
                    .roles
                    .iter()
                    .any(|r| matches!(r, AdminRole::Risk | AdminRole::Treasury))
                {
                    return Err(Reject::RoleRequired);
                }
                self.identity
                    .check_withdraw_caller(&self.keys, *reviewer, via, now_ns, false)?;
                let action = w
                    .withdrawal(*id)
                    .ok_or(Reject::WithdrawalNotFound)?
                    .review_action(*reviewer, *approve);
                let used = self.identity.check_admin_proof(&action, proof, now_ns)?;
                let r = w
                    .review_withdrawal(&mut cx, *id, *reviewer, *approve, reason, proof)
                    .map(Reply::Withdrawal);
                if r.is_ok() {
                    self.identity
                        .commit_proof(used, now_ns, &mut self.identity_events);
                }
                r
            }
            Command::RecordCustodyMove {
                asset,
                kind,
                txid,
                amount,
                network_fee,
            } => w
                .custody_move(&mut cx, *asset, *kind, txid, None, *amount, *network_fee)
                .map(Reply::CustodyMove),
            Command::RecordCustodyTx {
                asset,
                kind,
                txid,
                raw_tx,
                amount,
                network_fee,
            } => w
                .custody_move(&mut cx, *asset, *kind, txid, Some(raw_tx), *amount, *network_fee)
                .map(Reply::CustodyMove),
            Command::RecordGas {
                asset,
                txid,
                for_asset,
                amount,
            } => w
                .record_gas(&mut cx, *asset, txid, *for_asset, *amount)
                .map(|()| Reply::Done),
            Command::CompanyDeposit {
                asset,
                txid,
                vout,
                amount,
            } => w
                .company_deposit(&mut cx, *asset, txid, *vout, *amount)
                .map(Reply::CompanyDeposit),
            Command::RecordWithdrawalTx {
                id,
                txid,
                raw_tx,
                network_fee,
            } => w
                .record_withdrawal_tx(&mut cx, *id, txid, raw_tx, *network_fee)
                .map(Reply::Withdrawal),
            Command::RevertWithdrawal { id, reason } => {
                if self.admin.incidents.len() >= crate::admin::INCIDENTS_MAX {
                    return Err(Reject::LimitExceeded);
                }
                let r = w.revert_withdrawal(&mut cx, *id, reason);
                if let Ok((x, true)) = &r {
                    incident = Some(reverted_withdrawal_incident(x, &self.assets));
                }
                r.map(|(x, _)| Reply::Withdrawal(x))
            }
            Command::RevertCustodyMove { asset, txid, reason } => {
                if self.admin.incidents.len() >= crate::admin::INCIDENTS_MAX {
                    return Err(Reject::LimitExceeded);
                }
                let r = w.revert_custody_move(&mut cx, *asset, txid, reason);
                if let Ok((m, true)) = &r {
                    incident = Some(reverted_move_incident(m, &self.assets));
                }
                r.map(|(m, _)| Reply::CustodyMove(m))
            }
            Command::SetWithdrawalFee { asset, fee } => {
                w.set_withdrawal_fee(&mut cx, *asset, *fee).map(|()| Reply::Done)
            }
            Command::SetTotpBudget { asset, budget } => {
                w.set_totp_budget(&mut cx, *asset, *budget).map(|()| Reply::Done)
            }
            Command::AddWithdrawalAddress {
                user,
                asset,
                address,
                label,
                cooling_ns,
                by,
            } => {
                // Once admins prove with passkeys, nothing whitelists an address that is usable
                // at once, or without the user's own proof, unless two admins approved it.
                let hardened = self.identity.relying_party().is_some();
                if hardened && (*cooling_ns == 0 || matches!(by, AddressAuth::Operator { .. })) {
                    return Err(Reject::AddressQuorumRequired);
                }
                let used = match by {
                    AddressAuth::User { via, proof } => {
                        self.identity
                            .check_withdraw_caller(&self.keys, *user, via, now_ns, false)?;
                        let action = Action::AddWithdrawalAddress {
                            user: *user,
                            asset: *asset,
                            address: address.clone(),
                            label: label.clone(),
                        };
                        Some(self.identity.check_proof(&action, proof, now_ns)?)
                    }
                    AddressAuth::Operator { name, reason } => {
                        if name.trim().is_empty() || reason.trim().is_empty() {
                            return Err(Reject::ReasonRequired);
                        }
                        None
                    }
                };
                let r = w
                    .add_withdrawal_address(&mut cx, *user, *asset, address, label, *cooling_ns)
                    .map(|a| match by {
                        AddressAuth::User { proof, .. } => {
                            w.keep_address_approval(a.id, proof.clone()).unwrap_or(a)
                        }
                        AddressAuth::Operator { .. } => a,
                    })
                    .map(Reply::WithdrawalAddress);
                if let (Ok(_), Some(p)) = (&r, used) {
                    self.identity.commit_proof(p, now_ns, &mut self.identity_events);
                }
                r
            }
            Command::RemoveWithdrawalAddress { user, id } => w
                .remove_withdrawal_address(&mut cx, *user, *id)
                .map(|()| Reply::Done),
            Command::RequestWithdrawal {
                user,
                address,
                amount,
                client_id,
                via,
                proof,
            } => {
                // A retry of a request already taken answers with the original.
                let repeat = w.withdrawal_retry(*user, *client_id, *address, *amount).is_some();
                let used = if repeat {
                    None
                } else {
                    self.identity
                        .check_withdraw_caller(&self.keys, *user, via, now_ns, true)?;
                    let action = w.withdrawal_action(*user, *address, *amount, *client_id)?;
                    Some(self.identity.check_proof(&action, proof, now_ns)?)
                };
                let risk = if repeat {
                    RequestRisk::default()
                } else {
                    let (asset, destination) = w
                        .withdrawal_address(*address)
                        .map(|a| (a.asset, a.address.clone()))
                        .ok_or(Reject::WithdrawalAddressNotFound)?;
                    let mut facts = risk_facts(
                        &self.identity,
                        &self.keys,
                        cx.ledger,
                        w,
                        *user,
                        asset,
                        *amount,
                        via,
                        now_ns,
                    );
                    let tier = self.trading.tier(*user);
                    facts.tier = tier;
                    RequestRisk {
                        verdict: self.risk.evaluate(&facts, *user, &destination, now_ns, &*w),
                        limit: self.risk.limit(tier, asset).cloned(),
                        dual_approval_from: self.risk.asset(asset).map(|a| a.dual_approval_from),
                    }
                };
                let r = w
                    .request_withdrawal(&mut cx, *user, *address, *amount, *client_id, proof, &risk)
                    .map(Reply::Withdrawal);
                if let (Ok(_), Some(p)) = (&r, used) {
                    self.identity.commit_proof(p, now_ns, &mut self.identity_events);
                }
                if let (Ok(Reply::Withdrawal(x)), Some(v)) = (&r, &risk.verdict) {
                    if v.decision == crate::risk::Decision::HaltAsset {
                        halt = Some(x.asset);
                    }
                }
                r
            }
            Command::CancelWithdrawal { user, id } => {
                w.cancel_withdrawal(&mut cx, *user, *id).map(Reply::Withdrawal)
            }
            Command::FailWithdrawal { id, reason } => {
                w.fail_withdrawal(&mut cx, *id, reason).map(Reply::Withdrawal)
            }
            Command::WithdrawalBroadcast {
                id,
                txid,
                network_fee,
            } => w
                .withdrawal_broadcast(&mut cx, *id, txid, *network_fee)
                .map(Reply::Withdrawal),
            Command::WithdrawalConfirmed { id } => {
                w.withdrawal_confirmed(&mut cx, *id).map(Reply::Withdrawal)
            }
            _ => unreachable!("wallet_command called with {}", command.name()),
        };
        // A `halt_asset` rule fired: the asset's withdrawals stop until operators resume them.
        if let Some(asset) = halt {
            if let Some(a) = self.assets.get_mut(asset.0 as usize) {
                if a.switches.withdrawals {
                    a.switches.withdrawals = false;
                    events.push(Event::AssetSwitchesChanged {
                        asset,
                        switches: a.switches,
                    });
                }
            }
        }
        events.extend(self.identity_events.drain(..).map(Event::Identity));
        events.extend(self.ledger_events.drain(..).map(Event::Ledger));
        events.extend(self.wallet_events.drain(..).map(Event::Wallet));
        if let Some(i) = incident {
            self.open_revert_incident(i, now_ns, events);
        }
        reply
    }

    /// The incident of a reverted withdrawal or custody move, in the command that reverted it
    /// (capacity was checked before): an alert operators must resolve.
    fn open_revert_incident(&mut self, i: RevertIncident, now_ns: u64, events: &mut Vec<Event>) {
        let (customers, company) = self.funds(i.asset);
        let shares = crate::admin::split_loss(i.missing, customers, company);
        let affected = self.attribute(i.asset, shares.0);
        let mut aev = Vec::new();
        self.admin
            .open_incident(
                i.kind,
                Some(i.asset),
                &i.summary,
                &i.txids,
                i.missing,
                shares,
                affected,
                BY_CUSTODY,
                now_ns,
                &mut aev,
            )
            .expect("a revert incident is well formed and capacity was checked");
        events.extend(aev.into_iter().map(Event::Admin));
    }

    fn define_asset(
        &mut self,
        code: &AssetCode,
        decimals: u8,
        events: &mut Vec<Event>,
    ) -> Result<Reply, Reject> {
        if decimals > DECIMALS_MAX {
            return Err(Reject::AssetDecimalsInvalid);
        }
        if let Some(&id) = self.asset_by_code.get(code) {
            return if self.assets[id.0 as usize].decimals == decimals {
                Ok(Reply::AssetDefined {
                    asset: id,
                    created: false,
                })
            } else {
                Err(Reject::AssetExists)
            };
        }
        if self.assets.len() >= ASSETS_MAX {
            return Err(Reject::AssetLimit);
        }
        if self.ledger.accounts().len() + SystemAccount::ALL.len() > crate::ledger::ACCOUNTS_MAX {
            return Err(Reject::AccountLimit);
        }
        let id = AssetId(self.assets.len() as u32);
        let mut system = [AccountId(0); SystemAccount::COUNT];
        for (slot, which) in system.iter_mut().zip(SystemAccount::ALL) {
            *slot = self.ledger.open_account(id, Owner::System(which))?;
        }
        self.assets.push(Asset {
            code: code.clone(),
            decimals,
            switches: AssetSwitches::ALL_ON,
            system,
        });
        self.asset_by_code.insert(code.clone(), id);
        events.push(Event::AssetDefined {
            asset: id,
            code: code.clone(),
            decimals,
        });
        Ok(Reply::AssetDefined {
            asset: id,
            created: true,
        })
    }

    /// Checks every invariant by walking the whole state. On failure the engine halts: it
    /// refuses every later command (it must not go on trading on corrupt state).
    pub fn audit(&mut self) -> Result<AuditReport, InvariantViolation> {
        match self.check() {
            Ok(r) => Ok(r),
            Err(v) => {
                self.halted = Some(v.0.clone());
                Err(v)
            }
        }
    }

    /// The same checks as [`Engine::audit`], without halting (for read-only callers).
    pub fn check(&self) -> Result<AuditReport, InvariantViolation> {
        for (i, a) in self.assets.iter().enumerate() {
            if self.asset_by_code.get(&a.code) != Some(&AssetId(i as u32)) {
                return Err(InvariantViolation(format!("asset index broken at {i}")));
            }
            for (which, acct) in SystemAccount::ALL.iter().zip(a.system) {
                let ok = self
                    .ledger
                    .account(acct)
                    .is_some_and(|x| x.asset == AssetId(i as u32) && x.owner == Owner::System(*which));
                if !ok {
                    return Err(InvariantViolation(format!(
                        "asset {} system account {} is wrong",
                        a.code,
                        which.name()
                    )));
                }
            }
        }
        self.trading.check(&self.ledger)?;
        self.wallet.check(&self.ledger)?;
        self.identity.check()?;
        let ledger = self.ledger.audit(&self.trading.holds())?;
        Ok(AuditReport {
            last_seq: self.last_seq,
            assets: self.assets.len(),
            ledger,
        })
    }

    pub fn state(&self) -> EngineState {
        EngineState {
            format_version: STATE_FORMAT_VERSION,
            last_seq: self.last_seq,
            last_timestamp_ns: self.last_timestamp_ns,
            halted: self.halted.clone(),
            assets: self.assets.clone(),
            ledger: self.ledger.state(),
            trading: self.trading.state(),
            wallet: self.wallet.state(),
            api_keys: self.keys.state(),
            identity: self.identity.state(),
            risk: self.risk.clone(),
            admin: self.admin.clone(),
        }
    }

    /// Serialized canonical state (a snapshot's payload).
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(&self.state()).expect("engine state always serializes")
    }

    /// BLAKE3 of the canonical state. Two engines with the same hash hold the same state.
    pub fn state_hash(&self) -> [u8; 32] {
        *blake3::hash(&self.snapshot_bytes()).as_bytes()
    }

    pub fn from_state(s: EngineState) -> Result<Engine, RestoreError> {
        if s.format_version != STATE_FORMAT_VERSION {
            return Err(RestoreError::Version(s.format_version));
        }
        let asset_by_code = s
            .assets
            .iter()
            .enumerate()
            .map(|(i, a)| (a.code.clone(), AssetId(i as u32)))
            .collect();
        let engine = Engine {
            assets: s.assets,
            asset_by_code,
            ledger: Ledger::from_state(s.ledger),
            trading: Trading::from_state(s.trading),
            wallet: Wallet::from_state(s.wallet),
            keys: Keys::from_state(s.api_keys),
            identity: Identity::from_state(s.identity),
            risk: s.risk,
            admin: s.admin,
            last_seq: s.last_seq,
            last_timestamp_ns: s.last_timestamp_ns,
            halted: s.halted,
            ledger_events: Vec::new(),
            wallet_events: Vec::new(),
            identity_events: Vec::new(),
        };
        engine.check().map_err(RestoreError::Invariant)?;
        Ok(engine)
    }

    pub fn from_snapshot_bytes(bytes: &[u8]) -> Result<Engine, RestoreError> {
        let s: EngineState = postcard::from_bytes(bytes).map_err(|e| RestoreError::Decode(e.to_string()))?;
        Engine::from_state(s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("snapshot format version {0} is not supported")]
    Version(u32),
    #[error("snapshot does not decode: {0}")]
    Decode(String),
    #[error("snapshot state fails the audit: {0}")]
    Invariant(InvariantViolation),
}

/// An incident a revert opens.
struct RevertIncident {
    kind: &'static str,
    asset: AssetId,
    summary: String,
    txids: Vec<String>,
    missing: Amount,
}

fn asset_code(assets: &[Asset], asset: AssetId) -> String {
    assets
        .get(asset.0 as usize)
        .map_or_else(|| format!("asset {}", asset.0), |a| a.code.as_str().to_owned())
}

fn reverted_withdrawal_incident(w: &Withdrawal, assets: &[Asset]) -> RevertIncident {
    let summary = format!(
        "withdrawal {} of user {} ({} {} minor units to {}) left the chain after it was recorded: \
         reverted, the customer credited back amount and fee; {} from suspense. Reason: {}",
        w.id.0,
        w.user.0,
        w.amount.0,
        asset_code(assets, w.asset),
        w.address,
        w.shortfall.0,
        w.reason.as_deref().unwrap_or("-"),
    );
    RevertIncident {
        kind: INCIDENT_WITHDRAWAL_REVERTED,
        asset: w.asset,
        summary: incident_text(summary),
        txids: w.txid.iter().cloned().collect(),
        missing: w.shortfall,
    }
}

fn reverted_move_incident(m: &CustodyMove, assets: &[Asset]) -> RevertIncident {
    let summary = format!(
        "{} {} of {} {} minor units left the chain after it was recorded: reverted; {} not moved \
         back (already taken by an earlier reversal). Reason: {}",
        m.kind.name(),
        m.id,
        m.amount.0,
        asset_code(assets, m.asset),
        m.shortfall.0,
        m.reason.as_deref().unwrap_or("-"),
    );
    RevertIncident {
        kind: INCIDENT_CUSTODY_MOVE_REVERTED,
        asset: m.asset,
        summary: incident_text(summary),
        txids: vec![m.txid.clone()],
        missing: Amount(0),
    }
}

/// Incident text as the admin state takes it: printable, bounded.
fn incident_text(s: String) -> String {
    let mut out = String::new();
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > 1000 {
            break;
        }
        out.push(c);
    }
    out
}

/// The facts of a withdrawal request the risk rules read, from the engine's own state.
#[allow(clippy::too_many_arguments)]
fn risk_facts(
    identity: &Identity,
    keys: &Keys,
    ledger: &Ledger,
    wallet: &Wallet,
    user: UserId,
    asset: AssetId,
    amount: Amount,
    via: &Via,
    now_ns: u64,
) -> crate::risk::Facts {
    let holding = ledger
        .customer_account(user, asset)
        .and_then(|a| ledger.account(a))
        .map_or(0, |a| a.available());
    let credential_created = match via {
        Via::Session(h) => identity.session(h, now_ns).map(|s| s.created_ns),
        Via::ApiKey { id, .. } => keys.get(id).map(|k| k.created_ns),
    };
    let change_ns = identity.user(user).and_then(|u| {
        u.security_locked_until_ns
            .checked_sub(identity.policy().security_lock_ns)
            .filter(|t| *t > 0 && u.security_locked_until_ns > 0)
    });
    crate::risk::Facts {
        asset,
        amount,
        holding,
        credential_age_ns: now_ns.saturating_sub(credential_created.unwrap_or(0)),
        since_security_change_ns: change_ns.map(|t| now_ns.saturating_sub(t)),
        withdrew_since_change: change_ns.is_some_and(|t| {
            wallet
                .withdrawals()
                .iter()
                .rev()
                .take_while(|w| w.requested_ns >= t)
                .any(|w| w.user == user)
        }),
        tier: 0,
    }
}
