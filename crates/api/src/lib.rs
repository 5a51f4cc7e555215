//! kinko's gateway: HTTP and WebSocket in front of the sequencer.
//!
//! Per request the gateway parses, authenticates, validates and hands one command to the
//! sequencer through its bounded inbox, then awaits the reply — which the sequencer sends only
//! after the command is durable. Reads come from the read side (a replica fed with committed
//! batches), never from the sequencer's engine. Ephemeral state — rate-limit buckets, WebSocket
//! subscriptions — lives here and is never journaled.
//!
//! - `/health`, `/ready`, `/metrics`
//! - `/api/v1/...` — the native API, described by `/api/v1/openapi.json`
//! - `/api/v1/ws` — WebSocket market data and private channels
//! - `/...` — the Coinbase-Exchange-compatible surface
//! - `/`, `/freeze` — the account web page (sign-in, second factors, step-up, freeze link)
#![forbid(unsafe_code)]

pub mod account;
pub mod auth;
mod coinbase;
mod console_api;
mod custody;
pub mod error;
mod extract;
pub mod mail;
pub mod metrics;
mod native;
pub mod notify;
mod ops;
pub mod password;
pub mod proofs;
pub mod ratelimit;
pub mod replay;
mod routes;
pub mod schema;
pub mod security_log;
pub mod segregation;
pub mod server;
pub mod stepup;
pub mod throttle;
pub mod trail;
mod usecase;
pub mod vault;
mod view;
mod web;
mod wsio;
pub use kinko_factors::{totp, webauthn};
mod fanout;
mod lang;
pub mod wire;
mod ws;

use crate::error::{ApiError, ErrorCode};
use crate::ratelimit::{Limiter, Rate};
use crate::vault::Vault;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kinko_engine::ports::{ChainAdapter, CustodyOps};
use kinko_engine::replica::ReadSide;
use kinko_engine::{Committed, EngineHandle, JournalState};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Gateway settings (the `[api]` section of the config).
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted.
    pub body_bytes_max: usize,
    /// Every authenticated request of one API key or session (order entry draws only on this).
    pub rate_per_key: Rate,
    /// The other private requests of one key or session (reads, withdrawals, account), on top.
    pub rate_private_per_key: Rate,
    /// Every request from one client address, signed or not.
    pub rate_per_ip: Rate,
    /// Unauthenticated reads (market data) from one client address, on top.
    pub rate_public_per_ip: Rate,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Coinbase-style requests must be signed within this many seconds of the server's clock.
    pub signature_window_s: u64,
    /// How long a new withdrawal address waits before it can be used.
    pub withdrawal_cooling: Duration,
    /// How long a read waits for the replica to catch up with the caller's last write.
    pub read_wait: Duration,
    /// WebSocket limits.
    pub ws: ws::WsConfig,
    /// Accounts, sessions, second factors.
    pub identity: account::IdentityConfig,
    /// Hash of the operator token (`stepup::operator_token_hash`); None turns the operator
    /// endpoints off.
    pub operator_token_hash: Option<[u8; 32]>,
    /// Proxies (IPs or CIDR blocks) whose `Forwarded` / `X-Forwarded-For` headers name the
    /// client. Empty (the default): those headers are ignored and the client is the TCP peer.
    pub trusted_proxies: Vec<String>,
    /// Where the sign-in failure counters are kept across restarts (`kinko serve`:
    /// `<data_dir>/auth-throttle.json`); None keeps them in memory only.
    pub throttle_file: Option<std::path::PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_bytes_max: 64 * 1024,
            // Coinbase Exchange's published limits, order entry a little above private calls;
            // see `ratelimit` and README's `[api]` block.
            rate_per_key: Rate {
                burst: 50,
                per_second: 25,
            },
            rate_private_per_key: Rate {
                burst: 30,
                per_second: 15,
            },
            rate_per_ip: Rate {
                burst: 200,
                per_second: 100,
            },
            rate_public_per_ip: Rate {
                burst: 15,
                per_second: 10,
            },
            shutdown_timeout: Duration::from_secs(10),
            signature_window_s: 30,
            withdrawal_cooling: Duration::from_secs(24 * 3_600),
            read_wait: Duration::from_secs(2),
            ws: ws::WsConfig::default(),
            identity: account::IdentityConfig::default(),
            operator_token_hash: None,
            trusted_proxies: Vec::new(),
            throttle_file: None,
        }
    }
}

