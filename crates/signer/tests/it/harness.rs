//! A signer in a temporary directory, served in-process on a real Unix socket, with a clock the
//! test moves; customers with a software passkey and a TOTP secret; PSBTs built from synthetic
//! UTXOs of the signer's own hot account.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bitcoin::bip32::Xpriv;
use bitcoin::hashes::Hash as _;
use bitcoin::psbt::Psbt;
use bitcoin::{OutPoint, ScriptBuf, Txid, WPubkeyHash};
use kinko_chain::keys::{
    cold_account_path, derive_hot, hot_account_path, watch_key, ColdKeys, Derived, WatchKey,
};
use kinko_chain::psbt::Utxo;
use kinko_chain::Network;
use kinko_core::identity::{challenge_bytes, Action};
use kinko_core::{Amount, AssetId, UserId};
use kinko_factors::webauthn::CredentialKey;
use kinko_signer::keystore::{KdfParams, Keystore, Role, Unlocked};
use kinko_signer::service::StartError;
use kinko_signer::{Clock, Config, ManualClock, Server};
use kinko_signer_proto::protocol::{ProofFactor, Request, Response, SecretBytes, StepUp, Withdrawal};
use kinko_signer_proto::SignerClient;
use p256::ecdsa::signature::Signer as _;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const PASS: &str = "test passphrase, not a real one";
pub const NET: Network = Network::LitecoinRegtest;
/// The signer's asset (its id on the wire).
pub const ASSET: u32 = 1;
pub const RP_ID: &str = "localhost";
pub const ORIGIN: &str = "http://localhost:8080";
pub const DAY_S: u64 = 86_400;
pub const NS: u64 = 1_000_000_000;
/// The policy of every test signer.
pub const PER_TX_MAX: u64 = 1_000_000;
pub const WINDOW_MAX: u64 = 1_500_000;
pub const FEE_MAX: u64 = 100_000;
pub const PROOF_MAX_AGE_S: u64 = 21_600;
/// How long a user's first factor takes to mature (the default `registration_maturity_s`).
pub const FIRST_MATURITY_S: u64 = 3 * DAY_S;
/// Each synthetic UTXO holds this much.
pub const UTXO_SATS: u64 = 10_000_000;
/// Fee rate of test PSBTs (sat/vB).
pub const FEE_RATE: u64 = 10;

pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).unwrap();
    b
}

/// Polls `f` until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A P2WPKH address of nobody in particular (an attacker's, a customer's).
pub fn some_address(tag: u8) -> (String, ScriptBuf) {
    let script = ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array([tag; 20]));
    (kinko_chain::address_for(NET, &script).unwrap(), script)
}

/// A software passkey (ES256), counter increasing by one per assertion.
pub struct Passkey {
    key: p256::ecdsa::SigningKey,
    pub credential_id: Vec<u8>,
    counter: AtomicU32,
}

impl Passkey {
    pub fn new() -> Passkey {
        let key = (0..8)
            .find_map(|_| p256::ecdsa::SigningKey::from_slice(&random::<32>()).ok())
            .expect("a valid P-256 scalar");
        Passkey {
            key,
            credential_id: random::<16>().to_vec(),
            counter: AtomicU32::new(0),
        }
    }

    /// `CredentialKey::to_bytes()` of its public key.
    pub fn public_key(&self) -> Vec<u8> {
        let point = self.key.verifying_key().to_encoded_point(false);
        let sec1: [u8; 65] = point.as_bytes().try_into().unwrap();
        CredentialKey::Es256 { sec1 }.to_bytes()
    }

    pub fn set_counter(&self, n: u32) {
        self.counter.store(n, Ordering::SeqCst);
    }

    /// (authenticatorData, clientDataJSON, DER signature) over `challenge`.
    pub fn sign(&self, challenge: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let count = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let mut auth_data = Sha256::digest(RP_ID.as_bytes()).to_vec();
        auth_data.push(0x05); // user present, user verified
        auth_data.extend_from_slice(&count.to_be_bytes());
        let client_data = json!({
            "type": "webauthn.get",
            "challenge": URL_SAFE_NO_PAD.encode(challenge),
            "origin": ORIGIN,
        })
        .to_string()
        .into_bytes();
        let signed = [&auth_data[..], &Sha256::digest(&client_data)[..]].concat();
        let sig: p256::ecdsa::Signature = self.key.sign(&signed);
        (auth_data, client_data, sig.to_der().as_bytes().to_vec())
    }
}

