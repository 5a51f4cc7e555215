//! Helpers shared by the tests.

use std::fs;
use std::path::{Path, PathBuf};

use kinko_journal::{
    read_from, Journal, JournalConfig, Record, RecordIn, RecoveryReport, GENESIS_HASH, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};

/// An input record the tests keep to compare against what is read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub timestamp_ns: u64,
    pub kind: u16,
    pub payload: Vec<u8>,
}

/// A deterministic payload of `len` bytes that differs per `seed`.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn config(dir: &Path, segment_bytes_max: u64) -> JournalConfig {
    JournalConfig {
        segment_bytes_max,
        ..JournalConfig::new(dir)
    }
}

pub fn open(dir: &Path, segment_bytes_max: u64) -> (Journal, RecoveryReport) {
    match Journal::open(config(dir, segment_bytes_max)) {
        Ok(opened) => opened,
        Err(e) => panic!("open failed: {e}"),
    }
}

/// Builds a batch of `n` inputs continuing after `inputs`, appends it, records the inputs.
pub fn append(
    journal: &mut Journal,
    inputs: &mut Vec<Input>,
    n: usize,
    payload_len: impl Fn(u64) -> usize,
) -> u64 {
    let start = inputs.len() as u64;
    let batch: Vec<Input> = (start..start + n as u64)
        .map(|i| Input {
            timestamp_ns: 1_000 + i * 3,
            kind: (i % 7) as u16,
            payload: payload(i, payload_len(i)),
        })
        .collect();
    let records: Vec<RecordIn<'_>> = batch
        .iter()
        .map(|r| RecordIn {
            timestamp_ns: r.timestamp_ns,
            kind: r.kind,
            payload: &r.payload,
        })
        .collect();
    let first = journal.append_batch(&records).expect("append");
    assert_eq!(first, start + 1, "first seq of the batch");
    inputs.extend(batch);
    first
}

pub fn read_all(dir: &Path) -> Vec<Record> {
    read_from(dir, 1)
        .expect("read_from")
        .collect::<Result<Vec<_>, _>>()
        .expect("read records")
}

/// Asserts that `records` are exactly `inputs[..records.len()]`, numbered from 1 and chained.
pub fn assert_prefix(records: &[Record], inputs: &[Input]) {
    assert!(records.len() <= inputs.len(), "more records than were written");
    let mut prev = GENESIS_HASH;
    for (i, (record, input)) in records.iter().zip(inputs).enumerate() {
        assert_eq!(record.seq, i as u64 + 1);
        assert_eq!(record.timestamp_ns, input.timestamp_ns, "seq {}", record.seq);
        assert_eq!(record.kind, input.kind, "seq {}", record.seq);
        assert_eq!(record.payload, input.payload, "seq {}", record.seq);
        assert_eq!(record.prev_hash, prev, "chain at seq {}", record.seq);
        prev = record.hash;
    }
}

/// Segment files of `dir`, sorted.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// Where a record lives.
#[derive(Clone, Debug)]
pub struct Location {
    pub segment: PathBuf,
    pub offset: u64,
    pub end: u64,
    pub seq: u64,
}

/// Locations of all records, derived from the documented layout and the records read back.
pub fn locations(dir: &Path) -> Vec<Location> {
    let records = read_all(dir);
    let segs = segments(dir);
    let mut out = Vec::new();
    let mut offset = 0;
    let mut seg_index = 0;
    for record in &records {
        while seg_index + 1 < segs.len() && first_seq_of(&segs[seg_index + 1]) <= record.seq {
            seg_index += 1;
            offset = 0;
        }
        if offset == 0 {
            offset = SEGMENT_HEADER_LEN as u64;
        }
        let end = offset + (RECORD_HEADER_LEN + record.payload.len()) as u64;
        out.push(Location {
            segment: segs[seg_index].clone(),
            offset,
            end,
            seq: record.seq,
        });
        offset = end;
    }
    out
}

pub fn first_seq_of(segment: &Path) -> u64 {
    segment
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("segment name")
}

pub fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).expect("read segment");
    bytes[offset as usize] ^= 0x40;
    fs::write(path, bytes).expect("write segment");
}

pub fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("file name")
        .to_string()
}

/// Copies the files of `from` into the empty directory `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("dir entry");
        fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// Removes the journal's verified-prefix checkpoint (if any), so that the next open verifies
/// everything.
pub fn remove_checkpoint(dir: &Path) {
    match fs::remove_file(dir.join(kinko_journal::CHECKPOINT_FILE_NAME)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("remove checkpoint: {e}"),
        _ => {}
    }
}
