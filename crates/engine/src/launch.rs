//! Starting the engine's pieces in order: recovery, the read-side replica, the sequencer
//! feeding it. Shared by `kinko serve`, the benchmarks and the tests.

use crate::replica::ReadSide;
use crate::{recover, EngineConfig, RecoveryError, RecoveryReport, Sequencer, SystemClock};

/// Committed batches the read side may fall behind before the sequencer waits for it.
pub const FEED_BATCHES_MAX: usize = 1_024;

/// The engine with its read side.
pub struct Node {
    pub sequencer: Sequencer,
    pub read: ReadSide,
    pub report: RecoveryReport,
}

/// Why the engine did not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error("the sequencer did not start: {0}")]
    Sequencer(String),
}

/// Recovers the data directory and starts the sequencer and the read side.
pub fn open(cfg: &EngineConfig) -> Result<Node, LaunchError> {
    open_with(cfg, None)
}

/// Like [`open`]; with a replicated log, the sequencer starts as a standby that follows it and
/// takes over writes when it is handed the lease (docs/design/replication.md).
pub fn open_with(
    cfg: &EngineConfig,
    repl: Option<Box<dyn crate::replication::Replicator>>,
) -> Result<Node, LaunchError> {
    let (engine, journal, report) = recover(cfg)?;
    let (read, feed) = ReadSide::start(engine.clone(), FEED_BATCHES_MAX);
    read.set_source(cfg.clone());
    let sequencer = match repl {
        None => Sequencer::start_with_feed(engine, journal, cfg.clone(), SystemClock, Some(feed)),
        Some(r) => Sequencer::start_replicated(engine, journal, cfg.clone(), SystemClock, Some(feed), r),
    }
    .map_err(|e| LaunchError::Sequencer(e.to_string()))?;
    Ok(Node {
        sequencer,
        read,
        report,
    })
}
