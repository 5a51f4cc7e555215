//! The durable engine: one thread owns the deterministic [`kinko_core::Engine`]. Commands arrive on
//! a bounded channel; the sequencer drains a batch, gives each command a sequence number and a
//! timestamp, appends the batch to the journal with one write and one fsync, and only then
//! applies the commands and releases their replies. A reply therefore always describes a durable
//! command. When the inbox is full, submitters wait (`submit`) or are refused (`try_submit`):
//! memory never grows without bound.
//!
//! [`recover`] rebuilds the engine from the newest valid snapshot plus the journal's tail;
//! [`launch::open`] starts the sequencer with its read-side replica ([`replica::ReadSide`]).
//! [`ports`] holds the traits that services plug into (chains, custody, sealed secrets), and
//! [`link::EngineLink`] is how a service on a plain thread submits commands and reads state.
#![forbid(unsafe_code)]

pub mod benchkit;
pub mod health;
pub mod launch;
pub mod link;
pub mod ports;
mod recovery;
pub mod replica;
pub mod replication;
mod sequencer;

pub use recovery::{describe_torn_tail, recover, replay_journal, RecoveryError, RecoveryReport};
pub use sequencer::{
    vanished, Clock, Committed, EngineConfig, EngineHandle, FeedBatch, FeedSender, JournalState, Role,
    Sequencer, SequencerError, SequencerStats, SubmitError, SystemClock, FSYNC_BUCKETS_US,
};

use kinko_core::Command;

/// Journal record kind of an engine command encoded with postcard (format 1).
pub const RECORD_KIND_COMMAND: u16 = 1;

/// Encodes a command as a journal payload.
pub fn encode_command(command: &Command, out: &mut Vec<u8>) {
    out.clear();
    let bytes = postcard::to_extend(command, std::mem::take(out)).expect("commands always serialize");
    *out = bytes;
}

/// The engine's state as a snapshot: its file metadata and payload, at the engine's last applied
/// record, whose hash is `journal_hash` (the sequencer's periodic snapshots and the benchmarks').
pub fn snapshot_of(
    engine: &kinko_core::Engine,
    journal_hash: kinko_journal::Hash,
) -> (kinko_journal::SnapshotMeta, Vec<u8>) {
    let payload = engine.snapshot_bytes();
    let meta = kinko_journal::SnapshotMeta {
        format_version: kinko_core::engine::STATE_FORMAT_VERSION,
        seq: engine.last_seq(),
        journal_hash,
        state_hash: *blake3::hash(&payload).as_bytes(),
        timestamp_ns: engine.last_timestamp_ns(),
    };
    (meta, payload)
}

/// Why a journal payload does not decode as a command.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    #[error(transparent)]
    Payload(#[from] postcard::Error),
}

/// Decodes a journal payload back into a command.
pub fn decode_command(kind: u16, payload: &[u8]) -> Result<Command, DecodeError> {
    if kind != RECORD_KIND_COMMAND {
        return Err(DecodeError::UnknownKind(kind));
    }
    Ok(postcard::from_bytes(payload)?)
}
