//! The durable engine on real files: replies only after durability, replay equality from the
//! journal alone and from snapshot + tail, torn tails, foreign or corrupt snapshots, push-back.

use kinko_core::ledger::{SystemAccount, TransferKind, TransferRequest};
use kinko_core::{AccountId, Amount, AssetCode, AssetId, Command, Reply, TransferId, UserId};
use kinko_engine::{recover, Clock, EngineConfig, EngineHandle, Sequencer, SubmitError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

/// A clock the test moves by hand (the engine must never read any other).
#[derive(Clone, Default)]
struct TestClock(Arc<AtomicU64>);
impl Clock for TestClock {
    fn now_ns(&self) -> u64 {
        self.0.fetch_add(1_000, Ordering::Relaxed) + 1_000_000
    }
}

fn config(dir: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.snapshot_every_commands = 0;
    c.audit_every_commands = 1;
    c.segment_bytes_max = 1 << 20;
    c
}

fn start(cfg: &EngineConfig) -> (Sequencer, kinko_engine::RecoveryReport) {
    let (engine, journal, report) = recover(cfg).expect("recover");
    let s = Sequencer::start(engine, journal, cfg.clone(), TestClock::default()).expect("start");
    (s, report)
}

fn ok(h: &EngineHandle, c: Command) -> Reply {
    h.submit(c).expect("submit").reply.expect("accepted")
}

/// BTC plus `users` funded customers; returns their accounts.
fn setup(h: &EngineHandle, users: u64) -> Vec<AccountId> {
    ok(
        h,
        Command::DefineAsset {
            code: AssetCode::new("BTC").unwrap(),
            decimals: 8,
        },
    );
    let mut accounts = Vec::new();
    for u in 0..users {
        match ok(
            h,
            Command::OpenAccount {
                user: UserId(u),
                asset: AssetId(0),
            },
        ) {
            Reply::AccountOpened { account } => accounts.push(account),
            other => panic!("{other:?}"),
        }
    }
    let hot = h
        .query(|e| {
            e.asset(AssetId(0))
                .unwrap()
                .system_account(SystemAccount::HotWallet)
        })
        .unwrap();
    let reqs = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| transfer(i as u128 + 1, hot, *a, 1_000_000))
        .collect();
    ok(h, Command::Transfers(reqs));
    accounts
}

fn transfer(id: u128, debit: AccountId, credit: AccountId, amount: u128) -> TransferRequest {
    TransferRequest {
        id: TransferId(id),
        kind: TransferKind::Post {
            debit,
            credit,
            amount: Amount(amount),
        },
        linked: false,
        code: 1,
        user_data: 0,
    }
}

fn traffic(h: &EngineHandle, accounts: &[AccountId], from_id: u128, n: u128) {
    let mut pending = Vec::new();
    for i in 0..n {
        let a = accounts[(i as usize) % accounts.len()];
        let b = accounts[(i as usize * 3 + 1) % accounts.len()];
        if a == b {
            continue;
        }
        let c = Command::Transfers(vec![transfer(from_id + i, a, b, 1 + i % 7)]);
        pending.push(h.try_enqueue(c).expect("room in the inbox"));
    }
    for rx in pending {
        rx.blocking_recv().unwrap().unwrap();
    }
}

#[test]
fn replies_describe_durable_state_and_replay_reproduces_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (seq, report) = start(&cfg);
    assert_eq!(report.head_seq, 0);
    let h = seq.handle();
    let accounts = setup(&h, 8);
    traffic(&h, &accounts, 1_000, 500);
    let c = h
        .submit(Command::Transfers(vec![transfer(
            99_999,
            accounts[0],
            accounts[1],
            5,
        )]))
        .unwrap();
    assert!(matches!(c.reply, Ok(Reply::Transfers(ref r)) if r[0].is_ok()));
    let live_hash = h.query(|e| e.state_hash()).unwrap();
    let live_seq = c.seq;
    // Crash without a final snapshot: drop the sequencer's engine by shutting down, then remove
    // the snapshot it wrote, so recovery has the journal alone.
    let engine = seq.shutdown().unwrap();
    assert_eq!(engine.state_hash(), live_hash);
    std::fs::remove_dir_all(cfg.snapshot_dir()).unwrap();
    let (engine, _j, report) = recover(&cfg).unwrap();
    assert_eq!(report.snapshot_seq, 0);
    assert_eq!(report.replayed, live_seq);
    assert_eq!(engine.state_hash(), live_hash);
    assert_eq!(report.state_hash, live_hash);
}

