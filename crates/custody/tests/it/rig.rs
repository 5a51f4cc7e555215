//! A test rig: node, engine, signer, custody service. Users are registered with a TOTP factor
//! through journaled identity commands (the gateway's part is tested elsewhere).

use kinko_api::vault::Vault;
use kinko_chain::keys::{ColdKeys, WatchKey};
use kinko_chain::regtest::RegtestNode;
use kinko_chain::rpc::Rpc;
use kinko_chain::Network;
use kinko_core::identity::{Action, IdentityCommand, IdentityReply, ProofFactor, SessionLevel, StepUp, Via};
use kinko_core::wallet::{AddressId, Withdrawal};
use kinko_core::{Amount, AssetCode, AssetId, Command, Reject, Reply, UserId};
use kinko_custody::{Custody, CustodyConfig, UtxoChain};
use kinko_engine::health::Health;
use kinko_engine::link::EngineLink;
use kinko_engine::ports::ChainAdapter;
use kinko_engine::EngineConfig;
use kinko_signer::keystore::KdfParams;
use kinko_signer::{Keystore, ManualClock, Role, Server};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const NET: Network = Network::LitecoinRegtest;
pub const COIN: u64 = 100_000_000;
pub const PASSPHRASE: &str = "correct horse battery staple";
const PASSWORD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
/// What the signer waits before it uses a new address or factor (its own clock).
pub const SIGNER_WAIT_S: u64 = 3_600;

pub struct Options {
    pub confirmations: u32,
    /// Final (spendable, withdrawals completed) at this depth.
    pub finality_depth: u32,
    pub hot_cap: u64,
    /// The hot wallet's share of customer funds (basis points); all of it unless a test sweeps.
    pub hot_share_bps: u32,
    pub per_tx_max: u64,
    /// Polls without reconciliation before withdrawals halt.
    pub reconcile_failures_max: u32,
    /// Blocks below the tip a scan restarts from when the node does not know its cursor.
    pub rescan_depth: u32,
    /// Sweeps wait for company funds to pay their miner fee (the production default).
    pub sweep_waits_for_company_funds: bool,
    /// The fee rate (sat/vB; the regtest node has no estimate).
    pub fee_rate_sat_vb: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            confirmations: 2,
            finality_depth: 2,
            hot_cap: 1_000 * COIN,
            hot_share_bps: 10_000,
            per_tx_max: 100 * COIN,
            reconcile_failures_max: kinko_custody::config::RECONCILE_FAILURES_MAX_DEFAULT,
            rescan_depth: kinko_custody::config::RESCAN_DEPTH_DEFAULT,
            sweep_waits_for_company_funds: true,
            fee_rate_sat_vb: 10,
        }
    }
}

pub struct Rig {
    pub node: RegtestNode,
    pub dir: tempfile::TempDir,
    pub engine: kinko_engine::launch::Node,
    pub link: EngineLink,
    pub vault: Arc<Vault>,
    pub clock: Arc<ManualClock>,
    /// The signer (`None` while a fault test has it stopped).
    pub signer: Option<Server>,
    signer_config: String,
    hot_keystore: PathBuf,
    pub signer_socket: PathBuf,
    pub custody: Custody,
    pub asset: AssetId,
    pub hot_key: WatchKey,
    pub cold_keystores: Vec<PathBuf>,
    pub chain: UtxoChain,
    /// The registry the gateway would hold: custody reports `node:LTC`, `signer:LTC`, ...
    pub health: Health,
    /// Each user's session hash and TOTP secret (what the user's device holds).
    users: std::sync::Mutex<std::collections::BTreeMap<UserId, UserDevice>>,
}

/// A user's session hash and TOTP secret.
type UserDevice = ([u8; 32], Vec<u8>);

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn keystore(dir: &std::path::Path, name: &str, role: Role) -> (PathBuf, WatchKey) {
    let path = dir.join(name);
    Keystore::create_with(&path, NET, role, PASSPHRASE, KdfParams::TEST_FAST).expect("keystore");
    let k = Keystore::open_with(&path, PASSPHRASE, true).expect("open keystore");
    (path, k.watch_key().clone())
}

