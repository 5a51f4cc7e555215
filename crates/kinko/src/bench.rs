//! `kinko bench`: measurements on this machine, printed as `key=value` lines. Timing uses the
//! monotonic clock; these are measurements, not tests.
//!
//! Floating point appears here only to print rates and durations for people; no amount of
//! money is ever a float.
#![allow(clippy::float_arithmetic)]

use anyhow::{bail, Context};
use clap::Subcommand;
use kinko_core::ledger::{SystemAccount, TransferKind, TransferRequest};
use kinko_core::{AccountId, Amount, AssetCode, Command, Engine, Reply, TransferId, UserId};
use kinko_engine::{recover, EngineConfig, Sequencer, SystemClock};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Ledger transfers per second in-process (no journal): customer-to-customer transfers
    /// among 1,000 funded accounts, `batch` transfers per command.
    Ledger {
        /// Transfers to make in all.
        #[arg(long, default_value_t = 2_000_000)]
        transfers: u64,
        /// Transfers per command.
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// The durable pipeline: commands through the sequencer (journal + fdatasync group commit +
    /// engine), for each of the given batch limits. The journal lives in DIR (default: a fresh
    /// directory under the system temp dir, removed afterwards).
    Pipeline {
        /// Commands to submit for each batch limit.
        #[arg(long, default_value_t = 1_000_000)]
        commands: u64,
        /// Batch limits to measure (commands per fsync at most).
        #[arg(long, value_delimiter = ',', default_value = "1,100,10000")]
        batches: Vec<usize>,
        /// Where the journal lives (default: a fresh temp directory, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Journal replay: writes `records` commands, then measures recovery (read, verify checksums
    /// and hash chain, decode, apply) from the journal alone, and from a snapshot.
    Replay {
        /// Commands to write before measuring their replay.
        #[arg(long, default_value_t = 2_000_000)]
        records: u64,
        /// Where the journal lives (default: a fresh temp directory, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The full engine on the standard LOBWKLD1 order stream (see ../shared/bench): pre-trade
    /// checks, matching and ledger settlement with fees, buyers and sellers cycling through a
    /// pool of 1,000 funded accounts. Checks the end state against the stream's EXPECT line.
    /// With --durable, every command goes through the sequencer (journal + fsync group commit).
    Engine {
        /// A LOBWKLD1 file made by lobgen (its `.summary.txt` must sit beside it).
        #[arg(long)]
        workload: PathBuf,
        /// Through the sequencer, journal and fsync instead of in-process.
        #[arg(long)]
        durable: bool,
        /// Journal directory for --durable (default: a fresh temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Order entry over HTTP: a real gateway on a fresh data directory with the configured
    /// markets, `connections` keep-alive connections placing BTC-USD limit orders back to back.
    Http {
        /// Orders to place in all.
        #[arg(long, default_value_t = 200_000)]
        orders: u64,
        /// Keep-alive connections placing orders at once.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Each connection cancels its open orders after this many orders (0 = never).
        #[arg(long, default_value_t = 100)]
        cancel_every: u64,
        /// Tokio worker threads for the server.
        #[arg(long, default_value_t = 2)]
        server_threads: usize,
    },
    /// Order entry while WebSocket subscribers watch the book: for each subscriber count, a real
    /// gateway, half the subscribers on the native feed (level2 + trades), half on the Coinbase
    /// feed (level2 + matches), orders offered at a fixed rate; reports order-entry latency
    /// (from each order's scheduled time) and WebSocket messages delivered per second.
    Feed {
        /// Subscriber counts to measure, each on a fresh server.
        #[arg(long, value_delimiter = ',', default_value = "0,1000")]
        subscribers: Vec<usize>,
        /// Orders offered per second (open loop).
        #[arg(long, default_value_t = 2_000)]
        orders_per_s: u64,
        /// How long orders are offered, in seconds.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Keep-alive connections the orders are spread over.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Tokio worker threads for the server's HTTP runtime.
        #[arg(long, default_value_t = 2)]
        server_threads: usize,
    },
    /// A load generator on a real data directory (the configured one): opens funded accounts
    /// if needed, then submits `commands` single-transfer commands (ids from `id_base`) with many
    /// in flight. With --print-acks it prints `ack <seq> <transfer id>` for each command as soon
    /// as its reply arrives, i.e. once it is durable (used by the crash tests).
    Load {
        /// Transfer commands to submit.
        #[arg(long, default_value_t = 100_000)]
        commands: u64,
        /// The first transfer id (the next ones follow it).
        #[arg(long, default_value_t = 1_000_000_000)]
        id_base: u64,
        /// Print `ack <seq> <transfer id>` as each command becomes durable.
        #[arg(long)]
        print_acks: bool,
    },
    /// The proof of liabilities for one asset over `accounts` customers: salts, the Merkle sum
    /// tree, the signed root and one verified proof; time of each step and peak memory.
    Proof {
        /// Customers in the tree.
        #[arg(long, default_value_t = 1_000_000)]
        accounts: u64,
    },
}

pub fn run(cmd: BenchCmd, config: &crate::config::Config) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Ledger { transfers, batch } => ledger(transfers, batch),
        BenchCmd::Pipeline {
            commands,
            batches,
            dir,
        } => pipeline(commands, &batches, dir),
        BenchCmd::Replay { records, dir } => replay(records, dir),
        BenchCmd::Engine {
            workload,
            durable,
            dir,
        } => crate::bench_engine::run(&workload, durable, dir),
        BenchCmd::Load {
            commands,
            id_base,
            print_acks,
        } => load(config, commands, id_base, print_acks),
        BenchCmd::Proof { accounts } => crate::proof::bench(accounts),
        BenchCmd::Feed {
            subscribers,
            orders_per_s,
            secs,
            connections,
            server_threads,
        } => crate::bench_feed::run(
            config,
            &crate::bench_feed::Options {
                subscribers,
                orders_per_s,
                secs,
                connections,
                server_threads,
            },
        ),
        BenchCmd::Http {
            orders,
            connections,
            cancel_every,
            server_threads,
        } => crate::bench_http::run(
            config,
            &crate::bench_http::Options {
                orders,
                connections,
                cancel_every,
                server_threads,
            },
        ),
    }
}

const ACCOUNTS: u64 = 1_000;

/// A BTC asset and ACCOUNTS funded customers, as commands.
fn setup_commands() -> Vec<Command> {
    let mut cmds = vec![Command::DefineAsset {
        code: AssetCode::new("BTC").expect("valid code"),
        decimals: 8,
    }];
    for u in 0..ACCOUNTS {
        cmds.push(Command::OpenAccount {
            user: UserId(u),
            asset: kinko_core::AssetId(0),
        });
    }
    cmds
}

fn funding(engine: &Engine) -> Command {
    let asset = engine.asset(kinko_core::AssetId(0)).expect("asset defined");
    let hot = asset.system_account(SystemAccount::HotWallet);
    let reqs = (0..ACCOUNTS)
        .map(|u| TransferRequest {
            id: TransferId(u128::from(u) + 1),
            kind: TransferKind::Post {
                debit: hot,
                credit: engine
                    .ledger()
                    .customer_account(UserId(u), kinko_core::AssetId(0))
                    .expect("opened"),
                amount: Amount(1_000_000_000_000),
            },
            linked: false,
            code: 1,
            user_data: 0,
        })
        .collect();
    Command::Transfers(reqs)
}

/// The i-th benchmark transfer: 1 minor unit between two customers.
fn transfer(i: u64, accounts: &[AccountId]) -> TransferRequest {
    let n = accounts.len() as u64;
    let from = accounts[(i % n) as usize];
    let to = accounts[((i * 7 + 1) % n) as usize];
    let to = if to == from {
        accounts[((i + 1) % n) as usize]
    } else {
        to
    };
    TransferRequest {
        id: TransferId(u128::from(i) + 1_000_000),
        kind: TransferKind::Post {
            debit: from,
            credit: to,
            amount: Amount(1),
        },
        linked: false,
        code: 2,
        user_data: 0,
    }
}

fn customer_accounts(engine: &Engine) -> Vec<AccountId> {
    (0..ACCOUNTS)
        .filter_map(|u| {
            engine
                .ledger()
                .customer_account(UserId(u), kinko_core::AssetId(0))
        })
        .collect()
}

fn ledger(transfers: u64, batch: usize) -> anyhow::Result<()> {
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let mut engine = Engine::new();
    let mut events = Vec::new();
    let mut seq = 0;
    let mut apply = |engine: &mut Engine, c: &Command| {
        seq += 1;
        events.clear();
        engine.apply(seq, seq, c, &mut events)
    };
    for c in setup_commands() {
        apply(&mut engine, &c).map_err(anyhow::Error::msg)?;
    }
    let f = funding(&engine);
    apply(&mut engine, &f).map_err(anyhow::Error::msg)?;
    let accounts = customer_accounts(&engine);
    // Build commands before timing.
    let cmds: Vec<Command> = (0..transfers)
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(|ch| Command::Transfers(ch.iter().map(|&i| transfer(i, &accounts)).collect()))
        .collect();
    let started = Instant::now();
    let mut ok = 0u64;
    for c in &cmds {
        if let Ok(Reply::Transfers(r)) = apply(&mut engine, c) {
            ok += r.iter().filter(|x| x.is_ok()).count() as u64;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if ok != transfers {
        bail!("only {ok} of {transfers} transfers applied");
    }
    engine.audit().map_err(|v| anyhow::anyhow!("{v}"))?;
    println!(
        "bench=ledger transfers={transfers} batch={batch} secs={secs:.3} transfers_per_s={:.0}",
        transfers as f64 / secs
    );
    Ok(())
}

/// A benchmark's directory: the one given, or a fresh one under the system temp dir that is
/// removed afterwards.
pub(crate) struct TempDir(pub(crate) PathBuf, bool);
impl TempDir {
    pub(crate) fn new(dir: Option<PathBuf>, name: &str) -> anyhow::Result<TempDir> {
        match dir {
            Some(d) => Ok(TempDir(d, false)),
            None => {
                let d = std::env::temp_dir().join(format!("kinko-bench-{name}-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&d);
                std::fs::create_dir_all(&d)?;
                Ok(TempDir(d, true))
            }
        }
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Starts a sequencer on a fresh directory with the setup applied.
fn fresh_sequencer(dir: &std::path::Path, batch_max: usize) -> anyhow::Result<(Sequencer, Vec<AccountId>)> {
    let _ = std::fs::remove_dir_all(dir);
    let mut cfg = EngineConfig::new(dir);
    cfg.batch_commands_max = batch_max;
    cfg.inbox_commands_max = 65_536;
    cfg.snapshot_every_commands = 0;
    cfg.audit_every_commands = 0;
    let (engine, journal, _) = recover(&cfg)?;
    let seq = Sequencer::start(engine, journal, cfg, SystemClock).map_err(anyhow::Error::msg)?;
    let h = seq.handle();
    for c in setup_commands() {
        h.submit(c)?;
    }
    let f = h.query(funding)?;
    h.submit(f)?;
    let accounts = h.query(customer_accounts)?;
    Ok((seq, accounts))
}

/// Enqueues every command without waiting for replies (keeping at most `window` in flight), the
/// way many concurrent clients would, and waits for all replies.
fn drive(h: &kinko_engine::EngineHandle, cmds: Vec<Command>, window: usize) -> anyhow::Result<u64> {
    let mut inflight = std::collections::VecDeque::with_capacity(window);
    let mut ok = 0u64;
    let mut settle = |rx: tokio::sync::oneshot::Receiver<_>| -> anyhow::Result<()> {
        let c: kinko_engine::Committed = rx.blocking_recv().context("sequencer stopped")??;
        if c.reply.is_ok() {
            ok += 1;
        }
        Ok(())
    };
    for c in cmds {
        if inflight.len() >= window {
            settle(inflight.pop_front().expect("non-empty"))?;
        }
        inflight.push_back(h.try_enqueue(c).map_err(|e| match e {
            kinko_engine::SubmitError::Overloaded => anyhow::anyhow!("inbox overloaded"),
            other => other.into(),
        })?);
    }
    for rx in inflight {
        settle(rx)?;
    }
    Ok(ok)
}

fn pipeline(commands: u64, batches: &[usize], dir: Option<PathBuf>) -> anyhow::Result<()> {
    let tmp = TempDir::new(dir, "pipeline")?;
    for &batch in batches {
        if batch == 0 {
            bail!("batch limits must be at least 1");
        }
        let dir = tmp.0.join(format!("b{batch}"));
        let (seq, accounts) = fresh_sequencer(&dir, batch)?;
        let h = seq.handle();
        // Fewer commands at batch 1: each costs a full fsync.
        let n = if batch == 1 { commands.min(2_000) } else { commands };
        let cmds: Vec<Command> = (0..n)
            .map(|i| Command::Transfers(vec![transfer(i, &accounts)]))
            .collect();
        let batches_before = h.stats().batches.load(std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        let ok = drive(&h, cmds, 60_000)?;
        let secs = started.elapsed().as_secs_f64();
        let nb = h.stats().batches.load(std::sync::atomic::Ordering::Relaxed) - batches_before;
        let fsync_ns = h
            .stats()
            .fsync_ns_total
            .load(std::sync::atomic::Ordering::Relaxed);
        seq.shutdown().map_err(anyhow::Error::msg)?;
        if ok != n {
            bail!("only {ok} of {n} commands succeeded");
        }
        println!(
            "bench=pipeline batch_max={batch} commands={n} secs={secs:.3} commands_per_s={:.0} fsyncs={nb} mean_batch={:.1} mean_append_fsync_us={:.1}",
            n as f64 / secs,
            n as f64 / nb.max(1) as f64,
            fsync_ns as f64 / 1_000.0 / nb.max(1) as f64
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn replay(records: u64, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let tmp = TempDir::new(dir, "replay")?;
    let dir = tmp.0.join("data");
    let (seq, accounts) = fresh_sequencer(&dir, 8_192)?;
    let h = seq.handle();
    let cmds: Vec<Command> = (0..records)
        .map(|i| Command::Transfers(vec![transfer(i, &accounts)]))
        .collect();
    drive(&h, cmds, 60_000)?;
    let live_hash = h.query(|e| e.state_hash())?;
    // Shut down without the final snapshot so that recovery replays everything.
    let mut cfg = EngineConfig::new(&dir);
    cfg.snapshot_every_commands = 0;
    seq.shutdown().map_err(anyhow::Error::msg)?;
    let _ = std::fs::remove_dir_all(cfg.snapshot_dir());
    let started = Instant::now();
    let (engine, _j, report) = recover(&cfg)?;
    let secs = started.elapsed().as_secs_f64();
    if engine.state_hash() != live_hash {
        bail!("replayed state differs from the live state");
    }
    println!(
        "bench=replay source=journal records={} secs={secs:.3} records_per_s={:.0} state_hash_matches=true",
        report.replayed,
        report.replayed as f64 / secs
    );
    // Now from a snapshot near the head: restart-to-serving time.
    let (engine, journal, _) = recover(&cfg)?;
    let s = Sequencer::start(engine, journal, cfg.clone(), SystemClock).map_err(anyhow::Error::msg)?;
    s.handle().snapshot()?;
    s.shutdown().map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let (engine, _j, report) = recover(&cfg)?;
    let secs = started.elapsed().as_secs_f64();
    if engine.state_hash() != live_hash {
        bail!("state from snapshot differs from the live state");
    }
    println!(
        "bench=replay source=snapshot snapshot_seq={} replayed={} secs={secs:.3} state_hash_matches=true",
        report.snapshot_seq, report.replayed
    );
    Ok(())
}

fn load(config: &crate::config::Config, commands: u64, id_base: u64, print_acks: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let _lock = crate::serve::DataDirLock::acquire(&config.data_dir)?;
    let cfg = config.engine_config();
    let (engine, journal, report) = recover(&cfg)?;
    if let Some(t) = &report.torn_tail {
        eprintln!("torn tail repaired: {t}");
    }
    let fresh = engine.assets().is_empty();
    let seq = Sequencer::start(engine, journal, cfg, SystemClock).map_err(anyhow::Error::msg)?;
    let h = seq.handle();
    if fresh {
        for c in setup_commands() {
            h.submit(c)?;
        }
        let f = h.query(funding)?;
        h.submit(f)?;
    }
    let accounts = h.query(customer_accounts)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut inflight = std::collections::VecDeque::new();
    for i in 0..commands {
        let mut t = transfer(i, &accounts);
        t.id = TransferId(u128::from(id_base) + u128::from(i));
        let rx = loop {
            match h.try_enqueue(Command::Transfers(vec![t])) {
                Ok(rx) => break rx,
                Err(kinko_engine::SubmitError::Overloaded) => {
                    // Push back: wait for the oldest reply before submitting more.
                    let Some((id, rx)) = inflight.pop_front() else {
                        continue;
                    };
                    ack(&mut out, rx, id, print_acks)?;
                }
                Err(e) => return Err(e.into()),
            }
        };
        inflight.push_back((t.id, rx));
        if inflight.len() > 1_000 {
            let (id, rx) = inflight.pop_front().expect("non-empty");
            ack(&mut out, rx, id, print_acks)?;
        }
    }
    for (id, rx) in inflight {
        ack(&mut out, rx, id, print_acks)?;
    }
    out.flush()?;
    seq.shutdown().map_err(anyhow::Error::msg)?;
    Ok(())
}

fn ack(
    out: &mut impl std::io::Write,
    rx: tokio::sync::oneshot::Receiver<Result<kinko_engine::Committed, kinko_engine::SubmitError>>,
    id: TransferId,
    print: bool,
) -> anyhow::Result<()> {
    let c = rx.blocking_recv().context("sequencer stopped")??;
    if let Ok(Reply::Transfers(r)) = &c.reply {
        if r.iter().all(|x| x.is_ok()) && print {
            writeln!(out, "ack {} {}", c.seq, id.0)?;
            out.flush()?;
        }
    }
    Ok(())
}