#[test]
fn snapshot_plus_tail_equals_journal_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.snapshot_every_commands = 97;
    let (seq, _) = start(&cfg);
    let h = seq.handle();
    let accounts = setup(&h, 5);
    traffic(&h, &accounts, 10_000, 400);
    let explicit = h.snapshot().unwrap();
    assert!(explicit.exists());
    traffic(&h, &accounts, 20_000, 150);
    let live_hash = h.query(|e| e.state_hash()).unwrap();
    drop(h);
    // Simulate a crash: take the engine out without the shutdown snapshot by reading the
    // journal while the sequencer is still alive is not possible (lock-free files), so shut
    // down and remove the shutdown snapshot (the newest).
    let engine = seq.shutdown().unwrap();
    let head = engine.last_seq();
    let newest = cfg.snapshot_dir().join(format!("{head:020}.snap"));
    std::fs::remove_file(&newest).unwrap();

    let (from_snap, _j, r1) = recover(&cfg).unwrap();
    assert!(r1.snapshot_seq > 0 && r1.snapshot_seq < head, "{r1:?}");
    assert_eq!(r1.snapshot_seq + r1.replayed, head);
    assert_eq!(from_snap.state_hash(), live_hash);
    drop(_j);

    std::fs::remove_dir_all(cfg.snapshot_dir()).unwrap();
    let (from_journal, _j, r2) = recover(&cfg).unwrap();
    assert_eq!(r2.snapshot_seq, 0);
    assert_eq!(r2.replayed, head);
    assert_eq!(from_journal.state_hash(), live_hash);
}

#[test]
fn corrupt_newest_snapshot_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (seq, _) = start(&cfg);
    let h = seq.handle();
    let accounts = setup(&h, 4);
    traffic(&h, &accounts, 1_000, 50);
    let older = h.snapshot().unwrap();
    traffic(&h, &accounts, 2_000, 50);
    let live_hash = h.query(|e| e.state_hash()).unwrap();
    drop(h);
    seq.shutdown().unwrap(); // writes the newest snapshot
    let mut snaps: Vec<_> = std::fs::read_dir(cfg.snapshot_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    snaps.sort();
    let newest = snaps.last().unwrap().clone();
    assert_ne!(newest, older);
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&newest, bytes).unwrap();
    let (engine, _j, report) = recover(&cfg).unwrap();
    assert_eq!(report.snapshots_skipped.len(), 1, "{report:?}");
    assert_eq!(report.snapshots_skipped[0].0, newest);
    assert_eq!(report.snapshot_path.as_deref(), Some(older.as_path()));
    assert_eq!(engine.state_hash(), live_hash);
}

#[test]
fn snapshot_from_another_journal_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for d in [a.path(), b.path()] {
        let cfg = config(d);
        let (seq, _) = start(&cfg);
        let h = seq.handle();
        let accounts = setup(&h, 3);
        // Different traffic in each: same length, different content.
        let base = if d == a.path() { 1_000 } else { 5_000 };
        traffic(&h, &accounts, base, 20);
        drop(h);
        seq.shutdown().unwrap();
    }
    let cfg_a = config(a.path());
    let cfg_b = config(b.path());
    std::fs::remove_dir_all(cfg_a.snapshot_dir()).unwrap();
    std::fs::create_dir_all(cfg_a.snapshot_dir()).unwrap();
    for e in std::fs::read_dir(cfg_b.snapshot_dir()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, cfg_a.snapshot_dir().join(p.file_name().unwrap())).unwrap();
    }
    let err = recover(&cfg_a).map(|_| ()).unwrap_err();
    assert!(
        err.to_string().contains("does not belong to this journal"),
        "{err}"
    );
}

#[test]
fn torn_tail_is_cut_and_every_acknowledged_command_survives() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (seq, _) = start(&cfg);
    let h = seq.handle();
    let accounts = setup(&h, 4);
    traffic(&h, &accounts, 1_000, 100);
    let live_hash = h.query(|e| e.state_hash()).unwrap();
    let last = h.query(|e| e.last_seq()).unwrap();
    let segment = || {
        std::fs::read_dir(cfg.journal_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .max()
            .unwrap()
    };
    let before = std::fs::read(segment()).unwrap();
    // One more command, then a crash in the middle of writing it: only the first half of its
    // bytes reached the disk.
    h.submit(Command::Transfers(vec![transfer(
        66_666,
        accounts[0],
        accounts[3],
        2,
    )]))
    .unwrap();
    drop(h);
    seq.shutdown().unwrap();
    std::fs::remove_dir_all(cfg.snapshot_dir()).unwrap();
    let seg = segment();
    let after = std::fs::read(&seg).unwrap();
    let start = before
        .iter()
        .zip(&after)
        .position(|(a, b)| a != b)
        .expect("a record was added");
    let end = after.iter().zip(&before).rposition(|(a, b)| a != b).unwrap() + 1;
    assert!(end > start + 8);
    let mut torn = before.clone();
    let half = start + (end - start) / 2;
    torn[start..half].copy_from_slice(&after[start..half]);
    std::fs::write(&seg, &torn).unwrap();
    let (engine, journal, report) = recover(&cfg).unwrap();
    assert!(report.torn_tail.is_some(), "{report:?}");
    assert_eq!(engine.last_seq(), last);
    assert_eq!(engine.state_hash(), live_hash);
    // Appends continue the chain after the repair.
    let s = Sequencer::start(engine, journal, cfg.clone(), TestClock::default()).unwrap();
    let c = s
        .handle()
        .submit(Command::Transfers(vec![transfer(
            77_777,
            accounts[1],
            accounts[2],
            1,
        )]))
        .unwrap();
    assert_eq!(c.seq, last + 1);
    s.shutdown().unwrap();
    kinko_journal::verify(&cfg.journal_dir()).unwrap();
}

