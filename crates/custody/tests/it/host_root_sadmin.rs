//! Host-compromise rows where the engine is involved (docs/design/custody.md, "Host
//! compromise"): root on the kinko host talks to the signer's socket directly, with a real
//! `litecoind` regtest node, the engine and the signer on its Unix socket. Each row: refused with
//! its code, alerted in the signer's log, nothing signed, nothing sent: a held withdrawal sent
//! straight to the signer, a review forged in the engine, an engine halt the engine's own
//! switch cannot lift at the signer.

use crate::reconcile::funded;
use crate::rig::{Options, Rig, COIN, NET};
use kinko_chain::keys::derive_hot;
use kinko_core::asset::AssetSwitches;
use kinko_core::engine::{Command, HaltBy};
use kinko_core::risk::{Condition, Decision, RiskPolicy, RiskRule};
use kinko_core::wallet::{Withdrawal, WithdrawalStatus};
use kinko_core::Reply;
use kinko_signer_proto::protocol::{Request, Response};
use kinko_signer_proto::SignerClient;

/// What root on the host can send: the engine's record of `w` as custody would send it, with a
/// real PSBT of the hot wallet's coins paying exactly it.
fn straight_to_signer(rig: &Rig, w: &Withdrawal) -> Response {
    let utxos = rig.custody.hot_utxos().unwrap();
    let dest = kinko_chain::script_for(NET, &w.address).unwrap();
    let change = derive_hot(NET, &rig.hot_key, 1, w.id.0 as u32).unwrap();
    let amount = u64::try_from(w.amount.0).unwrap();
    let built = kinko_chain::psbt::build(NET, &utxos, &[(dest, amount)], Some(&change), 10).unwrap();
    SignerClient::connect(&rig.signer_socket)
        .unwrap()
        .call(&Request::SignWithdrawal {
            withdrawal: Box::new(kinko_custody::to_signer::withdrawal(w)),
            psbt: kinko_chain::psbt::to_base64(&built.psbt),
            journal: None,
        })
        .unwrap()
}

