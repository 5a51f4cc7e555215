//! The verified-prefix checkpoint: an open verifies only what the checkpoint does not cover,
//! refuses a journal that lost or changed what it covers, and falls back to a full
//! verification when the checkpoint itself is missing or damaged.

use std::fs;
use std::path::Path;

use kinko_journal::{verify, Journal, JournalError, CHECKPOINT_FILE_NAME, RECORD_HEADER_LEN};

use crate::common::{
    append, assert_prefix, config, copy_dir, file_name, first_seq_of, flip_byte, locations, open, read_all,
    remove_checkpoint, segments, Input, Location,
};

const MAX: u64 = 600;

/// A journal of several small segments, written by one writer (which checkpoints each segment
/// it seals) and closed.
fn build(dir: &Path) -> Vec<Input> {
    let mut inputs = Vec::new();
    let (mut journal, _) = open(dir, MAX);
    for n in [3, 5, 2, 6, 4, 3, 5, 2, 4, 3] {
        append(&mut journal, &mut inputs, n, |s| 16 + (s % 33) as usize);
    }
    assert!(segments(dir).len() >= 4, "the test needs several sealed segments");
    inputs
}

/// The sequence number of the last record of the second-to-last segment: what a checkpoint
/// covers once every segment but the last is sealed.
fn sealed_head(dir: &Path) -> u64 {
    let segs = segments(dir);
    first_seq_of(&segs[segs.len() - 1]) - 1
}

fn open_err(dir: &Path) -> JournalError {
    match Journal::open(config(dir, MAX)) {
        Ok((_, report)) => panic!("open accepted the journal: {report:?}"),
        Err(e) => e,
    }
}

fn copy(from: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(from, tmp.path());
    tmp
}

#[test]
fn open_with_a_checkpoint_verifies_only_the_segments_after_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut inputs = build(dir);
    let total = inputs.len() as u64;
    let covered = sealed_head(dir);
    assert!(
        dir.join(CHECKPOINT_FILE_NAME).is_file(),
        "the writer checkpoints what it seals"
    );

    let (mut journal, report) = open(dir, MAX);
    assert_eq!(report.checkpoint_seq, covered);
    assert_eq!(report.records, total);
    assert_eq!(report.head_seq, total);
    assert_eq!(report.records_verified, total - covered);
    assert_eq!(report.head_hash, verify(dir).expect("verify").head_hash);

    // Appending after such an open chains on as before, across new segments.
    for n in [4, 6, 5] {
        append(&mut journal, &mut inputs, n, |s| 16 + (s % 33) as usize);
    }
    drop(journal);
    assert_prefix(&read_all(dir), &inputs);
    let (_, report) = open(dir, MAX);
    assert_eq!(report.checkpoint_seq, sealed_head(dir));
    assert!(report.checkpoint_seq > covered);
    assert_eq!(report.records, inputs.len() as u64);
    assert_eq!(verify(dir).expect("verify").records, inputs.len() as u64);
}

#[test]
fn a_full_verification_at_open_writes_the_checkpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let inputs = build(dir);
    remove_checkpoint(dir);
    let (_, report) = open(dir, MAX);
    assert_eq!(report.checkpoint_seq, 0);
    assert_eq!(report.records_verified, inputs.len() as u64);
    let (_, report) = open(dir, MAX);
    assert_eq!(report.checkpoint_seq, sealed_head(dir));
    assert_eq!(report.records_verified, inputs.len() as u64 - sealed_head(dir));
}

#[test]
fn an_edit_inside_a_covered_segment_is_left_to_verify() {
    // The attack-table row, as documented: root on the host who edits a record inside a
    // sealed, checkpointed segment is not seen by the start; `verify` (and the witness) see it.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    build(dir);
    let at = locations(dir)[2].clone();
    flip_byte(&at.segment, at.offset + RECORD_HEADER_LEN as u64);
    let (_, report) = open(dir, MAX);
    assert!(report.checkpoint_seq > at.seq);
    let err = verify(dir).expect_err("verify checks every record");
    assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&file_name(&at.segment)), "{msg}");
    assert!(msg.contains(&format!(" at offset {} ", at.offset)), "{msg}");
}

