//! Durable commands/s and per-command latency with the local journal alone and with the
//! journal replicated on a three-node `nats-server` cluster on loopback, in the same run:
//! `cargo run --release -p kinko-cluster --example bench_replication [COMMANDS] [WINDOW]`.
//! WINDOW commands are kept in flight (submitters waiting for their replies).
// Rates and percentiles of a measurement, never money.
#![allow(clippy::float_arithmetic)]

use kinko_cluster::testkit::NatsCluster;
use kinko_cluster::{ClusterConfig, JetStreamLog};
use kinko_core::ledger::{SystemAccount, TransferKind, TransferRequest};
use kinko_core::{AccountId, Amount, AssetCode, AssetId, Command, Reply, TransferId, UserId};
use kinko_engine::{recover, EngineConfig, EngineHandle, Role, Sequencer, SystemClock};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

fn ok(h: &EngineHandle, c: Command) -> Reply {
    h.submit(c).expect("submit").reply.expect("accepted")
}

fn transfer(id: u128, debit: AccountId, credit: AccountId, amount: u128) -> Command {
    Command::Transfers(vec![TransferRequest {
        id: TransferId(id),
        kind: TransferKind::Post {
            debit,
            credit,
            amount: Amount(amount),
        },
        linked: false,
        code: 1,
        user_data: 0,
    }])
}

fn setup(h: &EngineHandle) -> Vec<AccountId> {
    ok(
        h,
        Command::DefineAsset {
            code: AssetCode::new("BTC").unwrap(),
            decimals: 8,
        },
    );
    let mut accounts = Vec::new();
    for u in 0..16 {
        if let Reply::AccountOpened { account } = ok(
            h,
            Command::OpenAccount {
                user: UserId(u),
                asset: AssetId(0),
            },
        ) {
            accounts.push(account);
        }
    }
    let hot = h
        .query(|e| {
            e.asset(AssetId(0))
                .unwrap()
                .system_account(SystemAccount::HotWallet)
        })
        .unwrap();
    for (i, a) in accounts.iter().enumerate() {
        ok(h, transfer(i as u128 + 1, hot, *a, 1_000_000_000));
    }
    accounts
}

/// Runs `n` transfers with `window` in flight; prints commands/s and latency percentiles.
fn run(mode: &str, h: &EngineHandle, n: u128, window: usize) {
    let accounts = setup(h);
    let batches0 = h.stats().batches.load(std::sync::atomic::Ordering::Relaxed);
    let mut lat = Vec::with_capacity(n as usize);
    type Pending = tokio::sync::oneshot::Receiver<Result<kinko_engine::Committed, kinko_engine::SubmitError>>;
    let mut inflight: VecDeque<(Instant, Pending)> = VecDeque::with_capacity(window);
    let started = Instant::now();
    for i in 0..n {
        if inflight.len() >= window {
            let (t, rx) = inflight.pop_front().unwrap();
            rx.blocking_recv().unwrap().expect("durable");
            lat.push(t.elapsed());
        }
        let a = accounts[(i as usize) % accounts.len()];
        let b = accounts[(i as usize + 1) % accounts.len()];
        let rx = loop {
            match h.try_enqueue(transfer(1_000 + i, a, b, 1)) {
                Ok(rx) => break rx,
                Err(_) => std::thread::yield_now(),
            }
        };
        inflight.push_back((Instant::now(), rx));
    }
    for (t, rx) in inflight {
        rx.blocking_recv().unwrap().expect("durable");
        lat.push(t.elapsed());
    }
    let secs = started.elapsed().as_secs_f64();
    let batches = h.stats().batches.load(std::sync::atomic::Ordering::Relaxed) - batches0;
    lat.sort();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    println!(
        "bench=replication mode={mode} commands={n} window={window} secs={secs:.3} commands_per_s={:.0} batches={batches} mean_batch={:.1} p50={:?} p99={:?}",
        n as f64 / secs,
        n as f64 / batches.max(1) as f64,
        p(0.50),
        p(0.99)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u128 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let window: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(256);

    let local = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(local.path());
    cfg.snapshot_every_commands = 0;
    cfg.audit_every_commands = 0;
    let (engine, journal, _) = recover(&cfg).unwrap();
    let s = Sequencer::start(engine, journal, cfg, SystemClock).unwrap();
    run("local", &s.handle(), n, window);
    s.shutdown().unwrap();

    let nats = NatsCluster::start(3).expect("nats-server cluster");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.snapshot_every_commands = 0;
    cfg.audit_every_commands = 0;
    let (engine, journal, _) = recover(&cfg).unwrap();
    let log = JetStreamLog::connect(ClusterConfig::new(nats.urls(), "bench", "http://bench")).unwrap();
    let s = Sequencer::start_replicated(engine, journal, cfg, SystemClock, None, Box::new(log)).unwrap();
    let h = s.handle();
    let started = Instant::now();
    while h.stats().role() != Role::Primary {
        assert!(started.elapsed() < Duration::from_secs(30), "no lease");
        std::thread::sleep(Duration::from_millis(20));
    }
    run("replicated", &h, n, window);
    s.shutdown().unwrap();
}
