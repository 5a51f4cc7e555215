//! Withdrawal risk in the engine: limits, rules in order, reviews in pairs, halts, the hourly
//! hot-wallet cap. Every refusal goes through the harness, which proves it changed nothing.

use crate::wallet::{alice_can_withdraw, COIN, DAY_NS, HOUR_NS, W};
use kinko_core::engine::{Command, Reply};
use kinko_core::identity::{Action, AdminRole, IdentityCommand, Via};
use kinko_core::money::{Amount, AssetId, UserId};
use kinko_core::reject::Reject;
use kinko_core::risk::{AssetRisk, Condition, Decision, RiskPolicy, RiskRule, TierLimit};
use kinko_core::wallet::{AddressId, Withdrawal, WithdrawalId, WithdrawalStatus};

const BTC: AssetId = AssetId(0);

fn rule(name: &str, when: Condition, then: Decision) -> RiskRule {
    RiskRule {
        name: name.into(),
        asset: None,
        when,
        then,
    }
}

fn policy(w: &mut W, p: RiskPolicy) {
    assert_eq!(w.ok(Command::SetRiskPolicy(p)), Reply::Done);
}

/// Users 4 and 5 are reviewers (risk role); user 1 too, to show a requester never counts.
fn with_reviewers(w: &mut W) {
    for u in 4..=5 {
        w.ready_user(u);
    }
    for (u, roles) in [
        (4, vec![AdminRole::Risk]),
        (5, vec![AdminRole::Treasury]),
        (1, vec![AdminRole::Risk]),
    ] {
        w.ok(Command::Identity(IdentityCommand::SetRoles {
            user: UserId(u),
            roles,
            requested_by: "operator".into(),
            reason: "bootstrap".into(),
        }));
    }
}

fn review(w: &mut W, id: WithdrawalId, reviewer: u64, approve: bool) -> Command {
    let action = w
        .engine
        .wallet()
        .withdrawal(id)
        .unwrap()
        .review_action(UserId(reviewer), approve);
    let proof = w.passkey_proof(reviewer, &action);
    Command::ReviewWithdrawal {
        id,
        reviewer: UserId(reviewer),
        approve,
        reason: "checked".into(),
        via: Via::Session(crate::wallet::session_of(reviewer)),
        proof,
    }
}

fn req(w: &mut W, user: u64, a: AddressId, amount: u128) -> Withdrawal {
    w.request(user, a, amount, None).unwrap()
}

#[test]
fn limits_by_tier_count_pending_withdrawals_over_24_hours_and_30_days() {
    let (mut w, a) = alice_can_withdraw(0);
    policy(
        &mut w,
        RiskPolicy {
            limits: vec![TierLimit {
                tier: 0,
                asset: BTC,
                day_max: Amount(2 * COIN),
                month_max: Amount(3 * COIN),
            }],
            ..RiskPolicy::default()
        },
    );
    // Two pending requests count together: the third cannot slip under the daily limit.
    req(&mut w, 1, a, COIN);
    let second = req(&mut w, 1, a, COIN);
    assert_eq!(w.request(1, a, 1, None), Err(Reject::WithdrawalLimitExceeded));
    // A cancelled request frees its share.
    w.ok(Command::CancelWithdrawal {
        user: UserId(1),
        id: second.id,
    });
    req(&mut w, 1, a, COIN);
    // The next day: the daily limit is free again, the 30-day one still counts the first day's.
    w.now_ns += DAY_NS + 1;
    req(&mut w, 1, a, COIN);
    assert_eq!(w.request(1, a, 1, None), Err(Reject::WithdrawalLimitExceeded));
}

