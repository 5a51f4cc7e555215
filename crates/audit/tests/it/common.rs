//! Shared helpers: keys, entries, a standard log, and line surgery on its files.

use ed25519_dalek::SigningKey;
use kinko_audit::{AuditLog, Entry, CHECKPOINTS_FILE, ENTRIES_FILE};
use serde_json::json;
use std::path::{Path, PathBuf};

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn entry(i: u64) -> Entry {
    Entry {
        time_ns: 1_700_000_000_000_000_000 + i,
        kind: ["admin.freeze", "auth.failed", "admin.revoke_key"][(i % 3) as usize].into(),
        actor: format!("operator:{}", i % 2),
        subject: format!("user:{i}"),
        detail: json!({"ip": "192.0.2.7", "n": i, "reason": "ticket \"42\"\n", "nested": {"b": [1, -2], "a": null}}),
    }
}

pub fn entries_path(dir: &Path) -> PathBuf {
    dir.join(ENTRIES_FILE)
}

pub fn checkpoints_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINTS_FILE)
}

/// Ten entries; checkpoints at sizes 4 and 8 (so entries 8 and 9 are unsigned).
pub fn standard_log(dir: &Path) -> AuditLog {
    let mut log = AuditLog::open(dir, key(1)).unwrap();
    for i in 0..10 {
        assert_eq!(log.append(&entry(i)).unwrap(), i);
        if i == 3 || i == 7 {
            log.checkpoint(100 + i).unwrap();
        }
    }
    log
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    if !lines.is_empty() {
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Splits a stored line into its record (the leaf data) and stored leaf hash, as the format
/// is documented: the line is the record with `,"leaf_hash":"<64 hex>"` before its last `}`.
pub fn split_line(line: &str) -> (String, String) {
    let (body, tail) = line.split_at(line.len() - 80);
    let hash = tail
        .strip_prefix(",\"leaf_hash\":\"")
        .and_then(|t| t.strip_suffix("\"}"))
        .expect("a stored line ends with its leaf hash");
    (format!("{body}}}"), hash.to_owned())
}

/// The line for a record, with its leaf hash recomputed: what a careful forger writes.
pub fn line_for_record(record: &str) -> String {
    let hash = hex::encode(kinko_audit::leaf_hash(record.as_bytes()));
    format!("{},\"leaf_hash\":\"{hash}\"}}", &record[..record.len() - 1])
}

/// Edits the record of a line and recomputes its leaf hash.
pub fn forge(line: &str, edit: impl Fn(String) -> String) -> String {
    line_for_record(&edit(split_line(line).0))
}
