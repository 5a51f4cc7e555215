//! A service's access to the engine from a plain thread (the custody services, the simulated
//! chain): journaled commands in, committed state out, each write visible on the read side
//! before `submit` returns.

use crate::replica::ReadSide;
use crate::{EngineHandle, SubmitError};
use kinko_core::{Command, Engine, Reject, Reply};
use std::time::{Duration, Instant};

/// How long a submitted command may take to show on the read side before the call gives up.
const READ_WAIT: Duration = Duration::from_secs(10);

/// Why a command did not reach an answer.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The engine gave no durable answer: `source` says whether the command may have been
    /// applied ([`SubmitError::may_have_been_applied`]); otherwise it was not.
    #[error("{command}: {source}")]
    Submit {
        command: &'static str,
        #[source]
        source: SubmitError,
    },
    /// The command is durable but the read side has not shown it yet.
    #[error("{command}: the read side did not catch up")]
    ReadLagging { command: &'static str },
}

#[derive(Clone)]
pub struct EngineLink {
    handle: EngineHandle,
    read: ReadSide,
}

impl EngineLink {
    pub fn new(handle: EngineHandle, read: ReadSide) -> EngineLink {
        EngineLink { handle, read }
    }

    /// Submits `cmd`, waits until it is durable and visible on the read side. The outer error
    /// is the engine being unavailable; the inner result is the engine's answer.
    pub fn submit(&self, cmd: Command) -> Result<Result<Reply, Reject>, LinkError> {
        let command = cmd.name();
        let c = self
            .handle
            .submit(cmd)
            .map_err(|source| LinkError::Submit { command, source })?;
        let deadline = Instant::now() + READ_WAIT;
        while self.read.applied_seq() < c.seq {
            if Instant::now() > deadline {
                return Err(LinkError::ReadLagging { command });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(c.reply)
    }

    /// Submits `cmds` in order, all enqueued before the first answer is awaited (they share
    /// group commits: one fsync for many), and waits until every one is durable and visible on
    /// the read side. The answers, in order.
    pub fn submit_all(&self, cmds: Vec<Command>) -> Result<Vec<Result<Reply, Reject>>, LinkError> {
        let mut pending = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            let command = cmd.name();
            let rx = self
                .handle
                .enqueue(cmd)
                .map_err(|source| LinkError::Submit { command, source })?;
            pending.push((command, rx));
        }
        let mut out = Vec::with_capacity(pending.len());
        let mut last = 0;
        for (command, rx) in pending {
            let c = rx
                .blocking_recv()
                .map_err(|_| LinkError::Submit {
                    command,
                    source: crate::sequencer::vanished(),
                })?
                .map_err(|source| LinkError::Submit { command, source })?;
            last = last.max(c.seq);
            out.push(c.reply);
        }
        let deadline = Instant::now() + READ_WAIT;
        while self.read.applied_seq() < last {
            if Instant::now() > deadline {
                return Err(LinkError::ReadLagging {
                    command: "submit_all",
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(out)
    }

    /// Reads committed state. Keep `f` short: the replica waits for it.
    pub fn view<R>(&self, f: impl FnOnce(&Engine) -> R) -> R {
        f(&self.read.model().engine)
    }

    pub fn handle(&self) -> &EngineHandle {
        &self.handle
    }

    pub fn read(&self) -> &ReadSide {
        &self.read
    }
}
