//! `kinko incident report`: the timeline and amounts of an incident, from the journal alone.

use super::{kinko, text};
use kinko_core::engine::{Command, HaltBy};
use kinko_core::{Amount, AssetCode, AssetId, UserId};

#[test]
fn an_incident_report_gives_the_timeline_and_the_split_from_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    {
        let node = kinko_engine::launch::open(&kinko_engine::EngineConfig::new(&data)).unwrap();
        let h = node.sequencer.handle();
        let run = |c: Command| h.submit(c).unwrap().reply.unwrap();
        run(Command::DefineAsset {
            code: AssetCode::new("LTC").unwrap(),
            decimals: 8,
        });
        let ltc = AssetId(0);
        for (u, amount) in [(1u64, 300_000_000u128), (2, 100_000_000)] {
            let address = format!("rltc1qcustomer{u}");
            run(Command::AssignDepositAddress {
                user: UserId(u),
                asset: ltc,
                address: address.clone(),
            });
            let kinko_core::Reply::Deposit(d) = run(Command::DepositSeen {
                asset: ltc,
                address,
                txid: format!("{u:064x}"),
                vout: 0,
                amount: Amount(amount),
            }) else {
                panic!()
            };
            run(Command::DepositConfirmed { deposit: d });
        }
        run(Command::OpenIncident {
            kind: "unapproved_outflow".into(),
            asset: Some(ltc),
            summary: "2 LTC left the hot wallet with no approved withdrawal".into(),
            txids: vec!["ab".repeat(32)],
            missing: Amount(200_000_000),
            opened_by: "system:reconciliation".into(),
            halt: true,
        });
        run(Command::HaltWithdrawals {
            asset: None,
            by: HaltBy::System("operator:night shift".into()),
            reason: "precaution".into(),
        });
        node.sequencer.shutdown().unwrap();
    }
    let out = kinko(&data, &["incident", "report", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    for want in [
        "incident 1 — unapproved_outflow — LTC",
        "status     open\n",
        "missing    2.00000000 (customers 2.00000000, company 0.00000000)",
        &"ab".repeat(32),
        "DETECTED: incident 1 (unapproved_outflow) opened by system:reconciliation",
        "HALT of withdrawals by system:reconciliation",
        "HALT of withdrawals by operator:night shift: precaution",
        "withdrawals switched off",
        // The affected accounts agree with the split: the customers' 2 LTC fall on the two
        // customers in proportion to the 3 and 1 LTC they held.
        "  customers  2.00000000\n",
        "    account        1  1.50000000  (of 3.00000000 held)\n",
        "    account        2  0.50000000  (of 1.00000000 held)\n",
        "  company    0.00000000\n",
    ] {
        assert!(report.contains(want), "missing {want:?} in\n{report}");
    }
    assert!(!report.contains("Some("), "debug forms in the report:\n{report}");
    let none = kinko(&data, &["incident", "report", "9"]);
    assert!(
        !none.status.success() && text(&none).contains("no incident 9"),
        "{}",
        text(&none)
    );
}