#[test]
fn a_covered_segment_removed_truncated_or_with_another_header_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    build(tmp.path());
    let segs = segments(tmp.path());
    let locs = locations(tmp.path());
    let last_covered: Location = locs
        .iter()
        .rfind(|l| l.seq == sealed_head(tmp.path()))
        .expect("records")
        .clone();
    type Damage = Box<dyn Fn(&Path)>;
    let name = |i: usize| file_name(&segs[i]);
    let cases: Vec<(&str, String, Damage)> = vec![
        (
            "first segment removed",
            name(0),
            Box::new({
                let f = name(0);
                move |d| fs::remove_file(d.join(&f)).expect("remove")
            }),
        ),
        (
            "middle segment removed",
            name(1),
            Box::new({
                let f = name(1);
                move |d| fs::remove_file(d.join(&f)).expect("remove")
            }),
        ),
        (
            "middle segment cut short",
            name(1),
            Box::new({
                let f = name(1);
                move |d| {
                    let file = fs::OpenOptions::new().write(true).open(d.join(&f)).expect("open");
                    let len = file.metadata().expect("stat").len();
                    file.set_len(len - 1).expect("truncate");
                }
            }),
        ),
        (
            "middle segment grown",
            name(1),
            Box::new({
                let f = name(1);
                move |d| {
                    let file = fs::OpenOptions::new().write(true).open(d.join(&f)).expect("open");
                    let len = file.metadata().expect("stat").len();
                    file.set_len(len + 1).expect("grow");
                }
            }),
        ),
        (
            "segment header byte flipped",
            name(2),
            Box::new({
                let f = name(2);
                move |d| flip_byte(&d.join(&f), 30)
            }),
        ),
        (
            "last covered record changed (its crc recomputed)",
            file_name(&last_covered.segment),
            Box::new({
                let at = last_covered.clone();
                move |d| {
                    let path = d.join(file_name(&at.segment));
                    let mut bytes = fs::read(&path).expect("read");
                    let (start, end) = (at.offset as usize, at.end as usize);
                    bytes[start + RECORD_HEADER_LEN] ^= 1;
                    let crc = crc32c::crc32c_append(
                        crc32c::crc32c(&bytes[start..start + 4]),
                        &bytes[start + 8..end],
                    );
                    bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
                    fs::write(&path, bytes).expect("write");
                }
            }),
        ),
    ];
    for (what, segment, damage) in cases {
        let copy = copy(tmp.path());
        damage(copy.path());
        let err = open_err(copy.path());
        assert!(
            matches!(err, JournalError::CheckpointMismatch { .. }),
            "{what}: {err}"
        );
        assert!(err.to_string().contains(&segment), "{what}: {err}");
    }
}

#[test]
fn a_journal_behind_its_checkpoint_is_refused() {
    // The checkpoint names records that were durable when it was written. A journal that no
    // longer has them lost acknowledged history (its newest segments deleted, or an older
    // copy restored over it): refused, as a snapshot ahead of the journal is, not opened as
    // the shorter journal a full verification alone would accept.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    build(dir);
    let segs = segments(dir);
    for lost in [1, 2] {
        let copy = copy(dir);
        for s in &segs[segs.len() - lost..] {
            fs::remove_file(copy.path().join(file_name(s))).expect("remove");
        }
        let err = open_err(copy.path());
        assert!(
            matches!(err, JournalError::CheckpointMismatch { .. }),
            "{lost}: {err}"
        );
        assert!(
            verify(copy.path()).is_ok(),
            "the shorter journal is whole in itself"
        );
    }

    // A checkpoint from another journal does not match this one's segments either.
    let other = tempfile::tempdir().expect("tempdir");
    let mut inputs = Vec::new();
    let (mut journal, _) = open(other.path(), MAX);
    for n in [5, 7, 3, 9, 4, 6, 2, 8, 5, 3] {
        append(&mut journal, &mut inputs, n, |s| 40 + (s % 5) as usize);
    }
    drop(journal);
    let copy = copy(dir);
    fs::copy(
        other.path().join(CHECKPOINT_FILE_NAME),
        copy.path().join(CHECKPOINT_FILE_NAME),
    )
    .expect("copy checkpoint");
    let err = open_err(copy.path());
    assert!(matches!(err, JournalError::CheckpointMismatch { .. }), "{err}");
}

