//! Journal throughput on the real disk: durable group-commit appends at several batch sizes,
//! and verified replay.
//!
//! Run with `cargo bench -p kinko-journal`; criterion prints records/s as "thrpt".

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kinko_journal::{read_from, verify, Journal, JournalConfig, RecordIn};

/// About the size of a postcard-encoded order command.
const PAYLOAD_BYTES: usize = 48;
const REPLAY_RECORDS: u64 = 1_000_000;

fn temp_dir() -> tempfile::TempDir {
    // The target directory is on the real disk (not a tmpfs), which is what fsync should hit.
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir")
}

fn payload(i: u64) -> [u8; PAYLOAD_BYTES] {
    let mut p = [0u8; PAYLOAD_BYTES];
    for (j, b) in p.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(j as u8);
    }
    p
}

fn batch_of(payloads: &[[u8; PAYLOAD_BYTES]], timestamp_ns: u64) -> Vec<RecordIn<'_>> {
    payloads
        .iter()
        .map(|p| RecordIn {
            timestamp_ns,
            kind: 1,
            payload: p,
        })
        .collect()
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_fsync");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    for batch in [1usize, 100, 10_000] {
        let dir = temp_dir();
        let (mut journal, _) = Journal::open(JournalConfig::new(dir.path())).expect("open");
        let payloads: Vec<[u8; PAYLOAD_BYTES]> = (0..batch as u64).map(payload).collect();
        let mut ts = 0u64;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| {
            b.iter(|| {
                ts += 1;
                black_box(journal.append_batch(&batch_of(&payloads, ts)).expect("append"))
            });
        });
    }
    group.finish();
}

fn write_replay_journal(dir: &Path) {
    let (mut journal, _) = Journal::open(JournalConfig::new(dir)).expect("open");
    let payloads: Vec<[u8; PAYLOAD_BYTES]> = (0..10_000).map(payload).collect();
    for batch in 0..REPLAY_RECORDS / 10_000 {
        journal.append_batch(&batch_of(&payloads, batch)).expect("append");
    }
}

fn bench_replay(c: &mut Criterion) {
    let dir = temp_dir();
    write_replay_journal(dir.path());
    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(REPLAY_RECORDS));
    group.bench_function("read_from", |b| {
        b.iter(|| {
            let mut n = 0u64;
            let mut bytes = 0usize;
            for record in read_from(dir.path(), 1).expect("read_from") {
                let record = record.expect("record");
                bytes += record.payload.len();
                n += 1;
            }
            assert_eq!(n, REPLAY_RECORDS);
            black_box(bytes)
        });
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            let report = verify(dir.path()).expect("verify");
            assert_eq!(report.records, REPLAY_RECORDS);
            black_box(report.head_hash)
        });
    });
    group.finish();
}

criterion_group!(benches, bench_append, bench_replay);
criterion_main!(benches);
