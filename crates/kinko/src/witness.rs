//! The signer as a witness (docs/design/custody.md, "Host compromise"): a thread asks the
//! signer every `witness.interval_s` to cosign the journal's head and the audit log's latest
//! checkpoint, and keeps the cosignatures in `<data_dir>/witness/{journal,audit}.jsonl`; the
//! verify commands check history against them ([`journal_report`], [`audit_report`]).

use crate::config::Config;
use ed25519_dalek::VerifyingKey;
use kinko_audit::witness::{
    append_cosignature, check_audit_dir, check_history, cosignature_file, read_cosignatures, Cosignature,
    HistoryCheck, LOG_AUDIT, LOG_JOURNAL,
};
use kinko_engine::EngineHandle;
use kinko_signer_proto::protocol::{Request, Response};
use kinko_signer_proto::SignerClient;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A cosignature of the same head as the last one kept is kept again only this long after it
/// (the signer logs on the same rule).
pub const KEEP_AGAIN_S: u64 = 3600;
/// The verify commands warn when the last cosignature that matches is older than this.
pub const STALE_S: u64 = 2 * 3600;
/// How long one request to the signer may take (a hung signer delays nothing for longer).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The running witness thread; dropping it stops it after one last round (the heads at
/// shutdown are witnessed too).
pub struct WitnessThread {
    stop: Arc<AtomicBool>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WitnessThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// What the thread needs.
pub struct Witness {
    pub socket: PathBuf,
    pub dir: PathBuf,
    pub key: Option<VerifyingKey>,
    pub interval: Duration,
    pub engine: EngineHandle,
    pub trail: Option<Arc<kinko_api::trail::Trail>>,
}

impl Witness {
    /// Starts the thread: one round at once, then every interval, until dropped.
    pub fn spawn(self) -> std::io::Result<WitnessThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let join = std::thread::Builder::new()
            .name("kinko-witness".into())
            .spawn(move || {
                let mut last: [Option<Cosignature>; 2] = [
                    read_cosignatures(&cosignature_file(&self.dir, LOG_JOURNAL))
                        .ok()
                        .and_then(|v| v.last().cloned()),
                    read_cosignatures(&cosignature_file(&self.dir, LOG_AUDIT))
                        .ok()
                        .and_then(|v| v.last().cloned()),
                ];
                loop {
                    self.round(&mut last);
                    // Stopping: the round above witnessed the final heads.
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    // Sleep in short steps so a stop is seen quickly.
                    let mut slept = Duration::ZERO;
                    while slept < self.interval && !flag.load(Ordering::Acquire) {
                        let step = Duration::from_millis(100).min(self.interval - slept);
                        std::thread::sleep(step);
                        slept += step;
                    }
                }
            })?;
        Ok(WitnessThread {
            stop,
            join: Some(join),
        })
    }

    fn round(&self, last: &mut [Option<Cosignature>; 2]) {
        let (seq, hash) = self.engine.stats().journal_head();
        if seq > 0 {
            let req = Request::Witness {
                log: LOG_JOURNAL.into(),
                size: seq,
                root: hash,
                proof: Vec::new(),
            };
            self.ask(&req, &mut last[0]);
        }
        let Some(trail) = &self.trail else { return };
        let from = match self.call(&Request::WitnessHead {
            log: LOG_AUDIT.into(),
        }) {
            Some(Response::WitnessHead { size, .. }) => size,
            Some(other) => {
                tracing::error!(answer = ?other, "witness: unexpected answer to witness_head");
                return;
            }
            None => return,
        };
        match trail.witness_point(from) {
            Ok(Some((size, root, proof))) => {
                let req = Request::Witness {
                    log: LOG_AUDIT.into(),
                    size,
                    root,
                    proof,
                };
                self.ask(&req, &mut last[1]);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "witness: no audit checkpoint to witness"),
        }
    }

    fn call(&self, req: &Request) -> Option<Response> {
        let answer = SignerClient::connect_with_timeout(&self.socket, CALL_TIMEOUT)
            .map_err(kinko_signer_proto::client::ClientError::from)
            .and_then(|mut c| c.call(req));
        match answer {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(socket = %self.socket.display(), error = %e, "witness: the signer is unreachable");
                None
            }
        }
    }

    fn ask(&self, req: &Request, last: &mut Option<Cosignature>) {
        let Some(answer) = self.call(req) else { return };
        let c = match answer {
            Response::Cosigned {
                log,
                size,
                root,
                time_s,
                key_id,
                signature,
            } => Cosignature {
                log,
                size,
                root,
                time_s,
                key_id,
                signature,
            },
            Response::Refused { code, reason, halted } => {
                tracing::error!(log = req.kind(), %code, %reason, halted,
                    "witness: the signer refused this host's history (it differs from what the signer cosigned before)");
                return;
            }
            other => {
                tracing::error!(answer = ?other, "witness: unexpected answer");
                return;
            }
        };
        if let Some(key) = &self.key {
            if let Err(e) = c.verify(key) {
                tracing::error!(error = %e, "witness: a cosignature does not verify with witness.public_key; not kept");
                return;
            }
        }
        let keep = last.as_ref().is_none_or(|l| {
            l.size != c.size || l.root != c.root || c.time_s >= l.time_s.saturating_add(KEEP_AGAIN_S)
        });
        if keep {
            let path = cosignature_file(&self.dir, &c.log);
            if let Err(e) = append_cosignature(&path, &c) {
                tracing::error!(error = %e, "witness: a cosignature could not be kept");
                return;
            }
            *last = Some(c);
        }
    }
}

