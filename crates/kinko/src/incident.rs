//! `kinko incident report ID`: an incident's timeline, affected accounts and amounts, rebuilt
//! from the journal alone (the record regulators ask for).
//!
//! The journal is replayed into a fresh engine (read-only: it can run beside a live server), and
//! the events are read as they happen:
//! - **first anomalous event**: the earliest sign of trouble for the incident's asset in the
//!   24 hours before detection — a withdrawal a risk rule held, delayed or refused, a second
//!   factor or password failure of an account that then withdrew, or a halt;
//! - **detection**: the incident opened (by whom, with the transactions);
//! - **halt** and **resume**: the asset's (or every asset's) withdrawals switched off and on;
//! - **resolution**.
//!
//! Affected accounts: the incident's missing amount with its customer / company split, and
//! each share spread over the accounts it falls on, in proportion to what each held of the
//! asset when the incident opened (the same balances the engine split by, so the accounts add
//! up to the split exactly); then the accounts whose withdrawals of the asset were held,
//! refused, or failed in that window, with their amounts.

use anyhow::bail;
use kinko_core::admin::{split, AdminEvent};
use kinko_core::engine::{Engine, Event};
use kinko_core::identity::IdentityEvent;
use kinko_core::ledger::Owner;
use kinko_core::wallet::{WalletEvent, WithdrawalStatus};
use kinko_core::{AssetId, UserId};
use std::collections::BTreeMap;
use std::path::Path;

const WINDOW_NS: u64 = 24 * 3_600_000_000_000;

struct Line {
    ts: u64,
    seq: u64,
    what: String,
}

