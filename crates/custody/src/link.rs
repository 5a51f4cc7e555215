//! The custody service's access to the engine: journaled commands in, committed state out.

use kinko_api::read::ReadSide;
use kinko_core::{Command, Engine, Reject, Reply};
use kinko_engine::EngineHandle;
use std::time::{Duration, Instant};

/// How long a submitted command may take to show on the read side before the poll gives up.
const READ_WAIT: Duration = Duration::from_secs(10);

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
    pub fn submit(&self, cmd: Command) -> Result<Result<Reply, Reject>, String> {
        let name = cmd.name();
        let c = self.handle.submit(cmd).map_err(|e| format!("{name}: {e}"))?;
        let deadline = Instant::now() + READ_WAIT;
        while self.read.applied_seq() < c.seq {
            if Instant::now() > deadline {
                return Err(format!("{name}: the read side did not catch up"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(c.reply)
    }

    /// Reads committed state. Keep `f` short: the replica waits for it.
    pub fn view<R>(&self, f: impl FnOnce(&Engine) -> R) -> R {
        f(&self.read.model().engine)
    }
}