/// Everything a handler needs.
pub struct Gateway {
    pub engine: EngineHandle,
    pub read: ReadSide,
    pub vault: Vault,
    pub config: ApiConfig,
    pub metrics: metrics::Metrics,
    pub chain: Arc<dyn ChainAdapter>,
    /// Open WebSocket connections and their shutdown signal.
    pub ws: ws::Hub,
    /// State-changing Coinbase-style signed requests used within their window (replay refusal).
    pub replays: replay::Seen,
    key_limits: Limiter<String>,
    private_limits: Limiter<String>,
    ip_limits: Limiter<IpAddr>,
    public_limits: Limiter<IpAddr>,
    /// The highest sequence number any client has been told about: reads wait for the
    /// replica to reach it, so a client always sees its own writes.
    acked: AtomicU64,
    /// Set once the gateway has finished starting (configured assets and markets defined).
    ready: AtomicBool,
    /// Password hashing (argon2id with the pepper), bounded.
    pub hasher: password::Hasher,
    /// Failed logins and second-factor attempts (ephemeral).
    /// Sign-in failure counters per (account, address) and per address, kept across restarts.
    pub failures: throttle::Throttle,
    /// The mail thread's queue, once a mailer is set.
    notices: std::sync::OnceLock<crossbeam_channel::Sender<notify::Item>>,
    /// The custody services behind `/admin/custody` (none: those answer unavailable).
    pub custody: std::sync::OnceLock<Arc<dyn CustodyOps>>,
    /// The tamper-evident audit trail (none in tests of the gateway alone).
    pub trail: std::sync::OnceLock<Arc<trail::Trail>>,
    /// Whether the simulated chain runs here (`--demo` or `[sim] enabled`; never beside a real chain).
    pub simulated: std::sync::atomic::AtomicBool,
    /// Simulated deposits sent so far (makes their transaction ids unique).
    pub sim_deposits: std::sync::atomic::AtomicU64,
    /// The port the HTTP server bound (for the default WebAuthn origin and links).
    port: std::sync::atomic::AtomicU16,
    /// What works right now (journal, nodes, signers, custody loops): `/ready`, `/metrics`.
    pub health: kinko_engine::health::Health,
    /// The hot wallet limits of each custodied asset, for `/metrics` (none: no custody).
    pub hot_limits: std::sync::OnceLock<BTreeMap<String, metrics::HotLimits>>,
    /// The published proofs of liabilities (none: their routes answer `PROOF_NOT_PUBLISHED`).
    pub proofs: std::sync::OnceLock<Arc<proofs::ProofStore>>,
    /// When the gateway was built (ns since the Unix epoch).
    started_ns: u64,
}

pub type AppState = Arc<Gateway>;

