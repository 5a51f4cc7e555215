//! The sequencer thread: batch, journal, fsync, apply, reply.

use crate::replication::{Follow, ReplBatch, ReplicateError, Replicator};
use crate::{decode_command, encode_command, RECORD_KIND_COMMAND};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use kinko_core::engine::{AuditReport, Command, Engine, Event, Reply};
use kinko_core::ledger::InvariantViolation;
use kinko_core::Reject;
use kinko_journal::{Journal, JournalError, RecordIn, SnapshotStore};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Source of timestamps. The core never reads a clock; the sequencer stamps commands with this.
pub trait Clock: Send + 'static {
    fn now_ns(&self) -> u64;
}

/// Wall-clock time in nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Holds `journal/` and `snapshots/`.
    pub data_dir: PathBuf,
    /// Capacity of the inbox; submitters wait (or are refused) beyond it.
    pub inbox_commands_max: usize,
    /// Most commands journaled with one fsync.
    pub batch_commands_max: usize,
    /// Take a snapshot after this many commands (0 = only on demand and at shutdown).
    pub snapshot_every_commands: u64,
    /// Snapshots kept on disk.
    pub snapshots_keep: usize,
    /// Walk the whole state and check every invariant after this many commands (0 = never
    /// automatically; on demand always).
    pub audit_every_commands: u64,
    /// How often the sequencer wakes up when idle (to let time-based expiries happen).
    pub tick_ms: u64,
    /// Segment size of the journal.
    pub segment_bytes_max: u64,
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            inbox_commands_max: 65_536,
            batch_commands_max: 8_192,
            snapshot_every_commands: 1_000_000,
            snapshots_keep: 3,
            audit_every_commands: 100_000,
            tick_ms: 1_000,
            segment_bytes_max: 64 << 20,
        }
    }
    pub fn journal_dir(&self) -> PathBuf {
        self.data_dir.join("journal")
    }
    pub fn snapshot_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }
}

/// The durable outcome of one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub seq: u64,
    pub timestamp_ns: u64,
    pub reply: Result<Reply, Reject>,
    pub events: Vec<Event>,
}

/// Why a command got no durable reply. Each variant promises what became of the command;
/// only [`SubmitError::OutcomeUnknown`] leaves it open.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The inbox is full (only from `try_submit`): not applied.
    #[error("the engine inbox is full")]
    Overloaded,
    /// The sequencer has stopped or is shutting down: not applied, and never will be.
    #[error("the engine has stopped: {0}")]
    Stopped(String),
    /// The engine found a broken invariant and refuses all commands: not applied.
    #[error("the engine is halted: {0}")]
    Halted(String),
    /// The journal's disk is full: the command was not written, is not applied and never will
    /// be. The sequencer keeps running and writes again once space is freed.
    #[error("the journal's disk is full: {0}")]
    JournalFull(String),
    /// The journal failed (an I/O error, a failed fsync) before the command was written: not
    /// applied, and never will be. The journal writes nothing more until the process restarts.
    #[error("the journal failed; a restart is needed: {0}")]
    JournalFailed(String),
    /// The command may or may not have been applied: its journal record was written but could
    /// not be made durable, or the sequencer went away after taking it. What a restart recovers
    /// decides; look it up (by its client id) then. The journal writes nothing more.
    #[error("the outcome is unknown: {0}")]
    OutcomeUnknown(String),
    /// This node of a replicated cluster does not hold the lease (a standby, or a primary that
    /// was deposed): not applied, and never will be by this node. The string is the leader's
    /// advertised API address when known; send the command there (same client id).
    #[error("this node is not the leader; the leader is {0:?}")]
    NotLeader(String),
}

/// The journal as the sequencer sees it, published in [`SequencerStats::journal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalState {
    /// Writing.
    Ok,
    /// The disk is full: commands are refused (not applied); the sequencer retries making room
    /// on every batch and tick, and resumes by itself once space is freed.
    Full,
    /// Failed: nothing is written again until the process is restarted (the journal is
    /// poisoned, or the engine stopped on a journal error).
    Failed,
}

impl JournalState {
    /// `ok`, `full` or `failed` (the label in `/ready` and `/metrics`).
    pub fn name(self) -> &'static str {
        match self {
            JournalState::Ok => "ok",
            JournalState::Full => "full",
            JournalState::Failed => "failed",
        }
    }

    fn from_u8(v: u8) -> JournalState {
        match v {
            0 => JournalState::Ok,
            1 => JournalState::Full,
            _ => JournalState::Failed,
        }
    }
}

/// Why the sequencer could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum SequencerError {
    /// The snapshot directory could not be opened.
    #[error(transparent)]
    Snapshots(#[from] JournalError),
    /// The sequencer thread could not be started.
    #[error(transparent)]
    Spawn(std::io::Error),
    #[error("sequencer thread panicked")]
    Panicked,
    #[error("sequencer already stopped")]
    AlreadyStopped,
}

