//! The order book on the standard LOBWKLD1 stream (shared/bench/README.md).
//!
//!     cargo bench -p kinko-core --bench lob
//!     LOB_WORKLOAD=/path/to/wl.bin cargo bench -p kinko-core --bench lob
//!     LOB_PASSES=5 LOB_SKIP_REF=1 cargo bench -p kinko-core --bench lob
//!
//! Without `LOB_WORKLOAD`, uses (and if missing generates) `target/lobgen/wl_10m.bin`. The stream
//! is decoded into memory first. Then: a throughput pass over all commands on a fresh `FastBook`
//! (fills counted, end state checked against the EXPECT line, a mismatch aborts), a latency pass on
//! another fresh `FastBook` timing each command with the monotonic clock and reporting mean and
//! percentiles per command kind (limit, market, cancel) and overall, the mean also less the
//! measured cost of the clock reads themselves; then the same two passes for `RefBook` (skipped
//! with `LOB_SKIP_REF=1`). `LOB_PASSES=n` repeats both passes `n` times on fresh books and ends
//! with the medians (throughput, and per kind the mean and p99), for a machine whose figures
//! wander from one pass to the next.

#[path = "../tests/it/book_workload.rs"]
mod workload;

use std::path::PathBuf;
use std::time::Instant;

use kinko_core::book::{FastBook, OrderBook, RefBook};

/// `ops` per `ns` as "M cmd/s" with three decimals, in integers.
fn mops(ops: u64, ns: u128) -> String {
    let per_s = u128::from(ops) * 1_000_000_000 / ns.max(1);
    format!("{}.{:03}", per_s / 1_000_000, per_s / 1_000 % 1_000)
}

/// One throughput pass on a fresh book; returns M cmd/s in thousandths.
fn throughput<B: OrderBook>(
    name: &str,
    mut book: B,
    cmds: &[workload::Cmd],
    expected: workload::EndState,
    stats: impl Fn(&B) -> String,
) -> u64 {
    let t0 = Instant::now();
    let tally = workload::run(&mut book, cmds);
    let ns = t0.elapsed().as_nanos();
    let end = workload::end_state(&book, tally);
    assert_eq!(
        end, expected,
        "{name}: wrong end state, the numbers below would be worthless"
    );
    println!(
        "{name:<8} throughput: {} M cmd/s ({} commands in {} ms, {} fills) end state OK",
        mops(cmds.len() as u64, ns),
        cmds.len(),
        ns / 1_000_000,
        tally.trades
    );
    println!("{name:<8} {}", stats(&book));
    u64::try_from(u128::from(cmds.len() as u64) * 1_000_000 / ns.max(1)).unwrap_or(u64::MAX)
}

/// Nanoseconds of one command, per command kind (LOBWKLD1's 0 = limit, 1 = cancel, 2 = market).
const KINDS: [(&str, u8); 3] = [("limit", 0), ("market", 2), ("cancel", 1)];

/// Mean cost of the timing itself: two clock reads around nothing.
fn clock_overhead_ns() -> u64 {
    let n = 1_000_000u64;
    let mut total = 0u64;
    for _ in 0..n {
        let t0 = Instant::now();
        total += u64::try_from(std::hint::black_box(t0).elapsed().as_nanos()).unwrap_or(u64::MAX);
    }
    total / n
}

/// Per kind (in `KINDS` order, then all commands): mean less the clock's cost, and p99, in ns.
type KindLatency = [(u64, u32); 4];

