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
//! Affected accounts: those whose withdrawals of the asset were held, refused, or failed in that
//! window, with their amounts; and the incident's missing amount with its customer / company
//! split.

use anyhow::bail;
use kinko_core::admin::AdminEvent;
use kinko_core::engine::{Engine, Event};
use kinko_core::identity::IdentityEvent;
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
    println!("affected accounts");
    if withdrew.is_empty() {
        println!("  none identified from held or refused withdrawals; the loss is on the platform's custody");
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
