//! Bitcoin-family (UTXO) custody primitives, shared by kinko (watch-only) and `kinko-signer`
//! (keys). Nothing here signs: signing with a private key is `kinko_signer::sign`, which the
//! exchange does not link. (Only [`keys::watch_key`] takes a master key, to derive its public
//! account key.)
//!
//! - [`network`] — Litecoin mainnet / testnet / regtest parameters (bech32 HRP, base58 versions).
//! - [`address`] — address ↔ `scriptPubKey` for those networks (the `bitcoin` crate's own
//!   `Address` type only knows Bitcoin's prefixes).
//! - [`amount`] — exact decimal ↔ satoshi conversion (Core's JSON amounts, no floats).
//! - [`keys`] — watch-only account keys (`WatchKey`), hot P2WPKH and cold 2-of-3 P2WSH
//!   derivation, output descriptors with checksums.
//! - [`psbt`] — build (coin selection, fee), summarise, combine, verify and finalize PSBTs.
//! - [`rpc`] — a small typed Bitcoin-Core JSON-RPC client (blocking, ureq).
//! - [`regtest`] — a real `litecoind -regtest` node for tests.
//! - [`eth`] — Ethereum: EIP-55 addresses, deposit-address derivation from the hot xpub,
//!   EIP-1559 transactions (alloy-rlp), ERC-20 calldata, a JSON-RPC client, an Anvil node for
//!   tests (docs/design/ethereum.md).

pub mod address;
pub mod amount;
pub mod control;
pub mod eth;
pub mod keys;
pub mod network;
pub mod psbt;
pub mod regtest;
pub mod rpc;

pub use address::{address_for, script_for, AddressError};
pub use amount::{format_sats, parse_sats, parse_sats_signed, AmountError};
pub use keys::{ColdKeys, Derived, KeyError, WatchKey};
pub use network::Network;
pub use psbt::{BuildError, Built, OutputInfo, PsbtError, Summary, Utxo};
pub use regtest::{RegtestError, RegtestNode};
pub use rpc::{Rpc, RpcError};
