//! A real gateway on a loopback port over a real journal in a temporary directory, with assets
//! BTC (8), ETH (18), USD (6), markets BTC-USD and ETH-USD, and funded users.
//!
//! Every user is a real account, set up through the HTTP API the way a person would: registered,
//! signed in (a full session: no factor yet), a passkey enrolled from a software ES256
//! authenticator ([`Authenticator`], attestation format "none") as the first factor, TOTP
//! confirmed with a passkey step-up (the code of the previous 30 s step, so that the current and
//! the next step are still free for the test), then a native API key with every scope (IP
//! allowlist 127.0.0.1: the server sees the loopback address) created with a passkey step-up.
//! The Coinbase-style key (no HTTP endpoint makes one) is a `CreateApiKey` command carrying a
//! passkey proof the harness signs itself. While the users are set up the security-change lock
//! is 0 (enrolling the second factor would otherwise lock withdrawals for a day); afterwards the
//! default identity policy applies again. The setup goes through a gateway of its own; the test
//! gets a fresh one with its configuration (rate limits, failure counters untouched by the setup).
//! Test servers hash passwords cheaply and accept [`OPERATOR_TOKEN`] on the operator endpoints.
//!
//! Sensitive requests: [`TestServer::with_step_up`] sends, reads the `STEP_UP_REQUIRED`
//! challenge, answers it (a passkey assertion by default: no waiting) and sends again.
#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ciborium::value::Value as Cbor;
use kinko_api::password::Cost;
use kinko_api::server::Http;
use kinko_api::vault::{new_coinbase_key, random_bytes, Vault};
use kinko_api::{ApiConfig, AppState};
use kinko_core::engine::{Command, Reply};
use kinko_core::identity::{challenge_bytes, Action, IdentityCommand, Policy, ProofFactor, StepUp, Via};
use kinko_core::keys::Permissions;
use kinko_core::market::{FeeTier, MarketSpec};
use kinko_core::{Amount, AssetCode, AssetId, UserId};
use kinko_engine::launch::{open, Node};
use kinko_engine::EngineConfig;
use kinko_sim::SimChain;
use p256::ecdsa::signature::Signer as _;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The operator token of every test server (`ApiConfig.operator_token_hash`).
pub const OPERATOR_TOKEN: &str = "kinko-test-operator-token";
/// The WebAuthn relying-party id the gateway uses by default.
pub const RP_ID: &str = "localhost";
/// argon2id at a cost that keeps test servers quick (production uses the OWASP default).
pub const CHEAP_PASSWORD_COST: Cost = Cost {
    memory_kib: 64,
    passes: 1,
};

/// A software passkey: a P-256 key that answers WebAuthn ceremonies as an authenticator would
/// (user present and verified, signature counter increasing by one per assertion).
pub struct Authenticator {
    key: p256::ecdsa::SigningKey,
    pub credential_id: Vec<u8>,
    counter: AtomicU32,
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

pub fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).unwrap()
}

fn cbor(v: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).unwrap();
    out
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new()
    }
}

impl Authenticator {
    pub fn new() -> Authenticator {
        // A random scalar is out of range with probability about 2^-32: a few tries suffice.
        let key = (0..8)
            .find_map(|_| p256::ecdsa::SigningKey::from_slice(&random_bytes::<32>()).ok())
            .expect("a valid P-256 scalar");
        Authenticator {
            key,
            credential_id: random_bytes::<16>().to_vec(),
            counter: AtomicU32::new(0),
        }
    }

    pub fn credential_id_b64(&self) -> String {
        b64(&self.credential_id)
    }

