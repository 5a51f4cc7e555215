//! Restart time at any journal length.
//!
//! Builds a data directory whose journal holds `--records` commands (default 100 M) — limit
//! orders placed and cancelled again on one market by 1,000 funded accounts, the small payloads
//! an exchange journals most — with a snapshot `--tail` records before the head, then times
//! `recover` (open the journal — verifying what its checkpoint does not cover —, load the
//! snapshot, replay the tail, audit) end to end, twice,
//! and a full `kinko_journal::verify` for comparison. The generated directory is deleted
//! afterwards unless `--keep` is given; `--reuse` times an existing one without building.
//!
//! ```text
//! cargo run --release -p kinko-engine --example restart_bench -- \
//!     [--records N] [--tail N] [--dir DIR] [--keep] [--reuse]
//! ```
//!
//! The output is `key=value` lines. Floating point appears only to print durations.
#![allow(clippy::float_arithmetic)]

use kinko_core::book::{Side, Stp, TimeInForce};
use kinko_core::engine::{Command, Engine, Reply};
use kinko_core::trading::{OrderRef, OrderType, PlaceOrder};
use kinko_core::{Amount, UserId};
use kinko_engine::{encode_command, recover, EngineConfig, RECORD_KIND_COMMAND};
use kinko_journal::{Journal, JournalConfig, RecordIn, SnapshotStore};
use std::path::{Path, PathBuf};
use std::time::Instant;

use kinko_engine::benchkit::{funding, setup, MKT, POOL};
/// Records per `append_batch` while building.
const BATCH_RECORDS: usize = 8_192;

type Error = Box<dyn std::error::Error>;

struct Options {
    records: u64,
    tail: u64,
    dir: PathBuf,
    keep: bool,
    reuse: bool,
}

