//! The file-backed log: round trips, durability before return, torn tails, limits, and
//! refusing to append when the file cannot be written.

use crate::common::{checkpoints_path, entries_path, entry, key, read_lines, standard_log};
use kinko_audit::{
    checkpoints, verify_consistency, verify_dir, verify_inclusion, AuditError, AuditLog, Entry, Repaired,
    DETAIL_BYTES_MAX, FIELD_BYTES_MAX,
};
use serde_json::json;

#[test]
fn append_reopen_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (size, root, leaves, cp) = {
        let mut log = standard_log(dir.path());
        let cp = log.checkpoint(999).unwrap();
        assert_eq!(cp.tree_size, 10);
        assert_eq!(cp.root(), Some(log.root()));
        assert_eq!(cp.key_id, log.key_id());
        assert_eq!(
            cp.signed_text(),
            format!(
                "kinko-audit checkpoint v1\n10\n{}\n999\n",
                hex::encode(log.root())
            )
        );
        assert_eq!(cp.verify(&log.public_key()), Ok(log.root()));
        let leaves: Vec<_> = (0..10).map(|i| log.leaf(i).unwrap()).collect();
        (log.size(), log.root(), leaves, cp)
    };
    let log = AuditLog::open(dir.path(), key(1)).unwrap();
    assert_eq!(log.repaired(), Repaired::default());
    assert_eq!((log.size(), log.root()), (size, root));
    assert_eq!(log.checkpoints(), 3);
    assert_eq!(log.latest_checkpoint(), Some(&cp));
    for i in 0..10 {
        assert_eq!(log.leaf(i), Some(leaves[i as usize]));
        assert_eq!(log.entry(i).unwrap(), entry(i));
        let proof = log.prove_inclusion(i, 10).unwrap();
        assert!(verify_inclusion(&leaves[i as usize], i, 10, &proof, &root));
    }
    assert_eq!(log.leaf(10), None);
    assert!(matches!(log.entry(10), Err(AuditError::OutOfRange(_))));
    let cps = checkpoints(dir.path()).unwrap();
    assert_eq!(cps.iter().map(|c| c.tree_size).collect::<Vec<_>>(), [4, 8, 10]);
    for c in &cps {
        let old = c.root().unwrap();
        let proof = log.prove_consistency(c.tree_size, 10).unwrap();
        assert!(verify_consistency(c.tree_size, 10, &old, &root, &proof));
    }

    let report = verify_dir(dir.path(), &key(1).verifying_key()).unwrap();
    assert_eq!(report.entries, 10);
    assert_eq!(report.checkpoints, 3);
    assert_eq!((report.head_size, report.head_root), (10, root));
    assert_eq!(report.latest_checkpoint, Some(cp));
    assert_eq!(report.unsigned_entries, 0);
    assert_eq!(report.inclusion_proofs_checked, 10);
    assert!(report.to_string().contains(&hex::encode(root)));
}

#[test]
fn the_stored_line_is_the_documented_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path(), key(1)).unwrap();
    let e = Entry {
        time_ns: 5,
        kind: "k".into(),
        actor: "a".into(),
        subject: "s".into(),
        detail: json!({"b": 1, "a": "x"}),
    };
    log.append(&e).unwrap();
    let record = r#"{"index":0,"time_ns":5,"kind":"k","actor":"a","subject":"s","detail":{"a":"x","b":1}}"#;
    let leaf = kinko_audit::leaf_hash(record.as_bytes());
    assert_eq!(log.leaf(0), Some(leaf));
    assert_eq!(log.root(), leaf);
    assert_eq!(
        std::fs::read_to_string(entries_path(dir.path())).unwrap(),
        format!(
            "{},\"leaf_hash\":\"{}\"}}\n",
            &record[..record.len() - 1],
            hex::encode(leaf)
        )
    );
}

#[test]
fn empty_log_and_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("audit");
    let mut log = AuditLog::open(&sub, key(1)).unwrap();
    assert_eq!(log.size(), 0);
    assert_eq!(log.root(), kinko_audit::EMPTY_ROOT);
    let cp = log.checkpoint(1).unwrap();
    assert_eq!(cp.tree_size, 0);
    drop(log);
    let report = verify_dir(&sub, &key(1).verifying_key()).unwrap();
    assert_eq!((report.entries, report.checkpoints), (0, 1));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sub), 0o700);
    assert_eq!(mode(&entries_path(&sub)), 0o600);
    assert_eq!(mode(&checkpoints_path(&sub)), 0o600);
}

