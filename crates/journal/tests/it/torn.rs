//! Torn tails: what a crash in the middle of a write leaves behind.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use kinko_journal::{verify, RecordIn, SEGMENT_HEADER_LEN};

use crate::common::{append, assert_prefix, copy_dir, locations, open, read_all, segments, Input, Location};

const SEGMENT_MAX: u64 = 4096;

/// A journal whose last segment ends with a 4-record batch after some earlier ones.
fn template(dir: &Path) -> Vec<Input> {
    let mut inputs = Vec::new();
    let (mut journal, _) = open(dir, SEGMENT_MAX);
    for n in [10, 3, 12] {
        append(&mut journal, &mut inputs, n, |s| (s % 45) as usize);
    }
    append(&mut journal, &mut inputs, 4, |s| 20 + (s % 7) as usize);
    inputs
}

/// Damages a copy of the template with `damage(segment, cut)`, then checks that open keeps
/// exactly the records whose bytes are intact, reports a torn tail exactly when non-zero bytes
/// follow them, and that appending afterwards chains onto the last kept record.
fn check_cut(template_dir: &Path, inputs: &[Input], cut: u64, damage: impl Fn(&Path, u64)) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    copy_dir(template_dir, dir);
    let locs = locations(template_dir);
    let last_segment = segments(dir).pop().expect("segments");
    let original = fs::read(&last_segment).expect("read");
    damage(&last_segment, cut);
    let damaged = fs::read(&last_segment).expect("read");

    let intact = |l: &&Location| {
        l.segment.file_name() != last_segment.file_name()
            || damaged.get(l.offset as usize..l.end as usize)
                == original.get(l.offset as usize..l.end as usize)
    };
    let kept = locs.iter().take_while(intact).count();
    let kept_end = if kept == 0 {
        SEGMENT_HEADER_LEN as u64
    } else {
        locs[kept - 1].end
    };
    let expect_torn = damaged[kept_end as usize..].iter().any(|&b| b != 0);

    let before = verify(dir).expect("verify accepts a torn tail");
    assert_eq!(before.records as usize, kept, "cut {cut}");
    assert_eq!(
        before.torn_tail.is_some(),
        expect_torn,
        "cut {cut}: {:?}",
        before.torn_tail
    );

    let (mut journal, report) = open(dir, SEGMENT_MAX);
    assert_eq!(report.records as usize, kept, "cut {cut}");
    assert_eq!(report.head_seq as usize, kept);
    match &report.torn_tail {
        Some(torn) => {
            assert!(expect_torn, "cut {cut}: unexpected torn tail {torn:?}");
            assert_eq!(torn.segment.file_name(), last_segment.file_name());
            assert_eq!(torn.offset, kept_end, "cut {cut}");
            assert!(torn.bytes_dropped > 0);
        }
        None => assert!(!expect_torn, "cut {cut}: torn tail not reported"),
    }
    assert_eq!(verify(dir).expect("verify after repair").torn_tail, None);

    let mut after: Vec<Input> = inputs[..kept].to_vec();
    let kept_head = journal.head_hash();
    append(&mut journal, &mut after, 3, |s| (s % 30) as usize);
    drop(journal);
    let records = read_all(dir);
    assert_eq!(records.len(), kept + 3);
    assert_prefix(&records, &after);
    assert_eq!(records[kept].prev_hash, kept_head);
}

fn truncate(path: &Path, at: u64) {
    let file = OpenOptions::new().write(true).open(path).expect("open");
    file.set_len(at).expect("truncate");
}

/// Zeroes everything from `at` on (a write into preallocated space that never reached disk).
fn zero_from(path: &Path, at: u64) {
    let mut bytes = fs::read(path).expect("read");
    bytes[at as usize..].fill(0);
    fs::write(path, bytes).expect("write");
}

#[test]
fn truncation_anywhere_in_the_last_batch_is_a_torn_tail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let inputs = template(tmp.path());
    let locs = locations(tmp.path());
    let last4 = &locs[locs.len() - 4..];
    assert_eq!(
        last4[0].segment, last4[3].segment,
        "the last batch is in one segment"
    );
    for cut in last4[0].offset..=last4[3].end {
        check_cut(tmp.path(), &inputs, cut, truncate);
    }
}

#[test]
fn zeroed_suffix_in_preallocated_space_is_a_torn_tail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let inputs = template(tmp.path());
    let locs = locations(tmp.path());
    let last4 = &locs[locs.len() - 4..];
    for cut in last4[0].offset..=last4[3].end {
        check_cut(tmp.path(), &inputs, cut, zero_from);
    }
}