/// What the customer is shown as left of their limits is exactly what the request check lets
/// through: the amount left is accepted, one unit more is refused.
#[test]
fn the_limit_left_is_what_the_request_check_allows() {
    let (mut w, a) = alice_can_withdraw(0);
    assert_eq!(
        w.engine.withdrawal_limit_left(UserId(1), BTC, w.now_ns),
        None,
        "no limit set"
    );
    policy(
        &mut w,
        RiskPolicy {
            limits: vec![TierLimit {
                tier: 0,
                asset: BTC,
                day_max: Amount(2 * COIN),
                month_max: Amount(3 * COIN),
            }],
            ..RiskPolicy::default()
        },
    );
    let left = |w: &W| {
        let (l, left) = w.engine.withdrawal_limit_left(UserId(1), BTC, w.now_ns).unwrap();
        assert_eq!((l.day_max, l.month_max), (Amount(2 * COIN), Amount(3 * COIN)));
        (left.day.0, left.month.0)
    };
    assert_eq!(left(&w), (2 * COIN, 3 * COIN));
    req(&mut w, 1, a, COIN / 2);
    assert_eq!(left(&w), (3 * COIN / 2, 5 * COIN / 2));
    assert_eq!(
        w.request(1, a, 3 * COIN / 2 + 1, None),
        Err(Reject::WithdrawalLimitExceeded)
    );
    assert_eq!(left(&w), (3 * COIN / 2, 5 * COIN / 2), "a refusal uses nothing");
    req(&mut w, 1, a, 3 * COIN / 2);
    assert_eq!(left(&w), (0, COIN));
    // A day later the 24 h limit is free again, the 30-day one is not.
    w.now_ns += DAY_NS + 1;
    assert_eq!(left(&w), (2 * COIN, COIN));
    assert_eq!(
        w.request(1, a, COIN + 1, None),
        Err(Reject::WithdrawalLimitExceeded)
    );
    req(&mut w, 1, a, COIN);
    assert_eq!(left(&w), (COIN, 0));
    // Another user counts only their own withdrawals.
    assert_eq!(
        w.engine
            .withdrawal_limit_left(UserId(2), BTC, w.now_ns)
            .map(|x| x.1.day.0),
        Some(2 * COIN)
    );
}

#[test]
fn the_first_matching_rule_decides_and_is_recorded() {
    let (mut w, a) = alice_can_withdraw(0);
    policy(
        &mut w,
        RiskPolicy {
            rules: vec![
                rule("drain", Condition::BalanceShare { percent: 50 }, Decision::Review),
                rule(
                    "big",
                    Condition::BalanceShare { percent: 20 },
                    Decision::Delay { seconds: 3600 },
                ),
                rule("tiny", Condition::BalanceShare { percent: 0 }, Decision::Allow),
            ],
            ..RiskPolicy::default()
        },
    );
    // 10 BTC held: 1 BTC matches only "tiny" (allowed, no hold beyond the usual).
    let x = req(&mut w, 1, a, COIN);
    assert_eq!(x.status, WithdrawalStatus::Requested);
    assert_eq!(x.risk.as_ref().unwrap().rule, "tiny");
    // 3 BTC: delayed an hour; it cannot be signed before.
    let y = req(&mut w, 1, a, 3 * COIN);
    assert_eq!(
        (y.status, y.risk.as_ref().unwrap().rule.as_str()),
        (WithdrawalStatus::Waiting, "big")
    );
    w.refused(
        Command::WithdrawalSigning { id: y.id },
        Reject::WithdrawalNotReady,
    );
    w.now_ns += HOUR_NS;
    w.ok(Command::WithdrawalSigning { id: y.id });
    // 6 BTC of the 6 left: held for review; the reason is shown to reviewers.
    let z = req(&mut w, 1, a, 5 * COIN);
    let v = z.risk.clone().unwrap();
    assert_eq!(
        (z.status, v.rule.as_str(), v.decision),
        (WithdrawalStatus::Review, "drain", Decision::Review)
    );
    assert!(v.reason.contains("balance"), "{}", v.reason);
    w.refused(
        Command::WithdrawalSigning { id: z.id },
        Reject::WithdrawalNotReady,
    );
    // A rejecting rule records the request as failed and holds nothing.
    policy(
        &mut w,
        RiskPolicy {
            rules: vec![rule("no", Condition::Always, Decision::Reject)],
            ..RiskPolicy::default()
        },
    );
    let held = w.bal(1, BTC).1;
    let r = req(&mut w, 1, a, 1);
    assert_eq!(r.status, WithdrawalStatus::Failed);
    assert!(r.reason.unwrap().contains("risk rule no"));
    assert_eq!(w.bal(1, BTC).1, held);
}

