//! Stable reject codes. A command that cannot be carried out is answered with one of these and
//! changes nothing. Codes are grouped by subsystem and never renumbered; the string form is what
//! clients see. Within a subsystem, checks run in the order the codes are listed.

use serde::{Deserialize, Serialize};

macro_rules! rejects {
    ($( $(#[$m:meta])* $name:ident = $num:literal, $code:literal, $msg:literal; )*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, thiserror::Error)]
        #[non_exhaustive]
        pub enum Reject {
            $( $(#[$m])* #[error($msg)] $name, )*
        }
        impl Reject {
            /// Every code, in numeric order.
            pub const ALL: &'static [Reject] = &[$(Reject::$name,)*];
            /// The stable string code clients see, e.g. `LEDGER_INSUFFICIENT_FUNDS`.
            pub fn code(self) -> &'static str {
                match self { $(Reject::$name => $code,)* }
            }
            /// The stable numeric code (subsystem × 100 + position).
            pub fn number(self) -> u16 {
                match self { $(Reject::$name => $num,)* }
            }
        }
    };
}

rejects! {
    // 1xx engine
    /// The engine stopped after an invariant check failed; nothing is applied until an operator
    /// has investigated and restarted it.
    EngineHalted = 101, "ENGINE_HALTED", "the engine is halted after an integrity failure";
    EngineOverloaded = 102, "ENGINE_OVERLOADED", "the engine is busy; retry later";
    EngineStopping = 103, "ENGINE_STOPPING", "the engine is shutting down";
    LimitExceeded = 104, "LIMIT_EXCEEDED", "the command exceeds a size limit";

    // 2xx assets and accounts
    AssetExists = 201, "ASSET_EXISTS", "an asset with this code already exists with other properties";
    AssetNotFound = 202, "ASSET_NOT_FOUND", "no such asset";
    AssetDecimalsInvalid = 203, "ASSET_DECIMALS_INVALID", "asset decimals must be between 0 and 30";
    AssetLimit = 204, "ASSET_LIMIT", "too many assets";
    AccountNotFound = 205, "ACCOUNT_NOT_FOUND", "no such account";
    AccountLimit = 206, "ACCOUNT_LIMIT", "too many accounts";

    // 3xx ledger transfers, in the order the checks run
    TransferIdZero = 301, "TRANSFER_ID_ZERO", "transfer id must not be zero";
    TransferExistsWithDifferentFields = 302, "TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS", "a different transfer with this id already exists";
    LinkedChainOpen = 303, "LINKED_CHAIN_OPEN", "the last transfer of a batch must not be linked to a next one";
    LinkedTransferFailed = 304, "LINKED_TRANSFER_FAILED", "another transfer of the same linked chain failed";
    DebitAccountNotFound = 305, "DEBIT_ACCOUNT_NOT_FOUND", "the debit account does not exist";
    CreditAccountNotFound = 306, "CREDIT_ACCOUNT_NOT_FOUND", "the credit account does not exist";
    SameAccount = 307, "ACCOUNTS_MUST_BE_DIFFERENT", "debit and credit account must differ";
    AssetMismatch = 308, "ASSET_MISMATCH", "debit and credit account hold different assets";
    AmountZero = 309, "AMOUNT_ZERO", "amount must be greater than zero";
    PendingNotFound = 310, "PENDING_TRANSFER_NOT_FOUND", "no pending transfer with this id";
    PendingAlreadyPosted = 311, "PENDING_TRANSFER_ALREADY_POSTED", "the pending transfer was already posted";
    PendingAlreadyVoided = 312, "PENDING_TRANSFER_ALREADY_VOIDED", "the pending transfer was already voided";
    PendingExpired = 313, "PENDING_TRANSFER_EXPIRED", "the pending transfer expired";
    PostExceedsPending = 314, "POST_AMOUNT_EXCEEDS_PENDING", "cannot post more than the pending amount";
    ReversalTargetNotFound = 315, "REVERSAL_TARGET_NOT_FOUND", "no posted transfer with this id to reverse";
    ReversalTargetInvalid = 316, "REVERSAL_TARGET_INVALID", "only posted transfers can be reversed";
    AlreadyReversed = 317, "ALREADY_REVERSED", "the transfer was already reversed";
    InsufficientFunds = 318, "INSUFFICIENT_FUNDS", "the debit account has insufficient available funds";
    CustodyExceeded = 319, "CUSTODY_EXCEEDED", "the credit would take a custody account below zero";
    AmountOverflow = 320, "AMOUNT_OVERFLOW", "the amount overflows an account balance";
    ExpiryOverflow = 321, "EXPIRY_OVERFLOW", "the pending timeout is too large";
    TransferIdReserved = 322, "TRANSFER_ID_RESERVED", "transfer ids from 2^127 up are reserved for the engine";

    // 4xx markets
    MarketSpecInvalid = 401, "MARKET_SPEC_INVALID", "the market specification is inconsistent (tick, lot, limits, band or fees)";
    MarketExists = 402, "MARKET_EXISTS", "a market with this symbol already exists with another specification";
    MarketNotFound = 403, "MARKET_NOT_FOUND", "no such market";
    MarketLimit = 404, "MARKET_LIMIT", "too many markets";
    ReferencePriceInvalid = 405, "REFERENCE_PRICE_INVALID", "a reference price must be greater than zero and on tick";
    TradeNotFound = 406, "TRADE_NOT_FOUND", "no such trade (or too old to bust)";
    TradeAlreadyBusted = 407, "TRADE_ALREADY_BUSTED", "the trade was already busted";
    ReasonRequired = 408, "REASON_REQUIRED", "an operator action needs who asked and why";

    // 5xx orders, in the order the pre-trade checks run
    MarketHalted = 501, "MARKET_HALTED", "the market is halted";
    MarketCancelOnly = 502, "MARKET_CANCEL_ONLY", "the market accepts only cancels";
    MarketPostOnly = 503, "MARKET_POST_ONLY", "the market accepts only post-only orders";
    AssetTradingDisabled = 504, "ASSET_TRADING_DISABLED", "trading of one of the market's assets is switched off";
    OrderTypeDisabled = 505, "ORDER_TYPE_DISABLED", "this order type is switched off on this market";
    DuplicateClientOrderId = 506, "DUPLICATE_CLIENT_ORDER_ID", "this client order id was already used by the account";
    OrderSpecInvalid = 507, "ORDER_SPEC_INVALID", "the order combines fields that do not go together";
    PriceZero = 508, "PRICE_ZERO", "price must be greater than zero";
    PriceOffTick = 509, "PRICE_OFF_TICK", "price is not a multiple of the market's tick";
    QtyZero = 510, "QTY_ZERO", "quantity must be greater than zero";
    QtyOffStep = 511, "QTY_OFF_STEP", "quantity is not a multiple of the market's step";
    QtyBelowMin = 512, "QTY_BELOW_MIN", "quantity is below the market's minimum";
    QtyAboveMax = 513, "QTY_ABOVE_MAX", "quantity is above the market's maximum";
    NotionalOverflow = 514, "NOTIONAL_OVERFLOW", "price times quantity overflows";
    NotionalBelowMin = 515, "NOTIONAL_BELOW_MIN", "price times quantity is below the market's minimum";
    NotionalAboveMax = 516, "NOTIONAL_ABOVE_MAX", "price times quantity is above the market's maximum";
    PriceOutsideBand = 517, "PRICE_OUTSIDE_BAND", "price is outside the band around the reference price";
    ReferenceStale = 518, "REFERENCE_STALE", "the reference price is too old for market orders";
    FundsInsufficient = 519, "FUNDS_INSUFFICIENT", "insufficient available funds (balance less holds for open orders and pending withdrawals)";
    TooManyOpenOrders = 520, "TOO_MANY_OPEN_ORDERS", "the account has too many open orders on this market";
    OrderNotFound = 521, "ORDER_NOT_FOUND", "no such open order";
    StopInvalid = 522, "STOP_INVALID", "a stop loss must be a sell and a stop entry a buy, with a stop price greater than zero and on tick";
    ExpiryInvalid = 523, "EXPIRY_INVALID", "an expiry must be in the future and only on a limit order that rests (GTC or post-only)";
    StopLimit = 524, "STOP_LIMIT", "the market holds as many untriggered stop orders as it may";

    // 6xx wallet: deposits, addresses, withdrawals
    DepositsDisabled = 601, "DEPOSITS_DISABLED", "deposits of this asset are switched off";
    WithdrawalsDisabled = 602, "WITHDRAWALS_DISABLED", "withdrawals of this asset are switched off";
    AddressInvalid = 603, "ADDRESS_INVALID", "the address is not valid for this asset";
    AddressTaken = 604, "ADDRESS_TAKEN", "the deposit address belongs to another account";
    AddressUnknown = 605, "ADDRESS_UNKNOWN", "no account owns this deposit address";
    TxidInvalid = 606, "TXID_INVALID", "the transaction id is not valid";
    DepositConflict = 607, "DEPOSIT_CONFLICT", "this output was recorded with another amount or address";
    DepositNotFound = 608, "DEPOSIT_NOT_FOUND", "no such deposit";
    DepositStateInvalid = 609, "DEPOSIT_STATE_INVALID", "the deposit is not in a state that allows this";
    LabelInvalid = 610, "LABEL_INVALID", "the label is too long or has control characters";
    WithdrawalAddressNotFound = 611, "WITHDRAWAL_ADDRESS_NOT_FOUND", "no such whitelisted withdrawal address";
    WithdrawalAddressCooling = 612, "WITHDRAWAL_ADDRESS_COOLING", "the withdrawal address is still in its cooling period";
    DuplicateClientWithdrawalId = 613, "DUPLICATE_CLIENT_WITHDRAWAL_ID", "this client withdrawal id was already used for another request";
    WithdrawalNotFound = 614, "WITHDRAWAL_NOT_FOUND", "no such withdrawal";
    WithdrawalStateInvalid = 615, "WITHDRAWAL_STATE_INVALID", "the withdrawal is not in a state that allows this";
    WithdrawalLimitExceeded = 616, "WITHDRAWAL_LIMIT_EXCEEDED", "this withdrawal would exceed the account's 24-hour or 30-day limit";
    HotOutflowCapReached = 617, "HOT_OUTFLOW_CAP_REACHED", "the platform's hourly hot-wallet outflow cap for this asset is reached; it waits";
    WithdrawalNotReady = 618, "WITHDRAWAL_NOT_READY", "the withdrawal waits (a delay, or review) and cannot be signed yet";
    RiskPolicyInvalid = 619, "RISK_POLICY_INVALID", "the risk policy is out of bounds";
    ReviewerIsRequester = 620, "REVIEWER_IS_REQUESTER", "the requester of a withdrawal never reviews it";
    AlreadyReviewed = 621, "ALREADY_REVIEWED", "this reviewer already approved this withdrawal";
    RoleRequired = 622, "ROLE_REQUIRED", "this action needs an admin role the caller does not have";
    ProposalNotFound = 623, "PROPOSAL_NOT_FOUND", "no such proposal";
    ProposalNotOpen = 624, "PROPOSAL_NOT_OPEN", "the proposal was already carried out or withdrawn";
    OwnProposal = 625, "OWN_PROPOSAL", "nobody approves their own proposal: a second admin must";
    IncidentNotFound = 626, "INCIDENT_NOT_FOUND", "no such open incident";
    RawTxInvalid = 627, "RAW_TX_INVALID", "the signed transaction is not lowercase hex of a sane length";
    WithdrawalTxConflict = 628, "WITHDRAWAL_TX_CONFLICT", "another transaction is already recorded for this withdrawal";
    CustodyMoveNotFound = 629, "CUSTODY_MOVE_NOT_FOUND", "no custody move with this transaction";
    RolesBootstrapClosed = 640, "ROLES_BOOTSTRAP_CLOSED", "two security admins exist: roles now change only by a proposal a second admin approves";
    AddressQuorumRequired = 641, "ADDRESS_QUORUM_REQUIRED", "an address whitelisted by an operator, or without a cooling period, needs a proposal a second admin approves";
    RestitutionNotPossible = 642, "RESTITUTION_NOT_POSSIBLE", "this incident has no asset, no customer share attributed to accounts, or more affected accounts than a plan may pay";
    RestitutionPlanMismatch = 643, "RESTITUTION_PLAN_MISMATCH", "the plan does not pay exactly the incident's affected accounts their attributed amounts at its rate";
    RestitutionUnfunded = 644, "RESTITUTION_UNFUNDED", "the plan's funding is not the insurance fund first and the treasury for the rest, or they cannot pay it now";
    RestitutionDone = 645, "RESTITUTION_DONE", "a restitution plan was already executed for this incident";
    GasConflict = 646, "GAS_CONFLICT", "gas was already booked for this transaction with another amount, asset or purpose";

    // 7xx API keys
    ApiKeyInvalid = 701, "API_KEY_INVALID", "the API key id or label is malformed";
    ApiKeyExists = 702, "API_KEY_EXISTS", "an API key with this id already exists";
    ApiKeyNotFound = 703, "API_KEY_NOT_FOUND", "no such API key";
    ApiKeyScopeMissing = 704, "API_KEY_SCOPE_MISSING", "this API key lacks the scope for this request";
    ApiKeyIpAllowlistRequired = 705, "API_KEY_IP_ALLOWLIST_REQUIRED", "a key with the withdraw scope needs an IP allowlist";
    ApiKeyIpNotAllowed = 706, "API_KEY_IP_NOT_ALLOWED", "this API key may not be used from this address";
    ApiKeyExpired = 707, "API_KEY_EXPIRED", "the API key has expired";

    // 8xx identity and second factors
    UserNotFound = 801, "USER_NOT_FOUND", "no such user";
    EmailInvalid = 802, "EMAIL_INVALID", "the email address is not valid";
    EmailTaken = 803, "EMAIL_TAKEN", "an account with this email address exists";
    PasswordHashInvalid = 804, "PASSWORD_HASH_INVALID", "the password hash is not an argon2id PHC string";
    CredentialsInvalid = 805, "CREDENTIALS_INVALID", "wrong email or password";
    AccountDisabled = 806, "ACCOUNT_DISABLED", "the account is disabled";
    AccountFrozen = 807, "ACCOUNT_FROZEN", "the account is frozen until reviewed; contact support";
    SessionInvalid = 808, "SESSION_INVALID", "the session is unknown, ended or expired";
    SessionExpiryInvalid = 809, "SESSION_EXPIRY_INVALID", "the expiry is in the past or too far ahead";
    SecondFactorRequired = 810, "SECOND_FACTOR_REQUIRED", "this session has not completed its second factor";
    StepUpRequired = 811, "STEP_UP_REQUIRED", "this action needs a fresh second-factor proof";
    StepUpActionMismatch = 812, "STEP_UP_ACTION_MISMATCH", "the second-factor proof was made for a different action";
    StepUpExpired = 813, "STEP_UP_EXPIRED", "the second-factor proof is too old (or from the future)";
    StepUpReplayed = 814, "STEP_UP_REPLAYED", "the second-factor proof (code, challenge or counter) was already used";
    StepUpInvalid = 815, "STEP_UP_INVALID", "the second-factor proof is malformed or does not verify";
    FactorNotEnrolled = 816, "FACTOR_NOT_ENROLLED", "no such second factor is enrolled";
    FactorExists = 817, "FACTOR_EXISTS", "this second factor is already enrolled";
    FactorInvalid = 818, "FACTOR_INVALID", "the second factor's data is malformed";
    RecoveryCodeInvalid = 819, "RECOVERY_CODE_INVALID", "the recovery code is wrong or used";
    RecoveryNotAllowed = 820, "RECOVERY_NOT_ALLOWED", "a recovery code can only re-enrol a second factor";
    ReenrolmentRequired = 821, "REENROLMENT_REQUIRED", "second factors were revoked; re-enrol one with a recovery code";
    SecurityLocked = 822, "SECURITY_LOCKED", "withdrawals are locked after a recent security change";
    AntiPhishingInvalid = 823, "ANTI_PHISHING_INVALID", "the anti-phishing code must be 4 to 32 letters, digits, spaces or -_.!";
    TokenInvalid = 824, "TOKEN_INVALID", "the token is wrong, used or expired";
    AdminPasskeyRequired = 825, "ADMIN_PASSKEY_REQUIRED", "admin actions need a passkey assertion: TOTP and recovery codes are not accepted";
    PasskeyAssertionInvalid = 826, "PASSKEY_ASSERTION_INVALID", "the passkey assertion does not verify (relying party, origin, challenge, flags or signature)";
    RelyingPartyInvalid = 827, "RELYING_PARTY_INVALID", "the relying party id or origins are malformed";
    PasskeyRequired = 828, "PASSKEY_REQUIRED", "TOTP alone may approve at most the daily TOTP budget of this asset; approve with a passkey, to an address approved with a passkey";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_grouped() {
        let mut nums: Vec<u16> = Reject::ALL.iter().map(|r| r.number()).collect();
        let sorted = {
            let mut s = nums.clone();
            s.sort_unstable();
            s
        };
        assert_eq!(nums, sorted, "codes listed in numeric order");
        nums.dedup();
        assert_eq!(nums.len(), Reject::ALL.len());
        let mut codes: Vec<&str> = Reject::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Reject::ALL.len());
        for r in Reject::ALL {
            assert!(r.code().bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
            assert!(!r.to_string().is_empty());
        }
    }
}
