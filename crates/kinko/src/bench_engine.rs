//! `kinko bench engine`: the full engine on the standard LOBWKLD1 order stream, in-process or
//! through the durable sequencer, checked against the stream's expected end state.
//!
//! Floating point appears here only to print rates for people; no amount of money is a float.
#![allow(clippy::float_arithmetic)]

use anyhow::{bail, Context};
use kinko_core::book::{OrderBook, OrderId, Side, Stp, TimeInForce};
use kinko_core::engine::{Command, Engine, Event, Reply};
use kinko_core::trading::{ClientOrderId, OrderRef, OrderType, PlaceOrder, TradingEvent};
use kinko_core::{Amount, UserId};
use kinko_engine::benchkit::{funding, setup, MKT, POOL};
use kinko_engine::{recover, EngineConfig, Sequencer, SystemClock};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One command of the stream (format: ../shared/bench/README.md).
#[derive(Clone, Copy)]
struct Cmd {
    kind: u8,
    side: u8,
    qty: u32,
    id: u64,
    price: u64,
}

const LIMIT: u8 = 0;
const CANCEL: u8 = 1;

fn load(path: &Path) -> anyhow::Result<(Vec<Cmd>, u64)> {
    let buf = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if buf.len() < 64 || &buf[..8] != b"LOBWKLD1" {
        bail!("{} is not a LOBWKLD1 file", path.display());
    }
    let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().expect("8 bytes"));
    let n = u64_at(16);
    let max_id = u64_at(32);
    let body = &buf[64..];
    if body.len() as u64 != n * 24 {
        bail!("{}: size does not match its header", path.display());
    }
    let cmds = body
        .chunks_exact(24)
        .map(|r| Cmd {
            kind: r[0],
            side: r[1],
            qty: u32::from_le_bytes(r[4..8].try_into().expect("4 bytes")),
            id: u64::from_le_bytes(r[8..16].try_into().expect("8 bytes")),
            price: u64::from_le_bytes(r[16..24].try_into().expect("8 bytes")),
        })
        .collect();
    Ok((cmds, max_id))
}

/// The EXPECT line of `<workload>.summary.txt` as key → value.
fn expected(path: &Path) -> anyhow::Result<std::collections::BTreeMap<String, i64>> {
    let summary = PathBuf::from(format!("{}.summary.txt", path.display()));
    let text =
        std::fs::read_to_string(&summary).with_context(|| format!("cannot read {}", summary.display()))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("EXPECT "))
        .context("summary has no EXPECT line")?;
    Ok(line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect())
}

/// Buyers are the first half of the pool, sellers the second, cycling per command, so that
/// self-trade prevention never interferes with the stream's expected end state.
fn user_for(side: u8, i: usize) -> UserId {
    let half = POOL / 2;
    let k = (i as u64 / 2) % half;
    if side == 0 {
        UserId(k)
    } else {
        UserId(half + k)
    }
}

fn place(c: &Cmd, user: UserId, client: bool) -> PlaceOrder {
    let side = if c.side == 0 { Side::Buy } else { Side::Sell };
    let order_type = if c.kind == LIMIT {
        OrderType::Limit {
            price: Amount(u128::from(c.price)),
            tif: TimeInForce::Gtc,
        }
    } else {
        OrderType::Market { funds: None }
    };
    PlaceOrder {
        user,
        market: MKT,
        client_id: client.then_some(ClientOrderId(u128::from(c.id))),
        side,
        order_type,
        qty: Some(Amount(u128::from(c.qty))),
        stp: Stp::CancelNewest,
    }
}

#[derive(Default)]
struct Tally {
    trades: u64,
    volume: u64,
    rejects: u64,
}

impl Tally {
    fn events(&mut self, events: &[Event]) {
        for e in events {
            if let Event::Trading(TradingEvent::Trade(t)) = e {
                self.trades += 1;
                self.volume += t.qty.0;
            }
        }
    }
}