#[test]
fn a_damaged_checkpoint_falls_back_to_a_full_verification() {
    let tmp = tempfile::tempdir().expect("tempdir");
    build(tmp.path());
    let total = read_all(tmp.path()).len() as u64;
    let checkpoint = fs::read(tmp.path().join(CHECKPOINT_FILE_NAME)).expect("checkpoint");
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage)> = vec![
        ("byte flipped", Box::new(|b| b[20] ^= 0x40)),
        (
            "last byte flipped",
            Box::new(|b| *b.last_mut().expect("bytes") ^= 1),
        ),
        ("truncated", Box::new(|b| b.truncate(b.len() - 7))),
        ("empty", Box::new(|b| b.clear())),
        ("garbage", Box::new(|b| b.iter_mut().for_each(|x| *x = 0xAB))),
    ];
    for (what, damage) in cases {
        let copy = copy(tmp.path());
        let mut bytes = checkpoint.clone();
        damage(&mut bytes);
        fs::write(copy.path().join(CHECKPOINT_FILE_NAME), &bytes).expect("write");
        let (_, report) = open(copy.path(), MAX);
        assert_eq!(report.checkpoint_seq, 0, "{what}");
        assert_eq!(report.records_verified, total, "{what}");
        // And it is written again, whole.
        let (_, report) = open(copy.path(), MAX);
        assert_eq!(report.checkpoint_seq, sealed_head(copy.path()), "{what}");

        // Never trusting less: with the checkpoint damaged, damage anywhere is found.
        let copy = self::copy(tmp.path());
        fs::write(copy.path().join(CHECKPOINT_FILE_NAME), &bytes).expect("write");
        let at = locations(copy.path())[1].clone();
        flip_byte(&at.segment, at.offset + 4);
        let err = open_err(copy.path());
        assert!(matches!(err, JournalError::Corrupt { .. }), "{what}: {err}");
    }
}

#[test]
fn a_torn_tail_after_the_checkpoint_is_still_repaired() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let inputs = build(dir);
    let last = segments(dir).pop().expect("segments");
    let end = locations(dir).last().expect("records").end;
    // Half a record's worth of bytes of an interrupted write after the last record.
    let mut bytes = fs::read(&last).expect("read");
    bytes.truncate(end as usize);
    bytes.extend_from_slice(&[0x5A; 30]);
    fs::write(&last, bytes).expect("write");

    let (_, report) = open(dir, MAX);
    assert_eq!(report.checkpoint_seq, sealed_head(dir));
    let torn = report.torn_tail.expect("torn tail reported");
    assert_eq!(torn.offset, end);
    assert_eq!(torn.bytes_dropped, 30);
    assert_eq!(report.records, inputs.len() as u64);
    assert_prefix(&read_all(dir), &inputs);
    assert_eq!(fs::metadata(&last).expect("stat").len(), end);

    // Damage after the checkpoint that is not a torn tail is still refused.
    let at = locations(dir).last().expect("records").clone();
    let first_after = locations(dir)
        .into_iter()
        .find(|l| l.seq == sealed_head(dir) + 1)
        .expect("records after the checkpoint");
    assert!(
        first_after.seq < at.seq,
        "the test needs two records after the checkpoint"
    );
    flip_byte(&first_after.segment, first_after.offset + 4);
    let err = open_err(dir);
    assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
}

#[test]
fn verify_and_checkpoint_records_what_it_verified() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let inputs = build(dir);
    remove_checkpoint(dir);
    let (report, covered) = kinko_journal::verify_and_checkpoint(dir).expect("verify");
    assert_eq!(report.records, inputs.len() as u64);
    assert_eq!(covered, Some(sealed_head(dir)));
    let (_, opened) = open(dir, MAX);
    assert_eq!(opened.checkpoint_seq, sealed_head(dir));
    assert_eq!(opened.records_verified, inputs.len() as u64 - sealed_head(dir));

    // A journal that fails verification gets no checkpoint.
    let copy = copy(dir);
    remove_checkpoint(copy.path());
    let at = locations(copy.path())[3].clone();
    flip_byte(&at.segment, at.offset + 4);
    assert!(kinko_journal::verify_and_checkpoint(copy.path()).is_err());
    assert!(!copy.path().join(CHECKPOINT_FILE_NAME).exists());

    // A single segment has nothing sealed to record.
    let single = tempfile::tempdir().expect("tempdir");
    let mut inputs = Vec::new();
    let (mut journal, _) = open(single.path(), 1 << 20);
    append(&mut journal, &mut inputs, 5, |_| 10);
    drop(journal);
    let (_, covered) = kinko_journal::verify_and_checkpoint(single.path()).expect("verify");
    assert_eq!(covered, None);
    assert!(!single.path().join(CHECKPOINT_FILE_NAME).exists());
}