fn signer_log(rig: &Rig, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(rig.dir.path().join("signer.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["entry"]["kind"] == kind)
        .collect()
}

fn expect_refused(r: Response, want: &str) {
    match r {
        Response::Refused { code, .. } if code == want => {}
        other => panic!("expected {want}, got {other:?}"),
    }
}

fn mempool_empty(rig: &Rig) -> bool {
    let txids: Vec<String> = rig.miner().call("getrawmempool", serde_json::json!([])).unwrap();
    txids.is_empty()
}

/// A withdrawal the engine's risk policy held for review, taken straight to the signer by root
/// on the host: the signer sees the engine's "needs 1 approval" and refuses it without a
/// reviewer's assertion.
#[test]
fn a_held_withdrawal_sent_straight_to_the_signer_is_refused() {
    let mut rig = Rig::start(Options::default());
    let (alice, to) = funded(&mut rig, "2");
    assert_eq!(
        rig.run(Command::SetRiskPolicy(RiskPolicy {
            rules: vec![RiskRule {
                name: "hold-everything".into(),
                asset: None,
                when: Condition::Always,
                then: Decision::Review,
            }],
            ..RiskPolicy::default()
        })),
        Ok(Reply::Done)
    );
    let w = rig.withdraw(&alice, to, COIN / 2).unwrap();
    assert_eq!((w.status, w.approvals_needed), (WithdrawalStatus::Review, 1));
    // The custody service does not take it to the signer.
    rig.poll();
    assert_eq!(rig.withdrawal(w.id).status, WithdrawalStatus::Review);
    // Root on the host does.
    expect_refused(straight_to_signer(&rig, &w), "REVIEW_REQUIRED");
    assert_eq!(rig.withdrawal(w.id).status, WithdrawalStatus::Review);
    let alerts = signer_log(&rig, "alerted");
    assert!(
        alerts.iter().any(|a| a["entry"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("REVIEW_REQUIRED")),
        "{alerts:?}"
    );
    assert!(mempool_empty(&rig));
}

/// An engine halt reaches the signer within the poll; the next signature is refused, also
/// after the engine's switch is turned back on (the engine's resume does not resume the
/// signer), and nothing leaves the hot wallet.
#[test]
fn an_engine_halt_binds_the_signer_until_its_admins_resume() {
    let mut rig = Rig::start(Options::default());
    let (alice, to) = funded(&mut rig, "2");
    let w = rig.withdraw(&alice, to, COIN / 2).unwrap();
    assert_eq!(w.status, WithdrawalStatus::Requested);
    rig.run(Command::HaltWithdrawals {
        asset: Some(rig.asset),
        by: HaltBy::System("operator:test".into()),
        reason: "suspected theft".into(),
    })
    .unwrap();
    rig.poll();
    let status = SignerClient::connect(&rig.signer_socket)
        .unwrap()
        .call(&Request::Status)
        .unwrap();
    match status {
        Response::Status {
            halted: Some(why), ..
        } => assert!(why.contains("withdrawals of LTC halted"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(signer_log(&rig, "halt_requested").len(), 1);
    expect_refused(straight_to_signer(&rig, &w), "SIGNER_HALTED");
    // The engine's switch back on: custody takes the withdrawal to the signer, which refuses.
    rig.run(Command::SetAssetSwitches {
        asset: rig.asset,
        switches: AssetSwitches {
            deposits: true,
            withdrawals: true,
            trading: true,
        },
    })
    .unwrap();
    rig.poll();
    let after = rig.withdrawal(w.id);
    assert_eq!(after.status, WithdrawalStatus::Failed);
    assert!(
        after.reason.as_deref().unwrap_or("").contains("SIGNER_HALTED"),
        "{:?}",
        after.reason
    );
    assert!(signer_log(&rig, "signed").is_empty());
    assert!(mempool_empty(&rig));
    // The halt was forwarded once, not every poll.
    rig.poll();
    assert_eq!(signer_log(&rig, "halt_requested").len(), 1);
}

/// Root on the host makes a reviewer of its own (the operator's role command) and approves a
/// held withdrawal in the engine with a TOTP code it mints from the secret it can unseal: the
/// engine approves, custody takes it to the signer, and the signer, which knows no such
/// admin, refuses it. Nothing is sent.
#[test]
fn a_review_forged_in_the_engine_is_refused_by_the_signer() {
    use kinko_core::identity::{AdminRole, IdentityCommand, ProofFactor, StepUp, Via};
    let mut rig = Rig::start(Options::default());
    let (alice, to) = funded(&mut rig, "2");
    assert_eq!(
        rig.run(Command::SetRiskPolicy(RiskPolicy {
            rules: vec![RiskRule {
                name: "hold-everything".into(),
                asset: None,
                when: Condition::Always,
                then: Decision::Review,
            }],
            ..RiskPolicy::default()
        })),
        Ok(Reply::Done)
    );
    let w = rig.withdraw(&alice, to, COIN / 2).unwrap();
    assert_eq!(w.status, WithdrawalStatus::Review);
    let (mallory, session, secret) = rig.user(2);
    rig.run(Command::Identity(IdentityCommand::SetRoles {
        user: mallory,
        roles: vec![AdminRole::Risk],
        requested_by: "operator".into(),
        reason: "made up".into(),
    }))
    .unwrap();
    let now = crate::rig::now_ns();
    let step = now / 30_000_000_000;
    let mut nonce = [7u8; 16];
    nonce[..8].copy_from_slice(&now.to_be_bytes());
    let proof = StepUp {
        action: w.review_action(mallory, true).digest(),
        issued_ns: now,
        nonce,
        factor: ProofFactor::Totp {
            step,
            code: format!("{:06}", kinko_api::totp::code_at(&secret, step)),
        },
    };
    rig.run(Command::ReviewWithdrawal {
        id: w.id,
        reviewer: mallory,
        approve: true,
        reason: "looks fine".into(),
        via: Via::Session(session),
        proof,
    })
    .unwrap();
    assert_eq!(rig.withdrawal(w.id).status, WithdrawalStatus::Approved);
    rig.poll();
    let after = rig.withdrawal(w.id);
    assert_eq!(after.status, WithdrawalStatus::Failed);
    assert!(
        after.reason.as_deref().unwrap_or("").contains("REVIEWER_UNKNOWN"),
        "{:?}",
        after.reason
    );
    assert!(signer_log(&rig, "signed").is_empty());
    assert!(signer_log(&rig, "alerted").iter().any(|a| a["entry"]["detail"]
        .as_str()
        .unwrap()
        .starts_with("REVIEWER_UNKNOWN")));
    assert!(mempool_empty(&rig));
}
