//! A real gateway on a loopback port over a real journal in a temporary directory, with assets
//! BTC (8), ETH (18), USD (6), markets BTC-USD and ETH-USD, and funded users with API keys.
#![allow(dead_code)]

use kinko_api::chain::SimChain;
use kinko_api::launch::{open, Http, Node};
use kinko_api::vault::{new_coinbase_key, new_native_key, Vault};
use kinko_api::{ApiConfig, AppState};
use kinko_core::engine::{Command, Reply};
use kinko_core::keys::Permissions;
use kinko_core::market::{FeeTier, MarketSpec};
use kinko_core::{Amount, AssetCode, AssetId, UserId};
use kinko_engine::EngineConfig;
use std::sync::Arc;

pub struct User {
    pub id: UserId,
    /// Native bearer token.
    pub token: String,
    pub cb_key: String,
    pub cb_secret: String,
    pub cb_passphrase: String,
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub node: Option<Node>,
    pub gateway: AppState,
    pub http: Option<Http>,
    pub base: String,
    pub client: reqwest::Client,
    pub users: Vec<User>,
    pub btc_usd_address: String,
}

pub const BTC: AssetId = AssetId(0);
pub const ETH: AssetId = AssetId(1);
pub const USD: AssetId = AssetId(2);

pub fn spec(
    symbol: &str,
    base: AssetId,
    quote: AssetId,
    tick: u128,
    lot: u128,
    reference: u128,
) -> MarketSpec {
    MarketSpec {
        symbol: symbol.into(),
        base,
        quote,
        tick: Amount(tick),
        lot: Amount(lot),
        qty_min: Amount(lot),
        qty_max: Amount(lot * 10_000_000),
        notional_min: Amount(1_000_000),
        notional_max: Amount(100_000_000_000_000),
        band_bps: 1_000,
        reference_price: Amount(reference),
        reference_age_max_ns: 0,
        fee_tiers: vec![FeeTier {
            maker_bps: 10,
            taker_bps: 20,
        }],
        open_orders_per_account_max: 500,
    }
}

impl TestServer {
    /// Starts with `users` funded users (10 BTC, 100 ETH, 1,000,000 USD each).
    pub async fn start(users: u64) -> TestServer {
        TestServer::start_with(users, ApiConfig::default()).await
    }