fn check_end(engine: &Engine, t: &Tally, path: &Path) -> anyhow::Result<()> {
    let want = expected(path)?;
    let m = engine.trading().market(MKT).context("market")?;
    let resting_qty: u64 = m.book.orders().iter().map(|o| o.qty.0).sum();
    let got = [
        ("trades", t.trades as i64),
        ("volume", t.volume as i64),
        ("resting_orders", m.book.len() as i64),
        ("resting_qty", resting_qty as i64),
        ("best_bid", m.book.best_bid().map_or(-1, |p| p.0 as i64)),
        ("best_ask", m.book.best_ask().map_or(-1, |p| p.0 as i64)),
    ];
    for (k, v) in got {
        if want.get(k) != Some(&v) {
            bail!(
                "end state differs from EXPECT: {k}={v}, expected {:?}",
                want.get(k)
            );
        }
    }
    if t.rejects > 0 {
        bail!("{} commands were rejected", t.rejects);
    }
    engine.check().map_err(|v| anyhow::anyhow!("{v}"))?;
    Ok(())
}

pub fn run(workload: &Path, durable: bool, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let (cmds, max_id) = load(workload)?;
    if durable {
        durable_run(workload, &cmds, dir)
    } else {
        in_process(workload, &cmds, max_id)
    }
}

fn fresh_engine() -> anyhow::Result<(Engine, u64)> {
    let mut e = Engine::new();
    let mut ev = Vec::new();
    let mut seq = 0;
    for c in setup() {
        seq += 1;
        e.apply(seq, seq, &c, &mut ev).map_err(anyhow::Error::msg)?;
    }
    let f = funding(&e);
    seq += 1;
    e.apply(seq, seq, &f, &mut ev).map_err(anyhow::Error::msg)?;
    Ok((e, seq))
}

