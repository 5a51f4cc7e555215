//! The order book on the standard LOBWKLD1 stream (shared/bench/README.md).
//!
//!     cargo bench -p kinko-core --bench lob
//!     LOB_WORKLOAD=/path/to/wl.bin cargo bench -p kinko-core --bench lob
//!
//! Without `LOB_WORKLOAD`, uses (and if missing generates) `target/lobgen/wl_10m.bin`. The stream
//! is decoded into memory first. Then: a throughput pass over all commands on a fresh `FastBook`
//! (fills counted, end state checked against the EXPECT line, a mismatch aborts), a latency pass on
//! another fresh `FastBook` timing each command with the TSC, then the same two passes for `RefBook`
//! (skipped with `LOB_SKIP_REF=1`).

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

fn throughput<B: OrderBook>(
    name: &str,
    mut book: B,
    cmds: &[workload::Cmd],
    expected: workload::EndState,
    stats: impl Fn(&B) -> String,
) {
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
}

fn latency<B: OrderBook>(name: &str, mut book: B, cmds: &[workload::Cmd], expected: workload::EndState) {
    let mut lat: Vec<u32> = Vec::with_capacity(cmds.len());
    let mut out = Vec::with_capacity(64);
    let mut tally = workload::Tally::default();
    for c in cmds {
        out.clear();
        let t0 = std::time::Instant::now();
        workload::apply(&mut book, c, &mut out);
        lat.push(u32::try_from(t0.elapsed().as_nanos()).unwrap_or(u32::MAX));
        tally.count(&out);
    }
    assert_eq!(
        workload::end_state(&book, tally),
        expected,
        "{name}: latency pass: wrong end state"
    );
    lat.sort_unstable();
    let n = lat.len();
    let p = |q: u64| lat[((n as u64 * q / 1000) as usize).min(n - 1)];
    println!(
        "{name:<8} latency:    p50_ns={} p99_ns={} p99.9_ns={} max_ns={} (monotonic clock per command, ~20 ns of it the clock itself)",
        p(500),
        p(990),
        p(999),
        lat[n - 1]
    );
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

    throughput("FastBook", FastBook::new(), &cmds, expected, |b| {
        format!("{:?}", b.stats())
    });
    latency("FastBook", FastBook::new(), &cmds, expected);
    if std::env::var_os("LOB_SKIP_REF").is_none() {
        throughput("RefBook", RefBook::new(), &cmds, expected, |b| {
            format!("{} resting", b.len())
        });
        latency("RefBook", RefBook::new(), &cmds, expected);
    }
}
