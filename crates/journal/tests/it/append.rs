//! Appending, reopening and reading back.

use std::fs;

use kinko_journal::{
    read_from, verify, Journal, JournalError, RecordIn, GENESIS_HASH, PAYLOAD_BYTES_MAX, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};

use crate::common::{append, assert_prefix, config, open, read_all, segments, Input};

#[test]
fn empty_journal_is_created_and_reports_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("a").join("journal");
    let (mut journal, report) = open(&dir, 4096);
    assert!(dir.is_dir());
    assert_eq!(journal.next_seq(), 1);
    assert_eq!(journal.head_hash(), GENESIS_HASH);
    assert_eq!(journal.last_timestamp_ns(), 0);
    assert_eq!((report.records, report.segments, report.head_seq), (0, 0, 0));
    assert_eq!(report.head_hash, GENESIS_HASH);
    assert_eq!(report.torn_tail, None);

    // An empty batch writes nothing.
    assert_eq!(journal.append_batch(&[]).expect("empty batch"), 1);
    assert!(segments(&dir).is_empty());
    let verified = verify(&dir).expect("verify");
    assert_eq!(
        (verified.records, verified.segments, verified.head_seq),
        (0, 0, 0)
    );
    assert!(read_all(&dir).is_empty());
}

#[test]
fn batches_round_trip_across_segment_rotation() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut inputs: Vec<Input> = Vec::new();
    let segment_bytes_max = 2048;
    {
        let (mut journal, _) = open(dir, segment_bytes_max);
        for (i, n) in [1usize, 3, 17, 40, 1, 100, 7, 2, 25].into_iter().enumerate() {
            let first = append(&mut journal, &mut inputs, n, |s| {
                ((s * 37 + i as u64) % 120) as usize
            });
            assert_eq!(journal.next_seq(), first + n as u64);
        }
        assert_eq!(
            journal.last_timestamp_ns(),
            inputs.last().map(|r| r.timestamp_ns).unwrap_or(0)
        );
    }
    let records = read_all(dir);
    assert_eq!(records.len(), inputs.len());
    assert_prefix(&records, &inputs);
    let head = records.last().map(|r| r.hash).expect("records");

    let segs = segments(dir);
    assert!(segs.len() > 5, "expected many segments, got {}", segs.len());

    let (mut journal, report) = open(dir, segment_bytes_max);
    assert_eq!(report.records, inputs.len() as u64);
    assert_eq!(report.head_seq, inputs.len() as u64);
    assert_eq!(report.head_hash, head);
    assert_eq!(report.segments as usize, segs.len());
    assert_eq!(report.torn_tail, None);
    assert_eq!(journal.head_hash(), head);
    assert_eq!(journal.next_seq(), inputs.len() as u64 + 1);

    let verified = verify(dir).expect("verify");
    assert_eq!(verified.records, report.records);
    assert_eq!(verified.head_hash, head);
    assert_eq!(verified.torn_tail, None);

    // Appending after a reopen continues the sequence and the chain.
    append(&mut journal, &mut inputs, 30, |s| (s % 50) as usize);
    drop(journal);
    let records = read_all(dir);
    assert_eq!(records.len(), inputs.len());
    assert_prefix(&records, &inputs);
}

#[test]
fn read_from_starts_at_any_seq() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut inputs = Vec::new();
    let (mut journal, _) = open(dir, 1024);
    for n in [5, 9, 13, 1, 20] {
        append(&mut journal, &mut inputs, n, |s| (s % 40) as usize);
    }
    let all = read_all(dir);
    let total = all.len() as u64;
    assert!(segments(dir).len() > 2);
    for from in 0..=total + 1 {
        let got: Vec<_> = read_from(dir, from)
            .expect("read_from")
            .collect::<Result<_, _>>()
            .expect("records");
        let skip = from.saturating_sub(1) as usize;
        assert_eq!(got, all[skip.min(all.len())..].to_vec(), "from {from}");
    }
    let mut beyond = read_from(dir, total + 2).expect("read_from");
    assert!(matches!(
        beyond.next(),
        Some(Err(JournalError::BeyondEnd { from_seq, next_seq })) if from_seq == total + 2 && next_seq == total + 1
    ));
    assert!(beyond.next().is_none());
}