#[test]
fn reviews_need_two_distinct_admins_above_the_threshold_and_never_the_requester() {
    let (mut w, a) = alice_can_withdraw(0);
    with_reviewers(&mut w);
    policy(
        &mut w,
        RiskPolicy {
            rules: vec![rule("all", Condition::Always, Decision::Review)],
            assets: vec![AssetRisk {
                asset: BTC,
                dual_approval_from: Amount(2 * COIN),
                hot_outflow_per_hour: Amount(100 * COIN),
            }],
            ..RiskPolicy::default()
        },
    );
    let big = req(&mut w, 1, a, 3 * COIN);
    assert_eq!((big.status, big.approvals_needed), (WithdrawalStatus::Review, 2));
    // The requester (who is a risk admin too) never reviews their own withdrawal.
    let cmd = review(&mut w, big.id, 1, true);
    w.refused(cmd, Reject::ReviewerIsRequester);
    // A user without a reviewer role cannot.
    let cmd = review(&mut w, big.id, 2, true);
    w.refused(cmd, Reject::RoleRequired);
    // One approval is not enough; the same admin twice counts once.
    let cmd = review(&mut w, big.id, 4, true);
    w.ok(cmd);
    assert_eq!(w.status(big.id), WithdrawalStatus::Review);
    let cmd = review(&mut w, big.id, 4, true);
    w.refused(cmd, Reject::AlreadyReviewed);
    // A second, distinct admin approves: ready for the signer.
    let cmd = review(&mut w, big.id, 5, true);
    w.ok(cmd);
    assert_eq!(w.status(big.id), WithdrawalStatus::Approved);
    w.ok(Command::WithdrawalSigning { id: big.id });
    // Below the threshold one approval suffices; a rejection releases the hold.
    let small = req(&mut w, 1, a, COIN);
    assert_eq!(small.approvals_needed, 1);
    let held = w.bal(1, BTC).1;
    let cmd = review(&mut w, small.id, 5, false);
    w.ok(cmd);
    assert_eq!(w.status(small.id), WithdrawalStatus::Failed);
    assert_eq!(w.bal(1, BTC).1, held - COIN);
    // A review with a proof for the other decision is refused.
    let third = req(&mut w, 1, a, COIN);
    let action = third.review_action(UserId(4), false);
    let proof = w.passkey_proof(4, &action);
    w.refused(
        Command::ReviewWithdrawal {
            id: third.id,
            reviewer: UserId(4),
            approve: true,
            reason: "checked".into(),
            via: Via::Session(crate::wallet::session_of(4)),
            proof,
        },
        Reject::StepUpActionMismatch,
    );
    // A proof over another withdrawal's review (same id and reviewer, another amount or
    // destination: what a forged record would name) is refused too.
    for other in [
        Withdrawal {
            amount: Amount(third.amount.0 + 1),
            ..third.clone()
        },
        Withdrawal {
            address: "bc1qsomewhereelse".into(),
            ..third.clone()
        },
    ] {
        let proof = w.passkey_proof(4, &other.review_action(UserId(4), true));
        w.refused(
            Command::ReviewWithdrawal {
                id: third.id,
                reviewer: UserId(4),
                approve: true,
                reason: "checked".into(),
                via: Via::Session(crate::wallet::session_of(4)),
                proof,
            },
            Reject::StepUpActionMismatch,
        );
    }
}