impl SubmitError {
    /// The stable code clients see. The first three are core's engine rejects; the journal's
    /// codes exist only here, because only the sequencer can fail that way.
    pub fn code(&self) -> &'static str {
        match self {
            SubmitError::Overloaded => Reject::EngineOverloaded.code(),
            SubmitError::Stopped(_) => Reject::EngineStopping.code(),
            SubmitError::Halted(_) => Reject::EngineHalted.code(),
            SubmitError::JournalFull(_) => "JOURNAL_FULL",
            SubmitError::JournalFailed(_) => "ENGINE_UNAVAILABLE",
            SubmitError::OutcomeUnknown(_) => "OUTCOME_UNKNOWN",
            SubmitError::NotLeader(_) => "NOT_LEADER",
        }
    }

    /// Whether the command may have been applied (only [`SubmitError::OutcomeUnknown`]).
    pub fn may_have_been_applied(&self) -> bool {
        matches!(self, SubmitError::OutcomeUnknown(_))
    }
}

type ReplyTx = tokio::sync::oneshot::Sender<Result<Committed, SubmitError>>;
type Query = Box<dyn FnOnce(&Engine) + Send>;

// Commands are the hot path: boxing them would cost an allocation per command to save slot
// space in the bounded inbox, where nearly every slot holds a command anyway.
#[allow(clippy::large_enum_variant)]
enum Request {
    Command(Command, ReplyTx),
    Query(Query),
    Snapshot(tokio::sync::oneshot::Sender<Result<PathBuf, JournalError>>),
    Audit(tokio::sync::oneshot::Sender<Result<AuditReport, InvariantViolation>>),
    Shutdown,
}

/// One committed batch, as the journal holds it: read models replay it on their own copy of
/// the engine (the state machine is deterministic, so they reach the same state and events).
#[derive(Debug)]
pub struct FeedBatch {
    pub first_seq: u64,
    pub timestamp_ns: u64,
    pub commands: Vec<Command>,
}

/// Where committed batches go, after they are durable and applied. Bounded: a reader that falls
/// this many batches behind makes the sequencer wait for it.
pub type FeedSender = crossbeam_channel::Sender<Arc<FeedBatch>>;

/// Counters the sequencer publishes (for metrics and benchmarks).
#[derive(Debug, Default)]
pub struct SequencerStats {
    pub commands: AtomicU64,
    pub batches: AtomicU64,
    pub fsync_ns_total: AtomicU64,
    pub last_seq: AtomicU64,
    /// Journal write + fsync time per batch: counts per bucket of [`FSYNC_BUCKETS_US`] (the last
    /// counts everything above the largest bound).
    pub fsync_buckets: [AtomicU64; FSYNC_BUCKETS_US.len() + 1],
    /// [`JournalState`] as a number (read it with [`SequencerStats::journal`]).
    journal_state: AtomicU8,
    /// Why the journal is not `Ok` (empty when it is).
    journal_reason: Mutex<String>,
    /// Batches refused because the journal's disk was full.
    pub journal_full_batches: AtomicU64,
    /// The journal's head after the last durable batch: (sequence, chain hash).
    journal_head: Mutex<(u64, [u8; 32])>,
    /// The last snapshot this sequencer wrote: its sequence and when (sequencer clock, ns since
    /// the Unix epoch; 0 = none yet).
    pub snapshot_last_seq: AtomicU64,
    pub snapshot_last_ns: AtomicU64,
    /// The last invariant audit the sequencer ran: when (0 = none yet) and whether it passed;
    /// audits that found a violation (each halts the engine).
    pub audit_last_ns: AtomicU64,
    pub audit_last_ok: std::sync::atomic::AtomicBool,
    pub audits_failed: AtomicU64,
    /// [`Role`] as a number (read it with [`SequencerStats::role`]).
    role: AtomicU8,
    /// The epoch this node leads (replicated clusters; 0 otherwise).
    pub epoch: AtomicU64,
    /// Time spent waiting for the replicated log's acknowledgements (ns).
    pub publish_ns_total: AtomicU64,
    /// Publish time per batch: counts per bucket of [`FSYNC_BUCKETS_US`], as for fsync.
    pub publish_buckets: [AtomicU64; FSYNC_BUCKETS_US.len() + 1],
    /// Batches the replicated log holds that this node has not applied (a standby's lag).
    pub replication_lag: AtomicU64,
    /// The newest epoch seen, and how many times it changed (a new leader each time).
    pub epoch_seen: AtomicU64,
    pub leader_changes: AtomicU64,
}

