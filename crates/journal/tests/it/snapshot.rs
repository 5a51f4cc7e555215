//! Snapshot files: atomic writes, verification on read, retention.

use std::fs;
use std::path::PathBuf;

use kinko_journal::{JournalError, SnapshotMeta, SnapshotStore, SNAPSHOT_HEADER_LEN};

use crate::common::payload;

fn meta(seq: u64) -> SnapshotMeta {
    SnapshotMeta {
        format_version: 3,
        seq,
        journal_hash: [seq as u8; 32],
        state_hash: [!(seq as u8); 32],
        timestamp_ns: seq * 1_000,
    }
}

fn snap_files(store: &SnapshotStore) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(store.dir())
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn write_and_read_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(tmp.path().join("snaps")).expect("open");
    let empty = store.latest_valid().expect("latest");
    assert_eq!(empty.found, None);
    assert!(empty.skipped.is_empty());

    let data = payload(1, 100_000);
    let path = store.write(&meta(10), &data).expect("write");
    assert_eq!(
        path.file_name().and_then(|n| n.to_str()),
        Some("00000000000000000010.snap")
    );
    assert_eq!(
        fs::metadata(&path).expect("metadata").len(),
        (SNAPSHOT_HEADER_LEN + data.len()) as u64
    );
    store.write(&meta(20), b"").expect("write empty payload");

    let latest = store.latest_valid().expect("latest");
    assert_eq!(latest.found, Some((meta(20), Vec::new())));
    let listed = store.list().expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], (path, Ok(meta(10))));
    assert_eq!(listed[1].1, Ok(meta(20)));

    // Reopening sees the same snapshots.
    let reopened = SnapshotStore::open(tmp.path().join("snaps")).expect("reopen");
    assert_eq!(
        reopened.latest_valid().expect("latest").found,
        Some((meta(20), Vec::new()))
    );
}

#[test]
fn corrupt_newest_snapshot_is_skipped_and_reported() {
    // (what, byte offset to flip or None to truncate)
    let cases: [(&str, Option<usize>, &str); 4] = [
        (
            "payload byte",
            Some(SNAPSHOT_HEADER_LEN + 500),
            "payload checksum mismatch",
        ),
        ("seq in header", Some(17), "header crc mismatch"),
        ("magic", Some(0), "header crc mismatch"),
        ("truncated", None, "payload bytes but the file holds"),
    ];
    for (what, flip, reason) in cases {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(tmp.path()).expect("open");
        let older = payload(7, 2000);
        store.write(&meta(5), &older).expect("write");
        let newest = store.write(&meta(9), &payload(8, 2000)).expect("write");
        let mut bytes = fs::read(&newest).expect("read");
        match flip {
            Some(at) => bytes[at] ^= 0x01,
            None => bytes.truncate(bytes.len() - 10),
        }
        fs::write(&newest, bytes).expect("write");

        let latest = store.latest_valid().expect("latest");
        assert_eq!(latest.found, Some((meta(5), older.clone())), "{what}");
        assert_eq!(latest.skipped.len(), 1, "{what}");
        assert_eq!(latest.skipped[0].0, newest, "{what}");
        assert!(
            latest.skipped[0].1.contains(reason),
            "{what}: {}",
            latest.skipped[0].1
        );

        let listed = store.list().expect("list");
        assert_eq!(listed[0].1, Ok(meta(5)));
        assert!(listed[1].1.is_err(), "{what}");
    }
}

#[test]
fn snapshot_shorter_than_a_header_or_renamed_is_skipped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(tmp.path()).expect("open");
    store.write(&meta(1), b"state").expect("write");
    fs::write(tmp.path().join("00000000000000000003.snap"), b"short").expect("write");
    // A valid snapshot under another seq's name does not count either.
    let moved = store.write(&meta(2), b"other").expect("write");
    fs::rename(&moved, tmp.path().join("00000000000000000004.snap")).expect("rename");

    let latest = store.latest_valid().expect("latest");
    assert_eq!(latest.found, Some((meta(1), b"state".to_vec())));
    let reasons: Vec<&str> = latest.skipped.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("file name"), "{reasons:?}");
    assert!(reasons[1].contains("shorter than the header"), "{reasons:?}");
}

#[test]
fn retention_keeps_the_newest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(tmp.path()).expect("open");
    for seq in 1..=5 {
        store.write(&meta(seq * 10), &payload(seq, 64)).expect("write");
    }
    let names: Vec<String> = snap_files(&store)
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .collect();
    assert_eq!(
        names,
        [
            "00000000000000000030.snap",
            "00000000000000000040.snap",
            "00000000000000000050.snap"
        ]
    );

    let one = SnapshotStore::open(tmp.path()).expect("open").with_keep(1);
    one.write(&meta(60), b"x").expect("write");
    assert_eq!(snap_files(&one).len(), 1);
    assert_eq!(
        one.latest_valid().expect("latest").found.map(|(m, _)| m.seq),
        Some(60)
    );
}

#[test]
fn leftover_temporary_file_is_removed_on_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let stray = tmp.path().join("00000000000000000007.snap.tmp");
    fs::write(&stray, b"half written").expect("write");
    let store = SnapshotStore::open(tmp.path()).expect("open");
    assert!(!stray.exists());
    assert_eq!(store.latest_valid().expect("latest").found, None);
}

#[test]
fn open_on_a_file_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("not-a-dir");
    fs::write(&file, b"x").expect("write");
    let err = SnapshotStore::open(&file).expect_err("a file is not a directory");
    assert!(matches!(err, JournalError::Io { .. }), "{err}");
}