/// Each approval keeps its reviewer's proof with the withdrawal, in order, for the signer.
#[test]
fn approvals_keep_their_proofs_for_the_signer() {
    let (mut w, a) = alice_can_withdraw(0);
    with_reviewers(&mut w);
    policy(
        &mut w,
        RiskPolicy {
            rules: vec![rule("all", Condition::Always, Decision::Review)],
            assets: vec![AssetRisk {
                asset: BTC,
                dual_approval_from: Amount(2 * COIN),
                hot_outflow_per_hour: Amount(100 * COIN),
            }],
            ..RiskPolicy::default()
        },
    );
    let big = req(&mut w, 1, a, 3 * COIN);
    let mut proofs = Vec::new();
    for reviewer in [4, 5] {
        let cmd = review(&mut w, big.id, reviewer, true);
        let Command::ReviewWithdrawal { proof, .. } = &cmd else {
            unreachable!()
        };
        proofs.push(proof.clone());
        w.ok(cmd);
    }
    let rec = w.engine.wallet().withdrawal(big.id).unwrap().clone();
    assert_eq!(rec.status, WithdrawalStatus::Approved);
    assert_eq!(rec.approvals, vec![UserId(4), UserId(5)]);
    assert_eq!(rec.approval_proofs, proofs);
    assert_eq!(
        rec.approval_proofs[0].action,
        rec.review_action(UserId(4), true).digest()
    );
}

/// The gateway stores each chain's canonical form of an address; the rule also compares
/// spellings that differ only by letter case as one destination (bech32 in upper case is the
/// same address), which can only make it stricter.
#[test]
fn many_accounts_paying_one_new_address_are_held_and_the_asset_halted() {
    for spellings in [
        ["bc1qdrain", "bc1qdrain", "bc1qdrain"],
        ["bc1qdrain", "BC1QDRAIN", "bc1qdrain"],
        ["BC1QDRAIN", "bc1qdrain", "Bc1qDrain"],
    ] {
        fan_in(spellings);
    }
}

fn fan_in(spellings: [&str; 3]) {
    let mut w = W::new();
    for u in 1..=3 {
        w.fund(u, BTC, 10 * COIN);
    }
    policy(
        &mut w,
        RiskPolicy {
            rules: vec![rule(
                "fan-in",
                Condition::SharedDestination {
                    accounts: 2,
                    window_s: 3600,
                },
                Decision::HaltAsset,
            )],
            ..RiskPolicy::default()
        },
    );
    let mut ids = Vec::new();
    for (u, address) in (1..=3).zip(spellings) {
        let a = w.add_address(u, BTC, address, 0).id;
        ids.push((u, a));
    }
    let x1 = req(&mut w, 1, ids[0].1, COIN);
    let x2 = req(&mut w, 2, ids[1].1, COIN);
    assert_eq!(
        (x1.status, x2.status),
        (WithdrawalStatus::Requested, WithdrawalStatus::Requested),
        "{spellings:?}"
    );
    // The third account paying the same address: held, and the asset's withdrawals halted.
    let x3 = req(&mut w, 3, ids[2].1, COIN);
    assert_eq!(x3.status, WithdrawalStatus::Review, "{spellings:?}");
    assert!(x3.risk.unwrap().reason.contains("3 accounts"));
    assert!(!w.engine.asset(BTC).unwrap().switches.withdrawals);
    // Nothing more goes to the signer, and new requests are refused.
    w.refused(
        Command::WithdrawalSigning { id: x1.id },
        Reject::WithdrawalsDisabled,
    );
    assert_eq!(w.request(1, ids[0].1, 1, None), Err(Reject::WithdrawalsDisabled));
}