    /// The `PublicKeyCredential` JSON `navigator.credentials.create` would give for the
    /// challenge (base64url, as in the creation options) at `origin`.
    pub fn register(&self, challenge_b64: &str, origin: &str) -> Value {
        let point = self.key.verifying_key().to_encoded_point(false);
        let int = |i: i64| Cbor::Integer(i.into());
        let cose = Cbor::Map(vec![
            (int(1), int(2)),  // kty: EC2
            (int(3), int(-7)), // alg: ES256
            (int(-1), int(1)), // crv: P-256
            (int(-2), Cbor::Bytes(point.x().unwrap().to_vec())),
            (int(-3), Cbor::Bytes(point.y().unwrap().to_vec())),
        ]);
        let mut auth_data = Sha256::digest(RP_ID.as_bytes()).to_vec();
        auth_data.push(0x45); // user present, user verified, attested credential data
        auth_data.extend_from_slice(&0u32.to_be_bytes());
        auth_data.extend_from_slice(&[0u8; 16]); // AAGUID
        auth_data.extend_from_slice(&(self.credential_id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&self.credential_id);
        auth_data.extend_from_slice(&cbor(&cose));
        let text = |s: &str| Cbor::Text(s.into());
        let attestation = Cbor::Map(vec![
            (text("fmt"), text("none")),
            (text("attStmt"), Cbor::Map(Vec::new())),
            (text("authData"), Cbor::Bytes(auth_data)),
        ]);
        let client_data =
            json!({"type": "webauthn.create", "challenge": challenge_b64, "origin": origin}).to_string();
        json!({
            "id": self.credential_id_b64(),
            "rawId": self.credential_id_b64(),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(client_data.as_bytes()),
                "attestationObject": b64(&cbor(&attestation)),
            },
        })
    }

    /// An assertion over `challenge` as (authenticatorData, clientDataJSON, DER signature), with
    /// the next counter value; `type_` and `origin` go into the client data as given.
    pub fn sign(&self, challenge: &[u8], origin: &str, type_: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let count = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let mut auth_data = Sha256::digest(RP_ID.as_bytes()).to_vec();
        auth_data.push(0x05); // user present, user verified
        auth_data.extend_from_slice(&count.to_be_bytes());
        let client_data = json!({"type": type_, "challenge": b64(challenge), "origin": origin})
            .to_string()
            .into_bytes();
        let signed = [&auth_data[..], &Sha256::digest(&client_data)[..]].concat();
        let sig: p256::ecdsa::Signature = self.key.sign(&signed);
        (auth_data, client_data, sig.to_der().as_bytes().to_vec())
    }

    /// The assertion JSON `navigator.credentials.get` would give, over `challenge` at `origin`.
    pub fn assert_with(&self, challenge: &[u8], origin: &str) -> Value {
        let (auth_data, client_data, sig) = self.sign(challenge, origin, "webauthn.get");
        json!({
            "id": self.credential_id_b64(),
            "rawId": self.credential_id_b64(),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&client_data),
                "authenticatorData": b64(&auth_data),
                "signature": b64(&sig),
            },
        })
    }
}

