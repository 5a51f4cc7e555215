//! What can go wrong in a custody poll or an operator's custody call. The service logs each
//! error (its `Display` is the message operators read) and tries again on the next poll;
//! nothing here is a bug.

use kinko_chain::psbt::{BuildError, PsbtError};
use kinko_chain::rpc::RpcError;
use kinko_chain::KeyError;
use kinko_signer_proto::ClientError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    // --- the engine ---------------------------------------------------------------------------
    /// The engine did not take a command, or its read side did not catch up.
    #[error(transparent)]
    Engine(#[from] kinko_engine::link::LinkError),
    /// The engine refused a command custody needed (`what` names the command).
    #[error("{what}: {code}")]
    Refused { what: String, code: &'static str },
    /// The engine answered a command with another reply than that command's.
    #[error("{what}: unexpected reply {reply}")]
    UnexpectedReply { what: &'static str, reply: String },
    #[error("asset {0} is not defined")]
    AssetUndefined(String),

    // --- the node -----------------------------------------------------------------------------
    /// A node call failed (`what` names it).
    #[error("{what}: {source}")]
    Rpc {
        what: String,
        #[source]
        source: RpcError,
    },
    #[error("importmulti {range} [{begin}, {end}] failed: {error}")]
    Import {
        range: &'static str,
        begin: u32,
        end: u32,
        error: String,
    },
    #[error("script hex: {0}")]
    ScriptHex(#[source] bitcoin::hex::HexToBytesError),
    #[error("txid: {0}")]
    Txid(#[source] bitcoin::hex::HexToArrayError),
    #[error("listunspent: bad txid {0}")]
    Outpoint(String),
    /// A transaction the node returned does not decode.
    #[error("transaction {txid}: {source}")]
    TxDecode {
        txid: String,
        #[source]
        source: bitcoin::consensus::encode::FromHexError,
    },
    #[error("the node's transaction {0} has another txid")]
    TxidWrong(String),
    /// The node reports another txid for a transaction we broadcast.
    #[error("node reports txid {reported} for {txid}")]
    TxidMismatch { txid: String, reported: String },
    /// Fault injection in tests: the service stopped where a crash would have stopped it.
    #[error("stopped by fault injection {0}")]
    Crashed(&'static str),

    // --- our keys and transactions ----------------------------------------------------------
    /// An address of ours could not be derived (`what` names it).
    #[error("{what}: {source}")]
    Derive {
        what: String,
        #[source]
        source: KeyError,
    },
    /// A transaction could not be built (`what` names it).
    #[error("{what}: {source}")]
    Build {
        what: &'static str,
        #[source]
        source: BuildError,
    },
    /// A PSBT does not read, check or finalize (`what` says which step).
    #[error("{what}: {source}")]
    Psbt {
        what: &'static str,
        #[source]
        source: PsbtError,
    },
    #[error("{0} overflows")]
    Overflow(&'static str),
    #[error("amount {0} does not fit a UTXO chain")]
    AmountTooLarge(u128),
    #[error("withdrawal id {0} is beyond the change range")]
    ChangeRange(u64),
    #[error("refill index range exhausted")]
    RefillsExhausted,
    #[error("input {0} is not a cold-wallet coin")]
    RefillInputForeign(usize),
    #[error("output pays {0} which is not ours")]
    RefillOutputForeign(String),
    #[error("the PSBT pays nothing to the hot wallet")]
    RefillPaysNothing,

    /// Reconciliation could not even start (the node's wallets are not ready), for this reason.
    #[error("reconciliation cannot run: {0}")]
    ReconcileBlind(String),

    // --- kinko's own files ---------------------------------------------------------------------
    /// The `listsinceblock` cursors could not be stored (`what` says which step).
    #[error("cursor file {}: {what}: {source}", path.display())]
    CursorIo {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // --- the signer ---------------------------------------------------------------------------
    #[error("signer at {}: {source}", path.display())]
    SignerUnreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("signer: {0}")]
    Signer(#[from] ClientError),
    /// The signer answered a request (`request` names it) otherwise than expected.
    #[error("signer answered {request} with {answer}")]
    SignerAnswer { request: &'static str, answer: String },
    /// The signer returned another transaction than the one it was asked to sign.
    #[error("signer returned another transaction for {0}")]
    SignerTxChanged(String),

    // --- the cluster ----------------------------------------------------------------------------
    /// This node is not the cluster's primary (a standby, or a primary that was deposed):
    /// custody acts only for the current epoch (docs/design/replication.md).
    #[error("custody does not act on a node that is not the cluster's primary (role {0})")]
    NotLeader(&'static str),
}

/// A failed node call.
pub(crate) fn rpc_err(what: impl Into<String>, source: RpcError) -> CustodyError {
    CustodyError::Rpc {
        what: what.into(),
        source,
    }
}
