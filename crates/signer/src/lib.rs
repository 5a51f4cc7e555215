//! kinko-signer: the isolated signer of kinko's hot wallet (docs/design/custody.md).
//!
//! It holds the only copy of the hot key, in an encrypted [`keystore`], and signs a withdrawal's
//! PSBT only after judging it again by itself ([`policy`]): a second-factor proof it verifies
//! with its own registry of passkeys and TOTP secrets, a destination it learned and let cool, a
//! transaction that pays exactly that, and limits counted from its own append-only [`log`]. A
//! sign of tampering halts all signing until an operator who can open the keystore clears it.
//!
//! The protocol (requests, responses, framing) and the client kinko links are in
//! [`kinko_signer_proto`]; [`wire`] turns its messages into what the checks use.
//!
//! - [`admins`] — admins enrolled at the signer, ceremony and clear digests, quorum checks.
//! - [`keystore`] — argon2id + XChaCha20-Poly1305 file holding the BIP39 seed.
//! - [`log`] — the hash-chained, fsynced JSON-lines log.
//! - [`registry`] — the state rebuilt from the log (addresses, factors, signatures, halt).
//! - [`policy`] — the checks and their stable refusal codes.
//! - [`eth`] — the reading of every raw EIP-1559 transaction and Ethereum signing.
//! - [`eth_cold`] — a cold keyholder's Ethereum owner key and offline refill signature.
//! - [`sign`] — PSBT signing with a master key (the only signing code of kinko).
//! - [`service`] — the signer answering requests; [`server`] — the socket around it.
//! - [`config`] — the TOML configuration; [`clock`] — the clock, replaceable in tests.
//! - [`alerts`] — the signer's own alert channel: a durable outbox, webhook and SMTP delivery.
#![forbid(unsafe_code)]

pub mod admins;
pub mod alerts;
pub mod clock;
pub mod config;
pub mod eth;
pub mod eth_cold;
pub mod keystore;
pub mod log;
pub mod policy;
pub mod registry;
pub mod server;
pub mod service;
pub mod sign;
pub mod wire;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use keystore::{Keystore, Role, Unlocked};
pub use server::{serve, Server};
pub use service::Signer;
