//! Witness cosignatures: the signer's countersignature of a log's head, in the manner of C2SP
//! tlog cosignatures (`cosignature/v1`), and the check of a log's history against them.
//!
//! A cosignature says "the witness saw log `origin` at `size` with head `root` at `time_s`".
//! The signed message ([`cosigned_message`]) is
//!
//! ```text
//! cosignature/v1
//! time <time_s>
//! <origin>
//! <size>
//! <root, 64 lower-case hex digits>
//! ```
//!
//! (each line ending in `\n`), signed with Ed25519. Two logs are witnessed:
//! - [`ORIGIN_JOURNAL`]: the engine's journal; `size` is a sequence number and `root` the
//!   chain hash of that record (the journal's head after it);
//! - [`ORIGIN_AUDIT`]: the audit log; `size` is a tree size and `root` the RFC 6962 root of
//!   the first `size` entries.
//!
//! Cosignatures are stored one JSON object a line ([`Cosignature`]) by kinko in
//! `<data_dir>/witness/<log>.jsonl` and by the signer in its own log (`kinko-signer witness
//! export` prints the same lines). [`check_history`] compares a log as it is now with every
//! witnessed point and names where it stops matching.

use crate::key::key_id;
use crate::AuditError;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The first line of every cosigned message.
pub const COSIGNATURE_HEADER: &str = "cosignature/v1";
/// The origin (log name) of the engine's journal.
pub const ORIGIN_JOURNAL: &str = "kinko/journal";
/// The origin of the audit log.
pub const ORIGIN_AUDIT: &str = "kinko/audit";
/// The log names on the wire and in file names.
pub const LOG_JOURNAL: &str = "journal";
pub const LOG_AUDIT: &str = "audit";
/// Longest cosignature line read back.
pub const COSIGNATURE_LINE_BYTES_MAX: usize = 1024;
/// Most cosignature lines read from one file (a year at one a minute, and then some).
pub const COSIGNATURES_MAX: usize = 2_000_000;

/// The origin of a log name (`journal` or `audit`), `None` for any other.
pub fn origin_of(log: &str) -> Option<&'static str> {
    match log {
        LOG_JOURNAL => Some(ORIGIN_JOURNAL),
        LOG_AUDIT => Some(ORIGIN_AUDIT),
        _ => None,
    }
}

/// What a witness signs (see the module documentation).
pub fn cosigned_message(origin: &str, size: u64, root: &[u8; 32], time_s: u64) -> String {
    format!(
        "{COSIGNATURE_HEADER}\ntime {time_s}\n{origin}\n{size}\n{}\n",
        hex::encode(root)
    )
}

/// One witness cosignature, as stored (one JSON line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cosignature {
    /// `journal` or `audit`.
    pub log: String,
    pub size: u64,
    /// 64 lower-case hex digits.
    pub root: String,
    /// The witness's clock, seconds since the Unix epoch.
    pub time_s: u64,
    /// [`key_id`] of the witness key.
    pub key_id: String,
    /// Ed25519 over [`cosigned_message`], 128 lower-case hex digits.
    pub signature: String,
}

/// Why a cosignature does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CosignatureProblem {
    #[error("unknown log {0:?}")]
    UnknownLog(String),
    #[error("signed by another key (key id {found}; the witness key's id is {expected})")]
    OtherKey { found: String, expected: String },
    #[error("root is not 64 lower-case hex digits")]
    BadRoot,
    #[error("bad signature (forged, or edited after signing)")]
    BadSignature,
}

impl Cosignature {
    /// Signs `(log, size, root, time_s)` with `key`. `None` for an unknown log name.
    pub fn sign(log: &str, size: u64, root: &[u8; 32], time_s: u64, key: &SigningKey) -> Option<Cosignature> {
        let origin = origin_of(log)?;
        let sig = key.sign(cosigned_message(origin, size, root, time_s).as_bytes());
        Some(Cosignature {
            log: log.into(),
            size,
            root: hex::encode(root),
            time_s,
            key_id: key_id(&key.verifying_key()),
            signature: hex::encode(sig.to_bytes()),
        })
    }