#[test]
fn a_platform_surge_and_a_fresh_security_change_fire_their_rules() {
    let (mut w, a) = alice_can_withdraw(0);
    policy(
        &mut w,
        RiskPolicy {
            rules: vec![rule(
                "surge",
                Condition::PlatformSurge {
                    multiple: 3,
                    window_s: 3600,
                    baseline_s: 6 * 3600,
                    min_count: 4,
                },
                Decision::Review,
            )],
            ..RiskPolicy::default()
        },
    );
    // A quiet baseline: one withdrawal an hour for six hours.
    for _ in 0..6 {
        req(&mut w, 1, a, 1000);
        w.now_ns += HOUR_NS;
    }
    // Then a burst: the fourth in an hour is more than three times the hourly average.
    let burst: Vec<Withdrawal> = (0..4).map(|_| req(&mut w, 1, a, 1000)).collect();
    assert!(burst[..3].iter().all(|x| x.status == WithdrawalStatus::Requested));
    assert_eq!(burst[3].status, WithdrawalStatus::Review);
    assert_eq!(burst[3].risk.as_ref().unwrap().rule, "surge");
}

#[test]
fn the_hourly_hot_outflow_cap_makes_approved_withdrawals_wait() {
    let (mut w, a) = alice_can_withdraw(0);
    policy(
        &mut w,
        RiskPolicy {
            assets: vec![AssetRisk {
                asset: BTC,
                dual_approval_from: Amount(u128::MAX),
                hot_outflow_per_hour: Amount(2 * COIN),
            }],
            ..RiskPolicy::default()
        },
    );
    let x = req(&mut w, 1, a, COIN);
    let y = req(&mut w, 1, a, COIN);
    let z = req(&mut w, 1, a, COIN);
    w.ok(Command::WithdrawalSigning { id: x.id });
    w.ok(Command::WithdrawalSigning { id: y.id });
    w.refused(
        Command::WithdrawalSigning { id: z.id },
        Reject::HotOutflowCapReached,
    );
    assert_eq!(w.status(z.id), WithdrawalStatus::Requested);
    w.now_ns += HOUR_NS + 1;
    w.ok(Command::WithdrawalSigning { id: z.id });
}

#[test]
fn the_operator_bootstraps_two_security_admins_and_then_cannot_grant_roles() {
    let mut w = W::new();
    for u in 1..=2 {
        w.ok(Command::Identity(IdentityCommand::SetRoles {
            user: UserId(u),
            roles: vec![AdminRole::SecurityAdmin],
            requested_by: "operator".into(),
            reason: "bootstrap".into(),
        }));
    }
    w.refused(
        Command::Identity(IdentityCommand::SetRoles {
            user: UserId(3),
            roles: vec![AdminRole::SecurityAdmin],
            requested_by: "operator".into(),
            reason: "one more".into(),
        }),
        Reject::RolesBootstrapClosed,
    );
}

// --- two-person changes, halts, incidents -----------------------------------------------------

use kinko_core::admin::{AdminChange, IncidentStatus, ProposalStatus};
use kinko_core::engine::HaltBy;

fn admins(w: &mut W) {
    // Users 4 and 5: security admins and risk admins; user 2: support only.
    for u in 4..=5 {
        w.ready_user(u);
    }
    // (The operator's bootstrap ends once two security admins exist: support first.)
    for (u, roles) in [
        (2, vec![AdminRole::Support]),
        (4, vec![AdminRole::SecurityAdmin, AdminRole::Risk]),
        (5, vec![AdminRole::SecurityAdmin, AdminRole::Risk]),
    ] {
        w.ok(Command::Identity(IdentityCommand::SetRoles {
            user: UserId(u),
            roles,
            requested_by: "operator".into(),
            reason: "bootstrap".into(),
        }));
    }
}

fn propose(w: &mut W, by: u64, change: AdminChange) -> Command {
    let action = Action::ProposeChange {
        user: UserId(by),
        change: change.digest(),
    };
    let proof = w.passkey_proof(by, &action);
    Command::ProposeChange {
        by: UserId(by),
        change,
        reason: "needed".into(),
        via: Via::Session(crate::wallet::session_of(by)),
        proof,
    }
}

