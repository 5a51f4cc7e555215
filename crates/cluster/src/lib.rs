//! The replicated journal on NATS JetStream (docs/design/replication.md).
//!
//! [`JetStreamLog`] is the engine's [`kinko_engine::replication::Replicator`]: each durable
//! batch is one message of a three-replica stream, published with
//! `Nats-Expected-Last-Sequence` (so a deposed writer's next append fails) and a message id
//! (so a retried publish is not stored twice); leadership is a lease in a key-value bucket
//! (create when absent, update with the revision, expiry by the bucket's `max_age`), renewed by
//! a task on the log's own runtime. [`wire`] is the message format, [`testkit`] a three-node
//! `nats-server` cluster on loopback for tests.
#![forbid(unsafe_code)]

mod log;
pub mod testkit;
pub mod wire;

pub use log::{ClusterConfig, ClusterError, JetStreamLog, Leadership};