    /// Checks the key id and the signature against the witness key; gives the root.
    pub fn verify(&self, key: &VerifyingKey) -> Result<[u8; 32], CosignatureProblem> {
        let origin = origin_of(&self.log).ok_or_else(|| CosignatureProblem::UnknownLog(self.log.clone()))?;
        let expected = key_id(key);
        if self.key_id != expected {
            return Err(CosignatureProblem::OtherKey {
                found: self.key_id.clone(),
                expected,
            });
        }
        let mut root = [0u8; 32];
        hex::decode_to_slice(&self.root, &mut root).map_err(|_| CosignatureProblem::BadRoot)?;
        if hex::encode(root) != self.root {
            return Err(CosignatureProblem::BadRoot);
        }
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut sig).map_err(|_| CosignatureProblem::BadSignature)?;
        if hex::encode(sig) != self.signature {
            return Err(CosignatureProblem::BadSignature);
        }
        let msg = cosigned_message(origin, self.size, &root, self.time_s);
        key.verify_strict(msg.as_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| CosignatureProblem::BadSignature)?;
        Ok(root)
    }
}

/// The file kinko keeps a log's cosignatures in: `<dir>/<log>.jsonl`.
pub fn cosignature_file(dir: &Path, log: &str) -> PathBuf {
    dir.join(format!("{log}.jsonl"))
}

/// Appends one cosignature line to `path` (created mode 0600 with its folder) and syncs it.
pub fn append_cosignature(path: &Path, c: &Cosignature) -> Result<(), AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let fresh = !path.exists();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut line = serde_json::to_vec(c).map_err(|e| AuditError::InvalidEntry(e.to_string()))?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(&line).map_err(io)?;
    f.sync_data().map_err(io)?;
    if fresh {
        if let Some(dir) = path.parent() {
            crate::log::sync_dir(dir)?;
        }
    }
    Ok(())
}

/// Reads cosignature lines (a torn last line, without its newline, is ignored; any other
/// unreadable line is an error naming it). A missing file reads as none.
pub fn read_cosignatures(path: &Path) -> Result<Vec<Cosignature>, AuditError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(AuditError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let whole = match text.iter().rposition(|b| *b == b'\n') {
        Some(i) => &text[..=i],
        None => &text[..0],
    };
    let mut out = Vec::new();
    for (i, raw) in whole.split(|b| *b == b'\n').enumerate() {
        if raw.is_empty() {
            continue;
        }
        let bad = |reason: String| AuditError::Changed {
            path: path.to_owned(),
            reason: format!("line {}: {reason}", i + 1),
        };
        if raw.len() > COSIGNATURE_LINE_BYTES_MAX || out.len() >= COSIGNATURES_MAX {
            return Err(bad("too long, or too many lines".into()));
        }
        out.push(serde_json::from_slice(raw).map_err(|e| bad(format!("not a cosignature: {e}")))?);
    }
    Ok(out)
}

/// One witnessed point that the log as it is now does not match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The largest witnessed size the log still matches (0: none).
    pub matched_size: u64,
    /// The smallest witnessed size it does not.
    pub witnessed_size: u64,
    /// The witness's time of that cosignature.
    pub witnessed_time_s: u64,
    /// The log holds fewer records than the witness saw (its tail was cut).
    pub truncated: bool,
}

/// What [`check_history`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryCheck {
    /// Cosignatures given, of this log.
    pub cosignatures: u64,
    /// Cosignatures that are not the witness key's or do not verify (each is also a finding).
    pub bad_signatures: Vec<(usize, CosignatureProblem)>,
    /// The first witnessed point the log no longer matches.
    pub divergence: Option<Divergence>,
    /// The latest witnessed point that matches: (size, time_s).
    pub latest_match: Option<(u64, u64)>,
    /// The time of the latest cosignature that verified, matching or not.
    pub latest_time_s: Option<u64>,
}

impl HistoryCheck {
    /// Whether the log matches every witnessed point and every cosignature verified.
    pub fn ok(&self) -> bool {
        self.bad_signatures.is_empty() && self.divergence.is_none()
    }
}