/// What this sequencer does in a cluster (`Single` without one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// No replication: the single-node engine.
    Single,
    /// Following the replicated log; commands are refused with `NOT_LEADER`.
    Standby,
    /// Holds the lease: journals, publishes, applies, replies.
    Primary,
    /// Was primary or standby and stopped: lost the lease, was fenced, or diverged.
    Deposed,
}

impl Role {
    /// `single`, `standby`, `primary` or `deposed` (for `/ready` and `/metrics`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Single => "single",
            Role::Standby => "standby",
            Role::Primary => "primary",
            Role::Deposed => "deposed",
        }
    }

    fn from_u8(v: u8) -> Role {
        match v {
            0 => Role::Single,
            1 => Role::Standby,
            2 => Role::Primary,
            _ => Role::Deposed,
        }
    }
}

/// Upper bounds (µs) of the journal fsync latency histogram.
pub const FSYNC_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];

impl SequencerStats {
    /// This node's role in a cluster.
    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::Acquire))
    }

    /// Records the newest epoch seen; each newer one counts as a change of leader.
    fn saw_epoch(&self, epoch: u64) {
        if self.epoch_seen.fetch_max(epoch, Ordering::AcqRel) < epoch {
            self.leader_changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn set_role(&self, role: Role) {
        self.role.store(role as u8, Ordering::Release);
    }

    /// The journal's state and, unless `Ok`, why.
    pub fn journal(&self) -> (JournalState, String) {
        let reason = self.journal_reason.lock().clone();
        (
            JournalState::from_u8(self.journal_state.load(Ordering::Acquire)),
            reason,
        )
    }

    /// The journal's head after the last durable batch: its last record's sequence number and
    /// chain hash (what the signer witnesses; `(0, zeros)` for an empty journal).
    pub fn journal_head(&self) -> (u64, [u8; 32]) {
        *self.journal_head.lock()
    }

    fn set_journal_head(&self, journal: &Journal) {
        *self.journal_head.lock() = (journal.next_seq().saturating_sub(1), journal.head_hash());
    }

    fn set_journal(&self, state: JournalState, reason: String) {
        *self.journal_reason.lock() = reason;
        self.journal_state.store(state as u8, Ordering::Release);
    }

    fn record_fsync(&self, ns: u64) {
        let us = ns / 1_000;
        let i = FSYNC_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(FSYNC_BUCKETS_US.len());
        self.fsync_buckets[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// A cloneable handle to the sequencer. Dropping every handle does not stop it; call `shutdown`.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<Request>,
    stats: Arc<SequencerStats>,
}

impl EngineHandle {
    /// Submits a command, waiting for room in the inbox, and waits until it is durable and applied.
    pub fn submit(&self, command: Command) -> Result<Committed, SubmitError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Request::Command(command, tx))
            .map_err(|_| stopped())?;
        rx.blocking_recv().map_err(|_| vanished())?
    }

    /// Enqueues a command, waiting for room in the inbox, without waiting for its answer: many
    /// enqueued before the first answer is awaited share group commits.
    pub fn enqueue(
        &self,
        command: Command,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Committed, SubmitError>>, SubmitError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Request::Command(command, tx))
            .map_err(|_| stopped())?;
        Ok(rx)
    }

    /// Like [`EngineHandle::submit`] but refuses at once with `Overloaded` when the inbox is full.
    pub fn try_submit(&self, command: Command) -> Result<Committed, SubmitError> {
        let rx = self.try_enqueue(command)?;
        rx.blocking_recv().map_err(|_| vanished())?
    }

    /// For async callers: enqueue without blocking, then await the returned receiver.
    pub fn try_enqueue(
        &self,
        command: Command,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Committed, SubmitError>>, SubmitError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.tx.try_send(Request::Command(command, tx)) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(SubmitError::Overloaded),
            Err(TrySendError::Disconnected(_)) => Err(stopped()),
        }
    }

    /// Runs a read-only function on the engine thread between batches (sees only durable state).
    pub fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> T + Send + 'static,
    ) -> Result<T, SubmitError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let q: Query = Box::new(move |e: &Engine| {
            let _ = tx.send(f(e));
        });
        self.tx.send(Request::Query(q)).map_err(|_| stopped())?;
        rx.blocking_recv().map_err(|_| stopped())
    }

    /// Writes a snapshot now; returns its path.
    pub fn snapshot(&self) -> Result<PathBuf, SubmitError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Request::Snapshot(tx)).map_err(|_| stopped())?;
        rx.blocking_recv()
            .map_err(|_| stopped())?
            .map_err(|e| SubmitError::Stopped(e.to_string()))
    }

    /// Walks the whole state and checks every invariant; a failure halts the engine.
    pub fn audit(&self) -> Result<AuditReport, SubmitError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Request::Audit(tx)).map_err(|_| stopped())?;
        rx.blocking_recv()
            .map_err(|_| stopped())?
            .map_err(|v| SubmitError::Halted(v.0))
    }

    /// Commands waiting in the inbox.
    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }

    pub fn stats(&self) -> &SequencerStats {
        &self.stats
    }
}

