//! The LOBWKLD1 standard workload (see shared/bench/README.md): building the generator, making a
//! stream, reading its EXPECT line, and driving an order book with it. Shared by the oracle test
//! and `benches/lob.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use kinko_core::book::{
    BookEvent, NewOrder, OrderBook, OrderId, OwnerId, Price, Qty, Side, Stp, TimeInForce,
};
/// One LOBWKLD1 record (format: shared/bench/README.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cmd {
    pub kind: u8,
    pub side: u8,
    pub qty: u32,
    pub id: u64,
    pub price: u64,
}

const LIMIT: u8 = 0;
const MARKET: u8 = 2;
const BUY: u8 = 0;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Build the generator (release) and return its path.
pub fn lobgen_binary() -> PathBuf {
    let ws = workspace();
    let target = ws.join("target/lobgen");
    // Build a copy: the shared folder may be read-only (cargo writes a lock file).
    let src = ws.join("../shared/bench/lobgen");
    let copy = target.join("gen");
    std::fs::create_dir_all(copy.join("src/bin")).expect("create generator copy");
    for f in ["Cargo.toml", "src/lib.rs", "src/bin/lobgen.rs"] {
        let mut from =
            std::fs::read(src.join(f)).unwrap_or_else(|e| panic!("read {}: {e}", src.join(f).display()));
        if f == "Cargo.toml" {
            // A workspace of its own, not a member of kinko's.
            from.extend_from_slice(b"\n[workspace]\n");
        }
        if std::fs::read(copy.join(f)).ok().as_deref() != Some(&from[..]) {
            std::fs::write(copy.join(f), from).expect("write generator copy");
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .arg("build")
        .arg("--release")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(copy.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo to build lobgen");
    assert!(status.success(), "building lobgen failed: {status}");
    target.join("release/lobgen")
}

/// Generate a stream of `n` commands with `seed` into `out` (and `out.summary.txt`).
pub fn generate(out: &Path, n: u64, seed: u64) {
    let bin = lobgen_binary();
    let output = Command::new(&bin)
        .arg(out)
        .arg(n.to_string())
        .arg(seed.to_string())
        .output()
        .expect("run lobgen");
    assert!(
        output.status.success(),
        "lobgen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The end state of a run, as lobgen's EXPECT line states it (-1 = no best price).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndState {
    pub trades: u64,
    pub volume: u64,
    pub resting_orders: u64,
    pub resting_qty: u64,
    pub best_bid: i64,
    pub best_ask: i64,
    pub bid_levels: u64,
    pub ask_levels: u64,
}

/// Parse the EXPECT line of `<workload>.summary.txt`.
pub fn expected(workload: &Path) -> EndState {
    let mut summary = workload.as_os_str().to_owned();
    summary.push(".summary.txt");
    let text = std::fs::read_to_string(&summary).expect("read the workload summary");
    let line = text
        .lines()
        .find(|l| l.starts_with("EXPECT "))
        .expect("EXPECT line");
    let mut e = EndState::default();
    for kv in line.split_whitespace().skip(1) {
        let (k, v) = kv.split_once('=').expect("key=value");
        let n: i64 = v.parse().expect("integer");
        let u = u64::try_from(n).unwrap_or(0);
        match k {
            "trades" => e.trades = u,
            "volume" => e.volume = u,
            "resting_orders" => e.resting_orders = u,
            "resting_qty" => e.resting_qty = u,
            "best_bid" => e.best_bid = n,
            "best_ask" => e.best_ask = n,
            "bid_levels" => e.bid_levels = u,
            "ask_levels" => e.ask_levels = u,
            _ => panic!("unknown EXPECT key {k}"),
        }
    }
    e
}

/// Decode the whole workload into memory.
pub fn load(workload: &Path) -> Vec<Cmd> {
    let buf = std::fs::read(workload).expect("read workload");
    assert!(buf.len() >= 64 && &buf[..8] == b"LOBWKLD1", "not a LOBWKLD1 file");
    let n = u64::from_le_bytes(buf[16..24].try_into().expect("8 bytes"));
    let body = &buf[64..];
    assert_eq!(body.len() as u64, n * 24, "size does not match the header");
    body.chunks_exact(24)
        .map(|r| Cmd {
            kind: r[0],
            side: r[1],
            qty: u32::from_le_bytes(r[4..8].try_into().expect("4 bytes")),
            id: u64::from_le_bytes(r[8..16].try_into().expect("8 bytes")),
            price: u64::from_le_bytes(r[16..24].try_into().expect("8 bytes")),
        })
        .collect()
}

/// Counters kept while driving a book.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    pub trades: u64,
    pub volume: u64,
}

impl Tally {
    #[inline]
    pub fn count(&mut self, events: &[BookEvent]) {
        for e in events {
            if let BookEvent::Fill { qty, .. } = e {
                self.trades += 1;
                self.volume += qty.0;
            }
        }
    }
}

/// Apply one workload command: LIMIT -> GTC, MARKET -> market by qty, CANCEL -> cancel. Each
/// order gets its own owner (the stream has none), so self-trade prevention never applies.
#[inline]
pub fn apply<B: OrderBook>(book: &mut B, c: &Cmd, out: &mut Vec<BookEvent>) {
    let side = if c.side == BUY { Side::Buy } else { Side::Sell };
    let (limit, tif) = match c.kind {
        LIMIT => (Some(Price(c.price)), TimeInForce::Gtc),
        MARKET => (None, TimeInForce::Ioc),
        _ => {
            book.cancel(OrderId(c.id), out);
            return;
        }
    };
    let order = NewOrder {
        id: OrderId(c.id),
        // Truncation is fine: owners only need to differ between orders that meet.
        owner: OwnerId(c.id as u32),
        side,
        limit,
        qty: Qty(u64::from(c.qty)),
        quote_budget: None,
        tif,
        stp: Stp::CancelNewest,
    };
    book.submit(&order, out);
}

/// Drive `book` through `cmds`, counting fills.
pub fn run<B: OrderBook>(book: &mut B, cmds: &[Cmd]) -> Tally {
    let mut out = Vec::with_capacity(64);
    let mut tally = Tally::default();
    for c in cmds {
        out.clear();
        apply(book, c, &mut out);
        tally.count(&out);
    }
    tally
}

/// The end state of `book` after a run that produced `tally`.
pub fn end_state<B: OrderBook>(book: &B, tally: Tally) -> EndState {
    let orders = book.orders();
    let mut levels = Vec::new();
    book.depth(Side::Buy, usize::MAX, &mut levels);
    let bid_levels = levels.len() as u64;
    book.depth(Side::Sell, usize::MAX, &mut levels);
    let ask_levels = levels.len() as u64;
    let best = |p: Option<Price>| p.map_or(-1, |p| i64::try_from(p.0).unwrap_or(i64::MAX));
    EndState {
        trades: tally.trades,
        volume: tally.volume,
        resting_orders: book.len() as u64,
        resting_qty: orders.iter().map(|o| o.qty.0).sum(),
        best_bid: best(book.best_bid()),
        best_ask: best(book.best_ask()),
        bid_levels,
        ask_levels,
    }
}
