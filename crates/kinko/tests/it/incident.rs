//! `kinko incident report`: the timeline and amounts of an incident, from the journal alone.

use super::{kinko, text};
use kinko_core::engine::{Command, HaltBy};
use kinko_core::{Amount, AssetCode, AssetId, UserId};

/// A confirmed deposit of `amount` to customer `u`'s own LTC address.
fn credit_deposit(run: &impl Fn(Command) -> kinko_core::Reply, ltc: AssetId, u: u64, amount: u128) {
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
        panic!("a deposit reply")
    };
    run(Command::DepositConfirmed { deposit: d });
}

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
            credit_deposit(&run, ltc, u, amount);
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

const PASSWORD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A passkey proof for `action` by `user` as the gateway hands it over before the relying party
/// is journaled (engine-only here: `kinko serve` journals it at start): signature counter `n`.
fn proof(user: u64, action: &kinko_core::identity::Action, n: u32) -> kinko_core::identity::StepUp {
    let mut authenticator_data = vec![0; 37];
    authenticator_data[33..37].copy_from_slice(&n.to_be_bytes());
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&user.to_be_bytes());
    nonce[8..12].copy_from_slice(&n.to_be_bytes());
    kinko_core::identity::StepUp {
        action: action.digest(),
        issued_ns: now_ns(),
        nonce,
        factor: kinko_core::identity::ProofFactor::Passkey {
            credential_id: format!("admin-key-{user}").into_bytes(),
            authenticator_data,
            client_data_json: b"{}".to_vec(),
            signature: vec![1],
        },
    }
}

fn session(user: u64) -> [u8; 32] {
    let mut t = [0x5e; 32];
    t[..8].copy_from_slice(&user.to_be_bytes());
    t
}