fn approve(w: &mut W, id: u64, by: u64) -> Command {
    let change = w.engine.admin().proposal(id).unwrap().change.clone();
    let action = Action::ApproveChange {
        user: UserId(by),
        proposal: id,
        change: change.digest(),
    };
    let proof = w.passkey_proof(by, &action);
    Command::ApproveChange {
        id,
        by: UserId(by),
        via: Via::Session(crate::wallet::session_of(by)),
        proof,
    }
}

#[test]
fn sensitive_changes_need_a_second_admin_and_nobody_approves_their_own() {
    let (mut w, a) = alice_can_withdraw(0);
    admins(&mut w);
    let strict = RiskPolicy {
        rules: vec![rule("all", Condition::Always, Decision::Review)],
        ..RiskPolicy::default()
    };
    // Support staff cannot even propose a policy change.
    let cmd = propose(&mut w, 2, AdminChange::SetRiskPolicy(strict.clone()));
    w.refused(cmd, Reject::RoleRequired);
    let cmd = propose(&mut w, 4, AdminChange::SetRiskPolicy(strict.clone()));
    let id = match w.ok(cmd) {
        Reply::Proposal(p) => p.id,
        other => panic!("{other:?}"),
    };
    // Proposed, not yet in force.
    assert_eq!(req(&mut w, 1, a, 1).status, WithdrawalStatus::Requested);
    let cmd = approve(&mut w, id, 4);
    w.refused(cmd, Reject::OwnProposal);
    let cmd = approve(&mut w, id, 2);
    w.refused(cmd, Reject::RoleRequired);
    let cmd = approve(&mut w, id, 5);
    w.ok(cmd);
    assert_eq!(
        w.engine.admin().proposal(id).unwrap().status,
        ProposalStatus::Executed
    );
    assert_eq!(req(&mut w, 1, a, 1).status, WithdrawalStatus::Review);
    // Carried out once.
    let cmd = approve(&mut w, id, 5);
    w.refused(cmd, Reject::ProposalNotOpen);
    // Roles too, once the operator's bootstrap is over.
    let cmd = propose(
        &mut w,
        5,
        AdminChange::SetRoles {
            user: UserId(3),
            roles: vec![AdminRole::Viewer],
        },
    );
    let id = match w.ok(cmd) {
        Reply::Proposal(p) => p.id,
        other => panic!("{other:?}"),
    };
    let cmd = approve(&mut w, id, 4);
    w.ok(cmd);
    assert_eq!(
        w.engine.identity().user(UserId(3)).unwrap().roles,
        vec![AdminRole::Viewer]
    );
}

#[test]
fn a_global_halt_stops_requests_and_signing_and_resuming_takes_two_admins() {
    let (mut w, a) = alice_can_withdraw(0);
    admins(&mut w);
    let x = req(&mut w, 1, a, COIN);
    // Any admin halts at once (with a second factor); the system can too.
    let action = Action::Halt {
        user: UserId(2),
        asset: None,
    };
    let proof = w.passkey_proof(2, &action);
    w.ok(Command::HaltWithdrawals {
        asset: None,
        by: HaltBy::Admin {
            user: UserId(2),
            via: Via::Session(crate::wallet::session_of(2)),
            proof,
        },
        reason: "drill".into(),
    });
    assert_eq!(w.request(1, a, 1, None), Err(Reject::WithdrawalsDisabled));
    w.refused(
        Command::WithdrawalSigning { id: x.id },
        Reject::WithdrawalsDisabled,
    );
    // Cancelling still works: customers can always take their money back.
    let cmd = propose(&mut w, 4, AdminChange::ResumeWithdrawals { asset: None });
    let id = match w.ok(cmd) {
        Reply::Proposal(p) => p.id,
        other => panic!("{other:?}"),
    };
    let cmd = approve(&mut w, id, 5);
    w.ok(cmd);
    w.ok(Command::WithdrawalSigning { id: x.id });
}