fn stopped() -> SubmitError {
    SubmitError::Stopped("sequencer is not running".into())
}

/// The sequencer took the command and went away without answering (it panicked while
/// applying, or stopped in between): the command may be in the journal.
pub fn vanished() -> SubmitError {
    SubmitError::OutcomeUnknown("the sequencer stopped after taking the command".into())
}

/// The running sequencer thread.
pub struct Sequencer {
    handle: EngineHandle,
    thread: Option<JoinHandle<Engine>>,
}

impl Sequencer {
    /// Starts the sequencer thread on a recovered engine and its open journal.
    pub fn start(
        engine: Engine,
        journal: Journal,
        config: EngineConfig,
        clock: impl Clock,
    ) -> Result<Sequencer, SequencerError> {
        Sequencer::start_with_feed(engine, journal, config, clock, None)
    }

    /// Like `start`, and sends every committed batch to `feed` (in order, after it is durable).
    pub fn start_with_feed(
        engine: Engine,
        journal: Journal,
        config: EngineConfig,
        clock: impl Clock,
        feed: Option<FeedSender>,
    ) -> Result<Sequencer, SequencerError> {
        Sequencer::start_inner(engine, journal, config, clock, feed, None)
    }

    /// A node of a replicated cluster: starts as a standby that follows `repl` and takes over
    /// writes when `repl` hands it the lease (docs/design/replication.md).
    pub fn start_replicated(
        engine: Engine,
        journal: Journal,
        config: EngineConfig,
        clock: impl Clock,
        feed: Option<FeedSender>,
        repl: Box<dyn Replicator>,
    ) -> Result<Sequencer, SequencerError> {
        Sequencer::start_inner(engine, journal, config, clock, feed, Some(repl))
    }

    fn start_inner(
        engine: Engine,
        journal: Journal,
        config: EngineConfig,
        clock: impl Clock,
        feed: Option<FeedSender>,
        repl: Option<Box<dyn Replicator>>,
    ) -> Result<Sequencer, SequencerError> {
        let snapshots = SnapshotStore::open(config.snapshot_dir())?.with_keep(config.snapshots_keep);
        let (tx, rx) = bounded(config.inbox_commands_max.max(1));
        let stats = Arc::new(SequencerStats::default());
        stats.last_seq.store(engine.last_seq(), Ordering::Relaxed);
        stats.set_journal_head(&journal);
        let role = if repl.is_some() {
            Role::Standby
        } else {
            Role::Single
        };
        stats.set_role(role);
        let worker = Worker {
            repl,
            role,
            begin: None,
            engine,
            journal,
            snapshots,
            config,
            clock: Box::new(clock),
            stats: stats.clone(),
            since_snapshot: 0,
            since_audit: 0,
            stopped: None,
            full_since: None,
            feed,
        };
        let thread = std::thread::Builder::new()
            .name("kinko-sequencer".into())
            .spawn(move || worker.run(rx))
            .map_err(SequencerError::Spawn)?;
        Ok(Sequencer {
            handle: EngineHandle { tx, stats },
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Stops accepting commands, finishes everything already queued, writes a final snapshot
    /// and returns the engine.
    pub fn shutdown(mut self) -> Result<Engine, SequencerError> {
        let _ = self.handle.tx.send(Request::Shutdown);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| SequencerError::Panicked),
            None => Err(SequencerError::AlreadyStopped),
        }
    }
}

struct Worker {
    engine: Engine,
    journal: Journal,
    snapshots: SnapshotStore,
    config: EngineConfig,
    clock: Box<dyn Clock>,
    stats: Arc<SequencerStats>,
    since_snapshot: u64,
    since_audit: u64,
    /// Why the worker refuses commands (journal failure or halted engine).
    stopped: Option<SubmitError>,
    /// While the journal's disk is full: the bytes the refused batch needed and when making
    /// room was last tried.
    full_since: Option<(u64, std::time::Instant)>,
    feed: Option<FeedSender>,
    /// The replicated log, in a cluster.
    repl: Option<Box<dyn Replicator>>,
    role: Role,
    /// The epoch a standby was just handed, journaled as the first batch it writes.
    begin: Option<(u64, String)>,
}

/// How long a standby waits for the stream in one call before it looks at its inbox again.
const FOLLOW_WAIT: Duration = Duration::from_millis(20);

impl Worker {
    fn run(mut self, rx: Receiver<Request>) -> Engine {
        let batch_max = self.config.batch_commands_max.max(1);
        let mut commands: Vec<(Command, ReplyTx)> = Vec::with_capacity(batch_max);
        let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(batch_max);
        let mut events: Vec<Event> = Vec::new();
        if self.role == Role::Standby && !self.follow(&rx) {
            return self.finish(rx, commands, payloads, events);
        }
        if let Some((epoch, node)) = self.begin.take() {
            // The first batch of this node's epoch: `BeginEpoch`, published like any other.
            let (tx, _rx) = tokio::sync::oneshot::channel();
            commands.push((Command::BeginEpoch { epoch, node }, tx));
            self.commit(&mut commands, &mut payloads, &mut events);
        }
        let tick = Duration::from_millis(self.config.tick_ms.max(1));
        loop {
            let first = match rx.recv_timeout(tick) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    self.tick_if_due(&mut commands, &mut payloads, &mut events);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut shutdown = false;
            let mut next = Some(first);
            // Drain up to a batch of commands; control requests end the batch and run after it.
            let mut control: Option<Request> = None;
            while let Some(req) = next.take() {
                match req {
                    Request::Command(c, tx) => commands.push((c, tx)),
                    other => {
                        control = Some(other);
                        break;
                    }
                }
                if commands.len() >= batch_max {
                    break;
                }
                next = rx.try_recv().ok();
            }
            self.commit(&mut commands, &mut payloads, &mut events);
            match control {
                Some(Request::Query(q)) => q(&self.engine),
                Some(Request::Snapshot(tx)) => {
                    let _ = tx.send(self.write_snapshot());
                }
                Some(Request::Audit(tx)) => {
                    let _ = tx.send(self.audit());
                }
                Some(Request::Shutdown) => shutdown = true,
                Some(Request::Command(..)) | None => {}
            }
            if shutdown {
                break;
            }
            // Busy or not, time-based work happens once it is due.
            self.tick_if_due(&mut commands, &mut payloads, &mut events);
        }
        self.finish(rx, commands, payloads, events)
    }