impl Gateway {
    pub fn new(
        engine: EngineHandle,
        read: ReadSide,
        vault: Vault,
        config: ApiConfig,
        chain: Arc<dyn ChainAdapter>,
    ) -> AppState {
        let hasher = password::Hasher::new(
            vault.subkey("password pepper"),
            config.identity.password_cost,
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        );
        Arc::new(Gateway {
            hasher,
            failures: throttle::Throttle::open(
                config.identity.failures_max,
                config.identity.failure_window.as_secs(),
                config.throttle_file.clone(),
            ),
            notices: std::sync::OnceLock::new(),
            custody: std::sync::OnceLock::new(),
            trail: std::sync::OnceLock::new(),
            simulated: std::sync::atomic::AtomicBool::new(false),
            sim_deposits: std::sync::atomic::AtomicU64::new(0),
            port: std::sync::atomic::AtomicU16::new(config.listen.port()),
            health: kinko_engine::health::Health::new(),
            hot_limits: std::sync::OnceLock::new(),
            proofs: std::sync::OnceLock::new(),
            started_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            key_limits: Limiter::new(config.rate_per_key, 100_000),
            private_limits: Limiter::new(config.rate_private_per_key, 100_000),
            ip_limits: Limiter::new(config.rate_per_ip, 100_000),
            public_limits: Limiter::new(config.rate_public_per_ip, 100_000),
            engine,
            read,
            vault,
            config,
            metrics: metrics::Metrics::default(),
            chain,
            ws: ws::Hub::default(),
            replays: replay::Seen::default(),
            acked: AtomicU64::new(0),
            ready: AtomicBool::new(false),
        })
    }

    /// Registers the custody services (once).
    /// The hot wallet limits of the custodied assets, shown at `/metrics` (the first call wins).
    pub fn set_hot_limits(&self, limits: BTreeMap<String, metrics::HotLimits>) {
        let _ = self.hot_limits.set(limits);
    }

    pub fn set_custody(&self, ops: Arc<dyn CustodyOps>) {
        let _ = self.custody.set(ops);
    }

    /// Sends security messages through `mailer` from now on (a mail thread fed by the read
    /// side, from its durable cursor). Only the first mailer set is used: one mail thread owns
    /// the cursor.
    pub fn set_mailer(self: &Arc<Self>, mailer: Arc<dyn mail::Mailer>) {
        let g = Arc::downgrade(self);
        let url: Arc<dyn Fn() -> String + Send + Sync> =
            Arc::new(move || g.upgrade().map(|g| g.public_url()).unwrap_or_default());
        let mut started = false;
        let tx = self.notices.get_or_init(|| {
            started = true;
            notify::start(mailer, self.vault.clone(), url, self.read.clone())
        });
        if started {
            self.read
                .set_observer(Box::new(notify::Notifier::new(tx.clone())));
        }
    }

    pub fn notices(&self) -> Option<&crossbeam_channel::Sender<notify::Item>> {
        self.notices.get()
    }

    pub fn set_bound_port(&self, port: u16) {
        self.port.store(port, Ordering::Release);
    }

    pub fn bound_port(&self) -> u16 {
        self.port.load(Ordering::Acquire)
    }

    /// Base of links in messages: configured, or `http://localhost:<port>`.
    pub fn public_url(&self) -> String {
        let u = self.config.identity.public_url.trim_end_matches('/');
        if u.is_empty() {
            format!("http://localhost:{}", self.bound_port())
        } else {
            u.to_owned()
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Sends one command and awaits its durable reply.
    pub async fn submit(&self, command: kinko_core::Command) -> Result<Committed, ApiError> {
        let rx = self.engine.try_enqueue(command).map_err(ApiError::from)?;
        let c = rx
            .await
            .map_err(|_| ApiError::from(kinko_engine::vanished()))?
            .map_err(ApiError::from)?;
        self.acked.fetch_max(c.seq, Ordering::AcqRel);
        Ok(c)
    }

    /// Waits until the read side has caught up with every write acknowledged so far.
    pub async fn caught_up(&self) -> Result<(), ApiError> {
        let want = self.acked.load(Ordering::Acquire);
        if self.read.wait_for(want, self.config.read_wait).await {
            Ok(())
        } else {
            Err(ApiError::unavailable(
                "READ_MODEL_LAGGING",
                "the read model is behind; retry shortly",
            ))
        }
    }

    /// One request of `key` (an API key id, or a session's short id) of `class`: order entry
    /// draws on the key's bucket, anything else on its private bucket as well.
    pub fn check_key_rate(&self, key: &str, class: ratelimit::RateClass) -> Result<(), ApiError> {
        let key = key.to_owned();
        if class == ratelimit::RateClass::Private {
            self.private_limits.take(&key).map_err(ApiError::rate_limited)?;
        }
        self.key_limits.take(&key).map_err(ApiError::rate_limited)
    }
}

pub use routes::{openapi, router};
pub use view::waiting_reason;

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "internal error; it has been logged",
    )
    .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this endpoint does not accept that method",
    )
}

