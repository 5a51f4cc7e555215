//! After an I/O error the writer refuses all further work.

use std::fs;

use kinko_journal::{JournalError, RecordIn};

use crate::common::{append, assert_prefix, open, read_all};

#[test]
fn io_error_poisons_the_journal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("journal");
    let moved = tmp.path().join("moved");
    let mut inputs = Vec::new();
    let (mut journal, _) = open(&dir, 1024);
    append(&mut journal, &mut inputs, 12, |_| 20); // 64 + 12 * 78 = 1000 bytes: the segment is full

    // The next batch needs a new segment file; with the directory gone, creating it fails.
    fs::rename(&dir, &moved).expect("move the journal directory away");
    let record = [RecordIn {
        timestamp_ns: 1_000_000,
        kind: 1,
        payload: b"lost",
    }];
    let err = journal.append_batch(&record).expect_err("rotation must fail");
    assert!(matches!(err, JournalError::NotWritten { .. }), "{err}");
    assert!(journal.is_poisoned());

    // Even with the directory back, the writer stays poisoned.
    fs::rename(&moved, &dir).expect("move it back");
    for _ in 0..2 {
        let err = journal.append_batch(&record).expect_err("poisoned");
        assert!(matches!(err, JournalError::Poisoned), "{err}");
    }
    assert!(matches!(journal.append_batch(&[]), Err(JournalError::Poisoned)));
    assert_eq!(journal.next_seq(), 13);
    drop(journal);

    // Reopening recovers what was acknowledged.
    let (journal, report) = open(&dir, 1024);
    assert_eq!(report.records, 12);
    assert_eq!(journal.next_seq(), 13);
    assert_prefix(&read_all(&dir), &inputs);
}