/// Compares a log with witnessed points: `cosignatures` (any order, other logs' skipped) are
/// verified against `key`, then each witnessed `(size, root)` against `root_at(size)` — the
/// log's root at that size now, `None` when the log is shorter. Names the first witnessed
/// size that does not match and the last one below it that does: history was changed after
/// record `matched_size` (journal: the sequence; audit: entries from index `matched_size`).
pub fn check_history(
    log: &str,
    cosignatures: &[Cosignature],
    key: &VerifyingKey,
    mut root_at: impl FnMut(u64) -> Option<[u8; 32]>,
) -> HistoryCheck {
    let mut good: Vec<(u64, [u8; 32], u64)> = Vec::new();
    let mut bad = Vec::new();
    let mut count = 0u64;
    for (i, c) in cosignatures.iter().enumerate() {
        if c.log != log {
            continue;
        }
        count += 1;
        match c.verify(key) {
            Ok(root) => good.push((c.size, root, c.time_s)),
            Err(p) => bad.push((i, p)),
        }
    }
    good.sort_by_key(|(size, _, time)| (*size, *time));
    let latest_time_s = good.iter().map(|(_, _, t)| *t).max();
    let mut divergence = None;
    let mut latest_match: Option<(u64, u64)> = None;
    let mut matched_size = 0;
    for (size, root, time_s) in good {
        match root_at(size) {
            Some(now) if now == root => {
                matched_size = size;
                if latest_match.is_none_or(|(_, t)| time_s >= t) {
                    latest_match = Some((size, time_s));
                }
            }
            now => {
                divergence = Some(Divergence {
                    matched_size,
                    witnessed_size: size,
                    witnessed_time_s: time_s,
                    truncated: now.is_none(),
                });
                break;
            }
        }
    }
    HistoryCheck {
        cosignatures: count,
        bad_signatures: bad,
        divergence,
        latest_match,
        latest_time_s,
    }
}

/// [`check_history`] of the audit log in `dir` (its entries read and checked as
/// [`crate::verify_dir`] reads them) against the witness's cosignatures.
pub fn check_audit_dir(
    dir: &Path,
    cosignatures: &[Cosignature],
    key: &VerifyingKey,
) -> Result<HistoryCheck, AuditError> {
    let scan = crate::log::scan_entries(&dir.join(crate::ENTRIES_FILE))?;
    Ok(check_history(LOG_AUDIT, cosignatures, key, |size| {
        scan.tree.root_at(size)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_check() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let vk = key.verifying_key();
        let roots: Vec<[u8; 32]> = (0..10u8).map(|i| [i; 32]).collect();
        let cos: Vec<Cosignature> = [2u64, 5, 8]
            .iter()
            .map(|s| Cosignature::sign(LOG_JOURNAL, *s, &roots[*s as usize], 100 + s, &key).unwrap())
            .collect();
        assert_eq!(cos[0].verify(&vk).unwrap(), roots[2]);
        let msg = cosigned_message(ORIGIN_JOURNAL, 2, &roots[2], 102);
        assert!(msg.starts_with("cosignature/v1\ntime 102\nkinko/journal\n2\n0202"));
        let ok = check_history(LOG_JOURNAL, &cos, &vk, |s| roots.get(s as usize).copied());
        assert!(ok.ok());
        assert_eq!(ok.latest_match, Some((8, 108)));
        // History changed at 4: the witness at 5 no longer matches; 2 still does.
        let mut changed = roots.clone();
        for r in changed.iter_mut().skip(4) {
            r[0] ^= 0xff;
        }
        let c = check_history(LOG_JOURNAL, &cos, &vk, |s| changed.get(s as usize).copied());
        let d = c.divergence.unwrap();
        assert_eq!((d.matched_size, d.witnessed_size, d.truncated), (2, 5, false));
        // Truncated below the last witness.
        let c = check_history(LOG_JOURNAL, &cos, &vk, |s| {
            roots.get(s as usize).filter(|_| s < 7).copied()
        });
        assert!(c.divergence.unwrap().truncated);
        // Edited or foreign cosignatures are findings.
        let mut forged = cos.clone();
        forged[1].root = hex::encode([9u8; 32]);
        let other =
            Cosignature::sign(LOG_JOURNAL, 1, &roots[1], 1, &SigningKey::from_bytes(&[8; 32])).unwrap();
        forged.push(other);
        let c = check_history(LOG_JOURNAL, &forged, &vk, |s| roots.get(s as usize).copied());
        assert_eq!(c.bad_signatures.len(), 2);
        assert!(matches!(
            c.bad_signatures[1].1,
            CosignatureProblem::OtherKey { .. }
        ));
        assert!(Cosignature::sign("other", 1, &roots[1], 1, &key).is_none());
    }

    #[test]
    fn files_append_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = cosignature_file(&dir.path().join("witness"), LOG_AUDIT);
        assert!(read_cosignatures(&path).unwrap().is_empty());
        let key = SigningKey::from_bytes(&[7; 32]);
        let a = Cosignature::sign(LOG_AUDIT, 3, &[1; 32], 9, &key).unwrap();
        append_cosignature(&path, &a).unwrap();
        append_cosignature(&path, &a).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"log\":\"au").unwrap();
        assert_eq!(read_cosignatures(&path).unwrap(), vec![a.clone(), a]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