#[test]
fn batch_larger_than_a_segment_gets_its_own() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut inputs = Vec::new();
    let max = 1024;
    let (mut journal, _) = open(dir, max);
    append(&mut journal, &mut inputs, 2, |_| 10);
    append(&mut journal, &mut inputs, 30, |_| 100); // ~4.7 KiB in one batch
    append(&mut journal, &mut inputs, 1, |_| 10);
    drop(journal);
    let segs = segments(dir);
    assert_eq!(segs.len(), 3);
    let big = fs::metadata(&segs[1]).expect("metadata").len();
    assert!(big >= (SEGMENT_HEADER_LEN + 30 * (RECORD_HEADER_LEN + 100)) as u64);
    assert!(big > max);
    assert_prefix(&read_all(dir), &inputs);
    let (_, report) = open(dir, max);
    assert_eq!(report.records, 33);
}

#[test]
fn invalid_input_is_refused_without_poisoning() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut journal, _) = open(dir, 4096);
    let big = vec![0u8; PAYLOAD_BYTES_MAX + 1];
    let err = journal
        .append_batch(&[
            RecordIn {
                timestamp_ns: 1,
                kind: 0,
                payload: b"ok",
            },
            RecordIn {
                timestamp_ns: 1,
                kind: 0,
                payload: &big,
            },
        ])
        .expect_err("payload too large");
    assert!(
        matches!(err, JournalError::PayloadTooLarge { index: 1, .. }),
        "{err}"
    );

    journal
        .append_batch(&[RecordIn {
            timestamp_ns: 10,
            kind: 1,
            payload: b"a",
        }])
        .expect("append");
    let err = journal
        .append_batch(&[RecordIn {
            timestamp_ns: 9,
            kind: 1,
            payload: b"b",
        }])
        .expect_err("timestamp regression");
    assert!(
        matches!(
            err,
            JournalError::TimestampRegression {
                previous: 10,
                given: 9,
                ..
            }
        ),
        "{err}"
    );

    assert!(!journal.is_poisoned());
    assert_eq!(
        journal
            .append_batch(&[RecordIn {
                timestamp_ns: 10,
                kind: 2,
                payload: b""
            }])
            .expect("append"),
        2
    );
    drop(journal);
    let records = read_all(dir);
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].payload, b"");
    assert_eq!(records[1].kind, 2);
}

#[test]
fn config_limits_are_enforced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for bad in [0, 100, (1 << 30) + 1] {
        let err = Journal::open(config(tmp.path(), bad)).expect_err("bad config");
        assert!(matches!(err, JournalError::Config(_)), "{err}");
    }
}

#[test]
fn segments_are_preallocated_with_zeros() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut inputs = Vec::new();
    let (mut journal, _) = open(dir, 64 << 20);
    append(&mut journal, &mut inputs, 3, |_| 48);
    let segs = segments(dir);
    assert_eq!(segs.len(), 1);
    let bytes = fs::read(&segs[0]).expect("read");
    let data_end = SEGMENT_HEADER_LEN + 3 * (RECORD_HEADER_LEN + 48);
    assert!(bytes.len() >= 1 << 20, "segment is preallocated");
    assert!(bytes[data_end..].iter().all(|&b| b == 0));
    // Reopening finds the end of the data inside the preallocated space.
    drop(journal);
    let (mut journal, report) = open(dir, 64 << 20);
    assert_eq!(report.records, 3);
    append(&mut journal, &mut inputs, 2, |_| 48);
    drop(journal);
    assert_prefix(&read_all(dir), &inputs);
    assert_eq!(read_all(dir).len(), 5);
}