    /// Finishes what is queued, then snapshots, and hands the engine back.
    fn finish(
        mut self,
        rx: Receiver<Request>,
        mut commands: Vec<(Command, ReplyTx)>,
        mut payloads: Vec<Vec<u8>>,
        mut events: Vec<Event>,
    ) -> Engine {
        let batch_max = self.config.batch_commands_max.max(1);
        // Finish what is queued, then snapshot.
        while let Ok(req) = rx.try_recv() {
            match req {
                Request::Command(c, tx) => {
                    commands.push((c, tx));
                    if commands.len() >= batch_max {
                        self.commit(&mut commands, &mut payloads, &mut events);
                    }
                }
                Request::Query(q) => q(&self.engine),
                _ => {}
            }
        }
        self.commit(&mut commands, &mut payloads, &mut events);
        drop(rx);
        if self.stopped.is_none() && self.engine.last_seq() > 0 {
            if let Err(e) = self.write_snapshot() {
                tracing::error!(error = %e, "final snapshot failed");
            }
        }
        self.engine
    }

    /// A standby's loop: refuses commands (`NOT_LEADER`), answers queries, snapshots and audits,
    /// and applies what the stream committed, until it is handed the lease (`true`) or told to
    /// shut down (`false`). A divergence deposes it: it then only serves reads.
    fn follow(&mut self, rx: &Receiver<Request>) -> bool {
        loop {
            loop {
                let req = if self.role == Role::Deposed {
                    match rx.recv_timeout(Duration::from_millis(self.config.tick_ms.max(1))) {
                        Ok(r) => r,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => return false,
                    }
                } else {
                    match rx.try_recv() {
                        Ok(r) => r,
                        Err(crossbeam_channel::TryRecvError::Empty) => break,
                        Err(crossbeam_channel::TryRecvError::Disconnected) => return false,
                    }
                };
                match req {
                    Request::Command(_, tx) => {
                        let _ = tx.send(Err(self.not_leader()));
                    }
                    Request::Query(q) => q(&self.engine),
                    Request::Snapshot(tx) => {
                        let _ = tx.send(self.write_snapshot());
                    }
                    Request::Audit(tx) => {
                        let _ = tx.send(self.audit());
                    }
                    Request::Shutdown => return false,
                }
            }
            let Some(repl) = self.repl.as_mut() else {
                return false;
            };
            let head = self.journal.next_seq().saturating_sub(1);
            let followed = repl.follow(head, self.journal.head_hash(), FOLLOW_WAIT);
            self.stats.replication_lag.store(repl.lag(), Ordering::Relaxed);
            self.stats.saw_epoch(repl.epoch_seen());
            match followed {
                Follow::Batches(batches) => {
                    for b in batches {
                        if let Err(why) = self.apply_followed(b) {
                            self.depose_diverged(why);
                            break;
                        }
                    }
                }
                Follow::Lead { epoch, node } => {
                    tracing::info!(epoch, node = %node, seq = head, "cluster: this node holds the lease; taking over writes");
                    self.stats.epoch.store(epoch, Ordering::Release);
                    self.role = Role::Primary;
                    self.stats.set_role(Role::Primary);
                    self.begin = Some((epoch, node));
                    return true;
                }
                Follow::Diverged(why) => self.depose_diverged(why),
            }
        }
    }