/// A customer with a whitelisted address, a passkey and a TOTP secret.
pub struct Customer {
    pub user: u64,
    pub address_id: u64,
    pub address: String,
    pub script: ScriptBuf,
    pub passkey: Passkey,
    pub totp_secret: Vec<u8>,
}

impl Customer {
    pub fn new(user: u64) -> Customer {
        let (address, script) = some_address(0x40 + user as u8);
        Customer {
            user,
            address_id: 100 + user,
            address,
            script,
            passkey: Passkey::new(),
            totp_secret: random::<20>().to_vec(),
        }
    }

    /// The action the user approves to whitelist their address.
    pub fn address_action(&self) -> Action {
        Action::AddWithdrawalAddress {
            user: UserId(self.user),
            asset: AssetId(ASSET),
            address: self.address.clone(),
            label: "mine".into(),
        }
    }

    /// The address's registration, approved with the user's passkey.
    pub fn register_address(&self) -> Request {
        Request::RegisterAddress {
            user: self.user,
            address_id: self.address_id,
            asset: ASSET,
            destination: self.address.clone(),
            label: "mine".into(),
            approval: Some(self.passkey_proof(&self.address_action(), 0)),
        }
    }
    /// The passkey's registration (the user's first: no approval).
    pub fn register_passkey(&self) -> Request {
        Request::RegisterPasskey {
            user: self.user,
            credential_id: self.passkey.credential_id.clone(),
            public_key: self.passkey.public_key(),
            approval: None,
        }
    }
    /// A later passkey's registration, approved with this user's passkey.
    pub fn register_passkey_of(&self, other: &Passkey) -> Request {
        let action = Action::EnrolPasskeyKey {
            user: UserId(self.user),
            credential_id: other.credential_id.clone(),
            public_key: other.public_key(),
        };
        Request::RegisterPasskey {
            user: self.user,
            credential_id: other.credential_id.clone(),
            public_key: other.public_key(),
            approval: Some(self.passkey_proof(&action, 0)),
        }
    }
    /// The TOTP secret's registration, approved with the user's passkey.
    pub fn register_totp(&self) -> Request {
        Request::RegisterTotp {
            user: self.user,
            secret: SecretBytes::new(&self.totp_secret),
            approval: Some(self.passkey_proof(
                &Action::EnrolTotp {
                    user: UserId(self.user),
                },
                0,
            )),
        }
    }

    /// The withdrawal record kinko would send, without a proof yet.
    pub fn withdrawal(&self, id: u64, amount: u64) -> Withdrawal {
        Withdrawal {
            id,
            user: self.user,
            asset: ASSET,
            address_id: self.address_id,
            address: self.address.clone(),
            amount: u128::from(amount),
            client_id: Some(u128::MAX - id as u128),
            proof: None,
            reviews: Vec::new(),
            approvals_needed: 0,
            waited_s: 0,
        }
    }

    /// The action the user approves for `w`, written out independently of the signer's code.
    pub fn action(w: &Withdrawal) -> Action {
        Action::Withdraw {
            user: UserId(w.user),
            asset: AssetId(w.asset),
            address_id: w.address_id,
            destination: w.address.clone(),
            amount: Amount(w.amount),
            client_id: w.client_id,
        }
    }