pub struct User {
    pub id: UserId,
    pub email: String,
    pub password: String,
    /// Native API key `<id>.<secret>`: view, trade and withdraw, usable from 127.0.0.1.
    pub token: String,
    /// A full session (`kss_…`).
    pub session: String,
    pub cb_key: String,
    pub cb_secret: String,
    pub cb_passphrase: String,
    /// The raw TOTP secret.
    pub totp_secret: Vec<u8>,
    /// The newest TOTP step this harness has handed out (or the server consumed).
    last_totp_step: AtomicU64,
    pub passkey: Authenticator,
    /// The recovery codes shown when the first factor was enrolled.
    pub recovery_codes: Vec<String>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl User {
    /// A TOTP code for a step never handed out before, as `(step, code)`. The server accepts
    /// the previous, the current and the next step, each once: this waits for the next 30 s
    /// step only when all of those are used. Prefer passkeys in tests that need several proofs.
    pub async fn totp(&self) -> (u64, String) {
        for _ in 0..4 {
            let ms = unix_ms();
            let now = ms / 30_000;
            let left_ms = 30_000 - ms % 30_000;
            let mut step = self
                .last_totp_step
                .load(Ordering::SeqCst)
                .saturating_add(1)
                .max(now - 1);
            // The previous step goes stale at the next boundary: too close to it, skip it.
            if step + 1 == now && left_ms < 2_000 {
                step = now;
            }
            if step <= now + 1 {
                self.last_totp_step.store(step, Ordering::SeqCst);
                return (step, self.totp_at(step));
            }
            tokio::time::sleep(Duration::from_millis(left_ms + 100)).await;
        }
        panic!("no TOTP step became free");
    }

    /// The code of `step` (whether used or not).
    pub fn totp_at(&self, step: u64) -> String {
        format!("{:06}", kinko_api::totp::code_at(&self.totp_secret, step))
    }

    /// `step_up` with a fresh TOTP code for `challenge` (optional for TOTP).
    pub async fn step_up_totp(&self, challenge: Option<&str>) -> Value {
        let (_, code) = self.totp().await;
        match challenge {
            Some(c) => json!({"challenge": c, "totp": code}),
            None => json!({"totp": code}),
        }
    }

    /// `step_up` with a passkey assertion over `challenge` (base64url) at `origin`.
    pub fn step_up_passkey(&self, challenge: &str, origin: &str) -> Value {
        json!({"challenge": challenge, "webauthn": self.passkey.assert_with(&unb64(challenge), origin)})
    }

    /// A passkey proof for `action`, for commands submitted directly.
    pub fn proof(&self, action: &Action, origin: &str) -> StepUp {
        let issued_ns = kinko_api::auth::now_ns();
        let nonce = random_bytes::<16>();
        let challenge = challenge_bytes(issued_ns, &nonce, &action.digest());
        let (authenticator_data, client_data_json, signature) =
            self.passkey.sign(&challenge, origin, "webauthn.get");
        StepUp {
            action: action.digest(),
            issued_ns,
            nonce,
            factor: ProofFactor::Passkey {
                credential_id: self.passkey.credential_id.clone(),
                authenticator_data,
                client_data_json,
                signature,
            },
        }
    }

    /// How a request through this user's session reaches the engine.
    pub fn via_session(&self) -> Via {
        Via::Session(kinko_api::auth::session_hash(&self.session))
    }
}

/// How [`TestServer::with_step_up_as`] answers a challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Factor {
    Passkey,
    Totp,
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub node: Option<Node>,
    pub gateway: AppState,
    pub http: Option<Http>,
    pub base: String,
    /// `http://localhost:<port>`: the WebAuthn origin the gateway expects.
    pub origin: String,
    pub client: reqwest::Client,
    pub users: Vec<User>,
    pub btc_usd_address: String,
    /// Two treasury admins with passkeys, made at first use ([`TestServer::quorum`]).
    quorum: tokio::sync::OnceCell<[User; 2]>,
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

/// `config` without rate limits, for a test that sends many requests in a row about something
/// else (shapes, malformed input, shutdown): the default limits are those of a real exchange
/// and would answer 429 half-way through. Tests of the limits themselves use the defaults.
pub fn without_rate_limits(config: ApiConfig) -> ApiConfig {
    let off = kinko_api::ratelimit::Rate {
        burst: 1,
        per_second: 0,
    };
    ApiConfig {
        rate_per_key: off,
        rate_private_per_key: off,
        rate_per_ip: off,
        rate_public_per_ip: off,
        ..config
    }
}

/// The test configuration: a loopback port, cheap password hashing, the operator token.
fn test_config(mut config: ApiConfig, operator: bool) -> ApiConfig {
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.identity.password_cost = CHEAP_PASSWORD_COST;
    if !operator {
        config.operator_token_hash = None;
    } else if config.operator_token_hash.is_none() {
        config.operator_token_hash = Some(kinko_api::stepup::operator_token_hash(OPERATOR_TOKEN));
    }
    config
}

async fn read_response(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

impl TestServer {
    /// Starts with `users` funded users (10 BTC, 100 ETH, 1,000,000 USD each).
    pub async fn start(users: u64) -> TestServer {
        TestServer::start_with(users, ApiConfig::default()).await
    }

    pub async fn start_with(users: u64, config: ApiConfig) -> TestServer {
        TestServer::start_configured(users, config, true).await
    }

    /// With the operator API off: no operator token configured (a server started without
    /// `KINKO_OPERATOR_TOKEN`).
    pub async fn start_without_operator(users: u64, config: ApiConfig) -> TestServer {
        TestServer::start_configured(users, config, false).await
    }

    async fn start_configured(users: u64, config: ApiConfig, operator: bool) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut ec = EngineConfig::new(dir.path());
        ec.tick_ms = 20;
        let node = tokio::task::block_in_place(|| open(&ec)).unwrap();
        let sim = Arc::new(SimChain::new([9; 32], &["BTC", "ETH"]));
        let mut config = test_config(config, operator);
        // Sign-in failure counts in the test's data directory, as `kinko serve` keeps them.
        if config.throttle_file.is_none() {
            config.throttle_file = Some(dir.path().join(kinko_api::throttle::FILE_NAME));
        }
        // The users are set up through a gateway of their own, without rate limits (many
        // requests from loopback in a row; the setup is not what any limit is about); the test
        // then gets a fresh gateway (empty rate-limit buckets and failure counters) with its own.
        let unlimited = kinko_api::ratelimit::Rate {
            burst: 1,
            per_second: 0,
        };
        let setup_config = ApiConfig {
            rate_per_key: unlimited,
            rate_private_per_key: unlimited,
            rate_per_ip: unlimited,
            rate_public_per_ip: unlimited,
            throttle_file: None,
            ..config.clone()
        };
        let gateway = kinko_api::server::gateway(&node, Vault::from_key([5; 32]), setup_config, sim.clone());
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
        gateway.set_ready(true);
        let http = Http::start(gateway.clone()).await.unwrap();
        let mut s = TestServer {
            base: format!("http://{}", http.addr),
            origin: format!("http://localhost:{}", http.addr.port()),
            dir,
            node: Some(node),
            gateway: gateway.clone(),
            http: Some(http),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            users: Vec::new(),
            btc_usd_address: sim.address("withdraw/BTC/1"),
            quorum: tokio::sync::OnceCell::new(),
        };
        // Enrolling the second factor starts the security-change lock; the harness's users
        // start unlocked, and the default policy applies from then on.
        s.set_policy(Policy {
            security_lock_ns: 0,
            ..Policy::default()
        })
        .await;
        for i in 1..=users {
            let u = s.new_user(&format!("user{i}@kinko.test")).await;
            assert_eq!(u.id, UserId(i), "users are numbered in registration order");
            for (asset, code, amount) in [
                (BTC, "BTC", 10 * 100_000_000u128),
                (ETH, "ETH", 100 * 10u128.pow(18)),
                (USD, "USD", 1_000_000 * 1_000_000),
            ] {
                let address = sim.address(&format!("fund/{code}/{i}"));
                run(Command::AssignDepositAddress {
                    user: u.id,
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
            s.users.push(u);
        }
        s.set_policy(Policy::default()).await;
        s.gateway.caught_up().await.unwrap();
        s.http.take().unwrap().stop().await.unwrap();
        let gateway =
            kinko_api::server::gateway(s.node.as_ref().unwrap(), Vault::from_key([5; 32]), config, sim);
        gateway.set_ready(true);
        let http = Http::start(gateway.clone()).await.unwrap();
        s.base = format!("http://{}", http.addr);
        s.origin = format!("http://localhost:{}", http.addr.port());
        s.gateway = gateway;
        s.http = Some(http);
        s
    }

    /// Two treasury admins (`quorum-1@kinko.test`, `quorum-2@kinko.test`), each with a passkey
    /// and a full session, registered and given the role (the operator's bootstrap) the first
    /// time a test needs a two-admin approval, such as an address usable at once. The bootstrap
    /// must still be open then: call it before a test makes two security admins of its own.
    pub async fn quorum(&self) -> &[User; 2] {
        self.quorum
            .get_or_init(|| async {
                let mut admins = Vec::new();
                for n in 1..=2 {
                    let mut u = self.register(&format!("quorum-{n}@kinko.test")).await;
                    self.enrol_passkey(&mut u).await;
                    self.gateway
                        .submit(Command::Identity(IdentityCommand::SetRoles {
                            user: u.id,
                            roles: vec![kinko_core::identity::AdminRole::Treasury],
                            requested_by: "operator".into(),
                            reason: "the test's treasury quorum".into(),
                        }))
                        .await
                        .unwrap()
                        .reply
                        .expect("the roles bootstrap is open for the quorum admins");
                    admins.push(u);
                }
                let [a, b]: [User; 2] = admins.try_into().ok().unwrap();
                [a, b]
            })
            .await
    }

    /// Sets the engine's identity policy (security-change lock, proof freshness).
    pub async fn set_policy(&self, p: Policy) {
        self.gateway
            .submit(Command::Identity(IdentityCommand::SetPolicy(p)))
            .await
            .unwrap()
            .reply
            .unwrap();
    }

    /// Credits `amount` BTC to `u` through a deposit address of theirs and the simulated
    /// chain's commands (seen, then confirmed).
    pub async fn fund(&self, u: &User, amount: u128) {
        let (st, dep) = self
            .request(
                Method::POST,
                "/api/v1/deposit-addresses",
                Some(&u.token),
                Some(json!({"asset": "BTC"})),
            )
            .await;
        assert_eq!(st, 200, "{dep}");
        let run = |c: Command| async { self.gateway.submit(c).await.unwrap().reply.unwrap() };
        let Reply::Deposit(d) = run(Command::DepositSeen {
            asset: BTC,
            address: dep["address"].as_str().unwrap().to_owned(),
            txid: format!("{:064x}", u.id.0),
            vout: 0,
            amount: Amount(amount),
        })
        .await
        else {
            panic!("deposit")
        };
        run(Command::DepositConfirmed { deposit: d }).await;
    }

    /// Registers, signs in and enrols a user through the HTTP API (see the module comment).
    /// Not funded, not in `users`.
    pub async fn new_user(&self, email: &str) -> User {
        let mut u = self.register(email).await;
        self.enrol_passkey(&mut u).await;
        self.enrol_totp(&mut u).await;
        self.create_keys(&mut u).await;
        u
    }

    /// Registers `email` and signs in: a full session, no second factor yet (the passkey is
    /// made but not enrolled, there is no TOTP secret, no API key).
    pub async fn register(&self, email: &str) -> User {
        let password = format!("password of {email}");
        let (st, r) = self
            .request(
                Method::POST,
                "/api/v1/auth/register",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(st, 201, "register {email}: {r}");
        let id = UserId(r["user_id"].as_str().unwrap().parse().unwrap());
        let (st, r) = self
            .request(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"email": email, "password": password, "device": "test harness"})),
            )
            .await;
        assert_eq!((st, &r["level"]), (200, &json!("full")), "login {email}: {r}");
        User {
            id,
            email: email.to_owned(),
            password,
            token: String::new(),
            session: r["token"].as_str().unwrap().to_owned(),
            cb_key: String::new(),
            cb_secret: String::new(),
            cb_passphrase: String::new(),
            totp_secret: Vec::new(),
            last_totp_step: AtomicU64::new(0),
            passkey: Authenticator::new(),
            recovery_codes: Vec::new(),
        }
    }

    /// Enrols the user's passkey as its first factor (no proof needed; the recovery codes come
    /// with it).
    pub async fn enrol_passkey(&self, u: &mut User) {
        let (st, opts) = self
            .request(
                Method::POST,
                "/api/v1/me/passkeys/options",
                Some(&u.session),
                None,
            )
            .await;
        assert_eq!(st, 200, "passkey options: {opts}");
        assert_eq!(opts["public_key"]["rp"]["id"], RP_ID);
        let credential = u
            .passkey
            .register(opts["public_key"]["challenge"].as_str().unwrap(), &self.origin);
        let (st, r) = self
            .request(
                Method::POST,
                "/api/v1/me/passkeys",
                Some(&u.session),
                Some(json!({"enrolment": opts["enrolment"], "credential": credential, "label": "software key"})),
            )
            .await;
        assert_eq!(st, 200, "passkey registration: {r}");
        u.recovery_codes = serde_json::from_value(r["recovery_codes"].clone()).unwrap();
        assert_eq!(u.recovery_codes.len(), 10, "{r}");
    }

    /// Enrols TOTP, confirmed with a code and (the passkey being enrolled already) a passkey
    /// step-up.
    pub async fn enrol_totp(&self, u: &mut User) {
        let (st, r) = self
            .request(Method::POST, "/api/v1/me/totp", Some(&u.session), None)
            .await;
        assert_eq!(st, 200, "totp begin: {r}");
        u.totp_secret = kinko_api::totp::base32_decode(r["secret"].as_str().unwrap()).unwrap();
        let (_, code) = u.totp().await;
        let session = u.session.clone();
        let (st, r) = self
            .with_step_up_as(
                u,
                &session,
                Factor::Passkey,
                Method::POST,
                "/api/v1/me/totp/confirm",
                json!({"enrolment": r["enrolment"], "code": code}),
            )
            .await;
        assert_eq!(st, 200, "totp confirm: {r}");
        assert_eq!(
            r["recovery_codes"],
            json!([]),
            "the passkey brought the recovery codes"
        );
    }

    /// A native key and a Coinbase-style key, each with every scope, from loopback only.
    pub async fn create_keys(&self, u: &mut User) {
        let session = u.session.clone();
        let (st, r) = self
            .with_step_up_as(
                u,
                &session,
                Factor::Passkey,
                Method::POST,
                "/api/v1/me/api-keys",
                json!({
                    "label": "test",
                    "scopes": {"view": true, "trade": true, "withdraw": true},
                    "ip_allowlist": ["127.0.0.1"],
                }),
            )
            .await;
        assert_eq!(st, 201, "api key: {r}");
        u.token = r["token"].as_str().unwrap().to_owned();

        // No endpoint makes Coinbase-style keys: the command, with a passkey proof.
        let mut cb = new_coinbase_key(&self.gateway.vault, u.id, "test cb", Permissions::ALL);
        cb.record.ip_allowlist = vec!["127.0.0.1".into()];
        let action = Action::CreateWithdrawKey {
            user: u.id,
            label: cb.record.label.clone(),
            ip_allowlist: cb.record.ip_allowlist.clone(),
        };
        let proof = u.proof(&action, &self.origin);
        self.gateway
            .submit(Command::CreateApiKey {
                key: cb.record,
                proof: Some(proof),
            })
            .await
            .unwrap()
            .reply
            .unwrap();
        u.cb_key = cb.key;
        u.cb_secret = cb.secret;
        u.cb_passphrase = cb.passphrase;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Any JSON request with an optional bearer token (API key, session or operator token).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.client.request(method, self.url(path));
        if let Some(t) = bearer {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        read_response(r.send().await.unwrap()).await
    }

    /// Native GET as user `i` (0-based; `None` = anonymous). Returns status and JSON body.
    pub async fn get(&self, user: Option<usize>, path: &str) -> (u16, Value) {
        self.send(Method::GET, user, path, None).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        user: Option<usize>,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let token = user.map(|i| self.users[i].token.as_str());
        self.request(method, path, token, body).await
    }

    pub async fn post(&self, user: usize, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::POST, Some(user), path, Some(body))
            .await
    }

    /// The `step_up` answering `challenge` for `user` with `factor`.
    pub async fn step_up(&self, user: &User, factor: Factor, challenge: &str) -> Value {
        match factor {
            Factor::Passkey => user.step_up_passkey(challenge, &self.origin),
            Factor::Totp => user.step_up_totp(Some(challenge)).await,
        }
    }

    /// A sensitive request as user `i` with its API key, answered with a passkey: sends it,
    /// answers the `STEP_UP_REQUIRED` challenge and sends it again. Returns the last answer (the
    /// first when it was not a challenge).
    pub async fn with_step_up(&self, i: usize, method: Method, path: &str, body: Value) -> (u16, Value) {
        let u = &self.users[i];
        self.with_step_up_as(u, &u.token, Factor::Passkey, method, path, body)
            .await
    }

    /// As [`TestServer::with_step_up`], with any bearer token and factor.
    pub async fn with_step_up_as(
        &self,
        user: &User,
        bearer: &str,
        factor: Factor,
        method: Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let (st, r) = self
            .request(method.clone(), path, Some(bearer), Some(body.clone()))
            .await;
        if st != 403 || r["code"] != "STEP_UP_REQUIRED" {
            return (st, r);
        }
        let challenge = r["step_up"]["challenge"].as_str().unwrap();
        let mut body = body;
        body["step_up"] = self.step_up(user, factor, challenge).await;
        self.request(method, path, Some(bearer), Some(body)).await
    }

    /// Just the challenge of a sensitive request (which must answer `STEP_UP_REQUIRED`).
    pub async fn challenge(&self, bearer: &str, method: Method, path: &str, body: Value) -> String {
        let (st, r) = self.request(method, path, Some(bearer), Some(body)).await;
        assert_eq!((st, &r["code"]), (403, &json!("STEP_UP_REQUIRED")), "{path}: {r}");
        r["step_up"]["challenge"].as_str().unwrap().to_owned()
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
    /// (same users, sessions and keys, same configuration, a new port). Returns the state hash
    /// at the stop and the one recovery reports: they must be equal.
    pub async fn restart(mut self) -> (TestServer, [u8; 32], [u8; 32]) {
        let stopped = self.halt().await;
        let mut ec = EngineConfig::new(self.dir.path());
        ec.tick_ms = 20;
        let node = tokio::task::block_in_place(|| open(&ec)).unwrap();
        let recovered = node.report.state_hash;
        let sim = Arc::new(SimChain::new([9; 32], &["BTC", "ETH"]));
        let gateway =
            kinko_api::server::gateway(&node, Vault::from_key([5; 32]), self.gateway.config.clone(), sim);
        gateway.set_ready(true);
        let http = Http::start(gateway.clone()).await.unwrap();
        self.base = format!("http://{}", http.addr);
        self.origin = format!("http://localhost:{}", http.addr.port());
        self.node = Some(node);
        self.gateway = gateway;
        self.http = Some(http);
        (self, stopped, recovered)
    }

    /// Sends security messages to an outbox folder in the data directory from now on; returns
    /// the folder.
    pub fn use_outbox(&self) -> PathBuf {
        let dir = self.dir.path().join("outbox");
        self.gateway
            .set_mailer(Arc::new(kinko_api::mail::Outbox::new(dir.clone())));
        dir
    }

    /// Every `AuthFailed` audit record in the journal so far, as (user, ip, reason). Each is
    /// durable before the refused request is answered.
    pub fn auth_failures(&self) -> Vec<(Option<UserId>, String, String)> {
        let mut out = Vec::new();
        for r in kinko_journal::read_from(&self.dir.path().join("journal"), 1).unwrap() {
            let r = r.unwrap();
            if let Ok(Command::Identity(IdentityCommand::AuthFailed { user, ip, reason })) =
                kinko_engine::decode_command(r.kind, &r.payload)
            {
                out.push((user, ip, reason));
            }
        }
        out
    }

    /// The audit records of `user` whose reason contains `part`.
    pub fn auth_failures_of(&self, user: UserId, part: &str) -> usize {
        self.auth_failures()
            .iter()
            .filter(|(u, _, r)| *u == Some(user) && r.contains(part))
            .count()
    }
}

/// One message the outbox wrote.
#[derive(Clone, Debug)]
pub struct Mail {
    pub file: String,
    pub kind: String,
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// The messages in an outbox folder, in sending order.
pub fn outbox(dir: &Path) -> Vec<Mail> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".eml") && !n.starts_with('.'))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(dir.join(&file)).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let header = |name: &str| {
                head.split("\r\n")
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or("")
                    .to_owned()
            };
            Mail {
                kind: header("X-Kinko-Kind: "),
                to: header("To: "),
                subject: header("Subject: "),
                body: body.replace("\r\n", "\n"),
                file,
            }
        })
        .collect()
}