/// Issue 22, item 4, through the binary: a theft's incident, `kinko incident restitution`
/// printing the plan, one admin's approval refused, two admins' executing it, the customers made
/// whole exactly by their attributed shares, the incident closed, the journal replaying to the
/// same state, and `kinko serve` mailing each customer their notice from the journal.
#[test]
fn restitution_makes_the_affected_customers_whole_after_two_admins() {
    use kinko_core::admin::{AdminChange, RestitutionPlan};
    use kinko_core::identity::{Action, AdminRole, IdentityCommand, Passkey, SessionLevel, Via};
    use kinko_core::Reply;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ltc = AssetId(0);
    let customers = [(1u64, 300_000_000u128), (2, 100_000_000)];
    {
        let node = kinko_engine::launch::open(&kinko_engine::EngineConfig::new(&data)).unwrap();
        let h = node.sequencer.handle();
        let run = |c: Command| {
            let d = format!("{c:?}");
            h.submit(c)
                .unwrap()
                .reply
                .unwrap_or_else(|e| panic!("{d}: {e:?}"))
        };
        run(Command::DefineAsset {
            code: AssetCode::new("LTC").unwrap(),
            decimals: 8,
        });
        // Customers 1 and 2, admins 3 and 4 (sessions, passkeys, the treasury role).
        for (user, name) in [(1u64, "alice"), (2, "bob"), (3, "admin3"), (4, "admin4")] {
            run(Command::Identity(IdentityCommand::Register {
                email: format!("{name}@example.com"),
                password_hash: PASSWORD_HASH.into(),
            }));
            if user < 3 {
                continue;
            }
            run(Command::Identity(IdentityCommand::OpenSession {
                user: UserId(user),
                token_hash: session(user),
                level: SessionLevel::Full,
                expires_ns: now_ns() + 3_600_000_000_000,
                device: "test".into(),
                ip: "127.0.0.1".into(),
                password_hash_digest: *blake3::hash(PASSWORD_HASH.as_bytes()).as_bytes(),
            }));
            run(Command::Identity(IdentityCommand::EnrolPasskey {
                user: UserId(user),
                passkey: Passkey {
                    credential_id: format!("admin-key-{user}").into_bytes(),
                    public_key: vec![1; 65],
                    sign_count: 0,
                    label: "admin key".into(),
                    created_ns: 0,
                },
                proof: None,
                recovery: vec![[user as u8; 32]],
            }));
            run(Command::Identity(IdentityCommand::SetRoles {
                user: UserId(user),
                roles: vec![AdminRole::SecurityAdmin, AdminRole::Treasury],
                requested_by: "operator".into(),
                reason: "bootstrap".into(),
            }));
        }
        for (u, amount) in customers {
            credit_deposit(&run, ltc, u, amount);
        }
        // The company's own 4 LTC, in its treasury.
        run(Command::CompanyDeposit {
            asset: ltc,
            txid: "cd".repeat(32),
            vout: 0,
            amount: Amount(400_000_000),
        });
        run(Command::OpenIncident {
            kind: "unapproved_outflow".into(),
            asset: Some(ltc),
            summary: "2 LTC left the hot wallet with no approved withdrawal".into(),
            txids: vec!["ab".repeat(32)],
            missing: Amount(200_000_000),
            opened_by: "system:reconciliation".into(),
            halt: true,
        });
        node.sequencer.shutdown().unwrap();
    }
    // The plan, from the journal alone.
    let out = kinko(&data, &["incident", "restitution", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    // 2 LTC × 4 / 8 held by customers: 1 LTC, spread 3 : 1.
    for want in [
        "restitution plan for incident 1 — unapproved_outflow — LTC",
        "customer share  1.00000000 LTC over 2 accounts",
        "insurance fund  0.00000000 LTC",
        "treasury        1.00000000 LTC",
        "account        1  owed 0.75000000 LTC  paid 0.75000000 LTC",
        "account        2  owed 0.25000000 LTC  paid 0.25000000 LTC",
    ] {
        assert!(printed.contains(want), "missing {want:?} in\n{printed}");
    }
    let body: serde_json::Value = serde_json::from_str(printed.lines().last().unwrap()).unwrap();
    assert_eq!(body["kind"], "restitution");
    let plan: RestitutionPlan = serde_json::from_value(body["plan"].clone()).unwrap();
    let hash_line = printed.lines().find(|l| l.starts_with("plan hash")).unwrap();
    assert!(hash_line.ends_with(&hex::encode(plan.hash())), "{hash_line}");
    let bad = kinko(
        &data,
        &[
            "incident",
            "restitution",
            "1",
            "--pay-asset",
            "LTC",
            "--rate",
            "1.5",
        ],
    );
    assert!(
        !bad.status.success() && text(&bad).contains("NUM/DEN"),
        "{}",
        text(&bad)
    );

    let (mail_from, live) = {
        let node = kinko_engine::launch::open(&kinko_engine::EngineConfig::new(&data)).unwrap();
        let h = node.sequencer.handle();
        let change = AdminChange::Restitution(plan.clone());
        let via = |u: u64| Via::Session(session(u));
        let r = h
            .submit(Command::ProposeChange {
                by: UserId(3),
                change: change.clone(),
                reason: "restitution of incident 1".into(),
                via: via(3),
                proof: proof(
                    3,
                    &Action::ProposeChange {
                        user: UserId(3),
                        change: change.digest(),
                    },
                    1,
                ),
            })
            .unwrap();
        let Ok(Reply::Proposal(p)) = r.reply else {
            panic!("{:?}", r.reply)
        };
        let approve = |by: u64, n: u32| Command::ApproveChange {
            id: p.id,
            by: UserId(by),
            via: via(by),
            proof: proof(
                by,
                &Action::ApproveChange {
                    user: UserId(by),
                    proposal: p.id,
                    change: change.digest(),
                },
                n,
            ),
        };
        // One admin's approval is not enough: the proposer cannot approve.
        let r = h.submit(approve(3, 2)).unwrap();
        assert_eq!(r.reply, Err(kinko_core::Reject::OwnProposal));
        let before = r.seq;
        let r = h.submit(approve(4, 1)).unwrap();
        assert!(matches!(r.reply, Ok(Reply::Proposal(_))), "{:?}", r.reply);
        // Replayed: refused.
        let again = h.submit(approve(4, 2)).unwrap();
        assert_eq!(again.reply, Err(kinko_core::Reject::ProposalNotOpen));
        let r = h
            .submit(Command::ResolveIncident {
                id: 1,
                by: UserId(3),
                resolution: "customers made whole by proposal 1".into(),
                via: via(3),
                proof: proof(
                    3,
                    &Action::ResolveIncident {
                        user: UserId(3),
                        incident: 1,
                    },
                    3,
                ),
            })
            .unwrap();
        assert!(r.reply.is_ok(), "{:?}", r.reply);
        let engine = node.sequencer.shutdown().unwrap();
        for ((u, held), line) in customers.iter().zip(&plan.lines) {
            let acc = engine.ledger().customer_account(UserId(*u), ltc).unwrap();
            assert_eq!(
                engine.ledger().account(acc).unwrap().balance(),
                (*held + line.pay.0) as i128,
                "customer {u}"
            );
        }
        let i = engine.admin().incident(1).unwrap();
        assert_eq!(i.restitution, Some(p.id));
        assert_eq!(i.status, kinko_core::admin::IncidentStatus::Resolved);
        assert_eq!(plan.total(), Some(i.customer_share));
        (before, engine.state_hash())
    };
    // Replaying the journal from the beginning rebuilds the same state.
    let mut replayed = kinko_core::engine::Engine::new();
    let mut ev = Vec::new();
    for rec in kinko_journal::read_from(&data.join("journal"), 1).unwrap() {
        let rec = rec.unwrap();
        let cmd = kinko_engine::decode_command(rec.kind, &rec.payload).unwrap();
        let _ = replayed.apply(rec.seq, rec.timestamp_ns, &cmd, &mut ev);
        ev.clear();
    }
    assert_eq!(replayed.state_hash(), live, "replay of the journal");
    let report = kinko(&data, &["incident", "report", "1"]);
    assert!(
        text(&report).contains("restitution proposal 1 executed")
            && text(&report).contains(
                ": 2 accounts paid 1.00000000 LTC (insurance fund 0.00000000, treasury 1.00000000)"
            ),
        "{}",
        text(&report)
    );
    let list = kinko(&data, &["incident", "list"]);
    assert!(
        text(&list).contains("1\tresolved\tunapproved_outflow"),
        "{}",
        text(&list)
    );

    // `kinko serve` mails each customer from the journal (its mail cursor stands before the
    // approval, as after a crash): the notices are derived from the committed events.
    std::fs::create_dir_all(data.join("mail")).unwrap();
    std::fs::write(data.join("mail/cursor"), format!("{mail_from}\n")).unwrap();
    let mut child = super::spawn(&data, &["serve", "--listen", "127.0.0.1:0"]);
    let _addr = super::serving_addr(&mut child);
    let outbox = data.join("outbox");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let notices = loop {
        let found: Vec<String> = std::fs::read_dir(&outbox)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with("-restitution.eml"))
                    .map(|e| std::fs::read_to_string(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        if found.len() >= 2 || std::time::Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    super::terminate(&mut child);
    assert_eq!(notices.len(), 2, "{notices:?}");
    for (who, amount) in [
        ("alice@example.com", "0.75000000 LTC"),
        ("bob@example.com", "0.25000000 LTC"),
    ] {
        assert!(
            notices
                .iter()
                .any(|m| m.contains(who) && m.contains(amount) && m.contains("incident 1")),
            "no notice to {who} for {amount}: {notices:?}"
        );
    }
}
