//! A real full disk: the journal on a small tmpfs, filled by appends. A batch refused with
//! `Full` is never in the journal, nothing acknowledged is lost, and once space is freed the
//! same writer appends again. Needs root (mount), as CI has.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kinko_journal::{JournalError, RecordIn};

use crate::common::{config, payload, read_all, Input};

/// A tmpfs of `size_kib` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_kib: u64) -> Tmpfs {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("mnt");
        fs::create_dir(&dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs failed (the test needs root): {status}"
        );
        Tmpfs { dir, _parent: parent }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Writes zeros to `path` until the disk is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = fs::File::create(path).expect("filler");
    let chunk = [0u8; 4096];
    let mut n = 0u64;
    // Bounded: the tmpfs is a few MiB.
    for _ in 0..1_000_000 {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filler: {e}"),
        }
    }
    let _ = f.sync_all();
    n
}

/// Appends a batch; on success its inputs are acknowledged, on `Full` refused.
fn try_append(
    journal: &mut kinko_journal::Journal,
    next: &mut u64,
    n: usize,
    acked: &mut Vec<Input>,
    refused: &mut Vec<Input>,
) -> bool {
    let batch: Vec<Input> = (*next..*next + n as u64)
        .map(|i| Input {
            timestamp_ns: 1_000 + i,
            kind: 1,
            payload: payload(i, 700 + (i % 5) as usize * 100),
        })
        .collect();
    *next += n as u64;
    let records: Vec<RecordIn<'_>> = batch
        .iter()
        .map(|r| RecordIn {
            timestamp_ns: r.timestamp_ns,
            kind: r.kind,
            payload: &r.payload,
        })
        .collect();
    match journal.append_batch(&records) {
        Ok(first) => {
            assert_eq!(first, acked.len() as u64 + 1);
            acked.extend(batch);
            true
        }
        Err(e) => {
            assert!(
                matches!(e, JournalError::Full { .. }),
                "a full disk must be reported as Full: {e}"
            );
            assert!(!e.batch_may_be_durable());
            assert!(!journal.is_poisoned(), "a full disk does not poison");
            refused.extend(batch);
            false
        }
    }
}

fn assert_exactly(dir: &Path, acked: &[Input], refused: &[Input]) {
    let records = read_all(dir);
    assert_eq!(
        records.len(),
        acked.len(),
        "exactly the acknowledged records survive"
    );
    for (r, i) in records.iter().zip(acked) {
        assert_eq!(
            (r.timestamp_ns, r.kind, &r.payload),
            (i.timestamp_ns, i.kind, &i.payload)
        );
    }
    for r in &records {
        assert!(
            !refused.iter().any(|x| x.payload == r.payload),
            "record seq {} was refused but is in the journal",
            r.seq
        );
    }
}

#[test]
fn a_full_disk_refuses_batches_without_writing_them_and_appends_resume_when_space_returns() {
    let fs_ = Tmpfs::mount(1024);
    let dir = fs_.dir.join("journal");
    let filler = fs_.dir.join("filler");
    let (mut journal, _) = kinko_journal::Journal::open(config(&dir, 128 << 10)).expect("open");
    // Leave about 600 KiB for the journal: several segments, then a full disk.
    {
        let written = fill(&filler);
        let f = fs::OpenOptions::new().write(true).open(&filler).unwrap();
        f.set_len(written.saturating_sub(600 << 10)).unwrap();
    }

    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    let mut next = 0u64;
    let mut refusals = 0;
    // Batches of 1..=9 records until twenty refusals in a row (smaller batches may still fit
    // after a larger one was refused; the segment grows by what a batch needs at the end).
    for round in 0..10_000usize {
        if try_append(&mut journal, &mut next, 1 + round % 9, &mut acked, &mut refused) {
            refusals = 0;
        } else {
            refusals += 1;
            if refusals == 20 {
                break;
            }
        }
    }
    assert_eq!(refusals, 20, "the disk never filled");
    assert!(acked.len() > 100, "only {} records fit", acked.len());
    assert!(!refused.is_empty());
    // What is on disk now: every acknowledged record, no refused one.
    assert_exactly(&dir, &acked, &refused);

    // Space comes back: the same writer appends again, without a restart.
    fs::remove_file(&filler).unwrap();
    journal.reserve(8 << 10).expect("room once space is freed");
    for _ in 0..50 {
        assert!(try_append(&mut journal, &mut next, 5, &mut acked, &mut refused));
    }
    drop(journal);

    // A restart recovers exactly the acknowledged records.
    let (journal, report) = kinko_journal::Journal::open(config(&dir, 128 << 10)).expect("reopen");
    assert_eq!(report.records, acked.len() as u64);
    assert!(report.torn_tail.is_none(), "{:?}", report.torn_tail);
    assert_eq!(journal.next_seq(), acked.len() as u64 + 1);
    assert_exactly(&dir, &acked, &refused);
    assert!(kinko_journal::verify(&dir).is_ok());
}

#[test]
fn a_journal_opened_on_a_full_disk_refuses_and_then_resumes() {
    let fs_ = Tmpfs::mount(2048);
    let dir = fs_.dir.join("journal");
    let filler = fs_.dir.join("filler");
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    let mut next = 0u64;
    {
        let (mut journal, _) = kinko_journal::Journal::open(config(&dir, 256 << 10)).expect("open");
        for _ in 0..20 {
            assert!(try_append(&mut journal, &mut next, 4, &mut acked, &mut refused));
        }
    }
    fill(&filler);
    // Opening needs no space; the first batch that needs room is refused, and so is a
    // reservation, until space returns.
    let (mut journal, report) =
        kinko_journal::Journal::open(config(&dir, 256 << 10)).expect("open when full");
    assert_eq!(report.records, acked.len() as u64);
    let mut refused_once = false;
    for _ in 0..1_000 {
        if !try_append(&mut journal, &mut next, 9, &mut acked, &mut refused) {
            refused_once = true;
            break;
        }
    }
    assert!(refused_once, "the disk never filled");
    assert!(matches!(
        journal.reserve(64 << 10),
        Err(JournalError::Full { .. })
    ));
    fs::remove_file(&filler).unwrap();
    journal.reserve(64 << 10).expect("room once space is freed");
    assert!(try_append(&mut journal, &mut next, 9, &mut acked, &mut refused));
    drop(journal);
    let (_, report) = kinko_journal::Journal::open(config(&dir, 256 << 10)).expect("reopen");
    assert_eq!(report.records, acked.len() as u64);
    assert_exactly(&dir, &acked, &refused);
}
