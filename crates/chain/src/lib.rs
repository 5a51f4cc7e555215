//! Bitcoin-family (UTXO) custody primitives, shared by kinko (watch-only) and `kinko-signer`
//! (keys). Nothing here holds a private key except the signing helpers in [`psbt`], which only
//! the signer calls.
//!
//! - [`network`] — Litecoin mainnet / testnet / regtest parameters (bech32 HRP, base58 versions).
//! - [`address`] — address ↔ `scriptPubKey` for those networks (the `bitcoin` crate's own
//!   `Address` type only knows Bitcoin's prefixes).

pub mod address;
pub mod network;

pub use address::{address_for, script_for, AddressError};
pub use network::Network;
