//! Start = newest valid snapshot + replay of the journal's tail.

use crate::decode_command;
use crate::sequencer::EngineConfig;
use kinko_core::Engine;
use kinko_journal::{Hash, Journal, JournalConfig, SnapshotStore};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Sequence of the snapshot the engine started from (0 = none).
    pub snapshot_seq: u64,
    pub snapshot_path: Option<PathBuf>,
    /// Snapshots passed over because they did not verify, with the reason.
    pub snapshots_skipped: Vec<(PathBuf, String)>,
    /// Journal records replayed on top of the snapshot.
    pub replayed: u64,
    /// Journal records verified when the journal was opened (those after its verified-prefix
    /// checkpoint; all of them without one).
    pub journal_records_verified: u64,
    /// The last journal record the checkpoint covered (0: none, everything was verified).
    pub journal_checkpoint_seq: u64,
    pub head_seq: u64,
    pub head_hash: Hash,
    pub state_hash: Hash,
    /// A torn last record (crash mid-write) that was cut off, described.
    pub torn_tail: Option<String>,
    pub replay_ns: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Journal(#[from] kinko_journal::JournalError),
    #[error("snapshot {path} at seq {seq} is ahead of the journal, which ends at seq {head}: the journal lost records")]
    SnapshotAhead { path: PathBuf, seq: u64, head: u64 },
    #[error("snapshot {path} does not belong to this journal: record {seq} has a different hash")]
    SnapshotForeign { path: PathBuf, seq: u64 },
    #[error("journal record {seq} does not decode as a command: {reason}")]
    Undecodable { seq: u64, reason: crate::DecodeError },
    #[error("state after replay fails the audit: {0}")]
    Invariant(String),
}

/// Opens the journal (repairing a torn tail, refusing corruption), loads the newest valid
/// snapshot, replays the tail and audits the result.
pub fn recover(config: &EngineConfig) -> Result<(Engine, Journal, RecoveryReport), RecoveryError> {
    let started = std::time::Instant::now();
    let mut jc = JournalConfig::new(config.journal_dir());
    jc.segment_bytes_max = config.segment_bytes_max;
    let (journal, jr) = Journal::open(jc)?;
    let store = SnapshotStore::open(config.snapshot_dir())?;
    let latest = store.latest_valid()?;
    let mut skipped = latest.skipped;
    let mut engine = Engine::new();
    let mut snapshot_seq = 0;
    let mut snapshot_path = None;
    let mut anchor = None;
    if let Some((meta, payload)) = latest.found {
        let path = store.dir().join(format!("{:020}.snap", meta.seq));
        // A snapshot that fails here is passed over: the journal keeps every record, so the
        // state is rebuilt from the journal alone.
        match Engine::from_snapshot_bytes(&payload) {
            Ok(e) if e.state_hash() == meta.state_hash && e.last_seq() == meta.seq => {
                if meta.seq > jr.head_seq {
                    return Err(RecoveryError::SnapshotAhead {
                        path,
                        seq: meta.seq,
                        head: jr.head_seq,
                    });
                }
                // The record at the snapshot's seq is checked against its journal hash by the
                // replay below, which reads from there.
                snapshot_seq = meta.seq;
                anchor = (meta.seq > 0).then(|| (meta.journal_hash, path.clone()));
                snapshot_path = Some(path);
                engine = e;
            }
            Ok(_) => skipped.push((path, "state hash or sequence does not match its header".into())),
            Err(err) => skipped.push((path, err.to_string())),
        }
    }
    for (path, why) in &skipped {
        tracing::warn!(path = %path.display(), reason = %why, "snapshot skipped");
    }
    let replayed = replay_from(&mut engine, &config.journal_dir(), anchor)?;
    assert_eq!(
        engine.last_seq(),
        jr.head_seq,
        "replay ended before the journal head"
    );
    engine.audit().map_err(|v| RecoveryError::Invariant(v.0))?;
    let report = RecoveryReport {
        snapshot_seq,
        snapshot_path,
        snapshots_skipped: skipped,
        replayed,
        journal_records_verified: jr.records_verified,
        journal_checkpoint_seq: jr.checkpoint_seq,
        head_seq: jr.head_seq,
        head_hash: jr.head_hash,
        state_hash: engine.state_hash(),
        torn_tail: jr.torn_tail.as_ref().map(describe_torn_tail),
        replay_ns: u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
    };
    Ok((engine, journal, report))
}

/// Applies every journal record after `engine.last_seq()` to `engine`, reading only (the journal
/// is not opened for writing, so this may run on a copy or beside a live server); returns how
/// many records it applied. A torn tail ends the replay, corruption is an error.
pub fn replay_journal(engine: &mut Engine, journal_dir: &Path) -> Result<u64, RecoveryError> {
    replay_from(engine, journal_dir, None)
}

/// [`replay_journal`], first checking that the record at `engine.last_seq()` has the hash in
/// `anchor` (the snapshot's journal hash; its path names it in the error) — in the same pass
/// over the segment, so the segment holding the snapshot's seq is verified once.
fn replay_from(
    engine: &mut Engine,
    journal_dir: &Path,
    anchor: Option<(Hash, PathBuf)>,
) -> Result<u64, RecoveryError> {
    let mut replayed = 0;
    let mut events = Vec::new();
    let from = engine.last_seq() + u64::from(anchor.is_none());
    let mut records = kinko_journal::read_from(journal_dir, from)?;
    if let Some((hash, path)) = anchor {
        let rec = records.next().transpose()?;
        if rec.map(|r| r.hash) != Some(hash) {
            return Err(RecoveryError::SnapshotForeign {
                path,
                seq: engine.last_seq(),
            });
        }
    }
    for rec in records {
        let rec = rec?;
        let cmd = decode_command(rec.kind, &rec.payload)
            .map_err(|reason| RecoveryError::Undecodable { seq: rec.seq, reason })?;
        events.clear();
        let _ = engine.apply(rec.seq, rec.timestamp_ns, &cmd, &mut events);
        replayed += 1;
    }
    Ok(replayed)
}

/// One line describing a torn tail: where, how much, and why.
pub fn describe_torn_tail(t: &kinko_journal::TornTail) -> String {
    format!(
        "segment {} at offset {}: {} bytes dropped ({})",
        t.segment.display(),
        t.offset,
        t.bytes_dropped,
        t.reason
    )
}