#[test]
fn a_full_inbox_pushes_back_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.inbox_commands_max = 8;
    let (seq, _) = start(&cfg);
    let h = seq.handle();
    let accounts = setup(&h, 2);
    // Park the sequencer inside a query so the inbox fills up.
    let barrier = Arc::new(Barrier::new(2));
    let b2 = barrier.clone();
    let h2 = h.clone();
    let (inside_tx, inside_rx) = std::sync::mpsc::channel();
    let parked = std::thread::spawn(move || {
        h2.query(move |_| {
            let _ = inside_tx.send(());
            b2.wait()
        })
        .unwrap()
    });
    // Wait (bounded) until the sequencer is inside the query (not merely until the inbox is
    // empty: that is also true before the query is sent).
    inside_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("sequencer never ran the query");
    assert_eq!(h.queue_depth(), 0);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..20u128 {
        match h.try_enqueue(Command::Transfers(vec![transfer(
            500 + i,
            accounts[0],
            accounts[1],
            1,
        )])) {
            Ok(rx) => accepted.push(rx),
            Err(SubmitError::Overloaded) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(accepted.len(), 8);
    assert_eq!(refused, 12);
    assert_eq!(SubmitError::Overloaded.code(), "ENGINE_OVERLOADED");
    barrier.wait();
    parked.join().unwrap();
    for rx in accepted {
        let c = rx.blocking_recv().unwrap().unwrap();
        assert!(c.reply.is_ok());
    }
    let moved = h
        .query(move |e| e.ledger().account(accounts[1]).unwrap().balance())
        .unwrap();
    assert_eq!(moved, 1_000_000 + 8);
    drop(h);
    seq.shutdown().unwrap();
}

#[test]
fn pending_transfers_expire_by_themselves_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.tick_ms = 5;
    let (seq, _) = start(&cfg);
    let h = seq.handle();
    let accounts = setup(&h, 2);
    let hold = TransferRequest {
        id: TransferId(4242),
        kind: TransferKind::Hold {
            debit: accounts[0],
            credit: accounts[1],
            amount: Amount(10),
            timeout_ns: 50_000,
        },
        linked: false,
        code: 1,
        user_data: 0,
    };
    ok(&h, Command::Transfers(vec![hold]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let payer = accounts[0];
    loop {
        let held = h.query(move |e| e.ledger().account(payer).unwrap().held).unwrap();
        if held == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "hold never expired");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let state = h.query(|e| e.ledger().pending_state(TransferId(4242))).unwrap();
    assert_eq!(state, Some(kinko_core::ledger::PendingState::Expired));
    drop(h);
    seq.shutdown().unwrap();
}

/// One command as an observer sees it: sequence, timestamp, events.
type Seen = (u64, u64, Vec<kinko_core::engine::Event>);

/// Records what the read side's observer sees, for every command.
struct Recorder(Arc<std::sync::Mutex<Vec<Seen>>>);

impl kinko_engine::replica::Observer for Recorder {
    fn on_command(&mut self, m: &kinko_engine::replica::ReadModel, events: &[kinko_core::engine::Event]) {
        self.0
            .lock()
            .unwrap()
            .push((m.engine.last_seq(), m.engine.last_timestamp_ns(), events.to_vec()));
    }
    fn on_batch(&mut self) {}
}

/// `ReadSide::replay` gives an observer that fell behind (or restarted) exactly what it saw
/// live, whatever snapshots lie between: from the journal's start, from an older snapshot than
/// the newest, from the newest; and never past what the read side applied.
#[test]
fn the_read_side_replays_committed_events_exactly_as_observed_live() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let node = kinko_engine::launch::open(&cfg).unwrap();
    let live = Arc::new(std::sync::Mutex::new(Vec::new()));
    assert!(node.read.set_observer(Box::new(Recorder(live.clone()))));
    let h = node.sequencer.handle();
    let accounts = setup(&h, 5);
    traffic(&h, &accounts, 10_000, 120);
    let s1 = h.snapshot().unwrap();
    traffic(&h, &accounts, 20_000, 80);
    let s2 = h.snapshot().unwrap();
    traffic(&h, &accounts, 30_000, 40);
    let head = h.query(|e| e.last_seq()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while node.read.applied_seq() < head {
        assert!(
            std::time::Instant::now() < deadline,
            "the read side did not catch up"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let seq_of = |p: &std::path::Path| -> u64 { p.file_stem().unwrap().to_str().unwrap().parse().unwrap() };
    let (s1, s2) = (seq_of(&s1), seq_of(&s2));
    assert!(0 < s1 && s1 < s2 && s2 < head);
    let live = live.lock().unwrap().clone();
    assert_eq!(live.len() as u64, head);
    for (from, to) in [
        (1, head),
        (s1 - 3, s2 + 3),
        (s2 - 1, head),
        (s2 + 1, head),
        (head, head),
    ] {
        let mut again = Vec::new();
        node.read
            .replay(from, to, |m, seq, ts, events| {
                assert_eq!(m.engine.last_seq(), seq);
                again.push((seq, ts, events.to_vec()));
            })
            .unwrap();
        assert_eq!(again, live[(from - 1) as usize..to as usize], "{from}..={to}");
    }
    assert!(matches!(
        node.read.replay(head, head + 1, |_, _, _, _| {}),
        Err(kinko_engine::replica::ReplayError::Ahead { .. })
    ));
    drop(h);
    node.sequencer.shutdown().unwrap();
}

/// A good-till-time order is cancelled by the sequencer's own tick when nothing else arrives,
/// the tick is journaled, and the journal alone rebuilds the same state.
#[test]
fn good_till_time_orders_expire_by_themselves_and_replay_identically() {
    use kinko_core::book::{CancelReason, OrderId, Side, Stp, TimeInForce};
    use kinko_core::market::{FeeTier, MarketId, MarketSpec};
    use kinko_core::trading::{ConditionalOrder, Expiry, OrderStatus, OrderType, PlaceOrder};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.tick_ms = 5;
    let (seq, _) = start(&cfg);
    let h = seq.handle();
    let accounts = setup(&h, 1);
    ok(
        &h,
        Command::DefineAsset {
            code: AssetCode::new("USD").unwrap(),
            decimals: 2,
        },
    );
    ok(
        &h,
        Command::DefineMarket(MarketSpec {
            symbol: "BTC-USD".into(),
            base: AssetId(0),
            quote: AssetId(1),
            tick: Amount(100),
            lot: Amount(1_000_000),
            qty_min: Amount(1_000_000),
            qty_max: Amount(100_000_000),
            notional_min: Amount(100),
            notional_max: Amount(1_000_000_000),
            band_bps: 1_000,
            reference_price: Amount(3_000_000),
            reference_age_max_ns: 0,
            fee_tiers: vec![FeeTier {
                maker_bps: 10,
                taker_bps: 20,
            }],
            open_orders_per_account_max: 10,
        }),
    );
    // User 0 sells 0.01 BTC (of the 0.01 `setup` gave it) at 31,000 USD, good for 50 µs.
    let order = match ok(
        &h,
        Command::PlaceConditionalOrder(ConditionalOrder {
            order: PlaceOrder {
                user: UserId(0),
                market: MarketId(0),
                client_id: None,
                side: Side::Sell,
                order_type: OrderType::Limit {
                    price: Amount(3_100_000),
                    tif: TimeInForce::Gtc,
                },
                qty: Some(Amount(1_000_000)),
                stp: Stp::CancelNewest,
            },
            stop: None,
            expiry: Some(Expiry::AfterNs(50_000)),
        }),
    ) {
        Reply::OrderPlaced(p) => p.order,
        other => panic!("{other:?}"),
    };
    assert_eq!(order.status, OrderStatus::Open);
    let id: OrderId = order.id;
    let payer = accounts[0];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = h.query(move |e| e.trading().order(id).map(|o| o.status)).unwrap();
        if status == Some(OrderStatus::Cancelled(CancelReason::Expired)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never expired: {status:?}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(
        h.query(move |e| e.ledger().account(payer).unwrap().held).unwrap(),
        0
    );
    let live_hash = h.query(|e| e.state_hash()).unwrap();
    drop(h);
    let engine = seq.shutdown().unwrap();
    assert_eq!(engine.state_hash(), live_hash);
    std::fs::remove_dir_all(cfg.snapshot_dir()).unwrap();
    let (engine, _j, _) = recover(&cfg).unwrap();
    assert_eq!(
        engine.state_hash(),
        live_hash,
        "the journal alone rebuilds the expiry"
    );
}
