//! The custody service: kinko's side of a UTXO chain (docs/design/custody.md).
//!
//! One thread per chain asset. Each poll it
//! 1. keeps the node's watch-only wallets importing every address kinko can have handed out
//!    (hot receive `/0/i`, hot change `/1/i`, cold multisig `/0/i`);
//! 2. reports new deposits to the engine (`listsinceblock` from a cursor stored across restarts,
//!    [`cursor`]; a cursor the node does not know rescans from a safe depth, and the engine is
//!    idempotent per `txid:vout`, so nothing is credited twice), confirms them at the
//!    configured depth, drops pending ones that left the chain and reverses credited ones that
//!    did;
//! 3. hands newly requested withdrawals to the signer: a PSBT from final hot UTXOs paying
//!    exactly the approved destination and amount with change to `/1/<withdrawal id>`,
//!    journals `Signing`, asks the signer, finalizes, journals the signed transaction
//!    (`Signed`, with the miner fee), broadcasts exactly that, journals `Broadcast`, and
//!    `Completed` at the finality depth; a signer refusal fails the withdrawal with its code;
//!    recorded withdrawals and custody moves that leave the chain are reverted, even after
//!    `Completed` ([`lifecycle`]);
//! 4. sweeps the hot wallet down when it holds more than its share of customer funds;
//! 5. keeps the signer's own registry (addresses, passkeys, TOTP secrets) fed from committed
//!    state; the signer timestamps what it learns with its own clock;
//! 6. reconciles ([`reconcile`]): every spend of our coins must be one kinko made (otherwise an
//!    `unapproved_outflow` incident halts the asset's withdrawals), the hot wallet must hold
//!    what the ledger says, and, once at start and then daily, custody on the node must cover
//!    customer funds;
//! 7. forwards every engine halt of the asset's withdrawals to the signer ([`halts`]), first
//!    thing and again after reconciliation; only the signer's admin quorum resumes it.
//!
//! Ethereum and its tokens have their own loop, [`eth_service`] (one per chain: ETH and its
//! tokens share the hot key's nonces), built from [`eth`] (deposits, withdrawals through the
//! signer's socket, reconciliation of the hot and deposit keys, durable scan cursors),
//! [`eth_sweep`] (sweeps of credited deposits to hot, gas top-ups, their exact gas booked) and
//! [`eth_cold`] (hot ↔ cold with the cold multisig contract: the excess swept to it, refills
//! from it by the keyholders' signatures, its balance against the ledger); then the pools'
//! nonces and every address's balances against the ledger (docs/design/ethereum.md).
//!
//! After each poll the outcome goes to the process's health registry ([`health`]: `node:`,
//! `signer:`, `custody:`, `reconcile:`, `hot:` + asset); reconciliation that cannot run for
//! `reconcile_failures_max` polls in a row halts the asset's withdrawals (fail closed).
//!
//! The service changes engine state only through journaled commands, never holds a private
//! key, and treats the node and the signer as fallible: every error is logged, reported and
//! retried on the next poll.

pub mod adapter;
pub mod config;
pub mod cursor;
pub mod error;
pub mod eth;
pub mod eth_cold;
pub mod eth_service;
pub mod eth_sweep;
mod halts;
pub mod health;
mod lifecycle;
mod pending;
pub mod reconcile;
pub mod service;
pub mod signer_feed;
pub mod to_signer;

pub use adapter::UtxoChain;
pub use config::CustodyConfig;
pub use error::CustodyError;
pub use service::{spawn_shared, Custody, CustodyThread, Registry};
