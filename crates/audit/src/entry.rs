//! Entries and their one canonical byte form.
//!
//! An entry's leaf data is its record `{"index":…,"time_ns":…,"kind":…,"actor":…,"subject":…,
//! "detail":{…}}` written compactly, in that field order, with the keys of every object in
//! `detail` sorted (by bytes) and only integers as numbers. This module writes those bytes
//! itself rather than trusting a serializer's defaults (`serde_json`'s map order depends on a
//! feature any crate in the build may switch on), so the same entry gives the same leaf in
//! every build.
//!
//! The stored line is the record with `"leaf_hash":"<hex>"` added as its last field. Reading
//! a line parses it, writes the record again and requires the line to be exactly that: a line
//! that parses but is not in this form was not written by this code.

use crate::merkle::leaf_hash;
use crate::{AuditError, EntryProblem};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest `kind`, `actor` or `subject`, in bytes.
pub const FIELD_BYTES_MAX: usize = 256;
/// Longest `detail`, in bytes of its canonical JSON.
pub const DETAIL_BYTES_MAX: usize = 16 * 1024;
/// Deepest nesting of arrays and objects in `detail` (the object itself is depth 1).
pub const DETAIL_DEPTH_MAX: usize = 16;
/// Longest stored line, newline excluded. Every entry within the limits fits: the three
/// short fields escape to at most 6 bytes per byte, plus `detail` and the fixed parts.
pub const LINE_BYTES_MAX: usize = 32 * 1024;

/// One admin action or security event.
///
/// `time_ns` is the caller's clock (nanoseconds since the Unix epoch); the log takes it as
/// given. `detail` must be a JSON object whose numbers are integers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub time_ns: u64,
    pub kind: String,
    pub actor: String,
    pub subject: String,
    pub detail: Value,
}

/// A line as stored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredLine {
    index: u64,
    time_ns: u64,
    kind: String,
    actor: String,
    subject: String,
    detail: Value,
    leaf_hash: String,
}

/// What a line holds once parsed and checked against its own form.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) index: u64,
    pub(crate) entry: Entry,
    pub(crate) leaf: [u8; 32],
}

/// The canonical record of `entry` at `index` (the leaf data). Checks every limit.
pub(crate) fn record_bytes(index: u64, entry: &Entry) -> Result<Vec<u8>, AuditError> {
    for (field, value) in [
        ("kind", &entry.kind),
        ("actor", &entry.actor),
        ("subject", &entry.subject),
    ] {
        if value.len() > FIELD_BYTES_MAX {
            return Err(AuditError::TooLarge {
                field,
                bytes: value.len(),
                max: FIELD_BYTES_MAX,
            });
        }
    }
    if !entry.detail.is_object() {
        return Err(AuditError::InvalidEntry("detail must be a JSON object".into()));
    }
    let mut detail = Vec::new();
    write_value(&mut detail, &entry.detail, 1)?;
    let mut out = Vec::with_capacity(detail.len() + 128);
    out.extend_from_slice(b"{\"index\":");
    out.extend_from_slice(index.to_string().as_bytes());
    out.extend_from_slice(b",\"time_ns\":");
    out.extend_from_slice(entry.time_ns.to_string().as_bytes());
    out.extend_from_slice(b",\"kind\":");
    write_str(&mut out, &entry.kind);
    out.extend_from_slice(b",\"actor\":");
    write_str(&mut out, &entry.actor);
    out.extend_from_slice(b",\"subject\":");
    write_str(&mut out, &entry.subject);
    out.extend_from_slice(b",\"detail\":");
    out.extend_from_slice(&detail);
    out.push(b'}');
    Ok(out)
}

/// The stored line (newline included) for a record and its leaf hash.
pub(crate) fn line_bytes(record: &[u8], leaf: &[u8; 32]) -> Vec<u8> {
    let body = record.strip_suffix(b"}").expect("a record is a JSON object");
    let mut out = Vec::with_capacity(record.len() + 80);
    out.extend_from_slice(body);
    out.extend_from_slice(b",\"leaf_hash\":\"");
    out.extend_from_slice(hex::encode(leaf).as_bytes());
    out.extend_from_slice(b"\"}\n");
    out
}

