//! Scenario (b), after Crypto.com: 50 accounts ask to withdraw to one new address. The rule
//! fires, the withdrawals are held, the asset is halted, and nothing leaves the node.

use crate::rig::{Options, Rig};
use kinko_core::engine::Command;
use kinko_core::reject::Reject;
use kinko_core::risk::{Condition, Decision, RiskPolicy, RiskRule};
use kinko_core::wallet::WithdrawalStatus;

#[test]
fn fifty_accounts_draining_to_one_address_are_held_and_the_asset_halted() {
    let mut rig = Rig::start(Options::default());
    let users: Vec<_> = (1..=50).map(|n| rig.user(n)).collect();
    let addresses: Vec<String> = users.iter().map(|u| rig.deposit_address(u.0)).collect();
    // The node's watch-only wallet imports them (as it does every poll, ahead of use).
    rig.poll();
    // More mature coinbases, and a block every 20 sends (the mempool limits chains of
    // unconfirmed change).
    rig.mine(30);
    for (i, a) in addresses.iter().enumerate() {
        rig.miner().send_to_address(a, "1").unwrap();
        if i % 20 == 19 {
            rig.mine(1);
        }
    }
    rig.poll();
    rig.mine(2);
    rig.poll();
    let credited = rig.link.view(|e| {
        e.wallet()
            .deposits()
            .iter()
            .filter(|d| d.status == kinko_core::wallet::DepositStatus::Credited)
            .count()
    });
    assert_eq!(credited, 50);
    assert_eq!(
        rig.run(Command::SetRiskPolicy(RiskPolicy {
            rules: vec![RiskRule {
                name: "many-accounts-one-address".into(),
                asset: None,
                when: Condition::SharedDestination {
                    accounts: 3,
                    window_s: 3600,
                },
                then: Decision::HaltAsset,
            }],
            ..RiskPolicy::default()
        })),
        Ok(kinko_core::Reply::Done)
    );
    let drain = rig.miner().get_new_address("attacker").unwrap();
    let mut outcomes = Vec::new();
    for u in &users {
        let to = rig.withdrawal_address(u.0, &drain);
        outcomes.push(rig.withdraw(u, to, 90_000_000));
    }
    // The first three pass the rule; the fourth account paying the address trips it: held for
    // review and the asset halted; every later request is refused.
    let statuses: Vec<_> = outcomes.iter().map(|o| o.as_ref().map(|w| w.status)).collect();
    assert!(
        statuses[..3]
            .iter()
            .all(|s| *s == Ok(WithdrawalStatus::Requested)),
        "{statuses:?}"
    );
    assert_eq!(statuses[3], Ok(WithdrawalStatus::Review));
    assert!(
        statuses[4..]
            .iter()
            .all(|s| *s == Err(&Reject::WithdrawalsDisabled)),
        "{statuses:?}"
    );
    let held = outcomes[3].as_ref().unwrap();
    assert_eq!(held.risk.as_ref().unwrap().rule, "many-accounts-one-address");
    assert!(!rig.withdrawals_on());
    // The custody service sends nothing: not even the three that passed go to the signer.
    let hot_before = rig.custody.balances().unwrap().0;
    rig.poll();
    rig.poll();
    for o in &outcomes[..4] {
        let w = rig.withdrawal(o.as_ref().unwrap().id);
        assert!(
            matches!(w.status, WithdrawalStatus::Requested | WithdrawalStatus::Review),
            "{:?}",
            w.status
        );
        assert!(w.txid.is_none());
    }
    assert_eq!(rig.custody.balances().unwrap().0, hot_before);
    assert!(rig
        .miner()
        .list_unspent(0, Some(std::slice::from_ref(&drain)))
        .unwrap()
        .is_empty());
    // Customers can still take their requests back.
    let first = outcomes[0].as_ref().unwrap();
    assert!(rig
        .run(Command::CancelWithdrawal {
            user: first.user,
            id: first.id
        })
        .is_ok());
    rig.audit();
}
