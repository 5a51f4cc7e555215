//! Faults of the node and the signer, with the real processes: a stopped node, a node replaced
//! by one without the old blocks, reconciliation blind for several polls, a killed signer.
//! Each step is one poll; every wait is bounded.

use crate::reconcile::funded;
use crate::rig::{Options, Rig, COIN};
use kinko_core::wallet::{Withdrawal, WithdrawalStatus};
use kinko_custody::reconcile::{BY, KIND_RECONCILE_DOWN};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn signal(rig: &Rig, s: Signal) {
    let pid = rig.node.pid();
    kill(Pid::from_raw(pid as i32), s).expect("signal the node");
    // A signal is delivered asynchronously: a node thread already running may still answer a
    // request sent right after `kill` returns. Wait (bounded) until every thread of the node
    // is stopped, or none is.
    let stopped = s == Signal::SIGSTOP;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let states: Vec<bool> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("the node's threads")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
            .filter_map(|stat| {
                let state = stat.rsplit_once(')')?.1.split_whitespace().next()?.to_owned();
                Some(state == "T" || state == "t")
            })
            .collect();
        if !states.is_empty() && states.iter().all(|&t| t == stopped) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node's threads did not {} within 10 s",
            if stopped { "stop" } else { "continue" }
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether `name` (e.g. `node:LTC`) is up, and its reason when down.
fn health(rig: &Rig, name: &str) -> (bool, String) {
    let c = rig.health.get(name).unwrap_or_else(|| panic!("{name} reported"));
    (c.up, c.reason)
}

/// What a customer reading the withdrawal would be told.
fn waiting(rig: &Rig, w: &Withdrawal) -> Option<String> {
    let w = rig.withdrawal(w.id);
    let m = rig.engine.read.model();
    kinko_api::waiting_reason(&m, &rig.health, &w, crate::rig::now_ns())
}

/// Payments to `address` the node knows of (mempool included), in satoshis each.
fn payments_to(rig: &Rig, address: &str) -> Vec<i64> {
    let list: Vec<serde_json::Value> = rig
        .miner()
        .call("listtransactions", serde_json::json!(["*", 1000, 0, true]))
        .unwrap();
    list.iter()
        .filter(|t| t["category"] == "receive" && t["address"] == address)
        .map(|t| {
            let amount = t["amount"].to_string();
            kinko_chain::amount::parse_sats_signed(&amount).unwrap()
        })
        .collect()
}

#[test]
fn a_stopped_node_is_reported_down_withdrawals_say_why_and_everything_resumes_after() {
    let mut rig = Rig::start(Options::default());
    let (alice, to) = funded(&mut rig, "2");
    assert!(health(&rig, "node:LTC").0);
    assert!(health(&rig, "reconcile:LTC").0);
    let w = rig.withdraw(&alice, to, COIN / 2).unwrap();
    assert_eq!(waiting(&rig, &w), None);

    signal(&rig, Signal::SIGSTOP);
    assert!(rig.custody.poll().is_err());
    let (up, reason) = health(&rig, "node:LTC");
    assert!(!up);
    assert!(reason.contains("probe"), "{reason}");
    assert!(!health(&rig, "reconcile:LTC").0);
    let why = waiting(&rig, &w).expect("a waiting reason");
    assert!(why.contains("LTC node is unavailable"), "{why}");
    assert_eq!(rig.withdrawal(w.id).status, WithdrawalStatus::Requested);
    // One blind poll is under the limit: not halted yet.
    assert!(rig.withdrawals_on());

    signal(&rig, Signal::SIGCONT);
    rig.poll();
    assert!(health(&rig, "node:LTC").0);
    assert!(health(&rig, "reconcile:LTC").0);
    assert_eq!(rig.withdrawal(w.id).status, WithdrawalStatus::Broadcast);
    rig.mine(2);
    rig.poll();
    assert_eq!(rig.withdrawal(w.id).status, WithdrawalStatus::Completed);
    assert!(rig.open_incidents().is_empty());
    rig.audit();
}

#[test]
fn reconciliation_blind_for_the_configured_polls_halts_withdrawals_until_operators_resume() {
    let max = 3;
    let mut rig = Rig::start(Options {
        reconcile_failures_max: max,
        ..Options::default()
    });
    let (alice, to) = funded(&mut rig, "2");
    let w = rig.withdraw(&alice, to, COIN / 2).unwrap();
    signal(&rig, Signal::SIGSTOP);
    for n in 1..=max {
        assert!(rig.custody.poll().is_err());
        let c = rig.health.get("reconcile:LTC").unwrap();
        assert!(!c.up);
        assert_eq!(c.failures, u64::from(n));
        assert_eq!(rig.withdrawals_on(), n < max, "after {n} blind polls");
    }
    let open = rig.open_incidents();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].kind, KIND_RECONCILE_DOWN);
    assert_eq!(open[0].opened_by, BY);
    assert!(open[0].summary.contains("probe"), "{}", open[0].summary);
    let why = waiting(&rig, &w).unwrap();
    assert!(why.contains("halted"), "{why}");
    // More blind polls open nothing more.
    assert!(rig.custody.poll().is_err());
    assert_eq!(rig.open_incidents().len(), 1);

    // The node is back: reconciliation runs, the halt stays for operators to lift.
    signal(&rig, Signal::SIGCONT);
    rig.poll();
    assert!(health(&rig, "reconcile:LTC").0);
    assert!(!rig.withdrawals_on());
    assert_eq!(rig.withdrawal(w.id).status, WithdrawalStatus::Requested);
    assert_eq!(rig.open_incidents().len(), 1);
    rig.audit();
}