    /// A passkey proof for `action`, issued at `issued_ns`.
    pub fn passkey_proof(&self, action: &Action, issued_ns: u64) -> StepUp {
        let nonce = random::<16>();
        let digest = action.digest();
        let challenge = challenge_bytes(issued_ns, &nonce, &digest);
        let (authenticator_data, client_data_json, signature) = self.passkey.sign(&challenge);
        StepUp {
            action: digest,
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

    /// A TOTP proof for `action`, with the code of the step of `now_ns` (+ `step_offset`).
    pub fn totp_proof(&self, action: &Action, now_ns: u64, step_offset: i64) -> StepUp {
        let step = (now_ns / (30 * NS)).checked_add_signed(step_offset).unwrap();
        StepUp {
            action: action.digest(),
            issued_ns: now_ns,
            nonce: random::<16>(),
            factor: ProofFactor::Totp {
                step,
                code: format!("{:06}", kinko_factors::totp::code_at(&self.totp_secret, step)),
            },
        }
    }

    /// `w` with a fresh passkey proof at `now_ns`.
    pub fn with_passkey(&self, mut w: Withdrawal, now_ns: u64) -> Withdrawal {
        w.proof = Some(self.passkey_proof(&Customer::action(&w), now_ns));
        w
    }
}

/// A hot account of some other master key (an attacker's wallet).
pub fn foreign_hot() -> WatchKey {
    let m = Xpriv::new_master(NET.key_kind(), &random::<32>()).unwrap();
    watch_key(&m, &hot_account_path(NET))
}

pub fn cold_keys() -> ColdKeys {
    let keys = (1..=3u8)
        .map(|s| {
            let m = Xpriv::new_master(NET.key_kind(), &[s; 32]).unwrap();
            watch_key(&m, &cold_account_path(NET))
        })
        .collect();
    ColdKeys { threshold: 2, keys }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub clock: Arc<ManualClock>,
    pub server: Option<Server>,
    pub hot: WatchKey,
    pub cold: ColdKeys,
    next_utxo: AtomicU32,
}

impl Env {
    pub fn new() -> Env {
        Env::with_uids(None)
    }

    /// A signer allowing `uids` (default: our own uid), started.
    pub fn with_uids(uids: Option<Vec<u32>>) -> Env {
        let mut env = Env::stopped(uids);
        env.start().expect("the test signer starts");
        env
    }

    /// A signer whose configuration text `edit` changed, started.
    pub fn edited(edit: impl Fn(String) -> String) -> Env {
        let mut env = Env::stopped(None);
        let text = std::fs::read_to_string(&env.config_path).unwrap();
        std::fs::write(&env.config_path, edit(text)).unwrap();
        env.start().expect("the test signer starts");
        env
    }

    /// A keystore and configuration, not yet started.
    pub fn stopped(uids: Option<Vec<u32>>) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        let (ks, _words) = Keystore::create_with(
            &dir.path().join("hot.keystore"),
            NET,
            Role::Hot,
            PASS,
            KdfParams::TEST_FAST,
        )
        .unwrap();
        let cold = cold_keys();
        let uids = match uids {
            Some(u) => format!("allowed_uids = {u:?}\n"),
            None => String::new(),
        };
        let cold_keys: Vec<String> = cold
            .keys
            .iter()
            .map(|k| format!("{k:?}", k = k.to_string()))
            .collect();
        let text = format!(
            r#"network = "litecoin-regtest"
asset = "LTC"
asset_id = 1
keystore = "hot.keystore"
log = "signer.log"
socket = "run/signer.sock"
{uids}
[policy]
per_tx_max_sats = {PER_TX_MAX}
window_s = 86400
window_max_sats = {WINDOW_MAX}
address_cooling_s = 86400
credential_maturity_s = 86400
proof_max_age_s = {PROOF_MAX_AGE_S}
fee_max_sats = {FEE_MAX}

[webauthn]
rp_id = "{RP_ID}"
origins = ["{ORIGIN}"]

[cold]
threshold = 2
keys = [{}]
"#,
            cold_keys.join(", ")
        );
        let config_path = dir.path().join("signer.toml");
        std::fs::write(&config_path, text).unwrap();
        Env {
            dir,
            config_path,
            clock: Arc::new(ManualClock::at_system_now()),
            server: None,
            hot: ks.watch_key,
            cold,
            next_utxo: AtomicU32::new(0),
        }
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }

    pub fn keys(&self) -> Unlocked {
        Keystore::open_with(&self.dir.path().join("hot.keystore"), PASS, true).unwrap()
    }

    pub fn start(&mut self) -> Result<(), StartError> {
        assert!(self.server.is_none());
        let clock: Arc<dyn Clock> = self.clock.clone();
        self.server = Some(Server::start(self.config(), self.keys(), clock)?);
        Ok(())
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start().unwrap();
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/signer.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("signer.log")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap()
    }

    pub fn client(&self) -> SignerClient {
        SignerClient::connect(&self.socket()).unwrap()
    }

    /// One request on a fresh connection.
    pub fn call(&self, req: &Request) -> Response {
        self.client().call(req).unwrap()
    }

    pub fn ok(&self, req: &Request) {
        assert_eq!(self.call(req), Response::Ok, "{}", req.kind());
    }

    pub fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    pub fn advance_s(&self, s: u64) {
        self.clock.advance_s(s);
    }

    /// Registers the customer's passkey, TOTP secret (approved by the passkey) and address
    /// (likewise), and lets them mature.
    pub fn onboard(&self, c: &Customer) {
        self.ok(&c.register_passkey());
        self.ok(&c.register_totp());
        self.ok(&c.register_address());
        self.advance_s(FIRST_MATURITY_S + 1);
    }

    /// The signer's alert outbox (next to its log).
    pub fn outbox(&self) -> PathBuf {
        self.dir.path().join("alerts")
    }

    /// Kinds of the alerts waiting in the outbox, oldest first.
    pub fn alert_kinds(&self) -> Vec<String> {
        kinko_signer::alerts::pending(&self.outbox())
            .iter()
            .map(|p| {
                let a: kinko_signer::alerts::Alert =
                    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
                a.kind
            })
            .collect()
    }

    /// A fresh UTXO of the hot receive chain.
    pub fn utxo(&self) -> Utxo {
        let n = self.next_utxo.fetch_add(1, Ordering::SeqCst) + 1;
        Utxo {
            outpoint: OutPoint {
                txid: Txid::from_byte_array(random::<32>()),
                vout: n % 3,
            },
            value: UTXO_SATS,
            derived: derive_hot(NET, &self.hot, 0, n).unwrap(),
        }
    }

    pub fn change(&self, i: u32) -> Derived {
        derive_hot(NET, &self.hot, 1, i).unwrap()
    }

    /// An unsigned PSBT spending one fresh hot UTXO, paying `pay`, change to `/1/0`.
    pub fn psbt(&self, pay: &[(ScriptBuf, u64)]) -> Psbt {
        let u = self.utxo();
        kinko_chain::psbt::build(NET, &[u], pay, Some(&self.change(0)), FEE_RATE)
            .unwrap()
            .psbt
    }

    /// An unsigned PSBT paying `c` `amount`.
    pub fn psbt_for(&self, c: &Customer, amount: u64) -> Psbt {
        self.psbt(&[(c.script.clone(), amount)])
    }

    pub fn sign(&self, w: &Withdrawal, psbt: &Psbt) -> Response {
        self.call(&Request::SignWithdrawal {
            withdrawal: Box::new(w.clone()),
            psbt: kinko_chain::psbt::to_base64(psbt),
            journal: None,
        })
    }

    /// Clears a halt as `kinko-signer clear` does.
    pub fn clear(&self, reason: &str) -> Response {
        let mut client = self.client();
        let Response::Challenge { nonce } = client.call(&Request::ClearChallenge).unwrap() else {
            panic!("no challenge")
        };
        let mac = kinko_signer::service::clear_mac(&self.keys().clear_key(), &nonce, reason);
        client
            .call(&Request::Clear {
                nonce,
                reason: reason.into(),
                mac,
                assertions: Vec::new(),
            })
            .unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The signed PSBT of a `signed` answer, checked to finalize into a valid transaction.
#[track_caller]
pub fn expect_signed(r: Response) -> Psbt {
    let Response::Signed { psbt } = r else {
        panic!("expected signed, got {r:?}")
    };
    let psbt = kinko_chain::psbt::from_base64(&psbt).unwrap();
    kinko_chain::psbt::finalize(&psbt).expect("every input carries a valid signature");
    psbt
}

#[track_caller]
pub fn expect_refused(r: Response, code: &str, halted: bool) {
    match &r {
        Response::Refused {
            code: c, halted: h, ..
        } if c == code && *h == halted => {}
        _ => panic!("expected refused {code} (halted {halted}), got {r:?}"),
    }
}

/// Lines of the log whose entry has this kind.
pub fn log_entries(path: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["entry"]["kind"] == kind)
        .collect()
}
