//! Tampering, one case a row: each damages the standard log (ten entries, checkpoints at
//! sizes 4 and 8) and names the error that `verify_dir` and `AuditLog::open` must both give —
//! file, line and what failed.

use crate::common::{
    checkpoints_path, entries_path, entry, forge, key, line_for_record, read_lines, split_line, standard_log,
    write_lines,
};
use kinko_audit::{
    verify_dir, AuditError, AuditLog, CheckpointProblem, EntryProblem, CHECKPOINTS_FILE, ENTRIES_FILE,
};
use std::path::Path;

#[derive(Debug, PartialEq)]
enum Expect {
    Entries(u64, EntryProblem),
    Checkpoints(u64, CheckpointProblem),
}

fn edit_entries(dir: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let mut lines = read_lines(&entries_path(dir));
    f(&mut lines);
    write_lines(&entries_path(dir), &lines);
}

fn edit_checkpoints(dir: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let mut lines = read_lines(&checkpoints_path(dir));
    f(&mut lines);
    write_lines(&checkpoints_path(dir), &lines);
}

/// Renumbers every line from 0 and recomputes its leaf hash: a forger covering a deletion.
fn renumber(lines: &mut [String]) {
    for (i, line) in lines.iter_mut().enumerate() {
        let (record, _) = split_line(line);
        let rest = record.split_once(",\"time_ns\"").unwrap().1;
        *line = line_for_record(&format!("{{\"index\":{i},\"time_ns\"{rest}"));
    }
}

/// A checkpoint line made by another log (other entries) under `seed`'s key.
fn foreign_checkpoint(seed: u8, entries: u64) -> String {
    let other = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(other.path(), key(seed)).unwrap();
    for i in 0..entries {
        let mut e = entry(i);
        e.actor = "someone else".into();
        log.append(&e).unwrap();
    }
    log.checkpoint(1).unwrap();
    read_lines(&checkpoints_path(other.path())).pop().unwrap()
}

fn flip_hex_digit(s: &str, at: usize) -> String {
    let mut b = s.as_bytes().to_vec();
    b[at] = if b[at] == b'0' { b'1' } else { b'0' };
    String::from_utf8(b).unwrap()
}

type Tamper = Box<dyn Fn(&Path)>;