fn in_process(path: &Path, cmds: &[Cmd], max_id: u64) -> anyhow::Result<()> {
    let n = cmds.len();
    let mut samples = Vec::with_capacity(n);
    for pass in 0..2 {
        let (mut engine, mut seq) = fresh_engine()?;
        let mut ids: Vec<(OrderId, UserId)> = vec![(OrderId(0), UserId(0)); max_id as usize + 1];
        let mut events = Vec::with_capacity(64);
        let mut tally = Tally::default();
        let timed = pass == 1;
        let started = Instant::now();
        for (i, c) in cmds.iter().enumerate() {
            seq += 1;
            let ts = 1_000_000_000 + seq * 1_000;
            let t0 = if timed { Some(Instant::now()) } else { None };
            events.clear();
            let r = if c.kind == CANCEL {
                let (order, user) = ids[c.id as usize];
                engine.apply(
                    seq,
                    ts,
                    &Command::CancelOrder {
                        user,
                        order: OrderRef::Id(order),
                    },
                    &mut events,
                )
            } else {
                let user = user_for(c.side, i);
                let r = engine.apply(seq, ts, &Command::PlaceOrder(place(c, user, false)), &mut events);
                if let Ok(Reply::OrderPlaced(p)) = &r {
                    ids[c.id as usize] = (p.order.id, user);
                }
                r
            };
            if let Some(t0) = t0 {
                samples.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
            if r.is_err() {
                tally.rejects += 1;
            }
            tally.events(&events);
        }
        let secs = started.elapsed().as_secs_f64();
        check_end(&engine, &tally, path)?;
        if pass == 0 {
            println!(
                "bench=engine mode=in_process commands={n} secs={secs:.3} commands_per_s={:.0} trades={} end_state=EXPECT",
                n as f64 / secs,
                tally.trades
            );
        }
    }
    samples.sort_unstable();
    let p = |q: f64| samples[((q * n as f64) as usize).min(n - 1)];
    println!(
        "bench=engine mode=in_process latency_ns p50={} p99={} p99.9={} max={} (includes ~20 ns of clock reads)",
        p(0.50),
        p(0.99),
        p(0.999),
        samples[n - 1]
    );
    Ok(())
}

fn durable_run(path: &Path, cmds: &[Cmd], dir: Option<PathBuf>) -> anyhow::Result<()> {
    let tmp = crate::bench::TempDir::new(dir, "engine")?;
    let data = tmp.0.join("data");
    let mut cfg = EngineConfig::new(&data);
    cfg.snapshot_every_commands = 0;
    cfg.audit_every_commands = 0;
    let (engine, journal, _) = recover(&cfg)?;
    let s = Sequencer::start(engine, journal, cfg, SystemClock).map_err(anyhow::Error::msg)?;
    let h = s.handle();
    for c in setup() {
        h.submit(c)?;
    }
    let f = h.query(funding)?;
    h.submit(f)?;
    let n = cmds.len();
    // Who placed each order (decided before timing), so cancels name their owner.
    let mut owners = vec![UserId(0); cmds.iter().map(|c| c.id).max().unwrap_or(0) as usize + 1];
    for (i, c) in cmds.iter().enumerate() {
        if c.kind != CANCEL {
            owners[c.id as usize] = user_for(c.side, i);
        }
    }
    // Replies are taken in order by a thread of their own as they come (the sequencer answers
    // in commit order), so each one's latency runs from its submission to its durable reply.
    // At most `INFLIGHT` commands wait for their reply: the submitter blocks beyond that.
    const INFLIGHT: usize = 60_000;
    type Pending = (
        Instant,
        tokio::sync::oneshot::Receiver<Result<kinko_engine::Committed, kinko_engine::SubmitError>>,
    );
    let (tx, rx) = std::sync::mpsc::sync_channel::<Pending>(INFLIGHT);
    let settler = std::thread::spawn(move || -> anyhow::Result<(Tally, Vec<u64>)> {
        let mut tally = Tally::default();
        let mut samples = Vec::with_capacity(n);
        for (t0, r) in rx {
            let c: kinko_engine::Committed = r.blocking_recv().context("sequencer stopped")??;
            samples.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
            if c.reply.is_err() {
                tally.rejects += 1;
            }
            tally.events(&c.events);
        }
        Ok((tally, samples))
    });
    let batches0 = h.stats().batches.load(std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let make = |i: usize, c: &Cmd| {
        if c.kind == CANCEL {
            Command::CancelOrder {
                user: owners[c.id as usize],
                order: OrderRef::Client(ClientOrderId(u128::from(c.id))),
            }
        } else {
            Command::PlaceOrder(place(c, user_for(c.side, i), true))
        }
    };
    for (i, c) in cmds.iter().enumerate() {
        let command = make(i, c);
        let t0 = Instant::now();
        let r = h.try_enqueue(command).map_err(|e| anyhow::anyhow!("{e}"))?;
        if tx.send((t0, r)).is_err() {
            break;
        }
    }
    drop(tx);
    let (tally, mut samples) = settler
        .join()
        .map_err(|_| anyhow::anyhow!("the reply thread panicked"))??;
    let secs = started.elapsed().as_secs_f64();
    let batches = h.stats().batches.load(std::sync::atomic::Ordering::Relaxed) - batches0;
    let engine = s.shutdown().map_err(anyhow::Error::msg)?;
    check_end(&engine, &tally, path)?;
    // What the run wrote to the journal, counted after the timing: each command's record (its
    // header and encoded payload), as the sequencer appended it.
    let mut payload = Vec::new();
    let mut journal_bytes = 0u64;
    for (i, c) in cmds.iter().enumerate() {
        payload.clear();
        kinko_engine::encode_command(&make(i, c), &mut payload);
        journal_bytes += (kinko_journal::RECORD_HEADER_LEN + payload.len()) as u64;
    }
    println!(
        "bench=engine mode=durable commands={n} secs={secs:.3} commands_per_s={:.0} fsyncs={batches} mean_batch={:.0} trades={} end_state=EXPECT",
        n as f64 / secs,
        n as f64 / batches.max(1) as f64,
        tally.trades
    );
    println!(
        "bench=engine mode=durable journal_bytes_per_command={:.1} journal_mb_per_s={:.1}",
        journal_bytes as f64 / n.max(1) as f64,
        journal_bytes as f64 / secs / 1e6
    );
    samples.sort_unstable();
    let p = |q: f64| samples[((q * samples.len() as f64) as usize).min(samples.len() - 1)];
    if !samples.is_empty() {
        println!(
            "bench=engine mode=durable latency_ns p50={} p99={} p99.9={} max={} (submission to durable reply, up to {INFLIGHT} in flight)",
            p(0.50),
            p(0.99),
            p(0.999),
            samples[samples.len() - 1]
        );
    }
    Ok(())
}