    pub async fn start_with(users: u64, mut config: ApiConfig) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut ec = EngineConfig::new(dir.path());
        ec.tick_ms = 20;
        let node = tokio::task::block_in_place(|| open(&ec)).unwrap();
        config.listen = "127.0.0.1:0".parse().unwrap();
        let sim = Arc::new(SimChain::new([9; 32], &["BTC", "ETH"]));
        let gateway = node.gateway(Vault::from_key([5; 32]), config, sim.clone());
        let run = |c: Command| {
            let g = gateway.clone();
            async move { g.submit(c).await.unwrap().reply.unwrap() }
        };
        for (code, d) in [("BTC", 8), ("ETH", 18), ("USD", 6)] {
            run(Command::DefineAsset {
                code: AssetCode::new(code).unwrap(),
                decimals: d,
            })
            .await;
        }
        // BTC-USD: tick 0.01 USD, lot 0.0001 BTC, reference 30,000 USD.
        run(Command::DefineMarket(spec(
            "BTC-USD",
            BTC,
            USD,
            10_000,
            10_000,
            30_000_000_000,
        )))
        .await;
        // ETH-USD: tick 0.01 USD, lot 0.001 ETH, reference 2,000 USD.
        run(Command::DefineMarket(spec(
            "ETH-USD",
            ETH,
            USD,
            10_000,
            1_000_000_000_000_000,
            2_000_000_000,
        )))
        .await;
        let mut list = Vec::new();
        for i in 1..=users {
            let user = UserId(i);
            let native = new_native_key(user, "test", Permissions::ALL);
            run(Command::CreateApiKey(native.record)).await;
            let cb = new_coinbase_key(&gateway.vault, user, "test cb", Permissions::ALL);
            run(Command::CreateApiKey(cb.record)).await;
            for (asset, code, amount) in [
                (BTC, "BTC", 10 * 100_000_000u128),
                (ETH, "ETH", 100 * 10u128.pow(18)),
                (USD, "USD", 1_000_000 * 1_000_000),
            ] {
                let address = sim.address(&format!("fund/{code}/{i}"));
                run(Command::AssignDepositAddress {
                    user,
                    asset,
                    address: address.clone(),
                })
                .await;
                let Reply::Deposit(id) = run(Command::DepositSeen {
                    asset,
                    address,
                    txid: format!("{:064x}", i * 10 + u64::from(asset.0)),
                    vout: 0,
                    amount: Amount(amount),
                })
                .await
                else {
                    panic!("deposit")
                };
                run(Command::DepositConfirmed { deposit: id }).await;
            }
            list.push(User {
                id: user,
                token: native.token,
                cb_key: cb.key,
                cb_secret: cb.secret,
                cb_passphrase: cb.passphrase,
            });
        }
        gateway.set_ready(true);
        let http = Http::start(gateway.clone()).await.unwrap();
        let base = format!("http://{}", http.addr);
        TestServer {
            dir,
            node: Some(node),
            gateway,
            http: Some(http),
            base,
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap(),
            users: list,
            btc_usd_address: sim.address("withdraw/BTC/1"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Native GET as user `i` (0-based; `None` = anonymous). Returns status and JSON body.
    pub async fn get(&self, user: Option<usize>, path: &str) -> (u16, serde_json::Value) {
        let mut r = self.client.get(self.url(path));
        if let Some(i) = user {
            r = r.bearer_auth(&self.users[i].token);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        user: Option<usize>,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut r = self.client.request(method, self.url(path));
        if let Some(i) = user {
            r = r.bearer_auth(&self.users[i].token);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub async fn post(&self, user: usize, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::POST, Some(user), path, Some(body))
            .await
    }

    /// Stops HTTP and the engine; returns the engine's final state hash.
    pub async fn stop(mut self) -> [u8; 32] {
        self.halt().await
    }

    async fn halt(&mut self) -> [u8; 32] {
        if let Some(h) = self.http.take() {
            h.stop().await.unwrap();
        }
        let node = self.node.take().unwrap();
        tokio::task::block_in_place(|| node.sequencer.shutdown().unwrap().state_hash())
    }

    /// Stops HTTP and the engine, then recovers the same data directory and serves it again
    /// (same users and keys, same configuration, a new port). Returns the state hash at the
    /// stop and the one recovery reports: they must be equal.
    pub async fn restart(mut self) -> (TestServer, [u8; 32], [u8; 32]) {
        let stopped = self.halt().await;
        let mut ec = EngineConfig::new(self.dir.path());
        ec.tick_ms = 20;
        let node = tokio::task::block_in_place(|| open(&ec)).unwrap();
        let recovered = node.report.state_hash;
        let sim = Arc::new(SimChain::new([9; 32], &["BTC", "ETH"]));
        let gateway = node.gateway(Vault::from_key([5; 32]), self.gateway.config.clone(), sim);
        gateway.set_ready(true);
        let http = Http::start(gateway.clone()).await.unwrap();
        self.base = format!("http://{}", http.addr);
        self.node = Some(node);
        self.gateway = gateway;
        self.http = Some(http);
        (self, stopped, recovered)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_starts_a_funded_server() {
    let s = TestServer::start(2).await;
    let (st, body) = s.get(Some(0), "/api/v1/balances").await;
    assert_eq!(st, 200, "{body}");
    let usd = body
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == "USD")
        .unwrap();
    assert_eq!(usd["available"], "1000000.000000");
    s.stop().await;
}