/// Parses one stored line (without its newline) and checks it against its own form and its
/// stored leaf hash.
pub(crate) fn decode_line(line: &[u8]) -> Result<Decoded, EntryProblem> {
    if line.len() > LINE_BYTES_MAX {
        return Err(EntryProblem::TooLong { max: LINE_BYTES_MAX });
    }
    let stored: StoredLine =
        serde_json::from_slice(line).map_err(|e| EntryProblem::Unparsable(e.to_string()))?;
    let entry = Entry {
        time_ns: stored.time_ns,
        kind: stored.kind,
        actor: stored.actor,
        subject: stored.subject,
        detail: stored.detail,
    };
    let record = record_bytes(stored.index, &entry).map_err(|e| EntryProblem::Invalid(e.to_string()))?;
    let stored_leaf = parse_hash(&stored.leaf_hash)
        .ok_or_else(|| EntryProblem::Unparsable("leaf_hash is not 64 hex digits".into()))?;
    let leaf = leaf_hash(&record);
    let expected = line_bytes(&record, &stored_leaf);
    if expected.strip_suffix(b"\n") != Some(line) {
        return Err(EntryProblem::NotCanonical);
    }
    if leaf != stored_leaf {
        return Err(EntryProblem::Edited { index: stored.index });
    }
    Ok(Decoded {
        index: stored.index,
        entry,
        leaf,
    })
}

/// Only the index of a line, for looking past a gap (what else the line holds is ignored).
pub(crate) fn line_index(line: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Index {
        index: u64,
    }
    serde_json::from_slice::<Index>(line).ok().map(|i| i.index)
}

pub(crate) fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    // Lower case only: one value, one spelling.
    (hex::encode(out) == s).then_some(out)
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing a JSON string into a Vec cannot fail");
}

/// Writes `v` canonically; fails on floats, on nesting deeper than [`DETAIL_DEPTH_MAX`], and
/// as soon as the output passes [`DETAIL_BYTES_MAX`] (so a huge value costs no more than the
/// limit to refuse).
fn write_value(out: &mut Vec<u8>, v: &Value, depth: usize) -> Result<(), AuditError> {
    if depth > DETAIL_DEPTH_MAX {
        return Err(AuditError::InvalidEntry(format!(
            "detail is nested deeper than {DETAIL_DEPTH_MAX} levels"
        )));
    }
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else {
                return Err(AuditError::InvalidEntry(
                    "numbers in detail must be integers (no floating point)".into(),
                ));
            }
        }
        Value::String(s) => {
            if s.len() > DETAIL_BYTES_MAX {
                return Err(detail_too_large(s.len()));
            }
            write_str(out, s);
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, depth + 1)?;
                if out.len() > DETAIL_BYTES_MAX {
                    return Err(detail_too_large(out.len()));
                }
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if key.len() > DETAIL_BYTES_MAX {
                    return Err(detail_too_large(key.len()));
                }
                write_str(out, key);
                out.push(b':');
                write_value(out, &map[key], depth + 1)?;
                if out.len() > DETAIL_BYTES_MAX {
                    return Err(detail_too_large(out.len()));
                }
            }
            out.push(b'}');
        }
    }
    if out.len() > DETAIL_BYTES_MAX {
        return Err(detail_too_large(out.len()));
    }
    Ok(())
}

