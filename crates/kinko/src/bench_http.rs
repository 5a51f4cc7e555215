//! `kinko bench http`: order entry over HTTP on loopback.
//!
//! Starts a real gateway (sequencer, journal with fsync, read side, HTTP server) on a fresh data
//! directory with the configured assets and markets, funds one trader per connection, then each
//! connection places limit orders on BTC-USD back to back over a keep-alive HTTP/1.1 connection
//! (a closed loop: one request in flight per connection), buys and sells priced around the
//! reference so that many cross. Every `cancel_every` orders a connection cancels its open
//! orders. Reports orders per second and latency percentiles measured by the client from
//! request write to full response.
//!
//! The client is a minimal HTTP/1.1 writer/reader over tokio sockets so that the measurement is
//! of the server, not of a client library. Both share the machine's cores, as they would with
//! any load generator on one host.
#![allow(clippy::float_arithmetic)]

use crate::config::Config;
use anyhow::{bail, Context};
use kinko_api::vault::{new_native_key, Vault};
use kinko_core::engine::{Command, Reply};
use kinko_core::keys::Permissions;
use kinko_core::ledger::{SystemAccount, TransferKind, TransferRequest};
use kinko_core::{Amount, TransferId, UserId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Options {
    pub orders: u64,
    pub connections: usize,
    pub cancel_every: u64,
    pub server_threads: usize,
}

pub fn run(config: &Config, o: &Options) -> anyhow::Result<()> {
    if o.connections == 0 || o.orders == 0 {
        bail!("--connections and --orders must be at least 1");
    }
    let dir = crate::bench::TempDir::new(None, "http")?;
    let mut config = config.clone();
    config.data_dir = dir.0.clone();
    let engine_config = config.engine_config();
    let node = kinko_engine::launch::open(&engine_config)?;
    crate::serve::define_assets(&node.sequencer.handle(), &config)?;
    let mut api = config.api.api_config()?;
    api.listen = "127.0.0.1:0".parse().expect("valid address");
    // One trader per connection, all from loopback, far beyond any exchange's allowance: the
    // rate limits are not what is measured here, so the bench lifts them for its own server.
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
    let per_conn = o.orders.div_ceil(o.connections as u64);
    let done = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let samples: Vec<Vec<u32>> = client_rt.block_on(async {
        let mut tasks = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            let token = token.clone();
            let market = market.clone();
            let done = done.clone();
            let rejected = rejected.clone();
            let cancel_every = o.cancel_every;
            tasks.push(tokio::spawn(async move {
                connection(addr, i, &token, &market, per_conn, cancel_every, &done, &rejected).await
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.context("client task")??);
        }
        anyhow::Ok(all)
    })?;
    let secs = started.elapsed().as_secs_f64();
    let mut lat: Vec<u32> = samples.into_iter().flatten().collect();
    lat.sort_unstable();
    let n = lat.len();
    let p = |q: f64| lat[((q * n as f64) as usize).min(n.saturating_sub(1))];
    let orders = done.load(Ordering::Relaxed);
    println!(
        "bench=http orders={orders} connections={} server_threads={} secs={secs:.3} orders_per_s={:.0} rejected={}",
        o.connections,
        o.server_threads,
        orders as f64 / secs,
        rejected.load(Ordering::Relaxed)
    );
    println!(
        "bench=http latency_us p50={} p90={} p99={} p99.9={} max={} (requests={n}, incl. cancel-all every {} orders)",
        p(0.50),
        p(0.90),
        p(0.99),
        p(0.999),
        lat.last().copied().unwrap_or(0),
        o.cancel_every
    );
    server_rt.block_on(async { http.stop().await })?;
    drop(gateway);
    server_rt.shutdown_timeout(Duration::from_secs(5));
    node.sequencer.shutdown().map_err(anyhow::Error::msg)?;
    Ok(())
}

/// Funds one trader per connection with an API key; returns the server and the tokens.
pub(crate) async fn setup(
    g: &kinko_api::AppState,
    traders: usize,
) -> anyhow::Result<(kinko_api::server::Http, Vec<String>, String)> {
    let market = "BTC-USD".to_owned();
    let (base, quote) = {
        let m = g.read.model();
        let id = m
            .engine
            .trading()
            .market_by_symbol(&market)
            .context("the configured markets must include BTC-USD")?;
        let s = &m.engine.trading().market(id).expect("market").meta.spec;
        (s.base, s.quote)
    };
    let mut tokens = Vec::new();
    let mut next_id = 1u128;
    for t in 0..traders {
        let user = UserId(100 + t as u64);
        let key = new_native_key(
            user,
            "bench",
            Permissions {
                view: true,
                trade: true,
                withdraw: false,
            },
        );
        g.submit(Command::CreateApiKey {
            key: key.record,
            proof: None,
        })
        .await?
        .reply?;
        for (asset, amount) in [
            (base, 1_000_000u128 * 100_000_000),
            (quote, 10u128.pow(12) * 1_000_000),
        ] {
            let Reply::AccountOpened { account } =
                g.submit(Command::OpenAccount { user, asset }).await?.reply?
            else {
                bail!("unexpected reply opening an account");
            };
            let hot = g
                .read
                .model()
                .engine
                .asset(asset)
                .expect("asset")
                .system_account(SystemAccount::HotWallet);
            g.submit(Command::Transfers(vec![TransferRequest {
                id: TransferId(next_id),
                kind: TransferKind::Post {
                    debit: hot,
                    credit: account,
                    amount: Amount(amount),
                },
                linked: false,
                code: 1,
                user_data: 0,
            }]))
            .await?
            .reply?;
            next_id += 1;
        }
        tokens.push(key.token);
    }
    let http = kinko_api::server::Http::start(g.clone()).await?;
    Ok((http, tokens, market))
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    addr: std::net::SocketAddr,
    index: usize,
    token: &str,
    market: &str,
    orders: u64,
    cancel_every: u64,
    done: &AtomicU64,
    rejected: &AtomicU64,
) -> anyhow::Result<Vec<u32>> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    let mut req = Vec::with_capacity(512);
    let mut lat = Vec::with_capacity(orders as usize + orders as usize / cancel_every.max(1) as usize + 1);
    // A small deterministic generator per connection (no floating point, no shared state).
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (index as u64 + 1);
    for i in 0..orders {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let buy = (i + index as u64).is_multiple_of(2);
        // Around 30,000.00 USD: buys from 29,990 up, sells from 30,010 down, so they cross.
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
        req.clear();
        req.extend_from_slice(
            format!(
                "POST /api/v1/orders HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        req.extend_from_slice(body.as_bytes());
        let t = Instant::now();
        let status = exchange(&mut s, &req, &mut buf).await?;
        lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
        if status == 200 {
            done.fetch_add(1, Ordering::Relaxed);
        } else {
            rejected.fetch_add(1, Ordering::Relaxed);
        }
        if cancel_every > 0 && (i + 1).is_multiple_of(cancel_every) {
            req.clear();
            req.extend_from_slice(
                format!(
                    "DELETE /api/v1/orders?market={market} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
                )
                .as_bytes(),
            );
            let t = Instant::now();
            let status = exchange(&mut s, &req, &mut buf).await?;
            lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            if status != 200 {
                bail!("cancel-all answered {status}");
            }
        }
    }
    Ok(lat)
}

/// Writes one request and reads one response (Content-Length bodies); returns the status.
pub(crate) async fn exchange(
    s: &mut tokio::net::TcpStream,
    req: &[u8],
    buf: &mut Vec<u8>,
) -> anyhow::Result<u16> {
    s.write_all(req).await?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("server closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 64 * 1024 {
            bail!("response head too large");
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("response head is not UTF-8")?;
    let status: u16 = head
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .context("malformed status line")?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .context("response without Content-Length")?;
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("server closed the connection mid-body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}