fn start_signer(
    config: &str,
    dir: &std::path::Path,
    keystore: &std::path::Path,
    clock: &Arc<ManualClock>,
) -> Server {
    let config = kinko_signer::Config::parse(config, dir).expect("signer config");
    let keys = Keystore::open_with(keystore, PASSPHRASE, true).unwrap();
    Server::start(config, keys, clock.clone()).expect("signer starts")
}

impl Rig {
    pub fn start(o: Options) -> Rig {
        let node = RegtestNode::start().expect("litecoind regtest (run scripts/install-test-deps)");
        node.miner();
        let dir = tempfile::tempdir().unwrap();
        // Keys: the hot one for the signer, three cold keyholders' on "their own machines".
        let (hot_path, hot_key) = keystore(dir.path(), "hot.keystore", Role::Hot);
        let cold: Vec<(PathBuf, WatchKey)> = (1..=3)
            .map(|i| keystore(dir.path(), &format!("cold{i}.keystore"), Role::Cold))
            .collect();
        let cold_keys = ColdKeys {
            threshold: 2,
            keys: cold.iter().map(|(_, k)| k.clone()).collect(),
        };
        // The engine.
        let engine = kinko_engine::launch::open(&EngineConfig::new(dir.path().join("data"))).unwrap();
        let link = EngineLink::new(engine.sequencer.handle(), engine.read.clone());
        let r = link
            .submit(Command::DefineAsset {
                code: AssetCode::new("LTC").unwrap(),
                decimals: 8,
            })
            .unwrap()
            .unwrap();
        let asset = match r {
            Reply::AssetDefined { asset, .. } => asset,
            other => panic!("{other:?}"),
        };
        // The signer.
        let socket = dir.path().join("signer").join("signer.sock");
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let cold_list = cold_keys
            .keys
            .iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            r#"
network = "litecoin-regtest"
asset = "LTC"
asset_id = {asset_id}
keystore = "{keystore}"
log = "{log}"
socket = "{socket}"
[policy]
per_tx_max_sats = {per_tx}
window_s = 86400
window_max_sats = {window}
address_cooling_s = {wait}
credential_maturity_s = {wait}
registration_maturity_s = {wait}
totp_budget_sats = {window}
proof_max_age_s = 21600
fee_max_sats = 1000000
[review]
# The rig withdraws up to 9 coins without reviewers (its own rows set reviews up): the
# signer's own dual-approval amount is set above that, explicitly.
dual_approval_sats = 1000000000
[webauthn]
rp_id = "localhost"
origins = ["http://localhost:8080"]
[cold]
threshold = 2
keys = [{cold_list}]
"#,
            asset_id = asset.0,
            keystore = hot_path.display(),
            log = dir.path().join("signer.log").display(),
            socket = socket.display(),
            per_tx = o.per_tx_max,
            window = o.per_tx_max * 3,
            wait = SIGNER_WAIT_S,
        );
        let clock = Arc::new(ManualClock::at_system_now());
        let signer = start_signer(&config, dir.path(), &hot_path, &clock);
        let vault = Arc::new(Vault::from_key([7; 32]));
        let cfg = CustodyConfig {
            asset: "LTC".into(),
            network: NET,
            rpc_url: node.url(),
            rpc_user: node.user().into(),
            rpc_password: node.password().into(),
            wallet_prefix: "kinko-ltc".into(),
            hot_key: hot_key.clone(),
            cold: cold_keys,
            signer_socket: socket.clone(),
            confirmations: o.confirmations,
            finality_depth: o.finality_depth,
            poll: Duration::from_millis(50),
            fee_rate_sat_vb: o.fee_rate_sat_vb,
            hot_share_bps: o.hot_share_bps,
            hot_cap: o.hot_cap,
            lookahead: 40,
            reconcile: true,
            full_reconcile_every: kinko_custody::config::FULL_RECONCILE_EVERY_DEFAULT,
            cursor_dir: Some(dir.path().join("data").join("custody")),
            rescan_depth: o.rescan_depth,
            reconcile_failures_max: o.reconcile_failures_max,
            sweep_waits_for_company_funds: o.sweep_waits_for_company_funds,
        };
        let health = Health::new();
        let custody = Custody::new(cfg, link.clone(), Some(vault.clone())).with_health(health.clone());
        Rig {
            chain: UtxoChain::new("LTC", NET, hot_key.clone()),
            health,
            node,
            dir,
            engine,
            link,
            vault,
            clock,
            signer: Some(signer),
            signer_config: config,
            hot_keystore: hot_path.clone(),
            signer_socket: socket,
            custody,
            asset,
            hot_key,
            cold_keystores: cold.into_iter().map(|(p, _)| p).collect(),
            users: Default::default(),
        }
    }

    /// Stops the signer (its socket goes away), as a crash would.
    pub fn stop_signer(&mut self) {
        if let Some(s) = self.signer.take() {
            s.stop();
        }
    }

    /// Starts the signer again from its keystore, log and configuration.
    pub fn start_signer(&mut self) {
        assert!(self.signer.is_none(), "the signer runs already");
        self.signer = Some(start_signer(
            &self.signer_config,
            self.dir.path(),
            &self.hot_keystore,
            &self.clock,
        ));
    }

    pub fn miner(&self) -> Rpc {
        self.node.miner()
    }

    pub fn poll(&mut self) {
        self.custody.poll().expect("custody poll");
    }

    pub fn run(&self, cmd: Command) -> Result<Reply, Reject> {
        self.link.submit(cmd).expect("engine available")
    }

    pub fn mine(&self, n: u32) {
        self.node.mine(n);
    }

    /// A user with a full session and TOTP; returns (user, session hash, TOTP secret).
    pub fn user(&self, n: u32) -> (UserId, [u8; 32], Vec<u8>) {
        let r = self
            .run(Command::Identity(IdentityCommand::Register {
                email: format!("user{n}@example.com"),
                password_hash: PASSWORD_HASH.into(),
            }))
            .unwrap();
        let Reply::Identity(IdentityReply::Registered(user)) = r else {
            panic!("{r:?}")
        };
        let session = *blake3::hash(format!("session {n}").as_bytes()).as_bytes();
        self.run(Command::Identity(IdentityCommand::OpenSession {
            user,
            token_hash: session,
            level: SessionLevel::Full,
            expires_ns: now_ns() + 86_400_000_000_000,
            device: "rig".into(),
            ip: "127.0.0.1".into(),
            password_hash_digest: *blake3::hash(PASSWORD_HASH.as_bytes()).as_bytes(),
        }))
        .unwrap();
        let secret: Vec<u8> = (0..20)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(n as u8))
            .collect();
        // As the gateway does: the raw secret, sealed under the master key.
        let sealed = self.vault.seal(&secret);
        self.run(Command::Identity(IdentityCommand::EnrolTotp {
            user,
            sealed_secret: sealed,
            first_step: now_ns() / 30_000_000_000 - 1,
            proof: None,
            recovery: vec![],
        }))
        .unwrap();
        self.users.lock().unwrap().insert(user, (session, secret.clone()));
        (user, session, secret)
    }

    /// A TOTP proof of `user` for `action`, at the next time step the engine has not seen.
    pub fn totp_proof(&self, user: UserId, secret: &[u8], action: &Action) -> StepUp {
        let now = now_ns();
        let last = self
            .link
            .view(|e| e.identity().user(user).map_or(0, |u| u.last_totp_step));
        let step = (now / 30_000_000_000).max(last + 1);
        let code = format!("{:06}", kinko_api::totp::code_at(secret, step));
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&now.to_be_bytes());
        nonce[8..].copy_from_slice(&step.to_be_bytes());
        StepUp {
            action: action.digest(),
            issued_ns: now,
            nonce,
            factor: ProofFactor::Totp { step, code },
        }
    }

    /// A deposit address of `user`, derived as the gateway does.
    pub fn deposit_address(&self, user: UserId) -> String {
        let index = self.link.view(|e| e.wallet().deposit_address_count(self.asset)) as u32;
        let address = self.chain.deposit_address("LTC", user, 0, index).unwrap();
        self.run(Command::AssignDepositAddress {
            user,
            asset: self.asset,
            address: address.clone(),
        })
        .unwrap();
        address
    }

    /// Sends `coins` (a decimal) from the miner to a new deposit address of `user`, mines the
    /// confirmations and polls twice: credited (and swept, if above the hot limit).
    pub fn deposit(&mut self, user: UserId, coins: &str) {
        let address = self.deposit_address(user);
        self.poll();
        self.miner().send_to_address(&address, coins).unwrap();
        self.mine(2);
        self.poll();
        self.poll();
    }

    /// Sends `coins` (a decimal) from the miner to the company's own address, mines the
    /// confirmations and polls: credited to the company treasury.
    pub fn fund_company(&mut self, coins: &str) {
        self.poll();
        let address = self.custody.company_address().unwrap();
        self.miner().send_to_address(&address, coins).unwrap();
        self.mine(2);
        self.poll();
    }

    /// A whitelisted withdrawal address, approved by the user's TOTP code (usable at once in
    /// the engine; the signer takes it with that approval, TOTP-grade).
    pub fn withdrawal_address(&self, user: UserId, address: &str) -> AddressId {
        let (session, secret) = self.users.lock().unwrap()[&user].clone();
        let action = Action::AddWithdrawalAddress {
            user,
            asset: self.asset,
            address: address.into(),
            label: "mine".into(),
        };
        match self
            .run(Command::AddWithdrawalAddress {
                user,
                asset: self.asset,
                address: address.into(),
                label: "mine".into(),
                cooling_ns: 0,
                by: kinko_core::engine::AddressAuth::User {
                    via: Via::Session(session),
                    proof: self.totp_proof(user, &secret, &action),
                },
            })
            .unwrap()
        {
            Reply::WithdrawalAddress(a) => a.id,
            other => panic!("{other:?}"),
        }
    }

    /// Requests a withdrawal with a TOTP proof for exactly it.
    pub fn withdraw(
        &self,
        (user, session, secret): &(UserId, [u8; 32], Vec<u8>),
        address: AddressId,
        amount: u64,
    ) -> Result<Withdrawal, Reject> {
        let action: Action = self.link.view(|e| {
            e.wallet()
                .withdrawal_action(*user, address, Amount(amount.into()), None)
                .unwrap()
        });
        let proof = self.totp_proof(*user, secret, &action);
        match self.run(Command::RequestWithdrawal {
            user: *user,
            address,
            amount: Amount(amount.into()),
            client_id: None,
            via: Via::Session(*session),
            proof,
        })? {
            Reply::Withdrawal(w) => Ok(w),
            other => panic!("{other:?}"),
        }
    }

    pub fn withdrawal(&self, id: kinko_core::wallet::WithdrawalId) -> Withdrawal {
        self.link.view(|e| e.wallet().withdrawal(id).unwrap().clone())
    }

    pub fn system(&self, which: kinko_core::SystemAccount) -> i128 {
        self.link.view(|e| {
            let id = e.asset(self.asset).unwrap().system_account(which);
            e.ledger().account(id).unwrap().balance()
        })
    }

    pub fn customer(&self, user: UserId) -> (i128, u128) {
        self.link.view(|e| {
            let id = e.ledger().customer_account(user, self.asset).unwrap();
            let a = e.ledger().account(id).unwrap();
            (a.balance(), a.available())
        })
    }

    /// Lets the signer's own waiting periods pass (its clock only).
    pub fn signer_waits(&self) {
        self.clock.advance_s(SIGNER_WAIT_S + 1);
    }

    /// Incidents not yet resolved.
    pub fn open_incidents(&self) -> Vec<kinko_core::admin::Incident> {
        self.link.view(|e| e.admin().open_incidents().cloned().collect())
    }

    /// Whether the asset's withdrawals are switched on.
    pub fn withdrawals_on(&self) -> bool {
        self.link
            .view(|e| e.asset(self.asset).unwrap().switches.withdrawals)
    }

    /// A fresh custody service on the same node, engine and signer (a restart).
    pub fn restarted(&self) -> Custody {
        Custody::new(self.custody.config().clone(), self.link.clone(), None).with_health(self.health.clone())
    }

    /// The engine's audit: balanced ledger, holds as recorded.
    pub fn audit(&self) {
        self.engine
            .sequencer
            .handle()
            .audit()
            .expect("engine audit passes");
    }
}
