//! The port a replicated log plugs into (docs/design/replication.md). The sequencer calls it;
//! `kinko-cluster` implements it on NATS JetStream. Without a replicator the sequencer is the
//! single-node one: nothing here runs.
//!
//! A primary: before each batch, [`Replicator::check_lead`]; after the batch is durable in the
//! local journal, [`Replicator::publish`]; replies are released only when it returns `Ok`.
//! A standby: the sequencer refuses commands with [`crate::SubmitError::NotLeader`] and asks
//! [`Replicator::follow`] for the batches the stream committed, which it journals and applies
//! exactly as they were (same sequence numbers, same timestamps, so the same hash chain and the
//! same `state_hash`), until `follow` says the node now holds the lease.

use std::time::Duration;

/// One durable batch as the stream carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplBatch {
    /// Journal sequence of the first record.
    pub first_seq: u64,
    /// The batch's timestamp (every record of a batch has the same).
    pub timestamp_ns: u64,
    /// The journal's chain hash after the last record of the batch.
    pub head_hash: [u8; 32],
    /// Each record: kind and payload, in order.
    pub records: Vec<(u16, Vec<u8>)>,
}

impl ReplBatch {
    /// Journal sequence of the last record.
    pub fn last_seq(&self) -> u64 {
        self.first_seq + (self.records.len() as u64).saturating_sub(1)
    }
}

/// Why this node may not write (or no longer may).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplicateError {
    /// Another node holds the lease or appended to the stream: this batch is not in the stream
    /// and never will be. The string names the leader's API address when known.
    #[error("this node is not the leader (leader: {0})")]
    Fenced(String),
    /// The stream did not acknowledge the batch before the lease ran out: it may hold it.
    #[error("the replicated log did not acknowledge the batch: {0}")]
    Unknown(String),
}

/// What [`Replicator::follow`] found.
#[derive(Debug)]
pub enum Follow {
    /// Committed batches after the node's last sequence (possibly none), in order.
    Batches(Vec<ReplBatch>),
    /// The node holds the lease for `epoch` and has applied everything the stream holds: it
    /// journals `Command::BeginEpoch` as its first batch, then takes commands.
    Lead { epoch: u64, node: String },
    /// The stream and this node's journal disagree (a deposed primary's unreplicated tail): the
    /// node stops; an operator moves its data directory aside.
    Diverged(String),
}

/// A replicated log with a leadership lease.
pub trait Replicator: Send + 'static {
    /// Whether this node may write a batch now (it holds the lease); `Err` deposes it.
    fn check_lead(&mut self) -> Result<(), ReplicateError>;
    /// Stores a batch already durable in the local journal; `Ok` once a quorum has it.
    fn publish(&mut self, batch: &ReplBatch) -> Result<(), ReplicateError>;
    /// Standby: waits up to `wait` for batches after `after_seq` (the local journal's head, with
    /// `head_hash`), or for the lease.
    fn follow(&mut self, after_seq: u64, head_hash: [u8; 32], wait: Duration) -> Follow;
    /// The leader's advertised API address, when known (for `NOT_LEADER` answers).
    fn leader(&self) -> String;
    /// Batches the stream holds that this node has not applied yet, as of its last look.
    fn lag(&self) -> u64;
    /// The newest epoch this node has seen (in the stream or the lease; 0: none yet).
    fn epoch_seen(&self) -> u64;
}
