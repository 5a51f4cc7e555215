//! The tamper-evident audit trail (crate `kinko-audit`): every admin action is appended (and
//! fsynced) before it is carried out — an action whose entry cannot be written is refused with
//! `AUDIT_UNAVAILABLE` — and security events are appended from committed events. Signed
//! checkpoints are written periodically and at shutdown; `kinko audit verify` checks them.

use crate::error::{ApiError, ApiResult};
use crate::AppState;
use kinko_audit::{AuditLog, Entry};
use kinko_core::Event;
use parking_lot::Mutex;
use std::sync::Arc;

pub struct Trail {
    log: Mutex<AuditLog>,
}

impl Trail {
    pub fn new(log: AuditLog) -> Arc<Trail> {
        Arc::new(Trail { log: Mutex::new(log) })
    }

    pub fn append(&self, entry: &Entry) -> Result<u64, String> {
        self.log.lock().append(entry).map_err(|e| e.to_string())
    }

    pub fn checkpoint(&self) -> Result<(), String> {
        let mut log = self.log.lock();
        if log.latest_checkpoint().is_some_and(|c| c.tree_size == log.size()) {
            return Ok(());
        }
        log.checkpoint(crate::auth::now_ns())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub fn size(&self) -> u64 {
        self.log.lock().size()
    }

    /// Reads entries back, newest first, starting below `before` (or at the newest), at most
    /// `max` of them, until `f` answers false; `f` gets each entry's index. Returns the lowest
    /// index read (see [`crate::security_log`]). The log is locked per entry, so appends go on
    /// meanwhile (the entries read are those present when the scan began).
    pub fn scan_back(
        &self,
        before: Option<u64>,
        max: u64,
        mut f: impl FnMut(u64, &Entry) -> bool,
    ) -> Result<Option<u64>, String> {
        let size = self.log.lock().size();
        let end = before.map_or(size, |b| b.min(size));
        let mut lowest = None;
        for i in (end.saturating_sub(max)..end).rev() {
            let e = self.log.lock().entry(i).map_err(|e| e.to_string())?;
            lowest = Some(i);
            if !f(i, &e) {
                break;
            }
        }
        Ok(lowest)
    }

    /// What the witness cosigns: the latest checkpoint (one is written first if entries came
    /// after it) as (size, root), with the consistency proof from `from_size` (the size the
    /// witness cosigned last). `None` while the log is empty.
    #[allow(clippy::type_complexity)]
    pub fn witness_point(&self, from_size: u64) -> Result<Option<(u64, [u8; 32], Vec<[u8; 32]>)>, String> {
        self.checkpoint()?;
        let log = self.log.lock();
        let Some(cp) = log.latest_checkpoint() else {
            return Ok(None);
        };
        let size = cp.tree_size;
        let root = cp.root().ok_or("the latest checkpoint's root is unreadable")?;
        // A witness ahead of this log (history cut): no proof exists; the witness refuses.
        let proof = if from_size <= size {
            log.prove_consistency(from_size, size)
                .map_err(|e| e.to_string())?
        } else {
            Vec::new()
        };
        Ok(Some((size, root, proof)))
    }
}

fn entry(kind: &str, actor: &str, subject: &str, detail: serde_json::Value) -> Entry {
    let detail = match detail {
        serde_json::Value::Object(_) => detail,
        other => serde_json::json!({ "value": other }),
    };
    Entry {
        time_ns: crate::auth::now_ns(),
        kind: kind.chars().take(200).collect(),
        actor: actor.chars().take(200).collect(),
        subject: subject.chars().take(200).collect(),
        detail,
    }
}

/// Appends an admin action's entry before the action runs; refuses it if the entry cannot be
/// written. Without a trail (tests of the gateway alone) it does nothing.
pub async fn record(
    g: &AppState,
    kind: &str,
    actor: &str,
    subject: &str,
    detail: serde_json::Value,
) -> ApiResult<()> {
    let Some(trail) = g.trail.get().cloned() else {
        return Ok(());
    };
    let e = entry(kind, actor, subject, detail);
    let r = tokio::task::spawn_blocking(move || trail.append(&e))
        .await
        .map_err(|_| ApiError::unavailable("AUDIT_UNAVAILABLE", "the audit log did not answer"))?;
    r.map(|_| ()).map_err(|e| {
        tracing::error!(error = %e, "audit log append failed: the action is refused");
        ApiError::unavailable(
            "AUDIT_UNAVAILABLE",
            "the audit log cannot be written: the action is refused",
        )
    })
}

/// Security events worth an audit entry (everything about identities, roles, halts and
/// incidents, withdrawal addresses, held or refused withdrawals, asset switches).
fn security_entry(e: &Event) -> Option<Entry> {
    use kinko_core::wallet::{WalletEvent, WithdrawalStatus};
    match e {
        Event::Identity(i) => {
            let v = serde_json::to_value(i).ok()?;
            let (kind, detail) = split_variant(v);
            let user = detail.get("user").map(|u| u.to_string()).unwrap_or_default();
            Some(entry(
                &format!("identity.{kind}"),
                "engine",
                &format!("user:{user}"),
                detail,
            ))
        }
        Event::Admin(a) => {
            let v = serde_json::to_value(a).ok()?;
            let (kind, detail) = split_variant(v);
            Some(entry(&format!("admin.{kind}"), "engine", "platform", detail))
        }
        Event::AssetSwitchesChanged { asset, switches } => Some(entry(
            "asset.switches",
            "engine",
            &format!("asset:{}", asset.0),
            serde_json::json!({"deposits": switches.deposits, "withdrawals": switches.withdrawals, "trading": switches.trading}),
        )),
        Event::Wallet(WalletEvent::WithdrawalAddressAdded(a)) => Some(entry(
            "wallet.address_added",
            "engine",
            &format!("user:{}", a.user.0),
            serde_json::json!({"address_id": a.id.0, "asset": a.asset.0, "address": a.address, "usable_at_ns": a.usable_at_ns}),
        )),
        Event::Wallet(WalletEvent::Withdrawal(w))
            if w.risk.is_some()
                && matches!(
                    w.status,
                    WithdrawalStatus::Review
                        | WithdrawalStatus::Failed
                        | WithdrawalStatus::Waiting
                        | WithdrawalStatus::Approved
                ) =>
        {
            let r = w.risk.as_ref()?;
            Some(entry(
                &format!("wallet.withdrawal_{}", w.status.name()),
                "engine",
                &format!("user:{}", w.user.0),
                serde_json::json!({"withdrawal": w.id.0, "asset": w.asset.0, "amount": w.amount.0.to_string(),
                    "address": w.address, "rule": r.rule, "decision": r.decision.name(), "reason": r.reason,
                    "approvals": w.approvals.iter().map(|u| u.0).collect::<Vec<_>>()}),
            ))
        }
        // Every withdrawal's course, for the customer's security log: requested, sent,
        // completed, cancelled, failed (with its reason), reverted.
        Event::Wallet(WalletEvent::Withdrawal(w))
            if matches!(
                w.status,
                WithdrawalStatus::Requested
                    | WithdrawalStatus::Broadcast
                    | WithdrawalStatus::Completed
                    | WithdrawalStatus::Cancelled
                    | WithdrawalStatus::Failed
                    | WithdrawalStatus::Reverted
            ) =>
        {
            Some(entry(
                &format!("wallet.withdrawal_{}", w.status.name()),
                "engine",
                &format!("user:{}", w.user.0),
                serde_json::json!({"withdrawal": w.id.0, "asset": w.asset.0, "amount": w.amount.0.to_string(),
                    "address": w.address, "txid": w.txid, "reason": w.reason}),
            ))
        }
        _ => None,
    }
}

/// `{"Variant": {...}}` or `"Variant"` → (snake_case variant, object detail).
fn split_variant(v: serde_json::Value) -> (String, serde_json::Value) {
    let snake = |s: &str| {
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    };
    match v {
        serde_json::Value::String(s) => (snake(&s), serde_json::json!({})),
        serde_json::Value::Object(m) if m.len() == 1 => {
            let (k, inner) = m.into_iter().next().expect("one member");
            let detail = match inner {
                serde_json::Value::Object(_) => inner,
                other => serde_json::json!({ "value": other }),
            };
            (snake(&k), detail)
        }
        other => ("event".into(), serde_json::json!({ "value": other })),
    }
}

/// Appends security events from committed batches, and a checkpoint every `every`, until
/// `stop`. A lagging subscriber loses batches: that is recorded as a gap entry.
pub async fn run(g: AppState, every: std::time::Duration, stop: tokio::sync::watch::Receiver<bool>) {
    let Some(trail) = g.trail.get().cloned() else {
        return;
    };
    let mut rx = g.read.subscribe();
    let mut stop = stop;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            b = rx.recv() => match b {
                Ok(batch) => append_security_events(&trail, &batch).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let e = entry("audit.gap", "gateway", "platform", serde_json::json!({"batches_missed": n}));
                    let t = trail.clone();
                    let _ = tokio::task::spawn_blocking(move || t.append(&e)).await;
                    tracing::error!(missed = n, "audit feed lagged: batches missed (recorded)");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick() => {
                let t = trail.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || t.checkpoint()).await {
                    tracing::error!(error = %e, "audit checkpoint failed");
                }
            }
            _ = stop.changed() => break,
        }
    }
    // Stopping: record the security events of every batch committed so far (the read side
    // catches up first, within a bound), so the final checkpoint covers them.
    let committed = g
        .engine
        .stats()
        .last_seq
        .load(std::sync::atomic::Ordering::Acquire);
    if !g
        .read
        .wait_for(committed, std::time::Duration::from_secs(2))
        .await
    {
        tracing::warn!("audit log: the read side did not catch up before shutdown");
    }
    while let Ok(batch) = rx.try_recv() {
        append_security_events(&trail, &batch).await;
    }
    let t = trail.clone();
    let _ = tokio::task::spawn_blocking(move || t.checkpoint()).await;
}

/// Appends the security events of one committed batch.
async fn append_security_events(trail: &Arc<Trail>, batch: &kinko_engine::replica::BatchEvents) {
    let entries: Vec<Entry> = batch.events.iter().filter_map(security_entry).collect();
    if entries.is_empty() {
        return;
    }
    let t = trail.clone();
    let r = tokio::task::spawn_blocking(move || {
        for e in &entries {
            t.append(e)?;
        }
        Ok::<(), String>(())
    })
    .await;
    if !matches!(r, Ok(Ok(()))) {
        tracing::error!("audit log append of security events failed");
    }
}