    fn depose_diverged(&mut self, why: String) {
        tracing::error!(reason = %why, "cluster: this node's journal and the replicated log disagree; it stops following");
        self.role = Role::Deposed;
        self.stats.set_role(Role::Deposed);
        self.stats.set_journal(
            JournalState::Failed,
            format!("diverged from the replicated log: {why}"),
        );
    }

    /// Journals a batch the stream committed exactly as it was written (its sequence numbers and
    /// timestamp), checks the chain hash against the primary's, applies it and feeds it on.
    fn apply_followed(&mut self, b: ReplBatch) -> Result<(), String> {
        if b.records.is_empty() {
            return Ok(());
        }
        if b.first_seq != self.journal.next_seq() {
            return Err(format!(
                "the stream's next batch starts at {} but the journal's next record is {}",
                b.first_seq,
                self.journal.next_seq()
            ));
        }
        let mut commands = Vec::with_capacity(b.records.len());
        for (i, (kind, payload)) in b.records.iter().enumerate() {
            let c = decode_command(*kind, payload)
                .map_err(|e| format!("record {} does not decode: {e}", b.first_seq + i as u64))?;
            commands.push(c);
        }
        let records: Vec<RecordIn<'_>> = b
            .records
            .iter()
            .map(|(kind, payload)| RecordIn {
                timestamp_ns: b.timestamp_ns,
                kind: *kind,
                payload,
            })
            .collect();
        let started = std::time::Instant::now();
        let first = self.journal.append_batch(&records).map_err(|e| {
            self.stopped = Some(SubmitError::JournalFailed(format!("journal failure: {e}")));
            format!("the journal failed: {e}")
        })?;
        let fsync_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if first != b.first_seq || self.journal.head_hash() != b.head_hash {
            return Err(format!(
                "after record {} the journal's chain hash differs from the primary's",
                b.last_seq()
            ));
        }
        let mut events = Vec::new();
        for (i, c) in commands.iter().enumerate() {
            events.clear();
            let _ = self
                .engine
                .apply(b.first_seq + i as u64, b.timestamp_ns, c, &mut events);
        }
        if let Some(feed) = &self.feed {
            let batch = Arc::new(FeedBatch {
                first_seq: b.first_seq,
                timestamp_ns: b.timestamp_ns,
                commands,
            });
            if feed.send(batch).is_err() {
                self.feed = None;
            }
        }
        self.after_batch(b.records.len() as u64, fsync_ns);
        Ok(())
    }

    fn not_leader(&self) -> SubmitError {
        SubmitError::NotLeader(self.repl.as_ref().map(|r| r.leader()).unwrap_or_default())
    }

    /// A primary lost the lease or was fenced: it writes nothing more.
    fn depose(&mut self, e: &ReplicateError) {
        tracing::error!(error = %e, "cluster: deposed; this node accepts no more writes");
        self.role = Role::Deposed;
        self.stats.set_role(Role::Deposed);
        self.stopped = Some(self.not_leader());
    }

    fn tick_if_due(
        &mut self,
        commands: &mut Vec<(Command, ReplyTx)>,
        payloads: &mut Vec<Vec<u8>>,
        events: &mut Vec<Event>,
    ) {
        self.retry_room_if_full();
        let now = self.clock.now_ns();
        if self.stopped.is_none() && self.engine.next_deadline_ns().is_some_and(|d| d <= now) {
            let (tx, _rx) = tokio::sync::oneshot::channel();
            commands.push((Command::Tick, tx));
            self.commit(commands, payloads, events);
        }
    }

    /// Journals the batch (one write, one fsync), applies it and replies.
    fn commit(
        &mut self,
        commands: &mut Vec<(Command, ReplyTx)>,
        payloads: &mut Vec<Vec<u8>>,
        events: &mut Vec<Event>,
    ) {
        if commands.is_empty() {
            return;
        }
        if let Some(err) = &self.stopped {
            for (_, tx) in commands.drain(..) {
                let _ = tx.send(Err(err.clone()));
            }
            return;
        }
        if let Some(repl) = self.repl.as_mut() {
            if let Err(e) = repl.check_lead() {
                self.depose(&e);
                let err = self.not_leader();
                for (_, tx) in commands.drain(..) {
                    let _ = tx.send(Err(err.clone()));
                }
                return;
            }
        }
        let ts = self.clock.now_ns().max(self.engine.last_timestamp_ns());
        let Some((first_seq, fsync_ns)) = self.append(commands, payloads, ts) else {
            return;
        };
        if !self.replicate(commands, payloads, first_seq, ts) {
            return;
        }
        let n = commands.len() as u64;
        assert_eq!(
            first_seq,
            self.engine.last_seq() + 1,
            "journal and engine disagree on sequence"
        );
        self.apply_batch(commands, events, first_seq, ts);
        self.after_batch(n, fsync_ns);
    }