/// Per-IP rate limit, request log line, metrics.
async fn observe(State(g): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| ratelimit::address_of(c.0.ip()));
    let route: &'static str = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| intern(p.as_str()))
        .unwrap_or("unmatched");
    let method = req.method().clone();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let limited = ip.and_then(|ip| {
        g.ip_limits.take(&ip).err().or_else(|| {
            public_read(&req, route)
                .then(|| g.public_limits.take(&ip).err())
                .flatten()
        })
    });
    let response = match limited {
        Some(retry_after_s) => ApiError::rate_limited(retry_after_s).into_response(),
        None => next.run(req).await,
    };
    let status = response.status().as_u16();
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    g.metrics.request(route, &method, status, micros);
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        g.metrics.reject(code);
        tracing::info!(request_id, %method, route, status, micros, code, "request refused");
    } else {
        tracing::debug!(request_id, %method, route, status, micros, "request");
    }
    response
}

/// An unauthenticated read of the API (market data, status), which the public per-IP limit
/// covers. The pages' static files and the health endpoints are not counted there.
fn public_read(req: &Request, route: &str) -> bool {
    let h = req.headers();
    let credentials = h.contains_key(axum::http::header::AUTHORIZATION) || h.contains_key("cb-access-key");
    let read = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let not_api = matches!(route, "/health" | "/ready" | "/metrics") || crate::web::is_page(route);
    read && !credentials && !not_api
}

/// Route templates are few and fixed; interning them gives `&'static str` metric labels.
fn intern(s: &str) -> &'static str {
    use parking_lot::Mutex;
    use std::collections::HashSet;
    static SET: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut g = SET.lock();
    let set = g.get_or_insert_with(HashSet::new);
    if let Some(x) = set.get(s) {
        return x;
    }
    if set.len() >= 1_024 {
        return "other";
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

async fn health() -> &'static str {
    "ok\n"
}

/// Mirrors the sequencer's journal state into the `journal` component (critical), so that
/// `/ready` and `/metrics` show it like any other part.
fn refresh_journal_health(g: &Gateway) -> (JournalState, String) {
    use kinko_engine::health::Severity;
    let (state, reason) = g.engine.stats().journal();
    let current = g.health.get("journal");
    if state == JournalState::Ok {
        if current.as_ref().is_none_or(|c| !c.up) {
            g.health.up("journal", Severity::Critical);
        }
    } else if current.as_ref().is_none_or(|c| c.up || c.reason != reason) {
        g.health.down("journal", Severity::Critical, reason.clone());
    }
    (state, reason)
}

