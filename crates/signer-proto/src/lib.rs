//! kinko-signer-proto: the wire protocol of kinko's isolated signer and the client kinko uses to
//! talk to it (docs/design/custody.md, "Signer protocol").
//!
//! This is all of the signer the exchange links. The messages are this crate's own types
//! ([`Withdrawal`], [`StepUp`], [`ProofFactor`], plain numeric ids), not kinko-core's, so the
//! protocol does not change whenever the engine's records do; it depends on no other kinko
//! crate. Conversions live with the two sides: kinko's custody service turns its records into
//! these messages, the signer turns them into what it checks.
//!
//! - [`protocol`] — requests, responses and framing on the Unix socket.
//! - [`client`] — one blocking connection, one request and one answer at a time.
#![forbid(unsafe_code)]

pub mod client;
pub mod protocol;

pub use client::{ClientError, SignerClient};
pub use protocol::{ProofFactor, Request, Response, SecretBytes, StepUp, Withdrawal};