#[test]
fn a_node_replaced_without_the_old_blocks_rescans_instead_of_failing_every_poll() {
    let max = 3;
    let mut rig = Rig::start(Options {
        reconcile_failures_max: max,
        rescan_depth: 20,
        ..Options::default()
    });
    let (alice, _to) = funded(&mut rig, "2");
    let cursor_file = rig
        .dir
        .path()
        .join("data")
        .join("custody")
        .join("LTC.cursors.json");
    let before = std::fs::read_to_string(&cursor_file).expect("cursors stored");
    let deposits = |rig: &Rig| rig.link.view(|e| e.wallet().deposits().len());
    assert_eq!(deposits(&rig), 1);

    rig.node.replace_with_fresh().unwrap();
    // A chain of its own, longer than the rescan depth: the old cursor is unknown to it.
    rig.mine(30);
    let mut ok_polls = 0;
    for step in 0..6 {
        let r = rig.custody.poll();
        ok_polls += usize::from(r.is_ok());
        let rec = rig.health.get("reconcile:LTC").unwrap();
        // At every step: reconciliation runs, or withdrawals are halted, or (for fewer polls
        // than the limit) it is failing and about to halt them.
        assert!(
            rec.up || !rig.withdrawals_on() || rec.failures < u64::from(max),
            "step {step}: reconciliation down ({}) and withdrawals on",
            rec.reason
        );
        if step >= 2 {
            assert!(r.is_ok(), "step {step}: no loop of failures: {r:?}");
        }
    }
    assert!(ok_polls >= 4);
    // The scans moved on to blocks of the new chain.
    let after = std::fs::read_to_string(&cursor_file).unwrap();
    assert_ne!(before, after);
    let cursors: serde_json::Value = serde_json::from_str(&after).unwrap();
    for scan in ["deposits", "hot_sends", "cold_sends"] {
        let hash = cursors[scan].as_str().unwrap_or_else(|| panic!("{scan} cursor"));
        rig.node
            .rpc()
            .call::<serde_json::Value>("getblockheader", serde_json::json!([hash]))
            .unwrap_or_else(|e| panic!("{scan} cursor {hash} on the new chain: {e}"));
    }
    // The node holds none of the coins the ledger has: reconciliation ran and halted.
    assert!(health(&rig, "reconcile:LTC").0);
    assert!(!rig.withdrawals_on());
    // Deposits go on, each credited once, the old one not again.
    rig.deposit(alice.0, "1");
    assert_eq!(deposits(&rig), 2);
    assert_eq!(rig.customer(alice.0).0, 3 * COIN as i128);
    rig.audit();
}

#[test]
fn a_killed_signer_makes_withdrawals_wait_and_nothing_is_paid_twice_after_it_restarts() {
    let mut rig = Rig::start(Options::default());
    let (alice, to) = funded(&mut rig, "2");
    let dest = rig.withdrawal(rig.withdraw(&alice, to, COIN / 4).unwrap().id);
    rig.poll();
    rig.mine(2);
    rig.poll();
    assert_eq!(rig.withdrawal(dest.id).status, WithdrawalStatus::Completed);
    assert!(health(&rig, "signer:LTC").0);
    // Bob pays the same destination (a second user: one TOTP step is one proof).
    let bob = rig.user(2);
    rig.deposit(bob.0, "1");
    let bob_to = rig.withdrawal_address(bob.0, &dest.address);
    rig.poll();
    rig.signer_waits();

    rig.stop_signer();
    let w = rig.withdraw(&bob, bob_to, COIN / 2).unwrap();
    for _ in 0..3 {
        assert!(rig.custody.poll().is_err());
        let (up, reason) = health(&rig, "signer:LTC");
        assert!(!up);
        assert!(reason.contains("signer"), "{reason}");
        assert!(rig.withdrawal(w.id).status.is_held());
        let why = waiting(&rig, &w).expect("a waiting reason");
        assert!(why.contains("signer is unavailable"), "{why}");
        // The node is fine and reconciliation still runs.
        assert!(health(&rig, "node:LTC").0);
        assert!(health(&rig, "reconcile:LTC").0);
    }
    assert_eq!(payments_to(&rig, &dest.address).len(), 1);

    rig.start_signer();
    for _ in 0..3 {
        rig.poll();
    }
    assert!(health(&rig, "signer:LTC").0);
    rig.mine(2);
    rig.poll();
    assert_eq!(rig.withdrawal(w.id).status, WithdrawalStatus::Completed);
    assert_eq!(waiting(&rig, &w), None);
    let mut paid = payments_to(&rig, &dest.address);
    paid.sort_unstable();
    assert_eq!(
        paid,
        vec![(COIN / 4) as i64, (COIN / 2) as i64],
        "each withdrawal paid exactly once"
    );
    assert!(rig.open_incidents().is_empty());
    rig.audit();
}