/// Power loss cannot be tested here; what can: when append returns, the line is in the
/// file — another reader (a second open, the verifier) sees it while the log stays open.
#[test]
fn append_returns_after_the_line_is_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path(), key(1)).unwrap();
    for i in 0..5 {
        let index = log.append(&entry(i)).unwrap();
        assert_eq!(read_lines(&entries_path(dir.path())).len() as u64, index + 1);
        let other = AuditLog::open(dir.path(), key(1)).unwrap();
        assert_eq!((other.size(), other.root()), (log.size(), log.root()));
        assert_eq!(other.entry(index).unwrap(), entry(i));
    }
    log.checkpoint(7).unwrap();
    assert_eq!(checkpoints(dir.path()).unwrap().len(), 1);
    assert_eq!(
        verify_dir(dir.path(), &key(1).verifying_key())
            .unwrap()
            .checkpoints,
        1
    );
}

#[test]
fn torn_tails_are_cut_and_reported() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (root, line) = {
        let log = standard_log(dir.path());
        (log.root(), read_lines(&entries_path(dir.path()))[3].clone())
    };
    let whole = std::fs::metadata(entries_path(dir.path())).unwrap().len();
    let cps_whole = std::fs::metadata(checkpoints_path(dir.path())).unwrap().len();
    // A crash mid-write leaves part of a line: even all of one but its newline.
    for torn in [&line.as_bytes()[..1], &line.as_bytes()[..40], line.as_bytes()] {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(entries_path(dir.path()))
            .unwrap();
        f.write_all(torn).unwrap();
        let mut c = std::fs::OpenOptions::new()
            .append(true)
            .open(checkpoints_path(dir.path()))
            .unwrap();
        c.write_all(b"{\"tree_size\":1").unwrap();

        // The verifier reports the torn tails and changes nothing.
        let report = verify_dir(dir.path(), &key(1).verifying_key()).unwrap();
        assert_eq!(report.entries_torn_bytes, torn.len() as u64);
        assert_eq!(report.checkpoints_torn_bytes, 14);
        assert_eq!(report.head_root, root);

        let mut log = AuditLog::open(dir.path(), key(1)).unwrap();
        assert_eq!(
            log.repaired(),
            Repaired {
                entries_bytes: torn.len() as u64,
                checkpoints_bytes: 14
            }
        );
        assert_eq!((log.size(), log.root()), (10, root));
        assert_eq!(std::fs::metadata(entries_path(dir.path())).unwrap().len(), whole);
        assert_eq!(
            std::fs::metadata(checkpoints_path(dir.path())).unwrap().len(),
            cps_whole
        );
        // Appending after the cut works; undo it for the next round.
        log.append(&entry(10)).unwrap();
        drop(log);
        std::fs::OpenOptions::new()
            .write(true)
            .open(entries_path(dir.path()))
            .unwrap()
            .set_len(whole)
            .unwrap();
    }
}