#[test]
fn truncated_segment_header_removes_the_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut inputs = Vec::new();
    let (mut journal, _) = open(tmp.path(), 600);
    for n in [5, 4, 6, 3] {
        append(&mut journal, &mut inputs, n, |s| (s % 45) as usize);
    }
    drop(journal);
    assert!(segments(tmp.path()).len() >= 2);
    let last = segments(tmp.path()).pop().expect("segments");
    let records_before_last = locations(tmp.path()).iter().filter(|l| l.segment != last).count();
    assert!(records_before_last > 0);
    for cut in [0u64, 1, 10, SEGMENT_HEADER_LEN as u64 - 1] {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(tmp.path(), copy.path());
        let copy_last = copy.path().join(last.file_name().expect("name"));
        truncate(&copy_last, cut);
        let (mut journal, report) = open(copy.path(), 600);
        assert_eq!(report.records as usize, records_before_last, "cut {cut}");
        let torn = report.torn_tail.expect("torn tail reported");
        assert_eq!(torn.offset, 0);
        assert!(!copy_last.exists(), "the empty segment is removed");
        let mut after = inputs[..records_before_last].to_vec();
        append(&mut journal, &mut after, 2, |_| 5);
        drop(journal);
        assert_prefix(&read_all(copy.path()), &after);
        assert_eq!(read_all(copy.path()).len(), records_before_last + 2);
    }
}

#[test]
fn garbage_after_the_data_is_a_torn_tail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let inputs = template(dir);
    let locs = locations(dir);
    let end = locs.last().map(|l| l.end).expect("records");
    let last = segments(dir).pop().expect("segments");
    let len = fs::metadata(&last).expect("metadata").len();

    // Garbage written into the preallocated space right after the data ...
    let mut bytes = fs::read(&last).expect("read");
    bytes[end as usize..end as usize + 7].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3]);
    // ... and more appended past the end of the file.
    bytes.extend_from_slice(&[0x55; 300]);
    fs::write(&last, &bytes).expect("write");

    let report = verify(dir).expect("verify");
    let torn = report.torn_tail.expect("torn tail");
    assert_eq!(torn.offset, end);
    assert_eq!(torn.bytes_dropped, len + 300 - end);
    assert_eq!(
        fs::metadata(&last).expect("metadata").len(),
        len + 300,
        "verify repairs nothing"
    );

    let (mut journal, report) = open(dir, SEGMENT_MAX);
    assert_eq!(report.records as usize, inputs.len());
    assert_eq!(report.torn_tail.map(|t| t.offset), Some(end));
    let mut after = inputs.clone();
    append(&mut journal, &mut after, 2, |_| 8);
    drop(journal);
    assert_prefix(&read_all(dir), &after);
    assert_eq!(read_all(dir).len(), after.len());
}

#[test]
fn zeros_after_the_data_are_not_a_torn_tail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let inputs = template(dir);
    let last = segments(dir).pop().expect("segments");
    let mut file = OpenOptions::new().append(true).open(&last).expect("open");
    file.write_all(&[0; 5000]).expect("append zeros");
    drop(file);
    let (_, report) = open(dir, SEGMENT_MAX);
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.records as usize, inputs.len());
}

#[test]
fn leftover_temporary_segment_is_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let inputs = template(dir);
    let stray = dir.join("00000000000000099999.seg.tmp");
    fs::write(&stray, [1u8; 100]).expect("write");
    assert_eq!(
        verify(dir).expect("verify ignores temp files").records as usize,
        inputs.len()
    );
    let (_, report) = open(dir, SEGMENT_MAX);
    assert_eq!(report.records as usize, inputs.len());
    assert!(!stray.exists());
}

#[test]
fn torn_tail_in_a_segment_with_one_batch_of_one_record() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut journal, _) = open(dir, SEGMENT_MAX);
    journal
        .append_batch(&[RecordIn {
            timestamp_ns: 7,
            kind: 1,
            payload: b"only",
        }])
        .expect("append");
    drop(journal);
    let seg = segments(dir).pop().expect("segment");
    truncate(&seg, SEGMENT_HEADER_LEN as u64 + 30);
    let (journal, report) = open(dir, SEGMENT_MAX);
    assert_eq!(report.records, 0);
    assert_eq!(
        report.torn_tail.map(|t| t.offset),
        Some(SEGMENT_HEADER_LEN as u64)
    );
    assert_eq!(journal.next_seq(), 1);
    assert_eq!(journal.last_timestamp_ns(), 0);
}
