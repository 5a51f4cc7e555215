//! kinko's deterministic core: money types, the double-entry ledger, assets, order books and
//! the engine state machine. No I/O, no clock, no randomness, no floating point.
//!
//! The engine's only inputs are `(sequence, timestamp, command)`; its outputs are a reply and
//! events. See ARCHITECTURE.md at the repository root.
#![forbid(unsafe_code)]

pub mod admin;
pub mod asset;
pub mod book;
pub mod engine;
pub mod identity;
pub mod keys;
pub mod ledger;
pub mod market;
pub mod money;
pub mod passkey;
pub mod reject;
pub mod risk;
pub mod trading;
pub mod wallet;

pub use asset::{Asset, AssetSwitches};
pub use engine::{AuditReport, Command, Engine, EngineState, Event, Reply};
pub use ledger::{SystemAccount, TransferKind, TransferRequest};
pub use money::{AccountId, Amount, AssetCode, AssetId, TransferId, UserId};
pub use reject::Reject;