/// Ready when started, the engine is not halted or stopping, the journal writes, and the read
/// side is current.
async fn ready(State(g): State<AppState>) -> Response {
    let (journal, journal_reason) = refresh_journal_health(&g);
    let halted = g.read.model().engine.halted().map(str::to_owned);
    let committed = g.engine.stats().last_seq.load(Ordering::Relaxed);
    let applied = g.read.applied_seq();
    let lag = committed.saturating_sub(applied);
    let components: serde_json::Map<String, serde_json::Value> = g
        .health
        .snapshot()
        .into_iter()
        .map(|(name, c)| {
            let v = serde_json::json!({
                "up": c.up,
                "critical": c.severity == kinko_engine::health::Severity::Critical,
                "reason": (!c.up).then_some(c.reason),
                "since": c.since_s,
                "failures": c.failures,
            });
            (name, v)
        })
        .collect();
    let critical_down = !g.health.critical_down().is_empty();
    let body = serde_json::json!({
        "ready": g.ready.load(Ordering::Acquire)
            && halted.is_none()
            && lag < 100_000
            && !critical_down
            && journal == JournalState::Ok,
        "halted": halted,
        "committed_seq": committed,
        "read_seq": applied,
        "components": components,
        // `ok`; `full` (writes refused until space is freed, then resumed by themselves);
        // `failed` (nothing is written until a restart).
        "journal": {
            "state": journal.name(),
            "reason": (journal != JournalState::Ok).then_some(journal_reason),
        },
    });
    let status = if body["ready"] == true {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(g): State<AppState>) -> Response {
    let mut out = String::with_capacity(8 * 1024);
    g.metrics.render(&mut out);
    let (journal, _) = refresh_journal_health(&g);
    let s = g.engine.stats();
    let _ = std::fmt::Write::write_str(
        &mut out,
        "# HELP kinko_journal_state 1 for the journal's current state: ok, full (writes refused until space is freed) or failed (restart needed).\n# TYPE kinko_journal_state gauge\n",
    );
    for st in [JournalState::Ok, JournalState::Full, JournalState::Failed] {
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(
                "kinko_journal_state{{state=\"{}\"}} {}\n",
                st.name(),
                i64::from(st == journal)
            ),
        );
    }
    metrics::counter(
        &mut out,
        "kinko_journal_full_batches_total",
        "Batches refused (not applied) because the journal's disk was full.",
        s.journal_full_batches.load(Ordering::Relaxed),
    );
    let fsync_sum_us = s.fsync_ns_total.load(Ordering::Relaxed) / 1_000;
    metrics::histogram(
        &mut out,
        "kinko_journal_fsync_seconds",
        "Journal batch write + fsync time.",
        &kinko_engine::FSYNC_BUCKETS_US,
        &s.fsync_buckets,
        fsync_sum_us,
    );
    // Replication, only where `[cluster]` is configured (a single node exports none of it).
    let role = s.role();
    if role != kinko_engine::Role::Single {
        let _ = std::fmt::Write::write_str(
            &mut out,
            "# HELP kinko_replication_role This node's role in the cluster (1 for the current one).\n\
             # TYPE kinko_replication_role gauge\n",
        );
        for r in [
            kinko_engine::Role::Standby,
            kinko_engine::Role::Primary,
            kinko_engine::Role::Deposed,
        ] {
            let _ = std::fmt::Write::write_fmt(
                &mut out,
                format_args!(
                    "kinko_replication_role{{role=\"{}\"}} {}\n",
                    r.name(),
                    i64::from(r == role)
                ),
            );
        }
        metrics::gauge(
            &mut out,
            "kinko_replication_epoch",
            "The epoch this node leads or led last (0: never led).",
            i64::try_from(s.epoch.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        );
        metrics::gauge(
            &mut out,
            "kinko_replication_lag",
            "Batches the replicated log holds that this node has not applied yet.",
            i64::try_from(s.replication_lag.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        );
        metrics::counter(
            &mut out,
            "kinko_replication_leader_changes_total",
            "Times this node saw a newer epoch (a new leader) since it started.",
            s.leader_changes.load(Ordering::Relaxed),
        );
        metrics::histogram(
            &mut out,
            "kinko_replication_publish_seconds",
            "Time a batch waits for the replicated stream's acknowledgement.",
            &kinko_engine::FSYNC_BUCKETS_US,
            &s.publish_buckets,
            s.publish_ns_total.load(Ordering::Relaxed) / 1_000,
        );
    }
    metrics::gauge(
        &mut out,
        "kinko_sequencer_queue_depth",
        "Commands waiting in the sequencer's inbox.",
        i64::try_from(g.engine.queue_depth()).unwrap_or(i64::MAX),
    );
    metrics::gauge(
        &mut out,
        "kinko_committed_seq",
        "Sequence number of the last durable command.",
        i64::try_from(s.last_seq.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
    );
    metrics::gauge(
        &mut out,
        "kinko_read_seq",
        "Sequence number the read side has applied.",
        i64::try_from(g.read.applied_seq()).unwrap_or(i64::MAX),
    );
    {
        use kinko_core::wallet::WithdrawalStatus as W;
        let m = g.read.model();
        const STATES: [W; 6] = [
            W::Requested,
            W::Signing,
            W::Broadcast,
            W::Completed,
            W::Cancelled,
            W::Failed,
        ];
        let mut counts = [0i64; STATES.len()];
        for w in m.engine.wallet().withdrawals() {
            if let Some(i) = STATES.iter().position(|s| *s == w.status) {
                counts[i] += 1;
            }
        }
        let _ = std::fmt::Write::write_str(
            &mut out,
            "# HELP kinko_withdrawals Withdrawals by state.\n# TYPE kinko_withdrawals gauge\n",
        );
        for (st, n) in STATES.iter().zip(counts) {
            let _ = std::fmt::Write::write_fmt(
                &mut out,
                format_args!("kinko_withdrawals{{state=\"{}\"}} {n}\n", st.name()),
            );
        }
        let _ = std::fmt::Write::write_str(
            &mut out,
            "# HELP kinko_withdrawals_halted 1 when an asset's withdrawals are halted.\n# TYPE kinko_withdrawals_halted gauge\n",
        );
        let global = m.engine.admin().global_halt.is_some();
        for a in m.engine.assets() {
            let _ = std::fmt::Write::write_fmt(
                &mut out,
                format_args!(
                    "kinko_withdrawals_halted{{asset=\"{}\"}} {}\n",
                    a.code.as_str(),
                    i64::from(global || !a.switches.withdrawals)
                ),
            );
        }
        metrics::gauge(
            &mut out,
            "kinko_incidents_open",
            "Open incidents (unapproved outflows, shortfalls): each is a critical alert.",
            i64::try_from(m.engine.admin().open_incidents().count()).unwrap_or(i64::MAX),
        );
        metrics::gauge(
            &mut out,
            "kinko_engine_halted",
            "1 when the engine has halted after an integrity failure.",
            i64::from(m.engine.halted().is_some()),
        );
    }
    let mut node = BTreeMap::new();
    if let Some(ops) = g.custody.get().cloned() {
        let assets: Vec<String> = g
            .hot_limits
            .get()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default();
        node = tokio::task::spawn_blocking(move || {
            assets
                .into_iter()
                .filter_map(|a| ops.balances(&a).ok().map(|b| (a, b)))
                .collect::<BTreeMap<_, _>>()
        })
        .await
        .unwrap_or_default();
    }
    metrics::render_state(&mut out, &g, &node);
    let components = g.health.snapshot();
    if !components.is_empty() {
        let _ = std::fmt::Write::write_str(
            &mut out,
            "# HELP kinko_component_up 1 when a component (journal, node, signer, custody loop) works.\n# TYPE kinko_component_up gauge\n",
        );
        for (name, c) in &components {
            let _ = std::fmt::Write::write_fmt(
                &mut out,
                format_args!("kinko_component_up{{component=\"{name}\"}} {}\n", i64::from(c.up)),
            );
        }
        let _ = std::fmt::Write::write_str(
            &mut out,
            "# HELP kinko_component_failures Consecutive failures of a component since it last worked.\n# TYPE kinko_component_failures gauge\n",
        );
        for (name, c) in &components {
            let _ = std::fmt::Write::write_fmt(
                &mut out,
                format_args!(
                    "kinko_component_failures{{component=\"{name}\"}} {}\n",
                    c.failures
                ),
            );
        }
    }
    let mut r = out.into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// Behind a trusted proxy, the client is the address the proxy names: the request's
/// `ConnectInfo` is replaced before anything reads it (per-IP limits, key allowlists, logs, the
/// WebSocket). From any other peer the forwarding headers are ignored.
async fn real_client(State(g): State<AppState>, mut req: Request, next: Next) -> Response {
    if !g.config.trusted_proxies.is_empty() {
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        if let Some(peer) = peer {
            let trusted = |ip: &IpAddr| {
                kinko_core::keys::ip_allowed(&g.config.trusted_proxies, &ip.to_canonical().to_string())
            };
            if trusted(&peer.ip()) {
                if let Some(client) = forwarded_client(req.headers(), &trusted) {
                    req.extensions_mut()
                        .insert(ConnectInfo(SocketAddr::new(client, peer.port())));
                }
            }
        }
    }
    next.run(req).await
}

/// The client a chain of trusted proxies names: the rightmost address in `Forwarded` (`for=`)
/// or, without it, `X-Forwarded-For` that is not itself a trusted proxy (addresses to its left
/// were written by the client and prove nothing). `None` when the headers name no address.
fn forwarded_client(headers: &axum::http::HeaderMap, trusted: &dyn Fn(&IpAddr) -> bool) -> Option<IpAddr> {
    let mut hops: Vec<IpAddr> = Vec::new();
    let forwarded: Vec<&str> = headers
        .get_all(axum::http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        for element in forwarded.iter().flat_map(|v| v.split(',')) {
            for pair in element.split(';') {
                let Some((k, v)) = pair.trim().split_once('=') else {
                    continue;
                };
                if k.trim().eq_ignore_ascii_case("for") {
                    hops.extend(parse_hop(v.trim().trim_matches('"')));
                }
            }
        }
    } else {
        for v in headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            hops.extend(v.split(',').filter_map(|h| parse_hop(h.trim())));
        }
    }
    hops.iter()
        .rev()
        .find(|ip| !trusted(ip))
        .or(hops.first())
        .copied()
}

/// One hop: `203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn parse_hop(h: &str) -> Option<IpAddr> {
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = h.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    h.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

/// Serves until `shutdown` resolves, then closes WebSocket connections and drains in-flight
/// requests, for at most the configured timeout.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let timeout = state.config.shutdown_timeout;
    let (hub, signal) = (state.clone(), state.clone());
    // The sign-in failure counters reach their file within a second, and at shutdown.
    let flusher = {
        let g = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                let g = g.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || g.failures.flush()).await {
                    tracing::warn!(error = %e, "cannot write the sign-in throttle file");
                }
            }
        })
    };
    let last = state.clone();
    let r = serve_until(listener, state, shutdown, timeout, hub, signal).await;
    flusher.abort();
    if let Err(e) = tokio::task::spawn_blocking(move || last.failures.flush())
        .await
        .unwrap_or(Ok(()))
    {
        tracing::warn!(error = %e, "cannot write the sign-in throttle file");
    }
    r
}

async fn serve_until(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    timeout: Duration,
    hub: AppState,
    signal: AppState,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        // Upgraded connections are not the HTTP server's to drain: tell them to close.
        signal.ws.close_all();
        let _ = tx.send(());
    });
    let mut server = std::pin::pin!(std::future::IntoFuture::into_future(server));
    tokio::select! {
        r = async {
            let r = (&mut server).await;
            hub.ws.close_all();
            hub.ws.drained().await;
            r
        } => r,
        _ = async { let _ = rx.await; tokio::time::sleep(timeout).await } => {
            tracing::warn!(timeout_s = timeout.as_secs(), "in-flight requests did not finish in time; closing");
            Ok(())
        }
    }
}

/// Submits an identity command and returns its reply.
pub(crate) async fn identity(
    g: &AppState,
    c: kinko_core::identity::IdentityCommand,
) -> error::ApiResult<kinko_core::identity::IdentityReply> {
    match g.submit(kinko_core::Command::Identity(c)).await?.reply? {
        kinko_core::Reply::Identity(r) => Ok(r),
        other => Err(error::unexpected(&other)),
    }
}
