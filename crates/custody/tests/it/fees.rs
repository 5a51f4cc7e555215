//! Withdrawal fees and company funds against a real node and signer: miner fees are paid from
//! withdrawal fee revenue, then from the company treasury (funded through the company's own
//! deposit address), and a `reserve_shortfall` opens only when customers' coins paid.

use crate::reconcile::funded;
use crate::rig::{Options, Rig, COIN};
use kinko_core::wallet::{AddressId, WithdrawalStatus};
use kinko_core::{Amount, Command, SystemAccount, UserId};
use kinko_custody::reconcile::KIND_RESERVE_SHORTFALL;

/// The company's funds and what customers' coins paid: (fee revenue, treasury, network fees).
fn funds(rig: &Rig) -> (i128, i128, i128) {
    (
        rig.system(SystemAccount::FeeRevenue),
        rig.system(SystemAccount::CompanyTreasury),
        rig.system(SystemAccount::NetworkFees),
    )
}

fn set_fee(rig: &Rig, sats: u128) {
    rig.run(Command::SetWithdrawalFee {
        asset: rig.asset,
        fee: Amount(sats),
    })
    .unwrap();
}

/// Withdraws `amount` to `to` and sees it completed (final at depth 2); its miner fee.
fn paid(rig: &mut Rig, user: &(UserId, [u8; 32], Vec<u8>), to: AddressId, amount: u64) -> i128 {
    let w = rig.withdraw(user, to, amount).unwrap();
    rig.poll();
    rig.mine(2);
    rig.poll();
    let w = rig.withdrawal(w.id);
    assert_eq!(w.status, WithdrawalStatus::Completed);
    w.network_fee.0 as i128
}

#[test]
fn the_sweep_waits_until_withdrawal_fees_pay_its_miner_fee_and_no_shortfall_opens() {
    let mut rig = Rig::start(Options {
        hot_cap: COIN,
        hot_share_bps: 500,
        ..Options::default()
    });
    // kinko's default for LTC: 0.001.
    set_fee(&rig, 100_000);
    let (alice, to) = funded(&mut rig, "10");
    // Above the hot wallet's limit, but no company funds pay a sweep's miner fee: it waits.
    rig.mine(2);
    rig.poll();
    assert!(rig.link.view(|e| e.wallet().custody_moves().is_empty()));
    // The wait is on /ready for the operator to see, with what would end it.
    let waiting = rig.health.get("sweep:LTC").expect("sweep:LTC reported");
    assert!(!waiting.up, "{waiting:?}");
    assert!(waiting.reason.contains("company address"), "{}", waiting.reason);
    // A withdrawal: its fee pays its miner fee, the rest is revenue.
    let miner = paid(&mut rig, &alice, to, COIN);
    assert!(miner > 0 && miner < 100_000, "{miner}");
    // Now revenue pays the sweep (spent coins are final at depth 2).
    rig.mine(2);
    rig.poll();
    let moves = rig.link.view(|e| e.wallet().custody_moves().to_vec());
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert!(
        rig.health.get("sweep:LTC").is_some_and(|c| c.up),
        "no longer waiting"
    );
    let sweep = moves[0].network_fee.0 as i128;
    assert_eq!(funds(&rig), (100_000 - miner - sweep, 0, 0));
    // The full reconciliation (a restart runs one at once) finds customers covered.
    rig.mine(1);
    rig.poll();
    rig.restarted().poll().unwrap();
    assert!(rig.open_incidents().is_empty(), "{:?}", rig.open_incidents());
    assert!(rig.withdrawals_on());
    rig.audit();
}

#[test]
fn a_miner_fee_above_the_withdrawal_fee_is_paid_by_the_company_treasury_funded_on_chain() {
    // Hot may hold twice the customers' funds: no sweep here.
    let mut rig = Rig::start(Options {
        hot_share_bps: 20_000,
        ..Options::default()
    });
    // A fee below the miner's.
    set_fee(&rig, 100);
    let (alice, to) = funded(&mut rig, "2");
    assert_eq!(rig.customer(alice.0).1, 2 * COIN as u128);
    // The company sends 0.5 LTC to its own address: credited to its treasury once, not to
    // any customer.
    rig.fund_company("0.5");
    rig.poll();
    rig.restarted().poll().unwrap();
    assert_eq!(funds(&rig), (0, COIN as i128 / 2, 0));
    assert_eq!(rig.link.view(|e| e.wallet().company_deposits().len()), 1);
    assert_eq!(rig.customer(alice.0).1, 2 * COIN as u128);
    let miner = paid(&mut rig, &alice, to, COIN / 2);
    assert!(miner > 100, "{miner}");
    // The withdrawal's fee paid 100, the treasury the rest; nothing from customers' coins.
    assert_eq!(funds(&rig), (0, COIN as i128 / 2 - (miner - 100), 0));
    rig.restarted().poll().unwrap();
    assert!(rig.open_incidents().is_empty(), "{:?}", rig.open_incidents());
    rig.audit();
}

#[test]
fn a_real_shortfall_still_opens_an_incident_for_what_customers_coins_paid() {
    // A busy chain: miner fees of about 0.0001.
    let mut rig = Rig::start(Options {
        fee_rate_sat_vb: 70,
        ..Options::default()
    });
    // No withdrawal fee, and company funds smaller than the miner fee.
    set_fee(&rig, 0);
    let (alice, to) = funded(&mut rig, "2");
    rig.fund_company("0.00006");
    assert_eq!(funds(&rig), (0, 6_000, 0));
    let miner = paid(&mut rig, &alice, to, COIN / 2);
    assert!(miner > 6_000, "{miner}");
    // The treasury paid what it had; the rest was customers' coins.
    assert_eq!(funds(&rig), (0, 0, miner - 6_000));
    assert!(rig.open_incidents().is_empty());
    rig.restarted().poll().unwrap();
    let open = rig.open_incidents();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].kind, KIND_RESERVE_SHORTFALL);
    assert_eq!(open[0].missing.0 as i128, miner - 6_000);
    // The company has nothing left in the asset: the whole loss is on customers' funds.
    assert_eq!(
        (open[0].customer_share.0 as i128, open[0].company_share.0),
        (miner - 6_000, 0)
    );
    assert!(rig.withdrawals_on());
    rig.audit();
}