fn latency<B: OrderBook>(
    name: &str,
    mut book: B,
    cmds: &[workload::Cmd],
    expected: workload::EndState,
) -> KindLatency {
    let mut lat: Vec<u32> = Vec::with_capacity(cmds.len());
    let mut out = Vec::with_capacity(64);
    let mut tally = workload::Tally::default();
    for c in cmds {
        out.clear();
        let t0 = Instant::now();
        workload::apply(&mut book, c, &mut out);
        lat.push(u32::try_from(t0.elapsed().as_nanos()).unwrap_or(u32::MAX));
        tally.count(&out);
    }
    assert_eq!(
        workload::end_state(&book, tally),
        expected,
        "{name}: latency pass: wrong end state"
    );
    let clock = clock_overhead_ns();
    let mut result = KindLatency::default();
    for (r, (kind, code)) in result.iter_mut().zip(KINDS) {
        let mut of_kind: Vec<u32> = cmds
            .iter()
            .zip(&lat)
            .filter(|(c, _)| c.kind == code)
            .map(|(_, l)| *l)
            .collect();
        *r = print_latency(&format!("{name:<8} {kind:<7}"), &mut of_kind, clock);
    }
    result[3] = print_latency(&format!("{name:<8} all    "), &mut lat, clock);
    result
}

/// Mean (raw, and less the clock's own cost) and percentiles of `lat`; returns the mean less the
/// clock and the p99.
fn print_latency(label: &str, lat: &mut [u32], clock: u64) -> (u64, u32) {
    let n = lat.len();
    if n == 0 {
        println!("{label} latency: no commands");
        return (0, 0);
    }
    let mean = lat.iter().map(|&l| u64::from(l)).sum::<u64>() / n as u64;
    lat.sort_unstable();
    let p = |q: u64| lat[((n as u64 * q / 1000) as usize).min(n - 1)];
    println!(
        "{label} latency: n={n} mean_ns={mean} (less clock {clock}: {}) p50_ns={} p99_ns={} p99.9_ns={} max_ns={}",
        mean.saturating_sub(clock),
        p(500),
        p(990),
        p(999),
        lat[n - 1]
    );
    (mean.saturating_sub(clock), p(990))
}

/// The median of `v` (the upper one of an even count).
fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort_unstable();
    v[v.len() / 2]
}

/// `LOB_PASSES` throughput passes and as many latency passes on fresh books, then the medians.
fn passes<B: OrderBook>(
    name: &str,
    new: impl Fn() -> B,
    cmds: &[workload::Cmd],
    expected: workload::EndState,
    stats: impl Fn(&B) -> String,
) {
    let n = std::env::var("LOB_PASSES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let mut tput = Vec::with_capacity(n);
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        tput.push(throughput(name, new(), cmds, expected, &stats));
        lat.push(latency(name, new(), cmds, expected));
    }
    if n == 1 {
        return;
    }
    let t = median(tput.clone());
    let list: Vec<String> = tput
        .iter()
        .map(|t| format!("{}.{:03}", t / 1000, t % 1000))
        .collect();
    println!(
        "{name:<8} median of {n} passes: {}.{:03} M cmd/s (passes: {})",
        t / 1000,
        t % 1000,
        list.join(" ")
    );
    for (i, kind) in ["limit", "market", "cancel", "all"].iter().enumerate() {
        println!(
            "{name:<8} median of {n} passes: {kind:<7} mean_ns={} (less clock) p99_ns={}",
            median(lat.iter().map(|l| l[i].0).collect()),
            median(lat.iter().map(|l| l[i].1).collect()),
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep that cheap.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("lob: skipped (run with cargo bench)");
        return;
    }
    let path = match std::env::var_os("LOB_WORKLOAD") {
        Some(p) => PathBuf::from(p),
        None => {
            let p = workload::workspace().join("target/lobgen/wl_10m.bin");
            if !p.exists() {
                workload::generate(&p, 10_000_000, 42);
            }
            p
        }
    };
    let expected = workload::expected(&path);
    let cmds = workload::load(&path);
    println!(
        "workload {} ({} commands), expecting {expected:?}",
        path.display(),
        cmds.len()
    );

    passes("FastBook", FastBook::new, &cmds, expected, |b| {
        format!("{:?}", b.stats())
    });
    if std::env::var_os("LOB_SKIP_REF").is_none() {
        passes("RefBook", RefBook::new, &cmds, expected, |b| {
            format!("{} resting", b.len())
        });
    }
}
