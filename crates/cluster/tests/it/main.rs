//! The replicated journal against a real three-node `nats-server` cluster on loopback, with
//! real sequencers on real data directories (docs/design/replication.md).

use async_nats::jetstream;
use kinko_cluster::testkit::NatsCluster;
use kinko_cluster::{ClusterConfig, JetStreamLog};
use kinko_core::ledger::{SystemAccount, TransferKind, TransferRequest};
use kinko_core::{AccountId, Amount, AssetCode, AssetId, Command, Reply, TransferId, UserId};
use kinko_engine::{recover, EngineConfig, EngineHandle, Role, Sequencer, SubmitError, SystemClock};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Lease time to live in these tests.
const TTL: Duration = Duration::from_millis(1_500);
/// The lease where NATS nodes are lost: longer than a JetStream leader election (seconds), so
/// that losing the node that led the stream or the lease bucket does not lapse the lease.
const TTL_NATS_LOSS: Duration = Duration::from_secs(10);

/// A kinko node of the test: a data directory and its sequencer on the replicated log.
struct Node {
    _dir: tempfile::TempDir,
    cfg: EngineConfig,
    seq: Option<Sequencer>,
    name: String,
}

fn cluster_config(urls: &[String], name: &str, ttl: Duration) -> ClusterConfig {
    let mut c = ClusterConfig::new(urls.to_vec(), name, format!("http://{name}.test:8080"));
    c.lease_ttl = ttl;
    c.publish_timeout = Duration::from_millis(500);
    c
}

impl Node {
    fn start(urls: &[String], name: &str) -> Node {
        Node::start_with_ttl(urls, name, TTL)
    }

