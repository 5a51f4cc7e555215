//! kinko-core integration tests: one binary for the crate.
mod book;
mod ledger;
mod trading;
mod wallet;

use kinko_core::engine::{Command, Engine};

/// Applies a command log to a fresh engine, as recovery from the journal does.
pub fn replay(log: &[(u64, u64, Command)]) -> Engine {
    let mut e = Engine::new();
    let mut ev = Vec::new();
    for (seq, ts, cmd) in log {
        let _ = e.apply(*seq, *ts, cmd, &mut ev);
        ev.clear();
    }
    e
}