pub fn report(journal: &Path, id: u64) -> anyhow::Result<()> {
    if !journal.is_dir() {
        bail!("{} is not a journal directory", journal.display());
    }
    let mut engine = Engine::new();
    let mut events = Vec::new();
    // Everything that may matter, kept until we know the incident's asset and time.
    let mut lines: Vec<(Option<AssetId>, Option<UserId>, Line, &'static str)> = Vec::new();
    let mut incident = None;
    let mut holders = Holders::default();
    for rec in kinko_journal::read_from(journal, 1)? {
        let rec = rec?;
        let cmd = kinko_engine::decode_command(rec.kind, &rec.payload)
            .map_err(|e| anyhow::anyhow!("record {} cannot be decoded: {e}", rec.seq))?;
        events.clear();
        let _ = engine.apply(rec.seq, rec.timestamp_ns, &cmd, &mut events);
        for e in &events {
            let line = |what: String| Line {
                ts: rec.timestamp_ns,
                seq: rec.seq,
                what,
            };
            match e {
                Event::Wallet(WalletEvent::Withdrawal(w)) => {
                    if let Some(r) = w.risk.as_ref().filter(|_| {
                        matches!(
                            w.status,
                            WithdrawalStatus::Review | WithdrawalStatus::Waiting | WithdrawalStatus::Failed
                        ) && w.approvals.is_empty()
                    }) {
                        lines.push((
                            Some(w.asset),
                            Some(w.user),
                            line(format!(
                                "withdrawal {} of account {} ({} minor units to {}): risk rule {} decided {} — {}",
                                w.id.0,
                                w.user.0,
                                w.amount.0,
                                w.address,
                                r.rule,
                                r.decision.name(),
                                r.reason
                            )),
                            "anomaly",
                        ));
                    } else if w.status == WithdrawalStatus::Failed {
                        lines.push((
                            Some(w.asset),
                            Some(w.user),
                            line(format!(
                                "withdrawal {} of account {} failed: {}",
                                w.id.0,
                                w.user.0,
                                w.reason.as_deref().unwrap_or("")
                            )),
                            "anomaly",
                        ));
                    }
                }
                Event::Identity(IdentityEvent::AuthFailed {
                    user, reason: what, ..
                }) => {
                    lines.push((
                        None,
                        *user,
                        line(format!(
                            "authentication failure{}: {what}",
                            user.map(|u| format!(" for account {}", u.0)).unwrap_or_default()
                        )),
                        "auth",
                    ));
                }
                Event::Admin(AdminEvent::IncidentOpened(i)) if i.id == id => {
                    incident = Some(i.clone());
                    holders = Holders::of(&engine, i.asset);
                    lines.push((
                        i.asset,
                        None,
                        line(format!(
                            "DETECTED: incident {} ({}) opened by {}: {}",
                            i.id, i.kind, i.opened_by, i.summary
                        )),
                        "detection",
                    ));
                }
                Event::Admin(AdminEvent::IncidentResolved(i)) if i.id == id => {
                    lines.push((
                        i.asset,
                        None,
                        line(format!("RESOLVED: {}", i.resolution.as_deref().unwrap_or(""))),
                        "resolution",
                    ));
                }
                Event::Admin(AdminEvent::Halted { asset, by, reason }) => {
                    lines.push((
                        *asset,
                        None,
                        line(format!("HALT of withdrawals by {by}: {reason}")),
                        "halt",
                    ));
                }
                Event::Admin(AdminEvent::Resumed { asset, by }) => {
                    lines.push((
                        *asset,
                        None,
                        line(format!("RESUME of withdrawals ({by})")),
                        "resume",
                    ));
                }
                Event::AssetSwitchesChanged { asset, switches } => {
                    let what = if switches.withdrawals {
                        "withdrawals switched on"
                    } else {
                        "withdrawals switched off"
                    };
                    lines.push((Some(*asset), None, line(what.to_owned()), "switch"));
                }
                _ => {}
            }
        }
    }
    let Some(i) = incident else {
        bail!("no incident {id} in the journal {}", journal.display());
    };
    let code = |a: Option<AssetId>| {
        a.and_then(|a| engine.asset(a))
            .map_or_else(|| "every asset".to_owned(), |a| a.code.as_str().to_owned())
    };
    let dec = i.asset.and_then(|a| engine.asset(a)).map_or(0, |a| a.decimals);
    let fmt = |n: u128| kinko_core::Amount(n).to_decimal(dec);
    let relevant = |a: &Option<AssetId>| a.is_none() || *a == i.asset || i.asset.is_none();
    let from = i.opened_ns.saturating_sub(WINDOW_NS);
    // Accounts whose withdrawals of the asset were held or refused in the window.
    let withdrew: BTreeMap<UserId, ()> = lines
        .iter()
        .filter(|(a, u, l, k)| {
            *k == "anomaly" && u.is_some() && relevant(a) && l.ts >= from && l.ts <= i.opened_ns
        })
        .filter_map(|(_, u, _, _)| u.map(|u| (u, ())))
        .collect();
    let timeline: Vec<&(Option<AssetId>, Option<UserId>, Line, &'static str)> = lines
        .iter()
        .filter(|(a, u, l, k)| {
            let in_window = l.ts >= from;
            match *k {
                "auth" => in_window && l.ts <= i.opened_ns && u.is_some_and(|u| withdrew.contains_key(&u)),
                "anomaly" => in_window && l.ts <= i.opened_ns && relevant(a),
                _ => in_window && relevant(a),
            }
        })
        .collect();
    println!("incident {} — {} — {}", i.id, i.kind, code(i.asset));
    println!("summary    {}", i.summary);
    let status = match engine.admin().incident(i.id).map(|x| x.status) {
        Some(kinko_core::admin::IncidentStatus::Open) => "open",
        Some(kinko_core::admin::IncidentStatus::Resolved) => "resolved",
        None => "unknown",
    };
    println!("status     {status}");
    if let Some(p) = engine
        .admin()
        .incident(i.id)
        .and_then(|x| x.restitution)
        .and_then(|p| engine.admin().proposal(p))
    {
        if let kinko_core::admin::AdminChange::Restitution(plan) = &p.change {
            let (code, d) = engine
                .asset(plan.pay_asset)
                .map_or((String::new(), 0), |a| (a.code.as_str().to_owned(), a.decimals));
            println!(
                "restitution proposal {} executed {}: {} accounts paid {} {code} (insurance fund {}, treasury {})",
                p.id,
                crate::format_ts(p.updated_ns),
                plan.lines.len(),
                kinko_core::Amount(plan.total().map_or(0, |t| t.0)).to_decimal(d),
                kinko_core::Amount(plan.from_insurance.0).to_decimal(d),
                kinko_core::Amount(plan.from_treasury.0).to_decimal(d),
            );
        }
    }
    println!(
        "missing    {} (customers {}, company {})",
        fmt(i.missing.0),
        fmt(i.customer_share.0),
        fmt(i.company_share.0)
    );
    if !i.txids.is_empty() {
        println!("txids      {}", i.txids.join(", "));
    }
    println!();
    println!("timeline (UTC)");
    let first = timeline
        .iter()
        .find(|(_, _, _, k)| matches!(*k, "anomaly" | "auth"));
    if let Some((_, _, l, _)) = first {
        println!(
            "  first anomalous event  {}  seq {}",
            crate::format_ts(l.ts),
            l.seq
        );
    }
    println!("  detection              {}", crate::format_ts(i.opened_ns));
    for (_, _, l, _) in &timeline {
        println!("  {}  seq {:>8}  {}", crate::format_ts(l.ts), l.seq, l.what);
    }
    println!();
    println!("affected accounts (each share in proportion to the account's balance when detected)");
    let customers: Vec<(String, u128)> = holders
        .customers
        .iter()
        .map(|(u, b)| (format!("account {:>8}", u.0), *b))
        .collect();
    let company: Vec<(String, u128)> = holders
        .company
        .iter()
        .map(|(name, b)| (format!("{name:<16}"), *b))
        .collect();
    for (group, share, accounts) in [
        ("customers", i.customer_share.0, customers),
        ("company  ", i.company_share.0, company),
    ] {
        println!("  {group}  {}", fmt(share));
        let parts = split(share, &accounts.iter().map(|a| a.1).collect::<Vec<_>>());
        if share > 0 && parts.iter().all(|p| *p == 0) {
            println!("    no account held the asset when detected");
        }
        for ((name, held), part) in accounts.iter().zip(parts).filter(|(_, p)| *p > 0) {
            println!("    {name}  {}  (of {} held)", fmt(part), fmt(*held));
        }
    }
    println!();
    println!("accounts with held, delayed, refused or failed withdrawals in the 24 h before detection");
    if withdrew.is_empty() {
        println!("  none");
    }
    for u in withdrew.keys() {
        let amounts: u128 = engine
            .wallet()
            .withdrawals()
            .iter()
            .filter(|w| {
                w.user == *u
                    && Some(w.asset) == i.asset
                    && w.requested_ns >= from
                    && w.requested_ns <= i.opened_ns
            })
            .map(|w| w.amount.0)
            .sum();
        println!(
            "  account {:>8}  withdrawals requested in the window: {}",
            u.0,
            fmt(amounts)
        );
    }
    Ok(())
}

/// `kinko incident list`: every incident, open and resolved, one per line with plain values
/// (tab-separated: id, status, kind, asset, opened, opened by, missing, summary), from the
/// journal replayed into a fresh engine (read-only: it can run beside a live server).
pub fn list(journal: &Path) -> anyhow::Result<()> {
    if !journal.is_dir() {
        bail!("{} is not a journal directory", journal.display());
    }
    let mut engine = Engine::new();
    let mut events = Vec::new();
    for rec in kinko_journal::read_from(journal, 1)? {
        let rec = rec?;
        let cmd = kinko_engine::decode_command(rec.kind, &rec.payload)
            .map_err(|e| anyhow::anyhow!("record {} cannot be decoded: {e}", rec.seq))?;
        events.clear();
        let _ = engine.apply(rec.seq, rec.timestamp_ns, &cmd, &mut events);
    }
    println!("id\tstatus\tkind\tasset\topened\topened_by\tmissing\tsummary");
    let mut id = 1u64;
    while let Some(i) = engine.admin().incident(id) {
        let (code, dec) = i
            .asset
            .and_then(|a| engine.asset(a))
            .map_or(("all".to_owned(), 0), |a| {
                (a.code.as_str().to_owned(), a.decimals)
            });
        let status = match i.status {
            kinko_core::admin::IncidentStatus::Open => "open",
            kinko_core::admin::IncidentStatus::Resolved => "resolved",
        };
        println!(
            "{}\t{status}\t{}\t{code}\t{}\t{}\t{}\t{}",
            i.id,
            plain(&i.kind),
            crate::format_ts(i.opened_ns),
            plain(&i.opened_by),
            kinko_core::Amount(i.missing.0).to_decimal(dec),
            plain(&i.summary)
        );
        id += 1;
    }
    Ok(())
}

/// One line, no tabs: a value that a `cut -f` or `awk -F'\t'` reads whole.
fn plain(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Who held the incident's asset when it opened: customers by user, company accounts by name.
#[derive(Default)]
struct Holders {
    customers: Vec<(UserId, u128)>,
    company: Vec<(&'static str, u128)>,
}

impl Holders {
    fn of(engine: &Engine, asset: Option<AssetId>) -> Holders {
        let mut h = Holders::default();
        let Some(asset) = asset else {
            return h;
        };
        for a in engine.ledger().accounts().iter().filter(|a| a.asset == asset) {
            let b = u128::try_from(a.balance()).unwrap_or(0);
            if b == 0 {
                continue;
            }
            match a.owner {
                Owner::Customer(u) => h.customers.push((u, b)),
                Owner::System(s) if s.is_company_funds() => h.company.push((s.name(), b)),
                Owner::System(_) => {}
            }
        }
        h.customers.sort_unstable();
        h
    }
}

/// `kinko incident restitution ID`: the plan the engine would accept now, printed for the
/// admins (who is paid what, from where), with its hash and the body that proposes it.
pub fn restitution(
    journal: &Path,
    id: u64,
    pay_asset: Option<&str>,
    rate: Option<&str>,
) -> anyhow::Result<()> {
    let engine = crate::report::replay(journal, None)?;
    let Some(i) = engine.admin().incident(id) else {
        bail!("no incident {id} in the journal {}", journal.display());
    };
    let pay = match (pay_asset, rate) {
        (Some(code), Some(rate)) => {
            let asset = engine
                .asset_by_code(&code.to_ascii_uppercase())
                .ok_or_else(|| anyhow::anyhow!("no asset {code}"))?;
            Some((asset, parse_rate(rate)?))
        }
        _ => None,
    };
    let plan = engine
        .restitution_plan(id, pay)
        .map_err(|r| anyhow::anyhow!("incident {id} has no restitution plan now: {} ({r})", r.code()))?;
    let lost = i
        .asset
        .and_then(|a| engine.asset(a))
        .map_or((String::new(), 0), |a| (a.code.as_str().to_owned(), a.decimals));
    let paid = engine
        .asset(plan.pay_asset)
        .map_or((String::new(), 0), |a| (a.code.as_str().to_owned(), a.decimals));
    let fmt = |n: u128, d: u8| kinko_core::Amount(n).to_decimal(d);
    println!("restitution plan for incident {} — {} — {}", i.id, i.kind, lost.0);
    println!(
        "customer share  {} {} over {} accounts",
        fmt(i.customer_share.0, lost.1),
        lost.0,
        plan.lines.len()
    );
    match plan.rate {
        Some(r) => println!(
            "paid in         {} at {}/{} minor units per minor unit lost, rounded up per account",
            paid.0, r.num, r.den
        ),
        None => println!("paid in         {}", paid.0),
    }
    let total = plan.total().map_or(0, |t| t.0);
    println!("total           {} {}", fmt(total, paid.1), paid.0);
    println!(
        "insurance fund  {} {}",
        fmt(plan.from_insurance.0, paid.1),
        paid.0
    );
    println!("treasury        {} {}", fmt(plan.from_treasury.0, paid.1), paid.0);
    println!("plan hash       {}", hex::encode(plan.hash()));
    println!();
    for l in &plan.lines {
        println!(
            "  account {:>8}  owed {} {}  paid {} {}",
            l.user.0,
            fmt(l.owed.0, lost.1),
            lost.0,
            fmt(l.pay.0, paid.1),
            paid.0
        );
    }
    println!();
    println!("propose it (a treasury admin, with a passkey; a second one approves):");
    let body = serde_json::json!({
        "kind": "restitution",
        "plan": plan,
        "reason": format!("restitution of incident {id}"),
    });
    println!("{}", serde_json::to_string(&body)?);
    Ok(())
}

/// `NUM/DEN` (or `NUM`): positive integers, never a decimal.
fn parse_rate(s: &str) -> anyhow::Result<kinko_core::admin::Rate> {
    let (n, d) = s.split_once('/').unwrap_or((s, "1"));
    let num: u128 = n
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("rate {s:?}: NUM/DEN of integers"))?;
    let den: u128 = d
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("rate {s:?}: NUM/DEN of integers"))?;
    if num == 0 || den == 0 {
        bail!("rate {s:?}: both parts must be above zero");
    }
    Ok(kinko_core::admin::Rate { num, den })
}

#[cfg(test)]
mod tests {
    use kinko_core::admin::split;

    #[test]
    fn a_split_adds_up_exactly_and_follows_the_weights() {
        assert_eq!(split(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(split(200, &[300, 100]), vec![150, 50]);
        assert_eq!(split(7, &[0, 5]), vec![0, 7]);
        assert_eq!(split(7, &[0, 0]), vec![0, 0]);
        assert_eq!(split(0, &[3, 4]), vec![0, 0]);
        let big = split(u128::MAX / 2, &[u128::MAX / 4, u128::MAX / 4]);
        assert_eq!(big.iter().sum::<u128>(), u128::MAX / 2);
    }
}