    fn start_with_ttl(urls: &[String], name: &str, ttl: Duration) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EngineConfig::new(dir.path());
        cfg.snapshot_every_commands = 0;
        cfg.audit_every_commands = 1_000;
        let (engine, journal, _) = recover(&cfg).expect("recover");
        let log =
            JetStreamLog::connect(cluster_config(urls, name, ttl)).expect("connect to the NATS cluster");
        let seq = Sequencer::start_replicated(engine, journal, cfg.clone(), SystemClock, None, Box::new(log))
            .expect("start");
        Node {
            _dir: dir,
            cfg,
            seq: Some(seq),
            name: name.to_owned(),
        }
    }

    fn handle(&self) -> EngineHandle {
        self.seq.as_ref().expect("running").handle()
    }

    fn role(&self) -> Role {
        self.handle().stats().role()
    }

    fn last_seq(&self) -> u64 {
        self.handle()
            .stats()
            .last_seq
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn state_hash(&self) -> [u8; 32] {
        self.handle().query(|e| e.state_hash()).expect("query")
    }

    /// Every transfer id in this node's journal, with how often it appears.
    fn journal_transfer_ids(&self) -> BTreeMap<u128, usize> {
        let mut ids = BTreeMap::new();
        for rec in kinko_journal::read_from(&self.cfg.journal_dir(), 1).expect("journal") {
            let rec = rec.expect("record");
            if let Command::Transfers(ts) =
                kinko_engine::decode_command(rec.kind, &rec.payload).expect("decodes")
            {
                for t in ts {
                    *ids.entry(t.id.0).or_insert(0) += 1;
                }
            }
        }
        ids
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ok(h: &EngineHandle, c: Command) -> Reply {
    h.submit(c).expect("submit").reply.expect("accepted")
}

/// BTC and `users` funded accounts.
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

/// One transfer between two of `accounts`, id `id`.
fn move_one(accounts: &[AccountId], id: u128) -> Command {
    let i = id as usize;
    let a = accounts[i % accounts.len()];
    let b = accounts[(i + 1) % accounts.len()];
    Command::Transfers(vec![transfer(id, a, b, 1 + (id % 5))])
}

/// A raw JetStream client of the test (to look at or tamper with the lease and the stream).
fn raw(urls: &[String]) -> (tokio::runtime::Runtime, jetstream::Context) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(async_nats::connect(
            urls.iter()
                .map(|u| u.parse::<async_nats::ServerAddr>().unwrap())
                .collect::<Vec<_>>(),
        ))
        .expect("connect");
    let js = {
        let _in_runtime = rt.enter();
        jetstream::new(client)
    };
    (rt, js)
}

#[test]
fn replies_wait_for_the_stream_and_a_standby_applies_every_batch_to_the_same_state() {
    let nats = NatsCluster::start(3).expect("a three-node nats-server cluster");
    let urls = nats.urls();
    let a = Node::start(&urls, "a");
    wait_for(
        "the first node to take the lease",
        Duration::from_secs(30),
        || a.role() == Role::Primary,
    );
    let b = Node::start(&urls, "b");
    let h = a.handle();
    let accounts = setup(&h, 8);
    // Many submitters, so that batches hold several commands (one publish per batch).
    std::thread::scope(|s| {
        for t in 0..4u128 {
            let h = h.clone();
            let accounts = accounts.clone();
            s.spawn(move || {
                for i in 0..100u128 {
                    ok(&h, move_one(&accounts, 1_000 + t * 1_000 + i));
                }
            });
        }
    });
    let stats = h.stats();
    assert!(stats.publish_ns_total.load(std::sync::atomic::Ordering::Relaxed) > 0);

    // The stream holds one message per batch (plus the fence of the first epoch).
    let (rt, js) = raw(&urls);
    let mut stream = rt.block_on(js.get_stream("KINKO_JOURNAL")).expect("stream");
    let info = rt.block_on(stream.info()).expect("info").clone();
    assert_eq!(info.config.num_replicas, 3);
    let (mut batch_msgs, mut fences, mut records) = (0, 0, 0);
    for seq in 1..=info.state.last_sequence {
        let m = rt.block_on(stream.get_raw_message(seq)).expect("message");
        if m.payload.is_empty() {
            fences += 1;
        } else {
            let b = kinko_cluster::wire::decode(&m.payload).expect("a batch");
            assert_eq!(b.first_seq, records + 1, "batches follow each other, none twice");
            records = b.last_seq();
            batch_msgs += 1;
        }
    }
    assert_eq!(records, a.last_seq(), "every record is in the stream");
    // (The counters are updated just after the replies are released.)
    let batches = stats.batches.load(std::sync::atomic::Ordering::Relaxed);
    let commands = stats.commands.load(std::sync::atomic::Ordering::Relaxed);
    assert!(commands >= 400, "{commands}");
    assert_eq!(batch_msgs, batches, "one message per batch");
    assert!(
        batches < commands,
        "group commit: {batches} batches for {commands} commands"
    );
    assert!(fences >= 1);

    // The standby refuses writes, naming the leader, and reaches the same state.
    assert_eq!(b.role(), Role::Standby);
    let refused = b
        .handle()
        .submit(move_one(&accounts, 99_999))
        .expect_err("a standby takes no writes");
    assert_eq!(refused, SubmitError::NotLeader("http://a.test:8080".into()));
    assert_eq!(refused.code(), "NOT_LEADER");
    assert!(!refused.may_have_been_applied());
    let head = a.last_seq();
    wait_for(
        "the standby to apply every batch",
        Duration::from_secs(20),
        || b.last_seq() == head,
    );
    assert_eq!(a.state_hash(), b.state_hash());
    assert_eq!(a.journal_transfer_ids(), b.journal_transfer_ids());
    assert!(!b.journal_transfer_ids().contains_key(&99_999));
    let _ = a.name.len();
}

#[test]
fn a_deposed_primary_writes_nothing_and_the_standby_takes_over_with_a_new_epoch() {
    let nats = NatsCluster::start(3).expect("a three-node nats-server cluster");
    let urls = nats.urls();
    let a = Node::start(&urls, "a");
    wait_for(
        "the first node to take the lease",
        Duration::from_secs(30),
        || a.role() == Role::Primary,
    );
    let b = Node::start(&urls, "b");
    let h = a.handle();
    let accounts = setup(&h, 4);
    for i in 0..20 {
        ok(&h, move_one(&accounts, 100 + i));
    }
    // The lease disappears under the primary (as when it was partitioned long enough): the
    // standby takes it, fences the stream and records epoch 2.
    let (rt, js) = raw(&urls);
    let kv = rt.block_on(js.get_key_value("kinko_lease")).expect("bucket");
    rt.block_on(kv.purge("leader")).expect("purge the lease");
    wait_for("the standby to take over", Duration::from_secs(20), || {
        b.role() == Role::Primary
    });
    assert_eq!(
        b.handle()
            .stats()
            .epoch
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );

    // The old primary's next write is refused, not applied, and so is every later one.
    let journal_before = a.journal_transfer_ids();
    let e = h
        .submit(move_one(&accounts, 500))
        .expect_err("a deposed primary takes no writes");
    assert_eq!(e.code(), "NOT_LEADER", "{e:?}");
    assert_eq!(a.role(), Role::Deposed);
    let e = h.submit(move_one(&accounts, 501)).expect_err("still deposed");
    assert_eq!(e.code(), "NOT_LEADER");

    // The new primary takes writes; it holds every acknowledged command exactly once.
    let hb = b.handle();
    for i in 0..20 {
        ok(&hb, move_one(&accounts, 1_000 + i));
    }
    let ids = b.journal_transfer_ids();
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
    for id in (100..120).chain(1_000..1_020) {
        assert_eq!(ids.get(&id), Some(&1), "transfer {id}");
    }
    assert!(!ids.contains_key(&500) && !ids.contains_key(&501));
    // Whatever the old primary journaled locally after it was fenced never reached the stream.
    for id in journal_before.keys() {
        assert_eq!(ids.get(id), Some(&1));
    }
    // The journal records the epochs.
    let epochs: Vec<u64> = kinko_journal::read_from(&b.cfg.journal_dir(), 1)
        .unwrap()
        .filter_map(|r| {
            let r = r.unwrap();
            match kinko_engine::decode_command(r.kind, &r.payload).unwrap() {
                Command::BeginEpoch { epoch, .. } => Some(epoch),
                _ => None,
            }
        })
        .collect();
    assert_eq!(epochs, vec![1, 2]);
}

#[test]
fn one_nats_node_lost_keeps_committing_two_lost_stop_acknowledging_and_writes_resume() {
    let mut nats = NatsCluster::start(3).expect("a three-node nats-server cluster");
    let urls = nats.urls();
    let a = Node::start_with_ttl(&urls, "a", TTL_NATS_LOSS);
    wait_for(
        "the first node to take the lease",
        Duration::from_secs(30),
        || a.role() == Role::Primary,
    );
    let b = Node::start_with_ttl(&urls, "b", TTL_NATS_LOSS);
    let h = a.handle();
    let accounts = setup(&h, 4);
    nats.kill(2);
    for i in 0..20 {
        ok(&h, move_one(&accounts, 100 + i));
    }
    nats.kill(1);
    let started = Instant::now();
    let e = h
        .submit(move_one(&accounts, 200))
        .expect_err("no quorum: no acknowledgement");
    assert!(matches!(e.code(), "OUTCOME_UNKNOWN" | "NOT_LEADER"), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(a.role(), Role::Deposed);
    nats.restart(1).expect("node 1 back");
    nats.restart(2).expect("node 2 back");
    wait_for(
        "the standby to take over once the quorum is back",
        Duration::from_secs(45),
        || b.role() == Role::Primary,
    );
    let hb = b.handle();
    for i in 0..10 {
        ok(&hb, move_one(&accounts, 1_000 + i));
    }
    let ids = b.journal_transfer_ids();
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
    for id in (100..120).chain(1_000..1_010) {
        assert_eq!(ids.get(&id), Some(&1), "transfer {id}");
    }
}