fn detail_too_large(bytes: usize) -> AuditError {
    AuditError::TooLarge {
        field: "detail",
        bytes,
        max: DETAIL_BYTES_MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(detail: Value) -> Entry {
        Entry {
            time_ns: 7,
            kind: "admin.freeze".into(),
            actor: "op:alice".into(),
            subject: "user:42".into(),
            detail,
        }
    }

    #[test]
    fn record_is_compact_with_sorted_keys() {
        let e = entry(json!({"z": 1, "a": [true, null, -3, "x\"\n"], "m": {"b": 2, "a": 1}}));
        let r = record_bytes(5, &e).unwrap();
        assert_eq!(
            std::str::from_utf8(&r).unwrap(),
            r#"{"index":5,"time_ns":7,"kind":"admin.freeze","actor":"op:alice","subject":"user:42","detail":{"a":[true,null,-3,"x\"\n"],"m":{"a":1,"b":2},"z":1}}"#
        );
    }

    #[test]
    fn line_round_trips_and_is_checked() {
        let e = entry(json!({"amount": "1.5", "n": 18446744073709551615u64}));
        let r = record_bytes(3, &e).unwrap();
        let leaf = leaf_hash(&r);
        let line = line_bytes(&r, &leaf);
        let body = line.strip_suffix(b"\n").unwrap();
        let d = decode_line(body).unwrap();
        assert_eq!((d.index, d.leaf), (3, leaf));
        assert_eq!(d.entry, e);

        let spaced = String::from_utf8(body.to_vec()).unwrap().replacen(",", ", ", 1);
        assert_eq!(
            decode_line(spaced.as_bytes()).unwrap_err(),
            EntryProblem::NotCanonical
        );
        let edited = String::from_utf8(body.to_vec())
            .unwrap()
            .replace("op:alice", "op:mallo");
        assert_eq!(
            decode_line(edited.as_bytes()).unwrap_err(),
            EntryProblem::Edited { index: 3 }
        );
        let upper = String::from_utf8(body.to_vec())
            .unwrap()
            .replace(&hex::encode(leaf), &hex::encode(leaf).to_uppercase());
        assert!(matches!(
            decode_line(upper.as_bytes()).unwrap_err(),
            EntryProblem::Unparsable(_)
        ));
        assert!(matches!(
            decode_line(b"{\"index\":1}").unwrap_err(),
            EntryProblem::Unparsable(_)
        ));
        assert!(matches!(
            decode_line(&[b' '; LINE_BYTES_MAX + 1]).unwrap_err(),
            EntryProblem::TooLong { .. }
        ));
    }

    #[test]
    fn limits_are_enforced() {
        let mut e = entry(json!({}));
        e.kind = "k".repeat(FIELD_BYTES_MAX);
        assert!(record_bytes(0, &e).is_ok());
        e.kind.push('k');
        assert!(matches!(
            record_bytes(0, &e),
            Err(AuditError::TooLarge { field: "kind", .. })
        ));

        let big = entry(json!({ "s": "x".repeat(DETAIL_BYTES_MAX) }));
        assert!(matches!(
            record_bytes(0, &big),
            Err(AuditError::TooLarge { field: "detail", .. })
        ));
        let many = entry(Value::Object(
            (0..5000).map(|i| (format!("k{i}"), json!(i))).collect(),
        ));
        assert!(matches!(
            record_bytes(0, &many),
            Err(AuditError::TooLarge { field: "detail", .. })
        ));
        for bad in [json!([1]), json!("s"), json!({"f": 1.5}), json!(null)] {
            assert!(
                matches!(
                    record_bytes(0, &entry(bad.clone())),
                    Err(AuditError::InvalidEntry(_))
                ),
                "{bad}"
            );
        }
        let mut deep = json!({});
        for _ in 0..DETAIL_DEPTH_MAX - 1 {
            deep = json!({ "d": deep });
        }
        assert!(record_bytes(0, &entry(deep.clone())).is_ok());
        assert!(matches!(
            record_bytes(0, &entry(json!({ "d": deep }))),
            Err(AuditError::InvalidEntry(_))
        ));
    }

    #[test]
    fn longest_entry_fits_a_line() {
        // Control characters escape to six bytes each: the worst case for every field.
        let worst = "\u{1}".repeat(FIELD_BYTES_MAX);
        // `{"s":"…"}` is 8 bytes around the escaped string.
        let s = "\u{1}".repeat((DETAIL_BYTES_MAX - 8) / 6);
        let e = Entry {
            time_ns: u64::MAX,
            kind: worst.clone(),
            actor: worst.clone(),
            subject: worst,
            detail: json!({ "s": s }),
        };
        let r = record_bytes(u64::MAX, &e).unwrap();
        let line = line_bytes(&r, &leaf_hash(&r));
        assert!(line.len() - 1 <= LINE_BYTES_MAX, "{}", line.len());
        assert_eq!(decode_line(line.strip_suffix(b"\n").unwrap()).unwrap().entry, e);
        let mut over = e.clone();
        over.detail = json!({ "s": format!("{s}\u{1}") });
        assert!(record_bytes(0, &over).is_err());
    }
}
