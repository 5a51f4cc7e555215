//! Damage that is not a torn tail must be refused, with an error that says where.

use std::fs;
use std::path::Path;

use kinko_journal::{verify, Journal, JournalError, RECORD_HEADER_LEN};

use crate::common::{append, config, file_name, flip_byte, locations, open, segments, Input, Location};

/// A journal of 8 batches in segments of at most `segment_bytes_max` bytes, without its
/// verified-prefix checkpoint: these cases are about a full verification (what `verify` and an
/// open without a checkpoint do); `checkpoint.rs` covers an open with one.
fn build(dir: &Path, segment_bytes_max: u64) -> Vec<Input> {
    let mut inputs = Vec::new();
    let (mut journal, _) = open(dir, segment_bytes_max);
    for n in [3, 5, 2, 6, 4, 3, 5, 2] {
        append(&mut journal, &mut inputs, n, |s| 16 + (s % 33) as usize);
    }
    drop(journal);
    crate::common::remove_checkpoint(dir);
    inputs
}

fn open_err(dir: &Path, segment_bytes_max: u64) -> JournalError {
    match Journal::open(config(dir, segment_bytes_max)) {
        Ok((_, report)) => panic!("open accepted a damaged journal: {report:?}"),
        Err(e) => e,
    }
}

/// Asserts that both open and verify refuse, naming the segment file, the offset and the seq.
fn assert_refused(dir: &Path, segment_bytes_max: u64, at: &Location) -> JournalError {
    let verify_err = verify(dir).expect_err("verify accepted a damaged journal");
    let open_err = open_err(dir, segment_bytes_max);
    for err in [&verify_err, &open_err] {
        let msg = err.to_string();
        assert!(msg.contains(&file_name(&at.segment)), "{msg}");
        assert!(msg.contains(&format!(" at offset {} ", at.offset)), "{msg}");
        assert!(msg.contains(&format!("(record seq {}", at.seq)), "{msg}");
    }
    assert_eq!(verify_err.to_string(), open_err.to_string());
    open_err
}

#[test]
fn flipped_byte_in_any_field_of_a_middle_record_is_refused() {
    // One big segment, so the damaged record is in the last segment with valid records after.
    let fields = [
        ("length", 0),
        ("crc", 5),
        ("seq", 9),
        ("timestamp", 17),
        ("kind", 24),
        ("prev_hash", 40),
        ("payload", RECORD_HEADER_LEN as u64 + 3),
    ];
    for (field, within) in fields {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        build(dir, 1 << 20);
        let locs = locations(dir);
        assert_eq!(segments(dir).len(), 1);
        let target = locs[12].clone();
        flip_byte(&target.segment, target.offset + within);
        let err = assert_refused(dir, 1 << 20, &target);
        assert!(matches!(err, JournalError::Corrupt { .. }), "{field}: {err}");
    }
}

#[test]
fn flipped_byte_in_the_segment_header_is_refused() {
    for within in [0u64, 9, 17, 30, 61] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        build(dir, 1 << 20);
        let seg = segments(dir).pop().expect("segment");
        flip_byte(&seg, within);
        let at = Location {
            segment: seg,
            offset: 0,
            end: 0,
            seq: 1,
        };
        let err = assert_refused(dir, 1 << 20, &at);
        assert!(
            matches!(err, JournalError::Corrupt { .. }),
            "header byte {within}: {err}"
        );
    }
}

#[test]
fn zeroed_record_header_followed_by_valid_records_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    build(dir, 1 << 20);
    let target = locations(dir)[20].clone();
    let mut bytes = fs::read(&target.segment).expect("read");
    bytes[target.offset as usize..target.offset as usize + RECORD_HEADER_LEN].fill(0);
    fs::write(&target.segment, bytes).expect("write");
    assert_refused(dir, 1 << 20, &target);
}

#[test]
fn damage_in_a_non_last_segment_is_refused() {
    // Damage to the last record of a non-last segment has no valid record after it in the same
    // segment, and is still corruption.
    let max = 600;
    let tmp = tempfile::tempdir().expect("tempdir");
    build(tmp.path(), max);
    let locs = locations(tmp.path());
    let segs = segments(tmp.path());
    assert!(segs.len() >= 3);
    let in_first: Vec<&Location> = locs.iter().filter(|l| l.segment == segs[0]).collect();
    let last_of_first = (*in_first.last().expect("records")).clone();
    let cases = [
        (
            "payload of the last record",
            last_of_first.clone(),
            last_of_first.offset + RECORD_HEADER_LEN as u64,
        ),
        (
            "crc of the first record",
            in_first[0].clone(),
            in_first[0].offset + 4,
        ),
        (
            "segment header",
            Location {
                segment: segs[1].clone(),
                offset: 0,
                end: 0,
                seq: locs.iter().find(|l| l.segment == segs[1]).expect("records").seq,
            },
            20,
        ),
    ];
    for (what, at, byte) in cases {
        let copy = tempfile::tempdir().expect("tempdir");
        crate::common::copy_dir(tmp.path(), copy.path());
        let at = Location {
            segment: copy.path().join(file_name(&at.segment)),
            ..at
        };
        flip_byte(&at.segment, byte);
        let err = assert_refused(copy.path(), max, &at);
        assert!(matches!(err, JournalError::Corrupt { .. }), "{what}: {err}");
    }

    // A non-last segment cut short is refused too, not treated as a torn tail.
    let copy = tempfile::tempdir().expect("tempdir");
    crate::common::copy_dir(tmp.path(), copy.path());
    let first = copy.path().join(file_name(&segs[0]));
    let file = fs::OpenOptions::new().write(true).open(&first).expect("open");
    file.set_len(last_of_first.end - 3).expect("truncate");
    drop(file);
    let at = Location {
        segment: first,
        ..last_of_first
    };
    assert_refused(copy.path(), max, &at);
}