fn cases() -> Vec<(&'static str, Tamper, Expect)> {
    use CheckpointProblem as C;
    use EntryProblem as E;
    vec![
        (
            "an entry edited, its leaf hash left",
            Box::new(|d: &Path| {
                edit_entries(d, |l| l[5] = l[5].replace("operator:1", "operator:7"));
            }),
            Expect::Entries(6, E::Edited { index: 5 }),
        ),
        (
            "an entry edited, its leaf hash recomputed",
            Box::new(|d: &Path| {
                edit_entries(d, |l| {
                    l[5] = forge(&l[5], |r| r.replace("operator:1", "operator:7"))
                });
            }),
            Expect::Checkpoints(
                2,
                C::RootMismatch {
                    tree_size: 8,
                    verified_size: 4,
                },
            ),
        ),
        (
            "an entry before the first checkpoint edited, recomputed",
            Box::new(|d: &Path| {
                edit_entries(d, |l| l[0] = forge(&l[0], |r| r.replace("user:0", "user:1")));
            }),
            Expect::Checkpoints(
                1,
                C::RootMismatch {
                    tree_size: 4,
                    verified_size: 0,
                },
            ),
        ),
        (
            "an entry reformatted (same JSON value, other bytes)",
            Box::new(|d: &Path| edit_entries(d, |l| l[2] = l[2].replacen(':', ": ", 1))),
            Expect::Entries(3, E::NotCanonical),
        ),
        (
            "a line that is not JSON",
            Box::new(|d: &Path| edit_entries(d, |l| l[7] = "not json".into())),
            Expect::Entries(8, E::Unparsable("expected ident at line 1 column 2".into())),
        ),
        (
            "an entry deleted",
            Box::new(|d: &Path| edit_entries(d, |l| drop(l.remove(2)))),
            Expect::Entries(3, E::Deleted { first: 2, found: 3 }),
        ),
        (
            "two entries deleted",
            Box::new(|d: &Path| edit_entries(d, |l| drop(l.drain(2..4)))),
            Expect::Entries(3, E::Deleted { first: 2, found: 4 }),
        ),
        (
            "an entry deleted, the rest renumbered and rehashed",
            Box::new(|d: &Path| {
                edit_entries(d, |l| {
                    l.remove(6);
                    renumber(l);
                });
            }),
            Expect::Checkpoints(
                2,
                C::RootMismatch {
                    tree_size: 8,
                    verified_size: 4,
                },
            ),
        ),
        (
            "the last entries deleted, under a checkpoint",
            Box::new(|d: &Path| edit_entries(d, |l| l.truncate(7))),
            Expect::Checkpoints(
                2,
                C::BeyondLog {
                    tree_size: 8,
                    entries: 7,
                },
            ),
        ),
        (
            "two entries swapped",
            Box::new(|d: &Path| edit_entries(d, |l| l.swap(2, 3))),
            Expect::Entries(
                3,
                E::Reordered {
                    expected: 2,
                    found: 3,
                    expected_at_line: 4,
                },
            ),
        ),
        (
            "an entry moved later",
            Box::new(|d: &Path| {
                edit_entries(d, |l| {
                    let x = l.remove(1);
                    l.insert(6, x);
                });
            }),
            Expect::Entries(
                2,
                E::Reordered {
                    expected: 1,
                    found: 2,
                    expected_at_line: 7,
                },
            ),
        ),
        (
            "two entries swapped, renumbered and rehashed",
            Box::new(|d: &Path| {
                edit_entries(d, |l| {
                    l.swap(1, 2);
                    renumber(l);
                });
            }),
            Expect::Checkpoints(
                1,
                C::RootMismatch {
                    tree_size: 4,
                    verified_size: 0,
                },
            ),
        ),
        (
            "an entry repeated",
            Box::new(|d: &Path| {
                edit_entries(d, |l| {
                    let x = l[4].clone();
                    l.insert(5, x);
                });
            }),
            Expect::Entries(
                6,
                E::Repeated {
                    expected: 5,
                    found: 4,
                },
            ),
        ),
        (
            "an entry inserted, renumbered and rehashed",
            Box::new(|d: &Path| {
                edit_entries(d, |l| {
                    let x = forge(&l[4], |r| r.replace("user:4", "user:44"));
                    l.insert(5, x);
                    renumber(l);
                });
            }),
            Expect::Checkpoints(
                2,
                C::RootMismatch {
                    tree_size: 8,
                    verified_size: 4,
                },
            ),
        ),
        (
            "a checkpoint's signature forged",
            Box::new(|d: &Path| {
                edit_checkpoints(d, |l| {
                    let at = l[1].find("\"signature\":\"").unwrap() + 20;
                    l[1] = flip_hex_digit(&l[1], at);
                });
            }),
            Expect::Checkpoints(2, C::BadSignature),
        ),
        (
            "a checkpoint's root edited",
            Box::new(|d: &Path| {
                edit_checkpoints(d, |l| {
                    let at = l[0].find("\"root_hex\":\"").unwrap() + 12;
                    l[0] = flip_hex_digit(&l[0], at);
                });
            }),
            Expect::Checkpoints(1, C::BadSignature),
        ),
        (
            "a checkpoint's size edited",
            Box::new(|d: &Path| {
                edit_checkpoints(d, |l| l[1] = l[1].replace("\"tree_size\":8", "\"tree_size\":9"))
            }),
            Expect::Checkpoints(2, C::BadSignature),
        ),
        (
            "a checkpoint from another key",
            Box::new(|d: &Path| edit_checkpoints(d, |l| l.push(foreign_checkpoint(2, 10)))),
            Expect::Checkpoints(
                3,
                C::OtherKey {
                    found: kinko_audit::key_id(&key(2).verifying_key()),
                    expected: kinko_audit::key_id(&key(1).verifying_key()),
                },
            ),
        ),
        (
            "a checkpoint from another key, claiming this key's id",
            Box::new(|d: &Path| {
                let mine = kinko_audit::key_id(&key(1).verifying_key());
                let theirs = kinko_audit::key_id(&key(2).verifying_key());
                edit_checkpoints(d, |l| l.push(foreign_checkpoint(2, 10).replace(&theirs, &mine)));
            }),
            Expect::Checkpoints(3, C::BadSignature),
        ),
        (
            "a checkpoint of another log under this key (a fork)",
            Box::new(|d: &Path| edit_checkpoints(d, |l| l.push(foreign_checkpoint(1, 9)))),
            Expect::Checkpoints(
                3,
                C::RootMismatch {
                    tree_size: 9,
                    verified_size: 8,
                },
            ),
        ),
        (
            "checkpoints reordered",
            Box::new(|d: &Path| edit_checkpoints(d, |l| l.swap(0, 1))),
            Expect::Checkpoints(
                2,
                C::OutOfOrder {
                    tree_size: 4,
                    previous: 8,
                },
            ),
        ),
        (
            "a checkpoint line that is not JSON",
            Box::new(|d: &Path| edit_checkpoints(d, |l| l.insert(1, "{}".into()))),
            Expect::Checkpoints(
                2,
                C::Unparsable("missing field `tree_size` at line 1 column 2".into()),
            ),
        ),
    ]
}

