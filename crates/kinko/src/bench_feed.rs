//! `kinko bench feed`: order entry while WebSocket subscribers watch the book.
//!
//! For each subscriber count, a real gateway on a fresh data directory (as `kinko bench http`);
//! half the subscribers on the native feed (`/api/v1/ws`, `level2` + `trades`), half on the
//! Coinbase feed (`/ws-feed`, `level2` + `matches`), all on BTC-USD. Then orders are offered at a
//! fixed rate (open loop: each order has a scheduled send time, and its latency is measured from
//! that time to the full response, so a stall counts for every order it delays) for `secs`
//! seconds, buys and sells around the reference so that many cross. Reports order-entry
//! latency percentiles, orders accepted per second, and WebSocket messages delivered per second
//! (counted by the clients from the frames they read).
//!
//! The clients are minimal: the subscribers do the WebSocket handshake by hand and count
//! frames from their headers without parsing JSON, so the measurement is of the server.
#![allow(clippy::float_arithmetic)]

use crate::bench_http::{exchange, setup};
use crate::config::Config;
use anyhow::{bail, Context};
use kinko_api::vault::Vault;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Options {
    pub subscribers: Vec<usize>,
    pub orders_per_s: u64,
    pub secs: u64,
    pub connections: usize,
    pub server_threads: usize,
}

pub fn run(config: &Config, o: &Options) -> anyhow::Result<()> {
    if o.connections == 0 || o.orders_per_s == 0 || o.secs == 0 {
        bail!("--connections, --orders-per-s and --secs must be at least 1");
    }
    for &n in &o.subscribers {
        one(config, o, n)?;
    }
    Ok(())
}

fn one(config: &Config, o: &Options, subscribers: usize) -> anyhow::Result<()> {
    let dir = crate::bench::TempDir::new(None, "feed")?;
    let mut config = config.clone();
    config.data_dir = dir.0.clone();
    let engine_config = config.engine_config();
    let node = kinko_engine::launch::open(&engine_config)?;
    crate::serve::define_assets(&node.sequencer.handle(), &config)?;
    let mut api = config.api.api_config()?;
    api.listen = "127.0.0.1:0".parse().expect("valid address");
    api.rate_per_key.per_second = 0;
    api.rate_private_per_key.per_second = 0;
    api.rate_per_ip.per_second = 0;
    api.rate_public_per_ip.per_second = 0;
    let gateway = kinko_api::server::gateway(
        &node,
        Vault::from_key(kinko_api::vault::random_bytes()),
        api,
        Arc::new(kinko_engine::ports::NoChain),
    );
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.server_threads.max(1))
        .thread_name("kinko-http")
        .enable_all()
        .build()?;
    let (http, tokens, market) = server_rt.block_on(async { setup(&gateway, o.connections).await })?;
    gateway.set_ready(true);
    let addr = http.addr;

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The subscribers read on a thread of their own, so that their reading never delays the
    // order-entry clients' requests (which would count as server latency).
    let sub_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-subscribers")
        .enable_all()
        .build()?;
    let delivered = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (subs, samples, accepted, rejected, secs, delivered_n) = client_rt.block_on(async {
        let mut subs = Vec::new();
        for i in 0..subscribers {
            let (path, sub) = if i % 2 == 0 {
                (
                    "/api/v1/ws",
                    format!(
                        r#"{{"type":"subscribe","channels":["level2","trades"],"markets":["{market}"]}}"#
                    ),
                )
            } else {
                (
                    "/ws-feed",
                    format!(
                        r#"{{"type":"subscribe","channels":["level2","matches"],"product_ids":["{market}"]}}"#
                    ),
                )
            };
            let delivered = delivered.clone();
            let stop = stop.clone();
            let ready = ready.clone();
            let path = path.to_owned();
            let task = sub_rt.spawn(async move {
                let s = subscribe(addr, &path, &sub)
                    .await
                    .with_context(|| format!("subscriber {i}"))?;
                ready.fetch_add(1, Ordering::Relaxed);
                count(s, &delivered, &stop).await
            });
            subs.push(task);
        }
        // Every subscriber connected, and their snapshots out, before measuring.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while ready.load(Ordering::Relaxed) < subscribers as u64 {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "only {} of {subscribers} subscribers connected within 60 s",
                    ready.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = delivered.load(Ordering::Relaxed);
        let accepted = Arc::new(AtomicU64::new(0));
        let rejected = Arc::new(AtomicU64::new(0));
        let per_conn = (o.orders_per_s * o.secs).div_ceil(o.connections as u64);
        // Each connection sends at orders_per_s / connections, staggered.
        let interval = Duration::from_nanos(1_000_000_000 * o.connections as u64 / o.orders_per_s);
        let started = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            let token = token.clone();
            let market = market.clone();
            let (accepted, rejected) = (accepted.clone(), rejected.clone());
            let first = started + interval * i as u32 / o.connections as u32;
            tasks.push(tokio::spawn(async move {
                offer(
                    addr, i, &token, &market, per_conn, first, interval, &accepted, &rejected,
                )
                .await
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.context("order task")??);
        }
        let secs = started.elapsed().as_secs_f64();
        let delivered_n = delivered.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        anyhow::Ok((
            subs,
            all,
            accepted.load(Ordering::Relaxed),
            rejected.load(Ordering::Relaxed),
            secs,
            delivered_n,
        ))
    })?;
    let mut lat: Vec<u32> = samples.into_iter().flatten().collect();
    lat.sort_unstable();
    let n = lat.len();
    let p = |q: f64| lat[((q * n as f64) as usize).min(n.saturating_sub(1))];
    println!(
        "bench=feed subscribers={subscribers} offered_per_s={} secs={secs:.3} accepted_per_s={:.0} rejected={rejected} latency_us p50={} p90={} p99={} p99.9={} max={} messages_per_s={:.0}",
        o.orders_per_s,
        accepted as f64 / secs,
        p(0.50),
        p(0.90),
        p(0.99),
        p(0.999),
        lat.last().copied().unwrap_or(0),
        delivered_n as f64 / secs,
    );
    for s in subs {
        s.abort();
    }
    sub_rt.shutdown_timeout(Duration::from_secs(5));
    server_rt.block_on(async { http.stop().await })?;
    drop(gateway);
    server_rt.shutdown_timeout(Duration::from_secs(5));
    node.sequencer.shutdown().map_err(anyhow::Error::msg)?;
    Ok(())
}