/// Waits (at most 10 s) until the outbox holds a message that `want` accepts; returns it.
pub async fn wait_for_mail(dir: &Path, want: impl Fn(&Mail) -> bool) -> Mail {
    wait_for_mails(dir, 1, want).await.remove(0)
}

/// Waits (at most 10 s) until the outbox holds at least `count` messages that `want` accepts;
/// returns them all, in sending order.
pub async fn wait_for_mails(dir: &Path, count: usize, want: impl Fn(&Mail) -> bool) -> Vec<Mail> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Mail> = outbox(dir).into_iter().filter(|m| want(m)).collect();
        if found.len() >= count {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {count} such messages; the outbox has {:#?}",
            outbox(dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The text after `marker` in `body`, up to the end of its word.
pub fn token_after(body: &str, marker: &str) -> String {
    let at = body
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in {body}"))
        + marker.len();
    body[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect()
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
    // Every user is a real account: a full session, TOTP and a passkey, recovery codes, and
    // withdrawals not locked by the enrolment.
    for u in &s.users {
        let (st, me) = s.request(Method::GET, "/api/v1/me", Some(&u.session), None).await;
        assert_eq!(st, 200, "{me}");
        assert_eq!(me["email"], u.email.as_str());
        assert_eq!(me["totp"], true);
        assert_eq!(me["passkeys"].as_array().unwrap().len(), 1);
        assert_eq!(me["passkeys"][0]["id"], u.passkey.credential_id_b64());
        assert_eq!(me["recovery_codes_left"], 10);
        assert_eq!(me["withdrawals_locked_until"], Value::Null);
        let (st, keys) = s
            .request(Method::GET, "/api/v1/me/api-keys", Some(&u.session), None)
            .await;
        assert_eq!(st, 200, "{keys}");
        let native = keys
            .as_array()
            .unwrap()
            .iter()
            .find(|k| u.token.starts_with(&format!("{}.", k["id"].as_str().unwrap())))
            .unwrap();
        assert_eq!(native["scopes"], json!(["view", "trade", "withdraw"]));
        assert_eq!(native["ip_allowlist"], json!(["127.0.0.1"]));
    }
    let policy = s.gateway.read.model().engine.identity().policy();
    assert_eq!(policy, Policy::default());
    s.stop().await;
}