fn outcome(result: Result<impl std::fmt::Debug, AuditError>) -> (Option<Expect>, String) {
    match result {
        Err(e) => {
            let text = e.to_string();
            let got = match e {
                AuditError::Entries { path, line, problem } => {
                    assert!(path.ends_with(ENTRIES_FILE));
                    Some(Expect::Entries(line, problem))
                }
                AuditError::Checkpoints { path, line, problem } => {
                    assert!(path.ends_with(CHECKPOINTS_FILE));
                    Some(Expect::Checkpoints(line, problem))
                }
                other => panic!("unexpected error: {other}"),
            };
            (got, text)
        }
        Ok(v) => panic!("verified: {v:?}"),
    }
}

#[test]
fn every_tampering_is_named_by_verify_and_open() {
    let public = key(1).verifying_key();
    for (name, tamper, expect) in cases() {
        let dir = tempfile::tempdir().unwrap();
        drop(standard_log(dir.path()));
        tamper(dir.path());
        let (got, text) = outcome(verify_dir(dir.path(), &public));
        assert_eq!(got.as_ref(), Some(&expect), "verify_dir, {name}: {text}");
        let (line, _) = match &expect {
            Expect::Entries(l, _) | Expect::Checkpoints(l, _) => (*l, ()),
        };
        assert!(text.contains(&format!("line {line}:")), "{name}: {text}");
        let (got, _) = outcome(AuditLog::open(dir.path(), key(1)));
        assert_eq!(got, Some(expect), "open, {name}");
    }
}

#[test]
fn the_wrong_public_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    drop(standard_log(dir.path()));
    let (got, _) = outcome(verify_dir(dir.path(), &key(2).verifying_key()));
    assert!(matches!(
        got,
        Some(Expect::Checkpoints(1, CheckpointProblem::OtherKey { .. }))
    ));
}

/// What no checkpoint covers, no checkpoint protects: entries after the latest checkpoint,
/// edited with a recomputed leaf hash, still verify — the report says how many such entries
/// there are. (Checkpoint often, and keep checkpoints where the log's host cannot rewrite
/// them.)
#[test]
fn entries_after_the_latest_checkpoint_are_unprotected() {
    let dir = tempfile::tempdir().unwrap();
    let root = standard_log(dir.path()).root();
    edit_entries(dir.path(), |l| {
        l[9] = forge(&l[9], |r| r.replace("user:9", "user:0"))
    });
    let report = verify_dir(dir.path(), &key(1).verifying_key()).unwrap();
    assert_eq!(report.unsigned_entries, 2);
    assert_ne!(report.head_root, root);
    // ...but a checkpoint taken before the edit catches it.
    let dir = tempfile::tempdir().unwrap();
    let mut log = standard_log(dir.path());
    log.checkpoint(1).unwrap();
    drop(log);
    edit_entries(dir.path(), |l| {
        l[9] = forge(&l[9], |r| r.replace("user:9", "user:0"))
    });
    let (got, _) = outcome(verify_dir(dir.path(), &key(1).verifying_key()));
    assert_eq!(
        got,
        Some(Expect::Checkpoints(
            3,
            CheckpointProblem::RootMismatch {
                tree_size: 10,
                verified_size: 8
            }
        ))
    );
}

/// A large log, written line by line from the documented format (not through the crate),
/// opened and verified. Unoptimised SHA-256 takes about 4.5 µs a hash, so a debug build uses
/// 20 000 entries (every inclusion proof checked); an optimised build (`--release`) uses
/// more than `INCLUSION_PROOFS_MAX`, so the proofs are sampled.
#[test]
fn a_large_log_verifies_in_bounded_time() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let n = if cfg!(debug_assertions) {
        20_000
    } else {
        kinko_audit::INCLUSION_PROOFS_MAX + 1_000
    };
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(entries_path(dir.path())).unwrap());
        for i in 0..n {
            let record = format!(
                r#"{{"index":{i},"time_ns":{i},"kind":"auth.failed","actor":"ip:192.0.2.1","subject":"user:{}","detail":{{"n":{i}}}}}"#,
                i % 1000
            );
            writeln!(f, "{}", line_for_record(&record)).unwrap();
        }
        f.flush().unwrap();
        std::fs::File::create(checkpoints_path(dir.path())).unwrap();
    }
    let started = std::time::Instant::now();
    let mut log = AuditLog::open(dir.path(), key(1)).unwrap();
    assert_eq!(log.size(), n);
    let opened = started.elapsed();
    log.checkpoint(1).unwrap();
    log.append(&entry(n)).unwrap();
    drop(log);
    let started = std::time::Instant::now();
    let report = verify_dir(dir.path(), &key(1).verifying_key()).unwrap();
    let verified = started.elapsed();
    assert_eq!(report.entries, n + 1);
    assert_eq!(report.unsigned_entries, 1);
    assert_eq!(
        report.inclusion_proofs_checked,
        (n + 1).min(kinko_audit::INCLUSION_PROOFS_MAX)
    );
    eprintln!("{} entries: open {opened:?}, verify_dir {verified:?}", n + 1);
}