    /// Encodes the batch and appends it to the journal; returns its first sequence number and
    /// how long the write and fsync took. If the journal fails, every command in the batch is
    /// refused and the worker stops accepting commands.
    fn append(
        &mut self,
        commands: &mut Vec<(Command, ReplyTx)>,
        payloads: &mut Vec<Vec<u8>>,
        ts: u64,
    ) -> Option<(u64, u64)> {
        while payloads.len() < commands.len() {
            payloads.push(Vec::new());
        }
        for ((c, _), buf) in commands.iter().zip(payloads.iter_mut()) {
            encode_command(c, buf);
        }
        let records: Vec<RecordIn<'_>> = payloads[..commands.len()]
            .iter()
            .map(|p| RecordIn {
                timestamp_ns: ts,
                kind: RECORD_KIND_COMMAND,
                payload: p,
            })
            .collect();
        let bytes: u64 = records
            .iter()
            .map(|r| (kinko_journal::RECORD_HEADER_LEN + r.payload.len()) as u64)
            .sum();
        let started = std::time::Instant::now();
        match self.journal.append_batch(&records) {
            Ok(first_seq) => {
                self.journal_ok();
                Some((
                    first_seq,
                    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
                ))
            }
            Err(e) => {
                if let JournalError::Full { .. } = e {
                    self.stats.journal_full_batches.fetch_add(1, Ordering::Relaxed);
                }
                let reply = self.journal_failed(&e, bytes);
                for (_, tx) in commands.drain(..) {
                    let _ = tx.send(Err(reply.clone()));
                }
                None
            }
        }
    }

    /// In a cluster, stores the durable batch in the replicated log; `false` (every command
    /// answered, the node deposed) when the log did not take it.
    fn replicate(
        &mut self,
        commands: &mut Vec<(Command, ReplyTx)>,
        payloads: &[Vec<u8>],
        first_seq: u64,
        ts: u64,
    ) -> bool {
        let Some(repl) = self.repl.as_mut() else {
            return true;
        };
        let batch = ReplBatch {
            first_seq,
            timestamp_ns: ts,
            head_hash: self.journal.head_hash(),
            records: payloads[..commands.len()]
                .iter()
                .map(|p| (RECORD_KIND_COMMAND, p.clone()))
                .collect(),
        };
        let started = std::time::Instant::now();
        match repl.publish(&batch) {
            Ok(()) => {
                let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.stats.publish_ns_total.fetch_add(ns, Ordering::Relaxed);
                let us = ns / 1_000;
                let i = FSYNC_BUCKETS_US
                    .iter()
                    .position(|b| us <= *b)
                    .unwrap_or(FSYNC_BUCKETS_US.len());
                self.stats.publish_buckets[i].fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.depose(&e);
                let reply = match &e {
                    ReplicateError::Fenced(_) => self.not_leader(),
                    ReplicateError::Unknown(why) => SubmitError::OutcomeUnknown(format!(
                        "the replicated log did not acknowledge the batch: {why}"
                    )),
                };
                for (_, tx) in commands.drain(..) {
                    let _ = tx.send(Err(reply.clone()));
                }
                false
            }
        }
    }

    /// What a failed append means for its batch (the reply) and for the sequencer: a full disk
    /// refuses and retries; anything else stops all writing until a restart.
    fn journal_failed(&mut self, e: &JournalError, bytes: u64) -> SubmitError {
        if let JournalError::Full { .. } = e {
            if self.full_since.is_none() {
                tracing::error!(error = %e, "journal: disk full; commands are refused (not applied) until space is freed");
            }
            self.full_since = Some((bytes, std::time::Instant::now()));
            self.stats.set_journal(
                JournalState::Full,
                format!("the journal's disk is full; commands are refused until space is freed ({e})"),
            );
            return SubmitError::JournalFull(e.to_string());
        }
        tracing::error!(error = %e, "journal append failed; the engine stops accepting commands until it is restarted");
        self.full_since = None;
        self.stats.set_journal(
            JournalState::Failed,
            format!("the journal failed; a restart is needed ({e})"),
        );
        self.stopped = Some(SubmitError::JournalFailed(format!("journal failure: {e}")));
        if e.batch_may_be_durable() {
            SubmitError::OutcomeUnknown(format!("journal failure: {e}"))
        } else {
            SubmitError::JournalFailed(format!("journal failure: {e}"))
        }
    }