#[test]
fn an_incident_splits_the_missing_amount_between_customers_and_the_company_and_halts() {
    // Customers end with 2 BTC and the company with 0.5 (the fee of a 7.5 BTC withdrawal).
    let (mut w, a) = alice_can_withdraw(COIN / 2);
    admins(&mut w);
    let x = req(&mut w, 1, a, COIN * 15 / 2);
    w.ok(Command::WithdrawalSigning { id: x.id });
    w.ok(Command::WithdrawalBroadcast {
        id: x.id,
        txid: "t".into(),
        network_fee: Amount(0),
    });
    assert_eq!(w.engine.funds(BTC), (2 * COIN, COIN / 2));
    let r = w.ok(Command::OpenIncident {
        kind: "unapproved_outflow".into(),
        asset: Some(BTC),
        summary: "5 BTC left the hot wallet with no approved withdrawal".into(),
        txids: vec!["ab".repeat(32)],
        missing: Amount(5 * COIN),
        opened_by: "system:reconciliation".into(),
        halt: true,
    });
    let Reply::Incident(i) = r else { panic!("{r:?}") };
    assert_eq!(
        (i.customer_share, i.company_share),
        (Amount(4 * COIN), Amount(COIN))
    );
    assert!(!w.engine.asset(BTC).unwrap().switches.withdrawals);
    // Resolved by a security admin with a second factor.
    let action = Action::ResolveIncident {
        user: UserId(4),
        incident: i.id,
    };
    let proof = w.passkey_proof(4, &action);
    w.ok(Command::ResolveIncident {
        id: i.id,
        by: UserId(4),
        resolution: "key rotated, funds recovered from cold".into(),
        via: Via::Session(crate::wallet::session_of(4)),
        proof,
    });
    assert_eq!(
        w.engine.admin().incident(i.id).unwrap().status,
        IncidentStatus::Resolved
    );
}

#[test]
fn deposits_and_trading_halt_per_asset_and_resume_with_two_admins() {
    use kinko_core::admin::Operation;
    let mut w = W::new();
    admins(&mut w);
    w.assign(1, BTC, "dep-1-halt").unwrap();
    let action = Action::HaltOperation {
        user: UserId(2),
        asset: BTC,
        operation: Operation::Deposits,
    };
    let proof = w.passkey_proof(2, &action);
    w.ok(Command::HaltOperation {
        asset: BTC,
        operation: Operation::Deposits,
        by: HaltBy::Admin {
            user: UserId(2),
            via: Via::Session(crate::wallet::session_of(2)),
            proof,
        },
        reason: "suspicious deposits".into(),
    });
    w.ok(Command::HaltOperation {
        asset: BTC,
        operation: Operation::Trading,
        by: HaltBy::System("operator:night shift".into()),
        reason: "market check".into(),
    });
    let s = w.engine.asset(BTC).unwrap().switches;
    assert!(!s.deposits && !s.trading && s.withdrawals);
    // A deposit arriving meanwhile is recorded (and held) but not credited.
    assert_eq!(w.assign(1, BTC, "dep-1-other"), Err(Reject::DepositsDisabled));
    let d = w.seen(BTC, "dep-1-halt", "late", 0, COIN).unwrap();
    w.refused(Command::DepositConfirmed { deposit: d }, Reject::DepositsDisabled);
    // Resuming takes a second admin.
    let cmd = propose(
        &mut w,
        4,
        AdminChange::ResumeOperation {
            asset: BTC,
            operation: Operation::Deposits,
        },
    );
    let id = match w.ok(cmd) {
        Reply::Proposal(p) => p.id,
        other => panic!("{other:?}"),
    };
    let cmd = approve(&mut w, id, 4);
    w.refused(cmd, Reject::OwnProposal);
    let cmd = approve(&mut w, id, 5);
    w.ok(cmd);
    assert!(w.engine.asset(BTC).unwrap().switches.deposits);
    w.ok(Command::DepositConfirmed { deposit: d });
    assert!(!w.engine.asset(BTC).unwrap().switches.trading);
}