#[test]
fn missing_middle_segment_is_a_gap() {
    let max = 600;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    build(dir, max);
    let segs = segments(dir);
    assert!(segs.len() >= 3);
    fs::remove_file(&segs[1]).expect("remove");
    let expected = crate::common::first_seq_of(&segs[1]);
    let found = crate::common::first_seq_of(&segs[2]);
    for err in [verify(dir).expect_err("verify"), open_err(dir, max)] {
        assert!(
            matches!(err, JournalError::SeqGap { expected: e, found: f, .. } if e == expected && f == found),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&file_name(&segs[2])), "{msg}");
        assert!(msg.contains(&format!("record seq {expected}")), "{msg}");
    }
}

#[test]
fn missing_first_segment_is_a_gap() {
    let max = 600;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    build(dir, max);
    let segs = segments(dir);
    fs::remove_file(&segs[0]).expect("remove");
    let err = open_err(dir, max);
    assert!(matches!(err, JournalError::SeqGap { expected: 1, .. }), "{err}");
}

/// Rewrites a record's payload byte and recomputes its CRC, as an attacker would.
fn edit_and_recompute(at: &Location) {
    let mut bytes = fs::read(&at.segment).expect("read");
    let (start, end) = (at.offset as usize, at.end as usize);
    bytes[start + RECORD_HEADER_LEN] ^= 0x01;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[start..start + 4]), &bytes[start + 8..end]);
    bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(&at.segment, bytes).expect("write");
}

#[test]
fn edited_record_with_recomputed_crc_breaks_the_chain() {
    for max in [1 << 20, 600] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        build(dir, max);
        let locs = locations(dir);
        // In the middle of a segment, and the last record of a segment (the break is then
        // seen at the next segment's header).
        for index in [
            7,
            locs.iter()
                .position(|l| l.segment != locs[0].segment)
                .map_or(7, |i| i - 1),
        ] {
            let copy = tempfile::tempdir().expect("tempdir");
            crate::common::copy_dir(dir, copy.path());
            let at = Location {
                segment: copy.path().join(file_name(&locs[index].segment)),
                ..locs[index].clone()
            };
            edit_and_recompute(&at);
            let next = &locs[index + 1];
            let next_offset = if next.segment == locs[index].segment {
                next.offset
            } else {
                0
            };
            for err in [
                verify(copy.path()).expect_err("verify"),
                open_err(copy.path(), max),
            ] {
                assert!(
                    matches!(&err, JournalError::ChainBreak { seq, offset, .. } if *seq == next.seq && *offset == next_offset),
                    "{err}"
                );
                let msg = err.to_string();
                assert!(msg.contains(&file_name(&next.segment)), "{msg}");
                assert!(msg.contains(&format!("(record seq {})", next.seq)), "{msg}");
            }
        }
    }
}

#[test]
fn stray_segment_name_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    build(dir, 1 << 20);
    fs::write(dir.join("42.seg"), b"x").expect("write");
    let err = open_err(dir, 1 << 20);
    assert!(matches!(err, JournalError::UnexpectedFile { .. }), "{err}");
}

#[test]
fn large_segment_errors_are_reported_at_the_first_bad_record() {
    // More records in one segment than the reader parses and hashes per chunk, so damage is
    // found in the middle of a chunk hashed by several threads.
    let max = 8 << 20;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut inputs = Vec::new();
    let (mut journal, _) = open(dir, max);
    for _ in 0..4 {
        append(&mut journal, &mut inputs, 10_000, |s| (s % 11) as usize);
    }
    drop(journal);
    assert_eq!(segments(dir).len(), 1);
    let records = crate::common::read_all(dir);
    assert_eq!(records.len(), 40_000);
    crate::common::assert_prefix(&records, &inputs);
    let locs = locations(dir);

    for index in [17_000usize, 33_001] {
        let copy = tempfile::tempdir().expect("tempdir");
        crate::common::copy_dir(dir, copy.path());
        let at = Location {
            segment: copy.path().join(file_name(&locs[index].segment)),
            ..locs[index].clone()
        };
        flip_byte(&at.segment, at.offset + 30);
        let err = assert_refused(copy.path(), max, &at);
        assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
    }

    let copy = tempfile::tempdir().expect("tempdir");
    crate::common::copy_dir(dir, copy.path());
    let edited = Location {
        segment: copy.path().join(file_name(&locs[20_000].segment)),
        ..locs[20_000].clone()
    };
    // A payload byte must exist to edit.
    assert!(edited.end > edited.offset + RECORD_HEADER_LEN as u64);
    edit_and_recompute(&edited);
    let err = verify(copy.path()).expect_err("verify");
    assert!(
        matches!(&err, JournalError::ChainBreak { seq, offset, .. } if *seq == locs[20_001].seq && *offset == locs[20_001].offset),
        "{err}"
    );
}