/// Starts the witness of `config`, if a signer is configured.
pub fn start(
    config: &Config,
    engine: EngineHandle,
    trail: Option<Arc<kinko_api::trail::Trail>>,
) -> anyhow::Result<Option<WitnessThread>> {
    let Some(socket) = config.witness_socket() else {
        return Ok(None);
    };
    let w = Witness {
        socket,
        dir: config.witness_dir(),
        key: config.witness_key()?,
        interval: Duration::from_secs(config.witness.interval_s),
        engine,
        trail,
    };
    if w.key.is_none() {
        tracing::warn!("witness.public_key is empty: cosignatures are kept but not checked (set it to `kinko-signer witness-key`)");
    }
    Ok(Some(w.spawn()?))
}

/// The cosignatures of `log`: kinko's own copy in `<data_dir>/witness/`, and those of
/// `extra` (the signer's export) when given.
pub fn cosignatures(
    config: &Config,
    log: &str,
    extra: Option<&Path>,
) -> anyhow::Result<(Vec<Cosignature>, usize)> {
    use anyhow::Context as _;
    let local = cosignature_file(&config.witness_dir(), log);
    let mut all = read_cosignatures(&local).with_context(|| format!("witness file {}", local.display()))?;
    let mut from_file = 0;
    if let Some(p) = extra {
        if !p.is_file() {
            anyhow::bail!("--witness {}: no such file", p.display());
        }
        let more = read_cosignatures(p).with_context(|| format!("--witness {}", p.display()))?;
        from_file = more.iter().filter(|c| c.log == log).count();
        all.extend(more);
    }
    Ok((all, from_file))
}

