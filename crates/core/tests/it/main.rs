//! kinko-core integration tests: one binary for the crate.
mod admin_proofs;
mod book;
mod identity;
mod ledger;
mod risk;
mod stops;
mod trading;
mod wallet;

use kinko_core::engine::{Command, Engine};

/// Applies a command log to a fresh engine, as recovery from the journal does.
pub fn replay(log: &[(u64, u64, Command)]) -> Engine {
    apply_log(Engine::new(), log)
}

/// Restores a snapshot of the state after `log[..cut]` and applies the rest of the log, as
/// recovery from a snapshot and the journal's tail does.
pub fn restore_and_replay(log: &[(u64, u64, Command)], cut: usize) -> Engine {
    let snapshot = replay(&log[..cut]).snapshot_bytes();
    let restored = Engine::from_snapshot_bytes(&snapshot).expect("a snapshot of a live engine restores");
    apply_log(restored, &log[cut..])
}

/// Asserts that the log alone, and a snapshot at its middle plus the rest of it, rebuild the
/// state whose hash is `live`.
pub fn assert_replays_to(log: &[(u64, u64, Command)], live: [u8; 32]) {
    assert_eq!(replay(log).state_hash(), live, "replay of the whole log");
    let mid = log.len() / 2;
    assert_eq!(
        restore_and_replay(log, mid).state_hash(),
        live,
        "snapshot at {mid}, then the rest"
    );
}

fn apply_log(mut e: Engine, log: &[(u64, u64, Command)]) -> Engine {
    let mut ev = Vec::new();
    for (seq, ts, cmd) in log {
        let _ = e.apply(*seq, *ts, cmd, &mut ev);
        ev.clear();
    }
    e
}