#[test]
fn unfreezing_an_account_takes_two_admins_freezing_one() {
    let (mut w, _) = alice_can_withdraw(0);
    admins(&mut w);
    // The owner freezes it (one person: protective).
    w.ok(Command::Identity(IdentityCommand::Freeze {
        user: UserId(1),
        reason: "my phone was stolen".into(),
    }));
    let status = |w: &W| w.engine.identity().user(UserId(1)).unwrap().status;
    assert_eq!(status(&w), kinko_core::identity::UserStatus::Frozen);
    let change = AdminChange::UnfreezeUser { user: UserId(1) };
    // Support staff may not propose it; a security admin proposes, not yet in force.
    let cmd = propose(&mut w, 2, change.clone());
    w.refused(cmd, Reject::RoleRequired);
    let cmd = propose(&mut w, 4, change);
    let id = match w.ok(cmd) {
        Reply::Proposal(p) => p.id,
        other => panic!("{other:?}"),
    };
    assert_eq!(status(&w), kinko_core::identity::UserStatus::Frozen);
    // Not by the proposer, not by an admin without the role; by a second security admin.
    let cmd = approve(&mut w, id, 4);
    w.refused(cmd, Reject::OwnProposal);
    let cmd = approve(&mut w, id, 2);
    w.refused(cmd, Reject::RoleRequired);
    assert_eq!(status(&w), kinko_core::identity::UserStatus::Frozen);
    let cmd = approve(&mut w, id, 5);
    w.ok(cmd);
    assert_eq!(status(&w), kinko_core::identity::UserStatus::Active);
}

/// An asset or tier the policy sets no limits for fails closed under an `Unlimited` rule: its
/// withdrawals wait for reviewers instead of being unlimited; with limits and a per-asset row
/// they pass the rule.
#[test]
fn an_asset_or_tier_without_limits_goes_to_review_under_the_unlimited_rule() {
    let (mut w, a) = alice_can_withdraw(0);
    let limits = vec![TierLimit {
        tier: 0,
        asset: BTC,
        day_max: Amount(5 * COIN),
        month_max: Amount(50 * COIN),
    }];
    let row = vec![AssetRisk {
        asset: BTC,
        dual_approval_from: Amount(100 * COIN),
        hot_outflow_per_hour: Amount(100 * COIN),
    }];
    let unlimited = vec![rule("unlimited", Condition::Unlimited, Decision::Review)];
    policy(
        &mut w,
        RiskPolicy {
            rules: unlimited.clone(),
            limits: limits.clone(),
            assets: row.clone(),
        },
    );
    let fine = req(&mut w, 1, a, 1);
    assert_eq!((fine.status, fine.risk), (WithdrawalStatus::Requested, None));
    // Tier 1 has no limit row: held, and the reviewers are told why.
    w.ok(Command::SetUserTier {
        user: UserId(1),
        tier: 1,
    });
    let held = req(&mut w, 1, a, 1);
    assert_eq!(held.status, WithdrawalStatus::Review);
    let v = held.risk.unwrap();
    assert_eq!(v.rule, "unlimited");
    assert!(v.reason.contains("no tier 1 limit"), "{}", v.reason);
    // Back at tier 0, but without the per-asset row (no dual approval, no hourly cap): held.
    w.ok(Command::SetUserTier {
        user: UserId(1),
        tier: 0,
    });
    policy(
        &mut w,
        RiskPolicy {
            rules: unlimited,
            limits,
            assets: Vec::new(),
        },
    );
    let held = req(&mut w, 1, a, 1);
    assert_eq!(held.status, WithdrawalStatus::Review);
    assert!(held.risk.unwrap().reason.contains("per-asset row"));
}