fn ago(now_s: u64, then_s: u64) -> String {
    let d = now_s.saturating_sub(then_s);
    if d < 120 {
        format!("{d} s ago")
    } else if d < 2 * 3600 {
        format!("{} min ago", d / 60)
    } else if d < 2 * 86_400 {
        format!("{} h ago", d / 3600)
    } else {
        format!("{} days ago", d / 86_400)
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The witness lines of a verify command, and the verdict if history does not match: what
/// `unit` (`record` for the journal, `entry` for the audit log) names.
pub fn report(
    check: &HistoryCheck,
    unit: &str,
    head: u64,
    from_file: usize,
) -> (Vec<String>, Option<String>) {
    let units = if unit == "entry" { "entries" } else { "records" };
    let latest = check.latest_time_s;
    let mut lines = vec![format!(
        "witness    {} cosignatures{}{}",
        check.cosignatures,
        if from_file > 0 {
            format!(" ({from_file} from --witness)")
        } else {
            String::new()
        },
        latest.map_or(String::new(), |t| format!(
            ", the latest {} (time {t})",
            ago(now_s(), t)
        ))
    )];
    if let Some((i, p)) = check.bad_signatures.first() {
        return (
            lines,
            Some(format!(
                "a witness cosignature (number {} of those read; {} bad) does not verify with the witness key: {p}",
                i + 1,
                check.bad_signatures.len()
            )),
        );
    }
    if let Some(t) = latest {
        if now_s().saturating_sub(t) > STALE_S {
            lines.push(format!(
                "warning    last witnessed {}: is the witness running?",
                ago(now_s(), t)
            ));
        }
    }
    match &check.latest_match {
        Some((size, _)) if check.divergence.is_none() => lines.push(format!(
            "witnessed  {size} {units}; {} after them not witnessed yet",
            head.saturating_sub(*size)
        )),
        // A witness key is configured but nothing was ever cosigned (or the cosignatures were
        // deleted): history cannot be vouched for.
        None if check.divergence.is_none() && head > 0 => {
            return (
                lines,
                Some(
                    "UNWITNESSED: no cosignature of this log by the witness key; pass the signer's \
                     export (`kinko-signer witness export`) with --witness FILE"
                        .to_owned(),
                ),
            );
        }
        _ => {}
    }
    // Journal records are numbered from 1 (size = last sequence), audit entries from 0
    // (size = entries): name records by their own numbers.
    let base = u64::from(unit == "record");
    let verdict = check.divergence.as_ref().map(|d| {
        let first = d.matched_size + base;
        let last = (d.witnessed_size + base).saturating_sub(1);
        let matched = match d.matched_size {
            0 => format!("no witnessed {unit} matches"),
            n => format!("history matches the witness through {unit} {}", n + base - 1),
        };
        if d.truncated {
            format!(
                "history was cut: the witness saw {} {unit}s (cosigned at time {}) but the log holds {head}; \
                 {matched}; it no longer matches after that, from {unit} {first}",
                d.witnessed_size, d.witnessed_time_s
            )
        } else {
            format!(
                "history was rewritten after the witness saw it: {matched}; the first {unit} that differs \
                 from what the witness cosigned (at time {}) is {unit} {first}{}",
                d.witnessed_time_s,
                if last > first {
                    format!(" or a later one up to {unit} {last} (the next witnessed point)")
                } else {
                    String::new()
                }
            )
        }
    });
    (lines, verdict)
}

/// The verdict for a finding of [`report`]: `UNWITNESSED — ...` or `TAMPERED — ...`.
pub fn verdict_text(why: &str) -> String {
    match why.strip_prefix("UNWITNESSED: ") {
        Some(rest) => format!("UNWITNESSED — {rest}"),
        None => format!("TAMPERED — {why}"),
    }
}

/// The journal in `dir` against the witness: each witnessed sequence's record hash now.
pub fn journal_check(dir: &Path, cos: &[Cosignature], key: &VerifyingKey) -> anyhow::Result<HistoryCheck> {
    let wanted: std::collections::BTreeSet<u64> = cos
        .iter()
        .filter(|c| c.log == LOG_JOURNAL)
        .map(|c| c.size)
        .collect();
    let mut hashes = std::collections::BTreeMap::new();
    if let Some(&max) = wanted.last() {
        for rec in kinko_journal::read_from(dir, 1)? {
            let rec = rec?;
            if wanted.contains(&rec.seq) {
                hashes.insert(rec.seq, rec.hash);
            }
            if rec.seq >= max {
                break;
            }
        }
    }
    Ok(check_history(LOG_JOURNAL, cos, key, |seq| {
        hashes.get(&seq).copied()
    }))
}

/// The audit log in `dir` against the witness.
pub fn audit_check(dir: &Path, cos: &[Cosignature], key: &VerifyingKey) -> anyhow::Result<HistoryCheck> {
    Ok(check_audit_dir(dir, cos, key)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinko_audit::witness::Divergence;

    fn check(latest_time_s: u64, divergence: Option<Divergence>) -> HistoryCheck {
        HistoryCheck {
            cosignatures: 3,
            bad_signatures: Vec::new(),
            latest_match: divergence.is_none().then_some((40, latest_time_s)),
            latest_time_s: Some(latest_time_s),
            divergence,
        }
    }

    #[test]
    fn old_and_missing_witnesses_are_reported() {
        let (lines, bad) = report(&check(now_s() - 3 * 3600 - 5, None), "record", 45, 0);
        assert!(bad.is_none());
        assert!(
            lines.iter().any(|l| l.contains("last witnessed 3 h ago")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("40 records; 5 after them")),
            "{lines:?}"
        );
        let (lines, bad) = report(&check(now_s(), None), "entry", 40, 2);
        assert!(
            bad.is_none() && !lines.iter().any(|l| l.contains("warning")),
            "{lines:?}"
        );
        assert!(lines[0].contains("(2 from --witness)"), "{lines:?}");
        let none = HistoryCheck {
            cosignatures: 0,
            bad_signatures: Vec::new(),
            divergence: None,
            latest_match: None,
            latest_time_s: None,
        };
        let (_, bad) = report(&none, "record", 10, 0);
        assert!(verdict_text(&bad.unwrap()).starts_with("UNWITNESSED — "));
        // Audit entries are named from 0, journal records from 1.
        let d = Divergence {
            matched_size: 4,
            witnessed_size: 6,
            witnessed_time_s: 9,
            truncated: false,
        };
        let (_, bad) = report(&check(9, Some(d.clone())), "entry", 8, 0);
        let v = verdict_text(&bad.unwrap());
        assert!(
            v.contains("through entry 3;") && v.contains("is entry 4 or a later one up to entry 5"),
            "{v}"
        );
        let (_, bad) = report(&check(9, Some(d)), "record", 8, 0);
        let v = verdict_text(&bad.unwrap());
        assert!(
            v.contains("through record 4;") && v.contains("is record 5 or a later one up to record 6"),
            "{v}"
        );
        let cut = Divergence {
            matched_size: 4,
            witnessed_size: 6,
            witnessed_time_s: 9,
            truncated: true,
        };
        let (_, bad) = report(&check(9, Some(cut)), "record", 5, 0);
        let v = verdict_text(&bad.unwrap());
        assert!(
            v.contains("history was cut") && v.contains("from record 5"),
            "{v}"
        );
    }
}