#[test]
fn oversize_and_invalid_entries_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = standard_log(dir.path());
    let before = std::fs::read(entries_path(dir.path())).unwrap();
    let root = log.root();
    let long = "x".repeat(FIELD_BYTES_MAX + 1);
    let mut cases: Vec<(Entry, &str)> = Vec::new();
    for field in ["kind", "actor", "subject"] {
        let mut e = entry(0);
        match field {
            "kind" => e.kind = long.clone(),
            "actor" => e.actor = long.clone(),
            _ => e.subject = long.clone(),
        }
        cases.push((e, field));
    }
    let mut e = entry(0);
    e.detail = json!({ "blob": "y".repeat(DETAIL_BYTES_MAX) });
    cases.push((e, "detail"));
    for (e, field) in cases {
        match log.append(&e) {
            Err(AuditError::TooLarge { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    for detail in [json!("text"), json!([1, 2]), json!({"ratio": 0.5}), json!(null)] {
        let mut e = entry(0);
        e.detail = detail;
        assert!(matches!(log.append(&e), Err(AuditError::InvalidEntry(_))));
    }
    // At the limit is fine.
    let mut e = entry(0);
    e.kind = "k".repeat(FIELD_BYTES_MAX);
    assert!(log.append(&e).is_ok());
    assert_eq!(log.size(), 11);
    assert_ne!(log.root(), root);
    assert!(std::fs::read(entries_path(dir.path()))
        .unwrap()
        .starts_with(&before));
    assert!(!log.is_poisoned());
}

/// As root, permissions do not stop writes, so the entries file is made unwritable another
/// way: replaced by a directory of the same name (opening a directory for writing fails for
/// everyone). The append fails, the log's state is unchanged, and the caller refuses.
#[test]
fn append_fails_when_the_file_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = standard_log(dir.path());
    let (size, root) = (log.size(), log.root());
    let path = entries_path(dir.path());
    let saved = dir.path().join("saved.jsonl");
    std::fs::rename(&path, &saved).unwrap();
    std::fs::create_dir(&path).unwrap();
    assert!(matches!(log.append(&entry(10)), Err(AuditError::Io { .. })));
    assert_eq!((log.size(), log.root()), (size, root));

    // The file gone altogether: also refused.
    std::fs::remove_dir(&path).unwrap();
    assert!(matches!(log.append(&entry(10)), Err(AuditError::Io { .. })));

    // Same for checkpoints.
    let cps = checkpoints_path(dir.path());
    std::fs::rename(&cps, dir.path().join("saved-cps.jsonl")).unwrap();
    std::fs::create_dir(&cps).unwrap();
    assert!(matches!(log.checkpoint(1), Err(AuditError::Io { .. })));

    // Nothing was written anywhere, so the log opened again from the saved files is whole.
    std::fs::remove_dir(&cps).unwrap();
    std::fs::rename(dir.path().join("saved-cps.jsonl"), &cps).unwrap();
    std::fs::rename(&saved, &path).unwrap();
    drop(log);
    let mut log = AuditLog::open(dir.path(), key(1)).unwrap();
    assert_eq!((log.size(), log.root()), (size, root));
    assert_eq!(log.append(&entry(10)).unwrap(), 10);
}

/// A file replaced by a copy, or written by someone else, refuses appends (they would go
/// where the log's memory no longer describes) and poisons the log until it is reopened.
#[test]
fn append_refuses_a_file_changed_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = standard_log(dir.path());
    let path = entries_path(dir.path());

    // Replaced by an identical copy: a different file.
    let copy = dir.path().join("copy");
    std::fs::copy(&path, &copy).unwrap();
    std::fs::rename(&copy, &path).unwrap();
    assert!(matches!(log.append(&entry(10)), Err(AuditError::Changed { .. })));
    assert!(log.is_poisoned());
    assert!(matches!(log.append(&entry(10)), Err(AuditError::Poisoned)));
    assert!(matches!(log.checkpoint(1), Err(AuditError::Poisoned)));

    // Reopened, it appends again; then a second writer adds a line behind its back.
    let mut log = AuditLog::open(dir.path(), key(1)).unwrap();
    log.append(&entry(10)).unwrap();
    let mut other = AuditLog::open(dir.path(), key(1)).unwrap();
    other.append(&entry(11)).unwrap();
    assert!(matches!(log.append(&entry(11)), Err(AuditError::Changed { .. })));

    // An edit after opening is caught when the entry is read back.
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("operator:0", "operator:9", 1);
    std::fs::write(&path, edited).unwrap();
    assert!(matches!(other.entry(0), Err(AuditError::Changed { .. })));
}

#[test]
fn the_key_must_match_the_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    drop(standard_log(dir.path()));
    match AuditLog::open(dir.path(), key(2)) {
        Err(AuditError::Checkpoints {
            line: 1,
            problem: kinko_audit::CheckpointProblem::OtherKey { .. },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn key_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.key");
    let k = kinko_audit::load_or_create_key(&path).unwrap();
    let mut log = AuditLog::open(&dir.path().join("log"), k).unwrap();
    log.append(&entry(0)).unwrap();
    log.checkpoint(1).unwrap();
    let public_hex = kinko_audit::public_key_hex(&log.public_key());
    drop(log);
    let public = kinko_audit::parse_public_key(&public_hex).unwrap();
    assert!(verify_dir(&dir.path().join("log"), &public).is_ok());
    let again = kinko_audit::load_or_create_key(&path).unwrap();
    assert_eq!(kinko_audit::public_key_hex(&again.verifying_key()), public_hex);
}