fn options() -> Result<Options, Error> {
    let mut o = Options {
        records: 100_000_000,
        tail: 100_000,
        dir: std::env::temp_dir().join(format!("kinko-restart-bench-{}", std::process::id())),
        keep: false,
        reuse: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--records" => o.records = value()?.replace('_', "").parse()?,
            "--tail" => o.tail = value()?.replace('_', "").parse()?,
            "--dir" => o.dir = PathBuf::from(value()?),
            "--keep" => o.keep = true,
            "--reuse" => {
                o.reuse = true;
                o.keep = true;
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(o)
}

/// Builds the journal and the snapshot: every command is applied to an engine and appended.
struct Builder {
    engine: Engine,
    journal: Journal,
    store: SnapshotStore,
    payloads: Vec<Vec<u8>>,
    stamps: Vec<u64>,
    events: Vec<kinko_core::engine::Event>,
}

impl Builder {
    fn push(&mut self, cmd: &Command) -> Result<Option<Reply>, Error> {
        let seq = self.engine.last_seq() + 1;
        let ts = 1_000_000_000 + seq * 1_000;
        self.events.clear();
        let reply = self.engine.apply(seq, ts, cmd, &mut self.events).ok();
        let n = self.stamps.len();
        if self.payloads.len() <= n {
            self.payloads.push(Vec::new());
        }
        encode_command(cmd, &mut self.payloads[n]);
        self.stamps.push(ts);
        if self.stamps.len() == BATCH_RECORDS {
            self.flush()?;
        }
        Ok(reply)
    }

    fn flush(&mut self) -> Result<(), Error> {
        let batch: Vec<RecordIn<'_>> = self
            .stamps
            .iter()
            .zip(&self.payloads)
            .map(|(&timestamp_ns, payload)| RecordIn {
                timestamp_ns,
                kind: RECORD_KIND_COMMAND,
                payload,
            })
            .collect();
        self.journal.append_batch(&batch)?;
        self.stamps.clear();
        Ok(())
    }

    fn snapshot(&mut self) -> Result<(), Error> {
        self.flush()?;
        let (meta, payload) = kinko_engine::snapshot_of(&self.engine, self.journal.head_hash());
        self.store.write(&meta, &payload)?;
        Ok(())
    }
}

fn build(cfg: &EngineConfig, records: u64, tail: u64) -> Result<(), Error> {
    let (journal, _) = Journal::open(JournalConfig::new(cfg.journal_dir()))?;
    let mut b = Builder {
        engine: Engine::new(),
        journal,
        store: SnapshotStore::open(cfg.snapshot_dir())?,
        payloads: Vec::new(),
        stamps: Vec::new(),
        events: Vec::new(),
    };
    let started = Instant::now();
    for c in setup() {
        b.push(&c)?;
    }
    let f = funding(&b.engine);
    b.push(&f)?;
    let snapshot_at = records.saturating_sub(tail);
    let mut i = 0u64;
    let mut order = None;
    while b.engine.last_seq() < records {
        if b.engine.last_seq() == snapshot_at {
            b.snapshot()?;
        }
        // Alternately place a resting bid below the reference price and cancel it.
        let user = UserId(i % POOL);
        let cmd = match order.take() {
            Some(id) => Command::CancelOrder {
                user,
                order: OrderRef::Id(id),
            },
            None => Command::PlaceOrder(PlaceOrder {
                user,
                market: MKT,
                client_id: None,
                side: Side::Buy,
                order_type: OrderType::Limit {
                    price: Amount(u128::from(31_000 + i % 1_000)),
                    tif: TimeInForce::Gtc,
                },
                qty: Some(Amount(u128::from(1 + i % 50))),
                stp: Stp::CancelNewest,
            }),
        };
        match b.push(&cmd)? {
            Some(Reply::OrderPlaced(p)) => order = Some(p.order.id),
            _ => i += 1,
        }
        if b.engine.last_seq().is_multiple_of(10_000_000) {
            eprintln!(
                "built {} records in {:.1} s",
                b.engine.last_seq(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    b.flush()?;
    let bytes: u64 = std::fs::read_dir(cfg.journal_dir())?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "bench=restart step=build records={} journal_bytes={bytes} snapshot_seq={snapshot_at} secs={:.1}",
        b.engine.last_seq(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn time_restart(cfg: &EngineConfig, run: u32) -> Result<(), Error> {
    let started = Instant::now();
    let (engine, journal, report) = recover(cfg)?;
    let secs = started.elapsed().as_secs_f64();
    drop(journal);
    println!(
        "bench=restart step=recover run={run} secs={secs:.3} head_seq={} verified_at_start={} checkpoint_seq={} snapshot_seq={} replayed={} state_hash={}",
        report.head_seq,
        report.journal_records_verified,
        report.journal_checkpoint_seq,
        report.snapshot_seq,
        report.replayed,
        hex(&engine.state_hash()[..8]),
    );
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn dir_free(path: &Path) -> String {
    std::process::Command::new("df")
        .args(["-h", "--output=avail"])
        .arg(path)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .last()
                .unwrap_or("?")
                .to_owned()
        })
        .unwrap_or_else(|_| "?".into())
}

fn main() -> Result<(), Error> {
    let o = options()?;
    let cfg = EngineConfig::new(&o.dir);
    if !o.reuse {
        if o.dir.exists() {
            return Err(format!("{} exists; pass --reuse to time it", o.dir.display()).into());
        }
        std::fs::create_dir_all(&o.dir)?;
        eprintln!(
            "building {} records in {} (free: {})",
            o.records,
            o.dir.display(),
            dir_free(&o.dir)
        );
        build(&cfg, o.records, o.tail)?;
    }
    let result = (|| -> Result<(), Error> {
        time_restart(&cfg, 1)?;
        time_restart(&cfg, 2)?;
        let started = Instant::now();
        let v = kinko_journal::verify(&cfg.journal_dir())?;
        println!(
            "bench=restart step=verify records={} segments={} secs={:.3}",
            v.records,
            v.segments,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })();
    if !o.keep {
        std::fs::remove_dir_all(&o.dir)?;
    }
    result
}