/// Places orders at their scheduled times; latencies from the scheduled time, in µs.
#[allow(clippy::too_many_arguments)]
async fn offer(
    addr: std::net::SocketAddr,
    index: usize,
    token: &str,
    market: &str,
    orders: u64,
    first: tokio::time::Instant,
    interval: Duration,
    accepted: &AtomicU64,
    rejected: &AtomicU64,
) -> anyhow::Result<Vec<u32>> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    let mut lat = Vec::with_capacity(orders as usize);
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (index as u64 + 1);
    for i in 0..orders {
        let due = first + interval * i as u32;
        tokio::time::sleep_until(due).await;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let buy = (i + index as u64).is_multiple_of(2);
        let offset = x % 2_000;
        let cents = if buy {
            2_999_000 + offset
        } else {
            3_001_000 - offset
        };
        let body = format!(
            r#"{{"market":"{market}","side":"{}","type":"limit","price":"{}.{:02}","size":"0.0100"}}"#,
            if buy { "buy" } else { "sell" },
            cents / 100,
            cents % 100
        );
        let mut req = format!(
            "POST /api/v1/orders HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body.as_bytes());
        let status = exchange(&mut s, &req, &mut buf).await?;
        lat.push(u32::try_from(due.elapsed().as_micros()).unwrap_or(u32::MAX));
        if status == 200 {
            accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            rejected.fetch_add(1, Ordering::Relaxed);
        }
        // Every 100 orders, cancel this trader's open orders so the book stays bounded.
        if (i + 1).is_multiple_of(100) {
            let req = format!(
                "DELETE /api/v1/orders?market={market} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
            );
            if exchange(&mut s, req.as_bytes(), &mut buf).await? != 200 {
                bail!("cancel-all refused");
            }
        }
    }
    Ok(lat)
}

/// Opens a WebSocket by hand and sends one subscribe message.
async fn subscribe(
    addr: std::net::SocketAddr,
    path: &str,
    sub: &str,
) -> anyhow::Result<tokio::net::TcpStream> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 {
            bail!("closed during the handshake");
        }
        head.push(byte[0]);
        if head.len() > 8 * 1024 {
            bail!("handshake response too large");
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!("handshake refused: {}", String::from_utf8_lossy(&head));
    }
    s.write_all(&client_frame(0x1, sub.as_bytes())).await?;
    Ok(s)
}

/// A masked client frame (mask key 0: the payload goes as it is).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Counts the text frames the server sends (answering pings) until `stop`.
async fn count(mut s: tokio::net::TcpStream, delivered: &AtomicU64, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let n = s.read(&mut buf[have..]).await?;
        if n == 0 {
            bail!("the server closed a subscriber");
        }
        have += n;
        let mut at = 0;
        let mut texts = 0;
        let mut need = 0;
        loop {
            let rest = &buf[at..have];
            if rest.len() < 2 {
                break;
            }
            let opcode = rest[0] & 0x0F;
            let (len, hdr) = match rest[1] & 0x7F {
                126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
                127 if rest.len() >= 10 => (
                    u64::from_be_bytes(rest[2..10].try_into().expect("8 bytes")) as usize,
                    10,
                ),
                126 | 127 => break,
                l => (l as usize, 2),
            };
            if rest.len() < hdr + len {
                need = hdr + len;
                break;
            }
            match opcode {
                0x1 => texts += 1,
                0x9 => s.write_all(&client_frame(0xA, &rest[hdr..hdr + len])).await?,
                0x8 => bail!("the server closed a subscriber"),
                _ => {}
            }
            at += hdr + len;
        }
        delivered.fetch_add(texts, Ordering::Relaxed);
        buf.copy_within(at..have, 0);
        have -= at;
        if need > buf.len() {
            buf.resize(need, 0);
        }
    }
    Ok(())
}