    /// The journal wrote: if its disk was full, it is no longer.
    fn journal_ok(&mut self) {
        if self.full_since.take().is_some() {
            tracing::info!("journal: space is back; writing again");
            self.stats.set_journal(JournalState::Ok, String::new());
        }
    }

    /// While the disk is full and no batch comes, tries (once per tick) to make room for the
    /// batch that was refused, so that the journal reports `Ok` as soon as space is back.
    fn retry_room_if_full(&mut self) {
        let Some((bytes, tried)) = self.full_since else {
            return;
        };
        if self.stopped.is_some() || tried.elapsed() < Duration::from_millis(self.config.tick_ms.max(1)) {
            return;
        }
        match self.journal.reserve(bytes) {
            Ok(()) => self.journal_ok(),
            Err(e) => {
                let _ = self.journal_failed(&e, bytes);
            }
        }
    }

    /// Applies a durable batch, replies to each command, then feeds the batch to the read side.
    fn apply_batch(
        &mut self,
        commands: &mut Vec<(Command, ReplyTx)>,
        events: &mut Vec<Event>,
        first_seq: u64,
        ts: u64,
    ) {
        let mut fed = self.feed.as_ref().map(|_| Vec::with_capacity(commands.len()));
        // The batch is durable: it counts as committed before anyone hears so. A shutdown that
        // follows a reply (the audit trail's last drain) then waits for this batch too.
        if !commands.is_empty() {
            let last = first_seq + commands.len() as u64 - 1;
            self.stats.last_seq.store(last, Ordering::Release);
        }
        for (i, (c, tx)) in commands.drain(..).enumerate() {
            events.clear();
            let seq = first_seq + i as u64;
            let reply = self.engine.apply(seq, ts, &c, events);
            let _ = tx.send(Ok(Committed {
                seq,
                timestamp_ns: ts,
                reply,
                events: std::mem::take(events),
            }));
            if let Some(f) = fed.as_mut() {
                f.push(c);
            }
        }
        if let (Some(feed), Some(commands)) = (&self.feed, fed) {
            let batch = Arc::new(FeedBatch {
                first_seq,
                timestamp_ns: ts,
                commands,
            });
            if feed.send(batch).is_err() {
                tracing::warn!("the command feed's reader has gone; feeding stops");
                self.feed = None;
            }
        }
    }

    /// After a batch of `n` commands: counters, and the periodic audit and snapshot when due.
    fn after_batch(&mut self, n: u64, fsync_ns: u64) {
        self.stats.commands.fetch_add(n, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.fsync_ns_total.fetch_add(fsync_ns, Ordering::Relaxed);
        self.stats.record_fsync(fsync_ns);
        self.stats
            .last_seq
            .store(self.engine.last_seq(), Ordering::Release);
        self.stats.set_journal_head(&self.journal);
        self.since_snapshot += n;
        self.since_audit += n;
        if self.config.audit_every_commands > 0 && self.since_audit >= self.config.audit_every_commands {
            let _ = self.audit();
        }
        if self.stopped.is_none()
            && self.config.snapshot_every_commands > 0
            && self.since_snapshot >= self.config.snapshot_every_commands
        {
            if let Err(e) = self.write_snapshot() {
                tracing::error!(error = %e, "periodic snapshot failed");
            }
        }
    }

    fn audit(&mut self) -> Result<AuditReport, InvariantViolation> {
        self.since_audit = 0;
        let result = self.engine.audit();
        self.stats.audit_last_ok.store(result.is_ok(), Ordering::Release);
        self.stats
            .audit_last_ns
            .store(self.clock.now_ns(), Ordering::Release);
        match result {
            Ok(r) => Ok(r),
            Err(v) => {
                self.stats.audits_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(violation = %v, seq = self.engine.last_seq(), "INVARIANT VIOLATED: engine halted");
                self.stopped = Some(SubmitError::Halted(v.0.clone()));
                Err(v)
            }
        }
    }

    fn write_snapshot(&mut self) -> Result<PathBuf, JournalError> {
        self.since_snapshot = 0;
        let (meta, payload) = crate::snapshot_of(&self.engine, self.journal.head_hash());
        let path = self.snapshots.write(&meta, &payload)?;
        self.stats.snapshot_last_seq.store(meta.seq, Ordering::Release);
        self.stats
            .snapshot_last_ns
            .store(self.clock.now_ns(), Ordering::Release);
        tracing::info!(seq = meta.seq, path = %path.display(), "snapshot written");
        Ok(path)
    }
}
